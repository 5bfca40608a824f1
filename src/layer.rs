//! The deconvolutional (transposed-convolution) layer.

use crate::activation::{Activation, Epilogue};
use crate::backend::{DefaultBackend, Gemm, MatMut, MatRef, gemm_on};
use crate::batchnorm::{BatchNorm, EPSILON};
use crate::config::{Algorithm, DeconvConfig, Geometry};
use crate::element::Element;
use crate::error::{Error, Result, check_len, check_len_at_least};
use crate::im2col::{col2im_then, im2col_band, im2col_with};
use crate::phase::PhasePlan;
use crate::simd::multiversion;
use crate::transpose::{skewed_ld, transpose};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::iter::Either;
use rayon::prelude::*;
use std::ops::Range;

/// Whether a forward pass trains (batch statistics) or infers (rolling statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Training: batch norm uses and updates batch statistics; backward may follow.
    Train,
    /// Inference: batch norm uses the rolling statistics.
    Inference,
}

/// The update rule of [`DeconvLayer::update`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer<T> {
    /// SGD with momentum and weight decay, exactly Darknet's `update_deconvolutional_layer`.
    Sgd,
    /// Adam with bias correction, as Darknet's GPU `adam_update_gpu` (its CPU code allocates
    /// Adam's buffers but never uses them). Needs a layer built with `adam(true)`.
    Adam {
        /// Decay of the first moment (Darknet `B1`, default .9).
        beta1: T,
        /// Decay of the second moment (Darknet `B2`, default .999).
        beta2: T,
        /// Added to the root of the second moment (Darknet `eps`, default 1e-7).
        epsilon: T,
    },
}

impl<T: Element> Optimizer<T> {
    /// Adam with Darknet's defaults: `beta1 = .9`, `beta2 = .999`, `epsilon = 1e-7`.
    pub fn adam() -> Self {
        Optimizer::Adam {
            beta1: T::of(0.9),
            beta2: T::of(0.999),
            epsilon: T::of(1e-7),
        }
    }
}

/// Arguments of [`DeconvLayer::update`] (Darknet `update_args`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateArgs<T> {
    /// Learning rate, multiplied by the layer's [`learning_rate_scale`](DeconvLayer::learning_rate_scale).
    pub learning_rate: T,
    /// Momentum (SGD only).
    pub momentum: T,
    /// Weight decay (weights only).
    pub decay: T,
    /// Images the accumulated gradients are summed over (Darknet `batch * subdivisions`).
    pub batch: usize,
    /// The update rule.
    pub optimizer: Optimizer<T>,
}

impl<T: Element> UpdateArgs<T> {
    /// SGD arguments.
    pub fn sgd(learning_rate: T, momentum: T, decay: T, batch: usize) -> Self {
        UpdateArgs {
            learning_rate,
            momentum,
            decay,
            batch,
            optimizer: Optimizer::Sgd,
        }
    }
}

/// Adam's moments (Darknet `m`, `v`, `bias_m`, `bias_v`, `scale_m`, `scale_v`) and step count.
#[derive(Debug, Clone, PartialEq)]
struct AdamState<T> {
    weights: Moments<T>,
    biases: Moments<T>,
    scales: Moments<T>,
    step: u64,
}

impl<T> AdamState<T> {
    fn moments(&self, params: Params) -> &Moments<T> {
        match params {
            Params::Weights => &self.weights,
            Params::Biases => &self.biases,
            Params::Scales => &self.scales,
        }
    }
    fn moments_mut(&mut self, params: Params) -> &mut Moments<T> {
        match params {
            Params::Weights => &mut self.weights,
            Params::Biases => &mut self.biases,
            Params::Scales => &mut self.scales,
        }
    }
}

/// Which parameters an optimizer buffer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Params {
    /// The weights.
    Weights,
    /// The biases.
    Biases,
    /// The batch-norm scales.
    Scales,
}

#[derive(Debug, Clone, PartialEq)]
struct Moments<T> {
    m: Vec<T>,
    v: Vec<T>,
}

impl<T: Element> Moments<T> {
    fn new(len: usize) -> Self {
        Moments {
            m: vec![T::zero(); len],
            v: vec![T::zero(); len],
        }
    }
}

/// A transposed-convolution layer with Darknet's semantics, on GEMM backend `B`.
///
/// Layout NCHW: input `[batch][in_channels][h][w]`, output `[batch][filters][out_h][out_w]`,
/// weights `[in_channels][filters / groups][kh][kw]` (Darknet and PyTorch `ConvTranspose2d`).
///
/// # Conventions (as Darknet)
/// - `delta` holds the **descent direction** `-dLoss/dOutput`; the `*_updates` buffers and the
///   input gradient written by [`backward`](Self::backward) are descent directions too, and
///   [`update`](Self::update) *adds* `lr / batch * updates`.
/// - Gradient buffers **accumulate** (`+=`): weight, bias and scale updates, and the input
///   gradient. [`update`](Self::update) scales them by the momentum; zero them yourself to start over.
/// - [`backward`](Self::backward) consumes `delta` (turns it in place into the gradient at the
///   pre-activation output) and the forward pass it follows.
/// - The buffers behind the accessors (`weights`, `output`, `delta`, ...) keep their addresses
///   across forward, backward and update; only [`resize`](Self::resize) and
///   [`denormalize`](Self::denormalize) reallocate or drop them.
///
/// # Example
/// ```
/// use deconv::{Activation, DeconvConfig, DeconvLayer, Mode};
///
/// let config = DeconvConfig::new(1, 2, 4, 4, 3, 4).stride(2).pad(1).activation(Activation::Leaky);
/// let mut layer: DeconvLayer<f32> = DeconvLayer::new(&config)?;
/// let input = vec![0.5f32; 2 * 4 * 4];
/// let output = layer.forward(&input, Mode::Inference)?;
/// assert_eq!(output.len(), 3 * 8 * 8);
/// # Ok::<(), deconv::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct DeconvLayer<T: Element = f32, B: Gemm<T> = DefaultBackend> {
    config: DeconvConfig,
    geometry: Geometry,
    backend: B,
    learning_rate_scale: T,
    weights: Weights<T>,
    weight_updates: Vec<T>,
    biases: Vec<T>,
    bias_updates: Vec<T>,
    bn: Option<BatchNorm<T>>,
    adam: Option<AdamState<T>>,
    output: Vec<T>,
    delta: Vec<T>,
    workspace: Vec<T>,
    plan: Plan<T>,
    /// Per-task weight-gradient sums of an image-parallel backward, `min(batch, threads)` of
    /// them (none for batch 1).
    task_updates: Vec<T>,
    last_forward: Option<Mode>,
}

/// The weights, and how many times they were handed out for writing: the copies derived from
/// them (the phase plan's repacked weights, the tiled backward's transposed ones) are rebuilt
/// only when this version moved. There is no `DerefMut`: every write goes through
/// [`Weights::get_mut`], which counts it.
#[derive(Debug, Clone)]
struct Weights<T> {
    data: Vec<T>,
    version: u64,
}

impl<T> Weights<T> {
    fn get_mut(&mut self) -> &mut [T] {
        self.version = self.version.wrapping_add(1);
        &mut self.data
    }
}

