//! Compares the decoded results of the task nodes (movenet, centernet, blazeface, facemesh,
//! person_segmentation) with the TF.js port of @vladmandic/human's decoding on real photos.
//!
//! Fixtures: `tests/fixtures/tfjs/task-<model>.json`, written by
//! `tests/reference/tfjs/tasks.js`. Models: `models/` (`scripts/fetch-models.sh`); when absent
//! each test prints "SKIPPED: run scripts/fetch-models.sh" and passes.
//!
//! Agreement required: the same number of detections, matched by class and box (IoU >= 0.99
//! or every corner within 0.5 px), scores within 1e-3, keypoints and landmarks within 0.5 px;
//! segmentation: probabilities within 1e-3 at 256 fixed pixels, person pixel count within
//! 0.2 %, the person box within 1 px; facemesh: the same square crop boxes, the crop (model
//! input) and raw outputs within 1e-3·max(1, |ref|) (256 sampled values, min, max, mean),
//! the same faces kept, scores within 1e-3, all 468 mesh points (x, y, z) and the box within
//! 0.5 px.

use std::path::{Path, PathBuf};

use kernels::Tensor;
use plugin_graph_model::tasks::{
    blazeface::BlazeFace, centernet::CenterNet, facemesh::FaceMesh, movenet::MoveNet,
    segmentation::PersonSegmentation, Dets,
};
use plugin_sdk::{Instances, NodeKind, Params};
use serde_json::Value as Json;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn models_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("models"));
    if dir.join("blazeface.json").is_file() {
        Some(dir)
    } else {
        println!(
            "SKIPPED: run scripts/fetch-models.sh (no models in {})",
            dir.display()
        );
        None
    }
}

fn load_png(path: &Path) -> Tensor {
    let file = std::fs::File::open(path).expect("photo");
    let mut dec = png::Decoder::new(std::io::BufReader::new(file));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size().expect("png size")];
    let info = reader.next_frame(&mut buf).expect("png frame");
    let (w, h) = (info.width as usize, info.height as usize);
    let ch = info.color_type.samples();
    let mut rgb = Vec::with_capacity(w * h * 3);
    for p in buf[..w * h * ch].chunks_exact(ch) {
        match ch {
            1 | 2 => rgb.extend_from_slice(&[p[0]; 3]),
            _ => rgb.extend_from_slice(&p[..3]),
        }
    }
    Tensor::from_vec(&[h, w, 3], rgb).expect("tensor")
}

/// The kind's defaults with `model` set.
fn params(kind: &str, model: &Path) -> Params {
    let kinds: Vec<NodeKind> = plugin_graph_model::kinds();
    let k = kinds.iter().find(|k| k.spec.kind == kind).expect("kind");
    let mut p = Params::new();
    for spec in &k.spec.params {
        if let Some(d) = &spec.default {
            p.set(&spec.name, d.clone());
        }
    }
    p.set(
        "model",
        plugin_sdk::ParamValue::Str(model.display().to_string()),
    );
    p
}

fn fixture(model: &str) -> Json {
    let path = repo().join(format!("tests/fixtures/tfjs/task-{model}.json"));
    let text = std::fs::read_to_string(&path).expect("fixture");
    serde_json::from_str(&text).expect("fixture json")
}

fn floats(v: &Json) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .flat_map(|x| match x {
            Json::Array(a) => a.iter().map(|y| y.as_f64().expect("num") as f32).collect(),
            _ => vec![x.as_f64().expect("num") as f32],
        })
        .collect()
}

fn box_matches(a: &[f32; 4], b: &[f32; 4]) -> bool {
    kernels::ops::nms::iou_tfjs(a, b) >= 0.99 || a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 0.5)
}

