//! Non-maximum suppression: torchvision's `nms` (CPU kernel `nms_kernel.cpp`) and
//! `batched_nms` (`ops/boxes.py`, with both of its code paths).
//!
//! Semantics, as in torchvision:
//! - boxes are visited in decreasing score order; a kept box suppresses every later box whose
//!   IoU with it is strictly greater than `iou_threshold`; the result lists the kept indices
//!   in decreasing score order. Areas are `(x2 - x1) * (y2 - y1)` (no `+1`).
//! - The threshold is an `f64`, compared as C++ compares a `float` IoU with a `double`.
//! - Equal scores are visited in ascending index order (see the module docs of
//!   [`crate::ops`] on ties).
//! - NaN: a NaN score sorts first (as torch's sort puts NaN first in descending order). A box
//!   with a NaN coordinate gets a NaN IoU with every box (or an intersection clamped to 0
//!   by C++'s `std::max`), so it never suppresses and is never suppressed: it is always kept.
//!   `batched_nms`'s coordinate trick propagates a NaN coordinate into the offset of every
//!   box, like `boxes.max()` does in torch; this is what torchvision returns too.
//!
//! [`nms_tfjs`] is TF.js's `tf.image.nonMaxSuppression`, and [`nms_fast_rcnn`] Fast R-CNN's
//! `py_cpu_nms` (RetinaFace and other Caffe-era detectors); their semantics differ (see
//! there).
//!
//! [`nms_reference`] is a line-by-line port of the C++ kernel. [`nms`] gives the same
//! result faster: boxes are copied once into score order as separate coordinate arrays
//! (structure of arrays) so that the IoU of one kept box against all later ones is a
//! vectorised loop (AVX-512/AVX2 chosen at run time), and candidates already suppressed are
//! compacted away as they accumulate, so clustered detections cost far less than `n²`.

use super::simd::multiversion;
use super::{argsort_desc, check_same_len, cxx_max, cxx_min, f32_round_down, OpError};

fn check(boxes: &[[f32; 4]], scores: &[f32]) -> Result<(), OpError> {
    check_same_len("nms", "boxes", boxes.len(), "scores", scores.len())
}

/// Line-by-line port of torchvision's CPU `nms_kernel_impl`.
pub fn nms_reference(
    boxes: &[[f32; 4]],
    scores: &[f32],
    iou_threshold: f64,
) -> Result<Vec<usize>, OpError> {
    check(boxes, scores)?;
    let n = boxes.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let areas: Vec<f32> = boxes
        .iter()
        .map(|b| (b[2] - b[0]) * (b[3] - b[1]))
        .collect();
    let order = argsort_desc(scores);
    let mut suppressed = vec![false; n];
    let mut keep = Vec::new();
    for ii in 0..n {
        let i = order[ii];
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let [ix1, iy1, ix2, iy2] = boxes[i];
        let iarea = areas[i];
        for &j in &order[ii + 1..] {
            if suppressed[j] {
                continue;
            }
            let xx1 = cxx_max(ix1, boxes[j][0]);
            let yy1 = cxx_max(iy1, boxes[j][1]);
            let xx2 = cxx_min(ix2, boxes[j][2]);
            let yy2 = cxx_min(iy2, boxes[j][3]);
            let w = cxx_max(0.0, xx2 - xx1);
            let h = cxx_max(0.0, yy2 - yy1);
            let inter = w * h;
            let ovr = inter / (iarea + areas[j] - inter);
            if (ovr as f64) > iou_threshold {
                suppressed[j] = true;
            }
        }
    }
    Ok(keep)
}

/// Candidates in score order, one array per coordinate.
struct Soa {
    x1: Vec<f32>,
    y1: Vec<f32>,
    x2: Vec<f32>,
    y2: Vec<f32>,
    area: Vec<f32>,
    /// Original index of each candidate.
    idx: Vec<u32>,
}

