//! Video Panoptic Quality (VPQ) as VPSNet's official evaluation computes it (mcahny/vps
//! `tools/eval_vpq.py` @ 138503ed, "VPQ evaluation code by tube (video segment) matching").
//!
//! # Layout (the script's `--pan_gt_json_file`, `--truth_dir`, `--submit_dir`)
//!
//! - `gt_json`: a COCO panoptic JSON with `images` (`id`: a **string**, `file_name`),
//!   `annotations` (`segments_info` with `id`, `category_id`, `iscrowd`, `area`) and
//!   `categories` (`id`, `name`, `isthing`).
//! - `truth_dir/<name>.png`: the ground-truth PNGs, where `<name>` is an image's `file_name`
//!   with `_leftImg8bit.png` replaced by `_gtFine_color.png` (Cityscapes-VPS) and
//!   `_newImg8bit.png` by `_final_mask.png` (VIPER).
//! - `submit_dir/pred.json`: the predictions' `annotations` (`segments_info` with `id`,
//!   `category_id`); `submit_dir/pan_pred/<image id>.png`: the predicted PNGs.
//!
//! Pixel ids are `R + 256·G + 256²·B`; id 0 is VOID.
//!
//! # How frames become videos and windows (the script's `main`)
//!
//! - The i-th frame is the i-th *sorted* ground-truth PNG name, the i-th ground-truth and
//!   predicted annotation and the i-th image (its predicted PNG) in JSON order. The script
//!   sorts only the ground-truth PNG names, so a ground truth whose `images` are not in
//!   file-name order pairs PNGs with the wrong annotations: that is reproduced.
//! - The frames are cut into `len / frames_per_video` videos (6 annotated frames for
//!   Cityscapes-VPS) as `np.array_split` cuts them: with a remainder, the first videos get
//!   one frame more.
//! - For a window length `nframes` (1..=4 by default: k = 5·(nframes - 1) = 0, 5, 10, 15,
//!   since Cityscapes-VPS annotates every 5th frame), every run of `nframes` consecutive
//!   frames of a video is one window. Its ground-truth and predicted segments are tubes: a
//!   tube is every pixel carrying one id in any frame of the window, so a prediction must
//!   keep its id across the window to match. A tube's area is the sum of its frames'
//!   areas; its category and crowd flag are those of the first frame that has it.
//!
//! # Matching a window (as panopticapi matches an image, on tubes)
//!
//! - predicted areas come from the PNGs, ground-truth areas from the JSON;
//! - a ground-truth and a predicted tube of the same category match when
//!   `intersection / (pred_area + gt_area - intersection - pred ∩ VOID) > 0.5`, unless the
//!   ground truth is a crowd;
//! - unmatched non-crowd ground truths are false negatives; an unmatched prediction is a
//!   false positive unless more than half of it lies on VOID and on the crowd tube of its
//!   category (the last one in first-appearance order);
//! - the counts (and the IoUs, summed per video in the script's order) add up over all
//!   windows of all videos, then PQ, SQ, RQ per category and their means over All, Things
//!   and Stuff are panopticapi's. A window length's VPQ is `100 · pq`; the final VPQ is the
//!   mean over the window lengths.
//!
//! # Where the script differs from panopticapi (and this module with it)
//!
//! - annotations are paired by position, not by `image_id`; PNGs are found as above, not by
//!   the annotations' `file_name`;
//! - a segment id listed twice in one frame's `segments_info` is one segment whose areas add
//!   up, with the first entry's category (panopticapi keeps the last entry);
//! - an IoU above 1 (a ground-truth `area` smaller than its pixels) stops the script
//!   (`assert iou <= 1.0`): it is an error here.
//!
//! Where the script crashes or silently truncates, this module returns an error instead:
//! different numbers of images, ground-truth annotations and predicted annotations (the
//! script `zip`s them to the shortest), fewer frames than one video, a window length of 0
//! or longer than every video (the script divides by zero), an image id that is not a
//! string. Where the script divides by zero for a group without any segment (say, no stuff
//! at all), its values are 0 with `n = 0`, as in [`crate::pq`]. Every frame's prediction
//! is checked up front (segments in the PNG but not the JSON and the reverse, unknown
//! categories), as the script's first pass (nframes = 1) checks every frame.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde_json::Value as Json;

use crate::pq::{self, Category, CategoryStat, IdRows, PairCounter, PqError};
use crate::pq::{OFFSET, VOID};

/// The script's window lengths, in annotated frames: k = 0, 5, 10, 15.
pub const DEFAULT_NFRAMES: [usize; 4] = [1, 2, 3, 4];
/// The script's `nframes_per_video`: Cityscapes-VPS annotates 6 frames of each video.
pub const DEFAULT_FRAMES_PER_VIDEO: usize = 6;
/// Cityscapes-VPS annotates every 5th frame, so a window of n annotated frames spans
/// k = 5·(n - 1) frames (the `k` of `vpq-<k>.txt`).
pub const ANNOTATED_FRAME_STEP: usize = 5;

