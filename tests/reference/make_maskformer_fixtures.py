#!/usr/bin/env python3
"""Writes plugins/detr/tests/fixtures/maskformer_r50.json: the official MaskFormer
(facebookresearch/MaskFormer at commit da3e60d8) R50 COCO-panoptic model, built exactly as
`train_net.py --eval-only --config-file configs/coco-panoptic/maskformer_panoptic_R50_bs64_554k.yaml`
builds it, run on CPU with generated weights on real photos through Detectron2's own test-time
input pipeline and MaskFormer's own inference (semantic + panoptic).

Setup as in make_d2_trunk_fixtures.py / make_detr_fixtures.py (pip packages: torch,
torchvision, numpy, Pillow and Detectron2's pure-Python dependencies fvcore, iopath, yacs,
omegaconf, termcolor, tabulate, cloudpickle, ...; importing mask_former also needs timm
(swin.py) and scipy (matcher.py)). Neither Detectron2 nor MaskFormer is
installed: their source trees are extracted and put first on sys.path; Detectron2's compiled
extension `detectron2._C` is neither built nor imported (asserted):

    mkdir -p /tmp/detectron2 /tmp/maskformer
    git --git-dir=<mirror of facebookresearch/detectron2>/repo archive 02b5c4e2 \
        | tar -x -C /tmp/detectron2
    git --git-dir=<mirror of facebookresearch/MaskFormer>/repo archive da3e60d8 \
        | tar -x -C /tmp/maskformer
    DETECTRON2_REPO=/tmp/detectron2 MASKFORMER_REPO=/tmp/maskformer \
        target/venv-torch/bin/python tests/reference/make_maskformer_fixtures.py

Run by developers, not by CI (CI reads the committed fixture). About half a minute on two
threads (torch.set_num_threads(2)), the float64 run included. Running it twice writes the
same file, byte for byte. If the bare git mirrors named by DETECTRON2_GIT_DIR /
MASKFORMER_GIT_DIR (defaults /work/.mirror/facebookresearch+{detectron2,MaskFormer}/repo)
exist, the script first checks that
the files it runs (every mask_former/**.py, train_net.py, the two configs, and the Detectron2
files in D2_CHECKED_FILES) are byte-identical to those commits'; otherwise it prints a note.

Model (what train_net.py's `setup` + `Trainer.build_model` do, minus logging):
    cfg = get_cfg(); add_deeplab_config(cfg); add_mask_former_config(cfg)
    cfg.merge_from_file("configs/coco-panoptic/maskformer_panoptic_R50_bs64_554k.yaml")
    cfg.merge_from_list(["MODEL.DEVICE", "cpu"]); cfg.freeze()
    model = build_model(cfg).eval()          # detectron2.modeling.build_model
`add_deeplab_config` (detectron2.projects.deeplab) is needed because the YAML sets
RESNETS.STEM_TYPE / RES5_MULTI_GRID, keys that only it defines (both unused by the ResNet).
Everything runs under torch.no_grad(). The resulting structure (read from the code at these
commits and asserted where cheap):
  - MaskFormer meta-arch: images = [(x["image"] - pixel_mean) / pixel_std] (PIXEL_MEAN
    [123.675, 116.28, 103.53], PIXEL_STD [58.395, 57.12, 57.375], RGB order, INPUT.FORMAT "RGB"),
    ImageList.from_tensors(images, size_divisibility=0): no padding (MASK_FORMER.
    SIZE_DIVISIBILITY 0, "COCO model should not pad image"). pixel_mean / pixel_std are
    non-persistent buffers: NOT in the state dict.
  - Backbone: Detectron2 ResNet-50 (`build_resnet_backbone`), RESNETS.NORM "FrozenBN" (the
    default; the config's `NORM: "SyncBN"` is commented out), i.e. FrozenBatchNorm2d with eps
    1e-5; STRIDE_IN_1X1 False (stride on the 3x3 conv, torchvision's v1.5), FREEZE_AT 0 (no
    effect at inference), OUT_FEATURES res2..res5 (strides 4..32, 256/512/1024/2048 ch). Same
    structure as make_d2_trunk_fixtures.py's "torchvision" variant, prefix "backbone." instead
    of "backbone.bottom_up.".
  - sem_seg_head = MaskFormerHead: pixel_decoder = TransformerEncoderPixelDecoder(conv_dim
    CONVS_DIM 256, mask_dim MASK_DIM 256, norm "GN" = nn.GroupNorm(32, 256), eps 1e-5; the
    3x3 convs and 1x1 adapters have no bias (norm is set), mask_features and input_proj do).
    forward_features, top-down over res5, res4, res3, res2:
        res5: t = input_proj(res5)                     (1x1 conv 2048->256, bias)
              pos = PositionEmbeddingSine(128, normalize=True)(res5)
              t = TransformerEncoderOnly(t, mask=None, pos)   (6 post-norm DETR encoder
                    layers, d 256, 8 heads, FFN 2048 ReLU, dropout inactive, NO final norm)
              transformer_encoder_features = t
              y = layer_4(t)                           (3x3 256->256, GN, ReLU)
        res4: y = adapter_3(res4) + F.interpolate(y, size=res4's, mode="nearest");
              y = layer_3(y)                           (adapter: 1x1 1024->256 + GN, no ReLU;
                                                        layer: 3x3 + GN + ReLU)
        res3: adapter_2 (512->256), layer_2;  res2: adapter_1 (256->256), layer_1
        mask_features = mask_features(y)               (3x3 256->256, bias, no norm/act)
    The Conv2d wrapper applies conv -> norm -> activation. "nearest" is called with an explicit
    size (not a scale factor): torch computes src = min(floor(dst * (float)(in / out)),
    in - 1) (for every size here the same as the exact floor(dst * in / out)), which for
    non-2x sizes (chelsea: 76 -> 151, 151 -> 301) repeats some rows / columns.
    Transformer encoder layer (post-norm): q = k = src + pos; src = norm1(src +
    self_attn(q, k, value=src)); src = norm2(src + linear2(relu(linear1(src)))).
    PositionEmbeddingSine(num_pos_feats=128, temperature=10000, normalize=True, scale=2*pi):
    y_embed[i] = (i + 1) / (H + 1e-6) * 2*pi, x_embed likewise; dim_t[k] = 10000 **
    (2 * (k // 2) / 128); channels = [pos_y (128: sin at even k, cos at odd k, interleaved),
    pos_x (128)], all in float32.
  - predictor = TransformerPredictor(in_channels = CONVS_DIM 256, since TRANSFORMER_IN_FEATURE
    is "transformer_encoder"): input_proj is an empty nn.Sequential (identity: 256 == hidden
    256, ENFORCE_INPUT_PROJ False); its own Transformer has ENC_LAYERS 0 encoder layers and no
    encoder norm (pre_norm False), so memory = transformer_encoder_features unchanged; pos =
    its own PositionEmbeddingSine(128, normalize=True) of that map; 6 DETR post-norm decoder
    layers (100 queries, tgt = 0, query_pos = query_embed.weight, self-attn q = k = tgt +
    query_pos, value tgt; cross-attn query tgt + query_pos, key memory + pos, value memory;
    FFN 2048 ReLU; norm1/2/3), the decoder norm (LayerNorm, eps 1e-5) applied to every
    layer's output (return_intermediate, DEEP_SUPERVISION True; the last entry is
    norm(last output)). pred_logits = class_embed(hs[-1]) ([100, 134]: 133 classes +
    no-object); mask_embed = MLP(256, 256, 256, 3 layers, ReLU after the first two) of hs;
    pred_masks = einsum("lbqc,bchw->lbqhw", mask_embed, mask_features)[-1] ([100, H/4, W/4],
    no bias, no sigmoid). aux outputs are built but unused.
  - Inference (MaskFormer.forward, eval): pred_masks -> F.interpolate(size = the (unpadded)
    input size, bilinear, align_corners False) -> since sem_seg_postprocess_before_inference
    = SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE (False) or PANOPTIC_ON (True) = True:
    sem_seg_postprocess(masks, image_size, height, width) = crop [:, :h_in, :w_in] (no-op
    here) then F.interpolate(size=(height, width) = the original size, bilinear,
    align_corners False): two bilinear resizes, H/4 -> H -> original. Then
      sem_seg = einsum("qc,qhw->chw", softmax(pred_logits)[:, :-1], sigmoid(masks))
              [133, height, width] (not an argmax; the fixture stores its argmax too);
      panoptic_inference: scores, labels = softmax(pred_logits).max(-1) (over all 134);
      keep = (labels != 133) & (scores > OBJECT_MASK_THRESHOLD 0.8); prob = scores[keep] *
      sigmoid(masks[keep]); ids = prob.argmax(0); for each kept k in query order:
      mask_area = #(ids == k), original_area = #(sigmoid(mask_k) >= 0.5); skipped unless both
      > 0 and mask_area / original_area >= OVERLAP_THRESHOLD 0.8; a stuff class (not in
      metadata.thing_dataset_id_to_contiguous_id.values()) seen before is painted with that
      class's first segment id (merged, no new segments_info entry); otherwise id += 1,
      panoptic_seg[ids == k] = id, segments_info += {id, isthing, category_id}. Pixels whose
      argmax query was skipped stay 0. panoptic_seg is int32 [height, width].
    metadata = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]) = "coco_2017_train_panoptic" (the
    code uses TRAIN[0], not the test set; its thing ids are asserted equal to
    "coco_2017_val_panoptic"'s): Detectron2's "standard" COCO panoptic metadata, contiguous
    ids 0..132 in COCO_CATEGORIES order, things = 0..79, stuff = 80..132.

Patches: none. Nothing of Detectron2 or MaskFormer is stubbed, patched or monkey-patched.
Importing detectron2.data registers the builtin datasets (and mask_former.data its own) under
DETECTRON2_DATASETS (default "datasets"): registration only stores paths and reads no file,
so no dummy path is needed and no dataset is present. The only additions are warnings
filters for FutureWarnings that change nothing computed (`torch.jit.script` deprecation,
timm's "Importing from timm.models.layers is deprecated" raised by mask_former's swin.py).
Intermediate tensors are read with forward hooks only.

Weights. Every tensor of `model.state_dict()` (482 tensors) except `criterion.empty_weight`
is generated from its *name* exactly as make_maskrcnn_fixtures.py does (`generate` imported
from it, reproduced bit for bit by `kernels::weights::generated_tensor`):

    seed  = FNV-1a 64 of the full state-dict name (e.g. "backbone.stem.conv1.weight")
    z_i   = splitmix64(seed + (i + 1) * 0x9E3779B97F4A7C15)     for element i (row-major)
    u_i   = float32(z_i >> 40) / 2^24                            exact, in [0, 1)
    value = (u_i * 2 - 1) * a + b                                each step rounded to float32

The names are the model's own, i.e. those of the official checkpoints' "model" dict
(backbone.stem.conv1.weight, backbone.res2.0.conv1.norm.weight, sem_seg_head.pixel_decoder.
adapter_1.weight, sem_seg_head.predictor.transformer.decoder.layers.0.self_attn.in_proj_weight,
...). `criterion.empty_weight` (SetCriterion's cross-entropy class weights, ones with the
no-object entry NO_OBJECT_WEIGHT 0.1; a persistent buffer, so DetectionCheckpointer saves it
with the model (no released checkpoint was at hand to confirm it is in theirs); unused at
inference) keeps its constructed value and is listed under "not_generated". The generated
tensors are loaded with `load_state_dict(strict=True)` into a copy of the model's own state
dict: that keeps its `_metadata` (module versions); a plain dict would make
MaskFormerHead._load_from_state_dict (version None < 2) rename every sem_seg_head.* key
outside sem_seg_head.predictor to sem_seg_head.pixel_decoder.<rest> (so
sem_seg_head.pixel_decoder.pixel_decoder.*) and the strict load fail. (a, b) per tensor is
stored in the fixture; `range_of`:
  - backbone FrozenBatchNorm2d (backbone.*.norm.*): weight 0.75 +- 0.25, bias and
    running_mean +- 0.1, running_var 1 +- 0.5;
  - GroupNorm (pixel_decoder.{adapter,layer}_N.norm.*): weight 1 +- 0.25, bias +- 0.1;
  - LayerNorm (norm1/norm2/norm3 of every layer, predictor.transformer.decoder.norm):
    weight 1 +- 0.25, bias +- 0.1;
  - conv and linear weights (incl. in_proj_weight [768, 256], fan_in 256): unit-variance gain
    a = float32(sqrt(3 / fan_in)) (fan_in = in_channels * kh * kw), b = 0; a "gain g" below
    means a = float32(g * sqrt(3 / fan_in));
  - every bias (conv, linear, in_proj_bias): +- 0.1;
  - tuned (constants after the imports), chosen by measuring the run. With unit gains
    everywhere the 100 queries are copies of each other (the decoder output varies by 0.04% of
    its rms between queries; every query gets the same class with score ~0.05, none passes
    0.8, no panoptic segment), for the reasons make_detr_fixtures.py gives (a random ResNet's
    res5 varies little over the image, 14-19% of its rms; the encoder's near-uniform attention
    averages that further; the decoder reads memory only through values: query_embed enters
    only the attention weights, so the queries can only differ by reading different parts of
    a memory that varies over the image). Whatever amplifies those differences amplifies the
    float32 rounding they carry about as much, so the ranges are a compromise between
    queries that differ and a model that stays well conditioned (see "Conditioning" below:
    every stored tensor within 2e-5 of a float64 run). An earlier tuning (cross-attention
    in_proj gain 4 and out_proj gain 3, encoder FFN out gain 12, encoder attention out gain
    0.3, class gain 4.5 and bias +- 0.5, query_embed +- 1.7, unit mask_embed) gave varied
    classes and masks but was ill conditioned: its nearly one-hot cross-attention moved the
    decoder output by up to 3e-2 between float32 and float64 (logits by 0.13 at scale 19). Now:
      backbone convs (every 4-D backbone.*.weight): gain BACKBONE_CONV_GAIN 1.2 instead of 1:
        res5 varies over the image by ~28% of its rms (14-19% at gain 1) at about the same
        relative rounding error (float64 check 3-4e-6);
      pixel_decoder.transformer.encoder.layers.N.self_attn.out_proj.weight: gain 0.1 (the
        near-uniform self-attention adds an image-wide mean);
      ...encoder.layers.N.linear1.bias: -1 +- 0.1 (sparse FFN hidden units) and
      ...encoder.layers.N.linear2.weight: gain 3 (the thresholded FFN dominates the
        residual): transformer_encoder_features vary over the image by ~45% of their rms
        (gain 12 and bias -1.5 gave 60-74% but five times the rounding error);
      predictor.query_embed.weight: +- 3;
      predictor.transformer.decoder.layers.N.multihead_attn.in_proj_weight: gain 1.25 (broad
        cross-attention: the q.k logits stay small, so rounding in memory or queries moves
        the softmax little; on a similar memory the decoder's float32 error grew ~1.5x at
        gain 2, ~5x at 3 and ~12x at 4) and ...multihead_attn.out_proj.weight: gain 2.5;
      ...decoder.layers.N.linear1.bias: -0.75 +- 0.1 and ...linear2.weight: gain 4 (a sparse
        FFN, as in the encoder, amplifies what differs between queries);
      predictor.transformer.decoder.norm.bias: +- 0.2;
        the decoder outputs still share most of their norm: the part that differs between
        queries is 28-33% of the rms (65-73% before);
      predictor.class_embed.weight: gain 10 and class_embed.bias +- 15: the shared part of the
        decoder output maps to one logit vector (spread ~9.5 over the classes, against ~3 for
        the part that differs between queries) that alone gives most queries the same class
        (a scan over gains 4.5-10 and biases +- 0.5-3 found 1-3 classes per photo, rarely
        stuff); the wide bias puts the classes with the largest generated biases
        (128 stuff, 44 thing, 63 thing, 124 stuff, 91 stuff, ...) near the top, and the
        query-specific part decides among them: 64 / 55 of 100 queries pass 0.8, with 6
        classes (44, 63, 34 thing; 113, 128, 99 stuff) on chelsea and 4 (13, 62 thing; 113,
        99 stuff) on coffee; the largest |logit| of a query is 26-37 (so the Rust test's
        1e-4 of it is ~3e-3 absolute);
      predictor.mask_embed.layers.0.bias: -0.5 +- 0.1 (sparser hidden units: masks that
        differ a little more between queries) and mask_embed.layers.2.weight: gain 0.2: mask
        logits of rms ~2 (at most 7.3) instead of ~10, and with them the absolute rounding
        error of their 256-term dot products, which sem_seg inherits through the sigmoid
        (at gain 0.25 coffee's sem_seg error is 2.5e-5).
    The result (printed by the script): 4 panoptic segments per photo: chelsea 44 'spoon'
    (two segments), 113 'water-other' (stuff), 63 'laptop'; coffee 113 'water-other' (stuff,
    seven queries merged into one segment), 13 'bench', 99 'river' (stuff), 62 'tv' (90 px).
    The masks share most of their shape (they differ between queries by ~15% of their
    magnitude; the kept queries' positive parts are small, 6-1855 px), so the
    panoptic argmax is decided by small differences (pixels within 1e-4 of a tie: 71 and 155)
    and sem_seg's argmax is a single class per photo (44, 113): the semantic-label check is
    weak; the sem_seg values are still compared. The smallest overlap margin is coffee's
    query 71 (40 of 44 px, 4.8 px from the 0.8 test; merged stuff, so it changes no segment),
    then query 92 (the 'tv' segment, 90 of 95 px, 14 px from the test).

Conditioning (the float64 check). The same model is deep-copied and converted with .double()
before any hook is registered (every floating parameter and buffer becomes float64, asserted:
FrozenBatchNorm2d's weight / bias / running_mean / running_var, GroupNorm and LayerNorm
weights, pixel_mean / pixel_std, ...; F.batch_norm, nn.GroupNorm and nn.LayerNorm then run
in float64) and run on the same input (the uint8 image as float64). The only float32 left is
MaskFormer's PositionEmbeddingSine, which computes in float32 by construction (cumsum with
dtype=torch.float32, dim_t float32): the same values in both runs, promoted to float64 when
added. Per stored tensor the fixture records max |f32 - f64| / max(1, |f64|) over all its
elements (pred_logits: / max(1, the query's largest |f64| logit), as the Rust test scales
them) as "f64_relative_error" and the script prints it with the share of pixels where the
float64 run's panoptic ids agree and whether its segments_info is the same. With the ranges
above every value is <= 2e-5 (chelsea / coffee): res5 3.5e-6 / 4.2e-6,
transformer_encoder_features 1.4e-5 / 1.5e-5, mask_features 5.3e-6 / 4.5e-6, decoder_output
7.9e-6 / 6.9e-6, pred_masks 9.7e-6 / 1.1e-5, pred_logits 2.6e-6 / 2.2e-6, sem_seg 1.2e-5 /
2.0e-5 (1.95e-5); the float64 panoptic ids agree on 100% of the pixels, same segments. A
float32 re-implementation that rounds differently should therefore stay well inside the Rust
test's 1e-4.

Input, exactly the evaluation's (DefaultTrainer.test -> build_detection_test_loader ->
DatasetMapper(cfg, is_train=False)): the mapper is called on {"file_name", "height", "width",
"image_id"}; it reads `detection_utils.read_image(path, format="RGB")` (uint8 HWC, EXIF
transpose), applies ResizeShortestEdge(short_edge_length=(800, 800) = MIN_SIZE_TEST,
max_size=1333 = MAX_SIZE_TEST, sample_style "choice"): scale = 800 / min(h, w); (newh, neww) =
(800, scale * w) if h < w else (scale * h, 800); if max(newh, neww) > 1333 both are multiplied
by 1333 / max(newh, neww); then neww = int(neww + 0.5), newh = int(newh + 0.5); the
ResizeTransform resizes the uint8 image with PIL `Image.resize((neww, newh), BILINEAR)`; and
returns image = torch.as_tensor(np.ascontiguousarray(img.transpose(2, 0, 1))), a uint8
[3, H, W] tensor, which `model([{"image", "height", "width"}])` turns to float32 by
(x - pixel_mean) (exact, the same as passing x.float()). height / width = the original size,
so the outputs are at the original size. Photos (assets/): chelsea.png (264x397 -> 800x1203:
odd sizes down the pyramid, res2 200x301, res3 100x151, res4 50x76, res5 25x38) and
coffee.png (240x360 -> 800x1200).

JSON (floats with 9 significant digits, enough to round-trip float32; weight ranges exact):
  generator; reference {maskformer (full commit), detectron2 (full commit), torch,
  torchvision, numpy, pillow}; config (the cfg values above, backbone norm and eps, GN groups
  and eps, LayerNorm eps, thing_ids = the contiguous ids that are things, class_names
  [133]); weights [{name, shape, a, b}] in state_dict order; not_generated; state_dict_has
  {pixel_mean, pixel_std} (false); cases, one per photo:
    photo, original_size [h, w], input_size [H, W] (after the resize; = the network input,
    no padding), input (summary of the float [3, H, W] image before normalisation),
    res5 ([2048, H5, W5], H5 = the size after the backbone's five stride-2 steps, 25x38 for
    800x1203), transformer_encoder_features ([256, H5, W5], the pixel decoder's
    TransformerEncoderOnly output = the predictor's memory), mask_features ([256, H2, W2],
    stride 4: 200x301), decoder_output (hs[-1][0], [100, 256], after the decoder norm;
    channel_axis 1, channel_means = per-column means), pred_masks ([100, H2, W2]) -- summaries
    with the batch axis dropped; pred_logits [100 * 134] in full (row-major); sem_seg (summary
    of the [133, h, w] output) and sem_seg_argmax (its argmax over classes as flat run-length
    pairs [value0, count0, value1, count1, ...] over the row-major [h, w] map); panoptic_seg
    {shape [h, w], size "original (height, width)", rle (flat pairs as above over the int32
    id map)}; segments_info (as returned: id, isthing, category_id); kept (per query that
    passed the 0.8 score test, in query order: query, label, score, isthing, mask_area,
    original_area, segment_id (null if the overlap test skipped it; shared by merged stuff));
    margins (`margins`: score_threshold = min over the 100 queries of |score - 0.8|;
    kept_top2_prob_gap = min over kept queries of the best minus second-best softmax
    probability; overlap_ratio = min over kept queries with both areas > 0 of
    |mask_area / original_area - 0.8|; kept_mask_min_abs_logit and
    kept_mask_abs_logit_below_1e-3 = the kept queries' upsampled mask logits nearest the
    sigmoid >= 0.5 test; panoptic_argmax / sem_seg_argmax = per pixel log(best) -
    log(second best) of score * sigmoid(mask) over the kept queries / of the [133] sem_seg
    values: its minimum and how many pixels are below 1e-4, 1e-3, 1e-2); f64_relative_error
    {res5, transformer_encoder_features, mask_features, decoder_output, pred_masks,
    pred_logits, sem_seg} (see "Conditioning").
Summaries are make_maskrcnn_fixtures.summary: shape, channel_axis, sum and abs_sum (float64),
min, max, channel_means (mean over all axes but the channel axis), values at SAMPLES fixed
random flat indices (np.random.default_rng(case number)) plus the first and last, `indices`
sorted and unique.
"""

