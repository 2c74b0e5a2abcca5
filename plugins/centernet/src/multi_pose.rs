//! `centernet_multi_pose`: CenterNet's `multi_pose` task (human pose as points; xingyizhou/
//! CenterNet @ 4c50fd3a, `src/lib/detectors/multi_pose.py`, `multi_pose_decode` and
//! `_topk_channel` in `src/lib/models/decode.py`, `multi_pose_post_process`) on stride-4
//! features:
//!
//! 1. Heads (a 3x3 convolution with ReLU, then 1x1, as for `ctdet`): `hm` (1 class, person),
//!    `wh`, `reg`, `hps` (17 keypoints as offsets from the centre, 34 channels), `hm_hp`
//!    (17 keypoint heatmaps) and `hp_offset`.
//! 2. The people: `sigmoid(hm)`, the 3x3 max-pool suppression and the top `K` (100); each
//!    peak's box as `ctdet`'s, and its regressed keypoints `hps[:, y, x] + (x, y)` at the
//!    peak's integer position.
//! 3. The keypoint heatmaps: `sigmoid(hm_hp)`, the same suppression, the top `K` of each joint
//!    (`_topk_channel`) plus `hp_offset`. A candidate scoring at most 0.1 gets the score −1 and
//!    the position (−10000, −10000).
//! 4. Snapping: each regressed keypoint takes its nearest candidate of the same joint
//!    (Euclidean distance, the first on ties) unless that candidate lies outside the person's
//!    box, scores below 0.1, or is farther than 0.3 · max(box height, box width); then it
//!    keeps the regressed position.
//! 5. `multi_pose_post_process`: boxes and keypoints to the photo by the inverse affine
//!    transform.
//!
//! Output: `instances` with `keypoints` `[K, 17, 3]` (x, y, 1 as the COCO results of the
//! official evaluation write it) and the person category id.

use kernels::ops::heatmap::{heatmap_nms, topk_per_channel, Peak};
use kernels::ops::sigmoid_slice;
use kernels::weights::Weights;
use kernels::Tensor;
use ndarray::{Array3, ArrayView4};
use plugin_sdk::{
    FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, Value,
};
use vision_common::{
    count_param, float_param, named_levels, weights_param, ImageSizes, ModelError,
};

use crate::model::{
    center_peaks, head, head_names_param, heads_spec, peak_box, photo_mapping, Head, HeadNames,
    HeadsSpecDoc,
};

const NODE: &str = "centernet_multi_pose";
/// `multi_pose_decode`'s keypoint score threshold and box-size factor.
const KEYPOINT_THRESHOLD: f32 = 0.1;
const SNAP_FACTOR: f32 = 0.3;

/// The settings of [`MultiPose`]; the defaults are `multi_pose` with `dla_34`.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiPoseConfig {
    pub in_channels: usize,
    pub head_conv: usize,
    pub joints: usize,
    pub k: usize,
    pub head_names: HeadNames,
}

impl Default for MultiPoseConfig {
    fn default() -> Self {
        MultiPoseConfig {
            in_channels: 64,
            head_conv: 256,
            joints: 17,
            k: 100,
            head_names: HeadNames::Sequential,
        }
    }
}

/// The raw head outputs at stride 4.
#[derive(Clone, Debug)]
pub struct MultiPoseOutputs {
    pub hm: Array3<f32>,
    pub wh: Array3<f32>,
    pub hps: Array3<f32>,
    pub reg: Array3<f32>,
    pub hm_hp: Array3<f32>,
    pub hp_offset: Array3<f32>,
}

/// One person at stride 4: box, score, the peak's flat index, and its keypoints `(x, y)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Person {
    pub bbox: [f32; 4],
    pub score: f32,
    pub index: usize,
    pub keypoints: Vec<[f32; 2]>,
}

/// The multi-pose heads with their weights bound.
#[derive(Debug)]
pub struct MultiPose {
    config: MultiPoseConfig,
    heads: Vec<Head>,
}

