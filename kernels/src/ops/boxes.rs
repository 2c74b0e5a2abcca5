//! Box utilities of torchvision: `box_area`, `box_iou`, `clip_boxes_to_image`,
//! `remove_small_boxes` (`torchvision/ops/boxes.py`) and `BoxCoder`
//! (`torchvision/models/detection/_utils.py`), in torchvision's `f32` arithmetic.
//!
//! NaN handling is torch's: `torch.max`/`min`/`clamp` propagate NaN, so a box with a NaN
//! coordinate has NaN IoU with everything, stays NaN when clipped, is removed by
//! `remove_small_boxes` (NaN `>=` anything is false) and decodes to NaN.

use std::mem::MaybeUninit;

use ndarray::{Array2, Array3, ArrayView2};
use rayon::prelude::*;

use super::{check_same_len, clamp_max, clamp_min, nan_max, nan_min, OpError};

/// `(x2 - x1) * (y2 - y1)`, no `+1` (torchvision's `box_area`).
#[inline]
pub fn box_area(b: &[f32; 4]) -> f32 {
    (b[2] - b[0]) * (b[3] - b[1])
}

/// IoU of one pair exactly as torchvision's `box_iou` computes it (no eps; `0/0` is NaN).
#[inline]
pub fn pair_iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area1 = box_area(a);
    let area2 = box_area(b);
    let ltx = nan_max(a[0], b[0]);
    let lty = nan_max(a[1], b[1]);
    let rbx = nan_min(a[2], b[2]);
    let rby = nan_min(a[3], b[3]);
    let w = clamp_min(rbx - ltx, 0.0);
    let h = clamp_min(rby - lty, 0.0);
    let inter = w * h;
    let union = area1 + area2 - inter;
    inter / union
}

/// Pairwise IoU `[N, M]` of two box sets (torchvision `box_iou`); rows in parallel.
pub fn box_iou(boxes1: &[[f32; 4]], boxes2: &[[f32; 4]]) -> Array2<f32> {
    let m = boxes2.len();
    let mut out = Array2::<f32>::zeros((boxes1.len(), m));
    if let Some(dst) = out.as_slice_mut() {
        // Rows per task: enough work (~64k pairs) to outweigh the hand-off.
        let rows = (65536 / m.max(1)).max(1);
        dst.par_chunks_mut(rows * m.max(1))
            .zip(boxes1.par_chunks(rows))
            .for_each(|(d, bs)| {
                for (drow, a) in d.chunks_exact_mut(m.max(1)).zip(bs) {
                    for (v, b) in drow.iter_mut().zip(boxes2) {
                        *v = pair_iou(a, b);
                    }
                }
            });
    }
    out
}

/// Clamps x to `[0, width]` and y to `[0, height]` (torchvision `clip_boxes_to_image`,
/// `size = (height, width)`). NaN coordinates stay NaN.
pub fn clip_boxes_to_image(boxes: &[[f32; 4]], size: (usize, usize)) -> Vec<[f32; 4]> {
    let (h, w) = (size.0 as f32, size.1 as f32);
    boxes
        .iter()
        .map(|b| {
            [
                clamp_max(clamp_min(b[0], 0.0), w),
                clamp_max(clamp_min(b[1], 0.0), h),
                clamp_max(clamp_min(b[2], 0.0), w),
                clamp_max(clamp_min(b[3], 0.0), h),
            ]
        })
        .collect()
}

/// Indices of the boxes whose width and height are both `>= min_size` (torchvision
/// `remove_small_boxes`). Boxes with NaN sides are removed.
pub fn remove_small_boxes(boxes: &[[f32; 4]], min_size: f32) -> Vec<usize> {
    boxes
        .iter()
        .enumerate()
        .filter(|(_, b)| (b[2] - b[0]) >= min_size && (b[3] - b[1]) >= min_size)
        .map(|(i, _)| i)
        .collect()
}

