//! `im2col` / `col2im` between a column matrix and image planes, parallel per channel (rayon).
//!
//! The column matrix of `channels` planes has rows `(channel, ki, kj)` and columns `(iy, ix)`
//! over the *small* image (the layer's input, `h x w`). Entry `(ch, ki, kj, iy, ix)` belongs to
//! the *big* image (the layer's output, `out_h x out_w`) pixel
//! `y = iy * stride_h + ki * dilation_h - pad_h`, `x = ix * stride_w + kj * dilation_w - pad_w`;
//! pixels outside the big image are dropped (col2im) or read as zero (im2col). Strides larger
//! than the kernel leave holes (big pixels no tap reaches), which stay zero.
//!
//! Each task owns one channel's plane (`par_chunks_mut`), so no two threads write the same
//! memory; the loops use precomputed valid ranges instead of per-pixel bounds checks.

use crate::element::Element;
use crate::error::{Result, check_len, mul};
use crate::simd::multiversion;
use rayon::prelude::*;
use std::ops::Range;

/// How a column matrix maps onto image planes. Pairs are `[height, width]`.
///
/// Built by [`Window::new`], which checks it, or by a layer's
/// [`Geometry::window`](crate::Geometry::window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub(crate) kernel: [usize; 2],
    pub(crate) stride: [usize; 2],
    pub(crate) pad: [usize; 2],
    pub(crate) dilation: [usize; 2],
    pub(crate) small: [usize; 2],
    pub(crate) big: [usize; 2],
}

impl Window {
    /// The window of a kernel `[kh, kw]` with `stride`, `pad` and `dilation` between a small
    /// image (the matrix's columns, `[h, w]`) and a big one (the planes, `[out_h, out_w]`).
    ///
    /// ```
    /// use deconv::im2col::{Window, col2im};
    ///
    /// // A 2x2 kernel with stride 2 spreads each small pixel over its own 2x2 block.
    /// let window = Window::new([2, 2], [2, 2], [0, 0], [1, 1], [1, 2], [2, 4])?;
    /// let cols = [1.0f32, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0]; // rows (ki, kj), columns (iy, ix)
    /// let mut plane = [0.0f32; 8];
    /// col2im(&cols, &window, &mut plane)?;
    /// assert_eq!(plane, [1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]);
    /// assert!(Window::new([2, 2], [0, 2], [0, 0], [1, 1], [1, 2], [2, 4]).is_err());
    /// # Ok::<(), deconv::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidParameter`](crate::Error::InvalidParameter) for a kernel, stride or
    /// dilation of 0; [`Error::Overflow`](crate::Error::Overflow) when the pixel indices the
    /// window reaches do not fit `isize`.
    pub fn new(
        kernel: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 2],
        dilation: [usize; 2],
        small: [usize; 2],
        big: [usize; 2],
    ) -> Result<Self> {
        for (param, v) in [
            ("kernel", kernel),
            ("stride", stride),
            ("dilation", dilation),
        ] {
            if v.contains(&0) {
                return Err(crate::Error::InvalidParameter {
                    param,
                    reason: format!("{v:?}: each must be at least 1"),
                });
            }
        }
        for a in 0..2 {
            // The loops compute `i * stride + k * dilation - pad` and compare it with `big`.
            let span = small[a]
                .checked_mul(stride[a])
                .and_then(|x| x.checked_add((kernel[a] - 1).checked_mul(dilation[a])?))
                .and_then(|x| x.checked_add(pad[a])?.checked_add(big[a]))
                .filter(|&x| x <= isize::MAX as usize);
            if span.is_none() {
                return Err(crate::Error::Overflow {
                    what: "window pixel index",
                });
            }
        }
        let window = Window {
            kernel,
            stride,
            pad,
            dilation,
            small,
            big,
        };
        window.col_plane()?;
        window.big_plane()?;
        Ok(window)
    }

    /// Kernel `[kh, kw]`.
    pub fn kernel(&self) -> [usize; 2] {
        self.kernel
    }
    /// Stride `[sh, sw]`.
    pub fn stride(&self) -> [usize; 2] {
        self.stride
    }
    /// Padding `[ph, pw]`.
    pub fn pad(&self) -> [usize; 2] {
        self.pad
    }
    /// Dilation `[dh, dw]`.
    pub fn dilation(&self) -> [usize; 2] {
        self.dilation
    }
    /// Size of the small image (columns of the matrix), `[h, w]`.
    pub fn small(&self) -> [usize; 2] {
        self.small
    }
    /// Size of the big image (the planes), `[out_h, out_w]`.
    pub fn big(&self) -> [usize; 2] {
        self.big
    }

    /// Whether each small pixel is its big pixel (a 1x1 kernel at stride 1, no padding, same
    /// size): the column matrix of a plane is then the plane itself.
    pub(crate) fn is_identity(&self) -> bool {
        self.kernel == [1, 1]
            && self.stride == [1, 1]
            && self.pad == [0, 0]
            && self.small == self.big
    }

    fn col_plane(&self) -> Result<usize> {
        mul(
            "column matrix size",
            &[self.kernel[0], self.kernel[1], self.small[0], self.small[1]],
        )
    }
    fn big_plane(&self) -> Result<usize> {
        mul("image plane size", &[self.big[0], self.big[1]])
    }

    /// Small-image indices `i` whose tap `k` lands inside the big image on `axis`, and the big
    /// index of `i = range.start` (the next ones follow at `stride`).
    fn valid(&self, axis: usize, k: usize) -> (Range<usize>, usize) {
        let (s, small, big) = (self.stride[axis], self.small[axis], self.big[axis]);
        // Big index is i*s + off, off = k*d - p, which may be negative.
        let off = (k * self.dilation[axis]) as isize - self.pad[axis] as isize;
        let first = if off >= 0 {
            0
        } else {
            (-off as usize).div_ceil(s)
        };
        // i*s + off < big  <=>  i < (big - off) / s, rounded up.
        let bound = big as isize - off;
        let last = if bound <= 0 {
            0
        } else {
            (bound as usize).div_ceil(s).min(small)
        };
        let first = first.min(last);
        let start = (first * s) as isize + off;
        (first..last, start.max(0) as usize)
    }
}

