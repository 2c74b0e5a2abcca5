#!/usr/bin/env python3
"""Writes plugins/rcnn/tests/fixtures/densepose_r18_fpn.json for the DensePose test of
plugins/rcnn/tests/torchvision_reference.rs: Detectron2's own DensePose head (the official code
of projects/DensePose at detectron2 commit 02b5c4e2) run on CPU with generated weights, on the
features and boxes of torchvision's Faster R-CNN trunk on real photos.

    pip install torch torchvision numpy pillow pycocotools      # CPU wheels are enough
    pip install "fvcore>=0.1.5,<0.1.6" "iopath>=0.1.7,<0.1.10" "omegaconf>=2.1,<2.4" \
        hydra-core yacs termcolor tabulate cloudpickle tqdm packaging scipy av
    # detectron2 is not installed: its source tree is put on sys.path. Extract it from a
    # clone (or a bare mirror) of facebookresearch/detectron2 at commit 02b5c4e2:
    mkdir -p /tmp/detectron2
    git --git-dir=<detectron2>/.git archive 02b5c4e2 | tar -x -C /tmp/detectron2
    DETECTRON2_REPO=/tmp/detectron2 python3 tests/reference/make_densepose_fixtures.py

Run by developers, not by CI (CI reads the committed fixture). About 15 s on two threads.

Nothing of detectron2 is stubbed or patched, and its compiled extension `detectron2._C` is
neither built nor imported: the modules used here (ROIPooler with "ROIAlign", i.e.
aligned=False, which calls torchvision.ops.roi_align; Conv2d; ConvTranspose2d; interpolate)
are pure Python. Importing the `densepose` package pulls in its data and evaluation modules,
which import PyAV (`av`, video datasets) and SciPy (evaluation): both are installed (see
above), not stubbed, and not otherwise used.

Trunk: torchvision's `FasterRCNN(resnet_fpn_backbone("resnet18", weights=None,
trainable_layers=5), num_classes=2, box_detections_per_img=6)` (FrozenBatchNorm2d eps 1e-5,
torchvision's default, stored as params.bn_eps; every other inference default), weights
generated as in make_maskrcnn_fixtures.py (`generate`, reproduced bit for bit by
`kernels::weights::generated_tensor`; the (a, b) of each tensor is stored in trunk_weights,
see `trunk_range` for the two box-predictor tensors that differ from the Mask R-CNN
fixture). It runs transform, backbone, RPN and RoI heads; its detections (resized-image
pixels) are the `pred_boxes` of the DensePose head, and `transform.postprocess` gives the boxes
in original pixels that DensePose's result converters use (Detectron2's `detector_postprocess`
rescales `pred_boxes` the same way before results are formed).

DensePose head: Detectron2's `DensePoseROIHeads(cfg, input_shape)`, cfg from `get_cfg()`,
`add_densepose_config` and the official config file (`densepose_rcnn_R_50_FPN_s1x.yaml` for
the first case, `densepose_rcnn_R_50_FPN_s1x_legacy.yaml` for the second: no decoder, a
multi-level ROIPooler over p2..p5, 15 coarse channels, 14x14 pooling), reduced for CI:
ROI_DENSEPOSE_HEAD.CONV_HEAD_DIM = 64 and DECODER_CONV_DIMS = 64 (NUM_STACKED_CONVS stays 8).
DECODER_NUM_CLASSES stays 256: `_init_densepose_head` gives the head
`in_channels = input_shape[in_features[0]].channels` (the FPN's 256) whether or not the decoder
is on, so the decoder's output width (DECODER_NUM_CLASSES) must equal the FPN's. torchvision's
FPN outputs "0".."3" are Detectron2's "p2".."p5" (strides 4..32, 256 channels; "pool" is p6,
in the features but not used: ROI_HEADS.IN_FEATURES is p2..p5). Inference runs what
Detectron2 runs after its box head, `roi_heads.forward_with_given_boxes(features,
[instances])` (mask and keypoint heads off, then `_forward_densepose`: decoder, pooler, head,
predictor, `densepose_inference`), on `Instances` of the resized image size with the
torchvision detections as `pred_boxes`, their scores, and `pred_classes = label - 1` (0,
Detectron2's single person class). Then per instance `densepose_chart_predictor_output_to_result(
pred_densepose[k], Boxes(original-pixel box))`. For the first case, the results-format dicts of
`densepose.evaluation.evaluator.prediction_to_dict(instances, 1, None, None, False)` on
Instances of the original size (boxes in original pixels, as after `detector_postprocess`):
image_id 1, category_id 0 (Detectron2's class index, not torchvision's label 1), bbox XYWH
floats, score, segmentation (pycocotools RLE of ToMaskConverter's mask, counts as str), and
"densepose" = `compress_quantized_densepose_chart_result` of the quantized result (as
`{"labels_uv_str", "shape_chw"}`), with "labels_uv_uint8" next to it: base64 of the quantized
[3, h, w] u8 array itself.

DensePose weights: the checkpoint names of the Detectron2 model (prefix `roi_heads.`),
generated with the same `generate`; the StandardROIHeads box head that DensePoseROIHeads also
builds is not used (torchvision's box head gives the boxes) and is left out. See `HEADS` for
the ranges, chosen so that the coarse segmentation gives both foreground and background in
every box, the fine segmentation hits many of the 24 parts with clear argmax margins, and U, V
spread over about [0, 1].

Fixture (one JSON document): generator, versions, trunk_weights, and per case: photo, config,
head (the head's configuration values), head_weights, params (min_size, max_size,
detections_per_img, bn_eps), original_size and image_size [H, W], detections (resized
pixels: boxes, labels, scores), final_boxes (original pixels), pooler_levels (the p-level
Detectron2's ROIPooler assigns each box to; null with the decoder, whose single level is
stride 4), raw, results, json (null for the second case). Arrays are base64 of row-major
little-endian f32 or u8. results, per instance: box_xywh_int (DensePose's `make_int_box`: x,
y, w, h of the original-pixel box each truncated), shape [h, w] (w, h at least 1), labels (u8
[h*w]) and uv (f32 [2, h, w]). raw: the predictor's outputs (coarse_segm [K, S, S], fine_segm,
u, v [25, S, S], S = 4 x pooler_resolution) of the first 2 instances, each as make_maskrcnn's
`summary` (shape, sum, abs_sum, min, max, channel_means, and the values at 1024 fixed random
flat indices plus the first and last): in full they would be ~3.9 MB per instance at S = 112.
"""

