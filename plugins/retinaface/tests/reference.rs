//! The nodes against the official RetinaFace: `tests/reference/make_retinaface_fixtures.py`
//! ran biubug6/Pytorch_Retinaface @ b984b4b (`RetinaFace(cfg_mnet)` and `RetinaFace(cfg_re50)`,
//! and `detect.py`'s post-processing) on real photos with generated weights, and stored the
//! final faces (boxes, scores, landmarks, in NMS order) in `tests/fixtures/retinaface.json`.
//! This test regenerates the same weights bit for bit (`kernels::weights::generated_tensor`),
//! writes them under the official names (with the `module.` prefix of the released files for
//! one case, so that the DataParallel naming is covered), runs `retinaface_preprocess` →
//! `mobilenet_v1` or `resnet` → `retinaface` from their plugin libraries, and compares: the
//! same number of faces, matched one to one (score within 1e-4, box within 0.01 px; at most a
//! few of them may trade places where two scores are closer than the two implementations'
//! rounding), and their landmarks within 0.01 px.

#[path = "../../../tests/support/reference.rs"]
mod reference;

use std::path::Path;

use engine::registry::Registry;
use kernels::Tensor;
use plugin_sdk::{Node, ParamValue, Value};
use reference::{create, generated, root, run_with as run, save};
use serde_json::Value as Json;

fn fixture() -> Json {
    reference::fixture("retinaface.json")
}

/// Writes a generated state dict as safetensors, each name under `outer`.
fn write_weights(spec: &Json, outer: &str, path: &Path) {
    let tensors: Vec<(String, Tensor)> = generated(spec)
        .into_iter()
        .map(|(name, t)| (format!("{outer}{name}"), t))
        .collect();
    save(&tensors, path);
}

fn floats(j: &Json) -> Vec<f32> {
    reference::floats(j).into_iter().map(|v| v as f32).collect()
}

/// The nodes of one configuration, created on `weights`.
fn nodes(config: &str, weights: &Path) -> (Box<dyn Node>, Box<dyn Node>, Box<dyn Node>) {
    let w = || ("weights", ParamValue::Str(weights.display().to_string()));
    let pre = create("retinaface_preprocess", &[]).unwrap();
    let (body, head) = match config {
        "mnet" => (
            create("mobilenet_v1", &[w()]).unwrap(),
            create("retinaface", &[w()]).unwrap(),
        ),
        "re50" => (
            create(
                "resnet",
                &[
                    w(),
                    ("prefix", ParamValue::Str("body.".into())),
                    ("bn_eps", ParamValue::Float(1e-5)),
                    ("returned_layers", ParamValue::IntList(vec![2, 3, 4])),
                    // As pipelines/retinaface_r50.toml.
                    ("winograd_f4", ParamValue::Bool(true)),
                ],
            )
            .unwrap(),
            create(
                "retinaface",
                &[
                    w(),
                    ("in_channels", ParamValue::IntList(vec![512, 1024, 2048])),
                    ("out_channels", ParamValue::Int(256)),
                ],
            )
            .unwrap(),
        ),
        other => panic!("unknown config {other}"),
    };
    (pre, body, head)
}

