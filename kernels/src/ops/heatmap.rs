//! Heatmap peak extraction of CenterNet (xingyizhou/CenterNet `src/lib/models/decode.py`):
//! `_nms` (a `k x k` max-pool with stride 1 keeps a value only where it equals the pool
//! maximum, others become `heat * 0`) and `_topk` (top `K` per class over `H·W`, then top `K`
//! over the `C·K` candidates); CornerNet's variant takes the top `K` over the flattened
//! `C·H·W` ([`topk_flat`]).
//!
//! Heatmaps are `[C, H, W]` (one image). Ties in `torch.topk` are ordered by ascending index
//! here (see [`crate::ops`] on ties).
//!
//! NaN: the max-pool propagates NaN like torch's, so a NaN value suppresses its whole
//! neighbourhood, and stays NaN itself (`NaN * 0`); NaN sorts as the largest score, as in
//! `torch.topk`.

use ndarray::{Array3, ArrayView3};
use rayon::prelude::*;

use super::{desc_cmp, OpError};

/// A peak: score, class, flat index `y·W + x` within the class, and `(y, x)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Peak {
    pub score: f32,
    pub class: usize,
    pub index: usize,
    pub y: usize,
    pub x: usize,
}

fn check_kernel(kernel: usize) -> Result<(), OpError> {
    if kernel == 0 || kernel.is_multiple_of(2) {
        return Err(OpError::invalid(
            "heatmap_nms",
            format!("kernel must be odd and positive, got {kernel}"),
        ));
    }
    Ok(())
}

/// torch `max` of two pooled values: NaN wins.
#[inline(always)]
fn pool_max(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() {
        b
    } else {
        a
    }
}

/// One class plane: `out = heat * (maxpool(heat) == heat)`, with a separable max-pool
/// (rows, then columns; the same maximum as torch's 2-D window, `-inf` padding).
fn nms_plane(heat: &[f32], h: usize, w: usize, kernel: usize, tmp: &mut Vec<f32>, out: &mut [f32]) {
    tmp.clear();
    tmp.resize(h * w, f32::NEG_INFINITY);
    if kernel == 3 && w >= 2 && h >= 2 {
        nms_plane3(heat, h, w, tmp, out);
        return;
    }
    let r = kernel / 2;
    for y in 0..h {
        let row = &heat[y * w..(y + 1) * w];
        let trow = &mut tmp[y * w..(y + 1) * w];
        for (x, t) in trow.iter_mut().enumerate() {
            let lo = x.saturating_sub(r);
            let hi = (x + r).min(w - 1);
            let mut m = f32::NEG_INFINITY;
            for &v in &row[lo..=hi] {
                m = pool_max(m, v);
            }
            *t = m;
        }
    }
    for y in 0..h {
        let lo = y.saturating_sub(r);
        let hi = (y + r).min(h - 1);
        for x in 0..w {
            let mut m = f32::NEG_INFINITY;
            for yy in lo..=hi {
                m = pool_max(m, tmp[yy * w + x]);
            }
            let v = heat[y * w + x];
            out[y * w + x] = v * if m == v { 1.0 } else { 0.0 };
        }
    }
}

/// The 3x3 case, written as shifted slices so that it vectorises.
#[inline(always)]
fn nms_plane3_impl(heat: &[f32], h: usize, w: usize, tmp: &mut [f32], out: &mut [f32]) {
    for (row, trow) in heat.chunks_exact(w).zip(tmp.chunks_exact_mut(w)).take(h) {
        trow[0] = pool_max(row[0], row[1]);
        trow[w - 1] = pool_max(row[w - 2], row[w - 1]);
        let (l, c, r) = (&row[..w - 2], &row[1..w - 1], &row[2..]);
        for (i, t) in trow[1..w - 1].iter_mut().enumerate() {
            *t = pool_max(pool_max(l[i], c[i]), r[i]);
        }
    }
    for y in 0..h {
        let above = &tmp[y.saturating_sub(1) * w..][..w];
        let mid = &tmp[y * w..][..w];
        let below = &tmp[(y + 1).min(h - 1) * w..][..w];
        let hrow = &heat[y * w..][..w];
        let orow = &mut out[y * w..][..w];
        for x in 0..w {
            let m = pool_max(pool_max(above[x], mid[x]), below[x]);
            let v = hrow[x];
            orow[x] = v * if m == v { 1.0 } else { 0.0 };
        }
    }
}

