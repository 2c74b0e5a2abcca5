//! Panoptic Quality (PQ, SQ, RQ) as panopticapi's `pq_compute` computes it
//! (`panopticapi/evaluation.py` @ 7bb46555), on COCO panoptic files: a JSON with `annotations`
//! (`image_id`, `file_name`, `segments_info` with `id`, `category_id`, `iscrowd`, `area`) and
//! `categories` (`id`, `isthing`), and a folder of PNGs whose pixel id is `R + 256·G + 256²·B`.
//!
//! Per image, as `pq_compute_single_core`:
//! - predicted areas are counted from the PNG; ground-truth areas are the JSON's `area`;
//! - every non-VOID id of a predicted PNG must be in its JSON and the reverse, and each
//!   predicted `category_id` must be known (the errors are panopticapi's, with the file);
//! - a ground-truth and a predicted segment of the same category match when
//!   `intersection / (pred_area + gt_area - intersection - pred ∩ VOID) > 0.5`, unless the
//!   ground truth is a crowd (`iscrowd = 1`);
//! - unmatched non-crowd ground truths are false negatives; an unmatched prediction is a
//!   false positive unless more than half of it lies on VOID and on the crowd region of its
//!   category (the last crowd segment of that category in the JSON).
//!
//! Per category `pq = Σiou / (tp + fp/2 + fn/2)`, `sq = Σiou / tp`, `rq = tp / (tp + fp/2 +
//! fn/2)`; categories with no tp, fp or fn get zeros and are not averaged. All, Things and
//! Stuff are the unweighted means over the categories of the ground truth's `categories`
//! (or `--categories`). Where panopticapi divides by zero (no category of a group has any
//! segment) the group's values are 0 with `n = 0`.
//!
//! Images are read in parallel; their counts are added in the ground truth's order, and the
//! IoUs of one image in panopticapi's order (ascending `gt·2²⁴ + pred`), so the sums are
//! panopticapi's up to the grouping of its worker processes (a few ulps).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde_json::Value as Json;

use crate::byte_lanes::{with_lanes, Lanes};

pub(crate) const OFFSET: u64 = 256 * 256 * 256;
pub(crate) const VOID: u32 = 0;

/// What went wrong, with the file (and the image and segment id) at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PqError(String);

fn err(msg: impl Into<String>) -> PqError {
    PqError(msg.into())
}

/// The counts of one category.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CategoryStat {
    pub iou: f64,
    pub tp: u64,
    pub fp: u64,
    pub fn_: u64,
}

impl std::ops::AddAssign for CategoryStat {
    fn add_assign(&mut self, o: CategoryStat) {
        self.iou += o.iou;
        self.tp += o.tp;
        self.fp += o.fp;
        self.fn_ += o.fn_;
    }
}

/// PQ, SQ, RQ of one category or one group.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Quality {
    pub pq: f64,
    pub sq: f64,
    pub rq: f64,
}

/// A category of the evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Category {
    pub id: i64,
    pub name: String,
    pub isthing: bool,
}

/// `pq_compute`'s results: All, Things, Stuff (with the number of categories averaged) and
/// per class, with the counts behind them.
#[derive(Clone, Debug)]
pub struct PqResults {
    pub groups: Groups,
    pub per_class: PerClass,
    pub images: usize,
}

struct Segment {
    category: i64,
    iscrowd: bool,
    area: u64,
}

pub(crate) fn int(j: &Json, key: &str, what: &str) -> Result<i64, PqError> {
    j[key].as_i64().ok_or_else(|| {
        err(format!(
            "{what}: \"{key}\" must be an integer, got {}",
            j[key]
        ))
    })
}

pub(crate) fn read_json(path: &Path) -> Result<Json, PqError> {
    let text = kernels::files::read_regular(path)
        .map_err(|e| err(format!("cannot read \"{}\": {e}", path.display())))?;
    serde_json::from_slice(&text)
        .map_err(|e| err(format!("\"{}\" is not valid JSON: {e}", path.display())))
}

