//! Pillow's `Image.resize` of 8-bit images: the resampling that torchvision's `F.resize` runs
//! on a PIL image, and so what DETR's (`datasets/transforms.py`) and Detectron2's
//! (`ResizeShortestEdge`) pre-processing feed their models.
//!
//! Unlike [`super::resize`] (ATen's two-tap interpolation), Pillow resamples by convolution
//! with a filter whose support widens by the scale when shrinking, so a downscale averages
//! every source pixel it covers (antialiasing). This is `libImaging/Resample.c`:
//!
//! - Per output index `d` along an axis of `in → out` pixels: `scale = in / out`,
//!   `filterscale = max(scale, 1)`, `support = 1·filterscale` (bilinear's support is 1),
//!   `center = (d + 0.5)·scale`; the taps are the source pixels `xmin..xmin+n` with
//!   `xmin = max(trunc(center - support + 0.5), 0)` and `xmin + n = min(trunc(center +
//!   support + 0.5), in)`, weighted by `triangle((x - center + 0.5) / filterscale)` and
//!   normalised to sum 1, all in f64.
//! - The weights become fixed point with 22 fraction bits (`PRECISION_BITS = 32 - 8 - 2`),
//!   rounded half away from zero.
//! - One pass per axis, in Pillow 13's order (see [`pil_resize_u8`]). Each pass starts its
//!   sum at one half (`1 << 21`) and clips to 0..255 after the shift, so the intermediate
//!   image is 8-bit as in Pillow.
//! - A pass whose size does not change is skipped; an unchanged size is a copy.
//!
//! Also OpenCV's bilinear `warpAffine` of 8-bit images ([`cv_warp_affine_u8`]), which
//! CenterNet's and CornerNet's pre-processing run.

use rayon::prelude::*;

use super::{checked_numel, invalid, shape_err, Result};

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's filters that [`pil_resize_u8`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PilFilter {
    /// `Image.BILINEAR` (a triangle of support 1).
    Bilinear,
}

impl PilFilter {
    fn support(self) -> f64 {
        match self {
            PilFilter::Bilinear => 1.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            PilFilter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
        }
    }
}

/// The taps of one axis: per output index its first source index and fixed-point weights.
struct AxisTaps {
    first: Vec<usize>,
    /// `ksize` weights per output index (the unused tail is 0).
    weights: Vec<i32>,
    ksize: usize,
}

impl AxisTaps {
    /// `precompute_coeffs` and `normalize_coeffs_8bpc`.
    fn new(input: usize, out: usize, filter: PilFilter) -> AxisTaps {
        let scale = input as f64 / out as f64;
        let filterscale = scale.max(1.0);
        let support = filter.support() * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut first = Vec::with_capacity(out);
        let mut weights = vec![0i32; out * ksize];
        let mut taps = vec![0f64; ksize];
        for d in 0..out {
            let center = (d as f64 + 0.5) * scale;
            // C's (int) truncates toward zero; the clamp at 0 follows it.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(input as i64).max(0) as usize;
            let n = xmax.saturating_sub(xmin).min(ksize);
            let mut total = 0f64;
            for (x, t) in taps.iter_mut().enumerate().take(n) {
                *t = filter.weight((x as f64 + xmin as f64 - center + 0.5) / filterscale);
                total += *t;
            }
            let row = &mut weights[d * ksize..(d + 1) * ksize];
            for (w, &t) in row.iter_mut().zip(&taps).take(n) {
                let t = if total != 0.0 { t / total } else { t };
                let fixed = t * f64::from(1u32 << PRECISION_BITS);
                *w = if fixed < 0.0 {
                    (fixed - 0.5) as i32
                } else {
                    (fixed + 0.5) as i32
                };
            }
            first.push(xmin);
        }
        AxisTaps {
            first,
            weights,
            ksize,
        }
    }

    /// The source indices `first..first+count` that output `d` reads (zero weights past the
    /// input's end are never read).
    fn span(&self, d: usize, input: usize) -> (usize, usize) {
        let f = self.first[d];
        (f, self.ksize.min(input.saturating_sub(f)))
    }
}

