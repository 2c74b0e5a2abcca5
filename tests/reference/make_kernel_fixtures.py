#!/usr/bin/env python3
"""Writes the fixtures of kernels/tests/ops_vs_torchvision.rs: inputs and torchvision's (or the
reference repository's) outputs for every hot vision op, in kernels/tests/fixtures/ops/.

    pip install torch torchvision numpy      # CPU wheels are enough
    python3 tests/reference/make_kernel_fixtures.py

Run by developers, not by CI (CI reads the committed fixtures). Output format (the same as
make_layer_fixtures.py):
- ops.bin: every tensor's raw little-endian bytes, one after another;
- ops.json: {"torch", "torchvision", "cases": [{"name", "op", "params": {...}, "tensors":
  {key: {"dtype", "shape", "offset", "len"}}}]}; offset/len are byte positions in ops.bin,
  dtype is f32 or i64. Expected outputs are the keys that start with "out".

What is the reference for each op:
- roi_align, MultiScaleRoIAlign, nms, batched_nms, box_iou, clip_boxes_to_image,
  remove_small_boxes, BoxCoder, AnchorGenerator, paste_masks_in_image (and expand_boxes):
  torchvision itself.
- YOLACT mask assembly (sigmoid(P @ C.T), crop with sanitize_coordinates(padding=1,
  cast=False)) and FastNMS (per-class top-k, IoU matrix, triu(1), column max <= threshold,
  merge, top max_num_detections): dbolya/yolact is not a package, so its semantics are
  re-stated below in torch ops (layers/box_utils.py `crop`, `sanitize_coordinates`,
  `jaccard`; layers/functions/detection.py `fast_nms`).
- CenterNet `_nms` (3x3 max_pool2d, keep == max) and `_topk` (topk per class, then over the
  C*K candidates), CornerNet's flat topk: re-stated in torch ops from
  xingyizhou/CenterNet src/lib/models/decode.py.
- CornerNet's corner pooling (Top, Left, Bottom, Right): its C++ extension's forward loops
  (princeton-vl/CornerNet models/py_utils/_cpools/src/*_pool.cpp) ported to torch ops.

Ties: torch's CPU sort (used inside torchvision's nms) is x86-simd-sort on AVX2/AVX-512
machines: stable up to 16 elements, arbitrary beyond. Cases with tied scores among more than
16 boxes also store "out_stable", the result of the same greedy NMS with a stable sort (written
below in numpy float32, checked to equal torchvision on every tie-free case), and the Rust
test compares its order with that and its set with torchvision's.
"""

import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import expand_boxes, paste_masks_in_image
from torchvision.ops import MultiScaleRoIAlign, batched_nms, box_iou, nms, roi_align
from torchvision.ops.boxes import clip_boxes_to_image, remove_small_boxes

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "kernels", "tests", "fixtures", "ops")

torch.manual_seed(0)
torch.set_num_threads(1)
rng = np.random.default_rng(0)

cases = []
blob = bytearray()


_stored = {}  # id(tensor) -> (tensor, entry): a tensor object used by several cases is stored once


def add_tensor(t):
    if id(t) in _stored:
        return _stored[id(t)][1]
    entry = _add_tensor(t)
    _stored[id(t)] = (t, entry)
    return entry


def _add_tensor(t):
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().numpy()
    a = np.ascontiguousarray(t)
    if a.dtype == np.float32:
        dt = "f32"
    elif a.dtype == np.int64:
        dt = "i64"
    else:
        raise ValueError(a.dtype)
    data = a.astype(a.dtype.newbyteorder("<")).tobytes()
    off = len(blob)
    blob.extend(data)
    return {"dtype": dt, "shape": list(a.shape), "offset": off, "len": len(data)}


def case(name, op, params, **tensors):
    cases.append(
        {
            "name": name,
            "op": op,
            "params": params,
            "tensors": {k: add_tensor(v) for k, v in tensors.items()},
        }
    )


