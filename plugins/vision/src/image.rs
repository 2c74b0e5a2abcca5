//! The pre-processed image as heads read it: the tensor with its `image_size` (resized,
//! before padding) and `original_size`, and the `image` input port that carries it.

use plugin_sdk::{DType, NodeSpec, PortKind, PortSpec, Value};

use crate::error::ModelError;

/// What the heads need to know about the preprocessed image: the padded tensor's size (the
/// anchors' strides), the resized size before padding (clipping, RoIAlign's scales) and the
/// original size (pasting masks), all `(height, width)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageSizes {
    pub padded: (usize, usize),
    pub resized: (usize, usize),
    pub original: (usize, usize),
}

impl ImageSizes {
    /// Reads an `image` value of `rcnn_preprocess` (`tensor` `[3, H, W]` or `[1, 3, H, W]`
    /// with `image_size` and `original_size`).
    pub fn from_value(node: &str, image: &Value) -> Result<ImageSizes, ModelError> {
        match Self::from_batch(node, image)? {
            (sizes, 1) => Ok(sizes),
            (_, n) => Err(ModelError::input(format!(
                "{node}: the image tensor holds {n} images; this head takes one (from rcnn_preprocess)"
            ))),
        }
    }

    /// [`ImageSizes::from_value`] for a tensor that may hold several views of one photo
    /// (`[N, 3, H, W]`, e.g. CornerNet's image and its mirror): the sizes and `N`.
    pub fn from_batch(node: &str, image: &Value) -> Result<(ImageSizes, usize), ModelError> {
        let t = image.tensor("tensor").map_err(ModelError::Input)?;
        let s = t.shape();
        let (padded, n) = match s.len() {
            3 => ((s[1], s[2]), 1),
            4 if s[0] > 0 => ((s[2], s[3]), s[0]),
            _ => {
                return Err(ModelError::input(format!(
                    "{node}: the image tensor must be [3, H, W] (one image, from rcnn_preprocess), got {}",
                    t.describe()
                )))
            }
        };
        let pair = |name: &str| -> Result<(usize, usize), ModelError> {
            let t = image.get(name).ok_or_else(|| {
                ModelError::input(format!(
                    "{node}: the image value has no \"{name}\"; connect the `image` output of rcnn_preprocess"
                ))
            })?;
            let v = t.as_slice::<i64>().map_err(|_| {
                ModelError::input(format!(
                    "{node}: \"{name}\" must be i64 [2], got {}",
                    t.describe()
                ))
            })?;
            match v {
                [h, w] if *h > 0 && *w > 0 => Ok((*h as usize, *w as usize)),
                _ => Err(ModelError::input(format!(
                    "{node}: \"{name}\" must hold a positive (height, width), got {v:?}"
                ))),
            }
        };
        let resized = pair("image_size")?;
        if resized.0 > padded.0 || resized.1 > padded.1 {
            return Err(ModelError::input(format!(
                "{node}: image_size {resized:?} exceeds the padded tensor {padded:?}"
            )));
        }
        let sizes = ImageSizes {
            padded,
            resized,
            original: pair("original_size")?,
        };
        Ok((sizes, n))
    }
}

impl ImageSizes {
    /// A box `(x1, y1, x2, y2)` in resized-image pixels scaled to the original image as
    /// torchvision's `resize_boxes` does: per axis by `original / resized`, in f32.
    pub fn box_to_original(&self, b: &[f32; 4]) -> [f32; 4] {
        let ratio_h = self.original.0 as f32 / self.resized.0 as f32;
        let ratio_w = self.original.1 as f32 / self.resized.1 as f32;
        [
            b[0] * ratio_w,
            b[1] * ratio_h,
            b[2] * ratio_w,
            b[3] * ratio_h,
        ]
    }
}

/// The photo of an `image` value (u8 `[H, W, C]`, RGB) as a BGR reader: plane `k` of B, G, R
/// reads channel `bgr[k]` of each pixel. A grayscale photo repeats its channel (what
/// `cv2.imread(..., IMREAD_COLOR)` gives), an alpha channel is not read.
pub struct BgrPixels<'a> {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub pixels: &'a [u8],
    pub bgr: [usize; 3],
}

