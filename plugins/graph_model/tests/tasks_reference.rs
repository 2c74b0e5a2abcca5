//! Compares the decoded results of the task nodes (movenet, centernet, blazeface,
//! person_segmentation) with the TF.js port of @vladmandic/human's decoding on real photos.
//!
//! Fixtures: `tests/fixtures/tfjs/task-<model>.json`, written by
//! `tests/reference/tfjs/tasks.js`. Models: `models/` (`scripts/fetch-models.sh`); when absent
//! each test prints "SKIPPED: run scripts/fetch-models.sh" and passes.
//!
//! Agreement required: the same number of detections, matched by class and box (IoU >= 0.99
//! or every corner within 0.5 px), scores within 1e-3, keypoints and landmarks within 0.5 px;
//! segmentation: probabilities within 1e-3 at 256 fixed pixels, person pixel count within
//! 0.2 %, the person box within 1 px.

use std::path::{Path, PathBuf};

use kernels::Tensor;
use plugin_graph_model::tasks::{
    blazeface::BlazeFace, centernet::CenterNet, iou, movenet::MoveNet,
    segmentation::PersonSegmentation, Dets,
};
use plugin_sdk::{NodeKind, Params};
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
    iou(a, b) >= 0.99 || a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 0.5)
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
            let (n, data) = ours.landmarks.as_ref().expect("landmarks");
            let mine = &data[k * n * 2..(k + 1) * n * 2];
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
        run_detector(model, |img, h, w| node.detect(img, h, w).expect("detect"));
    }
}

#[test]
fn centernet_matches_tfjs() {
    let Some(dir) = models_dir() else { return };
    let node =
        CenterNet::from_params(&params("centernet", &dir.join("centernet.json"))).expect("load");
    run_detector("centernet", |img, h, w| {
        node.detect(img, h, w).expect("detect")
    });
}

#[test]
fn blazeface_matches_tfjs() {
    let Some(dir) = models_dir() else { return };
    let node =
        BlazeFace::from_params(&params("blazeface", &dir.join("blazeface.json"))).expect("load");
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
