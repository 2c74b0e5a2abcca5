//! `detr`: everything of DETR after the ResNet body, at inference (facebookresearch/detr @
//! 29901c51, `models/detr.py`, `models/transformer.py`, `models/position_encoding.py`):
//!
//! 1. `input_proj`: a 1x1 convolution from C5 (2048 channels) to `hidden_dim` (256).
//! 2. `PositionEmbeddingSine(hidden_dim / 2, temperature 10000, normalize=True, scale 2π)`
//!    over the feature map. One photo is a batch of one: no pixel is padding, so the
//!    cumulative sums of the mask are the row and column numbers `1..=h`, `1..=w`.
//! 3. The encoder: 6 post-norm layers (`normalize_before=False`, no final norm): self
//!    attention with the positions added to the queries and keys, residual, `norm1`, the FFN
//!    (`linear1`, ReLU, `linear2`), residual, `norm2`.
//! 4. The decoder: 100 queries from zeros with `query_embed` as their positions, 6 post-norm
//!    layers (self attention, `norm1`, cross attention on the memory with the positions,
//!    `norm2`, FFN, `norm3`), then the decoder's final `norm`.
//! 5. `class_embed` (`num_classes + 1` logits, the last is "no object") and `bbox_embed` (a
//!    3-layer MLP with ReLU, then a sigmoid: normalised cx, cy, w, h).
//! 6. `PostProcess`: `softmax`, the best class without "no object", boxes to corners and
//!    scaled by the photo's width and height. No threshold and no NMS: every query is a
//!    detection (the `score_threshold` parameter can drop some).
//!
//! Weights: the official checkpoints' names (`detr-r50-e632da11.pth`: `transformer.*`,
//! `query_embed`, `input_proj`, `class_embed`, `bbox_embed`) or Hugging Face transformers'
//! `DetrForObjectDetection` names (`model.encoder.*`, `model.decoder.*`, `q_proj`/`k_proj`/
//! `v_proj`, `class_labels_classifier`, `bbox_predictor`), told apart by their first
//! encoder layer. The backbone's tensors (`backbone.0.body.*`,
//! `model.backbone.conv_encoder.model.*`) are the `resnet` node's.

use kernels::layers::{Activation, Conv2d, Conv2dParams, Linear};
use kernels::weights::Weights;
use ndarray::{Array2, ArrayView4, Axis};
use plugin_sdk::{
    FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Value,
};
use vision_common::{
    conv_bias, count_param, features_input, float_param, image_input, linear, named_levels,
    weights_param, weights_params, ImageSizes, LayerContext, ModelError,
};

use crate::transformer::{
    mlp, run_mlp, sine_position_embedding, DecoderNames, Naming, TransformerDecoder,
    TransformerEncoder, Widths,
};

const NODE: &str = "detr";

/// The settings of [`Detr`]; the defaults are DETR R50's (`main.py`).
#[derive(Clone, Debug, PartialEq)]
pub struct DetrConfig {
    /// Channels of the backbone's last level (ResNet-50: 2048).
    pub in_channels: usize,
    pub hidden_dim: usize,
    pub heads: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub ffn_dim: usize,
    pub num_queries: usize,
    /// Classes without "no object" (COCO: 91, the largest category id + 1).
    pub num_classes: usize,
}

impl Default for DetrConfig {
    fn default() -> Self {
        DetrConfig {
            in_channels: 2048,
            hidden_dim: 256,
            heads: 8,
            encoder_layers: 6,
            decoder_layers: 6,
            ffn_dim: 2048,
            num_queries: 100,
            num_classes: 91,
        }
    }
}

/// DETR with its weights bound.
#[derive(Debug)]
pub struct Detr {
    config: DetrConfig,
    input_proj: Conv2d,
    encoder: TransformerEncoder,
    decoder: TransformerDecoder,
    class_embed: Linear,
    bbox_embed: Vec<Linear>,
}

/// The network's outputs: `pred_logits` `[Q, num_classes + 1]` and `pred_boxes` `[Q, 4]`
/// (normalised cx, cy, w, h).
#[derive(Clone, Debug)]
pub struct DetrOutputs {
    pub logits: Array2<f32>,
    pub boxes: Array2<f32>,
}

