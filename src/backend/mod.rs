//! GEMM backends: the one seam through which every matrix product of the layer goes.
//!
//! A backend implements [`Gemm<T>`] for `f32` and `f64`:
//! `C = alpha * op(A) * op(B) + beta * C`, row-major, with optional transposes and leading
//! dimensions described by [`MatRef`] / [`MatMut`]. With `beta == 0`, `C` is never read (it may
//! hold NaN).
//!
//! | backend | cargo feature | needs installed |
//! |---|---|---|
//! | `MatrixMultiply` | `matrixmultiply` (default) | nothing (pure Rust) |
//! | `OpenBlas` | `openblas` | the system OpenBLAS (`apt-get install libopenblas-dev`) |
//!
//! [`DefaultBackend`] is OpenBLAS when that feature is on, else matrixmultiply. To pick one
//! explicitly, name it as the layer's backend type, e.g. `DeconvLayer::<f32, MatrixMultiply>`.
//!
//! # Threads
//! The crate has one thread pool: rayon's (the global one, or whichever pool the call runs in
//! through [`rayon::ThreadPool::install`]). Backends are always called single-threaded;
//! [`par_gemm`] splits the rows of `C` over the rayon threads. The OpenBLAS backend therefore
//! runs each GEMM with OpenBLAS's own thread count at 1, so rayon's threads never each start a
//! multi-threaded BLAS (oversubscription), and gives the process its own count back when none
//! of its GEMMs runs. Set the thread count with `RAYON_NUM_THREADS` or a
//! `rayon::ThreadPoolBuilder`.

use crate::element::Element;
use crate::error::{Error, Result};
use rayon::prelude::*;

#[cfg(feature = "matrixmultiply")]
mod matrixmultiply;
#[cfg(feature = "openblas")]
mod openblas;

#[cfg(feature = "matrixmultiply")]
pub use self::matrixmultiply::MatrixMultiply;
#[cfg(feature = "openblas")]
pub use self::openblas::OpenBlas;

/// The backend chosen by cargo features: OpenBLAS when `openblas` is on, else matrixmultiply.
#[cfg(feature = "openblas")]
pub type DefaultBackend = OpenBlas;
/// The backend chosen by cargo features: OpenBLAS when `openblas` is on, else matrixmultiply.
#[cfg(all(feature = "matrixmultiply", not(feature = "openblas")))]
pub type DefaultBackend = MatrixMultiply;

include!(concat!(env!("OUT_DIR"), "/compiled_backends.rs"));

/// A backend chosen at run time among the compiled-in ones (for the C ABI, command-line tools,
/// or comparing backends in one binary). Dispatches each call with one `match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnyBackend {
    /// [`MatrixMultiply`].
    #[cfg(feature = "matrixmultiply")]
    MatrixMultiply,
    /// [`OpenBlas`].
    #[cfg(feature = "openblas")]
    OpenBlas,
}

impl AnyBackend {
    /// The backend's name (`"matrixmultiply"` or `"openblas"`), the same for every element type.
    pub fn name(&self) -> &'static str {
        match self {
            #[cfg(feature = "matrixmultiply")]
            AnyBackend::MatrixMultiply => MatrixMultiply.name(),
            #[cfg(feature = "openblas")]
            AnyBackend::OpenBlas => OpenBlas.name(),
        }
    }

    /// The backend named `name` (`"matrixmultiply"` or `"openblas"`), if compiled in.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] (`backend`) for an unknown or not compiled-in name.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            #[cfg(feature = "matrixmultiply")]
            "matrixmultiply" => Ok(AnyBackend::MatrixMultiply),
            #[cfg(feature = "openblas")]
            "openblas" => Ok(AnyBackend::OpenBlas),
            _ => Err(Error::InvalidParameter {
                param: "backend",
                reason: format!(
                    "`{name}` is not a compiled-in backend; this build has {COMPILED_BACKENDS:?}"
                ),
            }),
        }
    }

    /// Every compiled-in backend, in [`COMPILED_BACKENDS`] order.
    pub fn all() -> Vec<Self> {
        COMPILED_BACKENDS
            .iter()
            .filter_map(|name| Self::from_name(name).ok())
            .collect()
    }
}

