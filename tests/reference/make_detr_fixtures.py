#!/usr/bin/env python3
"""Writes plugins/detr/tests/fixtures/detr_r50.json: the official DETR code
(facebookresearch/detr at commit 29901c51) run on CPU, with generated weights, on real
photos, and the same weights run through Hugging Face transformers' DetrForObjectDetection.

    target/venv-torch/bin/pip install transformers timm safetensors   # + torch torchvision numpy pillow scipy
    mkdir -p /tmp/detr
    git --git-dir=<mirror of facebookresearch/detr>/repo archive 29901c51 | tar -x -C /tmp/detr
    HF_HUB_OFFLINE=1 target/venv-torch/bin/python tests/reference/make_detr_fixtures.py

(DETR_REPO defaults to /tmp/detr. The script sets HF_HUB_OFFLINE=1 itself; nothing is
downloaded, no pretrained weights are used.) Run by developers, not by CI (CI reads the
committed fixture). Running it twice writes the same file, byte for byte.

Model. `models.build_model(args)` with `args = main.get_args_parser().parse_args([])`, i.e.
every default of main.py (COCO detection, 91 classes + no-object, backbone resnet50,
dilation False, position_embedding sine, hidden_dim 256, nheads 8, enc_layers 6, dec_layers 6,
dim_feedforward 2048, dropout 0.1, pre_norm False, num_queries 100, aux_loss True, masks False,
lr_backbone 1e-5) except `args.device = "cpu"`. Then `model.eval()`, everything under
`torch.no_grad()`. DETR's backbone is torchvision's resnet50 with DETR's own
FrozenBatchNorm2d (eps 1e-5, added before the rsqrt), wrapped by IntermediateLayerGetter
(layer4 only, so no avgpool / fc tensors); the transformer uses torch.nn.MultiheadAttention
(batch_first False, so never the fused fast path).

CPU / offline patches (in this script only; the DETR sources are not edited, and none changes
what is computed):
  1. `models.backbone.Backbone` calls `torchvision.models.resnet50(..., pretrained=
     is_main_process(), ...)`, which would download the ImageNet weights (is_main_process()
     is True without torch.distributed). `models.backbone.is_main_process` (the name that
     module imported) is replaced by `lambda: False` while the model is built, then
     restored, so torchvision builds a randomly initialised ResNet-50 (every tensor is then
     replaced by the generated state dict anyway). torchvision only warns that `pretrained`
     is deprecated.
  2. `args.device = "cpu"` (main.py's default is "cuda"); the model is never moved.
Nothing else is needed: util/misc.py's torchvision version test is False for torchvision
>= 0.7, scipy (the Hungarian matcher, built but unused at inference) is installed.

Weights. Every tensor of the official state dict (458 tensors; FrozenBatchNorm2d has no
num_batches_tracked, so "dropped" is empty) is generated from its *name* exactly as
make_maskrcnn_fixtures.py does (`fnv1a64`, `splitmix_uniform`, `generate`, copied below and
reproduced bit for bit by `kernels::weights::generated_tensor`):

    seed  = FNV-1a 64 of the full state-dict name (e.g. "backbone.0.body.layer1.0.conv1.weight")
    z_i   = splitmix64(seed + (i + 1) * 0x9E3779B97F4A7C15)     for element i (row-major)
    u_i   = float32(z_i >> 40) / 2^24                            exact, in [0, 1)
    value = (u_i * 2 - 1) * a + b                                each step rounded to float32

and loaded with `load_state_dict(strict=True)`. (a, b) per tensor is stored in the fixture;
`range_of`:
  - backbone FrozenBatchNorm2d: weight 0.75 +- 0.25, bias and running_mean +- 0.1,
    running_var 1 +- 0.5 (as the Mask R-CNN fixture);
  - conv and linear weights (backbone convs, input_proj, in_proj_weight [768, 256] (fan_in
    256), out_proj, linear1, linear2, bbox_embed layers 0 and 1): unit-variance gain
    a = sqrt(3 / fan_in), b = 0;
  - every bias (conv, linear, in_proj_bias): +- 0.1;
  - transformer LayerNorms (norm1/2/3 of every layer, transformer.decoder.norm): weight
    1 +- 0.25, bias +- 0.1;
  - query_embed.weight: +- 1.7 (about unit variance, like the sine position embedding);
  - the transformer and the heads, chosen by measuring the run (the constants after the
    imports). With unit gains everywhere the 100 queries are copies of each other (the
    decoder output varies by 0.03% of its rms between queries; every query gets the same
    class and the same box), because a random ResNet-50's c5 varies little over the image
    (its spatial variation is ~10% of its rms, the rest is a per-channel pattern common to
    all positions), the encoder's near-uniform self-attention averages that away (10% -> 1%
    after six layers), and the decoder only ever reads the memory through its values (the
    query and position embeddings enter queries and keys, never values). So:
      encoder self_attn.out_proj.weight: gain 0.3 (the averaged attention output adds
        little to the residual);
      encoder linear1.bias -1 +- 0.1 (sparse FFN hidden units) and linear2.weight gain 8
        (the FFN dominates the residual): the thresholded FFN amplifies the spatial
        variation, to ~37% of the memory's rms;
      decoder multihead_attn.in_proj_weight: gain 2.5 (cross-attention logits of several
        units, so that each query attends to its own places): the queries' outputs differ
        by ~33% of their rms;
      class_embed.weight gain 8.5, class_embed.bias +- 1: 13-14 classes per photo, scores
        0.004..0.9999 (none rounds to 1), smallest top-1 / top-2 logit gap 0.036 (largest
        of a scan over gains 4-20 and bias ranges 0.1-2 without saturating scores);
      bbox_embed.layers.2.weight gain 2 and bias -0.9 +- 1.2 (its four values come out as
        -0.016, 0.284, -0.750, -0.819 for cx, cy, w, h): boxes of 10-50% of the image
        side, 94-100 of 100 inside the image.
    The amplification also amplifies float32 rounding: the HF model's logits differ from
    the official ones by up to ~5e-4 (the memory by ~2.5e-5; with unit gains they differ by
    ~2.5e-5 and ~3e-6), still ~70x below the smallest top-1 / top-2 gap.

Pre-processing, exactly datasets/coco.py's 'val' transform: `PIL.Image.open(path)
.convert("RGB")`, `T.RandomResize([800], max_size=1333)` (datasets/transforms.py `resize`:
`get_size_with_aspect_ratio`, then torchvision's F.resize on the PIL image, i.e. Pillow's
`Image.resize(..., BILINEAR)`), `T.ToTensor()`, `T.Normalize([0.485, 0.456, 0.406],
[0.229, 0.224, 0.225])` (the DETR transforms, called with target None), then
`util.misc.nested_tensor_from_tensor_list([img])` (one image: no padding, mask all False)
and `model(samples)`. Post-processing: `models.detr.PostProcess()(outputs,
torch.tensor([[h, w]]))` with the original size (what engine.evaluate does).

Photos: assets/chelsea.png (397x264 -> 1203x800), assets/coffee.png (360x240 -> 1200x800) and
plugins/detr/tests/fixtures/astronaut_strip.png (512x150, the top 150 rows of scikit-image
0.26.0's 512x512 skimage/data/astronaut.png (public domain, NASA), saved losslessly; kept out
of assets/ so that the demo pipelines' `assets/*.png` do not pick it up), which exercises
max_size: 512 / 150 * 800 > 1333, so size = round(1333 * 150 / 512) = 391 and the width is
int(391 * 512 / 150) = 1334 (one pixel more than max_size: DETR floors the long side of the
rounded short side).

Hugging Face. The same generated tensors, renamed as transformers' DETR conversion script
(convert_detr_original_pytorch_checkpoint_to_pytorch.py of transformers 4.x, which wrote the
published facebook/detr-resnet-50 checkpoint) names them (see `hf_entries`; in_proj_weight /
in_proj_bias split in three row blocks q, k, v), are written to a temporary
model.safetensors with `DetrConfig(num_labels=91)` (use_timm_backbone: timm resnet50,
use_pretrained_backbone False, num_queries 100) and loaded with
`DetrForObjectDetection.from_pretrained(dir, output_loading_info=True)`: transformers 5
renames the checkpoint keys itself (conversion_mapping.py, "DetrModel": backbone.conv_encoder
-> backbone, out_proj -> o_proj, layers.N.fc1/fc2 -> layers.N.mlp.fc1/fc2); the script fails
unless missing, unexpected and mismatched keys are all empty and every tensor of the loaded
model equals its source bit for bit. "hf_weights" lists the checkpoint names (what a
.safetensors file from the hub holds) with the official tensor and row range each is cut
from; "hf_module_renames" are transformers 5's renames (Python `re.sub` patterns, applied
in order) from those names to the names inside its model. The HF model (attention
implementation: transformers' default, sdpa) runs on the SAME normalized pixel tensor
(pixel_mask all ones); "hf_max_abs_diff" is the largest |difference| of its logits /
pred_boxes / encoder output (last_hidden_state of the encoder vs the official memory) vs
the official model's. DetrImageProcessor().post_process_object_detection(outputs,
threshold=0, target_sizes=[(h, w)]) is compared with the official PostProcess twice:
"hf_postprocess_max_abs_diff" on the same (official) outputs, which must agree exactly
(same labels, scores and boxes), and "hf_end_to_end_max_abs_diff" on the HF model's own
outputs (labels must be equal; the score / box differences are the models' differences).

Outputs, in detr_r50.json:
  generator, reference {detr commit, torch, torchvision, transformers, timm, pillow};
  weights: [{name, shape, a, b}] in state_dict order; dropped (empty);
  hf_weights: [{name, source, rows: [start, end) or null}], one per HF tensor, in the
  official order (530 entries: every in_proj tensor gives three);
  hf_module_renames; hf_config: the DetrConfig arguments;
  min_top2_gap: the smallest gap between a query's best and second-best class logit
  (excluding no-object, as PostProcess does) over all cases;
  cases, one per photo: photo, original_size [h, w], input_size [h, w] (the resized size),
  input (summary of the normalized [3, H, W] tensor), c5 (summary of the backbone's layer4
  output features[-1].tensors[0], [2048, H/32, W/32], without its 2048 channel means, to
  keep the file under 600 KB), memory (the encoder output, [256,
  H/32, W/32], as transformer.forward returns it), hs (the decoder's last layer output after
  the decoder's final norm, [100, 256]: summary of the [1, 100, 256] view, channel_means =
  per-column means, "channel_axis": 1), pred_logits [100 * 92] and pred_boxes [100 * 4]
  (cx, cy, w, h, relative), results {scores [100], labels [100], boxes [100 * 4] (x0, y0,
  x1, y1 in original pixels)}, top2_gap (per-case minimum), hf_max_abs_diff,
  hf_postprocess_max_abs_diff, hf_end_to_end_max_abs_diff. All flat lists are row-major.

Summaries (`summary` of make_maskrcnn_fixtures.py, with its own rng seeded per case):
shape, sum, sum of |x| (float64), min, max, per-channel means (axis -3), and the values at
512 random flat indices plus the first and last element. Floats are written with 9
significant digits, except the weight ranges (a, b), which are written exactly (they are
float32 values).
"""

