//! The transformer layers: multi-head attention, layer normalisation and GELU, on token
//! matrices `[L, D]` (one sequence; rows are tokens), as `torch.nn.MultiheadAttention`,
//! `torch.nn.LayerNorm` and `torch.nn.GELU` compute them in eval mode.
//!
//! Attention runs per head and per block of query rows ([`QUERY_BLOCK`]): the block's scores
//! `Q_b·K_hᵀ` (one GEMM, at most `QUERY_BLOCK x L_k`, so it stays in the cache), a fused scaled
//! softmax over each row, and `P·V_h` written straight into the head's columns of the output
//! (strided GEMM output, no concatenation). Blocks of all heads run in parallel on rayon.
//! The query is scaled by `1/sqrt(head_dim)` after its projection, before the product, as
//! torch's `multi_head_attention_forward` and Hugging Face's attention modules do.

use ndarray::{Array2, ArrayView1, ArrayView2, Axis};
use rayon::prelude::*;

use super::linear::Linear;
use super::packed_gemm::{gemm_packed, PackedMatrix};
use super::shape::softmax_in_place;
use super::{invalid, shape_err, Result};

/// Query rows per attention task.
pub const QUERY_BLOCK: usize = 128;

/// `torch.nn.LayerNorm(dim, eps)` over the last axis of `[L, dim]`: statistics per row in
/// f64 (torch accumulates in f32 with a cascade; both are within 1e-7 of the exact value),
/// then `(x - mean) / sqrt(var + eps) · weight + bias` in f32.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    pub fn new(weight: ArrayView1<'_, f32>, bias: ArrayView1<'_, f32>, eps: f32) -> Result<Self> {
        if weight.len() != bias.len() || weight.is_empty() {
            return shape_err(
                "layer_norm",
                format!("weight [{}] and bias [{}] differ", weight.len(), bias.len()),
            );
        }
        Ok(LayerNorm {
            weight: weight.to_vec(),
            bias: bias.to_vec(),
            eps,
        })
    }

    pub fn dim(&self) -> usize {
        self.weight.len()
    }

    pub fn weight(&self) -> &[f32] {
        &self.weight
    }

    pub fn bias(&self) -> &[f32] {
        &self.bias
    }

    pub fn eps(&self) -> f32 {
        self.eps
    }

    /// Normalises every row of `x` `[L, dim]` in place.
    pub fn forward_inplace(&self, x: &mut Array2<f32>) -> Result<()> {
        let d = self.dim();
        if x.ncols() != d {
            return shape_err(
                "layer_norm",
                format!("input has {} features, expected {d}", x.ncols()),
            );
        }
        if !x.is_standard_layout() {
            *x = x.as_standard_layout().into_owned();
        }
        let data = x.as_slice_mut().ok_or(super::LayerError::Invalid {
            op: "layer_norm",
            msg: "input not contiguous".into(),
        })?;
        data.par_chunks_mut(d * 16).for_each(|rows| {
            for row in rows.chunks_mut(d) {
                let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / d as f64;
                let var = row
                    .iter()
                    .map(|&v| (f64::from(v) - mean).powi(2))
                    .sum::<f64>()
                    / d as f64;
                let inv = (1.0 / (var + f64::from(self.eps)).sqrt()) as f32;
                let mean = mean as f32;
                for ((v, &w), &b) in row.iter_mut().zip(&self.weight).zip(&self.bias) {
                    *v = (*v - mean) * inv * w + b;
                }
            }
        });
        Ok(())
    }

    /// A normalised copy of `x`.
    pub fn forward(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        let mut out = x.to_owned();
        self.forward_inplace(&mut out)?;
        Ok(out)
    }
}

