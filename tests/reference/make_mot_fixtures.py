#!/usr/bin/env python3
"""Writes the fixtures of plugins/io/src/mot.rs (the MOTChallenge CLEAR MOT / ID metrics):
MOTChallenge text files and py-motmetrics' results on them, in tests/fixtures/mot/.

    python3 -m venv /tmp/venv-mot
    /tmp/venv-mot/bin/pip install motmetrics==1.4.0 "numpy<2" "pandas<3" scipy
    /tmp/venv-mot/bin/python tests/reference/make_mot_fixtures.py

Written with motmetrics 1.4.0, numpy 1.26.4, pandas 2.3.3, scipy 1.17.1 (the versions are
stored in expected.json). motmetrics 1.4.0 calls `np.asfarray`, which numpy 2 removed, so it
needs numpy < 2 (and so pandas < 3). scipy is the only assignment solver installed and is
forced below: motmetrics picks the first of lapsolver, lap, scipy, munkres, ortools that is
importable, and they break ties differently. Run by developers, not by CI (CI reads the
committed fixtures).

Cases (each a directory with gt.txt and test.txt):
- TUD-Campus, TUD-Stadtmitte: copied from the data that ships with motmetrics.
- synthetic ones written below, each stressing one rule of motmetrics (see CASES).

Every case is evaluated the standard way (`mm.io.loadtxt(path, fmt='mot15-2D')` for both
files, `mm.utils.compare_to_groundtruth(gt, ts, 'iou', distth=0.5)`, `mh.compute`), and
expected.json holds, per case, every metric of METRICS (integers as JSON integers, floats as
floats; NaN and infinities, which motmetrics returns for 0/0 and x/0, as the strings "nan",
"inf", "-inf") and "table": `mm.io.render_summary` of the MOTChallenge metrics with
motmetrics' own formatters and MOTChallenge names, as its example scripts print it.

Semantics of motmetrics worth knowing (the Rust port reproduces all of them):
- motp is the mean IoU *distance* (1 - IoU) over matched pairs, lower is better (not the
  MOTChallenge devkit's mean IoU).
- loadtxt subtracts 1 from X and Y (MATLAB's 1-based pixels); IoUs are computed after that
  shift, which changes their last bits for fractional coordinates. Widths are recomputed as
  (x + w) - x.
- loadtxt keeps only rows with Confidence >= -1 (min_confidence=-1), in ground truth too: a
  row with confidence -2, "nan", or no confidence column at all (a 6-column file) is dropped.
  Rows with confidence 0 (MOT16/17's "ignore" rows) are kept as ordinary objects.
- A pair is matchable when its IoU distance is <= 0.5 (IoU >= 0.5; `dist > max_iou` gives NaN).
- Frames: compare_to_groundtruth walks `gt.index.union(dt.index).levels[0]`. pandas keeps the
  levels of rows dropped by the confidence filter, so num_frames counts frames whose rows were
  all dropped in some cases (see stale_frames and mot.rs, `frame_ids`).
- Duplicate (frame, id) rows are not an error; IDF1 counts each overlapping duplicate pair,
  and can exceed 1 (duplicate_rows).
- IDF1 counts, for each (object, hypothesis) pair, every frame where their IoU distance is
  <= 0.5, matched or not; idtp/idfp/idfn are floats in motmetrics.
- An object id repeated within the frame where it first appears, with both rows matched to
  different hypotheses, makes MOTAccumulator.update raise KeyError (it looks up the object's
  previous frame to decide on a switch); mot.rs returns an error there, so no case has it.
- Empty files load as empty tables (pandas), so an empty prediction file is an ordinary case.
"""

import importlib.metadata
import json
import math
import os
import shutil

import numpy as np
import motmetrics as mm

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "mot")

