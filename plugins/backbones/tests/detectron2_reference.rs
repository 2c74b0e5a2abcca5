//! The `resnet` and `fpn` nodes under Detectron2's names against Detectron2 itself:
//! `tests/reference/make_d2_trunk_fixtures.py` ran `build_resnet_fpn_backbone` (ResNet-50,
//! FrozenBN, FPN with LastLevelMaxPool) with generated weights, for the MSRA layout
//! (`STRIDE_IN_1X1 = True`) and torchvision's (`False`), on generated inputs of several
//! sizes, and stored summaries of res2..res5 and p2..p6. This test writes the same weights
//! under Detectron2's checkpoint names (`backbone.bottom_up.res2.0.conv1.norm.weight`,
//! `backbone.fpn_lateral2.weight`, ...), runs the nodes from their plugin library and compares
//! within `|a - b| <= 1e-4 · max(1, |b|)`.

#[path = "../../../tests/support/reference.rs"]
mod reference;

use kernels::Tensor;
use plugin_sdk::{ParamValue, PortKind, Value};
use reference::{compare, create, fixture, floats, generated, run_with, save, scratch};

const TOL: f64 = 1e-4;

#[test]
fn detectron2_resnet_fpn_matches_detectron2() {
    let doc = fixture("d2_r50_fpn.json");
    let eps = doc["frozen_bn_eps"].as_f64().unwrap();
    let dir = scratch("d2-trunk");
    let weights = dir.join("d2_r50_fpn.safetensors");
    save(&generated(&doc["weights"]), &weights);
    let path = || ("weights", ParamValue::Str(weights.display().to_string()));
    let mut fpn = create(
        "fpn",
        &[path(), ("prefix", ParamValue::Str("backbone.".into()))],
    )
    .unwrap();
    for case in doc["cases"].as_array().unwrap() {
        let variant = case["variant"].as_str().unwrap();
        let stride_in_1x1 = doc["variants"][variant]["stride_in_1x1"].as_bool().unwrap();
        let mut body = create(
            "resnet",
            &[
                path(),
                ("prefix", ParamValue::Str("backbone.bottom_up.".into())),
                ("stage_names", ParamValue::Str("detectron2".into())),
                ("stride_in_1x1", ParamValue::Bool(stride_in_1x1)),
                ("bn_eps", ParamValue::Float(eps)),
            ],
        )
        .unwrap();
        let input = &case["input"];
        let shape: Vec<usize> = floats(&input["shape"])
            .iter()
            .map(|&v| v as usize)
            .collect();
        let x = kernels::weights::generated_tensor(
            input["name"].as_str().unwrap(),
            &shape[1..],
            input["a"].as_f64().unwrap() as f32,
            input["b"].as_f64().unwrap() as f32,
        )
        .unwrap();
        let image = Value::new(PortKind::ModelImage).with("tensor", x);
        let f = run_with(&mut body, &[("image", &image)], "features");
        let outputs = &case["outputs"];
        let mut worst = 0f64;
        let mut check = |v: &Value, ours: &str, theirs: &str| {
            let t: &Tensor = v.tensor(ours).unwrap();
            worst = worst.max(compare(
                &format!("{variant} {shape:?} {theirs}"),
                t.as_slice::<f32>().unwrap(),
                t.shape(),
                &outputs[theirs],
                TOL,
            ));
        };
        for (c, res) in ["c2", "c3", "c4", "c5"]
            .iter()
            .zip(["res2", "res3", "res4", "res5"])
        {
            check(&f, c, res);
        }
        if case["fpn_error"].is_null() {
            let p = run_with(&mut fpn, &[("features", &f)], "features");
            for level in ["p2", "p3", "p4", "p5", "p6"] {
                check(&p, level, level);
            }
        }
        eprintln!(
            "{variant} {shape:?}: Detectron2's trunk matched (largest relative error {worst:.1e})"
        );
    }
    // torchvision's names are not Detectron2's: the binder names what is missing.
    let err = create(
        "resnet",
        &[
            path(),
            ("prefix", ParamValue::Str("backbone.bottom_up.".into())),
        ],
    )
    .err()
    .unwrap();
    assert!(err.contains("backbone.bottom_up.conv1.weight"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
