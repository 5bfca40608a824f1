//! Data-parallel training over 2 and 3 ranks (threads of one process, `ThreadGroup`), even and
//! uneven splits, equals one process on the global batch: no batch norm, synchronized batch norm
//! with linear and leaky activations, SGD with momentum and decay, Adam, f32 and f64. After 50
//! steps, weights, biases, scales, rolling statistics and losses agree within 1e-6 (f32) or
//! 1e-12 (f64) relative to each buffer's largest value, and the ranks agree bit for bit. The
//! naive way (summing the update buffers, momentum carry included) is shown to fail the same
//! check.
//!
//! The job is a teacher-student one (as `examples/train.rs`): targets from a fixed layer with
//! non-zero biases, so every compared value is a learned quantity. On a task the layer cannot
//! learn (random targets), f32 rounding alone (sums taken in another order) grows past 1e-6
//! over 50 steps: measured 2.4e-6 on biases that stay at rounding noise around 0.

use deconv::distributed::{Collective, DataParallel, ThreadGroup, ThreadRank};
use deconv::{
    Activation, DeconvConfig, DeconvLayer, DefaultBackend, Element, Gemm, Mode, Optimizer,
    UpdateArgs,
};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

const STEPS: usize = 50;

#[derive(Clone, Copy, Debug)]
struct Case {
    batch_norm: bool,
    activation: Activation,
    adam: bool,
}

fn config(batch: usize, case: Case) -> DeconvConfig {
    DeconvConfig::new(batch, 3, 5, 4, 4, 4)
        .stride(2)
        .pad(1)
        .batch_normalize(case.batch_norm)
        .activation(case.activation)
        .adam(case.adam)
        .seed(11)
}

fn args<T: Element>(case: Case, batch: usize) -> UpdateArgs<T> {
    let mut args = UpdateArgs::sgd(T::of(0.005), T::of(0.9), T::of(0.0005), batch);
    if case.adam {
        args.learning_rate = T::of(0.01);
        args.optimizer = Optimizer::adam();
    }
    args
}

/// The global batch of step `step`: random inputs, and as targets the outputs of a fixed
/// "teacher" layer of the same shape (a task the layer can learn, as in `examples/train.rs`).
fn batch_of<T: Element>(
    step: usize,
    images: usize,
    inputs: usize,
    outputs: usize,
) -> (Vec<T>, Vec<T>)
where
    DefaultBackend: Gemm<T>,
{
    let mut rng = ChaCha8Rng::seed_from_u64(1000 + step as u64);
    let input: Vec<T> = (0..images * inputs)
        .map(|_| T::of(rng.random_range(-1.0..1.0)))
        .collect();
    let teacher = DeconvConfig::new(images, 3, 5, 4, 4, 4)
        .stride(2)
        .pad(1)
        .seed(99);
    let mut teacher: DeconvLayer<T> = DeconvLayer::new(&teacher).unwrap();
    for w in teacher.weights_mut() {
        *w *= T::of(5.0);
    }
    // Biases the student must learn (zero biases would leave the student's at rounding noise).
    for (i, b) in teacher.biases_mut().iter_mut().enumerate() {
        *b = T::of(0.5 - 0.3 * i as f64);
    }
    let target = teacher.forward(&input, Mode::Inference).unwrap().to_vec();
    assert_eq!(target.len(), images * outputs);
    (input, target)
}

