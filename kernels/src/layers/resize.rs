//! Nearest and bilinear resizing of `[N, C, H, W]` with PyTorch's and TensorFlow's
//! coordinate conventions.
//!
//! | mode | source coordinate of output index `d` (`s = in/out` unless noted) | same as |
//! | --- | --- | --- |
//! | [`ResizeMode::Nearest`] | `min(floor(d·s), in-1)` | torch `"nearest"`, TF legacy nearest |
//! | [`ResizeMode::NearestExact`] | `min(floor((d+0.5)·s), in-1)` | torch `"nearest-exact"`, TF nearest `half_pixel_centers=True` |
//! | [`ResizeMode::TfNearestAlignCorners`] | `round(d·(in-1)/(out-1))` (half away from 0) | TF nearest `align_corners=True` |
//! | [`ResizeMode::Bilinear`] `{align_corners: false}` | `max((d+0.5)·s - 0.5, 0)` | torch bilinear, TF `half_pixel_centers=True` up to rounding |
//! | [`ResizeMode::Bilinear`] `{align_corners: true}` | `d·(in-1)/(out-1)` (0 when `out = 1`) | torch and TF `align_corners=True` |
//! | [`ResizeMode::TfBilinearLegacy`] | `d·s` (`align_corners=False, half_pixel_centers=False`) | TF1 `resize_bilinear` default |
//! | [`ResizeMode::TfBilinearHalfPixel`] | `(d+0.5)·s - 0.5`, lower index clamped at 0 | TF2 `tf.image.resize` bilinear |
//! | [`ResizeMode::TfjsBilinear`] | either TF mapping above, or align-corners `d·(in-1)/(out-1)`, all in f64 | TF.js's CPU `resizeBilinear` |
//!
//! Torch modes compute the scale and weights in f32 exactly as ATen's CPU kernels do
//! (`h0λ·(w0λ·x00 + w1λ·x01) + h1λ·(w0λ·x10 + w1λ·x11)`); TF modes use TF's
//! `top + (bottom - top)·y_lerp` form, in f32 like TF's C++ kernel; TF.js's CPU backend
//! computes the same form in JavaScript numbers, f64, which [`ResizeMode::TfjsBilinear`]
//! reproduces (f32 would move TF.js models' inputs by up to 1e-5). When torch is given a `scale_factor` (and
//! `recompute_scale_factor` is not set) its kernels use `1/scale_factor` instead of `in/out`:
//! pass it through [`resize_with_scale`].
//!
//! [`resize_bicubic`] is torch's `mode="bicubic"` (A = -0.75, borders clamped).
//!
//! [`resize`] takes `[N, C, H, W]`, [`resize_nhwc`] `[N, H, W, C]`: one kernel serves both,
//! an `NCHW` plane being an `NHWC` image of one channel.

use ndarray::{Array4, ArrayView4};
use rayon::prelude::*;

use super::{checked_numel, invalid, shape_err, Result};

/// Interpolation and coordinate convention; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeMode {
    Nearest,
    NearestExact,
    TfNearestAlignCorners,
    Bilinear {
        align_corners: bool,
    },
    TfBilinearLegacy,
    TfBilinearHalfPixel,
    TfjsBilinear {
        align_corners: bool,
        half_pixel_centers: bool,
    },
}

/// For one axis: per output index, the two source indices and their weights.
#[derive(Clone, Debug)]
pub(crate) struct AxisTable {
    pub i0: Vec<usize>,
    pub i1: Vec<usize>,
    pub l0: Vec<f32>,
    pub l1: Vec<f32>,
    /// The upper weight in f64 ([`ResizeMode::TfjsBilinear`] only; empty otherwise).
    pub l1_f64: Vec<f64>,
}

/// torch's `area_pixel_compute_scale` / `compute_scales_value` (f32).
fn torch_scale(input: usize, out: usize, align_corners: bool, scale: Option<f64>) -> f32 {
    if align_corners {
        if out > 1 {
            (input as f32 - 1.0) / (out as f32 - 1.0)
        } else {
            0.0
        }
    } else {
        match scale {
            Some(s) if s > 0.0 => (1.0 / s) as f32,
            _ => input as f32 / out as f32,
        }
    }
}

fn tf_scale(input: usize, out: usize, align_corners: bool) -> f32 {
    if align_corners && out > 1 {
        (input as f32 - 1.0) / (out as f32 - 1.0)
    } else {
        input as f32 / out as f32
    }
}

pub(crate) fn axis_table(
    input: usize,
    out: usize,
    mode: ResizeMode,
    scale: Option<f64>,
) -> AxisTable {
    let mut t = AxisTable {
        i0: Vec::with_capacity(out),
        i1: Vec::with_capacity(out),
        l0: Vec::with_capacity(out),
        l1: Vec::with_capacity(out),
        l1_f64: Vec::new(),
    };
    let last = input - 1;
    let mut push = |i0: usize, i1: usize, l1: f32| {
        t.i0.push(i0.min(last));
        t.i1.push(i1.min(last));
        t.l0.push(1.0 - l1);
        t.l1.push(l1);
    };
    match mode {
        ResizeMode::Nearest | ResizeMode::NearestExact => {
            let s = torch_scale(input, out, false, scale);
            let half = if mode == ResizeMode::NearestExact {
                0.5
            } else {
                0.0
            };
            for d in 0..out {
                let i = if mode == ResizeMode::Nearest && out == input {
                    d
                } else if mode == ResizeMode::Nearest && out == 2 * input {
                    d >> 1
                } else {
                    ((d as f32 + half) * s).floor().max(0.0) as usize
                };
                push(i, i, 0.0);
            }
        }
        ResizeMode::TfNearestAlignCorners => {
            let s = tf_scale(input, out, true);
            for d in 0..out {
                let i = (d as f32 * s).round().max(0.0) as usize;
                push(i, i, 0.0);
            }
        }
        ResizeMode::Bilinear { align_corners } => {
            let s = torch_scale(input, out, align_corners, scale);
            for d in 0..out {
                let src = if align_corners {
                    s * d as f32
                } else {
                    (s * (d as f32 + 0.5) - 0.5).max(0.0)
                };
                let i0 = (src.floor() as usize).min(last);
                let l1 = (src - i0 as f32).clamp(0.0, 1.0);
                let i1 = if i0 < last { i0 + 1 } else { i0 };
                push(i0, i1, l1);
            }
        }
        ResizeMode::TfjsBilinear {
            align_corners,
            half_pixel_centers,
        } => {
            let s = if align_corners && out > 1 {
                (input - 1) as f64 / (out - 1) as f64
            } else {
                input as f64 / out as f64
            };
            let mut l1_f64 = Vec::with_capacity(out);
            for d in 0..out {
                let src = if half_pixel_centers {
                    s * (d as f64 + 0.5) - 0.5
                } else {
                    s * d as f64
                };
                // TF.js takes the fraction from the clamped lower index.
                let lo = src.floor().max(0.0);
                let hi = (src.ceil().max(0.0) as usize).min(last);
                l1_f64.push(src - lo);
                push(lo as usize, hi, (src - lo) as f32);
            }
            t.l1_f64 = l1_f64;
        }
        ResizeMode::TfBilinearLegacy | ResizeMode::TfBilinearHalfPixel => {
            let s = tf_scale(input, out, false);
            for d in 0..out {
                let src = if mode == ResizeMode::TfBilinearHalfPixel {
                    (d as f32 + 0.5) * s - 0.5
                } else {
                    d as f32 * s
                };
                let f = src.floor();
                let lo = f.max(0.0) as usize;
                let hi = (src.ceil().max(0.0) as usize).min(last);
                push(lo, hi, src - f);
            }
        }
    }
    t
}

