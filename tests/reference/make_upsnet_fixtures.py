#!/usr/bin/env python3
"""Writes plugins/rcnn/tests/fixtures/upsnet_heads.json: UPSNet's own semantic (FCN) head and
its panoptic head at inference, and the panoptic conversion of its evaluation, from
uber-research/UPSNet at commit aa8434e5, run on CPU with generated weights and inputs.

    pip install torch torchvision numpy opencv-python pyyaml easydict scipy networkx pycocotools
    mkdir -p /tmp/upsnet
    git --git-dir=<UPSNet>/.git archive aa8434e5 | tar -x -C /tmp/upsnet
    OMP_NUM_THREADS=1 UPSNET_REPO=/tmp/upsnet python3 tests/reference/make_upsnet_fixtures.py

UPSNET_REPO (default /tmp/upsnet) is put first on sys.path; nothing of UPSNet is built (its
CUDA/Cython extensions are stubbed, see "Patches"). UPSNet is under the Uber Non-Commercial
License: this script imports and runs its modules, it copies none of its code. Run by
developers, not by CI (CI reads the committed fixture). Under a second on one thread; the
output is byte-identical from run to run (single thread, no unseeded randomness). torch warns
that nn.CrossEntropyLoss(reduce=False) (resnet_upsnet.__init__, training only) is deprecated.

What runs
---------
The config is UPSNet's own: upsnet/config/config.py defaults updated by `update_config` with
upsnet/experiments/upsnet_resnet50_coco_4gpu.yaml. The values that matter here (all stored
under "config"):
    dataset.num_classes 81, dataset.num_seg_classes 133      (yaml)
    network.fcn_head "FCNHead", train.fcn_with_roi_loss true (yaml; the RoIAlign this adds has
        no parameters and runs only in training)
    network.fcn_num_layers 3, network.fcn_with_norm "none", network.mask_size 28,
    network.bbox_reg_weights (10, 10, 5, 5)                   (config.py defaults)
    train.panoptic_box_keep_fraction 0.7 (yaml: < 1, so resnet_upsnet.enable_void is true)
    test.score_thresh 0.05, test.nms_thresh 0.5, test.max_det 100,
    test.panoptic_score_thresh 0.6                            (config.py defaults)
    test.panoptic_stuff_area_limit 4096                       (yaml and config.py)
The model is UPSNet's `resnet_50_upsnet()` (upsnet/models/resnet_upsnet.py): its __init__ and
its forward run unchanged, with the network parts that only produce this fixture's inputs
(ResNetBackbone, FPN, RPN, PyramidProposal, RCNN, MaskBranch) replaced, in resnet_upsnet's
module namespace, by feeds of the designed inputs. Its state dict is then exactly the FCN
head's, under UPSNet's checkpoint names (fcn_head.fcn_subnet.conv.{0,1,2}.0.conv_offset.weight
/ .bias, fcn_head.fcn_subnet.conv.{0,1,2}.0.conv.weight / .bias, fcn_head.score.weight / .bias).

Part A, FCNHead(256, 133, num_layers=3, with_norm='none', upsample_rate=4) on a padded input
of H x W = 128 x 160 (im_info [128, 160, 1.0]): inputs p2..p5 = generate("input.p2",
[1, 256, 32, 40], 1.0, 0.5) .. generate("input.p5", [1, 256, 4, 5], 1.0, 0.5), i.e. uniform
in [-0.5, 1.5) (the same `generate` as the weights; the Rust side reproduces them from
fcn.inputs). Weights: `generate(name, shape, a, b)` with (a, b) in fcn.weights (see
head_range): DeformConv weights He-uniform sqrt(6 / fan_in), biases +-0.1; conv_offset weights
3.5 / 5.5 / 6.5 x sqrt(3 / fan_in) for subnet layers 0 / 1 / 2 and biases +-0.5 (UPSNet
initialises conv_offset to zero, which would leave the deformable sampling untested: here the
offsets are 1-3 px on average and up to ~12.6 px, so samples fall between pixels and outside
the map); score weight 2 x sqrt(3 / 512), bias +-0.5. Recorded: every offset map and every
subnet output per level, fcn_score [1, 133, 32, 40], fcn_output [1, 133, 128, 160], three
full rows of fcn_output and its full argmax.

Part B, resnet_upsnet.forward with label None (the test path, resnet_upsnet.py ~lines
196-246), fed with 15 designed proposals (PROPOSALS, the "design" list: role, roi, class,
score boost, deltas, mask shape): cls_score = generate("input.cls_score", [15, 81], 1, 0)
plus a boost on each proposal's class; bbox_pred = generate("input.bbox_pred", [15, 324],
0.5, 0) with each proposal's class's 4 deltas overwritten by the designed ones; the mask head
returns, for each roi, generate("input.mask_score_noise", [81, 28, 28], 2, 0) in every
channel except the class channel of a designed detection, which holds its designed 28 x 28
logits (an ellipse amp * (1 - ((u - cx) / rx)^2 - ((v - cy) / ry)^2) or a constant, plus
generate("input.mask_noise", [15, 28, 28], 0.75, 0)[proposal], u, v = (i + 0.5) / 28). All
inputs are stored in full (cls_score, cls_prob, bbox_pred as base64 float32, the gathered
[K, 1, 28, 28] mask logits as base64 float32). The design exercises: two same-class
detections whose masks overlap > 30% (MaskRemoval drops the lower one: 0.947) and one with a
small overlap (0.158, kept); overlapping detections of different classes (kept: the test is
per class); an empty mask (dropped); proposals beyond the image (clipped by MaskROI), boxes
touching every border; .5 box corners (SegTerm's round half to even); a proposal under
panoptic_score_thresh and one suppressed by class-agnostic NMS; a 12 x 10 and a 14 x 14 box
(mask downscaled); and in the conversion: instances kept because the majority is their own
class, kept because the majority is another thing class, kept because the stuff majority is
< 50%, relabelled to stuff (once to a stuff class that stays, twice to stuff classes that the
area limit then voids), and a kept instance that wins no pixel (so later instance ids are not
channel - 52).

Patches (all in this script; none changes what UPSNet computes)
-------
* DeformConv (upsnet/operators/modules/deform_conv.py) runs a CUDA-only extension
  (upsnet/operators/functions/deform_conv.py: DeformConvFunction, "not implemented" on CPU):
  DeformConv.forward is replaced by torchvision.ops.deform_conv2d(input, offset, weight, bias,
  stride, padding, dilation) (DCN v1, no mask). Checked against UPSNet's kernel
  (upsnet/operators/src/deform_conv_kernel.cu: deformable_im2col_gpu_kernel and
  deformable_im2col_bilinear) and torchvision's (csrc/ops/cpu/deform_conv2d_kernel.cpp:
  deformable_im2col_kernel, bilinear_interpolate): the same offset layout (per deformable
  group, channel 2 * (i * kw + j) is the row offset dy and 2 * (i * kw + j) + 1 the column
  offset dx of tap (i, j), i the kernel row), the same sample point (y * stride - pad +
  i * dilation + dy, x * stride - pad + j * dilation + dx), the same validity test (zero
  unless -1 < h < H and -1 < w < W) and the same bilinear rule (h_low = floor(h), corners
  outside the map contribute 0, no clamping), then weight x columns + bias. check_deform_conv
  also compares torchvision's op with a direct evaluation of that kernel on a tiny case with
  offsets pushing samples outside every side (max error stored as
  deform_conv_check_max_error, ~3e-7).
* `.cuda()` (DeformConv.__init__, MaskRemoval.forward) and `.pin_memory()` (MaskROI,
  MaskRemoval) are the identity (CPU only; they only move data).
* MaskROI.forward calls gpu_nms_wrapper (CUDA): replaced by UPSNet's py_nms_wrapper
  (upsnet/nms/nms.py: py_nms), the same greedy NMS as nms_kernel.cu: boxes visited in
  `scores.argsort()[::-1]` order, areas (x2 - x1 + 1) * (y2 - y1 + 1), suppressed when
  IoU > thresh, float32. It also does `context = bottom_rois.get_device()` (-1 on CPU) and
  `.to(context)`: the proposals are passed as a Tensor subclass whose get_device() is "cpu".
* Stub modules for imports that are never called here: upsnet.operators._ext.deform_conv.
  deform_conv_cuda and _ext.roi_align.roi_align_cuda (CUDA), upsnet.bbox.bbox,
  upsnet.nms.cpu_nms, upsnet.nms.gpu_nms, upsnet.rpn.anchors (Cython), matplotlib (imported by
  mask_matching.py and json_dataset.py, not installed). Python >= 3.10:
  collections.Sequence = collections.abc.Sequence (base_dataset.py imports it). PyYAML 6:
  yaml.load gets a default Loader (SafeLoader) so that update_config reads the yaml.
* The intermediates of forward (keep_inds, mask_logits, seg_logits, seg_inst_logits,
  void_logits, panoptic_logits, ...) are its locals, read with sys.setprofile at its return;
  MaskROI's inputs and outputs with a forward hook.

UPSNet semantics a re-implementation must match
-----------------------------------------------
FCN head (upsnet/models/fcn.py):
* FCNSubNet.__init__(256, 128, num_layers=3, with_norm='none'): conv.0 = DeformConvWithOffset(
  256 -> 256), conv.1 = DeformConvWithOffset(256 -> 128) (the layer i == num_layers - 2
  changes the width), conv.2 = DeformConvWithOffset(128 -> 128); each 3x3, stride 1, padding 1,
  dilation 1, with bias, followed by ReLU; no norm. ONE subnet (shared weights) runs on each of
  p2, p3, p4, p5 (FCNHead.forward).
* DeformConvWithOffset.forward (operators/modules/deform_conv.py): offset = conv_offset(x)
  (nn.Conv2d(in, 18, 3, stride 1, padding 1, bias) on the layer's own input), then
  DeformConv(x, offset) as above (groups 1, deformable_groups 1).
* FCNHead.forward: the subnet outputs of p3, p4, p5 are upsampled by F.interpolate(x, None, 2 /
  4 / 8, mode='bilinear', align_corners=False) (source = (dst + 0.5) / s - 0.5, clamped at 0,
  edge-replicated at the end), concatenated [p2, p3, p4, p5] (512 channels), score =
  Conv2d(512, 133, 1) -> fcn_score [1, 133, H/4, W/4]; fcn_output = F.interpolate(fcn_score,
  None, 4, bilinear, align_corners=False) -> [1, 133, H, W]. Channels 0..52 are stuff,
  53..132 the thing classes 1..80 (seg class = class + 52).
Panoptic head (resnet_upsnet.py: resnet_upsnet.forward, test branch):
* cls_prob = F.softmax(cls_score, 1). mask_roi_panoptic = MaskROI(clip_boxes=True,
  top_n=max_det, num_classes=81, nms_thresh=0.5, class_agnostic=True, score_thresh=0.6)
  (operators/modules/mask_roi.py: MaskROI.forward): boxes = bbox_transform(rois[:, 1:],
  bbox_pred, (10, 10, 5, 5)) (bbox/bbox_transform.py: bbox_transform, float32: w = x2 - x1 + 1,
  cx = x1 + 0.5 w, dx / 10, dy / 10, dw / 5, dh / 5, dw and dh capped at log(1000 / 16),
  x1' = cx' - 0.5 w', x2' = cx' + 0.5 w' - 1), clip_boxes to [0, W - 1] x [0, H - 1]; every
  (proposal, class 1..80) pair with prob > 0.6 (strict) is a candidate with that class's box,
  ordered proposal-major; ONE NMS over all of them (IoU > 0.5 suppressed, +1 areas); if more
  than max_det 100 remain, those with score >= the 100th score are kept. Output in NMS keep
  order (descending score): scores, rois [K, 5] (column 0 zero, input pixels), cls_idx.
  (The first MaskROI, score 0.05 and per-class NMS, gives the Mask R-CNN results only.)
* mask_score = mask_branch(...) [K, 81, 28, 28] logits, .gather(1, cls_idx) -> [K, 1, 28, 28]:
  the channel of the detection's class (channel 0 is background).
* MaskRemoval(0.3).forward(rois[:, 1:], cls_prob, mask_score, cls_idx, (H, W))
  (operators/modules/mask_removal.py), boxes in INPUT pixels at full resolution:
  visit in np.argsort(cls_prob)[::-1] order (descending; quicksort, so ties are unordered:
  the fixture's scores are distinct); ref_box = box.astype(int32) (truncation) for all four
  coordinates; w = x2i - x1i + 1, h = y2i - y1i + 1 (at least 1); logit =
  cv2.resize(mask28, (w, h)) with cv2's default INTER_LINEAR (float32, half-pixel centres:
  src = (dst + 0.5) * 28 / w - 0.5, index and weight clamped to [0, 27]; an exact 2x downscale
  gives the 2x2 block mean; cv2's result differs from a plain float32 two-pass bilinear by
  ~1e-6 relative); mask = logit > 0 (strict); crop to the image [max(x1i, 0), min(x2i + 1,
  W)) x [max(y1i, 0), min(y2i + 1, H)); DROPPED if the cropped mask is empty, or if
  |mask AND union of the masks already kept FOR THE SAME CLASS| / |mask| > 0.3 (strict;
  other classes never count); otherwise kept: its mask joins its class's union and
  mask_logits[0, n] = the resized logits inside the crop, 0 elsewhere (n = number kept so
  far). keep_inds = the kept MaskROI indices in visiting order, so mask_logits, rois[keep],
  cls_idx[keep] are in descending score order. (If nothing is kept, or MaskROI returned its
  dummy, keep_inds [0] and one zero channel: not exercised.)
* SegTerm(133).forward(cls_idx, fcn_output, rois * 4.0) (operators/modules/unary_logits.py;
  box_scale 1/4, so the boxes are back in input pixels, exactly): seg_logits =
  fcn_output[:, 0:53] (the stuff channels); seg_inst_logits [1, N, H, W] zero, and for each
  instance i (cls != 0): y0 = int(y1), y1' = int(np.round(y2) + 1), x0 = int(x1),
  x1' = int(np.round(x2) + 1) (numpy float32 round: half to EVEN, e.g. 100.5 -> 100,
  61.5 -> 62), seg_inst_logits[0, i, y0:y1', x0:x1'] = fcn_output[0, cls + 52, y0:y1', x0:x1'].
  So SegTerm's box is one row / column larger than MaskRemoval's when the fractional part of
  x2 / y2 rounds up (both slices are stored per instance: mask_slice, segterm_slice).
* void_logits = max(fcn_output[:, 53:133], dim 1) - max(seg_inst_logits, dim 1) ([1, 1, H, W];
  the second max runs over all N channels, so it includes the zeros of the instances that do
  not cover the pixel). inst_logits = seg_inst_logits + mask_logits.
  panoptic_logits = cat([seg_logits, inst_logits, void_logits], 1) ([1, 53 + N + 1, H, W]);
  panoptic_output = torch.max(panoptic_logits, 1)[1] (first maximum on ties), and the void
  channel 53 + N becomes 255: values 0..52 stuff class, 53 + k kept instance k, 255 void.
Evaluation (upsnet_end2end_test.py main loop, then dataset/base_dataset.py:
BaseDataset.get_unified_pan_result(segs, pans, cls_inds, stuff_area_limit=4096)):
* sseg = argmax over the 133 channels of fcn_output ('fcn_outputs'); sseg and pano are cast to
  uint8, cropped to im_info's [:h, :w] and resized by 1 / im_scale with INTER_NEAREST (the
  identity here: scale 1); cls_ind = the kept cls_idx.
* id_last_stuff = 133 - 81 = 52. pan_seg = pano; pan_ins = pano with ids <= 52 set to 0. For
  idx, id in enumerate(sorted unique ids of pano that are > 52) (255 comes last): id 255 ->
  pan_seg 255, pan_ins 0. Otherwise region = pano == id, own = cls_ind[id - 53] + 52, and the
  majority class of sseg over the region (np.unique counts, argmax: the smallest class on a
  tie): majority == own -> (own, idx + 1); else if majority count / region size >= 0.5 and
  majority <= 52 (stuff) -> (majority, 0), the instance is relabelled to that stuff class;
  else -> (own, idx + 1). Instance ids are therefore idx + 1 over the instance ids PRESENT in
  the map (a kept instance with no pixel takes no id; a relabelled one still uses up its idx).
* Then every class <= 52 of pan_seg (after the relabelling) whose area is < 4096 pixels
  becomes 255 (stuff only; things are never area-limited).
* Result pan_2ch [H, W, 3] uint8 = (pan_seg, pan_ins, 0). 255 in pan_seg is VOID: its pixels
  form no segment. _converter_2ch_single_core makes pan = 1000 * pan_seg + pan_ins and one
  segment per value whose pan_seg != 255, category pan_seg (UPSNet's contiguous 0..132 id),
  bbox [x min, y min, x max - x min, y max - y min] (no +1), area = pixel count.

JSON
----
generator, torch, torchvision, numpy, cv2, upsnet {repo, commit, config}, config (above),
padded_size [128, 160], deform_conv_check_max_error,
fcn: weights [{name, shape, a, b}], inputs [{name, shape, a, b}] (p2..p5),
    offsets {"p2.conv.0" .. "p5.conv.2": summary of the [18, h, w] conv_offset output},
    subnet {p2..p5: summary of the [128, h, w] subnet output}, fcn_score (summary of
    [133, 32, 40]), fcn_output (summary of [133, 128, 160]), fcn_output_rows {rows, shape
    [133, 3, 160], values: base64 float32 of fcn_output[0][:, rows, :]}, labels (base64
    uint8 [128, 160] argmax of fcn_output), label_margin_below_1e-5 (pixels whose top-2
    fcn_output logits differ by < 1e-5),
panoptic: inputs {im_info, rois [15][5], design [{role, roi, class, boost, deltas, mask,
    outcome (what became of it, asserted: see EXPECTED)}],
    cls_score {shape, values (base64 float32, noise + boosts), noise {name, a, b}},
    bbox_pred {shape, values, noise}, mask_score_noise {name, shape, a, b},
    mask_design_noise {name, shape, a, b}},
    cls_prob (base64 float32 [15, 81], the softmax MaskROI got),
    mask_roi {boxes [K][5], scores [K], cls_idx [K], proposal [K] (index into design)},
    mask_score {shape [K, 1, 28, 28], values: base64 float32, the gathered logits},
    mask_removal {keep_inds, trace (per detection in visiting order: detection, int_box,
        mask_pixels, same_class_overlap, kept; recomputed here and asserted against
        keep_inds), mask_logits (summary of [N, 128, 160]), instances [N] {mask_slice
        [y0, y1, x0, x1] (MaskRemoval's crop), segterm_slice [y0, y1, x0, x1] (SegTerm's),
        resized_logits (base64 float32 of mask_logits inside mask_slice, row-major),
        near_zero_below_1e-3, min_abs (of those logits)}},
    kept {rois [N][5], cls_idx [N], cls_prob [N]},
    seg_logits (summary of [53, H, W]), seg_inst_logits ([N, H, W]), void_logits
    ([1, H, W]), panoptic_logits ([53 + N + 1, H, W]), panoptic_output (base64 uint8
    [128, 160]), panoptic_margin_below_1e-5 (pixels whose top-2 panoptic logits differ by
    < 1e-5),
unified: stuff_area_limit, pan_seg, pan_ins (base64 uint8 [128, 160]), pan_id (base64 int32,
    1000 * pan_seg + pan_ins), segments [{pan_id, category, instance, area, bbox}],
    instances [N] (per panoptic channel 53 + k: class, seg_class, panoptic_pixels, and if
    > 0 the majority_seg_class, majority_fraction and the resulting pan_seg, pan_ins).
Summaries are make_maskrcnn_fixtures.summary of the tensor without its batch axis: shape, sum,
abs_sum, min, max, channel_means (over all axes but the first), values at 512 random flat
indices (rng np.random.default_rng(11), drawn in the order above) plus the first and last.
All base64 is little-endian row-major.
"""

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
# base_dataset.py: `from collections import Sequence` (gone in Python 3.10)
collections.Sequence = collections.abc.Sequence
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
     (18.0, 2.0, 69.0, 33.0), 53, 7.6, (0.5, 0.4, 0.25, -0.2),
     ("ellipse", 0.5, 0.5, 0.45, 0.45, 6.0)),
    ("A2: same class as A1, lower score, mask overlaps A1's > 30%: MaskRemoval drops it",
     (35.0, 10.0, 85.0, 42.0), 53, 6.1, (0, 0, 0, 0), ("ellipse", 0.3, 0.3, 0.45, 0.45, 5.0)),
    ("A3: same class as A1, small overlap (< 30%): kept",
     (55.0, 16.0, 95.0, 46.0), 53, 5.6, (0, 0, 0, 0), ("ellipse", 0.45, 0.45, 0.5, 0.5, 5.0)),
    ("X: another class over A1 (no overlap test across classes); majority is another thing",
     (10.0, 5.0, 50.0, 40.0), 63, 6.6, (0, 0, 0, 0), ("ellipse", 0.4, 0.55, 0.4, 0.4, 7.0)),
    ("D: roi beyond the top-right corner, clipped to the image",
     (110.0, -4.0, 165.0, 30.0), 42, 7.1, (-0.3, 0.2, 0.1, 0.1),
     ("ellipse", 0.5, 0.4, 0.5, 0.55, 6.0)),
    ("S: in the stuff region (stuff majority >= 50%: relabelled); .5 corners (half to even)",
     (60.0, 95.0, 100.5, 120.5), 20, 6.9, (0, 0, 0, 0), ("ellipse", 0.5, 0.5, 0.48, 0.48, 6.0)),
    ("S2: stuff region of a small stuff class (relabelled, then under the area limit); .5 corners",
     (50.7, 38.2, 81.5, 61.5), 7, 5.9, (0, 0, 0, 0), ("ellipse", 0.5, 0.5, 0.45, 0.45, 5.5)),
    ("E: empty mask (all logits < 0): MaskRemoval drops it",
     (120.0, 60.0, 150.0, 90.0), 10, 6.3, (0, 0, 0, 0), ("const", -3.0)),
    ("small: 12 x 10 px box (mask downscaled); relabelled to a small stuff class",
     (30.2, 60.4, 41.9, 69.8), 63, 5.3, (0, 0, 0, 0), ("ellipse", 0.5, 0.5, 0.5, 0.5, 5.0)),
    ("14: 14 x 14 px integer box (cv2 exact 2x downscale); stuff majority < 50%: kept",
     (131.3, 41.7, 144.9, 54.2), 10, 6.5, (0, 0, 0, 0), ("ellipse", 0.5, 0.5, 0.55, 0.55, 4.0)),
    ("BL: roi beyond the bottom-left corner, clipped; relabelled to stuff",
     (-5.0, 100.0, 25.0, 130.0), 63, 6.4, (0.2, -0.1, 0.0, 0.1), ("const", 3.0)),
    ("H: majority of its region is its own class (kept); right border",
     (125.0, 80.0, 159.0, 105.0), 10, 7.3, (0, 0, 0, 0), ("ellipse", 0.5, 0.5, 0.5, 0.5, 6.0)),
    ("Z: kept by MaskRemoval but wins no pixel: absent from the panoptic map, later ids shift",
     (38.0, 13.0, 54.0, 25.0), 24, 7.0, (0, 0, 0, 0), ("const", 1.0)),
    ("N: overlaps H with IoU > 0.5, lower score, another class: class-agnostic NMS drops it",
     (127.0, 82.0, 157.0, 104.0), 42, 6.0, (0, 0, 0, 0), ("ellipse", 0.5, 0.5, 0.5, 0.5, 6.0)),
    ("L: top class probability < panoptic_score_thresh 0.6: dropped by MaskROI",
     (80.0, 60.0, 120.0, 90.0), 30, 4.4, (0, 0, 0, 0), ("ellipse", 0.5, 0.5, 0.5, 0.5, 6.0)),
]
# What becomes of each (asserted).
EXPECTED = [
    "instance 1: majority is its class",
    "MaskRemoval: overlap",
    "instance 10: majority is its class",
    "instance 6: majority is another thing class",
    "instance 5: majority is its class",
    "relabelled to stuff 3",
    "relabelled to stuff 36, under the area limit",
    "MaskRemoval: empty",
    "relabelled to stuff 31, under the area limit",
    "instance 9: stuff majority < 50%",
    "relabelled to stuff 3",
    "instance 2: majority is its class",
    "no panoptic pixel",
    "MaskROI: suppressed by NMS",
    "MaskROI: score <= thresh",
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
    kept = [t["detection"] for t in trace if t["kept"]]
    assert kept == [int(k) for k in keep_inds], (trace, keep_inds)
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
                    "bbox": [int(xs.min()), int(ys.min()),
                             int(xs.max() - xs.min()), int(ys.max() - ys.min())]})
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
            hooks.append(m.conv_offset.register_forward_hook(
                lambda m, i, o: offsets.append(o.clone())))
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
    mask_noise = generate("input.mask_score_noise", [NUM_CLASSES, MASK, MASK],
                          MASK_SCORE_NOISE, 0.0)

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
        model.mask_roi_panoptic.register_forward_hook(
            lambda m, i, o: panoptic_roi.update(inputs=i, out=o)),
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
    source = []  # the designed proposal of each detection; each got its designed mask
    for k in range(k_all):
        c = int(det_cls[k])
        i = [n for n, p in enumerate(PROPOSALS)
             if p[2] == c and np.array_equal(det_rois_np[k, 1:], expected[n, 4 * c:4 * c + 4])]
        assert len(i) == 1 and np.array_equal(gathered[k, 0], masks[i[0]]), k
        source.append(i[0])
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
    assert list(panoptic_logits.shape) == [1, 53 + n + 1, H, W]
    assert int(captured["void_id"]) == 53 + n

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

    # what became of each designed proposal (asserted against EXPECTED)
    probs = panoptic_roi["inputs"][2].numpy()
    outcomes = []
    for i, p in enumerate(PROPOSALS):
        if i not in source:
            ok = float(probs[i, 1:].max()) > config.test.panoptic_score_thresh
            outcomes.append("MaskROI: suppressed by NMS" if ok else "MaskROI: score <= thresh")
            continue
        k = source.index(i)
        t = [t for t in trace if t["detection"] == k][0]
        if not t["kept"]:
            why = "empty" if t["mask_pixels"] == 0 else "overlap"
            outcomes.append(f"MaskRemoval: {why}")
            continue
        info = instances[[int(v) for v in keep_inds].index(k)]
        if info["panoptic_pixels"] == 0:
            outcomes.append("no panoptic pixel")
        elif info["pan_seg"] == 255:
            stuff = info["majority_seg_class"]
            outcomes.append(f"relabelled to stuff {stuff}, under the area limit")
        elif info["pan_ins"] == 0:
            outcomes.append(f"relabelled to stuff {info['pan_seg']}")
        elif info["majority_seg_class"] == info["seg_class"]:
            outcomes.append(f"instance {info['pan_ins']}: majority is its class")
        elif info["majority_seg_class"] <= 52:
            outcomes.append(f"instance {info['pan_ins']}: stuff majority < 50%")
        else:
            outcomes.append(f"instance {info['pan_ins']}: majority is another thing class")
    assert outcomes == EXPECTED, outcomes

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
        # SegTerm's slice as documented (int() / np.round half to even), checked against
        # where its seg_inst_logits channel copies fcn_output
        bx = boxes4[k]
        sy0, sy1 = int(bx[1]), int(bx[3].round() + 1)
        sx0, sx1 = int(bx[0]), int(bx[2].round() + 1)
        si = seg_inst_logits[0, k].numpy()
        assert np.array_equal(si[sy0:sy1, sx0:sx1],
                              fcn_output[0, int(kept_cls[k]) + 52, sy0:sy1, sx0:sx1].numpy())
        si = si.copy()
        si[sy0:sy1, sx0:sx1] = 0
        assert not si.any()
        crops.append({
            "mask_slice": [int(ya), int(yb), int(xa), int(xb)],
            "segterm_slice": [sy0, sy1, sx0, sx1],
            "resized_logits": b64(crop, np.float32),
            "near_zero_below_1e-3": int((np.abs(crop) < 1e-3).sum()),
            "min_abs": float(np.abs(crop).min()),
        })

    rng = np.random.default_rng(11)
    levels = list(LEVELS)
    fcn_doc = {
        "weights": spec,
        "inputs": inputs_spec,
        "offsets": {f"{levels[i // 3]}.conv.{i % 3}": summary(o[0], rng)
                    for i, o in enumerate(offsets)},
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
                        "boost": p[3], "deltas": [float(v) for v in p[4]], "mask": list(p[5]),
                        "outcome": o}
                       for p, o in zip(PROPOSALS, outcomes)],
            "cls_score": {"shape": list(cls_score.shape), "values": b64(cls_score, np.float32),
                          "noise": {"name": "input.cls_score", "a": CLS_NOISE, "b": 0.0}},
            "bbox_pred": {"shape": list(bbox_pred.shape), "values": b64(bbox_pred, np.float32),
                          "noise": {"name": "input.bbox_pred", "a": DELTA_NOISE, "b": 0.0}},
            "mask_score_noise": {"name": "input.mask_score_noise",
                                 "shape": [NUM_CLASSES, MASK, MASK],
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
    doc = {
        "generator": "tests/reference/make_upsnet_fixtures.py",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "cv2": cv2.__version__,
        "upsnet": {"repo": "uber-research/UPSNet", "commit": UPSNET_COMMIT, "config": YAML},
        "config": {
            "dataset.num_classes": config.dataset.num_classes,
            "dataset.num_seg_classes": config.dataset.num_seg_classes,
            "network.fcn_head": config.network.fcn_head,
            "network.fcn_num_layers": config.network.fcn_num_layers,
            "network.fcn_with_norm": config.network.fcn_with_norm,
            "network.mask_size": config.network.mask_size,
            "network.bbox_reg_weights": list(config.network.bbox_reg_weights),
            "train.panoptic_box_keep_fraction": config.train.panoptic_box_keep_fraction,
            "train.fcn_with_roi_loss": config.train.fcn_with_roi_loss,
            "test.score_thresh": config.test.score_thresh,
            "test.nms_thresh": config.test.nms_thresh,
            "test.panoptic_score_thresh": config.test.panoptic_score_thresh,
            "test.max_det": config.test.max_det,
            "test.panoptic_stuff_area_limit": config.test.panoptic_stuff_area_limit,
        },
        "padded_size": [H, W],
        "deform_conv_check_max_error": deform_err,
        "fcn": fcn_doc,
        "panoptic": pan_doc,
        "unified": unified,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(doc, f)

    hist = np.bincount(labels.reshape(-1), minlength=133)
    print("semantic classes (class: pixels): " + ", ".join(
        f"{int(c)}: {int(hist[c])}" for c in np.argsort(-hist, kind="stable") if hist[c] > 0))
    for i, o in enumerate(offsets):
        print(f"offsets {levels[i // 3]} conv.{i % 3}: mean |o| {float(o.abs().mean()):.2f} px, "
              f"max {float(o.abs().max()):.2f} px")
    print(f"fcn_output {float(fcn_output.min()):.3f}..{float(fcn_output.max()):.3f}; "
          f"label margin < 1e-5: {fcn_doc['label_margin_below_1e-5']}; "
          f"deform_conv check max error {deform_err:.2e}")
    print(f"MaskROI panoptic: {k_all} of {len(PROPOSALS)} proposals; "
          f"MaskRemoval keeps {[int(k) for k in keep_inds]}")
    for t in trace:
        print("  ", t)
    for c in crops:
        print("   slices mask", c["mask_slice"], "segterm", c["segterm_slice"],
              "|resized logit| < 1e-3:", c["near_zero_below_1e-3"], "min", f"{c['min_abs']:.2e}")
    print(f"panoptic channels 53+{n}+void, margin < 1e-5: {pan_doc['panoptic_margin_below_1e-5']}")
    for info in instances:
        print("  ", info)
    for sg in segs:
        print("  ", sg)
    print(f"void pixels {int((pan_2ch[:, :, 0] == 255).sum())}")
    print(f"wrote {OUT} ({os.path.getsize(OUT) / 1e6:.3f} MB) in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
