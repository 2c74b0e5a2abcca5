//! Pooling on `[N, C, H, W]`: max, average (torch's `padding`, `ceil_mode`,
//! `count_include_pad`, `divisor_override`) and adaptive average, parallel over planes; and
//! on `[N, H, W, C]` with TF's rules ([`max_pool2d_nhwc`], [`avg_pool2d_nhwc`]: `SAME`,
//! `VALID` or explicit padding, the average over the cells inside the input, and a NaN that
//! does not win a maximum), vectorised over channels.

use ndarray::{Array4, ArrayView4};
use rayon::prelude::*;

use super::conv_nhwc::{window, Padding};
use super::{checked_numel, invalid, shape_err, Result};

/// Kernel, stride, padding, dilation (max pooling only) and `ceil_mode`, as torch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dParams {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub ceil_mode: bool,
}

impl Pool2dParams {
    /// A `k x k` window with stride `k` (torch's default `stride = kernel_size`).
    pub fn new(k: usize) -> Self {
        Pool2dParams {
            kernel: (k, k),
            stride: (k, k),
            padding: (0, 0),
            dilation: (1, 1),
            ceil_mode: false,
        }
    }
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = (s, s);
        self
    }
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = (p, p);
        self
    }
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = (d, d);
        self
    }
    pub fn ceil_mode(mut self, c: bool) -> Self {
        self.ceil_mode = c;
        self
    }
}

/// torch's `pooling_output_shape`: floor (or ceil) division, and in ceil mode the last window
/// must start inside the input or the left padding.
fn pool_out(
    op: &'static str,
    input: usize,
    k: usize,
    s: usize,
    p: usize,
    d: usize,
    ceil: bool,
) -> Result<usize> {
    let num = input as i64 + 2 * p as i64 - d as i64 * (k as i64 - 1) - 1
        + if ceil { s as i64 - 1 } else { 0 };
    let mut out = num.div_euclid(s as i64) + 1;
    if ceil && (out - 1) * s as i64 >= input as i64 + p as i64 {
        out -= 1;
    }
    if out <= 0 {
        return shape_err(
            op,
            format!(
                "input size {input} gives an empty output (kernel {k}, padding {p}, dilation {d})"
            ),
        );
    }
    Ok(out as usize)
}

fn check(op: &'static str, x: &ArrayView4<'_, f32>, p: &Pool2dParams) -> Result<(usize, usize)> {
    let (kh, kw) = p.kernel;
    if kh == 0
        || kw == 0
        || p.stride.0 == 0
        || p.stride.1 == 0
        || p.dilation.0 == 0
        || p.dilation.1 == 0
    {
        return invalid(
            op,
            format!("kernel, stride and dilation must be positive: {p:?}"),
        );
    }
    if p.padding.0 > kh / 2 || p.padding.1 > kw / 2 {
        return invalid(
            op,
            format!(
                "padding {:?} must be at most half of the kernel {:?}",
                p.padding, p.kernel
            ),
        );
    }
    let (_, _, h, w) = x.dim();
    Ok((
        pool_out(
            op,
            h,
            kh,
            p.stride.0,
            p.padding.0,
            p.dilation.0,
            p.ceil_mode,
        )?,
        pool_out(
            op,
            w,
            kw,
            p.stride.1,
            p.padding.1,
            p.dilation.1,
            p.ceil_mode,
        )?,
    ))
}

fn run_planes<F>(
    op: &'static str,
    x: ArrayView4<'_, f32>,
    oh: usize,
    ow: usize,
    f: F,
) -> Result<Array4<f32>>
where
    F: Fn(&[f32], &mut [f32]) + Sync,
{
    let (n, c, h, w) = x.dim();
    let total = checked_numel(op, &[n, c, oh, ow])?;
    let mut out = super::zeroed(total);
    let x = x.as_standard_layout();
    let xs = x.as_slice().ok_or(super::LayerError::Invalid {
        op,
        msg: "not contiguous".into(),
    })?;
    if total > 0 {
        out.par_chunks_mut(oh * ow)
            .enumerate()
            .for_each(|(i, o)| f(&xs[i * h * w..][..h * w], o));
    }
    Array4::from_shape_vec((n, c, oh, ow), out).or_else(|e| invalid(op, e.to_string()))
}

