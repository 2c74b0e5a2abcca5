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
//! YolactEdge (haotian-liu/yolact_edge @ `873fceb3`) keeps `traditional_nms` instead
//! ([`traditional_nms`]): per class, the candidates scoring `> conf_thresh` go through the
//! Cython `nms` of Fast R-CNN (boxes scaled by `max_size`, `+1` areas, f32, suppressed when
//! IoU `>=` the threshold, kept in index order), then all classes are sorted by score and the
//! best `max_num_detections` kept.
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
    super::sigmoid_slice(mid);
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

/// Fast mask assembly, in bands of rows in parallel. With crop (and values whose products
/// cannot overflow), only the pixels inside each crop are computed, with the reference's
/// summation order; otherwise one GEMM (`C · Pᵀ`, `[n, h·w]`) computes every pixel. Then
/// sigmoid (a vectorised `exp`) and crop. Equal to [`assemble_masks_reference`] up to the
/// GEMM's summation order and the last bits of `exp` (within 1e-6).
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
    if n * hw == 0 {
        return Ok(Array3::zeros((n, h, w)));
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
    // A mask value outside its crop is 0 unless its dot product is NaN (sigmoid(NaN)·0). No
    // dot product can be NaN when every product is finite and their sum cannot overflow
    // (|p|·|c|·k far below f32::MAX): then only the pixels inside each crop are computed,
    // each dot product summed in prototype order as the reference does. Otherwise (and
    // without crop) every pixel of every mask is computed, by a GEMM.
    let bounded = abs_max(p) * abs_max(c) * (k as f32) < f32::MAX / 4.0;
    let sparse = crop && k > 0 && bounded;
    // Bands of prototype rows, in parallel, each finished (sigmoid, crop) while in cache.
    // Every output value is written exactly once (no zeroing pass first).
    let band_rows = (2048 / w).clamp(1, h);
    let mut out = ndarray::Array2::<f32>::uninit((n, hw));
    let bands: Vec<(usize, ndarray::ArrayViewMut2<std::mem::MaybeUninit<f32>>)> = out
        .axis_chunks_iter_mut(ndarray::Axis(1), band_rows * w)
        .enumerate()
        .map(|(i, v)| (i * band_rows, v))
        .collect();
    bands.into_par_iter().for_each(|(y0, mut band)| {
        let cols = band.dim().1;
        let rows = cols / w;
        let band_proto = &p[y0 * w * k..(y0 * w + cols) * k];
        let zero = std::mem::MaybeUninit::new(0.0f32);
        // A band row of a mask, once every value is written, as f32 values.
        let init = |m: &mut [std::mem::MaybeUninit<f32>]| -> &mut [f32] {
            // SAFETY: MaybeUninit<f32> has f32's layout, and the caller wrote every value.
            unsafe { &mut *(m as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) }
        };
        if sparse {
            // The band's prototypes coefficient-major (`[k][stride]`): 16 neighbouring pixels
            // of one coefficient are one vector. `CROP_LANES` columns of padding let the
            // last vector of a row read past its end.
            let stride = cols + CROP_LANES;
            let mut pt = vec![0f32; k * stride];
            transpose_to(band_proto, cols, k, &mut pt, stride);
            for (i, mut m) in band.outer_iter_mut().enumerate() {
                // Zeros first (outside the crop, with a finite dot product, the value is 0),
                // so that every value is initialised before the crop is computed into it.
                m.fill(zero);
                let Some(m) = m.as_slice_mut() else {
                    continue; // never: a band's rows are contiguous
                };
                let m = init(m);
                let [xa, xb, ya, yb] = limits[i];
                // Band rows `ra..rb` hold the crop's rows `ya..yb`, columns `xa..xb`.
                let ra = ya.clamp(y0, y0 + rows) - y0;
                let rb = yb.clamp(y0, y0 + rows) - y0;
                if ra >= rb || xa >= xb {
                    continue;
                }
                let m = &mut m[ra * w..rb * w];
                crop_dots(
                    &pt[ra * w + xa..],
                    stride,
                    w,
                    rb - ra,
                    xb - xa,
                    &c[i * k..(i + 1) * k],
                    &mut m[xa..],
                );
                for row in m.chunks_exact_mut(w) {
                    sigmoid_row(&mut row[xa..xb], 0, xb - xa);
                }
            }
            return;
        }
        if k == 0 {
            band.fill(zero); // empty dot products
        } else {
            let (rs, cs) = (band.strides()[0], band.strides()[1]);
            // band[n, cols] = coeffs[n, k] · proto[y0·w .., k]ᵀ, every value written (beta = 0
            // never reads the output).
            // SAFETY: `c` holds n·k values (row stride k), `band_proto` holds cols·k values
            // (column stride k), `band` is an exclusive n x cols view with strides (rs, cs);
            // the output does not alias the inputs.
            unsafe {
                matrixmultiply::sgemm(
                    n,
                    k,
                    cols,
                    1.0,
                    c.as_ptr(),
                    k as isize,
                    1,
                    band_proto.as_ptr(),
                    1,
                    k as isize,
                    0.0,
                    band.as_mut_ptr() as *mut f32,
                    rs,
                    cs,
                );
            }
        }
        for (mut m, lim) in band.outer_iter_mut().zip(&limits) {
            if let Some(m) = m.as_slice_mut() {
                for (r, row) in init(m).chunks_exact_mut(w).enumerate() {
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
    // SAFETY: every band wrote every value of its n x cols block (above), and the bands
    // cover all h·w columns.
    let out = unsafe { out.assume_init() };
    out.into_shape_with_order((n, hw))
        .and_then(|o| o.into_shape_with_order((n, h, w)))
        .map_err(|e| OpError::shape(OP, e.to_string()))
}

/// Pixels per vector of [`crop_dots`].
const CROP_LANES: usize = 16;

/// `dst[j·stride + x] = src[x·k + j]` for `x < cols`, `j < k`.
fn transpose_to(src: &[f32], cols: usize, k: usize, dst: &mut [f32], stride: usize) {
    #[allow(unused_mut)]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if super::simd::has_avx() && k.is_multiple_of(8) && k > 0 {
        done = cols / 8 * 8;
        for x0 in (0..done).step_by(8) {
            // SAFETY: AVX is present; the blocks read pixels `x0..x0 + 8 <= cols` (stride k),
            // coefficients `0..k` of `src` (cols·k values), and write rows `0..k`, columns
            // `x0..x0 + 8 <= stride` of `dst` (k·stride values).
            unsafe {
                super::simd::transpose8x8_blocks(
                    src[x0 * k..].as_ptr(),
                    k,
                    dst[x0..].as_mut_ptr(),
                    stride,
                    k / 8,
                );
            }
        }
    }
    for x in done..cols {
        for j in 0..k {
            dst[j * stride + x] = src[x * k + j];
        }
    }
}

/// `out[r·w + x] = Σ_j pt[j·stride + r·w + x] · coeffs[j]` for `r < rows`, `x < len`, summed
/// in `j` order as the reference sums (no fused multiply-add): [`CROP_LANES`] pixels of up to
/// 4 rows at a time (independent sums, so that the additions' latency overlaps). Each row
/// of `pt` holds [`CROP_LANES`] values beyond the last one read.
#[inline(always)]
fn crop_dots_impl(
    pt: &[f32],
    stride: usize,
    w: usize,
    rows: usize,
    len: usize,
    coeffs: &[f32],
    out: &mut [f32],
) {
    #[inline(always)]
    fn block<const R: usize>(
        pt: &[f32],
        stride: usize,
        w: usize,
        r0: usize,
        len: usize,
        coeffs: &[f32],
        out: &mut [f32],
    ) {
        const L: usize = CROP_LANES;
        for x0 in (0..len).step_by(L) {
            let mut acc = [[0f32; L]; R];
            for (j, &cj) in coeffs.iter().enumerate() {
                for (q, a) in acc.iter_mut().enumerate() {
                    let at = j * stride + (r0 + q) * w + x0;
                    let v: &[f32; L] = pt[at..at + L].try_into().unwrap_or(&[0.0; L]);
                    for l in 0..L {
                        a[l] += v[l] * cj;
                    }
                }
            }
            let n = L.min(len - x0);
            for (q, a) in acc.iter().enumerate() {
                out[(r0 + q) * w + x0..][..n].copy_from_slice(&a[..n]);
            }
        }
    }
    let mut r = 0;
    while r + 4 <= rows {
        block::<4>(pt, stride, w, r, len, coeffs, out);
        r += 4;
    }
    while r < rows {
        block::<1>(pt, stride, w, r, len, coeffs, out);
        r += 1;
    }
}

super::simd::multiversion!(fn crop_dots(pt: &[f32], stride: usize, w: usize, rows: usize, len: usize, coeffs: &[f32], out: &mut [f32]) => crop_dots_impl);

/// The largest `|v|`, or infinity when a value is infinite or NaN (lane-wise, vectorised).
#[inline(always)]
fn abs_max_impl(v: &[f32]) -> f32 {
    const L: usize = 16;
    let mut max = [0f32; L];
    // x · 0 is 0 for finite x and NaN for an infinity or NaN.
    let mut bad = [0f32; L];
    let chunks = v.chunks_exact(L);
    let tail = chunks.remainder();
    for ch in chunks {
        for j in 0..L {
            max[j] = max[j].max(ch[j].abs());
            bad[j] += ch[j] * 0.0;
        }
    }
    for (j, &x) in tail.iter().enumerate() {
        max[j] = max[j].max(x.abs());
        bad[j] += x * 0.0;
    }
    if bad.iter().any(|b| *b != 0.0) {
        f32::INFINITY
    } else {
        max.iter().fold(0.0, |a, &b| a.max(b))
    }
}

super::simd::multiversion!(fn abs_max(v: &[f32]) -> f32 => abs_max_impl);

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
    // The best score of each prior, class row by class row (contiguous reads); torch.max
    // over classes propagates NaN, and NaN > t is false.
    let mut best = vec![f32::NEG_INFINITY; p];
    for row in class_scores.outer_iter() {
        for (m, &v) in best.iter_mut().zip(row) {
            *m = nan_max(*m, v);
        }
    }
    let keep: Vec<usize> = (0..p).filter(|&j| c > 0 && best[j] > conf_thresh).collect();
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

/// `Detect.traditional_nms` of YolactEdge on `boxes` (relative, as decoded) and
/// `class_scores` `[num_classes - 1, P]`: the kept detections (`index` into `boxes`), best
/// score first. The boxes YolactEdge returns are `(b·max_size)/max_size` in f32 (its undo of
/// the scaling), which [`scaled_back`] gives.
pub fn traditional_nms(
    boxes: &[[f32; 4]],
    class_scores: ArrayView2<f32>,
    iou_threshold: f32,
    conf_thresh: f32,
    max_size: f32,
    max_num_detections: usize,
) -> Result<Vec<YolactDetection>, OpError> {
    let (c, p) = class_scores.dim();
    check_same_len(
        "traditional_nms",
        "class_scores columns",
        p,
        "boxes",
        boxes.len(),
    )?;
    let scaled: Vec<[f32; 4]> = boxes.iter().map(|b| b.map(|v| v * max_size)).collect();
    let area = |b: &[f32; 4]| (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0);
    let mut all: Vec<YolactDetection> = Vec::new();
    for class in 0..c {
        let cand: Vec<usize> = (0..p)
            .filter(|&j| class_scores[[class, j]] > conf_thresh)
            .collect();
        // scores.argsort()[::-1]: descending, ties in reverse index order.
        let mut order: Vec<usize> = (0..cand.len()).collect();
        order.sort_by(|&a, &b| {
            class_scores[[class, cand[b]]]
                .total_cmp(&class_scores[[class, cand[a]]])
                .then(b.cmp(&a))
        });
        let mut suppressed = vec![false; cand.len()];
        for (pos, &i) in order.iter().enumerate() {
            if suppressed[i] {
                continue;
            }
            let bi = &scaled[cand[i]];
            let ai = area(bi);
            for &j in &order[pos + 1..] {
                if suppressed[j] {
                    continue;
                }
                let bj = &scaled[cand[j]];
                let w = (bi[2].min(bj[2]) - bi[0].max(bj[0]) + 1.0).max(0.0);
                let h = (bi[3].min(bj[3]) - bi[1].max(bj[1]) + 1.0).max(0.0);
                let inter = w * h;
                if inter / (ai + area(bj) - inter) >= iou_threshold {
                    suppressed[j] = true;
                }
            }
        }
        // np.where(suppressed == 0): the kept candidates in index order.
        all.extend(
            (0..cand.len())
                .filter(|&i| !suppressed[i])
                .map(|i| YolactDetection {
                    index: cand[i],
                    class,
                    score: class_scores[[class, cand[i]]],
                }),
        );
    }
    all.sort_by(|a, b| b.score.total_cmp(&a.score));
    all.truncate(max_num_detections);
    Ok(all)
}

/// YolactEdge's kept box: `(b·max_size)/max_size` in f32.
pub fn scaled_back(b: &[f32; 4], max_size: f32) -> [f32; 4] {
    b.map(|v| (v * max_size) / max_size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr2, Array};

    #[test]
    fn traditional_nms_by_hand() {
        // Class 0: boxes 0 and 1 overlap (IoU of the +1 boxes >= 0.5), box 2 apart; class 1:
        // box 1 alone. Boxes relative to max_size 10.
        let boxes = [
            [0.0, 0.0, 0.4, 0.4],
            [0.0, 0.0, 0.4, 0.5],
            [0.6, 0.6, 0.9, 0.9],
        ];
        let scores = arr2(&[[0.9f32, 0.8, 0.3], [0.01, 0.7, 0.02]]);
        let d = traditional_nms(&boxes, scores.view(), 0.5, 0.05, 10.0, 100).unwrap();
        let got: Vec<(usize, usize)> = d.iter().map(|d| (d.index, d.class)).collect();
        assert_eq!(got, [(0, 0), (1, 1), (2, 0)]);
        let d = traditional_nms(&boxes, scores.view(), 0.5, 0.05, 10.0, 2).unwrap();
        assert_eq!(d.len(), 2);
    }

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
        // No prototypes: every dot product is 0, sigmoid 0.5 inside the crops.
        let (p0, c0) = (
            Array3::<f32>::zeros((9, 11, 0)),
            ndarray::Array2::<f32>::zeros((3, 0)),
        );
        for crop in [false, true] {
            let a = assemble_masks_reference(p0.view(), c0.view(), &boxes, crop).unwrap();
            assert_eq!(
                a,
                assemble_masks(p0.view(), c0.view(), &boxes, crop).unwrap()
            );
        }
        let a = assemble_masks(proto.view(), coeffs.view(), &boxes, true).unwrap();
        // Box 0: x in [0.1*11-1, 0.6*11+1) = [0.1, 7.6) → columns 1..=7; rows [0.8, 7.3) → 1..=7.
        assert_eq!(a[[0, 0, 3]], 0.0);
        assert!(a[[0, 1, 1]] > 0.0 && a[[0, 7, 7]] > 0.0);
        assert_eq!(a[[0, 8, 3]], 0.0);
        assert_eq!(a[[0, 3, 8]], 0.0);
        assert!(assemble_masks(proto.view(), coeffs.view(), &boxes[..1], true).is_err());
    }

    /// Cropped assembly, fast against reference: NaN where the reference has NaN, else within
    /// 1e-6 relative. Returns the fast result.
    fn cropped_fast_matches_reference(
        proto: &Array3<f32>,
        coeffs: &ndarray::Array2<f32>,
        boxes: &[[f32; 4]],
        what: &str,
    ) -> Array3<f32> {
        let a = assemble_masks_reference(proto.view(), coeffs.view(), boxes, true).unwrap();
        let b = assemble_masks(proto.view(), coeffs.view(), boxes, true).unwrap();
        for (u, v) in a.iter().zip(b.iter()) {
            assert!(
                (u.is_nan() && v.is_nan()) || (u - v).abs() <= 1e-6 * u.abs().max(1.0),
                "{what}: {u} vs {v}"
            );
        }
        b
    }

    /// Several bands of rows (the crop-only path computes each crop's rows band by band),
    /// vector tails, boxes off the map, values near the bound under which that path is
    /// taken; and an infinite coefficient, whose NaN products (∞·0) must stay NaN outside
    /// the boxes as in torch (that path is not taken then).
    #[test]
    fn assembly_across_bands_matches_reference() {
        let proto = Array::from_shape_fn((70, 45, 32), |(y, x, k)| {
            ((y * 7 + x * 3 + k * 5) % 23) as f32 / 11.0 - 1.0
        });
        let coeffs =
            Array::from_shape_fn((6, 32), |(i, k)| (i as f32 - 2.5) * 0.05 + k as f32 * 0.01);
        let boxes = [
            [0.05, 0.1, 0.95, 0.8],
            [0.3, 0.0, 0.7, 1.0],
            [0.0, 0.5, 0.2, 0.52],
            [1.2, 1.2, 1.5, 1.5],
            [-0.5, 0.33, 0.41, 0.99],
            [0.61, 0.0, 0.62, 0.03],
        ];
        for case in 0..3 {
            let mut coeffs = coeffs.clone();
            let mut proto = proto.clone();
            match case {
                1 => {
                    proto.mapv_inplace(|v| v * 1e18);
                    coeffs.mapv_inplace(|v| v * 1e18);
                }
                2 => coeffs[[1, 3]] = f32::INFINITY,
                _ => {}
            }
            let b =
                cropped_fast_matches_reference(&proto, &coeffs, &boxes, &format!("case {case}"));
            assert_eq!(b.iter().any(|v| v.is_nan()), case == 2);
        }
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
            let b = cropped_fast_matches_reference(&proto, &coeffs, &boxes, &format!("nan {nan}"));
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
