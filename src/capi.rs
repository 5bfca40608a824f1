//! The C ABI (cargo feature `capi`): an opaque `deconv_layer *` handle around a
//! `DeconvLayer<f32, AnyBackend>`, and plain functions on it. The header `include/deconv.h` is
//! generated from this file by `build.rs` (cbindgen); each function's doc comment below is its
//! comment in the header, including its safety contract.
//!
//! Conventions of every function:
//! - It returns a [`deconv_status`] (`DECONV_OK == 0` on success), except the three that cannot
//!   fail and return a static or thread-local string (`deconv_version`, `deconv_status_name`,
//!   `deconv_last_error`).
//! - On failure it stores a message for [`deconv_last_error`] (thread-local) and leaves the layer
//!   and every out-parameter as they were (except `deconv_layer_create`, which sets `*out` to
//!   `NULL`).
//! - A null pointer is `DECONV_ERR_NULL_POINTER`, except where a function says `NULL` is allowed.
//!   Every buffer is a pointer plus a length in elements, and a wrong length is
//!   `DECONV_ERR_BUFFER_LENGTH`. Buffers passed in must not overlap the layer's own buffers
//!   (checked: `DECONV_ERR_INVALID_PARAMETER`) nor each other where one is written.
//! - Nothing unwinds into C: each body runs under `catch_unwind`, and a panic (a bug) becomes
//!   `DECONV_ERR_PANIC`. A layer whose call panicked is "poisoned": every later call on it fails
//!   with `DECONV_ERR_INVALID_STATE` except `deconv_layer_free`. This needs the default
//!   `panic = "unwind"`; with `panic = "abort"` a panic aborts the process.
//! - A layer may be used from any thread, but from one thread at a time.
//! - `int` codes (activation, algorithm, mode, optimizer, backend, buffer) are checked; an
//!   unknown code is `DECONV_ERR_INVALID_PARAMETER`.

#![allow(non_camel_case_types)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::cell::RefCell;
use std::ffi::{CString, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use crate::activation::Activation;
use crate::backend::{AnyBackend, Gemm};
use crate::config::{Algorithm, DeconvConfig, InputShape};
use crate::darknet::{
    LoadOptions, WeightsHeader, layer_byte_len, load_weights, parse_deconvolutional, read_weights,
    save_weights, write_weights,
};
use crate::error::Error;
use crate::layer::{DeconvLayer, Mode, Optimizer, Params, UpdateArgs};

type Layer = DeconvLayer<f32, AnyBackend>;

/// Status returned by every function of the C API. `DECONV_OK` is 0; every other value is an
/// error whose message `deconv_last_error()` returns.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum deconv_status {
    /// Success.
    DECONV_OK = 0,
    /// A required pointer argument was `NULL`.
    DECONV_ERR_NULL_POINTER = 1,
    /// A parameter is invalid: a configuration value (zero size, padding that empties the
    /// output, ...), an unknown code, a backend not compiled in, overlapping or misaligned buffers.
    DECONV_ERR_INVALID_PARAMETER = 2,
    /// A buffer has the wrong number of elements.
    DECONV_ERR_BUFFER_LENGTH = 3,
    /// The call is not valid in the layer's state (backward without forward, a batch-norm
    /// buffer of a layer without batch norm, Adam without Adam buffers, a poisoned layer, ...).
    DECONV_ERR_INVALID_STATE = 4,
    /// A size computation overflowed.
    DECONV_ERR_OVERFLOW = 5,
    /// Inconsistent matrix shapes inside a GEMM (a bug).
    DECONV_ERR_GEMM_SHAPE = 6,
    /// Reading or writing a file failed.
    DECONV_ERR_IO = 7,
    /// A weights file is malformed (bad header, truncated, ...).
    DECONV_ERR_FORMAT = 8,
    /// A panic (a bug) was caught at the boundary; the layer involved is poisoned.
    DECONV_ERR_PANIC = 9,
    /// An error this version of the C API has no code for.
    DECONV_ERR_OTHER = 10,
    /// Memory for a buffer could not be reserved (the system refused it, or the size is beyond
    /// what may be asked for); the call had no effect and the layer is unchanged.
    DECONV_ERR_ALLOCATION = 11,
}

use deconv_status::*;

impl deconv_status {
    const ALL: [deconv_status; 12] = [
        DECONV_OK,
        DECONV_ERR_NULL_POINTER,
        DECONV_ERR_INVALID_PARAMETER,
        DECONV_ERR_BUFFER_LENGTH,
        DECONV_ERR_INVALID_STATE,
        DECONV_ERR_OVERFLOW,
        DECONV_ERR_GEMM_SHAPE,
        DECONV_ERR_IO,
        DECONV_ERR_FORMAT,
        DECONV_ERR_PANIC,
        DECONV_ERR_OTHER,
        DECONV_ERR_ALLOCATION,
    ];

    fn name(self) -> &'static std::ffi::CStr {
        match self {
            DECONV_OK => c"DECONV_OK",
            DECONV_ERR_NULL_POINTER => c"DECONV_ERR_NULL_POINTER",
            DECONV_ERR_INVALID_PARAMETER => c"DECONV_ERR_INVALID_PARAMETER",
            DECONV_ERR_BUFFER_LENGTH => c"DECONV_ERR_BUFFER_LENGTH",
            DECONV_ERR_INVALID_STATE => c"DECONV_ERR_INVALID_STATE",
            DECONV_ERR_OVERFLOW => c"DECONV_ERR_OVERFLOW",
            DECONV_ERR_GEMM_SHAPE => c"DECONV_ERR_GEMM_SHAPE",
            DECONV_ERR_IO => c"DECONV_ERR_IO",
            DECONV_ERR_FORMAT => c"DECONV_ERR_FORMAT",
            DECONV_ERR_PANIC => c"DECONV_ERR_PANIC",
            DECONV_ERR_OTHER => c"DECONV_ERR_OTHER",
            DECONV_ERR_ALLOCATION => c"DECONV_ERR_ALLOCATION",
        }
    }
}

/// Activation codes for `deconv_config.activation`, in Darknet's `ACTIVATION` order (the same
/// numbers as Darknet's enum).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum deconv_activation {
    /// `1 / (1 + e^-x)`.
    DECONV_ACTIVATION_LOGISTIC = 0,
    /// `max(x, 0)`.
    DECONV_ACTIVATION_RELU = 1,
    /// `x > 0 ? x : .01x`.
    DECONV_ACTIVATION_RELIE = 2,
    /// `x`.
    DECONV_ACTIVATION_LINEAR = 3,
    /// `x * (x > 0) + .1x`.
    DECONV_ACTIVATION_RAMP = 4,
    /// `tanh(x)`.
    DECONV_ACTIVATION_TANH = 5,
    /// Piecewise-linear logistic.
    DECONV_ACTIVATION_PLSE = 6,
    /// `x > 0 ? x : .1x`.
    DECONV_ACTIVATION_LEAKY = 7,
    /// `x >= 0 ? x : e^x - 1`.
    DECONV_ACTIVATION_ELU = 8,
    /// `2 / (1 + e^-x) - 1`.
    DECONV_ACTIVATION_LOGGY = 9,
    /// Darknet's stair.
    DECONV_ACTIVATION_STAIR = 10,
    /// `clamp(x, -1, 1)`.
    DECONV_ACTIVATION_HARDTAN = 11,
    /// Leaky hard tanh.
    DECONV_ACTIVATION_LHTAN = 12,
    /// SELU with Darknet's constants.
    DECONV_ACTIVATION_SELU = 13,
}

/// Mode codes of `deconv_layer_forward`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum deconv_mode {
    /// Training: batch norm uses and updates batch statistics; a backward pass may follow.
    DECONV_MODE_TRAIN = 0,
    /// Inference: batch norm uses the rolling statistics.
    DECONV_MODE_INFERENCE = 1,
}

/// Optimizer codes for `deconv_update_args.optimizer`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum deconv_optimizer {
    /// SGD with momentum and decay (Darknet's `update_deconvolutional_layer`).
    DECONV_OPTIMIZER_SGD = 0,
    /// Adam with bias correction; needs a layer created with `adam != 0`.
    DECONV_OPTIMIZER_ADAM = 1,
}

/// GEMM backend codes of `deconv_layer_create`. Only compiled-in backends can be chosen (see
/// `deconv_backend_compiled`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum deconv_backend {
    /// The build's default: OpenBLAS when compiled in, else matrixmultiply.
    DECONV_BACKEND_DEFAULT = 0,
    /// Pure-Rust matrixmultiply (cargo feature `matrixmultiply`, on by default).
    DECONV_BACKEND_MATRIXMULTIPLY = 1,
    /// The system OpenBLAS (cargo feature `openblas`; link with `-lopenblas`).
    DECONV_BACKEND_OPENBLAS = 2,
}

/// Forward-algorithm codes for `deconv_config.algorithm`. Every algorithm gives the same results
/// (to rounding).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum deconv_algorithm {
    /// Pick per geometry (the default).
    DECONV_ALGORITHM_AUTO = 0,
    /// Darknet's way: one GEMM into a column matrix, then col2im.
    DECONV_ALGORITHM_COLUMNS = 1,
    /// Sub-pixel decomposition, one GEMM per output phase, no col2im; needs dilation 1.
    DECONV_ALGORITHM_PHASES = 2,
}

impl deconv_algorithm {
    const ALL: [(deconv_algorithm, Algorithm); 3] = [
        (deconv_algorithm::DECONV_ALGORITHM_AUTO, Algorithm::Auto),
        (
            deconv_algorithm::DECONV_ALGORITHM_COLUMNS,
            Algorithm::Columns,
        ),
        (deconv_algorithm::DECONV_ALGORITHM_PHASES, Algorithm::Phases),
    ];

    fn to_rust(code: c_int) -> Res<Algorithm> {
        Self::ALL
            .into_iter()
            .find(|(c, _)| *c as c_int == code)
            .map(|(_, a)| a)
            .ok_or_else(|| Fail::code("algorithm", code))
    }

    fn from_rust(algorithm: Algorithm) -> c_int {
        Self::ALL
            .into_iter()
            .find(|(_, a)| *a == algorithm)
            .map_or(deconv_algorithm::DECONV_ALGORITHM_AUTO, |(c, _)| c) as c_int
    }
}

/// Codes of the layer's buffers, for `deconv_layer_buffer`, `deconv_layer_buffer_mut`,
/// `deconv_layer_get` and `deconv_layer_set`. Lengths are in `deconv_geometry`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum deconv_buffer {
    /// Weights `[in_channels][filters / groups][kh][kw]`, `weight_count` elements.
    DECONV_BUFFER_WEIGHTS = 0,
    /// Accumulated weight gradient (descent direction), `weight_count` elements.
    DECONV_BUFFER_WEIGHT_UPDATES = 1,
    /// Biases, `filters` elements.
    DECONV_BUFFER_BIASES = 2,
    /// Accumulated bias gradient, `filters` elements.
    DECONV_BUFFER_BIAS_UPDATES = 3,
    /// Batch-norm scales, `filters` elements (batch norm only).
    DECONV_BUFFER_SCALES = 4,
    /// Accumulated scale gradient, `filters` elements (batch norm only).
    DECONV_BUFFER_SCALE_UPDATES = 5,
    /// Rolling mean, `filters` elements (batch norm only).
    DECONV_BUFFER_ROLLING_MEAN = 6,
    /// Rolling (unbiased) variance, `filters` elements (batch norm only).
    DECONV_BUFFER_ROLLING_VARIANCE = 7,
    /// Mean of the last training batch, `filters` elements (batch norm only).
    DECONV_BUFFER_BATCH_MEAN = 8,
    /// Variance of the last training batch, `filters` elements (batch norm only).
    DECONV_BUFFER_BATCH_VARIANCE = 9,
    /// Normalized pre-activation output of the last training forward, `output_len` elements
    /// (batch norm only).
    DECONV_BUFFER_X_NORM = 10,
    /// Output of the last forward pass `[batch][filters][out_h][out_w]`, `output_len` elements.
    DECONV_BUFFER_OUTPUT = 11,
    /// Gradient at the output, descent direction `-dLoss/dOutput`, `output_len` elements; fill it
    /// before `deconv_layer_backward`.
    DECONV_BUFFER_DELTA = 12,
    /// Adam's first moment of the weights (Adam only).
    DECONV_BUFFER_ADAM_WEIGHTS_M = 13,
    /// Adam's second moment of the weights (Adam only).
    DECONV_BUFFER_ADAM_WEIGHTS_V = 14,
    /// Adam's first moment of the biases (Adam only).
    DECONV_BUFFER_ADAM_BIASES_M = 15,
    /// Adam's second moment of the biases (Adam only).
    DECONV_BUFFER_ADAM_BIASES_V = 16,
    /// Adam's first moment of the scales (Adam only; 0 elements without batch norm).
    DECONV_BUFFER_ADAM_SCALES_M = 17,
    /// Adam's second moment of the scales (Adam only; 0 elements without batch norm).
    DECONV_BUFFER_ADAM_SCALES_V = 18,
}

use deconv_buffer::*;

impl deconv_buffer {
    const ALL: [deconv_buffer; 19] = [
        DECONV_BUFFER_WEIGHTS,
        DECONV_BUFFER_WEIGHT_UPDATES,
        DECONV_BUFFER_BIASES,
        DECONV_BUFFER_BIAS_UPDATES,
        DECONV_BUFFER_SCALES,
        DECONV_BUFFER_SCALE_UPDATES,
        DECONV_BUFFER_ROLLING_MEAN,
        DECONV_BUFFER_ROLLING_VARIANCE,
        DECONV_BUFFER_BATCH_MEAN,
        DECONV_BUFFER_BATCH_VARIANCE,
        DECONV_BUFFER_X_NORM,
        DECONV_BUFFER_OUTPUT,
        DECONV_BUFFER_DELTA,
        DECONV_BUFFER_ADAM_WEIGHTS_M,
        DECONV_BUFFER_ADAM_WEIGHTS_V,
        DECONV_BUFFER_ADAM_BIASES_M,
        DECONV_BUFFER_ADAM_BIASES_V,
        DECONV_BUFFER_ADAM_SCALES_M,
        DECONV_BUFFER_ADAM_SCALES_V,
    ];

