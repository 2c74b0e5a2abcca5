//! `yolact_edge`: YolactEdge's video inference (haotian-liu/yolact_edge @ 873fceb3,
//! `yolact_edge_vid_resnet50_config`: `yolact.py` `Yolact.forward`, `FlowNetMini`,
//! `FlowNetMiniPredLayer`, `FlowNetMiniPreConvs`, `SPA`, `FPN_phase_1`, `FPN_phase_2`;
//! `layers/warp_utils.py` `deform_op`; `eval.py` `evalvideo`).
//!
//! The `resnet` node decides the keyframes (`keyframe_interval`, 5 in `evalvideo`): on a
//! keyframe it gives C3..C5 and this node runs YOLACT's FPN in its two phases, keeping the
//! phase-1 P3..P5 (before the 3x3 convolutions) and the C3 lateral for the stream. Between
//! keyframes the body stops after layer2 (C2, C3), and this node:
//! 1. computes the C3 lateral of the frame;
//! 2. runs FeatFlowNet on the two laterals (each reduced 256 → 64 by a 3x3 convolution with
//!    LeakyReLU 0.1, the frame's first): an encoder of three stages (stride 1, 2, 2; each two
//!    3x3 convolutions with LeakyReLU 0.1) and predictions at the coarsest stage and, after
//!    upsampling it (bilinear) and merging it with the middle stage, at the middle one; each
//!    prediction is a 2-channel flow (3x3, no bias), a 256-channel scale and a 256-channel
//!    bias (1x1);
//! 3. warps the keyframe's P4 and P5 with the middle and coarsest flows (`deform_op`: the
//!    pixel grid normalised to `[-1, 1]` plus `flow / 8`, `grid_sample` bilinear with zeros
//!    and `align_corners=True`), times the scale, plus the bias;
//! 4. recomputes P3 as the warped P4 upsampled (bilinear) to C3's size plus the lateral;
//! 5. refines P4 and P5 with `SPA`: the lateral resized (bilinear, successively) to each
//!    level, concatenated, a 3x3 convolution 512 → 256 with LeakyReLU 0.1, added;
//! 6. then YOLACT's FPN phase 2, protonet and heads, and `Detect`: FastNMS as `eval.py` runs
//!    it by default (`--fast_nms` is true; the config's `use_fast_nms: False` is not read
//!    there), or `traditional_nms` (`nms = "traditional"`, `--fast_nms=False`).
//!
//! State is per stream (`FrameInfo::stream`); a stream's keyframe replaces the last one.
//!
//! Weights: YolactEdge's names, `fpn_phase_1.lat_layers.*`, `fpn_phase_2.*`, `proto_net.*`,
//! `prediction_layers.0.*`, `flow_net_pre_convs.convs.0.0.*`, `flow_net.{conv1,conv2,conv3}.
//! {0,1}.0.*`, `flow_net.pred{2,3}.{conv,scale,bias}.*`, `flow_net.{upfeat3,upflow3}.weight`,
//! `spa.refine_convs.{0,1}.0.*` (`flow_net.pred1`, `upfeat2` and `upflow2` serve the P3 flow,
//! which inference skips).

use kernels::layers::grid_sample::grid_sample;
use kernels::layers::resize::resize;
use kernels::layers::{Activation, Conv2d, Conv2dParams, ResizeMode};
use kernels::weights::{Binder, Weights};
use ndarray::{concatenate, Array4, ArrayView4, Axis};
use plugin_sdk::{
    FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Value,
};

use vision_common::{
    conv_bias, count_param, features_input, image_input, named_levels, resolve_prefix,
    weights_param, weights_params, ImageSizes, LayerContext, ModelError,
};

use crate::head::{
    config_from_params, instances_value, model_params, RawOutputs, Yolact, YolactConfig,
};

const NODE: &str = "yolact_edge";

const BILINEAR: ResizeMode = ResizeMode::Bilinear {
    align_corners: false,
};

const LEAKY: Activation = Activation::LeakyRelu(0.1);

