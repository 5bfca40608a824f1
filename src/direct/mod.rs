//! The direct algorithm: no GEMM and no column matrix, one pass over an input plane per kernel
//! tap. It pays where a GEMM has nothing to multiply: layers with a few channels per group
//! (depthwise above all), whose work is bound by memory, not arithmetic.
//!
//! Per axis, output `o = i * stride + k * dilation - pad`. Write `o + pad = u * stride + r`:
//! the output pixels of one *phase* `r` form a grid `u`, and tap `k` (with `k * dilation = a *
//! stride + r`) sends input `i` to `u = i + a` of phase `r`. So, in two dimensions, each tap adds
//! the whole input plane, times one weight and shifted by `(a, b)`, to one phase plane. With
//! the planes' rows padded to a common width `wp` (zeros in the input's padding columns), that
//! shifted add is one contiguous run of `h * wp` multiply-adds: what spills past a row's end
//! into the next row's first columns is `weight * 0`. The output is then the phase planes
//! interleaved, one pass.
//!
//! The backward runs the same runs the other way: `delta` is spread into phase planes once,
//! and each tap is a dot product with the padded input plane (its weight gradient) and a
//! multiply-add into the padded input gradient.

use crate::activation::Epilogue;
use crate::config::Geometry;
use crate::element::Element;
use crate::simd::multiversion;
use rayon::prelude::*;
use rows::RowPlan;

mod rows;

/// Elements of a phase plane the forward sums at once, in registers (4 AVX-512 vectors of
/// `f32`, 8 of `f64`).
const CHUNK: usize = 64;

/// Input channels the forward sums per pass over a phase plane.
const CHANNEL_BLOCK: usize = 4;

/// One axis of the layer, as the kernels see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Axis {
    input: usize,
    out: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
}

impl Axis {
    /// `(phase, shift)` of tap `k`: `k * dilation = shift * stride + phase`.
    fn tap(&self, k: usize) -> (usize, usize) {
        let t = k * self.dilation;
        (t % self.stride, t / self.stride)
    }

    /// Phases the output has: `min(stride, out + pad)` (with a stride beyond the output, most
    /// phases hold no output pixel, and the taps that land there are dropped).
    fn phases(&self) -> usize {
        self.stride.min(self.out + self.pad)
    }

    /// `(phase, grid index)` of output `o`: `o + pad = index * stride + phase`.
    fn grid(&self, o: usize) -> (usize, usize) {
        let t = o + self.pad;
        (t % self.stride, t / self.stride)
    }

    /// Length of a phase plane's axis: the input plus the largest tap shift plus one (a run
    /// spills into the row after its last), and at least the grid the output reaches (output
    /// padding may reach further).
    fn padded(&self) -> usize {
        let reached = (self.out - 1 + self.pad) / self.stride + 1;
        (self.input + self.tap(self.kernel - 1).1 + 1).max(reached)
    }
}

/// The direct plan of a layer's geometry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirectPlan {
    group_in: usize,
    group_out: usize,
    y: Axis,
    x: Axis,
    /// Per phase plane, the taps that land on it: `(tap, offset)`, the tap's index in a
    /// filter's `kh x kw` weights and where its run starts in the phase plane. The kernels
    /// visit the taps phase by phase, so that a phase plane stays in cache while its taps run
    /// (taps that land on no output pixel are never visited).
    phase_taps: Vec<Vec<(usize, usize)>>,
    /// The row forward's plan, where the forward runs row by row ([`rows`]).
    rows: Option<RowPlan>,
    /// Whether the row forward writes past the caches: where the batch's output is larger
    /// than [`STREAM_OUTPUTS`].
    stream: bool,
}

/// Output elements of a batch beyond which the row forward stores them with non-temporal
/// stores: an output this large leaves the caches anyway, and streaming it saves reading
/// each line before writing it. Smaller ones may stay in the last-level cache, where plain
/// stores win. Direct forward, 2 threads, plain -> streaming, medians of 100, three
/// alternations: FCN depthwise x8 (2 x 21 x 512 x 512 outputs, 44 MB) 2.59/3.22/2.69 ->
/// 1.98/2.44/1.92 ms; CenterNet depthwise x4 (8 x 64 x 64 x 64, 8.4 MB) 0.68/0.67/0.64 ->
/// 0.86/0.69/0.73.
const STREAM_OUTPUTS: usize = 8 << 20;