    fn from_code(code: c_int) -> Res<Self> {
        Self::ALL
            .into_iter()
            .find(|b| *b as c_int == code)
            .ok_or_else(|| Fail::code("buffer", code))
    }

    fn name(self) -> &'static str {
        match self {
            DECONV_BUFFER_WEIGHTS => "weights",
            DECONV_BUFFER_WEIGHT_UPDATES => "weight_updates",
            DECONV_BUFFER_BIASES => "biases",
            DECONV_BUFFER_BIAS_UPDATES => "bias_updates",
            DECONV_BUFFER_SCALES => "scales",
            DECONV_BUFFER_SCALE_UPDATES => "scale_updates",
            DECONV_BUFFER_ROLLING_MEAN => "rolling_mean",
            DECONV_BUFFER_ROLLING_VARIANCE => "rolling_variance",
            DECONV_BUFFER_BATCH_MEAN => "batch_mean",
            DECONV_BUFFER_BATCH_VARIANCE => "batch_variance",
            DECONV_BUFFER_X_NORM => "x_norm",
            DECONV_BUFFER_OUTPUT => "output",
            DECONV_BUFFER_DELTA => "delta",
            DECONV_BUFFER_ADAM_WEIGHTS_M => "adam_weights_m",
            DECONV_BUFFER_ADAM_WEIGHTS_V => "adam_weights_v",
            DECONV_BUFFER_ADAM_BIASES_M => "adam_biases_m",
            DECONV_BUFFER_ADAM_BIASES_V => "adam_biases_v",
            DECONV_BUFFER_ADAM_SCALES_M => "adam_scales_m",
            DECONV_BUFFER_ADAM_SCALES_V => "adam_scales_v",
        }
    }

    fn adam(self) -> Option<(Params, bool)> {
        match self {
            DECONV_BUFFER_ADAM_WEIGHTS_M => Some((Params::Weights, false)),
            DECONV_BUFFER_ADAM_WEIGHTS_V => Some((Params::Weights, true)),
            DECONV_BUFFER_ADAM_BIASES_M => Some((Params::Biases, false)),
            DECONV_BUFFER_ADAM_BIASES_V => Some((Params::Biases, true)),
            DECONV_BUFFER_ADAM_SCALES_M => Some((Params::Scales, false)),
            DECONV_BUFFER_ADAM_SCALES_V => Some((Params::Scales, true)),
            _ => None,
        }
    }

    /// The buffer of `layer`, or why it has none.
    fn get(self, layer: &Layer) -> Res<&[f32]> {
        let found = match self {
            DECONV_BUFFER_WEIGHTS => Some(layer.weights()),
            DECONV_BUFFER_WEIGHT_UPDATES => Some(layer.weight_updates()),
            DECONV_BUFFER_BIASES => Some(layer.biases()),
            DECONV_BUFFER_BIAS_UPDATES => Some(layer.bias_updates()),
            DECONV_BUFFER_SCALES => layer.scales(),
            DECONV_BUFFER_SCALE_UPDATES => layer.scale_updates(),
            DECONV_BUFFER_ROLLING_MEAN => layer.rolling_mean(),
            DECONV_BUFFER_ROLLING_VARIANCE => layer.rolling_variance(),
            DECONV_BUFFER_BATCH_MEAN => layer.batch_mean(),
            DECONV_BUFFER_BATCH_VARIANCE => layer.batch_variance(),
            DECONV_BUFFER_X_NORM => layer.x_norm(),
            DECONV_BUFFER_OUTPUT => Some(layer.output()),
            DECONV_BUFFER_DELTA => Some(layer.delta()),
            adam => {
                let (params, second) = adam.adam().expect("the other buffers are Adam's");
                layer
                    .adam_moments(params)
                    .map(|(m, v)| if second { v } else { m })
            }
        };
        found.ok_or_else(|| self.missing())
    }

    /// The buffer of `layer`, writable, or why it has none.
    fn get_mut(self, layer: &mut Layer) -> Res<&mut [f32]> {
        let found = match self {
            DECONV_BUFFER_WEIGHTS => Some(layer.weights_mut()),
            DECONV_BUFFER_WEIGHT_UPDATES => Some(layer.weight_updates_mut()),
            DECONV_BUFFER_BIASES => Some(layer.biases_mut()),
            DECONV_BUFFER_BIAS_UPDATES => Some(layer.bias_updates_mut()),
            DECONV_BUFFER_SCALES => layer.scales_mut(),
            DECONV_BUFFER_SCALE_UPDATES => layer.scale_updates_mut(),
            DECONV_BUFFER_ROLLING_MEAN => layer.rolling_mean_mut(),
            DECONV_BUFFER_ROLLING_VARIANCE => layer.rolling_variance_mut(),
            DECONV_BUFFER_BATCH_MEAN => layer.batch_mean_mut(),
            DECONV_BUFFER_BATCH_VARIANCE => layer.batch_variance_mut(),
            DECONV_BUFFER_X_NORM => layer.x_norm_mut(),
            DECONV_BUFFER_OUTPUT => Some(layer.output_mut()),
            DECONV_BUFFER_DELTA => Some(layer.delta_mut()),
            adam => {
                let (params, second) = adam.adam().expect("the other buffers are Adam's");
                layer
                    .adam_moments_mut(params)
                    .map(|(m, v)| if second { v } else { m })
            }
        };
        found.ok_or_else(|| self.missing())
    }

    fn missing(self) -> Fail {
        let needs = if self.adam().is_some() {
            "a layer created with adam != 0"
        } else {
            "a layer with batch normalization"
        };
        Fail::state(format!("buffer `{}` exists only in {needs}", self.name()))
    }
}

/// The configuration of a layer, as `DeconvConfig` in Rust. Fill it with
/// `deconv_config_default()` and change fields; pairs are `[height, width]`.
///
/// Output size per axis:
/// `out = (in - 1) * stride - 2 * pad + dilation * (kernel - 1) + output_padding + 1`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct deconv_config {
    /// Images per batch (Darknet `batch`).
    pub batch: usize,
    /// Input channels (Darknet `c`).
    pub in_channels: usize,
    /// Input height (Darknet `h`).
    pub in_h: usize,
    /// Input width (Darknet `w`).
    pub in_w: usize,
    /// Output channels (Darknet `n`, `filters`).
    pub filters: usize,
    /// Kernel size `[kh, kw]` (Darknet `size`).
    pub kernel: [usize; 2],
    /// Stride `[sh, sw]` (default 1).
    pub stride: [usize; 2],
    /// Padding removed from each side of the output `[ph, pw]` (default 0).
    pub pad: [usize; 2],
    /// Kernel dilation `[dh, dw]` (default 1).
    pub dilation: [usize; 2],
    /// Extra rows/columns on one side of the output `[oh, ow]` (default 0); each must be
    /// smaller than the stride or the dilation on its axis.
    pub output_padding: [usize; 2],
    /// Channel groups (default 1); both channel counts must be multiples of it.
    pub groups: usize,
    /// A `deconv_activation` code (default `DECONV_ACTIVATION_LINEAR`).
    pub activation: c_int,
    /// Non-zero: batch normalization instead of a plain bias (default 0).
    pub batch_normalize: c_int,
    /// Non-zero: allocate Adam's buffers so `DECONV_OPTIMIZER_ADAM` can be used (default 0).
    pub adam: c_int,
    /// Non-zero (default): the layer owns a workspace. With 0, use the `_with_workspace`
    /// variants of forward and backward.
    pub own_workspace: c_int,
    /// A `deconv_algorithm` code (default `DECONV_ALGORITHM_AUTO`).
    pub algorithm: c_int,
    /// Seed of the weight initialization (default 0).
    pub seed: u64,
}

impl deconv_config {
    fn from_rust(c: &DeconvConfig) -> Self {
        deconv_config {
            batch: c.batch,
            in_channels: c.in_channels,
            in_h: c.in_h,
            in_w: c.in_w,
            filters: c.filters,
            kernel: c.kernel,
            stride: c.stride,
            pad: c.pad,
            dilation: c.dilation,
            output_padding: c.output_padding,
            groups: c.groups,
            activation: c.activation as c_int,
            batch_normalize: c.batch_normalize.into(),
            adam: c.adam.into(),
            own_workspace: c.own_workspace.into(),
            algorithm: deconv_algorithm::from_rust(c.algorithm),
            seed: c.seed,
        }
    }

    fn to_rust(self) -> Res<DeconvConfig> {
        let activation = usize::try_from(self.activation)
            .ok()
            .and_then(|i| Activation::ALL.get(i).copied())
            .ok_or_else(|| Fail::code("activation", self.activation))?;
        let mut c = DeconvConfig::new(
            self.batch,
            self.in_channels,
            self.in_h,
            self.in_w,
            self.filters,
            1,
        );
        c.kernel = self.kernel;
        c.stride = self.stride;
        c.pad = self.pad;
        c.dilation = self.dilation;
        c.output_padding = self.output_padding;
        c.groups = self.groups;
        c.activation = activation;
        c.batch_normalize = self.batch_normalize != 0;
        c.adam = self.adam != 0;
        c.own_workspace = self.own_workspace != 0;
        c.algorithm = deconv_algorithm::to_rust(self.algorithm)?;
        c.seed = self.seed;
        Ok(c)
    }
}

/// The sizes of a layer (all in elements), from `deconv_layer_geometry`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct deconv_geometry {
    /// Images per batch.
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Output channels (filters).
    pub filters: usize,
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
    /// Channel groups.
    pub groups: usize,
    /// Elements of one input image, `in_channels * in_h * in_w` (Darknet `inputs`).
    pub inputs: usize,
    /// Elements of one output image, `filters * out_h * out_w` (Darknet `outputs`).
    pub outputs: usize,
    /// Length of the input and input-delta buffers: `batch * inputs`.
    pub input_len: usize,
    /// Length of the output, delta and x_norm buffers: `batch * outputs`.
    pub output_len: usize,
    /// Length of the weight buffers: `in_channels * (filters / groups) * kh * kw`.
    pub weight_count: usize,
    /// Minimum length of a workspace passed to the `_with_workspace` functions (one image's; a
    /// multiple of it lets the layer process that many images at once on its threads).
    pub workspace_size: usize,
}

/// Arguments of `deconv_layer_update`; fill with `deconv_update_args_sgd()` or
/// `deconv_update_args_adam()`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct deconv_update_args {
    /// Learning rate (multiplied by the layer's learning-rate scale, default 1).
    pub learning_rate: f32,
    /// Momentum (SGD only).
    pub momentum: f32,
    /// Weight decay (weights only).
    pub decay: f32,
    /// Images the accumulated gradients are summed over (Darknet `batch * subdivisions`), >= 1.
    pub batch: usize,
    /// A `deconv_optimizer` code.
    pub optimizer: c_int,
    /// Adam's first-moment decay (Darknet `B1`, default .9).
    pub beta1: f32,
    /// Adam's second-moment decay (Darknet `B2`, default .999).
    pub beta2: f32,
    /// Adam's epsilon (Darknet `eps`, default 1e-7).
    pub epsilon: f32,
}

impl deconv_update_args {
    fn to_rust(self) -> Res<UpdateArgs<f32>> {
        let optimizer = match self.optimizer {
            c if c == deconv_optimizer::DECONV_OPTIMIZER_SGD as c_int => Optimizer::Sgd,
            c if c == deconv_optimizer::DECONV_OPTIMIZER_ADAM as c_int => Optimizer::Adam {
                beta1: self.beta1,
                beta2: self.beta2,
                epsilon: self.epsilon,
            },
            c => return Err(Fail::code("optimizer", c)),
        };
        Ok(UpdateArgs {
            learning_rate: self.learning_rate,
            momentum: self.momentum,
            decay: self.decay,
            batch: self.batch,
            optimizer,
        })
    }
}

/// An opaque layer: `DeconvLayer<f32, AnyBackend>`. Create with `deconv_layer_create`, free
/// with `deconv_layer_free`.
pub struct deconv_layer {
    layer: Layer,
    /// Set when a call on this layer panicked: its state may be inconsistent.
    poisoned: bool,
}

// ---------------------------------------------------------------------------------------------
// Plumbing: errors, panics, pointers.

/// Why a call failed: its status and message.
#[derive(Debug)]
struct Fail {
    status: deconv_status,
    message: String,
}

type Res<T> = std::result::Result<T, Fail>;

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail {
            status: status_of(&e),
            message: e.to_string(),
        }
    }
}

impl Fail {
    fn null(arg: &str) -> Self {
        Fail {
            status: DECONV_ERR_NULL_POINTER,
            message: format!("`{arg}` is NULL"),
        }
    }
    fn param(message: String) -> Self {
        Fail {
            status: DECONV_ERR_INVALID_PARAMETER,
            message,
        }
    }
    fn code(what: &str, code: c_int) -> Self {
        Fail::param(format!("unknown {what} code {code}"))
    }
    fn state(message: String) -> Self {
        Fail {
            status: DECONV_ERR_INVALID_STATE,
            message,
        }
    }
}

