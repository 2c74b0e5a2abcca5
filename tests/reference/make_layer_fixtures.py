#!/usr/bin/env python3
"""Writes the fixtures of kernels/tests/layers_vs_torch.rs: inputs, weights and PyTorch's
outputs for every CPU layer and mode, in kernels/tests/fixtures/layers/.

    pip install torch torchvision numpy      # CPU wheels are enough
    python3 tests/reference/make_layer_fixtures.py

Run by developers, not by CI (CI reads the committed fixtures). Output format:
- layers.bin: every tensor's raw little-endian bytes, one after another;
- layers.json: {"cases": [{"name", "op", "params": {...}, "tensors": {key: {"dtype", "shape",
  "offset", "len"}}}]}, where offset/len are byte positions in layers.bin and dtype is one of
  f32, i64, u8. By convention input keys are named x, weight, bias, ... and expected outputs
  start with "out".

TensorFlow is not installed (tensorflow-cpu is far too large for this), so the TF resize modes
are checked against a small NumPy transcription of TF's kernels, written below from
tensorflow/core/kernels/image/resize_bilinear_op.cc and resize_nearest_neighbor_op.cc
(`CalculateResizeScale`, `LegacyScaler`, `HalfPixelScaler`, `HalfPixelScalerForNN`,
`compute_interpolation_weights`, `compute_lerp`), computed in float32 as TF does:
- scale = (in-1)/(out-1) if align_corners and out > 1 else in/out
- bilinear legacy:     src = d*scale
  bilinear half-pixel: src = (d+0.5)*scale - 0.5
  lower = max(floor(src), 0); upper = min(ceil(src), in-1); lerp = src - floor(src)
  top = tl + (tr-tl)*x_lerp; bottom = bl + (br-bl)*x_lerp; out = top + (bottom-top)*y_lerp
- nearest legacy:       idx = min(floor(d*scale), in-1)
  nearest align corners: idx = min(round(d*scale), in-1)   (round half away from zero)
  nearest half-pixel:    idx = max(min(floor((d+0.5)*scale), in-1), 0)
"""

import json
import os

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.detection.transform import GeneralizedRCNNTransform

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "kernels", "tests", "fixtures", "layers")

torch.manual_seed(0)
torch.set_num_threads(1)
rng = np.random.default_rng(0)

cases = []
blob = bytearray()


def add_tensor(t):
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().numpy()
    a = np.ascontiguousarray(t)
    if a.dtype == np.float32:
        dt = "f32"
    elif a.dtype == np.int64:
        dt = "i64"
    elif a.dtype == np.uint8:
        dt = "u8"
    else:
        raise ValueError(a.dtype)
    data = a.astype(a.dtype.newbyteorder("<")).tobytes()
    off = len(blob)
    blob.extend(data)
    return {"dtype": dt, "shape": list(a.shape), "offset": off, "len": len(data)}


def case(name, op, params, **tensors):
    cases.append(
        {
            "name": name,
            "op": op,
            "params": params,
            "tensors": {k: add_tensor(v) for k, v in tensors.items()},
        }
    )


def randn(*shape, scale=1.0):
    return (torch.randn(*shape) * scale).float()


# ---------------------------------------------------------------- convolutions
def conv_case(name, x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1, bias=True):
    x = randn(*x_shape)
    w = randn(*w_shape, scale=0.5)
    b = randn(w_shape[0]) if bias else None
    out = F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    pair = lambda v: list(v) if isinstance(v, tuple) else [v, v]
    params = {"stride": pair(stride), "padding": pair(padding), "dilation": pair(dilation), "groups": groups}
    tensors = {"x": x, "weight": w, "out": out}
    if b is not None:
        tensors["bias"] = b
    case(name, "conv2d", params, **tensors)


