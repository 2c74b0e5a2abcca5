//! Panoptic fusion as Detectron2's `combine_semantic_and_instance_outputs`
//! (`detectron2/modeling/meta_arch/panoptic_fpn.py` @ 02b5c4e2), which follows panopticapi's
//! `combine_semantic_and_instance_predictions.py`:
//!
//! 1. Instances in decreasing score (`argsort(-scores)`; ties in index order, as torch's
//!    stable CPU sort gives them); the loop stops at the first score below
//!    `instances_score_thresh`. An empty mask is skipped; a mask whose overlap with the
//!    segments painted so far is more than `overlap_threshold` of its area is dropped;
//!    otherwise its free pixels become a new segment (ids 1, 2, ...).
//! 2. Then each semantic label in increasing order, except 0 (the "things" class): its
//!    pixels still free become a segment if there are at least `stuff_area_thresh` of them.
//! 3. Pixels left at 0 are VOID.

use super::OpError;

const OP: &str = "panoptic_fusion";

/// The thresholds; the defaults are Detectron2's (`PANOPTIC_FPN.COMBINE`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FusionConfig {
    /// Compared in f64, as Python floats (`intersect_area * 1.0 / mask_area > threshold`).
    pub overlap_threshold: f64,
    pub stuff_area_thresh: u64,
    /// Compared in f64 with the f32 score widened (`score.item() < threshold`): a score of
    /// `f32(0.7)` is below a threshold of 0.7.
    pub instances_score_thresh: f64,
}

impl Default for FusionConfig {
    fn default() -> Self {
        FusionConfig {
            overlap_threshold: 0.5,
            stuff_area_thresh: 4096,
            instances_score_thresh: 0.5,
        }
    }
}

/// One segment of the fused result.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    pub id: i32,
    pub category: i64,
    pub isthing: bool,
    /// The instance's score (things) or 0.
    pub score: f32,
    /// The instance's index (things).
    pub instance: Option<usize>,
    /// Its pixels.
    pub area: u64,
}

/// Fuses `masks` (`n` planes of `h·w` bytes, nonzero inside) with `scores` and `classes`
/// and the semantic labels `semantic` (`h·w`, 0 = things) into a segment id map and its
/// segments.
pub fn combine_semantic_and_instance(
    masks: &[u8],
    scores: &[f32],
    classes: &[i64],
    semantic: &[i64],
    cfg: &FusionConfig,
) -> Result<(Vec<i32>, Vec<Segment>), OpError> {
    let hw = semantic.len();
    let n = scores.len();
    if classes.len() != n || masks.len() != n * hw {
        return Err(OpError::shape(
            OP,
            format!(
                "{n} scores, {} classes and {} mask bytes for {n} masks of {hw} pixels",
                classes.len(),
                masks.len()
            ),
        ));
    }
    let mut seg = vec![0i32; hw];
    let mut segments = Vec::new();
    let mut order: Vec<usize> = (0..n).collect();
    // argsort(-scores): descending; torch sorts NaN (of -score) last.
    order.sort_by(|&a, &b| {
        let (x, y) = (scores[a], scores[b]);
        x.is_nan().cmp(&y.is_nan()).then(y.total_cmp(&x))
    });
    for i in order {
        let score = scores[i];
        // `score < thresh: break`: a NaN score does not stop the loop.
        if f64::from(score) < cfg.instances_score_thresh {
            break;
        }
        let mask = &masks[i * hw..(i + 1) * hw];
        let area = mask.iter().filter(|&&m| m != 0).count() as u64;
        if area == 0 {
            continue;
        }
        let overlap = mask
            .iter()
            .zip(&seg)
            .filter(|(&m, &s)| m != 0 && s > 0)
            .count() as u64;
        // `intersect_area * 1.0 / mask_area` in Python floats.
        if overlap as f64 / area as f64 > cfg.overlap_threshold {
            continue;
        }
        let id = segments.len() as i32 + 1;
        let mut painted = 0;
        for (s, &m) in seg.iter_mut().zip(mask) {
            if m != 0 && *s == 0 {
                *s = id;
                painted += 1;
            }
        }
        segments.push(Segment {
            id,
            category: classes[i],
            isthing: true,
            score,
            instance: Some(i),
            area: painted,
        });
    }
    let mut labels: Vec<i64> = semantic.to_vec();
    labels.sort_unstable();
    labels.dedup();
    for label in labels.into_iter().filter(|&l| l != 0) {
        let free = semantic
            .iter()
            .zip(&seg)
            .filter(|(&l, &s)| l == label && s == 0)
            .count() as u64;
        if free < cfg.stuff_area_thresh {
            continue;
        }
        let id = segments.len() as i32 + 1;
        for (s, &l) in seg.iter_mut().zip(semantic) {
            if l == label && *s == 0 {
                *s = id;
            }
        }
        segments.push(Segment {
            id,
            category: label,
            isthing: false,
            score: 0.0,
            instance: None,
            area: free,
        });
    }
    Ok((seg, segments))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_then_stuff_by_hand() {
        // 1x6 image. Instance 1 (score 0.9) covers 0..3, instance 0 (0.8) covers 2..5 (one
        // of three pixels taken: kept, painted on 3..5), instance 2 (0.7) covers 0..2
        // (fully taken: dropped), instance 3 (0.4) stops the loop.
        let masks = [
            [0u8, 0, 1, 1, 1, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 1],
        ]
        .concat();
        let semantic = [0i64, 0, 0, 0, 0, 7];
        let cfg = FusionConfig {
            stuff_area_thresh: 1,
            ..FusionConfig::default()
        };
        let (seg, segs) = combine_semantic_and_instance(
            &masks,
            &[0.8, 0.9, 0.7, 0.4],
            &[3, 5, 6, 9],
            &semantic,
            &cfg,
        )
        .unwrap();
        assert_eq!(seg, vec![1, 1, 1, 2, 2, 3]);
        assert_eq!(segs.len(), 3);
        assert_eq!((segs[0].category, segs[0].instance), (5, Some(1)));
        assert_eq!((segs[1].category, segs[1].area), (3, 2));
        assert_eq!(
            (segs[2].category, segs[2].isthing, segs[2].area),
            (7, false, 1)
        );
        let strict = FusionConfig {
            stuff_area_thresh: 2,
            ..cfg
        };
        let (seg, _) = combine_semantic_and_instance(
            &masks,
            &[0.8, 0.9, 0.7, 0.4],
            &[3, 5, 6, 9],
            &semantic,
            &strict,
        )
        .unwrap();
        assert_eq!(seg[5], 0, "one stuff pixel is below the area limit: VOID");
        assert!(combine_semantic_and_instance(&masks, &[0.8], &[3], &semantic, &cfg).is_err());
    }
}
