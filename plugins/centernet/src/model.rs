//! `centernet_ctdet`: everything of CenterNet's `ctdet` after the ResNet body, at inference
//! (xingyizhou/CenterNet @ 4c50fd3a, `src/lib/models/networks/resnet_dcn.py`,
//! `src/lib/models/decode.py`, `src/lib/utils/post_process.py`):
//!
//! 1. Three up-sampling stages (`deconv_layers`, planes 256, 128, 64), each a deformable
//!    convolution (DCNv2, 3x3: `conv_offset_mask` gives 27 channels, the first 18 are the
//!    offsets and the last 9 the mask after a sigmoid), BatchNorm, ReLU, a 4x4 transposed
//!    convolution of stride 2 (padding 1, no bias), BatchNorm, ReLU: stride 32 to stride 4.
//! 2. The heads `hm` (80 classes), `wh` (2) and `reg` (2): a 3x3 convolution (`head_conv`
//!    64 channels, bias), ReLU, a 1x1 convolution.
//! 3. `ctdet_decode`: the heatmap's sigmoid, the 3x3 max-pool suppression, the top `K` (100)
//!    per class then overall ([`kernels::ops::heatmap::extract_peaks`]); each peak's centre
//!    is `(x + reg_x, y + reg_y)` and its box `centre ± wh / 2`, at stride 4.
//! 4. `ctdet_post_process`: the boxes mapped back to the photo by the inverse of the
//!    pre-processing's affine transform at the output's size (`transform_preds`, in `f64`,
//!    rounded to `f32`), the class index to its COCO category id.
//!
//! Weights: the official checkpoints' names (`ctdet_coco_resdcn18.pth`: `deconv_layers.N.*`,
//! `hm.0.*`, `hm.2.*`, `wh.*`, `reg.*` at the top level, beside the body's `conv1`, `bn1`,
//! `layer1..4`, which are the `resnet` node's). BatchNorm's eps is 1e-5.

use kernels::layers::norm::batch_norm;
use kernels::layers::{
    Activation, Conv2d, Conv2dParams, ConvTranspose2d, ConvTranspose2dParams, DeformConv2d,
};
use kernels::ops::heatmap::extract_peaks;
use kernels::weights::{Binder, Weights};
use ndarray::{s, Array3, Array4, ArrayView4, Axis};
use plugin_sdk::{
    FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Value,
};
use vision_common::{
    conv_bias, count_list_param, count_param, features_input, float_param, image_input,
    named_levels, weights_param, weights_params, ImageSizes, LayerContext, ModelError,
    COCO_CATEGORY_IDS,
};

use crate::preprocess::{affine, invert};

const NODE: &str = "centernet_ctdet";
const BN_EPS: f32 = 1e-5;

/// The settings of [`CenterNet`]; the defaults are `ctdet` with `resdcn_18`.
#[derive(Clone, Debug, PartialEq)]
pub struct CenterNetConfig {
    /// Channels of the body's last level (ResNet-18: 512).
    pub in_channels: usize,
    /// Output channels of the up-sampling stages.
    pub deconv_planes: Vec<usize>,
    pub head_conv: usize,
    pub num_classes: usize,
    /// Peaks kept by the decoding (`--K`).
    pub k: usize,
}

impl Default for CenterNetConfig {
    fn default() -> Self {
        CenterNetConfig {
            in_channels: 512,
            deconv_planes: vec![256, 128, 64],
            head_conv: 64,
            num_classes: 80,
            k: 100,
        }
    }
}

/// One up-sampling stage: DCN + BN + ReLU (folded into the DCN), then the transposed
/// convolution, its BatchNorm and ReLU.
#[derive(Debug)]
struct UpStage {
    offset_mask: Conv2d,
    dcn: DeformConv2d,
    up: ConvTranspose2d,
    up_bn: [Vec<f32>; 4],
}

/// A head: 3x3 convolution with ReLU, then 1x1.
#[derive(Debug)]
struct Head {
    conv: Conv2d,
    out: Conv2d,
}

/// CenterNet's up-sampling and heads with their weights bound.
#[derive(Debug)]
pub struct CenterNet {
    config: CenterNetConfig,
    stages: Vec<UpStage>,
    hm: Head,
    wh: Head,
    reg: Head,
}

/// The raw head outputs at stride 4: `hm` (before the sigmoid) `[C, H, W]`, `wh` and `reg`
/// `[2, H, W]`.
#[derive(Clone, Debug)]
pub struct HeadOutputs {
    pub hm: Array3<f32>,
    pub wh: Array3<f32>,
    pub reg: Array3<f32>,
}

/// One decoded detection at stride 4 (`ctdet_decode`): box corners, score, class index and
/// the peak's flat index `y·W + x` in its class's heatmap.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Detection {
    pub bbox: [f32; 4],
    pub score: f32,
    pub class: usize,
    pub index: usize,
}

