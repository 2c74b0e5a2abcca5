//! Multi-object tracking metrics (CLEAR MOT and ID measures) as py-motmetrics 1.4.0 computes
//! them for the MOTChallenge, on MOTChallenge text files: the equivalent of
//!
//! ```python
//! gt = mm.io.loadtxt("gt.txt", fmt="mot15-2D")
//! ts = mm.io.loadtxt("test.txt", fmt="mot15-2D")
//! acc = mm.utils.compare_to_groundtruth(gt, ts, "iou", distth=0.5)
//! mm.metrics.create().compute(acc, metrics=[...])
//! ```
//!
//! with scipy's assignment solver (motmetrics' default when none of lapsolver and lap is
//! installed; they break ties differently). `tests/reference/make_mot_fixtures.py` writes
//! the fixtures that the tests compare with, to 1e-9 (integers exactly).
//!
//! What motmetrics does, and so this module:
//! - **Reading** (`load_motchallenge`): a line is stripped, then split at every comma and at
//!   every run of blanks (pandas with `sep=r'\s+|\t+|,'`), so `", "` makes an empty field.
//!   Fields: frame, id, left, top, width, height, confidence, then up to three that are not
//!   used. Blank lines are skipped. Frame and id may be any number (compared by value:
//!   `1` and `1.0` are the same id).
//! - **The confidence filter**: only rows with `confidence >= -1` are kept, in the ground
//!   truth as well. A row without a confidence (6 fields), with an empty one or `nan` is
//!   dropped: a 6-column file evaluates as an empty one.
//! - **Boxes**: 1 is subtracted from left and top (MATLAB's 1-based pixels) before the IoU,
//!   which changes its last bits for fractional coordinates. A pair can match when its IoU
//!   distance `1 - IoU` is at most 0.5.
//! - **Per frame** (`MOTAccumulator.update`), frames in ascending order, objects and
//!   hypotheses in file order: first every object keeps the hypothesis it was last matched
//!   with if that is present and within the distance; then the others are assigned by
//!   minimum total distance ([`kernels::ops::linear_sum_assignment`], a port of scipy's
//!   solver, on the matrix motmetrics builds: unmatchable pairs cost `2·r·c + 1`, with
//!   `r = min(rows, cols)` and `c` the largest distance plus 1). A match with another
//!   hypothesis than the object's last one is a SWITCH (ASCEND if the hypothesis was never
//!   matched before); a hypothesis matched to another object than its last is a TRANSFER
//!   (MIGRATE if the object was never matched before). The rest are misses and false
//!   positives.
//! - **motp** is the mean IoU *distance* of the matches (lower is better), not the
//!   MOTChallenge devkit's mean IoU.
//! - **Fragmentations**: per object, the times it goes from tracked to missed between its
//!   first and last tracked appearance. **mostly tracked / partially / lost**: tracked ratio
//!   `>= 0.8`, in `[0.2, 0.8)`, `< 0.2`.
//! - **IDF1** (`id_global_assignment`): one assignment over the whole sequence on a square
//!   matrix of `objects + hypotheses` rows. For each object o and hypothesis h, `tp(o, h)`
//!   counts the pairs of rows, in any frame, within the distance (matched or not, each
//!   duplicate row again); a pair costs `frames(o) + frames(h) - 2·tp(o, h)`, where
//!   `frames` counts distinct frames. idtp, idfp and idfn are floats in motmetrics; with
//!   duplicate (frame, id) rows idfn can be negative and IDF1 above 1.
//! - **Frames**: motmetrics walks `gt.index.union(dt.index).levels[0]`, and pandas keeps the
//!   index levels of rows the confidence filter dropped, so `num_frames` can count frames
//!   none of whose rows were kept. [`frame_ids`] reproduces pandas' rule.
//! - Divisions by zero give NaN (0/0) or ±infinity, as numpy's: no ground truth gives
//!   `mota = -inf` when there are predictions.
//!
//! Where motmetrics accepts input that it then mishandles, this module returns an error
//! instead: non-numeric or non-finite frames, ids and boxes, empty fields among the first six,
//! more than 10 fields (pandas shifts every column when the first line has 11). Where
//! motmetrics itself fails (a ground-truth id repeated in its first frame, both rows matched:
//! a `KeyError`), [`evaluate`] returns [`MotError::RepeatedNewObject`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use kernels::ops::assignment::AssignmentError;
use kernels::ops::linear_sum_assignment;
use serde_json::{json, Value as Json};

/// One line of a MOTChallenge file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MotRow {
    /// The frame number (1-based in MOTChallenge files; any finite number).
    pub frame: f64,
    /// The object or track id (any finite number, compared by value).
    pub id: f64,
    /// The box as written in the file: left and top are 1-based, as MOTChallenge's.
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
    /// The confidence (NaN when the file has no such field or it is empty). [`evaluate`]
    /// drops rows whose confidence is not `>= -1`, as motmetrics does.
    pub conf: f64,
}

