#!/usr/bin/env python3
"""Families as plugin libraries against the statically linked engine: the same Mask R-CNN
latency (bench_mask_rcnn, one photo, per-node medians), the same 20-photo stream through
`engine run pipelines/mask_rcnn_r50_fpn.toml`, and the TF.js demo (`engine run
pipelines/demo.toml`), run by this checkout's binaries and by a baseline checkout's (the last
commit before the families became libraries), alternating round by round on the same machine.

    git worktree add /tmp/baseline de9ab2f
    (cd /tmp/baseline && cargo build --release -p engine -p plugin-rcnn --example bench_mask_rcnn)
    cargo build --release -p engine --example bench_mask_rcnn
    python3 tests/reference/bench_libraries.py --baseline /tmp/baseline [--rounds 3] [--stream 20]

The weights are bench_mask_rcnn.py's (generated ResNet-50-FPN Mask R-CNN, needs torch once to
write them; afterwards they are reused from target/bench-rcnn/). The demo needs the TF.js
models (scripts/fetch-models.sh); the baseline checkout gets a link to this one's models/.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
WORK = os.path.join(ROOT, "target", "bench-rcnn")
WEIGHTS = os.path.join(WORK, "maskrcnn_r50_fpn_generated.pth")
NODES = ["backbone", "fpn", "rpn", "box_head", "mask_head"]


def weights():
    if not os.path.exists(WEIGHTS):
        import torch

        sys.path.insert(0, HERE)
        from bench_mask_rcnn import build_r50

        os.makedirs(WORK, exist_ok=True)
        _, state = build_r50()
        torch.save(state, WEIGHTS)
    return WEIGHTS


def run(cmd, cwd, env):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    out = r.stdout + r.stderr
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out}")
    return out


def latency(root, env, reps):
    exe = os.path.join(root, "target", "release", "examples", "bench_mask_rcnn")
    photo = os.path.join(ROOT, "assets", "chelsea.png")
    out = run([exe, WEIGHTS, photo, os.path.join(WORK, "libs.json"), str(reps), "50"], root, env)
    return float(re.search(r"total ([0-9.]+) ms", out).group(1))


def stream(root, env, n):
    stream_dir = os.path.join(WORK, "stream")
    os.makedirs(stream_dir, exist_ok=True)
    photos = sorted(p for p in os.listdir(os.path.join(ROOT, "assets")) if p.endswith(".png"))
    for k in range(n):
        dst = os.path.join(stream_dir, f"{k:03d}.png")
        if not os.path.exists(dst):
            os.symlink(os.path.join(ROOT, "assets", photos[k % len(photos)]), dst)
    cmd = [os.path.join(root, "target", "release", "engine"), "run",
           os.path.join(root, "pipelines", "mask_rcnn_r50_fpn.toml"),
           "--set", f"nodes.images.path={stream_dir}/*.png",
           "--set", f"nodes.json.path={WORK}/libs_stream.json",
           "--set", f"nodes.overlay.dir={WORK}/libs_stream_overlays"]
    for node in NODES:
        cmd += ["--set", f"nodes.{node}.weights={WEIGHTS}"]
    out = run(cmd, root, env)
    return float(re.search(r"wall time ([0-9.]+) s", out).group(1))


def demo(root, env):
    models = os.path.join(root, "models")
    if not os.path.exists(models):
        os.symlink(os.path.join(ROOT, "models"), models)
    out = run([os.path.join(root, "target", "release", "engine"), "run", "pipelines/demo.toml"],
              root, env)
    return float(re.search(r"wall time ([0-9.]+) s", out).group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", required=True, help="checkout of the statically linked engine, built with --release")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--stream", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    weights()
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    env.pop("ENGINE_PLUGIN_PATH", None)
    sides = [("static (baseline)", os.path.abspath(args.baseline)), ("libraries", ROOT)]
    results = {name: {"latency ms": [], "stream s": [], "demo s": []} for name, _ in sides}
    for rnd in range(args.rounds):
        # Alternate which side goes first, so that neither always runs on a warmer machine.
        order = sides if rnd % 2 == 0 else sides[::-1]
        for name, root in order:
            r = results[name]
            r["latency ms"].append(latency(root, env, args.reps))
            if args.stream > 0:
                r["stream s"].append(stream(root, env, args.stream))
            r["demo s"].append(demo(root, env))
            print(f"round {rnd + 1}, {name}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in r.items() if v), flush=True)
    print(f"\n| measure | static (baseline), median | libraries, median | libraries / static | per round (static; libraries) |")
    print("|---|---|---|---|---|")
    base, libs = results[sides[0][0]], results[sides[1][0]]
    for key in base:
        if not base[key]:
            continue
        a, b = statistics.median(base[key]), statistics.median(libs[key])
        rounds = ", ".join(f"{x:.2f}" for x in base[key]) + "; " + ", ".join(f"{x:.2f}" for x in libs[key])
        print(f"| {key} | {a:.2f} | {b:.2f} | {b / a:.3f} | {rounds} |")


if __name__ == "__main__":
    main()