/// `torch.nn.functional.max_pool2d` (padding counts as −∞; NaN propagates).
pub fn max_pool2d(x: ArrayView4<'_, f32>, p: Pool2dParams) -> Result<Array4<f32>> {
    const OP: &str = "max_pool2d";
    let (oh, ow) = check(OP, &x, &p)?;
    let (_, _, h, w) = x.dim();
    run_planes(OP, x, oh, ow, |src, dst| {
        for oy in 0..oh {
            let mut ys = (oy * p.stride.0) as i64 - p.padding.0 as i64;
            let ye = (ys + ((p.kernel.0 - 1) * p.dilation.0) as i64 + 1).min(h as i64);
            while ys < 0 {
                ys += p.dilation.0 as i64;
            }
            for ox in 0..ow {
                let mut xs0 = (ox * p.stride.1) as i64 - p.padding.1 as i64;
                let xe = (xs0 + ((p.kernel.1 - 1) * p.dilation.1) as i64 + 1).min(w as i64);
                while xs0 < 0 {
                    xs0 += p.dilation.1 as i64;
                }
                let mut m = f32::NEG_INFINITY;
                let mut y = ys;
                while y < ye {
                    let row = &src[y as usize * w..][..w];
                    let mut xx = xs0;
                    while xx < xe {
                        let v = row[xx as usize];
                        if v > m || v.is_nan() {
                            m = v;
                        }
                        xx += p.dilation.1 as i64;
                    }
                    y += p.dilation.0 as i64;
                }
                dst[oy * ow + ox] = m;
            }
        }
    })
}

/// `torch.nn.functional.avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad,
/// divisor_override)`. `p.dilation` must be 1 (torch has none for average pooling).
pub fn avg_pool2d(
    x: ArrayView4<'_, f32>,
    p: Pool2dParams,
    count_include_pad: bool,
    divisor_override: Option<usize>,
) -> Result<Array4<f32>> {
    const OP: &str = "avg_pool2d";
    if p.dilation != (1, 1) {
        return invalid(OP, "average pooling has no dilation");
    }
    if divisor_override == Some(0) {
        return invalid(OP, "divisor_override must be positive");
    }
    let (oh, ow) = check(OP, &x, &p)?;
    let (_, _, h, w) = x.dim();
    let (h, w) = (h as i64, w as i64);
    let (kh, kw) = (p.kernel.0 as i64, p.kernel.1 as i64);
    let (ph, pw) = (p.padding.0 as i64, p.padding.1 as i64);
    run_planes(OP, x, oh, ow, |src, dst| {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut y0 = oy as i64 * p.stride.0 as i64 - ph;
                let mut x0 = ox as i64 * p.stride.1 as i64 - pw;
                let mut y1 = (y0 + kh).min(h + ph);
                let mut x1 = (x0 + kw).min(w + pw);
                let pool_size = (y1 - y0) * (x1 - x0);
                y0 = y0.max(0);
                x0 = x0.max(0);
                y1 = y1.min(h);
                x1 = x1.min(w);
                if y0 >= y1 || x0 >= x1 {
                    dst[oy * ow + ox] = 0.0;
                    continue;
                }
                let mut s = 0f32;
                for y in y0..y1 {
                    for xx in x0..x1 {
                        s += src[(y * w + xx) as usize];
                    }
                }
                let div = match divisor_override {
                    Some(d) => d as i64,
                    None if count_include_pad => pool_size,
                    None => (y1 - y0) * (x1 - x0),
                };
                dst[oy * ow + ox] = s / div as f32;
            }
        }
    })
}

/// TF's `MaxPool` on `[N, H, W, C]`: padding never wins, and a NaN does not replace a
/// maximum (TF.js's `>` comparison).
pub fn max_pool2d_nhwc(
    x: ArrayView4<'_, f32>,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: Padding,
) -> Result<Array4<f32>> {
    pool_nhwc("max_pool2d_nhwc", x, kernel, stride, padding, true)
}

/// TF's `AvgPool` on `[N, H, W, C]`: the mean of the cells inside the input (padding is not
/// counted).
pub fn avg_pool2d_nhwc(
    x: ArrayView4<'_, f32>,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: Padding,
) -> Result<Array4<f32>> {
    pool_nhwc("avg_pool2d_nhwc", x, kernel, stride, padding, false)
}

