//! VPSNet's feature fusion across frames, the `flownet2` and `vpsnet_fusion` nodes, against
//! the official code (mcahny/vps @ 138503ed) run on the CPU by
//! `tests/reference/make_vpsnet_fusion_fixtures.py`, which records
//! `fixtures/vpsnet_fusion.json`: two streams (128x192 and 200x400 images, the second padded
//! to 256x448 for FlowNet2 as the official code pads that size) interleaved, FlowNet2's
//! intermediates and the flow of every frame, and the neck's intermediates and outputs.
//!
//! Weights and inputs are not stored: they are generated from their names
//! (`kernels::weights::generated_tensor`, bit for bit the script's generator) at the official
//! widths, the weights under the official checkpoint names (`extra_neck.*`, `flownet2.*`),
//! with the `(a, b)` of every tensor listed in the fixture.
//!
//! Compared per frame (each within TOL, `|a - b| <= TOL · max(1, |b|)`, on every sampled
//! value, and per-channel sums within TOL of the channel's sum of absolute values):
//! - the neck, fed the official flow (the fixture's `flow_init`, stored in full) so that it
//!   is tested on its own: `bsf`, the warped reference, `flow_fine`, the second warp, TCEA's
//!   output, the refined feature and the five fused levels;
//! - FlowNet2: the flows of FlowNetC, FlowNetS (twice) and FlowNetSD at 1/4, FlowNetFusion's
//!   at full resolution and compute_flow's result; then the two nodes chained, the Rust flow
//!   into the Rust neck, against the official fused levels.
//!
//! And: interleaved streams keep separate references in both nodes, and inputs that do not
//! fit are reported.

use std::path::{Path, PathBuf};

use kernels::weights::{generated_tensor, save_safetensors, Weights};
use ndarray::ArrayView4;
use plugin_sdk::{FrameInfo, Inputs, Node, ParamValue, Params, PortKind, Tensor, Value};
use plugin_tracking::vpsnet_fusion::{kind as fusion_kind, BfpTcea, BfpTceaConfig, FusionNode};
use serde_json::Value as Json;

/// `|a - b| <= TOL · max(1, |b|)`.
const TOL: f64 = 1e-4;

const LEVELS: [&str; 5] = ["p2", "p3", "p4", "p5", "p6"];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture() -> Json {
    let path = fixtures().join("vpsnet_fusion.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).expect("fixture json")
}

fn floats(j: &Json) -> Vec<f64> {
    match j {
        Json::Array(items) => items.iter().flat_map(floats).collect(),
        v => vec![v.as_f64().expect("number")],
    }
}

fn usizes(j: &Json) -> Vec<usize> {
    j.as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_u64().expect("count") as usize)
        .collect()
}

fn f32s(name: &str, shape: &[usize], a: f64, b: f64) -> Vec<f32> {
    generated_tensor(name, shape, a as f32, b as f32)
        .expect("generated")
        .as_slice::<f32>()
        .expect("f32")
        .to_vec()
}

/// The generated weights of the fixture whose names start with `prefix`.
pub fn generated_weights(doc: &Json, prefix: &str) -> Vec<(String, Tensor)> {
    doc["weights"]
        .as_object()
        .expect("weights")
        .iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(name, w)| {
            let shape = usizes(&w["shape"]);
            let t = generated_tensor(
                name,
                &shape,
                w["a"].as_f64().expect("a") as f32,
                w["b"].as_f64().expect("b") as f32,
            )
            .expect("generated");
            (name.clone(), t)
        })
        .collect()
}

/// The fixture's FPN levels of frame `t` of `stream`, `[256, h, w]` each.
fn features(doc: &Json, frame: &Json) -> Value {
    let stream = frame["stream"].as_str().expect("stream");
    let t = frame["frame"].as_u64().expect("frame");
    let amp = doc["inputs"]["feature_amplitude"].as_f64().expect("amp");
    let c = doc["config"]["in_channels"].as_u64().expect("channels") as usize;
    let mut value = Value::new(PortKind::Features);
    for (l, size) in LEVELS
        .iter()
        .zip(frame["levels"].as_array().expect("levels"))
    {
        let [h, w] = usizes(size)[..] else {
            panic!("level size {size}")
        };
        let name = format!("vpsnet_fusion.{stream}.f{t}.{l}");
        let data = f32s(&name, &[c, h, w], amp, 0.0);
        value = value.with(l, Tensor::from_vec(&[c, h, w], data).expect("level"));
    }
    value
}

