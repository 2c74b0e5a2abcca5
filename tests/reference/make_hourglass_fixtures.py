#!/usr/bin/env python3
"""Writes plugins/centernet/tests/fixtures/centernet_hourglass_small.json: the official CenterNet
code (xingyizhou/CenterNet at commit 4c50fd3a, "Objects as Points") for the `ctdet` task with
its stacked Hourglass (src/lib/models/networks/large_hourglass.py), built SMALL, run on CPU with
generated weights on real photos through the official detector (CtdetDetector.run: cv2
pre-processing, model, ctdet_decode, post-processing).

This is the companion of make_centernet_fixtures.py (the resdcn_18 fixture): the same photos,
options, pre-processing, weight generator, summaries, margins and JSON layout; its patches,
stubs and helpers are imported from it (importing it installs them; its main() is guarded and
does not run). Setup as there:

    mkdir -p /tmp/centernet
    git --git-dir=<mirror of xingyizhou/CenterNet>/repo archive 4c50fd3a | tar -x -C /tmp/centernet
    CENTERNET_REPO=/tmp/centernet \
        target/venv-torch/bin/python tests/reference/make_hourglass_fixtures.py

Run by developers, not by CI (CI reads the committed fixture). One torch thread
(torch.set_num_threads(1)); about 17 s (21 s with the imports; 1.6 GB peak memory), the
float64 run included. Running it twice writes the same file, byte for byte. An optional
argument writes the JSON elsewhere (`... make_hourglass_fixtures.py /tmp/x.json`). As
make_centernet_fixtures.py, it first checks the extracted tree against the git mirror when
there is one.

Size. CenterNet's Hourglass-104 (`HourglassNet`: n 5, two stacks, dims [256, 256, 384, 384,
384, 512], modules [2, 2, 2, 2, 2, 4], cnv_dim 256) has 191.3M parameters (984 state-dict
tensors) and costs 292.7 GMAC (Conv2d multiply-accumulates, stack-0 heads included) at 512 x
512 (counted by this script on the meta device; config.full_hourglass_104): too slow and too
large (765 MB of float32 weights to generate) for the Rust test, which CI runs in a debug build
on two cores. The fixture therefore runs the *same official classes* at a small size:

    exkp(n=2, nstack=2, dims=[256, 64, 96], modules=[1, 1, 2], heads={hm: 80, wh: 2, reg: 2},
         cnv_dim=64, make_tl_layer=None, make_br_layer=None, make_pool_layer=make_pool_layer,
         make_hg_layer=make_hg_layer, kp_layer=residual)

i.e. exactly the arguments HourglassNet.__init__ passes to exkp.__init__ (recorded by wrapping
exkp.__init__ while HourglassNet(heads, 2) is built on the meta device, and asserted) with only
n, dims, modules and cnv_dim replaced. dims[0] stays 256 because `pre` (convolution(7, 3, 128,
stride 2), residual(3, 128, 256, stride 2)) is hard-coded to 256 channels. Every code path of
Hourglass-104 is exercised: two stacks with the inters / inters_ / cnvs_ merge between them,
a recursive kp_module (n 2: an inner kp_module whose low2 is make_layer), residual blocks with
and without a 1x1 skip (width change, stride 2), make_hg_layer's stride-2 first block (the
CenterNet variant: make_pool_layer is nn.Sequential(), no max-pool), make_layer /
make_layer_revr with 1 and 2 modules, nn.Upsample(scale_factor=2) (nearest), MergeUp (up1 +
up2), make_cnv_layer, and make_kp_layer heads (convolution(3, cnv_dim, curr_dim, with_bn=False)
-- a 3x3 conv with bias, no BN, ReLU -- then a 1x1 Conv2d(curr_dim, n)); the full network is
the same code at a larger size. The heads' hidden width is curr_dim = dims[0] = 256
(config.head_conv; opt.head_conv, 64, is not used by the hourglass factory). The small model
has 9.0M parameters (324 state-dict tensors) and costs 105.2 GMAC per photo
(config.model_params / model_macs; the stack-0 heads, computed by exkp.forward but discarded by
process(), are 7.6 of them). Most of that is fixed by dims[0] = 256 at the 128 x 128 level,
which the small size cannot shrink: inters.0 19.3, the two kps.s.up1.0 19.3 each, pre.1 15.0,
the six 64 -> 256 head convs 2.4 each plus the 1x1s (hm 0.34), cnvs 2.4 each, low3's
256-wide conv2 at 64 x 64 2.4 each; everything below the top level is < 3 GMAC in all.

Pipeline, all official code (src/demo.py's path, minus its debug >= 1):
    opt = opts().init(["ctdet", "--arch", "hourglass", "--gpus", "-1"])
    models.model._model_factory["hourglass"] = <the small exkp above>      (the one patch added)
    opt.load_model = <temporary checkpoint {"epoch": 0, "state_dict": generated tensors}>
    detector = detector_factory["ctdet"](opt)      # CtdetDetector: create_model, load_model
    ret = detector.run("assets/<photo>")
create_model("hourglass", heads, head_conv) looks the factory up in models.model's
_model_factory dict at call time, so replacing that entry (get_large_hourglass_net, which
returns HourglassNet(heads, 2)) makes the official create_model / load_model / eval() build
and load the small model; the official load_model then finds every checkpoint key in the model
with the same shape (no "Drop parameter" / "No param" messages). The script load_state_dict(
strict=True)s the tensors again and asserts that every tensor of the model equals the generated
one. Options: opts.py's defaults, asserted (as the resdcn fixture, with arch hourglass): heads
{hm: 80, wh: 2, reg: 2}, num_stacks 2, K 100, fix_res, 512 x 512 input, down_ratio 4 (128 x 128
output: pre is stride 4), test_scales [1], flip_test off, nms off, debug 0, mean / std of the
demo (ctdet default dataset info, BGR). opt.pad is 127 for hourglass but only used with
keep_res. cv2.ipp.setUseIPP(False) as there (OpenCV's own warpAffine kernel). The
pre-processing, ctdet_decode, post-processing and merge_outputs are described in
make_centernet_fixtures.py; the photos give the same warped images and inputs as in that
fixture (same hashes).

Model (large_hourglass.py, all BatchNorm2d eps 1e-5, eval mode):
  pre: convolution(7, 3, 128, stride 2) (conv no bias, BN, ReLU) then residual(3, 128, 256,
    stride 2): [256, 128, 128].
  residual(k, inp, out, stride): relu(bn2(conv2(relu(bn1(conv1(x))))) + skip(x)); conv1 3x3
    stride `stride`, conv2 3x3, both without bias; skip = Sequential(Conv2d 1x1 stride
    `stride`, no bias; BN) when stride != 1 or inp != out, else the identity (empty
    Sequential: no tensors).
  kps.{s} = kp_module(n, dims, modules): up1 = make_layer(3, d0, d0, m0) (m0 residuals at
    d0); max1 = nn.Sequential() (identity); low1 = make_hg_layer(3, d0, d1, m0) (residual(d0
    -> d1, stride 2), then m0 - 1 residuals at d1); low2 = kp_module(n - 1, dims[1:],
    modules[1:]) if n > 1 else make_layer(3, d1, d1, m1) (m1 residuals); low3 =
    make_layer_revr(3, d1, d0, m0) (m0 - 1 residuals at d1, then residual(d1 -> d0)); up2 =
    nn.Upsample(scale_factor=2) (mode "nearest"); merge = up1 + up2. Here: kps.s.up1.0
    (256 -> 256), kps.s.low1.0 (256 -> 64, /2: 64 x 64), kps.s.low2.up1.0 (64 -> 64),
    kps.s.low2.low1.0 (64 -> 96, /2: 32 x 32), kps.s.low2.low2.{0,1} (96 -> 96),
    kps.s.low2.low3.0 (96 -> 64), upsample to 64 x 64 + up1, kps.s.low3.0 (64 -> 256),
    upsample to 128 x 128 + up1.
  cnvs.{s} = convolution(3, 256, cnv_dim): [64, 128, 128] ("features" of the last stack).
  Between stacks (s < nstack - 1): inter = inters.s(relu(inters_.s(inter) + cnvs_.s(cnv))),
    inters_.s / cnvs_.s = Sequential(Conv2d 1x1 no bias (256 -> 256 / cnv_dim -> 256), BN),
    inters.s = residual(3, 256, 256).
  Heads, every stack (ModuleList per head, registered hm, wh, reg): {head}.{s} =
    Sequential(convolution(3, cnv_dim, 256, with_bn=False) (Conv2d with bias, bn an empty
    Sequential, ReLU), Conv2d(256, n, 1) with bias); exkp fills hm.{s}.1.bias with -2.19, which
    the checkpoint overrides. forward returns [{hm, wh, reg} of each stack]; process() takes
    [-1], the last stack. The stack-0 heads are computed and discarded; nothing else reads
    them (the merge uses cnv, not the head outputs), so a port may skip them. The Rust side's
    head names (plugins/centernet/src/model.rs HeadNames::Hourglass: "{head}.{stack}.0.conv"
    and "{head}.{stack}.1", last stack) match the state dict's ("hm.1.0.conv.weight",
    "hm.1.0.conv.bias", "hm.1.1.weight", "hm.1.1.bias", ...).

State-dict names (324 tensors, 274 generated; {s} = stack 0 / 1; BN = .weight, .bias, .running_mean,
.running_var, .num_batches_tracked; a residual R = .conv1.weight, .bn1.<BN>, .conv2.weight,
.bn2.<BN> and, with a skip, .skip.0.weight, .skip.1.<BN>):
  pre.0.conv.weight, pre.0.bn.<BN>, pre.1.<R with skip>;
  kps.{s}.up1.0.<R>, kps.{s}.low1.0.<R skip>, kps.{s}.low2.up1.0.<R>,
  kps.{s}.low2.low1.0.<R skip>, kps.{s}.low2.low2.{0,1}.<R>, kps.{s}.low2.low3.0.<R skip>,
  kps.{s}.low3.0.<R skip>;
  cnvs.{s}.conv.weight, cnvs.{s}.bn.<BN>; inters.0.<R>; inters_.0.0.weight, inters_.0.1.<BN>;
  cnvs_.0.0.weight, cnvs_.0.1.<BN>;
  {hm,wh,reg}.{s}.0.conv.{weight,bias} ([256, 64, 3, 3], [256]),
  {hm,wh,reg}.{s}.1.{weight,bias} ([n, 256, 1, 1], [n]).
(HourglassNet's own state dict has the same names, nested deeper: kps.{s}.low2.low2.low2...)

Weights: every floating tensor generated from its name by make_maskrcnn_fixtures.generate
(reproduced bit for bit by kernels::weights::generated_tensor; see make_centernet_fixtures.py),
with (a, b) per tensor in the fixture; the `*.num_batches_tracked` buffers keep 0 and are listed
under not_generated. Ranges (`range_of`): BatchNorm2d as the resdcn fixture (weight 0.75 +-
0.25, bias and running_mean +- 0.1, running_var 1 +- 0.5); conv weights a = float32(g *
sqrt(3 / fan_in)) (unit-variance gain g), every bias +- 0.1 except the heads' last ones (hm
-2.19 +- 0.5, the official fill as centre; wh 12 +- 4 output pixels; reg 0.5 +- 0.2, as the
resdcn fixture). The gains (constants after the imports, "TUNING") were picked by measuring:
with unit gains the activations shrink to the BN biases' size and one class takes all 100
detections; with 1.6 everywhere they grow through the identity skips and MergeUps (features
rms 5.7, hm logits +-28: every score 1.0, plateaus). A random search over the seven gains
(~370 settings, float32 runs only) kept those with >= 4 classes per photo and the largest
smallest margin (min of top100_cut_gap, min_consecutive_gap_top100, top100_min_peak_gap,
nms_min_suppression_gap_above_cut over both photos): pre.0 1.7, residual conv1 / conv2 1.35,
residual skip 0.7, cnvs 1.65, inters_ / cnvs_ 0.95, head 3x3 convs 1.7, hm 1x1 0.7 (wh 1x1 2,
reg 1x1 0.1 as the resdcn fixture). Neighbouring settings have smallest margins of 1e-6 to
1e-5: the exact values matter only through these draws. The result (printed by the script):
  chelsea: features rms 0.95 (max 7.2), hm logits -5.2..0.73, scores 0.675..0.579, 6 classes
    (0-based: 21 bear 57, 27 tie 35, 12 parking meter 4, 18 sheep 2, 48 sandwich 1, 57 couch
    1), 30 peaks on rows 22..105 (inside the photo; the others in the black bars or on their
    edge rows, as in the resdcn fixture); wh 9.8..22.0, reg 0.31..0.76;
  coffee: features rms 1.16, hm logits -5.3..1.4, scores 0.803..0.678, 4 classes (21: 79,
    27: 9, 18: 7, 57: 5), 98 peaks inside the photo; wh 9.9..22.6, reg 0.27..0.78.
  Margins (chelsea / coffee): top100_cut_gap 1.0e-3 / 1.3e-4; min_consecutive_gap_top100
    1.3e-5 / 1.5e-5; nms_near_ties_1e-6 225 / 154 of 1.3M, none at or above the 101st score;
    534 / 269 values above it suppressed, the nearest 1.7e-5 / 5.3e-5 below its 3x3 max;
    top100_min_peak_gap 1.4e-4 / 5.3e-5; no plateaus.

Conditioning (the float64 check): the model is deep-copied and .double()d, run on the same
input; per stored tensor "f64_relative_error" = max |f32 - f64| / max(1, |f64|) (chelsea /
coffee: features_stack0 3.6e-6 / 4.1e-6, features 4.2e-6 / 4.0e-6, hm 3.7e-6 / 3.1e-6, wh
5.2e-7 / 4.3e-7, reg 3.3e-7 / 3.4e-7, heat 8.9e-7 / 7.6e-7); the decode is re-run on its
outputs ("f64_decode"): the same 100 (index, class) pairs in the same order, scores within
5.6e-7 / 5.9e-7 (23x / 25x below the smallest consecutive gap), boxes within 8.2e-6 / 9.2e-6
output pixels.

JSON: the layout of centernet_resdcn18.json (so one Rust test reads both), with the trunk's
summaries replaced: generator; reference; config (as there, plus n, nstack, dims, modules,
cnv_dim, head_conv 256, head_names "hourglass", upsample, model_params / model_macs,
full_hourglass_104, factory_patch); coco_valid_ids; class_names; weights [{name, shape, a, b}]
in state_dict order; not_generated; cases, one per photo: photo, read, original_size, c, s,
trans_input, trans_output_inv, out_size, warped {shape, layout, sha256, fnv1a64, png_base64,
float32_formula_differing_bytes}, summaries (make_centernet_fixtures.summary) input
([3, 512, 512]), features (the last stack's cnv, the input of its heads: output of
model.cnvs[-1], [64, 128, 128]), features_stack0 (model.cnvs[0]'s output, to localise a
mismatch), hm (raw logits, [80, 128, 128]), wh, reg ([2, 128, 128]) of the last stack; decode
(ctdet_decode's 100: score, class, index, x, y, box), results (merge_outputs: class, label,
category_id, box, score), margins, f64_relative_error, f64_decode.
"""

