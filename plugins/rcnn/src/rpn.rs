//! `rpn`: torchvision's `RegionProposalNetwork` at inference (`rpn.py`), as built by
//! `maskrcnn_resnet50_fpn`.
//!
//! For each pyramid level (`p2..p6`, torchvision's `"0".."3","pool"`), the shared `RPNHead`
//! computes `t = relu(conv3x3(p))`, objectness logits `cls_logits(t)` (`A` per location) and
//! box deltas `bbox_pred(t)` (`4A`); candidates are ordered (level, y, x, anchor) as
//! torchvision's `concat_box_prediction_layers`. Then `filter_proposals`:
//!
//! 1. per level, the `pre_nms_top_n` highest logits (all when the level has fewer anchors);
//! 2. decode against the anchors (`BoxCoder` weights 1, 1, 1, 1), `sigmoid` of the logits;
//! 3. clip to the resized image (before padding), drop boxes with a side `< min_size`, keep
//!    scores `>= score_thresh`;
//! 4. NMS per level (`batched_nms`, IoU `nms_thresh`), then the first `post_nms_top_n` over all
//!    levels, highest score first.
//!
//! Anchors are torchvision's `AnchorGenerator`: one size per level, the same aspect ratios on
//! every level, rounded cell anchors, stride = padded image size // grid size.
//!
//! Weights: `head.conv.0.0.{weight,bias}` (`head.conv.{weight,bias}` in checkpoints of
//! torchvision < 0.13), `head.cls_logits.*`, `head.bbox_pred.*` under `prefix` (`"rpn."`).
//!
//! With `convention = "detectron2"`, Detectron2's `RPN` with `StandardRPNHead`
//! (`modeling/proposal_generator/{rpn,proposal_utils}.py`, `find_top_rpn_proposals`):
//! - weights `rpn_head.conv.*`, `rpn_head.objectness_logits.*`, `rpn_head.anchor_deltas.*`
//!   under `proposal_generator.`;
//! - `DefaultAnchorGenerator`: unrounded cell anchors, offset 0, and the stride of each level
//!   from its name (`p<k>`: `2^k`), not from the image size;
//! - after the per-level top-n and clipping, boxes are kept when both sides are `> min_size`
//!   (default 0; `Boxes.nonempty`), there is no score threshold, and the per-level NMS ranks
//!   the logits themselves.

use kernels::layers::{Activation, Conv2d, Conv2dParams};
use kernels::ops::{
    batched_nms, clip_boxes_to_image, remove_small_boxes, AnchorGenerator, BoxCoder,
};
use kernels::weights::Weights;
use kernels::Tensor;
use ndarray::ArrayView4;
use plugin_sdk::{
    FrameInfo, Inputs, Instances, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec,
    ParamType, ParamValue, Params, PortKind, PortSpec, Value,
};

use vision_common::{
    conv_bias, count_param, f32_value, feature_levels, features_input, float_param, image_input,
    in_features_param, levels_params, module_name, resolve_prefix, weights_param, weights_params,
    ImageSizes,
};
use vision_common::{LayerContext, ModelError};

use crate::Convention;

/// The settings of [`Rpn`]; the defaults are `maskrcnn_resnet50_fpn`'s at test time.
#[derive(Clone, Debug, PartialEq)]
pub struct RpnConfig {
    /// Channels of every feature level.
    pub channels: usize,
    /// Anchor size of each level, finest first.
    pub anchor_sizes: Vec<f32>,
    /// Aspect ratios (height / width) of the anchors, the same on every level.
    pub aspect_ratios: Vec<f32>,
    pub pre_nms_top_n: usize,
    pub post_nms_top_n: usize,
    pub nms_thresh: f32,
    pub score_thresh: f32,
    pub min_size: f32,
    pub convention: Convention,
    /// The stride of each level (Detectron2's anchors); empty: `padded size // grid size`.
    pub strides: Vec<usize>,
}

impl Default for RpnConfig {
    fn default() -> Self {
        RpnConfig {
            channels: 256,
            anchor_sizes: vec![32.0, 64.0, 128.0, 256.0, 512.0],
            aspect_ratios: vec![0.5, 1.0, 2.0],
            pre_nms_top_n: 1000,
            post_nms_top_n: 1000,
            nms_thresh: 0.7,
            score_thresh: 0.0,
            min_size: 1e-3,
            convention: Convention::Torchvision,
            strides: Vec::new(),
        }
    }
}

