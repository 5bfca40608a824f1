//! Darknet's activation functions and their gradients.
//!
//! [`Activation`] mirrors Darknet's `ACTIVATION` enum (pjreddie/darknet, `include/darknet.h`):
//!
//! ```text
//! LOGISTIC, RELU, RELIE, LINEAR, RAMP, TANH, PLSE, LEAKY, ELU, LOGGY, STAIR, HARDTAN, LHTAN, SELU
//! ```
//!
//! The variants are declared in that order, so `activation as i32` is Darknet's numeric value, and
//! [`Activation::name`], [`Display`](std::fmt::Display) and [`FromStr`] use the spelling of a cfg
//! file's `activation=` key (`"logistic"`, `"leaky"`, ...). Formulas and constants are Darknet's
//! (`src/activations.h`).
//!
//! # Gradients are functions of the output
//!
//! Darknet does not keep pre-activation values: the forward pass overwrites `l.output` in place
//! and the backward pass calls `gradient_array(l.output, n, l.activation, l.delta)`. Every
//! gradient is therefore written as a function of the activation's *output* `y = f(x)`, not of its
//! input `x`: [`Activation::gradient`] returns `f'(x)` expressed through `y` — `y(1 - y)` for
//! logistic, `1 - y²` for tanh, `y + 1` for ELU when `y < 0`, and so on. For the piecewise
//! activations this works because the pieces have disjoint output ranges; at a kink the value is
//! the one Darknet picks. [`Activation::gradient_slice`] is Darknet's `gradient_array`: it
//! multiplies each `delta[i]` by `gradient(output[i])`.
//!
//! # Differences from Darknet
//!
//! * `tanh(|x|)` is computed as `t / (t + 2)` with `t = e^{2|x|} - 1` (and `x` capped where
//!   `tanh` rounds to ±1); Darknet's `(e^{2x} - 1) / (e^{2x} + 1)` overflows to `inf / inf = NaN`
//!   for large `x` in `f32`, and loses the low bits of small results.
//! * ELU and SELU use `expm1(x)` for `e^x - 1` (same function, more accurate near 0).
//! * `e^x`, `e^x - 1` (and `tanh` in `f32`) are the crate's own (`activation/exp.rs`), not
//!   libm's: plain arithmetic that vectorizes, within 1 to 3 ulps of libm (see that module's
//!   figures).
//! * Darknet evaluates most formulas in `double` (its constants are `double` literals) and rounds
//!   to `float`; here everything is computed in `T`, so `f32` results may differ by an ulp.
//! * An unknown name is an error rather than a silent fallback to ReLU.

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;

use crate::element::Element;
use crate::error::{Error, Result, check_len};
use crate::simd::multiversion;

mod exp;
#[cfg(test)]
mod vs_libm;

/// Calls the `f32` or the `f64` version of a function of [`exp`](mod@exp). `Element` is sealed
/// to `f32` and `f64`, so the size says which; the conversions through `f64` are identities
/// that the compiler removes (`f32 -> f64 -> f32` is exact).
macro_rules! by_type {
    ($x:expr, $f:ident) => {{
        let x: T = $x;
        if size_of::<T>() == size_of::<f32>() {
            T::of(f64::from(exp::f32::$f(x.to_f64_lossless() as f32)))
        } else {
            T::of(exp::f64::$f(x.to_f64_lossless()))
        }
    }};
}

/// `e^x`.
#[inline(always)]
fn exp<T: Element>(x: T) -> T {
    by_type!(x, exp)
}

/// `e^x - 1`.
#[inline(always)]
fn expm1<T: Element>(x: T) -> T {
    by_type!(x, expm1)
}

/// `tanh(x)`: the crate's for `f32`, libm's for `f64` (where the crate's ran 0.8x as fast as
/// libm's in `examples/activation_speed.rs`: 153 ms against 118 ms for 2^24 elements).
#[inline(always)]
fn tanh<T: Element>(x: T) -> T {
    if size_of::<T>() == size_of::<f32>() {
        by_type!(x, tanh)
    } else {
        x.tanh()
    }
}

