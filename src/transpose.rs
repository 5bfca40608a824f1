//! Out-of-place matrix transpose, for GEMM operands that a backend packs faster in the other
//! layout.
//!
//! matrixmultiply packs an operand with a plain copy when its inner dimension `k` runs across
//! rows (`A` stored `k x m`, `B` stored `k x n`) and element by element otherwise. The weight
//! gradient multiplies two matrices that both run along the pixels (`k`), so one of them is
//! transposed first: 8x8 blocks in vector registers cost less than the slow packing they save.

use crate::element::Element;

/// `dst` (`cols x rows`, leading dimension `ld_dst`) = transpose of `src` (`rows x cols`,
/// leading dimension `ld`).
///
/// # Panics
/// When a slice is shorter than the shape implies (callers size them from the same geometry).
pub(crate) fn transpose<T: Element>(
    src: &[T],
    rows: usize,
    cols: usize,
    ld: usize,
    dst: &mut [T],
    ld_dst: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(ld >= cols && src.len() >= (rows - 1) * ld + cols);
    assert!(ld_dst >= rows && dst.len() >= (cols - 1) * ld_dst + rows);
    T::transpose_into(src, rows, cols, ld, dst, ld_dst);
}

/// A leading dimension of at least `n` elements whose rows do not all fall into the same few
/// cache sets: `n` unless its rows are a multiple of 256 bytes apart, then one line more. A
/// transpose writes down a column of its destination; with rows 1 or 2 KiB apart those writes
/// share 2 to 4 of the L1's 64 sets and evict each other (10x slower, measured on 512 x 256).
pub(crate) fn skewed_ld<T>(n: usize) -> usize {
    let size = std::mem::size_of::<T>().max(1);
    if (n * size).is_multiple_of(256) {
        n + 64 / size
    } else {
        n
    }
}

/// Any element type: 8x8 tiles so both sides stay within a few cache lines.
pub(crate) fn transpose_tiled<T: Copy>(
    src: &[T],
    rows: usize,
    cols: usize,
    ld: usize,
    dst: &mut [T],
    ld_dst: usize,
) {
    const B: usize = 8;
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    dst[c * ld_dst + r] = src[r * ld + c];
                }
            }
        }
    }
}

/// `f32`: 8x8 blocks through AVX registers where the CPU has AVX, the tiled loop elsewhere.
pub(crate) fn transpose_f32(
    src: &[f32],
    rows: usize,
    cols: usize,
    ld: usize,
    dst: &mut [f32],
    ld_dst: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked above); `transpose` checked the slice lengths.
        unsafe { avx::transpose(src, rows, cols, ld, dst, ld_dst) };
        return;
    }
    transpose_tiled(src, rows, cols, ld, dst, ld_dst);
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must have AVX; `src` must span `(rows - 1) * ld + cols` elements and `dst`
    /// `(cols - 1) * ld_dst + rows`.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn transpose(
        src: &[f32],
        rows: usize,
        cols: usize,
        ld: usize,
        dst: &mut [f32],
        ld_dst: usize,
    ) {
        let (r8, c8) = (rows / 8 * 8, cols / 8 * 8);
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        for r0 in (0..r8).step_by(8) {
            for c0 in (0..c8).step_by(8) {
                // SAFETY: rows r0..r0 + 8 < rows and columns c0..c0 + 8 <= cols, so every
                // load is inside `src` and every store inside `dst` (caller's contract).
                unsafe {
                    let row = |i: usize| _mm256_loadu_ps(s.add((r0 + i) * ld + c0));
                    let (a0, a1, a2, a3) = (row(0), row(1), row(2), row(3));
                    let (a4, a5, a6, a7) = (row(4), row(5), row(6), row(7));
                    let t0 = _mm256_unpacklo_ps(a0, a1);
                    let t1 = _mm256_unpackhi_ps(a0, a1);
                    let t2 = _mm256_unpacklo_ps(a2, a3);
                    let t3 = _mm256_unpackhi_ps(a2, a3);
                    let t4 = _mm256_unpacklo_ps(a4, a5);
                    let t5 = _mm256_unpackhi_ps(a4, a5);
                    let t6 = _mm256_unpacklo_ps(a6, a7);
                    let t7 = _mm256_unpackhi_ps(a6, a7);
                    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                    let out = |j: usize, v| _mm256_storeu_ps(d.add((c0 + j) * ld_dst + r0), v);
                    out(0, _mm256_permute2f128_ps::<0x20>(u0, u4));
                    out(1, _mm256_permute2f128_ps::<0x20>(u1, u5));
                    out(2, _mm256_permute2f128_ps::<0x20>(u2, u6));
                    out(3, _mm256_permute2f128_ps::<0x20>(u3, u7));
                    out(4, _mm256_permute2f128_ps::<0x31>(u0, u4));
                    out(5, _mm256_permute2f128_ps::<0x31>(u1, u5));
                    out(6, _mm256_permute2f128_ps::<0x31>(u2, u6));
                    out(7, _mm256_permute2f128_ps::<0x31>(u3, u7));
                }
            }
        }
        // Edges: the last rows % 8 rows, and the last cols % 8 columns of the blocked rows.
        for r in 0..rows {
            let first = if r < r8 { c8 } else { 0 };
            for c in first..cols {
                dst[c * ld_dst + r] = src[r * ld + c];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both kernels against the definition, with edges on both axes and padded leading
    /// dimensions on both sides; entries of `dst` outside the matrix stay untouched.
    #[test]
    fn transposes_match_the_definition() {
        let shapes = [
            (1, 1),
            (8, 8),
            (16, 24),
            (13, 7),
            (9, 17),
            (288, 40),
            (20, 256),
        ];
        for (rows, cols) in shapes {
            for (pad, pad_dst) in [(0, 0), (3, 5), (0, 16)] {
                let (ld, ld_dst) = (cols + pad, rows + pad_dst);
                let src: Vec<f32> = (0..rows * ld).map(|i| i as f32).collect();
                let mut expect = vec![-1.0f32; cols * ld_dst];
                for r in 0..rows {
                    for c in 0..cols {
                        expect[c * ld_dst + r] = src[r * ld + c];
                    }
                }
                let mut got = vec![-1.0f32; cols * ld_dst];
                transpose(&src, rows, cols, ld, &mut got, ld_dst);
                assert_eq!(got, expect, "f32 {rows}x{cols} ld {ld} -> {ld_dst}");
                let src64: Vec<f64> = src.iter().map(|&v| f64::from(v)).collect();
                let mut got64 = vec![-1.0f64; cols * ld_dst];
                transpose(&src64, rows, cols, ld, &mut got64, ld_dst);
                assert!(got64.iter().zip(&expect).all(|(&a, &b)| a == f64::from(b)));
                let mut tiled = vec![-1.0f32; cols * ld_dst];
                transpose_tiled(&src, rows, cols, ld, &mut tiled, ld_dst);
                assert_eq!(tiled, expect, "tiled {rows}x{cols} ld {ld} -> {ld_dst}");
            }
        }
    }

    #[test]
    fn skewed_leading_dimensions() {
        assert_eq!(skewed_ld::<f32>(288), 288);
        assert_eq!(skewed_ld::<f32>(256), 272);
        assert_eq!(skewed_ld::<f32>(512), 528);
        assert_eq!(skewed_ld::<f64>(256), 264);
        assert_eq!(skewed_ld::<f64>(100), 100);
    }
}
