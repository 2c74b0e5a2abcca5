//! YOLACT post-processing (dbolya/yolact @ `902073d4`): mask assembly
//! (`layers/output_utils.py`: `sigmoid(P · Cᵀ)` then `crop` from `layers/box_utils.py`) and
//! FastNMS (`layers/functions/detection.py`: `Detect.detect` and `fast_nms`).
//!
//! Mask assembly: prototypes `P` `[h, w, k]`, coefficients `C` `[n, k]`, boxes relative to
//! the image (`[0, 1]`). Mask `i` is `sigmoid(P · C[i])`, then zeroed outside its box padded
//! by one prototype pixel: with `x1 = clamp(min(bx1, bx2)·w - 1, min 0)` and
//! `x2 = clamp(max(bx1, bx2)·w + 1, max w)` (`sanitize_coordinates(..., padding=1,
//! cast=False)`), column `c` is kept iff `x1 <= c < x2`; rows likewise. The output is
//! `[n, h, w]` (YOLACT's `[h, w, n]` permuted, as its `postprocess` does next).
//!
//! FastNMS per class: the top `top_k` detections by score (a class's scores are all the
//! candidates' scores for it, not re-thresholded), their IoU matrix, its strict upper
//! triangle, and a detection is kept iff its largest IoU with a higher-scoring detection of
//! the same class is `<= iou_threshold` (suppressed detections still suppress). Then all
//! classes are merged and the `max_num_detections` best scores kept.
//!
//! NaN: a NaN IoU (e.g. two zero-area boxes) makes the column maximum NaN in torch, so that
//! detection is dropped; the same here. NaN scores sort first (torch's order). In mask
//! assembly NaN coefficients give NaN masks (inside the crop) as in torch.

use ndarray::{Array3, ArrayView2, ArrayView3};
use rayon::prelude::*;

use super::{
    check_same_len, clamp_max, clamp_min, desc_cmp, nan_max, nan_min, top_k_desc, OpError,
};

const OP: &str = "yolact";

/// YOLACT's `sanitize_coordinates(x1, x2, size, padding, cast=False)` for one box side:
/// `(clamp(min(x1, x2)·size − padding, min 0), clamp(max(x1, x2)·size + padding, max size))`.
pub fn sanitize_coordinates(x1: f32, x2: f32, size: usize, padding: f32) -> (f32, f32) {
    let s = size as f32;
    let a = x1 * s;
    let b = x2 * s;
    let lo = nan_min(a, b);
    let hi = nan_max(a, b);
    (clamp_min(lo - padding, 0.0), clamp_max(hi + padding, s))
}

/// Zeroes each mask `[n, h, w]` outside its padded box (YOLACT `crop` with `padding`).
pub fn crop_masks(
    masks: &mut Array3<f32>,
    boxes: &[[f32; 4]],
    padding: f32,
) -> Result<(), OpError> {
    let (n, h, w) = masks.dim();
    check_same_len("yolact crop", "masks", n, "boxes", boxes.len())?;
    for (mut m, b) in masks.outer_iter_mut().zip(boxes) {
        let (x1, x2) = sanitize_coordinates(b[0], b[2], w, padding);
        let (y1, y2) = sanitize_coordinates(b[1], b[3], h, padding);
        for ((r, c), v) in m.indexed_iter_mut() {
            let (rf, cf) = (r as f32, c as f32);
            let keep = cf >= x1 && cf < x2 && rf >= y1 && rf < y2;
            // `masks * crop_mask.float()`: multiplication by 0 (keeps NaN, gives -0 for -x).
            *v *= if keep { 1.0 } else { 0.0 };
        }
    }
    Ok(())
}

fn check_assemble(
    proto: &ArrayView3<f32>,
    coeffs: &ArrayView2<f32>,
    boxes: &[[f32; 4]],
) -> Result<(), OpError> {
    let (_, _, k) = proto.dim();
    let (n, kc) = coeffs.dim();
    if k != kc {
        return Err(OpError::shape(
            OP,
            format!("prototypes have {k} channels but coefficients have {kc}"),
        ));
    }
    check_same_len(OP, "coefficients", n, "boxes", boxes.len())
}

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[inline(always)]
fn sigmoid_fast(x: f32) -> f32 {
    1.0 / (1.0 + super::exp_fast(-x))
}

