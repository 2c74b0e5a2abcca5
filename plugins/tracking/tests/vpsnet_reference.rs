//! `vpsnet_track_head` against VPSNet's official association (mcahny/vps @ 138503ed), run on
//! the CPU by `tests/reference/make_vpsnet_track_fixtures.py` with seeded random weights
//! (`fixtures/vpsnet_track_head.pth`, the official `track_head.fcs.*` names, 32 wide instead
//! of 1024) on generated features (`kernels::weights::generated_tensor`, bit for bit the
//! script's generator) over two videos whose detections take every path of the association.
//!
//! Per frame: the RoI features (per-RoI sums and first values), the embeddings, the match
//! scores and comprehensive scores within 1e-4 relative, and the same object ids, memory
//! size, labels and boxes. Then: two streams interleaved keep separate memories, and a frame
//! without instances keeps the memory.

use std::path::PathBuf;

use kernels::ops::roi_align::RoiAlignWorkspace;
use kernels::weights::generated_tensor;
use ndarray::Array2;
use plugin_sdk::{FrameInfo, Inputs, Instances, Node, ParamValue, Params, PortKind, Tensor, Value};
use plugin_tracking::vpsnet::{track_head_kind, TrackHeadNode};
use serde_json::Value as Json;

/// Match scores, comprehensive scores and embeddings: `|a - b| <= TOL * max(1, |b|)`.
const TOL: f64 = 1e-4;
/// RoI features: the same f32 operations in the same order as the script's kernel port.
const ROI_TOL: f64 = 1e-5;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture() -> Json {
    let path = fixtures().join("vpsnet_track.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).expect("fixture json")
}

fn floats(j: &Json) -> Vec<f64> {
    match j {
        Json::Array(items) => items.iter().flat_map(floats).collect(),
        v => vec![v.as_f64().expect("number")],
    }
}

fn ints(j: &Json) -> Vec<i64> {
    j.as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_i64().expect("int"))
        .collect()
}

fn usizes(j: &Json) -> Vec<usize> {
    ints(j).into_iter().map(|v| v as usize).collect()
}

/// Every declared default, the fixture's weights and its embedding width.
fn params(doc: &Json) -> Params {
    let mut p = Params::new();
    for s in &track_head_kind().spec.params {
        if let Some(d) = &s.default {
            p.set(&s.name, d.clone());
        }
    }
    let weights = fixtures().join(doc["weights"].as_str().expect("weights"));
    p.set(
        "weights",
        ParamValue::Str(weights.to_string_lossy().into_owned()),
    );
    let fc_out = doc["config"]["fc_out_channels"].as_i64().expect("fc_out");
    p.set("fc_out_channels", ParamValue::Int(fc_out));
    p
}

/// P2..P5 of one frame as the script builds them: the world, generated `block` times coarser
/// and repeated, plus the frame's noise, summed in f32.
fn features(doc: &Json, video: i64, fid: i64) -> Value {
    let f = &doc["features"];
    let block = f["world_block"].as_u64().expect("block") as usize;
    let noise_amp = f["noise_amplitude"].as_f64().expect("noise") as f32;
    let mut value = Value::new(PortKind::Features);
    for (name, shape) in f["levels"]
        .as_array()
        .expect("levels")
        .iter()
        .zip(f["shapes"].as_array().expect("shapes"))
    {
        let name = name.as_str().expect("level");
        let l = &name[1..];
        let [c, h, w] = usizes(shape)[..] else {
            panic!("shape {shape}")
        };
        let (ch, cw) = (h.div_ceil(block), w.div_ceil(block));
        let world = generated_tensor(&format!("vpsnet_track.world.p{l}"), &[c, ch, cw], 1.0, 0.0)
            .expect("world");
        let noise = generated_tensor(
            &format!("vpsnet_track.v{video}.f{fid}.p{l}"),
            &[c, h, w],
            noise_amp,
            0.0,
        )
        .expect("noise");
        let (world, noise) = (
            world.as_slice::<f32>().unwrap(),
            noise.as_slice::<f32>().unwrap(),
        );
        let data: Vec<f32> = (0..c * h * w)
            .map(|i| {
                let (k, y, x) = (i / (h * w), (i / w) % h, i % w);
                world[(k * ch + y / block) * cw + x / block] + noise[i]
            })
            .collect();
        value = value.with(name, Tensor::from_vec(&[c, h, w], data).expect("level"));
    }
    value
}

