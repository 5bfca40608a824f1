//! Status codes, the calling thread's last error, and the boundary every call runs through
//! (an error or a panic becomes a status and a message).

use std::cell::RefCell;
use std::ffi::{CString, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::Error;

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
    /// A collective operation of data-parallel training failed: a `deconv_collective` callback
    /// returned non-zero, or the ranks disagree (different lengths, an impossible batch).
    DECONV_ERR_COLLECTIVE = 12,
}

use deconv_status::*;

impl deconv_status {
    pub(super) const ALL: [deconv_status; 13] = [
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
        DECONV_ERR_COLLECTIVE,
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
            DECONV_ERR_COLLECTIVE => c"DECONV_ERR_COLLECTIVE",
        }
    }
}

/// Why a call failed: its status and message.
#[derive(Debug)]
pub(super) struct Fail {
    pub(super) status: deconv_status,
    pub(super) message: String,
}

pub(super) type Res<T> = std::result::Result<T, Fail>;

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail {
            status: status_of(&e),
            message: e.to_string(),
        }
    }
}

impl Fail {
    pub(super) fn null(arg: &str) -> Self {
        Fail {
            status: DECONV_ERR_NULL_POINTER,
            message: format!("`{arg}` is NULL"),
        }
    }
    pub(super) fn param(message: String) -> Self {
        Fail {
            status: DECONV_ERR_INVALID_PARAMETER,
            message,
        }
    }
    pub(super) fn code(what: &str, code: c_int) -> Self {
        Fail::param(format!("unknown {what} code {code}"))
    }
    pub(super) fn state(message: String) -> Self {
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
        Error::Collective { .. } => DECONV_ERR_COLLECTIVE,
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
pub(super) fn run(func: &str, body: impl FnOnce() -> Res<()>) -> deconv_status {
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
