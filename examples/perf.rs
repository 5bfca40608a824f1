//! Prints one table of the layer's speed: shape x backend x pass, with milliseconds, GFLOP/s,
//! the share of the same run's raw GEMM at the layer's GEMM shape, and the share of the same
//! run's raw sgemm at 2048x2048x2048 (P). Ratios measured in one run cancel the machine's noise.
//!
//! ```text
//! cargo run --release --example perf                       # default backend
//! cargo run --release --all-features --example perf -- --threads 2 --csv perf.csv --markdown
//! ```
//!
//! Options: `--threads N` (rayon pool size, default: all cores), `--reps N` (timed repetitions
//! per row; the median is reported, default 15), `--shapes S1,S3` (subset), `--csv FILE`,
//! `--json FILE` (machine-readable copies), `--markdown` (print the table as Markdown),
//! `--algorithm auto|columns|phases` (the forward algorithm, default auto), `--report FILE`
//! (write a Markdown report: `BENCHMARKS.md`), `--readme FILE` (replace the block between
//! `<!-- perf:start -->` and `<!-- perf:end -->` in FILE with this run's summary).
//!
//! The shape sweep (about fifty layers from real networks, every algorithm, `Auto`'s choice,
//! the GEMM ceiling, PyTorch and ONNX Runtime beside them) is the sibling example
//! `examples/sweep` and `benches/peers.py`; this report keeps their block of `BENCHMARKS.md`.
//!
//! `BENCHMARKS.md` and the README's performance section are written by:
//! ```text
//! cargo run --release --all-features --example perf -- --threads 2 --report BENCHMARKS.md --readme README.md
//! ```

#[path = "../benches/support/shapes.rs"]
mod shapes;

use deconv::backend::{MatMut, MatRef, par_gemm};
use deconv::{Algorithm, AnyBackend, DeconvLayer, Mode};
use shapes::{SHAPES, Shape};
use std::fmt::Write as _;
use std::time::Instant;

struct Options {
    threads: usize,
    reps: usize,
    shapes: Vec<String>,
    csv: Option<String>,
    json: Option<String>,
    markdown: bool,
    algorithm: Algorithm,
    report: Option<String>,
    readme: Option<String>,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        reps: 15,
        shapes: SHAPES.iter().map(|s| s.id.to_string()).collect(),
        csv: None,
        json: None,
        markdown: false,
        algorithm: Algorithm::Auto,
        report: None,
        readme: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--threads" => o.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--reps" => o.reps = value()?.parse().map_err(|e| format!("--reps: {e}"))?,
            "--shapes" => o.shapes = value()?.split(',').map(str::to_string).collect(),
            "--csv" => o.csv = Some(value()?),
            "--json" => o.json = Some(value()?),
            "--markdown" => o.markdown = true,
            "--report" => o.report = Some(value()?),
            "--readme" => o.readme = Some(value()?),
            "--algorithm" => {
                o.algorithm = match value()?.as_str() {
                    "auto" => Algorithm::Auto,
                    "columns" => Algorithm::Columns,
                    "phases" => Algorithm::Phases,
                    other => return Err(format!("--algorithm: unknown `{other}`")),
                }
            }
            "--help" | "-h" => return Err("see the header of examples/perf.rs".into()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if o.threads == 0 || o.reps == 0 {
        return Err("--threads and --reps must be at least 1".into());
    }
    Ok(o)
}

/// Median seconds of `reps` calls of `f`, after one warm-up call.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    time_sum(reps, || {
        let start = Instant::now();
        f();
        start.elapsed().as_secs_f64()
    })
}

