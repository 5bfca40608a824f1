//! The backward pass: the activation's (and batch norm's) gradient, then per image the weight
//! and input gradients by im2col and two GEMMs (whole images or tiles), or the phase plan's
//! adjoint.

use super::forward::{MIN_INTERLEAVED_IMAGES, gather_images, image_tasks, interleave_images};
use super::memory;
use super::plan::{Plan, Tile, even_parts};
use super::{DeconvLayer, Mode};
use crate::alloc;
use crate::backend::{Gemm, MatMut, MatRef, gemm_on};
use crate::batchnorm::{BatchNorm, Synced};
use crate::config::Geometry;
use crate::direct::DirectPlan;
use crate::element::Element;
use crate::error::{Error, Result, check_len, check_len_at_least};
use crate::im2col::{ColLayout, Taps, im2col_band, im2col_interleaved, im2col_plane, im2col_with};
use crate::phase::PhasePlan;
use crate::simd::multiversion;
use crate::transpose::{skewed_ld, transpose};
use rayon::iter::Either;
use rayon::prelude::*;
use std::ops::Range;

impl<T: Element, B: Gemm<T>> DeconvLayer<T, B> {
    /// Backward pass on the layer's own workspace (Darknet `backward_deconvolutional_layer`).
    ///
    /// Fill [`delta_mut`](Self::delta_mut) with `-dLoss/dOutput` first. Multiplies `delta` by
    /// the activation's gradient (taken on the output, as Darknet), then accumulates the bias
    /// (or batch-norm) and weight gradients, and, when `input_delta` is given, **adds**
    /// `-dLoss/dInput` to it. `input` must be the input of the forward pass this follows.
    ///
    /// # Errors
    /// [`Error::BufferLength`] for wrong lengths of `input` or `input_delta`;
    /// [`Error::InvalidState`] without a preceding forward pass (a training one with batch norm),
    /// or when the layer has no workspace of its own.
    pub fn backward(&mut self, input: &[T], input_delta: Option<&mut [T]>) -> Result<()> {
        self.backward_own(input, input_delta, None)
    }

    /// [`backward`](Self::backward), synchronized as [`backward_synced`](Self::backward_synced).
    pub(crate) fn backward_own(
        &mut self,
        input: &[T],
        input_delta: Option<&mut [T]>,
        synced: Option<Synced<'_, T>>,
    ) -> Result<()> {
        let mut workspace = self.take_workspace("backward")?;
        let result = self.backward_synced(input, input_delta, &mut workspace, synced);
        self.workspace = workspace;
        result
    }

    /// [`backward`](Self::backward) on a caller's workspace.
    ///
    /// # Errors
    /// As [`backward`](Self::backward), and [`Error::BufferLength`] for a short workspace.
    pub fn backward_with_workspace(
        &mut self,
        input: &[T],
        input_delta: Option<&mut [T]>,
        workspace: &mut [T],
    ) -> Result<()> {
        self.backward_synced(input, input_delta, workspace, None)
    }

