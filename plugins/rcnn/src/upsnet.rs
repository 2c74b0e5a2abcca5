//! UPSNet's semantic head and its parameter-free panoptic head (uber-research/UPSNet @
//! aa8434e5, `upsnet/models/fcn.py`, `resnet_upsnet.py`, `operators/modules/{mask_removal,
//! unary_logits,mask_roi}.py`, `dataset/base_dataset.py`), on the Mask R-CNN family's trunk
//! and instances.
//!
//! `upsnet_fcn_head` (`FCNHead` with `FCNSubNet`, no norm, 3 layers): one subnet of three
//! deformable 3x3 convolutions with ReLU (256→256, 256→128, 128→128), each with its own
//! offset convolution on its input (`DeformConvWithOffset`, DCN v1:
//! [`kernels::layers::DeformConv2d`]), runs on each of p2..p5 with the same weights; p3, p4
//! and p5 are upsampled bilinearly (`align_corners=False`) by 2, 4 and 8, the four are
//! concatenated (512 channels), a 1x1 convolution scores the classes, and the scores are
//! upsampled 4x to the network input (`fcn_output`). Weights `fcn_subnet.conv.{i}.0.
//! conv_offset.*`, `fcn_subnet.conv.{i}.0.conv.*`, `score.*` under `fcn_head.`.
//!
//! `upsnet_panoptic_head` (the test branch of `resnet_upsnet.forward`, then the evaluation's
//! `get_unified_pan_result`), on instances in network-input pixels with `mask_logits`:
//! 1. `MaskROI`'s panoptic selection: scores `> score_thresh`, one class-agnostic NMS
//!    (Fast R-CNN's, `+1` areas), and at most `max_det` (those scoring at least the
//!    `max_det`-th score);
//! 2. `MaskRemoval`: by descending score, each box truncated to integers, its 28x28 logits
//!    resized bilinearly to the box and thresholded at `> 0`; an instance whose mask is empty,
//!    or more than `overlap_thresh` covered by the kept masks of its own class, is dropped;
//! 3. `SegTerm`: each kept instance's semantic logits of its class inside its box (`int(x1)`
//!    to `round(x2) + 1`, half to even), zero elsewhere; the panoptic logits are the stuff
//!    channels, each instance's semantic plus mask logits, and the unknown channel
//!    `max(thing logits) - max(instance logits)`; their argmax (the first maximum) labels each
//!    pixel: a stuff class, an instance, or void;
//! 4. the labels and the semantic argmax are cropped to the image and resized (nearest) to the
//!    photo; an instance region whose semantic majority is another class, a stuff class
//!    covering at least half of it, becomes that stuff class; stuff regions under
//!    `stuff_area_limit` pixels become void.
//!
//! Output `panoptic`: segments numbered 1.. in UPSNet's order (`1000·class + instance`),
//! with their class (the semantic channel, or `category_ids[channel]`), score and area.

use kernels::layers::resize::{interpolate_scale, resize};
use kernels::layers::{Activation, Conv2d, Conv2dParams, DeformConv2d, ResizeMode};
use kernels::ops::nms::nms_fast_rcnn;
use kernels::weights::Weights;
use kernels::Tensor;
use ndarray::{Array2, Array4, ArrayView2, ArrayView3, ArrayView4, Axis, Ix3};
use plugin_sdk::{
    FrameInfo, Inputs, Instances, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec,
    ParamType, ParamValue, Params, PortKind, PortSpec, Value,
};

use vision_common::{
    conv_bias, count_param, feature_levels, features_input, image_input, in_features_param,
    levels_params, resolve_prefix, weights_param, weights_params, ImageSizes, LayerContext,
    ModelError,
};

const FCN: &str = "upsnet_fcn_head";
const PANOPTIC: &str = "upsnet_panoptic_head";

/// Pixels of the panoptic labels that are void (UPSNet's 255).
const VOID: u32 = u32::MAX;

/// `DeformConvWithOffset` + ReLU.
#[derive(Debug)]
struct DeformLayer {
    offset: Conv2d,
    conv: DeformConv2d,
    name: String,
}

impl DeformLayer {
    fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>, ModelError> {
        let offset = self
            .offset
            .forward(x)
            .ctx(|| format!("{}.conv_offset", self.name))?;
        self.conv
            .forward(x, offset.view(), None)
            .ctx(|| format!("{}.conv", self.name))
    }
}

/// UPSNet's `FCNHead` with its weights bound.
#[derive(Debug)]
pub struct FcnHead {
    subnet: Vec<DeformLayer>,
    score: Conv2d,
    num_classes: usize,
}