impl RpnConfig {
    /// Anchors per location.
    pub fn num_anchors(&self) -> usize {
        self.aspect_ratios.len()
    }

    fn check(&self) -> Result<(), ModelError> {
        if self.channels == 0 {
            return Err(ModelError::param("channels", "must be positive"));
        }
        if self.anchor_sizes.is_empty()
            || self
                .anchor_sizes
                .iter()
                .any(|s| !s.is_finite() || *s <= 0.0)
        {
            return Err(ModelError::param(
                "anchor_sizes",
                format!(
                    "must be positive sizes, one per level, got {:?}",
                    self.anchor_sizes
                ),
            ));
        }
        if self.aspect_ratios.is_empty()
            || self
                .aspect_ratios
                .iter()
                .any(|r| !r.is_finite() || *r <= 0.0)
        {
            return Err(ModelError::param(
                "aspect_ratios",
                format!("must be positive ratios, got {:?}", self.aspect_ratios),
            ));
        }
        Ok(())
    }
}

/// Proposals of one image, highest score first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Proposals {
    /// `(x1, y1, x2, y2)` in resized-image pixels.
    pub boxes: Vec<[f32; 4]>,
    /// Objectness probabilities.
    pub scores: Vec<f32>,
    /// Pyramid level index (0 = finest) each came from.
    pub levels: Vec<i64>,
}

/// The RPN head with its weights bound, and the anchor generator.
#[derive(Clone, Debug)]
pub struct Rpn {
    config: RpnConfig,
    conv: Conv2d,
    cls_logits: Conv2d,
    bbox_pred: Conv2d,
    anchors: AnchorGenerator,
    coder: BoxCoder,
}

impl Rpn {
    /// Binds the head's tensors from `weights` under `prefix`; every missing, unexpected or
    /// mis-shaped tensor is listed in one error.
    pub fn from_weights(
        weights: &Weights,
        prefix: &str,
        config: RpnConfig,
    ) -> Result<Rpn, ModelError> {
        config.check()?;
        let d2 = config.convention == Convention::Detectron2;
        let (conv_names, logits_name, deltas_name) = if d2 {
            (
                ["rpn_head.conv", "rpn_head.conv"],
                "rpn_head.objectness_logits",
                "rpn_head.anchor_deltas",
            )
        } else {
            (
                ["head.conv.0.0", "head.conv"],
                "head.cls_logits",
                "head.bbox_pred",
            )
        };
        let probes = conv_names.map(|n| format!("{n}.weight"));
        let probes: Vec<&str> = probes.iter().map(String::as_str).collect();
        let prefix = resolve_prefix(weights, prefix, &probes);
        let c = config.channels;
        let a = config.num_anchors();
        let mut b = weights.binder(&prefix);
        let conv_name = module_name(weights, &prefix, conv_names[0], conv_names[1]);
        let conv = conv_bias(
            &mut b,
            &conv_name,
            c,
            c,
            3,
            Conv2dParams::default().padding(1),
        )?
        .with_activation(Activation::Relu);
        let cls_logits = conv_bias(&mut b, logits_name, c, a, 1, Conv2dParams::default())?;
        let bbox_pred = conv_bias(&mut b, deltas_name, c, 4 * a, 1, Conv2dParams::default())?;
        if d2 {
            // Checkpoints of older Detectron2 versions also hold the cell anchors, a buffer
            // that the anchors computed here replace.
            b.ignore_module("anchor_generator.");
        }
        b.finish()?;
        let sizes: Vec<Vec<f32>> = config.anchor_sizes.iter().map(|&s| vec![s]).collect();
        let ratios = vec![config.aspect_ratios.clone(); config.anchor_sizes.len()];
        let anchors = if d2 {
            AnchorGenerator::detectron2(sizes, ratios, 0.0)
        } else {
            AnchorGenerator::new(sizes, ratios)
        }
        .map_err(|e| ModelError::input(e.to_string()))?;
        Ok(Rpn {
            config,
            conv,
            cls_logits,
            bbox_pred,
            anchors,
            coder: BoxCoder::new([1.0, 1.0, 1.0, 1.0]),
        })
    }

    pub fn config(&self) -> &RpnConfig {
        &self.config
    }

