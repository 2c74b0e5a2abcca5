#!/usr/bin/env python3
"""Writes plugins/tracking/tests/fixtures/bytetrack.json: seeded synthetic detection streams
and what the official ByteTrack tracker (ifzhang/ByteTrack, `yolox/tracker/`) returns for
them, frame by frame. plugins/tracking/tests/bytetrack_reference.rs replays them through the
Rust port (plugins/tracking/src/bytetrack.rs).

    # the official tracker files, flat in one folder (commit d1bf0191adff59bc8fcfeaa0b33d3d1642552a99)
    mkdir -p /tmp/bytetrack_ref && cd <a ByteTrack clone> && for f in basetrack byte_tracker \
        kalman_filter matching; do git show HEAD:yolox/tracker/$f.py > /tmp/bytetrack_ref/$f.py; done
    python3 -m venv /tmp/venv-bt
    /tmp/venv-bt/bin/pip install "numpy==1.23.5" "scipy==1.10.1" lap
    /tmp/venv-bt/bin/python tests/reference/make_bytetrack_fixtures.py [/tmp/bytetrack_ref]

Written with numpy 1.23.5, scipy 1.10.1, lap 0.5.13 (versions stored in the fixture). The
official code uses `np.float`, which numpy 1.24 removed, so it needs numpy < 1.24: that is
also the numpy whose scalar/array comparison rules the thresholds follow (see below). Run by
developers, not by CI (CI reads the committed fixture).

How the official modules are loaded: the four files are imported unmodified, as the package
`yolox.tracker` (they import each other as `yolox.tracker.matching` etc.), with three
modules replaced in `sys.modules` because they are not installable here or not used:
- `cython_bbox.bbox_overlaps` (used by `matching.ious`): replaced by `bbox_overlaps` below,
  a numpy statement of the same Cython loop (cython_bbox's `cython_bbox.pyx`, from
  py-faster-rcnn), with the same float64 operations in the same order. Note its "+1 pixel"
  convention: widths are `x2 - x1 + 1`, the intersection is `min(x2) - max(x1) + 1`, so
  touching boxes overlap and IoU(b, b) == 1 still holds but IoU is not scale invariant.
  Checked: with the real cython_bbox (0.1.5, built from source) in its place, this script
  writes a byte-identical fixture.
- `torch` (imported by byte_tracker.py; used only on the 6+-column input path, which this
  script does not take) and `cv2` (imported by matching.py, unused): empty stand-ins.

How the tracker is driven: exactly as the official demo (tools/demo_track.py), a fresh
`BYTETracker(args, frame_rate)` per sequence and `update(output_results, [h, w], [h, w])`
per frame, where `output_results` is an [N, 5] float32 array (x1, y1, x2, y2, score): the
5-column path, with scale = 1. float32 because detectors emit float32 (the demo passes a
float32 tensor): widths are then computed in float32 (`tlbr_to_tlwh`) before STrack widens
them to float64, and the thresholds compare float32 scores. What is recorded per frame is
the raw `online_targets` (track_id, tlwh, score) in their order; the demo's own filter
after update (`tlwh[2] * tlwh[3] > min_box_area` and the vertical-box test) is not applied.
For state checks the ids of `tracked_stracks` (confirmed or not) and `lost_stracks` after the
update are recorded too.

`BaseTrack._count` (the id counter) is a class attribute shared by every tracker in the
process; it is reset to 0 before each sequence so that ids start at 1 as in a fresh process.

Threshold semantics under numpy 1.23 (what the Rust port reproduces): `scores >
track_thresh`, `scores > 0.1` and `scores < track_thresh` compare a float32 array with a
Python float, which numpy 1.x does in float32; `track.score < det_thresh` compares a float32
scalar with a Python float, which numpy 1.x does in float64. No generated score equals one of
these thresholds in float32 (asserted), so neither rule is put to the test by a tie.

Exact ties in the assignment costs (where lap's lapjv and another optimal solver could pick
different pairs) do not occur in these random streams; the fixture is not doctored to avoid
them. Checked: on every `lap.lapjv` call these streams make (318, up to 189x189 extended),
scipy's `linear_sum_assignment` on lap's extended matrix picks the same pairs. Floats are written with Python's repr (shortest round-trip), inputs as the exact
float64 value of each float32.

Sequences (each records its args, frame rate, image size and frames):
- "main": 80 frames, 1280x720, default args (track_thresh 0.5, track_buffer 30,
  match_thresh 0.8, mot20 False), frame_rate 30. Eleven objects with constant velocity and
  box noise: two crossing head-on, one occluded for 10 frames, one leaving the image (boxes
  clipped to the image as detectors do), one entering, and two "twins" (nearly the same box)
  one of which disappears for 10 frames (its lost track then duplicates the other's).
  Scores: mostly high, some in the low band (0.1, 0.5), some in [0.5, 0.6) (matched but
  never starting a track), some below 0.1; plus false positives. Detections are shuffled.
- "crowd100": 30 frames, 1920x1080, 100 objects, default args (for the speed check).
- "mot20_fr10": 60 frames, mot20=True, frame_rate 10, track_buffer 20 (so max_time_lost is
  int(10 / 30 * 20) = 6), track_thresh 0.6, match_thresh 0.9. Objects vanish for good (their
  lost tracks are removed), and one object comes back exactly one frame after its track was
  removed: the official tracker removes a timed-out track from `lost_stracks` only on the
  frame after it marks it removed, so the track is matched again and keeps its id; when that
  track is lost again it is dropped at once (its id is in `removed_stracks`), and the object
  returning later gets a new id.
"""

