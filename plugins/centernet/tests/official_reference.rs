//! The CenterNet nodes against the official code: `tests/reference/make_centernet_fixtures.py`
//! ran xingyizhou/CenterNet @ 4c50fd3a (`ctdet` with `resdcn_18` and `dla_34`, demo.py's
//! options, DCNv2 through `torchvision.ops.deform_conv2d`) on the CPU with generated weights
//! on two photos, and `tests/reference/make_hourglass_fixtures.py` its stacked Hourglass at a
//! small size (two stacks, two levels; the same classes as Hourglass-104). These tests
//! regenerate the weights bit for bit, write them under the official names, run
//! `centernet_preprocess` → the trunk (`resnet` → `dcn_upsample`, `dla` or `hourglass`) →
//! `centernet_ctdet` from their plugin libraries, and compare:
//! - the warped 512x512 BGR image byte for byte (its FNV-1a hash) and the normalised input;
//! - the trunk's features and the raw `hm`, `wh`, `reg` heads (summaries), within
//!   `|a - b| <= 1e-4 · max(1, |b|)`;
//! - the 100 decoded peaks (same flat index and class; score and box within 1e-4);
//! - the node's detections in photo pixels (`ctdet_post_process`), the same 100 with the same
//!   COCO category ids, boxes and scores within 1e-4 relative to max(1, |b|).

#[path = "../../../tests/support/reference.rs"]
mod reference;

use std::path::Path;

use kernels::layers::resample::cv_warp_affine_u8;
use ndarray::ArrayView4;
use plugin_centernet::model::{CenterNet, CenterNetConfig, HeadNames};
use plugin_centernet::preprocess::affine;
use plugin_sdk::{ParamValue, Value};
use reference::{
    batch_of_one, compare, create, fixture, floats, generated, relative_error, root, run_with,
    save, scratch,
};

const TOL: f64 = 1e-4;

fn weights_param(path: &Path) -> (&'static str, ParamValue) {
    ("weights", ParamValue::Str(path.display().to_string()))
}

/// FNV-1a 64 of bytes, as the fixture script hashes the warped image.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The nodes between the pre-processing and the heads, and what of theirs the fixture
/// checks: (fixture key, the features value's level) pairs.
enum Trunk {
    /// `resnet` (ResNet-18) → `dcn_upsample`: layer4 (c5) and the up-sampled p2.
    ResDcn,
    /// `dla`: p2 after DLAUp and IDAUp.
    Dla,
    /// `hourglass` at the fixture's small size: the last stack's features.
    Hourglass,
}

fn resnet18(weights: &Path) -> Box<dyn plugin_sdk::Node> {
    create(
        "resnet",
        &[
            weights_param(weights),
            ("prefix", ParamValue::Str(String::new())),
            ("depth", ParamValue::Int(18)),
            ("bn_eps", ParamValue::Float(1e-5)),
            ("returned_layers", ParamValue::IntList(vec![4])),
        ],
    )
    .unwrap()
}

/// One case through `centernet_preprocess` and the trunk's nodes: checks the warp byte for
/// byte, the input and the trunk's `checks`; returns the image, the last features and the
/// largest error.
fn run_trunk(
    case: &serde_json::Value,
    pre: &mut Box<dyn plugin_sdk::Node>,
    nodes: &mut [Box<dyn plugin_sdk::Node>],
    checks: &[(&str, &str)],
) -> (Value, Value, f64) {
    let photo = case["photo"].as_str().unwrap();
    let image = plugin_io::image_source::read_image(&root().join("assets").join(photo)).unwrap();
    let (h, wd) = (image.shape()[0], image.shape()[1]);
    let rgb = image.as_slice::<u8>().unwrap();
    let bgr: Vec<u8> = rgb
        .chunks_exact(3)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect();
    let warped =
        cv_warp_affine_u8(&bgr, (h, wd, 3), &affine((h, wd), (512, 512)), (512, 512)).unwrap();
    assert_eq!(
        format!("{:016x}", fnv1a64(&warped)),
        case["warped"]["fnv1a64"].as_str().unwrap(),
        "{photo}: the warped image differs from cv2.warpAffine's"
    );
    let x = run_with(pre, &[("image", &Value::image(image.clone()))], "image");
    let t = x.tensor("tensor").unwrap();
    let mut worst = compare(
        &format!("{photo} input"),
        t.as_slice::<f32>().unwrap(),
        t.shape(),
        &case["input"],
        TOL,
    );
    let mut f = x.clone();
    let mut all = Vec::new();
    for (k, node) in nodes.iter_mut().enumerate() {
        let port = if k == 0 { "image" } else { "features" };
        f = run_with(node, &[(port, &f)], "features");
        all.push(f.clone());
    }
    for (key, level) in checks {
        let t = all
            .iter()
            .find_map(|v| v.tensor(level).ok())
            .unwrap_or_else(|| panic!("no level {level}"));
        worst = worst.max(compare(
            &format!("{photo} {key}"),
            t.as_slice::<f32>().unwrap(),
            t.shape(),
            &case[*key],
            TOL,
        ));
    }
    (x, f, worst)
}