fn pool_nhwc(
    op: &'static str,
    x: ArrayView4<'_, f32>,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: Padding,
    max: bool,
) -> Result<Array4<f32>> {
    let (n, h, w, c) = x.dim();
    let [_, oh, ow, _] = pool2d_nhwc_dims(op, [n, h, w, c], kernel, stride, padding)?;
    let x = x.as_standard_layout();
    let xs = x.as_slice().ok_or(super::LayerError::Invalid {
        op,
        msg: "not contiguous".into(),
    })?;
    // A plain zeroed vector, as the NHWC convolutions (see `conv_nhwc`).
    let mut out = vec![0f32; checked_numel(op, &[n, oh, ow, c])?];
    pool2d_nhwc_into(xs, [n, h, w, c], kernel, stride, padding, max, &mut out)?;
    Array4::from_shape_vec((n, oh, ow, c), out).or_else(|e| invalid(op, e.to_string()))
}

/// The output dimensions of a pooling of `x` (`[N, H, W, C]`).
pub fn pool2d_nhwc_dims(
    op: &'static str,
    [n, h, w, c]: [usize; 4],
    (kh, kw): (usize, usize),
    stride: (usize, usize),
    padding: Padding,
) -> Result<[usize; 4]> {
    let (oh, _) = window(op, h, kh, stride.0, 1, padding, 0)?;
    let (ow, _) = window(op, w, kw, stride.1, 1, padding, 1)?;
    checked_numel(op, &[n, oh, ow, c])?;
    Ok([n, oh, ow, c])
}

/// Max (`max`) or average pooling of `xs` (`[N, H, W, C]`) into `out`
/// ([`pool2d_nhwc_dims`]); allocates nothing.
pub fn pool2d_nhwc_into(
    xs: &[f32],
    [n, h, w, c]: [usize; 4],
    (kh, kw): (usize, usize),
    stride: (usize, usize),
    padding: Padding,
    max: bool,
    out: &mut [f32],
) -> Result<()> {
    let op = if max {
        "max_pool2d_nhwc"
    } else {
        "avg_pool2d_nhwc"
    };
    let (oh, pt) = window(op, h, kh, stride.0, 1, padding, 0)?;
    let (ow, pl) = window(op, w, kw, stride.1, 1, padding, 1)?;
    if xs.len() != n * h * w * c || out.len() != n * oh * ow * c {
        return super::shape_err(
            op,
            format!(
                "buffers of {} and {} values do not fit [{n}, {h}, {w}, {c}] pooled to {oh}x{ow}",
                xs.len(),
                out.len()
            ),
        );
    }
    if out.is_empty() {
        return Ok(());
    }
    let g = PoolGeom {
        h,
        w,
        c,
        kh,
        kw,
        stride,
        pt,
        pl,
        ow,
    };
    out.par_chunks_mut(ow * c)
        .enumerate()
        .with_min_len(super::min_rows_per_task(ow * c * kh * kw))
        .for_each(|(row, orow)| {
            let b = row / oh;
            let xb = &xs[b * h * w * c..(b + 1) * h * w * c];
            if max {
                max_pool_row(orow, xb, row % oh, &g);
            } else {
                avg_pool_row(orow, xb, row % oh, &g);
            }
        });
    Ok(())
}

/// The geometry of [`pool2d_nhwc_into`].
struct PoolGeom {
    h: usize,
    w: usize,
    c: usize,
    kh: usize,
    kw: usize,
    stride: (usize, usize),
    pt: usize,
    pl: usize,
    ow: usize,
}

/// Output row `oy` of a pooling of one image `xb`: per output pixel, blocks of 16, 8, then 1
/// channels held on the stack over the window, so that the loops compile to whole vectors
/// (with AVX2 where the CPU has it). Max keeps `a` unless `v > a`, so NaN in `v` keeps `a`,
/// as TF.js's comparison does; the average sums in window order and divides by the cells
/// inside the input.
#[inline(always)]
fn pool_row_impl<const MAX: bool>(orow: &mut [f32], xb: &[f32], oy: usize, g: &PoolGeom) {
    let y0 = (oy * g.stride.0) as isize - g.pt as isize;
    let ys = y0.max(0) as usize;
    let ye = ((y0 + g.kh as isize).max(0) as usize).min(g.h);
    for ox in 0..g.ow {
        let x0 = (ox * g.stride.1) as isize - g.pl as isize;
        let xs = x0.max(0) as usize;
        let xe = ((x0 + g.kw as isize).max(0) as usize).min(g.w);
        let window = (ys..ye, xs..xe);
        let o = &mut orow[ox * g.c..(ox + 1) * g.c];
        let mut c0 = 0;
        while c0 + 16 <= g.c {
            pool_block::<MAX, 16>(o, xb, &window, c0, g);
            c0 += 16;
        }
        if c0 + 8 <= g.c {
            pool_block::<MAX, 8>(o, xb, &window, c0, g);
            c0 += 8;
        }
        while c0 < g.c {
            pool_block::<MAX, 1>(o, xb, &window, c0, g);
            c0 += 1;
        }
    }
}

