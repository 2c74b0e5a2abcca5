//! Times DETR R50 through its plugin libraries as `engine run` has them (`detr_preprocess` →
//! `resnet` → `detr`) on one photo, for `tests/reference/bench_detr.py`, which times Hugging
//! Face transformers and the official code in the same run:
//!
//!     cargo build --release -p plugin-detr -p plugin-backbones --example bench_detr
//!     target/release/examples/bench_detr WEIGHTS PHOTO [REPS]
//!
//! Prints one JSON line: the median and minimum milliseconds of the whole, the median of each
//! node, the medians of the `detr` node's stages (input projection, encoder, decoder, heads;
//! timed through the library on the same weights), and the results for the driver to compare.

#[path = "../../../tests/support/bench.rs"]
mod bench;

use std::path::Path;
use std::time::Instant;

use bench::{median, ms};
use engine::registry::Registry;
use ndarray::ArrayView4;
use plugin_detr::model::{post_process, Detr, DetrConfig};
use plugin_detr::transformer::sine_position_embedding;
use plugin_sdk::{ParamValue, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_detr WEIGHTS PHOTO [REPS]";
    let weights = args.get(1).ok_or(usage)?;
    let photo = args.get(2).ok_or(usage)?;
    let reps: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let registry = Registry::from_cargo_target_dir()?;
    let w = || ("weights", ParamValue::Str(weights.clone()));
    let mut pre = registry.create_node("detr_preprocess", &[])?;
    let mut body = registry.create_node(
        "resnet",
        &[
            w(),
            ("prefix", ParamValue::Str("backbone.0.body.".into())),
            ("bn_eps", ParamValue::Float(1e-5)),
            ("returned_layers", ParamValue::IntList(vec![4])),
            // As pipelines/detr_r50.toml.
            ("winograd_f4", ParamValue::Bool(true)),
        ],
    )?;
    let mut head = registry.create_node("detr", &[w()])?;
    let model = Detr::from_weights(
        &kernels::weights::Weights::load(Path::new(weights))?,
        "",
        DetrConfig::default(),
    )?;
    let image = Value::image(plugin_io::image_source::read_image(Path::new(photo))?);
    let mut whole = Vec::new();
    let mut nodes = [Vec::new(), Vec::new(), Vec::new()];
    let mut stages = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    let mut last = None;
    for _ in 0..reps + 1 {
        let t0 = Instant::now();
        let x = Registry::run_once(&mut pre, &[("image", &image)], "image")?;
        let t1 = Instant::now();
        let f = Registry::run_once(&mut body, &[("image", &x)], "features")?;
        let t2 = Instant::now();
        let out = Registry::run_once(&mut head, &[("features", &f), ("image", &x)], "instances")?;
        let t3 = Instant::now();
        whole.push((t3 - t0).as_secs_f64() * 1e3);
        for (k, (a, b)) in [(t0, t1), (t1, t2), (t2, t3)].into_iter().enumerate() {
            nodes[k].push((b - a).as_secs_f64() * 1e3);
        }
        // The detr node's stages, through the library.
        let c5 = f.tensor("c5")?;
        let s = c5.shape();
        let c5: ArrayView4<f32> = c5
            .view::<f32>()?
            .into_shape_with_order((1, s[0], s[1], s[2]))?
            .into_dimensionality()?;
        let t = Instant::now();
        let (src, (h, wd)) = model.project(c5)?;
        let pos = sine_position_embedding(h, wd, model.config().hidden_dim / 2);
        stages[0].push(ms(t));
        let t = Instant::now();
        let memory = model.encode(src, &pos)?;
        stages[1].push(ms(t));
        let t = Instant::now();
        let hs = model.decode(&memory, &pos)?;
        stages[2].push(ms(t));
        let t = Instant::now();
        let raw = model.heads(&hs)?;
        let sizes = x.tensor("original_size")?.as_slice::<i64>()?.to_vec();
        let _ = post_process(&raw, (sizes[0] as usize, sizes[1] as usize));
        stages[3].push(ms(t));
        last = Some(out);
    }
    // The first round warms up.
    let drop_first = |v: &Vec<f64>| v[1..].to_vec();
    let out = last.ok_or("no run")?;
    let scores = out.tensor("scores")?.as_slice::<f32>()?.to_vec();
    let labels = out.tensor("classes")?.as_slice::<i64>()?.to_vec();
    let boxes = out.tensor("boxes")?.as_slice::<f32>()?.to_vec();
    let min = drop_first(&whole).into_iter().fold(f64::INFINITY, f64::min);
    println!(
        "{{\"median_ms\": {:.2}, \"min_ms\": {min:.2}, \"nodes_ms\": {{\"detr_preprocess\": {:.2}, \"resnet\": {:.2}, \"detr\": {:.2}}}, \"stages_ms\": {{\"input_proj\": {:.2}, \"encoder\": {:.2}, \"decoder\": {:.2}, \"heads\": {:.2}}}, \"scores\": {scores:?}, \"labels\": {labels:?}, \"boxes\": {boxes:?}}}",
        median(drop_first(&whole)),
        median(drop_first(&nodes[0])),
        median(drop_first(&nodes[1])),
        median(drop_first(&nodes[2])),
        median(drop_first(&stages[0])),
        median(drop_first(&stages[1])),
        median(drop_first(&stages[2])),
        median(drop_first(&stages[3])),
    );
    Ok(())
}
