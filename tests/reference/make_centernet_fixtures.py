#!/usr/bin/env python3
"""DOCSTRING PLACEHOLDER"""

import ast
import base64
import copy
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import types

import cv2
import numpy as np
import torch
import torchvision
from torch.nn import functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_maskrcnn_fixtures import generate  # noqa: E402  (fnv1a64 + splitmix_uniform)

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "plugins", "centernet", "tests", "fixtures")
CENTERNET_REPO = os.environ.get("CENTERNET_REPO", "/tmp/centernet")
CENTERNET_COMMIT = "4c50fd3a46bdf63dbf2082c5cbb3458d39579e6c"
CENTERNET_GIT_DIR = os.environ.get("CENTERNET_GIT_DIR", "/work/.mirror/xingyizhou+CenterNet/repo")
# The DCNv2 sources read to establish the semantics the torchvision substitute must match.
DCN_SOURCES = [
    "src/lib/models/networks/DCNv2/src/dcn_v2.c",
    "src/lib/models/networks/DCNv2/src/dcn_v2_cuda.c",
    "src/lib/models/networks/DCNv2/src/cuda/dcn_v2_im2col_cuda.cu",
]
ARGS = ["ctdet", "--arch", "resdcn_18", "--gpus", "-1"]
PHOTOS = ["chelsea.png", "coffee.png"]
SAMPLES = 256
HM_BIAS_FILL = -2.19  # resnet_dcn.py: fc[-1].bias.data.fill_(-2.19) for the hm head

# Tuned ranges (see the docstring): a gain g gives a = float32(g * sqrt(3 / fan_in)), b = 0; a
# pair is (a, b).
BACKBONE_CONV_GAIN = 1.3  # conv1, layerN.M.conv1/conv2, layerN.0.downsample.0 weights
DCN_GAIN = 3.0  # deconv_layers.{0,6,12}.weight (the DCN's own 3x3 weight)
UP_GAIN = 1.6  # deconv_layers.{3,9,15}.weight (ConvTranspose2d; fan-in in_channels * 4)
OFFSET_GAIN = 0.55  # deconv_layers.{0,6,12}.conv_offset_mask.weight
OFFSET_BIAS = (0.5, 0.0)  # deconv_layers.{0,6,12}.conv_offset_mask.bias (a, b)
HEAD_CONV_GAIN = 1.7  # hm.0.weight, wh.0.weight, reg.0.weight (3x3, 64 -> 64)
HM_GAIN = 1.0  # hm.2.weight
HM_BIAS = (0.5, HM_BIAS_FILL)  # hm.2.bias (a, b)
WH_GAIN = 2.0  # wh.2.weight
WH_BIAS = (4.0, 12.0)  # wh.2.bias (a, b): box sizes in output (stride 4) pixels
REG_GAIN = 0.1  # reg.2.weight
REG_BIAS = (0.2, 0.5)  # reg.2.bias (a, b): sub-pixel centre offsets

for _path in (CENTERNET_REPO,):
    if not os.path.isdir(_path):
        sys.exit(f"no source tree at {_path}: see the docstring")


# --------------------------------------------------------------------------------------
# Patches and stubs, installed before any CenterNet module is imported (see the docstring).

DCN_CALLS = []  # (offset, mask) of every call while recording (a list), else None
_recording = {"on": False}


def dcn_v2_cuda_forward(
    input, weight, bias, ones, offset, mask, output, columns,
    kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
    deformable_group,
):
    """src/dcn_v2_cuda.c `dcn_v2_cuda_forward` (the compiled `_ext.dcn_v2` entry point) on the
    CPU: output <- modulated deformable convolution, by torchvision.ops.deform_conv2d."""
    assert tuple(weight.shape[2:]) == (kernel_h, kernel_w)
    assert offset.shape[1] == deformable_group * 2 * kernel_h * kernel_w
    assert mask.shape[1] == deformable_group * kernel_h * kernel_w
    if _recording["on"]:
        DCN_CALLS.append((offset.clone(), mask.clone()))
    out = torchvision.ops.deform_conv2d(
        input, offset, weight, bias,
        stride=(stride_h, stride_w), padding=(pad_h, pad_w), dilation=(dilation_h, dilation_w),
        mask=mask,
    )
    output.resize_(out.shape).copy_(out)


