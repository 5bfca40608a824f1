//! The direct forward written row by row, without phase planes: for an x stride that divides
//! [`CHUNK`], the phases of `CHUNK` consecutive output pixels repeat the same way in every chunk
//! of a row, so one chunk of weights per tap row and x shift (each lane holding the weight of
//! the tap that lands on that lane's phase, zero where none does) serves the whole row. The
//! input rows are stored with each pixel repeated `stride` times, so that x shift `b` of a
//! chunk is one contiguous window, `b * stride` elements back. Each output chunk is then summed
//! in registers over every input channel, tap row and shift, and stored once, straight into
//! the output with its bias and activation: no phase planes to interleave (a strided, scalar
//! copy for strides 4 and 8) and no second pass over the output plane. Outputs too large for
//! the caches are stored with non-temporal stores (see `STREAM_OUTPUTS`).

use super::{Axis, CHUNK, DirectPlan};
use crate::activation::{Activation, Epilogue, affine_store};
use crate::element::Element;
use crate::simd::{multiversion, stream_copy, stream_fence};

/// The smallest x stride the rows run: below, the phase planes' interleave is cheap (stride 2
/// vectorizes), and their one load per multiply-add (the weight is a scalar) against two here
/// wins or ties. `examples/sweep`-shaped layers, direct forward, 2 threads, medians of 200,
/// phase planes -> rows, two alternations: CenterNet depthwise x2 0.82/0.84 -> 0.80/1.00 ms,
/// LapSRN image x2 1.71/2.00 -> 1.59/1.63, ResNeXt 4x4 channels x2 2.77/2.86 -> 4.81/4.94;
/// x4 1.50/1.09 -> 1.18/0.70, x8 2.16/2.21 -> 0.99/1.12, FCN x8 7.03/8.15 -> 3.81/3.68.
const MIN_STRIDE: usize = 4;

/// Most terms (input channel, tap row and x shift) an output chunk sums: beyond, a layer has
/// enough channels for the phase planes' scalar weights to pay. Direct forward, 2 threads,
/// batch 8, 64 channels, phase planes -> rows, two alternations: 2 channels per group, x8
/// (8 terms) 2.36/2.41 -> 1.67/1.74 ms; 4 per group, x4 (16 terms) 2.19/2.44 -> 2.74/2.87;
/// 8 per group, x4 (32 terms) 3.68/3.63 -> 5.96/5.92.
const MAX_TERMS: usize = 8;

/// A lane no tap of an x shift lands on.
const NO_TAP: usize = usize::MAX;

/// What the row forward needs beyond the plan's axes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RowPlan {
    /// The x shifts of the taps: tap `kx` reads input column `v - shift` for output grid
    /// column `v` (`kx * dilation = shift * stride + phase`); `0..shifts`.
    shifts: usize,
    /// Per shift and lane of a chunk, the x tap that lands there, or [`NO_TAP`]:
    /// `lanes[shift * CHUNK + lane]`.
    lanes: Vec<usize>,
    /// Zeros before each expanded input row: what the largest shift reaches back.
    lead: usize,
    /// Every output row's terms, `(weight chunk, start of its input window in the row's first
    /// chunk)`, row after row: the same for every plane, so they are listed once here rather
    /// than found for each row of each plane. Direct forward, 2 threads, batch 8, 64
    /// channels depthwise to 64x64, medians of 400, found per row -> listed, four
    /// alternations: x8 1.03/0.98/0.93/1.09 -> 0.96/0.81/0.75/0.71 ms, x4
    /// 1.02/0.91/0.78/0.93 -> 0.80/0.73/0.71/0.76.
    terms: Vec<(usize, usize)>,
    /// Where each output row's terms start in `terms` (and, last, where they end).
    row_terms: Vec<usize>,
    /// Elements of one expanded input row: the zeros, then the input pixels each repeated
    /// `stride` times, then zeros, as far as the last chunk of an output row reads.
    row_len: usize,
}

