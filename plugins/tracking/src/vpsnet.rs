//! `vpsnet_track_head`: VPSNet's track head and its association of instances across the
//! frames of a video (mcahny/vps @ 138503ed: `mmdet/models/track_heads/track_head.py`, and
//! `PanopticFuseTrack.simple_test_bboxes` in `mmdet/models/detectors/panoptic_fusetrack.py`,
//! configured by `configs/cityscapes/fusetrack.py`).
//!
//! Per frame, for the final detections of the frame:
//! 1. RoI features: mmdet 1.x's `SingleRoIExtractor` with `RoIAlign(out_size=7, sample_num=2)`
//!    over P2..P5 (`featmap_strides` 4, 8, 16, 32): level `floor(log2(sqrt((w + 1)(h + 1)) /
//!    56 + 1e-6))` clamped to the levels, and mmdet's own RoIAlign, whose boxes are inclusive
//!    pixels (the RoI ends at `(x2 + 1) / stride`, no half-pixel offset, its size clamped at 0
//!    rather than torchvision's 1): `kernels::ops::MultiScaleRoIAlign::mmdet_v1`.
//! 2. Embeddings: `fcs` (`num_fcs` linear layers, `in_channels·7·7 → fc_out_channels → ...`),
//!    with a ReLU between them but not after the last.
//! 3. The first frame of a stream, or a stream whose memory is still empty: ids `0..N`, and
//!    the detections become the memory (embedding, box and label per object).
//! 4. Otherwise `match_score = [0 | x·memᵀ]` (a zero "dummy" column first: a new object),
//!    `match_ll = log_softmax(match_score)` per row, and the comprehensive score
//!    `comp = match_ll + c0·log(cls_prob) + c1·IoU + c2·[same label]` with
//!    `match_coeff = (c0, c1, c2)` (default 1, 2, 10), IoU the mmdet "+1" `bbox_overlaps`
//!    with the memory's boxes, and for the dummy column IoU = `bbox_dummy_iou` (0) and label
//!    term 1. Without `match_coeff` (an empty list) `comp = match_ll`.
//! 5. `argmax` per detection (the first of equal maxima, as torch's CPU `max`). Column 0: a
//!    new object, appended to the memory at once (its id is the memory's length). Column
//!    `j > 0`: object `j - 1`, unless another detection chose it with a larger comprehensive
//!    score: the strictly larger one keeps it (an earlier holder is undone) and the memory's
//!    embedding and box become the holder's. A score must also exceed -100 (the official
//!    initial best). Detections left without an object then become new objects, in order.
//!    The memory's **label is not updated** on a match, only the embedding and the box (as
//!    the official code does), so the label term compares with the label the object was
//!    first seen with.
//!
//! Inputs and outputs:
//! - `features`: the FPN levels named in `in_features` (`p2..p5`; VPSNet pools from the first
//!   four levels of its fused pyramid), one image.
//! - `instances`: the frame's final detections, boxes in the pixels of the image the
//!   features were computed on (the network input, before any rescale to the photo);
//!   `classes` give the label term (only equality matters, so any numbering works), `scores`
//!   give `cls_prob`: in VPSNet, `cls_prob` is what `mask_roi_panoptic` returns, the softmax
//!   probability of each detection's class, i.e. the detection score.
//! - Output `instances`: the input with `track_ids` (i64 `[N]`, the object ids).
//!
//! Differences from the official code, none of which changes a result:
//! - The memory is per stream (`StreamState`): a new stream starts empty, as a video whose
//!   frame id is 1 does officially (`iid % 10000 == 1`).
//! - The memory holds each object's embedding, not its 12544-value RoI feature: the official
//!   code recomputes `fcs(prev_roi_feats)` every frame, the same function of the same stored
//!   features (up to float rounding), at 12 times the memory and a growing cost per frame.
//! - A frame without instances gives no ids and keeps the memory. Officially it cannot
//!   happen: `mask_roi_panoptic` returns one dummy detection (box [0, 0, 0, 0], score 1,
//!   label -1) instead of none, which is then tracked like any other; a VPSNet detector node
//!   that reproduces that passes it here too.
//! - Like the official code, the memory is never pruned: ids grow with every new object of
//!   the stream.

