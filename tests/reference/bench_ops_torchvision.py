#!/usr/bin/env python3
"""Times torchvision (and the reference repositories' post-processing, re-stated in torch ops)
on the shapes of kernels/benches/ops.rs, and writes the medians for that bench to compare with.

    python3 tests/reference/bench_ops_torchvision.py --out /tmp/torch_ops.json
    TORCH_TIMES=/tmp/torch_ops.json cargo bench -p kernels --bench ops

Run both in the same session (the machines are shared and noisy: compare ratios measured
together). torch runs with 2 threads (the machine's cores; --threads to change) under
inference_mode. Boxes and scores come from the same SplitMix64 generator as the Rust bench, so
both sides process identical boxes; feature values differ (they do not affect the time).
Output JSON: {"torch", "torchvision", "threads", "device", "times": {case: median ms}}.

    python3 tests/reference/bench_ops_torchvision.py --device cuda --out /tmp/torch_cuda.json
    TORCH_TIMES=/tmp/torch_cuda.json BENCH_DEVICE=cuda cargo bench -p kernels --bench ops

times the same cases on CUDA device 0: every tensor is made on the device (inputs resident,
as in a pipeline that stays on the GPU), and each timed call ends with a synchronisation.
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.ops import MultiScaleRoIAlign, batched_nms, box_iou, nms, roi_align

MASK64 = (1 << 64) - 1


class Rng:
    """SplitMix64, as in kernels/benches/ops.rs."""

    def __init__(self, seed):
        self.s = seed

    def next_u64(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & MASK64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def u(self):
        return (self.next_u64() >> 40) / 16777216.0


IMG_H, IMG_W = 800.0, 1216.0


def random_boxes(n, seed):
    r = Rng(seed)
    boxes, scores = [], []
    for _ in range(n):
        w = 16.0 + 496.0 * r.u()
        h = 16.0 + 496.0 * r.u()
        x1 = (IMG_W - w) * r.u()
        y1 = (IMG_H - h) * r.u()
        boxes.append([x1, y1, x1 + w, y1 + h])
        scores.append(r.u())
    return torch.tensor(boxes, dtype=torch.float64).float(), torch.tensor(scores, dtype=torch.float64).float()


def clustered_boxes(n, seed):
    r = Rng(seed)
    centres = [(IMG_W * r.u(), IMG_H * r.u()) for _ in range(50)]
    boxes, scores = [], []
    for k in range(n):
        cx, cy = centres[k % 50]
        w = 40.0 + 80.0 * r.u()
        h = 40.0 + 80.0 * r.u()
        x = cx + 16.0 * (r.u() - 0.5)
        y = cy + 16.0 * (r.u() - 0.5)
        boxes.append([x - w / 2.0, y - h / 2.0, x + w / 2.0, y + h / 2.0])
        scores.append(r.u())
    return torch.tensor(boxes, dtype=torch.float64).float(), torch.tensor(scores, dtype=torch.float64).float()


def classes(n, seed, num):
    r = Rng(seed)
    return torch.tensor([int(r.u() * num) for _ in range(n)], dtype=torch.int64)


times = {}
ONLY = []  # substrings: time only the matching cases (--only)
SYNC = [lambda: None]  # torch.cuda.synchronize under --device cuda


def bench(name, f, budget=2.0, max_reps=30):
    if ONLY and not any(o in name for o in ONLY):
        return
    f()  # warm-up
    SYNC[0]()
    ts = []
    start = time.perf_counter()
    while len(ts) < 3 or (len(ts) < max_reps and time.perf_counter() - start < budget):
        t = time.perf_counter()
        f()
        SYNC[0]()
        ts.append((time.perf_counter() - t) * 1e3)
    times[name] = statistics.median(ts)
    print(f"{name:<22} {times[name]:10.3f} ms  ({len(ts)} reps)", flush=True)


def alias(name, of):
    """The same torch time stands as the peer of one of our variants (ws, nhwc, into...)."""
    if of in times:
        times[name] = times[of]


def yolact_crop(masks, boxes, padding=1):
    # dbolya/yolact layers/box_utils.py crop() with sanitize_coordinates(cast=False), re-stated.
    h, w, n = masks.size()

    def sanitize(a, b, size):
        a, b = a * size, b * size
        return torch.clamp(torch.min(a, b) - padding, min=0), torch.clamp(torch.max(a, b) + padding, max=size)

    x1, x2 = sanitize(boxes[:, 0], boxes[:, 2], w)
    y1, y2 = sanitize(boxes[:, 1], boxes[:, 3], h)
    cols = torch.arange(w, dtype=x1.dtype, device=masks.device).view(1, -1, 1).expand(h, w, n)
    rows = torch.arange(h, dtype=x1.dtype, device=masks.device).view(-1, 1, 1).expand(h, w, n)
    keep = (cols >= x1.view(1, 1, -1)) * (cols < x2.view(1, 1, -1)) * (rows >= y1.view(1, 1, -1)) * (rows < y2.view(1, 1, -1))
    return masks * keep.float()


def yolact_fast_nms(boxes, scores, thr=0.5, top_k=200, max_dets=100):
    # dbolya/yolact layers/functions/detection.py fast_nms(), re-stated.
    scores, idx = scores.sort(1, descending=True)
    idx = idx[:, :top_k].contiguous()
    scores = scores[:, :top_k]
    c, k = idx.size()
    bx = boxes[idx.view(-1), :].view(c, k, 4)
    mx = torch.min(bx[:, :, None, 2:].expand(c, k, k, 2), bx[:, None, :, 2:].expand(c, k, k, 2))
    mn = torch.max(bx[:, :, None, :2].expand(c, k, k, 2), bx[:, None, :, :2].expand(c, k, k, 2))
    inter = torch.clamp(mx - mn, min=0).prod(3)
    area = (bx[:, :, 2] - bx[:, :, 0]) * (bx[:, :, 3] - bx[:, :, 1])
    iou = (inter / (area[:, :, None] + area[:, None, :] - inter)).triu_(diagonal=1)
    keep = iou.max(dim=1)[0] <= thr
    cls = torch.arange(c, device=keep.device)[:, None].expand_as(keep)[keep]
    kept, sc = idx[keep], scores[keep]
    sc, order = sc.sort(0, descending=True)
    order = order[:max_dets]
    return kept[order], cls[order], sc[:max_dets]


def centernet_peaks(heat, K=100):
    # xingyizhou/CenterNet src/lib/models/decode.py _nms() and _topk(), re-stated.
    hmax = F.max_pool2d(heat, 3, stride=1, padding=1)
    heat = heat * (hmax == heat).float()
    b, c, h, w = heat.size()
    ts, ti = torch.topk(heat.view(b, c, -1), K)
    ti = ti % (h * w)
    s, i = torch.topk(ts.view(b, -1), K)
    return s, ti.view(b, -1).gather(1, i), torch.div(i, K, rounding_mode="floor")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/torch_ops.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated substrings of the cases to time")
    ap.add_argument("--merge", action="store_true", help="add to the times already in --out")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the tensors live")
    args = ap.parse_args()
    if args.device == "cuda":
        # Every tensor below is made on the device; calls are timed to the end of the device work.
        torch.set_default_device("cuda")
        SYNC[0] = torch.cuda.synchronize
    ONLY.extend(o for o in args.only.split(",") if o)
    if args.merge:
        try:
            with open(args.out) as f:
                times.update(json.load(f).get("times", {}))
        except (OSError, ValueError):
            pass
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    where = torch.cuda.get_device_name(0) if args.device == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {where}")

    with torch.inference_mode():
        p2 = torch.randn(1, 256, 200, 304)
        boxes1000, scores1000 = random_boxes(1000, 7)
        rois = torch.cat([torch.zeros(1000, 1), boxes1000], 1)
        for out in (7, 14):
            bench(f"roi_align_{out}", lambda: roi_align(p2, rois, out, spatial_scale=0.25, sampling_ratio=2, aligned=True), budget=3.0)
            # torchvision has no channels-last RoIAlign (it makes the input contiguous): the
            # same time is the peer of our channels-last row.
            alias(f"roi_align_{out}_nhwc", f"roi_align_{out}")
            alias(f"roi_align_{out}_ws", f"roi_align_{out}")
        bench("to_channels_last", lambda: p2.contiguous(memory_format=torch.channels_last))

        feats = {"0": p2, "1": torch.randn(1, 256, 100, 152), "2": torch.randn(1, 256, 50, 76), "3": torch.randn(1, 256, 25, 38)}
        m7 = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
        bench("multiscale_1000x7", lambda: m7(feats, [boxes1000], [(800, 1216)]), budget=3.0)
        m14 = MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2)
        b100 = boxes1000[:100].clone()
        bench("multiscale_100x14", lambda: m14(feats, [b100], [(800, 1216)]))
        alias("multiscale_1000x7_ws", "multiscale_1000x7")
        alias("multiscale_100x14_ws", "multiscale_100x14")

        boxes5000, scores5000 = random_boxes(5000, 11)
        cl1000, cls1000 = clustered_boxes(1000, 13)
        cl5000, cls5000 = clustered_boxes(5000, 17)
        bench("nms_1000", lambda: nms(boxes1000, scores1000, 0.7))
        bench("nms_5000", lambda: nms(boxes5000, scores5000, 0.7))
        bench("nms_clustered_1000", lambda: nms(cl1000, cls1000, 0.7))
        bench("nms_clustered_5000", lambda: nms(cl5000, cls5000, 0.7))
        idx1000 = classes(1000, 19, 80)
        idx5000 = classes(5000, 23, 80)
        bench("batched_nms_1000", lambda: batched_nms(boxes1000, scores1000, idx1000, 0.5))
        bench("batched_nms_5000", lambda: batched_nms(boxes5000, scores5000, idx5000, 0.5))

        rel = torch.rand(1000, 91 * 4) * 2 - 1
        coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
        bench("box_decode", lambda: coder.decode(rel, [boxes1000]))
        bench("box_iou", lambda: box_iou(boxes1000, boxes1000))
        gen = AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)
        il = ImageList(torch.zeros(1, 3, 800, 1216), [(800, 1216)])
        fmaps = [torch.zeros(1, 1, h, w) for h, w in ((200, 304), (100, 152), (50, 76), (25, 38), (13, 19))]
        bench("anchors", lambda: gen(il, fmaps))

        masks = torch.rand(100, 1, 28, 28)
        bench("paste_masks_100", lambda: paste_masks_in_image(masks, b100, (800, 1216), padding=1))
        alias("paste_masks_100_regions", "paste_masks_100")
        alias("paste_masks_100_into", "paste_masks_100")

        proto = torch.rand(138, 138, 32)
        coeffs = torch.rand(100, 32) * 2 - 1
        rel_boxes = b100 / torch.tensor([1216.0, 800.0, 1216.0, 800.0])
        bench("yolact_assemble", lambda: yolact_crop(torch.sigmoid(proto @ coeffs.t()), rel_boxes))
        yscores = torch.rand(80, 1000)
        ybox = boxes1000 / torch.tensor([1216.0, 800.0, 1216.0, 800.0])
        bench("yolact_fast_nms", lambda: yolact_fast_nms(ybox, yscores))

        heat = torch.rand(1, 80, 128, 128)
        bench("heatmap_peaks", lambda: centernet_peaks(heat, 100))

    with open(args.out, "w") as f:
        json.dump({"torch": torch.__version__, "torchvision": torchvision.__version__, "threads": args.threads, "device": args.device, "times": times}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
