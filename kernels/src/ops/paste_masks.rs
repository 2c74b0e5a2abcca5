//! Pasting Mask R-CNN's `M x M` mask probabilities into the image: torchvision's
//! `paste_masks_in_image` with `expand_masks`, `expand_boxes` and `paste_mask_in_image`
//! (`torchvision/models/detection/roi_heads.py`).
//!
//! For each mask and its box (image pixels, `f32`):
//! 1. the mask is zero-padded by `padding` (1) on every side, and the box is scaled about its
//!    centre by `scale = (M + 2·padding) / M` (`f32` arithmetic as torch's), then truncated
//!    toward zero to integers `(x0, y0, x1, y1)`;
//! 2. the padded mask is resized to `h = max(y1 - y0 + 1, 1)` by `w = max(x1 - x0 + 1, 1)`
//!    with bilinear interpolation, `align_corners = False`;
//! 3. the part inside the image, rows `max(y0, 0)..min(y1 + 1, H)` and columns likewise, is
//!    written into a zero `H x W` image.
//!
//! The output is `[N, H, W]` soft probabilities (torchvision returns `[N, 1, H, W]`); as in
//! torchvision there is no threshold (`>= 0.5` is the customary downstream step).
//!
//! The bilinear resize reproduces torch's CPU kernel bit for bit (fused multiply-adds
//! included): torch picks a kernel by output size (`h + w <= 128`: the channels-last kernel,
//! otherwise the generic separable one), and each rounds differently; both are mirrored in
//! [`resize_bilinear`].
//!
//! [`paste_masks_in_image_reference`] resizes each whole mask then copies the visible part,
//! like torchvision. [`paste_masks_in_image`] (fast) computes only the visible pixels, with
//! one horizontal pass per source row shared by all output rows, and runs masks in parallel;
//! the `N x H x W` output is allocated zeroed by the OS, so untouched pages cost nothing.
//!
//! Bad input: masks with a zero side are an error. A box with a NaN or infinite coordinate,
//! or one entirely outside the image, gives an empty (zero) mask (torchvision's integer
//! conversion of NaN is undefined, and it raises on some boxes fully outside the image).

use ndarray::{Array2, Array3, ArrayView2, ArrayView3, Axis};
use rayon::prelude::*;

use super::simd::multiversion;
use super::OpError;

const OP: &str = "paste_masks_in_image";

/// Scales each box about its centre (torchvision `expand_boxes`), in `f32`.
pub fn expand_boxes(boxes: &[[f32; 4]], scale: f32) -> Vec<[f32; 4]> {
    boxes.iter().map(|b| expand_box(b, scale)).collect()
}

#[inline]
fn expand_box(b: &[f32; 4], scale: f32) -> [f32; 4] {
    let w_half = (b[2] - b[0]) * 0.5 * scale;
    let h_half = (b[3] - b[1]) * 0.5 * scale;
    let x_c = (b[2] + b[0]) * 0.5;
    let y_c = (b[3] + b[1]) * 0.5;
    [x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half]
}

/// Zero-pads each `[M, M]` mask by `padding` and returns the box scale `(M + 2p) / M`
/// (torchvision `expand_masks`; `M` is the mask width).
pub fn expand_masks(masks: ArrayView3<f32>, padding: usize) -> Result<(Array3<f32>, f64), OpError> {
    let (n, mh, mw) = masks.dim();
    if mw == 0 || mh == 0 {
        return Err(OpError::shape(
            OP,
            format!("masks {:?} have an empty side", masks.shape()),
        ));
    }
    let scale = (mw + 2 * padding) as f64 / mw as f64;
    let mut out = Array3::<f32>::zeros((n, mh + 2 * padding, mw + 2 * padding));
    out.slice_mut(ndarray::s![
        ..,
        padding..padding + mh,
        padding..padding + mw
    ])
    .assign(&masks);
    Ok((out, scale))
}

/// Integer box of a mask: `None` for NaN/infinite boxes.
fn int_box(b: &[f32; 4]) -> Option<[i64; 4]> {
    if !b.iter().all(|v| v.is_finite()) {
        return None;
    }
    // `.to(torch.int64)`: truncation toward zero (finite values saturate harmlessly).
    Some([b[0] as i64, b[1] as i64, b[2] as i64, b[3] as i64])
}

