//! `roi_box_head`: torchvision's `RoIHeads` box branch at inference (`roi_heads.py`), as built
//! by `maskrcnn_resnet50_fpn`.
//!
//! 1. `MultiScaleRoIAlign(["0".."3"], 7, sampling_ratio=2)`: each proposal pooled to 7x7 from
//!    the level `LevelMapper` assigns (canonical 224 / level 4), `aligned=False`;
//! 2. `TwoMLPHead`: flatten, `fc6` + ReLU, `fc7` + ReLU (1024);
//! 3. `FastRCNNPredictor`: `cls_score` (`num_classes`) and `bbox_pred` (`4·num_classes`);
//! 4. `postprocess_detections`: decode per class (`BoxCoder` weights 10, 10, 5, 5), softmax,
//!    clip to the resized image, drop the background column, keep scores `> score_thresh`
//!    (strict), drop boxes with a side `< 0.01`, NMS per class (`nms_thresh`), keep the first
//!    `detections_per_img`.
//!
//! Detections stay in resized-image pixels (the mask head pools from them); `paste_masks`
//! maps them to the original image, as torchvision's `transform.postprocess` does.
//!
//! Weights: `box_head.fc6.*`, `box_head.fc7.*`, `box_predictor.cls_score.*`,
//! `box_predictor.bbox_pred.*` under `prefix` (`"roi_heads."`).
//!
//! With `convention = "detectron2"`, Detectron2's `StandardROIHeads` box branch
//! (`FastRCNNConvFCHead`, `FastRCNNOutputLayers`, `fast_rcnn_inference_single_image`):
//! - `ROIAlignV2` (`aligned=True`), sampling ratio 0 (adaptive), Detectron2's level rule;
//! - weights `box_head.fc1`, `box_head.fc2`; `num_classes` counts the classes without the
//!   background (80), whose logit is the **last** of `cls_score`'s `num_classes + 1`;
//! - all boxes clipped, scores `> score_thresh`, no small-box filter, per-class NMS, the first
//!   `detections_per_img`;
//! - classes are the contiguous indices `0..num_classes`.

use kernels::layers::shape::softmax_in_place;
use kernels::layers::{Activation, Linear};
use kernels::ops::{batched_nms, clip_boxes_to_image, remove_small_boxes, BoxCoder};
use kernels::weights::Weights;
use ndarray::{Array2, ArrayView4};
use plugin_sdk::{
    FrameInfo, Inputs, Instances, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec,
    ParamType, ParamValue, Params, PortKind, PortSpec, Value,
};

use vision_common::{
    count_param, f32_value, feature_levels, features_input, float_param, image_input,
    in_features_param, levels_params, linear, resolve_prefix, weights_param, weights_params,
    ImageSizes, RoiPooler,
};
use vision_common::{LayerContext, ModelError};

use crate::Convention;

/// torchvision's `box_min_size` in `RoIHeads.postprocess_detections` (not configurable there).
const BOX_MIN_SIZE: f32 = 1e-2;

/// The settings of [`BoxHead`]; the defaults are `maskrcnn_resnet50_fpn`'s.
#[derive(Clone, Debug, PartialEq)]
pub struct BoxHeadConfig {
    pub channels: usize,
    pub pooler_size: usize,
    pub sampling_ratio: i32,
    pub representation_size: usize,
    /// torchvision: including the background class 0; Detectron2: without the background.
    pub num_classes: usize,
    pub bbox_reg_weights: [f32; 4],
    pub score_thresh: f32,
    pub nms_thresh: f32,
    pub detections_per_img: usize,
    pub convention: Convention,
}

impl BoxHeadConfig {
    /// Columns of `cls_score`, and the object classes as a range of them.
    fn class_columns(&self) -> (usize, std::ops::Range<usize>) {
        match self.convention {
            Convention::Torchvision => (self.num_classes, 1..self.num_classes),
            Convention::Detectron2 => (self.num_classes + 1, 0..self.num_classes),
        }
    }

    /// Classes with a box regression (`bbox_pred` has 4 outputs each).
    fn regressed_classes(&self) -> usize {
        self.num_classes
    }
}