/// A `[2, h, w]` tensor value from a full summary (stride 1).
fn flow_value(summary: &Json) -> Value {
    assert_eq!(summary["stride"].as_u64(), Some(1), "a full summary");
    let shape = usizes(&summary["shape"]);
    let data: Vec<f32> = floats(&summary["values"])
        .iter()
        .map(|&v| v as f32)
        .collect();
    Value::single(Tensor::from_vec(&shape, data).expect("flow"))
}

/// Compares `got` (`[1, ...]` or without the batch axis) with a summary of the fixture;
/// returns the largest error of the sampled values.
fn compare(what: &str, got: ArrayView4<'_, f32>, summary: &Json) -> f64 {
    let shape = usizes(&summary["shape"]);
    let (n, c, h, w) = got.dim();
    assert_eq!(n, 1, "{what}: one image");
    assert_eq!(shape, vec![c, h, w], "{what}: shape");
    let got: Vec<f32> = got.iter().copied().collect();
    let stride = summary["stride"].as_u64().expect("stride") as usize;
    let want = floats(&summary["values"]);
    assert_eq!(want.len(), got.len().div_ceil(stride), "{what}: samples");
    let mut worst = 0f64;
    for (i, &b) in want.iter().enumerate() {
        let a = got[i * stride] as f64;
        let err = (a - b).abs() / b.abs().max(1.0);
        assert!(
            err <= TOL,
            "{what}: value {} is {a}, the official code gives {b} (error {err:.2e})",
            i * stride
        );
        worst = worst.max(err);
    }
    let sums = floats(&summary["channel_sums"]);
    let abs_sums = floats(&summary["channel_abs_sums"]);
    for k in 0..c {
        let s: f64 = got[k * h * w..(k + 1) * h * w]
            .iter()
            .map(|&v| v as f64)
            .sum();
        let err = (s - sums[k]).abs() / abs_sums[k].max(1.0);
        assert!(
            err <= TOL,
            "{what}: channel {k} sums to {s}, officially {} (error {err:.2e} of the channel's mass)",
            sums[k]
        );
    }
    worst
}

fn batch<'a>(t: &'a Tensor) -> ArrayView4<'a, f32> {
    let shape = t.shape().to_vec();
    let dims = match shape[..] {
        [c, h, w] => (1, c, h, w),
        [n, c, h, w] => (n, c, h, w),
        _ => panic!("rank {shape:?}"),
    };
    t.view::<f32>()
        .expect("f32")
        .into_shape_with_order(dims)
        .expect("shape")
}