super::simd::multiversion!(fn nms_plane3(heat: &[f32], h: usize, w: usize, tmp: &mut [f32], out: &mut [f32]) => nms_plane3_impl);

/// CenterNet `_nms`: suppress every value that is not the maximum of its `kernel x kernel`
/// window (`kernel` odd; CenterNet uses 3). Classes in parallel.
pub fn heatmap_nms(heat: ArrayView3<f32>, kernel: usize) -> Result<Array3<f32>, OpError> {
    check_kernel(kernel)?;
    let (c, h, w) = heat.dim();
    let heat = heat.as_standard_layout();
    let mut out = Array3::<f32>::zeros((c, h, w));
    if out.is_empty() {
        return Ok(out);
    }
    let src = heat.as_slice().unwrap_or(&[]);
    let dst = out.as_slice_mut().unwrap_or(&mut []);
    dst.par_chunks_mut(h * w)
        .zip(src.par_chunks(h * w))
        .for_each_init(Vec::new, |tmp, (o, s)| nms_plane(s, h, w, kernel, tmp, o));
    Ok(out)
}

/// Indices of the `k` largest values (NaN largest, ties by index), best first.
fn top_indices(values: &[f32], k: usize) -> Vec<usize> {
    super::top_k_desc(values, k)
}

fn peak(score: f32, class: usize, index: usize, w: usize) -> Peak {
    Peak {
        score,
        class,
        index,
        y: index / w,
        x: index % w,
    }
}

/// CenterNet `_topk` on a suppressed heatmap `[C, H, W]`: the best `k` per class, then the
/// best `k` of those. `k` must not exceed `H·W` (torch.topk raises).
pub fn centernet_topk(heat: ArrayView3<f32>, k: usize) -> Result<Vec<Peak>, OpError> {
    let (c, h, w) = heat.dim();
    if k > h * w {
        return Err(OpError::invalid(
            "centernet_topk",
            format!("k = {k} is larger than H·W = {}", h * w),
        ));
    }
    let heat = heat.as_standard_layout();
    let src = heat.as_slice().unwrap_or(&[]);
    if c == 0 || k == 0 {
        return Ok(Vec::new());
    }
    let per_class: Vec<(Vec<f32>, Vec<usize>)> = src
        .par_chunks(h * w)
        .map(|plane| {
            let idx = top_indices(plane, k);
            (idx.iter().map(|&i| plane[i]).collect(), idx)
        })
        .collect();
    // Candidates in class-major order, as `topk_scores.view(batch, -1)`.
    let scores: Vec<f32> = per_class
        .iter()
        .flat_map(|(s, _)| s.iter().copied())
        .collect();
    let best = top_indices(&scores, k);
    Ok(best
        .into_iter()
        .map(|j| {
            let (class, r) = (j / k, j % k);
            peak(scores[j], class, per_class[class].1[r], w)
        })
        .collect())
}

/// CenterNet `_topk_channel` (its multi-pose decoding of the keypoint heatmaps): the best `k`
/// of each channel of `[C, H, W]` separately, best first per channel. `k` must not exceed
/// `H·W`.
pub fn topk_per_channel(heat: ArrayView3<f32>, k: usize) -> Result<Vec<Vec<Peak>>, OpError> {
    let (_, h, w) = heat.dim();
    if k > h * w {
        return Err(OpError::invalid(
            "topk_per_channel",
            format!("k = {k} is larger than H·W = {}", h * w),
        ));
    }
    let heat = heat.as_standard_layout();
    let src = heat.as_slice().unwrap_or(&[]);
    if h * w == 0 {
        return Ok(Vec::new());
    }
    Ok(src
        .par_chunks(h * w)
        .enumerate()
        .map(|(c, plane)| {
            top_indices(plane, k)
                .into_iter()
                .map(|i| peak(plane[i], c, i, w))
                .collect()
        })
        .collect())
}

