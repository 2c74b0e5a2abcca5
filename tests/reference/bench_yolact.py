#!/usr/bin/env python3
"""YOLACT-550 R50 through the engine's libraries against the official code, same weights and
photos, one run.

    pip install torch torchvision numpy pillow opencv-python-headless
    cargo build --release -p plugin-yolact -p plugin-backbones --example bench_yolact
    YOLACT_REPO=/tmp/yolact python3 tests/reference/bench_yolact.py [--reps 10] [--rounds 1] [--threads 2]

Official side: dbolya/yolact @ 902073d4 imported as make_yolact_fixtures.py does (its CPU
patches and generated weights, `yolact_resnet50_config`), timed from the BGR frame tensor to
postprocess's outputs as `evalimage` runs them (FastBaseTransform, `net(batch)` with
Detect/FastNMS, `postprocess(..., crop_masks=True, score_threshold=0)`). Ours:
`bench_yolact` (yolact_preprocess -> resnet -> yolact from their plugin libraries) on the same
weights (torch.save) and photo, with each node's median. Photos: assets/chelsea.png and a
1024x768 resize of it (the masks are resized to the photo). Prints medians, ratios, and
whether the detections are the same. With `--rounds N` the two sides alternate N times
(`--reps` each per round), and each side's figure is the median of its round medians, so
that a slow spell of a shared machine falls on both.
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
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_yolact_fixtures as fx  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    yolact, data_config, output_utils, fast_base_transform = fx.import_yolact()
    import cv2

    data_config.cfg.mask_proto_debug = False
    net = fx.build(yolact)
    state = {}
    for name, t in net.state_dict().items():
        if name.endswith("num_batches_tracked"):
            state[name] = t.clone()
        else:
            state[name] = torch.from_numpy(fx.generate(name, list(t.shape), *fx.range_of(name, list(t.shape))))
    net.load_state_dict(state, strict=True)
    transform = fast_base_transform()
    exe = os.path.join(ROOT, "target", "release", "examples", "bench_yolact")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wpath = os.path.join(tmp, "yolact_r50.pth")
        torch.save(state, wpath)
        chelsea = os.path.join(ROOT, "assets", "chelsea.png")
        big = os.path.join(tmp, "chelsea_1024x768.png")
        Image.open(chelsea).convert("RGB").resize((1024, 768), Image.BILINEAR).save(big)
        for label, path in (("chelsea.png", chelsea), ("chelsea 1024x768", big)):
            frame = torch.from_numpy(cv2.imread(path)).float()
            h, w, _ = frame.shape

            def official():
                with torch.no_grad():
                    preds = net(transform(frame.unsqueeze(0)))
                    return output_utils.postprocess(preds, w, h, visualize_lincomb=False,
                                                    crop_masks=True, score_threshold=0)

            classes, scores, _, _ = official()
            theirs_rounds, ours_rounds = [], []
            for _ in range(args.rounds):
                times = []
                for _ in range(args.reps):
                    t = time.perf_counter()
                    official()
                    times.append((time.perf_counter() - t) * 1e3)
                theirs_rounds.append(float(np.median(times)))
                env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
                out = subprocess.run([exe, wpath, path, str(args.reps)], env=env, check=True,
                                     capture_output=True, text=True).stdout
                ours_rounds.append(json.loads(out.strip().splitlines()[-1]))
            ours = {key: float(np.median([o[key] for o in ours_rounds]))
                    for key in ("median_ms", "preprocess_ms", "resnet_ms", "yolact_ms")}
            last = ours_rounds[-1]
            same = (len(last["classes"]) == len(classes)
                    and np.allclose(sorted(last["scores"]), sorted(scores.tolist()), atol=1e-4))
            rows.append((label, (h, w), ours, float(np.median(theirs_rounds)), same, len(classes)))
            print(f"{label}: rounds ours {[round(o['median_ms'], 1) for o in ours_rounds]}, "
                  f"official {[round(t, 1) for t in theirs_rounds]}", file=sys.stderr)
    print(f"YOLACT-550 R50, photo to masks, {args.threads} threads, median of {args.reps} "
          f"({args.rounds} round(s); torch {torch.__version__}, yolact 902073d4)")
    print("| photo | ours (ms) | official (ms) | ours / official | ours: preprocess / resnet / yolact (ms) | same detections |")
    print("|---|---:|---:|---:|---|---|")
    for label, (h, w), ours, theirs, same, n in rows:
        print(f"| {label} ({w}x{h}) | {ours['median_ms']:.1f} | {theirs:.1f} | {ours['median_ms'] / theirs:.2f} | "
              f"{ours['preprocess_ms']:.1f} / {ours['resnet_ms']:.1f} / {ours['yolact_ms']:.1f} | "
              f"{'yes' if same else 'NO'} ({n}) |")


if __name__ == "__main__":
    main()
