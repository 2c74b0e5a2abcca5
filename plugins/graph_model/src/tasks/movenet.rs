//! `movenet`: MoveNet single-pose (lightning / thunder) → one person instance with 17 COCO
//! keypoints, as `@vladmandic/human` does it (`src/body/movenet.ts` `parseSinglePose`,
//! `src/body/movenetfix.ts` `padInput`, `rescaleBody`, `bodyParts`):
//!
//! 1. pad the image to a square with zeros, `trunc(|W - H| / 2)` on both sides of the short
//!    side; resize (TF.js `resizeBilinear`, legacy mapping) to the model's input size; cast to
//!    int32;
//! 2. the output [1, 1, 17, 3] holds (y, x, score) per keypoint, relative to the padded
//!    square; a keypoint is kept when its score > `min_confidence` (human's
//!    `body.minConfidence`, 0.3); positions in image pixels are `x * Wp - pad_x`,
//!    `y * Hp - pad_y` (human rounds to whole pixels in between; we do not);
//! 3. `bodyParts`: a knee above its shoulder, or an ankle above its knee, is dropped (human's
//!    left/right swaps only reorder its array and change no keypoint's part, so they have no
//!    effect here); the frame-to-frame `jitter` cache is not applied (still images);
//! 4. the instance: class 1 (person), score = the best kept keypoint score, box = the
//!    bounding box of the kept keypoints (`box.calc`). Keypoints not kept have score 0. No
//!    kept keypoint: no instance.

use plugin_sdk::{
    FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Tensor,
};

use super::{image_of, model_param, unit_param, Dets, TaskModel};

/// COCO keypoint order of MoveNet (human's `movenetcoords.kpt`).
pub const KEYPOINTS: [&str; 17] = [
    "nose",
    "leftEye",
    "rightEye",
    "leftEar",
    "rightEar",
    "leftShoulder",
    "rightShoulder",
    "leftElbow",
    "rightElbow",
    "leftWrist",
    "rightWrist",
    "leftHip",
    "rightHip",
    "leftKnee",
    "rightKnee",
    "leftAnkle",
    "rightAnkle",
];

/// human's `movenetcoords.vertical`: (lower part, higher part) index pairs.
const VERTICAL: [(usize, usize); 4] = [(13, 5), (14, 6), (15, 13), (16, 14)];

pub fn kind() -> NodeKind {
    let spec = NodeSpec::new(
        "movenet",
        "MoveNet single-pose body keypoints (human's movenet.ts): one person instance with 17 COCO keypoints",
    )
    .input(PortSpec::new("image", PortKind::Image, "the image, RGB"))
    .output(PortSpec::new(
        "instances",
        PortKind::Instances,
        "0 or 1 person (class 1): box around the kept keypoints, keypoints [1, 17, 3] (x, y, score) in image pixels",
    ))
    .param(model_param("models/movenet-lightning.json"))
    .param(ParamSpec::optional(
        "min_confidence",
        ParamType::Float,
        ParamValue::Float(0.3),
        "keypoints with a score <= this are dropped (score 0 in the output)",
    ).range(0.0, 1.0))
    .param(ParamSpec::optional(
        "class_id",
        ParamType::Int,
        ParamValue::Int(1),
        "class of the instance (COCO person: 1)",
    ));
    NodeKind::new(spec, |p| {
        Ok(Box::new(MoveNet::from_params(p)?) as Box<dyn Node>)
    })
}

#[derive(Debug)]
pub struct MoveNet {
    model: TaskModel,
    output: Vec<String>,
    min_confidence: f32,
    class_id: i64,
}

impl MoveNet {
    /// Whether its runs take the model's compiled plan (rather than running op by op).
    pub fn planned(&self) -> bool {
        self.model.model.plan_serves(&self.output)
    }

    pub fn from_params(params: &Params) -> Result<MoveNet, NodeError> {
        let model = TaskModel::load(params.str("model")?, 1.0, 0.0)?;
        let output = model.model.default_outputs().to_vec();
        if output.len() != 1 {
            return Err(NodeError::new(format!(
                "{}: movenet expects a model with one output, this one has {}",
                model.file(),
                output.len()
            )));
        }
        Ok(MoveNet {
            model,
            output,
            min_confidence: unit_param(params, "min_confidence")?,
            class_id: params.int("class_id")?,
        })
    }

    /// Runs the model on an RGB(A) u8 image and decodes the pose.
    pub fn detect(&self, image: &Tensor, h: usize, w: usize) -> Result<Dets, NodeError> {
        let (padded, pad_y, pad_x) = pad_square(image, h, w)?;
        let (hp, wp) = (h + 2 * pad_y, w + 2 * pad_x);
        let outs = self.model.run(&padded, &self.output)?;
        let name = &self.output[0];
        let t = &outs[0];
        if t.numel() != 17 * 3 {
            return Err(NodeError::new(format!(
                "{}: output \"{name}\" must be [1, 1, 17, 3], got {}",
                self.model.file(),
                t.describe()
            )));
        }
        let raw = self.model.f32s(name, t)?;
        Ok(decode(
            raw,
            hp,
            wp,
            pad_y,
            pad_x,
            self.min_confidence,
            self.class_id,
        ))
    }
}