/// `torch.nn.GELU()` (the exact form, `approximate="none"`): `x · Φ(x) = x/2 · (1 + erf(x/√2))`.
pub fn gelu_inplace(data: &mut [f32]) {
    data.par_chunks_mut(1 << 14).for_each(|c| {
        for v in c {
            *v = 0.5 * *v * (1.0 + libm::erff(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    });
}

/// `torch.nn.MultiheadAttention` at inference (no masks, no dropout, batch 1): the query,
/// key and value projections, `heads` scaled dot-product attentions, and the output
/// projection.
#[derive(Clone, Debug)]
pub struct MultiheadAttention {
    heads: usize,
    dim: usize,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
}

impl MultiheadAttention {
    /// From the separate projections (Hugging Face's `q_proj`, `k_proj`, `v_proj`,
    /// `out_proj`), each `[dim, dim]` with a bias.
    pub fn new(heads: usize, q: Linear, k: Linear, v: Linear, out: Linear) -> Result<Self> {
        let dim = out.out_features();
        let square = |l: &Linear| l.in_features() == dim && l.out_features() == dim;
        if heads == 0 || !dim.is_multiple_of(heads) {
            return invalid(
                "multihead_attention",
                format!("{dim} features do not split into {heads} heads"),
            );
        }
        if !(square(&q) && square(&k) && square(&v) && out.in_features() == dim) {
            return shape_err(
                "multihead_attention",
                format!("every projection must be [{dim}, {dim}]"),
            );
        }
        Ok(MultiheadAttention {
            heads,
            dim,
            q,
            k,
            v,
            out,
        })
    }

    /// From torch's packed `in_proj_weight` `[3·dim, dim]` and `in_proj_bias` `[3·dim]`
    /// (query, key and value rows in that order) and `out_proj`.
    pub fn from_packed(
        heads: usize,
        in_proj_weight: ArrayView2<'_, f32>,
        in_proj_bias: ArrayView1<'_, f32>,
        out_weight: ArrayView2<'_, f32>,
        out_bias: ArrayView1<'_, f32>,
    ) -> Result<Self> {
        let dim = out_weight.nrows();
        if in_proj_weight.dim() != (3 * dim, dim) || in_proj_bias.len() != 3 * dim {
            return shape_err(
                "multihead_attention",
                format!(
                    "in_proj_weight {:?} and in_proj_bias [{}] must be [{}, {dim}] and [{}]",
                    in_proj_weight.dim(),
                    in_proj_bias.len(),
                    3 * dim,
                    3 * dim
                ),
            );
        }
        let part = |i: usize| {
            let rows = ndarray::s![i * dim..(i + 1) * dim, ..];
            Linear::new(
                in_proj_weight.slice(rows),
                Some(in_proj_bias.slice(ndarray::s![i * dim..(i + 1) * dim])),
            )
        };
        MultiheadAttention::new(
            heads,
            part(0)?,
            part(1)?,
            part(2)?,
            Linear::new(out_weight, Some(out_bias))?,
        )
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `attn(query, key, value)[0]`: `query` `[L_q, dim]`, `key` and `value` `[L_k, dim]`
    /// (the inputs of the projections: DETR adds the positional embeddings to the query and
    /// key inputs, not to the value).
    pub fn forward(
        &self,
        query: ArrayView2<'_, f32>,
        key: ArrayView2<'_, f32>,
        value: ArrayView2<'_, f32>,
    ) -> Result<Array2<f32>> {
        if key.nrows() != value.nrows() {
            return shape_err(
                "multihead_attention",
                format!("{} keys but {} values", key.nrows(), value.nrows()),
            );
        }
        let mut q = self.q.forward(query)?;
        let scale = 1.0 / ((self.dim / self.heads) as f32).sqrt();
        q.mapv_inplace(|v| v * scale);
        let k = self.k.forward(key)?;
        let v = self.v.forward(value)?;
        let o = scaled_dot_product_attention(q.view(), k.view(), v.view(), self.heads)?;
        self.out.forward(o.view())
    }
}

/// The softmax of every row of `data` (rows of `cols` values), in place: what attention
/// applies to its scores.
pub fn softmax_rows(data: &mut [f32], cols: usize) {
    if cols > 0 {
        data.chunks_mut(cols).for_each(softmax_row);
    }
}

/// The softmax of one row of attention scores. With AVX-512 or AVX2: `exp` on 16 or 8 lanes
/// ([`crate::ops::simd::exp_avx512`], [`crate::ops::simd::exp_avx2`]: within 2 ulp of
/// `f32::exp`) and an f32 sum; otherwise the engine's scalar softmax. A row holding NaN gives
/// NaN everywhere, as torch's.
fn softmax_row(row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::ops::simd::has_avx512() {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            unsafe { softmax_row_avx512(row) };
            return;
        }
        if crate::ops::simd::has_avx2() {
            // SAFETY: the CPU supports AVX2 and FMA (`has_avx2` checks both).
            unsafe { softmax_row_avx2(row) };
            return;
        }
    }
    softmax_in_place(row);
}

/// [`softmax_row_avx512`] on 8 lanes; the last `len % 8` values through the scalar
/// [`crate::ops::exp_fast`] (the same function, lane for lane).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_row_avx2(row: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = row.len();
    let full = n / 8;
    let p = row.as_mut_ptr();
    // SAFETY (every pointer below): chunk i covers p + 8i .. p + 8i + 8 <= p + n; the tail
    // `8·full..n` goes through the slice.
    // The maximum, and (in the same pass) whether any value is NaN, which `max_ps` drops.
    let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut nan = _mm256_setzero_ps();
    for i in 0..full {
        let x = _mm256_loadu_ps(p.add(8 * i));
        m = _mm256_max_ps(m, x);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x));
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), m);
    let mut max = lanes.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    for &v in &row[8 * full..] {
        max = if v > max || v.is_nan() { v } else { max };
    }
    if _mm256_movemask_ps(nan) != 0 {
        max = f32::NAN;
    }
    let vmax = _mm256_set1_ps(max);
    let mut sum = _mm256_setzero_ps();
    for i in 0..full {
        let e = crate::ops::simd::exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(p.add(8 * i)), vmax));
        _mm256_storeu_ps(p.add(8 * i), e);
        sum = _mm256_add_ps(sum, e);
    }
    _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
    let mut total: f32 = lanes.iter().sum();
    for v in &mut row[8 * full..] {
        *v = crate::ops::exp_fast(*v - max);
        total += *v;
    }
    let inv = 1.0 / total;
    let vinv = _mm256_set1_ps(inv);
    for i in 0..full {
        _mm256_storeu_ps(
            p.add(8 * i),
            _mm256_mul_ps(_mm256_loadu_ps(p.add(8 * i)), vinv),
        );
    }
    for v in &mut row[8 * full..] {
        *v *= inv;
    }
}

