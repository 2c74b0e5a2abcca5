#!/usr/bin/env python3
"""Writes the fixtures of plugins/rcnn/tests/torchvision_reference.rs and tests/mask_rcnn.rs:
torchvision's own Mask R-CNN (transform, ResNet body, FPN, RPN, RoI box and mask heads,
postprocess) run on real photos, in plugins/rcnn/tests/fixtures/.

    pip install torch torchvision numpy pillow      # CPU wheels are enough
    python3 tests/reference/make_maskrcnn_fixtures.py

Run by developers, not by CI (CI reads the committed fixtures).

The model is torchvision's `MaskRCNN` with a `resnet_fpn_backbone("resnet18", weights=None,
trainable_layers=5)` backbone (FrozenBatchNorm2d, returned layers 1-4, FPN 256 channels with
LastLevelMaxPool), i.e. `maskrcnn_resnet50_fpn` with a ResNet-18 body, 91 classes, every
inference default (box_score_thresh 0.05, NMS 0.7 / 0.5, 1000 proposals, 100 detections).

Weights. The state dict is ~120 MB in f32, more than the 20 MB all fixtures of this issue may
take, so the weights are not stored: every tensor of the state
dict is generated from its *name* by a counter-based generator that the Rust side reproduces
bit for bit (`kernels::weights::generated_tensor`):

    seed  = FNV-1a 64 of the full state-dict name (e.g. "backbone.body.layer1.0.conv1.weight")
    z_i   = splitmix64(seed + (i + 1) * 0x9E3779B97F4A7C15)     for element i (row-major)
    u_i   = float32(z_i >> 40) / 2^24                            exact, in [0, 1)
    value = (u_i * 2 - 1) * a + b                                each step rounded to float32

with (a, b) per tensor stored in the fixture (see `range_of`): conv and linear weights
a = sqrt(3 / fan_in) (unit variance gain), biases a = 0.1, the FrozenBatchNorm2d statistics
randomised so that the fold into the convolutions is really tested (weight in [0.5, 1], bias
in [-0.1, 0.1], running_mean in [-0.1, 0.1], running_var in [0.5, 1.5]), and the heads scaled
so that random weights still give detections of several classes with well-separated scores.
The generated tensors are loaded into the torchvision model with `load_state_dict(strict=True)`,
so their names and shapes are torchvision's (the Rust tests write them to a .safetensors file
and load that through the nodes' `weights` parameter).

Cases (one per photo): `chelsea.png` (397x264, resized to 1203x800, padded to 1216x800) with
the defaults (min 800 / max 1333, FrozenBN eps 0 as `maskrcnn_resnet50_fpn` with its COCO
weights, via `overwrite_eps(model, 0.0)`), and `astronaut.png` with min 512 / max 853 and eps 1e-5 (FrozenBatchNorm2d's own default, as
`resnet_fpn_backbone` and ImageNet ResNets).

Outputs, per case, in maskrcnn_r18_fpn.json: the preprocessed tensor (GeneralizedRCNNTransform,
[3, H', W'], padded to 32), torchvision's image_sizes, the body's outputs "0".."3" (c2..c5) and
the FPN's "0".."3","pool" (p2..p6). Full tensors are too large (p2 alone is 256x200x272), so
each is summarised: shape, sum, sum of |x|, min, max, per-channel means, and the values at 512
fixed random flat indices plus the first and last element. Then in full: the RPN's proposals
and their objectness (the scores `filter_proposals` returns), the box head's detections in
resized-image pixels (boxes, labels, scores) with their 28x28 mask probabilities, and the
postprocessed detections (boxes in original pixels, pasted masks thresholded at >= 0.5 as
uncompressed column-major COCO RLE).
"""

import json
import math
import os

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection._utils import overwrite_eps

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "plugins", "rcnn", "tests", "fixtures")

GOLDEN = 0x9E3779B97F4A7C15
MASK = (1 << 64) - 1
SAMPLES = 512
# torchvision's default is 0.05; see range_of for how the head weights make it usable.
BOX_SCORE_THRESH = 0.05
# paste_masks_in_image returns soft masks; its docstring thresholds them with `>= 0.5`.
MASK_THRESHOLD = 0.5


def fnv1a64(s: str) -> int:
    h = 0xCBF29CE484222325
    for byte in s.encode():
        h ^= byte
        h = (h * 0x100000001B3) & MASK
    return h


