//! Runs one Darknet `[deconvolutional]` layer forward from files, to compare our numbers with a
//! Darknet build:
//!
//! ```sh
//! cargo run --release --example darknet_forward -- \
//!     --cfg layer.cfg --weights layer.weights --input in.f32 --h H --w W --c C [--batch B] \
//!     --output out.f32 [--reject-non-finite]
//! ```
//!
//! `layer.cfg` holds one `[deconvolutional]` section, `layer.weights` a Darknet `.weights` file
//! of that one layer, `in.f32` the input as `B*C*H*W` raw little-endian `f32` (NCHW). The output,
//! computed in inference mode (batch norm with the rolling statistics), is written to `out.f32`
//! as raw little-endian `f32`. Any file may be a pipe (`--input <(cat in.f32)`). Without
//! `--cfg` etc., the example writes a small demo set of files into one folder of the system's
//! temporary directory, `deconv-darknet-demo` (overwritten by the next demo), and runs on them
//! (`--demo`). `--help` prints the usage.

use std::path::PathBuf;

use deconv::darknet::{
    ForwardFiles, LoadOptions, WeightsHeader, forward_files, parse_deconvolutional, save_weights,
};
use deconv::{DeconvLayer, InputShape};

const USAGE: &str = "usage: darknet_forward --cfg FILE --weights FILE --input FILE --h H --w W --c C \
                     [--batch B] --output FILE [--reject-non-finite]\n       darknet_forward --demo\n       \
                     darknet_forward --help";

fn parse_args(args: &[String]) -> Result<ForwardFiles, String> {
    let mut job = ForwardFiles {
        cfg: PathBuf::new(),
        weights: PathBuf::new(),
        input: PathBuf::new(),
        output: PathBuf::new(),
        shape: InputShape::new(1, 0, 0, 0),
        options: LoadOptions::new(),
    };
    let mut seen = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--reject-non-finite" {
            job.options = job.options.reject_non_finite(true);
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|_| format!("{flag}: `{value}` is not a non-negative integer"))
        };
        match flag.as_str() {
            "--cfg" => job.cfg = value.into(),
            "--weights" => job.weights = value.into(),
            "--input" => job.input = value.into(),
            "--output" => job.output = value.into(),
            "--h" => job.shape.h = number()?,
            "--w" => job.shape.w = number()?,
            "--c" => job.shape.channels = number()?,
            "--batch" => job.shape.batch = number()?,
            _ => return Err(format!("unknown argument `{flag}`")),
        }
        seen.push(flag.as_str());
    }
    for required in [
        "--cfg",
        "--weights",
        "--input",
        "--output",
        "--h",
        "--w",
        "--c",
    ] {
        if !seen.contains(&required) {
            return Err(format!("missing {required}"));
        }
    }
    Ok(job)
}

/// Writes a demo cfg, weights and input into the temporary directory.
fn demo_files() -> Result<ForwardFiles, Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join("deconv-darknet-demo");
    std::fs::create_dir_all(&dir)?;
    let job = ForwardFiles {
        cfg: dir.join("layer.cfg"),
        weights: dir.join("layer.weights"),
        input: dir.join("in.f32"),
        output: dir.join("out.f32"),
        shape: InputShape::new(2, 3, 8, 8),
        options: LoadOptions::new(),
    };
    let cfg = "[deconvolutional]\nbatch_normalize=1\nfilters=4\nsize=4\nstride=2\npad=1\nactivation=leaky\n";
    std::fs::write(&job.cfg, cfg)?;
    let config = parse_deconvolutional(cfg, job.shape)?;
    let mut layer: DeconvLayer<f32> = DeconvLayer::new(&config.seed(1))?;
    if let Some(v) = layer.rolling_variance_mut() {
        v.fill(0.25);
    }
    save_weights(&layer, &job.weights, &WeightsHeader::new(0))?;
    let count = job.shape.batch * job.shape.channels * job.shape.h * job.shape.w;
    let input: Vec<u8> = (0..count)
        .flat_map(|i| ((i as f32) * 0.1).sin().to_le_bytes())
        .collect();
    std::fs::write(&job.input, input)?;
    Ok(job)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    let job = if args.is_empty() || args == ["--demo"] {
        let job = demo_files()?;
        println!(
            "demo files in {}",
            job.cfg.parent().unwrap_or(&job.cfg).display()
        );
        job
    } else {
        parse_args(&args).map_err(|e| format!("{e}\n{USAGE}"))?
    };
    let report = forward_files(&job)?;
    let c = &report.config;
    println!(
        "layer: filters={} size={}x{} stride={} pad={} activation={} batch_normalize={}",
        c.filters, c.kernel[0], c.kernel[1], c.stride[0], c.pad[0], c.activation, c.batch_normalize
    );
    let h = report.header;
    println!(
        "weights: {} (version {}.{}.{}, seen {})",
        job.weights.display(),
        h.major,
        h.minor,
        h.revision,
        h.seen
    );
    let [b, ch, ih, iw] = report.input_shape;
    println!(
        "input:  {} [batch {b}, c {ch}, h {ih}, w {iw}]",
        job.input.display()
    );
    let [b, ch, oh, ow] = report.output_shape;
    println!(
        "output: {} [batch {b}, c {ch}, h {oh}, w {ow}]",
        job.output.display()
    );
    let out = &report.output;
    let (min, max) = out
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    let mean = out.iter().map(|&x| f64::from(x)).sum::<f64>() / out.len() as f64;
    println!(
        "output stats: min {min:.6} max {max:.6} mean {mean:.6} ({} values)",
        out.len()
    );
    Ok(())
}

/// An error that `main` returns: printed as its message (Rust prints `Error: {:?}`).
struct CliError(String);

impl std::fmt::Debug for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn main() -> Result<(), CliError> {
    run().map_err(|e| CliError(e.to_string()))
}
