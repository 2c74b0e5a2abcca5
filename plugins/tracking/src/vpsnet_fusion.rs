//! `vpsnet_fusion`: VPSNet's feature fusion across frames, the `BFPTcea` extra neck
//! (mcahny/vps @ 138503ed: `mmdet/models/extra_necks/bfp_tcea.py`, with `LiteFlowNetCorr` and
//! `WarpingLayer` of `mmdet/models/flow_modules/flow_modules.py`, `TCEA_Fusion` of
//! `mmdet/models/utils/tcea_modules.py`; configured by `configs/cityscapes/fusetrack.py`:
//! `refine_level=0, refine_type='conv', nframes=2, center=0`), as `PanopticFuseTrack
//! .simple_test` runs it: `x = extra_neck(x, ref_x, flowR2T)`, with `ref_x` the FPN levels of
//! the reference frame and `flowR2T` the flow from the `flownet2` node.
//!
//! Per frame, with P2..P6 of the frame (`in_features`) and of its reference:
//! 1. `gather`: every level is brought to the size of level `refine_level` (P2) — finer
//!    levels by `adaptive_max_pool2d`, the others by nearest `interpolate` — and the levels
//!    are averaged (`sum(feats) / len(feats)`): the balanced feature `bsf`, and `ref_bsf` of
//!    the reference.
//! 2. `warp_bsf = WarpingLayer(ref_bsf, flow_init)`: `grid_sample` (bilinear, zeros outside)
//!    at the grid `linspace(-1, 1, W) + flow_x / ((W - 1) / 2)` (likewise in y) with
//!    `align_corners=False` — the grid is the align-corners one and the sampler is not, so a
//!    zero flow samples a little off the pixel centres, as the official code does (torch ≥ 1.3
//!    default; the repository pins torch 1.4). One implementation serves this and
//!    YolactEdge's warping: `kernels::layers::grid_sample`.
//! 3. `flow_fine = LiteFlowNetCorr(bsf, warp_bsf, flow_init)`: the correlation of the two
//!    (`kernels::ops::correlation`, `search_range` 4: 81 channels), concatenated as `[bsf,
//!    corr, flow_init]`, then three 3x3 convolutions with LeakyReLU 0.1 (64, 64, 32) and a
//!    3x3 convolution to 2 channels. The flow is predicted outright, not as a correction.
//! 4. `warp_bsf = WarpingLayer(warp_bsf, flow_fine)`: the already warped reference is warped
//!    again by the fine flow (not `ref_bsf` by a combined flow), as the official code does.
//! 5. `TCEA_Fusion(stack([bsf, warp_bsf]))` (`center` 0: the frame itself is the attention's
//!    reference): temporal attention `sigmoid(sum_c tAtt_1(frame_i) · tAtt_2(frame_center))`
//!    weights each frame per pixel; `fea = lrelu(fea_fusion(cat))`; spatial attention from
//!    `lrelu(sAtt_1(cat))` through 3x3/2 max and average pooling (padding 1, the average
//!    counting the padding), `sAtt_2`, `sAtt_3`, a bilinear 2x upsampling, `sAtt_4`, and
//!    `att_add = sAtt_add_2(lrelu(sAtt_add_1(att)))`; the result `fea · sigmoid(att) · 2 +
//!    att_add`. LeakyReLU slopes are 0.1.
//! 6. `refine` (`refine_type` "conv": mmdet's `ConvModule(C, C, 3, padding=1)`, a 3x3
//!    convolution with bias and ReLU).
//! 7. Scatter as a residual: level `i` gets `adaptive_max_pool2d(bsf, size_i)` (levels at or
//!    above `refine_level`) or the nearest `interpolate` (finer levels) added to its input.
//!
//! Inputs and outputs:
//! - `features`: the FPN levels of one frame (`in_features`, p2..p6, the `fpn` node's names
//!   for mmdet's P2..P6: all five are fused, as `num_levels=5`).
//! - `flow`: the `flownet2` node's output, `[2, H, W]` (or `[1, 2, H, W]`) at the size of
//!   level `refine_level`: from this frame to its reference, in that level's pixels.
//! - Output `features`: the input value with the fused levels in place of the inputs'.
//!
//! The reference frame is the stream's previous frame; the first frame of a stream is its
//! own reference (the official test: `prev_img_info = img_info` at the start of a video).
//! The node keeps, per stream (`StreamState`), the previous frame's `bsf` rather than its
//! five levels: the reference enters only through `gather(ref_x)`, so this is the same value
//! at the cost of one level. The `flownet2` node keeps the previous image likewise, so the
//! two agree on the reference as long as they see the same frames.
//!
//! Differences from the official code, none of which changes a result:
//! - `nframes` is 2 and fixed: the official three-frame path needs the next frame's features
//!   and flow (`next_inputs`), which a causal pipeline does not have. `refine_type` "att"
//!   (CBAM) is not supported; "none" skips the refinement as `refine_type=None` does.
//! - The inputs must satisfy what the official code assumes without checking (a flow of the
//!   P2 size, levels with the same channels, an even P2 so that TCEA's pooled attention
//!   upsamples back to it); violations are errors here rather than broadcasting failures.
//!
//! Weights: PanopticFuseTrack's names, `extra_neck.liteflownet.flow_estimator.convs.{0,1,2}.0
//! .*`, `extra_neck.liteflownet.flow_estimator.convs.3.*`, `extra_neck.tcea_fusion.{tAtt_1,
//! tAtt_2, fea_fusion, sAtt_1, sAtt_2, sAtt_3, sAtt_4, sAtt_add_1, sAtt_add_2}.*`,
//! `extra_neck.refine.conv.*` (a state dict of the neck alone binds with the prefix falling
//! back to none).

