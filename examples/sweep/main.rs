//! The shape sweep (`benches/support/sweep.rs`): for every shape, the layer's milliseconds with
//! each algorithm it has (`Columns`, `Direct`, and `Phases` where it applies) in forward inference,
//! forward train and forward+backward, the algorithm `Auto` picks, and the GEMM ceiling of the
//! shape (the raw GEMMs of the forward's size, same run). Writes a JSON document, a CSV, the
//! sweep's block of `BENCHMARKS.md` and its SVG chart. `benches/peers.py` runs it shape by shape
//! between PyTorch and ONNX Runtime and renders their columns into the same table; see the
//! README's "Shape sweep against PyTorch and ONNX Runtime".
//!
//! ```text
//! cargo run --release --example sweep -- --threads 2                 # print the table
//! cargo run --release --example sweep -- --threads 2 --json sweep.json --report BENCHMARKS.md
//! cargo run --release --example sweep -- --list shapes.json          # the shapes, for peers.py
//! cargo run --release --example sweep -- --shapes dcgan-8,S1 --parts # where the time goes
//! ```
//!
//! Options: `--threads N` (rayon pool, default all cores), `--reps N` (timed calls per row,
//! median reported; default 7), `--budget S` (stop a row after S seconds once it has 3 calls;
//! default 1), `--shapes A,B` (subset by id), `--backend NAME` (default: the default backend),
//! `--bandwidth` (also time a large copy: the memory bandwidth; on by default for a full
//! sweep), `--parts` (also time the column algorithm's pieces alone), `--json FILE` (`-`:
//! stdout), `--csv FILE`, `--report FILE` (replace the block between `<!-- sweep:start -->`
//! and `<!-- sweep:end -->`, or append it), `--chart FILE.svg` (needs peer columns),
//! `--note TEXT` (a line under the block's heading), `--render FILE` (do not measure: take the
//! document from FILE, as `benches/peers.py` writes it), `--list FILE` (write the shapes and
//! exit), `--quiet` (no table on stdout).

#[path = "../../benches/support/shapes.rs"]
mod shapes;
#[path = "../../benches/support/sweep.rs"]
mod sweep;

mod chart;
mod measure;
mod parts;
mod report;

use deconv::AnyBackend;
use measure::Budget;
use serde_json::{Value, json};
use sweep::{SWEEP, SweepShape};

