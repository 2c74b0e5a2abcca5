#!/usr/bin/env python3
"""RetinaFace through the engine's libraries against the official code, same weights and
photos, one run.

    pip install torch torchvision numpy pillow
    cargo build --release -p plugin-retinaface -p plugin-backbones --example bench_retinaface
    RETINAFACE_REPO=path/to/Pytorch_Retinaface python3 tests/reference/bench_retinaface.py [--reps 10] [--threads 2]

Official side: biubug6/Pytorch_Retinaface @ b984b4b imported as make_retinaface_fixtures.py
does (its generated weights), timed from the BGR photo to the final faces exactly as
`detect.py`'s loop body (mean subtraction, forward, PriorBox, decode, threshold, sort,
py_cpu_nms, keep_top_k). Ours: `bench_retinaface` (retinaface_preprocess -> body ->
retinaface from their plugin libraries) on the same weights (torch.save) and photo. Photos:
assets/camera.png (435x435) and a 1024x768 resize of assets/chelsea.png (a typical WIDER FACE
size). Prints medians and ratios, for the whole model and for the head alone (the total
minus the body's own median, timed separately on both sides).
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
import make_retinaface_fixtures as fx  # noqa: E402

ROOT = fx.ROOT


def official(off, net, cfg, img_raw):
    """detect.py's loop body with resize = 1 and its argparse defaults."""
    img = np.float32(img_raw)
    im_height, im_width, _ = img.shape
    scale = torch.Tensor([img.shape[1], img.shape[0], img.shape[1], img.shape[0]])
    img -= fx.MEAN_BGR
    img = torch.from_numpy(img.transpose(2, 0, 1)).unsqueeze(0)
    with torch.no_grad():
        loc, conf, landms = net(img)
    priors = off.PriorBox(cfg, image_size=(im_height, im_width)).forward()
    boxes = off.decode(loc.data.squeeze(0), priors.data, cfg["variance"]) * scale / fx.RESIZE
    boxes = boxes.cpu().numpy()
    scores = conf.squeeze(0).data.cpu().numpy()[:, 1]
    scale1 = torch.Tensor([img.shape[3], img.shape[2]] * 5)
    landms = off.decode_landm(landms.data.squeeze(0), priors.data, cfg["variance"]) * scale1 / fx.RESIZE
    landms = landms.cpu().numpy()
    inds = np.where(scores > fx.CONFIDENCE_THRESHOLD)[0]
    boxes, landms, scores = boxes[inds], landms[inds], scores[inds]
    order = scores.argsort()[::-1][: fx.TOP_K]
    boxes, landms, scores = boxes[order], landms[order], scores[order]
    dets = np.hstack((boxes, scores[:, np.newaxis])).astype(np.float32, copy=False)
    keep = off.py_cpu_nms(dets, fx.NMS_THRESHOLD)
    return dets[keep, :][: fx.KEEP_TOP_K], landms[keep][: fx.KEEP_TOP_K]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    exe = os.path.join(ROOT, "target", "release", "examples", "bench_retinaface")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        off = fx.import_official(fx.MIRROR, os.path.join(tmp, "src"))
        chelsea = Image.open(os.path.join(ROOT, "assets", "chelsea.png")).convert("RGB")
        big = os.path.join(tmp, "chelsea_1024x768.png")
        chelsea.resize((1024, 768), Image.BILINEAR).save(big)
        photos = [("camera.png", os.path.join(ROOT, "assets", "camera.png")), ("chelsea 1024x768", big)]
        for config, cfg in (("mnet", off.cfg_mnet), ("re50", off.cfg_re50)):
            cfg = dict(cfg, pretrain=False)
            net, _ = fx.build(off, cfg, fx.HEAD_SCALE[config], fx.BODY_GAIN[config])
            wpath = os.path.join(tmp, f"{config}.pth")
            torch.save({k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}, wpath)
            for label, path in photos:
                rgb = np.asarray(Image.open(path).convert("RGB"))
                bgr = np.ascontiguousarray(rgb[:, :, ::-1])
                official(off, net, cfg, bgr)
                times, body_times = [], []
                body_input = torch.from_numpy(
                    (np.float32(bgr) - fx.MEAN_BGR).astype(np.float32).transpose(2, 0, 1).copy()).unsqueeze(0)
                for _ in range(args.reps):
                    t = time.perf_counter()
                    dets, _ = official(off, net, cfg, bgr)
                    times.append((time.perf_counter() - t) * 1e3)
                    # The body alone (the IntermediateLayerGetter of RetinaFace.forward).
                    t = time.perf_counter()
                    with torch.no_grad():
                        net.body(body_input)
                    body_times.append((time.perf_counter() - t) * 1e3)
                env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
                out = subprocess.run([exe, config, wpath, path, str(args.reps)], env=env,
                                     check=True, capture_output=True, text=True).stdout
                ours = json.loads(out.strip().splitlines()[-1])
                theirs = float(np.median(times))
                theirs_body = float(np.median(body_times))
                rows.append((config, label, rgb.shape[:2], ours["median_ms"], theirs, ours["faces"], len(dets),
                             ours["median_ms"] - ours["body_median_ms"], theirs - theirs_body))
    print(f"RetinaFace, photo to faces, {args.threads} threads, median of {args.reps} "
          f"(torch {torch.__version__})")
    print("| body | photo | ours (ms) | official (ms) | ours / official | head: ours (ms) | head: official (ms) | head ratio | faces (ours, official) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for config, label, (h, w), a, b, fa, fb, ha, hb in rows:
        print(f"| {config} | {label} ({w}x{h}) | {a:.1f} | {b:.1f} | {a / b:.2f} | {ha:.1f} | {hb:.1f} | "
              f"{ha / hb:.2f} | {fa}, {fb} |")
    print("head: everything but the body (pre-processing, FPN, SSH, heads, priors, decoding, NMS), "
          "the total minus the body's median")


if __name__ == "__main__":
    main()
