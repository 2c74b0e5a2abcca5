#!/usr/bin/env python3
"""Writes plugins/rcnn/tests/fixtures/keypointrcnn_r18_fpn.json for the keypoint test of
plugins/rcnn/tests/torchvision_reference.rs: torchvision's own Keypoint R-CNN (transform,
ResNet body, FPN, RPN, box head, keypoint head, postprocess) run on real photos.

    pip install torch torchvision numpy pillow      # CPU wheels are enough
    python3 tests/reference/make_keypointrcnn_fixtures.py

Run by developers, not by CI (CI reads the committed fixture).

The model is torchvision's `KeypointRCNN` as `keypointrcnn_resnet50_fpn` builds it (2 classes,
`MultiScaleRoIAlign` 14x14 with sampling ratio 2, `KeypointRCNNHeads` of eight 3x3
convolutions, `KeypointRCNNPredictor` with its 4x4 stride-2 transposed convolution and 2x
bilinear upsampling, 17 keypoints, every inference default), with two changes that keep the
test light on CI's two cores: a ResNet-18 body (`resnet_fpn_backbone("resnet18")`, as the Mask
R-CNN fixture), and 64 channels in the keypoint convolutions instead of 512 (the node's
`layers` parameter; the arithmetic is the same).

Weights are generated from each state-dict name exactly as make_maskrcnn_fixtures.py does
(`generate`, reproduced bit for bit by `kernels::weights::generated_tensor`); the (a, b) of
each tensor is stored in the fixture. The keypoint predictor's weights are scaled so that the
heatmap logits spread over several units (distinct maxima, no near-ties).

Outputs per case: the image sizes, the detections in resized-image pixels (boxes, labels,
scores), their keypoints `[N, 17, 3]` (x, y, 1) and `keypoints_scores` `[N, 17]` from
`heatmaps_to_keypoints` (bicubic resampling of each 56x56 heatmap to the box), and the
postprocessed boxes and keypoints in original-image pixels.
"""

import json
import math
import os
import sys

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.models.detection import KeypointRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.models.detection._utils import overwrite_eps

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_maskrcnn_fixtures import floats, generate, range_of as maskrcnn_range  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "plugins", "rcnn", "tests", "fixtures")
KEYPOINT_LAYERS = (64,) * 8
NUM_KEYPOINTS = 17


def range_of(name: str, shape) -> tuple:
    if name == "roi_heads.keypoint_predictor.kps_score_lowres.weight":
        # ConvTranspose2d(4, stride 2, padding 1): each output sees 2x2 taps of every input
        # channel; scaled up so that heatmap logits spread over several units.
        return float(np.float32(40.0 * math.sqrt(3.0 / (shape[0] * 4)))), 0.0
    return maskrcnn_range(name, shape)


def build(eps: float, min_size: int, max_size: int):
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)
    model = KeypointRCNN(
        backbone,
        num_classes=2,
        min_size=min_size,
        max_size=max_size,
        keypoint_head=KeypointRCNNHeads(backbone.out_channels, KEYPOINT_LAYERS),
        keypoint_predictor=KeypointRCNNPredictor(KEYPOINT_LAYERS[-1], NUM_KEYPOINTS),
    )
    model.eval()
    overwrite_eps(model, eps)
    return model


def main():
    torch.set_num_threads(2)
    os.makedirs(OUT, exist_ok=True)
    probe = build(0.0, 800, 1333)
    spec, state = [], {}
    for name, t in probe.state_dict().items():
        shape = list(t.shape)
        a, b = range_of(name, shape)
        spec.append({"name": name, "shape": shape, "a": a, "b": b})
        state[name] = torch.from_numpy(generate(name, shape, a, b))

    cases = []
    for photo, min_size, max_size, eps in [
        ("astronaut.png", 512, 853, 0.0),
        ("coffee.png", 480, 800, 1e-5),
    ]:
        model = build(eps, min_size, max_size)
        missing, unexpected = model.load_state_dict(state, strict=True)
        assert not missing and not unexpected
        img = np.asarray(Image.open(os.path.join(ROOT, "assets", photo)).convert("RGB"))
        x = torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255.0
        with torch.no_grad():
            images, _ = model.transform([x])
            features = model.backbone(images.tensors)
            proposals, _ = model.rpn(images, features)
            detections, _ = model.roi_heads(features, proposals, images.image_sizes)
            resized = {k: v.clone() for k, v in detections[0].items()}
            final = model.transform.postprocess(
                detections, images.image_sizes, [tuple(img.shape[:2])]
            )[0]
        scores = resized["keypoints_scores"]
        case = {
            "photo": photo,
            "params": {"min_size": min_size, "max_size": max_size, "bn_eps": eps},
            "original_size": list(img.shape[:2]),
            "image_size": list(images.image_sizes[0]),
            "detections": {
                "boxes": floats(resized["boxes"]),
                "labels": [int(v) for v in resized["labels"]],
                "scores": floats(resized["scores"]),
                "keypoints": floats(resized["keypoints"]),
                "keypoints_scores": floats(scores),
            },
            "final": {
                "boxes": floats(final["boxes"]),
                "keypoints": floats(final["keypoints"]),
            },
        }
        cases.append(case)
        print(
            photo,
            list(images.tensors.shape),
            f"detections {len(case['detections']['scores'])},",
            f"scores {case['detections']['scores'][0]:.4f}..{case['detections']['scores'][-1]:.4f},"
            if case["detections"]["scores"]
            else "",
            f"keypoint scores {float(scores.min()):.2f}..{float(scores.max()):.2f}"
            if scores.numel()
            else "",
        )

    doc = {
        "generator": "tests/reference/make_keypointrcnn_fixtures.py",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "model": "KeypointRCNN(resnet_fpn_backbone('resnet18', weights=None, trainable_layers=5), num_classes=2, "
        f"keypoint_head=KeypointRCNNHeads(256, {KEYPOINT_LAYERS}), keypoint_predictor=KeypointRCNNPredictor(64, 17))",
        "keypoint_layers": list(KEYPOINT_LAYERS),
        "weights": spec,
        "cases": cases,
    }
    path = os.path.join(OUT, "keypointrcnn_r18_fpn.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
