#!/usr/bin/env python3
"""Generates tests/fixtures/pq/: COCO-panoptic ground truth + predictions and panopticapi's
`pq_compute` results on them, so that `engine eval pq` can be checked against the reference
implementation (to 1e-9) without Python in CI.

Reference: panopticapi (github.com/cocodataset/panopticapi) at commit 7bb46555. It is not a
package; extract its source and point PANOPTICAPI_REPO at it (default /tmp/panopticapi):

    mkdir -p /tmp/panopticapi
    git --git-dir=<panopticapi git dir> archive HEAD | tar -x -C /tmp/panopticapi
    PANOPTICAPI_REPO=/tmp/panopticapi python3 tests/reference/make_pq_fixtures.py

Needs numpy and pillow. Output (each case folder holds gt.json, gt/*.png, pred.json, pred/*.png):

    sample/     gt = panopticapi's sample_data (panoptic_examples.json, which already has its
                133 categories, + the two PNGs); pred = seeded perturbation of the gt.
    generated/  three synthetic 40x60 images built to hit every rule of evaluation.py.
    errors/{a_png_id_not_in_json, b_json_id_not_in_png, c_unknown_category}/
                malformed predictions; expected_error.txt holds the message of the KeyError
                that pq_compute raises (e.args[0], without the quotes str(KeyError) adds).

`expected.json` is exactly the dict pq_compute returned, dumped with json.dump (per_class keys
become strings). PNG ids are RGB-encoded, id = R + 256*G + 256^2*B (panopticapi.utils.id2rgb).
"""

import json
import os
import shutil
import sys

import numpy as np
from PIL import Image

PANOPTICAPI_REPO = os.environ.get("PANOPTICAPI_REPO", "/tmp/panopticapi")
sys.path.insert(0, PANOPTICAPI_REPO)

from panopticapi.evaluation import pq_compute, pq_compute_single_core  # noqa: E402
from panopticapi.utils import id2rgb, rgb2id  # noqa: E402

SEED = 20240612
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "pq")
SAMPLE = os.path.join(PANOPTICAPI_REPO, "sample_data")


# ----------------------------------------------------------------------------- helpers

def save_png(path, id_map):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(id2rgb(id_map.astype(np.uint32)), mode="RGB").save(path, optimize=True)


def load_ids(path):
    return rgb2id(np.array(Image.open(path), dtype=np.uint32)).astype(np.int64)


def bbox(mask):
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def segments_from_map(id_map, cat_of):
    """segments_info (id, category_id, area, bbox) for every non-zero id in id_map."""
    out = []
    for sid in sorted(int(x) for x in np.unique(id_map) if x != 0):
        m = id_map == sid
        out.append({"id": sid, "category_id": int(cat_of[sid]), "area": int(m.sum()), "bbox": bbox(m)})
    return out


def dump(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)


def run_pq(case_dir):
    res = pq_compute(os.path.join(case_dir, "gt.json"), os.path.join(case_dir, "pred.json"))
    dump(os.path.join(case_dir, "expected.json"), res)
    return res


def per_cat_stats(case_dir):
    """tp/fp/fn/iou per category, from pq_compute_single_core (for checks and the report)."""
    gt = json.load(open(os.path.join(case_dir, "gt.json")))
    pred = json.load(open(os.path.join(case_dir, "pred.json")))
    cats = {c["id"]: c for c in gt["categories"]}
    preds = {a["image_id"]: a for a in pred["annotations"]}
    pairs = [(a, preds[a["image_id"]]) for a in gt["annotations"]]
    st = pq_compute_single_core(0, pairs, os.path.join(case_dir, "gt"), os.path.join(case_dir, "pred"), cats)
    return {k: (v.tp, v.fp, v.fn, float(v.iou)) for k, v in st.pq_per_cat.items()
            if v.tp + v.fp + v.fn > 0}


# ----------------------------------------------------------------------------- case 1: sample

