#!/usr/bin/env python3
"""Writes plugins/rcnn/tests/fixtures/panoptic_fusion.json: Detectron2's own
`combine_semantic_and_instance_outputs` (detectron2/modeling/meta_arch/panoptic_fpn.py at
detectron2 commit 02b5c4e2, the Panoptic FPN fusion of instance and semantic outputs) run on
hand-made and seeded random inputs.

    pip install torch numpy "fvcore>=0.1.5,<0.1.6" "iopath>=0.1.7,<0.1.10" "omegaconf>=2.1,<2.4"
    # detectron2 is not installed: its source tree is put on sys.path (as in
    # make_densepose_fixtures.py; detectron2._C is neither built nor imported).
    mkdir -p /tmp/detectron2
    git --git-dir=<detectron2>/.git archive 02b5c4e2 | tar -x -C /tmp/detectron2
    DETECTRON2_REPO=/tmp/detectron2 python3 tests/reference/make_panoptic_fusion_fixtures.py

Run by developers, not by CI (CI reads the committed fixture). Under a second.

Schema: {"source", "mask_encoding", "tie_order", "cases": [case, ...]}, each case:
  name, note (what it exercises),
  params: {overlap_threshold, stuff_area_thresh, instances_score_thresh} (passed as Python
      float / int / float, i.e. compared in f64 against `score.item()` and against
      `intersect_area * 1.0 / mask_area`),
  height, width,
  scores: [N] floats, each exactly an f32 value (the tensor is float32; `.item()` widens it),
  classes: [N] ints (pred_classes, int64),
  masks: [N] run-length encodings of the [H, W] bool pred_masks, row-major (C order): a list
      of run lengths alternating 0-runs and 1-runs, starting with a 0-run (which may be 0);
      the runs sum to H*W,
  semantic: H*W ints, row-major, the [H, W] int64 semantic_results (0 = the "things" class),
  panoptic_seg: H*W ints, row-major, the returned [H, W] int32 panoptic_seg (0 = VOID),
  segments_info: the returned list as Detectron2 builds it: things
      {"id", "isthing": true, "score", "category_id", "instance_id"}, stuff
      {"id", "isthing": false, "category_id", "area"}.

Ties: `torch.argsort(-scores)` (stable=False) is used by Detectron2. For the small N here
torch's CPU sort returns tied scores in ascending instance index (the same order as a stable
sort); the script asserts this for every case, so the fixture's expected ordering of ties is
"ascending instance index".
"""

import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "plugins", "rcnn", "tests", "fixtures", "panoptic_fusion.json")
DETECTRON2_REPO = os.environ.get("DETECTRON2_REPO", "/tmp/detectron2")
sys.path.insert(0, DETECTRON2_REPO)

from detectron2.modeling.meta_arch.panoptic_fpn import (  # noqa: E402
    combine_semantic_and_instance_outputs,
)
from detectron2.structures import Instances  # noqa: E402


def f32(x):
    return float(np.float32(x))


def rle(mask):
    flat = np.asarray(mask, dtype=bool).reshape(-1)
    runs, cur, n = [], False, 0
    for v in flat:
        if bool(v) == cur:
            n += 1
        else:
            runs.append(n)
            cur, n = bool(v), 1
    runs.append(n)
    return runs


def unrle(runs, h, w):
    out = np.zeros(h * w, dtype=bool)
    pos, val = 0, False
    for r in runs:
        out[pos:pos + r] = val
        pos += r
        val = not val
    assert pos == h * w
    return out.reshape(h, w)


