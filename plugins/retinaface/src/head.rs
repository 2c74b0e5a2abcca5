//! `retinaface`: everything of RetinaFace after the body (biubug6/Pytorch_Retinaface @
//! b984b4b, `models/net.py`, `models/retinaface.py`, `layers/functions/prior_box.py`,
//! `utils/box_utils.py`, `utils/nms/py_cpu_nms.py`, `detect.py`):
//!
//! 1. `FPN`: per level a 1x1 convolution + BatchNorm + LeakyReLU (`output1..3`); from the
//!    coarsest level down, the next level adds the nearest-upsampled coarser one and goes
//!    through a 3x3 convolution + BatchNorm + LeakyReLU (`merge2`, `merge1`). The slope is 0.1
//!    when `out_channels <= 64` (MobileNet-0.25), 0 otherwise (ResNet-50: a ReLU).
//! 2. `SSH` per level: a 3x3 branch (`out/2` channels), a 5x5 branch (two 3x3) and a 7x7
//!    branch (three 3x3, sharing the first with the 5x5 one) of `out/4` channels each,
//!    concatenated, then ReLU.
//! 3. Heads per level, 2 anchors per position: `ClassHead` (1x1 → 2·2), `BboxHead` (→ 2·4),
//!    `LandmarkHead` (→ 2·10), each permuted to NHWC and flattened, levels concatenated;
//!    softmax over the two classes, the face score is the second.
//! 4. `PriorBox`: per level (steps 8, 16, 32; `ceil(H / step) x ceil(W / step)` positions)
//!    and position, one square anchor per min size (16, 32 / 64, 128 / 256, 512):
//!    `((j + 0.5)·step / W, (i + 0.5)·step / H, min / W, min / H)`, not clipped.
//! 5. `decode` / `decode_landm` with variances (0.1, 0.2), scaled by `(W, H)`.
//! 6. `detect.py`: scores `> confidence_threshold` (0.02), the best `top_k` (5000),
//!    `py_cpu_nms` at `nms_threshold` (0.4; `+1` pixel areas), the first `keep_top_k` (750).
//!
//! Output: `instances` with `boxes` [N, 4] (x1, y1, x2, y2), `scores` [N], `classes` (1, a
//! face) and `landmarks` [N, 5, 2] (eyes, nose, mouth corners) in original-image pixels, best
//! first.
//!
//! Weights: `fpn.*`, `ssh{1,2,3}.*`, `ClassHead.*`, `BboxHead.*`, `LandmarkHead.*` under
//! `prefix` (`""`; a DataParallel checkpoint's `module.` is found by itself). BatchNorm
//! (eps 1e-5) is folded into the convolutions at load.

use kernels::layers::resize::add_nearest_nhwc;
use kernels::layers::shape::softmax_in_place;
use kernels::layers::{Activation, Conv2d, Conv2dParams, NhwcConv2d};
use kernels::ops::nms::nms_fast_rcnn;
use kernels::weights::{Binder, Weights};
use kernels::Tensor;
use ndarray::{concatenate, Array4, ArrayView4, Axis};
use plugin_sdk::{
    FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Value,
};

use vision_common::{
    conv_bias, conv_bn, count_param, features_input, float_param, image_input, in_features_param,
    named_levels, resolve_prefix, transpose_layout, weights_param, weights_params, ImageSizes,
};
use vision_common::{LayerContext, ModelError};

/// BatchNorm2d's default eps, which RetinaFace trains with.
const BN_EPS: f32 = 1e-5;
/// `cfg['min_sizes']` and `cfg['steps']` (the same for both backbones).
const MIN_SIZES: [[f64; 2]; 3] = [[16.0, 32.0], [64.0, 128.0], [256.0, 512.0]];
const STEPS: [usize; 3] = [8, 16, 32];
/// `cfg['variance']`.
const VARIANCE: [f32; 2] = [0.1, 0.2];
const ANCHORS: usize = 2;

/// The settings of [`RetinaFaceHead`]; the defaults are `cfg_mnet`'s and `detect.py`'s.
#[derive(Clone, Debug, PartialEq)]
pub struct RetinaFaceConfig {
    /// Channels of the three body levels (`cfg['in_channel']` x 2, 4, 8).
    pub in_channels: [usize; 3],
    pub out_channels: usize,
    pub confidence_threshold: f32,
    pub top_k: usize,
    pub nms_threshold: f32,
    pub keep_top_k: usize,
}

