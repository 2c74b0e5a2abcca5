#!/usr/bin/env python3
"""DETR R50 through the engine's libraries against Hugging Face transformers (eager, CPU) and
the official code, same weights and photo, one run.

    target/venv-torch/bin/pip install transformers timm  (plus make_detr_fixtures.py's needs)
    cargo build --release -p plugin-detr -p plugin-backbones
    cargo build --release -p plugin-detr --example bench_detr
    DETR_REPO=/tmp/detr target/venv-torch/bin/python tests/reference/bench_detr.py [--reps 10] [--threads 2]

Weights: make_detr_fixtures.py's generated state dict, saved with torch.save (the official
names, as in detr-r50-e632da11.pth's "model"), which the engine reads; transformers gets the
same tensors under its names (make_detr_fixtures.build_hf). Timed from the normalised
[1, 3, H, W] tensor (the val transform, run once outside the timing on both torch sides) to
the post-processed results:
  - transformers: `DetrForObjectDetection(pixel_values, pixel_mask)` then
    `DetrImageProcessor.post_process_object_detection(threshold=0, target_sizes)`, with its
    encoder and decoder timed by forward hooks;
  - official: `model(nested_tensor_from_tensor_list([img]))` then `PostProcess`;
  - ours: `bench_detr` (detr_preprocess -> resnet -> detr from their plugin libraries): the
    whole from the u8 photo (so it includes the resize the torch sides skip), each node, and
    the detr node's stages.
Photo: assets/chelsea.png (800x1203 input). Prints medians, ratios, and whether the results
agree.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_detr_fixtures as fx  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))


def median(v):
    return float(np.median(v))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--photo", default="chelsea.png")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    detr = fx.import_detr()
    _, T, _, _, PostProcess, nested = detr
    _, model = fx.build_official(detr)
    state = {}
    for name, t in model.state_dict().items():
        shape = list(t.shape)
        state[name] = torch.from_numpy(fx.generate(name, shape, *fx.range_of(name, shape)))
    model.load_state_dict(state, strict=True)
    hf = fx.build_hf(fx.hf_entries(list(state)), state)
    from transformers import DetrImageProcessor

    processor = DetrImageProcessor()
    photo = os.path.join(ROOT, "assets", args.photo)
    pil = Image.open(photo).convert("RGB")
    img, _ = fx.val_transform(T)(pil, None)
    x = img.unsqueeze(0)
    h, w = pil.size[1], pil.size[0]
    sizes = torch.tensor([[h, w]])
    post = PostProcess()

    spans = {}

    def pre(name):
        def hook(_m, _i):
            spans[name] = time.perf_counter()
        return hook

    def post_hook(name):
        def hook(_m, _i, _o):
            spans[name] = time.perf_counter() - spans[name]
        return hook

    for name, mod in [("encoder", hf.model.encoder), ("decoder", hf.model.decoder)]:
        mod.register_forward_pre_hook(pre(name))
        mod.register_forward_hook(post_hook(name))

    def run_hf():
        out = hf(pixel_values=x, pixel_mask=torch.ones((1, x.shape[2], x.shape[3]), dtype=torch.long))
        return processor.post_process_object_detection(out, threshold=0.0, target_sizes=sizes)[0]

    def run_official():
        out = model(nested([img]))
        return post(out, sizes)[0]

    exe = os.path.join(ROOT, "target", "release", "examples", "bench_detr")
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        wpath = os.path.join(tmp, "detr_r50.pth")
        torch.save({"model": state}, wpath)
        rows = {"transformers": [], "official": [], "encoder": [], "decoder": []}
        ours = None
        for rnd in range(3):  # interleaved rounds
            for _ in range(1 if rnd == 0 else 0):
                run_hf(), run_official()  # warm-up
            for _ in range(args.reps):
                t = time.perf_counter()
                hres = run_hf()
                rows["transformers"].append((time.perf_counter() - t) * 1e3)
                rows["encoder"].append(spans["encoder"] * 1e3)
                rows["decoder"].append(spans["decoder"] * 1e3)
            for _ in range(args.reps):
                t = time.perf_counter()
                ores = run_official()
                rows["official"].append((time.perf_counter() - t) * 1e3)
            env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
            out = subprocess.run([exe, wpath, photo, str(args.reps)], env=env, check=True,
                                 capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            if ours is None:
                ours = {k: [] for k in ("median_ms",)}
                ours["nodes"] = []
                ours["stages"] = []
            ours["median_ms"].append(r["median_ms"])
            ours["nodes"].append(r["nodes_ms"])
            ours["stages"].append(r["stages_ms"])
            last = r
    agree_scores = np.abs(np.array(last["scores"]) - hres["scores"].numpy()).max()
    agree_boxes = np.abs(np.array(last["boxes"]).reshape(-1, 4) - hres["boxes"].numpy()).max()
    same_labels = bool((np.array(last["labels"]) == hres["labels"].numpy()).all())
    off_boxes = np.abs(ores["boxes"].numpy() - hres["boxes"].numpy()).max()
    t_hf, t_off = median(rows["transformers"]), median(rows["official"])
    t_ours = median(ours["median_ms"])
    enc_hf, dec_hf = median(rows["encoder"]), median(rows["decoder"])
    st = {k: median([s[k] for s in ours["stages"]]) for k in ours["stages"][0]}
    nd = {k: median([s[k] for s in ours["nodes"]]) for k in ours["nodes"][0]}
    print(f"DETR R50, {args.photo} ({h}x{w} -> {x.shape[2]}x{x.shape[3]}), {args.threads} threads, "
          f"3 interleaved rounds of {args.reps}; torch {torch.__version__}")
    print("| | transformers (eager) | official | ours | ours / transformers |")
    print("|---|---|---|---|---|")
    print(f"| whole | {t_hf:.0f} ms | {t_off:.0f} ms | {t_ours:.0f} ms | {t_ours / t_hf:.2f} |")
    print(f"| encoder (6 layers) | {enc_hf:.1f} ms | | {st['encoder']:.1f} ms | {st['encoder'] / enc_hf:.2f} |")
    print(f"| decoder (6 layers) | {dec_hf:.1f} ms | | {st['decoder']:.1f} ms | {st['decoder'] / dec_hf:.2f} |")
    print(f"ours per node: {json.dumps(nd)}; detr stages: {json.dumps(st)}")
    print(f"results vs transformers: labels {'equal' if same_labels else 'DIFFER'}, "
          f"max |score diff| {agree_scores:.2e}, max |box diff| {agree_boxes:.2e} px "
          f"(official vs transformers boxes {off_boxes:.2e} px)")


if __name__ == "__main__":
    main()
