#!/usr/bin/env python3
"""DOCSTRING PLACEHOLDER"""

import os

os.environ["OMP_NUM_THREADS"] = "2"  # before torch is imported (at most 2 CPU threads)

import contextlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_maskrcnn_fixtures import floats, generate  # noqa: E402
from make_yolact_fixtures import gain, patched, rle, summary_2d, summary_3d  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "plugins", "yolact", "tests", "fixtures")
YOLACT_EDGE_REPO = os.environ.get("YOLACT_EDGE_REPO", "/tmp/yolact_edge")
COMMIT = "873fceb3"
CONFIG = "yolact_edge_vid_resnet50_config"
PHOTO = "astronaut.png"
CROP_SIZE = (180, 240)  # (h, w) of every frame
CROP_ORIGIN = (30, 120)  # (y, x) of frame 0 in the photo
SHIFTS = [(0, 0), (3, 5), (6, 10)]  # (dy, dx) of frames 0, 1, 2: real motion
EVERY_K_FRAMES = 5  # evalvideo's keyframe interval
NEAR_HALF = 1e-4  # mask probabilities this close to 0.5 are listed
SCORE_TIE = 1e-6  # adjacent output scores this close are listed
MAX_LISTED_PIXELS = 2000

# Gains, as multiples of the unit-variance gain sqrt(3 / fan_in) (see range_of and the
# docstring). The YOLACT part is make_yolact_fixtures.py's, retuned for 41 classes; the
# flow / SPA part is chosen by measuring the run (see the docstring).
FPN_PRED_GAINS = (2.5, 1.8, 1.0)  # fpn_phase_2.pred_layers.0 (P5), .1 (P4), .2 (P3)
UPFEATURE_GAIN, UPFEATURE_BIAS = 2.0, -0.3
CONF_GAIN = 5.5
BBOX_GAIN = 3.0
MASK_COEFF_GAIN = 4.0
PROTO_GAIN = math.sqrt(2.0)
PROTO_LAST_GAIN, PROTO_LAST_BIAS = 16.0, -2.0
FLOW_PRE_GAIN = math.sqrt(2.0)  # flow_net_pre_convs (conv + LeakyReLU 0.1)
FLOW_ENC_GAIN = math.sqrt(2.0)  # flow_net.conv1/2/3 (conv + LeakyReLU 0.1)
FLOW_OFFSET_GAIN = 1.0  # flow_net.pred2/pred3.conv: the 2-channel offsets
FLOW_SCALE_GAIN, FLOW_SCALE_BIAS = 0.1, 1.0  # flow_net.pred*.scale: near 1, as the real init
FLOW_BIAS_GAIN = 0.1  # flow_net.pred*.bias
SPA_GAIN = 0.5  # spa.refine_convs.*.0 (conv + LeakyReLU 0.1)


def range_of(name: str, shape) -> tuple:
    """(a, b): values are uniform in [b - a, b + a)."""
    if name.startswith("backbone.") and len(shape) == 1:  # BatchNorm2d (eval mode)
        if name.endswith("running_var"):
            return 0.5, 1.0
        if name.endswith("weight"):
            return 0.25, 0.75
        return 0.1, 0.0  # bias, running_mean
    if len(shape) == 1:  # conv biases
        if name == "prediction_layers.0.upfeature.0.bias":
            return 0.1, UPFEATURE_BIAS
        if name == "proto_net.10.bias":
            return 0.1, PROTO_LAST_BIAS
        if name.startswith("flow_net.pred") and name.endswith(".scale.bias"):
            return 0.1, FLOW_SCALE_BIAS
        return 0.1, 0.0
    if len(shape) != 4:
        raise ValueError(f"no range for {name} {shape}")
    if name.startswith("fpn_phase_2.pred_layers."):
        return gain(FPN_PRED_GAINS[int(name.split(".")[2])], shape), 0.0
    if name == "prediction_layers.0.upfeature.0.weight":
        return gain(UPFEATURE_GAIN, shape), 0.0
    if name == "prediction_layers.0.conf_layer.weight":
        return gain(CONF_GAIN, shape), 0.0
    if name == "prediction_layers.0.bbox_layer.weight":
        return gain(BBOX_GAIN, shape), 0.0
    if name == "prediction_layers.0.mask_layer.weight":
        return gain(MASK_COEFF_GAIN, shape), 0.0
    if name == "proto_net.10.weight":
        return gain(PROTO_LAST_GAIN, shape), 0.0
    if name.startswith("proto_net."):
        return gain(PROTO_GAIN, shape), 0.0
    if name.startswith("flow_net_pre_convs."):
        return gain(FLOW_PRE_GAIN, shape), 0.0
    if name.startswith(("flow_net.conv1.", "flow_net.conv2.", "flow_net.conv3.")):
        return gain(FLOW_ENC_GAIN, shape), 0.0
    if name.startswith("flow_net.pred"):
        part = name.split(".")[2]  # conv (offsets), scale, bias
        g = {"conv": FLOW_OFFSET_GAIN, "scale": FLOW_SCALE_GAIN, "bias": FLOW_BIAS_GAIN}[part]
        return gain(g, shape), 0.0
    if name.startswith("spa.refine_convs."):
        return gain(SPA_GAIN, shape), 0.0
    return gain(1.0, shape), 0.0  # every other conv: unit-variance gain


