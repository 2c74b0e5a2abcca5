#!/usr/bin/env python3
"""Writes plugins/rcnn/tests/fixtures/panoptic_fpn_d2.json: Detectron2's own Panoptic FPN R50
inference (`PanopticFPN`, detectron2/modeling/meta_arch/panoptic_fpn.py at commit
02b5c4e295e990042a714712c21dc79b731e8833), run on CPU with generated weights on two real
photos, every stage recorded so that a re-implementation can be checked stage by stage.

Setup as in make_d2_trunk_fixtures.py / make_semseg_fixtures.py (the same pip packages:
torch, torchvision, numpy, pillow and Detectron2's pure-Python dependencies fvcore, iopath,
yacs, omegaconf, termcolor, tabulate, cloudpickle, ...). Detectron2 is not installed: its
source tree at that commit is extracted to DETECTRON2_REPO (default /tmp/detectron2) and put
first on sys.path; its compiled extension `detectron2._C` is neither built nor imported:

    mkdir -p /tmp/detectron2
    git --git-dir=<mirror of facebookresearch/detectron2>/repo archive 02b5c4e2 \
        | tar -x -C /tmp/detectron2
    DETECTRON2_REPO=/tmp/detectron2 OMP_NUM_THREADS=2 target/venv-torch/bin/python \
        tests/reference/make_panoptic_fpn_fixtures.py

Run by developers, not by CI (CI reads the committed fixture). About 10 s on two threads
(torch.set_num_threads(2)); the timings are printed, not stored, so that running the script
twice writes the same file, byte for byte. If the bare git mirror named by
DETECTRON2_GIT_DIR (default /work/.mirror/facebookresearch+detectron2/repo) exists, the
script first checks that every Detectron2 file listed in CHECKED_FILES under DETECTRON2_REPO
is byte-identical to that commit's; otherwise it only prints a note.

Patches: none. Nothing of Detectron2 is stubbed, patched or monkey-patched; every module on
this path is pure Python (the ops are torch's and torchvision's: conv, group_norm,
roi_align, nms, grid_sample, interpolate). The script only adds warnings filters (torch's
FutureWarning about `torch.jit.script`, raised while importing detectron2, and the
UserWarning of `torch.meshgrid` without `indexing`, raised by the anchor generator); they
change nothing that is computed.

Model. `cfg = get_cfg(); cfg.merge_from_file(configs/COCO-PanopticSegmentation/
panoptic_fpn_R_50_1x.yaml)` (Base-RCNN-FPN + Base-Panoptic-FPN: ResNet-50 STRIDE_IN_1X1 with
FrozenBN, FPN p2..p6, StandardRPNHead on p2..p6, StandardROIHeads with the 2-fc box head and
the 4-conv mask head on p2..p5, 80 thing classes, SemSegFPNHead with 54 classes, CONVS_DIM
128, GN), then MODEL.DEVICE = "cpu", MODEL.WEIGHTS = "" and, to keep CI fast,
INPUT.MIN_SIZE_TEST = 256, INPUT.MAX_SIZE_TEST = 384 (defaults 800 / 1333). Everything else
is the config's (the values that matter are stored in "config"). `build_model(cfg).eval()`,
everything under torch.no_grad().

Weights. Every tensor of the model's state dict (330 tensors; the non-persistent buffers
pixel_mean, pixel_std and the anchor generator's cell_anchors are not in it, and
FrozenBatchNorm2d has no num_batches_tracked) is generated from its full name with
make_maskrcnn_fixtures.py's `generate` (reproduced bit for bit by
`kernels::weights::generated_tensor` from {name, shape, a, b}; values uniform in
[b - a, b + a), a negative `a` mirrors the tensor) and loaded with
`load_state_dict(strict=True)`. Ranges (`range_of`):
  - backbone.*: make_d2_trunk_fixtures.range_of, so the backbone's tensors are bit-identical
    to d2_r50_fpn.json's "weights" (asserted): FrozenBN weight 0.75 +- 0.25, bias and
    running_mean +- 0.1, running_var 1.0 +- 0.5; convs a = sqrt(3 / fan_in); FPN biases
    +- 0.1;
  - every other conv / linear weight a = sqrt(3 / fan_in) (fan_in = prod(shape[1:]), but
    shape[0] for the ConvTranspose2d `deconv`, whose weight is [in, out, 2, 2] and whose
    outputs each see one tap of every input channel), every other bias +- 0.1, the
    semantic head's GroupNorm weights 1 +- 0.25, except:
      proposal_generator.rpn_head.anchor_deltas.weight  RPN_DELTAS_SCALE = 0.03 x (features of
          magnitude ~20 would otherwise give deltas of ~8: a third of the anchors clamped
          at log(1000/16) and most proposals clipped away);
      roi_heads.box_predictor.cls_score.weight  CLS_SCALE = 0.22 x: scores spread over
          0.05..1 (Detectron2's softmax over 81 classes);
      roi_heads.box_predictor.bbox_pred.weight  BBOX_SCALE = 0.1 x: boxes move by a few pixels;
      roi_heads.mask_head.predictor.weight  MASK_SCALE = 2 x: mask logits of a few units;
      sem_seg_head.predictor.weight / .bias  SEM_SCALE = -4 x and a = -0.1, i.e. mirrored (a < 0):
          with a > 0 the "things" class 0 has the lowest bias and a low row sum and never
          wins the argmax on these photos; mirrored it does, with ~20 classes present.
With these ranges (printed by the script): chelsea.png 264x397 -> 255x384 (padded 256x384),
1000 proposals, 100 detections, 21 with score >= 0.5 (5 classes), 12 thing + 4 stuff
segments, 19 stuff labels in the argmax of which 15 fall under the 4096-pixel limit;
coffee.png 240x360 -> 256x384 (no padding: an upscale), 1000 proposals, 100 detections, all
>= 0.5 (6 classes), 48 thing segments (the other 52 overlap painted ones by more than half)
+ 2 stuff. The generated network is nearly positively homogeneous, so its logits scale with
the photo's contrast: coffee's features are ~1.75x chelsea's, and no single CLS_SCALE gives
both photos 5-40 confident detections; the chosen one keeps chelsea's lower-scored
detections and the top-100 cuts clear (margins ~2e-3 and ~4e-3, stored). The RPN's per-level
pre-NMS top-1000 cuts on p2 are close (logit margins ~1e-4 on logits of ~10-50, stored as
level_cut_margins): a re-implementation may differ there in the last proposals.

Input, exactly as DefaultPredictor (detectron2/engine/defaults.py:DefaultPredictor.__call__,
INPUT.FORMAT "BGR"): PIL `.convert("RGB")` of assets/<photo>, `[:, :, ::-1]` to BGR uint8
(what cv2.imread would give), `T.ResizeShortestEdge([256, 256], 384).get_transform(img)
.apply_image(img)` (ResizeShortestEdge.get_output_shape: scale = 256 / min(h, w), then if the
long side exceeds 384 rescale by 384 / long side, each side int(x + 0.5); ResizeTransform:
PIL Image.resize((new_w, new_h), BILINEAR) on the uint8 HWC array; sample_style "range"
draws np.random.randint(256, 257), always 256), then
`torch.as_tensor(image.astype("float32").transpose(2, 0, 1))` and `model([{"image": t,
"height": H0, "width": W0}])`. The staged calls below are the same calls in the same order
as PanopticFPN.inference / StandardROIHeads.forward; the script asserts that their final
outputs (sem_seg, instances and panoptic_seg) are exactly equal (torch.equal, ==) to the
plain `model(...)` call's.

Detectron2 semantics a re-implementation must match (read from the source at the commit):
  - preprocess (modeling/meta_arch/rcnn.py:GeneralizedRCNN.preprocess_image): x = (image -
    PIXEL_MEAN) / PIXEL_STD, mean [103.53, 116.28, 123.675] (BGR), std [1, 1, 1];
    structures/image_list.py:ImageList.from_tensors pads bottom/right with 0.0 to a multiple
    of backbone.size_divisibility = 32 (F.pad, after normalisation, so the pad is 0, not
    -mean). image_sizes = the resized, unpadded (h, w).
  - backbone: make_d2_trunk_fixtures.py's docstring (ResNet-50 msra variant + FPN +
    LastLevelMaxPool).
  - anchors (modeling/anchor_generator.py:DefaultAnchorGenerator): sizes 32, 64, 128, 256, 512
    for p2..p6 (strides 4..64), aspect ratios (0.5, 1.0, 2.0); generate_cell_anchors: for
    each size s then each ratio r, w = sqrt(s^2 / r), h = r * w in Python float64, box
    (-w/2, -h/2, w/2, h/2), no rounding, then float32; _create_grid_offsets with
    ANCHOR_GENERATOR.OFFSET = 0.0: shifts = arange(0, W * stride, stride) (float32), so
    anchor centres sit at (x * stride, y * stride), not at the cell centre; anchors ordered
    (y, x, a), a = size-major/ratio-minor (one size per level here, so a = ratio index).
  - RPN head (modeling/proposal_generator/rpn.py:StandardRPNHead.forward): 3x3 conv + ReLU
    (shared over levels), 1x1 objectness_logits (3 channels) and 1x1 anchor_deltas (12 =
    3 anchors x 4); RPN.forward flattens logits (N, A, H, W) -> (N, H*W*A) via permute
    (0, 2, 3, 1) and deltas (N, A*4, H, W) -> view (N, A, 4, H, W) -> (N, H*W*A, 4).
  - box decoding (modeling/box_regression.py:Box2BoxTransform.apply_deltas): widths = x2 - x1,
    ctr = x1 + 0.5 * width; dx / wx, dy / wy, dw / ww, dh / wh; dw, dh clamped at
    max = log(1000 / 16); ctr' = dx * width + ctr; w' = exp(dw) * width; x1' = ctr' - 0.5 *
    w', x2' = ctr' + 0.5 * w' (float32). RPN weights (1, 1, 1, 1); box head (10, 10, 5, 5).
  - proposals (modeling/proposal_generator/proposal_utils.py:find_top_rpn_proposals, test
    mode): per level, logits.topk(min(H*W*A, PRE_NMS_TOPK_TEST = 1000)) (sorted descending)
    and the decoded boxes at those indices; concatenated over levels p2..p6 (level ids 0..4);
    drop non-finite boxes / scores; boxes.clip((h, w)) of the resized unpadded
    size (clamp x to [0, w], y to [0, h]) BEFORE boxes.nonempty(threshold=
    PROPOSAL_GENERATOR.MIN_SIZE = 0), i.e. keep width > 0 and height > 0 strictly; then
    layers/nms.py:batched_nms (= torchvision.ops.batched_nms on float boxes) with the level
    id as the category, IoU 0.7 (NMS per level, one call); keep[:POST_NMS_TOPK_TEST = 1000]
    over all levels together, in decreasing objectness (batched_nms returns its keep sorted
    by score). The proposals' objectness_logits are the raw logits (no sigmoid).
    torchvision 0.29's batched_nms takes the per-class loop (`_batched_nms_vanilla`: nms per
    level, then keep sorted by `scores.sort(descending=True)`) when boxes.numel() > 4000 on
    CPU, else the coordinate-offset trick (boxes + idx * (max + 1), one nms); the path taken
    is stored ("nms_path").
  - RoI pooling (modeling/poolers.py:ROIPooler, assign_boxes_to_levels; layers/roi_align.py):
    POOLER_TYPE "ROIAlignV2" = torchvision.ops.roi_align(aligned=True), sampling_ratio 0
    (adaptive), output 7x7 (box head) / 14x14 (mask head), scales 1/4..1/32 on p2..p5
    (p6 is not pooled); level = floor(4 + log2(sqrt(area) / 224 + 1e-8)) in float32,
    area = (x2 - x1) * (y2 - y1), clamped to [2, 5]; each level's RoIs are pooled by one
    roi_align call on that level and scattered back in input order (index_put_). The
    sampling itself is torchvision's roi_align kernel (not re-derived here). The box head
    pools the proposal boxes; the mask head pools the (clipped) detection boxes.
  - box head (modeling/roi_heads/box_head.py:FastRCNNConvFCHead): flatten the [256, 7, 7]
    RoI feature (channel-major) -> fc1 (12544 -> 1024) + ReLU -> fc2 (1024 -> 1024) + ReLU;
    modeling/roi_heads/fast_rcnn.py:FastRCNNOutputLayers.forward: cls_score (81 logits, the
    80 thing classes then background LAST) and bbox_pred (320 = 80 classes x 4,
    class-specific); predict_probs = softmax over the 81; predict_boxes = apply_deltas with
    weights (10, 10, 5, 5) on the proposal boxes.
  - fast_rcnn.py:fast_rcnn_inference_single_image: drop non-finite rows (none here,
    asserted); scores[:, :-1] (background dropped); ALL R x 80 boxes are clipped to the
    resized unpadded (h, w) FIRST, then filtered by score > SCORE_THRESH_TEST = 0.05
    (strict), in row-major (proposal, class) order (filter_mask.nonzero()); batched_nms
    with the class index as category, IoU NMS_THRESH_TEST = 0.5; keep[:100]
    (TEST.DETECTIONS_PER_IMAGE). There is NO nonempty filter here: a proposal's class box
    clipped to a zero-width/height sliver at the image border survives as a detection (its
    mask is still predicted); such detections are removed only by detector_postprocess's
    nonempty. pred_classes = the class index 0..79 (contiguous). The batched_nms path
    (threshold 4000 numbers = 1000 boxes) is stored.
  - mask head (modeling/roi_heads/mask_head.py:MaskRCNNConvUpsampleHead): mask_fcn1..4 =
    3x3 conv (bias, no norm) + ReLU, deconv = ConvTranspose2d(256, 256, 2, stride 2) + ReLU,
    predictor = 1x1 conv -> 80 channels; mask_rcnn_inference: the channel of each
    detection's pred_class, sigmoid -> pred_masks [N, 1, 28, 28].
  - detector_postprocess (modeling/postprocessing.py): scale_x = W0 / w, scale_y = H0 / h
    (Python floats: original size over the resized UNPADDED image_size); Boxes.scale does
    tensor[:, 0::2] *= scale_x in place on the float32 tensor (torch casts the Python
    scalar to float32 first: the script asserts boxes == box * float32(scale)), then
    Boxes.clip((H0, W0)) (the new Instances' image_size), then keeps boxes.nonempty()
    (width > 0 and height > 0), then pastes the kept masks with those final boxes.
  - paste (layers/mask_ops.py:paste_masks_in_image, _do_paste_mask): on CPU each mask is
    pasted alone (num_chunks = N, skip_empty=True): region x0_int = clamp(floor(x0) - 1,
    min 0), y0_int likewise, x1_int = clamp(ceil(x1) + 1, max W0), y1_int = clamp(ceil(y1) +
    1, max H0) (for a single box the "min over boxes" is that box); pixel centres
    (i + 0.5) mapped to grid = (c - x0) / (x1 - x0) * 2 - 1 (float32), F.grid_sample
    (bilinear, zeros padding, align_corners=False) of the 28x28 probabilities; binary =
    value >= 0.5; pixels outside the region stay False. (With threshold 0.5 the region cut
    can not change the result: a pixel centre outside the box samples at least half a texel
    outside the mask, so its value is below half the border probability, i.e. < 0.5.)
    "paste_margin_below_1e-4" counts pasted values within 1e-4 of 0.5 (all detections).
  - semantic head (modeling/meta_arch/semantic_seg.py:SemSegFPNHead): per level p2..p5,
    max(1, log2(stride) - 2) blocks of [3x3 conv (no bias) -> GroupNorm(32, 128, eps 1e-5)
    -> ReLU] each followed by nn.Upsample(scale_factor=2, bilinear, align_corners=False)
    except at p2; summed in order p2 + p3 + p4 + p5; predictor 1x1 conv (bias) -> 54;
    in eval F.interpolate(scale_factor=4, bilinear, align_corners=False) -> [54, Hp, Wp].
  - sem_seg_postprocess (modeling/postprocessing.py): crop [:, :h, :w] (resized unpadded),
    F.interpolate(size=(H0, W0), bilinear, align_corners=False) -> [54, H0, W0].
  - combine_semantic_and_instance_outputs (modeling/meta_arch/panoptic_fpn.py), on the
    postprocessed instances and sem_seg_r.argmax(dim=0): panoptic_seg int32 zeros;
    instances in torch.argsort(-scores) order; stop (break) at the first score < 0.5; skip a
    mask of area 0; skip when intersect_area / mask_area > 0.5 (intersect = mask &
    panoptic > 0); else mask &= panoptic == 0 when they intersect, id += 1, paint; things'
    segments_info = {id, isthing: true, score (Python float of the float32), category_id
    (pred_class, 0..79), instance_id (index into the postprocessed instances)}: NO "area"
    for things. Then for each label in torch.unique(semantic) (ascending), label 0
    ("things") skipped: mask = (semantic == label) & (panoptic == 0), skipped if its area <
    STUFF_AREA_LIMIT 4096 (area >= 4096 kept), else id += 1, paint, info {id, isthing:
    false, category_id (the contiguous semantic label 1..53), area}. "stuff_candidates"
    lists every such label with its remaining area and whether it was kept.

JSON: generator, reference {detectron2 (full commit), torch, torchvision, numpy, pillow},
config (the cfg values used), weights [{name, shape, a, b}] (state-dict order), cases
[{photo, original_size [H0, W0], image_size [h, w] (resized, unpadded), padded_size [Hp, Wp],
  resized_bgr {summary of the [3, h, w] float32 image before normalisation (the uint8 values),
      pixels [{y, x, bgr}] (exact uint8 values at fixed positions)},
  input (summary of images.tensor[0], [3, Hp, Wp], normalised and padded),
  features {p2..p6: summary [256, H/s, W/s]},
  proposals {count, nms_path, candidates (boxes entering the RPN's batched_nms), level_sizes
      [[H, W, H*W*A]], level_cut_margins (per level, logit 1000 minus logit 1001 of the
      sorted level logits; null when the level has <= 1000 anchors), boxes [count*4] (flat
      x1 y1 x2 y2, resized pixels), objectness_logits [count], duplicate_logits (exact
      duplicate values among them)},
  box_predictor {scores: summary of the [R, 81] class logits, deltas: summary of the
      [R, 320] box deltas; channel_axis 1, i.e. per-column means},
  box_head {count, filtered (scores > 0.05), nms_path, kept_before_topk, topk_cut_margin
      (score 100 minus score 101 among the NMS survivors, null when <= 100 survive),
      boxes, scores, pred_classes, proposal_index (the row of the proposal each detection
      came from)} in Detectron2's order, resized pixels,
  mask_probs {summary of [N, 28, 28] (pred_masks [N, 1, 28, 28] with the 1 dropped),
      first [3 flat lists of 784]},
  instances {count, scale_xy [W0 / w, H0 / h], kept (indices into box_head of the
      detections detector_postprocess keeps), boxes, scores, pred_classes, mask_area,
      masks_first {shape [H0, W0], count, bits [base64 of np.packbits of the row-major
      bool mask, first MASKS_FULL = 5 detections]}, paste_margin_below_1e-4},
  sem_seg {logits_padded (summary [54, Hp, Wp]), logits (summary [54, H0, W0]), labels
      (base64 uint8 [H0, W0] argmax), label_margin_below_1e-4},
  panoptic {map (base64 int32 little-endian [H0, W0], row-major), segments_info,
      stuff_candidates [[label, remaining area, kept]], score_ties (pairs of instance
      indices with score >= 0.5 whose scores differ by <= 1e-6), num_things, num_stuff}}].
Summaries are make_maskrcnn_fixtures.summary (shape, sum, abs_sum, min, max, channel_means
over all axes but the first, values at 512 fixed random flat indices plus the first and
last; rng = np.random.default_rng(case number), which first draws the 12 random pixel
positions (12 rows, then 12 columns) and then the summaries' indices in the order above), plus
"channel_axis": 0 (1 for the box predictor's). Floats are Python floats of the float32
values (json round-trips them exactly).
"""