/// The categories of a JSON: a list, or an object with a `categories` list.
pub fn categories_of(doc: &Json, path: &Path) -> Result<Vec<Category>, PqError> {
    let list = doc
        .as_array()
        .or_else(|| doc["categories"].as_array())
        .ok_or_else(|| err(format!("\"{}\" has no \"categories\" list", path.display())))?;
    list.iter()
        .map(|c| {
            let what = format!("\"{}\" categories", path.display());
            Ok(Category {
                id: int(c, "id", &what)?,
                name: c["name"].as_str().unwrap_or("").to_string(),
                isthing: c["isthing"].as_i64() == Some(1),
            })
        })
        .collect()
}

/// A panoptic PNG read row by row as segment ids (`R + 256·G + 256²·B`): the ground truth and
/// the prediction are streamed side by side, so each row is counted while it is in cache and
/// no whole-image buffer is made. Interlaced PNGs (and JPEGs, which are not panoptic files
/// but decode) are read whole first.
pub(crate) enum IdRows<'a> {
    Stream(Box<crate::png_rows::PngRows<'a>>),
    Whole { rgb: Vec<u8>, next: usize },
}

/// The segment id of pixel `i` of a row of `channels`-byte pixels.
fn id_at(row: &[u8], i: usize, channels: usize) -> u32 {
    let p = &row[i * channels..];
    u32::from(p[0]) | u32::from(p[1]) << 8 | u32::from(p[2]) << 16
}

/// Counts the pixels of each `(gt, pred)` id pair of an image, row by row.
///
/// Segments are regions, so a row is a few runs of one pair each. A row's runs are listed
/// first; when its pairs are the previous row's in the same order (the boundaries moved, the
/// segments did not), their lengths are added to that list's, and only a row with another
/// sequence of pairs sends the list to the hash map. Hashing a run cost a sixth of the time.
#[derive(Default)]
pub(crate) struct PairCounter {
    pairs: PairCounts,
    /// Runs of the rows since the sequence of pairs last changed: `(key, pixels)`.
    pending: Vec<(u64, u64)>,
    /// The runs of the last row counted.
    last: Vec<(u64, u64)>,
}

impl PairCounter {
    /// Counts one row of `w` pixels.
    pub(crate) fn add_row(&mut self, gt: Row, pred: Row, w: usize) {
        if gt.repeats && pred.repeats && self.pending.len() == self.last.len() {
            // The last row's runs again; `pending` has them, in the same pairs.
            for (p, r) in self.pending.iter_mut().zip(&self.last) {
                p.1 += r.1;
            }
            return;
        }
        self.last.clear();
        let (g, p) = ((gt.bytes, gt.channels), (pred.bytes, pred.channels));
        if (g.1, p.1) == (3, 3) && w > 1 {
            rgb_runs(g.0, p.0, w, &mut self.last);
        } else {
            pixel_runs(g, p, w, &mut self.last);
        }
        let same_pairs = self.last.len() == self.pending.len()
            && self.last.iter().zip(&self.pending).all(|(r, p)| r.0 == p.0);
        if same_pairs {
            for (p, r) in self.pending.iter_mut().zip(&self.last) {
                p.1 += r.1;
            }
        } else {
            self.flush();
            self.pending.clone_from(&self.last);
        }
    }

    fn flush(&mut self) {
        for &(key, n) in &self.pending {
            *self.pairs.entry(key).or_default() += n;
        }
        self.pending.clear();
    }

    /// Pixels per `gt·OFFSET + pred` key.
    pub(crate) fn finish(mut self) -> PairCounts {
        self.flush();
        self.pairs
    }
}

/// The key of pixel `i`'s pair.
fn pair_key(gb: &[u8], gc: usize, pb: &[u8], pc: usize, i: usize) -> u64 {
    u64::from(id_at(gb, i, gc)) * OFFSET + u64::from(id_at(pb, i, pc))
}

/// The runs of one row of any bytes per pixel, pixel by pixel.
fn pixel_runs(gt: (&[u8], usize), pred: (&[u8], usize), w: usize, runs: &mut Vec<(u64, u64)>) {
    let ((gb, gc), (pb, pc)) = (gt, pred);
    let mut i = 0;
    while i < w {
        let key = pair_key(gb, gc, pb, pc, i);
        let mut j = i + 1;
        while j < w && pair_key(gb, gc, pb, pc, j) == key {
            j += 1;
        }
        runs.push((key, (j - i) as u64));
        i = j;
    }
}