/// Geometry of one paste: resized size and the visible region in image and mask coordinates.
struct Paste {
    h: usize,
    w: usize,
    /// Image rows/cols `[y0, y1) x [x0, x1)`.
    y0: usize,
    y1: usize,
    x0: usize,
    x1: usize,
    /// Offset of image row/col 0 in the resized mask (`-box[1]`, `-box[0]`).
    oy: i64,
    ox: i64,
}

fn paste_geometry(b: &[f32; 4], scale: f32, im_h: usize, im_w: usize) -> Option<Paste> {
    let e = expand_box(b, scale);
    let [bx0, by0, bx1, by1] = int_box(&e)?;
    let w = bx1.saturating_sub(bx0).saturating_add(1).max(1);
    let h = by1.saturating_sub(by0).saturating_add(1).max(1);
    let x0 = bx0.max(0);
    let x1 = bx1.saturating_add(1).min(im_w as i64);
    let y0 = by0.max(0);
    let y1 = by1.saturating_add(1).min(im_h as i64);
    if x1 <= x0 || y1 <= y0 {
        return None;
    }
    Some(Paste {
        h: usize::try_from(h).ok()?,
        w: usize::try_from(w).ok()?,
        y0: y0 as usize,
        y1: y1 as usize,
        x0: x0 as usize,
        x1: x1 as usize,
        oy: by0,
        ox: bx0,
    })
}

/// Source taps of output index `d` along one axis of torch's bilinear resize
/// (`align_corners = False`): `(i0, i1, lambda0, lambda1)`. `fused`: torch's channels-last
/// kernel, whose source index is computed with a fused multiply-add.
#[inline(always)]
fn axis_tap(d: usize, out_size: usize, in_size: usize, fused: bool) -> (usize, usize, f32, f32) {
    if out_size == in_size {
        return (d, d, 1.0, 0.0);
    }
    let scale = in_size as f32 / out_size as f32;
    let dd = d as f32 + 0.5;
    let src = if fused {
        scale.mul_add(dd, -0.5)
    } else {
        scale * dd - 0.5
    };
    let src = if src < 0.0 { 0.0 } else { src };
    let i0 = (src.floor() as usize).min(in_size - 1);
    let l1 = (src - i0 as f32).clamp(0.0, 1.0);
    let i1 = if i0 < in_size - 1 { i0 + 1 } else { i0 };
    (i0, i1, 1.0 - l1, l1)
}

/// Does torch use its channels-last kernel (rather than the generic one) for this size?
#[inline]
fn small_kernel(h: usize, w: usize) -> bool {
    h + w <= 128
}

/// One output pixel of torch's channels-last kernel: `i00*w00 + i01*w01 + i10*w10 + i11*w11`
/// as GCC contracts it.
#[inline(always)]
fn blend_small(
    src: &ArrayView2<f32>,
    ty: (usize, usize, f32, f32),
    tx: (usize, usize, f32, f32),
) -> f32 {
    let (h0, h1, hl0, hl1) = ty;
    let (w0, w1, wl0, wl1) = tx;
    let (w00, w01, w10, w11) = (hl0 * wl0, hl0 * wl1, hl1 * wl0, hl1 * wl1);
    let (a, b, c, d) = (src[[h0, w0]], src[[h0, w1]], src[[h1, w0]], src[[h1, w1]]);
    d.mul_add(w11, c.mul_add(w10, a.mul_add(w00, b * w01)))
}

/// One tap pair of torch's generic kernel: `v0 * l0 + v1 * l1` as GCC contracts it.
#[inline(always)]
fn lerp_generic(v0: f32, v1: f32, l0: f32, l1: f32) -> f32 {
    v0.mul_add(l0, v1 * l1)
}

/// Bilinear resize of one 2-D map to `(out_h, out_w)`, `align_corners = False`, bit-identical
/// to torch's CPU `F.interpolate(..., mode="bilinear")` for one channel.
pub fn resize_bilinear(
    input: ArrayView2<f32>,
    out_h: usize,
    out_w: usize,
) -> Result<Array2<f32>, OpError> {
    let (ih, iw) = input.dim();
    if ih == 0 || iw == 0 {
        return Err(OpError::shape("resize_bilinear", "empty input"));
    }
    Ok(resize_region(input, out_h, out_w, 0..out_h, 0..out_w))
}

multiversion!(fn resize_region(
    input: ArrayView2<f32>,
    out_h: usize,
    out_w: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) -> Array2<f32> => resize_region_impl);

