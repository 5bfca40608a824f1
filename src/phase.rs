//! The sub-pixel (phase) decomposition of the forward pass: no col2im, every output pixel
//! written once.
//!
//! With dilation 1, output pixel `o = q * stride + r - pad` (phase `r = (o + pad) mod stride`)
//! only sees the kernel taps `k = r + stride * t`, from input pixel `i = q - t`. So for every
//! phase pair `(ry, rx)` the output is an ordinary small convolution of the input:
//! `out[n][q] = sum over c, t of W[c][n][r + s*t] * x[c][q - t]`.
//!
//! Per image: the input is copied once into `B`, rows `(ty, tx, c)` of shifted planes over the
//! `q` grid (an im2col with the `ceil(k / s)`-tap "shift kernel"); phases with the same number
//! of taps per axis form a class that shares `B`, so each class is one GEMM (or one per `ty`)
//! `Z = A_class * B` with the phases stacked in `M` and the taps stacked in `K`; the weights
//! are repacked into the `A` matrices when they change. Finally each phase's rows of `Z` are
//! stored at their strided output pixels, with bias and activation applied on the way.

use crate::activation::{Activation, Epilogue};
use crate::backend::{Gemm, MatMut, MatRef, gemm_on};
use crate::config::Geometry;
use crate::element::Element;
use crate::error::Result;
use crate::transpose::transpose;
use rayon::prelude::*;
use std::ops::Range;

/// Most phases a plan takes on (`stride_h * stride_w`).
pub(crate) const MAX_PHASES: usize = 4096;
/// Input channels per block of [`PhasePlan::pack_weights`] and per task of
/// [`PhasePlan::unpack_add`]: the weights of one filter they touch at a time then lie in this
/// many cache lines (kernels up to 4 x 4 in `f32`).
const CHANNEL_BLOCK: usize = 16;
/// Longest output-row buffer (elements) of the transposing store.
const STORE_ROW: usize = 1024;

/// One axis of the decomposition.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Axis {
    stride: usize,
    kernel: usize,
    pad: usize,
    out: usize,
    input: usize,
    /// Most taps any phase has: `ceil(kernel / stride)`.
    t_max: usize,
    /// First `q` of the grid shared by all phases.
    q_lo: usize,
    /// Length of the grid.
    q_len: usize,
}

impl Axis {
    fn new(input: usize, out: usize, kernel: usize, stride: usize, pad: usize) -> Option<Axis> {
        let t_max = kernel.div_ceil(stride);
        let q_lo = (0..stride).map(|r| Self::q_first(pad, stride, r)).min()?;
        let q_hi = (0..stride)
            .map(|r| (out + pad).saturating_sub(r).div_ceil(stride))
            .max()?;
        (q_hi > q_lo).then_some(Axis {
            stride,
            kernel,
            pad,
            out,
            input,
            t_max,
            q_lo,
            q_len: q_hi - q_lo,
        })
    }

    /// First `q` whose output `q * s + r - pad` is `>= 0`.
    fn q_first(pad: usize, stride: usize, r: usize) -> usize {
        pad.saturating_sub(r).div_ceil(stride)
    }

    /// Taps of phase `r`.
    fn taps(&self, r: usize) -> usize {
        if r < self.kernel {
            (self.kernel - r).div_ceil(self.stride)
        } else {
            0
        }
    }

    /// The `q` of phase `r` whose output pixel lies inside the output.
    fn q_range(&self, r: usize) -> Range<usize> {
        let lo = Self::q_first(self.pad, self.stride, r);
        let hi = (self.out + self.pad)
            .saturating_sub(r)
            .div_ceil(self.stride);
        lo..hi.max(lo)
    }

    /// Output index of `q` in phase `r` (for `q` in `q_range(r)`).
    fn out_index(&self, q: usize, r: usize) -> usize {
        q * self.stride + r - self.pad
    }

    /// Grid positions `q - q_lo` whose input pixel `q - t` exists, and that pixel for the first.
    fn valid(&self, t: usize) -> (Range<usize>, usize) {
        // i = q_lo + j - t in [0, input)  <=>  j in [t - q_lo, input + t - q_lo).
        let lo = t.saturating_sub(self.q_lo).min(self.q_len);
        let hi = (self.input + t)
            .saturating_sub(self.q_lo)
            .min(self.q_len)
            .max(lo);
        (lo..hi, (self.q_lo + lo).saturating_sub(t))
    }
}

