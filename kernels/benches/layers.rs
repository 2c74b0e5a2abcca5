//! Benchmark of the CPU layers (not a test; no thresholds): `cargo bench -p kernels --bench layers`.
//!
//! Prints medians for sgemm (1024³ and 4096³, plus a backend comparison), every distinct
//! convolution shape of ResNet-50 at 224x224 batch 1 and the total over all 53 convolutions
//! (an estimate of a ResNet-50 forward pass without pooling/add/fc), and a few other layers.
//!
//! With `TORCH_TIMES=file.json` (written by `tests/reference/bench_layers_torch.py` in the
//! same session, `torch.set_num_threads(2)`), torch's times and the ratios torch/ours are
//! printed beside ours (ratio > 1: we are faster). `BENCH_QUICK=1` runs fewer repetitions.
//! `BENCH_JSON=out.json` also writes our times as JSON.

use std::collections::BTreeMap;
use std::time::Instant;

use kernels::layers::conv::{Conv2d, Conv2dParams, ConvTranspose2d, ConvTranspose2dParams};
use kernels::layers::gemm::{sgemm_with, Backend, MatMut, MatRef, Threading};
use kernels::layers::pool::{max_pool2d, Pool2dParams};
use kernels::layers::preprocess::RcnnTransform;
use kernels::layers::resize::{resize, ResizeMode};
use ndarray::{Array3, Array4};

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// Median wall time in milliseconds of `reps` runs after one warm-up.
fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

/// One ResNet-50 convolution: kernel, stride, in, out, input size, and how often it occurs.
#[derive(Clone, Copy)]
struct ConvShape {
    k: usize,
    s: usize,
    cin: usize,
    cout: usize,
    hw: usize,
}

impl ConvShape {
    fn key(&self) -> String {
        format!(
            "conv {}x{}/{} {}->{} @{}",
            self.k, self.k, self.s, self.cin, self.cout, self.hw
        )
    }
    fn macs(&self) -> f64 {
        let o = (self.hw + 2 * (self.k / 2) - self.k) / self.s + 1;
        (self.cin * self.cout * self.k * self.k * o * o) as f64
    }
}

/// The 53 convolutions of torchvision's ResNet-50 (v1.5: stride on the 3x3) at 224x224.
fn resnet50_convs() -> Vec<ConvShape> {
    let c = |k, s, cin, cout, hw| ConvShape {
        k,
        s,
        cin,
        cout,
        hw,
    };
    let mut v = vec![c(7, 2, 3, 64, 224)];
    let mut cin = 64;
    let mut hw = 56;
    for (blocks, width, stride) in [(3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)] {
        let out = width * 4;
        for b in 0..blocks {
            let s = if b == 0 { stride } else { 1 };
            v.push(c(1, 1, cin, width, hw));
            v.push(c(3, s, width, width, hw));
            let ohw = hw / s;
            v.push(c(1, 1, width, out, ohw));
            if b == 0 {
                v.push(c(1, s, cin, out, hw));
            }
            cin = out;
            hw = ohw;
        }
    }
    v
}

// The engine binary's allocator and setting (kernels::process), as in benches/ops.rs: with
// glibc's malloc every layer page-faulted its output in again. `BENCH_PURGE=1` keeps
// mimalloc's default purging.
kernels::engine_allocator!();

