//! ByteTrack: IoU tracking by detection with a second association of low-score boxes, as the
//! official `BYTETracker` (ifzhang/ByteTrack `yolox/tracker/`, commit `d1bf019`) computes it.
//!
//! This is a library, not a node: feed it each frame's detections with [`ByteTracker::update`]
//! and read back the confirmed tracks of that frame.
//!
//! # Faithfulness
//!
//! `tests/bytetrack_reference.rs` replays seeded synthetic streams through this port and
//! checks, frame by frame, the output track ids and their order, the boxes (within 1e-3 px)
//! and the scores against the official Python code, along with the ids held as tracked and as
//! lost (`tests/reference/make_bytetrack_fixtures.py` writes the fixture). What it reproduces:
//!
//! - **The frame step** of `BYTETracker.update`: high boxes (`score > track_thresh`) matched
//!   to confirmed and lost tracks on IoU fused with the score (unless `mot20`), the low band
//!   (`0.1 < score < track_thresh`) matched to the still-unmatched tracked ones at IoU > 0.5,
//!   unconfirmed tracks (seen on one frame) matched to the leftover high boxes or dropped, new
//!   tracks from leftovers with `score >= track_thresh + 0.1`, lost tracks dropped after
//!   `int(frame_rate / 30 * track_buffer)` frames, then the list bookkeeping
//!   (`joint_stracks`, `sub_stracks`, `remove_duplicate_stracks`), whose order is the output's.
//! - **IoU with cython_bbox's "+1 pixel" convention**: widths are `x2 - x1 + 1` and the
//!   intersection `min(x2) - max(x1) + 1`, so boxes that merely touch overlap.
//! - **The Kalman filter** of `kalman_filter.py` (state `cx, cy, aspect, h` and velocities, the
//!   same noise weights), in `f64` like numpy; the Cholesky solve is written out by hand, so
//!   the last bits can differ from LAPACK's.
//! - **`lap.lapjv(cost, extend_cost=True, cost_limit=t)`**: lap solves the `(n + m)` square
//!   matrix with `t / 2` for "leave this row / column unmatched" and 0 between two dummies, so
//!   a pair is kept only when its cost beats `t`. The same matrix is solved here with
//!   [`kernels::ops::linear_sum_assignment`] (scipy's algorithm), one connected component of
//!   the pairs below `t` at a time (pairs at or above it never help; see
//!   `CostMatrix::assign`). Both solvers are exact, so they pick the same pairs unless two
//!   assignments cost exactly the same (they agree on every assignment of the fixture).
//! - **Float types**: detectors emit `f32`, and so does the official demo, so widths are
//!   computed in `f32` (`x2 - x1`) before the state widens them to `f64`, and the thresholds
//!   compare like numpy 1.x (which the official code needs, for `np.float`): the array tests
//!   (`scores > track_thresh`, `> 0.1`, `< track_thresh`) in `f32`, the scalar test against
//!   `det_thresh` in `f64`. Thresholds given here as `f32` are read back as the decimal they
//!   were written as (`0.8f32` is used as the Python float `0.8`, not as `0.800000011920929`).
//! - **The removed-track quirk**: a lost track that times out is marked removed but stays in
//!   the lost list until the next frame (the official code subtracts the removed list *before*
//!   adding the tracks it just removed), so on that next frame it can still be matched and
//!   keeps its id. Such a track, once lost again, is dropped on the spot (its id is in the
//!   removed list for good), and its object comes back with a new id.
//!
//! # Deliberate differences
//!
//! - Ids count per tracker, from 1 (the official counter is a class attribute shared by every
//!   tracker of the process; a fresh process per stream is what this matches). [`reset`]
//!   starts a new stream.
//! - The official tracker keeps every removed track forever (its `removed_stracks` only
//!   grows); only the one fact that matters, "was removed before", is kept here, on the track,
//!   and removed tracks are freed once no list holds them.
//! - Detections with a non-finite value or an empty box (width or height `<= 0`) are ignored.
//!   The official tracker carries NaN into its states, and a zero height makes the Kalman
//!   innovation covariance singular (scipy raises).
//!
//! [`reset`]: ByteTracker::reset

use kernels::ops::linear_sum_assignment;

/// The tracker's parameters; [`Default`] gives the official defaults (those of
/// `tools/demo_track.py` and a 30 fps stream).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ByteTrackConfig {
    /// Detections scoring above this are "high" (first association, may start tracks);
    /// those in `(0.1, track_thresh)` are "low" (second association only). New tracks need
    /// `track_thresh + 0.1`.
    pub track_thresh: f32,
    /// How many frames (at 30 fps) a lost track is kept for re-identification.
    pub track_buffer: u32,
    /// The first association's cost limit (1 - IoU, times the score unless `mot20`).
    pub match_thresh: f32,
    /// MOT20 mode: the first association and the unconfirmed-track one use plain IoU,
    /// without fusing in the detection score.
    pub mot20: bool,
    /// The stream's frame rate; lost tracks live `int(frame_rate / 30 * track_buffer)` frames.
    pub frame_rate: f32,
}

impl Default for ByteTrackConfig {
    fn default() -> Self {
        Self {
            track_thresh: 0.5,
            track_buffer: 30,
            match_thresh: 0.8,
            mot20: false,
            frame_rate: 30.0,
        }
    }
}