impl Default for BoxHeadConfig {
    fn default() -> Self {
        BoxHeadConfig {
            channels: 256,
            pooler_size: 7,
            sampling_ratio: 2,
            representation_size: 1024,
            num_classes: 91,
            bbox_reg_weights: [10.0, 10.0, 5.0, 5.0],
            score_thresh: 0.05,
            nms_thresh: 0.5,
            detections_per_img: 100,
            convention: Convention::Torchvision,
        }
    }
}

/// Detections of one image, highest score first, in resized-image pixels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Detections {
    pub boxes: Vec<[f32; 4]>,
    pub scores: Vec<f32>,
    /// torchvision: 1..num_classes-1 (0 is the background); Detectron2: 0..num_classes-1.
    pub labels: Vec<i64>,
}

/// The box branch with its weights bound.
#[derive(Debug)]
pub struct BoxHead {
    config: BoxHeadConfig,
    pooler: RoiPooler,
    fc6: Linear,
    fc7: Linear,
    cls_score: Linear,
    bbox_pred: Linear,
    coder: BoxCoder,
}

impl BoxHead {
    pub fn from_weights(
        weights: &Weights,
        prefix: &str,
        config: BoxHeadConfig,
    ) -> Result<BoxHead, ModelError> {
        let (fc1, fc2, align) = match config.convention {
            Convention::Torchvision => (
                "box_head.fc6",
                "box_head.fc7",
                kernels::ops::MultiScaleRoIAlign::new(config.pooler_size, config.sampling_ratio),
            ),
            Convention::Detectron2 => (
                "box_head.fc1",
                "box_head.fc2",
                kernels::ops::MultiScaleRoIAlign {
                    aligned: true,
                    ..kernels::ops::MultiScaleRoIAlign::detectron2(
                        config.pooler_size,
                        config.sampling_ratio,
                    )
                },
            ),
        };
        let prefix = resolve_prefix(weights, prefix, &[&format!("{fc1}.weight")]);
        let mut b = weights.binder(&prefix);
        let flat = config.channels * config.pooler_size * config.pooler_size;
        let rep = config.representation_size;
        let (columns, _) = config.class_columns();
        let fc6 = linear(&mut b, fc1, flat, rep, Activation::Relu)?;
        let fc7 = linear(&mut b, fc2, rep, rep, Activation::Relu)?;
        let cls_score = linear(
            &mut b,
            "box_predictor.cls_score",
            rep,
            columns,
            Activation::Identity,
        )?;
        let bbox_pred = linear(
            &mut b,
            "box_predictor.bbox_pred",
            rep,
            4 * config.regressed_classes(),
            Activation::Identity,
        )?;
        crate::ignore_other_heads(&mut b, &["box_head.", "box_predictor."]);
        b.finish()?;
        Ok(BoxHead {
            pooler: RoiPooler::from_align(align),
            coder: BoxCoder::new(config.bbox_reg_weights),
            config,
            fc6,
            fc7,
            cls_score,
            bbox_pred,
        })
    }

    pub fn config(&self) -> &BoxHeadConfig {
        &self.config
    }

