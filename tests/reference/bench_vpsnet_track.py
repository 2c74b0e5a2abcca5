#!/usr/bin/env python3
"""`vpsnet_track_head` against VPSNet's official track head and association (mcahny/vps @
138503ed), same weights, features and detections, on the CPU, one run.

    pip install torch torchvision numpy
    CARGO_BUILD_JOBS=1 cargo build --release -p plugin-tracking --example bench_vpsnet_track
    python3 tests/reference/bench_vpsnet_track.py /path/to/vps [--threads 2,1] [--frames 12] [--warmup 2]

(the repository, or a bare mirror of it: only `git show COMMIT:path` is used, as by
make_vpsnet_track_fixtures.py). Our side runs through `cargo run --release` (the build above
makes it start at once); `--exe PATH` runs a built binary instead.

Sizes: configs/cityscapes/fusetrack.py's: `TrackHead(num_fcs=2, in_channels=256,
roi_feat_size=7, fc_out_channels=1024, match_coeff=[1, 2, 10])` and `SingleRoIExtractor(
RoIAlign(out_size=7, sample_num=2), featmap_strides=[4, 8, 16, 32])`, on P2..P5 of a
1024x2048 Cityscapes frame (256 channels) with about 20 detections a frame.

Official side, from make_vpsnet_track_fixtures.py (`load_official`: the official TrackHead,
SingleRoIExtractor, bbox_overlaps, bbox2roi / roi2bbox and `simple_test_bboxes`, executed
unmodified with stand-ins for what they import). Timed per frame: the call of the official
`simple_test_bboxes`, i.e. the RoI features of the frame's detections (`det_roi_feats`), the
track head (`fcs` on the detections' RoI features and on the memory's, `prev_roi_feats`,
and the product), `log_softmax`, `bbox_overlaps`, `compute_comp_scores`, `max` and the
Python loops that assign the ids and update the memory. Not timed, because they are not the
track head's work: the box head's pooling of the proposals (the first extractor call of
`simple_test_bboxes`, skipped by the wrapper `Extractor` below), the box head and
`mask_roi_panoptic`, whose stand-ins return the frame's detections at no cost (as in the
fixture script).

RoIAlign: the official `mmdet.ops.RoIAlign` is a CUDA/C++ extension (it does not build here).
The fixture script replaces it by a line-by-line Python port of the CUDA kernel, a loop per
RoI, bin and sample: right for fidelity, but an unfair peer for timing (about 1000 times
slower than a compiled kernel). Here it is `torchvision.ops.roi_align(aligned=False,
sampling_ratio=sample_num)` on the boxes with 1 added to x2 and y2, torch's compiled CPU
kernel, which computes the same thing: torchvision's `aligned=False` RoI runs from `x1 * s`
to `x2 * s`, mmdet 1.x's from `x1 * s` to `(x2 + 1) * s`; the bins, sample positions,
bilinear interpolation (zero outside [-1, H] x [-1, W], clamped at the border), and the mean
over a bin's samples are the same code in both kernels. The one difference, the RoI's size
clamped at 1 by torchvision but at 0 by mmdet, only matters for a box less than one stride
wide or high at its level; the script checks that no box of the scene is, and checks the
torchvision path against the fixture script's kernel port on the first frame's boxes before
timing (they agree to float rounding). The official SingleRoIExtractor (level mapping, one
RoIAlign call per level, scatter into the output) runs as it is around it.

Inputs, generated identically on both sides (the Rust example's doc gives the formulas):
- features: a static world plus per-frame noise, from the counter-based generator of
  `kernels::weights::generated_tensor` (`fx.generate` here), bit for bit;
- detections (`scene`): 26 moving objects of typical Cityscapes classes and sizes, 10% of
  them missed per frame, in whole pixels;
- weights: the fixture script's recipe at the official width (torch.manual_seed, nn.Linear's
  default initialisation, biases in [-0.1, 0.1], `fcs.1.weight` scaled, `fcs.1.bias`
  centred on 64 random boxes of the first frame so that embeddings of different objects are
  not all positively correlated), saved with torch.save as `{"state_dict":
  {"track_head.fcs.*"}}` and passed to the example.

Both sides run FRAMES frames of one video and drop the first WARMUP (the first frame only
fills the memory); the table gives the median of the others. The official memory grows
with every new object and its `fcs` run on all of it every frame, ours keep each object's
embedding (plugins/tracking/src/vpsnet.rs says why that changes no result), so the ratio
depends on the memory's size, printed with it; the column "torch fcs on N rows" (not
official, timed outside the official call) runs TrackHead's fcs on the detections alone, as
ours does, to tell torch's GEMM speed apart from that. The ids of both sides are compared
frame by frame (they agree unless a decision falls within float rounding).

Threads: torch.set_num_threads(T) and RAYON_NUM_THREADS=T for each T of --threads (torch's
intra-op pool is OpenMP: on a loaded machine, every parallel region waits for all T threads
to be scheduled, which can cost milliseconds per op).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_vpsnet_track_fixtures as fx  # noqa: E402

from machine import cpu_name  # noqa: E402

ROOT = fx.ROOT
EXE = os.path.join(ROOT, "target", "release", "examples", "bench_vpsnet_track")
CARGO = ["cargo", "run", "--release", "-q", "-p", "plugin-tracking", "--example", "bench_vpsnet_track", "--"]

IMAGE = (1024, 2048)  # a Cityscapes frame, the network input at test scale
STRIDES = fx.STRIDES
CHANNELS = fx.CHANNELS
FC_OUT = 1024
SAMPLE_NUM = 2
BLOCK = 4
NOISE = 0.25
OBJECTS = 26
PRESENT = 20
MISS_RATE = 0.1
SEED = 20240611
EMB_GAIN = 4.0


# ---------------------------------------------------------------------------------------
# Inputs (the same as bench_vpsnet_track.rs)


def scene(frames):
    """Per frame: (boxes, scores, labels, object index), as the example's `scene`: f64
    arithmetic in the same order, boxes floored and clamped to the image."""
    u = fx.generate("vpsnet_bench.objects", [OBJECTS, 8], 0.5, 0.5).astype(np.float64)
    visible = fx.generate("vpsnet_bench.visible", [frames, OBJECTS], 0.5, 0.5).astype(np.float64)
    jitter = fx.generate("vpsnet_bench.jitter", [frames, OBJECTS, 4], 2.0, 0.0).astype(np.float64)
    ih, iw = float(IMAGE[0]), float(IMAGE[1])
    out = []
    for t in range(frames):
        boxes, scores, labels, objs = [], [], [], []
        for k in range(OBJECTS):
            o = [float(v) for v in u[k]]
            if o[0] < 0.4:
                h = 40.0 + 200.0 * o[1]
                label, w = 0, h * 0.4
            elif o[0] < 0.8:
                w = 50.0 + 350.0 * o[1]
                label, h = 2, w * 0.6
            elif o[0] < 0.9:
                h = 40.0 + 160.0 * o[1]
                label, w = 7, h * 0.8
            elif o[0] < 0.95:
                h = 50.0 + 200.0 * o[1]
                label, w = 1, h * 0.5
            else:
                w = 100.0 + 400.0 * o[1]
                label, h = 3, w * 0.8
            x0 = o[2] * (iw - w)
            y0 = 300.0 + o[3] * (ih - 300.0 - h)
            vx = (o[4] - 0.5) * 20.0
            vy = (o[5] - 0.5) * 4.0
            start = 0 if k < PRESENT else 1 + int(np.floor(o[6] * 10.0))
            if t < start or float(visible[t, k]) < MISS_RATE:
                continue
            j = [float(v) for v in jitter[t, k]]
            tt = float(t)
            x1 = x0 + tt * vx + j[0]
            y1 = y0 + tt * vy + j[1]
            x2 = x1 + w + j[2]
            y2 = y1 + h + j[3]
            clamp = lambda v, hi: min(max(np.floor(v), 0.0), hi - 1.0)  # noqa: E731
            b = [clamp(x1, iw), clamp(y1, ih), clamp(x2, iw), clamp(y2, ih)]
            if b[2] - b[0] < 8.0 or b[3] - b[1] < 8.0:
                continue
            boxes.append(b)
            scores.append(float(np.float32(0.5 + 0.49 * o[7])))
            labels.append(label)
            objs.append(k)
        out.append((boxes, scores, labels, objs))
    return out


def world():
    out = []
    for l, s in zip(range(2, 6), STRIDES):
        h, w = IMAGE[0] // s, IMAGE[1] // s
        coarse = fx.generate(f"vpsnet_bench.world.p{l}", (CHANNELS, -(-h // BLOCK), -(-w // BLOCK)), 1.0, 0.0)
        out.append(coarse.repeat(BLOCK, axis=1).repeat(BLOCK, axis=2)[:, :h, :w])
    return out


def features(world_, t):
    """P2..P5 `[1, C, H, W]` of frame t: the world plus the frame's noise, summed in f32."""
    out = []
    for l, w in zip(range(2, 6), world_):
        noise = fx.generate(f"vpsnet_bench.f{t}.p{l}", w.shape, NOISE, 0.0)
        out.append(torch.from_numpy((w + noise)[None]))
    return out