/// Rows `rows` and columns `cols` of the `(out_h, out_w)` resize of `input`.
#[inline(always)]
fn resize_region_impl(
    input: ArrayView2<f32>,
    out_h: usize,
    out_w: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) -> Array2<f32> {
    let (ih, iw) = input.dim();
    let fused = small_kernel(out_h, out_w);
    let ty: Vec<_> = rows
        .clone()
        .map(|r| axis_tap(r, out_h, ih, fused))
        .collect();
    let tx: Vec<_> = cols
        .clone()
        .map(|c| axis_tap(c, out_w, iw, fused))
        .collect();
    let mut out = Array2::<f32>::zeros((rows.len(), cols.len()));
    if fused {
        for (r, &y) in ty.iter().enumerate() {
            for (c, &x) in tx.iter().enumerate() {
                out[[r, c]] = blend_small(&input, y, x);
            }
        }
        return out;
    }
    // Generic kernel: horizontal taps per source row (computed once), then vertical blend.
    let nc = tx.len();
    let mut horiz = vec![0.0f32; ih * nc];
    let mut needed = vec![false; ih];
    for &(h0, h1, _, _) in &ty {
        needed[h0] = true;
        needed[h1] = true;
    }
    for (row, hrow) in horiz.chunks_exact_mut(nc.max(1)).enumerate().take(ih) {
        if !needed[row] {
            continue;
        }
        let src = input.index_axis(Axis(0), row);
        for (o, &(w0, w1, l0, l1)) in hrow.iter_mut().zip(&tx) {
            *o = lerp_generic(src[w0], src[w1], l0, l1);
        }
    }
    if let Some(dst) = out.as_slice_mut() {
        for (orow, &(h0, h1, l0, l1)) in dst.chunks_exact_mut(nc.max(1)).zip(&ty) {
            let t0 = &horiz[h0 * nc..(h0 + 1) * nc];
            let t1 = &horiz[h1 * nc..(h1 + 1) * nc];
            for ((o, &a), &b) in orow.iter_mut().zip(t0).zip(t1) {
                *o = lerp_generic(a, b, l0, l1);
            }
        }
    }
    out
}

fn check(masks: &ArrayView3<f32>, boxes: &[[f32; 4]]) -> Result<(), OpError> {
    let (n, mh, mw) = masks.dim();
    if n != boxes.len() {
        return Err(OpError::shape(
            OP,
            format!("{n} masks but {} boxes", boxes.len()),
        ));
    }
    if mh == 0 || mw == 0 {
        return Err(OpError::shape(
            OP,
            format!("masks {:?} have an empty side", masks.shape()),
        ));
    }
    Ok(())
}

/// Largest resized mask (`h * w`) the reference materialises.
const REFERENCE_MAX_RESIZED: usize = 1 << 28;

/// torchvision's loop: resize each padded mask to its whole box, then copy the visible part.
/// `masks` is `[N, M, M]`, `img_shape` is `(H, W)`; output `[N, H, W]`.
pub fn paste_masks_in_image_reference(
    masks: ArrayView3<f32>,
    boxes: &[[f32; 4]],
    img_shape: (usize, usize),
    padding: usize,
) -> Result<Array3<f32>, OpError> {
    check(&masks, boxes)?;
    let (im_h, im_w) = img_shape;
    let (padded, scale) = expand_masks(masks, padding)?;
    let scale = scale as f32;
    let mut out = Array3::<f32>::zeros((boxes.len(), im_h, im_w));
    for (i, b) in boxes.iter().enumerate() {
        let Some(g) = paste_geometry(b, scale, im_h, im_w) else {
            continue;
        };
        if g.h.saturating_mul(g.w) > REFERENCE_MAX_RESIZED {
            return Err(OpError::invalid(
                OP,
                format!(
                    "box {i} is too large for the reference implementation ({}x{})",
                    g.h, g.w
                ),
            ));
        }
        let resized = resize_bilinear(padded.index_axis(Axis(0), i), g.h, g.w)?;
        let mut dst = out.index_axis_mut(Axis(0), i);
        for y in g.y0..g.y1 {
            for x in g.x0..g.x1 {
                let r = (y as i64 - g.oy) as usize;
                let c = (x as i64 - g.ox) as usize;
                dst[[y, x]] = resized[[r, c]];
            }
        }
    }
    Ok(out)
}

