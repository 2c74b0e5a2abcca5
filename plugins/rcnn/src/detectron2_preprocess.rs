//! `detectron2_preprocess`: what Detectron2's `DefaultPredictor` and `GeneralizedRCNN` do to a
//! photo before the backbone (detectron2 @ 02b5c4e2):
//!
//! 1. the photo in the model's `INPUT.FORMAT` (`"BGR"` for the model zoo's MSRA weights);
//! 2. `ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)`: `get_output_shape` in f64 with
//!    `int(x + 0.5)`, and the 8-bit image resized by Pillow's bilinear filter
//!    (`ResizeTransform.apply_image`, [`kernels::layers::resample`], bit for bit);
//! 3. `(x - PIXEL_MEAN) / PIXEL_STD` per channel in f32, on the 0-255 scale;
//! 4. `ImageList.from_tensors`: zeros at the bottom and right up to a multiple of
//!    `size_divisibility` (32 for an FPN).
//!
//! Output: the same `image` value as `rcnn_preprocess` (`tensor` [3, H_pad, W_pad],
//! `image_size`, `original_size`), so the R-CNN heads take either.

use kernels::layers::resample::{pil_resize_u8, PilFilter};
use plugin_sdk::{
    DType, FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Value,
};

use vision_common::{
    count_param, padded_model_image_value, shortest_edge_size, BgrPixels, LayerContext, ModelError,
};

const NODE: &str = "detectron2_preprocess";

