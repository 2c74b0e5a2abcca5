//! torchvision's `AnchorGenerator` (`torchvision/models/detection/anchor_utils.py`).
//!
//! Cell anchors per level: for each aspect ratio `ar` (height / width) and size `s`,
//! `h_ratio = sqrt(ar)`, `w_ratio = 1 / h_ratio`, `ws = w_ratio·s`, `hs = h_ratio·s`, and the
//! zero-centred box `round([-ws, -hs, ws, hs] / 2)` (`f32`, round half to even), ordered
//! ratio-major. Grid anchors: every cell anchor shifted by `(x·stride_w, y·stride_h)` for
//! each grid cell (no half-stride offset), cells row-major, anchors innermost; the stride is
//! `image_size // grid_size` of the padded batch tensor.
//!
//! [`AnchorGenerator::detectron2`] is Detectron2's `DefaultAnchorGenerator`
//! (`detectron2/modeling/anchor_generator.py`): cell anchors size-major, `w = sqrt(size² / ar)`,
//! `h = ar·w` in f64 and **not rounded**, `[-w/2, -h/2, w/2, h/2]` cast to f32; grid shifts
//! `offset·stride + x·stride` with the level's own stride (4, 8, ... from the feature's name),
//! not one computed from the image size.

use super::OpError;

const OP: &str = "AnchorGenerator";

/// torchvision `AnchorGenerator`.
#[derive(Clone, Debug, PartialEq)]
pub struct AnchorGenerator {
    sizes: Vec<Vec<f32>>,
    aspect_ratios: Vec<Vec<f32>>,
    cell_anchors: Vec<Vec<[f32; 4]>>,
    /// Shift of the grid in strides (Detectron2's `ANCHOR_GENERATOR.OFFSET`; 0 in torchvision).
    offset: f64,
}

impl AnchorGenerator {
    /// One `sizes[i]`/`aspect_ratios[i]` pair per feature level.
    pub fn new(
        sizes: Vec<Vec<f32>>,
        aspect_ratios: Vec<Vec<f32>>,
    ) -> Result<AnchorGenerator, OpError> {
        if sizes.len() != aspect_ratios.len() {
            return Err(OpError::shape(
                OP,
                format!(
                    "{} size lists but {} aspect-ratio lists",
                    sizes.len(),
                    aspect_ratios.len()
                ),
            ));
        }
        let cell_anchors = sizes
            .iter()
            .zip(&aspect_ratios)
            .map(|(s, a)| generate_anchors(s, a))
            .collect();
        Ok(AnchorGenerator {
            sizes,
            aspect_ratios,
            cell_anchors,
            offset: 0.0,
        })
    }

    /// Detectron2's `DefaultAnchorGenerator`: unrounded cell anchors, size-major, and the
    /// grid shifted by `offset` strides. Use [`AnchorGenerator::grid_anchors`] with the levels'
    /// strides.
    pub fn detectron2(
        sizes: Vec<Vec<f32>>,
        aspect_ratios: Vec<Vec<f32>>,
        offset: f64,
    ) -> Result<AnchorGenerator, OpError> {
        let mut g = AnchorGenerator::new(sizes, aspect_ratios)?;
        g.cell_anchors = g
            .sizes
            .iter()
            .zip(&g.aspect_ratios)
            .map(|(s, a)| detectron2_cell_anchors(s, a))
            .collect();
        g.offset = offset;
        Ok(g)
    }

    /// Mask R-CNN / Faster R-CNN FPN defaults: sizes 32..512 (one per level), ratios
    /// (0.5, 1, 2) on each of the 5 levels.
    pub fn rcnn_fpn_default() -> AnchorGenerator {
        let sizes: Vec<Vec<f32>> = [32.0, 64.0, 128.0, 256.0, 512.0]
            .iter()
            .map(|&s| vec![s])
            .collect();
        let ratios = vec![vec![0.5, 1.0, 2.0]; 5];
        let cell_anchors = sizes
            .iter()
            .zip(&ratios)
            .map(|(s, a)| generate_anchors(s, a))
            .collect();
        AnchorGenerator {
            sizes,
            aspect_ratios: ratios,
            cell_anchors,
            offset: 0.0,
        }
    }

    /// The zero-centred anchors of each level.
    pub fn cell_anchors(&self) -> &[Vec<[f32; 4]>] {
        &self.cell_anchors
    }

    pub fn num_anchors_per_location(&self) -> Vec<usize> {
        self.sizes
            .iter()
            .zip(&self.aspect_ratios)
            .map(|(s, a)| s.len() * a.len())
            .collect()
    }

    /// Anchors of each level for grids `(height, width)` with strides `(stride_h, stride_w)`.
    pub fn grid_anchors(
        &self,
        grid_sizes: &[(usize, usize)],
        strides: &[(i64, i64)],
    ) -> Result<Vec<Vec<[f32; 4]>>, OpError> {
        if grid_sizes.len() != strides.len() || grid_sizes.len() != self.cell_anchors.len() {
            return Err(OpError::shape(
                OP,
                format!(
                    "{} grids, {} strides and {} anchor levels must match",
                    grid_sizes.len(),
                    strides.len(),
                    self.cell_anchors.len()
                ),
            ));
        }
        Ok(grid_sizes
            .iter()
            .zip(strides)
            .zip(&self.cell_anchors)
            .map(|((&(gh, gw), &(sh, sw)), base)| {
                let mut out = Vec::with_capacity(gh * gw * base.len());
                // torch.arange(offset·stride, n·stride, stride): f64 values cast to f32.
                let shift = |i: usize, stride: i64| {
                    (self.offset * stride as f64 + (i as i64 * stride) as f64) as f32
                };
                for y in 0..gh {
                    let sy = shift(y, sh);
                    for x in 0..gw {
                        let sx = shift(x, sw);
                        for a in base {
                            out.push([sx + a[0], sy + a[1], sx + a[2], sy + a[3]]);
                        }
                    }
                }
                out
            })
            .collect())
    }