# State-dict entries that the inference path never reads (checked with forward hooks).
UNUSED = {
    "semantic_seg_conv.": "training-only semantic segmentation head",
    "flow_net.pred1.": "P3-level flow: FlowNetMiniTRT.forward does not compute it",
    "flow_net.upfeat2.": "P3-level flow: FlowNetMiniTRT.forward does not compute it",
    "flow_net.upflow2.": "P3-level flow: FlowNetMiniTRT.forward does not compute it",
}


def build_cnms(tmp: str):
    """Compiles a copy of yolact_edge/utils/cython_nms.pyx in `tmp` (patch 4) and registers
    it as yolact_edge.utils.cython_nms, so that detection.py's import finds it built."""
    import Cython
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    src_path = os.path.join(YOLACT_EDGE_REPO, "yolact_edge", "utils", "cython_nms.pyx")
    with open(src_path) as f:
        src = f.read()
    for old, new in [("np.int_t", "np.int64_t"), ("dtype=np.int)", "dtype=np.int64)")]:
        assert src.count(old) == 1, old
        src = src.replace(old, new)
    pyx = os.path.join(tmp, "cython_nms.pyx")
    with open(pyx, "w") as f:
        f.write(src)
    ext = Extension("cython_nms", [pyx], include_dirs=[np.get_include()])
    dist = Distribution({"ext_modules": cythonize([ext], quiet=True, build_dir=tmp),
                         "script_name": "setup.py"})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib = tmp
    cmd.build_temp = tmp
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        cmd.ensure_finalized()
        cmd.run()
    (so,) = [n for n in os.listdir(tmp) if n.startswith("cython_nms") and n.endswith(".so")]
    spec = importlib.util.spec_from_file_location(
        "yolact_edge.utils.cython_nms", os.path.join(tmp, so))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules["yolact_edge.utils.cython_nms"] = mod
    return mod, Cython.__version__


def import_yolact_edge(tmp: str):
    """Imports the official modules with the CPU patches of the docstring."""
    if not os.path.exists(os.path.join(YOLACT_EDGE_REPO, "yolact_edge", "yolact.py")):
        sys.exit(f"no YolactEdge sources in {YOLACT_EDGE_REPO} (see the docstring)")
    sys.path.insert(0, YOLACT_EDGE_REPO)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    cnms, cython_version = build_cnms(tmp)
    with patched(torch.cuda, "current_device", lambda: 0):  # patch 1
        from yolact_edge import yolact
    from yolact_edge.data import config as data_config
    from yolact_edge.data import set_cfg
    from yolact_edge.layers import output_utils
    from yolact_edge.utils import augmentations
    from yolact_edge.utils.tensorrt import convert_to_tensorrt

    set_cfg(CONFIG)
    return types.SimpleNamespace(
        yolact=yolact, cfg=data_config.cfg, output_utils=output_utils,
        augmentations=augmentations, convert_to_tensorrt=convert_to_tensorrt,
        cnms=cnms, cython_version=cython_version)


