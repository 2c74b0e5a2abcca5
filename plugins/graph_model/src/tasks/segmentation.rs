//! `person_segmentation`: MediaPipe Selfie or Meet person segmentation, as
//! `@vladmandic/human` does it (`src/segmentation/selfie.ts`, `src/segmentation/meet.ts`):
//!
//! 1. resize the whole image (TF.js `resizeBilinear`, legacy mapping) to the model's input
//!    (selfie 256 x 256, meet 144 x 256); normalise `x / 255`;
//! 2. the person probability: selfie's single output channel as is; meet's two channels
//!    (background, person) through a softmax over the channel axis (human applies
//!    `tf.softmax` to the person channel alone, which normalises along the image rows; we use
//!    the two-class softmax the model is trained with);
//! 3. the probability map resized (`resizeBilinear`, legacy) to the image size; human makes
//!    it the alpha channel (`* 255`); here a pixel is person (label 1) when its probability >
//!    `threshold` (0.5).
//!
//! Outputs: `semantic` (`labels` u8 [H, W], person = 1, and `probabilities` f32 [H, W]) and
//! `instances` (0 or 1 person, class 1, with `masks` u8 [1, H, W], the box around the mask
//! and score = the mean probability over the mask), for image_sink and concat_instances.

use plugin_sdk::{
    FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Tensor, Value,
};

use super::{image_of, model_param, unit_param, Dets, TaskModel};
use crate::ops_cpu;

pub fn kind() -> NodeKind {
    let spec = NodeSpec::new(
        "person_segmentation",
        "Person segmentation with MediaPipe Selfie or Meet (human's segmentation): a person/background map at image size",
    )
    .input(PortSpec::new("image", PortKind::Image, "the image, RGB"))
    .output(PortSpec::new(
        "semantic",
        PortKind::Semantic,
        "labels u8 [H, W] (person 1, background 0) and probabilities f32 [H, W]",
    ))
    .output(PortSpec::new(
        "instances",
        PortKind::Instances,
        "0 or 1 person instance (class class_id) with masks u8 [1, H, W] and the box around the mask",
    ))
    .param(model_param("models/selfie.json"))
    .param(ParamSpec::optional("threshold", ParamType::Float, ParamValue::Float(0.5), "a pixel is person when its probability > this").range(0.0, 1.0))
    .param(ParamSpec::optional("class_id", ParamType::Int, ParamValue::Int(1), "class of the person instance (COCO person: 1)"));
    NodeKind::new(spec, |p| {
        Ok(Box::new(PersonSegmentation::from_params(p)?) as Box<dyn Node>)
    })
}

#[derive(Debug)]
pub struct PersonSegmentation {
    model: TaskModel,
    output: Vec<String>,
    threshold: f32,
    class_id: i64,
}

impl PersonSegmentation {
    /// Whether its runs take the model's compiled plan (rather than running op by op).
    pub fn planned(&self) -> bool {
        self.model.model.plan_serves(&self.output)
    }

    pub fn from_params(params: &Params) -> Result<PersonSegmentation, NodeError> {
        let model = TaskModel::load(params.str("model")?, 1.0 / 255.0, 0.0)?;
        let output = model.model.default_outputs().to_vec();
        if output.len() != 1 {
            return Err(NodeError::new(format!(
                "{}: person_segmentation expects a model with one output, this one has {}",
                model.file(),
                output.len()
            )));
        }
        Ok(PersonSegmentation {
            model,
            output,
            threshold: unit_param(params, "threshold")?,
            class_id: params.int("class_id")?,
        })
    }

    /// The person probability at image size, f32 [H, W] (row-major).
    pub fn probabilities(&self, image: &Tensor, h: usize, w: usize) -> Result<Vec<f32>, NodeError> {
        let outs = self.model.run(image, &self.output)?;
        let name = &self.output[0];
        let t = &outs[0];
        let (mh, mw, c) = match t.shape() {
            [1, mh, mw, c] if *c == 1 || *c == 2 => (*mh, *mw, *c),
            _ => {
                return Err(NodeError::new(format!(
                    "{}: output \"{name}\" must be [1, h, w, 1] (selfie) or [1, h, w, 2] (meet), got {}",
                    self.model.file(),
                    t.describe()
                )))
            }
        };
        let raw = self.model.f32s(name, t)?;
        let prob: Vec<f32> = if c == 1 {
            raw.to_vec()
        } else {
            raw.chunks_exact(2)
                .map(|p| 1.0 / (1.0 + (p[0] - p[1]).exp()))
                .collect()
        };
        let small =
            Tensor::from_vec(&[1, mh, mw, 1], prob).map_err(|e| NodeError::new(e.to_string()))?;
        let big = ops_cpu::resize_bilinear_nhwc(&small, h, w, false, false).map_err(|e| {
            NodeError::new(format!("{}: resizing the mask: {e}", self.model.file()))
        })?;
        Ok(ops_cpu::f32s(&big)
            .map_err(|e| NodeError::new(e.to_string()))?
            .to_vec())
    }
}

/// Labels (prob > threshold) and the person instance of a probability map.
pub fn person(prob: &[f32], h: usize, w: usize, threshold: f32, class_id: i64) -> (Vec<u8>, Dets) {
    let labels: Vec<u8> = prob.iter().map(|&p| (p > threshold) as u8).collect();
    let (mut x1, mut y1, mut x2, mut y2) = (usize::MAX, usize::MAX, 0, 0);
    let (mut sum, mut count) = (0f64, 0usize);
    for y in 0..h {
        for x in 0..w {
            if labels[y * w + x] == 1 {
                x1 = x1.min(x);
                y1 = y1.min(y);
                x2 = x2.max(x + 1);
                y2 = y2.max(y + 1);
                sum += prob[y * w + x] as f64;
                count += 1;
            }
        }
    }
    let mut d = Dets {
        masks: Some(Vec::new()),
        ..Dets::default()
    };
    if count > 0 {
        d.boxes.push([x1 as f32, y1 as f32, x2 as f32, y2 as f32]);
        d.scores.push((sum / count as f64) as f32);
        d.classes.push(class_id);
        d.masks = Some(labels.clone());
    }
    (labels, d)
}

impl Node for PersonSegmentation {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let (image, h, w) = image_of(inputs)?;
        let prob = self.probabilities(image, h, w)?;
        let (labels, dets) = person(&prob, h, w, self.threshold, self.class_id);
        let err = |e: kernels::TensorError| NodeError::new(e.to_string());
        let semantic = Value::new(PortKind::Semantic)
            .with("labels", Tensor::from_vec(&[h, w], labels).map_err(err)?)
            .with(
                "probabilities",
                Tensor::from_vec(&[h, w], prob).map_err(err)?,
            );
        Ok(Outputs::one("semantic", semantic).with("instances", dets.to_value(h, w)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn person_box_score_and_mask() {
        let prob = [0.1, 0.9, 0.7, 0.2, 0.6, 0.0];
        let (labels, d) = person(&prob, 2, 3, 0.5, 1);
        assert_eq!(labels, vec![0, 1, 1, 0, 1, 0]);
        assert_eq!(d.boxes, vec![[1.0, 0.0, 3.0, 2.0]]);
        assert!((d.scores[0] - 0.7333333).abs() < 1e-6);
        let (_, none) = person(&[0.0; 6], 2, 3, 0.5, 1);
        assert!(none.is_empty());
        assert_eq!(none.masks, Some(Vec::new()));
    }
}
