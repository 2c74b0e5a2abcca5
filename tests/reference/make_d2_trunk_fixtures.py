#!/usr/bin/env python3
"""Writes plugins/backbones/tests/fixtures/d2_r50_fpn.json: Detectron2's own ResNet-50 + FPN
backbone (`build_resnet_fpn_backbone`, detectron2/modeling/backbone/{resnet,fpn}.py at commit
02b5c4e295e990042a714712c21dc79b731e8833) run on CPU with generated weights on a generated
input tensor, in its two ResNet variants (stride in the 1x1 or in the 3x3 convolution).

Setup as in make_densepose_fixtures.py / make_semseg_fixtures.py (same pip packages:
torch, torchvision, numpy and Detectron2's pure-Python dependencies fvcore, iopath, yacs,
omegaconf, termcolor, tabulate, cloudpickle, ...). Detectron2 is not installed: its source
tree at that commit is extracted to DETECTRON2_REPO (default /tmp/detectron2) and put first on
sys.path; its compiled extension `detectron2._C` is neither built nor imported:

    mkdir -p /tmp/detectron2
    git --git-dir=<mirror of facebookresearch/detectron2>/repo archive 02b5c4e2 \
        | tar -x -C /tmp/detectron2
    DETECTRON2_REPO=/tmp/detectron2 target/venv-torch/bin/python \
        tests/reference/make_d2_trunk_fixtures.py

Run by developers, not by CI (CI reads the committed fixture). 15-30 s on two threads
(torch.set_num_threads(2)). Running it twice writes the same file, byte for byte. If the
bare git mirror named by DETECTRON2_GIT_DIR (default
/work/.mirror/facebookresearch+detectron2/repo) exists, the script first checks that the
files it runs (resnet.py, fpn.py, batch_norm.py, wrappers.py, build.py, config/defaults.py)
under DETECTRON2_REPO are byte-identical to that commit's; otherwise it only prints a note.

Patches: none. Nothing of Detectron2 is stubbed, patched or monkey-patched; the modules used
(ResNet, BasicStem, BottleneckBlock, FPN, LastLevelMaxPool, the Conv2d wrapper,
FrozenBatchNorm2d) are pure Python. The only thing the script adds is a warnings filter that
silences torch's FutureWarning "`torch.jit.script` is deprecated" (raised by @torch.jit.script
decorators that importing detectron2 runs); it changes nothing that is computed.

Model. `cfg = get_cfg()` (every default: MODEL.RESNETS.NORM "FrozenBN", STEM_OUT_CHANNELS 64,
RES2_OUT_CHANNELS 256, NUM_GROUPS 1, WIDTH_PER_GROUP 64, RES5_DILATION 1, no deformable conv,
BACKBONE.FREEZE_AT 2, FPN.OUT_CHANNELS 256, FPN.NORM "", FPN.FUSE_TYPE "sum", PIXEL_MEAN of 3
values, so 3 input channels) plus, as the model zoo's Base-RCNN-FPN.yaml:
    MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    MODEL.RESNETS.DEPTH = 50
    MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    MODEL.DEVICE = "cpu"
and per variant:
  - "msra":        MODEL.RESNETS.STRIDE_IN_1X1 = True  (the default; the MSRA R-50.pkl
                   configs, Base-RCNN-FPN.yaml, panoptic_fpn_R_50_1x.yaml);
  - "torchvision": MODEL.RESNETS.STRIDE_IN_1X1 = False (configs that load torchvision's
                   converted R-50.pkl, e.g. MaskFormer's).
`build_backbone(cfg)` then `.eval()`; everything under torch.no_grad(). FREEZE_AT 2 calls
`freeze()` on the stem and res2, which only converts nn.BatchNorm2d to FrozenBatchNorm2d:
the norms are already FrozenBatchNorm2d, so it changes nothing at inference.

Structure (what a re-implementation must match; read from resnet.py / fpn.py at the commit):
  - Stem (`BasicStem`): conv1 7x7 stride 2 padding 3, no bias, FrozenBN, ReLU, then
    F.max_pool2d(kernel_size=3, stride=2, padding=1) (ceil_mode False, dilation 1, padding
    value -inf), as torchvision's stem. Names: bottom_up.stem.conv1.weight and
    bottom_up.stem.conv1.norm.* (torchvision: conv1.weight, bn1.*).
  - Stages res2..res5 (torchvision layer1..layer4): 3, 4, 6, 3 BottleneckBlocks, out channels
    256, 512, 1024, 2048, bottleneck widths 64, 128, 256, 512; the first block of res3, res4,
    res5 has stride 2, res2's stride 1 (its first block still has a projection shortcut,
    64 -> 256). Block i of stage k: bottom_up.res{k}.{i}.conv{1,2,3}.weight, each with its
    FrozenBN at .conv{j}.norm.{weight,bias,running_mean,running_var} (torchvision:
    layer{k-1}.{i}.conv{j}.weight and .bn{j}.*). The projection shortcut (first block of each
    stage, 1x1 conv with the block's stride, no bias, FrozenBN) is
    bottom_up.res{k}.0.shortcut.weight and .shortcut.norm.* (torchvision:
    layer{k-1}.0.downsample.0.weight and downsample.1.*).
  - Stride placement in a strided block: "msra" (STRIDE_IN_1X1 True) puts the stride on conv1
    (1x1, stride 2, padding 0) and conv2 is 3x3 stride 1 padding 1; "torchvision"
    (STRIDE_IN_1X1 False) puts it on conv2 (3x3, stride 2, padding 1) with conv1 1x1 stride 1
    (torchvision's ResNet v1.5). The shortcut conv is 1x1 stride 2 in both. Every conv has
    bias=False; conv -> FrozenBN (-> ReLU for conv1, conv2); conv3 -> FrozenBN, + shortcut
    (or the block input), ReLU. Same tensors, same shapes in both variants.
  - FrozenBatchNorm2d (detectron2/layers/batch_norm.py): eps 1e-5 (the constructor default;
    no config changes it), forward under no_grad = F.batch_norm(x, running_mean,
    running_var, weight, bias, training=False, eps) = (x - mean) / sqrt(var + eps) * w + b.
    Its num_batches_tracked buffer is None, so not in the state dict.
  - FPN (fpn.py): for each input feature k in res2..res5 (stage s = log2(stride) = 2..5):
    fpn_lateral{s} = Conv2d 1x1 (in_channels -> 256, bias, no norm) and fpn_output{s} =
    Conv2d 3x3 stride 1 padding 1 (256 -> 256, bias). Top-down: prev = lateral5(res5);
    p5 = output5(prev); then for s = 4, 3, 2: prev = lateral_s(res_s) +
    F.interpolate(prev, scale_factor=2.0, mode="nearest") (fuse "sum"; "nearest" with a
    scale factor: out index i reads floor(i / 2), output size exactly 2x, no crop), p_s =
    output_s(prev). So every feature's size must be exactly twice the next coarser one:
    inputs whose sizes are multiples of 32 always work (Detectron2 pads images to
    `size_divisibility` 32 before the backbone); other sizes work only when ceil(H/4) and
    ceil(W/4) are multiples of 8, i.e. H, W in [32m - 3, 32m], else the sum raises (case 3).
  - Top block LastLevelMaxPool (in_feature "p5", 1 level): p6 = F.max_pool2d(p5,
    kernel_size=1, stride=2, padding=0), i.e. p5[..., ::2, ::2] (size ceil(n / 2)). It takes
    the FPN output p5 (after fpn_output5), not res5.
  - Outputs: `backbone(x)` returns an ordered dict p2, p3, p4, p5, p6 (fine to coarse;
    strides 4, 8, 16, 32, 64; 256 channels each); `backbone.bottom_up(x)` returns res2, res3,
    res4, res5 (strides 4..32; 256, 512, 1024, 2048 channels).
  - State-dict order: the FPN's own convs first, in stage order (fpn_lateral2, fpn_output2,
    fpn_lateral3, ..., fpn_output5; each .weight then .bias), then bottom_up.* (stem, then
    res2.0 ... res5.2; inside a block: shortcut (if any), conv1, conv2, conv3; each conv's
    .weight then its .norm.weight, .norm.bias, .norm.running_mean, .norm.running_var),
    because FPN.__init__ registers the convs before assigning self.bottom_up. No
    LastLevelMaxPool tensors (it has none). 281 tensors.
  - No input normalisation here: Detectron2 subtracts PIXEL_MEAN / divides by PIXEL_STD in
    GeneralizedRCNN.preprocess_image, outside the backbone; the backbone gets x as is.

Weights. Every tensor of the backbone's state dict is generated from its *name* exactly as
make_maskrcnn_fixtures.py does (`fnv1a64`, `splitmix_uniform`, `generate`, imported from it
and reproduced bit for bit by `kernels::weights::generated_tensor`):

    seed  = FNV-1a 64 of the full name (e.g. "backbone.bottom_up.res2.0.conv1.weight")
    z_i   = splitmix64(seed + (i + 1) * 0x9E3779B97F4A7C15)     for element i (row-major)
    u_i   = float32(z_i >> 40) / 2^24                            exact, in [0, 1)
    value = (u_i * 2 - 1) * a + b                                each step rounded to float32

The full name is the checkpoint name of a whole Detectron2 model, i.e. "backbone." + the
backbone's state-dict key (model.backbone.*); that prefixed name is both the seed and the
name stored in the fixture. The generated tensors are loaded with
`load_state_dict(strict=True)` (into a copy of the module's own state dict, so its version
metadata is kept). (a, b) per tensor, values uniform in [b - a, b + a) (`range_of`):
  - FrozenBatchNorm2d (names containing ".norm."): weight 0.75 +- 0.25, bias and
    running_mean +- 0.1, running_var 1.0 +- 0.5;
  - conv weights (every bottom_up conv and fpn_lateral*/fpn_output*): unit-variance gain
    a = float32(sqrt(3 / fan_in)), fan_in = in_channels * kh * kw, b = 0;
  - conv biases (only the FPN's): +- 0.1.
Names, shapes and ranges are identical in the two variants (the stride changes no tensor), so
the list is stored once, as the top-level "weights", and both variants use it (each
variant's "weights" key is absent; "weights_shared_by_variants" is true). The same names give
the same tensors: the variants' outputs differ only by where the stride sits.

Input: not a photo; x = generate("input", [1, 3, H, W], 2.0, 0.0) (uniform in [-2, 2),
row-major NCHW, the same generator with the name "input"; a different shape takes a
different prefix of the same stream).

Cases:
  1. msra,        [1, 3, 160, 224]: res2..res5 and p2..p6;
  2. torchvision, [1, 3, 160, 224]: res2..res5 and p2..p6;
  3. msra,        [1, 3, 150, 201]: not a multiple of 32, odd sizes reach the strided
     convolutions (stem 150x201 -> 75x101, max pool -> 38x51, res3 19x26, res4 10x13, res5
     5x7). `backbone.bottom_up(x)` runs (res2..res5 stored), but Detectron2's FPN itself
     raises (upsampled res5 lateral 10x14 vs res4 lateral 10x13): "p2".."p6" are absent and
     "fpn_error" holds the RuntimeError's message;
  4. torchvision, [1, 3, 150, 201]: the same, with the stride in the 3x3 convs (whose
     last output column / row on an odd input reads the zero padding);
  5. msra,        [1, 3, 157, 222]: not a multiple of 32 but FPN-compatible (ceil(H/4) = 40,
     ceil(W/4) = 56): odd sizes in the stem (157 -> 79 -> 40), every output stored.
Cases 3-5 leave out the channel_means of res4 and res5 (1024 + 2048 numbers each) to keep
the file under 400 KB; their other summary fields are there (`compare` skips absent means).

JSON: generator, reference {detectron2 (full commit), torch, torchvision, numpy}, config (the
cfg values above), frozen_bn_eps, weights_shared_by_variants, weights [{name, shape, a, b}]
(state-dict order), variants {msra: {stride_in_1x1: true}, torchvision: {stride_in_1x1:
false}}, cases [{variant, input {name, shape, a, b}, fpn_error (null when the FPN ran),
outputs {res2, res3, res4, res5[, p2, p3, p4, p5, p6]}}] (outputs in the order Detectron2
returns them: bottom_up's, then the FPN's). Each output is a summary of the
batch's single image, a [C, H, W] tensor (the real output is [1, C, H, W]; the batch axis is
dropped so that tests/support/reference.rs `compare` reads it): shape [C, H, W],
channel_axis 0, sum and abs_sum (float64 over all elements), min, max, channel_means (the
mean over H, W of each channel), and the values at SAMPLES fixed random flat indices
(np.random.default_rng(case number), drawn in output order) plus the first and last,
`indices` sorted and unique. This is make_maskrcnn_fixtures.py's `summary` with every float
written with 9 significant digits (enough to round-trip a float32), as in
make_detr_fixtures.py; the weight ranges (a, b) are written exactly (float32 values).
"""