/// Phases with the same tap counts `(ty, tx)`, sharing one GEMM.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Class {
    taps: [usize; 2],
    phases: Vec<[usize; 2]>,
    /// Offset of this class's `A` inside one group's packed weights.
    a_offset: usize,
    /// For each vertical phase `ry`: this class's phases in it, as `(index in phases, first
    /// output x, q_x range)`, so the store loop does no division or search per row.
    by_row: Vec<Vec<(usize, usize, Range<usize>)>>,
    /// For each `ry` whose output rows this class fills entirely (every `rx`, in order): the
    /// index of its first phase, so that a row is stored as one transpose of the phases' `Z`
    /// rows instead of `stride_x` strided writes.
    full_rows: Vec<Option<usize>>,
}

impl Class {
    /// Whether every output row this class has phases in is one it fills entirely
    /// ([`full_rows`](Self::full_rows)); the forward then goes one `ry` at a time
    /// ([`PhasePlan::forward_class_by_rows`]). A class's rows are all full or none are: which
    /// `rx` a class holds does not depend on `ry`.
    fn fills_its_rows(&self) -> bool {
        let mut rows = self.by_row.iter().zip(&self.full_rows);
        self.full_rows.iter().any(Option::is_some)
            && rows.all(|(row, full)| row.is_empty() || full.is_some())
    }

    /// GEMMs per class product: one when the class uses every horizontal tap (its rows of `B`
    /// are contiguous), else one per vertical tap.
    fn gemm_steps(&self, t_max_x: usize) -> usize {
        if self.taps[1] == t_max_x {
            1
        } else {
            self.taps[0]
        }
    }
}

/// The phase plan of a layer (dilation 1 on both axes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PhasePlan {
    y: Axis,
    x: Axis,
    classes: Vec<Class>,
    group_in: usize,
    group_out: usize,
    groups: usize,
    /// Elements of `B` (rows `(ty, tx, c)`, `t_max_y * t_max_x * c_g` of them, by the grid).
    b_len: usize,
    /// Elements of the largest class's `Z`.
    z_len: usize,
}

impl PhasePlan {
    /// The plan, or `None` where the decomposition does not apply: dilation > 1, or more
    /// phases (`stride_h * stride_w`) than [`MAX_PHASES`] (a plan is built phase by phase, so
    /// a huge stride would cost time and memory for nothing).
    pub(crate) fn new(g: &Geometry) -> Option<PhasePlan> {
        let phases = g.stride()[0].checked_mul(g.stride()[1])?;
        if g.dilation() != [1, 1] || phases > MAX_PHASES {
            return None;
        }
        let y = Axis::new(
            g.in_h(),
            g.out_h(),
            g.kernel()[0],
            g.stride()[0],
            g.pad()[0],
        )?;
        let x = Axis::new(
            g.in_w(),
            g.out_w(),
            g.kernel()[1],
            g.stride()[1],
            g.pad()[1],
        )?;
        let (cg, ng) = (g.group_in(), g.group_out());
        let mut classes: Vec<Class> = Vec::new();
        for ry in 0..y.stride {
            for rx in 0..x.stride {
                let taps = [y.taps(ry), x.taps(rx)];
                match classes.iter_mut().find(|c| c.taps == taps) {
                    Some(c) => c.phases.push([ry, rx]),
                    None => classes.push(Class {
                        taps,
                        phases: vec![[ry, rx]],
                        a_offset: 0,
                        by_row: Vec::new(),
                        full_rows: Vec::new(),
                    }),
                }
            }
        }
        let mut offset = 0;
        for c in &mut classes {
            c.by_row = (0..y.stride)
                .map(|ry| {
                    let in_row = c.phases.iter().enumerate().filter(|(_, ph)| ph[0] == ry);
                    in_row
                        .map(|(p, &[_, rx])| {
                            let xs = x.q_range(rx);
                            let first = if xs.is_empty() {
                                0
                            } else {
                                x.out_index(xs.start, rx)
                            };
                            (p, first, xs)
                        })
                        .filter(|(_, _, xs)| !xs.is_empty())
                        .collect()
                })
                .collect();
            // The row buffer holds the phases' grid, `x.q_len * stride` pixels, from which the
            // output row starts `pad - q_lo * stride` pixels in.
            let row_len = x.q_len * x.stride;
            let fits = row_len <= STORE_ROW
                && x.q_lo * x.stride <= x.pad
                && x.pad - x.q_lo * x.stride + x.out <= row_len;
            c.full_rows = c
                .by_row
                .iter()
                .map(|row| {
                    let p0 = row.first()?.0;
                    let full = row.len() == x.stride
                        && row.iter().enumerate().all(|(i, &(p, ..))| p == p0 + i);
                    (fits && full).then_some(p0)
                })
                .collect();
            c.a_offset = offset;
            offset += c.phases.len() * ng * c.taps[0] * c.taps[1] * cg;
        }
        let n_grid = y.q_len * x.q_len;
        let b_len = y.t_max * x.t_max * cg * n_grid;
        let z_len = classes.iter().map(|c| c.phases.len() * ng * n_grid).max()?;
        Some(PhasePlan {
            y,
            x,
            classes,
            group_in: cg,
            group_out: ng,
            groups: g.groups(),
            b_len,
            z_len,
        })
    }