/// Kernels of up to this many taps per axis get [`Taps`] tables.
const TABLE_TAPS: usize = 16;

/// [`Window::valid`] of every tap on both axes, computed once per im2col or col2im call: per
/// plane, its divisions cost more than the copies of small planes (dcgan-z's forward, 64 images
/// of 512 4x4 planes: 80% of its time was `valid` and the per-tap setup).
pub(crate) struct Taps {
    /// `(first, last, big index of first)` per axis and tap, for kernels up to [`TABLE_TAPS`].
    axes: Option<[[(usize, usize, usize); TABLE_TAPS]; 2]>,
}

impl Taps {
    pub(crate) fn new(window: &Window) -> Self {
        if window.kernel[0] > TABLE_TAPS || window.kernel[1] > TABLE_TAPS {
            return Taps { axes: None };
        }
        let mut axes = [[(0, 0, 0); TABLE_TAPS]; 2];
        for (axis, table) in axes.iter_mut().enumerate() {
            for (k, entry) in table.iter_mut().take(window.kernel[axis]).enumerate() {
                let (range, start) = window.valid(axis, k);
                *entry = (range.start, range.end, start);
            }
        }
        Taps { axes: Some(axes) }
    }

    /// [`Window::valid`], from the table where there is one.
    #[inline(always)]
    fn valid(&self, window: &Window, axis: usize, k: usize) -> (Range<usize>, usize) {
        match &self.axes {
            Some(axes) => {
                let (first, last, start) = axes[axis][k];
                (first..last, start)
            }
            None => window.valid(axis, k),
        }
    }
}

/// Where one image's column matrices sit in a matrix that may hold several images side by side
/// (the columns of a batch of small images, multiplied in one GEMM): its rows are `ld` apart
/// and its columns start at `offset`. One image alone: `ld` is its column count, `offset` 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ColLayout {
    pub(crate) ld: usize,
    pub(crate) offset: usize,
}

impl ColLayout {
    /// One image's contiguous matrices of `width` columns.
    pub(crate) fn alone(width: usize) -> Self {
        ColLayout {
            ld: width,
            offset: 0,
        }
    }

    /// Checks that `len` elements hold `rows` rows of `width` columns in this layout.
    fn check(&self, rows: usize, width: usize, len: usize) -> Result<()> {
        if self.offset + width > self.ld {
            return Err(crate::Error::InvalidParameter {
                param: "ld",
                reason: format!(
                    "columns {}..{} do not fit rows of {}",
                    self.offset,
                    self.offset + width,
                    self.ld
                ),
            });
        }
        let need = match rows {
            0 => 0,
            r => mul("cols", &[r - 1, self.ld])? + self.offset + width,
        };
        crate::error::check_len_at_least("cols", need, len)
    }
}

/// Writes each big plane as the sum of the column entries that land on it (`col2im`).
///
/// `cols` holds `channels` column matrices of `kh*kw` rows by `h*w`; `planes` holds `channels`
/// planes of `out_h*out_w`, which are overwritten (not accumulated into).
///
/// # Errors
/// [`Error::BufferLength`](crate::Error::BufferLength) when a slice does not have exactly the
/// size `channels` and `window` imply.
pub fn col2im<T: Element>(cols: &[T], window: &Window, planes: &mut [T]) -> Result<()> {
    let mut none = vec![(); planes.len() / window.big_plane()?.max(1)];
    let layout = ColLayout::alone(mul("columns", &[window.small[0], window.small[1]])?);
    let channels = planes.len() / window.big_plane()?.max(1);
    check_len(
        "cols",
        mul("cols", &[channels, window.col_plane()?])?,
        cols.len(),
    )?;
    col2im_then(cols, layout, window, planes, true, &mut none, |_, _, _| {})
}