impl FcnHead {
    pub fn from_weights(
        weights: &Weights,
        prefix: &str,
        channels: usize,
        num_classes: usize,
    ) -> Result<FcnHead, ModelError> {
        let prefix = resolve_prefix(weights, prefix, &["fcn_subnet.conv.0.0.conv_offset.weight"]);
        let mut b = weights.binder(&prefix);
        let p1 = Conv2dParams::default().padding(1);
        let mut subnet = Vec::new();
        // FCNSubNet(in, 128, 3): the layer before the last one changes the width.
        for (i, (cin, cout)) in [(channels, channels), (channels, 128), (128, 128)]
            .into_iter()
            .enumerate()
        {
            let name = format!("fcn_subnet.conv.{i}.0");
            let offset = conv_bias(&mut b, &format!("{name}.conv_offset"), cin, 18, 3, p1)?;
            let conv = conv_bias(&mut b, &format!("{name}.conv"), cin, cout, 3, p1)?
                .with_activation(Activation::Relu);
            subnet.push(DeformLayer {
                offset,
                conv: DeformConv2d::new(conv),
                name,
            });
        }
        let score = conv_bias(
            &mut b,
            "score",
            512,
            num_classes,
            1,
            Conv2dParams::default(),
        )?;
        b.finish()?;
        Ok(FcnHead {
            subnet,
            score,
            num_classes,
        })
    }

