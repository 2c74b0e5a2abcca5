#!/usr/bin/env python3
"""Panoptic FPN's semantic head and fusion against Detectron2's, same inputs and weights, one run.

    # detectron2's source at 02b5c4e2 on sys.path, as for make_panoptic_fpn_fixtures.py
    cargo build --release -p plugin-rcnn --example bench_panoptic_head
    DETECTRON2_REPO=/tmp/detectron2 python3 tests/reference/bench_panoptic_fpn.py \\
        [--instances 30] [--reps 5] [--threads 2] [--rounds 3] [--exe A --exe B]

Detectron2 side, as `PanopticFPN.forward` runs it at inference after the backbone and the
instance branch: `SemSegFPNHead` of `Base-Panoptic-FPN.yaml` (128 channels, GroupNorm, 54
classes) on the FPN levels, `sem_seg_postprocess` to the photo, `argmax(dim=0)`, and
`combine_semantic_and_instance_outputs` (overlap 0.5, stuff area 4096, score 0.5) with the
instances. The sizes are those of a 480x720 photo at the default test size: resized to
800x1200, padded to 800x1216. Inputs: random FPN levels, the head's own initialisation spread
out (so that the argmax is not all ties), and N instances with elliptic masks at the photo's
size and seeded scores. Ours: the same weights (torch.save) through `sem_seg_fpn_head` and
`panoptic_fusion`'s computations. Prints the medians, the ratio, and how many pixels of the
segment maps differ.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402

DETECTRON2_REPO = os.environ.get("DETECTRON2_REPO", "/tmp/detectron2")
sys.path.insert(0, DETECTRON2_REPO)

from detectron2.config import get_cfg  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling.meta_arch.panoptic_fpn import (  # noqa: E402
    combine_semantic_and_instance_outputs,
)
from detectron2.modeling.meta_arch.semantic_seg import SemSegFPNHead  # noqa: E402
from detectron2.modeling.postprocessing import sem_seg_postprocess  # noqa: E402
from detectron2.structures import Instances  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
STRIDES = {"p2": 4, "p3": 8, "p4": 16, "p5": 32}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=30)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="alternate the sides this often")
    ap.add_argument("--exe", action="append",
                    help="our bench_panoptic_head binary (repeat to compare builds)")
    ap.add_argument("--save-dir", help="keep the weights and inputs here (for profiling)")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(DETECTRON2_REPO, "configs", "COCO-PanopticSegmentation",
                                     "Base-Panoptic-FPN.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    head = SemSegFPNHead(cfg, {k: ShapeSpec(channels=256, stride=s) for k, s in STRIDES.items()})
    head.eval()
    with torch.no_grad():
        for p in head.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.copy_(torch.randn_like(p) * (1.0 / fan_in) ** 0.5)
    (oh, ow), (rh, rw), (ph, pw) = (480, 720), (800, 1200), (800, 1216)
    feats = {k: torch.randn(1, 256, ph // s, pw // s) for k, s in STRIDES.items()}
    rng = np.random.default_rng(0)
    n = args.instances
    yy, xx = np.mgrid[0:oh, 0:ow]
    masks = np.zeros((n, oh, ow), dtype=np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(0, oh), rng.uniform(0, ow)
        ry, rx = rng.uniform(10, 120), rng.uniform(10, 160)
        masks[i] = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.uint8)
    scores = rng.uniform(0.3, 1.0, n).astype(np.float32)
    classes = rng.integers(0, 80, n).astype(np.int64)
    thresh = cfg.MODEL.PANOPTIC_FPN.COMBINE

    def theirs():
        with torch.no_grad():
            logits, _ = head(feats)
            sem = sem_seg_postprocess(logits[0], (rh, rw), oh, ow)
            inst = Instances((oh, ow))
            inst.scores = torch.from_numpy(scores)
            inst.pred_classes = torch.from_numpy(classes)
            inst.pred_masks = torch.from_numpy(masks).bool()
            return combine_semantic_and_instance_outputs(
                inst, sem.argmax(dim=0), thresh.OVERLAP_THRESH, thresh.STUFF_AREA_LIMIT,
                thresh.INSTANCES_CONFIDENCE_THRESH)

    seg, _ = theirs()

    def reference_ms():
        times = []
        for _ in range(args.reps):
            t = time.perf_counter()
            theirs()
            times.append((time.perf_counter() - t) * 1e3)
        return float(np.median(times))

    exes = args.exe or [os.path.join(ROOT, "target", "release", "examples",
                                      "bench_panoptic_head")]
    with tempfile.TemporaryDirectory() as d:
        d = args.save_dir or d
        wpath, ipath = os.path.join(d, "weights.pth"), os.path.join(d, "inputs.pth")
        torch.save({f"sem_seg_head.{k}": v for k, v in head.state_dict().items()}, wpath)
        inputs = {k: v.contiguous() for k, v in feats.items()}
        inputs.update({
            "image_size": torch.tensor([rh, rw]), "original_size": torch.tensor([oh, ow]),
            "padded_size": torch.tensor([ph, pw]), "masks": torch.from_numpy(masks),
            "scores": torch.from_numpy(scores), "classes": torch.from_numpy(classes),
        })
        torch.save(inputs, ipath)
        env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
        # The sides alternate, round after round, so that they share the machine's load.
        rounds = []
        for _ in range(args.rounds):
            row = [reference_ms()]
            for exe in exes:
                out = subprocess.run([exe, wpath, ipath, str(args.reps)], env=env, check=True,
                                     capture_output=True, text=True).stdout
                ours = json.loads(out.strip().splitlines()[-1])
                differ = int((np.array(ours["segments"]).reshape(oh, ow) != seg.numpy()).sum())
                row.append((ours["median_ms"], differ))
            rounds.append(row)
    print(f"Panoptic FPN semantic head + fusion, {oh}x{ow} photo at {rh}x{rw} (padded "
          f"{ph}x{pw}), {n} instances, {args.threads} threads, median of {args.reps}, "
          f"{args.rounds} interleaved rounds (torch {torch.__version__}, detectron2 02b5c4e2, "
          f"{machine.cpu_name()})")
    print("| round | Detectron2 (ms) | " + " | ".join(
        f"ours{'' if len(exes) == 1 else ' ' + os.path.basename(e)} (ms) | ratio"
        for e in exes) + " |")
    print("|---|---:|" + "---:|---:|" * len(exes))
    for r, row in enumerate(rounds):
        print(f"| {r + 1} | {row[0]:.1f} | " + " | ".join(
            f"{ms:.1f} | {ms / row[0]:.2f}" for ms, _ in row[1:]) + " |")
    ref = float(np.median([row[0] for row in rounds]))
    print(f"| median | {ref:.1f} | " + " | ".join(
        f"{float(np.median([row[k][0] for row in rounds])):.1f} | "
        f"{float(np.median([row[k][0] / row[0] for row in rounds])):.2f}"
        for k in range(1, len(exes) + 1)) + " |")
    differ = max(d for row in rounds for _, d in row[1:])
    print(f"segment map pixels differing: {differ} of {oh * ow}")


if __name__ == "__main__":
    main()