def build(ye, tmp: str):
    """eval.py's model: Yolact(training=False), load_weights, eval, convert_to_tensorrt with
    --disable_tensorrt, evaluate's Detect settings with --fast_nms False."""
    cfg = ye.cfg
    net = ye.yolact.Yolact(training=False)
    spec, dropped, state = [], [], {}
    for name, t in net.state_dict().items():
        shape = list(t.shape)
        if name.endswith("num_batches_tracked"):
            dropped.append({"name": name, "shape": shape,
                            "why": "BatchNorm counter, unused in eval"})
            state[name] = t.clone()
            continue
        a, b = range_of(name, shape)
        state[name] = torch.from_numpy(generate(name, shape, a, b))
        why = [w for p, w in UNUSED.items() if name.startswith(p)]
        if why:
            dropped.append({"name": name, "shape": shape, "a": a, "b": b, "why": why[0]})
            continue
        spec.append({"name": name, "shape": shape, "a": a, "b": b})
    path = os.path.join(tmp, "generated.pth")
    torch.save(state, path)
    # Yolact.load_weights: checkpoint-name fix-ups (none apply), load_state_dict (strict),
    # then create_partial_backbone() and, as cfg.torch2trt_flow_net_int8 is True,
    # create_embed_flow_net() (FlowNetMiniTRTWrapper around FlowNetMiniTRT).
    net.load_weights(path, args=None)
    net.eval()
    args = types.SimpleNamespace(disable_tensorrt=True, use_fp16_tensorrt=False)
    ye.convert_to_tensorrt(net, cfg, args, transform=None)  # sets every torch2trt_* False
    assert not any(getattr(cfg, k) for k in dir(cfg) if k.startswith("torch2trt_")
                   and not k.startswith("torch2trt_max"))
    net.detect.use_fast_nms = False  # evaluate(): net.detect.use_fast_nms = args.fast_nms
    net.detect.use_cross_class_nms = False
    cfg.mask_proto_debug = False
    return net, spec, dropped


def crop_frame(img: np.ndarray, shift) -> tuple:
    y = CROP_ORIGIN[0] + shift[0]
    x = CROP_ORIGIN[1] + shift[1]
    h, w = CROP_SIZE
    return np.ascontiguousarray(img[y:y + h, x:x + w]), [y, x]


def level_summary(t: torch.Tensor, rng) -> dict:
    """summary_3d of one [1, C, H, W] map."""
    assert t.dim() == 4 and t.shape[0] == 1
    return summary_3d(t[0], rng)


def cnms_f64(dets: np.ndarray, thresh: float):
    """cython_nms.nms's greedy loop in float64: the kept indices and the smallest
    |IoU - thresh| among the comparisons it makes."""
    d = dets.astype(np.float64)
    x1, y1, x2, y2, s = d.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-dets[:, 4], kind="stable")
    sup = np.zeros(len(d), bool)
    gap = math.inf
    for k, i in enumerate(order):
        if sup[i]:
            continue
        rest = order[k + 1:]
        rest = rest[~sup[rest]]
        if rest.size == 0:
            continue
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[rest] - inter)
        gap = min(gap, float(np.abs(ovr - thresh).min()))
        sup[rest[ovr >= thresh]] = True
    return np.where(~sup)[0], gap


