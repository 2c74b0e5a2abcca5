//! GPU entry points of the hot ops, with the signatures and semantics of the CPU ops.
//!
//! Each function validates its input with the CPU op's own checks (same errors), prepares
//! flat buffers, launches the kernels of `kernels/cuda/` on an [`Executor`] and returns host
//! arrays. Results equal the CPU op's: bit-identical where the kernel performs the CPU
//! reference's `f32` operations in the same order (pre-processing, RoIAlign, NMS indices, mask
//! pasting, heatmap suppression), within a few ulp where a math function differs between
//! CUDA's and the C library's implementation (`expf` in box decoding and YOLACT's sigmoid).
//!
//! What runs on the host: NMS's sort by score and its greedy pass over the IoU bitmask (as
//! torchvision's CUDA NMS does), the coordinate offsets of batched NMS, the integer paste
//! geometry of each mask, and the top-k after heatmap suppression.

use ndarray::{Array2, Array3, Array4, ArrayView2, ArrayView3, ArrayView4};

use super::{
    Arg, CudaError, Executor, Launch, K_ATTENTION_SOFTMAX, K_BOX_DECODE, K_HEATMAP_CANDIDATES,
    K_HEATMAP_NMS, K_LAYER_NORM, K_NMS_MASK, K_PASTE_MASKS, K_PREPROCESS, K_ROI_ALIGN,
    K_YOLACT_ASSEMBLE,
};
use crate::layers::attention::LayerNorm;
use crate::layers::preprocess::{Preprocessed, RcnnTransform};
use crate::layers::LayerError;
use crate::ops::heatmap::Peak;
use crate::ops::nms::BATCHED_NMS_TRICK_MAX_NUMEL;
use crate::ops::roi_align::RoiAlignParams;
use crate::ops::{BoxCoder, OpError};

/// Threads per block of the elementwise kernels (`VP_THREADS` in `common.cuh`).
const THREADS: u32 = 256;
/// Boxes per block of the NMS mask kernel (`VP_NMS_BLOCK` in `nms.cu`).
const NMS_BLOCK: usize = 64;
/// Most boxes one NMS call accepts: its bitmask takes `n * ceil(n / 64)` 64-bit words
/// (about 1 GiB at this size).
pub const MAX_NMS_BOXES: usize = 1 << 17;

fn to_i32(op: &'static str, what: &str, v: usize) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| {
        CudaError::invalid(
            op,
            format!("{what} = {v} exceeds the kernel's 32-bit range"),
        )
    })
}

fn checked_len(op: &'static str, dims: &[usize]) -> Result<usize, CudaError> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= i64::MAX as usize / 8)
        .ok_or_else(|| CudaError::invalid(op, format!("shape {dims:?} is too large")))
}

/// A zero-filled output buffer (the [`Arg`] contract), zeroed in parallel: outputs reach
/// hundreds of MB (100 pasted 800x1216 masks: 389 MB), where a serial fill took longer than
/// the device's whole work and transfer.
fn zeroed(len: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let mut v: Vec<f32> = Vec::with_capacity(len);
    v.spare_capacity_mut()
        .par_chunks_mut(1 << 20)
        .for_each(|c| c.fill(std::mem::MaybeUninit::new(0.0)));
    // SAFETY: every one of the `len` values was written just above.
    unsafe { v.set_len(len) };
    v
}

// ---------------------------------------------------------------------------------------
// Pre-processing

/// `u8` `H x W x 3` RGB image → `[3, ph, pw]` `f32`: `(v / 255 - mean) / std`, bilinear
/// resize to `(oh, ow)` (align_corners=False), zero padding at the bottom/right to multiples
/// of `divisor`. The GPU version of the fused steps of
/// [`RcnnTransform::apply`](crate::layers::preprocess::RcnnTransform::apply).
pub fn resize_normalize_pad<E: Executor>(
    ex: &mut E,
    img: ArrayView3<u8>,
    size: (usize, usize),
    mean: [f32; 3],
    std: [f32; 3],
    divisor: usize,
) -> Result<Array3<f32>, CudaError> {
    const OP: &str = "preprocess";
    let layer = |msg: String| CudaError::Layer(LayerError::Shape { op: OP, msg });
    let (h, w, c) = img.dim();
    if c != 3 {
        return Err(layer(format!(
            "expected an HxWx3 RGB image, got {:?}",
            img.shape()
        )));
    }
    if h == 0 || w == 0 {
        return Err(layer("empty image".into()));
    }
    if std.iter().any(|&s| s == 0.0 || !s.is_finite()) || mean.iter().any(|m| !m.is_finite()) {
        return Err(CudaError::Layer(LayerError::Invalid {
            op: OP,
            msg: format!("bad mean {mean:?} or std {std:?}"),
        }));
    }
    if divisor == 0 {
        return Err(CudaError::Layer(LayerError::Invalid {
            op: OP,
            msg: "size_divisible must be positive".into(),
        }));
    }
    let (oh, ow) = size;
    if oh == 0 || ow == 0 {
        return Err(layer(format!("output size {size:?} must be positive")));
    }
    let ph = oh.div_ceil(divisor).saturating_mul(divisor);
    let pw = ow.div_ceil(divisor).saturating_mul(divisor);
    let total = checked_len(OP, &[3, ph, pw])?;
    to_i32(OP, "3 * width", w.saturating_mul(3))?;
    let (hi, wi, ohi, owi, phi, pwi) = (
        to_i32(OP, "height", h)?,
        to_i32(OP, "width", w)?,
        to_i32(OP, "output height", oh)?,
        to_i32(OP, "output width", ow)?,
        to_i32(OP, "padded height", ph)?,
        to_i32(OP, "padded width", pw)?,
    );
    let img = img.as_standard_layout();
    let src = img
        .as_slice()
        .ok_or_else(|| CudaError::invalid(OP, "image not contiguous"))?;
    let mut out = zeroed(total);
    ex.launch(
        &K_PREPROCESS,
        Launch::linear(total as u64, THREADS),
        &mut [
            Arg::InU8(src),
            Arg::I32(hi),
            Arg::I32(wi),
            Arg::I32(ohi),
            Arg::I32(owi),
            Arg::I32(phi),
            Arg::I32(pwi),
            Arg::F32(mean[0]),
            Arg::F32(mean[1]),
            Arg::F32(mean[2]),
            Arg::F32(std[0]),
            Arg::F32(std[1]),
            Arg::F32(std[2]),
            Arg::OutF32(&mut out),
        ],
    )?;
    Array3::from_shape_vec((3, ph, pw), out).map_err(|e| CudaError::invalid(OP, e.to_string()))
}