import base64
import json
import math
import os
import platform
import subprocess
import sys
import time
import warnings

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts or in the detectron2 tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
DETECTRON2_REPO = os.environ.get("DETECTRON2_REPO", "/tmp/detectron2")
if not os.path.isfile(os.path.join(DETECTRON2_REPO, "detectron2/modeling/meta_arch/panoptic_fpn.py")):
    sys.exit(f"no detectron2 source tree at {DETECTRON2_REPO}: set DETECTRON2_REPO (see the docstring)")
sys.path.insert(0, DETECTRON2_REPO)
warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit\.script.*")
warnings.filterwarnings("ignore", category=UserWarning, message=r".*torch\.meshgrid.*")

from make_maskrcnn_fixtures import generate, summary  # noqa: E402
import make_d2_trunk_fixtures as trunk  # noqa: E402  (its range_of; same detectron2 tree)

import detectron2.data.transforms as T  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.layers.mask_ops import _do_paste_mask  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.modeling.meta_arch.panoptic_fpn import (  # noqa: E402
    combine_semantic_and_instance_outputs,
)
from detectron2.modeling.postprocessing import detector_postprocess, sem_seg_postprocess  # noqa: E402
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference_single_image  # noqa: E402

assert os.path.realpath(trunk.DETECTRON2_REPO) == os.path.realpath(DETECTRON2_REPO)
DETECTRON2_COMMIT = trunk.DETECTRON2_COMMIT
DETECTRON2_GIT_DIR = trunk.DETECTRON2_GIT_DIR
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "plugins", "rcnn", "tests", "fixtures")
CONFIG_FILE = "configs/COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml"
PHOTOS = ["chelsea.png", "coffee.png"]
MIN_SIZE_TEST = 256
MAX_SIZE_TEST = 384
FPN_LEVELS = ["p2", "p3", "p4", "p5", "p6"]
MASK_PROBS_FULL = 3  # detections whose 28x28 probabilities are stored in full
MASKS_FULL = 5  # detections whose pasted binary masks are stored in full
PIXELS = 12  # exact resized pixels stored (plus the four corners and the centre)
# Range multipliers over a = sqrt(3 / fan_in); see the docstring.
RPN_DELTAS_SCALE = 0.03
CLS_SCALE = 0.22
BBOX_SCALE = 0.1
MASK_SCALE = 2.0
SEM_SCALE = -4.0
SEM_BIAS = -0.1
CHECKED_FILES = [
    CONFIG_FILE,
    "configs/COCO-PanopticSegmentation/Base-Panoptic-FPN.yaml",
    "configs/Base-RCNN-FPN.yaml",
    "detectron2/config/defaults.py",
    "detectron2/data/transforms/augmentation_impl.py",
    "detectron2/data/transforms/transform.py",
    "detectron2/engine/defaults.py",
    "detectron2/layers/mask_ops.py",
    "detectron2/layers/nms.py",
    "detectron2/layers/roi_align.py",
    "detectron2/layers/wrappers.py",
    "detectron2/layers/batch_norm.py",
    "detectron2/modeling/anchor_generator.py",
    "detectron2/modeling/backbone/fpn.py",
    "detectron2/modeling/backbone/resnet.py",
    "detectron2/modeling/box_regression.py",
    "detectron2/modeling/meta_arch/panoptic_fpn.py",
    "detectron2/modeling/meta_arch/rcnn.py",
    "detectron2/modeling/meta_arch/semantic_seg.py",
    "detectron2/modeling/poolers.py",
    "detectron2/modeling/postprocessing.py",
    "detectron2/modeling/proposal_generator/proposal_utils.py",
    "detectron2/modeling/proposal_generator/rpn.py",
    "detectron2/modeling/roi_heads/box_head.py",
    "detectron2/modeling/roi_heads/fast_rcnn.py",
    "detectron2/modeling/roi_heads/mask_head.py",
    "detectron2/modeling/roi_heads/roi_heads.py",
    "detectron2/structures/boxes.py",
    "detectron2/structures/image_list.py",
    "detectron2/structures/masks.py",
]


