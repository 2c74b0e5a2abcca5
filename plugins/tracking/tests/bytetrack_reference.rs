//! The ByteTrack port against the official tracker: `tests/reference/make_bytetrack_fixtures.py`
//! ran ifzhang/ByteTrack @ d1bf019 (`yolox/tracker/byte_tracker.py` with its Kalman filter,
//! matching and lap's `lapjv`) on seeded synthetic detection streams, a fresh `BYTETracker`
//! per stream. Each stream is replayed here through one `ByteTracker`; per frame the output
//! tracks must have the same ids in the same order, the same scores (exactly) and boxes
//! within 1e-3 px, and the tracker must hold the same ids as tracked and as lost.

use plugin_tracking::bytetrack::{ByteTrackConfig, ByteTracker, Detection, TrackOutput};
use serde_json::Value;

const TLWH_TOL: f64 = 1e-3;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bytetrack.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn config(seq: &Value) -> ByteTrackConfig {
    let args = &seq["args"];
    ByteTrackConfig {
        track_thresh: args["track_thresh"].as_f64().unwrap() as f32,
        track_buffer: args["track_buffer"].as_u64().unwrap() as u32,
        match_thresh: args["match_thresh"].as_f64().unwrap() as f32,
        mot20: args["mot20"].as_bool().unwrap(),
        frame_rate: seq["frame_rate"].as_f64().unwrap() as f32,
    }
}

/// A frame's detections; the fixture stores the float32 inputs as exact float64 values.
/// The class is made up (the tracker only carries it) so that it can be checked.
fn detections(frame: &Value) -> Vec<Detection> {
    frame["detections"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(index, row)| {
            let r = f64s(row);
            Detection {
                tlbr: [r[0] as f32, r[1] as f32, r[2] as f32, r[3] as f32],
                score: r[4] as f32,
                class: (index % 3) as i64,
                index,
            }
        })
        .collect()
}

/// Replays one sequence and returns the largest tlwh error in pixels.
fn check_sequence(tracker: &mut ByteTracker, seq: &Value) -> f64 {
    let name = seq["name"].as_str().unwrap();
    let mut max_err = 0.0f64;
    for (f, frame) in seq["frames"].as_array().unwrap().iter().enumerate() {
        let dets = detections(frame);
        let out = tracker.update(&dets);
        let want = frame["tracks"].as_array().unwrap();
        let got_ids: Vec<u64> = out.iter().map(|t| t.track_id).collect();
        let want_ids: Vec<u64> = want.iter().map(|t| t["id"].as_u64().unwrap()).collect();
        assert_eq!(got_ids, want_ids, "{name} frame {}: track ids", f + 1);
        for (t, w) in out.iter().zip(want) {
            let wt = f64s(&w["tlwh"]);
            for k in 0..4 {
                let err = (f64::from(t.tlwh[k]) - wt[k]).abs();
                max_err = max_err.max(err);
                assert!(
                    err <= TLWH_TOL,
                    "{name} frame {} track {}: tlwh {:?} vs {wt:?}",
                    f + 1,
                    t.track_id,
                    t.tlwh
                );
            }
            assert_eq!(
                t.score,
                w["score"].as_f64().unwrap() as f32,
                "{name} frame {} track {}: score",
                f + 1,
                t.track_id
            );
            check_detection_link(t, &dets);
        }
        let tracked: Vec<u64> = tracker.tracked_ids().collect();
        let lost: Vec<u64> = tracker.lost_ids().collect();
        assert_eq!(
            tracked,
            ids(&frame["tracked_ids"]),
            "{name} frame {}: tracked",
            f + 1
        );
        assert_eq!(
            lost,
            ids(&frame["lost_ids"]),
            "{name} frame {}: lost",
            f + 1
        );
    }
    max_err
}

/// Every output track was matched on this frame: its detection index names a detection
/// with the track's score and class.
fn check_detection_link(t: &TrackOutput, dets: &[Detection]) {
    let i = t
        .detection_index
        .expect("an output track has this frame's detection");
    assert_eq!(dets[i].index, i);
    assert_eq!(dets[i].score, t.score);
    assert_eq!(dets[i].class, t.class);
}

#[test]
fn matches_official_bytetrack() {
    let fx = fixture();
    let seqs = fx["sequences"].as_array().unwrap();
    assert!(seqs.len() >= 3);
    for seq in seqs {
        let mut tracker = ByteTracker::new(config(seq));
        let err = check_sequence(&mut tracker, seq);
        let n = seq["frames"].as_array().unwrap().len();
        println!(
            "{}: {n} frames, max tlwh error {err:.3e} px",
            seq["name"].as_str().unwrap()
        );
    }
}

/// One tracker for two streams, reset in between: the second stream's tracks (ids from 1,
/// nothing left over from the first) equal a fresh tracker's, checked against the fixture.
#[test]
fn reset_starts_a_fresh_stream() {
    let fx = fixture();
    let seqs = fx["sequences"].as_array().unwrap();
    let main = seqs.iter().find(|s| s["name"] == "main").unwrap();
    let mut tracker = ByteTracker::new(config(main));
    check_sequence(&mut tracker, main);
    assert!(tracker.tracked_ids().count() > 0);
    tracker.reset();
    assert_eq!(tracker.frame_count(), 0);
    assert_eq!(
        tracker.tracked_ids().count() + tracker.lost_ids().count(),
        0
    );
    // The same stream again: the same ids, from 1, as the official fresh tracker gives.
    check_sequence(&mut tracker, main);

    // Another stream after a reset equals that stream on a tracker that never saw another.
    let crowd = seqs.iter().find(|s| s["name"] == "crowd100").unwrap();
    let frames = crowd["frames"].as_array().unwrap();
    let mut fresh = ByteTracker::new(config(main));
    tracker.reset();
    for frame in frames {
        let dets = detections(frame);
        assert_eq!(tracker.update(&dets), fresh.update(&dets));
    }
}