/// Median of `reps` runs of `f`, which returns the seconds it timed, after one warm-up run.
fn time_sum(reps: usize, mut f: impl FnMut() -> f64) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps).map(|_| f()).collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = (i as u64)
                .wrapping_mul(6364136223846793005)
                .wrapping_add(seed * 1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// Seconds of `batch` GEMMs `C (m x n) = A^T (m x k) * B (k x n)`, as the layer's forward.
fn raw_gemm(backend: &AnyBackend, m: usize, n: usize, k: usize, batch: usize, reps: usize) -> f64 {
    let a = random(k * m, 1);
    let b = random(k * n * batch, 2);
    let mut c = vec![0.0f32; m * n];
    time(reps, || {
        for img in 0..batch {
            par_gemm(
                backend,
                1.0,
                MatRef::new(&a, k, m, m).unwrap().t(),
                MatRef::new(&b[img * k * n..], k, n, n).unwrap(),
                0.0,
                MatMut::new(&mut c, m, n, n).unwrap(),
            )
            .unwrap();
        }
    })
}

#[derive(Clone)]
struct Row {
    shape: &'static str,
    backend: &'static str,
    pass: &'static str,
    ms: f64,
    gflops: f64,
    of_gemm: f64,
    of_peak: f64,
}

fn measure(shape: &Shape, backend: AnyBackend, o: &Options, peak: f64, rows: &mut Vec<Row>) {
    let reps = o.reps;
    let config = shape.config().algorithm(o.algorithm);
    let mut layer: DeconvLayer<f32, AnyBackend> =
        DeconvLayer::with_backend(&config, backend).unwrap();
    shape.prepare(&mut layer);
    let g = *layer.geometry();
    let flops = g.forward_flops() as f64;
    let input = random(g.batch() * g.inputs(), 3);
    let delta = random(g.batch() * g.outputs(), 4);
    let mut dx = vec![0.0f32; input.len()];
    let gemm = raw_gemm(
        &backend,
        g.col_rows(),
        g.in_area(),
        g.group_in(),
        g.batch() * g.groups(),
        reps,
    );
    let name = backend.name();
    let mut push = |pass, secs: f64, flops: f64| {
        let gflops = flops / secs / 1e9;
        rows.push(Row {
            shape: shape.id,
            backend: name,
            pass,
            ms: secs * 1e3,
            gflops,
            of_gemm: gflops / (g.forward_flops() as f64 / gemm / 1e9),
            of_peak: gflops / peak,
        });
    };
    push("gemm", gemm, flops);
    let t = time(reps, || {
        layer.forward(&input, Mode::Inference).unwrap();
    });
    push("forward_inference", t, flops);
    let t = time(reps, || {
        layer.forward(&input, Mode::Train).unwrap();
    });
    push("forward_train", t, flops);
    // Only the layer's two calls are timed: writing the output gradient into `delta` is the
    // caller's work (in a network, the next layer's backward writes straight into it).
    let t = time_sum(reps, || {
        let start = Instant::now();
        layer.forward(&input, Mode::Train).unwrap();
        let forward = start.elapsed().as_secs_f64();
        layer.delta_mut().copy_from_slice(&delta);
        let start = Instant::now();
        layer.backward(&input, Some(&mut dx)).unwrap();
        forward + start.elapsed().as_secs_f64()
    });
    push("forward_backward", t, 3.0 * flops);
}

fn main() -> Result<(), String> {
    let o = parse_args()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(o.threads)
        .build()
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    let mut peaks = Vec::new();
    pool.install(|| {
        let n = 2048;
        for backend in AnyBackend::all() {
            let secs = raw_gemm(&backend, n, n, n, 1, 5.max(o.reps / 3));
            let peak = 2.0 * (n * n * n) as f64 / secs / 1e9;
            peaks.push((backend.name(), peak));
        }
        // P: the machine's best large sgemm in this run, whichever backend gave it.
        let p = peaks.iter().map(|x| x.1).fold(0.0, f64::max);
        for backend in AnyBackend::all() {
            for shape in SHAPES
                .iter()
                .filter(|s| o.shapes.iter().any(|id| id == s.id))
            {
                measure(shape, backend, &o, p, &mut rows);
            }
        }
    });

    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|d| String::from_utf8_lossy(&d.stdout).trim().to_string())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut head = String::new();
    writeln!(head, "command: `{command}`").unwrap();
    writeln!(
        head,
        "machine: {cpu}, {cores} cores; threads: {}; {} timed runs per row (median); {date}",
        o.threads, o.reps
    )
    .unwrap();
    for (name, peak) in &peaks {
        writeln!(head, "raw sgemm 2048^3 on {name}: {peak:.1} GFLOP/s").unwrap();
    }
    let p = peaks.iter().map(|x| x.1).fold(0.0, f64::max);
    writeln!(head, "P = {p:.1} GFLOP/s (the best of these)").unwrap();
    for s in SHAPES
        .iter()
        .filter(|s| o.shapes.iter().any(|id| id == s.id))
    {
        let config = s.config().algorithm(o.algorithm);
        let layer = DeconvLayer::<f32, AnyBackend>::new(&config).map_err(|e| e.to_string())?;
        writeln!(
            head,
            "{}: batch {}, {} -> {} channels, {}x{}, kernel {}, stride {}, pad {}, {}{}; forward algorithm {:?}; workspace {} floats per image slot",
            s.id,
            s.batch,
            s.in_channels,
            s.filters,
            s.in_hw,
            s.in_hw,
            s.kernel,
            s.stride,
            s.pad,
            if s.batch_normalize { "batch norm, " } else { "bias, " },
            s.activation,
            layer.algorithm(),
            layer.workspace_size(),
        )
        .unwrap();
    }
    print!("{head}");
    print!("\n{}", table(&rows, o.markdown));

    if let Some(path) = &o.report {
        let text = format!(
            "# Benchmarks\n\nGenerated by `examples/perf.rs`; do not edit by hand: rerun the command.\n\n{}\n\
             Columns: `ms` median wall time of one call (`forward_backward`: of a training \
             forward plus a backward, without writing the output gradient into the layer's \
             delta between them); `GFLOP/s` nominal FLOPs (forward \
             2*k*k*n*h*w*c*batch, forward+backward 3x that) per second; `% of GEMM` the layer's \
             GFLOP/s over the same backend's raw GEMM at the layer's forward GEMM shape (`gemm` \
             rows) in this run; `x P` the share of P.\n\n{}",
            head.lines().map(|l| format!("- {l}\n")).collect::<String>(),
            table(&rows, true)
        );
        // Keep the shape sweep's block (written by examples/sweep and benches/peers.py).
        let (start, end) = ("<!-- sweep:start -->", "<!-- sweep:end -->");
        let old = std::fs::read_to_string(path).unwrap_or_default();
        let sweep = match (old.find(start), old.find(end)) {
            (Some(a), Some(b)) if a < b => format!("\n{}\n", &old[a..b + end.len()]),
            _ => String::new(),
        };
        std::fs::write(path, text + &sweep).map_err(|e| format!("{path}: {e}"))?;
    }
    if let Some(path) = &o.readme {
        let readme = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        let (start, end) = ("<!-- perf:start -->", "<!-- perf:end -->");
        let (Some(a), Some(b)) = (readme.find(start), readme.find(end)) else {
            return Err(format!("{path} has no {start} ... {end} block"));
        };
        let summary: Vec<&Row> = rows.iter().filter(|r| r.pass != "forward_train").collect();
        let block = format!(
            "{start}\n{}\n{}{end}",
            head.lines().map(|l| format!("- {l}\n")).collect::<String>(),
            table(&summary.into_iter().cloned().collect::<Vec<_>>(), true)
        );
        let text = format!("{}{block}{}", &readme[..a], &readme[b + end.len()..]);
        std::fs::write(path, text).map_err(|e| format!("{path}: {e}"))?;
    }
    if let Some(path) = &o.csv {
        let mut csv = String::from("shape,backend,pass,threads,ms,gflops,of_gemm,of_peak\n");
        for r in &rows {
            writeln!(
                csv,
                "{},{},{},{},{:.4},{:.3},{:.4},{:.4}",
                r.shape, r.backend, r.pass, o.threads, r.ms, r.gflops, r.of_gemm, r.of_peak
            )
            .unwrap();
        }
        std::fs::write(path, csv).map_err(|e| format!("{path}: {e}"))?;
    }
    if let Some(path) = &o.json {
        let items: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{{\"shape\":\"{}\",\"backend\":\"{}\",\"pass\":\"{}\",\"threads\":{},\"ms\":{:.4},\"gflops\":{:.3},\"of_gemm\":{:.4},\"of_peak\":{:.4}}}",
                    r.shape, r.backend, r.pass, o.threads, r.ms, r.gflops, r.of_gemm, r.of_peak
                )
            })
            .collect();
        std::fs::write(path, format!("[\n{}\n]\n", items.join(",\n")))
            .map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}