def f32(a):
    return torch.as_tensor(np.asarray(a, dtype=np.float32))


def random_boxes(n, w, h, smin, smax):
    """n boxes (x1, y1, x2, y2) inside a w x h image, sides in [smin, smax]."""
    bw = rng.uniform(smin, smax, n)
    bh = rng.uniform(smin, smax, n)
    x1 = rng.uniform(0, np.maximum(w - bw, 1))
    y1 = rng.uniform(0, np.maximum(h - bh, 1))
    return np.stack([x1, y1, x1 + bw, y1 + bh], 1).astype(np.float32)


# ------------------------------------------------------------------------------- roi_align
feat = torch.randn(2, 8, 20, 24)
edge_rois = f32(
    [
        [0, 1.0, 2.0, 30.0, 25.0],  # ordinary
        [1, -10.0, -8.0, 12.0, 9.0],  # partly outside (top-left)
        [0, 80.0, 60.0, 120.0, 110.0],  # partly outside (bottom-right)
        [1, 100.0, 100.0, 140.0, 120.0],  # fully outside
        [0, 400.0, 5.0, 420.0, 9.0],  # fully outside, right
        [0, 5.0, 5.0, 5.0, 5.0],  # degenerate (zero size)
        [1, 9.0, 7.0, 3.0, 2.0],  # inverted
        [0, -300.0, -200.0, 500.0, 400.0],  # huge
        [1, 0.3, 0.7, 95.0, 79.0],  # the whole map
        [0, 10.1, 10.2, 10.3, 10.4],  # tiny
        [1.9, 3.0, 4.0, 50.0, 40.0],  # batch index 1.9 truncates to 1
        [0, 95.5, 79.5, 96.0, 80.0],  # on the last pixel
    ]
)
for aligned in (False, True):
    for sampling in (2, -1, 1):
        for (ph, pw), scale in (((7, 7), 0.25), ((3, 5), 0.5)):
            out = roi_align(feat, edge_rois, output_size=(ph, pw), spatial_scale=scale, sampling_ratio=sampling, aligned=aligned)
            case(
                f"roi_align_edges_a{int(aligned)}_s{sampling}_{ph}x{pw}",
                "roi_align",
                {"pooled_height": ph, "pooled_width": pw, "spatial_scale": scale, "sampling_ratio": sampling, "aligned": aligned},
                x=feat,
                rois=edge_rois,
                out=out,
            )
# one box, no boxes
for name, rois in (("one", edge_rois[:1]), ("none", torch.zeros(0, 5))):
    out = roi_align(feat, rois, output_size=7, spatial_scale=0.25, sampling_ratio=2, aligned=False)
    case(
        f"roi_align_{name}",
        "roi_align",
        {"pooled_height": 7, "pooled_width": 7, "spatial_scale": 0.25, "sampling_ratio": 2, "aligned": False},
        x=feat,
        rois=rois,
        out=out,
    )
# many random boxes on a bigger map
feat2 = torch.randn(1, 5, 40, 56)
b = random_boxes(100, 224, 160, 2, 200)
rois2 = torch.cat([torch.zeros(100, 1), f32(b)], 1)
for aligned, sampling in ((True, 2), (False, 2), (True, -1)):
    out = roi_align(feat2, rois2, output_size=7, spatial_scale=0.25, sampling_ratio=sampling, aligned=aligned)
    case(
        f"roi_align_random_a{int(aligned)}_s{sampling}",
        "roi_align",
        {"pooled_height": 7, "pooled_width": 7, "spatial_scale": 0.25, "sampling_ratio": sampling, "aligned": aligned},
        x=feat2,
        rois=rois2,
        out=out,
    )