/// CornerNet `_topk`: the best `k` over the flattened `C·H·W`.
pub fn topk_flat(heat: ArrayView3<f32>, k: usize) -> Result<Vec<Peak>, OpError> {
    let (c, h, w) = heat.dim();
    if k > c * h * w {
        return Err(OpError::invalid(
            "topk_flat",
            format!("k = {k} is larger than C·H·W = {}", c * h * w),
        ));
    }
    let heat = heat.as_standard_layout();
    let src = heat.as_slice().unwrap_or(&[]);
    Ok(top_indices(src, k)
        .into_iter()
        .map(|j| peak(src[j], j / (h * w), j % (h * w), w))
        .collect())
}

/// Each `h x w` class plane of `src` mapped by `map`, suppressed with a `kernel x kernel`
/// window and ranked while it is in cache: its best `k` values and their indices, best first
/// (ties by index). Classes in parallel.
fn plane_top_k(
    src: &[f32],
    (h, w): (usize, usize),
    k: usize,
    kernel: usize,
    map: impl Fn(&mut [f32]) + Sync,
) -> Vec<(Vec<f32>, Vec<usize>)> {
    src.par_chunks(h * w)
        .map_init(
            || (Vec::new(), Vec::new(), vec![0f32; h * w]),
            |(mapped, tmp, sup), plane| {
                mapped.clear();
                mapped.extend_from_slice(plane);
                map(mapped);
                nms_plane(mapped, h, w, kernel, tmp, sup);
                let idx = top_indices(sup, k);
                (idx.iter().map(|&i| sup[i]).collect(), idx)
            },
        )
        .collect()
}

/// [`heatmap_nms`] with a 3x3 window followed by [`centernet_topk`] (CenterNet's decode).
pub fn extract_peaks(heat: ArrayView3<f32>, k: usize) -> Result<Vec<Peak>, OpError> {
    extract_peaks_mapped(heat, k, |_| {})
}

/// [`extract_peaks`] of `map(heat)`, where `map` transforms a class plane in place
/// elementwise (CenterNet's decode takes the sigmoid of the logits first): the same result as
/// mapping the whole heatmap and then calling [`extract_peaks`], with each class plane mapped,
/// suppressed and ranked in one pass while it is in cache, classes in parallel.
pub fn extract_peaks_mapped(
    heat: ArrayView3<f32>,
    k: usize,
    map: impl Fn(&mut [f32]) + Sync,
) -> Result<Vec<Peak>, OpError> {
    let (c, h, w) = heat.dim();
    if k > h * w {
        return Err(OpError::invalid(
            "extract_peaks",
            format!("k = {k} is larger than H·W = {}", h * w),
        ));
    }
    if c == 0 || k == 0 {
        return Ok(Vec::new());
    }
    let heat = heat.as_standard_layout();
    let per_class = plane_top_k(heat.as_slice().unwrap_or(&[]), (h, w), k, 3, map);
    // Candidates in class-major order, as `topk_scores.view(batch, -1)`.
    let scores: Vec<f32> = per_class
        .iter()
        .flat_map(|(s, _)| s.iter().copied())
        .collect();
    let best = top_indices(&scores, k);
    Ok(best
        .into_iter()
        .map(|j| {
            let (class, r) = (j / k, j % k);
            peak(scores[j], class, per_class[class].1[r], w)
        })
        .collect())
}

