//! Gradient checks of [`DeconvLayer::backward`] in `f64`: the crate's main evidence that the
//! backward pass is the exact derivative of the forward pass.
//!
//! - `fd_gradients_match_backward` (proptest): over random geometry (batch, groups, rectangular
//!   kernel, stride — including stride > kernel —, padding, dilation, output padding), batch norm
//!   on/off and every smooth activation without a kink (linear, logistic, tanh, loggy), every
//!   entry of the input, weight, bias and batch-norm scale gradients is compared with a central
//!   finite difference of the scalar loss `L = sum_i r_i * y_i`.
//! - `fd_gradients_bn_logistic_stride_over_kernel_dilated`: the same check on one fixed geometry
//!   (batch norm, logistic, stride > kernel, dilation 2, groups 2), so that a regression shows up
//!   under a clear name.
//! - `linear_part_is_reference_deconv_and_backward_is_its_adjoint` (proptest): with a linear
//!   activation and no batch norm, the forward pass is `reference::deconv2d + bias`, the input
//!   gradient of backward is `reference::conv2d_adjoint(delta)`, and the adjoint identities
//!   `<r, deconv(x)> = <conv(r), x>` hold, for the reference and for the layer.
//!
//! Darknet's sign convention: `delta = -dL/dy`, and backward produces `-dL/dinput`,
//! `weight_updates = -dL/dW`, `bias_updates = -dL/db`, `scale_updates = -dL/dscales`.
//!
//! The largest finite-difference errors seen are printed as one greppable line per test:
//! `cargo test --test gradients -- --nocapture 2>&1 | grep FD-SUMMARY`
//! (and one line per case with `DECONV_REPORT=1`).

use std::sync::atomic::{AtomicU64, Ordering};

use deconv::{Activation, Algorithm, DeconvConfig, DeconvLayer, Geometry, Mode, reference};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

type Layer = DeconvLayer<f64>;

/// Central-difference step. With `h = 1e-5` in `f64`:
/// - truncation error `h^2 / 6 * |L'''|` is about `2e-11 * |L'''|`; `L'''` is 0 for the linear
///   part and small for the bounded activations and batch norm whose channels have a standard
///   deviation of at least [`MIN_BN_SIGMA`];
/// - rounding error is a small multiple of `u * sum_i |r_i * y_i| / (2h)` with `u = 1.1e-16`:
///   the largest geometry has ~8000 outputs (|r| < 1, |y| of order 1), so `sum |r y| <~ 1e4`,
///   which gives ~1e-7 (1.1e-7 is the largest error seen in 3000 cases).
const STEP: f64 = 1e-5;
/// Tolerance `ATOL + RTOL * max(|analytic|, |fd|)`. Both terms are ~10x above the error budget
/// of [`STEP`] (and the printed FD-SUMMARY shows the margin actually observed), while a wrong
/// gradient (a missing term, a wrong index, a factor N vs N-1 in batch norm) is off by a large
/// fraction of the gradient itself, far above 1e-6 relative.
const ATOL: f64 = 1e-6;
/// See [`ATOL`].
const RTOL: f64 = 1e-6;
/// Batch-norm cases whose channel standard deviation is below this are rejected: the finite
/// difference's truncation error grows like `(h / sigma)^2` and its rounding error like
/// `1 / sigma`, so a near-constant channel measures the finite difference, not the layer.
/// Random inputs and weights make this rare (it happens mostly with 2 values per channel).
const MIN_BN_SIGMA: f64 = 0.05;
/// Relative errors are only tracked for entries at least this large (an exactly-zero gradient,
/// e.g. of a kernel tap that only ever lands in the padding, has no meaningful relative error).
const REL_FLOOR: f64 = 1e-3;

// ---------------------------------------------------------------------------------------------
// Deterministic random values from the proptest-chosen seed (SplitMix64), so that a failing case
// is reproduced (and shrunk) from its seed alone.

struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[lo, hi)`.
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * unit
    }
    fn fill(&mut self, out: &mut [f64], lo: f64, hi: f64) {
        out.iter_mut().for_each(|v| *v = self.uniform(lo, hi));
    }
    fn vec(&mut self, len: usize, lo: f64, hi: f64) -> Vec<f64> {
        let mut v = vec![0.0; len];
        self.fill(&mut v, lo, hi);
        v
    }
}

// ---------------------------------------------------------------------------------------------
// Random geometry.

/// One spatial axis of the geometry.
#[derive(Debug, Clone, Copy)]
struct Axis {
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    output_padding: usize,
}

impl Axis {
    /// Output size before cropping the padding.
    fn full(&self) -> usize {
        (self.input - 1) * self.stride + self.dilation * (self.kernel - 1) + self.output_padding + 1
    }
    /// `(in - 1) * stride - 2 * pad + dilation * (kernel - 1) + output_padding + 1`.
    fn out(&self) -> usize {
        self.full() - 2 * self.pad
    }
}

/// in 1..=5, kernel 1..=4, stride 1..=3 (so stride > kernel happens), dilation 1..=2,
/// output_padding 0..max(stride, dilation), pad 0..kernel, keeping only non-empty outputs.
fn axis() -> impl Strategy<Value = Axis> {
    (1usize..=5, 1usize..=4, 1usize..=3, 1usize..=2)
        .prop_flat_map(|(input, kernel, stride, dilation)| {
            (0..stride.max(dilation), 0..kernel).prop_map(move |(output_padding, pad)| Axis {
                input,
                kernel,
                stride,
                pad,
                dilation,
                output_padding,
            })
        })
        .prop_filter("padding must leave a non-empty output", |a| {
            2 * a.pad < a.full()
        })
}

#[derive(Debug, Clone)]
struct Case {
    batch: usize,
    groups: usize,
    /// Input channels per group.
    group_in: usize,
    /// Filters per group.
    group_out: usize,
    /// `[height, width]`.
    axes: [Axis; 2],
    activation: Activation,
    batch_normalize: bool,
    /// The forward algorithm (phases fall back to columns where the dilation is not 1).
    algorithm: Algorithm,
    seed: u64,
}

impl Case {
    fn config(&self) -> DeconvConfig {
        let [h, w] = self.axes;
        DeconvConfig::new(
            self.batch,
            self.groups * self.group_in,
            h.input,
            w.input,
            self.groups * self.group_out,
            h.kernel,
        )
        .kernel_hw(h.kernel, w.kernel)
        .stride_hw(h.stride, w.stride)
        .pad_hw(h.pad, w.pad)
        .dilation_hw(h.dilation, w.dilation)
        .output_padding_hw(h.output_padding, w.output_padding)
        .groups(self.groups)
        .activation(self.activation)
        .batch_normalize(self.batch_normalize)
        .algorithm(match self.algorithm {
            Algorithm::Phases if self.axes.iter().any(|a| a.dilation != 1) => Algorithm::Columns,
            other => other,
        })
        .seed(self.seed)
    }

    /// The validated geometry; every generated case is valid, so an error is a failure, and so
    /// is an output size that disagrees with the documented formula.
    fn geometry(&self) -> Result<Geometry, String> {
        let g = self
            .config()
            .geometry()
            .map_err(|e| format!("valid configuration rejected: {e}"))?;
        let expected = [self.axes[0].out(), self.axes[1].out()];
        if [g.out_h(), g.out_w()] != expected {
            return Err(format!(
                "output size {:?}, expected {expected:?}",
                [g.out_h(), g.out_w()]
            ));
        }
        Ok(g)
    }
}

/// Cases with the given activations and batch-norm choices.
fn cases(
    activations: &'static [Activation],
    batch_norm: &'static [bool],
) -> impl Strategy<Value = Case> {
    (
        1usize..=3,
        1usize..=2,
        1usize..=3,
        1usize..=3,
        axis(),
        axis(),
        proptest::sample::select(activations),
        proptest::sample::select(batch_norm),
        proptest::sample::select(&ALGORITHMS[..]),
        any::<u64>(),
    )
        .prop_map(
            |(
                batch,
                groups,
                group_in,
                group_out,
                h,
                w,
                activation,
                batch_normalize,
                algorithm,
                seed,
            )| {
                Case {
                    batch,
                    groups,
                    group_in,
                    group_out,
                    axes: [h, w],
                    activation,
                    batch_normalize,
                    algorithm,
                    seed,
                }
            },
        )
        .prop_filter(
            "batch norm training needs batch * out_h * out_w >= 2",
            |c| !c.batch_normalize || c.batch * c.axes[0].out() * c.axes[1].out() >= 2,
        )
}

/// Every forward algorithm: each case draws one.
const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::Auto,
    Algorithm::Columns,
    Algorithm::Phases,
    Algorithm::Direct,
];

/// Smooth activations whose derivative has no kink (ELU and SELU have one at 0, which a
/// central difference straddling 0 would measure rather than the layer).
const SMOOTH: &[Activation] = &[
    Activation::Linear,
    Activation::Logistic,
    Activation::Tanh,
    Activation::Loggy,
];

// ---------------------------------------------------------------------------------------------
// Error statistics, kept across all cases of a test (f64 bits in AtomicU64: for non-negative
// finite f64, the order of the bit patterns is the numeric order, so `fetch_max` works).

struct FdStats {
    max_abs: AtomicU64,
    max_rel: AtomicU64,
    max_ratio: AtomicU64,
    entries: AtomicU64,
    cases: AtomicU64,
    skipped: AtomicU64,
}

impl FdStats {
    const fn new() -> Self {
        FdStats {
            max_abs: AtomicU64::new(0),
            max_rel: AtomicU64::new(0),
            max_ratio: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            cases: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    fn record(&self, e: &CaseErrors) {
        self.max_abs
            .fetch_max(e.max_abs.to_bits(), Ordering::Relaxed);
        self.max_rel
            .fetch_max(e.max_rel.to_bits(), Ordering::Relaxed);
        self.max_ratio
            .fetch_max(e.max_ratio.to_bits(), Ordering::Relaxed);
        self.entries.fetch_add(e.entries, Ordering::Relaxed);
        self.cases.fetch_add(1, Ordering::Relaxed);
    }

    fn print(&self, test: &str) {
        let f = |a: &AtomicU64| f64::from_bits(a.load(Ordering::Relaxed));
        eprintln!(
            "FD-SUMMARY {test}: checked_cases={} skipped_low_bn_sigma={} entries={} max_abs_err={:.3e} \
             max_rel_err={:.3e} (entries >= {REL_FLOOR:e}) max_err/tol={:.3e} \
             (step {STEP:e}, tol {ATOL:e} + {RTOL:e}*|g|)",
            self.cases.load(Ordering::Relaxed),
            self.skipped.load(Ordering::Relaxed),
            self.entries.load(Ordering::Relaxed),
            f(&self.max_abs),
            f(&self.max_rel),
            f(&self.max_ratio),
        );
    }
}

static FD_PROPTEST_STATS: FdStats = FdStats::new();
static FD_FIXED_STATS: FdStats = FdStats::new();

/// Errors of one case.
#[derive(Debug, Default)]
struct CaseErrors {
    max_abs: f64,
    max_rel: f64,
    max_ratio: f64,
    entries: u64,
    /// Descriptions of the entries beyond tolerance (the first few).
    failures: Vec<String>,
    failure_count: usize,
}

impl CaseErrors {
    fn compare(&mut self, what: &str, index: usize, analytic: f64, fd: f64) {
        let abs = (analytic - fd).abs();
        let mag = analytic.abs().max(fd.abs());
        let tol = ATOL + RTOL * mag;
        self.entries += 1;
        self.max_abs = self.max_abs.max(abs);
        if mag >= REL_FLOOR {
            self.max_rel = self.max_rel.max(abs / mag);
        }
        self.max_ratio = self.max_ratio.max(abs / tol);
        if abs.is_nan() || abs > tol {
            self.failure_count += 1;
            if self.failures.len() < 8 {
                self.failures.push(format!(
                    "{what}[{index}]: backward {analytic:.12e}, finite difference {fd:.12e}, \
                     |diff| {abs:.3e} > tol {tol:.3e}"
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The finite-difference check.

/// `L = sum_i r_i * y_i` with `y` the training forward output.
fn loss(layer: &mut Layer, input: &[f64], r: &[f64]) -> Result<f64, String> {
    let y = layer
        .forward(input, Mode::Train)
        .map_err(|e| format!("forward: {e}"))?;
    Ok(y.iter().zip(r).map(|(y, r)| y * r).sum())
}

/// Central difference of the loss in one coordinate, `set(v)` writing the coordinate's value.
/// Divides by the difference of the two values actually set (`x + h` and `x - h` are rounded).
fn central_difference(
    x0: f64,
    mut eval: impl FnMut(f64) -> Result<f64, String>,
) -> Result<f64, String> {
    let (plus, minus) = (x0 + STEP, x0 - STEP);
    let lp = eval(plus)?;
    let lm = eval(minus)?;
    Ok((lp - lm) / (plus - minus))
}

enum Outcome {
    Checked(CaseErrors),
    /// A batch-norm channel too close to constant for finite differences.
    LowBnSigma(f64),
}

/// Builds the layer with random non-trivial parameters, runs backward once and compares every
/// gradient entry with finite differences.
fn fd_check(case: &Case) -> Result<Outcome, String> {
    let g = case.geometry()?;
    let config = case.config();
    let mut layer = Layer::new(&config).map_err(|e| format!("new: {e}"))?;
    let mut rng = SplitMix(case.seed);
    let input = rng.vec(g.batch() * g.inputs(), -1.0, 1.0);
    let r = rng.vec(g.batch() * g.outputs(), -1.0, 1.0);
    rng.fill(layer.weights_mut(), -1.0, 1.0);
    rng.fill(layer.biases_mut(), -1.0, 1.0);
    if let Some(scales) = layer.scales_mut() {
        for s in scales {
            let sign = if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
            *s = sign * rng.uniform(0.5, 1.5);
        }
    }

    // Analytic gradients: delta = -dL/dy = -r.
    layer
        .forward(&input, Mode::Train)
        .map_err(|e| format!("forward: {e}"))?;
    if let Some(var) = layer.batch_variance() {
        let min_sigma = var.iter().map(|v| v.sqrt()).fold(f64::INFINITY, f64::min);
        if min_sigma < MIN_BN_SIGMA {
            return Ok(Outcome::LowBnSigma(min_sigma));
        }
    }
    for (d, r) in layer.delta_mut().iter_mut().zip(&r) {
        *d = -r;
    }
    layer.weight_updates_mut().fill(0.0);
    layer.bias_updates_mut().fill(0.0);
    if let Some(s) = layer.scale_updates_mut() {
        s.fill(0.0);
    }
    let mut dx = vec![0.0; input.len()];
    layer
        .backward(&input, Some(&mut dx))
        .map_err(|e| format!("backward: {e}"))?;
    // dL/dθ = -(descent direction).
    let neg = |v: &[f64]| v.iter().map(|x| -x).collect::<Vec<_>>();
    let grad_input = neg(&dx);
    let grad_weights = neg(layer.weight_updates());
    let grad_biases = neg(layer.bias_updates());
    let grad_scales = layer.scale_updates().map(neg);

    let mut errors = CaseErrors::default();

    let mut x = input.clone();
    for (i, &ga) in grad_input.iter().enumerate() {
        let fd = central_difference(input[i], |v| {
            x[i] = v;
            loss(&mut layer, &x, &r)
        })?;
        x[i] = input[i];
        errors.compare("input", i, ga, fd);
    }

    // The parameters, perturbed in place through the `_mut` accessors and restored exactly.
    type Access = fn(&mut Layer) -> &mut [f64];
    let mut params: Vec<(&str, Access, &[f64])> = vec![
        ("weights", |l| l.weights_mut(), &grad_weights),
        ("biases", |l| l.biases_mut(), &grad_biases),
    ];
    if let Some(gs) = &grad_scales {
        params.push(("scales", |l| l.scales_mut().expect("batch norm"), gs));
    }
    for (what, access, grad) in params {
        if access(&mut layer).len() != grad.len() {
            return Err(format!(
                "{what}: gradient length differs from parameter length"
            ));
        }
        for (i, &ga) in grad.iter().enumerate() {
            let p0 = access(&mut layer)[i];
            let fd = central_difference(p0, |v| {
                access(&mut layer)[i] = v;
                loss(&mut layer, &input, &r)
            })?;
            access(&mut layer)[i] = p0;
            errors.compare(what, i, ga, fd);
        }
    }
    Ok(Outcome::Checked(errors))
}

/// Runs [`fd_check`], records the statistics and turns failures into a message.
fn run_fd_case(case: &Case, stats: &FdStats) -> Result<bool, String> {
    let outcome = fd_check(case)?;
    let errors = match outcome {
        Outcome::Checked(e) => e,
        Outcome::LowBnSigma(sigma) => {
            stats.skipped.fetch_add(1, Ordering::Relaxed);
            if std::env::var_os("DECONV_REPORT").is_some() {
                eprintln!("FD-CASE skipped: batch-norm sigma {sigma:.3e} < {MIN_BN_SIGMA}");
            }
            return Ok(false);
        }
    };
    if std::env::var_os("DECONV_REPORT").is_some() {
        eprintln!(
            "FD-CASE entries={} max_abs_err={:.3e} max_rel_err={:.3e} max_err/tol={:.3e} {:?}",
            errors.entries, errors.max_abs, errors.max_rel, errors.max_ratio, case
        );
    }
    stats.record(&errors);
    if errors.failure_count > 0 {
        return Err(format!(
            "{} of {} gradient entries disagree with finite differences for {:?}:\n  {}",
            errors.failure_count,
            errors.entries,
            case,
            errors.failures.join("\n  ")
        ));
    }
    Ok(true)
}

#[test]
fn fd_gradients_match_backward() {
    proptest!(ProptestConfig::default(), |(case in cases(SMOOTH, &[false, true]))| {
        let checked = run_fd_case(&case, &FD_PROPTEST_STATS).map_err(TestCaseError::fail)?;
        prop_assume!(checked, "batch-norm channel too close to constant");
    });
    FD_PROPTEST_STATS.print("fd_gradients_match_backward");
}

#[test]
fn fd_gradients_bn_logistic_stride_over_kernel_dilated() {
    let axis = |input, kernel, stride, pad, output_padding| Axis {
        input,
        kernel,
        stride,
        pad,
        dilation: 2,
        output_padding,
    };
    let case = Case {
        batch: 2,
        groups: 2,
        group_in: 2,
        group_out: 2,
        // Height: kernel 2, stride 3, pad 1, output_padding 1 -> out (3-1)*3 - 2 + 2 + 1 + 1 = 8.
        // Width: kernel 3, stride 4, pad 0 -> out (4-1)*4 + 4 + 1 = 17.
        axes: [axis(3, 2, 3, 1, 1), axis(4, 3, 4, 0, 0)],
        activation: Activation::Logistic,
        batch_normalize: true,
        algorithm: Algorithm::Auto,
        seed: 0x5EED_DECA,
    };
    let g = case.geometry().unwrap();
    assert_eq!((g.out_h(), g.out_w()), (8, 17));
    assert!(g.stride()[0] > g.kernel()[0] && g.stride()[1] > g.kernel()[1]);
    for algorithm in [Algorithm::Auto, Algorithm::Direct] {
        let case = Case {
            algorithm,
            ..case.clone()
        };
        match run_fd_case(&case, &FD_FIXED_STATS) {
            Ok(true) => {}
            Ok(false) => panic!("the fixed case must have well-spread batch-norm channels"),
            Err(e) => panic!("{e}"),
        }
    }
    FD_FIXED_STATS.print("fd_gradients_bn_logistic_stride_over_kernel_dilated");
}

// ---------------------------------------------------------------------------------------------
// The linear part: reference agreement and adjoint identities.

/// Unit roundoff of f64.
const U: f64 = f64::EPSILON / 2.0;

/// Worst-case relative error bound `gamma_n = n u / (1 - n u)` of a sum of `n` products.
fn gamma(n: usize) -> f64 {
    let nu = n as f64 * U;
    nu / (1.0 - nu)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

fn abs(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x.abs()).collect()
}

/// `|a_i - b_i| <= tol_i` for every entry; the message names the first violation.
fn close_all(what: &str, a: &[f64], b: &[f64], tol: &[f64]) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("{what}: lengths {} and {}", a.len(), b.len()));
    }
    for (i, ((a, b), t)) in a.iter().zip(b).zip(tol).enumerate() {
        let diff = (a - b).abs();
        if diff.is_nan() || diff > *t {
            return Err(format!(
                "{what}[{i}]: {a:.17e} vs {b:.17e}, |diff| {diff:.3e} > tol {t:.3e}"
            ));
        }
    }
    Ok(())
}

fn close(what: &str, a: f64, b: f64, tol: f64) -> Result<(), String> {
    close_all(what, &[a], &[b], &[tol])
}

/// Checks, with rounding-error bounds derived from the absolute values (so that the tolerance is
/// a proof-grade bound on the rounding of any summation order, not a guess):
/// 1. layer forward == `reference::deconv2d + bias` (training and inference mode),
/// 2. `<y, deconv2d(x)> == <conv2d_adjoint(y), x>` for the reference,
/// 3. with biases 0, backward's input gradient for `delta = r` == `conv2d_adjoint(r)`, and
///    `<r, forward(x)> == <dx, x>`; its weight gradient satisfies `<dW, W> == <r, forward(x)>`
///    (the output is linear in W) and its bias gradient is the per-filter sum of `r`;
/// 4. backward **adds** the three gradients to what the buffers held.
fn adjoint_check(case: &Case) -> Result<(), String> {
    let g = case.geometry()?;
    let config = case.config();
    let mut layer = Layer::new(&config).map_err(|e| format!("new: {e}"))?;
    let mut rng = SplitMix(case.seed);
    let x = rng.vec(g.batch() * g.inputs(), -1.0, 1.0);
    let r = rng.vec(g.batch() * g.outputs(), -1.0, 1.0);
    rng.fill(layer.weights_mut(), -1.0, 1.0);
    rng.fill(layer.biases_mut(), -1.0, 1.0);
    let w = layer.weights().to_vec();
    let biases = layer.biases().to_vec();
    let (ohw, n) = (g.out_area(), g.filters());
    let bias_of = |o: usize| biases[o / ohw % n];

    // Each output / input-gradient entry sums at most `terms` products.
    let terms = g.group_in().max(g.group_out()) * g.taps() + 1;
    let wabs = abs(&w);
    let y_ref = reference::deconv2d(&g, &x, &w).map_err(|e| e.to_string())?;
    let y_scale = reference::deconv2d(&g, &abs(&x), &wabs).map_err(|e| e.to_string())?;
    let r_adj = reference::conv2d_adjoint(&g, &r, &w).map_err(|e| e.to_string())?;
    let r_adj_scale = reference::conv2d_adjoint(&g, &abs(&r), &wabs).map_err(|e| e.to_string())?;

    // 1. Forward == reference + bias. Both sides round: 2 * gamma(terms) * (|x|*|W| + |b|).
    let expected: Vec<f64> = y_ref
        .iter()
        .enumerate()
        .map(|(o, y)| y + bias_of(o))
        .collect();
    let tol: Vec<f64> = y_scale
        .iter()
        .enumerate()
        .map(|(o, s)| 2.0 * gamma(terms) * (s + bias_of(o).abs()))
        .collect();
    for mode in [Mode::Train, Mode::Inference] {
        let y = layer
            .forward(&x, mode)
            .map_err(|e| format!("forward: {e}"))?;
        close_all(
            &format!("forward ({mode:?}) vs reference + bias"),
            y,
            &expected,
            &tol,
        )?;
    }

    // 2. Reference adjoint identity: <r, deconv2d(x)> == <conv2d_adjoint(r), x>. Both sides are
    // the same sum of products r_o W_w x_i, in different orders: |error| <= 2 gamma(len + terms)
    // * sum |r| |W| |x|.
    let scale = dot(&abs(&r), &y_scale);
    let long = g.batch() * g.outputs().max(g.inputs()) + terms;
    close(
        "<r, deconv2d(x)> vs <conv2d_adjoint(r), x>",
        dot(&r, &y_ref),
        dot(&r_adj, &x),
        2.0 * gamma(long) * scale,
    )?;

    // 3. The layer's backward with biases 0 and delta = r, on zeroed gradient buffers.
    layer.biases_mut().fill(0.0);
    let y = layer
        .forward(&x, Mode::Train)
        .map_err(|e| format!("forward: {e}"))?
        .to_vec();
    layer.delta_mut().copy_from_slice(&r);
    layer.weight_updates_mut().fill(0.0);
    layer.bias_updates_mut().fill(0.0);
    let mut dx = vec![0.0; x.len()];
    layer
        .backward(&x, Some(&mut dx))
        .map_err(|e| format!("backward: {e}"))?;
    let dw = layer.weight_updates().to_vec();
    let db = layer.bias_updates().to_vec();

    // dx == conv2d_adjoint(r), entry by entry.
    let tol: Vec<f64> = r_adj_scale.iter().map(|s| 2.0 * gamma(terms) * s).collect();
    close_all(
        "backward input gradient vs conv2d_adjoint",
        &dx,
        &r_adj,
        &tol,
    )?;

    // <r, y> == <dx, x> == <dW, W> (y is linear in W): every side is the sum of the products
    // r_o W_w x_i, bracketed differently, with at most `long` (+ weight_count) additions in a
    // chain and two multiplications per product.
    let lhs = dot(&r, &y);
    close(
        "<r, forward(x)> vs <backward dx, x>",
        lhs,
        dot(&dx, &x),
        2.0 * gamma(long + 2) * scale,
    )?;
    close(
        "<r, forward(x)> vs <backward dW, W>",
        lhs,
        dot(&dw, &w),
        2.0 * gamma(long + g.weight_count() + 2) * scale,
    )?;

    // Bias gradient: the per-filter sum of r.
    let mut sum_r = vec![0.0; n];
    let mut sum_abs = vec![0.0; n];
    for (o, v) in r.iter().enumerate() {
        sum_r[o / ohw % n] += v;
        sum_abs[o / ohw % n] += v.abs();
    }
    let tol: Vec<f64> = sum_abs
        .iter()
        .map(|s| 2.0 * gamma(g.batch() * ohw) * s)
        .collect();
    close_all(
        "bias gradient vs per-filter sum of delta",
        &db,
        &sum_r,
        &tol,
    )?;

    // 4. The gradient buffers accumulate: the same backward on buffers that already hold v0
    // leaves v0 + (the gradient above). An entry is v0 plus a sum of `count` products whose
    // absolute values add up to at most `mag` (|x|, |r| <= 1), so each of the two computations
    // rounds by at most gamma(count + 2) * (|v0| + mag).
    layer
        .forward(&x, Mode::Train)
        .map_err(|e| format!("forward: {e}"))?;
    layer.delta_mut().copy_from_slice(&r);
    let dx0 = rng.vec(x.len(), -1.0, 1.0);
    let dw0 = rng.vec(g.weight_count(), -1.0, 1.0);
    let db0 = rng.vec(n, -1.0, 1.0);
    layer.weight_updates_mut().copy_from_slice(&dw0);
    layer.bias_updates_mut().copy_from_slice(&db0);
    let mut dx_acc = dx0.clone();
    layer
        .backward(&x, Some(&mut dx_acc))
        .map_err(|e| format!("backward: {e}"))?;
    let wmax = wabs.iter().copied().fold(0.0, f64::max);
    let dx_count = g.group_out() * g.taps();
    let dw_count = g.batch() * g.in_area();
    let db_count = g.batch() * ohw;
    for (what, got, v0, first, count, mag) in [
        (
            "input gradient",
            &dx_acc[..],
            &dx0,
            &dx,
            dx_count,
            dx_count as f64 * wmax,
        ),
        (
            "weight gradient",
            layer.weight_updates(),
            &dw0,
            &dw,
            dw_count,
            dw_count as f64,
        ),
        (
            "bias gradient",
            layer.bias_updates(),
            &db0,
            &db,
            db_count,
            db_count as f64,
        ),
    ] {
        let expected: Vec<f64> = v0.iter().zip(first).map(|(a, b)| a + b).collect();
        let tol: Vec<f64> = v0
            .iter()
            .map(|a| 2.0 * gamma(count + 2) * (a.abs() + mag))
            .collect();
        close_all(
            &format!("accumulated {what} vs initial + gradient"),
            got,
            &expected,
            &tol,
        )?;
    }
    Ok(())
}

#[test]
fn linear_part_is_reference_deconv_and_backward_is_its_adjoint() {
    proptest!(ProptestConfig::default(), |(case in cases(&[Activation::Linear], &[false]))| {
        adjoint_check(&case).map_err(|e| TestCaseError::fail(format!("{e}\n  case {case:?}")))?;
    });
}