def check_source():
    if not os.path.isdir(DETECTRON2_GIT_DIR):
        print(f"note: no git mirror at {DETECTRON2_GIT_DIR}; source tree not verified")
        return
    for path in CHECKED_FILES:
        want = subprocess.run(
            ["git", f"--git-dir={DETECTRON2_GIT_DIR}", "show", f"{DETECTRON2_COMMIT}:{path}"],
            check=True,
            capture_output=True,
        ).stdout
        with open(os.path.join(DETECTRON2_REPO, path), "rb") as f:
            assert f.read() == want, f"{path} differs from detectron2 {DETECTRON2_COMMIT}"
    print(f"{len(CHECKED_FILES)} files match detectron2 {DETECTRON2_COMMIT[:8]}")


def f32(x) -> float:
    return float(np.float32(x))


def lecun(shape, fan_in=None) -> float:
    fan_in = int(np.prod(shape[1:])) if fan_in is None else fan_in
    return math.sqrt(3.0 / fan_in)


def range_of(name: str, shape) -> tuple:
    """(a, b) of a tensor of the whole model (full state-dict name): uniform in [b - a, b + a)."""
    if name.startswith("backbone."):
        return trunk.range_of(name, shape)
    if name == "proposal_generator.rpn_head.anchor_deltas.weight":
        return f32(RPN_DELTAS_SCALE * lecun(shape)), 0.0
    if name == "roi_heads.box_predictor.cls_score.weight":
        return f32(CLS_SCALE * lecun(shape)), 0.0
    if name == "roi_heads.box_predictor.bbox_pred.weight":
        return f32(BBOX_SCALE * lecun(shape)), 0.0
    if name == "roi_heads.mask_head.predictor.weight":
        return f32(MASK_SCALE * lecun(shape)), 0.0
    if name == "roi_heads.mask_head.deconv.weight":  # ConvTranspose2d [in, out, 2, 2]
        return f32(lecun(shape, fan_in=shape[0])), 0.0
    if name == "sem_seg_head.predictor.weight":
        return f32(SEM_SCALE * lecun(shape)), 0.0
    if name == "sem_seg_head.predictor.bias":
        return f32(SEM_BIAS), 0.0
    if name.startswith("sem_seg_head.") and name.endswith(".norm.weight"):  # GroupNorm
        return 0.25, 1.0
    if len(shape) in (2, 4) and name.endswith(".weight"):  # conv / linear
        return f32(lecun(shape)), 0.0
    if len(shape) == 1:  # conv / linear biases, GroupNorm biases
        return 0.1, 0.0
    raise ValueError(f"no range for {name} {shape}")


