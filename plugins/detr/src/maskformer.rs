//! MaskFormer (facebookresearch/MaskFormer @ da3e60d8) at inference, as
//! `configs/coco-panoptic/maskformer_panoptic_R50_bs64_554k.yaml` builds it on Detectron2's
//! ResNet-50 (the backbones' `resnet` with `stage_names = "detectron2"`):
//!
//! - `maskformer_preprocess`: Detectron2's test-time `ResizeShortestEdge(800, 1333)` (Pillow's
//!   bilinear resize of the 8-bit photo, bit for bit), then `(x - PIXEL_MEAN) / PIXEL_STD` on
//!   0..255 RGB. `SIZE_DIVISIBILITY: 0`: no padding.
//! - `maskformer`:
//!   1. `TransformerEncoderPixelDecoder`: `input_proj` (1x1) on res5, 6 DETR encoder layers
//!      with sine positions, `layer_4` (3x3 conv, GroupNorm, ReLU); then for res4, res3, res2
//!      the `adapter_{3,2,1}` (1x1 conv, GroupNorm) plus the nearest upsampling of the coarser
//!      map, and `layer_{3,2,1}`; `mask_features` (3x3 conv) at 1/4 scale.
//!   2. `TransformerPredictor` on the encoder's output (`TRANSFORMER_IN_FEATURE:
//!      transformer_encoder`; 256 channels, so `input_proj` is the identity and the predictor's
//!      own encoder has 0 layers): 6 decoder layers with 100 queries, `class_embed` (134
//!      logits, the last is "no object"), `mask_embed` (3-layer MLP), and the masks as the
//!      products of the mask embeddings with `mask_features`.
//!   3. Inference (`sem_seg_postprocess_before_inference`, true with `PANOPTIC_ON`): each mask
//!      resized bilinearly to the input size, then to the photo's; `semantic_inference`
//!      (`einsum("qc,qhw->chw", softmax(cls)[:, :-1], sigmoid(masks))`, its argmax as labels)
//!      and `panoptic_inference` (queries whose best class, "no object" included, is a real
//!      one scoring above `object_mask_threshold`; pixels to the query of the highest
//!      `score · mask`; a query kept when its pixels are at least `overlap_threshold` of its
//!      own mask (`>= 0.5`), stuff classes merged into one segment).
//!
//! Weights, told apart by their names: the official checkpoints' (`sem_seg_head.pixel_decoder.*`,
//! `sem_seg_head.predictor.*`; `backbone.*` is the `resnet` node's, `stage_names =
//! "detectron2"`), or Hugging Face transformers' `MaskFormerForInstanceSegmentation`
//! (`model.pixel_level_module.decoder.*`, `model.transformer_module.*`, `class_predictor`,
//! `mask_embedder`; its ResNet under `model.pixel_level_module.encoder.` is the `resnet`
//! node's, `stage_names = "transformers"`).
//!
//! Two pixel decoders ([`PixelDecoder`]), also told apart by the names: the
//! `TransformerEncoderPixelDecoder` above, and the `BasePixelDecoder` of the
//! `TRANSFORMER_IN_FEATURE: res5` configs (e.g. ADE20K's `maskformer_R50_bs16_160k`), which is
//! the one transformers' MaskFormer has: `layer_4` (transformers: `fpn.stem`) on res5 itself,
//! no transformer encoder, and the predictor's own `input_proj` (transformers:
//! `transformer_module.input_projection`) on res5 as the decoder's memory.

use kernels::layers::gemm::{sgemm_with, Backend, MatMut, MatRef, Threading};
use kernels::layers::resample::{pil_resize_u8, PilFilter};
use kernels::layers::resize::{add_nearest, resize_window_resize};
use kernels::layers::{Activation, Conv2d, Conv2dParams, Linear, ResizeMode};
use kernels::weights::Weights;
use kernels::Tensor;
use ndarray::{Array2, Array3, Array4, ArrayView4, Axis};
use plugin_sdk::{
    DType, FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Value,
};
use rayon::prelude::*;
use vision_common::shortest_edge_size;
use vision_common::{
    conv_bias, count_param, features_input, float_param, image_input, linear, named_levels,
    weights_param, weights_params, BgrPixels, ConvGroupNorm, ImageSizes, LayerContext, ModelError,
};

use crate::transformer::{
    mlp_named, run_mlp, sine_position_embedding, DecoderNames, Naming, TransformerDecoder,
    TransformerEncoder, Widths,
};

const NODE: &str = "maskformer";
const BILINEAR: ResizeMode = ResizeMode::Bilinear {
    align_corners: false,
};

