//! `yolact`: everything of YOLACT after the ResNet body, at inference (`yolact_base_config`,
//! `yolact_resnet50_config`):
//!
//! 1. `FPN`: 1x1 lateral convolutions (`lat_layers`, stored in reverse: `lat_layers.0` reads
//!    C5), a top-down sum with bilinear upsampling to the next level's size
//!    (`align_corners=False`), 3x3 `pred_layers` + ReLU (`pred_layers.0` gives P5), and two
//!    3x3 stride-2 `downsample_layers` from P5 for P6 and P7 (no ReLU).
//! 2. Protonet on P3 (`mask_proto_net`): three 3x3 convolutions + ReLU, 2x bilinear
//!    upsampling, a 3x3 convolution + ReLU, a 1x1 convolution to 32 prototypes, ReLU
//!    (`mask_proto_prototype_activation`): `[2·h3, 2·w3, 32]`.
//! 3. The prediction module shared by the five levels (`prediction_layers.0`): `upfeature`
//!    (3x3 + ReLU), then 3x3 box, class and coefficient convolutions for 3 priors per cell
//!    (run as one convolution with their output channels stacked); class scores are the
//!    softmax over 81 classes, coefficients `tanh`.
//! 4. Priors per level (`make_priors`): cell centres `((i + 0.5) / w, (j + 0.5) / h)`, for
//!    each scale and each aspect ratio `ar` (1, 1/2, 2): width `scale·sqrt(ar) / max_size`
//!    and the height equal to the width (`use_square_anchors`, kept for compatibility with
//!    the released weights); cells row by row, priors of a cell in order.
//! 5. `decode` (variances 0.1, 0.2), `Detect` (priors whose best non-background score is
//!    `> 0.05`, FastNMS per class with the top 200, IoU 0.5, 100 detections overall:
//!    [`kernels::ops::yolact`]).
//! 6. `postprocess` (`crop_masks=True`, no score threshold): masks `sigmoid(P·c)` cropped to
//!    the box padded by one prototype pixel, resized bilinearly to the photo and `> 0.5`;
//!    boxes scaled to the photo, clamped, and truncated to integers (`boxes.long()`).
//!
//! Output: `instances` in original-image pixels, `classes` the COCO category ids of
//! `category_ids` (YOLACT's 80 classes in order), masks u8 `[N, H, W]`.
//!
//! Weights: YOLACT's names at the top level of the checkpoint (`fpn.*`, `proto_net.*`,
//! `prediction_layers.0.*`); `backbone.*` is the `resnet` node's, `semantic_seg_conv` is
//! training-only.

use kernels::layers::resize::{resize, resize_nhwc, resize_window};
use kernels::layers::shape::{softmax_in_place, transpose_2d_batched};
use kernels::layers::ResizeMode;
use kernels::layers::{Activation, Conv2d, Conv2dParams, NhwcConv2d};
use kernels::ops::yolact::{
    assemble_masks, detect, sanitize_coordinates, scaled_back, traditional_nms, FastNmsConfig,
};
use kernels::weights::Weights;
use kernels::Tensor;
use ndarray::{concatenate, Array2, Array3, Array4, ArrayView4, Axis, Ix1, Ix4};
use plugin_sdk::{
    FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Value,
};
use rayon::prelude::*;

use vision_common::{
    conv_bias, count_param, features_input, float_param, image_input, named_levels, resolve_prefix,
    transpose_layout, weights_param, weights_params, ImageSizes,
};
use vision_common::{LayerContext, ModelError};

const NODE: &str = "yolact";

const BILINEAR: ResizeMode = ResizeMode::Bilinear {
    align_corners: false,
};

pub use vision_common::COCO_CATEGORY_IDS;

/// The settings of [`Yolact`]; the defaults are `yolact_base_config`'s.
#[derive(Clone, Debug, PartialEq)]
pub struct YolactConfig {
    /// Channels of C3, C4, C5 (ResNet-50/101: 512, 1024, 2048).
    pub in_channels: Vec<usize>,
    /// `fpn.num_features`.
    pub num_features: usize,
    /// Classes with the background (81).
    pub num_classes: usize,
    /// Prototypes (32).
    pub mask_dim: usize,
    /// `max_size`: the side of the square input the prior sizes are relative to.
    pub max_size: usize,
    /// `pred_scales`, one per level P3..P7.
    pub scales: Vec<f64>,
    /// `pred_aspect_ratios` of every level.
    pub aspect_ratios: Vec<f64>,
    /// `nms_conf_thresh`.
    pub conf_thresh: f32,
    pub nms: FastNmsConfig,
    /// YolactEdge's `traditional_nms` (its configs set `use_fast_nms: False`) instead of
    /// FastNMS; `nms.iou_threshold` and `nms.max_num_detections` apply to both.
    pub traditional_nms: bool,
    /// YolactEdge splits the FPN in two modules: `fpn_phase_1.lat_layers` and
    /// `fpn_phase_2.{pred,downsample}_layers` instead of `fpn.*`.
    pub split_fpn: bool,
}