#[test]
fn retinaface_matches_the_official_code() {
    let doc = fixture();
    let dir = std::env::temp_dir().join(format!("retinaface-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, case) in doc["cases"].as_array().unwrap().iter().enumerate() {
        let config = case["config"].as_str().unwrap();
        let photo = case["photo"].as_str().unwrap();
        // The released checkpoints are DataParallel's (`module.` + name): the first case
        // loads that form, the others the plain names.
        let outer = if i == 0 { "module." } else { "" };
        let weights = dir.join(format!("{config}-{i}.safetensors"));
        write_weights(&doc[format!("weights_{config}")], outer, &weights);
        let (mut pre, mut body, mut head) = nodes(config, &weights);
        let image =
            plugin_io::image_source::read_image(&root().join("assets").join(photo)).unwrap();
        let t = std::time::Instant::now();
        let x = run(&mut pre, &[("image", &Value::image(image))], "image");
        let f = run(&mut body, &[("image", &x)], "features");
        let faces = run(&mut head, &[("features", &f), ("image", &x)], "instances");
        let ms = t.elapsed().as_secs_f64() * 1e3;

        let get = |name: &str| {
            faces
                .tensor(name)
                .unwrap()
                .as_slice::<f32>()
                .unwrap()
                .to_vec()
        };
        let (boxes, scores, landmarks) = (get("boxes"), get("scores"), get("landmarks"));
        let (want_boxes, want_scores, want_landmarks) = (
            floats(&case["boxes"]),
            floats(&case["scores"]),
            floats(&case["landmarks"]),
        );
        let what = format!("{config} on {photo}");
        assert_eq!(scores.len(), want_scores.len(), "{what}: number of faces");
        assert_eq!(
            faces.tensor("landmarks").unwrap().shape(),
            &[scores.len(), 5, 2]
        );
        // Faces are matched one to one (scores closer than the tolerance may swap places
        // between the two implementations): each official face to an unused one of ours with
        // its score within 1e-4 and its box within 0.01 px.
        let (mut worst_box, mut worst_lm, mut worst_score) = (0f32, 0f32, 0f32);
        let mut used = vec![false; scores.len()];
        let mut moved = 0;
        for j in 0..want_scores.len() {
            let box_diff = |i: usize| {
                (0..4)
                    .map(|k| (boxes[4 * i + k] - want_boxes[4 * j + k]).abs())
                    .fold(0f32, f32::max)
            };
            let i = (0..scores.len())
                .find(|&i| {
                    !used[i] && (scores[i] - want_scores[j]).abs() <= 1e-4 && box_diff(i) <= 0.01
                })
                .unwrap_or_else(|| {
                    panic!(
                        "{what}: official face {j} (score {}, box {:?}) has no match; ours at {j}: score {}, box {:?}",
                        want_scores[j],
                        &want_boxes[4 * j..4 * j + 4],
                        scores[j],
                        &boxes[4 * j..4 * j + 4]
                    )
                });
            used[i] = true;
            moved += usize::from(i != j);
            worst_score = worst_score.max((scores[i] - want_scores[j]).abs());
            worst_box = worst_box.max(box_diff(i));
            for k in 0..10 {
                let d = (landmarks[10 * i + k] - want_landmarks[10 * j + k]).abs();
                assert!(
                    d <= 0.01,
                    "{what}: face {j} landmark value {k}: ours {}, official {}",
                    landmarks[10 * i + k],
                    want_landmarks[10 * j + k]
                );
                worst_lm = worst_lm.max(d);
            }
        }
        assert!(moved <= 4, "{what}: {moved} faces in another order");
        eprintln!(
            "{what}: {} faces match the official code (boxes within {worst_box:.1e} px, landmarks {worst_lm:.1e} px, scores {worst_score:.1e}; {moved} in swapped order); {ms:.0} ms",
            scores.len()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_faces_tiny_images_and_wrong_checkpoints() {
    let doc = fixture();
    let dir = std::env::temp_dir().join(format!("retinaface-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mnet = dir.join("mnet.safetensors");
    write_weights(&doc["weights_mnet"], "", &mnet);
    let w = || ("weights", ParamValue::Str(mnet.display().to_string()));
    let (mut pre, mut body, mut head) = nodes("mnet", &mnet);
    let mut strict = create(
        "retinaface",
        &[w(), ("confidence_threshold", ParamValue::Float(1.0))],
    )
    .unwrap();
    // Tiny and thin photos: valid instances (the reference clips nothing: cfg clip = False and
    // detect.py keeps boxes as decoded), and none at all above a threshold of 1.
    for (h, wd) in [(1, 1), (7, 300), (300, 9), (33, 65)] {
        let data: Vec<u8> = (0..h * wd * 3).map(|i| (i * 37 % 251) as u8).collect();
        let img = Value::image(Tensor::from_vec(&[h, wd, 3], data).unwrap());
        let x = run(&mut pre, &[("image", &img)], "image");
        let f = run(&mut body, &[("image", &x)], "features");
        let faces = run(&mut head, &[("features", &f), ("image", &x)], "instances");
        let n = faces.tensor("scores").unwrap().shape()[0];
        assert_eq!(faces.tensor("landmarks").unwrap().shape(), &[n, 5, 2]);
        assert!(faces
            .tensor("boxes")
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .iter()
            .all(|v| v.is_finite()));
        let none = run(&mut strict, &[("features", &f), ("image", &x)], "instances");
        assert_eq!(none.tensor("boxes").unwrap().shape(), &[0, 4], "{h}x{wd}");
        assert_eq!(
            none.tensor("landmarks").unwrap().shape(),
            &[0, 5, 2],
            "{h}x{wd}"
        );
    }
    // A MobileNet checkpoint where the ResNet-50 configuration is expected: the body names
    // what it misses, the head what is mis-shaped, each naming the file.
    let err = create(
        "resnet",
        &[
            w(),
            ("prefix", ParamValue::Str("body.".into())),
            ("bn_eps", ParamValue::Float(1e-5)),
        ],
    )
    .err()
    .unwrap();
    assert!(
        err.contains("mnet.safetensors") && err.contains("body.conv1.weight"),
        "{err}"
    );
    let err = create(
        "retinaface",
        &[
            w(),
            ("in_channels", ParamValue::IntList(vec![512, 1024, 2048])),
            ("out_channels", ParamValue::Int(256)),
        ],
    )
    .err()
    .unwrap();
    assert!(
        err.contains("mnet.safetensors")
            && err.contains("fpn.output1.0.weight: the model expects [256, 512, 1, 1], the file has [64, 64, 1, 1]"),
        "{err}"
    );
    // Features of the wrong body: named with the expected channels.
    let img = Value::image(Tensor::from_vec(&[64, 64, 3], vec![100u8; 64 * 64 * 3]).unwrap());
    let x = run(&mut pre, &[("image", &img)], "image");
    let f = run(&mut body, &[("image", &x)], "features");
    let mut wide = create(
        "retinaface",
        &[
            w(),
            (
                "in_features",
                ParamValue::StrList(vec!["c4".into(), "c4".into(), "c5".into()]),
            ),
        ],
    )
    .unwrap();
    let err =
        Registry::run_once(&mut wide, &[("features", &f), ("image", &x)], "instances").unwrap_err();
    assert!(err.contains("the head expects 64 x 8 x 8"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
