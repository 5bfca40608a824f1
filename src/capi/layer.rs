//! The layer handle: how a call reaches it (poisoning, pointers vouched for), creating,
//! cloning and freeing it, and the queries.

use std::ffi::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use super::args::check_out;
use super::config::{backend_code, backend_from_code, deconv_config};
use super::precision::{AnyLayer, LayerOf, Real, each_layer};
use super::status::{Fail, Res, deconv_status, run};
use super::threads;

/// An opaque layer: `DeconvLayer<float or double, AnyBackend>`. Create with
/// `deconv_layer_create` (float) or `deconv_layer_create_f64` (double), free with
/// `deconv_layer_free`.
pub struct deconv_layer {
    layer: AnyLayer,
    /// Set when a call on this layer panicked: its state may be inconsistent.
    poisoned: bool,
}

/// Runs `body` on a layer handle, on the library's threads ([`threads::install`]), marking
/// the handle poisoned if `body` panics.
fn on_handle<H, R: Send>(
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
        super::tests::maybe_panic();
        threads::install(|| body(handle))
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
pub(super) struct Vouched<P>(P);

impl<P> Vouched<P> {
    /// # Safety
    /// `ptr` is `NULL` or a live handle from `deconv_layer_create`/`deconv_layer_clone`, not
    /// used by another thread (nor freed) during the call it is passed to.
    pub(super) unsafe fn new(ptr: P) -> Self {
        Vouched(ptr)
    }
}

/// [`run`] with the layer behind `layer`, of either precision, borrowed mutably.
pub(super) fn with_handle(
    func: &str,
    layer: Vouched<*mut deconv_layer>,
    body: impl FnOnce(&mut AnyLayer) -> Res<()>,
) -> deconv_status {
    run(func, || {
        // SAFETY: `Vouched`: null or valid, and not aliased during the call.
        let handle = unsafe { layer.0.as_mut() }.ok_or_else(|| Fail::null("layer"))?;
        on_handle(handle, |h| &mut h.poisoned, |h| body(&mut h.layer))
    })
}

/// [`run`] with the layer behind `layer`, of either precision, borrowed shared.
pub(super) fn with_handle_ref(
    func: &str,
    layer: Vouched<*const deconv_layer>,
    body: impl FnOnce(&AnyLayer) -> Res<()>,
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
        super::tests::maybe_panic();
        threads::install(|| body(&handle.layer))
    })
}

/// [`with_handle`] for a function on `T` layers: another precision is an error naming the
/// function to call instead.
pub(super) fn with_layer<T: Real>(
    func: &str,
    layer: Vouched<*mut deconv_layer>,
    body: impl FnOnce(&mut LayerOf<T>) -> Res<()>,
) -> deconv_status {
    with_handle(func, layer, |l| body(l.get_mut::<T>(func)?))
}

/// [`with_handle_ref`] for a function on `T` layers.
pub(super) fn with_layer_ref<T: Real>(
    func: &str,
    layer: Vouched<*const deconv_layer>,
    body: impl FnOnce(&LayerOf<T>) -> Res<()>,
) -> deconv_status {
    with_handle_ref(func, layer, |l| body(l.get::<T>(func)?))
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

// ---------------------------------------------------------------------------------------------
// Creating and freeing layers.

/// Creates a `float` layer from `*config` on `backend` (a `deconv_backend` code) and stores the
/// handle in `*out` (`NULL` on failure). Weights are drawn from `N(0, .02)` with `config->seed`,
/// scaled by `out_h*out_w / (h*w)` as Darknet does; biases are 0, batch-norm scales 1.
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
    // SAFETY: this function's contract.
    unsafe { create::<f32>("deconv_layer_create", config, backend, out) }
}

/// `deconv_layer_create` for a `double` layer: the same weights (drawn in double), used with
/// the `_f64` functions. Every function without a floating-point argument takes either layer.
///
/// # Safety
/// As `deconv_layer_create`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_create_f64(
    config: *const deconv_config,
    backend: c_int,
    out: *mut *mut deconv_layer,
) -> deconv_status {
    // SAFETY: this function's contract.
    unsafe { create::<f64>("deconv_layer_create_f64", config, backend, out) }
}

