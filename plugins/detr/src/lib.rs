//! DETR and MaskFormer as pipeline nodes; DETR with the semantics and defaults of facebookresearch/detr @ 29901c51
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
//! | `maskformer_preprocess` | `image` (u8) | `image` (f32 + sizes) | Detectron2's `ResizeShortestEdge`, `PIXEL_MEAN`/`PIXEL_STD` |
//! | `resnet` (backbones, `stage_names = "detectron2"`) | `image` | `features` `c2..c5` | Detectron2's `ResNet` |
//! | `maskformer` | `features`, `image` | `semantic`, `panoptic` | MaskFormer's `TransformerEncoderPixelDecoder`, `TransformerPredictor`, `semantic_inference`, `panoptic_inference` |
//!
//! MaskFormer (facebookresearch/MaskFormer @ da3e60d8) shares DETR's transformer
//! ([`transformer`]). Pipelines: `pipelines/detr_r50.toml`, `pipelines/maskformer_r50.toml`.

pub mod maskformer;
pub mod model;
pub mod preprocess;
pub mod transformer;

use plugin_sdk::NodeKind;

vision_common::family_library!(name: "detr", kinds: kinds);

/// The node kinds of this crate, in the order `engine plugins` lists them.
pub fn kinds() -> Vec<NodeKind> {
    vec![
        preprocess::kind(),
        model::kind(),
        maskformer::preprocess_kind(),
        maskformer::kind(),
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
                "detr_preprocess",
                "detr",
                "maskformer_preprocess",
                "maskformer"
            ]
        );
        assert_eq!(plugin_sdk::lint_kinds(&kinds), Vec::<String>::new());
    }
}
