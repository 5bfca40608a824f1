//! Resident memory of one layer by thread count: the process's peak resident set (`VmHWM`)
//! after building a layer and running a forward and a backward pass on 1, 2, 8 and 16 rayon
//! threads, each in a fresh process, and of the same layer built for inference only.
//!
//! ```sh
//! cargo run --release --example memory                 # the table; fails past 2x
//! cargo run --release --example memory -- --threads 8  # one run
//! ```
//!
//! The layer is `DeconvConfig::new(16, 1024, 2, 2, 512, 4)`: 32 MB of weights, whose per-thread
//! weight-gradient sums once made 16 threads hold 8x the memory of one (issue #10). Exits with
//! an error when 16 threads hold more than twice the memory of one, or when the inference-only
//! layer holds the gradient state.

use deconv::{DeconvConfig, DeconvLayer, Mode};
use std::process::Command;

fn config() -> DeconvConfig {
    DeconvConfig::new(16, 1024, 2, 2, 512, 4)
}

/// `VmHWM` (peak resident set) of this process in KiB, from `/proc/self/status`.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One run in this process: prints `threads layer_bytes peak_kib`.
fn run(threads: usize, training: bool) -> Result<(), Box<dyn std::error::Error>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let bytes = pool.install(|| -> deconv::Result<usize> {
        let mut layer: DeconvLayer<f32> = DeconvLayer::new(&config().training(training))?;
        let g = *layer.geometry();
        let input: Vec<f32> = (0..g.batch() * g.inputs())
            .map(|i| (i as f32 * 0.01).sin())
            .collect();
        if training {
            layer.forward(&input, Mode::Train)?;
            layer.delta_mut().fill(0.01);
            layer.backward(&input, None)?;
        } else {
            layer.forward(&input, Mode::Inference)?;
        }
        Ok(layer.memory_bytes())
    })?;
    let peak = peak_rss_kib().ok_or("no /proc/self/status here")?;
    println!("{threads} {bytes} {peak}");
    Ok(())
}

/// Runs this program again for one thread count and reads its line.
fn measure(threads: usize, training: bool) -> Result<(usize, u64), Box<dyn std::error::Error>> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["--threads", &threads.to_string()]);
    if !training {
        cmd.arg("--inference-only");
    }
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!(
            "the run on {threads} threads failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let text = String::from_utf8(out.stdout)?;
    let fields: Vec<&str> = text.split_whitespace().collect();
    match fields[..] {
        [_, bytes, peak] => Ok((bytes.parse()?, peak.parse()?)),
        _ => Err(format!("unexpected output {text:?}").into()),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--threads") {
        let threads = args.get(i + 1).ok_or("--threads needs a value")?.parse()?;
        return run(threads, !args.iter().any(|a| a == "--inference-only"));
    }
    if !args.is_empty() {
        return Err(format!("unknown arguments {args:?}; try --threads N").into());
    }
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("layer {:?}", config());
    println!("| threads | layer's buffers (MiB) | peak resident (MiB) | vs 1 thread |");
    println!("|---|---|---|---|");
    let mut one = None;
    let mut last = 0.0;
    for threads in [1, 2, 8, 16] {
        let (bytes, peak) = measure(threads, true)?;
        let base = *one.get_or_insert(peak);
        last = peak as f64 / base as f64;
        println!(
            "| {threads} | {:.1} | {:.1} | {last:.2}x |",
            bytes as f64 / (1 << 20) as f64,
            mib(peak)
        );
    }
    let (bytes, peak) = measure(16, false)?;
    println!(
        "| 16, training(false) | {:.1} | {:.1} | {:.2}x |",
        bytes as f64 / (1 << 20) as f64,
        mib(peak),
        peak as f64 / one.unwrap_or(1) as f64
    );
    if last > 2.0 {
        return Err(
            format!("16 threads hold {last:.2}x the memory of 1 (target: at most 2x)").into(),
        );
    }
    let weights_bytes = config().geometry()?.weight_count() * 4;
    let g = config().geometry()?;
    let inference_bytes = (g.weight_count() + g.filters() + g.batch() * g.outputs()) * 4;
    if bytes > inference_bytes + weights_bytes / 8 {
        return Err(format!(
            "the inference-only layer holds {bytes} bytes, more than its parameters and output \
             ({inference_bytes})"
        )
        .into());
    }
    Ok(())
}
