//! The layer's buffers: their codes, pointers to them, and copies in and out.

use std::ffi::c_int;

use super::args::{check_buffer, check_out};
use super::layer::{Vouched, deconv_layer, with_layer, with_layer_ref};
use super::precision::{AnyLayer, LayerOf, Real, each_layer};
use super::status::{Fail, Res, deconv_status};
use crate::layer::Params;

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
    /// Every accumulated gradient in one buffer: the weight updates, then the bias updates,
    /// then (with batch norm) the scale updates, `weight_count + filters (+ filters)` elements:
    /// what data-parallel training sums over the ranks in one call.
    DECONV_BUFFER_GRADIENTS = 19,
}

use deconv_buffer::*;

impl deconv_buffer {
    pub(super) const ALL: [deconv_buffer; 20] = [
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
        DECONV_BUFFER_GRADIENTS,
    ];

    pub(super) fn from_code(code: c_int) -> Res<Self> {
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
            DECONV_BUFFER_GRADIENTS => "gradients",
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
    pub(super) fn get<T: Real>(self, layer: &LayerOf<T>) -> Res<&[T]> {
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
            DECONV_BUFFER_GRADIENTS => Some(layer.gradients()),
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
    pub(super) fn get_mut<T: Real>(self, layer: &mut LayerOf<T>) -> Res<&mut [T]> {
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
            DECONV_BUFFER_GRADIENTS => Some(layer.gradients_mut()),
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

/// A buffer's name, start address and length in bytes, for the overlap checks.
pub(super) type Range = (&'static str, usize, usize);

/// Address ranges for the overlap checks, without allocating (forward and backward do not
/// allocate, through the C API either): the layer's buffers plus at most three arguments.
pub(super) struct Ranges {
    items: [Range; deconv_buffer::ALL.len() + 3],
    len: usize,
}

impl Ranges {
    /// Every buffer of `layer`.
    pub(super) fn of<T: Real>(layer: &LayerOf<T>) -> Self {
        let mut r = Ranges {
            items: [("", 0, 0); deconv_buffer::ALL.len() + 3],
            len: 0,
        };
        for b in deconv_buffer::ALL {
            if let Ok(s) = b.get(layer) {
                r.push(b.name(), s.as_ptr(), s.len());
            }
        }
        r
    }

    /// Every buffer of `layer`, of either precision.
    pub(super) fn of_any(layer: &AnyLayer) -> Self {
        each_layer!(layer, l => Ranges::of(l))
    }

    /// Adds `len` elements at `ptr`, named `name`.
    pub(super) fn push<T>(&mut self, name: &'static str, ptr: *const T, len: usize) {
        self.items[self.len] = (name, ptr as usize, len.saturating_mul(size_of::<T>()));
        self.len += 1;
    }
}

impl std::ops::Deref for Ranges {
    type Target = [Range];
    fn deref(&self) -> &[Range] {
        &self.items[..self.len]
    }
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
    // SAFETY: this function's contract.
    unsafe { buffer("deconv_layer_buffer", layer, which, data, len) }
}

/// `deconv_layer_buffer` of a `double` layer.
///
/// # Safety
/// As `deconv_layer_buffer`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_buffer_f64(
    layer: *const deconv_layer,
    which: c_int,
    data: *mut *const f64,
    len: *mut usize,
) -> deconv_status {
    // SAFETY: this function's contract.
    unsafe { buffer("deconv_layer_buffer_f64", layer, which, data, len) }
}

/// # Safety
/// As `deconv_layer_buffer`.
unsafe fn buffer<T: Real>(
    func: &str,
    layer: *const deconv_layer,
    which: c_int,
    data: *mut *const T,
    len: *mut usize,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (the
    // caller's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer_ref::<T>(func, layer, |l| {
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
    // SAFETY: this function's contract.
    unsafe { buffer_mut("deconv_layer_buffer_mut", layer, which, data, len) }
}

/// `deconv_layer_buffer_mut` of a `double` layer.
///
/// # Safety
/// As `deconv_layer_buffer_mut`, with doubles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_buffer_mut_f64(
    layer: *mut deconv_layer,
    which: c_int,
    data: *mut *mut f64,
    len: *mut usize,
) -> deconv_status {
    // SAFETY: this function's contract.
    unsafe { buffer_mut("deconv_layer_buffer_mut_f64", layer, which, data, len) }
}

/// # Safety
/// As `deconv_layer_buffer_mut`.
unsafe fn buffer_mut<T: Real>(
    func: &str,
    layer: *mut deconv_layer,
    which: c_int,
    data: *mut *mut T,
    len: *mut usize,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (the
    // caller's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer::<T>(func, layer, |l| {
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
    unsafe {
        buffer(
            "deconv_layer_output",
            layer,
            DECONV_BUFFER_OUTPUT as c_int,
            data,
            len,
        )
    }
}

/// `deconv_layer_output` of a `double` layer.
///
/// # Safety
/// As `deconv_layer_buffer`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_output_f64(
    layer: *const deconv_layer,
    data: *mut *const f64,
    len: *mut usize,
) -> deconv_status {
    // SAFETY: the same contract as this function's.
    unsafe {
        buffer(
            "deconv_layer_output_f64",
            layer,
            DECONV_BUFFER_OUTPUT as c_int,
            data,
            len,
        )
    }
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
    unsafe {
        buffer_mut(
            "deconv_layer_delta",
            layer,
            DECONV_BUFFER_DELTA as c_int,
            data,
            len,
        )
    }
}

/// `deconv_layer_delta` of a `double` layer.
///
/// # Safety
/// As `deconv_layer_buffer_mut`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_delta_f64(
    layer: *mut deconv_layer,
    data: *mut *mut f64,
    len: *mut usize,
) -> deconv_status {
    // SAFETY: the same contract as this function's.
    unsafe {
        buffer_mut(
            "deconv_layer_delta_f64",
            layer,
            DECONV_BUFFER_DELTA as c_int,
            data,
            len,
        )
    }
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
    // SAFETY: this function's contract.
    unsafe { get("deconv_layer_get", layer, which, dst, len) }
}

/// `deconv_layer_get` of a `double` layer.
///
/// # Safety
/// As `deconv_layer_get`, with `len` doubles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_get_f64(
    layer: *const deconv_layer,
    which: c_int,
    dst: *mut f64,
    len: usize,
) -> deconv_status {
    // SAFETY: this function's contract.
    unsafe { get("deconv_layer_get_f64", layer, which, dst, len) }
}

/// # Safety
/// As `deconv_layer_get`.
unsafe fn get<T: Real>(
    func: &str,
    layer: *const deconv_layer,
    which: c_int,
    dst: *mut T,
    len: usize,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (the
    // caller's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer_ref::<T>(func, layer, |l| {
        let which = deconv_buffer::from_code(which)?;
        let src = which.get(l)?;
        check_buffer("dst", dst, len, src.len(), false, &Ranges::of(l))?;
        // SAFETY: `dst` is non-null, aligned, `len` elements long by the caller's contract,
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
    // SAFETY: this function's contract.
    unsafe { set("deconv_layer_set", layer, which, src, len) }
}

/// `deconv_layer_set` of a `double` layer.
///
/// # Safety
/// As `deconv_layer_set`, with `len` doubles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_set_f64(
    layer: *mut deconv_layer,
    which: c_int,
    src: *const f64,
    len: usize,
) -> deconv_status {
    // SAFETY: this function's contract.
    unsafe { set("deconv_layer_set_f64", layer, which, src, len) }
}

/// # Safety
/// As `deconv_layer_set`.
unsafe fn set<T: Real>(
    func: &str,
    layer: *mut deconv_layer,
    which: c_int,
    src: *const T,
    len: usize,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (the
    // caller's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer::<T>(func, layer, |l| {
        let which = deconv_buffer::from_code(which)?;
        let expected = which.get(l)?.len();
        check_buffer("src", src, len, expected, false, &Ranges::of(l))?;
        // SAFETY: `src` is non-null, aligned, `len` elements long by the caller's contract,
        // and does not overlap the layer's buffers (checked), so the layer's `&mut` below
        // does not alias it.
        let src = unsafe { std::slice::from_raw_parts(src, len) };
        which.get_mut(l)?.copy_from_slice(src);
        Ok(())
    })
}
