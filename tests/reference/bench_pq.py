#!/usr/bin/env python3
"""`engine eval pq` against panopticapi's multi-core `pq_compute`, on the same files, one run.

    cargo build --release -p engine
    PANOPTICAPI_REPO=/tmp/panopticapi python3 tests/reference/bench_pq.py [--copies 100] [--reps 3]

The files: tests/fixtures/pq/sample (panopticapi's two sample images, 640x480 and 640x427,
with the fixture's perturbed prediction) copied `--copies` times under new image ids and file
names, so that both sides read and compare `2 x copies` image pairs. panopticapi uses every
core (multiprocessing); the engine reads the images with rayon over its threads. Wall time,
median of `--reps`, both including reading the JSON and PNGs. Prints the ratio and checks that
the results agree to 1e-9.
"""

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.environ.get("PANOPTICAPI_REPO", "/tmp/panopticapi"))
from panopticapi.evaluation import pq_compute  # noqa: E402


def replicate(src: str, dst: str, copies: int) -> None:
    for side in ("gt", "pred"):
        doc = json.load(open(os.path.join(src, f"{side}.json")))
        os.makedirs(os.path.join(dst, side))
        anns = []
        for k in range(copies):
            for a in doc["annotations"]:
                a = json.loads(json.dumps(a))
                name = f"{k}_{a['file_name']}"
                shutil.copy(os.path.join(src, side, a["file_name"]), os.path.join(dst, side, name))
                a["file_name"] = name
                a["image_id"] = f"{k}_{a['image_id']}"
                anns.append(a)
        doc["annotations"] = anns
        json.dump(doc, open(os.path.join(dst, f"{side}.json"), "w"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    engine = os.path.join(ROOT, "target", "release", "engine")
    with tempfile.TemporaryDirectory() as d:
        replicate(os.path.join(ROOT, "tests", "fixtures", "pq", "sample"), d, args.copies)
        p = lambda n: os.path.join(d, n)  # noqa: E731
        theirs, ours = [], []
        for _ in range(args.reps):
            t = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                want = pq_compute(p("gt.json"), p("pred.json"), p("gt"), p("pred"))
            theirs.append(time.perf_counter() - t)
            t = time.perf_counter()
            out = subprocess.run([engine, "eval", "pq", "--gt-json", p("gt.json"), "--gt-dir", p("gt"),
                                  "--pred-json", p("pred.json"), "--pred-dir", p("pred"), "--json"],
                                 check=True, capture_output=True, text=True).stdout
            ours.append(time.perf_counter() - t)
        got = json.loads(out)
        worst = max(abs(got[g][k] - want[g][k]) for g in ("All", "Things", "Stuff") for k in ("pq", "sq", "rq"))
    a, b = statistics.median(ours), statistics.median(theirs)
    # The two sides run one after the other in each round; on a machine whose speed drifts,
    # the median of the rounds' own ratios is steadier than the ratio of the medians.
    r = statistics.median(o / t for o, t in zip(ours, theirs))
    print(f"PQ on {2 * args.copies} image pairs, {os.cpu_count()} cores, median of {args.reps}")
    print("| work | engine eval pq (s) | panopticapi pq_compute (s) | engine / panopticapi | median of the rounds' ratios |")
    print("|---|---:|---:|---:|---:|")
    print(f"| {2 * args.copies} images | {a:.3f} | {b:.3f} | {a / b:.3f} | {r:.3f} |")
    print(f"largest difference of All/Things/Stuff values: {worst:.1e}")


if __name__ == "__main__":
    main()