/// Compares detections with the fixture's instances; returns the largest differences (score,
/// point).
fn compare(what: &str, ours: &Dets, reference: &Json) -> (f32, f32) {
    let refs = reference.as_array().expect("instances");
    assert_eq!(
        ours.len(),
        refs.len(),
        "{what}: number of detections: ours {:?} vs {refs:?}",
        ours.boxes
    );
    let mut used = vec![false; ours.len()];
    let (mut dscore, mut dpoint) = (0f32, 0f32);
    for (r, inst) in refs.iter().enumerate() {
        let class = inst["class"].as_i64().expect("class");
        let b = floats(&inst["box"]);
        let rb = [b[0], b[1], b[2], b[3]];
        let k = (0..ours.len())
            .find(|&k| !used[k] && ours.classes[k] == class && box_matches(&ours.boxes[k], &rb))
            .unwrap_or_else(|| panic!("{what}: reference instance {r} (class {class}, box {rb:?}) has no match in {:?} {:?}", ours.classes, ours.boxes));
        used[k] = true;
        let score = inst["score"].as_f64().expect("score") as f32;
        dscore = dscore.max((ours.scores[k] - score).abs());
        assert!(
            dscore <= 1e-3,
            "{what}: instance {r}: score {} vs {score}",
            ours.scores[k]
        );
        if let Some(kp) = inst.get("keypoints") {
            let rk = floats(kp);
            let (n, data) = ours.keypoints.as_ref().expect("keypoints");
            let mine = &data[k * n * 3..(k + 1) * n * 3];
            assert_eq!(mine.len(), rk.len(), "{what}: keypoint count");
            for (j, (m, e)) in mine.chunks(3).zip(rk.chunks(3)).enumerate() {
                assert_eq!(
                    m[2] > 0.0,
                    e[2] > 0.0,
                    "{what}: keypoint {j} kept: {m:?} vs {e:?}"
                );
                if e[2] > 0.0 {
                    let d = (m[0] - e[0]).abs().max((m[1] - e[1]).abs());
                    dpoint = dpoint.max(d);
                    assert!(
                        d <= 0.5 && (m[2] - e[2]).abs() <= 1e-3,
                        "{what}: keypoint {j}: {m:?} vs {e:?}"
                    );
                }
            }
        }
        if let Some(lm) = inst.get("landmarks") {
            let rl = floats(lm);
            let mine = ours.landmarks.as_ref().expect("landmarks").of(k);
            assert_eq!(mine.len(), rl.len(), "{what}: landmark count");
            for (m, e) in mine.iter().zip(&rl) {
                dpoint = dpoint.max((m - e).abs());
                assert!((m - e).abs() <= 0.5, "{what}: landmarks {mine:?} vs {rl:?}");
            }
        }
    }
    (dscore, dpoint)
}

fn run_detector(model: &str, detect: impl Fn(&Tensor, usize, usize) -> Dets) {
    let fx = fixture(model);
    for p in fx["photos"].as_array().expect("photos") {
        let photo = p["photo"].as_str().expect("photo");
        let img = load_png(&repo().join("assets").join(photo));
        let (h, w) = (img.shape()[0], img.shape()[1]);
        let dets = detect(&img, h, w);
        let (ds, dp) = compare(&format!("{model} on {photo}"), &dets, &p["instances"]);
        println!("{model} on {photo}: {} detections match, max |score diff| {ds:.2e}, max point diff {dp:.3} px", dets.len());
    }
}

#[test]
fn movenet_matches_tfjs() {
    let Some(dir) = models_dir() else { return };
    for model in ["movenet-lightning", "movenet-thunder"] {
        let node = MoveNet::from_params(&params("movenet", &dir.join(format!("{model}.json"))))
            .expect("load");
        assert!(node.planned(), "{model}: runs op by op");
        run_detector(model, |img, h, w| node.detect(img, h, w).expect("detect"));
    }
}

#[test]
fn centernet_matches_tfjs() {
    let Some(dir) = models_dir() else { return };
    let node =
        CenterNet::from_params(&params("centernet", &dir.join("centernet.json"))).expect("load");
    // It asks for one of the model's three outputs: planned for that one, not op by op.
    assert!(node.planned(), "centernet: runs op by op");
    run_detector("centernet", |img, h, w| {
        node.detect(img, h, w).expect("detect")
    });
}

#[test]
fn blazeface_matches_tfjs() {
    let Some(dir) = models_dir() else { return };
    let node =
        BlazeFace::from_params(&params("blazeface", &dir.join("blazeface.json"))).expect("load");
    assert!(node.planned(), "blazeface: runs op by op");
    run_detector("blazeface", |img, h, w| {
        node.detect(img, h, w).expect("detect")
    });
}

