//! The DETR nodes against the official code: `tests/reference/make_detr_fixtures.py` ran
//! facebookresearch/detr @ 29901c51 (DETR R50 as `main.py` builds it, the 'val' transform,
//! `PostProcess`) on the CPU with generated weights, on three photos (one 150x512 strip that
//! hits `max_size`), and checked that Hugging Face transformers' `DetrForObjectDetection`
//! with the same weights gives the same outputs. This test regenerates the weights bit for
//! bit, writes them under the official names and under transformers' names, runs
//! `detr_preprocess` → `resnet` → `detr` from their plugin libraries, and compares: the
//! network input, C5, the encoder's memory and the decoder's output (summaries), every box of
//! the 100 queries and `PostProcess`'s scores, labels and boxes within
//! `|a - b| <= 1e-4 · max(1, |b|)`, and every logit within 1e-4 of its query's largest
//! |logit|.

#[path = "../../../tests/support/reference.rs"]
mod reference;

use std::path::Path;

use kernels::Tensor;
use ndarray::{ArrayView4, Axis};
use plugin_detr::model::{Detr, DetrConfig};
use plugin_detr::transformer::sine_position_embedding;
use plugin_sdk::{ParamValue, Value};
use reference::{
    batch_of_one, compare, create, fixture, floats, generated, relative_error, root, run_with,
    save, scratch,
};
use serde_json::Value as Json;

const TOL: f64 = 1e-4;

/// `assets/<photo>`, or this crate's own fixture photo (the 150x512 strip).
fn photo_path(photo: &str) -> std::path::PathBuf {
    let asset = root().join("assets").join(photo);
    if asset.exists() {
        asset
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(photo)
    }
}

fn weights_param(path: &Path) -> (&'static str, ParamValue) {
    ("weights", ParamValue::Str(path.display().to_string()))
}

fn body(path: &Path) -> Box<dyn plugin_sdk::Node> {
    create(
        "resnet",
        &[
            weights_param(path),
            ("prefix", ParamValue::Str("backbone.0.body.".into())),
            ("depth", ParamValue::Int(50)),
            ("bn_eps", ParamValue::Float(1e-5)),
            ("returned_layers", ParamValue::IntList(vec![4])),
            ("winograd_f4", ParamValue::Bool(true)),
        ],
    )
    .unwrap()
}

/// The official tensors renamed (and `in_proj` split into rows) as transformers names them.
fn transformers_tensors(doc: &Json, official: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    doc["hf_weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let source = w["source"].as_str().unwrap();
            let t = &official.iter().find(|(n, _)| n == source).unwrap().1;
            let t = match w["rows"].as_array() {
                None => t.clone(),
                Some(r) => {
                    let (a, b) = (
                        r[0].as_u64().unwrap() as usize,
                        r[1].as_u64().unwrap() as usize,
                    );
                    let v = t.view::<f32>().unwrap();
                    let part = v.slice_axis(Axis(0), (a..b).into());
                    Tensor::from_vec(part.shape(), part.iter().copied().collect()).unwrap()
                }
            };
            (w["name"].as_str().unwrap().to_string(), t)
        })
        .collect()
}

fn f32s(v: &Value, name: &str) -> Vec<f32> {
    v.tensor(name).unwrap().as_slice::<f32>().unwrap().to_vec()
}