METRICS = [
    "num_frames", "num_objects", "num_predictions", "num_matches", "num_switches",
    "num_transfer", "num_ascend", "num_migrate", "num_false_positives", "num_misses",
    "num_fragmentations", "mostly_tracked", "partially_tracked", "mostly_lost", "mota",
    "motp", "idf1", "idp", "idr", "idtp", "idfp", "idfn", "precision", "recall",
    "num_unique_objects",
]


def rows(*items):
    """MOTChallenge lines from (frame, id, x, y, w, h[, conf]) tuples; conf defaults to 1."""
    out = []
    for it in items:
        frame, oid, x, y, w, h = it[:6]
        conf = it[6] if len(it) > 6 else 1
        out.append(f"{frame},{oid},{x},{y},{w},{h},{conf},-1,-1,-1")
    return "\n".join(out) + ("\n" if out else "")


def walk(oid, frames, x0, dx=0, y=50, w=40, h=80):
    """One object moving right by dx per frame."""
    return [(f, oid, x0 + dx * (f - frames[0]), y, w, h) for f in frames]


def random_case(seed):
    """Eight objects over 60 frames and a noisy tracker: jitter, dropouts, id swaps, false
    positives, fractional coordinates (2 decimals), random order within frames."""
    rng = np.random.default_rng(seed)
    gt, pr = [], []
    next_hid = 100
    for oid in range(1, 9):
        start = int(rng.integers(1, 30))
        end = int(rng.integers(start + 5, 61))
        x, y = float(rng.uniform(0, 500)), float(rng.uniform(0, 300))
        w, h = float(rng.uniform(20, 60)), float(rng.uniform(50, 120))
        vx, vy = float(rng.normal(0, 4)), float(rng.normal(0, 2))
        hid = next_hid
        next_hid += 1
        for f in range(start, end + 1):
            x += vx
            y += vy
            gt.append((f, oid, round(x, 2), round(y, 2), round(w, 2), round(h, 2)))
            if rng.random() < 0.15:
                continue  # missed by the tracker
            if rng.random() < 0.05:
                hid = next_hid  # the tracker loses the identity
                next_hid += 1
            j = rng.normal(0, 0.12, 4) * np.array([w, h, w, h])
            pr.append((f, hid, round(x + j[0], 2), round(y + j[1], 2),
                       round(w + j[2], 2), round(h + j[3], 2)))
    for _ in range(40):  # false positives, some reusing live ids
        f = int(rng.integers(1, 61))
        hid = int(rng.integers(100, next_hid + 5))
        pr.append((f, hid, round(float(rng.uniform(0, 600)), 2), round(float(rng.uniform(0, 400)), 2),
                   round(float(rng.uniform(20, 60)), 2), round(float(rng.uniform(50, 120)), 2)))
    # Objects within a frame in random order: motmetrics keeps file order within a frame,
    # which decides the order of the greedy continuation step and of the assignment's ties.
    def shuffle_within_frames(items):
        items = sorted(items, key=lambda r: (r[0], rng.random()))
        return items
    return rows(*shuffle_within_frames(gt)), rows(*shuffle_within_frames(pr))


# Synthetic cases: name -> (gt text, test text, what it stresses).
CASES = {}

# Two objects; the tracker swaps their identities at frame 4 (two SWITCHes, two TRANSFERs).
CASES["id_switch"] = (
    rows(*walk(1, range(1, 9), 0, 5), *walk(2, range(1, 9), 200, -5)),
    rows(*[(f, 10 if f < 4 else 20, x, y, w, h) for (f, _, x, y, w, h) in walk(1, range(1, 9), 0, 5)],
         *[(f, 20 if f < 4 else 10, x, y, w, h) for (f, _, x, y, w, h) in walk(2, range(1, 9), 200, -5)]),
    "identity swap: switches and transfers",
)

# One object tracked with gaps: frames 3-4 and 7 missed, so two fragmentations.
CASES["fragmentation"] = (
    rows(*walk(1, range(1, 11), 10, 3)),
    rows(*[r[:1] + (7,) + r[2:] for r in walk(1, range(1, 11), 10, 3) if r[0] not in (3, 4, 7, 10)]),
    "tracked, missed, tracked again: fragmentations; last frame missed is no fragmentation",
)