import json
import math
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import torch
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_maskrcnn_fixtures import generate  # noqa: E402  (fnv1a64 + splitmix_uniform)

DETECTRON2_REPO = os.environ.get("DETECTRON2_REPO", "/tmp/detectron2")
DETECTRON2_COMMIT = "02b5c4e295e990042a714712c21dc79b731e8833"
DETECTRON2_GIT_DIR = os.environ.get(
    "DETECTRON2_GIT_DIR", "/work/.mirror/facebookresearch+detectron2/repo"
)
if not os.path.isfile(os.path.join(DETECTRON2_REPO, "detectron2", "modeling", "backbone", "fpn.py")):
    sys.exit(f"no detectron2 source tree at {DETECTRON2_REPO}: set DETECTRON2_REPO (see the docstring)")
sys.path.insert(0, DETECTRON2_REPO)

warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit\.script.*")
from detectron2.config import get_cfg  # noqa: E402
from detectron2.layers import FrozenBatchNorm2d  # noqa: E402
from detectron2.modeling import build_backbone  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "plugins", "backbones", "tests", "fixtures")
SAMPLES = 256
PREFIX = "backbone."
FEATURES = ["res2", "res3", "res4", "res5"]
BN_EPS = 1e-5
VARIANTS = {"msra": True, "torchvision": False}  # -> MODEL.RESNETS.STRIDE_IN_1X1
INPUT_A, INPUT_B = 2.0, 0.0
# (variant, input shape, outputs whose channel_means are left out to keep the file < 400 KB)
CASES = [
    ("msra", [1, 3, 160, 224], ()),
    ("torchvision", [1, 3, 160, 224], ()),
    ("msra", [1, 3, 150, 201], ("res4", "res5")),
    ("torchvision", [1, 3, 150, 201], ("res4", "res5")),
    ("msra", [1, 3, 157, 222], ("res4", "res5")),
]
CHECKED_FILES = [
    "detectron2/modeling/backbone/resnet.py",
    "detectron2/modeling/backbone/fpn.py",
    "detectron2/modeling/backbone/build.py",
    "detectron2/modeling/backbone/backbone.py",
    "detectron2/layers/batch_norm.py",
    "detectron2/layers/wrappers.py",
    "detectron2/config/defaults.py",
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


def f9(x) -> float:
    """9 significant digits (enough to round-trip a float32)."""
    return float(f"{float(x):.9g}")


def range_of(name: str, shape) -> tuple:
    """(a, b) of a backbone tensor (full name, prefix backbone.): uniform in [b - a, b + a)."""
    if ".norm." in name:  # FrozenBatchNorm2d
        assert len(shape) == 1, name
        if name.endswith(".running_var"):
            return 0.5, 1.0
        if name.endswith(".weight"):
            return 0.25, 0.75
        return 0.1, 0.0  # bias, running_mean
    if name.endswith(".weight") and len(shape) == 4:  # conv: unit-variance gain
        fan_in = int(np.prod(shape[1:]))
        return float(np.float32(math.sqrt(3.0 / fan_in))), 0.0
    if name.endswith(".bias") and len(shape) == 1:  # the FPN convs' biases
        return 0.1, 0.0
    raise ValueError(f"no range for {name} {shape}")


def build(stride_in_1x1: bool):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.OUT_FEATURES = list(FEATURES)
    cfg.MODEL.FPN.IN_FEATURES = list(FEATURES)
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = stride_in_1x1
    backbone = build_backbone(cfg)
    backbone.eval()
    return cfg, backbone


def config_of(cfg) -> dict:
    r, f = cfg.MODEL.RESNETS, cfg.MODEL.FPN
    return {
        "MODEL.BACKBONE.NAME": cfg.MODEL.BACKBONE.NAME,
        "MODEL.BACKBONE.FREEZE_AT": cfg.MODEL.BACKBONE.FREEZE_AT,
        "MODEL.RESNETS.DEPTH": r.DEPTH,
        "MODEL.RESNETS.OUT_FEATURES": list(r.OUT_FEATURES),
        "MODEL.RESNETS.NORM": r.NORM,
        "MODEL.RESNETS.NUM_GROUPS": r.NUM_GROUPS,
        "MODEL.RESNETS.WIDTH_PER_GROUP": r.WIDTH_PER_GROUP,
        "MODEL.RESNETS.STEM_OUT_CHANNELS": r.STEM_OUT_CHANNELS,
        "MODEL.RESNETS.RES2_OUT_CHANNELS": r.RES2_OUT_CHANNELS,
        "MODEL.RESNETS.RES5_DILATION": r.RES5_DILATION,
        "MODEL.RESNETS.DEFORM_ON_PER_STAGE": list(r.DEFORM_ON_PER_STAGE),
        "MODEL.FPN.IN_FEATURES": list(f.IN_FEATURES),
        "MODEL.FPN.OUT_CHANNELS": f.OUT_CHANNELS,
        "MODEL.FPN.NORM": f.NORM,
        "MODEL.FPN.FUSE_TYPE": f.FUSE_TYPE,
        "top_block": "LastLevelMaxPool",
    }


def summary(t: torch.Tensor, rng: np.random.Generator) -> dict:
    """make_maskrcnn_fixtures.summary of a [C, H, W] tensor, floats to 9 digits."""
    a = t.detach().cpu().numpy().astype(np.float32)
    assert a.ndim == 3
    flat = a.reshape(-1)
    idx = np.unique(np.concatenate([[0, flat.size - 1], rng.integers(0, flat.size, SAMPLES)]))
    c = a.shape[-3]
    per_channel = a.reshape(c, -1).astype(np.float64).mean(axis=1)
    return {
        "shape": list(a.shape),
        "channel_axis": 0,
        "sum": f9(flat.astype(np.float64).sum()),
        "abs_sum": f9(np.abs(flat.astype(np.float64)).sum()),
        "min": f9(flat.min()),
        "max": f9(flat.max()),
        "channel_means": [f9(x) for x in per_channel],
        "indices": [int(i) for i in idx],
        "values": [f9(flat[i]) for i in idx],
    }


def main():
    t0 = time.time()
    torch.set_num_threads(2)
    check_source()

    models, spec, config = {}, None, None
    for variant, stride_in_1x1 in VARIANTS.items():
        cfg, backbone = build(stride_in_1x1)
        state = backbone.state_dict()
        this_spec = []
        for k in state:
            name = PREFIX + k
            shape = list(state[k].shape)
            a, b = range_of(name, shape)
            this_spec.append({"name": name, "shape": shape, "a": a, "b": b})
            state[k] = torch.from_numpy(generate(name, shape, a, b))
        missing, unexpected = backbone.load_state_dict(state, strict=True)
        assert not missing and not unexpected
        if spec is None:
            spec = this_spec
        assert this_spec == spec, "the variants' state dicts differ"
        # The stride sits where the variant says, in every strided block.
        for stage in ("res3", "res4", "res5"):
            block = getattr(backbone.bottom_up, stage)[0]
            s1, s2 = block.conv1.stride, block.conv2.stride
            assert (s1, s2) == (((2, 2), (1, 1)) if stride_in_1x1 else ((1, 1), (2, 2)))
            assert block.shortcut.stride == (2, 2)
        bns = [m for m in backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
        assert bns and all(m.eps == BN_EPS for m in bns)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
        this_config = config_of(cfg)
        if config is None:
            config = this_config
        assert this_config == config
        models[variant] = backbone

    cases = []
    for n, (variant, shape, no_means) in enumerate(CASES):
        backbone = models[variant]
        x = torch.from_numpy(generate("input", shape, INPUT_A, INPUT_B))
        rng = np.random.default_rng(n + 1)
        with torch.no_grad():
            bottom = backbone.bottom_up(x)
            assert list(bottom) == FEATURES
            try:
                pyramid = backbone(x)
                fpn_error = None
            except RuntimeError as e:
                pyramid, fpn_error = None, str(e)
        outputs = {k: summary(v[0], rng) for k, v in bottom.items()}
        if pyramid is not None:
            assert list(pyramid) == ["p2", "p3", "p4", "p5", "p6"]
            outputs.update({k: summary(v[0], rng) for k, v in pyramid.items()})
        for k in no_means:
            del outputs[k]["channel_means"]
        cases.append(
            {
                "variant": variant,
                "input": {"name": "input", "shape": shape, "a": INPUT_A, "b": INPUT_B},
                "fpn_error": fpn_error,
                "outputs": outputs,
            }
        )
        shapes = ", ".join(f"{k} {v['shape']}" for k, v in outputs.items())
        print(f"case {n + 1} {variant} {shape}: {shapes}" + (f"; FPN raised: {fpn_error}" if fpn_error else ""))
        for k, v in outputs.items():
            print(f"    {k}: min {v['min']:.4g} max {v['max']:.4g} mean {v['sum'] / np.prod(v['shape']):.4g}")

    doc = {
        "generator": "tests/reference/make_d2_trunk_fixtures.py",
        "reference": {
            "detectron2": DETECTRON2_COMMIT,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": np.__version__,
        },
        "config": config,
        "frozen_bn_eps": BN_EPS,
        "weights_shared_by_variants": True,
        "weights": spec,
        "variants": {k: {"stride_in_1x1": v} for k, v in VARIANTS.items()},
        "cases": cases,
    }
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "d2_r50_fpn.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    print(f"{len(spec)} tensors, {sum(int(np.prod(w['shape'])) for w in spec)} values")
    print(f"wrote {path} ({os.path.getsize(path) / 1e3:.1f} KB) in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