impl Default for AnyBackend {
    /// The same backend as [`DefaultBackend`].
    fn default() -> Self {
        #[cfg(feature = "openblas")]
        return AnyBackend::OpenBlas;
        #[cfg(not(feature = "openblas"))]
        return AnyBackend::MatrixMultiply;
    }
}

macro_rules! impl_any {
    ($t:ty) => {
        impl Gemm<$t> for AnyBackend {
            fn name(&self) -> &'static str {
                AnyBackend::name(self)
            }
            fn gemm(
                &self,
                alpha: $t,
                a: MatRef<'_, $t>,
                b: MatRef<'_, $t>,
                beta: $t,
                c: MatMut<'_, $t>,
            ) -> Result<()> {
                match self {
                    #[cfg(feature = "matrixmultiply")]
                    AnyBackend::MatrixMultiply => MatrixMultiply.gemm(alpha, a, b, beta, c),
                    #[cfg(feature = "openblas")]
                    AnyBackend::OpenBlas => OpenBlas.gemm(alpha, a, b, beta, c),
                }
            }
        }
    };
}
impl_any!(f32);
impl_any!(f64);

/// Whether a matrix operand is used as stored or transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transpose {
    /// `op(A) = A`.
    No,
    /// `op(A) = A^T`.
    Yes,
}

/// Number of elements a row-major `rows x cols` matrix with leading dimension `ld` spans.
fn span(rows: usize, cols: usize, ld: usize) -> Result<usize> {
    if rows == 0 || cols == 0 {
        return Ok(0);
    }
    (rows - 1)
        .checked_mul(ld)
        .and_then(|x| x.checked_add(cols))
        .ok_or(Error::Overflow {
            what: "matrix span",
        })
}

fn check_matrix(name: &'static str, len: usize, rows: usize, cols: usize, ld: usize) -> Result<()> {
    if ld < cols.max(1) {
        return Err(Error::GemmShape(format!(
            "{name}: leading dimension {ld} is smaller than the {cols} columns"
        )));
    }
    let need = span(rows, cols, ld)?;
    if len < need {
        return Err(Error::BufferLength {
            buffer: name,
            expected: need,
            found: len,
        });
    }
    Ok(())
}

/// A read-only row-major matrix operand: `rows x cols` as stored, leading dimension `ld`,
/// used as stored or transposed. Constructing one checks that the slice is long enough.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    ld: usize,
    trans: Transpose,
}

impl<'a, T> MatRef<'a, T> {
    /// A `rows x cols` row-major matrix stored in `data` with leading dimension `ld` (`>= cols`).
    pub fn new(data: &'a [T], rows: usize, cols: usize, ld: usize) -> Result<Self> {
        check_matrix("A/B operand", data.len(), rows, cols, ld)?;
        Ok(MatRef {
            data,
            rows,
            cols,
            ld,
            trans: Transpose::No,
        })
    }

    /// The same storage, used transposed (flips the current transpose).
    #[must_use]
    pub fn t(self) -> Self {
        let trans = match self.trans {
            Transpose::No => Transpose::Yes,
            Transpose::Yes => Transpose::No,
        };
        MatRef { trans, ..self }
    }