/// A resize needs a positive output size and a non-empty input.
fn check_sizes(op: &'static str, (h, w): (usize, usize), size: (usize, usize)) -> Result<()> {
    if size.0 == 0 || size.1 == 0 {
        return invalid(op, format!("output size {size:?} must be positive"));
    }
    if h == 0 || w == 0 {
        return shape_err(op, format!("input has an empty spatial size {h}x{w}"));
    }
    Ok(())
}

/// Resizes `[N, C, H, W]` to `size = (out_h, out_w)`.
pub fn resize(
    x: ArrayView4<'_, f32>,
    size: (usize, usize),
    mode: ResizeMode,
) -> Result<Array4<f32>> {
    resize_with_scale(x, size, mode, None)
}

/// torch's nearest resize (the same source pixels as [`resize`] with
/// [`ResizeMode::Nearest`]) of `[N, H, W, C]` values of any type: an FPN's top-down path on
/// bf16 activations.
pub fn resize_nearest_nhwc<T: Copy + Send + Sync>(
    x: ArrayView4<'_, T>,
    size: (usize, usize),
) -> Result<Array4<T>> {
    const OP: &str = "resize_nearest_nhwc";
    let (n, h, w, c) = x.dim();
    let (oh, ow) = size;
    check_sizes(OP, (h, w), (oh, ow))?;
    let ty = axis_table(h, oh, ResizeMode::Nearest, None);
    let tx = axis_table(w, ow, ResizeMode::Nearest, None);
    let x = x.as_standard_layout();
    let xs = x.as_slice().ok_or(super::LayerError::Invalid {
        op: OP,
        msg: "input not contiguous".into(),
    })?;
    let mut out = Vec::with_capacity(n * oh * ow * c);
    for image in xs.chunks_exact(h * w * c) {
        for &sy in &ty.i0 {
            for &sx in &tx.i0 {
                out.extend_from_slice(&image[(sy * w + sx) * c..][..c]);
            }
        }
    }
    Array4::from_shape_vec((n, oh, ow, c), out).or_else(|e| invalid(OP, e.to_string()))
}

/// `dst += resize(x, dst's size, Nearest)` in one pass, without the upsampled copy: an FPN's
/// top-down sum (`lateral + F.interpolate(top, size=lateral.shape[-2:], mode="nearest")`)
/// where the lateral cannot take the sum in its convolution's epilogue (a GroupNorm follows
/// it, as in MaskFormer's pixel decoder). The same source pixels as [`resize`] and the same
/// additions, so the same bits.
pub fn add_nearest(dst: &mut Array4<f32>, x: ArrayView4<'_, f32>) -> Result<()> {
    add_nearest_in(dst, x, false)
}

/// [`add_nearest`] on `[N, H, W, C]` maps: `dst += resize(x, dst's size, Nearest)`, an FPN's
/// top-down sum whose lateral is already `NHWC`. The same source pixels and additions, so the
/// same bits as the `NCHW` form.
pub fn add_nearest_nhwc(dst: &mut Array4<f32>, x: ArrayView4<'_, f32>) -> Result<()> {
    add_nearest_in(dst, x, true)
}

/// [`add_nearest`] (`nhwc` false) or [`add_nearest_nhwc`].
fn add_nearest_in(dst: &mut Array4<f32>, x: ArrayView4<'_, f32>, nhwc: bool) -> Result<()> {
    let op = if nhwc {
        "add_nearest_nhwc"
    } else {
        "add_nearest"
    };
    // (images, channels, height, width) of either layout.
    let dims = |d: &[usize]| {
        if nhwc {
            (d[0], d[3], d[1], d[2])
        } else {
            (d[0], d[1], d[2], d[3])
        }
    };
    let (n, c, h, w) = dims(x.shape());
    let (dn, dc, oh, ow) = dims(dst.shape());
    if (n, c) != (dn, dc) {
        return shape_err(
            op,
            format!(
                "cannot add {:?} upsampled into {:?}",
                x.shape(),
                dst.shape()
            ),
        );
    }
    if dst.is_empty() {
        return Ok(());
    }
    check_sizes(op, (h, w), (oh, ow))?;
    let ty = axis_table(h, oh, ResizeMode::Nearest, None);
    let tx = axis_table(w, ow, ResizeMode::Nearest, None);
    let x = x.as_standard_layout();
    let xs = x.as_slice().ok_or(super::LayerError::Invalid {
        op,
        msg: "input not contiguous".into(),
    })?;
    if !dst.is_standard_layout() {
        *dst = dst.as_standard_layout().into_owned();
    }
    let ds = dst.as_slice_mut().ok_or(super::LayerError::Invalid {
        op,
        msg: "output not contiguous".into(),
    })?;
    if nhwc {
        // One output row (all its pixels' channels) per task.
        ds.par_chunks_mut(ow * c).enumerate().for_each(|(row, d)| {
            let (image, oy) = (row / oh, row % oh);
            let src = &xs[(image * h + ty.i0[oy]) * w * c..][..w * c];
            for (pixel, &sx) in d.chunks_exact_mut(c).zip(&tx.i0) {
                for (v, s) in pixel.iter_mut().zip(&src[sx * c..(sx + 1) * c]) {
                    *v += s;
                }
            }
        });
    } else {
        ds.par_chunks_mut(oh * ow)
            .zip(xs.par_chunks(h * w))
            .for_each(|(d, src)| {
                for (row, &sy) in d.chunks_exact_mut(ow).zip(&ty.i0) {
                    let src_row = &src[sy * w..(sy + 1) * w];
                    for (v, &sx) in row.iter_mut().zip(&tx.i0) {
                        *v += src_row[sx];
                    }
                }
            });
    }
    Ok(())
}