/// GPU [`RcnnTransform::apply`]: normalise, resize to the transform's size, pad.
pub fn preprocess<E: Executor>(
    ex: &mut E,
    t: &RcnnTransform,
    img: ArrayView3<u8>,
) -> Result<Preprocessed, CudaError> {
    let (h, w, c) = img.dim();
    if c != 3 {
        return Err(LayerError::Shape {
            op: "preprocess",
            msg: format!("expected an HxWx3 RGB image, got {:?}", img.shape()),
        }
        .into());
    }
    if h == 0 || w == 0 {
        return Err(LayerError::Shape {
            op: "preprocess",
            msg: "empty image".into(),
        }
        .into());
    }
    let size = t.resized_size(h, w)?;
    let out = resize_normalize_pad(ex, img, size, t.mean, t.std, t.size_divisible)?;
    let (_, ph, pw) = out.dim();
    let image = out
        .into_shape_with_order((1, 3, ph, pw))
        .map_err(|e| CudaError::invalid("preprocess", e.to_string()))?;
    Ok(Preprocessed {
        image,
        image_size: size,
        original_size: (h, w),
    })
}

/// GPU [`to_chw_normalized`](crate::layers::preprocess::to_chw_normalized).
pub fn to_chw_normalized<E: Executor>(
    ex: &mut E,
    img: ArrayView3<u8>,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<Array3<f32>, CudaError> {
    let (h, w, _) = img.dim();
    resize_normalize_pad(ex, img, (h.max(1), w.max(1)), mean, std, 1)
}

// ---------------------------------------------------------------------------------------
// RoIAlign

/// GPU [`roi_align`](crate::ops::roi_align): `input` `[N, C, H, W]`, RoIs
/// `[batch, x1, y1, x2, y2]`; output `[K, C, pooled_height, pooled_width]`.
pub fn roi_align<E: Executor>(
    ex: &mut E,
    input: ArrayView4<f32>,
    rois: &[[f32; 5]],
    p: &RoiAlignParams,
) -> Result<Array4<f32>, CudaError> {
    const OP: &str = "roi_align";
    crate::ops::roi_align::check_params(p)?;
    if p.plus_one_end {
        // The kernel (roi_align.cu) has torchvision's conventions only.
        return Err(CudaError::invalid(
            OP,
            "mmdet's plus_one_end convention has no GPU kernel; run this RoIAlign on the CPU",
        ));
    }
    let (n, c, h, w) = input.dim();
    if !rois.is_empty() && (h == 0 || w == 0 || n == 0) {
        return Err(OpError::Shape {
            op: OP,
            detail: format!(
                "input {:?} has an empty spatial or batch dimension",
                input.shape()
            ),
        }
        .into());
    }
    // The CPU op's per-RoI checks: batch index in range, bounded adaptive grid.
    for (k, r) in rois.iter().enumerate() {
        crate::ops::roi_align::roi_geometry(k, r, n, p)?;
    }
    let (ph, pw) = (p.pooled_height, p.pooled_width);
    let total = checked_len(OP, &[rois.len(), c, ph, pw])?;
    if total == 0 {
        return Ok(Array4::zeros((rois.len(), c, ph, pw)));
    }
    checked_len(OP, &[n, c, h, w])?;
    let args_i32 = [
        to_i32(OP, "number of RoIs", rois.len())?,
        to_i32(OP, "channels", c)?,
        to_i32(OP, "height", h)?,
        to_i32(OP, "width", w)?,
        to_i32(OP, "pooled height", ph)?,
        to_i32(OP, "pooled width", pw)?,
    ];
    let input = input.as_standard_layout();
    let data = input
        .as_slice()
        .ok_or_else(|| CudaError::invalid(OP, "input not contiguous"))?;
    let flat_rois: Vec<f32> = rois.iter().flatten().copied().collect();
    let mut out = zeroed(total);
    ex.launch(
        &K_ROI_ALIGN,
        Launch::linear(total as u64, THREADS),
        &mut [
            Arg::InF32(data),
            Arg::InF32(&flat_rois),
            Arg::I32(args_i32[0]),
            Arg::I32(args_i32[1]),
            Arg::I32(args_i32[2]),
            Arg::I32(args_i32[3]),
            Arg::I32(args_i32[4]),
            Arg::I32(args_i32[5]),
            Arg::F32(p.spatial_scale),
            Arg::I32(p.sampling_ratio),
            Arg::I32(p.aligned as i32),
            Arg::OutF32(&mut out),
        ],
    )?;
    Array4::from_shape_vec((rois.len(), c, ph, pw), out)
        .map_err(|e| CudaError::invalid(OP, e.to_string()))
}

// ---------------------------------------------------------------------------------------
// NMS

/// Greedy NMS over boxes already in visiting order, through the bitmask kernel; `classes`
/// (same order) keeps boxes of different classes from suppressing each other. Returns
/// positions in the given order.
fn nms_sorted<E: Executor>(
    ex: &mut E,
    sorted: &[f32],
    classes: Option<&[i64]>,
    thr: f32,
) -> Result<Vec<usize>, CudaError> {
    let n = sorted.len() / 4;
    if n == 0 {
        return Ok(Vec::new());
    }
    if n > MAX_NMS_BOXES {
        return Err(CudaError::invalid(
            "nms",
            format!("{n} boxes: the GPU NMS takes at most {MAX_NMS_BOXES}"),
        ));
    }
    let col_blocks = n.div_ceil(NMS_BLOCK);
    let mut mask = vec![0u64; n * col_blocks];
    let no_classes = [0i64; 0];
    ex.launch(
        &K_NMS_MASK,
        Launch {
            grid: (col_blocks as u32, col_blocks as u32, 1),
            block: (NMS_BLOCK as u32, 1, 1),
        },
        &mut [
            Arg::I32(n as i32),
            Arg::InF32(sorted),
            Arg::InI64(classes.unwrap_or(&no_classes)),
            Arg::I32(classes.is_some() as i32),
            Arg::F32(thr),
            Arg::OutU64(&mut mask),
        ],
    )?;
    // The greedy pass (on the host, as torchvision's CUDA nms does).
    let mut removed = vec![0u64; col_blocks];
    let mut keep = Vec::new();
    for i in 0..n {
        let (block, bit) = (i / NMS_BLOCK, i % NMS_BLOCK);
        if removed[block] & (1u64 << bit) != 0 {
            continue;
        }
        keep.push(i);
        let row = &mask[i * col_blocks..(i + 1) * col_blocks];
        for (r, m) in removed.iter_mut().zip(row).skip(block) {
            *r |= m;
        }
    }
    Ok(keep)
}

fn nms_with_classes<E: Executor>(
    ex: &mut E,
    boxes: &[[f32; 4]],
    scores: &[f32],
    classes: Option<&[i64]>,
    iou_threshold: f64,
) -> Result<Vec<usize>, CudaError> {
    let order = crate::ops::argsort_desc(scores);
    let sorted: Vec<f32> = order.iter().flat_map(|&i| boxes[i]).collect();
    let sorted_classes: Option<Vec<i64>> = classes.map(|c| order.iter().map(|&i| c[i]).collect());
    let thr = crate::ops::f32_round_down(iou_threshold);
    let keep = nms_sorted(ex, &sorted, sorted_classes.as_deref(), thr)?;
    Ok(keep.into_iter().map(|k| order[k]).collect())
}

/// GPU [`nms`](crate::ops::nms()): indices of the kept boxes in decreasing score order,
/// exactly the CPU op's.
pub fn nms<E: Executor>(
    ex: &mut E,
    boxes: &[[f32; 4]],
    scores: &[f32],
    iou_threshold: f64,
) -> Result<Vec<usize>, CudaError> {
    crate::ops::check_same_len("nms", "boxes", boxes.len(), "scores", scores.len())?;
    nms_with_classes(ex, boxes, scores, None, iou_threshold)
}

/// GPU [`batched_nms`](crate::ops::batched_nms): like the CPU op, the coordinate trick up to
/// 1000 boxes (offsets computed on the host, in the same `f32` operations), per-class NMS
/// above (here: one launch in which boxes of different classes never suppress each other,
/// which keeps the same boxes in the same order).
pub fn batched_nms<E: Executor>(
    ex: &mut E,
    boxes: &[[f32; 4]],
    scores: &[f32],
    idxs: &[i64],
    iou_threshold: f64,
) -> Result<Vec<usize>, CudaError> {
    crate::ops::check_same_len("batched_nms", "boxes", boxes.len(), "scores", scores.len())?;
    crate::ops::check_same_len("batched_nms", "boxes", boxes.len(), "idxs", idxs.len())?;
    if boxes.is_empty() {
        return Ok(Vec::new());
    }
    if boxes.len() * 4 > BATCHED_NMS_TRICK_MAX_NUMEL {
        return nms_with_classes(ex, boxes, scores, Some(idxs), iou_threshold);
    }
    // torchvision's _batched_nms_coordinate_trick: boxes.max() (NaN if any is NaN), then
    // offsets idx * (max + 1).
    let mut max_coordinate = f32::NEG_INFINITY;
    for &v in boxes.iter().flatten() {
        if v.is_nan() {
            max_coordinate = f32::NAN;
            break;
        } else if v > max_coordinate {
            max_coordinate = v;
        }
    }
    let step = max_coordinate + 1.0;
    let shifted: Vec<[f32; 4]> = boxes
        .iter()
        .zip(idxs)
        .map(|(b, &c)| {
            let off = (c as f32) * step;
            [b[0] + off, b[1] + off, b[2] + off, b[3] + off]
        })
        .collect();
    nms_with_classes(ex, &shifted, scores, None, iou_threshold)
}

// ---------------------------------------------------------------------------------------
// Box decoding

/// GPU [`BoxCoder::decode`]: `rel_codes` `[N, 4·K]` against `boxes` `[N]`; output `[N, K, 4]`.
pub fn box_decode<E: Executor>(
    ex: &mut E,
    coder: &BoxCoder,
    rel_codes: ArrayView2<f32>,
    boxes: &[[f32; 4]],
) -> Result<Array3<f32>, CudaError> {
    const OP: &str = "BoxCoder::decode";
    let (n, k4) = rel_codes.dim();
    if n != boxes.len() {
        return Err(OpError::Shape {
            op: OP,
            detail: format!("rel_codes has {n} rows but there are {} boxes", boxes.len()),
        }
        .into());
    }
    if k4 % 4 != 0 {
        return Err(OpError::Shape {
            op: OP,
            detail: format!("rel_codes has {k4} columns, not a multiple of 4"),
        }
        .into());
    }
    let k = k4 / 4;
    let total = checked_len(OP, &[n, k, 4])?;
    if total == 0 {
        return Ok(Array3::zeros((n, k, 4)));
    }
    let (ni, ki) = (to_i32(OP, "rows", n)?, to_i32(OP, "codes per row", k)?);
    let rel = rel_codes.as_standard_layout();
    let rel = rel
        .as_slice()
        .ok_or_else(|| CudaError::invalid(OP, "rel_codes not contiguous"))?;
    let flat_boxes: Vec<f32> = boxes.iter().flatten().copied().collect();
    let [wx, wy, ww, wh] = coder.weights;
    let mut out = zeroed(total);
    ex.launch(
        &K_BOX_DECODE,
        Launch::linear((n * k) as u64, THREADS),
        &mut [
            Arg::InF32(rel),
            Arg::InF32(&flat_boxes),
            Arg::I32(ni),
            Arg::I32(ki),
            Arg::F32(wx),
            Arg::F32(wy),
            Arg::F32(ww),
            Arg::F32(wh),
            Arg::F32(coder.bbox_xform_clip),
            Arg::OutF32(&mut out),
        ],
    )?;
    Array3::from_shape_vec((n, k, 4), out).map_err(|e| CudaError::invalid(OP, e.to_string()))
}

// ---------------------------------------------------------------------------------------
// Mask pasting

/// `[rh, rw, oy, ox, y0, y1, x0, x1]` of one mask (see `paste_masks.cu`), as
/// `kernels::ops::paste_masks` computes it; an empty region for NaN/infinite or off-image
/// boxes.
fn paste_geometry(b: &[f32; 4], scale: f32, im_h: usize, im_w: usize) -> [i64; 8] {
    const EMPTY: [i64; 8] = [1, 1, 0, 0, 0, 0, 0, 0];
    // expand_boxes, in f32.
    let w_half = (b[2] - b[0]) * 0.5 * scale;
    let h_half = (b[3] - b[1]) * 0.5 * scale;
    let x_c = (b[2] + b[0]) * 0.5;
    let y_c = (b[3] + b[1]) * 0.5;
    let e = [x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half];
    if !e.iter().all(|v| v.is_finite()) {
        return EMPTY;
    }
    // `.to(torch.int64)`: truncation toward zero (saturating).
    let [bx0, by0, bx1, by1] = [e[0] as i64, e[1] as i64, e[2] as i64, e[3] as i64];
    let w = bx1.saturating_sub(bx0).saturating_add(1).max(1);
    let h = by1.saturating_sub(by0).saturating_add(1).max(1);
    let x0 = bx0.max(0);
    let x1 = bx1.saturating_add(1).min(im_w as i64);
    let y0 = by0.max(0);
    let y1 = by1.saturating_add(1).min(im_h as i64);
    if x1 <= x0 || y1 <= y0 {
        return EMPTY;
    }
    [h, w, by0, bx0, y0, y1, x0, x1]
}

/// GPU [`paste_masks_in_image`](crate::ops::paste_masks_in_image): `masks` `[N, M, M]`,
/// boxes in image pixels, `img_shape` `(H, W)`; output `[N, H, W]` soft masks.
pub fn paste_masks_in_image<E: Executor>(
    ex: &mut E,
    masks: ArrayView3<f32>,
    boxes: &[[f32; 4]],
    img_shape: (usize, usize),
    padding: usize,
) -> Result<Array3<f32>, CudaError> {
    const OP: &str = "paste_masks_in_image";
    let (n, mh, mw) = masks.dim();
    if n != boxes.len() {
        return Err(OpError::Shape {
            op: OP,
            detail: format!("{n} masks but {} boxes", boxes.len()),
        }
        .into());
    }
    if mh == 0 || mw == 0 {
        return Err(OpError::Shape {
            op: OP,
            detail: format!("masks {:?} have an empty side", masks.shape()),
        }
        .into());
    }
    let (im_h, im_w) = img_shape;
    let total = checked_len(OP, &[n, im_h, im_w])?;
    if total == 0 {
        return Ok(Array3::zeros((n, im_h, im_w)));
    }
    let padded = |m: usize| padding.checked_mul(2).and_then(|p| p.checked_add(m));
    let (Some(pmh), Some(pmw)) = (padded(mh), padded(mw)) else {
        return Err(CudaError::invalid(
            OP,
            format!("padding {padding} is too large"),
        ));
    };
    let ints = [
        to_i32(OP, "masks", n)?,
        to_i32(OP, "mask height", mh)?,
        to_i32(OP, "mask width", mw)?,
        to_i32(OP, "padding", padding)?,
        to_i32(OP, "image height", im_h)?,
        to_i32(OP, "image width", im_w)?,
    ];
    to_i32(OP, "padded mask height", pmh)?;
    to_i32(OP, "padded mask width", pmw)?;
    checked_len(OP, &[n, mh, mw])?;
    // expand_masks' scale: (M + 2p) / M in f64, used as f32.
    let scale = (pmw as f64 / mw as f64) as f32;
    let geom: Vec<i64> = boxes
        .iter()
        .flat_map(|b| paste_geometry(b, scale, im_h, im_w))
        .collect();
    let masks = masks.as_standard_layout();
    let data = masks
        .as_slice()
        .ok_or_else(|| CudaError::invalid(OP, "masks not contiguous"))?;
    let mut out = zeroed(total);
    ex.launch(
        &K_PASTE_MASKS,
        Launch::linear(total as u64, THREADS),
        &mut [
            Arg::InF32(data),
            Arg::InI64(&geom),
            Arg::I32(ints[0]),
            Arg::I32(ints[1]),
            Arg::I32(ints[2]),
            Arg::I32(ints[3]),
            Arg::I32(ints[4]),
            Arg::I32(ints[5]),
            Arg::OutF32(&mut out),
        ],
    )?;
    Array3::from_shape_vec((n, im_h, im_w), out).map_err(|e| CudaError::invalid(OP, e.to_string()))
}

// ---------------------------------------------------------------------------------------
// YOLACT

/// GPU [`assemble_masks`](crate::ops::assemble_masks): prototypes `[h, w, k]`, coefficients
/// `[n, k]`, relative boxes `[n]`; output `[n, h, w]` = `sigmoid(P · Cᵀ)`, cropped if `crop`.
pub fn assemble_masks<E: Executor>(
    ex: &mut E,
    proto: ArrayView3<f32>,
    coeffs: ArrayView2<f32>,
    boxes: &[[f32; 4]],
    crop: bool,
) -> Result<Array3<f32>, CudaError> {
    const OP: &str = "yolact";
    let (h, w, k) = proto.dim();
    let (n, kc) = coeffs.dim();
    if k != kc {
        return Err(OpError::Shape {
            op: OP,
            detail: format!("prototypes have {k} channels but coefficients have {kc}"),
        }
        .into());
    }
    crate::ops::check_same_len(OP, "coefficients", n, "boxes", boxes.len())?;
    let total = checked_len(OP, &[n, h, w])?;
    if total == 0 {
        return Ok(Array3::zeros((n, h, w)));
    }
    checked_len(OP, &[h, w, k])?;
    let ints = [
        to_i32(OP, "masks", n)?,
        to_i32(OP, "height", h)?,
        to_i32(OP, "width", w)?,
        to_i32(OP, "prototypes", k)?,
    ];
    let proto = proto.as_standard_layout();
    let coeffs = coeffs.as_standard_layout();
    let p = proto
        .as_slice()
        .ok_or_else(|| CudaError::invalid(OP, "prototypes not contiguous"))?;
    let c = coeffs
        .as_slice()
        .ok_or_else(|| CudaError::invalid(OP, "coefficients not contiguous"))?;
    let flat_boxes: Vec<f32> = boxes.iter().flatten().copied().collect();
    let mut out = zeroed(total);
    let pixel_blocks = ((h * w) as u64)
        .div_ceil(THREADS as u64)
        .clamp(1, super::MAX_LINEAR_BLOCKS);
    ex.launch(
        &K_YOLACT_ASSEMBLE,
        Launch {
            grid: (pixel_blocks as u32, n.min(65535) as u32, 1),
            block: (THREADS, 1, 1),
        },
        &mut [
            Arg::InF32(p),
            Arg::InF32(c),
            Arg::InF32(&flat_boxes),
            Arg::I32(ints[0]),
            Arg::I32(ints[1]),
            Arg::I32(ints[2]),
            Arg::I32(ints[3]),
            Arg::I32(crop as i32),
            Arg::OutF32(&mut out),
        ],
    )?;
    Array3::from_shape_vec((n, h, w), out).map_err(|e| CudaError::invalid(OP, e.to_string()))
}

// ---------------------------------------------------------------------------------------
// Heatmap peaks

/// GPU [`heatmap_nms`](crate::ops::heatmap_nms): keeps each value that is the maximum of its
/// `kernel x kernel` window (odd `kernel`), others become `heat * 0`.
pub fn heatmap_nms<E: Executor>(
    ex: &mut E,
    heat: ArrayView3<f32>,
    kernel: usize,
) -> Result<Array3<f32>, CudaError> {
    const OP: &str = "heatmap_nms";
    if kernel == 0 || kernel.is_multiple_of(2) {
        return Err(OpError::Invalid {
            op: OP,
            detail: format!("kernel must be odd and positive, got {kernel}"),
        }
        .into());
    }
    let (c, h, w) = heat.dim();
    let total = checked_len(OP, &[c, h, w])?;
    if total == 0 {
        return Ok(Array3::zeros((c, h, w)));
    }
    let ints = [
        to_i32(OP, "classes", c)?,
        to_i32(OP, "height", h)?,
        to_i32(OP, "width", w)?,
        to_i32(OP, "kernel radius", kernel / 2)?,
    ];
    let heat = heat.as_standard_layout();
    let data = heat
        .as_slice()
        .ok_or_else(|| CudaError::invalid(OP, "heatmap not contiguous"))?;
    let mut out = zeroed(total);
    ex.launch(
        &K_HEATMAP_NMS,
        Launch::linear(total as u64, THREADS),
        &mut [
            Arg::InF32(data),
            Arg::I32(ints[0]),
            Arg::I32(ints[1]),
            Arg::I32(ints[2]),
            Arg::I32(ints[3]),
            Arg::OutF32(&mut out),
        ],
    )?;
    Array3::from_shape_vec((c, h, w), out).map_err(|e| CudaError::invalid(OP, e.to_string()))
}

/// GPU [`extract_peaks`](crate::ops::extract_peaks): 3x3 suppression on the device, then
/// CenterNet's top-k ([`centernet_topk`](crate::ops::centernet_topk)) on the host.
pub fn extract_peaks<E: Executor>(
    ex: &mut E,
    heat: ArrayView3<f32>,
    k: usize,
) -> Result<Vec<Peak>, CudaError> {
    let (_, h, w) = heat.dim();
    if k > h.saturating_mul(w) {
        // The CPU op's error, before any device work.
        return Ok(crate::ops::centernet_topk(heat, k)?);
    }
    let suppressed = heatmap_nms(ex, heat, 3)?;
    Ok(crate::ops::centernet_topk(suppressed.view(), k)?)
}

/// Every value of a (suppressed) heatmap `[C, H, W]` that is `>= threshold` (or NaN), as
/// peaks in decreasing score order (NaN first, ties by ascending flat index). The device
/// compacts the candidates with an atomic counter; the host sorts them.
pub fn peak_candidates<E: Executor>(
    ex: &mut E,
    heat: ArrayView3<f32>,
    threshold: f32,
) -> Result<Vec<Peak>, CudaError> {
    const OP: &str = "peak_candidates";
    let (c, h, w) = heat.dim();
    let total = checked_len(OP, &[c, h, w])?;
    if total == 0 {
        return Ok(Vec::new());
    }
    let cap = to_i32(OP, "heatmap size", total)?;
    let heat = heat.as_standard_layout();
    let data = heat
        .as_slice()
        .ok_or_else(|| CudaError::invalid(OP, "heatmap not contiguous"))?;
    let mut count = [0i32; 1];
    let mut idx = vec![0i64; total];
    ex.launch(
        &K_HEATMAP_CANDIDATES,
        Launch::linear(total as u64, THREADS),
        &mut [
            Arg::InF32(data),
            Arg::I64(total as i64),
            Arg::F32(threshold),
            Arg::OutI32(&mut count),
            Arg::OutI64(&mut idx),
            Arg::I32(cap),
        ],
    )?;
    let found = usize::try_from(count[0]).unwrap_or(0).min(total);
    let mut flat: Vec<usize> = idx[..found]
        .iter()
        .filter_map(|&i| usize::try_from(i).ok())
        .filter(|&i| i < total)
        .collect();
    flat.sort_unstable_by(|&a, &b| crate::ops::desc_cmp(data[a], data[b]).then(a.cmp(&b)));
    let plane = h * w;
    Ok(flat
        .into_iter()
        .map(|j| {
            let index = j % plane;
            Peak {
                score: data[j],
                class: j / plane,
                index,
                y: index / w,
                x: index % w,
            }
        })
        .collect())
}

// ---------------------------------------------------------------------------------------
// Convolution

/// The activation code of `bias_activation` in `conv.cu`.
fn activation_code(a: crate::layers::Activation) -> (i32, f32) {
    use crate::layers::Activation as A;
    match a {
        A::Identity => (0, 0.0),
        A::Relu => (1, 0.0),
        A::Relu6 => (2, 0.0),
        A::LeakyRelu(slope) => (3, slope),
        A::Sigmoid => (4, 0.0),
        A::Tanh => (5, 0.0),
        A::Silu => (6, 0.0),
        A::HardSwish => (7, 0.0),
        A::HardSigmoid => (8, 0.0),
    }
}

/// The geometry arguments of the im2col kernels (`conv.cu`, `deform_conv.cu`): kernel,
/// stride, padding and dilation (each height, then width), then the output's height and
/// width.
fn im2col_geometry(
    op: &'static str,
    (kh, kw): (usize, usize),
    p: crate::layers::Conv2dParams,
    (oh, ow): (usize, usize),
) -> Result<[Arg<'static>; 10], CudaError> {
    let i = |what: &str, v: usize| to_i32(op, what, v).map(Arg::I32);
    Ok([
        i("kernel", kh)?,
        i("kernel", kw)?,
        i("stride", p.stride.0)?,
        i("stride", p.stride.1)?,
        i("padding", p.padding.0)?,
        i("padding", p.padding.1)?,
        i("dilation", p.dilation.0)?,
        i("dilation", p.dilation.1)?,
        i("output height", oh)?,
        i("output width", ow)?,
    ])
}

/// GPU [`Conv2d::forward`](crate::layers::Conv2d::forward) on `[N, C_in, H, W]`: per image and
/// group, `conv_im2col` (skipped for a plain 1x1 convolution) and an SGEMM with the weight
/// ([`Executor::sgemm`]: cuBLAS on a device), then `bias_activation` over the output.
pub fn conv2d<E: Executor>(
    exec: &mut E,
    conv: &crate::layers::Conv2d,
    x: ArrayView4<'_, f32>,
) -> Result<Array4<f32>, CudaError> {
    const OP: &str = "conv2d";
    let (n, c, h, w) = x.dim();
    if c != conv.in_channels() {
        return Err(CudaError::invalid(
            OP,
            format!(
                "input has {c} channels, the convolution expects {}",
                conv.in_channels()
            ),
        ));
    }
    let (oh, ow) = conv.output_size(h, w)?;
    let p = conv.params();
    let (kh, kw) = conv.kernel_size();
    let cout = conv.out_channels();
    let g = p.groups;
    let (cin_g, cout_g) = (c / g, cout / g);
    let kdim = cin_g * kh * kw;
    let ohw = oh * ow;
    let total = checked_len(OP, &[n, cout, oh, ow])?;
    let cols_len = checked_len(OP, &[kdim, ohw])?;
    let mut out = zeroed(total);
    if total == 0 {
        return shaped(n, cout, oh, ow, out);
    }
    let xs = x.as_standard_layout();
    let xs = xs.as_slice().unwrap_or(&[]);
    let weight = conv.weight();
    let weight = weight.as_standard_layout();
    let weight = weight.as_slice().unwrap_or(&[]);
    let pointwise = kh == 1 && kw == 1 && p.stride == (1, 1) && p.padding == (0, 0);
    let mut cols = vec![0f32; if pointwise { 0 } else { cols_len }];
    let i32_of = |what: &str, v: usize| to_i32(OP, what, v);
    for b in 0..n {
        for gi in 0..g {
            let x_g = &xs[(b * c + gi * cin_g) * h * w..][..cin_g * h * w];
            if !pointwise {
                cols.fill(0.0);
                let mut args = vec![
                    Arg::InF32(x_g),
                    Arg::I32(i32_of("channels", cin_g)?),
                    Arg::I32(i32_of("height", h)?),
                    Arg::I32(i32_of("width", w)?),
                ];
                args.extend(im2col_geometry(OP, (kh, kw), p, (oh, ow))?);
                args.push(Arg::OutF32(&mut cols));
                exec.launch(
                    &super::K_CONV_IM2COL,
                    Launch::linear(cols_len as u64, THREADS),
                    &mut args,
                )?;
            }
            let rhs: &[f32] = if pointwise { x_g } else { &cols };
            let w_g = &weight[gi * cout_g * kdim..][..cout_g * kdim];
            let out_g = &mut out[(b * cout + gi * cout_g) * ohw..][..cout_g * ohw];
            exec.sgemm(cout_g, ohw, kdim, w_g, rhs, out_g)?;
        }
    }
    let out = bias_activation(exec, conv, out, cout, ohw, total, OP)?;
    shaped(n, cout, oh, ow, out)
}

/// GPU [`DeformConv2d::forward`](crate::layers::DeformConv2d::forward): per image and weight
/// group, `deform_im2col` and an SGEMM with the weight, then `bias_activation`.
pub fn deform_conv2d<E: Executor>(
    exec: &mut E,
    dcn: &crate::layers::DeformConv2d,
    x: ArrayView4<'_, f32>,
    offset: ArrayView4<'_, f32>,
    mask: Option<ArrayView4<'_, f32>>,
) -> Result<Array4<f32>, CudaError> {
    const OP: &str = "deform_conv2d";
    let conv = dcn.conv();
    let (n, c, h, w) = x.dim();
    if c != conv.in_channels() {
        return Err(CudaError::invalid(
            OP,
            format!(
                "input has {c} channels, the convolution expects {}",
                conv.in_channels()
            ),
        ));
    }
    let offset_groups = dcn.offset_groups((n, c, h, w), &offset, mask.as_ref())?;
    let (oh, ow) = conv.output_size(h, w)?;
    let p = conv.params();
    let (kh, kw) = conv.kernel_size();
    let cout = conv.out_channels();
    let g = p.groups;
    let (cin_g, cout_g) = (c / g, cout / g);
    let taps = kh * kw;
    let kdim = cin_g * taps;
    let ohw = oh * ow;
    let total = checked_len(OP, &[n, cout, oh, ow])?;
    let cols_len = checked_len(OP, &[kdim, ohw])?;
    let mut out = zeroed(total);
    if total == 0 {
        return shaped(n, cout, oh, ow, out);
    }
    let xs = x.as_standard_layout();
    let xs = xs.as_slice().unwrap_or(&[]);
    let offset = offset.as_standard_layout();
    let offset = offset.as_slice().unwrap_or(&[]);
    let mask = mask.map(|m| m.as_standard_layout().to_owned());
    let mask = mask.as_ref().and_then(|m| m.as_slice());
    let weight = conv.weight();
    let weight = weight.as_standard_layout();
    let weight = weight.as_slice().unwrap_or(&[]);
    let i32_of = |what: &str, v: usize| to_i32(OP, what, v);
    let mut cols = vec![0f32; cols_len];
    let (offset_len, mask_len) = (2 * offset_groups * taps * ohw, offset_groups * taps * ohw);
    for b in 0..n {
        let x_b = &xs[b * c * h * w..][..c * h * w];
        let offset_b = &offset[b * offset_len..][..offset_len];
        let mask_b = mask.map_or(&[][..], |m| &m[b * mask_len..][..mask_len]);
        for gi in 0..g {
            cols.fill(0.0);
            let mut args = vec![
                Arg::InF32(x_b),
                Arg::I32(i32_of("channels", c)?),
                Arg::I32(i32_of("channels", gi * cin_g)?),
                Arg::I32(i32_of("channels", cin_g)?),
                Arg::I32(i32_of("height", h)?),
                Arg::I32(i32_of("width", w)?),
            ];
            args.extend(im2col_geometry(OP, (kh, kw), p, (oh, ow))?);
            args.extend([
                Arg::InF32(offset_b),
                Arg::InF32(mask_b),
                Arg::I32(i32::from(mask.is_some())),
                Arg::I32(i32_of("offset groups", offset_groups)?),
                Arg::OutF32(&mut cols),
            ]);
            exec.launch(
                &super::K_DEFORM_IM2COL,
                Launch::linear(cols_len as u64, THREADS),
                &mut args,
            )?;
            let w_g = &weight[gi * cout_g * kdim..][..cout_g * kdim];
            let out_g = &mut out[(b * cout + gi * cout_g) * ohw..][..cout_g * ohw];
            exec.sgemm(cout_g, ohw, kdim, w_g, &cols, out_g)?;
        }
    }
    bias_activation(exec, conv, out, cout, ohw, total, OP)
        .and_then(|out| shaped(n, cout, oh, ow, out))
}

/// `bias_activation` of `conv.cu` over a convolution's output `[.., cout, plane]` (skipped
/// when the convolution has neither a bias nor an activation).
fn bias_activation<E: Executor>(
    exec: &mut E,
    conv: &crate::layers::Conv2d,
    out: Vec<f32>,
    cout: usize,
    plane: usize,
    total: usize,
    op: &'static str,
) -> Result<Vec<f32>, CudaError> {
    let (act, slope) = activation_code(conv.activation());
    let bias = conv.bias();
    if bias.is_none() && act == 0 {
        return Ok(out);
    }
    let mut y = zeroed(total);
    let mut args = [
        Arg::InF32(&out),
        Arg::InF32(bias.unwrap_or(&[])),
        Arg::I32(i32::from(bias.is_some())),
        Arg::I32(to_i32(op, "channels", cout)?),
        Arg::I64(plane as i64),
        Arg::I64(total as i64),
        Arg::I32(act),
        Arg::F32(slope),
        Arg::OutF32(&mut y),
    ];
    exec.launch(
        &super::K_BIAS_ACTIVATION,
        Launch::linear(total as u64, THREADS),
        &mut args,
    )?;
    Ok(y)
}

fn shaped(n: usize, c: usize, h: usize, w: usize, v: Vec<f32>) -> Result<Array4<f32>, CudaError> {
    Array4::from_shape_vec((n, c, h, w), v).map_err(|e| CudaError::invalid("conv2d", e.to_string()))
}

// ---------------------------------------------------------------------------------------
// Corner pooling

/// GPU [`corner_pool`](crate::ops::corner_pool::corner_pool) of `x` `[N, C, H, W]`: one
/// thread per scanned line.
pub fn corner_pool<E: Executor>(
    exec: &mut E,
    x: ArrayView4<'_, f32>,
    pool: crate::ops::corner_pool::CornerPool,
) -> Result<Array4<f32>, CudaError> {
    const OP: &str = "corner_pool";
    let (n, c, h, w) = x.dim();
    let total = checked_len(OP, &[n, c, h, w])?;
    let mut y = zeroed(total);
    if total == 0 {
        return shaped(n, c, h, w, y);
    }
    let xs = x.as_standard_layout();
    let xs = xs.as_slice().unwrap_or(&[]);
    let vertical = matches!(
        pool,
        crate::ops::corner_pool::CornerPool::Top | crate::ops::corner_pool::CornerPool::Bottom
    );
    let lines = (n * c) as u64 * if vertical { w } else { h } as u64;
    let mut args = [
        Arg::InF32(xs),
        Arg::I64((n * c) as i64),
        Arg::I32(to_i32(OP, "height", h)?),
        Arg::I32(to_i32(OP, "width", w)?),
        Arg::I32(pool.code()),
        Arg::OutF32(&mut y),
    ];
    exec.launch(
        &super::K_CORNER_POOL,
        Launch::linear(lines, THREADS),
        &mut args,
    )?;
    shaped(n, c, h, w, y)
}

// ---------------------------------------------------------------------------------------
// Transformer layers

/// One block per row, at most 65535 blocks (the kernels loop over the rest).
fn row_launch(rows: usize) -> Launch {
    Launch {
        grid: (rows.clamp(1, 65535) as u32, 1, 1),
        block: (THREADS, 1, 1),
    }
}

/// GPU attention softmax: the softmax of every row of `scores` `[rows, cols]`, as
/// [`softmax_rows`](crate::layers::attention::softmax_rows) computes it on the CPU.
pub fn attention_softmax<E: Executor>(
    ex: &mut E,
    scores: ArrayView2<f32>,
) -> Result<Array2<f32>, CudaError> {
    const OP: &str = "attention_softmax";
    let (rows, cols) = scores.dim();
    let total = checked_len(OP, &[rows, cols])?;
    if total == 0 {
        return Ok(Array2::zeros((rows, cols)));
    }
    let c = to_i32(OP, "columns", cols)?;
    let scores = scores.as_standard_layout();
    let data = scores
        .as_slice()
        .ok_or_else(|| CudaError::invalid(OP, "scores not contiguous"))?;
    let mut out = zeroed(total);
    ex.launch(
        &K_ATTENTION_SOFTMAX,
        row_launch(rows),
        &mut [
            Arg::InF32(data),
            Arg::I64(rows as i64),
            Arg::I32(c),
            Arg::OutF32(&mut out),
        ],
    )?;
    Array2::from_shape_vec((rows, cols), out).map_err(|e| CudaError::invalid(OP, e.to_string()))
}

/// GPU [`LayerNorm::forward`]: every row of `x` `[rows, dim]` normalised with `ln`'s weight,
/// bias and eps (statistics in double, as on the CPU).
pub fn layer_norm<E: Executor>(
    ex: &mut E,
    x: ArrayView2<f32>,
    ln: &LayerNorm,
) -> Result<Array2<f32>, CudaError> {
    const OP: &str = "layer_norm";
    let (rows, dim) = x.dim();
    if dim != ln.dim() {
        return Err(CudaError::from(LayerError::Shape {
            op: OP,
            msg: format!("input has {dim} features, expected {}", ln.dim()),
        }));
    }
    let total = checked_len(OP, &[rows, dim])?;
    if total == 0 {
        return Ok(Array2::zeros((rows, dim)));
    }
    let d = to_i32(OP, "features", dim)?;
    let x = x.as_standard_layout();
    let data = x
        .as_slice()
        .ok_or_else(|| CudaError::invalid(OP, "input not contiguous"))?;
    let mut out = zeroed(total);
    ex.launch(
        &K_LAYER_NORM,
        row_launch(rows),
        &mut [
            Arg::InF32(data),
            Arg::InF32(ln.weight()),
            Arg::InF32(ln.bias()),
            Arg::I64(rows as i64),
            Arg::I32(d),
            Arg::F32(ln.eps()),
            Arg::OutF32(&mut out),
        ],
    )?;
    Array2::from_shape_vec((rows, dim), out).map_err(|e| CudaError::invalid(OP, e.to_string()))
}
