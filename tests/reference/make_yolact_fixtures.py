#!/usr/bin/env python3
"""Writes plugins/yolact/tests/fixtures/yolact_r50.json: the official YOLACT code
(dbolya/yolact at commit 902073d4) run on CPU, with generated weights, on real photos.

    pip install torch torchvision numpy pillow pycocotools opencv-python-headless
    git --git-dir=<mirror of dbolya/yolact>/repo archive 902073d4 | tar -x -C /tmp/yolact
    YOLACT_REPO=/tmp/yolact python3 tests/reference/make_yolact_fixtures.py

(`mkdir -p /tmp/yolact` first; YOLACT_REPO defaults to /tmp/yolact.) Run by developers, not
by CI (CI reads the committed fixture).

Model. `yolact_resnet50_config` exactly as `eval.py --config yolact_resnet50_config` builds
it: `set_cfg`, `Yolact()`, `net.eval()`, `net.detect.use_fast_nms = True`,
`net.detect.use_cross_class_nms = False`, `cfg.mask_proto_debug = False`. ResNet-50
(`ResNetBackbone([3, 4, 6, 3])`, BatchNorm2d in eval mode with its running statistics,
eps 1e-5), FPN on C3-C5 with 256 channels, bilinear top-down upsampling, a ReLU after each
3x3 pred layer (`relu_pred_layers: True`), P6 and P7 from two 3x3 stride-2 convs applied to
(ReLU'd) P5 with no ReLU after them (`relu_downsample_layers: False`), the protonet on P3
(3 conv+ReLU, bilinear x2, conv+ReLU, 1x1 conv to 32, then the prototype ReLU), and one
prediction module shared by P3-P7 (`upfeature` 3x3 conv+ReLU, then 3x3 bbox/conf/mask
layers; 3 priors per cell, 81 classes, tanh coefficients). `Detect` keeps its defaults
(top_k 200, conf_thresh 0.05, nms_thresh 0.5, max_num_detections 100).

The config sets `use_semantic_segmentation_loss: True`, so the model has a
`semantic_seg_conv` (1x1, 256 -> 80); `Yolact.forward` only calls it when `self.training`,
and a forward hook checks that it is not called here. Its two tensors are generated and
loaded (strict load) but left out of "weights"; so are the 53 BatchNorm
`num_batches_tracked` counters (kept at their initial 0; unused in eval mode). Both lists
are in the fixture under "dropped".

Run. `evalimage`'s path, without `.cuda()`: `cv2.imread(path)` (BGR uint8, HxWx3),
`torch.from_numpy(...).float()`, `FastBaseTransform()(frame.unsqueeze(0))` (bilinear resize
to 550x550 with align_corners=False, ignoring the aspect ratio, (x - MEANS) / STD in BGR,
then BGR -> RGB), `net(batch)` under `torch.no_grad()`, and
`postprocess(dets_out, w, h, visualize_lincomb=False, crop_masks=True, score_threshold=0)`,
what `prep_metrics` does for COCO evaluation (all detections, no score threshold).

CPU patches (in this script only; the YOLACT sources are not edited, and none changes what
is computed):
  1. `yolact.py` calls `torch.cuda.current_device()` at import (a Windows driver
     work-around); `torch.cuda.current_device` is replaced by `lambda: 0` while `yolact` is
     imported, then restored.
  2. `FastBaseTransform.__init__` puts MEANS/STD on the GPU with `.cuda()`;
     `torch.Tensor.cuda` is replaced by the identity while it is constructed, then
     restored (its forward moves them to the image's device anyway).
  3. `evalimage`'s `.cuda()` on the frame is left out (the frame stays on the CPU); the net
     is not moved with `net.cuda()`; `torch.set_default_tensor_type` is not called
     (eval.py sets 'torch.FloatTensor' when --cuda is false, which is the default anyway).
No patch is needed for the rest: `use_jit = torch.cuda.device_count() <= 1` is True on a
machine without GPUs, so the FPN is a `torch.jit.ScriptModule` with a `script_method`
forward and `box_utils`' `@torch.jit.script` functions (`intersect`, `sanitize_coordinates`,
`crop`, ...) are TorchScript, as on a single-GPU machine (torch only warns that TorchScript
is deprecated); `backbone.py` already catches the ImportError of `dcn_v2` (ResNet-50 has no
DCN layers).

Weights. Generated from each state-dict name exactly as make_maskrcnn_fixtures.py does
(`generate`, reproduced bit for bit by `kernels::weights::generated_tensor`); (a, b) of each
tensor is stored in the fixture, values are uniform in [b - a, b + a). `range_of`: conv
weights a = g * sqrt(3 / fan_in) with g = 1 (unit-variance gain) except as below, conv biases
a = 0.1 around 0, BatchNorm weight 0.75 +- 0.25, bias and running_mean +- 0.1, running_var
1 +- 0.5 (as the Mask R-CNN fixture; BatchNorm in eval mode, eps 1e-5). Scaled, because
random weights otherwise give detections from P3 only, of 4-7 classes, with near-tied
scores and masks that are all on or all off: fpn.pred_layers.0 (P5) g = 2.5 and .1 (P4)
g = 1.8 (P6/P7 follow P5); prediction_layers.0.upfeature.0 g = 2 with bias -0.3 +- 0.1
(sparse head features); conf_layer g = 5.5; bbox_layer g = 3; mask_layer g = 4;
proto_net.0/2/4/8 g = sqrt(2); proto_net.10 g = 16 with bias -2 +- 0.1.

Detections. `Detect` does not re-threshold per class after FastNMS (`second_threshold` is
False), and the best candidate of every class survives its own NMS, so as soon as one prior
passes conf_thresh there are at least 80 candidates: the output always has 80-100
detections, here 100 (of 16-17 classes, from all five levels). Scores are softmax
probabilities, so they cannot tie exactly but some adjacent ones are close (see "margins").

Outputs, in yolact_r50.json:
  generator, torch, yolact ("902073d4"), config, detect (Detect's settings);
  weights: [{name, shape, a, b}] for every state-dict tensor used at inference;
  dropped: the state-dict entries left out of "weights" (see above);
  priors: count, per_level (P3..P7), first 12 and last 4 rows [cx, cy, w, h], summary;
  cases, one per photo: photo, original_size [H, W], input (summary of the [3, 550, 550]
  network input), raw {loc [N, 4], conf [N, 81] after softmax, mask [N, 32] after tanh,
  proto [138, 138, 32] after the prototype ReLU} (summaries), detections {classes (0..79,
  i.e. conf column - 1), scores, boxes ([x1, y1, x2, y2] in original pixels, int64 as
  postprocess returns them), boxes_float (the decoded boxes, relative to the 550x550 input,
  before sanitize_coordinates; they may lie outside [0, 1]), prior_index (the prior each
  detection came from)}, masks (COCO compressed RLE of postprocess's `> 0.5` masks, size
  [H, W]), margins; all per-instance lists in postprocess's order.

Summaries (`summary` of make_maskrcnn_fixtures.py): shape, sum, sum of |x|, min, max, the
values at 512 random flat indices plus the first and last, and "channel_means". `summary`
takes the means over axis -3, i.e. axis 0 of a 3-D tensor: for the input [3, 550, 550] the
3 colour channels, for `proto` [138, 138, 32] the 138 *rows* (so `proto` also gets
"last_axis_means", the 32 per-prototype means). It cannot take a 2-D tensor; for [N, C]
tensors (priors, loc, conf, mask) `summary_2d` calls it on the [1, N, C] view (same flat
indices and values) and stores the shape [N, C] with "channel_means" = the mean of each
column (C values, each over the N rows). Every summary says which in "channel_axis" (0: one mean per
index of axis 0 of a 3-D tensor; 1: one mean per column of an [N, C] tensor).

"margins" (per case) tell how far the run is from the decisions that a float32
reimplementation could flip, counting only decisions that can change the output: the
number of kept priors and of candidates after NMS, the 100th score and its gap to the 101st,
the smallest gap between adjacent output scores and how many are below 1e-4, the gap of
max foreground scores to conf_thresh (over priors that can reach the output), the largest
200th per-class score (the top-k cut matters only if it reaches the 100th score), the
smallest |IoU - nms_thresh| that decides whether a box scoring at least the 100th score
survives, and how many final mask pixels lie within 1e-5 / 1e-4 of 0.5.
"""