# ------------------------------------------------------------------- MultiScaleRoIAlign
# Images 61x90 and 58x96 padded to 64x96; levels at strides 4..32. Heights 16/61 etc. make
# _infer_scale round (log2(0.262) = -1.93 -> -2).
levels = {
    "0": torch.randn(2, 4, 16, 24),
    "1": torch.randn(2, 4, 8, 12),
    "2": torch.randn(2, 4, 4, 6),
    "3": torch.randn(2, 4, 2, 3),
}
image_shapes = [(61, 90), (58, 96)]
msb = []
for i in range(2):
    bx = random_boxes(14, 96, 64, 1, 90)
    # Boxes whose sqrt(area) sits exactly on the level boundaries (112, 224, 448), and huge ones.
    special = np.array([[0, 0, 112, 112], [3, 3, 227, 227], [0, 0, 448, 448], [-500, -500, 700, 700], [5, 5, 5.5, 5.5]], np.float32)
    msb.append(f32(np.concatenate([bx, special])))
for out_size, sampling in ((7, 2), (14, 2), ((3, 5), -1)):
    pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=out_size, sampling_ratio=sampling)
    out = pooler(levels, msb, image_shapes)
    oh, ow = (out_size, out_size) if isinstance(out_size, int) else out_size
    case(
        f"multiscale_{oh}x{ow}_s{sampling}",
        "multiscale_roi_align",
        {"output_height": oh, "output_width": ow, "sampling_ratio": sampling, "image_shapes": image_shapes, "boxes_per_image": [len(b) for b in msb]},
        p2=levels["0"],
        p3=levels["1"],
        p4=levels["2"],
        p5=levels["3"],
        boxes=torch.cat(msb),
        out=out,
    )
# the level mapping itself
mapper_boxes = torch.cat(msb)
from torchvision.ops.poolers import _setup_scales  # noqa: E402

scales, mapper = _setup_scales(list(levels.values()), image_shapes, 224, 4)
case(
    "level_mapper",
    "level_mapper",
    {"k_min": mapper.k_min, "k_max": mapper.k_max, "scales": scales},
    boxes=mapper_boxes,
    out_levels=mapper([mapper_boxes]),
)


# ------------------------------------------------------------------------------------ nms
def stable_nms(boxes, scores, thr):
    """torchvision's CPU nms kernel, in numpy float32, with a stable sort."""
    boxes = np.asarray(boxes, np.float32)
    scores = np.asarray(scores, np.float32)
    n = len(boxes)
    if n == 0:
        return np.zeros(0, np.int64)
    key = np.where(np.isnan(scores), -np.inf, -scores.astype(np.float64))  # NaN first
    order = np.argsort(key, kind="stable")
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    sup = np.zeros(n, bool)
    keep = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for ii in range(n):
            i = order[ii]
            if sup[i]:
                continue
            keep.append(i)
            for j in order[ii + 1 :]:
                if sup[j]:
                    continue
                xx1 = x1[j] if x1[i] < x1[j] else x1[i]
                yy1 = y1[j] if y1[i] < y1[j] else y1[i]
                xx2 = x2[j] if x2[j] < x2[i] else x2[i]
                yy2 = y2[j] if y2[j] < y2[i] else y2[i]
                w = xx2 - xx1
                w = w if np.float32(0) < w else np.float32(0)
                h = yy2 - yy1
                h = h if np.float32(0) < h else np.float32(0)
                inter = np.float32(w * h)
                ovr = np.float32(inter / np.float32(np.float32(areas[i] + areas[j]) - inter))
                if float(ovr) > thr:
                    sup[j] = True
    return np.array(keep, np.int64)


def nms_case(name, boxes, scores, thr):
    boxes = f32(boxes)
    scores = f32(scores)
    out = nms(boxes, scores, thr)
    st = stable_nms(boxes.numpy(), scores.numpy(), thr)
    ties = len(torch.unique(scores)) < len(scores)
    tensors = {"boxes": boxes, "scores": scores, "out": out}
    params = {"iou_threshold": thr}
    if ties and len(scores) > 16:
        # torch's visiting order of tied boxes is arbitrary here: keep the stable-order result
        # too, and say whether the kept sets agree anyway.
        tensors["out_stable"] = torch.as_tensor(st)
        params["tie_sets_equal"] = sorted(out.tolist()) == sorted(st.tolist())
    else:
        assert out.tolist() == st.tolist(), f"numpy transcription differs from torchvision: {name}"
    case(name, "nms", params, **tensors)