import base64
import copy
import hashlib
import inspect
import json
import os
import re
import sys
import tempfile
import time

import cv2
import numpy as np
import torch
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# Installs the patches and stubs (DCNv2 backend, torch.cuda.synchronize, progress /
# matplotlib stubs) and puts CenterNet's src/ and src/lib on sys.path.
import make_centernet_fixtures as cf  # noqa: E402
from make_centernet_fixtures import (  # noqa: E402
    CENTERNET_COMMIT,
    coco_ids_and_names,
    f9,
    fnv1a64_bytes,
    gain,
    generate,
    margins,
    summary,
    warp_affine_float32,
)

from opts import opts  # noqa: E402
from detectors.detector_factory import detector_factory  # noqa: E402
from models import model as cn_model  # noqa: E402
from models.decode import _nms, _topk, ctdet_decode  # noqa: E402
from models.model import create_model  # noqa: E402
from models.networks import large_hourglass as lh  # noqa: E402
from utils.image import get_affine_transform  # noqa: E402

OUT = cf.OUT
ARGS = ["ctdet", "--arch", "hourglass", "--gpus", "-1"]
PHOTOS = cf.PHOTOS
HM_BIAS_FILL = -2.19  # exkp: heat[-1].bias.data.fill_(-2.19)

# The small configuration (see the docstring); HourglassNet's own values in FULL.
SMALL = {"n": 2, "dims": [256, 64, 96], "modules": [1, 1, 2], "cnv_dim": 64}
FULL = {"n": 5, "dims": [256, 256, 384, 384, 384, 512], "modules": [2, 2, 2, 2, 2, 4],
        "cnv_dim": 256}