import base64
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_maskrcnn_fixtures import floats, generate, range_of as maskrcnn_range  # noqa: E402

DETECTRON2_REPO = os.environ.get("DETECTRON2_REPO", "/tmp/detectron2")
DETECTRON2_COMMIT = "02b5c4e2"
if not os.path.isdir(os.path.join(DETECTRON2_REPO, "projects", "DensePose", "densepose")):
    sys.exit(f"no detectron2 source tree at {DETECTRON2_REPO}: set DETECTRON2_REPO (see the docstring)")
sys.path.insert(0, DETECTRON2_REPO)
sys.path.insert(0, os.path.join(DETECTRON2_REPO, "projects", "DensePose"))

from detectron2.config import get_cfg  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling.poolers import assign_boxes_to_levels  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from densepose import add_densepose_config  # noqa: E402
from densepose.modeling.roi_heads.roi_head import DensePoseROIHeads  # noqa: E402
from densepose.converters.chart_output_to_chart_result import (  # noqa: E402
    densepose_chart_predictor_output_to_result,
)
from densepose.structures import (  # noqa: E402
    compress_quantized_densepose_chart_result,
    quantize_densepose_chart_result,
)
from densepose.structures.chart_result import DensePoseChartResultQuantized  # noqa: E402
from densepose.evaluation.evaluator import prediction_to_dict  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "plugins", "rcnn", "tests", "fixtures")
CONFIGS = os.path.join(DETECTRON2_REPO, "projects", "DensePose", "configs")
DETECTIONS_PER_IMG = 6
BN_EPS = 1e-5  # FrozenBatchNorm2d's default, as resnet_fpn_backbone builds it
CONV_HEAD_DIM = 64
DECODER_CONV_DIMS = 64
RAW_INSTANCES = 2
RAW_SAMPLES = 1024
# Detectron2's FPN names of torchvision's FPN outputs.
LEVELS = {"0": "p2", "1": "p3", "2": "p4", "3": "p5", "pool": "p6"}
STRIDES = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}


