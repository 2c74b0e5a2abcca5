#!/usr/bin/env python3
"""Writes the fixtures of plugins/tracking/tests/vpsnet_reference.rs: VPSNet's track head and
its instance association across the frames of a video, run by the official code
(mcahny/vps @ 138503edbc9e70de744dc0c9fa4b71c799a94d5d) on the CPU with seeded random weights.

    git clone <mcahny/vps> /tmp/vps     # or a bare mirror; only `git show COMMIT:path` is used
    python3 tests/reference/make_vpsnet_track_fixtures.py /tmp/vps

needs torch and numpy only (written with torch 2.15 run on the CPU and numpy 2.4; the
versions are stored in the fixture). Run by developers, not by CI (CI reads the committed
fixtures).

What runs, and what is official:
- `TrackHead` (mmdet/models/track_heads/track_head.py), `SingleRoIExtractor`
  (mmdet/models/roi_extractors/single_level.py), `bbox_overlaps` (mmdet/core/bbox/geometry.py),
  `bbox2roi` / `roi2bbox` (mmdet/core/bbox/transforms.py) and the method
  `PanopticFuseTrack.simple_test_bboxes` (mmdet/models/detectors/panoptic_fusetrack.py) are
  the official source, read from the repository with `git show` and executed unmodified.
- The repository needs mmcv / mmdet 1.x with CUDA extensions, which do not build here, so
  the modules those files import are stand-ins registered in `sys.modules` before they are
  executed: registries whose `register_module` returns the class, `force_fp32` / `auto_fp16`
  that return the function (the features are f32 already), `build_loss` returning an empty
  module (the loss is for training), and the `mmdet.core` names the files import but the
  test path does not call. `torch.cuda.current_device` is replaced by a function returning
  "cpu", because TrackHead allocates its dummy column with `device=torch.cuda.current_device()`.
- `mmdet.ops.RoIAlign` is the one piece that is not official code: its CUDA kernel
  (mmdet/ops/roi_align/src/roi_align_kernel.cu, `ROIAlignForward` and `bilinear_interpolate`)
  is replaced by `roi_align_port` below, a line-by-line float32 port: the RoI is
  `[x1 * s, (x2 + 1) * s]` (inclusive pixels: the "+1" end, no half-pixel offset), its size
  `fmaxf(end - start, 0)`, `sample_num` samples per bin side at
  `start + p * bin + (i + .5) * bin / sample_num`, a sample outside `[-1, H] x [-1, W]` reads 0
  (and still counts), coordinates `<= 0` clamp to 0, past the last row/column the last
  pixel is used, and the bin is the mean of its samples. Each float32 operation is done in
  the kernel's order without fused multiply-adds (nvcc may fuse some; that is an ulp).
- Everything before the detections (backbone, FPN, BFPTcea fusion, RPN, box head and
  `mask_roi_panoptic`) is replaced: the features are generated (below) and the detector
  stand-ins return the designed detections as `mask_roi_panoptic` does: `cls_prob` (the
  class probability of each detection, which the engine's instances carry as `scores`),
  `det_rois` `[0, x1, y1, x2, y2]` and `cls_idx` (label + 1). Everything after them is the
  official `simple_test_bboxes`: RoI features on the final boxes, `track_head(x, ref_x)`,
  `log_softmax`, `compute_comp_scores` with `match_coeff = [1.0, 2.0, 10.0]` and
  `bbox_dummy_iou = 0`, the argmax, the conflict resolution and the memory update. A new video
  is a frame whose `iid % 10000 == 1`, as in Cityscapes-VPS.

Model: `TrackHead(num_fcs=2, in_channels=256, roi_feat_size=7, fc_out_channels=32,
match_coeff=[1.0, 2.0, 10.0])` and `SingleRoIExtractor(RoIAlign(out_size=7, sample_num=2),
out_channels=256, featmap_strides=[4, 8, 16, 32])`, configs/cityscapes/fusetrack.py's except
`fc_out_channels`: the official 1024 makes `fcs.0` a 12544 x 1024 matrix (51 MB), so the
fixture uses the same architecture 32 wide (1.6 MB) through the same constructor argument.
Weights: `torch.manual_seed(SEED)`, nn.Linear's default initialisation, then the biases
redrawn uniform in [-0.1, 0.1] and `fcs.1.bias` shifted by `-fcs.1.weight @ mean(h)`, the
mean hidden vector of 64 random boxes on the first frame: a trained head's embeddings of
different objects have dot products of both signs, whereas random post-ReLU features all
correlate positively, which would never let the dummy column ("new object") win. Saved as
`vpsnet_track_head.pth`, `{"state_dict": {"track_head.fcs.0.weight", ...}}` (the official
checkpoint's names and nesting).

Features: P2..P5 of a 480 x 640 image (120x160 ... 15x20, 256 channels, the official width),
too large to store, so generated from names by the counter-based generator that
`kernels::weights::generated_tensor` reproduces bit for bit (see `generate`): a static
"world" (`vpsnet_track.world.p{l}`, uniform in [-1, 1), generated on a grid BLOCK = 4 times
coarser, `[C, ceil(H / 4), ceil(W / 4)]`, and repeated 4 x 4 (nearest)) plus per-frame noise
(`vpsnet_track.v{video}.f{frame}.p{l}`, `[C, H, W]`, uniform in [-NOISE, NOISE)), added in
float32, so that an object that moves a little keeps similar features.

Sequence (`scenario`): video 1 of 5 frames and video 2 of 2 frames; the boxes, labels and
scores are designed so that the association takes every path (checked by `check_paths`,
which fails the script when one is missing): the first frame (ids `arange`), matches that
follow moving objects, a new object (the dummy column wins), two detections choosing the
same object (the later, larger comprehensive score wins and undoes the earlier one, which
becomes a new object, appended after the first loop), a label mismatch that still matches
(its match score outweighs the label term), one that the label term turns into a new
object, an object that leaves and comes back (the memory
keeps it), the memory's box and feature replaced by the winner's, the memory's label NOT
replaced (the official code updates only the feature and the box), boxes on every FPN level,
a box smaller than one stride (mmdet's RoIAlign keeps its size below 1 where torchvision
would widen it) and boxes past the image border. Every argmax and every conflict is decided
by a margin of at least MIN_MARGIN, so that float32 rounding elsewhere cannot flip one.

Recorded per frame in vpsnet_track.json: video, frame id, the detections (boxes, labels,
scores), the level of each box, the RoI features (`[N, 256, 7, 7]`: per-RoI sums and the
first 16 values), the embeddings (`[N, 32]`), `match_score` (`[N, 1 + M]`, the dummy column
first) and `comp` (the comprehensive scores), the resulting object ids and the memory's size,
labels and boxes afterwards.

Not covered, because the official code never takes it: a frame without detections. Its
`mask_roi_panoptic` returns one dummy detection (box [0, 0, 0, 0], score 1, label -1) rather
than none, and with none `roi2bbox(det_rois)[0]` would raise before the
`det_bboxes.nelement() == 0` branch.
"""

