//! `roi_keypoint_head`: torchvision's `RoIHeads` keypoint branch at inference
//! (`roi_heads.py`, `keypoint_rcnn.py`), as built by `keypointrcnn_resnet50_fpn`.
//!
//! 1. `MultiScaleRoIAlign(["0".."3"], 14, sampling_ratio=2)` on the detection boxes
//!    (resized-image pixels);
//! 2. `KeypointRCNNHeads`: eight 3x3 convolutions (512, padding 1) + ReLU;
//! 3. `KeypointRCNNPredictor`: `kps_score_lowres` (4x4 transposed convolution, stride 2,
//!    padding 1: 14 -> 28), then `interpolate(scale_factor=2, "bilinear",
//!    align_corners=False, recompute_scale_factor=False)`: 56x56 heatmap logits;
//! 4. `heatmaps_to_keypoints`: each heatmap resampled bicubically to the box's size
//!    (`ceil` of its width and height, at least 1), its first maximum taken, and mapped back
//!    as `(x + 0.5)·width / ceil(width) + x1` (likewise y); the score is the resampled
//!    logit there.
//!
//! Output: the detections with `keypoints` f32 `[N, K, 3]` = (x, y, 1) in resized-image
//! pixels (torchvision's visibility flag 1) and `keypoints_scores` f32 `[N, K]`.
//! `paste_masks` (transform.postprocess) scales them to the original image.
//!
//! Weights: `keypoint_head.{0,2,..,14}.*` and `keypoint_predictor.kps_score_lowres.*` under
//! `prefix` (`"roi_heads."`).

use kernels::layers::resize::{interpolate_scale, resize_bicubic};
use kernels::layers::ResizeMode;
use kernels::layers::{Activation, Conv2d, Conv2dParams, ConvTranspose2d, ConvTranspose2dParams};
use kernels::weights::Weights;
use kernels::Tensor;
use ndarray::{s, Array4, ArrayView3, ArrayView4, Ix1, Ix4};
use plugin_sdk::{
    FrameInfo, Inputs, Instances, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec,
    ParamType, ParamValue, Params, PortKind, PortSpec, Value,
};
use rayon::prelude::*;

use vision_common::{
    conv_bias, count_list_param, count_param, feature_levels, features_input, image_input,
    in_features_param, levels_params, resolve_prefix, weights_param, weights_params, ImageSizes,
    RoiPooler,
};
use vision_common::{LayerContext, ModelError};

/// The settings of [`KeypointHead`]; the defaults are `keypointrcnn_resnet50_fpn`'s.
#[derive(Clone, Debug, PartialEq)]
pub struct KeypointHeadConfig {
    pub channels: usize,
    pub pooler_size: usize,
    pub sampling_ratio: i32,
    /// Output channels of each 3x3 convolution of `KeypointRCNNHeads`.
    pub layers: Vec<usize>,
    pub num_keypoints: usize,
}

impl Default for KeypointHeadConfig {
    fn default() -> Self {
        KeypointHeadConfig {
            channels: 256,
            pooler_size: 14,
            sampling_ratio: 2,
            layers: vec![512; 8],
            num_keypoints: 17,
        }
    }
}

/// The keypoints of `N` detections: `xy` `[N, K, 3]` (x, y, 1) and `scores` `[N, K]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Keypoints {
    pub xy: Vec<f32>,
    pub scores: Vec<f32>,
}

/// The keypoint branch with its weights bound.
#[derive(Debug)]
pub struct KeypointHead {
    config: KeypointHeadConfig,
    pooler: RoiPooler,
    convs: Vec<Conv2d>,
    kps_score_lowres: ConvTranspose2d,
}