def splitmix_uniform(seed: int, n: int) -> np.ndarray:
    """u_i in [0, 1) as float32 (exact: 24-bit numerators)."""
    with np.errstate(over="ignore"):
        i = np.arange(1, n + 1, dtype=np.uint64)
        z = np.uint64(seed) + i * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24)


def range_of(name: str, shape) -> tuple:
    """(a, b): values are uniform in [b - a, b + a)."""
    if name.startswith("backbone.body.") and len(shape) == 1:  # FrozenBatchNorm2d
        if name.endswith("running_var"):
            return 0.5, 1.0
        if name.endswith("weight"):
            return 0.25, 0.75
        return 0.1, 0.0  # bias, running_mean
    # The heads: chosen so that random weights still give a usable test, i.e. detections of
    # several classes with well-separated scores (no near-ties at the top-100 cut), and mask
    # logits of a few units (few pixels near the 0.5 threshold). Negative fc biases make the
    # box head's hidden units sparse, so that class scores depend on the RoI rather than on a
    # constant common mode; cls_score and mask_fcn_logits are scaled up to spread them.
    if name == "roi_heads.box_head.fc6.bias":
        return 0.1, -0.5
    if name == "roi_heads.box_head.fc7.bias":
        return 0.1, -0.4
    if name == "roi_heads.box_predictor.cls_score.weight":
        return float(np.float32(6.0 * math.sqrt(3.0 / shape[1]))), 0.0
    if name == "roi_heads.mask_predictor.mask_fcn_logits.weight":
        return float(np.float32(8.0 * math.sqrt(3.0 / shape[1]))), 0.0
    if name == "roi_heads.mask_predictor.conv5_mask.weight":
        # ConvTranspose2d(2, stride 2): each output sees one tap of every input channel.
        return float(np.float32(math.sqrt(3.0 / shape[0]))), 0.0
    if len(shape) in (2, 4):  # conv and linear weights: unit-variance gain
        fan_in = int(np.prod(shape[1:]))
        return float(np.float32(math.sqrt(3.0 / fan_in))), 0.0
    if len(shape) == 1:  # biases
        return 0.1, 0.0
    raise ValueError(f"no range for {name} {shape}")


def generate(name: str, shape, a: float, b: float) -> np.ndarray:
    n = int(np.prod(shape))
    u = splitmix_uniform(fnv1a64(name), n)
    v = (u * np.float32(2.0) - np.float32(1.0)) * np.float32(a) + np.float32(b)
    return v.astype(np.float32).reshape(shape)


def summary(t: torch.Tensor, rng: np.random.Generator, channel_axis: int = None) -> dict:
    """Shape, sums, extremes, sampled values and per-channel means (over axis -3, or over
    `channel_axis` when given, e.g. 1 for the columns of an `[N, C]` matrix)."""
    a = t.detach().cpu().numpy().astype(np.float32)
    flat = a.reshape(-1)
    idx = np.unique(
        np.concatenate([[0, flat.size - 1], rng.integers(0, flat.size, SAMPLES)])
    )
    moved = np.moveaxis(a, -3 if channel_axis is None else channel_axis, 0)
    per_channel = moved.reshape(moved.shape[0], -1).astype(np.float64).mean(axis=1)
    extra = {} if channel_axis is None else {"channel_axis": channel_axis}
    return {
        **extra,
        "shape": list(a.shape),
        "sum": float(flat.astype(np.float64).sum()),
        "abs_sum": float(np.abs(flat.astype(np.float64)).sum()),
        "min": float(flat.min()),
        "max": float(flat.max()),
        "channel_means": [float(x) for x in per_channel],
        "indices": [int(i) for i in idx],
        "values": [float(flat[i]) for i in idx],
    }


def rle_columns(mask: np.ndarray) -> list:
    """Uncompressed COCO RLE (column-major run lengths, starting with a run of zeros)."""
    flat = mask.astype(np.uint8).reshape(-1, order="F")
    counts, prev, run = [], 0, 0
    for v in flat:
        if v != prev:
            counts.append(run)
            prev, run = v, 0
        run += 1
    counts.append(run)
    return counts


def floats(t: torch.Tensor) -> list:
    return [float(v) for v in t.detach().cpu().numpy().astype(np.float32).reshape(-1)]


def build(eps: float, min_size: int, max_size: int):
    backbone = resnet_fpn_backbone(
        backbone_name="resnet18", weights=None, trainable_layers=5
    )
    model = MaskRCNN(
        backbone,
        num_classes=91,
        min_size=min_size,
        max_size=max_size,
        box_score_thresh=BOX_SCORE_THRESH,
    )
    model.eval()
    overwrite_eps(model, eps)
    return model