conv_case("conv3x3_pad1_batch2", (2, 3, 9, 11), (8, 3, 3, 3), padding=1)
conv_case("conv3x3_stride2", (1, 8, 13, 12), (16, 8, 3, 3), stride=2, padding=1)
conv_case("conv3x3_dilation2", (1, 4, 12, 12), (6, 4, 3, 3), padding=2, dilation=2)
conv_case("conv3x3_groups2", (1, 8, 10, 10), (12, 4, 3, 3), padding=1, groups=2)
conv_case("conv_depthwise3x3", (1, 16, 14, 14), (16, 1, 3, 3), padding=1, groups=16)
conv_case("conv_depthwise3x3_stride2", (2, 16, 15, 15), (16, 1, 3, 3), stride=2, padding=1, groups=16)
conv_case("conv_depthwise5x5_mult2", (1, 8, 11, 9), (16, 1, 5, 5), padding=2, groups=8)
conv_case("conv1x1", (1, 32, 9, 9), (24, 32, 1, 1))
conv_case("conv1x1_stride2", (1, 32, 9, 9), (16, 32, 1, 1), stride=2, bias=False)
conv_case("conv7x7_stride2_pad3", (1, 3, 32, 32), (16, 3, 7, 7), stride=2, padding=3)
conv_case("conv3x3_large_tiled", (1, 32, 40, 40), (64, 32, 3, 3), padding=1)
conv_case("conv1x1_large", (1, 64, 36, 36), (48, 64, 1, 1))
conv_case("conv_asymmetric", (1, 4, 11, 13), (5, 4, 3, 3), stride=(2, 1), padding=(1, 0), dilation=(1, 2))
conv_case("conv_no_padding_5x5", (1, 3, 12, 10), (4, 3, 5, 5), bias=False)

# conv + batch norm (eval), folded; and torch's own fused weights
x = randn(1, 6, 10, 10)
conv = torch.nn.Conv2d(6, 10, 3, padding=1, bias=True)
bn = torch.nn.BatchNorm2d(10, eps=1e-5)
with torch.no_grad():
    bn.weight.copy_(randn(10))
    bn.bias.copy_(randn(10))
    bn.running_mean.copy_(randn(10))
    bn.running_var.copy_(torch.rand(10) + 0.5)
conv.eval()
bn.eval()
with torch.no_grad():
    out = bn(conv(x))
    fw, fb = torch.nn.utils.fusion.fuse_conv_bn_weights(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
    )
    out_relu = torch.relu(out)
case(
    "conv_bn_fold",
    "conv_bn",
    {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1, "eps": bn.eps},
    x=x,
    weight=conv.weight,
    bias=conv.bias,
    gamma=bn.weight,
    beta=bn.bias,
    mean=bn.running_mean,
    var=bn.running_var,
    out=out,
    out_relu=out_relu,
    out_weight=fw,
    out_bias=fb,
)


def convt_case(name, x_shape, w_shape, stride=1, padding=0, output_padding=0, dilation=1, groups=1, bias=True):
    x = randn(*x_shape)
    w = randn(*w_shape, scale=0.5)
    b = randn(w_shape[1] * groups) if bias else None
    out = F.conv_transpose2d(
        x, w, b, stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation
    )
    params = {
        "stride": [stride, stride],
        "padding": [padding, padding],
        "output_padding": [output_padding, output_padding],
        "dilation": [dilation, dilation],
        "groups": groups,
    }
    tensors = {"x": x, "weight": w, "out": out}
    if b is not None:
        tensors["bias"] = b
    case(name, "conv_transpose2d", params, **tensors)


convt_case("convT2x2_stride2", (2, 8, 6, 6), (8, 4, 2, 2), stride=2)
convt_case("convT3x3_stride2_outpad", (1, 6, 5, 7), (6, 5, 3, 3), stride=2, padding=1, output_padding=1)
convt_case("convT4x4_stride2_groups2", (1, 8, 5, 5), (8, 3, 4, 4), stride=2, padding=1, groups=2)
convt_case("convT3x3_dilation2", (1, 4, 6, 6), (4, 3, 3, 3), padding=1, dilation=2, bias=False)