/// Params with every declared default and `weights`.
fn fusion_params(weights: &Path) -> Params {
    let mut p = Params::new();
    for s in &fusion_kind().spec.params {
        if let Some(d) = &s.default {
            p.set(&s.name, d.clone());
        }
    }
    p.set(
        "weights",
        ParamValue::Str(weights.to_string_lossy().into_owned()),
    );
    p
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("vpsnet-fusion-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stream_id(name: &str) -> u32 {
    match name {
        "a" => 1,
        _ => 2,
    }
}

fn run_frame(node: &mut FusionNode, stream: u32, features: &Value, flow: &Value) -> Value {
    let mut inputs = Inputs::new();
    inputs.push("features", Some(features.clone()));
    inputs.push("flow", Some(flow.clone()));
    let frame = FrameInfo {
        stream,
        ..FrameInfo::default()
    };
    let out = node.process(&frame, &inputs).expect("process");
    out.get("features").expect("features").clone()
}

/// Every frame through the node built from parameters (the generated weights written as a
/// safetensors file under the official names): each intermediate and output within TOL.
#[test]
fn fusion_matches_the_official_neck_frame_by_frame() {
    let doc = fixture();
    assert_eq!(
        doc["config"]["refine_level"].as_u64(),
        Some(0),
        "the fixture is fusetrack.py's neck"
    );
    let dir = TempDir::new("neck");
    let path = dir.0.join("extra_neck.safetensors");
    save_safetensors(&path, &generated_weights(&doc, "extra_neck.")).expect("save");
    let mut node = FusionNode::from_params(&fusion_params(&path)).expect("node");
    let mut worst: Vec<(String, f64)> = Vec::new();
    let mut note = |what: &str, err: f64| match worst.iter_mut().find(|(w, _)| w == what) {
        Some(e) => e.1 = e.1.max(err),
        None => worst.push((what.to_string(), err)),
    };
    for frame in doc["frames"].as_array().expect("frames") {
        let stream = frame["stream"].as_str().expect("stream");
        let t = frame["frame"].as_u64().expect("frame");
        let id = format!("{stream}{t}");
        let feats = features(&doc, frame);
        let flow = flow_value(&frame["flow_init"]);
        let (out, trace) = node
            .run(stream_id(stream), &feats, &flow)
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        for (what, got) in [
            ("bsf", &trace.bsf),
            ("warp_bsf", &trace.warp_bsf),
            ("flow_fine", &trace.flow_fine),
            ("warp_bsf_fine", &trace.warp_bsf_fine),
            ("tcea", &trace.tcea),
            ("refined", &trace.refined),
        ] {
            note(
                what,
                compare(&format!("{id} {what}"), got.view(), &frame[what]),
            );
        }
        for l in LEVELS {
            let t = out.get(l).expect("level");
            assert_eq!(t.ndim(), 3, "the levels keep their rank");
            let e = compare(&format!("{id} {l}"), batch(t), &frame["outputs"][l]);
            note(&format!("output {l}"), e);
        }
        // The stream's reference for its next frame is this frame's gathered feature.
        assert_eq!(
            node.reference(stream_id(stream)).expect("reference"),
            &trace.bsf
        );
    }
    for (what, e) in &worst {
        println!("largest error {what}: {e:.2e}");
    }
}

/// Interleaved streams keep their own reference: stream 9's first frame between two frames
/// of stream 7 (the same video) leaves stream 7's second frame as the official one.
#[test]
fn streams_keep_separate_references() {
    let doc = fixture();
    let frames = doc["frames"].as_array().expect("frames");
    let find = |s: &str, t: u64| {
        frames
            .iter()
            .find(|f| f["stream"] == s && f["frame"].as_u64() == Some(t))
            .expect("frame")
    };
    let (a1, a2) = (find("a", 1), find("a", 2));
    assert_eq!(a2["reference"].as_u64(), Some(1));
    let weights = Weights::from_tensors(
        Path::new("generated"),
        generated_weights(&doc, "extra_neck."),
    );
    let neck =
        BfpTcea::from_weights(&weights, "extra_neck.", BfpTceaConfig::default()).expect("neck");
    let mut node = FusionNode::new(neck, LEVELS.iter().map(|s| s.to_string()).collect());
    let (f1, f2) = (features(&doc, a1), features(&doc, a2));
    run_frame(&mut node, 7, &f1, &flow_value(&a1["flow_init"]));
    // Stream 9 starts with the second frame: its own reference (a different result).
    let other = run_frame(&mut node, 9, &f2, &flow_value(&a2["flow_init"]));
    let out = run_frame(&mut node, 7, &f2, &flow_value(&a2["flow_init"]));
    for l in LEVELS {
        compare(
            &format!("stream 7 a2 {l}"),
            batch(out.get(l).expect("level")),
            &a2["outputs"][l],
        );
    }
    let p2 = |v: &Value| batch(v.get("p2").expect("p2")).to_owned();
    let diff = (&p2(&other) - &p2(&out)).mapv(f32::abs);
    assert!(
        diff.iter().any(|&d| d > 1e-3),
        "stream 9 used its own frame as the reference, so its result differs"
    );
    let gathered = node
        .neck()
        .gather(
            &LEVELS
                .iter()
                .map(|l| batch(f2.get(l).expect("level")))
                .collect::<Vec<_>>(),
        )
        .expect("gather");
    assert_eq!(node.reference(9).expect("9"), &gathered);
    assert_eq!(node.reference(7).expect("7"), &gathered);
}

/// Inputs that do not fit are errors that say what is wrong.
#[test]
fn mismatched_inputs_are_reported() {
    let doc = fixture();
    let weights = Weights::from_tensors(
        Path::new("generated"),
        generated_weights(&doc, "extra_neck."),
    );
    let neck =
        BfpTcea::from_weights(&weights, "extra_neck.", BfpTceaConfig::default()).expect("neck");
    let mut node = FusionNode::new(neck, LEVELS.iter().map(|s| s.to_string()).collect());
    let frames = doc["frames"].as_array().expect("frames");
    let a1 = &frames[0];
    let feats = features(&doc, a1);
    // A flow of another size.
    let bad = Value::single(Tensor::from_vec(&[2, 4, 4], vec![0f32; 32]).expect("flow"));
    let e = node.run(1, &feats, &bad).unwrap_err().to_string();
    assert!(e.contains("flow is 4x4"), "{e}");
    // A frame of another size on the same stream.
    node.run(1, &feats, &flow_value(&a1["flow_init"]))
        .expect("a1");
    let b1 = frames.iter().find(|f| f["stream"] == "b").expect("b1");
    let e = node
        .run(1, &features(&doc, b1), &flow_value(&b1["flow_init"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("one size"), "{e}");
    // A level missing.
    let mut missing = Value::new(PortKind::Features);
    for l in &LEVELS[..4] {
        missing.insert(l, feats.get(l).expect("level").clone());
    }
    let e = node
        .run(3, &missing, &flow_value(&a1["flow_init"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("p6"), "{e}");
    // Weights of another width.
    let e = BfpTcea::from_weights(
        &weights,
        "extra_neck.",
        BfpTceaConfig {
            in_channels: 128,
            ..BfpTceaConfig::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("mis-shaped"), "{e}");
}

/// The network input of frame `t` of `stream` as the script builds it: a crop of the
/// stream's world (generated `block` times coarser, repeated) plus noise, clamped to
/// [0, 255], then `(rgb - mean) / std`, all in f32. `[3, h, w]`.
fn image(doc: &Json, frame: &Json) -> Value {
    let inputs = &doc["inputs"];
    let stream = frame["stream"].as_str().expect("stream");
    let t = frame["frame"].as_u64().expect("frame") as usize;
    let [h, w] = usizes(&frame["image"])[..] else {
        panic!("image size")
    };
    let block = inputs["block"].as_u64().expect("block") as usize;
    let margin = inputs["margin"].as_u64().expect("margin") as usize;
    let shift = usizes(&inputs["shift"]);
    let noise_amp = inputs["noise_amplitude"].as_f64().expect("noise");
    let (ch, cw) = ((h + 2 * margin) / block, (w + 2 * margin) / block);
    let world = f32s(
        &format!("vpsnet_fusion.{stream}.world"),
        &[3, ch, cw],
        127.5,
        127.5,
    );
    let noise = f32s(
        &format!("vpsnet_fusion.{stream}.f{t}.noise"),
        &[3, h, w],
        noise_amp,
        0.0,
    );
    let (oy, ox) = (margin + shift[0] * (t - 1), margin + shift[1] * (t - 1));
    let mean = floats(&doc["config"]["mean"]);
    let std = floats(&doc["config"]["std"]);
    let mut data = Vec::with_capacity(3 * h * w);
    for k in 0..3 {
        let (m, s) = (mean[k] as f32, std[k] as f32);
        for y in 0..h {
            for x in 0..w {
                let v = world[(k * ch + (oy + y) / block) * cw + (ox + x) / block]
                    + noise[(k * h + y) * w + x];
                data.push((v.clamp(0.0, 255.0) - m) / s);
            }
        }
    }
    Value::new(PortKind::ModelImage)
        .with("tensor", Tensor::from_vec(&[3, h, w], data).expect("image"))
}

/// FlowNet2 and compute_flow, frame by frame through the node (two streams interleaved, so
/// each frame's reference is its own stream's previous image), then the Rust flow through
/// the fusion node: the pipeline `flownet2 → vpsnet_fusion` against the official outputs.
/// The weights are bound under NVIDIA's FlowNet2 checkpoint names (no `flownet2.` prefix).
#[test]
fn flownet2_matches_the_official_flow_frame_by_frame() {
    use plugin_tracking::flownet2::{FlowConfig, FlowNet2, FlowNode};
    let doc = fixture();
    // NVIDIA's FlowNet2 checkpoint names: without the `flownet2.` prefix, which the default
    // prefix falls back from.
    let net = {
        let stripped = generated_weights(&doc, "flownet2.")
            .into_iter()
            .map(|(name, t)| (name["flownet2.".len()..].to_string(), t));
        let weights = Weights::from_tensors(Path::new("FlowNet2_checkpoint.pth.tar"), stripped);
        FlowNet2::from_weights(&weights, "flownet2.", FlowConfig::default()).expect("flownet2")
    };
    let mut flow_node = FlowNode::new(net);
    let neck_weights = Weights::from_tensors(
        Path::new("generated"),
        generated_weights(&doc, "extra_neck."),
    );
    let neck = BfpTcea::from_weights(&neck_weights, "extra_neck.", BfpTceaConfig::default())
        .expect("neck");
    let mut fusion = FusionNode::new(neck, LEVELS.iter().map(|s| s.to_string()).collect());
    let mut worst: Vec<(String, f64)> = Vec::new();
    let mut note = |what: &str, err: f64| match worst.iter_mut().find(|(w, _)| w == what) {
        Some(e) => e.1 = e.1.max(err),
        None => worst.push((what.to_string(), err)),
    };
    for frame in doc["frames"].as_array().expect("frames") {
        let stream = frame["stream"].as_str().expect("stream");
        let t = frame["frame"].as_u64().expect("frame");
        let id = format!("{stream}{t}");
        let start = std::time::Instant::now();
        let mut inputs = Inputs::new();
        inputs.push("image", Some(image(&doc, frame)));
        let info = FrameInfo {
            stream: stream_id(stream),
            ..FrameInfo::default()
        };
        let (flow, trace) = flow_node
            .run(info.stream, inputs.get("image").expect("image"))
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        println!("{id}: flownet2 in {:?}", start.elapsed());
        for (what, got) in [
            ("flownetc", &trace.flownetc),
            ("flownets_1", &trace.flownets_1),
            ("flownets_2", &trace.flownets_2),
            ("flownets_d", &trace.flownets_d),
            ("flownetfusion", &trace.flownetfusion),
            ("flow_init", &trace.flow),
        ] {
            note(
                what,
                compare(&format!("{id} {what}"), got.view(), &frame[what]),
            );
        }
        let t2 = flow.get("tensor").expect("tensor");
        assert_eq!(t2.ndim(), 3, "the flow is [2, H, W]");
        // The Rust flow into the Rust neck: the two nodes chained.
        let feats = features(&doc, frame);
        let out = run_frame(&mut fusion, info.stream, &feats, &flow);
        for l in LEVELS {
            let e = compare(
                &format!("{id} {l} (chained)"),
                batch(out.get(l).expect("level")),
                &frame["outputs"][l],
            );
            note(&format!("chained output {l}"), e);
        }
    }
    // Each stream keeps its own last image.
    let frames = doc["frames"].as_array().expect("frames");
    for (stream, id) in [("a", 1), ("b", 2)] {
        let last = frames
            .iter()
            .rfind(|f| f["stream"] == stream)
            .expect("last");
        let want = image(&doc, last);
        let kept = flow_node.reference(id).expect("reference");
        assert_eq!(
            kept.as_slice().expect("contiguous"),
            want.get("tensor").unwrap().as_slice::<f32>().unwrap(),
            "stream {stream}"
        );
    }
    for (what, e) in &worst {
        println!("largest error {what}: {e:.2e}");
    }
}
