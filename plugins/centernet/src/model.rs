//! `centernet_ctdet`: CenterNet's `ctdet` heads and decoding on a stride-4 feature map
//! (xingyizhou/CenterNet @ 4c50fd3a, the heads of `src/lib/models/networks/resnet_dcn.py`
//! and `pose_dla_dcn.py`, `src/lib/models/decode.py`, `src/lib/utils/post_process.py`):
//!
//! 1. The heads `hm` (80 classes), `wh` (2) and `reg` (2): a 3x3 convolution (`head_conv`
//!    channels: 64 for resdcn, 256 for DLA; with bias), ReLU, a 1x1 convolution.
//! 2. `ctdet_decode`: the heatmap's sigmoid, the 3x3 max-pool suppression, the top `K` (100)
//!    per class then overall ([`kernels::ops::heatmap::extract_peaks`]); each peak's centre
//!    is `(x + reg_x, y + reg_y)` and its box `centre ± wh / 2`, at stride 4.
//! 3. `ctdet_post_process`: the boxes mapped back to the photo by the inverse of the
//!    pre-processing's affine transform at the output's size (`transform_preds`, in `f64`,
//!    rounded to `f32`), the class index to its COCO category id.
//!
//! The stride-4 features come from an up-sampling node of the backbones family
//! (`dcn_upsample` after `resnet` for the resdcn architectures). Weights: the official
//! checkpoints' names (`hm.0.*`, `hm.2.*`, `wh.*`, `reg.*` at the top level of
//! `ctdet_coco_resdcn18.pth`, beside the body and the up-sampling, which are other nodes').

use kernels::layers::{Activation, Conv2d, Conv2dParams};
use kernels::ops::heatmap::{extract_peaks_mapped, Peak};
use kernels::ops::sigmoid_slice;
use kernels::weights::{Binder, Weights};
use ndarray::{Array3, Array4, ArrayView4, Axis};
use plugin_sdk::{
    FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Value,
};
use vision_common::{
    conv_bias, count_param, features_input, float_param, image_input, named_levels, weights_param,
    weights_params, ImageSizes, LayerContext, ModelError, COCO_CATEGORY_IDS,
};

use crate::preprocess::{affine, invert};

const NODE: &str = "centernet_ctdet";

/// How the checkpoint names a head's two convolutions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadNames {
    /// `nn.Sequential(conv3x3, ReLU, conv1x1)`: `hm.0`, `hm.2` (resdcn, DLA).
    Sequential,
    /// One head per stack of an Hourglass (`make_kp_layer`): `hm.{stack}.0.conv` (the 3x3
    /// convolution with bias) and `hm.{stack}.1`; the last stack's are used.
    Hourglass { stack: usize },
}

impl HeadNames {
    pub(crate) fn names(&self, head: &str) -> (String, String) {
        match self {
            HeadNames::Sequential => (format!("{head}.0"), format!("{head}.2")),
            HeadNames::Hourglass { stack } => (
                format!("{head}.{stack}.0.conv"),
                format!("{head}.{stack}.1"),
            ),
        }
    }
}

/// The settings of [`CenterNet`]; the defaults are `ctdet` with `resdcn_18`.
#[derive(Clone, Debug, PartialEq)]
pub struct CenterNetConfig {
    /// Channels of the stride-4 features (resdcn: 64).
    pub in_channels: usize,
    pub head_conv: usize,
    pub num_classes: usize,
    /// Peaks kept by the decoding (`--K`).
    pub k: usize,
    pub head_names: HeadNames,
}

impl Default for CenterNetConfig {
    fn default() -> Self {
        CenterNetConfig {
            in_channels: 64,
            head_conv: 64,
            num_classes: 80,
            k: 100,
            head_names: HeadNames::Sequential,
        }
    }
}

/// A head: 3x3 convolution with ReLU, then 1x1.
#[derive(Debug)]
pub(crate) struct Head {
    conv: Conv2d,
    out: Conv2d,
    names: (String, String),
}

