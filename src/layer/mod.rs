//! The deconvolutional (transposed-convolution) layer: the type and its buffers here; the
//! passes and the optimizer steps in their own rooms.
//!
//! - `plan`: how the passes run for a geometry (columns or phases, backward tiles);
//! - `forward` and `backward`: the passes, image by image;
//! - `update`: SGD with momentum and Adam;
//! - `reshape`: resize, bilinear init and batch-norm folding;
//! - `memory`: what the buffers take, before and after they are reserved.

mod backward;
mod forward;
mod memory;
mod plan;
mod reshape;
#[cfg(test)]
mod tests;
mod update;

pub use update::{Optimizer, Params, UpdateArgs};

use crate::activation::Activation;
use crate::alloc;
use crate::backend::{DefaultBackend, Gemm};
use crate::batchnorm::BatchNorm;
use crate::config::{Algorithm, DeconvConfig, Geometry};
use crate::element::Element;
use crate::error::{Error, Result};
use plan::Plan;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use update::AdamState;

/// Whether a forward pass trains (batch statistics) or infers (rolling statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Training: batch norm uses and updates batch statistics; backward may follow.
    Train,
    /// Inference: batch norm uses the rolling statistics.
    ///
    /// A batch-norm layer that has never trained (nor loaded its statistics) has, as in
    /// Darknet, rolling means of 0 and rolling variances of 0, so inference divides by
    /// `sqrt(0) + 1e-6`: its output is its pre-normalization value **scaled by about 10^6**.
    /// Load trained statistics ([`darknet::read_weights`](crate::darknet::read_weights),
    /// [`rolling_variance_mut`](DeconvLayer::rolling_variance_mut)) or train first.
    ///
    /// ```
    /// use deconv::{DeconvConfig, DeconvLayer, Mode};
    ///
    /// let config = DeconvConfig::new(1, 1, 2, 2, 1, 1).batch_normalize(true);
    /// let mut layer: DeconvLayer<f64> = DeconvLayer::new(&config)?;
    /// layer.weights_mut()[0] = 1.0;
    /// let fresh = layer.forward(&[0.5; 4], Mode::Inference)?[0];
    /// assert!((fresh - 0.5e6).abs() < 1.0); // 0.5 / (sqrt(0) + 1e-6)
    /// layer.rolling_variance_mut().unwrap()[0] = 1.0;
    /// let loaded = layer.forward(&[0.5; 4], Mode::Inference)?[0];
    /// assert!((loaded - 0.5).abs() < 1e-5);
    /// # Ok::<(), deconv::Error>(())
    /// ```
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
    biases: Vec<T>,
    bn: Option<BatchNorm<T>>,
    output: Vec<T>,
    workspace: Vec<T>,
    /// How the forward pass runs.
    plan: Plan<T>,
    /// How the backward pass runs, where `Algorithm::Auto` chose another plan than the
    /// forward's; `None` where both run `plan`.
    back: Option<Plan<T>>,
    /// `None` in a layer built with `training(false)`.
    train: Option<Training<T>>,
    last_forward: Option<Mode>,
}

/// What a layer needs to learn, and only to learn.
#[derive(Debug, Clone)]
struct Training<T> {
    /// Every accumulated gradient in one buffer, `[weight_updates | bias_updates |
    /// scale_updates]` (scales with batch norm only), so that one call reduces them all.
    gradients: Vec<T>,
    /// Darknet `delta`, `[batch][filters][out_h][out_w]`.
    delta: Vec<T>,
    adam: Option<AdamState<T>>,
    /// Per-task weight-gradient sums of an image-parallel backward: reserved by the backward
    /// that first needs them, and never more of them than the rest of the layer's memory
    /// holds (see [`memory::gradient_tasks`]).
    task_updates: Vec<T>,
}

impl<T> Training<T> {
    /// `(weight_updates, bias_updates, scale_updates)`.
    fn split(&self, weights: usize, filters: usize) -> (&[T], &[T], &[T]) {
        let (w, rest) = self.gradients.split_at(weights);
        let (b, s) = rest.split_at(filters);
        (w, b, s)
    }
    fn split_mut(&mut self, weights: usize, filters: usize) -> (&mut [T], &mut [T], &mut [T]) {
        split3(&mut self.gradients, weights, filters)
    }
}

