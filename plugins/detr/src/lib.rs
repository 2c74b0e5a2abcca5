//! DETR as pipeline nodes, with the semantics and defaults of facebookresearch/detr @ 29901c51
//! (`models/detr.py`, `models/transformer.py`, `models/position_encoding.py`,
//! `datasets/transforms.py`), loading the official checkpoints (`detr-r50-e632da11.pth`) and
//! Hugging Face transformers' `DetrForObjectDetection` files under their own parameter names.
//! Built as a plugin library (`libplugin_detr.so`) that the engine finds on its plugin path;
//! the ResNet body is the `backbones` family's (FrozenBatchNorm, eps 1e-5).
//!
//! | kind | in | out | reference |
//! |---|---|---|---|
//! | `detr_preprocess` | `image` (u8 [H, W, 3]) | `image` (f32 [3, H', W'] + sizes) | `T.RandomResize([800], max_size=1333)`, `ToTensor`, `Normalize` |
//! | `resnet` (backbones) | `image` | `features` `c5` (`returned_layers = [4]`) | `Backbone` (`backbone.0.body`) |
//! | `detr` | `features`, `image` | `instances` (one per query) | `input_proj`, `PositionEmbeddingSine`, `Transformer`, `class_embed`, `bbox_embed`, `PostProcess` |
//!
//! Pipeline: `pipelines/detr_r50.toml`.

pub mod model;
pub mod preprocess;
pub mod transformer;

use plugin_sdk::NodeKind;

vision_common::family_library!(name: "detr", kinds: kinds);

/// The node kinds of this crate, in the order `engine plugins` lists them.
pub fn kinds() -> Vec<NodeKind> {
    vec![preprocess::kind(), model::kind()]
}

#[cfg(test)]
mod tests {
    #[test]
    fn kinds_are_documented_and_defaults_fit() {
        let kinds = super::kinds();
        let names: Vec<&str> = kinds.iter().map(|k| k.spec.kind.as_str()).collect();
        assert_eq!(names, ["detr_preprocess", "detr"]);
        assert_eq!(plugin_sdk::lint_kinds(&kinds), Vec::<String>::new());
    }
}
