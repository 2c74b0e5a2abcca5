//! Times the Mask R-CNN nodes one after the other on one photo (the latency of one frame, per
//! node, median over REPS frames after one warm-up frame) and writes the final instances as COCO results JSON, for a comparison with
//! torchvision. Driven by `tests/reference/bench_mask_rcnn.py`, which generates the weights
//! and times torchvision in the same run:
//!
//!     cargo build --release --workspace --examples
//!     target/release/examples/bench_mask_rcnn WEIGHTS IMAGE OUT_JSON [REPS] [DEPTH] [SCORE_THRESH]
//!
//! The nodes come from their plugin libraries in `target/release`, as in `engine run`.

use std::path::Path;
use std::time::Instant;

use engine::registry::Registry;
use plugin_sdk::{ParamValue, Value};

// The engine binary's allocator and settings (kernels::process); each family library has the
// same of its own.
kernels::engine_allocator!();

const STAGES: [&str; 7] = [
    "rcnn_preprocess",
    "resnet",
    "fpn",
    "rpn",
    "roi_box_head",
    "roi_mask_head",
    "paste_masks",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err(
            "usage: bench_mask_rcnn WEIGHTS IMAGE OUT_JSON [REPS] [DEPTH] [SCORE_THRESH]".into(),
        );
    }
    kernels::process::memory_policy();
    let reps: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let depth: i64 = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(50);
    let score: f64 = args.get(6).map(|s| s.parse()).transpose()?.unwrap_or(0.05);
    let w = || ("weights", ParamValue::Str(args[1].clone()));
    let registry = Registry::from_cargo_target_dir()?;
    let t = Instant::now();
    let mut pre = registry.create_node("rcnn_preprocess", &[])?;
    let mut body = registry.create_node("resnet", &[w(), ("depth", ParamValue::Int(depth))])?;
    let mut fpn = registry.create_node("fpn", &[w(), ("depth", ParamValue::Int(depth))])?;
    let mut rpn = registry.create_node("rpn", &[w()])?;
    let mut box_head = registry.create_node(
        "roi_box_head",
        &[w(), ("score_thresh", ParamValue::Float(score))],
    )?;
    let mut mask_head = registry.create_node("roi_mask_head", &[w()])?;
    let mut paste = registry.create_node("paste_masks", &[])?;
    println!("load {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    let image = Value::image(plugin_io::image_source::read_image(Path::new(&args[2]))?);
    let mut times = vec![Vec::new(); STAGES.len()];
    let mut last = None;
    // One untimed warm-up frame first, as the torchvision side of the comparison: the first
    // frame also transforms the Winograd weights and faults the allocator's pages in.
    for rep in 0..=reps {
        let mut stamps = vec![Instant::now()];
        let x = Registry::run_once(&mut pre, &[("image", &image)], "image")?;
        stamps.push(Instant::now());
        let c = Registry::run_once(&mut body, &[("image", &x)], "features")?;
        stamps.push(Instant::now());
        let p = Registry::run_once(&mut fpn, &[("features", &c)], "features")?;
        stamps.push(Instant::now());
        let proposals =
            Registry::run_once(&mut rpn, &[("features", &p), ("image", &x)], "proposals")?;
        stamps.push(Instant::now());
        let det = Registry::run_once(
            &mut box_head,
            &[("features", &p), ("proposals", &proposals), ("image", &x)],
            "detections",
        )?;
        stamps.push(Instant::now());
        let with_masks = Registry::run_once(
            &mut mask_head,
            &[("features", &p), ("detections", &det), ("image", &x)],
            "instances",
        )?;
        stamps.push(Instant::now());
        let out = Registry::run_once(
            &mut paste,
            &[("instances", &with_masks), ("image", &x)],
            "instances",
        )?;
        stamps.push(Instant::now());
        if rep == 0 {
            continue;
        }
        for (k, t) in times.iter_mut().enumerate() {
            t.push((stamps[k + 1] - stamps[k]).as_secs_f64() * 1e3);
        }
        last = Some((x, out));
    }
    let (x, out) = last.ok_or("REPS must be >= 1")?;
    let mut total = 0.0;
    let mut parts = Vec::new();
    for (name, t) in STAGES.iter().zip(&mut times) {
        t.sort_by(f64::total_cmp);
        let m = t[t.len() / 2];
        total += m;
        parts.push(format!("{name} {m:.1}"));
    }
    println!(
        "input {:?}, {} detections: {} ms; total {total:.1} ms (median of {reps}, {} threads per library)",
        x.tensor("tensor")?.shape(),
        out.tensor("scores")?.shape()[0],
        parts.join(", "),
        registry.threads()
    );
    let objects = plugin_io::json_sink::coco_objects(&out, 0, 0.5)?;
    std::fs::write(&args[3], format!("[{}]", objects.join(",")))?;
    Ok(())
}
