//! The vision ops against torchvision's (and the reference repositories') own outputs.
//!
//! Fixtures: `kernels/tests/fixtures/ops/ops.{json,bin}`, written by
//! `tests/reference/make_kernel_fixtures.py` (see its docstring for the format and for what
//! the reference of each op is). Floats must agree within `|a - b| <= 1e-5 · max(1, |b|)`;
//! indices (NMS, peaks, levels, integer boxes) exactly, in the same order. Each test also
//! prints how many values were bit-identical (`cargo test -- --nocapture`).

use std::collections::HashMap;
use std::path::PathBuf;

use kernels::ops::boxes::{box_iou, clip_boxes_to_image, remove_small_boxes, BoxCoder};
use kernels::ops::heatmap::{
    centernet_topk, extract_peaks, extract_peaks_reference, heatmap_nms, topk_flat,
};
use kernels::ops::nms::{batched_nms, batched_nms_reference, nms, nms_reference};
use kernels::ops::paste_masks::{
    expand_boxes, paste_masks_in_image, paste_masks_in_image_reference,
};
use kernels::ops::poolers::{setup_scales, LevelMapper, MultiScaleRoIAlign};
use kernels::ops::roi_align::{roi_align, roi_align_reference, RoiAlignParams};
use kernels::ops::yolact::{assemble_masks, assemble_masks_reference, fast_nms, FastNmsConfig};
use kernels::ops::AnchorGenerator;
use ndarray::{Array2, Array3, Array4};
use serde_json::Value;

struct Tensor {
    shape: Vec<usize>,
    f32: Vec<f32>,
    i64: Vec<i64>,
}

struct Case {
    name: String,
    op: String,
    params: Value,
    tensors: HashMap<String, Tensor>,
}

impl Case {
    fn t(&self, key: &str) -> &Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("{}: no tensor {key}", self.name))
    }
    fn f(&self, key: &str) -> &[f32] {
        &self.t(key).f32
    }
    fn i(&self, key: &str) -> &[i64] {
        &self.t(key).i64
    }
    fn shape(&self, key: &str) -> &[usize] {
        &self.t(key).shape
    }
    fn p(&self, key: &str) -> &Value {
        self.params
            .get(key)
            .unwrap_or_else(|| panic!("{}: no param {key}", self.name))
    }
    fn pf(&self, key: &str) -> f64 {
        self.p(key).as_f64().expect("number")
    }
    fn pu(&self, key: &str) -> usize {
        self.p(key).as_u64().expect("unsigned") as usize
    }
    fn boxes4(&self, key: &str) -> Vec<[f32; 4]> {
        self.f(key)
            .chunks_exact(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect()
    }
    fn arr4(&self, key: &str) -> Array4<f32> {
        let s = self.shape(key);
        Array4::from_shape_vec((s[0], s[1], s[2], s[3]), self.f(key).to_vec()).expect("shape")
    }
    fn arr3(&self, key: &str) -> Array3<f32> {
        let s = self.shape(key);
        Array3::from_shape_vec((s[0], s[1], s[2]), self.f(key).to_vec()).expect("shape")
    }
    fn arr2(&self, key: &str) -> Array2<f32> {
        let s = self.shape(key);
        Array2::from_shape_vec((s[0], s[1]), self.f(key).to_vec()).expect("shape")
    }
}

fn load() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ops");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("ops.json")).expect("ops.json"))
            .expect("json");
    let blob = std::fs::read(dir.join("ops.bin")).expect("ops.bin");
    json["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            let tensors = c["tensors"]
                .as_object()
                .expect("tensors")
                .iter()
                .map(|(k, t)| {
                    let off = t["offset"].as_u64().expect("offset") as usize;
                    let len = t["len"].as_u64().expect("len") as usize;
                    let bytes = &blob[off..off + len];
                    let shape = t["shape"]
                        .as_array()
                        .expect("shape")
                        .iter()
                        .map(|d| d.as_u64().expect("dim") as usize)
                        .collect();
                    let (mut f, mut i) = (Vec::new(), Vec::new());
                    match t["dtype"].as_str().expect("dtype") {
                        "f32" => {
                            f = bytes
                                .chunks_exact(4)
                                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                                .collect()
                        }
                        "i64" => {
                            i = bytes
                                .chunks_exact(8)
                                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                                .collect()
                        }
                        d => panic!("dtype {d}"),
                    }
                    (
                        k.clone(),
                        Tensor {
                            shape,
                            f32: f,
                            i64: i,
                        },
                    )
                })
                .collect();
            Case {
                name: c["name"].as_str().expect("name").to_string(),
                op: c["op"].as_str().expect("op").to_string(),
                params: c["params"].clone(),
                tensors,
            }
        })
        .collect()
}