/// What went wrong, with the file (and the frame or segment) at fault.
#[derive(Debug, thiserror::Error)]
pub enum VpqError {
    /// A file could not be read or decoded, or a JSON field has the wrong type.
    #[error(transparent)]
    Read(#[from] PqError),
    #[error("\"{}\": {message}", file.display())]
    Invalid { file: PathBuf, message: String },
    #[error("the {which} PNG of frame {frame} (image \"{image_id}\") does not exist: \"{}\"", path.display())]
    MissingFrame {
        which: &'static str,
        frame: usize,
        image_id: String,
        path: PathBuf,
    },
    #[error(
        "the frame counts differ: \"{}\" has {images} images and {gt_annotations} annotations, \
         \"{}\" has {pred_annotations} annotations (frames are paired by position)",
        gt_json.display(), pred_json.display()
    )]
    FrameCounts {
        gt_json: PathBuf,
        images: usize,
        gt_annotations: usize,
        pred_json: PathBuf,
        pred_annotations: usize,
    },
    #[error("\"{}\" has {frames} frames, fewer than one video of {frames_per_video}", gt_json.display())]
    TooFewFrames {
        gt_json: PathBuf,
        frames: usize,
        frames_per_video: usize,
    },
    #[error("\"{}\" is {}x{} but \"{}\" is {}x{}", first.display(), first_size.1, first_size.0, second.display(), second_size.1, second_size.0)]
    SizeMismatch {
        first: PathBuf,
        first_size: (usize, usize),
        second: PathBuf,
        second_size: (usize, usize),
    },
    #[error(
        "\"{}\": in the window of frames {frames:?}, ground-truth segment {segment} has IoU \
         {iou} with predicted segment {pred} (more than 1: its \"area\" is smaller than its pixels)",
        gt_json.display()
    )]
    InvalidIou {
        gt_json: PathBuf,
        frames: Range<usize>,
        segment: u32,
        pred: u32,
        iou: f64,
    },
    #[error("invalid VPQ options: {0}")]
    Options(String),
}

/// How the frames are cut into videos and windows; the default is the script's.
#[derive(Clone, Debug, PartialEq)]
pub struct VpqOptions {
    /// Annotated frames per video; the frames are cut into `frames / frames_per_video`
    /// videos as `np.array_split` cuts them.
    pub frames_per_video: usize,
    /// The window lengths in annotated frames; the final VPQ is their mean.
    pub nframes: Vec<usize>,
}

impl Default for VpqOptions {
    fn default() -> Self {
        VpqOptions {
            frames_per_video: DEFAULT_FRAMES_PER_VIDEO,
            nframes: DEFAULT_NFRAMES.to_vec(),
        }
    }
}

pub use crate::pq::{Groups, PerClass};

/// The results of one window length (one `vpq-<k>.txt`).
#[derive(Clone, Debug)]
pub struct WindowResults {
    /// Annotated frames per window.
    pub nframes: usize,
    /// `ANNOTATED_FRAME_STEP · (nframes - 1)`.
    pub k: usize,
    /// All, Things, Stuff: the means and the number of categories averaged.
    pub groups: Groups,
    /// Every category of the ground truth, in its order, with the counts behind it.
    pub per_class: PerClass,
}

/// `vpq_compute` for each window length, and the means the script writes to `vpq-final.txt`.
#[derive(Clone, Debug)]
pub struct VpqResults {
    pub windows: Vec<WindowResults>,
    /// Means over the window lengths of `100 · pq` of All, Things, Stuff.
    pub vpq_all: f64,
    pub vpq_thing: f64,
    pub vpq_stuff: f64,
    pub frames: usize,
    /// The number of frames of each video.
    pub videos: Vec<usize>,
}

/// A segment of one frame, or a tube of one window.
#[derive(Clone, Copy, Debug)]
struct Segment {
    category: i64,
    iscrowd: bool,
    area: u64,
}

/// Where one frame's files are.
struct FrameFiles<'a> {
    image_id: String,
    gt_png: PathBuf,
    pred_png: PathBuf,
    gt_ann: &'a Json,
    pred_ann: &'a Json,
}

/// What a window needs of one frame: the pixel pairs, and the segments of both sides in
/// JSON order (repeated ids merged).
struct Frame {
    gt_png: PathBuf,
    size: (usize, usize),
    /// `(gt·OFFSET + pred, pixels)`.
    pairs: Vec<(u64, u64)>,
    gt: Vec<(u32, Segment)>,
    /// Areas counted from the PNG.
    pred: Vec<(u32, Segment)>,
}

/// Python's `x == 1` on a JSON value (`1`, `1.0` and `true` all are).
fn is_one(v: &Json) -> bool {
    v.as_f64() == Some(1.0) || v.as_bool() == Some(true)
}