def b64(a: np.ndarray, dtype) -> str:
    """Base64 of the array's row-major little-endian bytes."""
    data = np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<"))
    return base64.b64encode(data.tobytes()).decode()


def floats(t: torch.Tensor) -> list:
    return [float(v) for v in t.detach().cpu().numpy().astype(np.float32).reshape(-1)]


def ints(t: torch.Tensor) -> list:
    return [int(v) for v in t.detach().cpu().numpy().reshape(-1)]


def summary_chw(t: torch.Tensor, rng) -> dict:
    s = summary(t, rng)
    s["channel_axis"] = 0
    return s


def summary_columns(t: torch.Tensor, rng) -> dict:
    """summary of an [N, C] tensor with per-column means (reference.rs channel_axis 1)."""
    a = t.detach().cpu().numpy().astype(np.float32)
    assert a.ndim == 2
    s = summary(t[None], rng)  # same flat indices and values
    s["shape"] = list(a.shape)
    s["channel_axis"] = 1
    s["channel_means"] = [float(x) for x in a.astype(np.float64).mean(axis=0)]
    return s


def nms_path(num_boxes: int) -> str:
    """Which branch torchvision.ops.batched_nms takes on CPU for num_boxes boxes."""
    return "vanilla" if num_boxes * 4 > 4000 else "coordinate_trick"


