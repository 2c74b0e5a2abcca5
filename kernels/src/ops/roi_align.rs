//! RoIAlign with torchvision's semantics (`torchvision/csrc/ops/cpu/roi_align_kernel.cpp`
//! and `roi_align_common.h`).
//!
//! For each RoI `[batch, x1, y1, x2, y2]` (image coordinates):
//! - `roi_start = x1 * spatial_scale - offset` with `offset = 0.5` when `aligned`, else 0;
//!   the RoI size is clamped to at least 1 only when **not** aligned;
//! - each of the `pooled_h x pooled_w` bins averages a `grid_h x grid_w` grid of bilinear
//!   samples, `grid = sampling_ratio` if `> 0`, else `ceil(roi_size / pooled_size)` per RoI
//!   (adaptive);
//! - a sample outside `[-1, H] x [-1, W]` contributes 0 but still counts in the average;
//!   coordinates in `[-1, 0]` are clamped to 0, and samples beyond the last row/column use it.
//!
//! Both implementations perform torchvision's `f32` operations in torchvision's order, so the
//! results are bit-identical to torchvision's CPU kernel (checked by the fixture tests):
//! - [`roi_align_reference`] mirrors the C++ loop: `pre_calc` of positions and weights,
//!   then the weighted sum channel by channel.
//! - [`roi_align`] (the fast one) converts the feature map once to channels-last (`NHWC`), so
//!   that each bilinear tap reads `C` contiguous values and the channel loop vectorises
//!   (AVX-512/AVX2 picked at run time). RoIs run in parallel on rayon, visited in Z-order of
//!   their corners so that RoIs handled one after another share cached pixels. Sample
//!   positions are computed per axis (the grid is separable); a RoI's taps are listed up front
//!   unless its adaptive grid is huge, in which case they are computed on the fly.
//!   [`roi_align_nhwc`] takes a map that is already channels-last; [`roi_align_with`] keeps
//!   the converted map's memory in a [`RoiAlignWorkspace`] across calls.
//!
//! With [`RoiAlignParams::plus_one_end`], mmdet 1.x's RoIAlign instead
//! (`mmdet/ops/roi_align/src/roi_align_kernel.cu`, used by mmdetection v1 models such as
//! VPSNet): boxes follow the inclusive-pixel ("+1") convention, so the RoI ends at
//! `(x2 + 1) * spatial_scale` and its size is clamped at 0 (`fmaxf(end - start, 0)`) rather
//! than at 1; there is no half-pixel offset. Sampling and the bilinear rules are the same as
//! torchvision's. (mmdet's adaptive grid on an empty RoI divides by zero and gives NaN; here,
//! as for torchvision, it gives zeros. mmdet's models use a fixed `sample_num`.)
//!
//! Bad input: a batch index that is NaN, negative after truncation, or `>= N` is an error
//! (torchvision reads out of bounds). A RoI with a NaN coordinate gives zeros (all its samples
//! fall outside; torchvision does the same with a fixed `sampling_ratio`, and its adaptive
//! grid is undefined behaviour). An adaptive grid of more than [`MAX_SAMPLES_PER_BIN`]
//! samples (a huge or infinite RoI) is an error. A non-positive adaptive grid (a degenerate
//! or inverted box when `aligned`) gives zeros, as in torchvision.

use std::mem::MaybeUninit;

use ndarray::{Array4, ArrayView4, Axis};
use rayon::prelude::*;

use super::simd::multiversion;
use super::OpError;
use crate::tensor::Tensor;

/// Parameters of [`roi_align`] (torchvision's argument names).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoiAlignParams {
    pub pooled_height: usize,
    pub pooled_width: usize,
    /// Multiplies the RoI coordinates (e.g. 1/4 for a stride-4 map). Used as `f32`, as
    /// torchvision's kernel does.
    pub spatial_scale: f32,
    /// Samples per bin along each axis; `<= 0` means adaptive (`ceil(roi / pooled)`).
    pub sampling_ratio: i32,
    /// Half-pixel offset (Detectron2's ROIAlignV2) when true; torchvision's default is false.
    pub aligned: bool,
    /// mmdet 1.x's convention (see the module doc): the RoI ends at `(x2 + 1) * scale` and its
    /// size is clamped at 0 instead of 1. Needs `aligned = false`.
    pub plus_one_end: bool,
}

impl RoiAlignParams {
    /// Output `pooled x pooled`, torchvision defaults otherwise (`sampling_ratio = -1`,
    /// `aligned = false`).
    pub fn new(pooled: usize, spatial_scale: f32) -> RoiAlignParams {
        RoiAlignParams {
            pooled_height: pooled,
            pooled_width: pooled,
            spatial_scale,
            sampling_ratio: -1,
            aligned: false,
            plus_one_end: false,
        }
    }
}

/// Most samples one bin may average (grid_h * grid_w); larger adaptive grids are an error.
pub const MAX_SAMPLES_PER_BIN: i64 = 1 << 24;

const OP: &str = "roi_align";

/// The per-RoI quantities of the C++ kernel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RoiGeom {
    batch: usize,
    start_h: f32,
    start_w: f32,
    bin_h: f32,
    bin_w: f32,
    grid_h: i64,
    grid_w: i64,
    count: f32,
}

impl RoiGeom {
    fn has_samples(&self) -> bool {
        self.grid_h > 0 && self.grid_w > 0
    }
}

pub(crate) fn roi_geometry(
    k: usize,
    roi: &[f32; 5],
    batch_size: usize,
    p: &RoiAlignParams,
) -> Result<RoiGeom, OpError> {
    // `int roi_batch_ind = offset_rois[0];` (truncation), checked here.
    let b = roi[0];
    if b.is_nan() || b.trunc() < 0.0 || b.trunc() >= batch_size as f32 {
        return Err(OpError::invalid(
            OP,
            format!("RoI {k} has batch index {b}, but the input has {batch_size} images"),
        ));
    }
    let batch = b.trunc() as usize;
    let offset: f32 = if p.aligned { 0.5 } else { 0.0 };
    let scale = p.spatial_scale;
    let start_w = roi[1] * scale - offset;
    let start_h = roi[2] * scale - offset;
    // mmdet 1.x reads x2/y2 as the last pixel inside the box: `(x2 + 1) * spatial_scale`.
    let end = |v: f32| {
        if p.plus_one_end {
            (v + 1.0) * scale
        } else {
            v * scale
        }
    };
    let end_w = end(roi[3]) - offset;
    let end_h = end(roi[4]) - offset;
    let mut roi_w = end_w - start_w;
    let mut roi_h = end_h - start_h;
    if p.plus_one_end {
        // mmdet's `fmaxf(roi_end - roi_start, 0.)`: NaN becomes 0, as f32::max does.
        roi_w = roi_w.max(0.0);
        roi_h = roi_h.max(0.0);
    } else if !p.aligned {
        // std::max(roi_width, 1.f): keeps NaN.
        if roi_w < 1.0 {
            roi_w = 1.0;
        }
        if roi_h < 1.0 {
            roi_h = 1.0;
        }
    }
    let bin_h = roi_h / p.pooled_height as f32;
    let bin_w = roi_w / p.pooled_width as f32;
    let grid = |size: f32, pooled: usize| -> Result<i64, OpError> {
        if pooled == 0 {
            return Ok(0); // empty output: nothing to sample
        }
        if p.sampling_ratio > 0 {
            return Ok(p.sampling_ratio as i64);
        }
        let g = (size / pooled as f32).ceil();
        if g.is_nan() {
            return Ok(0); // NaN RoI: no samples, zeros
        }
        if g > MAX_SAMPLES_PER_BIN as f32 {
            return Err(too_many(k));
        }
        Ok(g as i64)
    };
    let grid_h = grid(roi_h, p.pooled_height)?;
    let grid_w = grid(roi_w, p.pooled_width)?;
    if grid_h > 0 && grid_w > 0 && grid_h.saturating_mul(grid_w) > MAX_SAMPLES_PER_BIN {
        return Err(too_many(k));
    }
    let count = (grid_h * grid_w).max(1) as f32;
    Ok(RoiGeom {
        batch,
        start_h,
        start_w,
        bin_h,
        bin_w,
        grid_h,
        grid_w,
        count,
    })
}