/// Slope of [`Activation::Leaky`] for `x <= 0`.
const LEAKY_SLOPE: f64 = 0.1;
/// Slope of [`Activation::Relie`] for `x <= 0`.
const RELIE_SLOPE: f64 = 0.01;
/// The linear term `0.1·x` that [`Activation::Ramp`] adds everywhere.
const RAMP_SLOPE: f64 = 0.1;
/// Slope of [`Activation::Plse`] outside `[-4, 4]`.
const PLSE_OUTER_SLOPE: f64 = 0.01;
/// Slope of [`Activation::Plse`] inside `[-4, 4]`.
const PLSE_INNER_SLOPE: f64 = 0.125;
/// Slope of [`Activation::Lhtan`] outside `[0, 1]`.
const LHTAN_SLOPE: f64 = 0.001;
/// SELU's scale λ.
const SELU_LAMBDA: f64 = 1.0507;
/// SELU's α.
const SELU_ALPHA: f64 = 1.6732;
/// λ·α, SELU's negative saturation magnitude and its slope at `0⁻`.
const SELU_LAMBDA_ALPHA: f64 = SELU_LAMBDA * SELU_ALPHA;

/// Runs `$body` with `$a` bound to a constant equal to `$act`: one copy of `$body` per
/// activation, so that `$a.activate(..)` folds to its formula inside loops.
macro_rules! with_const {
    ($act:expr, $a:ident => $body:expr) => {
        match $act {
            Activation::Logistic => {
                const $a: Activation = Activation::Logistic;
                $body
            }
            Activation::Relu => {
                const $a: Activation = Activation::Relu;
                $body
            }
            Activation::Relie => {
                const $a: Activation = Activation::Relie;
                $body
            }
            Activation::Linear => {
                const $a: Activation = Activation::Linear;
                $body
            }
            Activation::Ramp => {
                const $a: Activation = Activation::Ramp;
                $body
            }
            Activation::Tanh => {
                const $a: Activation = Activation::Tanh;
                $body
            }
            Activation::Plse => {
                const $a: Activation = Activation::Plse;
                $body
            }
            Activation::Leaky => {
                const $a: Activation = Activation::Leaky;
                $body
            }
            Activation::Elu => {
                const $a: Activation = Activation::Elu;
                $body
            }
            Activation::Loggy => {
                const $a: Activation = Activation::Loggy;
                $body
            }
            Activation::Stair => {
                const $a: Activation = Activation::Stair;
                $body
            }
            Activation::Hardtan => {
                const $a: Activation = Activation::Hardtan;
                $body
            }
            Activation::Lhtan => {
                const $a: Activation = Activation::Lhtan;
                $body
            }
            Activation::Selu => {
                const $a: Activation = Activation::Selu;
                $body
            }
        }
    };
}

/// Slices longer than this are processed in parallel.
const PAR_THRESHOLD: usize = 1 << 15;
/// Elements per rayon task.
const PAR_CHUNK: usize = 4096;

/// One of Darknet's 14 activation functions.
///
/// Each variant documents `f(x)` and the gradient as Darknet computes it, from the output `y`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Activation {
    /// `f(x) = 1 / (1 + e^{-x})`; gradient `y·(1 - y)`. Darknet's cfg default.
    Logistic,
    /// `f(x) = x` for `x > 0`, else `0`; gradient `1` if `y > 0`, else `0`.
    Relu,
    /// `f(x) = x` for `x > 0`, else `0.01·x`; gradient `1` if `y > 0`, else `0.01`.
    Relie,
    /// `f(x) = x`; gradient `1`.
    Linear,
    /// `f(x) = x·[x > 0] + 0.1·x` (slope 1.1 above 0, 0.1 below); gradient `[y > 0] + 0.1`.
    Ramp,
    /// `f(x) = tanh(x)`; gradient `1 - y²`.
    Tanh,
    /// Piecewise-linear sigmoid: `f(x) = 0.01·(x + 4)` for `x < -4`, `0.01·(x - 4) + 1` for
    /// `x > 4`, else `0.125·x + 0.5`; gradient `0.01` if `y < 0` or `y > 1`, else `0.125`.
    Plse,
    /// `f(x) = x` for `x > 0`, else `0.1·x`; gradient `1` if `y > 0`, else `0.1`.
    Leaky,
    /// `f(x) = x` for `x >= 0`, else `e^x - 1`; gradient `1` if `y >= 0`, else `y + 1`.
    Elu,
    /// `f(x) = 2 / (1 + e^{-x}) - 1` (which is `tanh(x/2)`); gradient `2·s·(1 - s)` with
    /// `s = (y + 1) / 2`.
    Loggy,
    /// With `n = ⌊x⌋`: `f(x) = ⌊x/2⌋` if `n` is even, else `(x - n) + ⌊x/2⌋` — flat at `k` on
    /// `[2k, 2k+1)`, then a unit-slope ramp from `k` to `k+1` on `[2k+1, 2k+2)`; gradient `0` if
    /// `y` is an integer, else `1`.
    Stair,
    /// `f(x) = clamp(x, -1, 1)`; gradient `1` if `-1 < y < 1`, else `0`.
    Hardtan,
    /// Leaky hard tanh: `f(x) = 0.001·x` for `x < 0`, `0.001·(x - 1) + 1` for `x > 1`, else `x`;
    /// gradient `1` if `0 < y < 1`, else `0.001`.
    Lhtan,
    /// `f(x) = λ·x` for `x >= 0`, else `λ·α·(e^x - 1)`, with `λ = 1.0507`, `α = 1.6732`;
    /// gradient `λ` if `y >= 0`, else `y + λ·α`.
    Selu,
}