#[inline(always)]
fn clip8(sum: i32) -> u8 {
    if sum >= (1 << PRECISION_BITS << 8) {
        255
    } else if sum <= 0 {
        0
    } else {
        (sum >> PRECISION_BITS) as u8
    }
}

/// The horizontal pass over whole rows: `[rows, w, channels]` to `[rows, out_w, channels]`.
fn horizontal_pass(
    src: &[u8],
    w: usize,
    channels: usize,
    taps: &AxisTaps,
    out_w: usize,
) -> Vec<u8> {
    let rows = src.len() / (w * channels);
    let mut out = vec![0u8; rows * out_w * channels];
    out.par_chunks_mut(out_w * channels)
        .zip(src.par_chunks(w * channels))
        .for_each(|(line, srow)| {
            for (d, px) in line.chunks_mut(channels).enumerate() {
                let (f, n) = taps.span(d, w);
                let k = &taps.weights[d * taps.ksize..][..n];
                for (c, o) in px.iter_mut().enumerate() {
                    let mut s = HALF;
                    for (x, &kw) in k.iter().enumerate() {
                        s += i32::from(srow[(f + x) * channels + c]) * kw;
                    }
                    *o = clip8(s);
                }
            }
        });
    out
}

/// The vertical pass: rows `first..` of an image of `h` rows (`src` holds rows
/// `first..first + src.len() / stride`) to `out_h` rows of `stride` bytes.
fn vertical_pass(
    src: &[u8],
    first: usize,
    h: usize,
    stride: usize,
    taps: &AxisTaps,
    out_h: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; out_h * stride];
    out.par_chunks_mut(stride)
        .enumerate()
        .for_each(|(d, line)| {
            let (f, n) = taps.span(d, h);
            let k = &taps.weights[d * taps.ksize..][..n];
            for (i, o) in line.iter_mut().enumerate() {
                let mut s = HALF;
                for (y, &kw) in k.iter().enumerate() {
                    s += i32::from(src[(f + y - first) * stride + i]) * kw;
                }
                *o = clip8(s);
            }
        });
    out
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Pillow's `Image.resize(size, filter)` of an interleaved u8 image `[h, w, channels]`
/// (row-major) to `[out_h, out_w, channels]`, bit for bit (Pillow 13).
///
/// The order of the passes matters (the image between them is 8-bit): Pillow 13 runs the
/// vertical pass first when the height shrinks by more than twice as many pixels as the
/// width (`out_h < h` and `h - out_h > 2·(w - out_w)`, python-pillow/Pillow#9549), and
/// the horizontal pass first otherwise (always, in Pillow 12 and older).
pub fn pil_resize_u8(
    src: &[u8],
    (h, w, channels): (usize, usize, usize),
    (out_h, out_w): (usize, usize),
    filter: PilFilter,
) -> Result<Vec<u8>> {
    const OP: &str = "pil_resize";
    if src.len() != checked_numel(OP, &[h, w, channels])? {
        return shape_err(
            OP,
            format!("{} bytes for a {h}x{w}x{channels} image", src.len()),
        );
    }
    if h == 0 || w == 0 || channels == 0 || out_h == 0 || out_w == 0 {
        return invalid(
            OP,
            format!("cannot resize {h}x{w}x{channels} to {out_h}x{out_w}"),
        );
    }
    checked_numel(OP, &[out_h, out_w, channels])?;
    let (need_h, need_v) = (out_w != w, out_h != h);
    let horizontal = need_h.then(|| AxisTaps::new(w, out_w, filter));
    let vertical = need_v.then(|| AxisTaps::new(h, out_h, filter));
    let vertical_first = out_h < h && (h - out_h) as i64 > 2 * (w as i64 - out_w as i64);
    Ok(match (horizontal, vertical) {
        (None, None) => src.to_vec(),
        (Some(hz), None) => horizontal_pass(src, w, channels, &hz, out_w),
        (None, Some(vt)) => vertical_pass(src, 0, h, w * channels, &vt, out_h),
        (Some(hz), Some(vt)) if vertical_first => {
            let tmp = vertical_pass(src, 0, h, w * channels, &vt, out_h);
            horizontal_pass(&tmp, w, channels, &hz, out_w)
        }
        (Some(hz), Some(vt)) => {
            // Only the source rows the vertical pass reads (Pillow's ybox_first..ybox_last).
            let first = vt.first[0];
            let last = (0..out_h)
                .map(|d| {
                    let (f, n) = vt.span(d, h);
                    f + n
                })
                .max()
                .unwrap_or(h);
            let stride = w * channels;
            let tmp = horizontal_pass(&src[first * stride..last * stride], w, channels, &hz, out_w);
            vertical_pass(&tmp, first, h, out_w * channels, &vt, out_h)
        }
    })
}