import json
import math
import os
import sys
import tempfile
import warnings
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
import PIL  # noqa: E402
from PIL import Image  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "plugins", "detr", "tests", "fixtures")
DETR_REPO = os.environ.get("DETR_REPO", "/tmp/detr")
DETR_COMMIT = "29901c51"
PHOTOS = ["chelsea.png", "coffee.png", "astronaut_strip.png"]


def photo_path(photo: str) -> str:
    """assets/<photo>, or the DETR fixtures' own photo (the strip)."""
    path = os.path.join(ROOT, "assets", photo)
    return path if os.path.exists(path) else os.path.join(OUT, photo)

GOLDEN = 0x9E3779B97F4A7C15
MASK = (1 << 64) - 1
SAMPLES = 512

HIDDEN = 256
# Gains and biases chosen by measuring the run (see range_of and the docstring).
QUERY_EMBED_A = 1.7
ENC_ATTN_OUT_GAIN = 0.3  # transformer.encoder.layers.N.self_attn.out_proj.weight
ENC_FFN_BIAS = (0.1, -1.0)  # transformer.encoder.layers.N.linear1.bias (a, b)
ENC_FFN_OUT_GAIN = 8.0  # transformer.encoder.layers.N.linear2.weight
XATTN_GAIN = 2.5  # transformer.decoder.layers.N.multihead_attn.in_proj_weight
CLASS_GAIN = 8.5  # class_embed.weight
CLASS_BIAS = (1.0, 0.0)  # class_embed.bias (a, b)
BOX_GAIN = 2.0  # bbox_embed.layers.2.weight
BOX_BIAS = (1.2, -0.9)  # bbox_embed.layers.2.bias (a, b)


