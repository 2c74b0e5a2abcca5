//! `roi_densepose_head`: DensePose's chart head on the Mask R-CNN trunk, as the DensePose
//! project of Detectron2 builds it at inference (`projects/DensePose/densepose`:
//! `modeling/roi_heads/roi_head.py`, `roi_heads/v1convx.py`, `predictors/chart.py`,
//! `converters/chart_output_to_chart_result.py`).
//!
//! 1. With `decoder = true` (the default, `DECODER_ON`), the FPN levels p2..p5 are merged by
//!    the semantic-FPN `Decoder`: per level, `max(1, log2(stride / 4))` 3x3 convolutions +
//!    ReLU, each followed by a 2x bilinear upsampling when the level is coarser than 1/4;
//!    summed, then a 1x1 `predictor`. RoIs are pooled from that single 1/4 map. Without the
//!    decoder (the `_legacy` configurations), RoIs are pooled from p2..p5 with Detectron2's
//!    level rule (`floor(4 + log2(sqrt(area) / 224 + 1e-8))`). Pooling is RoIAlign with
//!    `aligned=False` (the configs' `POOLER_TYPE: "ROIAlign"`), 28x28 (14 legacy), sampling 2.
//! 2. `DensePoseV1ConvXHead`: eight 3x3 convolutions (512) + ReLU, `body_conv_fcn1..8`.
//! 3. `DensePoseChartPredictor`: four 4x4 stride-2 transposed convolutions (coarse
//!    segmentation, 25-way fine segmentation, U, V), each followed by 2x bilinear upsampling:
//!    112x112 (56 legacy). The four run as one transposed convolution with their output
//!    channels stacked (one GEMM instead of four; the same sums per channel).
//! 4. `densepose_chart_predictor_output_to_result`, per detection: its box scaled to the
//!    original image (torchvision's `resize_boxes`, as `paste_masks` scales it), converted to
//!    XYWH and truncated to integers (`make_int_box`, width and height at least 1); the
//!    coarse and fine maps resized bilinearly to the box and their `argmax` taken; the label is
//!    the fine part where the coarse argmax is foreground (> 0), else 0; U and V are the part's
//!    channels resized to the box where the label is that part, else 0.
//!
//! Output: the detections with the DensePose result of each, box-local as DensePose stores
//! it: `densepose_boxes` i64 `[N, 4]` (x, y, w, h of the integer box in original-image
//! pixels), `densepose_labels` u8 `[N, Hb, Wb]` (part 0..24, 0 = background) and
//! `densepose_uv` f32 `[N, 2, Hb, Wb]`, where instance `i` fills the top-left
//! `h_i x w_i` of its plane and `Hb x Wb` is the largest box; `densepose_image_size` i64
//! `[N, 2]` is the original image's (height, width) on every row (the image-size masks of
//! DensePose's results). `json_sink` writes them in
//! DensePose's results format and `image_sink` draws them; `paste_masks` passes them through.
//!
//! Weights: Detectron2's names under `prefix` (`"roi_heads."`): `decoder.{p2..p5}.{0,2,4}`
//! and `decoder.predictor`, `densepose_head.body_conv_fcn{1..8}`,
//! `densepose_predictor.{ann_index_lowres,index_uv_lowres,u_lowres,v_lowres}`.

use kernels::layers::resize::{interpolate_scale, resize};
use kernels::layers::ResizeMode;
use kernels::layers::{Activation, Conv2d, Conv2dParams, ConvTranspose2d, ConvTranspose2dParams};
use kernels::ops::poolers::infer_scale;
use kernels::ops::MultiScaleRoIAlign;
use kernels::weights::Weights;
use kernels::Tensor;
use ndarray::{concatenate, s, Array1, Array3, Array4, ArrayView3, ArrayView4, Axis, Ix1, Ix4};
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

use crate::semantic_fpn::SemanticFpn;

const NODE: &str = "roi_densepose_head";

/// Bilinear resampling as `F.interpolate(..., mode="bilinear", align_corners=False)`.
const BILINEAR: ResizeMode = ResizeMode::Bilinear {
    align_corners: false,
};