impl DirectPlan {
    pub(crate) fn new(g: &Geometry) -> Self {
        let axis = |a: usize| Axis {
            input: [g.in_h(), g.in_w()][a],
            out: [g.out_h(), g.out_w()][a],
            kernel: g.kernel()[a],
            stride: g.stride()[a],
            pad: g.pad()[a],
            dilation: g.dilation()[a],
        };
        // Per phase present on an axis, its taps `(k, shift)`.
        let taps = |a: Axis| -> Vec<Vec<(usize, usize)>> {
            (0..a.phases())
                .map(|r| {
                    (0..a.kernel)
                        .filter_map(|k| {
                            let (phase, shift) = a.tap(k);
                            (phase == r).then_some((k, shift))
                        })
                        .collect()
                })
                .collect()
        };
        let (y, x) = (axis(0), axis(1));
        let (y_taps, x_taps) = (taps(y), taps(x));
        let wp = x.padded();
        let phase_taps = y_taps
            .iter()
            .flat_map(|ys| x_taps.iter().map(move |xs| (ys, xs)))
            .map(|(ys, xs)| {
                ys.iter()
                    .flat_map(|&(ky, a)| {
                        xs.iter()
                            .map(move |&(kx, b)| (ky * x.kernel + kx, a * wp + b))
                    })
                    .collect()
            })
            .collect();
        let rows = RowPlan::new(g.group_in(), y, x, &y_taps, &x_taps);
        let stream = g.batch().saturating_mul(g.outputs()) > STREAM_OUTPUTS;
        DirectPlan {
            group_in: g.group_in(),
            group_out: g.group_out(),
            y,
            x,
            phase_taps,
            rows,
            stream,
        }
    }

    /// Row width of the padded planes.
    fn wp(&self) -> usize {
        self.x.padded()
    }

    /// Elements of one phase plane (whole [`CHUNK`]s: the rows, then unused room), and of all
    /// `stride_h * stride_w` of them.
    fn phase_plane(&self) -> usize {
        (self.y.padded() * self.wp()).next_multiple_of(CHUNK)
    }
    fn phase_planes(&self) -> usize {
        self.y.phases() * self.x.phases() * self.phase_plane()
    }

    /// Elements of one padded input plane (`h x wp`).
    fn padded_input(&self) -> usize {
        self.y.input * self.wp()
    }

    /// Where the padded input starts in a forward source ([`source_len`](Self::source_len)):
    /// after as many zeros as the farthest tap's offset in a phase plane.
    fn lead(&self) -> usize {
        self.y.tap(self.y.kernel - 1).1 * self.wp() + self.x.tap(self.x.kernel - 1).1
    }

    /// Elements of one forward source: a padded input plane with [`lead`](Self::lead) zeros
    /// before it and zeros after it, so that every tap's window of every chunk of a phase
    /// plane lies inside.
    fn source_len(&self) -> usize {
        self.lead() + self.phase_plane()
    }

    /// Scratch elements one output plane (forward) or one input channel (backward) needs: the
    /// phase planes, and the group's sources (forward) or two padded input planes (backward);
    /// at least what the row forward needs ([`RowPlan::slot_size`]).
    pub(crate) fn slot_size(&self) -> usize {
        let phases = self.phase_planes() + self.source_len() * self.group_in.max(2);
        phases.max(self.rows.as_ref().map_or(0, |r| r.slot_size(self)))
    }

    /// How many rayon tasks share one image's work: with `parallel`, one per whole slot of
    /// the workspace and thread, at most `units` (planes or channels); else 1.
    fn tasks(&self, workspace: usize, parallel: bool, units: usize) -> usize {
        match parallel {
            true => (workspace / self.slot_size())
                .min(rayon::current_num_threads())
                .min(units)
                .max(1),
            false => 1,
        }
    }