def fnv1a64(s: str) -> int:
    h = 0xCBF29CE484222325
    for byte in s.encode():
        h ^= byte
        h = (h * 0x100000001B3) & MASK
    return h


def splitmix_uniform(seed: int, n: int) -> np.ndarray:
    """u_i in [0, 1) as float32 (exact: 24-bit numerators)."""
    with np.errstate(over="ignore"):
        i = np.arange(1, n + 1, dtype=np.uint64)
        z = np.uint64(seed) + i * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24)


def generate(name: str, shape, a: float, b: float) -> np.ndarray:
    n = int(np.prod(shape))
    u = splitmix_uniform(fnv1a64(name), n)
    v = (u * np.float32(2.0) - np.float32(1.0)) * np.float32(a) + np.float32(b)
    return v.astype(np.float32).reshape(shape)


def summary(t: torch.Tensor, rng: np.random.Generator) -> dict:
    a = t.detach().cpu().numpy().astype(np.float32)
    flat = a.reshape(-1)
    idx = np.unique(
        np.concatenate([[0, flat.size - 1], rng.integers(0, flat.size, SAMPLES)])
    )
    c = a.shape[-3]
    per_channel = a.reshape(c, -1).astype(np.float64).mean(axis=1)
    return {
        "shape": list(a.shape),
        "sum": f9(flat.astype(np.float64).sum()),
        "abs_sum": f9(np.abs(flat.astype(np.float64)).sum()),
        "min": f9(flat.min()),
        "max": f9(flat.max()),
        "channel_means": [f9(x) for x in per_channel],
        "indices": [int(i) for i in idx],
        "values": [f9(flat[i]) for i in idx],
    }