/// A `segments_info` as the script's per-frame dicts hold it: a repeated id is one segment
/// at the first entry's place, with its category and crowd flag and the areas added up.
/// `with_area`: the ground truth's areas are its JSON's, so they must be there.
fn merged_segments(
    ann: &Json,
    with_area: bool,
    file: &Path,
    what: &str,
) -> Result<Vec<(u32, Segment)>, VpqError> {
    let invalid = |message: String| VpqError::Invalid {
        file: file.to_path_buf(),
        message: format!("{what}: {message}"),
    };
    let list = ann["segments_info"]
        .as_array()
        .ok_or_else(|| invalid("no \"segments_info\" list".into()))?;
    let mut out: Vec<(u32, Segment)> = Vec::with_capacity(list.len());
    let mut index: HashMap<u32, usize> = HashMap::new();
    for s in list {
        let id = pq::int(s, "id", what)?;
        // Segments live in 24-bit PNG ids: any other id could never be matched.
        let id = u32::try_from(id)
            .ok()
            .filter(|&v| u64::from(v) < OFFSET)
            .ok_or_else(|| invalid(format!("segment id {id} is not a 24-bit PNG id")))?;
        let area = if with_area {
            s["area"].as_u64().ok_or_else(|| {
                invalid(format!(
                    "segment {id} has no integer \"area\" (ground-truth areas come from the JSON)"
                ))
            })?
        } else {
            0
        };
        match index.get(&id) {
            Some(&i) => out[i].1.area = out[i].1.area.saturating_add(area),
            None => {
                index.insert(id, out.len());
                let segment = Segment {
                    category: pq::int(s, "category_id", what)?,
                    iscrowd: is_one(&s["iscrowd"]),
                    area,
                };
                out.push((id, segment));
            }
        }
    }
    Ok(out)
}

/// Reads one frame: counts its pixel pairs and checks its prediction as the script does
/// (every PNG id but VOID in the JSON and the reverse, known categories).
fn read_frame(frame: usize, f: &FrameFiles, known: &HashSet<i64>) -> Result<Frame, VpqError> {
    let gt_bytes = pq::read_png(&f.gt_png)?;
    let pred_bytes = pq::read_png(&f.pred_png)?;
    let (mut gt_rows, gt_size) = IdRows::open(&gt_bytes, &f.gt_png)?;
    let (mut pred_rows, pred_size) = IdRows::open(&pred_bytes, &f.pred_png)?;
    if gt_size != pred_size {
        return Err(VpqError::SizeMismatch {
            first: f.gt_png.clone(),
            first_size: gt_size,
            second: f.pred_png.clone(),
            second_size: pred_size,
        });
    }
    let (h, w) = gt_size;
    let mut counter = PairCounter::default();
    for _ in 0..h {
        let g = gt_rows.next_row(w, &f.gt_png)?;
        let p = pred_rows.next_row(w, &f.pred_png)?;
        counter.add_row(g, p, w);
    }
    let counts = counter.finish();
    gt_rows.finish(&f.gt_png)?;
    pred_rows.finish(&f.pred_png)?;
    let what = |side: &str| {
        format!(
            "the {side} annotation of frame {frame} (image \"{}\")",
            f.image_id
        )
    };
    let gt = merged_segments(f.gt_ann, true, &f.gt_png, &what("ground-truth"))?;
    let mut pred = merged_segments(f.pred_ann, false, &f.pred_png, &what("predicted"))?;

    // The predicted areas are the PNG's; ids in ascending order, as np.unique gives them,
    // so the first error the script would raise is the one returned.
    let mut png_area: BTreeMap<u32, u64> = BTreeMap::new();
    for (&key, &n) in &counts {
        *png_area.entry((key % OFFSET) as u32).or_default() += n;
    }
    let index: HashMap<u32, usize> = pred
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i))
        .collect();
    let mut in_png = vec![false; pred.len()];
    let invalid = |message: String| VpqError::Invalid {
        file: f.pred_png.clone(),
        message: format!("frame {frame} (image \"{}\"): {message}", f.image_id),
    };
    for (&id, &area) in &png_area {
        let Some(&i) = index.get(&id) else {
            if id == VOID {
                continue;
            }
            return Err(invalid(format!(
                "segment with ID {id} is presented in PNG and not presented in JSON"
            )));
        };
        pred[i].1.area = area;
        in_png[i] = true;
        if !known.contains(&pred[i].1.category) {
            return Err(invalid(format!(
                "segment with ID {id} has unknown category_id {}",
                pred[i].1.category
            )));
        }
    }
    let mut missing: Vec<u32> = pred
        .iter()
        .zip(&in_png)
        .filter(|(_, &seen)| !seen)
        .map(|((id, _), _)| *id)
        .collect();
    if !missing.is_empty() {
        missing.sort_unstable();
        return Err(invalid(format!(
            "the segment IDs {missing:?} are presented in JSON and not presented in PNG"
        )));
    }
    Ok(Frame {
        gt_png: f.gt_png.clone(),
        size: gt_size,
        pairs: counts.into_iter().collect(),
        gt,
        pred,
    })
}

/// The tubes of a window: each id once, in first-appearance order (frame by frame, JSON
/// order within a frame), with the first frame's category and crowd flag and the areas
/// of all frames added up.
fn tubes<'a>(
    frames: impl Iterator<Item = &'a [(u32, Segment)]>,
) -> (Vec<(u32, Segment)>, HashMap<u32, usize>) {
    let mut order: Vec<(u32, Segment)> = Vec::new();
    let mut index: HashMap<u32, usize> = HashMap::new();
    for segments in frames {
        for &(id, s) in segments {
            match index.get(&id) {
                Some(&i) => order[i].1.area = order[i].1.area.saturating_add(s.area),
                None => {
                    index.insert(id, order.len());
                    order.push((id, s));
                }
            }
        }
    }
    (order, index)
}