/// The status of a crate error.
fn status_of(e: &Error) -> deconv_status {
    #[allow(unreachable_patterns)] // `Error` may grow variants this module does not know yet.
    match e {
        Error::InvalidParameter { .. } => DECONV_ERR_INVALID_PARAMETER,
        Error::Overflow { .. } => DECONV_ERR_OVERFLOW,
        Error::Allocation { .. } => DECONV_ERR_ALLOCATION,
        Error::BufferLength { .. } => DECONV_ERR_BUFFER_LENGTH,
        Error::GemmShape(_) => DECONV_ERR_GEMM_SHAPE,
        Error::InvalidState(_) => DECONV_ERR_INVALID_STATE,
        Error::Io { .. } => DECONV_ERR_IO,
        Error::Cfg { .. }
        | Error::Truncated { .. }
        | Error::TrailingBytes { .. }
        | Error::NonFinite { .. } => DECONV_ERR_FORMAT,
        _ => DECONV_ERR_OTHER,
    }
}

thread_local! {
    /// The message of the last failed call on this thread.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: String) {
    let message = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Runs the body of the C function `func`, turning an error or a panic into a status and a
/// message for `deconv_last_error`.
fn run(func: &str, body: impl FnOnce() -> Res<()>) -> deconv_status {
    let fail = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return DECONV_OK,
        Ok(Err(fail)) => fail,
        Err(payload) => Fail {
            status: DECONV_ERR_PANIC,
            message: format!(
                "panic (a bug in deconv, please report it): {}",
                panic_message(&*payload)
            ),
        },
    };
    set_last_error(format!("{func}: {}", fail.message));
    fail.status
}

/// Runs `body` on a layer handle, marking the handle poisoned if `body` panics.
fn on_handle<H, R>(
    handle: &mut H,
    poisoned: impl Fn(&mut H) -> &mut bool,
    body: impl FnOnce(&mut H) -> Res<R>,
) -> Res<R> {
    if *poisoned(handle) {
        return Err(Fail::state(
            "an earlier call on this layer panicked; only deconv_layer_free is allowed".into(),
        ));
    }
    let guarded = || {
        #[cfg(test)]
        tests::maybe_panic();
        body(handle)
    };
    match catch_unwind(AssertUnwindSafe(guarded)) {
        Ok(result) => result,
        Err(payload) => {
            *poisoned(handle) = true;
            resume_unwind(payload)
        }
    }
}

/// A layer pointer its caller vouched for.
struct Vouched<P>(P);

impl<P> Vouched<P> {
    /// # Safety
    /// `ptr` is `NULL` or a live handle from `deconv_layer_create`/`deconv_layer_clone`, not
    /// used by another thread (nor freed) during the call it is passed to.
    unsafe fn new(ptr: P) -> Self {
        Vouched(ptr)
    }
}

/// [`run`] with the layer behind `layer` borrowed mutably.
fn with_layer(
    func: &str,
    layer: Vouched<*mut deconv_layer>,
    body: impl FnOnce(&mut Layer) -> Res<()>,
) -> deconv_status {
    run(func, || {
        // SAFETY: `Vouched`: null or valid, and not aliased during the call.
        let handle = unsafe { layer.0.as_mut() }.ok_or_else(|| Fail::null("layer"))?;
        on_handle(handle, |h| &mut h.poisoned, |h| body(&mut h.layer))
    })
}

/// [`run`] with the layer behind `layer` borrowed shared.
fn with_layer_ref(
    func: &str,
    layer: Vouched<*const deconv_layer>,
    body: impl FnOnce(&Layer) -> Res<()>,
) -> deconv_status {
    run(func, || {
        // SAFETY: `Vouched`: null or valid, and not written during the call.
        let handle = unsafe { layer.0.as_ref() }.ok_or_else(|| Fail::null("layer"))?;
        if handle.poisoned {
            return Err(Fail::state(
                "an earlier call on this layer panicked; only deconv_layer_free is allowed".into(),
            ));
        }
        #[cfg(test)]
        tests::maybe_panic();
        body(&handle.layer)
    })
}

/// Checks an out-parameter: not null, aligned.
fn check_out<T>(name: &str, ptr: *mut T) -> Res<()> {
    if ptr.is_null() {
        Err(Fail::null(name))
    } else if !ptr.is_aligned() {
        Err(Fail::param(format!("`{name}` is misaligned")))
    } else {
        Ok(())
    }
}

/// Checks a buffer argument of `len` floats at `ptr` against the `expected` length (exactly,
/// or at least with `at_least`), and that it overlaps none of `others`.
fn check_buffer(
    name: &'static str,
    ptr: *const f32,
    len: usize,
    expected: usize,
    at_least: bool,
    others: &[Range],
) -> Res<()> {
    if ptr.is_null() {
        return Err(Fail::null(name));
    }
    if !ptr.is_aligned() {
        return Err(Fail::param(format!("`{name}` is not aligned for float")));
    }
    if len != expected && !(at_least && len > expected) {
        return Err(Error::BufferLength {
            buffer: name,
            expected,
            found: len,
        }
        .into());
    }
    if len > isize::MAX as usize / size_of::<f32>() {
        return Err(Error::Overflow {
            what: "buffer size in bytes",
        }
        .into());
    }
    let start = ptr as usize;
    let end = start + len * size_of::<f32>();
    for &(other, p, n) in others {
        let (s, e) = (p as usize, p as usize + n * size_of::<f32>());
        if start < e && s < end {
            return Err(Fail::param(format!(
                "`{name}` overlaps {other}; pass a separate buffer"
            )));
        }
    }
    Ok(())
}

/// Checks a byte buffer argument: not null, `len` bytes (exactly `expected` if given), and
/// overlapping none of `others` (float buffers).
fn check_bytes(
    name: &'static str,
    ptr: *const u8,
    len: usize,
    expected: Option<usize>,
    others: &[Range],
) -> Res<()> {
    if ptr.is_null() {
        return Err(Fail::null(name));
    }
    if let Some(expected) = expected.filter(|e| *e != len) {
        return Err(Error::BufferLength {
            buffer: name,
            expected,
            found: len,
        }
        .into());
    }
    if len > isize::MAX as usize {
        return Err(Error::Overflow {
            what: "buffer size in bytes",
        }
        .into());
    }
    let (start, end) = (ptr as usize, ptr as usize + len);
    for &(other, p, n) in others {
        let (s, e) = (p as usize, p as usize + n * size_of::<f32>());
        if start < e && s < end {
            return Err(Fail::param(format!(
                "`{name}` overlaps {other}; pass a separate buffer"
            )));
        }
    }
    Ok(())
}

/// A NUL-terminated C string argument as a path.
///
/// # Safety
/// `ptr` is `NULL` or points to a NUL-terminated string that stays unchanged during the call.
unsafe fn path_arg<'a>(name: &str, ptr: *const c_char) -> Res<&'a std::path::Path> {
    if ptr.is_null() {
        return Err(Fail::null(name));
    }
    // SAFETY: non-null and NUL-terminated by this function's contract.
    let bytes = unsafe { std::ffi::CStr::from_ptr(ptr) }.to_bytes();
    #[cfg(unix)]
    let path = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(bytes);
    #[cfg(not(unix))]
    let path = std::str::from_utf8(bytes)
        .map_err(|_| Fail::param(format!("`{name}` is not valid UTF-8")))?;
    Ok(std::path::Path::new(path))
}

/// A buffer's name, start and length in floats, for the overlap checks.
type Range = (&'static str, *const f32, usize);

/// Address ranges for the overlap checks, without allocating (forward and backward do not
/// allocate, through the C API either): the layer's buffers plus at most three arguments.
struct Ranges {
    items: [Range; deconv_buffer::ALL.len() + 3],
    len: usize,
}

impl Ranges {
    /// Every buffer of `layer`.
    fn of(layer: &Layer) -> Self {
        let mut r = Ranges {
            items: [("", std::ptr::null(), 0); deconv_buffer::ALL.len() + 3],
            len: 0,
        };
        for b in deconv_buffer::ALL {
            if let Ok(s) = b.get(layer) {
                r.push((b.name(), s.as_ptr(), s.len()));
            }
        }
        r
    }

    fn push(&mut self, range: Range) {
        self.items[self.len] = range;
        self.len += 1;
    }
}

impl std::ops::Deref for Ranges {
    type Target = [Range];
    fn deref(&self) -> &[Range] {
        &self.items[..self.len]
    }
}

fn mode_from_code(mode: c_int) -> Res<Mode> {
    match mode {
        m if m == deconv_mode::DECONV_MODE_TRAIN as c_int => Ok(Mode::Train),
        m if m == deconv_mode::DECONV_MODE_INFERENCE as c_int => Ok(Mode::Inference),
        m => Err(Fail::code("mode", m)),
    }
}

fn backend_from_code(code: c_int) -> Res<AnyBackend> {
    use deconv_backend::*;
    let name = match code {
        c if c == DECONV_BACKEND_DEFAULT as c_int => return Ok(AnyBackend::default()),
        c if c == DECONV_BACKEND_MATRIXMULTIPLY as c_int => "matrixmultiply",
        c if c == DECONV_BACKEND_OPENBLAS as c_int => "openblas",
        c => return Err(Fail::code("backend", c)),
    };
    Ok(AnyBackend::from_name(name)?)
}

fn backend_code(backend: &AnyBackend) -> deconv_backend {
    match Gemm::<f32>::name(backend) {
        "openblas" => deconv_backend::DECONV_BACKEND_OPENBLAS,
        _ => deconv_backend::DECONV_BACKEND_MATRIXMULTIPLY,
    }
}

// ---------------------------------------------------------------------------------------------
// Library-wide functions.

/// The library's version, e.g. `"0.1.0"`: a static string, never `NULL`.
#[unsafe(no_mangle)]
pub extern "C" fn deconv_version() -> *const c_char {
    const VERSION: &std::ffi::CStr = match std::ffi::CStr::from_bytes_with_nul(
        concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes(),
    ) {
        Ok(v) => v,
        Err(_) => c"?",
    };
    VERSION.as_ptr()
}

/// The name of a status code (`"DECONV_ERR_BUFFER_LENGTH"`, ...), or `"unknown status"`: a
/// static string, never `NULL`.
#[unsafe(no_mangle)]
pub extern "C" fn deconv_status_name(status: c_int) -> *const c_char {
    deconv_status::ALL
        .into_iter()
        .find(|s| *s as c_int == status)
        .map_or(c"unknown status", deconv_status::name)
        .as_ptr()
}

/// The message of the last failed call on the calling thread (`"function: reason"`), or `""`
/// when none has failed. Never `NULL`. Successful calls do not clear it.
///
/// Lifetime: the string is owned by the library and stays valid until the next failing
/// `deconv_*` call on the same thread, or until the thread exits; copy it to keep it. Do not
/// free it.
#[unsafe(no_mangle)]
pub extern "C" fn deconv_last_error() -> *const c_char {
    // The CString's heap buffer does not move when the RefCell is borrowed again; it is
    // replaced (freed) only by the next `set_last_error` on this thread.
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Sets `*compiled` to 1 if `backend` (a `deconv_backend` code) is compiled into this build, else
/// 0. `DECONV_BACKEND_DEFAULT` is always compiled in.
///
/// # Safety
/// `compiled` must be `NULL` (an error) or valid for writing an `int`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_backend_compiled(
    backend: c_int,
    compiled: *mut c_int,
) -> deconv_status {
    run("deconv_backend_compiled", || {
        check_out("compiled", compiled)?;
        let known = [0, 1, 2].contains(&backend);
        if !known {
            return Err(Fail::code("backend", backend));
        }
        let yes = backend_from_code(backend).is_ok();
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { compiled.write(yes.into()) };
        Ok(())
    })
}

/// Sets `*config` to the defaults for a square `kernel`: stride 1, pad 0, dilation 1, no output
/// padding, 1 group, `DECONV_ACTIVATION_LINEAR`, no batch norm, no Adam, own workspace,
/// `DECONV_ALGORITHM_AUTO`, seed 0.
/// The values are not validated here but by `deconv_layer_create`.
///
/// # Safety
/// `config` must be `NULL` (an error) or valid for writing a `deconv_config` (it may be
/// uninitialized).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_config_default(
    config: *mut deconv_config,
    batch: usize,
    in_channels: usize,
    in_h: usize,
    in_w: usize,
    filters: usize,
    kernel: usize,
) -> deconv_status {
    run("deconv_config_default", || {
        check_out("config", config)?;
        let c = DeconvConfig::new(batch, in_channels, in_h, in_w, filters, kernel);
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { config.write(deconv_config::from_rust(&c)) };
        Ok(())
    })
}

/// Sets `*args` to SGD arguments (Darknet's `update_args`): `learning_rate`, `momentum`,
/// `decay`, `batch`; the Adam fields get Darknet's defaults (.9, .999, 1e-7).
///
/// # Safety
/// `args` must be `NULL` (an error) or valid for writing a `deconv_update_args`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_update_args_sgd(
    args: *mut deconv_update_args,
    learning_rate: f32,
    momentum: f32,
    decay: f32,
    batch: usize,
) -> deconv_status {
    run("deconv_update_args_sgd", || {
        check_out("args", args)?;
        let value = deconv_update_args {
            learning_rate,
            momentum,
            decay,
            batch,
            optimizer: deconv_optimizer::DECONV_OPTIMIZER_SGD as c_int,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-7,
        };
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { args.write(value) };
        Ok(())
    })
}