def make_sample(case_dir):
    rng = np.random.default_rng(SEED)
    os.makedirs(os.path.join(case_dir, "gt"))
    os.makedirs(os.path.join(case_dir, "pred"))
    shutil.copy(os.path.join(SAMPLE, "panoptic_examples.json"), os.path.join(case_dir, "gt.json"))
    gt = json.load(open(os.path.join(SAMPLE, "panoptic_examples.json")))
    assert "categories" in gt and len(gt["categories"]) > 0
    cats = {c["id"]: c for c in gt["categories"]}
    stuff_ids = sorted(c["id"] for c in gt["categories"] if c["isthing"] == 0)
    pred_anns = []
    next_id = 7000001
    for ann in gt["annotations"]:
        fn = ann["file_name"]
        shutil.copy(os.path.join(SAMPLE, "panoptic_examples", fn), os.path.join(case_dir, "gt", fn))
        g = load_ids(os.path.join(SAMPLE, "panoptic_examples", fn))
        h, w = g.shape
        p = g.copy()
        cat_of = {s["id"]: s["category_id"] for s in ann["segments_info"]}
        segs = ann["segments_info"]
        things = [s["id"] for s in segs if cats[s["category_id"]]["isthing"] == 1 and s["iscrowd"] == 0]
        stuff = [s["id"] for s in segs if cats[s["category_id"]]["isthing"] == 0]
        crowd = [s["id"] for s in segs if s["iscrowd"] == 1]
        order = list(rng.permutation(things))
        shift_ids, merge_pair, drop_id, relabel_thing, split_id = (
            order[0:3], (order[3], order[4]), order[5], order[6], order[7])
        # shift three thing segments by a few pixels; vacated pixels become VOID in pred
        for sid in shift_ids:
            dy, dx = (int(v) for v in rng.integers(-6, 7, size=2))
            m = g == sid
            p[m & (p == sid)] = 0
            ys, xs = np.nonzero(m)
            ys, xs = np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)
            p[ys, xs] = sid
        # merge two thing segments (the second takes the first's id; categories may differ,
        # then the merged segment keeps the first one's category)
        p[p == merge_pair[1]] = merge_pair[0]
        # drop one segment: its pixels are left unlabeled (VOID in pred)
        p[p == drop_id] = 0
        # split one segment at its median row: the lower part gets a new id, same category
        m = p == split_id
        ys, _ = np.nonzero(m)
        mid = int(np.median(ys))
        lower = m & (np.arange(h)[:, None] > mid)
        p[lower] = next_id
        cat_of[next_id] = cat_of[split_id]
        next_id += 1
        # small false positive (a 14x14 person square) on a random stuff area
        for _ in range(1000):
            y0, x0 = int(rng.integers(0, h - 14)), int(rng.integers(0, w - 14))
            if np.isin(g[y0:y0 + 14, x0:x0 + 14], stuff).all():
                break
        p[y0:y0 + 14, x0:x0 + 14] = next_id
        cat_of[next_id] = 1
        next_id += 1
        # a prediction on the crowd region (same category): should be ignored, not an FP
        for cid in crowd:
            m = (g == cid) & (p == cid)
            ys, xs = np.nonzero(m)
            sel = m & (np.arange(w)[None, :] < np.median(xs))
            p[sel] = next_id
            cat_of[next_id] = cat_of[cid]
            next_id += 1
        p[np.isin(p, crowd)] = 0  # crowd pixels not covered above are unlabeled in pred
        # relabel: one thing segment and one stuff segment get another category of their kind
        thing_cats = sorted({cats[cat_of[s]]["id"] for s in things} - {cat_of[relabel_thing]})
        cat_of[relabel_thing] = thing_cats[0] if thing_cats else (2 if cat_of[relabel_thing] != 2 else 3)
        st = sorted(stuff, key=lambda s: (g == s).sum())[0]
        cat_of[st] = [c for c in stuff_ids if c != cat_of[st]][int(rng.integers(0, len(stuff_ids) - 1))]
        # stuff boundary noise: move one stuff segment's boundary by dilating it 3 px downward
        big = sorted(stuff, key=lambda s: -(g == s).sum())[0]
        m = p == big
        for k in range(1, 4):
            grow = np.zeros_like(m)
            grow[k:] = m[:-k]
            p[grow & np.isin(p, stuff)] = big
        save_png(os.path.join(case_dir, "pred", fn), p)
        pred_anns.append({"image_id": ann["image_id"], "file_name": fn,
                          "segments_info": segments_from_map(p, cat_of)})
    dump(os.path.join(case_dir, "pred.json"), {"annotations": pred_anns})