impl<T> std::ops::Deref for Weights<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.data
    }
}

/// Fewest GEMM rows per phase class for [`Algorithm::Auto`] to choose the phase decomposition.
const MIN_PHASE_GEMM_ROWS: usize = 256;
/// Most input channels per group for [`Algorithm::Auto`] to choose the phase decomposition.
const MAX_PHASE_GROUP_IN: usize = 64;

/// How the forward pass runs, chosen once per geometry ([`Algorithm`]).
#[derive(Debug, Clone)]
enum Plan<T> {
    /// GEMM into columns, then col2im; the backward works through each image in tiles when
    /// `tiles` is set (see [`column_tiles`]).
    Columns { tiles: Option<Tiles<T>> },
    /// With the weights repacked for the phase GEMMs (from the weights' version
    /// `packed_from`; repacked when they changed), and the one-thread backward's weight
    /// gradient in that layout.
    Phases {
        plan: Box<PhasePlan>,
        packed: Vec<T>,
        packed_from: Option<u64>,
        packed_grad: Vec<T>,
    },
}

/// The tiled column backward: its [`Tile`], and the weights transposed per group
/// (`[group][rows][in_channels / groups]`, rows [`skewed_ld`] apart) from the weights' version
/// `transposed_from` (transposed again when they changed).
#[derive(Debug, Clone)]
struct Tiles<T> {
    tile: Tile,
    weights_t: Vec<T>,
    transposed_from: Option<u64>,
}

impl<T: Element> Tiles<T> {
    fn new(g: &Geometry, tile: Tile) -> Self {
        Tiles {
            tile,
            weights_t: vec![T::zero(); weights_t_len::<T>(g)],
            transposed_from: None,
        }
    }
}

/// A tile of the column backward: `band_rows` rows of the input image by `filters` output
/// channels (a block of `filters * kh * kw` column rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tile {
    band_rows: usize,
    filters: usize,
}

impl<T: Element> Plan<T> {
    fn columns(g: &Geometry) -> Self {
        let tiles = column_tiles::<T>(g).map(|tile| Tiles::new(g, tile));
        Plan::Columns { tiles }
    }

    fn new(config: &DeconvConfig, g: &Geometry) -> Result<Self> {
        let phases = || {
            PhasePlan::new(g).map(|plan| Plan::Phases {
                plan: Box::new(plan),
                packed: vec![T::zero(); g.weight_count()],
                packed_from: None,
                packed_grad: vec![T::zero(); g.weight_count()],
            })
        };
        Ok(match config.algorithm {
            Algorithm::Columns => Plan::columns(g),
            Algorithm::Phases => phases().ok_or_else(|| Error::InvalidParameter {
                param: "algorithm",
                reason: format!(
                    "the phase decomposition needs dilation 1 and at most {} phases \
                     (stride_h * stride_w)",
                    crate::phase::MAX_PHASES
                ),
            })?,
            Algorithm::Auto => {
                // Phases replace col2im, whose cost relative to the GEMM is about
                // 1 / (2 * in_channels per group): they pay for few input channels (S3: 21),
                // provided each class GEMM is tall enough to amortize packing its input (S4's
                // 32-row classes lose). With many channels (S1: 256) the GEMM on the phase grid,
                // a little larger than the input, costs more than col2im saves. Where the
                // kernel tiles the output (kernel == stride, no pad), col2im is a plain copy.
                // Measured with `examples/perf.rs --algorithm columns|phases`.
                let tiles = (0..2).all(|a| g.kernel()[a] == g.stride()[a] && g.pad()[a] == 0);
                match phases() {
                    Some(phases @ Plan::Phases { .. })
                        if !tiles
                            && g.group_in() <= MAX_PHASE_GROUP_IN
                            && phases.min_gemm_rows() >= MIN_PHASE_GEMM_ROWS =>
                    {
                        phases
                    }
                    _ => Plan::columns(g),
                }
            }
        })
    }

    /// Brings the copies of `weights` the plan keeps up to date with the weights' version: the
    /// phase plan's repacked weights, and the tiled backward's transposed ones (the
    /// input-gradient GEMM packs `W^T`, stored k-major, with plain copies).
    fn refresh_weights(&mut self, weights: &Weights<T>, g: &Geometry) {
        let current = Some(weights.version);
        match self {
            Plan::Phases {
                plan,
                packed,
                packed_from,
                ..
            } if *packed_from != current => {
                plan.pack_weights(weights, packed);
                *packed_from = current;
            }
            Plan::Columns { tiles: Some(t) } if t.transposed_from != current => {
                let (cg, rows) = (g.group_in(), g.col_rows());
                let ld = skewed_ld::<T>(cg);
                let per_group = weights.chunks(cg * rows);
                for (w, wt) in per_group.zip(t.weights_t.chunks_mut(ld * rows)) {
                    transpose(w, cg, rows, rows, wt, ld);
                }
                t.transposed_from = current;
            }
            _ => {}
        }
    }

    /// Rows of the smallest phase-class GEMM (0 for columns).
    fn min_gemm_rows(&self) -> usize {
        match self {
            Plan::Columns { .. } => 0,
            Plan::Phases { plan, .. } => plan.min_gemm_rows(),
        }
    }

    /// Workspace elements per image, forward and backward.
    fn slot_size(&self, g: &Geometry) -> usize {
        match self {
            Plan::Columns { .. } => g.workspace_size(),
            Plan::Phases { plan, .. } => plan.workspace_size(),
        }
    }

    /// A layer's own workspace: one slot per rayon thread (at construction), at most `batch`.
    fn own_workspace_len(&self, g: &Geometry) -> usize {
        self.slot_size(g) * g.batch().min(rayon::current_num_threads())
    }
}