import ast
import json
import os
import subprocess
import sys
import types

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.utils import _pair
# The one generator of named tensors of the fixture scripts, which
# kernels::weights::generated_tensor reproduces bit for bit.
from make_maskrcnn_fixtures import generate

COMMIT = "138503edbc9e70de744dc0c9fa4b71c799a94d5d"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "plugins", "tracking", "tests", "fixtures")

SEED = 20240607
IMAGE = (480, 640)  # (height, width) of the network input
STRIDES = [4, 8, 16, 32]
CHANNELS = 256
FC_OUT = 32
MATCH_COEFF = [1.0, 2.0, 10.0]
NOISE = 0.25
BLOCK = 4
EMB_GAIN = 12.0
MIN_MARGIN = 1e-2

f32 = np.float32


def level_shapes():
    h, w = IMAGE
    return [(CHANNELS, h // s, w // s) for s in STRIDES]


def frame_features(video: int, fid: int):
    """P2..P5 `[1, C, H, W]`: the world plus this frame's noise (float32 sum). The world is
    generated on a grid BLOCK times coarser and repeated (nearest), so that its features
    vary slowly and a box that moves a little keeps similar RoI features."""
    out = []
    for l, shape in zip(range(2, 6), level_shapes()):
        c, h, w = shape
        coarse = (c, -(-h // BLOCK), -(-w // BLOCK))
        world = generate(f"vpsnet_track.world.p{l}", coarse, 1.0, 0.0)
        world = world.repeat(BLOCK, axis=1).repeat(BLOCK, axis=2)[:, :h, :w]
        noise = generate(f"vpsnet_track.v{video}.f{fid}.p{l}", shape, NOISE, 0.0)
        out.append(torch.from_numpy((world + noise)[None]))
    return out


# ---------------------------------------------------------------------------------------
# mmdet 1.x's RoIAlign CUDA kernel, ported to float32 on the CPU


def bilinear_interpolate(plane: torch.Tensor, height: int, width: int, y, x) -> torch.Tensor:
    """`bilinear_interpolate` of roi_align_kernel.cu for all channels of `plane` [C, H, W]."""
    # deal with cases that inverse elements are out of feature map boundary
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return torch.zeros(plane.shape[0], dtype=torch.float32)
    if y <= 0:
        y = f32(0)
    if x <= 0:
        x = f32(0)
    y_low = int(y)
    x_low = int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = f32(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = f32(x_low)
    else:
        x_high = x_low + 1
    ly = f32(y - f32(y_low))
    lx = f32(x - f32(x_low))
    # `scalar_t hy = 1. - ly;`: exact in double for these values, then rounded to float.
    hy = f32(1.0 - float(ly))
    hx = f32(1.0 - float(lx))
    t = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    w1, w2, w3, w4 = t(hy * hx), t(hy * lx), t(ly * hx), t(ly * lx)
    lt = plane[:, y_low, x_low]
    rt = plane[:, y_low, x_high]
    lb = plane[:, y_high, x_low]
    rb = plane[:, y_high, x_high]
    return w1 * lt + w2 * rt + w3 * lb + w4 * rb


def roi_align_port(features, rois, out_size, spatial_scale, sample_num):
    """`ROIAlignForward` of roi_align_kernel.cu: features [N, C, H, W], rois [K, 5]."""
    out_h, out_w = _pair(out_size)
    _, channels, height, width = features.shape
    output = features.new_zeros(rois.size(0), channels, out_h, out_w)
    scale = f32(spatial_scale)  # the kernel's `const float spatial_scale`
    for n in range(rois.size(0)):
        r = rois[n].detach().numpy().astype(np.float32)
        batch = int(r[0])
        roi_start_w = f32(r[1] * scale)
        roi_start_h = f32(r[2] * scale)
        roi_end_w = f32(f32(r[3] + f32(1)) * scale)
        roi_end_h = f32(f32(r[4] + f32(1)) * scale)
        # Force malformed ROIs to be 1x1 (the kernel's comment; it clamps to 0)
        roi_width = np.fmax(f32(roi_end_w - roi_start_w), f32(0))
        roi_height = np.fmax(f32(roi_end_h - roi_start_h), f32(0))
        bin_size_h = f32(roi_height / f32(out_h))
        bin_size_w = f32(roi_width / f32(out_w))
        sample_num_h = sample_num if sample_num > 0 else int(np.ceil(roi_height / f32(out_h)))
        sample_num_w = sample_num if sample_num > 0 else int(np.ceil(roi_width / f32(out_w)))
        plane = features[batch].detach()
        for ph in range(out_h):
            for pw in range(out_w):
                acc = torch.zeros(channels, dtype=torch.float32)
                for iy in range(sample_num_h):
                    y = f32(
                        f32(roi_start_h + f32(f32(ph) * bin_size_h))
                        + f32(f32(f32(f32(iy) + f32(0.5)) * bin_size_h) / f32(sample_num_h))
                    )
                    for ix in range(sample_num_w):
                        x = f32(
                            f32(roi_start_w + f32(f32(pw) * bin_size_w))
                            + f32(
                                f32(f32(f32(ix) + f32(0.5)) * bin_size_w) / f32(sample_num_w)
                            )
                        )
                        acc = acc + bilinear_interpolate(plane, height, width, y, x)
                output[n, :, ph, pw] = acc / torch.tensor(
                    float(sample_num_h * sample_num_w), dtype=torch.float32
                )
    return output


class RoIAlign(nn.Module):
    """`mmdet.ops.RoIAlign` with the CUDA call replaced by `roi_align_port`."""

    def __init__(self, out_size, spatial_scale, sample_num=0, use_torchvision=False):
        super().__init__()
        self.out_size = _pair(out_size)
        self.spatial_scale = float(spatial_scale)
        self.sample_num = int(sample_num)
        assert not use_torchvision

    def forward(self, features, rois):
        return roi_align_port(features, rois, self.out_size, self.spatial_scale, self.sample_num)


# ---------------------------------------------------------------------------------------
# The official modules, executed with stand-ins for what they import


def official(repo: str, path: str) -> str:
    return subprocess.run(
        ["git", "-C", repo, "show", f"{COMMIT}:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def stub_module(name: str, package: bool = False, **attrs) -> types.ModuleType:
    m = types.ModuleType(name)
    if package:
        m.__path__ = []
    m.__dict__.update(attrs)
    sys.modules[name] = m
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, m)
    return m


def exec_official(repo: str, name: str, path: str) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__file__ = path
    m.__package__ = name.rpartition(".")[0]
    sys.modules[name] = m
    exec(compile(official(repo, path), path, "exec"), m.__dict__)
    return m


def official_functions(repo: str, path: str, names, env: dict, cls: str = None) -> dict:
    """The functions `names` of `path` (methods of class `cls`), compiled from their own
    source lines in `env` (the rest of the file imports what is not installed here)."""
    src = official(repo, path)
    tree = ast.parse(src)
    body = tree.body
    if cls is not None:
        body = next(n for n in body if isinstance(n, ast.ClassDef) and n.name == cls).body
    out = {}
    for node in body:
        if isinstance(node, ast.FunctionDef) and node.name in names:
            code = ast.Module(body=[node], type_ignores=[])
            ns = dict(env)
            exec(compile(code, path, "exec"), ns)
            out[node.name] = ns[node.name]
    assert set(out) == set(names), (path, set(names) - set(out))
    return out


class Registry:
    def register_module(self, cls):
        return cls


def identity_decorator(*args, **kwargs):
    return lambda f: f


def load_official(repo: str) -> dict:
    torch.cuda.current_device = lambda: "cpu"
    stub_module("mmdet", package=True)
    geometry = exec_official(repo, "mmdet.core_geometry", "mmdet/core/bbox/geometry.py")
    transforms = official_functions(
        repo, "mmdet/core/bbox/transforms.py", ["bbox2roi", "roi2bbox"], {"torch": torch}
    )
    unused = lambda *a, **k: None  # noqa: E731
    stub_module(
        "mmdet.core",
        auto_fp16=identity_decorator,
        force_fp32=identity_decorator,
        bbox_target=unused,
        delta2bbox=unused,
        multiclass_nms=unused,
        bbox_overlaps=geometry.bbox_overlaps,
        **transforms,
    )
    stub_module("mmdet.ops", RoIAlign=RoIAlign)
    stub_module("mmdet.models", package=True)
    stub_module("mmdet.models.registry", HEADS=Registry(), ROI_EXTRACTORS=Registry())
    stub_module("mmdet.models.builder", build_loss=lambda cfg: nn.Module())
    stub_module("mmdet.models.losses", accuracy=unused)
    stub_module("mmdet.models.track_heads", package=True)
    stub_module("mmdet.models.roi_extractors", package=True)
    track_head = exec_official(
        repo, "mmdet.models.track_heads.track_head", "mmdet/models/track_heads/track_head.py"
    )
    single_level = exec_official(
        repo,
        "mmdet.models.roi_extractors.single_level",
        "mmdet/models/roi_extractors/single_level.py",
    )
    detector = official_functions(
        repo,
        "mmdet/models/detectors/panoptic_fusetrack.py",
        ["simple_test_bboxes"],
        {
            "torch": torch,
            "F": F,
            "np": np,
            "bbox2roi": transforms["bbox2roi"],
            "roi2bbox": transforms["roi2bbox"],
            "bbox_overlaps": geometry.bbox_overlaps,
        },
        cls="PanopticFuseTrack",
    )
    return {
        "TrackHead": track_head.TrackHead,
        "SingleRoIExtractor": single_level.SingleRoIExtractor,
        "simple_test_bboxes": detector["simple_test_bboxes"],
    }


# ---------------------------------------------------------------------------------------
# The detector around the official test method


class Detector:
    """What `simple_test_bboxes` reads from `self`: the official RoI extractor and track
    head, and stand-ins for the box head and `mask_roi_panoptic` that return the designed
    detections."""

    def __init__(self, official_, roi_extractor, track_head):
        self._simple_test_bboxes = official_["simple_test_bboxes"]
        self.bbox_roi_extractor = roi_extractor
        self.track_head = track_head
        self.next = None
        self.record = {}
        compute = track_head.compute_comp_scores

        def recorded_comp(*args, **kwargs):
            comp = compute(*args, **kwargs)
            self.record["comp"] = comp.detach().clone()
            return comp

        track_head.compute_comp_scores = recorded_comp
        track_head.register_forward_hook(
            lambda mod, inp, out: self.record.__setitem__("match_score", out[0].detach().clone())
        )

    def bbox_head(self, roi_feats):
        k = roi_feats.size(0)
        return torch.zeros(k, 9), torch.zeros(k, 36)

    def mask_roi_panoptic(self, rois, bbox_pred, cls_prob, im_info):
        return self.next

    def run(self, feats, iid, boxes, labels, scores):
        n = len(boxes)
        boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(n, 4)
        det_rois = torch.cat([torch.zeros(n, 1), boxes_t], dim=1)
        self.next = (
            torch.tensor(scores, dtype=torch.float32),
            det_rois,
            torch.tensor(labels, dtype=torch.int64) + 1,
        )
        self.record = {}
        img_meta = [
            {
                "filename": "cityscapes_vps_fixture.png",
                "iid": iid,
                "img_shape": (IMAGE[0], IMAGE[1], 3),
                "scale_factor": 1.0,
            }
        ]
        # One proposal: the box head's output is replaced anyway.
        proposals = [torch.tensor([[0.0, 0.0, 31.0, 31.0]])]
        out = self._simple_test_bboxes(self, feats, img_meta, proposals, None, None)
        return out


# ---------------------------------------------------------------------------------------
# The sequence

def scenario():
    """(video, fid, [(name, label, score, box)]) per frame. Boxes are (x1, y1, x2, y2) in
    network-input pixels, inclusive (mmdet's convention); labels are `cls_idx - 1`."""
    A = lambda dx: (60 + dx, 300, 99 + dx, 359)  # noqa: E731  level 0 (40 x 60)
    B = lambda dx: (200 + dx, 60, 349 + dx, 179)  # noqa: E731  level 1 (150 x 120)
    C = lambda dx: (330 + dx, 200, 589 + dx, 419)  # noqa: E731  level 2 (260 x 220)
    D = lambda dx: (40 + dx, 4, 519 + dx, 475)  # noqa: E731  level 3 (480 x 472)
    v1 = [
        [
            ("A", 0, 0.95, A(0)),
            ("B", 1, 0.90, B(0)),
            ("C", 2, 0.85, C(0)),
            ("D", 0, 0.80, D(0)),
            ("tiny", 3, 0.70, (400.0, 30.0, 401.5, 31.0)),
            ("edge", 1, 0.75, (-8.0, 440.0, 70.0, 490.0)),
        ],
        [
            ("A2", 0, 0.65, (64, 303, 103, 362)),
            ("A", 0, 0.95, A(4)),
            ("B", 1, 0.90, B(6)),
            ("C", 2, 0.85, C(5)),
            ("E", 0, 0.88, (480, 320, 529, 389)),
            ("edge", 1, 0.75, (-6.0, 441.0, 72.0, 492.0)),
        ],
        [
            ("A", 0, 0.93, A(8)),
            ("B", 4, 0.90, B(12)),
            ("C", 2, 0.86, C(10)),
            ("D", 0, 0.82, D(4)),
            ("E", 0, 0.87, (484, 322, 533, 391)),
            ("tiny", 3, 0.70, (401.0, 30.0, 402.5, 31.0)),
        ],
        [
            ("A", 0, 0.94, A(12)),
            ("B", 1, 0.91, B(18)),
            ("C", 2, 0.85, C(15)),
            ("E", 0, 0.86, (488, 324, 537, 393)),
            ("G", 4, 0.83, (100, 100, 300, 300)),
        ],
        [
            ("A", 0, 0.94, A(16)),
            ("B", 1, 0.91, B(24)),
            ("C", 5, 0.84, C(20)),
            ("E", 0, 0.85, (492, 326, 541, 395)),
        ],
    ]
    v2 = [
        [
            ("P", 0, 0.9, (100, 100, 179, 219)),
            ("Q", 1, 0.8, (300, 250, 429, 379)),
        ],
        [
            ("P", 0, 0.9, (104, 102, 183, 221)),
            ("Q", 1, 0.8, (305, 250, 434, 379)),
            ("R", 2, 0.7, (10, 10, 69, 59)),
        ],
    ]
    out = []
    for video, frames in [(1, v1), (2, v2)]:
        for i, dets in enumerate(frames):
            out.append((video, i + 1, dets))
    return out


def check_paths(records) -> list:
    """The association paths the sequence takes; fails when one is missing or when a
    decision is closer than MIN_MARGIN."""
    paths = set()
    prev = None
    for rec in records:
        ids = rec["obj_ids"]
        if rec["fid"] == 1:
            assert ids == list(range(len(ids)))
            paths.add("first frame: ids arange")
            prev = rec
            continue
        comp = np.array(rec["comp"], dtype=np.float64)
        prev_labels = prev["memory_labels"]
        labels = rec["labels"]
        label_delta = np.array(
            [[1.0] + [float(pl == l) for pl in prev_labels] for l in labels]
        )
        match_ids = comp.argmax(axis=1)
        for i, row in enumerate(comp):
            top2 = np.sort(row)[-2:]
            assert top2[1] - top2[0] >= MIN_MARGIN, (rec["fid"], i, row)
            m = match_ids[i]
            if m == 0:
                paths.add("new object: the dummy column wins")
            elif ids[i] == m - 1:
                paths.add("match")
                if prev_labels[m - 1] != labels[i]:
                    paths.add("match despite a label mismatch")
                    assert rec["memory_labels"][m - 1] == prev_labels[m - 1]
                    paths.add("the memory keeps its label")
                if m - 1 not in prev["obj_ids"]:
                    paths.add("an object comes back after a frame away")
            if (row - MATCH_COEFF[2] * label_delta[i]).argmax() != m:
                paths.add("the label term decides")
        for m in set(match_ids[match_ids > 0]):
            rows = [i for i in range(len(ids)) if match_ids[i] == m]
            if len(rows) < 2:
                continue
            scores = [comp[i, m] for i in rows]
            winner = rows[int(np.argmax(scores))]
            assert ids[winner] == m - 1
            for i in rows:
                if i != winner:
                    assert abs(comp[i, m] - comp[winner, m]) >= MIN_MARGIN
                    assert ids[i] >= len(prev_labels)
                    paths.add(
                        "conflict: an earlier detection loses (undo)"
                        if winner > i
                        else "conflict: a later detection loses"
                    )
        prev = rec
    levels = {l for rec in records for l in rec["levels"]}
    assert levels == {0, 1, 2, 3}, levels
    paths.add("boxes on all four levels")
    for rec in records:
        for b, l in zip(rec["boxes"], rec["levels"]):
            if (b[2] - b[0] + 1) / STRIDES[l] < 1:
                paths.add("a box smaller than one stride")
            if b[0] < 0 or b[1] < 0 or b[2] > IMAGE[1] - 1 or b[3] > IMAGE[0] - 1:
                paths.add("a box past the image border")
    want = {
        "first frame: ids arange",
        "new object: the dummy column wins",
        "match",
        "match despite a label mismatch",
        "the memory keeps its label",
        "an object comes back after a frame away",
        "the label term decides",
        "conflict: an earlier detection loses (undo)",
        "boxes on all four levels",
        "a box smaller than one stride",
        "a box past the image border",
    }
    assert want <= paths, want - paths
    return sorted(paths)


def summary_first(t: torch.Tensor, k: int = 16):
    return [float(v) for v in t.reshape(-1)[:k]]


def main():
    repo = sys.argv[1] if len(sys.argv) > 1 else "/tmp/vps"
    official_ = load_official(repo)
    torch.manual_seed(SEED)
    head = official_["TrackHead"](
        num_fcs=2,
        in_channels=CHANNELS,
        roi_feat_size=7,
        fc_out_channels=FC_OUT,
        match_coeff=MATCH_COEFF,
        loss_match=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=0.5),
    )
    extractor = official_["SingleRoIExtractor"](
        roi_layer=dict(type="RoIAlign", out_size=7, sample_num=2),
        out_channels=CHANNELS,
        featmap_strides=STRIDES,
    )
    head.eval()
    with torch.no_grad():
        for fc in head.fcs:
            fc.bias.uniform_(-0.1, 0.1)
        head.fcs[1].weight *= EMB_GAIN
    print(head)
    frames = scenario()
    first_feats = frame_features(frames[0][0], frames[0][1])
    with torch.no_grad():
        # Centre the embeddings (see the docstring) on 64 random boxes of the first frame.
        g = torch.Generator().manual_seed(SEED + 1)
        xy = torch.rand(64, 2, generator=g) * torch.tensor([IMAGE[1] - 200.0, IMAGE[0] - 200.0])
        wh = 16.0 + torch.rand(64, 2, generator=g) * 184.0
        rand_boxes = torch.cat([xy, xy + wh], dim=1)
        rois = torch.cat([torch.zeros(64, 1), rand_boxes], dim=1)
        h = F.relu(head.fcs[0](extractor(first_feats, rois).reshape(64, -1)))
        head.fcs[1].bias -= head.fcs[1].weight @ h.mean(dim=0)

    det = Detector(official_, extractor, head)
    records = []
    for video, fid, dets in frames:
        feats = frame_features(video, fid)
        names = [d[0] for d in dets]
        labels = [d[1] for d in dets]
        scores = [d[2] for d in dets]
        boxes = [[float(v) for v in d[3]] for d in dets]
        iid = video * 10000 + fid
        with torch.no_grad():
            out = det.run(feats, iid, boxes, labels, scores)
        det_bboxes, det_labels, det_obj_ids = out[0], out[1], out[2]
        rois = torch.cat([torch.zeros(len(boxes), 1), torch.tensor(boxes)], dim=1)
        with torch.no_grad():
            roi_feats = extractor(feats, rois)
            emb = roi_feats.reshape(len(boxes), -1)
            for i, fc in enumerate(head.fcs):
                emb = fc(emb)
                if i < len(head.fcs) - 1:
                    emb = F.relu(emb)
        levels = extractor.map_roi_levels(rois, 4)
        rec = {
            "video": video,
            "fid": fid,
            "iid": iid,
            "names": names,
            "boxes": boxes,
            "labels": labels,
            "scores": scores,
            "levels": [int(v) for v in levels],
            "roi_feat_sums": [float(v) for v in roi_feats.double().sum(dim=(1, 2, 3))],
            "roi_feat_abs_sums": [float(v) for v in roi_feats.double().abs().sum(dim=(1, 2, 3))],
            "roi_feat_first": [summary_first(roi_feats[i]) for i in range(len(boxes))],
            "embeddings": emb.tolist(),
            # Only frames that associate (not a video's first) run the track head.
            "match_score": (
                det.record["match_score"].tolist() if "match_score" in det.record else None
            ),
            "comp": det.record["comp"].tolist() if "comp" in det.record else None,
            "obj_ids": [int(v) for v in det_obj_ids],
            "memory_size": int(det.prev_roi_feats.size(0)),
            "memory_labels": [int(v) for v in det.prev_det_labels],
            "memory_boxes": det.prev_bboxes.tolist(),
        }
        records.append(rec)
        ids = list(zip(names, rec["obj_ids"]))
        print(f"video {video} frame {fid}: {ids} levels {rec['levels']}")
        if rec["comp"] is not None:
            np.set_printoptions(precision=3, suppress=True, linewidth=150)
            print("  match", np.array(rec["match_score"]))
            print("  comp", np.array(rec["comp"]))
    paths = check_paths(records)
    print("paths:", paths)
    return head, extractor, records, paths


def write(head, records, paths):
    os.makedirs(OUT, exist_ok=True)
    state = {
        f"track_head.{k}": v.detach().clone().contiguous() for k, v in head.state_dict().items()
    }
    assert sorted(state) == [
        "track_head.fcs.0.bias",
        "track_head.fcs.0.weight",
        "track_head.fcs.1.bias",
        "track_head.fcs.1.weight",
    ], sorted(state)
    torch.save({"state_dict": state}, os.path.join(OUT, "vpsnet_track_head.pth"))
    fixture = {
        "source": f"mcahny/vps @ {COMMIT}",
        "generator": "tests/reference/make_vpsnet_track_fixtures.py",
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
        "weights": "vpsnet_track_head.pth",
        "config": {
            "in_channels": CHANNELS,
            "roi_feat_size": 7,
            "fc_out_channels": FC_OUT,
            "num_fcs": 2,
            "match_coeff": MATCH_COEFF,
            "bbox_dummy_iou": 0.0,
            "featmap_strides": STRIDES,
            "finest_scale": 56,
            "sample_num": 2,
        },
        "features": {
            "image": list(IMAGE),
            "levels": ["p2", "p3", "p4", "p5"],
            "shapes": [list(s) for s in level_shapes()],
            "world": "vpsnet_track.world.p{l}",
            "world_block": BLOCK,
            "noise": "vpsnet_track.v{video}.f{fid}.p{l}",
            "noise_amplitude": NOISE,
        },
        "paths": paths,
        "frames": records,
    }
    with open(os.path.join(OUT, "vpsnet_track.json"), "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    head_, _, records_, paths_ = main()
    write(head_, records_, paths_)
