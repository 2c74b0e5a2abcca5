//! Mask R-CNN and Keypoint R-CNN as pipeline nodes, with torchvision's semantics and defaults
//! (`torchvision.models.detection.maskrcnn_resnet50_fpn`, `keypointrcnn_resnet50_fpn`), loading torchvision checkpoints
//! directly, and DensePose's chart head (Detectron2's DensePose project) on the same trunk. Built as a plugin library (`libplugin_rcnn.so`) that the engine finds on its
//! plugin path; the backbone (`resnet`, `fpn`) is the `backbones` family's.
//!
//! | kind | in | out | torchvision |
//! |---|---|---|---|
//! | `rcnn_preprocess` | `image` (u8 [H, W, 3]) | `image` (tensor f32 [3, H', W'] + sizes) | `GeneralizedRCNNTransform` |
//! | `resnet` (backbones) | `image` (tensor) | `features` `c2..c5` | `backbone.body` (ResNet + FrozenBatchNorm2d) |
//! | `fpn` (backbones) | `features` `c2..c5` | `features` `p2..p6` | `backbone.fpn` (FPN + LastLevelMaxPool) |
//! | `detectron2_preprocess` | `image` (u8 [H, W, 3]) | `image` (as above) | Detectron2's `ResizeShortestEdge` (Pillow) + `GeneralizedRCNN.preprocess_image` |
//! | `rpn` | `features` `p2..p6`, `image` | `proposals` (instances) | `rpn` (RegionProposalNetwork) |
//! | `roi_box_head` | `features` `p2..p5`, `proposals`, `image` | `detections` (instances) | `roi_heads` box branch + `postprocess_detections` |
//! | `roi_mask_head` | `features` `p2..p5`, `detections`, `image` | `instances` + `masks` [N, 28, 28] | `roi_heads` mask branch + `maskrcnn_inference` |
//! | `roi_keypoint_head` | `features` `p2..p5`, `detections`, `image` | `instances` + `keypoints` [N, 17, 3], `keypoints_scores` [N, 17] | `roi_heads` keypoint branch + `keypointrcnn_inference` |
//! | `roi_densepose_head` | `features` `p2..p5`, `detections`, `image` | `instances` + `densepose_boxes`, `densepose_labels`, `densepose_uv` (box-local) | DensePose `DensePoseROIHeads` (decoder, `DensePoseV1ConvXHead`, chart predictor) + `densepose_chart_predictor_output_to_result` |
//! | `sem_seg_fpn_head` | `features` `p2..p5`, `image` | `semantic` (logits, labels at the photo's size) | Panoptic FPN's `SemSegFPNHead` + `sem_seg_postprocess` (Detectron2) |
//! | `panoptic_fusion` | `instances` (original pixels, masks), `semantic` | `panoptic` | Panoptic FPN's `combine_semantic_and_instance_outputs` (Detectron2) |
//! | `upsnet_fcn_head` | `features` `p2..p5`, `image` | `semantic` (logits at the network input, labels at the photo's size) | UPSNet's `FCNHead` (deformable convolutions) |
//! | `upsnet_panoptic_head` | `instances` (with `mask_logits`), `semantic`, `image` | `panoptic` | UPSNet's panoptic head with the unknown class, and its unified result |
//! | `paste_masks` | `instances`, `image` | `instances` in original pixels, `masks` u8 [N, H, W] | `transform.postprocess` |
//!
//! Level names: torchvision calls the body's outputs and the FPN's levels `"0".."3"` (and
//! `"pool"`); these nodes name them by pyramid level, `c2..c5` and `p2..p6` (stride
//! `2^level`), so that heads can find them by name (the backbones family documents the mapping).
//!
//! `rpn`, `roi_box_head`, `roi_mask_head` and `paste_masks` follow Detectron2 instead with
//! `convention = "detectron2"` ([`Convention`]): its names, anchors, RoIAlign, box filters and
//! mask pasting, for Panoptic FPN and the Detectron2 model zoo's R-CNNs.
//!
//! Weights are read with [`kernels::weights::Weights`] (`.pth` written by `torch.save`, or
//! `.safetensors`) under torchvision's parameter names; `prefix` selects the sub-module
//! (`backbone.body.`, `backbone.fpn.`). A missing, unexpected or mis-shaped tensor gives one
//! error that names the file and lists them all.

