//! DensePose results on instances (from `roi_densepose_head`), as the sinks read them:
//! `densepose_boxes` i64 `[N, 4]` (x, y, w, h of each integer box, original pixels),
//! `densepose_labels` u8 `[N, Hb, Wb]` (part 1..24, 0 background) and `densepose_uv` f32
//! `[N, 2, Hb, Wb]`, box-local: instance `k` fills the top-left `h x w` of its planes; and
//! `densepose_image_size` i64 `[N, 2]`, the original image's (height, width).
//!
//! - [`DensePose::results_json`]: DensePose's compressed chart result
//!   (`compress_quantized_densepose_chart_result` of `quantize_densepose_chart_result`):
//!   `{"labels_uv_str": base64 of a PNG of the [h, w, 3] u8 image (I, U·255, V·255, each
//!   clamped to 0..255 and truncated), "shape_chw": [3, h, w]}`;
//! - [`DensePose::mask_plane`]: the instance's image-size mask (label > 0), as DensePose's
//!   `ToMaskConverter` writes `segmentation`;
//! - [`DensePose::draw`]: an overlay with a colour per body part and the U and V isolines.

use base64::Engine as _;
use plugin_sdk::{DType, NodeError, Tensor, Value};

/// The DensePose tensors of one instances value, checked against each other.
pub struct DensePose<'a> {
    boxes: &'a [i64],
    image_size: &'a [i64],
    labels: &'a [u8],
    uv: &'a [f32],
    /// Plane size `(Hb, Wb)`.
    plane: (usize, usize),
}

/// Body parts of DensePose's charts (labels 1..24).
pub const NUM_PARTS: usize = 24;

/// The largest image side a DensePose result may declare (its mask is allocated at that size).
const MAX_IMAGE_SIDE: i64 = 1 << 16;

/// U and V isolines are drawn at multiples of this.
const ISOLINE_STEP: f32 = 0.1;

fn expect(t: &Tensor, name: &str, dtype: DType, dims: &[usize]) -> Result<(), NodeError> {
    if t.dtype() != dtype || t.shape() != dims {
        return Err(NodeError::new(format!(
            "tensor \"{name}\" must be {dtype} {dims:?} (roi_densepose_head's layout), got {}",
            t.describe()
        )));
    }
    Ok(())
}

