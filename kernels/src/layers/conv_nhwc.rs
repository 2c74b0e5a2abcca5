//! Convolutions in TensorFlow's `NHWC` layout with TF's padding rules, for converted TF.js
//! and TFLite graphs (and, through [`NhwcConv2d`], PyTorch convolutions run in `NHWC`): [`conv2d_nhwc`] (im2col + GEMM; a 1x1 stride-1 convolution multiplies
//! the input directly), [`depthwise_conv2d_nhwc`] (direct, vectorised over channels) and
//! [`conv_transpose2d_nhwc`] (GEMM + col2im). Filters are in TF's layouts (`[KH, KW, C, CO]`,
//! `[KH, KW, C, M]`, `[KH, KW, CO, CI]`). Bias and activation are the caller's: the graph
//! executors fuse them with their own activation set.
//!
//! The `NCHW` convolutions of PyTorch models are [`super::conv`]; the two share the GEMM
//! ([`super::gemm`]) and differ in layout and in how padding is given (TF's `SAME` pads
//! asymmetrically, more after than before).
//!
//! Outputs are plain zeroed vectors, not [`super::zeroed`]'s parallel fill: the tensors of
//! mobile networks are small, and a rayon dispatch per op costs more than the page faults it
//! saves (measured on the TF.js models).

use ndarray::{Array4, ArrayView4};
use rayon::prelude::*;

use super::bf16::Precision;
use super::gemm::{sgemm_with, Backend, MatMut, MatRef, Threading};
use super::packed_gemm::{
    gemm_packed, gemm_packed_runs_then, gemm_packed_then, Epilogue, PackedMatrix, Runs,
};
use super::winograd::{conv_nhwc_winograd, NhwcWinograd, NhwcWinogradPlan};
use super::{checked_numel, invalid, shape_err, Result};

/// Spatial padding of a convolution or pooling window, as TF gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Output size `ceil(in / stride)`; the padding is split with the odd cell after.
    Same,
    /// No padding.
    Valid,
    /// top, bottom, left, right.
    Explicit([usize; 4]),
}

/// Output size and padding before, along one spatial axis (`axis` 0: height, 1: width).
pub(crate) fn window(
    op: &'static str,
    input: usize,
    k: usize,
    stride: usize,
    dil: usize,
    padding: Padding,
    axis: usize,
) -> Result<(usize, usize)> {
    if stride == 0 || dil == 0 || k == 0 {
        return invalid(op, "stride, dilation and kernel size must be >= 1");
    }
    let eff = (k - 1) * dil + 1;
    match padding {
        Padding::Same => {
            let out = input.div_ceil(stride);
            let total = (out.saturating_sub(1) * stride + eff).saturating_sub(input);
            Ok((out, total / 2))
        }
        Padding::Valid => {
            if input < eff {
                return shape_err(
                    op,
                    format!(
                        "input size {input} is smaller than the kernel ({eff}) with VALID padding"
                    ),
                );
            }
            Ok(((input - eff) / stride + 1, 0))
        }
        Padding::Explicit(p) => {
            let (before, after) = if axis == 0 {
                (p[0], p[1])
            } else {
                (p[2], p[3])
            };
            let padded = input + before + after;
            if padded < eff {
                return shape_err(
                    op,
                    format!("padded input size {padded} is smaller than the kernel ({eff})"),
                );
            }
            Ok(((padded - eff) / stride + 1, before))
        }
    }
}

/// Strides, dilations and padding of an `NHWC` convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NhwcConvGeom {
    pub strides: (usize, usize),
    pub dilations: (usize, usize),
    pub padding: Padding,
}

/// Products from this many multiply-adds on use every rayon thread: the small products of
/// mobile networks gain from it earlier than [`Threading::Auto`]'s threshold.
const NHWC_PARALLEL_MIN_MACS: usize = 1 << 18;

/// `c[m×n] = a·b` with `a` element (i, p) at `a[i*a_rs + p*a_cs]`, `b` element (p, j) at
/// `b[p*b_rs + j*b_cs]`, and `c` row-major; one thread inside a task of a parallel loop.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_small(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
    c: &mut [f32],
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    let Some(c) = c.get_mut(..m * n) else {
        return shape_err(
            "sgemm",
            format!("output holds {} values, needs {m}x{n}", c.len()),
        );
    };
    let threading = if m * n * k >= NHWC_PARALLEL_MIN_MACS && !crate::process::in_parallel_task() {
        Threading::Threads(rayon::current_num_threads())
    } else {
        Threading::Single
    };
    sgemm_with(
        MatRef::new(a, m, k, a_rs, a_cs)?,
        MatRef::new(b, k, n, b_rs, b_cs)?,
        MatMut::row_major(c, m, n, n)?,
        false,
        Backend::Gemm,
        threading,
    )
}

/// Contiguous data of a view (copied only when it is not in standard layout).
fn contiguous<'a, T>(
    x: &'a ndarray::CowArray<'_, T, ndarray::Ix4>,
    op: &'static str,
) -> Result<&'a [T]> {
    x.as_slice().ok_or_else(|| super::LayerError::Invalid {
        op,
        msg: "not contiguous".into(),
    })
}

/// A `Conv2D` filter `[KH, KW, C, CO]` and its bias, packed once (at model load) for
/// [`conv2d_nhwc_packed`]: the filter read as a `KH·KW·C x CO` matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedFilter {
    kh: usize,
    kw: usize,
    c: usize,
    matrix: PackedMatrix,
    /// A 3x3 filter's Winograd weights, for stride-1 undilated convolutions of large enough
    /// maps (see [`ConvPlan`]).
    winograd: Option<NhwcWinograd>,
}

impl PackedFilter {
    /// Packs `w` (`[KH, KW, C, CO]`) with `bias` (`CO` values) or none; a 3x3 filter takes
    /// F(2x2, 3x3) Winograd on large enough maps.
    pub fn new(w: ArrayView4<'_, f32>, bias: Option<&[f32]>) -> Result<PackedFilter> {
        Self::with_tiles(w, bias, Some(false))
    }

    /// [`PackedFilter::new`], with F(4x4, 3x3) Winograd on maps large enough for it (where
    /// the filter has 64 channels or more): 4x fewer multiplications than the direct
    /// convolution instead of 2.25x, for about 3 bits of the sums (relative errors of about
    /// 1e-5 instead of 1e-6). For heads checked against a reference that runs F(4x4) or at
    /// that tolerance (YOLACT's); the backbones keep F(2x2).
    pub fn allowing_f4(w: ArrayView4<'_, f32>, bias: Option<&[f32]>) -> Result<PackedFilter> {
        Self::with_tiles(w, bias, Some(true))
    }

    /// The filter with Winograd weights (`Some(f4)`: with F(4x4)'s where `f4`) or none.
    fn with_tiles(
        w: ArrayView4<'_, f32>,
        bias: Option<&[f32]>,
        winograd: Option<bool>,
    ) -> Result<PackedFilter> {
        let (kh, kw, c, co) = w.dim();
        let w = w.as_standard_layout();
        let ws = contiguous(&w, "PackedFilter")?;
        Ok(PackedFilter {
            kh,
            kw,
            c,
            matrix: PackedMatrix::new(ws, kh * kw * c, co, bias)?,
            winograd: match winograd {
                Some(f4) => NhwcWinograd::new(ws, [kh, kw, c, co], bias, f4)?,
                None => None,
            },
        })
    }

    /// `[KH, KW, C, CO]`.
    pub fn dims(&self) -> [usize; 4] {
        [self.kh, self.kw, self.c, self.matrix.n()]
    }
}

/// How [`conv2d_nhwc_packed`] runs on an input of `[N, H, W, C]`: the input's and the
/// output's dimensions, the padding before each axis, and the im2col scratch it needs (0 for
/// a 1x1 stride-1 convolution, which multiplies the input in place).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvPlan {
    pub input: [usize; 4],
    pub out: [usize; 4],
    pad_top: usize,
    pad_left: usize,
    rows_per_tile: usize,
    /// A 1x1 stride-1 convolution without padding: the input is the product's left matrix.
    direct: bool,
    /// Windows read in place (see [`Windows`]) instead of copied into im2col rows.
    windows: Option<Windows>,
    /// Winograd instead (F(2x2, 3x3), or F(4x4, 3x3) where the filter allows it;
    /// [`conv_nhwc_winograd`]): a 3x3 filter with its weights transformed, stride 1,
    /// undilated, on a map of enough tiles.
    winograd: Option<NhwcWinogradPlan>,
    pub scratch: usize,
}

/// An undilated convolution's windows read in place: each output pixel's window is `KH` runs
/// of `KW·C` values in the (padded) input, which the packed GEMM reads as a row
/// ([`Runs`]). The input is first copied into a zero-padded image of `height x width` pixels
/// (the input at `(pad_top, pad_left)`, zeros around it, every window inside) when the
/// padding needs one (`padded`; the scratch buffer holds it), else read as it is.
/// This replaces im2col, which copied each window: for a first layer's RGB input, runs of 3
/// values, its copies took longer than the product (selfie's first layer: 0.98 of 1.07 ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Windows {
    padded: bool,
    height: usize,
    width: usize,
}

/// Output columns from which windows are read in place: a tile of the GEMM stays within an
/// output row there, so narrower maps keep im2col, whose rows run across output rows.
const WINDOWS_MIN_OW: usize = 8;

/// The [`ConvPlan`] of `f` on an input of `x` `[N, H, W, C]`; errors when they do not fit.
pub fn conv2d_nhwc_plan(x: [usize; 4], f: &PackedFilter, geom: NhwcConvGeom) -> Result<ConvPlan> {
    const OP: &str = "conv2d_nhwc";
    let [n, h, wd, c] = x;
    let [kh, kw, wc, co] = f.dims();
    if wc != c {
        return shape_err(
            OP,
            format!(
                "the filter {:?} expects {wc} input channels, the input {x:?} has {c}",
                f.dims()
            ),
        );
    }
    let (sh, sw) = geom.strides;
    let (dh, dw) = geom.dilations;
    let (oh, pad_top) = window(OP, h, kh, sh, dh, geom.padding, 0)?;
    let (ow, pad_left) = window(OP, wd, kw, sw, dw, geom.padding, 1)?;
    checked_numel(OP, &[n, oh, ow, co])?;
    let kdim = kh * kw * c;
    let direct = kh == 1
        && kw == 1
        && sh == 1
        && sw == 1
        && pad_top == 0
        && pad_left == 0
        && oh == h
        && ow == wd;
    // im2col in tiles of output rows, about 4M floats at most.
    let rows_per_tile = ((1usize << 22) / (ow * kdim).max(1)).clamp(1, oh.max(1));
    // A large filter on a small map goes through im2col, whose rows run across output rows:
    // the product of all of them reads the filter once (see `packed_gemm::deep_product`),
    // where windows read in place would read it once an output row.
    let windows = (!direct
        && dh == 1
        && dw == 1
        && ow >= WINDOWS_MIN_OW
        && oh > 0
        && !f.matrix.deep_pays(n * oh * ow))
    .then(|| {
        // The windows span `reach_h x reach_w` pixels from the padded input's corner.
        let (reach_h, reach_w) = ((oh - 1) * sh + kh, (ow - 1) * sw + kw);
        Windows {
            padded: pad_top > 0 || pad_left > 0 || reach_h > h || reach_w > wd,
            height: reach_h.max(pad_top + h),
            width: reach_w.max(pad_left + wd),
        }
    });
    let winograd = match (&f.winograd, geom.strides, geom.dilations) {
        (Some(w), (1, 1), (1, 1)) => {
            NhwcWinogradPlan::new(w, n, oh, ow, rayon::current_num_threads())
        }
        _ => None,
    };
    let scratch = match (winograd, windows) {
        (Some(w), _) => w.scratch,
        (None, Some(win)) if win.padded => checked_numel(OP, &[win.height, win.width, c])?,
        (None, Some(_)) => 0,
        (None, None) if direct => 0,
        (None, None) => checked_numel(OP, &[rows_per_tile, ow, kdim])?,
    };
    Ok(ConvPlan {
        input: x,
        out: [n, oh, ow, co],
        pad_top,
        pad_left,
        rows_per_tile,
        direct,
        windows,
        winograd,
        scratch,
    })
}

/// `x` `[N, H, W, C]` ⋆ `w` `[KH, KW, C, CO]` → `[N, OH, OW, CO]` (TF's `Conv2D`).
pub fn conv2d_nhwc(
    x: ArrayView4<'_, f32>,
    w: ArrayView4<'_, f32>,
    geom: NhwcConvGeom,
) -> Result<Array4<f32>> {
    const OP: &str = "conv2d_nhwc";
    let f = PackedFilter::new(w, None)?;
    let (n, h, wd, c) = x.dim();
    let plan = conv2d_nhwc_plan([n, h, wd, c], &f, geom)?;
    let x = x.as_standard_layout();
    let mut out = vec![0f32; plan.out.iter().product()];
    let mut scratch = vec![0f32; plan.scratch];
    conv2d_nhwc_packed(
        contiguous(&x, OP)?,
        &f,
        geom,
        &plan,
        &mut out,
        &mut scratch,
        &|_, _| {},
    )?;
    let [n, oh, ow, co] = plan.out;
    Array4::from_shape_vec((n, oh, ow, co), out).or_else(|e| invalid(OP, e.to_string()))
}

