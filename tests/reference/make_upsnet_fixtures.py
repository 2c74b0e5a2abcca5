#!/usr/bin/env python3
"""DOCSTRING PLACEHOLDER"""

import base64
import collections
import collections.abc
import json
import math
import os
import sys
import time
import types

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
import yaml  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "plugins", "rcnn", "tests", "fixtures", "upsnet_heads.json")
UPSNET_REPO = os.environ.get("UPSNET_REPO", "/tmp/upsnet")
UPSNET_COMMIT = "aa8434e5"
YAML = "upsnet/experiments/upsnet_resnet50_coco_4gpu.yaml"
sys.path.insert(0, UPSNET_REPO)
sys.path.insert(1, HERE)
from make_maskrcnn_fixtures import generate, summary  # noqa: E402

# The padded network input (im_info [H, W, scale 1.0]); the FPN levels are H/4 .. H/32.
H, W = 128, 160
LEVELS = {"p2": 4, "p3": 8, "p4": 16, "p5": 32}
INPUT_A, INPUT_B = 1.0, 0.5  # input.pN uniform in [-0.5, 1.5)
ROWS = [5, 64, 127]  # full rows of fcn_output stored
MASK = 28

# --------------------------------------------------------------------------------------
# Patches and stubs (see the docstring). Nothing here changes what UPSNet computes.