    /// [`backward_with_workspace`](Self::backward_with_workspace), with the batch-norm sums
    /// taken over every process of `synced` (the gradients get this process's part).
    pub(crate) fn backward_synced(
        &mut self,
        input: &[T],
        mut input_delta: Option<&mut [T]>,
        workspace: &mut [T],
        synced: Option<Synced<'_, T>>,
    ) -> Result<()> {
        let g = self.geometry;
        check_len("input", g.batch() * g.inputs(), input.len())?;
        if let Some(d) = &input_delta {
            check_len("input_delta", g.batch() * g.inputs(), d.len())?;
        }
        // The slot both passes share (the larger plan's), as `workspace_size` says.
        let slot = self.workspace_size();
        check_len_at_least("workspace", slot, workspace.len())?;
        self.training("backward")?;
        match (self.last_forward, &self.bn) {
            (None, _) => {
                return Err(Error::InvalidState(
                    "backward needs a forward pass first (each forward allows one backward)".into(),
                ));
            }
            (Some(Mode::Inference), Some(_)) => {
                return Err(Error::InvalidState(
                    "backward through batch norm needs a forward pass in Mode::Train".into(),
                ));
            }
            _ => {}
        }
        // Everything the pass needs is reserved before anything changes: a failed
        // reservation leaves the layer as it was.
        let plan = self.back.as_mut().unwrap_or(&mut self.plan);
        plan.reserve_forward(&g)?; // a plan of the backward alone reserves it here
        plan.reserve_backward(&g)?;
        // Units of `m` images (one GEMM each for small images).
        let m = plan.images_per_gemm();
        let want = image_tasks(slot, g.batch().div_ceil(m), workspace.len());
        let tasks = self.reserve_gradient_tasks(want, workspace.len(), slot)?;
        self.last_forward = None;
        let ohw = g.out_area();
        let activation = self.config.activation;
        let (wc, n) = (g.weight_count(), g.filters());
        let Some(train) = &mut self.train else {
            unreachable!("checked above")
        };
        let (weight_updates, bias_updates, scale_updates) =
            super::split3(&mut train.gradients, wc, n);
        let delta = &mut train.delta;
        match &mut self.bn {
            Some(bn) => bn.backward_sums(
                delta,
                &self.output,
                activation,
                (bias_updates, scale_updates),
                ohw,
                synced,
            )?,
            None => {
                activation.gradient_slice(&self.output, delta)?;
                backward_bias(bias_updates, delta, ohw);
            }
        }
        let plan = self.back.as_mut().unwrap_or(&mut self.plan);
        plan.refresh_weights(&self.weights, &g);
        let (mut tiles, mut direct) = (None, None);
        let packed_grad = match plan {
            Plan::Phases {
                plan,
                packed,
                packed_grad,
                ..
            } => {
                packed_grad.fill(T::zero());
                Some((&**plan, &packed[..], packed_grad))
            }
            Plan::Columns { tiles: Some(t), .. } => {
                tiles = Some((t.tile, &t.weights_t[..]));
                None
            }
            Plan::Direct { plan } => {
                direct = Some(&**plan);
                None
            }
            Plan::Columns { tiles: None, .. } => None,
        };
        let (phases, packed_grad) = match packed_grad {
            Some((plan, packed, grad)) => (Some((plan, packed)), Some(grad)),
            None => (None, None),
        };
        let image = ImageBackward {
            geometry: &g,
            backend: &self.backend,
            weights: &self.weights,
            phases,
            tiles,
            direct,
            batched: m > 1,
            bn: self.bn.as_ref(),
        };
        if tasks > 1 {
            // Images over threads; each task sums its weight gradient in its own buffer (in the
            // phase plan's packed layout when it has one). Where the buffers are fewer than the
            // threads (see `memory::gradient_tasks`), each task splits its images' work over
            // the rest.
            let inner_parallel = tasks < rayon::current_num_threads();
            let per_task = g.batch().div_ceil(m).div_ceil(tasks) * m;
            let tasks = g.batch().div_ceil(per_task);
            let dx_parts = match input_delta {
                Some(dx) => Either::Left(dx.par_chunks_mut(per_task * g.inputs()).map(Some)),
                None => Either::Right((0..tasks).into_par_iter().map(|_| None)),
            };
            let parts = &mut train.task_updates[..tasks * wc];
            parts
                .par_chunks_mut(wc)
                .zip(workspace.par_chunks_mut(slot))
                .zip(input.par_chunks(per_task * g.inputs()))
                .zip(delta.par_chunks_mut(per_task * g.outputs()))
                .zip(dx_parts)
                .enumerate()
                .try_for_each(|(t, ((((dw, ws), x), delta), mut dx))| {
                    dw.fill(T::zero());
                    let units = x
                        .chunks(m * g.inputs())
                        .zip(delta.chunks_mut(m * g.outputs()));
                    for (i, (x, delta)) in units.enumerate() {
                        let dx = dx
                            .as_deref_mut()
                            .map(|d| &mut d[i * m * g.inputs()..][..x.len()]);
                        let b = t * per_task + i * m;
                        image.run(b, x, delta, dx, dw, &mut ws[..slot], inner_parallel)?;
                    }
                    Ok::<(), Error>(())
                })?;
            match image.phases {
                Some((plan, _)) => {
                    // Summed in the packed layout first (contiguous), unpacked once.
                    let (first, rest) = parts.split_at_mut(wc);
                    first.par_chunks_mut(4096).enumerate().for_each(|(i, u)| {
                        for part in rest.chunks(wc) {
                            for (u, &p) in u.iter_mut().zip(&part[i * 4096..]) {
                                *u += p;
                            }
                        }
                    });
                    plan.unpack_add(first, weight_updates);
                }
                None => {
                    let parts = &*parts;
                    weight_updates
                        .par_chunks_mut(4096)
                        .enumerate()
                        .for_each(|(i, u)| {
                            for part in parts.chunks(wc) {
                                for (u, &p) in u.iter_mut().zip(&part[i * 4096..]) {
                                    *u += p;
                                }
                            }
                        });
                }
            }
        } else {
            // One image at a time, each image's work split over the threads; the gradient
            // goes straight to weight_updates (or, for phases, to the packed buffer first).
            let mut each_image = |dw: &mut [T]| {
                for b in (0..g.batch()).step_by(m) {
                    let k = m.min(g.batch() - b);
                    let x = &input[b * g.inputs()..][..k * g.inputs()];
                    let delta = &mut delta[b * g.outputs()..][..k * g.outputs()];
                    let dx = input_delta
                        .as_deref_mut()
                        .map(|d| &mut d[b * g.inputs()..][..k * g.inputs()]);
                    // The direct plan spreads one image over every slot of the workspace.
                    let ws = match image.direct {
                        Some(_) => &mut workspace[..],
                        None => &mut workspace[..slot],
                    };
                    image.run(b, x, delta, dx, dw, ws, true)?;
                }
                Ok::<(), Error>(())
            };
            match (packed_grad, image.phases) {
                (Some(grad), Some((plan, _))) => {
                    each_image(grad)?;
                    plan.unpack_add(grad, weight_updates);
                }
                _ => each_image(weight_updates)?,
            }
        }
        Ok(())
    }

