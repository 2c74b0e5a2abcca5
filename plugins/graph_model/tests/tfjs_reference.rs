//! Compares the raw outputs of every model with TensorFlow.js's CPU backend on real photos.
//!
//! Fixtures: `tests/fixtures/tfjs/<model>.json`, written by `tests/reference/tfjs/reference.js`
//! (per photo and output: shape, dtype, min, max, mean and the values at fixed indices).
//! Models: `models/` at the repository root (`scripts/fetch-models.sh`); when absent the test
//! prints "SKIPPED: run scripts/fetch-models.sh" and passes.
//!
//! Tolerance: |ours - tfjs| <= 1e-3 * max(1, |tfjs|) for every sampled value, min, max and mean.
//! Every photo of the fixture is checked (about 40 s in the dev profile, 3 s in release).

use std::path::{Path, PathBuf};

use kernels::{DType, Tensor};
use plugin_graph_model::{preprocess_for, GraphModel};
use serde_json::Value as Json;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn models_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("models"));
    dir.join("blazeface.json").is_file().then_some(dir)
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

fn as_f64(t: &Tensor) -> Vec<f64> {
    match t.dtype() {
        DType::F32 => t
            .as_slice::<f32>()
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect(),
        DType::I32 => t
            .as_slice::<i32>()
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect(),
        DType::Bool => t
            .as_slice::<bool>()
            .unwrap()
            .iter()
            .map(|&v| v as u8 as f64)
            .collect(),
        d => panic!("unexpected dtype {d}"),
    }
}

