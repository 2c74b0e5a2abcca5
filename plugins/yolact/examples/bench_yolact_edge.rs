//! Times YolactEdge's keyframes against the frames between them, through the plugin libraries
//! as `engine run` has them (`yolact_preprocess` → `resnet` with `keyframe_interval` →
//! `yolact_edge`), on the weights of `plugins/yolact/tests/fixtures/yolact_edge_r50.json`
//! (generated as the test does) and a photo, one stream of frames:
//!
//!     cargo build --release -p plugin-yolact -p plugin-backbones --example bench_yolact_edge
//!     target/release/examples/bench_yolact_edge PHOTO [FRAMES]
//!
//! Prints one JSON line: the medians of the keyframes and of the other frames, whole and per
//! node, and their ratio.

#[path = "../../../tests/support/bench.rs"]
mod bench;

use std::path::Path;
use std::time::Instant;

use bench::median;
use engine::registry::Registry;
use plugin_sdk::{FrameInfo, Inputs, Node, ParamValue, Value};

fn run(
    node: &mut Box<dyn Node>,
    frame: &FrameInfo,
    inputs: &[(&str, &Value)],
    port: &str,
) -> Result<Value, Box<dyn std::error::Error>> {
    let mut ins = Inputs::new();
    for (p, v) in inputs {
        ins.push(p, Some((*v).clone()));
    }
    let out = node
        .process(frame, &ins)
        .map_err(|e| e.message().to_string())?;
    Ok(out.get(port).ok_or("no output")?.clone())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_yolact_edge PHOTO [FRAMES]";
    let photo = args.get(1).ok_or(usage)?;
    let frames: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(20);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        root.join("tests/fixtures/yolact_edge_r50.json"),
    )?)?;
    let tensors = doc["weights"]
        .as_array()
        .ok_or("weights")?
        .iter()
        .map(|w| {
            let name = w["name"].as_str().ok_or("name")?;
            let shape: Vec<usize> = w["shape"]
                .as_array()
                .ok_or("shape")?
                .iter()
                .map(|v| v.as_u64().unwrap_or(0) as usize)
                .collect();
            let (a, b) = (w["a"].as_f64().ok_or("a")?, w["b"].as_f64().ok_or("b")?);
            let t = kernels::weights::generated_tensor(name, &shape, a as f32, b as f32)?;
            Ok((name.to_string(), t))
        })
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    let path = std::env::temp_dir().join(format!(
        "bench-yolact-edge-{}.safetensors",
        std::process::id()
    ));
    kernels::weights::save_safetensors(&path, &tensors)?;
    let weights = path.display().to_string();
    let registry = Registry::from_cargo_target_dir()?;
    let w = || ("weights", ParamValue::Str(weights.clone()));
    let mut pre = registry.create_node("yolact_preprocess", &[])?;
    let mut body = registry.create_node(
        "resnet",
        &[
            w(),
            ("prefix", ParamValue::Str("backbone.".into())),
            ("stage_names", ParamValue::Str("yolact".into())),
            ("bn_eps", ParamValue::Float(1e-5)),
            ("returned_layers", ParamValue::IntList(vec![2, 3, 4])),
            ("keyframe_interval", ParamValue::Int(5)),
        ],
    )?;
    let mut head = registry.create_node("yolact_edge", &[w()])?;
    let image = Value::image(plugin_io::image_source::read_image(Path::new(photo))?);
    let (mut key, mut other): (Vec<[f64; 4]>, Vec<[f64; 4]>) = (Vec::new(), Vec::new());
    // Frame 0 warms up; the stream then runs `frames` more.
    for index in 0..=frames {
        let frame = FrameInfo {
            index,
            ..Default::default()
        };
        let t0 = Instant::now();
        let x = run(&mut pre, &frame, &[("image", &image)], "image")?;
        let t1 = Instant::now();
        let f = run(&mut body, &frame, &[("image", &x)], "features")?;
        let t2 = Instant::now();
        run(
            &mut head,
            &frame,
            &[("features", &f), ("image", &x)],
            "instances",
        )?;
        let t3 = Instant::now();
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        let t = [ms(t0, t3), ms(t0, t1), ms(t1, t2), ms(t2, t3)];
        if index == 0 {
            continue;
        }
        if index % 5 == 0 { &mut key } else { &mut other }.push(t);
    }
    let _ = std::fs::remove_file(&path);
    let med = |v: &[[f64; 4]], k: usize| median(v.iter().map(|t| t[k]).collect());
    println!(
        "{{\"keyframe_ms\":{:.1},\"other_ms\":{:.1},\"ratio\":{:.3},\"keyframe_nodes_ms\":[{:.1},{:.1},{:.1}],\"other_nodes_ms\":[{:.1},{:.1},{:.1}],\"keyframes\":{},\"others\":{},\"threads\":{}}}",
        med(&key, 0),
        med(&other, 0),
        med(&other, 0) / med(&key, 0),
        med(&key, 1),
        med(&key, 2),
        med(&key, 3),
        med(&other, 1),
        med(&other, 2),
        med(&other, 3),
        key.len(),
        other.len(),
        rayon::current_num_threads()
    );
    Ok(())
}