fn view(v: &[f32]) -> ndarray::ArrayView1<'_, f32> {
    ndarray::ArrayView1::from(v)
}

fn vec_of(t: &kernels::Tensor) -> Vec<f32> {
    t.as_slice::<f32>().map(<[f32]>::to_vec).unwrap_or_default()
}

fn head(
    b: &mut Binder<'_>,
    name: &str,
    cin: usize,
    mid: usize,
    cout: usize,
) -> Result<Head, ModelError> {
    let conv = conv_bias(
        b,
        &format!("{name}.0"),
        cin,
        mid,
        3,
        Conv2dParams::default().padding(1),
    )?
    .with_activation(Activation::Relu);
    let out = conv_bias(
        b,
        &format!("{name}.2"),
        mid,
        cout,
        1,
        Conv2dParams::default(),
    )?;
    Ok(Head { conv, out })
}

impl Head {
    fn forward(&self, x: ArrayView4<'_, f32>, name: &str) -> Result<Array3<f32>, ModelError> {
        let y = self.conv.forward(x).ctx(|| format!("{name}.0"))?;
        let y = self.out.forward(y.view()).ctx(|| format!("{name}.2"))?;
        Ok(y.index_axis_move(Axis(0), 0))
    }
}

impl CenterNet {
    /// Binds the up-sampling stages and heads, found under `prefix` (empty for the released
    /// files).
    pub fn from_weights(
        weights: &Weights,
        prefix: &str,
        config: CenterNetConfig,
    ) -> Result<CenterNet, ModelError> {
        let mut b = weights.binder(prefix);
        let mut stages = Vec::new();
        let mut cin = config.in_channels;
        for (i, &planes) in config.deconv_planes.iter().enumerate() {
            let base = 6 * i;
            let dcn = format!("deconv_layers.{base}");
            let p3 = Conv2dParams::default().padding(1);
            let offset_mask =
                conv_bias(&mut b, &format!("{dcn}.conv_offset_mask"), cin, 27, 3, p3)?;
            let w = b.take(&format!("{dcn}.weight"), &[planes, cin, 3, 3]);
            let bias = b.take(&format!("{dcn}.bias"), &[planes]);
            let bn = |b: &mut Binder<'_>, name: String| {
                ["weight", "bias", "running_mean", "running_var"]
                    .map(|p| vec_of(&b.take(&format!("{name}.{p}"), &[planes])))
            };
            let [g, be, m, v] = bn(&mut b, format!("deconv_layers.{}", base + 1));
            let conv = Conv2d::from_tensors(&w, Some(&bias), p3)
                .ctx(|| dcn.clone())?
                .with_batch_norm(view(&g), view(&be), view(&m), view(&v), BN_EPS)
                .ctx(|| format!("deconv_layers.{}", base + 1))?
                .with_activation(Activation::Relu);
            let up_name = format!("deconv_layers.{}", base + 3);
            let up_w = b.take(&format!("{up_name}.weight"), &[planes, planes, 4, 4]);
            let up_w = up_w
                .view::<f32>()?
                .into_dimensionality::<ndarray::Ix4>()
                .map_err(|e| ModelError::input(e.to_string()))?;
            let up = ConvTranspose2d::new(
                up_w,
                None,
                ConvTranspose2dParams::default().stride(2).padding(1),
            )
            .ctx(|| up_name.clone())?;
            let up_bn = bn(&mut b, format!("deconv_layers.{}", base + 4));
            stages.push(UpStage {
                offset_mask,
                dcn: DeformConv2d::new(conv),
                up,
                up_bn,
            });
            cin = planes;
        }
        let hc = config.head_conv;
        let hm = head(&mut b, "hm", cin, hc, config.num_classes)?;
        let wh = head(&mut b, "wh", cin, hc, 2)?;
        let reg = head(&mut b, "reg", cin, hc, 2)?;
        b.ignore("num_batches_tracked");
        b.ignore_unbound_modules();
        b.finish()?;
        Ok(CenterNet {
            config,
            stages,
            hm,
            wh,
            reg,
        })
    }

    pub fn config(&self) -> &CenterNetConfig {
        &self.config
    }

    /// The up-sampling stages on the body's last level `[1, C, h, w]`: `[1, 64, 8h, 8w]`.
    pub fn upsample(&self, c5: ArrayView4<'_, f32>) -> Result<Array4<f32>, ModelError> {
        let (n, c, h, w) = c5.dim();
        if n != 1 || c != self.config.in_channels {
            return Err(ModelError::input(format!(
                "{NODE}: the body's last level is [{n}, {c}, {h}, {w}]; the checkpoint's deconv_layers expect one image of {} channels",
                self.config.in_channels
            )));
        }
        let mut x = c5.to_owned();
        for (i, st) in self.stages.iter().enumerate() {
            let name = format!("deconv_layers.{}", 6 * i);
            let om = st
                .offset_mask
                .forward(x.view())
                .ctx(|| format!("{name}.conv_offset_mask"))?;
            // chunk(3) then cat(o1, o2): the first 18 channels are the offsets, in order.
            let offset = om.slice(s![.., 0..18, .., ..]);
            let mut mask = om.slice(s![.., 18..27, .., ..]).to_owned();
            Activation::Sigmoid.apply_array(mask.view_mut().into_dyn());
            let y = st
                .dcn
                .forward(x.view(), offset, Some(mask.view()))
                .ctx(|| name.clone())?;
            let y = st
                .up
                .forward(y.view())
                .ctx(|| format!("deconv_layers.{}", 6 * i + 3))?;
            let [g, b, m, v] = &st.up_bn;
            let mut y = batch_norm(
                y.view().into_dyn(),
                view(m),
                view(v),
                Some(view(g)),
                Some(view(b)),
                BN_EPS,
            )
            .ctx(|| format!("deconv_layers.{}", 6 * i + 4))?;
            Activation::Relu.apply_array(y.view_mut());
            x = y
                .into_dimensionality()
                .map_err(|e| ModelError::input(e.to_string()))?;
        }
        Ok(x)
    }

    /// The heads on the up-sampled features.
    pub fn heads(&self, x: ArrayView4<'_, f32>) -> Result<HeadOutputs, ModelError> {
        Ok(HeadOutputs {
            hm: self.hm.forward(x, "hm")?,
            wh: self.wh.forward(x, "wh")?,
            reg: self.reg.forward(x, "reg")?,
        })
    }

    /// `ctdet_decode` of the head outputs: the best `k` detections, best first, at stride 4.
    pub fn decode(&self, out: &HeadOutputs) -> Result<Vec<Detection>, ModelError> {
        let mut heat = out.hm.clone();
        Activation::Sigmoid.apply_array(heat.view_mut().into_dyn());
        let (_, h, w) = heat.dim();
        let k = self.config.k.min(h * w);
        let peaks = extract_peaks(heat.view(), k).map_err(|e| ModelError::input(e.to_string()))?;
        Ok(peaks
            .iter()
            .map(|p| {
                let xs = p.x as f32 + out.reg[[0, p.y, p.x]];
                let ys = p.y as f32 + out.reg[[1, p.y, p.x]];
                let (bw, bh) = (out.wh[[0, p.y, p.x]], out.wh[[1, p.y, p.x]]);
                Detection {
                    bbox: [xs - bw / 2.0, ys - bh / 2.0, xs + bw / 2.0, ys + bh / 2.0],
                    score: p.score,
                    class: p.class,
                    index: p.index,
                }
            })
            .collect())
    }
}