#[test]
fn person_segmentation_matches_tfjs() {
    let Some(dir) = models_dir() else { return };
    for model in ["selfie", "meet"] {
        let node = PersonSegmentation::from_params(&params(
            "person_segmentation",
            &dir.join(format!("{model}.json")),
        ))
        .expect("load");
        assert!(node.planned(), "{model}: runs op by op");
        let fx = fixture(model);
        for p in fx["photos"].as_array().expect("photos") {
            let photo = p["photo"].as_str().expect("photo");
            let img = load_png(&repo().join("assets").join(photo));
            let (h, w) = (img.shape()[0], img.shape()[1]);
            let prob = node.probabilities(&img, h, w).expect("run");
            let what = format!("{model} on {photo}");
            let mut dmax = 0f32;
            for (i, e) in p["indices"]
                .as_array()
                .expect("indices")
                .iter()
                .zip(floats(&p["probabilities"]))
            {
                let i = i.as_u64().expect("index") as usize;
                dmax = dmax.max((prob[i] - e).abs());
            }
            assert!(dmax <= 1e-3, "{what}: probability differs by {dmax}");
            let (labels, dets) =
                plugin_graph_model::tasks::segmentation::person(&prob, h, w, 0.5, 1);
            let count = labels.iter().filter(|&&l| l == 1).count() as f64;
            let want = p["person_pixels"].as_f64().expect("count");
            assert!(
                (count - want).abs() <= 0.002 * (h * w) as f64,
                "{what}: {count} person pixels vs {want}"
            );
            let refs = p["instances"].as_array().expect("instances");
            assert_eq!(dets.len(), refs.len(), "{what}: instances");
            for (k, r) in refs.iter().enumerate() {
                let b = floats(&r["box"]);
                for (m, e) in dets.boxes[k].iter().zip(&b) {
                    assert!(
                        (m - e).abs() <= 1.0,
                        "{what}: box {:?} vs {b:?}",
                        dets.boxes[k]
                    );
                }
                let s = r["score"].as_f64().expect("score") as f32;
                assert!(
                    (dets.scores[k] - s).abs() <= 1e-3,
                    "{what}: score {} vs {s}",
                    dets.scores[k]
                );
            }
            println!("{what}: max |probability diff| {dmax:.2e}, person pixels {count} vs {want}");
        }
    }
}

/// Largest |ours - ref| / max(1, |ref|) over a reference summary (sampled values, min, max,
/// mean); panics above `tol`.
fn compare_summary(what: &str, ours: &[f32], reference: &Json, tol: f64) -> f64 {
    let n = reference["n"].as_u64().expect("n") as usize;
    assert_eq!(ours.len(), n, "{what}: element count");
    let mut worst = 0f64;
    let mut check = |label: String, a: f64, b: f64| {
        let d = (a - b).abs() / b.abs().max(1.0);
        assert!(
            d <= tol,
            "{what}: {label}: ours {a}, tfjs {b} ({d:.2e} > {tol:.0e})"
        );
        worst = worst.max(d);
    };
    let idx = reference["indices"].as_array().expect("indices");
    for (i, r) in idx
        .iter()
        .zip(reference["values"].as_array().expect("values"))
    {
        let i = i.as_u64().expect("index") as usize;
        check(
            format!("value [{i}]"),
            ours[i] as f64,
            r.as_f64().expect("value"),
        );
    }
    let v: Vec<f64> = ours.iter().map(|&x| x as f64).collect();
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    check("min".into(), min, reference["min"].as_f64().expect("min"));
    check("max".into(), max, reference["max"].as_f64().expect("max"));
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    check(
        "mean".into(),
        mean,
        reference["mean"].as_f64().expect("mean"),
    );
    worst
}