impl Activation {
    /// All activations, in Darknet's `ACTIVATION` order (`ALL[i] as usize == i`).
    pub const ALL: [Activation; 14] = [
        Activation::Logistic,
        Activation::Relu,
        Activation::Relie,
        Activation::Linear,
        Activation::Ramp,
        Activation::Tanh,
        Activation::Plse,
        Activation::Leaky,
        Activation::Elu,
        Activation::Loggy,
        Activation::Stair,
        Activation::Hardtan,
        Activation::Lhtan,
        Activation::Selu,
    ];

    /// Applies the activation to one value.
    #[must_use]
    #[inline]
    pub fn activate<T: Element>(self, x: T) -> T {
        let zero = T::zero();
        let one = T::one();
        let two = one + one;
        // Comparisons are arranged so that NaN propagates instead of being mapped to a constant.
        match self {
            Activation::Logistic => one / (one + exp(-x)),
            Activation::Relu => {
                if x <= zero {
                    zero
                } else {
                    x
                }
            }
            Activation::Relie => {
                if x > zero {
                    x
                } else {
                    T::of(RELIE_SLOPE) * x
                }
            }
            Activation::Linear => x,
            Activation::Ramp => {
                let linear = T::of(RAMP_SLOPE) * x;
                if x > zero { x + linear } else { linear }
            }
            // Not Darknet's (e^{2x} - 1) / (e^{2x} + 1), which is inf/inf = NaN for large f32 x.
            Activation::Tanh => tanh(x),
            Activation::Plse => {
                let four = two + two;
                if x < -four {
                    T::of(PLSE_OUTER_SLOPE) * (x + four)
                } else if x > four {
                    T::of(PLSE_OUTER_SLOPE) * (x - four) + one
                } else {
                    T::of(PLSE_INNER_SLOPE) * x + T::of(0.5)
                }
            }
            Activation::Leaky => {
                if x > zero {
                    x
                } else {
                    T::of(LEAKY_SLOPE) * x
                }
            }
            Activation::Elu => {
                if x >= zero {
                    x
                } else {
                    expm1(x)
                }
            }
            Activation::Loggy => two / (one + exp(-x)) - one,
            Activation::Stair => {
                let n = x.floor();
                let half = (x / two).floor();
                // Testing for "odd" rather than "even" maps ±inf to ±inf (inf % 2 is NaN), not to NaN.
                if (n % two).abs() == one {
                    (x - n) + half
                } else {
                    half
                }
            }
            Activation::Hardtan => {
                if x < -one {
                    -one
                } else if x > one {
                    one
                } else {
                    x
                }
            }
            Activation::Lhtan => {
                if x < zero {
                    T::of(LHTAN_SLOPE) * x
                } else if x > one {
                    T::of(LHTAN_SLOPE) * (x - one) + one
                } else {
                    x
                }
            }
            Activation::Selu => {
                if x >= zero {
                    T::of(SELU_LAMBDA) * x
                } else {
                    T::of(SELU_LAMBDA_ALPHA) * expm1(x)
                }
            }
        }
    }

