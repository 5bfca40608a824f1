//! The activations that call `exp`, `expm1` or `tanh`, against the implementation they had
//! before `exp.rs`: the same formulas with libm's functions. Values and gradients, `f32` and
//! `f64`, over every sign and exponent, a fine grid where the activations bend, and the
//! special values.

use super::*;
use Activation::{Elu, Loggy, Logistic, Selu, Tanh};

/// The activations whose formulas call `exp`, `expm1` or `tanh`.
const CHANGED: [Activation; 5] = [Logistic, Tanh, Elu, Loggy, Selu];

/// The previous [`Activation::activate`] of the [`CHANGED`] activations, verbatim (libm's
/// `exp`, `exp_m1` and `tanh` through `num_traits`).
fn libm_activate<T: Element>(act: Activation, x: T) -> T {
    let zero = T::zero();
    let one = T::one();
    let two = one + one;
    match act {
        Logistic => one / (one + (-x).exp()),
        Tanh => x.tanh(),
        Elu => {
            if x >= zero {
                x
            } else {
                x.exp_m1()
            }
        }
        Loggy => two / (one + (-x).exp()) - one,
        Selu => {
            if x >= zero {
                T::of(SELU_LAMBDA) * x
            } else {
                T::of(SELU_LAMBDA_ALPHA) * x.exp_m1()
            }
        }
        _ => unreachable!("{act} does not call exp"),
    }
}

/// How far the new results may be from the old ones, in ulps of `max(|old|, floor)`.
///
/// Both implementations are a few roundings away from the exact value: over every `f32` input
/// (`changed_activations_match_libm_every_f32` below), new and old are within 2.42 and 2.19 ulps
/// of it for tanh, 0.82 and 0.77 for ELU, 1.5 (of 1) for loggy. Two results within `a` and `b`
/// ulps of one value differ by at most `a + b` ulps, a whole number where both are in one
/// binade: at most 4 for tanh. Each tolerance below is the largest difference that test finds
/// over every `f32` (the `f64` differences are no larger), so that a change which makes one
/// activation less accurate fails here, and none is above that sum of the two errors.
///
/// Gradients are functions of the output (`y(1 - y)`, `1 - y²`, `y + 1`, `y + λα`), which
/// turn a relative difference in `y` into an absolute one (and `1 - y²` cancels near `y = ±1`
/// for both): they are compared in ulps of 1. So is loggy, Darknet's `2 / (1 + e^{-x}) - 1`,
/// which cancels near `x = 0` for both implementations.
struct Tolerance {
    ulps: f64,
    /// Differences are measured in ulps of at least this: the smallest normal float for
    /// relative accuracy (below it floats are evenly spaced anyway), or 1.
    floor: f64,
}

fn tolerance<T: Element>(act: Activation, gradient: bool) -> Tolerance {
    let normal = T::min_positive_value().to_f64_lossless();
    // (value, gradient), as measured over every f32.
    let (value, gradient_ulps) = match act {
        Logistic => (4.0, 1.0),
        Tanh => (4.0, 2.5),
        Elu => (1.0, 0.5),
        Loggy => (2.0, 2.0),
        Selu => (2.0, 1.0),
        _ => unreachable!("{act} does not call exp"),
    };
    match (act, gradient) {
        (_, true) => Tolerance {
            ulps: gradient_ulps,
            floor: 1.0,
        },
        (Loggy, false) => Tolerance {
            ulps: value,
            floor: 1.0,
        },
        (_, false) => Tolerance {
            ulps: value,
            floor: normal,
        },
    }
}