b = random_boxes(500, 800, 600, 8, 200)
s = rng.random(500).astype(np.float32)
for thr in (0.5, 0.7, 0.3, 0.0, 1.0):
    nms_case(f"nms_random500_{thr}", b, s, thr)
# clustered boxes, closer to real detections
centers = rng.uniform(50, 750, (40, 2))
cl = []
for k in range(1000):
    c = centers[k % 40]
    w, h = rng.uniform(40, 120, 2)
    jx, jy = rng.normal(0, 6, 2)
    cl.append([c[0] + jx - w / 2, c[1] + jy - h / 2, c[0] + jx + w / 2, c[1] + jy + h / 2])
cl = np.array(cl, np.float32)
nms_case("nms_clustered1000_0.7", cl, rng.random(1000).astype(np.float32), 0.7)
nms_case("nms_empty", np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5)
nms_case("nms_one", [[1, 2, 3, 4]], [0.5], 0.5)
# degenerate boxes (0/0 IoU is NaN: never suppressed) and duplicates
deg = np.array([[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 0], [3, 3, 9, 9]], np.float32)
nms_case("nms_degenerate", deg, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], 0.5)
# ties among <= 16 boxes, where the visiting order decides which tied box survives
tb = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [2, 0, 12, 10], [30, 30, 40, 40], [31, 30, 41, 40], [0, 0, 10, 10.5], [60, 0, 70, 10], [60, 1, 70, 11]], np.float32)
nms_case("nms_ties_small", tb, [0.5, 0.5, 0.5, 0.7, 0.7, 0.5, 0.2, 0.2], 0.5)
# many ties (> 16): coarse scores on random boxes
nms_case("nms_ties_many", b[:300], np.round(s[:300] * 10) / 10, 0.5)
nms_case("nms_all_equal_scores", cl[:200], np.full(200, 0.5, np.float32), 0.6)


# ---------------------------------------------------------------------------- batched_nms
def batched_case(name, boxes, scores, idxs, thr):
    boxes, scores, idxs = f32(boxes), f32(scores), torch.as_tensor(np.asarray(idxs, np.int64))
    out = batched_nms(boxes, scores, idxs, thr)
    case(name, "batched_nms", {"iou_threshold": thr, "path": "vanilla" if boxes.numel() > 4000 else "trick"}, boxes=boxes, scores=scores, idxs=idxs, out=out)


bb = random_boxes(800, 400, 300, 8, 150)
batched_case("batched_trick_800_10cls", bb, rng.random(800), rng.integers(0, 10, 800), 0.5)
batched_case("batched_all_same_class", bb[:500], rng.random(500), np.zeros(500, np.int64), 0.5)
batched_case("batched_large_class_ids", bb[:600], rng.random(600), rng.integers(0, 1000, 600) * 7, 0.5)
bv = random_boxes(1500, 400, 300, 8, 150)
batched_case("batched_vanilla_1500_80cls", bv, rng.random(1500), rng.integers(0, 80, 1500), 0.5)
batched_case("batched_vanilla_1500_1cls", bv, rng.random(1500), np.full(1500, 3, np.int64), 0.7)
batched_case("batched_empty", np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0, np.int64), 0.5)