/// One detection of a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// `[x1, y1, x2, y2]` in pixels.
    pub tlbr: [f32; 4],
    /// Confidence in `[0, 1]`.
    pub score: f32,
    /// The detector's class. ByteTrack is class-agnostic: this is carried through to the
    /// track that the detection updates, not used for matching.
    pub class: i64,
    /// The caller's index of this detection (usually its position in the frame's list),
    /// returned as [`TrackOutput::detection_index`].
    pub index: usize,
}

/// A confirmed track after a frame's update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackOutput {
    /// The track's identity, from 1, unique within a stream.
    pub track_id: u64,
    /// `[x, y, w, h]` (top-left corner and size) of the Kalman state: the official `tlwh`
    /// property, i.e. the filtered box, not the detection's box.
    pub tlwh: [f32; 4],
    /// The score of the detection that last updated the track.
    pub score: f32,
    /// [`Detection::index`] of the detection matched to the track on this frame. Every track
    /// the tracker returns was matched on the frame it is returned for, so this is `Some`;
    /// it is an `Option` so that a future "report lost tracks too" stays expressible.
    pub detection_index: Option<usize>,
    /// [`Detection::class`] of that detection.
    pub class: i64,
}

impl TrackOutput {
    /// The box as `[x1, y1, x2, y2]`.
    pub fn tlbr(&self) -> [f32; 4] {
        let [x, y, w, h] = self.tlwh;
        [x, y, x + w, y + h]
    }
}

/// The official tracker: one per stream.
#[derive(Debug, Clone)]
pub struct ByteTracker {
    config: ByteTrackConfig,
    /// `track_thresh + 0.1`, in `f64` like the Python float it is compared with.
    det_thresh: f64,
    /// `match_thresh` as the Python float the official code is configured with.
    match_thresh: f64,
    /// `int(frame_rate / 30 * track_buffer)`.
    max_time_lost: i64,
    /// 1 on the first frame of a stream (the official `frame_id`).
    frame_id: u64,
    /// The last id given out.
    last_id: u64,
    /// Every track held by the `tracked` or the `lost` list.
    tracks: Vec<STrack>,
    /// The official `tracked_stracks` (confirmed or not), as indices into `tracks`.
    tracked: Vec<usize>,
    /// The official `lost_stracks`, as indices into `tracks`.
    lost: Vec<usize>,
    scratch: Scratch,
}

impl ByteTracker {
    pub fn new(config: ByteTrackConfig) -> Self {
        // The official thresholds are Python floats built from the decimal the user wrote:
        // recover that decimal from the f32 (0.8f32 is not 0.8 as an f64).
        let det_thresh = as_decimal(config.track_thresh) + 0.1;
        let max_time_lost = as_decimal(config.frame_rate) / 30.0 * f64::from(config.track_buffer);
        Self {
            config,
            det_thresh,
            match_thresh: as_decimal(config.match_thresh),
            // Python's int() truncates toward zero, as `as` does.
            max_time_lost: max_time_lost as i64,
            frame_id: 0,
            last_id: 0,
            tracks: Vec::new(),
            tracked: Vec::new(),
            lost: Vec::new(),
            scratch: Scratch::default(),
        }
    }

    pub fn config(&self) -> &ByteTrackConfig {
        &self.config
    }

    /// Forgets every track and restarts the frame count and the ids (from 1): the state of
    /// a fresh tracker, for a new stream.
    pub fn reset(&mut self) {
        self.frame_id = 0;
        self.last_id = 0;
        self.tracks.clear();
        self.tracked.clear();
        self.lost.clear();
    }

    /// Frames seen since the stream started (the official `frame_id`).
    pub fn frame_count(&self) -> u64 {
        self.frame_id
    }

