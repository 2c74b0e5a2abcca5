#!/usr/bin/env python3
"""Writes plugins/centernet/tests/fixtures/cornernet_small.json: the official CornerNet code
(princeton-vl/CornerNet at commit e5c39a31, "CornerNet: Detecting Objects as Paired
Keypoints"), built SMALL, run on CPU with generated weights on real photos (assets/chelsea.png,
assets/coffee.png) through its official test path: test.py's test() -> nnet/py_factory.py
NetworkFactory (load_params) -> test/coco.py kp_detection -> kp._test -> kp_utils._decode ->
flip un-mirroring, _rescale_dets, soft_nms (external/nms.pyx), max_per_image,
db/coco.py convert_to_coco.

The companion of make_hourglass_fixtures.py (CenterNet's hourglass, small): the same trunk
size, weight generator, summaries, corner margins and JSON conventions. Setup:

    mkdir -p /tmp/cornernet
    git --git-dir=<mirror of princeton-vl/CornerNet>/repo/.git archive e5c39a31 \
        | tar -x -C /tmp/cornernet
    target/venv-torch/bin/pip install cython          # to compile external/nms.pyx
    CORNERNET_REPO=/tmp/cornernet \
        target/venv-torch/bin/python tests/reference/make_cornernet_fixtures.py [out.json]

(CORNERNET_REPO defaults to /tmp/cornernet.) The script compiles external/nms.pyx itself with
the official external/setup.py (`python setup.py build_ext --inplace`, what external/Makefile
runs) in a copy under CORNERNET_NMS_BUILD (default /tmp/cornernet_nms_build/<hash of source,
Python, numpy, Cython>, reused when present) and imports it as `external.nms`. If the git
mirror CORNERNET_GIT_DIR (default /work/.mirror/princeton-vl+CornerNet/repo/.git) exists, every
file of the commit (44) is first checked byte-identical in CORNERNET_REPO, and the tree must
hold no compiled extension. Run by developers, not by CI. One torch thread
(torch.set_num_threads(1)); about 17 s on the 2-core machine used (20 s with the imports, the
float64 run included). Running it twice writes the same file, byte for byte.

Helpers: `generate` is imported from make_maskrcnn_fixtures.py. make_centernet_fixtures.py
cannot be imported here: importing it imports CenterNet's source tree, whose top-level
packages `models`, `utils` and `external` have the names of CornerNet's own (and it needs
/tmp/centernet). Its pure helpers f9, gain, summary, margins (the corner top-K / 3x3-NMS
margins), range_of (BatchNorm ranges) and SAMPLES are therefore executed from its source
(`_load_helpers`: those top-level definitions only, parsed with ast); the code is the same.

Size. CornerNet-104 (models/CornerNet.py model: kp(n 5, nstack 2, dims [256, 256, 384, 384,
384, 512], modules [2, 2, 2, 2, 2, 4], out_dim 80, cnv_dim 256)) has 201.0M parameters (1128
state-dict tensors) and costs 343.2 GMAC per 511 x 511 image (kp._test, meta device; the test
batch is the image and its flip: twice that). The fixture runs the same official classes with
only n, dims, modules and cnv_dim replaced:

    kp(n=2, nstack=2, dims=[256, 64, 96], modules=[1, 1, 2], out_dim=80, cnv_dim=64,
       make_tl_layer=make_tl_layer, make_br_layer=make_br_layer,
       make_pool_layer=make_pool_layer, make_hg_layer=make_hg_layer, kp_layer=residual)

(the other arguments are the ones CornerNet.py's model.__init__ passes to kp.__init__,
recorded by wrapping kp.__init__ while the full model is built on the meta device, and
asserted). dims[0] stays 256 because `pre` (convolution(7, 3, 128, stride 2), residual(3, 128,
256, stride 2)) is hard-coded to 256 channels, and the heads' hidden width is curr_dim =
dims[0] = 256. Two stacks keep the inters / inters_ / cnvs_ merge. 10.98M parameters, 468
state-dict tensors (398 generated, 70 num_batches_tracked); 170.7 GMAC for chelsea (input 383 x
511, batch 2) + 85.4 for coffee (255 x 383) = 256.1 GMAC (config.model_macs, counted with
Conv2d hooks during the run). kp._test runs tl_cnvs / br_cnvs and the six heads only for the
last stack; stack 0's are in the state dict but unused. State-dict names carry the "module."
prefix of NetworkFactory's DummyModule, as the released CornerNet_500000.pkl: e.g.
module.pre.0.conv.weight, module.kps.1.low2.low2.1.conv2.weight, module.tl_cnvs.1.p1_conv1.
conv.weight, module.tl_cnvs.1.p_bn1.running_var, module.tl_heats.1.0.conv.bias,
module.tl_heats.1.1.weight, module.br_regrs.1.1.bias, module.inters_.0.1.weight.

Pipeline (all official code, run by test.py's test(db, "validation", None)): system_configs
from config/CornerNet.json "system" (snapshot_name "CornerNet", as test.py's __main__ sets),
with data_dir / cache_dir / result_dir pointing at a temporary folder; db = MSCOCO(
config "db" section, "minival") -- the real db/coco.py class (DETECTION's defaults updated
with the config: top_k 100, ae_threshold 0.5, nms_kernel 3, test_scales [1], categories 80,
nms_threshold 0.5, nms_algorithm exp_soft_nms, weight_exp 8, merge_bbox False,
max_per_image 100; mean [0.40789654, 0.44719302, 0.47026115], std [0.28863828, 0.27408164,
0.27809835] as float32, BGR; _cat_ids), reading a minimal annotation file (the two photos as
images 1 and 2) and its cache pickle. NetworkFactory builds nnet_module.model(db) (here the
small kp) inside DummyModule / Network / DataParallel (CPU: no device ids), load_params(500000)
reads the generated snapshot from cache_dir/nnet/CornerNet/CornerNet_500000.pkl, eval_mode(),
then kp_detection for each photo:
  - image = cv2.imread (BGR uint8); scale 1: resize to the same size (a copy, asserted);
    inp = (h | 127, w | 127) (chelsea 264 x 397 -> 383 x 511, coffee 240 x 360 -> 255 x 383);
    crop_image(image, [h // 2, w // 2], inp): the photo pasted at the centre of a zero image,
    border = float32 [top, bottom, left, right] of the photo in it (chelsea [59, 323, 57,
    454], coffee [7, 247, 11, 371]), offset [cty - inp_h // 2, ctx - inp_w // 2];
    x = image / 255. (float64), normalize_(x, mean32, std32) in float64, stored into a
    float32 array; batch = [x, x[..., ::-1]] ([2, 3, H, W]: the image and its mirror).
  - out = ((inp + 1) // 4) (chelsea 96 x 128, coffee 64 x 96); ratios = float32 [out_h /
    inp_h, out_w / inp_w] (Python float division, then rounded to float32).
  - kp._test: pre, stack 0 (kps.0, cnvs.0), inters_ / cnvs_ / relu / inters, stack 1 (kps.1,
    cnvs.1), then tl_cnvs.1 / br_cnvs.1 (pool: p1_conv1 / p2_conv1 = convolution(3, cnv_dim,
    128) -> TopPool / LeftPool (tl) or BottomPool / RightPool (br); p_conv1 3x3 (no bias) on
    pool1 + pool2, p_bn1; conv1 1x1 (no bias) on x, bn1; relu(p_bn1 + bn1); conv2 =
    convolution(3, dim, dim)), and heads {tl,br}_{heats,tags,regrs}.1 = Sequential(
    convolution(3, cnv_dim, 256, with_bn=False) (3x3 with bias, ReLU), Conv2d(256, n, 1)).
  - _decode(K 100, kernel 3, ae_threshold 0.5, num_dets 1000) per batch image: sigmoid;
    _nms = heat * (max_pool2d(heat, 3, 1, 1) == heat); topk over the flattened [80 * h * w]
    (class = ind / (h w), y = (ind % hw) / w, x = ind % w: `/` on int64 tensors is float32
    true division in current torch, floor in torch 0.4; identical values here, asserted);
    corners += regr gathered at their index; pair (i, j) of tl i and br j: score (tl_i +
    br_j) / 2 in float32, set to -1 where classes differ, |tl_tag_i - br_tag_j| > 0.5, br_x
    < tl_x or br_y < tl_y; topk(10000 pair scores, 1000); rows [tl_x, tl_y, br_x, br_y,
    score, tl_score, br_score, tl_class] (float32, output pixels). The rows with score -1 come
    last, in an order that depends on torch.topk's tie handling; they are filtered later.
  - the flipped image's rows: x1, x2 = out_w - x2, out_w - x1 (float32); _rescale_dets:
    x /= ratio_w, y /= ratio_h, x -= border_left, y -= border_top, clipped to [0, w] / [0, h]
    (all float32 arrays: a division by float32(out / inp), not a multiplication by its
    inverse); then the rows with score > -1, image 0's then image 1's, in their topk order.
  - per class j = 0..79: rows[:, 0:7] of that class, float32; soft_nms(boxes, Nt=0.5,
    method=2) edits them in place and its returned keep list is ignored (see below);
    top_bboxes[j + 1] = boxes[:, 0:5]. max_per_image: if more than 100 rows in all, thresh =
    np.partition(scores, n - 100)[n - 100] and each class keeps rows with score >= thresh.
  - convert_to_coco: per image, class 1..80, row: bbox[2] -= bbox[0], bbox[3] -= bbox[1]
    (in place, float32), {"image_id", "category_id": _cat_ids[j - 1], "bbox": [float(
    "{:.2f}".format(v))], "score": float("{:.2f}".format(score))}; written to results.json.
soft_nms as compiled (Cython 3.3.1, read in the generated C): for i in range(N) with N
evaluated once (the loop goes on over rows past a decreased N); the max of rows i..N-1 (first
of equal maxima: `maxscore < s`) is swapped with row i -- columns 0..4 only, tl / br scores
(5, 6) stay in place; for each later live row: area = float((x2 - x1 + 1.0) * (y2 - y1 +
1.0)) -- Cython writes the literal 1 as the C double 1.0, so the sums and the product are
double, rounded to float once; iw = float(min(tx2, x2) - max(tx1, x1) + 1.0), ih likewise
(only when iw > 0); when ih > 0: ua = float(double((tx2 - tx1 + 1.0) * (ty2 - ty1 + 1.0)) +
area - float(iw * ih)), ov = float(iw * ih) / ua (float), weight = float(np.exp(float64(
float(-(ov * ov)) / sigma))) (Gaussian, sigma 0.5; Nt is not used by method 2), score =
float(weight * score); a score < float32(0.001) is overwritten by row N-1 (a copy, not a
swap) and N decreases, so the rows past the final N are stale copies (possibly duplicates of
live rows, or a row that fell below the threshold when it was the last one), and
kp_detection keeps them all: they are in top_bboxes, in the max_per_image count and in the
COCO output. soft_nms_trace re-implements this in numpy float32 / float64 and is asserted
equal to the compiled function on every class (it also measures the margins).

Patches (this script only; the CornerNet sources are not edited):
  1. models/py_utils/_cpools/__init__.py imports the compiled modules top_pool, bottom_pool,
     left_pool, right_pool (setup.py's C++ extensions, not built): sys.modules gets modules
     whose forward(input) is a torch port of src/*_pool.cpp's forward loop (output =
     zeros_like(input); the first line in scan order copied; then at::max_out of the input
     line and the previous output line: TopPool = max over the rows at or below, LeftPool =
     columns at or to the right, BottomPool = rows at or above, RightPool = columns at or to
     the left; the same code as make_kernel_fixtures.py's corner_pool, checked against
     cummax). The official Function / Module classes call them.
  2. external/nms.pyx: numpy 2's Cython declarations dropped np.int_t, used by two buffer
     declarations of the unused nms(); they become np.intp_t in the compiled copy. soft_nms
     is compiled verbatim (asserted).
  3. h5py (db/base.py) and matplotlib / matplotlib.pyplot (test.py, test/coco.py) are stubbed
     when not installed: imported, unused at test time.
  4. models.CornerNet.model -> a function returning the small kp (NetworkFactory calls
     nnet_module.model(db)); test.py's NetworkFactory -> a subclass that records the
     instance; torch.nn.Module.cuda and torch.Tensor.cuda -> identity during test() (the
     official nnet.cuda() and x.cuda(non_blocking=True)).
  5. db.evaluate -> a recorder (no ground truth: COCOeval is not run); recorders around
     test.coco's _rescale_dets and soft_nms, db.convert_to_coco (deep copy of top_bboxes
     before it edits the boxes), kp._decode (instance attribute), and forward hooks.
Every recorded stage is re-derived by the script (pre-processing, _decode with its
intermediate values, un-mirroring, rescale, filter, per-class split, soft_nms, max_per_image)
and asserted equal to what the official code did; the loaded model is asserted to hold the
generated tensors.

Weights: make_maskrcnn_fixtures.generate (FNV-1a of the full name, "module." included;
splitmix64; reproduced bit for bit by kernels::weights::generated_tensor) with (a, b) per
tensor in the fixture. BatchNorm2d as the CenterNet fixtures (weight 0.75 +- 0.25, bias and
running_mean +- 0.1, running_var 1 +- 0.5); conv weights a = float32(g sqrt(3 / fan_in)), b 0,
except the heat 1x1 (b = HEAT_WEIGHT_MEAN); the trunk gains of make_hourglass_fixtures.py
(pre 1.7, residual convs 1.35, skips 0.7, cnvs 1.65, inters_ / cnvs_ 0.95).
Tuning (constants after the imports): with the trunk's gains and CenterNet-like heads, one or
two classes (different for tl and br) take every top-100 corner: the heat's class offsets
(bias + the 1x1 weights times the mean head activations) are larger than its spatial
variation, and the tl / br offsets are independent draws, so no pair has one class. A common
positive mean in the heat 1x1 weights (b 0.08: every class gets the same 0.08 x sum of the
head activations) on sparse head activations (3x3 bias -3.03 +- 0.1) makes the positions
common to all classes and leaves the class ranking to the bias (+-0.314, centre -4.38) and the
small random part (gain 0.181); corner pools: branches 1.356, p_conv1 0.401, conv1 1.349, conv2
1.664; head 3x3 convs 1.179; tags: 1x1 gain 0.881, bias +-0.198, 3x3 bias -0.09 +- 0.1; regr
as CenterNet's reg (gain 0.1, bias 0.5 +- 0.2). Chosen by random and local searches (~2000
settings, pools / heads only, on cached trunk outputs) for: valid pairs on every image,
rejections by the tag test and by the geometry, >= 20 results and >= 3 classes per photo,
boxes mostly not degenerate after clipping, no exact ties, the max_per_image cut reached in
one photo, then the largest smallest margin. The trunk's features are twice as strong in the
zero padding of crop_image as in the photo (rms 2.0 vs 1.0 for chelsea), so many chelsea
corners lie in the padding and their boxes are clipped to the photo's edges.
The result (printed by the script; chelsea / coffee; "image" / "flip" are the two batch
images):
  chelsea: features rms 1.60, tl_pool / br_pool rms 1.57 / 1.48; heat logits up to -1.13 /
    -0.74 (corner scores 0.18..0.32); the top-100 corners span 38 / 24 classes (image) and 36
    / 15 (flip); same-class pairs 187 / 171, valid 32 / 71 (rejected by the tag test 7 / 0,
    by the geometry 135 / 100); 103 detections in 8 classes; soft_nms: 1247 decays, 42 rows
    dropped below 0.001 (61 live rows of 103); max_per_image cuts 103 to 100 (thresh 9.67e-4,
    a stale row's score); 100 COCO entries.
  coffee: features rms 1.49; heat logits up to -2.37 / -1.92 (scores 0.07..0.13); 23 / 28 and
    23 / 19 classes; same-class pairs 176 / 164, valid 21 / 46 (tag 0 / 3, geometry 111 /
    79); 67 detections in 7 classes; 171 decays, 8 dropped (59 live); no cut; 67 entries.
  Margins (chelsea / coffee): corner top-100 cut gap 5.0e-5 / 2.4e-5, 3x3-NMS suppression
    gap above the cut 8.9e-6 / 7.9e-6, peak gap 8.9e-6 / 1.3e-5, no plateaus; consecutive
    corner scores 8.9e-7 / 3.2e-7 apart (only the corner order, i.e. the pair indices, depends
    on it); |tag distance - 0.5| >= 0.026 / 0.052; |br_x - tl_x| >= 0.23 / 0.20 and |br_y -
    tl_y| >= 0.20 / 0.19 output pixels; valid pair scores >= 4.8e-6 / 7.5e-6 apart; soft_nms:
    max selections >= 2.5e-5 / 8.7e-5 ahead of the runner-up, decayed scores >= 1.0% / 11%
    away from 0.001, |iw|, |ih| >= 1.0 / 1.29 px; max_per_image: the next score 6.8e-4 below
    thresh; "{:.2f}" boundaries: scores >= 1.9e-5 / 3.3e-6, bbox values >= 2.9e-4 / 3.4e-5
    away.
  Float64: relative errors <= 5.8e-6 (features 5.5e-6, pools 5.8e-6, heat 3.1e-6, tags
    2.0e-6, regr 3.5e-7); its decode has the same corners and the same valid pairs in the
    same order on all four images, scores within 4.5e-7 / 1.7e-7, boxes within 3.8e-6 /
    2.6e-6 output pixels.

JSON: generator; reference (commit, the files of the commit checked, versions, nms build);
config (n, nstack, dims, modules, cnv_dim, out_dim, K, ae_threshold, nms_kernel, num_dets,
test_scales, nms_threshold, nms_algorithm, sigma, threshold, max_per_image, mean, std
(float32 values), model_params, model_macs, full_cornernet_104, patches); coco_category_ids
(class index 0..79 -> COCO id); weights [{name, shape, a, b}] in state-dict order;
not_generated; cases, one per photo: photo, original_size [h, w], input_size, output_size,
border, offset, ratios, macs; summaries (make_centernet_fixtures.summary, channel_axis 0 = the
batch image) of input [2, 3, H, W], features_stack0 (cnvs[0]), features (cnvs[-1]), tl_pool /
br_pool (tl_cnvs[-1] / br_cnvs[-1]), tl_heat / br_heat (logits), tl_tag, br_tag, tl_regr,
br_regr ([2, C, h, w], last stack); decode: per batch image {valid (rows with score > -1),
rows (their 8 values, topk order, output pixels, before un-mirroring), pairs ([tl rank, br
rank] of each row), tl / br {scores, inds (flattened class * h * w + y * w + x), classes} of
the 100 corners}; detections (rows after un-mirroring, _rescale_dets and the > -1 filter, 8
values); results (per non-empty class: class (1-based), category_id, input_rows,
soft_nms_keep (its returned N, unused by kp_detection), after_soft_nms (all rows, 5 values,
stale rows included), rows (after max_per_image)); coco (convert_to_coco's entries); counts;
margins {decode: per image tl_corners / br_corners (make_centernet_fixtures.margins) and pairs
(counts; each decision's margin where it alone decides: |tag distance - 0.5|, |br_x - tl_x|,
|br_y - tl_y|; smallest gap between consecutive valid scores; num_dets cut when > 1000 valid),
soft_nms per class (max_gap: smallest gap between the max and the runner-up of a selection;
threshold_margin: smallest |score - 0.001| / 0.001 after a decay; iw / ih margins: smallest
|iw|, |ih|; decays, dropped), max_per_image (thresh, kept, ties, gap below), coco_rounding
(smallest distance to a "{:.2f}" rounding boundary, in units of 0.01)}; f64_relative_error
(per stored tensor max |f32 - f64| / max(1, |f64|), the model deep-copied and .double()d);
f64_decode (the decode of the float64 outputs: same corners, same valid pairs in the same
order, largest score / box differences).
"""

