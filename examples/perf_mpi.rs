//! The benchmark row of data-parallel training over MPI (feature `mpi`): shape S1 (see
//! `benches/support/shapes.rs`) with its global batch of 16 split over the ranks. It prints:
//! - the data-parallel step (training forward, output gradient, backward, update) on every
//!   rank, and the allreduce's time in it as a share of the step (the gradients' one call, and
//!   batch norm's small ones, waiting for the other ranks included); "cores" is how many cores
//!   the rank may run on (its binding), "cores used" its CPU time over the steps' wall time;
//! - one process on the whole batch with as many threads as all ranks together, timed by rank
//!   0 while the other ranks sleep, interleaved with the data-parallel steps (the machine's
//!   noise hits both alike);
//! - the allreduce of S1's gradients alone (524,544 f32) in five ways, to see what the
//!   scratch copy of [`Mpi`] costs: `Mpi::allreduce_sum` (the ranks' agreement check, the
//!   copy, MPI), the check alone, the copy alone, rsmpi's out-of-place allreduce on ready
//!   buffers (no copy), and `MPI_Allreduce` with `MPI_IN_PLACE` through rsmpi's raw bindings
//!   (Open MPI only: rsmpi 0.8 does not export `MPI_IN_PLACE`, whose value each MPI library
//!   defines its own way).
//!
//! ```text
//! cargo build --release --features mpi --example perf_mpi
//! mpirun -np 2 --bind-to none target/release/examples/perf_mpi
//! mpirun -np 2 --bind-to none target/release/examples/perf_mpi -- --threads 1 --reps 15
//! ```
//!
//! `--bind-to none` matters for the one-process row: mpirun binds each rank to one core by
//! default, and rank 0's single-process pool would then share that one core. The example says
//! so when it sees it. Options: `--threads N` (rayon threads per rank; default
//! `RAYON_NUM_THREADS`, else this rank's cores divided by the ranks on its node, at least 1),
//! `--reps N` (timed repetitions, median reported; default 15).

#[path = "../benches/support/shapes.rs"]
mod shapes;

use deconv::distributed::rsmpi::environment::Threading;
use deconv::distributed::rsmpi::traits::*;
use deconv::distributed::{Collective, DataParallel, Mpi, rsmpi};
use deconv::{DeconvConfig, DeconvLayer, Mode, UpdateArgs};
use rsmpi::collective::SystemOperation;
use std::cell::Cell;
use std::time::{Duration, Instant};

struct Options {
    threads: Option<usize>,
    reps: usize,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        threads: None,
        reps: 15,
    };
    let mut args = std::env::args().skip(1).filter(|a| a != "--");
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--threads" => {
                o.threads = Some(value()?.parse().map_err(|e| format!("--threads: {e}"))?)
            }
            "--reps" => o.reps = value()?.parse().map_err(|e| format!("--reps: {e}"))?,
            "--help" | "-h" => return Err("see the header of examples/perf_mpi.rs".into()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if o.threads == Some(0) || o.reps == 0 {
        return Err("--threads and --reps must be at least 1".into());
    }
    Ok(o)
}

/// The collective with a stopwatch on its allreduces: the gradients' and the others'.
struct Timed<'a> {
    inner: &'a Mpi,
    gradient_len: usize,
    gradients: Cell<f64>,
    other: Cell<f64>,
}