    /// Ids of the tracks held as tracked (including unconfirmed ones, which are not output),
    /// in the official list order.
    pub fn tracked_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.tracked.iter().map(|&t| self.tracks[t].id)
    }

    /// Ids of the tracks held as lost (kept for re-identification), in the official order.
    pub fn lost_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.lost.iter().map(|&t| self.tracks[t].id)
    }

    /// One frame: `BYTETracker.update`. Returns the confirmed tracks, in the official order
    /// (surviving tracks first, in their previous order, then new ones, then re-found ones).
    pub fn update(&mut self, detections: &[Detection]) -> Vec<TrackOutput> {
        self.frame_id += 1;
        let frame = self.frame_id;
        let mot20 = self.config.mot20;
        let mut s = std::mem::take(&mut self.scratch);
        s.clear();

        // Split the detections into the high and the low band. The official tests are numpy
        // comparisons of a float32 array with a Python float: done in f32.
        let track_thresh = self.config.track_thresh;
        for d in detections {
            let Some(det) = Det::new(d) else { continue };
            if d.score > track_thresh {
                s.high.push(det);
            } else if d.score > 0.1f32 && d.score < track_thresh {
                s.low.push(det);
            }
        }

        // Step 1: unconfirmed tracks (one frame old) apart; confirmed and lost ones predicted.
        for &t in &self.tracked {
            if self.tracks[t].is_activated {
                s.tracked_pool.push(t);
            } else {
                s.unconfirmed.push(t);
            }
        }
        joint(
            &mut s.pool,
            &s.tracked_pool,
            &self.lost,
            &mut s.mark,
            self.tracks.len(),
        );
        for &t in &s.pool {
            self.tracks[t].predict();
        }

        // Step 2: first association, high boxes against confirmed and lost tracks.
        s.cost.iou_distance(&self.tracks, &s.pool, &s.high);
        if !mot20 {
            s.cost.fuse_score(&s.high);
        }
        s.cost
            .assign(&mut s.assign1, self.match_thresh, &mut s.assign);
        for &(r, c) in &s.assign1.matches {
            let t = s.pool[r];
            let was_tracked = self.tracks[t].state == TrackState::Tracked;
            // `update` for a tracked track and `re_activate` for a lost one set the same
            // state here (only the unused tracklet length differs); what differs is the list.
            self.tracks[t].update(&s.high[c], frame);
            if was_tracked {
                s.activated.push(t);
            } else {
                s.refind.push(t);
            }
        }

        // Step 3: second association, low boxes against the still unmatched tracked tracks
        // (lost ones are not given a second chance), plain IoU with a fixed 0.5 limit.
        for &r in &s.assign1.unmatched_rows {
            let t = s.pool[r];
            if self.tracks[t].state == TrackState::Tracked {
                s.r_tracked.push(t);
            }
        }
        s.cost.iou_distance(&self.tracks, &s.r_tracked, &s.low);
        s.cost.assign(&mut s.assign2, 0.5, &mut s.assign);
        for &(r, c) in &s.assign2.matches {
            let t = s.r_tracked[r];
            // Every track here is tracked: `update`, into the activated list.
            self.tracks[t].update(&s.low[c], frame);
            s.activated.push(t);
        }
        for &r in &s.assign2.unmatched_rows {
            let t = s.r_tracked[r];
            if self.tracks[t].state != TrackState::Lost {
                self.tracks[t].state = TrackState::Lost;
                s.newly_lost.push(t);
            }
        }

        // Unconfirmed tracks against the high boxes left over, limit 0.7; those unmatched
        // are removed (a track must be seen on two consecutive frames).
        s.rest
            .extend(s.assign1.unmatched_cols.iter().map(|&c| s.high[c]));
        s.cost.iou_distance(&self.tracks, &s.unconfirmed, &s.rest);
        if !mot20 {
            s.cost.fuse_score(&s.rest);
        }
        s.cost.assign(&mut s.assign3, 0.7, &mut s.assign);
        for &(r, c) in &s.assign3.matches {
            let t = s.unconfirmed[r];
            self.tracks[t].update(&s.rest[c], frame);
            s.activated.push(t);
        }
        for &r in &s.assign3.unmatched_rows {
            let t = s.unconfirmed[r];
            self.tracks[t].state = TrackState::Removed;
            s.newly_removed.push(t);
        }

        // Step 4: new tracks from the high boxes still unmatched that score enough. The
        // official test is a float32 scalar against a Python float: numpy 1.x does it in f64.
        for &c in &s.assign3.unmatched_cols {
            let det = &s.rest[c];
            if f64::from(det.score) < self.det_thresh {
                continue;
            }
            self.last_id += 1;
            self.tracks.push(STrack::activate(det, self.last_id, frame));
            s.activated.push(self.tracks.len() - 1);
        }

        // Step 5: lost tracks past their time are removed. This walks the lost list of the
        // previous frame, tracks re-found above included (they were just updated).
        for &t in &self.lost {
            let track = &mut self.tracks[t];
            if (frame - track.frame_id) as i64 > self.max_time_lost {
                track.state = TrackState::Removed;
                s.newly_removed.push(t);
            }
        }

        // The official list updates, in its order (which is the output's order).
        let n = self.tracks.len();
        s.tmp.clear();
        s.tmp.extend(
            self.tracked
                .iter()
                .copied()
                .filter(|&t| self.tracks[t].state == TrackState::Tracked),
        );
        joint(&mut s.tmp2, &s.tmp, &s.activated, &mut s.mark, n);
        joint(&mut s.tmp, &s.tmp2, &s.refind, &mut s.mark, n);
        std::mem::swap(&mut self.tracked, &mut s.tmp);
        // lost = sub(lost, tracked); lost += newly lost; lost = sub(lost, removed), where
        // "removed" is the list as of the previous frame: a track removed just now stays.
        sub(&mut s.tmp, &self.lost, &self.tracked, &mut s.mark, n);
        s.tmp.extend_from_slice(&s.newly_lost);
        self.lost.clear();
        self.lost.extend(
            s.tmp
                .iter()
                .copied()
                .filter(|&t| !self.tracks[t].was_removed),
        );
        for &t in &s.newly_removed {
            self.tracks[t].was_removed = true;
        }
        remove_duplicate_stracks(&mut self.tracked, &mut self.lost, &self.tracks, &mut s);

        let outputs = self
            .tracked
            .iter()
            .map(|&t| &self.tracks[t])
            .filter(|t| t.is_activated)
            .map(|t| t.output(frame))
            .collect();
        self.compact(&mut s.mark);
        self.scratch = s;
        outputs
    }

    /// Drops the tracks that no list holds any more and renumbers the lists' indices.
    fn compact(&mut self, remap: &mut Vec<usize>) {
        const GONE: usize = usize::MAX;
        remap.clear();
        remap.resize(self.tracks.len(), GONE);
        for &t in self.tracked.iter().chain(&self.lost) {
            remap[t] = 0;
        }
        let mut next = 0;
        for r in remap.iter_mut() {
            if *r != GONE {
                *r = next;
                next += 1;
            }
        }
        let mut i = 0;
        self.tracks.retain(|_| {
            i += 1;
            remap[i - 1] != GONE
        });
        for t in self.tracked.iter_mut().chain(self.lost.iter_mut()) {
            *t = remap[*t];
        }
    }
}