fn cases(op: &str) -> Vec<Case> {
    let v: Vec<Case> = load().into_iter().filter(|c| c.op == op).collect();
    assert!(!v.is_empty(), "no fixture cases for {op}");
    v
}

/// Asserts `|a - b| <= 1e-5 · max(1, |b|)` (NaN only against NaN); returns the number of
/// bit-identical values.
fn assert_close(name: &str, got: &[f32], want: &[f32]) -> usize {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let mut exact = 0;
    let mut worst = 0.0f32;
    for (k, (&a, &b)) in got.iter().zip(want).enumerate() {
        if a.to_bits() == b.to_bits() || (a == b) {
            exact += 1;
            continue;
        }
        if b.is_nan() {
            assert!(a.is_nan(), "{name}[{k}]: got {a}, want NaN");
            exact += 1;
            continue;
        }
        let d = (a - b).abs();
        worst = worst.max(d / b.abs().max(1.0));
        assert!(
            d <= 1e-5 * b.abs().max(1.0),
            "{name}[{k}]: got {a}, want {b}"
        );
    }
    println!(
        "{name}: {} values, {exact} bit-identical, worst relative difference {worst:e}",
        got.len()
    );
    exact
}

fn as_usize(v: &[i64]) -> Vec<usize> {
    v.iter().map(|&x| x as usize).collect()
}

#[test]
fn every_fixture_op_is_tested() {
    let known = [
        "roi_align",
        "multiscale_roi_align",
        "level_mapper",
        "nms",
        "batched_nms",
        "box_iou",
        "clip_boxes_to_image",
        "remove_small_boxes",
        "box_coder",
        "anchors",
        "paste_masks",
        "expand_boxes",
        "yolact_assemble",
        "yolact_fast_nms",
        "centernet_peaks",
        "topk_flat",
        "corner_pool",
    ];
    for c in load() {
        assert!(
            known.contains(&c.op.as_str()),
            "fixture op {} ({}) has no test",
            c.op,
            c.name
        );
    }
}

#[test]
fn roi_align_matches_torchvision() {
    for c in cases("roi_align") {
        let x = c.arr4("x");
        let rois: Vec<[f32; 5]> = c
            .f("rois")
            .chunks_exact(5)
            .map(|r| [r[0], r[1], r[2], r[3], r[4]])
            .collect();
        let p = RoiAlignParams {
            pooled_height: c.pu("pooled_height"),
            pooled_width: c.pu("pooled_width"),
            spatial_scale: c.pf("spatial_scale") as f32,
            sampling_ratio: c.p("sampling_ratio").as_i64().expect("int") as i32,
            aligned: c.p("aligned").as_bool().expect("bool"),
            plus_one_end: false,
        };
        let fast = roi_align(x.view(), &rois, &p).expect("roi_align");
        assert_eq!(fast.shape(), c.shape("out"), "{}", c.name);
        assert_close(&c.name, fast.as_slice().expect("contiguous"), c.f("out"));
        let reference = roi_align_reference(x.view(), &rois, &p).expect("reference");
        assert_close(
            &format!("{} (reference)", c.name),
            reference.as_slice().expect("contiguous"),
            c.f("out"),
        );
    }
}

#[test]
fn multiscale_roi_align_matches_torchvision() {
    for c in cases("multiscale_roi_align") {
        let levels = [c.arr4("p2"), c.arr4("p3"), c.arr4("p4"), c.arr4("p5")];
        let views: Vec<_> = levels.iter().map(|l| l.view()).collect();
        let all = c.boxes4("boxes");
        let counts: Vec<usize> = c
            .p("boxes_per_image")
            .as_array()
            .expect("list")
            .iter()
            .map(|v| v.as_u64().expect("n") as usize)
            .collect();
        let mut per_image = Vec::new();
        let mut start = 0;
        for n in counts {
            per_image.push(&all[start..start + n]);
            start += n;
        }
        let shapes: Vec<(usize, usize)> = c
            .p("image_shapes")
            .as_array()
            .expect("list")
            .iter()
            .map(|s| {
                (
                    s[0].as_u64().expect("h") as usize,
                    s[1].as_u64().expect("w") as usize,
                )
            })
            .collect();
        let m = MultiScaleRoIAlign {
            output_size: (c.pu("output_height"), c.pu("output_width")),
            sampling_ratio: c.p("sampling_ratio").as_i64().expect("int") as i32,
            canonical_scale: 224,
            canonical_level: 4,
            rule: Default::default(),
            aligned: false,
            plus_one_end: false,
        };
        let fast = m.forward(&views, &per_image, &shapes).expect("forward");
        assert_eq!(fast.shape(), c.shape("out"));
        assert_close(&c.name, fast.as_slice().expect("contiguous"), c.f("out"));
        let reference = m
            .forward_reference(&views, &per_image, &shapes)
            .expect("reference");
        assert_close(
            &format!("{} (reference)", c.name),
            reference.as_slice().expect("contiguous"),
            c.f("out"),
        );
    }
}