use kernels::layers::grid_sample::grid_sample;
use kernels::layers::pool::{avg_pool2d, max_pool2d, Pool2dParams};
use kernels::layers::resize::resize;
use kernels::layers::{Activation, Conv2d, Conv2dParams, ResizeMode};
use kernels::ops::{correlation, CorrelationParams};
use kernels::weights::{Binder, Weights};
use ndarray::{concatenate, s, Array2, Array4, ArrayView4, Axis, Zip};
use plugin_sdk::{
    FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, StreamState, Value,
};
use vision_common::{
    conv_bias, count_param, feature_levels, features_input, from_nchw, in_features_param,
    levels_params, nchw, resolve_prefix, weights_param, LayerContext, ModelError,
};

const NODE: &str = "vpsnet_fusion";

const LEAKY: Activation = Activation::LeakyRelu(0.1);

const BILINEAR: ResizeMode = ResizeMode::Bilinear {
    align_corners: false,
};

/// The settings of [`BfpTcea`]; the defaults are `configs/cityscapes/fusetrack.py`'s.
#[derive(Clone, Debug, PartialEq)]
pub struct BfpTceaConfig {
    /// Channels of every level (`in_channels`).
    pub in_channels: usize,
    /// Levels fused (`num_levels`).
    pub num_levels: usize,
    /// The level whose size the levels are gathered at.
    pub refine_level: usize,
    /// Whether the gathered feature is refined by a 3x3 convolution with ReLU
    /// (`refine_type='conv'`) or not (`None`).
    pub refine: bool,
    /// Which frame of `[frame, warped reference]` is the temporal attention's reference.
    pub center: usize,
    /// `LiteFlowNetCorr`'s correlation radius (`flow_args.search_range`, 4 in BFPTcea).
    pub search_range: usize,
}

impl Default for BfpTceaConfig {
    fn default() -> Self {
        BfpTceaConfig {
            in_channels: 256,
            num_levels: 5,
            refine_level: 0,
            refine: true,
            center: 0,
            search_range: 4,
        }
    }
}

/// A convolution with bias, `k x k`, padding `(k - 1) / 2`, stride 1, and an activation.
fn conv(
    b: &mut Binder<'_>,
    name: &str,
    cin: usize,
    cout: usize,
    k: usize,
    act: Activation,
) -> Result<Conv2d, ModelError> {
    let p = Conv2dParams::default().padding((k - 1) / 2);
    Ok(conv_bias(b, name, cin, cout, k, p)?.with_activation(act))
}

fn run(c: &Conv2d, x: ArrayView4<'_, f32>, name: &str) -> Result<Array4<f32>, ModelError> {
    c.forward(x).ctx(|| name.to_string())
}