    /// The derivative `f'(x)`, computed — as in Darknet — from the activation's **output**
    /// `y = f(x)`, not from `x`.
    #[must_use]
    #[inline]
    pub fn gradient<T: Element>(self, y: T) -> T {
        let zero = T::zero();
        let one = T::one();
        let two = one + one;
        match self {
            Activation::Logistic => (one - y) * y,
            Activation::Relu => {
                if y > zero {
                    one
                } else {
                    zero
                }
            }
            Activation::Relie => {
                if y > zero {
                    one
                } else {
                    T::of(RELIE_SLOPE)
                }
            }
            Activation::Linear => one,
            Activation::Ramp => {
                if y > zero {
                    T::of(1.0 + RAMP_SLOPE)
                } else {
                    T::of(RAMP_SLOPE)
                }
            }
            Activation::Tanh => one - y * y,
            Activation::Plse => {
                if y < zero || y > one {
                    T::of(PLSE_OUTER_SLOPE)
                } else {
                    T::of(PLSE_INNER_SLOPE)
                }
            }
            Activation::Leaky => {
                if y > zero {
                    one
                } else {
                    T::of(LEAKY_SLOPE)
                }
            }
            Activation::Elu => {
                if y >= zero {
                    one
                } else {
                    y + one
                }
            }
            Activation::Loggy => {
                let s = (y + one) / two;
                two * (one - s) * s
            }
            Activation::Stair => {
                if y.floor() == y {
                    zero
                } else {
                    one
                }
            }
            Activation::Hardtan => {
                if y > -one && y < one {
                    one
                } else {
                    zero
                }
            }
            Activation::Lhtan => {
                if y > zero && y < one {
                    one
                } else {
                    T::of(LHTAN_SLOPE)
                }
            }
            Activation::Selu => {
                if y >= zero {
                    T::of(SELU_LAMBDA)
                } else {
                    y + T::of(SELU_LAMBDA_ALPHA)
                }
            }
        }
    }

    /// Darknet's cfg name (`activation=<name>`), e.g. `"leaky"`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Activation::Logistic => "logistic",
            Activation::Relu => "relu",
            Activation::Relie => "relie",
            Activation::Linear => "linear",
            Activation::Ramp => "ramp",
            Activation::Tanh => "tanh",
            Activation::Plse => "plse",
            Activation::Leaky => "leaky",
            Activation::Elu => "elu",
            Activation::Loggy => "loggy",
            Activation::Stair => "stair",
            Activation::Hardtan => "hardtan",
            Activation::Lhtan => "lhtan",
            Activation::Selu => "selu",
        }
    }

    /// Whether the function is differentiable and [`gradient`](Self::gradient) is its exact
    /// derivative, so it can be checked against finite differences: logistic, linear, tanh,
    /// loggy, ELU and SELU.
    ///
    /// SELU is included although its derivative jumps at `x = 0` (from `λ·α ≈ 1.758` to
    /// `λ = 1.0507`); ELU's derivative is continuous there. Finite-difference checks must keep
    /// inputs of both at least one step away from 0.
    #[must_use]
    pub fn is_smooth(self) -> bool {
        match self {
            Activation::Logistic
            | Activation::Linear
            | Activation::Tanh
            | Activation::Loggy
            | Activation::Elu
            | Activation::Selu => true,
            Activation::Relu
            | Activation::Relie
            | Activation::Ramp
            | Activation::Plse
            | Activation::Leaky
            | Activation::Stair
            | Activation::Hardtan
            | Activation::Lhtan => false,
        }
    }

    /// Applies the activation to every element in place (Darknet's `activate_array`).
    ///
    /// Slices longer than 32768 elements are processed in parallel.
    pub fn activate_slice<T: Element>(self, data: &mut [T]) {
        if self == Activation::Linear {
            return;
        }
        if data.len() > PAR_THRESHOLD {
            data.par_chunks_mut(PAR_CHUNK)
                .for_each(|c| self.affine_slice(c, T::one(), T::zero()));
        } else {
            self.affine_slice(data, T::one(), T::zero());
        }
    }

    /// `v = activate(v * mul + add)` for every element, serially. Each activation gets its own
    /// loop (the `match` is outside it), so the compiler can vectorize it.
    pub(crate) fn affine_slice<T: Element>(self, data: &mut [T], mul: T, add: T) {
        affine_kernel(self, data, mul, add);
    }

    /// Multiplies each `delta[i]` by `gradient(output[i])` (Darknet's `gradient_array`), where
    /// `output` holds the activation's outputs.
    ///
    /// Slices longer than 32768 elements are processed in parallel.
    ///
    /// # Errors
    ///
    /// [`Error::BufferLength`] for `delta` if `delta.len() != output.len()`; `delta` is then left
    /// untouched.
    pub fn gradient_slice<T: Element>(self, output: &[T], delta: &mut [T]) -> Result<()> {
        check_len("delta", output.len(), delta.len())?;
        if self == Activation::Linear {
            return Ok(());
        }
        let apply = |(out, del): (&[T], &mut [T])| gradient_kernel(self, out, del);
        if delta.len() > PAR_THRESHOLD {
            output
                .par_chunks(PAR_CHUNK)
                .zip(delta.par_chunks_mut(PAR_CHUNK))
                .for_each(apply);
        } else {
            apply((output, delta));
        }
        Ok(())
    }
}