/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_row_avx512(row: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = row.len();
    let full = n / 16;
    let tail = n % 16;
    let tail_mask: __mmask16 = ((1u32 << tail) - 1) as __mmask16;
    let p = row.as_mut_ptr();
    // SAFETY (every pointer below): chunk i covers p + 16i .. p + 16i + 16 <= p + n, and the
    // tail is read and written through `tail_mask`, which covers the last `tail` elements.
    // The maximum, and (in the same pass) whether any value is NaN, which `max_ps` drops.
    let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut nan: __mmask16 = 0;
    for i in 0..full {
        let x = _mm512_loadu_ps(p.add(16 * i));
        m = _mm512_max_ps(m, x);
        nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
    }
    let mut max = _mm512_reduce_max_ps(m);
    for &v in &row[16 * full..] {
        max = if v > max || v.is_nan() { v } else { max };
    }
    if nan != 0 {
        max = f32::NAN;
    }
    let vmax = _mm512_set1_ps(max);
    let mut sum = _mm512_setzero_ps();
    for i in 0..full {
        let e = crate::ops::simd::exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(p.add(16 * i)), vmax));
        _mm512_storeu_ps(p.add(16 * i), e);
        sum = _mm512_add_ps(sum, e);
    }
    if tail > 0 {
        let q = p.add(16 * full);
        let x = _mm512_maskz_loadu_ps(tail_mask, q);
        let e = _mm512_maskz_mov_ps(
            tail_mask,
            crate::ops::simd::exp_avx512(_mm512_sub_ps(x, vmax)),
        );
        _mm512_mask_storeu_ps(q, tail_mask, e);
        sum = _mm512_add_ps(sum, e);
    }
    let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
    for i in 0..full {
        _mm512_storeu_ps(
            p.add(16 * i),
            _mm512_mul_ps(_mm512_loadu_ps(p.add(16 * i)), inv),
        );
    }
    if tail > 0 {
        let q = p.add(16 * full);
        _mm512_mask_storeu_ps(
            q,
            tail_mask,
            _mm512_mul_ps(_mm512_maskz_loadu_ps(tail_mask, q), inv),
        );
    }
}

