//! 2-D convolution, transposed convolution and batch-norm folding.
//!
//! Public layout is PyTorch's: input `[N, C_in, H, W]`, weight `[C_out, C_in/groups, kH, kW]`
//! (transposed: `[C_in, C_out/groups, kH, kW]`), output `[N, C_out, H_out, W_out]`.
//!
//! How [`Conv2d::forward`] computes (the weight is kept in torch's layout, which already is
//! the row-major `[C_out, C_in/g·kH·kW]` left matrix of the GEMM, so "packing" at load is one
//! copy, plus the batch-norm fold and the fused activation chosen at load):
//! - **1x1, stride 1, no padding**: `out[n, g] = W_g · x[n, g]` with `x[n, g]` read in place as
//!   the `[C_in/g, H·W]` right matrix. No im2col.
//! - **depthwise-like** (`groups > 1` and one input channel per group): a direct per-plane
//!   kernel (`kH·kW` shifted multiply-adds over contiguous rows), parallel over planes.
//! - **everything else**: im2col into a cache-sized buffer per tile of output rows, then
//!   `W_g · col`. The GEMM writes straight into the NCHW output (row stride `H_out·W_out`).
//!
//! Parallelism: when an image has enough output columns for at least one tile of 256 per
//! rayon thread, (image, group, tile) work items run in parallel, each with a single-threaded
//! GEMM and its own (thread-local, reused) im2col buffer. When the output is too small to
//! split (late ResNet stages: 14x14, 7x7), items run one after another: im2col is parallel
//! over input channels and the GEMM is split into one block of output channels per thread.
//! Bias and the fused activation are applied to each block right after its GEMM, while it is
//! in cache. The environment variable `KERNELS_CONV_PLAN` (`tiles`, `gemm`: the `gemm`
//! crate's own threading, `split`) overrides this choice, for benchmarking only.

use ndarray::{Array1, Array4, ArrayView1, ArrayView4};
use rayon::prelude::*;

use super::activation::Activation;
use super::gemm::{sgemm_raw, Backend, Threading, PARALLEL_MIN_MACS};
use super::{checked_numel, fix_rank, invalid, shape_err, Result};
use crate::tensor::Tensor;

/// Stride, padding, dilation and groups of a convolution (torch's `Conv2d` arguments; the
/// padding is symmetric, `(pad_h, pad_w)`, as torch's integer `padding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

impl Conv2dParams {
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
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
}

/// Parameters of a transposed convolution (torch's `ConvTranspose2d` arguments).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTranspose2dParams {
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub output_padding: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
}

impl Default for ConvTranspose2dParams {
    fn default() -> Self {
        ConvTranspose2dParams {
            stride: (1, 1),
            padding: (0, 0),
            output_padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

impl ConvTranspose2dParams {
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = (s, s);
        self
    }
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = (p, p);
        self
    }
    pub fn output_padding(mut self, p: usize) -> Self {
        self.output_padding = (p, p);
        self
    }
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = (d, d);
        self
    }
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
}

/// Output size of a convolution along one axis, or `None` when the input is too small.
fn conv_out(input: usize, k: usize, s: usize, p: usize, d: usize) -> Option<usize> {
    let eff = d.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
    let padded = input.checked_add(p.checked_mul(2)?)?;
    if padded < eff {
        return None;
    }
    Some((padded - eff) / s + 1)
}

/// A raw output pointer shared by parallel work items that write disjoint elements.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: used only to hand disjoint regions of one output buffer to rayon tasks.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// # Safety
    /// `off..off + len` must lie in the buffer and no other live slice may overlap it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, off: usize, len: usize) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(off), len)
    }
}

/// Columns per tile of the im2col buffer are limited so that the buffer stays about this
/// size: it is written by im2col and read right away by the GEMM's packing, so it should stay
/// in the caches. 4 MB rather than a core's L2 (2 MB on a Sapphire Rapids, 1 MB on a Zen 4):
/// on FlowNet2's large stride-2 layers (kdim 588-1600) wider tiles made the whole network
/// 11% faster at one thread (1 MB: 4.23 s, 2 MB: 3.97 s, 4 MB: 3.78 s a 512x1024 frame),
/// and ResNet-50 kept its time (224 and 800, one and two threads, within 4%).
const COL_BUDGET_BYTES: usize = 1 << 22;
/// Parallel tiles are at least this many output positions wide.
const MIN_TILE_COLS: usize = 256;
/// The direct path serves convolutions with at most this many output channels (see
/// [`Conv2d::direct_pays`]).
const DIRECT_MAX_COUT: usize = 4;
/// Output rows per work item of the direct path: a block of a 256-wide map stays in L1.
const DIRECT_BLOCK_ROWS: usize = 8;

/// A 2-D convolution with its weights prepared once at load (see the module documentation).
#[derive(Clone, Debug)]
pub struct Conv2d {
    out_channels: usize,
    in_channels: usize,
    kernel: (usize, usize),
    params: Conv2dParams,
    /// `[C_out, C_in/g · kH · kW]`, row-major (torch's layout).
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    activation: Activation,
    /// The Winograd-transformed weight, made on first use for eligible 3x3 convolutions
    /// (`None` when the convolution does not take that path).
    winograd: std::sync::OnceLock<Option<super::winograd::WinogradWeights>>,
}

impl Conv2d {
    /// A convolution with torch-layout `weight` `[C_out, C_in/groups, kH, kW]` and optional
    /// `bias` `[C_out]`.
    pub fn new(
        weight: ArrayView4<'_, f32>,
        bias: Option<ArrayView1<'_, f32>>,
        params: Conv2dParams,
    ) -> Result<Self> {
        const OP: &str = "conv2d";
        let (cout, cin_g, kh, kw) = weight.dim();
        let (sh, sw) = params.stride;
        let (dh, dw) = params.dilation;
        let g = params.groups;
        if sh == 0 || sw == 0 || dh == 0 || dw == 0 || g == 0 {
            return invalid(
                OP,
                format!("stride, dilation and groups must be positive: {params:?}"),
            );
        }
        if kh == 0 || kw == 0 || cin_g == 0 || cout == 0 {
            return shape_err(OP, format!("empty weight of shape {:?}", weight.shape()));
        }
        if cout % g != 0 {
            return shape_err(
                OP,
                format!("{cout} output channels are not divisible by {g} groups"),
            );
        }
        let in_channels = cin_g
            .checked_mul(g)
            .ok_or_else(|| super::LayerError::Shape {
                op: OP,
                msg: "channel count overflows".into(),
            })?;
        checked_numel(OP, &[cout, cin_g, kh, kw])?;
        let bias = match bias {
            Some(b) if b.len() != cout => {
                return shape_err(
                    OP,
                    format!("bias has {} values for {cout} output channels", b.len()),
                )
            }
            Some(b) => Some(b.to_vec()),
            None => None,
        };
        Ok(Conv2d {
            out_channels: cout,
            in_channels,
            kernel: (kh, kw),
            params,
            weight: weight.as_standard_layout().iter().copied().collect(),
            bias,
            activation: Activation::Identity,
            winograd: std::sync::OnceLock::new(),
        })
    }

