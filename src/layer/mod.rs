//! The deconvolutional (transposed-convolution) layer: the type and its buffers here; the
//! passes and the optimizer steps in their own rooms.
//!
//! - `plan`: how the passes run for a geometry (columns or phases, backward tiles);
//! - `forward` and `backward`: the passes, image by image;
//! - `update`: SGD with momentum and Adam;
//! - `reshape`: resize, bilinear init and batch-norm folding.

mod backward;
mod forward;
mod plan;
mod reshape;
#[cfg(test)]
mod tests;
mod update;

pub use update::{Optimizer, Params, UpdateArgs};

use crate::activation::Activation;
use crate::backend::{DefaultBackend, Gemm};
use crate::batchnorm::BatchNorm;
use crate::config::{Algorithm, DeconvConfig, Geometry};
use crate::element::Element;
use crate::error::{Error, Result};
use plan::Plan;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use update::{AdamState, Moments};

/// Whether a forward pass trains (batch statistics) or infers (rolling statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Training: batch norm uses and updates batch statistics; backward may follow.
    Train,
    /// Inference: batch norm uses the rolling statistics.
    Inference,
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

    fn take_workspace(&mut self, call: &str) -> Result<Vec<T>> {
        if self.config.own_workspace {
            Ok(std::mem::take(&mut self.workspace))
        } else {
            Err(Error::InvalidState(format!(
                "the layer was built with own_workspace(false): call {call}_with_workspace"
            )))
        }
    }
}
