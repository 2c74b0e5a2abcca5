//! Deformable convolution: v1 (learned offsets) and v2 (offsets and a modulation mask), with
//! the semantics of `torchvision.ops.deform_conv2d`, which are also those of the DCNv2
//! extension used by CenterNet, UPSNet and Detectron2's `ModulatedDeformConv`.
//!
//! Layouts (torch's): input `[N, C_in, H, W]`; weight `[C_out, C_in/groups, kH, kW]`; offset
//! `[N, 2·G·kH·kW, H_out, W_out]`, where `G` offset groups each cover `C_in/G` consecutive
//! input channels, and channels `2k` and `2k + 1` of a group hold `(dy, dx)` for kernel tap
//! `k = i·kW + j`; mask `[N, G·kH·kW, H_out, W_out]`. Tap `(i, j)` of output `(y, x)` samples
//! the input at `(y·s_h − p_h + i·d_h + dy, x·s_w − p_w + j·d_w + dx)` bilinearly; a sample
//! outside `(−1, H) × (−1, W)` is zero, and so is each of its four corners that lies outside
//! the image. The mask (v2) multiplies the sample.
//!
//! How it computes: a deformable im2col (the sampled columns `[C_in/g·kH·kW, tile]` for a tile
//! of output positions), then the same GEMM as [`Conv2d`]'s im2col path with the weight.
//! Sampling positions and corner weights depend only on the offset group, tap and output
//! position, so they are computed once per tile and reused for every channel of the group.
//! Each column value is `mask · (w1·v1 + w2·v2 + w3·v3 + w4·v4)` in `f32`, the operations of
//! torchvision's CPU kernel in its order, so the columns equal torchvision's bit for bit and
//! the output differs from it only by the GEMM's summation order. Tiles run in parallel.
//!
//! The weight, bias, a folded batch norm and a fused activation are those of a [`Conv2d`]
//! (which also checks the parameters and gives the output size).

use ndarray::{Array4, ArrayView4};
use rayon::prelude::*;

use super::conv::Conv2d;
use super::gemm::{sgemm_with, Backend, MatMut, MatRef, Threading};
use super::{invalid, shape_err, Result};

const OP: &str = "deform_conv2d";

/// Output positions per tile of the deformable im2col.
const TILE: usize = 256;

/// One bilinear sample: four flat input indices (`u32::MAX`: a corner outside the image,
/// read as zero) and their weights, then the mask value.
#[derive(Clone, Copy, Default)]
struct Sample {
    index: [u32; 4],
    weight: [f32; 4],
    mask: f32,
}

const OUTSIDE: u32 = u32::MAX;

impl Sample {
    /// torchvision's `bilinear_interpolate` of `deform_conv2d_kernel.cpp`, split into the
    /// corner indices and weights (the value is formed later, per channel, by [`Sample::at`]).
    fn new(h: usize, w: usize, y: f32, x: f32, mask: f32) -> Sample {
        let (hf, wf) = (h as f32, w as f32);
        if y <= -1.0 || hf <= y || x <= -1.0 || wf <= x || y.is_nan() || x.is_nan() {
            // NaN positions: torch's float-to-int conversion of NaN is undefined; a NaN offset
            // makes the sample NaN here (not zero), so that it cannot pass unnoticed.
            let nan = if y.is_nan() || x.is_nan() {
                f32::NAN
            } else {
                0.0
            };
            return Sample {
                index: [OUTSIDE; 4],
                weight: [nan; 4],
                mask,
            };
        }
        let y_low = y.floor() as i64;
        let x_low = x.floor() as i64;
        let (y_high, x_high) = (y_low + 1, x_low + 1);
        let ly = y - y_low as f32;
        let lx = x - x_low as f32;
        let hy = 1.0 - ly;
        let hx = 1.0 - lx;
        let (hi, wi) = (h as i64, w as i64);
        let at = |yy: i64, xx: i64| {
            if yy >= 0 && xx >= 0 && yy < hi && xx < wi {
                (yy * wi + xx) as u32
            } else {
                OUTSIDE
            }
        };
        Sample {
            index: [
                at(y_low, x_low),
                at(y_low, x_high),
                at(y_high, x_low),
                at(y_high, x_high),
            ],
            weight: [hy * hx, hy * lx, ly * hx, ly * lx],
            mask,
        }
    }