/// The decimal an `f32` parameter was written as, as the `f64` Python would hold for it:
/// the shortest decimal that reads back as the same `f32` (what `Display` prints), parsed as
/// `f64`. So `0.8f32` gives `0.8`, not `0.800000011920929`, and thresholds compare as in the
/// official code configured with `0.8`.
fn as_decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

// ---------------------------------------------------------------------------------------
// Tracks and detections
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrackState {
    Tracked,
    Lost,
    Removed,
}

/// A detection of the current frame, with the official STrack's derived values.
#[derive(Debug, Clone, Copy)]
struct Det {
    /// `STrack._tlwh`: width and height are subtracted in f32 (the input dtype), then widened.
    tlwh: [f64; 4],
    /// The official `tlbr` property of an STrack without a state: `tlwh` with `x + w`,
    /// `y + h` recomputed in f64 (not the input `x2`, `y2`).
    tlbr: [f64; 4],
    score: f32,
    class: i64,
    index: usize,
}

impl Det {
    fn new(d: &Detection) -> Option<Self> {
        let [x1, y1, x2, y2] = d.tlbr;
        let (w, h) = (x2 - x1, y2 - y1);
        let finite = d.tlbr.iter().all(|v| v.is_finite())
            && d.score.is_finite()
            && w.is_finite()
            && h.is_finite();
        if !finite || w <= 0.0 || h <= 0.0 {
            return None;
        }
        let tlwh = [f64::from(x1), f64::from(y1), f64::from(w), f64::from(h)];
        let tlbr = [tlwh[0], tlwh[1], tlwh[0] + tlwh[2], tlwh[1] + tlwh[3]];
        Some(Self {
            tlwh,
            tlbr,
            score: d.score,
            class: d.class,
            index: d.index,
        })
    }

    /// `STrack.tlwh_to_xyah`: centre, aspect `w / h`, height.
    fn xyah(&self) -> [f64; 4] {
        let [x, y, w, h] = self.tlwh;
        [x + w / 2.0, y + h / 2.0, w / h, h]
    }
}

#[derive(Debug, Clone)]
struct STrack {
    id: u64,
    mean: Mean,
    cov: Cov,
    state: TrackState,
    /// Confirmed: seen on two consecutive frames, or started on the stream's first frame.
    is_activated: bool,
    score: f32,
    class: i64,
    det_index: usize,
    /// The last frame the track was matched (the official `frame_id` / `end_frame`).
    frame_id: u64,
    start_frame: u64,
    /// The official `removed_stracks` holds this track's id (from an earlier frame): it is
    /// then dropped from the lost list whenever it is found there.
    was_removed: bool,
}

impl STrack {
    /// `STrack.activate`: a new track from a detection.
    fn activate(det: &Det, id: u64, frame: u64) -> Self {
        let (mean, cov) = kalman::initiate(det.xyah());
        Self {
            id,
            mean,
            cov,
            state: TrackState::Tracked,
            // Only tracks started on the first frame are confirmed at once.
            is_activated: frame == 1,
            score: det.score,
            class: det.class,
            det_index: det.index,
            frame_id: frame,
            start_frame: frame,
            was_removed: false,
        }
    }

    /// The prediction of `STrack.multi_predict`: a track that is not tracked (lost, or
    /// removed but still listed) keeps its position velocity but not its height velocity.
    fn predict(&mut self) {
        if self.state != TrackState::Tracked {
            self.mean[7] = 0.0;
        }
        kalman::predict(&mut self.mean, &mut self.cov);
    }

    /// `STrack.update` / `STrack.re_activate` (without a new id).
    fn update(&mut self, det: &Det, frame: u64) {
        kalman::update(&mut self.mean, &mut self.cov, det.xyah());
        self.state = TrackState::Tracked;
        self.is_activated = true;
        self.frame_id = frame;
        self.score = det.score;
        self.class = det.class;
        self.det_index = det.index;
    }

    /// The official `tlwh` property of a track with a state.
    fn tlwh(&self) -> [f64; 4] {
        let [cx, cy, a, h] = [self.mean[0], self.mean[1], self.mean[2], self.mean[3]];
        let w = a * h;
        [cx - w / 2.0, cy - h / 2.0, w, h]
    }

    /// The official `tlbr` property.
    fn tlbr(&self) -> [f64; 4] {
        let [x, y, w, h] = self.tlwh();
        [x, y, w + x, h + y]
    }

    fn output(&self, frame: u64) -> TrackOutput {
        TrackOutput {
            track_id: self.id,
            tlwh: self.tlwh().map(|v| v as f32),
            score: self.score,
            detection_index: (self.frame_id == frame).then_some(self.det_index),
            class: self.class,
        }
    }
}

// ---------------------------------------------------------------------------------------
// List operations and matching
// ---------------------------------------------------------------------------------------

/// Buffers reused from frame to frame.
#[derive(Debug, Clone, Default)]
struct Scratch {
    high: Vec<Det>,
    low: Vec<Det>,
    rest: Vec<Det>,
    tracked_pool: Vec<usize>,
    unconfirmed: Vec<usize>,
    pool: Vec<usize>,
    r_tracked: Vec<usize>,
    activated: Vec<usize>,
    refind: Vec<usize>,
    newly_lost: Vec<usize>,
    newly_removed: Vec<usize>,
    tmp: Vec<usize>,
    tmp2: Vec<usize>,
    /// Marks per track index (membership in `joint` / `sub`, the renumbering in `compact`).
    mark: Vec<usize>,
    cost: CostMatrix,
    assign: AssignScratch,
    assign1: Assignment,
    assign2: Assignment,
    assign3: Assignment,
    dup_a: Vec<bool>,
    dup_b: Vec<bool>,
}

