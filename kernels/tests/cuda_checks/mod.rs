//! Comparisons of the GPU entry points (`kernels::cuda::ops`) with the CPU ops on random and
//! edge-case inputs, for any [`Executor`]. Shared by the CPU-emulation tests
//! (`kernels/cuda_emu/tests/vs_cpu.rs`) and the real-GPU tests (`kernels/tests/cuda_gpu.rs`).
//!
//! Tolerance as in the CPU tests: `|a - b| <= 1e-5 · max(1, |b|)` for `f32` (NaN only
//! against NaN); NMS indices must be identical.

#![allow(dead_code)]

use kernels::cuda::{ops as gpu, Executor};
use kernels::layers::preprocess::{to_chw_normalized, RcnnTransform, IMAGENET_MEAN, IMAGENET_STD};
use kernels::ops::roi_align::RoiAlignParams;
use kernels::ops::{self, BoxCoder};
use ndarray::{Array2, Array3, Array4};

/// A small deterministic generator (no dependency).
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Lcg {
        Lcg(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1))
    }
    /// Uniform in [0, 1).
    pub fn f(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32) / (1u64 << 24) as f32
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.f()
    }
    pub fn below(&mut self, n: usize) -> usize {
        ((self.f() * n as f32) as usize).min(n.saturating_sub(1))
    }
}

/// Asserts `|a - b| <= 1e-5 · max(1, |b|)` element-wise (NaN only against NaN).
pub fn assert_close(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let mut exact = 0usize;
    let mut worst = 0f32;
    for (k, (&a, &b)) in got.iter().zip(want).enumerate() {
        if a.to_bits() == b.to_bits() || a == b {
            exact += 1;
            continue;
        }
        if b.is_nan() || a.is_nan() {
            assert!(a.is_nan() && b.is_nan(), "{name}[{k}]: got {a}, want {b}");
            exact += 1;
            continue;
        }
        let d = (a - b).abs() / b.abs().max(1.0);
        worst = worst.max(d);
        assert!(d <= 1e-5, "{name}[{k}]: got {a}, want {b}");
    }
    println!(
        "{name}: {} values, {exact} bit-identical, worst relative difference {worst:e}",
        got.len()
    );
}

fn slice<D: ndarray::Dimension>(a: &ndarray::Array<f32, D>) -> Vec<f32> {
    a.iter().copied().collect()
}

pub fn preprocess<E: Executor>(ex: &mut E) {
    let mut r = Lcg::new(1);
    for (h, w, min_size, max_size, div) in [
        (37, 53, 40, 100, 32),
        (64, 48, 96, 200, 32),
        (20, 30, 20, 30, 1),
        (1, 1, 5, 5, 8),
        (50, 21, 31, 77, 16),
    ] {
        let img = Array3::from_shape_fn((h, w, 3), |_| (r.f() * 256.0) as u8);
        let t = RcnnTransform {
            min_size,
            max_size,
            size_divisible: div,
            ..Default::default()
        };
        let want = t.apply(img.view()).expect("cpu preprocess");
        let got = gpu::preprocess(ex, &t, img.view()).expect("gpu preprocess");
        assert_eq!(got.image.dim(), want.image.dim());
        assert_eq!(got.image_size, want.image_size);
        assert_eq!(got.original_size, want.original_size);
        assert_close(
            &format!("preprocess {h}x{w}"),
            &slice(&got.image),
            &slice(&want.image),
        );
        let mean = [0.1, 0.5, 0.9];
        let std = [0.3, 1.0, 2.5];
        let want = to_chw_normalized(img.view(), mean, std).expect("cpu chw");
        let got = gpu::to_chw_normalized(ex, img.view(), mean, std).expect("gpu chw");
        assert_close(
            &format!("to_chw_normalized {h}x{w}"),
            &slice(&got),
            &slice(&want),
        );
    }
    // Bad input: errors on both paths, never a panic.
    let t = RcnnTransform::default();
    let four = Array3::<u8>::zeros((4, 4, 4));
    assert!(t.apply(four.view()).is_err());
    assert!(gpu::preprocess(ex, &t, four.view()).is_err());
    let empty = Array3::<u8>::zeros((0, 4, 3));
    assert!(gpu::preprocess(ex, &t, empty.view()).is_err());
    let img = Array3::<u8>::zeros((4, 4, 3));
    assert!(gpu::to_chw_normalized(ex, img.view(), IMAGENET_MEAN, [0.0; 3]).is_err());
    assert!(gpu::to_chw_normalized(ex, img.view(), IMAGENET_MEAN, IMAGENET_STD).is_ok());
}

