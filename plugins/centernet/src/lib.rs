//! The heatmap detectors, CenterNet ("Objects as Points") and CornerNet, as pipeline nodes,
//! with the semantics and defaults of xingyizhou/CenterNet @ 4c50fd3a (`ctdet` and `multi_pose`: `src/lib/detectors/`,
//! `src/lib/models/decode.py`, `src/lib/utils/post_process.py`), loading the official
//! checkpoints (`ctdet_coco_resdcn18.pth`, `ctdet_coco_dla_2x.pth`, `ctdet_coco_hg.pth`,
//! `multi_pose_dla_3x.pth`) under their own parameter names. Built as a plugin library
//! (`libplugin_centernet.so`) that the engine finds on its plugin path; the trunks are the
//! `backbones` family's.
//!
//! | kind | in | out | reference |
//! |---|---|---|---|
//! | `centernet_preprocess` | `image` (u8 [H, W, 3]) | `image` (f32 [3, 512, 512] + sizes) | `BaseDetector.pre_process` (`cv2.warpAffine`, BGR mean and std) |
//! | `resnet` → `dcn_upsample`, `dla` or `hourglass` (backbones) | `image` | `features` `p2` | `PoseResNet` with `deconv_layers`, `DLASeg`'s body and up-sampling, `exkp` |
//! | `centernet_ctdet` | `features` (`p2`), `image` | `instances` (top K) | `hm`/`wh`/`reg`, `ctdet_decode`, `ctdet_post_process` |
//! | `centernet_multi_pose` | `features` (`p2`), `image` | `instances` with `keypoints` | `hm`/`wh`/`hps`/`reg`/`hm_hp`/`hp_offset`, `multi_pose_decode`, `multi_pose_post_process` |
//! | `cornernet_preprocess` | `image` | `image` (f32 [2, 3, H\|127, W\|127]: the photo and its mirror) | `kp_detection`'s `crop_image`, db/coco.py's mean and std |
//! | `hourglass` (backbones, `prefix = "module."`) | `image` | `features` `p2` (both views) | CornerNet's `kp` |
//! | `cornernet` | `features` (`p2`), `image` | `instances` | corner pooling, `{tl,br}_{heats,tags,regrs}`, `_decode`, mirror merge, `soft_nms` |
//!
//! Pipelines: `pipelines/centernet_resdcn18.toml`, `centernet_dla34.toml`,
//! `centernet_hg104.toml`, `centernet_multi_pose_dla34.toml`, `cornernet_hg104.toml`
//! (princeton-vl/CornerNet @ e5c39a31, `CornerNet_500000.pkl`'s names).

pub mod cornernet;
pub mod model;
pub mod multi_pose;
pub mod preprocess;

use plugin_sdk::NodeKind;

vision_common::family_library!(name: "centernet", kinds: kinds);

/// The node kinds of this crate, in the order `engine plugins` lists them.
pub fn kinds() -> Vec<NodeKind> {
    vec![
        preprocess::kind(),
        model::kind(),
        multi_pose::kind(),
        preprocess::cornernet_kind(),
        cornernet::kind(),
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
                "centernet_preprocess",
                "centernet_ctdet",
                "centernet_multi_pose",
                "cornernet_preprocess",
                "cornernet"
            ]
        );
        assert_eq!(plugin_sdk::lint_kinds(&kinds), Vec::<String>::new());
    }
}