/// Marks `flags[j] = 1` for every candidate `j` whose IoU with box `b` (area `barea`) is
/// above `thr`; returns how many were marked. Same operations as the C++ kernel.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn suppress_pass_impl(
    b: [f32; 4],
    barea: f32,
    thr: f32,
    x1: &[f32],
    y1: &[f32],
    x2: &[f32],
    y2: &[f32],
    area: &[f32],
    flags: &mut [u8],
) -> usize {
    let n = flags.len();
    let (x1, y1, x2, y2, area) = (&x1[..n], &y1[..n], &x2[..n], &y2[..n], &area[..n]);
    let mut count = 0usize;
    for j in 0..n {
        let xx1 = cxx_max(b[0], x1[j]);
        let yy1 = cxx_max(b[1], y1[j]);
        let xx2 = cxx_min(b[2], x2[j]);
        let yy2 = cxx_min(b[3], y2[j]);
        let w = cxx_max(0.0, xx2 - xx1);
        let h = cxx_max(0.0, yy2 - yy1);
        let inter = w * h;
        let ovr = inter / (barea + area[j] - inter);
        let s = (ovr > thr) as u8;
        flags[j] = s;
        count += s as usize;
    }
    count
}

multiversion!(fn suppress_pass(
    b: [f32; 4],
    barea: f32,
    thr: f32,
    x1: &[f32],
    y1: &[f32],
    x2: &[f32],
    y2: &[f32],
    area: &[f32],
    flags: &mut [u8],
) -> usize => suppress_pass_impl);

/// Fast NMS; returns exactly what [`nms_reference`] (and torchvision) returns.
pub fn nms(boxes: &[[f32; 4]], scores: &[f32], iou_threshold: f64) -> Result<Vec<usize>, OpError> {
    check(boxes, scores)?;
    if boxes.len() > u32::MAX as usize {
        return Err(OpError::invalid("nms", "more than 2^32 boxes"));
    }
    Ok(nms_unchecked(boxes, scores, iou_threshold))
}

fn nms_unchecked(boxes: &[[f32; 4]], scores: &[f32], iou_threshold: f64) -> Vec<usize> {
    let n = boxes.len();
    if n == 0 {
        return Vec::new();
    }
    // `ovr > thr` on f32 is `(double)ovr > iou_threshold` for this thr; NaN thresholds
    // suppress nothing, as in C++.
    let thr = f32_round_down(iou_threshold);
    let order = argsort_desc(scores);
    let mut s = Soa {
        x1: Vec::with_capacity(n),
        y1: Vec::with_capacity(n),
        x2: Vec::with_capacity(n),
        y2: Vec::with_capacity(n),
        area: Vec::with_capacity(n),
        idx: Vec::with_capacity(n),
    };
    for &i in &order {
        let b = &boxes[i];
        s.x1.push(b[0]);
        s.y1.push(b[1]);
        s.x2.push(b[2]);
        s.y2.push(b[3]);
        s.area.push((b[2] - b[0]) * (b[3] - b[1]));
        s.idx.push(i as u32);
    }
    // suppressed[k]: candidate k (in the current compacted arrays) is suppressed.
    let mut suppressed = vec![0u8; n];
    let mut flags = vec![0u8; n];
    let mut keep = Vec::new();
    let mut len = n;
    let mut pending = 0usize; // suppressed entries not yet compacted away
    let mut k = 0usize;
    while k < len {
        if suppressed[k] != 0 {
            k += 1;
            continue;
        }
        keep.push(s.idx[k] as usize);
        let b = [s.x1[k], s.y1[k], s.x2[k], s.y2[k]];
        let start = k + 1;
        let rest = len - start;
        if rest == 0 {
            break;
        }
        let marked = suppress_pass(
            b,
            s.area[k],
            thr,
            &s.x1[start..len],
            &s.y1[start..len],
            &s.x2[start..len],
            &s.y2[start..len],
            &s.area[start..len],
            &mut flags[..rest],
        );
        if marked > 0 {
            let mut newly = 0usize;
            for (sj, &f) in suppressed[start..len].iter_mut().zip(&flags[..rest]) {
                newly += (f & !*sj & 1) as usize;
                *sj |= f;
            }
            pending += newly;
        }
        k += 1;
        // Compact when at least a quarter of what is left is dead weight.
        if pending * 4 > len - k && pending > 16 {
            let mut w = k;
            for r in k..len {
                if suppressed[r] == 0 {
                    s.x1[w] = s.x1[r];
                    s.y1[w] = s.y1[r];
                    s.x2[w] = s.x2[r];
                    s.y2[w] = s.y2[r];
                    s.area[w] = s.area[r];
                    s.idx[w] = s.idx[r];
                    suppressed[w] = 0;
                    w += 1;
                }
            }
            len = w;
            pending = 0;
        }
    }
    keep
}

/// Number of elements (`4 · boxes`) above which torchvision's CPU `batched_nms` runs one
/// NMS per class instead of the coordinate trick.
pub const BATCHED_NMS_TRICK_MAX_NUMEL: usize = 4000;