# ----------------------------------------------------------------------------- case 2: generated

GEN_CATS = [
    {"id": 1, "name": "person", "isthing": 1, "supercategory": "person", "color": [220, 20, 60]},
    {"id": 2, "name": "car", "isthing": 1, "supercategory": "vehicle", "color": [0, 0, 142]},
    {"id": 3, "name": "dog", "isthing": 1, "supercategory": "animal", "color": [250, 170, 30]},
    {"id": 4, "name": "cat", "isthing": 1, "supercategory": "animal", "color": [100, 170, 30]},
    {"id": 5, "name": "bicycle", "isthing": 1, "supercategory": "vehicle", "color": [119, 11, 32]},
    {"id": 10, "name": "sky", "isthing": 0, "supercategory": "sky", "color": [70, 130, 180]},
    {"id": 11, "name": "grass", "isthing": 0, "supercategory": "plant", "color": [107, 142, 35]},
    {"id": 12, "name": "road", "isthing": 0, "supercategory": "ground", "color": [128, 64, 128]},
]
H, W = 40, 60


def make_generated(case_dir):
    """Rectangles are [r0:r1, c0:c1] (half-open). See README.md for the rule each one hits."""
    images, gt_anns, pred_anns = [], [], []

    def finish(image_id, g, gcat, gcrowd, p, pcat, gt_area_override=None, pred_json_edit=None):
        fn = "gen_%d.png" % image_id
        save_png(os.path.join(case_dir, "gt", fn), g)
        save_png(os.path.join(case_dir, "pred", fn), p)
        gsegs = segments_from_map(g, gcat)
        for s in gsegs:
            s["iscrowd"] = int(gcrowd.get(s["id"], 0))
            if gt_area_override and s["id"] in gt_area_override:
                s["area"] = gt_area_override[s["id"]]
        psegs = segments_from_map(p, pcat)
        if pred_json_edit:
            pred_json_edit(psegs)
        images.append({"id": image_id, "file_name": fn.replace(".png", ".jpg"), "height": H, "width": W})
        gt_anns.append({"image_id": image_id, "file_name": fn, "segments_info": gsegs})
        pred_anns.append({"image_id": image_id, "file_name": fn, "segments_info": psegs})

    # ---- image 1: VOID handling, IoU threshold, union minus pred-VOID overlap
    g = np.full((H, W), 100, np.int64)           # sky (stuff) everywhere else
    g[0:10, 50:60] = 0                           # VOID A (100 px)
    g[25:35, 10:20] = 0                          # VOID B (100 px)
    g[36:40, 0:10] = 0                           # VOID C (40 px), predicted as sky
    g[10:20, 0:10] = 11                          # person 11 (100 px)
    g[10:20, 20:30] = 12                         # person 12 (100 px)
    g[25:35, 0:10] = 13                          # car 13 (100 px)
    gcat = {100: 10, 11: 1, 12: 1, 13: 2}
    p = np.full((H, W), 200, np.int64)           # sky
    p[10:15, 0:10] = 21                          # person: 50 px inside person 11 -> IoU 50/100 = 0.5 -> no match
    p[10:15, 20:30] = 22                         # person: 51 px inside person 12 -> IoU 0.51 -> TP
    p[15, 20] = 22
    p[25:35, 4:15] = 23                          # car: 60 px of car 13 + 50 px VOID B:
                                                 #   union 110+100-60-50 = 100 -> IoU 0.6 (0.4 without VOID term)
    p[0:10, 44:60] = 24                          # car: 100 of 160 px on VOID A -> ignored
    p[25:35, 15:25] = 25                         # person: 50 of 100 px on VOID B (exactly 0.5) -> FP
    p[36:40, 50:60] = 0                          # unlabeled pred pixels (pred VOID)
    pcat = {200: 10, 21: 1, 22: 1, 23: 2, 24: 2, 25: 1}

    def edit1(psegs):  # pred JSON areas are not trusted: one wrong, one missing (with bbox)
        for s in psegs:
            if s["id"] == 22:
                s["area"] = 999
            if s["id"] == 23:
                del s["area"], s["bbox"]
    finish(1, g, gcat, {}, p, pcat, pred_json_edit=edit1)

    # ---- image 2: crowd handling, VOID+crowd sum, gt area taken from JSON
    g = np.full((H, W), 101, np.int64)           # grass
    g[0:20, 0:20] = 31                           # person crowd 31 (400 px, iscrowd 1)
    g[0:20, 20:30] = 0                           # VOID (200 px)
    g[25:35, 30:40] = 32                         # person 32: 100 px in PNG, area 90 in JSON
    gcat = {101: 11, 31: 1, 32: 1}
    p = np.full((H, W), 201, np.int64)           # grass
    p[0:10, 0:20] = 41                           # person fully on the person crowd -> ignored
    p[10:15, 0:20] = 42                          # car on the *person* crowd -> FP (crowd is per category)
    p[15:20, 0:14] = 43                          # person: 70 crowd + 130 grass -> 0.35 -> FP
    p[20:33, 0:10] = 43
    p[15:20, 14:26] = 44                         # person: 30 crowd + 30 VOID + 40 grass:
    p[20:24, 14:24] = 44                         #   (30+30)/100 = 0.6 -> ignored (neither alone > 0.5)
    p[25:35, 30:35] = 45                         # person: 50 px inside person 32: IoU 50/90 (JSON) -> TP;
                                                 #   with the PNG area it would be 50/100 = 0.5 -> no match
    pcat = {201: 11, 41: 1, 42: 2, 43: 1, 44: 1, 45: 1}
    finish(2, g, gcat, {31: 1}, p, pcat, gt_area_override={32: 90, 101: 1713})

    # ---- image 3: category only in gt, only in pred, wrong category
    g = np.full((H, W), 102, np.int64)           # sky rows 0:20
    g[20:40, :] = 103                            # grass rows 20:40
    g[5:15, 5:15] = 51                           # dog 51 (only in gt) -> FN
    g[5:15, 30:45] = 52                          # car 52, predicted as person -> car FN + person FP
    gcat = {102: 10, 103: 11, 51: 3, 52: 2}
    p = np.full((H, W), 202, np.int64)
    p[18:40, :] = 203                            # grass boundary 2 rows too high
    p[5:15, 30:45] = 62                          # person on car 52
    p[25:35, 40:50] = 61                         # cat (only in pred) -> FP
    pcat = {202: 10, 203: 11, 61: 4, 62: 1}
    finish(3, g, gcat, {}, p, pcat)

    dump(os.path.join(case_dir, "gt.json"),
         {"images": images, "annotations": gt_anns, "categories": GEN_CATS})
    dump(os.path.join(case_dir, "pred.json"), {"annotations": pred_anns})