impl MultiPose {
    pub fn from_weights(
        weights: &Weights,
        prefix: &str,
        config: MultiPoseConfig,
    ) -> Result<MultiPose, ModelError> {
        let mut b = weights.binder(prefix);
        let (cin, hc, j) = (config.in_channels, config.head_conv, config.joints);
        let mut heads = Vec::new();
        for (name, cout) in [
            ("hm", 1),
            ("wh", 2),
            ("hps", 2 * j),
            ("reg", 2),
            ("hm_hp", j),
            ("hp_offset", 2),
        ] {
            heads.push(head(&mut b, config.head_names.names(name), cin, hc, cout)?);
            if let HeadNames::Hourglass { stack } = config.head_names {
                for s in 0..stack {
                    b.ignore_module(&format!("{name}.{s}."));
                }
            }
        }
        b.ignore_unbound_modules();
        b.finish()?;
        Ok(MultiPose { config, heads })
    }

    /// The six heads on the stride-4 features `[1, C, H, W]`.
    pub fn heads(&self, x: ArrayView4<'_, f32>) -> Result<MultiPoseOutputs, ModelError> {
        let (n, c, h, w) = x.dim();
        if n != 1 || c != self.config.in_channels {
            return Err(ModelError::input(format!(
                "{NODE}: the stride-4 features are [{n}, {c}, {h}, {w}]; the checkpoint's heads expect one image of {} channels",
                self.config.in_channels
            )));
        }
        let mut out = self
            .heads
            .iter()
            .map(|hd| hd.forward(x))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter();
        let mut next = || out.next().ok_or_else(|| ModelError::input("missing head"));
        Ok(MultiPoseOutputs {
            hm: next()?,
            wh: next()?,
            hps: next()?,
            reg: next()?,
            hm_hp: next()?,
            hp_offset: next()?,
        })
    }

    /// `multi_pose_decode`: the best `K` people, best first, at stride 4.
    pub fn decode(&self, out: &MultiPoseOutputs) -> Result<Vec<Person>, ModelError> {
        let (_, h, w) = out.hm.dim();
        let k = self.config.k.min(h * w);
        let joints = self.config.joints;
        let op = |e: kernels::ops::OpError| ModelError::input(e.to_string());
        let mut people: Vec<Person> = center_peaks(&out.hm, k)?
            .iter()
            .map(|p: &Peak| {
                // The regressed keypoints start from the peak's integer position.
                let (fx, fy) = (p.x as f32, p.y as f32);
                let keypoints = (0..joints)
                    .map(|j| {
                        [
                            out.hps[[2 * j, p.y, p.x]] + fx,
                            out.hps[[2 * j + 1, p.y, p.x]] + fy,
                        ]
                    })
                    .collect();
                Person {
                    bbox: peak_box(p, &out.wh, &out.reg),
                    score: p.score,
                    index: p.index,
                    keypoints,
                }
            })
            .collect();

        // The keypoint candidates: sigmoid, suppression, the top K of each joint.
        let mut heat = out.hm_hp.as_standard_layout().into_owned();
        sigmoid_slice(
            heat.as_slice_mut()
                .ok_or_else(|| ModelError::input("hm_hp is not contiguous"))?,
        );
        let heat = heatmap_nms(heat.view(), 3).map_err(op)?;
        let candidates: Vec<Vec<(f32, f32, f32)>> = topk_per_channel(heat.view(), k)
            .map_err(op)?
            .into_iter()
            .map(|peaks| {
                peaks
                    .into_iter()
                    .map(|c| {
                        let x = c.x as f32 + out.hp_offset[[0, c.y, c.x]];
                        let y = c.y as f32 + out.hp_offset[[1, c.y, c.x]];
                        if c.score > KEYPOINT_THRESHOLD {
                            (c.score, x, y)
                        } else {
                            (-1.0, -10000.0, -10000.0)
                        }
                    })
                    .collect()
            })
            .collect();
        for person in &mut people {
            let [l, t, r, b] = person.bbox;
            let reach = (b - t).max(r - l) * SNAP_FACTOR;
            for (j, kp) in person.keypoints.iter_mut().enumerate() {
                // The nearest candidate, the first on ties (torch.min's index).
                let mut best: Option<(f32, usize)> = None;
                for (i, &(_, cx, cy)) in candidates[j].iter().enumerate() {
                    let (dx, dy) = (kp[0] - cx, kp[1] - cy);
                    let d = (dx * dx + dy * dy).sqrt();
                    if best.is_none_or(|(bd, _)| d < bd) {
                        best = Some((d, i));
                    }
                }
                let Some((dist, i)) = best else { continue };
                let (score, cx, cy) = candidates[j][i];
                let keep_regressed = cx < l
                    || cx > r
                    || cy < t
                    || cy > b
                    || score < KEYPOINT_THRESHOLD
                    || dist > reach;
                if !keep_regressed {
                    *kp = [cx, cy];
                }
            }
        }
        Ok(people)
    }
}