    /// The forward pass of one image: `x` (`c x h x w`) to `out` (`n x out_h x out_w`), with the
    /// `epilogue` applied to each plane when given (else the raw sums are stored). `workspace`
    /// holds whole [`slot_size`](Self::slot_size) slots; with `parallel`, the planes are
    /// spread over as many rayon tasks as it has slots.
    pub(crate) fn forward_image<T: Element>(
        &self,
        weights: &[T],
        x: &[T],
        out: &mut [T],
        workspace: &mut [T],
        parallel: bool,
        epilogue: Option<Epilogue<'_, T>>,
    ) {
        let (plane, slot) = (self.y.out * self.x.out, self.slot_size());
        let planes = out.len() / plane;
        let run = |first: usize, out: &mut [T], ws: &mut [T]| {
            // The group whose sources the slot holds: planes of one group share them.
            let mut sources_of = None;
            for (i, out) in out.chunks_mut(plane).enumerate() {
                let f = first + i;
                let ws = &mut ws[..slot];
                if let Some(rows) = &self.rows {
                    let e = epilogue.as_ref();
                    rows::forward_plane_rows(
                        self,
                        rows,
                        weights,
                        x,
                        f,
                        out,
                        ws,
                        &mut sources_of,
                        e,
                        self.stream,
                    );
                    continue;
                }
                forward_plane(self, weights, x, f, out, ws, &mut sources_of);
                if let Some(e) = &epilogue {
                    e.apply(f, out);
                }
            }
        };
        let tasks = self.tasks(workspace.len(), parallel, planes);
        if tasks == 1 {
            return run(0, out, workspace);
        }
        let per_task = planes.div_ceil(tasks);
        out.par_chunks_mut(per_task * plane)
            .zip(workspace.par_chunks_mut(slot))
            .enumerate()
            .for_each(|(t, (out, ws))| run(t * per_task, out, ws));
    }

    /// The backward pass of one image from `delta` (`n x out_h x out_w`, the gradient at the
    /// pre-activation output): `dw += ` the weight gradient (laid out as the weights) and, when
    /// given, `dx += ` the input gradient. With `parallel`, the input channels are spread over
    /// as many rayon tasks as `workspace` has slots (each owns its channels' input-gradient
    /// planes and rows of the weight gradient).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_image<T: Element>(
        &self,
        weights: &[T],
        x: &[T],
        delta: &[T],
        dx: Option<&mut [T]>,
        dw: &mut [T],
        workspace: &mut [T],
        parallel: bool,
    ) {
        let (hw, slot) = (self.y.input * self.x.input, self.slot_size());
        let per_channel = self.group_out * self.y.kernel * self.x.kernel;
        let channels = dw.len() / per_channel;
        let run = |first: usize, dw: &mut [T], mut dx: Option<&mut [T]>, ws: &mut [T]| {
            for (i, dw) in dw.chunks_mut(per_channel).enumerate() {
                let dx = dx.as_deref_mut().map(|d| &mut d[i * hw..][..hw]);
                backward_channel(self, weights, x, delta, first + i, dx, dw, &mut ws[..slot]);
            }
        };
        let tasks = self.tasks(workspace.len(), parallel, channels);
        if tasks == 1 {
            return run(0, dw, dx, workspace);
        }
        let per_task = channels.div_ceil(tasks);
        let dw_parts = dw.par_chunks_mut(per_task * per_channel);
        let ws_parts = workspace.par_chunks_mut(slot);
        match dx {
            Some(dx) => dw_parts
                .zip(dx.par_chunks_mut(per_task * hw))
                .zip(ws_parts)
                .enumerate()
                .for_each(|(t, ((dw, dx), ws))| run(t * per_task, dw, Some(dx), ws)),
            None => dw_parts
                .zip(ws_parts)
                .enumerate()
                .for_each(|(t, (dw, ws))| run(t * per_task, dw, None, ws)),
        }
    }

    /// The input plane `c`, padded to rows of `wp` (zero padding columns) in `buf`, or `x`'s
    /// own plane when no padding is needed.
    fn padded<'a, T: Element>(&self, x: &'a [T], c: usize, buf: &'a mut [T]) -> &'a [T] {
        let (w, wp, hw) = (self.x.input, self.wp(), self.y.input * self.x.input);
        let plane = &x[c * hw..][..hw];
        for (dst, src) in buf.chunks_mut(wp).zip(plane.chunks(w)) {
            dst[..w].copy_from_slice(src);
            dst[w..].fill(T::zero());
        }
        &buf[..self.padded_input()]
    }
}