/// A 3x3 convolution with LeakyReLU 0.1 (`conv_lrelu`), bound from `{name}.0`.
fn conv_lrelu(
    b: &mut Binder<'_>,
    name: &str,
    cin: usize,
    cout: usize,
    stride: usize,
) -> Result<Conv2d, ModelError> {
    let p = Conv2dParams::default().padding(1).stride(stride);
    Ok(conv_bias(b, &format!("{name}.0"), cin, cout, 3, p)?.with_activation(LEAKY))
}

/// A convolution without bias.
fn conv_plain(
    b: &mut Binder<'_>,
    name: &str,
    cin: usize,
    cout: usize,
    k: usize,
) -> Result<Conv2d, ModelError> {
    let w = b.take(&format!("{name}.weight"), &[cout, cin, k, k]);
    Conv2d::from_tensors(&w, None, Conv2dParams::default().padding(k / 2)).ctx(|| name.to_string())
}

/// `FlowNetMiniPredLayer`: a flow, a scale and a bias.
#[derive(Debug)]
struct FlowPred {
    flow: Conv2d,
    scale: Conv2d,
    bias: Conv2d,
}

/// One level's flow prediction: `[1, 2, h, w]`, `[1, F, h, w]`, `[1, F, h, w]`.
struct Flow {
    offset: Array4<f32>,
    scale: Array4<f32>,
    bias: Array4<f32>,
}

impl FlowPred {
    fn bind(b: &mut Binder<'_>, name: &str, cin: usize, f: usize) -> Result<FlowPred, ModelError> {
        let one = Conv2dParams::default();
        Ok(FlowPred {
            flow: conv_plain(b, &format!("{name}.conv"), cin, 2, 3)?,
            scale: conv_bias(b, &format!("{name}.scale"), cin, f, 1, one)?,
            bias: conv_bias(b, &format!("{name}.bias"), cin, f, 1, one)?,
        })
    }

    fn forward(&self, x: ArrayView4<'_, f32>, name: &str) -> Result<Flow, ModelError> {
        Ok(Flow {
            offset: self.flow.forward(x).ctx(|| format!("{name}.conv"))?,
            scale: self.scale.forward(x).ctx(|| format!("{name}.scale"))?,
            bias: self.bias.forward(x).ctx(|| format!("{name}.bias"))?,
        })
    }
}

/// What a keyframe leaves for the frames after it.
#[derive(Clone, Debug)]
pub struct Keyframe {
    /// FPN phase 1's P3, P4, P5.
    pub feats: Vec<Array4<f32>>,
    /// The C3 lateral.
    pub lateral: Array4<f32>,
}

/// YolactEdge with its weights bound.
#[derive(Debug)]
pub struct YolactEdge {
    yolact: Yolact,
    pre: Conv2d,
    encoder: [Vec<Conv2d>; 3],
    pred3: FlowPred,
    pred2: FlowPred,
    upfeat3: Conv2d,
    upflow3: Conv2d,
    spa: Vec<Conv2d>,
}

/// The intermediate tensors of a frame between keyframes (for checks against the reference).
pub struct Warped {
    pub lateral: Array4<f32>,
    /// The P4 and P5 offsets.
    pub offsets: Vec<Array4<f32>>,
    /// Phase-1 P3, P4, P5 after warping, P3's recomputation and SPA.
    pub phase_1: Vec<Array4<f32>>,
}