def summary_2d(t: torch.Tensor, rng: np.random.Generator) -> dict:
    """`summary` of an [N, C] tensor: same indices and values, one mean per column."""
    assert t.dim() == 2
    s = summary(t.unsqueeze(0), rng)
    s["shape"] = list(t.shape)
    s["channel_axis"] = 1
    s["channel_means"] = [f9(x) for x in t.double().mean(0)]
    return s


def summary_3d(t: torch.Tensor, rng: np.random.Generator) -> dict:
    assert t.dim() == 3
    s = summary(t, rng)
    s["channel_axis"] = 0
    return s


def f9(x) -> float:
    """9 significant digits (enough to round-trip a float32)."""
    return float(f"{float(x):.9g}")


def floats(t) -> list:
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().numpy()
    return [f9(v) for v in np.asarray(t, dtype=np.float32).reshape(-1)]


def f32(x: float) -> float:
    return float(np.float32(x))


def gain(g: float, shape) -> float:
    fan_in = int(np.prod(shape[1:]))
    return f32(g * math.sqrt(3.0 / fan_in))


def range_of(name: str, shape) -> tuple:
    """(a, b): values are uniform in [b - a, b + a)."""
    if name.startswith("backbone.0.body.") and len(shape) == 1:  # FrozenBatchNorm2d
        if name.endswith("running_var"):
            return 0.5, 1.0
        if name.endswith("weight"):
            return 0.25, 0.75
        return 0.1, 0.0  # bias, running_mean
    if name.startswith("transformer.") and ".norm" in name:  # LayerNorm
        if name.endswith(".weight"):
            return 0.25, 1.0
        return 0.1, 0.0
    if name == "query_embed.weight":
        return QUERY_EMBED_A, 0.0
    if name.startswith("transformer.encoder.layers."):
        if name.endswith(".self_attn.out_proj.weight"):
            return gain(ENC_ATTN_OUT_GAIN, shape), 0.0
        if name.endswith(".linear1.bias"):
            return ENC_FFN_BIAS
        if name.endswith(".linear2.weight"):
            return gain(ENC_FFN_OUT_GAIN, shape), 0.0
    if name.startswith("transformer.decoder.layers.") and name.endswith(
        ".multihead_attn.in_proj_weight"
    ):
        return gain(XATTN_GAIN, shape), 0.0
    if name == "class_embed.weight":
        return gain(CLASS_GAIN, shape), 0.0
    if name == "class_embed.bias":
        return CLASS_BIAS
    if name == "bbox_embed.layers.2.weight":
        return gain(BOX_GAIN, shape), 0.0
    if name == "bbox_embed.layers.2.bias":
        return BOX_BIAS
    if len(shape) in (2, 4):  # conv and linear weights: unit-variance gain
        return gain(1.0, shape), 0.0
    if len(shape) == 1:  # biases
        return 0.1, 0.0
    raise ValueError(f"no range for {name} {shape}")