/// What the forward pass applies to each output plane as soon as it is finished:
/// `activation(v * mul[f] + add[f])` for channel `f`. Bias and activation without batch norm
/// (`mul` is 1); with batch norm in inference, its whole affine map folded in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epilogue<'a, T> {
    /// Per-channel multipliers, `None` for all ones.
    pub(crate) mul: Option<&'a [T]>,
    /// Per-channel offsets.
    pub(crate) add: &'a [T],
    pub(crate) activation: Activation,
}

impl<T: Element> Epilogue<'_, T> {
    /// `(mul, add)` of channel `f`.
    pub(crate) fn coefficients(&self, f: usize) -> (T, T) {
        (self.mul.map_or(T::one(), |m| m[f]), self.add[f])
    }

    /// Applies channel `f`'s map to `plane`.
    pub(crate) fn apply(&self, f: usize, plane: &mut [T]) {
        let (mul, add) = self.coefficients(f);
        self.activation.affine_slice(plane, mul, add);
    }
}

/// `dst[i] = act(src[i] * mul + add)`, as [`Epilogue::apply`] computes it, for kernels that
/// store their sums through it (inlined into them, so that the sums stay in registers).
#[inline(always)]
pub(crate) fn affine_store<T: Element>(act: Activation, mul: T, add: T, src: &[T], dst: &mut [T]) {
    with_const!(act, A => for (d, &s) in dst.iter_mut().zip(src) {
        *d = A.activate(s * mul + add);
    })
}

multiversion! {
/// `v = act(v * mul + add)`, one loop per activation.
fn affine_kernel<T: Element>(act: Activation, data: &mut [T], mul: T, add: T) {
    with_const!(act, A => for v in data.iter_mut() {
        *v = A.activate(*v * mul + add);
    })
}
}

impl Activation {
    /// [`gradient_slice`](Self::gradient_slice) on one plane, serially, without the length
    /// check (the caller passes equal lengths). The reference for the fused kernel below.
    #[cfg(test)]
    pub(crate) fn gradient_plane<T: Element>(self, output: &[T], delta: &mut [T]) {
        if self != Activation::Linear {
            gradient_kernel(self, output, delta);
        }
    }

    /// `delta *= act'(output)` on one plane, then `(sum(delta), sum(delta * x))` in the
    /// accumulation order of `reduce::sum_and_dot`, so the same bits as `gradient_plane`
    /// followed by it: one pass over the three planes, where the two calls read `delta` twice.
    pub(crate) fn gradient_sum_and_dot<T: Element>(
        self,
        output: &[T],
        delta: &mut [T],
        x: &[T],
    ) -> (T, T) {
        gradient_sum_and_dot_kernel(self, output, delta, x)
    }

    /// Batch norm's training normalization of one plane: `norm = x * inv + shift` (kept for
    /// backward), then `x = act(norm * mul + add)`, in one pass; the same bits as the
    /// normalization followed by [`affine_slice`](Self::affine_slice).
    pub(crate) fn normalize_affine<T: Element>(
        self,
        x: &mut [T],
        norm: &mut [T],
        (inv, shift): (T, T),
        (mul, add): (T, T),
    ) {
        normalize_affine_kernel(self, x, norm, inv, shift, mul, add);
    }
}

