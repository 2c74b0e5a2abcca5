//! Times CenterNet ctdet resdcn_18 through its plugin libraries as `engine run` has them
//! (`centernet_preprocess` → `resnet` → `dcn_upsample` → `centernet_ctdet`) on one photo, for
//! `tests/reference/bench_centernet.py`, which times the official code in the same run:
//!
//!     cargo build --release -p plugin-centernet -p plugin-backbones --example bench_centernet
//!     target/release/examples/bench_centernet WEIGHTS PHOTO [REPS]
//!
//! Prints one JSON line: the median and minimum milliseconds of the whole, the median of each
//! node, the medians of the head's stages (heads, decoding; through the library on the same
//! weights), and the detections for the driver to compare.

#[path = "../../../tests/support/bench.rs"]
mod bench;

use std::path::Path;
use std::time::Instant;

use bench::{median, ms};
use engine::registry::Registry;
use ndarray::ArrayView4;
use plugin_centernet::model::{CenterNet, CenterNetConfig};
use plugin_sdk::{ParamValue, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_centernet WEIGHTS PHOTO [REPS]";
    let weights = args.get(1).ok_or(usage)?;
    let photo = args.get(2).ok_or(usage)?;
    let reps: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let registry = Registry::from_cargo_target_dir()?;
    let w = || ("weights", ParamValue::Str(weights.clone()));
    let mut pre = registry.create_node("centernet_preprocess", &[])?;
    let mut body = registry.create_node(
        "resnet",
        &[
            w(),
            ("prefix", ParamValue::Str(String::new())),
            ("depth", ParamValue::Int(18)),
            ("bn_eps", ParamValue::Float(1e-5)),
            ("returned_layers", ParamValue::IntList(vec![4])),
        ],
    )?;
    let mut up = registry.create_node("dcn_upsample", &[w()])?;
    let mut head = registry.create_node("centernet_ctdet", &[w()])?;
    let model = CenterNet::from_weights(
        &kernels::weights::Weights::load(Path::new(weights))?,
        "",
        CenterNetConfig::default(),
    )?;
    let image = Value::image(plugin_io::image_source::read_image(Path::new(photo))?);
    let mut whole = Vec::new();
    let mut nodes = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    let mut stages = [Vec::new(), Vec::new()];
    let mut last = None;
    for _ in 0..reps + 1 {
        let t0 = Instant::now();
        let x = Registry::run_once(&mut pre, &[("image", &image)], "image")?;
        let t1 = Instant::now();
        let f = Registry::run_once(&mut body, &[("image", &x)], "features")?;
        let t2 = Instant::now();
        let u = Registry::run_once(&mut up, &[("features", &f)], "features")?;
        let t3 = Instant::now();
        let out = Registry::run_once(&mut head, &[("features", &u), ("image", &x)], "instances")?;
        let t4 = Instant::now();
        whole.push((t4 - t0).as_secs_f64() * 1e3);
        for (k, (a, b)) in [(t0, t1), (t1, t2), (t2, t3), (t3, t4)]
            .into_iter()
            .enumerate()
        {
            nodes[k].push((b - a).as_secs_f64() * 1e3);
        }
        // The head's stages, through the library.
        let p2 = u.tensor("p2")?;
        let s = p2.shape();
        let p2: ArrayView4<f32> = p2
            .view::<f32>()?
            .into_shape_with_order((1, s[0], s[1], s[2]))?
            .into_dimensionality()?;
        let t = Instant::now();
        let heads = model.heads(p2)?;
        stages[0].push(ms(t));
        let t = Instant::now();
        let _ = model.decode(&heads)?;
        stages[1].push(ms(t));
        last = Some(out);
    }
    // The first round warms up.
    let drop_first = |v: &Vec<f64>| v[1..].to_vec();
    let out = last.ok_or("no run")?;
    let scores = out.tensor("scores")?.as_slice::<f32>()?.to_vec();
    let classes = out.tensor("classes")?.as_slice::<i64>()?.to_vec();
    let boxes = out.tensor("boxes")?.as_slice::<f32>()?.to_vec();
    let min = drop_first(&whole).into_iter().fold(f64::INFINITY, f64::min);
    println!(
        "{{\"median_ms\": {:.2}, \"min_ms\": {min:.2}, \"nodes_ms\": {{\"centernet_preprocess\": {:.2}, \"resnet\": {:.2}, \"dcn_upsample\": {:.2}, \"centernet_ctdet\": {:.2}}}, \"stages_ms\": {{\"heads\": {:.2}, \"decode\": {:.3}}}, \"scores\": {scores:?}, \"classes\": {classes:?}, \"boxes\": {boxes:?}}}",
        median(drop_first(&whole)),
        median(drop_first(&nodes[0])),
        median(drop_first(&nodes[1])),
        median(drop_first(&nodes[2])),
        median(drop_first(&nodes[3])),
        median(drop_first(&stages[0])),
        median(drop_first(&stages[1])),
    );
    Ok(())
}