    /// Cells of the grid the class GEMMs multiply on (the columns of each).
    pub(crate) fn grid_area(&self) -> usize {
        self.y.q_len * self.x.q_len
    }

    /// Rows (phases times filters) of the smallest class GEMM. GEMMs with few rows spend their
    /// time packing the large `B` operand rather than multiplying.
    pub(crate) fn min_gemm_rows(&self) -> usize {
        let rows = self.classes.iter().filter(|c| c.taps[0] * c.taps[1] > 0);
        rows.map(|c| c.phases.len() * self.group_out)
            .min()
            .unwrap_or(0)
    }

    /// Workspace elements one image needs, forward (`B`, `Z`) or backward (`dZ`, `B`, `dB`).
    pub(crate) fn workspace_size(&self) -> usize {
        self.z_len + 2 * self.b_len
    }

    /// FLOPs the plan's GEMMs do per forward pass, for comparison with the nominal count.
    #[cfg(test)]
    fn gemm_flops(&self, batch: usize) -> usize {
        let n_grid = self.y.q_len * self.x.q_len;
        let per_group: usize = self
            .classes
            .iter()
            .map(|c| {
                2 * c.phases.len() * self.group_out * c.taps[0] * c.taps[1] * self.group_in * n_grid
            })
            .sum();
        per_group * self.groups * batch
    }

    /// Repacks `weights` (`[c][n_g][kh][kw]`) into each class's `A`:
    /// rows `(phase, n)`, columns `(ty, tx, c)`.
    pub(crate) fn pack_weights<T: Element>(&self, weights: &[T], packed: &mut [T]) {
        let (cg, ng) = (self.group_in, self.group_out);
        let (kh, kw) = (self.y.kernel, self.x.kernel);
        let per_group = cg * ng * kh * kw;
        for (a, w) in packed.chunks_mut(per_group).zip(weights.chunks(per_group)) {
            for class in &self.classes {
                let [ty_n, tx_n] = class.taps;
                let k = ty_n * tx_n * cg;
                if k == 0 {
                    continue;
                }
                // One task per phase: S3 has 64 of them, and a single thread spent a tenth of
                // the forward pass here. Blocks of channels outermost, so that the weights are
                // read as a few sequential streams (filter after filter) rather than one
                // channel after another, n_g * kh * kw apart.
                let rows = &mut a[class.a_offset..][..class.phases.len() * ng * k];
                rows.par_chunks_mut(ng * k)
                    .zip(class.phases.par_iter())
                    .for_each(|(phase_rows, &[ry, rx])| {
                        for c0 in (0..cg).step_by(CHANNEL_BLOCK) {
                            let channels = CHANNEL_BLOCK.min(cg - c0);
                            for (n, row) in phase_rows.chunks_mut(k).enumerate() {
                                let w = &w[(c0 * ng + n) * kh * kw..];
                                for ty in 0..ty_n {
                                    for tx in 0..tx_n {
                                        let tap = (ry + self.y.stride * ty) * kw
                                            + rx
                                            + self.x.stride * tx;
                                        let dst = &mut row[(ty * tx_n + tx) * cg + c0..];
                                        let src = w[tap..].iter().step_by(ng * kh * kw);
                                        for (d, &v) in dst[..channels].iter_mut().zip(src) {
                                            *d = v;
                                        }
                                    }
                                }
                            }
                        }
                    });
            }
        }
    }

