//! `panoptic_fusion`: Panoptic FPN's fusion of instances and semantic segmentation, as
//! Detectron2's `combine_semantic_and_instance_outputs` ([`kernels::ops::panoptic`]): instances
//! by score (above `instances_score_thresh`, dropped when more than `overlap_threshold` of the
//! mask is taken), then the stuff labels with at least `stuff_area_thresh` free pixels.
//!
//! Inputs: `instances` in original-image pixels with `masks` [N, H, W] (u8 or bool, nonzero
//! inside; from `paste_masks`), and `semantic` at the same size: `labels` [H, W] or `logits`
//! [C, H, W] (argmax, the first maximum). Semantic label 0 is the "things" class.
//!
//! Output `panoptic`: `segments` i32 [H, W] (0 VOID), and per segment `segment_ids` i32,
//! `segment_classes` i64 (an instance's class mapped through `thing_category_ids`, or the
//! stuff label mapped through `stuff_category_ids`, each when given), `segment_isthing` u8, `segment_scores` f32 (things) and
//! `segment_areas` i64.

use kernels::ops::panoptic::{combine_semantic_and_instance, FusionConfig};
use kernels::Tensor;
use plugin_sdk::{
    DType, FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Value,
};

use vision_common::ModelError;

const NODE: &str = "panoptic_fusion";

