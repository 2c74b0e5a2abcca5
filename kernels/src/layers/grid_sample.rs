//! `torch.nn.functional.grid_sample` with `mode="bilinear"` and `padding_mode="zeros"`, as
//! torch's vectorised CPU kernel computes it (`aten/src/ATen/native/cpu/GridSamplerKernel.cpp`),
//! in f32 and in its order of operations:
//!
//! - a grid coordinate `g` in `[-1, 1]` becomes a source position by `(g + 1)·(size - 1)/2`
//!   (`align_corners=True`) or `(g + 1)·size/2 - 0.5` (`align_corners=False`);
//! - the four neighbours `floor(x)`, `floor(x) + 1` (and likewise in y) are weighted
//!   `nw = (1 - dy)(1 - dx)`, `ne = (1 - dy)dx`, `sw = dy(1 - dx)`, `se = dy·dx`, a neighbour
//!   outside the input reads 0, and the sum is `nw·v + ne·v + sw·v + se·v` in that order.
//!
//! Users: YolactEdge's feature warping (`deform_op`) and Detectron2's mask pasting.

use ndarray::{Array4, ArrayView2, ArrayView4};
use rayon::prelude::*;

use super::{invalid, shape_err, Result};

const OP: &str = "grid_sample";

/// The source position of grid coordinate `g` on an axis of `size` samples.
#[inline]
pub fn unnormalize(g: f32, size: usize, align_corners: bool) -> f32 {
    if align_corners {
        (g + 1.0) * ((size as f32 - 1.0) / 2.0)
    } else {
        (g + 1.0) * (size as f32 / 2.0) - 0.5
    }
}

/// The bilinear sample of `plane` at source position `(y, x)`, zero outside.
#[inline]
pub fn sample(plane: ArrayView2<'_, f32>, y: f32, x: f32) -> f32 {
    let (h, w) = plane.dim();
    let (x_w, y_n) = (x.floor(), y.floor());
    let (dx, dy) = (x - x_w, y - y_n);
    let (e, s) = (1.0 - dx, 1.0 - dy);
    let (ix, iy) = (x_w as i64, y_n as i64);
    let at = |yy: i64, xx: i64| -> f32 {
        if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w {
            plane[[yy as usize, xx as usize]]
        } else {
            0.0
        }
    };
    at(iy, ix) * (s * e)
        + at(iy, ix + 1) * (s * dx)
        + at(iy + 1, ix) * (dy * e)
        + at(iy + 1, ix + 1) * (dy * dx)
}

/// `F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners)`: `x`
/// `[N, C, H, W]`, `grid` `[N, Ho, Wo, 2]` (x then y, normalised to `[-1, 1]`); returns
/// `[N, C, Ho, Wo]`. Channels run in parallel.
pub fn grid_sample(
    x: ArrayView4<'_, f32>,
    grid: ArrayView4<'_, f32>,
    align_corners: bool,
) -> Result<Array4<f32>> {
    let (n, c, h, w) = x.dim();
    let (gn, ho, wo, two) = grid.dim();
    if gn != n || two != 2 {
        return shape_err(
            OP,
            format!(
                "grid {:?} does not fit the input {:?}: it must be [N, Ho, Wo, 2]",
                grid.dim(),
                x.dim()
            ),
        );
    }
    if h == 0 || w == 0 {
        return invalid(OP, format!("the input has an empty plane {h}x{w}"));
    }
    // Source positions once per grid point, shared by the channels.
    let pos: Vec<(f32, f32)> = grid
        .outer_iter()
        .flat_map(|g| {
            g.outer_iter()
                .flat_map(|row| {
                    row.outer_iter()
                        .map(|p| {
                            (
                                unnormalize(p[1], h, align_corners),
                                unnormalize(p[0], w, align_corners),
                            )
                        })
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let plane = ho * wo;
    let mut out = vec![0f32; n * c * plane];
    out.par_chunks_mut(plane.max(1))
        .enumerate()
        .for_each(|(bk, o)| {
            let (b, k) = (bk / c, bk % c);
            let pos = &pos[b * plane..(b + 1) * plane];
            let src = x.slice(ndarray::s![b, k, .., ..]);
            for (v, &(y, xx)) in o.iter_mut().zip(pos) {
                *v = sample(src, y, xx);
            }
        });
    Array4::from_shape_vec((n, c, ho, wo), out).or_else(|e| invalid(OP, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    #[test]
    fn identity_grid_with_aligned_corners_and_zeros_outside() {
        let x = Array::from_shape_fn((1, 2, 3, 4), |(_, c, y, x)| (c * 100 + y * 10 + x) as f32);
        // The identity grid of align_corners=True: -1 + 2·i/(n - 1).
        let grid = Array::from_shape_fn((1, 3, 4, 2), |(_, y, x, k)| {
            if k == 0 {
                -1.0 + 2.0 * x as f32 / 3.0
            } else {
                -1.0 + y as f32
            }
        });
        let out = grid_sample(x.view(), grid.view(), true).unwrap();
        for (a, b) in out.iter().zip(x.iter()) {
            assert!((a - b).abs() < 1e-4, "{a} {b}");
        }
        // Half a pixel left of the first column: half of it, the rest reads zeros.
        let g = Array::from_shape_vec((1, 1, 1, 2), vec![-1.0 - 1.0 / 3.0, -1.0]).unwrap();
        let o = grid_sample(x.view(), g.view(), true).unwrap();
        assert!((o[[0, 1, 0, 0]] - 50.0).abs() < 1e-4);
        assert!(grid_sample(x.view(), g.slice(ndarray::s![.., .., .., ..1]), true).is_err());
    }
}