/// Largest relative difference `|a - b| / max(1, |b|)` over a summary; panics with context
/// when it exceeds `tol`.
fn compare(what: &str, ours: &Tensor, reference: &Json, tol: f64) -> f64 {
    let shape: Vec<usize> = reference["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(ours.shape(), &shape[..], "{what}: shape");
    let v = as_f64(ours);
    let mut worst = 0f64;
    let mut check = |label: String, a: f64, b: f64| {
        let d = (a - b).abs() / b.abs().max(1.0);
        assert!(
            d <= tol,
            "{what}: {label}: ours {a}, tfjs {b} (relative difference {d:.2e} > {tol:.0e})"
        );
        worst = worst.max(d);
    };
    let idx = reference["indices"].as_array().unwrap();
    let vals = reference["values"].as_array().unwrap();
    for (i, r) in idx.iter().zip(vals) {
        let i = i.as_u64().unwrap() as usize;
        check(format!("value [{i}]"), v[i], r.as_f64().unwrap());
    }
    let n = v.len() as f64;
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = v.iter().sum::<f64>() / n;
    check("min".into(), min, reference["min"].as_f64().unwrap());
    check("max".into(), max, reference["max"].as_f64().unwrap());
    check("mean".into(), mean, reference["mean"].as_f64().unwrap());
    worst
}

fn check_model(name: &str) {
    let Some(dir) = models_dir() else {
        println!("SKIPPED: run scripts/fetch-models.sh (no models/ folder with the TF.js models)");
        return;
    };
    let fixture_path = repo().join(format!("tests/fixtures/tfjs/{name}.json"));
    let fixture: Json =
        serde_json::from_str(&std::fs::read_to_string(&fixture_path).expect("fixture"))
            .expect("fixture JSON");
    let cfg: Json = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/reference/tfjs/models.json")).unwrap(),
    )
    .unwrap();
    let gw: Vec<f32> = cfg["gray_weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let t0 = std::time::Instant::now();
    let mut model =
        GraphModel::load(&dir.join(format!("{name}.json"))).unwrap_or_else(|e| panic!("{e}"));
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let m = &fixture["preprocess"];
    let flag = |k: &str| m[k].as_bool().unwrap_or(false);
    let pre = preprocess_for(
        &model,
        &[],
        flag("int32").then_some(DType::I32),
        if flag("nchw") { "nchw" } else { "nhwc" },
        m["scale"].as_f64().unwrap() as f32,
        m["offset"].as_f64().unwrap() as f32,
        false,
        false,
        [gw[0], gw[1], gw[2]],
    )
    .unwrap();
    let outputs: Vec<String> = fixture["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    // Runs of these outputs go through the compiled plan where the graph has one.
    model.plan_outputs(&outputs);
    // Every one of the 12 models plans (some with an op-by-op tail).
    let plan = match model.plan_status() {
        Ok(p) => format!(
            "planned: {} steps, {} KiB arena, {} ops op by op after them",
            p.steps,
            p.arena_bytes / 1024,
            p.tail_ops
        ),
        Err(why) => panic!("{name}: no compiled plan: {why}"),
    };
    let all = std::env::var("GRAPH_MODEL_PHOTOS")
        .map(|v| v == "all")
        .unwrap_or(false);
    let photos = fixture["photos"].as_array().unwrap();
    let count = if all {
        photos.len()
    } else {
        photos.len().min(2)
    };
    for p in &photos[..count] {
        let photo = p["photo"].as_str().unwrap();
        let image = load_png(&repo().join("assets").join(photo));
        let x = pre.apply(&image).unwrap();
        let din = compare(&format!("{name} / {photo} / input"), &x, &p["input"], 1e-5);
        let t = std::time::Instant::now();
        let outs = model
            .run(std::slice::from_ref(&x), &outputs)
            .unwrap_or_else(|e| panic!("{e}"));
        let run_ms = t.elapsed().as_secs_f64() * 1e3;
        // The plan runs the op-by-op executor's kernels in the same order: the same bits.
        let op_by_op = model
            .run_op_by_op(&[x], &outputs)
            .unwrap_or_else(|e| panic!("{e}"));
        for ((a, b), oname) in outs.iter().zip(&op_by_op).zip(&outputs) {
            let (a, b) = (as_f64(a), as_f64(b));
            let same =
                a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{name} / {photo} / {oname}: the planned run differs from the op-by-op run ({plan})");
        }
        let mut worst = 0f64;
        for ((o, r), oname) in outs
            .iter()
            .zip(p["outputs"].as_array().unwrap())
            .zip(&outputs)
        {
            worst = worst.max(compare(&format!("{name} / {photo} / {oname}"), o, r, 1e-3));
        }
        println!(
            "{name} / {photo}: {} outputs match TF.js, max relative difference {worst:.2e} (input {din:.1e}); load {load_ms:.0} ms, run {run_ms:.0} ms; {plan}",
            outs.len()
        );
    }
}

macro_rules! model_tests {
    ($($f:ident => $name:expr),* $(,)?) => {
        $(#[test] fn $f() { check_model($name); })*
    };
}

model_tests! {
    centernet => "centernet",
    nanodet => "nanodet",
    blazeface => "blazeface",
    facemesh => "facemesh",
    iris => "iris",
    selfie => "selfie",
    meet => "meet",
    movenet_lightning => "movenet-lightning",
    movenet_thunder => "movenet-thunder",
    emotion => "emotion",
    age => "age",
    gender => "gender",
}

#[test]
fn bad_models_give_clear_errors() {
    let Some(dir) = models_dir() else {
        println!("SKIPPED: run scripts/fetch-models.sh (no models/ folder with the TF.js models)");
        return;
    };
    let tmp = std::env::temp_dir().join(format!("graph_model_bad_{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let json = std::fs::read_to_string(dir.join("emotion.json")).unwrap();
    let bin = std::fs::read(dir.join("emotion.bin")).unwrap();
    // Missing shard.
    std::fs::write(tmp.join("model.json"), &json).unwrap();
    let e = GraphModel::load(&tmp.join("model.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("emotion.bin") && e.contains("missing"), "{e}");
    // Truncated shard.
    std::fs::write(tmp.join("emotion.bin"), &bin[..bin.len() - 100]).unwrap();
    let e = GraphModel::load(&tmp.join("model.json"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("emotion.bin") && e.contains("too short") && e.contains("weight tensor"),
        "{e}"
    );
    // Unsupported op.
    std::fs::write(tmp.join("emotion.bin"), &bin).unwrap();
    std::fs::write(
        tmp.join("model.json"),
        json.replacen("\"op\": \"Softmax\"", "\"op\": \"FancyOp\"", 1)
            .replacen("\"op\":\"Softmax\"", "\"op\":\"FancyOp\"", 1),
    )
    .unwrap();
    let e = GraphModel::load(&tmp.join("model.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("FancyOp") && e.contains("graph node"), "{e}");
    // Malformed JSON.
    std::fs::write(tmp.join("model.json"), &json[..json.len() / 2]).unwrap();
    let e = GraphModel::load(&tmp.join("model.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("malformed"), "{e}");
    // Wrong input dtype / shape at run time.
    let model = GraphModel::load(&dir.join("emotion.json")).unwrap();
    let e = model
        .run(&[Tensor::zeros(DType::I32, &[1, 64, 64, 1]).unwrap()], &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("input_1") && e.contains("expects f32"), "{e}");
    let e = model
        .run(&[Tensor::zeros(DType::F32, &[1, 32, 64, 1]).unwrap()], &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("input_1"), "{e}");
    let e = model
        .run(
            &[Tensor::zeros(DType::F32, &[1, 64, 64, 1]).unwrap()],
            &["nope".into()],
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"nope\""), "{e}");
    // An input size that would allocate gigabytes per frame.
    let e = preprocess_for(
        &model,
        &[100_000, 100_000],
        None,
        "auto",
        1.0,
        0.0,
        false,
        false,
        [0.3, 0.6, 0.1],
    )
    .err()
    .unwrap();
    assert!(
        e.contains("exceeds the limit of 16384 pixels per side"),
        "{e}"
    );
    std::fs::remove_dir_all(&tmp).ok();
}