/// torch's `F.interpolate(x, scale_factor=(sh, sw), mode=..., recompute_scale_factor=...)`:
/// the output size is `floor(in·scale)`; with `recompute_scale_factor` the kernel then uses
/// `in/out` (as [`resize`]), otherwise `1/scale`. Only torch modes accept a scale factor.
pub fn interpolate_scale(
    x: ArrayView4<'_, f32>,
    scale_factor: (f64, f64),
    mode: ResizeMode,
    recompute_scale_factor: bool,
) -> Result<Array4<f32>> {
    let (_, _, h, w) = x.dim();
    let (sh, sw) = scale_factor;
    if !(sh.is_finite() && sw.is_finite() && sh > 0.0 && sw > 0.0) {
        return invalid(
            "interpolate",
            format!("scale factor {scale_factor:?} must be positive and finite"),
        );
    }
    let oh = (h as f64 * sh).floor();
    let ow = (w as f64 * sw).floor();
    if oh > u32::MAX as f64 || ow > u32::MAX as f64 {
        return shape_err("interpolate", "output size overflows");
    }
    let scales = if recompute_scale_factor {
        None
    } else {
        Some((sh, sw))
    };
    resize_with_scale(x, (oh as usize, ow as usize), mode, scales)
}

/// [`resize`] with torch's explicit `scale_factor` (used by the kernel instead of `in/out`).
pub fn resize_with_scale(
    x: ArrayView4<'_, f32>,
    size: (usize, usize),
    mode: ResizeMode,
    scales: Option<(f64, f64)>,
) -> Result<Array4<f32>> {
    const OP: &str = "resize";
    let (n, c, h, w) = x.dim();
    let (oh, ow) = size;
    check_sizes(OP, (h, w), size)?;
    if scales.is_some()
        && !matches!(
            mode,
            ResizeMode::Nearest
                | ResizeMode::NearestExact
                | ResizeMode::Bilinear {
                    align_corners: false
                }
        )
    {
        return invalid(OP, format!("a scale factor is meaningless for {mode:?}"));
    }
    let ty = axis_table(h, oh, mode, scales.map(|s| s.0));
    let tx = axis_table(w, ow, mode, scales.map(|s| s.1));
    let x = x.as_standard_layout();
    let xs = x.as_slice().ok_or(super::LayerError::Invalid {
        op: OP,
        msg: "not contiguous".into(),
    })?;
    let out = resample(OP, xs, n * c, (h, w), 1, (oh, ow), &ty, &tx, mode)?;
    Array4::from_shape_vec((n, c, oh, ow), out).or_else(|e| invalid(OP, e.to_string()))
}

/// The window `rows x cols` of [`resize`]`(x, size, mode)`, computed alone (the values are
/// those of the full resize there). For outputs that are known to be zero elsewhere, such
/// as a cropped mask resized to a photo.
pub fn resize_window(
    x: ArrayView4<'_, f32>,
    size: (usize, usize),
    mode: ResizeMode,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) -> Result<Array4<f32>> {
    const OP: &str = "resize";
    let (n, c, h, w) = x.dim();
    check_sizes(OP, (h, w), size)?;
    let (ty, tx) = window_tables((h, w), size, mode, &rows, &cols)?;
    let x = x.as_standard_layout();
    let xs = x.as_slice().ok_or(super::LayerError::Invalid {
        op: OP,
        msg: "not contiguous".into(),
    })?;
    let size = (rows.len(), cols.len());
    let out = resample(OP, xs, n * c, (h, w), 1, size, &ty, &tx, mode)?;
    Array4::from_shape_vec((n, c, size.0, size.1), out).or_else(|e| invalid(OP, e.to_string()))
}

/// `sem_seg_postprocess`'s two steps: [`resize_window`]`(x, size, mode, rows, cols)` (a
/// padded network output upsampled, cropped to the image), then [`resize`] of that to `out`
/// (the photo's size), with the same values. Torch's bilinear modes compute both together,
/// row by row, without the intermediate tensor (often the largest of a frame: 54 classes
/// at 800x1200 are 207 MB).
pub fn resize_window_resize(
    x: ArrayView4<'_, f32>,
    size: (usize, usize),
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    out: (usize, usize),
    mode: ResizeMode,
) -> Result<Array4<f32>> {
    const OP: &str = "resize";
    if !matches!(mode, ResizeMode::Bilinear { .. }) {
        let window = resize_window(x, size, mode, rows, cols)?;
        return resize(window.view(), out, mode);
    }
    let (n, c, h, w) = x.dim();
    check_sizes(OP, (h, w), size)?;
    check_sizes(OP, (rows.len(), cols.len()), out)?;
    let (ty, tx) = window_tables((h, w), size, mode, &rows, &cols)?;
    let ty2 = axis_table(rows.len(), out.0, mode, None);
    let tx2 = axis_table(cols.len(), out.1, mode, None);
    let x = x.as_standard_layout();
    let xs = x.as_slice().ok_or(super::LayerError::Invalid {
        op: OP,
        msg: "not contiguous".into(),
    })?;
    let mut o = super::zeroed(checked_numel(OP, &[n, c, out.0, out.1])?);
    if !o.is_empty() {
        separable_planes(xs, (h, w), &[(&ty, &tx), (&ty2, &tx2)], &mut o, out);
    }
    Array4::from_shape_vec((n, c, out.0, out.1), o).or_else(|e| invalid(OP, e.to_string()))
}

/// The row and column tables of the window `rows x cols` of an `(h, w) -> size` resize.
fn window_tables(
    (h, w): (usize, usize),
    size: (usize, usize),
    mode: ResizeMode,
    rows: &std::ops::Range<usize>,
    cols: &std::ops::Range<usize>,
) -> Result<(AxisTable, AxisTable)> {
    let (oh, ow) = size;
    if rows.start >= rows.end || cols.start >= cols.end || rows.end > oh || cols.end > ow {
        return invalid(
            "resize",
            format!("window {rows:?} x {cols:?} is empty or outside the {oh}x{ow} output"),
        );
    }
    let slice = |t: AxisTable, r: &std::ops::Range<usize>| AxisTable {
        i0: t.i0[r.clone()].to_vec(),
        i1: t.i1[r.clone()].to_vec(),
        l0: t.l0[r.clone()].to_vec(),
        l1: t.l1[r.clone()].to_vec(),
        l1_f64: t
            .l1_f64
            .get(r.clone())
            .map(<[f64]>::to_vec)
            .unwrap_or_default(),
    };
    Ok((
        slice(axis_table(h, oh, mode, None), rows),
        slice(axis_table(w, ow, mode, None), cols),
    ))
}

