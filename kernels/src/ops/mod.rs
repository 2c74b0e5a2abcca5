//! Hot vision ops (RoIAlign, NMS, box coding, anchors, mask pasting, YOLACT assembly, heatmap peaks, corner pooling), matched to torchvision and the models' own code.
//!
//! # Conventions
//!
//! - **Semantics** follow the reference implementation named in each module, down to the
//!   order of floating-point operations where that is cheap to keep (RoIAlign, NMS, box
//!   coding, anchors and mask pasting reproduce torchvision's `f32` arithmetic; results are
//!   usually bit-identical). `kernels/tests/ops_vs_torchvision.rs` checks every op against
//!   fixtures written by torchvision itself (`tests/reference/make_kernel_fixtures.py`).
//! - **Two implementations** where speed matters: a `*_reference` function that mirrors the
//!   reference loop by loop, and the fast one (channels-last, vectorised and multi-threaded
//!   over RoIs / masks / classes with rayon). Unit tests check that they agree (bit for bit,
//!   except YOLACT's mask assembly, whose GEMM sums in another order: within 1e-6).
//! - **Large outputs and buffers.** Fresh allocations of tens of megabytes cost page faults
//!   that can exceed the computation itself. Where that matters there is a variant that reuses
//!   memory across frames: [`roi_align_with`] / [`MultiScaleRoIAlign::forward_with`] keep the
//!   channels-last copies of the feature maps in a [`RoiAlignWorkspace`];
//!   [`paste_masks_into`] writes into a caller's buffer, and [`paste_masks_regions`] returns
//!   only the visible part of each mask.
//! - **Vector code** is plain Rust that LLVM vectorises, compiled for AVX-512 and AVX2 and
//!   picked at run time (`simd.rs`); no variant changes a result.
//! - **Boxes** are `[x1, y1, x2, y2]` in `f32` (`&[[f32; 4]]`); RoIs are
//!   `[batch_index, x1, y1, x2, y2]` (`&[[f32; 5]]`), as in torchvision.
//! - **Feature maps** are `NCHW` `f32` `ndarray` views (any strides; a non-standard layout is
//!   copied once). Outputs are owned `ndarray` arrays.
//! - **Ties.** Where the reference sorts by score with an unstable sort (torchvision's `nms`,
//!   `batched_nms`, YOLACT's FastNMS, `torch.topk`), equal scores are ordered here by
//!   ascending index (a stable order). torch's own order for ties is an implementation detail
//!   of its CPU sort (x86-simd-sort on AVX2/AVX-512 machines: stable up to 16 elements,
//!   arbitrary beyond) and differs between machines, so no implementation can match it in
//!   general; without ties every result is identical.
//! - **NaN.** Nothing panics or reads out of bounds on NaN or infinite input. Each function
//!   documents what it returns; where torchvision defines a result (NMS, box coding), it is
//!   the same here.
//! - **Errors.** Shapes that do not fit, lengths that differ and invalid parameters return
//!   [`OpError`].

pub mod anchors;
pub mod assignment;
pub mod boxes;
pub mod corner_pool;
pub mod correlation;
pub mod heatmap;
pub mod nms;
pub mod panoptic;
pub mod paste_masks;
pub mod poolers;
pub mod roi_align;
pub(crate) mod simd;
pub mod yolact;

pub use anchors::AnchorGenerator;
pub use assignment::linear_sum_assignment;
pub use boxes::{box_area, box_iou, clip_boxes_to_image, remove_small_boxes, BoxCoder};
pub use corner_pool::{corner_pool, CornerPool};
pub use correlation::{correlation, CorrelationParams};
pub use heatmap::{
    centernet_topk, extract_peaks, extract_peaks_mapped, heatmap_nms, topk_flat, topk_per_channel,
    Peak,
};
pub use nms::{batched_nms, nms};
pub use paste_masks::{
    paste_mask_grid_sample, paste_masks_in_image, paste_masks_into, paste_masks_regions, MaskRegion,
};
pub use poolers::{LevelMapper, LevelRule, MultiScaleRoIAlign};
pub use roi_align::{
    roi_align, roi_align_nhwc, roi_align_tensor, roi_align_with, RoiAlignParams, RoiAlignWorkspace,
};
pub use yolact::{assemble_masks, fast_nms, FastNmsConfig, YolactDetection};

