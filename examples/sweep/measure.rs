//! Timing one sweep shape: the layer per algorithm and pass, and its GEMM ceiling.

use crate::sweep::{Dtype, SweepShape};
use deconv::backend::{MatMut, MatRef, par_gemm};
use deconv::{Algorithm, AnyBackend, DeconvLayer, Element, Gemm, Geometry, Mode};
use rayon::prelude::*;
use serde_json::{Value, json};
use std::time::Instant;

/// How long to time each row: at most `reps` timed calls after one warm-up call, fewer (but at
/// least 3) once `budget` seconds have gone by. The median is reported.
#[derive(Clone, Copy)]
pub struct Budget {
    pub reps: usize,
    pub seconds: f64,
}

impl Budget {
    /// Median seconds of the timed calls of `f`, which returns the seconds it timed.
    pub fn median(&self, mut f: impl FnMut() -> f64) -> f64 {
        f();
        let start = Instant::now();
        let mut t = Vec::with_capacity(self.reps);
        while t.len() < self.reps.max(1)
            && (t.len() < 3 || start.elapsed().as_secs_f64() < self.seconds)
        {
            t.push(f());
        }
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    }

    /// [`median`](Self::median) of calls of `f` timed whole.
    pub fn time(&self, mut f: impl FnMut()) -> f64 {
        self.median(|| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
    }
}

/// Deterministic values in [-0.5, 0.5).
pub fn random<T: Element>(n: usize, seed: u64) -> Vec<T> {
    (0..n)
        .map(|i| {
            let x = (i as u64)
                .wrapping_mul(6364136223846793005)
                .wrapping_add(seed.wrapping_mul(1442695040888963407));
            T::of(((x >> 40) as f64 / (1u64 << 24) as f64) - 0.5)
        })
        .collect()
}

pub const PASSES: [&str; 3] = ["forward_inference", "forward_train", "forward_backward"];

/// Milliseconds of the three passes with `algorithm`, or `None` where the layer rejects it
/// (phases with dilation).
fn passes<T: Element>(
    shape: &SweepShape,
    algorithm: Algorithm,
    backend: AnyBackend,
    budget: Budget,
) -> Option<[f64; 3]>
where
    AnyBackend: Gemm<T>,
{
    let config = shape.config().algorithm(algorithm);
    let mut layer = DeconvLayer::<T, AnyBackend>::with_backend(&config, backend).ok()?;
    shape.prepare(&mut layer);
    let g = *layer.geometry();
    let input = random::<T>(g.batch() * g.inputs(), 3);
    let delta = random::<T>(g.batch() * g.outputs(), 4);
    let mut dx = vec![T::zero(); input.len()];
    let inference = budget.time(|| {
        layer.forward(&input, Mode::Inference).expect("forward");
    });
    let train = budget.time(|| {
        layer.forward(&input, Mode::Train).expect("forward");
    });
    // Only the layer's two calls are timed: writing the output gradient into `delta` is the
    // caller's work (in a network, the next layer's backward writes straight into it).
    let backward = budget.median(|| {
        let start = Instant::now();
        layer.forward(&input, Mode::Train).expect("forward");
        let forward = start.elapsed().as_secs_f64();
        layer.delta_mut().copy_from_slice(&delta);
        let start = Instant::now();
        layer.backward(&input, Some(&mut dx)).expect("backward");
        forward + start.elapsed().as_secs_f64()
    });
    Some([inference * 1e3, train * 1e3, backward * 1e3])
}

/// Milliseconds of the forward's GEMMs alone, `batch * groups` products
/// `cols (rows x hw) = W^T (rows x c/g) * x (c/g x hw)`: the faster of one GEMM after the
/// other split over the threads by rows, and the images spread over the threads (one
/// single-threaded GEMM each), the two ways the layer runs them.
pub fn gemm_ceiling<T: Element>(g: &Geometry, backend: &AnyBackend, budget: Budget) -> f64
where
    AnyBackend: Gemm<T>,
{
    let (m, n, k) = (g.col_rows(), g.in_area(), g.group_in());
    let count = g.batch() * g.groups();
    let a = random::<T>(k * m, 1);
    let b = random::<T>(count * k * n, 2);
    let at = || MatRef::new(&a, k, m, m).expect("weights").t();
    let mut c = vec![T::zero(); m * n];
    let split_rows = budget.time(|| {
        for x in b.chunks_exact(k * n) {
            let x = MatRef::new(x, k, n, n).expect("input");
            let out = MatMut::new(&mut c, m, n, n).expect("cols");
            par_gemm(backend, T::one(), at(), x, T::zero(), out).expect("gemm");
        }
    });
    let tasks = count.min(rayon::current_num_threads()).max(1);
    let per_task = count.div_ceil(tasks);
    let mut slots = vec![T::zero(); tasks * m * n];
    let over_images = budget.time(|| {
        b.par_chunks(per_task * k * n)
            .zip(slots.par_chunks_mut(m * n))
            .for_each(|(xs, cols)| {
                for x in xs.chunks_exact(k * n) {
                    let x = MatRef::new(x, k, n, n).expect("input");
                    let out = MatMut::new(cols, m, n, n).expect("cols");
                    backend
                        .gemm(T::one(), at(), x, T::zero(), out)
                        .expect("gemm");
                }
            });
    });
    split_rows.min(over_images) * 1e3
}

fn measure_typed<T: Element>(shape: &SweepShape, backend: AnyBackend, budget: Budget) -> Value
where
    AnyBackend: Gemm<T>,
{
    let config = shape.config();
    let g = config.geometry().expect("sweep shapes are valid");
    let auto = DeconvLayer::<T, AnyBackend>::with_backend(&config, backend)
        .expect("sweep shapes are valid");
    // "phases/columns" where Auto gives the backward another algorithm than the forward.
    let auto = match (auto.algorithm(), auto.backward_algorithm()) {
        (f, b) if f == b => algorithm_name(f).to_string(),
        (f, b) => format!("{}/{}", algorithm_name(f), algorithm_name(b)),
    };
    let gemm = gemm_ceiling::<T>(&g, &backend, budget);
    let times = |algorithm| {
        passes::<T>(shape, algorithm, backend, budget).map_or(Value::Null, |t| {
            let mut m = serde_json::Map::new();
            for (pass, ms) in PASSES.iter().zip(t) {
                m.insert(pass.to_string(), json!(ms));
            }
            Value::Object(m)
        })
    };
    let columns = times(Algorithm::Columns);
    let phases = times(Algorithm::Phases);
    let direct = times(Algorithm::Direct);
    let auto_ms = times(Algorithm::Auto);
    json!({
        "id": shape.id,
        "gemm_ms": gemm,
        "auto": auto,
        "auto_ms": auto_ms,
        "columns": columns,
        "phases": phases,
        "direct": direct,
    })
}

pub fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::Auto => "auto",
        Algorithm::Columns => "columns",
        Algorithm::Phases => "phases",
        Algorithm::Direct => "direct",
    }
}

