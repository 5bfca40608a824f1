//! Sums written so the compiler vectorizes them: eight independent accumulators instead of one
//! dependency chain (a plain `iter().sum()` of floats cannot be reordered, so it runs one add
//! per cycle latency).

use crate::element::Element;
use crate::simd::multiversion;

/// Independent accumulators per sum (also used by the fused kernels that must sum in the same
/// order).
pub(crate) const LANES: usize = 8;

multiversion! {
/// `sum(x)`.
pub(crate) fn sum<T: Element>(x: &[T]) -> T {
    let mut acc = [T::zero(); LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    rest.iter().copied().sum::<T>() + acc.iter().copied().sum::<T>()
}
}

multiversion! {
/// `sum((x - m)^2)`.
pub(crate) fn sum_sq_dev<T: Element>(x: &[T], m: T) -> T {
    let mut acc = [T::zero(); LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            let d = c[i] - m;
            acc[i] += d * d;
        }
    }
    rest.iter().map(|&v| (v - m) * (v - m)).sum::<T>() + acc.iter().copied().sum::<T>()
}
}

multiversion! {
/// `(sum(a), sum(a * b))`: the reference that `Activation::gradient_sum_and_dot`, which fuses
/// it with the activation's gradient, is tested against.
#[cfg(test)]
pub(crate) fn sum_and_dot<T: Element>(a: &[T], b: &[T]) -> (T, T) {
    let mut s = [T::zero(); LANES];
    let mut d = [T::zero(); LANES];
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let full = n - n % LANES;
    for (ca, cb) in a[..full]
        .chunks_exact(LANES)
        .zip(b[..full].chunks_exact(LANES))
    {
        for i in 0..LANES {
            s[i] += ca[i];
            d[i] += ca[i] * cb[i];
        }
    }
    let mut s_tot = s.iter().copied().sum::<T>();
    let mut d_tot = d.iter().copied().sum::<T>();
    for (&x, &y) in a[full..].iter().zip(&b[full..]) {
        s_tot += x;
        d_tot += x * y;
    }
    (s_tot, d_tot)
}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_plain_sums() {
        for n in [0, 1, 7, 8, 9, 31, 100] {
            let a: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
            let b: Vec<f64> = (0..n).map(|i| (i as f64 * 0.11).cos()).collect();
            let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * (1.0 + y.abs());
            assert!(close(sum(&a), a.iter().sum()));
            let m = 0.3;
            assert!(close(
                sum_sq_dev(&a, m),
                a.iter().map(|x| (x - m) * (x - m)).sum()
            ));
            let (s, d) = sum_and_dot(&a, &b);
            assert!(close(s, a.iter().sum()));
            assert!(close(d, a.iter().zip(&b).map(|(x, y)| x * y).sum()));
        }
    }
}
