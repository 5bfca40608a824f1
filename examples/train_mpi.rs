//! The main job of `examples/train.rs`, data-parallel over MPI ranks (feature `mpi`): the same
//! teacher-student training, each step's global batch split over the ranks (uneven splits
//! too), the gradients summed by one allreduce, batch norm synchronized.
//!
//! ```text
//! cargo build --release --features mpi --example train_mpi
//! mpirun -np 2 target/release/examples/train_mpi
//! mpirun -np 3 --oversubscribe target/release/examples/train_mpi -- --batch 8 --steps 100
//! ```
//! (as root, Open MPI also wants `OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1`).
//!
//! Rank 0 prints the global loss at each print step with each rank's own, then a table of
//! every rank's figures (images, threads, cores it may run on, time per step, the allreduce's
//! time and share of the step). Then it checks, and exits non-zero on any failure (every rank
//! exits the same way):
//! - that the ranks agree: every rank's parameters and rolling statistics equal rank 0's bit
//!   for bit (rank 0's broadcast, compared on every rank; each rank's hash is printed too);
//! - that the result equals one process on the global batch: rank 0 runs the same job again on
//!   one layer in-process and compares weights, biases, scales, rolling statistics and the
//!   losses so far, each relative to its largest value, after `--check-step` steps (default 50)
//!   within `--tolerance` (default 1e-6: the bound of issue 8 for f32 after 50 steps). The
//!   difference after the last step is printed too; f32 rounding (sums taken in another order)
//!   keeps growing with the steps, on one rank as on several;
//! - that the loss fell, as `train` does.
//!
//! Options: those of `train` (`--steps`, `--lr`, `--momentum`, `--decay`, `--seed`,
//! `--print-every`), and `--batch N` (the global batch, default 8 as `train`), `--threads N`
//! (rayon threads per rank; default `RAYON_NUM_THREADS`, else the cores this rank may run on
//! divided by the ranks on its node, at least 1), `--check-step N`, `--tolerance X`.
//!
//! MPI calls are made on the main thread only (the layer's threads are rayon's), so MPI is
//! initialized with `Threading::Funneled`.

use deconv::distributed::rsmpi::environment::Threading;
use deconv::distributed::rsmpi::traits::Communicator;
use deconv::distributed::{Collective, DataParallel, Mpi, rsmpi};
use deconv::{Activation, DeconvConfig, DeconvLayer, Mode, UpdateArgs};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal, Uniform};
use std::cell::Cell;
use std::fmt;
use std::time::Instant;

/// The error `main` returns: any displayable error, printed as its message.
struct Failure(String);

impl<E: fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Command-line options, all optional.
struct Options {
    steps: usize,
    learning_rate: f32,
    momentum: f32,
    decay: f32,
    seed: u64,
    print_every: usize,
    batch: usize,
    threads: Option<usize>,
    check_step: usize,
    tolerance: f64,
}

/// How far above the rounding floor (one process against itself with the images of each batch
/// in another order) the ranks' result may be from one process's.
const FLOOR_FACTOR: f64 = 4.0;

const USAGE: &str = "usage: train_mpi [--steps N] [--lr X] [--momentum X] [--decay X] [--seed N] \
                     [--print-every N] [--batch N] [--threads N] [--check-step N] \
                     [--tolerance X]";

impl Options {
    fn parse() -> Result<Self, String> {
        let mut o = Options {
            steps: 200,
            learning_rate: 0.001,
            momentum: 0.9,
            decay: 0.0005,
            seed: 42,
            print_every: 0, // 0: steps / 10
            batch: 8,
            threads: None,
            check_step: 50,
            tolerance: 1e-6,
        };
        // mpirun passes a lone `--` through; skip it.
        let mut args = std::env::args().skip(1).filter(|a| a != "--");
        while let Some(flag) = args.next() {
            if flag == "-h" || flag == "--help" {
                return Err(USAGE.into());
            }
            let value = args
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            let bad = |e: &dyn fmt::Display| format!("{flag} {value}: {e}\n{USAGE}");
            match flag.as_str() {
                "--steps" => o.steps = value.parse().map_err(|e| bad(&e))?,
                "--lr" => o.learning_rate = value.parse().map_err(|e| bad(&e))?,
                "--momentum" => o.momentum = value.parse().map_err(|e| bad(&e))?,
                "--decay" => o.decay = value.parse().map_err(|e| bad(&e))?,
                "--seed" => o.seed = value.parse().map_err(|e| bad(&e))?,
                "--print-every" => o.print_every = value.parse().map_err(|e| bad(&e))?,
                "--batch" => o.batch = value.parse().map_err(|e| bad(&e))?,
                "--threads" => o.threads = Some(value.parse().map_err(|e| bad(&e))?),
                "--check-step" => o.check_step = value.parse().map_err(|e| bad(&e))?,
                "--tolerance" => o.tolerance = value.parse().map_err(|e| bad(&e))?,
                _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
            }
        }
        if o.steps == 0 || o.batch == 0 || o.threads == Some(0) || o.check_step == 0 {
            return Err(format!(
                "--steps, --batch, --threads and --check-step must be at least 1\n{USAGE}"
            ));
        }
        o.check_step = o.check_step.min(o.steps);
        if o.print_every == 0 {
            o.print_every = (o.steps / 10).max(1);
        }
        Ok(o)
    }
}