# ---------------------------------------------------------------- linear, norms
x = randn(5, 33)
w = randn(17, 33, scale=0.3)
b = randn(17)
case("linear", "linear", {}, x=x, weight=w, bias=b, out=F.linear(x, w, b))
x = randn(2, 3, 4, 33)
case("linear_nd_nobias", "linear", {}, x=x, weight=w, out=F.linear(x, w))

x = randn(2, 32, 5, 6, scale=3.0) + 1.0
g = randn(32)
bb = randn(32)
case("group_norm", "group_norm", {"groups": 8, "eps": 1e-5}, x=x, gamma=g, beta=bb, out=F.group_norm(x, 8, g, bb, 1e-5))
x = randn(1, 12, 7, 7)
case("group_norm_noaffine_g1", "group_norm", {"groups": 1, "eps": 1e-5}, x=x, out=F.group_norm(x, 1, None, None, 1e-5))
x = randn(2, 6, 5, 5)
m, v, g, bb = randn(6), torch.rand(6) + 0.5, randn(6), randn(6)
case(
    "batch_norm",
    "batch_norm",
    {"eps": 1e-3},
    x=x,
    mean=m,
    var=v,
    gamma=g,
    beta=bb,
    out=F.batch_norm(x, m, v, g, bb, training=False, eps=1e-3),
)

# ---------------------------------------------------------------- activations
x = torch.linspace(-8, 8, 4 * 8 * 5 * 5).reshape(4, 8, 5, 5)[:, torch.randperm(8)].contiguous().float()
x[0, 0, 0, :3] = torch.tensor([-3.0, 3.0, 0.0])
for name, fn, params in [
    ("relu", F.relu, {}),
    ("relu6", F.relu6, {}),
    ("leaky_relu", lambda t: F.leaky_relu(t, 0.1), {"slope": 0.1}),
    ("sigmoid", torch.sigmoid, {}),
    ("tanh", torch.tanh, {}),
    ("silu", F.silu, {}),
    ("hardswish", F.hardswish, {}),
    ("hardsigmoid", F.hardsigmoid, {}),
]:
    case("act_" + name, "activation", {"kind": name, **params}, x=x, out=fn(x))
pw = torch.rand(8) * 0.5
case("act_prelu", "prelu", {}, x=x, weight=pw, out=F.prelu(x, pw))
pw1 = torch.tensor([0.25])
case("act_prelu_single", "prelu", {}, x=x, weight=pw1, out=F.prelu(x, pw1))

# ---------------------------------------------------------------- pooling
def pool_case(name, kind, x_shape, k, s, p=0, d=1, ceil=False, cip=True, div=None):
    x = randn(*x_shape)
    if kind == "max":
        out = F.max_pool2d(x, k, s, p, d, ceil_mode=ceil)
    else:
        out = F.avg_pool2d(x, k, s, p, ceil_mode=ceil, count_include_pad=cip, divisor_override=div)
    params = {"kind": kind, "kernel": k, "stride": s, "padding": p, "dilation": d, "ceil_mode": ceil,
              "count_include_pad": cip, "divisor_override": div}
    case(name, "pool", params, x=x, out=out)