/// Matches one window's tubes and adds its counts to `stats` (`frames`: the window's frame
/// numbers, for messages).
fn add_window(
    window: &[Frame],
    frames: Range<usize>,
    gt_json: &Path,
    stats: &mut HashMap<i64, CategoryStat>,
) -> Result<(), VpqError> {
    let first = &window[0];
    // The script stacks the window's frames into one array, so they must be one size.
    if let Some(other) = window.iter().find(|f| f.size != first.size) {
        return Err(VpqError::SizeMismatch {
            first: first.gt_png.clone(),
            first_size: first.size,
            second: other.gt_png.clone(),
            second_size: other.size,
        });
    }
    // Counting the pixel pairs of the stacked frames is adding the frames' counts; the
    // BTreeMap walks them in np.unique's ascending order, the order the IoUs are summed in.
    let mut pairs: BTreeMap<u64, u64> = BTreeMap::new();
    for f in window {
        for &(key, n) in &f.pairs {
            *pairs.entry(key).or_default() += n;
        }
    }
    let pair = |g: u32, p: u32| {
        pairs
            .get(&(u64::from(g) * OFFSET + u64::from(p)))
            .copied()
            .unwrap_or(0)
    };
    let (gt, gt_index) = tubes(window.iter().map(|f| f.gt.as_slice()));
    let (pred, pred_index) = tubes(window.iter().map(|f| f.pred.as_slice()));

    let mut gt_matched = HashSet::new();
    let mut pred_matched = HashSet::new();
    for (&key, &intersection) in &pairs {
        let (g, p) = ((key / OFFSET) as u32, (key % OFFSET) as u32);
        let (Some(&gi), Some(&pi)) = (gt_index.get(&g), pred_index.get(&p)) else {
            continue;
        };
        let (gs, ps) = (gt[gi].1, pred[pi].1);
        if gs.iscrowd || gs.category != ps.category {
            continue;
        }
        // i128: JSON areas are the user's and may be anything up to u64::MAX.
        let union = i128::from(ps.area) + i128::from(gs.area)
            - i128::from(intersection)
            - i128::from(pair(VOID, p));
        let iou = intersection as f64 / union as f64;
        // The script asserts `iou <= 1.0` (a zero union gives inf and fails it too; NaN
        // cannot occur, the intersection is at least one pixel, but would fail it as well).
        if iou > 1.0 || iou.is_nan() {
            return Err(VpqError::InvalidIou {
                gt_json: gt_json.to_path_buf(),
                frames,
                segment: g,
                pred: p,
                iou,
            });
        }
        if iou > 0.5 {
            let s = stats.entry(gs.category).or_default();
            s.tp += 1;
            s.iou += iou;
            gt_matched.insert(g);
            pred_matched.insert(p);
        }
    }
    // First-appearance order, as the script's dict: the last crowd tube of a category is
    // the one whose pixels excuse a false positive.
    let mut crowd_of: HashMap<i64, u32> = HashMap::new();
    for &(id, gs) in &gt {
        if gt_matched.contains(&id) {
            continue;
        }
        if gs.iscrowd {
            crowd_of.insert(gs.category, id);
            continue;
        }
        stats.entry(gs.category).or_default().fn_ += 1;
    }
    for &(id, ps) in &pred {
        if pred_matched.contains(&id) {
            continue;
        }
        let mut ignored = pair(VOID, id);
        if let Some(&crowd) = crowd_of.get(&ps.category) {
            ignored += pair(crowd, id);
        }
        // Every predicted tube has pixels (checked per frame), so the area is not 0.
        if ignored as f64 / ps.area as f64 > 0.5 {
            continue;
        }
        stats.entry(ps.category).or_default().fp += 1;
    }
    Ok(())
}

/// `np.array_split` of `n` frames into `parts`: the first `n % parts` get one more.
fn split_videos(n: usize, parts: usize) -> Vec<Range<usize>> {
    let (base, extra) = (n / parts, n % parts);
    let mut start = 0;
    (0..parts)
        .map(|i| {
            let len = base + usize::from(i < extra);
            start += len;
            start - len..start
        })
        .collect()
}

/// The categories as the script's dict `{el['id']: el}` holds them: a repeated id keeps
/// its first place and takes the last entry's fields.
fn unique_categories(list: Vec<Category>) -> Vec<Category> {
    let mut out: Vec<Category> = Vec::with_capacity(list.len());
    let mut index: HashMap<i64, usize> = HashMap::new();
    for c in list {
        match index.get(&c.id) {
            Some(&i) => out[i] = c,
            None => {
                index.insert(c.id, out.len());
                out.push(c);
            }
        }
    }
    out
}