/// CenterNet's heads with their weights bound.
#[derive(Debug)]
pub struct CenterNet {
    config: CenterNetConfig,
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

pub(crate) fn head(
    b: &mut Binder<'_>,
    names: (String, String),
    cin: usize,
    mid: usize,
    cout: usize,
) -> Result<Head, ModelError> {
    let conv = conv_bias(b, &names.0, cin, mid, 3, Conv2dParams::default().padding(1))?
        .with_activation(Activation::Relu);
    let out = conv_bias(b, &names.1, mid, cout, 1, Conv2dParams::default())?;
    Ok(Head { conv, out, names })
}

impl Head {
    /// The head on one image `[1, C, H, W]`: `[cout, H, W]`.
    pub(crate) fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array3<f32>, ModelError> {
        Ok(self.forward_batch(x)?.index_axis_move(Axis(0), 0))
    }

    /// The head on a batch `[N, C, H, W]`: `[N, cout, H, W]`.
    pub(crate) fn forward_batch(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>, ModelError> {
        let y = self.conv.forward(x).ctx(|| self.names.0.clone())?;
        self.out.forward(y.view()).ctx(|| self.names.1.clone())
    }
}

impl CenterNet {
    /// Binds the heads, found under `prefix` (empty for the released files).
    pub fn from_weights(
        weights: &Weights,
        prefix: &str,
        config: CenterNetConfig,
    ) -> Result<CenterNet, ModelError> {
        let mut b = weights.binder(prefix);
        let (cin, hc) = (config.in_channels, config.head_conv);
        let names = |h: &str| config.head_names.names(h);
        let hm = head(&mut b, names("hm"), cin, hc, config.num_classes)?;
        let wh = head(&mut b, names("wh"), cin, hc, 2)?;
        let reg = head(&mut b, names("reg"), cin, hc, 2)?;
        if let HeadNames::Hourglass { stack } = config.head_names {
            // The earlier stacks' heads supervise training only (intermediate supervision).
            for h in ["hm", "wh", "reg"] {
                for s in 0..stack {
                    b.ignore_module(&format!("{h}.{s}."));
                }
            }
        }
        b.ignore_unbound_modules();
        b.finish()?;
        Ok(CenterNet {
            config,
            hm,
            wh,
            reg,
        })
    }

    pub fn config(&self) -> &CenterNetConfig {
        &self.config
    }

    /// The heads on the stride-4 features `[1, C, H, W]`.
    pub fn heads(&self, x: ArrayView4<'_, f32>) -> Result<HeadOutputs, ModelError> {
        let (n, c, h, w) = x.dim();
        if n != 1 || c != self.config.in_channels {
            return Err(ModelError::input(format!(
                "{NODE}: the stride-4 features are [{n}, {c}, {h}, {w}]; the checkpoint's heads expect one image of {} channels",
                self.config.in_channels
            )));
        }
        Ok(HeadOutputs {
            hm: self.hm.forward(x)?,
            wh: self.wh.forward(x)?,
            reg: self.reg.forward(x)?,
        })
    }