/// Fast [`paste_masks_in_image_reference`]: the same values, computed only where visible,
/// masks in parallel.
pub fn paste_masks_in_image(
    masks: ArrayView3<f32>,
    boxes: &[[f32; 4]],
    img_shape: (usize, usize),
    padding: usize,
) -> Result<Array3<f32>, OpError> {
    check(&masks, boxes)?;
    let (im_h, im_w) = img_shape;
    let (padded, scale) = expand_masks(masks, padding)?;
    let scale = scale as f32;
    let mut out = Array3::<f32>::zeros((boxes.len(), im_h, im_w));
    if out.is_empty() {
        return Ok(out);
    }
    let plane = im_h * im_w;
    let dst = out.as_slice_mut().unwrap_or(&mut []);
    dst.par_chunks_mut(plane)
        .zip(boxes.par_iter())
        .enumerate()
        .for_each(|(i, (d, b))| {
            let Some(g) = paste_geometry(b, scale, im_h, im_w) else {
                return;
            };
            let rows = (g.y0 as i64 - g.oy) as usize..(g.y1 as i64 - g.oy) as usize;
            let cols = (g.x0 as i64 - g.ox) as usize..(g.x1 as i64 - g.ox) as usize;
            let region = resize_region(padded.index_axis(Axis(0), i), g.h, g.w, rows, cols);
            let rw = g.x1 - g.x0;
            if let Some(src) = region.as_slice() {
                for (y, srow) in (g.y0..g.y1).zip(src.chunks_exact(rw)) {
                    d[y * im_w + g.x0..y * im_w + g.x1].copy_from_slice(srow);
                }
            }
        });
    Ok(out)
}

/// [`paste_masks_in_image`] into a caller's `[N, H, W]` array (every value is written): a
/// buffer reused across frames avoids the page faults of a fresh `N·H·W` allocation, which
/// dominate the dense paste's time.
pub fn paste_masks_into(
    masks: ArrayView3<f32>,
    boxes: &[[f32; 4]],
    padding: usize,
    mut out: ndarray::ArrayViewMut3<f32>,
) -> Result<(), OpError> {
    check(&masks, boxes)?;
    let (n, im_h, im_w) = out.dim();
    if n != boxes.len() {
        return Err(OpError::shape(
            OP,
            format!("output holds {n} masks but there are {} boxes", boxes.len()),
        ));
    }
    let (padded, scale) = expand_masks(masks, padding)?;
    let scale = scale as f32;
    let planes: Vec<(usize, ndarray::ArrayViewMut2<f32>)> =
        out.outer_iter_mut().enumerate().collect();
    planes.into_par_iter().for_each(|(i, mut plane)| {
        let Some(g) = paste_geometry(&boxes[i], scale, im_h, im_w) else {
            plane.fill(0.0);
            return;
        };
        let rows = (g.y0 as i64 - g.oy) as usize..(g.y1 as i64 - g.oy) as usize;
        let cols = (g.x0 as i64 - g.ox) as usize..(g.x1 as i64 - g.ox) as usize;
        let region = resize_region(padded.index_axis(Axis(0), i), g.h, g.w, rows, cols);
        for (y, mut row) in plane.outer_iter_mut().enumerate() {
            if y < g.y0 || y >= g.y1 {
                row.fill(0.0);
                continue;
            }
            row.slice_mut(ndarray::s![..g.x0]).fill(0.0);
            row.slice_mut(ndarray::s![g.x1..]).fill(0.0);
            row.slice_mut(ndarray::s![g.x0..g.x1])
                .assign(&region.row(y - g.y0));
        }
    });
    Ok(())
}

/// The visible part of one pasted mask: image rows `y0..y0 + data.nrows()`, columns
/// `x0..x0 + data.ncols()`; everything else is 0.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskRegion {
    pub y0: usize,
    pub x0: usize,
    pub data: Array2<f32>,
}

impl MaskRegion {
    /// Writes the region into an `H x W` plane (which must contain it).
    pub fn write_into(&self, plane: &mut ndarray::ArrayViewMut2<f32>) -> Result<(), OpError> {
        let (h, w) = self.data.dim();
        let (ph, pw) = plane.dim();
        if self.y0 + h > ph || self.x0 + w > pw {
            return Err(OpError::shape(OP, "the region does not fit in the plane"));
        }
        plane
            .slice_mut(ndarray::s![self.y0..self.y0 + h, self.x0..self.x0 + w])
            .assign(&self.data);
        Ok(())
    }
}