/// Sigmoid of `row[a..b]`; the rest is multiplied by 0 (0, or NaN where NaN, as in torch).
#[inline(always)]
fn sigmoid_row_impl(row: &mut [f32], a: usize, b: usize) {
    let b = b.min(row.len());
    let a = a.min(b);
    let (left, rest) = row.split_at_mut(a);
    let (mid, right) = rest.split_at_mut(b - a);
    for v in left {
        *v = if v.is_nan() { f32::NAN } else { 0.0 };
    }
    for v in right {
        *v = if v.is_nan() { f32::NAN } else { 0.0 };
    }
    for v in mid {
        *v = sigmoid_fast(*v);
    }
}

super::simd::multiversion!(fn sigmoid_row(row: &mut [f32], a: usize, b: usize) => sigmoid_row_impl);

/// Integer columns `c` with `lo <= c < hi` (float limits as YOLACT compares them), within
/// `[0, n]`; empty if a limit is NaN.
fn int_range(lo: f32, hi: f32, n: usize) -> (usize, usize) {
    if lo.is_nan() || hi.is_nan() {
        return (0, 0);
    }
    let clampf = |v: f32| -> usize {
        let c = v.ceil();
        if c <= 0.0 {
            0
        } else if c >= n as f32 {
            n
        } else {
            c as usize
        }
    };
    let (a, b) = (clampf(lo), clampf(hi));
    (a, b.max(a))
}

/// Straightforward `sigmoid(P · Cᵀ)` then crop (if `crop`), sums in prototype order.
/// `proto` `[h, w, k]`, `coeffs` `[n, k]`, `boxes` relative `[n]`; output `[n, h, w]`.
pub fn assemble_masks_reference(
    proto: ArrayView3<f32>,
    coeffs: ArrayView2<f32>,
    boxes: &[[f32; 4]],
    crop: bool,
) -> Result<Array3<f32>, OpError> {
    check_assemble(&proto, &coeffs, boxes)?;
    let (h, w, k) = proto.dim();
    let n = coeffs.dim().0;
    let mut out = Array3::<f32>::zeros((n, h, w));
    for i in 0..n {
        for y in 0..h {
            for x in 0..w {
                let mut s = 0.0f32;
                for j in 0..k {
                    s += proto[[y, x, j]] * coeffs[[i, j]];
                }
                out[[i, y, x]] = sigmoid(s);
            }
        }
    }
    if crop {
        crop_masks(&mut out, boxes, 1.0)?;
    }
    Ok(out)
}

