//! `sem_seg_fpn_head`: Panoptic FPN's semantic head, Detectron2's `SemSegFPNHead`
//! (`modeling/meta_arch/semantic_seg.py` @ 02b5c4e2) at inference, with `sem_seg_postprocess`
//! (`modeling/postprocessing.py`):
//!
//! 1. the semantic-FPN merge of p2..p5 ([`crate::semantic_fpn`]: 3x3 convolutions with
//!    GroupNorm(32) and ReLU, 2x upsamplings to 1/4, summed, a 1x1 predictor to
//!    `num_classes`), then `F.interpolate(scale_factor=4, bilinear, align_corners=False)`
//!    to the padded input;
//! 2. cropped to the resized image (`image_size`) and resized bilinearly to the photo
//!    (`original_size`);
//! 3. `labels`: the argmax over the classes (the first maximum), as `PanopticFPN` takes it.
//!
//! Output `semantic`: `logits` f32 [C, H, W] and `labels` i64 [H, W] at the photo's size.
//! Label 0 is Panoptic FPN's "things" class. Weights: Detectron2's names under `prefix`
//! (`sem_seg_head.`): `p2.0`, `p3.0`, `p4.{0,2}`, `p5.{0,2,4}` (each with `.norm`) and
//! `predictor`.

use kernels::layers::resize::resize_window_resize;
use kernels::layers::ResizeMode;
use kernels::weights::Weights;
use kernels::Tensor;
use ndarray::ArrayView4;
use plugin_sdk::{
    FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Value,
};

use vision_common::{
    count_param, feature_levels, features_input, image_input, in_features_param, levels_params,
    resolve_prefix, weights_param, weights_params, ImageSizes,
};
use vision_common::{LayerContext, ModelError};

use crate::semantic_fpn::{SemanticFpn, COMMON_STRIDE};

const NODE: &str = "sem_seg_fpn_head";

const BILINEAR: ResizeMode = ResizeMode::Bilinear {
    align_corners: false,
};

/// The head with its weights bound.
#[derive(Debug)]
pub struct SemSegHead {
    merge: SemanticFpn,
    channels: usize,
}

impl SemSegHead {
    pub fn from_weights(
        weights: &Weights,
        prefix: &str,
        in_features: &[String],
        channels: usize,
        conv_dims: usize,
        num_classes: usize,
    ) -> Result<SemSegHead, ModelError> {
        let prefix = resolve_prefix(weights, prefix, &["predictor.weight"]);
        let mut b = weights.binder(&prefix);
        let merge = SemanticFpn::bind(
            &mut b,
            "",
            in_features,
            channels,
            conv_dims,
            num_classes,
            true,
        )?;
        b.finish()?;
        Ok(SemSegHead { merge, channels })
    }