/// The student's configuration for `batch` images: `train`'s layer.
fn student_config(batch: usize, seed: u64) -> DeconvConfig {
    DeconvConfig::new(batch, 8, 8, 8, 4, 4)
        .stride(2)
        .pad(1)
        .batch_normalize(true)
        .activation(Activation::Leaky)
        .seed(seed)
}

/// The data of `train`: a fixed teacher layer, fresh random inputs every step (the whole
/// global batch, drawn the same way on every rank), the teacher's outputs as targets.
struct Job {
    teacher: DeconvLayer<f32>,
    rng: ChaCha8Rng,
    input: Vec<f32>,
    target: Vec<f32>,
}

impl Job {
    fn new(global: usize, seed: u64) -> Result<Self, Failure> {
        let teacher_config = student_config(global, seed)
            .batch_normalize(false)
            .seed(seed.wrapping_add(1_000_003));
        let mut teacher: DeconvLayer<f32> = DeconvLayer::new(&teacher_config)?;
        // As `train`: outputs of order 1 and random biases.
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(7));
        teacher.weights_mut().iter_mut().for_each(|w| *w *= 5.0);
        let bias_dist = Uniform::new(-0.5f32, 0.5)?;
        for b in teacher.biases_mut() {
            *b = bias_dist.sample(&mut rng);
        }
        let g = *teacher.geometry();
        Ok(Job {
            teacher,
            rng,
            input: vec![0.0; g.batch() * g.inputs()],
            target: vec![0.0; g.batch() * g.outputs()],
        })
    }

    /// The next step's global batch.
    fn next(&mut self) -> Result<(), Failure> {
        for x in &mut self.input {
            *x = StandardNormal.sample(&mut self.rng);
        }
        self.target
            .copy_from_slice(self.teacher.forward(&self.input, Mode::Inference)?);
        Ok(())
    }
}

/// The collective with a stopwatch: seconds spent in allreduces (waiting for slower ranks
/// included), the gradients' apart from batch norm's small ones.
struct Timed<'a> {
    inner: &'a Mpi,
    gradient_len: usize,
    gradients: Cell<f64>,
    other: Cell<f64>,
    calls: Cell<usize>,
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
        let seconds = start.elapsed().as_secs_f64();
        let bucket = if data.len() == self.gradient_len {
            &self.gradients
        } else {
            &self.other
        };
        bucket.set(bucket.get() + seconds);
        self.calls.set(self.calls.get() + 1);
        result
    }
    fn broadcast(&self, data: &mut [f32], root: usize) -> deconv::Result<()> {
        self.inner.broadcast(data, root)
    }
}

/// Every rank's `values` on every rank, rank after rank (a gather, as a sum of zero-padded
/// rows).
fn gather(comm: &Mpi, values: &[f64]) -> Result<Vec<f64>, Failure> {
    let (rank, size) = (Collective::<f64>::rank(comm), Collective::<f64>::size(comm));
    let mut all = vec![0.0; size * values.len()];
    all[rank * values.len()..][..values.len()].copy_from_slice(values);
    comm.allreduce_sum(&mut all)?;
    Ok(all)
}

/// Everything the ranks must agree on, and the reference must match: name and values.
fn state(layer: &DeconvLayer<f32>) -> Vec<(&'static str, Vec<f32>)> {
    let or_empty = |v: Option<&[f32]>| v.unwrap_or_default().to_vec();
    vec![
        ("weights", layer.weights().to_vec()),
        ("biases", layer.biases().to_vec()),
        ("scales", or_empty(layer.scales())),
        ("rolling_mean", or_empty(layer.rolling_mean())),
        ("rolling_variance", or_empty(layer.rolling_variance())),
    ]
}