def margins(ye, raw, decoded, dets, final_masks_check):
    """How far the run is from the decisions of traditional_nms / cnms and postprocess."""
    cfg, detect = ye.cfg, ye.net.detect
    conf = raw["conf"][0]
    cur = conf[:, 1:].t()  # [40, N]
    best = cur.max(0).values
    kept = best > detect.conf_thresh
    out = {"kept_priors": int(kept.sum())}
    scores = cur[:, kept]
    boxes = decoded[kept] * cfg.max_size
    cand, iou_gap, exact_ties = [], math.inf, 0
    for c in range(scores.shape[0]):
        m = scores[c] > detect.conf_thresh
        if not bool(m.any()):
            continue
        s = scores[c][m]
        preds = torch.cat([boxes[m], s[:, None]], 1).numpy()
        keep32 = ye.cnms.nms(preds, detect.nms_thresh)
        keep64, gap = cnms_f64(preds, detect.nms_thresh)
        assert np.array_equal(np.sort(keep32), keep64), "float64 cnms differs"
        iou_gap = min(iou_gap, gap)
        sv = np.sort(s.numpy())
        exact_ties += int((sv[1:] == sv[:-1]).sum())
        cand.append(s[torch.from_numpy(keep64)])
    s = torch.cat(cand).sort(descending=True).values
    out["candidates_after_nms"] = int(s.numel())
    n = min(cfg.max_num_detections, s.numel())
    out["score_last"] = float(s[n - 1])
    if s.numel() > n:
        out["top_100_gap"] = float(s[n - 1] - s[n])
    gaps = (s[: n - 1] - s[1:n]).double()
    out["min_adjacent_score_gap"] = float(gaps.min()) if n > 1 else None
    out["adjacent_score_gaps_below_1e-4"] = int((gaps < 1e-4).sum())
    # Per-class `score > conf_thresh` (every class score of a kept prior is compared).
    out["conf_thresh_gap"] = float((scores.double() - detect.conf_thresh).abs().min())
    out["nms_iou_gap"] = iou_gap
    out["class_score_exact_ties"] = exact_ties
    ds = dets["score"].double()
    ties = [[i, i + 1, float(ds[i] - ds[i + 1])] for i in range(len(ds) - 1)
            if float(ds[i] - ds[i + 1]) < SCORE_TIE]
    out["score_ties_below_1e-6"] = ties
    out.update(final_masks_check)
    return out


def mask_check(ye, proto, coeffs, boxes_float, size, masks):
    """postprocess's masks recomputed (sigmoid, crop, bilinear), with the pixels near 0.5."""
    from yolact_edge.layers.box_utils import crop

    p = torch.sigmoid(proto @ coeffs.t())
    p = crop(p, boxes_float.clone()).permute(2, 0, 1).contiguous()
    p = F.interpolate(p.unsqueeze(0), size, mode="bilinear", align_corners=False)[0]
    assert torch.equal(p > 0.5, masks > 0.5), "mask recomputation differs from postprocess"
    d = (p.double() - 0.5).abs()
    near = (d < NEAR_HALF).nonzero().tolist()
    return {
        "mask_pixels_within_1e-5_of_half": int((d < 1e-5).sum()),
        "mask_pixels_within_1e-4_of_half": int((d < NEAR_HALF).sum()),
        "mask_pixels_near_half": [[int(a), int(b), int(c)] for a, b, c in
                                  near[:MAX_LISTED_PIXELS]],
    }


def prior_index(boxes_out, scores, classes, decoded_roundtrip, conf) -> list:
    """The prior each detection came from: its box is bit-equal to the prior's decoded box
    after traditional_nms' `* max_size ... / max_size` and its score is the prior's."""
    out = []
    for b, s, c in zip(boxes_out, scores, classes):
        hit = (decoded_roundtrip == b).all(1).nonzero().flatten()
        hit = [int(i) for i in hit if float(conf[i, int(c) + 1]) == float(s)]
        assert len(hit) == 1, f"detection not matched to one prior: {hit}"
        out.append(hit[0])
    return out


class Taps:
    """Forward hooks and a deform_op wrapper that record the official intermediates."""

    def __init__(self, ye, net):
        self.rec = {}
        self.calls = {}

        def hook(name):
            def f(mod, inputs, output):
                self.calls[name] = self.calls.get(name, 0) + 1
                self.rec.setdefault(name, []).append(
                    ([t.clone() if torch.is_tensor(t) else t for t in inputs], output))
            return f

        for name in ["backbone", "partial_backbone", "fpn_phase_1", "fpn_phase_2", "spa",
                     "flow_net_pre_convs", "flow_net", "proto_net", "semantic_seg_conv"]:
            getattr(net, name).register_forward_hook(hook(name))
        # FlowNetMiniTRT is a ScriptModule (its children take no hooks): its compiled
        # forward must not reference the P3-level layers.
        code = net.flow_net.flow_net.code
        for name in ["pred1", "upfeat2", "upflow2"]:
            assert f"self.{name}" not in code, name
        assert "self.pred2" in code and "self.pred3" in code
        deform_op = ye.yolact.deform_op

        def tapped_deform_op(x, offset, *a, **k):
            y = deform_op(x, offset, *a, **k)
            self.rec.setdefault("deform_op", []).append((x.clone(), offset.clone(), y.clone()))
            return y

        ye.yolact.deform_op = tapped_deform_op  # yolact.py calls its module-global deform_op

    def reset(self):
        self.rec = {}