impl Default for RetinaFaceConfig {
    fn default() -> Self {
        RetinaFaceConfig {
            in_channels: [64, 128, 256],
            out_channels: 64,
            confidence_threshold: 0.02,
            top_k: 5000,
            nms_threshold: 0.4,
            keep_top_k: 750,
        }
    }
}

/// `conv` run on `NHWC` maps, with F(4x4) Winograd where it applies (the FPN's merges and
/// SSH's first convolutions, of `out_channels` inputs).
fn nhwc(conv: Conv2d, what: &str) -> Result<NhwcConv2d, ModelError> {
    NhwcConv2d::from_conv2d_allowing_f4(&conv)
        .ctx(|| what.to_string())?
        .ok_or_else(|| ModelError::input(format!("retinaface: {what} is a grouped convolution")))
}

/// One level's SSH module, on `NHWC` maps.
#[derive(Debug)]
struct Ssh {
    name: String,
    conv3x3: NhwcConv2d,
    conv5x5_1: NhwcConv2d,
    conv5x5_2: NhwcConv2d,
    conv7x7_2: NhwcConv2d,
    conv7x7_3: NhwcConv2d,
}

impl Ssh {
    fn bind(b: &mut Binder<'_>, name: &str, c: usize, leaky: f32) -> Result<Ssh, ModelError> {
        let p = Conv2dParams::default().padding(1);
        // The final ReLU after the concatenation is applied to each branch's last
        // convolution (the same, element by element).
        let conv = |b: &mut Binder<'_>, m: &str, cin: usize, cout: usize, act: Activation| {
            let conv = conv_bn(
                b,
                &format!("{name}.{m}.0"),
                &format!("{name}.{m}.1"),
                cin,
                cout,
                3,
                p,
                BN_EPS,
                act,
            )?;
            nhwc(conv, &format!("{name}.{m}"))
        };
        let leaky = Activation::LeakyRelu(leaky);
        Ok(Ssh {
            name: name.to_string(),
            conv3x3: conv(b, "conv3X3", c, c / 2, Activation::Relu)?,
            conv5x5_1: conv(b, "conv5X5_1", c, c / 4, leaky)?,
            conv5x5_2: conv(b, "conv5X5_2", c / 4, c / 4, Activation::Relu)?,
            conv7x7_2: conv(b, "conv7X7_2", c / 4, c / 4, leaky)?,
            conv7x7_3: conv(b, "conv7x7_3", c / 4, c / 4, Activation::Relu)?,
        })
    }

    fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>, ModelError> {
        let a = self
            .conv3x3
            .forward(x)
            .ctx(|| format!("{}.conv3X3", self.name))?;
        let t = self
            .conv5x5_1
            .forward(x)
            .ctx(|| format!("{}.conv5X5_1", self.name))?;
        let b = self
            .conv5x5_2
            .forward(t.view())
            .ctx(|| format!("{}.conv5X5_2", self.name))?;
        let t = self
            .conv7x7_2
            .forward(t.view())
            .ctx(|| format!("{}.conv7X7_2", self.name))?;
        let c = self
            .conv7x7_3
            .forward(t.view())
            .ctx(|| format!("{}.conv7x7_3", self.name))?;
        concatenate(Axis(3), &[a.view(), b.view(), c.view()])
            .map_err(|e| ModelError::input(format!("{}: concatenation: {e}", self.name)))
    }
}

/// The outputs of one level's stacked heads per anchor, in this order: `ClassHead` (2),
/// `BboxHead` (4), `LandmarkHead` (10).
const HEAD_WIDTHS: [usize; 3] = [2, 4, 10];

/// RetinaFace after the body, with its weights bound.
#[derive(Debug)]
pub struct RetinaFaceHead {
    config: RetinaFaceConfig,
    /// `NCHW`: the body's levels come in `NCHW`; the laterals' outputs go on in `NHWC`.
    lateral: Vec<Conv2d>,
    merge: Vec<NhwcConv2d>,
    ssh: Vec<Ssh>,
    /// Per level, `ClassHead`, `BboxHead` and `LandmarkHead` stacked in one 1x1 convolution:
    /// each position's outputs, in `NHWC`, are the heads' permuted outputs side by side.
    heads: Vec<NhwcConv2d>,
}

/// Raw outputs over all priors: `loc` [P, 4], face `scores` [P], `landms` [P, 10].
#[derive(Clone, Debug, Default)]
pub struct RawOutputs {
    pub loc: Vec<f32>,
    pub scores: Vec<f32>,
    pub landms: Vec<f32>,
}