/// `PostProcess`'s results for one photo, in its pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Detections {
    pub scores: Vec<f32>,
    pub labels: Vec<i64>,
    pub boxes: Vec<[f32; 4]>,
}

impl Detr {
    /// Binds DETR's tensors, found under `prefix` (empty for the released files).
    pub fn from_weights(
        weights: &Weights,
        prefix: &str,
        config: DetrConfig,
    ) -> Result<Detr, ModelError> {
        if config.heads == 0
            || !config.hidden_dim.is_multiple_of(config.heads)
            || !config.hidden_dim.is_multiple_of(2)
        {
            return Err(ModelError::param(
                "heads",
                format!(
                    "must divide hidden_dim ({}) into heads of equal width",
                    config.hidden_dim
                ),
            ));
        }
        let naming = Naming::detect(weights, prefix);
        let mut b = weights.binder(prefix);
        let (d, f, h) = (config.hidden_dim, config.ffn_dim, config.heads);
        let (model, input_proj_name, query_name) = match naming {
            Naming::Official => ("transformer.", "input_proj", "query_embed.weight"),
            Naming::Transformers => (
                "model.",
                "model.input_projection",
                "model.query_position_embeddings.weight",
            ),
        };
        let input_proj = conv_bias(
            &mut b,
            input_proj_name,
            config.in_channels,
            d,
            1,
            Conv2dParams::default(),
        )?;
        let encoder = TransformerEncoder::from_weights(
            &mut b,
            naming,
            &format!("{model}encoder.layers"),
            config.encoder_layers,
            Widths {
                dim: d,
                ffn: f,
                heads: h,
            },
        )?;
        let decoder = TransformerDecoder::from_weights(
            &mut b,
            naming,
            DecoderNames {
                layers: &format!("{model}decoder.layers"),
                norm: match naming {
                    Naming::Official => "transformer.decoder.norm",
                    Naming::Transformers => "model.decoder.layernorm",
                },
                query: query_name,
            },
            config.decoder_layers,
            config.num_queries,
            Widths {
                dim: d,
                ffn: f,
                heads: h,
            },
        )?;
        let (class_name, bbox_name) = match naming {
            Naming::Official => ("class_embed", "bbox_embed"),
            Naming::Transformers => ("class_labels_classifier", "bbox_predictor"),
        };
        let class_embed = linear(
            &mut b,
            class_name,
            d,
            config.num_classes + 1,
            Activation::Identity,
        )?;
        let bbox_embed = mlp(&mut b, bbox_name, d, 4, Activation::Sigmoid)?;
        match naming {
            Naming::Official => b.ignore_module("backbone."),
            Naming::Transformers => b.ignore_module("model.backbone."),
        }
        b.ignore("num_batches_tracked");
        b.finish()?;
        Ok(Detr {
            config,
            input_proj,
            encoder,
            decoder,
            class_embed,
            bbox_embed,
        })
    }

    pub fn config(&self) -> &DetrConfig {
        &self.config
    }

    /// `input_proj(C5)` as tokens `[h·w, hidden_dim]` (row-major over the feature map), with
    /// the map's `(h, w)`.
    pub fn project(
        &self,
        c5: ArrayView4<'_, f32>,
    ) -> Result<(Array2<f32>, (usize, usize)), ModelError> {
        let (n, c, h, w) = c5.dim();
        if n != 1 || c != self.config.in_channels {
            return Err(ModelError::input(format!(
                "{NODE}: the backbone's last level is [{n}, {c}, {h}, {w}]; the checkpoint's input_proj expects one image of {} channels",
                self.config.in_channels
            )));
        }
        if h == 0 || w == 0 {
            return Err(ModelError::input(format!(
                "{NODE}: the backbone's last level is empty ({h}x{w}); the image is smaller than the backbone's stride (32)"
            )));
        }
        let x = self.input_proj.forward(c5).ctx(|| "input_proj".into())?;
        let x = x.index_axis_move(Axis(0), 0);
        let tokens = x
            .into_shape_with_order((self.config.hidden_dim, h * w))
            .map_err(|e| ModelError::input(e.to_string()))?
            .reversed_axes()
            .as_standard_layout()
            .into_owned();
        Ok((tokens, (h, w)))
    }