    /// Reserves the per-task weight-gradient buffers for `want` image tasks (once; again only
    /// when more are wanted) and returns how many tasks run (see
    /// [`memory::gradient_tasks`]); 1, without buffers, when a single task runs. `workspace`
    /// is the length of the workspace this pass runs on (the layer's own is taken out of it
    /// during the pass).
    fn reserve_gradient_tasks(
        &mut self,
        want: usize,
        workspace: usize,
        slot: usize,
    ) -> Result<usize> {
        let wc = self.geometry.weight_count();
        let own_workspace = match self.config.own_workspace {
            true => self.workspace.len().max(workspace),
            false => 0,
        };
        let held = memory::held_elements(self) - self.workspace.len() + own_workspace;
        let Some(train) = &mut self.train else {
            return Ok(1);
        };
        let extra_slots = own_workspace.saturating_sub(slot);
        let base = held - extra_slots - train.task_updates.len();
        let room = base.saturating_sub(extra_slots);
        let tasks = memory::gradient_tasks(want, wc, room);
        if tasks > 1 && train.task_updates.len() < tasks * wc {
            train.task_updates = Vec::new(); // the old buffers go before the new ones come
            train.task_updates = alloc::zeros("per-thread weight gradients", tasks * wc)?;
        }
        Ok(tasks)
    }
}

/// The backward pass of one image: per group, im2col of the delta, then the weight gradient
/// and (optionally) the input gradient GEMMs on those columns; or the phase plan's backward.
struct ImageBackward<'a, T, B> {
    geometry: &'a Geometry,
    backend: &'a B,
    weights: &'a [T],
    /// The phase plan and its packed weights, when the layer uses phases.
    phases: Option<(&'a PhasePlan, &'a [T])>,
    /// The direct plan, when the layer uses it.
    direct: Option<&'a DirectPlan>,
    /// Whether the column plan batches images (its units hold several images).
    batched: bool,
    /// The tile and the transposed weights, when the column backward goes by tiles.
    tiles: Option<(Tile, &'a [T])>,
    /// Batch norm, whose per-image half of the backward runs first on each image.
    bn: Option<&'a BatchNorm<T>>,
}