    /// [`Conv2d::new`] from tensors (`f32`, rank 4 and rank 1).
    pub fn from_tensors(
        weight: &Tensor,
        bias: Option<&Tensor>,
        params: Conv2dParams,
    ) -> Result<Self> {
        let w = fix_rank::<f32, ndarray::Ix4>("conv2d", weight.view::<f32>()?)?;
        let b = match bias {
            Some(b) => Some(fix_rank::<f32, ndarray::Ix1>("conv2d", b.view::<f32>()?)?),
            None => None,
        };
        Self::new(w, b, params)
    }

    /// Folds an inference batch norm that follows this convolution into its weight and bias
    /// (see [`fold_batch_norm`]).
    pub fn with_batch_norm(
        mut self,
        gamma: ArrayView1<'_, f32>,
        beta: ArrayView1<'_, f32>,
        mean: ArrayView1<'_, f32>,
        var: ArrayView1<'_, f32>,
        eps: f32,
    ) -> Result<Self> {
        let (w, b) = fold_batch_norm(
            self.weight(),
            self.bias.as_deref().map(ArrayView1::from),
            gamma,
            beta,
            mean,
            var,
            eps,
        )?;
        self.weight = w.iter().copied().collect();
        self.bias = Some(b.to_vec());
        self.winograd = std::sync::OnceLock::new();
        Ok(self)
    }