import copy
import glob
import json
import math
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import PIL
import PIL.Image
import torch
import torchvision
from torch.nn import functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_maskrcnn_fixtures import generate  # noqa: E402  (fnv1a64 + splitmix_uniform)

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "plugins", "detr", "tests", "fixtures")
DETECTRON2_REPO = os.environ.get("DETECTRON2_REPO", "/tmp/detectron2")
DETECTRON2_COMMIT = "02b5c4e295e990042a714712c21dc79b731e8833"
DETECTRON2_GIT_DIR = os.environ.get(
    "DETECTRON2_GIT_DIR", "/work/.mirror/facebookresearch+detectron2/repo"
)
MASKFORMER_REPO = os.environ.get("MASKFORMER_REPO", "/tmp/maskformer")
MASKFORMER_COMMIT = "da3e60d85fdeedcb31476b5edd7d328826ce56cc"
MASKFORMER_GIT_DIR = os.environ.get(
    "MASKFORMER_GIT_DIR", "/work/.mirror/facebookresearch+MaskFormer/repo"
)
CONFIG_FILE = "configs/coco-panoptic/maskformer_panoptic_R50_bs64_554k.yaml"
D2_CHECKED_FILES = [
    "detectron2/modeling/backbone/resnet.py",
    "detectron2/modeling/backbone/backbone.py",
    "detectron2/modeling/backbone/build.py",
    "detectron2/modeling/meta_arch/build.py",
    "detectron2/modeling/postprocessing.py",
    "detectron2/layers/batch_norm.py",
    "detectron2/layers/wrappers.py",
    "detectron2/structures/image_list.py",
    "detectron2/config/defaults.py",
    "detectron2/data/dataset_mapper.py",
    "detectron2/data/detection_utils.py",
    "detectron2/data/transforms/augmentation_impl.py",
    "detectron2/data/transforms/transform.py",
    "detectron2/data/datasets/builtin.py",
    "detectron2/data/datasets/builtin_meta.py",
    "detectron2/data/datasets/coco_panoptic.py",
    "projects/DeepLab/deeplab/config.py",
]
PHOTOS = ["chelsea.png", "coffee.png"]
SAMPLES = 256
NUM_CLASSES = 133
THRESHOLD = 0.8  # OBJECT_MASK_THRESHOLD and OVERLAP_THRESHOLD (both 0.8)