use crate::tensor::TensorError;

/// Errors of the vision ops.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OpError {
    /// An input does not have the shape (or length) the op needs.
    #[error("{op}: {detail}")]
    Shape { op: &'static str, detail: String },
    /// A parameter or a value in the input is out of the range the op accepts.
    #[error("{op}: {detail}")]
    Invalid { op: &'static str, detail: String },
    /// A tensor has the wrong dtype or could not be built.
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

impl OpError {
    pub(crate) fn shape(op: &'static str, detail: impl Into<String>) -> OpError {
        OpError::Shape {
            op,
            detail: detail.into(),
        }
    }

    pub(crate) fn invalid(op: &'static str, detail: impl Into<String>) -> OpError {
        OpError::Invalid {
            op,
            detail: detail.into(),
        }
    }
}

/// Checks that two slices that describe the same items have the same length.
pub(crate) fn check_same_len(
    op: &'static str,
    a_name: &str,
    a: usize,
    b_name: &str,
    b: usize,
) -> Result<(), OpError> {
    if a == b {
        Ok(())
    } else {
        Err(OpError::shape(
            op,
            format!("{a_name} has {a} elements but {b_name} has {b}"),
        ))
    }
}

/// Descending order of `scores` (NaN counts as the largest value, as in torch's sort), ties
/// broken by ascending index. Deterministic; equals a stable descending sort.
pub(crate) fn argsort_desc(scores: &[f32]) -> Vec<usize> {
    top_k_desc(scores, scores.len())
}

/// Maps a value to a `u32` whose order is the order of [`desc_cmp`] reversed: NaN largest,
/// `-0 == +0`.
#[inline(always)]
pub(crate) fn rank_bits(v: f32) -> u32 {
    if v.is_nan() {
        return u32::MAX;
    }
    let v = if v == 0.0 { 0.0 } else { v };
    let b = v.to_bits();
    if b >> 31 == 1 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Indices of the `k` largest values (NaN largest, ties by ascending index), best first: the
/// first `k` of [`argsort_desc`], found by selection on packed integer keys.
pub(crate) fn top_k_desc(values: &[f32], k: usize) -> Vec<usize> {
    let k = k.min(values.len());
    if k == 0 {
        return Vec::new();
    }
    if values.len() > u32::MAX as usize {
        let mut idx: Vec<usize> = (0..values.len()).collect();
        idx.sort_by(|a, b| desc_cmp(values[*a], values[*b]));
        idx.truncate(k);
        return idx;
    }
    // Sort keys: best first, then ascending index.
    let key = |i: usize| (((!rank_bits(values[i])) as u64) << 32) | i as u64;
    // When at least k values are above zero (or NaN), the top k are among them: skip the
    // rest (after suppression most of a heatmap is zero).
    let zero = rank_bits(0.0);
    let above = values.iter().filter(|&&v| rank_bits(v) > zero).count();
    let mut keys: Vec<u64> = if above >= k && above < values.len() {
        above_zero_indices(values, above)
            .into_iter()
            .map(|i| key(i as usize))
            .collect()
    } else {
        (0..values.len()).map(key).collect()
    };
    if k < keys.len() {
        keys.select_nth_unstable(k - 1);
        keys.truncate(k);
    }
    keys.sort_unstable();
    keys.into_iter()
        .map(|kk| (kk & 0xFFFF_FFFF) as usize)
        .collect()
}

/// Indices of the values above zero or NaN (`above` of them), ascending: a compaction
/// without branches (a filter's branch mispredicted on every other local maximum of a
/// heatmap), with AVX-512 compress where the CPU has it (16 values per step).
fn above_zero_indices(values: &[f32], above: usize) -> Vec<u32> {
    let mut out = vec![0u32; above + 16];
    let mut n = 0;
    let mut start = 0;
    #[cfg(target_arch = "x86_64")]
    if simd::has_avx512() {
        // SAFETY: AVX-512 checked; `out` has room for `above` indices plus one vector.
        (start, n) = unsafe { above_zero_indices_avx512(values, &mut out) };
    }
    let zero = rank_bits(0.0);
    for (i, &v) in values.iter().enumerate().skip(start) {
        out[n] = i as u32;
        n += usize::from(rank_bits(v) > zero);
    }
    out.truncate(n);
    out
}

/// The whole blocks of 16 of [`above_zero_indices`]: returns (values done, indices written).
///
/// # Safety
/// The CPU must support AVX-512F; `out` must hold every index it will write plus 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn above_zero_indices_avx512(values: &[f32], out: &mut [u32]) -> (usize, usize) {
    use std::arch::x86_64::*;
    let full = values.len() / 16 * 16;
    let mut idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let step = _mm512_set1_epi32(16);
    let zero = _mm512_setzero_ps();
    let mut n = 0;
    for block in values[..full].chunks_exact(16) {
        let v = _mm512_loadu_ps(block.as_ptr());
        // v > 0 or unordered (NaN): exactly `rank_bits(v) > rank_bits(0.0)`.
        let m = _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(v, zero);
        let packed = _mm512_maskz_compress_epi32(m, idx);
        let dst = &mut out[n..n + 16];
        _mm512_storeu_si512(dst.as_mut_ptr().cast(), packed);
        n += m.count_ones() as usize;
        idx = _mm512_add_epi32(idx, step);
    }
    (full, n)
}

/// Ordering that puts larger values first, NaN before everything.
#[inline]
pub(crate) fn desc_cmp(a: f32, b: f32) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        // Neither is NaN, so partial_cmp is total here (-0.0 == 0.0, as in torch).
        (false, false) => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
    }
}