/// The measured record of one shape (see `report.rs` for the fields).
pub fn measure(shape: &SweepShape, backend: AnyBackend, budget: Budget) -> Value {
    match shape.dtype {
        Dtype::F32 => measure_typed::<f32>(shape, backend, budget),
        Dtype::F64 => measure_typed::<f64>(shape, backend, budget),
    }
}

/// GB/s of a large parallel copy (bytes read plus bytes written, per second): the memory
/// bandwidth the memory-bound shapes are held to, measured in the same run.
pub fn copy_bandwidth(budget: Budget) -> f64 {
    let n = 32 << 20; // 128 MiB of f32 each way: far beyond the caches
    let src = random::<f32>(n, 5);
    let mut dst = vec![0.0f32; n];
    let chunk = n.div_ceil(rayon::current_num_threads());
    let secs = budget.time(|| {
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
        std::hint::black_box(&dst);
    });
    2.0 * (n * 4) as f64 / secs / 1e9
}

/// GB/s of a large parallel write with ordinary stores (bytes written per second): the rate a
/// layer that mostly writes its output can reach, measured in the same run. Each 256-byte block
/// is a copy of one small array that stays in L1, so the loop is bound by the stores (not a
/// `memset`, which may stream, nor a per-element conversion: an earlier loop that stored
/// `index as f32` ran at 9-10 GB/s where these stores run at 24-33).
pub fn write_bandwidth(budget: Budget) -> f64 {
    let n = 32 << 20;
    let mut dst = vec![0.0f32; n];
    let chunk = n.div_ceil(rayon::current_num_threads());
    let secs = budget.time(|| {
        dst.par_chunks_mut(chunk).enumerate().for_each(|(c, d)| {
            let block: [f32; 64] = std::array::from_fn(|i| (c * 64 + i) as f32);
            let mut blocks = d.chunks_exact_mut(64);
            for b in &mut blocks {
                let b: &mut [f32; 64] = b.try_into().expect("64 elements");
                *b = *std::hint::black_box(&block);
            }
            let rest = blocks.into_remainder();
            let len = rest.len();
            rest.copy_from_slice(&block[..len]);
        });
        std::hint::black_box(&dst);
    });
    (n * 4) as f64 / secs / 1e9
}