fn too_many(k: usize) -> OpError {
    OpError::invalid(
        OP,
        format!("RoI {k} needs more than {MAX_SAMPLES_PER_BIN} samples per bin (a huge or infinite box with adaptive sampling)"),
    )
}

pub(crate) fn check_params(p: &RoiAlignParams) -> Result<(), OpError> {
    if p.aligned && p.plus_one_end {
        // No reference combines them: one is Detectron2's half-pixel model, the other mmdet
        // 1.x's inclusive-pixel one.
        return Err(OpError::invalid(
            OP,
            "aligned and plus_one_end are two different coordinate conventions; set at most one",
        ));
    }
    if p.pooled_height > i32::MAX as usize || p.pooled_width > i32::MAX as usize {
        return Err(OpError::invalid(OP, "pooled size too large"));
    }
    Ok(())
}

/// One bilinear tap set, as `PreCalc` in torchvision.
#[derive(Clone, Copy, Default, Debug)]
struct PreCalc {
    pos1: usize,
    pos2: usize,
    pos3: usize,
    pos4: usize,
    w1: f32,
    w2: f32,
    w3: f32,
    w4: f32,
}

/// torchvision's `pre_calc_for_bilinear_interpolate` for one sample `(y, x)`.
#[inline]
fn bilinear_precalc(height: usize, width: usize, y: f32, x: f32) -> PreCalc {
    let (hf, wf) = (height as f32, width as f32);
    if !(y >= -1.0 && y <= hf && x >= -1.0 && x <= wf) {
        return PreCalc::default();
    }
    let (yl, yh, ly, hy) = axis_taps(y, height);
    let (xl, xh, lx, hx) = axis_taps(x, width);
    PreCalc {
        pos1: yl * width + xl,
        pos2: yl * width + xh,
        pos3: yh * width + xl,
        pos4: yh * width + xh,
        w1: hy * hx,
        w2: hy * lx,
        w3: ly * hx,
        w4: ly * lx,
    }
}

/// Clamping and taps along one axis for an in-range coordinate `v` (`-1 <= v <= size`):
/// `(low, high, l, h)` with weights `l = v - low`, `h = 1 - l`.
#[inline(always)]
fn axis_taps(v: f32, size: usize) -> (usize, usize, f32, f32) {
    let mut v = if v <= 0.0 { 0.0 } else { v };
    let mut low = v as usize; // v >= 0 here: truncation as C++'s (int)
    let high;
    if low + 1 >= size {
        low = size - 1;
        high = low;
        v = low as f32;
    } else {
        high = low + 1;
    }
    let l = v - low as f32;
    let h = 1.0 - l;
    (low, high, l, h)
}

fn check_input(input: &ArrayView4<f32>, rois: &[[f32; 5]]) -> Result<(), OpError> {
    let (n, _c, h, w) = input.dim();
    if !rois.is_empty() && (h == 0 || w == 0 || n == 0) {
        return Err(OpError::shape(
            OP,
            format!(
                "input {:?} has an empty spatial or batch dimension",
                input.shape()
            ),
        ));
    }
    Ok(())
}

/// Line-by-line port of torchvision's CPU `roi_align_forward_kernel_impl`.
/// `input` is `[N, C, H, W]`; the output is `[K, C, pooled_height, pooled_width]`.
pub fn roi_align_reference(
    input: ArrayView4<f32>,
    rois: &[[f32; 5]],
    p: &RoiAlignParams,
) -> Result<Array4<f32>, OpError> {
    check_params(p)?;
    check_input(&input, rois)?;
    let (n, channels, height, width) = input.dim();
    let (ph_n, pw_n) = (p.pooled_height, p.pooled_width);
    let mut out = Array4::<f32>::zeros((rois.len(), channels, ph_n, pw_n));
    if out.is_empty() {
        return Ok(out);
    }
    let input = input.as_standard_layout();
    let data = input.as_slice().unwrap_or(&[]);
    let out_slice = out.as_slice_mut().unwrap_or(&mut []);
    for (k, roi) in rois.iter().enumerate() {
        let g = roi_geometry(k, roi, n, p)?;
        let out_roi = &mut out_slice[k * channels * ph_n * pw_n..(k + 1) * channels * ph_n * pw_n];
        if !g.has_samples() {
            continue; // zeros
        }
        let (gh, gw) = (g.grid_h as usize, g.grid_w as usize);
        // torchvision computes `pre_calc` for all bins of the RoI at once; here it is one bin
        // at a time, in chunks of samples (the same values, summed in the same order), so
        // that a large adaptive grid needs little memory.
        const CHUNK: usize = 4096;
        let mut pre_calc = Vec::with_capacity((gh * gw).min(CHUNK));
        let mut acc = vec![0.0f32; channels];
        for ph in 0..ph_n {
            for pw in 0..pw_n {
                acc.fill(0.0);
                let mut sample = 0;
                while sample < gh * gw {
                    let end = (sample + CHUNK).min(gh * gw);
                    pre_calc.clear();
                    for s in sample..end {
                        let (iy, ix) = (s / gw, s % gw);
                        let yy = g.start_h
                            + ph as f32 * g.bin_h
                            + (iy as f32 + 0.5) * g.bin_h / g.grid_h as f32;
                        let xx = g.start_w
                            + pw as f32 * g.bin_w
                            + (ix as f32 + 0.5) * g.bin_w / g.grid_w as f32;
                        pre_calc.push(bilinear_precalc(height, width, yy, xx));
                    }
                    for (c, a) in acc.iter_mut().enumerate() {
                        let plane_start = (g.batch * channels + c) * height * width;
                        let plane = &data[plane_start..plane_start + height * width];
                        let mut v = *a;
                        for pc in &pre_calc {
                            v += pc.w1 * plane[pc.pos1]
                                + pc.w2 * plane[pc.pos2]
                                + pc.w3 * plane[pc.pos3]
                                + pc.w4 * plane[pc.pos4];
                        }
                        *a = v;
                    }
                    sample = end;
                }
                for (c, a) in acc.iter().enumerate() {
                    out_roi[(c * ph_n + ph) * pw_n + pw] = a / g.count;
                }
            }
        }
    }
    Ok(out)
}

