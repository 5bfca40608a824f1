//! The sweep's results document and what is made from it: the Markdown table and headline for
//! `BENCHMARKS.md`, the CSV, and the numbers the chart draws.
//!
//! The document (`--json`, read back by `--render`) is
//! `{"meta": {...}, "shapes": [{...}, ...]}`; each shape has `id`, `layer` (one-line
//! geometry), `source`, `dtype`, `gflop` (forward), `gemm_ms` (the GEMM ceiling), `auto` (the
//! algorithm `Auto` picks), `columns`, `phases` and `direct` (`{forward_inference, forward_train,
//! forward_backward}` in ms, `null` where the algorithm does not apply), optionally `parts`
//! (`--parts`) and, when `benches/peers.py` merged them, `peers`:
//! `{"pytorch": {forward_inference, forward_backward}, "onnxruntime": {forward_inference}}`
//! (`null` where a peer cannot run the shape).

use serde_json::Value;
use std::fmt::Write as _;

/// The numbers of one shape that the table, the CSV and the chart show.
pub struct Derived {
    pub id: String,
    /// Milliseconds of the algorithm `Auto` picks, per pass.
    pub auto_ms: [Option<f64>; 3],
    /// Milliseconds of the rows of the algorithms `Auto` picks (forward, and forward+backward
    /// where both passes run the same algorithm; else `auto_ms`'s, the only measurement of
    /// that mix).
    pub choice_ms: [Option<f64>; 3],
    /// The fastest algorithm the crate has, per pass, and its milliseconds.
    pub best: [Option<(&'static str, f64)>; 3],
    pub pytorch: [Option<f64>; 2],
    pub onnxruntime: Option<f64>,
}

pub const ALGORITHMS: [&str; 3] = ["columns", "phases", "direct"];
const PASSES: [&str; 3] = ["forward_inference", "forward_train", "forward_backward"];

fn ms(v: &Value, alg: &str, pass: &str) -> Option<f64> {
    v.get(alg)?.get(pass)?.as_f64()
}

fn peer(v: &Value, name: &str, pass: &str) -> Option<f64> {
    v.get("peers")?.get(name)?.get(pass)?.as_f64()
}

impl Derived {
    pub fn of(v: &Value) -> Self {
        // Auto measured as itself ("auto_ms"); older documents: its forward algorithm's times.
        let auto = v["auto"].as_str().unwrap_or("columns");
        let forward = auto.split('/').next().unwrap_or(auto);
        let auto_ms = PASSES.map(|p| ms(v, "auto_ms", p).or_else(|| ms(v, forward, p)));
        let backward = auto.split('/').next_back().unwrap_or(auto);
        let choice_ms = [0, 1, 2].map(|i| match i {
            2 if backward != forward => auto_ms[2],
            _ => ms(v, forward, PASSES[i]).or(auto_ms[i]),
        });
        let best = PASSES.map(|p| {
            ALGORITHMS
                .iter()
                .filter_map(|&a| ms(v, a, p).map(|t| (a, t)))
                .min_by(|x, y| x.1.total_cmp(&y.1))
        });
        Derived {
            id: v["id"].as_str().unwrap_or("?").to_string(),
            auto_ms,
            choice_ms,
            best,
            pytorch: [
                peer(v, "pytorch", "forward_inference"),
                peer(v, "pytorch", "forward_backward"),
            ],
            onnxruntime: peer(v, "onnxruntime", "forward_inference"),
        }
    }

    /// The fastest peer's forward time (PyTorch or ONNX Runtime).
    pub fn best_peer_forward(&self) -> Option<f64> {
        [self.pytorch[0], self.onnxruntime]
            .into_iter()
            .flatten()
            .min_by(f64::total_cmp)
    }

    /// The best peer's forward time over deconv's (`Auto`): above 1, deconv is faster.
    pub fn speedup_forward(&self) -> Option<f64> {
        Some(self.best_peer_forward()? / self.auto_ms[0]?)
    }

    /// PyTorch's forward+backward time over deconv's (ONNX Runtime has no training pass).
    pub fn speedup_backward(&self) -> Option<f64> {
        Some(self.pytorch[1]? / self.auto_ms[2]?)
    }

    /// `Auto`'s time over the best algorithm's, the worse of forward and forward+backward.
    pub fn auto_penalty(&self) -> Option<f64> {
        [0, 2]
            .into_iter()
            .filter_map(|p| Some(self.auto_ms[p]? / self.best[p]?.1))
            .max_by(f64::total_cmp)
    }

    /// [`auto_penalty`](Self::auto_penalty) of `Auto`'s choice: the rows of the algorithms it
    /// picks over the best rows, all from the same measurements (a second timing of the same
    /// algorithm, as `auto_ms` is, differs from its row by the machine's noise alone).
    pub fn choice_penalty(&self) -> Option<f64> {
        [0, 2]
            .into_iter()
            .filter_map(|p| Some(self.choice_ms[p]? / self.best[p]?.1))
            .max_by(f64::total_cmp)
    }
}

fn geomean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| (xs.iter().map(|x| x.ln()).sum::<f64>() / xs.len() as f64).exp())
}