/// Why a file could not be read or evaluated.
#[derive(Debug, thiserror::Error)]
pub enum MotError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", crate::quoted(path))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A line does not hold a MOTChallenge row. `line` and `column` are 1-based (the column
    /// counts characters), `field` is the 1-based field number (0 when the whole line is at
    /// fault).
    #[error("{}:{line}:{column}: {problem}", crate::quoted(path))]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        field: usize,
        problem: String,
    },
    /// A row given to [`evaluate`] has a non-finite frame, id or box value.
    #[error("{side} row {index}: {problem}")]
    InvalidRow {
        side: &'static str,
        index: usize,
        problem: String,
    },
    /// An object id is repeated within the frame where it first appears and both rows are
    /// matched to different hypotheses in the assignment step: motmetrics fails there (a
    /// `KeyError` in `MOTAccumulator.update`, which looks up the previous frame of the object
    /// to decide on a switch), so there is no result to reproduce.
    #[error(
        "ground-truth id {id} appears more than once in frame {frame}, its first frame, and \
         motmetrics cannot evaluate that (it fails with a KeyError)"
    )]
    RepeatedNewObject { frame: f64, id: f64 },
    /// The assignment solver refused a matrix (cannot happen with finite boxes: kept for
    /// the solver's contract).
    #[error(transparent)]
    Assignment(#[from] AssignmentError),
}

/// The metrics of one sequence, named as motmetrics names them.
#[derive(Clone, Debug, PartialEq)]
pub struct MotMetrics {
    /// Frames walked (see the module docs on frames whose rows were all dropped).
    pub num_frames: u64,
    /// Ground-truth rows kept (object appearances).
    pub num_objects: u64,
    /// Predicted rows kept.
    pub num_predictions: u64,
    pub num_matches: u64,
    pub num_switches: u64,
    pub num_transfer: u64,
    pub num_ascend: u64,
    pub num_migrate: u64,
    pub num_false_positives: u64,
    pub num_misses: u64,
    pub num_fragmentations: u64,
    pub mostly_tracked: u64,
    pub partially_tracked: u64,
    pub mostly_lost: u64,
    /// `1 - (misses + switches + false positives) / objects`.
    pub mota: f64,
    /// Mean IoU distance (`1 - IoU`) of the matches and switches.
    pub motp: f64,
    pub idf1: f64,
    pub idp: f64,
    pub idr: f64,
    /// Floats as in motmetrics (integer-valued; idfn is negative with duplicate rows).
    pub idtp: f64,
    pub idfp: f64,
    pub idfn: f64,
    pub precision: f64,
    pub recall: f64,
    /// Distinct ground-truth ids.
    pub num_unique_objects: u64,
}

/// The names of a line's fields, for messages.
const FIELD_NAMES: [&str; 7] = [
    "frame",
    "id",
    "left",
    "top",
    "width",
    "height",
    "confidence",
];

/// Reads a MOTChallenge text file (`frame, id, left, top, width, height, conf, x, y, z`,
/// separated by commas or blanks, as motmetrics' `mot15-2D` reader accepts it). An empty file
/// gives no rows. Rows are returned in file order, confidence filter not applied.
///
/// # Errors
/// [`MotError::Io`] when the file cannot be read, [`MotError::Parse`] naming the line,
/// column and field when a line has fewer than 6 or more than 10 fields, an empty or
/// non-numeric field among the first 7, or a non-finite frame, id or box value.
pub fn read_mot_file(path: &Path) -> Result<Vec<MotRow>, MotError> {
    let bytes = std::fs::read(path).map_err(|source| MotError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        // Name the line of the first invalid byte.
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        MotError::Parse {
            path: path.to_path_buf(),
            line,
            column: 0,
            field: 0,
            problem: "the file is not UTF-8 text".into(),
        }
    })?;
    parse_mot_text(&text, path)
}

/// [`read_mot_file`] on text already in memory; `path` only names the source in errors.
pub fn parse_mot_text(text: &str, path: &Path) -> Result<Vec<MotRow>, MotError> {
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let fields = split_fields(line);
        if fields.is_empty() {
            continue;
        }
        let fail = |column: usize, field: usize, problem: String| MotError::Parse {
            path: path.to_path_buf(),
            line: line_no,
            column,
            field,
            problem,
        };
        if fields.len() < 6 {
            return Err(fail(
                1,
                0,
                format!(
                    "{} fields; a row needs at least 6 (frame, id, left, top, width, height)",
                    fields.len()
                ),
            ));
        }
        let mut values = [f64::NAN; 7];
        for (k, value) in values.iter_mut().enumerate() {
            let Some(&(column, token)) = fields.get(k) else {
                break; // No confidence field: NaN, as pandas fills it.
            };
            let name = FIELD_NAMES[k];
            if token.is_empty() {
                if k == 6 {
                    continue; // An empty confidence is NaN in pandas too.
                }
                return Err(fail(
                    column,
                    k + 1,
                    format!(
                        "field {} ({name}) is empty (fields are split at every comma and every \
                         run of blanks, so \", \" makes an empty field)",
                        k + 1
                    ),
                ));
            }
            let v: f64 = token.parse().map_err(|_| {
                fail(
                    column,
                    k + 1,
                    format!("field {} ({name}) is \"{token}\", not a number", k + 1),
                )
            })?;
            if k < 6 && !v.is_finite() {
                return Err(fail(
                    column,
                    k + 1,
                    format!(
                        "field {} ({name}) is \"{token}\", not a finite number",
                        k + 1
                    ),
                ));
            }
            *value = v;
        }
        // Checked after the fields, so that ", " separators are named as the cause.
        if fields.len() > 10 {
            let (column, _) = fields[10];
            return Err(fail(
                column,
                11,
                format!(
                    "{} fields; motmetrics reads at most 10 (frame, id, left, top, width, \
                     height, confidence and three unused ones)",
                    fields.len()
                ),
            ));
        }
        rows.push(MotRow {
            frame: values[0],
            id: values[1],
            left: values[2],
            top: values[3],
            width: values[4],
            height: values[5],
            conf: values[6],
        });
    }
    Ok(rows)
}

