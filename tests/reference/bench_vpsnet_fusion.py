#!/usr/bin/env python3
"""`flownet2` and `vpsnet_fusion` against VPSNet's official flow network and fusion neck
(mcahny/vps @ 138503ed: `PanopticFuseTrack.compute_flow` with FlowNet2, and `BFPTcea`), same
weights and inputs, on the CPU, one run.

    pip install torch numpy
    CARGO_BUILD_JOBS=1 cargo build --release -p plugin-tracking --example bench_vpsnet_fusion
    python3 tests/reference/bench_vpsnet_fusion.py /path/to/vps [--size 512x1024] \\
        [--threads 2,1] [--frames 4] [--warmup 1] [--correlation gemm|shift]

(the repository, or a bare mirror of it: only `git show COMMIT:path` is used, as by
make_vpsnet_fusion_fixtures.py). Our side runs through `cargo run --release` (the build above
makes it start at once); `--exe PATH` runs a built binary instead.

Sizes: the official widths (FlowNet2 as `PanopticFuseTrack.__init__` builds it, 162.5 M
weights; `BFPTcea(in_channels=256, num_levels=5, refine_level=0, refine_type='conv',
center=0, nframes=2)`, configs/cityscapes/fusetrack.py's neck) on frames of `--size`:
default 512x1024, half a Cityscapes frame, so that a run takes minutes (FlowNet2 on a CPU
takes seconds a frame); `--size 1024x2048` is the full frame (about 4 times longer). The FPN
levels p2..p6 have mmdet's ResNet-FPN sizes for that input (128x256 .. 8x16 at 512x1024).

Official side, from make_vpsnet_fusion_fixtures.py (`load_official`): FlowNet2, FlowNetC /
S / SD / Fusion and their submodules, `compute_flow`, BFPTcea, LiteFlowNetCorr, WarpingLayer
(`F.grid_sample`) and TCEA_Fusion, executed unmodified, with stand-ins for the mmcv / mmdet
imports. Timed per frame, separately: the call `compute_flow(img, ref_img,
scale_factor=0.25)` (denormalise, FlowNet2, crop, resize: what the `flownet2` node does), and
the call `extra_neck(x, ref_x, flow)` (what the `vpsnet_fusion` node does; the official neck
gathers the reference's five levels again every frame, ours keeps the reference's gathered
feature from the frame before: `plugins/tracking/src/vpsnet_fusion.rs` says why that changes
no result; that gather is part of the official time). The clones `simple_test` passes to
`compute_flow` are made before the clock starts.

The peer of the CUDA extensions. FlowNet2 calls three CUDA extensions (correlation_package,
resample2d_package, channelnorm_package) that have no CPU version; the fixture script
replaces them by exact line-by-line torch ports of their kernels (a Python loop per
displacement and kernel offset, double-precision weights): right for fidelity, unfair for
timing. Here each is the fastest vectorised torch formulation found, running torch's
compiled kernels, so that what is compared is our kernels against torch's, as the official
code on a GPU compares CUDA kernels against cuDNN:
- Correlation (`--correlation gemm`, default; kernel_size 1 and stride1 1, the only settings
  VPSNet uses): per vertical displacement, the first input's pixel vectors in tiles of 32
  columns are multiplied (one batched GEMM, `torch.bmm`, MKL) by the second input's columns
  that tile can reach (32 + 2·max_displacement), and the band of the displacements
  (every stride2-th diagonal) is read out of the product. That computes 3.4 (FlowNetC:
  72 columns for 21 displacements) to 4.4 (LiteFlowNetCorr: 40 for 9) times the products
  the kernel needs, yet on this machine it is about 4 times faster than
  `--correlation shift`, the direct form (one `(x1 · shifted x2).sum(1)` per displacement,
  441 and 81 passes over memory-bound element-wise kernels); a C++ CPU port of the CUDA
  kernel would be the ideal peer, and there is none. Both agree with the fixture's port to
  float rounding (checked at the start on small inputs).
- Resample2d (bilinear, kernel_size 1): `F.grid_sample(padding_mode='border',
  align_corners=True)` at `(x + u, y + v)` normalised by `2 / (size - 1)`. The kernel
  clamps the four neighbours' indices to the image while keeping the fraction, which is
  bilinear sampling at the position clamped to the image (the two weights of a clamped
  pair add up to 1): exactly what border padding does. The result is the same function;
  the normalise/unnormalise round trip moves the positions by float rounding (about 1e-7
  of the size), so it agrees with the fixture's port to about 1e-6 (checked at the start).
- ChannelNorm (norm_deg 2): `torch.linalg.vector_norm(x, 2, dim=1, keepdim=True)`.
Everything else on the official side (convolutions through oneDNN, LeakyReLU, upsampling,
`grid_sample`, pooling, TCEA's element-wise work) is torch as the official code calls it.

Inputs, generated identically on both sides (the Rust example's doc gives the formulas):
weights from their official names by the fixture script's recipe (`fx.set_generated`:
Xavier-uniform bounds, its two gains, biases in ±0.1), whose manifest is passed to the
example so that it generates the same tensors bit for bit; frames: the fixture script's
recipe under `vpsnet_fusion_bench.*` names (a moving crop of a blocky RGB world plus noise,
normalised; FPN levels uniform in [-1, 1)). The first frame is its own reference (the
official test); later frames use the previous one.

Check, before timing: the three ports against the fixture script's kernel ports on small
inputs, then both sides on the first two frames of the stream (the example's `--dump`): the
flow and the five fused levels, max |ours - official| (relative to the largest official
value), which must stay within float rounding.

Both sides run FRAMES frames and drop the first WARMUP (the first frame, its own reference);
the table gives the medians of the others, per node. Breakdown columns: official, hooks
around the port modules (correlation; warps = resample2d + channelnorm in FlowNet2,
WarpingLayer's grid_sample in the neck) and around every nn.Conv2d / nn.ConvTranspose2d
(convolutions; their LeakyReLU is a separate module, in "rest"), inside the timed calls.
Ours: the convolutions (activation fused) inside the timed calls (`KERNELS_PROFILE`), the
correlation and warps timed by the example outside them on inputs of the same shapes (see
its doc). "rest" is the node's time less those.

Threads: torch.set_num_threads(T) and RAYON_NUM_THREADS=T for each T of --threads.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import types

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_vpsnet_fusion_fixtures as fx  # noqa: E402

from machine import cpu_name  # noqa: E402

ROOT = fx.ROOT
EXE = os.path.join(ROOT, "target", "release", "examples", "bench_vpsnet_fusion")
CARGO = ["cargo", "run", "--release", "-q", "-p", "plugin-tracking", "--example", "bench_vpsnet_fusion", "--"]

CHANNELS = fx.CHANNELS
LEVELS = ["p2", "p3", "p4", "p5", "p6"]
# Frames (the same as bench_vpsnet_fusion.rs).
BLOCK = 4
MARGIN = 32
SHIFT = (2, 3)
NOISE = 6.0
TILE = 32

# Time spent in the parts, accumulated by the modules and hooks below (seconds).
PARTS = {"correlation": 0.0, "warps": 0.0, "convs": 0.0}
CORRELATION = {"impl": "gemm"}


# ---------------------------------------------------------------------------------------
# The CUDA extensions, vectorised in torch (see the docstring)


def correlation_gemm(input1, input2, pad_size, kernel_size, max_displacement, stride1, stride2):
    """`correlation_forward` for kernel_size 1, stride1 1: banded batched GEMMs."""
    b, c, h, w = input1.shape
    assert kernel_size == 1 and stride1 == 1 and pad_size == max_displacement, "VPSNet's settings"
    r = max_displacement // stride2
    d = 2 * r + 1
    nt = -(-w // TILE)
    wt = nt * TILE
    span = TILE + 2 * max_displacement
    out = input1.new_empty(b, d, d, h, nt, TILE)
    for n in range(b):
        # [h·nt, TILE, c]: the first input's vectors, tile by tile.
        a = F.pad(input1[n], (0, wt - w)).view(c, h, nt, TILE).permute(1, 2, 3, 0).reshape(h * nt, TILE, c)
        x2 = F.pad(input2[n], (pad_size, pad_size + wt - w, pad_size, pad_size))
        for tj in range(-r, r + 1):
            rows = x2[:, pad_size + tj * stride2:pad_size + tj * stride2 + h]
            # [h·nt, c, span]: the columns each tile reaches.
            reach = rows.unfold(2, span, TILE).permute(1, 2, 0, 3).reshape(h * nt, c, span)
            m = torch.bmm(a, reach)
            # Displacement ti of pixel x of a tile: column x + max_displacement + ti·stride2.
            band = m.as_strided((h * nt, TILE, d), (TILE * span, span + 1, stride2))
            out[n, tj + r] = band.view(h, nt, TILE, d).permute(3, 0, 1, 2)
    return out.view(b, d * d, h, wt)[..., :w] / c


def correlation_shift(input1, input2, pad_size, kernel_size, max_displacement, stride1, stride2):
    """`correlation_forward` for kernel_size 1, stride1 1: a product and sum per displacement."""
    b, c, h, w = input1.shape
    assert kernel_size == 1 and stride1 == 1 and pad_size == max_displacement, "VPSNet's settings"
    r = max_displacement // stride2
    d = 2 * r + 1
    x2 = F.pad(input2, (pad_size,) * 4)
    out = input1.new_empty(b, d * d, h, w)
    for tj in range(-r, r + 1):
        for ti in range(-r, r + 1):
            ys, xs = pad_size + tj * stride2, pad_size + ti * stride2
            torch.sum(input1 * x2[:, :, ys:ys + h, xs:xs + w], 1, out=out[:, (tj + r) * d + ti + r])
    return out / c


CORRELATIONS = {"gemm": correlation_gemm, "shift": correlation_shift}


class Correlation(nn.Module):
    """correlation_package.correlation.Correlation, vectorised; its time goes to PARTS."""

    def __init__(self, pad_size=0, kernel_size=0, max_displacement=0, stride1=1, stride2=2,
                 corr_multiply=1):
        super().__init__()
        self.args = (pad_size, kernel_size, max_displacement, stride1, stride2)

    def forward(self, input1, input2):
        t = time.perf_counter()
        out = CORRELATIONS[CORRELATION["impl"]](input1, input2, *self.args)
        PARTS["correlation"] += time.perf_counter() - t
        return out


def resample2d_grid(input1, input2):
    """Resample2d (bilinear, kernel_size 1) as grid_sample with border padding."""
    b, c, h, w = input1.shape
    gx = torch.arange(w, dtype=input2.dtype).view(1, 1, w) + input2[:, 0]
    gy = torch.arange(h, dtype=input2.dtype).view(1, h, 1) + input2[:, 1]
    grid = torch.stack((gx * (2.0 / (w - 1)) - 1.0, gy * (2.0 / (h - 1)) - 1.0), dim=-1)
    return F.grid_sample(input1, grid, mode="bilinear", padding_mode="border", align_corners=True)


class Resample2d(nn.Module):
    """resample2d_package.resample2d.Resample2d as grid_sample; its time goes to PARTS."""

    def __init__(self, kernel_size=1, bilinear=True):
        super().__init__()
        assert kernel_size == 1 and bilinear

    def forward(self, input1, input2):
        t = time.perf_counter()
        out = resample2d_grid(input1, input2)
        PARTS["warps"] += time.perf_counter() - t
        return out


def channel_norm(input1):
    return torch.linalg.vector_norm(input1, 2, dim=1, keepdim=True)


class ChannelNorm(nn.Module):
    """channelnorm_package.channelnorm.ChannelNorm (norm_deg 2); its time goes to PARTS."""

    def __init__(self, norm_deg=2):
        super().__init__()
        assert norm_deg == 2

    def forward(self, input1):
        t = time.perf_counter()
        out = channel_norm(input1)
        PARTS["warps"] += time.perf_counter() - t
        return out


def check_ports():
    """The vectorised ports against the fixture script's kernel ports, on small inputs."""
    g = torch.Generator().manual_seed(7)
    errs = {}
    for name, params in [("flownet_c", (20, 1, 20, 1, 2)), ("liteflownet", (4, 1, 4, 1, 1))]:
        x1 = torch.randn(1, 9, 11, 70, generator=g)
        x2 = torch.randn(1, 9, 11, 70, generator=g)
        ref = fx.correlation_port(x1, x2, *params)
        for impl, f in CORRELATIONS.items():
            err = float((f(x1, x2, *params) - ref).abs().max())
            assert err < 1e-5, (name, impl, err)
            errs[f"correlation {name} ({impl})"] = err
    x = torch.rand(1, 3, 13, 17, generator=g) - 0.5
    # Flows of up to ±12 pixels: positions inside, between and well outside the image.
    flow = (torch.rand(1, 2, 13, 17, generator=g) - 0.5) * 24.0
    flow[0, :, 0, :4] = torch.tensor([[0.0, -0.5, 16.25, -3.0], [0.0, 12.0, -0.75, 0.5]])
    err = float((resample2d_grid(x, flow) - fx.resample2d_port(x, flow)).abs().max())
    assert err < 1e-5, ("resample2d", err)
    errs["resample2d (grid_sample)"] = err
    err = float((channel_norm(flow) - fx.ChannelNorm()(flow)).abs().max())
    assert err < 1e-5, ("channelnorm", err)
    errs["channelnorm"] = err
    return errs