/// Resizes `[N, H, W, C]` to `size = (out_h, out_w)` with a TF mode (or a torch mode without
/// a scale factor), as [`resize`] does each channel.
pub fn resize_nhwc(
    x: ArrayView4<'_, f32>,
    size: (usize, usize),
    mode: ResizeMode,
) -> Result<Array4<f32>> {
    const OP: &str = "resize_nhwc";
    let (n, h, w, c) = x.dim();
    let (oh, ow) = size;
    check_sizes(OP, (h, w), size)?;
    let ty = axis_table(h, oh, mode, None);
    let tx = axis_table(w, ow, mode, None);
    let x = x.as_standard_layout();
    let xs = x.as_slice().ok_or(super::LayerError::Invalid {
        op: OP,
        msg: "not contiguous".into(),
    })?;
    let out = resample(OP, xs, n, (h, w), c, (oh, ow), &ty, &tx, mode)?;
    Array4::from_shape_vec((n, oh, ow, c), out).or_else(|e| invalid(OP, e.to_string()))
}

/// [`resize_nhwc`] planned once for an input of `[N, H, W, C]` (the interpolation tables made
/// at planning), then run into a given output without allocating.
#[derive(Clone, Debug)]
pub struct NhwcResize {
    input: [usize; 4],
    size: (usize, usize),
    mode: ResizeMode,
    ty: AxisTable,
    tx: AxisTable,
}

impl NhwcResize {
    pub fn new(input: [usize; 4], size: (usize, usize), mode: ResizeMode) -> Result<NhwcResize> {
        const OP: &str = "resize_nhwc";
        let [n, h, w, c] = input;
        check_sizes(OP, (h, w), size)?;
        checked_numel(OP, &[n, size.0, size.1, c])?;
        Ok(NhwcResize {
            input,
            size,
            mode,
            ty: axis_table(h, size.0, mode, None),
            tx: axis_table(w, size.1, mode, None),
        })
    }

    /// `[N, OH, OW, C]`.
    pub fn out_dims(&self) -> [usize; 4] {
        let [n, _, _, c] = self.input;
        [n, self.size.0, self.size.1, c]
    }

    /// Resizes `xs` (the planned input) into `out` (of [`NhwcResize::out_dims`]).
    pub fn run(&self, xs: &[f32], out: &mut [f32]) -> Result<()> {
        const OP: &str = "resize_nhwc";
        let [n, h, w, c] = self.input;
        if xs.len() != n * h * w * c || out.len() != self.out_dims().iter().product::<usize>() {
            return shape_err(
                OP,
                format!(
                    "buffers of {} and {} values do not fit {:?} resized to {:?}",
                    xs.len(),
                    out.len(),
                    self.input,
                    self.size
                ),
            );
        }
        resample_into(xs, (h, w), c, self.size, &self.ty, &self.tx, self.mode, out);
        Ok(())
    }
}

/// The one resampling kernel: `images` images of `h x w` pixels of `c` interleaved channels
/// (`c = 1`: the planes of an `NCHW` tensor), to `oh x ow`, parallel over output rows.
#[allow(clippy::too_many_arguments)]
fn resample(
    op: &'static str,
    xs: &[f32],
    images: usize,
    (h, w): (usize, usize),
    c: usize,
    (oh, ow): (usize, usize),
    ty: &AxisTable,
    tx: &AxisTable,
    mode: ResizeMode,
) -> Result<Vec<f32>> {
    let n = checked_numel(op, &[images, oh, ow, c])?;
    // `NCHW` resizes are the FPN's large upsamples, where the parallel first touch pays;
    // `NHWC` ones serve mobile networks' small tensors, where a rayon dispatch costs more.
    let mut out = if c == 1 {
        super::zeroed(n)
    } else {
        vec![0f32; n]
    };
    resample_into(xs, (h, w), c, (oh, ow), ty, tx, mode, &mut out);
    Ok(out)
}

/// [`resample`] into `out` (whole images of `oh x ow x c` values, checked by the callers).
#[allow(clippy::too_many_arguments)]
fn resample_into(
    xs: &[f32],
    (h, w): (usize, usize),
    c: usize,
    (oh, ow): (usize, usize),
    ty: &AxisTable,
    tx: &AxisTable,
    mode: ResizeMode,
    out: &mut [f32],
) {
    if out.is_empty() {
        return;
    }
    let kind = match mode {
        ResizeMode::Nearest | ResizeMode::NearestExact | ResizeMode::TfNearestAlignCorners => {
            Interp::Nearest
        }
        ResizeMode::TfBilinearLegacy | ResizeMode::TfBilinearHalfPixel => Interp::TfLerp,
        ResizeMode::TfjsBilinear { .. } => Interp::TfLerpF64,
        ResizeMode::Bilinear { .. } => Interp::TorchWeights,
    };
    if c == 1 && kind == Interp::TorchWeights {
        separable_planes(xs, (h, w), &[(ty, tx)], out, (oh, ow));
        return;
    }
    out.par_chunks_mut(ow * c)
        .enumerate()
        .with_min_len(super::min_rows_per_task(4 * ow * c))
        .for_each(|(r, orow)| {
            let (image, oy) = (r / oh, r % oh);
            let src = &xs[image * h * w * c..][..h * w * c];
            let r0 = &src[ty.i0[oy] * w * c..][..w * c];
            let r1 = &src[ty.i1[oy] * w * c..][..w * c];
            let (a0, a1) = (ty.l0[oy], ty.l1[oy]);
            resample_row_simd(orow, r0, r1, a0, a1, ty, oy, tx, c, kind);
        });
}

/// Torch-bilinear resampling of planes, separably and row by row, through one or more
/// resizes in a row (`stages`: each one's row and column tables, the first reading the
/// `h x w` planes of `xs`, each next one the rows of the one before), into `out`'s
/// `oh x ow` planes.
///
/// Each output row is `a0·H[i0] + a1·H[i1]` where `H[i] = b0·x[i][j0] + b1·x[i][j1]` is an
/// input row resampled along the columns: ATen's `h0λ·(w0λ·x00 + w1λ·x01) + h1λ·(w0λ·x10 +
/// w1λ·x11)`, the same bits, but each `H` row is computed once (a 4x upsampling uses it
/// for eight output rows) and the row sums run in SIMD. The rows of an intermediate stage
/// are made when the next one needs them and never stored whole, so two resizes in a row
/// (`sem_seg_postprocess`'s) neither allocate nor re-read the large intermediate tensor.
fn separable_planes(
    xs: &[f32],
    (h, w): (usize, usize),
    stages: &[(&AxisTable, &AxisTable)],
    out: &mut [f32],
    (oh, ow): (usize, usize),
) {
    // Blocks of output rows, so that one large plane still feeds every thread; each block
    // recomputes at most two `H` rows per stage at its start.
    let tasks = 4 * rayon::current_num_threads();
    let planes = out.len() / (oh * ow);
    let per = (planes * oh).div_ceil(tasks).max(16).min(oh);
    out.par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(p, plane_out)| {
            let plane = &xs[p * h * w..][..h * w];
            plane_out
                .par_chunks_mut(per * ow)
                .enumerate()
                .for_each(|(b, block)| {
                    let mut rows: Vec<RowStage> = Vec::with_capacity(stages.len());
                    let mut in_w = w;
                    for &(ty, tx) in stages {
                        rows.push(RowStage::new(ty, tx, in_w));
                        in_w = tx.i0.len();
                    }
                    for (k, orow) in block.chunks_exact_mut(ow).enumerate() {
                        chain_row(&mut rows, plane, w, b * per + k, orow);
                    }
                });
        });
}