import contextlib
import json
import math
import os
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_maskrcnn_fixtures import floats, generate, summary  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "plugins", "yolact", "tests", "fixtures")
YOLACT_REPO = os.environ.get("YOLACT_REPO", "/tmp/yolact")
CONFIG = "yolact_resnet50_config"
PHOTOS = ["chelsea.png", "coffee.png"]

# Scales, as multiples of the unit-variance gain sqrt(3 / fan_in) (see range_of and the
# docstring). Chosen by measuring the run: random weights otherwise give P3-only detections
# of 4-7 classes with near-tied scores and masks that are all on or all off.
FPN_PRED_GAINS = (2.5, 1.8, 1.0)  # fpn.pred_layers.0 (P5), .1 (P4), .2 (P3)
UPFEATURE_GAIN, UPFEATURE_BIAS = 2.0, -0.3
CONF_GAIN = 5.5
BBOX_GAIN = 3.0
MASK_COEFF_GAIN = 4.0
PROTO_GAIN = math.sqrt(2.0)  # proto_net.0/2/4/8 (He gain)
PROTO_LAST_GAIN, PROTO_LAST_BIAS = 16.0, -2.0  # proto_net.10, the 1x1 conv to 32 prototypes


def gain(g: float, shape) -> float:
    fan_in = int(np.prod(shape[1:]))
    return float(np.float32(g * math.sqrt(3.0 / fan_in)))