/// VPQ of the predictions in `submit_dir` (`pred.json`, `pan_pred/`) against the ground
/// truth `gt_json` and its PNGs in `truth_dir`, as `eval_vpq.py --pan_gt_json_file gt_json
/// --truth_dir truth_dir --submit_dir submit_dir` reports it (see the module doc).
pub fn vpq_compute(
    gt_json: &Path,
    truth_dir: &Path,
    submit_dir: &Path,
    options: &VpqOptions,
) -> Result<VpqResults, VpqError> {
    if options.frames_per_video == 0 {
        return Err(VpqError::Options(
            "frames_per_video must be at least 1".into(),
        ));
    }
    if options.nframes.is_empty() || options.nframes.contains(&0) {
        return Err(VpqError::Options(format!(
            "the window lengths must be at least 1 frame, and there must be one (got {:?})",
            options.nframes
        )));
    }
    let pred_json = submit_dir.join("pred.json");
    let pred_dir = submit_dir.join("pan_pred");
    let gt = pq::read_json(gt_json)?;
    let pred = pq::read_json(&pred_json)?;
    let categories = unique_categories(pq::categories_of(&gt, gt_json)?);
    let known: HashSet<i64> = categories.iter().map(|c| c.id).collect();
    let list = |doc: &Json, key: &str, file: &Path| -> Result<Vec<Json>, VpqError> {
        doc[key]
            .as_array()
            .cloned()
            .ok_or_else(|| VpqError::Invalid {
                file: file.to_path_buf(),
                message: format!("no \"{key}\" list"),
            })
    };
    let images = list(&gt, "images", gt_json)?;
    let gt_anns = list(&gt, "annotations", gt_json)?;
    let pred_anns = list(&pred, "annotations", &pred_json)?;
    if images.len() != gt_anns.len() || gt_anns.len() != pred_anns.len() {
        return Err(VpqError::FrameCounts {
            gt_json: gt_json.to_path_buf(),
            images: images.len(),
            gt_annotations: gt_anns.len(),
            pred_json,
            pred_annotations: pred_anns.len(),
        });
    }
    let n = images.len();
    let video_count = n / options.frames_per_video;
    if video_count == 0 {
        return Err(VpqError::TooFewFrames {
            gt_json: gt_json.to_path_buf(),
            frames: n,
            frames_per_video: options.frames_per_video,
        });
    }
    let videos = split_videos(n, video_count);
    let longest = videos.iter().map(|v| v.len()).max().unwrap_or(0);
    if let Some(&too_long) = options.nframes.iter().find(|&&k| k > longest) {
        return Err(VpqError::Options(format!(
            "no window of {too_long} frames fits in a video of at most {longest} frames"
        )));
    }
    for (dir, what) in [
        (truth_dir, "ground-truth"),
        (pred_dir.as_path(), "prediction"),
    ] {
        if !dir.is_dir() {
            return Err(VpqError::Invalid {
                file: dir.to_path_buf(),
                message: format!("the {what} folder does not exist"),
            });
        }
    }

    let image_field = |i: usize, key: &str| -> Result<String, VpqError> {
        images[i][key]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| VpqError::Invalid {
                file: gt_json.to_path_buf(),
                message: format!(
                    "image {i} has {key} {} (a string is needed: the PNGs are named after it)",
                    images[i][key]
                ),
            })
    };
    let mut gt_names = (0..n)
        .map(|i| {
            Ok(image_field(i, "file_name")?
                .replace("_newImg8bit.png", "_final_mask.png")
                .replace("_leftImg8bit.png", "_gtFine_color.png"))
        })
        .collect::<Result<Vec<String>, VpqError>>()?;
    // Sorted apart from the annotations, as the script does (byte order is Python's code
    // point order for UTF-8).
    gt_names.sort();
    let files: Vec<FrameFiles> = (0..n)
        .map(|i| {
            let image_id = image_field(i, "id")?;
            Ok(FrameFiles {
                gt_png: truth_dir.join(&gt_names[i]),
                pred_png: pred_dir.join(format!("{image_id}.png")),
                image_id,
                gt_ann: &gt_anns[i],
                pred_ann: &pred_anns[i],
            })
        })
        .collect::<Result<_, VpqError>>()?;
    // The script loads every ground-truth PNG, then every predicted one: a missing file is
    // reported in that order.
    for which in ["ground-truth", "predicted"] {
        for (frame, f) in files.iter().enumerate() {
            let path = if which == "ground-truth" {
                &f.gt_png
            } else {
                &f.pred_png
            };
            if !path.exists() {
                return Err(VpqError::MissingFrame {
                    which,
                    frame,
                    image_id: f.image_id.clone(),
                    path: path.clone(),
                });
            }
        }
    }
    // Frames are read in parallel; the first failing frame's error is returned.
    let frames: Vec<Frame> = files
        .par_iter()
        .enumerate()
        .map(|(i, f)| read_frame(i, f, &known))
        .collect::<Vec<_>>()
        .into_iter()
        .collect::<Result<_, _>>()?;

    let mut windows = Vec::with_capacity(options.nframes.len());
    for &nframes in &options.nframes {
        let mut total: HashMap<i64, CategoryStat> = HashMap::new();
        for video in &videos {
            // The script sums each video's counts (IoUs in window order) before adding
            // them to the total, so the float sums are grouped the same way here.
            let mut stats: HashMap<i64, CategoryStat> = HashMap::new();
            for (offset, window) in frames[video.clone()].windows(nframes).enumerate() {
                let start = video.start + offset;
                add_window(window, start..start + nframes, gt_json, &mut stats)?;
            }
            for (category, s) in stats {
                *total.entry(category).or_default() += s;
            }
        }
        let (groups, per_class) = pq::average(&categories, &total);
        windows.push(WindowResults {
            nframes,
            k: ANNOTATED_FRAME_STEP * (nframes - 1),
            groups,
            per_class,
        });
    }
    let mean = |g: usize| windows.iter().map(|w| w.vpq()[g]).sum::<f64>() / windows.len() as f64;
    Ok(VpqResults {
        vpq_all: mean(0),
        vpq_thing: mean(1),
        vpq_stuff: mean(2),
        frames: n,
        videos: videos.iter().map(|v| v.len()).collect(),
        windows,
    })
}