/// One resize of [`separable_planes`]: its tables and the last two input rows it resampled
/// along the columns (rows are asked for in increasing order, so two suffice).
struct RowStage<'t> {
    ty: &'t AxisTable,
    columns: ColumnTable<'t>,
    /// The input row being resampled.
    input: Vec<f32>,
    /// `(input row, that row resampled along the columns)`.
    slots: [(usize, Vec<f32>); 2],
}

impl<'t> RowStage<'t> {
    fn new(ty: &'t AxisTable, tx: &'t AxisTable, in_w: usize) -> RowStage<'t> {
        let ow = tx.i0.len();
        RowStage {
            ty,
            columns: ColumnTable::new(tx, in_w),
            input: vec![0.0; in_w],
            slots: [(usize::MAX, vec![0.0; ow]), (usize::MAX, vec![0.0; ow])],
        }
    }

    /// The slot holding input row `i` resampled along the columns, made with `fetch` (which
    /// fills `input` with row `i`) unless held; the slot of row `keep` is not replaced.
    fn ensure(
        &mut self,
        i: usize,
        keep: usize,
        fetch: &mut impl FnMut(usize, &mut [f32]),
    ) -> usize {
        if let Some(s) = self.slots.iter().position(|(row, _)| *row == i) {
            return s;
        }
        let s = usize::from(self.slots[0].0 == keep);
        fetch(i, self.input.as_mut_slice());
        self.columns.resample(&mut self.slots[s].1, &self.input);
        self.slots[s].0 = i;
        s
    }
}

/// The column table of a [`RowStage`], with the source indices also as `i32` for AVX2's
/// gathers (empty when the row is too wide for them).
struct ColumnTable<'t> {
    tx: &'t AxisTable,
    i0: Vec<i32>,
    i1: Vec<i32>,
    /// The input row width, which every index is below (`axis_table` clamps them).
    in_w: usize,
}

impl<'t> ColumnTable<'t> {
    fn new(tx: &'t AxisTable, in_w: usize) -> ColumnTable<'t> {
        let fits = in_w <= i32::MAX as usize && tx.i0.iter().chain(&tx.i1).all(|&i| i < in_w);
        let as_i32 = |v: &[usize]| v.iter().map(|&i| i as i32).collect();
        let (i0, i1) = if fits {
            (as_i32(&tx.i0), as_i32(&tx.i1))
        } else {
            (Vec::new(), Vec::new())
        };
        ColumnTable { tx, i0, i1, in_w }
    }

    /// `dst[x] = l0[x]·src[i0[x]] + l1[x]·src[i1[x]]` (a multiply, a multiply and an add).
    fn resample(&self, dst: &mut [f32], src: &[f32]) {
        let tx = self.tx;
        #[cfg(target_arch = "x86_64")]
        if crate::__has_avx2()
            && !self.i0.is_empty()
            && src.len() >= self.in_w
            && dst.len() == self.i0.len()
        {
            // SAFETY: AVX2 is present; `new` checked every index below `in_w <= src.len()`,
            // and the index and weight tables are as long as `dst`.
            unsafe { gather_columns_avx2(dst, src, &self.i0, &self.i1, &tx.l0, &tx.l1) };
            return;
        }
        for (x, d) in dst.iter_mut().enumerate() {
            *d = tx.l0[x] * src[tx.i0[x]] + tx.l1[x] * src[tx.i1[x]];
        }
    }
}

/// [`ColumnTable::resample`] eight outputs at a time with AVX2 gathers.
///
/// # Safety
/// The CPU has AVX2; every index of `i0` and `i1` is below `src.len()`; `i0`, `i1`, `l0`
/// and `l1` are at least as long as `dst`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gather_columns_avx2(
    dst: &mut [f32],
    src: &[f32],
    i0: &[i32],
    i1: &[i32],
    l0: &[f32],
    l1: &[f32],
) {
    use std::arch::x86_64::*;
    let n = dst.len();
    let mut x = 0;
    while x + 8 <= n {
        // SAFETY (whole block): `x + 8 <= n` and every table holds `n` entries; the gathered
        // indices are below `src.len()` (the caller's contract).
        unsafe {
            let j0 = _mm256_loadu_si256(i0.as_ptr().add(x).cast());
            let j1 = _mm256_loadu_si256(i1.as_ptr().add(x).cast());
            let v0 = _mm256_i32gather_ps::<4>(src.as_ptr(), j0);
            let v1 = _mm256_i32gather_ps::<4>(src.as_ptr(), j1);
            let w0 = _mm256_loadu_ps(l0.as_ptr().add(x));
            let w1 = _mm256_loadu_ps(l1.as_ptr().add(x));
            let r = _mm256_add_ps(_mm256_mul_ps(w0, v0), _mm256_mul_ps(w1, v1));
            _mm256_storeu_ps(dst.as_mut_ptr().add(x), r);
        }
        x += 8;
    }
    for x in x..n {
        dst[x] = l0[x] * src[i0[x] as usize] + l1[x] * src[i1[x] as usize];
    }
}

/// Output row `oy` of the last of `stages` into `out`, the first stage reading the
/// `w`-wide rows of `plane`.
fn chain_row(stages: &mut [RowStage], plane: &[f32], w: usize, oy: usize, out: &mut [f32]) {
    let Some((last, before)) = stages.split_last_mut() else {
        return;
    };
    let (i0, i1) = (last.ty.i0[oy], last.ty.i1[oy]);
    let (a0, a1) = (last.ty.l0[oy], last.ty.l1[oy]);
    let mut fetch = |i: usize, buf: &mut [f32]| {
        if before.is_empty() {
            buf.copy_from_slice(&plane[i * w..][..w]);
        } else {
            chain_row(before, plane, w, i, buf);
        }
    };
    let s0 = last.ensure(i0, i1, &mut fetch);
    let s1 = last.ensure(i1, i0, &mut fetch);
    weighted_rows(out, &last.slots[s0].1, &last.slots[s1].1, a0, a1);
}

