"""Video decoding speed on one core: ours (OpenH264 + RGB, the `bench_video` example) against
OpenCV's `VideoCapture` (FFmpeg's H.264 decoder, BGR out) and the ffmpeg CLI (decode only, to
yuv420p, no colour conversion), on the same clip in the same run.

    python3 tests/reference/bench_video.py [VIDEO]

Needs opencv-python (pip) and, for the CLI column, ffmpeg on PATH (skipped when absent).
Medians of three runs; ratios are ours / theirs (below 1: we are faster).
"""

import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VIDEO = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "assets", "vtest_baseline.mp4")
# One decoding thread everywhere.
os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "threads;1"


def median(v):
    return sorted(v)[len(v) // 2]


def opencv_ms():
    import cv2

    cv2.setNumThreads(1)
    times = []
    for _ in range(3):
        cap = cv2.VideoCapture(VIDEO)
        n, t = 0, time.perf_counter()
        while True:
            ok, _ = cap.read()
            if not ok:
                break
            n += 1
        times.append((time.perf_counter() - t) * 1e3 / n)
    return median(times), n, cv2.__version__


def ffmpeg_ms(frames):
    if shutil.which("ffmpeg") is None:
        return None
    times = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run(["ffmpeg", "-v", "error", "-threads", "1", "-i", VIDEO, "-f", "null", "-"], check=True)
        times.append((time.perf_counter() - t) * 1e3 / frames)
    return median(times)


def ours_ms():
    out = subprocess.run(
        ["cargo", "run", "-q", "--release", "-p", "plugin-io", "--example", "bench_video", "--", VIDEO, "50"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    print(out.strip())
    return float(re.search(r"decode \(OpenH264 \+ RGB\): ([0-9.]+) ms/frame", out).group(1))


ours = ours_ms()
cv, frames, version = opencv_ms()
ff = ffmpeg_ms(frames)
print(f"{VIDEO}: {frames} frames")
print(f"| decoder (1 thread) | ms/frame | frames/s | ours / it |")
print(f"|---|---|---|---|")
print(f"| ours: OpenH264 + RGB | {ours:.2f} | {1e3 / ours:.0f} | 1.00 |")
print(f"| OpenCV {version} VideoCapture (FFmpeg, BGR) | {cv:.2f} | {1e3 / cv:.0f} | {ours / cv:.2f} |")
if ff is not None:
    print(f"| ffmpeg CLI, decode only (yuv420p, process start included) | {ff:.2f} | {1e3 / ff:.0f} | {ours / ff:.2f} |")