fn random_rois(r: &mut Lcg, n: usize, batch: usize, img_h: f32, img_w: f32) -> Vec<[f32; 5]> {
    let mut rois: Vec<[f32; 5]> = (0..n)
        .map(|_| {
            let x1 = r.range(-0.2 * img_w, img_w);
            let y1 = r.range(-0.2 * img_h, img_h);
            [
                r.below(batch) as f32,
                x1,
                y1,
                x1 + r.range(0.0, 0.8 * img_w),
                y1 + r.range(0.0, 0.8 * img_h),
            ]
        })
        .collect();
    // Edge cases: degenerate, inverted, fully outside, partly outside, one pixel, huge.
    rois.push([0.0, 10.0, 10.0, 10.0, 10.0]);
    rois.push([0.0, 20.0, 20.0, 5.0, 8.0]);
    rois.push([(batch - 1) as f32, -50.0, -40.0, -10.0, -5.0]);
    rois.push([0.0, img_w - 3.0, img_h - 2.0, img_w + 30.0, img_h + 20.0]);
    rois.push([0.0, 3.0, 4.0, 4.0, 5.0]);
    rois.push([0.0, -3.0 * img_w, -3.0 * img_h, 4.0 * img_w, 4.0 * img_h]);
    rois.push([0.0, f32::NAN, 1.0, 5.0, 5.0]);
    rois
}

pub fn roi_align<E: Executor>(ex: &mut E) {
    let mut r = Lcg::new(2);
    let (n, c, h, w) = (2, 5, 13, 17);
    let input = Array4::from_shape_fn((n, c, h, w), |_| r.range(-1.0, 1.0));
    let rois = random_rois(&mut r, 40, n, 4.0 * h as f32, 4.0 * w as f32);
    for aligned in [false, true] {
        for sampling_ratio in [2, -1, 0, 1] {
            for (pooled_h, pooled_w, scale) in [(7, 7, 0.25f32), (3, 5, 0.25), (2, 2, 1.0)] {
                let p = RoiAlignParams {
                    pooled_height: pooled_h,
                    pooled_width: pooled_w,
                    spatial_scale: scale,
                    sampling_ratio,
                    aligned,
                    plus_one_end: false,
                };
                let want = ops::roi_align(input.view(), &rois, &p).expect("cpu roi_align");
                let got = gpu::roi_align(ex, input.view(), &rois, &p).expect("gpu roi_align");
                assert_eq!(got.dim(), want.dim());
                assert_close(
                    &format!("roi_align aligned={aligned} sr={sampling_ratio} {pooled_h}x{pooled_w} s={scale}"),
                    &slice(&got),
                    &slice(&want),
                );
            }
        }
    }
    let p = RoiAlignParams::new(7, 0.25);
    // No RoIs; bad batch index; empty map.
    assert_eq!(
        gpu::roi_align(ex, input.view(), &[], &p)
            .expect("empty")
            .dim(),
        (0, c, 7, 7)
    );
    let bad = [[2.0, 0.0, 0.0, 4.0, 4.0]];
    assert!(ops::roi_align(input.view(), &bad, &p).is_err());
    assert!(gpu::roi_align(ex, input.view(), &bad, &p).is_err());
    assert!(gpu::roi_align(ex, input.view(), &[[f32::NAN, 0.0, 0.0, 4.0, 4.0]], &p).is_err());
    let empty = Array4::<f32>::zeros((1, c, 0, 4));
    assert!(gpu::roi_align(ex, empty.view(), &[[0.0, 0.0, 0.0, 1.0, 1.0]], &p).is_err());
    // mmdet 1.x's "+1" convention has no kernel: refused rather than computed another way.
    let mmdet = RoiAlignParams {
        plus_one_end: true,
        ..p
    };
    assert!(ops::roi_align(input.view(), &rois, &mmdet).is_ok());
    assert!(gpu::roi_align(ex, input.view(), &rois, &mmdet).is_err());
    // A huge box with adaptive sampling: the CPU op's error.
    let huge = [[0.0, -1e30, -1e30, 1e30, 1e30]];
    assert!(ops::roi_align(input.view(), &huge, &p).is_err());
    assert!(gpu::roi_align(ex, input.view(), &huge, &p).is_err());
}

