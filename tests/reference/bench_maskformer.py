#!/usr/bin/env python3
"""MaskFormer R50 (COCO panoptic) through the engine's libraries against the official code,
same weights and photo, one run.

    cargo build --release -p plugin-detr -p plugin-backbones
    cargo build --release -p plugin-detr --example bench_maskformer
    MASKFORMER_REPO=/tmp/maskformer target/venv-torch/bin/python tests/reference/bench_maskformer.py [--reps 5] [--threads 2]

Official side: facebookresearch/MaskFormer @ da3e60d8 built and loaded as
make_maskformer_fixtures.py does (its config, generated weights), timed from the uint8
image tensor that Detectron2's test DatasetMapper returns (the resize runs once, outside the
timing) to `model([inputs])`'s semantic and panoptic results. Ours: `bench_maskformer`
(maskformer_preprocess -> resnet -> maskformer from their plugin libraries, the whole from the
u8 photo, resize included), with each node's median. Hugging Face transformers'
MaskFormer cannot represent this model (its pixel decoder has no transformer encoder), so the
official code is the peer. Prints medians, the ratio, and whether the panoptic segments (ids
and classes) are the same.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import PIL.Image
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_maskformer_fixtures as fx  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--photo", default="chelsea.png")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg, model = fx.build()
    state = model.state_dict()
    for name in list(state):
        if name == "criterion.empty_weight":
            continue
        shape = list(state[name].shape)
        state[name] = torch.from_numpy(fx.generate(name, shape, *fx.range_of(name, shape)))
    model.load_state_dict(state, strict=True)
    mapper = fx.DatasetMapper(cfg, is_train=False)
    photo = os.path.join(ROOT, "assets", args.photo)
    with PIL.Image.open(photo) as im:
        w0, h0 = im.size
    inp = mapper({"file_name": photo, "height": h0, "width": w0, "image_id": 0})
    exe = os.path.join(ROOT, "target", "release", "examples", "bench_maskformer")
    official, ours, nodes = [], [], []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        wpath = os.path.join(tmp, "maskformer_r50.pth")
        torch.save({"model": state}, wpath)
        model([inp])  # warm-up
        for _ in range(3):  # interleaved rounds
            for _ in range(args.reps):
                t = time.perf_counter()
                result = model([inp])[0]
                official.append((time.perf_counter() - t) * 1e3)
            env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
            out = subprocess.run([exe, wpath, photo, str(args.reps)], env=env, check=True,
                                 capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            ours.append(r["median_ms"])
            nodes.append(r["nodes_ms"])
    seg, info = result["panoptic_seg"]
    want = [s["id"] for s in info]
    got = r["segment_ids"]
    t_off, t_ours = float(np.median(official)), float(np.median(ours))
    nd = {k: float(np.median([n[k] for n in nodes])) for k in nodes[0]}
    print(f"MaskFormer R50 panoptic, {args.photo} ({h0}x{w0} -> {tuple(inp['image'].shape[1:])}), "
          f"{args.threads} threads, 3 interleaved rounds of {args.reps}; torch {torch.__version__}")
    print("| | official | ours | ours / official |")
    print("|---|---|---|---|")
    print(f"| whole | {t_off:.0f} ms | {t_ours:.0f} ms | {t_ours / t_off:.2f} |")
    print(f"ours per node: {json.dumps(nd)}")
    print(f"segments: official {len(want)}, ours {len(got)}; ids {'equal' if got == want else 'DIFFER'}")


if __name__ == "__main__":
    main()