/// Channels `c0..c0 + L` of one output pixel over its `window` (input rows and columns).
#[inline(always)]
fn pool_block<const MAX: bool, const L: usize>(
    o: &mut [f32],
    xb: &[f32],
    (rows, cols): &(std::ops::Range<usize>, std::ops::Range<usize>),
    c0: usize,
    g: &PoolGeom,
) {
    let mut acc = [if MAX { f32::NEG_INFINITY } else { 0.0 }; L];
    for iy in rows.clone() {
        for ix in cols.clone() {
            let p: &[f32; L] = xb[(iy * g.w + ix) * g.c + c0..][..L]
                .try_into()
                .expect("L values");
            for l in 0..L {
                acc[l] = if MAX {
                    if p[l] > acc[l] {
                        p[l]
                    } else {
                        acc[l]
                    }
                } else {
                    acc[l] + p[l]
                };
            }
        }
    }
    if !MAX {
        let count = (rows.len() * cols.len()).max(1) as f32;
        for a in acc.iter_mut() {
            *a /= count;
        }
    }
    o[c0..c0 + L].copy_from_slice(&acc);
}

crate::ops::simd::multiversion!(fn max_pool_row(orow: &mut [f32], xb: &[f32], oy: usize, g: &PoolGeom) => pool_row_impl::<true>);
crate::ops::simd::multiversion!(fn avg_pool_row(orow: &mut [f32], xb: &[f32], oy: usize, g: &PoolGeom) => pool_row_impl::<false>);

/// `torch.nn.functional.adaptive_avg_pool2d(x, (out_h, out_w))`: window `i` spans
/// `[floor(i·in/out), ceil((i+1)·in/out))`.
pub fn adaptive_avg_pool2d(x: ArrayView4<'_, f32>, out: (usize, usize)) -> Result<Array4<f32>> {
    adaptive_pool2d("adaptive_avg_pool2d", x, out, |rows, area| {
        let mut s = 0f32;
        for row in rows {
            for v in row {
                s += v;
            }
        }
        s / area as f32
    })
}

/// `torch.nn.functional.adaptive_max_pool2d(x, (out_h, out_w))`, the same windows as
/// [`adaptive_avg_pool2d`]; a NaN in a window is its maximum, as torch's.
pub fn adaptive_max_pool2d(x: ArrayView4<'_, f32>, out: (usize, usize)) -> Result<Array4<f32>> {
    adaptive_pool2d("adaptive_max_pool2d", x, out, |rows, _| {
        let mut m = f32::NEG_INFINITY;
        for row in rows {
            for &v in row {
                if v.is_nan() {
                    return v;
                }
                m = m.max(v);
            }
        }
        m
    })
}

