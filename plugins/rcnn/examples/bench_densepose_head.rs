//! Times `roi_densepose_head`'s computation (the semantic-FPN decoder, RoIAlign 28x28, eight
//! 3x3 convolutions of 512 channels, the chart predictor, and each box's part labels and U, V)
//! on FPN levels and boxes written by `tests/reference/bench_densepose_head.py`, which times
//! Detectron2's DensePose head on the same inputs and weights in the same run:
//!
//!     cargo build --release -p plugin-rcnn --example bench_densepose_head
//!     target/release/examples/bench_densepose_head WEIGHTS INPUTS [REPS]
//!
//! WEIGHTS: the head's state dict (`roi_heads.decoder.*`, `roi_heads.densepose_*`); INPUTS:
//! `p2..p5` `[1, 256, H/s, W/s]`, `boxes` `[N, 4]` and `image_size` `[2]` (the boxes are in
//! original pixels: no resize). Prints one JSON line: the median and minimum milliseconds, and
//! the labels of each box for the driver to compare.

use std::path::Path;
use std::time::Instant;

use kernels::weights::Weights;
use ndarray::Ix4;
use plugin_rcnn::densepose_head::{DensePoseHead, DensePoseHeadConfig};
use vision_common::ImageSizes;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    kernels::process::memory_policy();
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_densepose_head WEIGHTS INPUTS [REPS]";
    let weights = Weights::load(Path::new(args.get(1).ok_or(usage)?))?;
    let inputs = Weights::load(Path::new(args.get(2).ok_or(usage)?))?;
    let reps: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let levels: Vec<String> = ["p2", "p3", "p4", "p5"].map(String::from).to_vec();
    let head = DensePoseHead::from_weights(
        &weights,
        "roi_heads.",
        &levels,
        DensePoseHeadConfig::default(),
    )?;
    let get = |name: &str| {
        inputs
            .get(name)
            .ok_or(format!("{name} missing from the inputs"))
    };
    let views = levels
        .iter()
        .map(|n| Ok(get(n)?.view::<f32>()?.into_dimensionality::<Ix4>()?))
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    let boxes: Vec<[f32; 4]> = get("boxes")?
        .as_slice::<f32>()?
        .chunks_exact(4)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect();
    let size = get("image_size")?.as_slice::<i64>()?.to_vec();
    let hw = (size[0] as usize, size[1] as usize);
    let sizes = ImageSizes {
        padded: hw,
        resized: hw,
        original: hw,
    };
    let mut results = head.forward(&views, &boxes, &sizes)?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        results = head.forward(&views, &boxes, &sizes)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let labels: Vec<Vec<u8>> = results
        .iter()
        .map(|r| r.labels.iter().copied().collect())
        .collect();
    let boxes_xywh: Vec<[i64; 4]> = results.iter().map(|r| r.box_xywh).collect();
    println!(
        "{{\"boxes\":{:?},\"median_ms\":{:.2},\"min_ms\":{:.2},\"threads\":{},\"labels\":{:?}}}",
        boxes_xywh,
        times[times.len() / 2],
        times[0],
        rayon::current_num_threads(),
        labels
    );
    Ok(())
}