multiversion! {
/// Output plane `f` of one image, phase plane by phase plane, in chunks of [`CHUNK`] elements:
/// each chunk sums every tap of every input channel of the group (a window of that channel's
/// source) in registers and is stored once; then the phase planes are interleaved into `out`.
/// `ws` is one slot; `sources_of` names the group whose sources it holds (padded here when
/// it is another).
fn forward_plane<T: Element>(
    plan: &DirectPlan,
    weights: &[T],
    x: &[T],
    f: usize,
    out: &mut [T],
    ws: &mut [T],
    sources_of: &mut Option<usize>,
) {
    let (cg, ng) = (plan.group_in, plan.group_out);
    let taps = plan.y.kernel * plan.x.kernel;
    let (lead, len) = (plan.lead(), plan.source_len());
    let (phases, sources) = ws.split_at_mut(plan.phase_planes());
    let sources = &mut sources[..cg * len];
    let (grp, fo) = (f / ng, f % ng);
    if *sources_of != Some(grp) {
        for (ci, source) in sources.chunks_exact_mut(len).enumerate() {
            let (before, rest) = source.split_at_mut(lead);
            before.fill(T::zero());
            let run = plan.padded(x, grp * cg + ci, rest).len();
            rest[run..].fill(T::zero());
        }
        *sources_of = Some(grp);
    }
    let sources = &*sources;
    let kernel = |ci: usize| &weights[((grp * cg + ci) * ng + fo) * taps..][..taps];
    for (plane, phase_taps) in phases.chunks_exact_mut(plan.phase_plane()).zip(&plan.phase_taps) {
        // A few channels at a time, so that the loads run in a few streams (one per channel
        // and row of taps) the hardware prefetches; each block adds to the chunk in place.
        for (block, channels) in sources.chunks(CHANNEL_BLOCK * len).enumerate() {
            for (i, dst) in plane.chunks_exact_mut(CHUNK).enumerate() {
                let dst: &mut [T; CHUNK] = dst.try_into().unwrap();
                let q = i * CHUNK + lead;
                let mut acc = if block == 0 { [T::zero(); CHUNK] } else { *dst };
                for (c, source) in channels.chunks_exact(len).enumerate() {
                    let kernel = kernel(block * CHANNEL_BLOCK + c);
                    for &(tap, at) in phase_taps {
                        let window: &[T; CHUNK] = source[q - at..][..CHUNK].try_into().unwrap();
                        let w = kernel[tap];
                        for l in 0..CHUNK {
                            acc[l] += w * window[l];
                        }
                    }
                }
                *dst = acc;
            }
        }
    }
    interleave(plan, phases, out);
}
}

multiversion! {
/// Input channel `c` of one image: its rows `dw` of the weight gradient (`group_out x kh x kw`)
/// and, when given, its input-gradient plane `dx` (added to). `ws` is one slot.
#[allow(clippy::too_many_arguments)]
fn backward_channel<T: Element>(
    plan: &DirectPlan,
    weights: &[T],
    x: &[T],
    delta: &[T],
    c: usize,
    dx: Option<&mut [T]>,
    dw: &mut [T],
    ws: &mut [T],
) {
    let (ng, (y, xa)) = (plan.group_out, (plan.y, plan.x));
    let (w, wp, taps, run) = (xa.input, plan.wp(), y.kernel * xa.kernel, plan.padded_input());
    let ohw = y.out * xa.out;
    let (phases, rest) = ws.split_at_mut(plan.phase_planes());
    let (src_buf, dx_buf) = rest.split_at_mut(run);
    let dx_buf = &mut dx_buf[..run];
    let src = plan.padded(x, c, src_buf);
    dx_buf.fill(T::zero());
    let grp = c / plan.group_in;
    let kernels = &weights[c * ng * taps..][..ng * taps];
    for fo in 0..ng {
        let f = grp * ng + fo;
        spread(plan, &delta[f * ohw..][..ohw], phases);
        // Phase by phase, as the forward (taps that reach no output pixel have no gradient).
        for (plane, phase_taps) in phases.chunks_exact(plan.phase_plane()).zip(&plan.phase_taps) {
            for &(tap, at) in phase_taps {
                let d = &plane[at..at + run];
                let tap = fo * taps + tap;
                dw[tap] += dot_inline(src, d);
                if dx.is_some() {
                    axpy_inline(dx_buf, d, kernels[tap]);
                }
            }
        }
    }
    if let Some(dx) = dx {
        for (dst, src) in dx.chunks_mut(w).zip(dx_buf.chunks(wp)) {
            for (d, &s) in dst.iter_mut().zip(&src[..w]) {
                *d += s;
            }
        }
    }
}
}