/// [`col2im`] of the image at `layout` in `cols`, then `finish(channel, plane, state)` on each
/// plane while it is still in cache (bias and activation, or batch-norm statistics), with
/// `states[channel]`. With `parallel`, channels are spread over rayon's threads.
pub(crate) fn col2im_then<T: Element, S: Send>(
    cols: &[T],
    layout: ColLayout,
    window: &Window,
    planes: &mut [T],
    parallel: bool,
    states: &mut [S],
    finish: impl Fn(usize, &mut [T], &mut S) + Sync,
) -> Result<()> {
    let col_plane = window.col_plane()?;
    let big_plane = window.big_plane()?;
    if big_plane == 0 || col_plane == 0 {
        check_len("cols", 0, cols.len())?;
        return Ok(());
    }
    let channels = planes.len() / big_plane;
    let taps = window.kernel[0] * window.kernel[1];
    check_len("planes", channels * big_plane, planes.len())?;
    layout.check(
        channels * taps,
        window.small[0] * window.small[1],
        cols.len(),
    )?;
    check_len("states", channels, states.len())?;
    let ld = layout.ld;
    let threads = rayon::current_num_threads();
    if parallel && channels < BANDS_PER_THREAD * threads && gathers_by_phase(window) {
        // Too few planes to keep every thread busy (FSRCNN's one output channel ran on one
        // core): bands of output rows in parallel, then `finish` per plane.
        let [out_h, out_w] = window.big;
        let bands = (BANDS_PER_THREAD * threads).div_ceil(channels).min(out_h);
        let band = out_h.div_ceil(bands) * out_w;
        planes
            .par_chunks_mut(big_plane)
            .enumerate()
            .for_each(|(ch, plane)| {
                let col = &cols[ch * taps * ld + layout.offset..];
                plane
                    .par_chunks_mut(band)
                    .enumerate()
                    .for_each(|(b, rows)| col2im_rows(col, ld, window, b * band / out_w, rows));
            });
        planes
            .par_chunks_mut(big_plane)
            .zip(states.par_iter_mut())
            .enumerate()
            .for_each(|(ch, (plane, state))| finish(ch, plane, state));
        return Ok(());
    }
    type Item<'a, T, S> = (usize, (&'a mut [T], &'a mut S));
    let table = Taps::new(window);
    let one = |(ch, (plane, state)): Item<'_, T, S>| {
        col2im_plane(
            &cols[ch * taps * ld + layout.offset..],
            ld,
            window,
            &table,
            plane,
        );
        finish(ch, plane, state);
    };
    if parallel {
        planes
            .par_chunks_mut(big_plane)
            .zip(states.par_iter_mut())
            .enumerate()
            .for_each(one);
    } else {
        planes
            .chunks_mut(big_plane)
            .zip(states.iter_mut())
            .enumerate()
            .for_each(one);
    }
    Ok(())
}

/// Parallel tasks per thread below which col2im splits planes into bands of rows.
const BANDS_PER_THREAD: usize = 2;

/// Shortest run of same-phase output pixels per row for which col2im gathers by phase.
const MIN_GATHER_RUN: usize = 32;

multiversion! {
/// One channel of [`col2im`]: `col` is its `kh*kw x h*w` matrix (rows `ld` apart), `plane` its
/// `out_h x out_w`.
pub(crate) fn col2im_plane<T: Element>(
    col: &[T],
    ld: usize,
    window: &Window,
    table: &Taps,
    plane: &mut [T],
) {
    // The gather pays on long rows (S4: 64 pixels per phase, 6% faster); on short ones its
    // per-row setup costs more than the strided adds it saves (S1: 16 per phase, 9% slower).
    if gathers_by_phase(window) {
        return col2im_plane_by_phase(col, ld, window, 0, plane);
    }
    let [kh, kw] = window.kernel;
    let [h, w] = window.small;
    let out_w = window.big[1];
    let [sh, sw] = window.stride;
    plane.fill(T::zero());
    if h * w == 1 {
        // A 1x1 image (a latent vector projected to a map): each tap adds one value to one
        // pixel, without the row loops' setup.
        for ki in 0..kh {
            let (rows, y0) = table.valid(window, 0, ki);
            if rows.is_empty() {
                continue;
            }
            for kj in 0..kw {
                let (xs, x0) = table.valid(window, 1, kj);
                if !xs.is_empty() {
                    plane[y0 * out_w + x0] += col[(ki * kw + kj) * ld];
                }
            }
        }
        return;
    }
    for ki in 0..kh {
        let (rows, y0) = table.valid(window, 0, ki);
        for kj in 0..kw {
            let (xs, x0) = table.valid(window, 1, kj);
            if xs.is_empty() {
                continue;
            }
            let tap = &col[(ki * kw + kj) * ld..][..h * w];
            for (n, iy) in rows.clone().enumerate() {
                let src = &tap[iy * w + xs.start..iy * w + xs.end];
                let dst = &mut plane[(y0 + n * sh) * out_w + x0..];
                // `step_by` with a run-time step does not vectorize: strides up to 4 get a loop
                // with the stride known at compile time (atrous-d2's forward spent 30% in the
                // scalar loop at stride 1).
                match sw {
                    1 => add_strided::<T, 1>(dst, src),
                    2 => add_strided::<T, 2>(dst, src),
                    3 => add_strided::<T, 3>(dst, src),
                    4 => add_strided::<T, 4>(dst, src),
                    _ => {
                        for (d, &s) in dst.iter_mut().step_by(sw).zip(src) {
                            *d += s;
                        }
                    }
                }
            }
        }
    }
}
}