# ---------------------------------------------------------------------------------------
# Inputs (the same as bench_vpsnet_fusion.rs)


def frame_image(size, t):
    """mmdet's Normalize in f32 of frame t (1-based): `[1, 3, H, W]`."""
    h, w = size
    ch, cw = (h + 2 * MARGIN) // BLOCK, (w + 2 * MARGIN) // BLOCK
    world = fx.generate("vpsnet_fusion_bench.world", [3, ch, cw], 127.5, 127.5)
    world = world.repeat(BLOCK, axis=1).repeat(BLOCK, axis=2)
    oy, ox = MARGIN + SHIFT[0] * (t - 1), MARGIN + SHIFT[1] * (t - 1)
    noise = fx.generate(f"vpsnet_fusion_bench.f{t}.noise", [3, h, w], NOISE, 0.0)
    rgb = np.clip(world[:, oy:oy + h, ox:ox + w] + noise, np.float32(0.0), np.float32(255.0))
    mean = np.array(fx.MEAN, dtype=np.float32).reshape(3, 1, 1)
    std = np.array(fx.STD, dtype=np.float32).reshape(3, 1, 1)
    return torch.from_numpy(((rgb - mean) / std).astype(np.float32))[None]


def frame_features(size, t):
    return tuple(
        torch.from_numpy(fx.generate(f"vpsnet_fusion_bench.f{t}.{l}", [CHANNELS, lh, lw], 1.0, 0.0))[None]
        for l, (lh, lw) in zip(LEVELS, fx.level_sizes(*size))
    )