    /// torchvision `forward` for one image tensor of size `(H, W)` (the padded batch) and
    /// feature grids `(h, w)`: strides `H // h`, `W // w`. Returns the anchors per level
    /// (torchvision concatenates them; `concat()` the result for that).
    pub fn generate(
        &self,
        image_size: (usize, usize),
        grid_sizes: &[(usize, usize)],
    ) -> Result<Vec<Vec<[f32; 4]>>, OpError> {
        let strides = grid_sizes
            .iter()
            .map(|&(gh, gw)| {
                if gh == 0 || gw == 0 {
                    Err(OpError::invalid(
                        OP,
                        format!("empty feature grid {gh}x{gw}"),
                    ))
                } else {
                    Ok(((image_size.0 / gh) as i64, (image_size.1 / gw) as i64))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.grid_anchors(grid_sizes, &strides)
    }
}

/// Zero-centred, rounded cell anchors for one level (torchvision `generate_anchors`).
pub fn generate_anchors(scales: &[f32], aspect_ratios: &[f32]) -> Vec<[f32; 4]> {
    let mut out = Vec::with_capacity(scales.len() * aspect_ratios.len());
    for &ar in aspect_ratios {
        let h_ratio = ar.sqrt();
        let w_ratio = 1.0 / h_ratio;
        for &s in scales {
            let ws = w_ratio * s;
            let hs = h_ratio * s;
            out.push([
                (-ws / 2.0).round_ties_even(),
                (-hs / 2.0).round_ties_even(),
                (ws / 2.0).round_ties_even(),
                (hs / 2.0).round_ties_even(),
            ]);
        }
    }
    out
}

/// Zero-centred cell anchors for one level as Detectron2's `generate_cell_anchors`: for each
/// size, for each aspect ratio, `w = sqrt(size² / ar)`, `h = ar·w` (f64), not rounded.
pub fn detectron2_cell_anchors(sizes: &[f32], aspect_ratios: &[f32]) -> Vec<[f32; 4]> {
    let mut out = Vec::with_capacity(sizes.len() * aspect_ratios.len());
    for &size in sizes {
        let area = f64::from(size).powi(2);
        for &ar in aspect_ratios {
            let w = (area / f64::from(ar)).sqrt();
            let h = f64::from(ar) * w;
            out.push([
                (-w / 2.0) as f32,
                (-h / 2.0) as f32,
                (w / 2.0) as f32,
                (h / 2.0) as f32,
            ]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cell_anchors() {
        let g = AnchorGenerator::rcnn_fpn_default();
        // Size 32: ratio 0.5 → w = 32·sqrt(2) = 45.25, h = 22.63 → [-23, -11, 23, 11].
        assert_eq!(
            g.cell_anchors()[0],
            vec![
                [-23.0, -11.0, 23.0, 11.0],
                [-16.0, -16.0, 16.0, 16.0],
                [-11.0, -23.0, 11.0, 23.0]
            ]
        );
        assert_eq!(g.num_anchors_per_location(), vec![3; 5]);
        // Half-to-even: ws/2 = 2.5 rounds to 2.
        assert_eq!(
            generate_anchors(&[5.0], &[1.0]),
            vec![[-2.0, -2.0, 2.0, 2.0]]
        );
    }

    #[test]
    fn grid_by_hand() {
        let g = AnchorGenerator::new(vec![vec![16.0]], vec![vec![1.0]]).unwrap();
        let a = g.generate((64, 96), &[(2, 3)]).unwrap();
        assert_eq!(a[0].len(), 6);
        // Stride 32: cell (y=1, x=2) is anchor 5 centred at (64, 32).
        assert_eq!(a[0][5], [56.0, 24.0, 72.0, 40.0]);
        assert!(g.generate((64, 96), &[(0, 3)]).is_err());
        assert!(g.generate((64, 96), &[(2, 3), (1, 1)]).is_err());
        assert!(AnchorGenerator::new(vec![vec![16.0]], vec![]).is_err());
    }

    #[test]
    fn detectron2_anchors_are_unrounded_and_offset() {
        let g = AnchorGenerator::detectron2(vec![vec![32.0]], vec![vec![0.5, 1.0]], 0.5).unwrap();
        // Size 32, ratio 0.5: w = sqrt(2048) = 45.2548.., h = 22.6274..
        let w = (2048f64).sqrt();
        assert_eq!(
            g.cell_anchors()[0][0],
            [
                (-w / 2.0) as f32,
                (-w / 4.0) as f32,
                (w / 2.0) as f32,
                (w / 4.0) as f32
            ]
        );
        let a = g.grid_anchors(&[(1, 2)], &[(4, 4)]).unwrap();
        // Cell x = 1 with offset 0.5 is centred at 4 + 2 = 6.
        assert_eq!(a[0][3], [-10.0, -14.0, 22.0, 18.0]);
    }
}
