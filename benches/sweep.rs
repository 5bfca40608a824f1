//! The layer on every shape of the sweep (`benches/support/sweep.rs`: about fifty layers from
//! real networks), with the algorithm `Auto` picks, on the default backend.
//!
//! Each shape is one criterion group `sweep/<id>` with `forward_inference` and
//! `forward_backward` (a training forward and the backward with the input gradient; writing the
//! output gradient into the layer's delta between them is not timed). Throughput is in
//! FLOPs (forward `2*k*k*n/g*h*w*c*batch`, forward+backward 3x), so `elem/s` reads as FLOP/s.
//! For every algorithm, the GEMM ceiling and the peers, run `examples/sweep` and
//! `benches/peers.py` (README, "Shape sweep against PyTorch and ONNX Runtime").
//!
//! ```text
//! cargo bench --bench sweep                  # all shapes (a few minutes)
//! cargo bench --bench sweep -- dcgan         # the shapes whose id contains "dcgan"
//! ```

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use deconv::{DeconvLayer, DefaultBackend, Element, Gemm, Mode};
use std::hint::black_box;
use std::time::{Duration, Instant};

#[path = "support/shapes.rs"]
mod shapes;
#[path = "support/sweep.rs"]
mod sweep;
use sweep::{Dtype, SWEEP, SweepShape};

fn random<T: Element>(len: usize, seed: u64) -> Vec<T> {
    (0..len)
        .map(|i| {
            let x = (i as u64)
                .wrapping_mul(6364136223846793005)
                .wrapping_add(seed.wrapping_mul(1442695040888963407));
            T::of(((x >> 40) as f64 / (1u64 << 24) as f64) - 0.5)
        })
        .collect()
}

fn bench_shape<T: Element>(c: &mut Criterion, shape: &SweepShape)
where
    DefaultBackend: Gemm<T>,
{
    let mut layer =
        DeconvLayer::<T, DefaultBackend>::new(&shape.config()).expect("the sweep shapes are valid");
    shape.prepare(&mut layer);
    let g = *layer.geometry();
    let input = random::<T>(g.batch() * g.inputs(), 2);
    let delta = random::<T>(g.batch() * g.outputs(), 3);
    let mut input_delta = vec![T::zero(); input.len()];
    let mut group = c.benchmark_group(format!("sweep/{}", shape.id));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(g.forward_flops()));
    group.bench_function("forward_inference", |b| {
        b.iter(|| {
            layer
                .forward(black_box(&input), Mode::Inference)
                .expect("forward");
        });
    });
    group.throughput(Throughput::Elements(3 * g.forward_flops()));
    group.bench_function("forward_backward", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                layer
                    .forward(black_box(&input), Mode::Train)
                    .expect("forward");
                timed += start.elapsed();
                layer.delta_mut().copy_from_slice(&delta);
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
    group.finish();
}

fn benches(c: &mut Criterion) {
    eprintln!(
        "deconv sweep: {} shapes, {} rayon threads",
        SWEEP.len(),
        rayon::current_num_threads()
    );
    for shape in SWEEP {
        match shape.dtype {
            Dtype::F32 => bench_shape::<f32>(c, shape),
            Dtype::F64 => bench_shape::<f64>(c, shape),
        }
    }
}

criterion_group!(sweep_benches, benches);
criterion_main!(sweep_benches);