# TUNING: gains g (a = float32(g * sqrt(3 / fan_in)), b = 0) and head biases (a, b).
PRE_GAIN = 1.7  # pre.0.conv.weight (7x7)
RES_GAIN = 1.35  # residual conv1 / conv2 weights (every residual block)
SKIP_GAIN = 0.7  # residual skip.0.weight (1x1)
CNV_GAIN = 1.65  # cnvs.{s}.conv.weight
MERGE_GAIN = 0.95  # inters_.0.0.weight, cnvs_.0.0.weight (1x1)
HEAD_CONV_GAIN = 1.7  # {hm,wh,reg}.{s}.0.conv.weight
HM_GAIN = 0.7  # hm.{s}.1.weight
HM_BIAS = (0.5, HM_BIAS_FILL)  # hm.{s}.1.bias
WH_GAIN = 2.0  # wh.{s}.1.weight
WH_BIAS = (4.0, 12.0)  # wh.{s}.1.bias: box sizes in output (stride 4) pixels
REG_GAIN = 0.1  # reg.{s}.1.weight
REG_BIAS = (0.2, 0.5)  # reg.{s}.1.bias: sub-pixel centre offsets

HEAD_RE = re.compile(r"^(hm|wh|reg)\.(\d+)\.(0\.conv|1)\.(weight|bias)$")