# Tuned ranges (see the docstring): a gain g gives a = g * sqrt(3 / fan_in), b = 0; a pair is
# (a, b).
BACKBONE_CONV_GAIN = 1.2  # every backbone conv weight (4-D backbone.*.weight)
ENC_ATTN_OUT_GAIN = 0.1  # pixel_decoder.transformer.encoder.layers.N.self_attn.out_proj.weight
ENC_FFN_BIAS = (0.1, -1.0)  # pixel_decoder.transformer.encoder.layers.N.linear1.bias (a, b)
ENC_FFN_OUT_GAIN = 3.0  # pixel_decoder.transformer.encoder.layers.N.linear2.weight
QUERY_EMBED_A = 3.0  # predictor.query_embed.weight: +- QUERY_EMBED_A
XATTN_IN_GAIN = 1.25  # predictor.transformer.decoder.layers.N.multihead_attn.in_proj_weight
XATTN_OUT_GAIN = 2.5  # predictor.transformer.decoder.layers.N.multihead_attn.out_proj.weight
DEC_FFN_BIAS = (0.1, -0.75)  # predictor.transformer.decoder.layers.N.linear1.bias (a, b)
DEC_FFN_OUT_GAIN = 4.0  # predictor.transformer.decoder.layers.N.linear2.weight
DEC_NORM_BIAS = (0.2, 0.0)  # predictor.transformer.decoder.norm.bias (a, b)
CLASS_GAIN = 10.0  # predictor.class_embed.weight
CLASS_BIAS = (15.0, 0.0)  # predictor.class_embed.bias (a, b)
MASK_EMBED_BIAS0 = (0.1, -0.5)  # predictor.mask_embed.layers.0.bias (a, b)
MASK_EMBED_OUT_GAIN = 0.2  # predictor.mask_embed.layers.2.weight