#[test]
fn level_mapper_matches_torchvision() {
    for c in cases("level_mapper") {
        let k_min = c.p("k_min").as_i64().expect("k_min") as i32;
        let k_max = c.p("k_max").as_i64().expect("k_max") as i32;
        let mapper = LevelMapper::new(k_min, k_max).expect("mapper");
        let got: Vec<i64> = c
            .boxes4("boxes")
            .iter()
            .map(|b| mapper.level(b).expect("finite") as i64)
            .collect();
        assert_eq!(got, c.i("out_levels"), "{}", c.name);
        // The scales torchvision inferred for the same levels and images.
        let want: Vec<f64> = c
            .p("scales")
            .as_array()
            .expect("scales")
            .iter()
            .map(|v| v.as_f64().expect("f"))
            .collect();
        let (scales, m) = setup_scales(&[16, 8, 4, 2], &[(61, 90), (58, 96)]).expect("scales");
        assert_eq!(scales, want);
        assert_eq!((m.k_min, m.k_max), (k_min, k_max));
    }
}

#[test]
fn nms_matches_torchvision() {
    for c in cases("nms") {
        let boxes = c.boxes4("boxes");
        let scores = c.f("scores");
        let thr = c.pf("iou_threshold");
        let fast = nms(&boxes, scores, thr).expect("nms");
        let reference = nms_reference(&boxes, scores, thr).expect("nms_reference");
        assert_eq!(fast, reference, "{}: fast vs reference", c.name);
        if c.tensors.contains_key("out_stable") {
            // Tied scores among more than 16 boxes: torch's visiting order of ties is
            // arbitrary; ours is the stable one.
            assert_eq!(fast, as_usize(c.i("out_stable")), "{}", c.name);
            if c.p("tie_sets_equal").as_bool().expect("bool") {
                let mut a = fast.clone();
                let mut b = as_usize(c.i("out"));
                a.sort_unstable();
                b.sort_unstable();
                assert_eq!(a, b, "{}: kept set", c.name);
            }
            println!(
                "{}: {} kept (stable tie order), set equal to torchvision's",
                c.name,
                fast.len()
            );
        } else {
            assert_eq!(fast, as_usize(c.i("out")), "{}", c.name);
            println!("{}: {} kept, identical to torchvision", c.name, fast.len());
        }
    }
}

#[test]
fn batched_nms_matches_torchvision() {
    for c in cases("batched_nms") {
        let boxes = c.boxes4("boxes");
        let scores = c.f("scores");
        let idxs = c.i("idxs");
        let thr = c.pf("iou_threshold");
        let want_path = c.p("path").as_str().expect("path");
        assert_eq!(want_path == "vanilla", boxes.len() * 4 > 4000, "{}", c.name);
        let fast = batched_nms(&boxes, scores, idxs, thr).expect("batched_nms");
        assert_eq!(fast, as_usize(c.i("out")), "{}", c.name);
        let reference = batched_nms_reference(&boxes, scores, idxs, thr).expect("reference");
        assert_eq!(reference, fast, "{}", c.name);
        println!(
            "{} ({want_path}): {} kept, identical to torchvision",
            c.name,
            fast.len()
        );
    }
}