/// torchvision `batched_nms`: NMS within each category `idxs[i]`. Uses the coordinate trick
/// for up to 1000 boxes and one NMS per class above, exactly as torchvision's CPU path does
/// (the two can differ in rounding when coordinates are offset by large class ids).
pub fn batched_nms(
    boxes: &[[f32; 4]],
    scores: &[f32],
    idxs: &[i64],
    iou_threshold: f64,
) -> Result<Vec<usize>, OpError> {
    check_batched(boxes, scores, idxs)?;
    if boxes.len() * 4 > BATCHED_NMS_TRICK_MAX_NUMEL {
        Ok(batched_vanilla(
            boxes,
            scores,
            idxs,
            iou_threshold,
            nms_unchecked,
        ))
    } else {
        Ok(batched_trick(
            boxes,
            scores,
            idxs,
            iou_threshold,
            nms_unchecked,
        ))
    }
}

/// [`batched_nms`] on top of [`nms_reference`].
pub fn batched_nms_reference(
    boxes: &[[f32; 4]],
    scores: &[f32],
    idxs: &[i64],
    iou_threshold: f64,
) -> Result<Vec<usize>, OpError> {
    check_batched(boxes, scores, idxs)?;
    let reference = |b: &[[f32; 4]], s: &[f32], t: f64| nms_reference(b, s, t).unwrap_or_default();
    if boxes.len() * 4 > BATCHED_NMS_TRICK_MAX_NUMEL {
        Ok(batched_vanilla(
            boxes,
            scores,
            idxs,
            iou_threshold,
            reference,
        ))
    } else {
        Ok(batched_trick(boxes, scores, idxs, iou_threshold, reference))
    }
}

/// torchvision `_batched_nms_coordinate_trick` (whatever the number of boxes).
pub fn batched_nms_coordinate_trick(
    boxes: &[[f32; 4]],
    scores: &[f32],
    idxs: &[i64],
    iou_threshold: f64,
) -> Result<Vec<usize>, OpError> {
    check_batched(boxes, scores, idxs)?;
    Ok(batched_trick(
        boxes,
        scores,
        idxs,
        iou_threshold,
        nms_unchecked,
    ))
}

/// torchvision `_batched_nms_vanilla` (whatever the number of boxes).
pub fn batched_nms_vanilla(
    boxes: &[[f32; 4]],
    scores: &[f32],
    idxs: &[i64],
    iou_threshold: f64,
) -> Result<Vec<usize>, OpError> {
    check_batched(boxes, scores, idxs)?;
    Ok(batched_vanilla(
        boxes,
        scores,
        idxs,
        iou_threshold,
        nms_unchecked,
    ))
}

fn check_batched(boxes: &[[f32; 4]], scores: &[f32], idxs: &[i64]) -> Result<(), OpError> {
    check_same_len("batched_nms", "boxes", boxes.len(), "scores", scores.len())?;
    check_same_len("batched_nms", "boxes", boxes.len(), "idxs", idxs.len())?;
    if boxes.len() > u32::MAX as usize {
        return Err(OpError::invalid("batched_nms", "more than 2^32 boxes"));
    }
    Ok(())
}

fn batched_trick(
    boxes: &[[f32; 4]],
    scores: &[f32],
    idxs: &[i64],
    iou_threshold: f64,
    nms_fn: impl Fn(&[[f32; 4]], &[f32], f64) -> Vec<usize>,
) -> Vec<usize> {
    if boxes.is_empty() {
        return Vec::new();
    }
    // boxes.max(): NaN if any coordinate is NaN.
    let mut max_coordinate = f32::NEG_INFINITY;
    for b in boxes {
        for &v in b {
            if v.is_nan() {
                max_coordinate = f32::NAN;
            } else if v > max_coordinate {
                max_coordinate = v;
            }
        }
        if max_coordinate.is_nan() {
            break;
        }
    }
    let step = max_coordinate + 1.0;
    let shifted: Vec<[f32; 4]> = boxes
        .iter()
        .zip(idxs)
        .map(|(b, &c)| {
            let off = (c as f32) * step;
            [b[0] + off, b[1] + off, b[2] + off, b[3] + off]
        })
        .collect();
    nms_fn(&shifted, scores, iou_threshold)
}