fn random_boxes(r: &mut Lcg, n: usize, clustered: bool) -> (Vec<[f32; 4]>, Vec<f32>) {
    let mut boxes = Vec::with_capacity(n);
    let mut scores = Vec::with_capacity(n);
    for i in 0..n {
        let (cx, cy) = if clustered {
            let c = (i % 7) as f32;
            (100.0 * c + 10.0 * r.f(), 50.0 * c + 10.0 * r.f())
        } else {
            (800.0 * r.f(), 600.0 * r.f())
        };
        let bw = 10.0 + 100.0 * r.f();
        let bh = 10.0 + 100.0 * r.f();
        boxes.push([cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0]);
        // Coarse scores, so that ties occur.
        scores.push((r.f() * 50.0).floor() / 50.0);
    }
    (boxes, scores)
}

pub fn nms<E: Executor>(ex: &mut E) {
    let mut r = Lcg::new(3);
    for (n, clustered) in [
        (1, false),
        (63, true),
        (64, false),
        (65, true),
        (300, false),
        (1000, true),
    ] {
        let (boxes, scores) = random_boxes(&mut r, n, clustered);
        for thr in [0.0, 0.3, 0.5, 0.7, 1.0, f64::NAN] {
            let want = ops::nms(&boxes, &scores, thr).expect("cpu nms");
            let got = gpu::nms(ex, &boxes, &scores, thr).expect("gpu nms");
            assert_eq!(got, want, "nms n={n} clustered={clustered} thr={thr}");
        }
    }
    // Strict `>`: IoU exactly 0.5 is kept.
    let b = [[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]];
    assert_eq!(
        gpu::nms(ex, &b, &[1.0, 0.5], 0.5).expect("strict"),
        vec![0, 1]
    );
    // NaN scores and boxes.
    let boxes = [
        [0.0, 0.0, 10.0, 10.0],
        [f32::NAN, 0.0, 10.0, 10.0],
        [0.0, 0.0, 10.0, 10.0],
        [1.0, 1.0, 1.0, 1.0],
    ];
    let scores = [0.5, 0.9, f32::NAN, 0.7];
    assert_eq!(
        gpu::nms(ex, &boxes, &scores, 0.5).expect("nan"),
        ops::nms(&boxes, &scores, 0.5).expect("nan cpu")
    );
    assert!(gpu::nms(ex, &[], &[], 0.5).expect("empty").is_empty());
    assert!(gpu::nms(ex, &b, &[1.0], 0.5).is_err());
    println!("nms: indices identical to the CPU op");
}

pub fn batched_nms<E: Executor>(ex: &mut E) {
    let mut r = Lcg::new(4);
    // 300 boxes: coordinate trick; 1500 boxes: per-class path.
    for (n, classes) in [(300, 5), (1000, 3), (1500, 5), (2000, 1)] {
        let (boxes, scores) = random_boxes(&mut r, n, true);
        let idxs: Vec<i64> = (0..n).map(|_| r.below(classes) as i64).collect();
        for thr in [0.3, 0.5, 0.7] {
            let want = ops::batched_nms(&boxes, &scores, &idxs, thr).expect("cpu batched");
            let got = gpu::batched_nms(ex, &boxes, &scores, &idxs, thr).expect("gpu batched");
            assert_eq!(got, want, "batched_nms n={n} classes={classes} thr={thr}");
        }
    }
    let b = [[0.0, 0.0, 10.0, 10.0]; 3];
    assert_eq!(
        gpu::batched_nms(ex, &b, &[0.9, 0.8, 0.7], &[0, 1, 0], 0.5).expect("by hand"),
        vec![0, 1]
    );
    assert!(gpu::batched_nms(ex, &b, &[0.9, 0.8, 0.7], &[0, 1], 0.5).is_err());
    println!("batched_nms: indices identical to the CPU op");
}