import importlib.metadata
import json
import os
import sys
import types

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "plugins", "tracking", "tests", "fixtures", "bytetrack.json")
REF = sys.argv[1] if len(sys.argv) > 1 else "/tmp/bytetrack_ref"
BYTETRACK_COMMIT = "d1bf0191adff59bc8fcfeaa0b33d3d1642552a99"


def bbox_overlaps(boxes, query_boxes):
    """cython_bbox.bbox_overlaps in numpy: [N, K] IoU of boxes[n] with query_boxes[k]
    (x1, y1, x2, y2, float64), with the +1 pixel convention, computed with the same float64
    operations in the same order as the Cython loop; 0 where the boxes do not overlap."""
    boxes = np.asarray(boxes, dtype=np.float64)
    query_boxes = np.asarray(query_boxes, dtype=np.float64)
    b = boxes[:, None, :]
    q = query_boxes[None, :, :]
    box_area = (q[..., 2] - q[..., 0] + 1) * (q[..., 3] - q[..., 1] + 1)
    iw = np.minimum(b[..., 2], q[..., 2]) - np.maximum(b[..., 0], q[..., 0]) + 1
    ih = np.minimum(b[..., 3], q[..., 3]) - np.maximum(b[..., 1], q[..., 1]) + 1
    ua = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1) + box_area - iw * ih
    overlaps = np.zeros((boxes.shape[0], query_boxes.shape[0]), dtype=np.float64)
    ok = (iw > 0) & (ih > 0)
    overlaps[ok] = (iw * ih)[ok] / ua[ok]
    return overlaps


def load_official(ref_dir):
    """Imports the official byte_tracker.py and basetrack.py from ref_dir as yolox.tracker.*"""
    for name in ("basetrack", "byte_tracker", "kalman_filter", "matching"):
        path = os.path.join(ref_dir, name + ".py")
        if not os.path.isfile(path):
            sys.exit(f"missing {path}: extract yolox/tracker/*.py of ByteTrack there (see the docstring)")
    for name in ("torch", "torch.nn", "torch.nn.functional", "cv2"):
        sys.modules[name] = types.ModuleType(name)
    cython_bbox = types.ModuleType("cython_bbox")
    cython_bbox.bbox_overlaps = bbox_overlaps
    sys.modules["cython_bbox"] = cython_bbox
    yolox = types.ModuleType("yolox")
    yolox.__path__ = []
    tracker = types.ModuleType("yolox.tracker")
    tracker.__path__ = [ref_dir]
    yolox.tracker = tracker
    sys.modules["yolox"] = yolox
    sys.modules["yolox.tracker"] = tracker
    import yolox.tracker.byte_tracker as byte_tracker
    import yolox.tracker.basetrack as basetrack

    return byte_tracker, basetrack


# ---------------------------------------------------------------------------------------
# Synthetic detections
# ---------------------------------------------------------------------------------------

TRACK_THRESHOLDS = (0.5, 0.6)  # track_thresh of the sequences; det_thresh is +0.1


