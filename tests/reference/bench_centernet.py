#!/usr/bin/env python3
"""CenterNet ctdet (resdcn_18, dla_34 or hourglass) through the engine's libraries against the official code
(xingyizhou/CenterNet at 4c50fd3a, run as make_centernet_fixtures.py runs it), same weights
and photo, one run.

    cargo build --release -p plugin-centernet -p plugin-backbones --example bench_centernet --lib
    CENTERNET_REPO=/tmp/centernet target/venv-torch/bin/python tests/reference/bench_centernet.py \
        [--arch resdcn_18|dla_34|hourglass] [--reps 10] [--threads 2] [--photo chelsea.png] \
        [--official-only] [--json PATH] [--save-weights PATH] [--exe PATH]

About 2 minutes with --reps 10 on two threads (the official forward alone is ~1.8 s a run on
a 2-core machine); --exe names another build of our binary.

Setup: make_centernet_fixtures.py's (its docstring: the CenterNet tree at CENTERNET_REPO, the
DCNv2 / download / stub patches it installs when imported, which this script does).

--arch hourglass is Hourglass-104 at its full size (get_large_hourglass_net, 191M parameters)
with make_hourglass_fixtures.py's weight ranges (tuned for its small model; at full size the
scores may saturate, so the results check can find ties ordered differently).

Weights: make_centernet_fixtures.generated_checkpoint's state dict (the fixture's generated
tensors, the official names), saved with torch.save as an official-format checkpoint
{"epoch": 140, "state_dict": ...} in a temporary directory (--save-weights keeps a copy).
The official detector loads that file through its own load_model (create_model +
load_model, as demo.py's detector_factory["ctdet"](opt) does; the tensors are asserted
equal afterwards), and our binary loads the same file: the released format loads.

Timed, after one warm-up run, in 3 interleaved rounds (official, then ours):
  - official whole: detector.run(image) as demo.py calls it (pre_process: cv2 warpAffine and
    normalisation; process: model, hm.sigmoid_(), ctdet_decode; post_process; merge_outputs)
    on the photo read once by cv2.imread (demo.py passes the path for a photo, the array for
    video frames; the read is left out on both sides: ours times from the decoded image);
    run()'s own time.time() breakdown (pre, net, dec, post, merge) is reported too;
  - official model forward alone: detector.model(images) on pre_process's tensor;
  - official decode alone: hm.sigmoid_() then ctdet_decode(hm, wh, reg, K=100) on the
    model's outputs, as process() does (the clone of hm is outside the timer);
  - ours: `target/release/examples/bench_centernet WEIGHTS PHOTO REPS ARCH`
    (RAYON_NUM_THREADS = --threads), which prints one JSON line: median_ms, min_ms, nodes_ms
    {centernet_preprocess, the trunk's nodes (resnet, dcn_upsample; or dla), centernet_ctdet},
    stages_ms {heads, decode},
    scores, classes (COCO category ids), boxes (photo pixels, x1 y1 x2 y2 flattened).
Medians over all rounds' repetitions (official) and of the per-round medians (ours). Both
sides run cv2 / OpenCV's own warpAffine kernel: cv2.ipp.setUseIPP(False), as the fixture.

Checks: both sides give the same 100 detections, matched one to one (same COCO category id,
scores within 1e-4, boxes within 1e-2 px); the official results also equal the committed
fixture's for chelsea.png and coffee.png (same code, same weights; printed, not asserted,
since other thread counts may round differently).

--official-only times the official side alone (no binary needed). Without it, a missing
binary stops the script before any timing, with the command that builds it.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_centernet_fixtures as fx  # noqa: E402  (installs the patches, imports CenterNet)

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
EXE = os.path.join(ROOT, "target", "release", "examples", "bench_centernet")
BUILD = "cargo build --release -p plugin-centernet -p plugin-backbones --example bench_centernet --lib"
SCORE_TOL, BOX_TOL = 1e-4, 1e-2


def median(v):
    return float(np.median(v))


def official_detections(results, valid_ids):
    """merge_outputs' {class j: float32 [n, 5]} as (category id, score, box) rows."""
    rows = []
    for j in range(1, 81):
        for r in results[j]:
            rows.append((valid_ids[j - 1], float(r[4]), [float(v) for v in r[:4]]))
    return rows


def match(ours, official):
    """Greedy one-to-one matching of our detections (best first) to the official ones: same
    category id, |score diff| <= SCORE_TOL, max |box diff| <= BOX_TOL; the closest score
    wins. Returns (matched, max score diff, max box diff) over the matched pairs."""
    free = list(range(len(official)))
    matched, ds, db = 0, 0.0, 0.0
    for cat, score, box in ours:
        best = None
        for i in free:
            c, s, b = official[i]
            d_box = max(abs(x - y) for x, y in zip(box, b))
            if c == cat and abs(s - score) <= SCORE_TOL and d_box <= BOX_TOL:
                if best is None or abs(s - score) < best[1]:
                    best = (i, abs(s - score), d_box)
        if best is not None:
            free.remove(best[0])
            matched += 1
            ds, db = max(ds, best[1]), max(db, best[2])
    return matched, ds, db


