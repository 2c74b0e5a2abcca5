//! Times the Mask R-CNN nodes one after the other on one photo (the latency of one frame, per
//! node, median over REPS frames after one warm-up frame) and writes the final instances as COCO results JSON, for a comparison with
//! torchvision. Driven by `tests/reference/bench_mask_rcnn.py`, which generates the weights
//! and times torchvision in the same run:
//!
//!     cargo run --release -p plugin-rcnn --example bench_mask_rcnn -- WEIGHTS IMAGE OUT_JSON [REPS] [DEPTH] [SCORE_THRESH]
//!
//! With `KERNELS_PROFILE=1` it also prints, per frame and node, the time of every convolution
//! and linear layer (profiling adds a little time of its own).

use std::path::Path;
use std::time::Instant;

use plugin_rcnn::box_head::BoxHeadNode;
use plugin_rcnn::fpn::FpnNode;
use plugin_rcnn::mask_head::MaskHeadNode;
use plugin_rcnn::paste::PasteMasks;
use plugin_rcnn::preprocess::RcnnPreprocess;
use plugin_rcnn::resnet::ResNetNode;
use plugin_rcnn::rpn::RpnNode;
use plugin_sdk::{ParamValue, Params, Value};

fn params(kind: &str, set: &[(&str, ParamValue)]) -> Params {
    let k = plugin_rcnn::kinds()
        .into_iter()
        .find(|k| k.spec.kind == kind)
        .expect("known kind");
    let mut p = Params::new();
    for spec in &k.spec.params {
        if let Some(d) = &spec.default {
            p.set(&spec.name, d.clone());
        }
    }
    for (n, v) in set {
        p.set(n, v.clone());
    }
    p
}

// The engine binary's allocator and settings (engine/src/main.rs): mimalloc, with freed pages
// kept committed (`mi_option_purge_delay` = -1), so that the frames after the first do not
// page-fault their buffers in again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

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
    // SAFETY: no other thread exists yet.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let reps: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let depth: i64 = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(50);
    let score: f64 = args.get(6).map(|s| s.parse()).transpose()?.unwrap_or(0.05);
    let w = || ("weights", ParamValue::Str(args[1].clone()));
    let t = Instant::now();
    let pre = RcnnPreprocess::from_params(&params("rcnn_preprocess", &[]))?;
    let body =
        ResNetNode::from_params(&params("resnet", &[w(), ("depth", ParamValue::Int(depth))]))?;
    let fpn = FpnNode::from_params(&params("fpn", &[w(), ("depth", ParamValue::Int(depth))]))?;
    let rpn = RpnNode::from_params(&params("rpn", &[w()]))?;
    let box_head = BoxHeadNode::from_params(&params(
        "roi_box_head",
        &[w(), ("score_thresh", ParamValue::Float(score))],
    ))?;
    let mask_head = MaskHeadNode::from_params(&params("roi_mask_head", &[w()]))?;
    let paste = PasteMasks::from_params(&params("paste_masks", &[]))?;
    println!("load {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    let image = Value::image(plugin_io::image_source::read_image(Path::new(&args[2]))?);
    let mut times = vec![Vec::new(); STAGES.len()];
    let mut last = None;
    // One untimed warm-up frame first, as the torchvision side of the comparison: the first
    // frame also transforms the Winograd weights and faults the allocator's pages in.
    for rep in 0..=reps {
        // KERNELS_PROFILE=1: the layers of each node, per frame (the first frame included).
        let profile = |node: &str| {
            if kernels::profile::enabled() {
                eprintln!("## {node}\n{}", kernels::profile::report(1));
            }
        };
        let mut stamps = vec![Instant::now()];
        let x = pre.run(&image)?;
        stamps.push(Instant::now());
        let c = body.run(&x)?;
        stamps.push(Instant::now());
        profile("resnet");
        let p = fpn.run(&c)?;
        stamps.push(Instant::now());
        profile("fpn");
        let proposals = rpn.run(&p, &x)?;
        stamps.push(Instant::now());
        profile("rpn");
        let det = box_head.run(&p, &proposals, &x)?;
        stamps.push(Instant::now());
        profile("roi_box_head");
        let with_masks = mask_head.run(&p, &det, &x)?;
        stamps.push(Instant::now());
        profile("roi_mask_head");
        let out = paste.run(&with_masks, &x)?;
        stamps.push(Instant::now());
        if rep == 0 {
            continue;
        }
        for (k, t) in times.iter_mut().enumerate() {
            t.push((stamps[k + 1] - stamps[k]).as_secs_f64() * 1e3);
        }
        if kernels::profile::enabled() {
            let frame: Vec<String> = STAGES
                .iter()
                .zip(&times)
                .map(|(n, t)| format!("{n} {:.1}", t[t.len() - 1]))
                .collect();
            eprintln!("## frame: {} ms", frame.join(", "));
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
        "input {:?}, {} detections: {} ms; total {total:.1} ms (median of {reps}, {} rayon threads)",
        x.tensor("tensor")?.shape(),
        out.tensor("scores")?.shape()[0],
        parts.join(", "),
        rayon::current_num_threads()
    );
    let objects = plugin_io::json_sink::coco_objects(&out, 0, 0.5)?;
    std::fs::write(&args[3], format!("[{}]", objects.join(",")))?;
    Ok(())
}
