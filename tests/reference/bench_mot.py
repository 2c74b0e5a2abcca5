"""`engine eval mot` against py-motmetrics on the TUD sequences it ships (copied into
tests/fixtures/mot/), in the same run:

    cargo build --release -p engine
    python3 tests/reference/bench_mot.py        # needs: pip install motmetrics 'numpy<2' 'pandas<3' scipy

motmetrics the standard way (`mm.io.loadtxt(fmt='mot15-2D')`, `compare_to_groundtruth(..., 'iou',
distth=0.5)`, `compute` of `motchallenge_metrics`; scipy as its solver, as the fixtures use),
against the engine binary (process start and file reading included). Median of 5.
"""

import os
import subprocess
import time

import motmetrics as mm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENGINE = os.path.join(ROOT, "target", "release", "engine")
mm.lap.default_solver = "scipy"


def median_ms(f):
    times = []
    for _ in range(5):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return sorted(times)[2] * 1e3


print("| sequence | motmetrics (ms) | engine eval mot (ms) | engine / motmetrics |")
print("|---|---:|---:|---:|")
for seq in ["TUD-Campus", "TUD-Stadtmitte"]:
    gt_path = os.path.join(ROOT, "tests", "fixtures", "mot", seq, "gt.txt")
    pred_path = os.path.join(ROOT, "tests", "fixtures", "mot", seq, "test.txt")

    def official():
        gt = mm.io.loadtxt(gt_path, fmt="mot15-2D")
        ts = mm.io.loadtxt(pred_path, fmt="mot15-2D")
        acc = mm.utils.compare_to_groundtruth(gt, ts, "iou", distth=0.5)
        mm.metrics.create().compute(acc, metrics=mm.metrics.motchallenge_metrics, name=seq)

    def ours():
        subprocess.run([ENGINE, "eval", "mot", "--gt", gt_path, "--pred", pred_path, "--json"],
                       check=True, capture_output=True)

    a, b = median_ms(official), median_ms(ours)
    print(f"| {seq} | {a:.1f} | {b:.1f} | {b / a:.3f} |")
