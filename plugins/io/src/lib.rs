//! Built-in I/O nodes of the vision pipeline engine.
//!
//! | kind               | role   | ports                                                   |
//! |--------------------|--------|---------------------------------------------------------|
//! | `image_source`     | source | out `image`                                             |
//! | `video_source`     | source | out `image` (H.264 MP4, Y4M, image sequences; a stream per video) |
//! | `synthetic_source` | source | out `image`, `instances`                                |
//! | `json_sink`        | sink   | in `instances`                                          |
//! | `image_sink`       | sink   | in `image`, `instances` (optional)                      |
//! | `panoptic_sink`    | sink   | in `panoptic` (COCO panoptic PNGs + annotations JSON)   |
//! | `video_sink`       | sink   | in `image`, `instances`, `panoptic` (optional): H.264 MP4 |
//! | `null_sink`        | sink   | in `in`                                                 |
//! | `identity`         | filter | in `in`, out `out` (same kind as the input)             |
//! | `concat_instances` | filter | in `first`, `second` (optional), out `instances`        |
//! | `merge_instances`  | filter | in `first`, `second`..`fourth` (optional), out `instances` |
//!
//! The engine registers [`kinds`] as a built-in plugin. It calls each kind's `create` with
//! every declared parameter present and of its declared type (paths as written: relative
//! paths are relative to the directory the engine runs in); the nodes check value ranges themselves and name the
//! parameter in their errors.
//!
//! Helpers that are useful on their own: [`image_source::decode_image`] (JPEG/PNG to RGB u8)
//! and [`rle`] (COCO compressed RLE, byte-identical to pycocotools), and [`pq`] (panoptic
//! quality, equal to panopticapi's `pq_compute`; `engine eval pq`).

pub mod atomic_file;
mod byte_lanes;
pub mod densepose;
pub mod font;
pub mod image_sink;
pub mod image_source;
pub mod instances_ops;
pub mod json_sink;
pub mod mot;
pub mod panoptic_sink;
mod png_rows;
pub mod pq;
pub mod rle;
pub mod synthetic;
pub mod util_nodes;
pub mod video;
pub mod vpq;

use plugin_sdk::NodeKind;

/// The node kinds of this crate, in the order `engine plugins` lists them.
pub fn kinds() -> Vec<NodeKind> {
    vec![
        image_source::kind(),
        video::source_kind(),
        synthetic::kind(),
        json_sink::kind(),
        image_sink::kind(),
        panoptic_sink::kind(),
        video::sink::kind(),
        util_nodes::null_sink_kind(),
        util_nodes::identity_kind(),
        instances_ops::concat_instances(),
        instances_ops::merge_instances(),
    ]
}

/// Formats a path for messages: `"assets/a.jpg"`.
pub(crate) fn quoted(path: &std::path::Path) -> String {
    format!("\"{}\"", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_documented_and_unique() {
        let kinds = kinds();
        let mut names: Vec<&str> = kinds.iter().map(|k| k.spec.kind.as_str()).collect();
        assert_eq!(
            names,
            [
                "image_source",
                "video_source",
                "synthetic_source",
                "json_sink",
                "image_sink",
                "panoptic_sink",
                "video_sink",
                "null_sink",
                "identity",
                "concat_instances",
                "merge_instances"
            ]
        );
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 11);
        for k in &kinds {
            assert!(!k.spec.doc.is_empty(), "{} has no doc", k.spec.kind);
            for p in k.spec.inputs.iter().chain(&k.spec.outputs) {
                assert!(!p.doc.is_empty(), "{}.{} has no doc", k.spec.kind, p.name);
            }
            for p in &k.spec.params {
                assert!(!p.doc.is_empty(), "{}.{} has no doc", k.spec.kind, p.name);
                if let Some(d) = &p.default {
                    assert!(
                        d.clone().coerce(p.ty).is_some(),
                        "{}.{} default does not fit its type",
                        k.spec.kind,
                        p.name
                    );
                }
            }
        }
    }
}
