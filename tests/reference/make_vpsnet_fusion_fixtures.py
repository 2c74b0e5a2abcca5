#!/usr/bin/env python3
"""Writes the fixture of plugins/tracking/tests/vpsnet_fusion_reference.rs: VPSNet's feature
fusion across frames, the optical flow (`FlowNet2` through `PanopticFuseTrack.compute_flow`)
and the fusion neck (`BFPTcea`), run by the official code (mcahny/vps @
138503edbc9e70de744dc0c9fa4b71c799a94d5d) on the CPU with generated weights.

    git clone <mcahny/vps> /tmp/vps     # or a bare mirror; only `git show COMMIT:path` is used
    python3 tests/reference/make_vpsnet_fusion_fixtures.py /tmp/vps
    python3 tests/reference/make_vpsnet_fusion_fixtures.py --correlation  # prints the
        # expected values of kernels/src/ops/correlation.rs's unit tests (`CASES`)

needs torch and numpy (written with torch 2.15 on the CPU and numpy 2.4; the versions are
stored in the fixture). Run by developers, not by CI (CI reads the committed fixture).

What runs, and what is official:
- Executed unmodified from the repository (`git show`): `mmdet/models/flow_modules/`
  `submodules.py`, `FlowNetC.py`, `FlowNetS.py`, `FlowNetSD.py`, `FlowNetFusion.py`,
  `flownet2.py` (FlowNet2) and `flow_modules.py` (LiteFlowNetCorr, WarpingLayer);
  `mmdet/models/utils/` `conv_module.py`, `conv_ws.py`, `norm.py`, `weight_init.py`,
  `tcea_modules.py` (TCEA_Fusion) and `flow_utils.py` (`denormalize`);
  `mmdet/models/extra_necks/bfp_tcea.py` (BFPTcea); and the method
  `PanopticFuseTrack.compute_flow` of `mmdet/models/detectors/panoptic_fusetrack.py`
  (compiled from its own source lines; the rest of that file imports the whole detector).
- The repository needs mmcv / mmdet 1.x with CUDA extensions, which do not build here, so
  what those files import is replaced by stand-ins registered in `sys.modules` first:
  registries whose `register_module` returns the class, `mmcv.cnn` served by the repository's
  own `mmdet/models/utils/weight_init.py` (the same `xavier_init` / `kaiming_init`; its
  `constant_init`, which ConvModule calls only with a norm layer, is a no-op), classes that
  refuse to be built for what the test path never calls (DCN, `DeformConvWithOffset`, CBAM),
  and `vis_flow` = None. `.cuda()` on tensors and modules returns them unchanged (the CPU is the device).
- The three CUDA extensions are the only code that is not official; each is replaced by an
  exact pure-torch port of its CUDA forward kernel (below):
  * `Correlation` (correlation_package/correlation_cuda_kernel.cu, `correlation_forward`):
    both inputs zero-padded by `pad_size`; output channel `(tj + r)·(2r + 1) + (ti + r)`
    with `r = max_displacement // stride2`, at output `(y, x)` the sum over the
    `kernel_size²` window and all channels of `in1[y1 + j, x1 + i]·in2[y1 + tj·stride2 + j,
    x1 + ti·stride2 + i]`, `(y1, x1) = (y, x)·stride1 + max_displacement` (padded
    coordinates), divided by `kernel_size²·C`; output size `ceil((H + 2·pad - 2·(kernel_rad
    + max_displacement)) / stride1)`. (`corr_multiply` is unused by the kernel.)
  * `Resample2d` (resample2d_package/resample2d_kernel.cu, bilinear, kernel_size 1): output
    `(y, x)` samples `in[y + dy, x + dx]` bilinearly with `alpha = xf - floor(xf)` and the
    four neighbours' indices clamped to the image (so a position outside reads the border);
    weights `(1 - alpha)(1 - beta)` etc. in double (the kernel's `1.` literals), each term
    rounded to float and summed in float in the kernel's order.
  * `ChannelNorm` (channelnorm_package/channelnorm_kernel.cu, norm_deg 2): `sqrt(sum_c x²)`.
- torch 1.4 (the repository's) and 2.15 agree on every default the code relies on:
  `F.grid_sample` `align_corners=False` (WarpingLayer builds its grid with `linspace(-1, 1)`,
  the align-corners grid, and samples with `align_corners=False`: the official mismatch is
  kept), bilinear `nn.Upsample` / `F.interpolate` `align_corners=False`, and every
  `scale_factor` here divides the sizes exactly, so 1.4's `in/out` scale and 2.x's
  `1/scale_factor` are the same.

Model: `BFPTcea(in_channels=256, num_levels=5, refine_level=0, refine_type='conv', center=0,
nframes=2)` (configs/cityscapes/fusetrack.py's `extra_neck`) and `FlowNet2(args(rgb_max=255,
fp16=False), requires_grad=False)` as `PanopticFuseTrack.__init__` builds it, with
`compute_flow(img, ref_img, scale_factor=0.25)` and the config's `img_norm_cfg` (mean
`[123.675, 116.28, 103.53]`, std `[58.395, 57.12, 57.375]`, RGB), as `simple_test` calls it.

Weights: the official widths, too large to store (the neck 3.7 M values, 15 MB; FlowNet2
162.5 M values, 650 MB), so every tensor is generated from its official checkpoint name
(`extra_neck.*` as PanopticFuseTrack's state dict names the neck, `flownet2.*` for the flow
network, whose own FlowNet2_checkpoint.pth.tar names the same tensors without the prefix)
by the counter-based generator that `kernels::weights::generated_tensor` reproduces bit for
bit (see `generate`): uniform in `[b - a, b + a)`. `a` of a weight is Xavier-uniform's bound
`sqrt(6 / (fan_in + fan_out))` (the official initialisation of both networks), times a gain
(GAINS) for the last layer of each flow estimator that the fixture reads, so that random
weights give flows of a few pixels as a trained network does (FlowNet2's fused flow up to
about 14 pixels, LiteFlowNetCorr's refinement up to about 2 at P2; unscaled they stay below a
pixel and the warps would test little). Biases: U(-0.1, 0.1) in both networks (officially
FlowNet2's `uniform_(bias)` is U(0, 1) and the neck's is 0), so that every bias is
exercised without drowning the weights. With these weights the temporal attention's logits
stay within a few units, where the sigmoid is not saturated. The `(a, b)` of every tensor
is stored in `weights`.

Frames (generated, `frames`): stream "a" 128x192 (3 frames), stream "b" 200x400 (2 frames,
the size at which the official compute_flow pads the input, by 56 rows and 48 columns, to
a multiple of 64), processed a1, b1, a2, b2, a3. Each frame's RGB image (f32 in [0, 255])
is a crop of its stream's "world" (`vpsnet_fusion.{s}.world`, generated 4 times coarser
and repeated 4x4, nearest) at an offset that moves by `SHIFT` pixels per frame, plus noise
(`vpsnet_fusion.{s}.f{t}.noise`, amplitude NOISE), clamped to [0, 255]; the network input is
`(rgb - mean) / std` in float32 (mmdet's Normalize). The FPN levels p2..p6 (256 channels,
`[1, 256, h, w]` at strides 4..64, the sizes mmdet's ResNet-FPN gives: 32x48 .. 2x3 and
50x100, 25x50, 13x25, 7x13, 4x7) are generated per frame (`vpsnet_fusion.{s}.f{t}.p{l}`,
uniform in [-1, 1)). A stream's first frame is its own reference (the official test's
`prev_img_info = img_info` at the start of a video); later frames use the previous frame.

Recorded per frame in vpsnet_fusion.json (`frames`): FlowNet2's intermediates (the
`flownetc`, `flownets_1`, `flownets_2` and `flownets_d` flows at 1/4 of the padded input, the
fused full-resolution flow `flownetfusion`), `flow_init` (compute_flow's output), and the
neck's `bsf`, `ref_bsf`, `warp_bsf` (the first warp), `flow_fine`, `warp_bsf_fine` (the
second warp), `tcea` (TCEA_Fusion's output), `refined` (after `refine`) and the outputs
`p2..p6`. Each tensor (batch axis dropped) is a summary: its shape, every `stride`-th value
of the flattened tensor (about SAMPLES of them; all of `flow_init`, which the fusion test
feeds to the neck, and of `flow_fine`), per-channel sums and per-channel sums of absolute
values (float64).
"""