    /// `ctdet_decode` of the head outputs: the best `k` detections, best first, at stride 4.
    pub fn decode(&self, out: &HeadOutputs) -> Result<Vec<Detection>, ModelError> {
        Ok(center_peaks(&out.hm, self.config.k)?
            .iter()
            .map(|p| Detection {
                bbox: peak_box(p, &out.wh, &out.reg),
                score: p.score,
                class: p.class,
                index: p.index,
            })
            .collect())
    }
}

/// The centre peaks of both tasks' decoding: `hm.sigmoid_()`, `_nms` and `_topk` (the best
/// `k`, at most `H·W`), one class plane at a time.
pub(crate) fn center_peaks(hm: &Array3<f32>, k: usize) -> Result<Vec<Peak>, ModelError> {
    let (_, h, w) = hm.dim();
    extract_peaks_mapped(hm.view(), k.min(h * w), sigmoid_slice)
        .map_err(|e| ModelError::input(e.to_string()))
}

/// A peak's box at stride 4: its centre `(x + reg_x, y + reg_y)` ± `wh / 2`.
pub(crate) fn peak_box(p: &Peak, wh: &Array3<f32>, reg: &Array3<f32>) -> [f32; 4] {
    let xs = p.x as f32 + reg[[0, p.y, p.x]];
    let ys = p.y as f32 + reg[[1, p.y, p.x]];
    let (bw, bh) = (wh[[0, p.y, p.x]], wh[[1, p.y, p.x]]);
    [xs - bw / 2.0, ys - bh / 2.0, xs + bw / 2.0, ys + bh / 2.0]
}

/// `transform_preds` of the post-processing: a point at stride 4 of an `(out_h, out_w)` output
/// to the pixels of a photo of `original` `(h, w)`, by the inverse of the pre-processing's
/// affine transform (in `f64` from the `f32` point, rounded to `f32` as the official code
/// stores it).
pub fn photo_mapping(
    original: (usize, usize),
    (out_h, out_w): (usize, usize),
) -> impl Fn(f32, f32) -> (f32, f32) {
    let m = invert(&affine(original, (out_h, out_w)));
    move |x: f32, y: f32| {
        let (x, y) = (f64::from(x), f64::from(y));
        (
            (m[0] * x + m[1] * y + m[2]) as f32,
            (m[3] * x + m[4] * y + m[5]) as f32,
        )
    }
}

/// `ctdet_post_process`'s `transform_preds`: a box at stride 4 of an `(out_h, out_w)` output
/// to the pixels of a photo of `original` `(h, w)`.
pub fn to_photo(bbox: &[f32; 4], original: (usize, usize), out: (usize, usize)) -> [f32; 4] {
    let map = photo_mapping(original, out);
    let (x1, y1) = map(bbox[0], bbox[1]);
    let (x2, y2) = map(bbox[2], bbox[3]);
    [x1, y1, x2, y2]
}

/// What [`heads_spec`] says of a task's node.
pub(crate) struct HeadsSpecDoc {
    pub output: &'static str,
    pub heads: &'static str,
    pub in_channels: usize,
    pub head_conv: usize,
    pub k: usize,
}

/// The ports and parameters CenterNet's task heads share: stride-4 `features` and the
/// pre-processed `image` in, `instances` out; `weights`/`prefix`, `in_feature`,
/// `in_channels`, `head_conv`, `k`, `head_names`, `stacks` and `score_threshold`.
pub(crate) fn heads_spec(spec: NodeSpec, doc: HeadsSpecDoc) -> NodeSpec {
    let spec = features_input(
        spec,
        "the stride-4 features (in_feature; from dcn_upsample, dla or hourglass: p2)",
    );
    let spec = image_input(
        spec,
        "the image from centernet_preprocess (image_size: the square input; original_size: the photo the results are mapped back to)",
    )
    .output(PortSpec::new("instances", PortKind::Instances, doc.output));
    let prefix_doc = format!(
        "name prefix of {} (empty for the released checkpoints)",
        doc.heads
    );
    let spec = weights_params(spec, "the CenterNet heads", "", &prefix_doc);
    let int = |name: &'static str, v: usize, doc: &'static str| {
        ParamSpec::optional(name, ParamType::Int, ParamValue::Int(v as i64), doc)
            .range(1.0, 65536.0)
    };
    spec.param(ParamSpec::optional(
        "in_feature",
        ParamType::Str,
        ParamValue::Str("p2".into()),
        "the stride-4 level the heads read",
    ))
    .param(int("in_channels", doc.in_channels, "channels of that level (resdcn and DLA: 64, Hourglass: cnv_dim)"))
    .param(int(
        "head_conv",
        doc.head_conv,
        "channels of the heads' 3x3 convolutions (resdcn: 64, DLA and Hourglass: 256)",
    ))
    .param(int("k", doc.k, "peaks kept by the decoding (--K)"))
    .param(ParamSpec::optional(
        "head_names",
        ParamType::Str,
        ParamValue::Str("sequential".into()),
        "how the checkpoint names the heads: \"sequential\" (hm.0, hm.2: resdcn, DLA) or \"hourglass\" (hm.<stack>.0.conv, hm.<stack>.1 of the last stack)",
    ))
    .param(
        ParamSpec::optional(
            "stacks",
            ParamType::Int,
            ParamValue::Int(2),
            "with head_names = \"hourglass\": the Hourglass's stacks (the last one's heads are used)",
        )
        .range(1.0, 16.0),
    )
    .param(
        ParamSpec::optional(
            "score_threshold",
            ParamType::Float,
            ParamValue::Float(0.0),
            "keep the results whose score is above this (0: all K, as for COCO evaluation; the demo's vis_thresh is 0.3)",
        )
        .range(0.0, 1.0),
    )
}

/// The `instances` of a detector: the `(box in photo pixels, score, class index)` above
/// `score_threshold` (all of them at 0), with their category ids.
pub(crate) fn instances_value(
    dets: impl Iterator<Item = ([f32; 4], f32, usize)>,
    category_ids: &[i64],
    score_threshold: f32,
) -> Result<Value, ModelError> {
    let mut out = plugin_sdk::Instances::default();
    for (bbox, score, class) in dets.filter(|d| score_threshold == 0.0 || d.1 > score_threshold) {
        out.boxes.push(bbox);
        out.scores.push(score);
        out.classes.push(category_ids[class]);
    }
    out.to_value().map_err(ModelError::Input)
}

/// The `category_ids` parameter: one id per class.
pub(crate) fn category_ids_param(params: &Params, classes: usize) -> Result<Vec<i64>, ModelError> {
    let ids = params.int_list("category_ids").map_err(ModelError::Input)?;
    if ids.len() != classes {
        return Err(ModelError::param(
            "category_ids",
            format!("has {} ids for {classes} classes", ids.len()),
        ));
    }
    Ok(ids.to_vec())
}

/// The `head_names` (and `stacks`) parameters.
pub(crate) fn head_names_param(params: &Params) -> Result<HeadNames, ModelError> {
    match params.str("head_names").map_err(ModelError::Input)? {
        "sequential" => Ok(HeadNames::Sequential),
        "hourglass" => Ok(HeadNames::Hourglass {
            stack: count_param(params, "stacks")? - 1,
        }),
        other => Err(ModelError::param(
            "head_names",
            format!("must be \"sequential\" or \"hourglass\", got \"{other}\""),
        )),
    }
}

pub fn kind() -> NodeKind {
    let d = CenterNetConfig::default();
    let spec = NodeSpec::new(
        NODE,
        "CenterNet ctdet heads on stride-4 features: hm/wh/reg, ctdet_decode (3x3 max-pool peaks, top K), boxes in photo pixels",
    );
    let spec = heads_spec(
        spec,
        HeadsSpecDoc {
            output: "the top K peaks as boxes in photo pixels, best first, with scores and COCO category ids",
            heads: "hm / wh / reg",
            in_channels: d.in_channels,
            head_conv: d.head_conv,
            k: d.k,
        },
    )
    .param(
        ParamSpec::optional(
            "num_classes",
            ParamType::Int,
            ParamValue::Int(d.num_classes as i64),
            "heatmap classes (COCO: 80)",
        )
        .range(1.0, 65536.0),
    )
        .param(ParamSpec::optional(
            "category_ids",
            ParamType::IntList,
            ParamValue::IntList(COCO_CATEGORY_IDS.to_vec()),
            "the category id of each class index (COCO's 80 sparse ids by default)",
        ))
    ;
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
            head_conv: count_param(params, "head_conv")?,
            num_classes: count_param(params, "num_classes")?,
            k: count_param(params, "k")?,
            head_names: head_names_param(params)?,
        };
        let category_ids = category_ids_param(params, config.num_classes)?;
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
        let out = self.model.heads(levels[0])?;
        let (_, oh, ow) = out.hm.dim();
        let dets = self.model.decode(&out)?;
        instances_value(
            dets.iter().map(|d| {
                (
                    to_photo(&d.bbox, sizes.original, (oh, ow)),
                    d.score,
                    d.class,
                )
            }),
            &self.category_ids,
            self.score_threshold,
        )
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