impl YolactEdge {
    pub fn from_weights(
        weights: &Weights,
        prefix: &str,
        config: YolactConfig,
    ) -> Result<YolactEdge, ModelError> {
        let f = config.num_features;
        let yolact = Yolact::from_weights(weights, prefix, config)?;
        let prefix = resolve_prefix(weights, prefix, &["flow_net_pre_convs.convs.0.0.weight"]);
        let mut b = weights.binder(&prefix);
        // reduce_channels [64], encode_channels 64, encode_layers [[1], [2], [4]].
        let (r, e) = (64, 64);
        let pre = conv_lrelu(&mut b, "flow_net_pre_convs.convs.0", f, r, 1)?;
        let stage = |b: &mut Binder<'_>, i: usize, cin: usize, cout: usize, stride: usize| {
            Ok::<_, ModelError>(vec![
                conv_lrelu(b, &format!("flow_net.conv{i}.0"), cin, cout, stride)?,
                conv_lrelu(b, &format!("flow_net.conv{i}.1"), cout, cout, 1)?,
            ])
        };
        let encoder = [
            stage(&mut b, 1, 2 * r, e, 1)?,
            stage(&mut b, 2, e, 2 * e, 2)?,
            stage(&mut b, 3, 2 * e, 4 * e, 2)?,
        ];
        let pred3 = FlowPred::bind(&mut b, "flow_net.pred3", 4 * e, f)?;
        let pred2 = FlowPred::bind(&mut b, "flow_net.pred2", 4 * e + 2, f)?;
        let upfeat3 = conv_plain(&mut b, "flow_net.upfeat3", 4 * e, 2 * e, 3)?;
        let upflow3 = conv_plain(&mut b, "flow_net.upflow3", 2, 2, 3)?;
        // The P3 flow's modules: unused at inference (warp_layers "P4P5").
        for module in ["flow_net.pred1.", "flow_net.upfeat2.", "flow_net.upflow2."] {
            b.ignore_module(module);
        }
        let spa = (0..2)
            .map(|i| conv_lrelu(&mut b, &format!("spa.refine_convs.{i}"), 2 * f, f, 1))
            .collect::<Result<Vec<_>, _>>()?;
        for module in [
            "backbone.",
            "fpn_phase_1.",
            "fpn_phase_2.",
            "proto_net.",
            "prediction_layers.",
            "semantic_seg_conv.",
        ] {
            b.ignore_module(module);
        }
        b.finish()?;
        Ok(YolactEdge {
            yolact,
            pre,
            encoder,
            pred3,
            pred2,
            upfeat3,
            upflow3,
            spa,
        })
    }

    pub fn yolact(&self) -> &Yolact {
        &self.yolact
    }

    /// A keyframe's P3..P7 from C3..C5, and what it leaves for the next frames.
    pub fn keyframe(
        &self,
        levels: &[ArrayView4<'_, f32>],
    ) -> Result<(Vec<Array4<f32>>, Keyframe), ModelError> {
        let (merged, lateral) = self.yolact.fpn_phase_1(levels)?;
        let key = Keyframe {
            feats: merged.clone(),
            lateral,
        };
        Ok((self.yolact.fpn_phase_2(merged)?, key))
    }

    /// FeatFlowNet: the P4 and P5 flows from the frame's and the keyframe's laterals.
    fn flows(
        &self,
        target: ArrayView4<'_, f32>,
        source: ArrayView4<'_, f32>,
    ) -> Result<[Flow; 2], ModelError> {
        let t = self
            .pre
            .forward(target)
            .ctx(|| "flow_net_pre_convs (frame)".into())?;
        let s = self
            .pre
            .forward(source)
            .ctx(|| "flow_net_pre_convs (keyframe)".into())?;
        let mut x = concatenate(Axis(1), &[t.view(), s.view()])
            .map_err(|e| ModelError::input(format!("{NODE}: {e}")))?;
        let mut outs = Vec::with_capacity(3);
        for (i, stage) in self.encoder.iter().enumerate() {
            for (j, conv) in stage.iter().enumerate() {
                x = conv
                    .forward(x.view())
                    .ctx(|| format!("flow_net.conv{}.{j}", i + 1))?;
            }
            outs.push(x.clone());
        }
        let (conv2, conv3) = (&outs[1], &outs[2]);
        let flow3 = self.pred3.forward(conv3.view(), "flow_net.pred3")?;
        let (_, _, h2, w2) = conv2.dim();
        let up = |a: &Array4<f32>, what: &str| {
            resize(a.view(), (h2, w2), BILINEAR).ctx(|| format!("{NODE}: upsampling {what}"))
        };
        let upfeat = self
            .upfeat3
            .forward(up(conv3, "conv3")?.view())
            .ctx(|| "flow_net.upfeat3".into())?;
        let upflow = self
            .upflow3
            .forward(up(&flow3.offset, "flow3")?.view())
            .ctx(|| "flow_net.upflow3".into())?;
        let concat2 = concatenate(Axis(1), &[conv2.view(), upfeat.view(), upflow.view()])
            .map_err(|e| ModelError::input(format!("{NODE}: {e}")))?;
        let flow2 = self.pred2.forward(concat2.view(), "flow_net.pred2")?;
        Ok([flow2, flow3])
    }

    /// A frame between keyframes: P3..P7 from its C3 and the keyframe's features.
    pub fn warped(
        &self,
        c3: ArrayView4<'_, f32>,
        key: &Keyframe,
    ) -> Result<(Vec<Array4<f32>>, Warped), ModelError> {
        let lateral = self.yolact.lateral_c3(c3)?;
        if lateral.dim() != key.lateral.dim() {
            return Err(ModelError::input(format!(
                "{NODE}: the frame's C3 lateral is {:?} but the keyframe's is {:?}; a frame of another size needs a keyframe",
                lateral.dim(),
                key.lateral.dim()
            )));
        }
        let flows = self.flows(lateral.view(), key.lateral.view())?;
        let mut phase_1 = Vec::with_capacity(3);
        for (flow, feat) in flows.iter().zip(&key.feats[1..]) {
            phase_1.push(warp(feat.view(), flow)?);
        }
        let (_, _, h, w) = lateral.dim();
        let p3 = resize(phase_1[0].view(), (h, w), BILINEAR)
            .ctx(|| "P3 from the warped P4".into())?
            + &lateral;
        // SPA: the lateral resized, level after level, then x + refine(cat(x, c3)).
        let mut c = lateral.clone();
        for (x, refine) in phase_1.iter_mut().zip(&self.spa) {
            let (_, _, h, w) = x.dim();
            c = resize(c.view(), (h, w), BILINEAR).ctx(|| "spa (resizing the lateral)".into())?;
            let cat = concatenate(Axis(1), &[x.view(), c.view()])
                .map_err(|e| ModelError::input(format!("{NODE}: {e}")))?;
            *x = &*x
                + &refine
                    .forward(cat.view())
                    .ctx(|| "spa.refine_convs".into())?;
        }
        phase_1.insert(0, p3);
        let pyramid = self.yolact.fpn_phase_2(phase_1.clone())?;
        let offsets = flows.into_iter().map(|f| f.offset).collect();
        Ok((
            pyramid,
            Warped {
                lateral,
                offsets,
                phase_1,
            },
        ))
    }

    pub fn heads(&self, pyramid: &[Array4<f32>]) -> Result<RawOutputs, ModelError> {
        self.yolact.heads(pyramid)
    }
}