#[test]
fn box_ops_match_torchvision() {
    for c in cases("box_iou") {
        let iou = box_iou(&c.boxes4("boxes1"), &c.boxes4("boxes2"));
        assert_eq!(iou.shape(), c.shape("out"));
        assert_close(&c.name, iou.as_slice().expect("contiguous"), c.f("out"));
    }
    for c in cases("clip_boxes_to_image") {
        let clipped = clip_boxes_to_image(&c.boxes4("boxes"), (c.pu("height"), c.pu("width")));
        let flat: Vec<f32> = clipped.iter().flatten().copied().collect();
        assert_close(&c.name, &flat, c.f("out"));
    }
    for c in cases("remove_small_boxes") {
        let keep = remove_small_boxes(&c.boxes4("boxes"), c.pf("min_size") as f32);
        assert_eq!(keep, as_usize(c.i("out")), "{}", c.name);
    }
    for c in cases("box_coder") {
        let w: Vec<f32> = c
            .p("weights")
            .as_array()
            .expect("w")
            .iter()
            .map(|v| v.as_f64().expect("f") as f32)
            .collect();
        let coder = BoxCoder::new([w[0], w[1], w[2], w[3]]);
        let rel = c.arr2("rel_codes");
        let props = c.boxes4("proposals");
        let dec = coder.decode(rel.view(), &props).expect("decode");
        assert_eq!(dec.shape(), c.shape("out_decoded"));
        assert_close(
            &format!("{} decode", c.name),
            dec.as_slice().expect("contiguous"),
            c.f("out_decoded"),
        );
        let enc = coder.encode(&c.boxes4("targets"), &props).expect("encode");
        let flat: Vec<f32> = enc.iter().flatten().copied().collect();
        assert_close(&format!("{} encode", c.name), &flat, c.f("out_encoded"));
    }
}

#[test]
fn anchors_match_torchvision() {
    for c in cases("anchors") {
        let lists = |key: &str| -> Vec<Vec<f32>> {
            c.p(key)
                .as_array()
                .expect("list")
                .iter()
                .map(|l| {
                    l.as_array()
                        .expect("list")
                        .iter()
                        .map(|v| v.as_f64().expect("f") as f32)
                        .collect()
                })
                .collect()
        };
        let g = AnchorGenerator::new(lists("sizes"), lists("aspect_ratios")).expect("generator");
        let img = c.p("image_size").as_array().expect("size");
        let image = (
            img[0].as_u64().expect("h") as usize,
            img[1].as_u64().expect("w") as usize,
        );
        let grids: Vec<(usize, usize)> = c
            .p("grid_sizes")
            .as_array()
            .expect("grids")
            .iter()
            .map(|g| {
                (
                    g[0].as_u64().expect("h") as usize,
                    g[1].as_u64().expect("w") as usize,
                )
            })
            .collect();
        let anchors = g.generate(image, &grids).expect("generate");
        let flat: Vec<f32> = anchors.concat().iter().flatten().copied().collect();
        let exact = assert_close(&c.name, &flat, c.f("out"));
        assert_eq!(exact, flat.len(), "{}: anchors are exact integers", c.name);
    }
}

#[test]
fn paste_masks_matches_torchvision() {
    for c in cases("paste_masks") {
        let masks = c.arr3("masks");
        let boxes = c.boxes4("boxes");
        let shape = (c.pu("height"), c.pu("width"));
        let padding = c.pu("padding");
        let m = masks.dim().2;
        let scale = ((m + 2 * padding) as f64 / m as f64) as f32;
        let ints: Vec<i64> = expand_boxes(&boxes, scale)
            .iter()
            .flatten()
            .map(|&v| v as i64)
            .collect();
        assert_eq!(
            ints,
            c.i("out_expanded"),
            "{}: expanded integer boxes",
            c.name
        );
        let fast = paste_masks_in_image(masks.view(), &boxes, shape, padding).expect("paste");
        assert_eq!(fast.shape(), c.shape("out"));
        assert_close(&c.name, fast.as_slice().expect("contiguous"), c.f("out"));
        let reference = paste_masks_in_image_reference(masks.view(), &boxes, shape, padding)
            .expect("reference");
        assert_close(
            &format!("{} (reference)", c.name),
            reference.as_slice().expect("contiguous"),
            c.f("out"),
        );
    }
    for c in cases("expand_boxes") {
        let ints: Vec<i64> = expand_boxes(&c.boxes4("boxes"), c.pf("scale") as f32)
            .iter()
            .flatten()
            .map(|&v| v as i64)
            .collect();
        assert_eq!(ints, c.i("out"), "{}", c.name);
    }
}