impl Default for YolactConfig {
    fn default() -> Self {
        YolactConfig {
            in_channels: vec![512, 1024, 2048],
            num_features: 256,
            num_classes: 81,
            mask_dim: 32,
            max_size: 550,
            scales: vec![24.0, 48.0, 96.0, 192.0, 384.0],
            aspect_ratios: vec![1.0, 0.5, 2.0],
            conf_thresh: 0.05,
            nms: FastNmsConfig::default(),
            traditional_nms: false,
            split_fpn: false,
        }
    }
}

/// YOLACT with its weights bound.
///
/// The laterals read the `NCHW` features C3..C5; the top-down sums are made there, and
/// everything after them (the FPN's 3x3 convolutions, the protonet and the prediction head:
/// nine tenths of the head's work, most of it 3x3 convolutions of 256 channels) runs in
/// `NHWC` ([`NhwcConv2d`]), whose Winograd products go through the packed GEMM. The pyramid
/// P3..P7 is `[N, H, W, C]`.
#[derive(Debug)]
pub struct Yolact {
    config: YolactConfig,
    /// C3, C4, C5 order (the checkpoint stores them reversed).
    lateral: Vec<Conv2d>,
    /// P3, P4, P5 order, ReLU fused.
    output: Vec<NhwcConv2d>,
    downsample: Vec<NhwcConv2d>,
    /// `proto_net.{0,2,4}` before the upsampling, `proto_net.8` and `proto_net.10` after.
    proto_before: Vec<NhwcConv2d>,
    proto_after: Vec<NhwcConv2d>,
    upfeature: NhwcConv2d,
    /// `bbox_layer`, `conf_layer` and `mask_layer` stacked.
    predict: NhwcConv2d,
}

/// `conv` run on `NHWC` maps, with F(4x4) Winograd where it applies, as the `NCHW`
/// convolutions that these replaced took it (on P3 and the protonet's maps the same bits).
fn nhwc(conv: Conv2d, what: &str) -> Result<NhwcConv2d, ModelError> {
    NhwcConv2d::from_conv2d_allowing_f4(&conv)
        .ctx(|| what.to_string())?
        .ok_or_else(|| ModelError::input(format!("{NODE}: {what} is a grouped convolution")))
}

/// The raw outputs of the network over all priors, as `Yolact.forward` gives them to `Detect`.
#[derive(Clone, Debug)]
pub struct RawOutputs {
    /// `[N, 4]` box regressions.
    pub loc: Array2<f32>,
    /// `[N, num_classes]` softmax scores.
    pub conf: Array2<f32>,
    /// `[N, mask_dim]` coefficients after tanh.
    pub mask: Array2<f32>,
    /// `[h, w, mask_dim]` prototypes.
    pub proto: Array3<f32>,
    /// `[N, 4]` priors (cx, cy, w, h).
    pub priors: Array2<f32>,
}

/// Final detections in original-image pixels.
#[derive(Clone, Debug)]
pub struct Detections {
    pub boxes: Vec<[f32; 4]>,
    /// The decoded boxes, relative to the input, before clamping (as `Detect` returns them).
    pub boxes_relative: Vec<[f32; 4]>,
    /// Class index 0..num_classes-2 (background excluded).
    pub classes: Vec<usize>,
    pub scores: Vec<f32>,
    /// `[N, H, W]` 0/1.
    pub masks: Array3<u8>,
}

fn ix4(t: &Tensor) -> Result<ArrayView4<'_, f32>, ModelError> {
    t.view::<f32>()?
        .into_dimensionality::<Ix4>()
        .map_err(|e| ModelError::input(e.to_string()))
}