impl RowPlan {
    /// The row plan of x axis `x`, or `None` where the phase planes do better: an x stride
    /// below [`MIN_STRIDE`] or one that does not divide [`CHUNK`], more than [`MAX_TERMS`]
    /// terms per output chunk, or no memory for the term table. `y_taps` and `x_taps` list
    /// each axis' taps `(k, shift)` per phase, as the plan has them.
    pub(super) fn new(
        group_in: usize,
        y: Axis,
        x: Axis,
        y_taps: &[Vec<(usize, usize)>],
        x_taps: &[Vec<(usize, usize)>],
    ) -> Option<Self> {
        let shifts = x.tap(x.kernel - 1).1 + 1;
        if x.stride < MIN_STRIDE || !CHUNK.is_multiple_of(x.stride) || shifts > MAX_TERMS {
            return None;
        }
        let y_rows = y_taps.iter().map(Vec::len).max().unwrap_or(0);
        if group_in.saturating_mul(y_rows * shifts) > MAX_TERMS {
            return None;
        }
        let lanes = (0..shifts * CHUNK)
            .map(|i| {
                let (shift, phase) = (i / CHUNK, (x.pad + i % CHUNK) % x.stride);
                // A phase beyond the output's has no taps.
                let taps = x_taps.get(phase).map_or(&[][..], Vec::as_slice);
                taps.iter()
                    .find(|&&(_, s)| s == shift)
                    .map_or(NO_TAP, |&(kx, _)| kx)
            })
            .collect();
        let lead = (shifts - 1) * x.stride;
        let row_len = lead + x.pad + x.out.next_multiple_of(CHUNK);
        // The tap rows of output row `oy` that read an input row (the others read padding).
        let row_taps = |oy: usize| {
            let (ry, u) = y.grid(oy);
            let taps = y_taps[ry].iter();
            (u, taps.filter(move |&&(_, a)| u >= a && u - a < y.input))
        };
        // Counted first, so that the table is reserved at its size; a table too large to
        // allocate leaves the phase planes.
        let len = (0..y.out).map(|oy| row_taps(oy).1.count()).sum::<usize>();
        let mut terms = Vec::new();
        terms.try_reserve_exact(len * group_in * shifts).ok()?;
        let mut row_terms = Vec::new();
        row_terms.try_reserve_exact(y.out + 1).ok()?;
        let source_len = y.input.saturating_mul(row_len);
        for oy in 0..y.out {
            row_terms.push(terms.len());
            let (u, y_taps) = row_taps(oy);
            for c in 0..group_in {
                for &(ky, a) in y_taps.clone() {
                    let source = c * source_len + (u - a) * row_len + lead + x.pad;
                    let pattern = (c * y.kernel + ky) * shifts * CHUNK;
                    for shift in 0..shifts {
                        terms.push((pattern + shift * CHUNK, source - shift * x.stride));
                    }
                }
            }
        }
        row_terms.push(terms.len());
        Some(RowPlan {
            shifts,
            lanes,
            lead,
            terms,
            row_terms,
            row_len,
        })
    }

    /// Elements of one filter's weight chunks for one input channel (`kh x shifts` chunks).
    fn patterns(&self, y: Axis) -> usize {
        y.kernel * self.shifts * CHUNK
    }

    /// Elements of one input channel's expanded rows.
    fn source(&self, y: Axis) -> usize {
        y.input.saturating_mul(self.row_len)
    }

    /// Scratch elements of one output plane: the weight chunks and the group's expanded rows.
    pub(super) fn slot_size(&self, plan: &DirectPlan) -> usize {
        let per_channel = self.patterns(plan.y).saturating_add(self.source(plan.y));
        plan.group_in.saturating_mul(per_channel)
    }
}

