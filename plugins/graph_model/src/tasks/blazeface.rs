//! `blazeface`: BlazeFace (back model, 256 x 256) face boxes with 6 landmarks, as
//! `@vladmandic/human` does it (`src/face/blazeface.ts` `getBoxes`, `src/face/facemeshutil.ts`
//! `generateAnchors`, `scaleBoxCoordinates`):
//!
//! 1. resize the whole image (TF.js `resizeBilinear`, legacy mapping, no padding) to 256 x
//!    256; normalise `x / 127.5 - 1` to [-1, 1] (human's constants `tf127`, `tf1`; human up
//!    to 3.2.1 subtracted 0.5, fixed in its commit d7e66af "fix blazeface tensor scale");
//! 2. the four outputs, sorted by size ([384, 1], [512, 1], [384, 16], [512, 16]), are
//!    concatenated to [896, 17]: the 512 stride-16 anchors first, then the 384 stride-32 ones
//!    (columns: logit, cx, cy, w, h, 6 x (x, y));
//! 3. anchors (`generateAnchors(256)`): strides 16 and 32 with 2 and 6 anchors per cell at
//!    the cell centres; box = (cx + ax ± w / 2, cy + ay ± h / 2) in input pixels, score =
//!    sigmoid(logit);
//! 4. `tf.image.nonMaxSuppression`: at most `max_detected`, IoU threshold `iou_threshold`
//!    (human's `face.detector.iouThreshold`, 0.1), score > `min_confidence` (0.2);
//! 5. boxes scaled to the image (`x * W / 256`, `y * H / 256`). human then enlarges (1.4,
//!    `face.detector.scale`) and squares the box to crop for FaceMesh: that is done by the
//!    `facemesh` node, which takes these instances; the instance box here is the detector's
//!    own box. Landmarks: human keeps the raw offsets (used for the rotation angle only); here
//!    they are decoded as MediaPipe does, `(offset + anchor) * W / 256`, to image pixels.
//!
//! The instances have class `class_id` (default 91: not a COCO class; label "face").

use plugin_sdk::{
    FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Tensor,
};

use super::{count_param, image_of, model_param, nms, unit_param, Dets, Points, TaskModel};

pub fn kind() -> NodeKind {
    let spec = NodeSpec::new(
        "blazeface",
        "BlazeFace face detection (human's blazeface.ts): face instances with 6 landmarks (eyes, nose, mouth, ears)",
    )
    .input(PortSpec::new("image", PortKind::Image, "the image, RGB"))
    .output(PortSpec::new(
        "instances",
        PortKind::Instances,
        "faces: boxes in image pixels, scores, class class_id, landmarks [N, 6, 2]",
    ))
    .param(model_param("models/blazeface.json"))
    .param(ParamSpec::optional("min_confidence", ParamType::Float, ParamValue::Float(0.2), "faces with a score <= this are dropped").range(0.0, 1.0))
    .param(ParamSpec::optional("iou_threshold", ParamType::Float, ParamValue::Float(0.1), "NMS: a box overlapping a better one by IoU >= this is dropped").range(0.0, 1.0))
    .param(ParamSpec::optional("max_detected", ParamType::Int, ParamValue::Int(10), "at most this many faces per image (human's default config: 1)").range(1.0, 100000.0))
    .param(ParamSpec::optional("class_id", ParamType::Int, ParamValue::Int(91), "class of the face instances (91: after the COCO ids)"));
    NodeKind::new(spec, |p| {
        Ok(Box::new(BlazeFace::from_params(p)?) as Box<dyn Node>)
    })
}

#[derive(Debug)]
pub struct BlazeFace {
    model: TaskModel,
    outputs: Vec<String>,
    anchors: Vec<[f32; 2]>,
    min_confidence: f32,
    iou_threshold: f32,
    max_detected: usize,
    class_id: i64,
}

/// human's `generateAnchors(inputSize)`.
pub fn anchors(input: usize) -> Vec<[f32; 2]> {
    let mut out = Vec::new();
    let size = input as f64;
    for (stride, per) in [(size / 16.0, 2), (size / 8.0, 6)] {
        let grid = ((size + stride - 1.0) / stride).floor() as usize;
        for gy in 0..grid {
            let ay = stride * (gy as f64 + 0.5);
            for gx in 0..grid {
                let ax = stride * (gx as f64 + 0.5);
                for _ in 0..per {
                    out.push([ax as f32, ay as f32]);
                }
            }
        }
    }
    out
}

impl BlazeFace {
    /// Whether its runs take the model's compiled plan (rather than running op by op).
    pub fn planned(&self) -> bool {
        self.model.model.plan_serves(&self.outputs)
    }

    pub fn from_params(params: &Params) -> Result<BlazeFace, NodeError> {
        let model = TaskModel::load(params.str("model")?, 1.0 / 127.5, -1.0)?;
        let outputs = model.model.default_outputs().to_vec();
        if outputs.len() != 4 && outputs.len() != 1 {
            return Err(NodeError::new(format!(
                "{}: blazeface expects a model with 4 outputs (or 1), this one has {}",
                model.file(),
                outputs.len()
            )));
        }
        if model.pre.height != model.pre.width {
            return Err(NodeError::new(format!(
                "{}: blazeface expects a square input, got {}x{}",
                model.file(),
                model.pre.height,
                model.pre.width
            )));
        }
        let anchors = anchors(model.pre.width);
        Ok(BlazeFace {
            model,
            outputs,
            anchors,
            min_confidence: unit_param(params, "min_confidence")?,
            iou_threshold: unit_param(params, "iou_threshold")?,
            max_detected: count_param(params, "max_detected")?,
            class_id: params.int("class_id")?,
        })
    }