# The object is lost for frames 4-6 and re-found with a new id (switch + ascend); a second
# object leaves the ground truth for frames 4-6 and comes back, and the tracker keeps its id
# (no switch: the previous match is carried over).
CASES["lost_refound"] = (
    rows(*walk(1, range(1, 11), 0, 4), *walk(2, [1, 2, 3, 7, 8, 9], 300)),
    rows(*[(f, 5 if f < 4 else 6, x, y, w, h) for (f, _, x, y, w, h) in walk(1, range(1, 11), 0, 4)
           if not 4 <= f <= 6],
         *[r[:1] + (9,) + r[2:] for r in walk(2, [1, 2, 3, 7, 8, 9], 300)]),
    "lost then re-found with a new id; ground-truth gap with the id kept",
)

# Ties in the assignment: two objects at the same place and two identical hypotheses (every
# pairing costs the same), then a 2x2 with equal cross distances; which pairing wins decides
# the switches that follow.
CASES["ties"] = (
    rows((1, 1, 10, 10, 20, 20), (1, 2, 10, 10, 20, 20),
         (2, 1, 10, 10, 20, 20), (2, 2, 10, 10, 20, 20),
         (3, 2, 10, 10, 20, 20), (3, 1, 10, 10, 20, 20),
         (4, 1, 0, 0, 10, 10), (4, 2, 10, 0, 10, 10),
         (5, 1, 0, 0, 10, 10), (5, 2, 10, 0, 10, 10), (5, 3, 100, 100, 10, 10)),
    rows((1, 7, 10, 10, 20, 20), (1, 8, 10, 10, 20, 20),
         (2, 8, 10, 10, 20, 20), (2, 9, 10, 10, 20, 20),
         (3, 9, 10, 10, 20, 20), (3, 7, 10, 10, 20, 20),
         # Each hypothesis covers both objects: IoU 1/2 with each, all four distances 0.5.
         (4, 7, 0, 0, 20, 10), (4, 8, 0, 0, 20, 10),
         (5, 8, 0, 0, 20, 10), (5, 7, 0, 0, 20, 10), (5, 4, 100, 100, 10, 10)),
    "equal costs in the per-frame assignment",
)

# Frames with only ground truth (2, 5), only predictions (3, 7), and gaps in the numbering.
CASES["gt_or_pred_only_frames"] = (
    rows((1, 1, 0, 0, 10, 10), (2, 1, 0, 0, 10, 10), (2, 2, 50, 50, 10, 10),
         (4, 1, 0, 0, 10, 10), (5, 2, 50, 50, 10, 10), (9, 1, 0, 0, 10, 10)),
    rows((1, 3, 0, 0, 10, 10), (3, 3, 0, 0, 10, 10), (4, 3, 0, 0, 10, 10),
         (7, 4, 70, 70, 10, 10), (9, 3, 1, 0, 10, 10)),
    "frames with only one side, non-consecutive frame ids",
)

# IoU exactly 0.5 (distance 0.5: matchable), just below 0.5 (not matchable), and 2/3.
CASES["iou_half"] = (
    rows((1, 1, 0, 0, 2, 1), (1, 2, 10, 0, 3, 1), (1, 3, 20, 0, 3, 3),
         (2, 1, 0, 0, 2, 1), (2, 2, 10, 0, 3, 1), (2, 3, 20, 0, 3, 3),
         (3, 1, 0.5, 0.5, 2.2, 1.3), (3, 2, 10.1, 0, 3.3, 1.7)),
    rows((1, 1, 0, 0, 1, 1), (1, 2, 10, 0, 2, 1), (1, 3, 20, 0, 2, 3),
         (2, 1, 0, 0, 1, 1), (2, 2, 10, 0, 2.0000001, 1), (2, 3, 20, 0, 1.9999999, 3),
         (3, 1, 0.5, 0.5, 1.1, 1.3), (3, 2, 10.1, 0, 1.65, 1.7)),
    "IoU at exactly 0.5 and one ulp away",
)

