#!/usr/bin/env python3
"""CPU inference against ONNX Runtime, OpenVINO (f32 and bf16) and torch, in one run.

Two networks, both torchvision's, with the same seeded random weights everywhere:
  resnet50_224   ResNet-50 body (conv1 .. layer4, returning layer1..layer4), 1x3x224x224
  r50fpn_800     maskrcnn_resnet50_fpn's backbone (body + FPN + the P6 max-pool), 1x3x800x1216

    pip install torch torchvision numpy onnx onnxscript onnxruntime openvino
    cargo build --release --workspace --examples
    python3 tests/reference/bench_onnx.py [--threads 2] [--reps 10] [--rounds 3] [--nchw-too]

(`cargo build --release --workspace` too: `bench_backbone` loads the plugin libraries.)
`--nchw-too` also times ours with the ResNet body in NCHW (`KERNELS_NHWC=0`), in the same rounds,
and `--bf16` ours with `precision = "bf16"` (where the CPU has AVX-512 BF16; against OpenVINO bf16).

Every engine gets the same thread count (RAYON_NUM_THREADS, torch.set_num_threads, ONNX
Runtime's intra_op_num_threads, OpenVINO's INFERENCE_NUM_THREADS), one warm-up, then REPS
timed runs per round; the rounds interleave the engines so that a slow spell of the machine
hits them alike. The peers' sessions live through all rounds, while ours is a new process
each round: it gets as many untimed runs as the peers have had before the round, up to 10.
Medians over all rounds are printed with ratios (ours / peer).

The ONNX graphs are exported from a copy of the model with each FrozenBatchNorm folded into
its convolution (what our loader does too), so the peers get their best graph. OpenVINO bf16
runs only where the CPU has bf16 (AVX-512 BF16 or AMX); elsewhere the script says so. Outputs
of every engine are compared with torch's on every element. Files go to target/bench-onnx/,
never committed.
"""

import argparse
import copy
import os
import sys
import statistics
import subprocess
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_name, cpu_flags  # noqa: E402
from bench_resnet_fpn import build_model  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
WORK = os.path.join(ROOT, "target", "bench-onnx")

# (name, input height, width, with FPN)
NETWORKS = [("resnet50_224", 224, 224, False), ("r50fpn_800", 800, 1216, True)]
BODY_OUT = ["c2", "c3", "c4", "c5"]
# Most untimed runs ours gets before a round (see the round loop).
WARMUP_CAP = 10
FPN_OUT = ["p2", "p3", "p4", "p5", "p6"]


def fold_frozen_bn(module):
    """A copy of `module` with every FrozenBatchNorm2d folded into the conv before it."""
    module = copy.deepcopy(module)

    def fold(parent):
        names = list(parent._modules.keys())
        for i, name in enumerate(names):
            child = parent._modules[name]
            if type(child).__name__ == "FrozenBatchNorm2d":
                conv = parent._modules[names[i - 1]]
                assert isinstance(conv, nn.Conv2d), f"{name} does not follow a conv"
                scale = child.weight / torch.sqrt(child.running_var + child.eps)
                shift = child.bias - child.running_mean * scale
                with torch.no_grad():
                    conv.weight.mul_(scale.view(-1, 1, 1, 1))
                    bias = shift if conv.bias is None else conv.bias * scale + shift
                    conv.bias = nn.Parameter(bias)
                parent._modules[name] = nn.Identity()
            else:
                fold(child)

    fold(module)
    return module