/// Everything compared after training: weights, biases, scales, rolling mean and variance,
/// and the loss of each step.
#[derive(Debug, Clone, PartialEq)]
struct Outcome<T> {
    parts: Vec<(&'static str, Vec<T>)>,
}

fn outcome<T: Element, B: Gemm<T>>(layer: &DeconvLayer<T, B>, losses: Vec<T>) -> Outcome<T> {
    let or_empty = |v: Option<&[T]>| v.unwrap_or_default().to_vec();
    Outcome {
        parts: vec![
            ("weights", layer.weights().to_vec()),
            ("biases", layer.biases().to_vec()),
            ("scales", or_empty(layer.scales())),
            ("rolling_mean", or_empty(layer.rolling_mean())),
            ("rolling_variance", or_empty(layer.rolling_variance())),
            ("losses", losses),
        ],
    }
}

/// `-dLoss/dOutput` of `0.5 * |y - t|^2` into `delta`; returns the loss, summed in f64 (an f32
/// sum of 2,000 terms alone is off by about 1e-6 depending on its order).
fn loss_and_delta<T: Element>(output: &[T], target: &[T], delta: &mut [T]) -> T {
    let mut loss = 0.0f64;
    for ((d, &y), &t) in delta.iter_mut().zip(output).zip(target) {
        *d = t - y;
        loss += 0.5 * ((y - t) * (y - t)).to_f64_lossless();
    }
    T::of(loss)
}

/// One process on the global batch.
fn single<T: Element>(case: Case, global: usize) -> Outcome<T>
where
    DefaultBackend: Gemm<T>,
{
    let mut layer: DeconvLayer<T> = DeconvLayer::new(&config(global, case)).unwrap();
    let g = *layer.geometry();
    let mut losses = Vec::new();
    for step in 0..STEPS {
        let (input, target) = batch_of::<T>(step, global, g.inputs(), g.outputs());
        let output = layer.forward(&input, Mode::Train).unwrap().to_vec();
        losses.push(loss_and_delta(&output, &target, layer.delta_mut()));
        layer.backward(&input, None).unwrap();
        layer.update(&args(case, global)).unwrap();
    }
    outcome(&layer, losses)
}

/// How a rank turns its backward into gradients that hold the whole batch's.
#[derive(Clone, Copy, PartialEq)]
enum Reduce {
    /// `DataParallel`: fresh gradients summed, the momentum carry kept apart.
    DataParallel,
    /// The obvious way: `backward`, then sum `gradients()` (carry included) over the ranks.
    Naive,
}

/// Rank `rank` of `split.len()`, holding images `split[..rank].sum()..` of each step's batch.
fn rank_run<T: Element>(
    case: Case,
    split: &[usize],
    comm: ThreadRank<T>,
    reduce: Reduce,
) -> Outcome<T>
where
    DefaultBackend: Gemm<T>,
{
    let rank = comm.rank();
    let (local, first) = (split[rank], split[..rank].iter().sum::<usize>());
    let global: usize = split.iter().sum();
    // A different seed per rank: broadcast_parameters must make them equal.
    let mut layer: DeconvLayer<T> =
        DeconvLayer::new(&config(local, case).seed(rank as u64 + 100)).unwrap();
    let mut dp = DataParallel::new(&layer, &comm).unwrap();
    assert_eq!(dp.global_batch(), global);
    let mut reference: DeconvLayer<T> = DeconvLayer::new(&config(global, case)).unwrap();
    if rank == 0 {
        layer.weights_mut().copy_from_slice(reference.weights_mut());
    }
    dp.broadcast_parameters(&mut layer, 0).unwrap();
    let g = *layer.geometry();
    let mut losses = Vec::new();
    for step in 0..STEPS {
        let (input, target) = batch_of::<T>(step, global, g.inputs(), g.outputs());
        let input = &input[first * g.inputs()..][..local * g.inputs()];
        let target = &target[first * g.outputs()..][..local * g.outputs()];
        let output = dp.forward(&mut layer, input, Mode::Train).unwrap().to_vec();
        let mut loss = [loss_and_delta(&output, target, layer.delta_mut())];
        comm.allreduce_sum(&mut loss).unwrap();
        losses.push(loss[0]);
        match reduce {
            Reduce::DataParallel => dp.backward(&mut layer, input, None).unwrap(),
            Reduce::Naive => {
                layer.backward(input, None).unwrap();
                comm.allreduce_sum(layer.gradients_mut()).unwrap();
            }
        }
        layer.update(&args(case, global)).unwrap();
    }
    outcome(&layer, losses)
}

/// Every rank's outcome.
fn ranks<T: Element>(case: Case, split: &[usize], reduce: Reduce) -> Vec<Outcome<T>>
where
    DefaultBackend: Gemm<T>,
{
    std::thread::scope(|s| {
        let handles: Vec<_> = ThreadGroup::<T>::new(split.len())
            .into_iter()
            .map(|comm| s.spawn(move || rank_run(case, split, comm, reduce)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The largest difference of each part relative to that part's largest value.
fn worst_relative<T: Element>(a: &Outcome<T>, b: &Outcome<T>) -> (&'static str, f64) {
    let mut worst = ("", 0.0f64);
    for ((name, x), (_, y)) in a.parts.iter().zip(&b.parts) {
        assert_eq!(x.len(), y.len(), "{name}");
        let scale = y
            .iter()
            .fold(0.0f64, |m, v| m.max(v.to_f64_lossless().abs()))
            .max(f64::MIN_POSITIVE);
        let diff = x.iter().zip(y).fold(0.0f64, |m, (p, q)| {
            m.max((p.to_f64_lossless() - q.to_f64_lossless()).abs())
        });
        if diff / scale > worst.1 {
            worst = (name, diff / scale);
        }
    }
    worst
}

fn check<T: Element>(tolerance: f64)
where
    DefaultBackend: Gemm<T>,
{
    let cases = [
        (false, Activation::Linear, false),
        (false, Activation::Leaky, true),
        (true, Activation::Linear, false),
        (true, Activation::Leaky, false),
        (true, Activation::Leaky, true),
    ];
    let splits: [&[usize]; 4] = [&[3, 3], &[5, 1], &[2, 2, 2], &[1, 2, 3]];
    let mut worst_seen = 0.0f64;
    for (batch_norm, activation, adam) in cases {
        let case = Case {
            batch_norm,
            activation,
            adam,
        };
        let want = single::<T>(case, 6);
        // The task is learned: the last 5 steps' loss is well below the first 5 steps'.
        let losses = &want.parts[5].1;
        let mean = |l: &[T]| l.iter().map(|v| v.to_f64_lossless()).sum::<f64>() / 5.0;
        let (first, last) = (mean(&losses[..5]), mean(&losses[STEPS - 5..]));
        assert!(
            last < 0.8 * first,
            "{case:?} does not learn: {first} -> {last}"
        );
        for split in splits {
            let got = ranks::<T>(case, split, Reduce::DataParallel);
            for (r, other) in got.iter().enumerate().skip(1) {
                assert!(
                    other == &got[0],
                    "{case:?} {split:?}: rank {r} differs from rank 0"
                );
            }
            let (part, rel) = worst_relative(&got[0], &want);
            worst_seen = worst_seen.max(rel);
            assert!(
                rel <= tolerance,
                "{case:?} {split:?}: {part} off by {rel:e} relative (at most {tolerance:e})"
            );
        }
    }
    eprintln!(
        "{}: 5 cases x 4 splits, {STEPS} steps: largest relative difference {worst_seen:e}",
        std::any::type_name::<T>()
    );
}

#[test]
fn data_parallel_equals_one_process_f64() {
    check::<f64>(1e-12);
}

#[test]
fn data_parallel_equals_one_process_f32() {
    check::<f32>(1e-6);
}

/// The check above can fail: summing the update buffers, momentum carry included (what a
/// user would do by hand), counts the carry once per rank and drifts far away.
#[test]
fn summing_the_carried_buffers_is_not_equivalent() {
    let case = Case {
        batch_norm: false,
        activation: Activation::Linear,
        adam: false,
    };
    let want = single::<f64>(case, 6);
    let naive = ranks::<f64>(case, &[3, 3], Reduce::Naive);
    let (part, rel) = worst_relative(&naive[0], &want);
    assert!(rel > 1e-2, "the naive sum came within {rel:e} ({part})");
    let exact = ranks::<f64>(case, &[3, 3], Reduce::DataParallel);
    assert!(worst_relative(&exact[0], &want).1 <= 1e-12);
}

/// Per-rank batch norm normalizes each rank's part alone: not equal to one process, and the
/// ranks' rolling statistics differ.
#[test]
fn unsynchronized_batch_norm_is_per_rank() {
    let case = Case {
        batch_norm: true,
        activation: Activation::Linear,
        adam: false,
    };
    let split = [4usize, 2];
    let outcomes: Vec<Outcome<f64>> = std::thread::scope(|s| {
        let handles: Vec<_> = ThreadGroup::<f64>::new(2)
            .into_iter()
            .map(|comm| {
                s.spawn(move || {
                    let rank = comm.rank();
                    let local = split[rank];
                    let mut layer: DeconvLayer<f64> =
                        DeconvLayer::new(&config(local, case)).unwrap();
                    let mut dp = DataParallel::new(&layer, &comm)
                        .unwrap()
                        .sync_batch_norm(false);
                    let g = *layer.geometry();
                    let (input, _) = batch_of::<f64>(0, 6, g.inputs(), g.outputs());
                    let input = &input[rank * 4 * g.inputs()..][..local * g.inputs()];
                    dp.forward(&mut layer, input, Mode::Train).unwrap();
                    layer.delta_mut().fill(0.1);
                    dp.backward(&mut layer, input, None).unwrap();
                    outcome(&layer, vec![])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_ne!(
        outcomes[0].parts[3], outcomes[1].parts[3],
        "rolling means agree"
    );
}

#[test]
fn the_ranks_must_agree() {
    // Different gradient lengths on the ranks: an error on every rank, not a hang or a panic.
    let results: Vec<deconv::Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = ThreadGroup::<f32>::new(2)
            .into_iter()
            .map(|comm| {
                s.spawn(move || {
                    let mut data = vec![1.0f32; 3 + comm.rank()];
                    comm.allreduce_sum(&mut data)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in results {
        assert!(matches!(r, Err(deconv::Error::Collective { .. })), "{r:?}");
    }
    // An inference-only layer cannot join.
    let comm = ThreadGroup::<f32>::new(1).pop().unwrap();
    let layer: DeconvLayer<f32> = DeconvLayer::new(
        &config(
            2,
            Case {
                batch_norm: false,
                activation: Activation::Linear,
                adam: false,
            },
        )
        .training(false),
    )
    .unwrap();
    assert!(DataParallel::new(&layer, comm).is_err());
}
