//! `roi_mask_head`: torchvision's `RoIHeads` mask branch at inference (`roi_heads.py`,
//! `mask_rcnn.py`), as built by `maskrcnn_resnet50_fpn`.
//!
//! 1. `MultiScaleRoIAlign(["0".."3"], 14, sampling_ratio=2)` on the detection boxes
//!    (resized-image pixels);
//! 2. `MaskRCNNHeads`: four 3x3 convolutions (256, padding 1) + ReLU;
//! 3. `MaskRCNNPredictor`: `conv5_mask` (2x2 transposed convolution, stride 2) + ReLU, then
//!    `mask_fcn_logits` (1x1, one channel per class);
//! 4. `maskrcnn_inference`: `sigmoid` of the channel of each detection's class.
//!
//! Only the predicted class's channel of `mask_fcn_logits` is computed (the others are
//! discarded by torchvision), which saves `num_classes - 1` of its 1x1 products.
//!
//! Output: the detections with `masks` f32 `[N, 28, 28]`, probabilities over each box.
//! `paste_masks` puts them into the original image.
//!
//! Weights: `mask_head.{0..3}.0.*` (`mask_head.mask_fcn{1..4}.*` in checkpoints of torchvision
//! < 0.13), `mask_predictor.conv5_mask.*`, `mask_predictor.mask_fcn_logits.*` under `prefix`
//! (`"roi_heads."`).
//!
//! With `convention = "detectron2"`, Detectron2's `MaskRCNNConvUpsampleHead` and
//! `mask_rcnn_inference`: `ROIAlignV2` (`aligned=True`), sampling ratio 0, Detectron2's level
//! rule; weights `mask_head.mask_fcn{1..4}`, `mask_head.deconv`, `mask_head.predictor` with
//! one channel per class without a background (`num_classes` = 80), read at the detection's
//! contiguous class.

use kernels::layers::{Activation, Conv2d, Conv2dParams, ConvTranspose2d, ConvTranspose2dParams};
use kernels::weights::Weights;
use kernels::Tensor;
use ndarray::{Array3, ArrayView4, Ix1, Ix2, Ix4};
use plugin_sdk::{
    FrameInfo, Inputs, Instances, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec,
    ParamType, ParamValue, Params, PortKind, PortSpec, Value,
};
use rayon::prelude::*;

use vision_common::{
    conv_bias, count_list_param, count_param, feature_levels, features_input, image_input,
    in_features_param, levels_params, module_name, resolve_prefix, weights_param, weights_params,
    ImageSizes, RoiPooler,
};
use vision_common::{LayerContext, ModelError};

use crate::Convention;

/// The settings of [`MaskHead`]; the defaults are `maskrcnn_resnet50_fpn`'s.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskHeadConfig {
    pub channels: usize,
    pub pooler_size: usize,
    pub sampling_ratio: i32,
    /// Output channels of each 3x3 convolution of `MaskRCNNHeads`.
    pub layers: Vec<usize>,
    /// Channels of the predictor: torchvision's include the background class 0.
    pub num_classes: usize,
    pub convention: Convention,
}

impl Default for MaskHeadConfig {
    fn default() -> Self {
        MaskHeadConfig {
            channels: 256,
            pooler_size: 14,
            sampling_ratio: 2,
            layers: vec![256; 4],
            num_classes: 91,
            convention: Convention::Torchvision,
        }
    }
}

/// The mask branch with its weights bound.
#[derive(Debug)]
pub struct MaskHead {
    config: MaskHeadConfig,
    pooler: RoiPooler,
    convs: Vec<Conv2d>,
    conv5_mask: ConvTranspose2d,
    /// `mask_fcn_logits` as `[num_classes, C]` and `[num_classes]`.
    logits_weight: ndarray::Array2<f32>,
    logits_bias: Vec<f32>,
}

