//! The TF.js ops this crate needs on the CPU, in TF's `NHWC` layout: adapters from graph
//! tensors (any dtype) and TF attributes to `kernels::layers`, which holds the one
//! implementation of each layer op, and the ops only TF graphs have.
//!
//! - from `kernels::layers`: the convolutions ([`conv2d_nhwc`], [`depthwise_conv2d_nhwc`],
//!   [`conv2d_transpose_nhwc`], on `layers::conv_nhwc`), [`matmul`] (on its GEMM),
//!   [`pool2d_nhwc`], [`resize_bilinear_nhwc`] (`layers::resize`'s TF.js mode, in f64),
//!   [`softmax`], and the layout ops [`reshape`], [`concat`], [`split`], [`unpack`],
//!   [`pack`], [`transpose`], [`pad`] (`layers::shape`, generic over the element type);
//! - here, with fused bias and activation ([`Act`], [`bias_act`]): element-wise [`binary`]
//!   (numpy broadcasting, f32/i32, comparisons to bool), [`unary`], [`prelu`], [`add_n`];
//!   [`reduce`] (mean/sum/max/min, f64 accumulation like TF.js), [`argmax`], [`top_k`] (TF.js
//!   tie order); [`strided_slice`], [`gather`], [`gather_nd`], [`cast`],
//!   [`sparse_to_dense`]; [`crop_and_resize_bilinear`] (TF.js `cropAndResize`, for the
//!   FaceMesh crops).
//!
//! Errors are [`OpError`]s; nothing panics on shapes or values a model or user controls.

use kernels::layers::conv_nhwc::sgemm_small;
use kernels::layers::{self, shape as kshape};
pub use kernels::layers::{NhwcConvGeom as ConvGeom, Padding};
use kernels::{DType, Tensor};
use rayon::prelude::*;

use crate::error::{op_err, OpError, OpResult};

// ---------------------------------------------------------------------------------------
// Helpers

/// The f32 data of `t`, or an error naming the dtype.
pub fn f32s(t: &Tensor) -> OpResult<&[f32]> {
    t.as_slice::<f32>()
        .map_err(|_| OpError::new(format!("expected a float32 tensor, got {}", t.describe())))
}

/// Integer values of a small int32 (or integral float32) tensor: shapes, axes, sizes.
pub fn int_values(t: &Tensor) -> OpResult<Vec<i64>> {
    match t.dtype() {
        DType::I32 => Ok(t.as_slice::<i32>()?.iter().map(|&v| v as i64).collect()),
        DType::I64 => Ok(t.as_slice::<i64>()?.to_vec()),
        DType::F32 => Ok(t.as_slice::<f32>()?.iter().map(|&v| v as i64).collect()),
        d => op_err!("expected an integer tensor, got {d}{:?}", t.shape()),
    }
}

fn numel(shape: &[usize]) -> OpResult<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| OpError::new(format!("shape {shape:?} overflows")))
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Normalises a possibly negative axis against `rank`.
pub fn norm_axis(axis: i64, rank: usize) -> OpResult<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) {
        return op_err!("axis {axis} is out of range for rank {rank}");
    }
    Ok(a as usize)
}

fn rank4(t: &Tensor, what: &str) -> OpResult<[usize; 4]> {
    match t.shape() {
        [a, b, c, d] => Ok([*a, *b, *c, *d]),
        s => op_err!("{what} must be rank 4 (NHWC), got shape {s:?}"),
    }
}

/// Runs `$body` with `$T` bound to the element type of tensor `$t`.
macro_rules! with_dtype {
    ($t:expr, $T:ident => $body:expr) => {
        match $t.dtype() {
            DType::F32 => {
                type $T = f32;
                $body
            }
            DType::I32 => {
                type $T = i32;
                $body
            }
            DType::Bool => {
                type $T = bool;
                $body
            }
            DType::U8 => {
                type $T = u8;
                $body
            }
            DType::I64 => {
                type $T = i64;
                $body
            }
            DType::F16 => {
                type $T = kernels::f16;
                $body
            }
        }
    };
}

fn take_all(t: &Tensor, shape: &[usize], idx: &[usize]) -> OpResult<Tensor> {
    with_dtype!(t, T => {
        let src = t.as_slice::<T>()?;
        let mut out = Vec::with_capacity(idx.len());
        for &i in idx {
            out.push(*src.get(i).ok_or_else(|| OpError::new("index out of range"))?);
        }
        Ok(Tensor::from_vec(shape, out)?)
    })
}

// ---------------------------------------------------------------------------------------
// Activations

/// A fused activation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    None,
    Relu,
    Relu6,
    LeakyRelu(f32),
    Elu,
    Sigmoid,
    Tanh,
    /// Per-channel slope given separately.
    Prelu,
}

impl Act {
    /// Parses a TF fused-op name.
    pub fn parse(name: &str, leaky_alpha: f32) -> Option<Act> {
        Some(match name {
            "Relu" => Act::Relu,
            "Relu6" => Act::Relu6,
            "LeakyRelu" => Act::LeakyRelu(leaky_alpha),
            "Elu" => Act::Elu,
            "Sigmoid" => Act::Sigmoid,
            "Tanh" => Act::Tanh,
            "Prelu" => Act::Prelu,
            _ => return None,
        })
    }
}

/// Adds `bias` (per channel, the last dimension of size `c`) and applies `act` in place.
/// `alpha` is Prelu's slope: one value, or one per channel, or one per element.
pub fn bias_act(
    data: &mut [f32],
    c: usize,
    bias: Option<&[f32]>,
    act: Act,
    alpha: Option<&[f32]>,
) -> OpResult<()> {
    if c == 0 {
        return Ok(());
    }
    let e = ConvEpilogue::new(data.len(), c, bias, act, alpha)?;
    e.apply(0, data);
    Ok(())
}

/// What follows a convolution's sums, applied block by block while they are in cache (see
/// `kernels::layers::packed_gemm::Epilogue`): the bias, the activation, and, where the plan
/// fused them, a residual added after it and a second activation.
#[derive(Clone, Copy, Debug)]
pub struct ConvEpilogue<'a> {
    len: usize,
    c: usize,
    bias: &'a [f32],
    act: Act,
    alpha: &'a [f32],
    residual: Option<&'a [f32]>,
    act2: Act,
    alpha2: &'a [f32],
    hard_swish: Option<HardSwish>,
}

/// MobileNetV3's hard swish as TF writes it, four ops on `x`:
/// `Mul(Mul(scale, x), Relu6(Add(x, shift)))`, with `scale` 1/6 and `shift` 3.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HardSwish {
    pub scale: f32,
    pub shift: f32,
}

/// The four ops of [`HardSwish`] on each value, with the same f32 operations as the separate
/// ops (`binary`'s products and sum, and [`bias_act`]'s `Relu6` clamp).
#[inline(always)]
fn hard_swish_impl(data: &mut [f32], scale: f32, shift: f32) {
    for v in data.iter_mut() {
        let r = (*v + shift).clamp(0.0, 6.0);
        *v = (scale * *v) * r;
    }
}

kernels::multiversion!(fn hard_swish_loops(data: &mut [f32], scale: f32, shift: f32) => hard_swish_impl);

impl<'a> ConvEpilogue<'a> {
    /// The bias (`c` values, or none) and activation of an output of `len` values with `c`
    /// channels; `alpha` as in [`bias_act`].
    pub fn new(
        len: usize,
        c: usize,
        bias: Option<&'a [f32]>,
        act: Act,
        alpha: Option<&'a [f32]>,
    ) -> OpResult<ConvEpilogue<'a>> {
        if let Some(b) = bias {
            if b.len() != c {
                return op_err!("bias has {} values, the output has {c} channels", b.len());
            }
        }
        Ok(ConvEpilogue {
            len,
            c,
            bias: bias.unwrap_or(&[]),
            act,
            alpha: slope(len, c, act, alpha)?,
            residual: None,
            act2: Act::None,
            alpha2: &[],
            hard_swish: None,
        })
    }

    /// Then the hard swish `h` on the result.
    pub fn then_hard_swish(self, h: Option<HardSwish>) -> ConvEpilogue<'a> {
        ConvEpilogue {
            hard_swish: h,
            ..self
        }
    }

    /// Then `residual` (the output's size) added, and `act2` applied.
    pub fn then_add(
        self,
        residual: &'a [f32],
        act2: Act,
        alpha2: Option<&'a [f32]>,
    ) -> OpResult<ConvEpilogue<'a>> {
        let len = residual.len();
        if len != self.len {
            return op_err!(
                "the residual has {len} values, the convolution's output {}",
                self.len
            );
        }
        Ok(ConvEpilogue {
            residual: Some(residual),
            act2,
            alpha2: slope(len, self.c, act2, alpha2)?,
            ..self
        })
    }

    /// Applies it to `rows`, whole rows of `c` values starting at row `row0` of the output.
    pub fn apply(&self, row0: usize, rows: &mut [f32]) {
        if self.c == 0 {
            return;
        }
        let (start, len) = (row0 * self.c, rows.len());
        // A slope per element is read at the block's place.
        let at = |alpha: &'a [f32]| {
            if alpha.len() > 1 && alpha.len() != self.c {
                alpha.get(start..start + len).unwrap_or(&[])
            } else {
                alpha
            }
        };
        // MediaPipe's two forms in one pass instead of one per op (a fifth of iris's time
        // outside the products went to these passes): the bias then Prelu, and the bias, the
        // residual, then Prelu.
        let (c, per_channel) = (self.c, |a: &[f32]| a.len() == self.c);
        if self.hard_swish.is_none() && self.bias.len() == c {
            match (self.act, self.residual, self.act2) {
                (Act::Prelu, None, _) if per_channel(self.alpha) => {
                    return bias_prelu_loops(rows, c, self.bias, self.alpha, &[]);
                }
                (Act::None, Some(residual), Act::Prelu) if per_channel(self.alpha2) => {
                    if let Some(r) = residual.get(start..start + len) {
                        return bias_add_prelu_loops(rows, c, self.bias, self.alpha2, r);
                    }
                }
                _ => {}
            }
        }
        bias_act_loops(rows, self.c, self.bias, self.act, at(self.alpha));
        if let Some(residual) = self.residual {
            if let Some(r) = residual.get(start..start + len) {
                add_loops(rows, r);
            }
            if self.act2 != Act::None {
                bias_act_loops(rows, self.c, &[], self.act2, at(self.alpha2));
            }
        }
        if let Some(h) = self.hard_swish {
            hard_swish_loops(rows, h.scale, h.shift);
        }
    }
}

/// Prelu's slope of an output of `len` values and `c` channels, checked.
fn slope(len: usize, c: usize, act: Act, alpha: Option<&[f32]>) -> OpResult<&[f32]> {
    match (act, alpha) {
        (Act::Prelu, None) => op_err!("Prelu needs a slope (alpha) input"),
        (Act::Prelu, Some(a)) if a.len() != c && a.len() != 1 && a.len() != len => {
            op_err!("Prelu slope has {} values, expected 1 or {c}", a.len())
        }
        (Act::Prelu, Some(a)) => Ok(a),
        _ => Ok(&[]),
    }
}

/// `v = r + v`: the residual's addition (`binary`'s `p + q`; IEEE addition is commutative).
#[inline(always)]
fn add_impl(data: &mut [f32], r: &[f32]) {
    for (v, &x) in data.iter_mut().zip(r) {
        *v += x;
    }
}

kernels::multiversion!(fn add_loops(data: &mut [f32], r: &[f32]) => add_impl);

/// `if v < 0 { v·a } else { v }` as a product by `a` or 1 (the same bits: `v·1 = v`): with
/// a select, the compiler stores only the changed values, with masked stores, which are
/// slow on AMD (a quarter of iris's time, with Prelu's slope repeated over blocks).
#[inline(always)]
fn neg_scaled(v: f32, a: f32) -> f32 {
    v * if v < 0.0 { a } else { 1.0 }
}

/// The loops of [`bias_act`] (arguments checked there; an empty `bias` is none), written so
/// that they vectorise (selects, not conditional stores) and compiled for AVX-512 and AVX2
/// where the CPU has them: the same operations, in the same order, on every CPU.
#[inline(always)]
fn bias_act_impl(data: &mut [f32], c: usize, bias: &[f32], act: Act, alpha: &[f32]) {
    if !bias.is_empty() {
        per_channel(data, c, bias, |v, &b| *v += b);
    }
    match act {
        Act::None => {}
        Act::Relu => data.iter_mut().for_each(|v| *v = v.max(0.0)),
        Act::Relu6 => data.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
        Act::LeakyRelu(a) => data.iter_mut().for_each(|v| *v = neg_scaled(*v, a)),
        Act::Elu => data.iter_mut().for_each(|v| {
            if *v < 0.0 {
                *v = v.exp() - 1.0
            }
        }),
        Act::Sigmoid => kernels::ops::sigmoid_slice(data),
        Act::Tanh => data.iter_mut().for_each(|v| *v = v.tanh()),
        Act::Prelu => {
            if alpha.len() == c {
                per_channel(data, c, alpha, |v, &a| *v = neg_scaled(*v, a));
            } else if alpha.len() == 1 {
                let a = alpha[0];
                data.iter_mut().for_each(|v| *v = neg_scaled(*v, a));
            } else {
                for (v, &a) in data.iter_mut().zip(alpha) {
                    *v = neg_scaled(*v, a);
                }
            }
        }
    }
}

