//! Throughput of the layer on four real-world shapes (S1 DCGAN generator, S2 U-Net up-conv,
//! S3 FCN 8x bilinear upsampling, S4 Darknet 3x3 stride 2; the table is in
//! `benches/support/shapes.rs`, shared with `examples/perf.rs`), per compiled-in GEMM backend,
//! next to the raw GEMMs the layer's forward pass is built on.
//!
//! Each shape is one criterion group; its benchmarks are `<shape>/<backend>/<what>`:
//! - `forward_inference`: [`DeconvLayer::forward`] in [`Mode::Inference`];
//! - `forward_train`: the same in [`Mode::Train`] (batch statistics);
//! - `forward_backward`: a training forward and [`DeconvLayer::backward`] with the input
//!   gradient (three GEMMs of the forward's size, so 3x its FLOPs); writing the output gradient
//!   into the layer's delta between the two calls is not timed;
//! - `gemm`: only the forward's GEMMs, `cols (k*k*n x h*w) = W^T (k*k*n x c) * x (c x h*w)`,
//!   one per image, each split over the threads by rows with [`par_gemm`];
//! - `gemm_batched`: the same GEMMs with the images spread over the threads instead, each a
//!   single-threaded [`Gemm::gemm`] into its own buffer, as the layer's forward runs them when
//!   the batch has more than one image. These two rows are the layer's GEMM ceiling.
//!
//! Throughput is in FLOPs ([`Geometry::forward_flops`](deconv::Geometry::forward_flops), GEMM
//! multiply-adds counted as 2), so criterion's `elem/s` reads as FLOP/s and the layer rows compare
//! directly with the `gemm` rows. Everything is `f32` on rayon's global pool (set
//! `RAYON_NUM_THREADS` to change it).
//!
//! ```text
//! cargo bench                                    # matrixmultiply
//! cargo bench --all-features                     # matrixmultiply and OpenBLAS
//! cargo bench -- S4                              # one shape
//! cargo bench --all-features -- 'S2/openblas'    # one shape and backend
//! ```

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use deconv::backend::{MatMut, MatRef, par_gemm};
use deconv::{COMPILED_BACKENDS, DeconvLayer, Gemm, Mode};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use std::hint::black_box;
use std::time::{Duration, Instant};

#[path = "support/shapes.rs"]
mod shapes;
use shapes::{SHAPES, Shape};

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| StandardNormal.sample(&mut rng)).collect()
}

/// Registers the five benchmarks of `shape` on backend `B` in `group`.
fn bench_backend<B: Gemm<f32> + Default>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    shape: &Shape,
) {
    let backend = B::default();
    let name = backend.name();
    let mut layer = DeconvLayer::<f32, B>::with_backend(&shape.config(), backend)
        .expect("the benchmark shapes are valid");
    shape.prepare(&mut layer);
    let g = *layer.geometry();
    let flops = g.forward_flops();
    let input = random(g.batch() * g.inputs(), 2);
    let delta = random(g.batch() * g.outputs(), 3);
    let mut input_delta = vec![0.0f32; input.len()];

    group.throughput(Throughput::Elements(flops));
    group.bench_function(format!("{name}/forward_inference"), |b| {
        b.iter(|| {
            layer
                .forward(black_box(&input), Mode::Inference)
                .expect("forward");
        });
    });
    group.bench_function(format!("{name}/forward_train"), |b| {
        b.iter(|| {
            layer
                .forward(black_box(&input), Mode::Train)
                .expect("forward");
        });
    });

    group.throughput(Throughput::Elements(3 * flops));
    group.bench_function(format!("{name}/forward_backward"), |b| {
        // Only the layer's two calls are timed: writing the output gradient into `delta` and
        // zeroing the input gradient are the caller's work (in a network, the next layer's
        // backward writes straight into `delta`).
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                layer
                    .forward(black_box(&input), Mode::Train)
                    .expect("forward");
                timed += start.elapsed();
                layer.delta_mut().copy_from_slice(&delta);
                input_delta.fill(0.0);
                let start = Instant::now();
                layer
                    .backward(&input, Some(&mut input_delta))
                    .expect("backward");
                timed += start.elapsed();
                black_box(&input_delta);
            }
            timed
        });
    });

    // The forward's GEMMs alone, with the layer's operands and the same calls.
    let (c, rows, hw) = (g.in_channels(), g.col_rows(), g.in_area());
    let weights = layer.weights().to_vec();
    let backend = layer.backend();
    let mut cols = vec![0.0f32; rows * hw];
    group.throughput(Throughput::Elements(flops));
    group.bench_function(format!("{name}/gemm"), |b| {
        b.iter(|| {
            for x in input.chunks_exact(g.inputs()) {
                par_gemm(
                    backend,
                    1.0,
                    MatRef::new(&weights, c, rows, rows).expect("weights").t(),
                    MatRef::new(black_box(x), c, hw, hw).expect("input"),
                    0.0,
                    MatMut::new(&mut cols, rows, hw, hw).expect("cols"),
                )
                .expect("gemm");
            }
            black_box(&cols);
        });
    });

    // The same GEMMs, images over threads: one slot of the columns per concurrent image.
    let slot = rows * hw;
    let tasks = g.batch().min(rayon::current_num_threads()).max(1);
    let per_task = g.batch().div_ceil(tasks);
    let mut slots = vec![0.0f32; tasks * slot];
    group.bench_function(format!("{name}/gemm_batched"), |b| {
        b.iter(|| {
            black_box(&input)
                .par_chunks(per_task * g.inputs())
                .zip(slots.par_chunks_mut(slot))
                .for_each(|(images, cols)| {
                    for x in images.chunks_exact(g.inputs()) {
                        backend
                            .gemm(
                                1.0,
                                MatRef::new(&weights, c, rows, rows).expect("weights").t(),
                                MatRef::new(x, c, hw, hw).expect("input"),
                                0.0,
                                MatMut::new(cols, rows, hw, hw).expect("cols"),
                            )
                            .expect("gemm");
                    }
                });
            black_box(&slots);
        });
    });
}

fn benches(c: &mut Criterion) {
    eprintln!(
        "deconv benches: backends {COMPILED_BACKENDS:?}, {} rayon threads, f32",
        rayon::current_num_threads()
    );
    for shape in &SHAPES {
        let mut group = c.benchmark_group(shape.id);
        // Iterations take milliseconds to a few hundred milliseconds: few samples of equal size.
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .sampling_mode(SamplingMode::Flat);
        #[cfg(feature = "matrixmultiply")]
        bench_backend::<deconv::backend::MatrixMultiply>(&mut group, shape);
        #[cfg(feature = "openblas")]
        bench_backend::<deconv::backend::OpenBlas>(&mut group, shape);
        group.finish();
    }
}

criterion_group!(deconv_benches, benches);
criterion_main!(deconv_benches);