    /// Fuses an element-wise activation into the output (applied after the bias).
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    pub fn params(&self) -> Conv2dParams {
        self.params
    }
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }
    pub fn kernel_size(&self) -> (usize, usize) {
        self.kernel
    }
    pub fn activation(&self) -> Activation {
        self.activation
    }
    /// The weight, `[C_out, C_in/groups, kH, kW]` (after any batch-norm fold).
    pub fn weight(&self) -> ArrayView4<'_, f32> {
        let (kh, kw) = self.kernel;
        let cin_g = self.in_channels / self.params.groups;
        ArrayView4::from_shape((self.out_channels, cin_g, kh, kw), &self.weight)
            .expect("weight length checked at construction")
    }
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// `(H_out, W_out)` for an `H x W` input.
    pub fn output_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let p = &self.params;
        let oh = conv_out(h, self.kernel.0, p.stride.0, p.padding.0, p.dilation.0);
        let ow = conv_out(w, self.kernel.1, p.stride.1, p.padding.1, p.dilation.1);
        match (oh, ow) {
            (Some(oh), Some(ow)) => Ok((oh, ow)),
            _ => shape_err(
                "conv2d",
                format!(
                    "input {h}x{w} is smaller than the dilated kernel {:?} after padding {:?}",
                    self.kernel, p.padding
                ),
            ),
        }
    }

    /// Multiply-adds of one forward pass on an `N x C_in x H x W` input.
    pub fn macs(&self, n: usize, h: usize, w: usize) -> Result<usize> {
        let (oh, ow) = self.output_size(h, w)?;
        checked_numel(
            "conv2d",
            &[
                n,
                self.out_channels,
                oh,
                ow,
                self.weight.len() / self.out_channels,
            ],
        )
    }

    /// Runs the convolution on an `[N, C_in, H, W]` tensor.
    pub fn forward_tensor(&self, x: &Tensor) -> Result<Tensor> {
        let v = fix_rank::<f32, ndarray::Ix4>("conv2d", x.view::<f32>()?)?;
        let out = self.forward(v)?;
        super::array_to_tensor(out.into_dyn())
    }

    /// Runs the convolution on an `[N, C_in, H, W]` array.
    pub fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>> {
        self.forward_with(x, None)
    }

    /// `activation(conv(x) + bias + residual)`: a residual block's last convolution with its
    /// shortcut added before the activation, in the same pass over the output as the bias
    /// (ResNet's `out += identity; relu(out)` without a separate pass over memory).
    /// `residual` has the output's shape.
    pub fn forward_residual(
        &self,
        x: ArrayView4<'_, f32>,
        residual: ArrayView4<'_, f32>,
    ) -> Result<Array4<f32>> {
        self.forward_with(x, Some(residual))
    }

    fn forward_with(
        &self,
        x: ArrayView4<'_, f32>,
        residual: Option<ArrayView4<'_, f32>>,
    ) -> Result<Array4<f32>> {
        crate::profile::timed(
            || {
                let (n, _, h, w) = x.dim();
                let p = &self.params;
                let path = if p.groups > 1 && self.in_channels == p.groups {
                    "depthwise"
                } else if self.direct_pays() {
                    "direct"
                } else if self.winograd_weights().is_some()
                    && self
                        .output_size(h, w)
                        .is_ok_and(|(oh, ow)| super::winograd::pays(n, oh, ow))
                {
                    "winograd"
                } else {
                    "gemm"
                };
                format!(
                    "conv {}x{}/{} {}->{} g{} n{n} @{h}x{w} {path}",
                    self.kernel.0,
                    self.kernel.1,
                    p.stride.0,
                    self.in_channels,
                    self.out_channels,
                    p.groups
                )
            },
            || self.forward_untimed(x, residual),
        )
    }

    fn forward_untimed(
        &self,
        x: ArrayView4<'_, f32>,
        residual: Option<ArrayView4<'_, f32>>,
    ) -> Result<Array4<f32>> {
        const OP: &str = "conv2d";
        let (n, c, h, w) = x.dim();
        if c != self.in_channels {
            return shape_err(
                OP,
                format!(
                    "input has {c} channels, the convolution expects {}",
                    self.in_channels
                ),
            );
        }
        let (oh, ow) = self.output_size(h, w)?;
        let total = checked_numel(OP, &[n, self.out_channels, oh, ow])?;
        if let Some(r) = &residual {
            if r.dim() != (n, self.out_channels, oh, ow) {
                return shape_err(
                    OP,
                    format!(
                        "residual has shape {:?}, the output {:?}",
                        r.shape(),
                        [n, self.out_channels, oh, ow]
                    ),
                );
            }
        }
        let residual = residual.as_ref().map(|r| r.as_standard_layout());
        let residual = residual.as_ref().and_then(|r| r.as_slice());
        // The GEMM path adds the residual in its epilogue; the others run without the
        // activation and leave the residual and the activation to a last pass.
        let mut fused = residual.is_none();
        let act = if residual.is_some() {
            Activation::Identity
        } else {
            self.activation
        };
        let mut out = super::zeroed(total);
        if total > 0 && h * w > 0 {
            let x = x.as_standard_layout();
            let xs = x.as_slice().ok_or(super::LayerError::Invalid {
                op: OP,
                msg: "input not contiguous".into(),
            })?;
            let cin_g = self.in_channels / self.params.groups;
            if self.params.groups > 1 && cin_g == 1 {
                self.depthwise(xs, h, w, oh, ow, act, &mut out);
            } else if self.direct_pays() {
                self.direct(xs, n, h, w, oh, ow, act, &mut out);
            } else if let Some(wt) = self
                .winograd_weights()
                .filter(|_| super::winograd::pays(n, oh, ow))
            {
                super::winograd::forward(
                    wt,
                    &self.weight,
                    self.bias.as_deref(),
                    act,
                    xs,
                    super::winograd::Shape {
                        n,
                        h,
                        w,
                        pad: self.params.padding,
                        oh,
                        ow,
                    },
                    &mut out,
                );
            } else {
                self.gemm_path(xs, n, h, w, oh, ow, residual, &mut out)?;
                fused = true;
            }
        } else if total > 0 {
            // Empty spatial input with padding: the output is bias + activation only.
            self.epilogue_all(&mut out, oh * ow, act);
        }
        if let (false, Some(r)) = (fused, residual) {
            let activation = self.activation;
            out.par_chunks_mut(1 << 16)
                .zip(r.par_chunks(1 << 16))
                .for_each(|(o, r)| {
                    o.iter_mut().zip(r).for_each(|(v, &r)| *v += r);
                    activation.apply_slice(o);
                });
        }
        Array4::from_shape_vec((n, self.out_channels, oh, ow), out)
            .or_else(|e| invalid(OP, e.to_string()))
    }

    /// The Winograd weights when this convolution takes that path (3x3, stride 1, see
    /// [`super::winograd`]).
    fn winograd_weights(&self) -> Option<&super::winograd::WinogradWeights> {
        self.winograd
            .get_or_init(|| {
                let p = &self.params;
                super::winograd::eligible(
                    self.kernel,
                    p.stride,
                    p.dilation,
                    p.groups,
                    self.in_channels,
                    self.out_channels,
                )
                .then(|| super::winograd::WinogradWeights::new(self.out_channels, self.in_channels))
            })
            .as_ref()
    }

    fn epilogue_all(&self, out: &mut [f32], plane: usize, act: Activation) {
        if plane == 0 {
            return;
        }
        let cout = self.out_channels;
        out.par_chunks_mut(plane).enumerate().for_each(|(i, p)| {
            if let Some(b) = &self.bias {
                let bv = b[i % cout];
                p.iter_mut().for_each(|v| *v += bv);
            }
            act.apply_slice(p);
        });
    }

    #[allow(clippy::too_many_arguments)]
    #[allow(clippy::too_many_arguments)]
    fn depthwise(
        &self,
        xs: &[f32],
        h: usize,
        w: usize,
        oh: usize,
        ow: usize,
        act: Activation,
        out: &mut [f32],
    ) {
        let cout = self.out_channels;
        let g = self.params.groups;
        let cout_g = cout / g;
        let (kh, kw) = self.kernel;
        let p = self.params;
        let plane_out = oh * ow;
        out.par_chunks_mut(plane_out)
            .enumerate()
            .for_each(|(i, op)| {
                let (b, co) = (i / cout, i % cout);
                let ci = co / cout_g;
                let xp = &xs[(b * self.in_channels + ci) * h * w..][..h * w];
                let wk = &self.weight[co * kh * kw..][..kh * kw];
                let bias = self.bias.as_ref().map_or(0.0, |bv| bv[co]);
                op.fill(bias);
                for ky in 0..kh {
                    for kx in 0..kw {
                        let wv = wk[ky * kw + kx];
                        let off = (kx * p.dilation.1) as isize - p.padding.1 as isize;
                        let (lo, hi) = valid_range(off, p.stride.1, w, ow);
                        if lo >= hi {
                            continue;
                        }
                        for oy in 0..oh {
                            let iy = (oy * p.stride.0 + ky * p.dilation.0) as isize
                                - p.padding.0 as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            let src = &xp[iy as usize * w..][..w];
                            let dst = &mut op[oy * ow..][lo..hi];
                            if p.stride.1 == 1 {
                                let s = &src[(lo as isize + off) as usize..][..hi - lo];
                                for (d, s) in dst.iter_mut().zip(s) {
                                    *d += wv * s;
                                }
                            } else {
                                // `lo·s + off >= 0` by construction of `lo`.
                                let start = ((lo * p.stride.1) as isize + off) as usize;
                                let s = src[start..].iter().step_by(p.stride.1);
                                for (d, s) in dst.iter_mut().zip(s) {
                                    *d += wv * s;
                                }
                            }
                        }
                    }
                }
                act.apply_slice(op);
            });
    }

    /// Whether the direct path beats im2col + GEMM: a few output channels of a spatial
    /// kernel (a flow predictor's 3x3 to 2 channels). There the GEMM does 2-4 products per
    /// value that im2col copied, so the copy is the cost; the direct path reads each input
    /// row in place instead.
    fn direct_pays(&self) -> bool {
        self.params.groups == 1
            && self.out_channels <= DIRECT_MAX_COUT
            && self.kernel.0 * self.kernel.1 > 1
    }

    /// The convolution as shifted rows of the input added into the output rows, for
    /// [`Conv2d::direct_pays`]: work items are blocks of output rows of one image, each
    /// accumulating every output channel in its (L1-sized) block.
    #[allow(clippy::too_many_arguments)]
    fn direct(
        &self,
        xs: &[f32],
        n: usize,
        h: usize,
        w: usize,
        oh: usize,
        ow: usize,
        act: Activation,
        out: &mut [f32],
    ) {
        let (cin, cout) = (self.in_channels, self.out_channels);
        let (kh, kw) = self.kernel;
        let p = self.params;
        let rows = DIRECT_BLOCK_ROWS.min(oh.max(1));
        let blocks = oh.div_ceil(rows);
        let outp = OutPtr(out.as_mut_ptr());
        (0..n * blocks).into_par_iter().for_each(|item| {
            let (b, block) = (item / blocks, item % blocks);
            let (r0, r1) = (block * rows, ((block + 1) * rows).min(oh));
            for co in 0..cout {
                // SAFETY: the items write disjoint row blocks `r0..r1` of each output plane
                // (`b`, `co`) inside `out`, which outlives the parallel loop.
                let dst = unsafe { outp.slice(((b * cout + co) * oh + r0) * ow, (r1 - r0) * ow) };
                dst.fill(self.bias.as_ref().map_or(0.0, |bv| bv[co]));
                let wk = &self.weight[co * cin * kh * kw..][..cin * kh * kw];
                for ci in 0..cin {
                    let xp = &xs[(b * cin + ci) * h * w..][..h * w];
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let wv = wk[(ci * kh + ky) * kw + kx];
                            let off = (kx * p.dilation.1) as isize - p.padding.1 as isize;
                            let (lo, hi) = valid_range(off, p.stride.1, w, ow);
                            if lo >= hi {
                                continue;
                            }
                            for oy in r0..r1 {
                                let iy = (oy * p.stride.0 + ky * p.dilation.0) as isize
                                    - p.padding.0 as isize;
                                if iy < 0 || iy >= h as isize {
                                    continue;
                                }
                                let src = &xp[iy as usize * w..][..w];
                                let d = &mut dst[(oy - r0) * ow..][lo..hi];
                                if p.stride.1 == 1 {
                                    let s = &src[(lo as isize + off) as usize..][..hi - lo];
                                    add_scaled(d, s, wv);
                                } else {
                                    let start = ((lo * p.stride.1) as isize + off) as usize;
                                    let s = src[start..].iter().step_by(p.stride.1);
                                    for (d, s) in d.iter_mut().zip(s) {
                                        *d += wv * s;
                                    }
                                }
                            }
                        }
                    }
                }
                act.apply_slice(dst);
            }
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn gemm_path(
        &self,
        xs: &[f32],
        n: usize,
        h: usize,
        w: usize,
        oh: usize,
        ow: usize,
        residual: Option<&[f32]>,
        out: &mut [f32],
    ) -> Result<()> {
        let g = self.params.groups;
        let cin_g = self.in_channels / g;
        let cout_g = self.out_channels / g;
        let (kh, kw) = self.kernel;
        let kdim = cin_g * kh * kw;
        let ohw = oh * ow;
        let p = self.params;
        let pointwise = kh == 1 && kw == 1 && p.stride == (1, 1) && p.padding == (0, 0);
        let threads = rayon::current_num_threads().max(1);

        // Tiles: column ranges of the flattened output plane (whole output rows for im2col),
        // each small enough for its im2col buffer to stay within the budget.
        let unit = if pointwise { 1 } else { ow };
        let units = if pointwise { ohw } else { oh };
        let max_cols = if pointwise {
            ohw
        } else {
            (COL_BUDGET_BYTES / (4 * kdim))
                .max(MIN_TILE_COLS)
                .max(ow)
                .min(ohw)
        };
        let mut tiles_per_image = ohw.div_ceil(max_cols).max(1);
        let plan = conv_plan();
        let splittable = (ohw / MIN_TILE_COLS).max(1).min(units);
        let parallel_items = threads > 1
            && match plan {
                Plan::Tiles => true,
                Plan::Auto => n * g * splittable >= threads,
                _ => false,
            };
        if parallel_items && n * g < threads {
            tiles_per_image = tiles_per_image.max(threads.div_ceil(n * g));
        }
        let tiles_per_image = tiles_per_image.min(units);
        let units_per_tile = units.div_ceil(tiles_per_image);
        let mut items = Vec::with_capacity(n * g * tiles_per_image);
        for b in 0..n {
            for gi in 0..g {
                let mut u0 = 0;
                while u0 < units {
                    let u1 = (u0 + units_per_tile).min(units);
                    items.push((b, gi, u0 * unit, u1 * unit));
                    u0 = u1;
                }
            }
        }
        let outp = OutPtr(out.as_mut_ptr());
        // One work item: output columns `c0..c1` of group `gi` of image `b`. With `par`, the
        // item itself uses every thread (im2col over channels, GEMM over output-channel
        // blocks); otherwise it runs on the calling thread only.
        let run = |&(b, gi, c0, c1): &(usize, usize, usize, usize),
                   col: &mut Vec<f32>,
                   par: bool| {
            let ncols = c1 - c0;
            let x_base = &xs[(b * self.in_channels + gi * cin_g) * h * w..][..cin_g * h * w];
            let (bptr, brs) = if pointwise {
                (x_base[c0..].as_ptr(), h * w)
            } else {
                if col.len() < kdim * ncols {
                    col.resize(kdim * ncols, 0.0);
                }
                let (r0, r1) = (c0 / ow, c1 / ow);
                let per_channel = kh * kw * ncols;
                let fill = |(ci, chunk): (usize, &mut [f32])| {
                    im2col_channel(
                        &x_base[ci * h * w..][..h * w],
                        h,
                        w,
                        kh,
                        kw,
                        &p,
                        ow,
                        r0,
                        r1,
                        chunk,
                    )
                };
                let dst = &mut col[..kdim * ncols];
                if par {
                    dst.par_chunks_mut(per_channel).enumerate().for_each(fill);
                } else {
                    dst.chunks_mut(per_channel).enumerate().for_each(fill);
                }
                (col.as_ptr(), ncols)
            };
            // As an address, so that the closure below can be shared by rayon tasks.
            let baddr = bptr as usize;
            let out_off = (b * self.out_channels + gi * cout_g) * ohw;
            // Output channels `m0..m1` of this item: GEMM, then bias and activation.
            let rows = |m0: usize, m1: usize, threading: Threading| {
                // SAFETY: W_g rows `m0..m1` are `(m1-m0) x kdim` row-major inside
                // `self.weight`; the right matrix is `kdim x ncols` with row stride `brs`
                // inside `x_base` (pointwise: columns `c0..c1` of the `[cin_g, h·w]` block) or
                // inside `col`; the output block is channels `gi·cout_g + m0..m1` of image `b`,
                // columns `c0..c1`, row stride `ohw`, inside `out`. Distinct work items and
                // distinct `m0..m1` ranges cover disjoint output elements, and nothing reads
                // `out` meanwhile.
                unsafe {
                    sgemm_raw(
                        m1 - m0,
                        ncols,
                        kdim,
                        self.weight[(gi * cout_g + m0) * kdim..].as_ptr(),
                        kdim,
                        1,
                        baddr as *const f32,
                        brs,
                        1,
                        outp.0.add(out_off + m0 * ohw + c0),
                        ohw,
                        1,
                        false,
                        Backend::Gemm,
                        threading,
                    );
                }
                if self.bias.is_some()
                    || self.activation != Activation::Identity
                    || residual.is_some()
                {
                    for co in m0..m1 {
                        // SAFETY: row `co` of this item's output block, owned by this call.
                        let row = unsafe { outp.slice(out_off + co * ohw + c0, ncols) };
                        let bv = self.bias.as_ref().map_or(0.0, |b| b[gi * cout_g + co]);
                        match residual {
                            Some(r) => {
                                let r = &r[out_off + co * ohw + c0..][..ncols];
                                row.iter_mut().zip(r).for_each(|(v, &r)| *v = (*v + bv) + r);
                            }
                            None if self.bias.is_some() => row.iter_mut().for_each(|v| *v += bv),
                            None => {}
                        }
                        self.activation.apply_slice(row);
                    }
                }
            };
            let macs = cout_g * kdim * ncols;
            if !par || macs < PARALLEL_MIN_MACS {
                rows(0, cout_g, Threading::Single);
            } else if plan == Plan::GemmParallel {
                rows(0, cout_g, Threading::Threads(threads));
            } else {
                // Split the output channels into one block per thread (multiples of 16).
                let block = cout_g.div_ceil(threads).div_ceil(16) * 16;
                let blocks = cout_g.div_ceil(block);
                (0..blocks).into_par_iter().for_each(|i| {
                    rows(i * block, ((i + 1) * block).min(cout_g), Threading::Single)
                });
            }
        };
        if parallel_items {
            items
                .par_iter()
                .for_each(|item| super::with_scratch(&SCRATCH, |col| run(item, col, false)));
        } else {
            super::with_scratch(&SCRATCH, |col| {
                for item in &items {
                    run(item, col, true);
                }
            });
        }
        Ok(())
    }
}