/// torchvision's `BoxCoder`: box regression deltas `(dx, dy, dw, dh)` relative to reference
/// boxes, divided by `weights`, with `dw`/`dh` clamped to `bbox_xform_clip` before `exp`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoxCoder {
    /// `(wx, wy, ww, wh)`: `(10, 10, 5, 5)` for the Fast R-CNN head, `(1, 1, 1, 1)` for the RPN.
    pub weights: [f32; 4],
    /// Upper clamp of `dw`/`dh`; `ln(1000 / 16)` by default.
    pub bbox_xform_clip: f32,
}

impl BoxCoder {
    /// A coder with the default `bbox_xform_clip = ln(1000 / 16)`.
    pub fn new(weights: [f32; 4]) -> BoxCoder {
        BoxCoder {
            weights,
            bbox_xform_clip: (1000.0f64 / 16.0).ln() as f32,
        }
    }

    /// Encodes `reference_boxes` (the targets) relative to `proposals`
    /// (torchvision `encode_boxes`): `[wx·(gx−px)/pw, wy·(gy−py)/ph, ww·ln(gw/pw), wh·ln(gh/ph)]`.
    pub fn encode(
        &self,
        reference_boxes: &[[f32; 4]],
        proposals: &[[f32; 4]],
    ) -> Result<Vec<[f32; 4]>, OpError> {
        check_same_len(
            "BoxCoder::encode",
            "reference_boxes",
            reference_boxes.len(),
            "proposals",
            proposals.len(),
        )?;
        let [wx, wy, ww, wh] = self.weights;
        Ok(reference_boxes
            .iter()
            .zip(proposals)
            .map(|(g, p)| {
                let ex_w = p[2] - p[0];
                let ex_h = p[3] - p[1];
                let ex_cx = p[0] + 0.5 * ex_w;
                let ex_cy = p[1] + 0.5 * ex_h;
                let gt_w = g[2] - g[0];
                let gt_h = g[3] - g[1];
                let gt_cx = g[0] + 0.5 * gt_w;
                let gt_cy = g[1] + 0.5 * gt_h;
                [
                    wx * (gt_cx - ex_cx) / ex_w,
                    wy * (gt_cy - ex_cy) / ex_h,
                    ww * (gt_w / ex_w).ln(),
                    wh * (gt_h / ex_h).ln(),
                ]
            })
            .collect())
    }

    /// Decodes one box from one set of deltas (torchvision `decode_single`, one class).
    #[inline]
    pub fn decode_one(&self, rel: &[f32; 4], b: &[f32; 4]) -> [f32; 4] {
        let [wx, wy, ww, wh] = self.weights;
        let widths = b[2] - b[0];
        let heights = b[3] - b[1];
        let ctr_x = b[0] + 0.5 * widths;
        let ctr_y = b[1] + 0.5 * heights;
        let dx = rel[0] / wx;
        let dy = rel[1] / wy;
        let dw = clamp_max(rel[2] / ww, self.bbox_xform_clip);
        let dh = clamp_max(rel[3] / wh, self.bbox_xform_clip);
        let pred_ctr_x = dx * widths + ctr_x;
        let pred_ctr_y = dy * heights + ctr_y;
        let pred_w = dw.exp() * widths;
        let pred_h = dh.exp() * heights;
        let c_to_c_h = 0.5 * pred_h;
        let c_to_c_w = 0.5 * pred_w;
        [
            pred_ctr_x - c_to_c_w,
            pred_ctr_y - c_to_c_h,
            pred_ctr_x + c_to_c_w,
            pred_ctr_y + c_to_c_h,
        ]
    }