/// `LiteFlowNetCorr`: a flow from a feature, a warped feature and an initial flow.
#[derive(Debug)]
struct LiteFlowNetCorr {
    corr: CorrelationParams,
    /// `flow_estimator.convs.{0,1,2}.0` (LeakyReLU 0.1) and `flow_estimator.convs.3`.
    convs: Vec<Conv2d>,
}

impl LiteFlowNetCorr {
    fn bind(b: &mut Binder<'_>, channels: usize, search_range: usize) -> Result<Self, ModelError> {
        let corr = CorrelationParams::search_range(search_range);
        // `in_ch + (2·search_range + 1)²` with `in_ch = C + 2` (the initial flow).
        let cin = channels + 2 + corr.out_channels();
        let p = "liteflownet.flow_estimator.convs";
        let convs = vec![
            conv(b, &format!("{p}.0.0"), cin, 64, 3, LEAKY)?,
            conv(b, &format!("{p}.1.0"), 64, 64, 3, LEAKY)?,
            conv(b, &format!("{p}.2.0"), 64, 32, 3, LEAKY)?,
            conv(b, &format!("{p}.3"), 32, 2, 3, Activation::Identity)?,
        ];
        Ok(LiteFlowNetCorr { corr, convs })
    }

    fn forward(
        &self,
        x1: ArrayView4<'_, f32>,
        x2: ArrayView4<'_, f32>,
        flow_init: ArrayView4<'_, f32>,
    ) -> Result<Array4<f32>, ModelError> {
        let corr = correlation(x1, x2, self.corr)
            .map_err(|e| ModelError::input(format!("{NODE}: liteflownet: {e}")))?;
        let mut x = concatenate(Axis(1), &[x1, corr.view(), flow_init])
            .map_err(|e| ModelError::input(format!("{NODE}: liteflownet: {e}")))?;
        for (i, c) in self.convs.iter().enumerate() {
            x = run(
                c,
                x.view(),
                &format!("liteflownet.flow_estimator.convs.{i}"),
            )?;
        }
        Ok(x)
    }
}

/// `TCEA_Fusion` for two frames.
#[derive(Debug)]
struct TceaFusion {
    center: usize,
    t_att_1: Conv2d,
    t_att_2: Conv2d,
    fea_fusion: Conv2d,
    s_att_1: Conv2d,
    s_att_2: Conv2d,
    s_att_3: Conv2d,
    s_att_4: Conv2d,
    s_att_add_1: Conv2d,
    s_att_add_2: Conv2d,
}

/// The frames TCEA fuses: the frame's gathered feature and the warped reference.
const NFRAMES: usize = 2;

impl TceaFusion {
    fn bind(b: &mut Binder<'_>, nf: usize, center: usize) -> Result<Self, ModelError> {
        let name = |m: &str| format!("tcea_fusion.{m}");
        let id = Activation::Identity;
        Ok(TceaFusion {
            center,
            // The official module applies its LeakyReLU outside the convolutions; where it
            // follows one directly it is fused here.
            t_att_1: conv(b, &name("tAtt_1"), nf, nf, 3, id)?,
            t_att_2: conv(b, &name("tAtt_2"), nf, nf, 3, id)?,
            fea_fusion: conv(b, &name("fea_fusion"), NFRAMES * nf, nf, 1, LEAKY)?,
            s_att_1: conv(b, &name("sAtt_1"), NFRAMES * nf, nf, 1, LEAKY)?,
            s_att_2: conv(b, &name("sAtt_2"), 2 * nf, nf, 1, LEAKY)?,
            s_att_3: conv(b, &name("sAtt_3"), nf, nf, 3, LEAKY)?,
            s_att_4: conv(b, &name("sAtt_4"), nf, nf, 3, id)?,
            s_att_add_1: conv(b, &name("sAtt_add_1"), nf, nf, 1, LEAKY)?,
            s_att_add_2: conv(b, &name("sAtt_add_2"), nf, nf, 1, id)?,
        })
    }