/// [`paste_masks_in_image`] without the dense `N x H x W` output: for each mask, only its
/// visible region (`None` when nothing is visible). The values are the same; a consumer that
/// thresholds, encodes or draws masks needs nothing else, and skips writing (and the OS
/// zeroing) `N·H·W` floats.
pub fn paste_masks_regions(
    masks: ArrayView3<f32>,
    boxes: &[[f32; 4]],
    img_shape: (usize, usize),
    padding: usize,
) -> Result<Vec<Option<MaskRegion>>, OpError> {
    check(&masks, boxes)?;
    let (im_h, im_w) = img_shape;
    let (padded, scale) = expand_masks(masks, padding)?;
    let scale = scale as f32;
    Ok(boxes
        .par_iter()
        .enumerate()
        .map(|(i, b)| {
            let g = paste_geometry(b, scale, im_h, im_w)?;
            let rows = (g.y0 as i64 - g.oy) as usize..(g.y1 as i64 - g.oy) as usize;
            let cols = (g.x0 as i64 - g.ox) as usize..(g.x1 as i64 - g.ox) as usize;
            Some(MaskRegion {
                y0: g.y0,
                x0: g.x0,
                data: resize_region(padded.index_axis(Axis(0), i), g.h, g.w, rows, cols),
            })
        })
        .collect())
}

