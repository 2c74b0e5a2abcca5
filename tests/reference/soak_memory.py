#!/usr/bin/env python3
"""Peak memory of a long stream: the engine's run statistics and queues must not grow with the
number of frames. Runs the same 7-node pipeline (fan-out, fan-in, and an edge with the
`drop_oldest` policy) over 100,000 and 1,000,000 synthetic frames and compares the peak
resident set size of the two runs (getrusage of the child); the difference must stay under
10 MB.

    cargo build --release -p engine
    python3 tests/reference/soak_memory.py [--engine target/release/engine] [--frames 100000 1000000]
"""

import argparse
import os
import resource
import subprocess
import tempfile
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

PIPELINE = """
[pipeline]
name = "soak"

[nodes.src]
plugin = "synthetic_source"
frames = {frames}
instances = 3

[nodes.a]
plugin = "identity"
inputs = {{ in = "src.instances" }}

# Fan-out: b and c both read a.
[nodes.b]
plugin = "identity"
inputs = {{ in = "a.out" }}

[nodes.c]
plugin = "identity"
inputs = {{ in = {{ from = "a.out", capacity = 2, policy = "drop_oldest" }} }}

# Fan-in.
[nodes.merge]
plugin = "concat_instances"
inputs = {{ first = "b.out", second = "c.out" }}

[nodes.d]
plugin = "identity"
inputs = {{ in = "merge.instances" }}

[nodes.out]
plugin = "null_sink"
inputs = {{ in = "d.out" }}
"""


def peak_rss_mb(engine: str, frames: int, tmp: str) -> tuple:
    path = os.path.join(tmp, f"soak-{frames}.toml")
    with open(path, "w") as f:
        f.write(PIPELINE.format(frames=frames))
    t = time.perf_counter()
    # A fresh process per run: RUSAGE_CHILDREN of a child that waits on exactly one engine.
    code = (
        "import resource, subprocess, sys;"
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE);"
        "sys.stderr.write(r.stderr.decode()[-2000:]) if r.returncode else None;"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)"
    )
    out = subprocess.run(
        ["python3", "-c", code, engine, "run", "--quiet", path],
        check=True, capture_output=True, text=True,
    )
    kb, rc = out.stdout.split()
    if rc != "0":
        raise SystemExit(f"engine failed on {frames} frames: {out.stderr}")
    return int(kb) / 1024.0, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", default=os.path.join(ROOT, "target", "release", "engine"))
    ap.add_argument("--frames", type=int, nargs=2, default=[100_000, 1_000_000])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [(n, *peak_rss_mb(args.engine, n, tmp)) for n in args.frames]
    print("| frames | peak RSS (MB) | wall time (s) |")
    print("|---:|---:|---:|")
    for n, mb, s in rows:
        print(f"| {n:,} | {mb:.1f} | {s:.1f} |")
    growth = rows[1][1] - rows[0][1]
    print(f"growth from {rows[0][0]:,} to {rows[1][0]:,} frames: {growth:+.1f} MB "
          f"({'within' if growth < 10 else 'OVER'} the 10 MB bound)")


if __name__ == "__main__":
    main()
