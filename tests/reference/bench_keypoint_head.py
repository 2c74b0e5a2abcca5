#!/usr/bin/env python3
"""roi_keypoint_head against torchvision's keypoint branch, same inputs and weights, one run.

    pip install torch torchvision numpy
    cargo build --release -p plugin-rcnn --example bench_keypoint_head
    python3 tests/reference/bench_keypoint_head.py [--boxes 100] [--reps 5] [--threads 2]

torchvision side: `keypointrcnn_resnet50_fpn(weights=None)`'s `roi_heads` with its own random
initialisation, timed from the FPN levels and boxes to the keypoints:
`keypoint_roi_pool` (MultiScaleRoIAlign 14x14) -> `keypoint_head` (eight 3x3 convolutions,
512 channels) -> `keypoint_predictor` (4x4 transposed convolution, 2x bilinear) ->
`keypointrcnn_inference` (bicubic resampling to each box, argmax). Inputs: random FPN levels of
an 800x1216 image and N random boxes (10-400 px wide and high, seeded). Ours: the same weights
(saved with torch.save) through `KeypointHead::forward`. Prints the medians, the ratio, and
the largest keypoint difference between the two.
"""

import argparse
import json
import os
import subprocess
import tempfile
import time
from collections import OrderedDict

import numpy as np
import torch
from torchvision.models.detection import keypointrcnn_resnet50_fpn
from torchvision.models.detection.roi_heads import keypointrcnn_inference

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--boxes", type=int, default=100)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    rh = keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval().roi_heads
    h, w = 800, 1216
    feats = OrderedDict(
        (k, torch.randn(1, 256, h // s, w // s)) for k, s in zip("0123", (4, 8, 16, 32))
    )
    rng = np.random.default_rng(0)
    wh = rng.uniform(10, 400, size=(args.boxes, 2))
    xy = rng.uniform(0, 1, size=(args.boxes, 2)) * (np.array([w, h]) - wh)
    boxes = torch.from_numpy(np.concatenate([xy, xy + wh], axis=1).astype(np.float32))

    def theirs():
        with torch.no_grad():
            x = rh.keypoint_roi_pool(feats, [boxes], [(h, w)])
            x = rh.keypoint_predictor(rh.keypoint_head(x))
            kp, sc = keypointrcnn_inference(x, [boxes])
        return kp[0], sc[0]

    kp, sc = theirs()
    times = []
    for _ in range(args.reps):
        t = time.perf_counter()
        theirs()
        times.append((time.perf_counter() - t) * 1e3)
    torch_ms = float(np.median(times))

    with tempfile.TemporaryDirectory() as d:
        wpath, ipath = os.path.join(d, "weights.pth"), os.path.join(d, "inputs.pth")
        state = {f"roi_heads.{k}": v for k, v in rh.state_dict().items() if k.startswith("keypoint")}
        torch.save(state, wpath)
        inputs = {f"p{i + 2}": feats[str(i)].contiguous() for i in range(4)}
        inputs["boxes"] = boxes
        inputs["image_size"] = torch.tensor([h, w], dtype=torch.int64)
        torch.save(inputs, ipath)
        exe = os.path.join(ROOT, "target", "release", "examples", "bench_keypoint_head")
        env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
        out = subprocess.run([exe, wpath, ipath, str(args.reps)], env=env, check=True,
                             capture_output=True, text=True).stdout
    ours = json.loads(out.strip().splitlines()[-1])
    our_kp = np.array(ours["keypoints"], dtype=np.float32).reshape(kp.shape)
    our_sc = np.array(ours["scores"], dtype=np.float32).reshape(sc.shape)
    dpx = float(np.abs(our_kp - kp.numpy()).max())
    dsc = float(np.abs(our_sc - sc.numpy()).max())
    print(f"keypoint head, {args.boxes} boxes on 800x1216 FPN levels, {args.threads} threads, "
          f"median of {args.reps} (torch {torch.__version__})")
    print("| work | ours (ms) | torchvision (ms) | ours / torchvision |")
    print("|---|---:|---:|---:|")
    print(f"| roi_keypoint_head, {args.boxes} boxes | {ours['median_ms']:.1f} | {torch_ms:.1f} | "
          f"{ours['median_ms'] / torch_ms:.2f} |")
    print(f"largest differences: keypoints {dpx:.2e} px, scores {dsc:.2e}")


if __name__ == "__main__":
    main()