def trunk_range(name: str, shape) -> tuple:
    """The Mask R-CNN fixture's ranges except the box predictor's. With 2 classes and those
    ranges the random box head ranks tiny slivers first (every box under 112 px, i.e. on p2
    for the legacy multi-level pooler, scores saturated at 0.999). Mirrored class weights
    (a = -6 sqrt(3 / fan_in), the same magnitude) rank larger boxes first with unsaturated
    scores, and an offset of 4 on every regression delta (dw = dh = 4 / 5 after the
    (10, 10, 5, 5) weights: boxes 2.2x larger, shifted by 0.4 of their size) spreads the
    detections over p2 and p3."""
    if name == "roi_heads.box_predictor.cls_score.weight":
        return float(np.float32(-6.0 * math.sqrt(3.0 / shape[1]))), 0.0
    if name == "roi_heads.box_predictor.bbox_pred.bias":
        return 0.1, 4.0
    return maskrcnn_range(name, shape)


# The DensePose head's ranges, per configuration. The decoder's and the head's convolutions
# are He-uniform (a = sqrt(6 / fan_in): ReLU after each, the activations keep their scale
# through the 8 stacked convolutions; the decoder's 1x1 predictor, no ReLU, sqrt(3 / fan_in)),
# biases a = 0.1. The chart predictor's ConvTranspose2d weights [in, out, 4, 4] are scaled
# from sqrt(3 / (in * 4)) (each output sees 2x2 taps of every input channel):
#  - coarse segmentation: the head's outputs are ReLUs, all positive, so the logits share a
#    common mode that made almost every pixel foreground (95-99 %). A negative a on the
#    ann_index_lowres bias (mirrored values: channel 0 gets +0.82 |a|, channel 1 -0.61 |a|)
#    offsets it, so that 30-60 % of every box is foreground;
#  - fine segmentation scaled up (argmax margins of several tenths, 18-22 of the 24 parts);
#  - U, V scaled down and centred (bias b) so that their 1-99 % range is about [0, 1].
HEADS = {
    "densepose_rcnn_R_50_FPN_s1x": {
        "coarse": 1.0,
        "coarse_bias": (-0.8, 0.0),
        "fine": 3.0,
        "uv": 0.22,
        "uv_bias": (0.1, 0.3),
    },
    "densepose_rcnn_R_50_FPN_s1x_legacy": {
        "coarse": 1.0,
        "coarse_bias": (-0.35, 0.0),
        "fine": 5.0,
        "uv": 0.9,
        "uv_bias": (0.1, 0.35),
    },
}


def head_range(name: str, shape, h: dict) -> tuple:
    """(a, b) of the DensePose head weights (full names, prefix roi_heads.)."""
    last = name.rsplit(".", 1)[-1]
    if ".densepose_predictor." in name:
        # ConvTranspose2d(4, stride 2, padding 1): weight [in, out, 4, 4], each output sees 2x2
        # taps of every input channel.
        if last == "weight":
            unit = math.sqrt(3.0 / (shape[0] * 4))
            if ".ann_index_lowres." in name:
                return float(np.float32(h["coarse"] * unit)), 0.0
            if ".index_uv_lowres." in name:
                return float(np.float32(h["fine"] * unit)), 0.0
            return float(np.float32(h["uv"] * unit)), 0.0  # u_lowres, v_lowres
        if ".ann_index_lowres." in name:
            return h["coarse_bias"]
        if ".index_uv_lowres." in name:
            return 0.1, 0.0
        return h["uv_bias"]
    if last == "weight":
        fan_in = int(np.prod(shape[1:]))
        if name.endswith("decoder.predictor.weight"):  # 1x1, no ReLU after it
            return float(np.float32(math.sqrt(3.0 / fan_in))), 0.0
        return float(np.float32(math.sqrt(6.0 / fan_in))), 0.0
    if last == "bias":
        return 0.1, 0.0
    raise ValueError(f"no range for {name} {shape}")


def b64(a: np.ndarray, dtype) -> str:
    """Base64 of the array's row-major little-endian bytes."""
    data = np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<"))
    return base64.b64encode(data.tobytes()).decode()