GEN_EXPECTED_COUNTS = {  # category -> (tp, fp, fn)
    1: (2, 4, 1),   # person: TP 22/12, 45/32; FP 21, 25, 43, 62; FN 11 (IoU exactly 0.5)
    2: (1, 1, 1),   # car: TP 23/13; FP 42; FN 52
    3: (0, 0, 1),   # dog: only in gt
    4: (0, 1, 0),   # cat: only in pred
    10: (2, 0, 0),  # sky
    11: (2, 0, 0),  # grass
}                   # bicycle (5) and road (12): no segments -> pq 0, not counted in n


# ----------------------------------------------------------------------------- case 3: errors

def make_error(case_dir, variant):
    g = np.full((4, 6), 1, np.int64)
    g[1:3, 1:3] = 2
    p = g.copy()
    gsegs = [{"id": 1, "category_id": 10, "area": 20, "bbox": [0, 0, 6, 4], "iscrowd": 0},
             {"id": 2, "category_id": 1, "area": 4, "bbox": [1, 1, 2, 2], "iscrowd": 0}]
    psegs = [{"id": 1, "category_id": 10}, {"id": 2, "category_id": 1}]
    if variant == "a_png_id_not_in_json":
        p[0, 5] = 7                   # id 7 is in the PNG only
    elif variant == "b_json_id_not_in_png":
        psegs.append({"id": 9, "category_id": 1})
    elif variant == "c_unknown_category":
        psegs[1]["category_id"] = 99
    os.makedirs(case_dir)
    save_png(os.path.join(case_dir, "gt", "err.png"), g)
    save_png(os.path.join(case_dir, "pred", "err.png"), p)
    cats = [c for c in GEN_CATS if c["id"] in (1, 10)]
    dump(os.path.join(case_dir, "gt.json"),
         {"images": [{"id": 5, "file_name": "err.jpg", "height": 4, "width": 6}],
          "annotations": [{"image_id": 5, "file_name": "err.png", "segments_info": gsegs}],
          "categories": cats})
    dump(os.path.join(case_dir, "pred.json"),
         {"annotations": [{"image_id": 5, "file_name": "err.png", "segments_info": psegs}]})
    msgs = []
    for fn in (lambda: pq_compute(os.path.join(case_dir, "gt.json"), os.path.join(case_dir, "pred.json")),
               lambda: per_cat_stats(case_dir)):
        try:
            fn()
        except KeyError as e:
            msgs.append(e.args[0])
        else:
            raise AssertionError("no error raised for " + variant)
    assert msgs[0] == msgs[1], msgs
    with open(os.path.join(case_dir, "expected_error.txt"), "w") as f:
        f.write(msgs[0] + "\n")
    return msgs[0]