    /// Logits `[C, H, W]` at the photo's size, from p2..p5 of the padded input.
    pub fn forward(
        &self,
        levels: &[ArrayView4<'_, f32>],
        sizes: &ImageSizes,
    ) -> Result<ndarray::Array3<f32>, ModelError> {
        if let Some(first) = levels.first() {
            if first.dim().1 != self.channels {
                return Err(ModelError::input(format!(
                    "{NODE}: the feature levels have {} channels, the head expects {}",
                    first.dim().1,
                    self.channels
                )));
            }
        }
        let x = kernels::profile::timed(
            || format!("{NODE}: semantic-FPN merge"),
            || self.merge.forward(levels),
        )?;
        let (_, _, h, w) = x.dim();
        let (ph, pw) = (h * COMMON_STRIDE, w * COMMON_STRIDE);
        let (rh, rw) = sizes.resized;
        if rh > ph || rw > pw {
            return Err(ModelError::input(format!(
                "{NODE}: the image size {rh}x{rw} exceeds the head's {ph}x{pw} output"
            )));
        }
        // The 4x upsampling where sem_seg_postprocess's crop keeps it (the values of the
        // whole upsampling there), then the resize to the photo, in one pass.
        let out = kernels::profile::timed(
            || format!("{NODE}: upsampling and resize"),
            || resize_window_resize(x.view(), (ph, pw), 0..rh, 0..rw, sizes.original, BILINEAR),
        )
        .ctx(|| format!("{NODE} (4x upsampling and sem_seg_postprocess resize)"))?;
        Ok(out.index_axis_move(ndarray::Axis(0), 0))
    }
}

/// Per pixel, the class of the largest of `c` planes of `plane` pixels (row-major
/// `[C, H, W]`): the first maximum, a NaN counting as the maximum (torch's argmax).
pub fn argmax_labels(x: &[f32], c: usize, plane: usize) -> Vec<i64> {
    use rayon::prelude::*;
    // Channel by channel over blocks of pixels, keeping each pixel's best so far.
    const BLOCK: usize = 4096;
    let mut labels = vec![0i64; plane];
    labels
        .par_chunks_mut(BLOCK)
        .enumerate()
        .for_each(|(b, out)| {
            let start = b * BLOCK;
            let mut top = x[start..start + out.len()].to_vec();
            for k in 1..c {
                let plane_k = &x[k * plane + start..k * plane + start + out.len()];
                for ((t, l), &v) in top.iter_mut().zip(out.iter_mut()).zip(plane_k) {
                    if v > *t || (v.is_nan() && !t.is_nan()) {
                        *t = v;
                        *l = k as i64;
                    }
                }
            }
        });
    labels
}

pub fn kind() -> NodeKind {
    let spec = NodeSpec::new(
        NODE,
        "Panoptic FPN semantic head (Detectron2 SemSegFPNHead): semantic-FPN merge with GroupNorm, 4x upsampling, sem_seg_postprocess to the photo, argmax",
    );
    let spec = features_input(spec, "the FPN levels p2..p5 (in_features)");
    let spec = image_input(
        spec,
        "the image from rcnn_preprocess (image_size: the crop; original_size: the output size)",
    )
    .output(PortSpec::new(
        "semantic",
        PortKind::Semantic,
        "logits f32 [C, H, W] and labels i64 [H, W] at the photo's size (label 0: things)",
    ));
    let spec = weights_params(
        spec,
        "the semantic head (Detectron2 names)",
        "sem_seg_head.",
        "name prefix of the head's tensors",
    );
    let spec = levels_params(
        spec,
        &["p2", "p3", "p4", "p5"],
        "FPN levels p2..p5, finest first",
        256,
    )
    .param(
        ParamSpec::optional(
            "conv_dims",
            ParamType::Int,
            ParamValue::Int(128),
            "SEM_SEG_HEAD.CONVS_DIM (a multiple of 32: GroupNorm's groups)",
        )
        .range(32.0, 65536.0),
    )
    .param(
        ParamSpec::optional(
            "num_classes",
            ParamType::Int,
            ParamValue::Int(54),
            "SEM_SEG_HEAD.NUM_CLASSES (COCO panoptic: 53 stuff classes + the things class 0)",
        )
        .range(1.0, 65536.0),
    );
    NodeKind::new(spec, |params| {
        Ok(Box::new(SemSegHeadNode::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `sem_seg_fpn_head` node.
#[derive(Debug)]
pub struct SemSegHeadNode {
    model: SemSegHead,
    in_features: Vec<String>,
}

impl SemSegHeadNode {
    pub fn from_params(params: &Params) -> Result<SemSegHeadNode, ModelError> {
        let in_features = in_features_param(params)?;
        let (weights, prefix) = weights_param(params)?;
        let model = SemSegHead::from_weights(
            &weights,
            &prefix,
            &in_features,
            count_param(params, "channels")?,
            count_param(params, "conv_dims")?,
            count_param(params, "num_classes")?,
        )?;
        Ok(SemSegHeadNode { model, in_features })
    }

    /// The node's computation.
    pub fn run(&self, features: &Value, image: &Value) -> Result<Value, ModelError> {
        let sizes = ImageSizes::from_value(NODE, image)?;
        let levels = feature_levels(NODE, features, &self.in_features)?;
        let logits = self.model.forward(&levels, &sizes)?;
        let (c, h, w) = logits.dim();
        let logits = logits.into_raw_vec_and_offset().0;
        let labels = kernels::profile::timed(
            || format!("{NODE}: argmax"),
            || argmax_labels(&logits, c, h * w),
        );
        Ok(Value::new(PortKind::Semantic)
            .with("logits", Tensor::from_vec(&[c, h, w], logits)?)
            .with("labels", Tensor::from_vec(&[h, w], labels)?))
    }
}

impl Node for SemSegHeadNode {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(inputs.value("features")?, inputs.value("image")?)?;
        Ok(Outputs::one("semantic", v))
    }
}