# ---------------------------------------------------------------------- box ops and coder
b1 = np.concatenate([random_boxes(30, 100, 80, 0, 60), [[5, 5, 5, 5], [10, 10, 10, 30]]]).astype(np.float32)
b2 = random_boxes(40, 100, 80, 1, 60)
case("box_iou", "box_iou", {}, boxes1=f32(b1), boxes2=f32(b2), out=box_iou(f32(b1), f32(b2)))
cb = f32(rng.uniform(-50, 700, (60, 4)))
case("clip_boxes", "clip_boxes_to_image", {"height": 480, "width": 640}, boxes=cb, out=clip_boxes_to_image(cb, (480, 640)))
sb = f32(np.concatenate([random_boxes(40, 100, 100, 0, 3), [[1, 1, 1.001, 5], [1, 1, 1.0009, 5]]]))
case("remove_small_boxes", "remove_small_boxes", {"min_size": 1e-3}, boxes=sb, out=remove_small_boxes(sb, 1e-3))
case("remove_small_boxes_1", "remove_small_boxes", {"min_size": 1.0}, boxes=sb, out=remove_small_boxes(sb, 1.0))
for weights in ((10.0, 10.0, 5.0, 5.0), (1.0, 1.0, 1.0, 1.0)):
    coder = BoxCoder(weights)
    props = f32(random_boxes(50, 800, 600, 4, 300))
    rel = torch.randn(50, 12) * 2
    rel[::7, 2] = 30.0  # clamped dw
    rel[::5, 3] = 25.0  # clamped dh
    rel[3, 6] = -20.0
    dec = coder.decode(rel, [props])
    tgt = f32(random_boxes(50, 800, 600, 4, 300))
    enc = coder.encode_single(tgt, props)
    case(f"box_coder_{int(weights[0])}", "box_coder", {"weights": list(weights)}, rel_codes=rel, proposals=props, targets=tgt, out_decoded=dec, out_encoded=enc)