def range_of(name: str, shape) -> tuple:
    """(a, b): values are uniform in [b - a, b + a)."""
    if name.startswith("backbone.") and len(shape) == 1:  # BatchNorm2d (eval mode)
        if name.endswith("running_var"):
            return 0.5, 1.0
        if name.endswith("weight"):
            return 0.25, 0.75
        return 0.1, 0.0  # bias, running_mean
    if len(shape) == 1:  # conv biases
        if name == "prediction_layers.0.upfeature.0.bias":
            # Sparse head features, so that class scores depend on the cell rather than on
            # the common mode of the ReLU'd features (one class winning everywhere).
            return 0.1, UPFEATURE_BIAS
        if name == "proto_net.10.bias":
            # About 40% of the prototype pixels > 0 after the prototype ReLU: more spatial
            # contrast, so that more masks are partly on inside their boxes.
            return 0.1, PROTO_LAST_BIAS
        return 0.1, 0.0
    if len(shape) != 4:
        raise ValueError(f"no range for {name} {shape}")
    if name.startswith("fpn.pred_layers."):
        # Stronger P5 and P4 (and so P6, P7, made from P5): without it every detection
        # comes from P3, which has the most cells and sums all three laterals.
        return gain(FPN_PRED_GAINS[int(name.split(".")[2])], shape), 0.0
    if name == "prediction_layers.0.upfeature.0.weight":
        return gain(UPFEATURE_GAIN, shape), 0.0
    if name == "prediction_layers.0.conf_layer.weight":
        # Class logits spread over a few units: top scores ~0.4-0.8 over 15-20 classes.
        return gain(CONF_GAIN, shape), 0.0
    if name == "prediction_layers.0.bbox_layer.weight":
        # Regressions of a few units, so that box sizes vary around the square priors.
        return gain(BBOX_GAIN, shape), 0.0
    if name == "prediction_layers.0.mask_layer.weight":
        # Coefficients spread over tanh's range.
        return gain(MASK_COEFF_GAIN, shape), 0.0
    if name == "proto_net.10.weight":
        return gain(PROTO_LAST_GAIN, shape), 0.0
    if name.startswith("proto_net."):
        # He gain: with unit gain the signal halves at each ReLU and the prototypes are
        # nearly constant over the image.
        return gain(PROTO_GAIN, shape), 0.0
    return gain(1.0, shape), 0.0  # every other conv: unit-variance gain


