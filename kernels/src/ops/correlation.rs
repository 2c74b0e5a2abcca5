//! The correlation ("cost volume") layer of FlowNet and its descendants, as NVIDIA's
//! flownet2-pytorch CUDA kernel computes it (`correlation_package/correlation_cuda_kernel.cu`,
//! `correlation_forward`, vendored by mcahny/vps @ 138503ed in `mmdet/models/flow_modules/`).
//! One implementation serves both of VPSNet's uses:
//!
//! - FlowNet2's FlowNetC: `Correlation(pad_size=20, kernel_size=1, max_displacement=20,
//!   stride1=1, stride2=2)`, 441 displacements ([`CorrelationParams::flownet_c`]);
//! - BFPTcea's `LiteFlowNetCorr`: the same layer with `pad_size = max_displacement =
//!   search_range = 4` and unit strides, 81 displacements
//!   ([`CorrelationParams::search_range`]).
//!
//! # Semantics
//!
//! Both inputs `[N, C, H, W]` are zero-padded by `pad_size` on every side. With
//! `kernel_rad = (kernel_size - 1) / 2`, `r = max_displacement / stride2` and
//! `D = 2r + 1`, output channel `(tj + r)·D + (ti + r)` (`tj` the vertical displacement) at
//! output pixel `(y, x)` is
//!
//! ```text
//! sum_{j, i in -kernel_rad..=kernel_rad} sum_c a[c, y1 + j, x1 + i] · b[c, y1 + tj·stride2 + j, x1 + ti·stride2 + i]
//!     / (kernel_size² · C)
//! ```
//!
//! with `(y1, x1) = (y, x)·stride1 + max_displacement` in padded coordinates, and the output
//! is `ceil((H + 2·pad_size - 2·(kernel_rad + max_displacement)) / stride1)` high (likewise
//! wide). The kernel centres the window at `max_displacement`, not `max_displacement +
//! kernel_rad` as Caffe's original did, so with `kernel_size > 1` the CUDA kernel reads
//! `kernel_rad` rows before the padded buffer (out of bounds). Here such reads are zeros;
//! with `kernel_size = 1`, the only size FlowNet2 and VPSNet use, every read is inside the
//! buffer and the two agree. `corr_multiply` is accepted by the official module and ignored
//! by its kernel, so it has no counterpart.
//!
//! # Implementation
//!
//! The inputs are copied once to zero-padded channels-last buffers (what the CUDA kernel's
//! `channels_first` pass builds too), so that each product over channels is a dot product of
//! two contiguous vectors. Output rows run in parallel on rayon; within a row, the first
//! input's vector at each pixel stays in L1 while all `D²` displacements read the second
//! input. The dot product keeps 16 partial sums (which LLVM vectorises, compiled for AVX-512
//! and AVX2 and picked at run time), so its sum is in another order than the CUDA kernel's
//! 32-thread reduction: the results differ from it by float rounding only (about 1e-7
//! relative). [`correlation_reference`] is the kernel's loop nest, one output at a time, for
//! the tests.

use ndarray::{Array4, ArrayView3, ArrayView4};
use rayon::prelude::*;

use super::simd::multiversion;
use super::OpError;

const OP: &str = "correlation";

/// The arguments of flownet2-pytorch's `Correlation` module (without `corr_multiply`, which
/// its kernel ignores).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CorrelationParams {
    pub pad_size: usize,
    /// The side of the patch compared around each pixel (odd).
    pub kernel_size: usize,
    pub max_displacement: usize,
    /// The step between output pixels in the first input.
    pub stride1: usize,
    /// The step between displacements in the second input.
    pub stride2: usize,
}

impl CorrelationParams {
    /// FlowNetC's layer (`FlowNetC.py`): 21 x 21 displacements 2 pixels apart.
    pub fn flownet_c() -> CorrelationParams {
        CorrelationParams {
            pad_size: 20,
            kernel_size: 1,
            max_displacement: 20,
            stride1: 1,
            stride2: 2,
        }
    }

    /// `LiteFlowNetCorr`'s layer (`flow_modules.py`): every displacement within
    /// `search_range` pixels, `(2·search_range + 1)²` channels, the input's size.
    pub fn search_range(search_range: usize) -> CorrelationParams {
        CorrelationParams {
            pad_size: search_range,
            kernel_size: 1,
            max_displacement: search_range,
            stride1: 1,
            stride2: 1,
        }
    }