/// Fast mask assembly: one GEMM (`C · Pᵀ`, `[n, h·w]`) then sigmoid (a vectorised `exp`)
/// and crop fused, masks in parallel. Equal to [`assemble_masks_reference`] up to the
/// summation order of the GEMM and the last bits of `exp` (within 1e-6).
pub fn assemble_masks(
    proto: ArrayView3<f32>,
    coeffs: ArrayView2<f32>,
    boxes: &[[f32; 4]],
    crop: bool,
) -> Result<Array3<f32>, OpError> {
    check_assemble(&proto, &coeffs, boxes)?;
    let (h, w, k) = proto.dim();
    let n = coeffs.dim().0;
    let hw = h * w;
    let mut out = Array3::<f32>::zeros((n, h, w));
    if out.is_empty() {
        return Ok(out);
    }
    let proto = proto.as_standard_layout();
    let coeffs = coeffs.as_standard_layout();
    let p = proto.as_slice().unwrap_or(&[]);
    let c = coeffs.as_slice().unwrap_or(&[]);
    // Crop limits per mask, as integer column and row ranges.
    let limits: Vec<[usize; 4]> = boxes
        .iter()
        .map(|b| {
            if crop {
                let (x1, x2) = sanitize_coordinates(b[0], b[2], w, 1.0);
                let (y1, y2) = sanitize_coordinates(b[1], b[3], h, 1.0);
                let (xa, xb) = int_range(x1, x2, w);
                let (ya, yb) = int_range(y1, y2, h);
                [xa, xb, ya, yb]
            } else {
                [0, w, 0, h]
            }
        })
        .collect();
    // Bands of prototype rows, in parallel: each is one GEMM `[n, k] x [k, band]` written
    // straight into the output, then sigmoid and crop while the band is in cache.
    let band_rows = (2048 / w.max(1)).clamp(1, h.max(1));
    let mut out2 = out
        .view_mut()
        .into_shape_with_order((n, hw))
        .map_err(|e| OpError::shape(OP, e.to_string()))?;
    let bands: Vec<(usize, ndarray::ArrayViewMut2<f32>)> = out2
        .axis_chunks_iter_mut(ndarray::Axis(1), band_rows * w)
        .enumerate()
        .map(|(i, v)| (i * band_rows, v))
        .collect();
    bands.into_par_iter().for_each(|(y0, mut band)| {
        let cols = band.dim().1;
        if k > 0 {
            let (rs, cs) = (band.strides()[0], band.strides()[1]);
            // band[n, cols] = coeffs[n, k] · proto[y0·w .., k]ᵀ
            // SAFETY: `c` holds n·k values (row stride k), `p` from row y0·w holds cols·k
            // values (column stride k), `band` is an exclusive n x cols view with strides
            // (rs, cs); the output does not alias the inputs.
            unsafe {
                matrixmultiply::sgemm(
                    n,
                    k,
                    cols,
                    1.0,
                    c.as_ptr(),
                    k as isize,
                    1,
                    p[y0 * w * k..].as_ptr(),
                    1,
                    k as isize,
                    0.0,
                    band.as_mut_ptr(),
                    rs,
                    cs,
                );
            }
        }
        for (mut m, lim) in band.outer_iter_mut().zip(&limits) {
            if let Some(row_data) = m.as_slice_mut() {
                for (r, row) in row_data.chunks_exact_mut(w.max(1)).enumerate() {
                    let y = y0 + r;
                    if y >= lim[2] && y < lim[3] {
                        sigmoid_row(row, lim[0], lim[1]);
                    } else {
                        sigmoid_row(row, 0, 0);
                    }
                }
            }
        }
    });
    Ok(out)
}

/// Parameters of FastNMS (YOLACT's defaults via [`Default`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FastNmsConfig {
    /// Kept iff the largest IoU with a better detection of the class is `<=` this (0.5).
    pub iou_threshold: f32,
    /// Detections per class considered (200).
    pub top_k: usize,
    /// Detections kept over all classes (100).
    pub max_num_detections: usize,
    /// YOLACT's optional `second_threshold`: also drop scores not above this (off).
    pub second_threshold: Option<f32>,
}

impl Default for FastNmsConfig {
    fn default() -> FastNmsConfig {
        FastNmsConfig {
            iou_threshold: 0.5,
            top_k: 200,
            max_num_detections: 100,
            second_threshold: None,
        }
    }
}

/// One detection kept by FastNMS.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct YolactDetection {
    /// Index of the box (into the `boxes` given to [`fast_nms`], or the prior for [`detect`]).
    pub index: usize,
    /// Class (0-based, background excluded).
    pub class: usize,
    pub score: f32,
}

/// Boxes as coordinate arrays, with areas and whether a coordinate is NaN.
struct Soa {
    x1: Vec<f32>,
    y1: Vec<f32>,
    x2: Vec<f32>,
    y2: Vec<f32>,
    area: Vec<f32>,
    nan: Vec<bool>,
}