/// How [`Conv2d`] distributes work over threads (a benchmarking knob; `Auto` in normal use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Parallel tiles when there are enough of them, else output-channel blocks.
    Auto,
    /// Always parallel tiles (one single-threaded GEMM per tile).
    Tiles,
    /// Sequential tiles, each GEMM threaded by the `gemm` crate.
    GemmParallel,
    /// Sequential tiles, each GEMM split into output-channel blocks on rayon.
    SplitChannels,
}

fn conv_plan() -> Plan {
    static PLAN: std::sync::OnceLock<Plan> = std::sync::OnceLock::new();
    *PLAN.get_or_init(|| match std::env::var("KERNELS_CONV_PLAN").as_deref() {
        Ok("tiles") => Plan::Tiles,
        Ok("gemm") => Plan::GemmParallel,
        Ok("split") => Plan::SplitChannels,
        _ => Plan::Auto,
    })
}

thread_local! {
    /// Per-thread im2col buffer, reused across calls (grows to at most about
    /// `COL_BUDGET_BYTES`, or one output row of columns when a row alone is larger).
    static SCRATCH: super::Scratch = const { std::cell::RefCell::new(Vec::new()) };
}

/// Output positions `[lo, hi)` along one axis whose input index `o·s + off` is in `[0, len)`.
fn valid_range(off: isize, s: usize, len: usize, out: usize) -> (usize, usize) {
    let s = s as isize;
    let lo = if off >= 0 { 0 } else { (-off + s - 1) / s };
    let rem = len as isize - off;
    let hi = if rem <= 0 { 0 } else { (rem + s - 1) / s };
    let lo = (lo as usize).min(out);
    let hi = (hi as usize).min(out);
    (lo, hi.max(lo))
}

