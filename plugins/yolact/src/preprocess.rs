//! `yolact_preprocess`: YOLACT's `FastBaseTransform` as `eval.py` runs it on a photo read
//! with `cv2.imread` (BGR u8): the pixels as f32, resized to `max_size x max_size` (550) with
//! `F.interpolate(..., mode='bilinear', align_corners=False)` (the aspect ratio is not kept:
//! `preserve_aspect_ratio` is False), `(img - MEANS) / STD` with YOLACT's BGR statistics, and
//! the channels reordered to RGB.
//!
//! The engine's images are RGB (`image_source`); the BGR order of the statistics is applied
//! to the matching channels. A grayscale image is repeated to three channels (what
//! `cv2.imread` does), an alpha channel is dropped.

use kernels::layers::resize::resize;
use kernels::layers::ResizeMode;
use ndarray::Array4;
use plugin_sdk::{
    DType, FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Value,
};

use vision_common::{count_param, model_image_value, BgrPixels, LayerContext, ModelError};

/// `data/config.py`'s `MEANS` and `STD`, in BGR order, on 0..255.
const MEANS_BGR: [f32; 3] = [103.94, 116.78, 123.68];
const STD_BGR: [f32; 3] = [57.38, 57.12, 58.40];

pub fn kind() -> NodeKind {
    let spec = NodeSpec::new(
        "yolact_preprocess",
        "YOLACT's FastBaseTransform: bilinear resize to 550x550 (aspect ratio not kept), (BGR - MEANS) / STD, RGB order",
    )
    .input(
        PortSpec::new("image", PortKind::Image, "the photo: u8 [H, W, C] RGB (C = 1, 3 or 4)")
            .dtype(DType::U8),
    )
    .output(PortSpec::new(
        "image",
        PortKind::ModelImage,
        "\"tensor\" f32 [3, S, S] (RGB, normalised) with \"image_size\" (S, S) and \"original_size\" (H, W) i64 [2]",
    ))
    .param(
        ParamSpec::optional(
            "max_size",
            ParamType::Int,
            ParamValue::Int(550),
            "side of the square network input (cfg.max_size)",
        )
        .range(32.0, 4096.0),
    );
    NodeKind::new(spec, |params| {
        Ok(Box::new(YolactPreprocess::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `yolact_preprocess` node.
#[derive(Clone, Debug)]
pub struct YolactPreprocess {
    max_size: usize,
}

impl YolactPreprocess {
    pub fn new(max_size: usize) -> YolactPreprocess {
        YolactPreprocess { max_size }
    }

    pub fn from_params(params: &Params) -> Result<YolactPreprocess, ModelError> {
        Ok(YolactPreprocess::new(count_param(params, "max_size")?))
    }

    /// The node's computation on a u8 `[H, W, C]` image.
    pub fn run(&self, image: &Value) -> Result<Value, ModelError> {
        let px = BgrPixels::from_value("yolact_preprocess", image)?;
        let (h, w) = (px.height, px.width);
        let mut bgr = Array4::<f32>::zeros((1, 3, h, w));
        for k in 0..3 {
            let plane = bgr.index_axis_mut(ndarray::Axis(1), k);
            for (dst, v) in plane.into_iter().zip(px.plane(k)) {
                *dst = f32::from(v);
            }
        }
        let size = self.max_size;
        let resized = resize(
            bgr.view(),
            (size, size),
            ResizeMode::Bilinear {
                align_corners: false,
            },
        )
        .ctx(|| "yolact_preprocess (resize)".into())?;
        // (img - mean) / std per BGR plane, then the planes in RGB order.
        let mut data = Vec::with_capacity(3 * size * size);
        for k in [2usize, 1, 0] {
            let plane = resized.index_axis(ndarray::Axis(1), k);
            data.extend(plane.iter().map(|&v| (v - MEANS_BGR[k]) / STD_BGR[k]));
        }
        model_image_value(data, (size, size), (h, w))
    }
}

impl Node for YolactPreprocess {
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
    fn normalised_rgb_at_the_square_size() {
        // One pixel (R 10, G 20, B 30) resized to 2x2 keeps its value everywhere.
        let img = Tensor::from_vec(&[1, 1, 3], vec![10u8, 20, 30]).unwrap();
        let out = YolactPreprocess::new(2).run(&Value::image(img)).unwrap();
        let t = out.tensor("tensor").unwrap();
        assert_eq!(t.shape(), &[3, 2, 2]);
        let v = t.as_slice::<f32>().unwrap();
        assert_eq!(
            v[0],
            (10.0 - 123.68) / 58.40,
            "R uses the third (R) statistics"
        );
        assert_eq!(v[4], (20.0 - 116.78) / 57.12);
        assert_eq!(v[8], (30.0 - 103.94) / 57.38);
        assert_eq!(
            out.tensor("original_size")
                .unwrap()
                .as_slice::<i64>()
                .unwrap(),
            &[1, 1]
        );
        let bad = Tensor::from_vec(&[1, 1, 2], vec![0u8, 0]).unwrap();
        assert!(YolactPreprocess::new(550).run(&Value::image(bad)).is_err());
    }
}