/// [`conv2d_nhwc`] with a packed filter (its bias added) on `x` (the plan's input), into
/// `out` (the plan's output), using `scratch` (the plan's scratch size) for im2col; then
/// `epilogue` on each block of finished output pixels (their index in the output, and their
/// `pixels x CO` values) while they are in cache. Allocates nothing.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_nhwc_packed(
    x: &[f32],
    f: &PackedFilter,
    geom: NhwcConvGeom,
    plan: &ConvPlan,
    out: &mut [f32],
    scratch: &mut [f32],
    epilogue: Epilogue<'_>,
) -> Result<()> {
    const OP: &str = "conv2d_nhwc";
    let [n, h, wd, c] = plan.input;
    let [_, oh, ow, co] = plan.out;
    let [kh, kw, fc, fco] = f.dims();
    let kdim = kh * kw * c;
    let (sh, sw) = geom.strides;
    let (dh, dw) = geom.dilations;
    let (pt, pl) = (plan.pad_top, plan.pad_left);
    check_plan_buffers(
        OP,
        fc == c && fco == co,
        f.dims(),
        (x, n * h * wd * c),
        (out, n * oh * ow * co),
        (scratch, plan.scratch),
        plan,
    )?;
    if let (Some(wplan), Some(wino)) = (&plan.winograd, &f.winograd) {
        return conv_nhwc_winograd(
            x,
            plan.input,
            wino,
            (pt, pl),
            [oh, ow],
            wplan,
            out,
            scratch,
            epilogue,
        );
    }
    for b in 0..n {
        let xb = &x[b * h * wd * c..(b + 1) * h * wd * c];
        let ob = &mut out[b * oh * ow * co..(b + 1) * oh * ow * co];
        let first = b * oh * ow;
        if plan.direct {
            gemm_packed_then(h * wd, xb, c, &f.matrix, ob, co, &|r, rows| {
                epilogue(first + r, rows)
            })?;
            continue;
        }
        if let Some(win) = plan.windows {
            let (src, src_w) = if win.padded {
                let img = &mut scratch[..win.height * win.width * c];
                // As rows of `W·C` values, so that each input row is copied as one.
                let pads = [
                    (pt, win.height - pt - h),
                    (pl * c, (win.width - pl - wd) * c),
                ];
                super::shape::pad_constant_into(xb, &[h, wd * c], &pads, 0.0, img)?;
                (&*img, win.width)
            } else {
                (xb, wd)
            };
            let runs = Runs {
                seg: kw * c,
                stride: src_w * c,
            };
            // One output row: `ow` windows `sw` pixels apart, starting `sh` input rows further
            // down than the row before.
            let row = |oy: usize, orow: &mut [f32]| {
                gemm_packed_runs_then(
                    ow,
                    &src[oy * sh * src_w * c..],
                    sw * c,
                    runs,
                    &f.matrix,
                    orow,
                    co,
                    first + oy * ow,
                    epilogue,
                )
            };
            let row_macs = ow * kdim * co;
            let rows_per_task = super::packed_gemm::task_macs()
                .div_ceil(row_macs.max(1))
                .max(1);
            if oh > rows_per_task
                && rayon::current_num_threads() > 1
                && !crate::process::in_parallel_task()
            {
                ob.par_chunks_mut(rows_per_task * ow * co)
                    .enumerate()
                    .try_for_each(|(t, block)| {
                        block
                            .chunks_mut(ow * co)
                            .enumerate()
                            .try_for_each(|(r, orow)| row(t * rows_per_task + r, orow))
                    })?;
            } else {
                for (oy, orow) in ob.chunks_mut(ow * co).enumerate() {
                    row(oy, orow)?;
                }
            }
            continue;
        }
        let mut oy0 = 0;
        while oy0 < oh {
            let rows = plan.rows_per_tile.min(oh - oy0);
            let col = &mut scratch[..rows * ow * kdim];
            col.par_chunks_mut(ow * kdim)
                .enumerate()
                .with_min_len(super::min_rows_per_task(ow * kdim))
                .for_each(|(r, crow)| {
                    let oy = oy0 + r;
                    for ox in 0..ow {
                        let dst = &mut crow[ox * kdim..(ox + 1) * kdim];
                        let ix0 = (ox * sw) as isize - pl as isize;
                        // A kernel row inside the input (undilated) is one run of `kw·c`
                        // values: copied as one, since a copy per tap of a few channels (the
                        // 3 of a first layer's RGB) cost more than the product itself.
                        let inside_x = dw == 1 && ix0 >= 0 && ix0 as usize + kw <= wd;
                        for ky in 0..kh {
                            let iy = (oy * sh + ky * dh) as isize - pt as isize;
                            let d = &mut dst[ky * kw * c..(ky + 1) * kw * c];
                            if iy < 0 || iy as usize >= h {
                                d.fill(0.0);
                                continue;
                            }
                            if inside_x {
                                let s = (iy as usize * wd + ix0 as usize) * c;
                                copy_short(d, &xb[s..s + kw * c]);
                                continue;
                            }
                            for kx in 0..kw {
                                let ix = (ox * sw + kx * dw) as isize - pl as isize;
                                let d = &mut d[kx * c..(kx + 1) * c];
                                if ix < 0 || ix as usize >= wd {
                                    d.fill(0.0);
                                } else {
                                    let s = (iy as usize * wd + ix as usize) * c;
                                    copy_short(d, &xb[s..s + c]);
                                }
                            }
                        }
                    }
                });
            gemm_packed_then(
                rows * ow,
                col,
                kdim,
                &f.matrix,
                &mut ob[oy0 * ow * co..(oy0 + rows) * ow * co],
                co,
                &|r, rows| epilogue(first + oy0 * ow + r, rows),
            )?;
            oy0 += rows;
        }
    }
    Ok(())
}

/// Whether backbones run their convolutions in `NHWC` ([`NhwcConv2d`]; the default), or in
/// `NCHW` with `KERNELS_NHWC=0` (to compare the two; read once).
pub fn backbones_in_nhwc() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("KERNELS_NHWC").map_or(true, |v| v != "0"))
}

/// A PyTorch convolution ([`super::Conv2d`]: weights `[CO, C, KH, KW]`, symmetric padding, its
/// bias, folded batch norm and activation) run on `NHWC` activations through the packed GEMM
/// of [`conv2d_nhwc_packed`], with the activation (and a residual added before it) applied to
/// each block of outputs while it is in cache.
///
/// Why a backbone runs in `NHWC`: the packed GEMM reads a 1x1 convolution's input as its left
/// matrix and a 3x3's windows in place, with the weights packed once at load, where the `NCHW`
/// path packs both operands per call. ResNet-50's body took 0.72-0.91x the `NCHW` time this
/// way (224x224 at 1 and 2 threads, 550x550 and 800x1216 at 2; Zen 3; see BENCHMARKS.md).
///
/// With [`Precision::Bf16`] the filter is rounded to bf16 and the products run on the bf16
/// units instead ([`super::bf16`]), with fp32 sums, bias and activation: `forward` and
/// `forward_residual` take and give fp32 (rounding the input first), `forward_bf16` takes
/// and gives bf16 (a body that keeps its activations in bf16).
#[derive(Clone, Debug)]
pub struct NhwcConv2d {
    filter: NhwcFilter,
    geom: NhwcConvGeom,
    activation: super::Activation,
}

/// The filter of an [`NhwcConv2d`] in the precision it runs in.
#[derive(Clone, Debug)]
enum NhwcFilter {
    Fp32(PackedFilter),
    /// The `[KH·KW·C, CO]` matrix in bf16, and `[KH, KW, C]`.
    Bf16(super::bf16::Bf16Filter, [usize; 3]),
}

/// `n` values for an output that is written in full before it is read: the smallest of
/// `spare` that holds them (taken out, its old values left in place), else zero-filled.
fn output_buffer(n: usize, spare: &mut Vec<Vec<f32>>) -> Vec<f32> {
    let best = spare
        .iter()
        .enumerate()
        .filter(|(_, b)| b.capacity() >= n)
        .min_by_key(|(_, b)| b.capacity())
        .map(|(i, _)| i);
    match best {
        Some(i) => {
            let mut b = spare.swap_remove(i);
            // Values past the old length (if any) are zeroed: initialised memory throughout.
            b.resize(n, 0.0);
            // In debug builds (the tests), NaN: a path that read its output before writing
            // all of it would carry NaN into the results that the tests compare.
            #[cfg(debug_assertions)]
            b.fill(f32::NAN);
            b
        }
        None => super::zeroed(n),
    }
}

impl NhwcConv2d {
    /// The same convolution as `conv`, computing in `precision`, or `None` for a grouped one
    /// (this path has no groups). [`Precision::Bf16`] on a CPU without bf16 units is an
    /// error that says so ([`Precision::check_supported`]).
    pub fn from_conv2d(conv: &super::Conv2d, precision: Precision) -> Result<Option<NhwcConv2d>> {
        Self::from_conv2d_with(conv, precision, false)
    }

    /// [`NhwcConv2d::from_conv2d`] in fp32 with F(4x4) Winograd where it applies (see
    /// [`PackedFilter::allowing_f4`]).
    pub fn from_conv2d_allowing_f4(conv: &super::Conv2d) -> Result<Option<NhwcConv2d>> {
        Self::from_conv2d_with(conv, Precision::Fp32, true)
    }

    fn from_conv2d_with(
        conv: &super::Conv2d,
        precision: Precision,
        f4: bool,
    ) -> Result<Option<NhwcConv2d>> {
        let p = conv.params();
        if p.groups != 1 {
            return Ok(None);
        }
        let (ph, pw) = p.padding;
        let w = conv.weight().permuted_axes([2, 3, 1, 0]);
        // Winograd serves stride-1 undilated convolutions only: the others skip its weights
        // (a ResNet's strided 3x3 layers, YOLACT's downsampling layers).
        let winograd = (p.stride == (1, 1) && p.dilation == (1, 1)).then_some(f4);
        let filter = match precision {
            Precision::Fp32 => {
                NhwcFilter::Fp32(PackedFilter::with_tiles(w, conv.bias(), winograd)?)
            }
            Precision::Bf16 => {
                if let Err(why) = precision.check_supported() {
                    return invalid("conv2d_nhwc", why);
                }
                let (kh, kw, c, co) = w.dim();
                let w = w.as_standard_layout();
                let w = contiguous(&w, "conv2d_nhwc")?;
                let f = super::bf16::Bf16Filter::new(w, kh * kw * c, co, conv.bias())?;
                NhwcFilter::Bf16(f, [kh, kw, c])
            }
        };
        Ok(Some(NhwcConv2d {
            filter,
            geom: NhwcConvGeom {
                strides: p.stride,
                dilations: p.dilation,
                padding: Padding::Explicit([ph, ph, pw, pw]),
            },
            activation: conv.activation(),
        }))
    }

    /// The precision the convolution computes in.
    pub fn precision(&self) -> Precision {
        match self.filter {
            NhwcFilter::Fp32(_) => Precision::Fp32,
            NhwcFilter::Bf16(..) => Precision::Bf16,
        }
    }

    /// `activation(conv(x) + bias)` on `x` `[N, H, W, C]`.
    pub fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>> {
        self.forward_with(x, None, &mut Vec::new())
    }

    /// `activation(conv(x) + bias + residual)`, `residual` of the output's shape (a residual
    /// block's last convolution, as [`super::Conv2d::forward_residual`]).
    pub fn forward_residual(
        &self,
        x: ArrayView4<'_, f32>,
        residual: ArrayView4<'_, f32>,
    ) -> Result<Array4<f32>> {
        self.forward_with(x, Some(residual), &mut Vec::new())
    }

    /// [`NhwcConv2d::forward`] (or [`NhwcConv2d::forward_residual`] with a `residual`) whose
    /// output takes one of the `spare` buffers (spent outputs a body hands back, whose values
    /// are overwritten) where one is large enough, the smallest such: a body's layer then
    /// writes its output once, instead of into a zero-filled allocation (a pass over memory
    /// as large as the output: 3% of ResNet-50's time at 800x1203).
    pub fn forward_reusing(
        &self,
        x: ArrayView4<'_, f32>,
        residual: Option<ArrayView4<'_, f32>>,
        spare: &mut Vec<Vec<f32>>,
    ) -> Result<Array4<f32>> {
        self.forward_with(x, residual, spare)
    }