multiversion! {
/// Output plane `f` of one image, row by row (see the [module](self)), each chunk stored with
/// the `epilogue` applied when given. `ws` is one slot; `sources_of` names the group whose
/// expanded rows it holds (expanded here when it is another).
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_plane_rows<T: Element>(
    plan: &DirectPlan,
    rows: &RowPlan,
    weights: &[T],
    x: &[T],
    f: usize,
    out: &mut [T],
    ws: &mut [T],
    sources_of: &mut Option<usize>,
    epilogue: Option<&Epilogue<'_, T>>,
    stream: bool,
) {
    let (cg, ng, y, xa) = (plan.group_in, plan.group_out, plan.y, plan.x);
    let (w, stride, taps) = (xa.input, xa.stride, y.kernel * xa.kernel);
    let (pattern_len, source_len) = (rows.patterns(y), rows.source(y));
    let (patterns, sources) = ws.split_at_mut(cg * pattern_len);
    let sources = &mut sources[..cg * source_len];
    let (grp, fo) = (f / ng, f % ng);
    if *sources_of != Some(grp) {
        for (ci, source) in sources.chunks_exact_mut(source_len).enumerate() {
            let plane = &x[(grp * cg + ci) * y.input * w..][..y.input * w];
            for (row, input) in source.chunks_exact_mut(rows.row_len).zip(plane.chunks_exact(w)) {
                let (lead, rest) = row.split_at_mut(rows.lead);
                lead.fill(T::zero());
                let (pixels, tail) = rest.split_at_mut((w * stride).min(rest.len()));
                match stride {
                    4 => repeat::<T, 4, 64>(pixels, input),
                    8 => repeat::<T, 8, 128>(pixels, input),
                    _ => {
                        for (dst, &v) in pixels.chunks_mut(stride).zip(input) {
                            dst.fill(v);
                        }
                    }
                }
                tail.fill(T::zero());
            }
        }
        *sources_of = Some(grp);
    }
    for (ci, patterns) in patterns.chunks_exact_mut(pattern_len).enumerate() {
        let kernel = &weights[((grp * cg + ci) * ng + fo) * taps..][..taps];
        let lanes = rows.lanes.chunks_exact(CHUNK).cycle();
        for (i, (pattern, lanes)) in patterns.chunks_exact_mut(CHUNK).zip(lanes).enumerate() {
            let ky = i / rows.shifts;
            for (p, &kx) in pattern[..stride].iter_mut().zip(lanes) {
                *p = if kx == NO_TAP { T::zero() } else { kernel[ky * xa.kernel + kx] };
            }
            tile(pattern.try_into().unwrap(), stride);
        }
    }
    let (patterns, sources) = (&*patterns, &*sources);
    let (mul, add) = epilogue.map_or((T::one(), T::zero()), |e| e.coefficients(f));
    let act = epilogue.map_or(Activation::Linear, |e| e.activation);
    for (oy, row) in out.chunks_mut(xa.out).enumerate() {
        let terms = &rows.terms[rows.row_terms[oy]..rows.row_terms[oy + 1]];
        // Each chunk is stored with the epilogue applied. Whole chunks go through arrays
        // (a copy of a dynamic length would keep the sums on the stack, stored after each
        // term, where the output's stores leave no room in the store buffer).
        let mut chunks = row.chunks_exact_mut(CHUNK);
        for (j, dst) in (&mut chunks).enumerate() {
            let dst: &mut [T; CHUNK] = dst.try_into().unwrap();
            let acc = sum_terms(terms, patterns, sources, j * CHUNK);
            if stream {
                let mut done = [T::zero(); CHUNK];
                affine_store(act, mul, add, &acc, &mut done);
                if stream_copy(dst, &done) {
                    continue;
                }
            }
            affine_store(act, mul, add, &acc, dst);
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let acc = sum_terms(terms, patterns, sources, xa.out / CHUNK * CHUNK);
            affine_store(act, mul, add, &acc, rest);
        }
    }
    if stream {
        stream_fence();
    }
}
}

/// `sum(pattern * window)` over the `terms` (weight chunk, window start) of a row, the
/// windows `offset` further.
#[inline(always)]
fn sum_terms<T: Element>(
    terms: &[(usize, usize)],
    patterns: &[T],
    sources: &[T],
    offset: usize,
) -> [T; CHUNK] {
    let mut acc = [T::zero(); CHUNK];
    for &(p, s) in terms {
        let pattern: &[T; CHUNK] = patterns[p..][..CHUNK].try_into().unwrap();
        let window: &[T; CHUNK] = sources[s + offset..][..CHUNK].try_into().unwrap();
        for l in 0..CHUNK {
            acc[l] += pattern[l] * window[l];
        }
    }
    acc
}

/// Repeats `pattern`'s first `stride` lanes over the whole chunk (`stride` divides it).
#[inline(always)]
fn tile<T: Element>(pattern: &mut [T; CHUNK], stride: usize) {
    fn by<T: Element, const S: usize>(pattern: &mut [T; CHUNK]) {
        let first: [T; S] = pattern[..S].try_into().unwrap();
        for lanes in pattern.chunks_exact_mut(S) {
            *<&mut [T; S]>::try_from(lanes).unwrap() = first;
        }
    }
    match stride {
        4 => by::<T, 4>(pattern),
        8 => by::<T, 8>(pattern),
        16 => by::<T, 16>(pattern),
        32 => by::<T, 32>(pattern),
        _ => {} // CHUNK itself: the first lanes are the chunk.
    }
}

/// Each of `input`'s pixels `S` times into `pixels` (as far as it reaches), in blocks of 16
/// pixels (`N = 16 * S` elements) that compile to shuffles.
#[inline(always)]
fn repeat<T: Element, const S: usize, const N: usize>(pixels: &mut [T], input: &[T]) {
    let blocks = pixels.chunks_exact_mut(N).zip(input.chunks_exact(16));
    let done = blocks.len();
    for (dst, src) in blocks {
        let (dst, src): (&mut [T; N], &[T; 16]) =
            (dst.try_into().unwrap(), src.try_into().unwrap());
        for i in 0..N {
            dst[i] = src[i / S];
        }
    }
    for (dst, &v) in pixels[done * N..].chunks_mut(S).zip(&input[done * 16..]) {
        dst.fill(v);
    }
}
