//! Multi-scale RoIAlign over an FPN: torchvision's `MultiScaleRoIAlign` and `LevelMapper`
//! (`torchvision/ops/poolers.py`).
//!
//! - Scales are inferred from the feature sizes: `2 ** round(log2(feat_h / image_h))`, with
//!   the image size the largest (unpadded) height over the batch, and `log2`/`round` in
//!   `f32` as torch does (`round` is half-to-even).
//! - `k_min = -log2(scale of the first level)`, `k_max = -log2(scale of the last level)`.
//! - Each box goes to level `floor(k0 + log2(sqrt(area) / s0) + eps)` clamped to
//!   `[k_min, k_max]`, with `k0 = 4`, `s0 = 224`, `eps = 1e-6` (all in `f32`).
//! - Pooling is [`roi_align`](super::roi_align::roi_align) with `aligned = false` (torchvision
//!   does not pass `aligned`), the level's scale and the given `sampling_ratio`.
//! - Detectron2's `ROIPooler` (`detectron2/modeling/poolers.py`, `assign_boxes_to_levels`)
//!   differs only in the rule: `floor(k0 + log2(sqrt(area) / s0 + 1e-8))`, the epsilon inside
//!   the logarithm ([`LevelRule::Detectron2`]).
//! - mmdet 1.x's `SingleRoIExtractor` (`mmdet/models/roi_extractors/single_level.py`, used
//!   by mmdetection v1 models such as VPSNet) differs in both the rule and the pooling
//!   ([`MultiScaleRoIAlign::mmdet_v1`]): level `floor(log2(sqrt((w + 1)·(h + 1)) / 56 +
//!   1e-6))` counted from the first level and clamped to the levels given
//!   ([`LevelRule::MmdetV1`], sizes in its "+1" pixel convention, `finest_scale` 56), and
//!   RoIAlign with [`RoiAlignParams::plus_one_end`]. Its scales are `1 / featmap_strides`,
//!   fixed by the config rather than inferred: [`MultiScaleRoIAlign::forward_with_scales`].
//! - A box whose level is NaN (a NaN coordinate or a negative area) is pooled by no level in
//!   torchvision, so its output row stays zero; the same here.

use ndarray::{Array4, ArrayView4, Axis};

use super::roi_align::{
    check_params, roi_align_levels, roi_align_reference, roi_geometry, tiles_are_cheaper, Job,
    LevelData, RoiAlignParams, RoiAlignWorkspace,
};
use super::OpError;

const OP: &str = "MultiScaleRoIAlign";

/// `(N, C, H, W)` of one level.
type Dims = (usize, usize, usize, usize);

/// RoIs `[image, box]`, per-level scales and the level mapper.
type Prepared = (Vec<[f32; 5]>, Vec<f64>, LevelMapper);

/// Where the epsilon of the level rule goes; the two references differ only there, which
/// moves boxes whose size is a power of two times the canonical size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LevelRule {
    /// torchvision: `floor(k0 + log2(s / s0) + 1e-6)`.
    #[default]
    Torchvision,
    /// Detectron2: `floor(k0 + log2(s / s0 + 1e-8))`.
    Detectron2,
    /// mmdet 1.x: `k0 + floor(log2(s / s0 + eps))` with `s = sqrt((x2 - x1 + 1)·(y2 - y1 + 1))`
    /// (inclusive pixels), `s0` its `finest_scale` (56) and `k0` the first level. The level
    /// index is floored before `k0` is added, so an `f32` sum cannot round it up.
    MmdetV1,
}

/// FPN level assignment of boxes (torchvision `LevelMapper`, or Detectron2's
/// `assign_boxes_to_levels` with [`LevelRule::Detectron2`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LevelMapper {
    pub k_min: i32,
    pub k_max: i32,
    pub canonical_scale: i32,
    pub canonical_level: i32,
    pub eps: f32,
    pub rule: LevelRule,
}