impl Soa {
    fn new<'a>(boxes: impl Iterator<Item = &'a [f32; 4]>) -> Soa {
        let mut s = Soa {
            x1: Vec::new(),
            y1: Vec::new(),
            x2: Vec::new(),
            y2: Vec::new(),
            area: Vec::new(),
            nan: Vec::new(),
        };
        for b in boxes {
            s.nan.push(b.iter().any(|v| v.is_nan()));
            s.x1.push(b[0]);
            s.y1.push(b[1]);
            s.x2.push(b[2]);
            s.y2.push(b[3]);
            s.area.push((b[2] - b[0]) * (b[3] - b[1]));
        }
        s
    }
}

/// `max(0, max_{i < j} iou(i, j))`, NaN if any of them is NaN (torch's `max`).
///
/// Written with plain selects so that it vectorises: when neither box has a NaN coordinate,
/// the selects give exactly torch's NaN-propagating `min`/`max` (NaN can then only come
/// from `inf - inf` or `0 / 0`, and the arithmetic propagates it); a NaN coordinate makes the
/// IoU NaN in torch, which the per-box flag reproduces.
#[inline(always)]
fn column_max_impl(s: &Soa, j: usize) -> f32 {
    let (bx1, by1, bx2, by2, area_b) = (s.x1[j], s.y1[j], s.x2[j], s.y2[j], s.area[j]);
    let n = j;
    let (x1, y1, x2, y2, area, bad) = (
        &s.x1[..n],
        &s.y1[..n],
        &s.x2[..n],
        &s.y2[..n],
        &s.area[..n],
        &s.nan[..n],
    );
    let mut m = 0.0f32;
    let mut nan = s.nan[j];
    for i in 0..n {
        let mx = clamp_min(sel_min(x2[i], bx2) - sel_max(x1[i], bx1), 0.0);
        let my = clamp_min(sel_min(y2[i], by2) - sel_max(y1[i], by1), 0.0);
        let inter = mx * my;
        let v = inter / (area[i] + area_b - inter);
        nan |= v.is_nan() | bad[i];
        m = if v > m { v } else { m };
    }
    if nan {
        f32::NAN
    } else {
        m
    }
}

#[inline(always)]
fn sel_min(a: f32, b: f32) -> f32 {
    if b < a {
        b
    } else {
        a
    }
}

#[inline(always)]
fn sel_max(a: f32, b: f32) -> f32 {
    if a < b {
        b
    } else {
        a
    }
}

super::simd::multiversion!(fn column_max(s: &Soa, j: usize) -> f32 => column_max_impl);

/// YOLACT `fast_nms`: `boxes` `[N]` (candidates), `scores` `[C, N]` (per class). Returns
/// the kept detections, best first, at most `max_num_detections`.
pub fn fast_nms(
    boxes: &[[f32; 4]],
    scores: ArrayView2<f32>,
    cfg: &FastNmsConfig,
) -> Result<Vec<YolactDetection>, OpError> {
    let (num_classes, n) = scores.dim();
    check_same_len("fast_nms", "scores columns", n, "boxes", boxes.len())?;
    let k = cfg.top_k.min(n);
    if k == 0 || num_classes == 0 {
        return Ok(Vec::new());
    }
    // Classes in parallel; each returns its kept (box index, score) in rank order.
    let per_class: Vec<Vec<(usize, f32)>> = (0..num_classes)
        .into_par_iter()
        .map(|c| {
            let row: Vec<f32> = scores.row(c).iter().copied().collect();
            let top = top_k_desc(&row, k);
            let soa = Soa::new(top.iter().map(|&i| &boxes[i]));
            let top = &top[..];
            let mut kept = Vec::new();
            for (j, &bi) in top.iter().enumerate() {
                // Largest IoU with a better-ranked detection (the strict upper triangle's
                // column j; the zeros below it make the maximum at least 0).
                let m = column_max(&soa, j);
                let mut keep = m <= cfg.iou_threshold;
                if let Some(t) = cfg.second_threshold {
                    keep &= row[bi] > t;
                }
                if keep {
                    kept.push((bi, row[bi]));
                }
            }
            kept
        })
        .collect();
    // Merge (class-major order, as `scores[keep]` flattens) and sort by score.
    let mut all: Vec<YolactDetection> = per_class
        .into_iter()
        .enumerate()
        .flat_map(|(class, v)| {
            v.into_iter().map(move |(index, score)| YolactDetection {
                index,
                class,
                score,
            })
        })
        .collect();
    all.sort_by(|a, b| desc_cmp(a.score, b.score));
    all.truncate(cfg.max_num_detections);
    Ok(all)
}