/// Sets `*args` to Adam arguments with Darknet's defaults (`beta1` .9, `beta2` .999, `epsilon`
/// 1e-7; momentum 0, unused by Adam). The layer must have been created with `adam != 0`.
///
/// # Safety
/// `args` must be `NULL` (an error) or valid for writing a `deconv_update_args`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_update_args_adam(
    args: *mut deconv_update_args,
    learning_rate: f32,
    decay: f32,
    batch: usize,
) -> deconv_status {
    run("deconv_update_args_adam", || {
        check_out("args", args)?;
        let value = deconv_update_args {
            learning_rate,
            momentum: 0.0,
            decay,
            batch,
            optimizer: deconv_optimizer::DECONV_OPTIMIZER_ADAM as c_int,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-7,
        };
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { args.write(value) };
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Creating and freeing layers.

/// Creates a layer from `*config` on `backend` (a `deconv_backend` code) and stores the handle
/// in `*out` (`NULL` on failure). Weights are drawn from `N(0, .02)` with `config->seed`, scaled
/// by `out_h*out_w / (h*w)` as Darknet does; biases are 0, batch-norm scales 1.
///
/// Errors: `DECONV_ERR_INVALID_PARAMETER` naming the parameter for an invalid configuration, an
/// unknown activation or backend code, or a backend not compiled in; `DECONV_ERR_OVERFLOW` when
/// a buffer size overflows.
///
/// # Safety
/// `config` must be `NULL` or point to a readable `deconv_config`; `out` must be `NULL` or valid
/// for writing a pointer. A `NULL` in either is an error. Free the layer with `deconv_layer_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_create(
    config: *const deconv_config,
    backend: c_int,
    out: *mut *mut deconv_layer,
) -> deconv_status {
    run("deconv_layer_create", || {
        check_out("out", out)?;
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { out.write(std::ptr::null_mut()) };
        check_out("config", config.cast_mut())?;
        // SAFETY: checked non-null and aligned; the caller guarantees it is readable. The
        // struct is plain data (integers) so any bit pattern is a valid value.
        let config = unsafe { config.read() }.to_rust()?;
        let backend = backend_from_code(backend)?;
        let layer = Layer::with_backend(&config, backend)?;
        let handle = Box::into_raw(Box::new(deconv_layer {
            layer,
            poisoned: false,
        }));
        // SAFETY: as above.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Creates an independent copy of `layer` (parameters, buffers, optimizer state) in `*out`;
/// `DECONV_ERR_ALLOCATION` when the copy does not fit in memory.
///
/// # Safety
/// `layer` must be `NULL` or a live handle; `out` must be `NULL` or valid for writing a pointer.
/// A `NULL` in either is an error.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_clone(
    layer: *const deconv_layer,
    out: *mut *mut deconv_layer,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer_ref("deconv_layer_clone", layer, |l| {
        check_out("out", out)?;
        let copy = Box::into_raw(Box::new(deconv_layer {
            layer: l.try_clone()?,
            poisoned: false,
        }));
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { out.write(copy) };
        Ok(())
    })
}

/// Frees a layer. `NULL` is allowed (nothing happens) and returns `DECONV_OK`. Works on a
/// poisoned layer too.
///
/// # Safety
/// `layer` must be `NULL` or a live handle from `deconv_layer_create`/`deconv_layer_clone`, not
/// used afterwards (nor any buffer pointer obtained from it).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_free(layer: *mut deconv_layer) -> deconv_status {
    run("deconv_layer_free", || {
        if !layer.is_null() {
            // SAFETY: the caller passes a pointer from `Box::into_raw` in create/clone, freed
            // only here and only once.
            drop(unsafe { Box::from_raw(layer) });
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Queries.

/// Copies the layer's configuration (after any resize) into `*config`.
///
/// # Safety
/// `layer` must be `NULL` or a live handle; `config` must be `NULL` or valid for writing a
/// `deconv_config`. A `NULL` in either is an error.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_config(
    layer: *const deconv_layer,
    config: *mut deconv_config,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer_ref("deconv_layer_config", layer, |l| {
        check_out("config", config)?;
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { config.write(deconv_config::from_rust(l.config())) };
        Ok(())
    })
}

/// Copies the layer's sizes into `*geometry`: buffer lengths for every other call.
///
/// # Safety
/// `layer` must be `NULL` or a live handle; `geometry` must be `NULL` or valid for writing a
/// `deconv_geometry`. A `NULL` in either is an error.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_geometry(
    layer: *const deconv_layer,
    geometry: *mut deconv_geometry,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer_ref("deconv_layer_geometry", layer, |l| {
        check_out("geometry", geometry)?;
        let g = l.geometry();
        let value = deconv_geometry {
            batch: g.batch(),
            in_channels: g.in_channels(),
            in_h: g.in_h(),
            in_w: g.in_w(),
            filters: g.filters(),
            out_h: g.out_h(),
            out_w: g.out_w(),
            groups: g.groups(),
            inputs: g.inputs(),
            outputs: g.outputs(),
            input_len: g.batch() * g.inputs(),
            output_len: g.batch() * g.outputs(),
            weight_count: g.weight_count(),
            workspace_size: l.workspace_size(),
        };
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { geometry.write(value) };
        Ok(())
    })
}

/// Sets `*backend` to the `deconv_backend` code of the layer's backend (never
/// `DECONV_BACKEND_DEFAULT`: the one it resolved to).
///
/// # Safety
/// `layer` must be `NULL` or a live handle; `backend` must be `NULL` or valid for writing an
/// `int`. A `NULL` in either is an error.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_backend(
    layer: *const deconv_layer,
    backend: *mut c_int,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer_ref("deconv_layer_backend", layer, |l| {
        check_out("backend", backend)?;
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { backend.write(backend_code(l.backend()) as c_int) };
        Ok(())
    })
}

/// Sets `*scale` to the layer's learning-rate multiplier (default 1; Darknet's
/// `learning_rate_scale`).
///
/// # Safety
/// `layer` must be `NULL` or a live handle; `scale` must be `NULL` or valid for writing a
/// `float`. A `NULL` in either is an error.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_learning_rate_scale(
    layer: *const deconv_layer,
    scale: *mut f32,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer_ref("deconv_layer_learning_rate_scale", layer, |l| {
        check_out("scale", scale)?;
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { scale.write(l.learning_rate_scale()) };
        Ok(())
    })
}

/// Sets the layer's learning-rate multiplier.
///
/// # Safety
/// `layer` must be `NULL` (an error) or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_set_learning_rate_scale(
    layer: *mut deconv_layer,
    scale: f32,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer("deconv_layer_set_learning_rate_scale", layer, |l| {
        l.set_learning_rate_scale(scale);
        Ok(())
    })
}

/// Sets `*step` to the number of Adam steps taken (Darknet `t`). `DECONV_ERR_INVALID_STATE` for a
/// layer created without `adam`.
///
/// # Safety
/// `layer` must be `NULL` or a live handle; `step` must be `NULL` or valid for writing a
/// `uint64_t`. A `NULL` in either is an error.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_adam_step(
    layer: *const deconv_layer,
    step: *mut u64,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer_ref("deconv_layer_adam_step", layer, |l| {
        check_out("step", step)?;
        let t = l.adam_step().ok_or_else(|| {
            Fail::state("the layer has no Adam state (create it with adam != 0)".into())
        })?;
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { step.write(t) };
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Buffers.

/// Sets `*data` and `*len` to the layer's buffer `which` (a `deconv_buffer` code), read-only.
///
/// The pointer stays valid until `deconv_layer_resize`, `deconv_layer_denormalize` or
/// `deconv_layer_free` on this layer; its contents change with forward, backward, update and
/// writes through `deconv_layer_buffer_mut`/`deconv_layer_set`. Do not use it while another
/// call on the layer runs. A buffer of 0 elements (Adam's scale moments without batch norm) has
/// a non-`NULL` pointer that must not be read. Errors: `DECONV_ERR_INVALID_STATE` for a
/// batch-norm buffer of a layer without batch norm, or an Adam buffer of a layer without Adam.
///
/// # Safety
/// `layer` must be `NULL` or a live handle; `data` and `len` must be `NULL` or valid for
/// writing. Any `NULL` is an error. Do not write through `*data`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_buffer(
    layer: *const deconv_layer,
    which: c_int,
    data: *mut *const f32,
    len: *mut usize,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer_ref("deconv_layer_buffer", layer, |l| {
        check_out("data", data)?;
        check_out("len", len)?;
        let buffer = deconv_buffer::from_code(which)?.get(l)?;
        // SAFETY: both checked non-null and aligned; the caller guarantees they are writable.
        unsafe {
            data.write(buffer.as_ptr());
            len.write(buffer.len());
        }
        Ok(())
    })
}

/// Sets `*data` and `*len` to the layer's buffer `which` (a `deconv_buffer` code), writable: to
/// set weights, biases, batch-norm statistics, gradients, or the delta before backward.
///
/// Validity and errors as `deconv_layer_buffer`.
///
/// # Safety
/// `layer` must be `NULL` or a live handle; `data` and `len` must be `NULL` or valid for
/// writing. Any `NULL` is an error. Write at most `*len` floats through `*data`, and not while
/// another call on the layer runs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_buffer_mut(
    layer: *mut deconv_layer,
    which: c_int,
    data: *mut *mut f32,
    len: *mut usize,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer("deconv_layer_buffer_mut", layer, |l| {
        check_out("data", data)?;
        check_out("len", len)?;
        let buffer = deconv_buffer::from_code(which)?.get_mut(l)?;
        // SAFETY: both checked non-null and aligned; the caller guarantees they are writable.
        unsafe {
            data.write(buffer.as_mut_ptr());
            len.write(buffer.len());
        }
        Ok(())
    })
}

/// The output of the last forward pass, read-only: `deconv_layer_buffer` with
/// `DECONV_BUFFER_OUTPUT`. `*len` is `geometry.output_len`.
///
/// # Safety
/// As `deconv_layer_buffer`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_output(
    layer: *const deconv_layer,
    data: *mut *const f32,
    len: *mut usize,
) -> deconv_status {
    // SAFETY: the same contract as this function's.
    unsafe { deconv_layer_buffer(layer, DECONV_BUFFER_OUTPUT as c_int, data, len) }
}

/// The delta (`-dLoss/dOutput`), writable, to fill before backward: `deconv_layer_buffer_mut`
/// with `DECONV_BUFFER_DELTA`. `*len` is `geometry.output_len`.
///
/// # Safety
/// As `deconv_layer_buffer_mut`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_delta(
    layer: *mut deconv_layer,
    data: *mut *mut f32,
    len: *mut usize,
) -> deconv_status {
    // SAFETY: the same contract as this function's.
    unsafe { deconv_layer_buffer_mut(layer, DECONV_BUFFER_DELTA as c_int, data, len) }
}

/// Copies the layer's buffer `which` (a `deconv_buffer` code) into `dst`, which must hold
/// exactly the buffer's length (`DECONV_ERR_BUFFER_LENGTH` otherwise).
///
/// # Safety
/// `layer` must be `NULL` or a live handle; `dst` must be `NULL` or valid for writing `len`
/// floats. `NULL`s are errors.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_get(
    layer: *const deconv_layer,
    which: c_int,
    dst: *mut f32,
    len: usize,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer_ref("deconv_layer_get", layer, |l| {
        let which = deconv_buffer::from_code(which)?;
        let src = which.get(l)?;
        check_buffer("dst", dst, len, src.len(), false, &Ranges::of(l))?;
        // SAFETY: `dst` is non-null, aligned, `len` floats long by the caller's contract,
        // and does not overlap the layer's buffers (checked), so nothing else aliases it.
        let dst = unsafe { std::slice::from_raw_parts_mut(dst, len) };
        dst.copy_from_slice(src);
        Ok(())
    })
}

/// Copies `src` into the layer's buffer `which` (a `deconv_buffer` code); `len` must be the
/// buffer's length (`DECONV_ERR_BUFFER_LENGTH` otherwise).
///
/// # Safety
/// `layer` must be `NULL` or a live handle; `src` must be `NULL` or valid for reading `len`
/// floats. `NULL`s are errors.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_set(
    layer: *mut deconv_layer,
    which: c_int,
    src: *const f32,
    len: usize,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer("deconv_layer_set", layer, |l| {
        let which = deconv_buffer::from_code(which)?;
        let expected = which.get(l)?.len();
        check_buffer("src", src, len, expected, false, &Ranges::of(l))?;
        // SAFETY: `src` is non-null, aligned, `len` floats long by the caller's contract,
        // and does not overlap the layer's buffers (checked), so the layer's `&mut` below
        // does not alias it.
        let src = unsafe { std::slice::from_raw_parts(src, len) };
        which.get_mut(l)?.copy_from_slice(src);
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Forward, backward, update.

/// Forward pass (Darknet `forward_deconvolutional_layer`) of `input`
/// (`[batch][in_channels][in_h][in_w]`, `input_len == geometry.input_len`) in `mode` (a
/// `deconv_mode` code). Read the result with `deconv_layer_output`.
///
/// Errors: `DECONV_ERR_BUFFER_LENGTH` for a wrong `input_len`; `DECONV_ERR_INVALID_STATE` for a
/// layer without its own workspace, or batch norm training on fewer than 2 values per channel.
///
/// # Safety
/// `layer` must be `NULL` or a live handle; `input` must be `NULL` or valid for reading
/// `input_len` floats, not written during the call. `NULL`s are errors.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_forward(
    layer: *mut deconv_layer,
    input: *const f32,
    input_len: usize,
    mode: c_int,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer("deconv_layer_forward", layer, |l| {
        let mode = mode_from_code(mode)?;
        let g = l.geometry();
        let expected = g.batch() * g.inputs();
        check_buffer("input", input, input_len, expected, false, &Ranges::of(l))?;
        // SAFETY: non-null, aligned, `input_len` readable floats (caller), disjoint from
        // the layer's buffers (checked).
        let input = unsafe { std::slice::from_raw_parts(input, input_len) };
        // The caller may have written the weights through a pointer kept from
        // deconv_layer_buffer_mut: copies derived from them are rebuilt.
        l.weights_may_have_changed();
        l.forward(input, mode)?;
        Ok(())
    })
}

/// `deconv_layer_forward` on a caller's workspace of at least `geometry.workspace_size` floats
/// (for layers created with `own_workspace = 0`, which can share one workspace).
///
/// # Safety
/// As `deconv_layer_forward`; `workspace` must be `NULL` (an error) or valid for reading and
/// writing `workspace_len` floats, and overlap neither `input` nor the layer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_forward_with_workspace(
    layer: *mut deconv_layer,
    input: *const f32,
    input_len: usize,
    mode: c_int,
    workspace: *mut f32,
    workspace_len: usize,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer("deconv_layer_forward_with_workspace", layer, |l| {
        let mode = mode_from_code(mode)?;
        let g = *l.geometry();
        let mut others = Ranges::of(l);
        let expected = g.batch() * g.inputs();
        check_buffer("input", input, input_len, expected, false, &others)?;
        others.push(("input", input, input_len));
        let ws = l.workspace_size();
        check_buffer("workspace", workspace, workspace_len, ws, true, &others)?;
        // SAFETY: non-null, aligned, readable (caller), disjoint from the layer (checked).
        let input = unsafe { std::slice::from_raw_parts(input, input_len) };
        // SAFETY: non-null, aligned, writable (caller), disjoint from the layer and from
        // `input` (checked).
        let workspace = unsafe { std::slice::from_raw_parts_mut(workspace, workspace_len) };
        // The caller may have written the weights through a pointer kept from
        // deconv_layer_buffer_mut: copies derived from them are rebuilt.
        l.weights_may_have_changed();
        l.forward_with_workspace(input, mode, workspace)?;
        Ok(())
    })
}