    /// Proposals for one image from its levels (`[1, C, H, W]`, finest first).
    pub fn forward(
        &self,
        levels: &[ArrayView4<'_, f32>],
        padded: (usize, usize),
        resized: (usize, usize),
    ) -> Result<Proposals, ModelError> {
        let n_levels = self.config.anchor_sizes.len();
        if levels.len() != n_levels {
            return Err(ModelError::input(format!(
                "rpn: got {} feature levels but {} anchor sizes; give one anchor size per level",
                levels.len(),
                n_levels
            )));
        }
        let a = self.config.num_anchors();
        let grids: Vec<(usize, usize)> = levels.iter().map(|l| (l.dim().2, l.dim().3)).collect();
        for (l, v) in levels.iter().enumerate() {
            if v.dim().1 != self.config.channels {
                return Err(ModelError::input(format!(
                    "rpn: feature level {l} has {} channels, the head expects {}",
                    v.dim().1,
                    self.config.channels
                )));
            }
        }
        let anchors = if self.config.strides.is_empty() {
            self.anchors.generate(padded, &grids)
        } else {
            let strides: Vec<(i64, i64)> = self
                .config
                .strides
                .iter()
                .map(|&s| (s as i64, s as i64))
                .collect();
            self.anchors.grid_anchors(&grids, &strides)
        }
        .map_err(|e| ModelError::input(format!("rpn: {e}")))?;

        let mut boxes = Vec::new();
        let mut logits = Vec::new();
        let mut level_ids = Vec::new();
        for (l, x) in levels.iter().enumerate() {
            let t = self
                .conv
                .forward(*x)
                .ctx(|| format!("rpn head conv, level {l}"))?;
            let obj = self
                .cls_logits
                .forward(t.view())
                .ctx(|| format!("rpn cls_logits, level {l}"))?;
            let deltas = self
                .bbox_pred
                .forward(t.view())
                .ctx(|| format!("rpn bbox_pred, level {l}"))?;
            let (h, w) = grids[l];
            let hw = h * w;
            let obj = obj.as_standard_layout();
            let obj = obj.as_slice().unwrap_or(&[]);
            let deltas = deltas.as_standard_layout();
            let deltas = deltas.as_slice().unwrap_or(&[]);
            // Candidate i = (y·W + x)·A + anchor, as torchvision flattens [A, H, W].
            let logit = |i: usize| obj[(i % a) * hw + i / a];
            let top = top_k_indices(hw * a, self.config.pre_nms_top_n, logit);
            for i in top {
                let (anchor, pos) = (i % a, i / a);
                let rel = [0, 1, 2, 3].map(|k| deltas[(anchor * 4 + k) * hw + pos]);
                boxes.push(self.coder.decode_one(&rel, &anchors[l][i]));
                logits.push(logit(i));
                level_ids.push(l as i64);
            }
        }
        let scores: Vec<f32> = logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect();
        let boxes = clip_boxes_to_image(&boxes, resized);
        let min = self.config.min_size;
        let keep: Vec<usize> = match self.config.convention {
            Convention::Torchvision => remove_small_boxes(&boxes, min)
                .into_iter()
                .filter(|&i| scores[i] >= self.config.score_thresh)
                .collect(),
            // Boxes.nonempty(threshold): both sides strictly above it.
            Convention::Detectron2 => (0..boxes.len())
                .filter(|&i| {
                    let b = boxes[i];
                    b[2] - b[0] > min && b[3] - b[1] > min
                })
                .collect(),
        };
        let pick = |v: &[f32]| keep.iter().map(|&i| v[i]).collect::<Vec<f32>>();
        let boxes: Vec<[f32; 4]> = keep.iter().map(|&i| boxes[i]).collect();
        let scores = pick(&scores);
        let level_ids: Vec<i64> = keep.iter().map(|&i| level_ids[i]).collect();
        // Detectron2 ranks the logits: sigmoid maps large ones to equal probabilities.
        let rank = match self.config.convention {
            Convention::Torchvision => scores.clone(),
            Convention::Detectron2 => pick(&logits),
        };
        let mut kept = batched_nms(&boxes, &rank, &level_ids, self.config.nms_thresh as f64)
            .map_err(|e| ModelError::input(format!("rpn: {e}")))?;
        kept.truncate(self.config.post_nms_top_n);
        Ok(Proposals {
            boxes: kept.iter().map(|&i| boxes[i]).collect(),
            scores: kept.iter().map(|&i| scores[i]).collect(),
            levels: kept.iter().map(|&i| level_ids[i]).collect(),
        })
    }
}

/// The indices of the `k` largest `value(i)` for `i < n`, largest first (torch's `topk`); NaN
/// counts as the largest, as in torch, and ties keep the lower index first.
pub(crate) fn top_k_indices(n: usize, k: usize, value: impl Fn(usize) -> f32) -> Vec<usize> {
    let key = |i: usize| {
        let v = value(i);
        if v.is_nan() {
            f32::INFINITY
        } else {
            v
        }
    };
    // Descending by value, then ascending by index.
    let order = |x: &usize, y: &usize| {
        key(*y)
            .partial_cmp(&key(*x))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(x.cmp(y))
    };
    let mut idx: Vec<usize> = (0..n).collect();
    let k = k.min(n);
    if k == 0 {
        return Vec::new();
    }
    if k < n {
        idx.select_nth_unstable_by(k - 1, order);
        idx.truncate(k);
    }
    idx.sort_unstable_by(order);
    idx
}

pub fn kind() -> NodeKind {
    let d = RpnConfig::default();
    let spec = NodeSpec::new(
        "rpn",
        "torchvision RegionProposalNetwork (inference): RPNHead on every level, top-n, decode, clip, NMS 0.7 per level",
    );
    let spec = features_input(spec, "the FPN levels named in `in_features` (p2..p6)");
    let spec = image_input(
        spec,
        "the image from rcnn_preprocess (its padded size sets the anchor strides, image_size the clipping)",
    )
    .output(PortSpec::new(
        "proposals",
        PortKind::Instances,
        "proposals in resized-image pixels, highest objectness first: boxes, scores (sigmoid of the objectness), classes 0, levels (i64, 0 = finest)",
    ));
    let spec = weights_params(
        spec,
        "the RPN head",
        "rpn.",
        "name prefix of the RPN's tensors (with convention = \"detectron2\", this default means \"proposal_generator.\")",
    );
    let spec = Convention::param(spec);
    let spec = levels_params(
        spec,
        &["p2", "p3", "p4", "p5", "p6"],
        "feature levels, finest first (one anchor size each)",
        d.channels,
    )
    .param(ParamSpec::optional(
        "anchor_sizes",
        ParamType::FloatList,
        ParamValue::FloatList(d.anchor_sizes.iter().map(|&v| f32_value(v)).collect()),
        "anchor size of each level, finest first",
    ))
    .param(ParamSpec::optional(
        "aspect_ratios",
        ParamType::FloatList,
        ParamValue::FloatList(d.aspect_ratios.iter().map(|&v| f32_value(v)).collect()),
        "anchor aspect ratios (height / width), the same on every level",
    ))
    .param(
        ParamSpec::optional(
            "pre_nms_top_n",
            ParamType::Int,
            ParamValue::Int(d.pre_nms_top_n as i64),
            "candidates kept per level before NMS (torchvision's rpn_pre_nms_top_n_test)",
        )
        .range(1.0, 16777216.0),
    )
    .param(
        ParamSpec::optional(
            "post_nms_top_n",
            ParamType::Int,
            ParamValue::Int(d.post_nms_top_n as i64),
            "proposals kept after NMS (torchvision's rpn_post_nms_top_n_test)",
        )
        .range(1.0, 16777216.0),
    )
    .param(
        ParamSpec::optional(
            "nms_thresh",
            ParamType::Float,
            ParamValue::Float(f32_value(d.nms_thresh)),
            "IoU threshold of the per-level NMS",
        )
        .range(0.0, 1.0),
    )
    .param(
        ParamSpec::optional(
            "score_thresh",
            ParamType::Float,
            ParamValue::Float(f32_value(d.score_thresh)),
            "minimum objectness probability (kept when >=)",
        )
        .range(0.0, 1.0),
    )
    .param(
        ParamSpec::optional(
            "min_size",
            ParamType::Float,
            ParamValue::Float(-1.0),
            "proposals with a side shorter than this (pixels) are dropped; -1: the convention's (torchvision 1e-3, kept when >=; detectron2 0, kept when >)",
        )
        .range(-1.0, 1e6),
    );
    NodeKind::new(spec, |params| {
        Ok(Box::new(RpnNode::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `rpn` node.
#[derive(Debug)]
pub struct RpnNode {
    model: Rpn,
    in_features: Vec<String>,
}

fn positive_floats(params: &Params, name: &'static str) -> Result<Vec<f32>, ModelError> {
    let v = params.float_list(name).map_err(ModelError::Input)?;
    if v.is_empty() || v.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
        return Err(ModelError::param(
            name,
            format!("must be positive numbers, got {v:?}"),
        ));
    }
    Ok(v.iter().map(|&x| x as f32).collect())
}

/// The stride of a pyramid level named `p<k>` (or `c<k>`, `res<k>`): `2^k`.
fn level_stride(name: &str) -> Result<usize, ModelError> {
    let digits = name.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    match digits.parse::<u32>() {
        Ok(k) if (1..=12).contains(&k) && digits.len() < name.len() => Ok(1 << k),
        _ => Err(ModelError::param(
            "in_features",
            format!("with convention = \"detectron2\" the anchors' stride comes from the level's name, p<k> for stride 2^k (p2..p6); got \"{name}\""),
        )),
    }
}

impl RpnNode {
    pub fn from_params(params: &Params) -> Result<RpnNode, ModelError> {
        let in_features = in_features_param(params)?;
        let convention = Convention::from_params(params)?;
        let min_size = match float_param(params, "min_size")? {
            v if v < 0.0 => match convention {
                Convention::Torchvision => RpnConfig::default().min_size,
                Convention::Detectron2 => 0.0,
            },
            v => v,
        };
        let strides = match convention {
            Convention::Torchvision => Vec::new(),
            Convention::Detectron2 => in_features
                .iter()
                .map(|name| level_stride(name))
                .collect::<Result<_, _>>()?,
        };
        let config = RpnConfig {
            channels: count_param(params, "channels")?,
            anchor_sizes: positive_floats(params, "anchor_sizes")?,
            aspect_ratios: positive_floats(params, "aspect_ratios")?,
            pre_nms_top_n: count_param(params, "pre_nms_top_n")?,
            post_nms_top_n: count_param(params, "post_nms_top_n")?,
            nms_thresh: float_param(params, "nms_thresh")?,
            score_thresh: float_param(params, "score_thresh")?,
            min_size,
            convention,
            strides,
        };
        if config.anchor_sizes.len() != in_features.len() {
            return Err(ModelError::param(
                "anchor_sizes",
                format!(
                    "has {} sizes for {} levels {in_features:?}; give one per level",
                    config.anchor_sizes.len(),
                    in_features.len()
                ),
            ));
        }
        let (weights, prefix) = weights_param(params)?;
        let prefix = match (convention, prefix.as_str()) {
            (Convention::Detectron2, "rpn.") => "proposal_generator.".to_string(),
            _ => prefix,
        };
        Ok(RpnNode {
            model: Rpn::from_weights(&weights, &prefix, config)?,
            in_features,
        })
    }

    pub fn model(&self) -> &Rpn {
        &self.model
    }

    /// The node's computation: proposals for the image.
    pub fn run(&self, features: &Value, image: &Value) -> Result<Value, ModelError> {
        let sizes = ImageSizes::from_value("rpn", image)?;
        let levels = feature_levels("rpn", features, &self.in_features)?;
        let p = self.model.forward(&levels, sizes.padded, sizes.resized)?;
        let n = p.boxes.len();
        let mut v = Instances {
            classes: vec![0; n],
            boxes: p.boxes,
            scores: p.scores,
        }
        .to_value()
        .map_err(ModelError::Input)?;
        v.insert("levels", Tensor::from_vec(&[n], p.levels)?);
        Ok(v)
    }
}

impl Node for RpnNode {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(inputs.value("features")?, inputs.value("image")?)?;
        Ok(Outputs::one("proposals", v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_torch_topk() {
        let v = [0.5f32, 2.0, f32::NAN, 2.0, -1.0, 3.0];
        assert_eq!(top_k_indices(6, 3, |i| v[i]), [2, 5, 1]);
        assert_eq!(top_k_indices(6, 10, |i| v[i]), [2, 5, 1, 3, 0, 4]);
        assert!(top_k_indices(6, 0, |i| v[i]).is_empty());
        assert!(top_k_indices(0, 5, |i| v[i]).is_empty());
    }

    #[test]
    fn config_is_checked() {
        let mut c = RpnConfig::default();
        assert!(c.check().is_ok());
        c.aspect_ratios = vec![0.0];
        assert!(c.check().unwrap_err().to_string().contains("aspect_ratios"));
        c = RpnConfig {
            anchor_sizes: vec![],
            ..Default::default()
        };
        assert!(c.check().unwrap_err().to_string().contains("anchor_sizes"));
    }
}
