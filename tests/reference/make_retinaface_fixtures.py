#!/usr/bin/env python3
"""Writes plugins/retinaface/tests/fixtures/retinaface.json: the official RetinaFace
(biubug6/Pytorch_Retinaface at b984b4b: MobileNet-0.25 and ResNet-50 bodies, FPN, SSH, class /
box / landmark heads, PriorBox, decode / decode_landm, py_cpu_nms) run on real photos with
detect.py's pre- and post-processing.

    pip install torch torchvision numpy pillow      # CPU wheels are enough
    python3 tests/reference/make_retinaface_fixtures.py [path/to/Pytorch_Retinaface.git]

Run by developers, not by CI (CI reads the committed fixture).

Sources. The official code is not vendored: the script extracts the pinned commit from a git
repository (default: /work/.mirror/biubug6+Pytorch_Retinaface/repo, a bare clone; any clone
works) with `git archive b984b4b | tar -x` into a temporary directory and imports
`models.retinaface.RetinaFace`, `data.config` (cfg_mnet, cfg_re50),
`layers.functions.prior_box.PriorBox`, `utils.box_utils.decode, decode_landm` and
`utils.nms.py_cpu_nms.py_cpu_nms` from there, unmodified. What cannot run here is patched in
this script only, never the arithmetic:
  * `cfg['pretrain'] = False` on copies of both configs (no ImageNet downloads / .tar files);
  * `cv2` is not needed by anything this script runs but is imported at module level by
    data/wider_face.py and data/data_augment.py (through data/__init__.py); when OpenCV is not
    installed an empty stub module `cv2` is put in sys.modules. detect.py's cv2.imread is
    replaced by PIL (RGB -> BGR, which is what cv2.imread(IMREAD_COLOR) returns for these
    8-bit RGB PNGs).
detect.py itself is an argparse script with a 100x timing loop, so its inference body is
copied below (`detect`) with its defaults: resize 1, confidence_threshold 0.02 (strict >),
top_k 5000, nms_threshold 0.4, keep_top_k 750.

Weights. No checkpoint is used or stored: every state-dict tensor is generated from its name
by make_maskrcnn_fixtures.generate (reproduced bit for bit by the Rust side from the stored
name, shape, a, b): value uniform in [b - a, b + a), (a, b) stored as float32-exact values.
  * conv weights a = sqrt(g / fan_in), fan_in = prod(shape[1:]), b = 0, with g = 3 (unit
    gain) everywhere except the MobileNet-0.25 body, where g = 8 (BODY_GAIN): with unit gain
    its 27 (Leaky)ReLU layers shrink the image signal below the BatchNorm offsets, and its
    stride-16 / stride-32 features came out image-independent to 1e-6 (a fixture that could
    not catch a wrong input); with g = 8 the image-driven part dominates at every level.
    The ResNet-50 body keeps g = 3 (its features are image-driven already).
  * BatchNorm (found by module type): weight [0.5, 1], bias and running_mean [-0.1, 0.1],
    running_var [0.5, 1.5]. `num_batches_tracked` is neither generated nor stored
    (load_state_dict(strict=False); recent torch fills it in itself, so nothing is reported
    missing; the script asserts that only those keys were left out).
  * head conv biases [-0.1, 0.1]; head conv weights (1x1, no BN) a = f * sqrt(3 / fan_in)
    with a factor f per config, head and level (HEAD_SCALE): Bbox/Landmark factors give raw
    offsets of rms ~1 (|max| ~5-6: boxes 0.35x-3x their prior, no exp() overflow), ClassHead
    factors spread the face logit differences over several units without saturating the
    float32 softmax.
With zero-mean generated weights the face-minus-background logit of each (level, anchor)
column has a random common-mode offset (the SSH features are non-negative) whose sign no
per-tensor (a, b) can change, and the columns with a positive one put nearly all their anchors
above 0.02: thousands of anchors pass the threshold (not tens), more than 750 survive NMS,
and keep_top_k cuts. Scores of candidates are checked for ties (numpy's argsort is not stable):
the script asserts that ties, if any, do not change the kept detections or their order.
The state-dict names are the model's own (released .pth files carry the same names prefixed
with "module."; detect.py's remove_prefix strips it).

Cases: mobilenet0.25 on astronaut.png (317x317) and coffee.png (240x360), ResNet-50 on
chelsea.png (264x397). Input exactly as detect.py: BGR float32 minus (104, 117, 123), HWC ->
CHW, batch 1, no resize. Per case: the raw outputs loc [P, 4], conf [P, 2] (softmax, test
phase) and landms [P, 10] summarised (shape, min, max, sum, values at 256 fixed indices), the
SSH outputs summarised the same way, the number of priors and of anchors above the threshold,
and the final detections in full, in py_cpu_nms's order: boxes [N, 4] (x1, y1, x2, y2 pixels),
scores [N], landmarks [N, 10] (x1, y1, ..., x5, y5 pixels).
"""