/// COCO panoptic's category ids in Detectron2's contiguous order (`COCO_CATEGORIES`): the 80
/// things, then the 53 stuff classes.
pub const COCO_PANOPTIC_CATEGORY_IDS: [i64; 133] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90, 92, 93, 95, 100, 107, 109, 112, 118, 119, 122, 125, 128, 130, 133, 138,
    141, 144, 145, 147, 148, 149, 151, 154, 155, 156, 159, 161, 166, 168, 171, 175, 176, 177, 178,
    180, 181, 184, 185, 186, 187, 188, 189, 190, 191, 192, 193, 194, 195, 196, 197, 198, 199, 200,
];

pub fn preprocess_kind() -> NodeKind {
    let spec = NodeSpec::new(
        "maskformer_preprocess",
        "Detectron2's test-time ResizeShortestEdge (Pillow bilinear) and (x - PIXEL_MEAN) / PIXEL_STD, RGB",
    )
    .input(
        PortSpec::new("image", PortKind::Image, "the photo: u8 [H, W, C] RGB (C = 1, 3 or 4)")
            .dtype(DType::U8),
    )
    .output(PortSpec::new(
        "image",
        PortKind::ModelImage,
        "\"tensor\" f32 [3, H', W'] (RGB, normalised) with \"image_size\" (H', W') and \"original_size\" (H, W) i64 [2]",
    ))
    .param(
        ParamSpec::optional(
            "min_size",
            ParamType::Int,
            ParamValue::Int(800),
            "INPUT.MIN_SIZE_TEST: the short side",
        )
        .range(1.0, 8192.0),
    )
    .param(
        ParamSpec::optional(
            "max_size",
            ParamType::Int,
            ParamValue::Int(1333),
            "INPUT.MAX_SIZE_TEST: the limit of the long side",
        )
        .range(1.0, 8192.0),
    )
    .param(ParamSpec::optional(
        "pixel_mean",
        ParamType::FloatList,
        ParamValue::FloatList(vec![123.675, 116.28, 103.53]),
        "MODEL.PIXEL_MEAN (RGB, 0..255)",
    ))
    .param(ParamSpec::optional(
        "pixel_std",
        ParamType::FloatList,
        ParamValue::FloatList(vec![58.395, 57.12, 57.375]),
        "MODEL.PIXEL_STD (RGB, 0..255)",
    ));
    NodeKind::new(spec, |params| {
        Ok(Box::new(MaskFormerPreprocess::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `maskformer_preprocess` node.
#[derive(Clone, Debug)]
pub struct MaskFormerPreprocess {
    min_size: usize,
    max_size: usize,
    mean: [f32; 3],
    std: [f32; 3],
}

impl MaskFormerPreprocess {
    pub fn from_params(params: &Params) -> Result<MaskFormerPreprocess, ModelError> {
        let three = |name: &'static str| -> Result<[f32; 3], ModelError> {
            let v = params.float_list(name).map_err(ModelError::Input)?;
            match v.as_slice() {
                [a, b, c] if v.iter().all(|x| x.is_finite()) => {
                    Ok([*a as f32, *b as f32, *c as f32])
                }
                _ => Err(ModelError::param(
                    name,
                    format!("must hold 3 finite values (R, G, B), got {v:?}"),
                )),
            }
        };
        let std = three("pixel_std")?;
        if std.contains(&0.0) {
            return Err(ModelError::param("pixel_std", "must not hold 0"));
        }
        Ok(MaskFormerPreprocess {
            min_size: count_param(params, "min_size")?,
            max_size: count_param(params, "max_size")?,
            mean: three("pixel_mean")?,
            std,
        })
    }

    pub fn run(&self, image: &Value) -> Result<Value, ModelError> {
        let px = BgrPixels::from_value("maskformer_preprocess", image)?;
        let (h, w) = (px.height, px.width);
        let planes: Vec<Vec<u8>> = [2usize, 1, 0]
            .iter()
            .map(|&k| px.plane(k).collect())
            .collect();
        let mut rgb = Vec::with_capacity(h * w * 3);
        for i in 0..h * w {
            rgb.extend(planes.iter().map(|p| p[i]));
        }
        let (oh, ow) = shortest_edge_size((h, w), self.min_size, self.max_size);
        let resized = pil_resize_u8(&rgb, (h, w, 3), (oh, ow), PilFilter::Bilinear)
            .ctx(|| format!("maskformer_preprocess (resize {h}x{w} to {oh}x{ow})"))?;
        let mut data = vec![0f32; 3 * oh * ow];
        for (c, plane) in data.chunks_mut(oh * ow).enumerate() {
            for (dst, px) in plane.iter_mut().zip(resized.chunks_exact(3)) {
                *dst = (f32::from(px[c]) - self.mean[c]) / self.std[c];
            }
        }
        Ok(Value::new(PortKind::ModelImage)
            .with("tensor", Tensor::from_vec(&[3, oh, ow], data)?)
            .with(
                "image_size",
                Tensor::from_vec(&[2], vec![oh as i64, ow as i64])?,
            )
            .with(
                "original_size",
                Tensor::from_vec(&[2], vec![h as i64, w as i64])?,
            ))
    }
}

impl Node for MaskFormerPreprocess {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(inputs.value("image")?)?;
        Ok(Outputs::one("image", v))
    }
}

/// The settings of [`MaskFormer`]; the defaults are the COCO panoptic R50 config's.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskFormerConfig {
    /// Channels of res2..res5.
    pub in_channels: [usize; 4],
    /// `CONVS_DIM`, `MASK_DIM` and `HIDDEN_DIM` (all 256).
    pub dim: usize,
    pub heads: usize,
    pub ffn_dim: usize,
    /// `TRANSFORMER_ENC_LAYERS` of the pixel decoder.
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub num_queries: usize,
    /// Classes without "no object".
    pub num_classes: usize,
    /// The contiguous classes below this are things (COCO panoptic: 80).
    pub num_things: usize,
    pub object_mask_threshold: f32,
    pub overlap_threshold: f32,
}

impl Default for MaskFormerConfig {
    fn default() -> Self {
        MaskFormerConfig {
            in_channels: [256, 512, 1024, 2048],
            dim: 256,
            heads: 8,
            ffn_dim: 2048,
            encoder_layers: 6,
            decoder_layers: 6,
            num_queries: 100,
            num_classes: 133,
            num_things: 80,
            object_mask_threshold: 0.8,
            overlap_threshold: 0.8,
        }
    }
}

/// Which pixel decoder a checkpoint holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelDecoder {
    /// `TransformerEncoderPixelDecoder` (the COCO panoptic configs): `input_proj` and a DETR
    /// encoder on res5, whose output feeds both `layer_4` and the predictor.
    TransformerEncoder,
    /// `BasePixelDecoder` (the `TRANSFORMER_IN_FEATURE: res5` configs, and Hugging Face
    /// transformers' `MaskFormerPixelDecoder`): `layer_4` on res5 itself, and the predictor's
    /// own `input_proj` on res5.
    Base,
}

/// Where a checkpoint keeps MaskFormer's tensors (besides the backbone, which is the `resnet`
/// node's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskFormerNaming {
    /// facebookresearch/MaskFormer's `sem_seg_head.*`.
    Official,
    /// Hugging Face transformers' `MaskFormerForInstanceSegmentation` (the names its
    /// `save_pretrained` writes: `model.pixel_level_module.decoder.*`,
    /// `model.transformer_module.*`, `class_predictor`, `mask_embedder`).
    Transformers,
}

