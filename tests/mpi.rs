//! The MPI collective (feature `mpi`) over however many ranks it is started with: `cargo test
//! --features mpi` runs it as one process (an MPI singleton); CI runs it again with `mpirun -np
//! 2` and `-np 3` (see `.ci/run`):
//!
//! ```text
//! CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="mpirun -np 3 --oversubscribe" \
//!     cargo test --features mpi --test mpi
//! ```
//!
//! A plain `main` (no test harness): MPI is initialized once per process, and every rank must
//! make the same calls in the same order. It checks the sums and broadcasts, that ranks which
//! disagree on a call (length, element type, root) get an error on every rank instead of a
//! hang, and that data-parallel training over MPI with an uneven split equals one process on
//! the global batch (f64 within 1e-12, f32 within 1e-6 relative, 50 steps) with the ranks equal
//! bit for bit. The thread-based tests of the same equivalence are in `tests/distributed.rs`.

use deconv::distributed::rsmpi::environment::Threading;
use deconv::distributed::rsmpi::traits::Communicator;
use deconv::distributed::{Collective, DataParallel, Mpi, rsmpi};
use deconv::{
    Activation, DeconvConfig, DeconvLayer, DefaultBackend, Element, Error, Gemm, Mode, Optimizer,
    UpdateArgs,
};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