import ast
import copy
import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
import types
from collections import OrderedDict

import cv2
import numpy as np
import torch
from torch.nn import functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "plugins", "centernet", "tests", "fixtures")
CORNERNET_REPO = os.path.abspath(os.environ.get("CORNERNET_REPO", "/tmp/cornernet"))
CORNERNET_COMMIT = "e5c39a31a8abef5841976c8eab18da86d6ee5f9a"
CORNERNET_GIT_DIR = os.environ.get(
    "CORNERNET_GIT_DIR", "/work/.mirror/princeton-vl+CornerNet/repo/.git")
NMS_BUILD = os.environ.get("CORNERNET_NMS_BUILD", "/tmp/cornernet_nms_build")
PHOTOS = ["chelsea.png", "coffee.png"]
CONFIG = "CornerNet"  # config/CornerNet.json, test.py's cfg_file argument
TEST_SPLIT = "validation"  # test.py's --split default -> system_configs.val_split (minival)
HEAT_BIAS_FILL = -2.19  # kp.__init__: tl_heat[-1].bias.data.fill_(-2.19) (and br)

sys.path.insert(0, HERE)
from make_maskrcnn_fixtures import generate  # noqa: E402  (fnv1a64 + splitmix64 uniform)


def _load_helpers(path: str, names: list) -> types.SimpleNamespace:
    """The pure helpers of a sibling script, executed from its source (only the listed
    top-level functions and constants), without importing the script itself."""
    with open(path) as f:
        tree = ast.parse(f.read())
    body = [node for node in tree.body
            if (isinstance(node, ast.FunctionDef) and node.name in names)
            or (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id in names)]
    found = [n.name if isinstance(n, ast.FunctionDef) else n.targets[0].id for n in body]
    assert sorted(found) == sorted(names), (found, names)
    ns = {"np": np, "torch": torch, "F": F, "math": math}
    exec(compile(ast.Module(body=body, type_ignores=[]), path, "exec"), ns)
    return types.SimpleNamespace(**{k: ns[k] for k in names})