multiversion! {
fn normalize_affine_kernel<T: Element>(
    act: Activation,
    x: &mut [T],
    norm: &mut [T],
    inv: T,
    shift: T,
    mul: T,
    add: T,
) {
    with_const!(act, A => for (v, n) in x.iter_mut().zip(norm.iter_mut()) {
        *n = *v * inv + shift;
        *v = A.activate(*n * mul + add);
    })
}
}

multiversion! {
fn gradient_sum_and_dot_kernel<T: Element>(
    act: Activation,
    output: &[T],
    delta: &mut [T],
    x: &[T],
) -> (T, T) {
    const LANES: usize = crate::reduce::LANES;
    let n = delta.len().min(output.len()).min(x.len());
    let (output, delta, x) = (&output[..n], &mut delta[..n], &x[..n]);
    let full = n - n % LANES;
    let mut s = [T::zero(); LANES];
    let mut d = [T::zero(); LANES];
    with_const!(act, A => {
        let chunks = delta[..full]
            .chunks_exact_mut(LANES)
            .zip(output[..full].chunks_exact(LANES))
            .zip(x[..full].chunks_exact(LANES));
        for ((cd, cy), cx) in chunks {
            for i in 0..LANES {
                cd[i] *= A.gradient(cy[i]);
                s[i] += cd[i];
                d[i] += cd[i] * cx[i];
            }
        }
        let mut s_tot = s.iter().copied().sum::<T>();
        let mut d_tot = d.iter().copied().sum::<T>();
        for ((v, &y), &xv) in delta[full..].iter_mut().zip(&output[full..]).zip(&x[full..]) {
            *v *= A.gradient(y);
            s_tot += *v;
            d_tot += *v * xv;
        }
        (s_tot, d_tot)
    })
}
}

multiversion! {
/// `delta *= act'(output)`, one loop per activation.
fn gradient_kernel<T: Element>(act: Activation, output: &[T], delta: &mut [T]) {
    with_const!(act, A => for (d, &y) in delta.iter_mut().zip(output) {
        *d *= A.gradient(y);
    })
}
}

impl Default for Activation {
    /// [`Activation::Logistic`], the value Darknet's cfg parser uses when a layer has no
    /// `activation=` key.
    fn default() -> Self {
        Activation::Logistic
    }
}

impl fmt::Display for Activation {
    /// Writes Darknet's cfg name (see [`Activation::name`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for Activation {
    type Err = Error;

