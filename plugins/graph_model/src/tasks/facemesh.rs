//! `facemesh`: MediaPipe FaceMesh (192 x 192) — 468 3D landmarks per face, on crops of the
//! BlazeFace boxes — as `@vladmandic/human` does it (`src/face/facemesh.ts` `predict`;
//! `src/face/facemeshutil.ts` `enlargeBox`, `squarifyBox`, `cutAndResize`,
//! `transformRawCoords`, `calculateFaceBox`, `clampBox`; the tail of `src/face/blazeface.ts`
//! `getBoxes`). Per face instance of the `faces` input (the `blazeface` node's output):
//!
//! 1. the detector box (image pixels) enlarged `scale` times about its centre (human's
//!    `face.detector.scale`, 1.4), then squared: side = the larger side, corners rounded to
//!    whole pixels with JavaScript's `Math.round` (`squarifyBox`); a face whose rounded
//!    enlarged size is <= `min_size` in either direction is skipped (`face.detector.minSize`,
//!    0), as is one whose box is not finite;
//! 2. the square cropped and resized to 192 x 192 with TF's `crop_and_resize` (bilinear,
//!    box = corners / (H, W), corner-aligned sampling over [0, H - 1], zeros outside the
//!    image), then `/ 255`;
//! 3. the model (`output_mesh` [1, 1404], `output_faceflag` [1, 1]: human picks the outputs
//!    by their last dimension, 1404 and 1); the face is kept when the face flag (already a
//!    sigmoid in the graph) is > `min_confidence` (human's `face.detector.minConfidence`, 0.2);
//! 4. the mesh (x, y, z in crop pixels) mapped back: `x' = (side_x / 192) (x − 96) + cx`,
//!    `y' = (side_y / 192) (y − 96) + cy` with the square's size and centre; z as the model
//!    gives it (crop-pixel units, as human's `mesh[i][2]`);
//! 5. the instance box: the square's size centred on the mesh's bounding-box centre
//!    (`calculateFaceBox`), clamped to the image (`clampBox`); the score is the face flag,
//!    the class the input face's.
//!
//! Deliberate differences from human, made identically in the TF.js port
//! (`tests/reference/tfjs/tasks.js`): the mesh is not truncated to whole pixels
//! (`Math.trunc`), the score not rounded to 2 decimals, the clamped box not truncated; no
//! rotation correction (off in human's default config, `face.detector.rotation = false`),
//! no iris/attention refinement, no frame-to-frame box cache.

use plugin_sdk::{
    FrameInfo, Inputs, Instances, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec,
    ParamType, ParamValue, Params, PortKind, PortSpec, Tensor,
};

use super::{image_of, model_param, unit_param, Dets, Points, TaskModel};
use crate::ops_cpu;

pub fn kind() -> NodeKind {
    let spec = NodeSpec::new(
        "facemesh",
        "FaceMesh (human's facemesh.ts): 468 3D landmarks per face, on 192x192 crops of the face boxes (the blazeface node's instances)",
    )
    .input(PortSpec::new("image", PortKind::Image, "the image, RGB"))
    .input(PortSpec::new(
        "faces",
        PortKind::Instances,
        "face boxes in image pixels (the blazeface node's instances)",
    ))
    .output(PortSpec::new(
        "instances",
        PortKind::Instances,
        "faces whose mesh score > min_confidence: box around the mesh, score = FaceMesh's face flag, the input face's class, landmarks [N, 468, 3] (x, y in image pixels, z)",
    ))
    .param(model_param("models/facemesh.json"))
    .param(ParamSpec::optional("min_confidence", ParamType::Float, ParamValue::Float(0.2), "faces whose mesh face score is <= this are dropped (human's face.detector.minConfidence)").range(0.0, 1.0))
    .param(ParamSpec::optional("scale", ParamType::Float, ParamValue::Float(1.4), "the face box is enlarged this many times before squaring and cropping (human's face.detector.scale)"))
    .param(ParamSpec::optional("min_size", ParamType::Float, ParamValue::Float(0.0), "faces whose enlarged box is at most this many pixels wide or high are skipped (human's face.detector.minSize)"));
    NodeKind::new(spec, |p| {
        Ok(Box::new(FaceMesh::from_params(p)?) as Box<dyn Node>)
    })
}

/// JavaScript's `Math.round`: halves round up (towards +∞).
pub fn js_round(x: f64) -> f64 {
    let r = x.floor();
    if x - r >= 0.5 {
        r + 1.0
    } else {
        r
    }
}

