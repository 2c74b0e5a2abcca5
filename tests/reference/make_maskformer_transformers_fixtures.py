#!/usr/bin/env python3
"""Fixture: Hugging Face transformers' MaskFormer R50 (`MaskFormerForInstanceSegmentation`
with a `ResNetConfig` backbone), generated weights, on the CPU, for the `maskformer` node's
transformers naming and base pixel decoder.

    pip install torch transformers numpy
    HF_HUB_OFFLINE=1 python3 tests/reference/make_maskformer_transformers_fixtures.py

writes plugins/detr/tests/fixtures/maskformer_r50_transformers.json.

The model: transformers' ResNet-50 (`ResNetModel`: `embedder`, `encoder.stages.*`,
BatchNorm eps 1e-5, the stride on the 3x3) under `model.pixel_level_module.encoder.`; its
`MaskFormerPixelDecoder` (an FPN: `fpn.stem` 3x3 + GroupNorm + ReLU on res5, `fpn.layers.N`
with a 1x1 + GroupNorm `proj` and a 3x3 + GroupNorm + ReLU `block`, nearest upsampling,
`mask_projection`); `MaskFormerTransformerModule` (`input_projection` of res5, sine
positions, a 6-layer DETR decoder with 100 queries and a final `layernorm`); the heads
`class_predictor` (151 = 150 ADE20K classes + "no object") and `mask_embedder` (3 linear
layers). This is facebookresearch/MaskFormer's `BasePixelDecoder` configuration
(`TRANSFORMER_IN_FEATURE: res5`, e.g. `configs/ade20k-150/maskformer_R50_bs16_160k.yaml`),
which is what transformers' MaskFormer can represent.

No hub access: the model is built from its config, then every floating tensor of its state
dict is replaced by `make_maskrcnn_fixtures.generate(name, shape, a, b)` (uniform in
[b - a, b + a), reproduced bit for bit by `kernels::weights::generated_tensor`), and the file
records `{name, shape, a, b}` for each. The checkpoint the Rust test writes from them carries
the names `save_pretrained` writes (transformers 5 saves the 4.x names: `out_proj`, `fc1`;
checked below). The input is a generated `[1, 3, 160, 224]` tensor (the model's input after
normalisation), so no image processing is involved.

Stored (batch axis dropped; summaries as make_maskrcnn_fixtures.summary): `res5` (the
backbone's last feature map), `mask_features` (the pixel decoder's `mask_projection`
output), `decoder_output` (`transformer_decoder_last_hidden_state`, [100, 256], per-column
means), `pred_masks` (`masks_queries_logits`, [100, 40, 56]) and `pred_logits`
(`class_queries_logits`, [100 * 151] in full). Each also gets the float32 run's relative
spread against the same model in float64 (`f64_relative_error`), which the test uses as its
tolerance where it is larger than 1e-4.
"""

import json
import os
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_maskrcnn_fixtures import generate, summary  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "plugins", "detr", "tests", "fixtures",
                   "maskformer_r50_transformers.json")
NUM_LABELS = 150
INPUT_SHAPE = [1, 3, 160, 224]
BACKBONE_CONV_GAIN = 1.2  # as make_maskformer_fixtures.py: activations neither die nor blow up


def gain(g: float, shape) -> float:
    return float(np.float32(g * np.sqrt(3.0 / int(np.prod(shape[1:])))))


def range_of(name: str, shape) -> tuple:
    """(a, b) of a state-dict tensor: values uniform in [b - a, b + a)."""
    backbone = name.startswith("model.pixel_level_module.encoder.")
    if backbone and ".normalization." in name:  # BatchNorm2d
        if name.endswith(".running_var"):
            return 0.5, 1.0
        if name.endswith(".weight"):
            return 0.25, 0.75
        return 0.1, 0.0  # bias, running_mean
    if backbone and len(shape) == 4:
        return gain(BACKBONE_CONV_GAIN, shape), 0.0
    if len(shape) == 1 and name.endswith(".weight"):  # the FPN's GroupNorms, LayerNorms
        return 0.25, 1.0
    if name == "model.transformer_module.queries_embedder.weight":
        return 1.0, 0.0
    if len(shape) in (2, 4):  # conv and linear weights: unit-variance gain
        return gain(1.0, shape), 0.0
    if len(shape) == 1:  # biases
        return 0.1, 0.0
    raise ValueError(f"no range for {name} {shape}")