import copy
import io
import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
import types

import numpy as np
import torch
import torchvision
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_maskrcnn_fixtures import floats, generate  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "plugins", "retinaface", "tests", "fixtures")
# A clone of biubug6/Pytorch_Retinaface holding commit b984b4b (RETINAFACE_REPO overrides).
MIRROR = os.environ.get("RETINAFACE_REPO", "/work/.mirror/biubug6+Pytorch_Retinaface/repo")
COMMIT = "b984b4b"
SAMPLES = 256

# detect.py's defaults.
RESIZE = 1
CONFIDENCE_THRESHOLD = 0.02
TOP_K = 5000
NMS_THRESHOLD = 0.4
KEEP_TOP_K = 750
MEAN_BGR = (104, 117, 123)

# Per config: the gain g of the body's conv weights, a = sqrt(g / fan_in) (see the docstring).
BODY_GAIN = {"mnet": 8.0, "re50": 3.0}
# Per config, head and level (ClassHead.0 .. .2): factors on the unit-gain range of the heads'
# 1x1 conv weights, a = factor * sqrt(3 / fan_in); see range_of.
HEAD_SCALE = {
    "mnet": {
        "ClassHead": [1.8, 7.0, 7.0],
        "BboxHead": [1.0, 3.0, 3.0],
        "LandmarkHead": [1.5, 4.0, 4.0],
    },
    "re50": {
        "ClassHead": [0.55, 2.5, 1.5],
        "BboxHead": [0.4, 0.9, 0.7],
        "LandmarkHead": [0.7, 0.9, 0.8],
    },
}

CASES = [
    ("mnet", "astronaut.png"),
    ("mnet", "coffee.png"),
    ("re50", "chelsea.png"),
]


def f32(x: float) -> float:
    return float(np.float32(x))


