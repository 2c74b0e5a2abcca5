//! CPU layers (convolution on a fast GEMM, linear, norms, activations, pooling, resize, tensor shape ops) and image pre-processing.
//!
//! # Conventions
//!
//! - **Layout.** The public API is PyTorch's: images and feature maps are `NCHW` `f32`,
//!   convolution weights are `[C_out, C_in / groups, kH, kW]` (transposed convolution:
//!   `[C_in, C_out / groups, kH, kW]`), linear weights are `[out, in]`. Weights from a torch
//!   `state_dict` therefore load without any re-ordering.
//! - **Internally** convolutions stay in `NCHW` for batch 1 (each output channel is a row of
//!   a GEMM `W[C_out, C_in·kH·kW] · col[C_in·kH·kW, H_out·W_out]`, so the GEMM writes the NCHW
//!   output directly and no layout conversion is ever paid). A 1x1 stride-1 convolution reads
//!   its input directly as the right-hand matrix (no im2col at all); other convolutions build
//!   `col` in tiles of output rows that fit in the cache, and the tiles run in parallel on
//!   rayon when there are enough of them (otherwise the GEMM itself is parallel). Depthwise
//!   convolutions run a direct per-plane kernel. See [`conv`].
//! - **`NHWC`.** The layers of converted TF.js and TFLite graphs take TF's layout and padding
//!   rules: [`conv_nhwc`] (convolution, depthwise, transposed, with `SAME`/`VALID`/explicit
//!   [`Padding`]), [`pool::max_pool2d_nhwc`] and [`pool::avg_pool2d_nhwc`], and
//!   [`resize::resize_nhwc`], which runs the same resampling kernel as the `NCHW` resize.
//!   Shape ops ([`shape`]) are layout-free and serve both.
//! - **GEMM.** [`gemm::sgemm`] is the single entry point. It runs the `gemm` crate (AVX-512
//!   kernel via its `x86-v4` feature, picked at run time; FMA/AVX2 or scalar elsewhere), which
//!   measured fastest here, and falls back to `matrixmultiply`. See `benches/layers.rs`.
//! - **Errors.** Every function checks shapes and parameters and returns [`LayerError`];
//!   nothing panics on shapes a user controls.
//! - Functions take `ndarray` views (any strides; non-standard layouts are copied once) and
//!   return owned arrays. [`tensor_to_array`] and [`array_to_tensor`] convert from and to
//!   [`Tensor`](crate::Tensor).

pub mod activation;
pub mod attention;
pub mod bf16;
pub mod conv;
pub mod conv_nhwc;
pub mod deform_conv;
pub mod few_rows;
pub mod gemm;
pub mod grid_sample;
pub mod linear;
pub mod norm;
pub mod packed_gemm;
pub mod pool;
pub mod preprocess;
pub mod resample;
pub mod resize;
pub mod shape;
mod winograd;

pub use activation::Activation;
pub use conv::{fold_batch_norm, Conv2d, Conv2dParams, ConvTranspose2d, ConvTranspose2dParams};
pub use conv_nhwc::{NhwcConv2d, NhwcConvGeom, Padding};
pub use deform_conv::DeformConv2d;
pub use linear::Linear;
pub use resize::ResizeMode;

use ndarray::{ArrayD, ArrayViewD};

use crate::tensor::{Element, Tensor, TensorError};

/// Errors of the CPU layers.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LayerError {
    /// An input's shape does not fit the layer (wrong rank, channel count, sizes).
    #[error("{op}: {msg}")]
    Shape { op: &'static str, msg: String },
    /// A parameter is out of range (zero stride, too much padding, unknown axis, ...).
    #[error("{op}: invalid argument: {msg}")]
    Invalid { op: &'static str, msg: String },
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// Result of the CPU layers.
pub type Result<T> = std::result::Result<T, LayerError>;

pub(crate) fn shape_err<T>(op: &'static str, msg: impl Into<String>) -> Result<T> {
    Err(LayerError::Shape {
        op,
        msg: msg.into(),
    })
}

pub(crate) fn invalid<T>(op: &'static str, msg: impl Into<String>) -> Result<T> {
    Err(LayerError::Invalid {
        op,
        msg: msg.into(),
    })
}

/// Product of `dims`, or an error when it overflows.
pub(crate) fn checked_numel(op: &'static str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| LayerError::Shape {
            op,
            msg: format!("shape {dims:?} overflows"),
        })
}

/// A per-thread scratch buffer, reused across calls.
pub(crate) type Scratch = std::cell::RefCell<Vec<f32>>;

