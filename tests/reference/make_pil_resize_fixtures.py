#!/usr/bin/env python3
"""Writes kernels/tests/fixtures/layers/pil_resize.json: Pillow's `Image.resize(size,
Image.BILINEAR)` on small uint8 RGB crops of a real photo.

    target/venv-torch/bin/pip install pillow numpy torchvision   # already in target/venv-torch
    target/venv-torch/bin/python tests/reference/make_pil_resize_fixtures.py

Run by developers, not by CI (CI reads the committed fixture). Running it twice writes the
same file, byte for byte. (The DETR fixture, tests/reference/make_detr_fixtures.py, needs
/tmp/detr: `mkdir -p /tmp/detr && git --git-dir=<mirror of facebookresearch/detr>/repo
archive 29901c51 | tar -x -C /tmp/detr`; this script does not.)

Why: DETR's pre-processing (datasets/transforms.py `resize`) calls torchvision's
`F.resize(pil_image, (h, w))`, which on a PIL image is `image.resize((w, h),
Image.BILINEAR)`: Pillow's own antialiased bilinear resampling, not torch's
`interpolate(mode="bilinear")`. The script checks that torchvision's F.resize gives the same
bytes as Image.resize for every case.

Inputs: crops of assets/chelsea.png (PIL `Image.open(...).convert("RGB")`, then `crop`):
"A" 53x37 (w x h) at (x, y) = (170, 60) (the cat's face), "B" 40x31 at (250, 150), "C"
17x13 at (120, 200). Cases (name: crop -> output w x h):
  down_both        A -> 19x13   (strong downscale in both axes, factors 2.79 / 2.85)
  mild_down        A -> 50x35   (non-integer mild downscale, 53 -> 50, 37 -> 35)
  down_x_up_y      B -> 17x40   (downscale in x, upscale in y)
  up_x_down_y      B -> 71x11   (upscale in x, downscale in y)
  down_x_only      B -> 19x31   (one pass only: the vertical pass is skipped)
  down_y_more      B -> 36x5    (both down, the height by more than twice as many pixels
                                 as the width: Pillow 13 runs the vertical pass first)
  order_boundary   B -> 36x23   (31 - 23 == 2 * (40 - 36): still horizontal first)
  up_both          C -> 39x30   (2.3x in both axes)
  identity         C -> 17x13   (same size: Pillow returns a copy)
  one_pixel        C -> 1x1     (the whole crop averaged by a wide triangle)

Fixture: pillow (version), torchvision (version), cases [{name, crop [x, y, w, h] in
chelsea.png, input_shape [h, w, 3], input (u8, flattened row-major HWC), output_size [h, w],
output (u8, flattened row-major HWC), pass_order ("hv", "vh", "h", "v" or "copy": the
passes Pillow ran, see below)}].

The algorithm (Pillow's libImaging/Resample.c, checked here against an independent numpy
model, `model_resize`, that must give the same bytes on every case): separable, one pass per
axis into a uint8 image; a pass is skipped when that size does not change (both skipped:
Pillow returns a copy). Per axis with in_size -> out_size: scale = in_size / out_size,
filterscale = max(scale, 1), support = 1 * filterscale (triangle filter), for output index
i: center = (i + 0.5) * scale, xmin = max(int(center - support + 0.5), 0), xmax =
min(int(center + support + 0.5), in_size) (C casts, truncating), weights w_x = tri((x -
center + 0.5) / filterscale) for x in [xmin, xmax), normalised by their sum (in double),
then converted to fixed point with 22 fraction bits (int(w * 2^22 + 0.5), or - 0.5 when
negative); an output byte is clip((2^21 + sum(w_x * byte_x)) >> 22, 0, 255).

Pass order (matters: the intermediate image is rounded to uint8, and the two orders differ by
1 in some bytes): horizontal first, except that Pillow 13 (python-pillow/Pillow PR #9549,
"If height is scaled down significantly more than width, resize vertically first"; not in
Pillow <= 12, which always goes horizontal first) runs the vertical pass first when
out_h < in_h and (in_h - out_h) > 2 * (in_w - out_w) (integer sizes, strict). The rule was
found by measuring Pillow 13.0.0 (1500 random crops and sizes where the two orders differ:
no exception) and is what `model_resize` does; up_x_down_y and down_y_more go vertical
first, order_boundary (exactly 2x) horizontal first, and the script checks that each of these
cases and every other two-pass case except one_pixel tells the two orders apart (only one
order gives Pillow's bytes). For an aspect-preserving downscale the rule reads in_h > 2 * in_w, so it
only concerns images more than twice as tall as wide.
"""

import json
import os

import numpy as np
import PIL
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "kernels", "tests", "fixtures", "layers")

CROPS = {  # x, y, w, h in chelsea.png
    "A": (170, 60, 53, 37),
    "B": (250, 150, 40, 31),
    "C": (120, 200, 17, 13),
}
CASES = [  # name, crop, output (w, h)
    ("down_both", "A", (19, 13)),
    ("mild_down", "A", (50, 35)),
    ("down_x_up_y", "B", (17, 40)),
    ("up_x_down_y", "B", (71, 11)),
    ("down_x_only", "B", (19, 31)),
    ("down_y_more", "B", (36, 5)),
    ("order_boundary", "B", (36, 23)),
    ("up_both", "C", (39, 30)),
    ("identity", "C", (17, 13)),
    ("one_pixel", "C", (1, 1)),
]

