//! The YOLACT nodes against the official code: `tests/reference/make_yolact_fixtures.py` ran
//! dbolya/yolact @ 902073d4 (`yolact_resnet50_config`, `eval.py`'s path on a photo) on the CPU
//! with generated weights and stored summaries of the network input, the priors and the raw
//! outputs (locations, class scores, coefficients, prototypes), the final detections and
//! their masks (COCO RLE) in `tests/fixtures/yolact_r50.json`. This test regenerates the same
//! weights bit for bit (`kernels::weights::generated_tensor`), writes them as a `.safetensors`
//! file under YOLACT's names, runs `yolact_preprocess` → `resnet` (YOLACT's stage names) →
//! `yolact` from their plugin libraries, and compares: sampled values, per-channel means,
//! minimum and maximum within `|a - b| <= 1e-4 · max(1, |b|)`; the same detections (class,
//! score within 1e-4, decoded box IoU >= 0.999, integer boxes within one pixel); masks on
//! at least 99.9% of the pixels.

#[path = "../../../tests/support/reference.rs"]
mod reference;

use std::path::Path;

use kernels::Tensor;
use ndarray::ArrayView4;
use plugin_sdk::{Node, ParamValue, Value};
use plugin_yolact::head::{Yolact, YolactConfig, COCO_CATEGORY_IDS};
use reference::{batch_of_one, create, floats, generated, iou, root, run_with, save};
use serde_json::Value as Json;

const TOL: f64 = 1e-4;

fn fixture() -> Json {
    reference::fixture("yolact_r50.json")
}

fn write_weights(doc: &Json, path: &Path) {
    save(&generated(&doc["weights"]), path);
}

fn compare(what: &str, data: &[f32], shape: &[usize], s: &Json) -> f64 {
    reference::compare(what, data, shape, s, TOL)
}

/// The raw outputs (locations, class scores, coefficients, prototypes) against their
/// summaries: the largest relative error.
fn compare_raw(what: &str, raw: &plugin_yolact::head::RawOutputs, want: &Json) -> f64 {
    fn two(a: &ndarray::Array2<f32>) -> (&[f32], &[usize]) {
        (a.as_slice().unwrap(), a.shape())
    }
    [
        ("loc", two(&raw.loc)),
        ("conf", two(&raw.conf)),
        ("mask", two(&raw.mask)),
        ("proto", (raw.proto.as_slice().unwrap(), raw.proto.shape())),
    ]
    .into_iter()
    .fold(0.0, |worst: f64, (name, (data, shape))| {
        worst.max(compare(
            &format!("{what} raw {name}"),
            data,
            shape,
            &want[name],
        ))
    })
}

/// COCO compressed RLE to a row-major 0/1 mask.
fn rle_mask(r: &Json) -> Vec<u8> {
    let size = floats(&r["size"]);
    let (h, w) = (size[0] as usize, size[1] as usize);
    let counts = plugin_io::rle::decode(r["counts"].as_str().unwrap()).unwrap();
    let mut col_major = Vec::with_capacity(h * w);
    for (k, &c) in counts.iter().enumerate() {
        col_major.extend(std::iter::repeat_n((k % 2) as u8, c as usize));
    }
    let mut out = vec![0u8; h * w];
    for x in 0..w {
        for y in 0..h {
            out[y * w + x] = col_major[x * h + y];
        }
    }
    out
}

fn weights_params(path: &Path) -> Vec<(&'static str, ParamValue)> {
    vec![("weights", ParamValue::Str(path.display().to_string()))]
}

fn body(path: &Path, depth: i64) -> Result<Box<dyn Node>, String> {
    let mut p = weights_params(path);
    p.extend([
        ("prefix", ParamValue::Str("backbone.".into())),
        ("stage_names", ParamValue::Str("yolact".into())),
        ("depth", ParamValue::Int(depth)),
        ("bn_eps", ParamValue::Float(1e-5)),
        ("returned_layers", ParamValue::IntList(vec![2, 3, 4])),
    ]);
    create("resnet", &p)
}

