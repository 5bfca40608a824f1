//! Configuration and the `int` codes (activation, mode, optimizer, backend, algorithm), the
//! `deconv_config` and `deconv_update_args` structs, and the functions that fill them.

use std::ffi::c_int;

use super::args::check_out;
use super::precision::Real;
use super::status::{Fail, Res, deconv_status, run};
use crate::activation::Activation;
use crate::backend::{AnyBackend, Gemm};
use crate::config::{Algorithm, DeconvConfig};
use crate::layer::{Mode, Optimizer, UpdateArgs};

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
    /// No GEMM: each kernel tap adds a shifted input plane to one output phase plane; for
    /// layers with few channels per group (depthwise).
    DECONV_ALGORITHM_DIRECT = 3,
}

impl deconv_algorithm {
    const ALL: [(deconv_algorithm, Algorithm); 4] = [
        (deconv_algorithm::DECONV_ALGORITHM_AUTO, Algorithm::Auto),
        (
            deconv_algorithm::DECONV_ALGORITHM_COLUMNS,
            Algorithm::Columns,
        ),
        (deconv_algorithm::DECONV_ALGORITHM_PHASES, Algorithm::Phases),
        (deconv_algorithm::DECONV_ALGORITHM_DIRECT, Algorithm::Direct),
    ];

    pub(super) fn to_rust(code: c_int) -> Res<Algorithm> {
        Self::ALL
            .into_iter()
            .find(|(c, _)| *c as c_int == code)
            .map(|(_, a)| a)
            .ok_or_else(|| Fail::code("algorithm", code))
    }

    pub(super) fn from_rust(algorithm: Algorithm) -> c_int {
        Self::ALL
            .into_iter()
            .find(|(_, a)| *a == algorithm)
            .map_or(deconv_algorithm::DECONV_ALGORITHM_AUTO, |(c, _)| c) as c_int
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
    /// Non-zero (default): the layer holds gradient state and can train. With 0 it is for
    /// inference only: no delta, gradients or Adam buffers (their buffers have length 0), and
    /// a training forward, backward or update is `DECONV_ERR_INVALID_STATE`.
    pub training: c_int,
    /// Seed of the weight initialization (default 0).
    pub seed: u64,
}

impl deconv_config {
    pub(super) fn from_rust(c: &DeconvConfig) -> Self {
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
            training: c.training.into(),
            seed: c.seed,
        }
    }

    pub(super) fn to_rust(self) -> Res<DeconvConfig> {
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
        c.training = self.training != 0;
        c.seed = self.seed;
        Ok(c)
    }
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

/// `deconv_update_args` in `double`, for `deconv_layer_update_f64`; fill with
/// `deconv_update_args_sgd_f64()` or `deconv_update_args_adam_f64()`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct deconv_update_args_f64 {
    /// Learning rate (multiplied by the layer's learning-rate scale, default 1).
    pub learning_rate: f64,
    /// Momentum (SGD only).
    pub momentum: f64,
    /// Weight decay (weights only).
    pub decay: f64,
    /// Images the accumulated gradients are summed over (Darknet `batch * subdivisions`), >= 1.
    pub batch: usize,
    /// A `deconv_optimizer` code.
    pub optimizer: c_int,
    /// Adam's first-moment decay (Darknet `B1`, default .9).
    pub beta1: f64,
    /// Adam's second-moment decay (Darknet `B2`, default .999).
    pub beta2: f64,
    /// Adam's epsilon (Darknet `eps`, default 1e-7).
    pub epsilon: f64,
}

/// The update arguments of a precision: `deconv_update_args` or `deconv_update_args_f64`.
pub(super) trait UpdateArgsOf: Copy {
    /// The element type.
    type T: Real;
    /// The struct with these values.
    fn new(learning_rate: Self::T, momentum: Self::T, decay: Self::T, batch: usize) -> Self;
    /// As [`UpdateArgs`], or an unknown optimizer code.
    fn to_rust(self) -> Res<UpdateArgs<Self::T>>;
}