/// `[N, C, H, W]` → `[N, H, W, C]` (parallel, cache-blocked).
pub fn to_channels_last(input: ArrayView4<f32>) -> Array4<f32> {
    let (n, c, h, w) = input.dim();
    let mut buf = Vec::new();
    to_channels_last_into(input, &mut buf);
    Array4::from_shape_vec((n, h, w, c), buf).unwrap_or_else(|_| Array4::zeros((n, h, w, c)))
}

/// [`to_channels_last`] into a reusable buffer (resized to `N·H·W·C`): reusing one buffer
/// across frames avoids the page faults of a fresh allocation, which cost as much as the
/// copy itself for a large map.
pub fn to_channels_last_into(input: ArrayView4<f32>, out: &mut Vec<f32>) {
    let (n, c, h, w) = input.dim();
    let len = n * h * w * c;
    // Reuse the allocation; its old contents are overwritten without being zeroed first.
    out.clear();
    out.reserve(len);
    if len == 0 {
        return;
    }
    let input = input.as_standard_layout();
    let src = input.as_slice().unwrap_or(&[]);
    if src.len() != len {
        return;
    }
    let dst = &mut out.spare_capacity_mut()[..len];
    // One task per (image, row).
    dst.par_chunks_mut(w * c).enumerate().for_each(|(row, d)| {
        let (b, y) = (row / h, row % h);
        let image = &src[b * c * h * w..(b + 1) * c * h * w];
        nchw_row_to_nhwc(image, (c, h, w), y, (0, w), d);
    });
    // SAFETY: the tasks above wrote all `len` elements: task `row` writes every channel of
    // every pixel of its row (`nchw_row_to_nhwc`), and the rows cover `n * h` rows of `w * c`
    // values.
    unsafe { out.set_len(len) };
}

/// Writes columns `x0..x0 + tw` of row `y` of the `[C, H, W]` image `src` channels-last into
/// `dst` (`tw` pixels of `C` values, every value written): the row's C planes become pixels
/// of C values in 8 x 8 register transposes with AVX (whole blocks of 8 channels and 8
/// pixels), else (and for the last `tw % 8` pixels) in 16 x 16 tiles (16 contiguous reads per
/// channel, 16 contiguous writes per pixel).
fn nchw_row_to_nhwc(
    src: &[f32],
    (c, h, w): (usize, usize, usize),
    y: usize,
    (x0, tw): (usize, usize),
    dst: &mut [MaybeUninit<f32>],
) {
    let row = y * w + x0;
    #[allow(unused_mut)]
    let mut x_done = 0;
    #[cfg(target_arch = "x86_64")]
    if super::simd::has_avx() && c.is_multiple_of(8) {
        let blocks = tw / 8;
        for c0 in (0..c).step_by(8) {
            let s = &src[c0 * h * w + row..];
            // SAFETY: AVX is present; the blocks read channels `c0..c0 + 8 <= c` (stride
            // `h·w`), columns `x0..x0 + 8·blocks <= x0 + tw <= w` of row `y < h` inside `src`,
            // and write pixels `0..8·blocks <= tw`, channels `c0..c0 + 8` of `dst`.
            unsafe {
                super::simd::transpose8x8_blocks(
                    s.as_ptr(),
                    h * w,
                    dst.as_mut_ptr().add(c0) as *mut f32,
                    c,
                    blocks,
                );
            }
        }
        x_done = blocks * 8;
    }
    const T: usize = 16;
    let mut tile = [[0.0f32; T]; T];
    for c0 in (0..c).step_by(T) {
        let cn = T.min(c - c0);
        for xt in (x_done..tw).step_by(T) {
            let xn = T.min(tw - xt);
            for (cc, trow) in tile.iter_mut().enumerate().take(cn) {
                let s = &src[(c0 + cc) * h * w + row + xt..][..xn];
                match <[f32; T]>::try_from(s) {
                    Ok(full) => *trow = full,
                    Err(_) => trow[..xn].copy_from_slice(s),
                }
            }
            for x in 0..xn {
                let o = &mut dst[(xt + x) * c + c0..][..cn];
                for (cc, v) in o.iter_mut().enumerate() {
                    v.write(tile[cc][x]);
                }
            }
        }
    }
}

/// Reusable channels-last copies of feature maps for [`roi_align_with`] and
/// [`MultiScaleRoIAlign::forward_with`](super::poolers::MultiScaleRoIAlign::forward_with):
/// a pipeline node keeps one across frames, so that the layout conversion writes into warm
/// memory instead of a fresh allocation.
#[derive(Default, Debug)]
pub struct RoiAlignWorkspace {
    pub(crate) levels: Vec<Vec<f32>>,
}

impl RoiAlignWorkspace {
    pub fn new() -> RoiAlignWorkspace {
        RoiAlignWorkspace::default()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.levels.iter().map(|l| l.capacity() * 4).sum()
    }

    /// The channels-last copy of `input` in slot `slot`.
    pub(crate) fn convert(&mut self, slot: usize, input: ArrayView4<f32>) -> ArrayView4<'_, f32> {
        let (n, c, h, w) = input.dim();
        self.fill(slot, input);
        self.view(slot, (n, h, w, c))
    }

    /// Writes the channels-last copy of `input` into slot `slot`.
    pub(crate) fn fill(&mut self, slot: usize, input: ArrayView4<f32>) {
        if self.levels.len() <= slot {
            self.levels.resize_with(slot + 1, Vec::new);
        }
        to_channels_last_into(input, &mut self.levels[slot]);
    }

    /// Slot `slot` as an `[N, H, W, C]` view (empty if it does not hold that many values).
    pub(crate) fn view(
        &self,
        slot: usize,
        nhwc: (usize, usize, usize, usize),
    ) -> ArrayView4<'_, f32> {
        let data = self.levels.get(slot).map(|v| &v[..]).unwrap_or(&[]);
        ArrayView4::from_shape(nhwc, data).unwrap_or_else(|_| {
            ArrayView4::from_shape((nhwc.0, 0, 0, nhwc.3), &[])
                .unwrap_or_else(|_| ArrayView4::from_shape((0, 0, 0, 0), &[]).expect("empty view"))
        })
    }
}

/// Fast RoIAlign on an `[N, C, H, W]` map (converted once to channels-last); same result as
/// [`roi_align_reference`] and torchvision. Output `[K, C, pooled_height, pooled_width]`.
/// Bad RoIs are reported before any work is done.
pub fn roi_align(
    input: ArrayView4<f32>,
    rois: &[[f32; 5]],
    p: &RoiAlignParams,
) -> Result<Array4<f32>, OpError> {
    roi_align_with(&mut RoiAlignWorkspace::new(), input, rois, p)
}