impl Scratch {
    fn clear(&mut self) {
        for v in [
            &mut self.tracked_pool,
            &mut self.unconfirmed,
            &mut self.pool,
            &mut self.r_tracked,
            &mut self.activated,
            &mut self.refind,
            &mut self.newly_lost,
            &mut self.newly_removed,
        ] {
            v.clear();
        }
        self.high.clear();
        self.low.clear();
        self.rest.clear();
    }
}

/// `joint_stracks(a, b)`: `a`, then the tracks of `b` not already there, first occurrence
/// kept. Tracks are compared by index into the tracker's arena, which is one-to-one with
/// the official comparison by id (ids are never reused within a stream).
fn joint(out: &mut Vec<usize>, a: &[usize], b: &[usize], mark: &mut Vec<usize>, n: usize) {
    mark.clear();
    mark.resize(n, 0);
    out.clear();
    for &t in a.iter().chain(b) {
        if mark[t] == 0 {
            mark[t] = 1;
            out.push(t);
        }
    }
}

/// `sub_stracks(a, b)`: the tracks of `a` that are not in `b`, in `a`'s order.
fn sub(out: &mut Vec<usize>, a: &[usize], b: &[usize], mark: &mut Vec<usize>, n: usize) {
    mark.clear();
    mark.resize(n, 0);
    for &t in b {
        mark[t] = 1;
    }
    out.clear();
    out.extend(a.iter().copied().filter(|&t| mark[t] == 0));
}

/// `remove_duplicate_stracks(tracked, lost)`: for each tracked/lost pair with IoU distance
/// below 0.15, the one tracked for fewer frames (`frame_id - start_frame`) goes, the tracked
/// one on a tie.
fn remove_duplicate_stracks(
    tracked: &mut Vec<usize>,
    lost: &mut Vec<usize>,
    tracks: &[STrack],
    s: &mut Scratch,
) {
    let (na, nb) = (tracked.len(), lost.len());
    if na == 0 || nb == 0 {
        return;
    }
    s.dup_a.clear();
    s.dup_a.resize(na, false);
    s.dup_b.clear();
    s.dup_b.resize(nb, false);
    for (p, &tp) in tracked.iter().enumerate() {
        let a = tracks[tp].tlbr();
        for (q, &tq) in lost.iter().enumerate() {
            if 1.0 - iou(&a, &tracks[tq].tlbr()) < 0.15 {
                let time_p = tracks[tp].frame_id - tracks[tp].start_frame;
                let time_q = tracks[tq].frame_id - tracks[tq].start_frame;
                if time_p > time_q {
                    s.dup_b[q] = true;
                } else {
                    s.dup_a[p] = true;
                }
            }
        }
    }
    let mut i = 0;
    tracked.retain(|_| {
        i += 1;
        !s.dup_a[i - 1]
    });
    let mut i = 0;
    lost.retain(|_| {
        i += 1;
        !s.dup_b[i - 1]
    });
}

/// cython_bbox's `bbox_overlaps` for one pair (`a` from the first list, `b` the query box),
/// with its "+1 pixel" widths and its operation order. 0 when they do not overlap (and for
/// NaN, which fails the `> 0` tests).
fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let iw = a[2].min(b[2]) - a[0].max(b[0]) + 1.0;
    if iw > 0.0 {
        let ih = a[3].min(b[3]) - a[1].max(b[1]) + 1.0;
        if ih > 0.0 {
            let area_b = (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0);
            let ua = (a[2] - a[0] + 1.0) * (a[3] - a[1] + 1.0) + area_b - iw * ih;
            return iw * ih / ua;
        }
    }
    0.0
}

/// `matching.linear_assignment`'s results: pairs by increasing row, unmatched rows and
/// columns in increasing order.
#[derive(Debug, Clone, Default)]
struct Assignment {
    matches: Vec<(usize, usize)>,
    unmatched_rows: Vec<usize>,
    unmatched_cols: Vec<usize>,
}

/// A cost matrix between tracks (rows) and detections (columns), row-major.
#[derive(Debug, Clone, Default)]
struct CostMatrix {
    data: Vec<f64>,
    rows: usize,
    cols: usize,
}

impl CostMatrix {
    /// `matching.iou_distance(tracks, detections)`: `1 - IoU`.
    fn iou_distance(&mut self, tracks: &[STrack], rows: &[usize], dets: &[Det]) {
        self.rows = rows.len();
        self.cols = dets.len();
        self.data.clear();
        self.data.reserve(self.rows * self.cols);
        for &t in rows {
            let a = tracks[t].tlbr();
            self.data
                .extend(dets.iter().map(|d| 1.0 - iou(&a, &d.tlbr)));
        }
    }

    /// `matching.fuse_score`: `1 - (1 - cost) * score`, step by step as numpy does.
    fn fuse_score(&mut self, dets: &[Det]) {
        if self.cols == 0 {
            return;
        }
        for row in self.data.chunks_exact_mut(self.cols) {
            for (c, d) in row.iter_mut().zip(dets) {
                let iou_sim = 1.0 - *c;
                let fuse_sim = iou_sim * f64::from(d.score);
                *c = 1.0 - fuse_sim;
            }
        }
    }

