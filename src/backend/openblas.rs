//! The OpenBLAS backend, through `cblas` and the system library (`openblas-src`, `system`).

use super::{Gemm, MatMut, MatRef, Transpose, prepare};
use crate::error::{Error, Result};
use std::sync::Once;

// Without this the linker drops the OpenBLAS library that openblas-src links.
extern crate openblas_src;

unsafe extern "C" {
    fn openblas_set_num_threads(num_threads: std::os::raw::c_int);
}

static SINGLE_THREADED: Once = Once::new();

/// GEMM on the system OpenBLAS (`apt-get install libopenblas-dev`).
///
/// The first GEMM call sets OpenBLAS's own thread count to 1 for the whole process: the crate's
/// parallelism lives in rayon (see the [backend module](super) docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenBlas;

impl OpenBlas {
    /// `"openblas"` (also [`Gemm::name`], for every element type).
    pub fn name(&self) -> &'static str {
        "openblas"
    }
}

fn to_i32(x: usize) -> Result<i32> {
    i32::try_from(x).map_err(|_| Error::Overflow {
        what: "a GEMM dimension for OpenBLAS (limit i32::MAX)",
    })
}

fn trans<T>(m: &MatRef<'_, T>) -> cblas::Transpose {
    match m.trans() {
        Transpose::No => cblas::Transpose::None,
        Transpose::Yes => cblas::Transpose::Ordinary,
    }
}

macro_rules! impl_gemm {
    ($t:ty, $f:path) => {
        impl Gemm<$t> for OpenBlas {
            fn name(&self) -> &'static str {
                OpenBlas::name(self)
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
                let (mi, ni, ki) = (to_i32(m)?, to_i32(n)?, to_i32(k)?);
                let (lda, ldb, ldc) = (to_i32(a.ld())?, to_i32(b.ld())?, to_i32(c.ld())?);
                // SAFETY: a plain C call taking an int; it only sets OpenBLAS's thread count.
                SINGLE_THREADED.call_once(|| unsafe { openblas_set_num_threads(1) });
                // SAFETY: the operands were checked to cover their matrices at their leading
                // dimensions (`MatRef::new`, `MatMut::new`) and `prepare` checked m, n, k, so
                // OpenBLAS reads and writes only inside the slices; every size fits i32.
                unsafe {
                    $f(
                        cblas::Layout::RowMajor,
                        trans(&a),
                        trans(&b),
                        mi,
                        ni,
                        ki,
                        alpha,
                        a.data(),
                        lda,
                        b.data(),
                        ldb,
                        beta,
                        c.data(),
                        ldc,
                    );
                }
                Ok(())
            }
        }
    };
}

impl_gemm!(f32, cblas::sgemm);
impl_gemm!(f64, cblas::dgemm);