/// The body of `deconv_layer_create` and `deconv_layer_create_f64`.
///
/// # Safety
/// As `deconv_layer_create`.
unsafe fn create<T: Real>(
    func: &str,
    config: *const deconv_config,
    backend: c_int,
    out: *mut *mut deconv_layer,
) -> deconv_status {
    run(func, || {
        check_out("out", out)?;
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { out.write(std::ptr::null_mut()) };
        check_out("config", config.cast_mut())?;
        // SAFETY: checked non-null and aligned; the caller guarantees it is readable. The
        // struct is plain data (integers) so any bit pattern is a valid value.
        let config = unsafe { config.read() }.to_rust()?;
        let backend = backend_from_code(backend)?;
        // On the library's threads: the layer has a workspace slot per thread it sees.
        let backend = T::backend(backend);
        let layer = threads::install(|| LayerOf::<T>::with_backend(&config, backend))?;
        let handle = Box::into_raw(Box::new(deconv_layer {
            layer: T::wrap(layer),
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
    with_handle_ref("deconv_layer_clone", layer, |l| {
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
    with_handle_ref("deconv_layer_config", layer, |l| {
        check_out("config", config)?;
        let value = each_layer!(l, l => deconv_config::from_rust(l.config()));
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { config.write(value) };
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
    with_handle_ref("deconv_layer_geometry", layer, |l| {
        check_out("geometry", geometry)?;
        let (g, workspace_size) = each_layer!(l, l => (*l.geometry(), l.workspace_size()));
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
            workspace_size,
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
    with_handle_ref("deconv_layer_backend", layer, |l| {
        check_out("backend", backend)?;
        let code = each_layer!(l, l => backend_code(l.backend()));
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { backend.write(code as c_int) };
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
    // SAFETY: this function's contract.
    unsafe { learning_rate_scale("deconv_layer_learning_rate_scale", layer, scale) }
}

/// `deconv_layer_learning_rate_scale` of a `double` layer.
///
/// # Safety
/// As `deconv_layer_learning_rate_scale`, with a `double`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_learning_rate_scale_f64(
    layer: *const deconv_layer,
    scale: *mut f64,
) -> deconv_status {
    // SAFETY: this function's contract.
    unsafe { learning_rate_scale("deconv_layer_learning_rate_scale_f64", layer, scale) }
}

/// # Safety
/// As `deconv_layer_learning_rate_scale`, with a `T`.
unsafe fn learning_rate_scale<T: Real>(
    func: &str,
    layer: *const deconv_layer,
    scale: *mut T,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (the
    // caller's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer_ref::<T>(func, layer, |l| {
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
    // SAFETY: this function's contract.
    unsafe { set_learning_rate_scale("deconv_layer_set_learning_rate_scale", layer, scale) }
}

/// `deconv_layer_set_learning_rate_scale` of a `double` layer.
///
/// # Safety
/// As `deconv_layer_set_learning_rate_scale`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_set_learning_rate_scale_f64(
    layer: *mut deconv_layer,
    scale: f64,
) -> deconv_status {
    // SAFETY: this function's contract.
    unsafe { set_learning_rate_scale("deconv_layer_set_learning_rate_scale_f64", layer, scale) }
}

/// # Safety
/// `layer` is `NULL` or a live handle not used elsewhere during the call.
unsafe fn set_learning_rate_scale<T: Real>(
    func: &str,
    layer: *mut deconv_layer,
    scale: T,
) -> deconv_status {
    // SAFETY: the caller's contract.
    let layer = unsafe { Vouched::new(layer) };
    with_layer::<T>(func, layer, |l| {
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
    with_handle_ref("deconv_layer_adam_step", layer, |l| {
        check_out("step", step)?;
        let t = each_layer!(l, l => l.adam_step()).ok_or_else(|| {
            Fail::state("the layer has no Adam state (create it with adam != 0)".into())
        })?;
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { step.write(t) };
        Ok(())
    })
}

/// Sets the number of Adam steps taken (Darknet `t`): with the Adam buffers
/// (`DECONV_BUFFER_ADAM_*`, through `deconv_layer_set`) it restores an optimizer state saved
/// with `deconv_layer_adam_step` and `deconv_layer_get`, e.g. at a restart from a checkpoint.
/// `DECONV_ERR_INVALID_STATE` for a layer created without `adam`.
///
/// # Safety
/// `layer` must be `NULL` (an error) or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_set_adam_step(
    layer: *mut deconv_layer,
    step: u64,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (this
    // function's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_handle("deconv_layer_set_adam_step", layer, |l| {
        each_layer!(l, l => l.set_adam_step(step))?;
        Ok(())
    })
}
