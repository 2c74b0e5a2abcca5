//! `rcnn_preprocess`: torchvision's `GeneralizedRCNNTransform` at inference (see
//! [`kernels::layers::preprocess::RcnnTransform`]): `(x/255 - mean)/std`, bilinear resize so
//! that the short side is `min_size` unless the long side would exceed `max_size`
//! (`floor` sizes, `recompute_scale_factor=True`), zero padding at the bottom/right to a
//! multiple of `size_divisible`.
//!
//! Output value (kind `tensor`):
//!
//! | tensor | dtype, shape | meaning |
//! |---|---|---|
//! | `tensor` | f32 [3, H_pad, W_pad] | the normalised, resized, padded image (`ImageList.tensors[0]`) |
//! | `image_size` | i64 [2] | resized size before padding, `(h, w)` (`ImageList.image_sizes[0]`): boxes are clipped to it |
//! | `original_size` | i64 [2] | the input image's `(h, w)` |
//! | `scale_to_original` | f32 [2] | `(original_h / h, original_w / w)` in f32: torchvision's `resize_boxes` ratios, which map boxes (y and x) back to the original image |
//!
//! Images with 1 channel are replicated to RGB (what torchvision's broadcasting of the
//! 3-channel mean does to a 1-channel tensor); an alpha channel is dropped.

use kernels::layers::preprocess::RcnnTransform;
use kernels::Tensor;
use ndarray::{Array3, Ix3};
use plugin_sdk::{
    DType, FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Value,
};

use vision_common::{LayerContext, ModelError};