# ---------------------------------------------------------------------------------------
# The official code around torchvision's RoIAlign


class TorchvisionRoIAlign(torch.nn.Module):
    """`mmdet.ops.RoIAlign(out_size, spatial_scale, sample_num)` (mmdet 1.x, aligned=False)
    as torchvision's compiled CPU kernel: the RoI ends at (x2 + 1) * s (see the docstring)."""

    def __init__(self, out_size, spatial_scale, sample_num=0, use_torchvision=False):
        super().__init__()
        self.out_size = (out_size, out_size) if isinstance(out_size, int) else tuple(out_size)
        self.spatial_scale = float(spatial_scale)
        self.sample_num = int(sample_num)

    def forward(self, features, rois):
        rois = rois.clone()
        rois[:, 3:5] += 1.0
        return torchvision.ops.roi_align(features, rois, self.out_size, self.spatial_scale,
                                         self.sample_num, aligned=False)


class Extractor:
    """The official SingleRoIExtractor as `simple_test_bboxes` calls it. The first call of a
    frame (the proposals, for the box head) is skipped; the second (the detections) runs and
    is timed."""

    def __init__(self, inner):
        self.inner = inner
        self.featmap_strides = inner.featmap_strides
        self.num_inputs = inner.num_inputs
        self.skip_next = False
        self.ms = 0.0
        self.last = None

    def __call__(self, feats, rois):
        if self.skip_next:
            self.skip_next = False
            return None
        t = time.perf_counter()
        out = self.inner(feats, rois)
        self.ms = (time.perf_counter() - t) * 1e3
        self.last = out
        return out