/// `out[oy][ox] = phases[phase of (oy, ox)][grid index of (oy, ox)]`.
#[inline(always)]
fn interleave<T: Element>(plan: &DirectPlan, phases: &[T], out: &mut [T]) {
    let (y, xa, wp, pp) = (plan.y, plan.x, plan.wp(), plan.phase_plane());
    for (oy, row) in out.chunks_mut(xa.out).enumerate() {
        let (ry, u) = y.grid(oy);
        let base = ry * xa.phases() * pp + u * wp;
        // The usual strides with the stride a constant: whole groups of `stride` pixels, one
        // from each phase, without a division or a strided loop per pixel.
        match xa.stride {
            2 if row.len() >= 2 => by_groups::<T, 2>(xa, base, pp, row, phases),
            3 if row.len() >= 3 => by_groups::<T, 3>(xa, base, pp, row, phases),
            4 if row.len() >= 4 => by_groups::<T, 4>(xa, base, pp, row, phases),
            8 if row.len() >= 8 => by_groups::<T, 8>(xa, base, pp, row, phases),
            _ => {
                for (ox0, at) in row_phases(xa, base, pp) {
                    let src = &phases[at..];
                    for (o, &p) in row[ox0..].iter_mut().step_by(xa.stride).zip(src) {
                        *o = p;
                    }
                }
            }
        }
    }
}

/// The adjoint of [`interleave`]: `delta` into zeroed phase planes.
#[inline(always)]
fn spread<T: Element>(plan: &DirectPlan, delta: &[T], phases: &mut [T]) {
    let (y, xa, wp, pp) = (plan.y, plan.x, plan.wp(), plan.phase_plane());
    phases.fill(T::zero());
    for (oy, row) in delta.chunks(xa.out).enumerate() {
        let (ry, u) = y.grid(oy);
        let base = ry * xa.phases() * pp + u * wp;
        match xa.stride {
            2 if row.len() >= 2 => by_groups_spread::<T, 2>(xa, base, pp, row, phases),
            3 if row.len() >= 3 => by_groups_spread::<T, 3>(xa, base, pp, row, phases),
            4 if row.len() >= 4 => by_groups_spread::<T, 4>(xa, base, pp, row, phases),
            8 if row.len() >= 8 => by_groups_spread::<T, 8>(xa, base, pp, row, phases),
            _ => {
                for (ox0, at) in row_phases(xa, base, pp) {
                    let dst = &mut phases[at..];
                    for (p, &d) in dst.iter_mut().zip(row[ox0..].iter().step_by(xa.stride)) {
                        *p = d;
                    }
                }
            }
        }
    }
}

/// Where each of the `S` phases of an output row (at `base`) starts in the phase planes; the
/// row has at least `S` pixels, so all `S` phases are present.
#[inline(always)]
fn starts<const S: usize>(xa: Axis, base: usize, pp: usize) -> [usize; S] {
    let mut starts = [0; S];
    for (ox0, at) in row_phases(xa, base, pp) {
        starts[ox0] = at;
    }
    starts
}

