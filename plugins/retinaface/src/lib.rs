//! RetinaFace as pipeline nodes, with the semantics and defaults of biubug6/Pytorch_Retinaface
//! (`detect.py`, `models/retinaface.py`) and loading that repository's released checkpoints
//! (`mobilenet0.25_Final.pth`, `Resnet50_Final.pth`, `module.` prefix included). Built as a
//! plugin library (`libplugin_retinaface.so`) that the engine finds on its plugin path; the
//! bodies are the `backbones` family's.
//!
//! | kind | in | out | reference |
//! |---|---|---|---|
//! | `retinaface_preprocess` | `image` (u8 [H, W, 3]) | `image` (f32 [3, H, W] BGR minus mean + sizes) | `detect.py`'s input |
//! | `mobilenet_v1` (backbones) | `image` | `features` `c3..c5` | `MobileNetV1` (`cfg_mnet`) |
//! | `resnet` (backbones) | `image` | `features` `c3..c5` (`returned_layers = [2, 3, 4]`) | torchvision `resnet50` (`cfg_re50`) |
//! | `retinaface` | `features`, `image` | `instances` with `landmarks` [N, 5, 2] | `FPN`, `SSH`, heads, `PriorBox`, `decode`, `py_cpu_nms` |
//!
//! Pipelines: `pipelines/retinaface_mnet.toml`, `pipelines/retinaface_r50.toml`.

pub mod head;
pub mod preprocess;

use plugin_sdk::NodeKind;

vision_common::family_library!(name: "retinaface", kinds: kinds);

/// The node kinds of this crate, in the order `engine plugins` lists them.
pub fn kinds() -> Vec<NodeKind> {
    vec![preprocess::kind(), head::kind()]
}

#[cfg(test)]
mod tests {
    #[test]
    fn kinds_are_documented_and_defaults_fit() {
        let kinds = super::kinds();
        let names: Vec<&str> = kinds.iter().map(|k| k.spec.kind.as_str()).collect();
        assert_eq!(names, ["retinaface_preprocess", "retinaface"]);
        assert_eq!(plugin_sdk::lint_kinds(&kinds), Vec::<String>::new());
    }
}