for _path in (DETECTRON2_REPO, MASKFORMER_REPO):
    if not os.path.isdir(_path):
        sys.exit(f"no source tree at {_path}: see the docstring")
sys.path.insert(0, DETECTRON2_REPO)
sys.path.insert(0, MASKFORMER_REPO)
warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit\.script.*")
warnings.filterwarnings("ignore", category=FutureWarning, message=r".*timm\.models\.layers.*")

from detectron2.config import get_cfg  # noqa: E402
from detectron2.data import DatasetMapper, MetadataCatalog  # noqa: E402
from detectron2.layers import FrozenBatchNorm2d  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.modeling.postprocessing import sem_seg_postprocess  # noqa: E402
from detectron2.projects.deeplab import add_deeplab_config  # noqa: E402
from mask_former import add_mask_former_config  # noqa: E402


# --------------------------------------------------------------------------------------


def check_sources():
    checks = [
        (DETECTRON2_GIT_DIR, DETECTRON2_COMMIT, DETECTRON2_REPO, D2_CHECKED_FILES),
        (
            MASKFORMER_GIT_DIR,
            MASKFORMER_COMMIT,
            MASKFORMER_REPO,
            sorted(
                os.path.relpath(p, MASKFORMER_REPO)
                for p in glob.glob(os.path.join(MASKFORMER_REPO, "mask_former", "**", "*.py"), recursive=True)
            )
            + ["train_net.py", CONFIG_FILE, "configs/coco-panoptic/Base-COCO-PanopticSegmentation.yaml"],
        ),
    ]
    for git_dir, commit, repo, files in checks:
        if not os.path.isdir(git_dir):
            print(f"note: no git mirror at {git_dir}; {repo} not verified")
            continue
        for path in files:
            want = subprocess.run(
                ["git", f"--git-dir={git_dir}", "show", f"{commit}:{path}"],
                check=True,
                capture_output=True,
            ).stdout
            with open(os.path.join(repo, path), "rb") as f:
                assert f.read() == want, f"{repo}/{path} differs from {commit}"