multiversion! {
/// [`col2im_plane`] of `kb` images at once, their columns interleaved (the images' pixels
/// side by side, image innermost): entry `(tap, pixel)` of image `j` is
/// `col[tap * ld + pixel * images + j]`, for `j < kb <= images`. Writes into `acc` the
/// `out_h * out_w` runs of `kb` sums, pixel-major (each tap adds `kb` contiguous values, where
/// one image's small plane would give short strided rows).
pub(crate) fn col2im_interleaved<T: Element>(
    col: &[T],
    ld: usize,
    images: usize,
    kb: usize,
    window: &Window,
    table: &Taps,
    acc: &mut [T],
) {
    // A constant run length unrolls into whole vectors.
    match kb {
        16 => interleaved_sums::<T, 16>(col, ld, images, kb, window, table, acc),
        8 => interleaved_sums::<T, 8>(col, ld, images, kb, window, table, acc),
        4 => interleaved_sums::<T, 4>(col, ld, images, kb, window, table, acc),
        _ => interleaved_sums::<T, 0>(col, ld, images, kb, window, table, acc),
    }
}
}

/// [`col2im_interleaved`] with `KB` images (a constant, so that runs unroll into whole
/// vectors), or `kb` where `KB` is 0.
#[inline(always)]
fn interleaved_sums<T: Element, const KB: usize>(
    col: &[T],
    ld: usize,
    images: usize,
    kb: usize,
    window: &Window,
    table: &Taps,
    acc: &mut [T],
) {
    let kb = if KB > 0 { KB } else { kb };
    acc.fill(T::zero());
    let [kh, kw] = window.kernel;
    let w = window.small[1];
    let out_w = window.big[1];
    let [sh, sw] = window.stride;
    for ki in 0..kh {
        let (rows, y0) = table.valid(window, 0, ki);
        for kj in 0..kw {
            let (xs, x0) = table.valid(window, 1, kj);
            if xs.is_empty() {
                continue;
            }
            let tap = &col[(ki * kw + kj) * ld..];
            for (n, iy) in rows.clone().enumerate() {
                let o0 = (y0 + n * sh) * out_w + x0;
                for (m, ix) in xs.clone().enumerate() {
                    let src = &tap[(iy * w + ix) * images..][..kb];
                    let dst = &mut acc[(o0 + m * sw) * kb..][..kb];
                    for (d, &s) in dst.iter_mut().zip(src) {
                        *d += s;
                    }
                }
            }
        }
    }
}

/// Whether [`col2im_plane`] gathers by phase (row by row, so a plane splits into bands).
fn gathers_by_phase(window: &Window) -> bool {
    window.stride[1] > 1 && window.big[1] / window.stride[1] >= MIN_GATHER_RUN
}

multiversion! {
/// [`col2im_plane`]'s output rows `first_row..` (as many as `rows` holds), for a window that
/// [`gathers_by_phase`].
fn col2im_rows<T: Element>(col: &[T], ld: usize, window: &Window, first_row: usize, rows: &mut [T]) {
    col2im_plane_by_phase(col, ld, window, first_row, rows);
}
}

/// `dst[S * i] += src[i]` for every `i` of `src` (`dst` long enough), with the stride a
/// constant so that the loop vectorizes.
#[inline(always)]
fn add_strided<T: Element, const S: usize>(dst: &mut [T], src: &[T]) {
    if S == 1 {
        for (d, &s) in dst[..src.len()].iter_mut().zip(src) {
            *d += s;
        }
        return;
    }
    let full = (dst.len() / S).min(src.len());
    for (group, &s) in dst.chunks_exact_mut(S).zip(&src[..full]) {
        group[0] += s;
    }
    if full < src.len() {
        dst[S * full] += src[full];
    }
}

