//! The NHWC convolutions of ResNet-50's body at 224x224, one by one: the time of each and its
//! rate in multiply-adds per second, to compare with the CPU's peak (its FMA units' rate).
//!
//!     cargo run --release -p kernels --example bench_conv_nhwc [reps] [filter]
//!
//! Runs on the rayon pool (`RAYON_NUM_THREADS`); prints the median of `reps` runs (default 30)
//! after a warm-up. `filter` keeps the layers whose name contains it. `COLD=1` evicts the
//! caches before each run. `INPUT=550` gives the layers of another input size (YOLACT's),
//! each map `ceil(INPUT / stride)` pixels wide.

use std::time::Instant;

use kernels::layers::conv_nhwc::{conv2d_nhwc_packed, conv2d_nhwc_plan, PackedFilter};
use kernels::layers::{NhwcConvGeom, Padding};
use ndarray::Array4;

/// (name, input size, channels in, channels out, kernel, stride): ResNet-50 v1.5 at 224.
const LAYERS: &[(&str, usize, usize, usize, usize, usize)] = &[
    ("stem 7x7/2 3->64 @224", 224, 3, 64, 7, 2),
    ("1x1 64->64 @56", 56, 64, 64, 1, 1),
    ("3x3 64->64 @56", 56, 64, 64, 3, 1),
    ("1x1 64->256 @56", 56, 64, 256, 1, 1),
    ("1x1 256->64 @56", 56, 256, 64, 1, 1),
    ("1x1 256->128 @56", 56, 256, 128, 1, 1),
    ("3x3/2 128->128 @56", 56, 128, 128, 3, 2),
    ("1x1 128->512 @28", 28, 128, 512, 1, 1),
    ("1x1 512->128 @28", 28, 512, 128, 1, 1),
    ("3x3 128->128 @28", 28, 128, 128, 3, 1),
    ("3x3/2 256->256 @28", 28, 256, 256, 3, 2),
    ("1x1 256->1024 @14", 14, 256, 1024, 1, 1),
    ("1x1 1024->256 @14", 14, 1024, 256, 1, 1),
    ("3x3 256->256 @14", 14, 256, 256, 3, 1),
    ("1x1/2 512->1024 @28", 28, 512, 1024, 1, 2),
    ("1x1 1024->512 @14", 14, 1024, 512, 1, 1),
    ("3x3/2 512->512 @14", 14, 512, 512, 3, 2),
    ("1x1 512->2048 @7", 7, 512, 2048, 1, 1),
    ("1x1 2048->512 @7", 7, 2048, 512, 1, 1),
    ("3x3 512->512 @7", 7, 512, 512, 3, 1),
];

fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let reps: usize = args.get(1).map_or(Ok(30), |s| s.parse())?;
    let filter = args.get(2).cloned().unwrap_or_default();
    println!("{} threads, median of {reps}", rayon::current_num_threads());
    // `COLD=1`: each run starts with the layer's data out of the caches (a pass over 256 MB
    // between runs), as in a network, whose 100 MB of filters do not stay in cache.
    let mut flush = std::env::var("COLD")
        .is_ok_and(|v| v == "1")
        .then(|| vec![0f32; 64 << 20]);
    let mut total = 0.0;
    let input: usize = std::env::var("INPUT").map_or(Ok(224), |v| v.parse())?;
    for &(name, size, c, co, k, stride) in LAYERS {
        if !name.contains(&filter) {
            continue;
        }
        // The map of the same stride at `input`.
        let size = input.div_ceil(224 / size);
        let w = Array4::from_shape_vec((k, k, c, co), values(k * k * c * co, 7))?;
        let bias = values(co, 3);
        let f = PackedFilter::new(w.view(), Some(&bias))?;
        let pad = (k - 1) / 2;
        let geom = NhwcConvGeom {
            strides: (stride, stride),
            dilations: (1, 1),
            padding: Padding::Explicit([pad; 4]),
        };
        let plan = conv2d_nhwc_plan([1, size, size, c], &f, geom)?;
        let x = values(size * size * c, 5);
        let mut out = vec![0f32; plan.out.iter().product()];
        let mut scratch = vec![0f32; plan.scratch];
        let run = kernels::process::in_pool(|| {
            let mut times = Vec::with_capacity(reps);
            for r in 0..=reps {
                if let Some(buf) = flush.as_mut() {
                    // Evicts the filter and the image from every cache, as in a network.
                    buf.iter_mut().for_each(|v| *v += 1.0);
                    std::hint::black_box(&buf);
                }
                let t = Instant::now();
                conv2d_nhwc_packed(&x, &f, geom, &plan, &mut out, &mut scratch, &|_, _| {})?;
                if r > 0 {
                    times.push(t.elapsed().as_secs_f64());
                }
            }
            times.sort_by(f64::total_cmp);
            Ok::<_, kernels::layers::LayerError>(times[times.len() / 2])
        })?;
        let [_, oh, ow, _] = plan.out;
        let macs = (oh * ow * k * k * c * co) as f64;
        total += run;
        let name = name.split(" @").next().unwrap_or(name);
        println!(
            "{name:24} @{size:<4} {:8.3} ms  {:6.1} GMAC/s",
            run * 1e3,
            macs / run / 1e9
        );
    }
    println!("sum of medians {:.3} ms", total * 1e3);
    Ok(())
}