def _stub(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def _compiled_only(*args, **kwargs):
    raise RuntimeError("UPSNet compiled extension: stubbed out, must not run")


for _name, _attrs in [
    ("upsnet.operators._ext.deform_conv.deform_conv_cuda", {}),
    ("upsnet.operators._ext.roi_align.roi_align_cuda", {}),
    ("upsnet.bbox.bbox", {"bbox_overlaps": _compiled_only}),
    ("upsnet.nms.cpu_nms", {"cpu_nms": _compiled_only, "cpu_soft_nms": _compiled_only}),
    ("upsnet.nms.gpu_nms", {"gpu_nms": _compiled_only}),
    ("upsnet.rpn.anchors", {"anchors_cython": _compiled_only}),
    ("matplotlib", {"use": lambda *a, **k: None}),
    ("matplotlib.pyplot", {}),
]:
    _stub(_name, **_attrs)
collections.Sequence = collections.abc.Sequence  # base_dataset.py: `from collections import Sequence`
torch.Tensor.cuda = lambda self, *a, **k: self  # CPU only: DeformConv.__init__, MaskRemoval
torch.Tensor.pin_memory = lambda self, *a, **k: self  # host-to-GPU staging only
_yaml_load = yaml.load
yaml.load = lambda stream, Loader=yaml.SafeLoader: _yaml_load(stream, Loader=Loader)

from upsnet.config.config import config, update_config  # noqa: E402

update_config(os.path.join(UPSNET_REPO, YAML))

import upsnet.models.resnet_upsnet as ru  # noqa: E402
import upsnet.operators.modules.mask_roi as mask_roi_mod  # noqa: E402
from upsnet.bbox.bbox_transform import bbox_transform, clip_boxes  # noqa: E402
from upsnet.dataset.base_dataset import BaseDataset  # noqa: E402
from upsnet.models.fcn import FCNHead  # noqa: E402
from upsnet.nms.nms import py_nms_wrapper  # noqa: E402
from upsnet.operators.modules.deform_conv import DeformConv, DeformConvWithOffset  # noqa: E402
from upsnet.operators.modules.mask_removal import MaskRemoval  # noqa: E402
from upsnet.operators.modules.unary_logits import SegTerm  # noqa: E402


def _deform_conv_forward(self, data, offset):
    """DeformConv.forward on CPU: DCN v1 (no mask), torchvision's kernel."""
    return torchvision.ops.deform_conv2d(
        data, offset, self.weight, self.bias,
        stride=self.stride, padding=self.padding, dilation=self.dilation,
    )


DeformConv.forward = _deform_conv_forward
# MaskROI.forward calls gpu_nms_wrapper(thresh, device_id); py_nms is the same greedy NMS.
mask_roi_mod.gpu_nms_wrapper = lambda thresh, device_id=0: py_nms_wrapper(thresh)


class _CpuRois(torch.Tensor):
    """MaskROI.forward does `context = bottom_rois.get_device()` (-1 on CPU) and
    `.to(context)`; the proposals are passed as this subclass, whose device is "cpu"."""

    def get_device(self):
        return "cpu"


# --------------------------------------------------------------------------------------


def b64(a: np.ndarray, dtype) -> str:
    """Base64 of the array's row-major little-endian bytes."""
    data = np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<"))
    return base64.b64encode(data.tobytes()).decode()


def f32(x) -> float:
    return float(np.float32(x))


def head_range(name: str, shape) -> tuple:
    """(a, b) of an FCN head weight (full name, prefix fcn_head.)."""
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 0
    if name.endswith(".conv_offset.weight"):
        layer = name.split(".")[3]
        return f32(OFFSET_GAIN[layer] * math.sqrt(3.0 / fan_in)), 0.0
    if name.endswith(".conv_offset.bias"):
        return 0.5, 0.0
    if name.endswith(".conv.weight"):
        return f32(math.sqrt(6.0 / fan_in)), 0.0
    if name.endswith(".conv.bias"):
        return 0.1, 0.0
    if name == "fcn_head.score.weight":
        return f32(2.0 * math.sqrt(3.0 / fan_in)), 0.0
    if name == "fcn_head.score.bias":
        return 0.5, 0.0
    raise ValueError(f"no range for {name} {shape}")


# conv_offset gain over LeCun-uniform per subnet layer: mean |offset| 2-3 px, max ~10-13 px.
OFFSET_GAIN = {"0": 3.5, "1": 5.5, "2": 6.5}


# The proposals fed to the panoptic branch (rois of PyramidProposal, input pixels), each with
# its designed class (1..80), the boost added to that class's generated cls_score noise, the
# designed raw bbox_pred deltas of that class (before bbox_reg_weights), and the designed
# 28x28 mask logit of that class: ("ellipse", cx, cy, rx, ry, amp) in unit box coordinates
# (amp * (1 - ((u - cx) / rx)^2 - ((v - cy) / ry)^2) + noise), or ("const", value) + noise.
PROPOSALS = [
    # role, roi (x1, y1, x2, y2), class, boost, deltas, mask
    ("A1: majority of its region is its own class (kept)",
     (18.0, 2.0, 69.0, 33.0), 53, 7.6, (0.5, 0.4, 0.25, -0.2), ("ellipse", 0.5, 0.5, 0.45, 0.45, 6.0)),
    ("A2: same class as A1, lower score, mask overlaps A1's > 30%: MaskRemoval drops it",
     (30.4, 8.6, 80.2, 40.7), 53, 6.1, (0, 0, 0, 0), ("ellipse", 0.45, 0.45, 0.5, 0.5, 5.0)),
    ("A3: same class as A1, small overlap (< 30%): kept",
     (60.0, 20.0, 100.0, 50.0), 53, 5.6, (0, 0, 0, 0), ("ellipse", 0.55, 0.55, 0.45, 0.45, 5.0)),
    ("X: another class over A1 (overlap not tested across classes); region majority is another thing",
     (10.0, 5.0, 50.0, 40.0), 63, 6.6, (0, 0, 0, 0), ("ellipse", 0.4, 0.55, 0.4, 0.4, 7.0)),
    ("D: roi beyond the top-right corner, clipped to the image",
     (110.0, -4.0, 165.0, 30.0), 42, 7.1, (-0.3, 0.2, 0.1, 0.1), ("ellipse", 0.5, 0.4, 0.5, 0.55, 6.0)),
    ("S: inside the stuff region (majority stuff >= 50%: relabelled); .5 corners (round half to even)",
     (60.0, 95.0, 100.5, 120.5), 20, 6.9, (0, 0, 0, 0), ("ellipse", 0.5, 0.5, 0.48, 0.48, 6.0)),
    ("S2: stuff region of a small stuff class (relabelled, then under the area limit); .5 corners",
     (50.7, 38.2, 81.5, 61.5), 7, 5.9, (0, 0, 0, 0), ("ellipse", 0.5, 0.5, 0.45, 0.45, 5.5)),
    ("E: empty mask (all logits < 0): MaskRemoval drops it",
     (120.0, 60.0, 150.0, 90.0), 10, 6.3, (0, 0, 0, 0), ("const", -3.0)),
    ("small: 12 x 10 px box (mask downscaled)",
     (30.2, 60.4, 41.9, 69.8), 63, 5.3, (0, 0, 0, 0), ("ellipse", 0.5, 0.5, 0.5, 0.5, 5.0)),
    ("14: 14 x 14 px integer box (cv2 exact 2x downscale)",
     (130.3, 45.7, 143.9, 58.2), 10, 5.1, (0, 0, 0, 0), ("ellipse", 0.5, 0.5, 0.55, 0.55, 4.0)),
    ("BL: roi beyond the bottom-left corner, clipped",
     (-5.0, 100.0, 25.0, 130.0), 63, 6.4, (0.2, -0.1, 0.0, 0.1), ("const", 3.0)),
    ("H: majority of its region is its own class (kept)",
     (125.0, 80.0, 159.0, 105.0), 10, 7.3, (0, 0, 0, 0), ("ellipse", 0.5, 0.5, 0.5, 0.5, 6.0)),
    ("N: overlaps H with IoU > 0.5, lower score, another class: class-agnostic NMS drops it",
     (127.0, 82.0, 157.0, 104.0), 42, 6.0, (0, 0, 0, 0), ("ellipse", 0.5, 0.5, 0.5, 0.5, 6.0)),
    ("L: top class probability < panoptic_score_thresh 0.6: dropped by MaskROI",
     (80.0, 60.0, 120.0, 90.0), 30, 4.4, (0, 0, 0, 0), ("ellipse", 0.5, 0.5, 0.5, 0.5, 6.0)),
]
NUM_CLASSES = 81
CLS_NOISE = 1.0  # cls_score noise: uniform in [-1, 1)
DELTA_NOISE = 0.5  # bbox_pred noise
MASK_NOISE = 0.75  # added to every designed mask logit
MASK_SCORE_NOISE = 2.0  # the mask head's other 80 channels


class _Feed(torch.nn.Module):
    """Stands in for a network part that produces Part B's designed inputs."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def design_inputs():
    """The proposals, cls_score, bbox_pred and designed mask logits of Part B."""
    r = len(PROPOSALS)
    rois = np.zeros((r, 5), np.float32)
    cls_score = generate("input.cls_score", [r, NUM_CLASSES], CLS_NOISE, 0.0)
    bbox_pred = generate("input.bbox_pred", [r, 4 * NUM_CLASSES], DELTA_NOISE, 0.0)
    noise = generate("input.mask_noise", [r, MASK, MASK], MASK_NOISE, 0.0)
    masks = np.zeros((r, MASK, MASK), np.float32)
    g = (np.arange(MASK, dtype=np.float32) + np.float32(0.5)) / np.float32(MASK)
    v, u = np.meshgrid(g, g, indexing="ij")
    for i, (_, roi, c, boost, deltas, mask) in enumerate(PROPOSALS):
        rois[i, 1:] = roi
        cls_score[i, c] += np.float32(boost)
        bbox_pred[i, 4 * c:4 * c + 4] = deltas
        if mask[0] == "ellipse":
            _, cx, cy, rx, ry, amp = (np.float32(x) if not isinstance(x, str) else x for x in mask)
            shape = amp * (np.float32(1) - ((u - cx) / rx) ** 2 - ((v - cy) / ry) ** 2)
        else:
            shape = np.full((MASK, MASK), mask[1], np.float32)
        masks[i] = (shape + noise[i]).astype(np.float32)
    return rois, cls_score, bbox_pred, masks


def build_model(feed):
    """UPSNet's own resnet_upsnet (its __init__ and forward), with the trunk, RPN, box head
    and mask head replaced by feeds of the designed inputs; the FCN head, MaskROI,
    MaskRemoval and SegTerm are UPSNet's."""
    ru.ResNetBackbone = lambda depth: _Feed(lambda data: (None,) * 4)
    ru.FPN = lambda **kw: _Feed(lambda *res: tuple(feed["fpn"]) + (None,))
    ru.RPN = lambda **kw: _Feed(lambda feat: (None, None, None))
    ru.PyramidProposal = lambda **kw: (lambda prob, pred, im_info: (feed["rois"], None))
    ru.RCNN = lambda *a, **kw: _Feed(lambda feats, rois: feed["rcnn"](rois))
    ru.MaskBranch = lambda *a, **kw: _Feed(lambda feats, rois: feed["mask_branch"](rois))
    model = ru.resnet_50_upsnet()
    model.eval()
    return model


def main():
    t0 = time.time()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    feed = {}
    model = build_model(feed)
    head = model.fcn_head
    assert isinstance(head, FCNHead)
    state = model.state_dict()
    assert all(k.startswith("fcn_head.") for k in state), list(state)
    spec = []
    for name, t in state.items():
        shape = list(t.shape)
        a, b = head_range(name, shape)
        spec.append({"name": name, "shape": shape, "a": a, "b": b})
        state[name] = torch.from_numpy(generate(name, shape, a, b))
    missing, unexpected = torch.nn.Module.load_state_dict(model, state, strict=True)
    assert not missing and not unexpected

    inputs_spec, feats = [], []
    for lvl, stride in LEVELS.items():
        name, shape = f"input.{lvl}", [1, 256, H // stride, W // stride]
        inputs_spec.append({"name": name, "shape": shape, "a": INPUT_A, "b": INPUT_B})
        feats.append(torch.from_numpy(generate(name, shape, INPUT_A, INPUT_B)))

    # Part A
    subnet_out, offsets = [], []
    hooks = [head.fcn_subnet.register_forward_hook(lambda m, i, o: subnet_out.append(o.clone()))]
    for m in head.fcn_subnet.modules():
        if isinstance(m, DeformConvWithOffset):
            hooks.append(m.conv_offset.register_forward_hook(lambda m, i, o: offsets.append(o.clone())))
    with torch.no_grad():
        fcn = head(*feats)
    for h in hooks:
        h.remove()
    fcn_score, fcn_output = fcn["fcn_score"], fcn["fcn_output"]
    assert list(fcn_score.shape) == [1, 133, H // 4, W // 4] and list(fcn_output.shape) == [1, 133, H, W]
    seg = fcn_output.argmax(dim=1)[0].numpy()
    hist = np.bincount(seg.reshape(-1), minlength=133)
    print([(int(c), int(hist[c])) for c in np.argsort(-hist) if hist[c] > 0])
    for i, o in enumerate(offsets):
        print(f"offsets level {i // 3} layer {i % 3}: mean |o| {float(o.abs().mean()):.2f} max {float(o.abs().max()):.2f}")

    # Part B
    rois, cls_score, bbox_pred, masks = design_inputs()
    im_info = np.array([[H, W, 1.0]], np.float32)
    expected = clip_boxes(bbox_transform(rois[:, 1:], bbox_pred, config.network.bbox_reg_weights), im_info[0, :2])
    mask_noise = generate("input.mask_score_noise", [NUM_CLASSES, MASK, MASK], MASK_SCORE_NOISE, 0.0)

    def mask_branch(mask_rois):
        out = np.repeat(mask_noise[None], mask_rois.shape[0], axis=0)
        boxes = mask_rois[:, 1:].numpy()
        for k in range(boxes.shape[0]):
            for i, p in enumerate(PROPOSALS):
                c = p[2]
                if np.array_equal(boxes[k], expected[i, 4 * c:4 * c + 4]):
                    out[k, c] = masks[i]
        return torch.from_numpy(out)

    feed["fpn"] = feats
    feed["rois"] = torch.from_numpy(rois).as_subclass(_CpuRois)
    feed["rcnn"] = lambda r: {"cls_score": torch.from_numpy(cls_score), "bbox_pred": torch.from_numpy(bbox_pred)}
    feed["mask_branch"] = mask_branch

    captured = {}

    def profile(frame, event, arg):
        if event == "return" and frame.f_code is ru.resnet_upsnet.forward.__code__:
            captured.update(frame.f_locals)

    mroi = {}
    model.mask_roi_panoptic.register_forward_hook(lambda m, i, o: mroi.update(out=o))
    sys.setprofile(profile)
    with torch.no_grad():
        results = model({"data": torch.zeros(1, 3, H, W), "im_info": im_info})
    sys.setprofile(None)
    print(sorted(captured))
    print(mroi["out"])
    print(captured["keep_inds"])
    pano = results["panoptic_outputs"][0].numpy()
    print(np.unique(pano, return_counts=True))
    sseg = results["fcn_outputs"][0].numpy().astype("uint8")
    pan_2ch = BaseDataset.get_unified_pan_result(None, [sseg], [pano.astype("uint8")], [results["panoptic_cls_inds"].numpy()], stuff_area_limit=config.test.panoptic_stuff_area_limit)[0]
    print(np.unique(pan_2ch[:, :, 0].astype(np.int32) * 1000 + pan_2ch[:, :, 1], return_counts=True))
    print(f"{time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