/// Faces in input-image pixels, best first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faces {
    pub boxes: Vec<[f32; 4]>,
    pub scores: Vec<f32>,
    pub landmarks: Vec<[f32; 10]>,
}

impl RetinaFaceHead {
    pub fn from_weights(
        weights: &Weights,
        prefix: &str,
        config: RetinaFaceConfig,
    ) -> Result<RetinaFaceHead, ModelError> {
        let c = config.out_channels;
        if c == 0 || !c.is_multiple_of(4) {
            return Err(ModelError::param(
                "out_channels",
                format!("must be a positive multiple of 4 (SSH splits it in 2 and 4), got {c}"),
            ));
        }
        let prefix = resolve_prefix(weights, prefix, &["fpn.output1.0.weight"]);
        let mut b = weights.binder(&prefix);
        let leaky = if c <= 64 { 0.1 } else { 0.0 };
        let act = Activation::LeakyRelu(leaky);
        let mut lateral = Vec::new();
        for (i, &cin) in config.in_channels.iter().enumerate() {
            let name = format!("fpn.output{}", i + 1);
            lateral.push(conv_bn(
                &mut b,
                &format!("{name}.0"),
                &format!("{name}.1"),
                cin,
                c,
                1,
                Conv2dParams::default(),
                BN_EPS,
                act,
            )?);
        }
        let mut merge = Vec::new();
        for i in 1..=2 {
            let name = format!("fpn.merge{i}");
            let conv = conv_bn(
                &mut b,
                &format!("{name}.0"),
                &format!("{name}.1"),
                c,
                c,
                3,
                Conv2dParams::default().padding(1),
                BN_EPS,
                act,
            )?;
            merge.push(nhwc(conv, &name)?);
        }
        let mut ssh = Vec::new();
        let mut heads = Vec::new();
        for i in 0..3 {
            ssh.push(Ssh::bind(&mut b, &format!("ssh{}", i + 1), c, leaky)?);
            let mut weight = Vec::new();
            let mut bias = Vec::new();
            for (name, k) in ["ClassHead", "BboxHead", "LandmarkHead"]
                .iter()
                .zip(HEAD_WIDTHS)
            {
                let name = format!("{name}.{i}.conv1x1");
                let conv = conv_bias(&mut b, &name, c, ANCHORS * k, 1, Conv2dParams::default())?;
                weight.push(conv.weight().to_owned());
                bias.extend_from_slice(conv.bias().unwrap_or(&[]));
            }
            let what = format!("ClassHead.{i}, BboxHead.{i} and LandmarkHead.{i}");
            let views: Vec<_> = weight.iter().map(|w| w.view()).collect();
            let weight = concatenate(Axis(0), &views)
                .map_err(|e| ModelError::input(format!("{what}: {e}")))?;
            let stacked = Conv2d::new(
                weight.view(),
                Some(ndarray::ArrayView1::from(&bias)),
                Conv2dParams::default(),
            )
            .ctx(|| what.clone())?;
            heads.push(nhwc(stacked, &what)?);
        }
        b.ignore("num_batches_tracked");
        b.ignore_module("body.");
        b.finish()?;
        Ok(RetinaFaceHead {
            config,
            lateral,
            merge,
            ssh,
            heads,
        })
    }

    pub fn config(&self) -> &RetinaFaceConfig {
        &self.config
    }

