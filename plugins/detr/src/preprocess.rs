//! `detr_preprocess`: DETR's validation transform (`datasets/coco.py`, `make_coco_transforms
//! ('val')`): `T.RandomResize([800], max_size=1333)` then `ToTensor` and `Normalize` with
//! ImageNet's statistics.
//!
//! The resize is `datasets/transforms.py`'s `resize` on a PIL image: the size from
//! `get_size_with_aspect_ratio` (below), then torchvision's `F.resize`, i.e. Pillow's
//! bilinear resampling of the 8-bit image ([`kernels::layers::resample`], bit for bit).
//! `ToTensor` divides by 255 and `Normalize` applies `(x - mean) / std` per RGB channel, in
//! f32. One image makes a batch of one, so `nested_tensor_from_tensor_list` adds no padding
//! and the padding mask is empty.

use kernels::layers::resample::{pil_resize_u8, PilFilter};
use plugin_sdk::{
    DType, FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Value,
};

use vision_common::{count_param, model_image_value, BgrPixels, LayerContext, ModelError};

const NODE: &str = "detr_preprocess";
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// `get_size_with_aspect_ratio((w, h), size, max_size)`: the `(height, width)` DETR resizes
/// a `(h, w)` photo to. The short side becomes `size`, unless the long side would then pass
/// `max_size`, in which case the short side is `round(max_size · short / long)` (Python's
/// `round`, half to even); the long side is `int(short_target · long / short)` (truncated).
pub fn target_size((h, w): (usize, usize), size: usize, max_size: Option<usize>) -> (usize, usize) {
    let mut size = size as f64;
    if let Some(max) = max_size {
        let (lo, hi) = (h.min(w) as f64, h.max(w) as f64);
        if hi / lo * size > max as f64 {
            size = (max as f64 * lo / hi).round_ties_even();
        }
    }
    let size_int = size as usize;
    if (w <= h && w == size_int) || (h <= w && h == size_int) {
        return (h, w);
    }
    if w < h {
        (((size * h as f64) / w as f64) as usize, size_int)
    } else {
        (size_int, ((size * w as f64) / h as f64) as usize)
    }
}

pub fn kind() -> NodeKind {
    let spec = NodeSpec::new(
        NODE,
        "DETR's val transform: Pillow bilinear resize (short side 800, long side at most 1333), /255, ImageNet mean and std",
    )
    .input(
        PortSpec::new("image", PortKind::Image, "the photo: u8 [H, W, C] RGB (C = 1, 3 or 4)")
            .dtype(DType::U8),
    )
    .output(PortSpec::new(
        "image",
        PortKind::ModelImage,
        "\"tensor\" f32 [3, H', W'] (RGB, normalised) with \"image_size\" (H', W') and \"original_size\" (H, W) i64 [2]",
    ))
    .param(
        ParamSpec::optional(
            "size",
            ParamType::Int,
            ParamValue::Int(800),
            "target of the short side (T.RandomResize([800]))",
        )
        .range(1.0, 8192.0),
    )
    .param(
        ParamSpec::optional(
            "max_size",
            ParamType::Int,
            ParamValue::Int(1333),
            "limit of the long side (max_size); 0 for none",
        )
        .range(0.0, 8192.0),
    );
    NodeKind::new(spec, |params| {
        Ok(Box::new(DetrPreprocess::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `detr_preprocess` node.
#[derive(Clone, Debug)]
pub struct DetrPreprocess {
    size: usize,
    max_size: Option<usize>,
}

impl DetrPreprocess {
    pub fn new(size: usize, max_size: Option<usize>) -> DetrPreprocess {
        DetrPreprocess { size, max_size }
    }

    pub fn from_params(params: &Params) -> Result<DetrPreprocess, ModelError> {
        let max = count_param(params, "max_size")?;
        Ok(DetrPreprocess::new(
            count_param(params, "size")?,
            (max > 0).then_some(max),
        ))
    }

    /// The node's computation on a u8 `[H, W, C]` image.
    pub fn run(&self, image: &Value) -> Result<Value, ModelError> {
        let px = BgrPixels::from_value(NODE, image)?;
        let (h, w) = (px.height, px.width);
        // Pillow resizes the RGB image (`CocoDetection` converts a grey one to RGB first).
        let rgb = px.rgb();
        let (oh, ow) = target_size((h, w), self.size, self.max_size);
        let resized = pil_resize_u8(&rgb, (h, w, 3), (oh, ow), PilFilter::Bilinear)
            .ctx(|| format!("{NODE} (resize {h}x{w} to {oh}x{ow})"))?;
        let mut data = vec![0f32; 3 * oh * ow];
        for (c, plane) in data.chunks_mut(oh * ow).enumerate() {
            for (dst, px) in plane.iter_mut().zip(resized.chunks_exact(3)) {
                // ToTensor: x / 255 (a f32 division); Normalize: (x - mean) / std.
                *dst = (f32::from(px[c]) / 255.0 - MEAN[c]) / STD[c];
            }
        }
        model_image_value(data, (oh, ow), (h, w))
    }
}

impl Node for DetrPreprocess {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(inputs.value("image")?)?;
        Ok(Outputs::one("image", v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels::Tensor;

    #[test]
    fn sizes_as_get_size_with_aspect_ratio() {
        // chelsea.png (300x451): short side to 800, long side int(800 * 451 / 300).
        assert_eq!(target_size((300, 451), 800, Some(1333)), (800, 1202));
        // A strip 150x512: 800 * 512/150 > 1333, so the short side is round(1333*150/512).
        assert_eq!(target_size((150, 512), 800, Some(1333)), (391, 1334));
        // Already at the size: unchanged.
        assert_eq!(target_size((800, 1000), 800, Some(1333)), (800, 1000));
        assert_eq!(target_size((1000, 800), 800, None), (1000, 800));
        // Portrait.
        assert_eq!(target_size((640, 480), 800, Some(1333)), (1066, 800));
    }

    #[test]
    fn normalised_rgb_planes() {
        let img = Tensor::from_vec(&[1, 1, 3], vec![255u8, 0, 128]).unwrap();
        let out = DetrPreprocess::new(2, None)
            .run(&Value::image(img))
            .unwrap();
        let t = out.tensor("tensor").unwrap();
        assert_eq!(t.shape(), &[3, 2, 2]);
        let v = t.as_slice::<f32>().unwrap();
        assert_eq!(v[0], (1.0 - 0.485) / 0.229);
        assert_eq!(v[4], (0.0 - 0.456) / 0.224);
        assert_eq!(v[8], (128.0f32 / 255.0 - 0.406) / 0.225);
    }
}