impl<T: Element, B: Gemm<T>> ImageBackward<'_, T, B> {
    /// A unit of images from image `b` on (`x`, `delta` and `dx` holding one or more): through
    /// one pair of GEMMs (per group) where the plan batches images, else one after the other.
    /// `parallel` splits the work over rayon's threads (when units are not).
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        b: usize,
        x: &[T],
        delta: &mut [T],
        mut dx: Option<&mut [T]>,
        dw: &mut [T],
        workspace: &mut [T],
        parallel: bool,
    ) -> Result<()> {
        let g = self.geometry;
        let k = x.len() / g.inputs();
        if k > 1 && self.batched {
            if let Some(bn) = self.bn {
                // Parallel over the images, not over each small image's channels (as below).
                let one = |(i, delta): (usize, &mut [T])| {
                    bn.backward_image(delta, b + i, g.out_area(), false);
                };
                if parallel {
                    delta.par_chunks_mut(g.outputs()).enumerate().for_each(one);
                } else {
                    delta.chunks_mut(g.outputs()).enumerate().for_each(one);
                }
            }
            return self.run_batched(x, delta, dx, dw, workspace, parallel);
        }
        let images = x.chunks(g.inputs()).zip(delta.chunks_mut(g.outputs()));
        for (i, (x, delta)) in images.enumerate() {
            let dx = dx
                .as_deref_mut()
                .map(|d| &mut d[i * g.inputs()..][..g.inputs()]);
            self.run_one(b + i, x, delta, dx, dw, workspace, parallel)?;
        }
        Ok(())
    }

    /// The column plan's backward of `k` images at once (batch norm's per-image half done):
    /// per group, their inputs gathered side by side (`cg x k*hw`) and the im2col of their
    /// deltas side by side (`rows x k*hw`), then `dw += xb * cols^T` and `dxb = W * cols`, whose
    /// blocks are added to each image's `dx`.
    fn run_batched(
        &self,
        x: &[T],
        delta: &[T],
        mut dx: Option<&mut [T]>,
        dw: &mut [T],
        ws: &mut [T],
        parallel: bool,
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
        let per_channel = g.taps() * width;
        // Channels per parallel task, and whether the images go side by side, image innermost
        // (as in the forward): each task then transposes a channel's delta planes into
        // `ohw * k` elements of the gathered input's room (free until the gather) and copies
        // runs of `k` images, where each small image has short rows of its own.
        let tasks = if parallel {
            rayon::current_num_threads().min(ng)
        } else {
            1
        };
        let chunk = ng.div_ceil(tasks);
        let interleave = k >= MIN_INTERLEAVED_IMAGES && ng.div_ceil(chunk) * ohw * k <= xb.len();
        for grp in 0..g.groups() {
            let plane_of = |i: usize, ch: usize| &delta[i * g.outputs() + (grp * ng + ch) * ohw..];
            if interleave {
                let task = |(t, (cols, acc)): (usize, (&mut [T], &mut [T]))| {
                    let acc = &mut acc[..ohw * k];
                    for (c, col) in cols.chunks_mut(per_channel).enumerate() {
                        transpose(plane_of(0, t * chunk + c), k, ohw, g.outputs(), acc, k);
                        im2col_interleaved(acc, k, &window, &table, col, width);
                    }
                };
                if parallel {
                    cols.par_chunks_mut(chunk * per_channel)
                        .zip(xb.par_chunks_mut(ohw * k))
                        .enumerate()
                        .for_each(task);
                } else {
                    cols.chunks_mut(chunk * per_channel)
                        .zip(xb.chunks_mut(ohw * k))
                        .enumerate()
                        .for_each(task);
                }
                interleave_images(x, g.inputs(), grp * cg * hw, cg, hw, xb);
            } else {
                // Channel by channel (its `taps` rows of `cols`), each image's columns in turn:
                // one parallel dispatch for the unit, and one tap table, where a dispatch (or
                // an im2col call) per image cost more than copying the planes of small images.
                let channel = |(ch, cols): (usize, &mut [T])| {
                    for i in 0..k {
                        let plane = &plane_of(i, ch)[..ohw];
                        let band = 0..g.in_h();
                        im2col_plane(plane, &window, &table, band, &mut cols[i * hw..], width);
                    }
                };
                if parallel {
                    cols.par_chunks_mut(per_channel)
                        .enumerate()
                        .for_each(channel);
                } else {
                    cols.chunks_mut(per_channel).enumerate().for_each(channel);
                }
                gather_images(x, g.inputs(), grp * cg * hw, cg, hw, xb);
            }
            let wrange = grp * cg * rows..(grp + 1) * cg * rows;
            // dw_g (cg x rows) += xb (cg x k*hw) * cols^T (k*hw x rows), over the columns in
            // the same order whichever it is.
            gemm_on(
                self.backend,
                parallel,
                T::one(),
                MatRef::new(xb, cg, width, width)?,
                MatRef::new(cols, rows, width, width)?.t(),
                T::one(),
                MatMut::new(&mut dw[wrange.clone()], cg, rows, rows)?,
            )?;
            if let Some(dx) = dx.as_deref_mut() {
                // xb (cg x k*hw) = W_g (cg x rows) * cols (rows x k*hw), then into each dx.
                gemm_on(
                    self.backend,
                    parallel,
                    T::one(),
                    MatRef::new(&self.weights[wrange], cg, rows, rows)?,
                    MatRef::new(cols, rows, width, width)?,
                    T::zero(),
                    MatMut::new(xb, cg, width, width)?,
                )?;
                for (i, dx) in dx.chunks_mut(g.inputs()).enumerate() {
                    let planes = dx[grp * cg * hw..][..cg * hw].chunks_mut(hw);
                    for (plane, row) in planes.zip(xb.chunks(width)) {
                        if interleave {
                            let pixels = row[i..].iter().step_by(k);
                            for (d, &v) in plane.iter_mut().zip(pixels) {
                                *d += v;
                            }
                        } else {
                            add_assign(plane, &row[i * hw..][..hw]);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Image `b`: first batch norm's per-image backward on its `delta`, if any, then
    /// `dw += x * cols^T` (or the phase plan's packed equivalent) and `dx += W * cols`;
    /// `parallel` splits the work over rayon's threads (when images are not).
    #[allow(clippy::too_many_arguments)]
    fn run_one(
        &self,
        b: usize,
        x: &[T],
        delta: &mut [T],
        mut dx: Option<&mut [T]>,
        dw: &mut [T],
        workspace: &mut [T],
        parallel: bool,
    ) -> Result<()> {
        if let Some(bn) = self.bn {
            bn.backward_image(delta, b, self.geometry.out_area(), parallel);
        }
        let delta = &*delta;
        if let Some(plan) = self.direct {
            plan.backward_image(self.weights, x, delta, dx, dw, workspace, parallel);
            return Ok(());
        }
        if let Some((plan, packed)) = self.phases {
            let be = self.backend;
            return plan.backward_image(be, packed, x, delta, dx, dw, workspace, parallel);
        }
        if let Some((tile, weights_t)) = self.tiles {
            return self.run_tiles(tile, weights_t, x, delta, dx, dw, workspace, parallel);
        }
        let g = self.geometry;
        let (cg, ng, hw, ohw, rows) = (
            g.group_in(),
            g.group_out(),
            g.in_area(),
            g.out_area(),
            g.col_rows(),
        );
        let cols = &mut workspace[..g.workspace_size()];
        let window = g.window();
        for grp in 0..g.groups() {
            let planes = &delta[grp * ng * ohw..][..ng * ohw];
            // A 1x1 kernel at stride 1 without padding: the delta's planes are its columns.
            let cols: &[T] = if window.is_identity() {
                planes
            } else {
                im2col_with(planes, &window, cols, parallel)?;
                cols
            };
            let x = &x[grp * cg * hw..][..cg * hw];
            let wrange = grp * cg * rows..(grp + 1) * cg * rows;
            // dw_g (cg x rows) += x_g (cg x hw) * cols^T (hw x rows)
            gemm_on(
                self.backend,
                parallel,
                T::one(),
                MatRef::new(x, cg, hw, hw)?,
                MatRef::new(cols, rows, hw, hw)?.t(),
                T::one(),
                MatMut::new(&mut dw[wrange.clone()], cg, rows, rows)?,
            )?;
            if let Some(dx) = dx.as_deref_mut() {
                // dx_g (cg x hw) += W_g (cg x rows) * cols (rows x hw)
                gemm_on(
                    self.backend,
                    parallel,
                    T::one(),
                    MatRef::new(&self.weights[wrange], cg, rows, rows)?,
                    MatRef::new(cols, rows, hw, hw)?,
                    T::one(),
                    MatMut::new(&mut dx[grp * cg * hw..][..cg * hw], cg, hw, hw)?,
                )?;
            }
        }
        Ok(())
    }

    /// [`run`](Self::run) tile by tile: a band of input rows (all of them when the image is
    /// short) by a block of filters (all of them when the band is), so that a tile's columns
    /// stay in the core's cache between the im2col and the two GEMMs that read them. Each GEMM
    /// gets its operands stored with `k` across rows, which matrixmultiply packs with plain
    /// copies: `dw += (x_band^T)^T * cols^T` from transposed copies of the band's input and of
    /// the tile's columns, `dx_band += (W^T)^T * cols` from the layer's transposed weights
    /// (summed over the filter blocks in a buffer, then added to `dx`).
    #[allow(clippy::too_many_arguments)]
    fn run_tiles(
        &self,
        tile: Tile,
        weights_t: &[T],
        x: &[T],
        delta: &[T],
        mut dx: Option<&mut [T]>,
        dw: &mut [T],
        workspace: &mut [T],
        parallel: bool,
    ) -> Result<()> {
        let g = self.geometry;
        let (cg, ng, hw, ohw, rows) = (
            g.group_in(),
            g.group_out(),
            g.in_area(),
            g.out_area(),
            g.col_rows(),
        );
        let (h, w, taps) = (g.in_h(), g.in_w(), g.taps());
        let (most_p, most_rows) = (tile.band_rows * w, tile.filters * taps);
        // The transposed copies' rows are skewed apart (see skewed_ld); so are W^T's.
        let (ld_ct, ld_xt, ld_wt) = (
            skewed_ld::<T>(most_rows),
            skewed_ld::<T>(cg),
            skewed_ld::<T>(cg),
        );
        let ld_dx = skewed_ld::<T>(most_p);
        let (cols, rest) = workspace.split_at_mut(most_rows * most_p);
        let (cols_t, rest) = rest.split_at_mut(ld_ct * most_p);
        let (x_t, rest) = rest.split_at_mut(ld_xt * most_p);
        let dx_band = &mut rest[..cg * ld_dx];
        let window = g.window();
        for grp in 0..g.groups() {
            let delta = &delta[grp * ng * ohw..][..ng * ohw];
            let x = &x[grp * cg * hw..][..cg * hw];
            let dw = &mut dw[grp * cg * rows..][..cg * rows];
            let wt = &weights_t[grp * ld_wt * rows..][..ld_wt * rows];
            for band in even_parts(h, tile.band_rows) {
                let (y0, p) = (band.start, band.len() * w);
                let x_t = &mut x_t[..ld_xt * p];
                transpose(&x[y0 * w..], cg, p, hw, x_t, ld_xt);
                for (i, Range { start: f0, end: f1 }) in even_parts(ng, tile.filters).enumerate() {
                    let (r0, rn) = (f0 * taps, (f1 - f0) * taps);
                    let cols = &mut cols[..rn * p];
                    let planes = &delta[f0 * ohw..f1 * ohw];
                    let layout = ColLayout::alone(p);
                    im2col_band(planes, &window, band.clone(), cols, layout, parallel)?;
                    transpose(cols, rn, p, p, cols_t, ld_ct);
                    // dw_g[:, r0..r0 + rn] (cg x rn) += x_band (cg x p) * cols^T (p x rn)
                    gemm_on(
                        self.backend,
                        parallel,
                        T::one(),
                        MatRef::new(x_t, p, cg, ld_xt)?.t(),
                        MatRef::new(cols_t, p, rn, ld_ct)?,
                        T::one(),
                        MatMut::new(&mut dw[r0..], cg, rn, rows)?,
                    )?;
                    if dx.is_some() {
                        // dx_band (cg x p) (+)= W_g[:, r0..r0 + rn] (cg x rn) * cols (rn x p),
                        // into a buffer: dx's own rows, h*w apart, share a few cache sets
                        // when h*w is a power of two (S4: 4096), as in `skewed_ld`.
                        let beta = if i == 0 { T::zero() } else { T::one() };
                        gemm_on(
                            self.backend,
                            parallel,
                            T::one(),
                            MatRef::new(&wt[r0 * ld_wt..], rn, cg, ld_wt)?.t(),
                            MatRef::new(cols, rn, p, p)?,
                            beta,
                            MatMut::new(dx_band, cg, p, ld_dx)?,
                        )?;
                    }
                }
                if let Some(dx) = dx.as_deref_mut() {
                    let dx = &mut dx[grp * cg * hw + y0 * w..];
                    for (dst, src) in dx.chunks_mut(hw).zip(dx_band.chunks(ld_dx)) {
                        add_assign(&mut dst[..p], &src[..p]);
                    }
                }
            }
        }
        Ok(())
    }
}

/// `bias_updates[f] += sum over b and spatial of delta[b][f][..]` (Darknet `backward_bias`).
fn backward_bias<T: Element>(bias_updates: &mut [T], delta: &[T], spatial: usize) {
    let channels = bias_updates.len();
    bias_updates.par_iter_mut().enumerate().for_each(|(f, u)| {
        for plane in delta.chunks(spatial).skip(f).step_by(channels) {
            *u += crate::reduce::sum(plane);
        }
    });
}

multiversion! {
/// `dst += src`, element by element.
fn add_assign<T: Element>(dst: &mut [T], src: &[T]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}
}