def f9(x) -> float:
    """9 significant digits (enough to round-trip a float32)."""
    return float(f"{float(x):.9g}")


def f32(x: float) -> float:
    return float(np.float32(x))


def gain(g: float, shape) -> float:
    return f32(g * math.sqrt(3.0 / int(np.prod(shape[1:]))))


def range_of(name: str, shape) -> tuple:
    """(a, b) of a state-dict tensor: values uniform in [b - a, b + a)."""
    enc = "sem_seg_head.pixel_decoder.transformer.encoder.layers."
    dec = "sem_seg_head.predictor.transformer.decoder.layers."
    if name.startswith("backbone.") and ".norm." in name:  # FrozenBatchNorm2d
        assert len(shape) == 1, name
        if name.endswith(".running_var"):
            return 0.5, 1.0
        if name.endswith(".weight"):
            return 0.25, 0.75
        return 0.1, 0.0  # bias, running_mean
    if name.startswith("backbone.") and len(shape) == 4:  # the backbone's convs
        return gain(BACKBONE_CONV_GAIN, shape), 0.0
    if name == "sem_seg_head.predictor.transformer.decoder.norm.bias":
        return DEC_NORM_BIAS
    if name.startswith("sem_seg_head.") and len(shape) == 1 and (
        ".norm." in name or ".norm1." in name or ".norm2." in name or ".norm3." in name
    ):  # GroupNorm (pixel decoder) and LayerNorm (transformers)
        return (0.25, 1.0) if name.endswith(".weight") else (0.1, 0.0)
    if name == "sem_seg_head.predictor.query_embed.weight":
        return QUERY_EMBED_A, 0.0
    if name.startswith(enc):
        if name.endswith(".self_attn.out_proj.weight"):
            return gain(ENC_ATTN_OUT_GAIN, shape), 0.0
        if name.endswith(".linear1.bias"):
            return ENC_FFN_BIAS
        if name.endswith(".linear2.weight"):
            return gain(ENC_FFN_OUT_GAIN, shape), 0.0
    if name.startswith(dec):
        if name.endswith(".multihead_attn.in_proj_weight"):
            return gain(XATTN_IN_GAIN, shape), 0.0
        if name.endswith(".multihead_attn.out_proj.weight"):
            return gain(XATTN_OUT_GAIN, shape), 0.0
        if name.endswith(".linear1.bias"):
            return DEC_FFN_BIAS
        if name.endswith(".linear2.weight"):
            return gain(DEC_FFN_OUT_GAIN, shape), 0.0
    if name == "sem_seg_head.predictor.class_embed.weight":
        return gain(CLASS_GAIN, shape), 0.0
    if name == "sem_seg_head.predictor.class_embed.bias":
        return CLASS_BIAS
    if name == "sem_seg_head.predictor.mask_embed.layers.0.bias":
        return MASK_EMBED_BIAS0
    if name == "sem_seg_head.predictor.mask_embed.layers.2.weight":
        return gain(MASK_EMBED_OUT_GAIN, shape), 0.0
    if len(shape) in (2, 4):  # conv and linear weights: unit-variance gain
        return gain(1.0, shape), 0.0
    if len(shape) == 1:  # biases
        return 0.1, 0.0
    raise ValueError(f"no range for {name} {shape}")


