//! The pure-Rust backend, on the `matrixmultiply` crate (single-threaded: its `threading`
//! feature is off, so rayon stays the only pool).
//!
//! matrixmultiply packs `A` with a plain copy only when its columns are contiguous (`A` stored
//! `k x m`) and `B` only when its rows are (`B` stored `k x n`); the other layouts it gathers
//! element by element (one core, 512 x 144 x 2048 with `A` stored `m x k`, the phase
//! forward's product on darknet-k4: 64 GFLOP/s, against 82 with `A` stored `k x m`). Such an
//! operand is transposed here first, `k` block by `k` block into a buffer each thread keeps, so
//! every call site gets the fast packing.

use super::{Gemm, MatMut, MatRef, Transpose, prepare};
use crate::element::Element;
use crate::error::Result;
use crate::transpose::transpose;
use std::cell::RefCell;
use std::thread::LocalKey;

/// GEMM on the `matrixmultiply` crate. Pure Rust; needs nothing installed.
///
/// An operand in the layout matrixmultiply packs slowly (see the module) is transposed into a
/// buffer of [`MatrixMultiply::RELAYOUT_ELEMENTS`] elements that each thread running such a
/// GEMM allocates once and keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MatrixMultiply;

impl MatrixMultiply {
    /// Elements of the buffer a thread keeps for transposed operands (2 MiB of `f32`, 4 MiB
    /// of `f64`), allocated at its first GEMM with such an operand.
    pub const RELAYOUT_ELEMENTS: usize = 1 << 19;

    /// `"matrixmultiply"` (also [`Gemm::name`], for every element type).
    pub fn name(&self) -> &'static str {
        "matrixmultiply"
    }
}

/// matrixmultiply's own `k` block: chunks of this length cost no extra pass over `C`.
const KC: usize = 256;
/// Shortest `k` chunk worth transposing for; below it the passes over `C` cost more.
const MIN_CHUNK: usize = 32;
/// Products of fewer multiply-adds than this are not worth a transpose.
const MIN_FMAS: usize = 1 << 15;

/// Row and column strides of `op(m)`.
fn strides<T>(m: &MatRef<'_, T>) -> (isize, isize) {
    // Slices never exceed isize::MAX bytes, so an in-bounds leading dimension fits isize.
    let ld = m.ld() as isize;
    match m.trans() {
        Transpose::No => (ld, 1),
        Transpose::Yes => (1, ld),
    }
}

/// matrixmultiply's `sgemm`/`dgemm`: `(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc,
/// csc)`.
type RawGemm<T> = unsafe fn(
    usize,
    usize,
    usize,
    T,
    *const T,
    isize,
    isize,
    *const T,
    isize,
    isize,
    T,
    *mut T,
    isize,
    isize,
);

/// One operand as matrixmultiply takes it: the first element and the strides.
struct Operand<T> {
    ptr: *const T,
    rs: isize,
    cs: isize,
}

impl<T> Operand<T> {
    /// The operand starting at `data[offset]` (bounds-checked) with strides `(rs, cs)`.
    fn at(data: &[T], offset: usize, (rs, cs): (isize, isize)) -> Self {
        let ptr = data[offset..].as_ptr();
        Operand { ptr, rs, cs }
    }
}