    /// The encoder's memory `[h·w, hidden_dim]` from the projected tokens and positions.
    pub fn encode(&self, src: Array2<f32>, pos: &Array2<f32>) -> Result<Array2<f32>, ModelError> {
        self.encoder.forward(src, pos)
    }

    /// The decoder's output after its final norm, `[num_queries, hidden_dim]`.
    pub fn decode(
        &self,
        memory: &Array2<f32>,
        pos: &Array2<f32>,
    ) -> Result<Array2<f32>, ModelError> {
        self.decoder.forward(memory, pos)
    }

    /// `class_embed` and `bbox_embed(...).sigmoid()` of the decoder's output.
    pub fn heads(&self, hs: &Array2<f32>) -> Result<DetrOutputs, ModelError> {
        let logits = self
            .class_embed
            .forward(hs.view())
            .ctx(|| "class_embed".into())?;
        let x = run_mlp(&self.bbox_embed, hs, "bbox_embed")?;
        Ok(DetrOutputs { logits, boxes: x })
    }

    /// The whole network on C5 `[1, C, h, w]`.
    pub fn forward(&self, c5: ArrayView4<'_, f32>) -> Result<DetrOutputs, ModelError> {
        let (src, (h, w)) = self.project(c5)?;
        let pos = sine_position_embedding(h, w, self.config.hidden_dim / 2);
        let memory = self.encode(src, &pos)?;
        let hs = self.decode(&memory, &pos)?;
        self.heads(&hs)
    }
}

/// `PostProcess` for a photo of `(h, w)` pixels.
pub fn post_process(out: &DetrOutputs, (h, w): (usize, usize)) -> Detections {
    let mut d = Detections {
        scores: Vec::new(),
        labels: Vec::new(),
        boxes: Vec::new(),
    };
    for (logits, b) in out.logits.outer_iter().zip(out.boxes.outer_iter()) {
        let mut p = logits.to_vec();
        kernels::layers::shape::softmax_in_place(&mut p);
        // The best real class (the first on ties); "no object" is the last logit.
        let real = &p[..p.len() - 1];
        let (label, score) =
            real.iter()
                .enumerate()
                .fold((0usize, f32::NEG_INFINITY), |best, (i, &s)| {
                    if s > best.1 {
                        (i, s)
                    } else {
                        best
                    }
                });
        let (cx, cy, bw, bh) = (b[0], b[1], b[2], b[3]);
        let (sw, sh) = (w as f32, h as f32);
        d.boxes.push([
            (cx - 0.5 * bw) * sw,
            (cy - 0.5 * bh) * sh,
            (cx + 0.5 * bw) * sw,
            (cy + 0.5 * bh) * sh,
        ]);
        d.scores.push(score);
        d.labels.push(label as i64);
    }
    d
}