    /// The [896, 17] rows of human's `t.batch`.
    fn batch(&self, image: &Tensor) -> Result<Vec<f32>, NodeError> {
        let outs = self.model.run(image, &self.outputs)?;
        let bad = |what: String| NodeError::new(format!("{}: {what}", self.model.file()));
        let mut rows: Vec<f32> = Vec::new();
        if outs.len() == 1 {
            rows = self.model.f32s(&self.outputs[0], &outs[0])?.to_vec();
        } else {
            // human: sort by size; concat([s0, s2], 2) = 384 rows, concat([s1, s3], 2) = 512
            // rows; then concat([512 rows, 384 rows], 1).
            let mut sorted: Vec<(usize, &Tensor)> = outs.iter().enumerate().collect();
            sorted.sort_by_key(|(_, t)| t.numel());
            let data = |k: usize| self.model.f32s(&self.outputs[sorted[k].0], sorted[k].1);
            for (logits, rest) in [(1, 3), (0, 2)] {
                let (l, r) = (data(logits)?, data(rest)?);
                let n = l.len();
                if n == 0 || r.len() != n * 16 {
                    return Err(bad(format!(
                        "outputs {} and {} must be [1, N, 1] and [1, N, 16]",
                        self.outputs[sorted[logits].0], self.outputs[sorted[rest].0]
                    )));
                }
                for i in 0..n {
                    rows.push(l[i]);
                    rows.extend_from_slice(&r[i * 16..(i + 1) * 16]);
                }
            }
        }
        if rows.len() != self.anchors.len() * 17 {
            return Err(bad(format!(
                "the outputs hold {} values, expected {} anchors x 17",
                rows.len(),
                self.anchors.len()
            )));
        }
        Ok(rows)
    }

    pub fn detect(&self, image: &Tensor, h: usize, w: usize) -> Result<Dets, NodeError> {
        let rows = self.batch(image)?;
        Ok(decode(
            &rows,
            &self.anchors,
            self.model.pre.width as f32,
            (h, w),
            self.max_detected,
            self.iou_threshold,
            self.min_confidence,
            self.class_id,
        ))
    }
}

/// Decodes [A, 17] rows against `anchors`, input size `size`, for an image (h, w).
#[allow(clippy::too_many_arguments)]
pub fn decode(
    rows: &[f32],
    anchors: &[[f32; 2]],
    size: f32,
    image: (usize, usize),
    max_detected: usize,
    iou_threshold: f32,
    min_confidence: f32,
    class_id: i64,
) -> Dets {
    let mut boxes = Vec::with_capacity(anchors.len());
    let mut scores = Vec::with_capacity(anchors.len());
    for (r, a) in rows.chunks_exact(17).zip(anchors) {
        // f32 like the TF.js ops: centres / size, half sizes, * size.
        let (cx, cy) = ((r[1] + a[0]) / size, (r[2] + a[1]) / size);
        let (hw, hh) = (r[3] / size / 2.0, r[4] / size / 2.0);
        boxes.push([
            (cx - hw) * size,
            (cy - hh) * size,
            (cx + hw) * size,
            (cy + hh) * size,
        ]);
        scores.push(1.0 / (1.0 + (-r[0]).exp()));
    }
    let keep = nms(&boxes, &scores, max_detected, iou_threshold, min_confidence);
    let (sy, sx) = (image.0 as f32 / size, image.1 as f32 / size);
    let mut d = Dets::default();
    let mut lm = Vec::new();
    for i in keep {
        let b = boxes[i];
        d.boxes.push([b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]);
        d.scores.push(scores[i]);
        d.classes.push(class_id);
        let r = &rows[i * 17..(i + 1) * 17];
        for k in 0..6 {
            lm.push((r[5 + 2 * k] + anchors[i][0]) * sx);
            lm.push((r[6 + 2 * k] + anchors[i][1]) * sy);
        }
    }
    d.landmarks = Some(Points::new(6, 2, lm));
    d
}

impl Node for BlazeFace {
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
    fn anchors_match_human() {
        let a = anchors(256);
        assert_eq!(a.len(), 896);
        assert_eq!(a[0], [8.0, 8.0]);
        assert_eq!(a[1], [8.0, 8.0]);
        assert_eq!(a[2], [24.0, 8.0]);
        assert_eq!(a[512], [16.0, 16.0]);
        assert_eq!(a[895], [240.0, 240.0]);
    }

    #[test]
    fn decode_one_face() {
        let a = anchors(256);
        let mut rows = vec![0f32; 896 * 17];
        for r in rows.chunks_exact_mut(17) {
            r[0] = -10.0;
        }
        let i = 2; // anchor (24, 8)
        rows[i * 17..i * 17 + 7].copy_from_slice(&[5.0, 1.0, 2.0, 10.0, 20.0, -3.0, 4.0]);
        let d = decode(&rows, &a, 256.0, (512, 256), 10, 0.1, 0.2, 91);
        assert_eq!(d.len(), 1);
        assert_eq!(d.boxes[0], [20.0, 0.0, 30.0, 40.0]);
        let lm = d.landmarks.unwrap();
        assert_eq!(&lm.data[..2], &[21.0, 24.0]);
    }
}