use kernels::layers::{Activation, Linear};
use kernels::ops::roi_align::RoiAlignWorkspace;
use kernels::ops::MultiScaleRoIAlign;
use kernels::weights::Weights;
use ndarray::{Array2, ArrayView2, ArrayView4, Axis};
use plugin_sdk::{
    FrameInfo, Inputs, Instances, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec,
    ParamType, ParamValue, Params, PortKind, PortSpec, StreamState, Tensor, Value,
};
use vision_common::{
    count_list_param, count_param, f32_value, feature_levels, features_input, float_param,
    in_features_param, levels_params, linear, resolve_prefix, weights_param, LayerContext,
    ModelError,
};

const NODE: &str = "vpsnet_track_head";

/// The official initial "best score" of each memory object in a frame: a detection whose
/// comprehensive score is not above it cannot take the object.
const NO_MATCH_SCORE: f32 = -100.0;

/// The settings of [`TrackHead`]; the defaults are `configs/cityscapes/fusetrack.py`'s.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackHeadConfig {
    /// Channels of the pooled features (`in_channels`).
    pub in_channels: usize,
    /// RoIAlign's output size (`roi_feat_size`, `out_size`).
    pub roi_feat_size: usize,
    pub num_fcs: usize,
    pub fc_out_channels: usize,
    /// `(c0, c1, c2)` of the comprehensive score; `None`: the match likelihood alone.
    pub match_coeff: Option<[f32; 3]>,
    /// The IoU term of the dummy (new object) column.
    pub bbox_dummy_iou: f32,
    /// The levels' strides (`featmap_strides`); their scales are `1 / stride`.
    pub featmap_strides: Vec<usize>,
    /// `SingleRoIExtractor.finest_scale`: boxes below twice this size go to the first level.
    pub finest_scale: usize,
    /// RoIAlign's `sample_num` (samples per bin side; 0: adaptive).
    pub sample_num: i32,
}

impl Default for TrackHeadConfig {
    fn default() -> Self {
        TrackHeadConfig {
            in_channels: 256,
            roi_feat_size: 7,
            num_fcs: 2,
            fc_out_channels: 1024,
            match_coeff: Some([1.0, 2.0, 10.0]),
            bbox_dummy_iou: 0.0,
            featmap_strides: vec![4, 8, 16, 32],
            finest_scale: 56,
            sample_num: 2,
        }
    }
}

/// The track head with its weights bound: RoI pooling and the embedding layers.
#[derive(Debug)]
pub struct TrackHead {
    config: TrackHeadConfig,
    align: MultiScaleRoIAlign,
    scales: Vec<f64>,
    fcs: Vec<Linear>,
}