impl<'a> DensePose<'a> {
    /// The DensePose tensors of `value`, or `None` when it has none.
    pub fn from_value(value: &'a Value) -> Result<Option<DensePose<'a>>, NodeError> {
        let Some(boxes) = value.get("densepose_boxes") else {
            return Ok(None);
        };
        let image_size = value.tensor("densepose_image_size")?;
        let labels = value.tensor("densepose_labels")?;
        let uv = value.tensor("densepose_uv")?;
        let n = boxes.shape().first().copied().unwrap_or(0);
        expect(boxes, "densepose_boxes", DType::I64, &[n, 4])?;
        expect(image_size, "densepose_image_size", DType::I64, &[n, 2])?;
        let plane = match labels.shape() {
            [_, h, w] => (*h, *w),
            _ => (0, 0),
        };
        expect(
            labels,
            "densepose_labels",
            DType::U8,
            &[n, plane.0, plane.1],
        )?;
        expect(uv, "densepose_uv", DType::F32, &[n, 2, plane.0, plane.1])?;
        let d = DensePose {
            boxes: boxes.as_slice::<i64>()?,
            image_size: image_size.as_slice::<i64>()?,
            labels: labels.as_slice::<u8>()?,
            uv: uv.as_slice::<f32>()?,
            plane,
        };
        for k in 0..n {
            let size = &d.image_size[2 * k..2 * k + 2];
            if size.iter().any(|&v| !(1..=MAX_IMAGE_SIDE).contains(&v)) {
                return Err(NodeError::new(format!(
                    "densepose_image_size[{k}] is {size:?}; each side must be 1..={MAX_IMAGE_SIDE}"
                )));
            }
            let [_, _, w, h] = d.box_of(k);
            if h as usize > plane.0 || w as usize > plane.1 {
                return Err(NodeError::new(format!(
                    "densepose_boxes[{k}] is {w}x{h}, larger than the {}x{} planes of densepose_labels",
                    plane.1, plane.0
                )));
            }
        }
        Ok(Some(d))
    }

    /// Instance `k`'s box `(x, y, w, h)`, with `w` and `h` at least 1 as its planes are.
    fn box_of(&self, k: usize) -> [i64; 4] {
        let b = &self.boxes[4 * k..4 * k + 4];
        [b[0], b[1], b[2].max(1), b[3].max(1)]
    }

    /// Instance `k`'s `(label, u, v)` at box pixel `(x, y)`.
    fn at(&self, k: usize, x: usize, y: usize) -> (u8, f32, f32) {
        let (hb, wb) = self.plane;
        let i = (k * hb + y) * wb + x;
        let uv = (k * 2 * hb + y) * wb + x;
        (self.labels[i], self.uv[uv], self.uv[uv + hb * wb])
    }

    /// `quantize_densepose_chart_result`: `[h, w, 3]` u8 (I, U·255, V·255), row-major.
    pub fn quantized(&self, k: usize) -> (usize, usize, Vec<u8>) {
        let [_, _, w, h] = self.box_of(k);
        let (w, h) = (w as usize, h as usize);
        // `(uv * 255).clamp(0, 255).byte()`: truncation, NaN to 0.
        let q = |v: f32| (v * 255.0).clamp(0.0, 255.0) as u8;
        let mut out = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let (i, u, v) = self.at(k, x, y);
                out.extend_from_slice(&[i, q(u), q(v)]);
            }
        }
        (h, w, out)
    }

    /// DensePose's compressed result of instance `k`, as a JSON object.
    pub fn results_json(&self, k: usize) -> Result<String, NodeError> {
        let (h, w, rgb) = self.quantized(k);
        let mut png_bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut png_bytes, w as u32, h as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut writer = enc
                .write_header()
                .map_err(|e| NodeError::new(format!("densepose PNG: {e}")))?;
            writer
                .write_image_data(&rgb)
                .map_err(|e| NodeError::new(format!("densepose PNG: {e}")))?;
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(&png_bytes);
        Ok(format!(
            "{{\"labels_uv_str\":\"{b64}\",\"shape_chw\":[3,{h},{w}]}}"
        ))
    }

    /// Instance `k`'s image `(height, width)`.
    pub fn image_size(&self, k: usize) -> (usize, usize) {
        let s = &self.image_size[2 * k..2 * k + 2];
        (s[0].max(0) as usize, s[1].max(0) as usize)
    }

    /// Instance `k`'s image-size mask: its box pixels with a label > 0 (`ToMaskConverter`),
    /// clipped to the image; row-major `(height, width)` of [`image_size`](Self::image_size).
    pub fn mask_plane(&self, k: usize) -> Vec<u8> {
        let (height, width) = self.image_size(k);
        let mut out = vec![0u8; height * width];
        self.for_each_pixel(k, height, width, |ix, iy, label, _, _| {
            if label > 0 {
                out[iy * width + ix] = 1;
            }
        });
        out
    }

    /// Calls `f(image x, image y, label, u, v)` for instance `k`'s box pixels inside an
    /// `height x width` image.
    fn for_each_pixel(
        &self,
        k: usize,
        height: usize,
        width: usize,
        mut f: impl FnMut(usize, usize, u8, f32, f32),
    ) {
        let [bx, by, w, h] = self.box_of(k);
        for y in 0..h {
            let iy = by + y;
            if iy < 0 || iy as usize >= height {
                continue;
            }
            for x in 0..w {
                let ix = bx + x;
                if ix < 0 || ix as usize >= width {
                    continue;
                }
                let (label, u, v) = self.at(k, x as usize, y as usize);
                f(ix as usize, iy as usize, label, u, v);
            }
        }
    }

    /// Draws instance `k` on RGB `pixels` (`height x width`): each part in its colour at
    /// `alpha` percent, and the pixels where U or V crosses a multiple of 0.1 (within one
    /// part) as isolines, U in white and V in black.
    pub fn draw(&self, k: usize, pixels: &mut [u8], height: usize, width: usize, alpha: u32) {
        let [bx, by, _, _] = self.box_of(k);
        let band = |v: f32| (v / ISOLINE_STEP).floor() as i64;
        self.for_each_pixel(k, height, width, |ix, iy, label, u, v| {
            if label == 0 {
                return;
            }
            let (x, y) = ((ix as i64 - bx) as usize, (iy as i64 - by) as usize);
            // An isoline pixel: its right or lower neighbour (same part) is in another band.
            let crosses = |get: fn(&(u8, f32, f32)) -> f32| {
                [(x + 1, y), (x, y + 1)].iter().any(|&(nx, ny)| {
                    let [_, _, w, h] = self.box_of(k);
                    if nx >= w as usize || ny >= h as usize {
                        return false;
                    }
                    let n = self.at(k, nx, ny);
                    n.0 == label && band(get(&n)) != band(get(&(label, u, v)))
                })
            };
            let i = (iy * width + ix) * 3;
            let color = if crosses(|p| p.1) {
                [255, 255, 255]
            } else if crosses(|p| p.2) {
                [0, 0, 0]
            } else {
                let c = part_color(label);
                let mut blended = [0u8; 3];
                for (b, (&p, &c)) in blended.iter_mut().zip(pixels[i..i + 3].iter().zip(&c)) {
                    *b = ((u32::from(p) * (100 - alpha) + u32::from(c) * alpha + 50) / 100) as u8;
                }
                blended
            };
            pixels[i..i + 3].copy_from_slice(&color);
        });
    }
}