/// One pass of a convolution's epilogue (arguments checked by the caller: `bias` and `alpha`
/// of `c` values, `residual` of `data`'s length when `RESIDUAL`): `v + bias`, then Prelu by
/// `alpha`, or when `RESIDUAL`, `v + bias`, plus the residual, then Prelu by `alpha`. The
/// same operations, in the same order, as [`bias_act`]'s and [`add_impl`]'s passes.
#[inline(always)]
fn prelu_epilogue_impl<const RESIDUAL: bool>(
    data: &mut [f32],
    c: usize,
    bias: &[f32],
    alpha: &[f32],
    residual: &[f32],
) {
    // A run of values with its parameters and residual, all of its length.
    let run = |d: &mut [f32], b: &[f32], a: &[f32], r: &[f32]| {
        if RESIDUAL {
            for (((v, &b), &a), &r) in d.iter_mut().zip(b).zip(a).zip(r) {
                *v = neg_scaled((*v + b) + r, a);
            }
        } else {
            for ((v, &b), &a) in d.iter_mut().zip(b).zip(a) {
                *v = neg_scaled(*v + b, a);
            }
        }
    };
    let residual_at = |from: usize| {
        if RESIDUAL {
            &residual[from..]
        } else {
            residual
        }
    };
    let mut done = 0;
    if c < 64 {
        // Parameters repeated over blocks of whole rows, as `per_channel` repeats them.
        let block = repeat_block(c);
        let (mut rb, mut ra) = ([0f32; REPEAT_MAX], [0f32; REPEAT_MAX]);
        for i in 0..block {
            (rb[i], ra[i]) = (bias[i % c], alpha[i % c]);
        }
        let mut blocks = data.chunks_exact_mut(block);
        for (k, d) in (&mut blocks).enumerate() {
            run(d, &rb, &ra, residual_at(k * block));
        }
        done = data.len() / block * block;
    }
    for (k, row) in data[done..].chunks_exact_mut(c).enumerate() {
        run(row, bias, alpha, residual_at(done + k * c));
    }
}

#[inline(always)]
fn bias_prelu_impl(data: &mut [f32], c: usize, bias: &[f32], alpha: &[f32], residual: &[f32]) {
    prelu_epilogue_impl::<false>(data, c, bias, alpha, residual)
}

#[inline(always)]
fn bias_add_prelu_impl(data: &mut [f32], c: usize, bias: &[f32], alpha: &[f32], residual: &[f32]) {
    prelu_epilogue_impl::<true>(data, c, bias, alpha, residual)
}

kernels::multiversion!(fn bias_prelu_loops(data: &mut [f32], c: usize, bias: &[f32], alpha: &[f32], residual: &[f32]) => bias_prelu_impl);
kernels::multiversion!(fn bias_add_prelu_loops(data: &mut [f32], c: usize, bias: &[f32], alpha: &[f32], residual: &[f32]) => bias_add_prelu_impl);

/// `f(value, parameter)` on every value of `data`, rows of `c` channels with one parameter
/// per channel in `param`. With fewer than 64 channels the parameters are first repeated over
/// a block of whole rows whose length is a multiple of 8, so that the loop runs on full
/// vectors: a row of 1 or 16 channels at a time ran a scalar or half-width loop per row (a
/// tenth of selfie's time).
#[inline(always)]
fn per_channel(data: &mut [f32], c: usize, param: &[f32], f: impl Fn(&mut f32, &f32)) {
    if c == 0 || param.len() != c {
        return;
    }
    let mut rest = data;
    if c < 64 {
        let block = repeat_block(c);
        let mut rep = [0f32; REPEAT_MAX];
        for (i, r) in rep[..block].iter_mut().enumerate() {
            *r = param[i % c];
        }
        let mut blocks = rest.chunks_exact_mut(block);
        for b in &mut blocks {
            b.iter_mut().zip(&rep[..block]).for_each(|(v, p)| f(v, p));
        }
        rest = blocks.into_remainder();
    }
    for row in rest.chunks_exact_mut(c) {
        row.iter_mut().zip(param).for_each(|(v, p)| f(v, p));
    }
}

/// The most values of a block of [`repeat_block`].
const REPEAT_MAX: usize = 512;

/// The values of a block of whole rows of `c` channels (fewer than 64) over which per-channel
/// parameters are repeated: a multiple of 8, at least 64, at most 63·8 = 504.
#[inline(always)]
fn repeat_block(c: usize) -> usize {
    let base = c * 8 / gcd(c, 8);
    base * 64usize.div_ceil(base)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

kernels::multiversion!(fn bias_act_loops(data: &mut [f32], c: usize, bias: &[f32], act: Act, alpha: &[f32]) => bias_act_impl);

// ---------------------------------------------------------------------------------------
// Convolutions

/// A rank-4 f32 view of `t`, or an error naming `what`.
fn view4<'a>(t: &'a Tensor, what: &str) -> OpResult<ndarray::ArrayView4<'a, f32>> {
    rank4(t, what)?;
    f32s(t)?;
    t.view::<f32>()?
        .into_dimensionality::<ndarray::Ix4>()
        .map_err(|e| OpError::new(format!("{what}: {e}")))
}

/// A tensor from a layer's output.
fn tensor_of<T: kernels::Element, D: ndarray::Dimension>(
    a: ndarray::Array<T, D>,
) -> OpResult<Tensor> {
    Ok(layers::array_to_tensor(a.into_dyn())?)
}

/// `x` [N, H, W, C] ⋆ `w` [KH, KW, C, CO] (+ bias, activation) → [N, OH, OW, CO].
pub fn conv2d_nhwc(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&[f32]>,
    geom: ConvGeom,
    act: Act,
    alpha: Option<&[f32]>,
) -> OpResult<Tensor> {
    let out = layers::conv_nhwc::conv2d_nhwc(
        view4(x, "Conv2D input")?,
        view4(w, "Conv2D filter")?,
        geom,
    )?;
    with_bias_act(out, bias, act, alpha)
}

/// [`conv2d_nhwc`] with the filter packed at load (without its bias, which is added with the
/// activation as for any other convolution).
pub fn conv2d_nhwc_packed(
    x: &Tensor,
    filter: &layers::conv_nhwc::PackedFilter,
    bias: Option<&[f32]>,
    geom: ConvGeom,
    act: Act,
    alpha: Option<&[f32]>,
) -> OpResult<Tensor> {
    let dims = rank4(x, "Conv2D input")?;
    let plan = layers::conv_nhwc::conv2d_nhwc_plan(dims, filter, geom)?;
    let mut out = vec![0f32; plan.out.iter().product()];
    let mut scratch = vec![0f32; plan.scratch];
    let epilogue = ConvEpilogue::new(out.len(), plan.out[3], bias, act, alpha)?;
    layers::conv_nhwc::conv2d_nhwc_packed(
        f32s(x)?,
        filter,
        geom,
        &plan,
        &mut out,
        &mut scratch,
        &|row0, rows| epilogue.apply(row0, rows),
    )?;
    Ok(Tensor::from_vec(&plan.out, out)?)
}

/// `MatMul(a, b)` of a rank-2 `a` [M, K] and a constant `b` [K, N] packed at load (as the
/// filter of a 1x1 convolution, `[1, 1, K, N]`): the 1x1 convolution of `a` seen as one row
/// of M pixels, with the bias and activation of a `_FusedMatMul`.
pub fn matmul_packed(
    a: &Tensor,
    b: &layers::conv_nhwc::PackedFilter,
    bias: Option<&[f32]>,
    act: Act,
    alpha: Option<&[f32]>,
) -> OpResult<Tensor> {
    let &[m, k] = a.shape() else {
        return op_err!("MatMul supports rank-2 operands, got {:?}", a.shape());
    };
    let out = conv2d_nhwc_packed(&a.reshape(&[1, 1, m, k])?, b, bias, MATMUL_GEOM, act, alpha)?;
    Ok(out.reshape(&[m, b.dims()[3]])?)
}

/// The geometry of a `MatMul` run as a 1x1 convolution.
pub const MATMUL_GEOM: ConvGeom = ConvGeom {
    strides: (1, 1),
    dilations: (1, 1),
    padding: Padding::Valid,
};

/// Depthwise: `x` [N, H, W, C] with `w` [KH, KW, C, M] → [N, OH, OW, C·M].
pub fn depthwise_conv2d_nhwc(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&[f32]>,
    geom: ConvGeom,
    act: Act,
    alpha: Option<&[f32]>,
) -> OpResult<Tensor> {
    let out = layers::conv_nhwc::depthwise_conv2d_nhwc(
        view4(x, "DepthwiseConv2d input")?,
        view4(w, "DepthwiseConv2d filter")?,
        geom,
    )?;
    with_bias_act(out, bias, act, alpha)
}

/// Adds the bias and applies the activation over a convolution's output channels.
fn with_bias_act(
    mut out: ndarray::Array4<f32>,
    bias: Option<&[f32]>,
    act: Act,
    alpha: Option<&[f32]>,
) -> OpResult<Tensor> {
    let co = out.dim().3;
    let data = out
        .as_slice_mut()
        .ok_or_else(|| OpError::new("convolution output is not contiguous"))?;
    bias_act(data, co, bias, act, alpha)?;
    tensor_of(out)
}

/// `Conv2DBackpropInput` (transposed convolution): `x` [N, H, W, CI], `w` [KH, KW, CO, CI],
/// output shape `out_shape` [N, OH, OW, CO].
pub fn conv2d_transpose_nhwc(
    out_shape: &[i64],
    w: &Tensor,
    x: &Tensor,
    strides: (usize, usize),
    padding: Padding,
) -> OpResult<Tensor> {
    let [n, ..] = rank4(x, "Conv2DBackpropInput input")?;
    let [_, _, co, _] = rank4(w, "Conv2DBackpropInput filter")?;
    let os: Vec<usize> = out_shape
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| OpError::new(format!("bad output shape {out_shape:?}")))
        })
        .collect::<OpResult<_>>()?;
    let [on, oh, ow, oc] = match os.as_slice() {
        [a, b, c, d] => [*a, *b, *c, *d],
        _ => return op_err!("output shape must have 4 values, got {out_shape:?}"),
    };
    if on != n || oc != co {
        return op_err!(
            "output shape {out_shape:?} does not fit input {:?} and filter {:?}",
            x.shape(),
            w.shape()
        );
    }
    tensor_of(layers::conv_nhwc::conv_transpose2d_nhwc(
        view4(x, "Conv2DBackpropInput input")?,
        view4(w, "Conv2DBackpropInput filter")?,
        (oh, ow),
        strides,
        padding,
    )?)
}

/// `a` [M, K] · `b` [K, N] (each optionally transposed), + bias, activation.
pub fn matmul(
    a: &Tensor,
    b: &Tensor,
    transpose_a: bool,
    transpose_b: bool,
    bias: Option<&[f32]>,
    act: Act,
    alpha: Option<&[f32]>,
) -> OpResult<Tensor> {
    let (&[ar, ac], &[br, bc]) = (a.shape(), b.shape()) else {
        return op_err!(
            "MatMul supports rank-2 operands, got {:?} and {:?}",
            a.shape(),
            b.shape()
        );
    };
    let (m, k, a_rs, a_cs) = if transpose_a {
        (ac, ar, 1, ac)
    } else {
        (ar, ac, ac, 1)
    };
    let (k2, n, b_rs, b_cs) = if transpose_b {
        (bc, br, 1, bc)
    } else {
        (br, bc, bc, 1)
    };
    if k != k2 {
        return op_err!(
            "MatMul: inner dimensions differ ({:?} by {:?})",
            a.shape(),
            b.shape()
        );
    }
    let mut out = vec![0f32; numel(&[m, n])?];
    sgemm_small(
        m,
        k,
        n,
        f32s(a)?,
        (a_rs, a_cs),
        f32s(b)?,
        (b_rs, b_cs),
        &mut out,
    )?;
    bias_act(&mut out, n, bias, act, alpha)?;
    Ok(Tensor::from_vec(&[m, n], out)?)
}

// ---------------------------------------------------------------------------------------
// Element-wise

/// A binary element-wise op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    FloorMod,
    SquaredDifference,
    Maximum,
    Minimum,
    Pow,
    Equal,
    NotEqual,
    Greater,
    GreaterEqual,
    Less,
    LessEqual,
    LogicalAnd,
    LogicalOr,
}

impl BinOp {
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Equal
                | BinOp::NotEqual
                | BinOp::Greater
                | BinOp::GreaterEqual
                | BinOp::Less
                | BinOp::LessEqual
        )
    }

    /// An arithmetic op on numbers (neither a comparison nor a logical op).
    pub fn is_arithmetic(self) -> bool {
        !self.is_comparison() && !matches!(self, BinOp::LogicalAnd | BinOp::LogicalOr)
    }
}

/// The broadcast shape of two shapes (numpy rules).
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> OpResult<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return op_err!("shapes {a:?} and {b:?} cannot be broadcast together");
        };
    }
    Ok(out)
}

/// Ranks the broadcasting loops handle (their indices live on the stack).
const MAX_RANK: usize = 8;

/// Applies `f` over the broadcast of `a` and `b`.
fn broadcast_map<A: Copy, B: Copy, O: Copy + Default>(
    a: &[A],
    ash: &[usize],
    b: &[B],
    bsh: &[usize],
    f: impl Fn(A, B) -> O,
) -> OpResult<(Vec<O>, Vec<usize>)> {
    let out_shape = broadcast_shape(ash, bsh)?;
    let mut out = vec![O::default(); numel(&out_shape)?];
    broadcast_into(a, ash, b, bsh, &out_shape, &mut out, f)?;
    Ok((out, out_shape))
}

/// Values of a block [`repeated_into`] holds at most.
const REPEAT_BLOCK: usize = 256;

/// Whether an operand of shape `sh` (2 to 64 values) is the output's last axes, 1s before
/// them: it then repeats along the leading axes, in the output's order.
fn repeats_along_leading_axes(sh: &[usize], out_shape: &[usize]) -> bool {
    let len: usize = sh.iter().product();
    let lead = sh.iter().take_while(|&&d| d == 1).count();
    let tail = &sh[lead..];
    (2..=64).contains(&len) && out_shape.len() >= tail.len() && out_shape.ends_with(tail)
}

