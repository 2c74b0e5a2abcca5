//! `retinaface_preprocess`: the input of RetinaFace's `detect.py` with `resize = 1`:
//! `img = np.float32(cv2.imread(path))` (BGR), `img -= (104, 117, 123)`, HWC -> CHW. No
//! scaling by a standard deviation (for either backbone) and no resizing: the network runs at
//! the photo's size, so `image_size` and `original_size` are both the photo's `(H, W)`.
//!
//! The engine's images are RGB (`image_source`); the channels are reversed here, as OpenCV's
//! BGR. A grayscale image is repeated to three channels (what `cv2.imread(..., IMREAD_COLOR)`
//! does), an alpha channel is dropped.

use kernels::Tensor;
use plugin_sdk::{
    DType, FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Value,
};

use vision_common::{BgrPixels, ModelError};

/// `detect.py`'s mean, in BGR order.
const MEAN_BGR: [f64; 3] = [104.0, 117.0, 123.0];

pub fn kind() -> NodeKind {
    let spec = NodeSpec::new(
        "retinaface_preprocess",
        "RetinaFace's detect.py input: BGR, minus the mean (104, 117, 123), CHW, at the photo's size",
    )
    .input(
        PortSpec::new("image", PortKind::Image, "the photo: u8 [H, W, C] RGB (C = 1, 3 or 4)")
            .dtype(DType::U8),
    )
    .output(PortSpec::new(
        "image",
        PortKind::ModelImage,
        "\"tensor\" f32 [3, H, W] (BGR minus the mean) with \"image_size\" and \"original_size\" i64 [2], both (H, W)",
    ))
    .param(ParamSpec::optional(
        "mean",
        ParamType::FloatList,
        ParamValue::FloatList(MEAN_BGR.to_vec()),
        "per-channel mean subtracted from the BGR pixels (B, G, R)",
    ));
    NodeKind::new(spec, |params| {
        Ok(Box::new(RetinaFacePreprocess::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `retinaface_preprocess` node.
#[derive(Clone, Debug)]
pub struct RetinaFacePreprocess {
    mean_bgr: [f32; 3],
}

impl RetinaFacePreprocess {
    pub fn new(mean_bgr: [f32; 3]) -> RetinaFacePreprocess {
        RetinaFacePreprocess { mean_bgr }
    }

    pub fn from_params(params: &Params) -> Result<RetinaFacePreprocess, ModelError> {
        match params
            .float_list("mean")
            .map_err(ModelError::Input)?
            .as_slice()
        {
            [b, g, r] if [b, g, r].iter().all(|v| v.is_finite()) => {
                Ok(RetinaFacePreprocess::new([*b as f32, *g as f32, *r as f32]))
            }
            other => Err(ModelError::param(
                "mean",
                format!("must be three finite numbers (B, G, R), got {other:?}"),
            )),
        }
    }

    /// The node's computation on a u8 `[H, W, C]` image.
    pub fn run(&self, image: &Value) -> Result<Value, ModelError> {
        let px = BgrPixels::from_value("retinaface_preprocess", image)?;
        let (h, w) = (px.height, px.width);
        let mut data = Vec::with_capacity(3 * h * w);
        for k in 0..3 {
            let m = self.mean_bgr[k];
            data.extend(px.plane(k).map(|v| v as f32 - m));
        }
        let size = || Tensor::from_vec(&[2], vec![h as i64, w as i64]);
        Ok(Value::new(PortKind::ModelImage)
            .with("tensor", Tensor::from_vec(&[3, h, w], data)?)
            .with("image_size", size()?)
            .with("original_size", size()?)
            .with(
                "scale_to_original",
                Tensor::from_vec(&[2], vec![1f32, 1.0])?,
            ))
    }
}

impl Node for RetinaFacePreprocess {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(inputs.value("image")?)?;
        Ok(Outputs::one("image", v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bgr_minus_mean_in_chw() {
        let img = Tensor::from_vec(&[1, 2, 3], vec![10u8, 20, 30, 200, 150, 100]).unwrap();
        let out = RetinaFacePreprocess::new([104.0, 117.0, 123.0])
            .run(&Value::image(img))
            .unwrap();
        let t = out.tensor("tensor").unwrap();
        assert_eq!(t.shape(), &[3, 1, 2]);
        // B plane (30, 100), G (20, 150), R (10, 200), minus (104, 117, 123).
        assert_eq!(
            t.as_slice::<f32>().unwrap(),
            &[-74.0, -4.0, -97.0, 33.0, -113.0, 77.0]
        );
        assert_eq!(
            out.tensor("image_size").unwrap().as_slice::<i64>().unwrap(),
            &[1, 2]
        );
        let bad = Tensor::from_vec(&[1, 1, 2], vec![0u8, 0]).unwrap();
        assert!(RetinaFacePreprocess::new(MEAN_BGR.map(|v| v as f32))
            .run(&Value::image(bad))
            .is_err());
    }
}