class DCNv2FunctionCPU:
    """dcn_v2_func.DCNv2Function.forward, minus its `if not input.is_cuda: raise
    NotImplementedError` and the legacy (PyTorch 0.4, non-static) autograd.Function machinery
    that current PyTorch refuses to call; the same arguments go to the same backend entry."""

    def __init__(self, stride, padding, dilation=1, deformable_groups=1):
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.deformable_groups = deformable_groups

    def __call__(self, input, offset, mask, weight, bias):
        output = input.new(*self._infer_shape(input, weight))
        bufs = [input.new(), input.new()]
        _ext_dcn_v2.dcn_v2_cuda_forward(
            input, weight, bias, bufs[0], offset, mask, output, bufs[1],
            weight.shape[2], weight.shape[3], self.stride, self.stride,
            self.padding, self.padding, self.dilation, self.dilation, self.deformable_groups,
        )
        return output


def _stub(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


_ext_dcn_v2 = _stub("models.networks.DCNv2._ext.dcn_v2", dcn_v2_cuda_forward=dcn_v2_cuda_forward)
_stub("models.networks.DCNv2._ext", dcn_v2=_ext_dcn_v2)
STUBBED = ["models.networks.DCNv2._ext (fake compiled DCNv2 extension)"]
try:
    import progress.bar  # noqa: F401
except ImportError:
    _stub("progress.bar", Bar=object)
    _stub("progress", bar=sys.modules["progress.bar"])
    STUBBED.append("progress.bar (Bar, unused at inference)")
try:
    import matplotlib.pyplot  # noqa: F401
except ImportError:
    _stub("matplotlib.pyplot")
    _stub("matplotlib", pyplot=sys.modules["matplotlib.pyplot"])
    STUBBED.append("matplotlib.pyplot (stored by Debugger.__init__, unused at debug 0)")
if not torch.cuda.is_available():
    torch.cuda.synchronize = lambda device=None: None  # called by run() and process()

sys.path.insert(0, os.path.join(CENTERNET_REPO, "src"))  # what running src/demo.py does
import _init_paths  # noqa: E402,F401  (puts src/lib first on sys.path)

from opts import opts  # noqa: E402
from detectors.detector_factory import detector_factory  # noqa: E402
from models.decode import _nms, _topk, ctdet_decode  # noqa: E402
from models.model import create_model  # noqa: E402
from models.networks import resnet_dcn  # noqa: E402
from models.networks.DCNv2 import dcn_v2, dcn_v2_func  # noqa: E402
from utils.image import get_affine_transform  # noqa: E402

assert dcn_v2_func._backend is _ext_dcn_v2
dcn_v2.DCNv2Function = DCNv2FunctionCPU  # the name dcn_v2.DCN.forward calls
DCNv2FunctionCPU._infer_shape = dcn_v2_func.DCNv2Function._infer_shape  # the official helper
PRETRAINED_URLS = []


def _no_pretrained(url, *args, **kwargs):
    """PoseResNet.init_weights' ImageNet download, answered with an empty state dict (the
    model then keeps its constructed values; every tensor is replaced afterwards)."""
    PRETRAINED_URLS.append(url)
    return {}


resnet_dcn.model_zoo = types.SimpleNamespace(load_url=_no_pretrained)


# --------------------------------------------------------------------------------------


def check_sources():
    if not os.path.isdir(CENTERNET_GIT_DIR):
        print(f"note: no git mirror at {CENTERNET_GIT_DIR}; {CENTERNET_REPO} not verified")
        return 0
    listed = subprocess.run(
        ["git", f"--git-dir={CENTERNET_GIT_DIR}", "ls-tree", "-r", "--name-only",
         CENTERNET_COMMIT, "src"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    files = [p for p in listed if p.endswith(".py")] + DCN_SOURCES
    for path in files:
        want = subprocess.run(
            ["git", f"--git-dir={CENTERNET_GIT_DIR}", "show", f"{CENTERNET_COMMIT}:{path}"],
            check=True, capture_output=True,
        ).stdout
        with open(os.path.join(CENTERNET_REPO, path), "rb") as f:
            assert f.read() == want, f"{CENTERNET_REPO}/{path} differs from {CENTERNET_COMMIT}"
    ext = os.path.join(CENTERNET_REPO, "src/lib/models/networks/DCNv2/_ext")
    assert not os.path.exists(ext), f"{ext}: a built DCNv2 extension would not be used"
    return len(files)


def dcn_v2_im2col_reference(input, offset, mask, weight, bias, stride, pad, dil, groups):
    """A direct float64 numpy port of DCNv2's CUDA forward (src/cuda/dcn_v2_im2col_cuda.cu
    modulated_deformable_im2col_gpu_kernel + dmcn_im2col_bilinear, then src/dcn_v2_cuda.c's
    output = bias + weight @ columns), batch 1, used to check the torchvision substitute."""
    x, off, msk = input[0], offset[0], mask[0]
    c_in, height, width = x.shape
    c_out, _, kh, kw = weight.shape
    ho = (height + 2 * pad - (dil * (kh - 1) + 1)) // stride + 1
    wo = (width + 2 * pad - (dil * (kw - 1) + 1)) // stride + 1
    cols = np.zeros((c_in * kh * kw, ho * wo))
    h_in = (np.arange(ho) * stride - pad)[:, None]
    w_in = (np.arange(wo) * stride - pad)[None, :]
    for c in range(c_in):
        g = c // (c_in // groups)  # deformable group of channel c
        o = off[g * 2 * kh * kw:(g + 1) * 2 * kh * kw]
        m = msk[g * kh * kw:(g + 1) * kh * kw]
        for i in range(kh):
            for j in range(kw):
                k = i * kw + j
                h = h_in + i * dil + o[2 * k]  # channel 2k: dy
                w = w_in + j * dil + o[2 * k + 1]  # channel 2k + 1: dx
                valid = (h > -1) & (w > -1) & (h < height) & (w < width)
                h_low, w_low = np.floor(h).astype(int), np.floor(w).astype(int)
                lh, lw = h - h_low, w - w_low
                val = np.zeros_like(h)
                for dy, dx, wt in ((0, 0, (1 - lh) * (1 - lw)), (0, 1, (1 - lh) * lw),
                                   (1, 0, lh * (1 - lw)), (1, 1, lh * lw)):
                    yy, xx = h_low + dy, w_low + dx
                    ok = valid & (yy >= 0) & (xx >= 0) & (yy <= height - 1) & (xx <= width - 1)
                    val += np.where(ok, wt * x[c][yy.clip(0, height - 1), xx.clip(0, width - 1)], 0)
                cols[c * kh * kw + k] = (val * m[k]).reshape(-1)
    out = bias[:, None] + weight.reshape(c_out, -1) @ cols
    return out.reshape(1, c_out, ho, wo)


def check_dcn_semantics() -> dict:
    """torchvision.ops.deform_conv2d (what the patched backend calls) against the port above,
    in float64, on small maps with offsets of up to +-3 px (many samples partly or wholly
    outside), for 1 and 2 deformable groups (the second checks the group-outer layout)."""
    rng = np.random.default_rng(0)
    worst = 0.0
    for groups in (1, 2):
        x = rng.standard_normal((1, 4, 5, 6))
        w = rng.standard_normal((3, 4, 3, 3))
        b = rng.standard_normal(3)
        off = rng.uniform(-3, 3, (1, groups * 18, 5, 6))
        msk = rng.uniform(0, 1, (1, groups * 9, 5, 6))
        want = dcn_v2_im2col_reference(x, off, msk, w, b, 1, 1, 1, groups)
        t = [torch.from_numpy(v) for v in (x, off, msk, w, b)]
        got = torchvision.ops.deform_conv2d(t[0], t[1], t[3], t[4], stride=1, padding=1,
                                            dilation=1, mask=t[2]).numpy()
        worst = max(worst, float(np.abs(got - want).max()))
    assert worst < 1e-12, worst
    return {"deformable_groups": [1, 2], "max_abs_diff_float64": worst}


def warp_affine_float32(src: np.ndarray, trans: np.ndarray, size) -> np.ndarray:
    """What cv2.warpAffine(src, trans, size, flags=cv2.INTER_LINEAR) (BORDER_CONSTANT 0) is
    checked to compute for these photos (see the docstring): the inverse map in float64 (as
    OpenCV inverts it), cast to float32; per destination pixel sx = m0 * x + m1 * y + m2,
    sy = m3 * x + m4 * y + m5 (float32), x0 = floor(sx), ax = sx - x0 (likewise y), taps
    outside the image read 0, r = (v00 * (1 - ax) + v01 * ax) * (1 - ay) + (v10 * (1 - ax) +
    v11 * ax) * ay in float32, rounded half to even and saturated to uint8."""
    m = np.asarray(trans, np.float64).reshape(6).copy()
    d = m[0] * m[4] - m[1] * m[3]
    d = 1.0 / d if d != 0 else 0.0
    a11, a22 = m[4] * d, m[0] * d
    m[0], m[4] = a11, a22
    m[1] *= -d
    m[3] *= -d
    b1, b2 = -m[0] * m[2] - m[1] * m[5], -m[3] * m[2] - m[4] * m[5]
    m[2], m[5] = b1, b2
    m = m.astype(np.float32)
    width, height = size
    x = np.arange(width, dtype=np.float32)[None, :]
    y = np.arange(height, dtype=np.float32)[:, None]
    sx = m[0] * x + m[1] * y + m[2]
    sy = m[3] * x + m[4] * y + m[5]
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    ax, ay = (sx - x0)[..., None], (sy - y0)[..., None]
    h0, w0 = src.shape[:2]

    def tap(dy, dx):
        yy, xx = y0 + dy, x0 + dx
        inside = (yy >= 0) & (yy < h0) & (xx >= 0) & (xx < w0)
        v = src[yy.clip(0, h0 - 1), xx.clip(0, w0 - 1)]
        return np.where(inside[..., None], v, 0).astype(np.float32)

    one = np.float32(1)
    r = (tap(0, 0) * (one - ax) + tap(0, 1) * ax) * (one - ay) + (
        tap(1, 0) * (one - ax) + tap(1, 1) * ax) * ay
    return np.clip(np.rint(r), 0, 255).astype(np.uint8)


def f9(x) -> float:
    """9 significant digits (enough to round-trip a float32)."""
    return float(f"{float(x):.9g}")


def gain(g: float, fan_in: int) -> float:
    return float(np.float32(g * math.sqrt(3.0 / fan_in)))


def range_of(name: str, shape, kind: str) -> tuple:
    """(a, b) of a state-dict tensor: values uniform in [b - a, b + a). `kind` is the type of
    the module that owns it."""
    leaf = name.rsplit(".", 1)[1]
    if kind == "BatchNorm2d":
        if leaf == "running_var":
            return 0.5, 1.0
        if leaf == "weight":
            return 0.25, 0.75
        return 0.1, 0.0  # bias, running_mean
    if kind == "ConvTranspose2d":
        # weight [in, out, 4, 4], stride 2, padding 1: every output pixel receives 2 x 2 taps
        # of each input channel, so the fan-in used is in * 4 (torch's own fan-in formula,
        # weight.shape[1] * 4 * 4, is 4x that for these square layers).
        assert leaf == "weight" and shape[2:] == [4, 4], name
        return gain(UP_GAIN, shape[0] * 4), 0.0
    if len(shape) == 4:
        fan_in = int(np.prod(shape[1:]))
        if kind == "DCN":
            return gain(DCN_GAIN, fan_in), 0.0
        if name.endswith("conv_offset_mask.weight"):
            return gain(OFFSET_GAIN, fan_in), 0.0
        if name in ("hm.0.weight", "wh.0.weight", "reg.0.weight"):
            return gain(HEAD_CONV_GAIN, fan_in), 0.0
        if name == "hm.2.weight":
            return gain(HM_GAIN, fan_in), 0.0
        if name == "wh.2.weight":
            return gain(WH_GAIN, fan_in), 0.0
        if name == "reg.2.weight":
            return gain(REG_GAIN, fan_in), 0.0
        assert kind == "Conv2d" and not name.startswith(("deconv_layers.", "hm.", "wh.", "reg.")), name
        return gain(BACKBONE_CONV_GAIN, fan_in), 0.0
    if len(shape) == 1 and leaf == "bias":
        special = {
            "hm.2.bias": HM_BIAS,
            "wh.2.bias": WH_BIAS,
            "reg.2.bias": REG_BIAS,
        }
        if name.endswith("conv_offset_mask.bias"):
            return OFFSET_BIAS
        return special.get(name, (0.1, 0.0))  # DCN and head conv biases
    raise ValueError(f"no range for {name} {shape} ({kind})")


def summary(t: torch.Tensor, rng: np.random.Generator, channel_axis: int = 0) -> dict:
    """make_maskrcnn_fixtures.summary (floats to 9 digits); channel_means over `channel_axis`."""
    a = t.detach().cpu().numpy().astype(np.float32)
    flat = a.reshape(-1)
    idx = np.unique(np.concatenate([[0, flat.size - 1], rng.integers(0, flat.size, SAMPLES)]))
    moved = np.moveaxis(a, channel_axis, 0)
    per_channel = moved.reshape(moved.shape[0], -1).astype(np.float64).mean(axis=1)
    return {
        "shape": list(a.shape),
        "channel_axis": channel_axis,
        "sum": f9(flat.astype(np.float64).sum()),
        "abs_sum": f9(np.abs(flat.astype(np.float64)).sum()),
        "min": f9(flat.min()),
        "max": f9(flat.max()),
        "channel_means": [f9(x) for x in per_channel],
        "indices": [int(i) for i in idx],
        "values": [f9(flat[i]) for i in idx],
    }


def coco_ids_and_names() -> tuple:
    """COCO._valid_ids and COCO.class_name (both set in COCO.__init__, which reads the
    annotation files), read from src/lib/datasets/dataset/coco.py without running it."""
    path = os.path.join(CENTERNET_REPO, "src/lib/datasets/dataset/coco.py")
    with open(path) as f:
        tree = ast.parse(f.read())
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            t = node.targets[0]
            if isinstance(t, ast.Attribute) and t.attr == "_valid_ids":
                found["ids"] = ast.literal_eval(node.value)
            if isinstance(t, ast.Attribute) and t.attr == "class_name":
                found["names"] = ast.literal_eval(node.value)
    ids, names = found["ids"], found["names"]
    assert len(ids) == 80 and names[0] == "__background__" and len(names) == 81
    return ids, names[1:]


def build_opt():
    opt = opts().init(ARGS)
    assert opt.gpus == [-1] and opt.task == "ctdet" and opt.arch == "resdcn_18"
    assert opt.heads == {"hm": 80, "wh": 2, "reg": 2} and opt.head_conv == 64
    assert opt.fix_res and opt.input_h == opt.input_w == 512 and opt.down_ratio == 4
    assert opt.K == 100 and opt.reg_offset and not opt.flip_test and not opt.cat_spec_wh
    assert opt.test_scales == [1.0] and not opt.nms and opt.debug == 0
    return opt


def config_of(opt, detector) -> dict:
    return {
        "args": ARGS,
        "task": opt.task,
        "arch": opt.arch,
        "heads": dict(opt.heads),
        "head_conv": opt.head_conv,
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
        "dcn": {"kernel": 3, "stride": 1, "padding": 1, "dilation": 1, "deformable_groups": 1},
        "deconv": {"planes": [256, 128, 64], "kernel": 4, "stride": 2, "padding": 1,
                   "output_padding": 0, "bias": False},
    }


def margins(heat: torch.Tensor, dets_scores: torch.Tensor) -> dict:
    """How far every discrete decision of ctdet_decode is from flipping (heat: the sigmoid
    heatmap [80, 128, 128] that _nms / _topk see)."""
    hmax = F.max_pool2d(heat[None], 3, stride=1, padding=1)[0]
    kept = heat * (hmax == heat).float()
    top = torch.topk(kept.reshape(-1), 101).values.double()
    assert torch.equal(top[:100].float(), dets_scores)
    cut = float(top[99] - top[100])
    consecutive = top[:100] - top[1:101]
    gap = (hmax - heat).double()
    suppressed = gap > 0
    near = suppressed & (gap < 1e-6)
    strong = heat.double() >= top[100]  # could enter the top 100 if kept
    # For each kept value: its margin above the other 8 values of its 3x3 window.
    pad = F.pad(heat[None], (1, 1, 1, 1), value=float("-inf"))[0]
    others = torch.stack(
        [pad[:, 1 + dy:1 + dy + heat.shape[1], 1 + dx:1 + dx + heat.shape[2]]
         for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    ).amax(0)
    peak_gap = (heat - others).double()
    in_top = kept >= top[99].float()
    return {
        "top100_cut_gap": f9(cut),
        "score_100": f9(top[99]),
        "score_101": f9(top[100]),
        "min_consecutive_gap_top100": f9(consecutive[:99].min()),
        "nms_near_ties_1e-6": int(near.sum()),
        "nms_near_ties_1e-6_above_cut": int((near & strong).sum()),
        "nms_suppressed_above_cut": int((suppressed & strong).sum()),
        "nms_min_suppression_gap_above_cut": (
            f9(gap[suppressed & strong].min()) if bool((suppressed & strong).any()) else None
        ),
        "top100_min_peak_gap": f9(peak_gap[in_top].min()),
        "top100_plateaus": int((peak_gap[in_top] == 0).sum()),
    }


def main():
    t0 = time.time()
    torch.set_num_threads(2)
    checked = check_sources()
    dcn_check = check_dcn_semantics()
    opt = build_opt()
    valid_ids, class_names = coco_ids_and_names()

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
    del probe
    with tempfile.TemporaryDirectory() as tmp:
        opt.load_model = os.path.join(tmp, "model_generated.pth")
        torch.save({"epoch": 0, "state_dict": state}, opt.load_model)
        detector = detector_factory[opt.task](opt)
    model = detector.model
    assert opt.device == torch.device("cpu") and not model.training
    missing, unexpected = model.load_state_dict(state, strict=True)
    assert not missing and not unexpected
    for name, t in model.state_dict().items():  # the model holds exactly the generated tensors
        assert torch.equal(t, state[name]), name
    assert PRETRAINED_URLS == [resnet_dcn.model_urls["resnet18"]] * 2, PRETRAINED_URLS

    # Structure checks (cheap facts the docstring states).
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 20 + 6 and all(m.eps == 1e-5 for m in bns)
    dcns = [m for m in model.modules() if isinstance(m, dcn_v2.DCN)]
    assert len(dcns) == 3
    for m in dcns:
        assert m.kernel_size == (3, 3) and m.stride == 1 and m.padding == 1
        assert m.dilation == 1 and m.deformable_groups == 1
    ups = [m for m in model.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(ups) == 3 and all(
        m.kernel_size == (4, 4) and m.stride == (2, 2) and m.padding == (1, 1)
        and m.output_padding == (0, 0) and m.bias is None for m in ups
    )

    model64 = copy.deepcopy(model).double()
    for key, t in list(model64.named_parameters()) + list(model64.named_buffers()):
        assert not t.is_floating_point() or t.dtype == torch.float64, key

    def keep_outputs(m, store):
        def keep(key):
            def hook(_module, _inputs, output):
                store[key] = output.clone()  # clone: ReLU(inplace) / hm.sigmoid_() follow

            return hook

        m.layer4.register_forward_hook(keep("layer4"))
        for i in range(3):
            m.deconv_layers[6 * i + 5].register_forward_hook(keep(f"deconv{i + 1}"))
        m.deconv_layers[0].conv_offset_mask.register_forward_hook(keep("offset_mask"))
        for head in ("hm", "wh", "reg"):
            getattr(m, head).register_forward_hook(keep(head))

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
        rec["heat"], rec["dets"] = output["hm"].clone(), dets.clone()
        return (output, dets, forward_time) if return_time else (output, dets)

    def post_process_rec(dets, meta, scale=1):
        out = post_process(dets, meta, scale)
        rec["post"] = {k: v.copy() for k, v in out.items()}
        return out

    detector.pre_process = pre_process_rec
    detector.process = process_rec
    detector.post_process = post_process_rec

    cases, report = [], []
    for n, photo in enumerate(PHOTOS):
        rng = np.random.default_rng(n + 1)
        path = os.path.join(ROOT, "assets", photo)
        rec.clear()
        captured.clear()
        DCN_CALLS.clear()
        _recording["on"] = True
        ret = detector.run(path)
        _recording["on"] = False
        results = ret["results"]
        image = rec["image"]
        h0, w0 = image.shape[:2]
        assert image.dtype == np.uint8 and image.shape[2] == 3
        assert np.array_equal(image, cv2.imread(path))

        # The pre-processing, redone step by step to keep the warped uint8 image (asserted to
        # give exactly the tensor the model got).
        meta = rec["meta"]
        c = np.array([w0 / 2.0, h0 / 2.0], dtype=np.float32)
        s = max(h0, w0) * 1.0
        assert np.array_equal(meta["c"], c) and meta["s"] == s
        assert meta["out_height"] == meta["out_width"] == 128
        trans_input = get_affine_transform(c, s, 0, [opt.input_w, opt.input_h])
        trans_output_inv = get_affine_transform(
            c, s, 0, (meta["out_width"], meta["out_height"]), inv=1)
        resized = cv2.resize(image, (w0, h0))
        assert np.array_equal(resized, image)  # scale 1: cv2.resize to the same size copies
        warped = cv2.warpAffine(
            resized, trans_input, (opt.input_w, opt.input_h), flags=cv2.INTER_LINEAR)
        norm = ((warped / 255.0 - detector.mean) / detector.std).astype(np.float32)
        images = rec["images"]
        assert images.dtype == torch.float32 and list(images.shape) == [1, 3, 512, 512]
        assert torch.equal(images[0], torch.from_numpy(norm.transpose(2, 0, 1).copy()))
        ok, png = cv2.imencode(".png", warped, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        assert ok
        back = cv2.imdecode(png, cv2.IMREAD_UNCHANGED)
        assert np.array_equal(back, warped)
        raw = np.ascontiguousarray(warped).tobytes()
        formula = warp_affine_float32(image, trans_input, (opt.input_w, opt.input_h))
        formula_diff = int((formula != warped).sum())

        # The first DCN's offset and mask, as DCN.forward derives them from conv_offset_mask.
        om = captured["offset_mask"]
        o1, o2, mlogit = torch.chunk(om, 3, dim=1)
        offset = torch.cat((o1, o2), dim=1)[0]
        mask = torch.sigmoid(mlogit)[0]
        assert len(DCN_CALLS) == 3
        assert torch.equal(DCN_CALLS[0][0][0], offset) and torch.equal(DCN_CALLS[0][1][0], mask)

        # The decode, re-derived from the same heatmap (official _nms / _topk) for the
        # integer positions and the margins; checked against the detector's own dets.
        heat = rec["heat"]  # hm after hm.sigmoid_(), what ctdet_decode got
        assert torch.equal(heat, captured["hm"].sigmoid())
        dets = rec["dets"][0]  # [100, 6]: x1, y1, x2, y2, score, class (output pixels)
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

        # merge_outputs' result: per class j = 1..80 (in that order), rows as post_process
        # left them (decode order within a class).
        assert sorted(results) == list(range(1, 81))
        final = []
        for j in range(1, 81):
            assert results[j].dtype == np.float32 and results[j].shape[1] == 5
            assert np.array_equal(results[j], rec["post"][j])  # one scale, 100 dets: no cut
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
            hm64 = captured64["hm"]
            heat64 = hm64.sigmoid()
            dets64 = ctdet_decode(heat64, captured64["wh"], reg=captured64["reg"], K=opt.K)[0]
        om64 = captured64["offset_mask"]
        a1, a2, a3 = torch.chunk(om64, 3, dim=1)
        pairs = {
            "layer4": (captured["layer4"], captured64["layer4"]),
            "deconv1": (captured["deconv1"], captured64["deconv1"]),
            "deconv2": (captured["deconv2"], captured64["deconv2"]),
            "deconv3": (captured["deconv3"], captured64["deconv3"]),
            "dcn1_offset": (offset, torch.cat((a1, a2), dim=1)[0]),
            "dcn1_mask": (mask, torch.sigmoid(a3)[0]),
            "hm": (captured["hm"], hm64),
            "wh": (captured["wh"], captured64["wh"]),
            "reg": (captured["reg"], captured64["reg"]),
            "heat": (heat, heat64),
        }
        f64_error = {}
        for key, (a, b) in pairs.items():
            assert a.dtype == torch.float32 and b.dtype == torch.float64, key
            f64_error[key] = f9(((a.double() - b).abs() / b.abs().clamp(min=1)).max())
        _, inds64, clses64, _, _ = _topk(_nms(heat64), K=opt.K)
        f64_decode = {
            "same_indices_and_classes": torch.equal(inds64, inds) and torch.equal(clses64, clses),
            "max_abs_score_diff": f9((dets64[:, 4] - dets[:, 4].double()).abs().max()),
            "max_abs_box_diff": f9((dets64[:, :4] - dets[:, :4].double()).abs().max()),
        }

        classes = sorted(set(d["class"] for d in decode))
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
            "layer4": summary(captured["layer4"][0], rng),
            "deconv1": summary(captured["deconv1"][0], rng),
            "deconv2": summary(captured["deconv2"][0], rng),
            "deconv3": summary(captured["deconv3"][0], rng),
            "dcn1_offset": summary(offset, rng),
            "dcn1_mask": summary(mask, rng),
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

        sc = [d["score"] for d in decode]
        off = offset.abs()
        lines = [
            f"{photo}: {h0}x{w0}, c {c.tolist()}, s {s}, trans_input {trans_input.tolist()}",
            f"  warped png {len(png)} bytes, {formula_diff} bytes differ from the float32 "
            f"formula; layer4 {list(captured['layer4'].shape[1:])}, "
            f"deconv3 {list(captured['deconv3'].shape[1:])}",
            f"  dcn1 |offset| mean {off.mean():.3f} max {off.max():.3f}; mask {mask.min():.3f}.."
            f"{mask.max():.3f}; hm logits {captured['hm'].min():.3f}..{captured['hm'].max():.3f}",
            f"  wh {captured['wh'].min():.2f}..{captured['wh'].max():.2f}, "
            f"reg {captured['reg'].min():.3f}..{captured['reg'].max():.3f}",
            f"  top-100 scores {sc[0]:.4f}..{sc[-1]:.4f}, {len(classes)} classes "
            f"{[(k, sum(d['class'] == k for d in decode)) for k in classes]}",
            "  first: " + ", ".join(
                f"{class_names[d['class']]}({d['score']:.3f})@{d['index']}" for d in decode[:8]),
            f"  margins: {json.dumps(m)}",
            f"  f64 relative error: {json.dumps(f64_error)}; decode {json.dumps(f64_decode)}",
        ]
        report.extend(lines)
        print("\n".join(lines), flush=True)

    doc = {
        "generator": "tests/reference/make_centernet_fixtures.py",
        "reference": {
            "centernet": CENTERNET_COMMIT,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": np.__version__,
            "cv2": cv2.__version__,
        },
        "config": config_of(opt, detector),
        "coco_valid_ids": valid_ids,
        "class_names": class_names,
        "dcn_check": dcn_check,
        "weights": spec,
        "not_generated": [
            {"name": name, "shape": [], "dtype": "int64", "value": 0,
             "why": "BatchNorm2d.num_batches_tracked (training counter, unused at inference)"}
            for name in not_generated
        ],
        "cases": cases,
    }
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "centernet_resdcn18.json")
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"checked {checked} files against {CENTERNET_COMMIT[:8]}; stubs: {STUBBED}")
    print(f"{len(spec)} generated tensors, {sum(int(np.prod(w['shape'])) for w in spec)} values, "
          f"{len(not_generated)} not generated")
    print(f"wrote {path} ({os.path.getsize(path) / 1e3:.1f} KB) in {time.time() - t0:.1f} s")


def fnv1a64_bytes(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h ^= byte
        h = (h * 0x100000001B3) & ((1 << 64) - 1)
    return h


if __name__ == "__main__":
    main()