/// The rows as an aligned text table or a Markdown table.
fn table(rows: &[Row], markdown: bool) -> String {
    let header = [
        "shape",
        "backend",
        "pass",
        "ms",
        "GFLOP/s",
        "% of GEMM",
        "x P",
    ];
    let mut out = String::new();
    if markdown {
        writeln!(out, "| {} |", header.join(" | ")).unwrap();
        writeln!(out, "|{}", "---|".repeat(header.len())).unwrap();
        for r in rows {
            writeln!(
                out,
                "| {} | {} | {} | {:.2} | {:.1} | {:.0}% | {:.2} |",
                r.shape,
                r.backend,
                r.pass,
                r.ms,
                r.gflops,
                100.0 * r.of_gemm,
                r.of_peak
            )
            .unwrap();
        }
    } else {
        writeln!(
            out,
            "{:<6}{:<16}{:<19}{:>9}{:>10}{:>11}{:>7}",
            header[0], header[1], header[2], header[3], header[4], header[5], header[6]
        )
        .unwrap();
        for r in rows {
            writeln!(
                out,
                "{:<6}{:<16}{:<19}{:>9.2}{:>10.1}{:>10.0}%{:>7.2}",
                r.shape,
                r.backend,
                r.pass,
                r.ms,
                r.gflops,
                100.0 * r.of_gemm,
                r.of_peak
            )
            .unwrap();
        }
    }
    out
}