# ----------------------------------------------------------------------------- main

def summary(name, res):
    print("%-10s" % name, " ".join("%s: pq=%.12f sq=%.12f rq=%.12f n=%d" % (
        k, res[k]["pq"], res[k]["sq"], res[k]["rq"], res[k]["n"]) for k in ("All", "Things", "Stuff")))


def main():
    for case in ("sample", "generated", "errors"):  # README.md (hand-written) is kept
        if os.path.isdir(os.path.join(ROOT, case)):
            shutil.rmtree(os.path.join(ROOT, case))
    os.makedirs(ROOT, exist_ok=True)
    d = os.path.join(ROOT, "sample")
    make_sample(d)
    res_sample = run_pq(d)
    st_sample = per_cat_stats(d)

    d = os.path.join(ROOT, "generated")
    make_generated(d)
    res_gen = run_pq(d)
    st_gen = per_cat_stats(d)
    counts = {k: v[:3] for k, v in st_gen.items()}
    assert counts == GEN_EXPECTED_COUNTS, counts
    assert res_gen["Things"]["n"] == 4 and res_gen["Stuff"]["n"] == 2, res_gen

    errs = {}
    for v in ("a_png_id_not_in_json", "b_json_id_not_in_png", "c_unknown_category"):
        errs[v] = make_error(os.path.join(ROOT, "errors", v), v)

    print("\n==== summary")
    summary("sample", res_sample)
    print("sample per-category (tp, fp, fn, iou):", st_sample)
    summary("generated", res_gen)
    print("generated per-category (tp, fp, fn, iou):", st_gen)
    for k, v in errs.items():
        print("error", k, ":", v)


if __name__ == "__main__":
    main()