/// Bit `t` is set where byte `k + t` differs from byte `k + t + 3` in `gb` or in `pb`,
/// for `t < 64`; both rows have `k + 67` bytes or more.
#[inline(always)]
fn differs_3_ahead<L: Lanes>(lanes: L, gb: &[u8], pb: &[u8], k: usize) -> u64 {
    let (g, p) = (&gb[k..k + 67], &pb[k..k + 67]);
    !lanes.both_equal_span::<64>(g, &g[3..], p, &p[3..])
}

// The comparisons run 32 bytes at a time where the CPU has AVX2.
with_lanes!(fn rgb_runs(gb: &[u8], pb: &[u8], w: usize, runs: &mut Vec<(u64, u64)>) => rgb_runs_impl);

/// The runs of two RGB rows. A pixel starts a new run where one of its bytes differs from
/// the byte one pixel (3 bytes) to its left in either row: 64 byte positions are tested at
/// once, and the runs are read off the set bits.
#[inline(always)]
fn rgb_runs_impl<L: Lanes>(lanes: L, gb: &[u8], pb: &[u8], w: usize, runs: &mut Vec<(u64, u64)>) {
    let n = 3 * w;
    let mut start = 0;
    // A difference at byte k (against k + 3) starts pixel k / 3 + 1.
    let mut new_run = |j: usize, start: &mut usize| {
        if j > *start {
            runs.push((pair_key(gb, 3, pb, 3, *start), (j - *start) as u64));
            *start = j;
        }
    };
    // 64 byte positions at a time: runs are tens of pixels long, so most words hold one
    // or two starts, and the loop over them is predictable.
    let last = n - 3;
    let mut k = 0;
    while k < last {
        let mut bits: u64 = if k + 64 + 3 <= n {
            differs_3_ahead(lanes, gb, pb, k)
        } else {
            (k..last).fold(0, |bits, b| {
                let d = (gb[b] ^ gb[b + 3]) | (pb[b] ^ pb[b + 3]);
                bits | u64::from(d != 0) << (b - k)
            })
        };
        while bits != 0 {
            let j = (k + bits.trailing_zeros() as usize) / 3 + 1;
            new_run(j, &mut start);
            // The bytes before pixel j's first cannot start another run.
            let past = 3 * j - k;
            bits &= if past >= 64 { 0 } else { !0 << past };
        }
        k += 64;
    }
    runs.push((pair_key(gb, 3, pb, 3, start), (w - start) as u64));
}

/// The segment ids (`R + 256·G + 256²·B`) of the panoptic PNG `bytes`, row-major, read as
/// `engine eval pq` reads them, and the image size `(h, w)`; `path` names the file in errors.
pub fn panoptic_ids(bytes: &[u8], path: &Path) -> Result<((usize, usize), Vec<u32>), PqError> {
    let (mut rows, (h, w)) = IdRows::open(bytes, path)?;
    // Grown as rows are read, not reserved from the header's claimed size.
    let mut ids = Vec::new();
    for _ in 0..h {
        let row = rows.next_row(w, path)?;
        ids.extend((0..w).map(|i| id_at(row.bytes, i, row.channels)));
    }
    rows.finish(path)?;
    Ok(((h, w), ids))
}

/// A reader of a file's segment ids, and the image size `(h, w)`.
pub(crate) type Opened<'a> = (IdRows<'a>, (usize, usize));

/// The bytes of the PNG at `path`.
pub(crate) fn read_png(path: &Path) -> Result<Vec<u8>, PqError> {
    kernels::files::read_regular(path)
        .map_err(|e| err(format!("cannot read \"{}\": {e}", path.display())))
}