impl KeypointHead {
    pub fn from_weights(
        weights: &Weights,
        prefix: &str,
        config: KeypointHeadConfig,
    ) -> Result<KeypointHead, ModelError> {
        if config.layers.is_empty() || config.layers.contains(&0) {
            return Err(ModelError::param(
                "layers",
                format!("must be positive channel counts, got {:?}", config.layers),
            ));
        }
        let prefix = resolve_prefix(weights, prefix, &["keypoint_head.0.weight"]);
        let mut b = weights.binder(&prefix);
        let mut convs = Vec::new();
        let mut cin = config.channels;
        for (i, &cout) in config.layers.iter().enumerate() {
            // nn.Sequential(conv, ReLU, conv, ReLU, ...): the convolutions are the even items.
            let name = format!("keypoint_head.{}", 2 * i);
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
        let k = config.num_keypoints;
        let w = b.take(
            "keypoint_predictor.kps_score_lowres.weight",
            &[cin, k, 4, 4],
        );
        let bias = b.take("keypoint_predictor.kps_score_lowres.bias", &[k]);
        let kps_score_lowres = ConvTranspose2d::new(
            w.view::<f32>()?
                .into_dimensionality::<Ix4>()
                .map_err(|e| ModelError::input(e.to_string()))?,
            Some(
                bias.view::<f32>()?
                    .into_dimensionality::<Ix1>()
                    .map_err(|e| ModelError::input(e.to_string()))?,
            ),
            ConvTranspose2dParams::default().stride(2).padding(1),
        )
        .ctx(|| "keypoint_predictor.kps_score_lowres".into())?;
        crate::ignore_other_heads(&mut b, &["keypoint_head.", "keypoint_predictor."]);
        b.finish()?;
        Ok(KeypointHead {
            pooler: RoiPooler::new(config.pooler_size, config.sampling_ratio),
            config,
            convs,
            kps_score_lowres,
        })
    }

    pub fn config(&self) -> &KeypointHeadConfig {
        &self.config
    }

    /// Heatmap logits `[N, K, 4·pooler, 4·pooler]` of the detections (`boxes` in
    /// resized-image pixels): `KeypointRCNNHeads` and `KeypointRCNNPredictor`.
    pub fn heatmaps(
        &self,
        levels: &[ArrayView4<'_, f32>],
        boxes: &[[f32; 4]],
        resized: (usize, usize),
    ) -> Result<Array4<f32>, ModelError> {
        if let Some(first) = levels.first() {
            if first.dim().1 != self.config.channels {
                return Err(ModelError::input(format!(
                    "roi_keypoint_head: the feature levels have {} channels, the head expects {}",
                    first.dim().1,
                    self.config.channels
                )));
            }
        }
        let side = 4 * self.config.pooler_size;
        if boxes.is_empty() {
            return Ok(Array4::zeros((0, self.config.num_keypoints, side, side)));
        }
        let mut x = self
            .pooler
            .pool("roi_keypoint_head", levels, boxes, resized)?;
        for (i, conv) in self.convs.iter().enumerate() {
            x = conv
                .forward(x.view())
                .ctx(|| format!("keypoint_head.{}", 2 * i))?;
        }
        let x = self
            .kps_score_lowres
            .forward(x.view())
            .ctx(|| "keypoint_predictor.kps_score_lowres".into())?;
        let maps = interpolate_scale(
            x.view(),
            (2.0, 2.0),
            ResizeMode::Bilinear {
                align_corners: false,
            },
            false,
        )
        .ctx(|| "keypoint_predictor (2x bilinear upsampling)".into())?;
        Ok(maps)
    }

    /// The keypoints of the detections.
    pub fn forward(
        &self,
        levels: &[ArrayView4<'_, f32>],
        boxes: &[[f32; 4]],
        resized: (usize, usize),
    ) -> Result<Keypoints, ModelError> {
        let maps = self.heatmaps(levels, boxes, resized)?;
        heatmaps_to_keypoints(maps.view(), boxes)
    }
}

/// torchvision's `heatmaps_to_keypoints`: for each detection and keypoint, the heatmap
/// resampled bicubically to the box's `ceil(height) x ceil(width)` pixels, the position of
/// its first maximum, and the logit there. `maps` `[N, K, H, W]`, `boxes` `[N]` (x1, y1,
/// x2, y2).
pub fn heatmaps_to_keypoints(
    maps: ArrayView4<'_, f32>,
    boxes: &[[f32; 4]],
) -> Result<Keypoints, ModelError> {
    let (n, k, _, _) = maps.dim();
    if n != boxes.len() {
        return Err(ModelError::input(format!(
            "heatmaps_to_keypoints: {n} heatmaps for {} boxes",
            boxes.len()
        )));
    }
    if let Some(b) = boxes.iter().find(|b| b.iter().any(|v| !v.is_finite())) {
        return Err(ModelError::input(format!(
            "heatmaps_to_keypoints: a box is not finite: {b:?}"
        )));
    }
    let per_box: Vec<Keypoints> = boxes
        .par_iter()
        .enumerate()
        .map(|(i, b)| keypoints_of_box(maps.slice(s![i, .., .., ..]), b))
        .collect::<Result<_, _>>()?;
    let mut out = Keypoints {
        xy: Vec::with_capacity(n * k * 3),
        scores: Vec::with_capacity(n * k),
    };
    for kp in per_box {
        out.xy.extend(kp.xy);
        out.scores.extend(kp.scores);
    }
    Ok(out)
}

/// The keypoints of one box from its heatmaps `[K, H, W]`.
fn keypoints_of_box(maps: ArrayView3<'_, f32>, b: &[f32; 4]) -> Result<Keypoints, ModelError> {
    let (k, _, _) = maps.dim();
    let width = (b[2] - b[0]).max(1.0);
    let height = (b[3] - b[1]).max(1.0);
    let (map_w, map_h) = (width.ceil() as usize, height.ceil() as usize);
    let resampled = resize_bicubic(maps.insert_axis(ndarray::Axis(0)), (map_h, map_w), false)
        .ctx(|| "heatmaps_to_keypoints".into())?;
    let width_correction = width / map_w as f32;
    let height_correction = height / map_h as f32;
    let mut xy = Vec::with_capacity(k * 3);
    let mut scores = Vec::with_capacity(k);
    for plane in resampled.index_axis(ndarray::Axis(0), 0).outer_iter() {
        let flat = plane.as_slice().ok_or_else(|| {
            ModelError::input("heatmaps_to_keypoints: a heatmap is not contiguous")
        })?;
        // The first maximum, as torch's argmax (NaN counts as the maximum).
        let mut best = 0;
        for (j, &v) in flat.iter().enumerate() {
            if v > flat[best] || (v.is_nan() && !flat[best].is_nan()) {
                best = j;
            }
        }
        let (x_int, y_int) = (best % map_w, best / map_w);
        xy.push((x_int as f32 + 0.5) * width_correction + b[0]);
        xy.push((y_int as f32 + 0.5) * height_correction + b[1]);
        xy.push(1.0);
        scores.push(flat[best]);
    }
    Ok(Keypoints { xy, scores })
}

pub fn kind() -> NodeKind {
    let d = KeypointHeadConfig::default();
    let spec = NodeSpec::new(
        "roi_keypoint_head",
        "torchvision RoIHeads keypoint branch: MultiScaleRoIAlign 14x14, eight 3x3 convs, transposed conv, 2x upsampling, heatmaps_to_keypoints",
    );
    let spec = features_input(spec, "the FPN levels named in `in_features` (p2..p5)").input(
        PortSpec::new(
            "detections",
            PortKind::Instances,
            "detections in resized-image pixels (from roi_box_head)",
        ),
    );
    let spec = image_input(
        spec,
        "the image from rcnn_preprocess (image_size: RoIAlign's level scales)",
    )
    .output(PortSpec::new(
        "instances",
        PortKind::Instances,
        "the detections with keypoints f32 [N, K, 3] (x, y, 1) and keypoints_scores f32 [N, K], in resized-image pixels",
    ));
    let spec = weights_params(
        spec,
        "the keypoint head",
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
            "num_keypoints",
            ParamType::Int,
            ParamValue::Int(d.num_keypoints as i64),
            "keypoints per instance (17 for COCO persons)",
        )
        .range(1.0, 1024.0),
    )
    .param(ParamSpec::optional(
        "layers",
        ParamType::IntList,
        ParamValue::IntList(d.layers.iter().map(|&v| v as i64).collect()),
        "output channels of the 3x3 convolutions (KeypointRCNNHeads)",
    ))
    .param(
        ParamSpec::optional(
            "sampling_ratio",
            ParamType::Int,
            ParamValue::Int(d.sampling_ratio as i64),
            "RoIAlign samples per bin side (0: adaptive)",
        )
        .range(0.0, 64.0),
    );
    NodeKind::new(spec, |params| {
        Ok(Box::new(KeypointHeadNode::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `roi_keypoint_head` node.
#[derive(Debug)]
pub struct KeypointHeadNode {
    model: KeypointHead,
    in_features: Vec<String>,
}

impl KeypointHeadNode {
    pub fn from_params(params: &Params) -> Result<KeypointHeadNode, ModelError> {
        let in_features = in_features_param(params)?;
        let layers = count_list_param(params, "layers")?;
        let config = KeypointHeadConfig {
            channels: count_param(params, "channels")?,
            pooler_size: 14,
            sampling_ratio: count_param(params, "sampling_ratio")? as i32,
            layers,
            num_keypoints: count_param(params, "num_keypoints")?,
        };
        let (weights, prefix) = weights_param(params)?;
        Ok(KeypointHeadNode {
            model: KeypointHead::from_weights(&weights, &prefix, config)?,
            in_features,
        })
    }

    pub fn model(&self) -> &KeypointHead {
        &self.model
    }

    /// The node's computation: the detections with their keypoints.
    pub fn run(
        &self,
        features: &Value,
        detections: &Value,
        image: &Value,
    ) -> Result<Value, ModelError> {
        let sizes = ImageSizes::from_value("roi_keypoint_head", image)?;
        let levels = feature_levels("roi_keypoint_head", features, &self.in_features)?;
        let det = Instances::from_value(detections).map_err(ModelError::Input)?;
        let kp = self.model.forward(&levels, &det.boxes, sizes.resized)?;
        let (n, k) = (det.boxes.len(), self.model.config.num_keypoints);
        let mut out = detections.clone();
        out.insert("keypoints", Tensor::from_vec(&[n, k, 3], kp.xy)?);
        out.insert("keypoints_scores", Tensor::from_vec(&[n, k], kp.scores)?);
        Ok(out)
    }
}

impl Node for KeypointHeadNode {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(
            inputs.value("features")?,
            inputs.value("detections")?,
            inputs.value("image")?,
        )?;
        Ok(Outputs::one("instances", v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    /// A single peak lands at its pixel centre, mapped into the box; boxes narrower than a
    /// pixel count as one pixel wide.
    #[test]
    fn peak_maps_to_box_coordinates() {
        let mut maps = Array4::<f32>::zeros((2, 1, 8, 8));
        maps[[0, 0, 2, 5]] = 10.0;
        maps[[1, 0, 0, 0]] = 3.0;
        let boxes = [[10.0, 20.0, 26.0, 36.0], [5.0, 5.0, 5.2, 5.4]];
        let kp = heatmaps_to_keypoints(maps.view(), &boxes).unwrap();
        // 8 -> 16 pixels: the peak's source (5, 2) is near output (10.5.., 4.5..).
        let (x, y) = (kp.xy[0], kp.xy[1]);
        assert!(
            (x - 10.0 - 11.0).abs() <= 1.0 && (y - 20.0 - 5.0).abs() <= 1.0,
            "{x} {y}"
        );
        assert_eq!(kp.xy[2], 1.0);
        assert!(
            kp.scores[0] > 5.0 && kp.scores[0] <= 10.0,
            "{}",
            kp.scores[0]
        );
        // A 0.2 x 0.4 box is resampled to 1x1: the keypoint is its corner + half a unit.
        assert_eq!((kp.xy[3], kp.xy[4]), (5.5, 5.5));
        let bad = heatmaps_to_keypoints(maps.view(), &[[0.0, 0.0, f32::NAN, 1.0], boxes[1]]);
        assert!(bad.unwrap_err().to_string().contains("not finite"));
        assert!(heatmaps_to_keypoints(maps.view(), &boxes[..1]).is_err());
    }
}