    /// Decodes `rel_codes` `[N, 4·K]` (K sets of deltas per box, e.g. one per class) against
    /// `boxes` `[N]`; returns `[N, K, 4]` (torchvision `BoxCoder.decode`). Rows run in
    /// parallel with a vectorised `exp`; results match [`decode_one`](Self::decode_one) within
    /// 2 ulp of the `exp`.
    pub fn decode(
        &self,
        rel_codes: ArrayView2<f32>,
        boxes: &[[f32; 4]],
    ) -> Result<Array3<f32>, OpError> {
        let (n, k4) = rel_codes.dim();
        if n != boxes.len() {
            return Err(OpError::shape(
                "BoxCoder::decode",
                format!("rel_codes has {n} rows but there are {} boxes", boxes.len()),
            ));
        }
        if k4 % 4 != 0 {
            return Err(OpError::shape(
                "BoxCoder::decode",
                format!("rel_codes has {k4} columns, not a multiple of 4"),
            ));
        }
        let k = k4 / 4;
        if n * k == 0 {
            return Ok(Array3::<f32>::zeros((n, k, 4)));
        }
        let rel = rel_codes.as_standard_layout();
        let rel = rel.as_slice().unwrap_or(&[]);
        // Every element is written below: no zeroing pass first.
        let mut out = Array3::<f32>::uninit((n, k, 4));
        let dst = out
            .as_slice_mut()
            .ok_or_else(|| OpError::shape("BoxCoder::decode", "output not contiguous"))?;
        // Rows in parallel (in chunks, the work per row is small).
        dst.par_chunks_mut(4 * k * 64)
            .zip(rel.par_chunks(4 * k * 64))
            .zip(boxes.par_chunks(64))
            .for_each(|((o, r), bs)| {
                for ((orow, rrow), b) in
                    o.chunks_exact_mut(4 * k).zip(r.chunks_exact(4 * k)).zip(bs)
                {
                    decode_row(self.weights, self.bbox_xform_clip, rrow, *b, orow);
                }
            });
        // SAFETY: the chunks cover `dst` exactly (`rel` has 4·k values per box, as `dst`)
        // and `decode_row` writes every element of its row.
        Ok(unsafe { out.assume_init() })
    }

    /// Decodes one set of deltas per box (`rel_codes[i]` against `boxes[i]`).
    pub fn decode_boxes(
        &self,
        rel_codes: &[[f32; 4]],
        boxes: &[[f32; 4]],
    ) -> Result<Vec<[f32; 4]>, OpError> {
        check_same_len(
            "BoxCoder::decode_boxes",
            "rel_codes",
            rel_codes.len(),
            "boxes",
            boxes.len(),
        )?;
        Ok(rel_codes
            .iter()
            .zip(boxes)
            .map(|(r, b)| self.decode_one(r, b))
            .collect())
    }
}

/// [`BoxCoder::decode_one`] for every set of deltas in `rel` (`4·K` values) against one
/// box, with a vectorised `exp` (within 2 ulp of `f32::exp`, as torch's own vectorised `exp`
/// is within 1).
#[inline(always)]
fn decode_row_impl(
    weights: [f32; 4],
    clip: f32,
    rel: &[f32],
    b: [f32; 4],
    out: &mut [MaybeUninit<f32>],
) {
    let [wx, wy, ww, wh] = weights;
    let widths = b[2] - b[0];
    let heights = b[3] - b[1];
    let ctr_x = b[0] + 0.5 * widths;
    let ctr_y = b[1] + 0.5 * heights;
    for (o, r) in out.chunks_exact_mut(4).zip(rel.chunks_exact(4)) {
        let dx = r[0] / wx;
        let dy = r[1] / wy;
        let dw = clamp_max(r[2] / ww, clip);
        let dh = clamp_max(r[3] / wh, clip);
        let pred_ctr_x = dx * widths + ctr_x;
        let pred_ctr_y = dy * heights + ctr_y;
        let c_to_c_w = 0.5 * (super::exp_fast(dw) * widths);
        let c_to_c_h = 0.5 * (super::exp_fast(dh) * heights);
        o[0].write(pred_ctr_x - c_to_c_w);
        o[1].write(pred_ctr_y - c_to_c_h);
        o[2].write(pred_ctr_x + c_to_c_w);
        o[3].write(pred_ctr_y + c_to_c_h);
    }
}

super::simd::multiversion!(fn decode_row_portable(weights: [f32; 4], clip: f32, rel: &[f32], b: [f32; 4], out: &mut [MaybeUninit<f32>]) => decode_row_impl);

/// [`decode_row_impl`], with AVX-512 for blocks of 16 delta sets where the CPU has it.
fn decode_row(
    weights: [f32; 4],
    clip: f32,
    rel: &[f32],
    b: [f32; 4],
    out: &mut [MaybeUninit<f32>],
) {
    #[cfg(target_arch = "x86_64")]
    if super::simd::has_avx512() {
        // SAFETY: the CPU has AVX-512 (checked).
        let done = unsafe { decode_row_avx512(weights, clip, rel, b, out) };
        decode_row_portable(weights, clip, &rel[done..], b, &mut out[done..]);
        return;
    }
    decode_row_portable(weights, clip, rel, b, out);
}