/// One process on the global batch from `initial` weights and biases, each batch's images in
/// `order`: the state with the losses so far after `--check-step` steps, and after the last.
type Snapshot = Vec<(&'static str, Vec<f64>)>;
fn single_process(
    opts: &Options,
    (weights, biases): &(Vec<f32>, Vec<f32>),
    order: &[usize],
) -> Result<(Snapshot, Snapshot), Failure> {
    let global = order.len();
    let mut layer: DeconvLayer<f32> = DeconvLayer::new(&student_config(global, opts.seed))?;
    layer.weights_mut().copy_from_slice(weights);
    layer.biases_mut().copy_from_slice(biases);
    let g = *layer.geometry();
    let (inputs, outputs) = (g.inputs(), g.outputs());
    let args = UpdateArgs::sgd(opts.learning_rate, opts.momentum, opts.decay, global);
    let mut job = Job::new(global, opts.seed)?;
    let (mut input, mut target) = (job.input.clone(), job.target.clone());
    let (mut losses, mut at_check) = (Vec::with_capacity(opts.steps), Vec::new());
    for step in 1..=opts.steps {
        job.next()?;
        for (to, &from) in order.iter().enumerate() {
            input[to * inputs..][..inputs].copy_from_slice(&job.input[from * inputs..][..inputs]);
            target[to * outputs..][..outputs]
                .copy_from_slice(&job.target[from * outputs..][..outputs]);
        }
        layer.forward(&input, Mode::Train)?;
        let (output, delta) = layer.output_and_delta_mut();
        losses.push(squared_error(output, &target, delta) / (global * outputs) as f64);
        layer.backward(&input, None)?;
        layer.update(&args)?;
        if step == opts.check_step {
            at_check = widen(state(&layer), &losses);
        }
    }
    Ok((at_check, widen(state(&layer), &losses)))
}

/// FNV-1a over the bits of every value.
fn hash(state: &[(&str, Vec<f32>)]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for (_, values) in state {
        for v in values {
            for byte in v.to_bits().to_le_bytes() {
                h = (h ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    h
}

/// Mean squared error's sum, in f64, and `delta = target - output` (Darknet's sign of
/// `-dLoss/dOutput` for `0.5 * |output - target|^2`).
fn squared_error(output: &[f32], target: &[f32], delta: &mut [f32]) -> f64 {
    let mut sum = 0.0;
    for ((d, &y), &t) in delta.iter_mut().zip(output).zip(target) {
        *d = t - y;
        sum += (f64::from(y) - f64::from(t)).powi(2);
    }
    sum
}

/// The largest difference of each part relative to that part's largest value.
fn worst_relative<'a>(got: &[(&'a str, Vec<f64>)], want: &[(&str, Vec<f64>)]) -> (&'a str, f64) {
    let mut worst = ("none", 0.0f64);
    for ((name, x), (_, y)) in got.iter().zip(want) {
        let scale = y.iter().fold(f64::MIN_POSITIVE, |m, v| m.max(v.abs()));
        let diff = x
            .iter()
            .zip(y)
            .fold(0.0f64, |m, (a, b)| m.max(distance(*a, *b)));
        if diff / scale > worst.1 {
            worst = (name, diff / scale);
        }
    }
    worst
}

/// A state in f64, with the losses as one more part.
fn widen(state: Vec<(&'static str, Vec<f32>)>, losses: &[f64]) -> Snapshot {
    let mut wide: Vec<_> = state
        .into_iter()
        .map(|(name, v)| (name, v.into_iter().map(f64::from).collect()))
        .collect();
    wide.push(("losses", losses.to_vec()));
    wide
}

/// Rank 0's verdict on every rank: `Err(message)` on all when it failed.
fn shared_verdict(comm: &Mpi, failed: Option<String>) -> Result<(), Failure> {
    let mut flag = [f64::from(u8::from(failed.is_some()))];
    comm.broadcast(&mut flag, 0)?;
    match (flag[0] != 0.0, failed) {
        (false, _) => Ok(()),
        (true, Some(message)) => Err(Failure(message)),
        (true, None) => Err(Failure("failed: see rank 0's message".into())),
    }
}

fn main() -> Result<(), Failure> {
    let opts = Options::parse().map_err(Failure)?;
    let (universe, _) = rsmpi::initialize_with_threading(Threading::Funneled)
        .ok_or("MPI was initialized already")?;
    let world = universe.world();
    let local_ranks = world.split_shared(0).size() as usize;
    let comm = Mpi::new(world.duplicate());
    let result = run(&opts, &comm, local_ranks);
    // Every rank reaches here with the same verdict (all failures are shared first), so every
    // rank finalizes MPI; an error is printed by `main`'s return.
    drop(comm);
    drop(universe);
    result
}

fn run(opts: &Options, comm: &Mpi, local_ranks: usize) -> Result<(), Failure> {
    let (rank, ranks) = (Collective::<f32>::rank(comm), Collective::<f32>::size(comm));
    let global = opts.batch;
    if global < ranks {
        return Err(format!("--batch {global} gives no image to some of the {ranks} ranks").into());
    }
    // Uneven splits: the first `global % ranks` ranks take one image more.
    let local = global / ranks + usize::from(rank < global % ranks);
    let first = rank * (global / ranks) + rank.min(global % ranks);

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(threads) = opts.threads {
        pool = pool.num_threads(threads);
    } else if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        pool = pool.num_threads((cores / local_ranks).max(1));
    }
    pool.build_global()?;
    let threads = rayon::current_num_threads();

    let mut student: DeconvLayer<f32> = DeconvLayer::new(&student_config(local, opts.seed))?;
    let g = *student.geometry();
    let timed = Timed {
        inner: comm,
        gradient_len: student.gradients().len(),
        gradients: Cell::new(0.0),
        other: Cell::new(0.0),
        calls: Cell::new(0),
    };
    let mut dp = DataParallel::new(&student, &timed)?;
    dp.broadcast_parameters(&mut student, 0)?;
    // Rank 0 keeps the initial parameters for its single-process reference runs.
    let initial = (rank == 0).then(|| (student.weights().to_vec(), student.biases().to_vec()));

    let args = UpdateArgs::sgd(opts.learning_rate, opts.momentum, opts.decay, global);
    let mut job = Job::new(global, opts.seed)?;
    let (inputs, outputs) = (g.inputs(), g.outputs());
    let mut losses = Vec::with_capacity(opts.steps);
    if rank == 0 {
        println!(
            "training over {ranks} ranks: {} steps, SGD lr {} momentum {} decay {}, global batch \
             {global} (per rank: {})",
            opts.steps,
            opts.learning_rate,
            opts.momentum,
            opts.decay,
            (0..ranks)
                .map(|r| (global / ranks + usize::from(r < global % ranks)).to_string())
                .collect::<Vec<_>>()
                .join(" + ")
        );
    }
    let mut step_seconds = 0.0;
    // The state after `--check-step` steps, with the losses so far.
    let mut at_check = Vec::new();
    for step in 1..=opts.steps {
        job.next()?;
        let input = &job.input[first * inputs..][..local * inputs];
        let target = &job.target[first * outputs..][..local * outputs];

        let start = Instant::now();
        dp.forward(&mut student, input, Mode::Train)?;
        let (output, delta) = student.output_and_delta_mut();
        let sse = squared_error(output, target, delta);
        dp.backward(&mut student, input, None)?;
        student.update(&args)?;
        step_seconds += start.elapsed().as_secs_f64();

        // Each rank's squared error, gathered: the global loss and each rank's own.
        let per_rank = gather(comm, &[sse])?;
        let loss = per_rank.iter().sum::<f64>() / (global * outputs) as f64;
        if !loss.is_finite() {
            return Err(format!("step {step}: loss is {loss}; try a smaller --lr").into());
        }
        losses.push(loss);
        if step == opts.check_step {
            at_check = widen(state(&student), &losses);
        }
        if rank == 0 && (step == 1 || step % opts.print_every == 0 || step == opts.steps) {
            let own: Vec<String> = per_rank
                .iter()
                .enumerate()
                .map(|(r, &s)| {
                    let images = global / ranks + usize::from(r < global % ranks);
                    format!("rank {r} {:.6}", s / (images * outputs) as f64)
                })
                .collect();
            println!("step {step:>5}  loss {loss:.6}  ({})", own.join(", "));
        }
    }

    // Every rank's figures, on rank 0.
    let steps = opts.steps as f64;
    let figures = gather(
        comm,
        &[
            local as f64,
            threads as f64,
            cores as f64,
            step_seconds / steps,
            timed.gradients.get() / steps,
            timed.other.get() / steps,
            timed.calls.get() as f64 / steps,
        ],
    )?;
    let mine = state(&student);
    let my_hash = hash(&mine);
    // The hash in four exact 16-bit parts.
    let hashes = gather(
        comm,
        &[0, 16, 32, 48].map(|s| ((my_hash >> s) & 0xffff) as f64),
    )?;
    if rank == 0 {
        println!();
        println!(
            "rank  images  threads  cores  ms/step  allreduce ms/step: gradients + batch norm \
             (calls)  share of step  parameter hash"
        );
        for r in 0..ranks {
            let f = &figures[r * 7..][..7];
            let h = (0..4).fold(0u64, |h, i| h | ((hashes[r * 4 + i] as u64) << (16 * i)));
            println!(
                "{r:>4}  {:>6}  {:>7}  {:>5}  {:>7.3}  {:>17.3} + {:.3} ({:.0})  {:>21.1}%  {h:016x}",
                f[0],
                f[1],
                f[2],
                f[3] * 1e3,
                f[4] * 1e3,
                f[5] * 1e3,
                f[6],
                100.0 * (f[4] + f[5]) / f[3],
            );
        }
        let slowest = (0..ranks)
            .map(|r| figures[r * 7 + 3])
            .fold(0.0f64, f64::max);
        println!(
            "global: {global} images per step, {:.3} ms/step (the slowest rank), {:.0} images/s; \
             loss first {:.6}, final {:.6}",
            slowest * 1e3,
            global as f64 / slowest,
            losses[0],
            losses[losses.len() - 1]
        );
        println!(
            "(a step is forward + backward + update; the allreduce time includes waiting for \
             slower ranks)"
        );
        if figures.chunks(7).any(|f| f[1] > f[2]) {
            println!(
                "note: a rank runs more threads than the cores it may run on (mpirun binds a \
                 rank to one core by default: add --bind-to none, or use fewer threads)"
            );
        }
    }

    // 1. The ranks agree bit for bit with rank 0.
    let mut differing = 0usize;
    for (_, values) in &mine {
        let mut root = values.clone();
        comm.broadcast(&mut root, 0)?;
        differing += root
            .iter()
            .zip(values)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
    }
    let disagree = gather(comm, &[differing as f64])?;
    if disagree.iter().any(|&d| d != 0.0) {
        let by_rank: Vec<String> = disagree
            .iter()
            .enumerate()
            .map(|(r, d)| format!("rank {r}: {d}"))
            .collect();
        return Err(format!(
            "the ranks disagree: values that differ from rank 0's ({})",
            by_rank.join(", ")
        )
        .into());
    }
    if rank == 0 {
        println!(
            "agree: all {ranks} ranks hold the same {} values, bit for bit",
            mine.iter().map(|(_, v)| v.len()).sum::<usize>()
        );
    }

    // 2. One process on the global batch, run again by rank 0 from the same parameters.
    let mut failed = None;
    if let Some(initial) = &initial {
        let identity: Vec<usize> = (0..global).collect();
        let (single_at_check, single_at_end) = single_process(opts, initial, &identity)?;
        let (part, rel) = worst_relative(&at_check, &single_at_check);
        let (end_part, end_rel) = worst_relative(&widen(mine.clone(), &losses), &single_at_end);
        // The f32 rounding floor: one process against itself, each batch's images in another
        // order (the same sums, taken in another order).
        let mut orders: Vec<Vec<usize>> = vec![(0..global).rev().collect()];
        for shift in [1, global / 2] {
            orders.push((0..global).map(|i| (i + shift) % global).collect());
        }
        orders.retain(|o| o != &identity);
        orders.dedup();
        let mut floor = 0.0f64;
        for order in &orders {
            let (permuted, _) = single_process(opts, initial, order)?;
            floor = floor.max(worst_relative(&permuted, &single_at_check).1);
        }
        let bound = opts.tolerance.max(FLOOR_FACTOR * floor);
        println!(
            "equal to one process on the global batch of {global} (rank 0 ran it again): after {} \
             steps the largest relative difference is {rel:.3e} ({part}); after all {} steps \
             {end_rel:.3e} ({end_part})",
            opts.check_step, opts.steps,
        );
        println!(
            "    f32 rounding floor after {} steps: one process against itself with each batch \
             in {} other image orders differs by up to {floor:.3e}; bound max({:.0e}, \
             {FLOOR_FACTOR} x floor) = {bound:.3e}",
            opts.check_step,
            orders.len(),
            opts.tolerance
        );
        if rel > bound {
            failed = Some(format!(
                "not equal to one process: after {} steps, {part} off by {rel:e} relative \
                 (bound {bound:e})",
                opts.check_step
            ));
        }
    }
    shared_verdict(comm, failed)?;

    // 3. It learns, as `train`.
    let (first_loss, last_loss) = (losses[0], losses[losses.len() - 1]);
    if last_loss >= first_loss {
        return Err(format!("the loss did not fall: first {first_loss}, final {last_loss}").into());
    }
    if rank == 0 {
        println!(
            "ok: the ranks agree, equal one process, and the loss fell to {:.1}% of its first value",
            100.0 * last_loss / first_loss
        );
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