    /// `TCEA_Fusion.forward(stack(frames))` for one image: `frames` `[1, C, H, W]` each.
    fn forward(&self, frames: [ArrayView4<'_, f32>; NFRAMES]) -> Result<Array4<f32>, ModelError> {
        let (_, c, h, w) = frames[0].dim();
        if h % 2 != 0 || w % 2 != 0 {
            // The spatial attention is pooled to ceil(H / 2) and upsampled 2x: the official
            // module fails on the product of a H x W and a (H + 1) x W map.
            return Err(ModelError::input(format!(
                "{NODE}: tcea_fusion needs an even gathered size (the pooled spatial attention is upsampled 2x back to it), got {h}x{w}; pad the image to a multiple of 8"
            )));
        }
        // Temporal attention: per pixel, sigmoid(sum over channels of emb_i · emb_ref).
        let emb_ref = run(&self.t_att_2, frames[self.center], "tcea_fusion.tAtt_2")?;
        let mut aligned = Vec::with_capacity(NFRAMES);
        for frame in frames {
            let emb = run(&self.t_att_1, frame, "tcea_fusion.tAtt_1")?;
            // torch's sum over dim 1: products rounded, then added channel after channel.
            let mut cor = Array2::<f32>::zeros((h, w));
            for k in 0..c {
                Zip::from(&mut cor)
                    .and(emb.slice(s![0, k, .., ..]))
                    .and(emb_ref.slice(s![0, k, .., ..]))
                    .for_each(|acc, &a, &r| *acc += a * r);
            }
            cor.mapv_inplace(|v| Activation::Sigmoid.eval(v));
            let mut x = frame.to_owned();
            for mut plane in x.slice_mut(s![0, .., .., ..]).outer_iter_mut() {
                plane *= &cor;
            }
            aligned.push(x);
        }
        let views: Vec<ArrayView4<'_, f32>> = aligned.iter().map(|a| a.view()).collect();
        let aligned = concatenate(Axis(1), &views)
            .map_err(|e| ModelError::input(format!("{NODE}: tcea_fusion: {e}")))?;

        let fea = run(&self.fea_fusion, aligned.view(), "tcea_fusion.fea_fusion")?;
        // Spatial attention.
        let att = run(&self.s_att_1, aligned.view(), "tcea_fusion.sAtt_1")?;
        let pool = Pool2dParams::new(3).stride(2).padding(1);
        let att_max = max_pool2d(att.view(), pool).ctx(|| "tcea_fusion.maxpool".into())?;
        // nn.AvgPool2d's default count_include_pad=True: always divided by 9.
        let att_avg =
            avg_pool2d(att.view(), pool, true, None).ctx(|| "tcea_fusion.avgpool".into())?;
        let cat = concatenate(Axis(1), &[att_max.view(), att_avg.view()])
            .map_err(|e| ModelError::input(format!("{NODE}: tcea_fusion: {e}")))?;
        let att = run(&self.s_att_2, cat.view(), "tcea_fusion.sAtt_2")?;
        let att = run(&self.s_att_3, att.view(), "tcea_fusion.sAtt_3")?;
        let (_, _, ph, pw) = att.dim();
        // F.interpolate(scale_factor=2): the sizes double exactly, so torch 1.4's in/out
        // scale and 2.x's 1/scale_factor are the same.
        let att = resize(att.view(), (2 * ph, 2 * pw), BILINEAR)
            .ctx(|| "tcea_fusion (upsampling the attention)".into())?;
        let att = run(&self.s_att_4, att.view(), "tcea_fusion.sAtt_4")?;
        let add = run(&self.s_att_add_1, att.view(), "tcea_fusion.sAtt_add_1")?;
        let att_add = run(&self.s_att_add_2, add.view(), "tcea_fusion.sAtt_add_2")?;
        // fea * sigmoid(att) * 2 + att_add, in torch's order.
        let mut out = fea;
        Zip::from(&mut out)
            .and(&att)
            .and(&att_add)
            .for_each(|f, &a, &add| *f = *f * Activation::Sigmoid.eval(a) * 2.0 + add);
        Ok(out)
    }
}

/// `adaptive_max_pool2d` with the node's errors.
fn adaptive_max_pool2d(
    x: ArrayView4<'_, f32>,
    size: (usize, usize),
) -> Result<Array4<f32>, ModelError> {
    kernels::layers::pool::adaptive_max_pool2d(x, size)
        .ctx(|| format!("{NODE}: adaptive_max_pool2d"))
}

/// `F.interpolate(x, size, mode='nearest')`.
fn nearest(x: ArrayView4<'_, f32>, size: (usize, usize)) -> Result<Array4<f32>, ModelError> {
    if (x.dim().2, x.dim().3) == size {
        return Ok(x.to_owned());
    }
    resize(x, size, ResizeMode::Nearest).ctx(|| "interpolate (nearest)".into())
}

/// torch.linspace(-1, 1, n) in f32 as torch's CPU kernel computes it: `step = 2 / (n - 1)`,
/// the first half `-1 + step·i`, the second half `1 - step·(n - 1 - i)`.
fn linspace_unit(n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![-1.0];
    }
    let step = 2.0f32 / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                -1.0 + step * i as f32
            } else {
                1.0 - step * (n - 1 - i) as f32
            }
        })
        .collect()
}