/// [`interleave`] of one row for stride `S`: pixel `k * S + r` is phase `r`'s `k`-th.
#[inline(always)]
fn by_groups<T: Element, const S: usize>(
    xa: Axis,
    base: usize,
    pp: usize,
    row: &mut [T],
    phases: &[T],
) {
    let at = starts::<S>(xa, base, pp);
    let (full, rest) = (row.len() / S, row.len() % S);
    let src: [&[T]; S] =
        std::array::from_fn(|r| &phases[at[r]..at[r] + full + usize::from(r < rest)]);
    if S == 2 {
        // Two runs zipped: no bounds checks, so it vectorizes (to unpacks).
        let pairs = row.chunks_exact_mut(2).zip(src[0]).zip(src[1]);
        for ((pair, &a), &b) in pairs {
            pair[0] = a;
            pair[1] = b;
        }
    } else {
        for (k, group) in row.chunks_exact_mut(S).enumerate() {
            for r in 0..S {
                group[r] = src[r][k];
            }
        }
    }
    for r in 0..rest {
        row[full * S + r] = src[r][full];
    }
}

/// [`spread`] of one row for stride `S`.
#[inline(always)]
fn by_groups_spread<T: Element, const S: usize>(
    xa: Axis,
    base: usize,
    pp: usize,
    row: &[T],
    phases: &mut [T],
) {
    let at = starts::<S>(xa, base, pp);
    let (full, rest) = (row.len() / S, row.len() % S);
    for (k, group) in row.chunks_exact(S).enumerate() {
        for r in 0..S {
            phases[at[r] + k] = group[r];
        }
    }
    for r in 0..rest {
        phases[at[r] + full] = row[full * S + r];
    }
}

/// For each `x` phase present in an output row: its first output column, and where that
/// pixel sits in the phase planes (the row of `base` in phase plane 0; `pp` apart).
#[inline(always)]
fn row_phases(xa: Axis, base: usize, pp: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..xa.stride.min(xa.out)).map(move |ox0| {
        let (rx, v) = xa.grid(ox0);
        (ox0, base + rx * pp + v)
    })
}

/// `y += a * x` (inlined into the multiversioned kernels).
#[inline(always)]
fn axpy_inline<T: Element>(y: &mut [T], x: &[T], a: T) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `sum(a * b)`, in 16 lanes so that it vectorizes (inlined into the multiversioned kernels).
#[inline(always)]
fn dot_inline<T: Element>(a: &[T], b: &[T]) -> T {
    let mut lanes = [T::zero(); 16];
    let (a16, b16) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (a16.remainder(), b16.remainder());
    for (a, b) in a16.zip(b16) {
        for l in 0..16 {
            lanes[l] += a[l] * b[l];
        }
    }
    let mut sum = lanes.iter().fold(T::zero(), |s, &l| s + l);
    for (&a, &b) in ra.iter().zip(rb) {
        sum += a * b;
    }
    sum
}

#[cfg(test)]
mod tests {
    use crate::reference;
    use crate::{Activation, Algorithm, DeconvConfig, DeconvLayer, Mode};

    /// `n` whole numbers in -4..=4, varied by `seed`: every sum below is exact in f32 and f64.
    fn whole(n: usize, seed: usize) -> Vec<f64> {
        (0..n)
            .map(|i| (((i * 2654435761 + seed * 97) >> 7) % 9) as f64 - 4.0)
            .collect()
    }

    /// The direct forward of `config` equals the reference exactly on whole numbers.
    fn check_forward<T>(config: &DeconvConfig)
    where
        T: crate::element::Element,
        crate::DefaultBackend: crate::backend::Gemm<T>,
    {
        let config = config.clone().algorithm(Algorithm::Direct);
        let g = config.geometry().unwrap();
        let cast = |v: &[f64]| v.iter().map(|&x| T::of(x)).collect::<Vec<T>>();
        let (weights, input) = (whole(g.weight_count(), 1), whole(g.batch() * g.inputs(), 2));
        let want = reference::deconv2d(&g, &input, &weights).unwrap();
        let mut layer: DeconvLayer<T> = DeconvLayer::new(&config).unwrap();
        layer.weights_mut().copy_from_slice(&cast(&weights));
        let out = layer.forward(&cast(&input), Mode::Inference).unwrap();
        assert_eq!(out, &cast(&want)[..], "{config:?}");
    }