# make_centernet_fixtures.py imports CenterNet's source tree (its top-level `models`, `utils`
# and `external` packages, the names CornerNet's own packages have) when imported, so its
# generic helpers are loaded from its source instead (see the docstring).
cf = _load_helpers(os.path.join(HERE, "make_centernet_fixtures.py"),
                   ["SAMPLES", "f9", "gain", "summary", "margins", "range_of"])
f9, gain, summary, corner_margins = cf.f9, cf.gain, cf.summary, cf.margins

# The small configuration (see the docstring); CornerNet.py's own values in FULL.
SMALL = {"n": 2, "dims": [256, 64, 96], "modules": [1, 1, 2], "cnv_dim": 64}
FULL = {"n": 5, "nstack": 2, "dims": [256, 256, 384, 384, 384, 512],
        "modules": [2, 2, 2, 2, 2, 4], "out_dim": 80, "cnv_dim": 256}

# TUNING: gains g (a = float32(g * sqrt(3 / fan_in)), b = 0) and head biases (a, b).
PRE_GAIN = 1.7  # pre.0.conv.weight (7x7)
RES_GAIN = 1.35  # residual conv1 / conv2 weights (every residual block)
SKIP_GAIN = 0.7  # residual skip.0.weight (1x1)
CNV_GAIN = 1.65  # cnvs.{s}.conv.weight
MERGE_GAIN = 0.95  # inters_.0.0.weight, cnvs_.0.0.weight (1x1)
POOL_BRANCH_GAIN = 1.356  # {tl,br}_cnvs.{s}.p{1,2}_conv1.conv.weight (3x3, cnv_dim -> 128)
POOL_MERGE_GAIN = 0.401  # {tl,br}_cnvs.{s}.p_conv1.weight (3x3, 128 -> cnv_dim, on pool1 + pool2)
POOL_SKIP_GAIN = 1.349  # {tl,br}_cnvs.{s}.conv1.weight (1x1)
POOL_OUT_GAIN = 1.664  # {tl,br}_cnvs.{s}.conv2.conv.weight (3x3)
HEAD_CONV_GAIN = 1.179  # {tl,br}_{heats,tags,regrs}.{s}.0.conv.weight (3x3, cnv_dim -> 256)
HEAT_CONV_BIAS = (0.1, -3.03)  # {tl,br}_heats.{s}.0.conv.bias
TAG_CONV_BIAS = (0.1, -0.09)  # {tl,br}_tags.{s}.0.conv.bias
REGR_CONV_BIAS = (0.1, 0.0)  # {tl,br}_regrs.{s}.0.conv.bias
HEAT_GAIN = 0.181  # {tl,br}_heats.{s}.1.weight (1x1, 256 -> 80)
HEAT_WEIGHT_MEAN = 0.08  # b of {tl,br}_heats.{s}.1.weight
HEAT_BIAS = (0.314, -4.38)  # {tl,br}_heats.{s}.1.bias
TAG_GAIN = 0.881  # {tl,br}_tags.{s}.1.weight (1x1, 256 -> 1)
TAG_BIAS = (0.198, 0.0)  # {tl,br}_tags.{s}.1.bias
REGR_GAIN = 0.1  # {tl,br}_regrs.{s}.1.weight (1x1, 256 -> 2)
REGR_BIAS = (0.2, 0.5)  # {tl,br}_regrs.{s}.1.bias: sub-pixel corner offsets

HEAD_RE = re.compile(r"^(tl|br)_(heats|tags|regrs)\.(\d+)\.(0\.conv|1)\.(weight|bias)$")
POOL_RE = re.compile(r"^(tl|br)_cnvs\.(\d+)\.(p1_conv1\.conv|p2_conv1\.conv|p_conv1|conv1|"
                     r"conv2\.conv)\.weight$")
SOFT_NMS_SIGMA = 0.5  # soft_nms's defaults (kp_detection passes only Nt and method)
SOFT_NMS_THRESHOLD = 0.001

# ---------------------------------------------------------------------------------------
# Stubs and patches (installed before CornerNet is imported).

STUBBED = []


def _stub(name: str, why: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    STUBBED.append(f"{name} ({why})")
    return module


def corner_pool_forward(dim: int, reverse: bool):
    """The forward loop of models/py_utils/_cpools/src/{top,bottom,left,right}_pool.cpp:
    output = zeros_like(input); the first line in scan order is copied; then each line is
    at::max_out(input line, previous output line). top: dim 2 from the last row up (max over
    the rows at or below); left: dim 3 from the last column (columns at or to the right);
    bottom: dim 2 from row 0 down (rows at or above); right: dim 3 from column 0
    (columns at or to the left). Same code as make_kernel_fixtures.py's corner_pool."""

    def forward(input):
        output = torch.zeros_like(input)
        n = input.size(dim)
        order = list(range(n - 1, -1, -1)) if reverse else list(range(n))
        output.select(dim, order[0]).copy_(input.select(dim, order[0]))
        for prev, cur in zip(order, order[1:]):
            torch.maximum(input.select(dim, cur), output.select(dim, prev),
                          out=output.select(dim, cur))
        return [output]

    def backward(input, grad_output):
        raise NotImplementedError("corner pool backward (training only)")

    return forward, backward


POOLS = {"top_pool": (2, True), "left_pool": (3, True), "bottom_pool": (2, False),
         "right_pool": (3, False)}
for _name, (_dim, _reverse) in POOLS.items():
    _fwd, _bwd = corner_pool_forward(_dim, _reverse)
    _stub(_name, "the C++ extension of models/py_utils/_cpools, ported to torch",
          forward=_fwd, backward=_bwd)
for _name in ("h5py", "matplotlib", "matplotlib.pyplot"):
    try:
        importlib.import_module(_name)
    except ImportError:
        _stub(_name, "not installed; imported by db/base.py, test.py, test/coco.py, unused "
              "at test time", use=lambda *a, **k: None)
if "matplotlib.pyplot" in sys.modules and "matplotlib" in sys.modules and \
        not hasattr(sys.modules["matplotlib"], "pyplot"):
    sys.modules["matplotlib"].pyplot = sys.modules["matplotlib.pyplot"]

NMS_PATCH = ("np.ndarray[np.int_t, ndim=1]", "np.ndarray[np.intp_t, ndim=1]")


def build_nms() -> tuple:
    """Compiles external/nms.pyx with Cython as the official Makefile does (`python setup.py
    build_ext --inplace`, the official setup.py) in a copy under NMS_BUILD (cached by the
    hash of the source, Python, numpy and Cython versions). One textual change: numpy 2's
    Cython declarations no longer have `np.int_t`, used by two buffer declarations of the
    (unused) `nms` function; they become np.intp_t. soft_nms is compiled verbatim
    (asserted). Returns (path of the built module, record)."""
    import Cython
    with open(os.path.join(CORNERNET_REPO, "external", "nms.pyx")) as f:
        official = f.read()
    patched = official.replace(*NMS_PATCH)
    assert official.count(NMS_PATCH[0]) == 2
    start = official.index("def soft_nms(")
    end = official.index("def soft_nms_merge(")
    assert official.index("def nms(") < start
    assert patched[patched.index("def soft_nms("):] == official[start:]
    key = hashlib.sha256("\n".join([
        patched, sys.version, np.__version__, Cython.__version__]).encode()).hexdigest()[:16]
    build = os.path.join(NMS_BUILD, key)
    found = [p for p in (os.listdir(build) if os.path.isdir(build) else [])
             if p.startswith("nms.") and p.endswith(".so")]
    if not found:
        tmp = build + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        shutil.copy(os.path.join(CORNERNET_REPO, "external", "setup.py"), tmp)
        with open(os.path.join(tmp, "nms.pyx"), "w") as f:
            f.write(patched)
        subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmp,
                       check=True, capture_output=True)
        shutil.rmtree(build, ignore_errors=True)
        os.rename(tmp, build)
        found = [p for p in os.listdir(build) if p.startswith("nms.") and p.endswith(".so")]
    assert len(found) == 1, found
    return os.path.join(build, found[0]), {
        "source": "external/nms.pyx",
        "build": "python setup.py build_ext --inplace (external/setup.py, Cython "
                 f"{Cython.__version__}, numpy {np.__version__})",
        "change": f"{NMS_PATCH[0]} -> {NMS_PATCH[1]} (2 declarations in nms(), unused; numpy 2 "
                  "removed np.int_t); soft_nms / soft_nms_merge byte-identical",
        "soft_nms_sha256": hashlib.sha256(official[start:end].encode()).hexdigest(),
    }