/// [`roi_align`] with a workspace kept across calls (see [`RoiAlignWorkspace`]).
pub fn roi_align_with(
    ws: &mut RoiAlignWorkspace,
    input: ArrayView4<f32>,
    rois: &[[f32; 5]],
    p: &RoiAlignParams,
) -> Result<Array4<f32>, OpError> {
    check_params(p)?;
    check_input(&input, rois)?;
    let (n, c, _, _) = input.dim();
    if rois.is_empty() || c == 0 || p.pooled_height == 0 || p.pooled_width == 0 {
        return Ok(Array4::zeros((
            rois.len(),
            c,
            p.pooled_height,
            p.pooled_width,
        )));
    }
    let geoms = rois
        .iter()
        .enumerate()
        .map(|(k, r)| roi_geometry(k, r, n, p))
        .collect::<Result<Vec<_>, _>>()?;
    roi_align_prepared(ws, input, &geoms, p)
}

fn roi_align_prepared(
    ws: &mut RoiAlignWorkspace,
    input: ArrayView4<f32>,
    geoms: &[RoiGeom],
    p: &RoiAlignParams,
) -> Result<Array4<f32>, OpError> {
    let (n, _, _, _) = input.dim();
    if tiles_are_cheaper(input.dim(), geoms.iter(), p.pooled_height, p.pooled_width) {
        let input = input.as_standard_layout();
        return Ok(roi_align_geoms(LevelData::Tiled(input.view()), geoms, p));
    }
    // Convert only the images that RoIs refer to (all of them, usually).
    let mut used = vec![false; n];
    for g in geoms {
        used[g.batch] = true;
    }
    if used.iter().all(|&u| u) {
        let nhwc = ws.convert(0, input);
        Ok(roi_align_geoms(LevelData::Nhwc(nhwc), geoms, p))
    } else {
        // Remap batch indices onto the converted subset.
        let keep: Vec<usize> = (0..n).filter(|&b| used[b]).collect();
        let mut remap = vec![0usize; n];
        for (i, &b) in keep.iter().enumerate() {
            remap[b] = i;
        }
        let subset = input.select(Axis(0), &keep);
        let nhwc = ws.convert(0, subset.view());
        let geoms: Vec<RoiGeom> = geoms
            .iter()
            .map(|g| RoiGeom {
                batch: remap[g.batch],
                ..*g
            })
            .collect();
        Ok(roi_align_geoms(LevelData::Nhwc(nhwc), &geoms, p))
    }
}

/// Fast RoIAlign on a channels-last `[N, H, W, C]` map; output `[K, C, ph, pw]` as
/// [`roi_align`].
pub fn roi_align_nhwc(
    input_nhwc: ArrayView4<f32>,
    rois: &[[f32; 5]],
    p: &RoiAlignParams,
) -> Result<Array4<f32>, OpError> {
    check_params(p)?;
    let (n, h, w, c) = input_nhwc.dim();
    if !rois.is_empty() && (h == 0 || w == 0 || n == 0) {
        return Err(OpError::shape(
            OP,
            format!(
                "input {:?} has an empty spatial or batch dimension",
                input_nhwc.shape()
            ),
        ));
    }
    if rois.is_empty() || c == 0 || p.pooled_height == 0 || p.pooled_width == 0 {
        return Ok(Array4::zeros((
            rois.len(),
            c,
            p.pooled_height,
            p.pooled_width,
        )));
    }
    let geoms = rois
        .iter()
        .enumerate()
        .map(|(k, r)| roi_geometry(k, r, n, p))
        .collect::<Result<Vec<_>, _>>()?;
    let input = input_nhwc.as_standard_layout();
    Ok(roi_align_geoms(LevelData::Nhwc(input.view()), &geoms, p))
}

fn roi_align_geoms(level: LevelData, geoms: &[RoiGeom], p: &RoiAlignParams) -> Array4<f32> {
    let jobs: Vec<Job> = geoms.iter().map(|g| Some((0, *g))).collect();
    roi_align_levels(&[level], &jobs, p.pooled_height, p.pooled_width)
}

/// Where RoIAlign reads a level's pixels from.
pub(crate) enum LevelData<'a> {
    /// The whole level converted to channels-last, `[N, H, W, C]` (standard layout).
    Nhwc(ArrayView4<'a, f32>),
    /// The level as given, `[N, C, H, W]` (standard layout): each RoI copies the rectangle
    /// its samples read into a channels-last tile of its own. Cheaper than converting the
    /// whole level when the RoIs cover a small part of it (a few boxes on a large map, as
    /// the mask head's small boxes on P2), and the tile stays in cache while it is sampled.
    Tiled(ArrayView4<'a, f32>),
}

impl LevelData<'_> {
    /// `(h, w, c)` of the level.
    fn hwc(&self) -> (usize, usize, usize) {
        match self {
            LevelData::Nhwc(v) => (v.dim().1, v.dim().2, v.dim().3),
            LevelData::Tiled(v) => (v.dim().2, v.dim().3, v.dim().1),
        }
    }
}

/// Whether per-RoI tiles copy fewer pixels than converting a level of `dims` (`[N, C, H,
/// W]`) whole: the RoIs' sampled rectangles, added up, against half the level (a converted
/// level is shared by overlapping RoIs and is read in longer runs). An estimate: it only
/// chooses the layout, and both give the same values.
pub(crate) fn tiles_are_cheaper<'a>(
    dims: (usize, usize, usize, usize),
    geoms: impl Iterator<Item = &'a RoiGeom>,
    ph: usize,
    pw: usize,
) -> bool {
    let (n, _, h, w) = dims;
    let level = (n * h * w) as f64;
    let side = |bin: f32, pooled: usize, size: usize| -> f64 {
        // The samples span at most `pooled` bins; their taps one cell more on each side.
        let span = f64::from(bin) * pooled as f64 + 3.0;
        if span.is_finite() {
            span.clamp(1.0, size as f64)
        } else {
            0.0
        }
    };
    let mut cells = 0.0;
    for g in geoms {
        if g.has_samples() {
            cells += side(g.bin_h, ph, h) * side(g.bin_w, pw, w);
        }
        if 2.0 * cells >= level {
            return false;
        }
    }
    true
}

/// One RoI's level and geometry; `None`: no level, zeros.
pub(crate) type Job = Option<(usize, RoiGeom)>;