fn main() {
    if std::env::var_os("BENCH_PURGE").is_none() {
        kernels::process::memory_policy();
    }
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let reps = if quick { 3 } else { 9 };
    let torch: BTreeMap<String, f64> = std::env::var("TORCH_TIMES")
        .ok()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| serde_json::from_str::<BTreeMap<String, f64>>(&s).ok())
        .unwrap_or_default();
    let mut ours: BTreeMap<String, f64> = BTreeMap::new();
    // BENCH_ONLY=gemm|conv|mrcnn|other runs one section.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let want = |section: &str| only.is_empty() || only == section;
    println!(
        "rayon threads: {}{}",
        rayon::current_num_threads(),
        if torch.is_empty() {
            ""
        } else {
            "; torch times from TORCH_TIMES"
        }
    );
    let header = || {
        println!(
            "{:<34} {:>10} {:>9} {:>10} {:>9} {:>7}",
            "case", "ours ms", "GFLOP/s", "torch ms", "GFLOP/s", "torch/ours"
        )
    };
    let row = |ours: &mut BTreeMap<String, f64>, key: &str, ms: f64, flops: f64| {
        // A " xN" suffix (occurrence count) is shown but not part of the lookup key.
        let label = key;
        let key = key.split(" x").next().unwrap_or(key);
        ours.insert(key.to_string(), ms);
        let g = |ms: f64| {
            if flops > 0.0 {
                format!("{:.1}", flops / ms / 1e6)
            } else {
                "-".into()
            }
        };
        match torch.get(key) {
            Some(&t) => println!(
                "{label:<34} {ms:>10.3} {:>9} {t:>10.3} {:>9} {:>7.2}",
                g(ms),
                g(t),
                t / ms
            ),
            None => println!(
                "{label:<34} {ms:>10.3} {:>9} {:>10} {:>9} {:>7}",
                g(ms),
                "-",
                "-",
                "-"
            ),
        }
    };

    // --- GEMM -----------------------------------------------------------------------------
    if want("gemm") {
        println!("\n## sgemm (C = A·B, row-major f32)");
        header();
        let gemm_case = |n: usize, backend: Backend, threading: Threading, reps: usize| -> f64 {
            let a = rand_vec(n * n, 1);
            let b = rand_vec(n * n, 2);
            let mut c = vec![0f32; n * n];
            median_ms(reps, || {
                sgemm_with(
                    MatRef::row_major(&a, n, n, n).unwrap(),
                    MatRef::row_major(&b, n, n, n).unwrap(),
                    MatMut::row_major(&mut c, n, n, n).unwrap(),
                    false,
                    backend,
                    threading,
                )
                .unwrap()
            })
        };
        for (n, r) in [(1024usize, reps * 2), (4096, if quick { 2 } else { 3 })] {
            let ms = gemm_case(n, Backend::Gemm, Threading::Auto, r);
            row(
                &mut ours,
                &format!("sgemm {n}^3"),
                ms,
                2.0 * (n * n * n) as f64,
            );
        }
        println!("backend comparison (not in the torch table):");
        for n in [1024usize, 2048] {
            let r = if n == 1024 { reps } else { 3 };
            for (name, b, t) in [
                ("gemm crate, all threads", Backend::Gemm, Threading::Auto),
                ("gemm crate, 1 thread", Backend::Gemm, Threading::Single),
                (
                    "matrixmultiply, 1 thread",
                    Backend::MatrixMultiply,
                    Threading::Single,
                ),
            ] {
                let ms = gemm_case(n, b, t, r);
                println!(
                    "  {n}^3 {name:<26} {ms:>9.2} ms {:>7.1} GFLOP/s",
                    2.0 * (n * n * n) as f64 / ms / 1e6
                );
            }
        }
    }

    // --- ResNet-50 convolutions ---------------------------------------------------------------
    if want("conv") {
        println!("\n## ResNet-50 convolutions, 224x224 batch 1, NCHW f32, no bias");
        header();
        let convs = resnet50_convs();
        assert_eq!(convs.len(), 53);
        let mut per_key: BTreeMap<String, (ConvShape, usize)> = BTreeMap::new();
        let mut order = Vec::new();
        for c in &convs {
            let e = per_key.entry(c.key()).or_insert_with(|| {
                order.push(c.key());
                (*c, 0)
            });
            e.1 += 1;
        }
        let mut total = 0.0;
        let mut total_torch = 0.0;
        let mut total_flops = 0.0;
        for key in &order {
            let (c, count) = per_key[key];
            let w = Array4::from_shape_vec(
                (c.cout, c.cin, c.k, c.k),
                rand_vec(c.cout * c.cin * c.k * c.k, 3),
            )
            .unwrap();
            let conv = Conv2d::new(
                w.view(),
                None,
                Conv2dParams::default().stride(c.s).padding(c.k / 2),
            )
            .unwrap();
            let x =
                Array4::from_shape_vec((1, c.cin, c.hw, c.hw), rand_vec(c.cin * c.hw * c.hw, 4))
                    .unwrap();
            let ms = median_ms(reps, || {
                std::hint::black_box(conv.forward(x.view()).unwrap());
            });
            row(&mut ours, &format!("{key} x{count}"), ms, 2.0 * c.macs());
            total += ms * count as f64;
            total_flops += 2.0 * c.macs() * count as f64;
            total_torch += torch.get(key).copied().unwrap_or(f64::NAN) * count as f64;
        }
        println!(
            "{:<34} {total:>10.3} {:>9.1} {total_torch:>10.3} {:>9.1} {:>7.2}",
            "all 53 convs (sum)",
            total_flops / total / 1e6,
            total_flops / total_torch / 1e6,
            total_torch / total
        );
        ours.insert("resnet50 convs total".into(), total);
        if let Some(t) = torch.get("resnet50 forward") {
            println!("torch resnet50 full forward (NCHW): {t:.2} ms");
        }
        if let Some(t) = torch.get("resnet50 forward channels_last") {
            println!("torch resnet50 full forward (channels_last): {t:.2} ms");
        }
    }

    // --- Mask R-CNN's 3x3 convolutions (Winograd) ---------------------------------------------
    if want("mrcnn") {
        println!(
            "\n## 3x3 stride-1 convolutions of Mask R-CNN R50-FPN at 800x1216, bias, NCHW f32"
        );
        header();
        // As MRCNN_CONVS in tests/reference/bench_layers_torch.py.
        for (n, c, h, w) in [
            (1usize, 64usize, 200usize, 304usize),
            (1, 128, 100, 152),
            (1, 256, 50, 76),
            (1, 512, 25, 38),
            (1, 256, 200, 304),
            (1, 256, 100, 152),
            (100, 256, 14, 14),
        ] {
            let wt = Array4::from_shape_vec((c, c, 3, 3), rand_vec(c * c * 9, 9)).unwrap();
            let b = ndarray::Array1::from_vec(rand_vec(c, 10));
            let conv = Conv2d::new(
                wt.view(),
                Some(b.view()),
                Conv2dParams::default().padding(1),
            )
            .unwrap();
            let x = Array4::from_shape_vec((n, c, h, w), rand_vec(n * c * h * w, 11)).unwrap();
            let ms = median_ms(reps.min(5), || {
                std::hint::black_box(conv.forward(x.view()).unwrap());
            });
            let batch = if n > 1 {
                format!("{n}x ")
            } else {
                String::new()
            };
            row(
                &mut ours,
                &format!("conv 3x3 {batch}{c}@{h}x{w}"),
                ms,
                2.0 * (n * c * c * 9 * h * w) as f64,
            );
        }
    }

    // --- Other layers ---------------------------------------------------------------------------
    if want("other") {
        println!("\n## other layers");
        header();
        let x = Array4::from_shape_vec((1, 64, 112, 112), rand_vec(64 * 112 * 112, 5)).unwrap();
        let ms = median_ms(reps, || {
            std::hint::black_box(
                max_pool2d(x.view(), Pool2dParams::new(3).stride(2).padding(1)).unwrap(),
            );
        });
        row(&mut ours, "maxpool 3x3/2 64@112", ms, 0.0);
        let x = Array4::from_shape_vec((1, 256, 100, 152), rand_vec(256 * 100 * 152, 6)).unwrap();
        let ms = median_ms(reps, || {
            std::hint::black_box(resize(x.view(), (200, 304), ResizeMode::Nearest).unwrap());
        });
        row(&mut ours, "nearest 2x 256@100x152", ms, 0.0);
        let ms = median_ms(reps, || {
            std::hint::black_box(
                resize(
                    x.view(),
                    (200, 304),
                    ResizeMode::Bilinear {
                        align_corners: false,
                    },
                )
                .unwrap(),
            );
        });
        row(&mut ours, "bilinear 2x 256@100x152", ms, 0.0);
        let wt = Array4::from_shape_vec((256, 256, 2, 2), rand_vec(256 * 256 * 4, 7)).unwrap();
        let deconv =
            ConvTranspose2d::new(wt.view(), None, ConvTranspose2dParams::default().stride(2))
                .unwrap();
        let x = Array4::from_shape_vec((100, 256, 14, 14), rand_vec(100 * 256 * 196, 8)).unwrap();
        let ms = median_ms(reps.min(5), || {
            std::hint::black_box(deconv.forward(x.view()).unwrap());
        });
        row(
            &mut ours,
            "convT 2x2/2 256->256 100x@14",
            ms,
            2.0 * 100.0 * 256.0 * 256.0 * 4.0 * 196.0,
        );
        let img = Array3::from_shape_vec(
            (480, 640, 3),
            (0..480 * 640 * 3).map(|i| (i * 7 % 251) as u8).collect(),
        )
        .unwrap();
        let t = RcnnTransform::default();
        let ms = median_ms(reps, || {
            std::hint::black_box(t.apply(img.view()).unwrap());
        });
        row(&mut ours, "rcnn preprocess 480x640->800x1088", ms, 0.0);
    }

    if let Ok(p) = std::env::var("BENCH_JSON") {
        if let Ok(s) = serde_json::to_string_pretty(&ours) {
            let _ = std::fs::write(p, s);
        }
    }
}
