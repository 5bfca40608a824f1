//! Forward, backward, update, and the calls that reshape the layer (resize, bilinear init,
//! batch-norm folding).

use std::ffi::c_int;

use super::args::{check_buffer, check_out};
use super::buffers::Ranges;
use super::config::{UpdateArgsOf, deconv_update_args, deconv_update_args_f64, mode_from_code};
use super::layer::{Vouched, deconv_layer, with_handle, with_layer};
use super::precision::{Real, each_layer};
use super::status::deconv_status;

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
    // SAFETY: this function's contract.
    unsafe { forward("deconv_layer_forward", layer, input, input_len, mode) }
}

/// `deconv_layer_forward` of a `double` layer.
///
/// # Safety
/// As `deconv_layer_forward`, with doubles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_forward_f64(
    layer: *mut deconv_layer,
    input: *const f64,
    input_len: usize,
    mode: c_int,
) -> deconv_status {
    // SAFETY: this function's contract.
    unsafe { forward("deconv_layer_forward_f64", layer, input, input_len, mode) }
}

/// The body of `deconv_layer_forward` and `deconv_layer_forward_f64`.
///
/// # Safety
/// As `deconv_layer_forward`.
unsafe fn forward<T: Real>(
    func: &str,
    layer: *mut deconv_layer,
    input: *const T,
    input_len: usize,
    mode: c_int,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (the
    // caller's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer::<T>(func, layer, |l| {
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
    // SAFETY: this function's contract.
    unsafe {
        forward_with_workspace(
            "deconv_layer_forward_with_workspace",
            layer,
            input,
            input_len,
            mode,
            workspace,
            workspace_len,
        )
    }
}

/// `deconv_layer_forward_with_workspace` of a `double` layer.
///
/// # Safety
/// As `deconv_layer_forward_with_workspace`, with doubles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_forward_with_workspace_f64(
    layer: *mut deconv_layer,
    input: *const f64,
    input_len: usize,
    mode: c_int,
    workspace: *mut f64,
    workspace_len: usize,
) -> deconv_status {
    // SAFETY: this function's contract.
    unsafe {
        forward_with_workspace(
            "deconv_layer_forward_with_workspace_f64",
            layer,
            input,
            input_len,
            mode,
            workspace,
            workspace_len,
        )
    }
}

/// The body of `deconv_layer_forward_with_workspace` and `deconv_layer_forward_with_workspace_f64`.
///
/// # Safety
/// As `deconv_layer_forward_with_workspace`.
unsafe fn forward_with_workspace<T: Real>(
    func: &str,
    layer: *mut deconv_layer,
    input: *const T,
    input_len: usize,
    mode: c_int,
    workspace: *mut T,
    workspace_len: usize,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (the
    // caller's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer::<T>(func, layer, |l| {
        let mode = mode_from_code(mode)?;
        let g = *l.geometry();
        let mut others = Ranges::of(l);
        let expected = g.batch() * g.inputs();
        check_buffer("input", input, input_len, expected, false, &others)?;
        others.push("input", input, input_len);
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
    // SAFETY: this function's contract.
    unsafe {
        backward(
            "deconv_layer_backward",
            layer,
            input,
            input_len,
            input_delta,
            input_delta_len,
        )
    }
}

/// `deconv_layer_backward` of a `double` layer.
///
/// # Safety
/// As `deconv_layer_backward`, with doubles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_backward_f64(
    layer: *mut deconv_layer,
    input: *const f64,
    input_len: usize,
    input_delta: *mut f64,
    input_delta_len: usize,
) -> deconv_status {
    // SAFETY: this function's contract.
    unsafe {
        backward(
            "deconv_layer_backward_f64",
            layer,
            input,
            input_len,
            input_delta,
            input_delta_len,
        )
    }
}