pub fn kind() -> NodeKind {
    let d = MultiPoseConfig::default();
    let spec = NodeSpec::new(
        NODE,
        "CenterNet multi_pose heads on stride-4 features: people as peaks with boxes and 17 keypoints (regressed, snapped to keypoint heatmap peaks), in photo pixels",
    );
    let spec = heads_spec(
        spec,
        HeadsSpecDoc {
            output: "the top K people, best first: boxes, scores, the person category id and keypoints [K, 17, 3] (x, y, 1) in photo pixels",
            heads: "hm / wh / hps / reg / hm_hp / hp_offset",
            in_channels: d.in_channels,
            head_conv: d.head_conv,
            k: d.k,
        },
    )
    .param(
        ParamSpec::optional("joints", ParamType::Int, ParamValue::Int(d.joints as i64), "keypoints per person (COCO: 17)")
            .range(1.0, 1024.0),
    )
    .param(
        ParamSpec::optional("category_id", ParamType::Int, ParamValue::Int(1), "the category id of a person (COCO: 1)")
            .range(0.0, 1e9),
    );
    NodeKind::new(spec, |params| {
        Ok(Box::new(MultiPoseNode::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `centernet_multi_pose` node.
#[derive(Debug)]
pub struct MultiPoseNode {
    model: MultiPose,
    in_feature: String,
    category_id: i64,
    score_threshold: f32,
}

impl MultiPoseNode {
    pub fn from_params(params: &Params) -> Result<MultiPoseNode, ModelError> {
        let config = MultiPoseConfig {
            in_channels: count_param(params, "in_channels")?,
            head_conv: count_param(params, "head_conv")?,
            joints: count_param(params, "joints")?,
            k: count_param(params, "k")?,
            head_names: head_names_param(params)?,
        };
        let (weights, prefix) = weights_param(params)?;
        Ok(MultiPoseNode {
            model: MultiPose::from_weights(&weights, &prefix, config)?,
            in_feature: params
                .str("in_feature")
                .map_err(ModelError::Input)?
                .to_string(),
            category_id: params.int("category_id").map_err(ModelError::Input)?,
            score_threshold: float_param(params, "score_threshold")?,
        })
    }

    pub fn model(&self) -> &MultiPose {
        &self.model
    }

    /// The node's computation: the top K people in photo pixels.
    pub fn run(&self, features: &Value, image: &Value) -> Result<Value, ModelError> {
        let sizes = ImageSizes::from_value(NODE, image)?;
        let levels = named_levels(NODE, features, std::slice::from_ref(&self.in_feature))?;
        let out = self.model.heads(levels[0])?;
        let (_, oh, ow) = out.hm.dim();
        let people = self.model.decode(&out)?;
        let keep: Vec<&Person> = people
            .iter()
            .filter(|p| self.score_threshold == 0.0 || p.score > self.score_threshold)
            .collect();
        let map = photo_mapping(sizes.original, (oh, ow));
        let joints = self.model.config.joints;
        let mut boxes = Vec::new();
        let mut keypoints = Vec::with_capacity(keep.len() * joints * 3);
        for p in &keep {
            let (x1, y1) = map(p.bbox[0], p.bbox[1]);
            let (x2, y2) = map(p.bbox[2], p.bbox[3]);
            boxes.push([x1, y1, x2, y2]);
            for kp in &p.keypoints {
                let (x, y) = map(kp[0], kp[1]);
                keypoints.extend([x, y, 1.0]);
            }
        }
        let mut v = plugin_sdk::Instances {
            boxes,
            scores: keep.iter().map(|p| p.score).collect(),
            classes: vec![self.category_id; keep.len()],
        }
        .to_value()
        .map_err(ModelError::Input)?;
        v.insert(
            "keypoints",
            Tensor::from_vec(&[keep.len(), joints, 3], keypoints)?,
        );
        Ok(v)
    }
}

impl Node for MultiPoseNode {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(inputs.value("features")?, inputs.value("image")?)?;
        Ok(Outputs::one("instances", v))
    }
}