/// [`heatmap_nms`] of `map(heat)` with a `kernel x kernel` window followed by [`topk_flat`]
/// (CornerNet's decode: `_nms` of the sigmoid, then the best `k` over the flattened `C·H·W`),
/// each class plane mapped, suppressed and ranked in one pass while it is in cache, classes
/// in parallel. The best `k` overall are among the planes' best `k`, and ties keep the flat
/// index order of [`topk_flat`].
pub fn extract_peaks_flat_mapped(
    heat: ArrayView3<f32>,
    k: usize,
    kernel: usize,
    map: impl Fn(&mut [f32]) + Sync,
) -> Result<Vec<Peak>, OpError> {
    check_kernel(kernel)?;
    let (c, h, w) = heat.dim();
    if k > c * h * w {
        return Err(OpError::invalid(
            "extract_peaks_flat",
            format!("k = {k} is larger than C·H·W = {}", c * h * w),
        ));
    }
    if k == 0 {
        return Ok(Vec::new());
    }
    let heat = heat.as_standard_layout();
    let per_class = plane_top_k(heat.as_slice().unwrap_or(&[]), (h, w), k, kernel, map);
    // Candidates in flat index order (class, then ascending index), so that ties keep it.
    let (scores, places): (Vec<f32>, Vec<(usize, usize)>) = per_class
        .into_iter()
        .enumerate()
        .flat_map(|(class, (values, idx))| {
            let mut cands: Vec<(f32, usize)> = values.into_iter().zip(idx).collect();
            cands.sort_unstable_by_key(|&(_, i)| i);
            cands.into_iter().map(move |(v, i)| (v, (class, i)))
        })
        .unzip();
    Ok(top_indices(&scores, k)
        .into_iter()
        .map(|j| {
            let (class, index) = places[j];
            peak(scores[j], class, index, w)
        })
        .collect())
}