def summary(t: torch.Tensor, rng: np.random.Generator) -> dict:
    a = t.detach().cpu().numpy().astype(np.float32)
    flat = a.reshape(-1)
    idx = np.unique(np.concatenate([[0, flat.size - 1], rng.integers(0, flat.size, RAW_SAMPLES)]))
    c = a.shape[0]
    per_channel = a.reshape(c, -1).astype(np.float64).mean(axis=1)
    return {
        "shape": list(a.shape),
        "sum": float(flat.astype(np.float64).sum()),
        "abs_sum": float(np.abs(flat.astype(np.float64)).sum()),
        "min": float(flat.min()),
        "max": float(flat.max()),
        "channel_means": [float(x) for x in per_channel],
        "indices": [int(i) for i in idx],
        "values": [float(flat[i]) for i in idx],
    }


def build_trunk(min_size: int, max_size: int):
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)
    model = FasterRCNN(
        backbone,
        num_classes=2,
        min_size=min_size,
        max_size=max_size,
        box_detections_per_img=DETECTIONS_PER_IMG,
    )
    model.eval()
    return model


def build_head(config: str):
    cfg = get_cfg()
    add_densepose_config(cfg)
    cfg.merge_from_file(os.path.join(CONFIGS, config + ".yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_DENSEPOSE_HEAD.CONV_HEAD_DIM = CONV_HEAD_DIM
    cfg.MODEL.ROI_DENSEPOSE_HEAD.DECODER_CONV_DIMS = DECODER_CONV_DIMS
    cfg.freeze()
    input_shape = {k: ShapeSpec(channels=256, stride=s) for k, s in STRIDES.items()}
    heads = DensePoseROIHeads(cfg, input_shape)
    heads.eval()
    return cfg, heads


def densepose_keys(heads) -> list:
    return [
        k
        for k in heads.state_dict()
        if k.startswith(("decoder.", "densepose_head.", "densepose_predictor."))
    ]


def head_info(cfg) -> dict:
    h = cfg.MODEL.ROI_DENSEPOSE_HEAD
    return {
        "decoder": bool(h.DECODER_ON),
        "decoder_conv_dims": int(h.DECODER_CONV_DIMS),
        "decoder_num_classes": int(h.DECODER_NUM_CLASSES),
        "decoder_common_stride": int(h.DECODER_COMMON_STRIDE),
        "conv_head_dim": int(h.CONV_HEAD_DIM),
        "conv_head_kernel": int(h.CONV_HEAD_KERNEL),
        "num_stacked_convs": int(h.NUM_STACKED_CONVS),
        "pooler_resolution": int(h.POOLER_RESOLUTION),
        "sampling_ratio": int(h.POOLER_SAMPLING_RATIO),
        "pooler_type": h.POOLER_TYPE,
        "aligned": h.POOLER_TYPE == "ROIAlignV2",
        "coarse_channels": int(h.NUM_COARSE_SEGM_CHANNELS),
        "num_patches": int(h.NUM_PATCHES),
        "deconv_kernel": int(h.DECONV_KERNEL),
        "up_scale": int(h.UP_SCALE),
        # HEATMAP_SIZE is used by the training losses only; the predictor's output is
        # S = 2 (ConvTranspose2d stride) x UP_SCALE x POOLER_RESOLUTION, which it equals here.
        "heatmap_size": int(h.HEATMAP_SIZE),
        "in_features": list(cfg.MODEL.ROI_HEADS.IN_FEATURES),
    }


def run_case(trunk_state, photo, config, min_size, max_size, with_json, case_index):
    trunk = build_trunk(min_size, max_size)
    missing, unexpected = trunk.load_state_dict(trunk_state, strict=True)
    assert not missing and not unexpected
    cfg, heads = build_head(config)
    state = heads.state_dict()
    unused = [k for k in state if k not in densepose_keys(heads)]
    assert all(k.startswith(("box_head.", "box_predictor.")) for k in unused), unused
    spec = []
    for k in densepose_keys(heads):
        name = "roi_heads." + k
        shape = list(state[k].shape)
        a, b = head_range(name, shape, HEADS[config])
        spec.append({"name": name, "shape": shape, "a": a, "b": b})
        state[k] = torch.from_numpy(generate(name, shape, a, b))
    missing, unexpected = heads.load_state_dict(state, strict=True)
    assert not missing and not unexpected

    img = np.asarray(Image.open(os.path.join(ROOT, "assets", photo)).convert("RGB"))
    x = torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255.0
    original_size = tuple(img.shape[:2])
    with torch.no_grad():
        images, _ = trunk.transform([x])
        assert 4 * cfg.MODEL.ROI_DENSEPOSE_HEAD.POOLER_RESOLUTION == cfg.MODEL.ROI_DENSEPOSE_HEAD.HEATMAP_SIZE
        features = trunk.backbone(images.tensors)
        proposals, _ = trunk.rpn(images, features)
        detections, _ = trunk.roi_heads(features, proposals, images.image_sizes)
        resized = {k: v.clone() for k, v in detections[0].items()}
        final = trunk.transform.postprocess(detections, images.image_sizes, [original_size])[0]
        # The scores just below the cut (for the summary: no near-tie at the 6th detection).
        trunk.roi_heads.detections_per_img = DETECTIONS_PER_IMG + 4
        more, _ = trunk.roi_heads(features, proposals, images.image_sizes)
        trunk.roi_heads.detections_per_img = DETECTIONS_PER_IMG
        below_cut = floats(more[0]["scores"][DETECTIONS_PER_IMG:])

        d2_features = {LEVELS[k]: v for k, v in features.items()}
        image_size = tuple(images.image_sizes[0])
        inst = Instances(image_size)
        inst.pred_boxes = Boxes(resized["boxes"].clone())
        inst.scores = resized["scores"].clone()
        inst.pred_classes = resized["labels"].clone() - 1
        inst = heads.forward_with_given_boxes(d2_features, [inst])[0]
        pred = inst.pred_densepose
        pooler = heads.densepose_pooler
        if len(pooler.level_poolers) > 1:
            # The level each box is pooled from (Detectron2's rule, see ROIPooler.forward).
            levels = assign_boxes_to_levels(
                [inst.pred_boxes],
                pooler.min_level,
                pooler.max_level,
                pooler.canonical_box_size,
                pooler.canonical_level,
            )
            pooler_levels = [int(v) + pooler.min_level for v in levels]
        else:
            pooler_levels = None  # one level: the decoder's output, stride 4

        results = []
        for k in range(len(inst)):
            results.append(
                densepose_chart_predictor_output_to_result(pred[k], Boxes(final["boxes"][k : k + 1]))
            )

        json_dicts = None
        if with_json:
            orig = Instances(original_size)
            orig.pred_boxes = Boxes(final["boxes"].clone())
            orig.scores = inst.scores
            orig.pred_classes = inst.pred_classes
            orig.pred_densepose = pred
            json_dicts = []
            for k, d in enumerate(prediction_to_dict(orig, 1, None, None, False)):
                q = d["densepose"]
                assert isinstance(q, DensePoseChartResultQuantized)
                # the same quantization of the result stored in "results"
                same = quantize_densepose_chart_result(results[k]).labels_uv_uint8
                assert torch.equal(same, q.labels_uv_uint8)
                c = compress_quantized_densepose_chart_result(q)
                d["densepose"] = {"labels_uv_str": c.labels_uv_str, "shape_chw": list(c.shape_chw)}
                d["labels_uv_uint8"] = b64(q.labels_uv_uint8.numpy(), np.uint8)
                json_dicts.append(d)

    rng = np.random.default_rng(100 + case_index)
    raw = []
    for k in range(min(RAW_INSTANCES, len(inst))):
        raw.append(
            {
                f: summary(getattr(pred, f)[k], rng)
                for f in ("coarse_segm", "fine_segm", "u", "v")
            }
        )

    res_json = []
    stats = []
    for k, r in enumerate(results):
        xywh = final["boxes"][k].clone()
        xywh[2:] -= xywh[:2]
        box_int = [int(v) for v in xywh.long().tolist()]
        labels = r.labels.numpy()
        uv = r.uv.numpy()
        res_json.append(
            {
                "box_xywh_int": box_int,
                "shape": list(labels.shape),
                "labels": b64(labels.astype(np.uint8), np.uint8),
                "uv": b64(uv, np.float32),
            }
        )
        # statistics for the summary line: near-ties of the two argmaxes after the resampling
        # to the box (where an implementation's rounding could flip a label)
        h, w = labels.shape
        with torch.no_grad():
            fs = torch.nn.functional.interpolate(
                pred.fine_segm[k : k + 1], (h, w), mode="bilinear", align_corners=False
            )[0]
            cs = torch.nn.functional.interpolate(
                pred.coarse_segm[k : k + 1], (h, w), mode="bilinear", align_corners=False
            )[0]
        top2 = torch.topk(fs, 2, dim=0).values
        margin = (top2[0] - top2[1]).numpy()
        ctop2 = torch.topk(cs, 2, dim=0).values
        cmargin = (ctop2[0] - ctop2[1]).numpy()
        fg = labels > 0
        stats.append(
            {
                "fg": float(fg.mean()),
                "parts": sorted(set(int(v) for v in np.unique(labels)) - {0}),
                "u": (float(uv[0][fg].min()), float(uv[0][fg].max())) if fg.any() else None,
                "v": (float(uv[1][fg].min()), float(uv[1][fg].max())) if fg.any() else None,
                "clamped": float(((uv[:, fg] < 0) | (uv[:, fg] > 1)).mean()) if fg.any() else 0.0,
                "margin_p10": float(np.percentile(margin, 10)),
                "near_ties": int(((margin < 1e-3) | (cmargin < 1e-3)).sum()),
            }
        )

    case = {
        "photo": photo,
        "config": config,
        "head": head_info(cfg),
        "head_weights": spec,
        "params": {
            "min_size": min_size,
            "max_size": max_size,
            "detections_per_img": DETECTIONS_PER_IMG,
            "bn_eps": BN_EPS,
        },
        "original_size": list(original_size),
        "image_size": list(image_size),
        "detections": {
            "boxes": [floats(b) for b in resized["boxes"]],
            "labels": [int(v) for v in resized["labels"]],
            "scores": floats(resized["scores"]),
        },
        "final_boxes": [floats(b) for b in final["boxes"]],
        "pooler_levels": pooler_levels,
        "raw": raw,
        "results": res_json,
        "json": json_dicts,
    }
    return case, stats, images.tensors.shape, below_cut


def main():
    t0 = time.time()
    torch.set_num_threads(2)
    os.makedirs(OUT, exist_ok=True)
    probe = build_trunk(800, 1333)
    trunk_spec, trunk_state = [], {}
    for name, t in probe.state_dict().items():
        shape = list(t.shape)
        a, b = trunk_range(name, shape)
        trunk_spec.append({"name": name, "shape": shape, "a": a, "b": b})
        trunk_state[name] = torch.from_numpy(generate(name, shape, a, b))

    cases = []
    for i, (photo, config, min_size, max_size, with_json) in enumerate(
        [
            ("astronaut.png", "densepose_rcnn_R_50_FPN_s1x", 512, 853, True),
            ("coffee.png", "densepose_rcnn_R_50_FPN_s1x_legacy", 480, 800, False),
        ]
    ):
        case, stats, tshape, below_cut = run_case(
            trunk_state, photo, config, min_size, max_size, with_json, i
        )
        cases.append(case)
        det = case["detections"]
        cut = f"{below_cut[0]:.4f}" if below_cut else "none"
        print(
            f"{photo} ({config}): input {list(tshape)}, {len(det['scores'])} detections,"
            f" scores {det['scores'][0]:.4f}..{det['scores'][-1]:.4f}"
            f" (next below the cut: {cut}),"
            f" pooler levels {case['pooler_levels'] or 'decoder (stride 4)'}"
        )
        for w in case["head_weights"]:
            print(f"    {w['name']} {w['shape']} a={w['a']:.6g} b={w['b']:.6g}")
        parts = set()
        for k, (r, st) in enumerate(zip(case["results"], stats)):
            parts |= set(st["parts"])
            print(
                f"  {k}: box xywh {r['box_xywh_int']}, foreground {st['fg']:.3f},"
                f" {len(st['parts'])} parts, U {st['u'][0]:.3f}..{st['u'][1]:.3f},"
                f" V {st['v'][0]:.3f}..{st['v'][1]:.3f} ({st['clamped']:.3f} outside [0, 1]),"
                f" fine margin p10 {st['margin_p10']:.3f}, near-ties {st['near_ties']}"
                if st["u"]
                else f"  {k}: box xywh {r['box_xywh_int']}, no foreground"
            )
        print(f"  parts hit in the case: {len(parts)} of 24")

    doc = {
        "generator": "tests/reference/make_densepose_fixtures.py",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "detectron2": DETECTRON2_COMMIT,
        "trunk": "FasterRCNN(resnet_fpn_backbone('resnet18', weights=None, trainable_layers=5), "
        f"num_classes=2, box_detections_per_img={DETECTIONS_PER_IMG})",
        "trunk_weights": trunk_spec,
        "cases": cases,
    }
    path = os.path.join(OUT, "densepose_r18_fpn.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB) in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