    fn forward_with(
        &self,
        x: ArrayView4<'_, f32>,
        residual: Option<ArrayView4<'_, f32>>,
        spare: &mut Vec<Vec<f32>>,
    ) -> Result<Array4<f32>> {
        const OP: &str = "conv2d_nhwc";
        let (n, h, w, c) = x.dim();
        let filter = match &self.filter {
            NhwcFilter::Fp32(f) => f,
            NhwcFilter::Bf16(..) => return self.forward_rounding(x, residual),
        };
        let plan = conv2d_nhwc_plan([n, h, w, c], filter, self.geom)?;
        let [_, oh, ow, co] = plan.out;
        let residual = residual.as_ref().map(|r| r.as_standard_layout());
        let residual = checked_residual(OP, residual.as_ref(), plan.out)?;
        let x = x.as_standard_layout();
        let xs = contiguous(&x, OP)?;
        crate::profile::timed(
            || {
                let [kh, kw, _, _] = filter.dims();
                let path = match plan.winograd {
                    Some(w) if w.is_f4() => "winograd f4",
                    Some(_) => "winograd",
                    None => "gemm",
                };
                format!(
                    "conv {kh}x{kw}/{} {c}->{co} nhwc n{n} @{h}x{w} {path}",
                    self.geom.strides.0
                )
            },
            || {
                let mut out = output_buffer(checked_numel(OP, &plan.out)?, spare);
                let mut scratch = vec![0f32; plan.scratch];
                let act = self.activation;
                let epilogue = |row0: usize, rows: &mut [f32]| {
                    if let Some(r) = residual {
                        let r = &r[row0 * co..][..rows.len()];
                        rows.iter_mut().zip(r).for_each(|(v, &r)| *v += r);
                    }
                    act.apply_slice(rows);
                };
                conv2d_nhwc_packed(
                    xs,
                    filter,
                    self.geom,
                    &plan,
                    &mut out,
                    &mut scratch,
                    &epilogue,
                )?;
                Array4::from_shape_vec((n, oh, ow, co), out).or_else(|e| invalid(OP, e.to_string()))
            },
        )
    }

    /// [`NhwcConv2d::forward_with`] on the bf16 units: `x` rounded to bf16 first, the
    /// output fp32.
    fn forward_rounding(
        &self,
        x: ArrayView4<'_, f32>,
        residual: Option<ArrayView4<'_, f32>>,
    ) -> Result<Array4<f32>> {
        let x = x.as_standard_layout();
        let xs = contiguous(&x, "conv2d_nhwc bf16")?;
        let dims = x.dim();
        let rounded = super::bf16::to_bf16(xs);
        let xb = ArrayView4::from_shape(dims, &rounded[..])
            .or_else(|e| invalid("conv2d_nhwc bf16", e.to_string()))?;
        self.forward_on_bf16(xb, residual)
    }

    /// `activation(conv(x) + bias [+ residual])` with `x`, `residual` and the output in bf16
    /// (their bits as `u16`, `[N, H, W, C]`): a body that keeps its activations in bf16
    /// between layers. Needs [`Precision::Bf16`].
    pub fn forward_bf16(
        &self,
        x: ArrayView4<'_, u16>,
        residual: Option<ArrayView4<'_, u16>>,
    ) -> Result<Array4<u16>> {
        self.forward_on_bf16(x, residual)
    }

    /// The bf16 products on `x` in bf16, with output (and residual) of type `T`.
    fn forward_on_bf16<T: super::bf16::Element>(
        &self,
        x: ArrayView4<'_, u16>,
        residual: Option<ArrayView4<'_, T>>,
    ) -> Result<Array4<T>> {
        const OP: &str = "conv2d_nhwc bf16";
        let NhwcFilter::Bf16(filter, [kh, kw, fc]) = &self.filter else {
            return invalid(OP, "the layer was not made with precision bf16");
        };
        let (n, h, w, c) = x.dim();
        if c != *fc {
            return shape_err(
                OP,
                format!("the filter expects {fc} channels, the input [{n}, {h}, {w}, {c}] has {c}"),
            );
        }
        let g = self.geom;
        let (oh, pad_top) = window(OP, h, *kh, g.strides.0, g.dilations.0, g.padding, 0)?;
        let (ow, pad_left) = window(OP, w, *kw, g.strides.1, g.dilations.1, g.padding, 1)?;
        let co = filter.dims().1;
        let out_dims = [n, oh, ow, co];
        let residual = residual.as_ref().map(|r| r.as_standard_layout());
        let residual = checked_residual(OP, residual.as_ref(), out_dims)?;
        let x = x.as_standard_layout();
        let xb = contiguous(&x, OP)?;
        crate::profile::timed(
            || {
                format!(
                    "conv {kh}x{kw}/{} {c}->{co} nhwc n{n} @{h}x{w} bf16",
                    g.strides.0
                )
            },
            || {
                let geom = super::bf16::WindowGeom {
                    input: [n, h, w, c],
                    kernel: (*kh, *kw),
                    strides: g.strides,
                    dilations: g.dilations,
                    pad: (pad_top, pad_left),
                    out: (oh, ow),
                };
                let gather = super::bf16::conv_rows(xb, geom, filter);
                let rows = if super::bf16::rows_are_pixels(&geom) {
                    super::bf16::Rows::Direct(xb)
                } else {
                    super::bf16::Rows::Gather(&gather)
                };
                let epilogue = super::bf16::Bf16Epilogue {
                    residual,
                    activation: self.activation,
                };
                let out = super::bf16::product(n * oh * ow, filter, rows, epilogue)?;
                Array4::from_shape_vec((n, oh, ow, co), out).or_else(|e| invalid(OP, e.to_string()))
            },
        )
    }
}

/// A residual's values, checked to have the output's shape `out`.
fn checked_residual<'a, T>(
    op: &'static str,
    residual: Option<&'a ndarray::CowArray<'_, T, ndarray::Ix4>>,
    out: [usize; 4],
) -> Result<Option<&'a [T]>> {
    match residual {
        Some(r) if r.shape() != out => shape_err(
            op,
            format!("residual has shape {:?}, the output {out:?}", r.shape()),
        ),
        Some(r) => Ok(Some(contiguous(r, op)?)),
        None => Ok(None),
    }
}

/// `dst.copy_from_slice(src)` for the short runs of im2col, in moves of 8 values rather than
/// a call to `memcpy` per run.
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    let n = dst.len().min(src.len());
    let mut i = 0;
    while i + 8 <= n {
        dst[i..i + 8].copy_from_slice(&src[i..i + 8]);
        i += 8;
    }
    for (d, s) in dst[i..n].iter_mut().zip(&src[i..n]) {
        *d = *s;
    }
}

/// Depthwise: `x` `[N, H, W, C]` with `w` `[KH, KW, C, M]` → `[N, OH, OW, C·M]` (TF's
/// `DepthwiseConv2dNative`).
pub fn depthwise_conv2d_nhwc(
    x: ArrayView4<'_, f32>,
    w: ArrayView4<'_, f32>,
    geom: NhwcConvGeom,
) -> Result<Array4<f32>> {
    const OP: &str = "depthwise_conv2d_nhwc";
    let (n, h, wd, c) = x.dim();
    let (kh, kw, wc, m) = w.dim();
    let out_dims = depthwise_conv2d_nhwc_dims([n, h, wd, c], [kh, kw, wc, m], geom)?;
    let (x, w) = (x.as_standard_layout(), w.as_standard_layout());
    let (xs, ws) = (contiguous(&x, OP)?, contiguous(&w, OP)?);
    let mut out = vec![0f32; out_dims.iter().product()];
    depthwise_conv2d_nhwc_into(xs, [n, h, wd, c], ws, [kh, kw, wc, m], geom, &mut out)?;
    let [n, oh, ow, co] = out_dims;
    Array4::from_shape_vec((n, oh, ow, co), out).or_else(|e| invalid(OP, e.to_string()))
}

/// The output dimensions of [`depthwise_conv2d_nhwc`] for an input `x` and a filter `w`.
pub fn depthwise_conv2d_nhwc_dims(
    x: [usize; 4],
    w: [usize; 4],
    geom: NhwcConvGeom,
) -> Result<[usize; 4]> {
    const OP: &str = "depthwise_conv2d_nhwc";
    let ([n, h, wd, c], [kh, kw, wc, m]) = (x, w);
    if wc != c {
        return shape_err(
            OP,
            format!("the filter {w:?} expects {wc} channels, the input {x:?} has {c}"),
        );
    }
    let (oh, _) = window(OP, h, kh, geom.strides.0, geom.dilations.0, geom.padding, 0)?;
    let (ow, _) = window(
        OP,
        wd,
        kw,
        geom.strides.1,
        geom.dilations.1,
        geom.padding,
        1,
    )?;
    checked_numel(OP, &[n, oh, ow, c * m])?;
    Ok([n, oh, ow, c * m])
}

/// [`depthwise_conv2d_nhwc`] on contiguous data `xs` (`x`) and `ws` (`w`), into `out` (of
/// [`depthwise_conv2d_nhwc_dims`]); allocates nothing.
pub fn depthwise_conv2d_nhwc_into(
    xs: &[f32],
    x: [usize; 4],
    ws: &[f32],
    w: [usize; 4],
    geom: NhwcConvGeom,
    out: &mut [f32],
) -> Result<()> {
    depthwise_conv2d_nhwc_then(xs, x, ws, w, geom, out, &|_, _| {})
}

/// [`depthwise_conv2d_nhwc_into`], then `epilogue` on each output row once it is computed
/// (told the row's first pixel, counted over the whole batch), on the thread that computed
/// it while it is in cache: a bias and activation after a large depthwise convolution (a
/// 1 MB image in selfie) took a pass of its own, on one thread.
pub fn depthwise_conv2d_nhwc_then(
    xs: &[f32],
    x: [usize; 4],
    ws: &[f32],
    w: [usize; 4],
    geom: NhwcConvGeom,
    out: &mut [f32],
    epilogue: Epilogue<'_>,
) -> Result<()> {
    const OP: &str = "depthwise_conv2d_nhwc";
    let out_dims = depthwise_conv2d_nhwc_dims(x, w, geom)?;
    let ([n, h, wd, c], [kh, kw, _, m]) = (x, w);
    let [_, oh, ow, co] = out_dims;
    if xs.len() != n * h * wd * c || ws.len() != kh * kw * c * m || out.len() != n * oh * ow * co {
        return shape_err(
            OP,
            format!(
                "buffers of {}, {} and {} values do not fit an input {x:?}, a filter {w:?} and an output {out_dims:?}",
                xs.len(),
                ws.len(),
                out.len()
            ),
        );
    }
    let (sh, sw) = geom.strides;
    let (dh, dw) = geom.dilations;
    let (_, pt) = window(OP, h, kh, sh, dh, geom.padding, 0)?;
    let (_, pl) = window(OP, wd, kw, sw, dw, geom.padding, 1)?;
    if out.is_empty() {
        return Ok(());
    }
    // Output rows per task: enough multiply-adds for the hand-off to another thread to pay.
    let min_rows = super::min_rows_per_task(ow * co * kh * kw);
    if m == 1 {
        let rows = RowGeom {
            row0: 0,
            h,
            wd,
            c,
            kh,
            kw,
            sh,
            sw,
            dh,
            dw,
            pt,
            pl,
            ow,
        };
        out.par_chunks_mut(ow * co)
            .enumerate()
            .with_min_len(min_rows)
            .for_each(|(row, orow)| {
                let b = row / oh;
                let xb = &xs[b * h * wd * c..(b + 1) * h * wd * c];
                depthwise_one_row(orow, xb, ws, row % oh, &rows);
                epilogue(row * ow, orow);
            });
    } else {
        // Sums over the taps, so the output (an arena's reused memory, in a plan) starts at 0.
        out.fill(0.0);
        out.par_chunks_mut(ow * co)
            .enumerate()
            .with_min_len(min_rows)
            .for_each(|(row, orow)| {
                let b = row / oh;
                let oy = row % oh;
                let xb = &xs[b * h * wd * c..(b + 1) * h * wd * c];
                for ky in 0..kh {
                    let iy = (oy * sh + ky * dh) as isize - pt as isize;
                    if iy < 0 || iy as usize >= h {
                        continue;
                    }
                    let xrow = &xb[iy as usize * wd * c..(iy as usize + 1) * wd * c];
                    for kx in 0..kw {
                        let wk = &ws[(ky * kw + kx) * c * m..(ky * kw + kx + 1) * c * m];
                        for ox in 0..ow {
                            let ix = (ox * sw + kx * dw) as isize - pl as isize;
                            if ix < 0 || ix as usize >= wd {
                                continue;
                            }
                            let xp = &xrow[ix as usize * c..(ix as usize + 1) * c];
                            let op = &mut orow[ox * co..(ox + 1) * co];
                            for ci in 0..c {
                                for mi in 0..m {
                                    op[ci * m + mi] += xp[ci] * wk[ci * m + mi];
                                }
                            }
                        }
                    }
                }
                epilogue(row * ow, orow);
            });
    }
    Ok(())
}

/// How [`banded_depthwise_nhwc`] runs: a depthwise convolution (one filter per channel) of
/// `[N, H, W, E]` to `[N, OH, OW, E]`, with the 1x1 expansion (stride 1, no padding) of
/// `[N, H, W, C]` that alone feeds it, or the 1x1 projection to `[N, OH, OW, P]` that alone
/// reads it, or both, computed band by band of output rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BandedDepthwisePlan {
    /// The input: the expansion's when there is one, else the depthwise convolution's.
    pub input: [usize; 4],
    /// The depthwise convolution's input (the expanded image, never written whole, when
    /// there is an expansion).
    pub expanded: [usize; 4],
    /// The depthwise convolution's output (never written whole when there is a projection).
    pub depthwise: [usize; 4],
    /// The output: the projection's when there is one, else the depthwise convolution's.
    pub out: [usize; 4],
    /// The depthwise filter's `[KH, KW, E, 1]`.
    pub filter: [usize; 4],
    geom: NhwcConvGeom,
    pad_top: usize,
    pad_left: usize,
    expands: bool,
    projects: bool,
    /// Output rows per band, and the expanded rows a band's buffer holds (0 without an
    /// expansion: the input rows are read in place).
    band_rows: usize,
    band_capacity: usize,
    /// Parts of the output rows that run at the same time, each with its band buffers.
    parts: usize,
    pub scratch: usize,
}

