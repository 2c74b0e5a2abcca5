//! Times YOLACT through its plugin libraries as `engine run` has them (`yolact_preprocess` →
//! `resnet` → `yolact`) on one photo, for `tests/reference/bench_yolact.py`, which times the
//! official code in the same run:
//!
//!     cargo build --release -p plugin-yolact -p plugin-backbones --example bench_yolact
//!     target/release/examples/bench_yolact WEIGHTS PHOTO [REPS]
//!
//! Prints one JSON line: the median and minimum milliseconds of the whole, the median of each
//! node, and the detections (classes and scores) for the driver to compare.

#[path = "../../../tests/support/bench.rs"]
mod bench;

use std::path::Path;
use std::time::Instant;

use bench::median;
use engine::registry::Registry;
use plugin_sdk::{ParamValue, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_yolact WEIGHTS PHOTO [REPS]";
    let weights = args.get(1).ok_or(usage)?;
    let photo = args.get(2).ok_or(usage)?;
    let reps: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(10);
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
        ],
    )?;
    let mut head = registry.create_node("yolact", &[w()])?;
    let image = Value::image(plugin_io::image_source::read_image(Path::new(photo))?);
    let mut once = || -> Result<(Value, [f64; 3]), Box<dyn std::error::Error>> {
        let t0 = Instant::now();
        let x = Registry::run_once(&mut pre, &[("image", &image)], "image")?;
        let t1 = Instant::now();
        let f = Registry::run_once(&mut body, &[("image", &x)], "features")?;
        let t2 = Instant::now();
        let out = Registry::run_once(&mut head, &[("features", &f), ("image", &x)], "instances")?;
        let t3 = Instant::now();
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        Ok((out, [ms(t0, t1), ms(t1, t2), ms(t2, t3)]))
    };
    let (mut out, _) = once()?;
    let mut parts: [Vec<f64>; 3] = Default::default();
    let mut totals = Vec::new();
    for _ in 0..reps.max(1) {
        let (o, t) = once()?;
        out = o;
        for (p, v) in parts.iter_mut().zip(t) {
            p.push(v);
        }
        totals.push(t.iter().sum());
    }
    let min = totals.iter().copied().fold(f64::INFINITY, f64::min);
    let [pre_ms, body_ms, head_ms] = parts.map(median);
    println!(
        "{{\"median_ms\":{:.2},\"min_ms\":{min:.2},\"preprocess_ms\":{pre_ms:.2},\"resnet_ms\":{body_ms:.2},\"yolact_ms\":{head_ms:.2},\"classes\":{:?},\"scores\":{:?}}}",
        median(totals),
        out.tensor("classes")?.as_slice::<i64>()?,
        out.tensor("scores")?.as_slice::<f32>()?
    );
    Ok(())
}