class Head:
    """The official TrackHead, its call timed (fcs on the detections and on the memory, and
    the product)."""

    def __init__(self, inner):
        self.inner = inner
        self.compute_comp_scores = inner.compute_comp_scores
        self.ms = 0.0

    def __call__(self, *args):
        t = time.perf_counter()
        out = self.inner(*args)
        self.ms = (time.perf_counter() - t) * 1e3
        return out


class Detector:
    """What `simple_test_bboxes` reads from `self`; its memory (`prev_*`) lives here."""

    def __init__(self, official, extractor, head):
        self._simple_test_bboxes = official["simple_test_bboxes"]
        self.bbox_roi_extractor = Extractor(extractor)
        self.track_head = Head(head)
        self.next = None

    def bbox_head(self, roi_feats):
        return torch.zeros(1, 9), torch.zeros(1, 36)

    def mask_roi_panoptic(self, rois, bbox_pred, cls_prob, im_info):
        return self.next

    def frame(self, feats, iid, boxes, labels, scores):
        """One frame: (ids, total ms, RoI ms, track head ms)."""
        n = len(boxes)
        boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(n, 4)
        self.next = (
            torch.tensor(scores, dtype=torch.float32),
            torch.cat([torch.zeros(n, 1), boxes_t], dim=1),
            torch.tensor(labels, dtype=torch.int64) + 1,
        )
        img_meta = [{"filename": "cityscapes_vps_bench.png", "iid": iid,
                     "img_shape": (IMAGE[0], IMAGE[1], 3), "scale_factor": 1.0}]
        proposals = [torch.tensor([[0.0, 0.0, 31.0, 31.0]])]
        self.track_head.ms = 0.0
        self.bbox_roi_extractor.skip_next = True
        t = time.perf_counter()
        out = self._simple_test_bboxes(self, feats, img_meta, proposals, None, None)
        total = (time.perf_counter() - t) * 1e3
        return [int(v) for v in out[2]], total, self.bbox_roi_extractor.ms, self.track_head.ms

    def fcs_of_detections_ms(self):
        """Not official, not in the frame's time: TrackHead's fcs on this frame's detections
        alone (what ours computes), to separate torch's GEMM speed from the memory's."""
        x = self.bbox_roi_extractor.last
        t = time.perf_counter()
        x = x.view(x.size(0), -1)
        fcs = self.track_head.inner.fcs
        for idx, fc in enumerate(fcs):
            x = fc(x)
            if idx < len(fcs) - 1:
                x = F.relu(x)
        return (time.perf_counter() - t) * 1e3