impl Collective<f32> for Timed<'_> {
    fn rank(&self) -> usize {
        Collective::<f32>::rank(self.inner)
    }
    fn size(&self) -> usize {
        Collective::<f32>::size(self.inner)
    }
    fn allreduce_sum(&self, data: &mut [f32]) -> deconv::Result<()> {
        let start = Instant::now();
        let result = self.inner.allreduce_sum(data);
        let bucket = if data.len() == self.gradient_len {
            &self.gradients
        } else {
            &self.other
        };
        bucket.set(bucket.get() + start.elapsed().as_secs_f64());
        result
    }
    fn broadcast(&self, data: &mut [f32], root: usize) -> deconv::Result<()> {
        self.inner.broadcast(data, root)
    }
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = (i as u64)
                .wrapping_mul(6364136223846793005)
                .wrapping_add(seed.wrapping_mul(1442695040888963407));
            ((x >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// The shape's configuration (`Shape::config`) for a batch of `batch` images.
fn config(shape: &shapes::Shape, batch: usize) -> DeconvConfig {
    DeconvConfig::new(
        batch,
        shape.in_channels,
        shape.in_hw,
        shape.in_hw,
        shape.filters,
        shape.kernel,
    )
    .stride(shape.stride)
    .pad(shape.pad)
    .activation(shape.activation)
    .batch_normalize(shape.batch_normalize)
    .seed(1)
}

/// CPU seconds this process has used, all threads (Linux `/proc/self/stat`: utime + stime in
/// clock ticks of 1/100 s), or `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses: utime and stime are the
    // 14th and 15th fields of the line, the 12th and 13th after the name.
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: f64 = rest.next()?.parse().ok()?;
    let stime: f64 = rest.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Every rank's `values`, rank after rank, on every rank.
fn gather(comm: &Mpi, values: &[f64]) -> Vec<f64> {
    let (rank, size) = (Collective::<f64>::rank(comm), Collective::<f64>::size(comm));
    let mut all = vec![0.0; size * values.len()];
    all[rank * values.len()..][..values.len()].copy_from_slice(values);
    comm.allreduce_sum(&mut all).expect("gather");
    all
}

/// One training step: forward, `delta = target - output`, backward, update.
fn step(
    layer: &mut DeconvLayer<f32>,
    input: &[f32],
    target: &[f32],
    args: &UpdateArgs<f32>,
) -> deconv::Result<()> {
    layer.forward(input, Mode::Train)?;
    let (output, delta) = layer.output_and_delta_mut();
    for ((d, &y), &t) in delta.iter_mut().zip(output).zip(target) {
        *d = t - y;
    }
    layer.backward(input, None)?;
    layer.update(args)
}

/// `MPI_Allreduce(MPI_IN_PLACE, data, ...)`, summing f32, on Open MPI.
fn allreduce_in_place(comm: &rsmpi::topology::SimpleCommunicator, data: &mut [f32]) {
    // Open MPI's mpi.h: `#define MPI_IN_PLACE ((void *) 1)`.
    let in_place = std::ptr::without_provenance::<std::ffi::c_void>(1);
    let count = i32::try_from(data.len()).expect("count fits an MPI int");
    // SAFETY: `data` is valid for reads and writes of `count` f32 values, which is what
    // MPI_FLOAT (f32's equivalent datatype) with this count addresses; `in_place` is Open MPI's
    // MPI_IN_PLACE (the caller checked the library is Open MPI), which tells MPI to read the
    // input from the receive buffer; the communicator is a live one and every rank calls this
    // with the same count.
    unsafe {
        rsmpi::ffi::MPI_Allreduce(
            in_place,
            data.as_mut_ptr().cast(),
            count,
            f32::equivalent_datatype().as_raw(),
            SystemOperation::sum().as_raw(),
            comm.as_raw(),
        );
    }
}

fn main() -> Result<(), String> {
    let opts = parse_args()?;
    let (universe, _) = rsmpi::initialize_with_threading(Threading::Funneled)
        .ok_or("MPI was initialized already")?;
    let world = universe.world();
    let local_ranks = world.split_shared(0).size() as usize;
    let raw = world.duplicate();
    let comm = Mpi::new(world.duplicate());
    let result = run(&opts, &comm, &raw, local_ranks);
    drop((comm, raw));
    drop(universe);
    result
}

fn run(
    opts: &Options,
    comm: &Mpi,
    raw: &rsmpi::topology::SimpleCommunicator,
    local_ranks: usize,
) -> Result<(), String> {
    let e = |e: deconv::Error| e.to_string();
    let (rank, ranks) = (Collective::<f32>::rank(comm), Collective::<f32>::size(comm));
    let shape = &shapes::SHAPES[0];
    let global = shape.batch;
    if global < ranks {
        return Err(format!("S1's batch of {global} cannot feed {ranks} ranks"));
    }
    let local = global / ranks + usize::from(rank < global % ranks);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(threads) = opts.threads {
        pool = pool.num_threads(threads);
    } else if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        pool = pool.num_threads((cores / local_ranks).max(1));
    }
    pool.build_global().map_err(|e| e.to_string())?;
    let threads = rayon::current_num_threads();
    let all_threads: usize = gather(comm, &[threads as f64]).iter().sum::<f64>() as usize;

    // The data-parallel layer (this rank's images) and, on rank 0, one process's layer on the
    // whole batch in a pool of all ranks' threads (built inside it: its workspace has a slot
    // per thread).
    let mut layer: DeconvLayer<f32> = DeconvLayer::new(&config(shape, local)).map_err(e)?;
    let g = *layer.geometry();
    let input = random(local * g.inputs(), 1 + rank as u64);
    let target = random(local * g.outputs(), 100 + rank as u64);
    let args = UpdateArgs::sgd(1e-4, 0.9, 0.0005, global);
    let timed = Timed {
        inner: comm,
        gradient_len: layer.gradients().len(),
        gradients: Cell::new(0.0),
        other: Cell::new(0.0),
    };
    let mut dp = DataParallel::new(&layer, &timed).map_err(e)?;
    dp.broadcast_parameters(&mut layer, 0).map_err(e)?;
    let single_pool = rayon::ThreadPoolBuilder::new()
        .num_threads(all_threads)
        .build()
        .map_err(|e| e.to_string())?;
    let mut single = if rank == 0 {
        let layer = single_pool.install(|| DeconvLayer::<f32>::new(&config(shape, global)));
        let layer = layer.map_err(e)?;
        let input = random(global * g.inputs(), 7);
        let target = random(global * g.outputs(), 8);
        Some((layer, input, target))
    } else {
        None
    };

    // Interleaved: a data-parallel step on all ranks, then one process's step on rank 0.
    let (mut dp_step, mut dp_gradients, mut dp_other, mut one) = (vec![], vec![], vec![], vec![]);
    // CPU and wall seconds of the timed data-parallel steps: the cores a rank actually used.
    let (mut dp_cpu, mut dp_wall) = (0.0, 0.0);
    for rep in 0..=opts.reps {
        raw.barrier();
        let (g0, o0) = (timed.gradients.get(), timed.other.get());
        let cpu0 = cpu_seconds();
        let start = Instant::now();
        dp.forward(&mut layer, &input, Mode::Train).map_err(e)?;
        let (output, delta) = layer.output_and_delta_mut();
        for ((d, &y), &t) in delta.iter_mut().zip(output).zip(&target) {
            *d = t - y;
        }
        dp.backward(&mut layer, &input, None).map_err(e)?;
        layer.update(&args).map_err(e)?;
        let seconds = start.elapsed().as_secs_f64();
        if rep > 0 {
            // The first repetition warms up.
            if let (Some(a), Some(b)) = (cpu0, cpu_seconds()) {
                dp_cpu += b - a;
                dp_wall += seconds;
            }
            dp_step.push(seconds);
            dp_gradients.push(timed.gradients.get() - g0);
            dp_other.push(timed.other.get() - o0);
        }

        let done = raw.immediate_barrier();
        if let Some((layer, input, target)) = &mut single {
            let start = Instant::now();
            single_pool.install(|| step(layer, input, target, &args).map_err(e))?;
            if rep > 0 {
                one.push(start.elapsed().as_secs_f64());
            }
            done.wait();
        } else {
            // Sleep, not MPI's busy wait, while rank 0 measures.
            let mut pending = done;
            while let Err(request) = pending.test() {
                pending = request;
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    // The gradients' allreduce alone, five ways, interleaved.
    let n = layer.gradients().len();
    let data = random(n, 3 + rank as u64);
    let (mut work, mut recv, mut scratch) = (data.clone(), vec![0.0f32; n], vec![0.0f32; n]);
    let open_mpi = rsmpi::environment::library_version()
        .map(|v| v.contains("Open MPI"))
        .unwrap_or(false);
    let mut ways: [Vec<f64>; 5] = Default::default();
    for rep in 0..=opts.reps {
        let mut time = |way: usize, f: &mut dyn FnMut()| {
            raw.barrier();
            let start = Instant::now();
            f();
            if rep > 0 {
                ways[way].push(start.elapsed().as_secs_f64());
            }
        };
        work.copy_from_slice(&data);
        time(0, &mut || comm.allreduce_sum(&mut work).expect("allreduce"));
        time(1, &mut || {
            comm.allreduce_sum(&mut [] as &mut [f32])
                .expect("allreduce")
        });
        time(2, &mut || scratch.copy_from_slice(&work));
        time(3, &mut || {
            raw.all_reduce_into(&data[..], &mut recv[..], SystemOperation::sum())
        });
        if open_mpi {
            work.copy_from_slice(&data);
            time(4, &mut || allreduce_in_place(raw, &mut work));
        }
    }

    // The ways sum alike: Mpi's result (copied to `scratch` by way 2), rsmpi's, in place.
    let differ = scratch != recv || (open_mpi && work != recv);
    let differ = gather(comm, &[f64::from(u8::from(differ))]);
    if differ.iter().any(|&d| d != 0.0) {
        return Err(format!(
            "the allreduce ways disagree on the sum (by rank: {differ:?})"
        ));
    }

    // Every rank's medians, on rank 0.
    let mine = [
        local as f64,
        threads as f64,
        cores as f64,
        median(dp_step),
        median(dp_gradients),
        median(dp_other),
        if dp_wall > 0.0 { dp_cpu / dp_wall } else { 0.0 },
    ];
    let per_rank = gather(comm, &mine);
    let way_medians: Vec<f64> = ways
        .iter()
        .map(|w| if w.is_empty() { 0.0 } else { median(w.clone()) })
        .collect();
    // The slowest rank's median for each way.
    let all_ways = gather(comm, &way_medians);
    if rank != 0 {
        return Ok(());
    }
    let ms = |s: f64| s * 1e3;
    let split: Vec<String> = (0..ranks)
        .map(|r| (global / ranks + usize::from(r < global % ranks)).to_string())
        .collect();
    println!(
        "S1 (batch {global}, {} -> {} channels, {}x{}, kernel {}, stride {}, pad {}, batch norm, \
         relu), f32, over {ranks} ranks ({} images); median of {} steps",
        shape.in_channels,
        shape.filters,
        shape.in_hw,
        shape.in_hw,
        shape.kernel,
        shape.stride,
        shape.pad,
        split.join(" + "),
        opts.reps
    );
    println!();
    println!(
        "| rank | images | threads | cores | cores used | step ms | allreduce ms: gradients | batch norm | allreduce share of step |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut slowest = 0.0f64;
    for r in 0..ranks {
        let f = &per_rank[r * 7..][..7];
        slowest = slowest.max(f[3]);
        println!(
            "| {r} | {} | {} | {} | {:.2} | {:.2} | {:.3} | {:.3} | {:.1}% |",
            f[0],
            f[1],
            f[2],
            f[6],
            ms(f[3]),
            ms(f[4]),
            ms(f[5]),
            100.0 * (f[4] + f[5]) / f[3]
        );
    }
    let single = median(one);
    println!();
    println!(
        "data-parallel step over {ranks} ranks: {:.2} ms (the slowest rank); one process on \
         the batch of {global} with {all_threads} threads: {:.2} ms; ratio one process / \
         {ranks} ranks: {:.2}",
        ms(slowest),
        ms(single),
        single / slowest
    );
    if cores < all_threads {
        println!(
            "note: rank 0 may run on {cores} core(s), fewer than the {all_threads} threads of \
             the one-process row, which is slowed down by that (mpirun binds a rank to one \
             core by default: run with --bind-to none)"
        );
    }
    println!();
    let way = |i: usize| (0..ranks).map(|r| all_ways[r * 5 + i]).fold(0.0, f64::max);
    println!(
        "allreduce of S1's gradients alone ({n} f32, {:.1} MiB), the slowest rank's median:",
        (n * 4) as f64 / (1 << 20) as f64
    );
    println!("| way | ms |");
    println!("|---|---|");
    let names = [
        "Mpi::allreduce_sum (agreement check + scratch copy + MPI_Allreduce)",
        "  the agreement check alone (an allreduce of 8 i64)",
        "  the scratch copy alone (memcpy)",
        "rsmpi all_reduce_into, out of place on ready buffers (no copy, no check)",
        "MPI_Allreduce with MPI_IN_PLACE (raw bindings)",
    ];
    for (i, name) in names.iter().enumerate() {
        if i == 4 && !open_mpi {
            println!("| {name} | not measured: not Open MPI |");
        } else {
            println!("| {name} | {:.3} |", ms(way(i)));
        }
    }
    println!(
        "the scratch copy is {:.1}% of Mpi::allreduce_sum and {:.2}% of the data-parallel step",
        100.0 * way(2) / way(0),
        100.0 * way(2) / slowest
    );
    Ok(())
}
