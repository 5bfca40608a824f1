//! The OpenBLAS backend, through `cblas` and the system library (`openblas-src`, `system`).

use super::{Gemm, MatMut, MatRef, Transpose, prepare};
use crate::error::{Error, Result};
use std::os::raw::c_int;
use std::sync::{Mutex, PoisonError};

// Without this the linker drops the OpenBLAS library that openblas-src links.
extern crate openblas_src;

unsafe extern "C" {
    fn openblas_set_num_threads(num_threads: c_int);
    fn openblas_get_num_threads() -> c_int;
}

/// How many of this backend's GEMMs run now, and the OpenBLAS thread count to give back to the
/// process when the last of them ends.
struct Lent {
    running: usize,
    saved: c_int,
}

static LENT: Mutex<Lent> = Mutex::new(Lent {
    running: 0,
    saved: 1,
});

/// OpenBLAS's thread count at 1 while it lives, the caller's count restored after.
///
/// The count is process-wide. The first of the crate's GEMMs to start saves it and sets 1 (the
/// crate's threads are rayon's: a multi-threaded BLAS inside each rayon thread would
/// oversubscribe the cores); the last one running puts the saved count back, so a host code
/// that calls BLAS itself keeps its threads between the crate's calls. Nesting is fine.
struct SingleThreaded(());

impl SingleThreaded {
    fn enter() -> Self {
        let mut lent = LENT.lock().unwrap_or_else(PoisonError::into_inner);
        if lent.running == 0 {
            // SAFETY: plain C calls on ints that read and set OpenBLAS's thread count; the lock
            // keeps the crate's own calls to them in order.
            lent.saved = unsafe { openblas_get_num_threads() };
            if lent.saved != 1 {
                // SAFETY: as above.
                unsafe { openblas_set_num_threads(1) };
            }
        }
        lent.running += 1;
        SingleThreaded(())
    }
}

impl Drop for SingleThreaded {
    fn drop(&mut self) {
        let mut lent = LENT.lock().unwrap_or_else(PoisonError::into_inner);
        lent.running -= 1;
        if lent.running == 0 && lent.saved != 1 {
            // SAFETY: as in `enter`; none of the crate's GEMMs runs now.
            unsafe { openblas_set_num_threads(lent.saved) };
        }
    }
}

/// GEMM on the system OpenBLAS (`apt-get install libopenblas-dev`).
///
/// Each GEMM runs with OpenBLAS's own thread count at 1, since the crate's parallelism lives in
/// rayon (see the [backend module](super) docs); the count is process-wide, and the caller's
/// setting is restored as soon as none of the crate's GEMMs runs. While one does, a BLAS call of
/// the host on another thread runs single-threaded too, and a change the host makes to the
/// count then is undone when the crate's last GEMM ends.
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
                let _single_threaded = SingleThreaded::enter();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// While any of the crate's GEMMs runs, OpenBLAS is single-threaded (other tests may run
    /// GEMMs at the same time, which keeps it at 1 too). That the caller's count comes back
    /// is tested in `tests/openblas_threads.rs`, a process of its own.
    #[test]
    fn single_threaded_while_entered_nested_too() {
        let outer = SingleThreaded::enter();
        // SAFETY: reads OpenBLAS's thread count.
        assert_eq!(unsafe { openblas_get_num_threads() }, 1);
        let inner = SingleThreaded::enter();
        drop(outer);
        // SAFETY: as above.
        assert_eq!(unsafe { openblas_get_num_threads() }, 1);
        drop(inner);
    }
}