pool_case("maxpool3x3s2p1", "max", (1, 4, 15, 15), 3, 2, 1)
pool_case("maxpool3x3s2_ceil", "max", (1, 4, 14, 14), 3, 2, 0, ceil=True)
pool_case("maxpool2x2s2_ceil_odd", "max", (2, 3, 15, 13), 2, 2, 0, ceil=True)
pool_case("maxpool3x3s2p1_ceil", "max", (1, 2, 10, 10), 3, 2, 1, ceil=True)
pool_case("maxpool3_dilation2", "max", (1, 3, 12, 12), 3, 1, 1, d=2)
pool_case("maxpool1x1s2", "max", (1, 3, 9, 9), 1, 2)
pool_case("avgpool3x3s2p1_incl", "avg", (1, 4, 15, 15), 3, 2, 1, cip=True)
pool_case("avgpool3x3s2p1_excl", "avg", (1, 4, 15, 15), 3, 2, 1, cip=False)
pool_case("avgpool3x3s2p1_ceil_excl", "avg", (1, 4, 14, 14), 3, 2, 1, ceil=True, cip=False)
pool_case("avgpool3x3s2p1_ceil_incl", "avg", (1, 4, 14, 14), 3, 2, 1, ceil=True, cip=True)
pool_case("avgpool2x2_divisor", "avg", (1, 2, 8, 8), 2, 2, 1, div=3)
for out_size in [(7, 7), (1, 1), (3, 5)]:
    x = randn(1, 4, 15, 13)
    case(
        "adaptive_avg_%dx%d" % out_size,
        "adaptive_avg_pool",
        {"out": list(out_size)},
        x=x,
        out=F.adaptive_avg_pool2d(x, out_size),
    )

# ---------------------------------------------------------------- resize
def tf_scale(i, o, align):
    return np.float32((i - 1) / np.float32(o - 1)) if (align and o > 1) else np.float32(i / np.float32(o))


def tf_bilinear(x, oh, ow, half_pixel):
    """NumPy transcription of TF's resize_bilinear (see the module docstring)."""
    n, c, h, w = x.shape

    def weights(i, o):
        s = tf_scale(i, o, False)
        d = np.arange(o, dtype=np.float32)
        src = ((d + np.float32(0.5)) * s - np.float32(0.5)) if half_pixel else d * s
        src = src.astype(np.float32)
        f = np.floor(src)
        lo = np.maximum(f, 0).astype(np.int64)
        hi = np.minimum(np.ceil(src), i - 1).astype(np.int64)
        return lo, hi, (src - f).astype(np.float32)

    ylo, yhi, yl = weights(h, oh)
    xlo, xhi, xl = weights(w, ow)
    tl = x[:, :, ylo][:, :, :, xlo]
    tr = x[:, :, ylo][:, :, :, xhi]
    bl = x[:, :, yhi][:, :, :, xlo]
    br = x[:, :, yhi][:, :, :, xhi]
    top = tl + (tr - tl) * xl
    bottom = bl + (br - bl) * xl
    return (top + (bottom - top) * yl[:, None]).astype(np.float32)


def tf_nearest(x, oh, ow, align, half_pixel):
    n, c, h, w = x.shape

    def idx(i, o):
        s = tf_scale(i, o, align)
        d = np.arange(o, dtype=np.float32)
        src = ((d + np.float32(0.5)) * s) if half_pixel else d * s
        src = src.astype(np.float32)
        # roundf: half away from zero (np.round is half to even)
        v = np.floor(src + np.float32(0.5)) if align else np.floor(src)
        v = np.minimum(v.astype(np.int64), i - 1)
        return np.maximum(v, 0) if half_pixel else v

    return np.ascontiguousarray(x[:, :, idx(h, oh)][:, :, :, idx(w, ow)])


x = randn(1, 3, 7, 9)
for size in [(13, 20), (4, 5), (7, 9), (1, 1)]:
    tag = "%dx%d" % size
    for mode, kw, rust in [
        ("nearest", {}, "nearest"),
        ("nearest-exact", {}, "nearest_exact"),
        ("bilinear", {"align_corners": False}, "bilinear"),
        ("bilinear", {"align_corners": True}, "bilinear_align_corners"),
    ]:
        case("resize_%s_%s" % (rust, tag), "resize", {"mode": rust, "size": list(size)},
             x=x, out=F.interpolate(x, size=size, mode=mode, **kw))
    xn = x.numpy()
    case("resize_tf_bilinear_legacy_" + tag, "resize", {"mode": "tf_bilinear_legacy", "size": list(size)},
         x=x, out=tf_bilinear(xn, *size, half_pixel=False))
    case("resize_tf_bilinear_half_pixel_" + tag, "resize", {"mode": "tf_bilinear_half_pixel", "size": list(size)},
         x=x, out=tf_bilinear(xn, *size, half_pixel=True))
    case("resize_tf_nearest_legacy_" + tag, "resize", {"mode": "nearest", "size": list(size)},
         x=x, out=tf_nearest(xn, *size, align=False, half_pixel=False))
    case("resize_tf_nearest_half_pixel_" + tag, "resize", {"mode": "nearest_exact", "size": list(size)},
         x=x, out=tf_nearest(xn, *size, align=False, half_pixel=True))
    case("resize_tf_nearest_align_corners_" + tag, "resize", {"mode": "tf_nearest_align_corners", "size": list(size)},
         x=x, out=tf_nearest(xn, *size, align=True, half_pixel=False))