/// `WarpingLayer(x, flow)`: `x` sampled at the grid `linspace(-1, 1) + flow / ((size - 1) /
/// 2)` with `grid_sample` (bilinear, zeros outside, `align_corners=False`); `x` and `flow`
/// (`[N, 2, H, W]`, x then y, pixels) of the same size.
pub fn flow_warp(
    x: ArrayView4<'_, f32>,
    flow: ArrayView4<'_, f32>,
) -> Result<Array4<f32>, ModelError> {
    let (n, _, h, w) = x.dim();
    if flow.dim() != (n, 2, h, w) {
        return Err(ModelError::input(format!(
            "{NODE}: a flow of shape {:?} cannot warp a feature of shape {:?}",
            flow.dim(),
            x.dim()
        )));
    }
    if h < 2 || w < 2 {
        // The official normalisation divides by (size - 1) / 2.
        return Err(ModelError::input(format!(
            "{NODE}: cannot warp a {h}x{w} feature (the flow is normalised by (size - 1) / 2)"
        )));
    }
    let (gx, gy) = (linspace_unit(w), linspace_unit(h));
    // `(flow.size(3) - 1.0) / 2.0`: a half-integer, exact in f32.
    let (sx, sy) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
    let grid = Array4::from_shape_fn((n, h, w, 2), |(b, y, xx, k)| {
        if k == 0 {
            gx[xx] + flow[[b, 0, y, xx]] / sx
        } else {
            gy[y] + flow[[b, 1, y, xx]] / sy
        }
    });
    grid_sample(x, grid.view(), false).ctx(|| "flow_warping (grid_sample)".into())
}

/// What one frame's fusion computed (the intermediates the reference test compares).
#[derive(Clone, Debug)]
pub struct FusionTrace {
    /// The frame's gathered feature.
    pub bsf: Array4<f32>,
    /// The reference's gathered feature warped by the initial flow.
    pub warp_bsf: Array4<f32>,
    pub flow_fine: Array4<f32>,
    /// `warp_bsf` warped again by the fine flow.
    pub warp_bsf_fine: Array4<f32>,
    /// TCEA_Fusion's output.
    pub tcea: Array4<f32>,
    /// After `refine` (equal to `tcea` without it).
    pub refined: Array4<f32>,
    /// The fused levels, `[1, C, h_i, w_i]`.
    pub outputs: Vec<Array4<f32>>,
}

/// BFPTcea with its weights bound.
#[derive(Debug)]
pub struct BfpTcea {
    config: BfpTceaConfig,
    liteflownet: LiteFlowNetCorr,
    tcea: TceaFusion,
    refine: Option<Conv2d>,
}

impl BfpTcea {
    /// Binds the neck's tensors under `prefix` (`"extra_neck."` in a VPSNet checkpoint; a
    /// state dict of the neck alone binds with the prefix falling back to none).
    pub fn from_weights(
        weights: &Weights,
        prefix: &str,
        config: BfpTceaConfig,
    ) -> Result<BfpTcea, ModelError> {
        if config.num_levels == 0 || config.refine_level >= config.num_levels {
            return Err(ModelError::param(
                "refine_level",
                format!(
                    "must name one of the {} levels (0-based), got {}",
                    config.num_levels, config.refine_level
                ),
            ));
        }
        if config.center >= NFRAMES {
            return Err(ModelError::param(
                "center",
                format!(
                    "must be 0 (the frame) or 1 (the warped reference), got {}",
                    config.center
                ),
            ));
        }
        let prefix = resolve_prefix(weights, prefix, &["tcea_fusion.tAtt_1.weight"]);
        let mut b = weights.binder(&prefix);
        let c = config.in_channels;
        let liteflownet = LiteFlowNetCorr::bind(&mut b, c, config.search_range)?;
        let tcea = TceaFusion::bind(&mut b, c, config.center)?;
        let refine = if config.refine {
            Some(conv(&mut b, "refine.conv", c, c, 3, Activation::Relu)?)
        } else {
            None
        };
        b.finish()?;
        Ok(BfpTcea {
            config,
            liteflownet,
            tcea,
            refine,
        })
    }