impl<'a> IdRows<'a> {
    /// Reads the ids of `bytes`, the file at `path`.
    pub(crate) fn open(bytes: &'a [u8], path: &Path) -> Result<Opened<'a>, PqError> {
        let name = path.display().to_string();
        if let Some(stream) = Self::stream(bytes, &name)? {
            return Ok(stream);
        }
        let img = crate::image_source::decode_image(bytes, &name)
            .map_err(|e| err(format!("\"{name}\": {}", e.message())))?;
        let (h, w) = (img.shape()[0], img.shape()[1]);
        let rgb = img
            .as_slice::<u8>()
            .map_err(|e| err(format!("\"{name}\": {e}")))?
            .to_vec();
        Ok((IdRows::Whole { rgb, next: 0 }, (h, w)))
    }

    /// A row stream of a non-interlaced 8-bit RGB(A) PNG; `None` for anything else.
    fn stream(bytes: &'a [u8], name: &str) -> Result<Option<Opened<'a>>, PqError> {
        if crate::image_source::Format::detect(bytes) != Some(crate::image_source::Format::Png) {
            return Ok(None);
        }
        let bad = |e: String| err(format!("cannot decode \"{name}\" as PNG: {e}"));
        let Some((rows, header)) = crate::png_rows::PngRows::open(bytes).map_err(bad)? else {
            let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
            let info = decoder.read_header_info().map_err(|e| bad(e.to_string()))?;
            if let grey @ (png::ColorType::Grayscale | png::ColorType::GrayscaleAlpha) =
                info.color_type
            {
                return Err(err(format!(
                    "\"{name}\" is not an RGB panoptic PNG (colour type {grey:?})"
                )));
            }
            return Ok(None);
        };
        let size = (header.height, header.width);
        Ok(Some((IdRows::Stream(Box::new(rows)), size)))
    }

    /// Checks the rest of the file's image data once every row is read (a streamed PNG's last
    /// chunk CRC).
    pub(crate) fn finish(&mut self, path: &Path) -> Result<(), PqError> {
        match self {
            IdRows::Stream(rows) => rows
                .finish()
                .map_err(|e| err(format!("cannot decode \"{}\" as PNG: {e}", path.display()))),
            IdRows::Whole { .. } => Ok(()),
        }
    }

    /// The next row of `w` pixels.
    pub(crate) fn next_row(&mut self, w: usize, path: &Path) -> Result<Row<'_>, PqError> {
        match self {
            // The reader's rows are the header's width, the `w` it gave `open`.
            IdRows::Stream(rows) => {
                let channels = rows.bpp();
                let (bytes, repeats) = rows.next_row().map_err(|e| {
                    err(format!("cannot decode \"{}\" as PNG: {e}", path.display()))
                })?;
                Ok(Row {
                    bytes,
                    channels,
                    repeats,
                })
            }
            IdRows::Whole { rgb, next } => {
                let bytes = &rgb[*next..*next + 3 * w];
                *next += 3 * w;
                Ok(Row {
                    bytes,
                    channels: 3,
                    repeats: false,
                })
            }
        }
    }
}

/// One row of a panoptic PNG.
pub(crate) struct Row<'r> {
    /// The pixels' bytes.
    pub(crate) bytes: &'r [u8],
    /// Bytes per pixel: 3 or 4.
    pub(crate) channels: usize,
    /// The row is known to repeat the one before (it may repeat it without being known to).
    pub(crate) repeats: bool,
}

/// A multiply-shift hash for the `gt·2²⁴ + pred` keys (SipHash cost a tenth of the run).
#[derive(Default)]
pub(crate) struct PairHasher(u64);

