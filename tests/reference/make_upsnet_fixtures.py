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
     (35.0, 10.0, 85.0, 42.0), 53, 6.1, (0, 0, 0, 0), ("ellipse", 0.3, 0.3, 0.45, 0.45, 5.0)),
    ("A3: same class as A1, small overlap (< 30%): kept",
     (55.0, 16.0, 95.0, 46.0), 53, 5.6, (0, 0, 0, 0), ("ellipse", 0.45, 0.45, 0.5, 0.5, 5.0)),
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
     (131.3, 41.7, 144.9, 54.2), 10, 6.5, (0, 0, 0, 0), ("ellipse", 0.5, 0.5, 0.55, 0.55, 4.0)),
    ("BL: roi beyond the bottom-left corner, clipped",
     (-5.0, 100.0, 25.0, 130.0), 63, 6.4, (0.2, -0.1, 0.0, 0.1), ("const", 3.0)),
    ("H: majority of its region is its own class (kept)",
     (125.0, 80.0, 159.0, 105.0), 10, 7.3, (0, 0, 0, 0), ("ellipse", 0.5, 0.5, 0.5, 0.5, 6.0)),
    ("Z: kept by MaskRemoval but wins no pixel: absent from the panoptic map, later ids shift",
     (38.0, 13.0, 54.0, 25.0), 24, 7.0, (0, 0, 0, 0), ("const", 1.0)),
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


def check_deform_conv():
    """torchvision's deform_conv2d against a direct evaluation of UPSNet's CUDA im2col
    (deform_conv_kernel.cu: deformable_im2col_gpu_kernel + deformable_im2col_bilinear) on a
    tiny case whose offsets reach outside the map on every side."""
    c_in, c_out, h, w = 2, 3, 5, 6
    x = generate("check.x", [1, c_in, h, w], 1.0, 0.0)
    off = generate("check.offset", [1, 18, h, w], 2.5, 0.0)
    wt = generate("check.weight", [c_out, c_in, 3, 3], 1.0, 0.0)
    bias = generate("check.bias", [c_out], 1.0, 0.0)
    got = torchvision.ops.deform_conv2d(
        torch.from_numpy(x), torch.from_numpy(off), torch.from_numpy(wt), torch.from_numpy(bias),
        stride=(1, 1), padding=(1, 1), dilation=(1, 1),
    ).numpy()

    def sample(img, y, x_):
        if not (y > -1 and x_ > -1 and y < h and x_ < w):
            return 0.0
        y0, x0 = math.floor(y), math.floor(x_)
        ly, lx = y - y0, x_ - x0
        v = 0.0
        for yy, xx, wgt in [(y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx),
                            (y0 + 1, x0, ly * (1 - lx)), (y0 + 1, x0 + 1, ly * lx)]:
            if 0 <= yy <= h - 1 and 0 <= xx <= w - 1:
                v += wgt * float(img[yy, xx])
        return v

    want = np.zeros((c_out, h, w))
    for oy in range(h):
        for ox in range(w):
            for i in range(3):
                for j in range(3):
                    dy = float(off[0, 2 * (i * 3 + j), oy, ox])
                    dx = float(off[0, 2 * (i * 3 + j) + 1, oy, ox])
                    for c in range(c_in):
                        v = sample(x[0, c], oy - 1 + i + dy, ox - 1 + j + dx)
                        want[:, oy, ox] += wt[:, c, i, j] * v
    want += bias[:, None, None]
    err = float(np.abs(got[0] - want).max())
    assert err < 1e-5, err
    return err


def mask_removal_trace(boxes, scores, cls_idx, logits, keep_inds):
    """Per MaskROI detection in MaskRemoval's visiting order: the int box, the resized mask's
    pixel count and its overlap fraction with the kept masks of its class so far (as
    MaskRemoval computes them); asserts the same keep decisions as UPSNet's keep_inds."""
    order = np.argsort(scores)[::-1]
    union = {}
    trace = []
    for i in order:
        x0, y0, x1, y1 = boxes[i].astype(np.int32)
        w, h = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
        m = cv2.resize(logits[i], (int(w), int(h))) > 0
        c = int(cls_idx[i])
        u = union.setdefault(c, np.zeros((H, W), bool))
        area = int(m.sum())
        inter = int((u[y0:y0 + h, x0:x0 + w] & m).sum())
        frac = inter / area if area else None
        kept = area > 0 and frac <= 0.3
        if kept:
            u[y0:y0 + h, x0:x0 + w] |= m
        trace.append({"detection": int(i), "int_box": [int(x0), int(y0), int(x1), int(y1)],
                      "mask_pixels": area, "same_class_overlap": frac, "kept": bool(kept)})
    assert [t["detection"] for t in trace if t["kept"]] == [int(k) for k in keep_inds], (trace, keep_inds)
    return trace


