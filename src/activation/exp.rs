//! `exp`, `expm1` and `tanh` that the compiler can vectorize.
//!
//! libm's `expf`, `expm1f` and `tanhf` are function calls, so a loop that calls them runs one
//! element at a time; they dominated the forward pass of tanh and logistic layers. These are
//! built from plain arithmetic and bit manipulation (no calls, no tables, no `unsafe`), so that
//! inside a [`multiversion!`](crate::simd::multiversion) body the loop is vectorized 16, 8 or 4
//! floats wide.
//!
//! # Method
//!
//! `x = k·ln 2 + r` with `k` the integer nearest to `x·log2(e)` and `|r| <= ln(2)/2` (Cody and
//! Waite: `ln 2` split in a high part whose product with `k` is exact, and a low part); then
//! `e^r - 1 = r + r²·(1/2! + r/3! + ...)` (Taylor, truncated where the next term is below a
//! tenth of an ulp: up to `r^8/8!` for `f32`, `r^14/14!` for `f64`), and `2^k` is built in the
//! exponent bits. `e^x = (1 + p)·2^k`, `e^x - 1 = (2^k - 1) + 2^k·p`, and
//! `tanh |x| = t / (t + 2)` with `t = e^{2|x|} - 1`: no cancellation near 0, and no `inf / inf`
//! for large `x` (the argument is capped where `tanh` rounds to 1 already).
//!
//! `mul_add` is not used: without FMA in the baseline it is a libm call. Rust does not contract
//! `a * b + c` into an FMA either, so every instruction set computes the same bits; the tests
//! check that the vector bodies match the scalar function bit for bit.
//!
//! # Accuracy
//!
//! Measured against libm (`f64` libm for the `f32` functions, i.e. against the exact value to
//! within 1e-16; `f64` against glibc's own `exp`, `expm1`, `tanh`), over all finite `f32` and
//! 10⁸ `f64` inputs spread over the whole range (`exhaustive_accuracy`, ignored by default: run
//! it with `cargo test --release --lib exhaustive_accuracy -- --ignored --nocapture`, 6.5
//! minutes on 2 cores): `f32` `exp`, `expm1`, `tanh` within 0.764, 1.057 and 2.424 ulps of the
//! exact value; `f64` within 1, 1 and 3 ulps of libm's. The bounds the tests enforce are in
//! `MAX_ULPS_*` below. The layer uses libm's `tanh` for `f64` (faster there, see
//! `activation.rs`); the crate's stays tested.
//!
//! Special values as libm: `e^{+inf} = inf`, `e^{-inf} = 0`, overflow to `inf` and underflow
//! through the subnormals to `0` at the same thresholds (give or take the last ulp),
//! `expm1(-inf) = -1`, `tanh(±inf) = ±1`, NaN in, NaN out. One difference: `expm1(-0)` is `+0`
//! (libm: `-0`); the activations never ask for it (`tanh` takes its sign from `x`).