def build():
    from transformers import MaskFormerConfig, MaskFormerForInstanceSegmentation, ResNetConfig

    backbone = ResNetConfig(depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048],
                            layer_type="bottleneck",
                            out_features=["stage1", "stage2", "stage3", "stage4"])
    config = MaskFormerConfig(backbone_config=backbone, num_labels=NUM_LABELS)
    return MaskFormerForInstanceSegmentation(config).eval()


def run(model, x):
    with torch.no_grad():
        out = model(pixel_values=x, output_hidden_states=True)
    return {
        "res5": out.encoder_hidden_states[-1][0],
        "mask_features": out.pixel_decoder_last_hidden_state[0],
        "decoder_output": out.transformer_decoder_last_hidden_state[0],
        "pred_masks": out.masks_queries_logits[0],
        "pred_logits": out.class_queries_logits[0],
    }


def main():
    import transformers

    torch.set_num_threads(2)
    model = build()
    gns = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(gns) == 7 and all(m.num_groups == 32 and m.eps == 1e-5 for m in gns)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 53 and all(m.eps == 1e-5 for m in bns)
    from safetensors import safe_open
    from safetensors.torch import save_file
    from transformers import MaskFormerForInstanceSegmentation

    spec = []
    with tempfile.TemporaryDirectory() as d:
        # The tensors are generated under the names save_pretrained writes (transformers 5
        # renames some on load, `out_proj` to `o_proj`, and back on save), then loaded back
        # through from_pretrained, which must find every one.
        model.save_pretrained(d)
        path = os.path.join(d, "model.safetensors")
        with safe_open(path, "pt") as f:
            saved = {k: f.get_tensor(k) for k in f.keys()}
        for name, t in saved.items():
            if not t.is_floating_point() or name == "criterion.empty_weight":
                continue  # num_batches_tracked; the loss's class weights (unused at inference)
            shape = list(t.shape)
            a, b = range_of(name, shape)
            spec.append({"name": name, "shape": shape, "a": a, "b": b})
            saved[name] = torch.from_numpy(generate(name, shape, a, b))
        save_file(saved, path, metadata={"format": "pt"})
        model, info = MaskFormerForInstanceSegmentation.from_pretrained(
            d, output_loading_info=True)
        model.eval()
        assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys",
                                             "mismatched_keys", "error_msgs")), info
    assert any(".out_proj." in w["name"] for w in spec)
    assert any(w["name"].endswith(".fc1.weight") for w in spec)

    x = torch.from_numpy(generate("input", INPUT_SHAPE, 2.0, 0.0))
    ours = run(model, x)
    ref = run(model.double(), x.double())
    spread = {k: float(((ours[k].double() - ref[k]).abs() / ref[k].abs().clamp(min=1)).max())
              for k in ours}
    rng = np.random.default_rng(0)
    doc = {
        "generator": "make_maskformer_transformers_fixtures.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "num_labels": NUM_LABELS,
        "input": {"name": "input", "shape": INPUT_SHAPE, "a": 2.0, "b": 0.0},
        "weights": spec,
        "res5": summary(ours["res5"], rng),
        "mask_features": summary(ours["mask_features"], rng),
        "decoder_output": summary(ours["decoder_output"], rng, channel_axis=1),
        "pred_masks": summary(ours["pred_masks"], rng),
        "pred_logits": [float(v) for v in ours["pred_logits"].reshape(-1)],
        "f64_relative_error": spread,
    }
    with open(OUT, "w") as f:
        json.dump(doc, f)
    print(f"wrote {OUT}: {len(spec)} tensors; float32 vs float64 spread {spread}")


if __name__ == "__main__":
    main()