/// RoIAlign of RoI `k` on level `jobs[k].0` (all levels with the same channel count);
/// `None` gives zeros. Output `[K, C, ph, pw]`.
pub(crate) fn roi_align_levels(
    levels: &[LevelData],
    jobs: &[Job],
    ph: usize,
    pw: usize,
) -> Array4<f32> {
    let c = levels.first().map(|l| l.hwc().2).unwrap_or(0);
    let per_roi = c * ph * pw;
    let mut out = Array4::<f32>::zeros((jobs.len(), c, ph, pw));
    if out.is_empty() {
        return out;
    }
    // (pixels, h, w, tiled)
    let srcs: Vec<(&[f32], usize, usize, bool)> = levels
        .iter()
        .map(|l| {
            let (h, w, _) = l.hwc();
            match l {
                LevelData::Nhwc(v) => (v.as_slice().unwrap_or(&[]), h, w, false),
                LevelData::Tiled(v) => (v.as_slice().unwrap_or(&[]), h, w, true),
            }
        })
        .collect();
    let dst = out.as_slice_mut().unwrap_or(&mut []);
    // Visit RoIs in Z-order of their centres (per level), so that RoIs processed one after
    // the other overlap and their pixels are still in cache; each output chunk is written
    // by exactly one task, so the order does not change any value.
    let mut slots: Vec<Option<&mut [f32]>> = dst.chunks_mut(per_roi).map(Some).collect();
    let mut order: Vec<(u64, usize)> = jobs
        .iter()
        .enumerate()
        .map(|(k, job)| (job.as_ref().map_or(u64::MAX, |(l, g)| zorder_key(*l, g)), k))
        .collect();
    order.sort_unstable();
    let work: Vec<(&mut [f32], &Job)> = order
        .iter()
        .filter_map(|&(_, k)| slots[k].take().map(|o| (o, &jobs[k])))
        .collect();
    work.into_par_iter().with_max_len(8).for_each_init(
        || RoiScratch::new(c),
        |scratch, (o, job)| {
            let Some((level, g)) = job else {
                return;
            };
            let (src, h, w, tiled) = srcs[*level];
            let image = &src[g.batch * h * w * c..(g.batch + 1) * h * w * c];
            if !g.has_samples() {
                o.fill(0.0);
                return;
            }
            axis_samples(&mut scratch.ys, g.start_h, g.bin_h, g.grid_h, ph, h);
            axis_samples(&mut scratch.xs, g.start_w, g.bin_w, g.grid_w, pw, w);
            if !tiled {
                roi_one(image, w, c, ph, pw, g, 0, scratch, o);
                return;
            }
            // Copy the sampled rectangle into the scratch tile (plus pixel (0, 0) after it,
            // which out-of-range samples read with weight 0, as torchvision does) and
            // sample the tile.
            let (y0, th) = shift_to_span(&mut scratch.ys);
            let (x0, tw) = shift_to_span(&mut scratch.xs);
            let mut tile = std::mem::take(&mut scratch.tile);
            let oob = th * tw * c;
            tile.clear();
            tile.resize(oob + c, 0.0);
            nchw_rect_to_nhwc(image, (c, h, w), (y0, th), (x0, tw), &mut tile[..oob]);
            for (ch, v) in tile[oob..].iter_mut().enumerate() {
                *v = image[ch * h * w];
            }
            roi_one(&tile, tw, c, ph, pw, g, oob, scratch, o);
            scratch.tile = tile;
        },
    );
    out
}

/// Sort key: level, image, then the Morton code of the RoI's corner (in feature cells).
fn zorder_key(level: usize, g: &RoiGeom) -> u64 {
    let (cy, cx) = (g.start_h, g.start_w);
    let q = |v: f32| -> u64 {
        if v.is_nan() {
            0
        } else {
            (v.clamp(0.0, 65535.0) as u64) & 0xFFFF
        }
    };
    let spread = |mut v: u64| -> u64 {
        v &= 0xFFFF;
        v = (v | (v << 8)) & 0x00FF_00FF;
        v = (v | (v << 4)) & 0x0F0F_0F0F;
        v = (v | (v << 2)) & 0x3333_3333;
        v = (v | (v << 1)) & 0x5555_5555;
        v
    };
    let morton = spread(q(cx)) | (spread(q(cy)) << 1);
    ((level as u64 & 0xFF) << 56) | ((g.batch as u64 & 0xFFFFFF) << 32) | morton
}

/// One axis of the sampling grid: for each sample, whether it is in range and its taps.
#[derive(Clone, Copy, Default)]
struct AxisSample {
    ok: bool,
    low: usize,
    high: usize,
    l: f32,
    h: f32,
}

struct RoiScratch {
    acc: Vec<f32>,
    ys: Vec<AxisSample>,
    xs: Vec<AxisSample>,
    taps: Vec<Tap>,
    /// Channels-last copy of the RoI's rectangle ([`LevelData::Tiled`]).
    tile: Vec<f32>,
}

impl RoiScratch {
    fn new(c: usize) -> RoiScratch {
        RoiScratch {
            acc: vec![0.0; c],
            ys: Vec::new(),
            xs: Vec::new(),
            taps: Vec::new(),
            tile: Vec::new(),
        }
    }
}

/// Per-axis samples: `start + p * bin + (i + .5) * bin / grid` for `p < pooled`, `i < grid`.
fn axis_samples(
    out: &mut Vec<AxisSample>,
    start: f32,
    bin: f32,
    grid: i64,
    pooled: usize,
    size: usize,
) {
    out.clear();
    let sizef = size as f32;
    for pi in 0..pooled {
        for i in 0..grid as usize {
            let v = start + pi as f32 * bin + (i as f32 + 0.5) * bin / grid as f32;
            if v >= -1.0 && v <= sizef {
                let (low, high, l, h) = axis_taps(v, size);
                out.push(AxisSample {
                    ok: true,
                    low,
                    high,
                    l,
                    h,
                });
            } else {
                out.push(AxisSample::default());
            }
        }
    }
}

/// Shifts the in-range samples' taps to start at 0; returns the first tapped index and the
/// number of indices tapped (at least 1).
fn shift_to_span(samples: &mut [AxisSample]) -> (usize, usize) {
    let ok = || samples.iter().filter(|a| a.ok);
    let lo = ok().map(|a| a.low).min().unwrap_or(0);
    let hi = ok().map(|a| a.high).max().unwrap_or(0);
    for a in samples.iter_mut().filter(|a| a.ok) {
        a.low -= lo;
        a.high -= lo;
    }
    (lo, hi - lo + 1)
}

/// Copies rows `y0..y0 + th`, columns `x0..x0 + tw` of the `[C, H, W]` image into `dst`,
/// channels-last (`[th, tw, C]`).
fn nchw_rect_to_nhwc(
    image: &[f32],
    chw: (usize, usize, usize),
    (y0, th): (usize, usize),
    (x0, tw): (usize, usize),
    dst: &mut [f32],
) {
    let c = chw.0;
    // SAFETY: MaybeUninit<f32> has f32's layout, and the rows only write f32 values into it.
    let dst = unsafe { &mut *(dst as *mut [f32] as *mut [MaybeUninit<f32>]) };
    for (ty, row) in dst.chunks_exact_mut(tw * c).take(th).enumerate() {
        nchw_row_to_nhwc(image, chw, y0 + ty, (x0, tw), row);
    }
}