    /// `fcn_output` `[1, num_classes, 4·H2, 4·W2]` from p2..p5 (`[1, C, H, W]`, finest first).
    pub fn forward(&self, levels: &[ArrayView4<'_, f32>]) -> Result<Array4<f32>, ModelError> {
        let bilinear = ResizeMode::Bilinear {
            align_corners: false,
        };
        let mut maps = Vec::with_capacity(levels.len());
        for (l, level) in levels.iter().enumerate() {
            let mut x = self.subnet[0].forward(*level)?;
            for layer in &self.subnet[1..] {
                x = layer.forward(x.view())?;
            }
            if l > 0 {
                let s = f64::from(1u32 << l);
                x = interpolate_scale(x.view(), (s, s), bilinear, false)
                    .ctx(|| format!("{FCN}: upsampling level {l}"))?;
            }
            maps.push(x);
        }
        let (h, w) = (maps[0].dim().2, maps[0].dim().3);
        if let Some(bad) = maps.iter().find(|m| (m.dim().2, m.dim().3) != (h, w)) {
            return Err(ModelError::input(format!(
                "{FCN}: the upsampled levels are {}x{} and {h}x{w}; the image must be padded to a multiple of 32",
                bad.dim().2,
                bad.dim().3
            )));
        }
        let views: Vec<_> = maps.iter().map(|m| m.view()).collect();
        let feat = ndarray::concatenate(Axis(1), &views)
            .map_err(|e| ModelError::input(format!("{FCN}: {e}")))?;
        let score = self.score.forward(feat.view()).ctx(|| "score".into())?;
        interpolate_scale(score.view(), (4.0, 4.0), bilinear, false)
            .ctx(|| format!("{FCN}: fcn_output"))
    }
}

/// The index of the first maximum of `values(c)` over `0..n`.
fn first_argmax(n: usize, value: impl Fn(usize) -> f32) -> usize {
    let mut best = 0;
    let mut top = value(0);
    for c in 1..n {
        let v = value(c);
        if v > top {
            top = v;
            best = c;
        }
    }
    best
}

/// Per pixel of `[C, H·W]` logits, the first maximum over `channels`: its value and channel.
fn planes_argmax(fcn: &[f32], hw: usize, channels: std::ops::Range<usize>) -> (Vec<f32>, Vec<u32>) {
    let first = channels.start;
    let mut top = fcn[first * hw..(first + 1) * hw].to_vec();
    let mut idx = vec![first as u32; hw];
    for c in channels.skip(1) {
        for ((t, i), &v) in top.iter_mut().zip(&mut idx).zip(&fcn[c * hw..(c + 1) * hw]) {
            if v > *t {
                *t = v;
                *i = c as u32;
            }
        }
    }
    (top, idx)
}

/// `cv2.resize(..., INTER_NEAREST)` of a label map by the scale `from / to` per axis:
/// source index `min(floor(i · from / to), from - 1)`.
fn resize_nearest(labels: ArrayView2<'_, u32>, (oh, ow): (usize, usize)) -> Array2<u32> {
    let (h, w) = labels.dim();
    let src = |i: usize, from: usize, to: usize| {
        ((i as f64 * from as f64 / to as f64).floor() as usize).min(from - 1)
    };
    let cols: Vec<usize> = (0..ow).map(|x| src(x, w, ow)).collect();
    Array2::from_shape_fn((oh, ow), |(y, x)| labels[[src(y, h, oh), cols[x]]])
}

pub fn fcn_kind() -> NodeKind {
    let spec = NodeSpec::new(
        FCN,
        "UPSNet semantic head (FCNHead): three deformable 3x3 convs shared over p2..p5, upsampled and concatenated, 1x1 class scores, 4x upsampling",
    );
    let spec = features_input(spec, "the FPN levels p2..p5 (in_features)");
    let spec = image_input(
        spec,
        "the image from the preprocessing (image_size: the crop; original_size: the labels' size)",
    )
    .output(PortSpec::new(
        "semantic",
        PortKind::Semantic,
        "logits f32 [C, H, W] at the network input (fcn_output: channels 0..num_stuff-1 stuff, then the thing classes) and labels i64 [H, W] at the photo's size",
    ));
    let spec = weights_params(
        spec,
        "UPSNet's FCN head (UPSNet's names)",
        "fcn_head.",
        "name prefix of the head's tensors",
    );
    let spec = levels_params(
        spec,
        &["p2", "p3", "p4", "p5"],
        "FPN levels p2..p5, finest first",
        256,
    )
    .param(
        ParamSpec::optional(
            "num_classes",
            ParamType::Int,
            ParamValue::Int(133),
            "dataset.num_seg_classes (COCO: 53 stuff + 80 thing classes)",
        )
        .range(1.0, 65536.0),
    );
    NodeKind::new(spec, |params| {
        Ok(Box::new(FcnHeadNode::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `upsnet_fcn_head` node.
#[derive(Debug)]
pub struct FcnHeadNode {
    model: FcnHead,
    in_features: Vec<String>,
}

impl FcnHeadNode {
    pub fn from_params(params: &Params) -> Result<FcnHeadNode, ModelError> {
        let in_features = in_features_param(params)?;
        if in_features.len() != 4 {
            return Err(ModelError::param(
                "in_features",
                format!("UPSNet's head takes four levels (p2..p5), got {in_features:?}"),
            ));
        }
        let (weights, prefix) = weights_param(params)?;
        Ok(FcnHeadNode {
            model: FcnHead::from_weights(
                &weights,
                &prefix,
                count_param(params, "channels")?,
                count_param(params, "num_classes")?,
            )?,
            in_features,
        })
    }

    pub fn run(&self, features: &Value, image: &Value) -> Result<Value, ModelError> {
        let sizes = ImageSizes::from_value(FCN, image)?;
        let levels = feature_levels(FCN, features, &self.in_features)?;
        let out = self.model.forward(&levels)?;
        let (_, c, h, w) = out.dim();
        if (h, w) != sizes.padded {
            return Err(ModelError::input(format!(
                "{FCN}: the scores are {h}x{w} but the network input is {}x{}",
                sizes.padded.0, sizes.padded.1
            )));
        }
        let logits = out.index_axis(Axis(0), 0);
        let labels = Array2::from_shape_fn(sizes.resized, |(y, x)| {
            first_argmax(c, |k| logits[[k, y, x]]) as u32
        });
        let labels = resize_nearest(labels.view(), sizes.original);
        debug_assert_eq!(c, self.model.num_classes);
        Ok(Value::new(PortKind::Semantic)
            .with(
                "logits",
                Tensor::from_vec(&[c, h, w], out.into_raw_vec_and_offset().0)?,
            )
            .with(
                "labels",
                Tensor::from_vec(
                    &[sizes.original.0, sizes.original.1],
                    labels.iter().map(|&l| i64::from(l)).collect(),
                )?,
            ))
    }
}

impl Node for FcnHeadNode {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(inputs.value("features")?, inputs.value("image")?)?;
        Ok(Outputs::one("semantic", v))
    }
}

/// The settings of the panoptic head; the defaults are UPSNet's COCO configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct PanopticConfig {
    /// Semantic channels `0..num_stuff` are stuff (`num_seg_classes - num_classes + 1`).
    pub num_stuff: usize,
    pub score_thresh: f32,
    pub nms_thresh: f32,
    pub max_det: usize,
    /// `MaskRemoval(fraction_threshold)`.
    pub overlap_thresh: f64,
    pub stuff_area_limit: usize,
    /// The semantic channel of each instance class; empty: `num_stuff - 1 + class` (UPSNet's
    /// classes 1..80).
    pub thing_channels: Vec<i64>,
}

impl Default for PanopticConfig {
    fn default() -> Self {
        PanopticConfig {
            num_stuff: 53,
            score_thresh: 0.6,
            nms_thresh: 0.5,
            max_det: 100,
            overlap_thresh: 0.3,
            stuff_area_limit: 4096,
            thing_channels: Vec::new(),
        }
    }
}

/// One kept instance of `MaskRemoval`.
struct Kept {
    detection: usize,
    channel: usize,
    /// The resized logits over `rows x cols` of the input.
    logits: Array2<f32>,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
}

/// A kept instance: its detection index and semantic channel.
pub type KeptInstance = (usize, usize);

/// The panoptic labels of the network input (`0..num_stuff` stuff, `num_stuff + k` kept
/// instance `k`, [`VOID`]) and the kept instances, from the instances and `fcn_output`.
pub fn panoptic_labels(
    config: &PanopticConfig,
    inst: &Instances,
    mask_logits: ArrayView3<'_, f32>,
    fcn: ArrayView3<'_, f32>,
) -> Result<(Array2<u32>, Vec<KeptInstance>), ModelError> {
    let (c, h, w) = fcn.dim();
    let ns = config.num_stuff;
    if c <= ns {
        return Err(ModelError::input(format!(
            "{PANOPTIC}: the semantic logits have {c} channels, not more than num_stuff = {ns}"
        )));
    }
    let channel = |class: i64| -> Result<usize, ModelError> {
        let ch = if config.thing_channels.is_empty() {
            Some(ns as i64 - 1 + class).filter(|_| class >= 1)
        } else {
            usize::try_from(class)
                .ok()
                .and_then(|i| config.thing_channels.get(i).copied())
        };
        ch.and_then(|v| usize::try_from(v).ok())
            .filter(|&v| v >= ns && v < c)
            .ok_or_else(|| {
                ModelError::input(format!(
                    "{PANOPTIC}: instance class {class} has no thing channel among {ns}..{c}; set `thing_channels`"
                ))
            })
    };
    // 1. MaskROI's panoptic selection.
    let candidates: Vec<usize> = (0..inst.len())
        .filter(|&i| inst.scores[i] > config.score_thresh)
        .collect();
    let boxes: Vec<[f32; 4]> = candidates.iter().map(|&i| inst.boxes[i]).collect();
    let scores: Vec<f32> = candidates.iter().map(|&i| inst.scores[i]).collect();
    let mut keep: Vec<usize> = nms_fast_rcnn(&boxes, &scores, config.nms_thresh, usize::MAX)
        .into_iter()
        .map(|k| candidates[k])
        .collect();
    if keep.len() > config.max_det {
        let cut = inst.scores[keep[config.max_det - 1]];
        keep.retain(|&i| inst.scores[i] >= cut);
    }
    // 2. MaskRemoval, by descending score.
    keep.sort_by(|&a, &b| inst.scores[b].total_cmp(&inst.scores[a]).then(a.cmp(&b)));
    let mut taken: std::collections::HashMap<usize, Vec<bool>> = Default::default();
    let mut kept: Vec<Kept> = Vec::new();
    let bilinear = ResizeMode::Bilinear {
        align_corners: false,
    };
    for &i in &keep {
        let ch = channel(inst.classes[i])?;
        let b = inst.boxes[i];
        // astype(int32): truncation.
        let [x1, y1, x2, y2] = b.map(|v| v as i64);
        let bw = (x2 - x1 + 1).max(1) as usize;
        let bh = (y2 - y1 + 1).max(1) as usize;
        let m = mask_logits.index_axis(Axis(0), i);
        let m4 = m.insert_axis(Axis(0)).insert_axis(Axis(0));
        let resized = resize(m4, (bh, bw), bilinear).ctx(|| format!("{PANOPTIC}: mask {i}"))?;
        let resized = resized
            .index_axis(Axis(0), 0)
            .index_axis(Axis(0), 0)
            .to_owned();
        let clamp = |v: i64, hi: usize| v.clamp(0, hi as i64) as usize;
        let rows = clamp(y1, h)..clamp(y2 + 1, h);
        let cols = clamp(x1, w)..clamp(x2 + 1, w);
        let (oy, ox) = (
            (rows.start as i64 - y1) as usize,
            (cols.start as i64 - x1) as usize,
        );
        let crop = resized
            .slice(ndarray::s![oy..oy + rows.len(), ox..ox + cols.len()])
            .to_owned();
        let area = crop.iter().filter(|&&v| v > 0.0).count();
        if area == 0 {
            continue;
        }
        let union = taken.entry(ch).or_insert_with(|| vec![false; h * w]);
        let mut overlap = 0;
        for (r, y) in rows.clone().enumerate() {
            for (q, x) in cols.clone().enumerate() {
                overlap += usize::from(crop[[r, q]] > 0.0 && union[y * w + x]);
            }
        }
        if overlap as f64 / area as f64 > config.overlap_thresh {
            continue;
        }
        for (r, y) in rows.clone().enumerate() {
            for (q, x) in cols.clone().enumerate() {
                if crop[[r, q]] > 0.0 {
                    union[y * w + x] = true;
                }
            }
        }
        kept.push(Kept {
            detection: i,
            channel: ch,
            logits: crop,
            rows,
            cols,
        });
    }
    // 3. SegTerm, the unknown channel and the argmax, one pass per instance over its box.
    // An instance that does not cover a pixel has logit 0 there (SegTerm and the pasted mask
    // are zero outside their boxes), which competes at its index (the first maximum wins).
    let hw = h * w;
    let mut best = vec![f32::NEG_INFINITY; hw];
    let mut best_k = vec![u32::MAX; hw];
    let mut seg_max = vec![f32::NEG_INFINITY; hw];
    let mut seg_cover = vec![0u32; hw];
    // The first instance that does not cover the pixel (its zero competes).
    let mut first_zero = vec![0u32; hw];
    for (k, kp) in kept.iter().enumerate() {
        let b = inst.boxes[kp.detection];
        let start = |v: f32, hi: usize| (v as i64).clamp(0, hi as i64) as usize;
        let end = |v: f32, hi: usize| (v.round_ties_even() as i64 + 1).clamp(0, hi as i64) as usize;
        let (sy, sx) = (start(b[1], h)..end(b[3], h), start(b[0], w)..end(b[2], w));
        let sem = fcn.index_axis(Axis(0), kp.channel);
        let rows = sy.start.min(kp.rows.start)..sy.end.max(kp.rows.end);
        let cols = sx.start.min(kp.cols.start)..sx.end.max(kp.cols.end);
        for y in rows {
            for x in cols.clone() {
                let p = y * w + x;
                let in_seg = sy.contains(&y) && sx.contains(&x);
                let in_mask = kp.rows.contains(&y) && kp.cols.contains(&x);
                if !(in_seg || in_mask) {
                    continue;
                }
                let seg = if in_seg { sem[[y, x]] } else { 0.0 };
                if in_seg {
                    seg_max[p] = seg_max[p].max(seg);
                    seg_cover[p] += 1;
                }
                let mask = if in_mask {
                    kp.logits[[y - kp.rows.start, x - kp.cols.start]]
                } else {
                    0.0
                };
                let v = seg + mask;
                if v > best[p] {
                    best[p] = v;
                    best_k[p] = k as u32;
                }
                if first_zero[p] == k as u32 {
                    first_zero[p] = k as u32 + 1;
                }
            }
        }
    }
    let n = kept.len() as u32;
    let fcn = fcn.as_standard_layout();
    let flat = fcn.as_slice().unwrap_or(&[]);
    let (stuff_top, stuff_idx) = planes_argmax(flat, hw, 0..ns);
    let (thing_max, _) = planes_argmax(flat, hw, ns..c);
    let mut labels = Array2::<u32>::zeros((h, w));
    for (p, label) in labels.iter_mut().enumerate() {
        let mut top = stuff_top[p];
        let mut choice = stuff_idx[p];
        if n > 0 {
            // The covering instances' best, or the zero of the first one that does not cover.
            let (mut v, mut k) = (best[p], best_k[p]);
            if first_zero[p] < n && (0.0 > v || (0.0 == v && first_zero[p] < k)) {
                (v, k) = (0.0, first_zero[p]);
            }
            if v > top {
                top = v;
                choice = ns as u32 + k;
            }
        }
        let inst_max = if n == 0 {
            0.0
        } else if seg_cover[p] < n {
            seg_max[p].max(0.0)
        } else {
            seg_max[p]
        };
        if thing_max[p] - inst_max > top {
            choice = VOID;
        }
        *label = choice;
    }
    Ok((
        labels,
        kept.iter().map(|k| (k.detection, k.channel)).collect(),
    ))
}

/// One segment of the unified result.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    /// The semantic channel (UPSNet's contiguous class).
    pub class: usize,
    /// The detection it came from, for things.
    pub detection: Option<usize>,
    pub area: u64,
}

/// `get_unified_pan_result` at the photo's size: `labels` (panoptic) and `sseg` (semantic
/// argmax), both already at that size. Returns the segment map (0: void, `k + 1`: segment
/// `k`) and the segments in UPSNet's order (`1000·class + instance`, ascending).
pub fn unify(
    config: &PanopticConfig,
    labels: &Array2<u32>,
    sseg: &Array2<u32>,
    kept: &[KeptInstance],
) -> (Vec<i32>, Vec<Segment>) {
    let ns = config.num_stuff as u32;
    let len = labels.len();
    let labels = labels.as_standard_layout();
    let sseg = sseg.as_standard_layout();
    // (class, instance) per pixel; class u32::MAX is void.
    let mut seg: Vec<u32> = labels
        .iter()
        .map(|&l| if l >= ns { VOID } else { l })
        .collect();
    let mut ins = vec![0u32; len];
    // The pixels of each instance label (and void), in ascending label order.
    let mut regions: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for (p, &l) in labels.iter().enumerate() {
        if l >= ns {
            regions.entry(l).or_default().push(p);
        }
    }
    let ids: Vec<u32> = regions.keys().copied().collect();
    for (idx, (&id, region)) in regions.iter().enumerate() {
        if id == VOID {
            continue;
        }
        let own = kept[(id - ns) as usize].1 as u32;
        let classes = sseg.as_slice().unwrap_or(&[]);
        let mut counts: std::collections::BTreeMap<u32, usize> = Default::default();
        for &p in region {
            *counts.entry(classes[p]).or_default() += 1;
        }
        // np.unique + argmax: the smallest class among the most frequent.
        let (majority, count) =
            counts.iter().fold(
                (u32::MAX, 0),
                |(bc, bn), (&c, &n)| if n > bn { (c, n) } else { (bc, bn) },
            );
        let (class, instance) = if majority == own {
            (own, idx as u32 + 1)
        } else if count as f64 / region.len() as f64 >= 0.5 && majority < ns {
            (majority, 0)
        } else {
            (own, idx as u32 + 1)
        };
        for &p in region {
            seg[p] = class;
            ins[p] = instance;
        }
    }
    // Stuff under the area limit becomes void.
    let mut area: std::collections::HashMap<u32, usize> = Default::default();
    for &c in seg.iter().filter(|&&c| c < ns) {
        *area.entry(c).or_default() += 1;
    }
    for c in seg.iter_mut() {
        if *c < ns && area[c] < config.stuff_area_limit {
            *c = VOID;
        }
    }
    // Segments in ascending 1000·class + instance.
    let key = |p: usize| u64::from(seg[p]) * 1000 + u64::from(ins[p]);
    let mut keys: Vec<u64> = (0..len).filter(|&p| seg[p] != VOID).map(key).collect();
    keys.sort_unstable();
    keys.dedup();
    let index: std::collections::HashMap<u64, usize> =
        keys.iter().enumerate().map(|(i, &k)| (k, i)).collect();
    let mut segments: Vec<Segment> = keys
        .iter()
        .map(|&k| {
            let (class, instance) = ((k / 1000) as usize, (k % 1000) as usize);
            Segment {
                class,
                detection: (instance > 0)
                    .then(|| kept[ids[instance - 1] as usize - config.num_stuff].0),
                area: 0,
            }
        })
        .collect();
    let map = (0..len)
        .map(|p| {
            if seg[p] == VOID {
                0
            } else {
                let i = index[&key(p)];
                segments[i].area += 1;
                i as i32 + 1
            }
        })
        .collect();
    (map, segments)
}

pub fn panoptic_kind() -> NodeKind {
    let d = PanopticConfig::default();
    let spec = NodeSpec::new(
        PANOPTIC,
        "UPSNet panoptic head: panoptic detections, mask removal, stuff + instance (semantic + mask) logits + the unknown channel, argmax, and UPSNet's unified result",
    )
    .input(PortSpec::new(
        "instances",
        PortKind::Instances,
        "detections in network-input pixels with mask_logits f32 [N, M, M] (roi_mask_head with mask_logits = true)",
    ))
    .input(PortSpec::new(
        "semantic",
        PortKind::Semantic,
        "upsnet_fcn_head's output: logits [C, H, W] at the network input",
    ));
    let spec = image_input(spec, "the image from the preprocessing (image_size, original_size)")
        .output(PortSpec::new(
            "panoptic",
            PortKind::Panoptic,
            "segments i32 [H, W] at the photo's size with segment_ids, segment_classes, segment_isthing, segment_scores, segment_areas",
        ))
        .param(
            ParamSpec::optional(
                "num_stuff",
                ParamType::Int,
                ParamValue::Int(d.num_stuff as i64),
                "semantic channels 0..num_stuff are stuff (num_seg_classes - num_classes + 1: 53 for COCO)",
            )
            .range(1.0, 65536.0),
        )
        .param(
            ParamSpec::optional(
                "score_thresh",
                ParamType::Float,
                ParamValue::Float(f64::from(d.score_thresh)),
                "test.panoptic_score_thresh: detections kept when their score is above it",
            )
            .range(0.0, 1.0),
        )
        .param(
            ParamSpec::optional(
                "nms_thresh",
                ParamType::Float,
                ParamValue::Float(f64::from(d.nms_thresh)),
                "IoU of the class-agnostic NMS of the panoptic detections",
            )
            .range(0.0, 1.0),
        )
        .param(
            ParamSpec::optional(
                "max_det",
                ParamType::Int,
                ParamValue::Int(d.max_det as i64),
                "test.max_det",
            )
            .range(1.0, 65536.0),
        )
        .param(
            ParamSpec::optional(
                "overlap_thresh",
                ParamType::Float,
                ParamValue::Float(d.overlap_thresh),
                "MaskRemoval's fraction_threshold: a mask more than this covered by kept masks of its class is dropped",
            )
            .range(0.0, 1.0),
        )
        .param(
            ParamSpec::optional(
                "stuff_area_limit",
                ParamType::Int,
                ParamValue::Int(d.stuff_area_limit as i64),
                "test.panoptic_stuff_area_limit: smaller stuff regions become void",
            )
            .range(0.0, 1e12),
        )
        .param(ParamSpec::optional(
            "thing_channels",
            ParamType::IntList,
            ParamValue::IntList(Vec::new()),
            "the semantic channel of each instance class (index = class; e.g. Detectron2's contiguous 0..79 to 53..132); empty: num_stuff - 1 + class (UPSNet's classes 1..80)",
        ))
        .param(ParamSpec::optional(
            "category_ids",
            ParamType::IntList,
            ParamValue::IntList(Vec::new()),
            "the category id of each semantic channel (index = channel); empty: the channel",
        ));
    NodeKind::new(spec, |params| {
        Ok(Box::new(PanopticHeadNode::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `upsnet_panoptic_head` node.
#[derive(Clone, Debug)]
pub struct PanopticHeadNode {
    config: PanopticConfig,
    category_ids: Vec<i64>,
}

impl PanopticHeadNode {
    pub fn from_params(params: &Params) -> Result<PanopticHeadNode, ModelError> {
        let p = ModelError::Input;
        Ok(PanopticHeadNode {
            config: PanopticConfig {
                num_stuff: count_param(params, "num_stuff")?,
                score_thresh: params.float("score_thresh").map_err(p)? as f32,
                nms_thresh: params.float("nms_thresh").map_err(p)? as f32,
                max_det: count_param(params, "max_det")?,
                overlap_thresh: params.float("overlap_thresh").map_err(p)?,
                stuff_area_limit: count_param(params, "stuff_area_limit")?,
                thing_channels: params.int_list("thing_channels").map_err(p)?,
            },
            category_ids: params.int_list("category_ids").map_err(p)?,
        })
    }

    pub fn run(
        &self,
        instances: &Value,
        semantic: &Value,
        image: &Value,
    ) -> Result<Value, ModelError> {
        instances.validate().map_err(ModelError::Input)?;
        let sizes = ImageSizes::from_value(PANOPTIC, image)?;
        let inst = Instances::from_value(instances).map_err(ModelError::Input)?;
        let logits = semantic.tensor("logits").map_err(ModelError::Input)?;
        let fcn = logits
            .view::<f32>()
            .map_err(|_| {
                ModelError::input(format!(
                    "{PANOPTIC}: the semantic logits must be f32, got {}",
                    logits.describe()
                ))
            })?
            .into_dimensionality::<Ix3>()
            .map_err(|_| {
                ModelError::input(format!(
                    "{PANOPTIC}: the semantic logits must be [C, H, W], got {}",
                    logits.describe()
                ))
            })?;
        let (c, h, w) = fcn.dim();
        if (h, w) != sizes.padded {
            return Err(ModelError::input(format!(
                "{PANOPTIC}: the semantic logits are {h}x{w} but the network input is {}x{}; connect upsnet_fcn_head",
                sizes.padded.0, sizes.padded.1
            )));
        }
        let empty = Tensor::from_vec(&[0, 1, 1], Vec::<f32>::new())?;
        let masks = match instances.get("mask_logits") {
            Some(m) => m,
            None if inst.is_empty() => &empty,
            None => {
                return Err(ModelError::input(format!(
                    "{PANOPTIC}: the instances have no mask_logits; set mask_logits = true on roi_mask_head"
                )))
            }
        };
        let masks = masks
            .view::<f32>()?
            .into_dimensionality::<Ix3>()
            .map_err(|_| {
                ModelError::input(format!(
                    "{PANOPTIC}: mask_logits must be [N, M, M], got {}",
                    masks.describe()
                ))
            })?;
        if masks.dim().0 != inst.len() {
            return Err(ModelError::input(format!(
                "{PANOPTIC}: {} mask_logits for {} instances",
                masks.dim().0,
                inst.len()
            )));
        }
        let (labels, kept) = panoptic_labels(&self.config, &inst, masks, fcn)?;
        // The semantic argmax, then both cropped to the image and resized to the photo.
        let fcn_std = fcn.as_standard_layout();
        let (_, sseg) = planes_argmax(fcn_std.as_slice().unwrap_or(&[]), h * w, 0..c);
        let sseg =
            Array2::from_shape_vec((h, w), sseg).map_err(|e| ModelError::input(e.to_string()))?;
        let (rh, rw) = sizes.resized;
        let crop =
            |a: &Array2<u32>| resize_nearest(a.slice(ndarray::s![..rh, ..rw]), sizes.original);
        let (map, segments) = unify(&self.config, &crop(&labels), &crop(&sseg), &kept);
        let n = segments.len();
        let class_id = |ch: usize| -> Result<i64, ModelError> {
            if self.category_ids.is_empty() {
                return Ok(ch as i64);
            }
            self.category_ids.get(ch).copied().ok_or_else(|| {
                ModelError::input(format!(
                    "{PANOPTIC}: semantic channel {ch} has no entry in `category_ids` ({} ids)",
                    self.category_ids.len()
                ))
            })
        };
        let classes = segments
            .iter()
            .map(|s| class_id(s.class))
            .collect::<Result<Vec<_>, _>>()?;
        let (oh, ow) = sizes.original;
        Ok(Value::new(PortKind::Panoptic)
            .with("segments", Tensor::from_vec(&[oh, ow], map)?)
            .with(
                "segment_ids",
                Tensor::from_vec(&[n], (1..=n as i32).collect())?,
            )
            .with("segment_classes", Tensor::from_vec(&[n], classes)?)
            .with(
                "segment_isthing",
                Tensor::from_vec(
                    &[n],
                    segments
                        .iter()
                        .map(|s| u8::from(s.detection.is_some()))
                        .collect(),
                )?,
            )
            .with(
                "segment_scores",
                Tensor::from_vec(
                    &[n],
                    segments
                        .iter()
                        .map(|s| s.detection.map_or(0.0, |d| inst.scores[d]))
                        .collect(),
                )?,
            )
            .with(
                "segment_areas",
                Tensor::from_vec(&[n], segments.iter().map(|s| s.area as i64).collect())?,
            ))
    }
}

impl Node for PanopticHeadNode {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(
            inputs.value("instances")?,
            inputs.value("semantic")?,
            inputs.value("image")?,
        )?;
        Ok(Outputs::one("panoptic", v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_resize_is_cv2s() {
        let a = Array2::from_shape_fn((2, 3), |(y, x)| (y * 3 + x) as u32);
        let r = resize_nearest(a.view(), (4, 5));
        // Rows floor(y · 2/4), columns floor(x · 3/5).
        assert_eq!(r.row(0).to_vec(), [0, 0, 1, 1, 2]);
        assert_eq!(r.row(3).to_vec(), [3, 3, 4, 4, 5]);
    }

    #[test]
    fn stuff_under_the_limit_and_relabelled_instances() {
        let config = PanopticConfig {
            num_stuff: 2,
            stuff_area_limit: 3,
            ..Default::default()
        };
        // Instance 2 (label 2) lies on stuff 1 (majority 3 of 4): relabelled to stuff 1.
        // Instance 3 lies on its own class: kept. Stuff 0 has 2 pixels: void.
        let labels = Array2::from_shape_vec((2, 4), vec![0, 0, 2, 2, 3, 3, 2, 2]).unwrap();
        let sseg = Array2::from_shape_vec((2, 4), vec![0, 0, 1, 1, 4, 4, 1, 4]).unwrap();
        let kept = [(7, 3), (9, 4)];
        let (map, segs) = unify(&config, &labels, &sseg, &kept);
        assert_eq!(map, [0, 0, 1, 1, 2, 2, 1, 1]);
        assert_eq!(
            segs,
            vec![
                Segment {
                    class: 1,
                    detection: None,
                    area: 4
                },
                Segment {
                    class: 4,
                    detection: Some(9),
                    area: 2
                },
            ]
        );
    }
}