impl LevelMapper {
    /// `canonical_scale = 224`, `canonical_level = 4`, `eps = 1e-6`.
    pub fn new(k_min: i32, k_max: i32) -> Result<LevelMapper, OpError> {
        LevelMapper::with_canonical(k_min, k_max, 224, 4)
    }

    pub fn with_canonical(
        k_min: i32,
        k_max: i32,
        canonical_scale: i32,
        canonical_level: i32,
    ) -> Result<LevelMapper, OpError> {
        if k_min > k_max {
            return Err(OpError::invalid(
                "LevelMapper",
                format!("k_min {k_min} is above k_max {k_max}"),
            ));
        }
        Ok(LevelMapper {
            k_min,
            k_max,
            canonical_scale,
            canonical_level,
            eps: 1e-6,
            rule: LevelRule::Torchvision,
        })
    }

    /// Index of the level (`0..=k_max-k_min`) for one box; `None` when it is NaN.
    pub fn level(&self, b: &[f32; 4]) -> Option<usize> {
        let area = match self.rule {
            LevelRule::MmdetV1 => (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0),
            _ => (b[2] - b[0]) * (b[3] - b[1]),
        };
        let s = area.sqrt();
        let level = self.canonical_level as f32;
        let ratio = s / self.canonical_scale as f32;
        let t = match self.rule {
            LevelRule::Torchvision => ((level + ratio.log2()) + self.eps).floor(),
            LevelRule::Detectron2 => (level + (ratio + 1e-8).log2()).floor(),
            LevelRule::MmdetV1 => level + (ratio + self.eps).log2().floor(),
        };
        if t.is_nan() {
            return None;
        }
        let t = t.max(self.k_min as f32).min(self.k_max as f32);
        Some((t as i64 - self.k_min as i64) as usize)
    }
}

/// `2 ** round(log2(feature_size / image_size))` as torchvision's `_infer_scale` computes it.
pub fn infer_scale(feature_size: usize, image_size: usize) -> Result<f64, OpError> {
    if image_size == 0 || feature_size == 0 {
        return Err(OpError::invalid(
            OP,
            format!(
                "cannot infer a scale from feature size {feature_size} and image size {image_size}"
            ),
        ));
    }
    let approx = feature_size as f64 / image_size as f64;
    let l = (approx as f32).log2().round_ties_even();
    Ok(2f64.powf(l as f64))
}

/// torchvision `_setup_scales`: per-level scales from the level heights and the images'
/// `(height, width)`, and the level mapper.
pub fn setup_scales(
    feature_heights: &[usize],
    image_shapes: &[(usize, usize)],
) -> Result<(Vec<f64>, LevelMapper), OpError> {
    if image_shapes.is_empty() {
        return Err(OpError::invalid(OP, "images list should not be empty"));
    }
    if feature_heights.is_empty() {
        return Err(OpError::invalid(OP, "no feature levels"));
    }
    let max_h = image_shapes.iter().map(|s| s.0).max().unwrap_or(0);
    let scales = feature_heights
        .iter()
        .map(|&h| infer_scale(h, max_h))
        .collect::<Result<Vec<_>, _>>()?;
    let lvl = |s: f64| -> i32 { (-(s as f32).log2()) as i32 };
    let mapper = LevelMapper::new(lvl(scales[0]), lvl(scales[scales.len() - 1]))?;
    Ok((scales, mapper))
}

/// torchvision's `MultiScaleRoIAlign` (inference).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MultiScaleRoIAlign {
    /// `(height, width)` of the pooled output.
    pub output_size: (usize, usize),
    pub sampling_ratio: i32,
    pub canonical_scale: i32,
    pub canonical_level: i32,
    pub rule: LevelRule,
    /// RoIAlign's half-pixel offset (Detectron2's `ROIAlignV2`); torchvision's poolers do not
    /// set it.
    pub aligned: bool,
    /// mmdet 1.x's RoIAlign ([`RoiAlignParams::plus_one_end`]).
    pub plus_one_end: bool,
}

