//! `paste_masks`: torchvision's `GeneralizedRCNNTransform.postprocess` for instances: boxes
//! (and keypoints, landmarks) scaled from the resized image back to the original
//! (`resize_boxes`: per-axis `original / resized` in f32), then each `M x M` mask probability
//! pasted into the original image (`paste_masks_in_image`, padding 1: the mask padded by one
//! pixel, the box expanded by `(M + 2) / M` and truncated to integers, bilinear resize with
//! `align_corners=False`) and thresholded.
//!
//! Instances without masks (Keypoint R-CNN's) are only scaled.
//!
//! torchvision returns the soft masks; its documentation thresholds them with `>= 0.5`, which
//! is what this node does (`threshold`), writing u8 masks (0 or 1) of the original size, the
//! form `json_sink` encodes as COCO RLE and `image_sink` draws.
//!
//! With `convention = "detectron2"`, Detectron2's `detector_postprocess`: boxes (and points)
//! scaled by `original / resized` (an f64 ratio, applied in f32), clipped to the photo,
//! instances whose box is then empty dropped, and each mask pasted by `grid_sample`
//! ([`kernels::ops::paste_mask_grid_sample`]) and thresholded with `>= threshold`.

use kernels::ops::{paste_mask_grid_sample, paste_masks_regions};
use kernels::Tensor;
use ndarray::{Array3, Ix3};
use plugin_sdk::{
    DType, FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Value,
};

use vision_common::ModelError;
use vision_common::{float_param, ImageSizes};

use crate::Convention;

/// torchvision's `paste_masks_in_image(..., padding=1)`.
const PADDING: usize = 1;