    /// `matching.linear_assignment(cost, thresh)`, i.e. `lap.lapjv(cost, extend_cost=True,
    /// cost_limit=thresh)`.
    ///
    /// lap solves the `(rows + cols)` square matrix that has the costs in the top-left
    /// block, `thresh / 2` for a row or a column left to a dummy, and 0 between dummies. Any
    /// full assignment of it costs `sum over real pairs of (cost - thresh)` plus a constant,
    /// so its optimum is the set of pairs that maximises `sum(thresh - cost)`: a pair with
    /// `cost >= thresh` gains nothing. The problem therefore splits into the connected
    /// components of the pairs with `cost < thresh`; each is solved here as lap would solve
    /// it, on its own extended matrix (`assign_extended`), and the rest stays unmatched. The
    /// optimum is the same as on the whole matrix (and so lap's pairs) whenever it is unique,
    /// i.e. unless two assignments cost exactly the same; it costs a few microseconds where
    /// the whole `(rows + cols)` matrix took hundreds for 100 tracks.
    fn assign(&self, out: &mut Assignment, thresh: f64, w: &mut AssignScratch) {
        let (rows, cols) = (self.rows, self.cols);
        out.matches.clear();
        out.unmatched_rows.clear();
        out.unmatched_cols.clear();
        // Union-find over rows `0..rows` and columns `rows..rows + cols`.
        w.parent.clear();
        w.parent.extend(0..rows + cols);
        for (i, row) in self.data.chunks_exact(cols.max(1)).take(rows).enumerate() {
            for (j, &c) in row.iter().enumerate() {
                if c < thresh {
                    let (a, b) = (find(&mut w.parent, i), find(&mut w.parent, rows + j));
                    w.parent[a.max(b)] = a.min(b);
                }
            }
        }
        // Nodes grouped by component, rows before columns and ascending within each.
        w.members.clear();
        for node in 0..rows + cols {
            let root = find(&mut w.parent, node);
            w.members.push((root, node));
        }
        w.members.sort_unstable();
        let mut start = 0;
        while start < w.members.len() {
            let root = w.members[start].0;
            let end = start + w.members[start..].partition_point(|m| m.0 == root);
            let nodes = &w.members[start..end];
            start = end;
            let split = nodes.partition_point(|m| m.1 < rows);
            match (split, nodes.len() - split) {
                // A lone row or column: nothing below the limit.
                (_, 0) | (0, _) => {}
                // One pair below the limit: lap takes it.
                (1, 1) => out.matches.push((nodes[0].1, nodes[1].1 - rows)),
                (r, c) => {
                    w.rows.clear();
                    w.rows.extend(nodes[..r].iter().map(|m| m.1));
                    w.cols.clear();
                    w.cols.extend(nodes[r..].iter().map(|m| m.1 - rows));
                    w.sub.clear();
                    for &i in &w.rows {
                        w.sub
                            .extend(w.cols.iter().map(|&j| self.data[i * cols + j]));
                    }
                    let pairs = assign_extended(&w.sub, r, c, thresh, &mut w.ext);
                    for (a, b) in pairs {
                        out.matches.push((w.rows[a], w.cols[b]));
                    }
                }
            }
        }
        out.matches.sort_unstable();
        // Flags in the lists' own buffers: the unmatched are the rows and columns not paired.
        out.unmatched_rows.extend(0..rows);
        out.unmatched_cols.extend(0..cols);
        for &(r, c) in &out.matches {
            out.unmatched_rows[r] = usize::MAX;
            out.unmatched_cols[c] = usize::MAX;
        }
        out.unmatched_rows.retain(|&r| r != usize::MAX);
        out.unmatched_cols.retain(|&c| c != usize::MAX);
    }
}

/// Union-find root, with path halving.
fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// lap's `lapjv(cost, extend_cost=True, cost_limit=thresh)` on a `rows x cols` matrix, as
/// lap builds it: the square `(rows + cols)` matrix with `cost` top-left, `thresh / 2`
/// top-right and bottom-left, 0 bottom-right, solved exactly (scipy's algorithm). Returns
/// the real pairs, by increasing row.
fn assign_extended(
    cost: &[f64],
    rows: usize,
    cols: usize,
    thresh: f64,
    ext: &mut Vec<f64>,
) -> Vec<(usize, usize)> {
    let n = rows + cols;
    ext.clear();
    ext.resize(n * n, thresh / 2.0);
    for (i, row) in cost.chunks_exact(cols).enumerate() {
        ext[i * n..i * n + cols].copy_from_slice(row);
    }
    for i in rows..n {
        ext[i * n + cols..(i + 1) * n].fill(0.0);
    }
    // The matrix is finite (costs are in [0, 1], thresholds finite), so the solver cannot
    // fail; if it did, nothing would be matched rather than panicking.
    let mut pairs = linear_sum_assignment(ext, n, n).unwrap_or_default();
    pairs.retain(|&(r, c)| r < rows && c < cols);
    pairs
}

/// Buffers of [`CostMatrix::assign`].
#[derive(Debug, Clone, Default)]
struct AssignScratch {
    parent: Vec<usize>,
    /// `(component root, node)`.
    members: Vec<(usize, usize)>,
    rows: Vec<usize>,
    cols: Vec<usize>,
    /// A component's costs.
    sub: Vec<f64>,
    /// Its extended matrix.
    ext: Vec<f64>,
}