/// `dst[i] += a · src[i]` (a multiply and an add, as the plain loop: the same results on
/// every CPU), compiled for AVX-512 and AVX2 too and picked at run time.
#[inline(always)]
fn add_scaled_inner(dst: &mut [f32], src: &[f32], a: f32) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += a * s;
    }
}

crate::ops::simd::multiversion!(fn add_scaled(dst: &mut [f32], src: &[f32], a: f32) => add_scaled_inner);

/// Writes the `kh·kw` im2col rows of one input channel for output rows `r0..r1` into `dst`
/// (`kh·kw` rows of `(r1 - r0)·ow` values).
#[allow(clippy::too_many_arguments)]
fn im2col_channel(
    plane: &[f32],
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    p: &Conv2dParams,
    ow: usize,
    r0: usize,
    r1: usize,
    dst: &mut [f32],
) {
    let ncols = (r1 - r0) * ow;
    for ky in 0..kh {
        for kx in 0..kw {
            let row = &mut dst[(ky * kw + kx) * ncols..][..ncols];
            let off = (kx * p.dilation.1) as isize - p.padding.1 as isize;
            let (lo, hi) = valid_range(off, p.stride.1, w, ow);
            for oy in r0..r1 {
                let d = &mut row[(oy - r0) * ow..][..ow];
                let iy = (oy * p.stride.0 + ky * p.dilation.0) as isize - p.padding.0 as isize;
                if iy < 0 || iy >= h as isize || lo >= hi {
                    d.fill(0.0);
                    continue;
                }
                let src = &plane[iy as usize * w..][..w];
                d[..lo].fill(0.0);
                d[hi..].fill(0.0);
                if p.stride.1 == 1 {
                    d[lo..hi].copy_from_slice(&src[(lo as isize + off) as usize..][..hi - lo]);
                } else {
                    // `lo·s + off >= 0` by construction of `lo`.
                    let start = ((lo * p.stride.1) as isize + off) as usize;
                    let s = src[start..].iter().step_by(p.stride.1);
                    for (v, x) in d[lo..hi].iter_mut().zip(s) {
                        *v = *x;
                    }
                }
            }
        }
    }
}

/// `torch.nn.functional.conv2d(x, weight, bias, stride, padding, dilation, groups)`.
/// Prefer a [`Conv2d`] kept across calls: it prepares the weight once.
pub fn conv2d(
    x: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    params: Conv2dParams,
) -> Result<Array4<f32>> {
    Conv2d::new(weight, bias, params)?.forward(x)
}

/// Folds an inference batch norm (`gamma`, `beta`, running `mean`, `var`, `eps`) into the
/// preceding convolution, as `torch.nn.utils.fusion.fuse_conv_bn_weights`:
/// `s = gamma / sqrt(var + eps)`, `w' = w·s[c_out]`, `b' = (b - mean)·s + beta` (`b = 0`
/// when the convolution has no bias). Returns `(w', b')`. The scale is computed in f64.
pub fn fold_batch_norm(
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    gamma: ArrayView1<'_, f32>,
    beta: ArrayView1<'_, f32>,
    mean: ArrayView1<'_, f32>,
    var: ArrayView1<'_, f32>,
    eps: f32,
) -> Result<(Array4<f32>, Array1<f32>)> {
    let cout = weight.dim().0;
    for (name, len) in [
        ("gamma", gamma.len()),
        ("beta", beta.len()),
        ("mean", mean.len()),
        ("var", var.len()),
        ("bias", bias.map_or(cout, |b| b.len())),
    ] {
        if len != cout {
            return shape_err(
                "fold_batch_norm",
                format!("{name} has {len} values for {cout} output channels"),
            );
        }
    }
    let scale: Vec<f64> = (0..cout)
        .map(|c| gamma[c] as f64 / (var[c] as f64 + eps as f64).sqrt())
        .collect();
    let mut w = weight.to_owned();
    for (c, mut plane) in w.outer_iter_mut().enumerate() {
        plane.mapv_inplace(|v| (v as f64 * scale[c]) as f32);
    }
    let b = Array1::from_shape_fn(cout, |c| {
        let b0 = bias.map_or(0.0, |b| b[c] as f64);
        ((b0 - mean[c] as f64) * scale[c] + beta[c] as f64) as f32
    });
    Ok((w, b))
}

/// A transposed 2-D convolution (torch's `ConvTranspose2d`) computed as a GEMM
/// (`Wᵀ · x`, the weight read in torch's layout through a transposed view) followed by col2im,
/// which scatters the `C_out/g·kH·kW` rows into the output planes in parallel over channels.
#[derive(Clone, Debug)]
pub struct ConvTranspose2d {
    in_channels: usize,
    out_channels: usize,
    kernel: (usize, usize),
    params: ConvTranspose2dParams,
    /// Per group, `W_gᵀ` as a row-major `[C_out/g · kH · kW, C_in/g]` matrix (packed at load
    /// from torch's `[C_in, C_out/g, kH, kW]`).
    weight_t: Vec<f32>,
    bias: Option<Vec<f32>>,
    activation: Activation,
}