/// `out[i] = f(whole[i], small[i % small.len()])`, in blocks of whole repeats of `small`.
fn repeated_into<A: Copy, B: Copy, O>(
    whole: &[A],
    small: &[B],
    out: &mut [O],
    f: &impl Fn(A, B) -> O,
) {
    let span = REPEAT_BLOCK / small.len() * small.len();
    let mut block = [small[0]; REPEAT_BLOCK];
    for (i, v) in block[..span].iter_mut().enumerate() {
        *v = small[i % small.len()];
    }
    let mut outs = out.chunks_exact_mut(span);
    let mut xs = whole.chunks_exact(span);
    for (o, x) in (&mut outs).zip(&mut xs) {
        for ((o, &x), &y) in o.iter_mut().zip(x).zip(&block[..span]) {
            *o = f(x, y);
        }
    }
    // The rest starts at a whole repeat.
    for ((o, &x), &y) in outs
        .into_remainder()
        .iter_mut()
        .zip(xs.remainder())
        .zip(&block)
    {
        *o = f(x, y);
    }
}

/// [`broadcast_map`] into `out`, of `out_shape` (the broadcast shape); allocates nothing.
fn broadcast_into<A: Copy, B: Copy, O>(
    a: &[A],
    ash: &[usize],
    b: &[B],
    bsh: &[usize],
    out_shape: &[usize],
    out: &mut [O],
    f: impl Fn(A, B) -> O,
) -> OpResult<()> {
    let n = out.len();
    if a.len() != ash.iter().product::<usize>()
        || b.len() != bsh.iter().product::<usize>()
        || n != out_shape.iter().product::<usize>()
    {
        return op_err!("operands {ash:?} and {bsh:?} do not fit an output {out_shape:?}");
    }
    if ash == bsh {
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            *o = f(x, y);
        }
        return Ok(());
    }
    if b.len() == 1 && a.len() == n {
        let y = b[0];
        for (o, &x) in out.iter_mut().zip(a) {
            *o = f(x, y);
        }
        return Ok(());
    }
    if a.len() == 1 && b.len() == n {
        let x = a[0];
        for (o, &y) in out.iter_mut().zip(b) {
            *o = f(x, y);
        }
        return Ok(());
    }
    // A few values repeated along the leading axes (a per-channel mean or scale of an NHWC
    // image): in blocks of whole repeats, so that the loop runs on full vectors (rows of 3
    // values cost a pass over the index arithmetic each: 0.5 ms on a 192x192 RGB image).
    if a.len() == n && repeats_along_leading_axes(bsh, out_shape) {
        repeated_into(a, b, out, &f);
        return Ok(());
    }
    if b.len() == n && repeats_along_leading_axes(ash, out_shape) {
        repeated_into(b, a, out, &|y, x| f(x, y));
        return Ok(());
    }
    let r = out_shape.len();
    if r > MAX_RANK {
        return op_err!("broadcasting is supported up to rank {MAX_RANK}, got {out_shape:?}");
    }
    if n == 0 {
        return Ok(());
    }
    // Strides of each operand over the output's axes (0 where it is broadcast).
    let bstrides = |sh: &[usize]| -> [usize; MAX_RANK] {
        let mut st = [0usize; MAX_RANK];
        let mut stride = 1;
        for j in (0..sh.len()).rev() {
            let i = j + r - sh.len();
            st[i] = if sh[j] == 1 { 0 } else { stride };
            stride *= sh[j];
        }
        st
    };
    let sa = bstrides(ash);
    let sb = bstrides(bsh);
    let inner = out_shape[r - 1];
    let (ia, ib) = (sa[r - 1], sb[r - 1]);
    let mut idx = [0usize; MAX_RANK];
    for orow in out.chunks_exact_mut(inner) {
        let mut oa = 0;
        let mut ob = 0;
        for d in 0..r - 1 {
            oa += idx[d] * sa[d];
            ob += idx[d] * sb[d];
        }
        // Contiguous or broadcast rows as slices, so that `f` (a closure, inlined) vectorises.
        match (ia, ib) {
            (1, 1) => {
                for ((o, &x), &y) in orow
                    .iter_mut()
                    .zip(&a[oa..oa + inner])
                    .zip(&b[ob..ob + inner])
                {
                    *o = f(x, y);
                }
            }
            (1, 0) => {
                let y = b[ob];
                for (o, &x) in orow.iter_mut().zip(&a[oa..oa + inner]) {
                    *o = f(x, y);
                }
            }
            (0, 1) => {
                let x = a[oa];
                for (o, &y) in orow.iter_mut().zip(&b[ob..ob + inner]) {
                    *o = f(x, y);
                }
            }
            _ => {
                for (i, o) in orow.iter_mut().enumerate() {
                    *o = f(a[oa + i * ia], b[ob + i * ib]);
                }
            }
        }
        for d in (0..r - 1).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(())
}

fn f32_op(op: BinOp) -> OpResult<fn(f32, f32) -> f32> {
    Ok(match op {
        BinOp::Add => |a, b| a + b,
        BinOp::Sub => |a, b| a - b,
        BinOp::Mul => |a, b| a * b,
        BinOp::Div => |a, b| a / b,
        BinOp::FloorDiv => |a, b| (a / b).floor(),
        BinOp::FloorMod => |a, b| {
            let r = a % b;
            if r != 0.0 && ((r < 0.0) != (b < 0.0)) {
                r + b
            } else {
                r
            }
        },
        BinOp::SquaredDifference => |a, b| (a - b) * (a - b),
        BinOp::Maximum => f32::max,
        BinOp::Minimum => f32::min,
        BinOp::Pow => f32::powf,
        _ => return op_err!("{op:?} is not an arithmetic op"),
    })
}

fn i32_op(op: BinOp) -> OpResult<fn(i32, i32) -> i32> {
    Ok(match op {
        BinOp::Add => |a, b| a.wrapping_add(b),
        BinOp::Sub => |a, b| a.wrapping_sub(b),
        BinOp::Mul => |a, b| a.wrapping_mul(b),
        // TF.js computes integer division in floating point; a zero divisor gives 0 here.
        BinOp::Div | BinOp::FloorDiv => |a, b| {
            if b == 0 {
                0
            } else {
                (a as f64 / b as f64).floor() as i32
            }
        },
        BinOp::FloorMod => |a, b| {
            if b == 0 {
                0
            } else {
                a.wrapping_rem(b).wrapping_add(b).wrapping_rem(b)
            }
        },
        BinOp::SquaredDifference => |a, b| a.wrapping_sub(b).wrapping_mul(a.wrapping_sub(b)),
        BinOp::Maximum => i32::max,
        BinOp::Minimum => i32::min,
        BinOp::Pow => |a, b| (a as f64).powi(b) as i32,
        _ => return op_err!("{op:?} is not an arithmetic op"),
    })
}

fn cmp_op<T: PartialOrd + Copy>(op: BinOp) -> OpResult<fn(T, T) -> bool> {
    Ok(match op {
        BinOp::Equal => |a, b| a == b,
        BinOp::NotEqual => |a, b| a != b,
        BinOp::Greater => |a, b| a > b,
        BinOp::GreaterEqual => |a, b| a >= b,
        BinOp::Less => |a, b| a < b,
        BinOp::LessEqual => |a, b| a <= b,
        _ => return op_err!("{op:?} is not a comparison"),
    })
}

/// `a op b` with broadcasting. f32 and i32 operands of the same dtype; comparisons give bool.
pub fn binary(op: BinOp, a: &Tensor, b: &Tensor) -> OpResult<Tensor> {
    if a.dtype() != b.dtype() {
        return op_err!(
            "{op:?}: operand dtypes differ ({} and {})",
            a.describe(),
            b.describe()
        );
    }
    let (ash, bsh) = (a.shape(), b.shape());
    if op.is_comparison() {
        let (v, s) = match a.dtype() {
            DType::F32 => broadcast_map(
                a.as_slice::<f32>()?,
                ash,
                b.as_slice::<f32>()?,
                bsh,
                cmp_op::<f32>(op)?,
            )?,
            DType::I32 => broadcast_map(
                a.as_slice::<i32>()?,
                ash,
                b.as_slice::<i32>()?,
                bsh,
                cmp_op::<i32>(op)?,
            )?,
            DType::Bool => broadcast_map(
                a.as_slice::<bool>()?,
                ash,
                b.as_slice::<bool>()?,
                bsh,
                cmp_op::<bool>(op)?,
            )?,
            d => return op_err!("{op:?} is not supported for dtype {d}"),
        };
        return Ok(Tensor::from_vec(&s, v)?);
    }
    if matches!(op, BinOp::LogicalAnd | BinOp::LogicalOr) {
        let f: fn(bool, bool) -> bool = if op == BinOp::LogicalAnd {
            |x, y| x && y
        } else {
            |x, y| x || y
        };
        let (v, s) = broadcast_map(a.as_slice::<bool>()?, ash, b.as_slice::<bool>()?, bsh, f)?;
        return Ok(Tensor::from_vec(&s, v)?);
    }
    match a.dtype() {
        DType::F32 => {
            let out_shape = broadcast_shape(ash, bsh)?;
            let mut out = vec![0f32; numel(&out_shape)?];
            binary_f32_into(op, (f32s(a)?, ash), (f32s(b)?, bsh), &out_shape, &mut out)?;
            Ok(Tensor::from_vec(&out_shape, out)?)
        }
        DType::I32 => {
            let (v, s) = broadcast_map(
                a.as_slice::<i32>()?,
                ash,
                b.as_slice::<i32>()?,
                bsh,
                i32_op(op)?,
            )?;
            Ok(Tensor::from_vec(&s, v)?)
        }
        d => op_err!("{op:?} is not supported for dtype {d}"),
    }
}

/// Values from which a planned element-wise step (a binary or unary op, a concat) splits its
/// output between the rayon threads: a pass over fewer takes a few tens of µs, not much more
/// than handing half of it over. In CenterNet's head (128x128x128 values, two threads), its
/// `Relu` went from 0.81 to 0.43 ms, a `Mul` from 0.54 to 0.31 and the concat from 0.63 to 0.51.
pub const PARALLEL_MIN_VALUES: usize = 1 << 18;

/// Output chunks of a parallel element-wise step per thread: a few, so that a thread slowed
/// by another process does not hold the step up.
const CHUNKS_PER_THREAD: usize = 4;

/// Whether an element-wise step of `n` values runs in parallel here.
fn elementwise_in_parallel(n: usize) -> bool {
    n >= PARALLEL_MIN_VALUES
        && rayon::current_num_threads() > 1
        && !kernels::process::in_parallel_task()
}

/// [`binary_f32_into`], the output split between the rayon threads along its first axis
/// longer than 1 when it is large ([`PARALLEL_MIN_VALUES`]): each chunk of that axis reads
/// the same chunk of an operand that has the axis, and the whole of one that broadcasts
/// along it. The same values.
pub fn binary_f32_into_par(
    op: BinOp,
    (x, ash): (&[f32], &[usize]),
    (y, bsh): (&[f32], &[usize]),
    out_shape: &[usize],
    out: &mut [f32],
) -> OpResult<()> {
    let r = out_shape.len();
    let axis = out_shape.iter().position(|&d| d > 1);
    let (Some(d0), true, true) = (
        axis,
        r <= MAX_RANK && ash.len() <= r && bsh.len() <= r,
        elementwise_in_parallel(out.len()),
    ) else {
        return binary_f32_into(op, (x, ash), (y, bsh), out_shape, out);
    };
    // The operands' shapes right-aligned to the output's rank.
    let aligned = |sh: &[usize]| {
        let mut a = [1usize; MAX_RANK];
        a[r - sh.len()..r].copy_from_slice(sh);
        a
    };
    let (a, b) = (aligned(ash), aligned(bsh));
    let inner: usize = out_shape[d0 + 1..].iter().product();
    let rows = out_shape[d0];
    let rows_per_chunk = rows
        .div_ceil(rayon::current_num_threads() * CHUNKS_PER_THREAD)
        .max(1);
    out.par_chunks_mut(rows_per_chunk * inner.max(1))
        .enumerate()
        .try_for_each(|(t, chunk)| {
            let (r0, len) = (t * rows_per_chunk, chunk.len() / inner.max(1));
            let part = |data, sh| rows_of_operand(data, sh, (d0, r), r0..r0 + len);
            let ((xa, sa), (yb, sb)) = (part(x, a), part(y, b));
            let mut so = [1usize; MAX_RANK];
            so[..r].copy_from_slice(out_shape);
            so[d0] = len;
            binary_f32_into(op, (xa, &sa[..r]), (yb, &sb[..r]), &so[..r], chunk)
        })
}

/// Rows `rows` of axis `d0` of an operand `data` of shape `sh` (rank `r`, right-aligned to
/// the output's): those rows and its shape with them, or all of it where it broadcasts along
/// the axis.
fn rows_of_operand(
    data: &[f32],
    mut sh: [usize; MAX_RANK],
    (d0, r): (usize, usize),
    rows: std::ops::Range<usize>,
) -> (&[f32], [usize; MAX_RANK]) {
    if sh[d0] == 1 {
        return (data, sh);
    }
    let stride: usize = sh[d0 + 1..r].iter().product();
    sh[d0] = rows.len();
    let at = (rows.start * stride).min(data.len());
    (&data[at..(rows.end * stride).min(data.len())], sh)
}

/// `out = op(x)` (the same length), split between the rayon threads when large
/// ([`PARALLEL_MIN_VALUES`]); each chunk is copied, then transformed while in cache.
pub fn unary_f32_into(op: UnOp, x: &[f32], out: &mut [f32]) -> OpResult<()> {
    const CHUNK: usize = 1 << 14;
    if x.len() != out.len() {
        return op_err!("{} values into {}", x.len(), out.len());
    }
    let run = |(k, chunk): (usize, &mut [f32])| {
        chunk.copy_from_slice(&x[k * CHUNK..k * CHUNK + chunk.len()]);
        unary_f32_in_place(op, chunk)
    };
    if elementwise_in_parallel(out.len() * op.cost()) {
        out.par_chunks_mut(CHUNK).enumerate().try_for_each(run)
    } else {
        out.chunks_mut(CHUNK).enumerate().try_for_each(run)
    }
}