struct Options {
    threads: usize,
    budget: Budget,
    shapes: Option<Vec<String>>,
    backend: AnyBackend,
    bandwidth: bool,
    parts: bool,
    json: Option<String>,
    csv: Option<String>,
    report: Option<String>,
    chart: Option<String>,
    note: Option<String>,
    render: Option<String>,
    list: Option<String>,
    quiet: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        budget: Budget {
            reps: 7,
            seconds: 1.0,
        },
        shapes: None,
        backend: AnyBackend::default(),
        bandwidth: false,
        parts: false,
        json: None,
        csv: None,
        report: None,
        chart: None,
        note: None,
        render: None,
        list: None,
        quiet: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--threads" => o.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--reps" => o.budget.reps = value()?.parse().map_err(|e| format!("--reps: {e}"))?,
            "--budget" => {
                o.budget.seconds = value()?.parse().map_err(|e| format!("--budget: {e}"))?
            }
            "--shapes" => o.shapes = Some(value()?.split(',').map(str::to_string).collect()),
            "--backend" => {
                o.backend = AnyBackend::from_name(&value()?).map_err(|e| e.to_string())?
            }
            "--bandwidth" => o.bandwidth = true,
            "--parts" => o.parts = true,
            "--json" => o.json = Some(value()?),
            "--csv" => o.csv = Some(value()?),
            "--report" => o.report = Some(value()?),
            "--chart" => o.chart = Some(value()?),
            "--note" => o.note = Some(value()?),
            "--render" => o.render = Some(value()?),
            "--list" => o.list = Some(value()?),
            "--quiet" => o.quiet = true,
            "--help" | "-h" => return Err("see the header of examples/sweep/main.rs".into()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if o.threads == 0 || o.budget.reps == 0 {
        return Err("--threads and --reps must be at least 1".into());
    }
    if let Some(ids) = &o.shapes {
        for id in ids {
            if !SWEEP.iter().any(|s| s.id == id) {
                return Err(format!("no sweep shape `{id}`"));
            }
        }
    }
    if o.shapes.is_none() {
        o.bandwidth = true;
    }
    Ok(o)
}

fn write(path: &str, text: &str) -> Result<(), String> {
    if path == "-" {
        print!("{text}");
        Ok(())
    } else {
        std::fs::write(path, text).map_err(|e| format!("{path}: {e}"))
    }
}

/// What every record starts with: the shape's description, from the one list.
fn describe(s: &SweepShape) -> Value {
    let g = s.config().geometry().expect("sweep shapes are valid");
    // The least a forward moves: its input and parameters read and its output written once.
    let elements = g.batch() * (g.inputs() + g.outputs()) + g.weight_count() + g.filters();
    let size = match s.dtype {
        sweep::Dtype::F32 => 4,
        sweep::Dtype::F64 => 8,
    };
    json!({
        "id": s.id,
        "layer": s.describe(),
        "source": s.source,
        "dtype": s.dtype.name(),
        "gflop": g.forward_flops() as f64 / 1e9,
        "min_bytes": elements * size,
        "cropped": cropped(&g),
    })
}

/// The share of the column GEMM's products (every input pixel times every tap) whose output
/// pixel the padding crops: work a method that skips them (a direct convolution) never does.
fn cropped(g: &deconv::Geometry) -> f64 {
    let axis = |a: usize| {
        let (input, out) = ([g.in_h(), g.in_w()][a], [g.out_h(), g.out_w()][a]);
        let (k, s, p, d) = (g.kernel()[a], g.stride()[a], g.pad()[a], g.dilation()[a]);
        let kept = (0..input)
            .flat_map(|i| (0..k).map(move |t| i * s + t * d))
            .filter(|&o| o >= p && o - p < out)
            .count();
        kept as f64 / (input * k) as f64
    };
    1.0 - axis(0) * axis(1)
}

/// The shapes with every parameter, for `benches/peers.py`.
fn list() -> Value {
    let shapes: Vec<Value> = SWEEP
        .iter()
        .map(|s| {
            let mut v = describe(s);
            let extra = json!({
                "batch": s.batch,
                "in_channels": s.in_channels,
                "filters": s.filters,
                "in_hw": s.in_hw,
                "kernel": s.kernel,
                "stride": s.stride,
                "pad": s.pad,
                "dilation": s.dilation,
                "output_padding": s.output_padding,
                "groups": s.groups,
                "activation": s.activation.name(),
                "batch_normalize": s.batch_normalize,
                "bilinear": s.bilinear,
            });
            merge(&mut v, extra);
            v
        })
        .collect();
    json!({ "shapes": shapes })
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}

fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|d| String::from_utf8_lossy(&d.stdout).trim().to_string())
        .unwrap_or_default()
}

fn measure_all(o: &Options) -> Result<Value, String> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(o.threads)
        .build()
        .map_err(|e| e.to_string())?;
    let selected: Vec<&SweepShape> = SWEEP
        .iter()
        .filter(|s| {
            o.shapes
                .as_ref()
                .is_none_or(|ids| ids.iter().any(|i| i == s.id))
        })
        .collect();
    let mut meta = json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine": machine(),
        "threads": o.threads,
        "backend": o.backend.name(),
        "timing": format!(
            "median of up to {} timed calls per row after a warm-up (at least 3; a row stops after {} s)",
            o.budget.reps, o.budget.seconds
        ),
        "date": date(),
    });
    let mut shapes = Vec::new();
    pool.install(|| {
        if o.bandwidth {
            merge(
                &mut meta,
                json!({
                    "copy_gbps": measure::copy_bandwidth(o.budget),
                    "write_gbps": measure::write_bandwidth(o.budget),
                }),
            );
        }
        for s in &selected {
            let mut v = describe(s);
            merge(&mut v, measure::measure(s, o.backend, o.budget));
            if o.parts {
                merge(
                    &mut v,
                    json!({ "parts": parts::parts(s, o.backend, o.budget) }),
                );
            }
            if !o.quiet {
                eprintln!("{}", progress(&v));
            }
            shapes.push(v);
        }
    });
    Ok(json!({ "meta": meta, "shapes": shapes }))
}

