//! Times RetinaFace through its plugin libraries as `engine run` has them
//! (`retinaface_preprocess` → `mobilenet_v1` or `resnet` → `retinaface`) on one photo, for
//! `tests/reference/bench_retinaface.py`, which times the official code in the same run:
//!
//!     cargo build --release -p plugin-retinaface -p plugin-backbones --example bench_retinaface
//!     target/release/examples/bench_retinaface mnet|re50 WEIGHTS PHOTO [REPS]
//!
//! Prints one JSON line: the median and minimum milliseconds, the median of the body alone,
//! and the number of faces.

use std::path::Path;
use std::time::Instant;

use engine::registry::Registry;
use plugin_sdk::{ParamValue, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_retinaface mnet|re50 WEIGHTS PHOTO [REPS]";
    let config = args.get(1).ok_or(usage)?.as_str();
    let weights = args.get(2).ok_or(usage)?;
    let photo = args.get(3).ok_or(usage)?;
    let reps: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let registry = Registry::from_cargo_target_dir()?;
    let w = || ("weights", ParamValue::Str(weights.clone()));
    let mut pre = registry.create_node("retinaface_preprocess", &[])?;
    let (mut body, mut head) = match config {
        "mnet" => (
            registry.create_node("mobilenet_v1", &[w()])?,
            registry.create_node("retinaface", &[w()])?,
        ),
        "re50" => (
            registry.create_node(
                "resnet",
                &[
                    w(),
                    ("prefix", ParamValue::Str("body.".into())),
                    ("bn_eps", ParamValue::Float(1e-5)),
                    ("returned_layers", ParamValue::IntList(vec![2, 3, 4])),
                    // As pipelines/retinaface_r50.toml.
                    ("winograd_f4", ParamValue::Bool(true)),
                ],
            )?,
            registry.create_node(
                "retinaface",
                &[
                    w(),
                    ("in_channels", ParamValue::IntList(vec![512, 1024, 2048])),
                    ("out_channels", ParamValue::Int(256)),
                ],
            )?,
        ),
        _ => return Err(usage.into()),
    };
    let image = Value::image(plugin_io::image_source::read_image(Path::new(photo))?);
    // One pass: the number of faces and the milliseconds of the body alone.
    let mut once = || -> Result<(usize, f64), Box<dyn std::error::Error>> {
        let x = Registry::run_once(&mut pre, &[("image", &image)], "image")?;
        let t = Instant::now();
        let f = Registry::run_once(&mut body, &[("image", &x)], "features")?;
        let body_ms = t.elapsed().as_secs_f64() * 1e3;
        let faces = Registry::run_once(&mut head, &[("features", &f), ("image", &x)], "instances")?;
        Ok((faces.tensor("scores")?.shape()[0], body_ms))
    };
    let (mut faces, _) = once()?;
    let mut times = Vec::with_capacity(reps);
    let mut body_times = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        let (n, body_ms) = once()?;
        faces = n;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        body_times.push(body_ms);
    }
    times.sort_by(f64::total_cmp);
    body_times.sort_by(f64::total_cmp);
    println!(
        "{{\"config\":\"{config}\",\"faces\":{faces},\"median_ms\":{:.2},\"min_ms\":{:.2},\"body_median_ms\":{:.2}}}",
        times[times.len() / 2],
        times[0],
        body_times[body_times.len() / 2]
    );
    Ok(())
}