/// Literal version: 2-D window max per pixel, then full sorts.
pub fn extract_peaks_reference(heat: ArrayView3<f32>, k: usize) -> Result<Vec<Peak>, OpError> {
    let (c, h, w) = heat.dim();
    if k > h * w {
        return Err(OpError::invalid(
            "extract_peaks",
            format!("k = {k} is larger than H·W"),
        ));
    }
    let mut sup = Array3::<f32>::zeros((c, h, w));
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                let mut m = f32::NEG_INFINITY;
                for yy in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                    for xx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                        m = pool_max(m, heat[[ch, yy, xx]]);
                    }
                }
                let v = heat[[ch, y, x]];
                sup[[ch, y, x]] = v * if m == v { 1.0 } else { 0.0 };
            }
        }
    }
    let mut cand = Vec::new();
    for ch in 0..c {
        let plane: Vec<f32> = sup
            .index_axis(ndarray::Axis(0), ch)
            .iter()
            .copied()
            .collect();
        let mut idx: Vec<usize> = (0..plane.len()).collect();
        idx.sort_by(|a, b| desc_cmp(plane[*a], plane[*b]));
        for &i in idx.iter().take(k) {
            cand.push((plane[i], ch, i));
        }
    }
    let mut order: Vec<usize> = (0..cand.len()).collect();
    order.sort_by(|a, b| desc_cmp(cand[*a].0, cand[*b].0));
    Ok(order
        .into_iter()
        .take(k)
        .map(|j| peak(cand[j].0, cand[j].1, cand[j].2, w))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    #[test]
    fn top_k_of_each_channel() {
        let heat = Array3::from_shape_vec(
            (2, 2, 3),
            vec![0.1, 0.9, 0.3, 0.9, 0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        )
        .unwrap();
        let got = topk_per_channel(heat.view(), 2).unwrap();
        // Ties by index: (0, 1) before (1, 0).
        assert_eq!((got[0][0].index, got[0][1].index), (1, 3));
        assert_eq!((got[1][0].index, got[1][0].y, got[1][0].x), (5, 1, 2));
        assert!(got.iter().flatten().all(|p| p.class < 2));
        assert!(topk_per_channel(heat.view(), 7).is_err());
    }

    /// The fused path equals mapping the whole heatmap first, saturated ties included.
    #[test]
    fn mapped_peaks_equal_mapping_first() {
        use crate::layers::Activation;
        let mut k = 7u32;
        let mut logits = Array3::from_shape_fn((5, 17, 23), |_| {
            k = k.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            ((k >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 12.0
        });
        // Logits that the f32 sigmoid maps to the same 1.0: neighbours tie after the map.
        logits[[2, 5, 5]] = 30.0;
        logits[[2, 5, 6]] = 31.0;
        let mut heat = logits.clone();
        Activation::Sigmoid.apply_array(heat.view_mut().into_dyn());
        let want = extract_peaks(heat.view(), 40).unwrap();
        let got = extract_peaks_mapped(logits.view(), 40, |p| Activation::Sigmoid.apply_slice(p))
            .unwrap();
        assert_eq!(got, want);
        assert!(got.iter().filter(|p| p.score == 1.0).count() >= 2);
    }

    /// CornerNet's fused path equals the sigmoid, `heatmap_nms` and `topk_flat` one after the
    /// other, saturated ties across classes included, for several windows and k.
    #[test]
    fn flat_mapped_peaks_equal_the_steps() {
        use crate::layers::Activation;
        let mut k = 11u32;
        let mut logits = Array3::from_shape_fn((6, 13, 19), |_| {
            k = k.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            ((k >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 12.0
        });
        // Saturated peaks in two classes: equal scores, ordered by flat index.
        logits[[4, 2, 2]] = 30.0;
        logits[[1, 9, 9]] = 32.0;
        let mut heat = logits.clone();
        Activation::Sigmoid.apply_array(heat.view_mut().into_dyn());
        for (kernel, k) in [(3, 1), (3, 50), (1, 7), (5, 300), (3, 6 * 13 * 19)] {
            let want = topk_flat(heatmap_nms(heat.view(), kernel).unwrap().view(), k).unwrap();
            let got = extract_peaks_flat_mapped(logits.view(), k, kernel, |p| {
                Activation::Sigmoid.apply_slice(p)
            })
            .unwrap();
            assert_eq!(got, want, "kernel {kernel}, k {k}");
        }
        let got = extract_peaks_flat_mapped(logits.view(), 2, 3, |_| {}).unwrap();
        assert_eq!((got[0].class, got[1].class), (1, 4));
        assert!(extract_peaks_flat_mapped(logits.view(), 2, 2, |_| {}).is_err());
        assert!(extract_peaks_flat_mapped(logits.view(), 6 * 13 * 19 + 1, 3, |_| {}).is_err());
    }

    #[test]
    fn peaks_by_hand() {
        let mut heat = Array3::<f32>::zeros((2, 5, 6));
        heat[[0, 1, 1]] = 0.9;
        heat[[0, 1, 2]] = 0.8; // neighbour of a larger value: suppressed
        heat[[0, 4, 5]] = 0.7; // corner
        heat[[1, 2, 3]] = 0.95;
        heat[[1, 2, 4]] = 0.95; // plateau: both kept (== max)
        let s = heatmap_nms(heat.view(), 3).unwrap();
        assert_eq!(s[[0, 1, 2]], 0.0);
        assert_eq!(s[[0, 4, 5]], 0.7);
        assert_eq!(s[[1, 2, 4]], 0.95);
        let p = extract_peaks(heat.view(), 4).unwrap();
        let got: Vec<(usize, usize, usize)> = p.iter().map(|p| (p.class, p.y, p.x)).collect();
        assert_eq!(got, vec![(1, 2, 3), (1, 2, 4), (0, 1, 1), (0, 4, 5)]);
        assert_eq!(p, extract_peaks_reference(heat.view(), 4).unwrap());
        assert!(heatmap_nms(heat.view(), 2).is_err());
        assert!(extract_peaks(heat.view(), 31).is_err());
        let f = topk_flat(heat.view(), 2).unwrap();
        assert_eq!((f[0].class, f[0].index), (1, 2 * 6 + 3));
    }

    #[test]
    fn fast_equals_reference_on_noise() {
        let heat = Array::from_shape_fn((5, 17, 23), |(c, y, x)| {
            let v = ((c * 7919 + y * 104729 + x * 1299709) % 10007) as f32 / 10007.0;
            v * v
        });
        for k in [1, 10, 50] {
            assert_eq!(
                extract_peaks(heat.view(), k).unwrap(),
                extract_peaks_reference(heat.view(), k).unwrap()
            );
        }
        // NaN suppresses its neighbours and stays NaN.
        let mut h2 = heat.clone();
        h2[[0, 5, 5]] = f32::NAN;
        let s = heatmap_nms(h2.view(), 3).unwrap();
        assert!(s[[0, 5, 5]].is_nan());
        assert_eq!(s[[0, 5, 6]], 0.0);
        let p = extract_peaks(h2.view(), 3).unwrap();
        assert!(p[0].score.is_nan());
    }
}