/// Inputs a planned `ConcatV2` takes (their slices are gathered on the stack).
pub const MAX_CONCAT: usize = 16;

/// `kernels::layers::shape::concat_into` (`parts`: each input's data and its values per
/// row of `outer` rows), the rows split between the rayon threads when the output is large
/// ([`PARALLEL_MIN_VALUES`]).
pub fn concat_into_par(parts: &[(&[f32], usize)], outer: usize, out: &mut [f32]) -> OpResult<()> {
    use kernels::layers::shape::concat_into;
    let row: usize = parts.iter().map(|p| p.1).sum();
    if outer < 2 || row == 0 || parts.len() > MAX_CONCAT || !elementwise_in_parallel(out.len()) {
        return Ok(concat_into(parts, outer, out)?);
    }
    if out.len() != row * outer || parts.iter().any(|(s, c)| s.len() != c * outer) {
        return op_err!(
            "concat: parts do not fill an output of {} values",
            out.len()
        );
    }
    let rows_per_chunk = outer
        .div_ceil(rayon::current_num_threads() * CHUNKS_PER_THREAD)
        .max(1);
    out.par_chunks_mut(rows_per_chunk * row)
        .enumerate()
        .try_for_each(|(t, chunk)| {
            let (r0, n) = (t * rows_per_chunk, chunk.len() / row);
            let mut rows = [(&[][..], 0usize); MAX_CONCAT];
            for (dst, &(s, c)) in rows.iter_mut().zip(parts) {
                *dst = (&s[r0 * c..(r0 + n) * c], c);
            }
            Ok(concat_into(&rows[..parts.len()], n, chunk)?)
        })
}

/// 1 if `b`, else 0: a boolean cast to float32.
#[inline(always)]
fn one_if(b: bool) -> f32 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// An arithmetic `a op b` on f32 operands (data, shape) into `out` of `out_shape` (their
/// broadcast shape), or a comparison as float32 (1 or 0); allocates nothing.
pub fn binary_f32_into(
    op: BinOp,
    (x, ash): (&[f32], &[usize]),
    (y, bsh): (&[f32], &[usize]),
    out_shape: &[usize],
    out: &mut [f32],
) -> OpResult<()> {
    // The common ops as closures, which inline into the loops (a function pointer from
    // `f32_op` costs an indirect call per element); same arithmetic.
    match op {
        BinOp::Add => broadcast_into(x, ash, y, bsh, out_shape, out, |p: f32, q: f32| p + q),
        BinOp::Sub => broadcast_into(x, ash, y, bsh, out_shape, out, |p: f32, q: f32| p - q),
        BinOp::Mul => broadcast_into(x, ash, y, bsh, out_shape, out, |p: f32, q: f32| p * q),
        BinOp::Div => broadcast_into(x, ash, y, bsh, out_shape, out, |p: f32, q: f32| p / q),
        // A comparison as its cast to float32 reads it: 1 or 0 (the comparisons of `cmp_op`).
        BinOp::Equal => broadcast_into(x, ash, y, bsh, out_shape, out, |p, q| one_if(p == q)),
        BinOp::NotEqual => broadcast_into(x, ash, y, bsh, out_shape, out, |p, q| one_if(p != q)),
        BinOp::Greater => broadcast_into(x, ash, y, bsh, out_shape, out, |p, q| one_if(p > q)),
        BinOp::GreaterEqual => {
            broadcast_into(x, ash, y, bsh, out_shape, out, |p, q| one_if(p >= q))
        }
        BinOp::Less => broadcast_into(x, ash, y, bsh, out_shape, out, |p, q| one_if(p < q)),
        BinOp::LessEqual => broadcast_into(x, ash, y, bsh, out_shape, out, |p, q| one_if(p <= q)),
        _ => broadcast_into(x, ash, y, bsh, out_shape, out, f32_op(op)?),
    }
}

/// Sum of several tensors of one shape (or broadcastable).
pub fn add_n(xs: &[&Tensor]) -> OpResult<Tensor> {
    let Some((first, rest)) = xs.split_first() else {
        return op_err!("AddN needs at least one input");
    };
    let mut acc = (*first).clone();
    for x in rest {
        acc = binary(BinOp::Add, &acc, x)?;
    }
    Ok(acc)
}

/// A unary element-wise op on f32.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnOp {
    Act(Act),
    Sqrt,
    Rsqrt,
    Exp,
    Log,
    Neg,
    Abs,
    Square,
    Floor,
    Ceil,
    Round,
    Reciprocal,
}

impl UnOp {
    /// About what a value costs, in copies of a value: an exponential or a division per
    /// value makes a step worth splitting between the threads at an eighth of the size
    /// (selfie's sigmoid over 65k values took 0.1 ms on one thread).
    fn cost(self) -> usize {
        match self {
            UnOp::Act(Act::Sigmoid | Act::Tanh | Act::Elu)
            | UnOp::Exp
            | UnOp::Log
            | UnOp::Rsqrt
            | UnOp::Reciprocal => 8,
            _ => 1,
        }
    }
}

/// `op(x)` element-wise (f32; `Neg`, `Abs`, `Square` also on i32).
pub fn unary(op: UnOp, x: &Tensor) -> OpResult<Tensor> {
    if x.dtype() == DType::I32 {
        let s = x.as_slice::<i32>()?;
        let f: fn(i32) -> i32 = match op {
            UnOp::Neg => |v| v.wrapping_neg(),
            UnOp::Abs => |v| v.wrapping_abs(),
            UnOp::Square => |v| v.wrapping_mul(v),
            UnOp::Act(Act::Relu) => |v| v.max(0),
            _ => return op_err!("{op:?} is not supported for int32"),
        };
        return Ok(Tensor::from_vec(
            x.shape(),
            s.iter().map(|&v| f(v)).collect(),
        )?);
    }
    let mut v = f32s(x)?.to_vec();
    unary_f32_in_place(op, &mut v)?;
    Ok(Tensor::from_vec(x.shape(), v)?)
}

/// `op(v)` element-wise on f32 values, in place.
pub fn unary_f32_in_place(op: UnOp, v: &mut [f32]) -> OpResult<()> {
    match op {
        UnOp::Act(a) => {
            if a == Act::Prelu {
                return op_err!("Prelu is binary");
            }
            bias_act(v, 1, None, a, None)?
        }
        UnOp::Sqrt => v.iter_mut().for_each(|x| *x = x.sqrt()),
        UnOp::Rsqrt => v.iter_mut().for_each(|x| *x = 1.0 / x.sqrt()),
        UnOp::Exp => v.iter_mut().for_each(|x| *x = x.exp()),
        UnOp::Log => v.iter_mut().for_each(|x| *x = x.ln()),
        UnOp::Neg => v.iter_mut().for_each(|x| *x = -*x),
        UnOp::Abs => v.iter_mut().for_each(|x| *x = x.abs()),
        UnOp::Square => v.iter_mut().for_each(|x| *x *= *x),
        UnOp::Floor => v.iter_mut().for_each(|x| *x = x.floor()),
        UnOp::Ceil => v.iter_mut().for_each(|x| *x = x.ceil()),
        UnOp::Round => v.iter_mut().for_each(|x| *x = x.round_ties_even()),
        UnOp::Reciprocal => v.iter_mut().for_each(|x| *x = 1.0 / *x),
    }
    Ok(())
}

/// `max(x, 0) + alpha * min(x, 0)` with `alpha` broadcast against `x`.
pub fn prelu(x: &Tensor, alpha: &Tensor) -> OpResult<Tensor> {
    let out_shape = broadcast_shape(x.shape(), alpha.shape())?;
    let mut out = vec![0f32; numel(&out_shape)?];
    prelu_into(
        (f32s(x)?, x.shape()),
        (f32s(alpha)?, alpha.shape()),
        &out_shape,
        &mut out,
    )?;
    Ok(Tensor::from_vec(&out_shape, out)?)
}

/// [`prelu`] on f32 data into `out` of `out_shape` (the broadcast shape).
pub fn prelu_into(
    (x, xsh): (&[f32], &[usize]),
    (alpha, ash): (&[f32], &[usize]),
    out_shape: &[usize],
    out: &mut [f32],
) -> OpResult<()> {
    broadcast_into(x, xsh, alpha, ash, out_shape, out, |x, a| {
        if x < 0.0 {
            x * a
        } else {
            x
        }
    })
}

// ---------------------------------------------------------------------------------------
// Pooling and reductions

/// Max or average pooling over [N, H, W, C]; average pooling divides by the number of cells
/// inside the input (TF's SAME semantics).
pub fn pool2d_nhwc(
    x: &Tensor,
    ksize: (usize, usize),
    strides: (usize, usize),
    padding: Padding,
    max: bool,
) -> OpResult<Tensor> {
    let x = view4(x, "pooling input")?;
    tensor_of(if max {
        layers::pool::max_pool2d_nhwc(x, ksize, strides, padding)?
    } else {
        layers::pool::avg_pool2d_nhwc(x, ksize, strides, padding)?
    })
}

/// A reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    Mean,
    Sum,
    Max,
    Min,
}

/// Reduces f32 `x` over `axes` (f64 accumulation, like the TF.js CPU backend).
pub fn reduce(x: &Tensor, axes: &[i64], keep_dims: bool, kind: Reduce) -> OpResult<Tensor> {
    let shape = x.shape();
    let red = reduced_axes(axes, shape.len())?;
    let out_full = reduced_shape(shape, &red);
    let n_out = numel(&out_full)?;
    let mut acc = vec![0f64; n_out];
    let mut vals = vec![0f32; n_out];
    reduce_into(f32s(x)?, shape, &red, kind, &mut acc, &mut vals)?;
    let out_shape: Vec<usize> = if keep_dims {
        out_full
    } else {
        shape
            .iter()
            .zip(&red)
            .filter(|(_, &rd)| !rd)
            .map(|(&d, _)| d)
            .collect()
    };
    Ok(Tensor::from_vec(&out_shape, vals)?)
}

/// Ranks [`reduce_into`] takes.
pub const MAX_REDUCE_RANK: usize = 8;

/// Which of `rank` axes `axes` (possibly negative, repeats allowed) name.
pub fn reduced_axes(axes: &[i64], rank: usize) -> OpResult<Vec<bool>> {
    let mut red = vec![false; rank];
    for &a in axes {
        red[norm_axis(a, rank)?] = true;
    }
    Ok(red)
}

/// `shape` with the reduced axes kept as 1.
pub fn reduced_shape(shape: &[usize], red: &[bool]) -> Vec<usize> {
    shape
        .iter()
        .zip(red)
        .map(|(&d, &rd)| if rd { 1 } else { d })
        .collect()
}

/// [`reduce`] of `xs` (of `shape`) over the axes marked in `red`, into `out` (one value per
/// element of the reduced shape), accumulating in `acc` (as many f64s); allocates nothing.
pub fn reduce_into(
    xs: &[f32],
    shape: &[usize],
    red: &[bool],
    kind: Reduce,
    acc: &mut [f64],
    out: &mut [f32],
) -> OpResult<()> {
    let r = shape.len();
    if r > MAX_REDUCE_RANK || red.len() != r {
        return op_err!("a reduction of rank {r} (at most {MAX_REDUCE_RANK} are taken)");
    }
    let mut out_full = [1usize; MAX_REDUCE_RANK];
    for d in 0..r {
        if !red[d] {
            out_full[d] = shape[d];
        }
    }
    let n_out: usize = out_full[..r].iter().product();
    if xs.len() != shape.iter().product::<usize>() || acc.len() != n_out || out.len() != n_out {
        return op_err!(
            "a reduction of {shape:?} got {} values, {} accumulators and {} outputs",
            xs.len(),
            acc.len(),
            out.len()
        );
    }
    let count: usize = (0..r).filter(|&d| red[d]).map(|d| shape[d]).product();
    acc.fill(match kind {
        Reduce::Mean | Reduce::Sum => 0.0,
        Reduce::Max => f64::NEG_INFINITY,
        Reduce::Min => f64::INFINITY,
    });
    if r == 0 {
        if let (Some(a), Some(&v)) = (acc.first_mut(), xs.first()) {
            *a = fold(kind, *a, v as f64);
        }
    } else {
        // Row by row of the last axis: the output index is found once per row, and each
        // accumulator takes its values in the input's order, as element by element.
        let mut ost = [1usize; MAX_REDUCE_RANK];
        for d in (0..r - 1).rev() {
            ost[d] = ost[d + 1] * out_full[d + 1];
        }
        let inner = shape[r - 1];
        let mut idx = [0usize; MAX_REDUCE_RANK];
        for row in xs.chunks_exact(inner.max(1)) {
            let o: usize = (0..r - 1)
                .filter(|&d| !red[d])
                .map(|d| idx[d] * ost[d])
                .sum();
            if red[r - 1] {
                let a = &mut acc[o];
                for &v in row {
                    *a = fold(kind, *a, v as f64);
                }
            } else {
                fold_row(kind, &mut acc[o..o + inner], row);
            }
            for d in (0..r - 1).rev() {
                idx[d] += 1;
                if idx[d] < shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }
    for (o, &a) in out.iter_mut().zip(acc.iter()) {
        *o = if kind == Reduce::Mean {
            (a / count.max(1) as f64) as f32
        } else {
            a as f32
        };
    }
    Ok(())
}

/// [`fold`] of each value of `row` into its accumulator in `acc`, with the kind decided once
/// for the row so that the loop runs on vectors (CenterNet's `Mean` over 128x128 pixels of 128
/// channels took 1.5 ms as a scalar loop).
#[inline(always)]
fn fold_row_impl(kind: Reduce, acc: &mut [f64], row: &[f32]) {
    let pairs = acc.iter_mut().zip(row);
    match kind {
        Reduce::Mean | Reduce::Sum => pairs.for_each(|(a, &v)| *a += v as f64),
        Reduce::Max => pairs.for_each(|(a, &v)| *a = a.max(v as f64)),
        Reduce::Min => pairs.for_each(|(a, &v)| *a = a.min(v as f64)),
    }
}

kernels::multiversion!(fn fold_row(kind: Reduce, acc: &mut [f64], row: &[f32]) => fold_row_impl);

/// One step of a reduction's accumulation.
#[inline(always)]
fn fold(kind: Reduce, a: f64, v: f64) -> f64 {
    match kind {
        Reduce::Mean | Reduce::Sum => a + v,
        Reduce::Max => a.max(v),
        Reduce::Min => a.min(v),
    }
}

/// Softmax over the last dimension (kernels' one softmax, row by row).
pub fn softmax(x: &Tensor) -> OpResult<Tensor> {
    let c = *x.shape().last().unwrap_or(&1);
    let mut v = f32s(x)?.to_vec();
    if c > 0 {
        v.chunks_exact_mut(c)
            .for_each(kernels::layers::shape::softmax_in_place);
    }
    Ok(Tensor::from_vec(x.shape(), v)?)
}

/// Index of the (first) maximum along `axis`, int32.
pub fn argmax(x: &Tensor, axis: i64) -> OpResult<Tensor> {
    let shape = x.shape();
    let a = norm_axis(axis, shape.len())?;
    let outer: usize = shape[..a].iter().product();
    let len = shape[a];
    let inner: usize = shape[a + 1..].iter().product();
    let xs: Vec<f32> = match x.dtype() {
        DType::F32 => f32s(x)?.to_vec(),
        DType::I32 => x.as_slice::<i32>()?.iter().map(|&v| v as f32).collect(),
        d => return op_err!("ArgMax is not supported for dtype {d}"),
    };
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let mut best = 0usize;
            let mut bv = f32::NEG_INFINITY;
            for j in 0..len {
                let v = xs[(o * len + j) * inner + i];
                if j == 0 || v > bv {
                    bv = v;
                    best = j;
                }
            }
            out.push(best as i32);
        }
    }
    let mut os = shape.to_vec();
    os.remove(a);
    Ok(Tensor::from_vec(&os, out)?)
}