/// The size, in bytes, of an image that pays for being computed band by band rather than
/// written whole: smaller ones stay in the cache between two convolutions anyway. At one
/// thread on a Zen 3 (512 KB of L2 a core), an expansion and a depthwise convolution on
/// 128x128x192 took 6.7 ms banded against 14.7 ms apart, on 64x64x240 3.5 against 6.0 ms,
/// and on 32x32x336 (1.4 MB) 0.84 against 0.80 ms.
pub const BANDED_MIN_BYTES: usize = 2 << 20;

/// Bytes of rows a band holds: about half of a core's L2, so that what one convolution
/// writes is still there when the next reads it.
const BAND_BYTES: usize = 256 << 10;

/// The [`BandedDepthwisePlan`] of convolving `x` with a depthwise filter of `w`
/// (`[KH, KW, E, 1]`), after expanding `x` with `expand` (1x1) and before projecting the
/// result with `project` (1x1), either of which may be absent, on up to `threads` threads.
pub fn banded_depthwise_plan(
    x: [usize; 4],
    expand: Option<&PackedFilter>,
    w: [usize; 4],
    geom: NhwcConvGeom,
    project: Option<&PackedFilter>,
    threads: usize,
) -> Result<BandedDepthwisePlan> {
    const OP: &str = "banded_depthwise_nhwc";
    let [n, h, wd, c] = x;
    let [kh, kw, e, m] = w;
    let expand_fits = expand.is_none_or(|f| f.dims() == [1, 1, c, e]);
    let chains = match expand {
        Some(_) => expand_fits,
        None => c == e,
    };
    let project_fits = project.is_none_or(|f| f.dims()[..3] == [1, 1, e]);
    if !chains || !project_fits || m != 1 {
        return shape_err(
            OP,
            format!(
                "an input {x:?}, an expansion {:?}, a depthwise filter {w:?} and a projection {:?} do not chain",
                expand.map(PackedFilter::dims),
                project.map(PackedFilter::dims)
            ),
        );
    }
    let dw_out = depthwise_conv2d_nhwc_dims([n, h, wd, e], w, geom)?;
    let [_, oh, ow, _] = dw_out;
    let out = project.map_or(dw_out, |f| [n, oh, ow, f.dims()[3]]);
    let (sh, dh) = (geom.strides.0, geom.dilations.0);
    let (_, pad_top) = window(OP, h, kh, sh, dh, geom.padding, 0)?;
    let (_, pad_left) = window(
        OP,
        wd,
        kw,
        geom.strides.1,
        geom.dilations.1,
        geom.padding,
        1,
    )?;
    let reach = (kh.max(1) - 1) * dh + 1;
    let (band_rows, band_capacity) = if expand.is_some() {
        let row_bytes = (wd * e * 4).max(1);
        let rows = ((BAND_BYTES / row_bytes).saturating_sub(reach) / sh.max(1) + 1).min(oh.max(1));
        (rows, ((rows - 1) * sh + reach).min(h.max(1)))
    } else {
        ((BAND_BYTES / (ow * e * 4).max(1)).clamp(1, oh.max(1)), 0)
    };
    let parts = threads.clamp(1, oh.max(1));
    let band_out = if project.is_some() { band_rows } else { 0 };
    Ok(BandedDepthwisePlan {
        input: x,
        expanded: [n, h, wd, e],
        depthwise: dw_out,
        out,
        filter: w,
        geom,
        pad_top,
        pad_left,
        expands: expand.is_some(),
        projects: project.is_some(),
        band_rows,
        band_capacity,
        parts,
        scratch: checked_numel(OP, &[parts, band_capacity * wd + band_out * ow, e])?,
    })
}

/// A depthwise convolution by `ws` and `dw_epilogue` on its blocks, after a 1x1 expansion by
/// `expand`'s filter (its bias packed in) and epilogue, and before a 1x1 projection by
/// `project`'s, as the convolutions would run one after the other (the same values, bit for
/// bit), but band by band: each band of output rows expands only the input rows it reads
/// that the band before did not, into a buffer in `scratch` that stays in cache, and
/// projects its depthwise rows from another. MobileNetV2's blocks expand to 6 times their
/// channels; at 128x128 pixels that image is 12 MB, and writing it to memory and reading it
/// back took twice as long as computing it. The epilogues are told pixel indices of the
/// whole images, as after [`conv2d_nhwc_packed`] and [`depthwise_conv2d_nhwc_into`].
#[allow(clippy::too_many_arguments)]
pub fn banded_depthwise_nhwc(
    x: &[f32],
    expand: Option<(&PackedFilter, Epilogue<'_>)>,
    ws: &[f32],
    dw_epilogue: Epilogue<'_>,
    project: Option<(&PackedFilter, Epilogue<'_>)>,
    plan: &BandedDepthwisePlan,
    out: &mut [f32],
    scratch: &mut [f32],
) -> Result<()> {
    const OP: &str = "banded_depthwise_nhwc";
    let [n, h, wd, c] = plan.input;
    let e = plan.expanded[3];
    let [_, oh, ow, p] = plan.out;
    let [kh, kw, _, _] = plan.filter;
    let in_len = plan.band_capacity * wd * e;
    let part_len = in_len
        + if plan.projects {
            plan.band_rows * ow * e
        } else {
            0
        };
    if expand.is_some() != plan.expands
        || expand.is_some_and(|(f, _)| f.dims() != [1, 1, c, e])
        || project.is_some() != plan.projects
        || project.is_some_and(|(f, _)| f.dims() != [1, 1, e, p])
        || x.len() != n * h * wd * c
        || ws.len() != kh * kw * e
        || out.len() != n * oh * ow * p
        || scratch.len() < part_len
    {
        return shape_err(
            OP,
            format!(
                "buffers of {}, {}, {} and {} values and filters {:?} and {:?} do not fit the plan {plan:?}",
                x.len(),
                ws.len(),
                out.len(),
                scratch.len(),
                expand.map(|(f, _)| f.dims()),
                project.map(|(f, _)| f.dims()),
            ),
        );
    }
    if out.is_empty() {
        return Ok(());
    }
    let (sh, sw) = plan.geom.strides;
    let (dh, dw) = plan.geom.dilations;
    let g = RowGeom {
        row0: 0,
        h,
        wd,
        c: e,
        kh,
        kw,
        sh,
        sw,
        dh,
        dw,
        pt: plan.pad_top,
        pl: plan.pad_left,
        ow,
    };
    // Output rows `rows` of image `b`, with `band` as the buffers of expanded and depthwise
    // rows.
    let part = |b: usize, rows: std::ops::Range<usize>, orows: &mut [f32], band: &mut [f32]| {
        let xb = &x[b * h * wd * c..(b + 1) * h * wd * c];
        let (expanded, dw_rows) = band.split_at_mut(in_len);
        // The expanded rows the band buffer holds, from its start.
        let mut held = 0..0;
        let mut oy0 = rows.start;
        while oy0 < rows.end {
            let oy1 = (oy0 + plan.band_rows).min(rows.end);
            // The input rows that output rows `oy0..oy1` read (with any rows between their
            // taps, where dilated).
            let row_at = |oy: usize, ky: usize| {
                ((oy * sh + ky * dh) as isize - g.pt as isize).clamp(0, h as isize) as usize
            };
            let lo = row_at(oy0, 0);
            let hi = (row_at(oy1 - 1, kh.max(1) - 1) + 1).min(h).max(lo);
            let input_rows = match expand {
                None => &xb[lo * wd * e..hi * wd * e],
                Some((f, expand_epilogue)) => {
                    // Keep the rows this band shares with the one before, at the buffer's
                    // start.
                    if held.start <= lo && lo < held.end {
                        expanded.copy_within(
                            (lo - held.start) * wd * e..(held.end - held.start) * wd * e,
                            0,
                        );
                        held = lo..held.end;
                    } else {
                        held = lo..lo;
                    }
                    if hi > held.end {
                        let start = (held.end - lo) * wd * e;
                        gemm_packed_runs_then(
                            (hi - held.end) * wd,
                            &xb[held.end * wd * c..],
                            c,
                            Runs::row(c),
                            &f.matrix,
                            &mut expanded[start..],
                            e,
                            (b * h + held.end) * wd,
                            expand_epilogue,
                        )?;
                        held.end = hi;
                    }
                    &expanded[..(held.end - lo) * wd * e]
                }
            };
            let rg = RowGeom { row0: lo, ..g };
            let obase = (oy0 - rows.start) * ow * p;
            let oband = &mut orows[obase..obase + (oy1 - oy0) * ow * p];
            let depthwise_rows = |dband: &mut [f32]| {
                for (r, orow) in dband.chunks_mut(ow * e).enumerate() {
                    depthwise_one_row(orow, input_rows, ws, oy0 + r, &rg);
                }
                dw_epilogue((b * oh + oy0) * ow, dband);
            };
            if let Some((f, project_epilogue)) = project {
                let dband = &mut dw_rows[..(oy1 - oy0) * ow * e];
                depthwise_rows(dband);
                gemm_packed_runs_then(
                    (oy1 - oy0) * ow,
                    dband,
                    e,
                    Runs::row(e),
                    &f.matrix,
                    oband,
                    p,
                    (b * oh + oy0) * ow,
                    project_epilogue,
                )?;
            } else {
                depthwise_rows(oband);
            }
            oy0 = oy1;
        }
        Ok::<(), super::LayerError>(())
    };
    let macs = n
        * (h * wd * c * e * plan.expands as usize
            + oh * ow * e * (kh * kw + p * plan.projects as usize));
    in_parts(
        out,
        (n, oh, ow * p),
        (plan.parts, macs),
        (scratch, part_len),
        part,
    )
}

/// Runs `part(b, units, out_units, scratch)` on each of the `n` images of `out`, whose `units`
/// (output rows, or rows of tiles) hold `unit_len` values each (the last one possibly fewer):
/// in up to `parts` parts of the units (as many as `macs`, the multiply-adds of the whole,
/// give tasks worth handing over, and `scratch` has room for), on the rayon threads, each with
/// its own `part_len` values of `scratch`, or whole on this thread (from inside a task of a
/// parallel loop, or with one part).
pub(crate) fn in_parts(
    out: &mut [f32],
    (n, units, unit_len): (usize, usize, usize),
    (parts, macs): (usize, usize),
    (scratch, part_len): (&mut [f32], usize),
    part: impl Fn(usize, std::ops::Range<usize>, &mut [f32], &mut [f32]) -> Result<()> + Sync,
) -> Result<()> {
    let parts = parts
        .min(scratch.len() / part_len.max(1))
        .min(macs / super::packed_gemm::task_macs().max(1))
        .max(1);
    let image_len = out.len() / n.max(1);
    for (b, ob) in out.chunks_mut(image_len.max(1)).enumerate().take(n) {
        if parts > 1 && rayon::current_num_threads() > 1 && !crate::process::in_parallel_task() {
            let per_part = units.div_ceil(parts);
            ob.par_chunks_mut((per_part * unit_len).max(1))
                .zip(scratch.par_chunks_mut(part_len.max(1)))
                .enumerate()
                .try_for_each(|(q, (rows, buf))| {
                    let r0 = q * per_part;
                    part(b, r0..(r0 + per_part).min(units), rows, buf)
                })?;
        } else {
            part(b, 0..units, ob, &mut scratch[..part_len])?;
        }
    }
    Ok(())
}

/// The geometry of a depthwise convolution with one filter per channel (`m == 1`).
struct RowGeom {
    /// The first input row that the input buffer holds (0 for a whole image; a band's first
    /// row in [`banded_depthwise_nhwc`]).
    row0: usize,
    h: usize,
    wd: usize,
    c: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    pt: usize,
    pl: usize,
    ow: usize,
}

impl RowGeom {
    /// Whether `xb` (`len` values, rows from `row0`) holds every input row of the vertical
    /// taps `ky` of the output row whose tap 0 is input row `y0`.
    fn rows_held(&self, ky: &std::ops::Range<usize>, y0: isize, len: usize) -> bool {
        if ky.is_empty() {
            return true;
        }
        let first = y0 + (ky.start * self.dh) as isize;
        let last = y0 + ((ky.end - 1) * self.dh) as isize;
        first >= self.row0 as isize && (last as usize + 1 - self.row0) * self.wd * self.c <= len
    }
}

/// One output row `oy` of a depthwise convolution with one filter per channel, from the input
/// rows `xb` (from `g.row0`): the AVX2 row where the CPU has AVX2 and the channels come in
/// multiples of 8, else the portable one (the same bits).
fn depthwise_one_row(orow: &mut [f32], xb: &[f32], ws: &[f32], oy: usize, g: &RowGeom) {
    #[cfg(target_arch = "x86_64")]
    if g.c.is_multiple_of(8) && crate::ops::simd::has_avx2() {
        // SAFETY: the CPU has AVX2 and `g.c` is a multiple of 8; the row asserts that the
        // buffers fit `g` (`xb` holding every input row it reads).
        unsafe { depthwise_row_avx2(orow, xb, ws, oy, g) };
        return;
    }
    depthwise_row(orow, xb, ws, oy, g);
}

/// One output row `oy` of a depthwise convolution (one filter per channel): for each output
/// pixel and block of 16 (then 8) channels, every tap is accumulated in registers and the
/// block is stored once. The sum starts at 0 and adds `x · w` tap by tap in `(ky, kx)` order,
/// skipping the taps in the padding, with a separate multiply and add (Rust never fuses
/// them): the same operations in the same order as a tap-by-tap pass over the whole row.
#[inline(always)]
fn depthwise_row_impl(orow: &mut [f32], xb: &[f32], ws: &[f32], oy: usize, g: &RowGeom) {
    let ky = taps_inside(oy, g.sh, g.dh, g.pt, g.kh, g.h);
    let y0 = (oy * g.sh) as isize - g.pt as isize;
    for ox in 0..g.ow {
        depthwise_pixel(orow, xb, ws, &ky, y0, ox, g);
    }
}

/// Output pixel `ox` of the row whose vertical taps are `ky` and top input row `y0`.
#[inline(always)]
fn depthwise_pixel(
    orow: &mut [f32],
    xb: &[f32],
    ws: &[f32],
    ky: &std::ops::Range<usize>,
    y0: isize,
    ox: usize,
    g: &RowGeom,
) {
    let c = g.c;
    let taps = Taps {
        ky: ky.clone(),
        kx: taps_inside(ox, g.sw, g.dw, g.pl, g.kw, g.wd),
        y0,
        x0: (ox * g.sw) as isize - g.pl as isize,
        g,
    };
    let op = &mut orow[ox * c..(ox + 1) * c];
    let mut c0 = 0;
    while c0 + 16 <= c {
        depthwise_block::<16>(op, xb, ws, &taps, c0);
        c0 += 16;
    }
    if c0 + 8 <= c {
        depthwise_block::<8>(op, xb, ws, &taps, c0);
        c0 += 8;
    }
    while c0 < c {
        depthwise_block::<1>(op, xb, ws, &taps, c0);
        c0 += 1;
    }
}

/// [`depthwise_row_impl`] with AVX2, for channels in multiples of 8: four output pixels at a
/// time share each tap's weight vector (loaded once for the four), which the per-pixel path
/// reloads for every pixel. Pixels with horizontal taps outside the input take the per-pixel
/// path. Each sum is the same: from 0, a product then a sum per tap in `(ky, kx)` order,
/// never fused, so the bits are the per-pixel path's.
///
/// # Safety
/// The CPU must have AVX2; `g.c` must be a multiple of 8, `xb` the input rows from `g.row0`
/// that the output row reads, `ws` at least `kh·kw·c` values and `orow` one output row
/// (`ow·c`). All but the CPU's features are asserted.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn depthwise_row_avx2(orow: &mut [f32], xb: &[f32], ws: &[f32], oy: usize, g: &RowGeom) {
    use std::arch::x86_64::*;
    let c = g.c;
    let ky = taps_inside(oy, g.sh, g.dh, g.pt, g.kh, g.h);
    let y0 = (oy * g.sh) as isize - g.pt as isize;
    assert!(
        c.is_multiple_of(8)
            && g.rows_held(&ky, y0, xb.len())
            && ws.len() >= g.kh * g.kw * c
            && orow.len() == g.ow * c,
        "depthwise_row_avx2: buffers do not fit the geometry"
    );
    // The output columns whose horizontal taps all lie inside the input: one run (the input
    // column grows with the output column), found once per row rather than per pixel.
    let inside = |ox: &usize| taps_inside(*ox, g.sw, g.dw, g.pl, g.kw, g.wd) == (0..g.kw);
    let first_inside = (0..g.ow).find(inside).unwrap_or(g.ow);
    let end_inside = (first_inside..g.ow)
        .rfind(inside)
        .map_or(first_inside, |o| o + 1);
    let (xp, wp, op) = (xb.as_ptr(), ws.as_ptr(), orow.as_mut_ptr());
    let mut ox = 0;
    while ox < g.ow {
        if !(ox >= first_inside && ox + 4 <= end_inside) {
            depthwise_pixel(orow, xb, ws, &ky, y0, ox, g);
            ox += 1;
            continue;
        }
        let x0 = ox * g.sw - g.pl;
        for c0 in (0..c).step_by(8) {
            let mut acc = [_mm256_setzero_ps(); 4];
            for ky in ky.clone() {
                let row = ((y0 + (ky * g.dh) as isize) as usize - g.row0) * g.wd * c;
                for kx in 0..g.kw {
                    // SAFETY: `(ky, kx)` is a tap of the filter and `c0 + 8 <= c`, so the
                    // eight weights lie in `ws`; rows `ky` and columns `x0 + p·sw + kx·dw`
                    // (`p < 4`, interior columns) lie in the image, so the eight inputs lie in
                    // `xb` (lengths asserted above).
                    let w = _mm256_loadu_ps(wp.add((ky * g.kw + kx) * c + c0));
                    for (p, acc) in acc.iter_mut().enumerate() {
                        let ix = x0 + p * g.sw + kx * g.dw;
                        let x = _mm256_loadu_ps(xp.add(row + ix * c + c0));
                        *acc = _mm256_add_ps(*acc, _mm256_mul_ps(x, w));
                    }
                }
            }
            for (p, acc) in acc.iter().enumerate() {
                // SAFETY: pixel `ox + p < ow` of the row, channels `c0..c0 + 8 <= c`.
                _mm256_storeu_ps(op.add((ox + p) * c + c0), *acc);
            }
        }
        ox += 4;
    }
}

/// The kernel taps `k` of output position `o` whose input index `o·stride + k·dil - pad` lies
/// in `0..len`: a contiguous range, as the index grows with `k`.
#[inline(always)]
fn taps_inside(
    o: usize,
    stride: usize,
    dil: usize,
    pad: usize,
    k: usize,
    len: usize,
) -> std::ops::Range<usize> {
    let base = (o * stride) as isize - pad as isize;
    let inside = |t: &usize| (0..len as isize).contains(&(base + (t * dil) as isize));
    let lo = (0..k).find(inside).unwrap_or(k);
    let hi = (lo..k).rfind(inside).map_or(lo, |t| t + 1);
    lo..hi
}

/// The taps of one output pixel that lie inside the input (see [`depthwise_row_impl`]).
struct Taps<'a> {
    ky: std::ops::Range<usize>,
    kx: std::ops::Range<usize>,
    /// Input row and column of tap (0, 0), possibly outside the input.
    y0: isize,
    x0: isize,
    g: &'a RowGeom,
}