/// Backward pass (Darknet `backward_deconvolutional_layer`). Fill the delta first
/// (`deconv_layer_delta`). `input` must be the input of the forward pass this follows
/// (`input_len == geometry.input_len`). Accumulates (`+=`) the weight, bias and scale updates,
/// and, when `input_delta` is not `NULL`, adds `-dLoss/dInput` to it (`input_delta_len ==
/// geometry.input_len`; ignored when `input_delta` is `NULL`).
///
/// Errors: `DECONV_ERR_BUFFER_LENGTH` for wrong lengths; `DECONV_ERR_INVALID_STATE` without a
/// preceding forward pass (a training one with batch norm) or without an own workspace.
///
/// # Safety
/// `layer` must be `NULL` (an error) or a live handle; `input` must be `NULL` (an error) or
/// valid for reading `input_len` floats; `input_delta` must be `NULL` or valid for reading and
/// writing `input_delta_len` floats, overlapping neither `input` nor the layer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_backward(
    layer: *mut deconv_layer,
    input: *const f32,
    input_len: usize,
    input_delta: *mut f32,
    input_delta_len: usize,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer("deconv_layer_backward", layer, |l| {
        let g = *l.geometry();
        let mut others = Ranges::of(l);
        let expected = g.batch() * g.inputs();
        check_buffer("input", input, input_len, expected, false, &others)?;
        others.push(("input", input, input_len));
        if !input_delta.is_null() {
            check_buffer(
                "input_delta",
                input_delta,
                input_delta_len,
                expected,
                false,
                &others,
            )?;
        }
        // SAFETY: non-null, aligned, readable (caller), disjoint from the layer (checked).
        let input = unsafe { std::slice::from_raw_parts(input, input_len) };
        let input_delta = if input_delta.is_null() {
            None
        } else {
            // SAFETY: non-null, aligned, writable (caller), disjoint from the layer and
            // from `input` (checked).
            Some(unsafe { std::slice::from_raw_parts_mut(input_delta, input_delta_len) })
        };
        // The caller may have written the weights through a pointer kept from
        // deconv_layer_buffer_mut: copies derived from them are rebuilt.
        l.weights_may_have_changed();
        l.backward(input, input_delta)?;
        Ok(())
    })
}

/// `deconv_layer_backward` on a caller's workspace of at least `geometry.workspace_size` floats.
///
/// # Safety
/// As `deconv_layer_backward`; `workspace` must be `NULL` (an error) or valid for reading and
/// writing `workspace_len` floats, overlapping none of the other buffers nor the layer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_backward_with_workspace(
    layer: *mut deconv_layer,
    input: *const f32,
    input_len: usize,
    input_delta: *mut f32,
    input_delta_len: usize,
    workspace: *mut f32,
    workspace_len: usize,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer("deconv_layer_backward_with_workspace", layer, |l| {
        let g = *l.geometry();
        let mut others = Ranges::of(l);
        let expected = g.batch() * g.inputs();
        check_buffer("input", input, input_len, expected, false, &others)?;
        others.push(("input", input, input_len));
        if !input_delta.is_null() {
            check_buffer(
                "input_delta",
                input_delta,
                input_delta_len,
                expected,
                false,
                &others,
            )?;
            others.push(("input_delta", input_delta, input_delta_len));
        }
        let ws = l.workspace_size();
        check_buffer("workspace", workspace, workspace_len, ws, true, &others)?;
        // SAFETY: non-null, aligned, readable (caller), disjoint from the layer (checked).
        let input = unsafe { std::slice::from_raw_parts(input, input_len) };
        let input_delta = if input_delta.is_null() {
            None
        } else {
            // SAFETY: non-null, aligned, writable (caller), disjoint from the layer and
            // from `input` (checked).
            Some(unsafe { std::slice::from_raw_parts_mut(input_delta, input_delta_len) })
        };
        // SAFETY: non-null, aligned, writable (caller), disjoint from the layer, `input` and
        // `input_delta` (checked).
        let workspace = unsafe { std::slice::from_raw_parts_mut(workspace, workspace_len) };
        // The caller may have written the weights through a pointer kept from
        // deconv_layer_buffer_mut: copies derived from them are rebuilt.
        l.weights_may_have_changed();
        l.backward_with_workspace(input, input_delta, workspace)?;
        Ok(())
    })
}

/// Applies the accumulated updates (Darknet `update_deconvolutional_layer`). SGD, with
/// `lr = learning_rate * learning_rate_scale`: `biases += lr/batch * bias_updates;
/// bias_updates *= momentum` (scales alike), `weight_updates -= decay*batch * weights;
/// weights += lr/batch * weight_updates; weight_updates *= momentum`. Adam: Darknet's GPU rule
/// with bias correction; the updates are zeroed.
///
/// Errors: `DECONV_ERR_INVALID_PARAMETER` for `batch == 0` or an unknown optimizer;
/// `DECONV_ERR_INVALID_STATE` for Adam on a layer created without `adam`.
///
/// # Safety
/// `layer` must be `NULL` or a live handle; `args` must be `NULL` or point to a readable
/// `deconv_update_args`. `NULL`s are errors.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_update(
    layer: *mut deconv_layer,
    args: *const deconv_update_args,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer("deconv_layer_update", layer, |l| {
        check_out("args", args.cast_mut())?;
        // SAFETY: checked non-null and aligned; readable by the caller's contract; plain
        // data, so any bit pattern is a valid value.
        let args = unsafe { args.read() }.to_rust()?;
        l.update(&args)?;
        Ok(())
    })
}

/// Changes the input size (Darknet `resize_deconvolutional_layer`); parameters are kept, the
/// output, delta, batch-norm and workspace buffers are reallocated: pointers from
/// `deconv_layer_buffer`/`_mut` become invalid. On error the layer is unchanged.
///
/// # Safety
/// `layer` must be `NULL` (an error) or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_resize(
    layer: *mut deconv_layer,
    in_h: usize,
    in_w: usize,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer("deconv_layer_resize", layer, |l| {
        l.resize(in_h, in_w)?;
        Ok(())
    })
}

/// Sets the weights to the standard bilinear-upsampling kernel on the channel diagonal (Darknet
/// `bilinear_init`, with its two bugs fixed; see README.md).
///
/// # Safety
/// `layer` must be `NULL` (an error) or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_bilinear_init(layer: *mut deconv_layer) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer("deconv_layer_bilinear_init", layer, |l| {
        l.bilinear_init();
        Ok(())
    })
}

/// Folds batch norm into the weights and biases and turns it off (Darknet
/// `denormalize_deconvolutional_layer`, fixed). Pointers to batch-norm buffers become invalid.
/// `DECONV_ERR_INVALID_STATE` for a layer without batch norm.
///
/// # Safety
/// `layer` must be `NULL` (an error) or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_denormalize(layer: *mut deconv_layer) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer("deconv_layer_denormalize", layer, |l| {
        l.denormalize()?;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Darknet files.

/// The header of a Darknet `.weights` file. Darknet writes version 0.2.0, where `seen` (images
/// seen in training) is stored as 64 bits; before 0.2 it was 32 bits.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct deconv_weights_header {
    /// Format major version (Darknet writes 0).
    pub major: i32,
    /// Format minor version (Darknet writes 2).
    pub minor: i32,
    /// Format revision (Darknet writes 0).
    pub revision: i32,
    /// Images seen in training.
    pub seen: u64,
}

impl deconv_weights_header {
    fn from_rust(h: &WeightsHeader) -> Self {
        deconv_weights_header {
            major: h.major,
            minor: h.minor,
            revision: h.revision,
            seen: h.seen,
        }
    }
    fn to_rust(self) -> WeightsHeader {
        WeightsHeader {
            major: self.major,
            minor: self.minor,
            revision: self.revision,
            seen: self.seen,
        }
    }
}

/// Reads an optional header argument: `NULL` is Darknet's current header with `seen` 0.
///
/// # Safety
/// `header` is `NULL` or points to a readable `deconv_weights_header`.
unsafe fn header_arg(header: *const deconv_weights_header) -> Res<WeightsHeader> {
    if header.is_null() {
        return Ok(WeightsHeader::new(0));
    }
    check_out("header", header.cast_mut())?;
    // SAFETY: non-null, aligned, readable by this function's contract; plain data.
    Ok(unsafe { header.read() }.to_rust())
}

/// Sets `*header` to the header Darknet writes today: version 0.2.0 and `seen`.
///
/// # Safety
/// `header` must be `NULL` (an error) or valid for writing a `deconv_weights_header`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_weights_header_default(
    header: *mut deconv_weights_header,
    seen: u64,
) -> deconv_status {
    run("deconv_weights_header_default", || {
        check_out("header", header)?;
        let value = deconv_weights_header::from_rust(&WeightsHeader::new(seen));
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { header.write(value) };
        Ok(())
    })
}

/// Loads a Darknet `.weights` file holding exactly this one layer (biases; with batch norm
/// scales, rolling mean and variance; weights; little-endian floats after the header). Sizes
/// come from the layer, never from the file. With `reject_non_finite != 0`, a NaN or infinity
/// is an error. Stores the file's header in `*header` unless `header` is `NULL`.
///
/// Errors: `DECONV_ERR_IO` when the file cannot be read; `DECONV_ERR_FORMAT` when it is too
/// short, too long, or holds a rejected value (the message says what was expected and found).
/// On error the layer is unchanged.
///
/// # Safety
/// `layer` must be `NULL` or a live handle; `path` must be `NULL` or a NUL-terminated string
/// (bytes of a file name; UTF-8 outside Unix); a `NULL` in either is an error. `header` must
/// be `NULL` or valid for writing a `deconv_weights_header`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_load_weights(
    layer: *mut deconv_layer,
    path: *const c_char,
    reject_non_finite: c_int,
    header: *mut deconv_weights_header,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer("deconv_layer_load_weights", layer, |l| {
        // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
        let path = unsafe { path_arg("path", path) }?;
        if !header.is_null() {
            check_out("header", header)?;
        }
        let options = LoadOptions::new().reject_non_finite(reject_non_finite != 0);
        let read = load_weights(l, path, &options)?;
        if !header.is_null() {
            // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
            unsafe { header.write(deconv_weights_header::from_rust(&read)) };
        }
        Ok(())
    })
}

/// Saves the layer as a one-layer Darknet `.weights` file (created or truncated) with
/// `*header`, or Darknet's current header with `seen` 0 when `header` is `NULL`.
///
/// Errors: `DECONV_ERR_IO` when the file cannot be written; `DECONV_ERR_INVALID_PARAMETER` when
/// `seen` does not fit a pre-0.2 header's 32 bits.
///
/// # Safety
/// `layer` must be `NULL` or a live handle; `path` must be `NULL` or a NUL-terminated string;
/// a `NULL` in either is an error. `header` must be `NULL` or point to a readable
/// `deconv_weights_header`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_save_weights(
    layer: *const deconv_layer,
    path: *const c_char,
    header: *const deconv_weights_header,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer_ref("deconv_layer_save_weights", layer, |l| {
        // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
        let path = unsafe { path_arg("path", path) }?;
        // SAFETY: `header` is NULL or readable (this function's contract).
        let header = unsafe { header_arg(header) }?;
        save_weights(l, path, &header)?;
        Ok(())
    })
}

/// Sets `*bytes` to the size of the layer's one-layer `.weights` data with `*header` (or
/// Darknet's current header when `header` is `NULL`): the length `deconv_layer_write_weights`
/// needs.
///
/// # Safety
/// `layer` must be `NULL` or a live handle; `bytes` must be `NULL` or valid for writing a
/// `size_t`; a `NULL` in either is an error. `header` must be `NULL` or point to a readable
/// `deconv_weights_header`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_weights_byte_len(
    layer: *const deconv_layer,
    header: *const deconv_weights_header,
    bytes: *mut usize,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer_ref("deconv_layer_weights_byte_len", layer, |l| {
        check_out("bytes", bytes)?;
        // SAFETY: `header` is NULL or readable (this function's contract).
        let header = unsafe { header_arg(header) }?;
        let len = usize::try_from(header.byte_len() + layer_byte_len(l)).map_err(|_| {
            Error::Overflow {
                what: "weights byte length",
            }
        })?;
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { bytes.write(len) };
        Ok(())
    })
}