    /// The storage.
    pub fn data(&self) -> &'a [T] {
        self.data
    }
    /// Stored rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Stored columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Leading dimension (distance between stored rows).
    pub fn ld(&self) -> usize {
        self.ld
    }
    /// Whether the operand is used transposed.
    pub fn trans(&self) -> Transpose {
        self.trans
    }
    /// Rows of `op(self)`.
    pub fn op_rows(&self) -> usize {
        match self.trans {
            Transpose::No => self.rows,
            Transpose::Yes => self.cols,
        }
    }
    /// Columns of `op(self)`.
    pub fn op_cols(&self) -> usize {
        match self.trans {
            Transpose::No => self.cols,
            Transpose::Yes => self.rows,
        }
    }

    /// Rows `start..end` of `op(self)`, as an operand of the same kind.
    fn op_row_range(self, start: usize, end: usize) -> Self {
        debug_assert!(start < end && end <= self.op_rows());
        match self.trans {
            Transpose::No => MatRef {
                data: &self.data[start * self.ld..],
                rows: end - start,
                ..self
            },
            Transpose::Yes => MatRef {
                data: &self.data[start..],
                cols: end - start,
                ..self
            },
        }
    }
}

/// The output operand of a GEMM: a `rows x cols` row-major matrix with leading dimension `ld`.
#[derive(Debug)]
pub struct MatMut<'a, T> {
    data: &'a mut [T],
    rows: usize,
    cols: usize,
    ld: usize,
}

impl<'a, T> MatMut<'a, T> {
    /// A `rows x cols` row-major matrix stored in `data` with leading dimension `ld` (`>= cols`).
    pub fn new(data: &'a mut [T], rows: usize, cols: usize, ld: usize) -> Result<Self> {
        check_matrix("C operand", data.len(), rows, cols, ld)?;
        Ok(MatMut {
            data,
            rows,
            cols,
            ld,
        })
    }
    /// The storage.
    pub fn data(&mut self) -> &mut [T] {
        self.data
    }
    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Leading dimension.
    pub fn ld(&self) -> usize {
        self.ld
    }
}

/// A GEMM backend for element type `T`.
///
/// Implementations are called from rayon worker threads and must be single-threaded
/// (see the [module docs](self)).
pub trait Gemm<T: Element>: Send + Sync {
    /// A short name for reports (`"matrixmultiply"`, `"openblas"`).
    fn name(&self) -> &'static str;

    /// `C = alpha * op(A) * op(B) + beta * C`. With `beta == 0`, `C` is not read.
    ///
    /// # Errors
    /// [`Error::GemmShape`] when `op(A)` is not `m x k`, `op(B)` not `k x n` and `C` not `m x n`;
    /// [`Error::Overflow`] when a dimension does not fit the backend's index type.
    fn gemm(
        &self,
        alpha: T,
        a: MatRef<'_, T>,
        b: MatRef<'_, T>,
        beta: T,
        c: MatMut<'_, T>,
    ) -> Result<()>;
}

/// The GEMM dimensions `(m, n, k)` after checking that the operands agree.
///
/// Returns `Ok(None)` when the product is degenerate and has already been applied to `c`
/// (`m == 0`, `n == 0`, or `k == 0`, where `C = beta * C`), so backends only see positive sizes.
pub fn prepare<T: Element>(
    a: &MatRef<'_, T>,
    b: &MatRef<'_, T>,
    beta: T,
    c: &mut MatMut<'_, T>,
) -> Result<Option<(usize, usize, usize)>> {
    let (m, k) = (a.op_rows(), a.op_cols());
    let (kb, n) = (b.op_rows(), b.op_cols());
    if k != kb || c.rows != m || c.cols != n {
        return Err(Error::GemmShape(format!(
            "op(A) is {m}x{k}, op(B) is {kb}x{n}, C is {}x{}",
            c.rows, c.cols
        )));
    }
    if m == 0 || n == 0 {
        return Ok(None);
    }
    if k == 0 {
        for i in 0..m {
            let row = &mut c.data[i * c.ld..i * c.ld + n];
            if beta == T::zero() {
                row.fill(T::zero());
            } else {
                row.iter_mut().for_each(|x| *x *= beta);
            }
        }
        return Ok(None);
    }
    Ok(Some((m, n, k)))
}

/// Smallest number of `C` rows worth giving one rayon task.
const MIN_ROWS_PER_TASK: usize = 16;