    /// The modulated sample of one channel plane.
    #[inline]
    fn at(&self, plane: &[f32]) -> f32 {
        let v = |k: usize| {
            let i = self.index[k];
            if i == OUTSIDE {
                0.0
            } else {
                plane[i as usize]
            }
        };
        let w = &self.weight;
        self.mask * (w[0] * v(0) + w[1] * v(1) + w[2] * v(2) + w[3] * v(3))
    }
}

/// A deformable convolution: a [`Conv2d`]'s weight, bias, folded batch norm and activation,
/// applied at offset (and, for v2, masked) sampling positions.
#[derive(Clone, Debug)]
pub struct DeformConv2d {
    conv: Conv2d,
}

impl DeformConv2d {
    /// Wraps a convolution (any kernel size, stride, padding, dilation and groups).
    pub fn new(conv: Conv2d) -> Self {
        DeformConv2d { conv }
    }

    /// The convolution whose weight, bias and activation this applies.
    pub fn conv(&self) -> &Conv2d {
        &self.conv
    }

    /// `(H_out, W_out)` for an `H x W` input.
    pub fn output_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        self.conv.output_size(h, w)
    }

    /// The number of offset groups `offset` describes, checking the shapes of `offset` and
    /// `mask` against the input's `x` `(N, C_in, H, W)`.
    pub fn offset_groups(
        &self,
        x: (usize, usize, usize, usize),
        offset: &ArrayView4<'_, f32>,
        mask: Option<&ArrayView4<'_, f32>>,
    ) -> Result<usize> {
        let (n, c, h, w) = x;
        let (oh, ow) = self.output_size(h, w)?;
        let (kh, kw) = self.conv.kernel_size();
        let taps = kh * kw;
        let (on, oc, ooh, oow) = offset.dim();
        if on != n || (ooh, oow) != (oh, ow) || oc == 0 || oc % (2 * taps) != 0 {
            return shape_err(
                OP,
                format!(
                    "offset has shape {:?}; for an input {:?} and a {kh}x{kw} kernel it must be [{n}, 2·G·{taps}, {oh}, {ow}] (G offset groups)",
                    offset.shape(),
                    [n, c, h, w]
                ),
            );
        }
        let groups = oc / (2 * taps);
        if c % groups != 0 {
            return shape_err(
                OP,
                format!("{c} input channels are not divisible by {groups} offset groups"),
            );
        }
        if let Some(m) = mask {
            if m.dim() != (n, groups * taps, oh, ow) {
                return shape_err(
                    OP,
                    format!(
                        "mask has shape {:?}, expected [{n}, {}, {oh}, {ow}] ({groups} offset groups of {taps} taps)",
                        m.shape(),
                        groups * taps
                    ),
                );
            }
        }
        Ok(groups)
    }

    /// Runs on `x` `[N, C_in, H, W]` with `offset` and, for v2, `mask` (see the module
    /// documentation for their layouts). Returns `[N, C_out, H_out, W_out]`.
    pub fn forward(
        &self,
        x: ArrayView4<'_, f32>,
        offset: ArrayView4<'_, f32>,
        mask: Option<ArrayView4<'_, f32>>,
    ) -> Result<Array4<f32>> {
        let (n, c, h, w) = x.dim();
        if c != self.conv.in_channels() {
            return shape_err(
                OP,
                format!(
                    "input has {c} channels, the convolution expects {}",
                    self.conv.in_channels()
                ),
            );
        }
        let offset_groups = self.offset_groups((n, c, h, w), &offset, mask.as_ref())?;
        if h.checked_mul(w).is_none_or(|p| p >= OUTSIDE as usize) {
            return invalid(OP, format!("input plane {h}x{w} is too large"));
        }
        let (oh, ow) = self.output_size(h, w)?;
        let (kh, kw) = self.conv.kernel_size();
        let taps = kh * kw;
        let p = self.conv.params();
        let g = p.groups;
        let cout = self.conv.out_channels();
        let (cin_g, cout_g) = (c / g, cout / g);
        let kdim = cin_g * taps;
        let ohw = oh * ow;
        let plane = h * w;
        let cin_per_offset_group = c / offset_groups;
        let xs = x.as_standard_layout();
        let xs = xs.as_slice().unwrap_or(&[]);
        let offset = offset.as_standard_layout();
        let offset = offset.as_slice().unwrap_or(&[]);
        let mask = mask.map(|m| m.as_standard_layout().to_owned());
        let mask = mask.as_ref().and_then(|m| m.as_slice());
        let weight = self.conv.weight();
        let weight = weight.as_slice().unwrap_or(&[]);
        let bias = self.conv.bias();
        let act = self.conv.activation();

        // Work items: (image, tile of output positions); each computes every group.
        let tiles = ohw.div_ceil(TILE);
        let items: Vec<(usize, usize)> = (0..n)
            .flat_map(|b| (0..tiles).map(move |t| (b, t)))
            .collect();
        let blocks: Vec<(usize, usize, Vec<f32>)> = items
            .into_par_iter()
            .map(|(b, t)| {
                let p0 = t * TILE;
                let len = TILE.min(ohw - p0);
                // Sampling positions per (offset group, tap, position in the tile).
                let mut samples = vec![Sample::default(); offset_groups * taps * len];
                for og in 0..offset_groups {
                    for k in 0..taps {
                        let (i, j) = (k / kw, k % kw);
                        let dy = &offset[((b * offset_groups + og) * 2 * taps + 2 * k) * ohw..];
                        let dx = &dy[ohw..];
                        let m = mask.map(|m| &m[((b * offset_groups + og) * taps + k) * ohw..]);
                        for q in 0..len {
                            let pos = p0 + q;
                            let (oy, ox) = (pos / ow, pos % ow);
                            let base_y =
                                (oy * p.stride.0 + i * p.dilation.0) as i64 - p.padding.0 as i64;
                            let base_x =
                                (ox * p.stride.1 + j * p.dilation.1) as i64 - p.padding.1 as i64;
                            samples[(og * taps + k) * len + q] = Sample::new(
                                h,
                                w,
                                base_y as f32 + dy[pos],
                                base_x as f32 + dx[pos],
                                m.map_or(1.0, |m| m[pos]),
                            );
                        }
                    }
                }
                let mut cols = vec![0f32; kdim * len];
                let mut out = vec![0f32; cout * len];
                for gi in 0..g {
                    for ci in 0..cin_g {
                        let channel = gi * cin_g + ci;
                        let og = channel / cin_per_offset_group;
                        let plane_in = &xs[(b * c + channel) * plane..][..plane];
                        for k in 0..taps {
                            let row = &mut cols[(ci * taps + k) * len..][..len];
                            let s = &samples[(og * taps + k) * len..][..len];
                            for (v, s) in row.iter_mut().zip(s) {
                                *v = s.at(plane_in);
                            }
                        }
                    }
                    let a = MatRef::row_major(&weight[gi * cout_g * kdim..], cout_g, kdim, kdim)?;
                    let rhs = MatRef::row_major(&cols, kdim, len, len)?;
                    let dst = MatMut::row_major(&mut out[gi * cout_g * len..], cout_g, len, len)?;
                    sgemm_with(a, rhs, dst, false, Backend::default(), Threading::Single)?;
                }
                for (co, row) in out.chunks_mut(len).enumerate() {
                    if let Some(bias) = bias {
                        row.iter_mut().for_each(|v| *v += bias[co]);
                    }
                    act.apply_slice(row);
                }
                Ok((b, p0, out))
            })
            .collect::<Result<_>>()?;
        let mut out = Array4::<f32>::zeros((n, cout, oh, ow));
        let dst = out.as_slice_mut().ok_or_else(|| super::LayerError::Shape {
            op: OP,
            msg: "output is not contiguous".into(),
        })?;
        for (b, p0, block) in blocks {
            let len = block.len() / cout.max(1);
            for (co, row) in block.chunks(len.max(1)).enumerate() {
                dst[(b * cout + co) * ohw + p0..][..len].copy_from_slice(row);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{Activation, Conv2dParams};
    use ndarray::{Array1, Array4};

    fn ramp(shape: (usize, usize, usize, usize), scale: f32) -> Array4<f32> {
        let mut k = 0u32;
        Array4::from_shape_fn(shape, |_| {
            k = k.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            ((k >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * scale
        })
    }

    /// Zero offsets and a mask of ones give the plain convolution, for every kind of
    /// convolution the wrapped [`Conv2d`] supports.
    #[test]
    fn zero_offsets_give_the_plain_convolution() {
        for (params, cin, cout) in [
            (Conv2dParams::default().padding(1), 4, 6),
            (
                Conv2dParams::default().stride(2).padding(2).dilation(2),
                3,
                5,
            ),
            (Conv2dParams::default().padding(1).groups(2), 4, 6),
        ] {
            let x = ramp((2, cin, 9, 10), 2.0);
            let wt = ramp((cout, cin / params.groups, 3, 3), 1.0);
            let bias = Array1::from_iter((0..cout).map(|i| i as f32 * 0.1));
            let conv = Conv2d::new(wt.view(), Some(bias.view()), params)
                .unwrap()
                .with_activation(Activation::Relu);
            let want = conv.forward(x.view()).unwrap();
            let (oh, ow) = conv.output_size(9, 10).unwrap();
            let dcn = DeformConv2d::new(conv);
            let offset = Array4::zeros((2, 2 * 9, oh, ow));
            let ones = Array4::ones((2, 9, oh, ow));
            let got = dcn
                .forward(x.view(), offset.view(), Some(ones.view()))
                .unwrap();
            let v1 = dcn.forward(x.view(), offset.view(), None).unwrap();
            for (a, b) in got.iter().zip(&want).chain(v1.iter().zip(&want)) {
                assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
            }
        }
    }

    /// An offset of exactly one pixel shifts the sampling grid: a 1x1 deformable convolution
    /// with offset (dy, dx) = (1, -1) reads `x[y + 1, x - 1]` (zero outside the image).
    #[test]
    fn integer_offsets_shift_the_input() {
        let x = ramp((1, 1, 5, 6), 4.0);
        let conv = Conv2d::new(
            Array4::ones((1, 1, 1, 1)).view(),
            None,
            Conv2dParams::default(),
        )
        .unwrap();
        let mut offset = Array4::zeros((1, 2, 5, 6));
        offset.index_axis_mut(ndarray::Axis(1), 0).fill(1.0);
        offset.index_axis_mut(ndarray::Axis(1), 1).fill(-1.0);
        let got = DeformConv2d::new(conv)
            .forward(x.view(), offset.view(), None)
            .unwrap();
        for y in 0..5 {
            for xx in 0..6 {
                let want = if y + 1 < 5 && xx >= 1 {
                    x[[0, 0, y + 1, xx - 1]]
                } else {
                    0.0
                };
                assert_eq!(got[[0, 0, y, xx]], want, "({y}, {xx})");
            }
        }
    }

    #[test]
    fn mis_shaped_offsets_and_masks_are_errors() {
        let conv = Conv2d::new(
            Array4::ones((2, 3, 3, 3)).view(),
            None,
            Conv2dParams::default().padding(1),
        )
        .unwrap();
        let dcn = DeformConv2d::new(conv);
        let x = Array4::zeros((1, 3, 4, 4));
        let bad = Array4::zeros((1, 17, 4, 4));
        let err = dcn.forward(x.view(), bad.view(), None).unwrap_err();
        assert!(err.to_string().contains("2·G·9"), "{err}");
        let offset = Array4::zeros((1, 18, 4, 4));
        let mask = Array4::zeros((1, 9, 3, 4));
        let err = dcn
            .forward(x.view(), offset.view(), Some(mask.view()))
            .unwrap_err();
        assert!(err.to_string().contains("mask has shape"), "{err}");
        let x2 = Array4::zeros((1, 2, 4, 4));
        assert!(dcn.forward(x2.view(), offset.view(), None).is_err());
        // NaN offsets give NaN, not a panic.
        let mut nan = Array4::zeros((1, 18, 4, 4));
        nan[[0, 0, 1, 1]] = f32::NAN;
        let got = dcn.forward(x.view(), nan.view(), None).unwrap();
        assert!(got[[0, 0, 1, 1]].is_nan());
    }
}