fn instances(frame: &Json) -> Value {
    let boxes = frame["boxes"]
        .as_array()
        .expect("boxes")
        .iter()
        .map(|b| {
            let v = floats(b);
            [v[0] as f32, v[1] as f32, v[2] as f32, v[3] as f32]
        })
        .collect();
    Instances {
        boxes,
        scores: floats(&frame["scores"]).iter().map(|&s| s as f32).collect(),
        classes: ints(&frame["labels"]),
    }
    .to_value()
    .expect("instances")
}

/// Largest `|a - b| / max(1, |b|)`, asserting it is within `tol`.
fn compare(what: &str, got: &[f32], want: &[f64], tol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0f64;
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        let err = (a as f64 - b).abs() / b.abs().max(1.0);
        assert!(err <= tol, "{what}[{i}]: {a} vs {b} (error {err:.3e})");
        worst = worst.max(err);
    }
    worst
}

fn flat(a: &Array2<f32>) -> Vec<f32> {
    a.iter().copied().collect()
}

fn track_ids(v: &Value) -> Vec<i64> {
    v.tensor("track_ids")
        .expect("track_ids")
        .as_slice::<i64>()
        .expect("i64")
        .to_vec()
}

#[test]
fn vpsnet_kind_is_documented() {
    assert_eq!(
        plugin_sdk::lint_kinds(&[track_head_kind()]),
        Vec::<String>::new()
    );
}

#[test]
fn vpsnet_matches_the_official_association() {
    let doc = fixture();
    let mut node = TrackHeadNode::from_params(&params(&doc)).expect("node");
    let mut ws = RoiAlignWorkspace::new();
    let (mut worst_roi, mut worst_emb, mut worst_match, mut worst_comp) = (0f64, 0f64, 0f64, 0f64);
    for frame in doc["frames"].as_array().expect("frames") {
        let (video, fid) = (
            frame["video"].as_i64().unwrap(),
            frame["fid"].as_i64().unwrap(),
        );
        let what = format!("video {video} frame {fid}");
        let feats = features(&doc, video, fid);
        let inst = instances(frame);

        // RoI features and embeddings, through the head the node uses.
        let levels = vision_common::feature_levels(
            "test",
            &feats,
            &["p2", "p3", "p4", "p5"].map(String::from),
        )
        .unwrap();
        let boxes = Instances::from_value(&inst).unwrap().boxes;
        let pooled = node.head().roi_features(&mut ws, &levels, &boxes).unwrap();
        for (k, roi) in pooled.outer_iter().enumerate() {
            let sum: f64 = roi.iter().map(|&v| v as f64).sum();
            let abs_sum: f64 = roi.iter().map(|&v| (v as f64).abs()).sum();
            let want_sum = frame["roi_feat_sums"][k].as_f64().unwrap();
            let want_abs = frame["roi_feat_abs_sums"][k].as_f64().unwrap();
            let scale = want_abs.max(1.0);
            for (got, want) in [(sum, want_sum), (abs_sum, want_abs)] {
                let err = (got - want).abs() / scale;
                assert!(err <= ROI_TOL, "{what}: RoI {k} sum {got} vs {want}");
                worst_roi = worst_roi.max(err);
            }
            let first: Vec<f32> = roi.iter().take(16).copied().collect();
            worst_roi = worst_roi.max(compare(
                &format!("{what}: RoI {k} first values"),
                &first,
                &floats(&frame["roi_feat_first"][k]),
                ROI_TOL,
            ));
        }
        let emb = node.head().embed(pooled).unwrap();
        worst_emb = worst_emb.max(compare(
            &format!("{what}: embeddings"),
            &flat(&emb),
            &floats(&frame["embeddings"]),
            TOL,
        ));

        // The node: ids, scores and memory.
        let (out, assoc) = node.run(video as u32, &feats, &inst).expect("run");
        let want_ids = ints(&frame["obj_ids"]);
        assert_eq!(assoc.ids, want_ids, "{what}: ids");
        assert_eq!(track_ids(&out), want_ids, "{what}: track_ids");
        if frame["match_score"].is_null() {
            assert!(assoc.match_score.is_empty(), "{what}: a first frame");
        } else {
            let n = want_ids.len();
            assert_eq!(assoc.match_score.nrows(), n);
            worst_match = worst_match.max(compare(
                &format!("{what}: match_score"),
                &flat(&assoc.match_score),
                &floats(&frame["match_score"]),
                TOL,
            ));
            worst_comp = worst_comp.max(compare(
                &format!("{what}: comp"),
                &flat(&assoc.comp),
                &floats(&frame["comp"]),
                TOL,
            ));
        }
        let memory = node.memory(video as u32).expect("memory");
        assert_eq!(
            memory.len() as i64,
            frame["memory_size"].as_i64().unwrap(),
            "{what}: memory size"
        );
        assert_eq!(
            memory.labels(),
            ints(&frame["memory_labels"]).as_slice(),
            "{what}: memory labels"
        );
        let mem_boxes: Vec<f32> = memory.boxes().iter().flatten().copied().collect();
        compare(
            &format!("{what}: memory boxes"),
            &mem_boxes,
            &floats(&frame["memory_boxes"]),
            0.0,
        );
    }
    eprintln!(
        "largest errors: RoI features {worst_roi:.2e}, embeddings {worst_emb:.2e}, match_score {worst_match:.2e}, comp {worst_comp:.2e}"
    );
}