/// Runs the fixture's photos through `centernet_preprocess` → the trunk → `centernet_ctdet`
/// and compares every stage (see the module documentation).
fn check_against_fixture(name: &str, trunk: Trunk) {
    let doc = fixture(name);
    let dir = scratch(&format!("centernet-ref-{}", name.trim_end_matches(".json")));
    let weights = dir.join("ctdet.safetensors");
    save(&generated(&doc["weights"]), &weights);
    let mut pre = create("centernet_preprocess", &[]).unwrap();
    let mut nodes: Vec<Box<dyn plugin_sdk::Node>> = match trunk {
        Trunk::ResDcn => vec![
            resnet18(&weights),
            create("dcn_upsample", &[weights_param(&weights)]).unwrap(),
        ],
        Trunk::Dla => vec![create("dla", &[weights_param(&weights)]).unwrap()],
        Trunk::Hourglass => {
            let c = &doc["config"];
            let int = |k: &str| c[k].as_i64().unwrap_or_else(|| panic!("config {k}"));
            let ints = |k: &str| floats(&c[k]).iter().map(|&v| v as i64).collect::<Vec<_>>();
            vec![create(
                "hourglass",
                &[
                    weights_param(&weights),
                    ("levels", ParamValue::Int(int("n"))),
                    ("stacks", ParamValue::Int(int("nstack"))),
                    ("dims", ParamValue::IntList(ints("dims"))),
                    ("modules", ParamValue::IntList(ints("modules"))),
                    ("cnv_dim", ParamValue::Int(int("cnv_dim"))),
                ],
            )
            .unwrap()]
        }
    };
    let checks: &[(&str, &str)] = match trunk {
        Trunk::ResDcn => &[("layer4", "c5"), ("deconv3", "p2")],
        Trunk::Dla | Trunk::Hourglass => &[("features", "p2")],
    };
    // The heads' input width, their 3x3 width and their names.
    let (in_channels, head_conv, head_names) = match trunk {
        Trunk::ResDcn => (64, 64, HeadNames::Sequential),
        Trunk::Dla => (64, 256, HeadNames::Sequential),
        Trunk::Hourglass => {
            let c = &doc["config"];
            let stacks = c["nstack"].as_u64().expect("nstack") as usize;
            (
                c["cnv_dim"].as_u64().expect("cnv_dim") as usize,
                floats(&c["dims"])[0] as usize,
                HeadNames::Hourglass { stack: stacks - 1 },
            )
        }
    };
    let mut head_params = vec![
        weights_param(&weights),
        ("in_channels", ParamValue::Int(in_channels as i64)),
        ("head_conv", ParamValue::Int(head_conv as i64)),
    ];
    if let HeadNames::Hourglass { stack } = head_names {
        head_params.push(("head_names", ParamValue::Str("hourglass".into())));
        head_params.push(("stacks", ParamValue::Int(stack as i64 + 1)));
    }
    let mut head = create("centernet_ctdet", &head_params).unwrap();
    let w = kernels::weights::Weights::load(&weights).unwrap();
    let config = CenterNetConfig {
        in_channels,
        head_conv,
        head_names,
        ..CenterNetConfig::default()
    };
    let model = CenterNet::from_weights(&w, "", config).unwrap();
    for case in doc["cases"].as_array().unwrap() {
        let photo = case["photo"].as_str().unwrap();
        let (x, f, mut worst) = run_trunk(case, &mut pre, &mut nodes, checks);
        let p2 = f.tensor("p2").unwrap();
        let out = model.heads(batch_of_one(p2)).unwrap();
        worst = worst.max(compare_named(
            photo,
            &[("hm", &out.hm), ("wh", &out.wh), ("reg", &out.reg)],
            case,
        ));

        // ctdet_decode: the same peaks (flat index within the class and class), scores and
        // boxes at stride 4.
        let dets = model.decode(&out).unwrap();
        let want = case["decode"].as_array().unwrap();
        assert_eq!(dets.len(), want.len(), "{photo}: number of peaks");
        for (i, (d, r)) in dets.iter().zip(want).enumerate() {
            assert_eq!(
                d.class as u64,
                r["class"].as_u64().unwrap(),
                "{photo} peak {i}: class"
            );
            assert_eq!(
                d.index as u64,
                r["index"].as_u64().unwrap(),
                "{photo} peak {i}: index"
            );
            let mut err = relative_error(f64::from(d.score), r["score"].as_f64().unwrap());
            for (a, b) in d.bbox.iter().zip(floats(&r["box"])) {
                err = err.max(relative_error(f64::from(*a), b));
            }
            worst = worst.max(err);
            assert!(err <= TOL, "{photo} peak {i}: ours {d:?}, official {r}");
        }

        // The node: detections in photo pixels, as ctdet_post_process maps them.
        let inst = run_with(&mut head, &[("features", &f), ("image", &x)], "instances");
        let boxes = inst
            .tensor("boxes")
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        let scores = inst
            .tensor("scores")
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        let classes = inst
            .tensor("classes")
            .unwrap()
            .as_slice::<i64>()
            .unwrap()
            .to_vec();
        let results = case["results"].as_array().unwrap();
        assert_eq!(scores.len(), results.len(), "{photo}: number of detections");
        let mut used = vec![false; results.len()];
        for i in 0..scores.len() {
            let ours = &boxes[4 * i..4 * i + 4];
            let j = (0..results.len())
                .filter(|&j| !used[j] && results[j]["category_id"].as_i64() == Some(classes[i]))
                .min_by(|&a, &b| {
                    let d = |j: usize| {
                        (results[j]["score"].as_f64().unwrap() - f64::from(scores[i])).abs()
                    };
                    d(a).total_cmp(&d(b))
                })
                .unwrap_or_else(|| {
                    panic!(
                        "{photo} detection {i}: no official detection of class {}",
                        classes[i]
                    )
                });
            used[j] = true;
            let r = &results[j];
            let mut err = relative_error(f64::from(scores[i]), r["score"].as_f64().unwrap());
            for (a, b) in ours.iter().zip(floats(&r["box"])) {
                err = err.max(relative_error(f64::from(*a), b));
            }
            worst = worst.max(err);
            assert!(
                err <= TOL,
                "{photo} detection {i}: ours {ours:?} {}, official {r}",
                scores[i]
            );
        }
        eprintln!(
            "{photo}: CenterNet matches the official code (largest relative error {worst:.1e}); {} detections",
            scores.len()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn centernet_resdcn18_matches_the_official_code() {
    check_against_fixture("centernet_resdcn18.json", Trunk::ResDcn);
}

#[test]
fn centernet_dla34_matches_the_official_code() {
    check_against_fixture("centernet_dla34.json", Trunk::Dla);
}

/// Hourglass at a small size (two stacks, two levels): the same classes as Hourglass-104.
#[test]
fn centernet_hourglass_matches_the_official_code() {
    check_against_fixture("centernet_hourglass_small.json", Trunk::Hourglass);
}

/// CenterNet's `multi_pose` on DLA-34 (fixture by `make_centernet_fixtures.py --task
/// multi_pose --arch dla_34`): the six heads, the 100 people (index, score, box, and 17
/// keypoints, snapped or regressed, at stride 4) and the node's people and keypoints in photo
/// pixels.
#[test]
fn centernet_multi_pose_matches_the_official_code() {
    use plugin_centernet::multi_pose::{MultiPose, MultiPoseConfig};
    let doc = fixture("centernet_multi_pose_dla34.json");
    let dir = scratch("centernet-ref-multi-pose");
    let weights = dir.join("multi_pose.safetensors");
    save(&generated(&doc["weights"]), &weights);
    let mut pre = create("centernet_preprocess", &[]).unwrap();
    let mut nodes = vec![create("dla", &[weights_param(&weights)]).unwrap()];
    let mut head = create("centernet_multi_pose", &[weights_param(&weights)]).unwrap();
    let w = kernels::weights::Weights::load(&weights).unwrap();
    let model = MultiPose::from_weights(&w, "", MultiPoseConfig::default()).unwrap();
    for case in doc["cases"].as_array().unwrap() {
        let photo = case["photo"].as_str().unwrap();
        let (x, f, mut worst) = run_trunk(case, &mut pre, &mut nodes, &[("features", "p2")]);
        let out = model.heads(batch_of_one(f.tensor("p2").unwrap())).unwrap();
        worst = worst.max(compare_named(
            photo,
            &[
                ("hm", &out.hm),
                ("wh", &out.wh),
                ("hps", &out.hps),
                ("reg", &out.reg),
                ("hm_hp", &out.hm_hp),
                ("hp_offset", &out.hp_offset),
            ],
            case,
        ));
        let people = model.decode(&out).unwrap();
        let want = case["decode"].as_array().unwrap();
        assert_eq!(people.len(), want.len(), "{photo}: number of people");
        for (i, (p, r)) in people.iter().zip(want).enumerate() {
            assert_eq!(
                p.index as u64,
                r["index"].as_u64().unwrap(),
                "{photo} person {i}: index"
            );
            let mut err = relative_error(f64::from(p.score), r["score"].as_f64().unwrap());
            for (a, b) in p.bbox.iter().zip(floats(&r["box"])) {
                err = err.max(relative_error(f64::from(*a), b));
            }
            let kps: Vec<f32> = p.keypoints.iter().flatten().copied().collect();
            for (a, b) in kps.iter().zip(floats(&r["kps"])) {
                err = err.max(relative_error(f64::from(*a), b));
            }
            worst = worst.max(err);
            assert!(err <= TOL, "{photo} person {i}: ours {p:?}, official {r}");
        }
        let inst = run_with(&mut head, &[("features", &f), ("image", &x)], "instances");
        let boxes = inst
            .tensor("boxes")
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        let scores = inst
            .tensor("scores")
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        let kps = inst.tensor("keypoints").unwrap();
        assert_eq!(kps.shape(), &[scores.len(), 17, 3]);
        let kps = kps.as_slice::<f32>().unwrap();
        let results = case["results"].as_array().unwrap();
        assert_eq!(scores.len(), results.len(), "{photo}: number of results");
        // The official order is the decode's: compare one to one.
        for (i, r) in results.iter().enumerate() {
            let mut err = relative_error(f64::from(scores[i]), r["score"].as_f64().unwrap());
            for (a, b) in boxes[4 * i..4 * i + 4].iter().zip(floats(&r["box"])) {
                err = err.max(relative_error(f64::from(*a), b));
            }
            let theirs = floats(&r["kps"]);
            for j in 0..17 {
                for c in 0..2 {
                    err = err.max(relative_error(
                        f64::from(kps[(i * 17 + j) * 3 + c]),
                        theirs[2 * j + c],
                    ));
                }
            }
            worst = worst.max(err);
            assert!(err <= TOL, "{photo} result {i}: official {r}");
        }
        eprintln!(
            "{photo}: CenterNet multi_pose matches the official code (largest relative error {worst:.1e})"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A checkpoint of another backbone or width is refused with the mismatched tensors named; a
/// tiny photo (smaller than the stride) still gives its K detections, inside the photo's
/// frame of reference.
#[test]
fn mismatched_checkpoints_are_named_and_tiny_photos_work() {
    let doc = fixture("centernet_resdcn18.json");
    let dir = scratch("centernet-bad");
    let weights = dir.join("ctdet_resdcn18.safetensors");
    save(&generated(&doc["weights"]), &weights);
    // The up-sampling of a ResNet-50 body (2048 channels) on the ResNet-18 checkpoint.
    let err = create(
        "dcn_upsample",
        &[
            weights_param(&weights),
            ("in_channels", ParamValue::Int(2048)),
        ],
    )
    .err()
    .expect("wrong width");
    assert!(
        err.contains("deconv_layers.0.weight")
            && err.contains("[256, 2048, 3, 3]")
            && err.contains("[256, 512, 3, 3]"),
        "{err}"
    );
    // A ResNet-50 body on it: the Bottleneck tensors are missing.
    let err = create(
        "resnet",
        &[
            weights_param(&weights),
            ("prefix", ParamValue::Str(String::new())),
            ("depth", ParamValue::Int(50)),
        ],
    )
    .err()
    .expect("wrong depth");
    assert!(err.contains("layer1.0.conv3.weight"), "{err}");

    // A 3x5 photo.
    let mut pre = create("centernet_preprocess", &[]).unwrap();
    let mut body = create(
        "resnet",
        &[
            weights_param(&weights),
            ("prefix", ParamValue::Str(String::new())),
            ("depth", ParamValue::Int(18)),
            ("bn_eps", ParamValue::Float(1e-5)),
            ("returned_layers", ParamValue::IntList(vec![4])),
        ],
    )
    .unwrap();
    let mut up = create("dcn_upsample", &[weights_param(&weights)]).unwrap();
    let mut head = create("centernet_ctdet", &[weights_param(&weights)]).unwrap();
    let img =
        kernels::Tensor::from_vec(&[3, 5, 3], (0..45).map(|v| (v * 5) as u8).collect()).unwrap();
    let x = run_with(&mut pre, &[("image", &Value::image(img))], "image");
    let f = run_with(&mut body, &[("image", &x)], "features");
    let u = run_with(&mut up, &[("features", &f)], "features");
    let inst = run_with(&mut head, &[("features", &u), ("image", &x)], "instances");
    let scores = inst.tensor("scores").unwrap();
    assert_eq!(scores.shape(), &[100]);
    let boxes = inst
        .tensor("boxes")
        .unwrap()
        .as_slice::<f32>()
        .unwrap()
        .to_vec();
    assert!(boxes.iter().all(|v| v.is_finite()));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A row of the fixture's `[x1, y1, x2, y2, score, ...]` against ours: the largest relative
/// error of the first `values.len()` values.
/// Each named array against its summary in `case`: the largest relative error.
fn compare_named<D: ndarray::Dimension>(
    photo: &str,
    named: &[(&str, &ndarray::Array<f32, D>)],
    case: &serde_json::Value,
) -> f64 {
    named.iter().fold(0.0, |worst: f64, (name, a)| {
        worst.max(compare(
            &format!("{photo} {name}"),
            a.as_slice().unwrap(),
            a.shape(),
            &case[*name],
            TOL,
        ))
    })
}

fn row_error(values: &[f32], want: &serde_json::Value) -> f64 {
    values
        .iter()
        .zip(floats(want))
        .map(|(a, b)| relative_error(f64::from(*a), b))
        .fold(0.0, f64::max)
}

/// CornerNet (fixture by `tests/reference/make_cornernet_fixtures.py`: princeton-vl/CornerNet
/// @ e5c39a31's `kp_detection` with its `kp` at a small size, two stacks, on two photos):
/// `cornernet_preprocess` (the canvas and its mirror), `hourglass` (the last stack's
/// features), the corner modules and the six heads (summaries), `_decode`'s valid pairs of
/// the image and of its mirror (same classes and order, values within 1e-4), the results after
/// the mirror merge, soft-NMS and `max_per_image` (class by class, rows in the official array
/// order, stale rows included), and the node's instances.
#[test]
fn cornernet_matches_the_official_code() {
    use plugin_centernet::cornernet::{CornerNet, CornerNetConfig, CropGeometry};
    let doc = fixture("cornernet_small.json");
    let dir = scratch("cornernet-ref");
    let weights = dir.join("cornernet.safetensors");
    save(&generated(&doc["weights"]), &weights);
    let c = &doc["config"];
    let int = |k: &str| c[k].as_i64().unwrap_or_else(|| panic!("config {k}"));
    let ints = |k: &str| floats(&c[k]).iter().map(|&v| v as i64).collect::<Vec<_>>();
    let prefix = || ("prefix", ParamValue::Str("module.".into()));
    let mut pre = create("cornernet_preprocess", &[]).unwrap();
    let mut backbone = create(
        "hourglass",
        &[
            weights_param(&weights),
            prefix(),
            ("levels", ParamValue::Int(int("n"))),
            ("stacks", ParamValue::Int(int("nstack"))),
            ("dims", ParamValue::IntList(ints("dims"))),
            ("modules", ParamValue::IntList(ints("modules"))),
            ("cnv_dim", ParamValue::Int(int("cnv_dim"))),
        ],
    )
    .unwrap();
    let head_params = [
        weights_param(&weights),
        prefix(),
        ("cnv_dim", ParamValue::Int(int("cnv_dim"))),
        ("head_conv", ParamValue::Int(int("head_dim"))),
        ("stacks", ParamValue::Int(int("nstack"))),
    ];
    let mut head = create("cornernet", &head_params).unwrap();
    let config = CornerNetConfig {
        cnv_dim: int("cnv_dim") as usize,
        head_conv: int("head_dim") as usize,
        stack: int("nstack") as usize - 1,
        ..CornerNetConfig::default()
    };
    assert_eq!(config.k as i64, int("K"));
    assert_eq!(config.num_dets as i64, int("num_dets"));
    assert_eq!(config.max_per_image as i64, int("max_per_image"));
    let w = kernels::weights::Weights::load(&weights).unwrap();
    let model = CornerNet::from_weights(&w, "module.", config).unwrap();
    let ids = floats(&doc["coco_category_ids"]);
    for case in doc["cases"].as_array().unwrap() {
        let photo = case["photo"].as_str().unwrap();
        let image =
            plugin_io::image_source::read_image(&root().join("assets").join(photo)).unwrap();
        let original = (image.shape()[0], image.shape()[1]);
        let geometry = CropGeometry::new(original);
        let want_border: Vec<usize> = floats(&case["border"])
            .iter()
            .map(|&v| v as usize)
            .collect();
        assert_eq!(
            geometry.border.to_vec(),
            want_border,
            "{photo}: crop border"
        );
        let x = run_with(&mut pre, &[("image", &Value::image(image))], "image");
        let t = x.tensor("tensor").unwrap();
        let mut worst = compare(
            &format!("{photo} input"),
            t.as_slice::<f32>().unwrap(),
            t.shape(),
            &case["input"],
            TOL,
        );
        let f = run_with(&mut backbone, &[("image", &x)], "features");
        let p2 = f.tensor("p2").unwrap();
        worst = worst.max(compare(
            &format!("{photo} features"),
            p2.as_slice::<f32>().unwrap(),
            p2.shape(),
            &case["features"],
            TOL,
        ));
        let p2: ArrayView4<f32> = p2.view::<f32>().unwrap().into_dimensionality().unwrap();
        let (tl, br) = model.corner_modules(p2).unwrap();
        let out = model.heads(p2).unwrap();
        worst = worst.max(compare_named(
            photo,
            &[
                ("tl_pool", &tl),
                ("br_pool", &br),
                ("tl_heat", &out.tl_heat),
                ("br_heat", &out.br_heat),
                ("tl_tag", &out.tl_tag),
                ("br_tag", &out.br_tag),
                ("tl_regr", &out.tl_regr),
                ("br_regr", &out.br_regr),
            ],
            case,
        ));

        // _decode of the image and of its mirror: the valid pairs, in order.
        let mut per_image = Vec::new();
        for (n, want) in case["decode"].as_array().unwrap().iter().enumerate() {
            let dets = model.decode(&out, n).unwrap();
            let rows = want["rows"].as_array().unwrap();
            assert_eq!(dets.len(), rows.len(), "{photo} image {n}: valid pairs");
            for (i, (d, r)) in dets.iter().zip(rows).enumerate() {
                let v = [
                    d.bbox[0], d.bbox[1], d.bbox[2], d.bbox[3], d.score, d.tl_score, d.br_score,
                ];
                assert_eq!(
                    d.class as f64,
                    floats(r)[7],
                    "{photo} image {n} pair {i}: class"
                );
                let err = row_error(&v, r);
                worst = worst.max(err);
                assert!(
                    err <= TOL,
                    "{photo} image {n} pair {i}: ours {d:?}, official {r}"
                );
            }
            per_image.push(dets);
        }

        // The results: class by class, soft-NMS's rows in order (stale rows included).
        let results = model.postprocess(&per_image, &geometry, original);
        let want: Vec<(usize, &serde_json::Value)> = case["results"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                let class = r["class"].as_u64().unwrap() as usize - 1;
                r["rows"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(move |row| (class, row))
            })
            .collect();
        assert_eq!(results.len(), want.len(), "{photo}: number of results");
        for (i, (d, (class, r))) in results.iter().zip(&want).enumerate() {
            assert_eq!(d.class, *class, "{photo} result {i}: class");
            let v = [d.bbox[0], d.bbox[1], d.bbox[2], d.bbox[3], d.score];
            let err = row_error(&v, r);
            worst = worst.max(err);
            assert!(err <= TOL, "{photo} result {i}: ours {d:?}, official {r}");
        }

        // The node gives those results with COCO category ids.
        let inst = run_with(&mut head, &[("features", &f), ("image", &x)], "instances");
        let boxes = inst
            .tensor("boxes")
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        let scores = inst
            .tensor("scores")
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        let classes = inst
            .tensor("classes")
            .unwrap()
            .as_slice::<i64>()
            .unwrap()
            .to_vec();
        assert_eq!(scores.len(), results.len(), "{photo}: the node's results");
        for (i, d) in results.iter().enumerate() {
            assert_eq!(
                classes[i], ids[d.class] as i64,
                "{photo} result {i}: category id"
            );
            assert_eq!(scores[i], d.score);
            assert_eq!(&boxes[4 * i..4 * i + 4], &d.bbox);
        }
        eprintln!(
            "{photo}: CornerNet matches the official code (largest relative error {worst:.1e}); {} pairs, {} results in {} classes",
            per_image.iter().map(Vec::len).sum::<usize>(),
            results.len(),
            case["results"].as_array().unwrap().len()
        );
    }
}

/// CornerNet's bad input: CenterNet's Hourglass checkpoint (no corner modules, other head
/// names) is refused with the missing tensors named; a 3x5 photo (a 127x127 canvas) runs
/// through the whole chain with finite boxes inside the photo.
#[test]
fn cornernet_names_a_wrong_checkpoint_and_takes_tiny_photos() {
    let hg = fixture("centernet_hourglass_small.json");
    let dir = scratch("cornernet-bad");
    let centernet = dir.join("ctdet_hg.safetensors");
    save(&generated(&hg["weights"]), &centernet);
    let err = create(
        "cornernet",
        &[
            weights_param(&centernet),
            ("prefix", ParamValue::Str(String::new())),
            ("cnv_dim", ParamValue::Int(64)),
        ],
    )
    .err()
    .expect("a CenterNet checkpoint");
    assert!(
        err.contains("missing (74)")
            && err.contains("tl_cnvs.1.p1_conv1.conv.weight [128, 64, 3, 3]"),
        "{err}"
    );

    let doc = fixture("cornernet_small.json");
    let weights = dir.join("cornernet.safetensors");
    save(&generated(&doc["weights"]), &weights);
    let c = &doc["config"];
    let int = |k: &str| ParamValue::Int(c[k].as_i64().unwrap());
    let ints = |k: &str| ParamValue::IntList(floats(&c[k]).iter().map(|&v| v as i64).collect());
    let prefix = || ("prefix", ParamValue::Str("module.".into()));
    let mut pre = create("cornernet_preprocess", &[]).unwrap();
    let mut backbone = create(
        "hourglass",
        &[
            weights_param(&weights),
            prefix(),
            ("levels", int("n")),
            ("stacks", int("nstack")),
            ("dims", ints("dims")),
            ("modules", ints("modules")),
            ("cnv_dim", int("cnv_dim")),
        ],
    )
    .unwrap();
    let mut head = create(
        "cornernet",
        &[
            weights_param(&weights),
            prefix(),
            ("cnv_dim", int("cnv_dim")),
            ("head_conv", int("head_dim")),
        ],
    )
    .unwrap();
    let img =
        kernels::Tensor::from_vec(&[3, 5, 3], (0..45).map(|v| (v * 5) as u8).collect()).unwrap();
    let x = run_with(&mut pre, &[("image", &Value::image(img))], "image");
    assert_eq!(x.tensor("tensor").unwrap().shape(), &[2, 3, 127, 127]);
    let f = run_with(&mut backbone, &[("image", &x)], "features");
    let inst = run_with(&mut head, &[("features", &f), ("image", &x)], "instances");
    let boxes = inst
        .tensor("boxes")
        .unwrap()
        .as_slice::<f32>()
        .unwrap()
        .to_vec();
    for b in boxes.chunks(4) {
        assert!(
            b[0] >= 0.0 && b[2] <= 5.0 && b[1] >= 0.0 && b[3] <= 3.0,
            "{b:?}"
        );
    }
    // The features of another photo's size are refused, naming both.
    let other = kernels::Tensor::from_vec(&[300, 200, 3], vec![0u8; 300 * 200 * 3]).unwrap();
    let y = run_with(&mut pre, &[("image", &Value::image(other))], "image");
    let mut ins = plugin_sdk::Inputs::new();
    ins.push("features", Some(f));
    ins.push("image", Some(y));
    let err = head
        .process(&plugin_sdk::FrameInfo::default(), &ins)
        .expect_err("features of another photo");
    assert!(err.message().contains("300x200"), "{}", err.message());
}