fn batched_vanilla(
    boxes: &[[f32; 4]],
    scores: &[f32],
    idxs: &[i64],
    iou_threshold: f64,
    nms_fn: impl Fn(&[[f32; 4]], &[f32], f64) -> Vec<usize>,
) -> Vec<usize> {
    // Group indices by class (ascending index inside each class, as torch.where gives).
    let mut by_class: Vec<usize> = (0..boxes.len()).collect();
    by_class.sort_by_key(|&i| (idxs[i], i));
    let mut keep_mask = vec![false; boxes.len()];
    let mut sub_boxes = Vec::new();
    let mut sub_scores = Vec::new();
    let mut start = 0;
    while start < by_class.len() {
        let class = idxs[by_class[start]];
        let mut end = start;
        while end < by_class.len() && idxs[by_class[end]] == class {
            end += 1;
        }
        let members = &by_class[start..end];
        sub_boxes.clear();
        sub_scores.clear();
        sub_boxes.extend(members.iter().map(|&i| boxes[i]));
        sub_scores.extend(members.iter().map(|&i| scores[i]));
        for k in nms_fn(&sub_boxes, &sub_scores, iou_threshold) {
            keep_mask[members[k]] = true;
        }
        start = end;
    }
    let mut keep: Vec<usize> = (0..boxes.len()).filter(|&i| keep_mask[i]).collect();
    keep.sort_by(|&a, &b| super::desc_cmp(scores[a], scores[b]));
    keep
}

// ---------------------------------------------------------------------------------------
// TF.js semantics. They differ from torchvision's above, so they are a second entry point
// rather than options of one: IoU in f64 with corners in any order, a box suppressed at IoU
// >= the threshold (torchvision: >), a score threshold and a maximum count.

/// TF.js's `intersectionOverUnion` (for [`nms_tfjs`]): IoU of two boxes given as
/// [y1, x1, y2, x2] (or [x1, y1, x2, y2]: the same value), corners in any order, in f64 (0 when
/// either box is empty).
pub fn iou_tfjs(a: &[f32; 4], b: &[f32; 4]) -> f64 {
    let f = |v: &[f32; 4]| {
        let (a0, a1, a2, a3) = (v[0] as f64, v[1] as f64, v[2] as f64, v[3] as f64);
        (a0.min(a2), a1.min(a3), a0.max(a2), a1.max(a3))
    };
    let (ya0, xa0, ya1, xa1) = f(a);
    let (yb0, xb0, yb1, xb1) = f(b);
    let area_a = (ya1 - ya0) * (xa1 - xa0);
    let area_b = (yb1 - yb0) * (xb1 - xb0);
    if area_a <= 0.0 || area_b <= 0.0 {
        return 0.0;
    }
    let ih = (ya1.min(yb1) - ya0.max(yb0)).max(0.0);
    let iw = (xa1.min(xb1) - xa0.max(xb0)).max(0.0);
    let inter = ih * iw;
    inter / (area_a + area_b - inter)
}

/// TF.js's `tf.image.nonMaxSuppression` (`nonMaxSuppressionV3Impl`), which the TF.js task
/// nodes use: candidates with score > `score_threshold`, best first (ties: lower index
/// first); a candidate is dropped when its IoU with a kept box is >= `iou_threshold`; at most
/// `max_out` indices are returned, best first.
pub fn nms_tfjs(
    boxes: &[[f32; 4]],
    scores: &[f32],
    max_out: usize,
    iou_threshold: f32,
    score_threshold: f32,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len().min(scores.len()))
        .filter(|&i| scores[i] > score_threshold)
        .collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut keep: Vec<usize> = Vec::new();
    for i in order {
        if keep.len() >= max_out {
            break;
        }
        if keep
            .iter()
            .all(|&k| iou_tfjs(&boxes[i], &boxes[k]) < iou_threshold as f64)
        {
            keep.push(i);
        }
    }
    keep
}