pub fn kind() -> NodeKind {
    let spec = NodeSpec::new(
        NODE,
        "Detectron2 DefaultPredictor + GeneralizedRCNN input: BGR, ResizeShortestEdge (800 / 1333, Pillow bilinear), (x - mean) / std on 0-255, pad to 32",
    )
    .input(
        PortSpec::new("image", PortKind::Image, "the image, RGB (grayscale is replicated, alpha dropped)")
            .dtype(DType::U8)
            .shape("H,W,3"),
    )
    .output(
        PortSpec::new(
            "image",
            PortKind::ModelImage,
            "\"tensor\" f32 [3, H', W'] (normalised, resized, padded) with \"image_size\" and \"original_size\" i64 [2]",
        )
        .dtype(DType::F32)
        .shape("3,H,W"),
    )
    .param(
        ParamSpec::optional("min_size", ParamType::Int, ParamValue::Int(800), "INPUT.MIN_SIZE_TEST: the short side")
            .range(1.0, 16384.0),
    )
    .param(
        ParamSpec::optional("max_size", ParamType::Int, ParamValue::Int(1333), "INPUT.MAX_SIZE_TEST: the long side at most")
            .range(1.0, 16384.0),
    )
    .param(ParamSpec::optional(
        "format",
        ParamType::Str,
        ParamValue::Str("BGR".into()),
        "INPUT.FORMAT: the channel order the model takes, \"BGR\" or \"RGB\"",
    ))
    .param(ParamSpec::optional(
        "pixel_mean",
        ParamType::FloatList,
        ParamValue::FloatList(vec![103.53, 116.28, 123.675]),
        "MODEL.PIXEL_MEAN, in the order of `format`, 0-255 scale",
    ))
    .param(ParamSpec::optional(
        "pixel_std",
        ParamType::FloatList,
        ParamValue::FloatList(vec![1.0, 1.0, 1.0]),
        "MODEL.PIXEL_STD, in the order of `format`",
    ))
    .param(
        ParamSpec::optional(
            "size_divisible",
            ParamType::Int,
            ParamValue::Int(32),
            "the padded size is a multiple of this (the backbone's size_divisibility)",
        )
        .range(1.0, 1024.0),
    );
    NodeKind::new(spec, |params| {
        Ok(Box::new(Detectron2Preprocess::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `detectron2_preprocess` node.
#[derive(Clone, Debug)]
pub struct Detectron2Preprocess {
    min_size: usize,
    max_size: usize,
    bgr: bool,
    mean: [f32; 3],
    std: [f32; 3],
    size_divisible: usize,
}

fn triple(params: &Params, name: &'static str) -> Result<[f32; 3], ModelError> {
    let v = params.float_list(name).map_err(ModelError::Input)?;
    match v.as_slice() {
        [a, b, c] if v.iter().all(|x| x.is_finite()) => Ok([*a as f32, *b as f32, *c as f32]),
        _ => Err(ModelError::param(
            name,
            format!("must be 3 finite numbers, one per channel, got {v:?}"),
        )),
    }
}

impl Detectron2Preprocess {
    pub fn from_params(params: &Params) -> Result<Detectron2Preprocess, ModelError> {
        let std = triple(params, "pixel_std")?;
        if std.contains(&0.0) {
            return Err(ModelError::param(
                "pixel_std",
                format!("must not contain 0, got {std:?}"),
            ));
        }
        let bgr = match params.str("format").map_err(ModelError::Input)? {
            "BGR" => true,
            "RGB" => false,
            other => {
                return Err(ModelError::param(
                    "format",
                    format!("must be \"BGR\" or \"RGB\", got \"{other}\""),
                ))
            }
        };
        Ok(Detectron2Preprocess {
            min_size: count_param(params, "min_size")?,
            max_size: count_param(params, "max_size")?,
            bgr,
            mean: triple(params, "pixel_mean")?,
            std,
            size_divisible: count_param(params, "size_divisible")?,
        })
    }

    /// The node's computation on a u8 `[H, W, C]` image.
    pub fn run(&self, image: &Value) -> Result<Value, ModelError> {
        let px = BgrPixels::from_value(NODE, image)?;
        let (h, w) = (px.height, px.width);
        let rgb = px.rgb();
        let pixels = if self.bgr {
            rgb.chunks_exact(3)
                .flat_map(|p| [p[2], p[1], p[0]])
                .collect()
        } else {
            rgb
        };
        let (rh, rw) = shortest_edge_size((h, w), self.min_size, self.max_size);
        if rh == 0 || rw == 0 {
            return Err(ModelError::input(format!(
                "{NODE}: a {h}x{w} photo resizes to {rh}x{rw}; it is too thin to use"
            )));
        }
        let resized = pil_resize_u8(&pixels, (h, w, 3), (rh, rw), PilFilter::Bilinear)
            .ctx(|| format!("{NODE} (resize {h}x{w} to {rh}x{rw})"))?;
        let d = self.size_divisible;
        let (ph, pw) = (rh.div_ceil(d) * d, rw.div_ceil(d) * d);
        let mut data = vec![0f32; 3 * ph * pw];
        for (c, plane) in data.chunks_mut(ph * pw).enumerate() {
            for (row, src) in plane.chunks_mut(pw).zip(resized.chunks_exact(rw * 3)) {
                for (dst, p) in row.iter_mut().zip(src.chunks_exact(3)) {
                    *dst = (f32::from(p[c]) - self.mean[c]) / self.std[c];
                }
            }
        }
        padded_model_image_value(data, (ph, pw), (rh, rw), (h, w))
    }
}

impl Node for Detectron2Preprocess {
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
    fn bgr_planes_on_the_255_scale_padded_with_zeros() {
        let mut p = Params::new();
        for spec in kind().spec.params {
            if let Some(v) = spec.default {
                p.set(&spec.name, v);
            }
        }
        p.set("min_size", ParamValue::Int(1));
        p.set("max_size", ParamValue::Int(1));
        let node = Detectron2Preprocess::from_params(&p).unwrap();
        let img = Tensor::from_vec(&[1, 1, 3], vec![255u8, 0, 128]).unwrap();
        let out = node.run(&Value::image(img)).unwrap();
        let t = out.tensor("tensor").unwrap();
        assert_eq!(t.shape(), &[3, 32, 32]);
        let v = t.as_slice::<f32>().unwrap();
        // Plane 0 is blue (128), plane 2 red (255).
        assert_eq!(v[0], 128.0 - 103.53f32);
        assert_eq!(v[2 * 32 * 32], 255.0 - 123.675f32);
        assert_eq!(v[1], 0.0);
        let p2 = p.with("format", ParamValue::Str("XYZ".into()));
        assert!(Detectron2Preprocess::from_params(&p2)
            .unwrap_err()
            .to_string()
            .contains("format"));
    }
}