# The cases that must tell the two pass orders apart (one_pixel cannot: one output byte per
# channel, the same both ways here).
ORDER_CASES = {"down_both", "down_x_up_y", "up_x_down_y", "up_both", "mild_down",
               "down_y_more", "order_boundary"}

PRECISION_BITS = 32 - 8 - 2


def coefficients(in_size: int, out_size: int):
    """Pillow's precompute_coeffs + normalize_coeffs_8bpc for the bilinear filter."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    rows = []
    for i in range(out_size):
        center = (i + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        w = np.array(
            [max(0.0, 1.0 - abs((x - center + 0.5) / filterscale)) for x in range(xmin, xmax)]
        )
        total = w.sum()
        if total != 0.0:
            w = w / total
        fixed = np.where(
            w < 0, (-0.5 + w * (1 << PRECISION_BITS)), (0.5 + w * (1 << PRECISION_BITS))
        ).astype(np.int64)  # C cast: truncation towards zero
        rows.append((xmin, fixed))
    return rows


def resample_axis(a: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    a = np.moveaxis(a, axis, 0)
    out = np.empty((out_size,) + a.shape[1:], dtype=np.uint8)
    for i, (xmin, k) in enumerate(coefficients(a.shape[0], out_size)):
        ss = (1 << (PRECISION_BITS - 1)) + np.tensordot(
            k, a[xmin:xmin + len(k)].astype(np.int64), axes=(0, 0)
        )
        out[i] = np.clip(ss >> PRECISION_BITS, 0, 255)
    return np.moveaxis(out, 0, axis)


def vertical_first(in_w: int, in_h: int, w: int, h: int) -> bool:
    """Pillow 13's pass order (see the docstring)."""
    return h < in_h and (in_h - h) > 2 * (in_w - w)


def model_resize(a: np.ndarray, w: int, h: int, order=None) -> np.ndarray:
    """Independent model of Image.resize(BILINEAR) on an HxWx3 uint8 array. `order`
    forces "hv" (horizontal first) or "vh"; by default Pillow 13's rule."""
    in_h, in_w = a.shape[:2]
    if order is None:
        order = "vh" if vertical_first(in_w, in_h, w, h) else "hv"
    for axis in order:
        if axis == "h" and a.shape[1] != w:
            a = resample_axis(a, w, 1)
        if axis == "v" and a.shape[0] != h:
            a = resample_axis(a, h, 0)
    return a


def case_order(cw, ch, w, h, order):
    if cw != w and ch != h:
        return order
    return "h" if cw != w else "v" if ch != h else "copy"


def main():
    photo = Image.open(os.path.join(ROOT, "assets", "chelsea.png")).convert("RGB")
    cases = []
    for name, crop_name, (w, h) in CASES:
        x, y, cw, ch = CROPS[crop_name]
        crop = photo.crop((x, y, x + cw, y + ch))
        a = np.asarray(crop)
        assert a.shape == (ch, cw, 3) and a.dtype == np.uint8
        out = crop.resize((w, h), Image.BILINEAR)
        b = np.asarray(out)
        assert b.shape == (h, w, 3)
        # What DETR's pre-processing calls.
        tv = np.asarray(TF.resize(crop, [h, w], interpolation=InterpolationMode.BILINEAR))
        assert np.array_equal(tv, b), name
        model = model_resize(a, w, h)
        if not np.array_equal(model, b):
            diff = np.abs(model.astype(int) - b.astype(int))
            raise SystemExit(f"{name}: the numpy model differs from Pillow (max {diff.max()})")
        order = "vh" if vertical_first(cw, ch, w, h) else "hv"
        two_pass = cw != w and ch != h
        other = model_resize(a, w, h, order=order[::-1])
        differs = int((other != b).sum())
        if name in ORDER_CASES and not differs:
            raise SystemExit(f"{name}: both pass orders give the same bytes")
        cases.append(
            {
                "name": name,
                "crop": [x, y, cw, ch],
                "input_shape": [ch, cw, 3],
                "input": [int(v) for v in a.reshape(-1)],
                "output_size": [h, w],
                "output": [int(v) for v in b.reshape(-1)],
                "pass_order": case_order(cw, ch, w, h, order),
            }
        )
        print(
            f"{name:14s} {cw}x{ch} -> {w}x{h}: pass order "
            f"{case_order(cw, ch, w, h, order)}, output mean {b.mean():.2f}, "
            f"bytes that differ with the other order: {differs if two_pass else '-'}"
        )
    doc = {
        "generator": "tests/reference/make_pil_resize_fixtures.py",
        "pillow": PIL.__version__,
        "torchvision": torchvision.__version__,
        "source": "assets/chelsea.png",
        "resample": "Image.BILINEAR",
        "cases": cases,
    }
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "pil_resize.json")
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path) / 1e3:.1f} KB)")


if __name__ == "__main__":
    main()