# No predictions at all: every object missed; motp and precision are 0/0.
CASES["empty_prediction"] = (
    rows(*walk(1, range(1, 5), 0, 2), *walk(2, range(2, 6), 100)),
    "",
    "empty prediction file",
)

# No ground truth: mota = 1 - FP/0 = -inf.
CASES["empty_ground_truth"] = (
    "",
    rows(*walk(3, range(1, 4), 0, 2)),
    "empty ground-truth file",
)

# Hypothesis id 7 follows object 1 (frames 1-3), then, after object 1 has left, object 2
# (frames 5-8): a transfer of a hypothesis to a new object (migrate). Id 8 then takes over
# object 2 while 7 jumps back to a returning object 1.
CASES["hyp_id_reused"] = (
    rows(*walk(1, [1, 2, 3, 9, 10], 0), *walk(2, range(5, 11), 200)),
    rows(*[r[:1] + (7,) + r[2:] for r in walk(1, [1, 2, 3], 0)],
         *[r[:1] + (7,) + r[2:] for r in walk(2, range(5, 9), 200)],
         *[r[:1] + (8,) + r[2:] for r in walk(2, [9, 10], 200)],
         *[r[:1] + (7,) + r[2:] for r in walk(1, [9, 10], 0)]),
    "a hypothesis id reused for another object: transfer, migrate",
)

# Confidence column handling and the parser: conf -2 and nan rows dropped (in ground truth
# too), conf 0 and -1 kept; whitespace and tab separators; blank lines; a float id; a trailing
# comma (an empty 8th field); leading and trailing blanks; 7 to 10 fields. Not accepted by
# motmetrics, so not here: ", " separators (it splits at each comma and at each run of blanks,
# which makes an empty field) and more than 10 fields (an error, or with 11 on the first line,
# columns silently shifted).
CASES["confidence_and_format"] = (
    "1,1,0,0,10,10,1,-1,-1,-1\n"
    "1 2 50 50 10 10 -2 -1 -1 -1\n"
    "\n"
    "2\t1\t0\t0\t10\t10\t0\n"
    "2,2,50,50,10,10,nan,-1,-1,-1\n"
    "3,1.0,0,0,10,10,-1,\n"
    "  3   2   50   50   10   10   1  \n",
    "1,4,0,0,10,10,-1,-1,-1,-1\n"
    "1,5,50,50,10,10,-1.5,-1,-1,-1\n"
    "2,4,0.5,0,10,10,0.3,-1,-1,-1\n"
    "2,5,50,50,10,10,1e0,-1,-1,-1\n"
    "3,4,1,0,10,10,-1\n"
    "4,4,1,0,10,10,5\n",
    "the confidence filter and separators",
)

# Rows whose confidence filter leaves frames empty: pandas keeps their index levels, so
# some of these frames count in num_frames (ground truth frames 2 and 5 and prediction frame 11
# below; prediction frame 4 does not, as no prediction falls outside the ground truth pairs
# before it is added).
CASES["stale_frames"] = (
    rows((1, 1, 10, 10, 20, 20), (2, 1, 10, 10, 20, 20, -5), (3, 1, 10, 10, 20, 20),
         (5, 1, 10, 10, 20, 20, -3)),
    rows((1, 1, 10, 10, 20, 20), (3, 1, 10, 10, 20, 20), (4, 7, 10, 10, 20, 20, -9),
         (9, 3, 10, 10, 20, 20), (11, 4, 1, 1, 2, 2, -4)),
    "frames whose rows were all dropped by the confidence filter",
)