/// MaskFormer with its weights bound.
#[derive(Debug)]
pub struct MaskFormer {
    config: MaskFormerConfig,
    pixel_decoder: PixelDecoder,
    /// `adapter_1..3` (res2..res4).
    adapters: Vec<ConvGroupNorm>,
    /// `layer_1..4` (res2..res5).
    layers: Vec<ConvGroupNorm>,
    /// The 1x1 projection of res5: the pixel decoder's (transformer encoder) or the
    /// predictor's (base).
    input_proj: Conv2d,
    /// The pixel decoder's transformer encoder (none for the base pixel decoder).
    encoder: Option<TransformerEncoder>,
    mask_features: Conv2d,
    decoder: TransformerDecoder,
    class_embed: Linear,
    mask_embed: Vec<Linear>,
}

/// The network's outputs at 1/4 of the input, and the intermediate maps (for checks).
#[derive(Clone, Debug)]
pub struct MaskFormerOutputs {
    /// `[Q, num_classes + 1]`.
    pub logits: Array2<f32>,
    /// `[Q, H/4, W/4]`.
    pub masks: Array3<f32>,
    /// The predictor's memory as a map `[1, dim, h5, w5]`: the pixel decoder's transformer
    /// encoder output, or (base pixel decoder) the projected res5.
    pub encoder_features: Array4<f32>,
    /// `[1, mask_dim, H/4, W/4]`.
    pub mask_features: Array4<f32>,
    /// The decoder's output `[Q, dim]`.
    pub hs: Array2<f32>,
}

/// A panoptic segmentation: segment ids per pixel (0: none) and the segments.
#[derive(Clone, Debug, PartialEq)]
pub struct Panoptic {
    pub segments: Array2<i32>,
    /// `(id, contiguous class, isthing)` in id order.
    pub info: Vec<(i32, usize, bool)>,
}

fn tokens(x: &Array4<f32>) -> Result<Array2<f32>, ModelError> {
    let (_, c, h, w) = x.dim();
    Ok(x.index_axis(Axis(0), 0)
        .to_owned()
        .into_shape_with_order((c, h * w))
        .map_err(|e| ModelError::input(e.to_string()))?
        .reversed_axes()
        .as_standard_layout()
        .into_owned())
}