impl MaskHead {
    pub fn from_weights(
        weights: &Weights,
        prefix: &str,
        config: MaskHeadConfig,
    ) -> Result<MaskHead, ModelError> {
        if config.layers.is_empty() || config.layers.contains(&0) {
            return Err(ModelError::param(
                "layers",
                format!("must be positive channel counts, got {:?}", config.layers),
            ));
        }
        let d2 = config.convention == Convention::Detectron2;
        let prefix = resolve_prefix(
            weights,
            prefix,
            &["mask_head.0.0.weight", "mask_head.mask_fcn1.weight"],
        );
        let mut b = weights.binder(&prefix);
        let mut convs = Vec::new();
        let mut cin = config.channels;
        for (i, &cout) in config.layers.iter().enumerate() {
            let old = format!("mask_head.mask_fcn{}", i + 1);
            let name = if d2 {
                old
            } else {
                module_name(weights, &prefix, &format!("mask_head.{i}.0"), &old)
            };
            convs.push(
                conv_bias(
                    &mut b,
                    &name,
                    cin,
                    cout,
                    3,
                    Conv2dParams::default().padding(1),
                )?
                .with_activation(Activation::Relu),
            );
            cin = cout;
        }
        // MaskRCNNPredictor(in_channels, dim_reduced = 256, num_classes).
        let reduced = 256;
        let (deconv, predictor) = if d2 {
            ("mask_head.deconv", "mask_head.predictor")
        } else {
            (
                "mask_predictor.conv5_mask",
                "mask_predictor.mask_fcn_logits",
            )
        };
        let w = b.take(&format!("{deconv}.weight"), &[cin, reduced, 2, 2]);
        let bias = b.take(&format!("{deconv}.bias"), &[reduced]);
        let conv5_mask = ConvTranspose2d::new(
            w.view::<f32>()?
                .into_dimensionality::<Ix4>()
                .map_err(|e| ModelError::input(e.to_string()))?,
            Some(
                bias.view::<f32>()?
                    .into_dimensionality::<Ix1>()
                    .map_err(|e| ModelError::input(e.to_string()))?,
            ),
            ConvTranspose2dParams::default().stride(2),
        )
        .ctx(|| deconv.into())?
        .with_activation(Activation::Relu);
        let k = config.num_classes;
        let lw = b.take(&format!("{predictor}.weight"), &[k, reduced, 1, 1]);
        let lb = b.take(&format!("{predictor}.bias"), &[k]);
        crate::ignore_other_heads(&mut b, &["mask_head.", "mask_predictor."]);
        b.finish()?;
        let logits_weight = lw
            .view::<f32>()?
            .into_shape_with_order((k, reduced))
            .map_err(|e| ModelError::input(e.to_string()))?
            .into_dimensionality::<Ix2>()
            .map_err(|e| ModelError::input(e.to_string()))?
            .to_owned();
        let align =
            kernels::ops::MultiScaleRoIAlign::new(config.pooler_size, config.sampling_ratio);
        let align = if d2 {
            kernels::ops::MultiScaleRoIAlign {
                aligned: true,
                ..kernels::ops::MultiScaleRoIAlign::detectron2(
                    config.pooler_size,
                    config.sampling_ratio,
                )
            }
        } else {
            align
        };
        Ok(MaskHead {
            pooler: RoiPooler::from_align(align),
            config,
            convs,
            conv5_mask,
            logits_weight,
            logits_bias: lb.as_slice::<f32>()?.to_vec(),
        })
    }

    pub fn config(&self) -> &MaskHeadConfig {
        &self.config
    }