impl std::hash::Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (v ^ (v >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) type PairCounts = HashMap<u64, u64, std::hash::BuildHasherDefault<PairHasher>>;

/// A segment of a JSON's `segments_info`: category, crowd, and area (if given).
type SegmentInfo = (i64, bool, Option<u64>);

fn segments(ann: &Json, what: &str) -> Result<BTreeMap<u32, SegmentInfo>, PqError> {
    let list = ann["segments_info"]
        .as_array()
        .ok_or_else(|| err(format!("{what}: no \"segments_info\" list")))?;
    let mut out = BTreeMap::new();
    for s in list {
        let id = int(s, "id", what)?;
        let id = u32::try_from(id)
            .ok()
            .filter(|&v| u64::from(v) < OFFSET)
            .ok_or_else(|| err(format!("{what}: segment id {id} is not a 24-bit PNG id")))?;
        let category = int(s, "category_id", what)?;
        let iscrowd = s["iscrowd"].as_i64() == Some(1);
        let area = s["area"].as_u64();
        out.insert(id, (category, iscrowd, area));
    }
    Ok(out)
}

/// One image's counts per category (`pq_compute_single_core`'s body).
fn image_stats(
    gt_ann: &Json,
    pred_ann: &Json,
    gt_dir: &Path,
    pred_dir: &Path,
    categories: &HashSet<i64>,
) -> Result<HashMap<i64, CategoryStat>, PqError> {
    let image_id = &gt_ann["image_id"];
    let file = |ann: &Json, dir: &Path| -> Result<PathBuf, PqError> {
        ann["file_name"]
            .as_str()
            .map(|f| dir.join(f))
            .ok_or_else(|| {
                err(format!(
                    "the annotation of image {image_id} has no \"file_name\""
                ))
            })
    };
    let (gt_path, pred_path) = (file(gt_ann, gt_dir)?, file(pred_ann, pred_dir)?);
    let (gt_bytes, pred_bytes) = (read_png(&gt_path)?, read_png(&pred_path)?);
    let (mut gt_rows, gt_size) = IdRows::open(&gt_bytes, &gt_path)?;
    let (mut pred_rows, pred_size) = IdRows::open(&pred_bytes, &pred_path)?;
    if gt_size != pred_size {
        return Err(err(format!(
            "image {image_id}: the ground truth \"{}\" is {}x{} but the prediction \"{}\" is {}x{}",
            gt_path.display(),
            gt_size.1,
            gt_size.0,
            pred_path.display(),
            pred_size.1,
            pred_size.0
        )));
    }
    let gt_what = format!("\"{}\" (image {image_id})", gt_path.display());
    let pred_what = format!("\"{}\" (image {image_id})", pred_path.display());
    let gt_segms: BTreeMap<u32, Segment> = segments(gt_ann, &gt_what)?
        .into_iter()
        .map(|(id, (category, iscrowd, area))| {
            let area = area.ok_or_else(|| {
                err(format!("{gt_what}: segment {id} has no \"area\" (the ground truth's areas come from its JSON)"))
            })?;
            Ok((id, Segment { category, iscrowd, area }))
        })
        .collect::<Result<_, PqError>>()?;
    let pred_info = segments(pred_ann, &pred_what)?;
    // The confusion counts (gt·OFFSET + pred -> pixels). Segments are regions, so pixels
    // come in runs of one pair: a run is counted at once.
    let (h, w) = gt_size;
    let mut counter = PairCounter::default();
    for _ in 0..h {
        let g = gt_rows.next_row(w, &gt_path)?;
        let p = pred_rows.next_row(w, &pred_path)?;
        counter.add_row(g, p, w);
    }
    let pairs = counter.finish();
    gt_rows.finish(&gt_path)?;
    pred_rows.finish(&pred_path)?;
    // Predicted areas (the PNG's pixels), and the sanity checks.
    let mut pred_area: BTreeMap<u32, u64> = BTreeMap::new();
    for (&key, &n) in &pairs {
        *pred_area.entry((key % OFFSET) as u32).or_default() += n;
    }
    let mut pred_segms: BTreeMap<u32, Segment> = BTreeMap::new();
    for (&id, &count) in &pred_area {
        let Some(&(category, iscrowd, _)) = pred_info.get(&id) else {
            if id == VOID {
                continue;
            }
            return Err(err(format!(
                "{pred_what}: In the image with ID {image_id} segment with ID {id} is presented in PNG and not presented in JSON."
            )));
        };
        if !categories.contains(&category) {
            return Err(err(format!(
                "{pred_what}: In the image with ID {image_id} segment with ID {id} has unknown category_id {category}."
            )));
        }
        pred_segms.insert(
            id,
            Segment {
                category,
                iscrowd,
                area: count,
            },
        );
    }
    let missing: Vec<u32> = pred_info
        .keys()
        .filter(|id| !pred_segms.contains_key(id))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err(err(format!(
            "{pred_what}: In the image with ID {image_id} the following segment IDs {missing:?} are presented in JSON and not presented in PNG."
        )));
    }
    // The pairs in ascending gt·OFFSET + pred, as np.unique gives them.
    let mut keys: Vec<u64> = pairs.keys().copied().collect();
    keys.sort_unstable();
    let pair = |g: u32, p: u32| {
        pairs
            .get(&(u64::from(g) * OFFSET + u64::from(p)))
            .copied()
            .unwrap_or(0)
    };
    let mut stats: HashMap<i64, CategoryStat> = HashMap::new();
    let mut gt_matched = HashSet::new();
    let mut pred_matched = HashSet::new();
    for key in keys {
        let (g, p) = ((key / OFFSET) as u32, (key % OFFSET) as u32);
        let (Some(gs), Some(ps)) = (gt_segms.get(&g), pred_segms.get(&p)) else {
            continue;
        };
        if gs.iscrowd || gs.category != ps.category {
            continue;
        }
        let intersection = pairs[&key];
        let union = ps.area as i64 + gs.area as i64 - intersection as i64 - pair(VOID, p) as i64;
        let iou = intersection as f64 / union as f64;
        if iou > 0.5 {
            let s = stats.entry(gs.category).or_default();
            s.tp += 1;
            s.iou += iou;
            gt_matched.insert(g);
            pred_matched.insert(p);
        }
    }
    // JSON order, as panopticapi's dict iteration: the last crowd of a category wins.
    let mut crowd_of: HashMap<i64, u32> = HashMap::new();
    for id in json_order(gt_ann) {
        let Some(gs) = gt_segms.get(&id) else {
            continue;
        };
        if gt_matched.contains(&id) {
            continue;
        }
        if gs.iscrowd {
            crowd_of.insert(gs.category, id);
            continue;
        }
        stats.entry(gs.category).or_default().fn_ += 1;
    }
    for (&p, ps) in &pred_segms {
        if pred_matched.contains(&p) {
            continue;
        }
        let mut on_ignored = pair(VOID, p);
        if let Some(&crowd) = crowd_of.get(&ps.category) {
            on_ignored += pair(crowd, p);
        }
        if on_ignored as f64 / ps.area as f64 > 0.5 {
            continue;
        }
        stats.entry(ps.category).or_default().fp += 1;
    }
    Ok(stats)
}