/// The `k` largest values along the last dimension and their indices (ties: lower index
/// first, like TF.js), sorted descending. Values compare by `f32::total_cmp`.
///
/// One pass per row keeps the best `k` so far in a heap whose top is the worst of them; a
/// value enters only when it beats that one. CenterNet takes the top 100 of 1.3 M heatmap
/// values, where sorting an index of the whole row took 5-11 ms.
pub fn top_k(x: &Tensor, k: i64) -> OpResult<(Tensor, Tensor)> {
    let shape = x.shape();
    let Some(&n) = shape.last() else {
        return op_err!("TopKV2 needs an input of rank >= 1");
    };
    if k < 0 || k as usize > n {
        return op_err!("TopKV2: k = {k} must be in [0, {n}]");
    }
    let k = k as usize;
    let xs = f32s(x)?;
    let rows = xs.len().checked_div(n).unwrap_or(0);
    let mut vals = Vec::with_capacity(rows * k);
    let mut idxs = Vec::with_capacity(rows * k);
    let mut kept = std::collections::BinaryHeap::with_capacity(k);
    for row in xs.chunks_exact(n.max(1)).take(rows) {
        kept.clear();
        let first = k.min(row.len());
        for (i, &v) in row[..first].iter().enumerate() {
            kept.push(Kept { v, i });
        }
        // Scanning in index order, an equal value comes after the kept one: worse. So a value
        // enters when its key is above the worst kept one's, and a block of values whose
        // largest key is not above it is skipped whole (CenterNet's 1.3 million scores, most
        // of them 0 after its peak test, took 1.7 ms one by one).
        let mut worst = kept.peek().map_or(i32::MAX, |w| total_order_key(w.v));
        let mut i = first;
        for block in row[first..].chunks(TOP_K_BLOCK) {
            let top = block
                .iter()
                .fold(i32::MIN, |m, &v| m.max(total_order_key(v)));
            if top > worst {
                for (j, &v) in block.iter().enumerate() {
                    if total_order_key(v) > worst {
                        if let Some(mut w) = kept.peek_mut() {
                            *w = Kept { v, i: i + j };
                        }
                        worst = kept.peek().map_or(i32::MAX, |w| total_order_key(w.v));
                    }
                }
            }
            i += block.len();
        }
        // Ascending in `Kept`'s order is best first.
        for kept in std::mem::take(&mut kept).into_sorted_vec() {
            vals.push(kept.v);
            idxs.push(kept.i as i32);
        }
    }
    let mut os = shape.to_vec();
    if let Some(l) = os.last_mut() {
        *l = k;
    }
    Ok((Tensor::from_vec(&os, vals)?, Tensor::from_vec(&os, idxs)?))
}

/// Values [`top_k`] tests at once against the worst kept one.
const TOP_K_BLOCK: usize = 16;

/// The integer whose order is `f32::total_cmp`'s (the same transform of the bits).
#[inline(always)]
fn total_order_key(v: f32) -> i32 {
    let bits = v.to_bits() as i32;
    bits ^ (((bits >> 31) as u32) >> 1) as i32
}

/// A value kept by [`top_k`] and its index, ordered worst last: a smaller value, or the same
/// value at a higher index, is greater, so a max-heap's top is the first to give way.
#[derive(Clone, Copy, Debug)]
struct Kept {
    v: f32,
    i: usize,
}

impl Ord for Kept {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.v.total_cmp(&self.v).then(self.i.cmp(&other.i))
    }
}

impl PartialOrd for Kept {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Kept {}

// ---------------------------------------------------------------------------------------
// Resize

/// Bilinear resize of [N, H, W, C] (f32, i32 or u8, as f32) to [N, oh, ow, C] as the TF.js
/// CPU backend computes it (in f64): `align_corners` maps corner to corner,
/// `half_pixel_centers` samples at pixel centres, neither is TF's legacy mapping
/// `src = dst * in / out`.
pub fn resize_bilinear_nhwc(
    x: &Tensor,
    oh: usize,
    ow: usize,
    align_corners: bool,
    half_pixel_centers: bool,
) -> OpResult<Tensor> {
    let mode = layers::ResizeMode::TfjsBilinear {
        align_corners,
        half_pixel_centers,
    };
    let as_f32;
    let x = match x.dtype() {
        DType::F32 => x,
        DType::I32 | DType::U8 => {
            as_f32 = cast(x, DType::F32)?;
            &as_f32
        }
        d => return op_err!("ResizeBilinear is not supported for dtype {d}"),
    };
    tensor_of(layers::resize::resize_nhwc(
        view4(x, "ResizeBilinear input")?,
        (oh, ow),
        mode,
    )?)
}

// ---------------------------------------------------------------------------------------
// Layout ops (any dtype)

/// The same data under `shape`; one dimension may be -1.
pub fn reshape(x: &Tensor, shape: &[i64]) -> OpResult<Tensor> {
    let shape: Vec<isize> = shape
        .iter()
        .map(|&d| d.clamp(-2, isize::MAX as i64) as isize)
        .collect();
    let dims = kshape::reshape_dims("Reshape", x.numel(), &shape)?;
    Ok(x.reshape(&dims)?)
}

/// Concatenation along `axis`.
pub fn concat(xs: &[&Tensor], axis: i64) -> OpResult<Tensor> {
    let Some(first) = xs.first() else {
        return op_err!("ConcatV2 needs at least one input");
    };
    if let Some(x) = xs.iter().find(|x| x.dtype() != first.dtype()) {
        return op_err!(
            "ConcatV2: inputs {} and {} differ in dtype",
            first.describe(),
            x.describe()
        );
    }
    let a = norm_axis(axis, first.ndim())?;
    with_dtype!(first, T => {
        let views = xs.iter().map(|x| x.view::<T>()).collect::<Result<Vec<_>, _>>()?;
        tensor_of(kshape::concat(&views, a as isize)?)
    })
}

/// Splits along `axis` into pieces of `sizes` (one may be -1).
pub fn split(x: &Tensor, sizes: &[i64], axis: i64) -> OpResult<Vec<Tensor>> {
    let a = norm_axis(axis, x.ndim())?;
    let dim = x.shape()[a];
    let known: i64 = sizes.iter().filter(|&&s| s >= 0).sum();
    let mut sz: Vec<usize> = Vec::with_capacity(sizes.len());
    for &s in sizes {
        if s == -1 {
            if known > dim as i64 {
                return op_err!("SplitV: sizes {sizes:?} exceed dimension {dim}");
            }
            sz.push(dim - known as usize);
        } else if s < 0 {
            return op_err!("SplitV: bad size in {sizes:?}");
        } else {
            sz.push(s as usize);
        }
    }
    if sz.iter().sum::<usize>() != dim {
        return op_err!(
            "SplitV: sizes {sizes:?} do not add up to dimension {dim} of {:?}",
            x.shape()
        );
    }
    with_dtype!(x, T => {
        kshape::split(x.view::<T>()?, &sz, a as isize)?
            .into_iter()
            .map(tensor_of)
            .collect()
    })
}

/// Removes `axis`, returning one tensor per index along it.
pub fn unpack(x: &Tensor, axis: i64) -> OpResult<Vec<Tensor>> {
    let a = norm_axis(axis, x.ndim())?;
    let n = x.shape()[a];
    let parts = split(x, &vec![1; n], a as i64)?;
    let mut shape = x.shape().to_vec();
    shape.remove(a);
    parts.into_iter().map(|p| Ok(p.reshape(&shape)?)).collect()
}

/// Stacks tensors of one shape along a new `axis`.
pub fn pack(xs: &[&Tensor], axis: i64) -> OpResult<Tensor> {
    let Some(first) = xs.first() else {
        return op_err!("Pack needs at least one input");
    };
    let a = norm_axis(axis, first.ndim() + 1)?;
    let mut shape = first.shape().to_vec();
    shape.insert(a, 1);
    let expanded: Vec<Tensor> = xs
        .iter()
        .map(|x| {
            if x.shape() != first.shape() {
                return op_err!(
                    "Pack: shapes {:?} and {:?} differ",
                    first.shape(),
                    x.shape()
                );
            }
            Ok(x.reshape(&shape)?)
        })
        .collect::<OpResult<_>>()?;
    let refs: Vec<&Tensor> = expanded.iter().collect();
    concat(&refs, a as i64)
}

/// Permutes dimensions.
pub fn transpose(x: &Tensor, perm: &[i64]) -> OpResult<Tensor> {
    let r = x.ndim();
    if perm.len() != r {
        return op_err!("Transpose: permutation {perm:?} does not fit rank {r}");
    }
    let p: Vec<usize> = perm
        .iter()
        .map(|&a| norm_axis(a, r))
        .collect::<OpResult<_>>()?;
    with_dtype!(x, T => tensor_of(kshape::permute(x.view::<T>()?, &p)?))
}

/// Constant padding; `pads` is [rank, 2] (before, after). `value` fills f32 tensors (others
/// are filled with zeros).
pub fn pad(x: &Tensor, pads: &[i64], value: f32) -> OpResult<Tensor> {
    let r = x.ndim();
    if pads.len() != 2 * r || pads.iter().any(|&p| p < 0) {
        return op_err!("Pad: paddings {pads:?} do not fit rank {r} (or are negative)");
    }
    // kernels lists the pairs from the last axis, as torch does.
    let pairs: Vec<(usize, usize)> = pads
        .chunks_exact(2)
        .rev()
        .map(|p| (p[0] as usize, p[1] as usize))
        .collect();
    if x.dtype() == DType::F32 {
        let out = kshape::pad(x.view::<f32>()?, &pairs, kshape::PadMode::Constant(value))?;
        return tensor_of(out);
    }
    with_dtype!(x, T => tensor_of(kshape::pad(x.view::<T>()?, &pairs, kshape::PadMode::Constant(T::default()))?))
}

/// StridedSlice bit masks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SliceMasks {
    pub begin: i64,
    pub end: i64,
    pub ellipsis: i64,
    pub new_axis: i64,
    pub shrink_axis: i64,
}

