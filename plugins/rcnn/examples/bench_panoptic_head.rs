//! Times Panoptic FPN's semantic head and fusion as the pipeline runs them (`sem_seg_fpn_head`
//! then `panoptic_fusion`, node for node) on inputs written by
//! `tests/reference/bench_panoptic_fpn.py`, which times Detectron2's `SemSegFPNHead`,
//! `sem_seg_postprocess`, argmax and `combine_semantic_and_instance_outputs` on the same
//! inputs and weights in the same run:
//!
//!     cargo build --release -p plugin-rcnn --example bench_panoptic_head
//!     target/release/examples/bench_panoptic_head WEIGHTS INPUTS [REPS]
//!
//! WEIGHTS: the head's state dict (`sem_seg_head.*`); INPUTS: `p2..p5` `[1, 256, H/s, W/s]`,
//! `image_size`, `original_size` and `padded_size` `[2]`, and the instances at the original
//! size: `masks` u8 `[N, H, W]`, `scores` `[N]`, `classes` `[N]`. Prints one JSON line: the
//! median and minimum milliseconds, and the segment map for the driver to compare.

use std::path::Path;
use std::time::Instant;

use kernels::weights::Weights;
use kernels::Tensor;
use plugin_rcnn::{panoptic_fusion, sem_seg_head};
use plugin_sdk::{ParamValue, Params, PortKind, Value};

fn defaults(kind: plugin_sdk::NodeKind) -> Params {
    let mut p = Params::new();
    for spec in kind.spec.params {
        if let Some(d) = spec.default {
            p.set(&spec.name, d);
        }
    }
    p
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    kernels::process::memory_policy();
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_panoptic_head WEIGHTS INPUTS [REPS]";
    let weights = args.get(1).ok_or(usage)?;
    let inputs = Weights::load(Path::new(args.get(2).ok_or(usage)?))?;
    let reps: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let get = |name: &str| -> Result<Tensor, Box<dyn std::error::Error>> {
        Ok(inputs
            .get(name)
            .ok_or(format!("{name} missing from the inputs"))?
            .clone())
    };
    let mut params = defaults(sem_seg_head::kind());
    params.set("weights", ParamValue::Str(weights.clone()));
    let head = sem_seg_head::SemSegHeadNode::from_params(&params)?;
    let fusion = panoptic_fusion::PanopticFusion::from_params(&defaults(panoptic_fusion::kind()))?;
    let mut features = Value::new(PortKind::Features);
    for level in ["p2", "p3", "p4", "p5"] {
        features.insert(level, get(level)?);
    }
    let padded = get("padded_size")?.as_slice::<i64>()?.to_vec();
    let (ph, pw) = (padded[0] as usize, padded[1] as usize);
    let image = Value::new(PortKind::ModelImage)
        .with(
            "tensor",
            Tensor::from_vec(&[3, ph, pw], vec![0f32; 3 * ph * pw])?,
        )
        .with("image_size", get("image_size")?)
        .with("original_size", get("original_size")?);
    let n = get("scores")?.shape()[0];
    let boxes = Tensor::from_vec(&[n, 4], vec![0f32; 4 * n])?;
    let instances = Value::new(PortKind::Instances)
        .with("boxes", boxes)
        .with("scores", get("scores")?)
        .with("classes", get("classes")?)
        .with("masks", get("masks")?);
    let run = || -> Result<Value, Box<dyn std::error::Error>> {
        let semantic = head.run(&features, &image)?;
        Ok(fusion.run(&instances, &semantic)?)
    };
    let mut out = run()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        out = run()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let map = out.tensor("segments")?.as_slice::<i32>()?;
    println!(
        "{{\"median_ms\":{:.2},\"min_ms\":{:.2},\"threads\":{},\"segments\":{:?}}}",
        times[times.len() / 2],
        times[0],
        rayon::current_num_threads(),
        map
    );
    Ok(())
}