    /// The network's outputs over all priors from the body's three levels (finest first) of
    /// an `(h, w)` input.
    pub fn raw(
        &self,
        levels: &[ArrayView4<'_, f32>],
        (h, w): (usize, usize),
    ) -> Result<RawOutputs, ModelError> {
        if levels.len() != 3 {
            return Err(ModelError::input(format!(
                "retinaface: takes 3 feature levels (strides 8, 16, 32), got {}",
                levels.len()
            )));
        }
        for ((l, &cin), &step) in levels.iter().zip(&self.config.in_channels).zip(&STEPS) {
            let (_, c, fh, fw) = l.dim();
            let want = (h.div_ceil(step), w.div_ceil(step));
            if c != cin || (fh, fw) != want {
                return Err(ModelError::input(format!(
                    "retinaface: a feature level is {c} x {fh} x {fw}, the head expects {cin} x {} x {} (stride {step} of a {h}x{w} image); check `in_channels` and the backbone",
                    want.0, want.1
                )));
            }
        }
        // FPN: the laterals in NCHW (the body's layout), then everything in NHWC.
        let mut outs: Vec<Array4<f32>> = Vec::with_capacity(3);
        for (i, (conv, l)) in self.lateral.iter().zip(levels).enumerate() {
            let lateral = conv.forward(*l).ctx(|| format!("fpn.output{}", i + 1))?;
            outs.push(transpose_layout(lateral.view(), false)?);
        }
        for i in (0..2).rev() {
            let (done, rest) = outs.split_at_mut(i + 1);
            add_nearest_nhwc(&mut done[i], rest[0].view()).ctx(|| "FPN upsampling".into())?;
            outs[i] = self.merge[i]
                .forward(outs[i].view())
                .ctx(|| format!("fpn.merge{}", i + 1))?;
        }
        // SSH and heads, levels concatenated in order: each position's anchors, each anchor's
        // two class logits, 4 offsets and 10 landmark offsets (the heads' `permute(0, 2, 3, 1)`).
        let mut raw = RawOutputs::default();
        let [class_w, bbox_w, landmark_w] = HEAD_WIDTHS.map(|k| ANCHORS * k);
        for (i, feat) in outs.iter().enumerate() {
            let x = self.ssh[i].forward(feat.view())?;
            let out = self.heads[i]
                .forward(x.view())
                .ctx(|| format!("ClassHead.{i}, BboxHead.{i} and LandmarkHead.{i}"))?;
            let out = out
                .as_slice()
                .ok_or_else(|| ModelError::input("retinaface: heads' output not contiguous"))?;
            for position in out.chunks_exact(class_w + bbox_w + landmark_w) {
                let (class, rest) = position.split_at(class_w);
                let (bbox, landmarks) = rest.split_at(bbox_w);
                for pair in class.chunks_exact(2) {
                    let mut pair = [pair[0], pair[1]];
                    softmax_in_place(&mut pair);
                    raw.scores.push(pair[1]);
                }
                raw.loc.extend_from_slice(bbox);
                raw.landms.extend_from_slice(landmarks);
            }
        }
        Ok(raw)
    }

    /// Faces of an `(h, w)` input from the body's levels: [`RetinaFaceHead::raw`], priors,
    /// decoding and `detect.py`'s post-processing.
    pub fn forward(
        &self,
        levels: &[ArrayView4<'_, f32>],
        size: (usize, usize),
    ) -> Result<Faces, ModelError> {
        let raw = self.raw(levels, size)?;
        Ok(self.postprocess(&raw, size))
    }

    /// Decoding, thresholds, top-k and NMS, as `detect.py` with `resize = 1`.
    pub fn postprocess(&self, raw: &RawOutputs, (h, w): (usize, usize)) -> Faces {
        let priors = priors(h, w);
        let (wf, hf) = (w as f32, h as f32);
        let cfg = &self.config;
        let mut cand: Vec<usize> = (0..raw.scores.len().min(priors.len()))
            .filter(|&i| raw.scores[i] > cfg.confidence_threshold)
            .collect();
        cand.sort_by(|&a, &b| raw.scores[b].total_cmp(&raw.scores[a]).then(a.cmp(&b)));
        cand.truncate(cfg.top_k);
        let boxes: Vec<[f32; 4]> = cand
            .iter()
            .map(|&i| {
                let b = decode(&raw.loc[4 * i..4 * i + 4], &priors[i]);
                [b[0] * wf, b[1] * hf, b[2] * wf, b[3] * hf]
            })
            .collect();
        let scores: Vec<f32> = cand.iter().map(|&i| raw.scores[i]).collect();
        let mut faces = Faces::default();
        for k in nms_fast_rcnn(&boxes, &scores, cfg.nms_threshold, cfg.keep_top_k) {
            let i = cand[k];
            let p = &priors[i];
            let mut lm = [0f32; 10];
            for (j, v) in lm.iter_mut().enumerate() {
                let (c, s, scale) = if j % 2 == 0 {
                    (p[0], p[2], wf)
                } else {
                    (p[1], p[3], hf)
                };
                *v = (c + raw.landms[10 * i + j] * VARIANCE[0] * s) * scale;
            }
            faces.boxes.push(boxes[k]);
            faces.scores.push(scores[k]);
            faces.landmarks.push(lm);
        }
        faces
    }
}

/// `PriorBox(cfg, image_size=(h, w)).forward()`: `[cx, cy, s_kx, s_ky]` per prior, in
/// Python's doubles rounded to f32, as `torch.Tensor(anchors)` stores them.
pub fn priors(h: usize, w: usize) -> Vec<[f32; 4]> {
    let mut out = Vec::new();
    for (k, &step) in STEPS.iter().enumerate() {
        let (fh, fw) = (h.div_ceil(step), w.div_ceil(step));
        for i in 0..fh {
            for j in 0..fw {
                for &min_size in &MIN_SIZES[k] {
                    out.push([
                        ((j as f64 + 0.5) * step as f64 / w as f64) as f32,
                        ((i as f64 + 0.5) * step as f64 / h as f64) as f32,
                        (min_size / w as f64) as f32,
                        (min_size / h as f64) as f32,
                    ]);
                }
            }
        }
    }
    out
}

/// `box_utils.decode` for one prior, in f32 and torch's operation order: centre
/// `p_xy + (loc_xy · 0.1) · p_wh`, size `p_wh · exp(loc_wh · 0.2)`, then corners
/// `xy1 = c - wh / 2`, `xy2 = wh + xy1` (normalised to the image).
fn decode(loc: &[f32], p: &[f32; 4]) -> [f32; 4] {
    let cx = p[0] + loc[0] * VARIANCE[0] * p[2];
    let cy = p[1] + loc[1] * VARIANCE[0] * p[3];
    let bw = p[2] * (loc[2] * VARIANCE[1]).exp();
    let bh = p[3] * (loc[3] * VARIANCE[1]).exp();
    let (x1, y1) = (cx - bw / 2.0, cy - bh / 2.0);
    [x1, y1, bw + x1, bh + y1]
}

pub fn kind() -> NodeKind {
    let d = RetinaFaceConfig::default();
    let spec = NodeSpec::new(
        "retinaface",
        "RetinaFace after the body: FPN, SSH, class/box/landmark heads, priors, decoding, threshold, top-k and py_cpu_nms",
    );
    let spec = features_input(
        spec,
        "the body's three levels named in `in_features` (strides 8, 16, 32)",
    );
    let spec = image_input(spec, "the image from retinaface_preprocess (its size sets the priors)")
        .output(PortSpec::new(
            "instances",
            PortKind::Instances,
            "faces best first: boxes [N, 4], scores [N], classes (1) and landmarks [N, 5, 2], in original-image pixels",
        ));
    let spec = weights_params(
        spec,
        "RetinaFace's fpn, ssh1..3 and heads",
        "",
        "name prefix of the heads' tensors (`module.` of a DataParallel checkpoint is found by itself)",
    );
    let spec = spec
        .param(ParamSpec::optional(
            "in_features",
            ParamType::StrList,
            ParamValue::StrList(vec!["c3".into(), "c4".into(), "c5".into()]),
            "the body's levels, finest first (mobilenet_v1's or resnet's c3..c5)",
        ))
        .param(ParamSpec::optional(
            "in_channels",
            ParamType::IntList,
            ParamValue::IntList(d.in_channels.iter().map(|&c| c as i64).collect()),
            "channels of the three levels: 64, 128, 256 (MobileNet-0.25) or 512, 1024, 2048 (ResNet-50)",
        ))
        .param(
            ParamSpec::optional(
                "out_channels",
                ParamType::Int,
                ParamValue::Int(d.out_channels as i64),
                "FPN and SSH channels: 64 (MobileNet-0.25) or 256 (ResNet-50)",
            )
            .range(4.0, 4096.0),
        )
        .param(
            ParamSpec::optional(
                "confidence_threshold",
                ParamType::Float,
                ParamValue::Float(d.confidence_threshold as f64),
                "faces need a score above this (detect.py's --confidence_threshold)",
            )
            .range(0.0, 1.0),
        )
        .param(
            ParamSpec::optional(
                "top_k",
                ParamType::Int,
                ParamValue::Int(d.top_k as i64),
                "best candidates kept before NMS",
            )
            .range(1.0, 1e7),
        )
        .param(
            ParamSpec::optional(
                "nms_threshold",
                ParamType::Float,
                ParamValue::Float(vision_common::f32_value(d.nms_threshold)),
                "py_cpu_nms IoU threshold (a face is dropped above it)",
            )
            .range(0.0, 1.0),
        )
        .param(
            ParamSpec::optional(
                "keep_top_k",
                ParamType::Int,
                ParamValue::Int(d.keep_top_k as i64),
                "faces kept after NMS",
            )
            .range(1.0, 1e7),
        );
    NodeKind::new(spec, |params| {
        Ok(Box::new(RetinaFaceNode::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `retinaface` node.
#[derive(Debug)]
pub struct RetinaFaceNode {
    model: RetinaFaceHead,
    in_features: Vec<String>,
}

impl RetinaFaceNode {
    pub fn from_params(params: &Params) -> Result<RetinaFaceNode, ModelError> {
        let in_features = in_features_param(params)?;
        let in_channels = match params
            .int_list("in_channels")
            .map_err(ModelError::Input)?
            .as_slice()
        {
            &[a, b, c] if a > 0 && b > 0 && c > 0 => [a as usize, b as usize, c as usize],
            other => {
                return Err(ModelError::param(
                    "in_channels",
                    format!("must be three positive channel counts, got {other:?}"),
                ))
            }
        };
        let config = RetinaFaceConfig {
            in_channels,
            out_channels: count_param(params, "out_channels")?,
            confidence_threshold: float_param(params, "confidence_threshold")?,
            top_k: count_param(params, "top_k")?,
            nms_threshold: float_param(params, "nms_threshold")?,
            keep_top_k: count_param(params, "keep_top_k")?,
        };
        let (weights, prefix) = weights_param(params)?;
        Ok(RetinaFaceNode {
            model: RetinaFaceHead::from_weights(&weights, &prefix, config)?,
            in_features,
        })
    }

    pub fn model(&self) -> &RetinaFaceHead {
        &self.model
    }

    /// The node's computation: the faces in original-image pixels.
    pub fn run(&self, features: &Value, image: &Value) -> Result<Value, ModelError> {
        let sizes = ImageSizes::from_value("retinaface", image)?;
        // The body's stages: their channels differ (`raw` checks them against `in_channels`).
        let levels = named_levels("retinaface", features, &self.in_features)?;
        let faces = self.model.forward(&levels, sizes.padded)?;
        // detect.py's `/ resize`: back from the network's input to the photo.
        let (rh, rw) = sizes.resized;
        let (oh, ow) = sizes.original;
        let (sx, sy) = (ow as f32 / rw as f32, oh as f32 / rh as f32);
        let n = faces.scores.len();
        let boxes: Vec<f32> = faces
            .boxes
            .iter()
            .flat_map(|b| [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy])
            .collect();
        let landmarks: Vec<f32> = faces
            .landmarks
            .iter()
            .flat_map(|l| {
                l.chunks_exact(2)
                    .flat_map(|p| [p[0] * sx, p[1] * sy])
                    .collect::<Vec<_>>()
            })
            .collect();
        Ok(Value::new(PortKind::Instances)
            .with("boxes", Tensor::from_vec(&[n, 4], boxes)?)
            .with("scores", Tensor::from_vec(&[n], faces.scores)?)
            .with("classes", Tensor::from_vec(&[n], vec![1i64; n])?)
            .with("landmarks", Tensor::from_vec(&[n, 5, 2], landmarks)?))
    }
}

impl Node for RetinaFaceNode {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(inputs.value("features")?, inputs.value("image")?)?;
        Ok(Outputs::one("instances", v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PriorBox's order (level, row, column, min size) and values for a 16x24 image.
    #[test]
    fn priors_follow_prior_box() {
        let p = priors(16, 24);
        // Level 0: 2 x 3 positions x 2 sizes; level 1: 1 x 2 x 2; level 2: 1 x 1 x 2.
        assert_eq!(p.len(), 12 + 4 + 2);
        assert_eq!(p[0], [4.0 / 24.0, 4.0 / 16.0, 16.0 / 24.0, 1.0]);
        assert_eq!(p[1], [4.0 / 24.0, 4.0 / 16.0, 32.0 / 24.0, 2.0]);
        assert_eq!(p[2][0], 12.0 / 24.0);
        assert_eq!(p[6][1], 12.0 / 16.0);
        assert_eq!(p[12], [8.0 / 24.0, 8.0 / 16.0, 64.0 / 24.0, 4.0]);
        assert_eq!(p[16], [16.0 / 24.0, 16.0 / 16.0, 256.0 / 24.0, 16.0]);
    }

    /// A zero offset decodes to the prior itself (centre, size) as corners.
    #[test]
    fn zero_offsets_decode_to_the_prior() {
        let b = decode(&[0.0; 4], &[0.5, 0.25, 0.2, 0.1]);
        for (a, want) in b.iter().zip([0.4, 0.2, 0.6, 0.3]) {
            assert!((a - want).abs() < 1e-6, "{b:?}");
        }
    }
}