/// [`col2im_plane`] for a horizontal stride `sw > 1`, as a gather: the pixels of an output row
/// with the same `(x + pad) mod sw` (a phase) see the same taps, each a contiguous run of a
/// column row, so their sums build up in a small contiguous buffer with vectorizable adds and
/// every output pixel is stored once (a scatter-add would touch every `sw`-th pixel per tap).
#[inline(always)]
fn col2im_plane_by_phase<T: Element>(
    col: &[T],
    ld: usize,
    window: &Window,
    first_row: usize,
    rows: &mut [T],
) {
    let out_w = window.big[1];
    let sw = window.stride[1];
    let pw = window.pad[1];
    let mut acc = [[T::zero(); GATHER_BLOCK]; 2];
    for (i, row) in rows.chunks_exact_mut(out_w).enumerate() {
        let y = first_row + i;
        if sw == 2 {
            // Both phases of a block at once, stored interleaved (vectorizes as a shuffle).
            let n_even = out_w.div_ceil(2);
            for jb in (0..n_even).step_by(GATHER_BLOCK) {
                let len = GATHER_BLOCK.min(n_even - jb);
                for (x0, acc) in acc.iter_mut().enumerate() {
                    // Output x = 2 * j + x0 has phase (x0 + pad) mod 2.
                    phase_sums(col, ld, window, y, (x0 + pw) % 2, x0, jb, &mut acc[..len]);
                }
                let seg = &mut row[2 * jb..(2 * (jb + len)).min(out_w)];
                let mut pairs = seg.chunks_exact_mut(2);
                for (pair, (&a, &b)) in (&mut pairs).zip(acc[0].iter().zip(&acc[1])) {
                    pair[0] = a;
                    pair[1] = b;
                }
                if let [last] = pairs.into_remainder() {
                    *last = acc[0][len - 1];
                }
            }
            continue;
        }
        for rx in 0..sw {
            // First output x of this phase, and how many there are.
            let x_first = (rx + sw - pw % sw) % sw;
            if x_first >= out_w {
                continue;
            }
            let nx = (out_w - x_first).div_ceil(sw);
            for jb in (0..nx).step_by(GATHER_BLOCK) {
                let len = GATHER_BLOCK.min(nx - jb);
                phase_sums(col, ld, window, y, rx, x_first, jb, &mut acc[0][..len]);
                let dst = row[x_first + jb * sw..].iter_mut().step_by(sw);
                for (d, &a) in dst.zip(&acc[0][..len]) {
                    *d = a;
                }
            }
        }
    }
}

/// Pixels per block of [`col2im_plane_by_phase`]'s sums (on the stack).
const GATHER_BLOCK: usize = 256;

/// Writes into `acc` the col2im sums of output row `y`, phase `rx` (first pixel `x_first`),
/// for that phase's pixels `jb .. jb + acc.len()`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn phase_sums<T: Element>(
    col: &[T],
    ld: usize,
    window: &Window,
    y: usize,
    rx: usize,
    x_first: usize,
    jb: usize,
    acc: &mut [T],
) {
    let len = acc.len();
    let [kh, kw] = window.kernel;
    let [h, w] = window.small;
    let [sh, sw] = window.stride;
    let [ph, pw] = window.pad;
    let [dh, dw] = window.dilation;
    acc.fill(T::zero());
    for ki in 0..kh {
        // y = iy * sh + ki * dh - ph
        let t = (y + ph) as isize - (ki * dh) as isize;
        if t < 0 || !(t as usize).is_multiple_of(sh) || t as usize / sh >= h {
            continue;
        }
        let iy = t as usize / sh;
        for kj in (0..kw).filter(|kj| kj * dw % sw == rx) {
            // ix = off + j for the j-th pixel of the phase (exact division).
            let off = ((x_first + pw) as isize - (kj * dw) as isize) / sw as isize;
            let j_lo = jb.max((-off).max(0) as usize);
            let j_hi = (jb + len).min((w as isize - off).max(0) as usize);
            if j_lo >= j_hi {
                continue;
            }
            let start = (off + j_lo as isize) as usize;
            let src = &col[(ki * kw + kj) * ld + iy * w + start..][..j_hi - j_lo];
            for (a, &s) in acc[j_lo - jb..j_hi - jb].iter_mut().zip(src) {
                *a += s;
            }
        }
    }
}

/// Gathers each column entry from the big planes (`im2col`); entries outside the planes are 0.
///
/// The inverse layout of [`col2im`]: `planes` holds `channels` planes of `out_h*out_w`, `cols`
/// receives `channels` column matrices of `kh*kw` rows by `h*w` (overwritten).
///
/// # Errors
/// [`Error::BufferLength`](crate::Error::BufferLength) when a slice does not have exactly the
/// size `channels` and `window` imply.
pub fn im2col<T: Element>(planes: &[T], window: &Window, cols: &mut [T]) -> Result<()> {
    let channels = planes.len() / window.big_plane()?.max(1);
    check_len(
        "cols",
        mul("cols", &[channels, window.col_plane()?])?,
        cols.len(),
    )?;
    im2col_with(planes, window, cols, true)
}

/// [`im2col`], with channels spread over rayon's threads or not.
pub(crate) fn im2col_with<T: Element>(
    planes: &[T],
    window: &Window,
    cols: &mut [T],
    parallel: bool,
) -> Result<()> {
    let width = mul("columns", &[window.small[0], window.small[1]])?;
    im2col_band(
        planes,
        window,
        0..window.small[0],
        cols,
        ColLayout::alone(width),
        parallel,
    )
}