/// `softmax(Q·Kᵀ)·V` per head, for a query already scaled: `q` `[L_q, D]`, `k` and `v`
/// `[L_k, D]`, head `h` owning columns `h·D/heads..(h+1)·D/heads`. Returns `[L_q, D]`.
pub fn scaled_dot_product_attention(
    q: ArrayView2<'_, f32>,
    k: ArrayView2<'_, f32>,
    v: ArrayView2<'_, f32>,
    heads: usize,
) -> Result<Array2<f32>> {
    const OP: &str = "attention";
    let (lq, d) = q.dim();
    let lk = k.nrows();
    if k.ncols() != d || v.dim() != (lk, d) || heads == 0 || d % heads != 0 {
        return shape_err(
            OP,
            format!(
                "q {:?}, k {:?}, v {:?} with {heads} heads",
                q.dim(),
                k.dim(),
                v.dim()
            ),
        );
    }
    let (q, k, v) = (
        q.as_standard_layout(),
        k.as_standard_layout(),
        v.as_standard_layout(),
    );
    let qs: Vec<f32> = q
        .as_slice()
        .map(<[f32]>::to_vec)
        .unwrap_or_else(|| q.iter().copied().collect());
    // Per head, Kᵀ `[hd, L_k]` and V `[L_k, hd]` packed once into the column panels of
    // `gemm_packed`: every query block reads them, and the products then need no packing
    // or dispatch of their own (with the `gemm` crate, 4% slower at 950 tokens).
    let hd = d / heads;
    let per_head = |m: &ndarray::CowArray<'_, f32, ndarray::Ix2>,
                    transpose: bool|
     -> Result<Vec<PackedMatrix>> {
        (0..heads)
            .into_par_iter()
            .map(|h| {
                let part = m.slice(ndarray::s![.., h * hd..(h + 1) * hd]);
                let part = if transpose {
                    part.reversed_axes()
                } else {
                    part
                };
                let rows: Vec<f32> = part.as_standard_layout().iter().copied().collect();
                let (k, n) = part.dim();
                PackedMatrix::new(&rows, k, n, None)
            })
            .collect()
    };
    let (kt, vh) = (per_head(&k, true)?, per_head(&v, false)?);
    let mut out = Array2::<f32>::zeros((lq, d));
    if lq == 0 || lk == 0 {
        return Ok(out);
    }
    // Each task owns a block of rows and one head: it writes only that block's columns of
    // that head, so tasks run on disjoint output rows; the rows are split first by block.
    let mut row_blocks: Vec<(usize, ndarray::ArrayViewMut2<'_, f32>)> = out
        .axis_chunks_iter_mut(Axis(0), QUERY_BLOCK)
        .enumerate()
        .collect();
    row_blocks
        .par_iter_mut()
        .with_max_len(1)
        .try_for_each(|(b, rows)| -> Result<()> {
            let r0 = *b * QUERY_BLOCK;
            let n = rows.nrows();
            let mut scores = vec![0f32; n * lk];
            let mut block = vec![0f32; n * d];
            for h in 0..heads {
                let c0 = h * hd;
                gemm_packed(n, &qs[r0 * d + c0..], d, &kt[h], &mut scores, lk)?;
                scores.chunks_mut(lk).for_each(softmax_row);
                gemm_packed(n, &scores, lk, &vh[h], &mut block[c0..], d)?;
            }
            for (dst, src) in rows.iter_mut().zip(&block) {
                *dst = *src;
            }
            Ok(())
        })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, Array1};

    fn pseudo(n: usize, m: usize, seed: u32) -> Array2<f32> {
        Array2::from_shape_fn((n, m), |(i, j)| {
            let x = (i * 31 + j * 17 + seed as usize * 7) as f32;
            (x * 0.37).sin()
        })
    }

    /// Attention written out in f64 for one head at a time.
    fn naive(q: &Array2<f32>, k: &Array2<f32>, v: &Array2<f32>, heads: usize) -> Array2<f64> {
        let (lq, d) = q.dim();
        let lk = k.nrows();
        let hd = d / heads;
        let mut out = Array2::<f64>::zeros((lq, d));
        for h in 0..heads {
            for i in 0..lq {
                let s: Vec<f64> = (0..lk)
                    .map(|j| {
                        (0..hd)
                            .map(|c| q[[i, h * hd + c]] as f64 * k[[j, h * hd + c]] as f64)
                            .sum()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..hd {
                    out[[i, h * hd + c]] =
                        (0..lk).map(|j| e[j] / z * v[[j, h * hd + c]] as f64).sum();
                }
            }
        }
        out
    }

    #[test]
    fn attention_matches_the_definition_across_blocks_and_heads() {
        for (lq, lk, d, heads) in [(5, 7, 8, 2), (130, 70, 16, 4), (64, 1, 6, 3)] {
            let q = pseudo(lq, d, 1);
            let k = pseudo(lk, d, 2);
            let v = pseudo(lk, d, 3);
            let got = scaled_dot_product_attention(q.view(), k.view(), v.view(), heads).unwrap();
            let want = naive(&q, &k, &v, heads);
            for (g, w) in got.iter().zip(want.iter()) {
                assert!(
                    (*g as f64 - w).abs() < 1e-5,
                    "{lq}x{lk}x{d}/{heads}: {g} vs {w}"
                );
            }
        }
        assert!(scaled_dot_product_attention(
            pseudo(2, 6, 0).view(),
            pseudo(3, 6, 0).view(),
            pseudo(3, 6, 0).view(),
            4
        )
        .is_err());
    }

    #[test]
    fn row_softmax_matches_the_scalar_one() {
        for n in [1usize, 15, 16, 17, 950] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 97) as f32 * 0.21 - 9.0)
                .collect();
            let (mut a, mut b) = (x.clone(), x.clone());
            softmax_row(&mut a);
            softmax_in_place(&mut b);
            for (u, v) in a.iter().zip(&b) {
                assert!((u - v).abs() <= 1e-6 * v.max(1e-3), "{n}: {u} vs {v}");
            }
            // The AVX2 path too where it is not the one taken (an AVX-512 CPU).
            #[cfg(target_arch = "x86_64")]
            if crate::ops::simd::has_avx2() {
                let mut c = x.clone();
                // SAFETY: AVX2 and FMA checked just above.
                unsafe { softmax_row_avx2(&mut c) };
                for (u, v) in c.iter().zip(&b) {
                    assert!((u - v).abs() <= 1e-6 * v.max(1e-3), "avx2 {n}: {u} vs {v}");
                }
            }
        }
        let mut nan = vec![0.0f32; 20];
        nan[3] = f32::NAN;
        softmax_row(&mut nan);
        assert!(nan.iter().all(|v| v.is_nan()));
        #[cfg(target_arch = "x86_64")]
        if crate::ops::simd::has_avx2() {
            for at in [3, 17] {
                let mut nan = vec![0.0f32; 20];
                nan[at] = f32::NAN;
                // SAFETY: AVX2 and FMA checked just above.
                unsafe { softmax_row_avx2(&mut nan) };
                assert!(nan.iter().all(|v| v.is_nan()), "NaN at {at}");
            }
        }
    }

    #[test]
    fn packed_projections_and_scaling() {
        let d = 4;
        let w = Array2::from_shape_fn((3 * d, d), |(i, j)| ((i * 5 + j) as f32 * 0.1).cos());
        let b = Array1::from_shape_fn(3 * d, |i| i as f32 * 0.01);
        let ow = Array2::<f32>::eye(d);
        let ob = Array1::<f32>::zeros(d);
        let mha =
            MultiheadAttention::from_packed(2, w.view(), b.view(), ow.view(), ob.view()).unwrap();
        let x = pseudo(3, d, 9);
        let got = mha.forward(x.view(), x.view(), x.view()).unwrap();
        let proj = |i: usize| {
            let wi = w.slice(ndarray::s![i * d..(i + 1) * d, ..]);
            x.dot(&wi.t()) + b.slice(ndarray::s![i * d..(i + 1) * d])
        };
        let q = proj(0) * (1.0 / 2f32.sqrt());
        let want = naive(&q, &proj(1), &proj(2), 2);
        for (g, w) in got.iter().zip(want.iter()) {
            assert!((*g as f64 - w).abs() < 1e-5);
        }
        assert!(
            MultiheadAttention::from_packed(3, w.view(), b.view(), ow.view(), ob.view()).is_err()
        );
    }

    #[test]
    fn layer_norm_and_gelu_by_hand() {
        let ln = LayerNorm::new(
            arr1(&[1.0f32, 2.0]).view(),
            arr1(&[0.0f32, 1.0]).view(),
            0.0,
        )
        .unwrap();
        let y = ln.forward(ndarray::arr2(&[[1.0f32, 3.0]]).view()).unwrap();
        assert_eq!(y, ndarray::arr2(&[[-1.0f32, 3.0]]));
        assert!(ln.forward(ndarray::arr2(&[[1.0f32]]).view()).is_err());
        let mut g = [0.0f32, 1.0, -1.0];
        gelu_inplace(&mut g);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 0.841_344_7).abs() < 1e-6 && (g[2] + 0.158_655_3).abs() < 1e-6);
    }
}