/// Writes the layer as one-layer `.weights` data into `data`, which must be exactly
/// `deconv_layer_weights_byte_len` bytes long (`len`), with `*header` (or Darknet's current
/// header when `header` is `NULL`).
///
/// # Safety
/// `layer` must be `NULL` or a live handle; `data` must be `NULL` or valid for writing `len`
/// bytes; a `NULL` in either is an error. `header` must be `NULL` or point to a readable
/// `deconv_weights_header`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_write_weights(
    layer: *const deconv_layer,
    header: *const deconv_weights_header,
    data: *mut u8,
    len: usize,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer_ref("deconv_layer_write_weights", layer, |l| {
        // SAFETY: `header` is NULL or readable (this function's contract).
        let header = unsafe { header_arg(header) }?;
        let expected = usize::try_from(header.byte_len() + layer_byte_len(l)).map_err(|_| {
            Error::Overflow {
                what: "weights byte length",
            }
        })?;
        check_bytes("data", data, len, Some(expected), &Ranges::of(l))?;
        // SAFETY: non-null, `len` writable bytes (caller), disjoint from the layer (checked).
        let data = unsafe { std::slice::from_raw_parts_mut(data, len) };
        write_weights(l, data, &header)?;
        Ok(())
    })
}

/// Reads one-layer `.weights` data of `len` bytes from `data` into the layer, as
/// `deconv_layer_load_weights` reads a file (same checks and errors, `DECONV_ERR_FORMAT` for
/// data too short or too long). Stores the header in `*header` unless `header` is `NULL`.
///
/// # Safety
/// `layer` must be `NULL` or a live handle; `data` must be `NULL` or valid for reading `len`
/// bytes; a `NULL` in either is an error. `header` must be `NULL` or valid for writing a
/// `deconv_weights_header`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_read_weights(
    layer: *mut deconv_layer,
    data: *const u8,
    len: usize,
    reject_non_finite: c_int,
    header: *mut deconv_weights_header,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer("deconv_layer_read_weights", layer, |l| {
        check_bytes("data", data, len, None, &Ranges::of(l))?;
        if !header.is_null() {
            check_out("header", header)?;
        }
        // SAFETY: non-null, `len` readable bytes (caller), disjoint from the layer (checked).
        let data = unsafe { std::slice::from_raw_parts(data, len) };
        let options = LoadOptions::new().reject_non_finite(reject_non_finite != 0);
        let read = read_weights(l, data, &options)?;
        if !header.is_null() {
            // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
            unsafe { header.write(deconv_weights_header::from_rust(&read)) };
        }
        Ok(())
    })
}