/// [`im2col`] restricted to the small-image rows `band`, into the image at `layout` of `cols`:
/// per channel, `kh*kw` rows of `band.len() * w` columns (the columns of those small rows
/// only). The backward pass works band by band so that its columns stay in the core's cache.
pub(crate) fn im2col_band<T: Element>(
    planes: &[T],
    window: &Window,
    band: Range<usize>,
    cols: &mut [T],
    layout: ColLayout,
    parallel: bool,
) -> Result<()> {
    let big_plane = window.big_plane()?;
    if band.end > window.small[0] || band.start > band.end {
        return Err(crate::Error::InvalidParameter {
            param: "band",
            reason: format!("rows {band:?} outside the {} small rows", window.small[0]),
        });
    }
    let col_plane = mul(
        "column matrix size",
        &[
            window.kernel[0],
            window.kernel[1],
            band.len(),
            window.small[1],
        ],
    )?;
    if big_plane == 0 || col_plane == 0 {
        check_len("cols", 0, cols.len())?;
        return Ok(());
    }
    let channels = planes.len() / big_plane;
    let taps = window.kernel[0] * window.kernel[1];
    check_len("planes", channels * big_plane, planes.len())?;
    layout.check(channels * taps, band.len() * window.small[1], cols.len())?;
    let (ld, offset) = (layout.ld, layout.offset);
    let table = Taps::new(window);
    if parallel && taps > 1 && channels < BANDS_PER_THREAD * rayon::current_num_threads() {
        // Too few channels to keep every thread busy (FSRCNN's one output channel ran on one
        // core): the tap rows in parallel.
        let tap_len = band.len() * window.small[1];
        cols.par_chunks_mut(ld)
            .take(channels * taps)
            .enumerate()
            .for_each(|(r, row)| {
                let (ch, tap) = (r / taps, r % taps);
                let plane = &planes[ch * big_plane..][..big_plane];
                let kernel_tap = [tap / window.kernel[1], tap % window.kernel[1]];
                let row = &mut row[offset..][..tap_len];
                im2col_tap_row(plane, window, &table, band.clone(), kernel_tap, row);
            });
        return Ok(());
    }
    let one = |(col, plane): (&mut [T], &[T])| {
        im2col_plane(plane, window, &table, band.clone(), &mut col[offset..], ld);
    };
    // Each channel's `taps` rows, `ld` apart (the last channel's may end early).
    if parallel {
        cols.par_chunks_mut(taps * ld)
            .zip(planes.par_chunks(big_plane))
            .for_each(one);
    } else {
        cols.chunks_mut(taps * ld)
            .zip(planes.chunks(big_plane))
            .for_each(one);
    }
    Ok(())
}

multiversion! {
/// One channel of [`im2col_band`]: its `kh*kw` rows of `col`, `ld` apart.
pub(crate) fn im2col_plane<T: Element>(
    plane: &[T],
    window: &Window,
    table: &Taps,
    band: Range<usize>,
    col: &mut [T],
    ld: usize,
) {
    let out_w = window.big[1];
    let [kh, kw] = window.kernel;
    let tap_len = band.len() * window.small[1];
    if tap_len == 1 && window.small == [1, 1] {
        // A 1x1 image: each tap reads one pixel (or a zero), without the row loops' setup.
        for ki in 0..kh {
            let (rows, y0) = table.valid(window, 0, ki);
            for kj in 0..kw {
                let (xs, x0) = table.valid(window, 1, kj);
                col[(ki * kw + kj) * ld] = if rows.is_empty() || xs.is_empty() {
                    T::zero()
                } else {
                    plane[y0 * out_w + x0]
                };
            }
        }
        return;
    }
    for ki in 0..kh {
        for kj in 0..kw {
            let tap = &mut col[(ki * kw + kj) * ld..][..tap_len];
            im2col_tap(plane, window, table, band.clone(), [ki, kj], tap);
        }
    }
}
}

multiversion! {
/// [`im2col_plane`] of `kb` images at once, interleaved as in [`col2im_interleaved`]: `acc`
/// holds the `out_h * out_w` runs of the images' `kb` pixels (pixel-major), and `col`'s tap
/// rows (`ld` apart) get `kb`-runs per small pixel, image innermost. Taps that fall outside
/// the big image give zeros.
pub(crate) fn im2col_interleaved<T: Element>(
    acc: &[T],
    kb: usize,
    window: &Window,
    table: &Taps,
    col: &mut [T],
    ld: usize,
) {
    let [kh, kw] = window.kernel;
    let [h, w] = window.small;
    let out_w = window.big[1];
    let [sh, sw] = window.stride;
    for ki in 0..kh {
        let (rows, y0) = table.valid(window, 0, ki);
        for kj in 0..kw {
            let (xs, x0) = table.valid(window, 1, kj);
            let tap = &mut col[(ki * kw + kj) * ld..][..h * w * kb];
            for (iy, dst) in tap.chunks_exact_mut(w * kb).enumerate() {
                if !rows.contains(&iy) || xs.is_empty() {
                    dst.fill(T::zero());
                    continue;
                }
                let o0 = (y0 + (iy - rows.start) * sh) * out_w + x0;
                dst[..xs.start * kb].fill(T::zero());
                dst[xs.end * kb..].fill(T::zero());
                let runs = dst[xs.start * kb..xs.end * kb].chunks_exact_mut(kb);
                for (m, run) in runs.enumerate() {
                    run.copy_from_slice(&acc[(o0 + m * sw) * kb..][..kb]);
                }
            }
        }
    }
}
}