def fixture_check(detector, valid_ids, arch):
    """The official results on the fixture's photos against the committed fixture."""
    name = {"resdcn_18": "centernet_resdcn18.json", "dla_34": "centernet_dla34.json"}.get(arch)
    if name is None:
        return "no fixture at this size"
    path = os.path.join(fx.OUT, name)
    if not os.path.exists(path):
        return "no committed fixture"
    with open(path) as f:
        cases = json.load(f)["cases"]
    worst_s = worst_b = 0.0
    for case in cases:
        image = cv2.imread(os.path.join(ROOT, "assets", case["photo"]))
        got = official_detections(detector.run(image)["results"], valid_ids)
        want = [(r["category_id"], r["score"], r["box"]) for r in case["results"]]
        if len(got) != len(want) or any(g[0] != w[0] for g, w in zip(got, want)):
            return f"{case['photo']}: DIFFERENT classes"
        worst_s = max(worst_s, max(abs(g[1] - w[1]) for g, w in zip(got, want)))
        worst_b = max(worst_b, max(abs(x - y) for g, w in zip(got, want)
                                   for x, y in zip(g[2], w[2])))
    return (f"equal to {name} on {len(cases)} photos within "
            f"{worst_s:.1e} (scores) / {worst_b:.1e} px (boxes)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--photo", default="chelsea.png", help="a file in assets/ or a path")
    ap.add_argument("--official-only", action="store_true",
                    help="time the official code alone (no engine binary needed)")
    ap.add_argument("--json", help="also write the numbers to this file")
    ap.add_argument("--save-weights", help="also keep the generated checkpoint here")
    ap.add_argument("--exe", default=EXE, help="our bench binary (default: %(default)s)")
    ap.add_argument("--arch", default="resdcn_18", choices=["resdcn_18", "dla_34", "hourglass"])
    args = ap.parse_args()
    exe = args.exe
    if not args.official_only and not os.path.exists(exe):
        sys.exit(f"bench_centernet: {exe} does not exist; build it with\n    {BUILD}\n"
                 "(or pass --official-only to time the official code alone)")
    torch.set_num_threads(args.threads)
    cv2.ipp.setUseIPP(False)  # OpenCV's own warpAffine kernel, as the fixture and ours
    photo = args.photo if os.path.exists(args.photo) else os.path.join(ROOT, "assets", args.photo)
    image = cv2.imread(photo)
    if image is None:
        sys.exit(f"bench_centernet: cannot read {photo}")
    h, w = image.shape[:2]
    valid_ids, _ = fx.coco_ids_and_names()

    if args.arch == "hourglass":
        import make_hourglass_fixtures as hf
        opt = hf.build_opt()
        _, _, state = fx.generated_checkpoint(opt, hf.range_of)
    else:
        opt = fx.build_opt(args.arch)
        _, _, state = fx.generated_checkpoint(opt)
    tmp = tempfile.mkdtemp(prefix="bench_centernet_")
    try:
        wpath = os.path.join(tmp, f"ctdet_{args.arch.replace('_', '')}_generated.pth")
        torch.save({"epoch": 140, "state_dict": state}, wpath)
        if args.save_weights:
            shutil.copyfile(wpath, args.save_weights)
        detector = fx.make_detector(opt, wpath)  # the official create_model + load_model
        for name, t in detector.model.state_dict().items():
            assert torch.equal(t, state[name]), name
        model = detector.model
        images, _ = detector.pre_process(image, 1.0)

        def run_whole():
            return detector.run(image)

        def run_forward():
            with torch.no_grad():
                return model(images)[-1]

        out = run_forward()

        def run_decode():
            hm = out["hm"].clone()
            t = time.perf_counter()
            with torch.no_grad():
                heat = hm.sigmoid_()
                fx.ctdet_decode(heat, out["wh"], reg=out["reg"], K=opt.K)
            return (time.perf_counter() - t) * 1e3

        rows = {k: [] for k in ("whole", "forward", "decode", "pre", "net", "dec", "post",
                                "merge")}
        ours = {"median_ms": [], "min_ms": [], "nodes": [], "stages": []}
        last = None
        run_whole(), run_forward(), run_decode()  # warm-up
        for _ in range(3):  # interleaved rounds
            for _ in range(args.reps):
                t = time.perf_counter()
                ret = run_whole()
                rows["whole"].append((time.perf_counter() - t) * 1e3)
                for k in ("pre", "net", "dec", "post", "merge"):
                    rows[k].append(ret[k] * 1e3)
            for _ in range(args.reps):
                t = time.perf_counter()
                run_forward()
                rows["forward"].append((time.perf_counter() - t) * 1e3)
            for _ in range(args.reps):
                rows["decode"].append(run_decode())
            if args.official_only:
                continue
            env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
            proc = subprocess.run([exe, wpath, photo, str(args.reps), args.arch], env=env,
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"bench_centernet: {exe} failed ({proc.returncode}):\n"
                         f"{proc.stderr[-4000:]}")
            last = json.loads(proc.stdout.strip().splitlines()[-1])
            ours["median_ms"].append(last["median_ms"])
            ours["min_ms"].append(last["min_ms"])
            ours["nodes"].append(last["nodes_ms"])
            ours["stages"].append(last["stages_ms"])
        official = official_detections(ret["results"], valid_ids)
        fixture = fixture_check(detector, valid_ids, args.arch)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    off = {k: median(v) for k, v in rows.items()}
    print(f"CenterNet ctdet {args.arch}, {os.path.basename(photo)} ({h}x{w} -> 512x512, output "
          f"128x128, K {opt.K}), {args.threads} threads, 3 interleaved rounds of {args.reps} "
          f"after a warm-up; torch {torch.__version__}, cv2 {cv2.__version__}")
    report = {"photo": os.path.basename(photo), "size": [h, w], "threads": args.threads,
              "reps": args.reps, "rounds": 3, "torch": torch.__version__,
              "cv2": cv2.__version__, "official_ms": off, "fixture_check": fixture}
    print("| | official | ours | ours / official |")
    print("|---|---|---|---|")
    if args.official_only:
        print(f"| whole (run(image): pre-processing to merged results) | {off['whole']:.1f} ms "
              "| | |")
        print(f"| model forward (model(images)) | {off['forward']:.1f} ms | | |")
        print(f"| decode (hm.sigmoid_() + ctdet_decode) | {off['decode']:.2f} ms | | |")
    else:
        nd = {k: median([n[k] for n in ours["nodes"]]) for k in ours["nodes"][0]}
        st = {k: median([s[k] for s in ours["stages"]]) for k in ours["stages"][0]}
        whole = median(ours["median_ms"])
        # The network: every trunk node and the heads.
        forward = sum(v for k, v in nd.items()
                      if k not in ("centernet_preprocess", "centernet_ctdet")) + st["heads"]
        print(f"| whole (run(image): pre-processing to merged results) | {off['whole']:.1f} ms "
              f"| {whole:.1f} ms | {whole / off['whole']:.2f} |")
        print(f"| pre-processing (run()'s pre / centernet_preprocess) | {off['pre']:.1f} ms "
              f"| {nd['centernet_preprocess']:.1f} ms "
              f"| {nd['centernet_preprocess'] / off['pre']:.2f} |")
        print(f"| model forward (model(images) / trunk + heads) "
              f"| {off['forward']:.1f} ms | {forward:.1f} ms | {forward / off['forward']:.2f} |")
        print(f"| decode (hm.sigmoid_() + ctdet_decode / decode stage) | {off['decode']:.2f} ms "
              f"| {st['decode']:.2f} ms | {st['decode'] / off['decode']:.2f} |")
        print(f"ours per node (ms): {json.dumps(nd)}; centernet_ctdet stages (ms): "
              f"{json.dumps(st)}; min whole {min(ours['min_ms']):.1f} ms")
        mine = [(int(c), float(s), [float(v) for v in last["boxes"][4 * i:4 * i + 4]])
                for i, (c, s) in enumerate(zip(last["classes"], last["scores"]))]
        matched, ds, db = match(mine, official)
        same = matched == len(mine) == len(official)
        print(f"results: {matched} of {len(mine)} ours / {len(official)} official detections "
              f"matched (same COCO category id, score within {SCORE_TOL:g}, box within "
              f"{BOX_TOL:g} px): {'SAME' if same else 'DIFFER'}; max |score diff| {ds:.1e}, "
              f"max |box diff| {db:.1e} px")
        report.update({"ours_ms": {"whole": whole, "min": min(ours["min_ms"]), "nodes": nd,
                                   "stages": st, "forward_sum": forward},
                       "ratios": {"whole": whole / off["whole"],
                                  "decode": st["decode"] / off["decode"],
                                  "forward": forward / off["forward"]},
                       "results": {"matched": matched, "ours": len(mine),
                                   "official": len(official), "same": same,
                                   "max_score_diff": ds, "max_box_diff": db}})
    print("official run() breakdown (its time.time() stats, ms): " + json.dumps(
        {k: round(off[k], 2) for k in ("pre", "net", "dec", "post", "merge")}))
    print(f"official results vs the committed fixture: {fixture}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
    if not args.official_only and not report["results"]["same"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