    /// Runs `f` in pools of 1 and 3 threads.
    fn with_threads(f: impl Fn() + Sync) {
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(&f);
        }
    }

    /// The forward's channel blocks (more input channels per group than a block, and not a
    /// multiple of it) and its sources, padded once for the planes of a group that one task
    /// runs: with 1 and 3 threads, groups of 1 to 3 filters, strides 1 to 3, f64 and f32,
    /// exactly the reference on whole numbers.
    #[test]
    fn channel_blocks_and_shared_sources_match_the_reference() {
        let configs = [
            DeconvConfig::new(2, 9, 7, 6, 3, 3).stride(2).pad(1),
            DeconvConfig::new(1, 10, 9, 11, 4, 4)
                .stride(2)
                .pad(1)
                .groups(2),
            DeconvConfig::new(1, 15, 5, 8, 6, 3)
                .stride(1)
                .pad(1)
                .groups(3),
            DeconvConfig::new(3, 6, 4, 4, 2, 5)
                .stride(3)
                .pad(2)
                .output_padding(1),
            DeconvConfig::new(1, 5, 20, 3, 1, 2)
                .stride_hw(2, 1)
                .dilation(2),
        ];
        with_threads(|| {
            for config in &configs {
                assert!(
                    super::DirectPlan::new(&config.geometry().unwrap())
                        .rows
                        .is_none()
                );
                check_forward::<f64>(config);
                check_forward::<f32>(config);
            }
        });
    }

    /// The row forward (x strides 4 to 32; rows of several chunks and a partial one, padding
    /// that is not a multiple of the stride, output padding, dilation, rectangular kernels,
    /// 1 to 3 input channels per group): exactly the reference on whole numbers, f64 and f32,
    /// 1 and 3 threads; and, with batch norm and activations (the epilogue it fuses into its
    /// stores), the column forward's numbers in training and inference.
    #[test]
    fn row_forward_matches_the_reference() {
        let configs = [
            DeconvConfig::new(2, 3, 5, 11, 3, 16)
                .stride(8)
                .pad(4)
                .groups(3),
            DeconvConfig::new(1, 2, 6, 23, 2, 8)
                .stride(4)
                .pad(3)
                .output_padding(2)
                .groups(2),
            DeconvConfig::new(2, 4, 4, 9, 6, 1)
                .kernel_hw(3, 5)
                .stride_hw(3, 4)
                .pad_hw(1, 2)
                .dilation(2)
                .groups(2),
            DeconvConfig::new(1, 1, 3, 7, 2, 1)
                .kernel_hw(2, 5)
                .stride_hw(1, 16)
                .pad_hw(0, 1),
            DeconvConfig::new(1, 3, 2, 3, 1, 3)
                .stride_hw(2, 32)
                .output_padding_hw(1, 5),
        ];
        with_threads(|| {
            for config in &configs {
                assert!(
                    super::DirectPlan::new(&config.geometry().unwrap())
                        .rows
                        .is_some()
                );
                check_forward::<f64>(config);
                check_forward::<f32>(config);
            }
        });
        let activations = [Activation::Leaky, Activation::Logistic, Activation::Tanh];
        for (i, config) in configs.iter().enumerate() {
            let config = config
                .clone()
                .activation(activations[i % 3])
                .batch_normalize(i % 2 == 0);
            let g = config.geometry().unwrap();
            let input = whole(g.batch() * g.inputs(), 5);
            let biases = whole(g.filters(), 6);
            let run = |algorithm| {
                let mut layer: DeconvLayer<f64> =
                    DeconvLayer::new(&config.clone().algorithm(algorithm)).unwrap();
                layer.biases_mut().copy_from_slice(&biases);
                let train = layer.forward(&input, Mode::Train).unwrap().to_vec();
                let infer = layer.forward(&input, Mode::Inference).unwrap().to_vec();
                (train, infer)
            };
            let (want, got) = (run(Algorithm::Columns), run(Algorithm::Direct));
            for (want, got) in [(&want.0, &got.0), (&want.1, &got.1)] {
                for (w, g) in want.iter().zip(got) {
                    assert!((w - g).abs() <= 1e-12 * w.abs().max(1.0), "{config:?}");
                }
            }
        }
    }

    /// The row forward's streaming stores (used for outputs too large for the tests to build
    /// through a layer): the same numbers as its plain stores, on rows whose start is and is
    /// not 16-byte aligned, with chunks and a partial one, with and without an epilogue.
    #[test]
    fn streaming_rows_store_what_plain_rows_store() {
        use crate::activation::Epilogue;
        let configs = [
            DeconvConfig::new(1, 3, 5, 11, 3, 16)
                .stride(8)
                .pad(4)
                .groups(3),
            DeconvConfig::new(1, 2, 3, 23, 2, 5).stride(4).groups(2),
        ];
        for config in configs {
            let g = config.geometry().unwrap();
            let mut plan = super::DirectPlan::new(&g);
            assert!(plan.rows.is_some() && !plan.stream);
            let (weights, x) = (whole(g.weight_count(), 3), whole(g.inputs(), 4));
            let add = whole(g.filters(), 5);
            let epilogue = Epilogue {
                mul: None,
                add: &add,
                activation: Activation::Leaky,
            };
            let mut ws = vec![0.0; 3 * plan.slot_size()];
            let mut run = |plan: &super::DirectPlan, e: Option<Epilogue<'_, f64>>| {
                let mut out = vec![f64::NAN; g.outputs()];
                plan.forward_image(&weights, &x, &mut out, &mut ws, true, e);
                out
            };
            let plain = (run(&plan, None), run(&plan, Some(epilogue)));
            plan.stream = true;
            let streamed = (run(&plan, None), run(&plan, Some(epilogue)));
            assert_eq!(plain, streamed, "{config:?}");
            assert!(plain.0.iter().all(|v| v.is_finite()), "{config:?}");
        }
    }

    /// Geometries at the edges of the phase planes (strides beyond the kernel and beyond the
    /// output, padding that crops most phases, output padding reached through the dilation):
    /// forward, input and weight gradients equal the reference exactly on whole numbers.
    #[test]
    fn edge_geometries_match_the_reference() {
        let configs = [
            DeconvConfig::new(2, 1, 1, 1, 1, 2).stride(5),
            DeconvConfig::new(1, 2, 2, 3, 2, 3)
                .stride_hw(7, 4)
                .pad_hw(2, 1)
                .groups(2),
            DeconvConfig::new(1, 1, 3, 2, 3, 2)
                .stride(1)
                .dilation(5)
                .output_padding(4),
            DeconvConfig::new(2, 3, 4, 4, 3, 5)
                .stride(3)
                .pad(4)
                .groups(3),
            DeconvConfig::new(1, 2, 1, 5, 4, 1)
                .stride_hw(4, 2)
                .output_padding_hw(3, 1),
            DeconvConfig::new(1, 1, 1, 1, 1, 2).stride(47_483_648),
        ];
        for config in configs {
            let g = config.geometry().unwrap();
            let mut layer: DeconvLayer<f64> =
                DeconvLayer::new(&config.clone().algorithm(Algorithm::Direct)).unwrap();
            let weights = whole(g.weight_count(), 1);
            layer.weights_mut().copy_from_slice(&weights);
            let input = whole(g.batch() * g.inputs(), 2);
            let out = layer.forward(&input, Mode::Train).unwrap().to_vec();
            assert_eq!(
                out,
                reference::deconv2d(&g, &input, &weights).unwrap(),
                "{config:?}"
            );
            let delta = whole(g.batch() * g.outputs(), 3);
            layer.delta_mut().copy_from_slice(&delta);
            let mut dx = vec![0.0; input.len()];
            layer.backward(&input, Some(&mut dx)).unwrap();
            let want_dx = reference::conv2d_adjoint(&g, &delta, &weights).unwrap();
            let want_dw = reference::deconv2d_weight_grad(&g, &input, &delta).unwrap();
            assert_eq!(dx, want_dx, "{config:?}");
            assert_eq!(layer.weight_updates(), &want_dw[..], "{config:?}");
        }
    }
}