/// Runs `frame` through `node` as a frame of `stream`; the track ids.
fn process(node: &mut Box<dyn Node>, doc: &Json, frame: &Json, stream: u32) -> Vec<i64> {
    let (video, fid) = (
        frame["video"].as_i64().unwrap(),
        frame["fid"].as_i64().unwrap(),
    );
    let mut inputs = Inputs::new();
    inputs.push("features", Some(features(doc, video, fid)));
    inputs.push("instances", Some(instances(frame)));
    let info = FrameInfo {
        stream,
        ..FrameInfo::default()
    };
    let out = node.process(&info, &inputs).expect("process");
    let v = out.get("instances").expect("instances");
    v.validate().expect("valid instances");
    track_ids(v)
}

#[test]
fn vpsnet_streams_keep_their_own_memory() {
    let doc = fixture();
    let p = params(&doc);
    let frames = doc["frames"].as_array().expect("frames");
    let video = |v: i64| -> Vec<&Json> {
        frames
            .iter()
            .filter(|f| f["video"].as_i64() == Some(v))
            .collect()
    };
    let (v1, v2) = (video(1), video(2));
    assert!(v1.len() >= 3 && v2.len() >= 2);

    // Interleaved on two streams, each video gets the ids it gets alone.
    let mut node = (track_head_kind().create)(&p).expect("node");
    let order = [(&v1, 0), (&v2, 0), (&v1, 1), (&v2, 1)]
        .into_iter()
        .chain((2..v1.len()).map(|i| (&v1, i)));
    for (frames, i) in order {
        let frame = frames[i];
        let stream = frame["video"].as_u64().unwrap() as u32 + 10;
        let ids = process(&mut node, &doc, frame, stream);
        assert_eq!(ids, ints(&frame["obj_ids"]), "stream {stream}, frame {i}");
    }

    // The second video on the first video's stream continues its memory instead: the reset
    // of a new video is the stream's.
    let mut node = (track_head_kind().create)(&p).expect("node");
    for frame in &v1 {
        process(&mut node, &doc, frame, 0);
    }
    let continued = process(&mut node, &doc, v2[0], 0);
    assert_ne!(continued, ints(&v2[0]["obj_ids"]));
}

#[test]
fn vpsnet_frame_without_instances_keeps_the_memory() {
    let doc = fixture();
    let frames: Vec<&Json> = doc["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .filter(|f| f["video"].as_i64() == Some(2))
        .collect();
    let mut node = (track_head_kind().create)(&params(&doc)).expect("node");
    assert_eq!(
        process(&mut node, &doc, frames[0], 7),
        ints(&frames[0]["obj_ids"])
    );
    let empty = serde_json::json!({
        "video": 2, "fid": 9, "boxes": [], "scores": [], "labels": []
    });
    assert_eq!(process(&mut node, &doc, &empty, 7), Vec::<i64>::new());
    assert_eq!(
        process(&mut node, &doc, frames[1], 7),
        ints(&frames[1]["obj_ids"])
    );
    // A new stream whose first frame is empty starts its ids at 0 with the next detections.
    assert_eq!(process(&mut node, &doc, &empty, 8), Vec::<i64>::new());
    assert_eq!(
        process(&mut node, &doc, frames[1], 8),
        (0..frames[1]["obj_ids"].as_array().unwrap().len() as i64).collect::<Vec<_>>()
    );
}

#[test]
fn vpsnet_weights_of_another_width_are_reported() {
    let doc = fixture();
    let mut p = params(&doc);
    p.set("fc_out_channels", ParamValue::Int(1024));
    let err = TrackHeadNode::from_params(&p).unwrap_err().to_string();
    assert!(err.contains("track_head.fcs.0.weight"), "{err}");
    assert!(err.contains("vpsnet_track_head.pth"), "{err}");
    let mut p = params(&doc);
    p.set("match_coeff", ParamValue::FloatList(vec![1.0, 2.0]));
    assert!(TrackHeadNode::from_params(&p).is_err());
    let mut p = params(&doc);
    p.set("featmap_strides", ParamValue::IntList(vec![4, 8, 16]));
    assert!(TrackHeadNode::from_params(&p).is_err());
}
