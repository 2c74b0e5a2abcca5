#!/usr/bin/env python3
"""Writes plugins/yolact/tests/fixtures/yolact_edge_r50.json: the official YolactEdge code
(haotian-liu/yolact_edge at commit 873fceb3) run on CPU, with generated weights, over three
video frames with its keyframe feature transfer (one keyframe, two warped frames).

    pip install torch torchvision numpy opencv-python-headless pycocotools cython setuptools
    mkdir -p /tmp/yolact_edge
    git --git-dir=<mirror of haotian-liu/yolact_edge>/repo archive 873fceb3 eval.py yolact_edge \
        | tar -x -C /tmp/yolact_edge
    YOLACT_EDGE_REPO=/tmp/yolact_edge python3 tests/reference/make_yolact_edge_fixtures.py

(YOLACT_EDGE_REPO defaults to /tmp/yolact_edge and goes first on sys.path. Archiving the
whole tree also works where the mirror has the three data/*.gif blobs; the script needs only
yolact_edge/. It needs a C compiler for cython_nms.) Run by developers, not by CI (CI reads
the committed fixture). It uses 2 CPU threads, takes about 15 s, and writes the same file
byte for byte on every run (same machine and library versions).

Model. `yolact_edge_vid_resnet50_config` exactly as `eval.py --config=... --disable_tensorrt
--fast_nms=False` builds it: `set_cfg`, `Yolact(training=False)`, `load_weights` (here of the
generated state dict, saved to a temp file), `net.eval()`, `convert_to_tensorrt` with
`disable_tensorrt` (sets every `torch2trt_*` flag False and returns: nothing is converted,
torch2trt is not installed), then `evaluate`'s `net.detect.use_fast_nms = args.fast_nms`
(False) and `cfg.mask_proto_debug = False`. ResNet-50 (BatchNorm2d eval, eps 1e-5), 41
classes (YouTube-VIS 40 + background), max_size 550, FPN 256 channels split in two phases,
flow 'mini' (reduce_channels [64], encode_layers [[1], [2], [4]], encode_channels 64,
warp_layers "P4P5", flow_layer 'each', use_shuffle_cat False), use_spa True
(use_normalized_spa False), use_scale_factor / use_scale_bias True, protonet and shared
prediction head as YOLACT (see make_yolact_fixtures.py), Detect(top_k 200, conf_thresh 0.05,
nms_thresh 0.5), max_num_detections 100. `use_jit` is True (no torch2trt,
`torch.cuda.device_count() <= 1`), so FPN_phase_1/2, SPA, FlowNetMiniPreConvs and the flow net
are ScriptModules and deform_op is `torch.jit.script`ed, as on a single-GPU machine.

Run: evalvideo's per-frame logic (eval.py:evalvideo, transform_frame and eval_network, lines
651-713) under torch.no_grad(), frame_idx 0, 1, 2 with every_k_frames = 5: frame 0 is a
keyframe (`frame_idx % 5 == 0`: extras backbone "full", keep_statistics True, then
`moving_statistics["feats"] = net_outs["feats"]`, `["lateral"] = net_outs["lateral"]`),
frames 1 and 2 are not (backbone "partial", keep_statistics False, the keyframe's
moving_statistics). Frames: `cv2.imread(assets/astronaut.png)` (BGR uint8, 317x317, as
VideoCapture.read gives BGR) cropped to 180x240 (h x w) at (y, x) = (30, 50), (33, 55),
(36, 60): real motion of 3/5 px per frame. `torch.from_numpy(frame).float()`,
`FastBaseTransform()(torch.stack([frame], 0))` (bilinear resize to 550x550, align_corners
False, aspect ratio not kept, (x - MEANS) / STD in BGR, then BGR -> RGB), `net(imgs, extras)`,
then each frame's `net_outs["pred_outs"]` goes through `postprocess(preds, w, h,
visualize_lincomb=False, crop_masks=True, score_threshold=0)` at the frame's size (180x240),
as prep_metrics does (eval.py:evalimage refuses video models: it asserts warp_mode 'none').

CPU patches (in this script only; the YolactEdge sources are not edited, and none changes what
is computed):
  1. yolact.py calls `torch.cuda.current_device()` at import: `torch.cuda.current_device` is
     `lambda: 0` while `yolact_edge.yolact` is imported, then restored.
  2. `FastBaseTransform.__init__` puts MEANS/STD on the GPU with `.cuda()`: `torch.Tensor.cuda`
     is the identity while it is constructed, then restored (forward moves them to the
     image's device anyway).
  3. evalvideo's `.cuda()` on the frames, `CustomDataParallel(net).cuda()` and
     `torch.nn.DataParallel(FastBaseTransform()).cuda()` are left out: the net and the
     transform are called directly (what DataParallel does without GPUs); the net stays on
     the CPU; `torch.set_default_tensor_type` is not called (eval.py sets
     'torch.FloatTensor' without --cuda, the default anyway).
  4. cython_nms. layers/functions/detection.py runs `pyximport.install(...)` and imports
     `yolact_edge.utils.cython_nms` at import time; the .pyx does not compile against NumPy 2
     (`np.int_t` is gone from its Cython declarations) and `np.int` (its `dtype=np.int`) was
     removed in NumPy 1.24. A copy is compiled in a temp dir (Cython + setuptools build_ext,
     deleted afterwards, nothing in ~/.pyxbld) with exactly two replacements, `np.int_t` ->
     `np.int64_t` and `dtype=np.int)` -> `dtype=np.int64)` (both were int64 on Linux: only
     the type of the `suppressed` flag array), and registered in sys.modules under its
     official name before detection.py is imported, so its import finds it built.
  5. Not patches but taps: forward hooks on backbone, partial_backbone, fpn_phase_1/2, spa,
     flow_net_pre_convs, flow_net, proto_net, semantic_seg_conv (record only);
     yolact.py's module-global `deform_op` is wrapped by a function that calls the official
     one and records clones; Detect's class is swapped for a subclass whose __call__ records
     the raw predictions and calls the official __call__. After postprocess, Detect is called
     once more on the same raw predictions with use_fast_nms True (eval.py's default) for
     "detections_fast_nms"; that does not touch the recorded run.

Semantics a re-implementation must match (verified in the source at 873fceb3; the run
recomputes items 1-8 with torch.nn.functional from the weights and asserts that they agree
with the official intermediates; they agree exactly, relative error 0 on this CPU):
  1. FPN split (yolact.py:FPN_phase_1.forward, FPN_phase_2.forward, Yolact.forward). Phase 1:
     lat_layers are stored reversed (lat_layers.0 is the 1x1 conv of C5 (2048 ch), .1 of C4,
     .2 of C3 (512 ch)); top-down x = lat(C5); x = bilinear(x, size of C_j,
     align_corners=False) + lat(C_j) for C4, then C3. Outputs the three sums (phase-1 P3, P4,
     P5, before any 3x3 conv) plus the three laterals. Phase 2: pred_layers also reversed
     (pred_layers.0 on P5, .2 on P3), 3x3 pad 1 conv + ReLU each, then P6 =
     downsample_layers.0 (3x3 stride 2 pad 1, no ReLU) of the ReLU'd P5, P7 =
     downsample_layers.1 of P6. Keyframe: moving_statistics["feats"] = [P3, P4, P5] of phase
     1, ["lateral"] = lat_layers.2(C3) (the P3 lateral). Together phase 1 + 2 are exactly
     YOLACT's FPN (the checkpoint loader renames fpn.lat_layers -> fpn_phase_1, fpn.* ->
     fpn_phase_2).
  2. Partial backbone (Yolact.create_partial_backbone, called by load_weights when not
     training; ResNetBackbone.forward): a copy of the backbone with `layers[:2]`: conv1, bn1,
     ReLU, maxpool, layer1, layer2 -> [C2, C3] (138x138x256, 69x69x512 at 550). C2 is computed
     but unused; only `outs[-1]` (C3) is. The current lateral is
     `fpn_phase_1.lat_layers[-1](C3)` (= lat_layers.2).
  3. Flow net (Yolact.__init__ lines 1133-1143, create_embed_flow_net, FlowNetMiniTRTWrapper,
     FlowNetMiniTRT.forward, FlowNetMiniPreConvs, build_flow_convs, FlowNetMiniPredLayer,
     conv_lrelu). eval.py builds FlowNetMiniTRT, not FlowNetMini: yolact_edge_vid_config sets
     torch2trt_flow_net_int8 True and Yolact.__init__ checks it before --disable_tensorrt
     clears the flags; FlowNetMiniTRT is plain PyTorch (only a later conversion would be TRT)
     and computes the P4/P5 outputs exactly as FlowNetMini, without the P3-level branch
     (pred1, upfeat2, upflow2: their weights are in the checkpoint but unused, see
     "dropped"). `flows = flow_net(pre(lateral), pre(moving_statistics["lateral"]))`:
     pre = flow_net_pre_convs = one conv_lrelu(256 -> 64) (3x3, pad 1, bias, then
     LeakyReLU(0.1)), shared, applied to the current and to the keyframe lateral;
     concat0 = cat([pre(current), pre(keyframe)], channels) (128 ch; target = current frame
     first). conv1 = conv_lrelu(128 -> 64), conv_lrelu(64 -> 64) (69x69); conv2 =
     conv_lrelu(64 -> 128, stride 2), conv_lrelu(128 -> 128) (35x35); conv3 =
     conv_lrelu(128 -> 256, stride 2), conv_lrelu(256 -> 256) (18x18); every conv 3x3, pad 1,
     bias, LeakyReLU slope 0.1. pred3 on out_conv3: offset = 3x3 conv -> 2 (no bias), scale =
     1x1 conv -> 256 (bias), bias = 1x1 conv -> 256 (bias), no activations. Coarse to fine:
     upfeat3 = 3x3 conv 256 -> 128 (no bias, no activation) of bilinear(out_conv3, size of
     out_conv2, align_corners=False); upflow3 = 3x3 conv 2 -> 2 (no bias) of bilinear(flow3,
     same size) -- the flow is not multiplied by 2 when upsampled; concat2 = cat(out_conv2,
     upfeat3, upflow3) (258 ch); pred2 on concat2 (same three convs, 258 in). The wrapper
     returns [(dummy,)*3, (flow2, scale2, bias2), (flow3, scale3, bias3)]; with warp_layers
     "P4P5", `flows[1:]` pairs (flow2, scale2, bias2) with the keyframe's phase-1 P4 (35x35)
     and (flow3, ...) with P5 (18x18).
  4. Warp (layers/warp_utils.py:deform_op, generate_grid_as): grid channel 0 = column index
     x, channel 1 = row index y (float32); `grid *= [2/(w-1), 2/(h-1)]` (a float32 tensor of
     the two Python doubles); `grid -= 1`; `grid += offset / 8` (offset channel 0 moves x,
     channel 1 moves y, in normalised units: 1 is (w-1)/16 pixels of that level);
     `F.grid_sample(keyframe_feat, grid, mode="bilinear", padding_mode="zeros",
     align_corners=True)`.
  5. Scale (Yolact.forward): `pred_feat *= scale_factor; pred_feat += scale_bias` in place,
     element-wise on the 256-channel maps: (warped * scale) rounded, then + bias.
  6. P3 (Yolact.forward, "P4P5"): p3 = bilinear(warped-and-scaled P4, size of C3,
     align_corners=False) + current lateral (the P4 before SPA, not after).
  7. SPA (yolact.py:SPA.forward, conv_lrelu): refine_convs = 2 x conv_lrelu(512 -> 256) (3x3,
     pad 1, bias, LeakyReLU 0.1); for P4 then P5: `c3 = bilinear(c3, size of x,
     align_corners=False)`; `x = x + refine(cat([x, c3], channels))` (x first). c3 starts as
     the current lateral and is reassigned, so P5's c3 is the P4-sized one resized again
     (18x18 from 35x35), not the lateral resized once (here that would change P5 by up to
     ~0.07). F.normalize is computed but unused (use_normalized_spa False). P3 is not refined.
     Then fpn_phase_2(p3, P4, P5) as item 1.
  8. Heads (Yolact.forward, PredictionModule, make_net): as YOLACT: protonet on phase-2 P3,
     prototype ReLU, shared prediction module on P3-P7, softmax over 41 classes at eval,
     tanh coefficients, square priors (19248 at 550).
  9. Detect (layers/functions/detection.py:Detect.__call__, detect, traditional_nms):
     decode as YOLACT (variances 0.1, 0.2); priors kept where their max foreground score >
     0.05 (implied by the per-class test below); boxes * cfg.max_size (550); for each
     foreground class c (0..39): candidates with score > conf_thresh (0.05, strict), their
     [x1, y1, x2, y2, score] as float32 numpy -> cnms(dets, 0.5); the kept indices come back
     in ascending candidate order; concatenated class by class; scores.sort(descending) (no
     per-class top_k: top_k 200 is unused here); the first max_num_detections (100); boxes =
     boxes[idx] / 550, i.e. (decoded * 550) / 550 in float32, which can differ from the
     decoded box by an ulp ("boxes_float" holds these values, bit for bit).
 10. cnms (utils/cython_nms.pyx:nms), float32 throughout: areas = (x2 - x1 + 1) * (y2 - y1 +
     1) (numpy float32); order = scores.argsort()[::-1] (numpy's default introsort: the order
     of exactly equal scores is unspecified); greedy: for each i in order not yet suppressed,
     for each later j not suppressed: xx1 = max(ix1, x1[j]), yy1 = max(...), xx2 = min(ix2,
     x2[j]), yy2 = min(...); w = max(0, xx2 - xx1 + 1), h = max(0, yy2 - yy1 + 1) (Cython
     writes `+ 1.0`, a double add rounded back to float32, the same as a float32 add);
     inter = w * h; ovr = inter / (iarea + areas[j] - inter) (float32, left to right);
     `if ovr >= thresh: suppressed[j] = 1` -- suppression at IoU >= 0.5, not > 0.5, with the
     "+1 pixel" convention on the 550-scaled coordinates; returns np.where(suppressed == 0).
     Suppressed boxes do not suppress others (unlike FastNMS).
 11. postprocess (layers/output_utils.py:postprocess): as YOLACT's for this config
     (preserve_aspect_ratio False, no maskiou): proto @ coeffs^T, sigmoid, crop(masks,
     boxes) with padding 1 at proto resolution, bilinear to (h, w) with align_corners=False,
     `> 0.5`; boxes: sanitize_coordinates(x * w, padding 0, clamp) then `.long()`. Det
     outputs are Detect's dicts directly (YOLACT wraps them in {'detection', 'net'}).
 12. eval.py's default is `--fast_nms True` (eval.py:evaluate sets
     `net.detect.use_fast_nms = args.fast_nms`); `cfg.use_fast_nms` (False in
     yolact_edge_config) is never read by anything; Detect's own default is False. So
     traditional_nms is what `--fast_nms=False` (and Detect used outside eval.py) gives;
     "detections_fast_nms" records what eval.py's default gives on the same raw outputs.

Weights. Generated from each state-dict name exactly as make_maskrcnn_fixtures.py does
(`generate`, reproduced bit for bit by `kernels::weights::generated_tensor`); values uniform
in [b - a, b + a); (a, b) of each tensor in "weights". Names are the official checkpoint
names (what Yolact.state_dict() has before load_weights adds partial_backbone.* (a copy of
backbone.*) and wraps flow_net into flow_net.flow_net): backbone.*, fpn_phase_1.lat_layers.*,
fpn_phase_2.pred_layers.* / downsample_layers.*, spa.refine_convs.{0,1}.0.*,
flow_net_pre_convs.convs.0.0.*, flow_net.{conv1,conv2,conv3}.{0,1}.0.*,
flow_net.{pred2,pred3}.{conv,scale,bias}.*, flow_net.{upfeat3,upflow3}.weight, proto_net.*,
prediction_layers.0.*. "dropped" lists the generated-but-unused ones (semantic_seg_conv.*,
training only; flow_net.pred1.*, upfeat2, upflow2, not in FlowNetMiniTRT.forward, asserted on
its compiled code) and the 53 BatchNorm num_batches_tracked counters (kept at 0). `range_of`:
conv weights a = g * sqrt(3 / fan_in) (unit-variance gain g = 1 unless below), biases 0.1
around 0, BatchNorm weight 0.75 +- 0.25, bias / running_mean +- 0.1, running_var 1 +- 0.5.
As make_yolact_fixtures.py: fpn_phase_2.pred_layers.0 (P5) g 2.5, .1 (P4) g 1.8,
proto_net.0/2/4/8 g sqrt(2), proto_net.10 g 16 with bias -2, bbox_layer g 3, mask_layer
g 4; retuned for 41 classes and these frames (measured): upfeature.0 g 2 with bias -0.45,
conf_layer g 4.5, mask_layer bias 0.6 (without it ~2/3 of the masks are empty).
Flow / SPA (measured, see the report the script prints): flow_net_pre_convs and
flow_net.conv1-3 g sqrt(2) (He gain; LeakyReLU 0.1); flow_net.pred{2,3}.conv (offsets) g 2:
|offset| mean 0.83 / max 2.2 at P4 (1.8 / 4.6 px), 0.57 / 1.8 at P5 (0.6 / 1.9 px);
pred*.scale g 0.1 with bias 1 +- 0.1 (as the real init, scale.bias = 1): scale 1.00 +- 0.07
(0.77..1.22); pred*.bias g 0.1: +-0.07 against features of rms 0.37 (P4) / 0.23 (P5); the
warp changes P4 by ~37% and P5 by ~23% (relative L2); spa.refine_convs g 0.35: SPA changes
P4 by ~27% and P5 by ~37%.

Outputs, in yolact_edge_r50.json:
  generator, torch, numpy, cython, yolact_edge ("873fceb3"), config, every_k_frames (5),
  detect (Detect's settings; nms "traditional_nms (cython_nms.nms)"), flow (cfg.flow values),
  num_classes (41);
  weights: [{name, shape, a, b}] for every state-dict tensor used at inference;
  dropped: [{name, shape, (a, b,) why}] generated but unused (see above);
  priors: count, per_level (P3..P7), first 12 and last 4 rows [cx, cy, w, h], summary (as
  the YOLACT fixture; identical for every frame);
  frames, in order, each: keyframe (bool, first), frame (index), photo, crop_origin [y, x]
  in the photo, original_size [H, W] (180, 240), input (summary of the [3, 550, 550] network
  input), then
    keyframe: backbone {c3, c4, c5} (the FPN inputs), phase_1 {p3, p4, p5 (the phase-1 sums
      saved in moving_statistics["feats"]), lateral (moving_statistics["lateral"])};
    non-keyframe: backbone {c2, c3} (partial backbone), lateral (current frame's P3
      lateral), flow_net_pre_convs {current, keyframe} (the 64-ch maps), flow {p4, p5}: each
      {offset [2, h, w], scale [256, h, w], bias [256, h, w]}, warped {p4, p5} (deform_op's
      output, before scale/bias), scaled {p4, p5} (warped * scale + bias: SPA's inputs), p3
      (recomputed), spa {p4, p5} (SPA's outputs);
  and for every frame: fpn {p3..p7} (phase-2 outputs fed to the heads), raw {loc [N, 4],
  conf [N, 41] after softmax, mask [N, 32] after tanh, proto [138, 138, 32] after ReLU},
  detections {classes (0..39 = conf column - 1), scores, boxes ([x1, y1, x2, y2] in frame
  pixels, int64 as postprocess returns them), boxes_float (Detect's boxes, relative to the
  550x550 input, before sanitize_coordinates; may lie outside [0, 1]), prior_index},
  masks (COCO compressed RLE of postprocess's `> 0.5` masks, size [H, W], all of them),
  mask_areas (pixels per mask), detections_fast_nms {classes, scores, boxes_float,
  prior_index} (Detect with use_fast_nms True on the same raw outputs, no masks), margins.
  All per-instance lists in output order; the layout of input / raw / detections / masks is
  the YOLACT fixture's (compressed RLE for every mask, not packed bits).
  All 4-D maps are summarised without their batch axis ([C, H, W]).

Summaries: `summary` of make_maskrcnn_fixtures.py via make_yolact_fixtures.summary_2d /
summary_3d (shape, sum, abs_sum, min, max, 512 random flat indices plus first and last with
their values, channel_means over axis 0 for [C, H, W] -- for proto [138, 138, 32] the rows,
plus last_axis_means -- or per column for [N, C], said by "channel_axis"). Each frame draws
its indices from np.random.default_rng(frame + 1), one summary after the other; the indices
are stored with each summary.

"margins" (per frame), the decisions a float32 re-implementation could flip, restricted to
those that can change the output: kept_priors; candidates_after_nms (all classes); score_last
(the 100th output score) and top_100_gap (to the 101st candidate); min_adjacent_score_gap and
adjacent_score_gaps_below_1e-4 of the output scores; score_ties_below_1e-6 ([i, i + 1, gap]
of adjacent output scores closer than 1e-6: none here); nms_iou_gap (smallest |IoU - 0.5|
among the comparisons cnms makes between candidates scoring >= score_last, recomputed in
float64 with the +1 rule; greedy NMS decides a box only from higher-scoring boxes, so lower
ones cannot matter); class_score_exact_ties (equal scores within a class among those
candidates: argsort's order would matter); conf_thresh_gap (|score - 0.05| over class scores
>= score_last) and conf_thresh_gap_all (over every class score; it only changes the candidate
count); mask_pixels_within_1e-5_of_half / _1e-4_of_half and mask_pixels_near_half ([detection,
y, x] of every final-mask pixel whose probability is within 1e-4 of 0.5, up to 2000; a
re-implementation may differ there).
"""

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
CROP_ORIGIN = (30, 50)  # (y, x) of frame 0 in the 317x317 photo
SHIFTS = [(0, 0), (3, 5), (6, 10)]  # (dy, dx) of frames 0, 1, 2: real motion
EVERY_K_FRAMES = 5  # evalvideo's keyframe interval
NEAR_HALF = 1e-4  # mask probabilities this close to 0.5 are listed
SCORE_TIE = 1e-6  # adjacent output scores this close are listed
MAX_LISTED_PIXELS = 2000

