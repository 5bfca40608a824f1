//! The forward pass: GEMM and col2im (or the phase GEMMs) per image, then bias or batch norm
//! and the activation.

use super::plan::Plan;
use super::{DeconvLayer, Mode};
use crate::activation::Epilogue;
use crate::backend::{Gemm, MatMut, MatRef, gemm_on};
use crate::batchnorm::Synced;
use crate::config::Geometry;
use crate::element::Element;
use crate::error::{Error, Result, check_len, check_len_at_least};
use crate::im2col::{ColLayout, Taps, col2im_interleaved, col2im_plane, col2im_then};
use crate::transpose::{skewed_ld, transpose};
use rayon::iter::Either;
use rayon::prelude::*;

impl<T: Element, B: Gemm<T>> DeconvLayer<T, B> {
    /// Forward pass on the layer's own workspace (Darknet `forward_deconvolutional_layer`):
    /// GEMM and col2im per image and group, then bias or batch norm, then the activation.
    /// Returns the output.
    ///
    /// # Errors
    /// [`Error::BufferLength`] when `input` is not `batch * in_channels * h * w` long;
    /// [`Error::InvalidState`] when the layer was built without its own workspace, when batch
    /// norm trains on fewer than 2 values per channel, or for [`Mode::Train`] on a layer built
    /// with [`training(false)`](crate::DeconvConfig::training).
    pub fn forward(&mut self, input: &[T], mode: Mode) -> Result<&[T]> {
        self.forward_own(input, mode, None)
    }

    /// [`forward`](Self::forward), synchronized as [`forward_synced`](Self::forward_synced).
    pub(crate) fn forward_own(
        &mut self,
        input: &[T],
        mode: Mode,
        synced: Option<Synced<'_, T>>,
    ) -> Result<&[T]> {
        let mut workspace = self.take_workspace("forward")?;
        let result = self.forward_synced(input, mode, &mut workspace, synced);
        self.workspace = workspace;
        result?;
        Ok(&self.output)
    }

    /// [`forward`](Self::forward) on a caller's workspace of at least
    /// [`workspace_size`](Self::workspace_size) elements (shared by many layers, for example).
    ///
    /// # Errors
    /// As [`forward`](Self::forward), and [`Error::BufferLength`] for a short workspace.
    pub fn forward_with_workspace(
        &mut self,
        input: &[T],
        mode: Mode,
        workspace: &mut [T],
    ) -> Result<()> {
        self.forward_synced(input, mode, workspace, None)
    }

