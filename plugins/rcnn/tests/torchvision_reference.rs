//! The nodes against torchvision itself: `tests/reference/make_maskrcnn_fixtures.py` ran
//! torchvision's `MaskRCNN` (resnet18-FPN backbone) on real photos with generated weights and
//! stored summaries of the transform's, body's and FPN's tensors, and the RPN's proposals, the
//! box head's detections, the mask probabilities and the pasted masks (RLE) in
//! `tests/fixtures/maskrcnn_r18_fpn.json`. This test regenerates the same weights bit for bit
//! (`kernels::weights::generated_tensor`, the script's `generate`), writes them as a `.safetensors` state dict under
//! torchvision's names, creates the nodes through their `weights` parameter, runs them on
//! the same photos and compares: every sampled value, per-channel mean, min and max within
//! `|a - b| <= 1e-4 · max(1, |b|)`, shapes and sizes exactly; proposals and detections
//! ordering-robustly (same number, each matched by label, box IoU >= 0.999 and score within
//! 1e-4), mask probabilities within 1e-4, pasted masks on >= 99.9% of pixels.
//!
//! Keypoint R-CNN likewise (`make_keypointrcnn_fixtures.py`, `keypointrcnn_r18_fpn.json`):
//! the whole chain to `roi_keypoint_head` and `paste_masks`, the detections matched as above,
//! and each keypoint within 0.01 px and its score within 1e-4, in resized and original pixels.
//!
//! DensePose (`make_densepose_fixtures.py`, `densepose_r18_fpn.json`): Detectron2's own
//! DensePose head (decoder, RoIAlign, `DensePoseV1ConvXHead`, chart predictor and
//! `densepose_chart_predictor_output_to_result`) on the detections and FPN levels of
//! torchvision's Faster R-CNN trunk; the same chain here to `roi_densepose_head`. Per
//! detection: the same integer box, and the part label, U and V (within 1e-3) agreeing on at
//! least 99.9% of the pixels that either side labels as a body part; DensePose's results
//! format (json_sink) decoding to the same quantized I, U, V.

#[path = "../../../tests/support/reference.rs"]
mod reference;

use std::path::Path;

use kernels::Tensor;
use plugin_sdk::{Node, ParamValue, Value};
use reference::{create, fixture as fixture_named, generated, root, run_with, save, Scratch};
use serde_json::Value as Json;

const TOL: f64 = 1e-4;

fn fixture() -> Json {
    fixture_named("maskrcnn_r18_fpn.json")
}

/// Writes the generated state dict (the whole model) as safetensors.
fn write_weights(doc: &Json, path: &Path) {
    write_weight_lists(&[&doc["weights"]], path);
}

/// Writes the tensors of the fixture's `{name, shape, a, b}` lists as one safetensors file.
fn write_weight_lists(lists: &[&Json], path: &Path) {
    let tensors: Vec<(String, Tensor)> = lists.iter().flat_map(|l| generated(l)).collect();
    save(&tensors, path);
}

fn temp_dir(name: &str) -> Scratch {
    Scratch::new(&format!("rcnn-{name}"))
}

fn create_err(kind: &str, set: &[(&str, ParamValue)]) -> String {
    match create(kind, set) {
        Ok(_) => panic!("{kind} was created"),
        Err(e) => e,
    }
}

fn run(node: &mut Box<dyn Node>, port_in: &str, v: Value, port_out: &str) -> Value {
    run_with(node, &[(port_in, &v)], port_out)
}

/// The numbers of a JSON array, nested arrays flattened in order.
fn floats(j: &Json) -> Vec<f32> {
    match j {
        Json::Array(items) => items.iter().flat_map(floats).collect(),
        v => vec![v.as_f64().unwrap() as f32],
    }
}

fn boxes_of(flat: &[f32]) -> Vec<[f32; 4]> {
    flat.chunks_exact(4)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect()
}

/// One-to-one matching of `ours` to `theirs` (ordering-robust): for each of theirs, the first
/// unused of ours with the same label, IoU >= 0.999 and a score within 1e-4. Returns
/// `matched[j] = Some(i)`.
fn match_instances(
    ours: (&[[f32; 4]], &[f32], &[i64]),
    theirs: (&[[f32; 4]], &[f32], &[i64]),
) -> Vec<Option<usize>> {
    let mut used = vec![false; ours.0.len()];
    (0..theirs.0.len())
        .map(|j| {
            let found = (0..ours.0.len()).find(|&i| {
                !used[i]
                    && ours.2[i] == theirs.2[j]
                    && (ours.1[i] - theirs.1[j]).abs() <= 1e-4
                    && kernels::ops::boxes::pair_iou(&ours.0[i], &theirs.0[j]) >= 0.999
            });
            if let Some(i) = found {
                used[i] = true;
            }
            found
        })
        .collect()
}

/// Decodes uncompressed COCO RLE (column-major runs, zeros first) into a row-major mask.
fn rle_decode(counts: &[u64], h: usize, w: usize) -> Vec<u8> {
    let mut col_major = Vec::with_capacity(h * w);
    for (k, &c) in counts.iter().enumerate() {
        col_major.extend(std::iter::repeat_n((k % 2) as u8, c as usize));
    }
    assert_eq!(col_major.len(), h * w, "RLE length");
    let mut out = vec![0u8; h * w];
    for x in 0..w {
        for y in 0..h {
            out[y * w + x] = col_major[x * h + y];
        }
    }
    out
}

/// Checks the instances `ours` against torchvision's `(boxes, scores, labels)`: the same
/// number, every one matched (label, box IoU >= 0.999, score within 1e-4). Returns the
/// matching.
fn check_instances(
    what: &str,
    ours: &Value,
    boxes: &[f32],
    scores: &[f32],
    labels: &[i64],
) -> Vec<usize> {
    let ob = boxes_of(ours.tensor("boxes").unwrap().as_slice::<f32>().unwrap());
    let os = ours.tensor("scores").unwrap().as_slice::<f32>().unwrap();
    let ol = ours.tensor("classes").unwrap().as_slice::<i64>().unwrap();
    let tb = boxes_of(boxes);
    let m = match_instances((&ob, os, ol), (&tb, scores, labels));
    let unmatched: Vec<usize> = (0..m.len()).filter(|&j| m[j].is_none()).collect();
    eprintln!(
        "  {what}: {} ours, {} torchvision's, {} unmatched",
        ob.len(),
        tb.len(),
        unmatched.len()
    );
    for &j in unmatched.iter().take(5) {
        eprintln!(
            "    unmatched torchvision #{j}: {:?} score {} label {}",
            tb[j], scores[j], labels[j]
        );
    }
    assert_eq!(ob.len(), tb.len(), "{what}: number of instances");
    assert!(
        unmatched.is_empty(),
        "{what}: {} unmatched",
        unmatched.len()
    );
    m.into_iter().flatten().collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= TOL * b.abs().max(1.0)
}