/// RoIAlign of one RoI whose axis samples are in the scratch (`s.ys`, `s.xs`), on a
/// channels-last `image` of rows `w` pixels wide; out-of-range samples read the pixel at
/// offset `oob` (with weight 0).
#[allow(clippy::too_many_arguments)]
fn roi_one(
    image: &[f32],
    w: usize,
    c: usize,
    ph_n: usize,
    pw_n: usize,
    g: &RoiGeom,
    oob: usize,
    s: &mut RoiScratch,
    out: &mut [f32],
) {
    let (gh, gw) = (g.grid_h as usize, g.grid_w as usize);
    if gh * gw * ph_n * pw_n > MAX_TAPS_LISTED {
        roi_one_streaming(image, w, c, ph_n, pw_n, g, oob, s, out);
        return;
    }
    // All taps of the RoI in torchvision's order (bin by bin, samples row-major).
    s.taps.clear();
    for ph in 0..ph_n {
        for pw in 0..pw_n {
            for iy in 0..gh {
                let ya = s.ys[ph * gh + iy];
                for ix in 0..gw {
                    let xa = s.xs[pw * gw + ix];
                    // Out-of-range samples read pixel 0 with weight 0, as torchvision does.
                    s.taps.push(if ya.ok && xa.ok {
                        Tap {
                            pos: [
                                (ya.low * w + xa.low) * c,
                                (ya.low * w + xa.high) * c,
                                (ya.high * w + xa.low) * c,
                                (ya.high * w + xa.high) * c,
                            ],
                            wt: [ya.h * xa.h, ya.h * xa.l, ya.l * xa.h, ya.l * xa.l],
                        }
                    } else {
                        Tap {
                            pos: [oob; 4],
                            wt: [0.0; 4],
                        }
                    });
                }
            }
        }
    }
    let need = ph_n * pw_n * c;
    if s.acc.len() < need {
        s.acc.resize(need, 0.0);
    }
    roi_bins(image, c, &s.taps, gh * gw, g.count, &mut s.acc, out);
}

/// Most samples of one RoI whose taps are listed up front (larger adaptive grids stream).
const MAX_TAPS_LISTED: usize = 1 << 16;

/// [`roi_one`] for huge grids: taps computed on the fly, no list.
#[allow(clippy::too_many_arguments)]
fn roi_one_streaming(
    image: &[f32],
    w: usize,
    c: usize,
    ph_n: usize,
    pw_n: usize,
    g: &RoiGeom,
    oob: usize,
    s: &mut RoiScratch,
    out: &mut [f32],
) {
    let (gh, gw) = (g.grid_h as usize, g.grid_w as usize);
    let bins = ph_n * pw_n;
    for ph in 0..ph_n {
        for pw in 0..pw_n {
            let acc = &mut s.acc[..c];
            acc.fill(0.0);
            for iy in 0..gh {
                let ya = s.ys[ph * gh + iy];
                for ix in 0..gw {
                    let xa = s.xs[pw * gw + ix];
                    let (p, wt) = if ya.ok && xa.ok {
                        (
                            [
                                (ya.low * w + xa.low) * c,
                                (ya.low * w + xa.high) * c,
                                (ya.high * w + xa.low) * c,
                                (ya.high * w + xa.high) * c,
                            ],
                            [ya.h * xa.h, ya.h * xa.l, ya.l * xa.h, ya.l * xa.l],
                        )
                    } else {
                        ([oob; 4], [0.0; 4])
                    };
                    accumulate(
                        acc,
                        &image[p[0]..p[0] + c],
                        &image[p[1]..p[1] + c],
                        &image[p[2]..p[2] + c],
                        &image[p[3]..p[3] + c],
                        wt,
                    );
                }
            }
            let bin = ph * pw_n + pw;
            for (ch, &a) in acc.iter().enumerate() {
                out[ch * bins + bin] = a / g.count;
            }
        }
    }
}

/// The four taps of one sample: offsets of the pixels (in floats) and their weights.
#[derive(Clone, Copy, Default)]
struct Tap {
    pos: [usize; 4],
    wt: [f32; 4],
}

/// Sums the taps of each bin (`per_bin` samples) over all channels, then divides by `count`.
#[inline(always)]
fn roi_bins_impl(
    image: &[f32],
    c: usize,
    taps: &[Tap],
    per_bin: usize,
    count: f32,
    acc: &mut [f32],
    out: &mut [f32],
) {
    let bins = taps.len() / per_bin.max(1);
    // Accumulate bin by bin into a channels-last scratch `[bins][c]`, then write the
    // `[c][bins]` output in one pass (strided stores per bin would thrash the cache).
    let acc = &mut acc[..bins * c];
    for (bin_taps, a) in taps.chunks_exact(per_bin).zip(acc.chunks_exact_mut(c)) {
        a.fill(0.0);
        for t in bin_taps {
            accumulate_impl(
                a,
                &image[t.pos[0]..t.pos[0] + c],
                &image[t.pos[1]..t.pos[1] + c],
                &image[t.pos[2]..t.pos[2] + c],
                &image[t.pos[3]..t.pos[3] + c],
                t.wt,
            );
        }
    }
    for (ch, o) in out.chunks_exact_mut(bins).enumerate() {
        for (bin, v) in o.iter_mut().enumerate() {
            *v = acc[bin * c + ch] / count;
        }
    }
}

multiversion!(fn roi_bins(
    image: &[f32],
    c: usize,
    taps: &[Tap],
    per_bin: usize,
    count: f32,
    acc: &mut [f32],
    out: &mut [f32],
) => roi_bins_impl);

/// `acc[c] += w1*r1[c] + w2*r2[c] + w3*r3[c] + w4*r4[c]`, in torchvision's order.
#[inline(always)]
fn accumulate_impl(acc: &mut [f32], r1: &[f32], r2: &[f32], r3: &[f32], r4: &[f32], wt: [f32; 4]) {
    let n = acc.len();
    let (r1, r2, r3, r4) = (&r1[..n], &r2[..n], &r3[..n], &r4[..n]);
    let [w1, w2, w3, w4] = wt;
    for i in 0..n {
        acc[i] += w1 * r1[i] + w2 * r2[i] + w3 * r3[i] + w4 * r4[i];
    }
}

multiversion!(fn accumulate(
    acc: &mut [f32],
    r1: &[f32],
    r2: &[f32],
    r3: &[f32],
    r4: &[f32],
    wt: [f32; 4],
) => accumulate_impl);

/// [`roi_align`] on tensors: `input` f32 `[N, C, H, W]`, `rois` f32 `[K, 5]`; returns f32
/// `[K, C, pooled_height, pooled_width]`.
pub fn roi_align_tensor(
    input: &Tensor,
    rois: &Tensor,
    p: &RoiAlignParams,
) -> Result<Tensor, OpError> {
    let x = input.view::<f32>()?;
    let x = x.into_dimensionality::<ndarray::Ix4>().map_err(|_| {
        OpError::shape(
            OP,
            format!("input must be [N, C, H, W], got {:?}", input.shape()),
        )
    })?;
    let r = rois_from_tensor(rois)?;
    let out = roi_align(x, &r, p)?;
    let shape = out.shape().to_vec();
    Ok(Tensor::from_vec(&shape, out.into_raw_vec_and_offset().0)?)
}