# torch's scale_factor path: without recompute the kernel uses 1/scale, not in/out
for sf, mode, rust in [(1.7, "bilinear", "bilinear"), (2.5, "nearest", "nearest"), (0.6, "bilinear", "bilinear")]:
    for recompute in [False, True]:
        kw = {"align_corners": False} if mode == "bilinear" else {}
        out = F.interpolate(x, scale_factor=sf, mode=mode, recompute_scale_factor=recompute, **kw)
        case("interp_scale_%s_%g_%s" % (rust, sf, "recompute" if recompute else "kept"), "interpolate_scale",
             {"mode": rust, "scale": sf, "recompute": recompute}, x=x, out=out)

# ---------------------------------------------------------------- shape ops
x = torch.randperm(3 * 7 * 4).reshape(3, 7, 4).float() / 10.0 - 4.0
case("softmax_axis1", "softmax", {"axis": 1}, x=x, out=torch.softmax(x, 1))
case("softmax_last", "softmax", {"axis": -1}, x=x, out=torch.softmax(x, -1))
case("argmax_axis1", "argmax", {"axis": 1}, x=x, out=torch.argmax(x, 1))
v, i = torch.topk(x, 3, dim=-1, largest=True, sorted=True)
case("topk_largest", "topk", {"k": 3, "axis": -1, "largest": True}, x=x, out_values=v, out_indices=i)
v, i = torch.topk(x, 5, dim=1, largest=False, sorted=True)
case("topk_smallest_axis1", "topk", {"k": 5, "axis": 1, "largest": False}, x=x, out_values=v, out_indices=i)
idx = torch.randint(0, 7, (3, 5, 4))
case("gather_axis1", "gather", {"axis": 1}, x=x, index=idx, out=torch.gather(x, 1, idx))
y = randn(3, 2, 4)
case("concat_axis1", "concat", {"axis": 1}, x=x, y=y, out=torch.cat([x, y], 1))
case("split_axis1", "split", {"axis": 1, "sizes": [2, 4, 1]}, x=x,
     **{"out%d" % k: t for k, t in enumerate(torch.split(x, [2, 4, 1], 1))})
case("slice_axis1_step2", "slice", {"axis": 1, "start": 1, "end": 7, "step": 2}, x=x, out=x[:, 1:7:2])
case("permute_021", "permute", {"axes": [0, 2, 1]}, x=x, out=x.permute(0, 2, 1).contiguous())
x4 = randn(1, 2, 5, 6)
for mode, val in [("constant", 0.5), ("reflect", None), ("replicate", None)]:
    kw = {"value": val} if val is not None else {}
    case("pad_" + mode, "pad", {"mode": mode, "pads": [1, 2, 2, 1], "value": val}, x=x4,
         out=F.pad(x4, (1, 2, 2, 1), mode=mode, **kw))