multiversion! {
/// [`im2col_tap`], compiled for the CPU's vector instructions.
fn im2col_tap_row<T: Element>(
    plane: &[T],
    window: &Window,
    table: &Taps,
    band: Range<usize>,
    kernel_tap: [usize; 2],
    tap: &mut [T],
) {
    im2col_tap(plane, window, table, band, kernel_tap, tap);
}
}

/// The row of tap `kernel_tap = [ki, kj]` of one channel's columns (the small rows `band`).
#[inline(always)]
fn im2col_tap<T: Element>(
    plane: &[T],
    window: &Window,
    table: &Taps,
    band: Range<usize>,
    [ki, kj]: [usize; 2],
    tap: &mut [T],
) {
    let out_w = window.big[1];
    let w = window.small[1];
    let [sh, sw] = window.stride;
    let (rows, y0) = table.valid(window, 0, ki);
    let (xs, x0) = table.valid(window, 1, kj);
    for iy in band.clone() {
        let dst = &mut tap[(iy - band.start) * w..][..w];
        if !rows.contains(&iy) || xs.is_empty() {
            dst.fill(T::zero());
            continue;
        }
        let src = &plane[(y0 + (iy - rows.start) * sh) * out_w..][..out_w];
        dst[..xs.start].fill(T::zero());
        dst[xs.end..].fill(T::zero());
        let dst = &mut dst[xs.clone()];
        if sw == 1 {
            dst.copy_from_slice(&src[x0..x0 + dst.len()]);
        } else if sw == 2 {
            // Every other pixel: pairs vectorize (a shuffle), `step_by` does not.
            let s = &src[x0..];
            let n = dst.len();
            let full = (s.len() / 2).min(n);
            for (d, pair) in dst[..full].iter_mut().zip(s.chunks_exact(2)) {
                *d = pair[0];
            }
            if full < n {
                dst[full] = s[2 * full];
            }
        } else {
            for (d, &s) in dst.iter_mut().zip(src[x0..].iter().step_by(sw)) {
                *d = s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct per-element loops: the reference both directions are checked against.
    fn big_index(w: &Window, ki: usize, kj: usize, iy: usize, ix: usize) -> Option<usize> {
        let y = (iy * w.stride[0] + ki * w.dilation[0]) as isize - w.pad[0] as isize;
        let x = (ix * w.stride[1] + kj * w.dilation[1]) as isize - w.pad[1] as isize;
        (y >= 0 && x >= 0 && (y as usize) < w.big[0] && (x as usize) < w.big[1])
            .then(|| y as usize * w.big[1] + x as usize)
    }

    fn windows() -> Vec<Window> {
        let mut v = Vec::new();
        for kernel in [[1, 1], [3, 3], [2, 4], [4, 1]] {
            for stride in [[1, 1], [2, 3], [5, 5], [3, 2], [4, 4]] {
                for pad in [[0, 0], [1, 2], [3, 0]] {
                    for dilation in [[1, 1], [2, 1], [1, 3]] {
                        // [2, 70]: rows long enough for col2im's per-phase gather.
                        for small in [[1, 1], [3, 4], [5, 2], [2, 70]] {
                            for extra in [0, 1] {
                                let big = [0, 1].map(|a| {
                                    (small[a] - 1) * stride[a]
                                        + dilation[a] * (kernel[a] - 1)
                                        + 1
                                        + extra
                                });
                                if 2 * pad[0] >= big[0] || 2 * pad[1] >= big[1] {
                                    continue;
                                }
                                let big = [big[0] - 2 * pad[0], big[1] - 2 * pad[1]];
                                v.push(
                                    Window::new(kernel, stride, pad, dilation, small, big).unwrap(),
                                );
                            }
                        }
                    }
                }
            }
        }
        v
    }

    #[test]
    fn col2im_and_im2col_match_direct_loops() {
        // One thread: col2im plane by plane; three: planes in bands of rows where they gather
        // by phase (2 planes for 3 threads), else plane by plane.
        let pools = [1, 3].map(|threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
        });
        for w in windows() {
            let channels = 2;
            let taps = w.kernel[0] * w.kernel[1];
            let hw = w.small[0] * w.small[1];
            let plane = w.big[0] * w.big[1];
            let cols: Vec<f64> = (0..channels * taps * hw)
                .map(|i| (i % 13) as f64 - 6.0)
                .collect();
            let planes_in: Vec<f64> = (0..channels * plane)
                .map(|i| (i % 11) as f64 - 5.0)
                .collect();

            let mut expect_planes = vec![0.0; channels * plane];
            let mut expect_cols = vec![0.0; channels * taps * hw];
            for ch in 0..channels {
                for ki in 0..w.kernel[0] {
                    for kj in 0..w.kernel[1] {
                        for iy in 0..w.small[0] {
                            for ix in 0..w.small[1] {
                                let c = ch * taps * hw
                                    + (ki * w.kernel[1] + kj) * hw
                                    + iy * w.small[1]
                                    + ix;
                                if let Some(p) = big_index(&w, ki, kj, iy, ix) {
                                    expect_planes[ch * plane + p] += cols[c];
                                    expect_cols[c] = planes_in[ch * plane + p];
                                }
                            }
                        }
                    }
                }
            }
            for pool in &pools {
                let threads = pool.current_num_threads();
                let mut planes = vec![f64::NAN; channels * plane];
                pool.install(|| col2im(&cols, &w, &mut planes)).unwrap();
                assert_eq!(planes, expect_planes, "col2im {w:?}, {threads} threads");
                let mut got_cols = vec![f64::NAN; channels * taps * hw];
                pool.install(|| im2col(&planes_in, &w, &mut got_cols))
                    .unwrap();
                assert_eq!(got_cols, expect_cols, "im2col {w:?}, {threads} threads");
            }
        }
    }

    #[test]
    fn interleaved_col2im_matches_one_plane_at_a_time() {
        // Blocks of 16, 8 and 4 images (the unrolled runs) and 3 (any length), at an offset
        // inside 19 interleaved images.
        let images = 19;
        for w in windows() {
            let taps = w.kernel[0] * w.kernel[1];
            let (hw, plane) = (w.small[0] * w.small[1], w.big[0] * w.big[1]);
            let ld = hw * images + 5;
            let cols: Vec<f32> = (0..taps * ld).map(|i| (i % 17) as f32 - 8.0).collect();
            let table = Taps::new(&w);
            for (first, kb) in [(0, 16), (2, 8), (11, 4), (16, 3)] {
                let mut acc = vec![f32::NAN; plane * kb];
                col2im_interleaved(&cols[first..], ld, images, kb, &w, &table, &mut acc);
                for j in 0..kb {
                    // Image `first + j` alone: its tap rows, pixel by pixel.
                    let own: Vec<f32> = (0..taps * hw)
                        .map(|i| cols[(i / hw) * ld + (i % hw) * images + first + j])
                        .collect();
                    let mut expect = vec![f32::NAN; plane];
                    col2im_plane(&own, hw, &w, &table, &mut expect);
                    let got: Vec<f32> = (0..plane).map(|p| acc[p * kb + j]).collect();
                    assert_eq!(got, expect, "{w:?}, image {} of a block of {kb}", first + j);
                }
            }
        }
    }

    #[test]
    fn interleaved_im2col_matches_one_plane_at_a_time() {
        for w in windows() {
            let taps = w.kernel[0] * w.kernel[1];
            let (hw, plane) = (w.small[0] * w.small[1], w.big[0] * w.big[1]);
            let table = Taps::new(&w);
            for kb in [1, 3, 8] {
                let acc: Vec<f32> = (0..plane * kb).map(|i| (i % 19) as f32 - 9.0).collect();
                let ld = hw * kb + 3;
                let mut col = vec![f32::NAN; taps * ld];
                im2col_interleaved(&acc, kb, &w, &table, &mut col, ld);
                for j in 0..kb {
                    let own: Vec<f32> = (0..plane).map(|p| acc[p * kb + j]).collect();
                    let mut expect = vec![f32::NAN; taps * hw];
                    im2col_plane(&own, &w, &table, 0..w.small[0], &mut expect, hw);
                    let got: Vec<f32> = (0..taps * hw)
                        .map(|i| col[(i / hw) * ld + (i % hw) * kb + j])
                        .collect();
                    assert_eq!(got, expect, "{w:?}, image {j} of {kb}");
                }
            }
        }
    }

    #[test]
    fn both_col2im_row_strategies_are_covered() {
        let runs: Vec<usize> = windows()
            .iter()
            .filter(|w| w.stride[1] > 1)
            .map(|w| w.big[1] / w.stride[1])
            .collect();
        assert!(runs.iter().any(|&r| r >= MIN_GATHER_RUN));
        assert!(runs.iter().any(|&r| r < MIN_GATHER_RUN));
        // The stride-2 interleaved store (and im2col's pair copy), with even and odd row lengths.
        let wide2: Vec<usize> = windows()
            .iter()
            .filter(|w| w.stride[1] == 2 && w.big[1] / 2 >= MIN_GATHER_RUN)
            .map(|w| w.big[1] % 2)
            .collect();
        assert!(wide2.contains(&0) && wide2.contains(&1));
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let w = Window {
            kernel: [3, 3],
            stride: [2, 2],
            pad: [1, 1],
            dilation: [1, 1],
            small: [4, 4],
            big: [7, 7],
        };
        let cols = vec![0.0f32; 9 * 16 * 2];
        let mut planes = vec![0.0f32; 49 * 2 + 1];
        assert!(col2im(&cols, &w, &mut planes).is_err());
        let mut planes = vec![0.0f32; 49 * 2];
        assert!(col2im(&cols[1..], &w, &mut planes).is_err());
        let mut short = vec![0.0f32; 9 * 16];
        assert!(im2col(&planes, &w, &mut short).is_err());
    }
}
