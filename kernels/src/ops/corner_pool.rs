//! CornerNet's corner pooling (princeton-vl/CornerNet @ e5c39a31,
//! `models/py_utils/_cpools/src/*_pool.cpp`): a running maximum along one axis of a `[N, C,
//! H, W]` map, so that each position sees the strongest response in one direction.
//!
//! - [`CornerPool::Top`]: `out[h] = max(in[h], out[h + 1])` from the bottom row up, i.e. the
//!   maximum over the rows at or below `h`.
//! - [`CornerPool::Left`]: the maximum over the columns at or to the right of `x`.
//! - [`CornerPool::Bottom`]: the maximum over the rows at or above `h`.
//! - [`CornerPool::Right`]: the maximum over the columns at or to the left of `x`.
//!
//! `at::max_out` of two tensors is torch's elementwise `maximum`: a NaN wins, so a NaN spreads
//! along the scan from where it is. CornerNet's `tl_pool` pairs Top with Left, `br_pool`
//! Bottom with Right.

use ndarray::{Array4, ArrayView4};
use rayon::prelude::*;

use super::OpError;

/// The direction of a corner pool (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CornerPool {
    Top,
    Left,
    Bottom,
    Right,
}

impl CornerPool {
    /// Its code in `kernels/cuda/corner_pool.cu`.
    pub fn code(self) -> i32 {
        match self {
            CornerPool::Top => 0,
            CornerPool::Left => 1,
            CornerPool::Bottom => 2,
            CornerPool::Right => 3,
        }
    }
}

/// torch's `maximum`: NaN if either is NaN.
#[inline]
fn nan_max(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a < b {
        b
    } else {
        a
    }
}

/// The corner pool `pool` of `x` `[N, C, H, W]`.
pub fn corner_pool(x: ArrayView4<'_, f32>, pool: CornerPool) -> Result<Array4<f32>, OpError> {
    let (n, c, h, w) = x.dim();
    let plane = h
        .checked_mul(w)
        .ok_or_else(|| OpError::shape("corner_pool", format!("a {h}x{w} plane is too large")))?;
    let mut out = x.as_standard_layout().into_owned();
    if n * c * plane == 0 {
        return Ok(out);
    }
    let data = out
        .as_slice_mut()
        .ok_or_else(|| OpError::shape("corner_pool", "the output is not contiguous"))?;
    data.par_chunks_mut(plane).for_each(|p| match pool {
        // Row by row: each row is the maximum of itself and its neighbour row, which
        // vectorises across the columns.
        CornerPool::Top => {
            for y in (0..h.saturating_sub(1)).rev() {
                let (cur, next) = p[y * w..(y + 2) * w].split_at_mut(w);
                cur.iter_mut()
                    .zip(next.iter())
                    .for_each(|(a, b)| *a = nan_max(*a, *b));
            }
        }
        CornerPool::Bottom => {
            for y in 1..h {
                let (prev, cur) = p[(y - 1) * w..(y + 1) * w].split_at_mut(w);
                cur.iter_mut()
                    .zip(prev.iter())
                    .for_each(|(a, b)| *a = nan_max(*a, *b));
            }
        }
        CornerPool::Left => {
            for row in p.chunks_mut(w) {
                for x in (0..w.saturating_sub(1)).rev() {
                    row[x] = nan_max(row[x], row[x + 1]);
                }
            }
        }
        CornerPool::Right => {
            for row in p.chunks_mut(w) {
                for x in 1..w {
                    row[x] = nan_max(row[x], row[x - 1]);
                }
            }
        }
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn each_direction_takes_the_running_maximum() {
        let x =
            Array4::from_shape_vec((1, 1, 3, 3), vec![1., 5., 2., 4., 0., 3., 7., 1., 6.]).unwrap();
        let run = |p| {
            corner_pool(x.view(), p)
                .unwrap()
                .into_raw_vec_and_offset()
                .0
        };
        assert_eq!(
            run(CornerPool::Top),
            vec![7., 5., 6., 7., 1., 6., 7., 1., 6.]
        );
        assert_eq!(
            run(CornerPool::Bottom),
            vec![1., 5., 2., 4., 5., 3., 7., 5., 6.]
        );
        assert_eq!(
            run(CornerPool::Left),
            vec![5., 5., 2., 4., 3., 3., 7., 6., 6.]
        );
        assert_eq!(
            run(CornerPool::Right),
            vec![1., 5., 5., 4., 4., 4., 7., 7., 7.]
        );
    }

    #[test]
    fn nan_spreads_along_the_scan_and_empty_maps_pass() {
        let mut x = Array4::<f32>::zeros((1, 2, 4, 1));
        x[[0, 1, 2, 0]] = f32::NAN;
        let top = corner_pool(x.view(), CornerPool::Top).unwrap();
        assert!(top[[0, 1, 0, 0]].is_nan() && top[[0, 1, 2, 0]].is_nan());
        assert_eq!(top[[0, 1, 3, 0]], 0.0);
        assert!(top
            .index_axis(ndarray::Axis(1), 0)
            .iter()
            .all(|v| *v == 0.0));
        let empty = Array4::<f32>::zeros((1, 3, 0, 5));
        assert_eq!(
            corner_pool(empty.view(), CornerPool::Left).unwrap().dim(),
            (1, 3, 0, 5)
        );
    }
}