def draw_score(rng, p_low=0.15, p_mid=0.06, p_tiny=0.05):
    """A true object's score: mostly high, sometimes in the low band, in [0.5, 0.6) or < 0.1."""
    u = rng.random()
    if u < p_tiny:
        return rng.uniform(0.0, 0.1)
    if u < p_tiny + p_low:
        return rng.uniform(0.1, 0.5)
    if u < p_tiny + p_low + p_mid:
        return rng.uniform(0.5, 0.6)
    return rng.uniform(0.6, 0.98)


class Obj:
    """An object moving with constant velocity; `visible(f)` says whether it is detected."""

    def __init__(self, cx, cy, w, h, vx, vy, first=1, last=10**9, hidden=(), reliable=False):
        self.cx, self.cy, self.w, self.h, self.vx, self.vy = cx, cy, w, h, vx, vy
        self.first, self.last, self.hidden = first, last, set(hidden)
        # A reliable object always scores high, so that a scripted scenario happens as planned.
        self.reliable = reliable

    def box(self, f):
        t = f - self.first
        cx, cy = self.cx + self.vx * t, self.cy + self.vy * t
        return np.array([cx - self.w / 2, cy - self.h / 2, cx + self.w / 2, cy + self.h / 2])

    def visible(self, f):
        return self.first <= f <= self.last and f not in self.hidden


def make_frames(rng, objs, n_frames, img_w, img_h, noise=1.5, fp_rate=1.0, miss=0.03):
    frames = []
    for f in range(1, n_frames + 1):
        dets = []
        for o in objs:
            if not o.visible(f) or rng.random() < miss:
                continue
            b = o.box(f) + rng.normal(0.0, noise, 4)
            # Detectors clip to the image; an object (almost) outside it is not detected.
            b = np.clip(b, [0, 0, 0, 0], [img_w - 1, img_h - 1, img_w - 1, img_h - 1])
            if b[2] - b[0] < 4 or b[3] - b[1] < 4:
                continue
            dets.append([*b, rng.uniform(0.7, 0.98) if o.reliable else draw_score(rng)])
        for _ in range(rng.poisson(fp_rate)):
            w, h = rng.uniform(15, 80), rng.uniform(30, 150)
            x, y = rng.uniform(0, img_w - w), rng.uniform(0, img_h - h)
            dets.append([x, y, x + w, y + h, rng.uniform(0.02, 0.75)])
        dets = np.asarray(dets, dtype=np.float32).reshape(-1, 5)
        dets = dets[rng.permutation(len(dets))]
        frames.append(dets)
    return frames


def main_sequence(rng):
    objs = [
        Obj(120, 250, 40, 100, 4.0, 0.5),
        Obj(1100, 330, 50, 120, -5.0, 0.3),
        Obj(330, 620, 60, 60, 2.0, -2.0),
        Obj(640, 140, 30, 80, 0.0, 3.0),
        # Two objects crossing head-on around frame 50.
        Obj(200, 420, 45, 110, 8.0, 0.0),
        Obj(1000, 430, 45, 110, -8.0, 0.0),
        # Occluded for 10 frames (within track_buffer: found again).
        Obj(520, 300, 40, 90, 3.0, 1.0, hidden=range(30, 40)),
        # Leaves the image on the right around frame 60.
        Obj(900, 560, 50, 100, 6.0, 0.0),
        # Enters from the left at frame 40.
        Obj(-15, 160, 40, 90, 5.0, 0.0, first=40),
        # Twins: nearly the same box; the second is not detected for 10 frames, while its
        # lost track's prediction overlaps the first one's track.
        Obj(800, 200, 50, 120, -1.0, 1.5),
        Obj(803, 202, 50, 120, -1.0, 1.5, hidden=range(55, 65)),
    ]
    return make_frames(rng, objs, 80, 1280, 720)


def crowd_sequence(rng, n=100, n_frames=30, img_w=1920, img_h=1080):
    objs = []
    for _ in range(n):
        w, h = rng.uniform(20, 45), rng.uniform(50, 110)
        objs.append(Obj(rng.uniform(40, img_w - 40), rng.uniform(60, img_h - 60), w, h,
                        rng.normal(0, 3), rng.normal(0, 1.5)))
    return make_frames(rng, objs, n_frames, img_w, img_h, noise=1.0, fp_rate=5.0)