import ast
import json
import math
import os
import subprocess
import sys
import types

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
# The one generator of named tensors of the fixture scripts, which
# kernels::weights::generated_tensor reproduces bit for bit.
from make_maskrcnn_fixtures import generate

COMMIT = "138503edbc9e70de744dc0c9fa4b71c799a94d5d"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "plugins", "tracking", "tests", "fixtures")

CHANNELS = 256
MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]
STREAMS = {"a": (128, 192), "b": (200, 400)}
ORDER = [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3)]
BLOCK = 4
MARGIN = 16
SHIFT = (2, 3)  # (dy, dx) of the crop per frame
NOISE = 6.0
# Layers whose random weights are scaled up so that the flows are of a useful size.
GAINS = {
    "flownet2.flownetfusion.predict_flow0": 8.0,
    "extra_neck.liteflownet.flow_estimator.convs.3": 4.0,
}
BIAS = 0.1
SAMPLES = 1024  # about this many values per summary

f32 = np.float32


# ---------------------------------------------------------------------------------------
# Pure-torch ports of the CUDA extensions' forward kernels


def correlation_port(input1, input2, pad_size, kernel_size, max_displacement, stride1, stride2):
    """`correlation_forward` of correlation_cuda_kernel.cu (see the docstring)."""
    b, c, h, w = input1.shape
    kernel_rad = (kernel_size - 1) // 2
    border_radius = kernel_rad + max_displacement
    ph, pw = h + 2 * pad_size, w + 2 * pad_size
    out_h = math.ceil((ph - 2 * border_radius) / stride1)
    out_w = math.ceil((pw - 2 * border_radius) / stride1)
    rad = max_displacement // stride2
    size = 2 * rad + 1
    r1 = F.pad(input1, (pad_size,) * 4)
    r2 = F.pad(input2, (pad_size,) * 4)
    out = input1.new_zeros(b, size * size, out_h, out_w)
    nelems = kernel_size * kernel_size * c
    ys = torch.arange(out_h) * stride1 + max_displacement
    xs = torch.arange(out_w) * stride1 + max_displacement
    for tj in range(-rad, rad + 1):
        for ti in range(-rad, rad + 1):
            acc = input1.new_zeros(b, out_h, out_w)
            for j in range(-kernel_rad, kernel_rad + 1):
                for i in range(-kernel_rad, kernel_rad + 1):
                    y1, x1 = ys + j, xs + i
                    y2, x2 = y1 + tj * stride2, x1 + ti * stride2
                    # The kernel reads inside the padded buffer for these settings.
                    assert y1.min() >= 0 and y2.min() >= 0 and x1.min() >= 0 and x2.min() >= 0
                    assert y1.max() < ph and y2.max() < ph and x1.max() < pw and x2.max() < pw
                    a = r1[:, :, y1][:, :, :, x1]
                    bb = r2[:, :, y2][:, :, :, x2]
                    acc = acc + (a * bb).sum(1)
            out[:, (tj + rad) * size + (ti + rad)] = acc / nelems
    return out