# --------------------------------------------------------------------------------------
# Official DETR


def import_detr():
    if not os.path.exists(os.path.join(DETR_REPO, "models", "detr.py")):
        sys.exit(f"no DETR sources in {DETR_REPO} (see the docstring)")
    sys.path.insert(0, DETR_REPO)
    warnings.filterwarnings("ignore", category=UserWarning)
    import main as detr_main
    import datasets.transforms as T
    import models.backbone as detr_backbone
    from models import build_model
    from models.detr import PostProcess
    from util.misc import nested_tensor_from_tensor_list

    return detr_main, T, detr_backbone, build_model, PostProcess, nested_tensor_from_tensor_list


def build_official(detr):
    detr_main, _, detr_backbone, build_model, _, _ = detr
    args = detr_main.get_args_parser().parse_args([])
    args.device = "cpu"  # patch 2
    old = detr_backbone.is_main_process
    detr_backbone.is_main_process = lambda: False  # patch 1
    try:
        model, _criterion, _post = build_model(args)
    finally:
        detr_backbone.is_main_process = old
    model.eval()
    return args, model


def val_transform(T):
    """datasets/coco.py make_coco_transforms('val')."""
    normalize = T.Compose(
        [T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
    )
    return T.Compose([T.RandomResize([800], max_size=1333), normalize])


# --------------------------------------------------------------------------------------
# Hugging Face names


def hf_entries(official: list) -> list:
    """[(hf checkpoint name, official name, rows or None)] in official order, the renaming of
    transformers 4.x's convert_detr_original_pytorch_checkpoint_to_pytorch.py."""
    out = []
    enc_norm = {"norm1": "self_attn_layer_norm", "norm2": "final_layer_norm"}
    dec_norm = {
        "norm1": "self_attn_layer_norm",
        "norm2": "encoder_attn_layer_norm",
        "norm3": "final_layer_norm",
    }
    for name in official:
        p = name.split(".")
        if name.startswith("backbone.0.body."):
            out.append(("model.backbone.conv_encoder.model." + name[len("backbone.0.body."):], name, None))
        elif p[0] == "input_proj":
            out.append(("model.input_projection." + p[1], name, None))
        elif name == "query_embed.weight":
            out.append(("model.query_position_embeddings.weight", name, None))
        elif p[0] == "class_embed":
            out.append(("class_labels_classifier." + p[1], name, None))
        elif p[0] == "bbox_embed":
            out.append(("bbox_predictor." + ".".join(p[1:]), name, None))
        elif name.startswith("transformer.decoder.norm."):
            out.append(("model.decoder.layernorm." + p[-1], name, None))
        elif p[0] == "transformer" and p[2] == "layers":
            side, i, rest = p[1], p[3], p[4:]
            prefix = f"model.{side}.layers.{i}."
            if rest[0] in ("self_attn", "multihead_attn"):
                attn = "self_attn" if rest[0] == "self_attn" else "encoder_attn"
                if rest[1] in ("in_proj_weight", "in_proj_bias"):
                    kind = "weight" if rest[1] == "in_proj_weight" else "bias"
                    for j, qkv in enumerate(("q_proj", "k_proj", "v_proj")):
                        rows = [j * HIDDEN, (j + 1) * HIDDEN]
                        out.append((f"{prefix}{attn}.{qkv}.{kind}", name, rows))
                else:
                    assert rest[1] == "out_proj"
                    out.append((f"{prefix}{attn}.out_proj.{rest[2]}", name, None))
            elif rest[0] in ("linear1", "linear2"):
                out.append((f"{prefix}fc{rest[0][-1]}.{rest[1]}", name, None))
            elif rest[0].startswith("norm"):
                table = enc_norm if side == "encoder" else dec_norm
                out.append((f"{prefix}{table[rest[0]]}.{rest[1]}", name, None))
            else:
                raise ValueError(name)
        else:
            raise ValueError(f"no HF name for {name}")
    return out


# transformers 5 renames the checkpoint keys when it loads them (conversion_mapping.py,
# "DetrModel"), as regular expressions applied in this order.
HF_MODULE_RENAMES = [
    ["backbone\\.conv_encoder", "backbone"],
    ["out_proj", "o_proj"],
    ["layers\\.(\\d+)\\.fc([12])", "layers.\\1.mlp.fc\\2"],
]


def hf_module_name(ckpt: str) -> str:
    """transformers 5's in-model name of a checkpoint tensor."""
    import re

    for pattern, repl in HF_MODULE_RENAMES:
        ckpt = re.sub(pattern, repl, ckpt)
    return ckpt


HF_CONFIG = {"num_labels": 91}
HF_LOAD = {}


def build_hf(entries, state):
    import transformers
    from safetensors.torch import save_file
    from transformers import DetrConfig, DetrForObjectDetection

    transformers.logging.set_verbosity_error()
    config = DetrConfig(**HF_CONFIG)
    tensors = {}
    for name, source, rows in entries:
        t = state[source]
        tensors[name] = (t[rows[0]:rows[1]] if rows else t).contiguous().clone()
    with tempfile.TemporaryDirectory() as d:
        config.save_pretrained(d)
        save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        model, info = DetrForObjectDetection.from_pretrained(d, output_loading_info=True, **HF_LOAD)
    bad = {k: v for k, v in info.items() if v}
    if bad:
        sys.exit(f"HF load not strict: {bad}")
    model.eval()
    sd = model.state_dict()
    want = {hf_module_name(n): t for n, t in tensors.items()}
    if set(sd) != set(want):
        sys.exit(
            f"HF names differ: missing {sorted(set(sd) - set(want))[:5]}, "
            f"unexpected {sorted(set(want) - set(sd))[:5]}"
        )
    for k, t in want.items():
        if not torch.equal(sd[k], t):
            sys.exit(f"HF tensor {k} differs from its source")
    assert model.config.num_labels == 91 and model.config.num_queries == 100
    assert model.config.backbone_config.model_type == "timm_backbone"
    return model


# --------------------------------------------------------------------------------------


def top2_gaps(logits: torch.Tensor) -> torch.Tensor:
    """Per query: best minus second-best class logit, no-object excluded (PostProcess)."""
    top = logits[:, :-1].topk(2, dim=-1).values
    return top[:, 0] - top[:, 1]


def main():
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    torch.manual_seed(0)
    detr = import_detr()
    _, T, _, _, PostProcess, nested_tensor_from_tensor_list = detr
    args, model = build_official(detr)

    spec, state, dropped = [], {}, []
    for name, t in model.state_dict().items():
        shape = list(t.shape)
        if name.endswith("num_batches_tracked"):
            dropped.append(name)
            continue
        a, b = range_of(name, shape)
        spec.append({"name": name, "shape": shape, "a": a, "b": b})
        state[name] = torch.from_numpy(generate(name, shape, a, b))
    model.load_state_dict(state, strict=True)

    entries = hf_entries([s["name"] for s in spec])
    hf = build_hf(entries, state)
    from transformers import DetrImageProcessor

    processor = DetrImageProcessor()
    postprocess = PostProcess()
    transform = val_transform(T)

    captured = {}

    def keep(key):
        def hook(_module, _inputs, output):
            captured[key] = output

        return hook

    model.backbone.register_forward_hook(keep("backbone"))
    model.transformer.register_forward_hook(keep("transformer"))

    cases, all_gaps = [], []
    for k, photo in enumerate(PHOTOS):
        rng = np.random.default_rng(k + 1)
        pil = Image.open(photo_path(photo)).convert("RGB")
        w0, h0 = pil.size
        img, _ = transform(pil, None)
        samples = nested_tensor_from_tensor_list([img])
        assert not samples.mask.any()
        with torch.no_grad():
            out = model(samples)
            results = postprocess(out, torch.tensor([[h0, w0]]))[0]
            hf_out = hf(
                pixel_values=img[None].clone(),
                pixel_mask=torch.ones((1,) + tuple(img.shape[1:]), dtype=torch.long),
            )
            hf_res = processor.post_process_object_detection(
                hf_out, threshold=0, target_sizes=[(h0, w0)]
            )[0]
        features, _pos = captured["backbone"]
        hs, memory = captured["transformer"]
        c5 = features[-1].tensors[0]
        logits = out["pred_logits"][0]
        boxes = out["pred_boxes"][0]
        # The heads applied to hs reproduce the outputs (hs is what the hook says it is).
        assert torch.allclose(model.class_embed(hs[-1][0]), logits, atol=0, rtol=0)

        gaps = top2_gaps(logits)
        all_gaps.append(float(gaps.min()))
        hf_diff = {
            "logits": f9((hf_out.logits[0] - logits).abs().max()),
            "boxes": f9((hf_out.pred_boxes[0] - boxes).abs().max()),
            "memory": f9(
                (
                    hf_out.encoder_last_hidden_state[0]
                    - memory[0].flatten(1).transpose(0, 1)
                ).abs().max()
            ),
        }
        if len(hf_res["scores"]) != 100 or not torch.equal(hf_res["labels"], results["labels"]):
            sys.exit(f"{photo}: HF post-processing of the HF outputs disagrees on labels")
        end_to_end = {
            "scores": f9((hf_res["scores"] - results["scores"]).abs().max()),
            "boxes": f9((hf_res["boxes"] - results["boxes"]).abs().max()),
        }
        same = processor.post_process_object_detection(
            SimpleNamespace(logits=out["pred_logits"], pred_boxes=out["pred_boxes"]),
            threshold=0,
            target_sizes=[(h0, w0)],
        )[0]
        if len(same["scores"]) != 100 or not torch.equal(same["labels"], results["labels"]):
            sys.exit(f"{photo}: HF post-processing disagrees on labels")
        post_diff = {
            "scores": f9((same["scores"] - results["scores"]).abs().max()),
            "boxes": f9((same["boxes"] - results["boxes"]).abs().max()),
        }
        if post_diff["scores"] != 0 or post_diff["boxes"] > 1e-4:
            sys.exit(f"{photo}: HF post-processing disagrees: {post_diff}")
        # Boxes inside the original image (with a half-pixel tolerance).
        bx = results["boxes"]
        inside = (
            (bx[:, 0] >= -0.5) & (bx[:, 1] >= -0.5) & (bx[:, 2] <= w0 + 0.5) & (bx[:, 3] <= h0 + 0.5)
        )
        case = {
            "photo": photo,
            "original_size": [h0, w0],
            "input_size": list(img.shape[1:]),
            "input": summary_3d(img, rng),
            # (without the 2048 channel means, to keep the file small)
            "c5": {k: v for k, v in summary_3d(c5, rng).items() if k != "channel_means"},
            "memory": summary_3d(memory[0], rng),
            "hs": summary_2d(hs[-1][0], rng),
            "pred_logits": floats(logits),
            "pred_boxes": floats(boxes),
            "results": {
                "scores": floats(results["scores"]),
                "labels": [int(v) for v in results["labels"]],
                "boxes": floats(results["boxes"]),
            },
            "top2_gap": f9(gaps.min()),
            "hf_max_abs_diff": hf_diff,
            "hf_postprocess_max_abs_diff": post_diff,
            "hf_end_to_end_max_abs_diff": end_to_end,
        }
        cases.append(case)
        sc = results["scores"]
        wh = boxes[:, 2:]
        print(
            f"{photo}: original {h0}x{w0} (h x w) -> input {tuple(img.shape[1:])}, "
            f"c5 {tuple(c5.shape)}; scores {float(sc.min()):.4f}..{float(sc.max()):.4f} "
            f"(median {float(sc.median()):.4f}), {len(set(results['labels'].tolist()))} classes; "
            f"top1-top2 logit gap min {float(gaps.min()):.4f} (prob gap min "
            f"{float((lambda p: (p[:, 0] - p[:, 1]).min())(logits.softmax(-1)[:, :-1].topk(2).values)):.2e}); "
            f"boxes w {float(wh[:, 0].min()):.3f}..{float(wh[:, 0].max()):.3f} "
            f"h {float(wh[:, 1].min()):.3f}..{float(wh[:, 1].max()):.3f}, inside {int(inside.sum())}/100; "
            f"HF diff logits {hf_diff['logits']:.2e} boxes {hf_diff['boxes']:.2e} "
            f"memory {hf_diff['memory']:.2e}; HF postprocess (same outputs) scores "
            f"{post_diff['scores']:.1e} boxes {post_diff['boxes']:.1e}, (HF outputs) scores "
            f"{end_to_end['scores']:.2e} boxes {end_to_end['boxes']:.2e}"
        )

    import timm
    import transformers

    doc = {
        "generator": "tests/reference/make_detr_fixtures.py",
        "reference": {
            "detr_commit": DETR_COMMIT,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "transformers": transformers.__version__,
            "timm": timm.__version__,
            "pillow": PIL.__version__,
        },
        "model": {
            "backbone": args.backbone,
            "dilation": args.dilation,
            "position_embedding": args.position_embedding,
            "hidden_dim": args.hidden_dim,
            "nheads": args.nheads,
            "enc_layers": args.enc_layers,
            "dec_layers": args.dec_layers,
            "dim_feedforward": args.dim_feedforward,
            "pre_norm": args.pre_norm,
            "num_queries": args.num_queries,
            "num_classes": 91,
            "frozen_bn_eps": 1e-5,
            "resize": {"min_size": 800, "max_size": 1333, "interpolation": "PIL bilinear"},
            "normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        },
        "weights": spec,
        "dropped": dropped,
        "hf_weights": [
            {"name": n, "source": s, "rows": r}
            for n, s, r in entries
        ],
        "hf_module_renames": HF_MODULE_RENAMES,
        "hf_config": {
            **HF_CONFIG,
            "use_timm_backbone": True,
            "backbone": "resnet50",
            "use_pretrained_backbone": False,
            "num_queries": 100,
            "attn_implementation": hf.config._attn_implementation,
        },
        "min_top2_gap": f9(min(all_gaps)),
        "cases": cases,
    }
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "detr_r50.json")
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"smallest top1-top2 logit gap over all cases: {min(all_gaps):.4f}")
    print(f"wrote {path} ({os.path.getsize(path) / 1e3:.1f} KB)")


if __name__ == "__main__":
    main()
