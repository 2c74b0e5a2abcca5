#!/usr/bin/env python3
"""roi_densepose_head against Detectron2's DensePose head, same inputs and weights, one run.

    # detectron2's source at 02b5c4e2 on sys.path, as for make_densepose_fixtures.py
    cargo build --release -p plugin-rcnn --example bench_densepose_head
    DETECTRON2_REPO=/tmp/detectron2 python3 tests/reference/bench_densepose_head.py \\
        [--boxes 20] [--reps 5] [--threads 2]

Detectron2 side: `DensePoseROIHeads` of `densepose_rcnn_R_50_FPN_s1x.yaml` at full size (the
semantic-FPN decoder with 256 channels, eight 3x3 convolutions of 512, the chart predictor:
112x112 charts), its own random initialisation, timed from the FPN levels and boxes to each
box's DensePose result: `_forward_densepose` then `densepose_chart_predictor_output_to_result`
per box (what the evaluator and `apply_net` run). Inputs: random FPN levels of an 800x1216
image and N random person-like boxes (40-400 px wide, 80-600 px high, seeded), in original
pixels (no resize). Ours: the same weights (saved with torch.save) through
`DensePoseHead::forward`. Prints the medians, the ratio, and how many body-part pixels agree.
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

DETECTRON2_REPO = os.environ.get("DETECTRON2_REPO", "/tmp/detectron2")
sys.path.insert(0, DETECTRON2_REPO)
sys.path.insert(0, os.path.join(DETECTRON2_REPO, "projects", "DensePose"))

from detectron2.config import get_cfg  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from densepose import add_densepose_config  # noqa: E402
from densepose.converters.chart_output_to_chart_result import (  # noqa: E402
    densepose_chart_predictor_output_to_result,
)
from densepose.modeling.roi_heads.roi_head import DensePoseROIHeads  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
STRIDES = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--boxes", type=int, default=20)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    cfg = get_cfg()
    add_densepose_config(cfg)
    cfg.merge_from_file(os.path.join(DETECTRON2_REPO, "projects", "DensePose", "configs",
                                     "densepose_rcnn_R_50_FPN_s1x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    heads = DensePoseROIHeads(cfg, {k: ShapeSpec(channels=256, stride=s) for k, s in STRIDES.items()})
    heads.eval()
    # Detectron2 initialises the predictor to zeros-ish values; spread the outputs so the
    # argmaxes are not all ties.
    with torch.no_grad():
        for name, p in heads.named_parameters():
            if name.startswith(("decoder.", "densepose_head.", "densepose_predictor.")):
                fan_in = p[0].numel() if p.dim() > 1 else 1
                p.copy_(torch.randn_like(p) * (1.0 / fan_in) ** 0.5)
    h, w = 800, 1216
    feats = {k: torch.randn(1, 256, h // s, w // s) for k, s in STRIDES.items() if k != "p6"}
    rng = np.random.default_rng(0)
    wh = np.stack([rng.uniform(40, 400, args.boxes), rng.uniform(80, 600, args.boxes)], axis=1)
    xy = rng.uniform(0, 1, size=(args.boxes, 2)) * (np.array([w, h]) - wh)
    boxes = torch.from_numpy(np.concatenate([xy, xy + wh], axis=1).astype(np.float32))

    def theirs():
        with torch.no_grad():
            inst = Instances((h, w))
            inst.pred_boxes = Boxes(boxes)
            inst.pred_classes = torch.zeros(len(boxes), dtype=torch.int64)
            out = heads._forward_densepose(feats, [inst])[0]
            return [
                densepose_chart_predictor_output_to_result(out.pred_densepose[k], out.pred_boxes[k])
                for k in range(len(out))
            ]

    results = theirs()
    times = []
    for _ in range(args.reps):
        t = time.perf_counter()
        theirs()
        times.append((time.perf_counter() - t) * 1e3)
    ref_ms = float(np.median(times))

    with tempfile.TemporaryDirectory() as d:
        wpath, ipath = os.path.join(d, "weights.pth"), os.path.join(d, "inputs.pth")
        state = {
            f"roi_heads.{k}": v
            for k, v in heads.state_dict().items()
            if k.startswith(("decoder.", "densepose_head.", "densepose_predictor."))
        }
        torch.save(state, wpath)
        inputs = {k: v.contiguous() for k, v in feats.items()}
        inputs["boxes"] = boxes
        inputs["image_size"] = torch.tensor([h, w], dtype=torch.int64)
        torch.save(inputs, ipath)
        exe = os.path.join(ROOT, "target", "release", "examples", "bench_densepose_head")
        env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
        out = subprocess.run([exe, wpath, ipath, str(args.reps)], env=env, check=True,
                             capture_output=True, text=True).stdout
    ours = json.loads(out.strip().splitlines()[-1])
    agree = total = 0
    for r, (labels, box) in zip(results, zip(ours["labels"], ours["boxes"])):
        theirs_l = r.labels.numpy()
        ours_l = np.array(labels, dtype=np.int64).reshape(theirs_l.shape)
        fg = (ours_l > 0) | (theirs_l > 0)
        total += int(fg.sum())
        agree += int((fg & (ours_l == theirs_l)).sum())
    print(f"DensePose head, {args.boxes} boxes on 800x1216 FPN levels, {args.threads} threads, "
          f"median of {args.reps} (torch {torch.__version__}, detectron2 02b5c4e2)")
    print("| work | ours (ms) | Detectron2 (ms) | ours / Detectron2 |")
    print("|---|---:|---:|---:|")
    print(f"| roi_densepose_head, {args.boxes} boxes (head + per-box results) | "
          f"{ours['median_ms']:.1f} | {ref_ms:.1f} | {ours['median_ms'] / ref_ms:.2f} |")
    print(f"body-part pixels agreeing: {agree} of {total} ({100.0 * agree / max(total, 1):.3f}%)")


if __name__ == "__main__":
    main()