def rect(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def plain(v):
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    raise TypeError(type(v))


def run_case(name, note, h, w, scores, classes, masks, semantic, ov, stuff, sthr):
    scores = [f32(s) for s in scores]
    masks = np.stack([np.asarray(m, dtype=bool) for m in masks]) if masks else np.zeros((0, h, w), bool)
    semantic = np.asarray(semantic, dtype=np.int64).reshape(h, w)
    inst = Instances((h, w))
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
    inst.pred_masks = torch.from_numpy(masks.copy())
    sem = torch.from_numpy(semantic.copy()).contiguous()
    # ties: torch's argsort order equals the stable (ascending index) order here
    a = torch.argsort(-inst.scores)
    b = torch.argsort(-inst.scores, stable=True)
    assert torch.equal(a, b), (name, a, b)
    pan, info = combine_semantic_and_instance_outputs(inst, sem, ov, stuff, sthr)
    assert pan.dtype == torch.int32 and tuple(pan.shape) == (h, w)
    rles = [rle(m) for m in masks]
    for r, m in zip(rles, masks):
        assert (unrle(r, h, w) == m).all()
    return {
        "name": name,
        "note": note,
        "params": {"overlap_threshold": ov, "stuff_area_thresh": stuff,
                   "instances_score_thresh": sthr},
        "height": h,
        "width": w,
        "scores": scores,
        "classes": [int(c) for c in classes],
        "masks": rles,
        "semantic": semantic.reshape(-1).tolist(),
        "panoptic_seg": pan.reshape(-1).tolist(),
        "segments_info": [{k: plain(v) for k, v in d.items()} for d in info],
    }


def hand_cases():
    cases = []
    H, W = 24, 32

    # 1. score threshold: break in sorted order
    sem = np.zeros((H, W), np.int64)
    masks = [
        rect(H, W, 0, 4, 0, 4),      # 0: 0.9  kept
        rect(H, W, 0, 4, 8, 12),     # 1: 0.3  below -> never reached (after break)
        rect(H, W, 8, 12, 0, 4),     # 2: 0.7  kept
        rect(H, W, 8, 12, 8, 12),    # 3: 0.5  == thresh (`<` test) -> kept
        rect(H, W, 16, 20, 0, 4),    # 4: 0.45 < thresh -> break
        rect(H, W, 16, 20, 8, 12),   # 5: 0.4  after break (higher index, lower score)
        rect(H, W, 16, 20, 16, 20),  # 6: 0.49 after break (higher index)
    ]
    cases.append(run_case(
        "score_break",
        "instances_score_thresh 0.5: sorted order 0(.9),2(.7),3(.5 == thresh, kept: `<` test),"
        " then 6(.49) < thresh -> break; 6, 4(.45), 5(.4), 1(.3) all absent whatever their index."
        " Semantic all 0: no stuff; uncovered pixels VOID 0.",
        H, W, [0.9, 0.3, 0.7, 0.5, 0.45, 0.4, 0.49], [3, 4, 5, 6, 7, 8, 9], masks, sem,
        0.5, 64, 0.5))

    # 2. f32 score vs f64 threshold
    masks = [rect(H, W, 0, 6, 0, 6), rect(H, W, 10, 16, 10, 16), rect(H, W, 0, 6, 20, 26)]
    cases.append(run_case(
        "score_thresh_f64_compare",
        "instances_score_thresh 0.7 (a Python float, f64); scores are f32: f32(0.8) kept,"
        " f32(0.7)=0.699999988 < 0.7 in f64 -> break (would be kept if compared in f32),"
        " f32(0.6) after break.",
        H, W, [0.8, 0.7, 0.6], [1, 2, 3], masks, np.zeros((H, W), np.int64), 0.5, 64, 0.7))

    # 3. empty mask skipped, overlap threshold exactly / above, partial overlap
    masks = [
        rect(H, W, 0, 10, 0, 10),     # 0: 0.95 area 100, kept, id 1
        np.zeros((H, W), bool),       # 1: 0.9 empty -> continue (no id used)
        rect(H, W, 0, 2, 5, 15),      # 2: 0.85 area 20, overlap 10 (x5..9,y0..1) = 0.5 -> kept, 10 free px painted, id 2
        rect(H, W, 4, 6, 6, 14),      # 3: 0.8 area 16, overlap 8 of 16? x6..9 -> 4 cols *2 = 8 -> 0.5 kept
        rect(H, W, 7, 9, 7, 14),      # 4: 0.75 area 14, overlap x7..9 = 3 cols*2 = 6 -> .43 kept
        rect(H, W, 2, 4, 6, 14),      # 5: 0.7 area 16, overlap x6..9 (4*2=8) + none else -> .5 kept
        rect(H, W, 0, 3, 8, 16),      # 6: 0.65 area 24, overlap with 0 (x8,9 y0-2 =6) + 2 (y0-1 x10..14 =10)+5(y2 x10..13=4) =20 -> .83 dropped
        rect(H, W, 12, 16, 0, 4),     # 7: 0.6 area 16 disjoint, kept
        rect(H, W, 13, 16, 0, 5),     # 8: 0.55 area 15, overlap 3*4=12 -> 0.8 dropped
        rect(H, W, 2, 5, 2, 5),       # 9: 0.52 fully inside 0 -> 1.0 dropped
    ]
    cases.append(run_case(
        "overlap_and_empty",
        "overlap_threshold 0.5: 0 kept; 1 empty mask -> skipped (no id); 2, 3, 5 overlap earlier"
        " segments by exactly 0.5 -> kept (strict `>` test) and only their free pixels painted;"
        " 4 partial overlap 6/14 -> kept, free pixels only; 6 overlaps several earlier segments,"
        " 20/24 -> dropped; 7 disjoint kept; 8 12/15 dropped; 9 fully covered dropped.",
        H, W, [0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.52],
        list(range(10, 20)), masks, np.zeros((H, W), np.int64), 0.5, 64, 0.5))

    # 4. non-0.5 overlap threshold boundary: 3/10 vs 0.3, 4/13 > 0.3
    masks = [
        rect(H, W, 0, 5, 0, 5),     # 0: 0.9
        rect(H, W, 4, 5, 2, 12),   # 1: 0.8 area 10, overlap 3 (y4 x2..4) -> 0.3 kept
        rect(H, W, 6, 7, 0, 13),    # 2: 0.7 area 13 disjoint
        rect(H, W, 5, 7, 9, 12),    # 3: 0.6 area 6? y5,6 x9..11: overlap with 2 at y6 x9..11 =3 -> 0.5 > 0.3 dropped
        rect(H, W, 10, 12, 0, 5),   # 4: 0.5 area 10 disjoint
        rect(H, W, 11, 12, 1, 14),  # 5: 0.4 area 13, overlap y11 x1..4 =4 -> 4/13=.307 > .3 dropped
    ]
    cases.append(run_case(
        "overlap_threshold_0_3",
        "overlap_threshold 0.3: instance 1 overlaps by 3/10 == 0.3 in f64 -> kept (strict `>`),"
        " free pixels only; 3 overlaps 3/6 -> dropped; 5 overlaps 4/13 = 0.3077 -> dropped.",
        H, W, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [1, 1, 2, 2, 3, 3], masks,
        np.zeros((H, W), np.int64), 0.3, 64, 0.1))

    # 5. score ties
    masks = [
        rect(H, W, 0, 8, 0, 8),     # 0: 0.6
        rect(H, W, 4, 12, 4, 12),   # 1: 0.8 (tie with 3)
        rect(H, W, 20, 24, 20, 24), # 2: 0.6 (tie with 0 and 4)
        rect(H, W, 6, 14, 6, 14),   # 3: 0.8 (tie with 1)
        rect(H, W, 0, 8, 4, 10),    # 4: 0.6 (tie with 0, 2)
    ]
    cases.append(run_case(
        "score_ties",
        "ties: torch.argsort(-scores) gives tied scores in ascending index order here: "
        "1, 3 (0.8), then 0, 2, 4 (0.6). overlap_threshold 0.6: 1 paints first (id 1); 3 overlaps"
        " 1 by 36/64 = 0.5625 -> kept (id 2), free pixels only; 0 overlaps 1 by 16/64 -> kept"
        " (id 3); 2 disjoint (id 4); 4 overlaps 0 and 1 by 40/48 -> dropped. Another tie order"
        " would change ids and which instance owns the shared pixels.",
        H, W, [0.6, 0.8, 0.6, 0.8, 0.6], [7, 8, 9, 10, 11], masks,
        np.zeros((H, W), np.int64), 0.6, 64, 0.5))

    # 6. stuff rules
    sem = np.zeros((H, W), np.int64)
    sem[0:8, 0:32] = 5          # label 5: 256 px, instance covers part
    sem[8:16, 0:16] = 2         # label 2: 128 px minus 8 covered -> 120 == thresh? see below
    sem[8:16, 16:32] = 7        # label 7: 128 px minus 9 covered -> 119 < thresh -> dropped
    sem[16:20, 0:32] = 3        # label 3: 128 px, no instance -> kept
    sem[20:24, 0:16] = 0        # things class: skipped, VOID unless an instance covers it
    sem[20:24, 16:32] = 9       # label 9: 64 px < 120 -> dropped
    masks = [
        rect(H, W, 4, 12, 12, 14),   # 0: 0.9, covers sem5 (y4..7) and sem2 (y8..11 x12,13 = 8 px)
        rect(H, W, 9, 12, 17, 20),   # 1: 0.8, covers 9 px of sem7
        rect(H, W, 20, 22, 0, 4),    # 2: 0.7 on the things class
        rect(H, W, 0, 2, 28, 32),    # 3: 0.3 below score thresh -> stuff 5 keeps these pixels
    ]
    cases.append(run_case(
        "stuff_rules",
        "stuff_area_thresh 120; semantic labels written 5,2,7,3,0,9 but processed in torch.unique"
        " ascending order 0(skipped),2,3,5,7,9; only pixels still 0 after instances count:"
        " label 2 has 128-8 = 120 == thresh -> kept (`<` test), label 7 has 128-9 = 119 -> dropped"
        " (pixels stay VOID 0), label 9 64 px dropped, label 0 region VOID except instance 2;"
        " instance 3 below score thresh so its pixels go to stuff 5.",
        H, W, [0.9, 0.8, 0.7, 0.3], [1, 2, 3, 4], masks, sem, 0.5, 120, 0.5))

    # 7. no instances at all
    sem = np.zeros((H, W), np.int64)
    sem[:, :10] = 4
    sem[:, 10:20] = 1
    sem[:12, 20:] = 6
    sem[5, 5] = 11  # single pixel
    cases.append(run_case(
        "no_instances",
        "N = 0: only stuff; labels 1, 4, 6, 11 ascending; 11 has 1 px < 2 -> dropped (VOID);"
        " label 0 region VOID.",
        H, W, [], [], [], sem, 0.5, 2, 0.5))
    return cases


def random_cases():
    cases = []
    for seed, (h, w) in zip((0, 1, 2), ((48, 64), (40, 56), (32, 48))):
        rng = np.random.RandomState(seed)
        n = 10
        scores = [f32(round(float(rng.uniform(0.3, 1.0)), 6)) for _ in range(n)]
        i, j = rng.choice(n, 2, replace=False)
        scores[i] = scores[j]  # a tie
        classes = rng.randint(0, 80, size=n).tolist()
        masks = []
        yy, xx = np.mgrid[0:h, 0:w]
        for i in range(n):
            kind = rng.randint(3)
            if kind == 0:
                y0, x0 = rng.randint(0, h - 4), rng.randint(0, w - 4)
                m = rect(h, w, y0, y0 + rng.randint(2, h // 2), x0, x0 + rng.randint(2, w // 2))
            elif kind == 1:
                cy, cx = rng.uniform(0, h), rng.uniform(0, w)
                ry, rx = rng.uniform(2, h / 3), rng.uniform(2, w / 3)
                m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
            else:
                m = rng.rand(h, w) < 0.08
            if i == n - 1 and seed == 0:
                m = np.zeros((h, w), bool)  # an empty one
            masks.append(m)
        # blocky semantic map: 8x8 blocks with labels 0..11, plus some noise
        bh, bw = (h + 7) // 8, (w + 7) // 8
        blocks = rng.randint(0, 12, size=(bh, bw))
        sem = np.kron(blocks, np.ones((8, 8), np.int64))[:h, :w]
        noise = rng.rand(h, w) < 0.05
        sem[noise] = rng.randint(0, 12, size=int(noise.sum()))
        cases.append(run_case(
            f"random_seed{seed}",
            f"np.random.RandomState({seed}): {n} instances (rects, ellipses, sparse noise), blocky"
            " semantic map with labels 0..11; Detectron2 default thresholds 0.5 / 0.5 with"
            " stuff_area_thresh 4096 scaled down to 64.",
            h, w, scores, classes, masks, sem, 0.5, 64, 0.5))
    return cases


def main():
    cases = hand_cases() + random_cases()
    doc = {
        "source": "detectron2 02b5c4e2 detectron2/modeling/meta_arch/panoptic_fpn.py"
                  " combine_semantic_and_instance_outputs, run by"
                  " tests/reference/make_panoptic_fusion_fixtures.py",
        "mask_encoding": "masks[i]: run lengths over the row-major [H, W] bool mask, alternating"
                         " 0-runs and 1-runs, starting with a 0-run (possibly 0); sum = H*W."
                         " semantic / panoptic_seg: flat row-major int lists.",
        "tie_order": "torch.argsort(-scores): tied scores come out in ascending instance index"
                     " (asserted equal to stable argsort for every case)",
        "cases": cases,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(OUT, os.path.getsize(OUT), "bytes")
    for c in cases:
        print(c["name"], c["segments_info"])


if __name__ == "__main__":
    main()
