//! Mask R-CNN as pipeline nodes, with torchvision's semantics and defaults
//! (`torchvision.models.detection.maskrcnn_resnet50_fpn`), loading torchvision checkpoints
//! directly.
//!
//! | kind | in | out | torchvision |
//! |---|---|---|---|
//! | `rcnn_preprocess` | `image` (u8 [H, W, 3]) | `image` (tensor f32 [3, H', W'] + sizes) | `GeneralizedRCNNTransform` |
//! | `resnet` | `image` (tensor) | `features` `c2..c5` | `backbone.body` (ResNet + FrozenBatchNorm2d) |
//! | `fpn` | `features` `c2..c5` | `features` `p2..p6` | `backbone.fpn` (FPN + LastLevelMaxPool) |
//! | `rpn` | `features` `p2..p6`, `image` | `proposals` (instances) | `rpn` (RegionProposalNetwork) |
//! | `roi_box_head` | `features` `p2..p5`, `proposals`, `image` | `detections` (instances) | `roi_heads` box branch + `postprocess_detections` |
//! | `roi_mask_head` | `features` `p2..p5`, `detections`, `image` | `instances` + `masks` [N, 28, 28] | `roi_heads` mask branch + `maskrcnn_inference` |
//! | `paste_masks` | `instances`, `image` | `instances` in original pixels, `masks` u8 [N, H, W] | `transform.postprocess` |
//!
//! Level names: torchvision calls the body's outputs and the FPN's levels `"0".."3"` (and
//! `"pool"`); these nodes name them by pyramid level, `c2..c5` and `p2..p6` (stride
//! `2^level`), so that heads can find them by name. See [`resnet`] and [`fpn`] for the mapping.
//!
//! Weights are read with [`kernels::weights::Weights`] (`.pth` written by `torch.save`, or
//! `.safetensors`) under torchvision's parameter names; `prefix` selects the sub-module
//! (`backbone.body.`, `backbone.fpn.`). A missing, unexpected or mis-shaped tensor gives one
//! error that names the file and lists them all.

pub mod box_head;
pub mod error;
pub mod fpn;
pub mod mask_head;
pub mod paste;
pub mod preprocess;
pub mod resnet;
pub mod rpn;
mod util;

pub use error::RcnnError;
pub use fpn::{ExtraBlock, Fpn, FpnConfig};
pub use resnet::{ResNet, ResNetConfig};

use plugin_sdk::NodeKind;

/// The node kinds of this crate, in the order `engine plugins` lists them.
pub fn kinds() -> Vec<NodeKind> {
    vec![
        preprocess::kind(),
        resnet::kind(),
        fpn::kind(),
        rpn::kind(),
        box_head::kind(),
        mask_head::kind(),
        paste::kind(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_documented_and_defaults_fit() {
        let kinds = kinds();
        let names: Vec<&str> = kinds.iter().map(|k| k.spec.kind.as_str()).collect();
        assert_eq!(
            names,
            [
                "rcnn_preprocess",
                "resnet",
                "fpn",
                "rpn",
                "roi_box_head",
                "roi_mask_head",
                "paste_masks"
            ]
        );
        for k in &kinds {
            assert!(!k.spec.doc.is_empty());
            for p in k.spec.inputs.iter().chain(&k.spec.outputs) {
                assert!(!p.doc.is_empty(), "{}.{}", k.spec.kind, p.name);
            }
            for p in &k.spec.params {
                assert!(!p.doc.is_empty(), "{}.{}", k.spec.kind, p.name);
                if let Some(d) = &p.default {
                    assert!(
                        d.clone().coerce(p.ty).is_some(),
                        "{}.{}",
                        k.spec.kind,
                        p.name
                    );
                }
            }
        }
    }
}