    /// `r = max_displacement / stride2`: displacements run over `-r..=r` on each axis.
    pub fn displacement_radius(&self) -> usize {
        self.max_displacement / self.stride2
    }

    /// The output channels, `(2r + 1)²`.
    pub fn out_channels(&self) -> usize {
        let d = 2 * self.displacement_radius() + 1;
        d * d
    }

    /// The output's `(height, width)` for an `h x w` input, as `correlation_forward_cuda`
    /// sizes it, or an error for invalid parameters or an input too small to give one.
    pub fn output_size(&self, h: usize, w: usize) -> Result<(usize, usize), OpError> {
        if self.kernel_size.is_multiple_of(2) {
            return Err(OpError::invalid(
                OP,
                format!("kernel_size must be odd, got {}", self.kernel_size),
            ));
        }
        if self.stride1 == 0 || self.stride2 == 0 {
            return Err(OpError::invalid(
                OP,
                format!("strides must be positive: {self:?}"),
            ));
        }
        let border = (self.kernel_size - 1) / 2 + self.max_displacement;
        let side = |n: usize| -> Result<usize, OpError> {
            let padded = n
                .checked_add(2 * self.pad_size)
                .ok_or_else(|| OpError::invalid(OP, "padded size overflows"))?;
            match padded.checked_sub(2 * border) {
                Some(span) if span > 0 => Ok(span.div_ceil(self.stride1)),
                _ => Err(OpError::shape(
                    OP,
                    format!(
                        "a {h}x{w} input padded by {} is too small for max_displacement {} and kernel_size {}",
                        self.pad_size, self.max_displacement, self.kernel_size
                    ),
                )),
            }
        };
        Ok((side(h)?, side(w)?))
    }
}

/// Checks the inputs and parameters; returns `(n, c, h, w, out_h, out_w)`.
fn check(
    a: &ArrayView4<'_, f32>,
    b: &ArrayView4<'_, f32>,
    p: &CorrelationParams,
) -> Result<(usize, usize, usize, usize, usize, usize), OpError> {
    if a.dim() != b.dim() {
        return Err(OpError::shape(
            OP,
            format!(
                "the inputs differ in shape: {:?} and {:?}",
                a.dim(),
                b.dim()
            ),
        ));
    }
    let (n, c, h, w) = a.dim();
    if c == 0 {
        return Err(OpError::shape(OP, "the inputs have no channels"));
    }
    let (oh, ow) = p.output_size(h, w)?;
    Ok((n, c, h, w, oh, ow))
}

/// The correlation of `a` and `b` (`[N, C, H, W]` each): `[N, (2r + 1)², out_h, out_w]`;
/// see the module documentation.
pub fn correlation(
    a: ArrayView4<'_, f32>,
    b: ArrayView4<'_, f32>,
    p: CorrelationParams,
) -> Result<Array4<f32>, OpError> {
    let (n, c, h, w, oh, ow) = check(&a, &b, &p)?;
    let geom = Geom {
        c,
        ph: h + 2 * p.pad_size,
        pw: w + 2 * p.pad_size,
        ow,
        kernel_rad: (p.kernel_size - 1) / 2,
        radius: p.displacement_radius(),
        max_displacement: p.max_displacement,
        stride1: p.stride1,
        stride2: p.stride2,
        nelems: (p.kernel_size * p.kernel_size * c) as f32,
    };
    let planes = p.out_channels();
    // Rows of the result in [N, out_h, D², out_w] order, one rayon task each, then
    // transposed to [N, D², out_h, out_w].
    let row_len = planes * ow;
    let mut rows = vec![0f32; n * oh * row_len];
    for (batch, chunk) in rows.chunks_mut(oh * row_len).enumerate() {
        let pa = padded_channels_last(a.index_axis(ndarray::Axis(0), batch), p.pad_size);
        let pb = padded_channels_last(b.index_axis(ndarray::Axis(0), batch), p.pad_size);
        chunk
            .par_chunks_mut(row_len)
            .enumerate()
            .for_each(|(oy, out)| correlation_row(&pa, &pb, &geom, oy, out));
    }
    let plane = oh * ow;
    let mut out = vec![0f32; n * planes * plane];
    out.par_chunks_mut(plane.max(1))
        .enumerate()
        .for_each(|(bk, dst)| {
            let (batch, k) = (bk / planes, bk % planes);
            for (oy, dst_row) in dst.chunks_mut(ow).enumerate() {
                let src = &rows[(batch * oh + oy) * row_len + k * ow..][..ow];
                dst_row.copy_from_slice(src);
            }
        });
    Array4::from_shape_vec((n, planes, oh, ow), out)
        .map_err(|e| OpError::invalid(OP, e.to_string()))
}