/// Fast R-CNN's `py_cpu_nms` (numpy, f32), as RetinaFace's `detect.py` calls it: boxes
/// visited in decreasing score order (ties: lower index first), areas and intersections with
/// the `+1` pixel convention (`(x2 - x1 + 1) * (y2 - y1 + 1)`), and a box kept while its IoU
/// with every kept box is `<= iou_threshold` (so suppressed when strictly greater). Returns
/// the first `max_keep` kept indices, best first: the same as `py_cpu_nms(...)[:max_keep]`,
/// without comparing the boxes that come after the last one kept. A NaN IoU (a NaN
/// coordinate) suppresses nothing.
pub fn nms_fast_rcnn(
    boxes: &[[f32; 4]],
    scores: &[f32],
    iou_threshold: f32,
    max_keep: usize,
) -> Vec<usize> {
    let n = boxes.len().min(scores.len());
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    // The boxes in visiting order, one array per coordinate, so that one kept box's
    // comparisons with all later ones run as vectors.
    let column = |k: usize| -> Vec<f32> { order.iter().map(|&i| boxes[i][k]).collect() };
    let (x1, y1, x2, y2) = (column(0), column(1), column(2), column(3));
    let areas: Vec<f32> = (0..n)
        .map(|p| (x2[p] - x1[p] + 1.0) * (y2[p] - y1[p] + 1.0))
        .collect();
    let mut alive = vec![true; n];
    let mut keep = Vec::new();
    for p in 0..n {
        if keep.len() >= max_keep {
            break;
        }
        if !alive[p] {
            continue;
        }
        keep.push(order[p]);
        let (bx1, by1, bx2, by2, area) = (x1[p], y1[p], x2[p], y2[p], areas[p]);
        let later = p + 1..n;
        for (((((a, &ax1), &ay1), &ax2), &ay2), &a_area) in alive[later.clone()]
            .iter_mut()
            .zip(&x1[later.clone()])
            .zip(&y1[later.clone()])
            .zip(&x2[later.clone()])
            .zip(&y2[later.clone()])
            .zip(&areas[later])
        {
            // np.maximum / np.minimum, then np.maximum(0.0, ...), all in f32.
            let w = (bx2.min(ax2) - bx1.max(ax1) + 1.0).max(0.0);
            let h = (by2.min(ay2) - by1.max(ay1) + 1.0).max(0.0);
            let inter = w * h;
            let ovr = inter / (area + a_area - inter);
            // Suppressed when strictly above: a NaN IoU suppresses nothing.
            *a &= ovr.partial_cmp(&iou_threshold) != Some(std::cmp::Ordering::Greater);
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nms_keeps_best_and_drops_overlaps() {
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 1.0, 10.0, 11.0],
            [20.0, 20.0, 30.0, 30.0],
            [0.0, 0.0, 0.0, 5.0],
        ];
        let scores = [0.8, 0.9, 0.5, 0.95];
        // box 3 is empty (IoU 0 with everything) but has the best score.
        assert_eq!(nms_tfjs(&boxes, &scores, 10, 0.5, 0.1), vec![3, 1, 2]);
        assert_eq!(nms_tfjs(&boxes, &scores, 2, 0.5, 0.1), vec![3, 1]);
        assert_eq!(nms_tfjs(&boxes, &scores, 10, 0.5, 0.85), vec![3, 1]);
        assert_eq!(nms_tfjs(&boxes, &scores, 10, 0.99, 0.0), vec![3, 1, 0, 2]);
        assert!((iou_tfjs(&boxes[0], &boxes[1]) - 90.0 / 110.0).abs() < 1e-12);
        assert!((iou_tfjs(&[10.0, 10.0, 0.0, 0.0], &boxes[0]) - 1.0).abs() < 1e-12);
    }

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32) / (1u64 << 24) as f32
    }

    fn random_boxes(n: usize, seed: u64, clustered: bool) -> (Vec<[f32; 4]>, Vec<f32>) {
        let mut s = seed;
        let mut boxes = Vec::new();
        let mut scores = Vec::new();
        for i in 0..n {
            let (cx, cy) = if clustered {
                let c = (i % 7) as f32;
                (
                    100.0 * c + 10.0 * lcg(&mut s),
                    50.0 * c + 10.0 * lcg(&mut s),
                )
            } else {
                (800.0 * lcg(&mut s), 600.0 * lcg(&mut s))
            };
            let w = 10.0 + 100.0 * lcg(&mut s);
            let h = 10.0 + 100.0 * lcg(&mut s);
            boxes.push([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]);
            // Coarse scores so that ties occur.
            scores.push((lcg(&mut s) * 50.0).floor() / 50.0);
        }
        (boxes, scores)
    }

    #[test]
    fn by_hand() {
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [1.0, 1.0, 11.0, 11.0], // IoU with 0: 81/119 = 0.68
            [20.0, 20.0, 30.0, 30.0],
            [0.0, 0.0, 10.0, 10.5], // IoU with 0: 100/105 = 0.95
        ];
        let scores = [0.9, 0.8, 0.7, 0.95];
        // IoU(3, 1) = 85.5 / 119.5 = 0.7155.
        assert_eq!(nms(&boxes, &scores, 0.72).unwrap(), vec![3, 1, 2]);
        assert_eq!(nms(&boxes, &scores, 0.7).unwrap(), vec![3, 2]);
        assert_eq!(nms(&boxes, &scores, 0.5).unwrap(), vec![3, 2]);
        assert_eq!(nms_reference(&boxes, &scores, 0.5).unwrap(), vec![3, 2]);
        // Strict `>`: IoU exactly 0.5 is not suppressed.
        let b = [[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]];
        assert_eq!(nms(&b, &[1.0, 0.5], 0.5).unwrap(), vec![0, 1]);
        assert!(nms(&[], &[], 0.5).unwrap().is_empty());
        assert!(nms(&b, &[1.0], 0.5).is_err());
    }

    #[test]
    fn nan_boxes_are_kept_and_suppress_nothing() {
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [f32::NAN, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 10.0],
        ];
        let scores = [0.5, 0.9, f32::NAN];
        // NaN score first, then the NaN box, then box 0 is suppressed by box 2.
        assert_eq!(nms_reference(&boxes, &scores, 0.5).unwrap(), vec![2, 1]);
        assert_eq!(nms(&boxes, &scores, 0.5).unwrap(), vec![2, 1]);
    }

    #[test]
    fn fast_equals_reference_on_random_and_clustered_boxes() {
        for (seed, n, clustered) in [
            (1, 300, false),
            (2, 2000, true),
            (3, 50, true),
            (4, 1, false),
        ] {
            let (boxes, scores) = random_boxes(n, seed, clustered);
            for thr in [0.0, 0.3, 0.5, 0.7, 1.0] {
                assert_eq!(
                    nms(&boxes, &scores, thr).unwrap(),
                    nms_reference(&boxes, &scores, thr).unwrap(),
                    "seed {seed} thr {thr}"
                );
            }
        }
    }

    #[test]
    fn batched_paths_agree_and_separate_classes() {
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 10.0],
        ];
        let scores = [0.9, 0.8, 0.7];
        assert_eq!(
            batched_nms(&boxes, &scores, &[0, 1, 0], 0.5).unwrap(),
            vec![0, 1]
        );
        assert_eq!(
            batched_nms_vanilla(&boxes, &scores, &[0, 1, 0], 0.5).unwrap(),
            vec![0, 1]
        );
        assert!(batched_nms(&boxes, &scores, &[0, 1], 0.5).is_err());
        let (boxes, scores) = random_boxes(1500, 9, true);
        let idxs: Vec<i64> = (0..boxes.len()).map(|i| (i % 5) as i64).collect();
        let a = batched_nms_coordinate_trick(&boxes, &scores, &idxs, 0.5).unwrap();
        let b = batched_nms_vanilla(&boxes, &scores, &idxs, 0.5).unwrap();
        assert_eq!(a, b);
        assert_eq!(batched_nms(&boxes, &scores, &idxs, 0.5).unwrap(), b);
        assert_eq!(
            batched_nms_reference(&boxes, &scores, &idxs, 0.5).unwrap(),
            b
        );
    }

    /// py_cpu_nms's +1 convention: two 10x10-pixel boxes (x2 - x1 = 9) sharing 5 columns
    /// overlap 50/150 = 1/3; at threshold 1/3 both stay (kept while <=), below it one goes.
    #[test]
    fn fast_rcnn_nms_counts_pixels_inclusively() {
        let boxes = [
            [0.0, 0.0, 9.0, 9.0],
            [5.0, 0.0, 14.0, 9.0],
            [100.0, 100.0, 101.0, 101.0],
        ];
        let scores = [0.9, 0.8, 0.7];
        let all = usize::MAX;
        assert_eq!(nms_fast_rcnn(&boxes, &scores, 0.34, all), vec![0, 1, 2]);
        assert_eq!(nms_fast_rcnn(&boxes, &scores, 0.3, all), vec![0, 2]);
        // Best first, whatever the input order.
        assert_eq!(
            nms_fast_rcnn(&boxes, &[0.1, 0.8, 0.7], 0.3, all),
            vec![1, 2]
        );
        assert!(nms_fast_rcnn(&[], &[], 0.4, all).is_empty());
        // The first kept ones of the whole answer.
        assert_eq!(nms_fast_rcnn(&boxes, &scores, 0.34, 2), vec![0, 1]);
        assert_eq!(nms_fast_rcnn(&boxes, &scores, 0.3, 1), vec![0]);
        assert!(nms_fast_rcnn(&boxes, &scores, 0.3, 0).is_empty());
    }
}
