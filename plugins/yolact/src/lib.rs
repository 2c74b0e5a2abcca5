//! YOLACT as pipeline nodes, with the semantics and defaults of dbolya/yolact @ 902073d4
//! (`yolact.py`, `layers/functions/detection.py`, `layers/output_utils.py`,
//! `utils/augmentations.py`, `data/config.py`), loading that repository's released checkpoints
//! (`yolact_resnet50_54_800000.pth`, `yolact_base_54_800000.pth`) under its parameter names.
//! Built as a plugin library (`libplugin_yolact.so`) that the engine finds on its plugin path;
//! the ResNet body is the `backbones` family's (`stage_names = "yolact"`).
//!
//! | kind | in | out | reference |
//! |---|---|---|---|
//! | `yolact_preprocess` | `image` (u8 [H, W, 3]) | `image` (f32 [3, 550, 550] + sizes) | `FastBaseTransform` |
//! | `resnet` (backbones) | `image` | `features` `c3..c5` (`returned_layers = [2, 3, 4]`) | `ResNetBackbone` |
//! | `yolact` | `features`, `image` | `instances` with masks u8 [N, H, W] | `FPN`, protonet, `PredictionModule`, priors, `Detect` (FastNMS), `postprocess` |
//! | `yolact_edge` | `features` (C3..C5 on keyframes, C3 between them), `image` | `instances` | YolactEdge (haotian-liu/yolact_edge @ 873fceb3): keyframe features per stream, FeatFlowNet warping, SPA, `traditional_nms` |
//!
//! Pipelines: `pipelines/yolact_r50.toml`, `pipelines/yolact_r101.toml`,
//! `pipelines/yolact_edge_r50.toml`.

pub mod edge;
pub mod head;
pub mod preprocess;

use plugin_sdk::NodeKind;

vision_common::family_library!(name: "yolact", kinds: kinds);

/// The node kinds of this crate, in the order `engine plugins` lists them.
pub fn kinds() -> Vec<NodeKind> {
    vec![preprocess::kind(), head::kind(), edge::kind()]
}

#[cfg(test)]
mod tests {
    #[test]
    fn kinds_are_documented_and_defaults_fit() {
        let kinds = super::kinds();
        let names: Vec<&str> = kinds.iter().map(|k| k.spec.kind.as_str()).collect();
        assert_eq!(names, ["yolact_preprocess", "yolact", "yolact_edge"]);
        assert_eq!(plugin_sdk::lint_kinds(&kinds), Vec::<String>::new());
    }
}