type Check = Result<(), String>;
/// A named check that every rank runs.
type Named = (&'static str, fn(&Mpi) -> Check);

/// LeakSanitizer stays off in this binary (CI runs every test binary under AddressSanitizer,
/// which includes LeakSanitizer): Open MPI's initialization leaks by design (about 120 kB in
/// 3,000 allocations here), in frames that LeakSanitizer cannot unwind, so they cannot be
/// suppressed by name. The address checks stay on; the same training code runs with leak
/// checks in `tests/distributed.rs`. LeakSanitizer calls this hook when it is present.
#[unsafe(no_mangle)]
pub extern "C" fn __lsan_is_turned_off() -> std::os::raw::c_int {
    1
}

fn main() {
    let Some((universe, _)) = rsmpi::initialize_with_threading(Threading::Funneled) else {
        eprintln!("MPI was initialized already");
        std::process::exit(1);
    };
    let comm = Mpi::new(universe.world().duplicate());
    let (rank, size) = (
        Collective::<f32>::rank(&comm),
        Collective::<f32>::size(&comm),
    );
    let checks: [Named; 6] = [
        ("sums and broadcasts", sums_and_broadcasts),
        ("every rank gets the same bits", same_bits),
        ("a bad root is an error on every rank", bad_root),
        ("ranks that disagree get an error", disagreement),
        ("data parallel equals one process, f64", equivalence::<f64>),
        ("data parallel equals one process, f32", equivalence::<f32>),
    ];
    let mut failed = 0;
    for (name, check) in checks {
        let result = check(&comm);
        // Every rank learns whether any rank failed, so that all take the same path.
        let mut failures = [f64::from(u8::from(result.is_err()))];
        let any = comm.allreduce_sum(&mut failures).map(|()| failures[0]);
        match (&result, any) {
            (Ok(()), Ok(0.0)) => {
                if rank == 0 {
                    println!("ok    {name} ({size} ranks)");
                }
            }
            _ => {
                failed += 1;
                let why = result
                    .err()
                    .unwrap_or_else(|| "failed on another rank".into());
                eprintln!("FAIL  {name}, rank {rank} of {size}: {why}");
            }
        }
    }
    drop(comm);
    drop(universe);
    if failed > 0 {
        std::process::exit(1);
    }
}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Check {
    if ok { Ok(()) } else { Err(what()) }
}

fn rank_size(comm: &Mpi) -> (usize, usize) {
    (Collective::<f64>::rank(comm), Collective::<f64>::size(comm))
}

fn sums_and_broadcasts(comm: &Mpi) -> Check {
    let (rank, size) = rank_size(comm);
    let r = rank as f64;
    // Exact in binary: the sums are exact too.
    let mut sum64 = vec![r + 1.0, 0.5 * r, 2f64.powi(-20)];
    comm.allreduce_sum(&mut sum64).map_err(|e| e.to_string())?;
    let s = size as f64;
    let want = [
        s * (s + 1.0) / 2.0,
        0.25 * s * (s - 1.0),
        s * 2f64.powi(-20),
    ];
    ensure(sum64 == want, || {
        format!("f64 sum {sum64:?}, want {want:?}")
    })?;
    let mut sum32 = vec![rank as f32 + 1.0; 1000];
    comm.allreduce_sum(&mut sum32).map_err(|e| e.to_string())?;
    let want32 = (size * (size + 1) / 2) as f32;
    ensure(sum32.iter().all(|&v| v == want32), || {
        format!("f32 sum {}, want {want32}", sum32[0])
    })?;
    let mut empty: [f32; 0] = [];
    comm.allreduce_sum(&mut empty).map_err(|e| e.to_string())?;
    let root = size - 1;
    let mut b = vec![r; 5];
    comm.broadcast(&mut b, root).map_err(|e| e.to_string())?;
    ensure(b == vec![root as f64; 5], || {
        format!("broadcast gave {b:?}")
    })
}

/// A sum of random values, then rank 0's result broadcast and compared bit for bit.
fn same_bits(comm: &Mpi) -> Check {
    let (rank, _) = rank_size(comm);
    let mut rng = ChaCha8Rng::seed_from_u64(rank as u64);
    let mut sum: Vec<f32> = (0..100_000).map(|_| rng.random_range(-1.0..1.0)).collect();
    comm.allreduce_sum(&mut sum).map_err(|e| e.to_string())?;
    let mut root = sum.clone();
    comm.broadcast(&mut root, 0).map_err(|e| e.to_string())?;
    let differ = sum
        .iter()
        .zip(&root)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    ensure(differ == 0, || {
        format!("{differ} sums differ from rank 0's")
    })
}

fn bad_root(comm: &Mpi) -> Check {
    let (_, size) = rank_size(comm);
    let mut data = [1.0f64; 3];
    match comm.broadcast(&mut data, size) {
        Err(Error::InvalidParameter { param: "root", .. }) => Ok(()),
        other => Err(format!("broadcast from rank {size}: {other:?}")),
    }
}

fn disagreement(comm: &Mpi) -> Check {
    let (rank, size) = rank_size(comm);
    if size == 1 {
        println!("skip  disagreement: one rank agrees with itself (run with mpirun -np 2)");
        return Ok(());
    }
    let collective_error = |what: &str, r: deconv::Result<()>| match r {
        Err(Error::Collective { message, .. }) => {
            if rank == 0 {
                println!("      {what}: {message}");
            }
            Ok(())
        }
        other => Err(format!("{what}: {other:?}, want Error::Collective")),
    };
    // The last rank sums one value more.
    let mut data = vec![1.0f32; 4 + usize::from(rank == size - 1)];
    collective_error("lengths", comm.allreduce_sum(&mut data))?;
    // Rank 0 sums f64, the others f32.
    let types = if rank == 0 {
        comm.allreduce_sum(&mut [1.0f64; 4])
    } else {
        comm.allreduce_sum(&mut [1.0f32; 4])
    };
    collective_error("element types", types)?;
    collective_error("roots", comm.broadcast(&mut [1.0f32; 4], rank))?;
    // Rank 0 broadcasts, the others sum.
    let ops = if rank == 0 {
        comm.broadcast(&mut [1.0f32; 4], 0)
    } else {
        comm.allreduce_sum(&mut [1.0f32; 4])
    };
    collective_error("operations", ops)?;
    // And the group still works.
    sums_and_broadcasts(comm)
}

const STEPS: usize = 50;

fn config(batch: usize, adam: bool) -> DeconvConfig {
    DeconvConfig::new(batch, 3, 5, 4, 4, 4)
        .stride(2)
        .pad(1)
        .batch_normalize(true)
        .activation(Activation::Leaky)
        .adam(adam)
        .seed(11)
}

fn args<T: Element>(adam: bool, batch: usize) -> UpdateArgs<T> {
    let mut args = UpdateArgs::sgd(T::of(0.005), T::of(0.9), T::of(0.0005), batch);
    if adam {
        args.learning_rate = T::of(0.01);
        args.optimizer = Optimizer::adam();
    }
    args
}

/// Step `step`'s global batch: random inputs and a fixed teacher layer's outputs as targets.
fn batch_of<T: Element>(step: usize, images: usize) -> (Vec<T>, Vec<T>)
where
    DefaultBackend: Gemm<T>,
{
    let mut teacher: DeconvLayer<T> = DeconvLayer::new(
        &DeconvConfig::new(images, 3, 5, 4, 4, 4)
            .stride(2)
            .pad(1)
            .seed(99),
    )
    .expect("teacher");
    for w in teacher.weights_mut() {
        *w *= T::of(5.0);
    }
    for (i, b) in teacher.biases_mut().iter_mut().enumerate() {
        *b = T::of(0.5 - 0.3 * i as f64);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(1000 + step as u64);
    let input: Vec<T> = (0..images * teacher.geometry().inputs())
        .map(|_| T::of(rng.random_range(-1.0..1.0)))
        .collect();
    let target = teacher
        .forward(&input, Mode::Inference)
        .expect("teacher")
        .to_vec();
    (input, target)
}

/// Sum of `0.5 * (y - t)^2`, and `delta = t - y`.
fn loss_and_delta<T: Element>(output: &[T], target: &[T], delta: &mut [T]) -> f64 {
    let mut loss = 0.0;
    for ((d, &y), &t) in delta.iter_mut().zip(output).zip(target) {
        *d = t - y;
        loss += 0.5 * ((y - t) * (y - t)).to_f64_lossless();
    }
    loss
}

/// Everything compared: parameters, rolling statistics, and the losses.
fn state<T: Element>(layer: &DeconvLayer<T>, losses: &[f64]) -> Vec<(&'static str, Vec<f64>)>
where
    DefaultBackend: Gemm<T>,
{
    let f = |v: &[T]| v.iter().map(|x| x.to_f64_lossless()).collect::<Vec<_>>();
    vec![
        ("weights", f(layer.weights())),
        ("biases", f(layer.biases())),
        ("scales", f(layer.scales().unwrap_or_default())),
        ("rolling_mean", f(layer.rolling_mean().unwrap_or_default())),
        (
            "rolling_variance",
            f(layer.rolling_variance().unwrap_or_default()),
        ),
        ("losses", losses.to_vec()),
    ]
}

/// Uneven split of `2 * size + 1` images (rank 0 holds 3), SGD and Adam: the ranks equal bit
/// for bit, and equal to one process on the global batch within the issue's tolerance.
fn equivalence<T: Element + 'static>(comm: &Mpi) -> Check
where
    DefaultBackend: Gemm<T>,
    Mpi: Collective<T>,
{
    let (rank, size) = rank_size(comm);
    let tolerance = if size_of::<T>() == 8 { 1e-12 } else { 1e-6 };
    let global = 2 * size + 1;
    let (local, first) = if rank == 0 { (3, 0) } else { (2, 1 + 2 * rank) };
    let e = |e: Error| e.to_string();
    for adam in [false, true] {
        let mut layer: DeconvLayer<T> =
            DeconvLayer::new(&config(local, adam).seed(100 + rank as u64)).map_err(e)?;
        let mut single: DeconvLayer<T> = DeconvLayer::new(&config(global, adam)).map_err(e)?;
        if rank == 0 {
            layer.weights_mut().copy_from_slice(single.weights());
        }
        let mut dp = DataParallel::new(&layer, comm).map_err(e)?;
        ensure(dp.global_batch() == global, || {
            format!("global batch {}", dp.global_batch())
        })?;
        dp.broadcast_parameters(&mut layer, 0).map_err(e)?;
        let g = *layer.geometry();
        let (mut losses, mut single_losses) = (Vec::new(), Vec::new());
        for step in 0..STEPS {
            let (input, target) = batch_of::<T>(step, global);
            let part = |v: &[T], n: usize| v[first * n..(first + local) * n].to_vec();
            let (x, t) = (part(&input, g.inputs()), part(&target, g.outputs()));
            let y = dp.forward(&mut layer, &x, Mode::Train).map_err(e)?.to_vec();
            let mut loss = [loss_and_delta(&y, &t, layer.delta_mut())];
            Collective::<f64>::allreduce_sum(comm, &mut loss).map_err(e)?;
            losses.push(loss[0]);
            dp.backward(&mut layer, &x, None).map_err(e)?;
            layer.update(&args(adam, global)).map_err(e)?;

            let y = single.forward(&input, Mode::Train).map_err(e)?.to_vec();
            single_losses.push(loss_and_delta(&y, &target, single.delta_mut()));
            single.backward(&input, None).map_err(e)?;
            single.update(&args(adam, global)).map_err(e)?;
        }
        let mine = state(&layer, &losses);
        // Rank 0's state on every rank, compared bit for bit.
        for (name, values) in &mine {
            let mut root = values.clone();
            Collective::<f64>::broadcast(comm, &mut root, 0).map_err(e)?;
            let same = root
                .iter()
                .zip(values)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            ensure(same, || {
                format!("adam {adam}: {name} differs from rank 0's")
            })?;
        }
        let mut worst = ("", 0.0f64);
        for ((name, got), (_, want)) in mine.iter().zip(&state(&single, &single_losses)) {
            let scale = want.iter().fold(f64::MIN_POSITIVE, |m, v| m.max(v.abs()));
            let diff = got
                .iter()
                .zip(want)
                .fold(0.0f64, |m, (a, b)| m.max(distance(*a, *b)));
            if diff / scale > worst.1 {
                worst = (name, diff / scale);
            }
        }
        if rank == 0 {
            println!(
                "      {} adam {adam}, {global} images over {size} ranks, {STEPS} steps: \
                 largest relative difference {:e} ({})",
                std::any::type_name::<T>(),
                worst.1,
                if worst.0.is_empty() { "none" } else { worst.0 }
            );
        }
        ensure(worst.1 <= tolerance, || {
            format!(
                "adam {adam}: {} off by {:e} relative (at most {tolerance:e})",
                worst.0, worst.1
            )
        })?;
    }
    Ok(())
}

/// `|a - b|`, infinite where exactly one is NaN (`f64::max` would skip a NaN).
fn distance(a: f64, b: f64) -> f64 {
    match (a.is_nan(), b.is_nan()) {
        (false, false) => (a - b).abs(),
        (true, true) => 0.0,
        _ => f64::INFINITY,
    }
}