/// `deform_op(feat, flow.offset) * scale + bias`.
fn warp(feat: ArrayView4<'_, f32>, flow: &Flow) -> Result<Array4<f32>, ModelError> {
    let (n, _, h, w) = feat.dim();
    if (flow.offset.dim().2, flow.offset.dim().3) != (h, w) {
        return Err(ModelError::input(format!(
            "{NODE}: a {}x{} flow for a {h}x{w} level",
            flow.offset.dim().2,
            flow.offset.dim().3
        )));
    }
    // grid = arange · [2/(w-1), 2/(h-1)] - 1 + offset / 8 (f32, as torch).
    let (sx, sy) = (
        (2.0 / (w as f64 - 1.0)) as f32,
        (2.0 / (h as f64 - 1.0)) as f32,
    );
    let grid = Array4::from_shape_fn((n, h, w, 2), |(b, y, x, k)| {
        let base = if k == 0 { x as f32 * sx } else { y as f32 * sy };
        base - 1.0 + flow.offset[[b, k, y, x]] / 8.0
    });
    let warped = grid_sample(feat, grid.view(), true).ctx(|| "deform_op".into())?;
    Ok(warped * &flow.scale + &flow.bias)
}

pub fn kind() -> NodeKind {
    let d = edge_defaults();
    let spec = NodeSpec::new(
        NODE,
        "YolactEdge on a video: on keyframes YOLACT's FPN, kept per stream; between them FeatFlowNet warps the keyframe's P4, P5 to the frame (P3 from its C3), SPA refines them; then YOLACT's heads and traditional NMS",
    );
    let spec = features_input(
        spec,
        "C3, C4, C5 of the ResNet body on keyframes, C3 alone between them (resnet with keyframe_interval)",
    );
    let spec = image_input(
        spec,
        "the image from yolact_preprocess (original_size: the size of the masks and boxes)",
    )
    .output(PortSpec::new(
        "instances",
        PortKind::Instances,
        "detections in original-image pixels (integer boxes, category ids), masks u8 [N, H, W]",
    ));
    let spec = weights_params(
        spec,
        "YolactEdge",
        "",
        "name prefix of YolactEdge's tensors",
    );
    let ids: Vec<i64> = (1..d.num_classes as i64).collect();
    let spec = model_params(spec, &d, "NMS IoU threshold", &ids)
        .param(
            ParamSpec::optional(
                "num_classes",
                ParamType::Int,
                ParamValue::Int(d.num_classes as i64),
                "classes with the background (YouTube-VIS: 41)",
            )
            .range(2.0, 65536.0),
        )
        .param(ParamSpec::optional(
            "nms",
            ParamType::Str,
            ParamValue::Str("fast".into()),
            "\"fast\" (FastNMS: eval.py's default) or \"traditional\" (the Cython NMS per class of --fast_nms=False)",
        ));
    NodeKind::new(spec, |params| {
        Ok(Box::new(YolactEdgeNode::from_params(params)?) as Box<dyn Node>)
    })
}