/// The node's detections `out` (and the library's decoded boxes, same order) against the
/// official `det` (and its RLE `masks`): the same number, each official detection matched by
/// class (`category` of its index), score within 1e-4 and decoded box IoU >= 0.999, integer
/// boxes within one pixel, and masks agreeing on >= 99.9% of pixels.
fn check_detections(
    what: &str,
    out: &Value,
    boxes_relative: &[[f32; 4]],
    det: &Json,
    masks_rle: Option<&Json>,
    category: impl Fn(usize) -> i64,
    worst: f64,
) {
    let classes: Vec<usize> = floats(&det["classes"])
        .iter()
        .map(|&c| c as usize)
        .collect();
    let scores = floats(&det["scores"]);
    let boxes = det.get("boxes").map(floats);
    let boxes_float = floats(&det["boxes_float"]);
    let n = classes.len();
    let ours_scores = out.tensor("scores").unwrap().as_slice::<f32>().unwrap();
    let ours_classes = out.tensor("classes").unwrap().as_slice::<i64>().unwrap();
    let ours_boxes = out.tensor("boxes").unwrap().as_slice::<f32>().unwrap();
    assert_eq!(ours_scores.len(), n, "{what}: number of detections");
    let masks = out.tensor("masks").unwrap();
    let (h, wd) = (masks.shape()[1], masks.shape()[2]);
    let masks = masks.as_slice::<u8>().unwrap();
    let prior_index: Vec<usize> = floats(&det["prior_index"])
        .iter()
        .map(|&v| v as usize)
        .collect();
    let mut used = vec![false; n];
    let (mut agree, mut total) = (0usize, 0usize);
    for j in 0..n {
        // Scores closer than the tolerance may swap places: match by class, score and box.
        let i = (0..n)
            .find(|&i| {
                !used[i]
                    && ours_classes[i] == category(classes[j])
                    && (ours_scores[i] as f64 - scores[j]).abs() <= TOL
                    && iou(
                        &boxes_relative[i].map(|v| v as f64),
                        &boxes_float[j * 4..j * 4 + 4],
                    ) >= 0.999
            })
            .unwrap_or_else(|| {
                panic!(
                    "{what}: official detection {j} (class {}, score {}, prior {}) not found",
                    classes[j], scores[j], prior_index[j]
                )
            });
        used[i] = true;
        if let Some(boxes) = &boxes {
            for k in 0..4 {
                let d = (ours_boxes[i * 4 + k] as f64 - boxes[j * 4 + k]).abs();
                assert!(
                    d <= 1.0,
                    "{what}: detection {j} box {k}: ours {}, official {}",
                    ours_boxes[i * 4 + k],
                    boxes[j * 4 + k]
                );
            }
        }
        if let Some(rle) = masks_rle {
            let theirs = rle_mask(&rle[j]);
            let ours = &masks[i * h * wd..(i + 1) * h * wd];
            total += ours.len();
            agree += ours.iter().zip(&theirs).filter(|(a, b)| a == b).count();
        }
    }
    let share = agree as f64 / total.max(1) as f64;
    let masks = match masks_rle {
        Some(_) => format!("masks agree on {:.4}% of pixels", 100.0 * share),
        None => "masks not compared".into(),
    };
    eprintln!(
        "{what}: {n} detections match the official code (largest relative error {worst:.1e}); {masks}"
    );
    assert!(
        masks_rle.is_none() || share >= 0.999,
        "{what}: masks agree on only {:.4}%",
        100.0 * share
    );
}