    /// [`forward_with_workspace`](Self::forward_with_workspace), with the batch-norm
    /// statistics of a training pass taken over every process of `synced`.
    pub(crate) fn forward_synced(
        &mut self,
        input: &[T],
        mode: Mode,
        workspace: &mut [T],
        synced: Option<Synced<'_, T>>,
    ) -> Result<()> {
        let g = self.geometry;
        check_len("input", g.batch() * g.inputs(), input.len())?;
        // The slot both passes share (the larger plan's), as `workspace_size` says.
        let slot = self.workspace_size();
        check_len_at_least("workspace", slot, workspace.len())?;
        if mode == Mode::Train {
            self.training("a forward pass in Mode::Train")?;
        }
        let batch = synced.map_or(g.batch(), |s| s.batch);
        if mode == Mode::Train && self.bn.is_some() && batch * g.out_area() < 2 {
            return Err(Error::InvalidState(
                "batch norm in training needs at least 2 values per channel (batch * out_h * out_w >= 2)"
                    .into(),
            ));
        }
        self.last_forward = None;
        let ohw = g.out_area();
        self.plan.refresh_weights(&self.weights, &g);
        let activation = self.config.activation;
        if let (Some(bn), Mode::Inference) = (&mut self.bn, mode) {
            bn.set_inference_affine(&self.biases);
        }
        // Bias (or inference batch norm) and activation run on each plane right after its
        // col2im, while it is in cache; training batch norm instead takes per-plane statistics
        // there, and normalizes once the whole batch's statistics are known.
        let (epilogue, stats): (_, &mut [(T, T)]) = match (&mut self.bn, mode) {
            (None, _) => {
                let epilogue = Epilogue {
                    mul: None,
                    add: &self.biases,
                    activation,
                };
                (Some(epilogue), &mut [])
            }
            (Some(bn), Mode::Inference) => {
                let epilogue = Epilogue {
                    mul: Some(&bn.inference_mul),
                    add: &bn.inference_add,
                    activation,
                };
                (Some(epilogue), &mut [])
            }
            (Some(bn), Mode::Train) => (None, &mut bn.plane_stats),
        };
        let image = ImageForward {
            geometry: &g,
            backend: &self.backend,
            weights: &self.weights,
            plan: &self.plan,
            epilogue,
        };
        let per_image = if stats.is_empty() { 0 } else { g.filters() };
        // Units of `m` images (one GEMM each for small images).
        let m = self.plan.images_per_gemm();
        let tasks = image_tasks(slot, g.batch().div_ceil(m), workspace.len());
        if tasks > 1 {
            // Images over threads, each with its own part of the workspace and serial kernels;
            // with fewer slots than threads (see `memory::workspace_slots`), each task splits
            // its images' work over the rest.
            let inner_parallel = tasks < rayon::current_num_threads();
            let per_task = g.batch().div_ceil(m).div_ceil(tasks) * m;
            let stats_parts = if per_image == 0 {
                Either::Left((0..tasks).into_par_iter().map(|_| &mut [][..]))
            } else {
                Either::Right(stats.par_chunks_mut(per_task * per_image))
            };
            self.output
                .par_chunks_mut(per_task * g.outputs())
                .zip(input.par_chunks(per_task * g.inputs()))
                .zip(workspace.par_chunks_mut(slot))
                .zip(stats_parts)
                .try_for_each(|(((out, x), cols), stats)| {
                    let units = out
                        .chunks_mut(m * g.outputs())
                        .zip(x.chunks(m * g.inputs()));
                    units.enumerate().try_for_each(|(i, (out, x))| {
                        let k = x.len() / g.inputs();
                        let s = stats
                            .get_mut(i * m * per_image..i * m * per_image + k * per_image)
                            .unwrap_or_default();
                        image.run(x, out, &mut cols[..slot], &mut [], inner_parallel, s)
                    })
                })?;
        } else {
            let units = self
                .output
                .chunks_mut(m * g.outputs())
                .zip(input.chunks(m * g.inputs()));
            for (i, (out, x)) in units.enumerate() {
                let k = x.len() / g.inputs();
                let s = stats
                    .get_mut(i * m * per_image..i * m * per_image + k * per_image)
                    .unwrap_or_default();
                // The direct plan spreads one image over every slot of the workspace; the
                // column plan may use the slots after its first (see `run_one`).
                let (ws, spare) = match self.plan {
                    Plan::Direct { .. } => (&mut workspace[..], &mut [][..]),
                    _ => workspace.split_at_mut(slot),
                };
                image.run(x, out, ws, spare, true, s)?;
            }
        }
        if let (Some(bn), Mode::Train) = (&mut self.bn, mode) {
            bn.forward_train(&mut self.output, &self.biases, ohw, activation, synced)?;
        }
        self.last_forward = Some(mode);
        Ok(())
    }
}

/// How many units of images (one image, or the images of one GEMM) to run at once: one per
/// workspace slot and thread, at most `units`.
pub(super) fn image_tasks(slot: usize, units: usize, workspace_len: usize) -> usize {
    (workspace_len / slot.max(1))
        .min(units)
        .min(rayon::current_num_threads())
        .max(1)
}

/// The forward pass of one image: per group, GEMM into the columns, then col2im, and on each
/// finished plane either bias and activation (without batch norm) or, when batch norm trains,
/// the plane's statistics (`stats` gets one `(mean, sum of squared deviations)` per filter).
struct ImageForward<'a, T, B> {
    geometry: &'a Geometry,
    backend: &'a B,
    weights: &'a [T],
    plan: &'a Plan<T>,
    epilogue: Option<Epilogue<'a, T>>,
}

/// `(mean, sum of squared deviations from it)` of one plane.
fn plane_stats<T: Element>(plane: &[T]) -> (T, T) {
    let mean = crate::reduce::sum(plane) / T::of(plane.len() as f64);
    (mean, crate::reduce::sum_sq_dev(plane, mean))
}

/// Most column rows (`filters/groups * kh * kw`) for which the one-image forward computes the
/// columns transposed, split by pixels over the threads (see [`ImageForward::run_one`]).
/// `matrixmultiply` on 2 threads, `x` 128 x 16384, split by rows -> transposed: 16 rows 1.50
/// -> 0.72 ms, 48 rows 2.34 -> 1.88 and 2.27 -> 1.46, 96 rows 2.75 -> 2.37, 192 rows 5.03 ->
/// 5.46 (the transpose back, about a copy of the columns, takes some of the gain above 64).
/// The layer (pix2pix-rgb, 128 -> 3, 128x128, k4 s2 p1, tanh), forward inference, medians of
/// 100, plain -> transposed, five alternations: 2.83/2.72/2.55/2.64/2.92 ->
/// 2.84/2.39/1.98/2.26/2.38 ms; forward+backward unchanged within the noise.
pub(super) const MAX_TRANSPOSED_ROWS: usize = 64;

