//! Times MaskFormer R50 through its plugin libraries as `engine run` has them
//! (`maskformer_preprocess` → `resnet` (Detectron2's) → `maskformer`) on one photo, for
//! `tests/reference/bench_maskformer.py`, which times the official code in the same run:
//!
//!     cargo build --release -p plugin-detr -p plugin-backbones --example bench_maskformer
//!     target/release/examples/bench_maskformer WEIGHTS PHOTO [REPS]
//!
//! Prints one JSON line: the median and minimum milliseconds of the whole, the median of each
//! node, and the panoptic segments (ids, classes) for the driver to compare.

#[path = "../../../tests/support/bench.rs"]
mod bench;

use std::path::Path;
use std::time::Instant;

use bench::median;
use engine::registry::Registry;
use plugin_sdk::{ParamValue, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_maskformer WEIGHTS PHOTO [REPS]";
    let weights = args.get(1).ok_or(usage)?;
    let photo = args.get(2).ok_or(usage)?;
    let reps: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let registry = Registry::from_cargo_target_dir()?;
    let w = || ("weights", ParamValue::Str(weights.clone()));
    let mut pre = registry.create_node("maskformer_preprocess", &[])?;
    let mut body = registry.create_node(
        "resnet",
        &[
            w(),
            ("prefix", ParamValue::Str("backbone.".into())),
            ("stage_names", ParamValue::Str("detectron2".into())),
            ("bn_eps", ParamValue::Float(1e-5)),
            // As pipelines/maskformer_r50.toml.
            ("winograd_f4", ParamValue::Bool(true)),
        ],
    )?;
    let mut head = registry.create_node("maskformer", &[w()])?;
    let image = Value::image(plugin_io::image_source::read_image(Path::new(photo))?);
    let (mut whole, mut nodes) = (Vec::new(), [Vec::new(), Vec::new(), Vec::new()]);
    let mut last = None;
    for _ in 0..reps + 1 {
        let t0 = Instant::now();
        let x = Registry::run_once(&mut pre, &[("image", &image)], "image")?;
        let t1 = Instant::now();
        let f = Registry::run_once(&mut body, &[("image", &x)], "features")?;
        let t2 = Instant::now();
        let out = Registry::run_once(&mut head, &[("features", &f), ("image", &x)], "panoptic")?;
        let t3 = Instant::now();
        whole.push((t3 - t0).as_secs_f64() * 1e3);
        for (k, (a, b)) in [(t0, t1), (t1, t2), (t2, t3)].into_iter().enumerate() {
            nodes[k].push((b - a).as_secs_f64() * 1e3);
        }
        last = Some(out);
    }
    let out = last.ok_or("no run")?;
    let ids = out.tensor("segment_ids")?.as_slice::<i32>()?.to_vec();
    let classes = out.tensor("segment_classes")?.as_slice::<i64>()?.to_vec();
    let rest = |v: &Vec<f64>| v[1..].to_vec();
    println!(
        "{{\"median_ms\": {:.2}, \"min_ms\": {:.2}, \"nodes_ms\": {{\"maskformer_preprocess\": {:.2}, \"resnet\": {:.2}, \"maskformer\": {:.2}}}, \"segment_ids\": {ids:?}, \"segment_classes\": {classes:?}}}",
        median(rest(&whole)),
        rest(&whole).into_iter().fold(f64::INFINITY, f64::min),
        median(rest(&nodes[0])),
        median(rest(&nodes[1])),
        median(rest(&nodes[2])),
    );
    Ok(())
}
