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
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidParameter { param, reason } => {
                write!(f, "invalid parameter `{param}`: {reason}")
            }
            Error::Overflow { what } => write!(f, "size overflow while computing {what}"),
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