def build_head(official, extractor, first_feats):
    """The fixture script's weights at the official width."""
    torch.manual_seed(SEED)
    head = official["TrackHead"](
        num_fcs=2, in_channels=CHANNELS, roi_feat_size=7, fc_out_channels=FC_OUT,
        match_coeff=fx.MATCH_COEFF,
        loss_match=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=0.5),
    ).eval()
    with torch.no_grad():
        for fc in head.fcs:
            fc.bias.uniform_(-0.1, 0.1)
        head.fcs[1].weight *= EMB_GAIN
        g = torch.Generator().manual_seed(SEED + 1)
        xy = torch.rand(64, 2, generator=g) * torch.tensor([IMAGE[1] - 400.0, IMAGE[0] - 400.0])
        wh = 16.0 + torch.rand(64, 2, generator=g) * 384.0
        rois = torch.cat([torch.zeros(64, 1), xy, xy + wh], dim=1)
        h = F.relu(head.fcs[0](extractor(first_feats, rois).reshape(64, -1)))
        head.fcs[1].bias -= head.fcs[1].weight @ h.mean(dim=0)
    return head


def rois_of(boxes):
    return torch.cat([torch.zeros(len(boxes), 1), torch.tensor(boxes, dtype=torch.float32)], dim=1)


def check_box_sizes(extractor, frames):
    """Every box is at least one stride wide and high at its level, where torchvision's
    RoI size clamp (1) and mmdet's (0) cannot differ."""
    for boxes, _, _, _ in frames:
        levels = extractor.map_roi_levels(rois_of(boxes), len(STRIDES))
        for b, l in zip(boxes, levels.tolist()):
            s = STRIDES[l]
            assert (b[2] - b[0] + 1) >= s and (b[3] - b[1] + 1) >= s, (b, l)


def check_roi_align(official_extractor_port, extractor, feats, boxes):
    """torchvision's path against the fixture script's port of the CUDA kernel."""
    rois = rois_of(boxes)
    with torch.no_grad():
        a = extractor(feats, rois)
        ref = official_extractor_port(feats, rois)
    err = float((a - ref).abs().max())
    assert err < 1e-5, err
    return err


def track_consistency(ids, frames):
    """Share of detections (after the first frame) that keep the id their scene object had
    when last seen: how much of the association is continuation, not new objects."""
    last, kept, total = {}, 0, 0
    for t, (frame_ids, (_, _, _, objs)) in enumerate(zip(ids, frames)):
        for i, k in zip(frame_ids, objs):
            if t > 0 and k in last:
                total += 1
                kept += int(last[k] == i)
            last[k] = i
    return kept / max(total, 1)


