#!/usr/bin/env python3
"""Writes kernels/tests/fixtures/layers/cv_warp.json: OpenCV's `cv2.warpAffine(image, M,
(out_w, out_h), flags=cv2.INTER_LINEAR)` (default border: constant 0) on small uint8 BGR
crops of a real photo, for `kernels::layers::resample::cv_warp_affine_u8`.

    target/venv-torch/bin/pip install opencv-python-headless numpy   # already in target/venv-torch
    target/venv-torch/bin/python tests/reference/make_cv_warp_fixtures.py

Run by developers, not by CI (CI reads the committed fixture). Running it twice writes the
same file, byte for byte.

Why: CenterNet's (and CornerNet's) pre-processing warps the photo with cv2.warpAffine to
the network's input (`get_affine_transform(c, s, 0, [512, 512])`, i.e. a scale and a
translation that centre the photo with its long side at 512 pixels). OpenCV 4.11 and later
(5.1.0 here) compute bilinear warps of 8-bit images in float32 (`warp_kernels.simd.hpp`);
older releases used 5-bit fixed-point coordinates, which can differ by a few levels. The
fixture pins the float32 behaviour of the installed OpenCV (its version is recorded).

Intel IPP: the x86 wheels route 8-bit bilinear warpAffine through IPP's `iwiWarpAffine`
(`hal/ipp/src/warp_ipp.cpp`) when `cv2.ipp.useIPP()` is true, the default there. IPP is
closed source and rounds differently on pixels whose exact value is a tie at .5: on these
cases it differs from OpenCV's own kernel by one level on up to 3% of the pixels (59 of
2304 in centernet_B_48). This script calls `cv2.ipp.setUseIPP(False)` first, so the fixture
holds OpenCV's own kernel (`warp_kernels.simd.hpp`, also what every non-x86 build runs),
which `cv_warp_affine_u8` reproduces.

Cases: crops of assets/chelsea.png (read with cv2.imread, so BGR), with
  - `centernet_*`: CenterNet's own matrices (`get_affine_transform` re-implemented below
    exactly as src/lib/utils/image.py does it, float32 points, cv2.getAffineTransform) for
    the crop's size to out x out, with the photo centred (c = (w/2, h/2), s = max(h, w));
  - `rotated`, `sheared`: general matrices (a rotation by 17 degrees with scale 1.3, and a
    shear), so that every term of the coordinate computation matters;
  - `outside`: a translation that moves most of the output outside the source (zeros and
    partial-corner pixels at the edges).
Fixture: opencv (version), cases [{name, input_shape [h, w, 3], input (u8, row-major HWC),
matrix [6] (the forward 2x3 matrix, float64 as cv2 returns it), output_size [h, w],
output (u8, row-major HWC)}].
"""

import json
import os

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "kernels", "tests", "fixtures", "layers")


def get_dir(src_point, rot_rad):
    sn, cs = np.sin(rot_rad), np.cos(rot_rad)
    return [src_point[0] * cs - src_point[1] * sn, src_point[0] * sn + src_point[1] * cs]


def get_3rd_point(a, b):
    direct = a - b
    return b + np.array([-direct[1], direct[0]], dtype=np.float32)


def get_affine_transform(center, scale, rot, output_size):
    """CenterNet's src/lib/utils/image.py get_affine_transform (shift 0, inv 0)."""
    if not isinstance(scale, np.ndarray) and not isinstance(scale, list):
        scale = np.array([scale, scale], dtype=np.float32)
    src_w = scale[0]
    dst_w, dst_h = output_size
    rot_rad = np.pi * rot / 180
    src_dir = get_dir([0, src_w * -0.5], rot_rad)
    dst_dir = np.array([0, dst_w * -0.5], np.float32)
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0, :] = center
    src[1, :] = center + src_dir
    dst[0, :] = [dst_w * 0.5, dst_h * 0.5]
    dst[1, :] = np.array([dst_w * 0.5, dst_h * 0.5], np.float32) + dst_dir
    src[2:, :] = get_3rd_point(src[0, :], src[1, :])
    dst[2:, :] = get_3rd_point(dst[0, :], dst[1, :])
    return cv2.getAffineTransform(np.float32(src), np.float32(dst))


def main():
    # OpenCV's own implementation, not Intel IPP's (see the docstring).
    cv2.ipp.setUseIPP(False)
    photo = cv2.imread(os.path.join(ROOT, "assets", "chelsea.png"))
    crops = {"A": photo[60:97, 170:223], "B": photo[150:181, 250:290], "C": photo[200:213, 120:137]}
    cases = []

    def add(name, crop, m, out_hw):
        img = crops[crop]
        out = cv2.warpAffine(img, m, (out_hw[1], out_hw[0]), flags=cv2.INTER_LINEAR)
        cases.append({
            "name": name,
            "input_shape": list(img.shape),
            "input": img.reshape(-1).tolist(),
            "matrix": [float(v) for v in np.asarray(m, np.float64).reshape(-1)],
            "output_size": list(out_hw),
            "output": out.reshape(-1).tolist(),
        })

    for crop, out in [("A", 64), ("B", 48), ("C", 40), ("A", 31)]:
        h, w = crops[crop].shape[:2]
        c = np.array([w / 2.0, h / 2.0], dtype=np.float32)
        s = max(h, w) * 1.0
        add("centernet_%s_%d" % (crop, out), crop, get_affine_transform(c, s, 0, [out, out]), (out, out))
    rot = cv2.getRotationMatrix2D((20.0, 15.0), 17.0, 1.3)
    add("rotated", "A", rot, (45, 60))
    add("sheared", "B", np.array([[1.1, 0.35, -3.25], [-0.2, 0.9, 4.5]]), (40, 44))
    add("outside", "C", np.array([[1.0, 0.0, 11.3], [0.0, 1.0, -6.6]]), (20, 24))
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "cv_warp.json")
    with open(path, "w") as f:
        json.dump({"opencv": cv2.__version__, "cases": cases}, f, separators=(",", ":"))
    print("%d cases -> %s" % (len(cases), path))


if __name__ == "__main__":
    main()