/// [`Gemm::gemm`] with the rows of `C` split over the current rayon pool's threads, each part a
/// single-threaded backend call. Falls back to one call when there is one thread or too little work.
pub fn par_gemm<T: Element, B: Gemm<T> + ?Sized>(
    backend: &B,
    alpha: T,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    beta: T,
    c: MatMut<'_, T>,
) -> Result<()> {
    let threads = rayon::current_num_threads();
    let m = a.op_rows();
    if threads <= 1 || m < 2 * MIN_ROWS_PER_TASK || c.rows != m {
        return backend.gemm(alpha, a, b, beta, c);
    }
    // Round the block height up to a multiple of 8 so every block keeps full GEMM micro-tiles.
    let rows_per_task = m
        .div_ceil(threads)
        .max(MIN_ROWS_PER_TASK)
        .next_multiple_of(8);
    let (ld, n) = (c.ld, c.cols);
    let used = span(m, n, ld)?;
    c.data[..used]
        .par_chunks_mut(rows_per_task * ld)
        .enumerate()
        .try_for_each(|(i, chunk)| {
            let start = i * rows_per_task;
            let end = (start + rows_per_task).min(m);
            let part = MatMut::new(chunk, end - start, n, ld)?;
            backend.gemm(alpha, a.op_row_range(start, end), b, beta, part)
        })
}