/// `C = alpha op(A) op(B) + beta C` through `raw`, with `op(A)` stored `m x k` or `op(B)`
/// stored `n x k` transposed into the thread's `buffer` (grown to `want` elements) in `k`
/// chunks first.
fn gemm_relaid<T: Element>(
    raw: RawGemm<T>,
    (buffer, want): (&'static LocalKey<RefCell<Vec<T>>>, usize),
    alpha: T,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    beta: T,
    mut c: MatMut<'_, T>,
) -> Result<()> {
    let Some((m, n, k)) = prepare(&a, &b, beta, &mut c)? else {
        return Ok(());
    };
    let (rsa, csa) = strides(&a);
    let (rsb, csb) = strides(&b);
    let ldc = c.ld() as isize;
    let c_ptr = c.data().as_mut_ptr();
    // A single row or column has no layout to fix.
    let slow_a = rsa != 1 && m > 1;
    let slow_b = csb != 1 && n > 1;
    let per_k = if slow_a { m } else { 0 } + if slow_b { n } else { 0 };
    let kc = want.checked_div(per_k).map_or(0, |kc| kc.min(KC).min(k));
    let plain = |pa: Operand<T>, pb: Operand<T>, kk: usize, beta: T| {
        // SAFETY: `MatRef::new`/`MatMut::new` checked that each slice covers its `rows x
        // cols` matrix at its leading dimension and `prepare` that op(A) is m x k, op(B) k x n
        // and C m x n; every operand given here is such a matrix, or its first `kk` columns
        // (rows of B) from a column (row) inside it, or a transposed copy in a buffer of at
        // least `m * kk` (`kk * n`) elements, so every element matrixmultiply addresses through
        // these strides lies inside a live slice. C is a unique borrow.
        unsafe {
            raw(
                m, kk, n, alpha, pa.ptr, pa.rs, pa.cs, pb.ptr, pb.rs, pb.cs, beta, c_ptr, ldc, 1,
            )
        }
    };
    let whole_a = Operand::at(a.data(), 0, (rsa, csa));
    let whole_b = Operand::at(b.data(), 0, (rsb, csb));
    let small = m.saturating_mul(n).saturating_mul(k) < MIN_FMAS;
    if per_k == 0 || small || kc < MIN_CHUNK.min(k) {
        plain(whole_a, whole_b, k, beta);
        return Ok(());
    }
    buffer.with(|cell| {
        let Ok(mut buf) = cell.try_borrow_mut() else {
            plain(whole_a, whole_b, k, beta);
            return;
        };
        let have = buf.len();
        if have < want {
            // No room for the buffer is no error: the product still runs, packed slowly.
            if buf.try_reserve_exact(want - have).is_err() {
                plain(whole_a, whole_b, k, beta);
                return;
            }
            buf.resize(want, T::zero());
        }
        let (a_buf, b_buf) = buf.split_at_mut(if slow_a { m * kc } else { 0 });
        let (a_data, b_data) = (a.data(), b.data());
        for p0 in (0..k).step_by(kc) {
            let kk = kc.min(k - p0);
            let pa = if slow_a {
                // op(A) is stored m x k (row stride ld): its columns p0.. become rows.
                transpose(&a_data[p0..], m, kk, a.ld(), a_buf, m);
                Operand::at(a_buf, 0, (1, m as isize))
            } else {
                Operand::at(a_data, p0 * csa as usize, (rsa, csa))
            };
            let pb = if slow_b {
                // op(B) is stored n x k (column stride ld): its rows p0.. become rows.
                transpose(&b_data[p0..], n, kk, b.ld(), b_buf, n);
                Operand::at(b_buf, 0, (n as isize, 1))
            } else {
                Operand::at(b_data, p0 * rsb as usize, (rsb, csb))
            };
            plain(pa, pb, kk, if p0 == 0 { beta } else { T::one() });
        }
    });
    Ok(())
}

thread_local! {
    static BUFFER_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static BUFFER_F64: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

macro_rules! impl_gemm {
    ($t:ty, $f:path, $buffer:ident) => {
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
                c: MatMut<'_, $t>,
            ) -> Result<()> {
                let buffer = (&$buffer, MatrixMultiply::RELAYOUT_ELEMENTS);
                gemm_relaid::<$t>($f, buffer, alpha, a, b, beta, c)
            }
        }
    };
}

impl_gemm!(f32, matrixmultiply::sgemm, BUFFER_F32);
impl_gemm!(f64, matrixmultiply::dgemm, BUFFER_F64);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::tests::{naive, pseudo};

    thread_local! {
        static SMALL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }

    /// With a buffer of 4096 elements the `k` chunks are shorter than matrixmultiply's own
    /// block and, for the larger shapes, below [`MIN_CHUNK`] (then nothing is transposed):
    /// every layout, chunk count and leading dimension matches the plain loop exactly (small
    /// whole numbers), and the buffer is used where a layout needs it.
    #[test]
    fn chunked_transposes_match_the_plain_product() {
        for &(m, n, k) in &[(50, 40, 200), (33, 17, 129), (300, 7, 64), (4000, 3, 40)] {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                let (ar, ac) = if ta { (k, m) } else { (m, k) };
                let (br, bc) = if tb { (n, k) } else { (k, n) };
                let (lda, ldb, ldc) = (ac + 3, bc + 1, n + 2);
                let ad: Vec<f32> = pseudo(ar * lda, 5).into_iter().map(|v| v as f32).collect();
                let bd: Vec<f32> = pseudo(br * ldb, 6).into_iter().map(|v| v as f32).collect();
                let c0: Vec<f32> = pseudo(m * ldc, 7).into_iter().map(|v| v as f32).collect();
                let a = MatRef::new(&ad, ar, ac, lda).unwrap();
                let a = if ta { a.t() } else { a };
                let b = MatRef::new(&bd, br, bc, ldb).unwrap();
                let b = if tb { b.t() } else { b };
                for beta in [0.0, 0.5] {
                    let mut expect = c0.clone();
                    naive(2.0, a, b, beta, &mut expect, ldc);
                    let mut got = c0.clone();
                    SMALL.with(|s| s.borrow_mut().clear());
                    let c = MatMut::new(&mut got, m, n, ldc).unwrap();
                    let buffer = (&SMALL, 4096);
                    gemm_relaid::<f32>(matrixmultiply::sgemm, buffer, 2.0, a, b, beta, c).unwrap();
                    assert_eq!(got, expect, "{m}x{n}x{k} ta {ta} tb {tb} beta {beta}");
                    let per_k = if ta { 0 } else { m } + if tb { n } else { 0 };
                    let used = per_k > 0 && 4096 / per_k >= MIN_CHUNK;
                    let grown = SMALL.with(|s| s.borrow().len());
                    assert_eq!(grown > 0, used, "{m}x{n}x{k} ta {ta} tb {tb}");
                }
            }
        }
    }
}