# ---------------------------------------------------------------- pre-processing
mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
for name, (h, w), (mn, mx) in [
    ("rcnn_up", (37, 53), (60, 100)),
    ("rcnn_maxlimited", (20, 90), (60, 100)),
    ("rcnn_down", (120, 90), (60, 100)),
]:
    img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    t = GeneralizedRCNNTransform(min_size=mn, max_size=mx, image_mean=mean, image_std=std)
    t.eval()
    with torch.no_grad():
        chw = torch.from_numpy(img).permute(2, 0, 1).float().div(255)
        il, _ = t([chw])
    sizes = torch.tensor(il.image_sizes[0], dtype=torch.int64)
    case(name, "rcnn_transform", {"min_size": mn, "max_size": mx, "mean": mean, "std": std, "size_divisible": 32},
         x=img, out=il.tensors, out_size=sizes)

# ---------------------------------------------------------------- deformable convolution
# torchvision.ops.deform_conv2d: v1 (no mask) and v2 (modulated, with a mask), offsets large
# enough that samples leave the image (zero outside (-1, H) x (-1, W), partial corners near
# the border), integer and half-integer offsets (exact corners), offset groups and weight
# groups. These cases come last so that the random draws of every earlier case are unchanged.
g = torch.Generator().manual_seed(7)


def deform_case(name, x_shape, w_shape, stride=1, padding=0, dilation=1, offset_groups=1,
                masked=True, bias=True, offset_scale=2.0, offset_step=None):
    n, _, h, w = x_shape
    kh, kw = w_shape[2], w_shape[3]
    oh = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    ow = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    x = torch.randn(*x_shape, generator=g)
    wt = torch.randn(*w_shape, generator=g) * 0.5
    b = torch.randn(w_shape[0], generator=g) if bias else None
    offset = torch.randn(n, 2 * offset_groups * kh * kw, oh, ow, generator=g) * offset_scale
    if offset_step is not None:  # snapped to a grid: samples on exact pixels and midpoints
        offset = torch.round(offset / offset_step) * offset_step
    mask = torch.rand(n, offset_groups * kh * kw, oh, ow, generator=g) if masked else None
    out = torchvision.ops.deform_conv2d(x, offset, wt, b, stride=stride, padding=padding,
                                        dilation=dilation, mask=mask)
    params = {"stride": [stride, stride], "padding": [padding, padding],
              "dilation": [dilation, dilation], "groups": x_shape[1] // w_shape[1]}
    tensors = {"x": x, "weight": wt, "offset": offset, "out": out}
    if b is not None:
        tensors["bias"] = b
    if mask is not None:
        tensors["mask"] = mask
    case(name, "deform_conv2d", params, **tensors)


deform_case("deform_v2_3x3_pad1", (1, 6, 9, 11), (5, 6, 3, 3), padding=1)
deform_case("deform_v1_3x3_pad1_batch2", (2, 4, 7, 8), (6, 4, 3, 3), padding=1, masked=False)
deform_case("deform_v2_stride2_dilation2", (1, 5, 12, 13), (7, 5, 3, 3), stride=2, padding=2,
            dilation=2, bias=False)
deform_case("deform_v2_offset_groups2_groups2", (1, 8, 8, 9), (6, 4, 3, 3), padding=1,
            offset_groups=2)
deform_case("deform_v2_far_offsets", (1, 3, 6, 7), (4, 3, 3, 3), padding=1, offset_scale=6.0)
deform_case("deform_v2_half_pixel_offsets", (1, 3, 6, 7), (4, 3, 3, 3), padding=1,
            offset_step=0.5)
deform_case("deform_v2_1x1_5x3", (1, 4, 6, 6), (3, 4, 1, 1))
deform_case("deform_v2_5x3", (1, 3, 9, 10), (4, 3, 5, 3), padding=1)

os.makedirs(OUT, exist_ok=True)
with open(os.path.join(OUT, "layers.bin"), "wb") as f:
    f.write(bytes(blob))
with open(os.path.join(OUT, "layers.json"), "w") as f:
    json.dump({"torch": torch.__version__, "torchvision": torchvision.__version__, "cases": cases}, f, indent=1)
print("%d cases, %d bytes of tensors -> %s" % (len(cases), len(blob), OUT))