# ------------------------------------------------------------------------------- anchors
gen = AnchorGenerator(sizes=((32,), (64,), (128,), (256,), (512,)), aspect_ratios=((0.5, 1.0, 2.0),) * 5)
img = ImageList(torch.zeros(1, 3, 128, 192), [(120, 190)])
fmaps = [torch.zeros(1, 1, 128 // s, 192 // s) for s in (4, 8, 16, 32, 64)]
anchors = gen(img, fmaps)[0]
case("anchors_rcnn_fpn", "anchors", {"sizes": [[32], [64], [128], [256], [512]], "aspect_ratios": [[0.5, 1.0, 2.0]] * 5, "image_size": [128, 192], "grid_sizes": [[f.shape[2], f.shape[3]] for f in fmaps]}, out=anchors)
gen2 = AnchorGenerator(sizes=((16, 40, 77),), aspect_ratios=((0.3, 1.7, 1.0),))
img2 = ImageList(torch.zeros(1, 3, 100, 150), [(100, 150)])
anchors2 = gen2(img2, [torch.zeros(1, 1, 13, 19)])[0]
case("anchors_custom", "anchors", {"sizes": [[16, 40, 77]], "aspect_ratios": [[0.3, 1.7, 1.0]], "image_size": [100, 150], "grid_sizes": [[13, 19]]}, out=anchors2)

# -------------------------------------------------------------------------- paste masks
im_h, im_w = 60, 80
pboxes = f32(
    [
        [10, 12, 40, 35],  # inside
        [-15, -10, 20, 18],  # top-left border
        [60, 40, 95, 70],  # bottom-right border
        [-5, 20, 85, 30],  # wider than the image: resized size > 128 (generic kernel)
        [30, 30, 30.4, 30.2],  # degenerate
        [0, 0, 80, 60],  # the whole image
        [70.5, 2.5, 79.9, 59.9],  # right edge, tall
        [1, 1, 3, 3],  # tiny
        [20.7, 10.2, 55.3, 51.9],  # fractional
        [-40, 5, 2, 50],  # mostly outside, left
    ]
)
pmasks = torch.rand(len(pboxes), 1, 28, 28)
pasted = paste_masks_in_image(pmasks, pboxes, (im_h, im_w), padding=1)
case("paste_masks_28", "paste_masks", {"height": im_h, "width": im_w, "padding": 1}, masks=pmasks[:, 0], boxes=pboxes, out=pasted[:, 0], out_expanded=expand_boxes(pboxes, 30 / 28).to(torch.int64))
pm14 = torch.rand(4, 1, 14, 14)
pasted14 = paste_masks_in_image(pm14, pboxes[:4], (im_h, im_w), padding=1)
case("paste_masks_14", "paste_masks", {"height": im_h, "width": im_w, "padding": 1}, masks=pm14[:, 0], boxes=pboxes[:4], out=pasted14[:, 0], out_expanded=expand_boxes(pboxes[:4], 16 / 14).to(torch.int64))
# expand_boxes on many random boxes (integer boxes must match exactly)
eb = f32(rng.uniform(-100, 1300, (2000, 4)))
eb[:, 2:] = eb[:, :2] + torch.abs(eb[:, 2:]) / 4
case("expand_boxes", "expand_boxes", {"scale": 30 / 28}, boxes=eb, out=expand_boxes(eb, 30 / 28).to(torch.int64))


# ---------------------------------------------------------------------------------- YOLACT
def yolact_sanitize(a, b, size, padding):
    a = a * size
    b = b * size
    lo = torch.min(a, b)
    hi = torch.max(a, b)
    return torch.clamp(lo - padding, min=0), torch.clamp(hi + padding, max=size)


def yolact_crop(masks, boxes, padding=1):
    h, w, n = masks.size()
    x1, x2 = yolact_sanitize(boxes[:, 0], boxes[:, 2], w, padding)
    y1, y2 = yolact_sanitize(boxes[:, 1], boxes[:, 3], h, padding)
    cols = torch.arange(w, dtype=x1.dtype).view(1, -1, 1).expand(h, w, n)
    rows = torch.arange(h, dtype=x1.dtype).view(-1, 1, 1).expand(h, w, n)
    keep = (cols >= x1.view(1, 1, -1)) & (cols < x2.view(1, 1, -1)) & (rows >= y1.view(1, 1, -1)) & (rows < y2.view(1, 1, -1))
    return masks * keep.float()


proto = torch.relu(torch.randn(23, 29, 8))
coeffs = torch.tanh(torch.randn(6, 8) * 2)
ybox = f32([[0.1, 0.2, 0.6, 0.7], [0.9, 0.8, 0.3, 0.1], [-0.2, -0.1, 0.4, 1.3], [0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0], [0.97, 0.01, 1.0, 0.04]])
m = torch.sigmoid(proto @ coeffs.t())
case("yolact_assemble_nocrop", "yolact_assemble", {"crop": False}, proto=proto, coeffs=coeffs, boxes=ybox, out=m.permute(2, 0, 1))
case("yolact_assemble_crop", "yolact_assemble", {"crop": True}, proto=proto, coeffs=coeffs, boxes=ybox, out=yolact_crop(m, ybox).permute(2, 0, 1))


def yolact_jaccard(a):
    n = a.size(1)
    mx = torch.min(a[:, :, None, 2:].expand(-1, n, n, 2), a[:, None, :, 2:].expand(-1, n, n, 2))
    mn = torch.max(a[:, :, None, :2].expand(-1, n, n, 2), a[:, None, :, :2].expand(-1, n, n, 2))
    inter = torch.clamp(mx - mn, min=0).prod(3)
    area = (a[:, :, 2] - a[:, :, 0]) * (a[:, :, 3] - a[:, :, 1])
    union = area[:, :, None] + area[:, None, :] - inter
    return inter / union


def yolact_fast_nms(boxes, scores, thr, top_k, max_dets):
    scores, idx = scores.sort(1, descending=True)
    idx = idx[:, :top_k].contiguous()
    scores = scores[:, :top_k]
    c, k = idx.size()
    bx = boxes[idx.view(-1), :].view(c, k, 4)
    iou = yolact_jaccard(bx).triu_(diagonal=1)
    iou_max, _ = iou.max(dim=1)
    keep = iou_max <= thr
    classes = torch.arange(c)[:, None].expand_as(keep)[keep]
    kept_idx = idx[keep]
    sc = scores[keep]
    sc, order = sc.sort(0, descending=True)
    order = order[:max_dets]
    return kept_idx[order], classes[order], sc[:max_dets]


cxy = rng.uniform(0.05, 0.95, (300, 2))
wh = rng.uniform(0.02, 0.4, (300, 2))
yb = f32(np.concatenate([cxy - wh / 2, cxy + wh / 2], 1))
ys = torch.softmax(torch.randn(300, 6) * 3, 1).t()[1:].contiguous()  # drop background: [5, 300]
for top_k, max_dets in ((200, 100), (50, 30), (400, 1000)):
    ki, kc, ks = yolact_fast_nms(yb, ys, 0.5, top_k, max_dets)
    case(f"yolact_fast_nms_top{top_k}", "yolact_fast_nms", {"iou_threshold": 0.5, "top_k": top_k, "max_num_detections": max_dets}, boxes=yb, scores=ys, out_index=ki, out_class=kc, out_score=ks)


# --------------------------------------------------------------------------------- heatmaps
def centernet_nms(heat, kernel=3):
    hmax = F.max_pool2d(heat, (kernel, kernel), stride=1, padding=(kernel - 1) // 2)
    return heat * (hmax == heat).float()


def centernet_topk(scores, K):
    b, c, h, w = scores.size()
    ts, ti = torch.topk(scores.view(b, c, -1), K)
    ti = ti % (h * w)
    s, i = torch.topk(ts.view(b, -1), K)
    clses = torch.div(i, K, rounding_mode="floor")
    inds = ti.view(b, -1).gather(1, i)
    return s, inds, clses


heat = torch.sigmoid(torch.randn(1, 4, 32, 40) * 2)
sup = centernet_nms(heat)
s, inds, clses = centernet_topk(sup, 50)
case("centernet_peaks", "centernet_peaks", {"k": 50}, heat=heat[0], out_suppressed=sup[0], out_score=s[0], out_index=inds[0], out_class=clses[0])
fs, fi = torch.topk(sup.view(1, -1), 30)
case("cornernet_topk", "topk_flat", {"k": 30}, heat=sup[0], out_score=fs[0], out_index=fi[0])

# ---------------------------------------------------------------------------- corner pooling
# CornerNet's _cpools C++ extension (princeton-vl/CornerNet @ e5c39a31,
# models/py_utils/_cpools/src/{top,left,bottom,right}_pool.cpp, forward), ported loop for loop:
# the last row (column) is copied, then each row (column) is at::max_out(input row, the
# previous output row), torch.maximum, which propagates NaN. Top scans from the bottom up over
# dim 2, Bottom from the top down, Left from the right over dim 3, Right from the left.
def corner_pool(x, dim, reverse):
    out = torch.zeros_like(x)
    n = x.size(dim)
    order = list(range(n - 1, -1, -1)) if reverse else list(range(n))
    out.select(dim, order[0]).copy_(x.select(dim, order[0]))
    for prev, cur in zip(order, order[1:]):
        torch.maximum(x.select(dim, cur), out.select(dim, prev), out=out.select(dim, cur))
    return out


g = torch.Generator().manual_seed(11)
pool_x = torch.randn(2, 3, 9, 13, generator=g)
pool_x[0, 1, 4, 6] = float("nan")
pool_x[1, 2, 0, 0] = float("inf")
for name, dim, reverse in [("top", 2, True), ("left", 3, True), ("bottom", 2, False), ("right", 3, False)]:
    case("corner_pool_" + name, "corner_pool", {"pool": name}, x=pool_x, out=corner_pool(pool_x, dim, reverse))

os.makedirs(OUT, exist_ok=True)
with open(os.path.join(OUT, "ops.bin"), "wb") as f:
    f.write(bytes(blob))
with open(os.path.join(OUT, "ops.json"), "w") as f:
    json.dump({"torch": torch.__version__, "torchvision": torchvision.__version__, "cases": cases}, f, indent=1)
print(f"{len(cases)} cases, {len(blob) / 1e6:.2f} MB of tensors -> {OUT}")