def range_of(name: str, shape, kind: str) -> tuple:
    """(a, b) of a state-dict tensor: values uniform in [b - a, b + a). `kind` is the type of
    the module that owns it."""
    leaf = name.rsplit(".", 1)[1]
    if kind == "BatchNorm2d":
        return cf.range_of(name, shape, kind)  # the resdcn fixture's BN ranges
    assert kind == "Conv2d", (name, kind)
    head = HEAD_RE.match(name)
    if head:
        h, _, part, _ = head.groups()
        if part == "0.conv":
            return (gain(HEAD_CONV_GAIN, int(np.prod(shape[1:]))), 0.0) if leaf == "weight" \
                else (0.1, 0.0)
        if leaf == "weight":
            g = {"hm": HM_GAIN, "wh": WH_GAIN, "reg": REG_GAIN}[h]
            return gain(g, int(np.prod(shape[1:]))), 0.0
        return {"hm": HM_BIAS, "wh": WH_BIAS, "reg": REG_BIAS}[h]
    assert leaf == "weight" and len(shape) == 4, name
    fan_in = int(np.prod(shape[1:]))
    if name == "pre.0.conv.weight":
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


def hourglass_net_arguments(heads) -> dict:
    """The arguments HourglassNet.__init__ passes to exkp.__init__ (bound by name), recorded by
    wrapping exkp.__init__ while get_large_hourglass_net builds Hourglass-104 on the meta
    device (no memory, no initialisation cost); plus the full model's size."""
    calls = []
    official = lh.exkp.__init__
    sig = inspect.signature(official)

    def spy(self, *args, **kwargs):
        calls.append(dict(sig.bind(self, *args, **kwargs).arguments))
        official(self, *args, **kwargs)

    lh.exkp.__init__ = spy
    try:
        with torch.device("meta"):
            full = lh.get_large_hourglass_net(0, heads, 64)
    finally:
        lh.exkp.__init__ = official
    assert type(full) is lh.HourglassNet and len(calls) == 1
    args = calls[0]
    del args["self"]
    assert sorted(args) == sorted([
        "n", "nstack", "dims", "modules", "heads", "cnv_dim", "make_tl_layer", "make_br_layer",
        "make_pool_layer", "make_hg_layer", "kp_layer"]), sorted(args)
    assert {k: args[k] for k in FULL} == FULL and args["nstack"] == 2
    assert args["make_pool_layer"] is lh.make_pool_layer
    assert args["make_hg_layer"] is lh.make_hg_layer and args["kp_layer"] is lh.residual
    assert args["make_tl_layer"] is None and args["make_br_layer"] is None
    info = {
        **FULL,
        "nstack": 2,
        "params": sum(p.numel() for p in full.parameters()),
        "state_dict_tensors": len(full.state_dict()),
        "macs_512": count_macs(full),
    }
    return args, info