impl WindowResults {
    /// `100 · pq` of All, Things, Stuff: what the script's `vpq_compute` returns.
    pub fn vpq(&self) -> [f64; 3] {
        let mut out = [0.0; 3];
        for (o, (_, q, _)) in out.iter_mut().zip(&self.groups) {
            *o = 100.0 * q.pq;
        }
        out
    }

    /// As JSON: `nframes`, `k`, `All`, `Things`, `Stuff` (`pq`, `sq`, `rq`, `n`),
    /// `per_class` by category id (`pq`, `sq`, `rq`, `iou`, `tp`, `fp`, `fn`), and
    /// `vpq_all`, `vpq_thing`, `vpq_stuff` (×100).
    pub fn to_json(&self) -> Json {
        let mut out = serde_json::Map::new();
        out.insert("nframes".into(), self.nframes.into());
        out.insert("k".into(), self.k.into());
        for (name, q, n) in &self.groups {
            out.insert(
                (*name).to_string(),
                serde_json::json!({"pq": q.pq, "sq": q.sq, "rq": q.rq, "n": n}),
            );
        }
        let per_class: serde_json::Map<String, Json> = self
            .per_class
            .iter()
            .map(|(c, q, s)| {
                let v = serde_json::json!({"pq": q.pq, "sq": q.sq, "rq": q.rq, "iou": s.iou,
                    "tp": s.tp, "fp": s.fp, "fn": s.fn_});
                (c.id.to_string(), v)
            })
            .collect();
        out.insert("per_class".into(), Json::Object(per_class));
        let [all, thing, stuff] = self.vpq();
        out.insert("vpq_all".into(), all.into());
        out.insert("vpq_thing".into(), thing.into());
        out.insert("vpq_stuff".into(), stuff.into());
        Json::Object(out)
    }

    /// The text of the script's `vpq-<k>.txt`, byte for byte.
    pub fn table(&self) -> String {
        let mut s = "=".repeat(48);
        s.push('\n');
        // The script pads "N\n" as a 5-wide field: the newline is part of the header.
        s.push_str(&format!(
            "{:10}| {:>5}  {:>5}  {:>5} {:>5}",
            "", "PQ", "SQ", "RQ", "N\n"
        ));
        s.push_str(&"-".repeat(38));
        s.push('\n');
        for (name, q, n) in &self.groups {
            s.push_str(&format!(
                "{name:10}| {:5.1}  {:5.1}  {:5.1} {n:5}\n",
                100.0 * q.pq,
                100.0 * q.sq,
                100.0 * q.rq
            ));
        }
        s.push_str(&format!(
            "{:4}| {:>5} {:>5} {:>5} {:>6} {:>7} {:>7} {:>7}\n",
            "IDX", "PQ", "SQ", "RQ", "IoU", "TP", "FP", "FN"
        ));
        // The IoU column is the raw sum of IoUs, not ×100.
        for (c, q, st) in &self.per_class {
            s.push_str(&format!(
                "{:4} | {:5.1} {:5.1} {:5.1} {:6.1} {:7} {:7} {:7}\n",
                c.id,
                100.0 * q.pq,
                100.0 * q.sq,
                100.0 * q.rq,
                st.iou,
                st.tp,
                st.fp,
                st.fn_
            ));
        }
        s
    }
}

impl VpqResults {
    /// As JSON: `windows` (each [`WindowResults::to_json`]), the means `vpq_all`,
    /// `vpq_thing`, `vpq_stuff`, `frames`, and `videos` (frames per video).
    pub fn to_json(&self) -> Json {
        serde_json::json!({
            "windows": self.windows.iter().map(WindowResults::to_json).collect::<Vec<_>>(),
            "vpq_all": self.vpq_all,
            "vpq_thing": self.vpq_thing,
            "vpq_stuff": self.vpq_stuff,
            "frames": self.frames,
            "videos": self.videos,
        })
    }

    /// The text of the script's `vpq-final.txt`, byte for byte.
    pub fn final_text(&self) -> String {
        format!(
            "vpq_all:{:.4}\nvpq_thing:{:.4}\nvpq_stuff:{:.4}\n",
            self.vpq_all, self.vpq_thing, self.vpq_stuff
        )
    }

    /// Every window length's `vpq-<k>.txt` under a heading, then `vpq-final.txt`.
    pub fn table(&self) -> String {
        let mut s = format!("{} frames in {} videos\n", self.frames, self.videos.len());
        for w in &self.windows {
            s.push_str(&format!(
                "\nk = {} (windows of {} annotated frames):\n",
                w.k, w.nframes
            ));
            s.push_str(&w.table());
        }
        s.push('\n');
        s.push_str(&self.final_text());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vpq")
    }

    fn run(case: &Path, nframes: &[usize]) -> Result<VpqResults, VpqError> {
        let options = VpqOptions {
            nframes: nframes.to_vec(),
            ..VpqOptions::default()
        };
        vpq_compute(
            &case.join("panoptic_gt.json"),
            &case.join("panoptic_video"),
            &case.join("submit"),
            &options,
        )
    }