def run_frames(ye, net, transform):
    import cv2

    img = cv2.imread(os.path.join(ROOT, "assets", PHOTO))  # BGR uint8, as VideoCapture.read
    taps = Taps(ye, net)
    raw = {}
    detect_call = type(net.detect).__call__

    def keep_raw(self, predictions):
        raw.clear()
        raw.update({k: v.clone() for k, v in predictions.items()})
        return detect_call(self, predictions)

    net.detect.__class__ = type("DetectKeepRaw", (type(net.detect),), {"__call__": keep_raw})
    from yolact_edge.layers.box_utils import decode

    cfg = ye.cfg
    moving_statistics = {"conf_hist": []}
    frames, priors_doc, stats = [], None, []
    for frame_idx, shift in enumerate(SHIFTS):
        rng = np.random.default_rng(frame_idx + 1)
        crop_img, origin = crop_frame(img, shift)
        taps.reset()
        keyframe = frame_idx % EVERY_K_FRAMES == 0 or cfg.flow.warp_mode == "none"
        with torch.no_grad():
            # evalvideo's transform_frame and eval_network, without .cuda() / DataParallel.
            frame = torch.from_numpy(crop_img).float()
            imgs = transform(torch.stack([frame], 0))
            if keyframe:
                extras = {"backbone": "full", "interrupt": False, "keep_statistics": True,
                          "moving_statistics": moving_statistics}
                net_outs = net(imgs, extras=extras)
                moving_statistics["feats"] = net_outs["feats"]
                moving_statistics["lateral"] = net_outs["lateral"]
            else:
                extras = {"backbone": "partial", "interrupt": False, "keep_statistics": False,
                          "moving_statistics": moving_statistics}
                net_outs = net(imgs, extras=extras)
            preds = net_outs["pred_outs"]
            h, w, _ = frame.shape
            det = preds[0]
            dets_copy = {k: v.clone() for k, v in det.items() if k != "proto"}
            classes, scores, boxes, masks = ye.output_utils.postprocess(
                preds, w, h, visualize_lincomb=False, crop_masks=True, score_threshold=0)
            # What eval.py's default (--fast_nms True) would have output, for reference.
            net.detect.use_fast_nms = True
            fast = detect_call(net.detect, {k: v.clone() for k, v in raw.items()})[0]
            net.detect.use_fast_nms = False

        rec = taps.rec
        assert "semantic_seg_conv" not in rec, "semantic_seg_conv ran at eval"
        entry = {"keyframe": keyframe, "frame": frame_idx, "photo": PHOTO,
                 "crop_origin": origin, "original_size": [int(h), int(w)],
                 "input": summary_3d(imgs[0], rng)}
        st = {"frame": frame_idx, "keyframe": keyframe}
        if keyframe:
            assert "partial_backbone" not in rec and "flow_net" not in rec
            (c2, c3, c4, c5), = [o for _, o in rec["backbone"]]
            entry["backbone"] = {"c3": level_summary(c3, rng), "c4": level_summary(c4, rng),
                                 "c5": level_summary(c5, rng)}
            feats = net_outs["feats"]
            entry["phase_1"] = {
                "p3": level_summary(feats[0], rng),
                "p4": level_summary(feats[1], rng),
                "p5": level_summary(feats[2], rng),
                "lateral": level_summary(net_outs["lateral"], rng),
            }
        else:
            assert "backbone" not in rec and "fpn_phase_1" not in rec
            (c2, c3), = [o for _, o in rec["partial_backbone"]]
            entry["backbone"] = {"c2": level_summary(c2, rng), "c3": level_summary(c3, rng)}
            spa_in, spa_out = rec["spa"][0]
            lateral, p4s, p5s = spa_in
            (pre_cur_in, pre_cur), (pre_key_in, pre_key) = [
                (i[0], o) for i, o in rec["flow_net_pre_convs"]]
            assert torch.equal(pre_key_in, moving_statistics["lateral"])
            assert torch.equal(pre_cur_in, lateral)
            flows = net_outs["preds_flow"]  # [(offset, scale, bias)] for P4, P5
            warps = rec["deform_op"]
            p3_in = rec["fpn_phase_2"][0][0][0]
            entry["lateral"] = level_summary(lateral, rng)
            entry["flow_net_pre_convs"] = {"current": level_summary(pre_cur, rng),
                                           "keyframe": level_summary(pre_key, rng)}
            entry["flow"] = {}
            entry["warped"] = {}
            entry["scaled"] = {}
            for lvl, (off, sc, bi), (x, off2, y), fin in zip(
                    ["p4", "p5"], flows, warps, [p4s, p5s]):
                assert torch.equal(off, off2)
                entry["flow"][lvl] = {"offset": level_summary(off, rng),
                                      "scale": level_summary(sc, rng),
                                      "bias": level_summary(bi, rng)}
                entry["warped"][lvl] = level_summary(y, rng)
                entry["scaled"][lvl] = level_summary(fin, rng)
                hh, ww = off.shape[-2:]
                px = torch.stack([off[0, 0] / 8 * (ww - 1) / 2, off[0, 1] / 8 * (hh - 1) / 2])
                st[f"{lvl}_offset_abs_mean"] = float(off.abs().mean())
                st[f"{lvl}_offset_abs_max"] = float(off.abs().max())
                st[f"{lvl}_px_abs_mean"] = float(px.abs().mean())
                st[f"{lvl}_px_abs_max"] = float(px.abs().max())
                st[f"{lvl}_scale"] = [float(sc.mean()), float(sc.std()), float(sc.min()),
                                      float(sc.max())]
                st[f"{lvl}_bias"] = [float(bi.mean()), float(bi.std())]
                st[f"{lvl}_warp_rel_change"] = float((y - x).norm() / x.norm())
                st[f"{lvl}_feat_rms"] = float(x.pow(2).mean().sqrt())
            entry["p3"] = level_summary(p3_in, rng)
            entry["spa"] = {"p4": level_summary(spa_out[0], rng),
                            "p5": level_summary(spa_out[1], rng)}
            st["spa_rel_change"] = [float((o - i).norm() / i.norm())
                                    for i, o in zip([p4s, p5s], spa_out)]
        fpn = net_outs["outs_phase_2"]
        entry["fpn"] = {f"p{k + 3}": level_summary(t, rng) for k, t in enumerate(fpn)}
        entry["raw"] = {
            "loc": summary_2d(raw["loc"][0], rng),
            "conf": summary_2d(raw["conf"][0], rng),
            "mask": summary_2d(raw["mask"][0], rng),
            "proto": summary_3d(raw["proto"][0], rng, last_axis_means=True),
        }
        priors = raw["priors"]
        if priors_doc is None:
            priors_doc = {
                "count": int(priors.shape[0]),
                "per_level": [int(pl.priors.shape[0]) for pl in net.prediction_layers],
                "first": [floats(r) for r in priors[:12]],
                "last": [floats(r) for r in priors[-4:]],
                "summary": summary_2d(priors, np.random.default_rng(0)),
            }
        decoded = decode(raw["loc"][0], priors)
        roundtrip = decoded * cfg.max_size / cfg.max_size
        conf = raw["conf"][0]
        boxes_float = dets_copy["box"]
        pidx = prior_index(boxes_float, dets_copy["score"], dets_copy["class"], roundtrip, conf)
        fast_pidx = prior_index(fast["box"], fast["score"], fast["class"], decoded, conf)
        m = masks > 0.5
        check = mask_check(ye, raw["proto"][0], dets_copy["mask"], boxes_float, (h, w), masks)
        entry["detections"] = {
            "classes": [int(c) for c in classes],
            "scores": floats(scores),
            "boxes": [[int(v) for v in b] for b in boxes],
            "boxes_float": [floats(b) for b in boxes_float],
            "prior_index": pidx,
        }
        entry["masks"] = [rle(mk.numpy()) for mk in m]
        entry["mask_areas"] = [int(a) for a in m.reshape(m.shape[0], -1).sum(1)]
        entry["detections_fast_nms"] = {
            "classes": [int(c) for c in fast["class"]],
            "scores": floats(fast["score"]),
            "boxes_float": [floats(b) for b in fast["box"]],
            "prior_index": fast_pidx,
        }
        entry["margins"] = margins(ye, raw, decoded, dets_copy, check)
        frames.append(entry)
        stats.append((st, entry, priors_doc))
    return frames, priors_doc, stats