/// Detectron2's pasting of one `M x M` mask probability map (`detectron2/layers/mask_ops.py`,
/// `_do_paste_mask` as `paste_masks_in_image` calls it on the CPU, one mask per chunk with
/// `skip_empty`): the region is columns `max(floor(x0) - 1, 0)..min(ceil(x1) + 1, W)` and rows
/// likewise; each pixel centre `i + 0.5` maps to `g = (i + 0.5 - x0) / (x1 - x0) · 2 - 1` and
/// `F.grid_sample(..., align_corners=False)` reads the mask bilinearly at
/// `(g + 1) · M/2 - 0.5` with zeros outside it, all in f32 in the order of torch's CPU
/// kernel. Pixels outside the region are 0. `None` when the region is empty (or the box is
/// not finite).
pub fn paste_mask_grid_sample(
    mask: ArrayView2<f32>,
    b: &[f32; 4],
    (im_h, im_w): (usize, usize),
) -> Option<MaskRegion> {
    if !b.iter().all(|v| v.is_finite()) {
        return None;
    }
    let (mh, mw) = mask.dim();
    let lo = |v: f32| (v.floor() - 1.0).max(0.0) as usize;
    let hi = |v: f32, limit: usize| ((v.ceil() + 1.0).min(limit as f32)).max(0.0) as usize;
    let (x0, y0) = (lo(b[0]).min(im_w), lo(b[1]).min(im_h));
    let (x1, y1) = (hi(b[2], im_w), hi(b[3], im_h));
    if x1 <= x0 || y1 <= y0 {
        return None;
    }
    // (index + 0.5 - start) / (end - start) · 2 - 1, then grid_sample's source position.
    let source = |i: usize, start: f32, end: f32, size: usize| {
        let g = (i as f32 + 0.5 - start) / (end - start) * 2.0 - 1.0;
        crate::layers::grid_sample::unnormalize(g, size, false)
    };
    let xs: Vec<f32> = (x0..x1).map(|i| source(i, b[0], b[2], mw)).collect();
    let data = Array2::from_shape_fn((y1 - y0, x1 - x0), |(r, c)| {
        crate::layers::grid_sample::sample(mask, source(y0 + r, b[1], b[3], mh), xs[c])
    });
    Some(MaskRegion { y0, x0, data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    #[test]
    fn grid_sample_paste_by_hand() {
        // A constant 2x2 mask on the box (2, 2)-(6, 6): the region is 1..7 in both axes.
        let m = Array::from_elem((2, 2), 1.0f32);
        let r = paste_mask_grid_sample(m.view(), &[2.0, 2.0, 6.0, 6.0], (10, 10)).unwrap();
        assert_eq!((r.y0, r.x0, r.data.dim()), (1, 1, (6, 6)));
        // Pixel 1 (centre 1.5) samples the mask at (1.5 - 2) / 4 * 2 - 0.5 = -0.75: a quarter of
        // a pixel from zero padding in each axis. Pixel 3 (centre 3.5) is inside: 1.
        assert_eq!(r.data[[0, 0]], 0.25 * 0.25);
        assert_eq!(r.data[[2, 2]], 1.0);
        assert_eq!(r.data[[2, 0]], 0.25);
        // Clamped to the image, and nothing for a box outside it or not finite.
        let r = paste_mask_grid_sample(m.view(), &[7.5, 8.0, 12.0, 12.0], (10, 10)).unwrap();
        assert_eq!((r.y0, r.x0, r.data.dim()), (7, 6, (3, 4)));
        assert!(paste_mask_grid_sample(m.view(), &[11.5, 2.0, 14.0, 6.0], (10, 10)).is_none());
        assert!(paste_mask_grid_sample(m.view(), &[f32::NAN, 2.0, 4.0, 6.0], (10, 10)).is_none());
    }

    #[test]
    fn expand_by_hand() {
        let e = expand_boxes(&[[10.0, 20.0, 38.0, 48.0]], 30.0 / 28.0);
        // centre (24, 34), half-size 14 * 30/28 = 15.
        assert_eq!(e[0], [9.0, 19.0, 39.0, 49.0]);
        let m = Array::from_elem((2, 28, 28), 1.0f32);
        let (p, s) = expand_masks(m.view(), 1).unwrap();
        assert_eq!(p.dim(), (2, 30, 30));
        assert_eq!(s, 30.0 / 28.0);
        assert_eq!(p[[0, 0, 0]], 0.0);
        assert_eq!(p[[0, 1, 1]], 1.0);
    }

    #[test]
    fn resize_identity_and_constant() {
        let x = Array::from_shape_fn((5, 7), |(y, x)| (y * 7 + x) as f32);
        assert_eq!(resize_bilinear(x.view(), 5, 7).unwrap(), x);
        let c = Array::from_elem((4, 4), 0.5f32);
        for (h, w) in [(3, 9), (100, 60), (1, 1), (200, 3)] {
            let r = resize_bilinear(c.view(), h, w).unwrap();
            assert!(r.iter().all(|&v| (v - 0.5).abs() < 1e-6));
        }
        // 2x upsampling of [0, 1]: [0, 0.25, 0.75, 1].
        let row = Array::from_shape_vec((1, 2), vec![0.0f32, 1.0]).unwrap();
        let r = resize_bilinear(row.view(), 1, 4).unwrap();
        assert_eq!(r.as_slice().unwrap(), &[0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn fast_equals_reference_with_borders_and_bad_boxes() {
        let masks = Array::from_shape_fn((7, 28, 28), |(i, y, x)| {
            ((i * 13 + y * 7 + x * 3) % 17) as f32 / 16.0
        });
        let boxes = [
            [10.0, 12.0, 60.0, 40.0],
            [-20.0, -5.0, 30.0, 25.0],    // top-left border
            [90.0, 50.0, 140.0, 95.0],    // bottom-right border
            [40.0, 30.0, 40.5, 30.2],     // degenerate
            [-10.0, 10.0, 250.0, 20.0],   // wider than the image (generic kernel)
            [200.0, 200.0, 300.0, 300.0], // fully outside
            [f32::NAN, 0.0, 10.0, 10.0],  // NaN → empty
        ];
        let a = paste_masks_in_image_reference(masks.view(), &boxes, (80, 120), 1).unwrap();
        let b = paste_masks_in_image(masks.view(), &boxes, (80, 120), 1).unwrap();
        assert_eq!(a.dim(), (7, 80, 120));
        for (u, v) in a.iter().zip(b.iter()) {
            assert_eq!(u.to_bits(), v.to_bits());
        }
        assert!(a.index_axis(Axis(0), 5).iter().all(|&v| v == 0.0));
        assert!(a.index_axis(Axis(0), 6).iter().all(|&v| v == 0.0));
        assert!(a.index_axis(Axis(0), 0).iter().any(|&v| v > 0.0));
        let regions = paste_masks_regions(masks.view(), &boxes, (80, 120), 1).unwrap();
        for (i, r) in regions.iter().enumerate() {
            let mut plane = Array2::<f32>::zeros((80, 120));
            if let Some(r) = r {
                r.write_into(&mut plane.view_mut()).unwrap();
            }
            assert_eq!(plane, a.index_axis(Axis(0), i));
        }
        assert!(regions[5].is_none() && regions[6].is_none());
        let mut into = Array3::<f32>::from_elem((7, 80, 120), 9.0);
        paste_masks_into(masks.view(), &boxes, 1, into.view_mut()).unwrap();
        assert_eq!(into, a);
        assert!(paste_masks_in_image(masks.view(), &boxes[..2], (80, 120), 1).is_err());
        let empty = Array3::<f32>::zeros((0, 28, 28));
        assert_eq!(
            paste_masks_in_image(empty.view(), &[], (8, 8), 1)
                .unwrap()
                .dim(),
            (0, 8, 8)
        );
    }
}