/// Decodes the delta sets of `rel` (16 at a time, the last block with masked loads and
/// stores) into `out` and returns how many values it did (all whole sets): the AoS deltas are split into dx, dy, dw, dh
/// vectors with two-source permutes, decoded with the same operations in the same order as
/// [`decode_row_impl`] and [`super::exp_fast`] (so bit for bit the same results), and
/// interleaved back with shuffles. LLVM's own vectorisation of the AoS loop extracted and
/// reinserted lanes one by one.
///
/// # Safety
/// The CPU must support AVX-512F; `out` must be at least as long as `rel`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn decode_row_avx512(
    weights: [f32; 4],
    clip: f32,
    rel: &[f32],
    b: [f32; 4],
    out: &mut [MaybeUninit<f32>],
) -> usize {
    use std::arch::x86_64::*;
    let set = |v: f32| _mm512_set1_ps(v);
    let [wx, wy, ww, wh] = weights.map(set);
    let widths = b[2] - b[0];
    let heights = b[3] - b[1];
    let ctr_x = set(b[0] + 0.5 * widths);
    let ctr_y = set(b[1] + 0.5 * heights);
    let (widths, heights, clip, half) = (set(widths), set(heights), set(clip), set(0.5));
    let exp = |x: __m512| super::simd::exp_avx512(x);
    // One block of 16 sets: four vectors of interleaved (dx, dy, dw, dh) in, four of
    // interleaved (x1, y1, x2, y2) out.
    let block = |a: [__m512; 4]| -> [__m512; 4] {
        // Lane l of component c is value 4l + c of the block.
        let [r0, r1, r2, r3] = super::simd::deinterleave4_avx512(a);
        let dx = _mm512_div_ps(r0, wx);
        let dy = _mm512_div_ps(r1, wy);
        let dw = _mm512_min_ps(clip, _mm512_div_ps(r2, ww));
        let dh = _mm512_min_ps(clip, _mm512_div_ps(r3, wh));
        let pcx = _mm512_add_ps(_mm512_mul_ps(dx, widths), ctr_x);
        let pcy = _mm512_add_ps(_mm512_mul_ps(dy, heights), ctr_y);
        let cw = _mm512_mul_ps(half, _mm512_mul_ps(exp(dw), widths));
        let ch = _mm512_mul_ps(half, _mm512_mul_ps(exp(dh), heights));
        super::simd::interleave4_avx512([
            _mm512_sub_ps(pcx, cw),
            _mm512_sub_ps(pcy, ch),
            _mm512_add_ps(pcx, cw),
            _mm512_add_ps(pcy, ch),
        ])
    };
    let len = rel.len() / 4 * 4;
    let src = rel.as_ptr();
    let dst = out.as_mut_ptr().cast::<f32>();
    // Whole blocks, then the last one with masked loads and stores.
    let mut at = 0;
    while at + 64 <= len {
        let a: [__m512; 4] = std::array::from_fn(|k| _mm512_loadu_ps(src.add(at + 16 * k)));
        for (k, v) in block(a).into_iter().enumerate() {
            _mm512_storeu_ps(dst.add(at + 16 * k), v);
        }
        at += 64;
    }
    while at < len {
        let n = (len - at).min(64);
        // Value masks of the four vectors of this block.
        let masks: [__mmask16; 4] = std::array::from_fn(|k| {
            let m = n.saturating_sub(16 * k).min(16);
            ((1u32 << m) - 1) as __mmask16
        });
        let a: [__m512; 4] =
            std::array::from_fn(|k| _mm512_maskz_loadu_ps(masks[k], src.add(at + 16 * k)));
        for (k, v) in block(a).into_iter().enumerate() {
            _mm512_mask_storeu_ps(dst.add(at + 16 * k), masks[k], v);
        }
        at += n;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX-512 decoding gives the portable decoding's bits, NaN, clipping and the
    /// exp's overflow and underflow included.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_decode_is_bit_identical() {
        if !super::super::simd::has_avx512() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        let mut seed = 3u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u32 << 24) as f32) * 2.0 - 1.0
        };
        let mut rel: Vec<f32> = (0..4 * 37).map(|_| rnd() * 8.0).collect();
        rel[5] = f32::NAN;
        rel[10] = 900.0;
        rel[14] = -900.0;
        rel[22] = f32::INFINITY;
        rel[27] = f32::NEG_INFINITY;
        for (weights, clip) in [([10.0, 10.0, 5.0, 5.0], 4.135), ([1.0; 4], 1000.0)] {
            let b = [3.5, -2.0, 40.25, 17.0];
            let mut want = vec![MaybeUninit::new(0f32); rel.len()];
            let mut got = want.clone();
            decode_row_portable(weights, clip, &rel, b, &mut want);
            // SAFETY: AVX-512 checked above.
            let done = unsafe { decode_row_avx512(weights, clip, &rel, b, &mut got) };
            assert_eq!(done, rel.len());
            // SAFETY: initialised above.
            let bits = |v: &[MaybeUninit<f32>]| {
                v.iter()
                    .map(|x| unsafe { x.assume_init() }.to_bits())
                    .collect::<Vec<_>>()
            };
            assert_eq!(bits(&got), bits(&want));
        }
    }

    #[test]
    fn iou_by_hand() {
        let a = [0.0, 0.0, 2.0, 2.0];
        let b = [1.0, 1.0, 3.0, 3.0];
        assert_eq!(pair_iou(&a, &b), 1.0 / 7.0);
        assert_eq!(pair_iou(&a, &a), 1.0);
        assert_eq!(pair_iou(&a, &[5.0, 5.0, 6.0, 6.0]), 0.0);
        // Degenerate: 0 / 0.
        let z = [1.0, 1.0, 1.0, 1.0];
        assert!(pair_iou(&z, &z).is_nan());
        assert!(pair_iou(&a, &[f32::NAN, 0.0, 1.0, 1.0]).is_nan());
        let m = box_iou(&[a, b], &[a]);
        assert_eq!(m.dim(), (2, 1));
        assert_eq!(m[[1, 0]], 1.0 / 7.0);
    }

    #[test]
    fn clip_and_remove() {
        let b = [
            [-5.0, 3.0, 700.0, 40.0],
            [1.0, 1.0, 1.0005, 5.0],
            [f32::NAN; 4],
        ];
        let c = clip_boxes_to_image(&b, (30, 600));
        assert_eq!(c[0], [0.0, 3.0, 600.0, 30.0]);
        assert!(c[2][0].is_nan());
        assert_eq!(remove_small_boxes(&b, 1e-3), vec![0]);
        assert_eq!(remove_small_boxes(&b, 1e-4), vec![0, 1]);
    }

    #[test]
    fn decode_inverts_encode_and_clamps() {
        let coder = BoxCoder::new([10.0, 10.0, 5.0, 5.0]);
        let p = [[10.0, 20.0, 50.0, 80.0]];
        let g = [[12.0, 18.0, 60.0, 70.0]];
        let rel = coder.encode(&g, &p).unwrap();
        let d = coder.decode_boxes(&rel, &p).unwrap();
        for (x, y) in d[0].iter().zip(g[0].iter()) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
        // Huge dw is clamped to ln(1000/16): width 40 becomes 40 * 62.5 = 2500.
        let big = coder.decode_boxes(&[[0.0, 0.0, 1e6, 0.0]], &p).unwrap();
        let w = big[0][2] - big[0][0];
        assert!((w - 2500.0).abs() < 0.01, "{w}");
        let arr = ndarray::arr2(&[[0.0f32, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]]);
        let out = coder.decode(arr.view(), &p).unwrap();
        assert_eq!(out.dim(), (1, 2, 4));
        assert_eq!(out[[0, 0, 0]], 10.0);
        assert!(coder.decode(arr.view(), &[]).is_err());
        let bad = ndarray::Array2::<f32>::zeros((1, 5));
        assert!(coder.decode(bad.view(), &p).is_err());
    }
}