    /// Adds gradients in [`pack_weights`](Self::pack_weights)' layout to `grad`, laid out like
    /// the weights (`[c][n_g][kh][kw]`): the adjoint of the packing.
    ///
    /// In blocks of [`CHANNEL_BLOCK`] input channels over the threads, filter by filter: a
    /// packed row runs along the channels and the weights are `n_g * kh * kw` apart there, so
    /// element by element over all channels each add missed the cache (a quarter of
    /// darknet-k4's phase forward+backward in perf, on one thread).
    pub(crate) fn unpack_add<T: Element>(&self, packed: &[T], grad: &mut [T]) {
        let (cg, ng) = (self.group_in, self.group_out);
        let (kh, kw) = (self.y.kernel, self.x.kernel);
        let per_group = cg * ng * kh * kw;
        let per_channel = ng * kh * kw;
        grad.par_chunks_mut(per_group)
            .zip(packed.par_chunks(per_group))
            .for_each(|(w, a)| {
                let blocks = w.par_chunks_mut(CHANNEL_BLOCK * per_channel).enumerate();
                blocks.for_each(|(block, w)| {
                    let c0 = block * CHANNEL_BLOCK;
                    let channels = w.len() / per_channel;
                    for n in 0..ng {
                        for class in &self.classes {
                            let [ty_n, tx_n] = class.taps;
                            let k = ty_n * tx_n * cg;
                            for (p, &[ry, rx]) in class.phases.iter().enumerate() {
                                let row = &a[class.a_offset + (p * ng + n) * k..][..k];
                                for ty in 0..ty_n {
                                    for tx in 0..tx_n {
                                        let tap = (ry + self.y.stride * ty) * kw
                                            + rx
                                            + self.x.stride * tx;
                                        let src = &row[(ty * tx_n + tx) * cg + c0..][..channels];
                                        let dst = w[n * kh * kw + tap..].iter_mut();
                                        for (d, &g) in dst.step_by(per_channel).zip(src) {
                                            *d += g;
                                        }
                                    }
                                }
                            }
                        }
                    }
                });
            });
    }

    /// `dx += B^T`-side adjoint of [`fill_b`](Self::fill_b): every entry of `db` goes back to
    /// the input pixel its `B` entry was copied from.
    fn add_b_adjoint<T: Element>(&self, db: &[T], dx: &mut [T], parallel: bool) {
        let (y, xa) = (&self.y, &self.x);
        let (h, w) = (y.input, xa.input);
        let n_grid = y.q_len * xa.q_len;
        let taps = y.t_max * xa.t_max;
        let one = |(c, plane): (usize, &mut [T])| {
            for t in 0..taps {
                let (ty, tx) = (t / xa.t_max, t % xa.t_max);
                let src = &db[(t * self.group_in + c) * n_grid..][..n_grid];
                let (ys, iy0) = y.valid(ty);
                let (xs, ix0) = xa.valid(tx);
                if xs.is_empty() {
                    continue;
                }
                for j in ys.clone() {
                    let line = &src[j * xa.q_len..][..xa.q_len];
                    let dst = &mut plane[(iy0 + j - ys.start) * w + ix0..][..xs.len()];
                    for (d, &s) in dst.iter_mut().zip(&line[xs.clone()]) {
                        *d += s;
                    }
                }
            }
        };
        if parallel {
            dx.par_chunks_mut(h * w).enumerate().for_each(one);
        } else {
            dx.chunks_mut(h * w).enumerate().for_each(one);
        }
    }