def run_ours(args, wpath, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    env.setdefault("CARGO_BUILD_JOBS", "1")
    cmd = ([args.exe] if args.exe else CARGO) + [wpath, str(args.frames), str(args.warmup)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench_vpsnet_track failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("repo", nargs="?", default=os.environ.get("VPS_REPO", "/tmp/vps"))
    ap.add_argument("--threads", default="2,1", help="thread counts, comma-separated")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--exe", default=None, help="a built bench_vpsnet_track (default: cargo run)")
    args = ap.parse_args()
    threads = [int(v) for v in args.threads.split(",")]

    fx.RoIAlign = TorchvisionRoIAlign  # what load_official registers as mmdet.ops.RoIAlign
    official = fx.load_official(args.repo)

    def make_extractor():
        return official["SingleRoIExtractor"](
            roi_layer=dict(type="RoIAlign", out_size=7, sample_num=SAMPLE_NUM),
            out_channels=CHANNELS, featmap_strides=STRIDES)

    extractor = make_extractor()
    frames = scene(args.frames)
    world_ = world()
    t = time.perf_counter()
    feats = [features(world_, i) for i in range(args.frames)]
    print(f"generated {args.frames} frames of features in {time.perf_counter() - t:.1f} s", file=sys.stderr)

    # torchvision's RoIAlign against the port of mmdet's CUDA kernel, on the first frame.
    port_layers = torch.nn.ModuleList(
        [_PortRoIAlign(7, 1.0 / s, SAMPLE_NUM) for s in STRIDES])
    port_extractor = make_extractor()
    port_extractor.roi_layers = port_layers
    check_box_sizes(extractor, frames)
    err = check_roi_align(port_extractor, extractor, feats[0], frames[0][0])
    print(f"torchvision RoIAlign (+1) vs the mmdet kernel port: max |diff| {err:.2e} "
          f"on {len(frames[0][0])} RoIs", file=sys.stderr)

    head = build_head(official, extractor, feats[0])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wpath = os.path.join(tmp, "vpsnet_track_head_1024.pth")
        state = {f"track_head.{k}": v.detach().clone().contiguous() for k, v in head.state_dict().items()}
        torch.save({"state_dict": state}, wpath)
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            det = Detector(official, extractor, head)
            ids, totals, rois_ms, head_ms, fcs_n_ms, memory = [], [], [], [], [], []
            with torch.no_grad():
                for i, (boxes, scores, labels, _) in enumerate(frames):
                    frame_ids, total, r, h = det.frame(feats[i], 10000 + i + 1, boxes, labels, scores)
                    ids.append(frame_ids)
                    memory.append(int(det.prev_roi_feats.size(0)))
                    fcs_n = det.fcs_of_detections_ms()
                    if i >= args.warmup:
                        totals.append(total)
                        rois_ms.append(r)
                        head_ms.append(h)
                        fcs_n_ms.append(fcs_n)
            ours = run_ours(args, wpath, n_threads)
            same = sum(a == b for a, b in zip(ids, ours["ids"]))
            rows.append(dict(
                threads=n_threads, ours_threads=ours["threads"],
                official=float(np.median(totals)), official_min=min(totals),
                official_roi=float(np.median(rois_ms)), official_head=float(np.median(head_ms)),
                torch_fcs_n=float(np.median(fcs_n_ms)),
                ours=ours["median_ms"], ours_min=ours["min_ms"], ours_roi=ours["roi_align_ms"],
                ours_fcs=ours["fcs_ms"], memory=memory, ours_memory=ours["memory"],
                same=same, consistency=track_consistency(ids, frames),
                official_frames=totals, ours_frames=ours["frame_ms"],
            ))

    dets = [len(f[0]) for f in frames]
    timed = args.frames - args.warmup
    print(f"VPSNet track head + association per frame, 1024x2048 Cityscapes frame (P2..P5, 256 ch), "
          f"{min(dets)}-{max(dets)} detections a frame (mean {np.mean(dets):.1f}), median of {timed} frames "
          f"after {args.warmup} (torch {torch.__version__}, torchvision {torchvision.__version__}, mcahny/vps "
          f"{fx.COMMIT[:8]})")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs")
    print()
    print("| threads | official (ms) | ours (ms) | ours / official | RoI features: official / ours (ms) | "
          "fcs: official (N + M rows) / ours (N rows) (ms) | torch fcs on N rows (ms) | memory M at the end | "
          "same ids |")
    print("|---:|---:|---:|---:|---|---|---:|---:|---|")
    for r in rows:
        print(f"| {r['threads']} | {r['official']:.1f} | {r['ours']:.1f} | {r['ours'] / r['official']:.2f} | "
              f"{r['official_roi']:.1f} / {r['ours_roi']:.1f} | {r['official_head']:.1f} / {r['ours_fcs']:.1f} | {r['torch_fcs_n']:.1f} | "
              f"{r['memory'][-1]} (ours {r['ours_memory'][-1]}) | {r['same']}/{args.frames} frames |")
    print()
    for r in rows:
        print(f"{r['threads']} threads (ours: rayon pool of {r['ours_threads']}): per timed frame, official "
              f"{', '.join(f'{v:.1f}' for v in r['official_frames'])} ms; ours "
              f"{', '.join(f'{v:.1f}' for v in r['ours_frames'])} ms; min official {r['official_min']:.1f}, "
              f"ours {r['ours_min']:.1f}; memory per frame {r['memory']}; detections keeping their "
              f"object's id {100 * r['consistency']:.0f}%")
    print("official: the simple_test_bboxes call (RoI features of the detections with torchvision's RoIAlign, "
          "track head on detections and memory, association); ours: Node::process. RoI features and fcs of ours "
          "are timed in separate calls on the same frames; the official ones inside the timed call. torch fcs on N rows: "
          "TrackHead's fcs on the detections alone, outside the official call (not official: what ours computes).")


class _PortRoIAlign(torch.nn.Module):
    """The fixture script's port of mmdet 1.x's CUDA RoIAlign (for the check only)."""

    def __init__(self, out_size, spatial_scale, sample_num):
        super().__init__()
        self.out_size = (out_size, out_size)
        self.spatial_scale = spatial_scale
        self.sample_num = sample_num

    def forward(self, features, rois):
        return fx.roi_align_port(features, rois, self.out_size, self.spatial_scale, self.sample_num)


if __name__ == "__main__":
    main()