# Gains, as multiples of the unit-variance gain sqrt(3 / fan_in) (see range_of and the
# docstring). The YOLACT part is make_yolact_fixtures.py's, retuned for 41 classes; the
# flow / SPA part is chosen by measuring the run (see the docstring).
FPN_PRED_GAINS = (2.5, 1.8, 1.0)  # fpn_phase_2.pred_layers.0 (P5), .1 (P4), .2 (P3)
UPFEATURE_GAIN, UPFEATURE_BIAS = 2.0, -0.45
CONF_GAIN = 4.5
BBOX_GAIN = 3.0
MASK_COEFF_GAIN = 4.0
MASK_COEFF_BIAS = 0.6
PROTO_GAIN = math.sqrt(2.0)
PROTO_LAST_GAIN, PROTO_LAST_BIAS = 16.0, -2.0
FLOW_PRE_GAIN = math.sqrt(2.0)  # flow_net_pre_convs (conv + LeakyReLU 0.1)
FLOW_ENC_GAIN = math.sqrt(2.0)  # flow_net.conv1/2/3 (conv + LeakyReLU 0.1)
FLOW_OFFSET_GAIN = 2.0  # flow_net.pred2/pred3.conv: the 2-channel offsets
FLOW_SCALE_GAIN, FLOW_SCALE_BIAS = 0.1, 1.0  # flow_net.pred*.scale: near 1, as the real init
FLOW_BIAS_GAIN = 0.1  # flow_net.pred*.bias
SPA_GAIN = 0.35  # spa.refine_convs.*.0 (conv + LeakyReLU 0.1)


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
        if name == "prediction_layers.0.mask_layer.bias":
            return 0.1, MASK_COEFF_BIAS
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


