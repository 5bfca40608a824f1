//! The speed of the activations that call `exp`, `expm1` or `tanh`, alone on one large buffer:
//! the crate's kernels (`Activation::activate_slice`, the loop the layer's epilogue runs) against
//! the same formulas with libm's functions (the crate's implementation before its own `exp`),
//! chunked and parallelized the same way, timed alternately in one run. `leaky` is the
//! yardstick of a loop that only moves the bytes.
//!
//! ```text
//! cargo run --release --example activation_speed -- --threads 2
//! cargo run --release --example activation_speed -- --threads 1 --len 4194304 --reps 9
//! ```
//!
//! Options: `--threads N` (rayon pool, default all cores), `--len N` (elements, default 2^24),
//! `--reps N` (alternating rounds, median reported, default 7).

use deconv::{Activation, Element};
use rayon::prelude::*;
use std::time::Instant;

/// The crate's parallel split (`activation.rs`): chunks of 4096 above 32768 elements.
const PAR_THRESHOLD: usize = 1 << 15;
const PAR_CHUNK: usize = 4096;

/// The formulas as `Activation::activate` had them with libm.
fn libm_activate<T: Element>(act: Activation, x: T) -> T {
    let (zero, one) = (T::zero(), T::one());
    let two = one + one;
    match act {
        Activation::Logistic => one / (one + (-x).exp()),
        Activation::Tanh => x.tanh(),
        Activation::Elu => {
            if x >= zero {
                x
            } else {
                x.exp_m1()
            }
        }
        Activation::Loggy => two / (one + (-x).exp()) - one,
        Activation::Selu => {
            if x >= zero {
                T::of(1.0507) * x
            } else {
                T::of(1.0507 * 1.6732) * x.exp_m1()
            }
        }
        _ => act.activate(x),
    }
}

fn libm_slice<T: Element>(act: Activation, data: &mut [T]) {
    let apply = |c: &mut [T]| c.iter_mut().for_each(|v| *v = libm_activate(act, *v));
    if data.len() > PAR_THRESHOLD {
        data.par_chunks_mut(PAR_CHUNK).for_each(apply);
    } else {
        apply(data);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Milliseconds of `f` on a fresh copy of `input` (the copy is not timed).
fn time<T: Element>(input: &[T], buf: &mut [T], f: &dyn Fn(&mut [T])) -> f64 {
    buf.copy_from_slice(input);
    let start = Instant::now();
    f(buf);
    start.elapsed().as_secs_f64() * 1e3
}

fn run<T: Element>(len: usize, reps: usize) {
    // Pre-activations as a layer produces them: mostly in [-4, 4], some far out.
    let input: Vec<T> = (0..len)
        .map(|i| {
            let u = ((i as f64) * 0.618_033_988_749_895).fract();
            T::of((u - 0.5) * if i % 64 == 0 { 200.0 } else { 8.0 })
        })
        .collect();
    let mut buf = input.clone();
    let name = std::any::type_name::<T>();
    let bytes = (2 * len * size_of::<T>()) as f64;
    let leaky = {
        let f = |d: &mut [T]| Activation::Leaky.activate_slice(d);
        time(&input, &mut buf, &f);
        median((0..reps).map(|_| time(&input, &mut buf, &f)).collect())
    };
    println!(
        "{name:<4} leaky (bytes only)  {leaky:8.3} ms  {:6.1} GB/s",
        bytes / leaky / 1e6
    );
    for act in [
        Activation::Logistic,
        Activation::Tanh,
        Activation::Elu,
        Activation::Loggy,
        Activation::Selu,
    ] {
        let new = |d: &mut [T]| act.activate_slice(d);
        let old = |d: &mut [T]| libm_slice(act, d);
        time(&input, &mut buf, &new);
        time(&input, &mut buf, &old);
        let (mut t_new, mut t_old) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            t_old.push(time(&input, &mut buf, &old));
            t_new.push(time(&input, &mut buf, &new));
        }
        let (t_new, t_old) = (median(t_new), median(t_old));
        println!(
            "{name:<4} {act:<8} libm {t_old:8.3} ms  new {t_new:8.3} ms  libm/new {:5.1}x  \
             new {:6.1} GB/s",
            t_old / t_new,
            bytes / t_new / 1e6
        );
    }
}

fn main() {
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (mut len, mut reps) = (1usize << 24, 7usize);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a positive integer"))
        };
        match arg.as_str() {
            "--threads" => threads = value("--threads"),
            "--len" => len = value("--len"),
            "--reps" => reps = value("--reps").max(1),
            other => panic!("unknown option {other} (see the file's documentation)"),
        }
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    println!(
        "{len} elements, {threads} thread(s), median of {reps} alternating rounds \
         (time of one activate_slice call)"
    );
    pool.install(|| {
        run::<f32>(len, reps);
        run::<f64>(len, reps);
    });
}
