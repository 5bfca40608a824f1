//! The pure-Rust backend, on the `matrixmultiply` crate (single-threaded: its `threading`
//! feature is off, so rayon stays the only pool).

use super::{Gemm, MatMut, MatRef, Transpose, prepare};
use crate::error::Result;

/// GEMM on the `matrixmultiply` crate. Pure Rust; needs nothing installed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MatrixMultiply;

impl MatrixMultiply {
    /// `"matrixmultiply"` (also [`Gemm::name`], for every element type).
    pub fn name(&self) -> &'static str {
        "matrixmultiply"
    }
}

/// Row and column strides of `op(m)`.
fn strides<T>(m: &MatRef<'_, T>) -> (isize, isize) {
    // Slices never exceed isize::MAX bytes, so an in-bounds leading dimension fits isize.
    let ld = m.ld() as isize;
    match m.trans() {
        Transpose::No => (ld, 1),
        Transpose::Yes => (1, ld),
    }
}

macro_rules! impl_gemm {
    ($t:ty, $f:path) => {
        impl Gemm<$t> for MatrixMultiply {
            fn name(&self) -> &'static str {
                MatrixMultiply::name(self)
            }

            fn gemm(
                &self,
                alpha: $t,
                a: MatRef<'_, $t>,
                b: MatRef<'_, $t>,
                beta: $t,
                mut c: MatMut<'_, $t>,
            ) -> Result<()> {
                let Some((m, n, k)) = prepare(&a, &b, beta, &mut c)? else {
                    return Ok(());
                };
                let (rsa, csa) = strides(&a);
                let (rsb, csb) = strides(&b);
                let ldc = c.ld() as isize;
                // SAFETY: `MatRef::new`/`MatMut::new` checked that each slice covers its
                // `rows x cols` matrix at its leading dimension, and `prepare` checked that
                // op(A) is m x k, op(B) is k x n and C is m x n, so every element matrixmultiply
                // addresses through these strides lies inside the slices. C is a unique borrow.
                unsafe {
                    $f(
                        m,
                        k,
                        n,
                        alpha,
                        a.data().as_ptr(),
                        rsa,
                        csa,
                        b.data().as_ptr(),
                        rsb,
                        csb,
                        beta,
                        c.data().as_mut_ptr(),
                        ldc,
                        1,
                    );
                }
                Ok(())
            }
        }
    };
}

impl_gemm!(f32, matrixmultiply::sgemm);
impl_gemm!(f64, matrixmultiply::dgemm);
