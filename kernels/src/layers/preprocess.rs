//! Image pre-processing: `u8` HWC RGB → normalised `f32` CHW, resize, pad.
//!
//! [`RcnnTransform`] reproduces torchvision's `GeneralizedRCNNTransform` at inference for one
//! image given as the `u8` image a user would pass through `to_tensor` (`x / 255`):
//! 1. normalise `(x/255 - mean) / std` (f32, in that order, as torchvision);
//! 2. `scale = min(min_size / min(h, w), max_size / max(h, w))` (f64, as Python), output size
//!    `floor(h·scale) x floor(w·scale)`, bilinear with `align_corners=False` and the
//!    recomputed ratio `in/out` (`recompute_scale_factor=True`);
//! 3. zero padding at the bottom/right to a multiple of `size_divisible` (in normalised space).
//!
//! Steps 1 and 2 are fused: each output pixel interpolates the normalised values of its four
//! source pixels (looked up in a 256-entry table per channel, so the values are bit-identical
//! to normalising first), in parallel over output rows.

use ndarray::{Array3, Array4, ArrayView3};
use rayon::prelude::*;

use super::resize::{axis_table, ResizeMode};
use super::{checked_numel, invalid, shape_err, Result};

/// ImageNet mean and std (torchvision's defaults).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The per-channel table `v ↦ (v/255 - mean) / std` in f32, as torch computes it.
fn lut(mean: [f32; 3], std: [f32; 3]) -> Result<[[f32; 256]; 3]> {
    if std.iter().any(|&s| s == 0.0 || !s.is_finite()) || mean.iter().any(|m| !m.is_finite()) {
        return invalid("preprocess", format!("bad mean {mean:?} or std {std:?}"));
    }
    let mut t = [[0f32; 256]; 3];
    for (c, row) in t.iter_mut().enumerate() {
        for (v, e) in row.iter_mut().enumerate() {
            *e = (v as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    Ok(t)
}

fn check_image(img: &ArrayView3<'_, u8>) -> Result<(usize, usize)> {
    let (h, w, c) = img.dim();
    if c != 3 {
        return shape_err(
            "preprocess",
            format!("expected an HxWx3 RGB image, got {:?}", img.shape()),
        );
    }
    if h == 0 || w == 0 {
        return shape_err("preprocess", "empty image");
    }
    Ok((h, w))
}

/// `u8` HWC RGB → `f32` CHW with `(x/255 - mean) / std`.
pub fn to_chw_normalized(
    img: ArrayView3<'_, u8>,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<Array3<f32>> {
    let (h, w) = check_image(&img)?;
    let t = lut(mean, std)?;
    let img = img.as_standard_layout();
    let src = img.as_slice().ok_or(super::LayerError::Invalid {
        op: "preprocess",
        msg: "not contiguous".into(),
    })?;
    let mut out = vec![0f32; 3 * h * w];
    out.par_chunks_mut(w).enumerate().for_each(|(r, row)| {
        let (c, y) = (r / h, r % h);
        let s = &src[y * w * 3..][..w * 3];
        for (x, o) in row.iter_mut().enumerate() {
            *o = t[c][s[x * 3 + c] as usize];
        }
    });
    Array3::from_shape_vec((3, h, w), out).or_else(|e| invalid("preprocess", e.to_string()))
}

/// Zero-pads `[C, H, W]` at the bottom and right to multiples of `divisor`.
pub fn pad_to_multiple(x: ArrayView3<'_, f32>, divisor: usize) -> Result<Array3<f32>> {
    if divisor == 0 {
        return invalid("pad_to_multiple", "divisor must be positive");
    }
    let (c, h, w) = x.dim();
    let (ph, pw) = (h.div_ceil(divisor) * divisor, w.div_ceil(divisor) * divisor);
    let mut out = Array3::<f32>::zeros((c, ph, pw));
    out.slice_mut(ndarray::s![.., ..h, ..w]).assign(&x);
    Ok(out)
}

/// torchvision's `GeneralizedRCNNTransform` for inference; see the module documentation.
#[derive(Clone, Debug, PartialEq)]
pub struct RcnnTransform {
    pub min_size: usize,
    pub max_size: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub size_divisible: usize,
}

impl Default for RcnnTransform {
    /// Mask R-CNN's defaults: 800, 1333, ImageNet mean/std, 32.
    fn default() -> Self {
        RcnnTransform {
            min_size: 800,
            max_size: 1333,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            size_divisible: 32,
        }
    }
}

/// The output of [`RcnnTransform::apply`].
#[derive(Clone, Debug)]
pub struct Preprocessed {
    /// `[1, 3, H_pad, W_pad]`, normalised, zero-padded.
    pub image: Array4<f32>,
    /// Resized, unpadded `(h, w)` (torchvision's `image_sizes`).
    pub image_size: (usize, usize),
    /// The input `(h, w)`.
    pub original_size: (usize, usize),
}

impl RcnnTransform {
    /// The resized, unpadded size of an `h x w` image.
    pub fn resized_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        if h == 0 || w == 0 || self.min_size == 0 || self.max_size == 0 {
            return shape_err(
                "preprocess",
                format!(
                    "cannot resize a {h}x{w} image to min {} max {}",
                    self.min_size, self.max_size
                ),
            );
        }
        let (lo, hi) = (h.min(w) as f64, h.max(w) as f64);
        let scale = (self.min_size as f64 / lo).min(self.max_size as f64 / hi);
        let oh = (h as f64 * scale).floor() as usize;
        let ow = (w as f64 * scale).floor() as usize;
        if oh == 0 || ow == 0 {
            return shape_err("preprocess", format!("a {h}x{w} image resizes to nothing"));
        }
        Ok((oh, ow))
    }

    /// Normalises, resizes and pads an `H x W x 3` RGB `u8` image.
    pub fn apply(&self, img: ArrayView3<'_, u8>) -> Result<Preprocessed> {
        let (h, w) = check_image(&img)?;
        if self.size_divisible == 0 {
            return invalid("preprocess", "size_divisible must be positive");
        }
        let t = lut(self.mean, self.std)?;
        let (oh, ow) = self.resized_size(h, w)?;
        let d = self.size_divisible;
        let (ph, pw) = (oh.div_ceil(d) * d, ow.div_ceil(d) * d);
        let total = checked_numel("preprocess", &[3, ph, pw])?;
        let mode = ResizeMode::Bilinear {
            align_corners: false,
        };
        let ty = axis_table(h, oh, mode, None);
        let tx = axis_table(w, ow, mode, None);
        let img = img.as_standard_layout();
        let src = img.as_slice().ok_or(super::LayerError::Invalid {
            op: "preprocess",
            msg: "not contiguous".into(),
        })?;
        let mut out = super::zeroed(total);
        out.par_chunks_mut(pw).enumerate().for_each(|(r, row)| {
            let (c, y) = (r / ph, r % ph);
            if y >= oh {
                return;
            }
            let tc = &t[c];
            let r0 = &src[ty.i0[y] * w * 3..][..w * 3];
            let r1 = &src[ty.i1[y] * w * 3..][..w * 3];
            let (a0, a1) = (ty.l0[y], ty.l1[y]);
            for (x, o) in row[..ow].iter_mut().enumerate() {
                let (j0, j1) = (tx.i0[x] * 3 + c, tx.i1[x] * 3 + c);
                let (b0, b1) = (tx.l0[x], tx.l1[x]);
                let top = b0 * tc[r0[j0] as usize] + b1 * tc[r0[j1] as usize];
                let bot = b0 * tc[r1[j0] as usize] + b1 * tc[r1[j1] as usize];
                *o = a0 * top + a1 * bot;
            }
        });
        let image = Array4::from_shape_vec((1, 3, ph, pw), out)
            .or_else(|e| invalid("preprocess", e.to_string()))?;
        Ok(Preprocessed {
            image,
            image_size: (oh, ow),
            original_size: (h, w),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn sizes_follow_torchvision() {
        let t = RcnnTransform::default();
        assert_eq!(t.resized_size(480, 640).unwrap(), (800, 1066));
        assert_eq!(t.resized_size(800, 1216).unwrap(), (800, 1216));
        assert_eq!(t.resized_size(100, 1000).unwrap(), (133, 1333));
    }

    #[test]
    fn apply_pads_and_normalises() {
        let img = Array3::<u8>::from_elem((20, 30, 3), 255);
        let t = RcnnTransform {
            min_size: 40,
            max_size: 100,
            ..Default::default()
        };
        let p = t.apply(img.view()).unwrap();
        assert_eq!(p.image_size, (40, 60));
        assert_eq!(p.image.shape(), &[1, 3, 64, 64]);
        let want = (1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0];
        assert!((p.image[[0, 0, 39, 59]] - want).abs() < 1e-6);
        assert_eq!(p.image[[0, 0, 40, 0]], 0.0);
        assert_eq!(p.image[[0, 2, 0, 60]], 0.0);
        let chw = to_chw_normalized(img.view(), [0.0; 3], [1.0; 3]).unwrap();
        assert_eq!(chw[[2, 19, 29]], 1.0);
        assert!(t.apply(Array3::<u8>::zeros((4, 4, 1)).view()).is_err());
        assert!(to_chw_normalized(img.view(), [0.0; 3], [0.0; 3]).is_err());
        let padded = pad_to_multiple(chw.view(), 32).unwrap();
        assert_eq!(padded.shape(), &[3, 32, 32]);
    }
}