/// Reads an f32 `[K, 5]` tensor as RoIs.
pub fn rois_from_tensor(rois: &Tensor) -> Result<Vec<[f32; 5]>, OpError> {
    let s = rois.as_slice::<f32>()?;
    let sh = rois.shape();
    let ok = (sh.len() == 2 && sh[1] == 5) || (sh.len() == 1 && sh[0] == 0);
    if !ok {
        return Err(OpError::shape(
            OP,
            format!("rois must be [K, 5], got {sh:?}"),
        ));
    }
    Ok(s.chunks_exact(5)
        .map(|r| [r[0], r[1], r[2], r[3], r[4]])
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_last_matches_a_plain_transpose() {
        // Multiples of 8 channels take the AVX 8x8 path (with leftover pixels), others not.
        for &(n, c, h, w) in &[
            (2, 16, 5, 19),
            (1, 8, 3, 8),
            (1, 24, 2, 7),
            (1, 5, 3, 9),
            (1, 256, 4, 33),
        ] {
            let x = ndarray::Array4::from_shape_fn((n, c, h, w), |(b, ch, y, xx)| {
                (((b * 7 + ch) * 13 + y) * 17 + xx) as f32
            });
            let got = to_channels_last(x.view());
            let want = x.view().permuted_axes([0, 2, 3, 1]).to_owned();
            assert_eq!(got, want, "{:?}", (n, c, h, w));
        }
    }
    use ndarray::Array;

    fn ramp(n: usize, c: usize, h: usize, w: usize) -> Array4<f32> {
        Array::from_shape_fn((n, c, h, w), |(b, ch, y, x)| {
            (b * 1000 + ch * 100) as f32 + y as f32 * 10.0 + x as f32 + 0.25 * ((x * y) % 3) as f32
        })
    }

    #[test]
    fn bilinear_by_hand() {
        // A 1x1 bin with one sample at the centre of a 2x2-pixel box: the average of 4 pixels.
        let x = Array::from_shape_vec((1, 1, 2, 2), vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let p = RoiAlignParams {
            pooled_height: 1,
            pooled_width: 1,
            spatial_scale: 1.0,
            sampling_ratio: 1,
            aligned: false,
            plus_one_end: false,
        };
        // Box [0, 0, 1, 1]: sample at (0.5, 0.5) → 2.5.
        let out = roi_align_reference(x.view(), &[[0.0, 0.0, 0.0, 1.0, 1.0]], &p).unwrap();
        assert_eq!(out[[0, 0, 0, 0]], 2.5);
        let fast = roi_align(x.view(), &[[0.0, 0.0, 0.0, 1.0, 1.0]], &p).unwrap();
        assert_eq!(fast[[0, 0, 0, 0]], 2.5);
        // aligned: the same box shifts by -0.5 → sample at (0, 0) → 1.
        let pa = RoiAlignParams { aligned: true, ..p };
        let out = roi_align(x.view(), &[[0.0, 0.0, 0.0, 1.0, 1.0]], &pa).unwrap();
        assert_eq!(out[[0, 0, 0, 0]], 1.0);
        // Fully outside: zero.
        let out = roi_align(x.view(), &[[0.0, 10.0, 10.0, 12.0, 12.0]], &p).unwrap();
        assert_eq!(out[[0, 0, 0, 0]], 0.0);
        // Past the last row/column: clamped to the edge pixel (sample at (1.75, 1.75)).
        let out = roi_align(x.view(), &[[0.0, 1.5, 1.5, 2.0, 2.0]], &pa).unwrap();
        assert_eq!(out[[0, 0, 0, 0]], 4.0);
    }

    /// mmdet 1.x's kernel: the box ends at `(x2 + 1) * scale` and its size is clamped at 0.
    #[test]
    fn plus_one_end_by_hand() {
        let x = Array::from_shape_vec((1, 1, 2, 2), vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let tv = RoiAlignParams {
            pooled_height: 1,
            pooled_width: 1,
            spatial_scale: 0.25,
            sampling_ratio: 1,
            aligned: false,
            plus_one_end: false,
        };
        let mm = RoiAlignParams {
            plus_one_end: true,
            ..tv
        };
        let both = |rois: &[[f32; 5]], p: &RoiAlignParams| {
            let a = roi_align_reference(x.view(), rois, p).unwrap()[[0, 0, 0, 0]];
            let b = roi_align(x.view(), rois, p).unwrap()[[0, 0, 0, 0]];
            assert_eq!(a.to_bits(), b.to_bits());
            a
        };
        // Box [0, 0, 1, 1] at scale 1/4: mmdet's RoI is [0, 0.5), one sample at (0.25, 0.25):
        // 1·0.5625 + 2·0.1875 + 3·0.1875 + 4·0.0625 = 1.75. torchvision's RoI [0, 0.25) is
        // widened to 1, sample at (0.5, 0.5): 2.5.
        assert_eq!(both(&[[0.0, 0.0, 0.0, 1.0, 1.0]], &mm), 1.75);
        assert_eq!(both(&[[0.0, 0.0, 0.0, 1.0, 1.0]], &tv), 2.5);
        // At scale 1 a one-pixel box [0, 0, 0, 0] covers pixel 0 in mmdet: sample at (0.5, 0.5).
        let mm1 = RoiAlignParams {
            spatial_scale: 1.0,
            ..mm
        };
        assert_eq!(both(&[[0.0, 0.0, 0.0, 0.0, 0.0]], &mm1), 2.5);
        // An inverted box has size 0 (not 1): every sample sits at its start, here pixel (0, 0).
        let grid2 = RoiAlignParams {
            sampling_ratio: 2,
            ..mm1
        };
        assert_eq!(both(&[[0.0, 0.0, 0.0, -5.0, -5.0]], &grid2), 1.0);
        let tv2 = RoiAlignParams {
            plus_one_end: false,
            ..grid2
        };
        assert_eq!(both(&[[0.0, 0.0, 0.0, -5.0, -5.0]], &tv2), 2.5);
        // The two conventions cannot be combined.
        let bad = RoiAlignParams {
            aligned: true,
            ..mm
        };
        assert!(roi_align(x.view(), &[[0.0, 0.0, 0.0, 1.0, 1.0]], &bad).is_err());
        assert!(roi_align_reference(x.view(), &[[0.0, 0.0, 0.0, 1.0, 1.0]], &bad).is_err());
    }

    fn all_params() -> Vec<RoiAlignParams> {
        let mut v = Vec::new();
        // torchvision's legacy and aligned conventions, and mmdet 1.x's.
        for (aligned, plus_one_end) in [(false, false), (true, false), (false, true)] {
            for sampling_ratio in [-1, 0, 1, 2, 3] {
                for (ph, pw) in [(7, 7), (2, 3), (1, 1)] {
                    for scale in [0.25f32, 1.0, 0.5] {
                        v.push(RoiAlignParams {
                            pooled_height: ph,
                            pooled_width: pw,
                            spatial_scale: scale,
                            sampling_ratio,
                            aligned,
                            plus_one_end,
                        });
                    }
                }
            }
        }
        v
    }

    fn edge_rois() -> Vec<[f32; 5]> {
        vec![
            [0.0, 1.0, 2.0, 30.0, 25.0],
            [1.0, -10.0, -8.0, 12.0, 9.0],      // partly outside
            [1.0, 100.0, 100.0, 140.0, 120.0],  // fully outside
            [0.0, 5.0, 5.0, 5.0, 5.0],          // degenerate
            [1.0, 9.0, 7.0, 3.0, 2.0],          // inverted
            [0.0, -100.0, -80.0, 150.0, 120.0], // huge
            [1.9, 0.3, 0.7, 63.0, 47.0],        // batch index truncates to 1
            [0.0, f32::NAN, 1.0, 5.0, 5.0],     // NaN coordinate → zeros
        ]
    }

    #[test]
    fn fast_equals_reference_bitwise() {
        let x = ramp(2, 19, 12, 16);
        let rois = edge_rois();
        for p in all_params() {
            let a = roi_align_reference(x.view(), &rois, &p).unwrap();
            let b = roi_align(x.view(), &rois, &p).unwrap();
            assert_eq!(a.dim(), b.dim());
            for (u, v) in a.iter().zip(b.iter()) {
                assert!(u.to_bits() == v.to_bits(), "{p:?}: {u} vs {v}");
            }
            let nhwc = to_channels_last(x.view());
            let c = roi_align_nhwc(nhwc.view(), &rois, &p).unwrap();
            assert_eq!(b, c);
        }
        // NaN RoI gives zeros.
        let p = RoiAlignParams::new(7, 0.25);
        let out = roi_align(x.view(), &rois[7..8], &p).unwrap();
        assert!(out.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn tiles_equal_the_reference_bitwise() {
        // 16 channels (the AVX block copy) and 19 (its scalar tail); a NaN and an infinity at
        // pixel (0, 0), which out-of-range samples multiply by 0 in torchvision.
        for c in [16, 19] {
            let mut x = ramp(2, c, 12, 21);
            x[[1, 3, 0, 0]] = f32::NAN;
            x[[0, 2, 0, 0]] = f32::INFINITY;
            let rois = edge_rois();
            for p in all_params() {
                let want = roi_align_reference(x.view(), &rois, &p).unwrap();
                let geoms: Vec<RoiGeom> = rois
                    .iter()
                    .enumerate()
                    .map(|(k, r)| roi_geometry(k, r, 2, &p).unwrap())
                    .collect();
                let jobs: Vec<Job> = geoms.iter().map(|g| Some((0, *g))).collect();
                let got = roi_align_levels(
                    &[LevelData::Tiled(x.view())],
                    &jobs,
                    p.pooled_height,
                    p.pooled_width,
                );
                assert_eq!(want.dim(), got.dim());
                for (u, v) in want.iter().zip(got.iter()) {
                    assert!(u.to_bits() == v.to_bits(), "c={c} {p:?}: {u} vs {v}");
                }
            }
        }
        // The choice: a few small RoIs on a large map are tiled, many are not.
        let p = RoiAlignParams::new(7, 0.25);
        let small = roi_geometry(0, &[0.0, 10.0, 10.0, 40.0, 40.0], 1, &p).unwrap();
        let dims = (1, 256, 200, 304);
        assert!(tiles_are_cheaper(dims, [small; 10].iter(), 7, 7));
        assert!(!tiles_are_cheaper(dims, [small; 2000].iter(), 7, 7));
        let nan = roi_geometry(0, &[0.0, f32::NAN, 1.0, 5.0, 5.0], 1, &p).unwrap();
        assert!(tiles_are_cheaper(dims, [nan; 5000].iter(), 7, 7));
    }

    #[test]
    fn huge_adaptive_grid_streams() {
        let x = ramp(1, 3, 5, 6);
        let rois = [[0.0, -300.0, -300.0, 400.0, 400.0]];
        for (aligned, plus_one_end) in [(false, false), (true, false), (false, true)] {
            let p = RoiAlignParams {
                pooled_height: 1,
                pooled_width: 2,
                spatial_scale: 1.0,
                sampling_ratio: -1,
                aligned,
                plus_one_end,
            };
            let a = roi_align_reference(x.view(), &rois, &p).unwrap();
            let b = roi_align(x.view(), &rois, &p).unwrap();
            assert_eq!(a, b);
            assert!(a.iter().any(|&v| v != 0.0));
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        let x = ramp(1, 2, 4, 4);
        let p = RoiAlignParams::new(2, 1.0);
        for b in [1.0f32, -1.0, f32::NAN, f32::INFINITY] {
            assert!(roi_align(x.view(), &[[b, 0.0, 0.0, 1.0, 1.0]], &p).is_err());
            assert!(roi_align_reference(x.view(), &[[b, 0.0, 0.0, 1.0, 1.0]], &p).is_err());
        }
        // -0.5 truncates to 0, as in C++.
        assert!(roi_align(x.view(), &[[-0.5, 0.0, 0.0, 1.0, 1.0]], &p).is_ok());
        // Infinite box with adaptive sampling.
        let inf = [[0.0, 0.0, 0.0, f32::INFINITY, 1.0]];
        assert!(roi_align(x.view(), &inf, &p).is_err());
        // ... but with a fixed sampling ratio it is fine (all samples NaN → zeros).
        let p2 = RoiAlignParams {
            sampling_ratio: 2,
            ..p
        };
        let out = roi_align(x.view(), &inf, &p2).unwrap();
        assert!(out.iter().all(|v| v.is_finite()));
        // Empty RoI list and empty map.
        assert_eq!(roi_align(x.view(), &[], &p).unwrap().dim(), (0, 2, 2, 2));
        let empty = Array4::<f32>::zeros((1, 2, 0, 4));
        assert!(roi_align(empty.view(), &[[0.0, 0.0, 0.0, 1.0, 1.0]], &p).is_err());
    }

    #[test]
    fn tensor_wrapper() {
        let x = ramp(1, 3, 8, 8);
        let t = Tensor::from_vec(&[1, 3, 8, 8], x.iter().copied().collect()).unwrap();
        let r = Tensor::from_vec(&[1, 5], vec![0.0f32, 0.0, 0.0, 4.0, 4.0]).unwrap();
        let out = roi_align_tensor(&t, &r, &RoiAlignParams::new(2, 1.0)).unwrap();
        assert_eq!(out.shape(), &[1, 3, 2, 2]);
        let bad = Tensor::from_vec(&[1, 4], vec![0.0f32; 4]).unwrap();
        assert!(roi_align_tensor(&t, &bad, &RoiAlignParams::new(2, 1.0)).is_err());
    }
}