/// The settings of [`DensePoseHead`]; the defaults are `densepose_rcnn_R_50_FPN_s1x`'s.
#[derive(Clone, Debug, PartialEq)]
pub struct DensePoseHeadConfig {
    /// Channels of the FPN levels.
    pub channels: usize,
    /// `DECODER_ON`: pool from the semantic-FPN decoder's 1/4 map instead of the levels.
    pub decoder: bool,
    /// `DECODER_CONV_DIMS`.
    pub decoder_channels: usize,
    /// `POOLER_RESOLUTION`.
    pub pooler_size: usize,
    /// `POOLER_SAMPLING_RATIO`.
    pub sampling_ratio: i32,
    /// `CONV_HEAD_DIM` per convolution; `NUM_STACKED_CONVS` is the list's length.
    pub layers: Vec<usize>,
    /// `NUM_COARSE_SEGM_CHANNELS`: 2 (foreground/background) or 15 (legacy).
    pub coarse_channels: usize,
    /// `NUM_PATCHES` (24 body parts; the fine maps have one more, the background).
    pub num_patches: usize,
}

impl Default for DensePoseHeadConfig {
    fn default() -> Self {
        DensePoseHeadConfig {
            channels: 256,
            decoder: true,
            decoder_channels: 256,
            pooler_size: 28,
            sampling_ratio: 2,
            layers: vec![512; 8],
            coarse_channels: 2,
            num_patches: 24,
        }
    }
}

/// The DensePose branch with its weights bound.
#[derive(Debug)]
pub struct DensePoseHead {
    config: DensePoseHeadConfig,
    decoder: Option<SemanticFpn>,
    pooler: RoiPooler,
    convs: Vec<Conv2d>,
    /// The four predictor layers as one: output channels `[coarse | fine | u | v]`.
    predictor: ConvTranspose2d,
}

/// The DensePose result of one detection: its integer box `(x, y, w, h)` in original-image
/// pixels, the part label of each box pixel `[h, w]`, and U, V `[2, h, w]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ChartResult {
    pub box_xywh: [i64; 4],
    pub labels: ndarray::Array2<u8>,
    pub uv: Array3<f32>,
}

const PREDICTOR_LAYERS: [&str; 4] = [
    "ann_index_lowres",
    "index_uv_lowres",
    "u_lowres",
    "v_lowres",
];