# State-dict entries that the inference path never reads (checked in run_frames: a forward
# hook on semantic_seg_conv, and FlowNetMiniTRT's compiled code for the P3-level layers).
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
    return net, spec, dropped, state


def crop_frame(img: np.ndarray, shift) -> tuple:
    y = CROP_ORIGIN[0] + shift[0]
    x = CROP_ORIGIN[1] + shift[1]
    h, w = CROP_SIZE
    out = np.ascontiguousarray(img[y:y + h, x:x + w])
    assert out.shape == (h, w, 3), "crop outside the photo"
    return out, [y, x]


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
    """How far the run is from the decisions of traditional_nms / cnms and postprocess,
    counting only the decisions that can change the output (see the docstring)."""
    cfg, detect = ye.cfg, ye.net.detect
    conf = raw["conf"][0]
    cur = conf[:, 1:].t()  # [40, N]
    kept = cur.max(0).values > detect.conf_thresh
    out = {"kept_priors": int(kept.sum())}
    scores = cur[:, kept]
    boxes = decoded[kept] * cfg.max_size  # what traditional_nms hands to cnms
    per_class = []
    for c in range(scores.shape[0]):
        m = scores[c] > detect.conf_thresh
        if bool(m.any()):
            s = scores[c][m]
            preds = torch.cat([boxes[m], s[:, None]], 1).numpy()
            per_class.append((preds, s[torch.from_numpy(ye.cnms.nms(preds, detect.nms_thresh))]))
    s = torch.cat([k for _, k in per_class]).sort(descending=True).values
    out["candidates_after_nms"] = int(s.numel())
    n = min(cfg.max_num_detections, s.numel())
    assert torch.equal(s[:n], dets["score"]), "traditional_nms recomputation differs"
    cut = float(s[n - 1])
    out["score_last"] = cut
    if s.numel() > n:
        out["top_100_gap"] = float(s[n - 1] - s[n])
    gaps = (s[: n - 1] - s[1:n]).double()
    out["min_adjacent_score_gap"] = float(gaps.min()) if n > 1 else None
    out["adjacent_score_gaps_below_1e-4"] = int((gaps < 1e-4).sum())
    # Greedy NMS decides a box from the boxes that score higher, so only candidates scoring
    # at least the last output score matter: cnms on those alone, in float64.
    iou_gap, exact_ties = math.inf, 0
    for preds, _ in per_class:
        top = preds[preds[:, 4] >= np.float32(cut)]
        if len(top) == 0:
            continue
        keep32 = ye.cnms.nms(top, detect.nms_thresh)
        keep64, gap = cnms_f64(top, detect.nms_thresh)
        assert np.array_equal(keep32, keep64), "float64 cnms differs"
        iou_gap = min(iou_gap, gap)
        sv = np.sort(top[:, 4])
        exact_ties += int((sv[1:] == sv[:-1]).sum())
    out["nms_iou_gap"] = iou_gap
    out["class_score_exact_ties"] = exact_ties
    # Per-class `score > conf_thresh`: for the output (scores >= the last output score) and,
    # for the candidate count only, over every class score of the kept priors.
    sc = scores.double()
    out["conf_thresh_gap"] = float((sc[sc >= cut] - detect.conf_thresh).abs().min())
    out["conf_thresh_gap_all"] = float((sc - detect.conf_thresh).abs().min())
    ds = dets["score"].double()
    out["score_ties_below_1e-6"] = [[i, i + 1, float(ds[i] - ds[i + 1])]
                                    for i in range(len(ds) - 1)
                                    if float(ds[i] - ds[i + 1]) < SCORE_TIE]
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


