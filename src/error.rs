//! The crate's error type.
//!
//! Every fallible call returns [`Result<T>`](crate::Result). Errors name the parameter or buffer
//! at fault and, for lengths, say what was expected and what was found. Nothing in the public API
//! panics on bad input.

use std::fmt;

/// Everything that can go wrong in `deconv`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A configuration parameter is invalid (zero size, output would be empty, ...).
    InvalidParameter {
        /// The parameter's name, as in [`DeconvConfig`](crate::DeconvConfig).
        param: &'static str,
        /// Why it is rejected.
        reason: String,
    },
    /// A size computation overflowed `usize` (or the backend's index type).
    Overflow {
        /// What was being computed.
        what: &'static str,
    },
    /// Memory for a buffer could not be reserved: the system refused it, or the size is beyond
    /// what the allocator may be asked for. The call had no effect.
    Allocation {
        /// The buffer (`weights`, `output`, `workspace`, ...).
        what: &'static str,
        /// Bytes asked for.
        bytes: u64,
    },
    /// A collective operation of data-parallel training failed
    /// ([`distributed::Collective`](crate::distributed::Collective)): the transport reported an
    /// error, or the ranks disagree (different lengths, an impossible batch).
    Collective {
        /// The operation (`allreduce_sum`, `broadcast`).
        operation: &'static str,
        /// What went wrong.
        message: String,
    },
    /// A buffer passed in has the wrong number of elements.
    BufferLength {
        /// The buffer's name (`input`, `workspace`, ...).
        buffer: &'static str,
        /// How many elements the call needs.
        expected: usize,
        /// How many the caller passed.
        found: usize,
    },
    /// Matrix dimensions given to a GEMM do not agree.
    GemmShape(String),
    /// The call is not valid in the layer's current state.
    InvalidState(String),
    /// A Darknet cfg section is malformed (see [`darknet::DeconvSection::parse`](crate::darknet::DeconvSection::parse)).
    Cfg {
        /// 1-based line of the section text, when the error is about one line.
        line: Option<usize>,
        /// The key at fault, when there is one.
        key: Option<String>,
        /// What is wrong, with what was expected and what was found.
        reason: String,
    },
    /// An I/O error (kept as kind and message, since `std::io::Error` is neither `Clone` nor
    /// `PartialEq`).
    Io {
        /// What was being done (`opening weights file "a.weights"`, ...).
        context: String,
        /// The I/O error's kind.
        kind: std::io::ErrorKind,
        /// The I/O error's message.
        message: String,
    },
    /// Binary data (a Darknet `.weights` file, a raw `f32` file) ends before everything needed
    /// was read.
    Truncated {
        /// The data's name (`weights file`, `input file`).
        what: String,
        /// Bytes needed.
        expected: u64,
        /// Bytes there were.
        found: u64,
        /// Where it stopped and what the bytes were for.
        detail: String,
    },
    /// Binary data goes on after everything needed was read.
    TrailingBytes {
        /// The data's name (`weights file`, `input file`).
        what: String,
        /// Bytes needed.
        expected: u64,
        /// Bytes there were (counted up to 1 GiB beyond `expected`).
        found: u64,
        /// What the expected bytes were for.
        detail: String,
    },
    /// A value read from a file is NaN or infinite, and the caller asked to reject those
    /// ([`darknet::LoadOptions::reject_non_finite`](crate::darknet::LoadOptions::reject_non_finite)).
    NonFinite {
        /// The buffer (`biases`, `scales`, `rolling_mean`, `rolling_variance`, `weights`).
        buffer: &'static str,
        /// Index of the value in that buffer.
        index: usize,
        /// The layer's index in the file (0 for the first layer).
        layer: usize,
        /// Byte offset of the value in the file.
        offset: u64,
        /// The value as read (`NaN`, `inf`, `-inf`).
        value: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidParameter { param, reason } => {
                write!(f, "invalid parameter `{param}`: {reason}")
            }
            Error::Overflow { what } => write!(f, "size overflow while computing {what}"),
            Error::Allocation { what, bytes } => write!(
                f,
                "could not allocate {bytes} bytes ({:.1} GiB) for `{what}`",
                *bytes as f64 / (1u64 << 30) as f64
            ),
            Error::Collective { operation, message } => {
                write!(f, "collective {operation} failed: {message}")
            }
            Error::BufferLength {
                buffer,
                expected,
                found,
            } => write!(
                f,
                "buffer `{buffer}` has {found} elements, expected {expected}"
            ),
            Error::GemmShape(msg) => write!(f, "GEMM shape mismatch: {msg}"),
            Error::InvalidState(msg) => write!(f, "invalid state: {msg}"),
            Error::Cfg { line, key, reason } => match (line, key) {
                (Some(line), Some(key)) => write!(f, "cfg line {line}, key `{key}`: {reason}"),
                (Some(line), None) => write!(f, "cfg line {line}: {reason}"),
                (None, Some(key)) => write!(f, "cfg key `{key}`: {reason}"),
                (None, None) => write!(f, "cfg: {reason}"),
            },
            Error::Io {
                context,
                kind,
                message,
            } => write!(f, "I/O error {context}: {message} ({kind:?})"),
            Error::Truncated {
                what,
                expected,
                found,
                detail,
            } => write!(
                f,
                "{what} ends after {found} bytes; expected {expected} bytes{detail}"
            ),
            Error::TrailingBytes {
                what,
                expected,
                found,
                detail,
            } => write!(
                f,
                "{what} has {found} bytes; expected {expected} bytes{detail}"
            ),
            Error::NonFinite {
                buffer,
                index,
                layer,
                offset,
                value,
            } => write!(
                f,
                "non-finite value {value} in `{buffer}`[{index}] of layer {layer} \
                 (byte offset {offset}); the load was asked to reject NaN and infinities"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Returns `Err(BufferLength)` unless `found == expected`.
pub(crate) fn check_len(buffer: &'static str, expected: usize, found: usize) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(Error::BufferLength {
            buffer,
            expected,
            found,
        })
    }
}

/// Returns `Err(BufferLength)` unless `found >= expected`.
pub(crate) fn check_len_at_least(
    buffer: &'static str,
    expected: usize,
    found: usize,
) -> Result<()> {
    if found >= expected {
        Ok(())
    } else {
        Err(Error::BufferLength {
            buffer,
            expected,
            found,
        })
    }
}

/// Multiplies sizes, turning overflow into [`Error::Overflow`].
pub(crate) fn mul(what: &'static str, factors: &[usize]) -> Result<usize> {
    factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
        .ok_or(Error::Overflow { what })
}