def mot20_sequence(rng):
    # max_time_lost = 6. A track last updated at frame E is marked removed at frame E + 7 if
    # still unmatched, and is still in lost_stracks (so matchable) at frame E + 8.
    objs = [
        Obj(200, 300, 40, 100, 3.0, 0.0),
        Obj(700, 250, 60, 140, -2.0, 1.0, last=25, reliable=True),  # gone for good at 26
        Obj(400, 500, 50, 110, 1.0, -1.0, hidden=range(15, 19), reliable=True),  # found again
        # Last seen at 12, marked removed at 19, back at 20: refound with its id; gone again
        # at 31..33 (its track is dropped at once), back at 34 with a new id.
        Obj(1000, 400, 45, 120, -4.0, 0.0, hidden=[*range(13, 20), 31, 32, 33], reliable=True),
        # Gone for 9 frames: removed, then a new track.
        Obj(300, 150, 35, 90, 2.0, 2.0, hidden=range(30, 39), reliable=True),
        Obj(600, 600, 55, 100, 0.0, -2.0, first=20),
        Obj(1100, 650, 40, 90, -3.0, -1.0),
    ]
    return make_frames(rng, objs, 60, 1280, 720, miss=0.0, fp_rate=0.7)


def check_scores(frames, track_thresh):
    """No score equals a threshold in float32, where the comparison rules would matter."""
    bad = {np.float32(0.1), np.float32(track_thresh), np.float32(track_thresh + 0.1)}
    for dets in frames:
        for s in dets[:, 4]:
            assert s not in bad, s


def exact(x):
    return float(x)


def run(byte_tracker, basetrack, name, frames, args, frame_rate, img_w, img_h):
    basetrack.BaseTrack._count = 0  # class-level id counter: restart ids for each sequence
    check_scores(frames, args.track_thresh)
    tracker = byte_tracker.BYTETracker(args, frame_rate=frame_rate)
    out_frames = []
    for dets in frames:
        # update divides the boxes in place by the scale (1 here); pass a copy anyway.
        online = tracker.update(dets.copy(), [img_h, img_w], [img_h, img_w])
        out_frames.append({
            "detections": [[exact(v) for v in row] for row in dets],
            "tracks": [
                {"id": int(t.track_id), "tlwh": [exact(v) for v in t.tlwh], "score": exact(t.score)}
                for t in online
            ],
            "tracked_ids": [int(t.track_id) for t in tracker.tracked_stracks],
            "lost_ids": [int(t.track_id) for t in tracker.lost_stracks],
        })
    return {
        "name": name,
        "args": {
            "track_thresh": args.track_thresh,
            "track_buffer": args.track_buffer,
            "match_thresh": args.match_thresh,
            "mot20": args.mot20,
        },
        "frame_rate": frame_rate,
        "img_size": [img_h, img_w],
        "frames": out_frames,
    }


def stats(seq):
    n_det = sum(len(f["detections"]) for f in seq["frames"])
    n_trk = sum(len(f["tracks"]) for f in seq["frames"])
    ids = {t["id"] for f in seq["frames"] for t in f["tracks"]}
    return f"{seq['name']}: {len(seq['frames'])} frames, {n_det} detections, {n_trk} track outputs, {len(ids)} ids"


def main():
    byte_tracker, basetrack = load_official(REF)
    Args = types.SimpleNamespace
    default = dict(track_thresh=0.5, track_buffer=30, match_thresh=0.8, mot20=False)
    rng = np.random.default_rng(20240607)
    seqs = [
        run(byte_tracker, basetrack, "main", main_sequence(rng), Args(**default), 30, 1280, 720),
        run(byte_tracker, basetrack, "crowd100", crowd_sequence(rng), Args(**default), 30, 1920, 1080),
        run(byte_tracker, basetrack, "mot20_fr10", mot20_sequence(rng),
            Args(track_thresh=0.6, track_buffer=20, match_thresh=0.9, mot20=True), 10, 1280, 720),
    ]
    doc = {
        "reference": f"ifzhang/ByteTrack {BYTETRACK_COMMIT} yolox/tracker (BYTETracker.update)",
        "versions": {p: importlib.metadata.version(p) for p in ("numpy", "scipy", "lap")},
        "sequences": seqs,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    for s in seqs:
        print(stats(s))
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
