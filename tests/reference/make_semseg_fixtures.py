#!/usr/bin/env python3
"""Writes plugins/rcnn/tests/fixtures/semseg_fpn.json: Detectron2's own Panoptic FPN semantic
head (`SemSegFPNHead`, detectron2/modeling/meta_arch/semantic_seg.py at commit 02b5c4e2) and
`sem_seg_postprocess` (detectron2/modeling/postprocessing.py), run on CPU with generated
weights on the FPN features of torchvision's Faster R-CNN R18-FPN trunk on a real photo.

Setup as in make_densepose_fixtures.py (same pip packages; detectron2's source tree at
commit 02b5c4e2 extracted to DETECTRON2_REPO, default /tmp/detectron2, put on sys.path; its
compiled `_C` is neither built nor imported), then

    DETECTRON2_REPO=/tmp/detectron2 python3 tests/reference/make_semseg_fixtures.py

Run by developers, not by CI (CI reads the committed fixture). A few seconds on two threads.

Trunk: exactly make_densepose_fixtures.py's (imported from it: `build_trunk`, `trunk_range`,
`generate`), so that its weights are bit-identical to the `trunk_weights` of
densepose_r18_fpn.json (asserted below), and the photo and sizes of that fixture's first case
(assets/astronaut.png, min_size 512, max_size 853, FrozenBatchNorm2d eps 1e-5). Only
`transform` and `backbone` run: torchvision's FPN outputs "0".."3" are Detectron2's "p2".."p5"
(strides 4..32, 256 channels; "pool" = p6 is not an input of the head). The head's input is
torchvision's padded batch (`images.tensors`, size_divisibility 32, as Detectron2's).

Head: `SemSegFPNHead(input_shape, num_classes=54, conv_dims=64, common_stride=4, norm="GN",
ignore_value=255)`, i.e. Base-RCNN-FPN.yaml + Base-Panoptic-FPN.yaml (IN_FEATURES p2..p5,
NUM_CLASSES 54, COMMON_STRIDE 4, NORM "GN": GroupNorm(32, conv_dims)) except CONVS_DIM
reduced from 128 to 64 for CI. Its weights are the checkpoint names under prefix
`sem_seg_head.` (the convs have no bias: norm is set), generated with the same `generate`;
see `head_range`. Inference is Detectron2's (PanopticFPN.forward in eval): `sem_seg_head(
features)` -> [1, 54, Hp, Wp] logits at the padded input size (the head upsamples 4x itself),
`sem_seg_postprocess(logits[0], image_size, original h, original w)` -> [54, H, W], then
`.argmax(dim=0)`.

JSON: generator, versions, detectron2, trunk_weights (the densepose fixture's list),
head_weights [{name, shape, a, b}], head {num_classes, conv_dims, common_stride, norm, groups,
in_features}, case {photo, params {min_size, max_size, bn_eps}, original_size, image_size
(resized, unpadded), padded_size [H, W], logits_padded (summary of the [54, Hp, Wp] head
output), logits (summary of the [54, H, W] postprocessed logits), labels (base64 of the
[H, W] argmax, uint8 row-major), label_margin_below_1e-4 (pixels whose top-2 logits differ by
less than 1e-4)}. Summaries are make_maskrcnn_fixtures.summary: shape, sum, abs_sum, min, max,
channel_means (the mean over H, W of each of the 54 classes, i.e. over all axes but the first),
and the values at 512 fixed random flat indices (plus the first and last).
"""

import json
import math
import os
import sys
import time

import numpy as np
import torch
import torchvision
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_densepose_fixtures as dp  # noqa: E402  (puts detectron2 on sys.path)
from make_maskrcnn_fixtures import generate, summary  # noqa: E402

from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling.meta_arch.semantic_seg import SemSegFPNHead  # noqa: E402
from detectron2.modeling.postprocessing import sem_seg_postprocess  # noqa: E402

# (photo, min_size, max_size): astronaut resizes to 512x512 (no padding); coffee to
# 480x720, padded to 480x736, so sem_seg_postprocess's crop removes 16 columns.
CASES = [("astronaut.png", 512, 853), ("coffee.png", 480, 800)]
NUM_CLASSES = 54
CONV_DIMS = 64  # Base-Panoptic-FPN's CONVS_DIM is 128; reduced for CI
COMMON_STRIDE = 4
GROUPS = 32
IGNORE_VALUE = 255
IN_FEATURES = ["p2", "p3", "p4", "p5"]
PREFIX = "sem_seg_head."
# Predictor scale over LeCun-uniform sqrt(3 / fan_in): clear argmax margins.
PREDICTOR_SCALE = 4.0


def head_range(name: str, shape) -> tuple:
    """(a, b) of a head weight (full name, prefix sem_seg_head.): 3x3 convs He-uniform
    (ReLU after GroupNorm), GroupNorm weight 1 +- 0.25, bias +- 0.1, the 1x1 predictor
    PREDICTOR_SCALE x sqrt(3 / fan_in), its bias +- 0.1."""
    if name.endswith(".norm.weight"):
        return 0.25, 1.0
    if name.endswith(".norm.bias"):
        return 0.1, 0.0
    if name == PREFIX + "predictor.weight":
        fan_in = int(np.prod(shape[1:]))
        return float(np.float32(PREDICTOR_SCALE * math.sqrt(3.0 / fan_in))), 0.0
    if name == PREFIX + "predictor.bias":
        return 0.1, 0.0
    if name.endswith(".weight") and len(shape) == 4:
        fan_in = int(np.prod(shape[1:]))
        return float(np.float32(math.sqrt(6.0 / fan_in))), 0.0
    raise ValueError(f"no range for {name} {shape}")