/// Splits a line as motmetrics' reader does (`re.split(r'\s+|\t+|,', line.strip())`): each
/// run of blanks and each comma ends a field. Returns (1-based character column, text) of
/// every field; an empty or blank line has none.
fn split_fields(line: &str) -> Vec<(usize, &str)> {
    let leading = line.len() - line.trim_start().len();
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Vec::new();
    }
    let column_of = |byte: usize| line[..byte].chars().count() + 1;
    let mut fields = Vec::new();
    let mut start = leading;
    let mut chars = trimmed.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let at = leading + i;
        if c == ',' {
            fields.push((column_of(start), &line[start..at]));
            start = at + 1;
        } else if c.is_whitespace() {
            fields.push((column_of(start), &line[start..at]));
            let mut end = at + c.len_utf8();
            while let Some(&(j, d)) = chars.peek() {
                if !d.is_whitespace() {
                    break;
                }
                end = leading + j + d.len_utf8();
                chars.next();
            }
            start = end;
        }
    }
    fields.push((column_of(start), &line[start..leading + trimmed.len()]));
    fields
}

/// A hashable key for a frame or id: equal numbers give equal keys (`-0.0` is `0.0`).
fn key(v: f64) -> u64 {
    (v + 0.0).to_bits()
}

/// The frames motmetrics walks: `gt.index.union(dt.index).levels[0]` in pandas 2.3, where
/// `gt` and `dt` are the rows kept by the confidence filter but their index levels still
/// hold every frame of the file (a boolean filter keeps a MultiIndex's levels), so frames
/// whose rows were all dropped count in some cases. pandas' `MultiIndex.union`:
/// - returns `gt`'s index when `dt` is empty or equal to it (same (frame, id) pairs in the
///   same order): every frame of the ground-truth file;
/// - returns `dt`'s index when `gt` is empty: every frame of the prediction file;
/// - when `dt` has a repeated (frame, id) pair, appends both indexes: the frames of both
///   files;
/// - otherwise appends to `gt` the pairs of `dt` that `gt` lacks (with `dt`'s levels) if
///   there are any: the frames of both files, else those of the ground truth.
///
/// Sorted ascending, without repeats.
pub fn frame_ids(gt: &[MotRow], pred: &[MotRow]) -> Vec<f64> {
    let kept = |rows: &[MotRow]| -> Vec<(u64, u64)> {
        rows.iter()
            .filter(|r| r.conf >= -1.0)
            .map(|r| (key(r.frame), key(r.id)))
            .collect()
    };
    let (gt_kept, pred_kept) = (kept(gt), kept(pred));
    let both = || gt.iter().chain(pred).map(|r| r.frame).collect::<Vec<_>>();
    let frames: Vec<f64> = if pred_kept.is_empty() || gt_kept == pred_kept {
        gt.iter().map(|r| r.frame).collect()
    } else if gt_kept.is_empty() {
        pred.iter().map(|r| r.frame).collect()
    } else {
        let mut seen = HashSet::new();
        let has_repeats = !pred_kept.iter().all(|p| seen.insert(*p));
        let gt_pairs: HashSet<&(u64, u64)> = gt_kept.iter().collect();
        if has_repeats || pred_kept.iter().any(|p| !gt_pairs.contains(p)) {
            both()
        } else {
            gt.iter().map(|r| r.frame).collect()
        }
    };
    let mut frames: Vec<f64> = frames.into_iter().map(|f| f + 0.0).collect();
    frames.sort_by(f64::total_cmp);
    frames.dedup();
    frames
}

/// motmetrics' IoU distance of two MOTChallenge boxes (`distances.boxiou` after `loadtxt`'s
/// shift of left and top by -1, in the same operation order): `1 - IoU`, or `None` (NaN in
/// motmetrics) when above `max_distance`.
fn iou_distance(a: &MotRow, b: &MotRow, max_distance: f64) -> Option<f64> {
    let (ax, ay) = (a.left - 1.0, a.top - 1.0);
    let (bx, by) = (b.left - 1.0, b.top - 1.0);
    let (ax2, ay2) = (ax + a.width, ay + a.height);
    let (bx2, by2) = (bx + b.width, by + b.height);
    // np.maximum / np.minimum; inputs are finite, so no NaN rules are needed.
    let iw = (ax2.min(bx2) - ax.max(bx)).max(0.0);
    let ih = (ay2.min(by2) - ay.max(by)).max(0.0);
    let inter = iw * ih;
    // The sizes are recomputed from the corners, as motmetrics does: (x + w) - x is not
    // always w.
    let a_area = (ax2 - ax).max(0.0) * (ay2 - ay).max(0.0);
    let b_area = (bx2 - bx).max(0.0) * (by2 - by).max(0.0);
    let union = a_area + b_area - inter;
    let iou = if inter == 0.0 { 0.0 } else { inter / union };
    let distance = 1.0 - iou;
    // `np.where(dist > max_iou, nan, dist)`: a NaN distance stays NaN, which is unmatchable.
    if distance > max_distance || distance.is_nan() {
        None
    } else {
        Some(distance)
    }
}