/// The sizes one output row needs.
struct Geom {
    c: usize,
    /// The padded input's height and width.
    ph: usize,
    pw: usize,
    ow: usize,
    kernel_rad: usize,
    radius: usize,
    max_displacement: usize,
    stride1: usize,
    stride2: usize,
    /// `kernel_size² · C`.
    nelems: f32,
}

/// `x` (`[C, H, W]`) zero-padded by `pad` and laid out `[H + 2·pad, W + 2·pad, C]`.
fn padded_channels_last(x: ArrayView3<'_, f32>, pad: usize) -> Vec<f32> {
    let (c, h, w) = x.dim();
    let pw = w + 2 * pad;
    let mut out = vec![0f32; (h + 2 * pad) * pw * c];
    out.par_chunks_mut(pw * c)
        .enumerate()
        .skip(pad)
        .take(h)
        .for_each(|(py, row)| {
            let y = py - pad;
            for k in 0..c {
                for (xx, v) in x.slice(ndarray::s![k, y, ..]).iter().enumerate() {
                    row[(xx + pad) * c + k] = *v;
                }
            }
        });
    out
}

/// `sum_k a[k]·b[k]` over 16 partial sums (vectorised), then the remainder.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..16 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    // Pairwise reduction of the partial sums.
    let mut width = 8;
    while width > 0 {
        for k in 0..width {
            acc[k] += acc[k + width];
        }
        width /= 2;
    }
    acc[0] + tail
}

/// Output row `oy` of one image, `[D², out_w]`.
#[inline(always)]
fn correlation_row_impl(pa: &[f32], pb: &[f32], g: &Geom, oy: usize, out: &mut [f32]) {
    let (c, kr) = (g.c, g.kernel_rad as isize);
    let d = 2 * g.radius + 1;
    let (ph, pw) = (g.ph as isize, g.pw as isize);
    let y1 = (oy * g.stride1 + g.max_displacement) as isize;
    // The range of the C-vector at padded (y, x), or None outside the buffers (zeros).
    let at = |y: isize, x: isize| -> Option<std::ops::Range<usize>> {
        if y < 0 || x < 0 || y >= ph || x >= pw {
            return None;
        }
        let start = (y as usize * g.pw + x as usize) * c;
        Some(start..start + c)
    };
    // Displacement rows outermost: for one `tj`, the `D` vectors of the second input that
    // one output pixel reads are next to those of the previous pixel, so they stay in L1
    // as the window slides along the row.
    for tj in 0..d {
        let dy = (tj as isize - g.radius as isize) * g.stride2 as isize;
        for ox in 0..g.ow {
            let x1 = (ox * g.stride1 + g.max_displacement) as isize;
            for ti in 0..d {
                let dx = (ti as isize - g.radius as isize) * g.stride2 as isize;
                let mut acc = 0f32;
                for j in -kr..=kr {
                    for i in -kr..=kr {
                        if let (Some(ra), Some(rb)) =
                            (at(y1 + j, x1 + i), at(y1 + dy + j, x1 + dx + i))
                        {
                            acc += dot(&pa[ra], &pb[rb]);
                        }
                    }
                }
                // A division, as the kernel's `acc0 / nelems`.
                out[(tj * d + ti) * g.ow + ox] = acc / g.nelems;
            }
        }
    }
}

multiversion!(fn correlation_row(pa: &[f32], pb: &[f32], g: &Geom, oy: usize, out: &mut [f32]) => correlation_row_impl);