pub fn kind() -> NodeKind {
    let d = DetrConfig::default();
    let spec = NodeSpec::new(
        NODE,
        "DETR after the body: input projection, sine positions, transformer encoder and decoder with learned queries, class and box heads, PostProcess (every query, no NMS)",
    );
    let spec = features_input(spec, "the body's last level (in_feature, C5)");
    let spec = image_input(
        spec,
        "the image from detr_preprocess (original_size: the size the boxes are scaled to)",
    )
    .output(PortSpec::new(
        "instances",
        PortKind::Instances,
        "one detection per query in original-image pixels: score and label of the best class besides \"no object\" (labels are COCO category ids)",
    ));
    let spec = weights_params(
        spec,
        "DETR",
        "",
        "name prefix of DETR's tensors (empty for the official and the transformers files, whose names are told apart by their first encoder layer)",
    );
    let int = |name: &'static str, v: usize, doc: &'static str| {
        ParamSpec::optional(name, ParamType::Int, ParamValue::Int(v as i64), doc)
            .range(1.0, 65536.0)
    };
    let spec = spec
        .param(ParamSpec::optional(
            "in_feature",
            ParamType::Str,
            ParamValue::Str("c5".into()),
            "the body's level DETR reads (layer4)",
        ))
        .param(int("in_channels", d.in_channels, "channels of that level (ResNet-50: 2048)"))
        .param(int("hidden_dim", d.hidden_dim, "the transformer's width"))
        .param(int("heads", d.heads, "attention heads"))
        .param(int("encoder_layers", d.encoder_layers, "encoder layers"))
        .param(int("decoder_layers", d.decoder_layers, "decoder layers"))
        .param(int("ffn_dim", d.ffn_dim, "the FFN's hidden width (dim_feedforward)"))
        .param(int("num_queries", d.num_queries, "object queries"))
        .param(int(
            "num_classes",
            d.num_classes,
            "classes without \"no object\" (COCO: 91, the largest category id + 1)",
        ))
        .param(
            ParamSpec::optional(
                "score_threshold",
                ParamType::Float,
                ParamValue::Float(0.0),
                "keep the queries whose score is above this (0: all, as PostProcess for COCO evaluation)",
            )
            .range(0.0, 1.0),
        );
    NodeKind::new(spec, |params| {
        Ok(Box::new(DetrNode::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `detr` node.
#[derive(Debug)]
pub struct DetrNode {
    model: Detr,
    in_feature: String,
    score_threshold: f32,
}

impl DetrNode {
    pub fn from_params(params: &Params) -> Result<DetrNode, ModelError> {
        let config = DetrConfig {
            in_channels: count_param(params, "in_channels")?,
            hidden_dim: count_param(params, "hidden_dim")?,
            heads: count_param(params, "heads")?,
            encoder_layers: count_param(params, "encoder_layers")?,
            decoder_layers: count_param(params, "decoder_layers")?,
            ffn_dim: count_param(params, "ffn_dim")?,
            num_queries: count_param(params, "num_queries")?,
            num_classes: count_param(params, "num_classes")?,
        };
        let (weights, prefix) = weights_param(params)?;
        Ok(DetrNode {
            model: Detr::from_weights(&weights, &prefix, config)?,
            in_feature: params
                .str("in_feature")
                .map_err(ModelError::Input)?
                .to_string(),
            score_threshold: float_param(params, "score_threshold")?,
        })
    }

    pub fn model(&self) -> &Detr {
        &self.model
    }

    /// The node's computation: one detection per query (above the threshold), in original
    /// pixels.
    pub fn run(&self, features: &Value, image: &Value) -> Result<Value, ModelError> {
        let sizes = ImageSizes::from_value(NODE, image)?;
        let levels = named_levels(NODE, features, std::slice::from_ref(&self.in_feature))?;
        let out = self.model.forward(levels[0])?;
        let d = post_process(&out, sizes.original);
        let keep: Vec<usize> = (0..d.scores.len())
            .filter(|&i| self.score_threshold == 0.0 || d.scores[i] > self.score_threshold)
            .collect();
        plugin_sdk::Instances {
            boxes: keep.iter().map(|&i| d.boxes[i]).collect(),
            scores: keep.iter().map(|&i| d.scores[i]).collect(),
            classes: keep.iter().map(|&i| d.labels[i]).collect(),
        }
        .to_value()
        .map_err(ModelError::Input)
    }
}

impl Node for DetrNode {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(inputs.value("features")?, inputs.value("image")?)?;
        Ok(Outputs::one("instances", v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_process_drops_no_object_and_scales_corners() {
        let out = DetrOutputs {
            // Class 1 beats class 0; "no object" (the last) is the largest but never chosen.
            logits: ndarray::arr2(&[[0.0f32, 1.0, 5.0]]),
            boxes: ndarray::arr2(&[[0.5f32, 0.5, 0.2, 0.4]]),
        };
        let d = post_process(&out, (100, 200));
        assert_eq!(d.labels, vec![1]);
        let e = (1f32.exp()) / (1.0 + 1f32.exp() + 5f32.exp());
        assert!((d.scores[0] - e).abs() < 1e-6);
        for (g, w) in d.boxes[0].iter().zip([80.0f32, 30.0, 120.0, 70.0]) {
            assert!((g - w).abs() < 1e-4, "{:?}", d.boxes[0]);
        }
    }
}
