#!/usr/bin/env python3
"""Writes the fixtures of plugins/io/src/vpq.rs (video panoptic quality, VPQ): a tiny
synthetic video panoptic data set in the layout of VPSNet's official evaluation script, and
what that script reports on it, in tests/fixtures/vpq/.

    python3 -m venv /tmp/venv-vpq
    /tmp/venv-vpq/bin/pip install "numpy==1.23.5" pillow
    /tmp/venv-vpq/bin/python tests/reference/make_vpq_fixtures.py

The official script is mcahny/vps `tools/eval_vpq.py` at commit
138503edbc9e70de744dc0c9fa4b71c799a94d5d (its sha256 is stored in expected.json), read from
a bare git mirror (VPS_GIT_DIR, default
/work/.mirror/mcahny+vps/repo) and imported unmodified as a module. It imports nothing but
numpy, PIL and the standard library, so nothing is stubbed. Run by developers, not by CI
(CI reads the committed fixtures).

numpy must be < 1.24: `main()` calls `np.array_split` on a list of (dict, dict, array,
array, dict) tuples, which numpy 1.24 refuses as a ragged array; 1.23 makes an object array
of it (with a VisibleDeprecationWarning) as the numpy of 2020 did.

What is run:
- `main()` itself, with `sys.argv` set to `--submit_dir --truth_dir --pan_gt_json_file`, on a
  scratch copy of the submission (main writes vpq-<k>.txt and vpq-final.txt into it): its
  window sizes are the hard-coded nframes 1..4 (k = 0, 5, 10, 15) and videos are the
  hard-coded 6 frames.
- then the official `vpq_compute` again, for more window sizes (nframes 5 and 6 for the main
  case, 7 for the shuffled one), on the same `gt_pred_split` that main built.
Nothing is patched: `vpq_compute` and `PQStat.pq_average` are wrapped only to record their
arguments and return values (the per-class numbers at full precision), and the wrappers call
the originals.

Cases:
- `main`: two videos of six 24x16 frames (a Cityscapes-VPS style name and a VIPER style name,
  to exercise both of main's file name rewrites), listed in sorted order. Stuff (road,
  vegetation, sky) and things (person, car, truck; bus never appears, so it is not averaged);
  a car whose predicted id switches mid-video; a person that leaves the ground truth but
  stays one frame longer in the prediction; person and car crowds (two car crowds whose
  insertion order decides which one `crowd_labels_dict` keeps); a ground-truth id whose
  category changes mid-video (the tube takes the first frame's); a predicted stuff id switch;
  a segment listed twice in a ground-truth frame and in a predicted frame (areas summed, first
  entry's category kept); a predicted truck on a car (category mismatch); VOID pixels and
  seeded pixel noise everywhere.
- `shuffled`: 13 frames (the main frames plus a copy of the last one), listed in the JSON
  with the second video first. main reads the ground-truth PNGs in *sorted* file order but
  pairs them with the annotations in JSON order (and the predictions in JSON order), and
  `np.array_split` cuts 13 frames into "videos" of 7 and 6: this case pins both quirks.

expected.json holds, per case and per nframes: k, the All/Things/Stuff dicts of
`pq_average` (pq, sq, rq, n), per_class (pq, sq, rq, iou, tp, fp, fn by category id, in the
categories' order), the (vpq_all, vpq_thing, vpq_stuff) that vpq_compute returns, and the
text of the vpq-<k>.txt it writes; per case the means over main's nframes 1..4 and the text of
vpq-final.txt. Floats are Python's repr (shortest round trip).
"""

import copy
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "vpq")
VPS_GIT_DIR = os.environ.get("VPS_GIT_DIR", "/work/.mirror/mcahny+vps/repo")
VPS_COMMIT = "138503ed"
VPS_PATH = "tools/eval_vpq.py"

H, W = 16, 24

CATEGORIES = [
    {"id": 7, "name": "road", "isthing": 0},
    {"id": 21, "name": "vegetation", "isthing": 0},
    {"id": 23, "name": "sky", "isthing": 0},
    {"id": 24, "name": "person", "isthing": 1},
    {"id": 26, "name": "car", "isthing": 1},
    {"id": 27, "name": "truck", "isthing": 1},
    {"id": 28, "name": "bus", "isthing": 1},
]