def report(stats):
    for st, entry, priors_doc in stats:
        det = entry["detections"]
        n = len(det["classes"])
        areas = np.array(entry["mask_areas"])
        b = np.array(det["boxes"]).reshape(-1, 4)
        bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        fill = areas / np.maximum(bw * bh, 1)
        ends = np.cumsum(priors_doc["per_level"])
        level = np.searchsorted(ends, det["prior_index"], side="right")
        print(f"frame {st['frame']} ({'key' if st['keyframe'] else 'warped'}): {n} detections"
              f" (P3-P7: {np.bincount(level, minlength=5).tolist()})"
              f" of {len(set(det['classes']))} classes,"
              f" scores {det['scores'][0]:.4f}..{det['scores'][-1]:.4f},"
              f" mask areas {areas.min()}..{areas.max()} (median {int(np.median(areas))}),"
              f" empty {(areas == 0).sum()}, full-box {(fill >= 0.95).sum()},"
              f" partial {((fill > 0.05) & (fill < 0.95)).sum()};"
              f" fast-NMS {len(entry['detections_fast_nms']['classes'])}")
        print("  stats", {k: v for k, v in st.items() if k not in ("frame", "keyframe")})
        mg = {k: v for k, v in entry["margins"].items() if k != "mask_pixels_near_half"}
        print("  margins", mg)