crate::ops::simd::multiversion!(fn weighted_rows(out: &mut [f32], h0: &[f32], h1: &[f32], a0: f32, a1: f32) => weighted_rows_portable);

/// `out = a0·h0 + a1·h1`, element-wise (a multiply, a multiply and an add: no FMA, so the
/// bits of the scalar expression).
#[inline(always)]
fn weighted_rows_portable(out: &mut [f32], h0: &[f32], h1: &[f32], a0: f32, a1: f32) {
    for ((o, &p), &q) in out.iter_mut().zip(h0).zip(h1) {
        *o = a0 * p + a1 * q;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Interp {
    Nearest,
    /// TF's `top + (bottom - top)·lerp`.
    TfLerp,
    /// The same in f64 (TF.js's CPU backend).
    TfLerpF64,
    /// ATen's `h0λ·(w0λ·x00 + w1λ·x01) + h1λ·(w0λ·x10 + w1λ·x11)`.
    TorchWeights,
}

/// [`resample_row`], compiled for AVX-512 and AVX2 too (wider vectors over the channels; no
/// fused multiply-adds, so the same results on every CPU).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn resample_row_any(
    orow: &mut [f32],
    r0: &[f32],
    r1: &[f32],
    a0: f32,
    a1: f32,
    ty: &AxisTable,
    oy: usize,
    tx: &AxisTable,
    c: usize,
    kind: Interp,
) {
    // The same code either way; the constant lets the compiler drop the channel loop.
    if c == 1 {
        resample_row(orow, r0, r1, (a0, a1), (ty, oy), tx, 1, kind);
    } else {
        resample_row(orow, r0, r1, (a0, a1), (ty, oy), tx, c, kind);
    }
}

crate::ops::simd::multiversion!(fn resample_row_simd(orow: &mut [f32], r0: &[f32], r1: &[f32], a0: f32, a1: f32, ty: &AxisTable, oy: usize, tx: &AxisTable, c: usize, kind: Interp) => resample_row_any);

/// One output row (`oy` of the table `ty`) from source rows `r0` (upper) and `r1` (lower)
/// with row weights `(a0, a1)`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn resample_row(
    orow: &mut [f32],
    r0: &[f32],
    r1: &[f32],
    (a0, a1): (f32, f32),
    (ty, oy): (&AxisTable, usize),
    tx: &AxisTable,
    c: usize,
    kind: Interp,
) {
    for (ox, o) in orow.chunks_exact_mut(c).enumerate() {
        let (j0, j1) = (tx.i0[ox] * c, tx.i1[ox] * c);
        // The four neighbours' channels as slices of `c`, so that the channel loops carry no
        // bounds checks and vectorise.
        let (tl, tr) = (&r0[j0..j0 + c], &r0[j1..j1 + c]);
        let (bl, br) = (&r1[j0..j0 + c], &r1[j1..j1 + c]);
        let corners = tl.iter().zip(tr).zip(bl.iter().zip(br));
        match kind {
            Interp::Nearest => o.copy_from_slice(tl),
            Interp::TfLerp => {
                let xl = tx.l1[ox];
                for (o, ((&tl, &tr), (&bl, &br))) in o.iter_mut().zip(corners) {
                    let top = tl + (tr - tl) * xl;
                    let bottom = bl + (br - bl) * xl;
                    *o = top + (bottom - top) * a1;
                }
            }
            Interp::TfLerpF64 => {
                let (xl, yl) = (tx.l1_f64[ox], ty.l1_f64[oy]);
                for (o, ((&tl, &tr), (&bl, &br))) in o.iter_mut().zip(corners) {
                    let (tl, tr, bl, br) = (tl as f64, tr as f64, bl as f64, br as f64);
                    let top = tl + (tr - tl) * xl;
                    let bottom = bl + (br - bl) * xl;
                    *o = (top + (bottom - top) * yl) as f32;
                }
            }
            Interp::TorchWeights => {
                let (b0, b1) = (tx.l0[ox], tx.l1[ox]);
                for (o, ((&tl, &tr), (&bl, &br))) in o.iter_mut().zip(corners) {
                    *o = a0 * (b0 * tl + b1 * tr) + a1 * (b0 * bl + b1 * br);
                }
            }
        }
    }
}

/// torch's bicubic convolution weights of the four taps `i-1..i+2` at fraction `t`
/// (`get_cubic_upsample_coefficients`, A = -0.75), in f32.
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// For one axis: per output index, the four source indices (clamped to the input, as torch
/// reads the border) and their weights.
fn cubic_table(input: usize, out: usize, align_corners: bool) -> Vec<([usize; 4], [f32; 4])> {
    let s = torch_scale(input, out, align_corners, None);
    let last = input as isize - 1;
    (0..out)
        .map(|d| {
            // area_pixel_compute_source_index(cubic = true): not clamped at 0.
            let real = if align_corners {
                s * d as f32
            } else {
                s * (d as f32 + 0.5) - 0.5
            };
            let i = (real.floor() as isize).min(last);
            let t = (real - i as f32).clamp(0.0, 1.0);
            let idx = [i - 1, i, i + 1, i + 2].map(|k| k.clamp(0, last) as usize);
            (idx, cubic_weights(t))
        })
        .collect()
}