class Recompute:
    """The inference path written out with torch.nn.functional from the generated weights
    (official names), checked against the official intermediates: the semantics of the
    docstring, verified on this run."""

    def __init__(self, state):
        self.S = state
        self.worst = {}

    def conv(self, x, name, stride=1):
        w = self.S[name + ".weight"]
        return F.conv2d(x, w, self.S.get(name + ".bias"), stride, w.shape[-1] // 2)

    def lrelu(self, x):
        return F.leaky_relu(x, 0.1)

    @staticmethod
    def up(x, like):
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def check(self, what, ours, ref):
        err = float((ours - ref).abs().max()) / max(1.0, float(ref.abs().max()))
        self.worst[what] = max(self.worst.get(what, 0.0), err)
        assert err <= 1e-5, f"{what}: recomputation differs by {err:.2e}"

    def phase_2(self, p3, p4, p5, fpn):
        # pred_layers are stored reversed: .0 is P5's, .2 is P3's; ReLU after each.
        outs = [F.relu(self.conv(p, f"fpn_phase_2.pred_layers.{2 - k}"))
                for k, p in enumerate([p3, p4, p5])]
        outs.append(self.conv(outs[-1], "fpn_phase_2.downsample_layers.0", 2))  # P6, no ReLU
        outs.append(self.conv(outs[-1], "fpn_phase_2.downsample_layers.1", 2))  # P7
        for k, (a, b) in enumerate(zip(outs, fpn)):
            self.check(f"phase_2 p{k + 3}", a, b)

    def keyframe(self, c3, c4, c5, feats, lateral, fpn):
        p5 = self.conv(c5, "fpn_phase_1.lat_layers.0")
        p4 = self.up(p5, c4) + self.conv(c4, "fpn_phase_1.lat_layers.1")
        lat3 = self.conv(c3, "fpn_phase_1.lat_layers.2")
        p3 = self.up(p4, c3) + lat3
        for name, a, b in [("p3", p3, feats[0]), ("p4", p4, feats[1]), ("p5", p5, feats[2]),
                           ("lateral", lat3, lateral)]:
            self.check(f"phase_1 {name}", a, b)
        self.phase_2(*feats, fpn)

    def flow_net(self, cur, key):
        pre = [self.lrelu(self.conv(x, "flow_net_pre_convs.convs.0.0")) for x in (cur, key)]
        x = torch.cat(pre, 1)  # target (current frame) first, then source (keyframe)
        enc = []
        for k, stride in [(1, 1), (2, 2), (3, 2)]:
            x = self.lrelu(self.conv(x, f"flow_net.conv{k}.0.0", stride))
            x = self.lrelu(self.conv(x, f"flow_net.conv{k}.1.0"))
            enc.append(x)
        _, o2, o3 = enc

        def pred(x, p):
            return (self.conv(x, p + ".conv"), self.conv(x, p + ".scale"),
                    self.conv(x, p + ".bias"))

        f3 = pred(o3, "flow_net.pred3")
        cat2 = torch.cat([o2, self.conv(self.up(o3, o2), "flow_net.upfeat3"),
                          self.conv(self.up(f3[0], o2), "flow_net.upflow3")], 1)
        f2 = pred(cat2, "flow_net.pred2")
        return pre, [f2, f3]

    @staticmethod
    def warp(x, offset):
        n, _, h, w = offset.shape
        xs = torch.arange(w, dtype=torch.float32).view(1, -1).expand(h, -1)
        ys = torch.arange(h, dtype=torch.float32).view(-1, 1).expand(-1, w)
        grid = torch.stack([xs, ys], 0).unsqueeze(0).expand(n, -1, -1, -1).clone()
        grid *= torch.tensor([2 / (w - 1), 2 / (h - 1)], dtype=torch.float32).view(1, 2, 1, 1)
        grid -= 1
        grid += offset / 8
        return F.grid_sample(x, grid.permute(0, 2, 3, 1), mode="bilinear",
                             padding_mode="zeros", align_corners=True)

    def partial(self, c3, lateral, key, pre_out, flows, warps, scaled, p3, spa_out, fpn):
        """Returns how much SPA's chained resize of the lateral matters at P5."""
        lat3 = self.conv(c3, "fpn_phase_1.lat_layers.2")
        self.check("lateral", lat3, lateral)
        pre, ours = self.flow_net(lateral, key["lateral"])
        self.check("pre_conv current", pre[0], pre_out[0])
        self.check("pre_conv keyframe", pre[1], pre_out[1])
        fin = []
        for lvl, (o, f, (x, _, y), sc, feat) in enumerate(
                zip(ours, flows, warps, scaled, key["feats"][1:])):
            for name, a, b in zip(["offset", "scale", "bias"], o, f):
                self.check(f"p{lvl + 4} {name}", a, b)
            assert torch.equal(x, feat), "deform_op input is not the keyframe's phase-1 level"
            wp = self.warp(feat, f[0])
            self.check(f"p{lvl + 4} warp", wp, y)
            z = y * f[1] + f[2]
            assert torch.equal(z, sc), "scale/bias: (warped * scale) + bias"
            fin.append(z)
        self.check("p3", self.up(fin[0], c3) + lateral, p3)
        c = self.up(lateral, fin[0])
        p4 = fin[0] + self.lrelu(self.conv(torch.cat([fin[0], c], 1), "spa.refine_convs.0.0"))
        c_chain = self.up(c, fin[1])  # SPA resizes the already resized lateral again
        p5 = fin[1] + self.lrelu(self.conv(torch.cat([fin[1], c_chain], 1),
                                           "spa.refine_convs.1.0"))
        self.check("spa p4", p4, spa_out[0])
        self.check("spa p5", p5, spa_out[1])
        p5_direct = fin[1] + self.lrelu(self.conv(
            torch.cat([fin[1], self.up(lateral, fin[1])], 1), "spa.refine_convs.1.0"))
        self.phase_2(p3, spa_out[0], spa_out[1], fpn)
        return float((p5_direct - p5).abs().max())


class Taps:
    """Forward hooks and a deform_op wrapper that record the official intermediates."""

    def __init__(self, ye, net):
        self.rec = {}

        def hook(name):
            def f(mod, inputs, output):
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


def run_frames(ye, net, transform, state):
    import cv2

    ye.net = net  # for margins
    img = cv2.imread(os.path.join(ROOT, "assets", PHOTO))  # BGR uint8, as VideoCapture.read
    taps = Taps(ye, net)
    recompute = Recompute(state)
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
            recompute.keyframe(c3, c4, c5, feats, net_outs["lateral"], net_outs["outs_phase_2"])
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
            st["spa_p5_if_lateral_resized_once_max_abs_diff"] = recompute.partial(
                c3, lateral, moving_statistics, [pre_cur, pre_key], flows, warps, [p4s, p5s],
                p3_in, spa_out, net_outs["outs_phase_2"])
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
    print("recomputation (F ops from the weights) vs official, worst relative error:",
          {k: float(f"{v:.1e}") for k, v in recompute.worst.items()})
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
        net, spec, dropped, state = build(ye, tmp)
        with patched(torch.Tensor, "cuda", lambda self, *a, **k: self):  # patch 2
            transform = ye.augmentations.FastBaseTransform()
        frames, priors_doc, stats = run_frames(ye, net, transform, state)
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