/// motmetrics' `lap.linear_sum_assignment` with the scipy solver: unmatchable entries
/// (`None`) get `add_expensive_edges`' large constant, and pairs on them are dropped.
fn assign(
    costs: &[Option<f64>],
    rows: usize,
    cols: usize,
) -> Result<Vec<(usize, usize)>, MotError> {
    if costs.is_empty() {
        return Ok(Vec::new());
    }
    let largest = costs.iter().flatten().fold(None, |m: Option<f64>, &c| {
        Some(match m {
            Some(m) if m >= c.abs() => m,
            _ => c.abs(),
        })
    });
    let Some(largest) = largest else {
        // No matchable pair: motmetrics solves a zero matrix and drops every pair.
        return Ok(Vec::new());
    };
    let r = rows.min(cols);
    let c = largest + 1.0;
    // `2 * r * c + 1` with r a Python int: (2r) is exact, then one float product.
    let large = (2 * r) as f64 * c + 1.0;
    let finite: Vec<f64> = costs.iter().map(|c| c.unwrap_or(large)).collect();
    let pairs = linear_sum_assignment(&finite, rows, cols)?;
    Ok(pairs
        .into_iter()
        .filter(|&(i, j)| costs[i * cols + j].is_some())
        .collect())
}

/// numpy's pairwise summation of a contiguous float64 array (`DOUBLE_pairwise_sum`), which
/// `Series.sum()` uses: the same grouping, so the same rounding.
fn pairwise_sum(a: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &v in a {
            res += v;
        }
        res
    } else if n <= BLOCK {
        let mut r = [0.0; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for (k, rk) in r.iter_mut().enumerate() {
                *rk += a[i + k];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &a[i..] {
            res += v;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

/// numpy's `true_divide` of two counts: 0/0 is NaN, x/0 is ±infinity.
fn divide(a: f64, b: f64) -> f64 {
    a / b
}

/// The state and counts of `MOTAccumulator` and of the metrics computed from its events.
#[derive(Default)]
struct Accumulator {
    /// `m`: each object's hypothesis at its last match.
    hyp_of_object: HashMap<u64, u64>,
    /// `res_m`: each hypothesis' object at its last match in the assignment step.
    object_of_hyp: HashMap<u64, u64>,
    /// `last_match`: objects matched at least once (only membership is used).
    matched_objects: HashSet<u64>,
    /// `hypHistory`: hypotheses matched at least once.
    matched_hyps: HashSet<u64>,
    /// `last_occurrence`: objects present in an earlier frame.
    seen_objects: HashSet<u64>,
    matches: u64,
    switches: u64,
    transfers: u64,
    ascends: u64,
    migrates: u64,
    misses: u64,
    false_positives: u64,
    /// Per object, its MATCH/SWITCH (true) and MISS (false) events in event order.
    object_events: HashMap<u64, Vec<bool>>,
    /// The distances of the MATCH, SWITCH, MISS and FP events in event order, 0 for the
    /// last two (pandas' `sum` fills NaN with 0 before numpy adds pairwise).
    distances: Vec<f64>,
    /// `extract_counts_from_df_map`: distinct frames of each object and hypothesis, and the
    /// number of row pairs within the distance of each (object, hypothesis).
    object_frames: HashMap<u64, u64>,
    hyp_frames: HashMap<u64, u64>,
    pair_hits: HashMap<(u64, u64), u64>,
    /// Ids by key, to sort them by value for the global assignment.
    ids: HashMap<u64, f64>,
}

impl Accumulator {
    fn matched(&mut self, o: u64, distance: f64, switch: bool) {
        if switch {
            self.switches += 1;
        } else {
            self.matches += 1;
        }
        self.object_events.entry(o).or_default().push(true);
        self.distances.push(distance);
    }

    /// `MOTAccumulator.update` for one frame.
    fn update(
        &mut self,
        frame: f64,
        objects: &[&MotRow],
        hyps: &[&MotRow],
    ) -> Result<(), MotError> {
        let (no, nh) = (objects.len(), hyps.len());
        let oids: Vec<u64> = objects.iter().map(|r| key(r.id)).collect();
        let hids: Vec<u64> = hyps.iter().map(|r| key(r.id)).collect();
        for r in objects.iter().chain(hyps) {
            self.ids.insert(key(r.id), r.id + 0.0);
        }
        let mut dists: Vec<Option<f64>> = Vec::with_capacity(no * nh);
        for o in objects {
            for h in hyps {
                dists.push(iou_distance(o, h, 0.5));
            }
        }

        // The RAW events' counts for IDF1.
        for set in [
            (oids.iter().collect::<HashSet<_>>(), &mut self.object_frames),
            (hids.iter().collect::<HashSet<_>>(), &mut self.hyp_frames),
        ] {
            let (present, frames) = set;
            for id in present {
                *frames.entry(*id).or_default() += 1;
            }
        }
        for i in 0..no {
            for j in 0..nh {
                if dists[i * nh + j].is_some() {
                    *self.pair_hits.entry((oids[i], hids[j])).or_default() += 1;
                }
            }
        }

        let mut object_done = vec![false; no];
        let mut hyp_done = vec![false; nh];
        if no > 0 && nh > 0 {
            // 1. Objects keep their last hypothesis when it is here and within reach.
            for i in 0..no {
                let Some(&previous) = self.hyp_of_object.get(&oids[i]) else {
                    continue;
                };
                let Some(j) = (0..nh).find(|&j| !hyp_done[j] && hids[j] == previous) else {
                    continue;
                };
                if let Some(d) = dists[i * nh + j] {
                    object_done[i] = true;
                    hyp_done[j] = true;
                    self.matched_objects.insert(oids[i]);
                    self.matched_hyps.insert(hids[j]);
                    self.matched(oids[i], d, false);
                }
            }
            // 2. The rest by minimum total distance, on the whole matrix with the rows and
            // columns already matched made unmatchable.
            let masked: Vec<Option<f64>> = (0..no * nh)
                .map(|k| {
                    let (i, j) = (k / nh, k % nh);
                    if object_done[i] || hyp_done[j] {
                        None
                    } else {
                        dists[k]
                    }
                })
                .collect();
            for (i, j) in assign(&masked, no, nh)? {
                let Some(d) = masked[i * nh + j] else {
                    continue;
                };
                let (o, h) = (oids[i], hids[j]);
                let switch = self.hyp_of_object.get(&o).is_some_and(|&prev| prev != h);
                if switch && !self.seen_objects.contains(&o) {
                    return Err(MotError::RepeatedNewObject {
                        frame,
                        id: objects[i].id,
                    });
                }
                if switch && !self.matched_hyps.contains(&h) {
                    self.ascends += 1;
                }
                if self.object_of_hyp.get(&h).is_some_and(|&prev| prev != o) {
                    if !self.matched_objects.contains(&o) {
                        self.migrates += 1;
                    }
                    self.transfers += 1;
                }
                self.matched_hyps.insert(h);
                self.matched_objects.insert(o);
                self.matched(o, d, switch);
                object_done[i] = true;
                hyp_done[j] = true;
                self.hyp_of_object.insert(o, h);
                self.object_of_hyp.insert(h, o);
            }
        }
        // 3. and 4. Misses, then false positives, in file order.
        for (i, &o) in oids.iter().enumerate() {
            if !object_done[i] {
                self.misses += 1;
                self.object_events.entry(o).or_default().push(false);
                self.distances.push(0.0);
            }
        }
        for done in hyp_done {
            if !done {
                self.false_positives += 1;
                self.distances.push(0.0);
            }
        }
        // 5. (`max_switch_time` is infinite, so only the presence matters.)
        self.seen_objects.extend(oids);
        Ok(())
    }

    /// `id_global_assignment`, `idfp`, `idfn`: (idfp, idfn).
    fn id_counts(&self) -> Result<(f64, f64), MotError> {
        let sorted = |frames: &HashMap<u64, u64>| -> Vec<u64> {
            let mut ids: Vec<u64> = frames.keys().copied().collect();
            ids.sort_by(|a, b| self.ids[a].total_cmp(&self.ids[b]));
            ids
        };
        let (oids, hids) = (sorted(&self.object_frames), sorted(&self.hyp_frames));
        let (no, nh) = (oids.len(), hids.len());
        let n = no + nh;
        // fpmatrix and fnmatrix as motmetrics fills them; None is its NaN.
        let mut fp = vec![Some(0.0); n * n];
        let mut fn_ = vec![Some(0.0); n * n];
        for r in no..n {
            for c in 0..nh {
                fp[r * n + c] = None;
            }
        }
        for r in 0..no {
            for c in nh..n {
                fn_[r * n + c] = None;
            }
        }
        for (r, o) in oids.iter().enumerate() {
            let oc = self.object_frames[o] as f64;
            for c in 0..nh {
                fn_[r * n + c] = Some(oc);
            }
            fn_[r * n + nh + r] = Some(oc);
        }
        for (c, h) in hids.iter().enumerate() {
            let hc = self.hyp_frames[h] as f64;
            for r in 0..no {
                fp[r * n + c] = Some(hc);
            }
            fp[(c + no) * n + c] = Some(hc);
        }
        let row_of: HashMap<u64, usize> = oids.iter().enumerate().map(|(i, o)| (*o, i)).collect();
        let col_of: HashMap<u64, usize> = hids.iter().enumerate().map(|(i, h)| (*h, i)).collect();
        for (&(o, h), &hits) in &self.pair_hits {
            let k = row_of[&o] * n + col_of[&h];
            let ex = hits as f64;
            fp[k] = fp[k].map(|v| v - ex);
            fn_[k] = fn_[k].map(|v| v - ex);
        }
        let costs: Vec<Option<f64>> = fp
            .iter()
            .zip(&fn_)
            .map(|(a, b)| Some((*a)? + (*b)?))
            .collect();
        let pairs = assign(&costs, n, n)?;
        // Integer-valued, so the order of the sums does not matter.
        let idfp = pairs.iter().filter_map(|&(r, c)| fp[r * n + c]).sum();
        let idfn = pairs.iter().filter_map(|&(r, c)| fn_[r * n + c]).sum();
        Ok((idfp, idfn))
    }
}

/// The rows kept by the confidence filter, by frame, in file order within a frame (pandas'
/// groupby keeps it).
fn rows_by_frame(rows: &[MotRow]) -> HashMap<u64, Vec<&MotRow>> {
    let mut map: HashMap<u64, Vec<&MotRow>> = HashMap::new();
    for r in rows.iter().filter(|r| r.conf >= -1.0) {
        map.entry(key(r.frame)).or_default().push(r);
    }
    map
}

/// Evaluates a tracker's rows against the ground truth's, as motmetrics'
/// `compare_to_groundtruth(gt, pred, 'iou', distth=0.5)` and `compute` do after `loadtxt`
/// (see the module docs): rows whose confidence is not `>= -1` are dropped from both.
///
/// # Errors
/// [`MotError::InvalidRow`] for a row whose frame, id or box is not finite;
/// [`MotError::RepeatedNewObject`] where motmetrics fails (see there).
pub fn evaluate(gt: &[MotRow], pred: &[MotRow]) -> Result<MotMetrics, MotError> {
    for (side, rows) in [("ground-truth", gt), ("prediction", pred)] {
        for (index, r) in rows.iter().enumerate() {
            let values = [r.frame, r.id, r.left, r.top, r.width, r.height];
            if let Some(k) = values.iter().position(|v| !v.is_finite()) {
                return Err(MotError::InvalidRow {
                    side,
                    index,
                    problem: format!("{} is {}, not a finite number", FIELD_NAMES[k], values[k]),
                });
            }
        }
    }
    let frames = frame_ids(gt, pred);
    let (gt_by_frame, pred_by_frame) = (rows_by_frame(gt), rows_by_frame(pred));
    let mut acc = Accumulator::default();
    for frame in &frames {
        let objects = gt_by_frame.get(&key(*frame)).map_or(&[][..], |v| v);
        let hyps = pred_by_frame.get(&key(*frame)).map_or(&[][..], |v| v);
        acc.update(*frame, objects, hyps)?;
    }

    let num_objects: u64 = acc.object_events.values().map(|e| e.len() as u64).sum();
    let num_detections = acc.matches + acc.switches;
    let num_predictions = num_detections + acc.false_positives;
    let (mut mostly_tracked, mut partially_tracked, mut mostly_lost) = (0, 0, 0);
    let mut num_fragmentations = 0;
    for events in acc.object_events.values() {
        let tracked = events.iter().filter(|&&t| t).count();
        let ratio = tracked as f64 / events.len() as f64;
        if ratio >= 0.8 {
            mostly_tracked += 1;
        } else if ratio >= 0.2 {
            partially_tracked += 1;
        } else {
            mostly_lost += 1;
        }
        // Tracked-to-missed transitions between the first and last tracked events.
        if let (Some(first), Some(last)) = (
            events.iter().position(|&t| t),
            events.iter().rposition(|&t| t),
        ) {
            num_fragmentations += events[first..=last]
                .windows(2)
                .filter(|w| w[0] && !w[1])
                .count() as u64;
        }
    }
    let (idfp, idfn) = acc.id_counts()?;
    let idtp = num_objects as f64 - idfn;
    let (objects, detections) = (num_objects as f64, num_detections as f64);
    let errors = (acc.misses + acc.switches + acc.false_positives) as f64;
    Ok(MotMetrics {
        num_frames: frames.len() as u64,
        num_objects,
        num_predictions,
        num_matches: acc.matches,
        num_switches: acc.switches,
        num_transfer: acc.transfers,
        num_ascend: acc.ascends,
        num_migrate: acc.migrates,
        num_false_positives: acc.false_positives,
        num_misses: acc.misses,
        num_fragmentations,
        mostly_tracked,
        partially_tracked,
        mostly_lost,
        mota: 1.0 - divide(errors, objects),
        motp: divide(pairwise_sum(&acc.distances), detections),
        idf1: divide(2.0 * idtp, objects + num_predictions as f64),
        idp: divide(idtp, idtp + idfp),
        idr: divide(idtp, idtp + idfn),
        idtp,
        idfp,
        idfn,
        precision: divide(detections, acc.false_positives as f64 + detections),
        recall: divide(detections, objects),
        num_unique_objects: acc.object_events.len() as u64,
    })
}

/// The MOTChallenge columns of [`MotMetrics::table`]: header, and how a value is formatted
/// (motmetrics' formatters).
enum Format {
    /// `"{:.1%}"`.
    Percent,
    /// `"{:.3f}"`.
    Fixed3,
    /// `"{:d}"`.
    Int,
    /// No formatter (num_fragmentations): pandas puts a space before the number and before
    /// the header of numeric columns.
    PandasInt,
}

impl MotMetrics {
    /// Every metric by motmetrics' name; NaN and infinities (divisions by zero) are null.
    pub fn to_json(&self) -> Json {
        let float = |v: f64| if v.is_finite() { json!(v) } else { Json::Null };
        json!({
            "num_frames": self.num_frames,
            "num_objects": self.num_objects,
            "num_predictions": self.num_predictions,
            "num_matches": self.num_matches,
            "num_switches": self.num_switches,
            "num_transfer": self.num_transfer,
            "num_ascend": self.num_ascend,
            "num_migrate": self.num_migrate,
            "num_false_positives": self.num_false_positives,
            "num_misses": self.num_misses,
            "num_fragmentations": self.num_fragmentations,
            "mostly_tracked": self.mostly_tracked,
            "partially_tracked": self.partially_tracked,
            "mostly_lost": self.mostly_lost,
            "mota": float(self.mota),
            "motp": float(self.motp),
            "idf1": float(self.idf1),
            "idp": float(self.idp),
            "idr": float(self.idr),
            "idtp": float(self.idtp),
            "idfp": float(self.idfp),
            "idfn": float(self.idfn),
            "precision": float(self.precision),
            "recall": float(self.recall),
            "num_unique_objects": self.num_unique_objects,
        })
    }

    /// The summary motmetrics prints (`render_summary` of the MOTChallenge metrics with
    /// motmetrics' formatters and MOTChallenge names), character for character: a header
    /// line and one row named `name`, without a trailing newline.
    pub fn table(&self, name: &str) -> String {
        use Format::*;
        let n = |v: u64| v as f64;
        let columns: [(&str, f64, Format); 18] = [
            ("IDF1", self.idf1, Percent),
            ("IDP", self.idp, Percent),
            ("IDR", self.idr, Percent),
            ("Rcll", self.recall, Percent),
            ("Prcn", self.precision, Percent),
            ("GT", n(self.num_unique_objects), Int),
            ("MT", n(self.mostly_tracked), Int),
            ("PT", n(self.partially_tracked), Int),
            ("ML", n(self.mostly_lost), Int),
            ("FP", n(self.num_false_positives), Int),
            ("FN", n(self.num_misses), Int),
            ("IDs", n(self.num_switches), Int),
            ("FM", n(self.num_fragmentations), PandasInt),
            ("MOTA", self.mota, Percent),
            ("MOTP", self.motp, Fixed3),
            ("IDt", n(self.num_transfer), Int),
            ("IDa", n(self.num_ascend), Int),
            ("IDm", n(self.num_migrate), Int),
        ];
        let width = name.chars().count();
        let mut header = " ".repeat(width);
        let mut row = name.to_string();
        for (title, value, format) in columns {
            let (title, cell) = match format {
                // pandas prints NaN as "NaN" without calling the formatter; Python formats
                // infinities as "inf" and "-inf".
                _ if value.is_nan() => (title.to_string(), "NaN".to_string()),
                Percent if value.is_infinite() => (title.to_string(), format!("{value}%")),
                Fixed3 if value.is_infinite() => (title.to_string(), format!("{value}")),
                Percent => (title.to_string(), format!("{:.1}%", value * 100.0)),
                Fixed3 => (title.to_string(), format!("{value:.3}")),
                Int => (title.to_string(), format!("{value}")),
                PandasInt => (format!(" {title}"), format!(" {value}")),
            };
            let w = title.chars().count().max(cell.chars().count());
            header.push_str(&format!(" {title:>w$}"));
            row.push_str(&format!(" {cell:>w$}"));
        }
        format!("{header}\n{row}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/mot")
    }

    /// A metric of expected.json: a number, or "nan" / "inf" / "-inf".
    fn expected_float(v: &Json) -> f64 {
        match v {
            Json::String(s) => match s.as_str() {
                "nan" => f64::NAN,
                "inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                other => panic!("unexpected {other}"),
            },
            v => v.as_f64().expect("a number"),
        }
    }

    /// Every case of expected.json (written by motmetrics, see
    /// tests/reference/make_mot_fixtures.py) gives the same metrics, to 1e-9, and the same
    /// summary table.
    #[test]
    fn matches_motmetrics_on_every_fixture() {
        let dir = fixtures();
        let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
        let doc: Json = serde_json::from_str(&text).unwrap();
        let cases = doc["cases"].as_object().unwrap();
        assert!(cases.len() >= 10);
        let mut worst: HashMap<String, f64> = HashMap::new();
        for (name, want) in cases {
            let gt = read_mot_file(&dir.join(name).join("gt.txt")).unwrap();
            let pred = read_mot_file(&dir.join(name).join("test.txt")).unwrap();
            let got = evaluate(&gt, &pred).unwrap();
            let got_json = got.to_json();
            let got_floats = [
                ("mota", got.mota),
                ("motp", got.motp),
                ("idf1", got.idf1),
                ("idp", got.idp),
                ("idr", got.idr),
                ("idtp", got.idtp),
                ("idfp", got.idfp),
                ("idfn", got.idfn),
                ("precision", got.precision),
                ("recall", got.recall),
            ];
            for metric in doc["metrics"].as_array().unwrap() {
                let metric = metric.as_str().unwrap();
                let expected = &want[metric];
                if let Some((_, g)) = got_floats.iter().find(|(m, _)| *m == metric) {
                    let e = expected_float(expected);
                    if e.is_finite() {
                        let diff = (g - e).abs();
                        assert!(diff <= 1e-9, "{name} {metric}: {g} vs motmetrics {e}");
                        let w = worst.entry(metric.to_string()).or_default();
                        *w = w.max(diff);
                    } else {
                        assert!(
                            g.is_nan() && e.is_nan() || *g == e,
                            "{name} {metric}: {g} vs motmetrics {e}"
                        );
                        assert!(got_json[metric].is_null());
                    }
                } else {
                    assert_eq!(
                        got_json[metric].as_u64(),
                        Some(expected.as_u64().unwrap()),
                        "{name} {metric}"
                    );
                }
            }
            assert_eq!(got.table(name), want["table"].as_str().unwrap(), "{name}");
        }
        let mut worst: Vec<_> = worst.into_iter().collect();
        worst.sort_by(|a, b| a.0.cmp(&b.0));
        eprintln!("largest difference per metric: {worst:?}");
    }

    #[test]
    fn a_bad_number_names_the_file_line_column_and_field() {
        let path = Path::new("dir/test.txt");
        let text = "1,1,10,10,20,20,1\n\n3,x7,10,10,20,20,1\n";
        let err = parse_mot_text(text, path).unwrap_err();
        match &err {
            MotError::Parse {
                line,
                column,
                field,
                ..
            } => assert_eq!((*line, *column, *field), (3, 3, 2)),
            other => panic!("{other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("\"dir/test.txt\":3:3"), "{msg}");
        assert!(
            msg.contains("field 2 (id)") && msg.contains("\"x7\""),
            "{msg}"
        );
    }

    #[test]
    fn malformed_lines_are_errors() {
        let path = Path::new("p.txt");
        let check =
            |text: &str, line: usize, field: usize, words: &str| match parse_mot_text(text, path) {
                Err(MotError::Parse {
                    line: l,
                    field: f,
                    problem,
                    ..
                }) => {
                    assert_eq!((l, f), (line, field), "{text:?}: {problem}");
                    assert!(problem.contains(words), "{text:?}: {problem}");
                }
                other => panic!("{text:?}: {other:?}"),
            };
        check("1,2,3,4,5\n", 1, 0, "at least 6");
        check("1,2,3,4,5,6,7,8,9,10,11\n", 1, 11, "at most 10");
        check("1, 2, 3, 4, 5, 6, 1\n", 1, 2, "empty");
        check("1,2,3,inf,5,6,1\n", 1, 4, "finite");
        check("1,2,3,4,5,6,conf\n", 1, 7, "not a number");
        // Non-UTF-8 bytes in a file.
        let dir = std::env::temp_dir().join(format!("mot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("latin1.txt");
        std::fs::write(&file, b"1,1,1,1,1,1,1\n1,\xe9,1,1,1,1,1\n").unwrap();
        match read_mot_file(&file) {
            Err(MotError::Parse { line: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn separators_and_optional_fields_parse_as_motmetrics_reads_them() {
        let text = "  1\t2   3,4,5,6  \n\r\n2,3,1.5,2,3,4,,-1,-1,-1\n3,4,1,2,3,4,nan,\n4 5 1 2 3 4 -1e0 a b\n";
        let rows = parse_mot_text(text, Path::new("x")).unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(
            (rows[0].frame, rows[0].id, rows[0].left, rows[0].height),
            (1.0, 2.0, 3.0, 6.0)
        );
        assert!(rows[0].conf.is_nan() && rows[1].conf.is_nan() && rows[2].conf.is_nan());
        assert_eq!((rows[1].left, rows[3].conf), (1.5, -1.0));
    }

    #[test]
    fn missing_file_is_named_and_empty_file_has_no_rows() {
        let missing = fixtures().join("no-such-case/gt.txt");
        let err = read_mot_file(&missing).unwrap_err();
        assert!(matches!(err, MotError::Io { .. }));
        assert!(err.to_string().contains("no-such-case/gt.txt"), "{err}");

        let empty = fixtures().join("empty_prediction/test.txt");
        assert_eq!(read_mot_file(&empty).unwrap(), vec![]);
        assert_eq!(parse_mot_text("\n  \n", Path::new("x")).unwrap(), vec![]);
    }

    #[test]
    fn evaluate_rejects_non_finite_rows() {
        let row = MotRow {
            frame: 1.0,
            id: 1.0,
            left: 0.0,
            top: 0.0,
            width: f64::NAN,
            height: 1.0,
            conf: 1.0,
        };
        let err = evaluate(&[], &[row]).unwrap_err();
        assert!(err.to_string().contains("prediction row 0: width"), "{err}");
    }

    /// motmetrics 1.4.0 raises `KeyError: 3` on this ground truth (id 3 twice in frame 1,
    /// both rows matched).
    #[test]
    fn repeated_new_object_is_an_error_where_motmetrics_fails() {
        let text = "1,3,0,5,10,10,1\n1,3,5,5,10,10,0\n";
        let gt = parse_mot_text(text, Path::new("gt")).unwrap();
        let pred = parse_mot_text("1,1,0,5,10,10,1\n1,2,5,5,10,10,1\n", Path::new("p")).unwrap();
        let err = evaluate(&gt, &pred).unwrap_err();
        assert!(
            matches!(err, MotError::RepeatedNewObject { frame, id } if frame == 1.0 && id == 3.0),
            "{err}"
        );
        // In a later frame motmetrics copes with the repeat (a switch), and so does this.
        let text = "1,3,0,5,10,10,1\n2,3,0,5,10,10,1\n2,3,5,5,10,10,0\n";
        let gt = parse_mot_text(text, Path::new("gt")).unwrap();
        let pred = "1,1,0,5,10,10,1\n2,1,0,5,10,10,1\n2,2,5,5,10,10,1\n";
        let pred = parse_mot_text(pred, Path::new("p")).unwrap();
        let m = evaluate(&gt, &pred).unwrap();
        assert_eq!((m.num_matches, m.num_switches), (2, 1));
    }

    #[test]
    fn pairwise_sum_groups_like_numpy() {
        // 1e16 + 1 + 1 + ... : plain left-to-right summation loses every 1; numpy's eight
        // accumulators keep those in the other lanes. The expected values are numpy's
        // `np.add.reduce` on the same arrays.
        let mut a = vec![1.0; 20];
        a[0] = 1e16;
        assert_eq!(pairwise_sum(&a), 1e16 + 16.0);
        // Blocks of 128 split in halves: numpy gives 6.282663880299504 where a plain loop
        // gives 6.282663880299502.
        let b: Vec<f64> = (0..300).map(|i| 1.0 / (i + 1) as f64).collect();
        assert_eq!(pairwise_sum(&b), 6.282663880299504);
        assert_eq!(pairwise_sum(&[]), 0.0);
    }

    #[test]
    fn iou_distance_of_half_overlap_is_exactly_one_half() {
        let row = |left, top, width, height| MotRow {
            frame: 1.0,
            id: 1.0,
            left,
            top,
            width,
            height,
            conf: 1.0,
        };
        assert_eq!(
            iou_distance(&row(0.0, 0.0, 2.0, 1.0), &row(0.0, 0.0, 1.0, 1.0), 0.5),
            Some(0.5)
        );
        assert_eq!(
            iou_distance(&row(0.0, 0.0, 3.0, 1.0), &row(0.0, 0.0, 1.0, 1.0), 0.5),
            None
        );
        // Touching boxes: no intersection, distance 1.
        assert_eq!(
            iou_distance(&row(0.0, 0.0, 1.0, 1.0), &row(1.0, 0.0, 1.0, 1.0), 1.0),
            Some(1.0)
        );
    }
}