/// TF's StridedSlice (ellipsis and new-axis masks are not supported).
pub fn strided_slice(
    x: &Tensor,
    begin: &[i64],
    end: &[i64],
    steps: &[i64],
    m: SliceMasks,
) -> OpResult<Tensor> {
    if m.ellipsis != 0 || m.new_axis != 0 {
        return op_err!("StridedSlice: ellipsis_mask and new_axis_mask are not supported");
    }
    let shape = x.shape();
    let r = shape.len();
    if begin.len() != end.len() || begin.len() != steps.len() || begin.len() > r {
        return op_err!("StridedSlice: begin {begin:?}, end {end:?}, strides {steps:?} do not fit shape {shape:?}");
    }
    let mut starts = Vec::with_capacity(r);
    let mut counts = Vec::with_capacity(r);
    let mut stepv = Vec::with_capacity(r);
    let mut out_shape = Vec::new();
    for d in 0..r {
        let dim = shape[d] as i64;
        if d >= begin.len() {
            starts.push(0i64);
            counts.push(shape[d]);
            stepv.push(1i64);
            out_shape.push(shape[d]);
            continue;
        }
        let s = steps[d];
        if s == 0 {
            return op_err!("StridedSlice: stride 0 on axis {d}");
        }
        let bit = 1i64 << d;
        let shrink = m.shrink_axis & bit != 0;
        let clamp = |v: i64| -> i64 {
            let v = if v < 0 { v + dim } else { v };
            if s > 0 {
                v.clamp(0, dim)
            } else {
                v.clamp(-1, dim - 1)
            }
        };
        let b = if m.begin & bit != 0 && !shrink {
            if s > 0 {
                0
            } else {
                dim - 1
            }
        } else {
            clamp(begin[d])
        };
        let (b, e) = if shrink {
            let b = if begin[d] < 0 {
                begin[d] + dim
            } else {
                begin[d]
            };
            if b < 0 || b >= dim {
                return op_err!(
                    "StridedSlice: index {} out of range for axis {d} of size {dim}",
                    begin[d]
                );
            }
            (b, b + 1)
        } else if m.end & bit != 0 {
            (b, if s > 0 { dim } else { -1 })
        } else {
            (b, clamp(end[d]))
        };
        let step = if shrink { 1 } else { s };
        let count = if step > 0 {
            if e > b {
                (e - b + step - 1) / step
            } else {
                0
            }
        } else if b > e {
            (b - e + (-step) - 1) / (-step)
        } else {
            0
        };
        starts.push(b);
        counts.push(count as usize);
        stepv.push(step);
        if !shrink {
            out_shape.push(count as usize);
        }
    }
    let st = strides(shape);
    let n = numel(&counts)?;
    let mut idx = Vec::with_capacity(n);
    let mut cur = vec![0usize; r];
    for _ in 0..n {
        let mut off = 0i64;
        for d in 0..r {
            off += (starts[d] + cur[d] as i64 * stepv[d]) * st[d] as i64;
        }
        idx.push(off as usize);
        for d in (0..r).rev() {
            cur[d] += 1;
            if cur[d] < counts[d] {
                break;
            }
            cur[d] = 0;
        }
    }
    take_all(x, &out_shape, &idx)
}

/// `GatherV2` with batch_dims 0: `params` indexed by int32 `indices` on `axis`.
pub fn gather(params: &Tensor, indices: &Tensor, axis: i64) -> OpResult<Tensor> {
    let a = norm_axis(axis, params.ndim())?;
    let shape = params.shape();
    let dim = shape[a];
    let ind = int_values(indices)?;
    let outer: usize = shape[..a].iter().product();
    let inner: usize = shape[a + 1..].iter().product();
    let mut out_shape = shape[..a].to_vec();
    out_shape.extend_from_slice(indices.shape());
    out_shape.extend_from_slice(&shape[a + 1..]);
    let mut idx = Vec::with_capacity(numel(&out_shape)?);
    for o in 0..outer {
        for &i in &ind {
            if i < 0 || i as usize >= dim {
                return op_err!("GatherV2: index {i} is not in [0, {dim})");
            }
            for k in 0..inner {
                idx.push((o * dim + i as usize) * inner + k);
            }
        }
    }
    take_all(params, &out_shape, &idx)
}

/// `GatherNd`: `indices` [..., K] address the first K dimensions of `params`.
pub fn gather_nd(params: &Tensor, indices: &Tensor) -> OpResult<Tensor> {
    let ish = indices.shape();
    let Some(&k) = ish.last() else {
        return op_err!("GatherNd: indices must have rank >= 1");
    };
    let psh = params.shape();
    if k > psh.len() {
        return op_err!(
            "GatherNd: index depth {k} exceeds params rank {}",
            psh.len()
        );
    }
    let ind = int_values(indices)?;
    let st = strides(psh);
    let inner: usize = psh[k..].iter().product();
    let mut out_shape = ish[..ish.len() - 1].to_vec();
    out_shape.extend_from_slice(&psh[k..]);
    let mut idx = Vec::with_capacity(numel(&out_shape)?);
    if k == 0 {
        return op_err!("GatherNd: index depth 0 is not supported");
    }
    for tuple in ind.chunks_exact(k) {
        let mut off = 0usize;
        for (d, &i) in tuple.iter().enumerate() {
            if i < 0 || i as usize >= psh[d] {
                return op_err!("GatherNd: index {tuple:?} is out of bounds for shape {psh:?}");
            }
            off += i as usize * st[d];
        }
        idx.extend(off..off + inner);
    }
    take_all(params, &out_shape, &idx)
}

/// [`cast`] of int32 values to float32 into `out` (as long as `x`); allocates nothing.
pub fn cast_i32_to_f32_into(x: &[i32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v as f32;
    }
}

/// Converts dtype (float to int truncates toward zero, like TF.js).
pub fn cast(x: &Tensor, to: DType) -> OpResult<Tensor> {
    if x.dtype() == to {
        return Ok(x.clone());
    }
    // To float32 from bool, u8 and int32 without the f64 values: these are exact in f64, so
    // the one rounding to f32 is the same either way (CenterNet casts its 1.3 M-value peak
    // mask; through f64 that took 5 ms).
    let shape = x.shape();
    match (x.dtype(), to) {
        (DType::Bool, DType::F32) => {
            let v = x.as_slice::<bool>()?.iter().map(|&v| v as u8 as f32);
            return Ok(Tensor::from_vec(shape, v.collect())?);
        }
        (DType::U8, DType::F32) => {
            let v = x.as_slice::<u8>()?.iter().map(|&v| v as f32);
            return Ok(Tensor::from_vec(shape, v.collect())?);
        }
        (DType::I32, DType::F32) => {
            let x = x.as_slice::<i32>()?;
            let mut out = vec![0f32; x.len()];
            cast_i32_to_f32_into(x, &mut out);
            return Ok(Tensor::from_vec(shape, out)?);
        }
        _ => {}
    }
    let f: Vec<f64> = match x.dtype() {
        DType::F32 => f32s(x)?.iter().map(|&v| v as f64).collect(),
        DType::I32 => x.as_slice::<i32>()?.iter().map(|&v| v as f64).collect(),
        DType::Bool => x
            .as_slice::<bool>()?
            .iter()
            .map(|&v| v as u8 as f64)
            .collect(),
        DType::U8 => x.as_slice::<u8>()?.iter().map(|&v| v as f64).collect(),
        DType::I64 => x.as_slice::<i64>()?.iter().map(|&v| v as f64).collect(),
        DType::F16 => x
            .as_slice::<kernels::f16>()?
            .iter()
            .map(|v| v.to_f64())
            .collect(),
    };
    Ok(match to {
        DType::F32 => Tensor::from_vec(shape, f.iter().map(|&v| v as f32).collect())?,
        DType::I32 => Tensor::from_vec(shape, f.iter().map(|&v| v.trunc() as i32).collect())?,
        DType::Bool => Tensor::from_vec(shape, f.iter().map(|&v| v != 0.0).collect())?,
        DType::U8 => Tensor::from_vec(shape, f.iter().map(|&v| v as u8).collect())?,
        DType::I64 => Tensor::from_vec(shape, f.iter().map(|&v| v as i64).collect())?,
        DType::F16 => Tensor::from_vec(
            shape,
            f.iter().map(|&v| kernels::f16::from_f64(v)).collect(),
        )?,
    })
}

/// `SparseToDense`: a tensor of `shape` filled with `default`, with `values` at `indices`.
pub fn sparse_to_dense(
    indices: &Tensor,
    shape: &[i64],
    values: &Tensor,
    default: &Tensor,
) -> OpResult<Tensor> {
    if values.dtype() != default.dtype() {
        return op_err!("SparseToDense: values and default differ in dtype");
    }
    let out_shape: Vec<usize> = shape
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| OpError::new(format!("SparseToDense: bad shape {shape:?}")))
        })
        .collect::<OpResult<_>>()?;
    let r = out_shape.len();
    let ind = int_values(indices)?;
    let depth = if indices.ndim() <= 1 {
        1
    } else {
        indices.shape()[1]
    };
    if depth != r.max(1) && !(r == 0 && ind.is_empty()) {
        return op_err!(
            "SparseToDense: indices {:?} do not fit shape {shape:?}",
            indices.shape()
        );
    }
    let st = strides(&out_shape);
    let n_out = numel(&out_shape)?;
    let n_vals = ind.len().checked_div(depth).unwrap_or(0);
    with_dtype!(values, T => {
        let v = values.as_slice::<T>()?;
        let d = default.as_slice::<T>()?;
        let Some(&dv) = d.first() else { return op_err!("SparseToDense: empty default value") };
        if v.len() != 1 && v.len() != n_vals {
            return op_err!("SparseToDense: {} values for {n_vals} indices", v.len());
        }
        let mut out = vec![dv; n_out];
        for (j, tuple) in ind.chunks_exact(depth.max(1)).enumerate() {
            let mut off = 0usize;
            for (dd, &i) in tuple.iter().enumerate() {
                if i < 0 || i as usize >= out_shape.get(dd).copied().unwrap_or(1) {
                    return op_err!("SparseToDense: index {tuple:?} out of bounds for {shape:?}");
                }
                off += i as usize * st.get(dd).copied().unwrap_or(1);
            }
            out[off] = if v.len() == 1 { v[0] } else { v[j] };
        }
        Ok(Tensor::from_vec(&out_shape, out)?)
    })
}

// ---------------------------------------------------------------------------------------
// Crop and resize

/// `tf.image.cropAndResize(image, [box], [0], [oh, ow], 'bilinear', extrapolation)` as the
/// TF.js CPU backend computes it, for one box on one image `[H, W, C]` (u8, f32 or i32):
/// `box` = (y1, x1, y2, x2) normalised to [0, 1] (f32, like the boxes tensor); the sample
/// position of output row `y` is `y1 (H - 1) + y (y2 - y1) (H - 1) / (oh - 1)` in f64 (the
/// box centre when `oh` = 1), likewise for columns; positions outside [0, H - 1] x
/// [0, W - 1] get `extrapolation`. Returns f32 `[1, oh, ow, C]`. A non-finite box is an error.
pub fn crop_and_resize_bilinear(
    image: &Tensor,
    bx: [f32; 4],
    oh: usize,
    ow: usize,
    extrapolation: f32,
) -> OpResult<Tensor> {
    let [h, w, c] = match image.shape() {
        [h, w, c] => [*h, *w, *c],
        [1, h, w, c] => [*h, *w, *c],
        s => return op_err!("CropAndResize: the image must be [H, W, C], got shape {s:?}"),
    };
    if h == 0 || w == 0 || c == 0 {
        return op_err!("CropAndResize: empty image {:?}", image.shape());
    }
    if !bx.iter().all(|v| v.is_finite()) {
        return op_err!("CropAndResize: the box {bx:?} is not finite");
    }
    let xs: std::borrow::Cow<'_, [f32]> = match image.dtype() {
        DType::F32 => std::borrow::Cow::Borrowed(f32s(image)?),
        DType::I32 => {
            std::borrow::Cow::Owned(image.as_slice::<i32>()?.iter().map(|&v| v as f32).collect())
        }
        DType::U8 => {
            std::borrow::Cow::Owned(image.as_slice::<u8>()?.iter().map(|&v| v as f32).collect())
        }
        d => return op_err!("CropAndResize is not supported for dtype {d}"),
    };
    let [y1, x1, y2, x2] = bx.map(|v| v as f64);
    let (hm, wm) = ((h - 1) as f64, (w - 1) as f64);
    let pos = |i: usize, out: usize, a: f64, b: f64, m: f64| -> Option<(usize, usize, f64)> {
        let p = if out > 1 {
            a * m + i as f64 * ((b - a) * m / (out - 1) as f64)
        } else {
            0.5 * (a + b) * m
        };
        // NaN (an infinite scale) also lands outside.
        if !(p >= 0.0 && p <= m) {
            return None;
        }
        let lo = p.floor();
        Some((lo as usize, p.ceil() as usize, p - lo))
    };
    let cols: Vec<Option<(usize, usize, f64)>> = (0..ow).map(|x| pos(x, ow, x1, x2, wm)).collect();
    let mut out = vec![extrapolation; numel(&[oh, ow, c])?];
    if !out.is_empty() {
        out.par_chunks_mut(ow * c)
            .enumerate()
            .for_each(|(y, orow)| {
                let Some((top, bottom, fy)) = pos(y, oh, y1, y2, hm) else {
                    return;
                };
                let trow = &xs[top * w * c..][..w * c];
                let brow = &xs[bottom * w * c..][..w * c];
                for (ox, col) in cols.iter().enumerate() {
                    let Some((left, right, fx)) = *col else {
                        continue;
                    };
                    for ch in 0..c {
                        let tl = trow[left * c + ch] as f64;
                        let tr = trow[right * c + ch] as f64;
                        let bl = brow[left * c + ch] as f64;
                        let br = brow[right * c + ch] as f64;
                        let t = tl + (tr - tl) * fx;
                        let b = bl + (br - bl) * fx;
                        orow[ox * c + ch] = (t + (b - t) * fy) as f32;
                    }
                }
            });
    }
    Ok(Tensor::from_vec(&[1, oh, ow, c], out)?)
}