/// The same fields in both structs: one body for both.
macro_rules! update_args_of {
    ($args:ty, $t:ty) => {
        impl UpdateArgsOf for $args {
            type T = $t;
            fn new(learning_rate: $t, momentum: $t, decay: $t, batch: usize) -> Self {
                // SGD, with Darknet's Adam defaults (`Optimizer::adam`) in the Adam fields.
                Self {
                    learning_rate,
                    momentum,
                    decay,
                    batch,
                    optimizer: deconv_optimizer::DECONV_OPTIMIZER_SGD as c_int,
                    beta1: 0.9,
                    beta2: 0.999,
                    epsilon: 1e-7,
                }
            }
            fn to_rust(self) -> Res<UpdateArgs<$t>> {
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
    };
}
update_args_of!(deconv_update_args, f32);
update_args_of!(deconv_update_args_f64, f64);

pub(super) fn mode_from_code(mode: c_int) -> Res<Mode> {
    match mode {
        m if m == deconv_mode::DECONV_MODE_TRAIN as c_int => Ok(Mode::Train),
        m if m == deconv_mode::DECONV_MODE_INFERENCE as c_int => Ok(Mode::Inference),
        m => Err(Fail::code("mode", m)),
    }
}

pub(super) fn backend_from_code(code: c_int) -> Res<AnyBackend> {
    use deconv_backend::*;
    let name = match code {
        c if c == DECONV_BACKEND_DEFAULT as c_int => return Ok(AnyBackend::default()),
        c if c == DECONV_BACKEND_MATRIXMULTIPLY as c_int => "matrixmultiply",
        c if c == DECONV_BACKEND_OPENBLAS as c_int => "openblas",
        c => return Err(Fail::code("backend", c)),
    };
    Ok(AnyBackend::from_name(name)?)
}

pub(super) fn backend_code(backend: &AnyBackend) -> deconv_backend {
    match Gemm::<f32>::name(backend) {
        "openblas" => deconv_backend::DECONV_BACKEND_OPENBLAS,
        _ => deconv_backend::DECONV_BACKEND_MATRIXMULTIPLY,
    }
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
    let value = deconv_update_args::new(learning_rate, momentum, decay, batch);
    // SAFETY: this function's contract.
    unsafe { fill("deconv_update_args_sgd", args, value) }
}

/// `deconv_update_args_sgd` for a `double` layer.
///
/// # Safety
/// `args` must be `NULL` (an error) or valid for writing a `deconv_update_args_f64`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_update_args_sgd_f64(
    args: *mut deconv_update_args_f64,
    learning_rate: f64,
    momentum: f64,
    decay: f64,
    batch: usize,
) -> deconv_status {
    let value = deconv_update_args_f64::new(learning_rate, momentum, decay, batch);
    // SAFETY: this function's contract.
    unsafe { fill("deconv_update_args_sgd_f64", args, value) }
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
    let mut value = deconv_update_args::new(learning_rate, 0.0, decay, batch);
    value.optimizer = deconv_optimizer::DECONV_OPTIMIZER_ADAM as c_int;
    // SAFETY: this function's contract.
    unsafe { fill("deconv_update_args_adam", args, value) }
}

/// `deconv_update_args_adam` for a `double` layer.
///
/// # Safety
/// `args` must be `NULL` (an error) or valid for writing a `deconv_update_args_f64`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_update_args_adam_f64(
    args: *mut deconv_update_args_f64,
    learning_rate: f64,
    decay: f64,
    batch: usize,
) -> deconv_status {
    let mut value = deconv_update_args_f64::new(learning_rate, 0.0, decay, batch);
    value.optimizer = deconv_optimizer::DECONV_OPTIMIZER_ADAM as c_int;
    // SAFETY: this function's contract.
    unsafe { fill("deconv_update_args_adam_f64", args, value) }
}

/// Writes `value` to the out-parameter `args`.
///
/// # Safety
/// `args` is `NULL` or valid for writing an `A`.
unsafe fn fill<A: UpdateArgsOf>(func: &str, args: *mut A, value: A) -> deconv_status {
    run(func, || {
        check_out("args", args)?;
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { args.write(value) };
        Ok(())
    })
}