/// `F.interpolate(x, size, mode="bicubic", align_corners)` of `[N, C, H, W]`, as ATen's CPU
/// kernel computes it: per output pixel `Σᵢ wyᵢ·(Σⱼ wxⱼ·x[yᵢ, xⱼ])` with the sums in tap
/// order, in f32. Computed separably (each needed input row once per output column), which
/// keeps that order.
pub fn resize_bicubic(
    x: ArrayView4<'_, f32>,
    size: (usize, usize),
    align_corners: bool,
) -> Result<Array4<f32>> {
    const OP: &str = "resize_bicubic";
    let (n, c, h, w) = x.dim();
    let (oh, ow) = size;
    check_sizes(OP, (h, w), size)?;
    let total = checked_numel(OP, &[n, c, oh, ow])?;
    let ty = cubic_table(h, oh, align_corners);
    let tx = cubic_table(w, ow, align_corners);
    let x = x.as_standard_layout();
    let xs = x.as_slice().ok_or(super::LayerError::Invalid {
        op: OP,
        msg: "not contiguous".into(),
    })?;
    let mut out = vec![0f32; total];
    if total > 0 {
        out.par_chunks_mut(oh * ow)
            .zip(xs.par_chunks(h * w))
            .for_each(|(dst, src)| {
                // Every input row resampled along x once.
                let mut rows = vec![0f32; h * ow];
                for (y, row) in rows.chunks_exact_mut(ow).enumerate() {
                    let s = &src[y * w..][..w];
                    for (o, (j, wx)) in row.iter_mut().zip(&tx) {
                        *o = s[j[0]] * wx[0] + s[j[1]] * wx[1] + s[j[2]] * wx[2] + s[j[3]] * wx[3];
                    }
                }
                for (orow, (i, wy)) in dst.chunks_exact_mut(ow).zip(&ty) {
                    let r = i.map(|k| &rows[k * ow..][..ow]);
                    for (ox, o) in orow.iter_mut().enumerate() {
                        *o = r[0][ox] * wy[0]
                            + r[1][ox] * wy[1]
                            + r[2][ox] * wy[2]
                            + r[3][ox] * wy[3];
                    }
                }
            });
    }
    Array4::from_shape_vec((n, c, oh, ow), out).or_else(|e| invalid(OP, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    /// The NHWC nearest resize picks the same pixels as the NCHW one, on halving and on
    /// uneven ratios, for any element type.
    #[test]
    fn nearest_nhwc_picks_the_pixels_of_the_nchw_resize() {
        let x = Array::from_shape_fn((2, 3, 5, 7), |(n, c, y, x)| {
            (n * 1000 + c * 100 + y * 10 + x) as f32
        });
        for size in [(10, 14), (8, 9), (3, 4), (5, 7)] {
            let want = resize(x.view(), size, ResizeMode::Nearest).unwrap();
            let nhwc = x.view().permuted_axes([0, 2, 3, 1]).mapv(|v| v as u16);
            let got = resize_nearest_nhwc(nhwc.view(), size).unwrap();
            assert_eq!(
                got.permuted_axes([0, 3, 1, 2]),
                want.mapv(|v| v as u16),
                "{size:?}"
            );
        }
    }

    #[test]
    fn add_nearest_equals_adding_the_resize() {
        for &((h, w), (oh, ow)) in &[
            ((3, 5), (6, 10)),
            ((4, 7), (9, 13)),
            ((5, 5), (5, 5)),
            ((7, 9), (3, 4)),
        ] {
            let x = Array::from_shape_fn((2, 3, h, w), |(a, b, c, d)| {
                (a * 7 + b * 5 + c * 3 + d) as f32 * 0.37
            });
            let base = Array::from_shape_fn((2, 3, oh, ow), |(a, b, c, d)| {
                (a + b * 2 + c * 11 + d * 13) as f32 * 0.11
            });
            let want = &base + &resize(x.view(), (oh, ow), ResizeMode::Nearest).unwrap();
            let mut got = base.clone();
            add_nearest(&mut got, x.view()).unwrap();
            assert_eq!(got, want, "{h}x{w} -> {oh}x{ow}");
            // The NHWC form: the same sums, channels last.
            let nhwc = |a: &Array4<f32>| a.view().permuted_axes([0, 2, 3, 1]).to_owned();
            let mut got = nhwc(&base);
            add_nearest_nhwc(&mut got, nhwc(&x).view()).unwrap();
            assert_eq!(got, nhwc(&want), "NHWC {h}x{w} -> {oh}x{ow}");
        }
        let mut wrong = Array4::<f32>::zeros((1, 2, 4, 4));
        assert!(add_nearest(&mut wrong, Array4::<f32>::zeros((1, 3, 2, 2)).view()).is_err());
        assert!(add_nearest_nhwc(&mut wrong, Array4::<f32>::zeros((1, 2, 2, 3)).view()).is_err());
    }

    #[test]
    fn a_window_is_the_same_part_of_the_full_resize() {
        let x = Array::from_shape_fn((2, 3, 7, 9), |(n, c, y, x)| {
            ((n * 5 + c * 3 + y * 7 + x * 11) % 17) as f32 * 0.25 - 1.0
        });
        for mode in [
            ResizeMode::Nearest,
            ResizeMode::Bilinear {
                align_corners: false,
            },
            ResizeMode::TfjsBilinear {
                align_corners: false,
                half_pixel_centers: true,
            },
        ] {
            let full = resize(x.view(), (20, 31), mode).unwrap();
            let part = resize_window(x.view(), (20, 31), mode, 3..17, 10..31).unwrap();
            assert_eq!(
                part,
                full.slice(ndarray::s![.., .., 3..17, 10..31]),
                "{mode:?}"
            );
        }
        assert!(resize_window(x.view(), (20, 31), ResizeMode::Nearest, 5..5, 0..1).is_err());
        assert!(resize_window(x.view(), (20, 31), ResizeMode::Nearest, 0..21, 0..1).is_err());
    }

    /// ATen's expression pixel by pixel, from the same tables.
    fn aten_bilinear(x: &Array4<f32>, size: (usize, usize), align_corners: bool) -> Array4<f32> {
        let (n, c, h, w) = x.dim();
        let mode = ResizeMode::Bilinear { align_corners };
        let ty = axis_table(h, size.0, mode, None);
        let tx = axis_table(w, size.1, mode, None);
        Array4::from_shape_fn((n, c, size.0, size.1), |(b, k, oy, ox)| {
            let p = |y: usize, x_: usize| x[[b, k, y, x_]];
            let (y0, y1, x0, x1) = (ty.i0[oy], ty.i1[oy], tx.i0[ox], tx.i1[ox]);
            let (b0, b1) = (tx.l0[ox], tx.l1[ox]);
            ty.l0[oy] * (b0 * p(y0, x0) + b1 * p(y0, x1))
                + ty.l1[oy] * (b0 * p(y1, x0) + b1 * p(y1, x1))
        })
    }

    /// The row-by-row separable path gives ATen's expression bit for bit: up and down, both
    /// corner conventions, one plane split into row blocks and many small planes.
    #[test]
    fn separable_bilinear_is_atens_expression() {
        for (shape, size) in [
            ((1, 1, 13, 17), (200, 61)),
            ((1, 1, 50, 40), (19, 23)),
            ((3, 5, 7, 9), (28, 36)),
            ((2, 1, 1, 1), (5, 3)),
        ] {
            let x = Array::from_shape_fn(shape, |(n, c, y, x)| {
                ((n * 31 + c * 17 + y * 7 + x * 13) % 23) as f32 * 0.37 - 3.1
            });
            for align_corners in [false, true] {
                let mode = ResizeMode::Bilinear { align_corners };
                let ours = resize(x.view(), size, mode).unwrap();
                assert_eq!(
                    ours,
                    aten_bilinear(&x, size, align_corners),
                    "{shape:?} {size:?}"
                );
            }
        }
    }

    /// Upsample, crop, resize in one pass equals the two steps (bilinear: computed together;
    /// other modes: the two calls).
    #[test]
    fn window_then_resize_equals_the_two_steps() {
        let x = Array::from_shape_fn((2, 3, 11, 14), |(n, c, y, x)| {
            ((n * 5 + c * 3 + y * 7 + x * 11) % 19) as f32 * 0.5 - 2.0
        });
        for mode in [
            ResizeMode::Bilinear {
                align_corners: false,
            },
            ResizeMode::Nearest,
        ] {
            for out in [(25, 31), (90, 70)] {
                let two = resize(
                    resize_window(x.view(), (44, 56), mode, 0..41, 2..53)
                        .unwrap()
                        .view(),
                    out,
                    mode,
                )
                .unwrap();
                let one =
                    resize_window_resize(x.view(), (44, 56), 0..41, 2..53, out, mode).unwrap();
                assert_eq!(one, two, "{mode:?} {out:?}");
            }
        }
        let bilinear = ResizeMode::Bilinear {
            align_corners: false,
        };
        assert!(resize_window_resize(x.view(), (44, 56), 0..45, 0..56, (5, 5), bilinear).is_err());
        assert!(resize_window_resize(x.view(), (44, 56), 0..44, 0..56, (0, 5), bilinear).is_err());
    }

    #[test]
    fn identity_and_upsample() {
        let x = Array::from_shape_vec((1, 1, 2, 2), vec![0.0f32, 1.0, 2.0, 3.0]).unwrap();
        for mode in [
            ResizeMode::Nearest,
            ResizeMode::NearestExact,
            ResizeMode::Bilinear {
                align_corners: false,
            },
            ResizeMode::Bilinear {
                align_corners: true,
            },
            ResizeMode::TfBilinearLegacy,
            ResizeMode::TfBilinearHalfPixel,
            ResizeMode::TfjsBilinear {
                align_corners: true,
                half_pixel_centers: false,
            },
        ] {
            assert_eq!(resize(x.view(), (2, 2), mode).unwrap(), x, "{mode:?}");
        }
        let y = resize(
            x.view(),
            (3, 3),
            ResizeMode::Bilinear {
                align_corners: true,
            },
        )
        .unwrap();
        assert_eq!(
            y.as_slice().unwrap(),
            &[0.0, 0.5, 1.0, 1.0, 1.5, 2.0, 2.0, 2.5, 3.0]
        );
        let y = resize(x.view(), (1, 4), ResizeMode::TfBilinearLegacy).unwrap();
        assert_eq!(y.as_slice().unwrap(), &[0.0, 0.5, 1.0, 1.0]);
        let y = resize(x.view(), (4, 4), ResizeMode::Nearest).unwrap();
        assert_eq!(y[[0, 0, 3, 3]], 3.0);
        assert!(resize(x.view(), (0, 4), ResizeMode::Nearest).is_err());
        assert!(interpolate_scale(x.view(), (-1.0, 2.0), ResizeMode::Nearest, false).is_err());
        assert!(resize_with_scale(
            x.view(),
            (4, 4),
            ResizeMode::TfBilinearLegacy,
            Some((2.0, 2.0))
        )
        .is_err());
    }

    /// `NHWC` gives, channel by channel, what `NCHW` gives (the one kernel, run with the
    /// channels interleaved), in every mode.
    #[test]
    fn nhwc_equals_nchw_per_channel() {
        let x = Array::from_shape_fn((2, 5, 7, 3), |(b, y, x, c)| {
            ((b * 13 + y * 7 + x * 5 + c * 3) % 17) as f32 * 0.25
        });
        for mode in [
            ResizeMode::Nearest,
            ResizeMode::NearestExact,
            ResizeMode::TfNearestAlignCorners,
            ResizeMode::Bilinear {
                align_corners: false,
            },
            ResizeMode::TfBilinearLegacy,
            ResizeMode::TfBilinearHalfPixel,
            ResizeMode::TfjsBilinear {
                align_corners: false,
                half_pixel_centers: true,
            },
            ResizeMode::TfjsBilinear {
                align_corners: true,
                half_pixel_centers: false,
            },
        ] {
            for size in [(9, 4), (3, 11)] {
                let nhwc = resize_nhwc(x.view(), size, mode).unwrap();
                let nchw = resize(x.view().permuted_axes([0, 3, 1, 2]), size, mode).unwrap();
                assert_eq!(nhwc, nchw.permuted_axes([0, 2, 3, 1]), "{mode:?} {size:?}");
            }
        }
    }

    /// Bicubic: an identity size is the identity, a constant stays constant (the weights sum
    /// to 1), and a linear ramp stays linear inside (cubic convolution reproduces lines).
    #[test]
    #[allow(clippy::excessive_precision)] // torch's values as printed (exact in f32)
    fn bicubic_basics() {
        let x = Array::from_shape_fn((1, 2, 5, 6), |(_, c, y, x)| (c * 30 + y * 6 + x) as f32);
        let same = resize_bicubic(x.view(), (5, 6), false).unwrap();
        for (a, b) in same.iter().zip(x.iter()) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        let ones = Array::from_elem((1, 1, 3, 4), 2.5f32);
        let up = resize_bicubic(ones.view(), (7, 9), false).unwrap();
        assert!(up.iter().all(|&v| (v - 2.5).abs() < 1e-5));
        // torch 2.x: F.interpolate(arange(8.).reshape(1, 1, 1, 8), size=(1, 16), mode="bicubic")
        // and of (arange(12.) ** 2).reshape(1, 1, 3, 4) to (5, 7) (first and last rows).
        let ramp = Array::from_shape_fn((1, 1, 1, 8), |(_, _, _, x)| x as f32);
        let up = resize_bicubic(ramp.view(), (1, 16), false).unwrap();
        let want = [
            -0.10546875,
            0.19140625,
            0.66796875,
            1.296875,
            1.703125,
            2.296875,
            2.703125,
            3.296875,
            3.703125,
            4.296875,
            4.703125,
            5.296875,
            5.703125,
            6.33203125,
            6.80859375,
            7.10546875,
        ];
        for (a, b) in up.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        let sq = Array::from_shape_fn((1, 1, 3, 4), |(_, _, y, x)| ((y * 4 + x) as f32).powi(2));
        let up = resize_bicubic(sq.view(), (5, 7), false).unwrap();
        let first = [
            -1.5590183,
            -1.5942105,
            -1.4203733,
            -0.56299794,
            1.2732416,
            3.855239,
            5.5798874,
        ];
        let last = [
            66.84517, 73.44663, 84.44626, 95.88501, 108.30264, 121.71038, 130.07176,
        ];
        for (ox, (a, b)) in first.iter().zip(last).enumerate() {
            assert!((up[[0, 0, 0, ox]] - a).abs() < 1e-4, "row 0 col {ox}");
            assert!((up[[0, 0, 4, ox]] - b).abs() < 1e-4, "row 4 col {ox}");
        }
        assert!(resize_bicubic(ones.view(), (0, 3), false).is_err());
    }
}
