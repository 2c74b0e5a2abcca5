#!/usr/bin/env python3
"""pipelines/multitask_r50_fpn.toml (one trunk, three head branches side by side) against the
same heads run in sequence, through the real engine, one run.

    pip install torch torchvision numpy
    cargo build --release -p engine -p plugin-rcnn -p plugin-backbones
    python3 tests/reference/bench_multitask.py [--reps 3] [--detections 10] [--threads 2]

Weights: one checkpoint at full size with random values (torch's own initialisation, seeded):
`keypointrcnn_resnet50_fpn(weights=None)` (ResNet-50-FPN trunk, RPN, 2-class box head and
keypoint head), the mask head and predictor of `maskrcnn_resnet50_fpn(weights=None)` (91
classes), and a DensePose head under Detectron2's names at `densepose_rcnn_R_50_FPN_s1x`'s
sizes (decoder 256, eight convolutions of 512, 112x112 charts). The box head keeps
`--detections` per photo in every variant, so every variant's heads see the same boxes.

Variants, each `engine run --quiet` on the four photos of assets/ (800-pixel short side), wall
time including start-up (loading the checkpoint), median of `--reps`:
- parallel: the shipped pipeline, the heads on parallel branches, merged per detection;
- chained: the same nodes with the heads one after another (mask -> keypoint -> DensePose);
- separate: three pipelines, one per head, each with its own trunk (what a user runs without
  a multi-task pipeline).
"""

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time

import torch
from torchvision.models.detection import keypointrcnn_resnet50_fpn, maskrcnn_resnet50_fpn

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PIPELINE = os.path.join(ROOT, "pipelines", "multitask_r50_fpn.toml")
HEADS = ["mask_head", "keypoint_head", "densepose_head"]


def densepose_state() -> dict:
    shapes = {}
    for level, convs in (("p2", 1), ("p3", 1), ("p4", 2), ("p5", 3)):
        for k in range(convs):
            shapes[f"decoder.{level}.{2 * k}"] = (256, 256, 3, 3)
    shapes["decoder.predictor"] = (256, 256, 1, 1)
    for i in range(8):
        shapes[f"densepose_head.body_conv_fcn{i + 1}"] = (512, 256 if i == 0 else 512, 3, 3)
    for name, c in (("ann_index_lowres", 2), ("index_uv_lowres", 25), ("u_lowres", 25), ("v_lowres", 25)):
        shapes[f"densepose_predictor.{name}"] = (512, c, 4, 4)
    state = {}
    for name, shape in shapes.items():
        fan_in = shape[1] * shape[2] * shape[3] if not name.startswith("densepose_predictor") else shape[0] * 4
        state[f"roi_heads.{name}.weight"] = torch.randn(shape) * (2.0 / fan_in) ** 0.5
        out = shape[1] if name.startswith("densepose_predictor") else shape[0]
        state[f"roi_heads.{name}.bias"] = torch.zeros(out)
    return state


def section(text: str, node: str) -> str:
    """The text of `[nodes.NODE]` up to the next table."""
    m = re.search(rf"^\[nodes\.{node}\]\n(?:(?!^\[).*\n)*", text, flags=re.M)
    assert m, node
    return m.group(0)


def variant(text: str, heads: list, chained: bool) -> str:
    for h in HEADS:
        if h not in heads:
            text = text.replace(section(text, h), "")
    if chained:
        for prev, h in zip(heads, heads[1:]):
            text = text.replace(
                section(text, h),
                section(text, h).replace('detections = "box_head.detections"',
                                         f'detections = "{prev}.instances"'),
            )
        inputs = f'{{ first = "{heads[-1]}.instances" }}'
    else:
        ports = ["first", "second", "third"]
        inputs = "{ " + ", ".join(f'{p} = "{h}.instances"' for p, h in zip(ports, heads)) + " }"
    merge = section(text, "merge")
    return text.replace(merge, re.sub(r"^inputs = .*$", f"inputs = {inputs}", merge, flags=re.M))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--detections", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    state = keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    mask = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    state.update({k: v for k, v in mask.items() if k.startswith("roi_heads.mask_")})
    state.update(densepose_state())
    text = open(PIPELINE).read()
    engine = os.path.join(ROOT, "target", "release", "engine")
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory() as d:
        weights = os.path.join(d, "multitask.pth")
        torch.save(state, weights)
        files = {}
        for name, heads, chained in [("parallel", HEADS, False), ("chained", HEADS, True)] + [
            (f"separate:{h}", [h], False) for h in HEADS
        ]:
            path = os.path.join(d, name.replace(":", "_") + ".toml")
            with open(path, "w") as f:
                f.write(variant(text, heads, chained))
            files[name] = path

        def run(path):
            cmd = [engine, "run", "--quiet", path]
            for var in ("weights", "mask_weights", "densepose_weights"):
                cmd += ["--set", f"vars.{var}={weights}"]
            cmd += ["--set", f"nodes.box_head.detections_per_img={args.detections}",
                    "--set", f"nodes.images.path={ROOT}/assets/*.png",
                    "--set", f"nodes.json.path={d}/out.json",
                    "--set", f"nodes.overlay.dir={d}/overlays"]
            t = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, cwd=ROOT, capture_output=True)
            return time.perf_counter() - t

        times = {name: [] for name in files}
        for _ in range(args.reps):
            for name, path in files.items():
                times[name].append(run(path))
    med = {k: statistics.median(v) for k, v in times.items()}
    separate = sum(v for k, v in med.items() if k.startswith("separate"))
    print(f"multi-task pipeline, 4 photos, {args.detections} detections each, {args.threads} threads, "
          f"median of {args.reps} (wall time of engine run, start-up included)")
    print("| variant | seconds | parallel / variant |")
    print("|---|---:|---:|")
    rows = [("parallel branches (multitask_r50_fpn.toml)", med["parallel"]),
            ("the heads chained in one pipeline", med["chained"]),
            ("three pipelines, one trunk each", separate)]
    for label, s in rows:
        print(f"| {label} | {s:.2f} | {med['parallel'] / s:.2f} |")
    for h in HEADS:
        print(f"  (separate {h}: {med['separate:' + h]:.2f} s)")


if __name__ == "__main__":
    main()