def check_sources() -> list:
    """Every file of the commit, byte-identical in CORNERNET_REPO; no built extension."""
    if not os.path.isdir(CORNERNET_GIT_DIR):
        print(f"note: no git mirror at {CORNERNET_GIT_DIR}; {CORNERNET_REPO} not verified")
        return []
    git = ["git", f"--git-dir={CORNERNET_GIT_DIR}"]
    listed = subprocess.run(git + ["ls-tree", "-r", "--name-only", CORNERNET_COMMIT],
                            check=True, capture_output=True, text=True).stdout.split()
    for path in listed:
        want = subprocess.run(git + ["show", f"{CORNERNET_COMMIT}:{path}"], check=True,
                              capture_output=True).stdout
        with open(os.path.join(CORNERNET_REPO, path), "rb") as f:
            assert f.read() == want, f"{CORNERNET_REPO}/{path} differs from {CORNERNET_COMMIT}"
    for dirpath, _, files in os.walk(CORNERNET_REPO):
        for name in files:
            assert not name.endswith((".so", ".pyd")), f"built extension {dirpath}/{name}"
    return listed


# CornerNet's imports, from its root, as running `python test.py CornerNet` does.
sys.path.insert(0, CORNERNET_REPO)
_NMS_PATH, NMS_RECORD = build_nms()
import external  # noqa: E402  (CornerNet's external/__init__.py)

_spec = importlib.util.spec_from_file_location("external.nms", _NMS_PATH)
_nms_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_nms_module)
sys.modules["external.nms"] = external.nms = _nms_module

from config import system_configs  # noqa: E402
from db.datasets import datasets  # noqa: E402
from nnet import py_factory  # noqa: E402
import models  # noqa: E402
import models.CornerNet as cornernet_model  # noqa: E402
from models.py_utils import kp as KP  # noqa: E402  (the class; it shadows the submodule)
from models.py_utils import kp_utils  # noqa: E402
from models.py_utils import utils as py_utils_utils  # noqa: E402
import test as cornernet_test_pkg  # noqa: E402
import test.coco as test_coco  # noqa: E402
from utils import crop_image, normalize_  # noqa: E402

_spec = importlib.util.spec_from_file_location("cornernet_test_script",
                                               os.path.join(CORNERNET_REPO, "test.py"))
test_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(test_script)

for _mod in (external, models, cornernet_test_pkg, test_coco, kp_utils, py_factory,
             sys.modules[KP.__module__]):
    assert os.path.abspath(_mod.__file__).startswith(CORNERNET_REPO + os.sep), _mod.__file__
assert test_coco.soft_nms is _nms_module.soft_nms

# ---------------------------------------------------------------------------------------
# Weights.


def range_of(name: str, shape, kind: str) -> tuple:
    """(a, b) of a state-dict tensor (without the "module." prefix): values uniform in
    [b - a, b + a). `kind` is the type of the module that owns it."""
    leaf = name.rsplit(".", 1)[1]
    if kind == "BatchNorm2d":
        return cf.range_of(name, shape, kind)  # the CenterNet fixtures' BN ranges
    assert kind == "Conv2d", (name, kind)
    head = HEAD_RE.match(name)
    if head:
        _, h, _, part, _ = head.groups()
        if part == "0.conv":
            return (gain(HEAD_CONV_GAIN, int(np.prod(shape[1:]))), 0.0) if leaf == "weight" \
                else {"heats": HEAT_CONV_BIAS, "tags": TAG_CONV_BIAS, "regrs": REGR_CONV_BIAS}[h]
        if leaf == "weight":
            g = {"heats": HEAT_GAIN, "tags": TAG_GAIN, "regrs": REGR_GAIN}[h]
            return gain(g, int(np.prod(shape[1:]))), HEAT_WEIGHT_MEAN if h == "heats" else 0.0
        return {"heats": HEAT_BIAS, "tags": TAG_BIAS, "regrs": REGR_BIAS}[h]
    assert leaf == "weight" and len(shape) == 4, name
    fan_in = int(np.prod(shape[1:]))
    pool = POOL_RE.match(name)
    if pool:
        g = {"p1_conv1.conv": POOL_BRANCH_GAIN, "p2_conv1.conv": POOL_BRANCH_GAIN,
             "p_conv1": POOL_MERGE_GAIN, "conv1": POOL_SKIP_GAIN,
             "conv2.conv": POOL_OUT_GAIN}[pool.group(3)]
    elif name == "pre.0.conv.weight":
        g = PRE_GAIN
    elif re.search(r"\.conv[12]\.weight$", name):
        g = RES_GAIN
    elif name.endswith(".skip.0.weight"):
        g = SKIP_GAIN
    elif re.fullmatch(r"cnvs\.\d+\.conv\.weight", name):
        g = CNV_GAIN
    elif re.fullmatch(r"(inters_|cnvs_)\.\d+\.0\.weight", name):
        g = MERGE_GAIN
    else:
        raise ValueError(f"no range for {name} {shape} ({kind})")
    return gain(g, fan_in), 0.0


def generated_state(model) -> tuple:
    """(spec, not_generated, state dict) for a DummyModule-wrapped model."""
    kinds = {}
    for mname, module in model.named_modules():
        for pname, _ in list(module.named_parameters(recurse=False)) + list(
                module.named_buffers(recurse=False)):
            kinds[f"{mname}.{pname}" if mname else pname] = type(module).__name__
    spec, not_generated, state = [], [], OrderedDict()
    for name, t in model.state_dict().items():
        assert name.startswith("module."), name
        shape = list(t.shape)
        if name.endswith("num_batches_tracked"):
            assert t.dtype == torch.int64 and t.item() == 0
            not_generated.append(name)
            state[name] = t.clone()
            continue
        a, b = range_of(name[len("module."):], shape, kinds[name])
        spec.append({"name": name, "shape": shape, "a": a, "b": b})
        state[name] = torch.from_numpy(generate(name, shape, a, b))
    return spec, not_generated, state


# ---------------------------------------------------------------------------------------
# Model structure.


def kp_arguments() -> tuple:
    """The arguments CornerNet.py's model.__init__ passes to kp.__init__ (bound by name),
    recorded by wrapping kp.__init__ while the full model is built on the meta device; plus
    the full model's size."""
    calls = []
    official = KP.__init__
    sig = inspect.signature(official)

    def spy(self, *args, **kwargs):
        calls.append(dict(sig.bind(self, *args, **kwargs).arguments))
        official(self, *args, **kwargs)

    KP.__init__ = spy
    try:
        with torch.device("meta"):
            full = cornernet_model.model(None)
    finally:
        KP.__init__ = official
    assert type(full) is cornernet_model.model and len(calls) == 1
    args = calls[0]
    del args["self"]
    assert sorted(args) == sorted([
        "n", "nstack", "dims", "modules", "out_dim", "cnv_dim", "make_tl_layer",
        "make_br_layer", "make_pool_layer", "make_hg_layer", "kp_layer"]), sorted(args)
    assert {k: args[k] for k in FULL} == FULL
    assert args["make_tl_layer"] is cornernet_model.make_tl_layer
    assert args["make_br_layer"] is cornernet_model.make_br_layer
    assert args["make_pool_layer"] is cornernet_model.make_pool_layer
    assert args["make_hg_layer"] is cornernet_model.make_hg_layer
    assert args["kp_layer"] is py_utils_utils.residual
    macs = count_macs(full, (1, 3, 511, 511))
    info = {
        **FULL,
        "params": sum(p.numel() for p in full.parameters()),
        "state_dict_tensors": len(full.state_dict()),
        "macs_511": macs,
        "macs_note": "Conv2d multiply-accumulates of kp._test for one 511 x 511 image "
                     "(test batch 2 with the flip: twice that); stack-0 corner modules and "
                     "heads are not run by _test",
    }
    return args, info