impl ConvTranspose2d {
    /// A transposed convolution with torch-layout `weight` `[C_in, C_out/groups, kH, kW]`.
    pub fn new(
        weight: ArrayView4<'_, f32>,
        bias: Option<ArrayView1<'_, f32>>,
        params: ConvTranspose2dParams,
    ) -> Result<Self> {
        const OP: &str = "conv_transpose2d";
        let (cin, cout_g, kh, kw) = weight.dim();
        let p = params;
        if p.stride.0 == 0
            || p.stride.1 == 0
            || p.dilation.0 == 0
            || p.dilation.1 == 0
            || p.groups == 0
        {
            return invalid(
                OP,
                format!("stride, dilation and groups must be positive: {p:?}"),
            );
        }
        if p.output_padding.0 >= p.stride.0.max(p.dilation.0)
            || p.output_padding.1 >= p.stride.1.max(p.dilation.1)
        {
            return invalid(
                OP,
                "output padding must be smaller than either stride or dilation",
            );
        }
        if cin == 0 || cout_g == 0 || kh == 0 || kw == 0 {
            return shape_err(OP, format!("empty weight of shape {:?}", weight.shape()));
        }
        if cin % p.groups != 0 {
            return shape_err(
                OP,
                format!(
                    "{cin} input channels are not divisible by {} groups",
                    p.groups
                ),
            );
        }
        let out_channels = checked_numel(OP, &[cout_g, p.groups])?;
        checked_numel(OP, &[cin, cout_g, kh, kw])?;
        let bias = match bias {
            Some(b) if b.len() != out_channels => {
                return shape_err(
                    OP,
                    format!(
                        "bias has {} values for {out_channels} output channels",
                        b.len()
                    ),
                )
            }
            Some(b) => Some(b.to_vec()),
            None => None,
        };
        Ok(ConvTranspose2d {
            in_channels: cin,
            out_channels,
            kernel: (kh, kw),
            params,
            weight_t: {
                let w = weight.as_standard_layout();
                let (cin_g, rows) = (cin / p.groups, cout_g * kh * kw);
                let flat: Vec<f32> = w.iter().copied().collect();
                let mut t = vec![0f32; flat.len()];
                for gi in 0..p.groups {
                    let src = &flat[gi * cin_g * rows..][..cin_g * rows];
                    let dst = &mut t[gi * cin_g * rows..][..cin_g * rows];
                    for ci in 0..cin_g {
                        for r in 0..rows {
                            dst[r * cin_g + ci] = src[ci * rows + r];
                        }
                    }
                }
                t
            },
            bias,
            activation: Activation::Identity,
        })
    }

    /// Fuses an element-wise activation into the output (applied after the bias).
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    pub fn in_channels(&self) -> usize {
        self.in_channels
    }
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// `(H_out, W_out)`: `(H - 1)·s - 2·p + d·(k - 1) + output_padding + 1`.
    pub fn output_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let p = &self.params;
        let f = |i: usize, k: usize, s: usize, pad: usize, d: usize, op: usize| -> Option<usize> {
            let full = i
                .checked_sub(1)?
                .checked_mul(s)?
                .checked_add(d.checked_mul(k - 1)?)?
                .checked_add(op + 1)?;
            full.checked_sub(2 * pad).filter(|&v| v > 0)
        };
        match (
            f(
                h,
                self.kernel.0,
                p.stride.0,
                p.padding.0,
                p.dilation.0,
                p.output_padding.0,
            ),
            f(
                w,
                self.kernel.1,
                p.stride.1,
                p.padding.1,
                p.dilation.1,
                p.output_padding.1,
            ),
        ) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => shape_err(
                "conv_transpose2d",
                format!(
                    "input {h}x{w} gives an empty output with padding {:?}",
                    p.padding
                ),
            ),
        }
    }

    /// Runs the transposed convolution on an `[N, C_in, H, W]` array.
    ///
    /// Work items are (image, group) pairs: when there are at least as many as rayon
    /// threads they run in parallel, each single-threaded; otherwise they run one after
    /// another with a parallel GEMM and a col2im parallel over output channels.
    pub fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>> {
        crate::profile::timed(
            || {
                let (n, c, h, w) = x.dim();
                format!(
                    "conv_transpose {}x{}/{} {c}->{} n{n} @{h}x{w}",
                    self.kernel.0, self.kernel.1, self.params.stride.0, self.out_channels
                )
            },
            || self.forward_untimed(x),
        )
    }

    fn forward_untimed(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>> {
        const OP: &str = "conv_transpose2d";
        let (n, c, h, w) = x.dim();
        if c != self.in_channels {
            return shape_err(
                OP,
                format!("input has {c} channels, expected {}", self.in_channels),
            );
        }
        let (oh, ow) = self.output_size(h, w)?;
        let total = checked_numel(OP, &[n, self.out_channels, oh, ow])?;
        let mut out = super::zeroed(total);
        let x = x.as_standard_layout();
        let xs = x.as_slice().ok_or(super::LayerError::Invalid {
            op: OP,
            msg: "input not contiguous".into(),
        })?;
        let g = self.params.groups;
        let threads = rayon::current_num_threads().max(1);
        let items: Vec<(usize, usize)> =
            (0..n).flat_map(|b| (0..g).map(move |gi| (b, gi))).collect();
        let outp = OutPtr(out.as_mut_ptr());
        let ohw = oh * ow;
        let cout_g = self.out_channels / g;
        let run = |&(b, gi): &(usize, usize), col: &mut Vec<f32>, par: bool| {
            // SAFETY: the output planes of group `gi` of image `b` belong to this item alone.
            let planes =
                unsafe { outp.slice((b * self.out_channels + gi * cout_g) * ohw, cout_g * ohw) };
            self.run_item(xs, b, gi, h, w, oh, ow, planes, col, par);
        };
        if total > 0 && h * w > 0 {
            if threads > 1 && items.len() >= threads {
                items
                    .par_iter()
                    .for_each(|it| super::with_scratch(&SCRATCH, |col| run(it, col, false)));
            } else {
                super::with_scratch(&SCRATCH, |col| {
                    items.iter().for_each(|it| run(it, col, true))
                });
            }
        }
        if self.bias.is_some() || self.activation != Activation::Identity {
            let cout = self.out_channels;
            out.par_chunks_mut(ohw.max(1))
                .enumerate()
                .for_each(|(i, pl)| {
                    if let Some(bv) = &self.bias {
                        let v = bv[i % cout];
                        pl.iter_mut().for_each(|x| *x += v);
                    }
                    self.activation.apply_slice(pl);
                });
        }
        Array4::from_shape_vec((n, self.out_channels, oh, ow), out)
            .or_else(|e| invalid(OP, e.to_string()))
    }

    /// One (image, group): `col = W_gᵀ · x_g` per tile of input rows, then col2im into
    /// `planes` (the group's `C_out/g` output planes).
    #[allow(clippy::too_many_arguments)]
    fn run_item(
        &self,
        xs: &[f32],
        b: usize,
        gi: usize,
        h: usize,
        w: usize,
        oh: usize,
        ow: usize,
        planes: &mut [f32],
        col: &mut Vec<f32>,
        par: bool,
    ) {
        let g = self.params.groups;
        let cin_g = self.in_channels / g;
        let cout_g = self.out_channels / g;
        let (kh, kw) = self.kernel;
        let rows = cout_g * kh * kw;
        let hw = h * w;
        let ohw = oh * ow;
        let p = self.params;
        let x_base = &xs[(b * self.in_channels + gi * cin_g) * hw..][..cin_g * hw];
        let wt = &self.weight_t[gi * cin_g * rows..][..cin_g * rows];
        // Tile over input rows so that the column buffer stays within the budget.
        let rows_per_tile = (COL_BUDGET_BYTES / (4 * rows * w)).clamp(1, h);
        let mut r0 = 0;
        while r0 < h {
            let r1 = (r0 + rows_per_tile).min(h);
            let ncols = (r1 - r0) * w;
            if col.len() < rows * ncols {
                col.resize(rows * ncols, 0.0);
            }
            let threading = if par && rows * ncols * cin_g >= PARALLEL_MIN_MACS {
                Threading::Auto
            } else {
                Threading::Single
            };
            // SAFETY: W_gᵀ is `rows x cin_g` row-major in `wt`; x columns `r0·w..r1·w` with
            // row stride `hw` lie in `x_base`; `col` holds at least `rows·ncols` elements,
            // written row-major, and aliases nothing.
            unsafe {
                sgemm_raw(
                    rows,
                    ncols,
                    cin_g,
                    wt.as_ptr(),
                    cin_g,
                    1,
                    x_base[r0 * w..].as_ptr(),
                    hw,
                    1,
                    col.as_mut_ptr(),
                    ncols,
                    1,
                    false,
                    Backend::Gemm,
                    threading,
                );
            }
            let colr = &col[..rows * ncols];
            let scatter = |(co, plane): (usize, &mut [f32])| {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let src = &colr[((co * kh + ky) * kw + kx) * ncols..][..ncols];
                        let offx = (kx * p.dilation.1) as isize - p.padding.1 as isize;
                        // Input columns whose output column lands inside the plane.
                        let (lo, hi) = valid_range_t(offx, p.stride.1, w, ow);
                        for iy in r0..r1 {
                            let oy = (iy * p.stride.0 + ky * p.dilation.0) as isize
                                - p.padding.0 as isize;
                            if oy < 0 || oy >= oh as isize {
                                continue;
                            }
                            let drow = &mut plane[oy as usize * ow..][..ow];
                            let srow = &src[(iy - r0) * w..][..w];
                            if p.stride.1 == 1 {
                                let d0 = (lo as isize + offx) as usize;
                                for (d, s) in drow[d0..d0 + (hi - lo)].iter_mut().zip(&srow[lo..hi])
                                {
                                    *d += s;
                                }
                            } else {
                                for (ix, &v) in srow.iter().enumerate().take(hi).skip(lo) {
                                    drow[((ix * p.stride.1) as isize + offx) as usize] += v;
                                }
                            }
                        }
                    }
                }
            };
            if par {
                planes.par_chunks_mut(ohw).enumerate().for_each(scatter);
            } else {
                planes.chunks_mut(ohw).enumerate().for_each(scatter);
            }
            r0 = r1;
        }
    }
}