/// Parses a Darknet `[deconvolutional]` cfg section (NUL-terminated text: `filters`, `size`,
/// `stride`, `pad`, `padding`, `activation`, `batch_normalize`, with Darknet's defaults, e.g.
/// logistic activation) for an input of `batch` images of `in_channels` x `in_h` x `in_w`, into
/// `*config`. The sizes come in NCHW order, channels before the image size, as in
/// `deconv_config_default` and everywhere else in this API. Errors: `DECONV_ERR_FORMAT` for malformed text (the message names the line and
/// key), `DECONV_ERR_INVALID_PARAMETER` for a configuration that makes no layer.
///
/// # Safety
/// `cfg` must be `NULL` or a NUL-terminated string; `config` must be `NULL` or valid for
/// writing a `deconv_config`. A `NULL` in either is an error.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_config_from_cfg(
    cfg: *const c_char,
    batch: usize,
    in_channels: usize,
    in_h: usize,
    in_w: usize,
    config: *mut deconv_config,
) -> deconv_status {
    run("deconv_config_from_cfg", || {
        if cfg.is_null() {
            return Err(Fail::null("cfg"));
        }
        check_out("config", config)?;
        // SAFETY: non-null and NUL-terminated by this function's contract.
        let text = unsafe { std::ffi::CStr::from_ptr(cfg) }
            .to_str()
            .map_err(|e| Fail {
                status: DECONV_ERR_FORMAT,
                message: format!("cfg text is not UTF-8: {e}"),
            })?;
        let parsed = parse_deconvolutional(text, InputShape::new(batch, in_channels, in_h, in_w))?;
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { config.write(deconv_config::from_rust(&parsed)) };
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::ffi::CStr;
    use std::ptr::{null, null_mut};

    thread_local! {
        static PANIC_NEXT: Cell<bool> = const { Cell::new(false) };
    }

    /// Test hook: panics once inside the next layer call on this thread if armed.
    pub(super) fn maybe_panic() {
        if PANIC_NEXT.with(|p| p.replace(false)) {
            panic!("injected test panic");
        }
    }

    fn last_error() -> String {
        // SAFETY: deconv_last_error never returns NULL and the string is NUL-terminated.
        unsafe { CStr::from_ptr(deconv_last_error()) }
            .to_str()
            .unwrap()
            .to_owned()
    }

    fn config(batch: usize, c: usize, h: usize, w: usize, n: usize, k: usize) -> deconv_config {
        let mut cfg = std::mem::MaybeUninit::<deconv_config>::uninit();
        // SAFETY: a valid out pointer.
        let st = unsafe { deconv_config_default(cfg.as_mut_ptr(), batch, c, h, w, n, k) };
        assert_eq!(st, DECONV_OK);
        // SAFETY: initialized by the call above.
        unsafe { cfg.assume_init() }
    }

    fn create(cfg: &deconv_config) -> *mut deconv_layer {
        let mut layer = null_mut();
        // SAFETY: valid pointers.
        let st = unsafe { deconv_layer_create(cfg, 0, &mut layer) };
        assert_eq!(st, DECONV_OK, "{}", last_error());
        assert!(!layer.is_null());
        layer
    }

    fn geometry(layer: *const deconv_layer) -> deconv_geometry {
        let mut g = std::mem::MaybeUninit::uninit();
        // SAFETY: valid pointers.
        let st = unsafe { deconv_layer_geometry(layer, g.as_mut_ptr()) };
        assert_eq!(st, DECONV_OK);
        // SAFETY: initialized by the call above.
        unsafe { g.assume_init() }
    }

    fn free(layer: *mut deconv_layer) {
        // SAFETY: a live handle, not used afterwards.
        assert_eq!(unsafe { deconv_layer_free(layer) }, DECONV_OK);
    }

    fn get(layer: *const deconv_layer, which: deconv_buffer, len: usize) -> Vec<f32> {
        let mut v = vec![f32::NAN; len];
        // SAFETY: valid pointers and length.
        let st = unsafe { deconv_layer_get(layer, which as c_int, v.as_mut_ptr(), v.len()) };
        assert_eq!(st, DECONV_OK, "{}", last_error());
        v
    }

    fn set(layer: *mut deconv_layer, which: deconv_buffer, v: &[f32]) {
        // SAFETY: valid pointers and length.
        let st = unsafe { deconv_layer_set(layer, which as c_int, v.as_ptr(), v.len()) };
        assert_eq!(st, DECONV_OK, "{}", last_error());
    }

    #[test]
    fn committed_header_matches_generated() {
        let generated = include_str!(concat!(env!("OUT_DIR"), "/deconv.h"));
        let committed = include_str!("../include/deconv.h");
        if generated != committed {
            let line = generated
                .lines()
                .zip(committed.lines())
                .position(|(a, b)| a != b)
                .map_or_else(|| "the end".to_owned(), |i| format!("line {}", i + 1));
            panic!(
                "include/deconv.h is out of date (first difference at {line}); regenerate it \
                 with `DECONV_WRITE_HEADER=1 cargo build --features capi` and commit it"
            );
        }
    }

    #[test]
    fn enums_match_the_crate() {
        for (i, a) in Activation::ALL.iter().enumerate() {
            assert_eq!(*a as usize, i);
        }
        let names = [
            "LOGISTIC", "RELU", "RELIE", "LINEAR", "RAMP", "TANH", "PLSE", "LEAKY", "ELU", "LOGGY",
            "STAIR", "HARDTAN", "LHTAN", "SELU",
        ];
        for (name, a) in names.iter().zip(Activation::ALL) {
            assert_eq!(name.to_lowercase(), a.name());
        }
        assert_eq!(
            deconv_activation::DECONV_ACTIVATION_SELU as usize,
            Activation::ALL.len() - 1
        );
        for (i, s) in deconv_status::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
            // SAFETY: static NUL-terminated strings.
            let name = unsafe { CStr::from_ptr(deconv_status_name(i as c_int)) };
            assert_eq!(name.to_str().unwrap(), format!("{s:?}"));
        }
        // SAFETY: as above.
        let unknown = unsafe { CStr::from_ptr(deconv_status_name(-1)) };
        assert_eq!(unknown.to_str().unwrap(), "unknown status");
        for (i, b) in deconv_buffer::ALL.iter().enumerate() {
            assert_eq!(*b as usize, i);
        }
        // SAFETY: static NUL-terminated string.
        let version = unsafe { CStr::from_ptr(deconv_version()) };
        assert_eq!(version.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn config_round_trip() {
        let mut cfg = config(2, 4, 5, 6, 2, 3);
        cfg.kernel = [3, 2];
        cfg.stride = [2, 3];
        cfg.pad = [1, 0];
        cfg.dilation = [1, 2];
        cfg.output_padding = [1, 2];
        cfg.groups = 2;
        cfg.activation = deconv_activation::DECONV_ACTIVATION_LEAKY as c_int;
        cfg.batch_normalize = 1;
        cfg.adam = 1;
        cfg.algorithm = deconv_algorithm::DECONV_ALGORITHM_COLUMNS as c_int;
        cfg.seed = 99;
        let layer = create(&cfg);
        let mut back = config(1, 1, 1, 1, 1, 1);
        // SAFETY: valid pointers.
        assert_eq!(unsafe { deconv_layer_config(layer, &mut back) }, DECONV_OK);
        assert_eq!(back, cfg);
        let g = geometry(layer);
        let rust = cfg.to_rust().unwrap().geometry().unwrap();
        assert_eq!((g.out_h, g.out_w), (rust.out_h(), rust.out_w()));
        assert_eq!(g.output_len, 2 * rust.outputs());
        assert_eq!(g.input_len, 2 * 4 * 5 * 6);
        assert_eq!(g.weight_count, 4 * 3 * 2); // in_channels * filters / groups * kh * kw
        // Same seed, same weights as the Rust API.
        let rust_layer: Layer = DeconvLayer::new(&cfg.to_rust().unwrap()).unwrap();
        assert_eq!(
            get(layer, DECONV_BUFFER_WEIGHTS, g.weight_count),
            rust_layer.weights()
        );
        free(layer);
    }

    #[test]
    fn null_pointers_are_errors() {
        let cfg = config(1, 1, 2, 2, 1, 2);
        let layer = create(&cfg);
        let g = geometry(layer);
        let input = vec![0.0f32; g.input_len];
        let mut out = null_mut();
        let mut len = 0usize;
        let mut data = null();
        // SAFETY: (all calls) every non-null pointer is valid; the null ones are what is tested.
        unsafe {
            assert_eq!(
                deconv_config_default(null_mut(), 1, 1, 1, 1, 1, 1),
                DECONV_ERR_NULL_POINTER
            );
            assert_eq!(
                deconv_layer_create(null(), 0, &mut out),
                DECONV_ERR_NULL_POINTER
            );
            assert!(
                last_error().contains("`config` is NULL"),
                "{}",
                last_error()
            );
            assert!(out.is_null());
            assert_eq!(
                deconv_layer_create(&cfg, 0, null_mut()),
                DECONV_ERR_NULL_POINTER
            );
            assert_eq!(
                deconv_layer_forward(null_mut(), input.as_ptr(), input.len(), 0),
                DECONV_ERR_NULL_POINTER
            );
            assert!(last_error().starts_with("deconv_layer_forward: `layer` is NULL"));
            assert_eq!(
                deconv_layer_forward(layer, null(), g.input_len, 0),
                DECONV_ERR_NULL_POINTER
            );
            assert_eq!(
                deconv_layer_backward(layer, null(), g.input_len, null_mut(), 0),
                DECONV_ERR_NULL_POINTER
            );
            assert_eq!(deconv_layer_update(layer, null()), DECONV_ERR_NULL_POINTER);
            assert_eq!(
                deconv_layer_output(layer, null_mut(), &mut len),
                DECONV_ERR_NULL_POINTER
            );
            assert_eq!(
                deconv_layer_output(layer, &mut data, null_mut()),
                DECONV_ERR_NULL_POINTER
            );
            assert_eq!(
                deconv_layer_set(layer, 0, null(), g.weight_count),
                DECONV_ERR_NULL_POINTER
            );
            assert_eq!(
                deconv_layer_geometry(layer, null_mut()),
                DECONV_ERR_NULL_POINTER
            );
            assert_eq!(
                deconv_layer_resize(null_mut(), 3, 3),
                DECONV_ERR_NULL_POINTER
            );
            assert_eq!(
                deconv_backend_compiled(0, null_mut()),
                DECONV_ERR_NULL_POINTER
            );
            assert_eq!(deconv_layer_free(null_mut()), DECONV_OK);
        }
        free(layer);
    }

    #[test]
    fn wrong_lengths_and_codes_are_errors() {
        let cfg = config(2, 1, 2, 2, 1, 2);
        let layer = create(&cfg);
        let g = geometry(layer);
        let input = vec![1.0f32; g.input_len + 1];
        let mut dx = vec![0.0f32; g.input_len - 1];
        // SAFETY: (all calls) valid pointers with at least the lengths passed.
        unsafe {
            assert_eq!(
                deconv_layer_forward(layer, input.as_ptr(), g.input_len + 1, 0),
                DECONV_ERR_BUFFER_LENGTH
            );
            assert_eq!(
                last_error(),
                format!(
                    "deconv_layer_forward: buffer `input` has {} elements, expected {}",
                    g.input_len + 1,
                    g.input_len
                )
            );
            assert_eq!(
                deconv_layer_forward(layer, input.as_ptr(), g.input_len, 7),
                DECONV_ERR_INVALID_PARAMETER
            );
            assert!(last_error().contains("unknown mode code 7"));
            assert_eq!(
                deconv_layer_forward(layer, input.as_ptr(), g.input_len, 0),
                DECONV_OK
            );
            assert_eq!(
                deconv_layer_backward(
                    layer,
                    input.as_ptr(),
                    g.input_len,
                    dx.as_mut_ptr(),
                    dx.len()
                ),
                DECONV_ERR_BUFFER_LENGTH
            );
            assert!(last_error().contains("`input_delta`"), "{}", last_error());
            let mut w = vec![0.0f32; g.weight_count + 3];
            assert_eq!(
                deconv_layer_set(layer, 0, w.as_ptr(), w.len()),
                DECONV_ERR_BUFFER_LENGTH
            );
            assert_eq!(
                deconv_layer_get(layer, 0, w.as_mut_ptr(), g.weight_count - 1),
                DECONV_ERR_BUFFER_LENGTH
            );
            assert_eq!(
                deconv_layer_get(layer, 99, w.as_mut_ptr(), g.weight_count),
                DECONV_ERR_INVALID_PARAMETER
            );
            // Batch-norm and Adam buffers of a plain layer.
            assert_eq!(
                deconv_layer_get(layer, DECONV_BUFFER_SCALES as c_int, w.as_mut_ptr(), 1),
                DECONV_ERR_INVALID_STATE
            );
            assert!(last_error().contains("batch normalization"));
            let mut step = 0u64;
            assert_eq!(
                deconv_layer_adam_step(layer, &mut step),
                DECONV_ERR_INVALID_STATE
            );
            let mut args = std::mem::MaybeUninit::uninit();
            assert_eq!(
                deconv_update_args_adam(args.as_mut_ptr(), 0.1, 0.0, 1),
                DECONV_OK
            );
            assert_eq!(
                deconv_layer_update(layer, args.as_ptr()),
                DECONV_ERR_INVALID_STATE
            );
            let mut args = args.assume_init();
            args.optimizer = 5;
            assert_eq!(
                deconv_layer_update(layer, &args),
                DECONV_ERR_INVALID_PARAMETER
            );
            args.optimizer = 0;
            args.batch = 0;
            assert_eq!(
                deconv_layer_update(layer, &args),
                DECONV_ERR_INVALID_PARAMETER
            );
            // The layer's own output as its input, or as the input delta, is refused.
            let mut out = null();
            let mut len = 0;
            assert_eq!(deconv_layer_output(layer, &mut out, &mut len), DECONV_OK);
            assert_eq!(
                deconv_layer_forward(layer, out, g.input_len, 0),
                DECONV_ERR_INVALID_PARAMETER
            );
            assert!(last_error().contains("overlaps output"), "{}", last_error());
            // Backward without forward.
            assert_eq!(
                deconv_layer_backward(layer, input.as_ptr(), g.input_len, null_mut(), 0),
                DECONV_OK
            );
            assert_eq!(
                deconv_layer_backward(layer, input.as_ptr(), g.input_len, null_mut(), 0),
                DECONV_ERR_INVALID_STATE
            );
            assert!(last_error().contains("forward pass first"));
        }
        free(layer);
    }

    #[test]
    fn invalid_configs_are_errors() {
        let mut out = null_mut();
        let check = |cfg: deconv_config, status: deconv_status, text: &str| {
            let mut out = null_mut();
            // SAFETY: valid pointers.
            assert_eq!(unsafe { deconv_layer_create(&cfg, 0, &mut out) }, status);
            assert!(out.is_null());
            assert!(last_error().contains(text), "{text}: {}", last_error());
        };
        let good = config(1, 2, 3, 3, 2, 3);
        check(
            config(0, 2, 3, 3, 2, 3),
            DECONV_ERR_INVALID_PARAMETER,
            "`batch`",
        );
        check(
            deconv_config {
                pad: [5, 0],
                ..good
            },
            DECONV_ERR_INVALID_PARAMETER,
            "`pad`",
        );
        check(
            deconv_config { groups: 3, ..good },
            DECONV_ERR_INVALID_PARAMETER,
            "multiple of groups",
        );
        check(
            deconv_config {
                output_padding: [1, 1],
                ..good
            },
            DECONV_ERR_INVALID_PARAMETER,
            "output_padding",
        );
        check(
            deconv_config {
                activation: 14,
                ..good
            },
            DECONV_ERR_INVALID_PARAMETER,
            "unknown activation code 14",
        );
        check(
            deconv_config {
                algorithm: deconv_algorithm::DECONV_ALGORITHM_PHASES as c_int,
                dilation: [2, 2],
                ..good
            },
            DECONV_ERR_INVALID_PARAMETER,
            "dilation",
        );
        check(
            deconv_config {
                algorithm: 3,
                ..good
            },
            DECONV_ERR_INVALID_PARAMETER,
            "unknown algorithm code 3",
        );
        // A layer larger than any machine: an error, not an abort (#10).
        check(
            config(1, 1, 1 << 20, 1 << 20, 1, 1),
            DECONV_ERR_ALLOCATION,
            "could not allocate",
        );
        // Element counts whose bytes do not fit isize: an error, not a panic (#10).
        check(config(1, 1, 1, 1, 1 << 62, 1), DECONV_ERR_OVERFLOW, "bytes");
        check(
            deconv_config {
                activation: -1,
                ..good
            },
            DECONV_ERR_INVALID_PARAMETER,
            "activation",
        );
        check(
            deconv_config {
                in_h: usize::MAX / 2,
                in_w: usize::MAX / 2,
                ..good
            },
            DECONV_ERR_OVERFLOW,
            "overflow",
        );
        // SAFETY: valid pointers.
        let st = unsafe { deconv_layer_create(&good, 42, &mut out) };
        assert_eq!(st, DECONV_ERR_INVALID_PARAMETER);
        assert!(last_error().contains("unknown backend code 42"));
    }

    #[test]
    fn backends() {
        let cfg = config(1, 1, 2, 2, 1, 2);
        let mut compiled = -1;
        for code in [0, 1, 2] {
            // SAFETY: valid pointer.
            let st = unsafe { deconv_backend_compiled(code, &mut compiled) };
            assert_eq!(st, DECONV_OK);
            let name = ["default", "matrixmultiply", "openblas"][code as usize];
            let expect = code == 0 || crate::COMPILED_BACKENDS.contains(&name);
            assert_eq!(compiled != 0, expect, "{name}");
            let mut layer = null_mut();
            // SAFETY: valid pointers.
            let st = unsafe { deconv_layer_create(&cfg, code, &mut layer) };
            if expect {
                assert_eq!(st, DECONV_OK);
                let mut resolved = -1;
                // SAFETY: valid pointers.
                let st = unsafe { deconv_layer_backend(layer, &mut resolved) };
                assert_eq!(st, DECONV_OK);
                assert_ne!(resolved, 0);
                if code != 0 {
                    assert_eq!(resolved, code);
                }
                free(layer);
            } else {
                assert_eq!(st, DECONV_ERR_INVALID_PARAMETER);
                assert!(last_error().contains("not a compiled-in backend"));
            }
        }
        // SAFETY: valid pointer.
        let st = unsafe { deconv_backend_compiled(3, &mut compiled) };
        assert_eq!(st, DECONV_ERR_INVALID_PARAMETER);
    }

    /// The hand-computable case of the C example: 1x1x2x2 input, 2x2 kernel, stride 2.
    #[test]
    fn forward_backward_update_match_hand_computation() {
        let cfg = config(1, 1, 2, 2, 1, 2);
        let cfg = deconv_config {
            stride: [2, 2],
            ..cfg
        };
        let layer = create(&cfg);
        let g = geometry(layer);
        assert_eq!((g.out_h, g.out_w, g.output_len), (4, 4, 16));
        let w = [1.0f32, 2.0, 3.0, 4.0];
        set(layer, DECONV_BUFFER_WEIGHTS, &w);
        set(layer, DECONV_BUFFER_BIASES, &[0.5]);
        let x = [1.0f32, 2.0, 3.0, 4.0];
        // SAFETY: (all calls) valid pointers and lengths.
        unsafe {
            assert_eq!(deconv_layer_forward(layer, x.as_ptr(), 4, 1), DECONV_OK);
            let (mut out, mut len) = (null(), 0);
            assert_eq!(deconv_layer_output(layer, &mut out, &mut len), DECONV_OK);
            let out = std::slice::from_raw_parts(out, len);
            #[rustfmt::skip]
            let expect = [
                1.5, 2.5, 2.5, 4.5,
                3.5, 4.5, 6.5, 8.5,
                3.5, 6.5, 4.5, 8.5,
                9.5, 12.5, 12.5, 16.5,
            ];
            assert_eq!(out, expect);
            // A training step with delta = 1 everywhere.
            assert_eq!(deconv_layer_forward(layer, x.as_ptr(), 4, 0), DECONV_OK);
            let (mut delta, mut len) = (null_mut(), 0);
            assert_eq!(deconv_layer_delta(layer, &mut delta, &mut len), DECONV_OK);
            std::slice::from_raw_parts_mut(delta, len).fill(1.0);
            let mut dx = [0.0f32; 4];
            assert_eq!(
                deconv_layer_backward(layer, x.as_ptr(), 4, dx.as_mut_ptr(), 4),
                DECONV_OK
            );
            assert_eq!(dx, [10.0; 4]);
            assert_eq!(get(layer, DECONV_BUFFER_WEIGHT_UPDATES, 4), [10.0; 4]);
            assert_eq!(get(layer, DECONV_BUFFER_BIAS_UPDATES, 1), [16.0]);
            let mut args = std::mem::MaybeUninit::uninit();
            assert_eq!(
                deconv_update_args_sgd(args.as_mut_ptr(), 0.1, 0.9, 0.01, 1),
                DECONV_OK
            );
            assert_eq!(deconv_layer_update(layer, args.as_ptr()), DECONV_OK);
        }
        let new_w = get(layer, DECONV_BUFFER_WEIGHTS, 4);
        for (i, (nw, w)) in new_w.iter().zip(w).enumerate() {
            let expect = w + 0.1 * (10.0 - 0.01 * w);
            assert!(
                (nw - expect).abs() < 1e-5,
                "w[{i}] = {nw}, expected {expect}"
            );
        }
        let b = get(layer, DECONV_BUFFER_BIASES, 1)[0];
        assert!((b - 2.1).abs() < 1e-5, "{b}");
        free(layer);
    }

    /// Weights written through a pointer kept from `deconv_layer_buffer_mut` reach the next
    /// pass, although the layer keeps copies derived from them (here the phase packing).
    #[test]
    fn weights_written_through_a_kept_pointer_are_used() {
        for algorithm in [
            deconv_algorithm::DECONV_ALGORITHM_PHASES,
            deconv_algorithm::DECONV_ALGORITHM_COLUMNS,
        ] {
            let cfg = deconv_config {
                stride: [2, 2],
                algorithm: algorithm as c_int,
                ..config(1, 1, 2, 2, 1, 2)
            };
            let layer = create(&cfg);
            let x = [1.0f32, 2.0, 3.0, 4.0];
            let (mut w, mut len) = (null_mut(), 0);
            // SAFETY: (all calls) valid pointers and lengths; `w` is used between calls only.
            unsafe {
                let which = DECONV_BUFFER_WEIGHTS as c_int;
                let st = deconv_layer_buffer_mut(layer, which, &mut w, &mut len);
                assert_eq!(st, DECONV_OK);
                let w = std::slice::from_raw_parts_mut(w, len);
                w.copy_from_slice(&[1.0, 2.0, 3.0, 4.0]);
                assert_eq!(deconv_layer_forward(layer, x.as_ptr(), 4, 1), DECONV_OK);
                let first = get(layer, DECONV_BUFFER_OUTPUT, 16);
                w.iter_mut().for_each(|v| *v *= 2.0);
                assert_eq!(deconv_layer_forward(layer, x.as_ptr(), 4, 1), DECONV_OK);
                let second = get(layer, DECONV_BUFFER_OUTPUT, 16);
                let doubled: Vec<f32> = first.iter().map(|v| 2.0 * v).collect();
                assert_eq!(second, doubled, "{algorithm:?}");
            }
            free(layer);
        }
    }

    #[test]
    fn buffers_of_batch_norm_and_adam_layers() {
        let mut cfg = config(2, 2, 3, 3, 2, 2);
        cfg.batch_normalize = 1;
        cfg.adam = 1;
        let layer = create(&cfg);
        let g = geometry(layer);
        let lens = [
            g.weight_count,
            g.weight_count,
            2,
            2,
            2,
            2,
            2,
            2,
            2,
            2,
            g.output_len,
            g.output_len,
            g.output_len,
            g.weight_count,
            g.weight_count,
            2,
            2,
            2,
            2,
        ];
        for (b, expect) in deconv_buffer::ALL.into_iter().zip(lens) {
            let (mut data, mut len) = (null(), 0);
            // SAFETY: valid pointers.
            let st = unsafe { deconv_layer_buffer(layer, b as c_int, &mut data, &mut len) };
            assert_eq!(st, DECONV_OK, "{b:?}");
            assert_eq!(len, expect, "{b:?}");
            let (mut data_mut, mut len_mut) = (null_mut(), 0);
            // SAFETY: valid pointers.
            let st =
                unsafe { deconv_layer_buffer_mut(layer, b as c_int, &mut data_mut, &mut len_mut) };
            assert_eq!(st, DECONV_OK, "{b:?}");
            assert_eq!((data_mut.cast_const(), len_mut), (data, len), "{b:?}");
        }
        set(layer, DECONV_BUFFER_ROLLING_MEAN, &[1.0, 2.0]);
        assert_eq!(get(layer, DECONV_BUFFER_ROLLING_MEAN, 2), [1.0, 2.0]);
        let x = vec![0.25f32; g.input_len];
        let mut step = 7;
        // SAFETY: (all calls) valid pointers and lengths.
        unsafe {
            assert_eq!(
                deconv_layer_forward(layer, x.as_ptr(), x.len(), 0),
                DECONV_OK
            );
            assert_eq!(
                deconv_layer_backward(layer, x.as_ptr(), x.len(), null_mut(), 0),
                DECONV_OK
            );
            let mut args = std::mem::MaybeUninit::uninit();
            assert_eq!(
                deconv_update_args_adam(args.as_mut_ptr(), 0.01, 0.0005, 2),
                DECONV_OK
            );
            assert_eq!(deconv_layer_update(layer, args.as_ptr()), DECONV_OK);
            assert_eq!(deconv_layer_adam_step(layer, &mut step), DECONV_OK);
            assert_eq!(step, 1);
            let mut copy = null_mut();
            assert_eq!(deconv_layer_clone(layer, &mut copy), DECONV_OK);
            assert_eq!(deconv_layer_denormalize(layer), DECONV_OK);
            assert_eq!(deconv_layer_denormalize(layer), DECONV_ERR_INVALID_STATE);
            assert_eq!(
                deconv_layer_get(
                    copy,
                    DECONV_BUFFER_SCALES as c_int,
                    [0.0f32; 2].as_mut_ptr(),
                    2
                ),
                DECONV_OK
            );
            free(copy);
            assert_eq!(deconv_layer_resize(layer, 4, 5), DECONV_OK);
            assert_eq!(geometry(layer).in_w, 5);
            assert_eq!(
                deconv_layer_resize(layer, 0, 5),
                DECONV_ERR_INVALID_PARAMETER
            );
            assert_eq!(geometry(layer).in_w, 5);
        }
        free(layer);
    }

    /// The header promises that buffer pointers survive forward, backward and update (only
    /// resize, denormalize and free invalidate them): check it for every buffer.
    #[test]
    fn buffer_pointers_are_stable_across_calls() {
        let mut cfg = config(2, 2, 3, 3, 2, 3);
        cfg.batch_normalize = 1;
        cfg.adam = 1;
        let layer = create(&cfg);
        let g = geometry(layer);
        let pointers = || {
            deconv_buffer::ALL.map(|b| {
                let (mut data, mut len) = (null(), 0);
                // SAFETY: valid pointers.
                let st = unsafe { deconv_layer_buffer(layer, b as c_int, &mut data, &mut len) };
                assert_eq!(st, DECONV_OK);
                (data, len)
            })
        };
        let before = pointers();
        let x = vec![0.5f32; g.input_len];
        let mut args = std::mem::MaybeUninit::uninit();
        // SAFETY: (all calls) valid pointers and lengths.
        unsafe {
            assert_eq!(
                deconv_layer_forward(layer, x.as_ptr(), x.len(), 0),
                DECONV_OK
            );
            assert_eq!(
                deconv_layer_backward(layer, x.as_ptr(), x.len(), null_mut(), 0),
                DECONV_OK
            );
            assert_eq!(
                deconv_update_args_adam(args.as_mut_ptr(), 0.01, 0.0, 2),
                DECONV_OK
            );
            assert_eq!(deconv_layer_update(layer, args.as_ptr()), DECONV_OK);
            assert_eq!(
                deconv_layer_forward(layer, x.as_ptr(), x.len(), 1),
                DECONV_OK
            );
        }
        assert_eq!(pointers(), before);
        free(layer);
    }

    #[test]
    fn own_workspace_off() {
        let mut cfg = config(1, 2, 3, 3, 2, 3);
        cfg.own_workspace = 0;
        let layer = create(&cfg);
        let g = geometry(layer);
        let x = vec![1.0f32; g.input_len];
        let mut ws = vec![0.0f32; g.workspace_size + 5];
        let mut dx = vec![0.0f32; g.input_len];
        // SAFETY: (all calls) valid pointers and lengths.
        unsafe {
            assert_eq!(
                deconv_layer_forward(layer, x.as_ptr(), x.len(), 0),
                DECONV_ERR_INVALID_STATE
            );
            assert_eq!(
                deconv_layer_forward_with_workspace(
                    layer,
                    x.as_ptr(),
                    x.len(),
                    0,
                    ws.as_mut_ptr(),
                    g.workspace_size - 1
                ),
                DECONV_ERR_BUFFER_LENGTH
            );
            assert_eq!(
                deconv_layer_forward_with_workspace(
                    layer,
                    x.as_ptr(),
                    x.len(),
                    0,
                    ws.as_mut_ptr(),
                    ws.len()
                ),
                DECONV_OK
            );
            // The workspace may not overlap the input delta.
            assert_eq!(
                deconv_layer_backward_with_workspace(
                    layer,
                    x.as_ptr(),
                    x.len(),
                    ws.as_mut_ptr(),
                    g.input_len,
                    ws.as_mut_ptr(),
                    ws.len()
                ),
                DECONV_ERR_INVALID_PARAMETER
            );
            assert!(
                last_error().contains("overlaps input_delta"),
                "{}",
                last_error()
            );
            assert_eq!(
                deconv_layer_backward_with_workspace(
                    layer,
                    x.as_ptr(),
                    x.len(),
                    dx.as_mut_ptr(),
                    dx.len(),
                    ws.as_mut_ptr(),
                    ws.len()
                ),
                DECONV_OK
            );
        }
        free(layer);
    }

    #[test]
    fn panic_becomes_a_status_and_poisons_the_layer() {
        let cfg = config(1, 1, 2, 2, 1, 2);
        let layer = create(&cfg);
        let x = [1.0f32; 4];
        PANIC_NEXT.with(|p| p.set(true));
        // SAFETY: (all calls) valid pointers and lengths.
        unsafe {
            assert_eq!(
                deconv_layer_forward(layer, x.as_ptr(), 4, 0),
                DECONV_ERR_PANIC
            );
            assert!(
                last_error().contains("injected test panic"),
                "{}",
                last_error()
            );
            assert_eq!(
                deconv_layer_forward(layer, x.as_ptr(), 4, 0),
                DECONV_ERR_INVALID_STATE
            );
            assert!(last_error().contains("panicked"));
            let mut g = std::mem::MaybeUninit::uninit();
            assert_eq!(
                deconv_layer_geometry(layer, g.as_mut_ptr()),
                DECONV_ERR_INVALID_STATE
            );
        }
        free(layer);
        // `run` itself catches panics from any body.
        assert_eq!(run("f", || panic!("{}", 42)), DECONV_ERR_PANIC);
        assert!(last_error().starts_with("f: panic"), "{}", last_error());
        assert!(last_error().ends_with("42"), "{}", last_error());
    }

    #[test]
    fn weights_round_trip_through_files_and_memory() {
        let mut cfg = config(2, 3, 4, 4, 2, 3);
        cfg.batch_normalize = 1;
        cfg.seed = 5;
        let a = create(&cfg);
        let g = geometry(a);
        set(a, DECONV_BUFFER_ROLLING_MEAN, &[0.25, -0.5]);
        set(a, DECONV_BUFFER_BIASES, &[1.5, 2.5]);
        cfg.seed = 6;
        let b = create(&cfg);
        let c = create(&cfg);
        let dir = std::env::temp_dir().join(format!("deconv-capi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = CString::new(dir.join("a.weights").to_str().unwrap()).unwrap();
        let missing = CString::new(dir.join("missing.weights").to_str().unwrap()).unwrap();
        let mut header = std::mem::MaybeUninit::uninit();
        // SAFETY: (all calls) valid pointers and lengths; the nulls are what is tested.
        unsafe {
            assert_eq!(
                deconv_weights_header_default(header.as_mut_ptr(), 1234),
                DECONV_OK
            );
            let header = header.assume_init();
            assert_eq!((header.major, header.minor, header.seen), (0, 2, 1234));
            assert_eq!(
                deconv_layer_save_weights(a, path.as_ptr(), &header),
                DECONV_OK
            );
            let mut read_header = deconv_weights_header {
                major: 9,
                minor: 9,
                revision: 9,
                seen: 9,
            };
            assert_eq!(
                deconv_layer_load_weights(b, path.as_ptr(), 1, &mut read_header),
                DECONV_OK
            );
            assert_eq!(read_header, header);
            assert_eq!(
                deconv_layer_load_weights(b, missing.as_ptr(), 0, null_mut()),
                DECONV_ERR_IO
            );
            assert!(last_error().contains("missing.weights"), "{}", last_error());
            assert_eq!(
                deconv_layer_load_weights(b, null(), 0, null_mut()),
                DECONV_ERR_NULL_POINTER
            );
            assert_eq!(
                deconv_layer_save_weights(a, null(), null()),
                DECONV_ERR_NULL_POINTER
            );
            // In memory: exact length required for writing; reading checks the size.
            let mut bytes = 0usize;
            assert_eq!(
                deconv_layer_weights_byte_len(a, null(), &mut bytes),
                DECONV_OK
            );
            let floats = 2 * 4 + g.weight_count; // biases, scales, mean, variance; weights
            assert_eq!(bytes, 20 + 4 * floats);
            let mut data = vec![0u8; bytes + 1];
            assert_eq!(
                deconv_layer_write_weights(a, null(), data.as_mut_ptr(), bytes + 1),
                DECONV_ERR_BUFFER_LENGTH
            );
            assert_eq!(
                deconv_layer_write_weights(a, null(), data.as_mut_ptr(), bytes),
                DECONV_OK
            );
            assert_eq!(
                deconv_layer_read_weights(c, data.as_ptr(), bytes - 1, 0, null_mut()),
                DECONV_ERR_FORMAT
            );
            assert!(last_error().contains("expected"), "{}", last_error());
            assert_eq!(
                deconv_layer_read_weights(c, data.as_ptr(), bytes + 1, 0, null_mut()),
                DECONV_ERR_FORMAT
            );
            // A NaN weight (the last float) is rejected when asked, accepted otherwise.
            data[bytes - 4..bytes].copy_from_slice(&f32::NAN.to_le_bytes());
            assert_eq!(
                deconv_layer_read_weights(c, data.as_ptr(), bytes, 1, null_mut()),
                DECONV_ERR_FORMAT
            );
            assert!(last_error().contains("non-finite"), "{}", last_error());
            assert_eq!(
                deconv_layer_read_weights(c, data.as_ptr(), bytes, 0, null_mut()),
                DECONV_OK
            );
            // The layer's own buffer as the data is refused.
            let (mut w, mut n) = (null(), 0);
            assert_eq!(
                deconv_layer_buffer(c, DECONV_BUFFER_WEIGHTS as c_int, &mut w, &mut n),
                DECONV_OK
            );
            assert_eq!(
                deconv_layer_read_weights(c, w.cast(), n * 4, 0, null_mut()),
                DECONV_ERR_INVALID_PARAMETER
            );
        }
        for which in [
            DECONV_BUFFER_WEIGHTS,
            DECONV_BUFFER_BIASES,
            DECONV_BUFFER_SCALES,
            DECONV_BUFFER_ROLLING_MEAN,
            DECONV_BUFFER_ROLLING_VARIANCE,
        ] {
            let len = if which == DECONV_BUFFER_WEIGHTS {
                g.weight_count
            } else {
                2
            };
            assert_eq!(get(b, which, len), get(a, which, len), "{which:?}");
        }
        let wc = g.weight_count;
        assert_eq!(
            get(c, DECONV_BUFFER_WEIGHTS, wc)[..wc - 1],
            get(a, DECONV_BUFFER_WEIGHTS, wc)[..wc - 1]
        );
        assert!(get(c, DECONV_BUFFER_WEIGHTS, wc)[wc - 1].is_nan());
        std::fs::remove_dir_all(&dir).unwrap();
        for l in [a, b, c] {
            free(l);
        }
    }

    #[test]
    fn config_from_darknet_cfg() {
        let text = c"[deconvolutional]
batch_normalize=1
filters=2
size=4
stride=2
pad=1
activation=leaky
";
        let mut cfg = config(1, 1, 1, 1, 1, 1);
        // SAFETY: (all calls) valid pointers.
        unsafe {
            assert_eq!(
                deconv_config_from_cfg(text.as_ptr(), 1, 3, 8, 8, &mut cfg),
                DECONV_OK
            );
            assert_eq!(
                (
                    cfg.filters,
                    cfg.kernel,
                    cfg.stride,
                    cfg.pad,
                    cfg.batch_normalize
                ),
                (2, [4, 4], [2, 2], [2, 2], 1)
            );
            assert_eq!(
                cfg.activation,
                deconv_activation::DECONV_ACTIVATION_LEAKY as c_int
            );
            assert_eq!(
                deconv_config_from_cfg(c"size=3x".as_ptr(), 1, 3, 8, 8, &mut cfg),
                DECONV_ERR_FORMAT
            );
            assert!(last_error().contains("size"), "{}", last_error());
            assert_eq!(
                deconv_config_from_cfg(null(), 1, 3, 8, 8, &mut cfg),
                DECONV_ERR_NULL_POINTER
            );
        }
    }

    #[test]
    fn last_error_is_per_thread_and_kept_on_success() {
        // SAFETY: null is what is tested.
        let st = unsafe { deconv_layer_resize(null_mut(), 1, 1) };
        assert_eq!(st, DECONV_ERR_NULL_POINTER);
        let here = last_error();
        assert!(here.contains("deconv_layer_resize"));
        let there = std::thread::spawn(last_error).join().unwrap();
        assert_eq!(there, "");
        let mut compiled = 0;
        // SAFETY: valid pointer.
        let st = unsafe { deconv_backend_compiled(0, &mut compiled) };
        assert_eq!(st, DECONV_OK);
        assert_eq!(last_error(), here);
    }
}