def count_macs(model, shape) -> int:
    """Conv2d multiply-accumulates of kp._test (the decode skipped) on a meta-device copy."""
    total = [0]

    def hook(m, _inputs, out):
        total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * \
            m.kernel_size[1]

    meta = model if next(model.parameters()).is_meta else copy.deepcopy(model).to("meta")
    meta._decode = lambda *outs, **kwargs: outs
    handles = [m.register_forward_hook(hook) for m in meta.modules()
               if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        meta(torch.empty(*shape, device="meta"))
    for h in handles:
        h.remove()
    return total[0]


def check_structure(model):
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.eps == 1e-5 for m in bns)
    ups = [m for m in model.modules() if isinstance(m, torch.nn.Upsample)]
    assert len(ups) == 4 and all(m.mode == "nearest" and m.scale_factor == 2 for m in ups)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    for s in range(2):
        for corner, pools in (("tl", ("TopPool", "LeftPool")), ("br", ("BottomPool",
                                                                      "RightPool"))):
            p = getattr(model, f"{corner}_cnvs")[s]
            assert (type(p.pool1).__name__, type(p.pool2).__name__) == pools
            for head, n in (("heats", 80), ("tags", 1), ("regrs", 2)):
                seq = getattr(model, f"{corner}_{head}")[s]
                assert isinstance(seq[0], py_utils_utils.convolution)
                assert seq[0].conv.bias is not None and len(list(seq[0].bn.parameters())) == 0
                assert seq[0].conv.out_channels == 256 and seq[1].out_channels == n
                assert seq[1].kernel_size == (1, 1) and seq[1].bias is not None