/// Input positions `[lo, hi)` along one axis whose output index `i·s + off` is in `[0, out)`.
fn valid_range_t(off: isize, s: usize, len: usize, out: usize) -> (usize, usize) {
    let s = s as isize;
    let lo = if off >= 0 { 0 } else { (-off + s - 1) / s };
    let rem = out as isize - off;
    let hi = if rem <= 0 { 0 } else { (rem + s - 1) / s };
    let lo = (lo as usize).min(len);
    let hi = (hi as usize).min(len);
    (lo, hi.max(lo))
}

/// `torch.nn.functional.conv_transpose2d(x, weight, bias, stride, padding, output_padding,
/// groups, dilation)`.
pub fn conv_transpose2d(
    x: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    params: ConvTranspose2dParams,
) -> Result<Array4<f32>> {
    ConvTranspose2d::new(weight, bias, params)?.forward(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array, Array4};

    fn rand_array4(shape: (usize, usize, usize, usize), seed: u64) -> Array4<f32> {
        let mut s = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        Array::from_shape_fn(shape, |_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
    }

    /// `forward_residual` equals `activation(forward without activation + residual)`, bit for
    /// bit, on every path: GEMM (1x1 and im2col), Winograd, depthwise, direct and empty input.
    #[test]
    fn residual_is_added_before_the_activation_on_every_path() {
        let cases: [(usize, usize, usize, usize, Conv2dParams); 8] = [
            (8, 2, 3, 11, Conv2dParams::default().padding(1)),
            (8, 12, 1, 6, Conv2dParams::default()),
            (8, 16, 1, 6, Conv2dParams::default()),
            (8, 16, 3, 7, Conv2dParams::default().stride(2).padding(1)),
            (8, 12, 3, 6, Conv2dParams::default().stride(2).padding(1)),
            (16, 16, 3, 9, Conv2dParams::default().padding(1)),
            (8, 8, 3, 6, Conv2dParams::default().padding(1).groups(8)),
            (8, 12, 1, 0, Conv2dParams::default().padding(1)),
        ];
        for (k, &(cin, cout, ks, hw, p)) in cases.iter().enumerate() {
            let wt = rand_array4((cout, cin / p.groups, ks, ks), 10 + k as u64);
            let bias: Vec<f32> = (0..cout).map(|i| i as f32 * 0.01 - 0.05).collect();
            let x = rand_array4((2, cin, hw, hw), 20 + k as u64);
            let plain = Conv2d::new(wt.view(), Some(ArrayView1::from(&bias)), p).unwrap();
            let base = plain.forward(x.view()).unwrap();
            let r = rand_array4(base.dim(), 30 + k as u64);
            let want = (&base + &r).mapv(|v| Activation::Relu.eval(v));
            let conv = plain.clone().with_activation(Activation::Relu);
            let got = conv.forward_residual(x.view(), r.view()).unwrap();
            assert_eq!(got, want, "case {k}");
            let wrong = Array4::<f32>::zeros((1, 1, 1, 1));
            assert!(conv.forward_residual(x.view(), wrong.view()).is_err());
        }
    }

    /// Direct definition of the convolution, the oracle.
    fn naive(
        x: &Array4<f32>,
        wt: &Array4<f32>,
        bias: Option<&[f32]>,
        p: Conv2dParams,
    ) -> Array4<f32> {
        let (n, _c, h, w) = x.dim();
        let (cout, cin_g, kh, kw) = wt.dim();
        let oh = (h + 2 * p.padding.0 - p.dilation.0 * (kh - 1) - 1) / p.stride.0 + 1;
        let ow = (w + 2 * p.padding.1 - p.dilation.1 * (kw - 1) - 1) / p.stride.1 + 1;
        let cout_g = cout / p.groups;
        Array4::from_shape_fn((n, cout, oh, ow), |(b, co, oy, ox)| {
            let g = co / cout_g;
            let mut s = bias.map_or(0.0, |bv| bv[co] as f64);
            for ci in 0..cin_g {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let iy =
                            (oy * p.stride.0 + ky * p.dilation.0) as isize - p.padding.0 as isize;
                        let ix =
                            (ox * p.stride.1 + kx * p.dilation.1) as isize - p.padding.1 as isize;
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            s += x[[b, g * cin_g + ci, iy as usize, ix as usize]] as f64
                                * wt[[co, ci, ky, kx]] as f64;
                        }
                    }
                }
            }
            s as f32
        })
    }

    fn close(a: &Array4<f32>, b: &Array4<f32>) {
        assert_eq!(a.shape(), b.shape());
        for (x, y) in a.iter().zip(b.iter()) {
            assert!((x - y).abs() <= 1e-4 * y.abs().max(1.0), "{x} vs {y}");
        }
    }

    #[test]
    fn conv_matches_naive_across_configs() {
        type Dims = (usize, usize, usize, usize);
        let cases: Vec<(Dims, Dims, Conv2dParams)> = vec![
            (
                (1, 3, 9, 11),
                (4, 3, 3, 3),
                Conv2dParams::default().padding(1),
            ),
            (
                (2, 4, 10, 9),
                (6, 4, 3, 3),
                Conv2dParams::default().stride(2).padding(1),
            ),
            (
                (1, 4, 12, 12),
                (4, 4, 3, 3),
                Conv2dParams::default().dilation(2).padding(2),
            ),
            (
                (1, 4, 8, 8),
                (6, 2, 3, 3),
                Conv2dParams::default().groups(2).padding(1),
            ),
            (
                (2, 6, 9, 7),
                (6, 1, 3, 3),
                Conv2dParams::default().groups(6).padding(1),
            ),
            (
                (1, 6, 9, 7),
                (12, 1, 5, 5),
                Conv2dParams::default().groups(6).padding(2).stride(2),
            ),
            ((1, 8, 7, 5), (5, 8, 1, 1), Conv2dParams::default()),
            (
                (1, 8, 7, 5),
                (5, 8, 1, 1),
                Conv2dParams::default().stride(2),
            ),
            (
                (1, 3, 30, 30),
                (8, 3, 7, 7),
                Conv2dParams::default().stride(2).padding(3),
            ),
            (
                (1, 16, 40, 40),
                (32, 16, 3, 3),
                Conv2dParams::default().padding(1),
            ),
            ((1, 16, 40, 40), (32, 16, 1, 1), Conv2dParams::default()),
            // The direct path (few output channels): several row blocks, two images,
            // stride and dilation.
            (
                (2, 5, 19, 23),
                (2, 5, 3, 3),
                Conv2dParams::default().padding(1),
            ),
            (
                (2, 5, 21, 17),
                (3, 5, 5, 3),
                Conv2dParams::default().stride(2).padding(2).dilation(2),
            ),
        ];
        for (i, (xs, ws, p)) in cases.into_iter().enumerate() {
            let x = rand_array4(xs, i as u64);
            let wt = rand_array4(ws, 100 + i as u64);
            let bias: Vec<f32> = (0..ws.0).map(|c| c as f32 * 0.1 - 0.2).collect();
            let got = conv2d(x.view(), wt.view(), Some(ArrayView1::from(&bias)), p).unwrap();
            close(&got, &naive(&x, &wt, Some(&bias), p));
        }
    }

    #[test]
    fn fused_bn_and_relu() {
        let x = rand_array4((1, 3, 6, 6), 1);
        let wt = rand_array4((4, 3, 3, 3), 2);
        let gamma = Array1::from(vec![1.0, 0.5, 2.0, -1.0]);
        let beta = Array1::from(vec![0.1, 0.2, 0.3, 0.4]);
        let mean = Array1::from(vec![0.0, 0.1, -0.1, 0.2]);
        let var = Array1::from(vec![1.0, 0.5, 2.0, 0.25]);
        let conv = Conv2d::new(wt.view(), None, Conv2dParams::default().padding(1))
            .unwrap()
            .with_batch_norm(gamma.view(), beta.view(), mean.view(), var.view(), 1e-5)
            .unwrap()
            .with_activation(Activation::Relu);
        let got = conv.forward(x.view()).unwrap();
        let plain = naive(&x, &wt, None, Conv2dParams::default().padding(1));
        let want = Array4::from_shape_fn(plain.dim(), |(b, c, y, xx)| {
            let v = (plain[[b, c, y, xx]] - mean[c]) / (var[c] + 1e-5).sqrt() * gamma[c] + beta[c];
            v.max(0.0)
        });
        close(&got, &want);
    }

    #[test]
    fn transposed_matches_scatter_definition() {
        for (i, (p, ks)) in [
            (ConvTranspose2dParams::default().stride(2), 2),
            (
                ConvTranspose2dParams::default()
                    .stride(2)
                    .padding(1)
                    .output_padding(1),
                3,
            ),
            (
                ConvTranspose2dParams::default()
                    .stride(2)
                    .padding(1)
                    .groups(2),
                4,
            ),
            (ConvTranspose2dParams::default().dilation(2).padding(1), 3),
        ]
        .into_iter()
        .enumerate()
        {
            let (cin, cout_g) = (4, 3);
            let x = rand_array4((2, cin, 5, 4), i as u64);
            let wt = rand_array4((cin, cout_g, ks, ks), 50 + i as u64);
            let bias: Vec<f32> = (0..cout_g * p.groups).map(|c| c as f32 * 0.1).collect();
            let conv = ConvTranspose2d::new(wt.view(), Some(ArrayView1::from(&bias)), p).unwrap();
            let got = conv.forward(x.view()).unwrap();
            let (oh, ow) = conv.output_size(5, 4).unwrap();
            let cin_g = cin / p.groups;
            let mut want = Array4::<f32>::zeros((2, cout_g * p.groups, oh, ow));
            for b in 0..2 {
                for ci in 0..cin {
                    let g = ci / cin_g;
                    for co in 0..cout_g {
                        for iy in 0..5 {
                            for ix in 0..4 {
                                for ky in 0..ks {
                                    for kx in 0..ks {
                                        let oy = (iy * p.stride.0 + ky * p.dilation.0) as isize
                                            - p.padding.0 as isize;
                                        let ox = (ix * p.stride.1 + kx * p.dilation.1) as isize
                                            - p.padding.1 as isize;
                                        if oy >= 0
                                            && ox >= 0
                                            && (oy as usize) < oh
                                            && (ox as usize) < ow
                                        {
                                            want[[b, g * cout_g + co, oy as usize, ox as usize]] +=
                                                x[[b, ci, iy, ix]] * wt[[ci, co, ky, kx]];
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            want.indexed_iter_mut()
                .for_each(|((_, c, _, _), v)| *v += bias[c]);
            close(&got, &want);
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let wt = rand_array4((4, 3, 3, 3), 2);
        let x = rand_array4((1, 2, 6, 6), 1);
        assert!(conv2d(x.view(), wt.view(), None, Conv2dParams::default()).is_err());
        let x = rand_array4((1, 3, 2, 2), 1);
        assert!(conv2d(x.view(), wt.view(), None, Conv2dParams::default()).is_err());
        assert!(conv2d(x.view(), wt.view(), None, Conv2dParams::default().stride(0)).is_err());
        assert!(conv2d(x.view(), wt.view(), None, Conv2dParams::default().groups(3)).is_err());
        let b = Array1::<f32>::zeros(3);
        assert!(Conv2d::new(wt.view(), Some(b.view()), Conv2dParams::default()).is_err());
        assert!(ConvTranspose2d::new(
            wt.view(),
            None,
            ConvTranspose2dParams::default().output_padding(1)
        )
        .is_err());
        // padding makes an empty input valid
        let x = Array4::<f32>::zeros((1, 3, 0, 0));
        let y = conv2d(
            x.view(),
            wt.view(),
            None,
            Conv2dParams::default().padding(2),
        )
        .unwrap();
        assert_eq!(y.shape(), &[1, 4, 2, 2]);
    }
}
