//! Checks of pointer arguments: out-parameters, float and byte buffers (length, alignment,
//! overlap with the layer's own buffers), path strings.

use std::ffi::c_char;

use super::buffers::Range;
use super::precision::Real;
use super::status::{Fail, Res};
use crate::error::Error;

/// Checks an out-parameter: not null, aligned.
pub(super) fn check_out<T>(name: &str, ptr: *mut T) -> Res<()> {
    if ptr.is_null() {
        Err(Fail::null(name))
    } else if !ptr.is_aligned() {
        Err(Fail::param(format!("`{name}` is misaligned")))
    } else {
        Ok(())
    }
}

/// Checks a buffer argument of `len` elements at `ptr` against the `expected` length (exactly,
/// or at least with `at_least`), and that it overlaps none of `others`.
pub(super) fn check_buffer<T: Real>(
    name: &'static str,
    ptr: *const T,
    len: usize,
    expected: usize,
    at_least: bool,
    others: &[Range],
) -> Res<()> {
    if ptr.is_null() {
        return Err(Fail::null(name));
    }
    if !ptr.is_aligned() {
        return Err(Fail::param(format!(
            "`{name}` is not aligned for {}",
            T::C_NAME
        )));
    }
    if len != expected && !(at_least && len > expected) {
        return Err(Error::BufferLength {
            buffer: name,
            expected,
            found: len,
        }
        .into());
    }
    if len > isize::MAX as usize / size_of::<T>() {
        return Err(Error::Overflow {
            what: "buffer size in bytes",
        }
        .into());
    }
    let start = ptr as usize;
    let end = start + len * size_of::<T>();
    for &(other, s, bytes) in others {
        let e = s.saturating_add(bytes);
        if start < e && s < end {
            return Err(Fail::param(format!(
                "`{name}` overlaps {other}; pass a separate buffer"
            )));
        }
    }
    Ok(())
}

/// Checks a byte buffer argument: not null, `len` bytes (exactly `expected` if given), and
/// overlapping none of `others`.
pub(super) fn check_bytes(
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
    for &(other, s, bytes) in others {
        let e = s.saturating_add(bytes);
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
pub(super) unsafe fn path_arg<'a>(name: &str, ptr: *const c_char) -> Res<&'a std::path::Path> {
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