impl MultiScaleRoIAlign {
    /// `canonical_scale = 224`, `canonical_level = 4`. Mask R-CNN: `new(7, 2)` for boxes and
    /// `new(14, 2)` for masks.
    pub fn new(output_size: usize, sampling_ratio: i32) -> MultiScaleRoIAlign {
        MultiScaleRoIAlign {
            output_size: (output_size, output_size),
            sampling_ratio,
            canonical_scale: 224,
            canonical_level: 4,
            rule: LevelRule::Torchvision,
            aligned: false,
            plus_one_end: false,
        }
    }

    /// mmdet 1.x's `SingleRoIExtractor` with `RoIAlign(out_size, sample_num)`: its level rule
    /// (`finest_scale` 56 at the first level) and its "+1" RoIAlign. Pool with
    /// [`forward_with_scales`](Self::forward_with_scales) and `1 / featmap_strides`, as its
    /// config fixes them.
    pub fn mmdet_v1(output_size: usize, sampling_ratio: i32) -> MultiScaleRoIAlign {
        MultiScaleRoIAlign {
            canonical_scale: 56,
            // Unused by the rule, which counts from the first level; P2 for the record.
            canonical_level: 2,
            rule: LevelRule::MmdetV1,
            plus_one_end: true,
            ..MultiScaleRoIAlign::new(output_size, sampling_ratio)
        }
    }

    /// Detectron2's `ROIPooler` with `ROIAlign` (`aligned=False`): the same pooling, with
    /// Detectron2's level rule.
    pub fn detectron2(output_size: usize, sampling_ratio: i32) -> MultiScaleRoIAlign {
        MultiScaleRoIAlign {
            rule: LevelRule::Detectron2,
            ..MultiScaleRoIAlign::new(output_size, sampling_ratio)
        }
    }

    fn params(&self, scale: f64) -> RoiAlignParams {
        RoiAlignParams {
            pooled_height: self.output_size.0,
            pooled_width: self.output_size.1,
            spatial_scale: scale as f32,
            sampling_ratio: self.sampling_ratio,
            aligned: self.aligned,
            plus_one_end: self.plus_one_end,
        }
    }

    /// Checks shapes; returns the RoIs (`[image, box]`), the scales and the mapper.
    fn prepare(
        &self,
        dims: &[Dims],
        boxes: &[&[[f32; 4]]],
        image_shapes: &[(usize, usize)],
    ) -> Result<Prepared, OpError> {
        let rois = self.rois(dims, boxes)?;
        let heights: Vec<usize> = dims.iter().map(|d| d.2).collect();
        let (scales, mapper) = setup_scales(&heights, image_shapes)?;
        let mapper = self.configure(mapper, dims.len());
        Ok((rois, scales, mapper))
    }