    /// Mask logits `[N, 2·pooler, 2·pooler]` of the detections (`boxes` in resized-image
    /// pixels, `labels` their classes): the predictor's channel of each detection's class.
    pub fn forward_logits(
        &self,
        levels: &[ArrayView4<'_, f32>],
        boxes: &[[f32; 4]],
        labels: &[i64],
        resized: (usize, usize),
    ) -> Result<Array3<f32>, ModelError> {
        let n = boxes.len();
        let side = 2 * self.config.pooler_size;
        if let Some(&bad) = labels
            .iter()
            .find(|&&l| l < 0 || l as usize >= self.config.num_classes)
        {
            return Err(ModelError::input(format!(
                "roi_mask_head: a detection has class {bad}, the head has classes 0..{}",
                self.config.num_classes - 1
            )));
        }
        if let Some(first) = levels.first() {
            if first.dim().1 != self.config.channels {
                return Err(ModelError::input(format!(
                    "roi_mask_head: the feature levels have {} channels, the head expects {}",
                    first.dim().1,
                    self.config.channels
                )));
            }
        }
        if n == 0 {
            return Ok(Array3::zeros((0, side, side)));
        }
        let mut x = self.pooler.pool("roi_mask_head", levels, boxes, resized)?;
        for (i, conv) in self.convs.iter().enumerate() {
            x = conv.forward(x.view()).ctx(|| format!("mask_head.{i}"))?;
        }
        let x = self
            .conv5_mask
            .forward(x.view())
            .ctx(|| "mask_predictor.conv5_mask".into())?;
        let (_, c, h, w) = x.dim();
        if (h, w) != (side, side) {
            return Err(ModelError::input(format!(
                "roi_mask_head: conv5_mask gave {h}x{w} masks, expected {side}x{side}"
            )));
        }
        let x = x.as_standard_layout();
        let src = x.as_slice().unwrap_or(&[]);
        let plane = h * w;
        let mut out = Array3::<f32>::zeros((n, h, w));
        let dst = out.as_slice_mut().unwrap_or(&mut []);
        dst.par_chunks_mut(plane)
            .zip(src.par_chunks(c * plane))
            .zip(labels.par_iter())
            .for_each(|((o, feat), &label)| {
                let l = label as usize;
                o.fill(self.logits_bias[l]);
                for (ch, wv) in self.logits_weight.row(l).iter().enumerate() {
                    for (a, &f) in o.iter_mut().zip(&feat[ch * plane..(ch + 1) * plane]) {
                        *a += wv * f;
                    }
                }
            });
        Ok(out)
    }

    /// [`MaskHead::forward_logits`] through the sigmoid: the mask probabilities.
    pub fn forward(
        &self,
        levels: &[ArrayView4<'_, f32>],
        boxes: &[[f32; 4]],
        labels: &[i64],
        resized: (usize, usize),
    ) -> Result<Array3<f32>, ModelError> {
        let mut out = self.forward_logits(levels, boxes, labels, resized)?;
        out.mapv_inplace(|a| 1.0 / (1.0 + (-a).exp()));
        Ok(out)
    }
}

pub fn kind() -> NodeKind {
    let d = MaskHeadConfig::default();
    let spec = NodeSpec::new(
        "roi_mask_head",
        "torchvision RoIHeads mask branch: MultiScaleRoIAlign 14x14, four 3x3 convs, transposed conv, the predicted class's mask probabilities",
    );
    let spec = features_input(spec, "the FPN levels named in `in_features` (p2..p5)").input(
        PortSpec::new(
            "detections",
            PortKind::Instances,
            "detections in resized-image pixels (from roi_box_head)",
        ),
    );
    let spec = image_input(spec, "the image from rcnn_preprocess (image_size: RoIAlign's level scales)")
    .output(PortSpec::new(
        "instances",
        PortKind::Instances,
        "the detections with masks f32 [N, 28, 28]: the probability of the detection's class over its box",
    ))
;
    let spec = weights_params(
        spec,
        "the mask head",
        "roi_heads.",
        "name prefix of the RoI heads' tensors",
    );
    let spec = levels_params(
        spec,
        &["p2", "p3", "p4", "p5"],
        "feature levels RoIs are pooled from, finest first",
        d.channels,
    )
    .param(
        ParamSpec::optional(
            "num_classes",
            ParamType::Int,
            ParamValue::Int(-1),
            "classes: torchvision's count includes the background (91 for its COCO models), Detectron2's NUM_CLASSES does not (80); -1: the convention's",
        )
        .range(-1.0, 65536.0),
    )
    .param(ParamSpec::optional(
        "layers",
        ParamType::IntList,
        ParamValue::IntList(d.layers.iter().map(|&v| v as i64).collect()),
        "output channels of the 3x3 convolutions (MaskRCNNHeads)",
    ))
    .param(
        ParamSpec::optional(
            "sampling_ratio",
            ParamType::Int,
            ParamValue::Int(-1),
            "RoIAlign samples per bin side (0: adaptive); -1: the convention's (torchvision 2, detectron2 0)",
        )
        .range(-1.0, 64.0),
    );
    let spec = Convention::param(spec).param(ParamSpec::optional(
        "mask_logits",
        ParamType::Bool,
        ParamValue::Bool(false),
        "also output the logits before the sigmoid, mask_logits f32 [N, 28, 28] (UPSNet's panoptic head reads them)",
    ));
    NodeKind::new(spec, |params| {
        Ok(Box::new(MaskHeadNode::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `roi_mask_head` node.
#[derive(Debug)]
pub struct MaskHeadNode {
    model: MaskHead,
    in_features: Vec<String>,
    mask_logits: bool,
}

impl MaskHeadNode {
    pub fn from_params(params: &Params) -> Result<MaskHeadNode, ModelError> {
        let in_features = in_features_param(params)?;
        let layers = count_list_param(params, "layers")?;
        let convention = Convention::from_params(params)?;
        let num_classes = convention.int_or(params, "num_classes", 91, 80)?;
        if num_classes < 1 {
            return Err(ModelError::param(
                "num_classes",
                format!("must be positive, got {num_classes}"),
            ));
        }
        let config = MaskHeadConfig {
            channels: count_param(params, "channels")?,
            pooler_size: 14,
            sampling_ratio: convention.int_or(params, "sampling_ratio", 2, 0)? as i32,
            layers,
            num_classes: num_classes as usize,
            convention,
        };
        let (weights, prefix) = weights_param(params)?;
        Ok(MaskHeadNode {
            model: MaskHead::from_weights(&weights, &prefix, config)?,
            in_features,
            mask_logits: params.bool("mask_logits").map_err(ModelError::Input)?,
        })
    }

    pub fn model(&self) -> &MaskHead {
        &self.model
    }

    /// The node's computation: the detections with their mask probabilities.
    pub fn run(
        &self,
        features: &Value,
        detections: &Value,
        image: &Value,
    ) -> Result<Value, ModelError> {
        let sizes = ImageSizes::from_value("roi_mask_head", image)?;
        let levels = feature_levels("roi_mask_head", features, &self.in_features)?;
        let det = Instances::from_value(detections).map_err(ModelError::Input)?;
        let logits = self
            .model
            .forward_logits(&levels, &det.boxes, &det.classes, sizes.resized)?;
        let (n, h, w) = logits.dim();
        let mut out = detections.clone();
        if self.mask_logits {
            out.insert(
                "mask_logits",
                Tensor::from_vec(&[n, h, w], logits.as_slice().unwrap_or(&[]).to_vec())?,
            );
        }
        let masks = logits.mapv(|a| 1.0 / (1.0 + (-a).exp()));
        out.insert(
            "masks",
            Tensor::from_vec(&[n, h, w], masks.into_raw_vec_and_offset().0)?,
        );
        Ok(out)
    }
}

impl Node for MaskHeadNode {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(
            inputs.value("features")?,
            inputs.value("detections")?,
            inputs.value("image")?,
        )?;
        Ok(Outputs::one("instances", v))
    }
}