pub fn box_decode<E: Executor>(ex: &mut E) {
    let mut r = Lcg::new(5);
    for (n, k, weights) in [
        (50, 1, [1.0, 1.0, 1.0, 1.0]),
        (37, 4, [10.0, 10.0, 5.0, 5.0]),
        (1, 91, [10.0, 10.0, 5.0, 5.0]),
    ] {
        let coder = BoxCoder::new(weights);
        let mut boxes: Vec<[f32; 4]> = (0..n)
            .map(|_| {
                let x = r.range(0.0, 500.0);
                let y = r.range(0.0, 400.0);
                [x, y, x + r.range(1.0, 200.0), y + r.range(1.0, 200.0)]
            })
            .collect();
        let mut rel = Array2::from_shape_fn((n, 4 * k), |_| r.range(-3.0, 3.0));
        if n > 2 {
            rel[[0, 2]] = 1e6; // clamped to log(1000/16) before exp
            rel[[1, 3]] = -50.0;
            boxes[2] = [f32::NAN, 0.0, 1.0, 1.0];
        }
        let want = coder.decode(rel.view(), &boxes).expect("cpu decode");
        let got = gpu::box_decode(ex, &coder, rel.view(), &boxes).expect("gpu decode");
        assert_eq!(got.dim(), want.dim());
        assert_close(
            &format!("box_decode n={n} k={k}"),
            &slice(&got),
            &slice(&want),
        );
    }
    let coder = BoxCoder::new([1.0; 4]);
    let rel = Array2::<f32>::zeros((1, 5));
    assert!(gpu::box_decode(ex, &coder, rel.view(), &[[0.0; 4]]).is_err());
    let rel = Array2::<f32>::zeros((2, 4));
    assert!(gpu::box_decode(ex, &coder, rel.view(), &[[0.0; 4]]).is_err());
    let rel = Array2::<f32>::zeros((0, 4));
    assert_eq!(
        gpu::box_decode(ex, &coder, rel.view(), &[])
            .expect("empty")
            .dim(),
        (0, 1, 4)
    );
}

pub fn paste_masks<E: Executor>(ex: &mut E) {
    let mut r = Lcg::new(6);
    let (im_h, im_w) = (80, 120);
    let mut boxes: Vec<[f32; 4]> = (0..6)
        .map(|_| {
            let x = r.range(-20.0, 110.0);
            let y = r.range(-20.0, 70.0);
            [x, y, x + r.range(0.5, 60.0), y + r.range(0.5, 50.0)]
        })
        .collect();
    boxes.extend([
        [10.0, 12.0, 60.0, 40.0],
        [-20.0, -5.0, 30.0, 25.0],
        [90.0, 50.0, 140.0, 95.0],
        [40.0, 30.0, 40.5, 30.2],
        [-10.0, 10.0, 250.0, 20.0],
        [200.0, 200.0, 300.0, 300.0],
        [f32::NAN, 0.0, 10.0, 10.0],
        [0.0, 0.0, f32::INFINITY, 10.0],
        [5.0, 5.0, 70.0, 75.0],
    ]);
    for (m, padding) in [(28, 1), (14, 1), (9, 0), (5, 3)] {
        let masks = Array3::from_shape_fn((boxes.len(), m, m), |_| r.f());
        let want = ops::paste_masks_in_image(masks.view(), &boxes, (im_h, im_w), padding)
            .expect("cpu paste");
        let got = gpu::paste_masks_in_image(ex, masks.view(), &boxes, (im_h, im_w), padding)
            .expect("gpu paste");
        assert_eq!(got.dim(), want.dim());
        assert_close(
            &format!("paste_masks M={m} padding={padding}"),
            &slice(&got),
            &slice(&want),
        );
    }
    let masks = Array3::<f32>::zeros((2, 28, 28));
    assert!(gpu::paste_masks_in_image(ex, masks.view(), &boxes[..1], (8, 8), 1).is_err());
    let masks = Array3::<f32>::zeros((1, 0, 28));
    assert!(gpu::paste_masks_in_image(ex, masks.view(), &boxes[..1], (8, 8), 1).is_err());
    let masks = Array3::<f32>::zeros((0, 28, 28));
    assert_eq!(
        gpu::paste_masks_in_image(ex, masks.view(), &[], (8, 8), 1)
            .expect("empty")
            .dim(),
        (0, 8, 8)
    );
}