impl DensePoseHead {
    pub fn from_weights(
        weights: &Weights,
        prefix: &str,
        in_features: &[String],
        config: DensePoseHeadConfig,
    ) -> Result<DensePoseHead, ModelError> {
        if config.layers.is_empty() || config.layers.contains(&0) {
            return Err(ModelError::param(
                "layers",
                format!("must be positive channel counts, got {:?}", config.layers),
            ));
        }
        let prefix = resolve_prefix(weights, prefix, &["densepose_head.body_conv_fcn1.weight"]);
        let mut b = weights.binder(&prefix);
        let decoder = if config.decoder {
            // DECODER_NUM_CLASSES: the head reads the decoder's output with the FPN's width.
            Some(SemanticFpn::bind(
                &mut b,
                "decoder",
                in_features,
                config.channels,
                config.decoder_channels,
                config.channels,
                false,
            )?)
        } else {
            None
        };
        let mut convs = Vec::new();
        let mut cin = config.channels;
        for (i, &cout) in config.layers.iter().enumerate() {
            convs.push(
                conv_bias(
                    &mut b,
                    &format!("densepose_head.body_conv_fcn{}", i + 1),
                    cin,
                    cout,
                    3,
                    Conv2dParams::default().padding(1),
                )?
                .with_activation(Activation::Relu),
            );
            cin = cout;
        }
        let parts = config.num_patches + 1;
        let widths = [config.coarse_channels, parts, parts, parts];
        let mut weights_4 = Vec::new();
        let mut biases = Vec::new();
        for (layer, cout) in PREDICTOR_LAYERS.iter().zip(widths) {
            let name = format!("densepose_predictor.{layer}");
            weights_4.push(b.take(&format!("{name}.weight"), &[cin, cout, 4, 4]));
            biases.push(b.take(&format!("{name}.bias"), &[cout]));
        }
        crate::ignore_other_heads(
            &mut b,
            &["decoder.", "densepose_head.", "densepose_predictor."],
        );
        b.finish()?;
        let views4 = weights_4
            .iter()
            .map(|t| {
                t.view::<f32>()?
                    .into_dimensionality::<Ix4>()
                    .map_err(|e| ModelError::input(e.to_string()))
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let views1 = biases
            .iter()
            .map(|t| {
                t.view::<f32>()?
                    .into_dimensionality::<Ix1>()
                    .map_err(|e| ModelError::input(e.to_string()))
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let weight = concatenate(Axis(1), &views4).map_err(|e| ModelError::input(e.to_string()))?;
        let bias: Array1<f32> =
            concatenate(Axis(0), &views1).map_err(|e| ModelError::input(e.to_string()))?;
        let predictor = ConvTranspose2d::new(
            weight.view(),
            Some(bias.view()),
            ConvTranspose2dParams::default().stride(2).padding(1),
        )
        .ctx(|| "densepose_predictor".into())?;
        let align = MultiScaleRoIAlign::detectron2(config.pooler_size, config.sampling_ratio);
        Ok(DensePoseHead {
            pooler: RoiPooler::from_align(align),
            config,
            decoder,
            convs,
            predictor,
        })
    }

    pub fn config(&self) -> &DensePoseHeadConfig {
        &self.config
    }

    /// The predictor's maps `[N, K + 3·25, S, S]` (coarse, fine, U, V stacked; `S` =
    /// 4·pooler size) for `boxes` in resized-image pixels.
    pub fn charts(
        &self,
        levels: &[ArrayView4<'_, f32>],
        boxes: &[[f32; 4]],
        resized: (usize, usize),
    ) -> Result<Array4<f32>, ModelError> {
        if let Some(first) = levels.first() {
            if first.dim().1 != self.config.channels {
                return Err(ModelError::input(format!(
                    "{NODE}: the feature levels have {} channels, the head expects {}",
                    first.dim().1,
                    self.config.channels
                )));
            }
        }
        let side = 4 * self.config.pooler_size;
        let width = self.config.coarse_channels + 3 * (self.config.num_patches + 1);
        if boxes.is_empty() {
            return Ok(Array4::zeros((0, width, side, side)));
        }
        let mut x = match &self.decoder {
            Some(decoder) => {
                let merged = decoder.forward(levels)?;
                // The decoder's map is at the finest level's scale (1/4).
                let scale = infer_scale(merged.dim().2, resized.0)
                    .map_err(|e| ModelError::input(format!("{NODE}: {e}")))?;
                if scale != 0.25 {
                    return Err(ModelError::input(format!(
                        "{NODE}: the first feature level must be at 1/4 of the image (p2), it is at {scale}"
                    )));
                }
                self.pooler.pool(NODE, &[merged.view()], boxes, resized)?
            }
            None => self.pooler.pool(NODE, levels, boxes, resized)?,
        };
        for (i, conv) in self.convs.iter().enumerate() {
            x = conv
                .forward(x.view())
                .ctx(|| format!("densepose_head.body_conv_fcn{}", i + 1))?;
        }
        let x = self
            .predictor
            .forward(x.view())
            .ctx(|| "densepose_predictor".into())?;
        interpolate_scale(x.view(), (2.0, 2.0), BILINEAR, false)
            .ctx(|| "densepose_predictor (2x bilinear upsampling)".into())
    }

    /// The DensePose results of the detections (`boxes` in resized-image pixels).
    pub fn forward(
        &self,
        levels: &[ArrayView4<'_, f32>],
        boxes: &[[f32; 4]],
        sizes: &ImageSizes,
    ) -> Result<Vec<ChartResult>, ModelError> {
        if let Some(b) = boxes.iter().find(|b| b.iter().any(|v| !v.is_finite())) {
            return Err(ModelError::input(format!(
                "{NODE}: a detection box is not finite: {b:?}"
            )));
        }
        let maps = self.charts(levels, boxes, sizes.resized)?;
        let k = self.config.coarse_channels;
        boxes
            .par_iter()
            .enumerate()
            .map(|(i, b)| chart_to_box(maps.slice(s![i, .., .., ..]), k, &sizes.box_to_original(b)))
            .collect()
    }
}

/// `make_int_box` of an XYXY box: XYWH (`w = x2 - x1` in f32), each truncated to an integer.
pub fn int_box_xywh(b: &[f32; 4]) -> [i64; 4] {
    [b[0], b[1], b[2] - b[0], b[3] - b[1]].map(|v| v as i64)
}

/// `densepose_chart_predictor_output_to_result` for one detection: `maps` `[K + 75, S, S]`
/// (coarse, fine, U, V stacked), `coarse_channels` = K, `box_xyxy` in original pixels.
pub fn chart_to_box(
    maps: ArrayView3<'_, f32>,
    coarse_channels: usize,
    box_xyxy: &[f32; 4],
) -> Result<ChartResult, ModelError> {
    let box_xywh = int_box_xywh(box_xyxy);
    let w = box_xywh[2].max(1) as usize;
    let h = box_xywh[3].max(1) as usize;
    let parts = (maps.dim().0 - coarse_channels) / 3;
    let resized = resize(maps.insert_axis(Axis(0)), (h, w), BILINEAR)
        .ctx(|| format!("{NODE}: resampling to the box {box_xywh:?}"))?;
    let resized = resized.index_axis(Axis(0), 0);
    let coarse = resized.slice(s![..coarse_channels, .., ..]);
    let fine = resized.slice(s![coarse_channels..coarse_channels + parts, .., ..]);
    let u = resized.slice(s![
        coarse_channels + parts..coarse_channels + 2 * parts,
        ..,
        ..
    ]);
    let v = resized.slice(s![coarse_channels + 2 * parts.., .., ..]);
    let mut labels = ndarray::Array2::<u8>::zeros((h, w));
    let mut uv = Array3::<f32>::zeros((2, h, w));
    for y in 0..h {
        for x in 0..w {
            if argmax(coarse.slice(s![.., y, x]).iter()) == 0 {
                continue;
            }
            let part = argmax(fine.slice(s![.., y, x]).iter());
            // Part 0 is the background: its label, U and V stay 0.
            if part == 0 {
                continue;
            }
            labels[[y, x]] = part as u8;
            uv[[0, y, x]] = u[[part, y, x]];
            uv[[1, y, x]] = v[[part, y, x]];
        }
    }
    Ok(ChartResult {
        box_xywh,
        labels,
        uv,
    })
}

/// The index of the first maximum, as torch's `argmax` (a NaN counts as the maximum).
fn argmax<'a>(values: impl Iterator<Item = &'a f32>) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &v) in values.enumerate() {
        if i == 0 || v > best.1 || (v.is_nan() && !best.1.is_nan()) {
            best = (i, v);
        }
    }
    best.0
}

/// The results as the instances' tensors: `densepose_boxes` `[N, 4]`, `densepose_labels`
/// `[N, Hb, Wb]` and `densepose_uv` `[N, 2, Hb, Wb]`, box-local (top-left aligned).
/// `densepose_image_size` `[N, 2]` repeats the original image's (height, width) on every row,
/// so that a sink can write each instance's image-size mask.
pub fn results_to_tensors(
    results: &[ChartResult],
    original: (usize, usize),
) -> Result<[(String, Tensor); 4], ModelError> {
    let n = results.len();
    let hb = results.iter().map(|r| r.labels.dim().0).max().unwrap_or(0);
    let wb = results.iter().map(|r| r.labels.dim().1).max().unwrap_or(0);
    let mut labels = Array3::<u8>::zeros((n, hb, wb));
    let mut uv = Array4::<f32>::zeros((n, 2, hb, wb));
    for (i, r) in results.iter().enumerate() {
        let (h, w) = r.labels.dim();
        labels.slice_mut(s![i, ..h, ..w]).assign(&r.labels);
        uv.slice_mut(s![i, .., ..h, ..w]).assign(&r.uv);
    }
    let boxes: Vec<i64> = results.iter().flat_map(|r| r.box_xywh).collect();
    let size = [original.0 as i64, original.1 as i64];
    Ok([
        ("densepose_boxes".into(), Tensor::from_vec(&[n, 4], boxes)?),
        (
            "densepose_image_size".into(),
            Tensor::from_vec(&[n, 2], size.repeat(n))?,
        ),
        (
            "densepose_labels".into(),
            Tensor::from_vec(&[n, hb, wb], labels.into_raw_vec_and_offset().0)?,
        ),
        (
            "densepose_uv".into(),
            Tensor::from_vec(&[n, 2, hb, wb], uv.into_raw_vec_and_offset().0)?,
        ),
    ])
}

pub fn kind() -> NodeKind {
    let d = DensePoseHeadConfig::default();
    let spec = NodeSpec::new(
        NODE,
        "DensePose (Detectron2) chart head: semantic-FPN decoder, RoIAlign 28x28, eight 3x3 convs, coarse/fine segmentation and U, V at 112x112, resampled to each box (part labels and UV)",
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
        "the image from rcnn_preprocess (image_size: RoIAlign's scales; original_size: the boxes the results are resampled to)",
    )
    .output(PortSpec::new(
        "instances",
        PortKind::Instances,
        "the detections with densepose_boxes i64 [N, 4] (x, y, w, h in original pixels), densepose_labels u8 [N, Hb, Wb] (parts 1..24, 0 background) and densepose_uv f32 [N, 2, Hb, Wb], box-local",
    ));
    let spec = weights_params(
        spec,
        "the DensePose head (Detectron2 names)",
        "roi_heads.",
        "name prefix of the RoI heads' tensors",
    );
    let spec = levels_params(
        spec,
        &["p2", "p3", "p4", "p5"],
        "FPN levels p2..p5, finest first (the decoder's weights are named after them)",
        d.channels,
    )
    .param(ParamSpec::optional(
        "decoder",
        ParamType::Bool,
        ParamValue::Bool(d.decoder),
        "DECODER_ON: merge the levels with the semantic-FPN decoder and pool from its 1/4 map (false for the _legacy checkpoints)",
    ))
    .param(
        ParamSpec::optional(
            "decoder_channels",
            ParamType::Int,
            ParamValue::Int(d.decoder_channels as i64),
            "DECODER_CONV_DIMS: channels of the decoder's convolutions",
        )
        .range(1.0, 65536.0),
    )
    .param(
        ParamSpec::optional(
            "resolution",
            ParamType::Int,
            ParamValue::Int(d.pooler_size as i64),
            "POOLER_RESOLUTION: RoIAlign output side (28; 14 for the _legacy checkpoints); the charts are 4x this",
        )
        .range(1.0, 256.0),
    )
    .param(
        ParamSpec::optional(
            "sampling_ratio",
            ParamType::Int,
            ParamValue::Int(d.sampling_ratio as i64),
            "RoIAlign samples per bin side (0: adaptive)",
        )
        .range(0.0, 64.0),
    )
    .param(ParamSpec::optional(
        "layers",
        ParamType::IntList,
        ParamValue::IntList(d.layers.iter().map(|&v| v as i64).collect()),
        "output channels of the stacked 3x3 convolutions (CONV_HEAD_DIM x NUM_STACKED_CONVS)",
    ))
    .param(
        ParamSpec::optional(
            "coarse_channels",
            ParamType::Int,
            ParamValue::Int(d.coarse_channels as i64),
            "NUM_COARSE_SEGM_CHANNELS: 2 (foreground/background) or 15 (_legacy)",
        )
        .range(2.0, 256.0),
    )
    .param(
        ParamSpec::optional(
            "num_patches",
            ParamType::Int,
            ParamValue::Int(d.num_patches as i64),
            "NUM_PATCHES: body parts (24)",
        )
        .range(1.0, 255.0),
    );
    NodeKind::new(spec, |params| {
        Ok(Box::new(DensePoseHeadNode::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `roi_densepose_head` node.
#[derive(Debug)]
pub struct DensePoseHeadNode {
    model: DensePoseHead,
    in_features: Vec<String>,
}

impl DensePoseHeadNode {
    pub fn from_params(params: &Params) -> Result<DensePoseHeadNode, ModelError> {
        let in_features = in_features_param(params)?;
        let decoder = params.bool("decoder").map_err(ModelError::Input)?;
        let config = DensePoseHeadConfig {
            channels: count_param(params, "channels")?,
            decoder,
            decoder_channels: count_param(params, "decoder_channels")?,
            pooler_size: count_param(params, "resolution")?,
            sampling_ratio: count_param(params, "sampling_ratio")? as i32,
            layers: count_list_param(params, "layers")?,
            coarse_channels: count_param(params, "coarse_channels")?,
            num_patches: count_param(params, "num_patches")?,
        };
        let (weights, prefix) = weights_param(params)?;
        Ok(DensePoseHeadNode {
            model: DensePoseHead::from_weights(&weights, &prefix, &in_features, config)?,
            in_features,
        })
    }

    pub fn model(&self) -> &DensePoseHead {
        &self.model
    }

    /// The node's computation: the detections with their DensePose results.
    pub fn run(
        &self,
        features: &Value,
        detections: &Value,
        image: &Value,
    ) -> Result<Value, ModelError> {
        let sizes = ImageSizes::from_value(NODE, image)?;
        let levels = feature_levels(NODE, features, &self.in_features)?;
        let det = Instances::from_value(detections).map_err(ModelError::Input)?;
        let results = self.model.forward(&levels, &det.boxes, &sizes)?;
        let mut out = detections.clone();
        for (name, t) in results_to_tensors(&results, sizes.original)? {
            out.insert(&name, t);
        }
        Ok(out)
    }
}

impl Node for DensePoseHeadNode {
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

    /// Labels follow the fine argmax inside the coarse foreground; U and V are the label's
    /// channels there and 0 elsewhere; boxes are truncated as `make_int_box` does.
    #[test]
    fn chart_to_box_by_hand() {
        let parts = 3;
        let k = 2;
        let side = 4;
        let mut maps = Array3::<f32>::zeros((k + 3 * parts, side, side));
        // Coarse: foreground on the right half.
        for y in 0..side {
            for x in 0..side {
                maps[[1, y, x]] = if x >= 2 { 5.0 } else { -5.0 };
                // Fine: part 2 on the top rows, part 1 below (background 0 never wins).
                maps[[k + 1, y, x]] = if y < 2 { 0.0 } else { 3.0 };
                maps[[k + 2, y, x]] = if y < 2 { 3.0 } else { 0.0 };
                maps[[k + parts + 1, y, x]] = 0.25; // U of part 1
                maps[[k + parts + 2, y, x]] = 0.75; // U of part 2
                maps[[k + 2 * parts + 1, y, x]] = 0.5; // V of part 1
                maps[[k + 2 * parts + 2, y, x]] = 0.125; // V of part 2
            }
        }
        // XYWH (10.7, 20.2, 4.9, 4.1) truncates to (10, 20, 4, 4): the maps keep their size.
        let r = chart_to_box(maps.view(), k, &[10.7, 20.2, 15.6, 24.3]).unwrap();
        assert_eq!(r.box_xywh, [10, 20, 4, 4]);
        assert_eq!(
            r.labels,
            ndarray::arr2(&[[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 1, 1]])
        );
        assert_eq!(r.uv[[0, 0, 3]], 0.75);
        assert_eq!(r.uv[[1, 3, 2]], 0.5);
        assert_eq!(r.uv[[0, 0, 0]], 0.0);
        // A box thinner than a pixel still gets one column.
        let thin = chart_to_box(maps.view(), k, &[3.0, 3.0, 3.5, 9.0]).unwrap();
        assert_eq!(thin.box_xywh, [3, 3, 0, 6]);
        assert_eq!(thin.labels.dim(), (6, 1));
        let packed = results_to_tensors(&[r, thin], (30, 40)).unwrap();
        assert_eq!(packed[0].1.shape(), &[2, 4]);
        assert_eq!(packed[1].1.as_slice::<i64>().unwrap(), &[30, 40, 30, 40]);
        assert_eq!(packed[2].1.shape(), &[2, 6, 4]);
        assert_eq!(packed[3].1.shape(), &[2, 2, 6, 4]);
        let empty = results_to_tensors(&[], (30, 40)).unwrap();
        assert_eq!(empty[2].1.shape(), &[0, 0, 0]);
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax([1.0f32, 3.0, 3.0, 2.0].iter()), 1);
        assert_eq!(argmax([f32::NAN, 3.0].iter()), 0);
        assert_eq!(argmax([1.0, f32::NAN].iter()), 1);
        assert_eq!(argmax([-1.0f32].iter()), 0);
    }
}