/// The body of `deconv_layer_backward` and `deconv_layer_backward_f64`.
///
/// # Safety
/// As `deconv_layer_backward`.
unsafe fn backward<T: Real>(
    func: &str,
    layer: *mut deconv_layer,
    input: *const T,
    input_len: usize,
    input_delta: *mut T,
    input_delta_len: usize,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (the
    // caller's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer::<T>(func, layer, |l| {
        let g = *l.geometry();
        let mut others = Ranges::of(l);
        let expected = g.batch() * g.inputs();
        check_buffer("input", input, input_len, expected, false, &others)?;
        others.push("input", input, input_len);
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
    // SAFETY: this function's contract.
    unsafe {
        backward_with_workspace(
            "deconv_layer_backward_with_workspace",
            layer,
            input,
            input_len,
            input_delta,
            input_delta_len,
            workspace,
            workspace_len,
        )
    }
}

/// `deconv_layer_backward_with_workspace` of a `double` layer.
///
/// # Safety
/// As `deconv_layer_backward_with_workspace`, with doubles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_backward_with_workspace_f64(
    layer: *mut deconv_layer,
    input: *const f64,
    input_len: usize,
    input_delta: *mut f64,
    input_delta_len: usize,
    workspace: *mut f64,
    workspace_len: usize,
) -> deconv_status {
    // SAFETY: this function's contract.
    unsafe {
        backward_with_workspace(
            "deconv_layer_backward_with_workspace_f64",
            layer,
            input,
            input_len,
            input_delta,
            input_delta_len,
            workspace,
            workspace_len,
        )
    }
}

/// The body of `deconv_layer_backward_with_workspace` and `deconv_layer_backward_with_workspace_f64`.
///
/// # Safety
/// As `deconv_layer_backward_with_workspace`.
#[allow(clippy::too_many_arguments)] // the C function's seven, and its name
unsafe fn backward_with_workspace<T: Real>(
    func: &str,
    layer: *mut deconv_layer,
    input: *const T,
    input_len: usize,
    input_delta: *mut T,
    input_delta_len: usize,
    workspace: *mut T,
    workspace_len: usize,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (the
    // caller's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer::<T>(func, layer, |l| {
        let g = *l.geometry();
        let mut others = Ranges::of(l);
        let expected = g.batch() * g.inputs();
        check_buffer("input", input, input_len, expected, false, &others)?;
        others.push("input", input, input_len);
        if !input_delta.is_null() {
            check_buffer(
                "input_delta",
                input_delta,
                input_delta_len,
                expected,
                false,
                &others,
            )?;
            others.push("input_delta", input_delta, input_delta_len);
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
    // SAFETY: this function's contract.
    unsafe { update("deconv_layer_update", layer, args) }
}

/// `deconv_layer_update` of a `double` layer, with `double` arguments.
///
/// # Safety
/// As `deconv_layer_update`, with a `deconv_update_args_f64`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_layer_update_f64(
    layer: *mut deconv_layer,
    args: *const deconv_update_args_f64,
) -> deconv_status {
    // SAFETY: this function's contract.
    unsafe { update("deconv_layer_update_f64", layer, args) }
}

/// The body of `deconv_layer_update` and `deconv_layer_update_f64`.
///
/// # Safety
/// As `deconv_layer_update`.
unsafe fn update<A: UpdateArgsOf>(
    func: &str,
    layer: *mut deconv_layer,
    args: *const A,
) -> deconv_status {
    // SAFETY: `layer` is NULL or a live handle not used elsewhere during the call (the
    // caller's contract).
    let layer = unsafe { Vouched::new(layer) };
    with_layer::<A::T>(func, layer, |l| {
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
    with_handle("deconv_layer_resize", layer, |l| {
        each_layer!(l, l => l.resize(in_h, in_w))?;
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
    with_handle("deconv_layer_bilinear_init", layer, |l| {
        each_layer!(l, l => l.bilinear_init());
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
    with_handle("deconv_layer_denormalize", layer, |l| {
        each_layer!(l, l => l.denormalize())?;
        Ok(())
    })
}