    /// The backward pass of one image: from `delta` (`n x out_h x out_w`, the gradient at the
    /// pre-activation output), adds the weight gradient to `dpacked` (in the packed layout; see
    /// [`unpack_add`](Self::unpack_add)) and, when given, the input gradient to `dx`.
    ///
    /// The forward is `Z = A * B` per class; so `dA += dZ * B^T` and `dB = A^T * dZ`, where
    /// `dZ` gathers `delta` onto the phase grid and `dB` goes back to the input as the adjoint
    /// of the copy that built `B`: no im2col of the delta.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_image<T: Element, B: Gemm<T>>(
        &self,
        backend: &B,
        packed: &[T],
        x: &[T],
        delta: &[T],
        mut dx: Option<&mut [T]>,
        dpacked: &mut [T],
        workspace: &mut [T],
        parallel: bool,
    ) -> Result<()> {
        let (cg, ng) = (self.group_in, self.group_out);
        let (y, xa) = (&self.y, &self.x);
        let n_grid = y.q_len * xa.q_len;
        let (hw, ohw) = (y.input * xa.input, y.out * xa.out);
        let (dz_all, rest) = workspace.split_at_mut(self.z_len);
        let (b, rest) = rest.split_at_mut(self.b_len);
        let db = &mut rest[..self.b_len];
        let per_group = packed.len() / self.groups;
        for grp in 0..self.groups {
            self.fill_b(&x[grp * cg * hw..][..cg * hw], b, parallel);
            db.fill(T::zero());
            let a_all = &packed[grp * per_group..][..per_group];
            let da_all = &mut dpacked[grp * per_group..][..per_group];
            let delta = &delta[grp * ng * ohw..][..ng * ohw];
            for class in &self.classes {
                let [ty_n, tx_n] = class.taps;
                let m = class.phases.len() * ng;
                let k = ty_n * tx_n * cg;
                if k == 0 {
                    continue; // holes: no weights, no gradient
                }
                let dz = &mut dz_all[..m * n_grid];
                // dZ: each delta pixel at its phase's grid position (grid cells without an
                // output pixel stay 0).
                let gather = |(row, dzr): (usize, &mut [T])| {
                    let (p, n) = (row / ng, row % ng);
                    let [ry, rx] = class.phases[p];
                    dzr.fill(T::zero());
                    let plane = &delta[n * ohw..][..ohw];
                    let xs = xa.q_range(rx);
                    if xs.is_empty() {
                        return;
                    }
                    for qy in y.q_range(ry) {
                        let line = &plane[y.out_index(qy, ry) * xa.out..][..xa.out];
                        let src = line[xa.out_index(xs.start, rx)..].iter().step_by(xa.stride);
                        let dst = &mut dzr[(qy - y.q_lo) * xa.q_len + xs.start - xa.q_lo..];
                        for (d, &s) in dst[..xs.len()].iter_mut().zip(src) {
                            *d = s;
                        }
                    }
                };
                if parallel {
                    dz.par_chunks_mut(n_grid).enumerate().for_each(gather);
                } else {
                    dz.chunks_mut(n_grid).enumerate().for_each(gather);
                }
                let dz = &*dz;
                let a = &a_all[class.a_offset..][..m * k];
                let da = &mut da_all[class.a_offset..][..m * k];
                let steps = class.gemm_steps(xa.t_max);
                let k_step = k / steps;
                for step in 0..steps {
                    let b_off = step * xa.t_max * cg * n_grid;
                    let dzm = MatRef::new(dz, m, n_grid, n_grid)?;
                    // dA[:, step] (m x k_step) += dZ (m x N) * B_step^T (N x k_step)
                    gemm_on(
                        backend,
                        parallel,
                        T::one(),
                        dzm,
                        MatRef::new(&b[b_off..], k_step, n_grid, n_grid)?.t(),
                        T::one(),
                        MatMut::new(&mut da[step * k_step..], m, k_step, k)?,
                    )?;
                    if dx.is_some() {
                        // dB_step (k_step x N) += A[:, step]^T (k_step x m) * dZ (m x N)
                        gemm_on(
                            backend,
                            parallel,
                            T::one(),
                            MatRef::new(&a[step * k_step..], m, k_step, k)?.t(),
                            dzm,
                            T::one(),
                            MatMut::new(&mut db[b_off..], k_step, n_grid, n_grid)?,
                        )?;
                    }
                }
            }
            if let Some(dx) = dx.as_deref_mut() {
                self.add_b_adjoint(db, &mut dx[grp * cg * hw..][..cg * hw], parallel);
            }
        }
        Ok(())
    }

    /// Fills `B` from one group's input planes `x` (`c_g x h x w`).
    fn fill_b<T: Element>(&self, x: &[T], b: &mut [T], parallel: bool) {
        let (y, xa) = (&self.y, &self.x);
        let (h, w) = (y.input, xa.input);
        let n_grid = y.q_len * xa.q_len;
        let rows = |(row, dst): (usize, &mut [T])| {
            let c = row % self.group_in;
            let t = row / self.group_in;
            let (ty, tx) = (t / xa.t_max, t % xa.t_max);
            let plane = &x[c * h * w..][..h * w];
            let (ys, iy0) = y.valid(ty);
            let (xs, ix0) = xa.valid(tx);
            for (j, line) in dst.chunks_mut(xa.q_len).enumerate() {
                if !ys.contains(&j) || xs.is_empty() {
                    line.fill(T::zero());
                    continue;
                }
                let src = &plane[(iy0 + j - ys.start) * w..][..w];
                line[..xs.start].fill(T::zero());
                line[xs.end..].fill(T::zero());
                line[xs.clone()].copy_from_slice(&src[ix0..ix0 + xs.len()]);
            }
        };
        if parallel {
            b.par_chunks_mut(n_grid).enumerate().for_each(rows);
        } else {
            b.chunks_mut(n_grid).enumerate().for_each(rows);
        }
    }

    /// The forward pass of one image: `x` (`c x h x w`) to `out` (`n x out_h x out_w`), with
    /// the `epilogue` applied to every output pixel when given (else the raw sums are stored).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_image<T: Element, B: Gemm<T>>(
        &self,
        backend: &B,
        packed: &[T],
        x: &[T],
        out: &mut [T],
        workspace: &mut [T],
        parallel: bool,
        epilogue: Option<Epilogue<'_, T>>,
    ) -> Result<()> {
        let (cg, ng) = (self.group_in, self.group_out);
        let (y, xa) = (&self.y, &self.x);
        let n_grid = y.q_len * xa.q_len;
        let ohw = y.out * xa.out;
        let (b, z) = workspace.split_at_mut(self.b_len);
        let per_group = packed.len() / self.groups;
        for grp in 0..self.groups {
            self.fill_b(
                &x[grp * cg * y.input * xa.input..][..cg * y.input * xa.input],
                b,
                parallel,
            );
            let a_all = &packed[grp * per_group..][..per_group];
            let out = &mut out[grp * ng * ohw..][..ng * ohw];
            for class in &self.classes {
                let [ty_n, tx_n] = class.taps;
                let m = class.phases.len() * ng;
                let z = &mut z[..m * n_grid];
                let k_row = tx_n * cg; // A columns per ty
                let k = ty_n * k_row;
                if k > 0 && class.fills_its_rows() {
                    let a = &a_all[class.a_offset..][..m * k];
                    let by_rows = ByRows { a, b, z, k };
                    self.forward_class_by_rows(
                        backend, class, by_rows, out, grp, parallel, &epilogue,
                    )?;
                    continue;
                }
                if k > 0 {
                    let a = &a_all[class.a_offset..][..m * k];
                    self.class_gemm(backend, class, a, k, b, z, parallel)?;
                }
                let z = &*z;
                let store = |(n, plane): (usize, &mut [T])| {
                    let (mul, bias, act) = coefficients(&epilogue, grp * ng + n);
                    // Row by row, so each output row is finished while it is in cache (phase
                    // by phase would sweep the whole plane once per phase).
                    for (oy, line) in plane.chunks_mut(xa.out).enumerate() {
                        let ry = (oy + y.pad) % y.stride;
                        let qy = (oy + y.pad) / y.stride;
                        for (p, first, xs) in &class.by_row[ry] {
                            let dst = line[*first..].iter_mut().step_by(xa.stride);
                            if k == 0 {
                                // No tap reaches these pixels: their sum is 0.
                                let v = act.activate(bias);
                                dst.take(xs.len()).for_each(|d| *d = v);
                                continue;
                            }
                            let zl = &z[(p * ng + n) * n_grid + (qy - y.q_lo) * xa.q_len..];
                            let src = &zl[xs.start - xa.q_lo..xs.end - xa.q_lo];
                            if act == Activation::Linear {
                                dst.zip(src).for_each(|(d, &v)| *d = v * mul + bias);
                            } else {
                                let f = |(d, &v): (&mut T, &T)| *d = act.activate(v * mul + bias);
                                dst.zip(src).for_each(f);
                            }
                        }
                    }
                };
                if parallel {
                    out.par_chunks_mut(ohw).enumerate().for_each(store);
                } else {
                    out.chunks_mut(ohw).enumerate().for_each(store);
                }
            }
        }
        Ok(())
    }

    /// [`forward_image`](Self::forward_image) for a class that fills whole output rows for
    /// every `ry` it has phases in (S3: one class, kernel a multiple of the stride; kernel 3
    /// high and 4 wide, stride 2: two classes, each with every other `ry`): one GEMM per `ry`
    /// into the `stride_x` phases' rows of `Z` only, whose output rows are then stored while that part
    /// of `Z` is in cache (all of `Z` for S3, 1.5 MB an image, is not).
    #[allow(clippy::too_many_arguments)]
    fn forward_class_by_rows<T: Element, B: Gemm<T>>(
        &self,
        backend: &B,
        class: &Class,
        ByRows { a, b, z, k }: ByRows<'_, T>,
        out: &mut [T],
        grp: usize,
        parallel: bool,
        epilogue: &Option<Epilogue<'_, T>>,
    ) -> Result<()> {
        let ng = self.group_out;
        let (y, xa) = (&self.y, &self.x);
        let n_grid = y.q_len * xa.q_len;
        let ohw = y.out * xa.out;
        let skip = xa.pad.saturating_sub(xa.q_lo * xa.stride);
        let rows = xa.stride * ng; // Z rows of one ry: its stride_x phases, ng filters each
        for (ry, p0) in class.full_rows.iter().enumerate() {
            let Some(p0) = *p0 else { continue };
            let a = &a[p0 * ng * k..][..rows * k];
            let z = &mut z[..rows * n_grid];
            self.class_gemm(backend, class, a, k, b, z, parallel)?;
            let z = &*z;
            let store = |(n, plane): (usize, &mut [T])| {
                let (mul, bias, act) = coefficients(epilogue, grp * ng + n);
                let mut row = [T::zero(); STORE_ROW];
                let row = &mut row[..xa.q_len * xa.stride];
                for qy in y.q_range(ry) {
                    let line = &mut plane[y.out_index(qy, ry) * xa.out..][..xa.out];
                    // Row element (q - q_lo) * stride + rx is phase rx's Z at q: the transpose
                    // of the row's stride_x phase rows (ng * n_grid apart).
                    let zl = &z[n * n_grid + (qy - y.q_lo) * xa.q_len..];
                    transpose(zl, xa.stride, xa.q_len, ng * n_grid, row, xa.stride);
                    line.copy_from_slice(&row[skip..skip + xa.out]);
                    act.affine_slice(line, mul, bias);
                }
            };
            if parallel {
                out.par_chunks_mut(ohw).enumerate().for_each(store);
            } else {
                out.chunks_mut(ohw).enumerate().for_each(store);
            }
        }
        Ok(())
    }

    /// `Z = A * B` for rows of a class's `A` (`k` columns) and the image's `B`, in the class's
    /// GEMM steps ([`Class::gemm_steps`]).
    #[allow(clippy::too_many_arguments)]
    fn class_gemm<T: Element, B: Gemm<T>>(
        &self,
        backend: &B,
        class: &Class,
        a: &[T],
        k: usize,
        b: &[T],
        z: &mut [T],
        parallel: bool,
    ) -> Result<()> {
        let (cg, n_grid) = (self.group_in, self.y.q_len * self.x.q_len);
        let rows = a.len() / k;
        let steps = class.gemm_steps(self.x.t_max);
        let k_step = k / steps;
        for step in 0..steps {
            let am = MatRef::new(&a[step * k_step..], rows, k_step, k)?;
            let b_rows = &b[step * self.x.t_max * cg * n_grid..];
            let bm = MatRef::new(b_rows, k_step, n_grid, n_grid)?;
            let beta = if step == 0 { T::zero() } else { T::one() };
            let c = MatMut::new(&mut z[..rows * n_grid], rows, n_grid, n_grid)?;
            gemm_on(backend, parallel, T::one(), am, bm, beta, c)?;
        }
        Ok(())
    }
}