# The same as stale_frames but the predictions are exactly the kept ground truth: pandas'
# union returns the ground truth's index as it is.
CASES["stale_frames_equal"] = (
    rows((1, 1, 10, 10, 20, 20), (2, 1, 10, 10, 20, 20, -5), (3, 1, 10, 10, 20, 20)),
    rows((1, 1, 10, 10, 20, 20), (3, 1, 10, 10, 20, 20), (6, 7, 10, 10, 20, 20, -9)),
    "predictions equal to the kept ground truth",
)

# Duplicate (frame, id) rows on both sides.
CASES["duplicate_rows"] = (
    rows((1, 1, 10, 10, 20, 20), (1, 1, 10, 12, 20, 20), (3, 1, 10, 10, 20, 20),
         (7, 2, 1, 1, 5, 5, -7)),
    rows((1, 1, 10, 10, 20, 20), (1, 1, 12, 10, 20, 20), (3, 1, 10, 10, 20, 20),
         (9, 4, 1, 1, 2, 2), (11, 4, 1, 1, 2, 2, -4)),
    "repeated (frame, id) rows: IDF1 above 1, both sides' stale frames",
)

CASES["random_a"] = random_case(1) + ("seeded random tracker output",)
CASES["random_b"] = random_case(2) + ("seeded random tracker output",)


def json_number(v):
    """A metric as JSON: ints stay ints, non-finite floats become strings."""
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def check_parsing(path, df):
    """pandas' python engine parses numbers with its own routine; check that it gives the
    correctly rounded values (what Rust's str::parse gives) for every box in the file."""
    want = []
    with open(path) as f:
        for line in f:
            parts = [p for p in line.replace(",", " ").split()]
            if len(parts) < 7 or not float(parts[6]) >= -1:
                continue
            want.append([float(p) for p in parts[2:6]])
    got = df[["X", "Y", "Width", "Height"]].to_numpy(dtype=float)
    want = np.array(want, dtype=float).reshape(-1, 4)
    want[:, :2] -= 1
    assert got.shape == want.shape and (got == want).all(), path


def main():
    versions = {p: importlib.metadata.version(p) for p in ("motmetrics", "numpy", "pandas", "scipy")}
    mm.lap.default_solver = "scipy"
    data = os.path.join(os.path.dirname(mm.__file__), "data")
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    cases = {}
    for name in ("TUD-Campus", "TUD-Stadtmitte"):
        os.makedirs(os.path.join(OUT, name))
        for f in ("gt.txt", "test.txt"):
            shutil.copyfile(os.path.join(data, name, f), os.path.join(OUT, name, f))
        cases[name] = "TUD data shipped with motmetrics"
    for name, (gt, test, about) in CASES.items():
        os.makedirs(os.path.join(OUT, name))
        for f, text in (("gt.txt", gt), ("test.txt", test)):
            with open(os.path.join(OUT, name, f), "w") as fh:
                fh.write(text)
        cases[name] = about

    mh = mm.metrics.create()
    expected = {}
    with mm.lap.set_default_solver("scipy"):
        for name, about in cases.items():
            gt_path = os.path.join(OUT, name, "gt.txt")
            ts_path = os.path.join(OUT, name, "test.txt")
            gt = mm.io.loadtxt(gt_path, fmt="mot15-2D")
            ts = mm.io.loadtxt(ts_path, fmt="mot15-2D")
            check_parsing(gt_path, gt)
            check_parsing(ts_path, ts)
            acc = mm.utils.compare_to_groundtruth(gt, ts, "iou", distth=0.5)
            summary = mh.compute(acc, metrics=METRICS, name=name, return_dataframe=False)
            values = {m: json_number(summary[m]) for m in METRICS}
            table = mm.io.render_summary(
                mh.compute(acc, metrics=mm.metrics.motchallenge_metrics, name=name),
                formatters=mh.formatters,
                namemap=mm.io.motchallenge_metric_names,
            )
            expected[name] = {"about": about, **values, "table": table}
            print(table)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"versions": versions, "solver": "scipy", "metrics": METRICS,
                   "cases": expected}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