/// The segment ids of an annotation in its JSON order.
fn json_order(ann: &Json) -> Vec<u32> {
    ann["segments_info"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|s| s["id"].as_u64().and_then(|v| u32::try_from(v).ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// `pq_compute(gt_json, pred_json, gt_dir, pred_dir)`, with the categories of `categories`
/// (a JSON list or an object with `categories`) instead of the ground truth's when given.
pub fn pq_compute(
    gt_json: &Path,
    pred_json: &Path,
    gt_dir: &Path,
    pred_dir: &Path,
    categories: Option<&Path>,
) -> Result<PqResults, PqError> {
    let gt = read_json(gt_json)?;
    let pred = read_json(pred_json)?;
    let cats = match categories {
        Some(path) => categories_of(&read_json(path)?, path)?,
        None => categories_of(&gt, gt_json)?,
    };
    for (dir, what) in [(gt_dir, "ground truth"), (pred_dir, "prediction")] {
        if !dir.is_dir() {
            return Err(err(format!(
                "the {what} folder \"{}\" does not exist",
                dir.display()
            )));
        }
    }
    fn anns<'j>(doc: &'j Json, path: &Path) -> Result<&'j Vec<Json>, PqError> {
        doc["annotations"].as_array().ok_or_else(|| {
            err(format!(
                "\"{}\" has no \"annotations\" list",
                path.display()
            ))
        })
    }
    let gt_anns = anns(&gt, gt_json)?;
    let mut by_image: HashMap<String, &Json> = HashMap::new();
    for a in anns(&pred, pred_json)? {
        by_image.insert(a["image_id"].to_string(), a);
    }
    let pairs: Vec<(&Json, &Json)> = gt_anns
        .iter()
        .map(|g| {
            let id = g["image_id"].to_string();
            by_image.get(&id).map(|&p| (g, p)).ok_or_else(|| {
                err(format!(
                    "\"{}\": no prediction for the image with id: {id}",
                    pred_json.display()
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let known: HashSet<i64> = cats.iter().map(|c| c.id).collect();
    let per_image: Vec<HashMap<i64, CategoryStat>> = pairs
        .par_iter()
        .map(|(g, p)| image_stats(g, p, gt_dir, pred_dir, &known))
        .collect::<Result<_, _>>()?;
    let mut total: HashMap<i64, CategoryStat> = HashMap::new();
    for stats in per_image {
        let mut ids: Vec<&i64> = stats.keys().collect();
        ids.sort_unstable();
        for id in ids {
            *total.entry(*id).or_default() += stats[id];
        }
    }
    let (groups, per_class) = average(&cats, &total);
    Ok(PqResults {
        groups,
        per_class,
        images: pairs.len(),
    })
}

/// The All, Things and Stuff means with how many categories each averages.
pub type Groups = Vec<(&'static str, Quality, usize)>;
/// Every category, in the ground truth's order, with its quality and counts.
pub type PerClass = Vec<(Category, Quality, CategoryStat)>;

/// PQ, SQ, RQ per category and the All, Things, Stuff means (panopticapi's
/// `PQStat.pq_average`, which VPSNet's script copies), over the categories in their order; a
/// category without tp, fp or fn is 0 and not averaged, and a group without categories is 0
/// with n = 0 (where panopticapi divides by zero).
pub(crate) fn average(
    categories: &[Category],
    total: &HashMap<i64, CategoryStat>,
) -> (Groups, PerClass) {
    let per_class: PerClass = categories
        .iter()
        .map(|c| {
            let s = total.get(&c.id).copied().unwrap_or_default();
            let q = if s.tp + s.fp + s.fn_ == 0 {
                Quality::default()
            } else {
                let (tp, fp, fn_) = (s.tp as f64, s.fp as f64, s.fn_ as f64);
                let denom = tp + 0.5 * fp + 0.5 * fn_;
                Quality {
                    pq: s.iou / denom,
                    sq: if s.tp != 0 { s.iou / tp } else { 0.0 },
                    rq: tp / denom,
                }
            };
            (c.clone(), q, s)
        })
        .collect();
    let groups = [
        ("All", None),
        ("Things", Some(true)),
        ("Stuff", Some(false)),
    ]
    .into_iter()
    .map(|(name, isthing)| {
        let mut sum = Quality::default();
        let mut n = 0usize;
        for (c, q, s) in &per_class {
            if isthing.is_some_and(|t| t != c.isthing) || s.tp + s.fp + s.fn_ == 0 {
                continue;
            }
            n += 1;
            sum.pq += q.pq;
            sum.sq += q.sq;
            sum.rq += q.rq;
        }
        if n == 0 {
            return (name, Quality::default(), 0);
        }
        let nf = n as f64;
        let q = Quality {
            pq: sum.pq / nf,
            sq: sum.sq / nf,
            rq: sum.rq / nf,
        };
        (name, q, n)
    })
    .collect();
    (groups, per_class)
}

impl PqResults {
    /// The dict `pq_compute` returns, as JSON: `All`, `per_class` (by category id), `Things`,
    /// `Stuff`.
    pub fn to_json(&self) -> Json {
        let group =
            |q: &Quality, n: usize| serde_json::json!({"pq": q.pq, "sq": q.sq, "rq": q.rq, "n": n});
        let mut out = serde_json::Map::new();
        for (i, (name, q, n)) in self.groups.iter().enumerate() {
            out.insert((*name).to_string(), group(q, *n));
            if i == 0 {
                let per: serde_json::Map<String, Json> = self
                    .per_class
                    .iter()
                    .map(|(c, q, _)| {
                        (
                            c.id.to_string(),
                            serde_json::json!({"pq": q.pq, "sq": q.sq, "rq": q.rq}),
                        )
                    })
                    .collect();
                out.insert("per_class".into(), Json::Object(per));
            }
        }
        Json::Object(out)
    }

    /// panopticapi's table (×100, one decimal), then one line per class with its counts.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:10}| {:>5}  {:>5}  {:>5} {:>5}\n",
            "", "PQ", "SQ", "RQ", "N"
        );
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
            "\nper class ({} images):\n{:>6} {:24} {:>5} {:>5}  {:>5}  {:>5} {:>5} {:>5} {:>5}\n",
            self.images, "id", "name", "thing", "PQ", "SQ", "RQ", "TP", "FP", "FN"
        ));
        for (c, q, st) in &self.per_class {
            s.push_str(&format!(
                "{:>6} {:24} {:>5} {:5.1}  {:5.1}  {:5.1} {:5} {:5} {:5}\n",
                c.id,
                c.name,
                if c.isthing { "yes" } else { "no" },
                100.0 * q.pq,
                100.0 * q.sq,
                100.0 * q.rq,
                st.tp,
                st.fp,
                st.fn_
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pair counts of two images (rows of ids) stored with `gc` and `pc` bytes per
    /// pixel, sorted.
    fn counts(g: &[Vec<u32>], p: &[Vec<u32>], gc: usize, pc: usize) -> Vec<(u64, u64)> {
        let bytes = |ids: &[u32], c: usize| -> Vec<u8> {
            ids.iter()
                .flat_map(|&v| {
                    let mut px = vec![v as u8, (v >> 8) as u8, (v >> 16) as u8];
                    px.resize(c, 7);
                    px
                })
                .collect()
        };
        let mut counter = PairCounter::default();
        for r in 0..g.len() {
            let (gb, pb) = (bytes(&g[r], gc), bytes(&p[r], pc));
            // A decoder flags some repeated rows: here, those of the ground truth whose
            // index is even.
            let repeats = |rows: &[Vec<u32>]| r > 0 && rows[r] == rows[r - 1] && r % 2 == 0;
            let row = |bytes, channels, repeats| Row {
                bytes,
                channels,
                repeats,
            };
            counter.add_row(
                row(&gb, gc, repeats(g)),
                row(&pb, pc, r > 0 && p[r] == p[r - 1]),
                g[r].len(),
            );
        }
        let mut v: Vec<(u64, u64)> = counter.finish().into_iter().collect();
        v.sort_unstable();
        v
    }

    /// The same, pixel by pixel.
    fn naive(g: &[Vec<u32>], p: &[Vec<u32>]) -> Vec<(u64, u64)> {
        let mut m: BTreeMap<u64, u64> = BTreeMap::new();
        for (&g, &p) in g.iter().flatten().zip(p.iter().flatten()) {
            *m.entry(u64::from(g) * OFFSET + u64::from(p)).or_default() += 1;
        }
        m.into_iter().collect()
    }

    #[test]
    fn rows_count_like_the_pixel_loop() {
        crate::byte_lanes::with_each_lanes(|| {
            // Runs of every length around the 16-byte test, ids differing in one byte only, and
            // runs that return to an earlier pair.
            let mut g = Vec::new();
            let mut p = Vec::new();
            for (k, len) in [1usize, 2, 3, 7, 8, 9, 16, 17, 40, 1, 5].iter().enumerate() {
                g.extend(std::iter::repeat_n((k as u32 % 3) << (8 * (k % 3)), *len));
                p.extend(std::iter::repeat_n(k as u32 / 2, *len));
            }
            // Rows whose boundaries move with the same pairs, and rows with other pairs.
            let shifted = |v: &Vec<u32>, by: usize| {
                let mut s = v.clone();
                s.rotate_left(by);
                s
            };
            let (mut gs, mut ps) = (Vec::new(), Vec::new());
            for r in 0..12 {
                gs.push(if r % 5 == 4 {
                    shifted(&g, 3)
                } else {
                    g.clone()
                });
                let mut row = p.clone();
                row[..r].fill(r as u32 % 4);
                ps.push(row);
                // Rows that repeat the one above, on one side or both.
                if r % 3 == 0 {
                    gs.push(gs[gs.len() - 1].clone());
                    ps.push(ps[ps.len() - 1].clone());
                }
            }
            let want = naive(&gs, &ps);
            assert_eq!(counts(&gs, &ps, 3, 3), want);
            // RGBA rows take the pixel-by-pixel path.
            assert_eq!(counts(&gs, &ps, 4, 3), want);
            assert_eq!(counts(&gs, &ps, 3, 4), want);
            let one = (vec![vec![5]], vec![vec![6]]);
            assert_eq!(counts(&one.0, &one.1, 3, 3), vec![(5 * OFFSET + 6, 1)]);
        });
    }
}