def build():
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(DETECTRON2_REPO, CONFIG_FILE))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.INPUT.MIN_SIZE_TEST = MIN_SIZE_TEST
    cfg.INPUT.MAX_SIZE_TEST = MAX_SIZE_TEST
    cfg.freeze()
    model = build_model(cfg)
    model.eval()
    return cfg, model


def config_of(cfg, model) -> dict:
    m = cfg.MODEL
    return {
        "config_file": CONFIG_FILE,
        "MODEL.META_ARCHITECTURE": m.META_ARCHITECTURE,
        "MODEL.DEVICE": m.DEVICE,
        "MODEL.WEIGHTS": m.WEIGHTS,
        "MODEL.MASK_ON": m.MASK_ON,
        "MODEL.PIXEL_MEAN": list(m.PIXEL_MEAN),
        "MODEL.PIXEL_STD": list(m.PIXEL_STD),
        "INPUT.FORMAT": cfg.INPUT.FORMAT,
        "INPUT.MIN_SIZE_TEST": cfg.INPUT.MIN_SIZE_TEST,
        "INPUT.MAX_SIZE_TEST": cfg.INPUT.MAX_SIZE_TEST,
        "size_divisibility": model.backbone.size_divisibility,
        "MODEL.RESNETS.DEPTH": m.RESNETS.DEPTH,
        "MODEL.RESNETS.STRIDE_IN_1X1": m.RESNETS.STRIDE_IN_1X1,
        "MODEL.RESNETS.NORM": m.RESNETS.NORM,
        "MODEL.FPN.IN_FEATURES": list(m.FPN.IN_FEATURES),
        "MODEL.ANCHOR_GENERATOR.SIZES": [list(s) for s in m.ANCHOR_GENERATOR.SIZES],
        "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": [list(r) for r in m.ANCHOR_GENERATOR.ASPECT_RATIOS],
        "MODEL.ANCHOR_GENERATOR.OFFSET": m.ANCHOR_GENERATOR.OFFSET,
        "MODEL.RPN.IN_FEATURES": list(m.RPN.IN_FEATURES),
        "MODEL.RPN.PRE_NMS_TOPK_TEST": m.RPN.PRE_NMS_TOPK_TEST,
        "MODEL.RPN.POST_NMS_TOPK_TEST": m.RPN.POST_NMS_TOPK_TEST,
        "MODEL.RPN.NMS_THRESH": m.RPN.NMS_THRESH,
        "MODEL.RPN.BBOX_REG_WEIGHTS": list(m.RPN.BBOX_REG_WEIGHTS),
        "MODEL.PROPOSAL_GENERATOR.MIN_SIZE": m.PROPOSAL_GENERATOR.MIN_SIZE,
        "box2box_scale_clamp": math.log(1000.0 / 16),
        "MODEL.ROI_HEADS.NAME": m.ROI_HEADS.NAME,
        "MODEL.ROI_HEADS.IN_FEATURES": list(m.ROI_HEADS.IN_FEATURES),
        "MODEL.ROI_HEADS.NUM_CLASSES": m.ROI_HEADS.NUM_CLASSES,
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST": m.ROI_HEADS.SCORE_THRESH_TEST,
        "MODEL.ROI_HEADS.NMS_THRESH_TEST": m.ROI_HEADS.NMS_THRESH_TEST,
        "TEST.DETECTIONS_PER_IMAGE": cfg.TEST.DETECTIONS_PER_IMAGE,
        "MODEL.ROI_BOX_HEAD.NAME": m.ROI_BOX_HEAD.NAME,
        "MODEL.ROI_BOX_HEAD.NUM_FC": m.ROI_BOX_HEAD.NUM_FC,
        "MODEL.ROI_BOX_HEAD.FC_DIM": m.ROI_BOX_HEAD.FC_DIM,
        "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": m.ROI_BOX_HEAD.POOLER_RESOLUTION,
        "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": m.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO,
        "MODEL.ROI_BOX_HEAD.POOLER_TYPE": m.ROI_BOX_HEAD.POOLER_TYPE,
        "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS": list(m.ROI_BOX_HEAD.BBOX_REG_WEIGHTS),
        "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": m.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG,
        "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE": m.ROI_BOX_HEAD.USE_SIGMOID_CE,
        "MODEL.ROI_MASK_HEAD.NAME": m.ROI_MASK_HEAD.NAME,
        "MODEL.ROI_MASK_HEAD.NUM_CONV": m.ROI_MASK_HEAD.NUM_CONV,
        "MODEL.ROI_MASK_HEAD.CONV_DIM": m.ROI_MASK_HEAD.CONV_DIM,
        "MODEL.ROI_MASK_HEAD.NORM": m.ROI_MASK_HEAD.NORM,
        "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": m.ROI_MASK_HEAD.POOLER_RESOLUTION,
        "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO": m.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO,
        "MODEL.ROI_MASK_HEAD.POOLER_TYPE": m.ROI_MASK_HEAD.POOLER_TYPE,
        "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": m.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK,
        "pooler_canonical_box_size": 224,
        "pooler_canonical_level": 4,
        "MODEL.SEM_SEG_HEAD.NAME": m.SEM_SEG_HEAD.NAME,
        "MODEL.SEM_SEG_HEAD.IN_FEATURES": list(m.SEM_SEG_HEAD.IN_FEATURES),
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES": m.SEM_SEG_HEAD.NUM_CLASSES,
        "MODEL.SEM_SEG_HEAD.CONVS_DIM": m.SEM_SEG_HEAD.CONVS_DIM,
        "MODEL.SEM_SEG_HEAD.COMMON_STRIDE": m.SEM_SEG_HEAD.COMMON_STRIDE,
        "MODEL.SEM_SEG_HEAD.NORM": m.SEM_SEG_HEAD.NORM,
        "MODEL.SEM_SEG_HEAD.IGNORE_VALUE": m.SEM_SEG_HEAD.IGNORE_VALUE,
        "group_norm_groups": 32,
        "norm_eps": 1e-5,
        "MODEL.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH": m.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH,
        "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT": m.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT,
        "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH": (
            m.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH
        ),
        "mask_threshold": 0.5,
    }