def summary(t: torch.Tensor, rng: np.random.Generator, channel_axis: int = 0) -> dict:
    """make_maskrcnn_fixtures.summary (floats to 9 digits); channel_means over `channel_axis`."""
    a = t.detach().cpu().numpy().astype(np.float32)
    flat = a.reshape(-1)
    idx = np.unique(np.concatenate([[0, flat.size - 1], rng.integers(0, flat.size, SAMPLES)]))
    moved = np.moveaxis(a, channel_axis, 0)
    per_channel = moved.reshape(moved.shape[0], -1).astype(np.float64).mean(axis=1)
    return {
        "shape": list(a.shape),
        "channel_axis": channel_axis,
        "sum": f9(flat.astype(np.float64).sum()),
        "abs_sum": f9(np.abs(flat.astype(np.float64)).sum()),
        "min": f9(flat.min()),
        "max": f9(flat.max()),
        "channel_means": [f9(x) for x in per_channel],
        "indices": [int(i) for i in idx],
        "values": [f9(flat[i]) for i in idx],
    }


def rle(labels: torch.Tensor) -> list:
    """Flat run-length pairs [value0, count0, value1, count1, ...] over the row-major
    flattening (counts sum to the number of pixels)."""
    flat = labels.reshape(-1).numpy().astype(np.int64)
    starts = np.concatenate([[0], np.nonzero(np.diff(flat))[0] + 1])
    counts = np.diff(np.concatenate([starts, [flat.size]]))
    return [int(v) for s, c in zip(starts, counts) for v in (flat[s], c)]


def top2_log_gap(x: torch.Tensor) -> torch.Tensor:
    """Per pixel: log(best) - log(second best) over axis 0 (a relative margin)."""
    t = x.topk(2, dim=0).values.double()
    return t[0].log() - t[1].log()


def build():
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_mask_former_config(cfg)
    cfg.merge_from_file(os.path.join(MASKFORMER_REPO, CONFIG_FILE))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu"])
    cfg.freeze()
    model = build_model(cfg)
    model.eval()
    return cfg, model


def config_of(cfg, model) -> dict:
    r, h, mf = cfg.MODEL.RESNETS, cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.MASK_FORMER
    meta = model.metadata
    thing_ids = sorted(meta.thing_dataset_id_to_contiguous_id.values())
    return {
        "config_file": CONFIG_FILE,
        "MODEL.META_ARCHITECTURE": cfg.MODEL.META_ARCHITECTURE,
        "MODEL.PIXEL_MEAN": [float(x) for x in cfg.MODEL.PIXEL_MEAN],
        "MODEL.PIXEL_STD": [float(x) for x in cfg.MODEL.PIXEL_STD],
        "INPUT.FORMAT": cfg.INPUT.FORMAT,
        "INPUT.MIN_SIZE_TEST": cfg.INPUT.MIN_SIZE_TEST,
        "INPUT.MAX_SIZE_TEST": cfg.INPUT.MAX_SIZE_TEST,
        "MODEL.BACKBONE.NAME": cfg.MODEL.BACKBONE.NAME,
        "MODEL.BACKBONE.FREEZE_AT": cfg.MODEL.BACKBONE.FREEZE_AT,
        "MODEL.RESNETS.DEPTH": r.DEPTH,
        "MODEL.RESNETS.NORM": r.NORM,
        "MODEL.RESNETS.STRIDE_IN_1X1": r.STRIDE_IN_1X1,
        "MODEL.RESNETS.OUT_FEATURES": list(r.OUT_FEATURES),
        "MODEL.RESNETS.RES5_DILATION": r.RES5_DILATION,
        "backbone_norm": "FrozenBatchNorm2d",
        "backbone_norm_eps": 1e-5,
        "MODEL.SEM_SEG_HEAD.NAME": h.NAME,
        "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME": h.PIXEL_DECODER_NAME,
        "MODEL.SEM_SEG_HEAD.IN_FEATURES": list(h.IN_FEATURES),
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES": h.NUM_CLASSES,
        "MODEL.SEM_SEG_HEAD.CONVS_DIM": h.CONVS_DIM,
        "MODEL.SEM_SEG_HEAD.MASK_DIM": h.MASK_DIM,
        "MODEL.SEM_SEG_HEAD.NORM": h.NORM,
        "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS": h.TRANSFORMER_ENC_LAYERS,
        "gn_groups": 32,
        "gn_eps": 1e-5,
        "layer_norm_eps": 1e-5,
        "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE": mf.TRANSFORMER_IN_FEATURE,
        "MODEL.MASK_FORMER.HIDDEN_DIM": mf.HIDDEN_DIM,
        "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": mf.NUM_OBJECT_QUERIES,
        "MODEL.MASK_FORMER.NHEADS": mf.NHEADS,
        "MODEL.MASK_FORMER.DIM_FEEDFORWARD": mf.DIM_FEEDFORWARD,
        "MODEL.MASK_FORMER.ENC_LAYERS": mf.ENC_LAYERS,
        "MODEL.MASK_FORMER.DEC_LAYERS": mf.DEC_LAYERS,
        "MODEL.MASK_FORMER.PRE_NORM": mf.PRE_NORM,
        "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ": mf.ENFORCE_INPUT_PROJ,
        "MODEL.MASK_FORMER.DEEP_SUPERVISION": mf.DEEP_SUPERVISION,
        "MODEL.MASK_FORMER.SIZE_DIVISIBILITY": mf.SIZE_DIVISIBILITY,
        "MODEL.MASK_FORMER.TEST.PANOPTIC_ON": mf.TEST.PANOPTIC_ON,
        "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD": mf.TEST.OBJECT_MASK_THRESHOLD,
        "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD": mf.TEST.OVERLAP_THRESHOLD,
        "MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE": (
            mf.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE
        ),
        "sem_seg_postprocess_before_inference": model.sem_seg_postprocess_before_inference,
        "predictor_input_proj": "identity (empty nn.Sequential)",
        "position_embedding": {
            "num_pos_feats": 128,
            "temperature": 10000,
            "normalize": True,
            "scale": f9(2 * math.pi),
            "eps": 1e-6,
        },
        "metadata": meta.name,
        "num_classes": NUM_CLASSES,
        "no_object_class": NUM_CLASSES,
        "thing_ids": thing_ids,
        "class_names": list(meta.stuff_classes),
    }


