//! The element type of a layer: `float` (`deconv_layer_create`) or `double`
//! (`deconv_layer_create_f64`). One handle type holds either. A call that passes or returns
//! floating-point values comes in two spellings, `deconv_layer_forward` for a float layer and
//! `deconv_layer_forward_f64` for a double one, both thin wrappers around one generic body
//! (cbindgen reads no macro output, so the wrappers are written out); every other call takes
//! either layer.

use std::ffi::c_int;

use super::args::check_out;
use super::layer::{Vouched, deconv_layer, with_handle_ref};
use super::status::{Fail, Res, deconv_status};
use crate::backend::{AnyBackend, Gemm};
use crate::element::Element;
use crate::layer::DeconvLayer;

/// Element types of a layer, from `deconv_layer_precision`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum deconv_precision {
    /// `float`: created by `deconv_layer_create`; use the functions without a suffix.
    DECONV_PRECISION_F32 = 0,
    /// `double`: created by `deconv_layer_create_f64`; use the `_f64` functions.
    DECONV_PRECISION_F64 = 1,
}

/// The layer inside a handle, in either precision.
#[derive(Debug, Clone)]
pub(super) enum AnyLayer {
    F32(DeconvLayer<f32, AnyBackend>),
    F64(DeconvLayer<f64, AnyBackend>),
}

impl AnyLayer {
    /// A copy, or `Error::Allocation` where `Clone` would abort the process.
    pub(super) fn try_clone(&self) -> crate::Result<Self> {
        Ok(match self {
            AnyLayer::F32(l) => AnyLayer::F32(l.try_clone()?),
            AnyLayer::F64(l) => AnyLayer::F64(l.try_clone()?),
        })
    }
}

/// Runs the same body on the layer of either precision: `each_layer!(any, l => l.resize(h, w))`.
macro_rules! each_layer {
    ($any:expr, $l:ident => $body:expr) => {
        match $any {
            $crate::capi::precision::AnyLayer::F32($l) => $body,
            $crate::capi::precision::AnyLayer::F64($l) => $body,
        }
    };
}
pub(super) use each_layer;

/// The layer of element type `T` in a handle.
pub(super) type LayerOf<T> = DeconvLayer<T, <T as Real>::Backend>;

/// The element types of the C API, and how each finds its layer in a handle.
pub(super) trait Real: Element {
    /// `AnyBackend` (an associated type, so that generic code knows it computes in `Self`).
    type Backend: Gemm<Self>;
    /// `backend` as [`Self::Backend`].
    fn backend(backend: AnyBackend) -> Self::Backend;
    /// The C type: `float` or `double`.
    const C_NAME: &'static str;
    /// The `deconv_precision` code.
    const PRECISION: deconv_precision;
    fn layer_of(any: &AnyLayer) -> Option<&LayerOf<Self>>;
    fn layer_of_mut(any: &mut AnyLayer) -> Option<&mut LayerOf<Self>>;
    fn wrap(layer: LayerOf<Self>) -> AnyLayer;
}

impl Real for f32 {
    type Backend = AnyBackend;
    fn backend(backend: AnyBackend) -> AnyBackend {
        backend
    }
    const C_NAME: &'static str = "float";
    const PRECISION: deconv_precision = deconv_precision::DECONV_PRECISION_F32;
    fn layer_of(any: &AnyLayer) -> Option<&DeconvLayer<f32, AnyBackend>> {
        match any {
            AnyLayer::F32(l) => Some(l),
            AnyLayer::F64(_) => None,
        }
    }
    fn layer_of_mut(any: &mut AnyLayer) -> Option<&mut DeconvLayer<f32, AnyBackend>> {
        match any {
            AnyLayer::F32(l) => Some(l),
            AnyLayer::F64(_) => None,
        }
    }
    fn wrap(layer: DeconvLayer<f32, AnyBackend>) -> AnyLayer {
        AnyLayer::F32(layer)
    }
}

impl Real for f64 {
    type Backend = AnyBackend;
    fn backend(backend: AnyBackend) -> AnyBackend {
        backend
    }
    const C_NAME: &'static str = "double";
    const PRECISION: deconv_precision = deconv_precision::DECONV_PRECISION_F64;
    fn layer_of(any: &AnyLayer) -> Option<&DeconvLayer<f64, AnyBackend>> {
        match any {
            AnyLayer::F64(l) => Some(l),
            AnyLayer::F32(_) => None,
        }
    }
    fn layer_of_mut(any: &mut AnyLayer) -> Option<&mut DeconvLayer<f64, AnyBackend>> {
        match any {
            AnyLayer::F64(l) => Some(l),
            AnyLayer::F32(_) => None,
        }
    }
    fn wrap(layer: DeconvLayer<f64, AnyBackend>) -> AnyLayer {
        AnyLayer::F64(layer)
    }
}

impl AnyLayer {
    pub(super) fn precision(&self) -> deconv_precision {
        match self {
            AnyLayer::F32(_) => deconv_precision::DECONV_PRECISION_F32,
            AnyLayer::F64(_) => deconv_precision::DECONV_PRECISION_F64,
        }
    }

    /// The layer as `T`, or an error naming the function `func` should have been.
    pub(super) fn get<T: Real>(&self, func: &str) -> Res<&LayerOf<T>> {
        let precision = self.precision();
        T::layer_of(self).ok_or_else(|| wrong_precision(func, precision))
    }

    /// [`get`](Self::get), writable.
    pub(super) fn get_mut<T: Real>(&mut self, func: &str) -> Res<&mut LayerOf<T>> {
        let precision = self.precision();
        T::layer_of_mut(self).ok_or_else(|| wrong_precision(func, precision))
    }
}

/// `func` was called on a layer of the other precision: name the twin to call.
fn wrong_precision(func: &str, layer: deconv_precision) -> Fail {
    let (kind, twin) = match layer {
        deconv_precision::DECONV_PRECISION_F64 => {
            ("double (deconv_layer_create_f64)", format!("{func}_f64"))
        }
        deconv_precision::DECONV_PRECISION_F32 => (
            "float (deconv_layer_create)",
            func.strip_suffix("_f64").unwrap_or(func).to_owned(),
        ),
    };
    Fail::param(format!("the layer computes in {kind}: call {twin}"))
}

/// Sets `*precision` to the layer's `deconv_precision` code: `DECONV_PRECISION_F32` for a layer
/// from `deconv_layer_create`, `DECONV_PRECISION_F64` from `deconv_layer_create_f64`.
///
/// # Safety
/// `layer` must be `NULL` or a live handle; `precision` must be `NULL` or valid for writing an
/// `int`. A `NULL` in either is an error.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_precision(
    layer: *const deconv_layer,
    precision: *mut c_int,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_handle_ref("deconv_layer_precision", layer, |l| {
        check_out("precision", precision)?;
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { precision.write(l.precision() as c_int) };
        Ok(())
    })
}