class Correlation(nn.Module):
    """correlation_package.correlation.Correlation with the CUDA call replaced."""

    def __init__(self, pad_size=0, kernel_size=0, max_displacement=0, stride1=1, stride2=2,
                 corr_multiply=1):
        super().__init__()
        self.args = (pad_size, kernel_size, max_displacement, stride1, stride2)

    def forward(self, input1, input2):
        return correlation_port(input1, input2, *self.args)


def resample2d_port(input1, input2):
    """`kernel_resample2d_update_output` (bilinear, kernel_size 1) of resample2d_kernel.cu."""
    b, c, h, w = input1.shape
    _, _, oh, ow = input2.shape
    # The positions in float (the kernel's scalar_t); their fractions are exact in float.
    xf = (torch.arange(ow, dtype=torch.float32).view(1, 1, 1, ow) + input2[:, 0:1]).double()
    yf = (torch.arange(oh, dtype=torch.float32).view(1, 1, oh, 1) + input2[:, 1:2]).double()
    alpha = xf - torch.floor(xf)
    beta = yf - torch.floor(yf)
    xl = torch.clamp(torch.floor(xf), 0, w - 1).long()
    xr = torch.clamp(torch.floor(xf) + 1, 0, w - 1).long()
    yt = torch.clamp(torch.floor(yf), 0, h - 1).long()
    yb = torch.clamp(torch.floor(yf) + 1, 0, h - 1).long()

    def at(yy, xx):
        idx = (yy * w + xx).expand(b, c, oh, ow).reshape(b, c, -1)
        return input1.reshape(b, c, -1).gather(2, idx).reshape(b, c, oh, ow).double()

    val = torch.zeros(b, c, oh, ow, dtype=torch.float32)
    val = val + ((1.0 - alpha) * (1.0 - beta) * at(yt, xl)).float()
    val = val + (alpha * (1.0 - beta) * at(yt, xr)).float()
    val = val + ((1.0 - alpha) * beta * at(yb, xl)).float()
    val = val + (alpha * beta * at(yb, xr)).float()
    return val