/// A squared crop box (human's `squarifyBox(enlargeBox(box, scale))`), image pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CropBox {
    /// (x1, y1), whole pixels.
    pub start: [f64; 2],
    /// (x2, y2), whole pixels.
    pub end: [f64; 2],
    /// The rounded size of the enlarged box before squaring (human's `size`, for `minSize`).
    pub size: [f64; 2],
}

impl CropBox {
    /// human's `enlargeBox` then `squarifyBox` of a box [x1, y1, x2, y2], in f64 like JS.
    pub fn new(b: [f32; 4], scale: f64) -> CropBox {
        let center =
            |s: [f64; 2], e: [f64; 2]| [s[0] + (e[0] - s[0]) / 2.0, s[1] + (e[1] - s[1]) / 2.0];
        let size = |s: [f64; 2], e: [f64; 2]| [(e[0] - s[0]).abs(), (e[1] - s[1]).abs()];
        let (s, e) = ([b[0] as f64, b[1] as f64], [b[2] as f64, b[3] as f64]);
        // enlargeBox
        let (c, sz) = (center(s, e), size(s, e));
        let half = [scale * sz[0] / 2.0, scale * sz[1] / 2.0];
        let (s, e) = (
            [c[0] - half[0], c[1] - half[1]],
            [c[0] + half[0], c[1] + half[1]],
        );
        // squarifyBox
        let (c, sz) = (center(s, e), size(s, e));
        let half = sz[0].max(sz[1]) / 2.0;
        CropBox {
            start: [js_round(c[0] - half), js_round(c[1] - half)],
            end: [js_round(c[0] + half), js_round(c[1] + half)],
            size: [js_round(sz[0]), js_round(sz[1])],
        }
    }

    /// human's `getBoxSize`.
    pub fn box_size(&self) -> [f64; 2] {
        [
            (self.end[0] - self.start[0]).abs(),
            (self.end[1] - self.start[1]).abs(),
        ]
    }

    /// human's `getBoxCenter`.
    pub fn center(&self) -> [f64; 2] {
        [
            self.start[0] + (self.end[0] - self.start[0]) / 2.0,
            self.start[1] + (self.end[1] - self.start[1]) / 2.0,
        ]
    }

    pub fn is_finite(&self) -> bool {
        self.start
            .iter()
            .chain(&self.end)
            .all(|v| v.is_finite() && (*v as f32).is_finite())
    }
}

/// The raw model outputs of one crop.
#[derive(Clone, Debug)]
pub struct RawMesh {
    /// [L, 3] in crop pixels (the model output, f32).
    pub mesh: Vec<f32>,
    /// The face flag (a probability).
    pub confidence: f32,
}

#[derive(Debug)]
pub struct FaceMesh {
    model: TaskModel,
    outputs: Vec<String>,
    size: usize,
    min_confidence: f32,
    scale: f64,
    min_size: f64,
}

impl FaceMesh {
    /// Whether its runs take the model's compiled plan (rather than running op by op).
    pub fn planned(&self) -> bool {
        self.model.model.plan_serves(&self.outputs)
    }

    pub fn from_params(params: &Params) -> Result<FaceMesh, NodeError> {
        let mut model = TaskModel::load(params.str("model")?, 1.0, 0.0)?;
        if model.pre.height != model.pre.width {
            return Err(NodeError::new(format!(
                "{}: facemesh expects a square input, got {}x{}",
                model.file(),
                model.pre.height,
                model.pre.width
            )));
        }
        // Only the two outputs used (human finds them by shape among all outputs; the
        // signature names them), so that the contour head is not computed.
        let named = ["output_mesh", "output_faceflag"];
        let outputs: Vec<String> = if named.iter().all(|n| model.require(n).is_ok()) {
            named.iter().map(|n| n.to_string()).collect()
        } else {
            model.model.default_outputs().to_vec()
        };
        model.model.plan_outputs(&outputs);
        let scale = params.float("scale")?;
        if !(scale.is_finite() && scale > 0.0 && scale <= 100.0) {
            return Err(NodeError::new(format!(
                "parameter \"scale\" must be in (0, 100], got {scale}"
            )));
        }
        let min_size = params.float("min_size")?;
        if !(min_size.is_finite() && min_size >= 0.0) {
            return Err(NodeError::new(format!(
                "parameter \"min_size\" must be a number >= 0, got {min_size}"
            )));
        }
        Ok(FaceMesh {
            size: model.pre.width,
            model,
            outputs,
            min_confidence: unit_param(params, "min_confidence")?,
            scale,
            min_size,
        })
    }