#[test]
fn detr_nodes_match_the_official_code_and_load_both_namings() {
    let doc = fixture("detr_r50.json");
    let dir = scratch("detr-ref");
    let official = generated(&doc["weights"]);
    let weights = dir.join("detr_r50.safetensors");
    save(&official, &weights);
    let hf = dir.join("detr_transformers.safetensors");
    save(&transformers_tensors(&doc, &official), &hf);

    let mut pre = create("detr_preprocess", &[]).unwrap();
    let mut backbone = body(&weights);
    let mut head = create("detr", &[weights_param(&weights)]).unwrap();
    let mut hf_backbone = body(&hf);
    let mut hf_head = create("detr", &[weights_param(&hf)]).unwrap();
    let w = kernels::weights::Weights::load(&weights).unwrap();
    let model = Detr::from_weights(&w, "", DetrConfig::default()).unwrap();

    for (k, case) in doc["cases"].as_array().unwrap().iter().enumerate() {
        let photo = case["photo"].as_str().unwrap();
        let image = plugin_io::image_source::read_image(&photo_path(photo)).unwrap();
        let photo_side = image.shape()[0].max(image.shape()[1]) as f64;
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
        let c5 = f.tensor("c5").unwrap();
        worst = worst.max(compare(
            &format!("{photo} c5"),
            c5.as_slice::<f32>().unwrap(),
            c5.shape(),
            &case["c5"],
            TOL,
        ));

        // The transformer's stages, through the library.
        let c5v = batch_of_one(c5);
        let (src, (h, wd)) = model.project(c5v).unwrap();
        let pos = sine_position_embedding(h, wd, 128);
        let memory = model.encode(src, &pos).unwrap();
        // Tokens [h·w, 256] against the reference's [256, h, w].
        let channels_first = memory.t().as_standard_layout().to_owned();
        worst = worst.max(compare(
            &format!("{photo} memory"),
            channels_first.as_slice().unwrap(),
            &[256, h, wd],
            &case["memory"],
            TOL,
        ));
        let hs = model.decode(&memory, &pos).unwrap();
        worst = worst.max(compare(
            &format!("{photo} decoder output"),
            hs.as_slice().unwrap(),
            &[100, 256],
            &case["hs"],
            TOL,
        ));
        let out = model.heads(&hs).unwrap();
        // Each query's logits relative to that query's largest |logit| (they enter one
        // softmax together); boxes relative to max(1, |b|). transformers itself differs from
        // the official code by up to 4.6e-4 of a unit on these logits (f32 rounding through
        // 12 layers), so an absolute 1e-4 on a logit near 0 would test rounding, not DETR.
        let logits = floats(&case["pred_logits"]);
        let classes = out.logits.ncols();
        assert_eq!(out.logits.len(), logits.len(), "{photo}: number of logits");
        for (q, (ours, theirs)) in out
            .logits
            .outer_iter()
            .zip(logits.chunks(classes))
            .enumerate()
        {
            let scale = theirs.iter().fold(1f64, |m, v| m.max(v.abs()));
            for (c, (a, b)) in ours.iter().zip(theirs).enumerate() {
                let e = (*a as f64 - b).abs() / scale;
                worst = worst.max(e);
                assert!(
                    e <= TOL,
                    "{photo} query {q} logit {c}: ours {a}, official {b} (query scale {scale})"
                );
            }
        }
        let boxes = floats(&case["pred_boxes"]);
        assert_eq!(out.boxes.len(), boxes.len(), "{photo}: number of boxes");
        for (i, (a, b)) in out.boxes.iter().zip(&boxes).enumerate() {
            let e = relative_error(*a as f64, *b);
            worst = worst.max(e);
            assert!(e <= TOL, "{photo} box value {i}: ours {a}, official {b}");
        }

        // PostProcess through the node: every query, in the photo's pixels.
        let inst = run_with(&mut head, &[("features", &f), ("image", &x)], "instances");
        let r = &case["results"];
        let labels = inst
            .tensor("classes")
            .unwrap()
            .as_slice::<i64>()
            .unwrap()
            .to_vec();
        let want_labels: Vec<i64> = floats(&r["labels"]).iter().map(|&v| v as i64).collect();
        assert_eq!(labels, want_labels, "{photo}: labels");
        // A box corner in the photo's pixels is a normalised one (held to TOL above) times the
        // photo's size, so its error is measured against that size; a score against 1.
        for (what, ours, theirs, scale) in [
            ("score", f32s(&inst, "scores"), floats(&r["scores"]), 1.0),
            ("box", f32s(&inst, "boxes"), floats(&r["boxes"]), photo_side),
        ] {
            assert_eq!(ours.len(), theirs.len(), "{photo}: number of {what}s");
            for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                let e = (*a as f64 - b).abs() / b.abs().max(scale);
                worst = worst.max(e);
                assert!(
                    e <= TOL,
                    "{photo} result {what} {i}: ours {a}, official {b}"
                );
            }
        }
        eprintln!(
            "{photo}: input {}x{}, 100 queries match the official code (largest relative error {worst:.1e})",
            x.tensor("tensor").unwrap().shape()[1],
            x.tensor("tensor").unwrap().shape()[2]
        );

        // The transformers file: the same tensors under other names give the same results.
        if k == 0 {
            let f2 = run_with(&mut hf_backbone, &[("image", &x)], "features");
            assert_eq!(f32s(&f2, "c5"), f32s(&f, "c5"), "transformers backbone");
            let inst2 = run_with(
                &mut hf_head,
                &[("features", &f2), ("image", &x)],
                "instances",
            );
            for name in ["boxes", "scores"] {
                assert_eq!(
                    f32s(&inst2, name),
                    f32s(&inst, name),
                    "transformers names: {name}"
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A checkpoint of another width or number of queries names the tensors that do not fit; a
/// tiny photo (one C5 cell) still gives one valid detection per query.
#[test]
fn mismatched_checkpoints_are_named_and_tiny_photos_work() {
    let doc = fixture("detr_r50.json");
    let dir = scratch("detr-bad");
    let weights = dir.join("detr_r50.safetensors");
    save(&generated(&doc["weights"]), &weights);
    let err = create(
        "detr",
        &[
            weights_param(&weights),
            ("num_queries", ParamValue::Int(300)),
        ],
    )
    .err()
    .unwrap();
    assert!(
        err.contains("detr_r50.safetensors") && err.contains("query_embed.weight"),
        "{err}"
    );
    let err = create(
        "detr",
        &[
            weights_param(&weights),
            ("hidden_dim", ParamValue::Int(128)),
            ("heads", ParamValue::Int(8)),
        ],
    )
    .err()
    .unwrap();
    assert!(
        err.contains("input_proj.weight")
            && err.contains("transformer.encoder.layers.0.norm1.weight"),
        "{err}"
    );
    let mut pre = create(
        "detr_preprocess",
        &[
            ("size", ParamValue::Int(24)),
            ("max_size", ParamValue::Int(0)),
        ],
    )
    .unwrap();
    let mut backbone = body(&weights);
    let mut head = create(
        "detr",
        &[
            weights_param(&weights),
            ("score_threshold", ParamValue::Float(0.5)),
        ],
    )
    .unwrap();
    let pixels: Vec<u8> = (0..9 * 7 * 3).map(|i| (i * 37 % 256) as u8).collect();
    let x = run_with(
        &mut pre,
        &[(
            "image",
            &Value::image(Tensor::from_vec(&[9, 7, 3], pixels).unwrap()),
        )],
        "image",
    );
    assert_eq!(x.tensor("tensor").unwrap().shape(), &[3, 30, 24]);
    let f = run_with(&mut backbone, &[("image", &x)], "features");
    assert_eq!(&f.tensor("c5").unwrap().shape()[1..], &[1, 1]);
    let inst = run_with(&mut head, &[("features", &f), ("image", &x)], "instances");
    let scores = f32s(&inst, "scores");
    assert!(scores.iter().all(|&s| s > 0.5), "{scores:?}");
    let boxes = f32s(&inst, "boxes");
    assert_eq!(boxes.len(), 4 * scores.len());
    assert!(boxes.iter().all(|v| v.is_finite()));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A run-length list `[value, count, value, count, ...]` over a row-major map, expanded.
fn runs(j: &Json) -> Vec<i64> {
    let v = floats(j);
    let mut out = Vec::new();
    for pair in v.chunks(2) {
        out.extend(std::iter::repeat_n(pair[0] as i64, pair[1] as usize));
    }
    out
}

/// MaskFormer against the official code: `tests/reference/make_maskformer_fixtures.py` ran
/// facebookresearch/MaskFormer @ da3e60d8 (COCO panoptic R50, Detectron2's ResNet) on the CPU
/// with generated weights on two photos. The nodes (`maskformer_preprocess` → `resnet` with
/// Detectron2's names → `maskformer`) must give the same input, res5, pixel-decoder encoder
/// features, mask features, decoder output and mask logits (within 1e-4 relative to
/// max(1, |b|); logits relative to their query's scale; the decoder's stages at ten times the
/// reference's own float32-vs-float64 spread where that is larger), the same panoptic segments
/// (ids, classes, thing or stuff) on at least 99.9% of the pixels, and the same semantic labels
/// on at least 99.9% of them (mask logits within 1e-5 of zero decide a few pixels; today one
/// pixel of 104,808 differs).
#[test]
fn maskformer_nodes_match_the_official_code() {
    use plugin_detr::maskformer::{MaskFormer, MaskFormerConfig, COCO_PANOPTIC_CATEGORY_IDS};
    let doc = fixture("maskformer_r50.json");
    let dir = scratch("maskformer-ref");
    let mut tensors = generated(&doc["weights"]);
    // The checkpoint also holds SetCriterion's class weights, which inference ignores.
    let mut empty_weight = vec![1f32; 134];
    empty_weight[133] = 0.1;
    tensors.push((
        "criterion.empty_weight".into(),
        Tensor::from_vec(&[134], empty_weight).unwrap(),
    ));
    let weights = dir.join("maskformer_r50.safetensors");
    save(&tensors, &weights);
    let mut pre = create("maskformer_preprocess", &[]).unwrap();
    let mut body = create(
        "resnet",
        &[
            weights_param(&weights),
            ("prefix", ParamValue::Str("backbone.".into())),
            ("stage_names", ParamValue::Str("detectron2".into())),
            ("stride_in_1x1", ParamValue::Bool(false)),
            ("bn_eps", ParamValue::Float(1e-5)),
            // As pipelines/maskformer_r50.toml.
            ("winograd_f4", ParamValue::Bool(true)),
        ],
    )
    .unwrap();
    let mut head = create("maskformer", &[weights_param(&weights)]).unwrap();
    let w = kernels::weights::Weights::load(&weights).unwrap();
    let model = MaskFormer::from_weights(&w, "", MaskFormerConfig::default()).unwrap();
    let mean = [123.675f32, 116.28, 103.53];
    let std = [58.395f32, 57.12, 57.375];
    for case in doc["cases"].as_array().unwrap() {
        let photo = case["photo"].as_str().unwrap();
        let image =
            plugin_io::image_source::read_image(&root().join("assets").join(photo)).unwrap();
        let x = run_with(&mut pre, &[("image", &Value::image(image))], "image");
        let t = x.tensor("tensor").unwrap();
        let plane = t.shape()[1] * t.shape()[2];
        // The reference stores the image before the model's normalisation.
        let pixels: Vec<f32> = t
            .as_slice::<f32>()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, v)| v * std[i / plane] + mean[i / plane])
            .collect();
        let mut worst = compare(
            &format!("{photo} input"),
            &pixels,
            t.shape(),
            &case["input"],
            TOL,
        );
        let f = run_with(&mut body, &[("image", &x)], "features");
        let c5 = f.tensor("c5").unwrap();
        worst = worst.max(compare(
            &format!("{photo} res5"),
            c5.as_slice::<f32>().unwrap(),
            c5.shape(),
            &case["res5"],
            TOL,
        ));
        let levels: Vec<ArrayView4<f32>> = ["c2", "c3", "c4", "c5"]
            .iter()
            .map(|n| batch_of_one(f.tensor(n).unwrap()))
            .collect();
        let out = model.forward(&levels).unwrap();
        // The decoder's stages are compared at the reference's own float32 spread when the
        // fixture records it (its float64 run), else at TOL.
        let spread = |name: &str| {
            case["f64_relative_error"][name]
                .as_f64()
                .map_or(TOL, |e| TOL.max(10.0 * e))
        };
        for (name, a) in [
            ("transformer_encoder_features", &out.encoder_features),
            ("mask_features", &out.mask_features),
        ] {
            worst = worst.max(compare(
                &format!("{photo} {name}"),
                a.as_slice().unwrap(),
                &a.shape()[1..],
                &case[name],
                TOL,
            ));
        }
        worst = worst.max(compare(
            &format!("{photo} decoder output"),
            out.hs.as_slice().unwrap(),
            out.hs.shape(),
            &case["decoder_output"],
            spread("decoder_output"),
        ));
        worst = worst.max(compare(
            &format!("{photo} pred_masks"),
            out.masks.as_slice().unwrap(),
            out.masks.shape(),
            &case["pred_masks"],
            spread("pred_masks"),
        ));
        let logits = floats(&case["pred_logits"]);
        let classes = out.logits.ncols();
        let logit_tol = spread("pred_logits");
        assert_eq!(out.logits.len(), logits.len(), "{photo}: number of logits");
        for (q, (ours, theirs)) in out
            .logits
            .outer_iter()
            .zip(logits.chunks(classes))
            .enumerate()
        {
            let scale = theirs.iter().fold(1f64, |m, v| m.max(v.abs()));
            for (c, (a, b)) in ours.iter().zip(theirs).enumerate() {
                let e = (*a as f64 - b).abs() / scale;
                worst = worst.max(e);
                assert!(
                    e <= logit_tol,
                    "{photo} query {q} logit {c}: ours {a}, official {b}"
                );
            }
        }

        // Semantic and panoptic inference through the node, at the photo's size.
        let mut ins = plugin_sdk::Inputs::new();
        ins.push("features", Some(f.clone()));
        ins.push("image", Some(x.clone()));
        let outputs = head
            .process(&plugin_sdk::FrameInfo::default(), &ins)
            .unwrap_or_else(|e| panic!("{}", e.message()));
        let semantic = outputs.get("semantic").unwrap();
        let panoptic = outputs.get("panoptic").unwrap();
        semantic.validate().unwrap();
        panoptic.validate().unwrap();
        let labels = semantic
            .tensor("labels")
            .unwrap()
            .as_slice::<i32>()
            .unwrap();
        let want = runs(&case["sem_seg_argmax"]);
        assert_eq!(labels.len(), want.len(), "{photo}: semantic size");
        let same = labels
            .iter()
            .zip(&want)
            .filter(|(a, b)| i64::from(**a) == **b)
            .count();
        let sem_share = same as f64 / want.len() as f64;
        assert!(
            sem_share >= 0.999,
            "{photo}: semantic labels agree on {sem_share:.5}"
        );

        let segments = panoptic
            .tensor("segments")
            .unwrap()
            .as_slice::<i32>()
            .unwrap();
        let want = runs(&case["panoptic_seg"]["rle"]);
        assert_eq!(segments.len(), want.len(), "{photo}: panoptic size");
        let same = segments
            .iter()
            .zip(&want)
            .filter(|(a, b)| i64::from(**a) == **b)
            .count();
        let pan_share = same as f64 / want.len() as f64;
        assert!(
            pan_share >= 0.999,
            "{photo}: panoptic ids agree on {pan_share:.5}"
        );
        let ids = panoptic
            .tensor("segment_ids")
            .unwrap()
            .as_slice::<i32>()
            .unwrap();
        let cats = panoptic
            .tensor("segment_classes")
            .unwrap()
            .as_slice::<i64>()
            .unwrap();
        let things = panoptic
            .tensor("segment_isthing")
            .unwrap()
            .as_slice::<u8>()
            .unwrap();
        let info = case["segments_info"].as_array().unwrap();
        assert_eq!(ids.len(), info.len(), "{photo}: number of segments");
        for (k, s) in info.iter().enumerate() {
            let contiguous = s["category_id"].as_u64().unwrap() as usize;
            assert_eq!(
                i64::from(ids[k]),
                s["id"].as_i64().unwrap(),
                "{photo} segment {k}: id"
            );
            assert_eq!(
                cats[k], COCO_PANOPTIC_CATEGORY_IDS[contiguous],
                "{photo} segment {k}: class"
            );
            assert_eq!(
                things[k] == 1,
                s["isthing"].as_bool().unwrap(),
                "{photo} segment {k}: isthing"
            );
        }
        eprintln!(
            "{photo}: MaskFormer matches the official code (largest relative error {worst:.1e}); {} segments, panoptic ids agree on {:.4}% and semantic labels on {:.4}% of the pixels",
            ids.len(),
            100.0 * pan_share,
            100.0 * sem_share
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Hugging Face transformers' MaskFormer R50 (`MaskFormerForInstanceSegmentation` with a
/// ResNet-50 backbone, i.e. the base pixel decoder), as
/// `tests/reference/make_maskformer_transformers_fixtures.py` ran it with generated weights
/// on a generated input: the checkpoint under the names `save_pretrained` writes, through
/// `resnet` (`stage_names = "transformers"`) and `MaskFormer`, gives the same res5, mask
/// features, decoder output and mask logits (summaries) and every class logit, within 1e-4
/// relative to max(1, |b|) (10x the reference's own float32-vs-float64 spread where larger).
#[test]
fn maskformer_loads_transformers_checkpoints() {
    use plugin_detr::maskformer::{MaskFormer, MaskFormerConfig, PixelDecoder};
    let doc = fixture("maskformer_r50_transformers.json");
    let dir = scratch("maskformer-transformers");
    let weights = dir.join("model.safetensors");
    save(&generated(&doc["weights"]), &weights);
    let spread = |name: &str| {
        doc["f64_relative_error"][name]
            .as_f64()
            .map_or(TOL, |e| TOL.max(10.0 * e))
    };
    let mut body = create(
        "resnet",
        &[
            weights_param(&weights),
            (
                "prefix",
                ParamValue::Str("model.pixel_level_module.encoder.".into()),
            ),
            ("stage_names", ParamValue::Str("transformers".into())),
            ("bn_eps", ParamValue::Float(1e-5)),
        ],
    )
    .unwrap();
    let (_, input) = generated(&Json::Array(vec![doc["input"].clone()]))
        .pop()
        .unwrap();
    let s = input.shape().to_vec();
    let image = Value::new(plugin_sdk::PortKind::ModelImage).with(
        "tensor",
        Tensor::from_vec(&s[1..], input.as_slice::<f32>().unwrap().to_vec()).unwrap(),
    );
    let f = run_with(&mut body, &[("image", &image)], "features");
    let c5 = f.tensor("c5").unwrap();
    let mut worst = compare(
        "res5",
        c5.as_slice::<f32>().unwrap(),
        c5.shape(),
        &doc["res5"],
        spread("res5"),
    );
    let levels: Vec<ArrayView4<f32>> = ["c2", "c3", "c4", "c5"]
        .iter()
        .map(|n| batch_of_one(f.tensor(n).unwrap()))
        .collect();
    let w = kernels::weights::Weights::load(&weights).unwrap();
    let config = MaskFormerConfig {
        num_classes: doc["num_labels"].as_u64().unwrap() as usize,
        ..MaskFormerConfig::default()
    };
    let model = MaskFormer::from_weights(&w, "", config).unwrap();
    assert_eq!(model.pixel_decoder(), PixelDecoder::Base);
    let out = model.forward(&levels).unwrap();
    let a = &out.mask_features;
    worst = worst.max(compare(
        "mask_features",
        a.as_slice().unwrap(),
        &a.shape()[1..],
        &doc["mask_features"],
        spread("mask_features"),
    ));
    worst = worst.max(compare(
        "decoder output",
        out.hs.as_slice().unwrap(),
        out.hs.shape(),
        &doc["decoder_output"],
        spread("decoder_output"),
    ));
    worst = worst.max(compare(
        "pred_masks",
        out.masks.as_slice().unwrap(),
        out.masks.shape(),
        &doc["pred_masks"],
        spread("pred_masks"),
    ));
    let logits = floats(&doc["pred_logits"]);
    assert_eq!(out.logits.len(), logits.len(), "number of logits");
    for (k, (a, b)) in out.logits.iter().zip(&logits).enumerate() {
        let e = relative_error(*a as f64, *b);
        worst = worst.max(e);
        assert!(
            e <= spread("pred_logits"),
            "logit {k}: ours {a}, transformers {b}"
        );
    }
    eprintln!("maskformer (transformers names): largest relative error {worst:.2e}");

    // A checkpoint of another number of queries is named, with the file.
    let wrong = MaskFormer::from_weights(
        &w,
        "",
        MaskFormerConfig {
            num_queries: 50,
            ..MaskFormerConfig::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        wrong.contains("model.transformer_module.queries_embedder.weight")
            && wrong.contains("class_predictor.weight"),
        "{wrong}"
    );
}