/// Images per block (at most) of the batched column plan's col2im: 16 `f32` columns are one
/// cache line.
const IMAGE_BLOCK: usize = 16;
/// Fewest images per block for the batched column plan to interleave them (see
/// [`ImageForward::run_batched`]).
pub(super) const MIN_INTERLEAVED_IMAGES: usize = 4;

impl<T: Element, B: Gemm<T>> ImageForward<'_, T, B> {
    /// A unit of images, `x` and `out` holding one or more: through one GEMM (per group) where
    /// the plan batches images, else one after the other. `parallel`: split the GEMM and col2im
    /// over rayon's threads (when units are not). `stats` is empty or has one entry per filter
    /// and image, to be filled.
    fn run(
        &self,
        x: &[T],
        out: &mut [T],
        cols: &mut [T],
        spare: &mut [T],
        parallel: bool,
        stats: &mut [(T, T)],
    ) -> Result<()> {
        let g = self.geometry;
        let k = x.len() / g.inputs();
        if k > 1 && self.plan.images_per_gemm() > 1 {
            return self.run_batched(x, out, cols, parallel, stats);
        }
        let per_image = if stats.is_empty() { 0 } else { g.filters() };
        let images = x.chunks(g.inputs()).zip(out.chunks_mut(g.outputs()));
        for (i, (x, out)) in images.enumerate() {
            let s = stats
                .get_mut(i * per_image..(i + 1) * per_image)
                .unwrap_or_default();
            self.run_one(x, out, cols, spare, parallel, s)?;
        }
        Ok(())
    }

    /// The column plan on `k` images at once: per group, their inputs gathered side by side
    /// (`cg x k*hw`) and one GEMM into their columns side by side (`rows x k*hw`), then each
    /// image's col2im from its block of columns.
    fn run_batched(
        &self,
        x: &[T],
        out: &mut [T],
        ws: &mut [T],
        parallel: bool,
        stats: &mut [(T, T)],
    ) -> Result<()> {
        let g = self.geometry;
        let (cg, ng, hw, ohw, rows) = (
            g.group_in(),
            g.group_out(),
            g.in_area(),
            g.out_area(),
            g.col_rows(),
        );
        let k = x.len() / g.inputs();
        let width = k * hw;
        let (cols, rest) = ws.split_at_mut(rows * width);
        let xb = &mut rest[..cg * width];
        let window = g.window();
        let table = Taps::new(&window);
        let taps = g.taps();
        let per_image = if stats.is_empty() { 0 } else { g.filters() };
        // The col2im goes by blocks of images, which run in parallel: smaller blocks where a
        // unit's images would not give every thread one.
        let images = if parallel {
            k.div_ceil(rayon::current_num_threads())
                .clamp(1, IMAGE_BLOCK)
        } else {
            IMAGE_BLOCK
        };
        let blocks = k.div_ceil(images);
        // With enough images per block, their pixels go side by side (image innermost): col2im
        // then adds runs of a block's images, where one small plane has short strided rows
        // (dcgan-4, 4x4 images: col2im took 31% of the forward). A block's sums take
        // `images * out_h * out_w` elements of the gathered input's room, free after the GEMM.
        let interleave =
            images.min(k) >= MIN_INTERLEAVED_IMAGES && blocks * images * ohw <= xb.len();
        // Room per block for its sums (unused without interleaving).
        let acc_len = if interleave {
            images * ohw
        } else {
            xb.len() / blocks
        };
        for grp in 0..g.groups() {
            if interleave {
                interleave_images(x, g.inputs(), grp * cg * hw, cg, hw, xb);
            } else {
                gather_images(x, g.inputs(), grp * cg * hw, cg, hw, xb);
            }
            let w = &self.weights[grp * cg * rows..][..cg * rows];
            // cols (rows x k*hw) = W_g^T (rows x cg) * xb (cg x k*hw)
            let (a, b) = (
                MatRef::new(w, cg, rows, rows)?.t(),
                MatRef::new(xb, cg, width, width)?,
            );
            let c = MatMut::new(cols, rows, width, width)?;
            gemm_on(self.backend, parallel, T::one(), a, b, T::zero(), c)?;
            let cols = &*cols;
            // Bias and activation, or the statistics, of image `j` of a block, channel `ch`.
            let finish = |j: usize, ch: usize, plane: &mut [T], stats: &mut [(T, T)]| {
                if per_image == 0 {
                    if let Some(epilogue) = &self.epilogue {
                        epilogue.apply(grp * ng + ch, plane);
                    }
                } else {
                    stats[j * per_image + grp * ng + ch] = plane_stats(plane);
                }
            };
            let block = |b: usize, out: &mut [T], acc: &mut [T], stats: &mut [(T, T)]| {
                let kb = out.len() / g.outputs();
                if interleave {
                    // Per channel, the block's sums (pixel-major) transposed into its planes.
                    let acc = &mut acc[..ohw * kb];
                    for ch in 0..ng {
                        let col = &cols[ch * taps * width + b * images..];
                        col2im_interleaved(col, width, k, kb, &window, &table, acc);
                        let planes = &mut out[(grp * ng + ch) * ohw..];
                        transpose(acc, ohw, kb, kb, planes, g.outputs());
                        for j in 0..kb {
                            finish(j, ch, &mut planes[j * g.outputs()..][..ohw], stats);
                        }
                    }
                    return;
                }
                // Channel by channel, the images of the block in turn, so that the block's
                // columns of a row (adjacent) are read together. Image by image, each tap of a
                // 1-pixel image read its own cache line of `cols` (dcgan-z: 4 of its 6 ms).
                for ch in 0..ng {
                    let col = &cols[ch * taps * width..];
                    for j in 0..kb {
                        let plane = &mut out[j * g.outputs() + (grp * ng + ch) * ohw..][..ohw];
                        let first = (b * images + j) * hw;
                        col2im_plane(&col[first..], width, &window, &table, plane);
                        finish(j, ch, plane, stats);
                    }
                }
            };
            let outs = images * g.outputs();
            let stats_len = images * per_image;
            if parallel {
                let stats = if per_image == 0 {
                    Either::Left((0..blocks).into_par_iter().map(|_| &mut [][..]))
                } else {
                    Either::Right(stats.par_chunks_mut(stats_len))
                };
                out.par_chunks_mut(outs)
                    .zip(xb.par_chunks_mut(acc_len))
                    .zip(stats)
                    .enumerate()
                    .for_each(|(b, ((out, acc), stats))| block(b, out, acc, stats));
            } else {
                let stats = if per_image == 0 {
                    Either::Left((0..blocks).map(|_| &mut [][..]))
                } else {
                    Either::Right(stats.chunks_mut(stats_len))
                };
                out.chunks_mut(outs)
                    .zip(xb.chunks_mut(acc_len))
                    .zip(stats)
                    .enumerate()
                    .for_each(|(b, ((out, acc), stats))| block(b, out, acc, stats));
            }
        }
        Ok(())
    }

    /// One image: `stats` is empty or has one entry per filter, to be filled. `spare` is
    /// workspace no one else uses now (possibly empty).
    fn run_one(
        &self,
        x: &[T],
        out: &mut [T],
        cols: &mut [T],
        spare: &mut [T],
        parallel: bool,
        stats: &mut [(T, T)],
    ) -> Result<()> {
        let ohw = self.geometry.out_area();
        if let Plan::Direct { plan } = self.plan {
            plan.forward_image(self.weights, x, out, cols, parallel, self.epilogue);
            for (s, plane) in stats.iter_mut().zip(out.chunks(ohw)) {
                *s = plane_stats(plane);
            }
            return Ok(());
        }
        if let Plan::Phases { plan, packed, .. } = self.plan {
            plan.forward_image(self.backend, packed, x, out, cols, parallel, self.epilogue)?;
            for (s, plane) in stats.iter_mut().zip(out.chunks(ohw)) {
                *s = plane_stats(plane);
            }
            return Ok(());
        }
        let g = self.geometry;
        let (cg, ng, hw, rows) = (g.group_in(), g.group_out(), g.in_area(), g.col_rows());
        let window = g.window();
        let layout = ColLayout::alone(hw);
        let cols = &mut cols[..rows * hw];
        // One GEMM for all filters, also where the backward goes by filter blocks: blocks that
        // keep the columns in cache until col2im measured 1% slower on S1.
        for grp in 0..g.groups() {
            let x = &x[grp * cg * hw..][..cg * hw];
            let w = &self.weights[grp * cg * rows..][..cg * rows];
            // cols (rows x hw) = W_g^T (rows x cg) * x_g (cg x hw)
            let (a, b) = (
                MatRef::new(w, cg, rows, rows)?.t(),
                MatRef::new(x, cg, hw, hw)?,
            );
            let out = &mut out[grp * ng * ohw..][..ng * ohw];
            if window.is_identity() {
                // A 1x1 kernel at stride 1 without padding: the columns are the planes, so the
                // GEMM writes the output and col2im has nothing to do (darknet-1x1).
                let c = MatMut::new(out, rows, hw, hw)?;
                gemm_on(self.backend, parallel, T::one(), a, b, T::zero(), c)?;
                if stats.is_empty() {
                    if let Some(epilogue) = &self.epilogue {
                        let one = |(ch, plane): (usize, &mut [T])| {
                            epilogue.apply(grp * ng + ch, plane);
                        };
                        if parallel {
                            out.par_chunks_mut(ohw).enumerate().for_each(one);
                        } else {
                            out.chunks_mut(ohw).enumerate().for_each(one);
                        }
                    }
                } else {
                    let stats = &mut stats[grp * ng..][..ng];
                    let one = |(s, plane): (&mut (T, T), &[T])| *s = plane_stats(plane);
                    if parallel {
                        stats.par_iter_mut().zip(out.par_chunks(ohw)).for_each(one);
                    } else {
                        stats.iter_mut().zip(out.chunks(ohw)).for_each(one);
                    }
                }
                continue;
            }
            let ld_t = skewed_ld::<T>(rows);
            let threads = rayon::current_num_threads();
            if parallel && threads > 1 && rows <= MAX_TRANSPOSED_ROWS && spare.len() >= hw * ld_t {
                // Few column rows: split by rows, each thread would pack all of `x` for a
                // sliver of rows (pix2pix's 128 -> 3 output layer: 48 rows). The transposed
                // product splits by pixels instead, each thread packing its own; transposing
                // it back costs less than the packing saved.
                // cols^T (hw x rows) = x_g^T (hw x cg) * W_g (cg x rows)
                let (xt, wg) = (b.t(), a.t());
                let ct = MatMut::new(&mut spare[..hw * ld_t], hw, rows, ld_t)?;
                gemm_on(self.backend, true, T::one(), xt, wg, T::zero(), ct)?;
                let per_task = rows.div_ceil(threads);
                let spare = &*spare;
                cols.par_chunks_mut(per_task * hw)
                    .enumerate()
                    .for_each(|(i, part)| {
                        let r = part.len() / hw;
                        transpose(&spare[i * per_task..], hw, r, ld_t, part, hw);
                    });
            } else {
                let c = MatMut::new(cols, rows, hw, hw)?;
                gemm_on(self.backend, parallel, T::one(), a, b, T::zero(), c)?;
            }
            if stats.is_empty() {
                let mut none = vec![(); ng]; // zero-sized: no allocation
                col2im_then(
                    cols,
                    layout,
                    &window,
                    out,
                    parallel,
                    &mut none,
                    |ch, plane, _| {
                        if let Some(epilogue) = &self.epilogue {
                            epilogue.apply(grp * ng + ch, plane);
                        }
                    },
                )?;
            } else {
                let stats = &mut stats[grp * ng..][..ng];
                col2im_then(
                    cols,
                    layout,
                    &window,
                    out,
                    parallel,
                    stats,
                    |_, plane, s| {
                        *s = plane_stats(plane);
                    },
                )?;
            }
        }
        Ok(())
    }
}

/// Gathers channels `first..first + channels` (planes of `hw`, at element `first_at` of each
/// image) of the images in `x` (`inputs` apart) side by side: `xb[c][i * hw + p]`.
pub(super) fn gather_images<T: Element>(
    x: &[T],
    inputs: usize,
    first_at: usize,
    channels: usize,
    hw: usize,
    xb: &mut [T],
) {
    let width = x.len() / inputs * hw;
    for (i, image) in x.chunks(inputs).enumerate() {
        let planes = image[first_at..][..channels * hw].chunks(hw);
        for (row, plane) in xb.chunks_mut(width).zip(planes) {
            row[i * hw..][..hw].copy_from_slice(plane);
        }
    }
}

/// [`gather_images`] with the images innermost: `xb[c][p * k + i]` for the `k` images in `x`.
pub(super) fn interleave_images<T: Element>(
    x: &[T],
    inputs: usize,
    first_at: usize,
    channels: usize,
    hw: usize,
    xb: &mut [T],
) {
    let k = x.len() / inputs;
    for (c, row) in xb.chunks_mut(k * hw).take(channels).enumerate() {
        transpose(&x[first_at + c * hw..], k, hw, inputs, row, k);
    }
}