// ---------------------------------------------------------------------------------------
// Kalman filter
// ---------------------------------------------------------------------------------------

type Mean = [f64; 8];
type Cov = [[f64; 8]; 8];

/// `kalman_filter.KalmanFilter`: constant velocity in `(cx, cy, aspect, h)`, observing the
/// position; noise proportional to the height.
mod kalman {
    use super::{Cov, Mean};

    // The Python values (1. / 20, 1. / 160), computed the same way.
    const W_POS: f64 = 1.0 / 20.0;
    const W_VEL: f64 = 1.0 / 160.0;

    /// A new track's state: the measurement, zero velocity, a diagonal covariance.
    pub(super) fn initiate(z: [f64; 4]) -> (Mean, Cov) {
        let h = z[3];
        let std = [
            2.0 * W_POS * h,
            2.0 * W_POS * h,
            1e-2,
            2.0 * W_POS * h,
            10.0 * W_VEL * h,
            10.0 * W_VEL * h,
            1e-5,
            10.0 * W_VEL * h,
        ];
        let mut mean = [0.0; 8];
        mean[..4].copy_from_slice(&z);
        let mut cov = [[0.0; 8]; 8];
        for (i, s) in std.iter().enumerate() {
            cov[i][i] = s * s;
        }
        (mean, cov)
    }

    /// `predict` / `multi_predict`: `x = F x`, `P = F P F^T + Q`. F adds each velocity to
    /// its position (dt = 1); with 0/1 entries numpy's products reduce to these sums, exactly.
    pub(super) fn predict(mean: &mut Mean, cov: &mut Cov) {
        let h = mean[3];
        let q = [
            W_POS * h,
            W_POS * h,
            1e-2,
            W_POS * h,
            W_VEL * h,
            W_VEL * h,
            1e-5,
            W_VEL * h,
        ];
        for i in 0..4 {
            mean[i] += mean[i + 4];
        }
        // F P: row i (< 4) gains row i + 4.
        let mut fp = *cov;
        for i in 0..4 {
            for j in 0..8 {
                fp[i][j] = cov[i][j] + cov[i + 4][j];
            }
        }
        // (F P) F^T: column j (< 4) gains column j + 4.
        for i in 0..8 {
            for j in 0..8 {
                cov[i][j] = if j < 4 {
                    fp[i][j] + fp[i][j + 4]
                } else {
                    fp[i][j]
                };
            }
            cov[i][i] += q[i] * q[i];
        }
    }

    /// `update`: the Kalman correction with measurement `z`, the gain solved through the
    /// Cholesky factor of the innovation covariance (scipy's `cho_factor` / `cho_solve`).
    pub(super) fn update(mean: &mut Mean, cov: &mut Cov, z: [f64; 4]) {
        // project: H x is the first four entries, H P H^T the top-left block, plus R.
        let h = mean[3];
        let r = [W_POS * h, W_POS * h, 1e-1, W_POS * h];
        let mut s = [[0.0; 4]; 4];
        for i in 0..4 {
            for j in 0..4 {
                s[i][j] = cov[i][j];
            }
            s[i][i] += r[i] * r[i];
        }
        let Some(l) = cholesky(&s) else {
            // Not positive definite: scipy raises. Unreachable for the boxes update accepts
            // (height > 0 makes R positive definite); keep the prediction.
            return;
        };
        // K^T = S^-1 (P H^T)^T: solve S X = B with B[r][c] = P[c][r] (4 x 8).
        let mut x = [[0.0; 8]; 4];
        for c in 0..8 {
            let mut b = [cov[c][0], cov[c][1], cov[c][2], cov[c][3]];
            // L y = b
            for i in 0..4 {
                let mut v = b[i];
                for k in 0..i {
                    v -= l[i][k] * b[k];
                }
                b[i] = v / l[i][i];
            }
            // L^T x = y
            for i in (0..4).rev() {
                let mut v = b[i];
                for k in i + 1..4 {
                    v -= l[k][i] * b[k];
                }
                b[i] = v / l[i][i];
            }
            for i in 0..4 {
                x[i][c] = b[i];
            }
        }
        // new mean = x + innovation K^T
        let innovation = [
            z[0] - mean[0],
            z[1] - mean[1],
            z[2] - mean[2],
            z[3] - mean[3],
        ];
        for (c, m) in mean.iter_mut().enumerate() {
            let mut acc = 0.0;
            for (r, inn) in innovation.iter().enumerate() {
                acc += inn * x[r][c];
            }
            *m += acc;
        }
        // new cov = P - K (S K^T), numpy's multi_dot order for these shapes.
        let mut skt = [[0.0; 8]; 4];
        for i in 0..4 {
            for c in 0..8 {
                let mut acc = 0.0;
                for k in 0..4 {
                    acc += s[i][k] * x[k][c];
                }
                skt[i][c] = acc;
            }
        }
        for i in 0..8 {
            for j in 0..8 {
                let mut acc = 0.0;
                for k in 0..4 {
                    acc += x[k][i] * skt[k][j];
                }
                cov[i][j] -= acc;
            }
        }
    }

