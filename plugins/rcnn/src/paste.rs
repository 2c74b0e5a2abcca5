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

use kernels::ops::paste_masks_regions;
use kernels::Tensor;
use ndarray::{Array3, Ix3};
use plugin_sdk::{
    DType, FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Value,
};

use vision_common::ModelError;
use vision_common::{float_param, ImageSizes};

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
    NodeKind::new(spec, |params| {
        Ok(Box::new(PasteMasks::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `paste_masks` node.
#[derive(Clone, Debug)]
pub struct PasteMasks {
    threshold: f32,
}

impl PasteMasks {
    pub fn new(threshold: f32) -> PasteMasks {
        PasteMasks { threshold }
    }

    pub fn from_params(params: &Params) -> Result<PasteMasks, ModelError> {
        Ok(PasteMasks::new(float_param(params, "threshold")?))
    }

    /// The node's computation.
    pub fn run(&self, instances: &Value, image: &Value) -> Result<Value, ModelError> {
        instances.validate().map_err(ModelError::Input)?;
        let sizes = ImageSizes::from_value("paste_masks", image)?;
        let (rh, rw) = sizes.resized;
        let (oh, ow) = sizes.original;
        // Points scale as sizes.box_to_original scales boxes.
        let ratio_h = oh as f32 / rh as f32;
        let ratio_w = ow as f32 / rw as f32;
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
                        .map(|c| sizes.box_to_original(&[c[0], c[1], c[2], c[3]]))
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
        let regions = paste_masks_regions(masks, &boxes, (oh, ow), PADDING)
            .map_err(|e| ModelError::input(format!("paste_masks: {e}")))?;
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

impl Node for PasteMasks {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(inputs.value("instances")?, inputs.value("image")?)?;
        Ok(Outputs::one("instances", v))
    }
}
