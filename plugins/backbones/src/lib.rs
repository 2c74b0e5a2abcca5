//! The `backbones` family: feature extractors that any head can take its features from, built
//! as a plugin library (`libplugin_backbones.so`) that the engine finds on its plugin path.
//!
//! | kind | in | out | reference |
//! |---|---|---|---|
//! | `resnet` | `image` (tensor f32 [3, H, W]) | `features` `c2..c5` | torchvision's ResNet body with FrozenBatchNorm2d |
//! | `fpn` | `features` `c2..c5` | `features` `p2..p6` | torchvision's `FeaturePyramidNetwork` + `LastLevelMaxPool` |
//! | `mobilenet_v1` | `image` (tensor f32 [3, H, W]) | `features` `c3..c5` | RetinaFace's MobileNet-0.25 (`models/net.py`) |
//! | `dcn_upsample` | `features` `c5` | `features` `p2` | CenterNet's `PoseResNet.deconv_layers` (DCNv2 and transposed convolutions) |
//! | `dla` | `image` (tensor f32 [3, H, W]) | `features` `p2` | CenterNet's DLA-34 with `DLAUp` and `IDAUp` (`pose_dla_dcn.py`) |
//! | `hourglass` | `image` (tensor f32 [3, H, W]) | `features` `p2` | CenterNet's stacked Hourglass-104 (`large_hourglass.py`), the last stack |
//!
//! Levels are named by pyramid level (`c2..c5`, `p2..p6`; stride `2^level`), so that heads
//! find them by name; [`resnet`] and [`fpn`] give the mapping to torchvision's names. Both load
//! torchvision checkpoints by parameter name under a `prefix` (`backbone.body.`,
//! `backbone.fpn.` of a detection model, or a plain classification ResNet).
//!
//! Families to come add their backbones here (DLA, Hourglass), each a module with
//! its node kind, listed in [`kinds`]. An up-sampling path that turns a body's last level into
//! one stride-4 level names it `p2` (`dcn_upsample`).

pub mod dcn_upsample;
pub mod dla;
pub mod fpn;
pub mod hourglass;
pub mod mobilenet_v1;
pub mod resnet;

pub use fpn::{ExtraBlock, Fpn, FpnConfig};
pub use mobilenet_v1::MobileNetV1;
pub use resnet::{ResNet, ResNetConfig};

use plugin_sdk::NodeKind;

vision_common::family_library!(name: "backbones", kinds: kinds);

/// The node kinds of this family, in the order `engine plugins` lists them.
pub fn kinds() -> Vec<NodeKind> {
    vec![
        resnet::kind(),
        fpn::kind(),
        mobilenet_v1::kind(),
        dcn_upsample::kind(),
        dla::kind(),
        hourglass::kind(),
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
                "resnet",
                "fpn",
                "mobilenet_v1",
                "dcn_upsample",
                "dla",
                "hourglass"
            ]
        );
        assert_eq!(plugin_sdk::lint_kinds(&kinds), Vec::<String>::new());
    }
}