def load_official():
    src = subprocess.run(
        ["git", f"--git-dir={VPS_GIT_DIR}", "show", f"{VPS_COMMIT}:{VPS_PATH}"],
        check=True, capture_output=True).stdout
    full = subprocess.run(
        ["git", f"--git-dir={VPS_GIT_DIR}", "rev-parse", VPS_COMMIT],
        check=True, capture_output=True, text=True).stdout.strip()
    path = os.path.join(tempfile.mkdtemp(prefix="vps_ref_"), "eval_vpq.py")
    with open(path, "wb") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location("eval_vpq", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, full, hashlib.sha256(src).hexdigest()


# ---------------------------------------------------------------------------------------
# The synthetic frames. A frame is (gt ids [H, W], gt segments, pred ids, pred segments);
# segments are lists of (id, category_id, iscrowd) in JSON order.

def rect(m, r0, r1, c0, c1, v):
    m[max(r0, 0):max(r1, 0), max(c0, 0):max(c1, 0)] = v


def noise(rng, m, frac, choices):
    """Sets a fraction of the pixels of `m` to ids drawn from `choices`."""
    mask = rng.random(m.shape) < frac
    m[mask] = rng.choice(np.array(choices, dtype=np.int64), size=int(mask.sum()))


def video_a(rng):
    frames = []
    for t in range(6):
        gt = np.zeros((H, W), np.int64)
        rect(gt, 0, 4, 0, W, 23)                      # sky
        if t < 4:
            rect(gt, 4, 7, 0, 12, 21)                 # vegetation, gone from frame 4
        rect(gt, 11, 16, 0, W, 7)                     # road
        rect(gt, 6, 11, 2 + 2 * t, 9 + 2 * t, 26001)  # a car moving right
        if t < 4:
            rect(gt, 5, 11, 16, 19, 24001)            # a person who leaves at frame 4
        if t >= 2:
            rect(gt, 7, 11, 20, 24, 24900)            # a person crowd
        if t >= 3:
            rect(gt, 12, 15, 17, 22, 26002)           # a second car, on the road
        noise(rng, gt, 0.03, [0])                     # VOID specks
        gt_segs = [(23, 23, 0), (7, 7, 0), (26001, 26, 0)]
        if t < 4:
            gt_segs.insert(1, (21, 21, 0))
            gt_segs.append((24001, 24, 0))
        if t >= 2:
            gt_segs.append((24900, 24, 1))
        if t >= 3:
            gt_segs.append((26002, 26, 0))

        pred = np.zeros((H, W), np.int64)
        rect(pred, 0, 4, 0, W, 23)
        rect(pred, 3, 4, 0, 6, 21)                    # sky's last row half vegetation
        if t < 5:
            rect(pred, 4, 7, 0, 14, 21)
        rect(pred, 11, 16, 0, W, 7)
        car = 5001 if t < 3 else 5002                 # the car's id switches at frame 3
        rect(pred, 6, 11, 3 + 2 * t, 9 + 2 * t, car)
        if t < 5:
            rect(pred, 5, 11, 15, 19, 6001)           # the person lingers one frame
        if t >= 2:
            rect(pred, 8, 11, 20, 23, 6002)           # a person on the crowd: ignored
        if t in (3, 4):
            rect(pred, 12, 15, 17, 21, 5003)          # the second car called a truck
        if t == 5:
            rect(pred, 12, 15, 17, 22, 5004)
        if t == 1:
            rect(pred, 13, 15, 2, 5, 5009)            # a car on the road: a false positive
        noise(rng, pred, 0.04, [0, 7, 23])
        pred_segs = [(23, 23, 0), (21, 21, 0), (7, 7, 0), (car, 26, 0)]
        if t < 5:
            pred_segs.append((6001, 24, 0))
        if t >= 2:
            pred_segs.append((6002, 24, 0))
        if t in (3, 4):
            pred_segs.append((5003, 27, 0))
        if t == 5:
            pred_segs.append((5004, 26, 0))
        if t == 1:
            pred_segs.append((5009, 26, 0))
        frames.append((gt, gt_segs, pred, pred_segs))
    return frames


def video_b(rng):
    frames = []
    for t in range(6):
        gt = np.zeros((H, W), np.int64)
        rect(gt, 0, 6, 0, W, 23)
        rect(gt, 6, 10, 14, W, 21)
        rect(gt, 10, 16, 0, W, 7)
        rect(gt, 7, 13, 1, 9, 26005)                  # a big steady car
        rect(gt, 4, 10, 10 + t, 13 + t, 24003)        # person, then "car" from frame 3
        if t < 4:
            rect(gt, 12, 16, 14, 20, 26900)           # car crowd 1
        if t >= 2:
            rect(gt, 12, 16, 20, 24, 26901)           # car crowd 2
        noise(rng, gt, 0.02, [0])
        gt_segs = [(23, 23, 0), (21, 21, 0), (7, 7, 0), (26005, 26, 0),
                   (24003, 24 if t < 3 else 26, 0)]
        # Crowd 2 is listed before crowd 1 where both are present, so a window that starts
        # at frame 2 or 3 keeps crowd 1 as the car crowd, and one that starts earlier keeps
        # crowd 2 (inserted later, from frame 2).
        if t >= 2:
            gt_segs.append((26901, 26, 1))
        if t < 4:
            gt_segs.append((26900, 26, 1))

        pred = np.zeros((H, W), np.int64)
        sky = 23 if t < 3 else 9023                   # a stuff id switch
        rect(pred, 0, 6, 0, W, sky)
        rect(pred, 6, 10, 15, W, 21)
        rect(pred, 10, 16, 0, W, 7)
        rect(pred, 7, 13, 1, 9, 7001)
        rect(pred, 4, 10, 10 + t, 13 + t, 7002)
        if t in (2, 3):
            rect(pred, 12, 16, 14, 19, 7003)          # a car on crowd 1
        noise(rng, pred, 0.03, [0, 7, 21])
        pred_segs = [(sky, 23, 0), (21, 21, 0), (7, 7, 0), (7001, 26, 0),
                     (7002, 24, 0)]
        if t in (2, 3):
            pred_segs.append((7003, 26, 0))
        frames.append((gt, gt_segs, pred, pred_segs))
    return frames


def to_png(ids, path):
    ids = ids.astype(np.uint32)
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG", optimize=True)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def annotation(image_id, file_name, ids, segs, duplicate=None):
    """A COCO panoptic annotation; areas are the PNG's pixel counts. `duplicate` names a
    segment id listed twice, its area split between the two entries."""
    info = []
    for sid, cat, crowd in segs:
        area = int((ids == sid).sum())
        assert area > 0, (image_id, sid)
        if sid == duplicate:
            half = area // 3
            info.append({"id": sid, "category_id": cat, "iscrowd": crowd, "area": half})
            info.append({"id": sid, "category_id": cat, "iscrowd": crowd, "area": area - half})
        else:
            info.append({"id": sid, "category_id": cat, "iscrowd": crowd, "area": area})
    return {"image_id": image_id, "file_name": file_name, "segments_info": info}


def frame_names(video, t):
    """(image id, image file_name, ground-truth PNG name) of frame t of a video: video 1 is
    named as Cityscapes-VPS, video 2 as VIPER (main rewrites both suffixes)."""
    if video == 1:
        image_id = f"0001_{t + 1:04d}_frankfurt_000000_{t * 5:06d}"
        return image_id, image_id + "_leftImg8bit.png", image_id + "_gtFine_color.png"
    image_id = f"0002_{t + 1:04d}_viper_{t * 5:05d}"
    return image_id, image_id + "_newImg8bit.png", image_id + "_final_mask.png"


def write_case(case_dir, frames, order):
    """Writes a case: `frames` is a list of (video, t, frame); `order` the JSON order."""
    gt_dir = os.path.join(case_dir, "panoptic_video")
    pred_dir = os.path.join(case_dir, "submit", "pan_pred")
    os.makedirs(gt_dir)
    os.makedirs(pred_dir)
    images, gt_anns, pred_anns = [], [], []
    for i in order:
        video, t, (gt, gt_segs, pred, pred_segs) = frames[i]
        image_id, file_name, gt_png = frame_names(video, t)
        to_png(gt, os.path.join(gt_dir, gt_png))
        to_png(pred, os.path.join(pred_dir, image_id + ".png"))
        images.append({"id": image_id, "file_name": file_name, "height": H, "width": W})
        gt_anns.append(annotation(image_id, file_name, gt, gt_segs,
                                  duplicate=7 if (video, t) == (1, 1) else None))
        pred_anns.append(annotation(image_id, image_id + ".png", pred, pred_segs,
                                    duplicate=23 if (video, t) == (1, 2) else None))
    gt_json = {"images": images, "annotations": gt_anns, "categories": CATEGORIES}
    with open(os.path.join(case_dir, "panoptic_gt.json"), "w") as f:
        json.dump(gt_json, f, separators=(",", ":"))
    with open(os.path.join(case_dir, "submit", "pred.json"), "w") as f:
        json.dump({"annotations": pred_anns}, f, separators=(",", ":"))


def num(v):
    """A JSON number from a Python or numpy number."""
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    return float(v)


def run_case(ev, case_dir, extra_nframes):
    """Runs the official main() on a case, then vpq_compute for `extra_nframes`."""
    scratch = tempfile.mkdtemp(prefix="vpq_submit_")
    submit = os.path.join(scratch, "submit")
    shutil.copytree(os.path.join(case_dir, "submit"), submit)

    calls = []        # (nframes, [(isthing, group, per_class)], returned triple)
    captured = {}
    orig_vpq_compute = ev.vpq_compute
    orig_pq_average = ev.PQStat.pq_average
    averages = []

    def pq_average(self, categories, isthing):
        r = orig_pq_average(self, categories, isthing)
        averages.append((isthing, copy.deepcopy(r)))
        return r

    def vpq_compute(gt_pred_split, categories, nframes, output_dir):
        captured.setdefault("split", copy.deepcopy(gt_pred_split))
        captured["categories"] = categories
        averages.clear()
        r = orig_vpq_compute(gt_pred_split, categories, nframes, output_dir)
        calls.append((nframes, list(averages), r))
        return r

    ev.vpq_compute = vpq_compute
    ev.PQStat.pq_average = pq_average
    try:
        sys.argv = ["eval_vpq.py", "--submit_dir", submit + "/",
                    "--truth_dir", os.path.join(case_dir, "panoptic_video") + "/",
                    "--pan_gt_json_file", os.path.join(case_dir, "panoptic_gt.json")]
        ev.main()
        for nframes in extra_nframes:
            vpq_compute(copy.deepcopy(captured["split"]), captured["categories"], nframes,
                        submit)
    finally:
        ev.vpq_compute = orig_vpq_compute
        ev.PQStat.pq_average = orig_pq_average

    windows = []
    for nframes, avgs, (vpq_all, vpq_thing, vpq_stuff) in calls:
        k = (nframes - 1) * 5
        w = {"nframes": nframes, "k": k}
        for name, (isthing, (group, per_class)) in zip(["All", "Things", "Stuff"], avgs):
            assert isthing == {"All": None, "Things": True, "Stuff": False}[name]
            w[name] = {key: num(v) for key, v in group.items()}
            if name == "All":
                w["per_class"] = {str(cid): {key: num(v) for key, v in r.items()}
                                  for cid, r in per_class.items()}
        w["vpq_all"], w["vpq_thing"], w["vpq_stuff"] = map(num, (vpq_all, vpq_thing, vpq_stuff))
        with open(os.path.join(submit, f"vpq-{k}.txt")) as f:
            w["table"] = f.read()
        windows.append(w)
    main_windows = windows[:4]
    assert [w["nframes"] for w in main_windows] == [1, 2, 3, 4]
    out = {
        "windows": windows,
        # main's own means (sum / len over nframes 1..4, as it computes them).
        "vpq_all": sum(w["vpq_all"] for w in main_windows) / 4,
        "vpq_thing": sum(w["vpq_thing"] for w in main_windows) / 4,
        "vpq_stuff": sum(w["vpq_stuff"] for w in main_windows) / 4,
    }
    with open(os.path.join(submit, "vpq-final.txt")) as f:
        out["final"] = f.read()
    assert out["final"] == "vpq_all:%.4f\nvpq_thing:%.4f\nvpq_stuff:%.4f\n" % (
        out["vpq_all"], out["vpq_thing"], out["vpq_stuff"])
    shutil.rmtree(scratch)
    return out


def main():
    ev, commit, sha = load_official()
    rng = np.random.default_rng(20200601)
    frames = [(1, t, f) for t, f in enumerate(video_a(rng))]
    frames += [(2, t, f) for t, f in enumerate(video_b(rng))]

    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    write_case(os.path.join(OUT, "main"), frames, list(range(12)))
    # The shuffled case: a 13th frame (a copy of the last, as frame 7 of video 2), and the
    # JSON lists video 2 (with it) before video 1.
    frames13 = frames + [(2, 6, frames[11][2])]
    write_case(os.path.join(OUT, "shuffled"), frames13, list(range(6, 13)) + list(range(6)))

    expected = {
        "official": {"repo": "mcahny/vps", "commit": commit, "path": VPS_PATH,
                     "sha256": sha},
        "versions": {"python": sys.version.split()[0], "numpy": np.__version__,
                     "pillow": importlib.metadata.version("pillow")},
        "cases": {
            "main": run_case(ev, os.path.join(OUT, "main"), [5, 6]),
            "shuffled": run_case(ev, os.path.join(OUT, "shuffled"), [7]),
        },
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    for case, r in expected["cases"].items():
        print(case, [(w["k"], round(w["vpq_all"], 3), round(w["vpq_thing"], 3),
                      round(w["vpq_stuff"], 3)) for w in r["windows"]],
              r["final"].replace("\n", " "))


if __name__ == "__main__":
    main()