#[test]
fn facemesh_matches_tfjs() {
    let Some(dir) = models_dir() else { return };
    let node =
        FaceMesh::from_params(&params("facemesh", &dir.join("facemesh.json"))).expect("load");
    assert!(node.planned(), "facemesh: runs op by op");
    let blaze =
        BlazeFace::from_params(&params("blazeface", &dir.join("blazeface.json"))).expect("load");
    let fx = fixture("facemesh");
    let mut kept_total = 0;
    for p in fx["photos"].as_array().expect("photos") {
        let photo = p["photo"].as_str().expect("photo");
        let img = load_png(&repo().join("assets").join(photo));
        let (h, w) = (img.shape()[0], img.shape()[1]);
        let faces = p["faces"].as_array().expect("faces");
        // The detector boxes as the blazeface node hands them on (f32).
        let detections = Instances {
            boxes: faces
                .iter()
                .map(|f| {
                    let b = floats(&f["detection"]["box"]);
                    [b[0], b[1], b[2], b[3]]
                })
                .collect(),
            scores: faces
                .iter()
                .map(|f| f["detection"]["score"].as_f64().expect("score") as f32)
                .collect(),
            classes: vec![91; faces.len()],
        };
        // Raw: crop boxes, crops and model outputs per face.
        let (mut dcrop, mut draw) = (0f64, 0f64);
        for (k, f) in faces.iter().enumerate() {
            let what = format!("facemesh on {photo}, face {k}");
            let cb = node.crop_box(detections.boxes[k]).expect("crop box");
            let sq = floats(&f["square"]);
            assert_eq!(
                [cb.start[0], cb.start[1], cb.end[0], cb.end[1]].map(|v| v as f32),
                [sq[0], sq[1], sq[2], sq[3]],
                "{what}: square crop box"
            );
            let x = node.crop(&img, &cb).expect("crop");
            let xs = x.as_slice::<f32>().expect("f32");
            dcrop = dcrop.max(compare_summary(
                &format!("{what}: crop"),
                xs,
                &f["crop"],
                1e-3,
            ));
            let raw = node.run_crop(&x).expect("run");
            draw = draw.max(compare_summary(
                &format!("{what}: mesh"),
                &raw.mesh,
                &f["mesh_raw"],
                1e-3,
            ));
            let c = f["confidence"].as_f64().expect("confidence");
            let d = (raw.confidence as f64 - c).abs() / c.abs().max(1.0);
            assert!(d <= 1e-3, "{what}: face flag {} vs {c}", raw.confidence);
            draw = draw.max(d);
        }
        // Decoded, from the same detector boxes.
        let dets = node.detect(&img, &detections).expect("detect");
        let refs = p["instances"].as_array().expect("instances");
        assert_eq!(dets.len(), refs.len(), "facemesh on {photo}: faces kept");
        let lm = dets.landmarks.as_ref().expect("landmarks");
        assert_eq!((lm.count, lm.dims), (468, 3));
        let (mut dscore, mut dpoint) = (0f32, 0f32);
        for (k, r) in refs.iter().enumerate() {
            let what = format!("facemesh on {photo}, instance {k}");
            let s = r["score"].as_f64().expect("score") as f32;
            dscore = dscore.max((dets.scores[k] - s).abs());
            assert!(dscore <= 1e-3, "{what}: score {} vs {s}", dets.scores[k]);
            assert_eq!(dets.classes[k], r["class"].as_i64().expect("class"));
            for (m, e) in dets.boxes[k].iter().zip(floats(&r["box"])) {
                dpoint = dpoint.max((m - e).abs());
                assert!(
                    (m - e).abs() <= 0.5,
                    "{what}: box {:?} vs {:?}",
                    dets.boxes[k],
                    r["box"]
                );
            }
            let mesh = floats(&r["mesh"]);
            assert_eq!(mesh.len(), 468 * 3, "{what}: mesh size");
            for (j, (m, e)) in lm.of(k).chunks(3).zip(mesh.chunks(3)).enumerate() {
                let d = m
                    .iter()
                    .zip(e)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                dpoint = dpoint.max(d);
                assert!(d <= 0.5, "{what}: point {j}: {m:?} vs {e:?}");
            }
        }
        kept_total += dets.len();
        // End to end: the blazeface node's own boxes give the same crops.
        let (bh, bw) = (h, w);
        let ours = blaze.detect(&img, bh, bw).expect("blazeface");
        assert_eq!(
            ours.len(),
            faces.len(),
            "facemesh on {photo}: blazeface faces"
        );
        for (k, f) in faces.iter().enumerate() {
            let cb = node.crop_box(ours.boxes[k]).expect("crop box");
            let sq = floats(&f["square"]);
            assert_eq!(
                [cb.start[0], cb.start[1], cb.end[0], cb.end[1]].map(|v| v as f32),
                [sq[0], sq[1], sq[2], sq[3]],
                "facemesh on {photo}, face {k}: square from the blazeface node's box"
            );
        }
        println!(
            "facemesh on {photo}: {} of {} faces kept; crops within {dcrop:.2e}, raw outputs within {draw:.2e} (relative); scores within {dscore:.2e}, mesh points and boxes within {dpoint:.4} px",
            dets.len(),
            faces.len()
        );
    }
    assert!(kept_total >= 2, "faces with a mesh on the photos of people");
}