def run_heads(model, images, features, original_size) -> dict:
    """torchvision's RPN, RoI heads and postprocess, keeping the proposals' scores."""
    kept = {}
    filter_proposals = model.rpn.filter_proposals

    def keep_scores(*args, **kwargs):
        boxes, scores = filter_proposals(*args, **kwargs)
        kept["scores"] = scores
        return boxes, scores

    model.rpn.filter_proposals = keep_scores
    proposals, _ = model.rpn(images, features)
    model.rpn.filter_proposals = filter_proposals
    detections, _ = model.roi_heads(features, proposals, images.image_sizes)
    det = detections[0]
    resized = {k: v.clone() for k, v in det.items()}
    final = model.transform.postprocess(
        detections, images.image_sizes, [tuple(original_size)]
    )[0]
    masks = final["masks"][:, 0] >= MASK_THRESHOLD
    return {
        "proposals": {
            "boxes": floats(proposals[0]),
            "scores": floats(kept["scores"][0]),
        },
        "detections": {
            "boxes": floats(resized["boxes"]),
            "labels": [int(v) for v in resized["labels"]],
            "scores": floats(resized["scores"]),
            "mask_probs": floats(resized["masks"]),
        },
        "final": {
            "boxes": floats(final["boxes"]),
            "masks_rle": [rle_columns(m.numpy()) for m in masks],
            "mask_area": [int(m.sum()) for m in masks],
        },
    }


def main():
    torch.set_num_threads(2)
    os.makedirs(OUT, exist_ok=True)
    # The generated state dict, every tensor of the model.
    probe = build(0.0, 800, 1333)
    spec = []
    state = {}
    for name, t in probe.state_dict().items():
        shape = list(t.shape)
        a, b = range_of(name, shape)
        spec.append({"name": name, "shape": shape, "a": a, "b": b})
        state[name] = torch.from_numpy(generate(name, shape, a, b))

    cases = []
    for photo, min_size, max_size, eps in [
        ("chelsea.png", 800, 1333, 0.0),
        ("astronaut.png", 512, 853, 1e-5),
    ]:
        model = build(eps, min_size, max_size)
        missing, unexpected = model.load_state_dict(state, strict=True)
        assert not missing and not unexpected
        rng = np.random.default_rng(len(cases) + 1)
        img = np.asarray(Image.open(os.path.join(ROOT, "assets", photo)).convert("RGB"))
        x = torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255.0
        with torch.no_grad():
            images, _ = model.transform([x])
            body = model.backbone.body(images.tensors)
            fpn = model.backbone.fpn(body)
            heads = run_heads(model, images, fpn, img.shape[:2])
        case = {
            "photo": photo,
            "params": {"min_size": min_size, "max_size": max_size, "bn_eps": eps},
            "original_size": list(img.shape[:2]),
            "image_size": list(images.image_sizes[0]),
            "preprocessed": summary(images.tensors[0], rng),
            "body": {},
            "fpn": {},
            **heads,
        }
        for k, v in body.items():
            case["body"][k] = summary(v[0], rng)
        for k, v in fpn.items():
            case["fpn"][k] = summary(v[0], rng)
        cases.append(case)
        det = heads["detections"]
        probs = np.array(det["mask_probs"])
        print(
            photo,
            list(images.tensors.shape),
            f"proposals {len(heads['proposals']['scores'])}",
            f"detections {len(det['scores'])} of {len(set(det['labels']))} classes,"
            f" scores {det['scores'][0]:.4f}..{det['scores'][-1]:.4f},"
            f" mask probs >= 0.5: {np.mean(probs >= 0.5):.3f},"
            f" within 0.01 of 0.5: {np.mean(np.abs(probs - 0.5) < 0.01):.4f}",
        )

    doc = {
        "generator": "tests/reference/make_maskrcnn_fixtures.py",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "model": "MaskRCNN(resnet_fpn_backbone('resnet18', weights=None, trainable_layers=5), num_classes=91, "
        f"box_score_thresh={BOX_SCORE_THRESH})",
        "box_score_thresh": BOX_SCORE_THRESH,
        "mask_threshold": MASK_THRESHOLD,
        "weights": spec,
        "cases": cases,
    }
    path = os.path.join(OUT, "maskrcnn_r18_fpn.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