# ---------------------------------------------------------------------------------------
# The official side


def add_conv_hooks(modules):
    start = {}

    def pre(m, inp):
        start[id(m)] = time.perf_counter()

    def post(m, inp, out):
        PARTS["convs"] += time.perf_counter() - start.pop(id(m))

    for root in modules:
        for m in root.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.register_forward_pre_hook(pre)
                m.register_forward_hook(post)


def add_warp_hooks(neck):
    start = {}

    def pre(m, inp):
        start["t"] = time.perf_counter()

    def post(m, inp, out):
        PARTS["warps"] += time.perf_counter() - start.pop("t")

    neck.flow_warping.register_forward_pre_hook(pre)
    neck.flow_warping.register_forward_hook(post)


def build(official):
    class Args:
        pass

    flow2_args = Args()
    flow2_args.rgb_max = 255.0
    flow2_args.fp16 = False
    flownet2 = official["FlowNet2"](flow2_args, requires_grad=False)
    neck = official["BFPTcea"](in_channels=CHANNELS, num_levels=5, refine_level=0, refine_type="conv",
                               center=0, nframes=2)
    manifest = {}
    manifest.update(fx.set_generated(flownet2, "flownet2."))
    manifest.update(fx.set_generated(neck, "extra_neck."))
    flownet2.eval()
    neck.eval()
    return fx.FlowHost(flownet2, official["compute_flow"]), neck, manifest


