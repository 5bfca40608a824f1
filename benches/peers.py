#!/usr/bin/env python3
"""deconv next to PyTorch and ONNX Runtime on every shape of the sweep, in one run.

The shapes come from the Rust side (`examples/sweep -- --list`, which prints
`benches/support/sweep.rs`): one list. For each round and each shape, the script runs, one after
the other on the same threads,

- deconv: `examples/sweep --shapes ID` (every algorithm, the GEMM ceiling, `Auto`'s choice);
- PyTorch: `torch.nn.ConvTranspose2d` (+ `BatchNorm2d` and the activation where the layer has
  them), forward in eval mode under `torch.inference_mode()`, and forward+backward in train mode
  with the input and weight gradients (`.grad` reset to `None` before each call, as
  `zero_grad()` does);
- ONNX Runtime: the same layer as an ONNX graph (`ConvTranspose`, `BatchNormalization`, the
  activation) built with the `onnx` package, forward; ONNX Runtime's CPU `ConvTranspose` has no
  f64 kernel, so f64 shapes have no ORT column.

and rotates which engine goes first from round to round. Each number is the median over the
rounds of each round's median. The result is rendered by `examples/sweep -- --render` into
`BENCHMARKS.md` (the sweep block), an SVG chart beside it, a CSV and the JSON document.

Run by hand, not in CI (README: "Shape sweep against PyTorch and ONNX Runtime"):

    python3 benches/peers.py                      # 3 rounds, 2 threads, everything written
    python3 benches/peers.py --shapes dcgan-8,S1  # a few shapes, nothing written but target/

The first run creates a virtual environment in target/peers-venv from
benches/peers-requirements.txt (PyPI's torch wheel: about 5.5 GB installed).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
VENV = TARGET / "peers-venv"
REQUIREMENTS = ROOT / "benches" / "peers-requirements.txt"
PASSES = ("forward_inference", "forward_train", "forward_backward")


def in_venv():
    return Path(sys.prefix).resolve() == VENV.resolve()


def ensure_venv():
    """Creates the virtual environment if needed and re-runs this script inside it."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".requirements"
    wanted = REQUIREMENTS.read_text()
    if not python.exists():
        print(f"peers: creating {VENV}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    if not stamp.exists() or stamp.read_text() != wanted:
        print(f"peers: installing {REQUIREMENTS.name} (torch is large)", file=sys.stderr)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-r", str(REQUIREMENTS)], check=True)
        stamp.write_text(wanted)
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--threads", type=int, default=2, help="threads of every engine (default 2)")
    p.add_argument("--reps", type=int, default=5, help="timed calls per row and round (default 5)")
    p.add_argument("--budget", type=float, default=0.5,
                   help="seconds after which a row stops once it has 3 calls (default 0.5)")
    p.add_argument("--shapes", help="comma-separated sweep ids (default: all)")
    p.add_argument("--no-build", action="store_true", help="do not run cargo build first")
    p.add_argument("--out", default=str(TARGET / "sweep"),
                   help="directory of the JSON, raw rounds and CSV (default target/sweep)")
    p.add_argument("--report", help="BENCHMARKS.md to write the sweep block into "
                   "(default: BENCHMARKS.md for a full sweep, none for a subset)")
    p.add_argument("--chart", help="SVG chart (default: BENCHMARKS-sweep.svg beside the report)")
    p.add_argument("--note", help="a line under the block's heading (e.g. PRELIMINARY: ...)")
    p.add_argument("--passive", action="store_true",
                   help="idle worker threads sleep instead of spinning: OMP_WAIT_POLICY=PASSIVE "
                   "for PyTorch, session.intra_op.allow_spinning=0 for ONNX Runtime (rayon's "
                   "threads sleep on their own). On a machine that others load, spinning "
                   "threads wait for descheduled ones: PyTorch's forward measured 5x slower "
                   "with 2 spinning threads at load 6 on 2 cores. Leave it off on a quiet machine.")
    return p.parse_args()


def median_of(reps, budget, call):
    """Median seconds of up to `reps` timed calls after one warm-up; `call` returns seconds."""
    call()
    start = time.perf_counter()
    times = []
    while len(times) < reps and (len(times) < 3 or time.perf_counter() - start < budget):
        times.append(call())
    return statistics.median(times)


def timed(fn):
    def call():
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t
    return call


# ---------------------------------------------------------------------------------------------
# PyTorch

def torch_module(torch, s, dtype):
    nn = torch.nn
    layers = [nn.ConvTranspose2d(
        s["in_channels"], s["filters"], kernel_size=tuple(s["kernel"]), stride=tuple(s["stride"]),
        padding=tuple(s["pad"]), output_padding=tuple(s["output_padding"]), groups=s["groups"],
        bias=not s["batch_normalize"], dilation=tuple(s["dilation"]))]
    if s["batch_normalize"]:
        layers.append(nn.BatchNorm2d(s["filters"]))
    act = {
        "linear": None,
        "relu": nn.ReLU(),
        "leaky": nn.LeakyReLU(0.1),
        "logistic": nn.Sigmoid(),
        "tanh": nn.Tanh(),
    }[s["activation"]]
    if act is not None:
        layers.append(act)
    return nn.Sequential(*layers).to(dtype)


def out_hw(s):
    return [
        (s["in_hw"][a] - 1) * s["stride"][a] - 2 * s["pad"][a]
        + s["dilation"][a] * (s["kernel"][a] - 1) + s["output_padding"][a] + 1
        for a in range(2)
    ]


def run_torch(torch, s, reps, budget):
    dtype = torch.float64 if s["dtype"] == "f64" else torch.float32
    m = torch_module(torch, s, dtype)
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(s["batch"], s["in_channels"], *s["in_hw"], generator=gen, dtype=dtype) - 0.5
    oh, ow = out_hw(s)
    g = torch.rand(s["batch"], s["filters"], oh, ow, generator=gen, dtype=dtype) - 0.5
    m.eval()
    with torch.inference_mode():
        y = m(x)
        assert list(y.shape) == [s["batch"], s["filters"], oh, ow], (s["id"], y.shape)
        inference = median_of(reps, budget, timed(lambda: m(x)))
    m.train()
    xg = x.clone().requires_grad_(True)

    def step():
        for p in m.parameters():
            p.grad = None
        xg.grad = None
        t = time.perf_counter()
        m(xg).backward(g)
        return time.perf_counter() - t

    backward = median_of(reps, budget, step)
    return {"forward_inference": inference * 1e3, "forward_backward": backward * 1e3}


# ---------------------------------------------------------------------------------------------
# ONNX Runtime

def onnx_model(onnx, np, s):
    from onnx import TensorProto, helper, numpy_helper
    elem = TensorProto.DOUBLE if s["dtype"] == "f64" else TensorProto.FLOAT
    npt = np.float64 if s["dtype"] == "f64" else np.float32
    rng = np.random.default_rng(1)
    c, n, g = s["in_channels"], s["filters"], s["groups"]
    kh, kw = s["kernel"]
    weights = (rng.standard_normal((c, n // g, kh, kw)) * 0.02).astype(npt)
    inits = [numpy_helper.from_array(weights, "W")]
    conv_inputs = ["X", "W"]
    if not s["batch_normalize"]:
        inits.append(numpy_helper.from_array(np.zeros(n, npt), "B"))
        conv_inputs.append("B")
    ph, pw = s["pad"]
    nodes = [helper.make_node(
        "ConvTranspose", conv_inputs, ["Y0"], kernel_shape=[kh, kw], strides=s["stride"],
        pads=[ph, pw, ph, pw], dilations=s["dilation"], output_padding=s["output_padding"],
        group=g)]
    last = "Y0"
    if s["batch_normalize"]:
        for name, value in (("scale", 1.0), ("bias", 0.0), ("mean", 0.0), ("var", 1.0)):
            inits.append(numpy_helper.from_array(np.full(n, value, npt), name))
        nodes.append(helper.make_node(
            "BatchNormalization", [last, "scale", "bias", "mean", "var"], ["Y1"], epsilon=1e-5))
        last = "Y1"
    act = {
        "linear": None,
        "relu": ("Relu", {}),
        "leaky": ("LeakyRelu", {"alpha": 0.1}),
        "logistic": ("Sigmoid", {}),
        "tanh": ("Tanh", {}),
    }[s["activation"]]
    if act is not None:
        nodes.append(helper.make_node(act[0], [last], ["Y2"], **act[1]))
        last = "Y2"
    oh, ow = out_hw(s)
    graph = helper.make_graph(
        nodes, s["id"].replace("-", "_"),
        [helper.make_tensor_value_info("X", elem, [s["batch"], c, *s["in_hw"]])],
        [helper.make_tensor_value_info(last, elem, [s["batch"], n, oh, ow])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString(), npt


def run_ort(ort, onnx, np, s, threads, reps, budget):
    model, npt = onnx_model(onnx, np, s)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if os.environ.get("OMP_WAIT_POLICY") == "PASSIVE":
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # e.g. NOT_IMPLEMENTED: no f64 ConvTranspose kernel
        return None, str(e).splitlines()[0][:160]
    x = (np.random.default_rng(3).random((s["batch"], s["in_channels"], *s["in_hw"])) - 0.5).astype(npt)
    out = sess.run(None, {"X": x})[0]
    assert list(out.shape) == [s["batch"], s["filters"], *out_hw(s)], (s["id"], out.shape)
    t = median_of(reps, budget, timed(lambda: sess.run(None, {"X": x})))
    return {"forward_inference": t * 1e3}, None


# ---------------------------------------------------------------------------------------------

def sweep_binary():
    return TARGET / "release" / "examples" / "sweep"


def run_deconv(s, args, bandwidth):
    cmd = [str(sweep_binary()), "--shapes", s["id"], "--threads", str(args.threads),
           "--reps", str(args.reps), "--budget", str(args.budget), "--json", "-", "--quiet"]
    if bandwidth:
        cmd.append("--bandwidth")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def median_tree(values):
    """The element-wise median of equally shaped JSON values (numbers; others from the first)."""
    first = values[0]
    if isinstance(first, dict):
        return {k: median_tree([v[k] for v in values if isinstance(v, dict) and k in v])
                for k in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        nums = [v for v in values if isinstance(v, (int, float))]
        return statistics.median(nums)
    return first


def main():
    args = parse_args()
    if not in_venv():
        ensure_venv()
    if args.passive:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read when torch's OpenMP starts
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--example", "sweep"], cwd=ROOT, check=True)
    listed = json.loads(subprocess.run([str(sweep_binary()), "--list", "-"], check=True,
                                       capture_output=True, text=True).stdout)["shapes"]
    if args.shapes:
        ids = args.shapes.split(",")
        unknown = set(ids) - {s["id"] for s in listed}
        if unknown:
            sys.exit(f"peers: no sweep shape {sorted(unknown)}")
        listed = [s for s in listed if s["id"] in ids]
    full = not args.shapes
    report = args.report or (str(ROOT / "BENCHMARKS.md") if full else None)
    chart = args.chart or (str(Path(report).with_name("BENCHMARKS-sweep.svg")) if report else None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    versions = f"torch {torch.__version__}, onnxruntime {ort.__version__}, onnx {onnx.__version__}"
    print(f"peers: {len(listed)} shapes, {args.rounds} rounds, {args.threads} threads; {versions}",
          file=sys.stderr)
    engines = ("deconv", "pytorch", "onnxruntime")
    rounds = []  # rounds[r][shape id] = {"deconv": doc record, "pytorch": ..., "onnxruntime": ...}
    metas = []
    ort_notes = {}
    started = time.perf_counter()
    loads = [os.getloadavg()[0]]
    for r in range(args.rounds):
        this = {}
        for i, s in enumerate(listed):
            rec = {}
            # Rotate the engine order per round and shape, so none always runs first.
            order = [engines[(j + r + i) % 3] for j in range(3)]
            for engine in order:
                if engine == "deconv":
                    doc = run_deconv(s, args, bandwidth=(i == 0))
                    if i == 0:
                        metas.append(doc["meta"])
                    rec["deconv"] = doc["shapes"][0]
                elif engine == "pytorch":
                    rec["pytorch"] = run_torch(torch, s, args.reps, args.budget)
                else:
                    rec["onnxruntime"], note = run_ort(ort, onnx, np, s, args.threads,
                                                       args.reps, args.budget)
                    if note:
                        ort_notes[s["id"]] = note
                time.sleep(0.05)  # let spinning worker threads of the last engine go idle
            this[s["id"]] = rec
            loads.append(os.getloadavg()[0])
            d = rec["deconv"]
            auto = d.get("auto_ms") or d[d["auto"].split("/")[0]]
            ortf = rec["onnxruntime"]["forward_inference"] if rec["onnxruntime"] else float("nan")
            print(f"round {r + 1}/{args.rounds} {s['id']:<15} deconv {auto['forward_inference']:8.3f} "
                  f"{auto['forward_backward']:8.3f} ms  pytorch {rec['pytorch']['forward_inference']:8.3f} "
                  f"{rec['pytorch']['forward_backward']:8.3f} ms  ort {ortf:8.3f} ms", file=sys.stderr)
        rounds.append(this)
    elapsed = time.perf_counter() - started
    (out / "rounds.json").write_text(json.dumps(rounds, indent=1) + "\n")

    shapes = []
    for s in listed:
        recs = [rd[s["id"]] for rd in rounds]
        d = median_tree([rec["deconv"] for rec in recs])
        # An algorithm that does not apply is null in every round.
        for alg in ("columns", "phases", "direct"):
            if any(rec["deconv"][alg] is None for rec in recs):
                d[alg] = None
        d["auto"] = statistics.mode([rec["deconv"]["auto"] for rec in recs])
        ort_recs = [rec["onnxruntime"] for rec in recs if rec["onnxruntime"]]
        d["peers"] = {
            "pytorch": median_tree([rec["pytorch"] for rec in recs]),
            "onnxruntime": median_tree(ort_recs) if ort_recs else None,
        }
        shapes.append(d)
    meta = dict(metas[0])
    meta["copy_gbps"] = statistics.median(m.get("copy_gbps", float("nan")) for m in metas)
    binary = os.path.relpath(sweep_binary(), ROOT)
    meta["command"] = (f"{binary} --shapes <one shape> --threads {args.threads} --reps {args.reps} "
                       f"--budget {args.budget} --json - --quiet (per shape and round)")
    shown = list(sys.argv[1:])
    if "--note" in shown[:-1]:
        shown[shown.index("--note") + 1] = "'...'"  # the note is printed on its own
    meta["peers_command"] = " ".join(["python3 benches/peers.py", *shown])
    meta["peers_versions"] = versions
    meta["timing"] = (f"{args.rounds} interleaved rounds (deconv, PyTorch, ONNX Runtime shape by "
                      f"shape, order rotated), each row the median of up to {args.reps} timed calls "
                      f"after a warm-up; the figure is the median of the rounds' medians; "
                      f"the whole run took {elapsed / 60:.1f} min")
    meta["load"] = (f"1-minute load average during the run (the machine has "
                    f"{os.cpu_count()} cores): min {min(loads):.1f}, median "
                    f"{statistics.median(loads):.1f}, max {max(loads):.1f}"
                    + ("; idle threads sleep (--passive)" if args.passive else ""))
    if ort_notes:
        meta["onnxruntime_missing"] = ort_notes
    if args.note:
        meta["note"] = args.note
    doc = {"meta": meta, "shapes": shapes}
    doc_path = out / "sweep.json"
    doc_path.write_text(json.dumps(doc, indent=1) + "\n")
    render = [str(sweep_binary()), "--render", str(doc_path), "--csv", str(out / "sweep.csv")]
    if report:
        render += ["--report", report]
    if chart:
        render += ["--chart", chart]
    subprocess.run(render, check=True)
    print(f"peers: {elapsed / 60:.1f} min; wrote {doc_path}"
          + (f", {report}" if report else "") + (f", {chart}" if chart else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