pub fn kind() -> NodeKind {
    let d = FusionConfig::default();
    let spec = NodeSpec::new(
        NODE,
        "Panoptic FPN fusion (Detectron2 combine_semantic_and_instance_outputs): instances by score, overlap check, then stuff regions above an area limit",
    )
    .input(PortSpec::new(
        "instances",
        PortKind::Instances,
        "instances in original pixels with masks u8 [N, H, W] (paste_masks)",
    ))
    .input(PortSpec::new(
        "semantic",
        PortKind::Semantic,
        "labels [H, W] or logits [C, H, W] at the instances' size; label 0 is the things class",
    ))
    .output(PortSpec::new(
        "panoptic",
        PortKind::Panoptic,
        "segments i32 [H, W] with segment_ids, segment_classes, segment_isthing, segment_scores, segment_areas",
    ))
    .param(
        ParamSpec::optional(
            "overlap_threshold",
            ParamType::Float,
            ParamValue::Float(d.overlap_threshold),
            "COMBINE.OVERLAP_THRESH: an instance more than this share taken by earlier ones is dropped",
        )
        .range(0.0, 1.0),
    )
    .param(
        ParamSpec::optional(
            "stuff_area_thresh",
            ParamType::Int,
            ParamValue::Int(d.stuff_area_thresh as i64),
            "COMBINE.STUFF_AREA_LIMIT: fewer free pixels of a stuff label are left VOID",
        )
        .range(0.0, 1e12),
    )
    .param(
        ParamSpec::optional(
            "instances_score_thresh",
            ParamType::Float,
            ParamValue::Float(d.instances_score_thresh),
            "COMBINE.INSTANCES_CONFIDENCE_THRESH",
        )
        .range(0.0, 1.0),
    )
    .param(ParamSpec::optional(
        "stuff_category_ids",
        ParamType::IntList,
        ParamValue::IntList(Vec::new()),
        "the category id of each semantic label (index = label); empty: the label itself",
    ))
    .param(ParamSpec::optional(
        "thing_category_ids",
        ParamType::IntList,
        ParamValue::IntList(Vec::new()),
        "the category id of each instance class (index = class, e.g. Detectron2's contiguous 0..79 to COCO's ids); empty: the class itself",
    ));
    NodeKind::new(spec, |params| {
        Ok(Box::new(PanopticFusion::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `panoptic_fusion` node.
#[derive(Clone, Debug)]
pub struct PanopticFusion {
    config: FusionConfig,
    stuff_ids: Vec<i64>,
    thing_ids: Vec<i64>,
}

/// Semantic labels `[H, W]` from a semantic value (labels, or the argmax of logits).
fn labels_of(semantic: &Value) -> Result<(Vec<i64>, (usize, usize)), ModelError> {
    if let Some(t) = semantic.get("labels") {
        let (h, w) = (t.shape()[0], t.shape()[1]);
        let v: Vec<i64> = match t.dtype() {
            DType::U8 => t.as_slice::<u8>()?.iter().map(|&v| i64::from(v)).collect(),
            DType::I32 => t.as_slice::<i32>()?.iter().map(|&v| i64::from(v)).collect(),
            _ => t.as_slice::<i64>()?.to_vec(),
        };
        return Ok((v, (h, w)));
    }
    let t = semantic.tensor("logits").map_err(ModelError::Input)?;
    let (c, h, w) = (t.shape()[0], t.shape()[1], t.shape()[2]);
    let x = t.as_slice::<f32>().map_err(|_| {
        ModelError::input(format!("{NODE}: logits must be f32, got {}", t.describe()))
    })?;
    let labels = crate::sem_seg_head::argmax_labels(x, c, h * w);
    Ok((labels, (h, w)))
}

impl PanopticFusion {
    pub fn from_params(params: &Params) -> Result<PanopticFusion, ModelError> {
        let area = params.int("stuff_area_thresh").map_err(ModelError::Input)?;
        Ok(PanopticFusion {
            config: FusionConfig {
                overlap_threshold: params
                    .float("overlap_threshold")
                    .map_err(ModelError::Input)?,
                stuff_area_thresh: u64::try_from(area).unwrap_or(0),
                instances_score_thresh: params
                    .float("instances_score_thresh")
                    .map_err(ModelError::Input)?,
            },
            stuff_ids: params
                .int_list("stuff_category_ids")
                .map_err(ModelError::Input)?,
            thing_ids: params
                .int_list("thing_category_ids")
                .map_err(ModelError::Input)?,
        })
    }

    /// The node's computation.
    pub fn run(&self, instances: &Value, semantic: &Value) -> Result<Value, ModelError> {
        instances.validate().map_err(ModelError::Input)?;
        semantic.validate().map_err(ModelError::Input)?;
        let (labels, (h, w)) = labels_of(semantic)?;
        let inst = plugin_sdk::Instances::from_value(instances).map_err(ModelError::Input)?;
        let n = inst.len();
        let masks: Vec<u8> = match instances.get("masks") {
            Some(m) => {
                if m.shape() != [n, h, w] {
                    return Err(ModelError::input(format!(
                        "{NODE}: masks are {} but the semantic labels are {h}x{w}; connect the masks of paste_masks (original pixels) and a semantic map of the same size",
                        m.describe()
                    )));
                }
                match m.dtype() {
                    DType::Bool => m.as_slice::<bool>()?.iter().map(|&b| u8::from(b)).collect(),
                    DType::U8 => m.as_slice::<u8>()?.to_vec(),
                    _ => {
                        return Err(ModelError::input(format!(
                        "{NODE}: masks must be u8 or bool (thresholded, from paste_masks), got {}",
                        m.describe()
                    )))
                    }
                }
            }
            None if n == 0 => Vec::new(),
            None => {
                return Err(ModelError::input(format!(
                    "{NODE}: the instances have no masks"
                )))
            }
        };
        let (seg, segments) = combine_semantic_and_instance(
            &masks,
            &inst.scores,
            &inst.classes,
            &labels,
            &self.config,
        )
        .map_err(|e| ModelError::input(format!("{NODE}: {e}")))?;
        let s = segments.len();
        let class = |c: i64, thing: bool| {
            let ids = if thing {
                &self.thing_ids
            } else {
                &self.stuff_ids
            };
            if ids.is_empty() {
                return Ok(c);
            }
            usize::try_from(c)
                .ok()
                .and_then(|i| ids.get(i).copied())
                .ok_or_else(|| {
                    let (what, param) = if thing {
                        ("instance class", "thing_category_ids")
                    } else {
                        ("semantic label", "stuff_category_ids")
                    };
                    ModelError::input(format!(
                        "{NODE}: {what} {c} has no entry in `{param}` ({} ids); give one id per class",
                        ids.len()
                    ))
                })
        };
        let classes = segments
            .iter()
            .map(|g| class(g.category, g.isthing))
            .collect::<Result<Vec<i64>, _>>()?;
        Ok(Value::new(PortKind::Panoptic)
            .with("segments", Tensor::from_vec(&[h, w], seg)?)
            .with(
                "segment_ids",
                Tensor::from_vec(&[s], segments.iter().map(|g| g.id).collect())?,
            )
            .with("segment_classes", Tensor::from_vec(&[s], classes)?)
            .with(
                "segment_isthing",
                Tensor::from_vec(&[s], segments.iter().map(|g| u8::from(g.isthing)).collect())?,
            )
            .with(
                "segment_scores",
                Tensor::from_vec(&[s], segments.iter().map(|g| g.score).collect())?,
            )
            .with(
                "segment_areas",
                Tensor::from_vec(&[s], segments.iter().map(|g| g.area as i64).collect())?,
            ))
    }
}

impl Node for PanopticFusion {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(inputs.value("instances")?, inputs.value("semantic")?)?;
        Ok(Outputs::one("panoptic", v))
    }
}