impl TrackHead {
    /// Binds `fcs.{i}.weight` / `fcs.{i}.bias` under `prefix` (`"track_head."` in a VPSNet
    /// checkpoint; a state dict of the head alone binds with the prefix falling back to none).
    pub fn from_weights(
        weights: &Weights,
        prefix: &str,
        config: TrackHeadConfig,
    ) -> Result<TrackHead, ModelError> {
        if config.num_fcs == 0 {
            return Err(ModelError::param("num_fcs", "must be at least 1"));
        }
        if config.featmap_strides.is_empty() {
            return Err(ModelError::param(
                "featmap_strides",
                "must name at least one stride",
            ));
        }
        let prefix = resolve_prefix(weights, prefix, &["fcs.0.weight"]);
        let mut b = weights.binder(&prefix);
        let flat = config.in_channels * config.roi_feat_size * config.roi_feat_size;
        let fcs = (0..config.num_fcs)
            .map(|i| {
                let cin = if i == 0 { flat } else { config.fc_out_channels };
                // TrackHead.forward: ReLU after every fc but the last.
                let act = if i + 1 < config.num_fcs {
                    Activation::Relu
                } else {
                    Activation::Identity
                };
                linear(
                    &mut b,
                    &format!("fcs.{i}"),
                    cin,
                    config.fc_out_channels,
                    act,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        b.finish()?;
        let align = MultiScaleRoIAlign {
            canonical_scale: config.finest_scale as i32,
            ..MultiScaleRoIAlign::mmdet_v1(config.roi_feat_size, config.sample_num)
        };
        let scales = config
            .featmap_strides
            .iter()
            .map(|&s| 1.0 / s as f64)
            .collect();
        Ok(TrackHead {
            config,
            align,
            scales,
            fcs,
        })
    }

    pub fn config(&self) -> &TrackHeadConfig {
        &self.config
    }

    /// The RoI features `[N, C, S, S]` of `boxes` (pixels of the features' image).
    pub fn roi_features(
        &self,
        ws: &mut RoiAlignWorkspace,
        levels: &[ArrayView4<'_, f32>],
        boxes: &[[f32; 4]],
    ) -> Result<ndarray::Array4<f32>, ModelError> {
        if levels.len() != self.scales.len() {
            return Err(ModelError::input(format!(
                "{NODE}: {} feature levels for {} featmap_strides",
                levels.len(),
                self.scales.len()
            )));
        }
        if let Some(first) = levels.first() {
            if first.dim().1 != self.config.in_channels {
                return Err(ModelError::input(format!(
                    "{NODE}: the feature levels have {} channels, the head expects {}",
                    first.dim().1,
                    self.config.in_channels
                )));
            }
        }
        self.align
            .forward_with_scales(ws, levels, &[boxes], &self.scales)
            .map_err(|e| ModelError::input(format!("{NODE}: {e}")))
    }

    /// The embeddings `[N, fc_out_channels]` of RoI features `[N, C, S, S]`.
    pub fn embed(&self, roi_features: ndarray::Array4<f32>) -> Result<Array2<f32>, ModelError> {
        let n = roi_features.dim().0;
        let flat_len = roi_features.len() / n.max(1);
        let mut x = roi_features
            .into_shape_with_order((n, flat_len))
            .map_err(|e| ModelError::input(e.to_string()))?;
        for (i, fc) in self.fcs.iter().enumerate() {
            x = fc.forward(x.view()).ctx(|| format!("fcs.{i}"))?;
        }
        Ok(x)
    }

    /// `TrackHead.forward` for one image: `[0 | x·refᵀ]`, `[N, 1 + M]`.
    pub fn match_scores(&self, x: ArrayView2<'_, f32>, ref_x: ArrayView2<'_, f32>) -> Array2<f32> {
        let (n, m) = (x.nrows(), ref_x.nrows());
        let mut out = Array2::zeros((n, m + 1));
        let prod = x.dot(&ref_x.t());
        out.slice_mut(ndarray::s![.., 1..]).assign(&prod);
        out
    }

    /// `compute_comp_scores(match_ll, cls_prob, ious, label_delta, add_bbox_dummy=True)`:
    /// `match_ll` `[N, 1 + M]`, `ious` and `same_label` `[N, M]` (without the dummy column).
    pub fn comp_scores(
        &self,
        match_ll: &Array2<f32>,
        cls_prob: &[f32],
        ious: &Array2<f32>,
        same_label: &Array2<f32>,
    ) -> Array2<f32> {
        let Some([c0, c1, c2]) = self.config.match_coeff else {
            return match_ll.clone();
        };
        let mut comp = match_ll.clone();
        for (i, mut row) in comp.outer_iter_mut().enumerate() {
            let log_p = cls_prob[i].ln();
            for (j, v) in row.iter_mut().enumerate() {
                let (iou, label) = if j == 0 {
                    (self.config.bbox_dummy_iou, 1.0)
                } else {
                    (ious[[i, j - 1]], same_label[[i, j - 1]])
                };
                // torch's order: ((ll + c0·log p) + c1·iou) + c2·label, in f32.
                *v = *v + c0 * log_p + c1 * iou + c2 * label;
            }
        }
        comp
    }
}

/// `log_softmax` along each row, as torch computes it: `x - max - log(sum(exp(x - max)))`.
pub fn log_softmax_rows(x: &Array2<f32>) -> Array2<f32> {
    let mut out = x.clone();
    for mut row in out.outer_iter_mut() {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
        let log_sum = sum.ln();
        row.mapv_inplace(|v| v - max - log_sum);
    }
    out
}

/// `torch.max(row, dim)` on the CPU: the first of equal maxima, and a NaN is the maximum (the
/// first NaN). `row` is not empty (it holds the dummy column).
fn first_max(row: ndarray::ArrayView1<'_, f32>) -> (usize, f32) {
    let mut best = (0, row[0]);
    for (j, &v) in row.iter().enumerate().skip(1) {
        if best.1.is_nan() {
            break;
        }
        if v.is_nan() || v > best.1 {
            best = (j, v);
        }
    }
    best
}

/// mmdet 1.x's `bbox_overlaps` (IoU) with its "+1" pixel convention, in f32: widths are
/// `x2 - x1 + 1`, so a box [x, y, x, y] has area 1. `[N, M]`.
pub fn bbox_overlaps(a: &[[f32; 4]], b: &[[f32; 4]]) -> Array2<f32> {
    let area = |r: &[f32; 4]| (r[2] - r[0] + 1.0) * (r[3] - r[1] + 1.0);
    Array2::from_shape_fn((a.len(), b.len()), |(i, j)| {
        let (p, q) = (&a[i], &b[j]);
        // `(rb - lt + 1).clamp(min=0)`
        let w = (p[2].min(q[2]) - p[0].max(q[0]) + 1.0).max(0.0);
        let h = (p[3].min(q[3]) - p[1].max(q[1]) + 1.0).max(0.0);
        let overlap = w * h;
        overlap / (area(p) + area(q) - overlap)
    })
}

/// The objects of one stream: row `id` of each field is object `id`.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    /// `[M, fc_out_channels]` once the first detections arrive.
    embeddings: Option<Array2<f32>>,
    boxes: Vec<[f32; 4]>,
    labels: Vec<i64>,
}

impl Memory {
    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    pub fn boxes(&self) -> &[[f32; 4]] {
        &self.boxes
    }

    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// Appends detection `i` as a new object; returns its id.
    fn push(&mut self, embedding: ndarray::ArrayView1<'_, f32>, bx: [f32; 4], label: i64) -> i64 {
        let id = self.len() as i64;
        match &mut self.embeddings {
            Some(e) => {
                // Rows of the same width (checked by the head): cannot fail.
                let _ = e.push_row(embedding);
            }
            None => self.embeddings = Some(embedding.to_owned().insert_axis(Axis(0))),
        }
        self.boxes.push(bx);
        self.labels.push(label);
        id
    }
}

/// What one frame's association computed (for tests and diagnostics).
#[derive(Clone, Debug, Default)]
pub struct Association {
    /// `[N, 1 + M]`, the dummy column first; empty on a stream's first frame.
    pub match_score: Array2<f32>,
    /// The comprehensive scores, `[N, 1 + M]`; empty on a stream's first frame.
    pub comp: Array2<f32>,
    /// The object id of each detection.
    pub ids: Vec<i64>,
}

/// Assigns object ids to the detections of one frame (embeddings `[N, D]`) and updates the
/// memory, as `simple_test_bboxes` does.
pub fn associate(
    head: &TrackHead,
    memory: &mut Memory,
    embeddings: &Array2<f32>,
    det: &Instances,
) -> Association {
    let n = det.len();
    let Some(mem) = memory.embeddings.as_ref().filter(|_| !memory.is_empty()) else {
        // First frame (or nothing seen yet): every detection is a new object.
        let ids = (0..n)
            .map(|i| memory.push(embeddings.row(i), det.boxes[i], det.classes[i]))
            .collect();
        return Association {
            ids,
            ..Association::default()
        };
    };
    let m = memory.len();
    let match_score = head.match_scores(embeddings.view(), mem.view());
    let match_ll = log_softmax_rows(&match_score);
    let ious = bbox_overlaps(&det.boxes, &memory.boxes);
    let same_label = Array2::from_shape_fn((n, m), |(i, j)| {
        f32::from(u8::from(memory.labels[j] == det.classes[i]))
    });
    let comp = head.comp_scores(&match_ll, &det.scores, &ious, &same_label);

    let best: Vec<(usize, f32)> = comp.outer_iter().map(first_max).collect();

    let mut ids = vec![-1i64; n];
    let mut best_score = vec![NO_MATCH_SCORE; m];
    let mut holder: Vec<Option<usize>> = vec![None; m];
    for (i, &(j, score)) in best.iter().enumerate() {
        if j == 0 {
            // The dummy column: a new object, appended now (before the losers below).
            ids[i] = memory.push(embeddings.row(i), det.boxes[i], det.classes[i]);
            continue;
        }
        let obj = j - 1;
        if score > best_score[obj] {
            ids[i] = obj as i64;
            if let Some(previous) = holder[obj] {
                ids[previous] = -1;
            }
            best_score[obj] = score;
            holder[obj] = Some(i);
            // The holder's embedding and box replace the object's; its label stays.
            if let Some(e) = memory.embeddings.as_mut() {
                e.row_mut(obj).assign(&embeddings.row(i));
            }
            memory.boxes[obj] = det.boxes[i];
        }
    }
    // Detections that lost their object (or never beat -100) are new objects, in order.
    for (i, id) in ids.iter_mut().enumerate() {
        if *id < 0 {
            *id = memory.push(embeddings.row(i), det.boxes[i], det.classes[i]);
        }
    }
    Association {
        match_score,
        comp,
        ids,
    }
}

pub fn track_head_kind() -> NodeKind {
    let d = TrackHeadConfig::default();
    let spec = NodeSpec::new(
        NODE,
        "VPSNet's track head: object ids across the frames of a stream from RoI embeddings, box IoU and labels (mcahny/vps TrackHead and simple_test_bboxes)",
    );
    let spec = features_input(
        spec,
        "the FPN levels named in `in_features` (p2..p5 of VPSNet's fused pyramid)",
    )
    .input(PortSpec::new(
        "instances",
        PortKind::Instances,
        "the frame's final detections, boxes in the pixels of the features' image; scores are VPSNet's cls_prob (the class probability), classes give the label term",
    ))
    .output(PortSpec::new(
        "instances",
        PortKind::Instances,
        "the detections with track_ids (i64 [N]): per stream, 0 for the first object, then one more per new object",
    ))
    .param(ParamSpec::required(
        "weights",
        ParamType::Path,
        "VPSNet checkpoint (.pth or .safetensors) holding track_head.fcs.* (or a state dict of the track head alone)",
    ))
    .param(ParamSpec::optional(
        "prefix",
        ParamType::Str,
        ParamValue::Str("track_head.".into()),
        "name prefix of the track head's tensors",
    ));
    let spec = levels_params(
        spec,
        &["p2", "p3", "p4", "p5"],
        "feature levels RoIs are pooled from, finest first (one per featmap_strides entry)",
        d.in_channels,
    )
    .param(
        ParamSpec::optional(
            "featmap_strides",
            ParamType::IntList,
            ParamValue::IntList(d.featmap_strides.iter().map(|&s| s as i64).collect()),
            "stride of each level in in_features (RoIAlign scale 1 / stride)",
        )
        .range(1.0, 4096.0),
    )
    .param(
        ParamSpec::optional(
            "finest_scale",
            ParamType::Int,
            ParamValue::Int(d.finest_scale as i64),
            "SingleRoIExtractor's finest_scale: boxes with sqrt((w + 1)(h + 1)) below twice this go to the first level",
        )
        .range(1.0, 65536.0),
    )
    .param(
        ParamSpec::optional(
            "roi_feat_size",
            ParamType::Int,
            ParamValue::Int(d.roi_feat_size as i64),
            "RoIAlign output size (out_size = roi_feat_size)",
        )
        .range(1.0, 64.0),
    )
    .param(
        ParamSpec::optional(
            "sample_num",
            ParamType::Int,
            ParamValue::Int(d.sample_num.into()),
            "RoIAlign samples per bin side (0: adaptive)",
        )
        .range(0.0, 64.0),
    )
    .param(
        ParamSpec::optional(
            "num_fcs",
            ParamType::Int,
            ParamValue::Int(d.num_fcs as i64),
            "linear layers of the embedding (ReLU between them)",
        )
        .range(1.0, 16.0),
    )
    .param(
        ParamSpec::optional(
            "fc_out_channels",
            ParamType::Int,
            ParamValue::Int(d.fc_out_channels as i64),
            "width of the linear layers (the embedding size)",
        )
        .range(1.0, 65536.0),
    )
    .param(ParamSpec::optional(
        "match_coeff",
        ParamType::FloatList,
        ParamValue::FloatList(
            d.match_coeff
                .unwrap_or_default()
                .iter()
                .map(|&v| f32_value(v))
                .collect(),
        ),
        "(c0, c1, c2): comp = log_softmax(match) + c0·log(score) + c1·IoU + c2·[same label]; [] for the match likelihood alone",
    ))
    .param(
        ParamSpec::optional(
            "bbox_dummy_iou",
            ParamType::Float,
            ParamValue::Float(f32_value(d.bbox_dummy_iou)),
            "IoU term of the new-object (dummy) column",
        )
        .range(-1e6, 1e6),
    );
    NodeKind::new(spec, |params| {
        Ok(Box::new(TrackHeadNode::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `vpsnet_track_head` node: the head and one memory per stream.
#[derive(Debug)]
pub struct TrackHeadNode {
    head: TrackHead,
    in_features: Vec<String>,
    streams: StreamState<Memory>,
    workspace: RoiAlignWorkspace,
}

impl TrackHeadNode {
    pub fn from_params(params: &Params) -> Result<TrackHeadNode, ModelError> {
        let in_features = in_features_param(params)?;
        let match_coeff = match params
            .float_list("match_coeff")
            .map_err(ModelError::Input)?[..]
        {
            [] => None,
            [a, b, c] if [a, b, c].iter().all(|v| v.is_finite()) => {
                Some([a as f32, b as f32, c as f32])
            }
            ref other => {
                return Err(ModelError::param(
                    "match_coeff",
                    format!("must be 3 finite numbers (or empty), got {other:?}"),
                ))
            }
        };
        let featmap_strides = count_list_param(params, "featmap_strides")?;
        if featmap_strides.len() != in_features.len() {
            return Err(ModelError::param(
                "featmap_strides",
                format!(
                    "must have one stride per level of in_features ({}), got {featmap_strides:?}",
                    in_features.len()
                ),
            ));
        }
        let config = TrackHeadConfig {
            in_channels: count_param(params, "channels")?,
            roi_feat_size: count_param(params, "roi_feat_size")?,
            num_fcs: count_param(params, "num_fcs")?,
            fc_out_channels: count_param(params, "fc_out_channels")?,
            match_coeff,
            bbox_dummy_iou: float_param(params, "bbox_dummy_iou")?,
            featmap_strides,
            finest_scale: count_param(params, "finest_scale")?,
            sample_num: count_param(params, "sample_num")? as i32,
        };
        let (weights, prefix) = weights_param(params)?;
        Ok(TrackHeadNode {
            head: TrackHead::from_weights(&weights, &prefix, config)?,
            in_features,
            streams: StreamState::default(),
            workspace: RoiAlignWorkspace::new(),
        })
    }

    pub fn head(&self) -> &TrackHead {
        &self.head
    }

    /// The memory of `stream`, if it has seen a frame.
    pub fn memory(&self, stream: u32) -> Option<&Memory> {
        self.streams.get(stream)
    }

    /// One frame of `stream`: the instances with `track_ids`, and the association's scores.
    pub fn run(
        &mut self,
        stream: u32,
        features: &Value,
        instances: &Value,
    ) -> Result<(Value, Association), ModelError> {
        let det = Instances::from_value(instances).map_err(ModelError::Input)?;
        let embeddings = if det.is_empty() {
            Array2::zeros((0, self.head.config.fc_out_channels))
        } else {
            let levels = feature_levels(NODE, features, &self.in_features)?;
            let pooled = self
                .head
                .roi_features(&mut self.workspace, &levels, &det.boxes)?;
            self.head.embed(pooled)?
        };
        let memory = self.streams.get_or_insert_with(stream, Memory::default);
        let association = if det.is_empty() {
            // Nothing to associate; the memory stays as it is.
            Association::default()
        } else {
            associate(&self.head, memory, &embeddings, &det)
        };
        let ids = Tensor::from_vec(&[det.len()], association.ids.clone())?;
        let mut out = instances.clone();
        out.insert("track_ids", ids);
        Ok((out, association))
    }
}

impl Node for TrackHeadNode {
    fn process(&mut self, frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let (out, _) = self.run(
            frame.stream,
            inputs.value("features")?,
            inputs.value("instances")?,
        )?;
        Ok(Outputs::one("instances", out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bbox_overlaps_uses_inclusive_pixels() {
        let a = [[0.0, 0.0, 9.0, 9.0]];
        let b = [
            [0.0, 0.0, 9.0, 9.0],
            [5.0, 0.0, 14.0, 9.0],
            [10.0, 0.0, 19.0, 9.0],
        ];
        let iou = bbox_overlaps(&a, &b);
        assert_eq!(iou[[0, 0]], 1.0);
        // 5 of 10 columns shared: 50 / (100 + 100 - 50).
        assert_eq!(iou[[0, 1]], 50.0 / 150.0);
        // Adjacent boxes do not overlap.
        assert_eq!(iou[[0, 2]], 0.0);
        // A one-pixel box has area 1.
        let p = [[3.0, 3.0, 3.0, 3.0]];
        assert_eq!(bbox_overlaps(&p, &p)[[0, 0]], 1.0);
    }

    #[test]
    fn log_softmax_is_torchs() {
        let x = Array2::from_shape_vec((1, 3), vec![0.0f32, 1.0, 2.0]).unwrap();
        let y = log_softmax_rows(&x);
        let want = [-2.407_606, -1.407_606, -0.407_606];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
    }
}