/// `|got - want|` in ulps of `T` at `max(|want|, floor)`, for `got` of type `T` and `want` of
/// type `T` or exact (`f64`, for `f32`); NaN only matches NaN, an infinity only itself (`want`
/// as rounded to `T`).
fn scaled_ulps<T: Element>(got: T, want: f64, floor: f64) -> f64 {
    if got.is_nan() || want.is_nan() {
        return if got.is_nan() && want.is_nan() {
            0.0
        } else {
            f64::INFINITY
        };
    }
    if got.is_infinite() || T::of(want).is_infinite() {
        return if got == T::of(want) {
            0.0
        } else {
            f64::INFINITY
        };
    }
    let scale = T::of(want.abs().max(floor));
    // scale = mantissa·2^exp with a full mantissa (or the subnormals' 2^exp): the ulp is 2^exp.
    let (_, exp, _) = scale.integer_decode();
    let exp = i32::from(exp);
    let ulp = 2f64.powi(exp / 2) * 2f64.powi(exp - exp / 2);
    (got.to_f64_lossless() - want).abs() / ulp
}

/// Every sign and exponent (`stride`-th bit patterns of `f32`, widened for `f64`), a grid of
/// step 1/512 on `[-20, 20]`, and the special values.
fn inputs<T: Element>(stride: u32) -> Vec<T> {
    let mut v: Vec<T> = (0..=u32::MAX)
        .step_by(stride as usize)
        .map(|b| T::of(f64::from(f32::from_bits(b))))
        .collect();
    v.extend((-20 * 512..=20 * 512).map(|i| T::of(f64::from(i) / 512.0)));
    let specials = [
        0.0,
        f64::MIN_POSITIVE,
        5e-324,
        1e-45,
        1e-30,
        1e-7,
        1e-3,
        0.1,
        1.0,
        9.0,
        10.0,
        17.0,
        20.0,
        40.0,
        88.0,
        88.72,
        88.722_83,
        88.722_84,
        89.0,
        103.9,
        104.0,
        709.78,
        710.0,
        745.2,
        746.0,
        1e30,
        f64::MAX,
        f64::INFINITY,
        f64::NAN,
    ];
    for x in specials {
        v.extend([T::of(x), T::of(-x)]);
    }
    v
}

/// A largest difference in ulps and the input where it occurs.
type Worst<T> = (f64, T);

fn max<T>(a: Worst<T>, b: Worst<T>) -> Worst<T> {
    if b.0 > a.0 { b } else { a }
}

/// The largest differences between the new and the old values of `act`, and between
/// [`Activation::gradient`] at the new and at the old output, over `inputs`.
fn worst<T: Element>(act: Activation, inputs: &[T]) -> [Worst<T>; 2] {
    let mut worst = [(0.0, T::zero()); 2];
    for &x in inputs {
        let (new, old) = (act.activate(x), libm_activate(act, x));
        let (new_gradient, old_gradient) = (act.gradient(new), act.gradient(old));
        for (i, (new, old)) in [(new, old), (new_gradient, old_gradient)]
            .into_iter()
            .enumerate()
        {
            let e = scaled_ulps(
                new,
                old.to_f64_lossless(),
                tolerance::<T>(act, i == 1).floor,
            );
            worst[i] = max(worst[i], (e, x));
        }
    }
    worst
}

/// Prints the largest differences and panics if one is beyond the tolerance.
fn check<T: Element>(act: Activation, [value, gradient]: [Worst<T>; 2], inputs: usize) {
    eprintln!(
        "{act} {}, new - old: value {:.3} ulps at {:?}, gradient {:.3} ulps at {:?} \
         ({inputs} inputs)",
        std::any::type_name::<T>(),
        value.0,
        value.1,
        gradient.0,
        gradient.1,
    );
    for (i, (e, x)) in [value, gradient].into_iter().enumerate() {
        let tol = tolerance::<T>(act, i == 1).ulps;
        let what = ["", "'"][i];
        assert!(
            e <= tol,
            "{act}{what}({x:?}): {e} ulps from libm's, tolerance {tol}"
        );
    }
}

fn compare<T: Element>(inputs: &[T]) {
    for act in CHANGED {
        check(act, worst(act, inputs), inputs.len());
    }
}

