//! Tracking as pipeline nodes: identities that persist across the frames of a stream.
//!
//! | kind | in | out | reference |
//! |---|---|---|---|
//! | `bytetrack` | `instances` | `instances` with `track_ids` | ifzhang/ByteTrack `BYTETracker` |
//! | `vpsnet_track_head` | `features` `p2..p5`, `instances` | `instances` with `track_ids` | mcahny/vps `TrackHead` + `simple_test_bboxes` |

pub mod bytetrack;
pub mod track_node;
pub mod vpsnet;

use plugin_sdk::NodeKind;

vision_common::family_library!(name: "tracking", kinds: kinds);

/// The node kinds of this crate, in the order `engine plugins` lists them.
pub fn kinds() -> Vec<NodeKind> {
    vec![track_node::kind(), vpsnet::track_head_kind()]
}
