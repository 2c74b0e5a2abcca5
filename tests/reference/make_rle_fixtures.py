#!/usr/bin/env python3
"""Generates tests/fixtures/rle.json: binary masks and their COCO RLE strings.

The expected strings come from pycocotools (`pycocotools.mask.encode` on a Fortran-ordered
uint8 array), the reference implementation that the Rust encoder in plugins/io/src/rle.rs
must match byte for byte.

    pip install pycocotools numpy
    python3 tests/reference/make_rle_fixtures.py

Masks are stored row-major as strings of '0' and '1' (`rows` lines joined), with their height
and width; `counts` is the compressed RLE string and `runs` the uncompressed run lengths
(column-major, starting with a run of zeros).
"""

import json
import os

import numpy as np
from pycocotools import mask as mask_utils

SEED = 20240611


def blobs(rng, h, w, n):
    """A mask made of `n` random filled ellipses."""
    yy, xx = np.mgrid[0:h, 0:w]
    m = np.zeros((h, w), dtype=np.uint8)
    for _ in range(n):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(1, h / 2), rng.uniform(1, w / 2)
        m |= (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.uint8)
    return m


def masks(rng):
    out = []
    out.append(("1x1 zero", np.zeros((1, 1), np.uint8)))
    out.append(("1x1 one", np.ones((1, 1), np.uint8)))
    out.append(("all zero 5x7", np.zeros((5, 7), np.uint8)))
    out.append(("all one 6x4", np.ones((6, 4), np.uint8)))
    m = np.zeros((4, 5), np.uint8)
    m[0, 0] = 1
    out.append(("starts with a one", m))
    m = np.zeros((4, 5), np.uint8)
    m[3, 4] = 1
    out.append(("ends with a one", m))
    m = np.zeros((9, 11), np.uint8)
    m[::2, :] = 1
    out.append(("horizontal stripes 9x11", m))
    m = np.zeros((10, 12), np.uint8)
    m[:, 1::3] = 1
    out.append(("vertical stripes 10x12", m))
    m = (np.indices((7, 7)).sum(axis=0) % 2).astype(np.uint8)
    out.append(("checkerboard 7x7", m))
    out.append(("single row 1x40", (rng.random((1, 40)) < 0.5).astype(np.uint8)))
    out.append(("single column 33x1", (rng.random((33, 1)) < 0.3).astype(np.uint8)))
    out.append(("noise 20x30", (rng.random((20, 30)) < 0.5).astype(np.uint8)))
    out.append(("sparse noise 25x25", (rng.random((25, 25)) < 0.03).astype(np.uint8)))
    for k in range(4):
        out.append((f"blobs 37x53 #{k}", blobs(rng, 37, 53, 1 + k)))
    m = np.zeros((100, 120), np.uint8)
    m[10:90, 5:115] = 1
    out.append(("large rectangle 100x120", m))
    m = np.zeros((64, 80), np.uint8)
    m[1:2, 3:70] = 1
    m[50:63, 40:41] = 1
    out.append(("long runs 64x80", m))
    out.append(("blobs 90x70", blobs(rng, 90, 70, 3)))
    m = np.ones((48, 64), np.uint8)
    m[20:30, 20:40] = 0
    out.append(("hole 48x64", m))
    return out


def runs_of(m):
    """Uncompressed COCO runs: column-major, starting with zeros."""
    flat = m.flatten(order="F")
    runs, prev, count = [], 0, 0
    for v in flat:
        if v != prev:
            runs.append(count)
            count, prev = 0, v
        count += 1
    runs.append(count)
    return runs


def main():
    rng = np.random.default_rng(SEED)
    cases = []
    for name, m in masks(rng):
        h, w = m.shape
        rle = mask_utils.encode(np.asfortranarray(m))
        counts = rle["counts"].decode("ascii")
        assert list(rle["size"]) == [h, w]
        # Cross-check the uncompressed runs against pycocotools' own decoding.
        decoded = mask_utils.decode(rle)
        assert (decoded == m).all(), name
        runs = runs_of(m)
        assert sum(runs) == h * w
        cases.append(
            {
                "name": name,
                "height": int(h),
                "width": int(w),
                "mask": "".join("".join(str(int(v)) for v in row) for row in m),
                "runs": [int(r) for r in runs],
                "counts": counts,
            }
        )
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "fixtures", "rle.json")
    with open(path, "w") as f:
        json.dump({"generator": "tests/reference/make_rle_fixtures.py", "cases": cases}, f, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} masks to {os.path.normpath(path)} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