/// Channels `c0..c0 + L` of one output pixel.
#[inline(always)]
fn depthwise_block<const L: usize>(
    op: &mut [f32],
    xb: &[f32],
    ws: &[f32],
    t: &Taps<'_>,
    c0: usize,
) {
    let g = t.g;
    let mut acc = [0f32; L];
    for ky in t.ky.clone() {
        let row = ((t.y0 + (ky * g.dh) as isize) as usize - g.row0) * g.wd * g.c;
        for kx in t.kx.clone() {
            let ix = (t.x0 + (kx * g.dw) as isize) as usize;
            let xv: &[f32; L] = xb[row + ix * g.c + c0..][..L].try_into().expect("L values");
            let wv: &[f32; L] = ws[(ky * g.kw + kx) * g.c + c0..][..L]
                .try_into()
                .expect("L values");
            for l in 0..L {
                acc[l] += xv[l] * wv[l];
            }
        }
    }
    op[c0..c0 + L].copy_from_slice(&acc);
}

crate::ops::simd::multiversion!(fn depthwise_row(orow: &mut [f32], xb: &[f32], ws: &[f32], oy: usize, g: &RowGeom) => depthwise_row_impl);

/// An error unless the filter fits (`filter_fits`), `x` and `out` hold exactly the plan's
/// input and output, and `scratch` at least its scratch.
fn check_plan_buffers(
    op: &'static str,
    filter_fits: bool,
    filter: [usize; 4],
    (x, x_len): (&[f32], usize),
    (out, out_len): (&[f32], usize),
    (scratch, scratch_len): (&[f32], usize),
    plan: &dyn std::fmt::Debug,
) -> Result<()> {
    if filter_fits && x.len() == x_len && out.len() == out_len && scratch.len() >= scratch_len {
        return Ok(());
    }
    shape_err(
        op,
        format!(
            "a filter {filter:?} and buffers of {} (input), {} (output) and {} (scratch) values do not fit the plan {plan:?}",
            x.len(),
            out.len(),
            scratch.len()
        ),
    )
}

/// A transposed convolution's filter `[KH, KW, CO, CI]`, packed once for
/// [`conv_transpose2d_nhwc_packed`] as the `CI x KH·KW·CO` matrix that turns each input
/// pixel into its `KH x KW` patch of outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedTransposedFilter {
    dims: [usize; 4],
    matrix: PackedMatrix,
}

impl PackedTransposedFilter {
    /// Packs `w` (`[KH, KW, CO, CI]`).
    pub fn new(w: ArrayView4<'_, f32>) -> Result<PackedTransposedFilter> {
        let (kh, kw, co, ci) = w.dim();
        let kdim = kh * kw * co;
        let w = w.as_standard_layout();
        let ws = contiguous(&w, "PackedTransposedFilter")?;
        let mut t = vec![0f32; ci * kdim];
        for (j, row) in ws.chunks_exact(ci.max(1)).enumerate().take(kdim) {
            for (p, &v) in row.iter().enumerate() {
                t[p * kdim + j] = v;
            }
        }
        Ok(PackedTransposedFilter {
            dims: [kh, kw, co, ci],
            matrix: PackedMatrix::new(&t, ci, kdim, None)?,
        })
    }
}

/// How [`conv_transpose2d_nhwc_packed`] runs: input and output dimensions, the padding
/// before each axis, and the scratch it needs (one row of patches per input pixel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTransposePlan {
    pub input: [usize; 4],
    pub out: [usize; 4],
    strides: (usize, usize),
    pad_top: usize,
    pad_left: usize,
    pub scratch: usize,
}

/// The [`ConvTransposePlan`] of `f` on an input `x` (`[N, H, W, CI]`) for an output of
/// `out_size`; convolving the output with the filter (same strides and padding) must give
/// the input's size.
pub fn conv_transpose2d_nhwc_plan(
    x: [usize; 4],
    f: &PackedTransposedFilter,
    out_size: (usize, usize),
    strides: (usize, usize),
    padding: Padding,
) -> Result<ConvTransposePlan> {
    const OP: &str = "conv_transpose2d_nhwc";
    let [n, h, wd, ci] = x;
    let [kh, kw, co, wci] = f.dims;
    if wci != ci {
        return shape_err(
            OP,
            format!(
                "the filter {:?} expects {wci} input channels, the input has {ci}",
                f.dims
            ),
        );
    }
    let (oh, ow) = out_size;
    let (sh, sw) = strides;
    let (fh, pad_top) = window(OP, oh, kh, sh, 1, padding, 0)?;
    let (fw, pad_left) = window(OP, ow, kw, sw, 1, padding, 1)?;
    if fh != h || fw != wd {
        return shape_err(
            OP,
            format!("a {oh}x{ow} output convolved with this filter gives {fh}x{fw}, but the input is {h}x{wd}"),
        );
    }
    checked_numel(OP, &[n, oh, ow, co])?;
    Ok(ConvTransposePlan {
        input: x,
        out: [n, oh, ow, co],
        strides,
        pad_top,
        pad_left,
        scratch: checked_numel(OP, &[h * wd, kh * kw * co])?,
    })
}

/// Transposed convolution (TF's `Conv2DBackpropInput`): `x` `[N, H, W, CI]`, `w`
/// `[KH, KW, CO, CI]`, output `[N, OH, OW, CO]` with `out_size = (OH, OW)`; convolving the
/// output with `w` (same strides and padding) must give the input's size.
pub fn conv_transpose2d_nhwc(
    x: ArrayView4<'_, f32>,
    w: ArrayView4<'_, f32>,
    out_size: (usize, usize),
    strides: (usize, usize),
    padding: Padding,
) -> Result<Array4<f32>> {
    const OP: &str = "conv_transpose2d_nhwc";
    let f = PackedTransposedFilter::new(w)?;
    let (n, h, wd, ci) = x.dim();
    let plan = conv_transpose2d_nhwc_plan([n, h, wd, ci], &f, out_size, strides, padding)?;
    let x = x.as_standard_layout();
    let mut out = vec![0f32; plan.out.iter().product()];
    let mut scratch = vec![0f32; plan.scratch];
    conv_transpose2d_nhwc_packed(contiguous(&x, OP)?, &f, &plan, &mut out, &mut scratch)?;
    let [n, oh, ow, co] = plan.out;
    Array4::from_shape_vec((n, oh, ow, co), out).or_else(|e| invalid(OP, e.to_string()))
}