/// The `(weights, biases, scales)` parts of a `[weights | biases | scales]` buffer.
fn split3<T>(v: &mut [T], weights: usize, filters: usize) -> (&mut [T], &mut [T], &mut [T]) {
    let (w, rest) = v.split_at_mut(weights);
    let (b, s) = rest.split_at_mut(filters);
    (w, b, s)
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

/// Accessors of the gradient buffers: empty slices in a layer that does not train.
macro_rules! gradient_buffers {
    ($($(#[$doc:meta])* $name:ident / $name_mut:ident => $part:tt;)*) => {
        $(
            $(#[$doc])*
            ///
            /// Empty in a layer built with [`training(false)`](DeconvConfig::training).
            pub fn $name(&self) -> &[T] {
                let (wc, n) = (self.geometry.weight_count(), self.geometry.filters());
                self.train.as_ref().map_or(&[][..], |t| t.split(wc, n).$part)
            }
            $(#[$doc])*
            ///
            /// Empty in a layer built with [`training(false)`](DeconvConfig::training).
            pub fn $name_mut(&mut self) -> &mut [T] {
                let (wc, n) = (self.geometry.weight_count(), self.geometry.filters());
                self.train.as_mut().map_or(&mut [][..], |t| t.split_mut(wc, n).$part)
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
    /// The configuration's errors ([`DeconvConfig::geometry`]); [`Error::Allocation`] when the
    /// layer's buffers do not fit the machine's memory or the allocator refuses one.
    pub fn with_backend(config: &DeconvConfig, backend: B) -> Result<Self> {
        let g = config.geometry()?;
        let mut layer = Self::reserve(config, g, backend)?;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let normal = Normal::new(0.0f64, 0.02).expect("0.02 is a valid standard deviation");
        let scale = T::of(g.out_area() as f64 / g.in_area() as f64);
        for w in layer.weights.get_mut() {
            *w = T::of(normal.sample(&mut rng)) * scale;
        }
        Ok(layer)
    }

    /// A layer of `config` with every buffer reserved and zero (batch-norm scales 1), after
    /// checking that they fit the machine together.
    fn reserve(config: &DeconvConfig, g: Geometry, backend: B) -> Result<Self> {
        if config.adam && !config.training {
            return Err(Error::InvalidParameter {
                param: "adam",
                reason:
                    "Adam's buffers are training state: the layer is built with training(false)"
                        .into(),
            });
        }
        let mut plan = Plan::new(config, &g)?;
        let back = plan.backward_for(config, &g);
        let plans = (&plan, back.as_ref());
        let workspace_len = memory::sized_workspace(config, &g, plans, "the layer's buffers")?;
        plan.reserve_forward(&g)?;
        let total = g.batch() * g.outputs();
        let (wc, n) = (g.weight_count(), g.filters());
        let scales = if config.batch_normalize { n } else { 0 };
        let train = if config.training {
            Some(Training {
                gradients: alloc::zeros("gradients", wc + n + scales)?,
                delta: alloc::zeros("delta", total)?,
                adam: if config.adam {
                    Some(AdamState::new(wc + n + scales)?)
                } else {
                    None
                },
                task_updates: Vec::new(),
            })
        } else {
            None
        };
        Ok(DeconvLayer {
            config: config.clone(),
            geometry: g,
            backend,
            learning_rate_scale: T::one(),
            weights: Weights {
                data: alloc::zeros("weights", wc)?,
                version: 0,
            },
            biases: alloc::zeros("biases", n)?,
            bn: match config.batch_normalize {
                true => Some(BatchNorm::new(n, total, g.batch(), config.training)?),
                false => None,
            },
            output: alloc::zeros("output", total)?,
            workspace: alloc::zeros("workspace", workspace_len)?,
            plan,
            back,
            train,
            last_forward: None,
        })
    }

    /// A copy of the layer, or [`Error::Allocation`] where [`Clone::clone`] would abort the
    /// process: every buffer of the copy is reserved fallibly first, then filled.
    ///
    /// # Errors
    /// [`Error::Allocation`] when the copy's buffers do not fit; `self` is unchanged.
    pub fn try_clone(&self) -> Result<Self>
    where
        B: Clone,
    {
        let mut copy = Self::reserve(&self.config, self.geometry, self.backend.clone())?;
        copy.learning_rate_scale = self.learning_rate_scale;
        copy.weights.get_mut().copy_from_slice(&self.weights);
        copy.biases.copy_from_slice(&self.biases);
        if let (Some(to), Some(from)) = (&mut copy.bn, &self.bn) {
            to.copy_from(from);
        }
        copy.output.copy_from_slice(&self.output);
        if let (Some(to), Some(from)) = (&mut copy.train, &self.train) {
            to.gradients.copy_from_slice(&from.gradients);
            to.delta.copy_from_slice(&from.delta);
            if let (Some(to), Some(from)) = (&mut to.adam, &from.adam) {
                to.copy_from(from);
            }
        }
        copy.last_forward = self.last_forward;
        Ok(copy)
    }

    /// Bytes the layer's buffers hold now (parameters, gradients, outputs, workspace and
    /// per-thread state; the README's "Memory" section gives the formula).
    pub fn memory_bytes(&self) -> usize {
        memory::held_elements(self) * size_of::<T>()
    }

    /// Whether the layer holds gradient state ([`DeconvConfig::training`]).
    pub fn trains(&self) -> bool {
        self.train.is_some()
    }

    /// The training state, or [`Error::InvalidState`] naming `call`.
    fn training(&mut self, call: &str) -> Result<&mut Training<T>> {
        self.train.as_mut().ok_or_else(|| {
            Error::InvalidState(format!(
                "{call} needs gradient state: the layer was built with training(false)"
            ))
        })
    }

    /// The configuration the layer was built (or last resized) with.
    pub fn config(&self) -> &DeconvConfig {
        &self.config
    }
    /// The forward algorithm the layer uses ([`Algorithm::Columns`], [`Algorithm::Phases`] or
    /// [`Algorithm::Direct`]; [`Algorithm::Auto`] is resolved when the layer is built or
    /// resized).
    pub fn algorithm(&self) -> Algorithm {
        self.plan.algorithm()
    }
    /// The algorithm of the backward pass: the forward's, but where [`Algorithm::Auto`] gave
    /// the backward another one (it needs only the input, `delta` and the weights).
    pub fn backward_algorithm(&self) -> Algorithm {
        self.back.as_ref().unwrap_or(&self.plan).algorithm()
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
        memory::slot_size(&self.plan, self.back.as_ref(), &self.geometry)
    }
    /// Multiplier of the learning rate in [`update`](Self::update) (Darknet `learning_rate_scale`).
    pub fn learning_rate_scale(&self) -> T {
        self.learning_rate_scale
    }
    /// Sets the learning-rate multiplier.
    pub fn set_learning_rate_scale(&mut self, scale: T) {
        self.learning_rate_scale = scale;
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

    /// Biases, one per filter (Darknet `biases`; with batch norm, the shift after scaling).
    pub fn biases(&self) -> &[T] {
        &self.biases
    }
    /// Biases, one per filter (Darknet `biases`; with batch norm, the shift after scaling).
    pub fn biases_mut(&mut self) -> &mut [T] {
        &mut self.biases
    }
    /// Output of the last forward pass, `[batch][filters][out_h][out_w]` (Darknet `output`).
    pub fn output(&self) -> &[T] {
        &self.output
    }
    /// Output of the last forward pass, `[batch][filters][out_h][out_w]` (Darknet `output`).
    pub fn output_mut(&mut self) -> &mut [T] {
        &mut self.output
    }
    /// Gradient at the output, descent direction `-dLoss/dOutput`, to be filled before
    /// [`backward`](Self::backward) (Darknet `delta`).
    ///
    /// Empty in a layer built with [`training(false)`](DeconvConfig::training).
    pub fn delta(&self) -> &[T] {
        self.train.as_ref().map_or(&[][..], |t| &t.delta)
    }
    /// Gradient at the output, descent direction `-dLoss/dOutput`, to be filled before
    /// [`backward`](Self::backward) (Darknet `delta`).
    ///
    /// Empty in a layer built with [`training(false)`](DeconvConfig::training).
    pub fn delta_mut(&mut self) -> &mut [T] {
        self.train.as_mut().map_or(&mut [][..], |t| &mut t.delta)
    }

    gradient_buffers! {
        /// Accumulated weight gradient, descent direction (Darknet `weight_updates`).
        weight_updates / weight_updates_mut => 0;
        /// Accumulated bias gradient, descent direction (Darknet `bias_updates`).
        bias_updates / bias_updates_mut => 1;
    }

    /// Accumulated scale gradient, descent direction (Darknet `scale_updates`); `None` without
    /// batch norm, empty in a layer built with [`training(false)`](DeconvConfig::training).
    pub fn scale_updates(&self) -> Option<&[T]> {
        let (wc, n) = (self.geometry.weight_count(), self.geometry.filters());
        let scales = self.train.as_ref().map_or(&[][..], |t| t.split(wc, n).2);
        self.bn.as_ref().map(|_| scales)
    }
    /// Accumulated scale gradient, descent direction (Darknet `scale_updates`); `None` without
    /// batch norm, empty in a layer built with [`training(false)`](DeconvConfig::training).
    pub fn scale_updates_mut(&mut self) -> Option<&mut [T]> {
        let (wc, n) = (self.geometry.weight_count(), self.geometry.filters());
        let scales = self
            .train
            .as_mut()
            .map_or(&mut [][..], |t| t.split_mut(wc, n).2);
        self.bn.as_ref().map(|_| scales)
    }

    /// Every accumulated gradient in one contiguous buffer: the
    /// [`weight_updates`](Self::weight_updates), then the [`bias_updates`](Self::bias_updates),
    /// then (with batch norm) the [`scale_updates`](Self::scale_updates). One call can sum it
    /// across processes. Empty in a layer built with [`training(false)`](DeconvConfig::training).
    pub fn gradients(&self) -> &[T] {
        self.train.as_ref().map_or(&[][..], |t| &t.gradients)
    }
    /// Mutable [`gradients`](Self::gradients).
    pub fn gradients_mut(&mut self) -> &mut [T] {
        self.train
            .as_mut()
            .map_or(&mut [][..], |t| &mut t.gradients)
    }

    bn_buffers! {
        /// Batch-norm scales (Darknet `scales`).
        scales / scales_mut => scales;
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

    /// The output and the delta at once, to hand the delta to the next layer's backward while
    /// reading this layer's output.
    ///
    /// The delta is empty in a layer built with [`training(false)`](DeconvConfig::training).
    pub fn output_and_delta_mut(&mut self) -> (&[T], &mut [T]) {
        let delta = self.train.as_mut().map_or(&mut [][..], |t| &mut t.delta);
        (&self.output, delta)
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