    /// Class logits `[K, num_classes]` and box deltas `[K, 4·num_classes]` of the proposals.
    pub fn predict(
        &self,
        levels: &[ArrayView4<'_, f32>],
        proposals: &[[f32; 4]],
        resized: (usize, usize),
    ) -> Result<(Array2<f32>, Array2<f32>), ModelError> {
        let k = proposals.len();
        let pooled = self
            .pooler
            .pool("roi_box_head", levels, proposals, resized)?;
        let flat_len = pooled.len() / k.max(1);
        let flat = pooled
            .into_shape_with_order((k, flat_len))
            .map_err(|e| ModelError::input(e.to_string()))?;
        let x = self
            .fc6
            .forward(flat.view())
            .ctx(|| "box_head.fc6".into())?;
        let x = self.fc7.forward(x.view()).ctx(|| "box_head.fc7".into())?;
        let logits = self
            .cls_score
            .forward(x.view())
            .ctx(|| "box_predictor.cls_score".into())?;
        let deltas = self
            .bbox_pred
            .forward(x.view())
            .ctx(|| "box_predictor.bbox_pred".into())?;
        Ok((logits, deltas))
    }

    /// Detections from proposals (resized-image pixels).
    pub fn forward(
        &self,
        levels: &[ArrayView4<'_, f32>],
        proposals: &[[f32; 4]],
        resized: (usize, usize),
    ) -> Result<Detections, ModelError> {
        if let Some(first) = levels.first() {
            if first.dim().1 != self.config.channels {
                return Err(ModelError::input(format!(
                    "roi_box_head: the feature levels have {} channels, the head expects {}",
                    first.dim().1,
                    self.config.channels
                )));
            }
        }
        if proposals.is_empty() {
            return Ok(Detections::default());
        }
        let (logits, deltas) = self.predict(levels, proposals, resized)?;
        self.postprocess(logits, deltas.view(), proposals, resized)
    }

    fn postprocess(
        &self,
        logits: Array2<f32>,
        deltas: ndarray::ArrayView2<'_, f32>,
        proposals: &[[f32; 4]],
        resized: (usize, usize),
    ) -> Result<Detections, ModelError> {
        let (_, classes) = self.config.class_columns();
        let decoded = self
            .coder
            .decode(deltas, proposals)
            .map_err(|e| ModelError::input(format!("roi_box_head: {e}")))?;
        let mut boxes = Vec::new();
        let mut scores = Vec::new();
        let mut labels = Vec::new();
        for (i, row) in logits.outer_iter().enumerate() {
            let mut probs = row.to_vec();
            softmax_in_place(&mut probs);
            // Candidates proposal-major, classes within (torchvision's and Detectron2's order).
            for c in classes.clone() {
                let score = probs[c];
                if score > self.config.score_thresh {
                    let d = decoded.slice(ndarray::s![i, c, ..]);
                    boxes.push([d[0], d[1], d[2], d[3]]);
                    scores.push(score);
                    labels.push(c as i64);
                }
            }
        }
        // Clipping and the small-box filter commute with the score filter (all per candidate).
        let boxes = clip_boxes_to_image(&boxes, resized);
        let keep = match self.config.convention {
            Convention::Torchvision => remove_small_boxes(&boxes, BOX_MIN_SIZE),
            Convention::Detectron2 => (0..boxes.len()).collect(),
        };
        let boxes: Vec<[f32; 4]> = keep.iter().map(|&i| boxes[i]).collect();
        let scores: Vec<f32> = keep.iter().map(|&i| scores[i]).collect();
        let labels: Vec<i64> = keep.iter().map(|&i| labels[i]).collect();
        let mut kept = batched_nms(&boxes, &scores, &labels, self.config.nms_thresh as f64)
            .map_err(|e| ModelError::input(format!("roi_box_head: {e}")))?;
        kept.truncate(self.config.detections_per_img);
        Ok(Detections {
            boxes: kept.iter().map(|&i| boxes[i]).collect(),
            scores: kept.iter().map(|&i| scores[i]).collect(),
            labels: kept.iter().map(|&i| labels[i]).collect(),
        })
    }
}

pub fn kind() -> NodeKind {
    let d = BoxHeadConfig::default();
    let spec = NodeSpec::new(
        "roi_box_head",
        "torchvision RoIHeads box branch: MultiScaleRoIAlign 7x7, TwoMLPHead, FastRCNNPredictor, per-class decoding and NMS",
    );
    let spec = features_input(spec, "the FPN levels named in `in_features` (p2..p5)").input(
        PortSpec::new(
            "proposals",
            PortKind::Instances,
            "proposals in resized-image pixels (from rpn)",
        ),
    );
    let spec = image_input(spec, "the image from rcnn_preprocess (image_size: clipping and RoIAlign's level scales)")
    .output(PortSpec::new(
        "detections",
        PortKind::Instances,
        "detections in resized-image pixels, highest score first; classes are COCO category ids 1..90 with the default 91 classes",
    ))
;
    let spec = weights_params(
        spec,
        "the box head",
        "roi_heads.",
        "name prefix of the RoI heads' tensors",
    );
    let spec = Convention::param(spec);
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
    .param(
        ParamSpec::optional(
            "representation_size",
            ParamType::Int,
            ParamValue::Int(d.representation_size as i64),
            "width of fc6 and fc7",
        )
        .range(1.0, 65536.0),
    )
    .param(
        ParamSpec::optional(
            "sampling_ratio",
            ParamType::Int,
            ParamValue::Int(-1),
            "RoIAlign samples per bin side (0: adaptive); -1: the convention's (torchvision 2, detectron2 0)",
        )
        .range(-1.0, 64.0),
    )
    .param(ParamSpec::optional(
        "bbox_reg_weights",
        ParamType::FloatList,
        ParamValue::FloatList(d.bbox_reg_weights.iter().map(|&v| f32_value(v)).collect()),
        "BoxCoder weights (wx, wy, ww, wh)",
    ))
    .param(
        ParamSpec::optional(
            "score_thresh",
            ParamType::Float,
            ParamValue::Float(f32_value(d.score_thresh)),
            "minimum class probability (kept when >, torchvision's box_score_thresh)",
        )
        .range(0.0, 1.0),
    )
    .param(
        ParamSpec::optional(
            "nms_thresh",
            ParamType::Float,
            ParamValue::Float(f32_value(d.nms_thresh)),
            "IoU threshold of the per-class NMS (box_nms_thresh)",
        )
        .range(0.0, 1.0),
    )
    .param(
        ParamSpec::optional(
            "detections_per_img",
            ParamType::Int,
            ParamValue::Int(d.detections_per_img as i64),
            "detections kept, highest score first (box_detections_per_img)",
        )
        .range(1.0, 1048576.0),
    );
    NodeKind::new(spec, |params| {
        Ok(Box::new(BoxHeadNode::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `roi_box_head` node.
#[derive(Debug)]
pub struct BoxHeadNode {
    model: BoxHead,
    in_features: Vec<String>,
}

impl BoxHeadNode {
    pub fn from_params(params: &Params) -> Result<BoxHeadNode, ModelError> {
        let p = ModelError::Input;
        let in_features = in_features_param(params)?;
        let w = params.float_list("bbox_reg_weights").map_err(p)?;
        let bbox_reg_weights = match w.as_slice() {
            [a, b, c, d] if w.iter().all(|v| v.is_finite() && *v > 0.0) => {
                [*a as f32, *b as f32, *c as f32, *d as f32]
            }
            _ => {
                return Err(ModelError::param(
                    "bbox_reg_weights",
                    format!("must be 4 positive numbers (wx, wy, ww, wh), got {w:?}"),
                ))
            }
        };
        let convention = Convention::from_params(params)?;
        let num_classes = convention.int_or(params, "num_classes", 91, 80)?;
        if num_classes < 2 {
            return Err(ModelError::param(
                "num_classes",
                format!("must be at least 2, got {num_classes}"),
            ));
        }
        let d = BoxHeadConfig::default();
        let config = BoxHeadConfig {
            channels: count_param(params, "channels")?,
            pooler_size: 7,
            sampling_ratio: convention.int_or(
                params,
                "sampling_ratio",
                d.sampling_ratio.into(),
                0,
            )? as i32,
            representation_size: count_param(params, "representation_size")?,
            num_classes: num_classes as usize,
            convention,
            bbox_reg_weights,
            score_thresh: float_param(params, "score_thresh")?,
            nms_thresh: float_param(params, "nms_thresh")?,
            detections_per_img: count_param(params, "detections_per_img")?,
        };
        let (weights, prefix) = weights_param(params)?;
        Ok(BoxHeadNode {
            model: BoxHead::from_weights(&weights, &prefix, config)?,
            in_features,
        })
    }

    pub fn model(&self) -> &BoxHead {
        &self.model
    }

    /// The node's computation: detections from the proposals.
    pub fn run(
        &self,
        features: &Value,
        proposals: &Value,
        image: &Value,
    ) -> Result<Value, ModelError> {
        let sizes = ImageSizes::from_value("roi_box_head", image)?;
        let levels = feature_levels("roi_box_head", features, &self.in_features)?;
        let proposals = Instances::from_value(proposals).map_err(ModelError::Input)?;
        let d = self
            .model
            .forward(&levels, &proposals.boxes, sizes.resized)?;
        Instances {
            boxes: d.boxes,
            scores: d.scores,
            classes: d.labels,
        }
        .to_value()
        .map_err(ModelError::Input)
    }
}

impl Node for BoxHeadNode {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(
            inputs.value("features")?,
            inputs.value("proposals")?,
            inputs.value("image")?,
        )?;
        Ok(Outputs::one("detections", v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_torchs() {
        let mut p = [1.0, 2.0, 3.0];
        softmax_in_place(&mut p);
        let want = [0.090_030_57, 0.244_728_48, 0.665_240_94];
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 1e-7, "{p:?}");
        }
        let mut p = [1000.0, 1000.0];
        softmax_in_place(&mut p);
        assert_eq!(p, [0.5, 0.5]);
    }
}