/// Defines the functions for one float type.
macro_rules! exp_impl {
    (
        $mod:ident: $f:ident, bits $u:ident / $i:ident, mantissa $mant:literal, bias $bias:literal,
        clamp [$lo:literal, $hi:literal], expm1_is_exp $big:literal, tanh_is_one $one:literal,
        tanh_is_x $tiny:expr,
        shifter $shifter:literal, ln2 $ln2_hi:literal + $ln2_lo:literal,
        taylor [$($c:expr),+ $(,)?]
    ) => {
        pub(crate) mod $mod {
            /// `e^x` is 0 below this and `inf` above `HI` (`x` is clamped to `[LO, HI]`, which
            /// also keeps `k/2` in the normal exponents).
            const LO: $f = $lo;
            const HI: $f = $hi;
            /// Above this, `e^x - 1` rounds to `e^x` (and `2^k` alone may overflow).
            const EXPM1_IS_EXP: $f = $big;
            /// Above this, `tanh(x)` rounds to 1.
            const TANH_IS_ONE: $f = $one;
            /// Below this, `tanh(x)` rounds to `x`: `x²/3` is below half an ulp.
            const TANH_IS_X: $f = $tiny;
            /// `1.5·2^mantissa`: adding it rounds to an integer, which then sits in the low bits.
            const SHIFTER: $f = $shifter;
            const LN2_HI: $f = $ln2_hi;
            const LN2_LO: $f = $ln2_lo;
            /// `1/2!, 1/3!, ...`: `e^r - 1 = r + r²·Σ c_i r^i`.
            const TAYLOR: &[$f] = &[$($c),+];

            /// `2^k` for `k` in the normal exponent range (wrapping: no panic outside it).
            #[inline(always)]
            fn pow2(k: $i) -> $f {
                $f::from_bits((k.wrapping_add($bias) as $u) << $mant)
            }

            /// `(r, r_lo, poly, s1, s2)`: `x = k·ln 2 + r + r_lo` (`r` exact, `r_lo` its small
            /// correction), `e^{r + r_lo} - 1 ≈ r + r_lo + poly`, `s1·s2 = 2^k`.
            #[inline(always)]
            fn reduce(x: $f) -> ($f, $f, $f, $f, $f) {
                // Comparisons that let NaN through.
                let x = if x < LO { LO } else if x > HI { HI } else { x };
                let n = x * core::$f::consts::LOG2_E + SHIFTER;
                let kf = n - SHIFTER;
                let k = (n.to_bits() as $i).wrapping_sub(SHIFTER.to_bits() as $i);
                // Exact: kf·LN2_HI is exact and within a factor 2 of x (Sterbenz), or 0.
                let r = x - kf * LN2_HI;
                let r_lo = -(kf * LN2_LO);
                let rr = r + r_lo;
                let mut q: $f = 0.0;
                for &c in TAYLOR.iter().rev() {
                    q = q * rr + c;
                }
                let half = k >> 1;
                (r, r_lo, rr * rr * q, pow2(half), pow2(k.wrapping_sub(half)))
            }

            /// `a + b` as `(sum, error)`, exactly, for `|a| >= |b|` or `a = 0` (Fast2Sum).
            #[inline(always)]
            fn fast_two_sum(a: $f, b: $f) -> ($f, $f) {
                let sum = a + b;
                (sum, b - (sum - a))
            }

            /// `e^x`.
            #[inline(always)]
            pub(crate) fn exp(x: $f) -> $f {
                let (r, r_lo, poly, s1, s2) = reduce(x);
                // 1 + r without its rounding error, then the small terms.
                let (one, err) = fast_two_sum(1.0, r);
                // Scaled in two steps so that 2^k may be subnormal or 2^128 (2^1024): the first
                // product is exact, the second rounds once.
                (one + (err + (r_lo + poly))) * s1 * s2
            }

            /// `e^x - 1`.
            #[inline(always)]
            pub(crate) fn expm1(x: $f) -> $f {
                let (r, r_lo, poly, s1, s2) = reduce(x);
                if x > EXPM1_IS_EXP {
                    let (one, err) = fast_two_sum(1.0, r);
                    return (one + (err + (r_lo + poly))) * s1 * s2;
                }
                // (2^k - 1) + 2^k·(r + r_lo + poly): 2^k - 1 and 2^k·r are exact, and
                // |2^k - 1| >= |2^k·r| (|r| <= 0.35) unless k = 0; their sum is carried with its
                // rounding error, so the cancellation for k = ±1 costs nothing.
                let s = s1 * s2;
                let (sum, err) = fast_two_sum(s - 1.0, s * r);
                sum + (err + s * (r_lo + poly))
            }

            /// `tanh(x)`.
            #[inline(always)]
            pub(crate) fn tanh(x: $f) -> $f {
                let a = x.abs();
                let a = if a > TANH_IS_ONE { TANH_IS_ONE } else { a };
                let t = expm1(a + a);
                let y = (t / (t + 2.0)).copysign(x);
                // Below TANH_IS_X, x - x³/3 rounds to x (as in libm); the division would not
                // always give x back (t + 2 rounds).
                if a < TANH_IS_X { x } else { y }
            }
        }
    };
}