    /// `text` with every non-integer number literal (outside strings) turned into a string,
    /// so that the test parses it with `str::parse` (correctly rounded): serde_json's
    /// default float parser can be an ulp off, which would hide an exact match.
    fn floats_as_strings(text: &str) -> String {
        let mut out = String::with_capacity(text.len() + text.len() / 4);
        let mut chars = text.chars().peekable();
        let (mut in_string, mut escaped) = (false, false);
        while let Some(c) = chars.next() {
            if in_string {
                out.push(c);
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => in_string = false,
                    _ => {}
                }
            } else if c == '-' || c.is_ascii_digit() {
                let mut token = String::from(c);
                while let Some(&d) = chars.peek() {
                    if !(d.is_ascii_digit() || "+-.eE".contains(d)) {
                        break;
                    }
                    token.push(d);
                    chars.next();
                }
                if token.contains(['.', 'e', 'E']) {
                    out.push_str(&format!("\"{token}\""));
                } else {
                    out.push_str(&token);
                }
            } else {
                in_string = c == '"';
                out.push(c);
            }
        }
        out
    }

    /// The largest difference between the expected JSON tree (floats as strings) and the
    /// results (integers must be equal).
    fn diff(want: &Json, got: &Json, at: &str, worst: &mut f64) {
        match (want, got) {
            (Json::Object(w), Json::Object(g)) => {
                for (k, wv) in w {
                    let gv = g.get(k).unwrap_or_else(|| panic!("{at}.{k} is missing"));
                    diff(wv, gv, &format!("{at}.{k}"), worst);
                }
            }
            (Json::String(w), Json::Number(g)) => {
                let w: f64 = w.parse().unwrap();
                let d = (w - g.as_f64().unwrap()).abs();
                assert!(d <= 1e-9, "{at}: want {w}, got {g}");
                *worst = worst.max(d);
            }
            // Python writes an integral 0 where a class has no tp (`else 0`).
            (Json::Number(w), Json::Number(g)) if g.is_f64() => {
                assert_eq!(w.as_f64(), g.as_f64(), "{at}");
            }
            _ => assert_eq!(want, got, "{at}"),
        }
    }

    #[test]
    fn equals_the_official_script_on_the_fixtures() {
        let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
        let expected: Json = serde_json::from_str(&floats_as_strings(&text)).unwrap();
        let mut worst = 0.0f64;
        for (case, want) in expected["cases"].as_object().unwrap() {
            let dir = fixtures().join(case);
            // Every window length the script was run for, one at a time.
            let want_windows = want["windows"].as_array().unwrap();
            let nframes: Vec<usize> = want_windows
                .iter()
                .map(|w| w["nframes"].as_u64().unwrap() as usize)
                .collect();
            let got = run(&dir, &nframes).unwrap();
            assert_eq!(got.windows.len(), want_windows.len());
            for (w, g) in want_windows.iter().zip(&got.windows) {
                let mut w = w.clone();
                let table = w.as_object_mut().unwrap().remove("table").unwrap();
                diff(&w, &g.to_json(), &format!("{case} k={}", g.k), &mut worst);
                assert_eq!(table.as_str().unwrap(), g.table(), "{case} k={}", g.k);
            }
            // main's own run: nframes 1..4 and their means.
            let got = run(&dir, &DEFAULT_NFRAMES).unwrap();
            for key in ["vpq_all", "vpq_thing", "vpq_stuff"] {
                let w: f64 = want[key].as_str().unwrap().parse().unwrap();
                let d = (w - got.to_json()[key].as_f64().unwrap()).abs();
                assert!(d <= 1e-9, "{case} {key}: {d}");
                worst = worst.max(d);
            }
            assert_eq!(want["final"].as_str().unwrap(), got.final_text(), "{case}");
            assert!(got.table().contains(&got.final_text()));
        }
        eprintln!("largest difference from the official script: {worst:e}");
    }

    #[test]
    fn shuffled_case_has_uneven_videos() {
        let got = run(&fixtures().join("shuffled"), &[1]).unwrap();
        assert_eq!((got.frames, got.videos.clone()), (13, vec![7, 6]));
        assert_eq!(split_videos(14, 2), vec![0..7, 7..14]);
        assert_eq!(split_videos(13, 2), vec![0..7, 7..13]);
        assert_eq!(split_videos(12, 2), vec![0..6, 6..12]);
    }

    /// A scratch copy of the main fixture case.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("vpq-test-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            copy_dir(&fixtures().join("main"), &dir);
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    fn edit_json(path: &Path, edit: impl FnOnce(&mut Json)) {
        let mut doc: Json = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        edit(&mut doc);
        std::fs::write(path, serde_json::to_vec(&doc).unwrap()).unwrap();
    }

    #[test]
    fn a_missing_frame_png_is_named() {
        let s = Scratch::new("missing-gt");
        let gt =
            s.0.join("panoptic_video/0001_0003_frankfurt_000000_000010_gtFine_color.png");
        std::fs::remove_file(&gt).unwrap();
        let e = run(&s.0, &[1]).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, VpqError::MissingFrame { frame: 2, .. }),
            "{msg}"
        );
        assert!(
            msg.contains(&gt.display().to_string()) && msg.contains("ground-truth"),
            "{msg}"
        );

        let s = Scratch::new("missing-pred");
        let pred = s.0.join("submit/pan_pred/0002_0004_viper_00015.png");
        std::fs::remove_file(&pred).unwrap();
        let msg = run(&s.0, &[1]).unwrap_err().to_string();
        assert!(
            msg.contains(&pred.display().to_string()) && msg.contains("frame 9"),
            "{msg}"
        );
    }

    #[test]
    fn mismatched_frame_counts_are_named() {
        let s = Scratch::new("counts");
        let pred_json = s.0.join("submit/pred.json");
        edit_json(&pred_json, |d| {
            d["annotations"].as_array_mut().unwrap().pop();
        });
        let msg = run(&s.0, &[1]).unwrap_err().to_string();
        assert!(msg.contains("12 images and 12 annotations"), "{msg}");
        assert!(msg.contains("has 11 annotations"), "{msg}");
        assert!(msg.contains(&pred_json.display().to_string()), "{msg}");
        assert!(msg.contains("panoptic_gt.json"), "{msg}");
    }

    #[test]
    fn bad_predictions_and_options_are_errors() {
        // A segment in the PNG but not in the JSON, named with its frame and file.
        let s = Scratch::new("segments");
        edit_json(&s.0.join("submit/pred.json"), |d| {
            d["annotations"][4]["segments_info"]
                .as_array_mut()
                .unwrap()
                .remove(0);
        });
        let msg = run(&s.0, &[1]).unwrap_err().to_string();
        assert!(
            msg.contains("0001_0005_frankfurt_000000_000020.png"),
            "{msg}"
        );
        assert!(
            msg.contains("segment with ID 23 is presented in PNG and not presented in JSON"),
            "{msg}"
        );

        // An unknown category, and a JSON segment with no pixels.
        let s = Scratch::new("category");
        edit_json(&s.0.join("submit/pred.json"), |d| {
            let segs = d["annotations"][0]["segments_info"].as_array_mut().unwrap();
            segs[0]["category_id"] = 99.into();
            segs.push(serde_json::json!({"id": 4242, "category_id": 7}));
        });
        let msg = run(&s.0, &[1]).unwrap_err().to_string();
        assert!(msg.contains("unknown category_id 99"), "{msg}");
        edit_json(&s.0.join("submit/pred.json"), |d| {
            d["annotations"][0]["segments_info"][0]["category_id"] = 23.into();
        });
        let msg = run(&s.0, &[1]).unwrap_err().to_string();
        assert!(
            msg.contains("[4242] are presented in JSON and not presented in PNG"),
            "{msg}"
        );

        // A ground-truth area smaller than its pixels: the script's assert.
        let s = Scratch::new("iou");
        edit_json(&s.0.join("panoptic_gt.json"), |d| {
            d["annotations"][0]["segments_info"][0]["area"] = 1.into();
        });
        assert!(matches!(
            run(&s.0, &[1]),
            Err(VpqError::InvalidIou { segment: 23, .. })
        ));

        // An image id that is not a string, and a malformed segments_info.
        let s = Scratch::new("id");
        edit_json(&s.0.join("panoptic_gt.json"), |d| {
            d["images"][3]["id"] = 3.into()
        });
        let msg = run(&s.0, &[1]).unwrap_err().to_string();
        assert!(msg.contains("image 3 has id 3"), "{msg}");
        let s = Scratch::new("info");
        edit_json(&s.0.join("panoptic_gt.json"), |d| {
            d["annotations"][2]["segments_info"][1]["id"] = "x".into();
        });
        let msg = run(&s.0, &[1]).unwrap_err().to_string();
        assert!(
            msg.contains("frame 2") && msg.contains("\"id\" must be an integer"),
            "{msg}"
        );

        // Window lengths and video sizes.
        let main = fixtures().join("main");
        for nframes in [vec![], vec![0], vec![7]] {
            assert!(
                matches!(run(&main, &nframes), Err(VpqError::Options(_))),
                "{nframes:?}"
            );
        }
        let options = VpqOptions {
            frames_per_video: 13,
            ..VpqOptions::default()
        };
        let e = vpq_compute(
            &main.join("panoptic_gt.json"),
            &main.join("panoptic_video"),
            &main.join("submit"),
            &options,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("12 frames, fewer than one video of 13"),
            "{e}"
        );
        let e = run(&main.join("nowhere"), &[1]).unwrap_err();
        assert!(e.to_string().contains("nowhere"), "{e}");
    }

    #[test]
    fn tubes_merge_ids_across_frames_in_first_appearance_order() {
        let seg = |category, iscrowd, area| Segment {
            category,
            iscrowd,
            area,
        };
        let f0 = vec![(5, seg(26, true, 3)), (1, seg(7, false, 10))];
        let f1 = vec![(1, seg(8, true, 4)), (9, seg(26, true, 2))];
        let (order, index) = tubes([f0.as_slice(), f1.as_slice()].into_iter());
        let ids: Vec<u32> = order.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [5, 1, 9]);
        let one = order[index[&1]].1;
        assert_eq!((one.category, one.iscrowd, one.area), (7, false, 14));
    }
}