/// [`conv_transpose2d_nhwc`] with a packed filter, on `x` (the plan's input) into `out` (the
/// plan's output, overwritten), with the plan's `scratch`; allocates nothing.
pub fn conv_transpose2d_nhwc_packed(
    x: &[f32],
    f: &PackedTransposedFilter,
    plan: &ConvTransposePlan,
    out: &mut [f32],
    scratch: &mut [f32],
) -> Result<()> {
    const OP: &str = "conv_transpose2d_nhwc";
    let [n, h, wd, ci] = plan.input;
    let [_, oh, ow, co] = plan.out;
    let [_, _, fco, fci] = f.dims;
    check_plan_buffers(
        OP,
        fco == co && fci == ci,
        f.dims,
        (x, n * h * wd * ci),
        (out, n * oh * ow * co),
        (scratch, plan.scratch),
        plan,
    )?;
    if tiles_outputs(plan, f.dims) {
        return conv_transpose_tiled(x, f, plan, out, scratch);
    }
    // In general: the taps of each input pixel (one GEMM over the image into `scratch`)
    // added into the output, where they overlap.
    let [kh, kw, _, _] = f.dims;
    let kdim = kh * kw * co;
    let ((sh, sw), pt, pl) = (plan.strides, plan.pad_top, plan.pad_left);
    let col = &mut scratch[..plan.scratch];
    out.fill(0.0);
    for b in 0..n {
        let xb = &x[b * h * wd * ci..(b + 1) * h * wd * ci];
        // col[h*w, kh*kw*co] = x[h*w, ci] · Wᵀ, W viewed as [kh*kw*co, ci].
        gemm_packed(h * wd, xb, ci, &f.matrix, col, kdim)?;
        let ob = &mut out[b * oh * ow * co..(b + 1) * oh * ow * co];
        for iy in 0..h {
            for ix in 0..wd {
                let crow = &col[(iy * wd + ix) * kdim..(iy * wd + ix + 1) * kdim];
                for ky in 0..kh {
                    let oy = (iy * sh + ky) as isize - pt as isize;
                    if oy < 0 || oy as usize >= oh {
                        continue;
                    }
                    for kx in 0..kw {
                        let ox = (ix * sw + kx) as isize - pl as isize;
                        if ox < 0 || ox as usize >= ow {
                            continue;
                        }
                        let dst = &mut ob[(oy as usize * ow + ox as usize) * co..][..co];
                        let src = &crow[(ky * kw + kx) * co..][..co];
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d += s;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Whether each input pixel's taps land on output pixels of their own, laid out as
/// `SH x SW` tiles of the output: a filter no larger than its strides, no padding (a 2x2
/// filter at stride 2, as selfie's last layer).
fn tiles_outputs(plan: &ConvTransposePlan, [kh, kw, _, _]: [usize; 4]) -> bool {
    let ([_, h, wd, _], [_, oh, ow, _]) = (plan.input, plan.out);
    let (sh, sw) = plan.strides;
    kh <= sh && kw <= sw && plan.pad_top == 0 && plan.pad_left == 0 && oh == h * sh && ow == wd * sw
}

/// [`conv_transpose2d_nhwc_packed`] where [`tiles_outputs`]: each input row's product goes
/// straight to its own `SH` output rows, and bands of input rows run in parallel (each its
/// GEMM into its part of `scratch`, then its rows of the output). The output's values are
/// `0 + tap`, as the general path adds them, so both give the same bits.
fn conv_transpose_tiled(
    x: &[f32],
    f: &PackedTransposedFilter,
    plan: &ConvTransposePlan,
    out: &mut [f32],
    scratch: &mut [f32],
) -> Result<()> {
    let [n, h, wd, ci] = plan.input;
    let [_, _, ow, co] = plan.out;
    let [kh, kw, _, _] = f.dims;
    let (kdim, (sh, sw)) = (kh * kw * co, plan.strides);
    // Output values per input row, and input rows per task (a GEMM's worth of work).
    let row_out = sh * ow * co;
    let rows_per_task = (super::packed_gemm::task_macs() / (wd * ci * kdim).max(1)).clamp(1, h);
    let parallel = h > rows_per_task
        && rayon::current_num_threads() > 1
        && !crate::process::in_parallel_task();
    let col = &mut scratch[..h * wd * kdim];
    for (xb, ob) in x
        .chunks_exact(h * wd * ci)
        .zip(out.chunks_exact_mut(h * row_out))
        .take(n)
    {
        // Input rows `r0..`: their products into `cb`, then their output rows `ob`.
        let band = |r0: usize, ob: &mut [f32], cb: &mut [f32]| -> Result<()> {
            let (rows, xr) = (ob.len() / row_out, &xb[r0 * wd * ci..]);
            let taps = Runs::row(ci);
            gemm_packed_runs_then(rows * wd, xr, ci, taps, &f.matrix, cb, kdim, 0, &|_, _| {})?;
            for (orows, crow) in ob.chunks_exact_mut(row_out).zip(cb.chunks_exact(wd * kdim)) {
                for (ky, orow) in orows.chunks_exact_mut(ow * co).enumerate() {
                    if ky >= kh {
                        orow.fill(0.0);
                        continue;
                    }
                    let seg = (ky * kw * co, kw * co, sw * co);
                    match seg.1 {
                        // Runs of fixed length, which LLVM unrolls (selfie's are 2 values).
                        1 => tap_runs::<1>(orow, crow, kdim, seg),
                        2 => tap_runs::<2>(orow, crow, kdim, seg),
                        4 => tap_runs::<4>(orow, crow, kdim, seg),
                        _ => tap_runs::<0>(orow, crow, kdim, seg),
                    }
                }
            }
            Ok(())
        };
        let (task_out, task_col) = (rows_per_task * row_out, rows_per_task * wd * kdim);
        if parallel {
            ob.par_chunks_mut(task_out)
                .zip(col.par_chunks_mut(task_col))
                .enumerate()
                .try_for_each(|(t, (o, c))| band(t * rows_per_task, o, c))?;
        } else {
            for (t, (o, c)) in ob
                .chunks_mut(task_out)
                .zip(col.chunks_mut(task_col))
                .enumerate()
            {
                band(t * rows_per_task, o, c)?;
            }
        }
    }
    Ok(())
}

/// One output row of a tiled transposed convolution: for each input pixel (`kdim` taps in
/// `crow`), its `len` taps from `from` as `0 + tap` into its run of `step` values of `orow`,
/// the rest of the run 0. `LEN` is `len` when it is known at compile time, else 0.
fn tap_runs<const LEN: usize>(
    orow: &mut [f32],
    crow: &[f32],
    kdim: usize,
    (from, len, step): (usize, usize, usize),
) {
    let len = if LEN > 0 { LEN } else { len };
    for (dst, taps) in orow.chunks_exact_mut(step).zip(crow.chunks_exact(kdim)) {
        let (hit, miss) = dst.split_at_mut(len);
        for (d, &t) in hit.iter_mut().zip(&taps[from..from + len]) {
            *d = 0.0 + t;
        }
        miss.fill(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{Activation, Conv2d, Conv2dParams};
    use ndarray::Array;

    fn ramp(shape: (usize, usize, usize, usize), scale: f32) -> Array4<f32> {
        Array::from_shape_fn(shape, |(a, b, c, d)| {
            ((a * 31 + b * 17 + c * 7 + d * 3) % 23) as f32 * scale - 0.5
        })
    }

    /// With [`Precision::Bf16`], an [`NhwcConv2d`] computes the fp32 convolution of its input
    /// and filter rounded to bf16, up to fp32 summation order: every window gathering path
    /// (1x1 in place, a stem's 7x7 over 3 channels in runs, padding, strides, dilation, a
    /// batch of two) and both kernels where the CPU has them.
    #[test]
    fn bf16_conv2d_equals_the_fp32_layer_on_rounded_values() {
        if super::super::bf16::units().is_none() {
            eprintln!("SKIPPED bf16_conv2d_equals_the_fp32_layer_on_rounded_values: this CPU has no AVX-512 BF16");
            return;
        }
        let round = |a: &Array4<f32>| a.mapv(|v| half::bf16::from_f32(v).to_f32());
        for &(c, co, k, stride, pad, dil, hw, act, residual) in &[
            (64, 256, 1, 1, 0, 1, 9, Activation::Identity, true),
            (3, 64, 7, 2, 3, 1, 20, Activation::Relu, false),
            (32, 40, 3, 1, 1, 2, 11, Activation::Relu, true),
            (64, 64, 3, 2, 1, 1, 13, Activation::Relu, false),
            (96, 48, 1, 2, 0, 1, 9, Activation::Identity, false),
            (5, 7, 3, 1, 0, 1, 6, Activation::Sigmoid, true),
        ] {
            let w = ramp((co, c, k, k), 0.01);
            let bias: Vec<f32> = (0..co).map(|i| (i % 5) as f32 * 0.1 - 0.2).collect();
            let params = Conv2dParams::default()
                .stride(stride)
                .padding(pad)
                .dilation(dil);
            let layer = |w: &Array4<f32>| {
                Conv2d::new(w.view(), Some(ndarray::ArrayView1::from(&bias)), params)
                    .unwrap()
                    .with_activation(act)
            };
            let bf16 = NhwcConv2d::from_conv2d(&layer(&w), Precision::Bf16)
                .unwrap()
                .unwrap();
            let fp32 = NhwcConv2d::from_conv2d(&layer(&round(&w)), Precision::Fp32)
                .unwrap()
                .unwrap();
            assert_eq!(bf16.precision(), Precision::Bf16);
            let x = ramp((2, hw, hw, c), 0.05);
            let bits = |a: &Array4<f32>| a.mapv(|v| half::bf16::from_f32(v).to_bits());
            let (got, want) = if residual {
                let want = fp32.forward(round(&x).view()).unwrap();
                let r = round(&ramp(want.dim(), 0.3));
                let got = bf16.forward_residual(x.view(), r.view()).unwrap();
                // bf16 in and out: the same sums, rounded once.
                let in_bf16 = bf16
                    .forward_bf16(bits(&x).view(), Some(bits(&r).view()))
                    .unwrap();
                assert_eq!(in_bf16, bits(&got), "c={c} co={co} k={k}: bf16 in and out");
                (
                    got,
                    fp32.forward_residual(round(&x).view(), r.view()).unwrap(),
                )
            } else {
                (
                    bf16.forward(x.view()).unwrap(),
                    fp32.forward(round(&x).view()).unwrap(),
                )
            };
            assert_eq!(got.dim(), want.dim());
            let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
            let err = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err <= 2e-5 * scale, "c={c} co={co} k={k} s={stride}: {err}");
        }
    }

    /// [`NhwcConv2d`] computes what [`Conv2d`] does (its bias, activation and residual) on
    /// the permuted data: 1x1, strided, padded and dilated, on maps with windows read in
    /// place, through im2col, Winograd, and a filter large enough (590 KB) for the packed
    /// GEMM's deep order on a small map; grouped convolutions stay in `NCHW`.
    #[test]
    fn nhwc_conv2d_equals_the_nchw_layer() {
        let nchw = |x: &Array4<f32>| x.view().permuted_axes([0, 3, 1, 2]).to_owned();
        for &(c, co, k, stride, pad, dil, hw, act) in &[
            (8, 16, 1, 1, 0, 1, 9, Activation::Relu),
            (8, 16, 1, 2, 0, 1, 9, Activation::Identity),
            (3, 8, 7, 2, 3, 1, 20, Activation::Relu),
            (16, 24, 3, 1, 1, 2, 11, Activation::Relu),
            (64, 64, 3, 1, 1, 1, 24, Activation::Relu),
            (64, 256, 3, 1, 1, 1, 7, Activation::Relu),
            (64, 256, 3, 2, 1, 1, 13, Activation::Identity),
        ] {
            let w = ramp((co, c, k, k), 0.01);
            let bias: Vec<f32> = (0..co).map(|i| (i % 5) as f32 * 0.1 - 0.2).collect();
            let params = Conv2dParams::default()
                .stride(stride)
                .padding(pad)
                .dilation(dil);
            let conv = Conv2d::new(w.view(), Some(ndarray::ArrayView1::from(&bias)), params)
                .unwrap()
                .with_activation(act);
            let fast = NhwcConv2d::from_conv2d(&conv, Precision::Fp32)
                .unwrap()
                .unwrap();
            let x = ramp((2, hw, hw, c), 0.05);
            let want = conv.forward(nchw(&x).view()).unwrap();
            let got = fast.forward(x.view()).unwrap();
            let r = ramp((want.dim().0, want.dim().2, want.dim().3, co), 0.3);
            let want_r = conv
                .forward_residual(nchw(&x).view(), nchw(&r).view())
                .unwrap();
            let got_r = fast.forward_residual(x.view(), r.view()).unwrap();
            for (got, want) in [(got, want), (got_r, want_r)] {
                let got = nchw(&got);
                assert_eq!(got.dim(), want.dim());
                let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
                let err = got
                    .iter()
                    .zip(&want)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(err <= 2e-6 * scale, "c={c} co={co} k={k} s={stride}: {err}");
            }
            let wrong = ramp((1, 1, 1, co), 0.1);
            assert!(fast.forward_residual(x.view(), wrong.view()).is_err());
        }
        let grouped = Conv2d::new(
            ramp((8, 2, 3, 3), 0.01).view(),
            None,
            Conv2dParams::default().groups(4),
        )
        .unwrap();
        assert!(NhwcConv2d::from_conv2d(&grouped, Precision::Fp32)
            .unwrap()
            .is_none());
    }

    /// An `NHWC` convolution with explicit symmetric padding equals the `NCHW` one on the
    /// permuted data (filters `[KH, KW, C, CO]` against `[CO, C, KH, KW]`).
    #[test]
    fn nhwc_conv_equals_nchw_conv() {
        let x = ramp((2, 9, 11, 5), 0.05);
        let w = ramp((3, 3, 5, 4), 0.03);
        for (stride, pad, dil) in [(1, 1, 1), (2, 1, 1), (1, 2, 2), (2, 0, 1)] {
            let geom = NhwcConvGeom {
                strides: (stride, stride),
                dilations: (dil, dil),
                padding: Padding::Explicit([pad; 4]),
            };
            let ours = conv2d_nhwc(x.view(), w.view(), geom).unwrap();
            let nchw = Conv2d::new(
                w.view().permuted_axes([3, 2, 0, 1]),
                None,
                Conv2dParams::default()
                    .stride(stride)
                    .padding(pad)
                    .dilation(dil),
            )
            .unwrap()
            .forward(x.view().permuted_axes([0, 3, 1, 2]))
            .unwrap();
            let nchw = nchw.permuted_axes([0, 2, 3, 1]);
            assert_eq!(ours.shape(), nchw.shape());
            for (a, b) in ours.iter().zip(nchw.iter()) {
                assert!(
                    (a - b).abs() < 1e-4,
                    "{a} vs {b} (stride {stride}, pad {pad})"
                );
            }
        }
    }

    /// The depthwise convolution band by band, with the expansion before it, the projection
    /// after it or both, equals the convolutions run one after the other, bit for bit, with
    /// epilogues told the same pixels: bands of one output row and of all of them, on one and
    /// two threads, strided, dilated and padded.
    #[test]
    fn banded_depthwise_equals_the_convolutions_one_after_the_other_bit_for_bit() {
        let cases = [
            // (h, w, c, e, kh, kw, stride, dilation, padding)
            (9, 11, 3, 16, 3, 3, 1, 1, Padding::Same),
            (16, 17, 5, 24, 3, 3, 2, 1, Padding::Same),
            (12, 10, 4, 12, 5, 5, 2, 1, Padding::Explicit([2, 1, 0, 3])),
            (13, 9, 5, 8, 3, 3, 1, 2, Padding::Same),
            (10, 8, 2, 16, 3, 3, 1, 1, Padding::Valid),
            (7, 7, 6, 32, 3, 3, 2, 1, Padding::Explicit([3, 3, 1, 1])),
        ];
        for (h, w, c, e, kh, kw, s, d, padding) in cases {
            let n = 2;
            let p = c + 3;
            let x = ramp((n, h, w, c), 0.07);
            let bias: Vec<f32> = (0..e.max(p)).map(|i| i as f32 * 0.1 - 0.3).collect();
            let expand =
                PackedFilter::new(ramp((1, 1, c, e), 0.05).view(), Some(&bias[..e])).unwrap();
            let project =
                PackedFilter::new(ramp((1, 1, e, p), 0.04).view(), Some(&bias[..p])).unwrap();
            let dw = ramp((kh, kw, e, 1), 0.03);
            let geom = NhwcConvGeom {
                strides: (s, s),
                dilations: (d, d),
                padding,
            };
            // Epilogues that depend on the pixel they are told, so that a wrong index shows.
            let epilogue = |channels: usize, scale: f32| {
                move |p0: usize, rows: &mut [f32]| {
                    for (i, v) in rows.iter_mut().enumerate() {
                        *v = (*v * scale - 0.5 + (p0 + i / channels) as f32 * 1e-3).max(-1.0);
                    }
                }
            };
            let (expand_epi, dw_epi, project_epi) =
                (epilogue(e, 1.0), epilogue(e, 0.5), epilogue(p, 0.7));
            let conv1x1 = |input: &[f32], dims: [usize; 4], f: &PackedFilter, epi: Epilogue<'_>| {
                let plan = conv2d_nhwc_plan(dims, f, geom_1x1()).unwrap();
                let mut y = vec![0f32; plan.out.iter().product()];
                conv2d_nhwc_packed(input, f, geom_1x1(), &plan, &mut y, &mut [], epi).unwrap();
                y
            };
            // The expanded image, and the depthwise convolution of it or of `x` (with `e` of
            // its channels when there is no expansion).
            let expanded = conv1x1(x.as_slice().unwrap(), [n, h, w, c], &expand, &expand_epi);
            let x_e = ramp((n, h, w, e), 0.07);
            for (expands, projects) in [(true, false), (false, true), (true, true)] {
                let input: &[f32] = if expands {
                    &expanded
                } else {
                    x_e.as_slice().unwrap()
                };
                let dims = depthwise_conv2d_nhwc_dims([n, h, w, e], [kh, kw, e, 1], geom).unwrap();
                let mut want = vec![0f32; dims.iter().product()];
                depthwise_conv2d_nhwc_into(
                    input,
                    [n, h, w, e],
                    dw.as_slice().unwrap(),
                    [kh, kw, e, 1],
                    geom,
                    &mut want,
                )
                .unwrap();
                dw_epi(0, &mut want);
                if projects {
                    want = conv1x1(&want, dims, &project, &project_epi);
                }
                let (x, c) = if expands { (&x, c) } else { (&x_e, e) };
                for threads in [1, 2] {
                    let plan = banded_depthwise_plan(
                        [n, h, w, c],
                        expands.then_some(&expand),
                        [kh, kw, e, 1],
                        geom,
                        projects.then_some(&project),
                        threads,
                    )
                    .unwrap();
                    assert_eq!(plan.depthwise, dims);
                    let one_row = BandedDepthwisePlan {
                        band_rows: 1,
                        band_capacity: if expands {
                            ((kh - 1) * d + 1).min(h)
                        } else {
                            0
                        },
                        ..plan.clone()
                    };
                    for plan in [plan, one_row] {
                        let mut out = vec![f32::NAN; want.len()];
                        let mut scratch = vec![f32::NAN; plan.scratch];
                        on_threads(threads, || {
                            banded_depthwise_nhwc(
                                x.as_slice().unwrap(),
                                expands.then_some((&expand, &expand_epi as Epilogue<'_>)),
                                dw.as_slice().unwrap(),
                                &dw_epi,
                                projects.then_some((&project, &project_epi as Epilogue<'_>)),
                                &plan,
                                &mut out,
                                &mut scratch,
                            )
                        })
                        .unwrap();
                        let differ = out
                            .iter()
                            .zip(&want)
                            .position(|(a, b)| a.to_bits() != b.to_bits());
                        assert_eq!(
                            differ, None,
                            "{h}x{w}x{c} -> {e}, {kh}x{kw}/{s} d{d} {padding:?}, expands {expands}, projects {projects}, {threads} threads, bands of {} rows",
                            plan.band_rows
                        );
                    }
                }
            }
        }
        // Filters that do not chain are errors.
        let f = PackedFilter::new(ramp((1, 1, 4, 8), 0.1).view(), None).unwrap();
        let plan = |x, expand, w, project| {
            banded_depthwise_plan(x, expand, w, geom_1x1(), project, 1).is_err()
        };
        assert!(plan([1, 5, 5, 3], Some(&f), [3, 3, 8, 1], None));
        assert!(plan([1, 5, 5, 4], Some(&f), [3, 3, 8, 2], None));
        assert!(plan([1, 5, 5, 4], None, [3, 3, 8, 1], None));
        assert!(plan([1, 5, 5, 8], None, [3, 3, 8, 1], Some(&f)));
        assert!(!plan([1, 5, 5, 4], None, [3, 3, 4, 1], Some(&f)));
    }

    /// A 3x3 stride-1 convolution by F(2x2, 3x3) Winograd equals the direct path to a few
    /// units in the last place of the output's scale, with odd sizes, `SAME`, `VALID` and
    /// uneven explicit padding, two images, and an epilogue told the same pixels; its bits do
    /// not depend on the threads.
    #[test]
    fn winograd_equals_the_direct_convolution() {
        // (n, h, w, c, co, padding, by products, F(4x4)): the 4th to 6th have 16 to 63
        // F(2x2) tiles; the last three have 128 channels or more and 49 to 144 F(4x4) tiles
        // (28x28: 7 a row, which the NCHW path would take in F(2x2); the last with channel
        // counts that are not multiples of 8, the transforms' vectors).
        for (n, h, w, c, co, padding, few, f4) in [
            (2, 13, 11, 64, 72, Padding::Same, false, false),
            (2, 12, 18, 64, 64, Padding::Valid, false, false),
            (
                2,
                11,
                11,
                70,
                64,
                Padding::Explicit([2, 0, 1, 3]),
                false,
                false,
            ),
            (1, 7, 7, 256, 256, Padding::Same, true, false),
            (1, 9, 10, 160, 272, Padding::Same, true, false),
            (2, 5, 9, 256, 144, Padding::Same, true, false),
            (2, 32, 33, 128, 136, Padding::Same, false, true),
            (1, 28, 28, 128, 128, Padding::Same, false, true),
            (
                1,
                45,
                47,
                131,
                133,
                Padding::Explicit([1, 2, 0, 1]),
                false,
                true,
            ),
        ] {
            let x = ramp((n, h, w, c), 0.07);
            let wt = ramp((3, 3, c, co), 0.045);
            let bias: Vec<f32> = (0..co).map(|i| i as f32 * 0.05 - 1.0).collect();
            let geom = NhwcConvGeom {
                strides: (1, 1),
                dilations: (1, 1),
                padding,
            };
            let f = if f4 {
                // Without asking for F(4x4), the same map takes F(2x2).
                let f2 = PackedFilter::new(wt.view(), Some(&bias)).unwrap();
                let plan = conv2d_nhwc_plan([n, h, w, c], &f2, geom).unwrap();
                assert!(plan.winograd.is_some_and(|p| !p.is_f4()));
                PackedFilter::allowing_f4(wt.view(), Some(&bias)).unwrap()
            } else {
                PackedFilter::new(wt.view(), Some(&bias)).unwrap()
            };
            let direct = PackedFilter {
                winograd: None,
                ..f.clone()
            };
            let epi = |p0: usize, rows: &mut [f32]| {
                for (i, v) in rows.iter_mut().enumerate() {
                    *v = *v * 0.5 + (p0 + i / co) as f32 * 1e-3;
                }
            };
            let run = |f: &PackedFilter, threads: usize| {
                on_threads(threads, || {
                    let plan = conv2d_nhwc_plan([n, h, w, c], f, geom).unwrap();
                    let mut out = vec![f32::NAN; plan.out.iter().product()];
                    let mut scratch = vec![f32::NAN; plan.scratch];
                    let x = x.as_slice().unwrap();
                    conv2d_nhwc_packed(x, f, geom, &plan, &mut out, &mut scratch, &epi).unwrap();
                    if let Some(wplan) = plan.winograd {
                        assert_eq!(wplan.by_products, few, "{h}x{w}, {n} images");
                        assert_eq!(wplan.is_f4(), f4, "{h}x{w}, {n} images");
                    }
                    (plan.winograd.is_some(), out)
                })
            };
            let (took, want) = run(&direct, 1);
            assert!(!took);
            let (took, got) = run(&f, 1);
            assert!(took, "{h}x{w}x{c} -> {co}: Winograd not taken");
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
            // Rounding grows with the depth of the sums: 2e-6 of the scale at 64 channels,
            // with F(4x4)'s larger coefficients costing bits.
            let tolerance = 2e-6 * (c as f32 / 64.0).max(1.0) * if f4 { 8.0 } else { 1.0 };
            assert!(
                worst <= tolerance * scale,
                "{h}x{w}x{c} -> {co}: {worst} of {scale}"
            );
            let (_, two) = run(&f, 2);
            assert!(two
                .iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
        // Few tiles and small products (a mobile network's 8x8 map of 64 channels) stay
        // direct.
        let f = PackedFilter::new(ramp((3, 3, 64, 64), 0.045).view(), None).unwrap();
        let geom = NhwcConvGeom {
            strides: (1, 1),
            dilations: (1, 1),
            padding: Padding::Same,
        };
        let plan = conv2d_nhwc_plan([1, 8, 8, 64], &f, geom).unwrap();
        assert!(plan.winograd.is_none());
    }

    /// `work` on a pool of `threads` threads, as a library's node runs it.
    fn on_threads<R: Send>(threads: usize, work: impl FnOnce() -> R + Send) -> R {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| crate::process::in_pool(work))
    }

    fn geom_1x1() -> NhwcConvGeom {
        NhwcConvGeom {
            strides: (1, 1),
            dilations: (1, 1),
            padding: Padding::Valid,
        }
    }

    /// Windows read in place (`ConvPlan::windows`, padded or not) and im2col rows give the
    /// same sums as the definition: the bias, then every tap in filter order, fused (as
    /// `gemm_packed` adds them), bit for bit, on one thread and split by output rows on two.
    #[test]
    fn windows_in_place_equal_the_fused_sums_bit_for_bit() {
        let cases = [
            // (h, w, c, co, kh, kw, stride, dilation, padding)
            (9, 11, 3, 16, 3, 3, 1, 1, Padding::Same),
            (16, 17, 3, 5, 3, 3, 2, 1, Padding::Same),
            (12, 20, 1, 17, 5, 5, 2, 1, Padding::Explicit([2, 1, 0, 3])),
            (10, 18, 17, 8, 1, 3, 1, 1, Padding::Valid),
            (8, 24, 4, 3, 2, 2, 2, 1, Padding::Valid),
            // Padded before, while the windows stop short of the input's last row and column.
            (9, 17, 3, 4, 3, 3, 2, 1, Padding::Explicit([1, 0, 1, 0])),
            (13, 9, 5, 6, 3, 3, 1, 2, Padding::Same),
            (7, 7, 6, 4, 3, 3, 1, 1, Padding::Same),
            (64, 64, 16, 16, 3, 3, 1, 1, Padding::Same),
        ];
        for (h, w, c, co, kh, kw, s, d, padding) in cases {
            let x = ramp((2, h, w, c), 0.07);
            let wt = ramp((kh, kw, c, co), 0.05);
            let bias: Vec<f32> = (0..co).map(|i| i as f32 * 0.1 - 0.3).collect();
            let geom = NhwcConvGeom {
                strides: (s, s),
                dilations: (d, d),
                padding,
            };
            let f = PackedFilter::new(wt.view(), Some(&bias)).unwrap();
            let plan = conv2d_nhwc_plan([2, h, w, c], &f, geom).unwrap();
            let [_, oh, ow, _] = plan.out;
            assert_eq!(plan.windows.is_some(), d == 1 && ow >= WINDOWS_MIN_OW);
            let (_, pt) = window("t", h, kh, s, d, padding, 0).unwrap();
            let (_, pl) = window("t", w, kw, s, d, padding, 1).unwrap();
            let mut want = vec![0f32; 2 * oh * ow * co];
            for (i, v) in want.iter_mut().enumerate() {
                let (b, oy, ox, o) = (i / (oh * ow * co), i / (ow * co) % oh, i / co % ow, i % co);
                let mut sum = bias[o];
                for ky in 0..kh {
                    for kx in 0..kw {
                        let iy = (oy * s + ky * d) as isize - pt as isize;
                        let ix = (ox * s + kx * d) as isize - pl as isize;
                        let inside = (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix);
                        for ci in 0..c {
                            let xv = if inside {
                                x[[b, iy as usize, ix as usize, ci]]
                            } else {
                                0.0
                            };
                            sum = xv.mul_add(wt[[ky, kx, ci, o]], sum);
                        }
                    }
                }
                *v = sum;
            }
            for threads in [1, 2] {
                let mut out = vec![f32::NAN; want.len()];
                let mut scratch = vec![f32::NAN; plan.scratch];
                on_threads(threads, || {
                    conv2d_nhwc_packed(
                        x.as_slice().unwrap(),
                        &f,
                        geom,
                        &plan,
                        &mut out,
                        &mut scratch,
                        &|_, _| {},
                    )
                })
                .unwrap();
                let same = out
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{h}x{w}x{c} -> {co}, {kh}x{kw}/{s} d{d} {padding:?}, {threads} threads"
                );
            }
        }
    }

    /// TF's SAME padding puts the odd cell after: a 2x2 window, stride 2, on 3 columns
    /// reads columns (0, 1) and (2, pad).
    #[test]
    fn same_padding_is_tf_asymmetric() {
        assert_eq!(window("t", 3, 2, 2, 1, Padding::Same, 1).unwrap(), (2, 0));
        assert_eq!(window("t", 4, 3, 1, 1, Padding::Same, 0).unwrap(), (4, 1));
        assert_eq!(window("t", 5, 3, 2, 1, Padding::Same, 0).unwrap(), (3, 1));
        assert!(window("t", 2, 3, 1, 1, Padding::Valid, 0).is_err());
        assert!(window("t", 2, 3, 0, 1, Padding::Valid, 0).is_err());
    }

    /// Depthwise with multiplier 1 (the vectorised row path) and 2 (the per-pixel path)
    /// against a direct sum.
    #[test]
    fn depthwise_matches_direct_sum() {
        // Channel counts with 16-, 8- and 1-channel blocks; strides, dilations, kernel sizes
        // and paddings that put taps outside the input on every side. The sum is the direct
        // one in the same order (taps by ky, then kx), so the results are equal bit for bit.
        let cases = [
            (1, 3, 3, 1, 1, Padding::Same),
            (2, 3, 3, 1, 1, Padding::Same),
            (1, 8, 3, 2, 1, Padding::Same),
            (1, 16, 5, 1, 1, Padding::Same),
            (1, 27, 5, 2, 1, Padding::Same),
            (1, 27, 3, 1, 2, Padding::Same),
            (1, 24, 3, 2, 1, Padding::Valid),
            (3, 5, 3, 2, 1, Padding::Same),
            // Multiples of 8 channels take AVX2's four-pixel runs where a CPU has it.
            (1, 32, 3, 1, 1, Padding::Same),
            (1, 8, 3, 1, 2, Padding::Valid),
            (1, 16, 1, 1, 1, Padding::Valid),
        ];
        for (m, c, k, stride, dil, padding) in cases {
            let (h, wd) = (9, 11);
            let x = ramp((2, h, wd, c), 0.1);
            let w = ramp((k, k, c, m), 0.07);
            let geom = NhwcConvGeom {
                strides: (stride, stride),
                dilations: (dil, dil),
                padding,
            };
            let out = depthwise_conv2d_nhwc(x.view(), w.view(), geom).unwrap();
            let (_, oh, ow, co) = out.dim();
            assert_eq!(co, c * m);
            // Into a buffer holding other values (a plan's reused arena): the same bits.
            let mut reused = vec![f32::NAN; out.len()];
            let dims = |a: &Array4<f32>| <[usize; 4]>::from(a.dim());
            depthwise_conv2d_nhwc_into(
                x.as_slice().unwrap(),
                dims(&x),
                w.as_slice().unwrap(),
                dims(&w),
                geom,
                &mut reused,
            )
            .unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&reused), bits(out.as_slice().unwrap()), "m {m} c {c}");
            let ext = (k - 1) * dil + 1;
            let (pt, pl) = match padding {
                Padding::Same => {
                    let pad = |n: usize, o: usize| ((o - 1) * stride + ext).saturating_sub(n) / 2;
                    (pad(h, oh), pad(wd, ow))
                }
                _ => (0, 0),
            };
            for ((b, oy, ox, o), &v) in out.indexed_iter() {
                let (ci, mi) = (o / m, o % m);
                let mut s = 0f32;
                for ky in 0..k {
                    for kx in 0..k {
                        let iy = (oy * stride + ky * dil) as isize - pt as isize;
                        let ix = (ox * stride + kx * dil) as isize - pl as isize;
                        if (0..h as isize).contains(&iy) && (0..wd as isize).contains(&ix) {
                            s += x[[b, iy as usize, ix as usize, ci]] * w[[ky, kx, ci, mi]];
                        }
                    }
                }
                assert_eq!(
                    s.to_bits(),
                    v.to_bits(),
                    "m {m} c {c} k {k} s {stride} d {dil}: {s} vs {v}"
                );
            }
        }
    }

    /// The depthwise convolution's epilogue sees every output row once, told its first
    /// pixel: adding each value's index there gives the plain result plus the index, with
    /// one filter per channel and with two, on 1 and 2 threads.
    #[test]
    fn depthwise_epilogue_sees_each_row_once() {
        for (m, threads) in [(1, 1), (1, 2), (2, 1), (2, 2)] {
            let (x, w) = (ramp((2, 9, 7, 4), 0.05), ramp((3, 3, 4, m), 0.1));
            let geom = NhwcConvGeom {
                strides: (2, 1),
                dilations: (1, 1),
                padding: Padding::Same,
            };
            let dims = depthwise_conv2d_nhwc_dims([2, 9, 7, 4], [3, 3, 4, m], geom).unwrap();
            let co = dims[3];
            let (xs, ws) = (x.as_slice().unwrap(), w.as_slice().unwrap());
            let mut plain = vec![0f32; dims.iter().product()];
            depthwise_conv2d_nhwc_into(xs, [2, 9, 7, 4], ws, [3, 3, 4, m], geom, &mut plain)
                .unwrap();
            let mut got = vec![f32::NAN; plain.len()];
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                depthwise_conv2d_nhwc_then(
                    xs,
                    [2, 9, 7, 4],
                    ws,
                    [3, 3, 4, m],
                    geom,
                    &mut got,
                    &|row0, rows| {
                        for (i, v) in rows.iter_mut().enumerate() {
                            *v += (row0 * co + i) as f32;
                        }
                    },
                )
            })
            .unwrap();
            for (i, (g, p)) in got.iter().zip(&plain).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    (p + i as f32).to_bits(),
                    "m {m}, {threads} threads, value {i}"
                );
            }
        }
    }

    /// A transposed convolution whose filter is no larger than its strides writes each
    /// input pixel's taps to its own output tile, in bands on the threads: each output is
    /// `0 + Σ x·w` (the products fused in input-channel order from 0, as the GEMM sums them)
    /// of its one tap, or 0 where no tap lands, bit for bit; with one output channel
    /// (selfie's last layer) or several, gaps where the filter is smaller than the stride,
    /// two images, and bands split between 2 threads.
    #[test]
    fn tiled_transposed_convolution_equals_the_definition() {
        let cases = [
            // (x, filter [KH, KW, CO, CI], strides)
            ((1, 7, 9, 16), (2, 2, 1, 16), (2, 2)),
            ((2, 5, 4, 5), (2, 2, 3, 5), (2, 2)),
            ((1, 6, 5, 4), (1, 2, 2, 4), (2, 3)),
            ((1, 40, 32, 64), (2, 2, 8, 64), (2, 2)),
        ];
        for (xs, ws, (sh, sw)) in cases {
            let (x, w) = (ramp(xs, 0.07), ramp(ws, 0.03));
            let f = PackedTransposedFilter::new(w.view()).unwrap();
            let (oh, ow) = (xs.1 * sh, xs.2 * sw);
            let plan = conv_transpose2d_nhwc_plan(
                [xs.0, xs.1, xs.2, xs.3],
                &f,
                (oh, ow),
                (sh, sw),
                Padding::Same,
            )
            .unwrap();
            assert!(tiles_outputs(&plan, f.dims), "{xs:?} {ws:?}");
            let mut want = Vec::new();
            for b in 0..xs.0 {
                for oy in 0..oh {
                    for ox in 0..ow {
                        for o in 0..ws.2 {
                            let (iy, ky, ix, kx) = (oy / sh, oy % sh, ox / sw, ox % sw);
                            let v = if ky < ws.0 && kx < ws.1 {
                                let sum = (0..xs.3).fold(0f32, |s, c| {
                                    x[[b, iy, ix, c]].mul_add(w[[ky, kx, o, c]], s)
                                });
                                0.0 + sum
                            } else {
                                0.0
                            };
                            want.push(v.to_bits());
                        }
                    }
                }
            }
            let x = x.as_slice().unwrap();
            let mut scratch = vec![0f32; plan.scratch];
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut got = vec![f32::NAN; want.len()];
                pool.install(|| conv_transpose2d_nhwc_packed(x, &f, &plan, &mut got, &mut scratch))
                    .unwrap();
                let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, want, "{xs:?} {ws:?} {threads} threads");
            }
        }
        // A 3x3 filter at stride 2 overlaps (and pads): the general path.
        let f = PackedTransposedFilter::new(ramp((3, 3, 2, 4), 0.03).view()).unwrap();
        let plan =
            conv_transpose2d_nhwc_plan([1, 4, 4, 4], &f, (8, 8), (2, 2), Padding::Same).unwrap();
        assert!(!tiles_outputs(&plan, f.dims));
    }

    /// The transposed convolution is the adjoint of the convolution: <conv(y), x> equals
    /// <y, conv_transpose(x)> for the same filter (viewed `[KH, KW, CO, CI]` both ways).
    #[test]
    fn transposed_is_the_adjoint() {
        let w = ramp((3, 3, 4, 2), 0.05); // conv: 4 -> 2 channels; transposed: 2 -> 4
        let y = ramp((1, 8, 8, 4), 0.02);
        let geom = NhwcConvGeom {
            strides: (2, 2),
            dilations: (1, 1),
            padding: Padding::Same,
        };
        let cy = conv2d_nhwc(y.view(), w.view(), geom).unwrap();
        let x = ramp((1, 4, 4, 2), 0.03);
        let tx = conv_transpose2d_nhwc(x.view(), w.view(), (8, 8), (2, 2), Padding::Same).unwrap();
        let lhs: f32 = cy.iter().zip(x.iter()).map(|(a, b)| a * b).sum();
        let rhs: f32 = y.iter().zip(tx.iter()).map(|(a, b)| a * b).sum();
        assert!(
            (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );
        let e = conv_transpose2d_nhwc(x.view(), w.view(), (9, 3), (2, 2), Padding::Valid);
        assert!(e.unwrap_err().to_string().contains("but the input is 4x4"));
    }
}