/// The constants of [`exp_fast`], shared with its AVX-512 twin (`simd::exp_avx512`), which
/// must give the same bits.
pub(crate) mod exp_consts {
    /// The input clamp: below `LO` the result rounds to 0, above `HI` it overflows.
    pub const LO: f32 = -104.0;
    pub const HI: f32 = 89.0;
    /// ln 2 split in two (`LN2_HI` with 9 significant bits, so that `n·LN2_HI` is exact).
    pub const LN2_HI: f32 = 0.693_359_4;
    pub const LN2_LO: f32 = -2.121_944_4e-4;
    /// The polynomial's coefficients, highest degree first (Horner's order).
    pub const POLY: [f32; 6] = [
        1.987_569e-4,
        1.398_2e-3,
        8.333_452e-3,
        4.166_579_5e-2,
        1.666_666_5e-1,
        0.5,
    ];
}

/// `exp(x)` for `f32`, vectorisable (Cephes `expf`: range reduction by `ln 2` and a degree-6
/// polynomial, evaluated with fused multiply-adds; within 2 ulp of the correctly rounded
/// value). `y · 2^n` is rounded once (as AVX-512's `vscalefps` does), so results below
/// 2^-126 are subnormal, as `exp`'s, down to 0 below about -103.3, and results above
/// `f32::MAX` are infinite. NaN stays NaN.
#[inline(always)]
pub(crate) fn exp_fast(x: f32) -> f32 {
    use exp_consts::*;
    // f32::clamp keeps NaN. Beyond the clamp the result is 0 or infinite anyway; inside,
    // n·LN2_HI is exact (LN2_HI has 9 significant bits).
    let xc = x.clamp(LO, HI);
    let n = (xc * std::f32::consts::LOG2_E).round_ties_even();
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, xc));
    let z = r * r;
    let mut p = POLY[0];
    for c in &POLY[1..] {
        p = p.mul_add(r, *c);
    }
    let y = p.mul_add(z, r) + 1.0;
    // y · 2^n exactly in f64 (n is in [-150, 128]), then one rounding to f32.
    let scale = f64::from_bits(((n as i64 + 1023) as u64) << 52);
    (f64::from(y) * scale) as f32
}

/// The logistic function with [`exp_fast`]: `1 / (1 + exp(-x))`, vectorisable.
#[inline(always)]
pub(crate) fn sigmoid_fast(x: f32) -> f32 {
    1.0 / (1.0 + exp_fast(-x))
}

