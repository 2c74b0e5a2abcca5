#!/usr/bin/env python3
"""Times PyTorch on the shapes of kernels/benches/layers.rs and writes a JSON of medians (ms)
that the Rust bench reads through TORCH_TIMES:

    python3 tests/reference/bench_layers_torch.py /tmp/torch_layers.json
    TORCH_TIMES=/tmp/torch_layers.json cargo bench -p kernels --bench layers

torch.set_num_threads(2), torch.inference_mode(), NCHW fp32 (what a user runs by default),
one warm-up then the median of REPS runs. Keys match the Rust bench's row names. Also times a
full torchvision ResNet-50 forward at 224x224 batch 1 (NCHW and channels-last) for reference.
BENCH_QUICK=1 runs fewer repetitions; BENCH_ONLY=gemm|conv|resnet|mrcnn|other times one section.
Run it in the same session as the Rust bench: the
machine is shared and noisy, so only ratios measured together mean much.
"""

import json
import os
import sys
import time

import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.detection.transform import GeneralizedRCNNTransform

torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
QUICK = bool(os.environ.get("BENCH_QUICK"))
REPS = 3 if QUICK else 9
# BENCH_ONLY=gemm|conv|other times one section, as the Rust bench.
ONLY = os.environ.get("BENCH_ONLY", "")


def want(section):
    return not ONLY or ONLY == section


def median_ms(fn, reps=REPS):
    fn()
    ts = []
    for _ in range(max(reps, 1)):
        s = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - s) * 1e3)
    ts.sort()
    return ts[len(ts) // 2]


def resnet50_convs():
    """The 53 convolutions of torchvision's ResNet-50 (v1.5) at 224x224, as the Rust bench."""
    v = [(7, 2, 3, 64, 224)]
    cin, hw = 64, 56
    for blocks, width, stride in [(3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)]:
        out = width * 4
        for b in range(blocks):
            s = stride if b == 0 else 1
            v.append((1, 1, cin, width, hw))
            v.append((3, s, width, width, hw))
            ohw = hw // s
            v.append((1, 1, width, out, ohw))
            if b == 0:
                v.append((1, s, cin, out, hw))
            cin, hw = out, ohw
    assert len(v) == 53
    return v


# The 3x3 stride-1 convolutions of Mask R-CNN ResNet-50-FPN at 800x1216 (batch, channels,
# height, width), as the Rust bench's "mrcnn" section: ResNet stages 1-4, FPN and RPN at P2-P3,
# the mask head's 100 RoIs.
MRCNN_CONVS = [
    (1, 64, 200, 304),
    (1, 128, 100, 152),
    (1, 256, 50, 76),
    (1, 512, 25, 38),
    (1, 256, 200, 304),
    (1, 256, 100, 152),
    (100, 256, 14, 14),
]


def mrcnn_key(n, c, h, w):
    return "conv 3x3 %s%d@%dx%d" % ("%dx " % n if n > 1 else "", c, h, w)


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else "torch_layers.json"
    res = {}
    with torch.inference_mode():
        for n, reps in [(1024, REPS * 2), (4096, 2 if QUICK else 3)] if want("gemm") else []:
            a, b = torch.randn(n, n), torch.randn(n, n)
            c = torch.empty(n, n)
            res["sgemm %d^3" % n] = median_ms(lambda: torch.mm(a, b, out=c), reps)
        total = 0.0
        seen = {}
        for k, s, cin, cout, hw in resnet50_convs() if want("conv") else []:
            key = "conv %dx%d/%d %d->%d @%d" % (k, k, s, cin, cout, hw)
            if key not in seen:
                x = torch.randn(1, cin, hw, hw)
                w = torch.randn(cout, cin, k, k)
                seen[key] = median_ms(lambda: F.conv2d(x, w, None, s, k // 2))
                res[key] = seen[key]
            total += seen[key]
        if want("conv"):
            res["resnet50 convs total"] = total
        if want("resnet"):
            model = torchvision.models.resnet50(weights=None).eval()
            x = torch.randn(1, 3, 224, 224)
            res["resnet50 forward"] = median_ms(lambda: model(x))
            model_cl = model.to(memory_format=torch.channels_last)
            x_cl = x.to(memory_format=torch.channels_last)
            res["resnet50 forward channels_last"] = median_ms(lambda: model_cl(x_cl))

        for n, c, h, w in MRCNN_CONVS if want("mrcnn") else []:
            x = torch.randn(n, c, h, w)
            wt = torch.randn(c, c, 3, 3)
            b = torch.randn(c)
            res[mrcnn_key(n, c, h, w)] = median_ms(lambda: F.conv2d(x, wt, b, 1, 1), min(REPS, 5))

        if not want("other"):
            return finish(out_path, res)
        x = torch.randn(1, 64, 112, 112)
        res["maxpool 3x3/2 64@112"] = median_ms(lambda: F.max_pool2d(x, 3, 2, 1))
        x = torch.randn(1, 256, 100, 152)
        res["nearest 2x 256@100x152"] = median_ms(lambda: F.interpolate(x, size=(200, 304), mode="nearest"))
        res["bilinear 2x 256@100x152"] = median_ms(
            lambda: F.interpolate(x, size=(200, 304), mode="bilinear", align_corners=False)
        )
        w = torch.randn(256, 256, 2, 2)
        x = torch.randn(100, 256, 14, 14)
        res["convT 2x2/2 256->256 100x@14"] = median_ms(lambda: F.conv_transpose2d(x, w, None, 2), min(REPS, 5))
        img = torch.randint(0, 256, (480, 640, 3), dtype=torch.uint8)
        t = GeneralizedRCNNTransform(800, 1333, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).eval()
        # What a user runs: to_tensor (HWC u8 -> CHW f32 / 255) then the transform.
        res["rcnn preprocess 480x640->800x1088"] = median_ms(
            lambda: t([img.permute(2, 0, 1).float().div(255)])
        )
    finish(out_path, res)


def finish(out_path, res):
    with open(out_path, "w") as f:
        json.dump(res, f, indent=1)
    for k, v in res.items():
        print("%-40s %10.3f ms" % (k, v))


if __name__ == "__main__":
    main()