/// Three significant digits, `-` for none.
fn fmt(x: Option<f64>) -> String {
    match x {
        None => "-".into(),
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) if x >= 10.0 => format!("{x:.1}"),
        Some(x) if x >= 1.0 => format!("{x:.2}"),
        Some(x) => format!("{x:.3}"),
    }
}

fn triple(v: &Value, alg: &str) -> String {
    if v.get(alg).is_none_or(Value::is_null) {
        return "n/a".into();
    }
    PASSES
        .iter()
        .map(|p| fmt(ms(v, alg, p)))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The headline: geometric means and worst shapes of the peer ratios, and `Auto`'s record.
pub fn headline(shapes: &[Value]) -> String {
    let d: Vec<Derived> = shapes.iter().map(Derived::of).collect();
    let mut out = String::new();
    for (name, f) in [
        (
            "forward (inference)",
            Derived::speedup_forward as fn(&Derived) -> Option<f64>,
        ),
        ("forward+backward", Derived::speedup_backward),
    ] {
        let mut r: Vec<(f64, &str)> = d.iter().filter_map(|x| Some((f(x)?, &*x.id))).collect();
        if r.is_empty() {
            continue;
        }
        r.sort_by(|a, b| a.0.total_cmp(&b.0));
        let gm = geomean(&r.iter().map(|x| x.0).collect::<Vec<_>>()).unwrap_or(f64::NAN);
        let losers = r.iter().filter(|x| x.0 < 1.0).count();
        let worst: Vec<String> = r
            .iter()
            .take(5)
            .map(|(x, id)| format!("{id} {x:.2}x"))
            .collect();
        writeln!(
            out,
            "- {name}: best peer's time / deconv's, geometric mean **{gm:.2}x** over {} shapes; \
             {losers} shapes below 1.0x; worst: {}",
            r.len(),
            worst.join(", ")
        )
        .unwrap();
    }
    let record = |penalty: &dyn Fn(&Derived) -> Option<f64>| {
        let penalties: Vec<(f64, &str)> = d
            .iter()
            .filter_map(|x| Some((penalty(x)?, &*x.id)))
            .collect();
        let within = penalties.iter().filter(|p| p.0 <= 1.1).count();
        let mut off: Vec<&(f64, &str)> = penalties.iter().filter(|p| p.0 > 1.1).collect();
        off.sort_by(|a, b| b.0.total_cmp(&a.0));
        let worst = penalties.iter().map(|p| p.0).fold(1.0, f64::max);
        let list = if off.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                off.iter()
                    .map(|(x, id)| format!("{id} {x:.2}x"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        format!(
            "{within} of {} shapes; worst {worst:.2}x{list}",
            penalties.len()
        )
    };
    writeln!(
        out,
        "- `Auto`'s choice within 10% of the crate's fastest algorithm (forward and \
         forward+backward; the rows of the algorithms it picks, or its own timing where the two \
         passes run different ones): {}",
        record(&Derived::choice_penalty)
    )
    .unwrap();
    writeln!(
        out,
        "- `Auto` timed as itself, within 10% of the fastest row: {} (a second timing of \
         the algorithm it picks, which on most shapes is also a row: the difference is the \
         machine's noise)",
        record(&Derived::auto_penalty)
    )
    .unwrap();
    out
}

/// Each shape and pass where a peer is faster, against the raw GEMMs of the same run: the
/// best peer's time over the GEMM column (forward) or three times it (forward+backward: the
/// forward's product and the backward's two of the same size), and the share of those
/// products the padding crops (computed by the GEMM, skipped by a direct method).
pub fn misses(shapes: &[Value]) -> String {
    let mut lines = Vec::new();
    for v in shapes {
        let d = Derived::of(v);
        let (Some(gemm), Some(cropped)) = (v["gemm_ms"].as_f64(), v["cropped"].as_f64()) else {
            continue;
        };
        for (pass, speedup, peer_ms, products) in [
            ("forward", d.speedup_forward(), d.best_peer_forward(), 1.0),
            ("forward+backward", d.speedup_backward(), d.pytorch[1], 3.0),
        ] {
            let (Some(x), Some(peer_ms)) = (speedup, peer_ms) else {
                continue;
            };
            if x < 1.0 {
                let ceiling = gemm * products;
                lines.push(format!(
                    "{} {pass} {x:.2}x: peer {} ms, our GEMMs alone {} ms (peer / GEMMs {:.2}), \
                     {:.0}% cropped",
                    d.id,
                    fmt(Some(peer_ms)),
                    fmt(Some(ceiling)),
                    peer_ms / ceiling,
                    cropped * 100.0
                ));
            }
        }
    }
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "- where a peer is faster: its time against our raw GEMMs of the same products in this \
         run (forward: the `GEMM` column; forward+backward: three times it) and the share of \
         those products the padding crops (a direct method skips them): {}\n",
        lines.join("; ")
    )
}

/// The sweep's Markdown: headline, the shapes and where they come from, the timing table.
pub fn markdown(meta: &Value, shapes: &[Value], chart: Option<&str>) -> String {
    let mut out = String::new();
    let text = |k: &str| {
        meta.get(k)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string()
    };
    writeln!(out, "- command: `{}`", text("command")).unwrap();
    if let Some(peers) = meta.get("peers_command").and_then(Value::as_str) {
        writeln!(out, "- peers: `{peers}` ({})", text("peers_versions")).unwrap();
    }
    writeln!(
        out,
        "- machine: {}; threads: {}; backend: {}; {}; {}",
        text("machine"),
        meta["threads"],
        text("backend"),
        text("timing"),
        text("date")
    )
    .unwrap();
    if let Some(load) = meta.get("load").and_then(Value::as_str) {
        writeln!(out, "- {load}").unwrap();
    }
    if let Some(missing) = meta.get("onnxruntime_missing").and_then(Value::as_object) {
        let first = missing
            .values()
            .next()
            .and_then(Value::as_str)
            .unwrap_or("");
        writeln!(
            out,
            "- no ONNX Runtime column for {} (`{first}`)",
            missing.keys().cloned().collect::<Vec<_>>().join(", ")
        )
        .unwrap();
    }
    if let Some(bw) = meta.get("copy_gbps").and_then(Value::as_f64) {
        writeln!(out, "- memory bandwidth, a 128 MiB parallel copy in the same run: {bw:.1} GB/s (read + written)").unwrap();
        if let Some(w) = meta.get("write_gbps").and_then(Value::as_f64) {
            writeln!(
                out,
                "- writing alone, ordinary stores into 128 MiB in the same run: {w:.1} GB/s \
                 (written; the rate a layer that mostly writes its output with plain stores is held to)"
            )
            .unwrap();
        }
        // The layers `Auto` runs direct (memory-bound, or few input channels) against the time
        // their bytes take.
        let bound: Vec<String> = shapes
            .iter()
            .filter(|v| v["auto"].as_str().is_some_and(|a| a.starts_with("direct")))
            .filter_map(|v| {
                let bytes = v["min_bytes"].as_f64()?;
                let direct = ms(v, "direct", PASSES[0])?;
                let floor = bytes / (bw * 1e9) * 1e3;
                Some(format!("{} {:.1}x", v["id"].as_str()?, direct / floor))
            })
            .collect();
        if !bound.is_empty() {
            writeln!(
                out,
                "- shapes `Auto` runs direct, forward inference over the time their \
                 bytes (input and parameters read, output written, once) take at that bandwidth: {}",
                bound.join(", ")
            )
            .unwrap();
        }
    }
    out += "\n";
    out += &headline(shapes);
    out += &misses(shapes);
    if let Some(chart) = chart {
        writeln!(
            out,
            "\n![Best peer's time over deconv's per sweep shape]({chart})"
        )
        .unwrap();
    }
    out += "\nColumns: `GEMM` the raw GEMMs of the forward's size (`batch * groups` products \
            `k*k*n/g x h*w x c/g`) in this run, the layer's ceiling; `Columns`, `Phases` and `Direct` the \
            layer's milliseconds with that algorithm, forward inference / forward train / \
            forward+backward (`n/a`: the algorithm does not apply); `Auto` the algorithm \
            `Algorithm::Auto` picks (forward/backward where they differ) and its row's time over \
            the best row's (worse of forward and forward+backward; Auto's own timing for a mix); \
            `of GEMM` the GEMM's time over `Auto`'s forward inference (timed as itself); \
            `PyTorch` `torch.nn.ConvTranspose2d` (+ `BatchNorm2d` and the activation as the \
            layer has them) forward in eval mode / forward+backward with input and weight \
            gradients; `ORT` ONNX Runtime's `ConvTranspose` graph forward; `fwd x` and `f+b x` \
            the best peer's time over deconv's (`Auto`): above 1.0, deconv is faster.\n\n";
    out += "| shape | layer | GFLOP | GEMM ms | Columns ms | Phases ms | Direct ms | Auto | of GEMM | PyTorch ms | ORT ms | fwd x | f+b x |\n";
    out += "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for v in shapes {
        let d = Derived::of(v);
        let gemm = v["gemm_ms"].as_f64();
        let of_gemm = gemm.zip(d.auto_ms[0]).map(|(g, a)| 100.0 * g / a);
        let flag = |x: Option<f64>| match x {
            Some(x) if x < 1.0 => format!("**{}**", fmt(Some(x))),
            x => fmt(x),
        };
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} {} | {} | {} / {} | {} | {} | {} |",
            d.id,
            v["layer"].as_str().unwrap_or(""),
            fmt(v["gflop"].as_f64()),
            fmt(gemm),
            triple(v, "columns"),
            triple(v, "phases"),
            triple(v, "direct"),
            v["auto"].as_str().unwrap_or("?"),
            d.choice_penalty()
                .map_or("-".into(), |p| format!("{p:.2}x")),
            of_gemm.map_or("-".into(), |p| format!("{p:.0}%")),
            fmt(d.pytorch[0]),
            fmt(d.pytorch[1]),
            fmt(d.onnxruntime),
            flag(d.speedup_forward()),
            flag(d.speedup_backward()),
        )
        .unwrap();
    }
    out +=
        "\nWhere each shape comes from (`benches/support/sweep.rs` says more, next to each):\n\n";
    out += "| shape | network and layer | type |\n|---|---|---|\n";
    for v in shapes {
        writeln!(
            out,
            "| {} | {} | {} |",
            v["id"].as_str().unwrap_or("?"),
            v["source"].as_str().unwrap_or(""),
            v["dtype"].as_str().unwrap_or("")
        )
        .unwrap();
    }
    out
}