/// The CUDA kernel's loop nest (`correlation_forward`), one output value at a time with the
/// channels summed in order and the sum divided by `kernel_size² · C`: the reference that
/// [`correlation`] is tested against.
pub fn correlation_reference(
    a: ArrayView4<'_, f32>,
    b: ArrayView4<'_, f32>,
    p: CorrelationParams,
) -> Result<Array4<f32>, OpError> {
    let (n, c, h, w, oh, ow) = check(&a, &b, &p)?;
    let pad = p.pad_size as isize;
    let kr = ((p.kernel_size - 1) / 2) as isize;
    let r = p.displacement_radius() as isize;
    let d = 2 * r + 1;
    let nelems = (p.kernel_size * p.kernel_size * c) as f32;
    // The padded input: zero outside the image.
    let read = |x: &ArrayView4<'_, f32>, batch: usize, k: usize, py: isize, px: isize| {
        let (y, xx) = (py - pad, px - pad);
        if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
            0.0
        } else {
            x[[batch, k, y as usize, xx as usize]]
        }
    };
    let mut out = Array4::zeros((n, (d * d) as usize, oh, ow));
    for batch in 0..n {
        for oy in 0..oh {
            let y1 = (oy * p.stride1 + p.max_displacement) as isize;
            for ox in 0..ow {
                let x1 = (ox * p.stride1 + p.max_displacement) as isize;
                for tj in -r..=r {
                    for ti in -r..=r {
                        let x2 = x1 + ti * p.stride2 as isize;
                        let y2 = y1 + tj * p.stride2 as isize;
                        let mut acc = 0f32;
                        for j in -kr..=kr {
                            for i in -kr..=kr {
                                for k in 0..c {
                                    acc += read(&a, batch, k, y1 + j, x1 + i)
                                        * read(&b, batch, k, y2 + j, x2 + i);
                                }
                            }
                        }
                        let tc = ((tj + r) * d + (ti + r)) as usize;
                        out[[batch, tc, oy, ox]] = acc / nelems;
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::generated_tensor;
    use ndarray::Array4;

    /// `generated_tensor(name, [n, c, h, w], 1, 0)` as an array: the inputs of
    /// `tests/reference/make_vpsnet_fusion_fixtures.py --correlation`.
    fn input(name: &str, shape: [usize; 4]) -> Array4<f32> {
        let t = generated_tensor(name, &shape, 1.0, 0.0).unwrap();
        Array4::from_shape_vec(
            (shape[0], shape[1], shape[2], shape[3]),
            t.as_slice::<f32>().unwrap().to_vec(),
        )
        .unwrap()
    }

    /// One case of the script: its inputs, parameters, and the pure-torch port of the CUDA
    /// kernel's output summarised as per-channel sums and every channel at two pixels.
    struct Case {
        name: &'static str,
        shape: [usize; 4],
        params: CorrelationParams,
        out_size: (usize, usize),
        pixels: [(usize, usize); 2],
        channel_sums: &'static [f32],
        at_pixels: [&'static [f32]; 2],
    }

    fn check_case(case: &Case) {
        let a = input(&format!("correlation.{}.a", case.name), case.shape);
        let b = input(&format!("correlation.{}.b", case.name), case.shape);
        let got = correlation(a.view(), b.view(), case.params).unwrap();
        let reference = correlation_reference(a.view(), b.view(), case.params).unwrap();
        let planes = case.params.out_channels();
        assert_eq!(got.dim(), (1, planes, case.out_size.0, case.out_size.1));
        assert_eq!(reference.dim(), got.dim());
        for (k, &want) in case.channel_sums.iter().enumerate() {
            let sum: f32 = got.slice(ndarray::s![0, k, .., ..]).sum();
            assert!(
                (sum - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{} channel {k}: {sum} vs {want}",
                case.name
            );
        }
        for (&(y, x), want) in case.pixels.iter().zip(case.at_pixels) {
            for (k, &v) in want.iter().enumerate() {
                for (which, arr) in [("fast", &got), ("reference", &reference)] {
                    let g = arr[[0, k, y, x]];
                    assert!(
                        (g - v).abs() <= 1e-6 * v.abs().max(1.0),
                        "{} {which} ({y}, {x}) channel {k}: {g} vs {v}",
                        case.name
                    );
                }
            }
        }
        for (g, r) in got.iter().zip(reference.iter()) {
            assert!(
                (g - r).abs() <= 1e-6 * r.abs().max(1.0),
                "{}: fast {g} vs reference {r}",
                case.name
            );
        }
    }

    #[test]
    fn matches_the_cuda_kernel_port() {
        for case in CASES {
            check_case(case);
        }
    }

    #[test]
    fn fast_and_reference_agree_on_wide_inputs_and_larger_patches() {
        // 37 channels: two blocks of 16 and a remainder; kernel_size 3 reads outside the
        // padded buffer near the top-left edge (zeros here).
        let shape = [2, 37, 9, 11];
        let a = input("correlation.wide.a", shape);
        let b = input("correlation.wide.b", shape);
        for params in [
            CorrelationParams::search_range(3),
            CorrelationParams {
                pad_size: 6,
                kernel_size: 1,
                max_displacement: 6,
                stride1: 1,
                stride2: 2,
            },
            CorrelationParams {
                pad_size: 2,
                kernel_size: 3,
                max_displacement: 2,
                stride1: 2,
                stride2: 1,
            },
            CorrelationParams {
                pad_size: 0,
                kernel_size: 1,
                max_displacement: 2,
                stride1: 3,
                stride2: 1,
            },
        ] {
            let got = correlation(a.view(), b.view(), params).unwrap();
            let want = correlation_reference(a.view(), b.view(), params).unwrap();
            assert_eq!(got.dim(), want.dim(), "{params:?}");
            for (g, r) in got.iter().zip(want.iter()) {
                assert!(
                    (g - r).abs() <= 1e-6 * r.abs().max(1.0),
                    "{params:?}: {g} vs {r}"
                );
            }
        }
    }

    #[test]
    fn output_sizes_and_errors() {
        let p = CorrelationParams::flownet_c();
        assert_eq!(p.out_channels(), 441);
        assert_eq!(p.output_size(16, 24).unwrap(), (16, 24));
        let s = CorrelationParams::search_range(4);
        assert_eq!(s.out_channels(), 81);
        assert_eq!(s.output_size(32, 48).unwrap(), (32, 48));
        // ceil((5 + 2 - 2) / 2) = 3.
        let p = CorrelationParams {
            pad_size: 1,
            kernel_size: 1,
            max_displacement: 1,
            stride1: 2,
            stride2: 1,
        };
        assert_eq!(p.output_size(5, 6).unwrap(), (3, 3));
        let no_pad = CorrelationParams { pad_size: 0, ..s };
        assert!(no_pad.output_size(8, 8).is_err());
        assert!(CorrelationParams {
            kernel_size: 2,
            ..s
        }
        .output_size(8, 8)
        .is_err());
        assert!(CorrelationParams { stride2: 0, ..s }
            .output_size(8, 8)
            .is_err());
        let a = Array4::<f32>::zeros((1, 2, 4, 4));
        let b = Array4::<f32>::zeros((1, 2, 4, 5));
        assert!(correlation(a.view(), b.view(), s).is_err());
    }

    // Generated by `tests/reference/make_vpsnet_fusion_fixtures.py --correlation`.
    const CASES: &[&Case] = &[
        &Case {
            name: "search",
            shape: [1, 5, 4, 6],
            params: CorrelationParams {
                pad_size: 2,
                kernel_size: 1,
                max_displacement: 2,
                stride1: 1,
                stride2: 1,
            },
            out_size: (4, 6),
            pixels: [(0, 0), (2, 3)],
            channel_sums: &[
                0.33830336,
                -0.2319657,
                0.535561,
                -0.13778134,
                0.016302712,
                0.112349436,
                -0.58209497,
                -0.18455137,
                -0.19487244,
                0.39824536,
                -0.32485634,
                -0.63802445,
                0.5020181,
                -0.014903737,
                0.22766541,
                -0.14822042,
                -1.4276627,
                0.43926758,
                -0.21888986,
                -0.18457057,
                0.43111315,
                -0.5649456,
                -0.67983663,
                -0.04921367,
                0.27950928,
            ],
            at_pixels: [
                &[
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    -0.0896988,
                    -0.015860116,
                    0.00029636623,
                    0.0,
                    0.0,
                    -0.0123691205,
                    -0.081304476,
                    -0.14137693,
                    0.0,
                    0.0,
                    0.104846194,
                    0.18245251,
                    0.06551677,
                ],
                &[
                    0.038709227,
                    0.09743814,
                    0.3833154,
                    -0.12376919,
                    -0.060753047,
                    -0.042060748,
                    0.11215027,
                    0.35195282,
                    0.1477647,
                    -0.17266104,
                    0.06547232,
                    0.1502372,
                    0.11038555,
                    -0.19921668,
                    -0.084138915,
                    0.10510101,
                    0.2630377,
                    0.15461116,
                    -0.056520533,
                    0.23278055,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                ],
            ],
        },
        &Case {
            name: "flownet_c",
            shape: [1, 3, 5, 7],
            params: CorrelationParams {
                pad_size: 4,
                kernel_size: 1,
                max_displacement: 4,
                stride1: 1,
                stride2: 2,
            },
            out_size: (5, 7),
            pixels: [(0, 6), (3, 2)],
            channel_sums: &[
                0.3470502,
                0.11142426,
                -1.3970845,
                0.2872203,
                -0.61130524,
                0.14647137,
                0.34002876,
                0.69866514,
                1.1077288,
                0.36603725,
                -0.90700066,
                0.27497014,
                -0.35877165,
                -0.7552316,
                -0.9426664,
                0.23886989,
                0.15833412,
                -1.8691097,
                -0.98189265,
                -0.06846368,
                0.16372518,
                0.73931056,
                0.15037428,
                -0.41778815,
                -0.41458118,
            ],
            at_pixels: [
                &[
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    -0.19173808,
                    0.026790416,
                    -0.079514764,
                    0.0,
                    0.0,
                    -0.0075299987,
                    0.2594525,
                    -0.14959212,
                    0.0,
                    0.0,
                    -0.2922941,
                    0.27566013,
                    0.21483506,
                    0.0,
                    0.0,
                ],
                &[
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    -0.18217291,
                    0.16672893,
                    0.10917314,
                    0.22308649,
                    0.0,
                    -0.06485284,
                    -0.10996864,
                    -0.20081286,
                    -0.32093552,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                ],
            ],
        },
        &Case {
            name: "stride1",
            shape: [1, 4, 5, 6],
            params: CorrelationParams {
                pad_size: 1,
                kernel_size: 1,
                max_displacement: 1,
                stride1: 2,
                stride2: 1,
            },
            out_size: (3, 3),
            pixels: [(0, 0), (2, 1)],
            channel_sums: &[
                0.18488544,
                -0.09313339,
                0.048197143,
                0.5690272,
                0.08748396,
                -0.007281184,
                0.30448768,
                -0.33131617,
                0.29003218,
            ],
            at_pixels: [
                &[
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.28631112,
                    -0.11609368,
                    0.0,
                    -0.28426498,
                    -0.13581899,
                ],
                &[
                    0.16465178,
                    -0.33581674,
                    -0.056322426,
                    0.14725015,
                    0.009819593,
                    0.10504961,
                    0.0,
                    0.0,
                    0.0,
                ],
            ],
        },
        &Case {
            name: "wide_pad",
            shape: [1, 2, 3, 4],
            params: CorrelationParams {
                pad_size: 3,
                kernel_size: 1,
                max_displacement: 2,
                stride1: 1,
                stride2: 1,
            },
            out_size: (5, 6),
            pixels: [(0, 0), (4, 5)],
            channel_sums: &[
                -0.6282084,
                0.015150595,
                0.02068822,
                0.12130214,
                0.6669444,
                -0.67118233,
                -0.65068644,
                0.29256034,
                1.3154337,
                0.31402564,
                0.26290348,
                -0.18685976,
                0.41448694,
                1.299587,
                1.5939723,
                0.39963943,
                0.2400344,
                0.9875025,
                0.28581643,
                0.7281141,
                0.31653506,
                0.18469065,
                -0.20119017,
                -0.5572766,
                -0.144743,
            ],
            at_pixels: [
                &[
                    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                ],
                &[
                    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                ],
            ],
        },
    ];
}