def parts_snapshot():
    out = dict(PARTS)
    for k in PARTS:
        PARTS[k] = 0.0
    return {k: v * 1e3 for k, v in out.items()}


def run_official(host, neck, images, feats, warmup):
    """Per frame: flow ms, fusion ms, their parts, and the last frame's flow and levels."""
    rows = []
    prev = None
    flow = outs = None
    with torch.no_grad():
        for i, (img, fe) in enumerate(zip(images, feats)):
            ref_img, ref_fe = prev if prev is not None else (img, fe)
            a, b = img.clone(), ref_img.clone()
            parts_snapshot()
            t = time.perf_counter()
            flow, _ = host.compute_flow(a, b, scale_factor=0.25)
            flow_ms = (time.perf_counter() - t) * 1e3
            flow_parts = parts_snapshot()
            t = time.perf_counter()
            outs = neck(fe, ref_fe, flow)
            fusion_ms = (time.perf_counter() - t) * 1e3
            fusion_parts = parts_snapshot()
            print(f"  official frame {i + 1}: compute_flow {flow_ms:.0f} ms, extra_neck {fusion_ms:.0f} ms",
                  file=sys.stderr)
            if i >= warmup:
                rows.append((flow_ms, fusion_ms, flow_parts, fusion_parts))
            prev = (img, fe)
    return rows, flow, outs