/// Compares a tensor with the script's summary; returns the largest relative error
/// `|a - b| / max(1, |b|)` over the compared values.
fn compare(what: &str, t: &Tensor, s: &Json) -> f64 {
    let shape: Vec<usize> = s["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(t.shape(), shape.as_slice(), "{what}: shape");
    let data = t.as_slice::<f32>().unwrap();
    let mut worst = 0f64;
    let mut check = |name: String, a: f64, b: f64| {
        let err = (a - b).abs() / b.abs().max(1.0);
        worst = worst.max(err);
        assert!(
            close(a, b),
            "{what} {name}: ours {a}, torchvision {b} (error {err:.3e})"
        );
    };
    let idx = s["indices"].as_array().unwrap();
    let vals = s["values"].as_array().unwrap();
    for (i, v) in idx.iter().zip(vals) {
        let i = i.as_u64().unwrap() as usize;
        check(format!("[{i}]"), data[i] as f64, v.as_f64().unwrap());
    }
    let min = data.iter().copied().fold(f32::INFINITY, f32::min);
    let max = data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    check("min".into(), min as f64, s["min"].as_f64().unwrap());
    check("max".into(), max as f64, s["max"].as_f64().unwrap());
    let n = data.len() as f64;
    let sum: f64 = data.iter().map(|&v| v as f64).sum();
    let abs_sum: f64 = data.iter().map(|&v| (v as f64).abs()).sum();
    check("mean".into(), sum / n, s["sum"].as_f64().unwrap() / n);
    check(
        "mean |x|".into(),
        abs_sum / n,
        s["abs_sum"].as_f64().unwrap() / n,
    );
    let c = shape[0];
    let plane = data.len() / c;
    for (ch, m) in s["channel_means"].as_array().unwrap().iter().enumerate() {
        let ours: f64 = data[ch * plane..(ch + 1) * plane]
            .iter()
            .map(|&v| v as f64)
            .sum::<f64>()
            / plane as f64;
        check(format!("channel {ch} mean"), ours, m.as_f64().unwrap());
    }
    worst
}

#[test]
fn mask_rcnn_nodes_match_torchvision() {
    let doc = fixture();
    let dir = temp_dir("reference");
    let weights = dir.join("maskrcnn_r18_fpn.safetensors");
    write_weights(&doc, &weights);
    let wpath = ParamValue::Str(weights.display().to_string());
    for case in doc["cases"].as_array().unwrap() {
        let photo = case["photo"].as_str().unwrap();
        let params = &case["params"];
        let image =
            plugin_io::image_source::read_image(&root().join("assets").join(photo)).unwrap();
        let mut pre = create(
            "rcnn_preprocess",
            &[
                (
                    "min_size",
                    ParamValue::Int(params["min_size"].as_i64().unwrap()),
                ),
                (
                    "max_size",
                    ParamValue::Int(params["max_size"].as_i64().unwrap()),
                ),
            ],
        )
        .unwrap();
        let eps = params["bn_eps"].as_f64().unwrap();
        let mut resnet = create(
            "resnet",
            &[
                ("weights", wpath.clone()),
                ("depth", ParamValue::Int(18)),
                ("bn_eps", ParamValue::Float(eps)),
            ],
        )
        .unwrap();
        let mut fpn = create(
            "fpn",
            &[("weights", wpath.clone()), ("depth", ParamValue::Int(18))],
        )
        .unwrap();

        let t0 = std::time::Instant::now();
        let x = run(&mut pre, "image", Value::image(image), "image");
        let t1 = std::time::Instant::now();
        let c = run(&mut resnet, "image", x.clone(), "features");
        let t2 = std::time::Instant::now();
        let p = run(&mut fpn, "features", c.clone(), "features");
        let t3 = std::time::Instant::now();
        eprintln!(
            "{photo}: preprocess {:.0} ms, resnet18 {:.0} ms, fpn {:.0} ms",
            (t1 - t0).as_secs_f64() * 1e3,
            (t2 - t1).as_secs_f64() * 1e3,
            (t3 - t2).as_secs_f64() * 1e3
        );

        let sizes =
            |v: &Value, name: &str| v.tensor(name).unwrap().as_slice::<i64>().unwrap().to_vec();
        let want = |k: &str| -> Vec<i64> {
            case[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect()
        };
        assert_eq!(sizes(&x, "image_size"), want("image_size"), "{photo}");
        assert_eq!(sizes(&x, "original_size"), want("original_size"), "{photo}");
        let e = compare(
            &format!("{photo} preprocessed"),
            x.tensor("tensor").unwrap(),
            &case["preprocessed"],
        );
        eprintln!("  preprocessed: max error {e:.2e}");
        for (ours, theirs) in [("c2", "0"), ("c3", "1"), ("c4", "2"), ("c5", "3")] {
            let e = compare(
                &format!("{photo} resnet {ours}"),
                c.tensor(ours).unwrap(),
                &case["body"][theirs],
            );
            eprintln!("  resnet {ours} (\"{theirs}\"): max error {e:.2e}");
        }
        assert_eq!(p.names(), ["p2", "p3", "p4", "p5", "p6"]);
        for (ours, theirs) in [
            ("p2", "0"),
            ("p3", "1"),
            ("p4", "2"),
            ("p5", "3"),
            ("p6", "pool"),
        ] {
            let e = compare(
                &format!("{photo} fpn {ours}"),
                p.tensor(ours).unwrap(),
                &case["fpn"][theirs],
            );
            eprintln!("  fpn {ours} (\"{theirs}\"): max error {e:.2e}");
        }
        check_heads(
            case,
            &wpath,
            &x,
            &p,
            doc["box_score_thresh"].as_f64().unwrap(),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keypoint_rcnn_nodes_match_torchvision() {
    let doc = fixture_named("keypointrcnn_r18_fpn.json");
    let dir = temp_dir("keypoints");
    let weights = dir.join("keypointrcnn_r18_fpn.safetensors");
    write_weights(&doc, &weights);
    let wpath = ParamValue::Str(weights.display().to_string());
    let w = || ("weights", wpath.clone());
    let layers = ParamValue::IntList(
        doc["keypoint_layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect(),
    );
    for case in doc["cases"].as_array().unwrap() {
        let photo = case["photo"].as_str().unwrap();
        let params = &case["params"];
        let int = |k: &str| ParamValue::Int(params[k].as_i64().unwrap());
        let image =
            plugin_io::image_source::read_image(&root().join("assets").join(photo)).unwrap();
        let mut pre = create(
            "rcnn_preprocess",
            &[("min_size", int("min_size")), ("max_size", int("max_size"))],
        )
        .unwrap();
        let eps = ParamValue::Float(params["bn_eps"].as_f64().unwrap());
        let mut resnet = create(
            "resnet",
            &[w(), ("depth", ParamValue::Int(18)), ("bn_eps", eps)],
        )
        .unwrap();
        let mut fpn = create("fpn", &[w(), ("depth", ParamValue::Int(18))]).unwrap();
        let mut rpn = create("rpn", &[w()]).unwrap();
        let mut box_head =
            create("roi_box_head", &[w(), ("num_classes", ParamValue::Int(2))]).unwrap();
        let mut keypoint_head =
            create("roi_keypoint_head", &[w(), ("layers", layers.clone())]).unwrap();
        let mut postprocess = create("paste_masks", &[]).unwrap();

        let x = run(&mut pre, "image", Value::image(image), "image");
        let c = run(&mut resnet, "image", x.clone(), "features");
        let p = run(&mut fpn, "features", c, "features");
        let proposals = run_with(&mut rpn, &[("features", &p), ("image", &x)], "proposals");
        let detections = run_with(
            &mut box_head,
            &[("features", &p), ("proposals", &proposals), ("image", &x)],
            "detections",
        );
        let t = std::time::Instant::now();
        let with_keypoints = run_with(
            &mut keypoint_head,
            &[("features", &p), ("detections", &detections), ("image", &x)],
            "instances",
        );
        let keypoint_ms = t.elapsed().as_secs_f64() * 1e3;
        let fin = run_with(
            &mut postprocess,
            &[("instances", &with_keypoints), ("image", &x)],
            "instances",
        );

        let det = &case["detections"];
        let f = |v: &Value, name: &str| v.tensor(name).unwrap().as_slice::<f32>().unwrap().to_vec();
        let ours_boxes = boxes_of(&f(&with_keypoints, "boxes"));
        let ours_scores = f(&with_keypoints, "scores");
        let ours_labels = with_keypoints
            .tensor("classes")
            .unwrap()
            .as_slice::<i64>()
            .unwrap()
            .to_vec();
        let their_boxes = boxes_of(&floats(&det["boxes"]));
        let their_scores = floats(&det["scores"]);
        let their_labels: Vec<i64> = det["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(ours_boxes.len(), their_boxes.len(), "{photo}: detections");
        let matched = match_instances(
            (&ours_boxes, &ours_scores, &ours_labels),
            (&their_boxes, &their_scores, &their_labels),
        );
        let k = 17;
        assert_eq!(
            with_keypoints.tensor("keypoints").unwrap().shape(),
            &[ours_boxes.len(), k, 3]
        );
        let (ours_kp, ours_ks) = (
            f(&with_keypoints, "keypoints"),
            f(&with_keypoints, "keypoints_scores"),
        );
        let (their_kp, their_ks) = (floats(&det["keypoints"]), floats(&det["keypoints_scores"]));
        let (ours_final, their_final) = (f(&fin, "keypoints"), floats(&case["final"]["keypoints"]));
        let (mut worst_px, mut worst_score) = (0f32, 0f32);
        for (j, m) in matched.iter().enumerate() {
            let i =
                m.unwrap_or_else(|| panic!("{photo}: torchvision's detection {j} has no match"));
            for kp in 0..k {
                for (ours, theirs, what) in [
                    (&ours_kp, &their_kp, "resized"),
                    (&ours_final, &their_final, "original"),
                ] {
                    for d in 0..3 {
                        let (a, b) = (ours[(i * k + kp) * 3 + d], theirs[(j * k + kp) * 3 + d]);
                        assert!(
                            (a - b).abs() <= 0.01,
                            "{photo}: detection {j} keypoint {kp} ({what} pixels) coordinate {d}: ours {a}, torchvision {b}"
                        );
                        worst_px = worst_px.max((a - b).abs());
                    }
                }
                let (a, b) = (ours_ks[i * k + kp], their_ks[j * k + kp]);
                assert!(
                    (a - b).abs() as f64 <= TOL * (b.abs() as f64).max(1.0),
                    "{photo}: detection {j} keypoint {kp} score: ours {a}, torchvision {b}"
                );
                worst_score = worst_score.max((a - b).abs());
            }
        }
        eprintln!(
            "{photo}: {} detections with keypoints match torchvision (max {worst_px:.1e} px, score {worst_score:.1e}); keypoint head {keypoint_ms:.0} ms",
            matched.len()
        );
    }
    // Tiny and extreme images, and no detections at all (score threshold 1): valid instances
    // with keypoints [N, 17, 3] inside the photo, N = 0 included.
    let small = [
        ("min_size", ParamValue::Int(64)),
        ("max_size", ParamValue::Int(2000)),
    ];
    let mut pre = create("rcnn_preprocess", &small).unwrap();
    let mut resnet = create("resnet", &[w(), ("depth", ParamValue::Int(18))]).unwrap();
    let mut fpn = create("fpn", &[w(), ("depth", ParamValue::Int(18))]).unwrap();
    let mut rpn = create("rpn", &[w()]).unwrap();
    let two = || ("num_classes", ParamValue::Int(2));
    let mut box_head = create("roi_box_head", &[w(), two()]).unwrap();
    let mut nothing = create(
        "roi_box_head",
        &[w(), two(), ("score_thresh", ParamValue::Float(1.0))],
    )
    .unwrap();
    let mut keypoint_head = create("roi_keypoint_head", &[w(), ("layers", layers)]).unwrap();
    let mut postprocess = create("paste_masks", &[]).unwrap();
    for (what, (h, wd)) in [("1x1", (1, 1)), ("3x1000", (3, 1000)), ("50x40", (50, 40))] {
        let data: Vec<u8> = (0..h * wd * 3).map(|i| (i * 37 % 251) as u8).collect();
        let img = Value::image(Tensor::from_vec(&[h, wd, 3], data).unwrap());
        let x = run(&mut pre, "image", img, "image");
        let c = run(&mut resnet, "image", x.clone(), "features");
        let p = run(&mut fpn, "features", c, "features");
        let proposals = run_with(&mut rpn, &[("features", &p), ("image", &x)], "proposals");
        for head in [&mut box_head, &mut nothing] {
            let det = run_with(
                head,
                &[("features", &p), ("proposals", &proposals), ("image", &x)],
                "detections",
            );
            let with_keypoints = run_with(
                &mut keypoint_head,
                &[("features", &p), ("detections", &det), ("image", &x)],
                "instances",
            );
            let out = run_with(
                &mut postprocess,
                &[("instances", &with_keypoints), ("image", &x)],
                "instances",
            );
            let n = out.tensor("scores").unwrap().shape()[0];
            assert_eq!(
                out.tensor("keypoints").unwrap().shape(),
                &[n, 17, 3],
                "{what}"
            );
            assert_eq!(
                out.tensor("keypoints_scores").unwrap().shape(),
                &[n, 17],
                "{what}"
            );
            assert!(out.get("masks").is_none(), "{what}: no masks invented");
            for k in out
                .tensor("keypoints")
                .unwrap()
                .as_slice::<f32>()
                .unwrap()
                .chunks(3)
            {
                assert!(
                    k[0] >= 0.0
                        && k[0] <= wd as f32 + 1e-3
                        && k[1] >= 0.0
                        && k[1] <= h as f32 + 1e-3,
                    "{what}: keypoint {k:?} outside {h}x{wd}"
                );
            }
            eprintln!("{what}: {n} detections with keypoints");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// rpn, roi_box_head, roi_mask_head and paste_masks on our FPN levels, each compared with
/// torchvision's output of that stage; the box head is also run on torchvision's proposals,
/// so that a difference is pinned to one node.
fn check_heads(case: &Json, wpath: &ParamValue, x: &Value, p: &Value, box_score_thresh: f64) {
    let photo = case["photo"].as_str().unwrap();
    let w = || ("weights", wpath.clone());
    let mut rpn = create("rpn", &[w()]).unwrap();
    let mut box_head = create(
        "roi_box_head",
        &[w(), ("score_thresh", ParamValue::Float(box_score_thresh))],
    )
    .unwrap();
    let mut mask_head = create("roi_mask_head", &[w()]).unwrap();
    let mut paste = create("paste_masks", &[]).unwrap();

    let t0 = std::time::Instant::now();
    let proposals = run_with(&mut rpn, &[("features", p), ("image", x)], "proposals");
    let t1 = std::time::Instant::now();
    let detections = run_with(
        &mut box_head,
        &[("features", p), ("proposals", &proposals), ("image", x)],
        "detections",
    );
    let t2 = std::time::Instant::now();
    let with_masks = run_with(
        &mut mask_head,
        &[("features", p), ("detections", &detections), ("image", x)],
        "instances",
    );
    let t3 = std::time::Instant::now();
    let pasted = run_with(
        &mut paste,
        &[("instances", &with_masks), ("image", x)],
        "instances",
    );
    let t4 = std::time::Instant::now();
    let ms = |a: std::time::Instant, b: std::time::Instant| (b - a).as_secs_f64() * 1e3;
    eprintln!(
        "{photo}: rpn {:.0} ms, roi_box_head {:.0} ms, roi_mask_head {:.0} ms, paste_masks {:.0} ms",
        ms(t0, t1),
        ms(t1, t2),
        ms(t2, t3),
        ms(t3, t4)
    );

    // Proposals: class 0 for all.
    let tp = floats(&case["proposals"]["boxes"]);
    let ts = floats(&case["proposals"]["scores"]);
    let zeros = vec![0i64; ts.len()];
    check_instances(
        &format!("{photo} rpn proposals"),
        &proposals,
        &tp,
        &ts,
        &zeros,
    );

    // Box head on torchvision's own proposals, then on ours.
    let det = &case["detections"];
    let db = floats(&det["boxes"]);
    let ds = floats(&det["scores"]);
    let dl: Vec<i64> = det["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let theirs = Value::new(plugin_sdk::PortKind::Instances)
        .with(
            "boxes",
            Tensor::from_vec(&[ts.len(), 4], tp.clone()).unwrap(),
        )
        .with("scores", Tensor::from_vec(&[ts.len()], ts.clone()).unwrap())
        .with("classes", Tensor::from_vec(&[ts.len()], zeros).unwrap());
    let on_theirs = run_with(
        &mut box_head,
        &[("features", p), ("proposals", &theirs), ("image", x)],
        "detections",
    );
    check_instances(
        &format!("{photo} roi_box_head on torchvision's proposals"),
        &on_theirs,
        &db,
        &ds,
        &dl,
    );
    let m = check_instances(&format!("{photo} roi_box_head"), &detections, &db, &ds, &dl);

    // Mask probabilities of matched detections.
    let probs = floats(&det["mask_probs"]);
    let ours = with_masks.tensor("masks").unwrap();
    assert_eq!(&ours.shape()[1..], &[28, 28], "{photo} mask shape");
    let ours = ours.as_slice::<f32>().unwrap();
    let mut worst = 0f32;
    for (j, &i) in m.iter().enumerate() {
        for k in 0..784 {
            worst = worst.max((ours[i * 784 + k] - probs[j * 784 + k]).abs());
        }
    }
    eprintln!("  roi_mask_head: mask probabilities max |error| {worst:.2e}");
    assert!(
        worst <= 1e-4,
        "{photo} mask probabilities differ by {worst}"
    );

    // Pasted masks and boxes in the original image.
    let fin = &case["final"];
    let fb = boxes_of(&floats(&fin["boxes"]));
    let ob = boxes_of(pasted.tensor("boxes").unwrap().as_slice::<f32>().unwrap());
    let masks = pasted.tensor("masks").unwrap();
    let (h, w) = (
        case["original_size"][0].as_u64().unwrap() as usize,
        case["original_size"][1].as_u64().unwrap() as usize,
    );
    assert_eq!(masks.shape(), &[ob.len(), h, w], "{photo} pasted masks");
    let masks = masks.as_slice::<u8>().unwrap();
    let (mut differ, mut total) = (0usize, 0usize);
    for (j, &i) in m.iter().enumerate() {
        let iou = kernels::ops::boxes::pair_iou(&ob[i], &fb[j]);
        assert!(iou >= 0.999, "{photo} final box {j}: IoU {iou}");
        let counts: Vec<u64> = fin["masks_rle"][j]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let want = rle_decode(&counts, h, w);
        let got = &masks[i * h * w..(i + 1) * h * w];
        differ += got.iter().zip(&want).filter(|(a, b)| a != b).count();
        total += h * w;
    }
    let agree = 1.0 - differ as f64 / total.max(1) as f64;
    eprintln!("  paste_masks: {differ} of {total} pixels differ (agreement {agree:.6})");
    assert!(agree >= 0.999, "{photo} pasted masks agree on {agree}");
}

#[test]
fn wrong_weights_files_are_clear_errors() {
    let doc = fixture();
    let dir = temp_dir("wrong");
    let good = dir.join("r18.safetensors");
    write_weights(&doc, &good);
    let path = |p: &Path| ParamValue::Str(p.display().to_string());

    // Not a checkpoint.
    let text = dir.join("notes.pth");
    std::fs::write(&text, "not a checkpoint").unwrap();
    let err = create_err("resnet", &[("weights", path(&text))]);
    assert!(
        err.contains("notes.pth") && err.contains("not a usable weights file"),
        "{err}"
    );
    // Truncated.
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let err = create_err(
        "fpn",
        &[("weights", path(&cut)), ("depth", ParamValue::Int(18))],
    );
    assert!(err.contains("cut.safetensors"), "{err}");
    // Absent.
    let err = create_err("resnet", &[("weights", path(&dir.join("absent.pth")))]);
    assert!(
        err.contains("cannot read weights file") && err.contains("absent.pth"),
        "{err}"
    );
    // Another architecture: a ResNet-18-FPN checkpoint for the default ResNet-50 (one error
    // listing the missing and mis-shaped tensors and naming the file).
    let err = create_err("resnet", &[("weights", path(&good))]);
    assert!(
        err.contains("r18.safetensors")
            && err.contains("(prefix \"backbone.body.\") do not fit the model"),
        "{err}"
    );
    assert!(
        err.contains("missing (") && err.contains("mis-shaped ("),
        "{err}"
    );
    let err = create_err("fpn", &[("weights", path(&good))]);
    assert!(err.contains("backbone.fpn.inner_blocks.0.0.weight: the model expects [256, 256, 1, 1], the file has [256, 64, 1, 1]"), "{err}");
    // The FPN's prefix given to the resnet: everything missing, and the hint.
    let err = create_err(
        "resnet",
        &[
            ("weights", path(&good)),
            ("depth", ParamValue::Int(18)),
            ("prefix", ParamValue::Str("backbone.fpn.".into())),
        ],
    );
    assert!(
        err.contains("missing (") && err.contains("unexpected (") && err.contains("prefix"),
        "{err}"
    );
    // A Mask R-CNN checkpoint wired to the keypoint head: its tensors are named as missing.
    let err = create_err("roi_keypoint_head", &[("weights", path(&good))]);
    assert!(
        err.contains("r18.safetensors")
            && err.contains("missing (18)")
            && err.contains("roi_heads.keypoint_head.0.weight [512, 256, 3, 3]"),
        "{err}"
    );
    // And a Keypoint R-CNN checkpoint wired to the mask head.
    let keypoints = dir.join("keypoints.safetensors");
    write_weights(&fixture_named("keypointrcnn_r18_fpn.json"), &keypoints);
    let err = create_err("roi_mask_head", &[("weights", path(&keypoints))]);
    assert!(
        err.contains("keypoints.safetensors") && err.contains("mask_predictor.conv5_mask.weight"),
        "{err}"
    );
    // A DensePose checkpoint wired to the keypoint head, and a keypoint one to the DensePose
    // head: the missing tensors are named.
    let doc = fixture_named("densepose_r18_fpn.json");
    let densepose = dir.join("densepose.safetensors");
    write_weight_lists(
        &[&doc["trunk_weights"], &doc["cases"][0]["head_weights"]],
        &densepose,
    );
    let err = create_err("roi_keypoint_head", &[("weights", path(&densepose))]);
    assert!(
        err.contains("densepose.safetensors")
            && err.contains("missing (18)")
            && err.contains("roi_heads.keypoint_head.0.weight [512, 256, 3, 3]"),
        "{err}"
    );
    let err = create_err("roi_densepose_head", &[("weights", path(&keypoints))]);
    assert!(
        err.contains("keypoints.safetensors")
            && err.contains("missing (40)")
            && err.contains("roi_heads.decoder.p2.0.weight [256, 256, 3, 3]"),
        "{err}"
    );
    // The right checkpoint with the wrong head width names the mis-shaped tensors.
    let err = create_err("roi_densepose_head", &[("weights", path(&densepose))]);
    assert!(
        err.contains("mis-shaped") && err.contains("decoder.p2.0.weight"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Tiny, very wide, grayscale and RGBA images run through the whole chain to valid (possibly
/// empty) results; a box head that keeps nothing gives empty instances with [0, H, W] masks.
#[test]
fn unusual_images_and_no_detections_give_valid_results() {
    let doc = fixture();
    let dir = temp_dir("unusual");
    let weights = dir.join("r18.safetensors");
    write_weights(&doc, &weights);
    let w = || ("weights", ParamValue::Str(weights.display().to_string()));
    let small = [
        ("min_size", ParamValue::Int(64)),
        ("max_size", ParamValue::Int(2000)),
    ];
    let mut pre = create("rcnn_preprocess", &small).unwrap();
    let mut resnet = create("resnet", &[w(), ("depth", ParamValue::Int(18))]).unwrap();
    let mut fpn = create("fpn", &[w(), ("depth", ParamValue::Int(18))]).unwrap();
    let mut rpn = create("rpn", &[w()]).unwrap();
    let mut box_head = create("roi_box_head", &[w()]).unwrap();
    let mut nothing = create(
        "roi_box_head",
        &[w(), ("score_thresh", ParamValue::Float(1.0))],
    )
    .unwrap();
    let mut mask_head = create("roi_mask_head", &[w()]).unwrap();
    let mut paste = create("paste_masks", &[]).unwrap();
    let image = |h: usize, w: usize, c: usize| {
        let data: Vec<u8> = (0..h * w * c).map(|i| (i * 37 % 251) as u8).collect();
        Value::image(Tensor::from_vec(&[h, w, c], data).unwrap())
    };
    for (what, img) in [
        ("1x1 RGB", image(1, 1, 3)),
        ("3x1000 RGB", image(3, 1000, 3)),
        ("50x40 grayscale", image(50, 40, 1)),
        ("48x64 RGBA", image(48, 64, 4)),
    ] {
        let (h, wd) = {
            let s = img.tensor("image").unwrap().shape();
            (s[0], s[1])
        };
        let x = run(&mut pre, "image", img, "image");
        let c = run(&mut resnet, "image", x.clone(), "features");
        let p = run(&mut fpn, "features", c, "features");
        let proposals = run_with(&mut rpn, &[("features", &p), ("image", &x)], "proposals");
        for head in [&mut box_head, &mut nothing] {
            let det = run_with(
                head,
                &[("features", &p), ("proposals", &proposals), ("image", &x)],
                "detections",
            );
            let with_masks = run_with(
                &mut mask_head,
                &[("features", &p), ("detections", &det), ("image", &x)],
                "instances",
            );
            let out = run_with(
                &mut paste,
                &[("instances", &with_masks), ("image", &x)],
                "instances",
            );
            let n = out.tensor("scores").unwrap().shape()[0];
            assert_eq!(out.tensor("masks").unwrap().shape(), &[n, h, wd], "{what}");
            for b in out
                .tensor("boxes")
                .unwrap()
                .as_slice::<f32>()
                .unwrap()
                .chunks(4)
            {
                assert!(
                    b[0] >= 0.0
                        && b[2] <= wd as f32 + 1e-3
                        && b[1] >= 0.0
                        && b[3] <= h as f32 + 1e-3,
                    "{what}: box {b:?} outside {h}x{wd}"
                );
            }
            eprintln!(
                "{what}: {} proposals, {n} detections",
                proposals.tensor("scores").unwrap().shape()[0]
            );
        }
        let empty = run_with(
            &mut nothing,
            &[("features", &p), ("proposals", &proposals), ("image", &x)],
            "detections",
        );
        assert_eq!(empty.tensor("boxes").unwrap().shape(), &[0, 4], "{what}");
    }
    // Degenerate proposals (NaN, infinite, inverted, empty, far outside): no panic, valid
    // instances; the mask head accepts whatever the box head keeps.
    {
        let x = run(&mut pre, "image", image(64, 80, 3), "image");
        let c = run(&mut resnet, "image", x.clone(), "features");
        let p = run(&mut fpn, "features", c, "features");
        let weird: Vec<f32> = vec![
            f32::NAN,
            0.0,
            10.0,
            10.0, //
            0.0,
            0.0,
            f32::INFINITY,
            20.0, //
            30.0,
            30.0,
            10.0,
            10.0, //
            5.0,
            5.0,
            5.0,
            5.0, //
            -1e9,
            -1e9,
            1e9,
            1e9, //
            2.0,
            3.0,
            40.0,
            50.0,
        ];
        let n = weird.len() / 4;
        let proposals = Value::new(plugin_sdk::PortKind::Instances)
            .with("boxes", Tensor::from_vec(&[n, 4], weird).unwrap())
            .with("scores", Tensor::from_vec(&[n], vec![0.5f32; n]).unwrap())
            .with("classes", Tensor::from_vec(&[n], vec![0i64; n]).unwrap());
        let det = run_with(
            &mut box_head,
            &[("features", &p), ("proposals", &proposals), ("image", &x)],
            "detections",
        );
        let with_masks = run_with(
            &mut mask_head,
            &[("features", &p), ("detections", &det), ("image", &x)],
            "instances",
        );
        run_with(
            &mut paste,
            &[("instances", &with_masks), ("image", &x)],
            "instances",
        );
    }
    // Inputs that do not come from rcnn_preprocess are named.
    let x = run(&mut pre, "image", image(64, 64, 3), "image");
    let c = run(&mut resnet, "image", x.clone(), "features");
    let p = run(&mut fpn, "features", c.clone(), "features");
    let bare = Value::single(x.tensor("tensor").unwrap().clone());
    let mut ins = plugin_sdk::Inputs::new();
    ins.push("features", Some(p.clone()));
    ins.push("image", Some(bare));
    let err = rpn
        .process(&plugin_sdk::FrameInfo::default(), &ins)
        .unwrap_err();
    assert!(
        err.message().contains("no \"image_size\"") && err.message().contains("rcnn_preprocess"),
        "{}",
        err.message()
    );
    let mut ins = plugin_sdk::Inputs::new();
    ins.push("features", Some(c));
    ins.push("image", Some(x));
    let err = rpn
        .process(&plugin_sdk::FrameInfo::default(), &ins)
        .unwrap_err();
    assert!(
        err.message().contains("no level \"p2\""),
        "{}",
        err.message()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn b64(j: &Json) -> Vec<u8> {
    use base64::Engine as _;
    let text: String = j.as_str().unwrap().split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Per detection, `(labels, uv, box)` of DensePose tensors on instances, box-local.
fn densepose_of(v: &Value, k: usize) -> (Vec<u8>, Vec<f32>, [i64; 4]) {
    let boxes = v
        .tensor("densepose_boxes")
        .unwrap()
        .as_slice::<i64>()
        .unwrap();
    let labels = v.tensor("densepose_labels").unwrap();
    let (hb, wb) = (labels.shape()[1], labels.shape()[2]);
    let labels = labels.as_slice::<u8>().unwrap();
    let uv = v.tensor("densepose_uv").unwrap().as_slice::<f32>().unwrap();
    let b = [
        boxes[4 * k],
        boxes[4 * k + 1],
        boxes[4 * k + 2],
        boxes[4 * k + 3],
    ];
    let (w, h) = (b[2].max(1) as usize, b[3].max(1) as usize);
    let mut l = Vec::with_capacity(h * w);
    let mut u = Vec::with_capacity(2 * h * w);
    for y in 0..h {
        l.extend_from_slice(&labels[(k * hb + y) * wb..(k * hb + y) * wb + w]);
    }
    for c in 0..2 {
        for y in 0..h {
            let row = ((k * 2 + c) * hb + y) * wb;
            u.extend_from_slice(&uv[row..row + w]);
        }
    }
    (l, u, b)
}

#[test]
fn densepose_head_matches_detectron2() {
    let doc = fixture_named("densepose_r18_fpn.json");
    let dir = temp_dir("densepose");
    for (ci, case) in doc["cases"].as_array().unwrap().iter().enumerate() {
        let photo = case["photo"].as_str().unwrap();
        let weights = dir.join(format!("densepose_{ci}.safetensors"));
        write_weight_lists(&[&doc["trunk_weights"], &case["head_weights"]], &weights);
        let wpath = ParamValue::Str(weights.display().to_string());
        let w = || ("weights", wpath.clone());
        let params = &case["params"];
        let int = |k: &str| ParamValue::Int(params[k].as_i64().unwrap());
        let head = &case["head"];
        let hint = |k: &str| ParamValue::Int(head[k].as_i64().unwrap());
        let image =
            plugin_io::image_source::read_image(&root().join("assets").join(photo)).unwrap();
        let mut pre = create(
            "rcnn_preprocess",
            &[("min_size", int("min_size")), ("max_size", int("max_size"))],
        )
        .unwrap();
        let eps = ParamValue::Float(params["bn_eps"].as_f64().unwrap());
        let mut resnet = create(
            "resnet",
            &[w(), ("depth", ParamValue::Int(18)), ("bn_eps", eps)],
        )
        .unwrap();
        let mut fpn = create("fpn", &[w(), ("depth", ParamValue::Int(18))]).unwrap();
        let mut rpn = create("rpn", &[w()]).unwrap();
        let mut box_head = create(
            "roi_box_head",
            &[
                w(),
                ("num_classes", ParamValue::Int(2)),
                ("detections_per_img", int("detections_per_img")),
            ],
        )
        .unwrap();
        let layers = ParamValue::IntList(vec![
            head["conv_head_dim"].as_i64().unwrap();
            head["num_stacked_convs"].as_u64().unwrap() as usize
        ]);
        let mut densepose_head = create(
            "roi_densepose_head",
            &[
                w(),
                (
                    "decoder",
                    ParamValue::Bool(head["decoder"].as_bool().unwrap()),
                ),
                ("decoder_channels", hint("decoder_conv_dims")),
                ("resolution", hint("pooler_resolution")),
                ("sampling_ratio", hint("sampling_ratio")),
                ("coarse_channels", hint("coarse_channels")),
                ("num_patches", hint("num_patches")),
                ("layers", layers),
            ],
        )
        .unwrap();
        let mut postprocess = create("paste_masks", &[]).unwrap();

        let x = run(&mut pre, "image", Value::image(image), "image");
        let c = run(&mut resnet, "image", x.clone(), "features");
        let p = run(&mut fpn, "features", c, "features");
        let proposals = run_with(&mut rpn, &[("features", &p), ("image", &x)], "proposals");
        let detections = run_with(
            &mut box_head,
            &[("features", &p), ("proposals", &proposals), ("image", &x)],
            "detections",
        );
        let t = std::time::Instant::now();
        let with_densepose = run_with(
            &mut densepose_head,
            &[("features", &p), ("detections", &detections), ("image", &x)],
            "instances",
        );
        let head_ms = t.elapsed().as_secs_f64() * 1e3;
        let fin = run_with(
            &mut postprocess,
            &[("instances", &with_densepose), ("image", &x)],
            "instances",
        );
        // No detections (no person in the photo): empty results of the declared shapes.
        let mut nothing = create(
            "roi_box_head",
            &[
                w(),
                ("num_classes", ParamValue::Int(2)),
                ("score_thresh", ParamValue::Float(1.0)),
            ],
        )
        .unwrap();
        let none = run_with(
            &mut nothing,
            &[("features", &p), ("proposals", &proposals), ("image", &x)],
            "detections",
        );
        let empty = run_with(
            &mut densepose_head,
            &[("features", &p), ("detections", &none), ("image", &x)],
            "instances",
        );
        assert_eq!(
            empty.tensor("densepose_labels").unwrap().shape(),
            &[0, 0, 0]
        );
        assert_eq!(empty.tensor("densepose_uv").unwrap().shape(), &[0, 2, 0, 0]);
        assert!(plugin_io::json_sink::coco_objects(&empty, 1, 0.5)
            .unwrap()
            .is_empty());
        let det = &case["detections"];
        let labels: Vec<i64> = det["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let matched = check_instances(
            &format!("{photo} detections"),
            &with_densepose,
            &floats(&det["boxes"]),
            &floats(&det["scores"]),
            &labels,
        );
        let results = case["results"].as_array().unwrap();
        assert_eq!(results.len(), matched.len());
        let (mut agree, mut foreground, mut worst_uv) = (0usize, 0usize, 0f32);
        for (j, r) in results.iter().enumerate() {
            let (ours_l, ours_uv, ours_box) = densepose_of(&fin, matched[j]);
            let their_box: Vec<i64> = r["box_xywh_int"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect();
            assert_eq!(
                ours_box.as_slice(),
                their_box.as_slice(),
                "{photo}: box {j}"
            );
            let their_l = b64(&r["labels"]);
            let their_uv = f32s(&b64(&r["uv"]));
            assert_eq!(ours_l.len(), their_l.len(), "{photo}: instance {j} size");
            let plane = ours_l.len();
            for i in 0..plane {
                if ours_l[i] == 0 && their_l[i] == 0 {
                    continue;
                }
                foreground += 1;
                let du = (ours_uv[i] - their_uv[i]).abs();
                let dv = (ours_uv[plane + i] - their_uv[plane + i]).abs();
                if ours_l[i] == their_l[i] && du <= 1e-3 && dv <= 1e-3 {
                    agree += 1;
                    worst_uv = worst_uv.max(du).max(dv);
                }
            }
        }
        let share = agree as f64 / foreground.max(1) as f64;
        eprintln!(
            "{photo} ({}): {} detections, {foreground} body-part pixels, {:.4}% agree (U/V within {worst_uv:.1e}); DensePose head {head_ms:.0} ms",
            case["config"].as_str().unwrap(),
            results.len(),
            100.0 * share
        );
        assert!(
            foreground > 500,
            "{photo}: too few body-part pixels to compare"
        );
        assert!(
            share >= 0.999,
            "{photo}: only {:.4}% of the body-part pixels agree",
            100.0 * share
        );

        // DensePose's results format from json_sink: the same quantized I, U, V.
        let Some(entries) = case["json"].as_array() else {
            continue;
        };
        let objects = plugin_io::json_sink::coco_objects(&fin, 1, 0.5).unwrap();
        let (mut same, mut total) = (0usize, 0usize);
        for (j, e) in entries.iter().enumerate() {
            let o: Json = serde_json::from_str(&objects[matched[j]]).unwrap();
            assert_eq!(
                o["densepose"]["shape_chw"], e["densepose"]["shape_chw"],
                "{photo} {j}"
            );
            let png_bytes = b64(&o["densepose"]["labels_uv_str"]);
            let mut reader = png::Decoder::new(std::io::Cursor::new(png_bytes))
                .read_info()
                .unwrap();
            let mut hwc = vec![0; reader.output_buffer_size().unwrap()];
            reader.next_frame(&mut hwc).unwrap();
            let chw = b64(&e["labels_uv_uint8"]);
            let plane = chw.len() / 3;
            for i in 0..plane {
                for c in 0..3 {
                    total += 1;
                    if hwc[3 * i + c].abs_diff(chw[c * plane + i]) <= 1 {
                        same += 1;
                    }
                }
            }
            let theirs = &e["bbox"];
            for (a, b) in o["bbox"]
                .as_array()
                .unwrap()
                .iter()
                .zip(theirs.as_array().unwrap())
            {
                assert!(
                    (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-3,
                    "{photo} {j} bbox"
                );
            }
            assert_eq!(o["segmentation"]["size"], e["segmentation"]["size"]);
        }
        assert!(
            same as f64 >= 0.999 * total as f64,
            "{photo}: results format: {same} of {total} quantized values agree"
        );
    }
}

/// A Detectron2 model-zoo `.pkl` (a protocol-2 pickle of numpy arrays under "model",
/// `tests/reference/make_densepose_pkl.py`) loads through `weights` as it is: the values are
/// the generated ones bit for bit, and the head runs on them.
#[test]
fn densepose_head_loads_a_detectron2_pkl() {
    let pkl = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/densepose_tiny_d2.pkl");
    let loaded = kernels::weights::Weights::load(&pkl).unwrap();
    assert_eq!(
        loaded.len(),
        28,
        "the arrays of the model, not the strings beside them"
    );
    for name in loaded.names() {
        let t = loaded.get(name).unwrap();
        let want = kernels::weights::generated_tensor(name, t.shape(), 0.5, 0.0).unwrap();
        assert_eq!(
            t.as_slice::<f32>().unwrap(),
            want.as_slice::<f32>().unwrap(),
            "{name}"
        );
    }
    let mut head = create(
        "roi_densepose_head",
        &[
            ("weights", ParamValue::Str(pkl.display().to_string())),
            ("channels", ParamValue::Int(4)),
            ("decoder_channels", ParamValue::Int(3)),
            ("layers", ParamValue::IntList(vec![5, 5])),
        ],
    )
    .unwrap();
    let mut pre = create(
        "rcnn_preprocess",
        &[
            ("min_size", ParamValue::Int(64)),
            ("max_size", ParamValue::Int(96)),
        ],
    )
    .unwrap();
    let pixels: Vec<u8> = (0..64 * 96 * 3).map(|i| (i * 31 % 253) as u8).collect();
    let x = run(
        &mut pre,
        "image",
        Value::image(Tensor::from_vec(&[64, 96, 3], pixels).unwrap()),
        "image",
    );
    let mut features = Value::new(plugin_sdk::PortKind::Features);
    for (level, stride) in [("p2", 4usize), ("p3", 8), ("p4", 16), ("p5", 32)] {
        let shape = [1, 4, 64 / stride, 96 / stride];
        let t = kernels::weights::generated_tensor(level, &shape, 1.0, 0.0).unwrap();
        features.insert(level, t);
    }
    let detections = plugin_sdk::Instances {
        boxes: vec![[4.0, 6.0, 40.0, 60.0], [50.0, 10.0, 90.0, 30.5]],
        scores: vec![0.9, 0.8],
        classes: vec![1, 1],
    }
    .to_value()
    .unwrap();
    let out = run_with(
        &mut head,
        &[
            ("features", &features),
            ("detections", &detections),
            ("image", &x),
        ],
        "instances",
    );
    assert_eq!(
        out.tensor("densepose_boxes")
            .unwrap()
            .as_slice::<i64>()
            .unwrap(),
        &[4, 6, 36, 54, 50, 10, 40, 20]
    );
    assert_eq!(
        out.tensor("densepose_labels").unwrap().shape(),
        &[2, 54, 40]
    );
}

/// `panoptic_fusion` against Detectron2's `combine_semantic_and_instance_outputs`
/// (`tests/reference/make_panoptic_fusion_fixtures.py`): hand-made cases at every threshold
/// (score break, f64 comparisons, exact overlap and stuff-area limits, empty masks, ties,
/// label 0, VOID) and seeded random ones; the same segment map and segments.
#[test]
fn panoptic_fusion_matches_detectron2() {
    let doc = fixture_named("panoptic_fusion.json");
    for case in doc["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (h, w) = (
            case["height"].as_u64().unwrap() as usize,
            case["width"].as_u64().unwrap() as usize,
        );
        let scores: Vec<f32> = floats(&case["scores"]);
        let n = scores.len();
        let classes: Vec<i64> = case["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let mut masks = Vec::with_capacity(n * h * w);
        for runs in case["masks"].as_array().unwrap() {
            for (k, r) in runs.as_array().unwrap().iter().enumerate() {
                masks.extend(std::iter::repeat_n(
                    (k % 2) as u8,
                    r.as_u64().unwrap() as usize,
                ));
            }
        }
        assert_eq!(masks.len(), n * h * w, "{name}: masks");
        let semantic: Vec<i64> = case["semantic"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let instances = plugin_sdk::Instances {
            boxes: vec![[0.0; 4]; n],
            scores,
            classes,
        }
        .to_value()
        .unwrap()
        .with("masks", Tensor::from_vec(&[n, h, w], masks).unwrap());
        let sem = Value::new(plugin_sdk::PortKind::Semantic)
            .with("labels", Tensor::from_vec(&[h, w], semantic).unwrap());
        let p = &case["params"];
        let mut node = create(
            "panoptic_fusion",
            &[
                (
                    "overlap_threshold",
                    ParamValue::Float(p["overlap_threshold"].as_f64().unwrap()),
                ),
                (
                    "stuff_area_thresh",
                    ParamValue::Int(p["stuff_area_thresh"].as_i64().unwrap()),
                ),
                (
                    "instances_score_thresh",
                    ParamValue::Float(p["instances_score_thresh"].as_f64().unwrap()),
                ),
            ],
        )
        .unwrap();
        let out = run_with(
            &mut node,
            &[("instances", &instances), ("semantic", &sem)],
            "panoptic",
        );
        let seg = out.tensor("segments").unwrap().as_slice::<i32>().unwrap();
        let want: Vec<i32> = case["panoptic_seg"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap() as i32)
            .collect();
        assert_eq!(seg, want.as_slice(), "{name}: segment map");
        let info = case["segments_info"].as_array().unwrap();
        let ids = out
            .tensor("segment_ids")
            .unwrap()
            .as_slice::<i32>()
            .unwrap();
        let cls = out
            .tensor("segment_classes")
            .unwrap()
            .as_slice::<i64>()
            .unwrap();
        let thing = out
            .tensor("segment_isthing")
            .unwrap()
            .as_slice::<u8>()
            .unwrap();
        let sc = out
            .tensor("segment_scores")
            .unwrap()
            .as_slice::<f32>()
            .unwrap();
        let area = out
            .tensor("segment_areas")
            .unwrap()
            .as_slice::<i64>()
            .unwrap();
        assert_eq!(ids.len(), info.len(), "{name}: segments");
        for (k, s) in info.iter().enumerate() {
            assert_eq!(i64::from(ids[k]), s["id"].as_i64().unwrap(), "{name} {k}");
            assert_eq!(cls[k], s["category_id"].as_i64().unwrap(), "{name} {k}");
            assert_eq!(thing[k] == 1, s["isthing"].as_bool().unwrap(), "{name} {k}");
            if thing[k] == 1 {
                assert_eq!(sc[k], s["score"].as_f64().unwrap() as f32, "{name} {k}");
            } else {
                assert_eq!(area[k], s["area"].as_i64().unwrap(), "{name} {k}");
            }
        }
    }
}

/// `sem_seg_fpn_head` against Detectron2's `SemSegFPNHead` and `sem_seg_postprocess`
/// (`tests/reference/make_semseg_fixtures.py`) on the R18-FPN trunk's levels of a photo:
/// logits within 1e-4 (relative) at the photo's size, labels on at least 99.9% of pixels.
#[test]
fn semantic_head_matches_detectron2() {
    let doc = fixture_named("semseg_fpn.json");
    let dir = temp_dir("semseg");
    let weights = dir.join("semseg.safetensors");
    write_weight_lists(&[&doc["trunk_weights"], &doc["head_weights"]], &weights);
    let w = || ("weights", ParamValue::Str(weights.display().to_string()));
    let mut head = create(
        "sem_seg_fpn_head",
        &[
            w(),
            (
                "conv_dims",
                ParamValue::Int(doc["head"]["conv_dims"].as_i64().unwrap()),
            ),
        ],
    )
    .unwrap();
    let mut fpn = create("fpn", &[w(), ("depth", ParamValue::Int(18))]).unwrap();
    // astronaut.png needs no padding; coffee.png is padded from 720 to 736 columns, so the
    // crop of sem_seg_postprocess matters.
    for case in doc["cases"].as_array().unwrap() {
        let photo = case["photo"].as_str().unwrap();
        let params = &case["params"];
        let int = |k: &str| ParamValue::Int(params[k].as_i64().unwrap());
        let image =
            plugin_io::image_source::read_image(&root().join("assets").join(photo)).unwrap();
        let mut pre = create(
            "rcnn_preprocess",
            &[("min_size", int("min_size")), ("max_size", int("max_size"))],
        )
        .unwrap();
        let eps = ParamValue::Float(params["bn_eps"].as_f64().unwrap());
        let mut resnet = create(
            "resnet",
            &[w(), ("depth", ParamValue::Int(18)), ("bn_eps", eps)],
        )
        .unwrap();
        let x = run(&mut pre, "image", Value::image(image), "image");
        let c = run(&mut resnet, "image", x.clone(), "features");
        let p = run(&mut fpn, "features", c, "features");
        let sem = run_with(&mut head, &[("features", &p), ("image", &x)], "semantic");
        let worst = compare(
            &format!("{photo} semantic logits"),
            sem.tensor("logits").unwrap(),
            &case["logits"],
        );
        let labels = sem.tensor("labels").unwrap().as_slice::<i64>().unwrap();
        let want = b64(&case["labels"]);
        assert_eq!(labels.len(), want.len());
        let agree = labels
            .iter()
            .zip(&want)
            .filter(|(a, b)| **a == i64::from(**b))
            .count();
        eprintln!(
            "{photo}: semantic logits within {worst:.1e}, labels agree on {agree} of {} pixels",
            want.len()
        );
        assert!(agree as f64 >= 0.999 * want.len() as f64, "{photo}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Our tensor in the fixture summary's shape (the features carry a batch axis of 1).
fn compare_as(what: &str, t: &Tensor, s: &Json) -> f64 {
    let shape: Vec<usize> = s["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    compare(what, &t.reshape(&shape).unwrap(), s)
}

fn instances_value(boxes: &[f32], scores: &[f32], classes: &[i64]) -> Value {
    plugin_sdk::Instances {
        boxes: boxes_of(boxes),
        scores: scores.to_vec(),
        classes: classes.to_vec(),
    }
    .to_value()
    .unwrap()
}

/// How many of a semantic value's labels differ from the base64 u8 labels `want`.
fn labels_differ(sem: &Value, want: &Json) -> usize {
    let labels = sem.tensor("labels").unwrap().as_slice::<i64>().unwrap();
    let want = b64(want);
    assert_eq!(labels.len(), want.len(), "label count");
    labels
        .iter()
        .zip(&want)
        .filter(|(a, b)| **a != i64::from(**b))
        .count()
}

fn ints(j: &Json) -> Vec<i64> {
    j.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

/// Panoptic FPN R50 against Detectron2's own `PanopticFPN` (`make_panoptic_fpn_fixtures.py`,
/// `panoptic_fpn_d2.json`): the nodes with `convention = "detectron2"`, stage by stage, each
/// fed Detectron2's input of that stage (so one stage's last-ulp differences do not move the
/// next stage's cuts): pre-processing and the trunk within 1e-4, the proposals, detections,
/// mask probabilities, pasted masks, semantic logits, and the fused segment map and segments.
#[test]
fn panoptic_fpn_matches_detectron2() {
    let doc = fixture_named("panoptic_fpn_d2.json");
    let dir = temp_dir("panoptic-fpn");
    let weights = dir.join("panoptic_fpn.safetensors");
    // Older Detectron2 checkpoints also hold the RPN's cell anchors (a buffer): ignored.
    let mut tensors = generated(&doc["weights"]);
    tensors.push((
        "proposal_generator.anchor_generator.cell_anchors.0".into(),
        Tensor::from_vec(&[3, 4], vec![0f32; 12]).unwrap(),
    ));
    save(&tensors, &weights);
    let w = || ("weights", ParamValue::Str(weights.display().to_string()));
    let d2 = || ("convention", ParamValue::Str("detectron2".into()));
    let cfg = &doc["config"];
    let int = |k: &str| ParamValue::Int(cfg[k].as_i64().unwrap());
    let mut pre = create(
        "detectron2_preprocess",
        &[
            ("min_size", int("INPUT.MIN_SIZE_TEST")),
            ("max_size", int("INPUT.MAX_SIZE_TEST")),
        ],
    )
    .unwrap();
    let mut resnet = create(
        "resnet",
        &[
            w(),
            ("prefix", ParamValue::Str("backbone.bottom_up.".into())),
            ("stage_names", ParamValue::Str("detectron2".into())),
            ("stride_in_1x1", ParamValue::Bool(true)),
            ("bn_eps", ParamValue::Float(1e-5)),
        ],
    )
    .unwrap();
    let mut fpn = create(
        "fpn",
        &[w(), ("prefix", ParamValue::Str("backbone.".into()))],
    )
    .unwrap();
    let mut rpn = create("rpn", &[w(), d2()]).unwrap();
    let mut box_head = create("roi_box_head", &[w(), d2()]).unwrap();
    let mut mask_head = create("roi_mask_head", &[w(), d2()]).unwrap();
    let mut paste = create("paste_masks", &[d2()]).unwrap();
    let mut semantic = create("sem_seg_fpn_head", &[w()]).unwrap();
    let mut fusion = create("panoptic_fusion", &[]).unwrap();
    for case in doc["cases"].as_array().unwrap() {
        let photo = case["photo"].as_str().unwrap();
        let image =
            plugin_io::image_source::read_image(&root().join("assets").join(photo)).unwrap();
        let x = run(&mut pre, "image", Value::image(image), "image");
        let size = |name: &str| x.tensor(name).unwrap().as_slice::<i64>().unwrap().to_vec();
        assert_eq!(size("image_size"), ints(&case["image_size"]), "{photo}");
        assert_eq!(
            size("original_size"),
            ints(&case["original_size"]),
            "{photo}"
        );
        let e = compare(
            &format!("{photo} input"),
            x.tensor("tensor").unwrap(),
            &case["input"],
        );
        eprintln!("{photo}: input within {e:.1e}");
        let c = run(&mut resnet, "image", x.clone(), "features");
        let p = run(&mut fpn, "features", c, "features");
        for level in ["p2", "p3", "p4", "p5", "p6"] {
            let e = compare_as(
                &format!("{photo} {level}"),
                p.tensor(level).unwrap(),
                &case["features"][level],
            );
            eprintln!("  {level} within {e:.1e}");
        }

        // RPN: Detectron2's proposals, by IoU and objectness; the per-level top-1000 cut on p2
        // is within a few 1e-4 of a logit, so a handful at the tail may differ.
        let props = run_with(&mut rpn, &[("features", &p), ("image", &x)], "proposals");
        let theirs_boxes = boxes_of(&floats(&case["proposals"]["boxes"]));
        let theirs_logits = floats(&case["proposals"]["objectness_logits"]);
        let ours_boxes = boxes_of(props.tensor("boxes").unwrap().as_slice::<f32>().unwrap());
        let ours_scores = props.tensor("scores").unwrap().as_slice::<f32>().unwrap();
        assert_eq!(ours_boxes.len(), theirs_boxes.len(), "{photo} proposals");
        let matched = theirs_boxes
            .iter()
            .zip(&theirs_logits)
            .filter(|(tb, &tl)| {
                let prob = 1.0 / (1.0 + (-tl).exp());
                ours_boxes.iter().zip(ours_scores).any(|(ob, &os)| {
                    (os - prob).abs() <= 1e-4 && kernels::ops::boxes::pair_iou(ob, tb) >= 0.999
                })
            })
            .count();
        eprintln!("  proposals: {matched} of {} matched", theirs_boxes.len());
        assert!(
            matched * 100 >= theirs_boxes.len() * 99,
            "{photo}: proposals"
        );

        // Box head on Detectron2's proposals: the same 100 detections (contiguous classes).
        let probs: Vec<f32> = theirs_logits
            .iter()
            .map(|&l| 1.0 / (1.0 + (-l).exp()))
            .collect();
        let their_props = instances_value(
            &floats(&case["proposals"]["boxes"]),
            &probs,
            &vec![0; probs.len()],
        );
        let det = run_with(
            &mut box_head,
            &[("features", &p), ("proposals", &their_props), ("image", &x)],
            "detections",
        );
        let bh = &case["box_head"];
        let (db, ds, dc) = (
            floats(&bh["boxes"]),
            floats(&bh["scores"]),
            ints(&bh["pred_classes"]),
        );
        check_instances(&format!("{photo} detections"), &det, &db, &ds, &dc);

        // Mask head and pasting on Detectron2's detections, in its order.
        let their_det = instances_value(&db, &ds, &dc);
        let masked = run_with(
            &mut mask_head,
            &[("features", &p), ("detections", &their_det), ("image", &x)],
            "instances",
        );
        let e = compare(
            &format!("{photo} mask probabilities"),
            masked.tensor("masks").unwrap(),
            &case["mask_probs"]["summary"],
        );
        eprintln!("  mask probabilities within {e:.1e}");
        let pasted = run_with(
            &mut paste,
            &[("instances", &masked), ("image", &x)],
            "instances",
        );
        let inst = &case["instances"];
        let n = inst["count"].as_u64().unwrap() as usize;
        let masks = pasted.tensor("masks").unwrap();
        assert_eq!(
            masks.shape()[0],
            n,
            "{photo}: detections kept by detector_postprocess"
        );
        let (h, w) = (masks.shape()[1], masks.shape()[2]);
        let bits = masks.as_slice::<u8>().unwrap();
        let want_boxes = floats(&inst["boxes"]);
        let ours_boxes = pasted.tensor("boxes").unwrap().as_slice::<f32>().unwrap();
        for (k, (a, b)) in ours_boxes.iter().zip(&want_boxes).enumerate() {
            assert!(
                (a - b).abs() <= 1e-3,
                "{photo} box value {k}: ours {a}, theirs {b}"
            );
        }
        let areas = ints(&inst["mask_area"]);
        let mut area_diff = 0;
        for (k, &want) in areas.iter().enumerate() {
            let ours = bits[k * h * w..(k + 1) * h * w]
                .iter()
                .filter(|&&b| b != 0)
                .count();
            area_diff += (ours as i64 - want).abs();
        }
        let first = &inst["masks_first"];
        let mut bit_diff = 0;
        for (k, enc) in first["bits"].as_array().unwrap().iter().enumerate() {
            let packed = b64(enc);
            for (i, &b) in bits[k * h * w..(k + 1) * h * w].iter().enumerate() {
                let theirs = (packed[i / 8] >> (7 - i % 8)) & 1;
                bit_diff += usize::from(theirs != b);
            }
        }
        eprintln!(
            "  pasted masks: areas differ by {area_diff} px over {n}, first {} masks by {bit_diff} px",
            first["count"]
        );
        let near = case["instances"]["paste_margin_below_1e-4"]
            .as_i64()
            .unwrap();
        assert!(
            area_diff <= near && bit_diff as i64 <= near,
            "{photo}: pasted masks"
        );

        // Semantic head, then the fusion of our pasted masks and semantic labels.
        let sem = run_with(
            &mut semantic,
            &[("features", &p), ("image", &x)],
            "semantic",
        );
        let e = compare(
            &format!("{photo} semantic logits"),
            sem.tensor("logits").unwrap(),
            &case["sem_seg"]["logits"],
        );
        let label_diff = labels_differ(&sem, &case["sem_seg"]["labels"]);
        eprintln!("  semantic logits within {e:.1e}, {label_diff} labels differ");
        let near = case["sem_seg"]["label_margin_below_1e-4"].as_u64().unwrap() as usize;
        assert!(label_diff <= near, "{photo}: semantic labels");

        let pan = run_with(
            &mut fusion,
            &[("instances", &pasted), ("semantic", &sem)],
            "panoptic",
        );
        let ours_map = pan.tensor("segments").unwrap().as_slice::<i32>().unwrap();
        let want_map: Vec<i32> = b64(&case["panoptic"]["map"])
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let map_diff = ours_map
            .iter()
            .zip(&want_map)
            .filter(|(a, b)| a != b)
            .count();
        eprintln!(
            "  panoptic map: {map_diff} of {} pixels differ",
            want_map.len()
        );
        assert_eq!(map_diff, 0, "{photo}: panoptic map");
        let segs = case["panoptic"]["segments_info"].as_array().unwrap();
        let ids = pan
            .tensor("segment_ids")
            .unwrap()
            .as_slice::<i32>()
            .unwrap();
        let classes = pan
            .tensor("segment_classes")
            .unwrap()
            .as_slice::<i64>()
            .unwrap();
        let things = pan
            .tensor("segment_isthing")
            .unwrap()
            .as_slice::<u8>()
            .unwrap();
        let scores = pan
            .tensor("segment_scores")
            .unwrap()
            .as_slice::<f32>()
            .unwrap();
        let seg_areas = pan
            .tensor("segment_areas")
            .unwrap()
            .as_slice::<i64>()
            .unwrap();
        assert_eq!(ids.len(), segs.len(), "{photo}: segments");
        for (k, s) in segs.iter().enumerate() {
            assert_eq!(
                i64::from(ids[k]),
                s["id"].as_i64().unwrap(),
                "{photo} segment {k}"
            );
            assert_eq!(
                classes[k],
                s["category_id"].as_i64().unwrap(),
                "{photo} segment {k}"
            );
            let thing = s["isthing"].as_bool().unwrap();
            assert_eq!(things[k] != 0, thing, "{photo} segment {k}");
            if thing {
                let want = s["score"].as_f64().unwrap() as f32;
                assert!(
                    (scores[k] - want).abs() <= 1e-4,
                    "{photo} segment {k} score"
                );
            } else {
                assert_eq!(
                    seg_areas[k],
                    s["area"].as_i64().unwrap(),
                    "{photo} segment {k}"
                );
            }
        }
        eprintln!("  {} segments equal", segs.len());
    }
}

/// UPSNet's heads against UPSNet's own code (`make_upsnet_fixtures.py`, `upsnet_heads.json`):
/// the FCN head (deformable convolutions) on generated p2..p5 within 1e-4, and the panoptic
/// head on UPSNet's panoptic detections and mask logits with our FCN output: the same
/// unified segments, pixel for pixel.
#[test]
fn upsnet_heads_match_the_official_code() {
    let doc = fixture_named("upsnet_heads.json");
    let dir = temp_dir("upsnet");
    let weights = dir.join("upsnet.safetensors");
    write_weight_lists(&[&doc["fcn"]["weights"]], &weights);
    let mut fcn = create(
        "upsnet_fcn_head",
        &[("weights", ParamValue::Str(weights.display().to_string()))],
    )
    .unwrap();
    let mut features = Value::new(plugin_sdk::PortKind::Features);
    for (name, t) in generated(&doc["fcn"]["inputs"]) {
        features.insert(name.trim_start_matches("input."), t);
    }
    let size = ints(&doc["padded_size"]);
    let (h, w) = (size[0] as usize, size[1] as usize);
    let image = Value::new(plugin_sdk::PortKind::ModelImage)
        .with(
            "tensor",
            Tensor::from_vec(&[3, h, w], vec![0f32; 3 * h * w]).unwrap(),
        )
        .with("image_size", Tensor::from_vec(&[2], size.clone()).unwrap())
        .with("original_size", Tensor::from_vec(&[2], size).unwrap());
    let sem = run_with(
        &mut fcn,
        &[("features", &features), ("image", &image)],
        "semantic",
    );
    let e = compare(
        "fcn_output",
        sem.tensor("logits").unwrap(),
        &doc["fcn"]["fcn_output"],
    );
    let differ = labels_differ(&sem, &doc["fcn"]["labels"]);
    eprintln!("fcn_output within {e:.1e}; {differ} semantic labels differ");
    assert!(differ as u64 <= doc["fcn"]["label_margin_below_1e-5"].as_u64().unwrap());

    // The panoptic head on MaskROI's panoptic detections (input pixels) and mask logits.
    let roi = &doc["panoptic"]["mask_roi"];
    let boxes: Vec<f32> = roi["boxes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| floats(r)[1..5].to_vec())
        .collect();
    let k = roi["scores"].as_array().unwrap().len();
    let mut instances = instances_value(&boxes, &floats(&roi["scores"]), &ints(&roi["cls_idx"]));
    let logits = f32s(&b64(&doc["panoptic"]["mask_score"]["values"]));
    instances.insert(
        "mask_logits",
        Tensor::from_vec(&[k, 28, 28], logits).unwrap(),
    );
    let mut head = create("upsnet_panoptic_head", &[]).unwrap();
    let pan = run_with(
        &mut head,
        &[
            ("instances", &instances),
            ("semantic", &sem),
            ("image", &image),
        ],
        "panoptic",
    );
    let ours = pan.tensor("segments").unwrap().as_slice::<i32>().unwrap();
    let theirs: Vec<i32> = b64(&doc["unified"]["pan_id"])
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let classes = pan
        .tensor("segment_classes")
        .unwrap()
        .as_slice::<i64>()
        .unwrap();
    let areas = pan
        .tensor("segment_areas")
        .unwrap()
        .as_slice::<i64>()
        .unwrap();
    // One of our segments per UPSNet segment (pan_id = 1000·class + instance; 255000 void).
    let mut pairs = std::collections::BTreeMap::new();
    for (&o, &t) in ours.iter().zip(&theirs) {
        let prev = pairs.insert(o, t);
        assert!(
            prev.is_none() || prev == Some(t),
            "segment {o} is UPSNet's {t} and {prev:?}"
        );
    }
    let segments = doc["unified"]["segments"].as_array().unwrap();
    assert_eq!(classes.len(), segments.len(), "segments");
    for (&o, &t) in &pairs {
        if o == 0 {
            assert_eq!(t, 255_000, "void");
            continue;
        }
        let i = o as usize - 1;
        assert_eq!(
            classes[i],
            i64::from(t / 1000),
            "segment {o} (UPSNet's {t})"
        );
        let s = segments.iter().find(|s| s["pan_id"] == t).unwrap();
        assert_eq!(areas[i], s["area"].as_i64().unwrap(), "segment {o} area");
    }
    eprintln!("{} panoptic segments equal UPSNet's", segments.len());
}