/// The bits of a float32 tensor's values (tests compare results bit for bit).
#[cfg(test)]
pub(crate) fn f32_bits(t: &Tensor) -> Vec<u32> {
    t.as_slice::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A few values repeated along the leading axes, on either side of a non-commutative op,
    /// equal the definition (`out[i]` from `x[i]` and `small[i % len]`), whole blocks and a
    /// rest.
    #[test]
    fn repeated_operands_equal_the_definition() {
        for (big, small) in [
            (vec![1, 5, 7, 3], vec![3]),
            (vec![1, 9, 9, 3], vec![1, 1, 3]),
            (vec![2, 4, 6], vec![4, 6]),
            (vec![1, 300, 64], vec![1, 64]),
        ] {
            let n: usize = big.iter().product();
            let len: usize = small.iter().product();
            let x: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 0.37 - 2.0).collect();
            let y: Vec<f32> = (0..len).map(|i| i as f32 * 1.5 + 0.25).collect();
            let mut out = vec![0f32; n];
            binary_f32_into(BinOp::Sub, (&x, &big), (&y, &small), &big, &mut out).unwrap();
            assert!((0..n).all(|i| out[i].to_bits() == (x[i] - y[i % len]).to_bits()));
            binary_f32_into(BinOp::Div, (&y, &small), (&x, &big), &big, &mut out).unwrap();
            assert!((0..n).all(|i| out[i].to_bits() == (y[i % len] / x[i]).to_bits()));
        }
    }

    /// The element-wise steps split between two threads (outputs of at least
    /// `PARALLEL_MIN_VALUES`) equal them on one thread, bit for bit: binary ops whose operands
    /// have the split axis or broadcast along it (before it, or in its place), comparisons as
    /// 1 or 0, a unary op, and a concat.
    #[test]
    fn parallel_elementwise_steps_equal_the_sequential_ones() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        // As a node runs: from the pool's thread running the node's work.
        let on_two_threads = |work: &mut (dyn FnMut() + Send)| {
            pool.install(|| kernels::process::in_pool(&mut *work))
        };
        let values = |n: usize, k: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * k) % 97) as f32 * 0.25 - 12.0)
                .collect()
        };
        let big = vec![1, 130, 67, 31];
        let n: usize = big.iter().product();
        assert!(n >= PARALLEL_MIN_VALUES);
        for (op, small) in [
            (BinOp::Mul, vec![1, 1, 1, 31]),
            (BinOp::Sub, vec![130, 1, 1]),
            (BinOp::Add, vec![67, 31]),
            (BinOp::Equal, big.clone()),
            (BinOp::Greater, vec![1]),
        ] {
            let (x, y) = (values(n, 7), values(small.iter().product(), 13));
            for swap in [false, true] {
                let (p, q) = ((&x[..], &big[..]), (&y[..], &small[..]));
                let (p, q) = if swap { (q, p) } else { (p, q) };
                let (mut want, mut got) = (vec![0f32; n], vec![f32::NAN; n]);
                binary_f32_into(op, p, q, &big, &mut want).unwrap();
                on_two_threads(&mut || binary_f32_into_par(op, p, q, &big, &mut got).unwrap());
                let differ = got
                    .iter()
                    .zip(&want)
                    .position(|(g, w)| g.to_bits() != w.to_bits());
                assert_eq!(
                    differ, None,
                    "{op:?} of {big:?} and {small:?}, swapped {swap}"
                );
            }
        }
        let x = values(n, 11);
        let (mut want, mut got) = (x.clone(), vec![f32::NAN; n]);
        unary_f32_in_place(UnOp::Act(Act::Relu6), &mut want).unwrap();
        on_two_threads(&mut || unary_f32_into(UnOp::Act(Act::Relu6), &x, &mut got).unwrap());
        assert!(got
            .iter()
            .zip(&want)
            .all(|(g, w)| g.to_bits() == w.to_bits()));
        let (a, b) = (values(n, 3), values(n / 31 * 5, 5));
        let parts = [(&a[..], 31), (&b[..], 5)];
        let (mut want, mut got) = (vec![0f32; n / 31 * 36], vec![f32::NAN; n / 31 * 36]);
        kernels::layers::shape::concat_into(&parts, n / 31, &mut want).unwrap();
        on_two_threads(&mut || concat_into_par(&parts, n / 31, &mut got).unwrap());
        assert_eq!(got, want);
    }

    /// A per-channel bias and Prelu slope, for channel counts that take the repeated block
    /// (1, 3, 16, 40) and the row-by-row loop (64, 72), over whole blocks and a remainder,
    /// equal value by value to `(v + b)`, then `v < 0 ? v·a : v`, bit for bit (with -0, NaN
    /// and infinities among the values); and with a residual added before the slope.
    #[test]
    fn per_channel_bias_and_slope_equal_the_definition() {
        for c in [1, 3, 16, 40, 64, 72] {
            let len = c * 37;
            let mut data: Vec<f32> = (0..len)
                .map(|i| ((i * 7919) % 61) as f32 * 0.25 - 7.5)
                .collect();
            data[1 % len] = -0.0;
            data[2 % len] = f32::NAN;
            data[3 % len] = f32::NEG_INFINITY;
            let bias: Vec<f32> = (0..c).map(|j| j as f32 * 0.125 - 1.0).collect();
            let alpha: Vec<f32> = (0..c).map(|j| 0.5 - j as f32 * 0.01).collect();
            let want: Vec<u32> = data
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let v = v + bias[i % c];
                    (if v < 0.0 { v * alpha[i % c] } else { v }).to_bits()
                })
                .collect();
            // With a residual between the bias and the slope (the plan's fused `Add`).
            let residual: Vec<f32> = (0..len).map(|i| ((i * 31) % 13) as f32 - 6.0).collect();
            let want_added: Vec<u32> = data
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let v = (v + bias[i % c]) + residual[i];
                    (if v < 0.0 { v * alpha[i % c] } else { v }).to_bits()
                })
                .collect();
            let mut added = data.clone();
            ConvEpilogue::new(len, c, Some(&bias), Act::None, None)
                .unwrap()
                .then_add(&residual, Act::Prelu, Some(&alpha))
                .unwrap()
                .apply(0, &mut added);
            let got: Vec<u32> = added.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want_added, "{c} channels, with a residual");
            bias_act(&mut data, c, Some(&bias), Act::Prelu, Some(&alpha)).unwrap();
            let got: Vec<u32> = data.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "{c} channels");
        }
    }

    /// Constant padding (f32 and i32) against an index-by-index reference.
    #[test]
    fn padding_matches_an_index_walk() {
        let cases: [(&[usize], &[i64]); 4] = [
            (&[1, 3, 4, 2], &[0, 0, 1, 2, 2, 1, 0, 0]),
            (&[2, 5], &[1, 0, 3, 2]),
            (&[4], &[2, 3]),
            (&[2, 0, 3], &[0, 1, 1, 0, 1, 1]),
        ];
        for (shape, pads) in cases {
            let n: usize = shape.iter().product();
            let out_shape: Vec<usize> = shape
                .iter()
                .enumerate()
                .map(|(d, &s)| s + (pads[2 * d] + pads[2 * d + 1]) as usize)
                .collect();
            // Output element k holds input element j + 1 (row-major), or the fill.
            let want = |fill: f32| -> Vec<f32> {
                let mut v = Vec::new();
                for k in 0..out_shape.iter().product::<usize>() {
                    let (mut rest, mut j, mut inside) = (k, 0usize, true);
                    for d in (0..shape.len()).rev() {
                        let o = rest % out_shape[d];
                        rest /= out_shape[d];
                        let i = o as i64 - pads[2 * d];
                        inside &= (0..shape[d] as i64).contains(&i);
                        let stride: usize = shape[d + 1..].iter().product();
                        j += i.max(0) as usize * stride;
                    }
                    v.push(if inside { j as f32 + 1.0 } else { fill });
                }
                v
            };
            let f = Tensor::from_vec(shape, (0..n).map(|v| v as f32 + 1.0).collect()).unwrap();
            let i = Tensor::from_vec(shape, (0..n as i32).map(|v| v + 1).collect()).unwrap();
            for fill in [0.0, -2.5] {
                let got = pad(&f, pads, fill).unwrap();
                assert_eq!(got.shape(), out_shape.as_slice(), "{shape:?} {pads:?}");
                assert_eq!(got.as_slice::<f32>().unwrap(), want(fill).as_slice());
            }
            let got: Vec<f32> = pad(&i, pads, 0.0)
                .unwrap()
                .as_slice::<i32>()
                .unwrap()
                .iter()
                .map(|&v| v as f32)
                .collect();
            assert_eq!(got, want(0.0), "{shape:?} {pads:?}");
        }
    }

    /// Reductions row by row give the element-by-element accumulation's bits.
    #[test]
    fn reductions_match_element_order_accumulation() {
        let shape = [2usize, 3, 4, 5];
        let n: usize = shape.iter().product();
        let xs: Vec<f32> = (0..n)
            .map(|i| ((i * 37) % 101) as f32 * 0.013 - 0.6)
            .collect();
        let x = Tensor::from_vec(&shape, xs.clone()).unwrap();
        for axes in [&[1i64, 2][..], &[3], &[0, 3], &[-1, 1], &[0, 1, 2, 3], &[2]] {
            for kind in [Reduce::Mean, Reduce::Sum, Reduce::Max, Reduce::Min] {
                let red: Vec<bool> = (0..4)
                    .map(|d| axes.iter().any(|&a| (a + 4) % 4 == d as i64))
                    .collect();
                let out: Vec<usize> = (0..4).map(|d| if red[d] { 1 } else { shape[d] }).collect();
                let count: usize = (0..4).filter(|&d| red[d]).map(|d| shape[d]).product();
                let mut acc = vec![
                    match kind {
                        Reduce::Max => f64::NEG_INFINITY,
                        Reduce::Min => f64::INFINITY,
                        _ => 0.0,
                    };
                    out.iter().product()
                ];
                for (k, &v) in xs.iter().enumerate() {
                    let (mut rest, mut o, mut stride) = (k, 0, 1);
                    for d in (0..4).rev() {
                        let i = rest % shape[d];
                        rest /= shape[d];
                        if !red[d] {
                            o += i * stride;
                        }
                        stride *= out[d];
                    }
                    acc[o] = fold(kind, acc[o], v as f64);
                }
                let want: Vec<u32> = acc
                    .iter()
                    .map(|&a| {
                        let a = if kind == Reduce::Mean {
                            a / count as f64
                        } else {
                            a
                        };
                        (a as f32).to_bits()
                    })
                    .collect();
                let got = reduce(&x, axes, true, kind).unwrap();
                assert_eq!(got.shape(), out.as_slice());
                assert_eq!(f32_bits(&got), want, "{axes:?} {kind:?}");
            }
        }
    }

    /// The fast transpose paths against the generic index walk (on i32 data, which takes it).
    #[test]
    fn transposes_take_the_fast_path_with_the_same_result() {
        let cases: [(&[usize], &[i64]); 7] = [
            (&[2, 3, 4, 5], &[0, 2, 3, 1]),
            (&[2, 4, 5, 3], &[0, 3, 1, 2]),
            (&[1, 16, 3, 9], &[0, 2, 3, 1]),
            (&[6, 10], &[1, 0]),
            (&[2, 1, 3, 8], &[0, 3, 1, 2]),
            (&[3, 4, 5], &[0, 1, 2]),
            (&[2, 3, 4], &[2, 0, 1]),
        ];
        for (shape, perm) in cases {
            let n: usize = shape.iter().product();
            let f = Tensor::from_vec(shape, (0..n).map(|v| v as f32).collect()).unwrap();
            let i = Tensor::from_vec(shape, (0..n as i32).collect()).unwrap();
            let fast = transpose(&f, perm).unwrap();
            let slow = transpose(&i, perm).unwrap();
            assert_eq!(fast.shape(), slow.shape(), "{shape:?} {perm:?}");
            let fast: Vec<i32> = fast
                .as_slice::<f32>()
                .unwrap()
                .iter()
                .map(|&v| v as i32)
                .collect();
            assert_eq!(fast, slow.as_slice::<i32>().unwrap(), "{shape:?} {perm:?}");
        }
    }

    fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_vec(shape, v).unwrap()
    }

    #[allow(clippy::too_many_arguments)]
    fn naive_conv(
        x: &[f32],
        [h, w, c]: [usize; 3],
        wt: &[f32],
        [kh, kw, co]: [usize; 3],
        s: usize,
        pt: usize,
        pl: usize,
        oh: usize,
        ow: usize,
    ) -> Vec<f32> {
        let mut out = vec![0.0; oh * ow * co];
        for oy in 0..oh {
            for ox in 0..ow {
                for o in 0..co {
                    let mut acc = 0.0;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * s + ky) as isize - pt as isize;
                            let ix = (ox * s + kx) as isize - pl as isize;
                            if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                                continue;
                            }
                            for ci in 0..c {
                                acc += x[(iy as usize * w + ix as usize) * c + ci]
                                    * wt[((ky * kw + kx) * c + ci) * co + o];
                            }
                        }
                    }
                    out[(oy * ow + ox) * co + o] = acc;
                }
            }
        }
        out
    }

    fn seq(n: usize, k: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 * k).sin() * 10.0).round() / 10.0)
            .collect()
    }

    #[test]
    fn conv_same_and_valid_match_naive() {
        let (h, w, c, co) = (7, 6, 3, 4);
        let x = seq(h * w * c, 0.7);
        let wt = seq(9 * c * co, 1.3);
        for (pad, s, pt, oh, ow) in [
            (Padding::Same, 2, 1, 4, 3),
            (Padding::Valid, 1, 0, 5, 4),
            (Padding::Same, 1, 1, 7, 6),
        ] {
            let geom = ConvGeom {
                strides: (s, s),
                dilations: (1, 1),
                padding: pad,
            };
            let y = conv2d_nhwc(
                &t(&[1, h, w, c], x.clone()),
                &t(&[3, 3, c, co], wt.clone()),
                None,
                geom,
                Act::None,
                None,
            )
            .unwrap();
            assert_eq!(y.shape(), &[1, oh, ow, co]);
            // SAME with stride 2 on width 6: total pad = 1, left 0.
            let pl = if pad == Padding::Same && s == 2 {
                0
            } else {
                pt
            };
            let r = naive_conv(&x, [h, w, c], &wt, [3, 3, co], s, pt, pl, oh, ow);
            for (a, b) in y.as_slice::<f32>().unwrap().iter().zip(&r) {
                assert!((a - b).abs() < 1e-4, "{a} {b}");
            }
        }
    }

    #[test]
    fn depthwise_matches_conv_per_channel() {
        let x = seq(5 * 5 * 2, 0.3);
        let w = seq(9 * 2, 0.9);
        let geom = ConvGeom {
            strides: (1, 1),
            dilations: (1, 1),
            padding: Padding::Same,
        };
        let y = depthwise_conv2d_nhwc(
            &t(&[1, 5, 5, 2], x.clone()),
            &t(&[3, 3, 2, 1], w.clone()),
            Some(&[1.0, -1.0]),
            geom,
            Act::Relu,
            None,
        )
        .unwrap();
        let ys = y.as_slice::<f32>().unwrap();
        for ch in 0..2 {
            let xc: Vec<f32> = (0..25).map(|i| x[i * 2 + ch]).collect();
            let wc: Vec<f32> = (0..9).map(|i| w[i * 2 + ch]).collect();
            let r = naive_conv(&xc, [5, 5, 1], &wc, [3, 3, 1], 1, 1, 1, 5, 5);
            for i in 0..25 {
                let e = (r[i] + if ch == 0 { 1.0 } else { -1.0 }).max(0.0);
                assert!((ys[i * 2 + ch] - e).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn transpose_conv_is_adjoint_of_conv() {
        // <conv(x), y> == <x, conv_transpose(y)> for the same filter.
        let (h, w, ci, co) = (6, 6, 2, 3);
        let x = seq(h * w * ci, 0.37);
        let wt = seq(9 * ci * co, 0.71);
        let geom = ConvGeom {
            strides: (2, 2),
            dilations: (1, 1),
            padding: Padding::Same,
        };
        let cx = conv2d_nhwc(
            &t(&[1, h, w, ci], x.clone()),
            &t(&[3, 3, ci, co], wt.clone()),
            None,
            geom,
            Act::None,
            None,
        )
        .unwrap();
        let y = seq(cx.numel(), 0.53);
        let ty = conv2d_transpose_nhwc(
            &[1, h as i64, w as i64, ci as i64],
            &t(&[3, 3, ci, co], wt),
            &t(cx.shape(), y.clone()),
            (2, 2),
            Padding::Same,
        )
        .unwrap();
        let lhs: f32 = cx
            .as_slice::<f32>()
            .unwrap()
            .iter()
            .zip(&y)
            .map(|(a, b)| a * b)
            .sum();
        let rhs: f32 = x
            .iter()
            .zip(ty.as_slice::<f32>().unwrap())
            .map(|(a, b)| a * b)
            .sum();
        assert!((lhs - rhs).abs() < 1e-3, "{lhs} {rhs}");
    }

    #[test]
    fn broadcasting_and_int_ops() {
        let a = t(&[2, 3], vec![1., 2., 3., 4., 5., 6.]);
        let b = t(&[3], vec![10., 20., 30.]);
        let c = binary(BinOp::Add, &a, &b).unwrap();
        assert_eq!(
            c.as_slice::<f32>().unwrap(),
            &[11., 22., 33., 14., 25., 36.]
        );
        let col = t(&[2, 1], vec![1., 2.]);
        let d = binary(BinOp::Mul, &col, &b).unwrap();
        assert_eq!(d.shape(), &[2, 3]);
        assert_eq!(
            d.as_slice::<f32>().unwrap(),
            &[10., 20., 30., 20., 40., 60.]
        );
        let i = Tensor::from_vec(&[3], vec![-7i32, 7, 8]).unwrap();
        let k = Tensor::scalar(3i32);
        assert_eq!(
            binary(BinOp::FloorDiv, &i, &k)
                .unwrap()
                .as_slice::<i32>()
                .unwrap(),
            &[-3, 2, 2]
        );
        assert_eq!(
            binary(BinOp::FloorMod, &i, &k)
                .unwrap()
                .as_slice::<i32>()
                .unwrap(),
            &[2, 1, 2]
        );
        assert_eq!(binary(BinOp::Equal, &i, &k).unwrap().dtype(), DType::Bool);
        assert!(binary(BinOp::Add, &a, &t(&[4], vec![0.; 4])).is_err());
        assert!(binary(BinOp::Add, &a, &i).is_err());
    }

    #[test]
    fn pooling_same_averages_valid_cells() {
        let x = t(&[1, 3, 3, 1], (1..=9).map(|v| v as f32).collect());
        let y = pool2d_nhwc(&x, (2, 2), (2, 2), Padding::Same, false).unwrap();
        assert_eq!(y.shape(), &[1, 2, 2, 1]);
        assert_eq!(y.as_slice::<f32>().unwrap(), &[3.0, 4.5, 7.5, 9.0]);
        let m = pool2d_nhwc(&x, (2, 2), (1, 1), Padding::Valid, true).unwrap();
        assert_eq!(m.as_slice::<f32>().unwrap(), &[5., 6., 8., 9.]);
    }

    #[test]
    fn resize_modes() {
        let x = t(&[1, 1, 2, 1], vec![0.0, 1.0]);
        let legacy = resize_bilinear_nhwc(&x, 1, 4, false, false).unwrap();
        assert_eq!(legacy.as_slice::<f32>().unwrap(), &[0.0, 0.5, 1.0, 1.0]);
        let half = resize_bilinear_nhwc(&x, 1, 4, false, true).unwrap();
        assert_eq!(half.as_slice::<f32>().unwrap(), &[0.0, 0.25, 0.75, 1.0]);
        let ac = resize_bilinear_nhwc(&x, 1, 3, true, false).unwrap();
        assert_eq!(ac.as_slice::<f32>().unwrap(), &[0.0, 0.5, 1.0]);
    }

    #[test]
    fn casts_to_float32_equal_the_casts_through_f64() {
        let ints = [
            0,
            1,
            -1,
            16_777_217,
            -16_777_219,
            i32::MAX,
            i32::MIN,
            123_456_789,
        ];
        let x = Tensor::from_vec(&[8], ints.to_vec()).unwrap();
        let want: Vec<u32> = ints.iter().map(|&v| (v as f64 as f32).to_bits()).collect();
        assert_eq!(f32_bits(&cast(&x, DType::F32).unwrap()), want);
        let b = Tensor::from_vec(&[3], vec![true, false, true]).unwrap();
        assert_eq!(
            cast(&b, DType::F32).unwrap().as_slice::<f32>().unwrap(),
            &[1.0, 0.0, 1.0]
        );
        let u = Tensor::from_vec(&[2], vec![0u8, 255]).unwrap();
        assert_eq!(
            cast(&u, DType::F32).unwrap().as_slice::<f32>().unwrap(),
            &[0.0, 255.0]
        );
    }

    #[test]
    fn top_k_equals_a_full_sort_with_ties_and_nans() {
        let (rows, n) = (3, 257);
        let data: Vec<f32> = (0..rows * n)
            .map(|i| match i % 37 {
                0 => f32::NAN,
                1 => -f32::NAN,
                2 => f32::NEG_INFINITY,
                _ => ((i * 7919) % 23) as f32 - 11.0,
            })
            .collect();
        let x = t(&[rows, n], data.clone());
        for k in [0, 1, 5, 100, n] {
            let (v, i) = top_k(&x, k as i64).unwrap();
            assert_eq!(v.shape(), &[rows, k]);
            for r in 0..rows {
                let row = &data[r * n..(r + 1) * n];
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                let want: Vec<i32> = order[..k].iter().map(|&j| j as i32).collect();
                assert_eq!(&i.as_slice::<i32>().unwrap()[r * k..(r + 1) * k], &want[..]);
                let got_bits: Vec<u32> = v.as_slice::<f32>().unwrap()[r * k..(r + 1) * k]
                    .iter()
                    .map(|v| v.to_bits())
                    .collect();
                let want_bits: Vec<u32> = order[..k].iter().map(|&j| row[j].to_bits()).collect();
                assert_eq!(got_bits, want_bits);
            }
        }
    }

    #[test]
    fn layout_ops() {
        let x = t(&[2, 3], vec![1., 2., 3., 4., 5., 6.]);
        let tr = transpose(&x, &[1, 0]).unwrap();
        assert_eq!(tr.as_slice::<f32>().unwrap(), &[1., 4., 2., 5., 3., 6.]);
        let p = pad(&x, &[0, 1, 1, 0], 0.0).unwrap();
        assert_eq!(p.shape(), &[3, 4]);
        assert_eq!(p.as_slice::<f32>().unwrap()[..4], [0., 1., 2., 3.]);
        let c = concat(&[&x, &x], 1).unwrap();
        assert_eq!(c.shape(), &[2, 6]);
        let parts = split(&c, &[2, -1], 1).unwrap();
        assert_eq!(parts[1].shape(), &[2, 4]);
        let s = strided_slice(
            &x,
            &[0, 1],
            &[0, 3],
            &[1, 1],
            SliceMasks {
                begin: 1,
                end: 1,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.as_slice::<f32>().unwrap(), &[2., 3., 5., 6.]);
        let s = strided_slice(
            &x,
            &[0, 2],
            &[0, 3],
            &[1, 1],
            SliceMasks {
                begin: 1,
                end: 1,
                shrink_axis: 2,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.shape(), &[2]);
        assert_eq!(s.as_slice::<f32>().unwrap(), &[3., 6.]);
        let g = gather(&x, &Tensor::from_vec(&[2], vec![2i32, 0]).unwrap(), 1).unwrap();
        assert_eq!(g.as_slice::<f32>().unwrap(), &[3., 1., 6., 4.]);
        assert!(gather(&x, &Tensor::from_vec(&[1], vec![5i32]).unwrap(), 1).is_err());
        let gn = gather_nd(&x, &Tensor::from_vec(&[2, 2], vec![1i32, 2, 0, 0]).unwrap()).unwrap();
        assert_eq!(gn.as_slice::<f32>().unwrap(), &[6., 1.]);
        let u = unpack(&x, 0).unwrap();
        assert_eq!(u[1].as_slice::<f32>().unwrap(), &[4., 5., 6.]);
        let pk = pack(&[&u[1], &u[0]], 1).unwrap();
        assert_eq!(pk.shape(), &[3, 2]);
        assert_eq!(reshape(&x, &[-1]).unwrap().shape(), &[6]);
        assert!(reshape(&x, &[4, -1]).is_err());
        let (v, i) = top_k(&t(&[4], vec![1., 3., 3., 2.]), 2).unwrap();
        assert_eq!(v.as_slice::<f32>().unwrap(), &[3., 3.]);
        assert_eq!(i.as_slice::<i32>().unwrap(), &[1, 2]);
        assert_eq!(argmax(&x, 1).unwrap().as_slice::<i32>().unwrap(), &[2, 2]);
        let m = reduce(&x, &[1], false, Reduce::Mean).unwrap();
        assert_eq!(m.as_slice::<f32>().unwrap(), &[2., 5.]);
        let sd = sparse_to_dense(
            &Tensor::from_vec(&[2], vec![0i32, 3]).unwrap(),
            &[4],
            &Tensor::scalar(1i32),
            &Tensor::scalar(0i32),
        )
        .unwrap();
        assert_eq!(sd.as_slice::<i32>().unwrap(), &[1, 0, 0, 1]);
        assert_eq!(
            cast(&t(&[2], vec![-1.7, 2.9]), DType::I32)
                .unwrap()
                .as_slice::<i32>()
                .unwrap(),
            &[-1, 2]
        );
    }

    #[test]
    fn matmul_transposes() {
        let a = t(&[2, 3], vec![1., 2., 3., 4., 5., 6.]);
        let b = t(&[2, 3], vec![1., 0., 1., 0., 1., 0.]);
        let y = matmul(&a, &b, false, true, Some(&[1.0, -100.0]), Act::Relu, None).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[5., 0., 11., 0.]);
        assert!(matmul(&a, &b, false, false, None, Act::None, None).is_err());
    }

    #[test]
    fn crop_and_resize_matches_tf_semantics() {
        // 3 x 4 image, one channel, value = 10 y + x.
        let img = Tensor::from_vec(
            &[3, 4, 1],
            (0..12u8).map(|i| (i / 4) * 10 + i % 4).collect(),
        )
        .unwrap();
        // The whole image onto 3 x 4: the identity.
        let y = crop_and_resize_bilinear(&img, [0.0, 0.0, 1.0, 1.0], 3, 4, -1.0).unwrap();
        assert_eq!(y.shape(), &[1, 3, 4, 1]);
        let want: Vec<f32> = (0..12).map(|i| ((i / 4) * 10 + i % 4) as f32).collect();
        assert_eq!(y.as_slice::<f32>().unwrap(), &want[..]);
        // Half-way samples interpolate; a box reaching out of the image extrapolates.
        let y = crop_and_resize_bilinear(&img, [0.0, 0.0, 0.5, 1.0 / 6.0], 2, 2, -1.0).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[0.0, 0.5, 10.0, 10.5]);
        let y = crop_and_resize_bilinear(&img, [-0.5, 0.0, 0.5, 1.0], 3, 2, -1.0).unwrap();
        assert_eq!(
            y.as_slice::<f32>().unwrap(),
            &[-1.0, -1.0, 0.0, 3.0, 10.0, 13.0]
        );
        // One output pixel: the box centre.
        let y = crop_and_resize_bilinear(&img, [0.0, 0.0, 1.0, 1.0], 1, 1, -1.0).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[11.5]);
        // A 1 x 1 image, a box far outside, an infinite box and a non-finite one.
        let one = Tensor::from_vec(&[1, 1, 1], vec![7u8]).unwrap();
        let y = crop_and_resize_bilinear(&one, [0.0, 0.0, 1.0, 1.0], 2, 2, 0.0).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[7.0; 4]);
        let y = crop_and_resize_bilinear(&img, [5.0, 5.0, 6.0, 6.0], 2, 2, 0.0).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[0.0; 4]);
        let y = crop_and_resize_bilinear(&img, [-3e38, 0.0, 3e38, 1.0], 3, 1, 0.0).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap()[0], 0.0);
        assert!(crop_and_resize_bilinear(&img, [f32::NAN, 0.0, 1.0, 1.0], 2, 2, 0.0).is_err());
        assert!(crop_and_resize_bilinear(
            &Tensor::zeros(DType::U8, &[0, 4, 3]).unwrap(),
            [0.0; 4],
            2,
            2,
            0.0
        )
        .is_err());
    }
}
