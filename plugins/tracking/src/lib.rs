//! Tracking as pipeline nodes: identities that persist across the frames of a stream.
//!
//! | kind | in | out | reference |
//! |---|---|---|---|
//! | `bytetrack` | `instances` | `instances` with `track_ids` | ifzhang/ByteTrack `BYTETracker` |
//! | `vpsnet_track_head` | `features` `p2..p5`, `instances` | `instances` with `track_ids` | mcahny/vps `TrackHead` + `simple_test_bboxes` |
//! | `flownet2` | `image` (the previous one kept per stream) | `flow` | mcahny/vps `compute_flow` (FlowNet2) |
//! | `vpsnet_fusion` | `features` `p2..p6`, `flow` | `features` | mcahny/vps `BFPTcea` (warping, LiteFlowNet refinement, TCEA) |

pub mod bytetrack;
pub mod flownet2;
pub mod track_node;
pub mod vpsnet;
pub mod vpsnet_fusion;

use plugin_sdk::NodeKind;

vision_common::family_library!(name: "tracking", kinds: kinds);

/// The node kinds of this crate, in the order `engine plugins` lists them.
pub fn kinds() -> Vec<NodeKind> {
    vec![
        track_node::kind(),
        vpsnet::track_head_kind(),
        flownet2::kind(),
        vpsnet_fusion::kind(),
    ]
}