def segments(pan_2ch):
    """_converter_2ch_single_core's segment list (pan = 1000 * ch0 + ch1, category ch0,
    255 = VOID skipped; bbox [x, y, max x - x, max y - y])."""
    pan = 1000 * pan_2ch[:, :, 0].astype(np.uint32) + pan_2ch[:, :, 1]
    out = []
    for el in np.unique(pan):
        if el // 1000 == 255:
            continue
        ys, xs = np.nonzero(pan == el)
        out.append({"pan_id": int(el), "category": int(el // 1000), "instance": int(el % 1000),
                    "area": int(ys.size),
                    "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min()), int(ys.max() - ys.min())]})
    return pan.astype(np.int32), out


def margin_count(logits: torch.Tensor, tol: float) -> int:
    top2 = torch.topk(logits[0], 2, dim=0).values
    return int(((top2[0] - top2[1]) < tol).sum())


def main():
    t0 = time.time()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    deform_err = check_deform_conv()

    feed = {}
    model = build_model(feed)
    head = model.fcn_head
    assert isinstance(head, FCNHead)
    assert isinstance(model.mask_removal, MaskRemoval) and isinstance(model.seg_term, SegTerm)
    assert model.enable_void and model.mask_removal.fraction_threshold == 0.3
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

    # ---- Part A: FCNHead.forward(p2, p3, p4, p5)
    subnet_out, offsets = [], []
    hooks = [head.fcn_subnet.register_forward_hook(lambda m, i, o: subnet_out.append(o.clone()))]
    for m in head.fcn_subnet.modules():
        if isinstance(m, DeformConvWithOffset):
            hooks.append(m.conv_offset.register_forward_hook(lambda m, i, o: offsets.append(o.clone())))
    with torch.no_grad():
        fcn = head(*feats)
    for hk in hooks:
        hk.remove()
    fcn_score, fcn_output = fcn["fcn_score"], fcn["fcn_output"]
    assert list(fcn_score.shape) == [1, 133, H // 4, W // 4]
    assert list(fcn_output.shape) == [1, 133, H, W]
    labels = fcn_output.argmax(dim=1)[0].numpy()

    # ---- Part B: resnet_upsnet.forward at test time (label None)
    rois, cls_score, bbox_pred, masks = design_inputs()
    im_info = np.array([[H, W, 1.0]], np.float32)  # as CocoDataset.__getitem__ (phase test)
    # The box each proposal's designed class gets from MaskROI (bbox_transform + clip_boxes,
    # the functions it calls): the mask head feed matches its rois against these.
    expected = clip_boxes(bbox_transform(rois[:, 1:], bbox_pred, config.network.bbox_reg_weights),
                          im_info[0, :2])
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
    feed["rcnn"] = lambda r: {"cls_score": torch.from_numpy(cls_score),
                              "bbox_pred": torch.from_numpy(bbox_pred)}
    feed["mask_branch"] = mask_branch

    captured, panoptic_roi, removal = {}, {}, {}

    def profile(frame, event, arg):
        if event == "return" and frame.f_code is ru.resnet_upsnet.forward.__code__:
            captured.update(frame.f_locals)

    hooks = [
        model.mask_roi_panoptic.register_forward_hook(lambda m, i, o: panoptic_roi.update(inputs=i, out=o)),
        model.mask_removal.register_forward_hook(lambda m, i, o: removal.update(inputs=i)),
    ]
    sys.setprofile(profile)
    with torch.no_grad():
        results = model({"data": torch.zeros(1, 3, H, W), "im_info": im_info})
    sys.setprofile(None)
    for hk in hooks:
        hk.remove()
    assert torch.equal(captured["fcn_output"]["fcn_output"], fcn_output)

    det_scores, det_rois, det_cls = panoptic_roi["out"]
    det_rois_np = det_rois.numpy()
    gathered = captured["mask_score"].numpy()  # [K, 1, 28, 28]: mask_score.gather(1, cls_idx)
    k_all = det_rois_np.shape[0]
    for k in range(k_all):  # every detection of the panoptic MaskROI got its designed mask
        i = [n for n, p in enumerate(PROPOSALS)
             if p[2] == int(det_cls[k]) and np.array_equal(det_rois_np[k, 1:], expected[n, 4 * p[2]:4 * p[2] + 4])]
        assert len(i) == 1 and np.array_equal(gathered[k, 0], masks[i[0]]), k
    source = []
    for k in range(k_all):
        c = int(det_cls[k])
        source.append([n for n, p in enumerate(PROPOSALS) if p[2] == c
                       and np.array_equal(det_rois_np[k, 1:], expected[n, 4 * c:4 * c + 4])][0])
    keep_inds = captured["keep_inds"].numpy()
    trace = mask_removal_trace(det_rois_np[:, 1:], det_scores.numpy(), det_cls.numpy(),
                               gathered[:, 0], keep_inds)

    mask_logits = captured["mask_logits"]  # [1, N, H, W]
    seg_logits, seg_inst_logits = captured["seg_logits"], captured["seg_inst_logits"]
    void_logits, panoptic_logits = captured["void_logits"], captured["panoptic_logits"]
    panoptic_output = results["panoptic_outputs"]  # [1, H, W] int64, void -> 255
    kept_rois = captured["mask_rois"].numpy()  # [N, 5], input pixels
    kept_cls = results["panoptic_cls_inds"].numpy()
    kept_prob = results["panoptic_cls_probs"].numpy()
    n = kept_rois.shape[0]
    assert list(mask_logits.shape) == [1, n, H, W] and list(seg_logits.shape) == [1, 53, H, W]
    assert list(panoptic_logits.shape) == [1, 53 + n + 1, H, W] and int(captured["void_id"]) == 53 + n

    # upsnet_end2end_test.py: `.astype('uint8')[:im_h, :im_w]`, cv2.resize by 1 / im_scale
    # (INTER_NEAREST; the identity here, scale 1), then get_unified_pan_result.
    def to_eval(a):
        a = a.squeeze(0).astype("uint8")[: int(im_info[0, 0]), : int(im_info[0, 1])]
        return cv2.resize(a, None, None, fx=1 / im_info[0, 2], fy=1 / im_info[0, 2],
                          interpolation=cv2.INTER_NEAREST)

    sseg = to_eval(results["fcn_outputs"].numpy())
    pano = to_eval(panoptic_output.numpy())
    assert np.array_equal(sseg, labels.astype(np.uint8))
    assert np.array_equal(pano, panoptic_output[0].numpy())
    pan_2ch = BaseDataset.get_unified_pan_result(
        None, [sseg], [pano], [kept_cls],
        stuff_area_limit=config.test.panoptic_stuff_area_limit)[0]
    pan_id, segs = segments(pan_2ch)

    # per kept instance: what the conversion saw and did
    instances = []
    for k in range(n):
        region = pano == 53 + k
        info = {"channel": 53 + k, "class": int(kept_cls[k]), "seg_class": int(kept_cls[k]) + 52,
                "panoptic_pixels": int(region.sum())}
        if region.any():
            cls, cnt = np.unique(sseg[region], return_counts=True)
            info["majority_seg_class"] = int(cls[np.argmax(cnt)])
            info["majority_fraction"] = float(cnt.max() / cnt.sum())
            out_seg = np.unique(pan_2ch[:, :, 0][region])
            out_ins = np.unique(pan_2ch[:, :, 1][region])
            assert out_seg.size == 1 and out_ins.size == 1
            info["pan_seg"], info["pan_ins"] = int(out_seg[0]), int(out_ins[0])
        instances.append(info)

    # the slices SegTerm and MaskRemoval write (input pixels)
    boxes4 = (captured["mask_rois"] * 4.0).numpy()[:, 1:] * model.seg_term.box_scale
    crops = []
    ml = mask_logits[0].numpy()
    for k in range(n):
        x0, y0, x1, y1 = kept_rois[k, 1:].astype(np.int32)
        xa, xb, ya, yb = max(x0, 0), min(x1 + 1, W), max(y0, 0), min(y1 + 1, H)
        crop = ml[k, ya:yb, xa:xb]
        outside = ml[k].copy()
        outside[ya:yb, xa:xb] = 0
        assert not outside.any()
        st_box = boxes4[k]
        crops.append({
            "mask_slice": [int(ya), int(yb), int(xa), int(xb)],
            "segterm_slice": [int(st_box[1]), int(st_box[3].round() + 1), int(st_box[0]), int(st_box[2].round() + 1)],
            "resized_logits": b64(crop, np.float32),
            "near_zero_below_1e-4": int((np.abs(crop) < 1e-4).sum()),
        })

    rng = np.random.default_rng(11)
    levels = list(LEVELS)
    fcn_doc = {
        "weights": spec,
        "inputs": inputs_spec,
        "offsets": {f"{levels[i // 3]}.conv.{i % 3}": summary(o[0], rng) for i, o in enumerate(offsets)},
        "subnet": {levels[i]: summary(o[0], rng) for i, o in enumerate(subnet_out)},
        "fcn_score": summary(fcn_score[0], rng),
        "fcn_output": summary(fcn_output[0], rng),
        "fcn_output_rows": {"rows": ROWS, "shape": [133, len(ROWS), W],
                            "values": b64(fcn_output[0][:, ROWS, :].numpy(), np.float32)},
        "labels": b64(labels, np.uint8),
        "label_margin_below_1e-5": margin_count(fcn_output, 1e-5),
    }
    pan_doc = {
        "inputs": {
            "im_info": [float(v) for v in im_info[0]],
            "rois": [[float(v) for v in r] for r in rois],
            "design": [{"role": p[0], "roi": [float(v) for v in p[1]], "class": p[2],
                        "boost": p[3], "deltas": [float(v) for v in p[4]], "mask": list(p[5])}
                       for p in PROPOSALS],
            "cls_score": {"shape": list(cls_score.shape), "values": b64(cls_score, np.float32),
                          "noise": {"name": "input.cls_score", "a": CLS_NOISE, "b": 0.0}},
            "bbox_pred": {"shape": list(bbox_pred.shape), "values": b64(bbox_pred, np.float32),
                          "noise": {"name": "input.bbox_pred", "a": DELTA_NOISE, "b": 0.0}},
            "mask_score_noise": {"name": "input.mask_score_noise", "shape": [NUM_CLASSES, MASK, MASK],
                                 "a": MASK_SCORE_NOISE, "b": 0.0},
            "mask_design_noise": {"name": "input.mask_noise", "shape": [len(PROPOSALS), MASK, MASK],
                                  "a": MASK_NOISE, "b": 0.0},
        },
        "cls_prob": b64(panoptic_roi["inputs"][2].numpy(), np.float32),  # F.softmax(cls_score, 1)
        "mask_roi": {
            "boxes": [[float(v) for v in r] for r in det_rois_np],
            "scores": [float(v) for v in det_scores.numpy()],
            "cls_idx": [int(v) for v in det_cls.numpy()],
            "proposal": source,
        },
        "mask_score": {"shape": list(gathered.shape), "values": b64(gathered, np.float32)},
        "mask_removal": {"keep_inds": [int(v) for v in keep_inds], "trace": trace,
                         "mask_logits": summary(mask_logits[0], rng), "instances": crops},
        "kept": {"rois": [[float(v) for v in r] for r in kept_rois],
                 "cls_idx": [int(v) for v in kept_cls], "cls_prob": [float(v) for v in kept_prob]},
        "seg_logits": summary(seg_logits[0], rng),
        "seg_inst_logits": summary(seg_inst_logits[0], rng),
        "void_logits": summary(void_logits[0], rng),
        "panoptic_logits": summary(panoptic_logits[0], rng),
        "panoptic_output": b64(panoptic_output[0].numpy(), np.uint8),
        "panoptic_margin_below_1e-5": margin_count(panoptic_logits, 1e-5),
    }
    unified = {
        "stuff_area_limit": config.test.panoptic_stuff_area_limit,
        "pan_seg": b64(pan_2ch[:, :, 0], np.uint8),
        "pan_ins": b64(pan_2ch[:, :, 1], np.uint8),
        "pan_id": b64(pan_id, np.int32),
        "segments": segs,
        "instances": instances,
    }
    print(json.dumps(instances, indent=None))
    print(json.dumps(trace))
    print(segs)
    print("deform err", deform_err, "margins", fcn_doc["label_margin_below_1e-5"], pan_doc["panoptic_margin_below_1e-5"])
    print(f"{time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