def check_model(cfg, model):
    """The structure the docstring describes (cheap guards against a different config)."""
    rh = model.roi_heads
    assert model.backbone.size_divisibility == 32
    assert [float(v) for v in model.pixel_mean.reshape(-1)] == [f32(v) for v in cfg.MODEL.PIXEL_MEAN]
    assert [float(v) for v in model.pixel_std.reshape(-1)] == [1.0, 1.0, 1.0]
    ag = model.proposal_generator.anchor_generator
    assert ag.offset == 0.0 and list(ag.strides) == [4, 8, 16, 32, 64]
    pg = model.proposal_generator
    assert pg.pre_nms_topk[False] == 1000 and pg.post_nms_topk[False] == 1000
    assert pg.nms_thresh == 0.7 and pg.min_box_size == 0
    assert tuple(pg.box2box_transform.weights) == (1.0, 1.0, 1.0, 1.0)
    bp = rh.box_predictor
    assert tuple(bp.box2box_transform.weights) == (10.0, 10.0, 5.0, 5.0)
    assert bp.box2box_transform.scale_clamp == math.log(1000.0 / 16)
    assert bp.test_score_thresh == 0.05 and bp.test_nms_thresh == 0.5 and bp.test_topk_per_image == 100
    assert not bp.use_sigmoid_ce and bp.cls_score.out_features == 81
    for pooler in (rh.box_pooler, rh.mask_pooler):
        assert pooler.min_level == 2 and pooler.max_level == 5
        assert pooler.canonical_box_size == 224 and pooler.canonical_level == 4
        for p in pooler.level_poolers:
            assert p.aligned and p.sampling_ratio == 0
    assert rh.box_pooler.output_size == (7, 7) and rh.mask_pooler.output_size == (14, 14)
    assert model.combine_overlap_thresh == 0.5
    assert model.combine_stuff_area_thresh == 4096
    assert model.combine_instances_score_thresh == 0.5
    for m in model.sem_seg_head.modules():
        if isinstance(m, torch.nn.GroupNorm):
            assert m.num_groups == 32 and m.num_channels == 128 and m.eps == 1e-5


def load_weights(model) -> list:
    state = model.state_dict()
    spec = []
    for name in state:
        shape = list(state[name].shape)
        a, b = range_of(name, shape)
        spec.append({"name": name, "shape": shape, "a": a, "b": b})
        state[name] = torch.from_numpy(generate(name, shape, a, b))
    missing, unexpected = model.load_state_dict(state, strict=True)
    assert not missing and not unexpected
    for name, buf in model.named_buffers():
        if name.endswith("running_var"):
            assert float(buf.min()) > 0, name
    # The backbone is exactly the d2_r50_fpn.json one.
    path = os.path.join(ROOT, "plugins", "backbones", "tests", "fixtures", "d2_r50_fpn.json")
    if os.path.isfile(path):
        with open(path) as f:
            theirs = json.load(f)["weights"]
        ours = [w for w in spec if w["name"].startswith("backbone.")]
        assert ours == theirs, "backbone weights differ from d2_r50_fpn.json's"
    return spec


def read_photo(photo: str, cfg):
    """DefaultPredictor's input path on a BGR uint8 array."""
    rgb = np.asarray(Image.open(os.path.join(ROOT, "assets", photo)).convert("RGB"))
    original = rgb[:, :, ::-1]  # BGR, as cv2.imread gives it
    h0, w0 = original.shape[:2]
    aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
    resized = aug.get_transform(original).apply_image(original)
    assert resized.dtype == np.uint8
    image = torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))
    return {"image": image, "height": h0, "width": w0}, resized


def run_staged(model, inputs):
    """PanopticFPN.inference, StandardROIHeads.forward (eval) and RPN.forward, step by step."""
    rec = {}
    images = model.preprocess_image(inputs)
    features = model.backbone(images.tensor)
    sem_seg_results, _ = model.sem_seg_head(features, None)

    pg = model.proposal_generator
    rpn_features = [features[f] for f in pg.in_features]
    num_anchors = pg.anchor_generator.num_anchors[0]
    rec["level_sizes"] = [
        [int(f.shape[-2]), int(f.shape[-1]), int(f.shape[-2] * f.shape[-1] * num_anchors)]
        for f in rpn_features
    ]
    # The per-level pre-NMS top-k cut (find_top_rpn_proposals step 1): logit k minus logit k+1.
    logits_levels, _ = pg.rpn_head(rpn_features)
    rec["level_cut_margins"] = []
    for lg in logits_levels:
        flat = lg.permute(0, 2, 3, 1).flatten(1)[0]
        k = pg.pre_nms_topk[False]
        if flat.numel() > k:
            top = flat.topk(k + 1).values
            rec["level_cut_margins"].append(float(top[k - 1]) - float(top[k]))
        else:
            rec["level_cut_margins"].append(None)
    proposals, _ = pg(images, features, None)

    rh = model.roi_heads
    box_features = rh.box_pooler(
        [features[f] for f in rh.box_in_features], [p.proposal_boxes for p in proposals]
    )
    box_features = rh.box_head(box_features)
    predictions = rh.box_predictor(box_features)
    del box_features
    pred_instances, kept = rh.box_predictor.inference(predictions, proposals)
    det = pred_instances[0]
    rec["box_head"] = (
        det.pred_boxes.tensor.clone(), det.scores.clone(), det.pred_classes.clone(), kept[0].clone()
    )
    # fast_rcnn_inference_single_image without the top-k cut: the NMS survivors and the cut.
    boxes_all = rh.box_predictor.predict_boxes(predictions, proposals)[0]
    probs_all = rh.box_predictor.predict_probs(predictions, proposals)[0]
    assert torch.isfinite(boxes_all).all() and torch.isfinite(probs_all).all()
    rec["filtered"] = int((probs_all[:, :-1] > rh.box_predictor.test_score_thresh).sum())
    uncut, _ = fast_rcnn_inference_single_image(
        boxes_all, probs_all, proposals[0].image_size, rh.box_predictor.test_score_thresh,
        rh.box_predictor.test_nms_thresh, -1,
    )
    n = len(det)
    assert torch.equal(uncut.scores[:n], det.scores)
    assert torch.equal(uncut.pred_boxes.tensor[:n], det.pred_boxes.tensor)
    rec["kept_before_topk"] = len(uncut)
    rec["topk_cut_margin"] = (
        float(uncut.scores[n - 1]) - float(uncut.scores[n]) if len(uncut) > n else None
    )
    pred_instances = rh.forward_with_given_boxes(features, pred_instances)
    rec["mask_probs"] = pred_instances[0].pred_masks.clone()

    image_size = images.image_sizes[0]
    h0, w0 = inputs[0]["height"], inputs[0]["width"]
    sem_seg_r = sem_seg_postprocess(sem_seg_results[0], image_size, h0, w0)
    detector_r = detector_postprocess(pred_instances[0], h0, w0)
    panoptic_r = combine_semantic_and_instance_outputs(
        detector_r,
        sem_seg_r.argmax(dim=0),
        model.combine_overlap_thresh,
        model.combine_stuff_area_thresh,
        model.combine_instances_score_thresh,
    )
    out = {"sem_seg": sem_seg_r, "instances": detector_r, "panoptic_seg": panoptic_r}
    return images, features, sem_seg_results, proposals, predictions, rec, out