    /// [`prepare`](Self::prepare) with the scales given rather than inferred.
    fn prepare_scaled(
        &self,
        dims: &[Dims],
        boxes: &[&[[f32; 4]]],
        scales: &[f64],
    ) -> Result<Prepared, OpError> {
        let rois = self.rois(dims, boxes)?;
        if scales.len() != dims.len() {
            return Err(OpError::shape(
                OP,
                format!("{} scales for {} feature levels", scales.len(), dims.len()),
            ));
        }
        if let Some(bad) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(OpError::invalid(
                OP,
                format!("scales must be positive, got {bad}"),
            ));
        }
        // The levels' pyramid indices, as `_setup_scales` derives them from its scales.
        let lvl = |s: f64| -> i32 { (-(s as f32).log2()) as i32 };
        let mapper = LevelMapper::new(lvl(scales[0]), lvl(scales[scales.len() - 1]))?;
        Ok((rois, scales.to_vec(), self.configure(mapper, dims.len())))
    }

    /// This pooler's level rule on a mapper whose `k_min`/`k_max` come from the scales.
    fn configure(&self, mut mapper: LevelMapper, num_levels: usize) -> LevelMapper {
        mapper.canonical_scale = self.canonical_scale;
        mapper.canonical_level = self.canonical_level;
        mapper.rule = self.rule;
        if self.rule == LevelRule::MmdetV1 {
            // mmdet counts from the first level it is given and clamps to `num_levels - 1`,
            // whatever the strides.
            mapper.canonical_level = mapper.k_min;
            mapper.k_max = mapper.k_min + num_levels.saturating_sub(1) as i32;
        }
        mapper
    }

    /// Checks shapes; returns the RoIs (`[image, box]`).
    fn rois(&self, dims: &[Dims], boxes: &[&[[f32; 4]]]) -> Result<Vec<[f32; 5]>, OpError> {
        let first = *dims
            .first()
            .ok_or_else(|| OpError::invalid(OP, "no feature levels"))?;
        for (l, d) in dims.iter().enumerate() {
            if d.0 != first.0 || d.1 != first.1 {
                return Err(OpError::shape(
                    OP,
                    format!(
                        "level {l} has batch and channels {:?}, level 0 has {:?}",
                        (d.0, d.1),
                        (first.0, first.1)
                    ),
                ));
            }
        }
        if boxes.len() > first.0 {
            return Err(OpError::shape(
                OP,
                format!(
                    "boxes are given for {} images but the features hold {}",
                    boxes.len(),
                    first.0
                ),
            ));
        }
        Ok(boxes
            .iter()
            .enumerate()
            .flat_map(|(i, bs)| bs.iter().map(move |b| [i as f32, b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// Level of each RoI, as torchvision assigns them (`None`: pooled by no level).
    fn levels(
        &self,
        rois: &[[f32; 5]],
        mapper: &LevelMapper,
        num_levels: usize,
    ) -> Vec<Option<usize>> {
        rois.iter()
            .map(|r| {
                if num_levels == 1 {
                    Some(0)
                } else {
                    mapper
                        .level(&[r[1], r[2], r[3], r[4]])
                        .filter(|&l| l < num_levels)
                }
            })
            .collect()
    }

    /// Pools `boxes[i]` (image coordinates of image `i`) from the `NCHW` levels `features`
    /// (finest first, e.g. P2..P5). `image_shapes` are the images' unpadded `(height, width)`.
    /// Output `[K, C, out_h, out_w]`, RoIs in the order of `boxes`.
    pub fn forward(
        &self,
        features: &[ArrayView4<f32>],
        boxes: &[&[[f32; 4]]],
        image_shapes: &[(usize, usize)],
    ) -> Result<Array4<f32>, OpError> {
        self.forward_with(&mut RoiAlignWorkspace::new(), features, boxes, image_shapes)
    }

    /// [`forward`](Self::forward) with a workspace kept across calls (frames), which holds the
    /// channels-last copies of the levels (see [`RoiAlignWorkspace`]).
    pub fn forward_with(
        &self,
        ws: &mut RoiAlignWorkspace,
        features: &[ArrayView4<f32>],
        boxes: &[&[[f32; 4]]],
        image_shapes: &[(usize, usize)],
    ) -> Result<Array4<f32>, OpError> {
        let dims: Vec<_> = features.iter().map(|f| f.dim()).collect();
        let prepared = self.prepare(&dims, boxes, image_shapes)?;
        self.pool(ws, features, &dims, prepared)
    }

    /// [`forward_with`](Self::forward_with) with each level's scale given (e.g. `1 / stride`,
    /// as mmdet's `featmap_strides` fix them) rather than inferred from the image size.
    pub fn forward_with_scales(
        &self,
        ws: &mut RoiAlignWorkspace,
        features: &[ArrayView4<f32>],
        boxes: &[&[[f32; 4]]],
        scales: &[f64],
    ) -> Result<Array4<f32>, OpError> {
        let dims: Vec<_> = features.iter().map(|f| f.dim()).collect();
        let prepared = self.prepare_scaled(&dims, boxes, scales)?;
        self.pool(ws, features, &dims, prepared)
    }

    fn pool(
        &self,
        ws: &mut RoiAlignWorkspace,
        features: &[ArrayView4<f32>],
        dims: &[Dims],
        (rois, scales, mapper): Prepared,
    ) -> Result<Array4<f32>, OpError> {
        let levels = self.levels(&rois, &mapper, features.len());
        let jobs = self.jobs(dims, &rois, &levels, &scales)?;
        // Per level: per-RoI tiles where the RoIs cover little of it, else one channels-last
        // copy (only of levels that some RoI uses).
        let (ph, pw) = self.output_size;
        let tiled: Vec<bool> = dims
            .iter()
            .enumerate()
            .map(|(l, &d)| {
                let on_level = jobs.iter().flatten().filter(|(jl, _)| *jl == l);
                tiles_are_cheaper(d, on_level.map(|(_, g)| g), ph, pw)
            })
            .collect();
        let standard: Vec<_> = features.iter().map(|f| f.as_standard_layout()).collect();
        for (l, f) in features.iter().enumerate() {
            if levels.contains(&Some(l)) && !tiled[l] {
                ws.fill(l, f.view());
            }
        }
        let data: Vec<LevelData> = dims
            .iter()
            .enumerate()
            .map(|(l, &(n, c, h, w))| {
                if tiled[l] {
                    LevelData::Tiled(standard[l].view())
                } else if levels.contains(&Some(l)) {
                    LevelData::Nhwc(ws.view(l, (n, h, w, c)))
                } else {
                    LevelData::Nhwc(ws.view(usize::MAX, (n, 0, 0, c)))
                }
            })
            .collect();
        Ok(roi_align_levels(&data, &jobs, ph, pw))
    }

    /// [`forward`](Self::forward) on levels that are already channels-last (`[N, H, W, C]`).
    pub fn forward_nhwc(
        &self,
        features_nhwc: &[ArrayView4<f32>],
        boxes: &[&[[f32; 4]]],
        image_shapes: &[(usize, usize)],
    ) -> Result<Array4<f32>, OpError> {
        let dims: Vec<_> = features_nhwc
            .iter()
            .map(|f| {
                let (n, h, w, c) = f.dim();
                (n, c, h, w)
            })
            .collect();
        let (rois, scales, mapper) = self.prepare(&dims, boxes, image_shapes)?;
        let levels = self.levels(&rois, &mapper, features_nhwc.len());
        let owned: Vec<_> = features_nhwc
            .iter()
            .map(|f| f.as_standard_layout())
            .collect();
        let jobs = self.jobs(&dims, &rois, &levels, &scales)?;
        let data: Vec<LevelData> = owned.iter().map(|a| LevelData::Nhwc(a.view())).collect();
        let (ph, pw) = self.output_size;
        Ok(roi_align_levels(&data, &jobs, ph, pw))
    }

    /// The level and geometry of each RoI (`None`: pooled by no level).
    fn jobs(
        &self,
        dims: &[Dims],
        rois: &[[f32; 5]],
        levels: &[Option<usize>],
        scales: &[f64],
    ) -> Result<Vec<Job>, OpError> {
        check_params(&self.params(1.0))?;
        let mut jobs = Vec::with_capacity(rois.len());
        for (k, (r, lvl)) in rois.iter().zip(levels).enumerate() {
            match lvl {
                Some(l) => {
                    let (n, _, h, w) = dims[*l];
                    if h == 0 || w == 0 {
                        return Err(OpError::shape(
                            OP,
                            format!("level {l} has an empty spatial size"),
                        ));
                    }
                    let g = roi_geometry(k, r, n, &self.params(scales[*l]))?;
                    jobs.push(Some((*l, g)));
                }
                None => jobs.push(None),
            }
        }
        Ok(jobs)
    }

    /// The same result computed as torchvision does: one [`roi_align_reference`] call per
    /// level on the RoIs mapped to it, scattered back into place.
    pub fn forward_reference(
        &self,
        features: &[ArrayView4<f32>],
        boxes: &[&[[f32; 4]]],
        image_shapes: &[(usize, usize)],
    ) -> Result<Array4<f32>, OpError> {
        let dims: Vec<_> = features.iter().map(|f| f.dim()).collect();
        let (rois, scales, mapper) = self.prepare(&dims, boxes, image_shapes)?;
        let c = dims[0].1;
        let (oh, ow) = self.output_size;
        if features.len() == 1 {
            return roi_align_reference(features[0].view(), &rois, &self.params(scales[0]));
        }
        let levels = self.levels(&rois, &mapper, features.len());
        let mut out = Array4::<f32>::zeros((rois.len(), c, oh, ow));
        for (l, f) in features.iter().enumerate() {
            let idx: Vec<usize> = (0..rois.len()).filter(|&k| levels[k] == Some(l)).collect();
            if idx.is_empty() {
                continue;
            }
            let sub: Vec<[f32; 5]> = idx.iter().map(|&k| rois[k]).collect();
            let res = roi_align_reference(f.view(), &sub, &self.params(scales[l]))?;
            for (j, &k) in idx.iter().enumerate() {
                out.index_axis_mut(Axis(0), k)
                    .assign(&res.index_axis(Axis(0), j));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    #[test]
    fn level_mapping_by_hand() {
        let m = LevelMapper::new(2, 5).unwrap();
        // sqrt(area) = 224 → level 4 (index 2); 112 → 3; 448 → 5; tiny → 2; huge → 5.
        assert_eq!(m.level(&[0.0, 0.0, 224.0, 224.0]), Some(2));
        assert_eq!(m.level(&[0.0, 0.0, 112.0, 112.0]), Some(1));
        assert_eq!(m.level(&[0.0, 0.0, 448.0, 448.0]), Some(3));
        assert_eq!(m.level(&[0.0, 0.0, 1.0, 1.0]), Some(0));
        assert_eq!(m.level(&[0.0, 0.0, 0.0, 0.0]), Some(0));
        assert_eq!(m.level(&[0.0, 0.0, 1e6, 1e6]), Some(3));
        assert_eq!(m.level(&[0.0, 0.0, 223.0, 224.0]), Some(1));
        assert_eq!(m.level(&[f32::NAN, 0.0, 1.0, 1.0]), None);
        assert_eq!(m.level(&[2.0, 0.0, 1.0, 1.0]), None); // negative area
        assert!(LevelMapper::new(5, 2).is_err());
    }

    /// Just below the canonical size, torchvision's epsilon (after the logarithm) lifts a box
    /// to the canonical level, Detectron2's (inside it) does not; elsewhere they agree.
    #[test]
    fn detectron2_rule_differs_only_at_level_boundaries() {
        let tv = LevelMapper::new(2, 5).unwrap();
        let d2 = LevelMapper {
            rule: LevelRule::Detectron2,
            ..tv
        };
        let edge = [0.0, 0.0, 223.9999, 224.0];
        assert_eq!(tv.level(&edge), Some(2));
        assert_eq!(d2.level(&edge), Some(1));
        for side in [1.0f32, 50.0, 112.0, 224.0, 300.0, 448.0, 1e5] {
            let b = [0.0, 0.0, side, side];
            assert_eq!(tv.level(&b), d2.level(&b), "{side}");
        }
        assert_eq!(d2.level(&[0.0, 0.0, 0.0, 0.0]), Some(0));
        assert_eq!(d2.level(&[f32::NAN, 0.0, 1.0, 1.0]), None);
    }

    /// mmdet 1.x: `floor(log2(sqrt((w + 1)(h + 1)) / 56 + 1e-6))` from the first level.
    #[test]
    fn mmdet_v1_rule_by_hand() {
        // MultiScaleRoIAlign sets the canonical level to the first one (k_min) for this rule.
        let m = LevelMapper {
            canonical_scale: 56,
            canonical_level: 2,
            rule: LevelRule::MmdetV1,
            ..LevelMapper::new(2, 5).unwrap()
        };
        // Inclusive sizes: [0, 0, 111, 111] is 112 pixels wide, exactly 2·56 → level 1.
        assert_eq!(m.level(&[0.0, 0.0, 111.0, 111.0]), Some(1));
        assert_eq!(m.level(&[0.0, 0.0, 110.0, 111.0]), Some(0));
        // 56 exactly: the 1e-6 inside the logarithm keeps it at level 0, not below.
        assert_eq!(m.level(&[0.0, 0.0, 55.0, 55.0]), Some(0));
        assert_eq!(m.level(&[0.0, 0.0, 54.0, 54.0]), Some(0));
        assert_eq!(m.level(&[0.0, 0.0, 223.0, 223.0]), Some(2));
        assert_eq!(m.level(&[0.0, 0.0, 447.0, 447.0]), Some(3));
        assert_eq!(m.level(&[0.0, 0.0, 446.0, 447.0]), Some(2));
        assert_eq!(m.level(&[0.0, 0.0, 1e6, 1e6]), Some(3));
        // A one-pixel box [5, 5, 5, 5] has area 1, not 0.
        assert_eq!(m.level(&[5.0, 5.0, 5.0, 5.0]), Some(0));
        assert_eq!(m.level(&[f32::NAN, 0.0, 1.0, 1.0]), None);
        assert_eq!(m.level(&[5.0, 0.0, 1.0, 10.0]), None); // (w + 1) < 0: negative area
    }

    #[test]
    fn mmdet_v1_pools_with_plus_one_roi_align_on_its_level() {
        let feats: Vec<Array4<f32>> = [(64usize, 96usize), (32, 48), (16, 24), (8, 12)]
            .iter()
            .enumerate()
            .map(|(l, &(h, w))| {
                Array::from_shape_fn((1, 3, h, w), |(_, c, y, x)| {
                    (l * 5 + c) as f32 + 0.3 * y as f32 - 0.11 * x as f32
                })
            })
            .collect();
        let views: Vec<_> = feats.iter().map(|f| f.view()).collect();
        // Levels 0, 1, 2, 3 and a box smaller than one stride (mmdet keeps its size < 1).
        let boxes = [
            [3.0, 4.0, 60.0, 40.0],
            [10.0, 20.0, 150.0, 130.0],
            [0.0, 0.0, 250.0, 255.0],
            [-100.0, -100.0, 383.0, 400.0],
            [100.0, 50.0, 101.5, 51.0],
        ];
        let m = MultiScaleRoIAlign::mmdet_v1(7, 2);
        let scales = [0.25, 0.125, 0.0625, 0.03125];
        let mut ws = RoiAlignWorkspace::new();
        let got = m
            .forward_with_scales(&mut ws, &views, &[&boxes], &scales)
            .unwrap();
        for (k, (b, level)) in boxes.iter().zip([0, 1, 2, 3, 0]).enumerate() {
            let p = RoiAlignParams {
                plus_one_end: true,
                sampling_ratio: 2,
                ..RoiAlignParams::new(7, scales[level] as f32)
            };
            let want =
                roi_align_reference(views[level], &[[0.0, b[0], b[1], b[2], b[3]]], &p).unwrap();
            assert_eq!(
                got.index_axis(Axis(0), k),
                want.index_axis(Axis(0), 0),
                "{k}"
            );
        }
        // The same scales inferred from the image size give the same result.
        let inferred = m.forward(&views, &[&boxes], &[(256, 384)]).unwrap();
        assert_eq!(got, inferred);
        assert_eq!(
            m.forward_reference(&views, &[&boxes], &[(256, 384)])
                .unwrap(),
            got
        );
        // Given two levels, mmdet clamps to the second.
        let two = m
            .forward_with_scales(&mut ws, &views[..2], &[&boxes[3..4]], &scales[..2])
            .unwrap();
        let p = RoiAlignParams {
            plus_one_end: true,
            sampling_ratio: 2,
            ..RoiAlignParams::new(7, 0.125)
        };
        let b = boxes[3];
        let want = roi_align_reference(views[1], &[[0.0, b[0], b[1], b[2], b[3]]], &p).unwrap();
        assert_eq!(two, want);
        // Scales must fit the levels.
        assert!(m
            .forward_with_scales(&mut ws, &views, &[&boxes], &scales[..3])
            .is_err());
        assert!(m
            .forward_with_scales(&mut ws, &views[..1], &[&boxes], &[0.0])
            .is_err());
    }

    #[test]
    fn scales_and_levels_of_an_fpn() {
        let (scales, m) = setup_scales(&[200, 100, 50, 25], &[(800, 1216), (790, 1000)]).unwrap();
        assert_eq!(scales, vec![0.25, 0.125, 0.0625, 0.03125]);
        assert_eq!((m.k_min, m.k_max), (2, 5));
        assert!(setup_scales(&[200], &[]).is_err());
        assert!(infer_scale(10, 0).is_err());
    }

    #[test]
    fn fast_equals_reference() {
        let feats: Vec<Array4<f32>> = [(16usize, 20usize), (8, 10), (4, 5), (2, 3)]
            .iter()
            .enumerate()
            .map(|(l, &(h, w))| {
                Array::from_shape_fn((2, 5, h, w), |(b, c, y, x)| {
                    (l * 7 + b * 3 + c) as f32 + 0.1 * y as f32 - 0.07 * x as f32
                })
            })
            .collect();
        let views: Vec<_> = feats.iter().map(|f| f.view()).collect();
        let b0 = [
            [0.0, 0.0, 10.0, 10.0],
            [5.0, 5.0, 60.0, 50.0],
            [0.0, 0.0, 63.0, 63.0],
        ];
        let b1 = [
            [1.0, 2.0, 3.0, 4.0],
            [f32::NAN, 0.0, 1.0, 1.0],
            [-10.0, -10.0, 200.0, 90.0],
        ];
        let boxes: [&[[f32; 4]]; 2] = [&b0, &b1];
        let shapes = [(64, 80), (60, 80)];
        for (o, s) in [(7, 2), (3, -1), (2, 1)] {
            let m = MultiScaleRoIAlign::new(o, s);
            let a = m.forward_reference(&views, &boxes, &shapes).unwrap();
            let b = m.forward(&views, &boxes, &shapes).unwrap();
            assert_eq!(a, b);
            assert_eq!(a.dim(), (6, 5, o, o));
            // The NaN box gives zeros.
            assert!(b.index_axis(Axis(0), 4).iter().all(|&v| v == 0.0));
        }
        // One level: plain roi_align with its scale.
        let m = MultiScaleRoIAlign::new(2, 2);
        let one = m.forward(&views[..1], &boxes, &shapes).unwrap();
        assert_eq!(
            one,
            m.forward_reference(&views[..1], &boxes, &shapes).unwrap()
        );
        // An empty output size is an empty result, whatever the sampling.
        let empty = MultiScaleRoIAlign::new(0, -1)
            .forward(&views, &boxes, &shapes)
            .unwrap();
        assert_eq!(empty.dim(), (6, 5, 0, 0));
        // Shape errors.
        assert!(m.forward(&[], &boxes, &shapes).is_err());
        let three: [&[[f32; 4]]; 3] = [&b0, &b1, &b0];
        assert!(m.forward(&views, &three, &shapes).is_err());
    }
}