def count_macs(model) -> int:
    """Multiply-accumulates of the Conv2d layers for one 512 x 512 input (heads of every
    stack included), measured on a meta-device copy."""
    total = [0]

    def hook(m, _inputs, out):
        total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * \
            m.kernel_size[1]

    meta = model if next(model.parameters()).is_meta else copy.deepcopy(model).to("meta")
    handles = [m.register_forward_hook(hook) for m in meta.modules()
               if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        meta(torch.empty(1, 3, 512, 512, device="meta"))
    for h in handles:
        h.remove()
    return total[0]


def build_opt():
    opt = opts().init(ARGS)
    assert opt.gpus == [-1] and opt.task == "ctdet" and opt.arch == "hourglass"
    assert opt.num_stacks == 2 and opt.pad == 127 and opt.head_conv == 64
    assert opt.heads == {"hm": 80, "wh": 2, "reg": 2} and list(opt.heads) == ["hm", "wh", "reg"]
    assert opt.fix_res and opt.input_h == opt.input_w == 512 and opt.down_ratio == 4
    assert opt.K == 100 and opt.reg_offset and not opt.flip_test and not opt.cat_spec_wh
    assert opt.test_scales == [1.0] and not opt.nms and opt.debug == 0
    return opt


def config_of(opt, detector, small_args, full_info, model) -> dict:
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "args": ARGS,
        "task": opt.task,
        "arch": opt.arch,
        "heads": dict(opt.heads),
        "n": small_args["n"],
        "nstack": small_args["nstack"],
        "dims": small_args["dims"],
        "modules": small_args["modules"],
        "cnv_dim": small_args["cnv_dim"],
        "head_conv": small_args["dims"][0],
        "opt_head_conv": opt.head_conv,
        "head_names": "hourglass",
        "heads_used": "last stack (process: self.model(images)[-1])",
        "exkp_arguments": (
            "HourglassNet.__init__'s (make_tl_layer None, make_br_layer None, make_pool_layer "
            "make_pool_layer (nn.Sequential()), make_hg_layer make_hg_layer (stride-2 first "
            "block), kp_layer residual; the other exkp defaults) with n / dims / modules / "
            "cnv_dim replaced"),
        "factory_patch": (
            "models.model._model_factory['hourglass'] = the small exkp (instead of "
            "get_large_hourglass_net -> HourglassNet(heads, 2))"),
        "upsample": {"mode": "nearest", "scale_factor": 2},
        "pool": "none (make_pool_layer returns nn.Sequential())",
        "model_params": n_params,
        "model_state_dict_tensors": len(model.state_dict()),
        "model_macs": count_macs(model),
        "full_hourglass_104": full_info,
        "num_classes": opt.num_classes,
        "K": opt.K,
        "max_per_image": detector.max_per_image,
        "input_h": opt.input_h,
        "input_w": opt.input_w,
        "fix_res": opt.fix_res,
        "down_ratio": opt.down_ratio,
        "output_h": opt.output_h,
        "output_w": opt.output_w,
        "mean": [float(x) for x in opt.mean],
        "std": [float(x) for x in opt.std],
        "mean_float32": [float(x) for x in detector.mean.reshape(-1)],
        "std_float32": [float(x) for x in detector.std.reshape(-1)],
        "mean_std_channel_order": "BGR (the cv2.imread image)",
        "mean_std_dtype": "float32 (np.array(opt.mean, dtype=np.float32) in BaseDetector)",
        "reg_offset": opt.reg_offset,
        "flip_test": opt.flip_test,
        "cat_spec_wh": opt.cat_spec_wh,
        "test_scales": opt.test_scales,
        "nms": opt.nms,
        "nms_kernel": 3,
        "bn_eps": 1e-5,
    }