/// One row per shape, algorithm and pass, then the peers' rows.
pub fn csv(meta: &Value, shapes: &[Value]) -> String {
    let mut out = String::from("shape,dtype,engine,pass,ms,gflops,threads,auto\n");
    let threads = &meta["threads"];
    for v in shapes {
        let id = v["id"].as_str().unwrap_or("?");
        let dtype = v["dtype"].as_str().unwrap_or("?");
        let gflop = v["gflop"].as_f64().unwrap_or(0.0);
        let auto = v["auto"].as_str().unwrap_or("?");
        let mut row = |engine: &str, pass: &str, ms: f64| {
            let flops = if pass == "forward_backward" {
                3.0 * gflop
            } else {
                gflop
            };
            writeln!(
                out,
                "{id},{dtype},{engine},{pass},{ms:.4},{:.3},{threads},{auto}",
                flops / (ms / 1e3)
            )
            .unwrap();
        };
        if let Some(g) = v["gemm_ms"].as_f64() {
            row("gemm", "forward_inference", g);
        }
        for alg in ALGORITHMS {
            for pass in PASSES {
                if let Some(t) = ms(v, alg, pass) {
                    row(&format!("deconv-{alg}"), pass, t);
                }
            }
        }
        for (name, pass) in [
            ("pytorch", "forward_inference"),
            ("pytorch", "forward_backward"),
            ("onnxruntime", "forward_inference"),
        ] {
            if let Some(t) = peer(v, name, pass) {
                row(name, pass, t);
            }
        }
    }
    out
}

/// `text` with the block between `start` and `end` markers replaced by `block` (markers
/// included in `block`), or `block` appended when the markers are absent.
pub fn replace_block(text: &str, start: &str, end: &str, block: &str) -> String {
    match (text.find(start), text.find(end)) {
        (Some(a), Some(b)) if a < b => {
            format!("{}{block}{}", &text[..a], &text[b + end.len()..])
        }
        _ => format!("{}\n{block}\n", text.trim_end()),
    }
}