pub fn yolact<E: Executor>(ex: &mut E) {
    let mut r = Lcg::new(7);
    for (h, w, k, n) in [
        (23, 29, 32, 6),
        (11, 13, 300, 3),
        (7, 5, 1, 1),
        (16, 16, 0, 2),
    ] {
        let proto = Array3::from_shape_fn((h, w, k), |_| r.range(0.0, 1.0));
        let coeffs = Array2::from_shape_fn((n, k), |_| r.range(-1.0, 1.0));
        let mut boxes: Vec<[f32; 4]> = (0..n)
            .map(|_| {
                let x = r.range(-0.1, 0.9);
                let y = r.range(-0.1, 0.9);
                [x, y, x + r.range(0.0, 0.5), y + r.range(0.0, 0.5)]
            })
            .collect();
        if n > 2 {
            boxes[1] = [0.8, 0.7, 0.2, 0.1]; // inverted: sanitize takes min/max
            boxes[2] = [f32::NAN, 0.1, 0.5, 0.5];
        }
        for crop in [true, false] {
            let want = ops::assemble_masks(proto.view(), coeffs.view(), &boxes, crop)
                .expect("cpu assemble");
            let got = gpu::assemble_masks(ex, proto.view(), coeffs.view(), &boxes, crop)
                .expect("gpu assemble");
            assert_eq!(got.dim(), want.dim());
            assert_close(
                &format!("yolact {h}x{w} k={k} n={n} crop={crop}"),
                &slice(&got),
                &slice(&want),
            );
        }
    }
    let proto = Array3::<f32>::zeros((4, 4, 8));
    let coeffs = Array2::<f32>::zeros((2, 7));
    assert!(gpu::assemble_masks(ex, proto.view(), coeffs.view(), &[[0.0; 4]; 2], true).is_err());
    let coeffs = Array2::<f32>::zeros((2, 8));
    assert!(gpu::assemble_masks(ex, proto.view(), coeffs.view(), &[[0.0; 4]; 1], true).is_err());
}

pub fn heatmap<E: Executor>(ex: &mut E) {
    let mut r = Lcg::new(8);
    let mut heat = Array3::from_shape_fn((5, 17, 23), |_| {
        let v = r.f();
        v * v
    });
    // Plateaus and a NaN.
    heat[[1, 2, 3]] = 0.99;
    heat[[1, 2, 4]] = 0.99;
    heat[[2, 0, 0]] = 1.0;
    heat[[3, 16, 22]] = 1.0;
    for kernel in [1, 3, 5] {
        let want = ops::heatmap_nms(heat.view(), kernel).expect("cpu heatmap_nms");
        let got = gpu::heatmap_nms(ex, heat.view(), kernel).expect("gpu heatmap_nms");
        assert_close(
            &format!("heatmap_nms k={kernel}"),
            &slice(&got),
            &slice(&want),
        );
    }
    for k in [1, 10, 50] {
        let want = ops::extract_peaks(heat.view(), k).expect("cpu peaks");
        let got = gpu::extract_peaks(ex, heat.view(), k).expect("gpu peaks");
        assert_eq!(got, want, "extract_peaks k={k}");
    }
    let mut with_nan = heat.clone();
    with_nan[[0, 5, 5]] = f32::NAN;
    let want = ops::heatmap_nms(with_nan.view(), 3).expect("cpu nan");
    let got = gpu::heatmap_nms(ex, with_nan.view(), 3).expect("gpu nan");
    assert_close("heatmap_nms NaN", &slice(&got), &slice(&want));
    // Candidates above a threshold, sorted, equal to a host filter of the CPU result.
    let sup = ops::heatmap_nms(with_nan.view(), 3).expect("cpu sup");
    let cands = gpu::peak_candidates(ex, sup.view(), 0.5).expect("gpu candidates");
    let mut expected: Vec<(usize, usize, usize)> = sup
        .indexed_iter()
        .filter(|(_, &v)| v >= 0.5 || v.is_nan())
        .map(|((c, y, x), _)| (c, y, x))
        .collect();
    expected.sort_by(|a, b| {
        let (va, vb) = (sup[[a.0, a.1, a.2]], sup[[b.0, b.1, b.2]]);
        let key = |v: f32| if v.is_nan() { f32::INFINITY } else { v };
        key(vb).total_cmp(&key(va)).then(a.cmp(b))
    });
    let got: Vec<(usize, usize, usize)> = cands.iter().map(|p| (p.class, p.y, p.x)).collect();
    assert_eq!(got, expected);
    assert!(cands[0].score.is_nan());
    assert!(gpu::heatmap_nms(ex, heat.view(), 2).is_err());
    assert!(gpu::extract_peaks(ex, heat.view(), 17 * 23 + 1).is_err());
    println!("heatmap: suppression, peaks and candidates identical to the CPU op");
}