def main():
    t0 = time.time()
    torch.set_num_threads(2)
    os.makedirs(OUT, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="yolact_edge_fixture_")
    try:
        ye = import_yolact_edge(tmp)
        net, spec, dropped = build(ye, tmp)
        ye.net = net
        with patched(torch.Tensor, "cuda", lambda self, *a, **k: self):  # patch 2
            transform = ye.augmentations.FastBaseTransform()
        frames, priors_doc, stats = run_frames(ye, net, transform)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(stats)
    cfg = ye.cfg
    doc = {
        "generator": "tests/reference/make_yolact_edge_fixtures.py",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cython": ye.cython_version,
        "yolact_edge": COMMIT,
        "config": CONFIG,
        "every_k_frames": EVERY_K_FRAMES,
        "detect": {
            "top_k": net.detect.top_k,
            "conf_thresh": net.detect.conf_thresh,
            "nms_thresh": net.detect.nms_thresh,
            "max_num_detections": cfg.max_num_detections,
            "max_size": cfg.max_size,
            "use_fast_nms": False,
            "use_cross_class_nms": False,
            "nms": "traditional_nms (cython_nms.nms)",
        },
        "flow": {
            "model": cfg.flow.model,
            "warp_layers": cfg.flow.warp_layers,
            "reduce_channels": list(cfg.flow.reduce_channels),
            "encode_layers": [list(x) for x in cfg.flow.encode_layers],
            "encode_channels": cfg.flow.encode_channels,
            "use_spa": cfg.flow.use_spa,
            "use_normalized_spa": cfg.flow.use_normalized_spa,
            "use_scale_factor": cfg.flow.use_scale_factor,
            "use_scale_bias": cfg.flow.use_scale_bias,
            "use_shuffle_cat": cfg.flow.use_shuffle_cat,
            "flow_layer": cfg.flow.flow_layer,
        },
        "num_classes": cfg.num_classes,
        "weights": spec,
        "dropped": dropped,
        "priors": priors_doc,
        "frames": frames,
    }
    path = os.path.join(OUT, "yolact_edge_r50.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB) in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