exp_impl! {
    f32: f32, bits u32 / i32, mantissa 23, bias 127,
    // e^-104 < 2^-150 (rounds to 0); e^89 > f32::MAX.
    clamp [-104.0, 89.0], expm1_is_exp 20.0, tanh_is_one 9.5, tanh_is_x 1.0 / 4096.0, // 2^-12
    shifter 12_582_912.0,
    // 15 significant bits: k·LN2_HI is exact for |k| < 2^9.
    // (0.693_145_751_953_125 exactly, and the rest of ln 2 rounded.)
    ln2 0.693_145_75 + 1.428_606_8e-6,
    taylor [
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5040.0,
        1.0 / 40320.0,
    ]
}

exp_impl! {
    f64: f64, bits u64 / i64, mantissa 52, bias 1023,
    // e^-746 < 2^-1075 (rounds to 0); e^710 > f64::MAX.
    clamp [-746.0, 710.0], expm1_is_exp 40.0, tanh_is_one 20.0,
    tanh_is_x 1.0 / 134_217_728.0, // 2^-27
    shifter 6_755_399_441_055_744.0,
    // 32 significant bits: k·LN2_HI is exact for |k| < 2^21.
    // (0.693_147_180_369_123_816_490_173_339_843_75 exactly, and the rest of ln 2 rounded.)
    ln2 0.693_147_180_369_123_8 + 1.908_214_929_270_587_7e-10,
    taylor [
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5040.0,
        1.0 / 40320.0,
        1.0 / 362_880.0,
        1.0 / 3_628_800.0,
        1.0 / 39_916_800.0,
        1.0 / 479_001_600.0,
        1.0 / 6_227_020_800.0,
        1.0 / 87_178_291_200.0,
    ]
}

#[cfg(test)]
mod tests {
    use rayon::prelude::*;

    /// The largest errors the tests accept, in ulps of the result, against libm's `f64`
    /// functions for `f32` (the exact value to 1e-16, compared as a real number) and against
    /// libm's `f64` functions for `f64` (whole ulps between the two results).
    /// Every `f32` (`exhaustive_accuracy_f32`) gave 0.764, 1.057 and 2.424 ulps; `f64` over
    /// 2.8·10⁸ inputs 1, 1 and 3 ulps from libm.
    const MAX_ULPS_F32: [(&str, f64); 3] = [("exp", 0.8), ("expm1", 1.1), ("tanh", 2.5)];
    const MAX_ULPS_F64: [(&str, u64); 3] = [("exp", 1), ("expm1", 2), ("tanh", 3)];

    type Pair32 = (fn(f32) -> f32, fn(f64) -> f64);
    type Pair64 = (fn(f64) -> f64, fn(f64) -> f64);

