//! `centernet`: CenterNet-MobileNetV3 COCO detection as `@vladmandic/human` does it
//! (`src/object/centernet.ts`):
//!
//! 1. resize the image (TF.js `resizeBilinear`, legacy mapping) to 512 x 512, raw 0–255
//!    float pixels;
//! 2. run the graph up to `tower_0/detections` [1, 100, 6]: (x1, y1, x2, y2, score, class)
//!    with corners in input pixels and a 0-based class index (the graph's own top-k decoding);
//! 3. `tf.image.nonMaxSuppression` on the (y1, x1, y2, x2) boxes: at most `max_detected`
//!    (human's `object.maxDetected`, 10), IoU threshold `iou_threshold` (0.4), score >
//!    `min_confidence` (0.2);
//! 4. boxes scaled to the image (`x / 512 * W`; human then truncates to whole pixels for its
//!    `box`, we do not), class index → COCO category id (human's `labels.ts` table, with the
//!    official sparse COCO ids: person 1 … cup 47 … toothbrush 90).

use plugin_sdk::{
    FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Tensor,
};

use super::{count_param, image_of, model_param, nms, unit_param, Dets, TaskModel};

/// The 80 COCO classes in the model's order (human's `src/object/labels.ts`).
pub const LABELS: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

pub use vision_common::COCO_CATEGORY_IDS as COCO_IDS;

const OUTPUT: &str = "tower_0/detections";

pub fn kind() -> NodeKind {
    let spec = NodeSpec::new(
        "centernet",
        "CenterNet-MobileNetV3 COCO object detection (human's centernet.ts): instances with COCO category ids",
    )
    .input(PortSpec::new("image", PortKind::Image, "the image, RGB"))
    .output(PortSpec::new(
        "instances",
        PortKind::Instances,
        "detections: boxes in image pixels, scores, COCO category ids (person 1, cat 17, cup 47, ...)",
    ))
    .param(model_param("models/centernet.json"))
    .param(ParamSpec::optional("min_confidence", ParamType::Float, ParamValue::Float(0.2), "detections with a score <= this are dropped").range(0.0, 1.0))
    .param(ParamSpec::optional("iou_threshold", ParamType::Float, ParamValue::Float(0.4), "NMS: a box overlapping a better one by IoU >= this is dropped").range(0.0, 1.0))
    .param(ParamSpec::optional("max_detected", ParamType::Int, ParamValue::Int(10), "at most this many detections per image").range(1.0, 100000.0));
    NodeKind::new(spec, |p| {
        Ok(Box::new(CenterNet::from_params(p)?) as Box<dyn Node>)
    })
}

#[derive(Debug)]
pub struct CenterNet {
    model: TaskModel,
    output: Vec<String>,
    min_confidence: f32,
    iou_threshold: f32,
    max_detected: usize,
}

impl CenterNet {
    /// Whether its runs take the model's compiled plan (rather than running op by op).
    pub fn planned(&self) -> bool {
        self.model.model.plan_serves(&self.output)
    }

    pub fn from_params(params: &Params) -> Result<CenterNet, NodeError> {
        let mut model = TaskModel::load(params.str("model")?, 1.0, 0.0)?;
        model.require(OUTPUT)?;
        // The plan made at load serves the signature's three outputs; this node asks for one.
        model.model.plan_outputs(&[OUTPUT.to_string()]);
        Ok(CenterNet {
            model,
            output: vec![OUTPUT.to_string()],
            min_confidence: unit_param(params, "min_confidence")?,
            iou_threshold: unit_param(params, "iou_threshold")?,
            max_detected: count_param(params, "max_detected")?,
        })
    }

    pub fn detect(&self, image: &Tensor, h: usize, w: usize) -> Result<Dets, NodeError> {
        let outs = self.model.run(image, &self.output)?;
        let t = &outs[0];
        let n = match t.shape() {
            [1, n, 6] => *n,
            _ => {
                return Err(NodeError::new(format!(
                    "{}: output \"{OUTPUT}\" must be [1, N, 6], got {}",
                    self.model.file(),
                    t.describe()
                )))
            }
        };
        let raw = self.model.f32s(OUTPUT, t)?;
        let size = (self.model.pre.height as f32, self.model.pre.width as f32);
        decode(
            raw,
            n,
            size,
            (h, w),
            self.max_detected,
            self.iou_threshold,
            self.min_confidence,
        )
        .map_err(|m| NodeError::new(format!("{}: output \"{OUTPUT}\": {m}", self.model.file())))
    }
}

/// Decodes `n` rows (x1, y1, x2, y2, score, class) in input pixels of `input` = (h, w).
pub fn decode(
    raw: &[f32],
    n: usize,
    input: (f32, f32),
    image: (usize, usize),
    max_detected: usize,
    iou_threshold: f32,
    min_confidence: f32,
) -> Result<Dets, String> {
    let rows: Vec<&[f32]> = raw.chunks_exact(6).take(n).collect();
    let yx: Vec<[f32; 4]> = rows.iter().map(|r| [r[1], r[0], r[3], r[2]]).collect();
    let scores: Vec<f32> = rows.iter().map(|r| r[4]).collect();
    let keep = nms(&yx, &scores, max_detected, iou_threshold, min_confidence);
    let (ih, iw) = input;
    let (h, w) = (image.0 as f32, image.1 as f32);
    let mut d = Dets::default();
    for i in keep {
        let r = rows[i];
        let c = r[5];
        if !((0.0..80.0).contains(&c) && c.fract() == 0.0) {
            return Err(format!("row {i} has class {c}, expected 0..79"));
        }
        d.boxes
            .push([r[0] / iw * w, r[1] / ih * h, r[2] / iw * w, r[3] / ih * h]);
        d.scores.push(r[4]);
        d.classes.push(COCO_IDS[c as usize]);
    }
    Ok(d)
}

impl Node for CenterNet {
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
    fn decode_scales_boxes_and_maps_classes() {
        let raw = [
            10.0, 20.0, 110.0, 220.0, 0.9, 41.0, // cup
            12.0, 20.0, 110.0, 220.0, 0.8, 41.0, // overlaps the first
            300.0, 300.0, 400.0, 400.0, 0.1, 0.0, // below the threshold
            300.0, 300.0, 400.0, 400.0, 0.7, 15.0, // cat
        ];
        let d = decode(&raw, 4, (512.0, 512.0), (256, 1024), 10, 0.4, 0.2).unwrap();
        assert_eq!(d.classes, vec![47, 17]);
        assert_eq!(d.boxes[0], [20.0, 10.0, 220.0, 110.0]);
        assert_eq!(LABELS[41], "cup");
        let bad = [0.0, 0.0, 1.0, 1.0, 0.9, 80.0];
        assert!(decode(&bad, 1, (512.0, 512.0), (1, 1), 10, 0.4, 0.2).is_err());
    }
}
