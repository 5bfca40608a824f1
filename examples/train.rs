//! The crate's main job end to end: train a deconvolutional layer with SGD and check that it
//! learns.
//!
//! A fixed random "teacher" layer maps fresh random inputs to targets; a "student" layer
//! (batch norm + leaky, as in a Darknet generator block) starts from a different seed and is
//! trained with the MSE loss to reproduce the teacher. The teacher is in the student's function
//! class (leaky activation, bias, no batch norm: batch norm's scale and shift can absorb the
//! normalization), so the loss can fall far, not just a little.
//!
//! ```text
//! cargo run --release --example train
//! cargo run --release --example train -- --steps 500 --lr 0.02
//! cargo run --release --example train --no-default-features --features openblas
//! ```
//!
//! Every step draws a new batch, and the printed loss is measured *before* that batch's update,
//! so it is a held-out loss, not a memorization score. It does not reach zero: batch norm trains
//! on each batch's own mean and variance, which differ a little from batch to batch, so the loss
//! levels off around 1e-3 with some spikes. The example exits with an error when the final loss
//! is not below the first one, so it doubles as a smoke test.

use deconv::{Activation, COMPILED_BACKENDS, DeconvConfig, DeconvLayer, Mode, UpdateArgs};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal, Uniform};
use std::fmt;
use std::time::Instant;

/// The error `main` returns: any displayable error, printed as its message (`Box<dyn Error>`
/// would print its `Debug` form, quoted and with `\n` escapes).
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
}

const USAGE: &str =
    "usage: train [--steps N] [--lr X] [--momentum X] [--decay X] [--seed N] [--print-every N]";

impl Options {
    fn parse() -> Result<Self, Failure> {
        let mut o = Options {
            steps: 200,
            learning_rate: 0.001,
            momentum: 0.9,
            decay: 0.0005,
            seed: 42,
            print_every: 0, // 0: steps / 10
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            if flag == "-h" || flag == "--help" {
                println!("{USAGE}");
                std::process::exit(0);
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
                _ => return Err(format!("unknown argument {flag}\n{USAGE}").into()),
            }
        }
        if o.steps == 0 {
            return Err(format!("--steps must be at least 1\n{USAGE}").into());
        }
        if o.print_every == 0 {
            o.print_every = (o.steps / 10).max(1);
        }
        Ok(o)
    }
}

/// Mean squared error, accumulated in f64.
fn mse(output: &[f32], target: &[f32]) -> f64 {
    let sum: f64 = output
        .iter()
        .zip(target)
        .map(|(&y, &t)| (f64::from(y) - f64::from(t)).powi(2))
        .sum();
    sum / output.len() as f64
}

fn main() -> Result<(), Failure> {
    let opts = Options::parse()?;

    // 8 images of 8 channels 8x8 -> 4 channels 16x16 (kernel 4, stride 2, pad 1: a 2x upsampler).
    let batch = 8;
    let student_config = DeconvConfig::new(batch, 8, 8, 8, 4, 4)
        .stride(2)
        .pad(1)
        .batch_normalize(true)
        .activation(Activation::Leaky)
        .seed(opts.seed);
    let teacher_config = student_config
        .clone()
        .batch_normalize(false)
        .seed(opts.seed.wrapping_add(1_000_003));

    let mut student: DeconvLayer<f32> = DeconvLayer::new(&student_config)?;
    let mut teacher: DeconvLayer<f32> = DeconvLayer::new(&teacher_config)?;
    let g = *student.geometry();

    // The default init (N(0, .02) scaled by out_area / in_area = 4) gives the teacher outputs of
    // about 0.1: scale its weights up to outputs of order 1 and give it random biases, so the
    // targets are neither tiny nor centered.
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed.wrapping_add(7));
    teacher.weights_mut().iter_mut().for_each(|w| *w *= 5.0);
    let bias_dist = Uniform::new(-0.5f32, 0.5)?;
    for b in teacher.biases_mut() {
        *b = bias_dist.sample(&mut rng);
    }

    let args = UpdateArgs::sgd(opts.learning_rate, opts.momentum, opts.decay, batch);
    let mut input = vec![0.0f32; g.batch() * g.inputs()];
    let mut target = vec![0.0f32; g.batch() * g.outputs()];
    let mut losses = Vec::with_capacity(opts.steps);

    println!(
        "training: {} steps, SGD lr {} momentum {} decay {}, batch {batch}",
        opts.steps, opts.learning_rate, opts.momentum, opts.decay
    );
    let start = Instant::now();
    for step in 1..=opts.steps {
        input
            .iter_mut()
            .for_each(|x| *x = StandardNormal.sample(&mut rng));
        target.copy_from_slice(teacher.forward(&input, Mode::Inference)?);

        student.forward(&input, Mode::Train)?;
        let (output, delta) = student.output_and_delta_mut();
        let loss = mse(output, &target);
        // delta = -dLoss/dOutput for 0.5 * |output - target|^2 (Darknet's convention).
        for ((d, &y), &t) in delta.iter_mut().zip(output).zip(&target) {
            *d = t - y;
        }
        // First layer of the "network": no input gradient needed.
        student.backward(&input, None)?;
        student.update(&args)?;

        if !loss.is_finite() {
            return Err(format!("step {step}: loss is {loss}; try a smaller --lr").into());
        }
        losses.push(loss);
        if step == 1 || step % opts.print_every == 0 || step == opts.steps {
            println!("step {step:>5}  loss {loss:.6}");
        }
    }
    let elapsed = start.elapsed();

    let first = losses[0];
    let last = *losses.last().expect("at least one step");
    // Mean of the last tenth, less noisy than the last batch alone.
    let tail = &losses[losses.len() - (losses.len() / 10).max(1)..];
    let tail_mean = tail.iter().sum::<f64>() / tail.len() as f64;
    let target_energy = mse(&target, &vec![0.0; target.len()]);

    println!();
    println!(
        "geometry:  batch {} x {} ch {}x{} -> {} ch {}x{}  (kernel {:?}, stride {:?}, pad {:?}), batch norm + {:?}",
        g.batch(),
        g.in_channels(),
        g.in_h(),
        g.in_w(),
        g.filters(),
        g.out_h(),
        g.out_w(),
        g.kernel(),
        g.stride(),
        g.pad(),
        student.activation(),
    );
    println!(
        "backend:   {} (compiled in: {})",
        student.backend().name(),
        COMPILED_BACKENDS.join(", ")
    );
    println!("threads:   {} (rayon)", rayon::current_num_threads());
    println!(
        "loss:      first {first:.6}, final {last:.6}, mean of last {} steps {tail_mean:.6}  (mean target^2 of the last batch: {target_energy:.6})",
        tail.len()
    );
    println!(
        "time:      {:.3} s for {} steps ({:.2} ms/step, forward + backward + update + teacher forward)",
        elapsed.as_secs_f64(),
        opts.steps,
        elapsed.as_secs_f64() * 1e3 / opts.steps as f64
    );

    if last < first {
        println!(
            "ok: the loss fell to {:.1}% of its first value",
            100.0 * last / first
        );
        Ok(())
    } else {
        Err(format!("the loss did not fall: first {first}, final {last}").into())
    }
}