#[test]
fn changed_activations_match_libm_f32() {
    compare::<f32>(&inputs(1 << 16));
}

#[test]
fn changed_activations_match_libm_f64() {
    compare::<f64>(&inputs(1 << 16));
}

/// Every `f32` input, and how far each implementation is from the exact value (the libm
/// formula in `f64`); run by hand: `cargo test --release --lib every_f32 -- --ignored
/// --nocapture`.
#[test]
#[ignore = "minutes in release mode; run by hand"]
fn changed_activations_match_libm_every_f32() {
    use rayon::prelude::*;
    for act in CHANGED {
        let (value_floor, gradient_floor) = (
            tolerance::<f32>(act, false).floor,
            tolerance::<f32>(act, true).floor,
        );
        // [new - old, new - exact, old - exact], for the value and the gradient.
        let worst = (0..=u32::MAX >> 16)
            .into_par_iter()
            .map(|hi| {
                let inputs: Vec<f32> = (0..1 << 16)
                    .map(|lo| f32::from_bits(hi << 16 | lo))
                    .collect();
                let [v, g] = worst(act, &inputs);
                let mut w = [v, (0.0, 0.0), (0.0, 0.0), g, (0.0, 0.0), (0.0, 0.0)];
                for x in inputs {
                    let (new, old) = (act.activate(x), libm_activate(act, x));
                    let exact = libm_activate(act, f64::from(x));
                    // Normal results only: below f32::MIN_POSITIVE both flush logistic to 0
                    // where e^{-x} overflows (x < -88.72), and SELU's λ·x overflows at the
                    // top; neither is about exp.
                    let magnitude = exact.abs();
                    let normal = f64::from(f32::MIN_POSITIVE)..=f64::from(f32::MAX) / 2.0;
                    if magnitude != 0.0 && !normal.contains(&magnitude) {
                        continue;
                    }
                    w[1] = max(w[1], (scaled_ulps(new, exact, value_floor), x));
                    w[2] = max(w[2], (scaled_ulps(old, exact, value_floor), x));
                    let exact = act.gradient(exact);
                    let new = scaled_ulps(act.gradient(new), exact, gradient_floor);
                    let old = scaled_ulps(act.gradient(old), exact, gradient_floor);
                    w[4] = max(w[4], (new, x));
                    w[5] = max(w[5], (old, x));
                }
                w
            })
            .reduce(
                || [(0.0, 0.0); 6],
                |a, b| std::array::from_fn(|i| max(a[i], b[i])),
            );
        eprintln!(
            "{act} f32 against exact: value new {:.3} ulps at {:?}, old {:.3} at {:?}; \
             gradient new {:.3} at {:?}, old {:.3} at {:?}",
            worst[1].0,
            worst[1].1,
            worst[2].0,
            worst[2].1,
            worst[4].0,
            worst[4].1,
            worst[5].0,
            worst[5].1,
        );
        check(act, [worst[0], worst[3]], 1 << 32);
    }
}

/// The vector bodies of the kernels compute the same bits as [`Activation::activate`] compiled
/// for the baseline, on the same inputs (extremes included): no instruction set rounds
/// differently.
#[test]
fn kernels_match_scalar_bit_for_bit() {
    fn check<T: Element>(to_bits: fn(T) -> u64) {
        let input: Vec<T> = inputs(1 << 18);
        for act in Activation::ALL {
            let mut got = input.clone();
            act.affine_slice(&mut got, T::one(), T::zero());
            for (&x, &g) in input.iter().zip(&got) {
                // The kernel computes act(x·1 + 0), which is act(+0) for x = -0.
                let want = act.activate(x * T::one() + T::zero());
                assert!(
                    to_bits(g) == to_bits(want) || (g.is_nan() && want.is_nan()),
                    "{act}({x:?}): kernel {g:?}, scalar {want:?}"
                );
            }
        }
    }
    check::<f32>(|v| u64::from(v.to_bits()));
    check::<f64>(f64::to_bits);
}