/// `ctdet_post_process`'s `transform_preds`: a box at stride 4 of an `(out_h, out_w)` output
/// to the pixels of a photo of `original` `(h, w)`.
pub fn to_photo(
    bbox: &[f32; 4],
    original: (usize, usize),
    (out_h, out_w): (usize, usize),
) -> [f32; 4] {
    let m = invert(&affine(original, (out_h, out_w)));
    let map = |x: f32, y: f32| {
        let (x, y) = (f64::from(x), f64::from(y));
        (
            (m[0] * x + m[1] * y + m[2]) as f32,
            (m[3] * x + m[4] * y + m[5]) as f32,
        )
    };
    let (x1, y1) = map(bbox[0], bbox[1]);
    let (x2, y2) = map(bbox[2], bbox[3]);
    [x1, y1, x2, y2]
}

pub fn kind() -> NodeKind {
    let d = CenterNetConfig::default();
    let spec = NodeSpec::new(
        NODE,
        "CenterNet ctdet after the body: resdcn up-sampling (deformable convolutions, transposed convolutions), hm/wh/reg heads, ctdet_decode (3x3 max-pool peaks, top K), boxes in photo pixels",
    );
    let spec = features_input(spec, "the body's last level (in_feature, C5 at stride 32)");
    let spec = image_input(
        spec,
        "the image from centernet_preprocess (image_size: the square input; original_size: the photo the boxes are mapped back to)",
    )
    .output(PortSpec::new(
        "instances",
        PortKind::Instances,
        "the top K peaks as boxes in photo pixels, best first, with scores and COCO category ids",
    ));
    let spec = weights_params(
        spec,
        "CenterNet",
        "",
        "name prefix of deconv_layers / hm / wh / reg (empty for the released ctdet checkpoints)",
    );
    let int = |name: &'static str, v: usize, doc: &'static str| {
        ParamSpec::optional(name, ParamType::Int, ParamValue::Int(v as i64), doc)
            .range(1.0, 65536.0)
    };
    let spec = spec
        .param(ParamSpec::optional(
            "in_feature",
            ParamType::Str,
            ParamValue::Str("c5".into()),
            "the body's level the up-sampling reads (layer4)",
        ))
        .param(int("in_channels", d.in_channels, "channels of that level (ResNet-18: 512)"))
        .param(ParamSpec::optional(
            "deconv_planes",
            ParamType::IntList,
            ParamValue::IntList(d.deconv_planes.iter().map(|&v| v as i64).collect()),
            "output channels of the up-sampling stages (resdcn: 256, 128, 64)",
        ))
        .param(int("head_conv", d.head_conv, "channels of the heads' 3x3 convolutions"))
        .param(int("num_classes", d.num_classes, "heatmap classes (COCO: 80)"))
        .param(int("k", d.k, "peaks kept by the decoding (--K)"))
        .param(ParamSpec::optional(
            "category_ids",
            ParamType::IntList,
            ParamValue::IntList(COCO_CATEGORY_IDS.to_vec()),
            "the category id of each class index (COCO's 80 sparse ids by default)",
        ))
        .param(
            ParamSpec::optional(
                "score_threshold",
                ParamType::Float,
                ParamValue::Float(0.0),
                "keep the detections whose score is above this (0: all K, as for COCO evaluation; the demo's vis_thresh is 0.3)",
            )
            .range(0.0, 1.0),
        );
    NodeKind::new(spec, |params| {
        Ok(Box::new(CenterNetNode::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `centernet_ctdet` node.
#[derive(Debug)]
pub struct CenterNetNode {
    model: CenterNet,
    in_feature: String,
    category_ids: Vec<i64>,
    score_threshold: f32,
}

impl CenterNetNode {
    pub fn from_params(params: &Params) -> Result<CenterNetNode, ModelError> {
        let config = CenterNetConfig {
            in_channels: count_param(params, "in_channels")?,
            deconv_planes: count_list_param(params, "deconv_planes")?,
            head_conv: count_param(params, "head_conv")?,
            num_classes: count_param(params, "num_classes")?,
            k: count_param(params, "k")?,
        };
        let category_ids = params
            .int_list("category_ids")
            .map_err(ModelError::Input)?
            .to_vec();
        if category_ids.len() != config.num_classes {
            return Err(ModelError::param(
                "category_ids",
                format!(
                    "has {} ids for {} classes",
                    category_ids.len(),
                    config.num_classes
                ),
            ));
        }
        let (weights, prefix) = weights_param(params)?;
        Ok(CenterNetNode {
            model: CenterNet::from_weights(&weights, &prefix, config)?,
            in_feature: params
                .str("in_feature")
                .map_err(ModelError::Input)?
                .to_string(),
            category_ids,
            score_threshold: float_param(params, "score_threshold")?,
        })
    }

    pub fn model(&self) -> &CenterNet {
        &self.model
    }

    /// The node's computation: the top K detections (above the threshold) in photo pixels.
    pub fn run(&self, features: &Value, image: &Value) -> Result<Value, ModelError> {
        let sizes = ImageSizes::from_value(NODE, image)?;
        let levels = named_levels(NODE, features, std::slice::from_ref(&self.in_feature))?;
        let x = self.model.upsample(levels[0])?;
        let out = self.model.heads(x.view())?;
        let (_, oh, ow) = out.hm.dim();
        let dets = self.model.decode(&out)?;
        let keep: Vec<&Detection> = dets
            .iter()
            .filter(|d| self.score_threshold == 0.0 || d.score > self.score_threshold)
            .collect();
        plugin_sdk::Instances {
            boxes: keep
                .iter()
                .map(|d| to_photo(&d.bbox, sizes.original, (oh, ow)))
                .collect(),
            scores: keep.iter().map(|d| d.score).collect(),
            classes: keep.iter().map(|d| self.category_ids[d.class]).collect(),
        }
        .to_value()
        .map_err(ModelError::Input)
    }
}

impl Node for CenterNetNode {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(inputs.value("features")?, inputs.value("image")?)?;
        Ok(Outputs::one("instances", v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_map_back_through_the_inverse_affine() {
        // A 264x397 photo, output 128x128: stride-4 coordinates scale by 397/128 and the
        // short side's padding ((397 - 264) / 2 = 66.5 px) is removed.
        let b = to_photo(&[0.0, 64.0, 128.0, 64.0], (264, 397), (128, 128));
        let k = 397.0 / 128.0;
        let want = [0.0, 64.0 * k - 66.5, 128.0 * k, 64.0 * k - 66.5];
        for (g, w) in b.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-4, "{b:?} vs {want:?}");
        }
    }
}