/// The adaptive poolings: output cell `(i, j)` is `reduce` of the window rows
/// `[floor(i·h/oh), ceil((i+1)·h/oh))` x `[floor(j·w/ow), ceil((j+1)·w/ow))` (and the
/// window's area).
fn adaptive_pool2d(
    op: &'static str,
    x: ArrayView4<'_, f32>,
    (oh, ow): (usize, usize),
    reduce: impl Fn(&mut dyn Iterator<Item = &[f32]>, usize) -> f32 + Sync,
) -> Result<Array4<f32>> {
    let (_, _, h, w) = x.dim();
    if oh == 0 || ow == 0 {
        return invalid(op, "output size must be positive");
    }
    if h == 0 || w == 0 {
        return shape_err(op, "input has an empty spatial size");
    }
    let start = |a: usize, o: usize, i: usize| (a * i) / o;
    let end = |a: usize, o: usize, i: usize| ((a + 1) * i).div_ceil(o);
    run_planes(op, x, oh, ow, |src, dst| {
        for oy in 0..oh {
            let (y0, y1) = (start(oy, oh, h), end(oy, oh, h));
            for ox in 0..ow {
                let (x0, x1) = (start(ox, ow, w), end(ox, ow, w));
                let mut rows = (y0..y1).map(|y| &src[y * w + x0..y * w + x1]);
                dst[oy * ow + ox] = reduce(&mut rows, (y1 - y0) * (x1 - x0));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    #[test]
    fn output_sizes_follow_torch() {
        // torch: MaxPool2d(3, 2, ceil_mode=True) on 6 -> 3 (the last window would start at 6 = input)
        assert_eq!(pool_out("t", 6, 3, 2, 0, 1, true).unwrap(), 3);
        assert_eq!(pool_out("t", 7, 3, 2, 0, 1, true).unwrap(), 3);
        assert_eq!(pool_out("t", 8, 3, 2, 0, 1, true).unwrap(), 4);
        assert_eq!(pool_out("t", 8, 3, 2, 0, 1, false).unwrap(), 3);
        assert_eq!(pool_out("t", 112, 3, 2, 1, 1, false).unwrap(), 56);
        assert!(pool_out("t", 1, 3, 1, 0, 1, false).is_err());
    }

    #[test]
    fn small_pools() {
        let x = Array::from_shape_vec((1, 1, 3, 3), (1..=9).map(|v| v as f32).collect()).unwrap();
        let m = max_pool2d(x.view(), Pool2dParams::new(2).stride(1)).unwrap();
        assert_eq!(m.as_slice().unwrap(), &[5.0, 6.0, 8.0, 9.0]);
        let a = avg_pool2d(x.view(), Pool2dParams::new(2).padding(1), false, None).unwrap();
        assert_eq!(a.as_slice().unwrap(), &[1.0, 2.5, 5.5, 7.0]);
        let a = avg_pool2d(x.view(), Pool2dParams::new(2).padding(1), true, None).unwrap();
        assert_eq!(a.as_slice().unwrap(), &[0.25, 1.25, 2.75, 7.0]);
        let g = adaptive_avg_pool2d(x.view(), (1, 1)).unwrap();
        assert_eq!(g.as_slice().unwrap(), &[5.0]);
        assert!(max_pool2d(x.view(), Pool2dParams::new(2).padding(2)).is_err());
        assert!(max_pool2d(x.view(), Pool2dParams::new(0)).is_err());
        assert!(max_pool2d(x.view(), Pool2dParams::new(4)).is_err());
    }

    /// The NHWC pools equal the NCHW ones where their rules agree (no padding), and TF's SAME
    /// average divides by the cells inside the input.
    /// Channels in blocks of 16, 8 and 1 (3 and 27 channels) are checked.
    #[test]
    fn nhwc_pools() {
        for channels in [3, 27] {
            let x = ndarray::Array::from_shape_fn((1, 5, 6, channels), |(_, y, x, c)| {
                ((y * 7 + x * 3 + c * 5) % 11) as f32
            });
            let nchw = x.view().permuted_axes([0, 3, 1, 2]);
            let p = Pool2dParams::new(2);
            let max = max_pool2d_nhwc(x.view(), (2, 2), (2, 2), Padding::Valid).unwrap();
            let max_t = max_pool2d(nchw, p).unwrap();
            assert_eq!(max, max_t.permuted_axes([0, 2, 3, 1]));
            let avg = avg_pool2d_nhwc(x.view(), (2, 2), (2, 2), Padding::Valid).unwrap();
            let avg_t = avg_pool2d(nchw, p, false, None).unwrap();
            assert_eq!(avg, avg_t.permuted_axes([0, 2, 3, 1]));
        }
        // TF's max: a NaN after the first cell of a window does not win it.
        let mut x =
            ndarray::Array::from_shape_fn((1, 2, 2, 17), |(_, y, x, c)| (y * 2 + x + c) as f32);
        x[[0, 1, 1, 16]] = f32::NAN;
        x[[0, 0, 1, 3]] = f32::NAN;
        let max = max_pool2d_nhwc(x.view(), (2, 2), (2, 2), Padding::Valid).unwrap();
        assert_eq!(max[[0, 0, 0, 16]], 18.0);
        assert_eq!(max[[0, 0, 0, 3]], 6.0);
        let x = ndarray::Array::from_shape_fn((1, 5, 6, 3), |(_, y, x, c)| {
            ((y * 7 + x * 3 + c * 5) % 11) as f32
        });
        // SAME on 5 rows with a 2x2 window: the last output row covers row 4 alone.
        let same = avg_pool2d_nhwc(x.view(), (2, 2), (2, 2), Padding::Same).unwrap();
        assert_eq!(same.dim(), (1, 3, 3, 3));
        let want = (x[[0, 4, 0, 1]] + x[[0, 4, 1, 1]]) / 2.0;
        assert_eq!(same[[0, 2, 0, 1]], want);
    }
}