/// [`sigmoid_fast`] of every value in place, 16 at a time with AVX-512 or 8 with AVX2 where
/// the CPU has them (bit-identical either way: AVX2's exp can differ only on a subnormal
/// result, which `1 + e` absorbs): the decoders' sigmoid (YOLACT's and MaskFormer's masks,
/// CornerNet's corner heatmaps). `Activation::Sigmoid` keeps the C library's `exp`, whose
/// results the two-stage detectors' fixtures were checked with (an RPN's scores: an ulp there
/// moved a keypoint score by 1e-4).
pub fn sigmoid_slice(v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd::has_avx512() {
        // SAFETY: AVX-512F is present.
        unsafe { sigmoid_avx512(v) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if simd::has_avx2() {
        // SAFETY: AVX2 and FMA are present (`has_avx2` checks both).
        unsafe { sigmoid_avx2(v) };
        return;
    }
    for x in v {
        *x = sigmoid_fast(*x);
    }
}

/// [`sigmoid_fast`] of every value, 8 at a time; the last `len % 8` through the scalar one.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sigmoid_avx2(v: &mut [f32]) {
    use std::arch::x86_64::*;
    let one = _mm256_set1_ps(1.0);
    let sign = _mm256_set1_ps(-0.0);
    let mut chunks = v.chunks_exact_mut(8);
    for ch in &mut chunks {
        let x = _mm256_loadu_ps(ch.as_ptr());
        let e = simd::exp_avx2(_mm256_xor_ps(x, sign));
        _mm256_storeu_ps(ch.as_mut_ptr(), _mm256_div_ps(one, _mm256_add_ps(one, e)));
    }
    for x in chunks.into_remainder() {
        *x = sigmoid_fast(*x);
    }
}

/// [`sigmoid_fast`] of every value, 16 at a time (bit-identical: the same exp, then the
/// same IEEE addition and division).
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sigmoid_avx512(v: &mut [f32]) {
    use std::arch::x86_64::*;
    let one = _mm512_set1_ps(1.0);
    let sign = _mm512_set1_ps(-0.0);
    let mut chunks = v.chunks_exact_mut(16);
    for ch in &mut chunks {
        let x = _mm512_loadu_ps(ch.as_ptr());
        let e = simd::exp_avx512(_mm512_xor_ps(x, sign));
        _mm512_storeu_ps(ch.as_mut_ptr(), _mm512_div_ps(one, _mm512_add_ps(one, e)));
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let m: __mmask16 = (1u32 << tail.len()).wrapping_sub(1) as __mmask16;
        let x = _mm512_maskz_loadu_ps(m, tail.as_ptr());
        let e = simd::exp_avx512(_mm512_xor_ps(x, sign));
        let y = _mm512_div_ps(one, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(tail.as_mut_ptr(), m, y);
    }
}

/// `std::max(a, b)` of C++: `(a < b) ? b : a` (keeps `a` when either is NaN).
#[inline(always)]
pub(crate) fn cxx_max(a: f32, b: f32) -> f32 {
    if a < b {
        b
    } else {
        a
    }
}

/// `std::min(a, b)` of C++: `(b < a) ? b : a` (keeps `a` when either is NaN).
#[inline(always)]
pub(crate) fn cxx_min(a: f32, b: f32) -> f32 {
    if b < a {
        b
    } else {
        a
    }
}

/// `torch.maximum`/`torch.max(a, b)`: NaN if either is NaN.
#[inline(always)]
pub(crate) fn nan_max(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a < b {
        b
    } else {
        a
    }
}

/// `torch.minimum`/`torch.min(a, b)`: NaN if either is NaN.
#[inline(always)]
pub(crate) fn nan_min(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if b < a {
        b
    } else {
        a
    }
}

/// `torch.clamp(x, min=lo)` (NaN stays NaN).
#[inline(always)]
pub(crate) fn clamp_min(x: f32, lo: f32) -> f32 {
    if x < lo {
        lo
    } else {
        x
    }
}

/// `torch.clamp(x, max=hi)` (NaN stays NaN).
#[inline(always)]
pub(crate) fn clamp_max(x: f32, hi: f32) -> f32 {
    if x > hi {
        hi
    } else {
        x
    }
}

/// The largest `f32` that is `<= t` (for `f32 > f64` comparisons that must equal C++'s
/// promotion of the `f32` to `double`): for every `f32` `v`, `v > t` iff `v > round_down(t)`.
pub(crate) fn f32_round_down(t: f64) -> f32 {
    let r = t as f32; // round to nearest
    if t.is_nan() {
        return f32::NAN;
    }
    if (r as f64) > t {
        // r is the next f32 above t; step one ulp down.
        next_down(r)
    } else {
        r
    }
}

fn next_down(x: f32) -> f32 {
    if x.is_nan() || x == f32::NEG_INFINITY {
        return x;
    }
    if x == 0.0 {
        return -f32::from_bits(1);
    }
    let bits = x.to_bits();
    if x > 0.0 {
        f32::from_bits(bits - 1)
    } else {
        f32::from_bits(bits + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_down_matches_double_comparison() {
        for t in [0.3f64, 0.7, 0.5, 0.45, 1e-6, 0.0, 1.0, 0.1, 0.9] {
            let r = f32_round_down(t);
            assert!(r as f64 <= t);
            // The next f32 above r is above t.
            let up = f32::from_bits(r.to_bits() + 1);
            assert!(up as f64 > t || r == 0.0);
            for v in [r, up, t as f32, next_down(r)] {
                assert_eq!(v as f64 > t, v > r, "t={t} v={v}");
            }
        }
    }

    #[test]
    fn argsort_puts_nan_first_and_ties_by_index() {
        let s = [
            0.5,
            f32::NAN,
            0.9,
            0.5,
            -1.0,
            f32::NAN,
            -0.0,
            0.0,
            f32::INFINITY,
            -f32::INFINITY,
        ];
        assert_eq!(argsort_desc(&s), vec![1, 5, 8, 2, 0, 3, 6, 7, 4, 9]);
        assert_eq!(top_k_desc(&s, 3), vec![1, 5, 8]);
        assert_eq!(top_k_desc(&s, 7), vec![1, 5, 8, 2, 0, 3, 6]);
        // Against a plain stable sort.
        let v: Vec<f32> = (0..500).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
        let mut want: Vec<usize> = (0..v.len()).collect();
        want.sort_by(|&a, &b| desc_cmp(v[a], v[b]));
        assert_eq!(argsort_desc(&v), want);
        for k in [0, 1, 10, 300, 500, 600] {
            assert_eq!(top_k_desc(&v, k), want[..k.min(500)].to_vec());
        }
    }

    /// The inputs the vector exps are checked on: a sweep over [-100, 107), the edges (NaN,
    /// infinities, signed zeros, overflow, the subnormal range, the clamps), padded with 1.0
    /// to whole vectors of `lanes`.
    fn exp_test_inputs(lanes: usize) -> Vec<f32> {
        let mut xs: Vec<f32> = (0..4000).map(|i| -100.0 + i as f32 * 0.0517).collect();
        xs.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            88.72,
            88.73,
            -87.3,
            -103.3,
            -104.0,
            -150.0,
            89.0,
        ]);
        xs.resize(xs.len().div_ceil(lanes) * lanes, 1.0);
        xs
    }

    /// The AVX-512 exp gives `exp_fast`'s bits.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp_avx512_is_bit_identical() {
        if !simd::has_avx512() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        let xs = exp_test_inputs(16);
        for chunk in xs.chunks_exact(16) {
            let mut got = [0f32; 16];
            // SAFETY: AVX-512 checked above.
            unsafe {
                use std::arch::x86_64::*;
                let v = simd::exp_avx512(_mm512_loadu_ps(chunk.as_ptr()));
                _mm512_storeu_ps(got.as_mut_ptr(), v);
            }
            for (&x, g) in chunk.iter().zip(got) {
                assert_eq!(g.to_bits(), exp_fast(x).to_bits(), "exp({x})");
            }
        }
    }

    /// `sigmoid_slice` (AVX-512, AVX2 or scalar, whichever this CPU takes) gives
    /// `sigmoid_fast`'s bits, tails included.
    #[test]
    fn sigmoid_slice_is_bit_identical() {
        let xs: Vec<f32> = exp_test_inputs(16).iter().map(|x| -x).collect();
        for len in [xs.len(), xs.len() - 3, 7] {
            let mut got = xs[..len].to_vec();
            sigmoid_slice(&mut got);
            for (&x, g) in xs.iter().zip(got) {
                let want = sigmoid_fast(x);
                assert!(
                    g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                    "sigmoid({x}): {g} vs {want}"
                );
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp_avx2_is_bit_identical_where_normal() {
        if !simd::has_avx2() {
            eprintln!("skipped: this CPU has no AVX2");
            return;
        }
        let xs = exp_test_inputs(8);
        for chunk in xs.chunks_exact(8) {
            let mut got = [0f32; 8];
            // SAFETY: AVX2 (and FMA, which `has_avx2` also checks) checked above.
            unsafe {
                use std::arch::x86_64::*;
                let v = simd::exp_avx2(_mm256_loadu_ps(chunk.as_ptr()));
                _mm256_storeu_ps(got.as_mut_ptr(), v);
            }
            for (&x, g) in chunk.iter().zip(got) {
                let want = exp_fast(x);
                if want.is_nan() {
                    assert!(g.is_nan(), "exp({x}) = {g}");
                } else if want != 0.0 && want < f32::MIN_POSITIVE {
                    // A subnormal result may round twice: within an ulp.
                    assert!(
                        (g.to_bits() as i64 - want.to_bits() as i64).abs() <= 1,
                        "exp({x}): {g} vs {want}"
                    );
                } else {
                    assert_eq!(g.to_bits(), want.to_bits(), "exp({x})");
                }
            }
        }
    }

    #[test]
    fn above_zero_indices_match_a_filter() {
        let mut values: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
        values[3] = f32::NAN;
        values[40] = -f32::NAN;
        values[41] = -0.0;
        values[42] = f32::INFINITY;
        values[43] = f32::MIN_POSITIVE / 2.0;
        for len in [0, 5, 16, 17, 999, 1000] {
            let v = &values[..len];
            let want: Vec<u32> = (0..len as u32)
                .filter(|&i| rank_bits(v[i as usize]) > rank_bits(0.0))
                .collect();
            assert_eq!(above_zero_indices(v, want.len()), want, "len {len}");
        }
    }

    #[test]
    fn exp_fast_is_within_2_ulp() {
        let mut worst = 0.0f32;
        let mut x = -87.0f32;
        while x < 88.7 {
            let (a, b) = (exp_fast(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 2.5e-7, "{worst}");
        assert!(exp_fast(f32::NAN).is_nan());
        assert_eq!(exp_fast(100.0), f32::INFINITY);
        assert_eq!(exp_fast(-105.0), 0.0);
        assert_eq!(exp_fast(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_fast(f32::INFINITY), f32::INFINITY);
        // Subnormal results, as exp's (within an ulp of them).
        for x in [-88.0f32, -95.0, -100.0, -103.0] {
            let (a, b) = (exp_fast(x), x.exp());
            assert!(a > 0.0 && a < f32::MIN_POSITIVE, "exp({x}) = {a}");
            assert!(
                (a.to_bits() as i64 - b.to_bits() as i64).abs() <= 1,
                "exp({x}): {a} vs {b}"
            );
        }
        assert_eq!(exp_fast(0.0), 1.0);
    }

    #[test]
    fn cxx_min_max_keep_first_on_nan() {
        assert!(cxx_max(f32::NAN, 1.0).is_nan());
        assert_eq!(cxx_max(1.0, f32::NAN), 1.0);
        assert!(cxx_min(f32::NAN, 1.0).is_nan());
        assert_eq!(cxx_min(1.0, f32::NAN), 1.0);
        assert!(nan_max(1.0, f32::NAN).is_nan());
        assert!(nan_min(f32::NAN, 1.0).is_nan());
    }
}