class Body(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        out = self.body(x)
        return tuple(out[k] for k in ["0", "1", "2", "3"])


class BodyFpn(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        out = self.backbone(x)
        return tuple(out[k] for k in ["0", "1", "2", "3", "pool"])


def export(module, x, path, outputs):
    if os.path.exists(path):
        return
    names = [f"out{i}" for i in range(outputs)]
    with torch.no_grad():
        try:
            torch.onnx.export(module, (x,), path, input_names=["x"], output_names=names,
                              opset_version=17, dynamo=False)
        except TypeError:  # a torch without the dynamo switch
            torch.onnx.export(module, (x,), path, input_names=["x"], output_names=names,
                              opset_version=17)


def time_calls(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def max_rel(got, ref):
    scale = float(np.abs(ref).max()) or 1.0
    return float(np.abs(got - ref).max()) / scale


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated network names")
    ap.add_argument("--nchw-too", action="store_true",
                    help="also time ours with the ResNet body in NCHW (KERNELS_NHWC=0), as 'ours nchw'")
    ap.add_argument("--bf16", action="store_true",
                    help="also time ours with precision = \"bf16\", as 'ours bf16'")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(WORK, exist_ok=True)

    import onnxruntime as ort
    import openvino as ov

    torch.manual_seed(0)
    model = build_model()
    weights = os.path.join(WORK, "maskrcnn_r50_fpn_random.pth")
    torch.save(model.state_dict(), weights)
    folded = fold_frozen_bn(model.backbone)
    core = ov.Core()
    caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    has_bf16 = "BF16" in caps
    flags = cpu_flags()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs; "
          f"avx512f {'avx512f' in flags}, avx512_bf16 {'avx512_bf16' in flags}, "
          f"amx_bf16 {'amx_bf16' in flags}; OpenVINO capabilities {caps}")
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, openvino {ov.__version__}, "
          f"{args.threads} threads, {args.rounds} rounds of {args.reps} after a warm-up")

    rows = []
    for name, h, w, with_fpn in NETWORKS:
        if args.only and name not in args.only.split(","):
            continue
        g = torch.Generator().manual_seed(1)
        x = torch.randn(1, 3, h, w, generator=g)
        x.numpy()[0].astype("<f4").tofile(os.path.join(WORK, f"{name}_input.f32"))
        ref_module = BodyFpn(model.backbone) if with_fpn else Body(model.backbone.body)
        export_module = BodyFpn(folded) if with_fpn else Body(folded.body)
        onnx_path = os.path.join(WORK, f"{name}.onnx")
        export(export_module, x, onnx_path, len(FPN_OUT) if with_fpn else len(BODY_OUT))
        out_names = BODY_OUT + FPN_OUT if with_fpn else BODY_OUT
        with torch.no_grad():
            ref_body = Body(model.backbone.body)(x)
            ref = [t[0].numpy() for t in ref_body]
            if with_fpn:
                ref += [t[0].numpy() for t in ref_module(x)]

        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
        feed = {"x": x.numpy()}
        ov_model = core.read_model(onnx_path)
        compiled = {}
        for prec in ["f32", "bf16"]:
            if prec == "bf16" and not has_bf16:
                continue
            compiled[prec] = core.compile_model(ov_model, "CPU", {
                "INFERENCE_NUM_THREADS": args.threads,
                "INFERENCE_PRECISION_HINT": prec,
                "PERFORMANCE_HINT": "LATENCY",
                "NUM_STREAMS": 1,
            })
        requests = {p: c.create_infer_request() for p, c in compiled.items()}

        def run_ours(variant="", warmup=1):
            out_dir = os.path.join(WORK, f"{name}_ours{'_' + variant if variant else ''}")
            cmd = [os.path.join(ROOT, "target", "release", "examples", "bench_backbone"),
                   weights, os.path.join(WORK, f"{name}_input.f32"), str(h), str(w), out_dir,
                   str(args.reps), f"warmup={warmup}"] + (["fpn"] if with_fpn else []) \
                + (["bf16"] if variant == "bf16" else [])
            env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
            if variant == "nchw":
                env["KERNELS_NHWC"] = "0"
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr}")
            lines = dict(l.split(" ", 1) for l in r.stdout.strip().splitlines())
            body = [float(v) for v in lines["resnet_ms"].split()]
            fpn = [float(v) for v in lines.get("fpn_ms", "").split()] or [0.0] * len(body)
            outs = [np.fromfile(os.path.join(out_dir, f"{n}.f32"), dtype="<f4").reshape(r_.shape)
                    for n, r_ in zip(out_names, ref)]
            return [a + b for a, b in zip(body, fpn)], outs

        variants = (["nchw"] if args.nchw_too else []) + (["bf16"] if args.bf16 and has_bf16 else [])
        times = {k: [] for k in ["torch", "onnxruntime", "openvino f32", "openvino bf16", "ours"]
                 + [f"ours {v}" for v in variants]}
        outputs = {}
        with torch.no_grad():
            for rnd in range(args.rounds):
                # The peers' sessions live through every round; ours is a new process each
                # round. So ours gets as many untimed runs as each peer has had before this
                # round (1 + rnd * reps), up to WARMUP_CAP.
                warmup = min(1 + rnd * args.reps, WARMUP_CAP)
                times["torch"] += time_calls(lambda: ref_module(x), args.reps)
                times["onnxruntime"] += time_calls(lambda: sess.run(None, feed), args.reps)
                for prec, req in requests.items():
                    times[f"openvino {prec}"] += time_calls(lambda: req.infer({0: x.numpy()}), args.reps)
                t, outs = run_ours(warmup=warmup)
                times["ours"] += t
                for v in variants:
                    t, outputs[f"ours {v}"] = run_ours(v, warmup)
                    times[f"ours {v}"] += t
        outputs["onnxruntime"] = sess.run(None, feed)
        for prec, req in requests.items():
            res = req.infer({0: x.numpy()})
            outputs[f"openvino {prec}"] = [res[compiled[prec].output(i)] for i in range(len(compiled[prec].outputs))]
        outputs["ours"] = outs
        med = {k: statistics.median(v) for k, v in times.items() if v}
        print(f"\n{name} (input 1x3x{h}x{w}), medians in ms:")
        for k, v in med.items():
            print(f"  {k:14s} {v:8.1f}   ours/{k} = {med['ours'] / v:.2f}")
        if not has_bf16:
            print("  openvino bf16  n/a: this CPU has neither AVX-512 BF16 nor AMX")
        print("  max |x - torch| / max |torch| over every output element:")
        for k, outs in outputs.items():
            if k.startswith("ours"):
                errs = [max_rel(o, r) for o, r in zip(outs, ref)]
            else:
                # The exported graphs return the body's levels, or the FPN's.
                refs = ref[len(BODY_OUT):] if with_fpn else ref
                errs = [max_rel(np.asarray(o)[0], r) for o, r in zip(outs, refs)]
            print(f"    {k:14s} {max(errs):.2e}")
        rows.append((name, med))

    print("\n| network | ours | ours bf16 | torch | ONNX Runtime | OpenVINO f32 | OpenVINO bf16 | ours / ORT | ours bf16 / OpenVINO bf16 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, med in rows:
        cell = lambda k: f"{med[k]:.1f} ms" if k in med else "n/a"
        ratio = lambda a, b: f"{med[a] / med[b]:.2f}" if a in med and b in med else "n/a"
        print(f"| {name} | {cell('ours')} | {cell('ours bf16')} | {cell('torch')} | {cell('onnxruntime')} | "
              f"{cell('openvino f32')} | {cell('openvino bf16')} | {ratio('ours', 'onnxruntime')} | "
              f"{ratio('ours bf16', 'openvino bf16')} |")


if __name__ == "__main__":
    main()