/// `yolact_edge_vid_resnet50_config`'s settings, with `eval.py`'s FastNMS.
pub fn edge_defaults() -> YolactConfig {
    YolactConfig {
        num_classes: 41,
        split_fpn: true,
        ..YolactConfig::default()
    }
}

/// The `yolact_edge` node.
pub struct YolactEdgeNode {
    model: YolactEdge,
    in_features: Vec<String>,
    category_ids: Vec<i64>,
    keyframes: plugin_sdk::StreamState<Keyframe>,
}

impl YolactEdgeNode {
    pub fn from_params(params: &Params) -> Result<YolactEdgeNode, ModelError> {
        let traditional_nms = match params.str("nms").map_err(ModelError::Input)? {
            "fast" => false,
            "traditional" => true,
            other => {
                return Err(ModelError::param(
                    "nms",
                    format!("must be \"fast\" or \"traditional\", got \"{other}\""),
                ))
            }
        };
        let base = YolactConfig {
            num_classes: count_param(params, "num_classes")?,
            traditional_nms,
            ..edge_defaults()
        };
        let (config, in_features, category_ids) = config_from_params(params, base)?;
        let (weights, prefix) = weights_param(params)?;
        Ok(YolactEdgeNode {
            model: YolactEdge::from_weights(&weights, &prefix, config)?,
            in_features,
            category_ids,
            keyframes: plugin_sdk::StreamState::default(),
        })
    }

    pub fn model(&self) -> &YolactEdge {
        &self.model
    }

    /// One frame of `stream`: a keyframe when the features hold C4 and C5.
    pub fn run(
        &mut self,
        stream: u32,
        features: &Value,
        image: &Value,
    ) -> Result<Value, ModelError> {
        let sizes = ImageSizes::from_value(NODE, image)?;
        let keyframe = self.in_features[1..]
            .iter()
            .all(|n| features.get(n).is_some());
        let pyramid = if keyframe {
            let levels = named_levels(NODE, features, &self.in_features)?;
            let (pyramid, key) = self.model.keyframe(&levels)?;
            self.keyframes.insert(stream, key);
            pyramid
        } else {
            let c3 = named_levels(NODE, features, &self.in_features[..1])?;
            let key = self.keyframes.get(stream).ok_or_else(|| {
                ModelError::input(format!(
                    "{NODE}: stream {stream} has no keyframe yet: the features hold no {} (the resnet node decides the keyframes with keyframe_interval)",
                    self.in_features[1..].join(", ")
                ))
            })?;
            self.model.warped(c3[0], key)?.0
        };
        let raw = self.model.heads(&pyramid)?;
        let d = self.model.yolact().detections(&raw, sizes.original)?;
        instances_value(d, sizes.original, &self.category_ids)
    }
}

impl Node for YolactEdgeNode {
    fn process(&mut self, frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(
            frame.stream,
            inputs.value("features")?,
            inputs.value("image")?,
        )?;
        Ok(Outputs::one("instances", v))
    }
}
