#!/usr/bin/env python3
"""ResNet-50-FPN backbone (torchvision's maskrcnn_resnet50_fpn.backbone): our nodes against
torchvision in the same run, same weights, same photo, same thread count, plus a full-size
correctness check (every element of every FPN level).

    cargo build --release -p engine --example bench_resnet_fpn
    python3 tests/reference/bench_resnet_fpn.py [--threads 2] [--reps 5]

The weights (maskrcnn_resnet50_fpn's architecture, i.e. MaskRCNN(resnet_fpn_backbone("resnet50")),
with torchvision's own random init, seeded, the FrozenBatchNorm statistics randomised and
eps 0 as the COCO model) are written to
target/bench-rcnn/ and never committed (170 MB). The photo is assets/chelsea.png, which
GeneralizedRCNNTransform turns into an 800x1216 (padded) input. RAYON_NUM_THREADS and
torch.set_num_threads get the same count.
"""

import argparse
import os
import statistics
import subprocess
import time

import numpy as np
import torch
from PIL import Image
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection._utils import overwrite_eps

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
WORK = os.path.join(ROOT, "target", "bench-rcnn")


def build_model():
    """MaskRCNN(resnet_fpn_backbone("resnet50")) with torchvision's own random init (seed the
    generator first) and randomised FrozenBatchNorm statistics, eps 0 as the COCO model."""
    # maskrcnn_resnet50_fpn(weights=None) would use nn.BatchNorm2d (torchvision only freezes
    # the norm when it loads trained weights); the COCO model's body has FrozenBatchNorm2d,
    # which resnet_fpn_backbone uses, so build it from that.
    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None, trainable_layers=5)
    model = MaskRCNN(backbone, num_classes=91)
    model.eval()
    overwrite_eps(model, 0.0)
    with torch.no_grad():
        for m in model.backbone.body.modules():
            if type(m).__name__ == "FrozenBatchNorm2d":
                c = m.weight.shape[0]
                m.weight.copy_(torch.rand(c) * 0.5 + 0.5)
                m.bias.copy_(torch.rand(c) * 0.2 - 0.1)
                m.running_mean.copy_(torch.rand(c) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(c) + 0.5)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--photo", default=os.path.join(ROOT, "assets", "chelsea.png"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    os.makedirs(WORK, exist_ok=True)

    model = build_model()
    weights = os.path.join(WORK, "maskrcnn_r50_fpn_random.pth")
    torch.save(model.state_dict(), weights)

    img = np.asarray(Image.open(args.photo).convert("RGB"))
    x = torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255.0
    times = {"transform": [], "body": [], "fpn": []}
    with torch.no_grad():
        for _ in range(args.reps):
            t0 = time.perf_counter()
            images, _ = model.transform([x])
            t1 = time.perf_counter()
            body = model.backbone.body(images.tensors)
            t2 = time.perf_counter()
            fpn = model.backbone.fpn(body)
            t3 = time.perf_counter()
            times["transform"].append((t1 - t0) * 1e3)
            times["body"].append((t2 - t1) * 1e3)
            times["fpn"].append((t3 - t2) * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"torchvision {torch.__version__} input {list(images.tensors.shape)}: "
        f"transform {med['transform']:.1f} ms, body {med['body']:.1f} ms, fpn {med['fpn']:.1f} ms, "
        f"total {sum(med.values()):.1f} ms (median of {args.reps}, {torch.get_num_threads()} threads)"
    )

    out_dir = os.path.join(WORK, "ours")
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    exe = os.path.join(ROOT, "target", "release", "examples", "bench_resnet_fpn")
    r = subprocess.run(
        [exe, weights, args.photo, out_dir, str(args.reps), "50"],
        env=env, capture_output=True, text=True,
    )
    print(r.stdout.strip())
    if r.returncode != 0:
        raise SystemExit(r.stderr)

    # Ground truth in float64: how far are torchvision's own float32 results from it?
    with torch.no_grad():
        m64 = model.double()
        body64 = m64.backbone.body(images.tensors.double())
        fpn64 = m64.backbone.fpn(body64)
    for ours, theirs in [("c2", "0"), ("c3", "1"), ("c4", "2"), ("c5", "3")]:
        ref = body[theirs][0].numpy()
        got = np.fromfile(os.path.join(out_dir, f"{ours}.f32"), dtype="<f4").reshape(ref.shape)
        truth = body64[theirs][0].numpy()
        scale = float(np.abs(truth).max())
        print(
            f"  resnet {ours} ({theirs}) {list(ref.shape)}, max |truth| {scale:.3g}: max |x - truth| / max |truth|: "
            f"torchvision f32 {np.abs(ref - truth).max() / scale:.2e}, ours {np.abs(got - truth).max() / scale:.2e}"
        )
    worst = 0.0
    for ours, theirs in [("p2", "0"), ("p3", "1"), ("p4", "2"), ("p5", "3"), ("p6", "pool")]:
        ref = fpn[theirs][0].numpy()
        got = np.fromfile(os.path.join(out_dir, f"{ours}.f32"), dtype="<f4").reshape(ref.shape)
        err = np.abs(got - ref) / np.maximum(1.0, np.abs(ref))
        worst = max(worst, float(err.max()))
        scale = float(np.abs(ref).max())
        print(
            f"  {ours} ({theirs}) {list(ref.shape)}: max |a-b|/max(1,|b|) = {err.max():.2e}, "
            f"max |a-b| = {np.abs(got - ref).max():.3g} = {np.abs(got - ref).max() / scale:.2e} of max |b| ({scale:.3g}), "
            f"std of b {ref.std():.3g}"
        )
        truth = fpn64[theirs][0].numpy()
        print(
            f"      vs float64 torch, max |x - truth| / max |truth|: torchvision f32 "
            f"{np.abs(ref - truth).max() / scale:.2e}, ours {np.abs(got - truth).max() / scale:.2e}"
        )
    print(f"full-size check: max relative error {worst:.2e} ({'ok' if worst <= 1e-4 else 'FAIL'} at 1e-4)")


if __name__ == "__main__":
    main()