def same_outputs(a: dict, b: dict):
    assert torch.equal(a["sem_seg"], b["sem_seg"]), "sem_seg differs"
    ia, ib = a["instances"], b["instances"]
    assert ia.image_size == ib.image_size
    assert torch.equal(ia.pred_boxes.tensor, ib.pred_boxes.tensor), "boxes differ"
    assert torch.equal(ia.scores, ib.scores) and torch.equal(ia.pred_classes, ib.pred_classes)
    assert torch.equal(ia.pred_masks, ib.pred_masks), "masks differ"
    assert torch.equal(a["panoptic_seg"][0], b["panoptic_seg"][0]), "panoptic map differs"
    assert a["panoptic_seg"][1] == b["panoptic_seg"][1], "segments_info differs"


def postprocess_keep(boxes: torch.Tensor, image_size, h0: int, w0: int):
    """detector_postprocess's box arithmetic, replayed: (final boxes, kept indices, scales)."""
    scale_x, scale_y = w0 / image_size[1], h0 / image_size[0]
    b = boxes.clone()
    b[:, 0::2] = b[:, 0::2] * np.float32(scale_x)
    b[:, 1::2] = b[:, 1::2] * np.float32(scale_y)
    b = torch.stack(
        (b[:, 0].clamp(0, w0), b[:, 1].clamp(0, h0), b[:, 2].clamp(0, w0), b[:, 3].clamp(0, h0)), dim=-1
    )
    keep = ((b[:, 2] - b[:, 0]) > 0) & ((b[:, 3] - b[:, 1]) > 0)
    return b[keep], torch.nonzero(keep)[:, 0], (scale_x, scale_y)


def paste_margin(probs: torch.Tensor, boxes: torch.Tensor, h0: int, w0: int) -> int:
    """Pasted (soft) values within 1e-4 of the 0.5 threshold, as paste_masks_in_image on CPU."""
    near = 0
    for k in range(len(boxes)):
        soft, _ = _do_paste_mask(probs[k : k + 1, None], boxes[k : k + 1], h0, w0, skip_empty=True)
        near += int(((soft - 0.5).abs() < 1e-4).sum())
    return near


