//! Normalisation layers (inference): group norm and batch norm.
//!
//! Inputs are `[N, C, *]` (any number of trailing spatial dimensions, as torch). Statistics
//! are accumulated in f64.

use ndarray::{ArrayD, ArrayView1, ArrayViewD};
use rayon::prelude::*;

use super::{invalid, shape_err, Activation, Result};

fn check_param(
    op: &'static str,
    name: &str,
    p: Option<ArrayView1<'_, f32>>,
    c: usize,
) -> Result<()> {
    match p {
        Some(p) if p.len() != c => shape_err(
            op,
            format!("{name} has {} values for {c} channels", p.len()),
        ),
        _ => Ok(()),
    }
}

fn nc_rest(op: &'static str, x: &ArrayViewD<'_, f32>) -> Result<(usize, usize, usize)> {
    if x.ndim() < 2 {
        return shape_err(op, format!("expected [N, C, *], got shape {:?}", x.shape()));
    }
    let n = x.shape()[0];
    let c = x.shape()[1];
    let rest: usize = x.shape()[2..].iter().product();
    Ok((n, c, rest))
}

/// `torch.nn.functional.group_norm(x, num_groups, weight, bias, eps)`:
/// per (sample, group) mean and biased variance, `y = (x - mean) / sqrt(var + eps)·γ[c] + β[c]`.
pub fn group_norm(
    x: ArrayViewD<'_, f32>,
    num_groups: usize,
    gamma: Option<ArrayView1<'_, f32>>,
    beta: Option<ArrayView1<'_, f32>>,
    eps: f32,
) -> Result<ArrayD<f32>> {
    let mut out = x.as_standard_layout().into_owned();
    group_norm_in_place(&mut out, num_groups, gamma, beta, eps, Activation::Identity)?;
    Ok(out)
}

/// [`group_norm`] of `x` in place, followed by `activation` (Detectron2's conv + GroupNorm +
/// ReLU without a copy of the map, and the activation applied while each plane is in cache).
pub fn group_norm_in_place(
    x: &mut ArrayD<f32>,
    num_groups: usize,
    gamma: Option<ArrayView1<'_, f32>>,
    beta: Option<ArrayView1<'_, f32>>,
    eps: f32,
    activation: Activation,
) -> Result<()> {
    const OP: &str = "group_norm";
    let (_n, c, rest) = nc_rest(OP, &x.view())?;
    if num_groups == 0 || c % num_groups != 0 {
        return invalid(
            OP,
            format!("{c} channels are not divisible into {num_groups} groups"),
        );
    }
    check_param(OP, "weight", gamma, c)?;
    check_param(OP, "bias", beta, c)?;
    let cg = c / num_groups;
    let chunk = cg * rest;
    if chunk == 0 {
        return Ok(());
    }
    if !x.is_standard_layout() {
        *x = x.as_standard_layout().into_owned();
    }
    let data = x.as_slice_mut().ok_or(super::LayerError::Invalid {
        op: OP,
        msg: "not contiguous".into(),
    })?;
    data.par_chunks_mut(chunk).enumerate().for_each(|(i, grp)| {
        let g = i % num_groups;
        let (s, s2) = sums_f64(grp);
        let cnt = grp.len() as f64;
        let mean = s / cnt;
        let var = (s2 / cnt - mean * mean).max(0.0);
        let rstd = 1.0 / (var + eps as f64).sqrt();
        for (ci, plane) in grp.chunks_mut(rest).enumerate() {
            let ch = g * cg + ci;
            let ga = gamma.map_or(1.0, |p| p[ch] as f64);
            let be = beta.map_or(0.0, |p| p[ch] as f64);
            let a = rstd * ga;
            let b = be - mean * a;
            scale_shift_f64(plane, a, b);
            activation.apply_slice(plane);
        }
    });
    Ok(())
}

crate::ops::simd::multiversion!(fn sums_f64(x: &[f32]) -> (f64, f64) => sums_f64_portable);