pub mod box_head;
pub mod densepose_head;
pub mod detectron2_preprocess;
pub mod keypoint_head;
pub mod mask_head;
pub mod panoptic_fusion;
pub mod paste;
pub mod preprocess;
pub mod rpn;
pub mod sem_seg_head;
pub mod semantic_fpn;
pub mod upsnet;

use plugin_sdk::{NodeKind, NodeSpec, ParamSpec, ParamType, ParamValue, Params};
use vision_common::ModelError;

/// Whose checkpoint names, inference details and defaults a node follows. The two frameworks
/// build the same R-CNN networks but differ in names (`box_head.fc6` / `box_head.fc1`), the
/// background column (first / last), anchors (rounded / not), RoIAlign (`aligned`), box
/// filters and mask pasting; each node's documentation lists its differences.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Convention {
    #[default]
    Torchvision,
    /// Detectron2 @ 02b5c4e2 (`MODEL.*` defaults of `Base-RCNN-FPN.yaml`).
    Detectron2,
}

impl Convention {
    /// The `convention` parameter of a node.
    pub fn param(spec: NodeSpec) -> NodeSpec {
        spec.param(ParamSpec::optional(
            "convention",
            ParamType::Str,
            ParamValue::Str("torchvision".into()),
            "\"torchvision\" or \"detectron2\": whose checkpoint names, inference details and defaults the node follows",
        ))
    }

    pub fn from_params(params: &Params) -> Result<Convention, ModelError> {
        match params.str("convention").map_err(ModelError::Input)? {
            "torchvision" => Ok(Convention::Torchvision),
            "detectron2" => Ok(Convention::Detectron2),
            other => Err(ModelError::param(
                "convention",
                format!("must be \"torchvision\" or \"detectron2\", got \"{other}\""),
            )),
        }
    }

    /// An integer parameter whose default depends on the convention: `-1` (the spec's
    /// default) takes `torchvision`'s or `detectron2`'s value.
    fn int_or(
        self,
        params: &Params,
        name: &'static str,
        torchvision: i64,
        detectron2: i64,
    ) -> Result<i64, ModelError> {
        let v = params.int(name).map_err(ModelError::Input)?;
        Ok(match (v, self) {
            (-1, Convention::Torchvision) => torchvision,
            (-1, Convention::Detectron2) => detectron2,
            _ => v,
        })
    }
}

/// The sub-modules of `roi_heads` in torchvision's and Detectron2's R-CNN checkpoints (a
/// DensePose model has a box head and the DensePose modules under the same prefix).
const ROI_HEAD_MODULES: [&str; 9] = [
    "box_head.",
    "box_predictor.",
    "mask_head.",
    "mask_predictor.",
    "keypoint_head.",
    "keypoint_predictor.",
    "decoder.",
    "densepose_head.",
    "densepose_predictor.",
];

/// Lets a head bind only its own sub-modules of `roi_heads`: the other heads' tensors in the
/// same checkpoint are not reported as unexpected.
fn ignore_other_heads(b: &mut kernels::weights::Binder<'_>, own: &[&str]) {
    for module in ROI_HEAD_MODULES.iter().filter(|m| !own.contains(m)) {
        b.ignore_module(module);
    }
}

vision_common::family_library!(name: "rcnn", kinds: kinds);

/// The node kinds of this crate, in the order `engine plugins` lists them.
pub fn kinds() -> Vec<NodeKind> {
    vec![
        preprocess::kind(),
        detectron2_preprocess::kind(),
        rpn::kind(),
        box_head::kind(),
        mask_head::kind(),
        keypoint_head::kind(),
        densepose_head::kind(),
        paste::kind(),
        sem_seg_head::kind(),
        panoptic_fusion::kind(),
        upsnet::fcn_kind(),
        upsnet::panoptic_kind(),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn kinds_are_documented_and_defaults_fit() {
        let kinds = super::kinds();
        let names: Vec<&str> = kinds.iter().map(|k| k.spec.kind.as_str()).collect();
        assert_eq!(
            names,
            [
                "rcnn_preprocess",
                "detectron2_preprocess",
                "rpn",
                "roi_box_head",
                "roi_mask_head",
                "roi_keypoint_head",
                "roi_densepose_head",
                "paste_masks",
                "sem_seg_fpn_head",
                "panoptic_fusion",
                "upsnet_fcn_head",
                "upsnet_panoptic_head"
            ]
        );
        assert_eq!(plugin_sdk::lint_kinds(&kinds), Vec::<String>::new());
    }
}
