//! Image → model input, step for step as the TF.js reference does it (so outputs compare):
//!
//! 1. the u8 [H, W, C] image as a [1, H, W, C] tensor (a 1-channel image is repeated to 3
//!    channels; the alpha channel of RGBA is dropped);
//! 2. `tf.image.resizeBilinear(x, [h, w], align_corners)` to the model's input size (TF.js
//!    semantics, computed in f64; `half_pixel_centers` is optional);
//! 3. for a model with one input channel: `gray = r·w0 + g·w1 + b·w2` (f32);
//! 4. `x * scale + offset` (f32; skipped when scale = 1 and offset = 0);
//! 5. for an int32 input: truncation toward zero (`tf.cast(x, 'int32')`);
//! 6. for an NCHW input: transpose to [1, C, h, w].

use kernels::{DType, Tensor};

use crate::error::{op_err, OpResult};
use crate::ops_cpu;

/// Pre-processing settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    pub height: usize,
    pub width: usize,
    /// Channels the model takes: 1 (grayscale) or 3.
    pub channels: usize,
    pub nchw: bool,
    pub dtype: DType,
    pub scale: f32,
    pub offset: f32,
    pub align_corners: bool,
    pub half_pixel_centers: bool,
    pub gray_weights: [f32; 3],
}

impl Preprocess {
    /// Turns an `image` tensor (u8 [H, W, C]) into the model's input tensor.
    pub fn apply(&self, image: &Tensor) -> OpResult<Tensor> {
        let (h, w, c) = match image.shape() {
            [h, w, c] if [1, 3, 4].contains(c) => (*h, *w, *c),
            s => {
                return op_err!(
                    "the image must be u8 [H, W, C] with C = 1, 3 or 4, got shape {s:?}"
                )
            }
        };
        let px = image.as_slice::<u8>().map_err(|_| {
            crate::error::OpError::new(format!("the image must be u8, got {}", image.describe()))
        })?;
        if h == 0 || w == 0 {
            return op_err!("the image is empty ({h}x{w})");
        }
        let mut rgb = Vec::with_capacity(h * w * 3);
        for p in px.chunks_exact(c) {
            if c == 1 {
                rgb.extend_from_slice(&[p[0] as f32; 3]);
            } else {
                rgb.extend(p[..3].iter().map(|&v| v as f32));
            }
        }
        let x = Tensor::from_vec(&[1, h, w, 3], rgb)?;
        let resized = ops_cpu::resize_bilinear_nhwc(
            &x,
            self.height,
            self.width,
            self.align_corners,
            self.half_pixel_centers,
        )?;
        let mut v = ops_cpu::f32s(&resized)?.to_vec();
        let mut ch = 3;
        if self.channels == 1 {
            let [wr, wg, wb] = self.gray_weights;
            v = v
                .chunks_exact(3)
                .map(|p| p[0] * wr + p[1] * wg + p[2] * wb)
                .collect();
            ch = 1;
        }
        if self.scale != 1.0 || self.offset != 0.0 {
            for e in v.iter_mut() {
                *e = *e * self.scale + self.offset;
            }
        }
        let t = Tensor::from_vec(&[1, self.height, self.width, ch], v)?;
        let t = if self.dtype == DType::I32 {
            ops_cpu::cast(&t, DType::I32)?
        } else {
            t
        };
        if self.nchw {
            ops_cpu::transpose(&t, &[0, 3, 1, 2])
        } else {
            Ok(t)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gray_scale_int_and_nchw() {
        let img = Tensor::from_vec(
            &[2, 2, 3],
            vec![10u8, 20, 30, 10, 20, 30, 10, 20, 30, 10, 20, 30],
        )
        .unwrap();
        let mut p = Preprocess {
            height: 4,
            width: 4,
            channels: 1,
            nchw: false,
            dtype: DType::F32,
            scale: 0.5,
            offset: 1.0,
            align_corners: false,
            half_pixel_centers: false,
            gray_weights: [1.0, 0.0, 0.0],
        };
        let t = p.apply(&img).unwrap();
        assert_eq!(t.shape(), &[1, 4, 4, 1]);
        assert!(t.as_slice::<f32>().unwrap().iter().all(|&v| v == 6.0));
        p.channels = 3;
        p.nchw = true;
        p.dtype = DType::I32;
        p.scale = 1.0;
        p.offset = 0.0;
        let t = p.apply(&img).unwrap();
        assert_eq!(t.shape(), &[1, 3, 4, 4]);
        assert_eq!(t.as_slice::<i32>().unwrap()[16], 20);
        assert!(p
            .apply(&Tensor::zeros(DType::F32, &[2, 2, 3]).unwrap())
            .is_err());
        assert!(p
            .apply(&Tensor::zeros(DType::U8, &[2, 2]).unwrap())
            .is_err());
    }
}