/// A named check.
pub type Check<E> = (&'static str, fn(&mut E));

/// Every check, by name.
/// GPU conv2d (im2col kernel + SGEMM + bias/activation kernel) against the CPU `Conv2d` on
/// strides, paddings, dilations, groups, 1x1 and every activation, and SGEMM on its own.
/// Tolerance `1e-4 · max(1, |b|)`: the two sum the products in different orders.
pub fn conv2d<E: Executor>(exec: &mut E) {
    use kernels::layers::{Activation, Conv2d, Conv2dParams};
    let mut rng = Lcg::new(17);
    let cases: [(usize, usize, usize, usize, usize, Conv2dParams, Activation); 7] = [
        (
            2,
            3,
            8,
            9,
            11,
            Conv2dParams::default().padding(1),
            Activation::Relu,
        ),
        (
            1,
            8,
            16,
            13,
            12,
            Conv2dParams::default().stride(2).padding(1),
            Activation::Identity,
        ),
        (
            1,
            4,
            6,
            12,
            12,
            Conv2dParams::default().padding(2).dilation(2),
            Activation::Sigmoid,
        ),
        (
            1,
            8,
            12,
            10,
            10,
            Conv2dParams::default().padding(1).groups(2),
            Activation::LeakyRelu(0.1),
        ),
        (
            1,
            16,
            16,
            9,
            9,
            Conv2dParams::default().padding(1).groups(16),
            Activation::HardSwish,
        ),
        (3, 32, 24, 7, 5, Conv2dParams::default(), Activation::Relu6),
        (
            1,
            6,
            5,
            4,
            4,
            Conv2dParams::default().padding(3),
            Activation::Silu,
        ),
    ];
    for (case, &(n, cin, cout, h, w, params, act)) in cases.iter().enumerate() {
        let k = if case == 5 { 1 } else { 3 };
        let cin_g = cin / params.groups;
        let wgt = Array4::from_shape_fn((cout, cin_g, k, k), |_| rng.range(-0.5, 0.5));
        let bias: Vec<f32> = (0..cout).map(|_| rng.range(-0.2, 0.2)).collect();
        let conv = Conv2d::new(wgt.view(), Some(ndarray::ArrayView1::from(&bias)), params)
            .expect("conv")
            .with_activation(act);
        let x = Array4::from_shape_fn((n, cin, h, w), |_| rng.range(-1.0, 1.0));
        let want = conv.forward(x.view()).expect("cpu conv");
        let got = gpu::conv2d(exec, &conv, x.view()).expect("gpu conv");
        assert_eq!(got.dim(), want.dim(), "conv case {case}: shape");
        let (g, w) = (got.as_slice().unwrap(), want.as_slice().unwrap());
        let mut worst = 0f32;
        for (i, (&a, &b)) in g.iter().zip(w).enumerate() {
            let d = (a - b).abs() / b.abs().max(1.0);
            worst = worst.max(d);
            assert!(d <= 1e-4, "conv case {case} [{i}]: got {a}, want {b}");
        }
        println!(
            "conv2d case {case} {:?}: worst relative difference {worst:e}",
            want.dim()
        );
    }
    // SGEMM alone, including a degenerate inner dimension.
    let (m, n, k) = (37, 29, 53);
    let a: Vec<f32> = (0..m * k).map(|_| rng.range(-1.0, 1.0)).collect();
    let b: Vec<f32> = (0..k * n).map(|_| rng.range(-1.0, 1.0)).collect();
    let mut c = vec![0f32; m * n];
    exec.sgemm(m, n, k, &a, &b, &mut c).expect("sgemm");
    for i in 0..m {
        for j in 0..n {
            let want: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            let d = (c[i * n + j] - want).abs() / want.abs().max(1.0);
            assert!(
                d <= 1e-4,
                "sgemm [{i}, {j}]: got {}, want {want}",
                c[i * n + j]
            );
        }
    }
    let mut z = vec![1f32; 6];
    exec.sgemm(2, 3, 0, &[], &[], &mut z).expect("k = 0");
    assert_eq!(z, [0.0; 6]);
    assert!(exec
        .sgemm(2, 2, 2, &[0.0; 3], &[0.0; 4], &mut [0.0; 4])
        .is_err());
}

/// The transformer kernels against the CPU layers: the attention softmax on rows shorter
/// and longer than a block (and of one column, with a NaN, with -inf and huge logits), and
/// LayerNorm on widths around the block size, with a constant row.
pub fn transformer<E: Executor>(ex: &mut E) {
    use kernels::layers::attention::{softmax_rows, LayerNorm};
    let mut r = Lcg::new(21);
    for (rows, cols) in [(3usize, 1usize), (5, 17), (4, 256), (3, 950), (2, 1031)] {
        let mut x = Array2::from_shape_fn((rows, cols), |_| r.range(-12.0, 12.0));
        x[[0, cols / 2]] = 80.0;
        if cols > 2 {
            x[[rows - 1, 1]] = f32::NEG_INFINITY;
        }
        let got = gpu::attention_softmax(ex, x.view()).expect("gpu softmax");
        let mut want = x.as_slice().unwrap().to_vec();
        softmax_rows(&mut want, cols);
        assert_close(
            &format!("attention_softmax {rows}x{cols}"),
            &slice(&got),
            &want,
        );
    }
    let mut nan = Array2::from_shape_fn((2, 40), |_| r.range(-1.0, 1.0));
    nan[[1, 7]] = f32::NAN;
    let got = gpu::attention_softmax(ex, nan.view()).expect("gpu softmax NaN");
    assert!(got.row(1).iter().all(|v| v.is_nan()) && got.row(0).iter().all(|v| v.is_finite()));
    for dim in [1usize, 7, 256, 300] {
        let w = ndarray::Array1::from_shape_fn(dim, |_| r.range(0.5, 1.5));
        let b = ndarray::Array1::from_shape_fn(dim, |_| r.range(-0.2, 0.2));
        let ln = LayerNorm::new(w.view(), b.view(), 1e-5).expect("layer norm");
        let mut x = Array2::from_shape_fn((6, dim), |_| r.range(-3.0, 5.0));
        x.row_mut(2).fill(0.25);
        let got = gpu::layer_norm(ex, x.view(), &ln).expect("gpu layer_norm");
        let want = ln.forward(x.view()).expect("cpu layer_norm");
        assert_close(
            &format!("layer_norm dim {dim}"),
            &slice(&got),
            &slice(&want),
        );
        assert!(gpu::layer_norm(ex, Array2::<f32>::zeros((2, dim + 1)).view(), &ln).is_err());
    }
    println!("transformer: attention softmax and LayerNorm match the CPU layers");
}

pub fn all<E: Executor>() -> Vec<Check<E>> {
    vec![
        ("deform_conv2d", deform_conv2d::<E>),
        ("corner_pool", corner_pool::<E>),
        ("transformer", transformer::<E>),
        ("conv2d", conv2d::<E>),
        ("preprocess", preprocess::<E>),
        ("roi_align", roi_align::<E>),
        ("nms", nms::<E>),
        ("batched_nms", batched_nms::<E>),
        ("box_decode", box_decode::<E>),
        ("paste_masks", paste_masks::<E>),
        ("yolact", yolact::<E>),
        ("heatmap", heatmap::<E>),
    ]
}

/// Deformable convolution (v1 and v2) against the CPU layer: offsets that leave the image and
/// land on exact pixels, offset and weight groups, stride and dilation, a fused activation,
/// and a NaN offset.
pub fn deform_conv2d<E: Executor>(exec: &mut E) {
    use kernels::layers::{Activation, Conv2d, Conv2dParams, DeformConv2d};
    let mut rng = Lcg::new(23);
    // (n, cin, cout, h, w, params, offset groups, masked, offset scale)
    type Case = (
        usize,
        usize,
        usize,
        usize,
        usize,
        Conv2dParams,
        usize,
        bool,
        f32,
    );
    let cases: [Case; 5] = [
        (
            1,
            6,
            5,
            9,
            11,
            Conv2dParams::default().padding(1),
            1,
            true,
            2.0,
        ),
        (
            2,
            4,
            6,
            7,
            8,
            Conv2dParams::default().padding(1),
            1,
            false,
            6.0,
        ),
        (
            1,
            5,
            7,
            12,
            13,
            Conv2dParams::default().stride(2).padding(2).dilation(2),
            1,
            true,
            1.5,
        ),
        (
            1,
            8,
            6,
            8,
            9,
            Conv2dParams::default().padding(1).groups(2),
            2,
            true,
            2.0,
        ),
        (
            1,
            3,
            4,
            6,
            7,
            Conv2dParams::default().padding(1),
            1,
            true,
            0.0,
        ),
    ];
    for (case, &(n, cin, cout, h, w, params, og, masked, scale)) in cases.iter().enumerate() {
        let wgt =
            Array4::from_shape_fn((cout, cin / params.groups, 3, 3), |_| rng.range(-0.5, 0.5));
        let bias: Vec<f32> = (0..cout).map(|_| rng.range(-0.2, 0.2)).collect();
        let conv = Conv2d::new(wgt.view(), Some(ndarray::ArrayView1::from(&bias)), params)
            .expect("conv")
            .with_activation(Activation::Relu);
        let (oh, ow) = conv.output_size(h, w).expect("size");
        let dcn = DeformConv2d::new(conv);
        let x = Array4::from_shape_fn((n, cin, h, w), |_| rng.range(-1.0, 1.0));
        let mut offset =
            Array4::from_shape_fn((n, 2 * og * 9, oh, ow), |_| rng.range(-scale, scale));
        if scale == 0.0 {
            // Whole and half pixels: samples on exact corners and midpoints, and a NaN.
            offset.iter_mut().enumerate().for_each(|(i, v)| {
                *v = (i % 7) as f32 * 0.5 - 1.5;
            });
            offset[[0, 3, 2, 2]] = f32::NAN;
        }
        let mask = Array4::from_shape_fn((n, og * 9, oh, ow), |_| rng.range(0.0, 1.0));
        let mask = masked.then_some(mask.view());
        let want = dcn.forward(x.view(), offset.view(), mask).expect("cpu dcn");
        let got = gpu::deform_conv2d(exec, &dcn, x.view(), offset.view(), mask).expect("gpu dcn");
        assert_eq!(got.dim(), want.dim(), "deform case {case}: shape");
        let mut worst = 0f32;
        for (i, (&a, &b)) in got.iter().zip(want.iter()).enumerate() {
            if b.is_nan() {
                assert!(a.is_nan(), "deform case {case} [{i}]: got {a}, want NaN");
                continue;
            }
            let d = (a - b).abs() / b.abs().max(1.0);
            worst = worst.max(d);
            assert!(d <= 1e-4, "deform case {case} [{i}]: got {a}, want {b}");
        }
        println!("deform_conv2d case {case}: worst relative difference {worst:e}");
    }
    // A mis-shaped offset is the CPU layer's error.
    let conv = Conv2d::new(
        Array4::<f32>::ones((2, 3, 3, 3)).view(),
        None,
        Conv2dParams::default().padding(1),
    )
    .expect("conv");
    let dcn = DeformConv2d::new(conv);
    let x = Array4::<f32>::zeros((1, 3, 4, 4));
    let bad = Array4::<f32>::zeros((1, 17, 4, 4));
    let err = gpu::deform_conv2d(exec, &dcn, x.view(), bad.view(), None).expect_err("bad offset");
    assert!(err.to_string().contains("offset has shape"), "{err}");
}

/// Corner pooling in the four directions against the CPU op: random maps (one with a NaN and
/// an infinity), a single row and a single column, bit for bit.
pub fn corner_pool<E: Executor>(exec: &mut E) {
    use kernels::ops::corner_pool::{corner_pool, CornerPool};
    let mut rng = Lcg::new(29);
    for (n, c, h, w) in [(2, 3, 9, 13), (1, 2, 1, 17), (1, 2, 11, 1), (1, 1, 40, 33)] {
        let mut x = Array4::from_shape_fn((n, c, h, w), |_| rng.range(-3.0, 3.0));
        if h > 4 && w > 4 {
            x[[0, 0, h / 2, w / 2]] = f32::NAN;
            x[[n - 1, c - 1, 0, 0]] = f32::INFINITY;
        }
        for pool in [
            CornerPool::Top,
            CornerPool::Left,
            CornerPool::Bottom,
            CornerPool::Right,
        ] {
            let want = corner_pool(x.view(), pool).expect("cpu corner pool");
            let got = gpu::corner_pool(exec, x.view(), pool).expect("gpu corner pool");
            assert_eq!(got.dim(), want.dim());
            for (i, (a, b)) in got.iter().zip(want.iter()).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "corner pool {pool:?} {:?} [{i}]: got {a}, want {b}",
                    want.dim()
                );
            }
        }
    }
}