    /// The crop box of a detector box, or None when human skips the face (not finite, or
    /// `minSize`).
    pub fn crop_box(&self, b: [f32; 4]) -> Option<CropBox> {
        let c = CropBox::new(b, self.scale);
        (c.is_finite() && c.size[0] > self.min_size && c.size[1] > self.min_size).then_some(c)
    }

    /// human's `cutAndResize`: the model input [1, S, S, 3] for `crop` on `image` (u8
    /// [H, W, C]).
    pub fn crop(&self, image: &Tensor, crop: &CropBox) -> Result<Tensor, NodeError> {
        let (h, w) = match image.shape() {
            [h, w, 1 | 3 | 4] if *h > 0 && *w > 0 => (*h as f64, *w as f64),
            _ => {
                return Err(NodeError::new(format!(
                    "{}: the image must be a non-empty [H, W, 1|3|4] image, got {}",
                    self.model.file(),
                    image.describe()
                )))
            }
        };
        let cut = [
            (crop.start[1] / h) as f32,
            (crop.start[0] / w) as f32,
            (crop.end[1] / h) as f32,
            (crop.end[0] / w) as f32,
        ];
        let err = |e: crate::error::OpError| {
            NodeError::new(format!("{}: face crop: {e}", self.model.file()))
        };
        let rgb = rgb_image(image).map_err(err)?;
        let x =
            ops_cpu::crop_and_resize_bilinear(&rgb, cut, self.size, self.size, 0.0).map_err(err)?;
        let mut v = ops_cpu::f32s(&x).map_err(err)?.to_vec();
        for e in v.iter_mut() {
            *e /= 255.0;
        }
        Tensor::from_vec(&[1, self.size, self.size, 3], v)
            .map_err(|e| NodeError::new(e.to_string()))
    }