class Resample2d(nn.Module):
    """resample2d_package.resample2d.Resample2d with the CUDA call replaced."""

    def __init__(self, kernel_size=1, bilinear=True):
        super().__init__()
        assert kernel_size == 1 and bilinear

    def forward(self, input1, input2):
        return resample2d_port(input1.contiguous(), input2)


class ChannelNorm(nn.Module):
    """channelnorm_package.channelnorm.ChannelNorm (norm_deg 2) with the CUDA call replaced."""

    def __init__(self, norm_deg=2):
        super().__init__()
        assert norm_deg == 2

    def forward(self, input1):
        acc = torch.zeros_like(input1[:, :1])
        for k in range(input1.shape[1]):
            acc = acc + input1[:, k:k + 1] * input1[:, k:k + 1]
        return torch.sqrt(acc)


# ---------------------------------------------------------------------------------------
# The official modules, executed with stand-ins for what they import


def official(repo: str, path: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", git_dir(repo), "show", f"{COMMIT}:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def git_dir(repo: str) -> str:
    dot_git = os.path.join(repo, ".git")
    return dot_git if os.path.exists(dot_git) else repo


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
    parent, _, child = name.rpartition(".")
    exec(compile(official(repo, path), path, "exec"), m.__dict__)
    if parent in sys.modules:
        setattr(sys.modules[parent], child, m)
    return m


def official_method(repo: str, path: str, cls: str, name: str, env: dict):
    """Method `name` of class `cls` in `path`, compiled from its own source lines in `env`."""
    src = official(repo, path)
    tree = ast.parse(src)
    body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls).body
    node = next(n for n in body if isinstance(n, ast.FunctionDef) and n.name == name)
    ns = dict(env)
    exec(compile(ast.Module(body=[node], type_ignores=[]), path, "exec"), ns)
    return ns[name]


class Registry:
    def register_module(self, cls):
        return cls


class Unused(nn.Module):
    def __init__(self, *args, **kwargs):
        super().__init__()
        raise AssertionError("not on the test path")


