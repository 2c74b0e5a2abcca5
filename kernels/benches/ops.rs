//! Times the hot vision ops on the shapes of `shared/reference/peer-timings.md`.
//!
//!     cargo bench -p kernels --bench ops
//!     python3 tests/reference/bench_ops_torchvision.py --out /tmp/torch_ops.json
//!     TORCH_TIMES=/tmp/torch_ops.json cargo bench -p kernels --bench ops
//!
//! Prints one row per case: the median of repeated runs (after a warm-up) in milliseconds,
//! and, when `TORCH_TIMES` names the JSON written by `bench_ops_torchvision.py` (run in the
//! same session: the machines are noisy, compare ratios measured together), torchvision's
//! median and the speed-up. Boxes and scores come from the same seeded generator as the
//! Python script (SplitMix64), so both sides see identical inputs; feature values differ
//! (they do not affect the time). `BENCH_FILTER=substring` runs only matching cases;
//! `BENCH_REPS=n` fixes the number of timed runs. Allocation: see `GLOBAL` below.
//!
//! `BENCH_DEVICE=cuda` times the GPU entry points (`kernels::cuda::ops`) on the same inputs
//! instead, on CUDA device 0, against `bench_ops_torchvision.py --device cuda`. Each GPU row
//! has two times: the whole call (host data in, host data out: copies, host work such as
//! NMS's greedy pass, launches) and the device time alone (CUDA events around each kernel and
//! cuBLAS product). torchvision's time is for inputs already on the device, synchronised
//! after each call.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use kernels::cuda::{ops as gpu_ops, Executor, Gpu};
use kernels::ops::boxes::{box_iou, BoxCoder};
use kernels::ops::heatmap::extract_peaks;
use kernels::ops::nms::{batched_nms, nms};
use kernels::ops::paste_masks::{paste_masks_in_image, paste_masks_into, paste_masks_regions};
use kernels::ops::poolers::MultiScaleRoIAlign;
use kernels::ops::roi_align::{
    roi_align, roi_align_nhwc, roi_align_with, to_channels_last, RoiAlignParams, RoiAlignWorkspace,
};
use kernels::ops::yolact::{assemble_masks, fast_nms, FastNmsConfig};
use kernels::ops::AnchorGenerator;
use ndarray::{Array, Array2, Array3, Array4};

/// SplitMix64, mirrored in bench_ops_torchvision.py.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1), exactly representable (24 bits).
    fn u(&mut self) -> f64 {
        (self.next_u64() >> 40) as f64 / 16_777_216.0
    }
}

const IMG_H: f64 = 800.0;
const IMG_W: f64 = 1216.0;

/// Boxes in an 800x1216 image, sides 16..512, and scores.
fn random_boxes(n: usize, seed: u64) -> (Vec<[f32; 4]>, Vec<f32>) {
    let mut r = Rng(seed);
    let mut boxes = Vec::with_capacity(n);
    let mut scores = Vec::with_capacity(n);
    for _ in 0..n {
        let w = 16.0 + 496.0 * r.u();
        let h = 16.0 + 496.0 * r.u();
        let x1 = (IMG_W - w) * r.u();
        let y1 = (IMG_H - h) * r.u();
        boxes.push([x1 as f32, y1 as f32, (x1 + w) as f32, (y1 + h) as f32]);
        scores.push(r.u() as f32);
    }
    (boxes, scores)
}

/// Boxes around 50 centres (closer to real detections), and scores.
fn clustered_boxes(n: usize, seed: u64) -> (Vec<[f32; 4]>, Vec<f32>) {
    let mut r = Rng(seed);
    let centres: Vec<(f64, f64)> = (0..50).map(|_| (IMG_W * r.u(), IMG_H * r.u())).collect();
    let mut boxes = Vec::with_capacity(n);
    let mut scores = Vec::with_capacity(n);
    for k in 0..n {
        let (cx, cy) = centres[k % 50];
        let w = 40.0 + 80.0 * r.u();
        let h = 40.0 + 80.0 * r.u();
        let x = cx + 16.0 * (r.u() - 0.5);
        let y = cy + 16.0 * (r.u() - 0.5);
        boxes.push([
            (x - w / 2.0) as f32,
            (y - h / 2.0) as f32,
            (x + w / 2.0) as f32,
            (y + h / 2.0) as f32,
        ]);
        scores.push(r.u() as f32);
    }
    (boxes, scores)
}

