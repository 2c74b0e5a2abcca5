//! The `bytetrack` node: ByteTrack's identities for the instances of any detector, one
//! tracker per stream.

use plugin_sdk::{
    FrameInfo, Inputs, Instances, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec,
    ParamType, ParamValue, Params, PortKind, PortSpec, StreamState, Tensor,
};

use crate::bytetrack::{ByteTrackConfig, ByteTracker, Detection};

const NODE: &str = "bytetrack";

pub fn kind() -> NodeKind {
    let defaults = ByteTrackConfig::default();
    let spec = NodeSpec::new(
        NODE,
        "ByteTrack (ifzhang/ByteTrack's BYTETracker): a Kalman filter per track and two association stages by score (high-score detections first, then low-score ones to keep tracks through occlusion); outputs the tracked instances with track_ids, one tracker per stream",
    )
    .input(PortSpec::new(
        "instances",
        PortKind::Instances,
        "a frame's detections (boxes in pixels, scores, classes; masks, keypoints ... are carried to their track)",
    ))
    .output(PortSpec::new(
        "instances",
        PortKind::Instances,
        "the confirmed tracks updated on this frame: the Kalman-filtered box, the detection's score, class and other fields, and track_ids (from 1 in each stream)",
    ))
    .param(
        ParamSpec::optional(
            "track_thresh",
            ParamType::Float,
            ParamValue::Float(f64::from(defaults.track_thresh)),
            "detections above this score are matched first and may start tracks (at this + 0.1); those between 0.1 and this only continue tracks",
        )
        .range(0.0, 1.0),
    )
    .param(
        ParamSpec::optional(
            "track_buffer",
            ParamType::Int,
            ParamValue::Int(i64::from(defaults.track_buffer)),
            "frames (at 30 fps) a lost track is kept for re-identification",
        )
        .range(0.0, 1e6),
    )
    .param(
        ParamSpec::optional(
            "match_thresh",
            ParamType::Float,
            ParamValue::Float(f64::from(defaults.match_thresh)),
            "the first association's largest cost (1 - IoU, fused with the score unless mot20)",
        )
        .range(0.0, 1.0),
    )
    .param(ParamSpec::optional(
        "mot20",
        ParamType::Bool,
        ParamValue::Bool(defaults.mot20),
        "MOT20 mode: associate by IoU alone, without the detection score",
    ))
    .param(
        ParamSpec::optional(
            "frame_rate",
            ParamType::Float,
            ParamValue::Float(f64::from(defaults.frame_rate)),
            "the stream's frame rate: lost tracks live frame_rate / 30 x track_buffer frames",
        )
        .range(1e-3, 1e4),
    )
    .param(ParamSpec::optional(
        "classes",
        ParamType::IntList,
        ParamValue::IntList(Vec::new()),
        "track only detections of these class ids (empty: all; ByteTrack itself ignores classes)",
    ))
    .param(
        ParamSpec::optional(
            "min_box_area",
            ParamType::Float,
            ParamValue::Float(0.0),
            "drop tracks whose box is this small or smaller, in square pixels (the official demo's output filter uses 10)",
        )
        .range(0.0, 1e12),
    )
    .param(
        ParamSpec::optional(
            "max_aspect_ratio",
            ParamType::Float,
            ParamValue::Float(0.0),
            "drop tracks wider than tall by more than this ratio (0: keep all; the demo uses 1.6 for people)",
        )
        .range(0.0, 1e6),
    );
    NodeKind::new(spec, |params| {
        Ok(Box::new(ByteTrackNode::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `bytetrack` node.
pub struct ByteTrackNode {
    config: ByteTrackConfig,
    classes: Vec<i64>,
    min_box_area: f32,
    max_aspect_ratio: f32,
    trackers: StreamState<ByteTracker>,
}

fn bad(name: &str, why: &str) -> NodeError {
    NodeError::new(format!("{NODE}: parameter \"{name}\" {why}"))
}

impl ByteTrackNode {
    pub fn from_params(params: &Params) -> Result<ByteTrackNode, NodeError> {
        let finite = |name: &str| -> Result<f32, NodeError> {
            let v = params.float(name)?;
            if v.is_finite() && v >= 0.0 {
                Ok(v as f32)
            } else {
                Err(bad(name, &format!("must be a number >= 0, got {v}")))
            }
        };
        let config = ByteTrackConfig {
            track_thresh: finite("track_thresh")?,
            track_buffer: u32::try_from(params.int("track_buffer")?)
                .map_err(|_| bad("track_buffer", "must be 0 or more"))?,
            match_thresh: finite("match_thresh")?,
            mot20: params.bool("mot20")?,
            frame_rate: finite("frame_rate")?,
        };
        if config.frame_rate <= 0.0 {
            return Err(bad("frame_rate", "must be positive"));
        }
        Ok(ByteTrackNode {
            config,
            classes: params.int_list("classes")?,
            min_box_area: finite("min_box_area")?,
            max_aspect_ratio: finite("max_aspect_ratio")?,
            trackers: StreamState::default(),
        })
    }
}

impl Node for ByteTrackNode {
    fn process(&mut self, frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let value = inputs.value("instances")?;
        let inst = Instances::from_value(value)?;
        let detections: Vec<Detection> = (0..inst.len())
            .filter(|&k| self.classes.is_empty() || self.classes.contains(&inst.classes[k]))
            .filter(|&k| inst.boxes[k].iter().all(|v| v.is_finite()) && inst.scores[k].is_finite())
            .map(|k| Detection {
                tlbr: inst.boxes[k],
                score: inst.scores[k],
                class: inst.classes[k],
                index: k,
            })
            .collect();
        let config = self.config;
        let tracker = self
            .trackers
            .get_or_insert_with(frame.stream, || ByteTracker::new(config));
        let tracks: Vec<_> = tracker
            .update(&detections)
            .into_iter()
            .filter(|t| {
                let [_, _, w, h] = t.tlwh;
                let area_ok = w * h > self.min_box_area;
                let shape_ok = self.max_aspect_ratio <= 0.0 || w / h <= self.max_aspect_ratio;
                area_ok && shape_ok
            })
            .collect();
        // Each confirmed track was matched to a detection on this frame: its other fields
        // (masks, keypoints, ...) come from that detection.
        let rows: Vec<usize> = tracks
            .iter()
            .map(|t| {
                t.detection_index.ok_or_else(|| {
                    NodeError::new(format!("{NODE}: a track has no detection on this frame"))
                })
            })
            .collect::<Result<_, _>>()?;
        let mut out = value.select_rows(&rows)?;
        let boxes: Vec<f32> = tracks.iter().flat_map(|t| t.tlbr()).collect();
        out.insert("boxes", Tensor::from_vec(&[tracks.len(), 4], boxes)?);
        let scores: Vec<f32> = tracks.iter().map(|t| t.score).collect();
        out.insert("scores", Tensor::from_vec(&[tracks.len()], scores)?);
        let ids: Vec<i64> = tracks
            .iter()
            .map(|t| i64::try_from(t.track_id).unwrap_or(i64::MAX))
            .collect();
        out.insert("track_ids", Tensor::from_vec(&[tracks.len()], ids)?);
        Ok(Outputs::one("instances", out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_sdk::Value;
    use std::sync::Arc;

    fn node(classes: Vec<i64>) -> ByteTrackNode {
        let mut params = Params::new();
        for spec in &kind().spec.params {
            if let Some(d) = &spec.default {
                params.set(&spec.name, d.clone());
            }
        }
        params.set("classes", ParamValue::IntList(classes));
        ByteTrackNode::from_params(&params).unwrap()
    }

    /// Two people (class 1) walking right and a cup (class 47), with a per-instance field.
    fn detections(t: f32) -> Inputs {
        let value = Instances {
            boxes: vec![
                [10.0 + 5.0 * t, 10.0, 40.0 + 5.0 * t, 90.0],
                [200.0 + 5.0 * t, 20.0, 230.0 + 5.0 * t, 100.0],
                [100.0, 100.0, 120.0, 130.0],
            ],
            scores: vec![0.9, 0.8, 0.95],
            classes: vec![1, 1, 47],
        }
        .to_value()
        .unwrap()
        .with(
            "keypoints",
            Tensor::from_vec(
                &[3, 1, 3],
                vec![1.0f32, 1.0, 1.0, 2.0, 2.0, 1.0, 3.0, 3.0, 1.0],
            )
            .unwrap(),
        );
        let mut inputs = Inputs::new();
        inputs.push("instances", Some(value));
        inputs
    }

    fn run(node: &mut ByteTrackNode, stream: u32, index: u64) -> Value {
        let frame = FrameInfo {
            stream,
            index,
            source: Arc::from("test"),
            ..FrameInfo::default()
        };
        let mut out = node.process(&frame, &detections(index as f32)).unwrap();
        out.take("instances").unwrap()
    }

    #[test]
    fn kinds_are_documented_and_defaults_fit() {
        assert_eq!(
            plugin_sdk::lint_kinds(&crate::kinds()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn tracks_carry_their_detection_and_streams_start_afresh() {
        let mut tracker = node(vec![1]);
        // ByteTrack confirms tracks on the first frame of a stream (frame_id 1).
        let first = run(&mut tracker, 0, 0);
        let ids = |v: &Value| {
            v.tensor("track_ids")
                .unwrap()
                .as_slice::<i64>()
                .unwrap()
                .to_vec()
        };
        assert_eq!(ids(&first), [1, 2]);
        // The cup is not tracked; each track keeps its detection's keypoints.
        let keypoints = first
            .tensor("keypoints")
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        assert_eq!(keypoints, [1.0, 1.0, 1.0, 2.0, 2.0, 1.0]);
        for index in 1..5 {
            assert_eq!(ids(&run(&mut tracker, 0, index)), [1, 2]);
        }
        // A new stream: ids from 1 again, the first stream's tracks are not there.
        let other = run(&mut tracker, 9, 5);
        assert_eq!(ids(&other), [1, 2]);
        assert_eq!(
            other.tensor("boxes").unwrap().as_slice::<f32>().unwrap()[0],
            first.tensor("boxes").unwrap().as_slice::<f32>().unwrap()[0] + 25.0
        );
    }
}