def margins(logits, masks_up, keep, sem_seg, pan_ids) -> dict:
    """How far every discrete decision is from flipping (masks_up: [100, h, w] logits at the
    original size, as panoptic_inference gets them)."""
    prob = logits.softmax(-1)
    scores, labels = prob.max(-1)
    top2 = prob.topk(2, -1).values
    kept = keep.nonzero()[:, 0]
    sig = masks_up[kept].sigmoid()
    pm = scores[kept].view(-1, 1, 1) * sig
    out = {
        "score_threshold": f9((scores - THRESHOLD).abs().min()),
        "kept_top2_prob_gap": f9((top2[kept, 0] - top2[kept, 1]).min()),
    }
    ratios = []
    for k in range(len(kept)):
        ma, oa = int((pan_ids == k).sum()), int((sig[k] >= 0.5).sum())
        if ma > 0 and oa > 0:
            ratios.append(abs(ma / oa - THRESHOLD))
    out["overlap_ratio"] = f9(min(ratios))
    out["kept_mask_min_abs_logit"] = f9(masks_up[kept].abs().min())
    out["kept_mask_abs_logit_below_1e-3"] = int((masks_up[kept].abs() < 1e-3).sum())
    for key, x in (("panoptic_argmax", pm), ("sem_seg_argmax", sem_seg)):
        g = top2_log_gap(x)
        out[key] = {
            "min_log_gap": f9(g.min()),
            "below_1e-4": int((g < 1e-4).sum()),
            "below_1e-3": int((g < 1e-3).sum()),
            "below_1e-2": int((g < 1e-2).sum()),
            "pixels": int(g.numel()),
        }
    return out