impl Yolact {
    pub fn from_weights(
        weights: &Weights,
        prefix: &str,
        config: YolactConfig,
    ) -> Result<Yolact, ModelError> {
        if config.in_channels.len() != 3 || config.scales.len() != 5 {
            return Err(ModelError::param(
                "in_channels",
                "YOLACT reads three levels (C3..C5) and predicts on five (P3..P7)",
            ));
        }
        let (lat, pred, down) = if config.split_fpn {
            (
                "fpn_phase_1.lat_layers",
                "fpn_phase_2.pred_layers",
                "fpn_phase_2.downsample_layers",
            )
        } else {
            ("fpn.lat_layers", "fpn.pred_layers", "fpn.downsample_layers")
        };
        let prefix = resolve_prefix(weights, prefix, &[&format!("{lat}.0.weight")]);
        let mut b = weights.binder(&prefix);
        let f = config.num_features;
        let pad = |p| Conv2dParams::default().padding(p);
        let n = config.in_channels.len();
        let mut lateral = Vec::new();
        let mut output = Vec::new();
        for (i, &cin) in config.in_channels.iter().enumerate() {
            // lat_layers and pred_layers are stored for C5 first.
            let j = n - 1 - i;
            lateral.push(conv_bias(&mut b, &format!("{lat}.{j}"), cin, f, 1, pad(0))?);
            let name = format!("{pred}.{j}");
            let conv = conv_bias(&mut b, &name, f, f, 3, pad(1))?;
            output.push(nhwc(conv.with_activation(Activation::Relu), &name)?);
        }
        let downsample = (0..2)
            .map(|i| {
                let name = format!("{down}.{i}");
                let stride2 = Conv2dParams::default().stride(2).padding(1);
                nhwc(conv_bias(&mut b, &name, f, f, 3, stride2)?, &name)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut relu = |name: &str, cout: usize, k: usize| {
            let conv = conv_bias(&mut b, name, f, cout, k, pad(k / 2))?;
            nhwc(conv.with_activation(Activation::Relu), name)
        };
        let proto_before = [0, 2, 4]
            .iter()
            .map(|i| relu(&format!("proto_net.{i}"), f, 3))
            .collect::<Result<Vec<_>, ModelError>>()?;
        let proto_after = vec![
            relu("proto_net.8", f, 3)?,
            // mask_proto_prototype_activation: relu.
            relu("proto_net.10", config.mask_dim, 1)?,
        ];
        let head = "prediction_layers.0";
        let upfeature = relu(&format!("{head}.upfeature.0"), f, 3)?;
        let priors = config.aspect_ratios.len();
        let widths = [4, config.num_classes, config.mask_dim].map(|w| w * priors);
        let mut ws = Vec::new();
        let mut bs = Vec::new();
        for (layer, cout) in ["bbox_layer", "conf_layer", "mask_layer"]
            .iter()
            .zip(widths)
        {
            ws.push(b.take(&format!("{head}.{layer}.weight"), &[cout, f, 3, 3]));
            bs.push(b.take(&format!("{head}.{layer}.bias"), &[cout]));
        }
        b.ignore_module("backbone.");
        b.ignore_module("semantic_seg_conv.");
        // YolactEdge's flow modules are its own node's (edge.rs).
        for module in ["flow_net.", "flow_net_pre_convs.", "spa."] {
            b.ignore_module(module);
        }
        b.finish()?;
        let w4 = ws.iter().map(ix4).collect::<Result<Vec<_>, _>>()?;
        let b1 = bs
            .iter()
            .map(|t| {
                t.view::<f32>()?
                    .into_dimensionality::<Ix1>()
                    .map_err(|e| ModelError::input(e.to_string()))
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let weight = concatenate(Axis(0), &w4).map_err(|e| ModelError::input(e.to_string()))?;
        let bias = concatenate(Axis(0), &b1).map_err(|e| ModelError::input(e.to_string()))?;
        let what = format!("{head} (bbox, conf and mask layers)");
        let predict = Conv2d::new(weight.view(), Some(bias.view()), pad(1)).ctx(|| what.clone())?;
        let predict = nhwc(predict, &what)?;
        Ok(Yolact {
            config,
            lateral,
            output,
            downsample,
            proto_before,
            proto_after,
            upfeature,
            predict,
        })
    }

    pub fn config(&self) -> &YolactConfig {
        &self.config
    }

    /// P3..P7 (`[N, H, W, C]`) from C3..C5 (`[N, C, H, W]`).
    pub fn fpn(&self, levels: &[ArrayView4<'_, f32>]) -> Result<Vec<Array4<f32>>, ModelError> {
        let (merged, _) = self.fpn_phase_1(levels)?;
        self.fpn_phase_2(merged)
    }

    /// The C3 lateral (`lat_layers` of C3): YolactEdge recomputes it on every frame.
    pub fn lateral_c3(&self, c3: ArrayView4<'_, f32>) -> Result<Array4<f32>, ModelError> {
        self.lateral[0]
            .forward(c3)
            .ctx(|| "fpn lat_layers (C3)".into())
    }

    /// The FPN before its 3x3 convolutions (YolactEdge's `FPN_phase_1`): the top-down sums of
    /// C3..C5's laterals (P3, P4, P5 order), and the C3 lateral.
    pub fn fpn_phase_1(
        &self,
        levels: &[ArrayView4<'_, f32>],
    ) -> Result<(Vec<Array4<f32>>, Array4<f32>), ModelError> {
        if levels.len() != 3 {
            return Err(ModelError::input(format!(
                "{NODE}: expected three feature levels (C3, C4, C5), got {}",
                levels.len()
            )));
        }
        for (i, (l, &c)) in levels.iter().zip(&self.config.in_channels).enumerate() {
            if l.dim().1 != c {
                return Err(ModelError::input(format!(
                    "{NODE}: feature level {} has {} channels, the checkpoint's FPN expects {c}",
                    i + 3,
                    l.dim().1
                )));
            }
        }
        let mut merged: Vec<Array4<f32>> = vec![Array4::zeros((0, 0, 0, 0)); 3];
        let mut lateral_c3 = Array4::zeros((0, 0, 0, 0));
        let mut x: Option<Array4<f32>> = None;
        for j in (0..3).rev() {
            let lat = self.lateral[j]
                .forward(levels[j])
                .ctx(|| format!("fpn.lat_layers.{}", 2 - j))?;
            if j == 0 {
                lateral_c3 = lat.clone();
            }
            let sum = match x {
                None => lat,
                Some(prev) => {
                    let (_, _, h, w) = lat.dim();
                    let up = resize(prev.view(), (h, w), BILINEAR)
                        .ctx(|| "fpn (top-down upsampling)".into())?;
                    up + &lat
                }
            };
            merged[j] = sum.clone();
            x = Some(sum);
        }
        Ok((merged, lateral_c3))
    }

    /// The FPN's 3x3 convolutions with ReLU on P3, P4, P5 and the two downsampling
    /// convolutions (YolactEdge's `FPN_phase_2`): P3..P7, `[N, H, W, C]`, from the top-down
    /// sums (`[N, C, H, W]`).
    pub fn fpn_phase_2(&self, merged: Vec<Array4<f32>>) -> Result<Vec<Array4<f32>>, ModelError> {
        let mut out = Vec::with_capacity(5);
        for (j, m) in merged.iter().enumerate() {
            let m = transpose_layout(m.view(), false)?;
            out.push(
                self.output[j]
                    .forward(m.view())
                    .ctx(|| format!("fpn.pred_layers.{}", 2 - j))?,
            );
        }
        for (i, d) in self.downsample.iter().enumerate() {
            let last = out
                .last()
                .map(|a| a.view())
                .ok_or_else(|| ModelError::input("no level"))?;
            let next = d
                .forward(last)
                .ctx(|| format!("fpn.downsample_layers.{i}"))?;
            out.push(next);
        }
        Ok(out)
    }

    /// The prototypes `[2·h, 2·w, mask_dim]` from P3 (`[1, h, w, C]`).
    pub fn prototypes(&self, p3: ArrayView4<'_, f32>) -> Result<Array3<f32>, ModelError> {
        let mut x = p3.to_owned();
        for (i, conv) in self.proto_before.iter().enumerate() {
            x = conv
                .forward(x.view())
                .ctx(|| format!("proto_net.{}", 2 * i))?;
        }
        // `F.interpolate(scale_factor=2)`: its kernel's scale 1/2 is also in/out, so the
        // resize to twice the size is the same.
        let (_, h, w, _) = x.dim();
        x = resize_nhwc(x.view(), (2 * h, 2 * w), BILINEAR)
            .ctx(|| "proto_net.6 (2x bilinear)".into())?;
        for (conv, i) in self.proto_after.iter().zip([8, 10]) {
            x = conv.forward(x.view()).ctx(|| format!("proto_net.{i}"))?;
        }
        Ok(x.index_axis_move(Axis(0), 0))
    }

    /// `make_priors` of one level of `h x w` cells: `[h·w·A, 4]` (cx, cy, w, h).
    pub fn priors(&self, level: usize, h: usize, w: usize) -> Vec<[f32; 4]> {
        let scale = self.config.scales[level];
        let mut out = Vec::with_capacity(h * w * self.config.aspect_ratios.len());
        for j in 0..h {
            for i in 0..w {
                // Python floats (f64), stored as f32 by torch.Tensor.
                let x = (i as f64 + 0.5) / w as f64;
                let y = (j as f64 + 0.5) / h as f64;
                for &ar in &self.config.aspect_ratios {
                    let side = scale * ar.sqrt() / self.config.max_size as f64;
                    out.push([x as f32, y as f32, side as f32, side as f32]);
                }
            }
        }
        out
    }

    /// The network's outputs over all priors.
    pub fn raw(&self, levels: &[ArrayView4<'_, f32>]) -> Result<RawOutputs, ModelError> {
        let pyramid = self.fpn(levels)?;
        self.heads(&pyramid)
    }

    /// The protonet and the prediction head on P3..P7 (`[N, H, W, C]`).
    pub fn heads(&self, pyramid: &[Array4<f32>]) -> Result<RawOutputs, ModelError> {
        let proto = self.prototypes(pyramid[0].view())?;
        let a = self.config.aspect_ratios.len();
        let (nc, md) = (self.config.num_classes, self.config.mask_dim);
        let per_prior = 4 + nc + md;
        // Level after level, each convolution split between the threads: P3 is three
        // quarters of the work, so levels in parallel would leave threads idle.
        let predictions = pyramid
            .iter()
            .map(|p| {
                let x = self
                    .upfeature
                    .forward(p.view())
                    .ctx(|| "prediction_layers.0.upfeature".into())?;
                self.predict
                    .forward(x.view())
                    .ctx(|| "prediction_layers.0 (bbox, conf, mask layers)".into())
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        // Per cell of each level, per prior: its 4 box, `nc` class and `md` coefficient
        // values, read from the cell's channels (`[bbox; a][conf; a][mask; a]`) into the
        // rows of all priors, with the softmax and tanh, cells in parallel.
        let total = predictions
            .iter()
            .map(|y| y.dim().1 * y.dim().2)
            .sum::<usize>()
            * a;
        let mut loc = Array2::<f32>::zeros((total, 4));
        let mut conf = Array2::<f32>::zeros((total, nc));
        let mut mask = Array2::<f32>::zeros((total, md));
        let mut priors = Array2::<f32>::zeros((total, 4));
        let contiguous = || ModelError::input(format!("{NODE}: non-contiguous outputs"));
        let (loc_s, conf_s, mask_s, prior_s) = (
            loc.as_slice_mut().ok_or_else(contiguous)?,
            conf.as_slice_mut().ok_or_else(contiguous)?,
            mask.as_slice_mut().ok_or_else(contiguous)?,
            priors.as_slice_mut().ok_or_else(contiguous)?,
        );
        let mut first = 0;
        for (l, y) in predictions.iter().enumerate() {
            let (_, h, w, ch) = y.dim();
            let ys = y.as_slice().ok_or_else(contiguous)?;
            if ch != per_prior * a {
                return Err(ModelError::input(format!(
                    "{NODE}: the prediction layer gave {ch} channels, not {}",
                    per_prior * a
                )));
            }
            // The level's priors, and their values in rows of `width`.
            let rows = first..first + h * w * a;
            first = rows.end;
            let span = |width: usize| rows.start * width..rows.end * width;
            ys.par_chunks(ch)
                .zip(loc_s[span(4)].par_chunks_mut(a * 4))
                .zip(conf_s[span(nc)].par_chunks_mut(a * nc))
                .zip(mask_s[span(md)].par_chunks_mut(a * md))
                .for_each(|(((cell, lo), co), ma)| {
                    lo.copy_from_slice(&cell[..4 * a]);
                    co.copy_from_slice(&cell[4 * a..(4 + nc) * a]);
                    co.chunks_mut(nc).for_each(softmax_in_place);
                    for (m, &v) in ma.iter_mut().zip(&cell[(4 + nc) * a..]) {
                        *m = v.tanh();
                    }
                });
            for (dst, p) in prior_s[span(4)].chunks_mut(4).zip(self.priors(l, h, w)) {
                dst.copy_from_slice(&p);
            }
        }
        Ok(RawOutputs {
            loc,
            conf,
            mask,
            proto,
            priors,
        })
    }

    /// `Detect` and `postprocess` on the raw outputs: detections in `original` `(H, W)` pixels.
    pub fn detections(
        &self,
        raw: &RawOutputs,
        original: (usize, usize),
    ) -> Result<Detections, ModelError> {
        let boxes: Vec<[f32; 4]> = raw
            .loc
            .outer_iter()
            .zip(raw.priors.outer_iter())
            .map(|(l, p)| decode(&[l[0], l[1], l[2], l[3]], &[p[0], p[1], p[2], p[3]]))
            .collect();
        // Detect: conf_preds transposed to [classes, priors], background dropped.
        let (p, nc) = raw.conf.dim();
        let conf = raw
            .conf
            .as_slice()
            .ok_or_else(|| ModelError::input(format!("{NODE}: non-contiguous scores")))?;
        let by_class = Array2::from_shape_vec((nc, p), transpose_2d_batched(conf, 1, p, nc))
            .map_err(|e| ModelError::input(e.to_string()))?;
        let scores = by_class.slice(ndarray::s![1.., ..]);
        let dets = if self.config.traditional_nms {
            detect_traditional(&boxes, scores, &self.config)
        } else {
            detect(&boxes, scores, self.config.conf_thresh, &self.config.nms)
        }
        .map_err(|e| ModelError::input(format!("{NODE}: {e}")))?;
        let (h, w) = original;
        let max_size = self.config.max_size as f32;
        let kept: Vec<[f32; 4]> = dets
            .iter()
            .map(|d| {
                if self.config.traditional_nms {
                    scaled_back(&boxes[d.index], max_size)
                } else {
                    boxes[d.index]
                }
            })
            .collect();
        let coeffs = raw
            .mask
            .select(Axis(0), &dets.iter().map(|d| d.index).collect::<Vec<_>>());
        let soft = assemble_masks(raw.proto.view(), coeffs.view(), &kept, true)
            .map_err(|e| ModelError::input(format!("{NODE}: {e}")))?;
        let n = dets.len();
        // Each mask resized to the photo (F.interpolate, bilinear) and `> 0.5`. The crop
        // zeroed the prototype pixels outside the padded box, so only the photo pixels
        // that read the crop can be nonzero: only that window is resampled.
        let (ph, pw) = (raw.proto.dim().0, raw.proto.dim().1);
        let planes: Vec<Vec<u8>> = (0..n)
            .into_par_iter()
            .map(|i| -> Result<Vec<u8>, ModelError> {
                let mut out = vec![0u8; h * w];
                let b = &kept[i];
                let (x1, x2) = sanitize_coordinates(b[0], b[2], pw, 1.0);
                let (y1, y2) = sanitize_coordinates(b[1], b[3], ph, 1.0);
                let (Some(cols), Some(rows)) =
                    (reading_window(x1, x2, pw, w), reading_window(y1, y2, ph, h))
                else {
                    return Ok(out);
                };
                let plane = soft
                    .slice(ndarray::s![i..i + 1, .., ..])
                    .insert_axis(Axis(0));
                let part = resize_window(plane, (h, w), BILINEAR, rows.clone(), cols.clone())
                    .ctx(|| "mask resize".into())?;
                let part = part.index_axis(Axis(0), 0);
                let part = part.index_axis(Axis(0), 0);
                for (r, line) in rows.zip(part.outer_iter()) {
                    let dst = &mut out[r * w + cols.start..r * w + cols.end];
                    for (o, &v) in dst.iter_mut().zip(line) {
                        *o = u8::from(v > 0.5);
                    }
                }
                Ok(out)
            })
            .collect::<Result<_, _>>()?;
        let masks = Array3::from_shape_vec((n, h, w), planes.concat())
            .map_err(|e| ModelError::input(e.to_string()))?;
        let boxes = kept
            .iter()
            .map(|b| {
                let (x1, x2) = sanitize_coordinates(b[0], b[2], w, 0.0);
                let (y1, y2) = sanitize_coordinates(b[1], b[3], h, 0.0);
                // boxes.long(): truncation toward zero.
                [x1, y1, x2, y2].map(|v| (v as i64) as f32)
            })
            .collect();
        Ok(Detections {
            boxes,
            boxes_relative: kept,
            classes: dets.iter().map(|d| d.class).collect(),
            scores: dets.iter().map(|d| d.score).collect(),
            masks,
        })
    }
}

/// YolactEdge's `Detect.detect` with `traditional_nms`: the priors whose best class score is
/// above `conf_thresh`, then [`traditional_nms`] on them (indices back into all priors).
fn detect_traditional(
    boxes: &[[f32; 4]],
    scores: ndarray::ArrayView2<'_, f32>,
    config: &YolactConfig,
) -> Result<Vec<kernels::ops::YolactDetection>, kernels::ops::OpError> {
    let keep: Vec<usize> = (0..boxes.len())
        .filter(|&j| {
            let best = scores.column(j).iter().fold(f32::NEG_INFINITY, |m, &v| {
                if v > m || v.is_nan() {
                    v
                } else {
                    m
                }
            });
            best > config.conf_thresh
        })
        .collect();
    let sub_boxes: Vec<[f32; 4]> = keep.iter().map(|&j| boxes[j]).collect();
    let sub = scores.select(Axis(1), &keep);
    let mut dets = traditional_nms(
        &sub_boxes,
        sub.view(),
        config.nms.iou_threshold,
        config.conf_thresh,
        config.max_size as f32,
        config.nms.max_num_detections,
    )?;
    for d in &mut dets {
        d.index = keep[d.index];
    }
    Ok(dets)
}

/// The output indices (of `out` along an axis resized from `input`, bilinear,
/// `align_corners=False`) whose two source taps can fall in the kept source range
/// `[ceil(lo), ceil(hi))` of a crop (`x >= lo && x < hi`), with a pixel of margin: every
/// other output reads only zeros. `None` when the crop keeps nothing.
fn reading_window(lo: f32, hi: f32, input: usize, out: usize) -> Option<std::ops::Range<usize>> {
    let (c0, c1) = (f64::from(lo).ceil(), f64::from(hi).ceil());
    if c0 >= c1 || c0.is_nan() || c1.is_nan() {
        return None;
    }
    let scale = input as f64 / out as f64;
    // Source coordinate of output o: (o + 0.5)·scale - 0.5; it reads floor(src) and the next.
    let first = ((c0 - 0.5) / scale - 0.5).floor() - 1.0;
    let last = ((c1 + 0.5) / scale - 0.5).ceil() + 1.0;
    let start = first.max(0.0) as usize;
    let end = (last.max(0.0) as usize).min(out);
    (start < end).then_some(start..end)
}

/// `box_utils.decode` (variances 0.1, 0.2) of one prior: point form `(x1, y1, x2, y2)`,
/// relative to the input.
pub fn decode(loc: &[f32; 4], prior: &[f32; 4]) -> [f32; 4] {
    let cx = prior[0] + loc[0] * 0.1 * prior[2];
    let cy = prior[1] + loc[1] * 0.1 * prior[3];
    let w = prior[2] * (loc[2] * 0.2).exp();
    let h = prior[3] * (loc[3] * 0.2).exp();
    let x1 = cx - w / 2.0;
    let y1 = cy - h / 2.0;
    [x1, y1, w + x1, h + y1]
}

pub fn kind() -> NodeKind {
    let d = YolactConfig::default();
    let spec = NodeSpec::new(
        NODE,
        "YOLACT after the body: FPN (P3-P7), protonet, shared prediction head, priors, FastNMS, mask assembly and crop, masks and boxes at the photo's size",
    );
    let spec = features_input(spec, "C3, C4, C5 of the ResNet body (in_features)");
    let spec = image_input(
        spec,
        "the image from yolact_preprocess (original_size: the size of the masks and boxes)",
    )
    .output(PortSpec::new(
        "instances",
        PortKind::Instances,
        "detections in original-image pixels (integer boxes, COCO category ids), masks u8 [N, H, W]",
    ));
    let spec = weights_params(spec, "YOLACT", "", "name prefix of YOLACT's tensors");
    let spec = model_params(spec, &d, "FastNMS IoU threshold", &COCO_CATEGORY_IDS);
    NodeKind::new(spec, |params| {
        Ok(Box::new(YolactNode::from_params(params)?) as Box<dyn Node>)
    })
}

/// The parameters the `yolact` and `yolact_edge` kinds share, with `d`'s defaults.
pub(crate) fn model_params(
    spec: NodeSpec,
    d: &YolactConfig,
    nms_doc: &str,
    category_ids: &[i64],
) -> NodeSpec {
    spec
        .param(ParamSpec::optional(
            "in_features",
            ParamType::StrList,
            ParamValue::StrList(vec!["c3".into(), "c4".into(), "c5".into()]),
            "the body's C3, C4, C5",
        ))
        .param(ParamSpec::optional(
            "in_channels",
            ParamType::IntList,
            ParamValue::IntList(d.in_channels.iter().map(|&c| c as i64).collect()),
            "channels of C3, C4, C5 (ResNet-50/101: 512, 1024, 2048)",
        ))
        .param(
            ParamSpec::optional(
                "max_size",
                ParamType::Int,
                ParamValue::Int(d.max_size as i64),
                "cfg.max_size: the input side the prior sizes are relative to",
            )
            .range(32.0, 4096.0),
        )
        .param(
            ParamSpec::optional(
                "conf_thresh",
                ParamType::Float,
                ParamValue::Float(f64::from(d.conf_thresh)),
                "nms_conf_thresh: priors whose best class score is above this are candidates",
            )
            .range(0.0, 1.0),
        )
        .param(
            ParamSpec::optional(
                "nms_thresh",
                ParamType::Float,
                ParamValue::Float(f64::from(d.nms.iou_threshold)),
                nms_doc,
            )
            .range(0.0, 1.0),
        )
        .param(
            ParamSpec::optional(
                "top_k",
                ParamType::Int,
                ParamValue::Int(d.nms.top_k as i64),
                "nms_top_k: candidates per class",
            )
            .range(1.0, 100000.0),
        )
        .param(
            ParamSpec::optional(
                "max_detections",
                ParamType::Int,
                ParamValue::Int(d.nms.max_num_detections as i64),
                "max_num_detections over all classes",
            )
            .range(0.0, 100000.0),
        )
        .param(ParamSpec::optional(
            "category_ids",
            ParamType::IntList,
            ParamValue::IntList(category_ids.to_vec()),
            "the output class of each of the model's classes, in order (default: the dataset's category ids)",
        ))
}

/// The settings, input levels and category ids of [`model_params`], on `base`.
pub(crate) fn config_from_params(
    params: &Params,
    base: YolactConfig,
) -> Result<(YolactConfig, Vec<String>, Vec<i64>), ModelError> {
    let p = ModelError::Input;
    let in_features = params.str_list("in_features").map_err(p)?;
    let in_channels = params
        .int_list("in_channels")
        .map_err(ModelError::Input)?
        .into_iter()
        .map(|c| usize::try_from(c).unwrap_or(0))
        .collect::<Vec<_>>();
    if in_features.len() != 3 || in_channels.len() != 3 || in_channels.contains(&0) {
        return Err(ModelError::param(
            "in_features",
            format!(
                "and in_channels must name three levels (C3, C4, C5) with positive channels, got {in_features:?} and {in_channels:?}"
            ),
        ));
    }
    let category_ids = params.int_list("category_ids").map_err(ModelError::Input)?;
    let config = YolactConfig {
        in_channels,
        max_size: count_param(params, "max_size")?,
        conf_thresh: float_param(params, "conf_thresh")?,
        nms: FastNmsConfig {
            iou_threshold: float_param(params, "nms_thresh")?,
            top_k: count_param(params, "top_k")?,
            max_num_detections: count_param(params, "max_detections")?,
            ..FastNmsConfig::default()
        },
        ..base
    };
    if category_ids.len() != config.num_classes - 1 {
        return Err(ModelError::param(
            "category_ids",
            format!(
                "must list {} ids (one per class without the background), got {}",
                config.num_classes - 1,
                category_ids.len()
            ),
        ));
    }
    Ok((config, in_features, category_ids))
}

/// Detections as `instances` with their masks, classes mapped through `category_ids`.
pub(crate) fn instances_value(
    d: Detections,
    (h, w): (usize, usize),
    category_ids: &[i64],
) -> Result<Value, ModelError> {
    let n = d.boxes.len();
    let classes = d
        .classes
        .iter()
        .map(|&c| category_ids.get(c).copied().unwrap_or(-1))
        .collect::<Vec<_>>();
    Ok(plugin_sdk::Instances {
        boxes: d.boxes,
        scores: d.scores,
        classes,
    }
    .to_value()
    .map_err(ModelError::Input)?
    .with(
        "masks",
        Tensor::from_vec(&[n, h, w], d.masks.into_raw_vec_and_offset().0)?,
    ))
}

/// The `yolact` node.
#[derive(Debug)]
pub struct YolactNode {
    model: Yolact,
    in_features: Vec<String>,
    category_ids: Vec<i64>,
}

impl YolactNode {
    pub fn from_params(params: &Params) -> Result<YolactNode, ModelError> {
        let (config, in_features, category_ids) =
            config_from_params(params, YolactConfig::default())?;
        let (weights, prefix) = weights_param(params)?;
        Ok(YolactNode {
            model: Yolact::from_weights(&weights, &prefix, config)?,
            in_features,
            category_ids,
        })
    }

    pub fn model(&self) -> &Yolact {
        &self.model
    }

    /// The node's computation: the detections with their masks, in original pixels.
    pub fn run(&self, features: &Value, image: &Value) -> Result<Value, ModelError> {
        let sizes = ImageSizes::from_value(NODE, image)?;
        let levels = named_levels(NODE, features, &self.in_features)?;
        let raw = self.model.raw(&levels)?;
        let d = self.model.detections(&raw, sizes.original)?;
        instances_value(d, sizes.original, &self.category_ids)
    }
}

impl Node for YolactNode {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(inputs.value("features")?, inputs.value("image")?)?;
        Ok(Outputs::one("instances", v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outside the window, every output pixel reads only source pixels outside the crop.
    #[test]
    fn reading_windows_cover_every_pixel_that_reads_the_crop() {
        for (input, out) in [(138usize, 264usize), (138, 1024), (138, 100), (138, 138)] {
            for (lo, hi) in [(0.0f32, 3.0f32), (10.5, 40.2), (130.0, 138.0), (60.0, 60.5)] {
                let Some(win) = reading_window(lo, hi, input, out) else {
                    assert!(lo.ceil() >= hi.ceil());
                    continue;
                };
                let scale = input as f32 / out as f32;
                for o in (0..out).filter(|o| !win.contains(o)) {
                    let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
                    let i0 = src as usize;
                    let i1 = (i0 + 1).min(input - 1);
                    let kept = |i: usize| (i as f32) >= lo && (i as f32) < hi;
                    assert!(
                        !kept(i0) && !kept(i1),
                        "{input}->{out} {lo}..{hi}: {o} outside {win:?}"
                    );
                }
            }
        }
        assert!(reading_window(5.0, 5.0, 138, 200).is_none());
    }

    #[test]
    fn decode_by_hand() {
        // A zero regression gives the prior itself, in point form.
        assert_eq!(
            decode(&[0.0; 4], &[0.5, 0.5, 0.2, 0.2]),
            [0.4, 0.4, 0.6, 0.6]
        );
        let b = decode(&[1.0, 0.0, 0.0, 0.0], &[0.5, 0.5, 0.2, 0.2]);
        assert!(
            (b[0] - 0.42).abs() < 1e-6 && (b[2] - 0.62).abs() < 1e-6,
            "{b:?}"
        );
    }
}