    fn pairs32() -> [(&'static str, Pair32); 3] {
        [
            ("exp", (super::f32::exp, f64::exp)),
            ("expm1", (super::f32::expm1, f64::exp_m1)),
            ("tanh", (super::f32::tanh, f64::tanh)),
        ]
    }

    fn pairs64() -> [(&'static str, Pair64); 3] {
        [
            ("exp", (super::f64::exp, f64::exp)),
            ("expm1", (super::f64::expm1, f64::exp_m1)),
            ("tanh", (super::f64::tanh, f64::tanh)),
        ]
    }

    /// Position of `x` in the order of the floats, `±0` both at 0 (so `f32::MAX` and `inf` are 1
    /// apart).
    fn ord32(x: f32) -> i64 {
        let b = i64::from(x.to_bits() & 0x7fff_ffff);
        if x.is_sign_negative() { -b } else { b }
    }

    fn ord64(x: f64) -> i128 {
        let b = i128::from(x.to_bits() & 0x7fff_ffff_ffff_ffff);
        if x.is_sign_negative() { -b } else { b }
    }

    /// Error of `got` in `f32` ulps against `exact`; NaN must meet NaN, and where `exact` is
    /// out of `f32`'s range the distance to its rounding counts.
    fn err32(got: f32, exact: f64) -> f64 {
        if exact.is_nan() || got.is_nan() {
            return if exact.is_nan() && got.is_nan() {
                0.0
            } else {
                f64::INFINITY
            };
        }
        let rounded = exact as f32;
        if rounded.is_infinite() || got.is_infinite() {
            return (ord32(got) - ord32(rounded)).unsigned_abs() as f64;
        }
        // The ulp of f32 at |exact|: 2^(exponent - 23), at least the subnormal spacing 2^-149.
        let e = exact.abs().max(f64::from(f32::MIN_POSITIVE));
        let ulp = 2f64.powi(e.log2().floor() as i32 - 23);
        (f64::from(got) - exact).abs() / ulp
    }

    fn err64(got: f64, libm: f64) -> u64 {
        if libm.is_nan() || got.is_nan() {
            return if libm.is_nan() && got.is_nan() {
                0
            } else {
                u64::MAX
            };
        }
        (ord64(got) - ord64(libm)).unsigned_abs() as u64
    }

    /// `f32` inputs: every `stride`-th bit pattern (both signs, all exponents, NaN and inf
    /// included), a grid of step `step` on `[-30, 30]`, and the special values.
    fn inputs32(stride: u32, step: f32) -> impl ParallelIterator<Item = f32> {
        let bits = (0..=u32::MAX / stride).into_par_iter();
        let n = (60.0 / step) as i32;
        let grid = (0..=n)
            .into_par_iter()
            .map(move |i| -30.0 + step * i as f32);
        bits.map(move |i| f32::from_bits(i * stride))
            .chain(grid)
            .chain(specials32())
    }

    fn specials32() -> Vec<f32> {
        let mut v = vec![
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            1e-45,
            1e-30,
            1e-10,
            1e-7,
            1e-3,
            0.5,
            core::f32::consts::LN_2 / 2.0,
            1.0,
            9.0,
            9.5,
            10.0,
            17.0,
            20.0,
            21.0,
            88.0,
            88.72,
            88.722_83,
            88.722_84,
            89.0,
            100.0,
            103.0,
            104.0,
            1e10,
            f32::MAX,
            f32::INFINITY,
            f32::NAN,
        ];
        let neg: Vec<f32> = v.iter().map(|x| -x).collect();
        v.extend(neg);
        v
    }

    /// `f64` inputs: every `stride`-th bit pattern with both signs, a grid of step `step` on
    /// `[-750, 710]`, and the special values.
    fn inputs64(stride: u64, step: f64) -> impl ParallelIterator<Item = f64> {
        let bits = (0..u64::MAX / stride)
            .into_par_iter()
            .flat_map_iter(move |i| {
                let x = f64::from_bits(i * stride);
                [x, -x]
            });
        let n = (1460.0 / step) as i64;
        let grid = (0..=n)
            .into_par_iter()
            .map(move |i| -750.0 + step * i as f64);
        let mut specials: Vec<f64> = specials32().into_iter().map(f64::from).collect();
        specials.extend([
            1e-300,
            f64::MIN_POSITIVE,
            5e-324,
            19.0,
            37.0,
            40.0,
            41.0,
            709.78,
            709.782_712_893_384,
            709.782_712_893_385,
            710.0,
            745.0,
            745.2,
            746.0,
            f64::MAX,
        ]);
        let neg: Vec<f64> = specials.iter().map(|x| -x).collect();
        specials.extend(neg);
        bits.chain(grid).chain(specials)
    }

    /// The largest error of each function over `inputs()`, the input where it occurs, and the
    /// number of inputs.
    fn worst32<I: ParallelIterator<Item = f32>>(
        inputs: impl Fn() -> I,
    ) -> Vec<(&'static str, f64, f32, usize)> {
        pairs32()
            .into_iter()
            .map(|(name, (fast, libm))| {
                let (e, x, n) = inputs()
                    .map(|x| (err32(fast(x), libm(f64::from(x))), x, 1))
                    .reduce(
                        || (0.0, 0.0, 0),
                        |a, b| {
                            let (e, x) = if b.0 > a.0 { (b.0, b.1) } else { (a.0, a.1) };
                            (e, x, a.2 + b.2)
                        },
                    );
                (name, e, x, n)
            })
            .collect()
    }

    fn worst64<I: ParallelIterator<Item = f64>>(
        inputs: impl Fn() -> I,
    ) -> Vec<(&'static str, u64, f64, usize)> {
        pairs64()
            .into_iter()
            .map(|(name, (fast, libm))| {
                let (e, x, n) = inputs().map(|x| (err64(fast(x), libm(x)), x, 1)).reduce(
                    || (0, 0.0, 0),
                    |a, b| {
                        let (e, x) = if b.0 > a.0 { (b.0, b.1) } else { (a.0, a.1) };
                        (e, x, a.2 + b.2)
                    },
                );
                (name, e, x, n)
            })
            .collect()
    }

    fn check32<I: ParallelIterator<Item = f32>>(inputs: impl Fn() -> I) {
        let worst = worst32(inputs);
        for &(name, e, x, n) in &worst {
            eprintln!("f32 {name}: max {e:.3} ulp at {x:e} ({n} inputs)");
        }
        for ((name, e, x, _), (bound_name, bound)) in worst.into_iter().zip(MAX_ULPS_F32) {
            assert_eq!(name, bound_name);
            assert!(e <= bound, "f32 {name}({x:e}): {e} ulps, bound {bound}");
        }
    }

    fn check64<I: ParallelIterator<Item = f64>>(inputs: impl Fn() -> I) {
        let worst = worst64(inputs);
        for &(name, e, x, n) in &worst {
            eprintln!("f64 {name}: max {e} ulp at {x:e} ({n} inputs)");
        }
        for ((name, e, x, _), (bound_name, bound)) in worst.into_iter().zip(MAX_ULPS_F64) {
            assert_eq!(name, bound_name);
            assert!(e <= bound, "f64 {name}({x:e}): {e} ulps, bound {bound}");
        }
    }

    #[test]
    fn accuracy_f32() {
        check32(|| inputs32(1 << 15, 1e-3));
    }

    #[test]
    fn accuracy_f64() {
        check64(|| inputs64(1 << 48, 1e-2));
    }

    /// Every `f32`: the figures quoted in the module's documentation.
    #[test]
    #[ignore = "minutes in release mode; run by hand"]
    fn exhaustive_accuracy_f32() {
        check32(|| inputs32(1, 1e-5));
    }

    /// 2.8·10⁸ `f64`s: the figures quoted in the module's documentation.
    #[test]
    #[ignore = "a minute in release mode; run by hand"]
    fn exhaustive_accuracy_f64() {
        check64(|| inputs64(1 << 38, 1e-5));
    }

    #[test]
    fn special_values() {
        use super::f32::{exp, expm1, tanh};
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(f32::NEG_INFINITY).to_bits(), 0);
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-0.0), 1.0);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(-104.0).to_bits(), 0);
        assert!(exp(-100.0) > 0.0 && exp(-100.0) < f32::MIN_POSITIVE);
        assert_eq!(expm1(f32::INFINITY), f32::INFINITY);
        assert_eq!(expm1(f32::NEG_INFINITY), -1.0);
        assert_eq!(expm1(-20.0), -1.0);
        assert_eq!(expm1(1e-30), 1e-30);
        assert_eq!(expm1(-1e-30), -1e-30);
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
        assert_eq!(tanh(f32::MAX), 1.0);
        assert_eq!(tanh(9.5), 1.0);
        assert_eq!(tanh(0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!(tanh(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(tanh(1e-30), 1e-30);
        assert_eq!(tanh(-1e-45), -1e-45);
        for f in [exp, expm1, tanh] {
            assert!(f(f32::NAN).is_nan());
            assert!(f(-f32::NAN).is_nan());
        }
        let (exp, expm1, tanh) = (super::f64::exp, super::f64::expm1, super::f64::tanh);
        assert_eq!(exp(f64::INFINITY), f64::INFINITY);
        assert_eq!(exp(f64::NEG_INFINITY).to_bits(), 0);
        assert_eq!(exp(710.0), f64::INFINITY);
        assert_eq!(exp(-746.0).to_bits(), 0);
        assert!(exp(-740.0) > 0.0 && exp(-740.0) < f64::MIN_POSITIVE);
        assert_eq!(expm1(f64::NEG_INFINITY), -1.0);
        assert_eq!(expm1(f64::INFINITY), f64::INFINITY);
        assert_eq!(expm1(1e-300), 1e-300);
        assert_eq!(tanh(f64::INFINITY), 1.0);
        assert_eq!(tanh(-20.0), -1.0);
        assert_eq!(tanh(-0.0).to_bits(), (-0.0f64).to_bits());
        assert_eq!(tanh(5e-324), 5e-324);
        for f in [exp, expm1, tanh] {
            assert!(f(f64::NAN).is_nan());
        }
    }
}