/// OpenCV's `cv2.warpAffine(src, M, (out_w, out_h), flags=cv2.INTER_LINEAR)` with its default
/// constant border of zeros, of an interleaved u8 image `[h, w, channels]` (channels 1..=4),
/// bit for bit with OpenCV 4.11 and later (5.x), whose bilinear warps compute in `f32`
/// (`warp_kernels.simd.hpp`; older releases used 5-bit fixed-point coordinates and can differ
/// by a few levels). `m` is the forward 2x3 matrix (source to destination) as
/// `cv2.getAffineTransform` returns it.
///
/// - `M` is inverted in `f64` as `cv::warpAffine` does (`D = 1 / (m0·m4 − m1·m3)`, ...) and
///   the inverse rounded to `f32`.
/// - OpenCV's vector kernel (AVX2 dispatch on x86: 16 pixels a step) covers the columns
///   `x < 16·floor(out_w / 16)`, and the scalar loop the rest of each row; they round
///   differently:
///   - vector: `sx = fma(M0, x, y·M1 + M2)`, `sy = fma(M3, x, y·M4 + M5)`, and
///     `v0 = fma(α, p01 − p00, p00)`, `v1 = fma(α, p11 − p10, p10)`, `v = fma(β, v1 − v0, v0)`;
///   - scalar: `sx = x·M0 + y·M1 + M2`, and `v0 = p00 + α·(p01 − p00)`, ..., each step
///     rounded.
/// - `ix = floor(sx)`, `α = sx − ix` (and `iy`, `β`). A pixel whose 2x2 neighbourhood lies
///   wholly outside the image is 0; otherwise each corner outside the image reads 0.
/// - The value is rounded half to even and saturated to 0..255.
///
/// Intel IPP, which OpenCV's x86 wheels use for this warp by default (`cv2.ipp.useIPP()`),
/// rounds some exact ties at .5 the other way (up to 3% of the pixels, by one level); with
/// `cv2.ipp.setUseIPP(False)`, and on every non-x86 build, OpenCV runs the kernel above.
pub fn cv_warp_affine_u8(
    src: &[u8],
    (h, w, channels): (usize, usize, usize),
    m: &[f64; 6],
    (out_h, out_w): (usize, usize),
) -> Result<Vec<u8>> {
    const OP: &str = "warp_affine";
    if src.len() != checked_numel(OP, &[h, w, channels])? {
        return shape_err(
            OP,
            format!("{} bytes for a {h}x{w}x{channels} image", src.len()),
        );
    }
    if !(1..=4).contains(&channels) || h == 0 || w == 0 || h > 1 << 24 || w > 1 << 24 {
        return invalid(
            OP,
            format!("cannot warp a {h}x{w}x{channels} image (1 to 4 channels, non-empty)"),
        );
    }
    let len = checked_numel(OP, &[out_h, out_w, channels])?;
    let d = m[0] * m[4] - m[1] * m[3];
    let d = if d != 0.0 { 1.0 / d } else { 0.0 };
    let (a11, a22) = (m[4] * d, m[0] * d);
    let (a12, a21) = (m[1] * -d, m[3] * -d);
    let b1 = -a11 * m[2] - a12 * m[5];
    let b2 = -a21 * m[2] - a22 * m[5];
    let inv = [a11, a12, b1, a21, a22, b2].map(|v| v as f32);
    if inv.iter().any(|v| !v.is_finite()) {
        return invalid(OP, format!("the matrix {m:?} has no finite inverse"));
    }
    let mut out = vec![0u8; len];
    if len == 0 {
        return Ok(out);
    }
    let (hi, wi) = (h as i64, w as i64);
    const VECTOR_STEP: usize = 16;
    let vector_end = out_w / VECTOR_STEP * VECTOR_STEP;
    out.par_chunks_mut(out_w * channels)
        .enumerate()
        .for_each(|(y, row)| {
            let yf = y as f32;
            let mx = yf * inv[1] + inv[2];
            let my = yf * inv[4] + inv[5];
            for (x, px) in row.chunks_mut(channels).enumerate() {
                let xf = x as f32;
                let fused = x < vector_end;
                let (sx, sy) = if fused {
                    (inv[0].mul_add(xf, mx), inv[3].mul_add(xf, my))
                } else {
                    (
                        xf * inv[0] + yf * inv[1] + inv[2],
                        xf * inv[3] + yf * inv[4] + inv[5],
                    )
                };
                let lerp = |t: f32, a: f32, b: f32| {
                    if fused {
                        t.mul_add(b - a, a)
                    } else {
                        a + t * (b - a)
                    }
                };
                let (fx, fy) = (sx.floor(), sy.floor());
                let (ix, iy) = (fx as i64, fy as i64);
                if ix < -1 || ix >= wi || iy < -1 || iy >= hi {
                    continue; // wholly outside: the border value, 0
                }
                let (alpha, beta) = (sx - fx, sy - fy);
                let at = |yy: i64, xx: i64, c: usize| -> f32 {
                    if yy >= 0 && yy < hi && xx >= 0 && xx < wi {
                        f32::from(src[((yy * wi + xx) as usize) * channels + c])
                    } else {
                        0.0
                    }
                };
                for (c, o) in px.iter_mut().enumerate() {
                    let (p00, p01) = (at(iy, ix, c), at(iy, ix + 1, c));
                    let (p10, p11) = (at(iy + 1, ix, c), at(iy + 1, ix + 1, c));
                    let v0 = lerp(alpha, p00, p01);
                    let v1 = lerp(alpha, p10, p11);
                    let v = lerp(beta, v0, v1);
                    *o = v.round_ties_even().clamp(0.0, 255.0) as u8;
                }
            }
        });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_image_stays_constant_and_the_identity_is_a_copy() {
        let src = vec![77u8; 7 * 5 * 3];
        for size in [(3, 2), (7, 5), (20, 13), (1, 1), (7, 11)] {
            let out = pil_resize_u8(&src, (7, 5, 3), size, PilFilter::Bilinear).unwrap();
            assert_eq!(out.len(), size.0 * size.1 * 3);
            assert!(out.iter().all(|&v| v == 77), "{size:?}");
        }
        let ramp: Vec<u8> = (0..60).collect();
        assert_eq!(
            pil_resize_u8(&ramp, (4, 5, 3), (4, 5), PilFilter::Bilinear).unwrap(),
            ramp
        );
    }

    #[test]
    fn halving_averages_pairs() {
        // 1x4 -> 1x2: each output covers two inputs with weights 1/2 (support 2, taps at
        // distance 0.5 and 1.5 from the centre: 0.75 and 0.25 of a triangle of half-width 2).
        let out =
            pil_resize_u8(&[0, 100, 200, 40], (1, 4, 1), (1, 2), PilFilter::Bilinear).unwrap();
        // centre 1.0: taps x=0 (w 0.75), 1 (0.75), 2 (0.25) over xmin=0..3 normalised by 1.75.
        let a = (0.0 * 0.75 + 100.0 * 0.75 + 200.0 * 0.25) / 1.75;
        assert_eq!(out[0], (a + 0.5f64).floor() as u8);
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(pil_resize_u8(&[0; 5], (1, 2, 3), (1, 1), PilFilter::Bilinear).is_err());
        assert!(pil_resize_u8(&[0; 6], (1, 2, 3), (0, 1), PilFilter::Bilinear).is_err());
    }
}