/// The colour of body part `label` (1..24): a walk around the hue circle, so that parts
/// that are numbered next to each other differ.
pub fn part_color(label: u8) -> [u8; 3] {
    let hue = ((u32::from(label) * 7) % NUM_PARTS as u32) as f32 / NUM_PARTS as f32 * 6.0;
    let x = 1.0 - ((hue % 2.0) - 1.0).abs();
    let (r, g, b) = match hue as u32 {
        0 => (1.0, x, 0.0),
        1 => (x, 1.0, 0.0),
        2 => (0.0, 1.0, x),
        3 => (0.0, x, 1.0),
        4 => (x, 0.0, 1.0),
        _ => (1.0, 0.0, x),
    };
    [r, g, b].map(|c: f32| (40.0 + 215.0 * c) as u8)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use plugin_sdk::PortKind;

    /// Two instances: a 3x2 box at (1, 1) and a 1x1 box at (0, 0), in 2x3 planes.
    pub(crate) fn value() -> Value {
        let labels: Vec<u8> = vec![0, 5, 5, 1, 1, 0, /* second */ 7, 0, 0, 0, 0, 0];
        let mut uv = vec![0f32; 2 * 2 * 2 * 3];
        // Instance 0: U 0.05 / 0.15 across the row, V 1.5 (clamps to 255).
        uv[1] = 0.05;
        uv[2] = 0.15;
        uv[6 + 1] = 1.5;
        uv[12] = 0.5; // instance 1, U
        uv[18] = -0.2; // instance 1, V (clamps to 0)
        Value::new(PortKind::Instances)
            .with(
                "densepose_boxes",
                Tensor::from_vec(&[2, 4], vec![1i64, 1, 3, 2, 0, 0, 1, 1]).unwrap(),
            )
            .with(
                "densepose_image_size",
                Tensor::from_vec(&[2, 2], vec![3i64, 3, 3, 3]).unwrap(),
            )
            .with(
                "densepose_labels",
                Tensor::from_vec(&[2, 2, 3], labels).unwrap(),
            )
            .with("densepose_uv", Tensor::from_vec(&[2, 2, 2, 3], uv).unwrap())
    }

    #[test]
    fn quantized_mask_and_compressed_result() {
        let v = value();
        let d = DensePose::from_value(&v).unwrap().unwrap();
        let (h, w, q) = d.quantized(0);
        assert_eq!((h, w), (2, 3));
        assert_eq!(&q[..9], &[0, 0, 0, 5, 12, 255, 5, 38, 0]);
        let (_, _, q1) = d.quantized(1);
        assert_eq!(q1, vec![7, 127, 0]);
        let mask = d.mask_plane(0);
        assert_eq!(mask, vec![0, 0, 0, 0, 0, 1, 0, 1, 1]);
        let json: serde_json::Value = serde_json::from_str(&d.results_json(0).unwrap()).unwrap();
        assert_eq!(json["shape_chw"], serde_json::json!([3, 2, 3]));
        let png_bytes = base64::engine::general_purpose::STANDARD
            .decode(json["labels_uv_str"].as_str().unwrap())
            .unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut buf).unwrap();
        assert_eq!(&buf[..18], &q[..]);
        // Drawing stays inside the image and colours only labelled pixels.
        let mut pixels = vec![100u8; 3 * 3 * 3];
        d.draw(0, &mut pixels, 3, 3, 60);
        let px = |x: usize, y: usize| &pixels[(y * 3 + x) * 3..(y * 3 + x) * 3 + 3];
        assert_eq!(px(0, 0), &[100, 100, 100]);
        assert_eq!(px(1, 1), &[100, 100, 100], "background label");
        assert_eq!(px(2, 1), &[255, 255, 255], "U crosses 0.1 to the right");
        assert!(px(1, 2) != [100, 100, 100] && px(1, 2) != [255, 255, 255]);
    }

    #[test]
    fn inconsistent_tensors_are_named() {
        let v = value().with(
            "densepose_uv",
            Tensor::from_vec(&[2, 2, 3], vec![0f32; 12]).unwrap(),
        );
        let err = DensePose::from_value(&v).err().unwrap().to_string();
        assert!(err.contains("densepose_uv"), "{err}");
        let v = value().with(
            "densepose_boxes",
            Tensor::from_vec(&[2, 4], vec![0i64, 0, 9, 9, 0, 0, 1, 1]).unwrap(),
        );
        let err = DensePose::from_value(&v).err().unwrap().to_string();
        assert!(err.contains("larger than"), "{err}");
        let v = value().with(
            "densepose_image_size",
            Tensor::from_vec(&[2, 2], vec![3i64, 3, 1 << 40, 3]).unwrap(),
        );
        let err = DensePose::from_value(&v).err().unwrap().to_string();
        assert!(err.contains("densepose_image_size[1]"), "{err}");
        assert!(DensePose::from_value(&Value::new(PortKind::Instances))
            .unwrap()
            .is_none());
    }

    #[test]
    fn part_colours_are_distinct() {
        let colours: std::collections::BTreeSet<[u8; 3]> =
            (1..=NUM_PARTS as u8).map(part_color).collect();
        assert_eq!(colours.len(), NUM_PARTS);
    }
}