    /// Lower Cholesky factor of a 4x4 symmetric matrix, or `None` if it is not positive
    /// definite (a pivot <= 0 or NaN).
    fn cholesky(a: &[[f64; 4]; 4]) -> Option<[[f64; 4]; 4]> {
        let mut l = [[0.0; 4]; 4];
        for j in 0..4 {
            // Subtracting the products one at a time, in order (Cholesky–Banachiewicz).
            let d = l[j][..j].iter().fold(a[j][j], |d, v| d - v * v);
            if d.is_nan() || d <= 0.0 {
                return None;
            }
            let d = d.sqrt();
            l[j][j] = d;
            for i in j + 1..4 {
                let v = l[i][..j]
                    .iter()
                    .zip(&l[j][..j])
                    .fold(a[i][j], |v, (x, y)| v - x * y);
                l[i][j] = v / d;
            }
        }
        Some(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_uses_plus_one_widths() {
        // 10x10 pixels each in the +1 convention (0..=9), overlapping on 5 columns.
        let a = [0.0, 0.0, 9.0, 9.0];
        let b = [5.0, 0.0, 14.0, 9.0];
        assert_eq!(iou(&a, &b), 50.0 / 150.0);
        // Touching boxes overlap by one pixel column.
        let c = [9.0, 0.0, 18.0, 9.0];
        assert_eq!(iou(&a, &c), 10.0 / 190.0);
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &[20.0, 0.0, 30.0, 9.0]), 0.0);
    }

    #[test]
    fn lap_style_assignment_respects_the_limit() {
        // Row 0 fits column 0; row 1's best (0.9) is above the limit 0.8.
        let cost = |data: &[f64], rows, cols| CostMatrix {
            data: data.to_vec(),
            rows,
            cols,
        };
        let mut a = Assignment::default();
        cost(&[0.1, 0.95, 0.97, 0.9], 2, 2).assign(&mut a, 0.8, &mut AssignScratch::default());
        assert_eq!(a.matches, vec![(0, 0)]);
        assert_eq!(a.unmatched_rows, vec![1]);
        assert_eq!(a.unmatched_cols, vec![1]);
        // Rectangular, with a conflict: the total is minimised, not each row greedily (as
        // lap.lapjv gives: x = [1, 0], y = [1, 0, -1]).
        cost(&[0.1, 0.2, 0.9, 0.15, 0.7, 0.9], 2, 3).assign(
            &mut a,
            0.8,
            &mut AssignScratch::default(),
        );
        assert_eq!(a.matches, vec![(0, 1), (1, 0)]);
        assert!(a.unmatched_rows.is_empty());
        assert_eq!(a.unmatched_cols, vec![2]);
        // No detections: every track unmatched.
        cost(&[], 3, 0).assign(&mut a, 0.8, &mut AssignScratch::default());
        assert_eq!((a.matches.len(), a.unmatched_rows.len()), (0, 3));
    }

    /// The split into components picks the pairs of lap's whole extended matrix.
    #[test]
    fn components_match_the_whole_extended_matrix() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut a = Assignment::default();
        let mut w = AssignScratch::default();
        for _ in 0..2000 {
            let rows = (next() * 14.0) as usize;
            let cols = (next() * 14.0) as usize;
            let density = next();
            let data: Vec<f64> = (0..rows * cols)
                .map(|_| if next() < density { next() } else { 1.0 })
                .collect();
            let thresh = [0.5, 0.7, 0.8, 0.9][(next() * 4.0) as usize];
            let m = CostMatrix { data, rows, cols };
            m.assign(&mut a, thresh, &mut w);
            let whole = if rows == 0 || cols == 0 {
                Vec::new()
            } else {
                assign_extended(&m.data, rows, cols, thresh, &mut Vec::new())
            };
            assert_eq!(a.matches, whole, "{rows}x{cols} at {thresh}: {:?}", m.data);
            let matched = |n: usize, pick: fn(&(usize, usize)) -> usize| -> Vec<usize> {
                (0..n)
                    .filter(|k| !whole.iter().any(|p| pick(p) == *k))
                    .collect()
            };
            assert_eq!(a.unmatched_rows, matched(rows, |p| p.0));
            assert_eq!(a.unmatched_cols, matched(cols, |p| p.1));
        }
    }

    #[test]
    fn decimal_thresholds() {
        assert_eq!(as_decimal(0.8), 0.8);
        assert_eq!(as_decimal(0.6) + 0.1, 0.7);
        assert_eq!(as_decimal(30.0), 30.0);
        assert_eq!(
            ByteTracker::new(ByteTrackConfig::default()).max_time_lost,
            30
        );
        let cfg = ByteTrackConfig {
            frame_rate: 10.0,
            track_buffer: 20,
            ..Default::default()
        };
        assert_eq!(ByteTracker::new(cfg).max_time_lost, 6);
    }

    #[test]
    fn degenerate_detections_are_ignored() {
        let mut t = ByteTracker::new(ByteTrackConfig::default());
        let dets = [
            Detection {
                tlbr: [0.0, 0.0, 10.0, 0.0],
                score: 0.9,
                class: 0,
                index: 0,
            },
            Detection {
                tlbr: [0.0, f32::NAN, 10.0, 10.0],
                score: 0.9,
                class: 0,
                index: 1,
            },
            Detection {
                tlbr: [0.0, 0.0, 10.0, 10.0],
                score: f32::NAN,
                class: 0,
                index: 2,
            },
            Detection {
                tlbr: [5.0, 5.0, 25.0, 45.0],
                score: 0.9,
                class: 3,
                index: 3,
            },
        ];
        let out = t.update(&dets);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].track_id, 1);
        assert_eq!(out[0].detection_index, Some(3));
        assert_eq!(out[0].class, 3);
        assert_eq!(out[0].tlbr(), [5.0, 5.0, 25.0, 45.0]);
    }
}