#[test]
fn facemesh_handles_no_faces_border_boxes_and_tiny_images() {
    use plugin_sdk::{FrameInfo, Inputs, Node, Value};
    let Some(dir) = models_dir() else { return };
    let mut node =
        FaceMesh::from_params(&params("facemesh", &dir.join("facemesh.json"))).expect("load");
    let run = |node: &mut FaceMesh, img: Tensor, boxes: Vec<[f32; 4]>| {
        let n = boxes.len();
        let faces = Instances {
            boxes,
            scores: vec![0.9; n],
            classes: vec![91; n],
        }
        .to_value()
        .expect("faces");
        let mut inputs = Inputs::new();
        inputs.push("image", Some(Value::image(img)));
        inputs.push("faces", Some(faces));
        node.process(&FrameInfo::default(), &inputs)
    };
    let photo = load_png(&repo().join("assets/astronaut.png"));
    // No faces: empty instances with landmarks [0, 468, 3].
    let out = run(&mut node, photo.clone(), vec![]).expect("no faces");
    let v = out.get("instances").expect("instances");
    assert_eq!(v.tensor("boxes").unwrap().shape(), &[0, 4]);
    assert_eq!(v.tensor("landmarks").unwrap().shape(), &[0, 468, 3]);
    // Boxes at and beyond the border, empty, huge, NaN, on a tiny and a grayscale image:
    // results or clear errors, never a panic; kept faces have 468 finite points.
    let boxes = vec![
        [-40.0, -40.0, 60.0, 60.0],
        [280.0, 280.0, 400.0, 400.0],
        [5000.0, 5000.0, 5100.0, 5100.0],
        [10.0, 10.0, 10.0, 10.0],
        [-3e38, -3e38, 3e38, 3e38],
        [f32::NAN, 0.0, 10.0, 10.0],
        [106.3, 45.4, 171.9, 111.0],
    ];
    let gray = Tensor::from_vec(
        &[photo.shape()[0], photo.shape()[1], 1],
        photo
            .as_slice::<u8>()
            .unwrap()
            .chunks_exact(3)
            .map(|p| p[1])
            .collect(),
    )
    .unwrap();
    for img in [
        photo.clone(),
        gray,
        Tensor::from_vec(&[1, 1, 3], vec![200u8, 100, 50]).unwrap(),
        Tensor::from_vec(&[2, 3, 4], vec![9u8; 24]).unwrap(),
    ] {
        let shape = img.shape().to_vec();
        let out = run(&mut node, img, boxes.clone()).expect("bad boxes");
        let v = out.get("instances").expect("instances");
        v.validate().expect("valid");
        let lm = v.tensor("landmarks").unwrap();
        assert_eq!(&lm.shape()[1..], &[468, 3]);
        assert!(lm.as_slice::<f32>().unwrap().iter().all(|x| x.is_finite()));
        println!(
            "facemesh, image {shape:?}: {} of {} boxes kept",
            lm.shape()[0],
            boxes.len()
        );
    }
    // A malformed image given to the API directly is an error, not a panic.
    let one = Instances {
        boxes: vec![[0.0, 0.0, 2.0, 2.0]],
        scores: vec![0.9],
        classes: vec![91],
    };
    let flat = Tensor::zeros(kernels::DType::U8, &[4, 4]).unwrap();
    let e = node.detect(&flat, &one).expect_err("rank-2 image");
    assert!(e.to_string().contains("[H, W"), "{e}");
    // The real face on the photo is kept.
    let out = run(&mut node, photo, vec![[106.3, 45.4, 171.9, 111.0]]).expect("face");
    assert_eq!(
        out.get("instances")
            .unwrap()
            .tensor("boxes")
            .unwrap()
            .shape(),
        &[1, 4]
    );
}
