#!/usr/bin/env python3
"""Writes plugins/rcnn/tests/fixtures/densepose_tiny_d2.pkl: a DensePose head as the
Detectron2 model zoo ships its checkpoints, a pickle (protocol 2, as Python 2-era tools and
`pickle.dump` defaults of old code write it) of
`{"model": {name: numpy array}, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}`,
under Detectron2's names (`roi_heads.decoder.*`, `roi_heads.densepose_head.*`,
`roi_heads.densepose_predictor.*`), at a tiny size so that it can be committed: FPN channels 4,
decoder channels 3, two head convolutions of 5, 2 coarse channels, 24 parts.

Values are `generate(name, shape, 0.5, 0.0)` of make_maskrcnn_fixtures.py, which
`kernels::weights::generated_tensor` reproduces bit for bit, so the test can compare the head
loaded from this file with the same head loaded from generated tensors.

    python3 tests/reference/make_densepose_pkl.py
"""

import os
import pickle
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_maskrcnn_fixtures import generate  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "plugins", "rcnn", "tests", "fixtures", "densepose_tiny_d2.pkl")
CHANNELS, DECODER, HEAD, COARSE, PARTS = 4, 3, 5, 2, 25


def shapes() -> dict:
    s = {}
    for level, convs in (("p2", 1), ("p3", 1), ("p4", 2), ("p5", 3)):
        for k in range(convs):
            s[f"decoder.{level}.{2 * k}"] = (DECODER, CHANNELS if k == 0 else DECODER, 3, 3)
    s["decoder.predictor"] = (CHANNELS, DECODER, 1, 1)
    s["densepose_head.body_conv_fcn1"] = (HEAD, CHANNELS, 3, 3)
    s["densepose_head.body_conv_fcn2"] = (HEAD, HEAD, 3, 3)
    for name, c in (("ann_index_lowres", COARSE), ("index_uv_lowres", PARTS),
                    ("u_lowres", PARTS), ("v_lowres", PARTS)):
        s[f"densepose_predictor.{name}"] = (HEAD, c, 4, 4)
    return s


def main():
    model = {}
    for module, shape in shapes().items():
        bias = shape[1] if module.startswith("densepose_predictor") else shape[0]
        for suffix, sh in (("weight", shape), ("bias", (bias,))):
            name = f"roi_heads.{module}.{suffix}"
            model[name] = generate(name, sh, 0.5, 0.0)
    doc = {"model": model, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}
    with open(OUT, "wb") as f:
        pickle.dump(doc, f, protocol=2)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes, {len(model)} arrays)")


if __name__ == "__main__":
    main()