#[test]
fn yolact_nodes_match_the_official_code() {
    let doc = fixture();
    let dir = std::env::temp_dir().join(format!("yolact-ref-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let weights = dir.join("yolact_r50.safetensors");
    write_weights(&doc, &weights);
    let mut pre = create("yolact_preprocess", &[]).unwrap();
    let mut backbone = body(&weights, 50).unwrap();
    let mut head = create("yolact", &weights_params(&weights)).unwrap();
    let w = kernels::weights::Weights::load(&weights).unwrap();
    let model = Yolact::from_weights(&w, "", YolactConfig::default()).unwrap();

    for case in doc["cases"].as_array().unwrap() {
        let photo = case["photo"].as_str().unwrap();
        let image =
            plugin_io::image_source::read_image(&root().join("assets").join(photo)).unwrap();
        let x = run_with(&mut pre, &[("image", &Value::image(image))], "image");
        let t = x.tensor("tensor").unwrap();
        let e_in = compare(
            &format!("{photo} input"),
            t.as_slice::<f32>().unwrap(),
            t.shape(),
            &case["input"],
        );
        let f = run_with(&mut backbone, &[("image", &x)], "features");

        // The raw outputs and priors, through the library.
        let levels: Vec<ArrayView4<f32>> = ["c3", "c4", "c5"]
            .iter()
            .map(|n| batch_of_one(f.tensor(n).unwrap()))
            .collect();
        let raw = model.raw(&levels).unwrap();
        let mut worst = e_in.max(compare_raw(photo, &raw, &case["raw"]));
        let priors = &doc["priors"];
        assert_eq!(raw.priors.dim().0 as u64, priors["count"].as_u64().unwrap());
        worst = worst.max(compare(
            "priors",
            raw.priors.as_slice().unwrap(),
            raw.priors.shape(),
            &priors["summary"],
        ));
        for (k, row) in priors["first"].as_array().unwrap().iter().enumerate() {
            assert_eq!(
                raw.priors.row(k).to_vec(),
                floats(row).iter().map(|&v| v as f32).collect::<Vec<_>>(),
                "prior {k}"
            );
        }

        // The detections through the node, and the decoded boxes through the library.
        let out = run_with(&mut head, &[("features", &f), ("image", &x)], "instances");
        let lib = model
            .detections(&raw, {
                let s = floats(&case["original_size"]);
                (s[0] as usize, s[1] as usize)
            })
            .unwrap();
        check_detections(
            photo,
            &out,
            &lib.boxes_relative,
            &case["detections"],
            Some(&case["masks"]),
            |c| COCO_CATEGORY_IDS[c],
            worst,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// R101 weights given to the R50 pipeline's body: one error listing the tensors that do not
/// fit; a photo without detections gives empty instances.
#[test]
fn wrong_depth_is_named_and_no_detections_is_empty() {
    let doc = fixture();
    let dir = std::env::temp_dir().join(format!("yolact-wrong-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let weights = dir.join("yolact_r50.safetensors");
    write_weights(&doc, &weights);
    let err = body(&weights, 101).err().unwrap();
    assert!(
        err.contains("yolact_r50.safetensors")
            && err.contains("missing (")
            && err.contains("backbone.layers.2.6.conv1.weight"),
        "{err}"
    );
    // conf_thresh 1: no prior passes, empty instances of the declared shapes.
    let mut pre = create("yolact_preprocess", &[]).unwrap();
    let mut backbone = body(&weights, 50).unwrap();
    let mut p = weights_params(&weights);
    p.push(("conf_thresh", ParamValue::Float(1.0)));
    let mut head = create("yolact", &p).unwrap();
    let pixels: Vec<u8> = (0..40 * 30 * 3).map(|i| (i * 7 % 256) as u8).collect();
    let x = run_with(
        &mut pre,
        &[(
            "image",
            &Value::image(Tensor::from_vec(&[40, 30, 3], pixels).unwrap()),
        )],
        "image",
    );
    let f = run_with(&mut backbone, &[("image", &x)], "features");
    let out = run_with(&mut head, &[("features", &f), ("image", &x)], "instances");
    assert_eq!(out.tensor("masks").unwrap().shape(), &[0, 40, 30]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `[C, H, W]` (or `[1, C, H, W]`) array's values for [`compare`].
fn values(a: &ndarray::Array4<f32>) -> (Vec<f32>, Vec<usize>) {
    let s = a.shape();
    (
        a.as_standard_layout().iter().copied().collect(),
        s[1..].to_vec(),
    )
}

/// YolactEdge over three frames against haotian-liu/yolact_edge's `evalvideo`
/// (`tests/reference/make_yolact_edge_fixtures.py`, `yolact_edge_vid_resnet50_config`): a
/// keyframe, then two frames warped from it. The `resnet` node's keyframe schedule gives the
/// partial body between keyframes; the library's intermediates (the keyframe's FPN phase 1,
/// the lateral, FeatFlowNet's offsets, P3, SPA, P3..P7, the raw outputs) within 1e-4; the
/// node's detections with traditional NMS (and, without masks, with FastNMS) as the YOLACT
/// test matches them.
#[test]
fn yolact_edge_matches_the_official_code_over_frames() {
    let doc = reference::fixture("yolact_edge_r50.json");
    let dir = reference::scratch("yolact-edge");
    let weights = dir.join("yolact_edge.safetensors");
    write_weights(&doc, &weights);
    let interval = doc["every_k_frames"].as_i64().unwrap();
    let mut pre = create("yolact_preprocess", &[]).unwrap();
    let mut p = weights_params(&weights);
    p.extend([
        ("prefix", ParamValue::Str("backbone.".into())),
        ("stage_names", ParamValue::Str("yolact".into())),
        ("bn_eps", ParamValue::Float(1e-5)),
        ("returned_layers", ParamValue::IntList(vec![2, 3, 4])),
        ("keyframe_interval", ParamValue::Int(interval)),
    ]);
    let mut backbone = create("resnet", &p).unwrap();
    let nms = |kind: &str| {
        let mut p = weights_params(&weights);
        p.push(("nms", ParamValue::Str(kind.into())));
        create("yolact_edge", &p).unwrap()
    };
    let (mut traditional, mut fast) = (nms("traditional"), nms("fast"));
    let w = kernels::weights::Weights::load(&weights).unwrap();
    let config = |traditional_nms| YolactConfig {
        traditional_nms,
        ..plugin_yolact::edge::edge_defaults()
    };
    let model = plugin_yolact::edge::YolactEdge::from_weights(&w, "", config(true)).unwrap();
    let fast_model = Yolact::from_weights(&w, "", config(false)).unwrap();
    let photo = plugin_io::image_source::read_image(&root().join("assets/astronaut.png")).unwrap();
    let mut key = None;
    for frame in doc["frames"].as_array().unwrap() {
        let index = frame["frame"].as_u64().unwrap();
        let what = format!("frame {index}");
        let origin = floats(&frame["crop_origin"]);
        let size = floats(&frame["original_size"]);
        let (y0, x0, h, w) = (
            origin[0] as usize,
            origin[1] as usize,
            size[0] as usize,
            size[1] as usize,
        );
        let crop = photo
            .view::<u8>()
            .unwrap()
            .slice_move(ndarray::s![y0..y0 + h, x0..x0 + w, ..])
            .to_owned();
        let image = Tensor::from_vec(&[h, w, 3], crop.into_raw_vec_and_offset().0).unwrap();
        let info = plugin_sdk::FrameInfo {
            index,
            ..Default::default()
        };
        let x = reference::run_frame(&mut pre, &info, &[("image", &Value::image(image))], "image");
        let t = x.tensor("tensor").unwrap();
        let mut worst = compare(
            &format!("{what} input"),
            t.as_slice::<f32>().unwrap(),
            t.shape(),
            &frame["input"],
        );
        let f = reference::run_frame(&mut backbone, &info, &[("image", &x)], "features");
        let keyframe = frame["keyframe"].as_bool().unwrap();
        assert_eq!(
            f.get("c5").is_some(),
            keyframe,
            "{what}: the resnet node's keyframe"
        );
        let level = |n: &str| batch_of_one(f.tensor(n).unwrap());
        let mut check = |name: &str, a: &ndarray::Array4<f32>, s: &Json| {
            let (v, shape) = values(a);
            worst = worst.max(compare(&format!("{what} {name}"), &v, &shape, s));
        };
        let pyramid = if keyframe {
            let (pyramid, k) = model
                .keyframe(&[level("c3"), level("c4"), level("c5")])
                .unwrap();
            for (i, name) in ["p3", "p4", "p5"].iter().enumerate() {
                check(
                    &format!("phase 1 {name}"),
                    &k.feats[i],
                    &frame["phase_1"][name],
                );
            }
            check("lateral", &k.lateral, &frame["phase_1"]["lateral"]);
            key = Some(k);
            pyramid
        } else {
            let (pyramid, warped) = model.warped(level("c3"), key.as_ref().unwrap()).unwrap();
            check("lateral", &warped.lateral, &frame["lateral"]);
            check(
                "flow p4",
                &warped.offsets[0],
                &frame["flow"]["p4"]["offset"],
            );
            check(
                "flow p5",
                &warped.offsets[1],
                &frame["flow"]["p5"]["offset"],
            );
            check("p3", &warped.phase_1[0], &frame["p3"]);
            check("spa p4", &warped.phase_1[1], &frame["spa"]["p4"]);
            check("spa p5", &warped.phase_1[2], &frame["spa"]["p5"]);
            pyramid
        };
        for (i, name) in ["p3", "p4", "p5", "p6", "p7"].iter().enumerate() {
            // The pyramid is NHWC, the reference's NCHW.
            let nchw = pyramid[i]
                .view()
                .permuted_axes([0, 3, 1, 2])
                .as_standard_layout()
                .to_owned();
            check(&format!("fpn {name}"), &nchw, &frame["fpn"][name]);
        }
        let raw = model.heads(&pyramid).unwrap();
        worst = worst.max(compare_raw(&what, &raw, &frame["raw"]));
        // The nodes: traditional NMS with masks, FastNMS (eval.py's default) without.
        let lib = model.yolact().detections(&raw, (h, w)).unwrap();
        let out = reference::run_frame(
            &mut traditional,
            &info,
            &[("features", &f), ("image", &x)],
            "instances",
        );
        check_detections(
            &what,
            &out,
            &lib.boxes_relative,
            &frame["detections"],
            Some(&frame["masks"]),
            |c| c as i64 + 1,
            worst,
        );
        let lib = fast_model.detections(&raw, (h, w)).unwrap();
        let out = reference::run_frame(
            &mut fast,
            &info,
            &[("features", &f), ("image", &x)],
            "instances",
        );
        check_detections(
            &format!("{what} (FastNMS)"),
            &out,
            &lib.boxes_relative,
            &frame["detections_fast_nms"],
            None,
            |c| c as i64 + 1,
            worst,
        );
    }
}