impl<'a> BgrPixels<'a> {
    pub fn from_value(node: &str, image: &'a Value) -> Result<BgrPixels<'a>, ModelError> {
        let t = image.tensor("image").map_err(ModelError::Input)?;
        let (height, width, channels) = match t.shape() {
            [h, w, c] if *h > 0 && *w > 0 => (*h, *w, *c),
            _ => {
                return Err(ModelError::input(format!(
                    "{node}: the image must be u8 [H, W, C] with H, W > 0, got {}",
                    t.describe()
                )))
            }
        };
        let pixels = t.as_slice::<u8>().map_err(|_| {
            ModelError::input(format!(
                "{node}: the image must be u8, got {}",
                t.describe()
            ))
        })?;
        let bgr = match channels {
            3 | 4 => [2, 1, 0],
            1 => [0, 0, 0],
            c => {
                return Err(ModelError::input(format!(
                    "{node}: the image must have 1, 3 or 4 channels, got {c}"
                )))
            }
        };
        Ok(BgrPixels {
            height,
            width,
            channels,
            pixels,
            bgr,
        })
    }

    /// Plane `k` (0 = B, 1 = G, 2 = R) in row-major order.
    pub fn plane(&self, k: usize) -> impl Iterator<Item = u8> + '_ {
        let src = self.bgr[k];
        self.pixels.chunks_exact(self.channels).map(move |p| p[src])
    }

    /// The photo as interleaved RGB `[H, W, 3]` (grey repeated, alpha dropped), as PIL's
    /// `.convert("RGB")` gives it.
    pub fn rgb(&self) -> Vec<u8> {
        let (r, g, b) = (self.bgr[2], self.bgr[1], self.bgr[0]);
        let mut out = Vec::with_capacity(self.height * self.width * 3);
        for p in self.pixels.chunks_exact(self.channels) {
            out.extend([p[r], p[g], p[b]]);
        }
        out
    }
}

/// The `image` value a pre-processing node emits: `tensor` `[3, H', W']` (row-major planes in
/// `data`), `image_size` `(H', W')` and `original_size` `(H, W)`.
pub fn model_image_value(
    data: Vec<f32>,
    (oh, ow): (usize, usize),
    (h, w): (usize, usize),
) -> Result<Value, ModelError> {
    padded_model_image_value(data, (oh, ow), (oh, ow), (h, w))
}

/// [`model_image_value`] for a tensor padded to `(Hp, Wp)` beyond the resized `(H', W')`.
pub fn padded_model_image_value(
    data: Vec<f32>,
    (ph, pw): (usize, usize),
    (oh, ow): (usize, usize),
    (h, w): (usize, usize),
) -> Result<Value, ModelError> {
    Ok(Value::new(plugin_sdk::PortKind::ModelImage)
        .with("tensor", kernels::Tensor::from_vec(&[3, ph, pw], data)?)
        .with(
            "image_size",
            kernels::Tensor::from_vec(&[2], vec![oh as i64, ow as i64])?,
        )
        .with(
            "original_size",
            kernels::Tensor::from_vec(&[2], vec![h as i64, w as i64])?,
        ))
}

/// The `image` input of a head: the value of rcnn_preprocess (`doc` says what the head reads
/// from it).
pub fn image_input(spec: NodeSpec, doc: &str) -> NodeSpec {
    spec.input(
        PortSpec::new("image", PortKind::ModelImage, doc)
            .dtype(DType::F32)
            .shape("3,H,W"),
    )
}

/// `ResizeShortestEdge.get_output_shape(h, w, short, max_size)`: `(new_h, new_w)`, in f64
/// as Python computes it, each side rounded by `int(x + 0.5)` (Detectron2's test-time resize,
/// for `detectron2_preprocess` and `maskformer_preprocess`).
pub fn shortest_edge_size((h, w): (usize, usize), short: usize, max_size: usize) -> (usize, usize) {
    let (h, w) = (h as f64, w as f64);
    let size = short as f64;
    let scale = size / h.min(w);
    let (mut nh, mut nw) = if h < w {
        (size, scale * w)
    } else {
        (scale * h, size)
    };
    if nh.max(nw) > max_size as f64 {
        let s = max_size as f64 / nh.max(nw);
        nh *= s;
        nw *= s;
    }
    ((nh + 0.5) as usize, (nw + 0.5) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_edge_sizes_as_detectron2() {
        // 264x397: scale 800/264, the long side 1203.03 -> 1203.
        assert_eq!(shortest_edge_size((264, 397), 800, 1333), (800, 1203));
        // A strip: the long side capped at 1333, the short side 1333·150/512 = 390.5 -> 391.
        assert_eq!(shortest_edge_size((150, 512), 800, 1333), (391, 1333));
        assert_eq!(shortest_edge_size((640, 480), 800, 1333), (1067, 800));
    }
}