/// `(Σ x, Σ x²)` in f64, over eight running sums each (so the additions vectorise).
#[inline(always)]
fn sums_f64_portable(x: &[f32]) -> (f64, f64) {
    let (mut s, mut s2) = ([0f64; 8], [0f64; 8]);
    let mut blocks = x.chunks_exact(8);
    for b in &mut blocks {
        for k in 0..8 {
            let v = b[k] as f64;
            s[k] += v;
            s2[k] += v * v;
        }
    }
    for (k, &v) in blocks.remainder().iter().enumerate() {
        s[k] += v as f64;
        s2[k] += v as f64 * v as f64;
    }
    (s.iter().sum(), s2.iter().sum())
}

crate::ops::simd::multiversion!(fn scale_shift_f64(x: &mut [f32], a: f64, b: f64) => scale_shift_f64_portable);

/// `x = x·a + b`, computed in f64.
#[inline(always)]
fn scale_shift_f64_portable(x: &mut [f32], a: f64, b: f64) {
    x.iter_mut().for_each(|v| *v = (*v as f64 * a + b) as f32);
}

/// Inference batch norm (`torch.nn.functional.batch_norm(..., training=False)`):
/// `y = (x - mean[c]) / sqrt(var[c] + eps)·γ[c] + β[c]`, computed as `x·a[c] + b[c]`.
/// Prefer folding it into the preceding convolution ([`super::fold_batch_norm`]).
pub fn batch_norm(
    x: ArrayViewD<'_, f32>,
    mean: ArrayView1<'_, f32>,
    var: ArrayView1<'_, f32>,
    gamma: Option<ArrayView1<'_, f32>>,
    beta: Option<ArrayView1<'_, f32>>,
    eps: f32,
) -> Result<ArrayD<f32>> {
    const OP: &str = "batch_norm";
    let (_n, c, rest) = nc_rest(OP, &x)?;
    check_param(OP, "running_mean", Some(mean), c)?;
    check_param(OP, "running_var", Some(var), c)?;
    check_param(OP, "weight", gamma, c)?;
    check_param(OP, "bias", beta, c)?;
    let coef: Vec<(f32, f32)> = (0..c)
        .map(|ch| {
            let a = gamma.map_or(1.0, |p| p[ch] as f64) / (var[ch] as f64 + eps as f64).sqrt();
            let b = beta.map_or(0.0, |p| p[ch] as f64) - mean[ch] as f64 * a;
            (a as f32, b as f32)
        })
        .collect();
    let mut out = x.as_standard_layout().into_owned();
    if rest == 0 || c == 0 {
        return Ok(out);
    }
    let data = out.as_slice_mut().ok_or(super::LayerError::Invalid {
        op: OP,
        msg: "not contiguous".into(),
    })?;
    data.par_chunks_mut(rest)
        .enumerate()
        .for_each(|(i, plane)| {
            let (a, b) = coef[i % c];
            plane.iter_mut().for_each(|v| *v = *v * a + b);
        });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, ArrayD, IxDyn};

    #[test]
    fn group_norm_normalises_each_group() {
        let x = ArrayD::from_shape_vec(
            IxDyn(&[1, 4, 2]),
            vec![1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 20.0, 20.0],
        )
        .unwrap();
        let y = group_norm(x.view(), 2, None, None, 0.0).unwrap();
        let g0: Vec<f32> = y.iter().take(4).copied().collect();
        let m: f32 = g0.iter().sum::<f32>() / 4.0;
        assert!(m.abs() < 1e-6);
        assert!((y[[0, 2, 0]] + 1.0).abs() < 1e-6 && (y[[0, 3, 1]] - 1.0).abs() < 1e-6);
        assert!(group_norm(x.view(), 3, None, None, 1e-5).is_err());
        assert!(group_norm(x.view(), 2, Some(arr1(&[1.0f32]).view()), None, 1e-5).is_err());
    }

    #[test]
    fn batch_norm_formula() {
        let x = ArrayD::from_shape_vec(IxDyn(&[1, 2, 2]), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let y = batch_norm(
            x.view(),
            arr1(&[1.0f32, 2.0]).view(),
            arr1(&[4.0f32, 1.0]).view(),
            Some(arr1(&[2.0f32, 1.0]).view()),
            Some(arr1(&[0.0f32, 1.0]).view()),
            0.0,
        )
        .unwrap();
        assert_eq!(y.as_slice().unwrap(), &[0.0, 1.0, 2.0, 3.0]);
    }
}