pub fn kind() -> NodeKind {
    let spec = NodeSpec::new(
        "rcnn_preprocess",
        "torchvision GeneralizedRCNNTransform: normalise, resize (min 800 / max 1333), pad to 32",
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
            "\"tensor\" f32 [3, H', W'] (normalised, resized, padded) with \"image_size\", \"original_size\" i64 [2] and \"scale_to_original\" f32 [2]",
        )
        .dtype(DType::F32)
        .shape("3,H,W"),
    )
    .param(ParamSpec::optional(
        "min_size",
        ParamType::Int,
        ParamValue::Int(800),
        "target size of the short side",
    ))
    .param(ParamSpec::optional(
        "max_size",
        ParamType::Int,
        ParamValue::Int(1333),
        "upper bound of the long side",
    ))
    .param(ParamSpec::optional(
        "image_mean",
        ParamType::FloatList,
        ParamValue::FloatList(vec![0.485, 0.456, 0.406]),
        "per-channel mean of the [0, 1] RGB image",
    ))
    .param(ParamSpec::optional(
        "image_std",
        ParamType::FloatList,
        ParamValue::FloatList(vec![0.229, 0.224, 0.225]),
        "per-channel standard deviation",
    ))
    .param(ParamSpec::optional(
        "size_divisible",
        ParamType::Int,
        ParamValue::Int(32),
        "the padded size is a multiple of this",
    ));
    NodeKind::new(spec, |params| {
        Ok(Box::new(RcnnPreprocess::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `rcnn_preprocess` node.
#[derive(Clone, Debug)]
pub struct RcnnPreprocess {
    transform: RcnnTransform,
}

fn positive(params: &Params, name: &'static str, max: i64) -> Result<usize, ModelError> {
    let v = params.int(name).map_err(ModelError::Input)?;
    if v <= 0 || v > max {
        return Err(ModelError::param(
            name,
            format!("must be in 1..={max}, got {v}"),
        ));
    }
    Ok(v as usize)
}

fn triple(params: &Params, name: &'static str) -> Result<[f32; 3], ModelError> {
    let v = params.float_list(name).map_err(ModelError::Input)?;
    match v.as_slice() {
        [a, b, c] if v.iter().all(|x| x.is_finite()) => Ok([*a as f32, *b as f32, *c as f32]),
        _ => Err(ModelError::param(
            name,
            format!("must be 3 finite numbers (R, G, B), got {v:?}"),
        )),
    }
}

impl RcnnPreprocess {
    pub fn new(transform: RcnnTransform) -> RcnnPreprocess {
        RcnnPreprocess { transform }
    }

    pub fn from_params(params: &Params) -> Result<RcnnPreprocess, ModelError> {
        let std = triple(params, "image_std")?;
        if std.contains(&0.0) {
            return Err(ModelError::param(
                "image_std",
                format!("must not contain 0, got {std:?}"),
            ));
        }
        Ok(RcnnPreprocess::new(RcnnTransform {
            min_size: positive(params, "min_size", 16384)?,
            max_size: positive(params, "max_size", 16384)?,
            mean: triple(params, "image_mean")?,
            std,
            size_divisible: positive(params, "size_divisible", 1024)?,
        }))
    }

    pub fn transform(&self) -> &RcnnTransform {
        &self.transform
    }

    /// The node's computation on an `image` value.
    pub fn run(&self, image: &Value) -> Result<Value, ModelError> {
        let t = image.tensor("image").map_err(ModelError::Input)?;
        if t.dtype() != DType::U8 || t.ndim() != 3 {
            return Err(ModelError::input(format!(
                "rcnn_preprocess: the image must be u8 [H, W, C], got {}",
                t.describe()
            )));
        }
        let view = t
            .view::<u8>()?
            .into_dimensionality::<Ix3>()
            .map_err(|e| ModelError::input(e.to_string()))?;
        let (h, w, c) = view.dim();
        let rgb: Option<Array3<u8>> = match c {
            3 => None,
            1 => Some(Array3::from_shape_fn((h, w, 3), |(y, x, _)| {
                view[[y, x, 0]]
            })),
            4 => Some(Array3::from_shape_fn((h, w, 3), |(y, x, k)| {
                view[[y, x, k]]
            })),
            _ => {
                return Err(ModelError::input(format!(
                    "rcnn_preprocess: the image must have 1, 3 or 4 channels, got {c}"
                )))
            }
        };
        let view = match &rgb {
            Some(a) => a.view(),
            None => view,
        };
        let p = self
            .transform
            .apply(view)
            .ctx(|| format!("rcnn_preprocess of a {h}x{w} image"))?;
        let (_, ch, ph, pw) = p.image.dim();
        let data = kernels::layers::array_to_tensor(p.image.into_dyn())
            .ctx(|| "rcnn_preprocess".into())?
            .reshape(&[ch, ph, pw])?;
        let (rh, rw) = p.image_size;
        let (oh, ow) = p.original_size;
        Ok(Value::new(PortKind::ModelImage)
            .with("tensor", data)
            .with(
                "image_size",
                Tensor::from_vec(&[2], vec![rh as i64, rw as i64])?,
            )
            .with(
                "original_size",
                Tensor::from_vec(&[2], vec![oh as i64, ow as i64])?,
            )
            .with(
                "scale_to_original",
                Tensor::from_vec(&[2], vec![oh as f32 / rh as f32, ow as f32 / rw as f32])?,
            ))
    }
}

impl Node for RcnnPreprocess {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(inputs.value("image")?)?;
        Ok(Outputs::one("image", v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels::layers::preprocess::{IMAGENET_MEAN, IMAGENET_STD};

    fn defaults() -> Params {
        let mut p = Params::new();
        for spec in kind().spec.params {
            if let Some(d) = spec.default {
                p.set(&spec.name, d);
            }
        }
        p
    }

    fn image(h: usize, w: usize, c: usize) -> Value {
        let data: Vec<u8> = (0..h * w * c).map(|i| (i * 37 % 256) as u8).collect();
        Value::image(Tensor::from_vec(&[h, w, c], data).unwrap())
    }

    #[test]
    fn sizes_and_scale_info() {
        let node = RcnnPreprocess::from_params(&defaults()).unwrap();
        assert_eq!(node.transform(), &RcnnTransform::default());
        let v = node.run(&image(264, 397, 3)).unwrap();
        assert!(v.validate().is_ok());
        assert_eq!(v.tensor("tensor").unwrap().shape(), &[3, 800, 1216]);
        assert_eq!(
            v.tensor("image_size").unwrap().as_slice::<i64>().unwrap(),
            &[800, 1203]
        );
        assert_eq!(
            v.tensor("original_size")
                .unwrap()
                .as_slice::<i64>()
                .unwrap(),
            &[264, 397]
        );
        let s = v
            .tensor("scale_to_original")
            .unwrap()
            .as_slice::<f32>()
            .unwrap();
        assert_eq!(s, &[264.0f32 / 800.0, 397.0f32 / 1203.0]);
    }

    #[test]
    fn gray_and_alpha_images_become_rgb() {
        let node = RcnnPreprocess::from_params(
            &defaults()
                .with("min_size", ParamValue::Int(20))
                .with("max_size", ParamValue::Int(40)),
        )
        .unwrap();
        let gray = node.run(&image(10, 12, 1)).unwrap();
        let t = gray.tensor("tensor").unwrap().view::<f32>().unwrap();
        // Same pixel values in every channel, normalised per channel.
        let v0 = (t[[0, 3, 5]] * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255.0;
        let v2 = (t[[2, 3, 5]] * IMAGENET_STD[2] + IMAGENET_MEAN[2]) * 255.0;
        assert!((v0 - v2).abs() < 1e-3, "{v0} {v2}");
        let rgba = node.run(&image(10, 12, 4)).unwrap();
        assert_eq!(rgba.tensor("tensor").unwrap().shape(), &[3, 32, 32]);
        assert!(node
            .run(&image(10, 12, 2))
            .unwrap_err()
            .to_string()
            .contains("1, 3 or 4 channels"));
        // A very wide image: the long side limits the scale. Resized to nothing: an error.
        let err = node.run(&image(1, 500, 3)).unwrap_err().to_string();
        assert!(err.contains("resizes to nothing"), "{err}");
        let node = RcnnPreprocess::from_params(&defaults()).unwrap();
        let wide = node.run(&image(1, 500, 3)).unwrap();
        assert_eq!(
            wide.tensor("image_size")
                .unwrap()
                .as_slice::<i64>()
                .unwrap(),
            &[2, 1333]
        );
        assert_eq!(wide.tensor("tensor").unwrap().shape(), &[3, 32, 1344]);
    }

    #[test]
    fn bad_params_are_named() {
        let err = RcnnPreprocess::from_params(&defaults().with("min_size", ParamValue::Int(0)))
            .unwrap_err();
        assert!(
            err.to_string().starts_with("parameter \"min_size\""),
            "{err}"
        );
        let err = RcnnPreprocess::from_params(
            &defaults().with("image_std", ParamValue::FloatList(vec![1.0, 0.0, 1.0])),
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"image_std\""), "{err}");
        let err = RcnnPreprocess::from_params(
            &defaults().with("image_mean", ParamValue::FloatList(vec![1.0])),
        )
        .unwrap_err();
        assert!(err.to_string().contains("3 finite numbers"), "{err}");
    }
}
