//! The element types the crate computes in: `f32` and `f64`.

use num_traits::Float;
use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, MulAssign, SubAssign};

pub(crate) mod sealed {
    /// Per-type kernels the crate picks by element type (not nameable outside the crate).
    pub trait Sealed: Sized {
        /// [`crate::transpose::transpose`] after its checks.
        fn transpose_into(
            src: &[Self],
            rows: usize,
            cols: usize,
            ld: usize,
            dst: &mut [Self],
            ld_dst: usize,
        );
    }
    impl Sealed for f32 {
        fn transpose_into(s: &[f32], r: usize, c: usize, ld: usize, d: &mut [f32], ldd: usize) {
            crate::transpose::transpose_f32(s, r, c, ld, d, ldd);
        }
    }
    impl Sealed for f64 {
        fn transpose_into(s: &[f64], r: usize, c: usize, ld: usize, d: &mut [f64], ldd: usize) {
            crate::transpose::transpose_tiled(s, r, c, ld, d, ldd);
        }
    }
}

/// A floating-point element type: implemented for `f32` and `f64` only (the trait is sealed,
/// because every backend must provide a GEMM for it).
pub trait Element:
    Float
    + AddAssign
    + SubAssign
    + MulAssign
    + Sum
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + 'static
    + sealed::Sealed
{
    /// Converts from `f64` (rounding for `f32`). Used for Darknet's constants.
    fn of(x: f64) -> Self;
    /// Widens to `f64`.
    fn to_f64_lossless(self) -> f64;
}

impl Element for f32 {
    #[inline]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn to_f64_lossless(self) -> f64 {
        f64::from(self)
    }
}

impl Element for f64 {
    #[inline]
    fn of(x: f64) -> Self {
        x
    }
    #[inline]
    fn to_f64_lossless(self) -> f64 {
        self
    }
}