    pub fn config(&self) -> &BfpTceaConfig {
        &self.config
    }

    /// `gather`: the levels (`[1, C, h, w]`, finest first) at the size of `refine_level`,
    /// averaged.
    pub fn gather(&self, levels: &[ArrayView4<'_, f32>]) -> Result<Array4<f32>, ModelError> {
        self.check_levels(levels)?;
        let r = self.config.refine_level;
        let size = (levels[r].dim().2, levels[r].dim().3);
        let mut sum: Option<Array4<f32>> = None;
        for (i, level) in levels.iter().enumerate() {
            let gathered = if i < r {
                adaptive_max_pool2d(*level, size)?
            } else {
                nearest(*level, size)?
            };
            // Python's sum(): 0 + f0 + f1 + ..., left to right.
            sum = Some(match sum {
                None => gathered,
                Some(acc) => acc + &gathered,
            });
        }
        let n = levels.len() as f32;
        Ok(sum.map(|s| s.mapv(|v| v / n)).unwrap_or_default())
    }

    fn check_levels(&self, levels: &[ArrayView4<'_, f32>]) -> Result<(), ModelError> {
        if levels.len() != self.config.num_levels {
            return Err(ModelError::input(format!(
                "{NODE}: {} feature levels for num_levels {}",
                levels.len(),
                self.config.num_levels
            )));
        }
        for l in levels {
            if l.dim().1 != self.config.in_channels {
                return Err(ModelError::input(format!(
                    "{NODE}: the feature levels have {} channels, the neck expects {}",
                    l.dim().1,
                    self.config.in_channels
                )));
            }
        }
        Ok(())
    }

    /// `BFPTcea.forward(inputs, ref_inputs, flow_init)` for one image, with the reference
    /// given by its gathered feature `ref_bsf` (see the module documentation): the fused
    /// levels and the intermediates.
    pub fn forward(
        &self,
        levels: &[ArrayView4<'_, f32>],
        ref_bsf: Option<ArrayView4<'_, f32>>,
        flow_init: ArrayView4<'_, f32>,
    ) -> Result<FusionTrace, ModelError> {
        let bsf = self.gather(levels)?;
        let ref_bsf = ref_bsf.unwrap_or(bsf.view());
        if ref_bsf.dim() != bsf.dim() {
            return Err(ModelError::input(format!(
                "{NODE}: the reference frame's features gather to {:?}, this frame's to {:?}; a stream's frames must have one size",
                ref_bsf.dim(),
                bsf.dim()
            )));
        }
        let (_, _, h, w) = bsf.dim();
        if (flow_init.dim().2, flow_init.dim().3) != (h, w) {
            return Err(ModelError::input(format!(
                "{NODE}: the flow is {}x{} but level {} (\"refine_level\") is {h}x{w}; the flow must be at its size (flownet2's scale_factor 0.25 for P2)",
                flow_init.dim().2,
                flow_init.dim().3,
                self.config.refine_level
            )));
        }
        let warp_bsf = flow_warp(ref_bsf, flow_init)?;
        let flow_fine = self
            .liteflownet
            .forward(bsf.view(), warp_bsf.view(), flow_init)?;
        let warp_bsf_fine = flow_warp(warp_bsf.view(), flow_fine.view())?;
        let tcea = self.tcea.forward([bsf.view(), warp_bsf_fine.view()])?;
        let refined = match &self.refine {
            Some(c) => run(c, tcea.view(), "refine.conv")?,
            None => tcea.clone(),
        };
        let r = self.config.refine_level;
        let outputs = levels
            .iter()
            .enumerate()
            .map(|(i, level)| {
                let size = (level.dim().2, level.dim().3);
                let residual = if i < r {
                    nearest(refined.view(), size)?
                } else {
                    adaptive_max_pool2d(refined.view(), size)?
                };
                Ok(residual + level)
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(FusionTrace {
            bsf,
            warp_bsf,
            flow_fine,
            warp_bsf_fine,
            tcea,
            refined,
            outputs,
        })
    }
}

pub fn kind() -> NodeKind {
    let d = BfpTceaConfig::default();
    let spec = NodeSpec::new(
        NODE,
        "VPSNet's feature fusion across frames (mcahny/vps BFPTcea): the FPN levels gathered, the previous frame's warped by the flow, refined by LiteFlowNetCorr, fused by TCEA attention and scattered back as a residual",
    );
    let spec = features_input(
        spec,
        "the frame's FPN levels named in `in_features` (p2..p6)",
    )
    .input(
        PortSpec::new(
            "flow",
            PortKind::Tensor,
            "flownet2's flow from this frame to the previous one, f32 [2, H, W] at the size of level `refine_level` (P2)",
        )
        .dtype(plugin_sdk::DType::F32)
        .shape("2,H,W"),
    )
    .output(
        PortSpec::new(
            "features",
            PortKind::Features,
            "the input features with the levels in `in_features` fused (each plus the refined residual)",
        )
        .dtype(plugin_sdk::DType::F32)
        .shape("C,H,W"),
    )
    .param(ParamSpec::required(
        "weights",
        ParamType::Path,
        "VPSNet checkpoint (.pth or .safetensors) holding extra_neck.* (or a state dict of BFPTcea alone)",
    ))
    .param(ParamSpec::optional(
        "prefix",
        ParamType::Str,
        ParamValue::Str("extra_neck.".into()),
        "name prefix of the neck's tensors",
    ));
    let spec = levels_params(
        spec,
        &["p2", "p3", "p4", "p5", "p6"],
        "the levels fused, finest first (num_levels = their count)",
        d.in_channels,
    )
    .param(
        ParamSpec::optional(
            "refine_level",
            ParamType::Int,
            ParamValue::Int(d.refine_level as i64),
            "index in in_features of the level the others are gathered at (0: P2)",
        )
        .range(0.0, 64.0),
    )
    .param(ParamSpec::optional(
        "refine_type",
        ParamType::Str,
        ParamValue::Str("conv".into()),
        "\"conv\" (a 3x3 convolution with ReLU after the fusion) or \"none\"",
    ))
    .param(
        ParamSpec::optional(
            "center",
            ParamType::Int,
            ParamValue::Int(d.center as i64),
            "the temporal attention's reference: 0 the frame, 1 the warped previous frame",
        )
        .range(0.0, 1.0),
    )
    .param(
        ParamSpec::optional(
            "search_range",
            ParamType::Int,
            ParamValue::Int(d.search_range as i64),
            "LiteFlowNetCorr's correlation radius in pixels ((2r + 1)² channels; 4 in BFPTcea)",
        )
        .range(1.0, 64.0),
    );
    NodeKind::new(spec, |params| {
        Ok(Box::new(FusionNode::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `vpsnet_fusion` node: the neck and, per stream, the previous frame's gathered feature.
#[derive(Debug)]
pub struct FusionNode {
    neck: BfpTcea,
    in_features: Vec<String>,
    streams: StreamState<Array4<f32>>,
}

impl FusionNode {
    pub fn from_params(params: &Params) -> Result<FusionNode, ModelError> {
        let in_features = in_features_param(params)?;
        let refine = match params.str("refine_type").map_err(ModelError::Input)? {
            "conv" => true,
            "none" => false,
            other => {
                return Err(ModelError::param(
                    "refine_type",
                    format!("must be \"conv\" or \"none\", got \"{other}\""),
                ))
            }
        };
        let config = BfpTceaConfig {
            in_channels: count_param(params, "channels")?,
            num_levels: in_features.len(),
            refine_level: count_param(params, "refine_level")?,
            refine,
            center: count_param(params, "center")?,
            search_range: count_param(params, "search_range")?,
        };
        let (weights, prefix) = weights_param(params)?;
        Ok(FusionNode::new(
            BfpTcea::from_weights(&weights, &prefix, config)?,
            in_features,
        ))
    }

    pub fn new(neck: BfpTcea, in_features: Vec<String>) -> FusionNode {
        FusionNode {
            neck,
            in_features,
            streams: StreamState::default(),
        }
    }

    pub fn neck(&self) -> &BfpTcea {
        &self.neck
    }

    /// The gathered feature `stream` keeps as the next frame's reference.
    pub fn reference(&self, stream: u32) -> Option<&Array4<f32>> {
        self.streams.get(stream)
    }

    /// One frame of `stream`: the fused features, and what the fusion computed.
    pub fn run(
        &mut self,
        stream: u32,
        features: &Value,
        flow: &Value,
    ) -> Result<(Value, FusionTrace), ModelError> {
        let levels = feature_levels(NODE, features, &self.in_features)?;
        let flow_t = flow.tensor("tensor").map_err(ModelError::Input)?;
        let (flow_v, _) = nchw(flow_t, &format!("{NODE}: the flow"))?;
        if flow_v.dim().0 != 1 || flow_v.dim().1 != 2 {
            return Err(ModelError::input(format!(
                "{NODE}: the flow must be [2, H, W] (x then y), got {}",
                flow_t.describe()
            )));
        }
        let reference = self.streams.get(stream).map(|r| r.view());
        let trace = self.neck.forward(&levels, reference, flow_v)?;
        let mut out = features.clone();
        for (name, fused) in self.in_features.iter().zip(&trace.outputs) {
            // Keep each level's rank ([C, H, W] or [1, C, H, W]).
            let batched = features.get(name).is_some_and(|t| t.ndim() == 4);
            out.insert(name, from_nchw(fused.clone(), batched)?);
        }
        // This frame is the next one's reference.
        self.streams.insert(stream, trace.bsf.clone());
        Ok((out, trace))
    }
}

impl Node for FusionNode {
    fn process(&mut self, frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let (out, _) = self.run(
            frame.stream,
            inputs.value("features")?,
            inputs.value("flow")?,
        )?;
        Ok(Outputs::one("features", out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_is_symmetric_and_exact_at_the_ends() {
        let v = linspace_unit(5);
        assert_eq!(v, vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
        let v = linspace_unit(48);
        assert_eq!((v[0], v[47]), (-1.0, 1.0));
        assert_eq!(v[1], -v[46]);
    }

    #[test]
    fn adaptive_max_pool_windows_overlap_as_torchs() {
        // 5 -> 3: windows [0, 2), [1, 4), [3, 5).
        let x = Array4::from_shape_vec((1, 1, 1, 5), vec![1.0, 5.0, 2.0, 0.0, 3.0]).unwrap();
        let y = adaptive_max_pool2d(x.view(), (1, 3)).unwrap();
        assert_eq!(y.iter().copied().collect::<Vec<_>>(), vec![5.0, 5.0, 3.0]);
        // An exact ratio is a plain max pooling.
        let x = Array4::from_shape_fn((1, 2, 4, 6), |(_, k, y, x)| (k * 100 + y * 10 + x) as f32);
        let y = adaptive_max_pool2d(x.view(), (2, 3)).unwrap();
        assert_eq!(y[[0, 1, 1, 2]], 135.0);
        assert_eq!(y[[0, 0, 0, 0]], 11.0);
        // NaN wins.
        let x = Array4::from_shape_vec((1, 1, 1, 3), vec![1.0, f32::NAN, 2.0]).unwrap();
        assert!(adaptive_max_pool2d(x.view(), (1, 2))
            .unwrap()
            .iter()
            .all(|v| v.is_nan()));
    }

    #[test]
    fn a_zero_flow_samples_off_the_pixel_centres_as_officially() {
        // linspace's align-corners grid read with align_corners=False: pixel x is sampled at
        // x·W/(W - 1) - 0.5, so the first pixel reads half of itself (zeros outside).
        let x = Array4::from_shape_fn((1, 1, 2, 4), |(_, _, _, x)| (x + 1) as f32);
        let flow = Array4::zeros((1, 2, 2, 4));
        let y = flow_warp(x.view(), flow.view()).unwrap();
        // y = 0 row: sampled at y·2/1 - 0.5 = -0.5 → half of row 0.
        assert!((y[[0, 0, 0, 0]] - 0.25).abs() < 1e-6, "{y:?}");
        // Last column: x = 3·4/3 - 0.5 = 3.5 → half of column 3, row -0.5 → half again.
        assert!((y[[0, 0, 0, 3]] - 1.0).abs() < 1e-6, "{y:?}");
        assert!(flow_warp(x.view(), Array4::zeros((1, 2, 2, 3)).view()).is_err());
    }
}