/// One line per measured shape on stderr, while the sweep runs.
fn progress(v: &Value) -> String {
    let f = |x: &Value| x.as_f64().map_or("-".into(), |x| format!("{x:.3}"));
    let mut line = format!(
        "{:<15} gemm {:>9} ms  columns {:>9} {:>9} {:>9}  phases {:>9} {:>9} {:>9}  \
         direct {:>9} {:>9} {:>9}  auto {}",
        v["id"].as_str().unwrap_or("?"),
        f(&v["gemm_ms"]),
        f(&v["columns"]["forward_inference"]),
        f(&v["columns"]["forward_train"]),
        f(&v["columns"]["forward_backward"]),
        f(&v["phases"]["forward_inference"]),
        f(&v["phases"]["forward_train"]),
        f(&v["phases"]["forward_backward"]),
        f(&v["direct"]["forward_inference"]),
        f(&v["direct"]["forward_train"]),
        f(&v["direct"]["forward_backward"]),
        v["auto"].as_str().unwrap_or("?"),
    );
    if let Some(p) = v.get("parts").and_then(Value::as_object) {
        line += "\n    parts (ms):";
        for (k, x) in p {
            line += &format!(" {k} {}", f(x));
        }
    }
    line
}

fn main() -> Result<(), String> {
    let o = parse_args()?;
    if let Some(path) = &o.list {
        let text = serde_json::to_string_pretty(&list()).map_err(|e| e.to_string())?;
        return write(path, &(text + "\n"));
    }
    let mut doc = match &o.render {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            serde_json::from_str::<Value>(&text).map_err(|e| format!("{path}: {e}"))?
        }
        None => measure_all(&o)?,
    };
    if let Some(note) = &o.note {
        merge(&mut doc["meta"], json!({ "note": note }));
    }
    let shapes = doc["shapes"].as_array().cloned().unwrap_or_default();
    let meta = doc["meta"].clone();
    if let Some(path) = &o.json {
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        write(path, &(text + "\n"))?;
    }
    if let Some(path) = &o.csv {
        write(path, &report::csv(&meta, &shapes))?;
    }
    if let Some(path) = &o.chart {
        let title = match meta.get("note").and_then(Value::as_str) {
            Some(_) => "deconv vs PyTorch / ONNX Runtime per sweep shape (PRELIMINARY)",
            None => "deconv vs PyTorch / ONNX Runtime per sweep shape",
        };
        chart::draw(path, title, &shapes)?;
    }
    // The chart is linked relative to the report, which sits beside it.
    let chart_link = o.chart.as_deref().map(|c| {
        std::path::Path::new(c)
            .file_name()
            .map_or(c.to_string(), |f| f.to_string_lossy().into_owned())
    });
    let body = report::markdown(&meta, &shapes, chart_link.as_deref());
    if let Some(path) = &o.report {
        let (start, end) = ("<!-- sweep:start -->", "<!-- sweep:end -->");
        let note = meta
            .get("note")
            .and_then(Value::as_str)
            .map_or(String::new(), |n| format!("{n}\n\n"));
        let block = format!(
            "{start}\n## Shape sweep\n\nGenerated by `examples/sweep` (and `benches/peers.py` for the \
             PyTorch and ONNX Runtime columns); do not edit by hand: rerun the command.\n\n{note}{body}{end}"
        );
        let old = std::fs::read_to_string(path).unwrap_or_default();
        write(path, &report::replace_block(&old, start, end, &block))?;
    }
    if !o.quiet && o.json.as_deref() != Some("-") {
        print!("{body}");
    }
    Ok(())
}