#[test]
fn yolact_matches_reference() {
    for c in cases("yolact_assemble") {
        let proto = c.arr3("proto");
        let coeffs = c.arr2("coeffs");
        let boxes = c.boxes4("boxes");
        let crop = c.p("crop").as_bool().expect("bool");
        let fast = assemble_masks(proto.view(), coeffs.view(), &boxes, crop).expect("assemble");
        assert_eq!(fast.shape(), c.shape("out"));
        assert_close(&c.name, fast.as_slice().expect("contiguous"), c.f("out"));
        let reference =
            assemble_masks_reference(proto.view(), coeffs.view(), &boxes, crop).expect("reference");
        assert_close(
            &format!("{} (reference)", c.name),
            reference.as_slice().expect("contiguous"),
            c.f("out"),
        );
    }
    for c in cases("yolact_fast_nms") {
        let boxes = c.boxes4("boxes");
        let scores = c.arr2("scores");
        let cfg = FastNmsConfig {
            iou_threshold: c.pf("iou_threshold") as f32,
            top_k: c.pu("top_k"),
            max_num_detections: c.pu("max_num_detections"),
            second_threshold: None,
        };
        let dets = fast_nms(&boxes, scores.view(), &cfg).expect("fast_nms");
        let idx: Vec<i64> = dets.iter().map(|d| d.index as i64).collect();
        let cls: Vec<i64> = dets.iter().map(|d| d.class as i64).collect();
        let sc: Vec<f32> = dets.iter().map(|d| d.score).collect();
        assert_eq!(idx, c.i("out_index"), "{}", c.name);
        assert_eq!(cls, c.i("out_class"), "{}", c.name);
        assert_close(&c.name, &sc, c.f("out_score"));
    }
}

fn peaks_check(
    name: &str,
    got: &[kernels::ops::Peak],
    want_scores: &[f32],
    want_index: &[i64],
    want_class: Option<&[i64]>,
    flat_hw: Option<usize>,
) {
    let sc: Vec<f32> = got.iter().map(|p| p.score).collect();
    assert_close(name, &sc, want_scores);
    let idx: Vec<i64> = got
        .iter()
        .map(|p| match flat_hw {
            Some(hw) => (p.class * hw + p.index) as i64,
            None => p.index as i64,
        })
        .collect();
    assert_eq!(idx, want_index, "{name}: indices");
    if let Some(cls) = want_class {
        let got_cls: Vec<i64> = got.iter().map(|p| p.class as i64).collect();
        assert_eq!(got_cls, cls, "{name}: classes");
    }
}

#[test]
fn heatmap_peaks_match_centernet() {
    for c in cases("centernet_peaks") {
        let heat = c.arr3("heat");
        let k = c.pu("k");
        let sup = heatmap_nms(heat.view(), 3).expect("nms");
        assert_close(
            &format!("{} suppressed", c.name),
            sup.as_slice().expect("contiguous"),
            c.f("out_suppressed"),
        );
        let peaks = extract_peaks(heat.view(), k).expect("peaks");
        peaks_check(
            &c.name,
            &peaks,
            c.f("out_score"),
            c.i("out_index"),
            Some(c.i("out_class")),
            None,
        );
        assert_eq!(
            peaks,
            extract_peaks_reference(heat.view(), k).expect("reference")
        );
        assert_eq!(peaks, centernet_topk(sup.view(), k).expect("topk"));
    }
    for c in cases("topk_flat") {
        let heat = c.arr3("heat");
        let (_, h, w) = heat.dim();
        let peaks = topk_flat(heat.view(), c.pu("k")).expect("topk");
        peaks_check(
            &c.name,
            &peaks,
            c.f("out_score"),
            c.i("out_index"),
            None,
            Some(h * w),
        );
    }
}

/// CornerNet's corner pooling against its C++ extension's loops (ported to torch ops in the
/// fixture script): every value equal, a NaN and an infinity included.
#[test]
fn corner_pooling_matches_cornernet() {
    use kernels::ops::corner_pool::{corner_pool, CornerPool};
    let all = cases("corner_pool");
    assert_eq!(all.len(), 4);
    for c in all {
        let s = c.shape("x");
        let x = Array4::from_shape_vec((s[0], s[1], s[2], s[3]), c.f("x").to_vec()).expect("x");
        let pool = match c.p("pool").as_str().expect("pool") {
            "top" => CornerPool::Top,
            "left" => CornerPool::Left,
            "bottom" => CornerPool::Bottom,
            "right" => CornerPool::Right,
            other => panic!("unknown pool {other}"),
        };
        let got = corner_pool(x.view(), pool).expect("corner pool");
        let want = c.f("out");
        assert_eq!(got.len(), want.len(), "{}: size", c.name);
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{} [{i}]: {a} vs {b}",
                c.name
            );
        }
    }
}