def import_official(repo: str, tmp: str):
    """git archive COMMIT | tar -x into tmp, then import the official modules from there."""
    blob = subprocess.run(
        ["git", "-C", repo, "archive", COMMIT], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(tmp)
    try:
        import cv2  # noqa: F401
    except ImportError:
        sys.modules["cv2"] = types.ModuleType("cv2")  # only dataset code uses it
    sys.path.insert(0, tmp)
    from data.config import cfg_mnet, cfg_re50
    from layers.functions.prior_box import PriorBox
    from models.retinaface import RetinaFace
    from utils.box_utils import decode, decode_landm
    from utils.nms.py_cpu_nms import py_cpu_nms

    return types.SimpleNamespace(
        cfg_mnet=cfg_mnet,
        cfg_re50=cfg_re50,
        PriorBox=PriorBox,
        RetinaFace=RetinaFace,
        decode=decode,
        decode_landm=decode_landm,
        py_cpu_nms=py_cpu_nms,
    )


def range_of(name: str, shape, bn_prefixes: set, scales: dict, body_gain: float) -> tuple:
    """(a, b): values are uniform in [b - a, b + a)."""
    module, _, leaf = name.rpartition(".")
    if module in bn_prefixes:
        if leaf == "weight":
            return 0.25, 0.75
        if leaf in ("bias", "running_mean"):
            return 0.1, 0.0
        if leaf == "running_var":
            return 0.5, 1.0
        raise ValueError(f"no range for {name} {shape}")
    if len(shape) in (2, 4):
        fan_in = int(np.prod(shape[1:]))
        a = math.sqrt((body_gain if name.startswith("body.") else 3.0) / fan_in)
        head, level = name.split(".")[:2]
        if head in scales:
            a *= scales[head][int(level)]
        return f32(a), 0.0
    if len(shape) == 1 and leaf == "bias":
        return 0.1, 0.0
    raise ValueError(f"no range for {name} {shape}")


def build(off, cfg: dict, scales: dict, body_gain: float):
    net = off.RetinaFace(cfg=cfg, phase="test")
    net.eval()
    bn = {n for n, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    spec, state = [], {}
    for name, t in net.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        shape = list(t.shape)
        a, b = range_of(name, shape, bn, scales, body_gain)
        spec.append({"name": name, "shape": shape, "a": f32(a), "b": f32(b)})
        state[name] = torch.from_numpy(generate(name, shape, a, b))
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    # BatchNorm's _load_from_state_dict fills in an absent num_batches_tracked itself, so
    # recent torch reports nothing missing; older ones report exactly those keys.
    assert all(k.endswith("num_batches_tracked") for k in missing), missing
    skipped = set(net.state_dict()) - set(state)
    assert all(k.endswith("num_batches_tracked") for k in skipped), skipped
    return net, spec


def summary(t: torch.Tensor, rng: np.random.Generator) -> dict:
    a = t.detach().cpu().numpy().astype(np.float32)
    flat = a.reshape(-1)
    idx = np.sort(rng.choice(flat.size, SAMPLES, replace=False))
    return {
        "shape": list(a.shape),
        "min": float(flat.min()),
        "max": float(flat.max()),
        "sum": float(flat.astype(np.float64).sum()),
        "indices": [int(i) for i in idx],
        "values": [float(flat[i]) for i in idx],
    }


def load_bgr(photo: str) -> np.ndarray:
    """What cv2.imread(path, cv2.IMREAD_COLOR) returns: uint8 HWC in BGR order."""
    rgb = np.asarray(Image.open(os.path.join(ROOT, "assets", photo)).convert("RGB"))
    return np.ascontiguousarray(rgb[:, :, ::-1])


def detect(off, net, cfg, img_raw):
    """detect.py's inference body (CPU, resize = 1, its argparse defaults)."""
    ssh = []
    hooks = [
        getattr(net, f"ssh{i}").register_forward_hook(lambda m, i, o: ssh.append(o))
        for i in (1, 2, 3)
    ]
    img = np.float32(img_raw)
    im_height, im_width, _ = img.shape
    scale = torch.Tensor([img.shape[1], img.shape[0], img.shape[1], img.shape[0]])
    img -= MEAN_BGR
    img = img.transpose(2, 0, 1)
    img = torch.from_numpy(img).unsqueeze(0)
    loc, conf, landms = net(img)  # forward pass
    for h in hooks:
        h.remove()
    raw = {"loc": loc[0].clone(), "conf": conf[0].clone(), "landms": landms[0].clone()}

    priorbox = off.PriorBox(cfg, image_size=(im_height, im_width))
    priors = priorbox.forward()
    prior_data = priors.data
    boxes = off.decode(loc.data.squeeze(0), prior_data, cfg["variance"])
    boxes = boxes * scale / RESIZE
    boxes = boxes.cpu().numpy()
    scores = conf.squeeze(0).data.cpu().numpy()[:, 1]
    landms = off.decode_landm(landms.data.squeeze(0), prior_data, cfg["variance"])
    scale1 = torch.Tensor([img.shape[3], img.shape[2], img.shape[3], img.shape[2],
                           img.shape[3], img.shape[2], img.shape[3], img.shape[2],
                           img.shape[3], img.shape[2]])
    landms = landms * scale1 / RESIZE
    landms = landms.cpu().numpy()

    # ignore low scores
    inds = np.where(scores > CONFIDENCE_THRESHOLD)[0]
    n_above = int(inds.size)
    boxes = boxes[inds]
    landms = landms[inds]
    scores = scores[inds]

    # keep top-K before NMS
    candidates = (boxes, scores)
    order = scores.argsort()[::-1][:TOP_K]
    boxes = boxes[order]
    landms = landms[order]
    scores = scores[order]

    # do NMS
    dets = np.hstack((boxes, scores[:, np.newaxis])).astype(np.float32, copy=False)
    keep = off.py_cpu_nms(dets, NMS_THRESHOLD)
    dets = dets[keep, :]
    landms = landms[keep]

    # keep top-K faster NMS
    dets = dets[:KEEP_TOP_K, :]
    landms = landms[:KEEP_TOP_K, :]
    tie_sensitive = tie_order_matters(off, *candidates)
    d = np.hstack((candidates[0][order], candidates[1][order, None])).astype(np.float32)
    print(f"  NMS: min |IoU - {NMS_THRESHOLD}| = {nms_iou_margin(d, NMS_THRESHOLD):.3g}")
    return raw, ssh, priors, n_above, dets, landms, tie_sensitive


def tie_order_matters(off, dets_in: np.ndarray, scores: np.ndarray) -> bool:
    """Whether equal scores among the candidates make the result depend on argsort's order
    of ties (numpy's default sort is not stable): NMS + keep_top_k with ties in ascending
    and in descending index order give the same boxes in the same order?"""
    results = []
    for order in (np.lexsort((np.arange(scores.size), -scores)),
                  np.lexsort((-np.arange(scores.size), -scores))):
        order = order[:TOP_K]
        d = np.hstack((dets_in[order], scores[order, None])).astype(np.float32, copy=False)
        keep = off.py_cpu_nms(d, NMS_THRESHOLD)[:KEEP_TOP_K]
        results.append(order[keep])
    return not np.array_equal(results[0], results[1])


def nms_iou_margin(dets: np.ndarray, thresh: float) -> float:
    """min |IoU - thresh| over the comparisons py_cpu_nms makes (same float32 arithmetic): how
    close a float-rounding difference would come to flipping a suppression."""
    x1, y1, x2, y2, scores = (dets[:, k] for k in range(5))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    margin = math.inf
    while order.size > 0:
        i = order[0]
        w = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        if ovr.size:
            margin = min(margin, float(np.abs(ovr - thresh).min()))
        order = order[np.where(ovr <= thresh)[0] + 1]
    return margin


def main():
    torch.set_num_threads(2)
    torch.set_grad_enabled(False)
    repo = sys.argv[1] if len(sys.argv) > 1 else MIRROR
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        off = import_official(repo, tmp)
        cfgs = {}
        for key, cfg in (("mnet", off.cfg_mnet), ("re50", off.cfg_re50)):
            cfg = copy.deepcopy(cfg)
            cfg["pretrain"] = False
            cfgs[key] = cfg
        nets, specs = {}, {}
        for key, cfg in cfgs.items():
            nets[key], specs[key] = build(off, cfg, HEAD_SCALE[key], BODY_GAIN[key])
            names = [s["name"] for s in specs[key]]
            print(key, f"{len(names)} tensors; first 5:", names[:5])
            print(key, "released names:", ["module." + n for n in names[:5]])

        cases = []
        for n, (key, photo) in enumerate(CASES):
            cfg = cfgs[key]
            rng = np.random.default_rng(n + 1)
            img_raw = load_bgr(photo)
            raw, ssh, priors, n_above, dets, landms, tie_sensitive = detect(off, nets[key], cfg, img_raw)
            assert priors.shape[0] == raw["loc"].shape[0]
            assert not tie_sensitive, "equal scores make the detections order-dependent"
            case = {
                "config": key,
                "photo": photo,
                "image_size": list(img_raw.shape[:2]),
                "num_priors": int(priors.shape[0]),
                "loc": summary(raw["loc"], rng),
                "conf": summary(raw["conf"], rng),
                "landms": summary(raw["landms"], rng),
                "ssh": [summary(s[0], rng) for s in ssh],
                "num_above_threshold": n_above,
                "boxes": floats(torch.from_numpy(dets[:, :4].copy())),
                "scores": floats(torch.from_numpy(dets[:, 4].copy())),
                "landmarks": floats(torch.from_numpy(np.ascontiguousarray(landms))),
            }
            cases.append(case)
            s = raw["conf"][:, 1].numpy()
            cand = s[s > CONFIDENCE_THRESHOLD]
            ties = cand.size - np.unique(cand).size
            wh = dets[:, 2:4] - dets[:, 0:2]
            print(
                key, photo, case["image_size"], f"priors {case['num_priors']}",
                f"score quantiles {np.quantile(s, [0, 0.1, 0.5, 0.9, 1]).round(4).tolist()}",
                f"above {n_above} (equal scores among them: {ties}), kept {len(dets)}",
                f"scores {dets[0, 4] if len(dets) else 0:.4f}..{dets[-1, 4] if len(dets) else 0:.4f}",
                f"loc |max| {raw['loc'].abs().max():.3f} landms |max| {raw['landms'].abs().max():.3f}",
                f"kept w {wh[:, 0].min():.1f}..{wh[:, 0].max():.1f} h {wh[:, 1].min():.1f}..{wh[:, 1].max():.1f}"
                if len(dets) else "",
                "ssh |max|", [round(float(x[0].abs().max()), 2) for x in ssh],
            )

    def cfg_values(cfg):
        return {
            k: cfg[k]
            for k in ("name", "min_sizes", "steps", "variance", "clip", "out_channel",
                      "in_channel", "return_layers")
        }

    doc = {
        "generator": "tests/reference/make_retinaface_fixtures.py",
        "source": f"biubug6/Pytorch_Retinaface@{COMMIT}",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "input": {"color_order": "BGR", "mean": list(MEAN_BGR), "resize": RESIZE},
        "postprocess": {
            "confidence_threshold": CONFIDENCE_THRESHOLD,
            "top_k": TOP_K,
            "nms_threshold": NMS_THRESHOLD,
            "keep_top_k": KEEP_TOP_K,
        },
        "cfg": {k: cfg_values(c) for k, c in cfgs.items()},
        "body_gain": BODY_GAIN,
        "head_scale": HEAD_SCALE,
        "weights_mnet": specs["mnet"],
        "weights_re50": specs["re50"],
        "cases": cases,
    }
    path = os.path.join(OUT, "retinaface.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