fn classes(n: usize, seed: u64, num: usize) -> Vec<i64> {
    let mut r = Rng(seed);
    (0..n).map(|_| (r.u() * num as f64) as i64).collect()
}

fn feature(c: usize, h: usize, w: usize, seed: u64) -> Array4<f32> {
    let mut r = Rng(seed);
    let v: Vec<f32> = (0..c * h * w).map(|_| (r.u() * 2.0 - 1.0) as f32).collect();
    Array::from_shape_vec((1, c, h, w), v).expect("shape")
}

struct Bench {
    torch: HashMap<String, f64>,
    filter: Option<String>,
    /// `BENCH_REPS=n`: exactly n timed runs per case.
    reps: Option<usize>,
    /// `BENCH_DEVICE=cuda`: the device whose entry points [`Bench::run_gpu`] times; the CPU
    /// cases are skipped.
    gpu: Option<Gpu>,
}

impl Bench {
    fn selected(&self, name: &str) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| name.contains(f.as_str()))
    }

    /// Whether the timed loop goes on after `done` runs: at least 3, at most 30, about 2 s.
    fn more(&self, done: usize, start: Instant) -> bool {
        match self.reps {
            Some(n) => done < n,
            None => done < 3 || (done < 30 && start.elapsed() < Duration::from_secs(2)),
        }
    }

    /// Median of repeated runs of a CPU case (skipped under `BENCH_DEVICE=cuda`).
    fn run<T>(&mut self, name: &str, shape: &str, mut f: impl FnMut() -> T) {
        if self.gpu.is_some() || !self.selected(name) {
            return;
        }
        black_box(f()); // warm-up
        let mut times = Vec::new();
        let start = Instant::now();
        while self.more(times.len(), start) {
            let t = Instant::now();
            black_box(f());
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        if times.is_empty() {
            return;
        }
        self.print_row(name, shape, median(&mut times), times.len());
    }

    /// Medians of the whole call and of its device time, for a GPU case (only under
    /// `BENCH_DEVICE=cuda`). A failing call is reported and the case skipped.
    fn run_gpu<T, E: std::fmt::Display>(
        &mut self,
        name: &str,
        shape: &str,
        mut f: impl FnMut(&mut Gpu) -> Result<T, E>,
    ) {
        let Some(mut gpu) = self.gpu.take() else {
            return;
        };
        if self.selected(name) {
            let mut whole = Vec::new();
            let mut device = Vec::new();
            // The warm-up also compiles and loads the kernel's module.
            match f(&mut gpu) {
                Err(e) => println!("| {name:<22} | failed on the GPU: {e} |"),
                Ok(_) => {
                    gpu.take_device_ms();
                    let start = Instant::now();
                    while self.more(whole.len(), start) {
                        let t = Instant::now();
                        let r = black_box(f(&mut gpu));
                        whole.push(t.elapsed().as_secs_f64() * 1e3);
                        device.push(gpu.take_device_ms());
                        if let Err(e) = r {
                            println!("| {name:<22} | failed on the GPU: {e} |");
                            whole.clear();
                            break;
                        }
                    }
                }
            }
            if !whole.is_empty() {
                let (w, d) = (median(&mut whole), median(&mut device));
                let t = self.torch.get(name).copied();
                let cell = |v: Option<f64>, digits: usize| {
                    v.map_or("-".to_string(), |v| format!("{v:.digits$}"))
                };
                let speedup = |v: Option<f64>, digits: usize| {
                    v.map_or("-".to_string(), |v| format!("{v:.digits$}x"))
                };
                println!(
                    "| {name:<22} | {shape:<44} | {w:>10.3} | {d:>10.3} | {:>10} | {:>9} | {:>9} | {:>4} |",
                    cell(t, 3),
                    speedup(t.map(|t| t / w), 2),
                    speedup(t.map(|t| t / d), 1),
                    whole.len()
                );
            }
        }
        self.gpu = Some(gpu);
    }

    fn print_row(&self, name: &str, shape: &str, ours: f64, reps: usize) {
        match self.torch.get(name) {
            Some(&t) => println!(
                "| {name:<22} | {shape:<44} | {ours:>10.3} | {t:>10.3} | {:>7.1}x | {reps:>4} |",
                t / ours
            ),
            None => println!(
                "| {name:<22} | {shape:<44} | {ours:>10.3} | {:>10} | {:>8} | {reps:>4} |",
                "-", "-"
            ),
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

// The engine binary's allocator and setting (kernels::process): mimalloc with freed pages
// kept committed, so that an op's output buffer is not page-faulted in on every call, as it
// is not in a running engine. `BENCH_PURGE=1` keeps mimalloc's default purging instead.
kernels::engine_allocator!();

fn main() {
    if std::env::var_os("BENCH_PURGE").is_none() {
        kernels::process::memory_policy();
    }
    let torch: HashMap<String, f64> = std::env::var("TORCH_TIMES")
        .ok()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v.get("times").cloned())
        .and_then(|t| t.as_object().cloned())
        .map(|o| {
            o.into_iter()
                .filter_map(|(k, v)| v.as_f64().map(|x| (k, x)))
                .collect()
        })
        .unwrap_or_default();
    let gpu = match std::env::var("BENCH_DEVICE").as_deref() {
        Ok("cuda") => match Gpu::new(0) {
            Ok(mut g) => {
                g.set_timing(true);
                Some(g)
            }
            Err(e) => {
                eprintln!("BENCH_DEVICE=cuda: {e}");
                std::process::exit(1);
            }
        },
        Ok("cpu") | Err(_) => None,
        Ok(other) => {
            eprintln!("BENCH_DEVICE must be cpu or cuda, not {other:?}");
            std::process::exit(2);
        }
    };
    let mut b = Bench {
        torch,
        filter: std::env::var("BENCH_FILTER").ok(),
        reps: std::env::var("BENCH_REPS")
            .ok()
            .and_then(|r| r.parse().ok()),
        gpu,
    };
    let torch_note = if b.torch.is_empty() {
        " (set TORCH_TIMES for torchvision's times)"
    } else {
        ""
    };
    let dash = |n: usize| "-".repeat(n);
    match &b.gpu {
        Some(g) => {
            println!("kernels ops bench on {}{torch_note}", g.describe());
            println!(
                "| {:<22} | {:<44} | {:>10} | {:>10} | {:>10} | {:>9} | {:>9} | {:>4} |",
                "op", "shape", "call ms", "device ms", "torch ms", "vs call", "vs device", "reps"
            );
            println!(
                "|{}|{}|{}|{}|{}|{}|{}|{}|",
                dash(24),
                dash(46),
                dash(12),
                dash(12),
                dash(12),
                dash(11),
                dash(11),
                dash(6)
            );
        }
        None => {
            println!(
                "kernels ops bench: {} rayon threads{torch_note}",
                rayon::current_num_threads()
            );
            println!(
                "| {:<22} | {:<44} | {:>10} | {:>10} | {:>8} | {:>4} |",
                "op", "shape", "ours ms", "torch ms", "speed-up", "reps"
            );
            println!(
                "|{}|{}|{}|{}|{}|{}|",
                dash(24),
                dash(46),
                dash(12),
                dash(12),
                dash(10),
                dash(6)
            );
        }
    }

    // ---- RoIAlign on one stride-4 map.
    let p2 = feature(256, 200, 304, 1);
    let (boxes1000, scores1000) = random_boxes(1000, 7);
    let rois: Vec<[f32; 5]> = boxes1000
        .iter()
        .map(|b| [0.0, b[0], b[1], b[2], b[3]])
        .collect();
    for out in [7usize, 14] {
        let p = RoiAlignParams {
            pooled_height: out,
            pooled_width: out,
            spatial_scale: 0.25,
            sampling_ratio: 2,
            aligned: true,
            plus_one_end: false,
        };
        b.run(
            &format!("roi_align_{out}"),
            &format!("1000 boxes, 256x200x304 -> 256x{out}x{out}"),
            || roi_align(p2.view(), &rois, &p).expect("roi_align"),
        );
        b.run_gpu(
            &format!("roi_align_{out}"),
            &format!("1000 boxes, 256x200x304 -> 256x{out}x{out}"),
            |g| gpu_ops::roi_align(g, p2.view(), &rois, &p),
        );
        let mut ws = RoiAlignWorkspace::new();
        b.run(
            &format!("roi_align_{out}_ws"),
            "same, workspace reused across calls",
            || roi_align_with(&mut ws, p2.view(), &rois, &p).expect("roi_align"),
        );
        let nhwc = to_channels_last(p2.view());
        b.run(
            &format!("roi_align_{out}_nhwc"),
            "same, map already channels-last",
            || roi_align_nhwc(nhwc.view(), &rois, &p).expect("roi_align_nhwc"),
        );
    }
    b.run("to_channels_last", "256x200x304 NCHW -> NHWC", || {
        to_channels_last(p2.view())
    });

    // ---- MultiScaleRoIAlign over P2..P5.
    let levels = [
        p2.clone(),
        feature(256, 100, 152, 2),
        feature(256, 50, 76, 3),
        feature(256, 25, 38, 4),
    ];
    let views: Vec<_> = levels.iter().map(|l| l.view()).collect();
    let shapes = [(800usize, 1216usize)];
    let m7 = MultiScaleRoIAlign::new(7, 2);
    b.run("multiscale_1000x7", "P2-P5, 1000 boxes -> 256x7x7", || {
        m7.forward(&views, &[&boxes1000], &shapes).expect("forward")
    });
    let m14 = MultiScaleRoIAlign::new(14, 2);
    b.run("multiscale_100x14", "P2-P5, 100 boxes -> 256x14x14", || {
        m14.forward(&views, &[&boxes1000[..100]], &shapes)
            .expect("forward")
    });
    let mut ws = RoiAlignWorkspace::new();
    b.run(
        "multiscale_100x14_ws",
        "same as multiscale_100x14, workspace reused",
        || {
            m14.forward_with(&mut ws, &views, &[&boxes1000[..100]], &shapes)
                .expect("forward")
        },
    );
    b.run(
        "multiscale_1000x7_ws",
        "same as multiscale_1000x7, workspace reused",
        || {
            m7.forward_with(&mut ws, &views, &[&boxes1000], &shapes)
                .expect("forward")
        },
    );
    drop(levels);
    drop(p2);

    // ---- NMS.
    let (boxes5000, scores5000) = random_boxes(5000, 11);
    let (cl1000, cls1000) = clustered_boxes(1000, 13);
    let (cl5000, cls5000) = clustered_boxes(5000, 17);
    let nms_cases = [
        (
            "nms_1000",
            "1000 random boxes, IoU 0.7",
            &boxes1000,
            &scores1000,
        ),
        (
            "nms_5000",
            "5000 random boxes, IoU 0.7",
            &boxes5000,
            &scores5000,
        ),
        (
            "nms_clustered_1000",
            "1000 clustered boxes, IoU 0.7",
            &cl1000,
            &cls1000,
        ),
        (
            "nms_clustered_5000",
            "5000 clustered boxes, IoU 0.7",
            &cl5000,
            &cls5000,
        ),
    ];
    for (name, shape, boxes, scores) in nms_cases {
        b.run(name, shape, || nms(boxes, scores, 0.7).expect("nms"));
        b.run_gpu(name, shape, |g| gpu_ops::nms(g, boxes, scores, 0.7));
    }
    let idx1000 = classes(1000, 19, 80);
    let idx5000 = classes(5000, 23, 80);
    let batched_cases = [
        (
            "batched_nms_1000",
            "1000 boxes, 80 classes, IoU 0.5 (trick)",
            &boxes1000,
            &scores1000,
            &idx1000,
        ),
        (
            "batched_nms_5000",
            "5000 boxes, 80 classes, IoU 0.5 (per class)",
            &boxes5000,
            &scores5000,
            &idx5000,
        ),
    ];
    for (name, shape, boxes, scores, idxs) in batched_cases {
        b.run(name, shape, || {
            batched_nms(boxes, scores, idxs, 0.5).expect("batched_nms")
        });
        b.run_gpu(name, shape, |g| {
            gpu_ops::batched_nms(g, boxes, scores, idxs, 0.5)
        });
    }

    // ---- Box coding, IoU, anchors.
    let mut r = Rng(29);
    let rel = Array2::from_shape_fn((1000, 91 * 4), |_| (r.u() * 2.0 - 1.0) as f32);
    let coder = BoxCoder::new([10.0, 10.0, 5.0, 5.0]);
    b.run("box_decode", "1000 proposals x 91 classes", || {
        coder.decode(rel.view(), &boxes1000).expect("decode")
    });
    b.run_gpu("box_decode", "1000 proposals x 91 classes", |g| {
        gpu_ops::box_decode(g, &coder, rel.view(), &boxes1000)
    });
    b.run("box_iou", "1000 x 1000", || box_iou(&boxes1000, &boxes1000));
    let gen = AnchorGenerator::rcnn_fpn_default();
    let grids = [(200, 304), (100, 152), (50, 76), (25, 38), (13, 19)];
    b.run("anchors", "800x1216, 5 levels x 3 anchors", || {
        gen.generate((800, 1216), &grids).expect("anchors")
    });

    // ---- Mask pasting.
    let mut r = Rng(31);
    let masks = Array3::from_shape_fn((100, 28, 28), |_| r.u() as f32);
    b.run("paste_masks_100", "100 x 28x28 -> 800x1216", || {
        paste_masks_in_image(masks.view(), &boxes1000[..100], (800, 1216), 1).expect("paste")
    });
    b.run_gpu("paste_masks_100", "100 x 28x28 -> 800x1216", |g| {
        gpu_ops::paste_masks_in_image(g, masks.view(), &boxes1000[..100], (800, 1216), 1)
    });
    let mut out = Array3::<f32>::zeros((100, 800, 1216));
    b.run(
        "paste_masks_100_into",
        "same, into a reused output buffer",
        || paste_masks_into(masks.view(), &boxes1000[..100], 1, out.view_mut()).expect("paste"),
    );
    drop(out);
    b.run(
        "paste_masks_100_regions",
        "same, visible regions only (no dense output)",
        || paste_masks_regions(masks.view(), &boxes1000[..100], (800, 1216), 1).expect("paste"),
    );

    // ---- YOLACT.
    let mut r = Rng(37);
    let proto = Array3::from_shape_fn((138, 138, 32), |_| r.u() as f32);
    let coeffs = Array2::from_shape_fn((100, 32), |_| (r.u() * 2.0 - 1.0) as f32);
    let rel_boxes: Vec<[f32; 4]> = boxes1000[..100]
        .iter()
        .map(|b| [b[0] / 1216.0, b[1] / 800.0, b[2] / 1216.0, b[3] / 800.0])
        .collect();
    b.run(
        "yolact_assemble",
        "P 138x138x32, C 100x32, sigmoid + crop",
        || assemble_masks(proto.view(), coeffs.view(), &rel_boxes, true).expect("assemble"),
    );
    b.run_gpu(
        "yolact_assemble",
        "P 138x138x32, C 100x32, sigmoid + crop",
        |g| gpu_ops::assemble_masks(g, proto.view(), coeffs.view(), &rel_boxes, true),
    );
    let mut r = Rng(41);
    let yscores = Array2::from_shape_fn((80, 1000), |_| r.u() as f32);
    let ybox: Vec<[f32; 4]> = boxes1000
        .iter()
        .map(|b| [b[0] / 1216.0, b[1] / 800.0, b[2] / 1216.0, b[3] / 800.0])
        .collect();
    b.run(
        "yolact_fast_nms",
        "80 classes x 1000 boxes, top_k 200",
        || fast_nms(&ybox, yscores.view(), &FastNmsConfig::default()).expect("fast_nms"),
    );

    // ---- Heatmap peaks.
    let mut r = Rng(43);
    let heat = Array3::from_shape_fn((80, 128, 128), |_| r.u() as f32);
    b.run(
        "heatmap_peaks",
        "80x128x128, 3x3 max-pool + top-100",
        || extract_peaks(heat.view(), 100).expect("peaks"),
    );
    b.run_gpu("heatmap_peaks", "80x128x128, 3x3 max-pool + top-100", |g| {
        gpu_ops::extract_peaks(g, heat.view(), 100)
    });
}