/// `(mul, add, activation)` of channel `f` in `epilogue`; the raw sums without one.
fn coefficients<T: Element>(epilogue: &Option<Epilogue<'_, T>>, f: usize) -> (T, T, Activation) {
    match epilogue {
        Some(e) => {
            let (mul, add) = e.coefficients(f);
            (mul, add, e.activation)
        }
        None => (T::one(), T::zero(), Activation::Linear),
    }
}

/// One class's operands for [`PhasePlan::forward_class_by_rows`]: its packed weights `a`
/// (`k` columns), the image's `b` and the `z` buffer.
struct ByRows<'a, T> {
    a: &'a [T],
    b: &'a [T],
    z: &'a mut [T],
    k: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DeconvConfig;

    /// A class fills all the output rows it has phases in or none of them (the forward relies
    /// on it to take every class that can go row by row that way), and classes that fill rows
    /// exist also where the kernel's height is not a multiple of the stride.
    #[test]
    fn classes_fill_all_their_rows_or_none() {
        let mut partial_ry = 0;
        for (kh, kw) in (1..=5).flat_map(|kh| (1..=5).map(move |kw| (kh, kw))) {
            for (sh, sw) in (1..=3).flat_map(|sh| (1..=3).map(move |sw| (sh, sw))) {
                for pad in 0..kh.min(kw) {
                    let config = DeconvConfig::new(1, 2, 6, 7, 3, 1)
                        .kernel_hw(kh, kw)
                        .stride_hw(sh, sw)
                        .pad(pad);
                    let Some(plan) = config.geometry().ok().and_then(|g| PhasePlan::new(&g)) else {
                        continue;
                    };
                    for class in &plan.classes {
                        let rows = class.by_row.iter().zip(&class.full_rows);
                        let full = rows.clone().filter(|(r, f)| !r.is_empty() && f.is_some());
                        let used = rows.filter(|(r, _)| !r.is_empty()).count();
                        let full = full.count();
                        assert!(full == 0 || full == used, "{config:?} {:?}", class.taps);
                        if class.fills_its_rows() && used < sh {
                            partial_ry += 1;
                        }
                    }
                }
            }
        }
        assert!(partial_ry > 0);
    }

    #[test]
    fn gemm_flops_match_the_nominal_count_up_to_the_grid_margin() {
        // S3: 21 -> 21, 16x16, k16 s8 p4: 2x2 taps in every phase, one class.
        let g = DeconvConfig::new(2, 21, 16, 16, 21, 16)
            .stride(8)
            .pad(4)
            .geometry()
            .unwrap();
        let plan = PhasePlan::new(&g).unwrap();
        assert_eq!(plan.classes.len(), 1);
        assert_eq!(plan.classes[0].phases.len(), 64);
        let ratio = plan.gemm_flops(2) as f64 / g.forward_flops() as f64;
        assert!((1.0..1.2).contains(&ratio), "{ratio}");
        // S4: k3 s2: four classes, taps 2x2, 2x1, 1x2, 1x1: exactly the 9 taps.
        let g = DeconvConfig::new(8, 64, 64, 64, 32, 3)
            .stride(2)
            .pad(1)
            .geometry()
            .unwrap();
        let plan = PhasePlan::new(&g).unwrap();
        assert_eq!(plan.classes.len(), 4);
        let ratio = plan.gemm_flops(8) as f64 / g.forward_flops() as f64;
        assert!((1.0..1.05).contains(&ratio), "{ratio}");
    }

    #[test]
    fn no_plan_for_dilation() {
        let g = DeconvConfig::new(1, 2, 4, 4, 2, 3)
            .dilation(2)
            .geometry()
            .unwrap();
        assert!(PhasePlan::new(&g).is_none());
    }
}