    /// Runs the model on a crop: the mesh (the output whose last dimension is 1404, or the
    /// only one divisible by 3) and the face flag (last dimension 1).
    pub fn run_crop(&self, x: &Tensor) -> Result<RawMesh, NodeError> {
        let outs = self
            .model
            .model
            .run(std::slice::from_ref(x), &self.outputs)
            .map_err(|e| NodeError::new(e.to_string()))?;
        let last = |t: &Tensor| t.shape().last().copied().unwrap_or(0);
        let find = |want: usize, what: &str| {
            outs.iter().position(|t| last(t) == want).ok_or_else(|| {
                NodeError::new(format!(
                    "{}: no output with last dimension {want} ({what}) among {}",
                    self.model.file(),
                    outs.iter()
                        .map(|t| t.describe())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
        };
        let (im, ic) = (find(1404, "the mesh")?, find(1, "the face flag")?);
        let mesh = self.model.f32s(&self.outputs[im], &outs[im])?.to_vec();
        let confidence = *self
            .model
            .f32s(&self.outputs[ic], &outs[ic])?
            .first()
            .ok_or_else(|| NodeError::new(format!("{}: empty face flag", self.model.file())))?;
        Ok(RawMesh { mesh, confidence })
    }

    /// Face meshes for the detector boxes `faces` on `image` (u8 [H, W, C]).
    pub fn detect(&self, image: &Tensor, faces: &Instances) -> Result<Dets, NodeError> {
        let (h, w) = match image.shape() {
            [h, w, _] => (*h, *w),
            _ => {
                return Err(NodeError::new(format!(
                    "the image must be [H, W, C], got {}",
                    image.describe()
                )))
            }
        };
        let mut d = Dets::default();
        let mut lm = Vec::new();
        let mut count = 468;
        for (k, b) in faces.boxes.iter().enumerate() {
            let Some(cb) = self.crop_box(*b) else {
                continue;
            };
            let raw = self.run_crop(&self.crop(image, &cb)?)?;
            if raw.confidence.is_nan() || raw.confidence <= self.min_confidence {
                continue;
            }
            let (mesh, face_box) = decode(&raw.mesh, &cb, self.size, (h, w));
            count = mesh.len() / 3;
            lm.extend_from_slice(&mesh);
            d.boxes.push(face_box);
            d.scores.push(raw.confidence);
            d.classes.push(faces.classes.get(k).copied().unwrap_or(0));
        }
        d.landmarks = Some(Points::new(count, 3, lm));
        Ok(d)
    }
}

/// The image as RGB [H, W, 3] (1 channel repeated, alpha dropped; 3 channels shared).
fn rgb_image(image: &Tensor) -> crate::error::OpResult<Tensor> {
    let (h, w, c) = match image.shape() {
        [h, w, c @ (1 | 3 | 4)] => (*h, *w, *c),
        s => return crate::error::op_err!("the image must be [H, W, 1|3|4], got shape {s:?}"),
    };
    if c == 3 {
        return Ok(image.clone());
    }
    let px = image.as_slice::<u8>()?;
    let mut rgb = Vec::with_capacity(h * w * 3);
    for p in px.chunks_exact(c) {
        if c == 1 {
            rgb.extend_from_slice(&[p[0]; 3]);
        } else {
            rgb.extend_from_slice(&p[..3]);
        }
    }
    Ok(Tensor::from_vec(&[h, w, 3], rgb)?)
}

/// human's `transformRawCoords` (angle 0) and `calculateFaceBox` + `clampBox`: the raw mesh
/// [L, 3] in crop pixels of a `size` x `size` crop → image pixels, and the face box.
pub fn decode(
    raw: &[f32],
    crop: &CropBox,
    size: usize,
    image: (usize, usize),
) -> (Vec<f32>, [f32; 4]) {
    let bs = crop.box_size();
    let c = crop.center();
    let s = size as f64;
    let mut out = Vec::with_capacity(raw.len());
    let (mut x0, mut y0, mut x1, mut y1) = (
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    );
    for p in raw.chunks_exact(3) {
        let x = (bs[0] / s) * (p[0] as f64 - s / 2.0) + c[0];
        let y = (bs[1] / s) * (p[1] as f64 - s / 2.0) + c[1];
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        out.extend_from_slice(&[x as f32, y as f32, p[2]]);
    }
    let center = [x0 + (x1 - x0) / 2.0, y0 + (y1 - y0) / 2.0];
    let (h, w) = (image.0 as f64, image.1 as f64);
    let face_box = [
        (center[0] - bs[0] / 2.0).max(0.0),
        (center[1] - bs[1] / 2.0).max(0.0),
        (center[0] + bs[0] / 2.0).min(w),
        (center[1] + bs[1] / 2.0).min(h),
    ]
    .map(|v| v as f32);
    (out, face_box)
}

impl Node for FaceMesh {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let (image, h, w) = image_of(inputs)?;
        let faces = Instances::from_value(inputs.value("faces")?)
            .map_err(|e| NodeError::new(format!("input \"faces\": {e}")))?;
        let dets = self.detect(image, &faces)?;
        Ok(Outputs::one("instances", dets.to_value(h, w)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn js_round_rounds_halves_up() {
        assert_eq!(js_round(2.5), 3.0);
        assert_eq!(js_round(-2.5), -2.0);
        assert_eq!(js_round(-2.6), -3.0);
        assert_eq!(js_round(0.49999999999999994), 0.0);
    }

    #[test]
    fn crop_box_enlarges_and_squares_like_human() {
        // 100 x 50 box centred at (150, 75); x 1.4 → 140 x 70; square side 140.
        let c = CropBox::new([100.0, 50.0, 200.0, 100.0], 1.4);
        assert_eq!(c.start, [80.0, 5.0]);
        assert_eq!(c.end, [220.0, 145.0]);
        assert_eq!(c.size, [140.0, 70.0]);
        assert_eq!(c.box_size(), [140.0, 140.0]);
        assert_eq!(c.center(), [150.0, 75.0]);
        // A zero-size box rounds to size 0 (skipped with min_size 0); a huge one is not
        // finite in f32.
        let z = CropBox::new([10.0, 10.0, 10.0, 10.0], 1.4);
        assert_eq!(z.size, [0.0, 0.0]);
        assert!(!CropBox::new([-3e38, 0.0, 3e38, 1.0], 1.4).is_finite());
    }

    #[test]
    fn decode_maps_crop_pixels_to_the_image() {
        let c = CropBox {
            start: [10.0, 20.0],
            end: [106.0, 116.0],
            size: [96.0, 96.0],
        };
        // Crop centre (96, 96) → box centre (58, 68); crop corner (0, 0) → (10, 20).
        let (m, b) = decode(&[96.0, 96.0, -4.0, 0.0, 0.0, 1.0], &c, 192, (100, 200));
        assert_eq!(m, [58.0, 68.0, -4.0, 10.0, 20.0, 1.0]);
        // Mesh bbox centre (34, 44), box side 96, clamped to the image (200 x 100).
        assert_eq!(b, [0.0, 0.0, 82.0, 92.0]);
    }
}