def run_case(model, cfg, photo: str, case_no: int) -> dict:
    rng = np.random.default_rng(case_no)
    inputs, resized = read_photo(photo, cfg)
    h0, w0 = inputs["height"], inputs["width"]
    t0 = time.time()
    with torch.no_grad():
        reference = model([inputs])[0]
    t_plain = time.time() - t0
    t0 = time.time()
    with torch.no_grad():
        images, features, sem_seg_results, proposals, predictions, rec, out = run_staged(model, [inputs])
    t_staged = time.time() - t0
    same_outputs(out, reference)

    image_size = [int(v) for v in images.image_sizes[0]]
    padded = [int(v) for v in images.tensor.shape[-2:]]
    assert list(resized.shape[:2]) == image_size and padded[0] % 32 == 0 and padded[1] % 32 == 0

    # 1. Resized image and normalised input.
    h, w = image_size
    spots = [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (h // 2, w // 2)]
    spots += [(int(y), int(x)) for y, x in zip(rng.integers(0, h, PIXELS), rng.integers(0, w, PIXELS))]
    resized_rec = {
        "summary": summary_chw(inputs["image"], rng),
        "pixels": [{"y": y, "x": x, "bgr": [int(v) for v in resized[y, x]]} for y, x in spots],
    }
    input_rec = summary_chw(images.tensor[0], rng)
    features_rec = {k: summary_chw(features[k][0], rng) for k in FPN_LEVELS}

    # 3. Proposals.
    p = proposals[0]
    logits = p.objectness_logits
    candidates = sum(min(n, 1000) for _, _, n in rec["level_sizes"])
    proposals_rec = {
        "count": len(p),
        "nms_path": nms_path(candidates),
        "candidates": candidates,
        "level_sizes": rec["level_sizes"],
        "level_cut_margins": rec["level_cut_margins"],
        "boxes": floats(p.proposal_boxes.tensor),
        "objectness_logits": floats(logits),
        "duplicate_logits": int(len(logits) - len(torch.unique(logits))),
    }
    scores_logits, deltas = predictions
    predictor_rec = {"scores": summary_columns(scores_logits, rng), "deltas": summary_columns(deltas, rng)}

    # 4. Box head detections (resized pixels).
    det_boxes, det_scores, det_classes, det_index = rec["box_head"]
    box_rec = {
        "count": len(det_scores),
        "filtered": rec["filtered"],
        "nms_path": nms_path(rec["filtered"]),
        "kept_before_topk": rec["kept_before_topk"],
        "topk_cut_margin": rec["topk_cut_margin"],
        "boxes": floats(det_boxes),
        "scores": floats(det_scores),
        "pred_classes": ints(det_classes),
        "proposal_index": ints(det_index),
    }

    # 5. Mask probabilities.
    probs = rec["mask_probs"]
    assert probs.shape[1:] == (1, 28, 28) and len(probs) == len(det_scores) > 0
    mask_rec = {
        "summary": summary_chw(probs[:, 0], rng),
        "first": [floats(probs[k, 0]) for k in range(min(MASK_PROBS_FULL, len(probs)))],
    }

    # 6. Postprocessed instances (original pixels).
    inst = out["instances"]
    final_boxes, keep, scales = postprocess_keep(det_boxes, image_size, h0, w0)
    assert torch.equal(final_boxes, inst.pred_boxes.tensor), "detector_postprocess replay differs"
    assert torch.equal(inst.scores, det_scores[keep]) and torch.equal(inst.pred_classes, det_classes[keep])
    masks = inst.pred_masks
    assert masks.dtype == torch.bool and tuple(masks.shape[1:]) == (h0, w0)
    inst_rec = {
        "count": len(inst),
        "scale_xy": list(scales),
        "kept": ints(keep),
        "boxes": floats(inst.pred_boxes.tensor),
        "scores": floats(inst.scores),
        "pred_classes": ints(inst.pred_classes),
        "mask_area": [int(m.sum()) for m in masks],
        "masks_first": {
            "shape": [h0, w0],
            "count": min(MASKS_FULL, len(inst)),
            "bits": [
                base64.b64encode(np.packbits(masks[k].numpy().reshape(-1)).tobytes()).decode()
                for k in range(min(MASKS_FULL, len(inst)))
            ],
        },
        "paste_margin_below_1e-4": paste_margin(probs[keep, 0], inst.pred_boxes.tensor, h0, w0),
    }

    # 7. Semantic segmentation.
    logits_sem = out["sem_seg"]
    labels = logits_sem.argmax(dim=0)
    top2 = torch.topk(logits_sem, 2, dim=0).values
    margin = (top2[0] - top2[1]).numpy()
    labels_np = labels.numpy().astype(np.uint8)
    sem_rec = {
        "logits_padded": summary_chw(sem_seg_results[0], rng),
        "logits": summary_chw(logits_sem, rng),
        "labels": b64(labels_np, np.uint8),
        "label_margin_below_1e-4": int((margin < 1e-4).sum()),
    }
    assert list(sem_seg_results.shape) == [1, 54] + padded

    # 8. Panoptic.
    pan, segments = out["panoptic_seg"]
    assert pan.dtype == torch.int32 and tuple(pan.shape) == (h0, w0)
    thing_ids = [s["id"] for s in segments if s["isthing"]]
    covered = torch.isin(pan, torch.tensor(thing_ids, dtype=torch.int32))  # painted by things
    stuff_kept = {s["category_id"] for s in segments if not s["isthing"]}
    candidates_stuff = []
    for label in torch.unique(labels).tolist():
        if label == 0:
            continue
        area = int(((labels == label) & ~covered).sum())
        candidates_stuff.append([label, area, label in stuff_kept])
        assert (area >= 4096) == (label in stuff_kept)
    sc = inst.scores.numpy()
    confident = [i for i in range(len(sc)) if sc[i] >= 0.5]
    ties = [
        [i, j]
        for a, i in enumerate(confident)
        for j in confident[a + 1 :]
        if abs(float(sc[i]) - float(sc[j])) <= 1e-6
    ]
    pan_rec = {
        "map": b64(pan.numpy(), np.int32),
        "segments_info": segments,
        "stuff_candidates": candidates_stuff,
        "score_ties": ties,
        "num_things": len(thing_ids),
        "num_stuff": len(segments) - len(thing_ids),
    }

    hist = np.bincount(labels_np.reshape(-1), minlength=54)
    print(
        f"{photo}: original {[h0, w0]}, resized {image_size}, padded {padded}; "
        f"model() {t_plain:.2f} s, staged {t_staged:.2f} s"
    )
    print(
        f"  proposals {len(p)} (candidates {candidates}, {proposals_rec['nms_path']}), logits "
        f"{float(logits.max()):.3f}..{float(logits.min()):.3f}, "
        f"duplicates {proposals_rec['duplicate_logits']}, "
        f"level cut margins {rec['level_cut_margins']}"
    )
    print(
        f"  box head: {len(det_scores)} detections of {rec['filtered']} filtered ({box_rec['nms_path']}), "
        f"{rec['kept_before_topk']} after NMS, cut margin {rec['topk_cut_margin']}; "
        f"scores {float(det_scores[0]):.4f}..{float(det_scores[-1]):.4f}"
    )
    fill = (probs[:, 0] >= 0.5).float().mean(dim=(1, 2)).numpy()
    print(
        f"  mask probs >= 0.5 per detection: p10/50/90 "
        f"{np.percentile(fill, [10, 50, 90]).round(2).tolist()}, "
        f"empty {int((fill == 0).sum())}, full {int((fill == 1).sum())}"
    )
    hi = int((sc >= 0.5).sum())
    print(
        f"  instances {len(inst)} (kept of {len(det_scores)}), >= 0.5: {hi} of classes "
        f"{sorted(set(inst.pred_classes[inst.scores >= 0.5].tolist()))}, all classes "
        f"{sorted(set(inst.pred_classes.tolist()))}; mask areas {inst_rec['mask_area'][:8]}...; "
        f"paste margin {inst_rec['paste_margin_below_1e-4']}; ties {ties}"
    )
    print(
        f"  sem: {int((hist > 0).sum())} labels, label 0: {int(hist[0])} px; margin < 1e-4: "
        f"{sem_rec['label_margin_below_1e-4']}; stuff candidates (label, area, kept) {candidates_stuff}"
    )
    print(f"  panoptic: {pan_rec['num_things']} thing and {pan_rec['num_stuff']} stuff segments")

    return {
        "photo": photo,
        "original_size": [h0, w0],
        "image_size": image_size,
        "padded_size": padded,
        "resized_bgr": resized_rec,
        "input": input_rec,
        "features": features_rec,
        "proposals": proposals_rec,
        "box_predictor": predictor_rec,
        "box_head": box_rec,
        "mask_probs": mask_rec,
        "instances": inst_rec,
        "sem_seg": sem_rec,
        "panoptic": pan_rec,
    }


def main():
    t0 = time.time()
    torch.set_num_threads(2)
    check_source()
    cfg, model = build()
    check_model(cfg, model)
    spec = load_weights(model)
    t_build = time.time() - t0
    cases = [run_case(model, cfg, photo, n + 1) for n, photo in enumerate(PHOTOS)]
    doc = {
        "generator": "tests/reference/make_panoptic_fpn_fixtures.py",
        "reference": {
            "detectron2": DETECTRON2_COMMIT,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": np.__version__,
            "pillow": PIL.__version__,
        },
        "config": config_of(cfg, model),
        "weights": spec,
        "cases": cases,
    }
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "panoptic_fpn_d2.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    values = sum(int(np.prod(w["shape"])) for w in spec)
    print(f"{len(spec)} tensors, {values} values; build + load {t_build:.1f} s")
    print(f"python {platform.python_version()}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.3f} MB) in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