    /// Parses Darknet's cfg name (exact, case-sensitive, as Darknet's `strcmp`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for `activation` if `s` is not one of the 14 names (Darknet
    /// itself would warn and fall back to ReLU).
    fn from_str(s: &str) -> Result<Self> {
        Activation::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| Error::InvalidParameter {
                param: "activation",
                reason: format!(
                    "unknown activation `{s}`; expected one of {}",
                    Activation::ALL.map(Activation::name).join(", ")
                ),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused backward pass of batch norm's sums gives the same bits as its two parts.
    #[test]
    fn fused_gradient_sums_equal_gradient_then_sums() {
        fn check<T: Element + std::fmt::Debug>(to_bits: fn(T) -> u64) {
            for act in Activation::ALL {
                for len in [0, 1, 7, 8, 9, 63, 64, 1003] {
                    let value = |i: usize, k: f64| T::of(((i as f64 + 0.3) * k).sin() * 3.0);
                    let y: Vec<T> = (0..len).map(|i| act.activate(value(i, 0.7))).collect();
                    let d: Vec<T> = (0..len).map(|i| value(i, 1.3)).collect();
                    let x: Vec<T> = (0..len).map(|i| value(i, 0.9)).collect();
                    let mut want = d.clone();
                    act.gradient_plane(&y, &mut want);
                    let want_sums = crate::reduce::sum_and_dot(&want, &x);
                    let mut got = d.clone();
                    let got_sums = act.gradient_sum_and_dot(&y, &mut got, &x);
                    let bits = |v: &[T]| v.iter().map(|&t| to_bits(t)).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "{act} len {len}: delta");
                    assert_eq!(
                        (to_bits(got_sums.0), to_bits(got_sums.1)),
                        (to_bits(want_sums.0), to_bits(want_sums.1)),
                        "{act} len {len}: sums"
                    );
                }
            }
        }
        check::<f32>(|v| u64::from(v.to_bits()));
        check::<f64>(f64::to_bits);
    }

    /// Finite-difference step: small enough for ~1e-9 truncation error, large enough that
    /// rounding (~1e-12) stays far below the 1e-6 tolerance.
    const H: f64 = 1e-4;

    /// Points in [-6, 6) on a 0.05 grid, offset by 0.0123 so every point is at least 0.0123 away
    /// from every kink (0, ±1, ±4, integers for stair).
    fn grid() -> impl Iterator<Item = f64> {
        (0..240).map(|i| -6.0 + 0.0123 + 0.05 * f64::from(i))
    }

    fn assert_gradient_matches_fd(act: Activation) {
        for x in grid() {
            let y: f64 = act.activate(x);
            let analytic = act.gradient(y);
            let fd = (act.activate(x + H) - act.activate(x - H)) / (2.0 * H);
            let tol = 1e-6 * fd.abs().max(analytic.abs()) + 1e-12;
            assert!(
                (analytic - fd).abs() <= tol,
                "{act}: x = {x}, y = {y}, gradient(y) = {analytic}, finite difference = {fd}"
            );
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn smooth_gradients_match_finite_differences() {
        let smooth: Vec<_> = Activation::ALL
            .into_iter()
            .filter(|a| a.is_smooth())
            .collect();
        assert_eq!(
            smooth,
            [
                Activation::Logistic,
                Activation::Linear,
                Activation::Tanh,
                Activation::Elu,
                Activation::Loggy,
                Activation::Selu,
            ]
        );
        for act in smooth {
            assert_gradient_matches_fd(act);
        }
    }

    #[test]
    fn piecewise_gradients_match_finite_differences_away_from_kinks() {
        for act in [
            Activation::Relu,
            Activation::Leaky,
            Activation::Relie,
            Activation::Ramp,
            Activation::Plse,
            Activation::Lhtan,
            Activation::Hardtan,
            Activation::Stair,
        ] {
            assert!(!act.is_smooth(), "{act}");
            assert_gradient_matches_fd(act);
        }
    }

    #[test]
    fn spot_values() {
        use Activation::*;
        let cases: &[(Activation, f64, f64)] = &[
            (Logistic, 0.0, 0.5),
            (Relu, -1.0, 0.0),
            (Relu, 2.0, 2.0),
            (Relie, -2.0, -0.02),
            (Linear, -3.5, -3.5),
            (Ramp, 2.0, 2.2),
            (Ramp, -2.0, -0.2),
            (Tanh, 0.0, 0.0),
            (Plse, 5.0, 1.01),
            (Plse, -5.0, -0.01),
            (Plse, 0.0, 0.5),
            (Plse, 2.0, 0.75),
            (Leaky, -2.0, -0.2),
            (Leaky, 3.0, 3.0),
            (Elu, -1.0, -0.632_120_558_828_557_7),
            (Elu, 2.0, 2.0),
            (Loggy, 0.0, 0.0),
            (Loggy, 3f64.ln(), 0.5),
            (Stair, 0.5, 0.0),
            (Stair, 1.0, 0.0),
            (Stair, 1.5, 0.5),
            (Stair, 2.0, 1.0),
            (Stair, 2.25, 1.0),
            (Stair, 3.75, 1.75),
            (Stair, -0.5, -0.5),
            (Stair, -1.5, -1.0),
            (Stair, -2.5, -1.5),
            (Hardtan, -3.0, -1.0),
            (Hardtan, 0.3, 0.3),
            (Hardtan, 7.0, 1.0),
            (Lhtan, 2.0, 1.001),
            (Lhtan, -1.0, -0.001),
            (Lhtan, 0.5, 0.5),
            (Selu, -1.0, -1.111_287_689_866_862_2),
            (Selu, 2.0, 2.1014),
        ];
        for &(act, x, expected) in cases {
            let got: f64 = act.activate(x);
            assert!(
                close(got, expected),
                "{act}({x}) = {got}, expected {expected}"
            );
        }
    }

    #[test]
    fn spot_gradients() {
        use Activation::*;
        let cases: &[(Activation, f64, f64)] = &[
            (Logistic, 0.5, 0.25),
            (Relu, 0.0, 0.0),
            (Relie, -0.02, 0.01),
            (Ramp, 2.2, 1.1),
            (Ramp, -0.2, 0.1),
            (Tanh, 0.5, 0.75),
            (Plse, 1.01, 0.01),
            (Plse, 0.5, 0.125),
            (Leaky, -0.2, 0.1),
            (Elu, -0.5, 0.5),
            (Elu, 0.0, 1.0),
            (Loggy, 0.0, 0.5),
            (Stair, 1.0, 0.0),
            (Stair, 1.5, 1.0),
            (Hardtan, 1.0, 0.0),
            (Hardtan, -0.5, 1.0),
            (Lhtan, 1.001, 0.001),
            (Lhtan, 0.5, 1.0),
            (Selu, 0.5, 1.0507),
            (Selu, -1.0, 0.758_031_24),
        ];
        for &(act, y, expected) in cases {
            let got: f64 = act.gradient(y);
            assert!(
                close(got, expected),
                "{act}'(y={y}) = {got}, expected {expected}"
            );
        }
    }

    #[test]
    fn f32_matches_f64() {
        for act in Activation::ALL {
            for x in grid() {
                let wide: f64 = act.activate(x);
                let narrow = act.activate(x as f32);
                assert!(
                    (f64::from(narrow) - wide).abs() <= 1e-5 * wide.abs().max(1.0),
                    "{act}({x}): f32 {narrow}, f64 {wide}"
                );
            }
        }
    }

    #[test]
    fn large_inputs_stay_finite_in_f32() {
        assert_eq!(Activation::Tanh.activate(100f32), 1.0);
        assert_eq!(Activation::Tanh.activate(-100f32), -1.0);
        // Darknet's formula, for contrast.
        let e = (2.0 * 100f32).exp();
        assert!(((e - 1.0) / (e + 1.0)).is_nan());
        for act in Activation::ALL {
            for x in [-1e30f32, -100.0, 100.0, 1e30] {
                let y = act.activate(x);
                assert!(y.is_finite(), "{act}({x}) = {y}");
                assert!(act.gradient(y).is_finite(), "{act}'({y})");
            }
        }
    }

    #[test]
    fn nan_propagates() {
        for act in Activation::ALL {
            assert!(act.activate(f64::NAN).is_nan(), "{act}");
        }
    }

    #[test]
    fn names_round_trip() {
        for (i, act) in Activation::ALL.into_iter().enumerate() {
            assert_eq!(act as usize, i);
            assert_eq!(act.name().parse::<Activation>(), Ok(act));
            assert_eq!(act.to_string(), act.name());
        }
        assert_eq!(Activation::default(), Activation::Logistic);
        assert_eq!(format!("{:>6}", Activation::Elu), "   elu");
    }

    #[test]
    fn unknown_name_is_an_error() {
        let err = "swish".parse::<Activation>().unwrap_err();
        match &err {
            Error::InvalidParameter { param, reason } => {
                assert_eq!(*param, "activation");
                assert!(reason.contains("`swish`"), "{reason}");
                assert!(reason.contains("leaky"), "{reason}");
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.to_string().contains("`activation`"), "{err}");
        assert!("Leaky".parse::<Activation>().is_err());
    }

    #[test]
    fn gradient_slice_rejects_length_mismatch() {
        let output = [0.1f64, 0.2, 0.3];
        let mut delta = [1.0f64, 1.0];
        assert_eq!(
            Activation::Leaky.gradient_slice(&output, &mut delta),
            Err(Error::BufferLength {
                buffer: "delta",
                expected: 3,
                found: 2,
            })
        );
        assert_eq!(delta, [1.0, 1.0]);
    }

    #[test]
    fn slices_match_element_wise_loops() {
        for len in [1000, 100_000] {
            let input: Vec<f64> = (0..len)
                .map(|i| (f64::from(i) * 0.37).sin() * 8.0)
                .collect();
            let delta: Vec<f64> = (0..len).map(|i| (f64::from(i) * 0.11).cos()).collect();
            for act in Activation::ALL {
                let mut output = input.clone();
                act.activate_slice(&mut output);
                let expected: Vec<f64> = input.iter().map(|&x| act.activate(x)).collect();
                assert_eq!(output, expected, "{act}, len {len}");

                let mut got = delta.clone();
                act.gradient_slice(&output, &mut got).unwrap();
                let expected: Vec<f64> = delta
                    .iter()
                    .zip(&output)
                    .map(|(&d, &y)| d * act.gradient(y))
                    .collect();
                assert_eq!(got, expected, "{act}, len {len}");
            }
        }
    }
}