/// A GEMM split over rayon's threads ([`par_gemm`]) or in the calling thread.
pub(crate) fn gemm_on<T: Element, B: Gemm<T> + ?Sized>(
    backend: &B,
    parallel: bool,
    alpha: T,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    beta: T,
    c: MatMut<'_, T>,
) -> Result<()> {
    if parallel {
        par_gemm(backend, alpha, a, b, beta, c)
    } else {
        backend.gemm(alpha, a, b, beta, c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain triple loop, the reference for every backend.
    pub(crate) fn naive<T: Element>(
        alpha: T,
        a: MatRef<'_, T>,
        b: MatRef<'_, T>,
        beta: T,
        c: &mut [T],
        ldc: usize,
    ) {
        let get = |m: &MatRef<'_, T>, i: usize, j: usize| match m.trans {
            Transpose::No => m.data[i * m.ld + j],
            Transpose::Yes => m.data[j * m.ld + i],
        };
        for i in 0..a.op_rows() {
            for j in 0..b.op_cols() {
                let mut s = T::zero();
                for p in 0..a.op_cols() {
                    s += get(&a, i, p) * get(&b, p, j);
                }
                let old = if beta == T::zero() {
                    T::zero()
                } else {
                    beta * c[i * ldc + j]
                };
                c[i * ldc + j] = alpha * s + old;
            }
        }
    }

    pub(crate) fn pseudo(n: usize, seed: u64) -> Vec<f64> {
        // Small whole numbers: every product below is exact in f32 and f64.
        (0..n)
            .map(|i| (((i as u64 * 2654435761 + seed * 97) >> 7) % 9) as f64 - 4.0)
            .collect()
    }

    fn check_backend<T: Element, B: Gemm<T>>(backend: &B) {
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 5, 7),
            (40, 33, 17),
            (70, 9, 65),
            // Past the matrixmultiply backend's transpose threshold, in two `k` chunks.
            (130, 70, 300),
            (0, 3, 2),
            (4, 0, 2),
            (4, 3, 0),
        ] {
            for ta in [false, true] {
                for tb in [false, true] {
                    for &(alpha, beta) in &[(1.0, 0.0), (2.0, 1.0), (-1.0, 0.5)] {
                        let (lda_extra, ldb_extra, ldc_extra) = (1, 2, 3);
                        let (ar, ac) = if ta { (k, m) } else { (m, k) };
                        let (br, bc) = if tb { (n, k) } else { (k, n) };
                        let lda = ac + lda_extra;
                        let ldb = bc + ldb_extra;
                        let ldc = n + ldc_extra;
                        let ad: Vec<T> = pseudo(ar * lda, 1).into_iter().map(T::of).collect();
                        let bd: Vec<T> = pseudo(br * ldb, 2).into_iter().map(T::of).collect();
                        let mut c0: Vec<T> = pseudo(m * ldc, 3).into_iter().map(T::of).collect();
                        if beta == 0.0 {
                            // beta = 0 must not read C.
                            c0.iter_mut().for_each(|x| *x = T::nan());
                        }
                        let mut a = MatRef::new(&ad, ar, ac, lda).unwrap();
                        if ta {
                            a = a.t();
                        }
                        let mut b = MatRef::new(&bd, br, bc, ldb).unwrap();
                        if tb {
                            b = b.t();
                        }
                        let mut expect = c0.clone();
                        naive(T::of(alpha), a, b, T::of(beta), &mut expect, ldc);
                        for par in [false, true] {
                            let mut got = c0.clone();
                            let cm = MatMut::new(&mut got, m, n, ldc).unwrap();
                            if par {
                                par_gemm(backend, T::of(alpha), a, b, T::of(beta), cm).unwrap();
                            } else {
                                backend.gemm(T::of(alpha), a, b, T::of(beta), cm).unwrap();
                            }
                            for i in 0..m {
                                for j in 0..n {
                                    let (g, e) = (got[i * ldc + j], expect[i * ldc + j]);
                                    assert!(
                                        g == e,
                                        "{} m{m} n{n} k{k} ta{ta} tb{tb} a{alpha} b{beta} par{par}: C[{i}][{j}] = {g}, expected {e}",
                                        backend.name()
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[cfg(feature = "matrixmultiply")]
    #[test]
    fn matrixmultiply_matches_naive_exactly() {
        check_backend::<f32, _>(&MatrixMultiply);
        check_backend::<f64, _>(&MatrixMultiply);
    }

    #[cfg(feature = "openblas")]
    #[test]
    fn openblas_matches_naive_exactly() {
        check_backend::<f32, _>(&OpenBlas);
        check_backend::<f64, _>(&OpenBlas);
    }

    #[test]
    fn any_backend_dispatches_to_each_compiled_backend() {
        let all = AnyBackend::all();
        assert_eq!(all.len(), COMPILED_BACKENDS.len());
        for backend in all {
            assert_eq!(AnyBackend::from_name(backend.name()), Ok(backend));
            check_backend::<f32, _>(&backend);
            check_backend::<f64, _>(&backend);
        }
        let err = AnyBackend::from_name("mkl").unwrap_err();
        assert!(err.to_string().contains("backend"), "{err}");
    }

    #[test]
    fn shape_errors_are_reported() {
        let a = [0.0f32; 6];
        let mut c = [0.0f32; 4];
        assert!(matches!(
            MatRef::new(&a[..5], 2, 3, 3),
            Err(Error::BufferLength {
                expected: 6,
                found: 5,
                ..
            })
        ));
        assert!(matches!(MatRef::new(&a, 2, 3, 2), Err(Error::GemmShape(_))));
        let am = MatRef::new(&a, 2, 3, 3).unwrap();
        let cm = MatMut::new(&mut c, 2, 2, 2).unwrap();
        // op(A) is 2x3 but op(B) = A is 2x3: inner dimensions differ.
        let err = DefaultBackend::default()
            .gemm(1.0, am, am, 0.0, cm)
            .unwrap_err();
        assert!(matches!(err, Error::GemmShape(_)), "{err}");
    }

    #[test]
    fn compiled_backends_lists_the_features() {
        assert_eq!(
            COMPILED_BACKENDS.contains(&"matrixmultiply"),
            cfg!(feature = "matrixmultiply")
        );
        assert_eq!(
            COMPILED_BACKENDS.contains(&"openblas"),
            cfg!(feature = "openblas")
        );
    }
}