macro_rules! buffers {
    ($($(#[$doc:meta])* $name:ident / $name_mut:ident => $($path:ident).+;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(&self) -> &[T] {
                &self.$($path).+
            }
            $(#[$doc])*
            pub fn $name_mut(&mut self) -> &mut [T] {
                &mut self.$($path).+
            }
        )*
    };
}

macro_rules! bn_buffers {
    ($($(#[$doc:meta])* $name:ident / $name_mut:ident => $field:ident;)*) => {
        $(
            $(#[$doc])*
            /// `None` without batch norm.
            pub fn $name(&self) -> Option<&[T]> {
                self.bn.as_ref().map(|bn| &bn.$field[..])
            }
            $(#[$doc])*
            /// `None` without batch norm.
            pub fn $name_mut(&mut self) -> Option<&mut [T]> {
                self.bn.as_mut().map(|bn| &mut bn.$field[..])
            }
        )*
    };
}

impl<T: Element, B: Gemm<T> + Default> DeconvLayer<T, B> {
    /// Builds a layer (Darknet `make_deconvolutional_layer`) on the backend `B::default()`.
    ///
    /// Weights are drawn from `N(0, .02)` with the config's seed and scaled by
    /// `out_h*out_w / (h*w)` as Darknet does; biases are 0, batch-norm scales 1; the
    /// learning-rate scale is 1 (Darknet leaves it 0, which silently disables learning unless
    /// the cfg parser sets it).
    ///
    /// # Errors
    /// The configuration's errors ([`DeconvConfig::geometry`]).
    pub fn new(config: &DeconvConfig) -> Result<Self> {
        Self::with_backend(config, B::default())
    }
}

impl<T: Element, B: Gemm<T>> DeconvLayer<T, B> {
    /// Builds a layer on an explicitly chosen backend (see [`new`](Self::new)).
    ///
    /// # Errors
    /// The configuration's errors ([`DeconvConfig::geometry`]).
    pub fn with_backend(config: &DeconvConfig, backend: B) -> Result<Self> {
        let g = config.geometry()?;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let normal = Normal::new(0.0f64, 0.02).expect("0.02 is a valid standard deviation");
        let scale = g.out_area() as f64 / g.in_area() as f64;
        let weights = (0..g.weight_count())
            .map(|_| T::of(normal.sample(&mut rng)) * T::of(scale))
            .collect();
        let total = g.batch() * g.outputs();
        let n = g.filters();
        let plan = Plan::new(config, &g)?;
        Ok(DeconvLayer {
            config: config.clone(),
            geometry: g,
            backend,
            learning_rate_scale: T::one(),
            weights: Weights {
                data: weights,
                version: 0,
            },
            weight_updates: vec![T::zero(); g.weight_count()],
            biases: vec![T::zero(); n],
            bias_updates: vec![T::zero(); n],
            bn: config
                .batch_normalize
                .then(|| BatchNorm::new(n, total, g.batch())),
            adam: config.adam.then(|| AdamState {
                weights: Moments::new(g.weight_count()),
                biases: Moments::new(n),
                scales: Moments::new(if config.batch_normalize { n } else { 0 }),
                step: 0,
            }),
            output: vec![T::zero(); total],
            delta: vec![T::zero(); total],
            workspace: if config.own_workspace {
                vec![T::zero(); plan.own_workspace_len(&g)]
            } else {
                Vec::new()
            },
            plan,
            task_updates: {
                let tasks = g.batch().min(rayon::current_num_threads());
                vec![
                    T::zero();
                    if tasks > 1 {
                        tasks * g.weight_count()
                    } else {
                        0
                    }
                ]
            },
            last_forward: None,
        })
    }

    /// The configuration the layer was built (or last resized) with.
    pub fn config(&self) -> &DeconvConfig {
        &self.config
    }
    /// The forward algorithm the layer uses ([`Algorithm::Columns`] or [`Algorithm::Phases`];
    /// [`Algorithm::Auto`] is resolved when the layer is built or resized).
    pub fn algorithm(&self) -> Algorithm {
        match self.plan {
            Plan::Columns { .. } => Algorithm::Columns,
            Plan::Phases { .. } => Algorithm::Phases,
        }
    }

    /// The layer's sizes.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }
    /// The GEMM backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }
    /// The activation.
    pub fn activation(&self) -> Activation {
        self.config.activation
    }
    /// Whether the layer batch-normalizes.
    pub fn batch_normalize(&self) -> bool {
        self.bn.is_some()
    }
    /// Workspace elements forward and backward need at least (Darknet `workspace_size`, which
    /// counts bytes: multiply by `size_of::<T>()`): one image's column matrix.
    ///
    /// A workspace of `k` times this size lets the layer process `k` images at once, one per
    /// rayon thread (a layer's own workspace has `min(batch, threads)` such slots, so it is never
    /// larger than Darknet's per-image workspace times the batch). With one slot, each image's
    /// GEMM and col2im are split over the threads instead.
    pub fn workspace_size(&self) -> usize {
        self.plan.slot_size(&self.geometry)
    }
    /// Multiplier of the learning rate in [`update`](Self::update) (Darknet `learning_rate_scale`).
    pub fn learning_rate_scale(&self) -> T {
        self.learning_rate_scale
    }
    /// Sets the learning-rate multiplier.
    pub fn set_learning_rate_scale(&mut self, scale: T) {
        self.learning_rate_scale = scale;
    }
    /// Adam steps taken so far (Darknet `t`), `None` without Adam buffers.
    pub fn adam_step(&self) -> Option<u64> {
        self.adam.as_ref().map(|a| a.step)
    }

    /// Sets Adam's step count (to restore an optimizer state with
    /// [`adam_moments_mut`](Self::adam_moments_mut)).
    ///
    /// # Errors
    /// [`Error::InvalidState`] when the layer has no Adam buffers.
    pub fn set_adam_step(&mut self, step: u64) -> Result<()> {
        match &mut self.adam {
            Some(a) => {
                a.step = step;
                Ok(())
            }
            None => Err(Error::InvalidState(
                "the layer has no Adam buffers: build it with DeconvConfig::adam(true)".into(),
            )),
        }
    }

    /// Weights `[in_channels][filters / groups][kh][kw]` (Darknet `weights`).
    pub fn weights(&self) -> &[T] {
        &self.weights
    }

    /// Weights `[in_channels][filters / groups][kh][kw]` (Darknet `weights`).
    pub fn weights_mut(&mut self) -> &mut [T] {
        self.weights.get_mut()
    }

    /// Has the copies the layer derives from its weights rebuilt at the next pass, as after
    /// [`weights_mut`](Self::weights_mut): for the C interface, whose callers may write the
    /// weights through a pointer kept from an earlier call.
    #[cfg(feature = "capi")]
    pub(crate) fn weights_may_have_changed(&mut self) {
        self.weights.get_mut();
    }

    buffers! {
        /// Accumulated weight gradient, descent direction (Darknet `weight_updates`).
        weight_updates / weight_updates_mut => weight_updates;
        /// Biases, one per filter (Darknet `biases`; with batch norm, the shift after scaling).
        biases / biases_mut => biases;
        /// Accumulated bias gradient, descent direction (Darknet `bias_updates`).
        bias_updates / bias_updates_mut => bias_updates;
        /// Output of the last forward pass, `[batch][filters][out_h][out_w]` (Darknet `output`).
        output / output_mut => output;
        /// Gradient at the output, descent direction `-dLoss/dOutput`, to be filled before
        /// [`backward`](Self::backward) (Darknet `delta`).
        delta / delta_mut => delta;
    }

    bn_buffers! {
        /// Batch-norm scales (Darknet `scales`).
        scales / scales_mut => scales;
        /// Accumulated scale gradient, descent direction (Darknet `scale_updates`).
        scale_updates / scale_updates_mut => scale_updates;
        /// Rolling mean (Darknet `rolling_mean`).
        rolling_mean / rolling_mean_mut => rolling_mean;
        /// Rolling unbiased variance (Darknet `rolling_variance`).
        rolling_variance / rolling_variance_mut => rolling_variance;
        /// Mean of the last training batch (Darknet `mean`).
        batch_mean / batch_mean_mut => mean;
        /// Unbiased variance of the last training batch (Darknet `variance`).
        batch_variance / batch_variance_mut => variance;
        /// Normalized pre-activation output of the last training forward (Darknet `x_norm`).
        x_norm / x_norm_mut => x_norm;
    }

    /// Adam's first and second moments `(m, v)` for `params` (Darknet `m`/`v`, `bias_m`/`bias_v`,
    /// `scale_m`/`scale_v`); `None` without Adam buffers (empty for scales without batch norm).
    pub fn adam_moments(&self, params: Params) -> Option<(&[T], &[T])> {
        self.adam.as_ref().map(|a| {
            let m = a.moments(params);
            (&m.m[..], &m.v[..])
        })
    }

    /// Mutable [`adam_moments`](Self::adam_moments), to restore an optimizer state.
    pub fn adam_moments_mut(&mut self, params: Params) -> Option<(&mut [T], &mut [T])> {
        self.adam.as_mut().map(|a| {
            let m = a.moments_mut(params);
            (&mut m.m[..], &mut m.v[..])
        })
    }

    /// The output and the delta at once, to hand the delta to the next layer's backward while
    /// reading this layer's output.
    pub fn output_and_delta_mut(&mut self) -> (&[T], &mut [T]) {
        (&self.output, &mut self.delta)
    }

    /// Forward pass on the layer's own workspace (Darknet `forward_deconvolutional_layer`):
    /// GEMM and col2im per image and group, then bias or batch norm, then the activation.
    /// Returns the output.
    ///
    /// # Errors
    /// [`Error::BufferLength`] when `input` is not `batch * in_channels * h * w` long;
    /// [`Error::InvalidState`] when the layer was built without its own workspace, or when batch
    /// norm trains on fewer than 2 values per channel.
    pub fn forward(&mut self, input: &[T], mode: Mode) -> Result<&[T]> {
        let mut workspace = self.take_workspace("forward")?;
        let result = self.forward_with_workspace(input, mode, &mut workspace);
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
        let g = self.geometry;
        check_len("input", g.batch() * g.inputs(), input.len())?;
        let slot = self.plan.slot_size(&g);
        check_len_at_least("workspace", slot, workspace.len())?;
        if mode == Mode::Train && self.bn.is_some() && g.batch() * g.out_area() < 2 {
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
        let tasks = image_tasks(slot, g.batch(), workspace.len());
        if tasks > 1 {
            // Images over threads, each with its own part of the workspace and serial kernels.
            let per_task = g.batch().div_ceil(tasks);
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
                    let images = out.chunks_mut(g.outputs()).zip(x.chunks(g.inputs()));
                    images.enumerate().try_for_each(|(i, (out, x))| {
                        let s = stats
                            .get_mut(i * per_image..(i + 1) * per_image)
                            .unwrap_or_default();
                        image.run(x, out, &mut cols[..slot], false, s)
                    })
                })?;
        } else {
            let images = self
                .output
                .chunks_mut(g.outputs())
                .zip(input.chunks(g.inputs()));
            for (i, (out, x)) in images.enumerate() {
                let s = stats
                    .get_mut(i * per_image..(i + 1) * per_image)
                    .unwrap_or_default();
                image.run(x, out, &mut workspace[..slot], true, s)?;
            }
        }
        if let (Some(bn), Mode::Train) = (&mut self.bn, mode) {
            bn.forward_train(&mut self.output, &self.biases, ohw, activation);
        }
        self.last_forward = Some(mode);
        Ok(())
    }

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
        let mut workspace = self.take_workspace("backward")?;
        let result = self.backward_with_workspace(input, input_delta, &mut workspace);
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
        mut input_delta: Option<&mut [T]>,
        workspace: &mut [T],
    ) -> Result<()> {
        let g = self.geometry;
        check_len("input", g.batch() * g.inputs(), input.len())?;
        if let Some(d) = &input_delta {
            check_len("input_delta", g.batch() * g.inputs(), d.len())?;
        }
        check_len_at_least("workspace", self.plan.slot_size(&g), workspace.len())?;
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
        self.last_forward = None;
        let ohw = g.out_area();
        let activation = self.config.activation;
        match &mut self.bn {
            Some(bn) => bn.backward_sums(
                &mut self.delta,
                &self.output,
                activation,
                &mut self.bias_updates,
                ohw,
            ),
            None => {
                activation.gradient_slice(&self.output, &mut self.delta)?;
                backward_bias(&mut self.bias_updates, &self.delta, ohw);
            }
        }
        let slot = self.plan.slot_size(&g);
        self.plan.refresh_weights(&self.weights, &g);
        let mut tiles = None;
        let packed_grad = match &mut self.plan {
            Plan::Phases {
                plan,
                packed,
                packed_grad,
                ..
            } => {
                packed_grad.fill(T::zero());
                Some((&**plan, &packed[..], packed_grad))
            }
            Plan::Columns { tiles: Some(t) } => {
                tiles = Some((t.tile, &t.weights_t[..]));
                None
            }
            Plan::Columns { tiles: None } => None,
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
            bn: self.bn.as_ref(),
        };
        let wc = g.weight_count();
        let tasks =
            image_tasks(slot, g.batch(), workspace.len()).min(self.task_updates.len() / wc.max(1));
        if tasks > 1 {
            // Images over threads; each task sums its weight gradient in its own buffer (in the
            // phase plan's packed layout when it has one).
            let per_task = g.batch().div_ceil(tasks);
            let tasks = g.batch().div_ceil(per_task);
            let dx_parts = match input_delta {
                Some(dx) => Either::Left(dx.par_chunks_mut(per_task * g.inputs()).map(Some)),
                None => Either::Right((0..tasks).into_par_iter().map(|_| None)),
            };
            self.task_updates[..tasks * wc]
                .par_chunks_mut(wc)
                .zip(workspace.par_chunks_mut(slot))
                .zip(input.par_chunks(per_task * g.inputs()))
                .zip(self.delta.par_chunks_mut(per_task * g.outputs()))
                .zip(dx_parts)
                .enumerate()
                .try_for_each(|(t, ((((dw, ws), x), delta), mut dx))| {
                    dw.fill(T::zero());
                    let images = x.chunks(g.inputs()).zip(delta.chunks_mut(g.outputs()));
                    for (i, (x, delta)) in images.enumerate() {
                        let dx = dx
                            .as_deref_mut()
                            .map(|d| &mut d[i * g.inputs()..][..g.inputs()]);
                        let b = t * per_task + i;
                        image.run(b, x, delta, dx, dw, &mut ws[..slot], false)?;
                    }
                    Ok::<(), Error>(())
                })?;
            let parts = &self.task_updates[..tasks * wc];
            match image.phases {
                Some((plan, _)) => {
                    for part in parts.chunks(wc) {
                        plan.unpack_add(part, &mut self.weight_updates);
                    }
                }
                None => {
                    let updates = &mut self.weight_updates;
                    updates.par_chunks_mut(4096).enumerate().for_each(|(i, u)| {
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
            let delta = &mut self.delta;
            let mut each_image = |dw: &mut [T]| {
                for b in 0..g.batch() {
                    let x = &input[b * g.inputs()..][..g.inputs()];
                    let delta = &mut delta[b * g.outputs()..][..g.outputs()];
                    let dx = input_delta
                        .as_deref_mut()
                        .map(|d| &mut d[b * g.inputs()..][..g.inputs()]);
                    image.run(b, x, delta, dx, dw, &mut workspace[..slot], true)?;
                }
                Ok::<(), Error>(())
            };
            match (packed_grad, image.phases) {
                (Some(grad), Some((plan, _))) => {
                    each_image(grad)?;
                    plan.unpack_add(grad, &mut self.weight_updates);
                }
                _ => each_image(&mut self.weight_updates)?,
            }
        }
        Ok(())
    }

    fn take_workspace(&mut self, call: &str) -> Result<Vec<T>> {
        if self.config.own_workspace {
            Ok(std::mem::take(&mut self.workspace))
        } else {
            Err(Error::InvalidState(format!(
                "the layer was built with own_workspace(false): call {call}_with_workspace"
            )))
        }
    }

    /// Applies the accumulated updates (Darknet `update_deconvolutional_layer`).
    ///
    /// With [`Optimizer::Sgd`], exactly Darknet's formulas, `lr = learning_rate * learning_rate_scale`:
    /// `biases += lr/batch * bias_updates; bias_updates *= momentum` (the same for batch-norm
    /// scales), `weight_updates -= decay*batch * weights; weights += lr/batch * weight_updates;
    /// weight_updates *= momentum`.
    ///
    /// With [`Optimizer::Adam`], Darknet's GPU rule for weights, biases and scales alike:
    /// `d = updates - decay*batch * params; m = b1*m + (1-b1)*d; v = b2*v + (1-b2)*d^2;
    /// params += lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps); updates = 0`, where `t`
    /// counts this layer's Adam steps from 1.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for `batch == 0`; [`Error::InvalidState`] for Adam on a
    /// layer built without `adam(true)`.
    pub fn update(&mut self, args: &UpdateArgs<T>) -> Result<()> {
        if args.batch == 0 {
            return Err(Error::InvalidParameter {
                param: "batch",
                reason: "update needs batch >= 1".into(),
            });
        }
        let lr = args.learning_rate * self.learning_rate_scale;
        let batch = T::of(args.batch as f64);
        match args.optimizer {
            Optimizer::Sgd => {
                sgd_step(
                    &mut self.biases,
                    &mut self.bias_updates,
                    lr / batch,
                    args.momentum,
                );
                if let Some(bn) = &mut self.bn {
                    sgd_step(
                        &mut bn.scales,
                        &mut bn.scale_updates,
                        lr / batch,
                        args.momentum,
                    );
                }
                let decay = -args.decay * batch;
                self.weight_updates
                    .par_iter_mut()
                    .zip(self.weights.get_mut().par_iter_mut())
                    .for_each(|(u, w)| {
                        *u += decay * *w;
                        *w += lr / batch * *u;
                        *u *= args.momentum;
                    });
            }
            Optimizer::Adam {
                beta1,
                beta2,
                epsilon,
            } => {
                let Some(adam) = &mut self.adam else {
                    return Err(Error::InvalidState(
                        "Adam needs the layer built with DeconvConfig::adam(true)".into(),
                    ));
                };
                adam.step += 1;
                let rule = AdamRule {
                    beta1,
                    beta2,
                    epsilon,
                    lr,
                    decay: args.decay * batch,
                    correction1: T::one() - beta1.powi(adam.step as i32),
                    correction2: T::one() - beta2.powi(adam.step as i32),
                };
                rule.apply(
                    self.weights.get_mut(),
                    &mut self.weight_updates,
                    &mut adam.weights,
                );
                rule.apply(&mut self.biases, &mut self.bias_updates, &mut adam.biases);
                if let Some(bn) = &mut self.bn {
                    rule.apply(&mut bn.scales, &mut bn.scale_updates, &mut adam.scales);
                }
            }
        }
        Ok(())
    }

    /// Changes the input size (Darknet `resize_deconvolutional_layer`), reallocating the output,
    /// delta, batch-norm and workspace buffers. Parameters are kept.
    ///
    /// # Errors
    /// The configuration's errors for the new size; the layer is unchanged then.
    pub fn resize(&mut self, in_h: usize, in_w: usize) -> Result<()> {
        let mut config = self.config.clone();
        config.in_h = in_h;
        config.in_w = in_w;
        let g = config.geometry()?;
        let plan = Plan::new(&config, &g)?;
        let total = g.batch() * g.outputs();
        self.output = vec![T::zero(); total];
        self.delta = vec![T::zero(); total];
        if let Some(bn) = &mut self.bn {
            bn.x_norm = vec![T::zero(); total];
        }
        if config.own_workspace {
            self.workspace = vec![T::zero(); plan.own_workspace_len(&g)];
        }
        self.plan = plan;
        self.config = config;
        self.geometry = g;
        self.last_forward = None;
        Ok(())
    }

    /// Sets the weights to the standard bilinear-upsampling kernel (Darknet `bilinear_init`).
    ///
    /// For each axis with kernel `k`, factor `f = ceil(k / 2)` and center `f - 1` (k odd) or
    /// `f - 0.5` (k even), the tap `i` weighs `1 - |i - center| / f`; the kernel is the outer
    /// product, placed on the channel diagonal (input channel `i` to output channel `i`, for `i`
    /// below both channel counts and within one group); every other weight is 0.
    // Darknet omits the `/ f` (a 4x4 kernel gets negative corners) and indexes the weights as
    // `[n][c]`, reaching the diagonal only when c == n; we write the standard kernel on `W[i][i]`.
    pub fn bilinear_init(&mut self) {
        let g = self.geometry;
        let profile = |k: usize, i: usize| {
            let f = k.div_ceil(2) as f64;
            let center = if k % 2 == 1 { f - 1.0 } else { f - 0.5 };
            1.0 - (i as f64 - center).abs() / f
        };
        let [kh, kw] = g.kernel();
        let weights = self.weights.get_mut();
        weights.fill(T::zero());
        for ch in 0..g.in_channels().min(g.filters()) {
            let group = ch / g.group_in();
            if ch / g.group_out() != group {
                continue;
            }
            let local_out = ch - group * g.group_out();
            let base = (ch * g.group_out() + local_out) * kh * kw;
            for i in 0..kh {
                for j in 0..kw {
                    weights[base + i * kw + j] = T::of(profile(kh, i) * profile(kw, j));
                }
            }
        }
    }

    /// Folds batch norm into the weights and biases (Darknet `denormalize_deconvolutional_layer`)
    /// and turns batch norm off, so that inference gives the same output as the normalized layer
    /// did (to rounding).
    ///
    /// Filter `i` gets the factor `s = scales[i] / (sqrt(rolling_variance[i]) + 1e-6)`, the
    /// epsilon of the forward pass: `W[c][i] *= s` for every input channel `c`, and
    /// `biases[i] -= rolling_mean[i] * s`.
    // Darknet scales `weights[i*c*k*k ..]`, i.e. indexes them `[n][c*k*k]` although they are
    // `[c][n][k][k]`, and uses `sqrt(var + 1e-5)`: its folded layer does not reproduce its output.
    ///
    /// # Errors
    /// [`Error::InvalidState`] when the layer has no batch norm.
    pub fn denormalize(&mut self) -> Result<()> {
        let Some(bn) = self.bn.take() else {
            return Err(Error::InvalidState(
                "denormalize needs a batch-normalized layer".into(),
            ));
        };
        let g = self.geometry;
        let factor: Vec<T> = (0..g.filters())
            .map(|i| bn.scales[i] / (bn.rolling_variance[i].sqrt() + T::of(EPSILON)))
            .collect();
        let (ng, taps) = (g.group_out(), g.taps());
        for (row, w) in self.weights.get_mut().chunks_mut(taps).enumerate() {
            // Row = (c, local filter); its filter is local + group(c) * ng.
            let (c, local) = (row / ng, row % ng);
            let filter = c / g.group_in() * ng + local;
            w.iter_mut().for_each(|x| *x *= factor[filter]);
        }
        for (i, b) in self.biases.iter_mut().enumerate() {
            *b -= bn.rolling_mean[i] * factor[i];
        }
        self.config.batch_normalize = false;
        self.last_forward = None;
        Ok(())
    }
}

fn sgd_step<T: Element>(params: &mut [T], updates: &mut [T], rate: T, momentum: T) {
    for (p, u) in params.iter_mut().zip(updates.iter_mut()) {
        *p += rate * *u;
        *u *= momentum;
    }
}

struct AdamRule<T> {
    beta1: T,
    beta2: T,
    epsilon: T,
    lr: T,
    decay: T,
    correction1: T,
    correction2: T,
}

impl<T: Element> AdamRule<T> {
    fn apply(&self, params: &mut [T], updates: &mut [T], moments: &mut Moments<T>) {
        let one = T::one();
        for (((p, u), m), v) in params
            .iter_mut()
            .zip(updates.iter_mut())
            .zip(moments.m.iter_mut())
            .zip(moments.v.iter_mut())
        {
            let d = *u - self.decay * *p;
            *m = self.beta1 * *m + (one - self.beta1) * d;
            *v = self.beta2 * *v + (one - self.beta2) * d * d;
            let m_hat = *m / self.correction1;
            let v_hat = *v / self.correction2;
            *p += self.lr * m_hat / (v_hat.sqrt() + self.epsilon);
            *u = T::zero();
        }
    }
}

/// How many images to run at once: one per workspace slot and thread, at most the batch.
fn image_tasks(slot: usize, batch: usize, workspace_len: usize) -> usize {
    (workspace_len / slot.max(1))
        .min(batch)
        .min(rayon::current_num_threads())
        .max(1)
}

/// The backward pass of one image: per group, im2col of the delta, then the weight gradient
/// and (optionally) the input gradient GEMMs on those columns; or the phase plan's backward.
struct ImageBackward<'a, T, B> {
    geometry: &'a Geometry,
    backend: &'a B,
    weights: &'a [T],
    /// The phase plan and its packed weights, when the layer uses phases.
    phases: Option<(&'a PhasePlan, &'a [T])>,
    /// The tile and the transposed weights, when the column backward goes by tiles.
    tiles: Option<(Tile, &'a [T])>,
    /// Batch norm, whose per-image half of the backward runs first on each image.
    bn: Option<&'a BatchNorm<T>>,
}

impl<T: Element, B: Gemm<T>> ImageBackward<'_, T, B> {
    /// Image `b`: first batch norm's per-image backward on its `delta`, if any, then
    /// `dw += x * cols^T` (or the phase plan's packed equivalent) and `dx += W * cols`;
    /// `parallel` splits the work over rayon's threads (when images are not).
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
        if let Some(bn) = self.bn {
            bn.backward_image(delta, b, self.geometry.out_area(), parallel);
        }
        let delta = &*delta;
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
            im2col_with(
                &delta[grp * ng * ohw..][..ng * ohw],
                &window,
                cols,
                parallel,
            )?;
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
                    im2col_band(planes, &window, band.clone(), cols, parallel)?;
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

impl<T: Element, B: Gemm<T>> ImageForward<'_, T, B> {
    /// `parallel`: split the GEMM and col2im over rayon's threads (when images are not).
    /// `stats` is empty or has one entry per filter, to be filled.
    fn run(
        &self,
        x: &[T],
        out: &mut [T],
        cols: &mut [T],
        parallel: bool,
        stats: &mut [(T, T)],
    ) -> Result<()> {
        let ohw = self.geometry.out_area();
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
            let c = MatMut::new(cols, rows, hw, hw)?;
            gemm_on(self.backend, parallel, T::one(), a, b, T::zero(), c)?;
            let out = &mut out[grp * ng * ohw..][..ng * ohw];
            if stats.is_empty() {
                let mut none = vec![(); ng]; // zero-sized: no allocation
                col2im_then(cols, &window, out, parallel, &mut none, |ch, plane, _| {
                    if let Some(epilogue) = &self.epilogue {
                        epilogue.apply(grp * ng + ch, plane);
                    }
                })?;
            } else {
                let stats = &mut stats[grp * ng..][..ng];
                col2im_then(cols, &window, out, parallel, stats, |_, plane, s| {
                    *s = plane_stats(plane);
                })?;
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

/// `0..n` cut into the fewest parts of at most `most` elements, of sizes differing by at most
/// one (64 rows in bands of at most 7: four of 7 and six of 6, not nine of 7 and one of 1).
fn even_parts(n: usize, most: usize) -> impl Iterator<Item = Range<usize>> {
    let parts = n.div_ceil(most.max(1));
    (0..parts).map(move |i| i * n / parts..(i + 1) * n / parts)
}

/// Bytes of one tile's columns in the tiled column backward: the columns and their transposed
/// copy then share a core's L2 cache (1 MiB here).
const TILE_BYTES: usize = 512 * 1024;
/// Fewest pixels per band: the weight-gradient GEMM runs over a band's pixels, and shorter runs
/// cost it more than the cache saves (S1: 4-row bands of 16 pixels were 30% slower).
const MIN_BAND_PIXELS: usize = 256;
/// Fewest column rows per filter block: the input-gradient GEMM runs over a block's rows.
const MIN_BLOCK_ROWS: usize = 256;

/// The tile of the column backward, or `None` to take each image whole: when its columns
/// already fit the cache budget, when tiles would be too thin, or when a tile's buffers would
/// not fit the column workspace (Darknet's size, which the layer keeps; see [`Tile::fits`]). Bands of rows over all filters where rows are long
/// (S4), else the whole image over blocks of filters (S1).
fn column_tiles<T>(g: &Geometry) -> Option<Tile> {
    let budget = TILE_BYTES / std::mem::size_of::<T>();
    tiles_within::<T>(g, budget, MIN_BAND_PIXELS, MIN_BLOCK_ROWS)
}

/// [`column_tiles`] for a budget of `budget` column elements per tile, bands of at least
/// `min_pixels` pixels and blocks of at least `min_rows` column rows.
fn tiles_within<T>(
    g: &Geometry,
    budget: usize,
    min_pixels: usize,
    min_rows: usize,
) -> Option<Tile> {
    let (h, w, taps, ng) = (g.in_h(), g.in_w(), g.taps(), g.group_out());
    let rows = g.col_rows();
    if rows.checked_mul(h * w)? <= budget {
        return None;
    }
    let band_rows = budget / (rows * w).max(1);
    let filters = budget / (taps * h * w).max(1);
    let tile = if band_rows >= 1 && band_rows * w >= min_pixels && band_rows < h {
        Tile {
            band_rows,
            filters: ng,
        }
    } else if filters >= 1 && filters * taps >= min_rows && filters < ng {
        Tile {
            band_rows: h,
            filters,
        }
    } else {
        return None;
    };
    tile.fits::<T>(g).then_some(tile)
}

impl Tile {
    /// Whether the tile's columns, their transposed copy, the band's transposed input and its
    /// input-gradient buffer fit the column workspace.
    fn fits<T>(&self, g: &Geometry) -> bool {
        let p = self.band_rows * g.in_w();
        let (rows, cg) = (self.filters * g.taps(), g.group_in());
        let per_pixel = rows + skewed_ld::<T>(rows) + skewed_ld::<T>(cg);
        let need = per_pixel
            .checked_mul(p)
            .zip(cg.checked_mul(skewed_ld::<T>(p)))
            .and_then(|(a, b)| a.checked_add(b));
        need.is_some_and(|need| need <= g.workspace_size())
    }
}

/// Elements of the transposed weights: per group, `rows` rows of [`skewed_ld`]`(cg)`.
fn weights_t_len<T>(g: &Geometry) -> usize {
    g.groups() * g.col_rows() * skewed_ld::<T>(g.group_in())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::DefaultBackend;

    /// Small whole numbers, so that every sum below is exact and any order of summation
    /// gives the same bits.
    fn whole<T: Element>(len: usize, seed: usize) -> Vec<T> {
        (0..len)
            .map(|i| T::of((((i + seed) * 7919 + seed * 31) % 7) as f64 - 3.0))
            .collect()
    }

    /// A training forward and a backward of `config` on whole numbers, with the column
    /// backward by `tile` (or whole images): the output, input gradient, weight and bias
    /// gradients, one after the other.
    fn passes<T: Element>(config: &DeconvConfig, tile: Option<Tile>) -> Vec<T>
    where
        DefaultBackend: Gemm<T>,
    {
        let mut layer = DeconvLayer::<T, DefaultBackend>::new(config).unwrap();
        let g = *layer.geometry();
        layer.plan = Plan::Columns {
            tiles: tile.map(|tile| Tiles::new(&g, tile)),
        };
        let weights = whole(g.weight_count(), 1);
        layer.weights_mut().copy_from_slice(&weights);
        let biases = whole(g.filters(), 5);
        layer.biases_mut().copy_from_slice(&biases);
        let input = whole(g.batch() * g.inputs(), 2);
        let output = layer.forward(&input, Mode::Train).unwrap().to_vec();
        let delta = whole(g.batch() * g.outputs(), 3);
        layer.delta_mut().copy_from_slice(&delta);
        let mut dx = whole(input.len(), 4);
        layer.backward(&input, Some(&mut dx)).unwrap();
        let mut all = output;
        all.extend(dx);
        all.extend(layer.weight_updates());
        all.extend(layer.bias_updates());
        all
    }

    /// Random shapes (kernels, strides, dilations, paddings, output paddings, groups, images
    /// up to 40 pixels wide) with a random tile that fits: the tiled backward gives exactly the
    /// whole-image results on whole numbers, on the global pool.
    fn tiled_random_shapes_match_whole_images<T: Element>()
    where
        DefaultBackend: Gemm<T>,
    {
        use rand::RngExt;
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut checked = 0;
        while checked < 60 {
            let groups = rng.random_range(1..=2);
            let kernel = [rng.random_range(1..=4), rng.random_range(1..=4)];
            let stride = [rng.random_range(1..=3), rng.random_range(1..=3)];
            let dilation = [rng.random_range(1..=2), rng.random_range(1..=2)];
            let pad = [0, 1].map(|a| rng.random_range(0..kernel[a]));
            let op = [0, 1].map(|a| rng.random_range(0..stride[a].max(dilation[a])));
            let (batch, c) = (rng.random_range(1..=3), groups * rng.random_range(1..=3));
            let (h, w) = (rng.random_range(2..=10), rng.random_range(2..=40));
            let n = groups * rng.random_range(1..=4);
            let config = DeconvConfig::new(batch, c, h, w, n, 1)
                .kernel_hw(kernel[0], kernel[1])
                .stride_hw(stride[0], stride[1])
                .dilation_hw(dilation[0], dilation[1])
                .pad_hw(pad[0], pad[1])
                .output_padding_hw(op[0], op[1])
                .groups(groups)
                .algorithm(Algorithm::Columns);
            let Ok(g) = config.geometry() else {
                continue;
            };
            let tile = Tile {
                band_rows: rng.random_range(1..=g.in_h()),
                filters: rng.random_range(1..=g.group_out()),
            };
            if !tile.fits::<T>(&g) {
                continue;
            }
            let tiled = passes::<T>(&config, Some(tile));
            assert_eq!(tiled, passes::<T>(&config, None), "{config:?} {tile:?}");
            checked += 1;
        }
    }

    #[test]
    fn tiled_random_shapes_match_whole_images_f32() {
        tiled_random_shapes_match_whole_images::<f32>();
    }

    #[test]
    fn tiled_random_shapes_match_whole_images_f64() {
        tiled_random_shapes_match_whole_images::<f64>();
    }

    /// A layer whose column backward goes by tiles (its own im2col per tile, transposed
    /// operands) gives the whole-image results for every tile that fits, with images over
    /// threads and with one image split over threads: exactly on whole numbers, and within
    /// rounding with batch norm and an activation (whose backward is not whole numbers).
    fn tiled_passes_match_whole_images<T: Element>()
    where
        DefaultBackend: Gemm<T>,
    {
        let configs = [
            DeconvConfig::new(3, 5, 9, 11, 4, 3).stride(2).pad(1),
            DeconvConfig::new(1, 4, 8, 6, 6, 4)
                .stride_hw(3, 2)
                .pad(1)
                .dilation(2)
                .groups(2),
            DeconvConfig::new(2, 6, 12, 5, 3, 2).stride(1).groups(3),
            DeconvConfig::new(4, 3, 10, 7, 5, 3)
                .stride(2)
                .pad(1)
                .output_padding(1),
            // 64 column rows and 64 input channels: skewed leading dimensions.
            DeconvConfig::new(2, 64, 6, 5, 16, 2).stride(2),
            DeconvConfig::new(3, 5, 9, 11, 4, 3)
                .stride(2)
                .pad(1)
                .batch_normalize(true)
                .activation(Activation::Leaky),
            DeconvConfig::new(1, 4, 7, 6, 6, 3)
                .stride(2)
                .activation(Activation::Logistic),
            // Output rows long enough for col2im's gather.
            DeconvConfig::new(2, 3, 9, 34, 4, 3)
                .stride(2)
                .pad(1)
                .batch_normalize(true)
                .activation(Activation::Relu),
            DeconvConfig::new(1, 2, 11, 40, 3, 4)
                .stride(3)
                .pad(2)
                .dilation(2)
                .output_padding(1)
                .activation(Activation::Leaky),
        ];
        let mut tiled = 0;
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for config in &configs {
                let config = config.clone().algorithm(Algorithm::Columns);
                let g = config.geometry().unwrap();
                let run = |tile: Option<Tile>| pool.install(|| passes::<T>(&config, tile));
                let whole_images = run(None);
                let exact = config.activation == Activation::Linear && !config.batch_normalize;
                for band_rows in [1, 2, 3, g.in_h()] {
                    for filters in [1, 2, g.group_out()] {
                        let tile = Tile { band_rows, filters };
                        if !tile.fits::<T>(&g) {
                            continue;
                        }
                        tiled += 1;
                        let got = run(Some(tile));
                        if exact {
                            assert_eq!(got, whole_images, "{config:?} {tile:?}");
                        } else {
                            // Sums in another order: errors relative to each result's scale.
                            let tol = T::epsilon() * T::of(1000.0);
                            let lens = [g.batch() * g.outputs(), g.batch() * g.inputs()];
                            let lens = lens.into_iter().chain([g.weight_count(), g.filters()]);
                            let (mut at, mut what) = (0, 0);
                            for len in lens {
                                let (a, b) = (&got[at..at + len], &whole_images[at..at + len]);
                                let scale = b.iter().fold(T::one(), |m, v| m.max(v.abs()));
                                let err = a
                                    .iter()
                                    .zip(b)
                                    .fold(T::zero(), |m, (x, y)| m.max((*x - *y).abs()));
                                let at_most = tol * scale;
                                assert!(err <= at_most, "part {what}: {config:?} {tile:?}");
                                (at, what) = (at + len, what + 1);
                            }
                        }
                    }
                }
            }
        }
        assert!(tiled >= 20, "only {tiled} tiles fit");
    }

    #[test]
    fn tiled_passes_match_whole_images_f32() {
        tiled_passes_match_whole_images::<f32>();
    }

    #[test]
    fn tiled_passes_match_whole_images_f64() {
        tiled_passes_match_whole_images::<f64>();
    }

    #[test]
    fn even_parts_cover_in_order_with_sizes_one_apart() {
        for n in 0..40 {
            for most in 1..12 {
                let parts: Vec<_> = even_parts(n, most).collect();
                assert_eq!(parts.len(), n.div_ceil(most));
                let mut next = 0;
                for p in &parts {
                    assert_eq!(p.start, next);
                    assert!(!p.is_empty() && p.len() <= most);
                    next = p.end;
                }
                assert_eq!(next, n);
                let sizes = parts.iter().map(|p| p.len());
                let (lo, hi) = (sizes.clone().min(), sizes.max());
                assert!(hi.unwrap_or(0) - lo.unwrap_or(0) <= 1);
            }
        }
    }

    /// The copies derived from the weights (phase packing, tiled W^T), cached across passes,
    /// follow every way the weights change: after each change, forward and backward equal those
    /// of a new layer given the changed parameters.
    #[test]
    fn derived_weights_follow_every_change() {
        let phases = DeconvConfig::new(2, 3, 5, 6, 4, 4)
            .stride(2)
            .pad(1)
            .algorithm(Algorithm::Phases);
        let tiled = DeconvConfig::new(2, 3, 9, 34, 4, 3)
            .stride(2)
            .pad(1)
            .algorithm(Algorithm::Columns);
        let tile = Tile {
            band_rows: 2,
            filters: 4,
        };
        let build = |config: &DeconvConfig, tiles: bool| {
            let mut layer = DeconvLayer::<f64, DefaultBackend>::new(config).unwrap();
            if tiles {
                let g = *layer.geometry();
                assert!(tile.fits::<f64>(&g));
                layer.plan = Plan::Columns {
                    tiles: Some(Tiles::new(&g, tile)),
                };
            }
            layer
        };
        for (config, tiles) in [(phases, false), (tiled, true)] {
            for change in 0..5 {
                let config = config
                    .clone()
                    .adam(change == 2)
                    .batch_normalize(change == 3);
                let mut a = build(&config, tiles);
                let g = *a.geometry();
                let input = whole::<f64>(g.batch() * g.inputs(), 2);
                let mut dx = vec![0.0; input.len()];
                a.forward(&input, Mode::Train).unwrap();
                a.delta_mut().fill(0.25);
                a.backward(&input, Some(&mut dx)).unwrap();
                a.weight_updates_mut().fill(0.5);
                let after = match change {
                    0 => {
                        a.weights_mut()[1] += 1.0;
                        config
                    }
                    1 => {
                        a.update(&UpdateArgs::sgd(0.1, 0.9, 0.0, 1)).unwrap();
                        config
                    }
                    2 => {
                        let mut args = UpdateArgs::sgd(0.1, 0.9, 0.0, 1);
                        args.optimizer = Optimizer::adam();
                        a.update(&args).unwrap();
                        config
                    }
                    3 => {
                        a.denormalize().unwrap();
                        config.batch_normalize(false)
                    }
                    _ => {
                        a.bilinear_init();
                        config
                    }
                };
                let mut b = build(&after, tiles);
                b.weights_mut().copy_from_slice(a.weights());
                b.biases_mut().copy_from_slice(a.biases());
                let out_a = a.forward(&input, Mode::Inference).unwrap().to_vec();
                let out_b = b.forward(&input, Mode::Inference).unwrap().to_vec();
                assert_eq!(out_a, out_b, "forward after change {change}, tiles {tiles}");
                let mut dx_b = vec![0.0; input.len()];
                dx.fill(0.0);
                for (layer, dx) in [(&mut a, &mut dx), (&mut b, &mut dx_b)] {
                    if !layer.batch_normalize() {
                        layer.forward(&input, Mode::Train).unwrap();
                        layer.delta_mut().fill(0.25);
                        layer.backward(&input, Some(dx)).unwrap();
                    }
                }
                assert_eq!(
                    dx, dx_b,
                    "input gradient after change {change}, tiles {tiles}"
                );
            }
        }
    }

    /// The benchmark shapes' tiles in f32: S4 (columns of 4.7 MB an image, 64-pixel rows)
    /// takes bands of rows, S1 (2 MB, 16-pixel rows) blocks of filters, S2 neither (its
    /// 1024-row columns would make 128-row blocks).
    #[test]
    fn tiles_where_they_pay() {
        let tile = |c: DeconvConfig| column_tiles::<f32>(&c.geometry().unwrap());
        let s4 = DeconvConfig::new(8, 64, 64, 64, 32, 3).stride(2).pad(1);
        let s1 = DeconvConfig::new(16, 256, 16, 16, 128, 4).stride(2).pad(1);
        let s2 = DeconvConfig::new(4, 512, 32, 32, 256, 2).stride(2);
        assert_eq!(
            tile(s4),
            Some(Tile {
                band_rows: 7,
                filters: 32
            })
        );
        assert_eq!(
            tile(s1),
            Some(Tile {
                band_rows: 16,
                filters: 32
            })
        );
        assert_eq!(tile(s2), None);
        // The two tiled shapes of tests/no_alloc.rs.
        let bands = DeconvConfig::new(2, 8, 48, 48, 16, 3).stride(2).pad(1);
        let blocks = DeconvConfig::new(2, 8, 16, 16, 128, 4).stride(2).pad(1);
        assert_eq!(
            tile(bands),
            Some(Tile {
                band_rows: 18,
                filters: 16
            })
        );
        assert_eq!(
            tile(blocks),
            Some(Tile {
                band_rows: 16,
                filters: 32
            })
        );
    }
}
