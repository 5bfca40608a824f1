//! The element types the crate computes in: `f32` and `f64`.

use num_traits::Float;
use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, MulAssign, SubAssign};

pub(crate) mod sealed {
    /// Per-type kernels the crate picks by element type (not nameable outside the crate).
    pub trait Sealed: Sized {
        /// [`crate::transpose::transpose`] after its checks.
        fn transpose_into(src: &[Self], rows: usize, cols: usize, ld: usize, dst: &mut [Self]);
    }
    impl Sealed for f32 {
        fn transpose_into(src: &[f32], rows: usize, cols: usize, ld: usize, dst: &mut [f32]) {
            crate::transpose::transpose_f32(src, rows, cols, ld, dst);
        }
    }
    impl Sealed for f64 {
        fn transpose_into(src: &[f64], rows: usize, cols: usize, ld: usize, dst: &mut [f64]) {
            crate::transpose::transpose_tiled(src, rows, cols, ld, dst);
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