/// Runs `f` with this thread's buffer in `key` (or a fresh one if it is already in use, which
/// happens when rayon runs a nested call on a thread that is waiting inside another). Each
/// layer keeps its own key, so that work stolen from another layer does not find it taken.
pub(crate) fn with_scratch<R>(
    key: &'static std::thread::LocalKey<Scratch>,
    f: impl FnOnce(&mut Vec<f32>) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => f(&mut v),
        Err(_) => f(&mut Vec::new()),
    })
}

/// Work (multiply-adds or element operations) below which a task of a parallel loop costs
/// more to hand to another thread than it saves (about 20 µs of one core).
pub(crate) const PARALLEL_TASK_WORK: usize = 1 << 16;

/// How many rows of `row_work` each a task of a parallel loop over rows should take at
/// least ([`PARALLEL_TASK_WORK`] in all), so that the small maps of mobile networks run in
/// a few tasks rather than one per row.
pub(crate) fn min_rows_per_task(row_work: usize) -> usize {
    let work = if crate::process::helped() {
        HELPED_TASK_WORK
    } else {
        PARALLEL_TASK_WORK
    };
    (work / row_work.max(1)).max(1)
}

/// [`PARALLEL_TASK_WORK`] inside helped work ([`crate::process::in_pool_helped`]), where the
/// other threads wait for tasks instead of sleeping: a task is then worth handing over from
/// about 5 µs of work (iris, facemesh and selfie at 2 threads: tasks of 16k operations
/// against 64k, and of 64k multiply-adds against 1M for the packed GEMM, took 20-40% off).
pub(crate) const HELPED_TASK_WORK: usize = 1 << 14;

/// A zero-filled `f32` buffer. Large buffers are filled by writes on all rayon threads:
/// fresh pages from `calloc`'s `mmap` would otherwise be mapped to the shared zero page on
/// the first read and copied on the first write, a second page fault with a TLB shoot-down
/// on every core (measured: a fifth of the time of a large transposed convolution).
pub(crate) fn zeroed(n: usize) -> Vec<f32> {
    use rayon::prelude::*;
    if n < (1 << 16) {
        return vec![0.0; n];
    }
    let mut v: Vec<f32> = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(1 << 14)
        .for_each(|c| {
            c.iter_mut().for_each(|x| {
                x.write(0.0);
            })
        });
    // SAFETY: the first `n` elements were initialised just above.
    unsafe { v.set_len(n) };
    v
}

/// A copy of a tensor's data as an owned `ndarray` array.
pub fn tensor_to_array<T: Element>(t: &Tensor) -> Result<ArrayD<T>> {
    Ok(t.view::<T>()?.to_owned())
}

/// A tensor holding `a`'s elements (row-major; copies only when `a` is not in standard layout).
pub fn array_to_tensor<T: Element>(a: ArrayD<T>) -> Result<Tensor> {
    let shape = a.shape().to_vec();
    let n = checked_numel("array_to_tensor", &shape)?;
    let data = if a.is_standard_layout() {
        // Owned + standard layout: the elements are contiguous from `offset`.
        let (v, offset) = a.into_raw_vec_and_offset();
        let off = offset.unwrap_or(0);
        if off == 0 && v.len() == n {
            v
        } else {
            v.get(off..off + n).map(<[T]>::to_vec).unwrap_or_default()
        }
    } else {
        a.iter().copied().collect()
    };
    Ok(Tensor::from_vec(&shape, data)?)
}

/// A view of an f32 tensor with its rank checked.
pub fn tensor_view<'a, T: Element>(
    t: &'a Tensor,
    op: &'static str,
    rank: usize,
) -> Result<ArrayViewD<'a, T>> {
    if t.ndim() != rank {
        return shape_err(
            op,
            format!("expected a rank-{rank} tensor, got {}", t.describe()),
        );
    }
    Ok(t.view::<T>()?)
}

/// Converts a dynamic-rank view to a fixed rank, with an error naming `op` on mismatch.
pub(crate) fn fix_rank<'a, T, D: ndarray::Dimension>(
    op: &'static str,
    a: ArrayViewD<'a, T>,
) -> Result<ndarray::ArrayView<'a, T, D>> {
    let shape = a.shape().to_vec();
    a.into_dimensionality::<D>().or_else(|_| {
        shape_err(
            op,
            format!("expected rank {:?}, got shape {shape:?}", D::NDIM),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_round_trip() {
        let t = Tensor::from_vec(&[2, 3], (0..6).map(|v| v as f32).collect()).unwrap();
        let a = tensor_to_array::<f32>(&t).unwrap();
        let t2 = array_to_tensor(a.t().to_owned().into_dyn()).unwrap();
        assert_eq!(t2.shape(), &[3, 2]);
        assert_eq!(t2.as_slice::<f32>().unwrap(), &[0., 3., 1., 4., 2., 5.]);
        assert!(tensor_view::<f32>(&t, "x", 3).is_err());
        assert!(tensor_view::<u8>(&t, "x", 2).is_err());
    }
}