def main(out_path=None, verbose=True):
    """Runs everything; writes the fixture to out_path (default: the fixtures folder; False:
    nothing written). Returns the document."""
    t0 = time.time()
    torch.set_num_threads(1)
    cv2.ipp.setUseIPP(False)  # OpenCV's own warpAffine kernel, as the resdcn fixture
    checked = cf.check_sources()
    opt = build_opt()
    valid_ids, class_names = coco_ids_and_names()

    full_args, full_info = hourglass_net_arguments(opt.heads)
    small_args = {**full_args, **SMALL, "heads": dict(opt.heads)}
    factory_calls = []

    def small_hourglass(num_layers, heads, head_conv):
        """Replaces get_large_hourglass_net in models.model._model_factory."""
        factory_calls.append((num_layers, dict(heads), head_conv))
        return lh.exkp(**{**small_args, "heads": heads})

    cn_model._model_factory["hourglass"] = small_hourglass

    # The generated checkpoint, in the format CenterNet's load_model reads.
    probe = create_model(opt.arch, opt.heads, opt.head_conv)
    kinds = {}
    for mname, module in probe.named_modules():
        for pname, _ in list(module.named_parameters(recurse=False)) + list(
            module.named_buffers(recurse=False)
        ):
            kinds[f"{mname}.{pname}" if mname else pname] = type(module).__name__
    spec, not_generated, state = [], [], {}
    for name, t in probe.state_dict().items():
        shape = list(t.shape)
        if name.endswith("num_batches_tracked"):
            assert t.dtype == torch.int64 and t.item() == 0
            not_generated.append(name)
            state[name] = t.clone()
            continue
        a, b = range_of(name, shape, kinds[name])
        spec.append({"name": name, "shape": shape, "a": a, "b": b})
        state[name] = torch.from_numpy(generate(name, shape, a, b))
    for s in range(2):  # exkp's fill, overridden by the checkpoint
        assert torch.all(probe.hm[s][1].bias == np.float32(HM_BIAS_FILL))
    del probe
    with tempfile.TemporaryDirectory() as tmp:
        opt.load_model = os.path.join(tmp, "model_generated.pth")
        torch.save({"epoch": 0, "state_dict": state}, opt.load_model)
        detector = detector_factory[opt.task](opt)
    model = detector.model
    assert type(model) is lh.exkp and factory_calls == [(0, opt.heads, 64)] * 2
    assert opt.device == torch.device("cpu") and not model.training
    missing, unexpected = model.load_state_dict(state, strict=True)
    assert not missing and not unexpected
    for name, t in model.state_dict().items():
        assert torch.equal(t, state[name]), name

    # Structure checks (cheap facts the docstring states).
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.eps == 1e-5 for m in bns)
    ups = [m for m in model.modules() if isinstance(m, torch.nn.Upsample)]
    assert len(ups) == 4 and all(m.mode == "nearest" and m.scale_factor == 2 for m in ups)
    for head in opt.heads:
        for s in range(2):
            seq = getattr(model, head)[s]
            assert isinstance(seq[0], lh.convolution) and seq[0].conv.bias is not None
            assert len(list(seq[0].bn.parameters())) == 0 and seq[0].conv.out_channels == 256
            assert isinstance(seq[1], torch.nn.Conv2d) and seq[1].kernel_size == (1, 1)
    head_keys = [k for k in model.state_dict() if HEAD_RE.match(k)]
    assert head_keys == [f"{h}.{s}.{p}.{leaf}" for h in opt.heads for s in range(2)
                         for p in ("0.conv", "1") for leaf in ("weight", "bias")]

    model64 = copy.deepcopy(model).double()
    for key, t in list(model64.named_parameters()) + list(model64.named_buffers()):
        assert not t.is_floating_point() or t.dtype == torch.float64, key

    def keep_outputs(m, store):
        def keep(key):
            def hook(_module, _inputs, output):
                store[key] = output.clone()  # clone: ReLU(inplace) / hm.sigmoid_() follow

            return hook

        m.cnvs[-1].register_forward_hook(keep("features"))
        m.cnvs[0].register_forward_hook(keep("features_stack0"))
        for head in ("hm", "wh", "reg"):
            getattr(m, head)[-1].register_forward_hook(keep(head))

    captured, captured64 = {}, {}
    keep_outputs(model, captured)
    keep_outputs(model64, captured64)

    # Record what run() passes between the official stages.
    rec = {}
    pre_process, process, post_process = (
        detector.pre_process, detector.process, detector.post_process)

    def pre_process_rec(image, scale, meta=None):
        rec["image"] = image
        images, meta = pre_process(image, scale, meta)
        rec["images"], rec["meta"] = images.clone(), meta
        return images, meta

    def process_rec(images, return_time=False):
        output, dets, forward_time = process(images, return_time=True)
        rec["output"] = output
        rec["heat"], rec["dets"] = output["hm"].clone(), dets.clone()
        return (output, dets, forward_time) if return_time else (output, dets)

    def post_process_rec(dets, meta, scale=1):
        out = post_process(dets, meta, scale)
        rec["post"] = {k: v.copy() for k, v in out.items()}
        return out

    detector.pre_process = pre_process_rec
    detector.process = process_rec
    detector.post_process = post_process_rec

    cases = []
    for n, photo in enumerate(PHOTOS):
        rng = np.random.default_rng(n + 1)
        path = os.path.join(cf.ROOT, "assets", photo)
        rec.clear()
        captured.clear()
        ret = detector.run(path)
        results = ret["results"]
        image = rec["image"]
        h0, w0 = image.shape[:2]
        assert image.dtype == np.uint8 and image.shape[2] == 3
        assert np.array_equal(image, cv2.imread(path))
        # process() used the last stack's outputs: the tensors the hooks saw.
        assert torch.equal(rec["output"]["wh"], captured["wh"])
        assert torch.equal(rec["output"]["reg"], captured["reg"])

        # The pre-processing, redone step by step to keep the warped uint8 image.
        meta = rec["meta"]
        c = np.array([w0 / 2.0, h0 / 2.0], dtype=np.float32)
        s = max(h0, w0) * 1.0
        assert np.array_equal(meta["c"], c) and meta["s"] == s
        assert meta["out_height"] == meta["out_width"] == 128
        trans_input = get_affine_transform(c, s, 0, [opt.input_w, opt.input_h])
        trans_output_inv = get_affine_transform(
            c, s, 0, (meta["out_width"], meta["out_height"]), inv=1)
        resized = cv2.resize(image, (w0, h0))
        assert np.array_equal(resized, image)
        warped = cv2.warpAffine(
            resized, trans_input, (opt.input_w, opt.input_h), flags=cv2.INTER_LINEAR)
        norm = ((warped / 255.0 - detector.mean) / detector.std).astype(np.float32)
        images = rec["images"]
        assert images.dtype == torch.float32 and list(images.shape) == [1, 3, 512, 512]
        assert torch.equal(images[0], torch.from_numpy(norm.transpose(2, 0, 1).copy()))
        ok, png = cv2.imencode(".png", warped, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        assert ok and np.array_equal(cv2.imdecode(png, cv2.IMREAD_UNCHANGED), warped)
        raw = np.ascontiguousarray(warped).tobytes()
        formula = warp_affine_float32(image, trans_input, (opt.input_w, opt.input_h))
        formula_diff = int((formula != warped).sum())

        # The decode, re-derived from the same heatmap (official _nms / _topk).
        heat = rec["heat"]
        assert torch.equal(heat, captured["hm"].sigmoid())
        dets = rec["dets"][0]
        with torch.no_grad():
            scores, inds, clses, ys, xs = _topk(_nms(heat), K=opt.K)
        reg = captured["reg"][0].reshape(2, -1)[:, inds[0]]
        wh = captured["wh"][0].reshape(2, -1)[:, inds[0]]
        assert torch.equal(dets[:, 4], scores[0]) and torch.equal(dets[:, 5], clses[0].float())
        cx, cy = xs[0] + reg[0], ys[0] + reg[1]
        assert torch.equal(dets[:, 0], cx - wh[0] / 2) and torch.equal(dets[:, 3], cy + wh[1] / 2)
        decode = [
            {
                "score": f9(dets[k, 4]),
                "class": int(dets[k, 5]),
                "index": int(inds[0, k]),
                "x": f9(cx[k]),
                "y": f9(cy[k]),
                "box": [f9(v) for v in dets[k, :4]],
            }
            for k in range(opt.K)
        ]
        assert all(d["index"] == int(ys[0, k]) * 128 + int(xs[0, k]) for k, d in enumerate(decode))
        m = margins(heat[0], dets[:, 4])

        assert sorted(results) == list(range(1, 81))
        final = []
        for j in range(1, 81):
            assert results[j].dtype == np.float32 and results[j].shape[1] == 5
            assert np.array_equal(results[j], rec["post"][j])
            for row in results[j]:
                final.append({
                    "class": j,
                    "label": j - 1,
                    "category_id": valid_ids[j - 1],
                    "box": [f9(v) for v in row[:4]],
                    "score": f9(row[4]),
                })
        assert len(final) == opt.K

        # The float64 run on the same input.
        with torch.no_grad():
            model64(images.double())
            heat64 = captured64["hm"].sigmoid()
            dets64 = ctdet_decode(heat64, captured64["wh"], reg=captured64["reg"], K=opt.K)[0]
        f64_error = {}
        for key in ("features_stack0", "features", "hm", "wh", "reg", "heat"):
            a, b = (heat, heat64) if key == "heat" else (captured[key], captured64[key])
            assert a.dtype == torch.float32 and b.dtype == torch.float64, key
            f64_error[key] = f9(((a.double() - b).abs() / b.abs().clamp(min=1)).max())
        _, inds64, clses64, _, _ = _topk(_nms(heat64), K=opt.K)
        f64_decode = {
            "same_indices_and_classes": torch.equal(inds64, inds) and torch.equal(clses64, clses),
            "max_abs_score_diff": f9((dets64[:, 4] - dets[:, 4].double()).abs().max()),
            "max_abs_box_diff": f9((dets64[:, :4] - dets[:, :4].double()).abs().max()),
        }

        case = {
            "photo": photo,
            "read": "cv2.imread(path) (BGR, uint8)",
            "original_size": [h0, w0],
            "c": [float(v) for v in c],
            "s": s,
            "trans_input": [[float(v) for v in row] for row in trans_input],
            "trans_output_inv": [[float(v) for v in row] for row in trans_output_inv],
            "out_size": [meta["out_height"], meta["out_width"]],
            "warped": {
                "shape": list(warped.shape),
                "layout": "HWC, BGR, uint8",
                "sha256": hashlib.sha256(raw).hexdigest(),
                "fnv1a64": f"{fnv1a64_bytes(raw):016x}",
                "png_base64": base64.b64encode(png.tobytes()).decode(),
                "float32_formula_differing_bytes": formula_diff,
            },
            "input": summary(images[0], rng),
            "features_stack0": summary(captured["features_stack0"][0], rng),
            "features": summary(captured["features"][0], rng),
            "hm": summary(captured["hm"][0], rng),
            "wh": summary(captured["wh"][0], rng),
            "reg": summary(captured["reg"][0], rng),
            "decode": decode,
            "results": final,
            "margins": m,
            "f64_relative_error": f64_error,
            "f64_decode": f64_decode,
        }
        cases.append(case)

        if verbose:
            sc = [d["score"] for d in decode]
            classes = sorted(set(d["class"] for d in decode))
            feat = captured["features"]
            inside = sum(22 <= d["index"] // 128 <= 105 for d in decode)
            lines = [
                f"{photo}: {h0}x{w0}, warped png {len(png)} bytes, {formula_diff} bytes differ "
                f"from the float32 formula",
                f"  features rms {feat.pow(2).mean().sqrt():.3f} max {feat.max():.3f} "
                f"(stack 0 rms {captured['features_stack0'].pow(2).mean().sqrt():.3f}); "
                f"hm logits {captured['hm'].min():.3f}..{captured['hm'].max():.3f}",
                f"  wh {captured['wh'].min():.2f}..{captured['wh'].max():.2f}, "
                f"reg {captured['reg'].min():.3f}..{captured['reg'].max():.3f}",
                f"  top-100 scores {sc[0]:.4f}..{sc[-1]:.4f}, {len(classes)} classes "
                f"{[(k, sum(d['class'] == k for d in decode)) for k in classes]}, "
                f"{inside} peaks on rows 22..105",
                "  first: " + ", ".join(
                    f"{class_names[d['class']]}({d['score']:.3f})@{d['index']}"
                    for d in decode[:8]),
                f"  margins: {json.dumps(m)}",
                f"  f64 relative error: {json.dumps(f64_error)}; decode {json.dumps(f64_decode)}",
            ]
            print("\n".join(lines), flush=True)

    doc = {
        "generator": "tests/reference/make_hourglass_fixtures.py",
        "reference": {
            "centernet": CENTERNET_COMMIT,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": np.__version__,
            "cv2": cv2.__version__,
        },
        "config": config_of(opt, detector, small_args, full_info, model),
        "coco_valid_ids": valid_ids,
        "class_names": class_names,
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
    path = out_path or os.path.join(OUT, "centernet_hourglass_small.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"checked {checked} files against {CENTERNET_COMMIT[:8]}; stubs: {cf.STUBBED}")
    print(f"{len(spec)} generated tensors, {sum(int(np.prod(w['shape'])) for w in spec)} values, "
          f"{len(not_generated)} not generated; model {doc['config']['model_params']} params, "
          f"{doc['config']['model_macs'] / 1e9:.1f} GMAC; Hourglass-104 "
          f"{full_info['params']} params, {full_info['macs_512'] / 1e9:.1f} GMAC")
    print(f"wrote {path} ({os.path.getsize(path) / 1e3:.1f} KB) in {time.time() - t0:.1f} s")
    return doc


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
