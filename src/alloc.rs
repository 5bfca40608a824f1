//! Fallible allocation: every buffer a layer owns is reserved here, and a buffer that cannot be
//! reserved is [`Error::Allocation`] (or [`Error::Overflow`] when its size in bytes does not
//! fit `isize::MAX`), never an abort of the process.
//!
//! `Vec::try_reserve_exact` catches what the allocator refuses at once. On Linux the allocator
//! refuses a single buffer larger than the machine's memory, but it grants several buffers that
//! only together exceed it, and the process is killed when their pages are touched. So a layer
//! first adds up everything it will hold and checks the sum against the machine's memory
//! ([`check_fits`]) before it reserves anything.

use crate::element::Element;
use crate::error::{Error, Result};
use std::alloc::Layout;
use std::sync::OnceLock;

/// A vector of `len` copies of `value`, or [`Error::Allocation`] naming `what`.
pub(crate) fn filled<T: Clone>(what: &'static str, len: usize, value: T) -> Result<Vec<T>> {
    let bytes = byte_len::<T>(what, len)?;
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| Error::Allocation { what, bytes })?;
    v.resize(len, value);
    Ok(v)
}

/// A vector of `len` zeros, or [`Error::Allocation`] naming `what`. Zeroed by the allocator,
/// as `vec![0.0; len]` is: the pages of a large buffer are taken from the system only when
/// first written, so a buffer a layer never uses (the gradients of a layer that only infers,
/// say) costs no resident memory.
pub(crate) fn zeros<T: Element>(what: &'static str, len: usize) -> Result<Vec<T>> {
    let bytes = byte_len::<T>(what, len)?;
    if len == 0 {
        return Ok(Vec::new());
    }
    let layout = Layout::array::<T>(len).map_err(|_| Error::Overflow { what })?;
    // SAFETY: `layout` has a non-zero size (len >= 1 and T is f32 or f64).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if ptr.is_null() {
        return Err(Error::Allocation { what, bytes });
    }
    // SAFETY: `ptr` comes from the global allocator with the layout of `[T; len]`, which is
    // what a `Vec<T>` of capacity `len` holds; its bytes are all zero, which for f32 and f64
    // (`Element` is sealed to them) is the value 0.0, so all `len` elements are initialized.
    Ok(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// Bytes of `len` elements of `T`: [`Error::Overflow`] beyond `isize::MAX` (what a Rust
/// allocation may be), where `Vec` would panic with "capacity overflow".
pub(crate) fn byte_len<T>(what: &'static str, len: usize) -> Result<u64> {
    len.checked_mul(size_of::<T>())
        .filter(|&b| b <= isize::MAX as usize)
        .map(|b| b as u64)
        .ok_or(Error::Overflow { what })
}

/// [`Error::Allocation`] for `what` when `bytes` exceed the machine's memory (RAM plus swap, as
/// `/proc/meminfo` says; no check where there is no such file). A layer whose own buffers do
/// not fit could never run: refused up front, nothing is reserved.
pub(crate) fn check_fits(what: &'static str, bytes: u64) -> Result<()> {
    match machine_memory() {
        Some(total) if bytes > total => Err(Error::Allocation { what, bytes }),
        _ => Ok(()),
    }
}

/// RAM plus swap in bytes, read once.
fn machine_memory() -> Option<u64> {
    static TOTAL: OnceLock<Option<u64>> = OnceLock::new();
    *TOTAL.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kib = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        };
        let total = kib("MemTotal:")?.checked_add(kib("SwapTotal:").unwrap_or(0))?;
        total.checked_mul(1024)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_beyond_the_address_space_are_errors() {
        // 2^61 f32s fit usize but not isize::MAX bytes: Vec would panic "capacity overflow".
        let err = filled::<f32>("weights", 1 << 61, 0.0).unwrap_err();
        assert_eq!(err, Error::Overflow { what: "weights" });
        // 2^45 f64s are 256 TiB: more than any x86-64 or AArch64 user address space.
        let err = zeros::<f64>("output", 1 << 45).unwrap_err();
        assert_eq!(
            err,
            Error::Allocation {
                what: "output",
                bytes: 1 << 48
            }
        );
        assert_eq!(zeros::<f32>("small", 3).unwrap(), vec![0.0; 3]);
    }

    #[test]
    fn more_than_the_machine_has_is_refused_before_reserving() {
        if let Some(total) = machine_memory() {
            assert!(check_fits("layer", total / 2).is_ok());
            assert_eq!(
                check_fits("layer", total + 1),
                Err(Error::Allocation {
                    what: "layer",
                    bytes: total + 1
                })
            );
        }
    }
}