@contextlib.contextmanager
def patched(obj, attr, value):
    old = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, old)


def import_yolact():
    """Imports the official modules with the CPU patches 1 and 2 of the docstring."""
    if not os.path.exists(os.path.join(YOLACT_REPO, "yolact.py")):
        sys.exit(f"no YOLACT sources in {YOLACT_REPO} (see the docstring)")
    sys.path.insert(0, YOLACT_REPO)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    with patched(torch.cuda, "current_device", lambda: 0):  # patch 1
        import yolact
    from data import config as data_config
    from data import set_cfg
    from layers import output_utils
    from utils import augmentations

    set_cfg(CONFIG)

    def fast_base_transform():
        with patched(torch.Tensor, "cuda", lambda self, *a, **k: self):  # patch 2
            return augmentations.FastBaseTransform()

    return yolact, data_config, output_utils, fast_base_transform


def summary_2d(t: torch.Tensor, rng: np.random.Generator) -> dict:
    """`summary` of an [N, C] tensor: same indices and values, one mean per column."""
    assert t.dim() == 2
    s = summary(t.unsqueeze(0), rng)
    s["shape"] = list(t.shape)
    s["channel_axis"] = 1
    s["channel_means"] = [float(x) for x in t.double().mean(0)]
    return s


def summary_3d(t: torch.Tensor, rng: np.random.Generator, last_axis_means=False) -> dict:
    assert t.dim() == 3
    s = summary(t, rng)
    s["channel_axis"] = 0
    if last_axis_means:
        s["last_axis_means"] = [float(x) for x in t.double().mean((0, 1))]
    return s


def rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_util

    r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}