/// Zero-pads the image to a square as human's `padInput` (3 channels, u8).
fn pad_square(image: &Tensor, h: usize, w: usize) -> Result<(Tensor, usize, usize), NodeError> {
    let c = image.shape()[2];
    let px = image.as_slice::<u8>()?;
    let pad_y = if w > h { (w - h) / 2 } else { 0 };
    let pad_x = if h > w { (h - w) / 2 } else { 0 };
    let (hp, wp) = (h + 2 * pad_y, w + 2 * pad_x);
    let mut out = vec![0u8; hp * wp * 3];
    for y in 0..h {
        for x in 0..w {
            let s = (y * w + x) * c;
            let d = ((y + pad_y) * wp + x + pad_x) * 3;
            if c == 1 {
                out[d..d + 3].fill(px[s]);
            } else {
                out[d..d + 3].copy_from_slice(&px[s..s + 3]);
            }
        }
    }
    let t = Tensor::from_vec(&[hp, wp, 3], out).map_err(|e| NodeError::new(e.to_string()))?;
    Ok((t, pad_y, pad_x))
}

/// Decodes [17 x (y, x, score)] relative to the padded square of `hp` x `wp`.
pub fn decode(
    raw: &[f32],
    hp: usize,
    wp: usize,
    pad_y: usize,
    pad_x: usize,
    min_confidence: f32,
    class_id: i64,
) -> Dets {
    let mut kp = vec![0f32; 17 * 3];
    let mut kept = [false; 17];
    for i in 0..17 {
        let (y, x, s) = (raw[i * 3], raw[i * 3 + 1], raw[i * 3 + 2]);
        kp[i * 3] = (x as f64 * wp as f64 - pad_x as f64) as f32;
        kp[i * 3 + 1] = (y as f64 * hp as f64 - pad_y as f64) as f32;
        kp[i * 3 + 2] = s;
        kept[i] = s > min_confidence;
    }
    for (lower, higher) in VERTICAL {
        if kept[lower] && kept[higher] && kp[lower * 3 + 1] < kp[higher * 3 + 1] {
            kept[lower] = false;
        }
    }
    let mut dets = Dets::default();
    let idx: Vec<usize> = (0..17).filter(|&i| kept[i]).collect();
    if idx.is_empty() {
        dets.keypoints = Some((17, Vec::new()));
        return dets;
    }
    for i in 0..17 {
        if !kept[i] {
            kp[i * 3 + 2] = 0.0;
        }
    }
    let xs = idx.iter().map(|&i| kp[i * 3]);
    let ys = idx.iter().map(|&i| kp[i * 3 + 1]);
    let x1 = xs.clone().fold(f32::INFINITY, f32::min);
    let x2 = xs.fold(f32::NEG_INFINITY, f32::max);
    let y1 = ys.clone().fold(f32::INFINITY, f32::min);
    let y2 = ys.fold(f32::NEG_INFINITY, f32::max);
    let score = idx.iter().map(|&i| kp[i * 3 + 2]).fold(0f32, f32::max);
    dets.boxes.push([x1, y1, x2, y2]);
    dets.scores.push(score);
    dets.classes.push(class_id);
    dets.keypoints = Some((17, kp));
    dets
}

impl Node for MoveNet {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let (image, h, w) = image_of(inputs)?;
        let dets = self.detect(image, h, w)?;
        Ok(Outputs::one("instances", dets.to_value(h, w)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_maps_to_image_pixels_and_drops_improbable_parts() {
        // A 100 x 50 (w x h) image is padded by 25 rows above and below to 100 x 100.
        let mut raw = vec![0f32; 51];
        for i in 0..17 {
            raw[i * 3] = 0.5; // y
            raw[i * 3 + 1] = 0.1 + 0.01 * i as f32; // x
            raw[i * 3 + 2] = 0.9;
        }
        raw[2] = 0.1; // nose below the threshold
        raw[13 * 3] = 0.2; // left knee above the left shoulder (y 0.5): dropped
        let d = decode(&raw, 100, 100, 25, 0, 0.3, 1);
        let (k, kp) = d.keypoints.clone().unwrap();
        assert_eq!(k, 17);
        assert_eq!(d.len(), 1);
        assert!((kp[3] - 11.0).abs() < 1e-4 && (kp[4] - 25.0).abs() < 1e-4);
        assert_eq!(kp[2], 0.0);
        assert_eq!(kp[13 * 3 + 2], 0.0);
        assert!((d.boxes[0][0] - 11.0).abs() < 1e-4 && (d.boxes[0][2] - 26.0).abs() < 1e-4);
        assert!((d.boxes[0][1] - 25.0).abs() < 1e-4 && (d.boxes[0][3] - 25.0).abs() < 1e-4);
        let none = decode(&[0f32; 51], 100, 100, 0, 0, 0.3, 1);
        assert!(none.is_empty());
    }

    #[test]
    fn pad_square_centres_the_image() {
        let img = Tensor::from_vec(&[1, 3, 3], vec![9u8; 9]).unwrap();
        let (t, py, px) = pad_square(&img, 1, 3).unwrap();
        assert_eq!((t.shape(), py, px), (&[3usize, 3, 3][..], 1, 0));
        let v = t.as_slice::<u8>().unwrap();
        assert_eq!(v[..9], [0; 9]);
        assert_eq!(v[9..18], [9; 9]);
    }
}