pub fn kind() -> NodeKind {
    let spec = NodeSpec::new(
        "paste_masks",
        "torchvision transform.postprocess: boxes, keypoints and landmarks back to the original image; mask probabilities (when present) pasted at full size and thresholded",
    )
    .input(PortSpec::new(
        "instances",
        PortKind::Instances,
        "instances in resized-image pixels, with masks f32 [N, M, M] (from roi_mask_head) or keypoints (from roi_keypoint_head)",
    ))
    .input(
        PortSpec::new(
            "image",
            PortKind::ModelImage,
            "the image from rcnn_preprocess (image_size and original_size)",
        )
        .dtype(DType::F32)
        .shape("3,H,W"),
    )
    .output(PortSpec::new(
        "instances",
        PortKind::Instances,
        "the instances in original-image pixels, masks (if any) u8 [N, H, W] (1 where the probability >= threshold)",
    ))
    .param(ParamSpec::optional(
        "threshold",
        ParamType::Float,
        ParamValue::Float(0.5),
        "mask probability from which a pixel belongs to the instance (>=)",
    ).range(0.0, 1.0));
    let spec = Convention::param(spec);
    NodeKind::new(spec, |params| {
        Ok(Box::new(PasteMasks::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `paste_masks` node.
#[derive(Clone, Debug)]
pub struct PasteMasks {
    threshold: f32,
    convention: Convention,
}

impl PasteMasks {
    pub fn new(threshold: f32) -> PasteMasks {
        PasteMasks {
            threshold,
            convention: Convention::Torchvision,
        }
    }

    pub fn from_params(params: &Params) -> Result<PasteMasks, ModelError> {
        Ok(PasteMasks {
            threshold: float_param(params, "threshold")?,
            convention: Convention::from_params(params)?,
        })
    }

    /// The node's computation.
    pub fn run(&self, instances: &Value, image: &Value) -> Result<Value, ModelError> {
        instances.validate().map_err(ModelError::Input)?;
        let sizes = ImageSizes::from_value("paste_masks", image)?;
        let (rh, rw) = sizes.resized;
        let (oh, ow) = sizes.original;
        let d2 = self.convention == Convention::Detectron2;
        // torchvision's resize_boxes divides in f32; Detectron2 multiplies by a Python float.
        let (ratio_h, ratio_w) = if d2 {
            (
                (oh as f64 / rh as f64) as f32,
                (ow as f64 / rw as f64) as f32,
            )
        } else {
            (oh as f32 / rh as f32, ow as f32 / rw as f32)
        };
        let instances = if d2 {
            &nonempty_after_clip(instances, [ratio_w, ratio_h], (oh, ow))?
        } else {
            instances
        };
        // Keypoint R-CNN has no masks: only the boxes and points are scaled.
        let masks = instances.get("masks");
        if let Some(masks) = masks.filter(|m| m.dtype() != DType::F32) {
            return Err(ModelError::input(format!(
                "paste_masks: masks must be f32 probabilities [N, M, M], got {}",
                masks.describe()
            )));
        }
        let mut out = Value::new(PortKind::Instances);
        let mut boxes = Vec::new();
        for (name, t) in instances.tensors() {
            let scaled = match name.as_str() {
                "boxes" => {
                    let b = t.as_slice::<f32>()?;
                    boxes = b
                        .chunks_exact(4)
                        .map(|c| {
                            let b = [
                                c[0] * ratio_w,
                                c[1] * ratio_h,
                                c[2] * ratio_w,
                                c[3] * ratio_h,
                            ];
                            if d2 {
                                clip_box(b, (oh, ow))
                            } else {
                                b
                            }
                        })
                        .collect::<Vec<_>>();
                    let flat: Vec<f32> = boxes.iter().flatten().copied().collect();
                    Tensor::from_vec(t.shape(), flat)?
                }
                // Points: (x, y, ...) per row.
                "keypoints" | "landmarks" => {
                    let stride = t.shape().last().copied().unwrap_or(1);
                    let mut v = t.as_slice::<f32>()?.to_vec();
                    for p in v.chunks_exact_mut(stride) {
                        p[0] *= ratio_w;
                        if stride > 1 {
                            p[1] *= ratio_h;
                        }
                    }
                    Tensor::from_vec(t.shape(), v)?
                }
                "masks" => continue,
                _ => t.clone(),
            };
            out.insert(name, scaled);
        }
        let Some(masks) = masks else {
            return Ok(out);
        };
        let masks = masks
            .view::<f32>()?
            .into_dimensionality::<Ix3>()
            .map_err(|e| ModelError::input(e.to_string()))?;
        let regions = if d2 {
            if masks.dim().0 != boxes.len() {
                return Err(ModelError::input(format!(
                    "paste_masks: {} masks for {} boxes",
                    masks.dim().0,
                    boxes.len()
                )));
            }
            masks
                .outer_iter()
                .zip(&boxes)
                .map(|(m, b)| paste_mask_grid_sample(m, b, (oh, ow)))
                .collect()
        } else {
            paste_masks_regions(masks, &boxes, (oh, ow), PADDING)
                .map_err(|e| ModelError::input(format!("paste_masks: {e}")))?
        };
        let mut pasted = Array3::<u8>::zeros((boxes.len(), oh, ow));
        for (mut plane, region) in pasted.outer_iter_mut().zip(&regions) {
            let Some(r) = region else { continue };
            let (h, w) = r.data.dim();
            plane
                .slice_mut(ndarray::s![r.y0..r.y0 + h, r.x0..r.x0 + w])
                .zip_mut_with(&r.data, |d, &p| *d = u8::from(p >= self.threshold));
        }
        let n = boxes.len();
        out.insert(
            "masks",
            Tensor::from_vec(&[n, oh, ow], pasted.into_raw_vec_and_offset().0)?,
        );
        Ok(out)
    }
}

/// `Boxes.clip` to the photo: x in `[0, width]`, y in `[0, height]`.
fn clip_box(b: [f32; 4], (h, w): (usize, usize)) -> [f32; 4] {
    let (h, w) = (h as f32, w as f32);
    [
        b[0].clamp(0.0, w),
        b[1].clamp(0.0, h),
        b[2].clamp(0.0, w),
        b[3].clamp(0.0, h),
    ]
}

/// The instances whose box, scaled to the photo and clipped, keeps both sides positive
/// (`detector_postprocess`: `results[output_boxes.nonempty()]`); every per-instance tensor is
/// filtered alike.
fn nonempty_after_clip(
    instances: &Value,
    [ratio_w, ratio_h]: [f32; 2],
    original: (usize, usize),
) -> Result<Value, ModelError> {
    let boxes = instances.tensor("boxes").map_err(ModelError::Input)?;
    let keep: Vec<usize> = boxes
        .as_slice::<f32>()?
        .chunks_exact(4)
        .enumerate()
        .filter(|(_, c)| {
            let b = clip_box(
                [
                    c[0] * ratio_w,
                    c[1] * ratio_h,
                    c[2] * ratio_w,
                    c[3] * ratio_h,
                ],
                original,
            );
            b[2] - b[0] > 0.0 && b[3] - b[1] > 0.0
        })
        .map(|(i, _)| i)
        .collect();
    if keep.len() == boxes.shape()[0] {
        return Ok(instances.clone());
    }
    instances.select_rows(&keep).map_err(ModelError::Input)
}

impl Node for PasteMasks {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(inputs.value("instances")?, inputs.value("image")?)?;
        Ok(Outputs::one("instances", v))
    }
}
