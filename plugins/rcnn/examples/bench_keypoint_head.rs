//! Times `roi_keypoint_head`'s computation (RoIAlign, eight 3x3 convolutions of 512 channels,
//! the transposed convolution, 2x upsampling and `heatmaps_to_keypoints`) on FPN levels and
//! boxes written by `tests/reference/bench_keypoint_head.py`, which times torchvision's
//! keypoint branch on the same inputs and weights in the same run:
//!
//!     cargo build --release -p plugin-rcnn --example bench_keypoint_head
//!     target/release/examples/bench_keypoint_head WEIGHTS INPUTS [REPS]
//!
//! WEIGHTS: the keypoint head's state dict (`roi_heads.keypoint_*`); INPUTS: `p2..p5`
//! `[1, 256, H/s, W/s]`, `boxes` `[N, 4]` and `image_size` `[2]`. Prints one JSON line:
//! the median and minimum milliseconds, and the keypoints for the driver to compare.

use std::path::Path;
use std::time::Instant;

use kernels::weights::Weights;
use ndarray::Ix4;
use plugin_rcnn::keypoint_head::{KeypointHead, KeypointHeadConfig};

// The allocator is the library's own (`kernels::engine_allocator!` in plugin_rcnn); the
// engine's setting too: freed pages kept committed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    kernels::process::memory_policy();
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_keypoint_head WEIGHTS INPUTS [REPS]";
    let weights = Weights::load(Path::new(args.get(1).ok_or(usage)?))?;
    let inputs = Weights::load(Path::new(args.get(2).ok_or(usage)?))?;
    let reps: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let head = KeypointHead::from_weights(&weights, "roi_heads.", KeypointHeadConfig::default())?;
    let get = |name: &str| {
        inputs
            .get(name)
            .ok_or(format!("{name} missing from the inputs"))
    };
    let levels_owned = ["p2", "p3", "p4", "p5"]
        .iter()
        .map(|n| Ok(get(n)?.view::<f32>()?.into_dimensionality::<Ix4>()?))
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    let boxes: Vec<[f32; 4]> = get("boxes")?
        .as_slice::<f32>()?
        .chunks_exact(4)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect();
    let size = get("image_size")?.as_slice::<i64>()?.to_vec();
    let resized = (size[0] as usize, size[1] as usize);
    let mut kp = head.forward(&levels_owned, &boxes, resized)?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        kp = head.forward(&levels_owned, &boxes, resized)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{{\"boxes\":{},\"median_ms\":{:.2},\"min_ms\":{:.2},\"threads\":{},\"keypoints\":{:?},\"scores\":{:?}}}",
        boxes.len(),
        times[times.len() / 2],
        times[0],
        rayon::current_num_threads(),
        kp.xy,
        kp.scores
    );
    Ok(())
}