def load_official(repo: str) -> dict:
    # The CPU is the device: `.cuda()` leaves tensors and modules where they are.
    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self

    stub_module("mmdet", package=True)
    stub_module("mmdet.models", package=True)
    stub_module("mmdet.models.registry", EXTRA_NECKS=Registry())
    stub_module("mmdet.datasets", package=True)
    stub_module("mmdet.datasets.pipelines", package=True)
    stub_module("mmdet.datasets.pipelines.flow_utils", vis_flow=None)
    stub_module("mmdet.ops", ModulatedDeformConvPack=Unused)

    utils = stub_module("mmdet.models.utils", package=True)
    weight_init = exec_official(
        repo, "mmdet.models.utils.weight_init", "mmdet/models/utils/weight_init.py"
    )
    stub_module("mmcv", package=True)
    stub_module(
        "mmcv.cnn",
        xavier_init=weight_init.xavier_init,
        kaiming_init=weight_init.kaiming_init,
        constant_init=lambda module, val, bias=0: None,
    )
    exec_official(repo, "mmdet.models.utils.conv_ws", "mmdet/models/utils/conv_ws.py")
    exec_official(repo, "mmdet.models.utils.norm", "mmdet/models/utils/norm.py")
    conv_module = exec_official(
        repo, "mmdet.models.utils.conv_module", "mmdet/models/utils/conv_module.py"
    )
    utils.ConvModule = conv_module.ConvModule
    utils.DeformConvWithOffset = Unused
    tcea = exec_official(
        repo, "mmdet.models.utils.tcea_modules", "mmdet/models/utils/tcea_modules.py"
    )
    utils.TCEA_Fusion = tcea.TCEA_Fusion
    stub_module("mmdet.models.utils.attention", CBAM=Unused)
    flow_utils = exec_official(
        repo, "mmdet.models.utils.flow_utils", "mmdet/models/utils/flow_utils.py"
    )

    fm = "mmdet.models.flow_modules"
    stub_module(fm, package=True)
    stub_module(f"{fm}.correlation_package", package=True)
    stub_module(f"{fm}.correlation_package.correlation", Correlation=Correlation)
    stub_module(f"{fm}.resample2d_package", package=True)
    stub_module(f"{fm}.resample2d_package.resample2d", Resample2d=Resample2d)
    stub_module(f"{fm}.channelnorm_package", package=True)
    stub_module(f"{fm}.channelnorm_package.channelnorm", ChannelNorm=ChannelNorm)
    base = "mmdet/models/flow_modules"
    for name in ["submodules", "FlowNetC", "FlowNetS", "FlowNetSD", "FlowNetFusion"]:
        exec_official(repo, f"{fm}.{name}", f"{base}/{name}.py")
    flownet2 = exec_official(repo, f"{fm}.flownet2", f"{base}/flownet2.py")
    flow_modules = exec_official(repo, f"{fm}.flow_modules", f"{base}/flow_modules.py")
    sys.modules[fm].WarpingLayer = flow_modules.WarpingLayer
    sys.modules[fm].LiteFlowNetCorr = flow_modules.LiteFlowNetCorr

    stub_module("mmdet.models.extra_necks", package=True)
    bfp = exec_official(
        repo,
        "mmdet.models.extra_necks.bfp_tcea",
        "mmdet/models/extra_necks/bfp_tcea.py",
    )
    compute_flow = official_method(
        repo,
        "mmdet/models/detectors/panoptic_fusetrack.py",
        "PanopticFuseTrack",
        "compute_flow",
        {"torch": torch, "F": F, "denormalize": flow_utils.denormalize},
    )
    return {
        "FlowNet2": flownet2.FlowNet2,
        "BFPTcea": bfp.BFPTcea,
        "compute_flow": compute_flow,
    }


# ---------------------------------------------------------------------------------------
# Weights