/// YOLACT `Detect.detect` with FastNMS: keeps the priors whose best class score (over
/// `class_scores` `[C, P]`, background already removed) is `> conf_thresh`, then runs
/// [`fast_nms`] on them. Detection indices refer to priors.
pub fn detect(
    boxes: &[[f32; 4]],
    class_scores: ArrayView2<f32>,
    conf_thresh: f32,
    cfg: &FastNmsConfig,
) -> Result<Vec<YolactDetection>, OpError> {
    let (c, p) = class_scores.dim();
    check_same_len("detect", "class_scores columns", p, "boxes", boxes.len())?;
    let keep: Vec<usize> = (0..p)
        .filter(|&j| {
            // torch.max over classes propagates NaN; NaN > t is false.
            let mut m = f32::NEG_INFINITY;
            for i in 0..c {
                m = nan_max(m, class_scores[[i, j]]);
            }
            c > 0 && m > conf_thresh
        })
        .collect();
    if keep.is_empty() {
        return Ok(Vec::new());
    }
    let sub_boxes: Vec<[f32; 4]> = keep.iter().map(|&j| boxes[j]).collect();
    let sub_scores = class_scores.select(ndarray::Axis(1), &keep);
    let mut dets = fast_nms(&sub_boxes, sub_scores.view(), cfg)?;
    for d in &mut dets {
        d.index = keep[d.index];
    }
    Ok(dets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr2, Array};

    #[test]
    fn sanitize_by_hand() {
        // Relative 0.1..0.5 on 20 px with padding 1: 2-1=1 .. 10+1=11.
        assert_eq!(sanitize_coordinates(0.5, 0.1, 20, 1.0), (1.0, 11.0));
        assert_eq!(sanitize_coordinates(-0.2, 1.5, 20, 1.0), (0.0, 20.0));
    }

    #[test]
    fn assembly_fast_matches_reference() {
        let proto = Array::from_shape_fn((9, 11, 4), |(y, x, k)| {
            ((y * 3 + x * 5 + k * 7) % 13) as f32 / 6.0 - 1.0
        });
        let coeffs = Array::from_shape_fn((3, 4), |(i, k)| (i as f32 - 1.0) * 0.3 + k as f32 * 0.1);
        let boxes = [
            [0.1, 0.2, 0.6, 0.7],
            [0.9, 0.9, 0.0, 0.0],
            [0.5, 0.5, 0.5, 0.5],
        ];
        for crop in [false, true] {
            let a = assemble_masks_reference(proto.view(), coeffs.view(), &boxes, crop).unwrap();
            let b = assemble_masks(proto.view(), coeffs.view(), &boxes, crop).unwrap();
            for (u, v) in a.iter().zip(b.iter()) {
                assert!((u - v).abs() <= 1e-6 * u.abs().max(1.0), "{u} vs {v}");
            }
        }
        let a = assemble_masks(proto.view(), coeffs.view(), &boxes, true).unwrap();
        // Box 0: x in [0.1*11-1, 0.6*11+1) = [0.1, 7.6) → columns 1..=7; rows [0.8, 7.3) → 1..=7.
        assert_eq!(a[[0, 0, 3]], 0.0);
        assert!(a[[0, 1, 1]] > 0.0 && a[[0, 7, 7]] > 0.0);
        assert_eq!(a[[0, 8, 3]], 0.0);
        assert_eq!(a[[0, 3, 8]], 0.0);
        assert!(assemble_masks(proto.view(), coeffs.view(), &boxes[..1], true).is_err());
    }

    /// A wider map, and a NaN prototype, which must stay NaN outside the boxes as in torch.
    #[test]
    fn assembly_in_boxes_matches_reference() {
        let mut proto = Array::from_shape_fn((20, 37, 8), |(y, x, k)| {
            ((y * 7 + x * 3 + k * 5) % 17) as f32 / 8.0 - 1.0
        });
        let coeffs =
            Array::from_shape_fn((4, 8), |(i, k)| (i as f32 - 1.5) * 0.2 + k as f32 * 0.05);
        let boxes = [
            [0.05, 0.1, 0.95, 0.8],
            [0.3, 0.0, 0.7, 1.0],
            [0.0, 0.5, 0.2, 0.6],
            [1.2, 1.2, 1.5, 1.5],
        ];
        for nan in [false, true] {
            if nan {
                proto[[2, 2, 0]] = f32::NAN;
            }
            let a = assemble_masks_reference(proto.view(), coeffs.view(), &boxes, true).unwrap();
            let b = assemble_masks(proto.view(), coeffs.view(), &boxes, true).unwrap();
            for (u, v) in a.iter().zip(b.iter()) {
                assert!(
                    (u.is_nan() && v.is_nan()) || (u - v).abs() <= 1e-6 * u.abs().max(1.0),
                    "{u} vs {v}"
                );
            }
            assert_eq!(b.iter().any(|v| v.is_nan()), nan);
        }
    }

    #[test]
    fn fast_nms_by_hand() {
        let boxes = [
            [0.0, 0.0, 0.5, 0.5],
            [0.0, 0.0, 0.5, 0.55], // IoU with 0: 0.909
            [0.6, 0.6, 0.9, 0.9],
            [0.01, 0.0, 0.5, 0.56], // IoU with 1 high, with 0 high
        ];
        let scores = arr2(&[[0.9f32, 0.8, 0.1, 0.7], [0.05, 0.06, 0.95, 0.0]]);
        let d = fast_nms(&boxes, scores.view(), &FastNmsConfig::default()).unwrap();
        let got: Vec<(usize, usize)> = d.iter().map(|d| (d.class, d.index)).collect();
        // Class 0: 0 kept, 1 and 3 suppressed by 0, 2 kept. Class 1: 2 kept, then 1 (best
        // overlap with 2 is 0), 0 suppressed by 1, 3 suppressed by 1.
        assert_eq!(got, vec![(1, 2), (0, 0), (0, 2), (1, 1)]);
        let cfg = FastNmsConfig {
            max_num_detections: 2,
            ..Default::default()
        };
        assert_eq!(fast_nms(&boxes, scores.view(), &cfg).unwrap().len(), 2);
        let det = detect(&boxes, scores.view(), 0.5, &FastNmsConfig::default()).unwrap();
        // Priors with max score > 0.5: 0, 1, 2, 3 (0.9, 0.8, 0.95, 0.7).
        assert_eq!(det.len(), 4);
        assert!(
            detect(&boxes, scores.view(), 0.99, &FastNmsConfig::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn fast_nms_nan_and_degenerate() {
        // Box 1 has a NaN coordinate: its IoU column is NaN, so it is dropped, and it makes
        // every later column NaN too (torch's max propagates NaN). Two identical zero-area
        // boxes have IoU 0/0 = NaN as well.
        let boxes = [
            [0.0, 0.0, 0.5, 0.5],
            [f32::NAN, 0.0, 0.5, 0.5],
            [0.6, 0.6, 0.9, 0.9],
        ];
        let scores = arr2(&[[0.9f32, 0.8, 0.7]]);
        let d = fast_nms(&boxes, scores.view(), &FastNmsConfig::default()).unwrap();
        assert_eq!(d.iter().map(|d| d.index).collect::<Vec<_>>(), vec![0]);
        let z = [
            [0.2, 0.2, 0.2, 0.2],
            [0.2, 0.2, 0.2, 0.2],
            [0.6, 0.6, 0.9, 0.9],
        ];
        let d = fast_nms(&z, scores.view(), &FastNmsConfig::default()).unwrap();
        assert_eq!(d.iter().map(|d| d.index).collect::<Vec<_>>(), vec![0, 2]);
    }
}