def iou_matrix(boxes: torch.Tensor) -> torch.Tensor:
    """Plain IoU (as box_utils.jaccard), in float64, for the margins."""
    b = boxes.double()
    lt = torch.max(b[:, None, :2], b[None, :, :2])
    rb = torch.min(b[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area[:, None] + area[None, :] - inter)


def margins(loc, conf, priors, decode, detect, proto, coeffs, boxes_float, crop, size) -> dict:
    """How close the run is to the decisions of Detect and postprocess (float64 where it
    can), restricted to the decisions that can change the output (see the docstring)."""
    boxes = decode(loc, priors)
    cur = conf[:, 1:].t()  # [80, N]
    best = cur.max(0).values
    kept = best > detect.conf_thresh
    out = {"kept_priors": int(kept.sum())}
    scores, idx = cur[:, kept].sort(1, descending=True)
    kb = boxes[kept]
    k = min(detect.top_k, scores.shape[1])
    survivors, ious = [], []
    for c in range(cur.shape[0]):
        iou = iou_matrix(kb[idx[c, :k]]).triu(1)
        keep = iou.max(0).values <= detect.nms_thresh
        survivors.append(scores[c, :k][keep])
        ious.append(iou)
    s = torch.cat(survivors).sort(descending=True).values
    out["candidates_after_nms"] = int(s.numel())
    n = min(100, s.numel())
    cut = float(s[n - 1])
    out["score_100"] = cut
    if s.numel() > n:
        out["top_100_gap"] = float(s[n - 1] - s[n])
    gaps = s[: n - 1] - s[1:n]
    out["min_adjacent_score_gap"] = float(gaps.min()) if n > 1 else None
    out["adjacent_score_gaps_below_1e-4"] = int((gaps < 1e-4).sum())
    # Only priors with a class score >= the 100th can reach the output.
    out["conf_thresh_gap"] = float((best[(cur >= cut).any(0)] - detect.conf_thresh).abs().min())
    # The top-200 cut matters where a class's 200th score reaches the 100th final score.
    if scores.shape[1] > k:
        out["top_k_cut_scores_max"] = float(scores[:, k - 1].max())
    # IoUs compared with nms_thresh that decide whether a box scoring >= the 100th survives.
    gap = math.inf
    for c, iou in enumerate(ious):
        j = scores[c, :k] >= cut
        sub = iou[:, j]
        sub = sub[sub > 0]
        if sub.numel():
            gap = min(gap, float((sub - detect.nms_thresh).abs().min()))
    out["nms_iou_gap"] = gap
    # Final mask probabilities (sigmoid, crop, bilinear) near the > 0.5 threshold.
    p = torch.sigmoid(proto @ coeffs.t())
    p = crop(p, boxes_float.clone()).permute(2, 0, 1).contiguous()
    p = F.interpolate(p.unsqueeze(0), size, mode="bilinear", align_corners=False)[0]
    d = (p.double() - 0.5).abs()
    out["mask_pixels_within_1e-5_of_half"] = int((d < 1e-5).sum())
    out["mask_pixels_within_1e-4_of_half"] = int((d < 1e-4).sum())
    return out, p > 0.5


def prior_index(boxes_float: torch.Tensor, decoded: torch.Tensor) -> list:
    """The prior each detection came from (its decoded box matches bit for bit)."""
    out = []
    for b in boxes_float:
        hit = (decoded == b).all(1).nonzero().flatten()
        assert hit.numel() >= 1, "detection box not among the decoded priors"
        out.append(int(hit[0]))
    return out


def build(yolact):
    net = yolact.Yolact()
    net.eval()
    net.detect.use_fast_nms = True
    net.detect.use_cross_class_nms = False
    return net


def main():
    t0 = time.time()
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    yolact, data_config, output_utils, fast_base_transform = import_yolact()
    import cv2
    from layers.box_utils import crop, decode

    cfg = data_config.cfg
    cfg.mask_proto_debug = False
    net = build(yolact)
    assert cfg.name == "yolact_resnet50", cfg.name
    spec, dropped, state = [], [], {}
    for name, t in net.state_dict().items():
        shape = list(t.shape)
        if name.endswith("num_batches_tracked"):
            dropped.append(
                {"name": name, "shape": shape, "why": "BatchNorm counter, unused in eval"}
            )
            state[name] = t.clone()
            continue
        a, b = range_of(name, shape)
        state[name] = torch.from_numpy(generate(name, shape, a, b))
        if name.startswith("semantic_seg_conv."):
            dropped.append({"name": name, "shape": shape, "a": a, "b": b,
                            "why": "training-only semantic segmentation head"})
            continue
        spec.append({"name": name, "shape": shape, "a": a, "b": b})
    net.load_state_dict(state, strict=True)
    seg_calls = []
    net.semantic_seg_conv.register_forward_hook(lambda *_: seg_calls.append(1))

    # Capture the raw head outputs that Yolact.forward hands to Detect.
    raw = {}
    detect_call = net.detect.__call__

    def keep_raw(predictions, n):
        raw.update({k: v.clone() for k, v in predictions.items()})
        return detect_call(predictions, n)

    # Yolact.forward calls self.detect(pred_outs, self); Python looks __call__ up on the
    # type, so the wrapper goes into a subclass.
    net.detect.__class__ = type("DetectKeepRaw", (type(net.detect),),
                                {"__call__": lambda self, p, n: keep_raw(p, n)})

    transform = fast_base_transform()
    cases = []
    priors_doc = None
    for photo in PHOTOS:
        rng = np.random.default_rng(len(cases) + 1)
        path = os.path.join(ROOT, "assets", photo)
        with torch.no_grad():
            frame = torch.from_numpy(cv2.imread(path)).float()  # evalimage, without .cuda()
            batch = transform(frame.unsqueeze(0))
            preds = net(batch)
            h, w, _ = frame.shape
            det = preds[0]["detection"]
            boxes_float = det["box"].clone()  # postprocess scales det["box"] in place
            coeffs = det["mask"].clone()
            classes, scores, boxes, masks = output_utils.postprocess(
                preds, w, h, visualize_lincomb=False, crop_masks=True, score_threshold=0
            )
        assert not seg_calls, "semantic_seg_conv ran at eval"
        priors = raw["priors"]
        if priors_doc is None:
            priors_doc = {
                "count": int(priors.shape[0]),
                "per_level": [int(pl.priors.shape[0]) for pl in net.prediction_layers],
                "first": [floats(r) for r in priors[:12]],
                "last": [floats(r) for r in priors[-4:]],
                "summary": summary_2d(priors, np.random.default_rng(0)),
            }
        m = masks.numpy() > 0.5
        margin, again = margins(raw["loc"][0], raw["conf"][0], priors, decode, net.detect,
                                raw["proto"][0], coeffs, boxes_float, crop, (h, w))
        assert np.array_equal(again.numpy(), m), "mask recomputation differs from postprocess"
        case = {
            "photo": photo,
            "original_size": [int(h), int(w)],
            "input": summary_3d(batch[0], rng),
            "raw": {
                "loc": summary_2d(raw["loc"][0], rng),
                "conf": summary_2d(raw["conf"][0], rng),
                "mask": summary_2d(raw["mask"][0], rng),
                "proto": summary_3d(raw["proto"][0], rng, last_axis_means=True),
            },
            "detections": {
                "classes": [int(c) for c in classes],
                "scores": floats(scores),
                "boxes": [[int(v) for v in b] for b in boxes],
                "boxes_float": [floats(b) for b in boxes_float],
                "prior_index": prior_index(boxes_float, decode(raw["loc"][0], priors)),
            },
            "masks": [rle(mk) for mk in m],
            "margins": margin,
        }
        cases.append(case)
        det = case["detections"]
        areas = m.reshape(m.shape[0], -1).sum(1)
        bw = (boxes[:, 2] - boxes[:, 0]).numpy()
        bh = (boxes[:, 3] - boxes[:, 1]).numpy()
        fill = areas / np.maximum(bw * bh, 1)
        ends = np.cumsum(priors_doc["per_level"])
        level = np.searchsorted(ends, det["prior_index"], side="right")
        print(
            f"{photo} {h}x{w}: {len(classes)} detections"
            f" (P3-P7: {np.bincount(level, minlength=5).tolist()})"
            f" of {len(set(det['classes']))} classes {sorted(set(det['classes']))},"
            f" scores {float(scores[0]):.4f}..{float(scores[-1]):.4f},"
            f" box w {bw.min()}..{bw.max()} h {bh.min()}..{bh.max()},"
            f" mask areas {areas.min()}..{areas.max()} (median {int(np.median(areas))}),"
            f" empty {(areas == 0).sum()},"
            f" covering 5-95% of the box {((fill > 0.05) & (fill < 0.95)).sum()},"
            f" more {(fill >= 0.95).sum()}"
        )
        print("  margins", case["margins"])

    doc = {
        "generator": "tests/reference/make_yolact_fixtures.py",
        "torch": torch.__version__,
        "yolact": "902073d4",
        "config": CONFIG,
        "detect": {
            "top_k": net.detect.top_k,
            "conf_thresh": net.detect.conf_thresh,
            "nms_thresh": net.detect.nms_thresh,
            "max_num_detections": cfg.max_num_detections,
            "use_fast_nms": True,
            "use_cross_class_nms": False,
        },
        "weights": spec,
        "dropped": dropped,
        "priors": priors_doc,
        "cases": cases,
    }
    path = os.path.join(OUT, "yolact_r50.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB) in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