def fan_in_out(name: str, shape) -> tuple:
    """torch's `_calculate_fan_in_and_fan_out`: dim 1 is the fan-in of a Conv2d weight and
    the fan-out's factor of a ConvTranspose2d weight (`[in, out, k, k]`); torch takes
    `size(1)` as fan_in either way."""
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def weight_scale(name: str, shape) -> tuple:
    """(a, b) of a generated tensor: see the docstring."""
    if name.endswith(".bias"):
        return BIAS, 0.0
    fan_in, fan_out = fan_in_out(name, shape)
    a = math.sqrt(6.0 / (fan_in + fan_out))
    for module, gain in GAINS.items():
        if name.startswith(module + "."):
            a *= gain
    return a, 0.0


def set_generated(module: nn.Module, prefix: str) -> dict:
    manifest = {}
    with torch.no_grad():
        for name, t in module.state_dict().items():
            full = prefix + name
            a, b = weight_scale(full, list(t.shape))
            t.copy_(torch.from_numpy(generate(full, list(t.shape), a, b)))
            manifest[full] = {"shape": list(t.shape), "a": a, "b": b}
    return manifest


# ---------------------------------------------------------------------------------------
# Inputs


def level_sizes(h: int, w: int):
    """mmdet ResNet-FPN level sizes: conv1 and the max pool halve with rounding up
    (kernel 7 / 3, padding 3 / 1), each stage's stride-2 3x3 convolution too, and P6 is
    `max_pool2d(P5, 1, stride=2)`."""
    up = lambda v: (v + 1) // 2  # noqa: E731
    sizes = []
    hh, ww = up(up(h)), up(up(w))
    for _ in range(4):
        sizes.append((hh, ww))
        hh, ww = up(hh), up(ww)
    sizes.append(((sizes[-1][0] - 1) // 2 + 1, (sizes[-1][1] - 1) // 2 + 1))
    return sizes


def frame_rgb(stream: str, t: int) -> np.ndarray:
    """RGB `[3, H, W]` f32 in [0, 255]: the world's crop at this frame's offset plus noise."""
    h, w = STREAMS[stream]
    ch, cw = (h + 2 * MARGIN) // BLOCK, (w + 2 * MARGIN) // BLOCK
    world = generate(f"vpsnet_fusion.{stream}.world", [3, ch, cw], 127.5, 127.5)
    world = world.repeat(BLOCK, axis=1).repeat(BLOCK, axis=2)
    oy, ox = MARGIN + SHIFT[0] * (t - 1), MARGIN + SHIFT[1] * (t - 1)
    crop = world[:, oy:oy + h, ox:ox + w]
    noise = generate(f"vpsnet_fusion.{stream}.f{t}.noise", [3, h, w], NOISE, 0.0)
    return np.clip(crop + noise, f32(0.0), f32(255.0)).astype(np.float32)


def frame_image(stream: str, t: int) -> torch.Tensor:
    """mmdet's Normalize in float32: `(rgb - mean) / std`, `[1, 3, H, W]`."""
    rgb = frame_rgb(stream, t)
    mean = np.array(MEAN, dtype=np.float32).reshape(3, 1, 1)
    std = np.array(STD, dtype=np.float32).reshape(3, 1, 1)
    return torch.from_numpy(((rgb - mean) / std).astype(np.float32))[None]


def frame_features(stream: str, t: int):
    h, w = STREAMS[stream]
    return tuple(
        torch.from_numpy(
            generate(f"vpsnet_fusion.{stream}.f{t}.p{l}", [CHANNELS, lh, lw], 1.0, 0.0)
        )[None]
        for l, (lh, lw) in zip(range(2, 7), level_sizes(h, w))
    )


# ---------------------------------------------------------------------------------------
# Recording


def summary(t: torch.Tensor, full: bool = False) -> dict:
    x = t.detach()
    if x.dim() == 4:
        assert x.shape[0] == 1
        x = x[0]
    flat = x.reshape(-1)
    stride = 1 if full else max(1, flat.numel() // SAMPLES)
    if stride > 1 and stride % 2 == 0:
        stride += 1  # odd, so that the samples visit both flow channels and all parities
    xd = x.double().reshape(x.shape[0], -1)
    return {
        "shape": list(x.shape),
        "stride": stride,
        "values": [float(v) for v in flat[::stride]],
        "channel_sums": [float(v) for v in xd.sum(1)],
        "channel_abs_sums": [float(v) for v in xd.abs().sum(1)],
    }


class FlowHost:
    """What `compute_flow` reads from `self`: the normalisation and the flow network."""

    def __init__(self, flownet2, compute_flow):
        self.mean = list(MEAN)
        self.std = list(STD)
        self.flownet2 = flownet2
        self._compute_flow = compute_flow

    def compute_flow(self, img, ref_img, scale_factor=1):
        return self._compute_flow(self, img, ref_img, scale_factor=scale_factor)


def main():
    repo = sys.argv[1] if len(sys.argv) > 1 else "/tmp/vps"
    off = load_official(repo)
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    class Args:
        pass

    flow2_args = Args()
    flow2_args.rgb_max = 255.0
    flow2_args.fp16 = False
    flownet2 = off["FlowNet2"](flow2_args, requires_grad=False)
    neck = off["BFPTcea"](
        in_channels=CHANNELS,
        num_levels=5,
        refine_level=0,
        refine_type="conv",
        center=0,
        nframes=2,
    )
    neck.init_weights()
    manifest = {}
    manifest.update(set_generated(flownet2, "flownet2."))
    manifest.update(set_generated(neck, "extra_neck."))
    flownet2.eval()
    neck.eval()
    host = FlowHost(flownet2, off["compute_flow"])

    # FlowNet2's intermediates.
    rec = {}

    def hook(name, first=False):
        def f(mod, inp, out):
            rec[name] = (out[0] if first else out).detach().clone()

        return f

    for name in ["flownetc", "flownets_1", "flownets_2", "flownets_d"]:
        getattr(flownet2, name).register_forward_hook(hook(name, first=True))
    flownet2.flownetfusion.register_forward_hook(hook("flownetfusion"))
    warps = []
    neck.flow_warping.register_forward_hook(lambda m, i, o: warps.append(o.detach().clone()))
    neck.liteflownet.register_forward_hook(hook("flow_fine"))
    neck.tcea_fusion.register_forward_hook(hook("tcea"))
    neck.refine.register_forward_hook(hook("refined"))

    prev = {}
    frames = []
    for stream, t in ORDER:
        img = frame_image(stream, t)
        feats = frame_features(stream, t)
        ref_img, ref_feats = prev.get(stream, (img, feats))
        rec.clear()
        warps.clear()
        with torch.no_grad():
            # simple_test: compute_flow on clones (it denormalises in place).
            flow, _ = host.compute_flow(img.clone(), ref_img.clone(), scale_factor=0.25)
            bsf = neck.gather(feats)
            ref_bsf = neck.gather(ref_feats)
            outs = neck(feats, ref_feats, flow)
        assert len(warps) == 2
        entry = {
            "stream": stream,
            "frame": t,
            "reference": t - 1 if stream in prev else t,
            "image": list(img.shape[2:]),
            "levels": [list(f.shape[2:]) for f in feats],
            "flownetc": summary(rec["flownetc"]),
            "flownets_1": summary(rec["flownets_1"]),
            "flownets_2": summary(rec["flownets_2"]),
            "flownets_d": summary(rec["flownets_d"]),
            "flownetfusion": summary(rec["flownetfusion"]),
            "flow_init": summary(flow, full=True),
            "bsf": summary(bsf),
            "ref_bsf": summary(ref_bsf),
            "warp_bsf": summary(warps[0]),
            "flow_fine": summary(rec["flow_fine"], full=True),
            "warp_bsf_fine": summary(warps[1]),
            "tcea": summary(rec["tcea"]),
            "refined": summary(rec["refined"]),
            "outputs": {f"p{l}": summary(o) for l, o in zip(range(2, 7), outs)},
        }
        frames.append(entry)
        prev[stream] = (img, feats)
        fl = flow.abs()
        ff = rec["flow_fine"].abs()
        print(
            f"{stream}{t}: image {tuple(img.shape[2:])} flow_init |max| {fl.max():.3f} "
            f"mean {fl.mean():.3f}; flow_fine |max| {ff.max():.3f} mean {ff.mean():.3f}; "
            f"fusion flow |max| {rec['flownetfusion'].abs().max():.3f}; "
            f"refined |max| {rec['refined'].abs().max():.3f}"
        )
    return manifest, frames


def write(manifest, frames):
    os.makedirs(OUT, exist_ok=True)
    fixture = {
        "source": f"mcahny/vps @ {COMMIT}",
        "generator": "tests/reference/make_vpsnet_fusion_fixtures.py",
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
        "config": {
            "in_channels": CHANNELS,
            "num_levels": 5,
            "refine_level": 0,
            "refine_type": "conv",
            "nframes": 2,
            "center": 0,
            "search_range": 4,
            "flow_scale_factor": 0.25,
            "rgb_max": 255.0,
            "div_flow": 20.0,
            "mean": MEAN,
            "std": STD,
        },
        "inputs": {
            "streams": {s: list(hw) for s, hw in STREAMS.items()},
            "order": [[s, t] for s, t in ORDER],
            "world": "vpsnet_fusion.{s}.world",
            "block": BLOCK,
            "margin": MARGIN,
            "shift": list(SHIFT),
            "noise": "vpsnet_fusion.{s}.f{t}.noise",
            "noise_amplitude": NOISE,
            "features": "vpsnet_fusion.{s}.f{t}.p{l}",
            "feature_amplitude": 1.0,
        },
        "weights": manifest,
        "frames": frames,
    }
    path = os.path.join(OUT, "vpsnet_fusion.json")
    with open(path, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)")


# ---------------------------------------------------------------------------------------
# The unit tests of kernels/src/ops/correlation.rs

# (name, [n, c, h, w], (pad_size, kernel_size, max_displacement, stride1, stride2), pixels)
CORRELATION_CASES = [
    ("search", [1, 5, 4, 6], (2, 1, 2, 1, 1), [(0, 0), (2, 3)]),
    ("flownet_c", [1, 3, 5, 7], (4, 1, 4, 1, 2), [(0, 6), (3, 2)]),
    ("stride1", [1, 4, 5, 6], (1, 1, 1, 2, 1), [(0, 0), (2, 1)]),
    ("wide_pad", [1, 2, 3, 4], (3, 1, 2, 1, 1), [(0, 0), (4, 5)]),
]


def print_correlation_cases():
    """Prints the `CASES` of correlation.rs's tests: the port's output on generated inputs."""

    def floats(values):
        return ", ".join(str(np.float32(v)) for v in values)

    print("    const CASES: &[&Case] = &[")
    for name, shape, params, pixels in CORRELATION_CASES:
        a = torch.from_numpy(generate(f"correlation.{name}.a", shape, 1.0, 0.0))
        b = torch.from_numpy(generate(f"correlation.{name}.b", shape, 1.0, 0.0))
        out = correlation_port(a, b, *params)[0]
        pad, k, md, s1, s2 = params
        print("        &Case {")
        print(f'            name: "{name}",')
        print(f"            shape: {shape},")
        print(
            f"            params: CorrelationParams {{ pad_size: {pad}, kernel_size: {k}, "
            f"max_displacement: {md}, stride1: {s1}, stride2: {s2} }},"
        )
        print(f"            out_size: ({out.shape[1]}, {out.shape[2]}),")
        print(f"            pixels: [{pixels[0]}, {pixels[1]}],")
        sums = out.double().sum(dim=(1, 2)).float()
        print(f"            channel_sums: &[{floats(sums)}],")
        at = [floats(out[:, y, x]) for y, x in pixels]
        print(f"            at_pixels: [&[{at[0]}], &[{at[1]}]],")
        print("        },")
    print("    ];")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--correlation"]:
        print_correlation_cases()
        sys.exit(0)
    manifest_, frames_ = main()
    write(manifest_, frames_)