def main():
    t0 = time.time()
    torch.set_num_threads(2)
    check_sources()
    cfg, model = build()
    assert not any(m.startswith("detectron2._C") for m in sys.modules), "detectron2._C imported"

    # Structure checks (cheap facts the docstring states).
    bns = [m for m in model.backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(bns) == 53 and all(m.eps == 1e-5 for m in bns)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    gns = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(gns) == 7 and all(m.num_groups == 32 and m.eps == 1e-5 for m in gns)
    lns = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(lns) == 31 and all(m.eps == 1e-5 for m in lns)
    pd = model.sem_seg_head.pixel_decoder
    pred = model.sem_seg_head.predictor
    assert type(pd).__name__ == "TransformerEncoderPixelDecoder"
    assert isinstance(pred.input_proj, torch.nn.Sequential) and len(pred.input_proj) == 0
    assert len(pred.transformer.encoder.layers) == 0 and pred.transformer.encoder.norm is None
    assert pd.transformer.encoder.norm is None and len(pd.transformer.encoder.layers) == 6
    assert model.sem_seg_postprocess_before_inference and model.size_divisibility == 0
    assert model.panoptic_on and model.object_mask_threshold == THRESHOLD
    assert model.overlap_threshold == THRESHOLD
    for stage in ("res3", "res4", "res5"):
        block = getattr(model.backbone, stage)[0]
        assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)
    val_meta = MetadataCatalog.get("coco_2017_val_panoptic")
    assert model.metadata.name == cfg.DATASETS.TRAIN[0] == "coco_2017_train_panoptic"
    assert (
        model.metadata.thing_dataset_id_to_contiguous_id
        == val_meta.thing_dataset_id_to_contiguous_id
    )
    thing_ids = set(model.metadata.thing_dataset_id_to_contiguous_id.values())
    assert thing_ids == set(range(80)) and len(model.metadata.stuff_classes) == NUM_CLASSES

    state = model.state_dict()
    state_dict_has = {k: k in state for k in ("pixel_mean", "pixel_std")}
    spec, not_generated = [], []
    for name in list(state):
        shape = list(state[name].shape)
        if name == "criterion.empty_weight":
            want = torch.ones(NUM_CLASSES + 1)
            want[-1] = cfg.MODEL.MASK_FORMER.NO_OBJECT_WEIGHT
            assert torch.equal(state[name], want)
            not_generated.append(
                {
                    "name": name,
                    "shape": shape,
                    "value": "ones, last (no-object) entry 0.1 = NO_OBJECT_WEIGHT",
                    "why": "SetCriterion's cross-entropy class weights (persistent buffer); unused at inference",
                }
            )
            continue
        a, b = range_of(name, shape)
        spec.append({"name": name, "shape": shape, "a": a, "b": b})
        state[name] = torch.from_numpy(generate(name, shape, a, b))
    missing, unexpected = model.load_state_dict(state, strict=True)
    assert not missing and not unexpected
    for w in spec:  # the model holds exactly the generated tensors
        got = model.state_dict()[w["name"]]
        assert torch.equal(got, torch.from_numpy(generate(w["name"], w["shape"], w["a"], w["b"])))

    # The same model in float64 for the conditioning check (copied before any hook is
    # registered: deepcopy would copy the hooks). .double() converts every floating parameter and
    # buffer: FrozenBatchNorm2d's weight, bias and running statistics (buffers), GroupNorm,
    # LayerNorm, pixel_mean / pixel_std (asserted).
    model64 = copy.deepcopy(model).double()
    for key, t in list(model64.named_parameters()) + list(model64.named_buffers()):
        assert not t.is_floating_point() or t.dtype == torch.float64, key
    for m in model64.modules():
        if isinstance(m, (FrozenBatchNorm2d, torch.nn.GroupNorm, torch.nn.LayerNorm)):
            assert m.weight.dtype == m.bias.dtype == torch.float64
            if isinstance(m, FrozenBatchNorm2d):
                assert m.running_mean.dtype == m.running_var.dtype == torch.float64

    def keep_outputs(m, store):
        def keep_output(key):
            def hook(_module, _inputs, output):
                store[key] = output

            return hook

        m.backbone.register_forward_hook(keep_output("backbone"))
        pixel_decoder = m.sem_seg_head.pixel_decoder
        pixel_decoder.transformer.register_forward_hook(keep_output("tef"))
        pixel_decoder.mask_features.register_forward_hook(keep_output("mask_features"))
        m.sem_seg_head.predictor.transformer.register_forward_hook(keep_output("transformer"))
        m.sem_seg_head.register_forward_hook(keep_output("head"))

    captured, captured64 = {}, {}
    keep_outputs(model, captured)
    keep_outputs(model64, captured64)

    mapper = DatasetMapper(cfg, is_train=False)
    cases, report = [], []
    for n, photo in enumerate(PHOTOS):
        rng = np.random.default_rng(n + 1)
        path = os.path.join(ROOT, "assets", photo)
        with PIL.Image.open(path) as im:
            w0, h0 = im.size
        inp = mapper({"file_name": path, "height": h0, "width": w0, "image_id": n})
        image = inp["image"]
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        H, W = image.shape[1:]
        with torch.no_grad():
            result = model([inp])[0]

            res5 = captured["backbone"]["res5"][0]
            tef = captured["tef"]
            hs, memory = captured["transformer"]
            assert torch.equal(memory, tef)  # identity input_proj, no predictor encoder layers
            head = captured["head"]
            logits = head["pred_logits"][0]
            masks = head["pred_masks"][0]
            assert torch.equal(pred.class_embed(hs[-1][0][None])[0], logits)
            # Re-derive the panoptic decisions (same ops as MaskFormer.forward /
            # panoptic_inference) for the margins and the per-query table.
            up = F.interpolate(
                head["pred_masks"], size=(H, W), mode="bilinear", align_corners=False
            )[0]
            up = sem_seg_postprocess(up, (H, W), h0, w0)
            scores, labels = logits.softmax(-1).max(-1)
            keep = labels.ne(NUM_CLASSES) & (scores > THRESHOLD)
            kept_idx = keep.nonzero()[:, 0]
            prob_masks = scores[keep].view(-1, 1, 1) * up[keep].sigmoid()
            ids = prob_masks.argmax(0)

            # The float64 run on the same input (its uint8 values as float64).
            result64 = model64([dict(inp, image=image.double())])[0]
            hs64 = captured64["transformer"][0]
            pairs = {
                "res5": (res5, captured64["backbone"]["res5"][0]),
                "transformer_encoder_features": (tef, captured64["tef"]),
                "mask_features": (captured["mask_features"], captured64["mask_features"]),
                "decoder_output": (hs[-1][0], hs64[-1][0]),
                "pred_masks": (masks, captured64["head"]["pred_masks"][0]),
                "pred_logits": (logits, captured64["head"]["pred_logits"][0]),
                "sem_seg": (result["sem_seg"], result64["sem_seg"]),
            }
            f64_error = {}
            for key, (a, b) in pairs.items():
                assert a.dtype == torch.float32 and b.dtype == torch.float64, key
                if key == "pred_logits":  # relative to the query's largest |logit|
                    scale = b.abs().amax(-1, keepdim=True).clamp(min=1)
                else:
                    scale = b.abs().clamp(min=1)
                f64_error[key] = f9(((a.double() - b).abs() / scale).max())
            pan64, segments_info64 = result64["panoptic_seg"]
            f64_panoptic_agreement = float((pan64 == result["panoptic_seg"][0]).double().mean())
            f64_same_segments = segments_info64 == result["panoptic_seg"][1]

        sem_seg = result["sem_seg"]
        pan, segments_info = result["panoptic_seg"]
        assert pan.dtype == torch.int32 and list(pan.shape) == [h0, w0]
        assert list(sem_seg.shape) == [NUM_CLASSES, h0, w0]

        # Per kept query: areas and the segment it went to (checked against the model's map).
        kept = []
        seg_of_class, next_id = {}, 0
        for k, q in enumerate(kept_idx.tolist()):
            label = int(labels[q])
            isthing = label in thing_ids
            mask_area = int((ids == k).sum())
            original_area = int((up[q].sigmoid() >= 0.5).sum())
            segment_id = None
            if mask_area > 0 and original_area > 0 and mask_area / original_area >= THRESHOLD:
                if not isthing and label in seg_of_class:
                    segment_id = seg_of_class[label]
                else:
                    next_id += 1
                    segment_id = next_id
                    if not isthing:
                        seg_of_class[label] = segment_id
                assert bool((pan[ids == k] == segment_id).all())
            kept.append(
                {
                    "query": q,
                    "label": label,
                    "score": f9(scores[q]),
                    "isthing": isthing,
                    "mask_area": mask_area,
                    "original_area": original_area,
                    "segment_id": segment_id,
                }
            )
        assert next_id == len(segments_info)
        m = margins(logits, up, keep, sem_seg, ids)

        case = {
            "photo": photo,
            "original_size": [h0, w0],
            "input_size": [int(H), int(W)],
            "input": summary(image.float(), rng),
            "res5": summary(res5, rng),
            "transformer_encoder_features": summary(tef[0], rng),
            "mask_features": summary(captured["mask_features"][0], rng),
            "decoder_output": summary(hs[-1][0], rng, channel_axis=1),
            "pred_masks": summary(masks, rng),
            "pred_logits": [f9(v) for v in logits.reshape(-1).numpy()],
            "sem_seg": summary(sem_seg, rng),
            "sem_seg_argmax": rle(sem_seg.argmax(0)),
            "panoptic_seg": {
                "shape": [h0, w0],
                "size": "original (height, width)",
                "rle": rle(pan),
            },
            "segments_info": [
                {"id": s["id"], "isthing": s["isthing"], "category_id": s["category_id"]}
                for s in segments_info
            ],
            "kept": kept,
            "margins": m,
            "f64_relative_error": f64_error,
        }
        cases.append(case)

        names = model.metadata.stuff_classes
        areas = {s["id"]: int((pan == s["id"]).sum()) for s in segments_info}
        merged = [
            s["id"] for s in segments_info if sum(1 for k in kept if k["segment_id"] == s["id"]) > 1
        ]
        lines = [
            f"{photo}: original {h0}x{w0} -> input {H}x{W}; res5 {list(res5.shape)}, "
            f"mask_features {list(captured['mask_features'].shape[1:])}",
            f"  {len(kept)} queries pass {THRESHOLD}: "
            + ", ".join(f"q{k['query']}:{k['label']}({k['score']:.3f})" for k in kept),
            f"  {len(set(k['label'] for k in kept))} classes among them "
            f"({sum(k['isthing'] for k in kept)} thing / {sum(not k['isthing'] for k in kept)} stuff queries)",
            f"  {len(segments_info)} segments: "
            + ", ".join(
                f"id {s['id']} {s['category_id']} '{names[s['category_id']]}' "
                f"{'thing' if s['isthing'] else 'stuff'} {areas[s['id']]} px"
                for s in segments_info
            )
            + f"; void {int((pan == 0).sum())} px; merged stuff segments {merged}",
            f"  sem_seg argmax: {len(set(sem_seg.argmax(0).flatten().tolist()))} classes, "
            f"{len(case['sem_seg_argmax']) // 2} runs; panoptic {len(case['panoptic_seg']['rle']) // 2} runs",
            f"  margins: {json.dumps(m)}",
            f"  float32 vs float64, max |f32 - f64| / max(1, |f64|) (pred_logits: / max(1, the "
            f"query's largest |logit|)): {json.dumps(f64_error)}; the float64 run's panoptic ids "
            f"agree on {100 * f64_panoptic_agreement:.4f}% of the pixels, same segments_info: "
            f"{f64_same_segments}",
        ]
        report.extend(lines)
        print("\n".join(lines), flush=True)

    doc = {
        "generator": "tests/reference/make_maskformer_fixtures.py",
        "reference": {
            "maskformer": MASKFORMER_COMMIT,
            "detectron2": DETECTRON2_COMMIT,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": np.__version__,
            "pillow": PIL.__version__,
        },
        "config": config_of(cfg, model),
        "weights": spec,
        "not_generated": not_generated,
        "state_dict_has": state_dict_has,
        "cases": cases,
    }
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "maskformer_r50.json")
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"{len(spec)} generated tensors, {sum(int(np.prod(w['shape'])) for w in spec)} values")
    print(f"wrote {path} ({os.path.getsize(path) / 1e3:.1f} KB) in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