# ---------------------------------------------------------------------------------------
# Our side


def run_ours(args, manifest_path, threads, frames, warmup, dump=None):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), KERNELS_PROFILE="1")
    env.setdefault("CARGO_BUILD_JOBS", "1")
    cmd = ([args.exe] if args.exe else CARGO) + [
        "--size", f"{args.size[0]}x{args.size[1]}", "--frames", str(frames), "--warmup", str(warmup),
        "--manifest", manifest_path,
    ]
    if dump:
        cmd += ["--dump", dump]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench_vpsnet_fusion failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    for line in proc.stderr.splitlines():
        if line.startswith("frame "):
            print(f"  ours {line}", file=sys.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(dump, flow, outs):
    """max |ours - official| of the flow and each fused level, and relative to the official
    tensor's largest magnitude."""
    res = {}
    for name, ref in [("flow", flow)] + list(zip(LEVELS, outs)):
        ref = ref[0].numpy()
        ours = np.fromfile(os.path.join(dump, f"{name}.f32"), dtype="<f4")
        assert ours.size == ref.size, (name, ours.size, ref.shape)
        diff = float(np.abs(ours.reshape(ref.shape) - ref).max())
        res[name] = (diff, diff / max(float(np.abs(ref).max()), 1e-30))
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("repo", nargs="?", default=os.environ.get("VPS_REPO", "/tmp/vps"))
    ap.add_argument("--size", default="512x1024", help="HxW, multiples of 64 (1024x2048: a Cityscapes frame)")
    ap.add_argument("--threads", default="2,1", help="thread counts, comma-separated")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--correlation", choices=sorted(CORRELATIONS), default="gemm")
    ap.add_argument("--exe", default=None, help="a built bench_vpsnet_fusion (default: cargo run)")
    args = ap.parse_args()
    args.size = tuple(int(v) for v in args.size.split("x"))
    assert len(args.size) == 2 and all(v % 64 == 0 for v in args.size), "HxW, multiples of 64"
    assert args.frames > args.warmup >= 1
    assert max(SHIFT) * (args.frames - 1) <= 2 * MARGIN, "too many frames for the world's margin"
    threads = [int(v) for v in args.threads.split(",")]
    CORRELATION["impl"] = args.correlation

    errs = check_ports()
    for k, v in errs.items():
        print(f"port check: {k} vs the fixture's kernel port: max |diff| {v:.1e}", file=sys.stderr)

    # flow_utils.py imports cv2 at module level for its flow visualisation, which is not on
    # the path; an empty module stands in where OpenCV is not installed.
    try:
        import cv2  # noqa: F401
    except ImportError:
        sys.modules["cv2"] = types.ModuleType("cv2")
    # What load_official registers for the CUDA extensions.
    fx.Correlation, fx.Resample2d, fx.ChannelNorm = Correlation, Resample2d, ChannelNorm
    official = fx.load_official(args.repo)
    t = time.perf_counter()
    host, neck, manifest = build(official)
    print(f"official modules built, weights generated in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    add_conv_hooks([host.flownet2, neck])
    add_warp_hooks(neck)
    t = time.perf_counter()
    images = [frame_image(args.size, i) for i in range(1, args.frames + 1)]
    feats = [frame_features(args.size, i) for i in range(1, args.frames + 1)]
    print(f"generated {args.frames} frames in {time.perf_counter() - t:.1f} s", file=sys.stderr)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        manifest_path = os.path.join(tmp, "manifest.json")
        with open(manifest_path, "w") as f:
            json.dump(manifest, f)
        # Both sides on the first two frames before timing.
        torch.set_num_threads(max(threads))
        print("check: the first two frames on both sides", file=sys.stderr)
        _, flow, outs = run_official(host, neck, images[:2], feats[:2], 1)
        dump = os.path.join(tmp, "dump")
        run_ours(args, manifest_path, max(threads), 2, 1, dump)
        agree = compare(dump, flow, outs)
        flow_max = float(flow.abs().max())
        for name, (diff, rel) in agree.items():
            print(f"check frame 2 {name}: max |ours - official| {diff:.2e} ({rel:.1e} of the largest value)",
                  file=sys.stderr)
            assert rel < 1e-4, f"{name}: the two sides disagree ({diff} absolute, {rel} relative)"

        for n_threads in threads:
            torch.set_num_threads(n_threads)
            print(f"{n_threads} threads", file=sys.stderr)
            off, _, _ = run_official(host, neck, images, feats, args.warmup)
            ours = run_ours(args, manifest_path, n_threads, args.frames, args.warmup)
            med = lambda v: float(np.median(v))  # noqa: E731
            rows.append(dict(
                threads=n_threads, ours_threads=ours["threads"],
                off_flow=med([r[0] for r in off]), off_fusion=med([r[1] for r in off]),
                off_flow_parts={k: med([r[2][k] for r in off]) for k in PARTS},
                off_fusion_parts={k: med([r[3][k] for r in off]) for k in PARTS},
                off_flow_frames=[r[0] for r in off], off_fusion_frames=[r[1] for r in off],
                ours=ours,
            ))

    h, w = args.size
    timed = args.frames - args.warmup
    levels = fx.level_sizes(h, w)
    print(f"VPSNet flow (FlowNet2 via compute_flow) and fusion neck (BFPTcea) per frame, {h}x{w} input "
          f"(FlowNet2 at {h}x{w}, flow and fusion at P2 {levels[0][0]}x{levels[0][1]}, levels p2..p6 of 256 ch), "
          f"median of {timed} frames after {args.warmup} (torch {torch.__version__}, mcahny/vps {fx.COMMIT[:8]}, "
          f"official correlation peer: {args.correlation})")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs")
    print(f"check (frame 2, {max(threads)} threads): max |ours - official| flow {agree['flow'][0]:.1e} px "
          f"(largest |flow| {flow_max:.2f}), fused p2 {agree['p2'][0]:.1e} ({agree['p2'][1]:.1e} relative), "
          f"largest over p2..p6 {max(agree[l][1] for l in LEVELS):.1e} relative")
    print()
    print("| threads | node | official (ms) | ours (ms) | ours / official | official: correlation / warps / convs / rest (ms) "
          "| ours: correlation / warps / convs / rest (ms) |")
    print("|---:|---|---:|---:|---:|---|---|")

    def split(total, parts):
        rest = total - parts["correlation"] - parts["warps"] - parts["convs"]
        return f"{parts['correlation']:.0f} / {parts['warps']:.0f} / {parts['convs']:.0f} / {rest:.0f}"

    for r in rows:
        o = r["ours"]
        ours_parts = {
            "flow": dict(correlation=o["flow_correlation_ms"], warps=o["flow_warps_ms"],
                         convs=o["flow_convs_ms"] or 0.0),
            "fusion": dict(correlation=o["fusion_correlation_ms"], warps=o["fusion_warps_ms"],
                           convs=o["fusion_convs_ms"] or 0.0),
        }
        for node, key, off_total, off_parts in [
            ("flownet2", "flow", r["off_flow"], r["off_flow_parts"]),
            ("vpsnet_fusion", "fusion", r["off_fusion"], r["off_fusion_parts"]),
        ]:
            ours_total = o[f"{key}_median_ms"]
            print(f"| {r['threads']} | {node} | {off_total:.0f} | {ours_total:.0f} | {ours_total / off_total:.2f} | "
                  f"{split(off_total, off_parts)} | {split(ours_total, ours_parts[key])} |")
        off_both = r["off_flow"] + r["off_fusion"]
        ours_both = o["flow_median_ms"] + o["fusion_median_ms"]
        print(f"| {r['threads']} | both | {off_both:.0f} | {ours_both:.0f} | {ours_both / off_both:.2f} | | |")
    print()
    for r in rows:
        o = r["ours"]
        print(f"{r['threads']} threads (ours: rayon pool of {r['ours_threads']}): per timed frame, official flow "
              f"{', '.join(f'{v:.0f}' for v in r['off_flow_frames'])} ms, fusion "
              f"{', '.join(f'{v:.0f}' for v in r['off_fusion_frames'])} ms; ours flow "
              f"{', '.join(f'{v:.0f}' for v in o['flow_frame_ms'])} ms, fusion "
              f"{', '.join(f'{v:.0f}' for v in o['fusion_frame_ms'])} ms")
    print("official: the calls compute_flow(img, ref_img, 0.25) and extra_neck(x, ref_x, flow), the CUDA extensions "
          "as vectorised torch (see the script's docstring); ours: Node::process of flownet2 and vpsnet_fusion. "
          "Parts: official by hooks inside the timed calls; ours' convolutions inside them (KERNELS_PROFILE), its "
          "correlation and warps timed apart on same-shaped inputs; rest = node - parts.")


if __name__ == "__main__":
    main()
