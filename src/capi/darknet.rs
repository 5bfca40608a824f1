//! Darknet files: `.weights` files and bytes, and `[deconvolutional]` cfg sections.

use std::ffi::{c_char, c_int};

use super::args::{check_bytes, check_out, path_arg};
use super::buffers::Ranges;
use super::config::deconv_config;
use super::layer::{Vouched, deconv_layer, with_handle, with_handle_ref};
use super::precision::each_layer;
use super::status::{Fail, Res, deconv_status, run};
use crate::config::InputShape;
use crate::darknet::{
    LoadOptions, WeightsHeader, layer_byte_len, load_weights, parse_deconvolutional, read_weights,
    save_weights, write_weights,
};
use crate::error::Error;

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
    with_handle("deconv_layer_load_weights", layer, |l| {
        // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
        let path = unsafe { path_arg("path", path) }?;
        if !header.is_null() {
            check_out("header", header)?;
        }
        let options = LoadOptions::new().reject_non_finite(reject_non_finite != 0);
        let read = each_layer!(l, l => load_weights(l, path, &options))?;
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
    with_handle_ref("deconv_layer_save_weights", layer, |l| {
        // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
        let path = unsafe { path_arg("path", path) }?;
        // SAFETY: `header` is NULL or readable (this function's contract).
        let header = unsafe { header_arg(header) }?;
        each_layer!(l, l => save_weights(l, path, &header))?;
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
    with_handle_ref("deconv_layer_weights_byte_len", layer, |l| {
        check_out("bytes", bytes)?;
        // SAFETY: `header` is NULL or readable (this function's contract).
        let header = unsafe { header_arg(header) }?;
        let len = usize::try_from(header.byte_len() + each_layer!(l, l => layer_byte_len(l)))
            .map_err(|_| Error::Overflow {
                what: "weights byte length",
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
    with_handle_ref("deconv_layer_write_weights", layer, |l| {
        // SAFETY: `header` is NULL or readable (this function's contract).
        let header = unsafe { header_arg(header) }?;
        let expected = usize::try_from(header.byte_len() + each_layer!(l, l => layer_byte_len(l)))
            .map_err(|_| Error::Overflow {
                what: "weights byte length",
            })?;
        check_bytes("data", data, len, Some(expected), &Ranges::of_any(l))?;
        // SAFETY: non-null, `len` writable bytes (caller), disjoint from the layer (checked).
        let data = unsafe { std::slice::from_raw_parts_mut(data, len) };
        each_layer!(l, l => write_weights(l, data, &header))?;
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
    with_handle("deconv_layer_read_weights", layer, |l| {
        check_bytes("data", data, len, None, &Ranges::of_any(l))?;
        if !header.is_null() {
            check_out("header", header)?;
        }
        // SAFETY: non-null, `len` readable bytes (caller), disjoint from the layer (checked).
        let data = unsafe { std::slice::from_raw_parts(data, len) };
        let options = LoadOptions::new().reject_non_finite(reject_non_finite != 0);
        let read = each_layer!(l, l => read_weights(l, data, &options))?;
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
                status: deconv_status::DECONV_ERR_FORMAT,
                message: format!("cfg text is not UTF-8: {e}"),
            })?;
        let parsed = parse_deconvolutional(text, InputShape::new(batch, in_channels, in_h, in_w))?;
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { config.write(deconv_config::from_rust(&parsed)) };
        Ok(())
    })
}