impl MaskFormer {
    pub fn from_weights(
        weights: &Weights,
        prefix: &str,
        config: MaskFormerConfig,
    ) -> Result<MaskFormer, ModelError> {
        let d = config.dim;
        if config.heads == 0 || !d.is_multiple_of(config.heads) || !d.is_multiple_of(2) {
            return Err(ModelError::param(
                "heads",
                format!("must divide the width ({d}) into heads of equal width"),
            ));
        }
        let transformers_stem = "model.pixel_level_module.decoder.fpn.stem.0.weight";
        let naming = if weights
            .get(&format!("{prefix}{transformers_stem}"))
            .is_some()
        {
            MaskFormerNaming::Transformers
        } else {
            MaskFormerNaming::Official
        };
        let pd = "sem_seg_head.pixel_decoder";
        let pr = "sem_seg_head.predictor";
        let pixel_decoder = match naming {
            MaskFormerNaming::Official
                if weights
                    .get(&format!("{prefix}{pr}.input_proj.weight"))
                    .is_some() =>
            {
                PixelDecoder::Base
            }
            MaskFormerNaming::Official => PixelDecoder::TransformerEncoder,
            MaskFormerNaming::Transformers => PixelDecoder::Base,
        };
        let mut b = weights.binder(prefix);
        let c = config.in_channels;
        let fpn = "model.pixel_level_module.decoder.fpn";
        // Level i of res2..res5: official `adapter_{i+1}` / `layer_{i+1}`; transformers'
        // FPN counts its layers from res4 down and calls res5's the stem.
        let adapters = (0..3)
            .map(|i| match naming {
                MaskFormerNaming::Official => ConvGroupNorm::bind(
                    &mut b,
                    &format!("{pd}.adapter_{}", i + 1),
                    c[i],
                    d,
                    1,
                    false,
                ),
                MaskFormerNaming::Transformers => ConvGroupNorm::bind_parts(
                    &mut b,
                    &format!("{fpn}.layers.{}.proj.0", 2 - i),
                    &format!("{fpn}.layers.{}.proj.1", 2 - i),
                    c[i],
                    d,
                    1,
                    false,
                ),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let top_in = match pixel_decoder {
            PixelDecoder::TransformerEncoder => d,
            PixelDecoder::Base => c[3],
        };
        let layers = (0..4)
            .map(|i| {
                let cin = if i == 3 { top_in } else { d };
                match naming {
                    MaskFormerNaming::Official => ConvGroupNorm::bind(
                        &mut b,
                        &format!("{pd}.layer_{}", i + 1),
                        cin,
                        d,
                        3,
                        true,
                    ),
                    MaskFormerNaming::Transformers => {
                        let module = if i == 3 {
                            format!("{fpn}.stem")
                        } else {
                            format!("{fpn}.layers.{}.block", 2 - i)
                        };
                        ConvGroupNorm::bind_parts(
                            &mut b,
                            &format!("{module}.0"),
                            &format!("{module}.1"),
                            cin,
                            d,
                            3,
                            true,
                        )
                    }
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let input_proj_name = match (naming, pixel_decoder) {
            (MaskFormerNaming::Official, PixelDecoder::TransformerEncoder) => {
                format!("{pd}.input_proj")
            }
            (MaskFormerNaming::Official, PixelDecoder::Base) => format!("{pr}.input_proj"),
            (MaskFormerNaming::Transformers, _) => {
                "model.transformer_module.input_projection".to_string()
            }
        };
        let input_proj = conv_bias(
            &mut b,
            &input_proj_name,
            c[3],
            d,
            1,
            Conv2dParams::default(),
        )?;
        let widths = Widths {
            dim: d,
            ffn: config.ffn_dim,
            heads: config.heads,
        };
        let encoder = match pixel_decoder {
            PixelDecoder::TransformerEncoder => Some(TransformerEncoder::from_weights(
                &mut b,
                Naming::Official,
                &format!("{pd}.transformer.encoder.layers"),
                config.encoder_layers,
                widths,
            )?),
            PixelDecoder::Base => None,
        };
        let mask_features = conv_bias(
            &mut b,
            &match naming {
                MaskFormerNaming::Official => format!("{pd}.mask_features"),
                MaskFormerNaming::Transformers => {
                    "model.pixel_level_module.decoder.mask_projection".to_string()
                }
            },
            d,
            d,
            3,
            Conv2dParams::default().padding(1),
        )?;
        let tm = "model.transformer_module";
        let (decoder_naming, names) = match naming {
            MaskFormerNaming::Official => (
                Naming::Official,
                [
                    format!("{pr}.transformer.decoder.layers"),
                    format!("{pr}.transformer.decoder.norm"),
                    format!("{pr}.query_embed.weight"),
                ],
            ),
            MaskFormerNaming::Transformers => (
                Naming::Transformers,
                [
                    format!("{tm}.decoder.layers"),
                    format!("{tm}.decoder.layernorm"),
                    format!("{tm}.queries_embedder.weight"),
                ],
            ),
        };
        let decoder = TransformerDecoder::from_weights(
            &mut b,
            decoder_naming,
            DecoderNames {
                layers: &names[0],
                norm: &names[1],
                query: &names[2],
            },
            config.decoder_layers,
            config.num_queries,
            widths,
        )?;
        let (class_name, mask_names) = match naming {
            MaskFormerNaming::Official => (
                format!("{pr}.class_embed"),
                [0, 1, 2].map(|i| format!("{pr}.mask_embed.layers.{i}")),
            ),
            MaskFormerNaming::Transformers => (
                "class_predictor".to_string(),
                [0, 1, 2].map(|i| format!("mask_embedder.{i}.0")),
            ),
        };
        let class_embed = linear(
            &mut b,
            &class_name,
            d,
            config.num_classes + 1,
            Activation::Identity,
        )?;
        let mask_embed = mlp_named(&mut b, &mask_names, d, d, Activation::Identity)?;
        match naming {
            MaskFormerNaming::Official => b.ignore_module("backbone."),
            MaskFormerNaming::Transformers => b.ignore_module("model.pixel_level_module.encoder."),
        }
        // SetCriterion's class weights: a training buffer saved with the model.
        b.ignore_module("criterion.");
        b.ignore("num_batches_tracked");
        b.finish()?;
        Ok(MaskFormer {
            config,
            pixel_decoder,
            adapters,
            layers,
            input_proj,
            encoder,
            mask_features,
            decoder,
            class_embed,
            mask_embed,
        })
    }

    pub fn config(&self) -> &MaskFormerConfig {
        &self.config
    }

    /// The pixel decoder the checkpoint holds.
    pub fn pixel_decoder(&self) -> PixelDecoder {
        self.pixel_decoder
    }

    /// The network on res2..res5 (`[1, C, H, W]` each).
    pub fn forward(&self, levels: &[ArrayView4<'_, f32>]) -> Result<MaskFormerOutputs, ModelError> {
        if levels.len() != 4 {
            return Err(ModelError::input(format!(
                "{NODE}: expected four feature levels (res2..res5), got {}",
                levels.len()
            )));
        }
        for (i, (l, &c)) in levels.iter().zip(&self.config.in_channels).enumerate() {
            if l.dim().1 != c || l.dim().0 != 1 {
                return Err(ModelError::input(format!(
                    "{NODE}: feature level res{} is {:?}; the checkpoint expects one image of {c} channels",
                    i + 2,
                    l.dim()
                )));
            }
        }
        let d = self.config.dim;
        let x5 = self
            .input_proj
            .forward(levels[3])
            .ctx(|| "input_proj".into())?;
        let (_, _, h5, w5) = x5.dim();
        let pos = sine_position_embedding(h5, w5, d / 2);
        // The pixel decoder, from res5 down, and the memory of the predictor's decoder.
        let (memory, encoder_features, mut y) = match &self.encoder {
            Some(encoder) => {
                let memory = encoder.forward(tokens(&x5)?, &pos)?;
                let features = memory
                    .t()
                    .as_standard_layout()
                    .into_owned()
                    .into_shape_with_order((1, d, h5, w5))
                    .map_err(|e| ModelError::input(e.to_string()))?;
                let top = self.layers[3].forward(features.view())?;
                (memory, features, top)
            }
            None => {
                let top = self.layers[3].forward(levels[3])?;
                (tokens(&x5)?, x5, top)
            }
        };
        for i in (0..3).rev() {
            // lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest").
            let mut lateral = self.adapters[i].forward(levels[i])?;
            add_nearest(&mut lateral, y.view())
                .ctx(|| format!("pixel_decoder top-down into res{}", i + 2))?;
            y = self.layers[i].forward(lateral.view())?;
        }
        let mask_features = self
            .mask_features
            .forward(y.view())
            .ctx(|| "pixel_decoder.mask_features".into())?;
        // The predictor's decoder (its own encoder has 0 layers in every config).
        let hs = self.decoder.forward(&memory, &pos)?;
        let logits = self
            .class_embed
            .forward(hs.view())
            .ctx(|| "predictor.class_embed".into())?;
        let embed = run_mlp(&self.mask_embed, &hs, "predictor.mask_embed")?;
        let (_, _, h4, w4) = mask_features.dim();
        let feats = mask_features
            .view()
            .into_shape_with_order((d, h4 * w4))
            .map_err(|e| ModelError::input(e.to_string()))?;
        let masks = kernels::layers::gemm::matmul(embed.view(), feats)
            .ctx(|| "pred_masks".into())?
            .into_shape_with_order((self.config.num_queries, h4, w4))
            .map_err(|e| ModelError::input(e.to_string()))?;
        Ok(MaskFormerOutputs {
            logits,
            masks,
            encoder_features,
            mask_features,
            hs,
        })
    }

    /// Each mask logit plane resized bilinearly to the input `(H, W)`, then to the photo's
    /// `(h, w)` (`sem_seg_postprocess`; the crop is a no-op without padding), as sigmoids
    /// ([`kernels::ops::sigmoid_slice`]: the engine's vectorised exp, within 2 ulp of libm's,
    /// as torch's own vectorised sigmoid is).
    pub fn photo_masks(
        &self,
        masks: &Array3<f32>,
        input: (usize, usize),
        photo: (usize, usize),
    ) -> Result<Array3<f32>, ModelError> {
        let (q, h4, w4) = masks.dim();
        let (h, w) = photo;
        let mut out = Array3::<f32>::zeros((q, h, w));
        // Each plane resized, then its sigmoid written straight into the output.
        let planes = out
            .as_slice_mut()
            .ok_or_else(|| ModelError::input("masks not contiguous"))?;
        planes
            .par_chunks_mut((h * w).max(1))
            .enumerate()
            .try_for_each(|(k, dst)| -> Result<(), ModelError> {
                let plane = masks
                    .slice(ndarray::s![k..k + 1, .., ..])
                    .into_shape_with_order((1, 1, h4, w4))
                    .map_err(|e| ModelError::input(e.to_string()))?;
                let resized =
                    resize_window_resize(plane, input, 0..input.0, 0..input.1, photo, BILINEAR)
                        .ctx(|| "masks to the input size, then to the photo".into())?;
                dst.iter_mut()
                    .zip(resized.iter())
                    .for_each(|(d, &v)| *d = v);
                kernels::ops::sigmoid_slice(dst);
                Ok(())
            })?;
        Ok(out)
    }

    /// `semantic_inference`'s argmax: per pixel the class with the largest
    /// `Σ_q softmax(cls_q)[c] · mask_q` (the first on ties).
    pub fn semantic_labels(
        &self,
        logits: &Array2<f32>,
        masks: &Array3<f32>,
    ) -> Result<Array2<i32>, ModelError> {
        let (q, h, w) = masks.dim();
        let c = self.config.num_classes;
        let mut probs = Array2::<f32>::zeros((c, q));
        for (k, row) in logits.outer_iter().enumerate() {
            let mut p = row.to_vec();
            kernels::layers::shape::softmax_in_place(&mut p);
            for (j, v) in p.iter().take(c).enumerate() {
                probs[[j, k]] = *v;
            }
        }
        let flat = masks
            .view()
            .into_shape_with_order((q, h * w))
            .map_err(|e| ModelError::input(e.to_string()))?;
        let flat = flat.as_standard_layout();
        let flat = flat
            .as_slice()
            .ok_or_else(|| ModelError::input("masks not contiguous"))?;
        let probs = probs.as_standard_layout();
        let probs = probs
            .as_slice()
            .ok_or_else(|| ModelError::input("probabilities not contiguous"))?;
        let n = h * w;
        let mut labels = vec![0i32; n];
        if c == 0 {
            // No class to score (`num_classes = 0`): every pixel is label 0.
            return Array2::from_shape_vec((h, w), labels)
                .map_err(|e| ModelError::input(e.to_string()));
        }
        // Blocks of pixels: the block's `c x PIXELS` class scores stay in L2 for the argmax,
        // rather than a `c x h·w` matrix going out to memory and back.
        const PIXELS: usize = 512;
        let probs = MatRef::row_major(probs, c, q, q).ctx(|| "semantic inference".into())?;
        labels
            .par_chunks_mut(PIXELS)
            .enumerate()
            .try_for_each_init(
                || (vec![0f32; c * PIXELS], vec![0f32; PIXELS]),
                |(scores, best), (b, out)| -> Result<(), ModelError> {
                    let (p0, cols) = (b * PIXELS, out.len());
                    let scores = &mut scores[..c * cols];
                    sgemm_with(
                        probs,
                        MatRef::new(&flat[p0..], q, cols, n, 1)
                            .ctx(|| "semantic inference".into())?,
                        MatMut::row_major(scores, c, cols, cols)
                            .ctx(|| "semantic inference".into())?,
                        false,
                        Backend::Gemm,
                        Threading::Single,
                    )
                    .ctx(|| "semantic inference".into())?;
                    // The first largest class, NaN counting as the largest (torch's argmax).
                    let best = &mut best[..cols];
                    best.copy_from_slice(&scores[..cols]);
                    out.fill(0);
                    for (j, row) in scores.chunks_exact(cols).enumerate().skip(1) {
                        for ((bv, bj), &v) in best.iter_mut().zip(out.iter_mut()).zip(row) {
                            if v > *bv || (v.is_nan() && !bv.is_nan()) {
                                *bv = v;
                                *bj = j as i32;
                            }
                        }
                    }
                    Ok(())
                },
            )?;
        Array2::from_shape_vec((h, w), labels).map_err(|e| ModelError::input(e.to_string()))
    }

    /// `panoptic_inference` on the photo-sized sigmoid masks.
    pub fn panoptic(&self, logits: &Array2<f32>, masks: &Array3<f32>) -> Panoptic {
        let (_, h, w) = masks.dim();
        let nc = self.config.num_classes;
        let mut kept: Vec<(usize, usize, f32)> = Vec::new(); // (query, class, score)
        for (k, row) in logits.outer_iter().enumerate() {
            let mut p = row.to_vec();
            kernels::layers::shape::softmax_in_place(&mut p);
            // max(-1) over every class, "no object" included: the first maximum.
            let (label, score) =
                p.iter()
                    .enumerate()
                    .fold((0usize, f32::NEG_INFINITY), |b, (i, &s)| {
                        if s > b.1 {
                            (i, s)
                        } else {
                            b
                        }
                    });
            if label != nc && score > self.config.object_mask_threshold {
                kept.push((k, label, score));
            }
        }
        let mut segments = Array2::<i32>::zeros((h, w));
        let mut info = Vec::new();
        if kept.is_empty() {
            return Panoptic { segments, info };
        }
        // Per pixel, the kept query of the largest score · mask (the first on ties).
        let ids: Vec<usize> = (0..h * w)
            .into_par_iter()
            .map(|i| {
                let (y, x) = (i / w, i % w);
                let mut best = 0usize;
                let mut best_v = f32::NEG_INFINITY;
                for (j, &(k, _, s)) in kept.iter().enumerate() {
                    let v = s * masks[[k, y, x]];
                    if v > best_v || (j == 0) {
                        best = j;
                        best_v = v;
                    }
                }
                best
            })
            .collect();
        let mut stuff: std::collections::HashMap<usize, i32> = std::collections::HashMap::new();
        let mut next = 0i32;
        for (j, &(k, class, _)) in kept.iter().enumerate() {
            let isthing = class < self.config.num_things;
            let mask_area = ids.iter().filter(|&&b| b == j).count();
            let original_area = masks
                .index_axis(Axis(0), k)
                .iter()
                .filter(|&&v| v >= 0.5)
                .count();
            if mask_area == 0 || original_area == 0 {
                continue;
            }
            if (mask_area as f64) / (original_area as f64)
                < f64::from(self.config.overlap_threshold)
            {
                continue;
            }
            let id = if !isthing {
                if let Some(&id) = stuff.get(&class) {
                    id
                } else {
                    next += 1;
                    stuff.insert(class, next);
                    info.push((next, class, false));
                    next
                }
            } else {
                next += 1;
                info.push((next, class, true));
                next
            };
            for (dst, &b) in segments.iter_mut().zip(&ids) {
                if b == j {
                    *dst = id;
                }
            }
        }
        Panoptic { segments, info }
    }
}

pub fn kind() -> NodeKind {
    let d = MaskFormerConfig::default();
    let spec = NodeSpec::new(
        NODE,
        "MaskFormer after the body: transformer-encoder pixel decoder, query decoder, class and mask embeddings, semantic and panoptic inference at the photo's size",
    );
    let spec = features_input(spec, "res2..res5 of Detectron2's ResNet (in_features)");
    let spec = image_input(
        spec,
        "the image from maskformer_preprocess (image_size: the input size; original_size: the photo's)",
    )
    .output(PortSpec::new(
        "semantic",
        PortKind::Semantic,
        "labels i32 [H, W]: semantic_inference's argmax (contiguous class ids)",
    ))
    .output(PortSpec::new(
        "panoptic",
        PortKind::Panoptic,
        "segments i32 [H, W] (0: none) with segment_ids, segment_classes (category_ids), segment_isthing, segment_areas",
    ));
    let spec = weights_params(
        spec,
        "MaskFormer (official or Hugging Face transformers names, told apart by the names)",
        "",
        "name prefix of MaskFormer's tensors",
    );
    let int = |name: &'static str, v: usize, doc: &'static str| {
        ParamSpec::optional(name, ParamType::Int, ParamValue::Int(v as i64), doc)
            .range(1.0, 65536.0)
    };
    let spec = spec
        .param(ParamSpec::optional(
            "in_features",
            ParamType::StrList,
            ParamValue::StrList(["c2", "c3", "c4", "c5"].map(String::from).to_vec()),
            "the body's res2..res5",
        ))
        .param(int("heads", d.heads, "attention heads"))
        .param(int(
            "encoder_layers",
            d.encoder_layers,
            "the pixel decoder's transformer encoder layers (TRANSFORMER_ENC_LAYERS)",
        ))
        .param(int(
            "decoder_layers",
            d.decoder_layers,
            "decoder layers (DEC_LAYERS)",
        ))
        .param(int("num_queries", d.num_queries, "object queries"))
        .param(int(
            "num_classes",
            d.num_classes,
            "classes without \"no object\" (COCO panoptic: 133)",
        ))
        .param(int(
            "num_things",
            d.num_things,
            "the contiguous classes below this are things",
        ))
        .param(
            ParamSpec::optional(
                "object_mask_threshold",
                ParamType::Float,
                ParamValue::Float(f64::from(d.object_mask_threshold)),
                "TEST.OBJECT_MASK_THRESHOLD: a query is kept when its best class scores above this",
            )
            .range(0.0, 1.0),
        )
        .param(
            ParamSpec::optional(
                "overlap_threshold",
                ParamType::Float,
                ParamValue::Float(f64::from(d.overlap_threshold)),
                "TEST.OVERLAP_THRESHOLD: the share of its mask a query must keep",
            )
            .range(0.0, 1.0),
        )
        .param(ParamSpec::optional(
            "category_ids",
            ParamType::IntList,
            ParamValue::IntList(COCO_PANOPTIC_CATEGORY_IDS.to_vec()),
            "the dataset category id of each contiguous class (default: COCO panoptic's)",
        ));
    NodeKind::new(spec, |params| {
        Ok(Box::new(MaskFormerNode::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `maskformer` node.
#[derive(Debug)]
pub struct MaskFormerNode {
    model: MaskFormer,
    in_features: Vec<String>,
    category_ids: Vec<i64>,
}

impl MaskFormerNode {
    pub fn from_params(params: &Params) -> Result<MaskFormerNode, ModelError> {
        let in_features = params.str_list("in_features").map_err(ModelError::Input)?;
        if in_features.len() != 4 {
            return Err(ModelError::param(
                "in_features",
                format!("must name res2..res5 (four levels), got {in_features:?}"),
            ));
        }
        let config = MaskFormerConfig {
            heads: count_param(params, "heads")?,
            encoder_layers: count_param(params, "encoder_layers")?,
            decoder_layers: count_param(params, "decoder_layers")?,
            num_queries: count_param(params, "num_queries")?,
            num_classes: count_param(params, "num_classes")?,
            num_things: count_param(params, "num_things")?,
            object_mask_threshold: float_param(params, "object_mask_threshold")?,
            overlap_threshold: float_param(params, "overlap_threshold")?,
            ..MaskFormerConfig::default()
        };
        let category_ids = params.int_list("category_ids").map_err(ModelError::Input)?;
        if category_ids.len() != config.num_classes {
            return Err(ModelError::param(
                "category_ids",
                format!(
                    "must list {} ids (one per class), got {}",
                    config.num_classes,
                    category_ids.len()
                ),
            ));
        }
        let (weights, prefix) = weights_param(params)?;
        Ok(MaskFormerNode {
            model: MaskFormer::from_weights(&weights, &prefix, config)?,
            in_features,
            category_ids,
        })
    }

    pub fn model(&self) -> &MaskFormer {
        &self.model
    }

    /// The semantic labels and the panoptic segmentation at the photo's size.
    pub fn run(&self, features: &Value, image: &Value) -> Result<(Value, Value), ModelError> {
        let sizes = ImageSizes::from_value(NODE, image)?;
        let levels = named_levels(NODE, features, &self.in_features)?;
        let out = self.model.forward(&levels)?;
        let masks = self
            .model
            .photo_masks(&out.masks, sizes.resized, sizes.original)?;
        let labels = self.model.semantic_labels(&out.logits, &masks)?;
        let pan = self.model.panoptic(&out.logits, &masks);
        let (h, w) = sizes.original;
        let semantic = Value::new(PortKind::Semantic).with(
            "labels",
            Tensor::from_vec(&[h, w], labels.into_raw_vec_and_offset().0)?,
        );
        let n = pan.info.len();
        let areas: Vec<i64> = pan
            .info
            .iter()
            .map(|&(id, _, _)| pan.segments.iter().filter(|&&s| s == id).count() as i64)
            .collect();
        let panoptic = Value::new(PortKind::Panoptic)
            .with(
                "segments",
                Tensor::from_vec(&[h, w], pan.segments.into_raw_vec_and_offset().0)?,
            )
            .with(
                "segment_ids",
                Tensor::from_vec(&[n], pan.info.iter().map(|s| s.0).collect())?,
            )
            .with(
                "segment_classes",
                Tensor::from_vec(
                    &[n],
                    pan.info
                        .iter()
                        .map(|s| self.category_ids.get(s.1).copied().unwrap_or(-1))
                        .collect(),
                )?,
            )
            .with(
                "segment_isthing",
                Tensor::from_vec(&[n], pan.info.iter().map(|s| u8::from(s.2)).collect())?,
            )
            .with("segment_areas", Tensor::from_vec(&[n], areas)?);
        Ok((semantic, panoptic))
    }
}

impl Node for MaskFormerNode {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let (semantic, panoptic) = self.run(inputs.value("features")?, inputs.value("image")?)?;
        Ok(Outputs::one("semantic", semantic).with("panoptic", panoptic))
    }
}