def main():
    t0 = time.time()
    torch.set_num_threads(2)

    probe = dp.build_trunk(800, 1333)
    trunk_spec, trunk_state = [], {}
    for name, t in probe.state_dict().items():
        shape = list(t.shape)
        a, b = dp.trunk_range(name, shape)
        trunk_spec.append({"name": name, "shape": shape, "a": a, "b": b})
        trunk_state[name] = torch.from_numpy(generate(name, shape, a, b))
    with open(os.path.join(dp.OUT, "densepose_r18_fpn.json")) as f:
        assert json.load(f)["trunk_weights"] == trunk_spec, "trunk differs from the densepose fixture's"

    def make_trunk(min_size, max_size):
        trunk = dp.build_trunk(min_size, max_size)
        missing, unexpected = trunk.load_state_dict(trunk_state, strict=True)
        assert not missing and not unexpected
        return trunk

    input_shape = {k: ShapeSpec(channels=256, stride=dp.STRIDES[k]) for k in IN_FEATURES}
    head = SemSegFPNHead(
        input_shape,
        num_classes=NUM_CLASSES,
        conv_dims=CONV_DIMS,
        common_stride=COMMON_STRIDE,
        norm="GN",
        ignore_value=IGNORE_VALUE,
    )
    head.eval()
    state = head.state_dict()
    spec = []
    for k in state:
        name = PREFIX + k
        shape = list(state[k].shape)
        a, b = head_range(name, shape)
        spec.append({"name": name, "shape": shape, "a": a, "b": b})
        state[k] = torch.from_numpy(generate(name, shape, a, b))
    missing, unexpected = head.load_state_dict(state, strict=True)
    assert not missing and not unexpected
    for m in head.modules():
        if isinstance(m, torch.nn.GroupNorm):
            assert m.num_groups == GROUPS and m.num_channels == CONV_DIMS and m.eps == 1e-5

    cases = []
    labels_all = []
    for PHOTO, MIN_SIZE, MAX_SIZE in CASES:
        trunk = make_trunk(MIN_SIZE, MAX_SIZE)
        img = np.asarray(Image.open(os.path.join(dp.ROOT, "assets", PHOTO)).convert("RGB"))
        x = torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255.0
        oh, ow = img.shape[:2]
        with torch.no_grad():
            images, _ = trunk.transform([x])
            features = trunk.backbone(images.tensors)
            d2 = {dp.LEVELS[k]: v for k, v in features.items()}
            image_size = tuple(int(v) for v in images.image_sizes[0])
            padded = list(images.tensors.shape[-2:])
            assert padded[0] % 32 == 0 and padded[1] % 32 == 0
            logits_padded, _ = head(d2)
            assert list(logits_padded.shape) == [1, NUM_CLASSES] + padded
            logits = sem_seg_postprocess(logits_padded[0], image_size, oh, ow)
            labels = logits.argmax(dim=0)
            top2 = torch.topk(logits, 2, dim=0).values
            margin = (top2[0] - top2[1]).numpy()

        labels_np = labels.numpy().astype(np.uint8)
        near = int((margin < 1e-4).sum())
        rng = np.random.default_rng(7)
        case = {
            "photo": PHOTO,
            "params": {"min_size": MIN_SIZE, "max_size": MAX_SIZE, "bn_eps": dp.BN_EPS},
            "original_size": [oh, ow],
            "image_size": list(image_size),
            "padded_size": padded,
            "logits_padded": summary(logits_padded[0], rng),
            "logits": summary(logits, rng),
            "labels": dp.b64(labels_np, np.uint8),
            "label_margin_below_1e-4": near,
        }
        cases.append(case)
        labels_all.append(labels_np)
    doc = {
        "generator": "tests/reference/make_semseg_fixtures.py",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "detectron2": dp.DETECTRON2_COMMIT,
        "trunk": "FasterRCNN(resnet_fpn_backbone('resnet18', weights=None, trainable_layers=5), "
        "num_classes=2): transform and backbone only",
        "trunk_weights": trunk_spec,
        "head_weights": spec,
        "head": {
            "num_classes": NUM_CLASSES,
            "conv_dims": CONV_DIMS,
            "common_stride": COMMON_STRIDE,
            "norm": "GN",
            "groups": GROUPS,
            "in_features": list(head.in_features),
        },
        "cases": cases,
    }
    path = os.path.join(dp.OUT, "semseg_fpn.json")
    with open(path, "w") as f:
        json.dump(doc, f)

    for w in spec:
        print(f"  {w['name']} {w['shape']} a={w['a']:.6g} b={w['b']:.6g}")
    hist = np.bincount(labels_np.reshape(-1), minlength=NUM_CLASSES)
    order = np.argsort(-hist)
    print(f"original {[oh, ow]}, resized {list(image_size)}, padded {padded}")
    print(f"logits range {float(logits.min()):.3f}..{float(logits.max()):.3f}")
    print(
        f"{int((hist > 0).sum())} classes present; histogram (class: pixels): "
        + ", ".join(f"{int(c)}: {int(hist[c])}" for c in order if hist[c] > 0)
    )
    print(
        f"top-2 margin percentiles 1/10/50: "
        + "/".join(f"{np.percentile(margin, p):.4f}" for p in (1, 10, 50))
        + f"; min {margin.min():.2e}; < 1e-4: {near}; < 1e-3: {int((margin < 1e-3).sum())}"
    )
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.3f} MB) in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