def check_corner_pools():
    """The ports against their definition (cumulative maxima), on random data."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 7, 9, generator=g)
    flipped = {2: [2], 3: [3]}
    for name, (dim, reverse) in POOLS.items():
        got = sys.modules[name].forward(x)[0]
        if reverse:
            want = torch.flip(torch.cummax(torch.flip(x, flipped[dim]), dim).values, flipped[dim])
        else:
            want = torch.cummax(x, dim).values
        assert torch.equal(got, want), name


# ---------------------------------------------------------------------------------------
# Re-derivations of the official stages (asserted equal to what the official code did),
# keeping what the margins need.


def decode_steps(tl_heat, br_heat, tl_tag, br_tag, tl_regr, br_regr, K, kernel, ae_threshold,
                 num_dets) -> dict:
    """kp_utils._decode's body with its intermediate values (official _nms / _topk /
    _tranpose_and_gather_feat / _gather_feat)."""
    batch, cat, height, width = tl_heat.size()
    tl_sig, br_sig = torch.sigmoid(tl_heat), torch.sigmoid(br_heat)
    tl_k = kp_utils._nms(tl_sig, kernel=kernel)
    br_k = kp_utils._nms(br_sig, kernel=kernel)
    tl_scores, tl_inds, tl_clses, tl_ys, tl_xs = kp_utils._topk(tl_k, K=K)
    br_scores, br_inds, br_clses, br_ys, br_xs = kp_utils._topk(br_k, K=K)
    # `/` on integer tensors: floor division in torch 0.4, true division (float32) here; the
    # same values for these non-negative indices (asserted).
    for heat, inds, clses, ys, xs in ((tl_k, tl_inds, tl_clses, tl_ys, tl_xs),
                                      (br_k, br_inds, br_clses, br_ys, br_xs)):
        raw = torch.topk(heat.view(batch, -1), K).indices
        assert torch.equal(clses, (raw // (height * width)).int())
        assert torch.equal(inds, raw % (height * width))
        assert torch.equal(ys, (inds // width).int().float())
        assert torch.equal(xs, (inds % width).int().float())
    tl_r = kp_utils._tranpose_and_gather_feat(tl_regr, tl_inds).view(batch, K, 1, 2)
    br_r = kp_utils._tranpose_and_gather_feat(br_regr, br_inds).view(batch, 1, K, 2)
    tlx = tl_xs.view(batch, K, 1).expand(batch, K, K) + tl_r[..., 0]
    tly = tl_ys.view(batch, K, 1).expand(batch, K, K) + tl_r[..., 1]
    brx = br_xs.view(batch, 1, K).expand(batch, K, K) + br_r[..., 0]
    bry = br_ys.view(batch, 1, K).expand(batch, K, K) + br_r[..., 1]
    tlt = kp_utils._tranpose_and_gather_feat(tl_tag, tl_inds).view(batch, K, 1)
    brt = kp_utils._tranpose_and_gather_feat(br_tag, br_inds).view(batch, 1, K)
    dists = torch.abs(tlt - brt)
    scores = (tl_scores.view(batch, K, 1).expand(batch, K, K)
              + br_scores.view(batch, 1, K).expand(batch, K, K)) / 2
    same = tl_clses.view(batch, K, 1) == br_clses.view(batch, 1, K)
    tag_ok = ~(dists > ae_threshold)
    w_ok, h_ok = ~(brx < tlx), ~(bry < tly)
    valid = same & tag_ok & w_ok & h_ok
    scores = torch.where(valid, scores, torch.full_like(scores, -1))
    top, inds = torch.topk(scores.view(batch, -1), num_dets)
    return {
        "tl_sig": tl_sig, "br_sig": br_sig,
        "tl": (tl_scores, tl_inds, tl_clses), "br": (br_scores, br_inds, br_clses),
        "tlx": tlx, "tly": tly, "brx": brx, "bry": bry, "dists": dists, "same": same,
        "tag_ok": tag_ok, "w_ok": w_ok, "h_ok": h_ok, "valid": valid, "pair_scores": scores,
        "top": top, "top_inds": inds, "tlt": tlt, "brt": brt,
    }


def decode_margins(st: dict, b: int, K: int, ae_threshold: float, num_dets: int) -> dict:
    """How far the pair decisions of _decode are from flipping, for batch image b."""
    d = st["dists"][b].double()
    dx = (st["brx"][b] - st["tlx"][b]).double()
    dy = (st["bry"][b] - st["tly"][b]).double()
    same, tag_ok, w_ok, h_ok = (st[k][b] for k in ("same", "tag_ok", "w_ok", "h_ok"))
    valid = st["valid"][b]
    scores = st["pair_scores"][b][valid].double().sort(descending=True).values

    def least(values, mask):
        return f9(values[mask].abs().min()) if bool(mask.any()) else None

    out = {
        "same_class_pairs": int(same.sum()),
        "valid_pairs": int(valid.sum()),
        "rejected_by_tag": int((same & w_ok & h_ok & ~tag_ok).sum()),
        "rejected_by_geometry": int((same & tag_ok & ~(w_ok & h_ok)).sum()),
        # each decision, among the same-class pairs where it alone decides
        "tag_min_abs_dist_minus_threshold": least(d - ae_threshold, same & w_ok & h_ok),
        "width_min_abs_br_x_minus_tl_x": least(dx, same & tag_ok & h_ok),
        "height_min_abs_br_y_minus_tl_y": least(dy, same & tag_ok & w_ok),
        "valid_min_consecutive_score_gap": (
            f9((scores[:-1] - scores[1:]).min()) if scores.numel() > 1 else None),
        "valid_min_score": f9(scores.min()) if scores.numel() else None,
        "valid_max_score": f9(scores.max()) if scores.numel() else None,
    }
    if scores.numel() > num_dets:
        out["num_dets_cut_gap"] = f9(scores[num_dets - 1] - scores[num_dets])
    return out


def soft_nms_trace(boxes: np.ndarray, sigma=SOFT_NMS_SIGMA, Nt=0.5,
                   threshold=SOFT_NMS_THRESHOLD, method=2) -> dict:
    """external/nms.pyx soft_nms, line by line in float32 (C float) arithmetic, on a copy;
    returns the result and the margins of its decisions. The weight is np.exp of the
    float32 -(ov * ov) / sigma, in float64, rounded to float32, as the compiled code does."""
    assert method == 2
    b = boxes.copy()
    f32, f64 = np.float32, np.float64
    sigma, threshold = f32(sigma), f32(threshold)
    N = b.shape[0]
    m = {"max_gap": None, "threshold_margin": None, "iw_margin": None, "ih_margin": None,
         "decays": 0, "dropped": 0}

    def upd(key, v):
        v = float(abs(v))
        m[key] = v if m[key] is None else min(m[key], v)

    def fmax(a, c):
        return a if a >= c else c

    def fmin(a, c):
        return a if a <= c else c

    for i in range(b.shape[0]):  # range(N) is evaluated once: the loop goes on past a new N
        maxscore, maxpos = b[i, 4], i
        tx1, ty1, tx2, ty2, ts = b[i, 0], b[i, 1], b[i, 2], b[i, 3], b[i, 4]
        if N - i >= 2:
            cand = np.sort(b[i:N, 4].astype(np.float64))[::-1]
            upd("max_gap", cand[0] - cand[1])
        pos = i + 1
        while pos < N:
            if maxscore < b[pos, 4]:
                maxscore, maxpos = b[pos, 4], pos
            pos += 1
        b[i, 0:5] = b[maxpos, 0:5]
        b[maxpos, 0], b[maxpos, 1], b[maxpos, 2], b[maxpos, 3], b[maxpos, 4] = \
            tx1, ty1, tx2, ty2, ts
        tx1, ty1, tx2, ty2, ts = b[i, 0], b[i, 1], b[i, 2], b[i, 3], b[i, 4]
        pos = i + 1
        while pos < N:
            x1, y1, x2, y2 = b[pos, 0], b[pos, 1], b[pos, 2], b[pos, 3]
            # Cython writes the literal 1 as the C double 1.0: these sums and products are
            # evaluated in double and rounded to float once, on assignment.
            area = f32((f64(x2 - x1) + 1.0) * (f64(y2 - y1) + 1.0))
            iw = f32(f64(fmin(tx2, x2) - fmax(tx1, x1)) + 1.0)
            upd("iw_margin", iw)
            if iw > 0:
                ih = f32(f64(fmin(ty2, y2) - fmax(ty1, y1)) + 1.0)
                upd("ih_margin", ih)
                if ih > 0:
                    ua = f32((f64(tx2 - tx1) + 1.0) * (f64(ty2 - ty1) + 1.0) + f64(area)
                             - f64(iw * ih))
                    ov = iw * ih / ua
                    weight = f32(np.exp(f64(-(ov * ov) / sigma)))
                    b[pos, 4] = weight * b[pos, 4]
                    m["decays"] += 1
                    upd("threshold_margin", (float(b[pos, 4]) - float(threshold))
                        / float(threshold))
                    if b[pos, 4] < threshold:
                        b[pos, 0:5] = b[N - 1, 0:5]
                        N -= 1
                        pos -= 1
                        m["dropped"] += 1
            pos += 1
    return {"boxes": b, "keep": N, "margins": m}


def coco_rounding_margin(values) -> float:
    """Smallest distance (in units of 0.01) of a value to a rounding boundary of "{:.2f}"."""
    v = np.asarray(values, dtype=np.float64) * 100.0
    return float(np.abs(np.abs(v - np.floor(v)) - 0.5).min()) if v.size else None


def rows(a, cols=None) -> list:
    return [[f9(v) for v in (r if cols is None else r[:cols])] for r in np.asarray(a)]


# ---------------------------------------------------------------------------------------


class Recorder:
    """What the official run passes between its stages."""

    def __init__(self):
        self.clear()

    def clear(self):
        self.inputs, self.decode_in, self.decode_out = [], [], []
        self.rescaled, self.soft_nms, self.coco_in, self.coco_out = [], [], [], []
        self.evaluate, self.hooks, self.macs, self.factories = [], [], [], []
        self.models = []


REC = Recorder()
HOOKED = ["cnvs.0", "cnvs.1", "tl_cnvs.1", "br_cnvs.1", "tl_heats.1", "br_heats.1",
          "tl_tags.1", "br_tags.1", "tl_regrs.1", "br_regrs.1"]
KEYS = {"cnvs.0": "features_stack0", "cnvs.1": "features", "tl_cnvs.1": "tl_pool",
        "br_cnvs.1": "br_pool", "tl_heats.1": "tl_heat", "br_heats.1": "br_heat",
        "tl_tags.1": "tl_tag", "br_tags.1": "br_tag", "tl_regrs.1": "tl_regr",
        "br_regrs.1": "br_regr"}


def instrument(model, store: list, macs: list, decode_store: tuple):
    """Forward hooks (cloned outputs, one dict per forward call) and a recording _decode."""
    modules = dict(model.named_modules())

    def pre_hook(_m, args):
        store.append({"input": args[0].clone()})
        macs.append(0)

    model.pre.register_forward_pre_hook(pre_hook)
    for name in HOOKED:
        def hook(_m, _i, out, key=KEYS[name]):
            store[-1][key] = out.clone()
        modules[name].register_forward_hook(hook)

    def conv_hook(m, _inputs, out):
        macs[-1] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * \
            m.kernel_size[1]

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(conv_hook)
    official = kp_utils._decode
    assert model._decode is official
    ins, outs = decode_store

    def decode(*args, **kwargs):
        ins.append(([a.clone() for a in args], dict(kwargs)))
        out = official(*args, **kwargs)
        outs.append(out.clone())
        return out

    model._decode = decode


def run_official(small_args, state, tmp) -> dict:
    """test.py's test() -> NetworkFactory, load_params, test/coco.py kp_detection, with the
    generated snapshot, the stub dataset files and the recorders."""
    with open(os.path.join(CORNERNET_REPO, "config", CONFIG + ".json")) as f:
        configs = json.load(f)
    configs["system"]["snapshot_name"] = CONFIG  # what test.py's __main__ does
    dirs = {k: os.path.join(tmp, k) for k in ("data_dir", "cache_dir", "result_dir")}
    system_configs.update_config({**configs["system"], **dirs})
    split = {"training": system_configs.train_split, "validation": system_configs.val_split,
             "testing": system_configs.test_split}[TEST_SPLIT]
    assert split == "minival" and system_configs.dataset == "MSCOCO"

    # The files MSCOCO.__init__ reads: its cache pickle (detections, image ids) and the
    # annotation file (image ids for convert_to_coco); the photos in its image folder.
    coco_dir = os.path.join(dirs["data_dir"], "coco")
    os.makedirs(os.path.join(coco_dir, "annotations"))
    os.makedirs(os.path.join(coco_dir, "images", "minival2014"))
    os.makedirs(dirs["cache_dir"])
    images = []
    for k, photo in enumerate(PHOTOS):
        shutil.copy(os.path.join(ROOT, "assets", photo),
                    os.path.join(coco_dir, "images", "minival2014", photo))
        h, w = cv2.imread(os.path.join(ROOT, "assets", photo)).shape[:2]
        images.append({"id": k + 1, "file_name": photo, "height": h, "width": w})
    with open(os.path.join(coco_dir, "annotations", "instances_minival2014.json"), "w") as f:
        json.dump({"images": images, "annotations": [], "categories": []}, f)
    with open(os.path.join(dirs["cache_dir"], "coco_minival2014.pkl"), "wb") as f:
        pickle.dump([{p: np.zeros((0, 5), dtype=np.float32) for p in PHOTOS}, list(PHOTOS)], f)
    db = datasets[system_configs.dataset](configs["db"], split)

    # The generated snapshot, where NetworkFactory.load_params(500000) reads it.
    snapshot = system_configs.snapshot_file.format(system_configs.max_iter)
    with open(snapshot, "wb") as f:
        torch.save(state, f)

    def small_model(db_):
        """Replaces models.CornerNet.model (NetworkFactory calls nnet_module.model(db))."""
        model = KP(**small_args)
        REC.models.append(model)
        instrument(model, REC.hooks, REC.macs, (REC.decode_in, REC.decode_out))
        return model

    class RecordingFactory(py_factory.NetworkFactory):
        def __init__(self, db_):
            super().__init__(db_)
            REC.factories.append(self)

    def rescale_rec(detections, ratios, borders, sizes):
        before = detections.copy()
        official_rescale(detections, ratios, borders, sizes)
        REC.rescaled.append({"before": before, "after": detections.copy(),
                             "ratios": ratios.copy(), "borders": borders.copy(),
                             "sizes": sizes.copy()})

    def soft_nms_rec(boxes, **kwargs):
        before = boxes.copy()
        keep = official_soft_nms(boxes, **kwargs)
        REC.soft_nms.append({"before": before, "after": boxes.copy(), "keep": list(keep),
                             "kwargs": dict(kwargs)})
        return keep

    def convert_rec(all_bboxes):
        REC.coco_in.append(copy.deepcopy(all_bboxes))  # convert_to_coco edits the boxes
        out = official_convert(all_bboxes)
        REC.coco_out.append(copy.deepcopy(out))
        return out

    def evaluate_rec(result_json, cls_ids, image_ids, gt_json=None):
        with open(result_json) as f:
            REC.evaluate.append({"json": json.load(f), "cls_ids": cls_ids,
                                 "image_ids": image_ids})

    official_rescale, official_soft_nms = test_coco._rescale_dets, test_coco.soft_nms
    official_convert = db.convert_to_coco
    saved = [(cornernet_model, "model", small_model),
             (test_script, "NetworkFactory", RecordingFactory),
             (test_coco, "_rescale_dets", rescale_rec), (test_coco, "soft_nms", soft_nms_rec),
             (torch.nn.Module, "cuda", lambda self, *a, **k: self),
             (torch.Tensor, "cuda", lambda self, *a, **k: self)]
    saved = [(obj, attr, getattr(obj, attr), new) for obj, attr, new in saved]
    for obj, attr, _, new in saved:
        setattr(obj, attr, new)
    db.convert_to_coco, db.evaluate = convert_rec, evaluate_rec
    try:
        test_script.test(db, TEST_SPLIT, None, False, None)
    finally:
        for obj, attr, old, _ in saved:
            setattr(obj, attr, old)
    return {"db": db, "configs": configs, "snapshot": snapshot, "split": split}


def main(out_path=None, verbose=True, f64=True):
    """Runs everything; writes the fixture to out_path (default: the fixtures folder; False:
    nothing written). Returns the document."""
    t0 = time.time()
    torch.set_num_threads(1)
    listed = check_sources()
    check_corner_pools()
    REC.clear()

    full_args, full_info = kp_arguments()
    small_args = {**full_args, **SMALL}
    probe = py_factory.DummyModule(KP(**small_args))
    for s in range(2):  # kp's fill, overridden by the snapshot
        assert torch.all(probe.module.tl_heats[s][1].bias == np.float32(HEAT_BIAS_FILL))
    spec, not_generated, state = generated_state(probe)
    del probe

    with tempfile.TemporaryDirectory() as tmp:
        run = run_official(small_args, state, tmp)
    db = run["db"]
    assert len(REC.factories) == 1 and len(REC.models) == 1
    nnet = REC.factories[0]
    model = REC.models[0]
    assert type(nnet.model) is py_factory.DummyModule and nnet.model.module is model
    assert not model.training and not nnet.network.training
    assert list(nnet.model.state_dict()) == list(state)
    for name, t in nnet.model.state_dict().items():
        assert torch.equal(t, state[name]), name
    check_structure(model)
    cfg = db.configs
    K, ae_threshold, kernel = cfg["top_k"], cfg["ae_threshold"], cfg["nms_kernel"]
    assert (K, ae_threshold, kernel) == (100, 0.5, 3)
    assert cfg["test_scales"] == [1] and cfg["categories"] == 80 and not cfg["merge_bbox"]
    assert cfg["nms_algorithm"] == "exp_soft_nms" and cfg["nms_threshold"] == 0.5
    assert cfg["max_per_image"] == 100 and cfg["weight_exp"] == 8
    num_dets = inspect.signature(kp_utils._decode).parameters["num_dets"].default
    assert num_dets == 1000
    assert len(REC.hooks) == len(REC.decode_out) == len(REC.rescaled) == len(PHOTOS)
    assert len(REC.soft_nms) == 80 * len(PHOTOS) and len(REC.coco_in) == 1
    cat_ids = list(db._cat_ids)
    assert len(cat_ids) == 80 and db._classes == {j + 1: c for j, c in enumerate(cat_ids)}
    top_bboxes = REC.coco_in[0]
    coco_all = REC.coco_out[0]
    assert REC.evaluate[0]["json"] == coco_all
    assert list(top_bboxes) == PHOTOS

    if f64:
        model64 = copy.deepcopy(model).double()
        for m in model64.modules():  # the copied hooks record into REC
            m._forward_hooks.clear()
            m._forward_pre_hooks.clear()
        model64._decode = kp_utils._decode
        for key, t in list(model64.named_parameters()) + list(model64.named_buffers()):
            assert not t.is_floating_point() or t.dtype == torch.float64, key
        store64, macs64, din64, dout64 = [], [], [], []
        instrument(model64, store64, macs64, (din64, dout64))
    cases, coco_pos = [], 0
    for n, photo in enumerate(PHOTOS):
        rng = np.random.default_rng(n + 1)
        cap = REC.hooks[n]
        images = cap["input"]
        path = os.path.join(ROOT, "assets", photo)
        image = cv2.imread(path)
        h0, w0 = image.shape[:2]
        # The pre-processing, redone (kp_detection's code, scale 1).
        inp_h, inp_w = h0 | 127, w0 | 127
        out_h, out_w = (inp_h + 1) // 4, (inp_w + 1) // 4
        resized = cv2.resize(image, (w0, h0))
        assert np.array_equal(resized, image)
        cropped, border, offset = crop_image(resized, np.array([h0 // 2, w0 // 2]),
                                             [inp_h, inp_w])
        x = cropped / 255.
        normalize_(x, db.mean, db.std)
        want = np.zeros((1, 3, inp_h, inp_w), dtype=np.float32)
        want[0] = x.transpose((2, 0, 1))
        want = np.concatenate((want, want[:, :, :, ::-1]), axis=0)
        assert images.dtype == torch.float32 and torch.equal(images, torch.from_numpy(want))
        ratios = np.array([[out_h / inp_h, out_w / inp_w]], dtype=np.float32)
        resc = REC.rescaled[n]
        assert np.array_equal(resc["ratios"], ratios)
        assert np.array_equal(resc["borders"][0], border)
        assert np.array_equal(resc["sizes"][0], np.array([h0, w0], dtype=np.float32))

        # The decode, re-derived with its intermediate values.
        args, kwargs = REC.decode_in[n]
        assert kwargs == {"ae_threshold": ae_threshold, "K": K, "kernel": kernel}
        names = ["tl_heat", "br_heat", "tl_tag", "br_tag", "tl_regr", "br_regr"]
        for a, key in zip(args, names):
            assert torch.equal(a, cap[key]), key
        assert list(cap["tl_heat"].shape) == [2, 80, out_h, out_w]
        dets = REC.decode_out[n]
        st = decode_steps(*args, K=K, kernel=kernel, ae_threshold=ae_threshold,
                          num_dets=num_dets)
        assert torch.equal(dets[:, :, 4], st["top"])
        decode, m_decode = [], {}
        for b in range(2):
            valid = dets[b, :, 4] > -1
            nv = int(valid.sum())
            assert bool(valid[:nv].all()) and not bool(valid[nv:].any())
            assert nv == int(st["valid"][b].sum())
            pi = st["top_inds"][b, :nv]
            ti, bj = pi // K, pi % K
            box = torch.stack([st["tlx"][b][ti, bj], st["tly"][b][ti, bj],
                               st["brx"][b][ti, bj], st["bry"][b][ti, bj]], 1)
            assert torch.equal(dets[b, :nv, :4], box)
            assert torch.equal(dets[b, :nv, 5], st["tl"][0][b][ti])
            assert torch.equal(dets[b, :nv, 6], st["br"][0][b][bj])
            assert torch.equal(dets[b, :nv, 7], st["tl"][2][b][ti].float())
            assert torch.equal(dets[b, :nv, 7], st["br"][2][b][bj].float())
            decode.append({
                "valid": nv,
                "rows": rows(dets[b, :nv].numpy()),
                "pairs": [[int(i), int(j)] for i, j in zip(ti, bj)],
                "tl": {"scores": [f9(v) for v in st["tl"][0][b]],
                       "inds": [int(v) for v in st["tl"][1][b]],
                       "classes": [int(v) for v in st["tl"][2][b]]},
                "br": {"scores": [f9(v) for v in st["br"][0][b]],
                       "inds": [int(v) for v in st["br"][1][b]],
                       "classes": [int(v) for v in st["br"][2][b]]},
            })
            m_decode[f"image{b}"] = {
                "tl_corners": corner_margins(st["tl_sig"][b], st["tl"][0][b]),
                "br_corners": corner_margins(st["br_sig"][b], st["br"][0][b]),
                "pairs": decode_margins(st, b, K, ae_threshold, num_dets),
            }

        # Flip un-mirroring, _rescale_dets, the > -1 filter (kp_detection's code).
        d = dets.numpy().copy().reshape(2, -1, 8)
        d[1, :, [0, 2]] = out_w - d[1, :, [2, 0]]
        d = d.reshape(1, -1, 8)
        assert np.array_equal(d, resc["before"])
        after = resc["after"][0]
        keep = after[:, 4] > -1
        detections = after[keep]
        assert len(detections) == decode[0]["valid"] + decode[1]["valid"]

        # soft_nms per class, re-traced; max_per_image.
        calls = REC.soft_nms[80 * n: 80 * (n + 1)]
        results, m_nms, all_scores = [], {}, []
        for j in range(80):
            call = calls[j]
            want_in = detections[detections[:, -1] == j][:, 0:7].astype(np.float32)
            assert np.array_equal(call["before"], want_in)
            assert call["kwargs"] == {"Nt": cfg["nms_threshold"], "method": 2}
            tr = soft_nms_trace(call["before"])
            assert np.array_equal(tr["boxes"], call["after"]), j
            assert call["keep"] == list(range(tr["keep"]))
            after_nms = call["after"][:, 0:5]
            all_scores.append(after_nms[:, -1])
            if len(want_in):
                results.append({"class": j + 1, "category_id": cat_ids[j],
                                "input_rows": len(want_in), "soft_nms_keep": tr["keep"],
                                "after_soft_nms": rows(after_nms)})
                m_nms[str(j + 1)] = {**tr["margins"], "rows": len(want_in)}
        scores = np.hstack(all_scores)
        final = top_bboxes[photo]
        m_max = {"scores": int(scores.size)}
        thresh = None
        if scores.size > cfg["max_per_image"]:
            kth = scores.size - cfg["max_per_image"]
            thresh = np.partition(scores, kth)[kth]
            below = scores[scores < thresh]
            m_max.update({
                "thresh": f9(thresh), "kept": int((scores >= thresh).sum()),
                "ties_at_thresh": int((scores == thresh).sum()),
                "gap_below_thresh": f9(float(thresh) - float(below.max())),
            })
        for r in results:
            a = np.asarray(r["after_soft_nms"], dtype=np.float32)
            got = final[r["class"]]
            assert got.dtype == np.float32
            sel = calls[r["class"] - 1]["after"][:, 0:5]
            if thresh is not None:
                sel = sel[sel[:, -1] >= thresh]
            assert np.array_equal(got, sel) and len(a) == len(calls[r["class"] - 1]["after"])
            r["rows"] = rows(got)
        for j in range(1, 81):
            if not any(r["class"] == j for r in results):
                assert final[j].shape == (0, 5)
        n_final = sum(len(r["rows"]) for r in results)
        coco = coco_all[coco_pos: coco_pos + n_final]
        coco_pos += n_final
        assert all(c["image_id"] == n + 1 for c in coco)
        m_coco = {
            "score_2_decimals": coco_rounding_margin(
                [r[4] for res in results for r in res["rows"]]),
        }
        m_coco["bbox_2_decimals"] = coco_rounding_margin(
            [v for res in results for r in final[res["class"]].copy()
             for v in (r[0], r[1], np.float32(r[2] - r[0]), np.float32(r[3] - r[1]))])

        # The float64 run on the same input.
        f64_error, f64_decode = {}, {}
        if f64:
            with torch.no_grad():
                model64(images.double(), ae_threshold=ae_threshold, K=K, kernel=kernel)
            cap64 = store64[-1]
            for key in ["features_stack0", "features", "tl_pool", "br_pool"] + names:
                a, b64 = cap[key], cap64[key]
                assert a.dtype == torch.float32 and b64.dtype == torch.float64, key
                f64_error[key] = f9(((a.double() - b64).abs() / b64.abs().clamp(min=1)).max())
            d64 = dout64[-1]
            st64 = decode_steps(*din64[-1][0], K=K, kernel=kernel, ae_threshold=ae_threshold,
                                num_dets=num_dets)
            for b in range(2):
                nv = decode[b]["valid"]
                corners = {c: [(int(i), int(k)) for i, k in zip(x[1][b], x[2][b])]
                           for c, x in (("tl", st["tl"]), ("br", st["br"]))}
                corners64 = {c: [(int(i), int(k)) for i, k in zip(x[1][b], x[2][b])]
                             for c, x in (("tl", st64["tl"]), ("br", st64["br"]))}
                nv64 = int(st64["valid"][b].sum())

                def pairs(s_, c_, n_):
                    pi = s_["top_inds"][b, :n_]
                    return [(c_["tl"][int(p) // K], c_["br"][int(p) % K]) for p in pi]

                f64_decode[f"image{b}"] = {
                    "same_corner_sets": all(sorted(corners[c]) == sorted(corners64[c])
                                            for c in ("tl", "br")),
                    "same_corner_order": corners == corners64,
                    "same_valid_pairs_in_order": nv64 == nv and
                    pairs(st, corners, nv) == pairs(st64, corners64, nv64),
                    "max_abs_score_diff": f9((d64[b, :nv, 4:7] - dets[b, :nv, 4:7].double())
                                             .abs().max()),
                    "max_abs_box_diff": f9((d64[b, :nv, :4] - dets[b, :nv, :4].double())
                                           .abs().max()),
                }
                assert f64_decode[f"image{b}"]["same_valid_pairs_in_order"], (photo, b)

        per_class = {}
        for r in results:
            per_class[r["class"]] = len(r["rows"])
        case = {
            "photo": photo,
            "read": "cv2.imread(path) (BGR, uint8)",
            "original_size": [h0, w0],
            "input_size": [inp_h, inp_w],
            "output_size": [out_h, out_w],
            "border": [float(v) for v in border],
            "offset": [int(v) for v in offset],
            "ratios": [float(v) for v in ratios[0]],
            "macs": REC.macs[n],
            "input": summary(images, rng),
            "features_stack0": summary(cap["features_stack0"], rng),
            "features": summary(cap["features"], rng),
            "tl_pool": summary(cap["tl_pool"], rng),
            "br_pool": summary(cap["br_pool"], rng),
            **{key: summary(cap[key], rng) for key in names},
            "decode": decode,
            "detections": rows(detections),
            "results": results,
            "coco": [{"image_id": c["image_id"], "category_id": c["category_id"],
                      "bbox": c["bbox"], "score": c["score"]} for c in coco],
            "counts": {"valid_pairs": [decode[0]["valid"], decode[1]["valid"]],
                       "detections": int(len(detections)),
                       "after_soft_nms": int(scores.size),
                       "soft_nms_live": sum(r["soft_nms_keep"] for r in results),
                       "results": n_final, "classes": len(results),
                       "results_per_class": per_class},
            "margins": {"decode": m_decode, "soft_nms": m_nms, "max_per_image": m_max,
                        "coco_rounding": m_coco},
            "f64_relative_error": f64_error,
            "f64_decode": f64_decode,
        }
        cases.append(case)
        if verbose:
            print_case(case, cap)
    assert coco_pos == len(coco_all)

    doc = {
        "generator": "tests/reference/make_cornernet_fixtures.py",
        "reference": {
            "cornernet": CORNERNET_COMMIT,
            "files": listed,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "cv2": cv2.__version__,
            "nms_build": NMS_RECORD,
        },
        "config": config_of(db, run, small_args, full_info, model, num_dets),
        "coco_category_ids": cat_ids,
        "weights": spec,
        "not_generated": [
            {"name": name, "shape": [], "dtype": "int64", "value": 0,
             "why": "BatchNorm2d.num_batches_tracked (training counter, unused at inference)"}
            for name in not_generated
        ],
        "cases": cases,
    }
    if out_path is False:
        return doc
    path = out_path or os.path.join(OUT, "cornernet_small.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"checked {len(listed)} files against {CORNERNET_COMMIT[:8]}; stubs: {STUBBED}")
    print(f"{len(spec)} generated tensors, {sum(int(np.prod(w['shape'])) for w in spec)} values, "
          f"{len(not_generated)} not generated; model {doc['config']['model_params']} params, "
          f"{doc['config']['model_macs'] / 1e9:.1f} GMAC (both photos, flip batches); "
          f"CornerNet-104 {full_info['params']} params, "
          f"{full_info['macs_511'] / 1e9:.1f} GMAC at 511 x 511")
    print(f"wrote {path} ({os.path.getsize(path) / 1e3:.1f} KB) in {time.time() - t0:.1f} s")
    return doc


def print_case(case, cap):
    c = case["counts"]
    lines = [f"{case['photo']}: {case['original_size']} -> input {case['input_size']}, output "
             f"{case['output_size']}, {case['macs'] / 1e9:.1f} GMAC"]
    for key in ("features", "tl_pool", "br_pool"):
        t = cap[key]
        lines.append(f"  {key} rms {t.pow(2).mean().sqrt():.3f} max {t.max():.3f}")
    for key in ("tl_heat", "br_heat", "tl_tag", "br_tag", "tl_regr", "br_regr"):
        t = cap[key]
        lines.append(f"  {key} {t.min():.3f}..{t.max():.3f} (std {t.std():.3f})")
    for b in range(2):
        dec = case["decode"][b]
        for corner in ("tl", "br"):
            cl = dec[corner]["classes"]
            hist = sorted(((cl.count(k), k) for k in set(cl)), reverse=True)
            sc = dec[corner]["scores"]
            lines.append(f"  image{b} {corner}: scores {sc[0]:.4f}..{sc[-1]:.4f}, "
                         f"{len(hist)} classes {[(k, v) for v, k in hist]}")
    lines.append(f"  counts {json.dumps(c)}")
    lines.append(f"  margins {json.dumps(case['margins'])}")
    lines.append(f"  f64 {json.dumps(case['f64_relative_error'])} {json.dumps(case['f64_decode'])}")
    print("\n".join(lines), flush=True)


def config_of(db, run, small_args, full_info, model, num_dets) -> dict:
    cfg = db.configs
    return {
        "config_file": f"config/{CONFIG}.json",
        "split": run["split"],
        "n": small_args["n"],
        "nstack": small_args["nstack"],
        "dims": small_args["dims"],
        "modules": small_args["modules"],
        "cnv_dim": small_args["cnv_dim"],
        "out_dim": small_args["out_dim"],
        "head_dim": small_args["dims"][0],
        "kp_arguments": (
            "models/CornerNet.py model.__init__'s (nstack 2, out_dim 80, make_tl_layer / "
            "make_br_layer (tl_pool / br_pool), make_pool_layer (nn.Sequential()), "
            "make_hg_layer (stride-2 first block), kp_layer residual, the other kp defaults) "
            "with n / dims / modules / cnv_dim replaced"),
        "state_dict_prefix": "module. (nnet/py_factory.py DummyModule, as in the released "
                             "CornerNet_500000.pkl)",
        "upsample": {"mode": "nearest", "scale_factor": 2},
        "model_params": sum(p.numel() for p in model.parameters()),
        "model_state_dict_tensors": len(model.state_dict()),
        "model_macs": int(sum(REC.macs)),
        "model_macs_note": "Conv2d multiply-accumulates of kp._test, both photos, each a "
                           "batch of 2 (image and flip); per photo under cases[].macs",
        "full_cornernet_104": full_info,
        "K": cfg["top_k"],
        "ae_threshold": cfg["ae_threshold"],
        "nms_kernel": cfg["nms_kernel"],
        "num_dets": num_dets,
        "test_scales": cfg["test_scales"],
        "categories": cfg["categories"],
        "nms_threshold": cfg["nms_threshold"],
        "nms_algorithm": cfg["nms_algorithm"],
        "soft_nms_method": 2,
        "sigma": SOFT_NMS_SIGMA,
        "threshold": SOFT_NMS_THRESHOLD,
        "merge_bbox": cfg["merge_bbox"],
        "max_per_image": cfg["max_per_image"],
        "mean": [float(v) for v in db.mean],
        "std": [float(v) for v in db.std],
        "mean_std_dtype": "float32 arrays (db/coco.py), BGR order (cv2 image)",
        "bn_eps": 1e-5,
        "torch_threads": torch.get_num_threads(),
        "patches": [
            "models/py_utils/_cpools: the compiled modules top_pool / bottom_pool / left_pool "
            "/ right_pool (sys.modules) are torch ports of the C++ forward loops; the official "
            "TopPool... Function / Module classes are used",
            "external/nms.pyx compiled with Cython 3 after np.int_t -> np.intp_t in the unused "
            "nms() (numpy 2); soft_nms verbatim",
            "h5py, matplotlib(.pyplot) stubbed when not installed (imported, unused at test)",
            "models.CornerNet.model -> the small kp (NetworkFactory builds nnet_module.model(db))",
            "torch.nn.Module.cuda / torch.Tensor.cuda -> identity during test() (CPU run)",
            "system_configs data_dir / cache_dir / result_dir -> a temporary folder holding the "
            "photos, a minimal instances_minival2014.json, the coco_minival2014.pkl cache and "
            "the generated snapshot nnet/CornerNet/CornerNet_500000.pkl",
            "db.evaluate -> a recorder (no ground truth); recorders around test.coco's "
            "_rescale_dets / soft_nms, db.convert_to_coco (deep copy of its input first), "
            "kp._decode and forward hooks",
        ],
    }


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
