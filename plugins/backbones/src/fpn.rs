//! `fpn`: torchvision's `FeaturePyramidNetwork` with `LastLevelMaxPool`, as built by
//! `resnet_fpn_backbone` / `maskrcnn_resnet50_fpn`.
//!
//! For inputs `c2..c5` (torchvision's `"0".."3"`), from the coarsest level down:
//! `inner = inner_blocks[i](c)` (1x1 conv with bias), `inner += F.interpolate(previous inner,
//! size=inner's size, mode="nearest")`, `p = layer_blocks[i](inner)` (3x3 conv, padding 1, with
//! bias); then `LastLevelMaxPool` adds `F.max_pool2d(p5, kernel 1, stride 2)`. Outputs are
//! named `p2..p6`:
//!
//! | torchvision | this node | stride |
//! |---|---|---|
//! | `"0"` | `p2` | 4 |
//! | `"1"` | `p3` | 8 |
//! | `"2"` | `p4` | 16 |
//! | `"3"` | `p5` | 32 |
//! | `"pool"` | `p6` | 64 |
//!
//! Weights: `inner_blocks.{i}.0.{weight,bias}` and `layer_blocks.{i}.0.{weight,bias}` under
//! `prefix` (`"backbone.fpn."` by default); the names of torchvision < 0.13 checkpoints
//! (`inner_blocks.{i}.weight`, as in the original `maskrcnn_resnet50_fpn_coco` file) are
//! accepted too, as torchvision's own `_load_from_state_dict` does. A file holding the FPN
//! alone loads with the default prefix as well. Detectron2's FPN (`build_resnet_fpn_backbone`)
//! is the same network under its names, `fpn_lateral{level}` and `fpn_output{level}` (level 2
//! reads c2), at `prefix = "backbone."`; its top-down path upsamples by `scale_factor=2`, which
//! is the nearest resize above wherever Detectron2 runs (it requires the levels to halve
//! exactly, i.e. inputs padded to a multiple of 32).

use std::path::PathBuf;

use kernels::layers::bf16::{self, Precision};
use kernels::layers::pool::{max_pool2d, Pool2dParams};
use kernels::layers::resize::{resize, resize_nearest_nhwc};
use kernels::layers::{Conv2d, Conv2dParams, NhwcConv2d, ResizeMode};
use kernels::weights::{Binder, Weights};
use ndarray::{Array4, ArrayView4};
use plugin_sdk::{
    DType, FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Value,
};

use crate::resnet::ResNetConfig;
use vision_common::{conv_bias, from_nchw, load_weights, nchw, resolve_prefix};
use vision_common::{LayerContext, ModelError};

/// The extra block after the last level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtraBlock {
    /// `LastLevelMaxPool`: `max_pool2d(p_last, 1, 2, 0)` (Mask R-CNN, Faster R-CNN).
    MaxPool,
    /// No extra level.
    None,
}

/// Channels and extra block of a [`Fpn`].
#[derive(Clone, Debug, PartialEq)]
pub struct FpnConfig {
    /// Channels of each input level, finest first.
    pub in_channels: Vec<usize>,
    pub out_channels: usize,
    pub extra: ExtraBlock,
    /// The pyramid level of the first input (c2: 2); Detectron2 names its convolutions by
    /// level (`fpn_lateral2` reads res2).
    pub first_level: usize,
    /// bf16 runs the convolutions in `NHWC` with bf16 activations between them (see the
    /// `resnet` node's `precision`).
    pub precision: Precision,
}

impl FpnConfig {
    /// The FPN of `maskrcnn_resnet50_fpn` (or of a ResNet of another depth): layers 1-4 in,
    /// 256 out, max-pool level.
    pub fn for_resnet(depth: usize) -> Result<FpnConfig, ModelError> {
        let resnet = ResNetConfig {
            depth,
            ..Default::default()
        };
        Ok(FpnConfig {
            in_channels: resnet.stage_channels()?.to_vec(),
            out_channels: 256,
            extra: ExtraBlock::MaxPool,
            first_level: 2,
            precision: Precision::Fp32,
        })
    }

    /// Number of output levels.
    pub fn num_outputs(&self) -> usize {
        self.in_channels.len() + usize::from(self.extra == ExtraBlock::MaxPool)
    }

    fn check(&self) -> Result<(), ModelError> {
        if self.in_channels.is_empty() || self.in_channels.contains(&0) {
            return Err(ModelError::param(
                "in_channels",
                format!(
                    "must be positive channel counts, got {:?}",
                    self.in_channels
                ),
            ));
        }
        if self.out_channels == 0 {
            return Err(ModelError::param("out_channels", "must be positive"));
        }
        Ok(())
    }
}

/// A feature pyramid network with its weights bound.
#[derive(Clone, Debug)]
pub struct Fpn {
    config: FpnConfig,
    inner: Vec<Conv2d>,
    layer: Vec<Conv2d>,
    /// `inner` and `layer` in bf16 (`precision = "bf16"`).
    bf16: Option<(Vec<NhwcConv2d>, Vec<NhwcConv2d>)>,
}

/// Binds block `i` of `inner_blocks` / `layer_blocks` under the current or the pre-0.13 name
/// of torchvision, or Detectron2's name (`fpn_lateral{level}` / `fpn_output{level}`).
#[allow(clippy::too_many_arguments)]
fn block(
    weights: &Weights,
    b: &mut Binder<'_>,
    prefix: &str,
    kind: &str,
    i: usize,
    level: usize,
    cin: usize,
    cout: usize,
    k: usize,
) -> Result<Conv2d, ModelError> {
    let new = format!("{kind}.{i}.0");
    let old = format!("{kind}.{i}");
    let detectron2 = match kind {
        "inner_blocks" => format!("fpn_lateral{level}"),
        _ => format!("fpn_output{level}"),
    };
    let has = |n: &str| weights.get(&format!("{prefix}{n}.weight")).is_some();
    let name = if has(&new) {
        new
    } else if has(&old) {
        old
    } else if has(&detectron2) {
        detectron2
    } else {
        new
    };
    conv_bias(
        b,
        &name,
        cin,
        cout,
        k,
        Conv2dParams::default().padding(k / 2),
    )
}

impl Fpn {
    /// Binds the FPN's tensors from `weights` under `prefix`; every missing, unexpected or
    /// mis-shaped tensor is listed in one error.
    pub fn from_weights(
        weights: &Weights,
        prefix: &str,
        config: FpnConfig,
    ) -> Result<Fpn, ModelError> {
        config.check()?;
        let prefix = resolve_prefix(
            weights,
            prefix,
            &["inner_blocks.0.0.weight", "inner_blocks.0.weight"],
        );
        let level = |i: usize| config.first_level + i;
        let mut b = weights.binder(&prefix);
        let out = config.out_channels;
        let mut inner = Vec::new();
        let mut layer = Vec::new();
        for (i, &cin) in config.in_channels.iter().enumerate() {
            inner.push(block(
                weights,
                &mut b,
                &prefix,
                "inner_blocks",
                i,
                level(i),
                cin,
                out,
                1,
            )?);
            layer.push(block(
                weights,
                &mut b,
                &prefix,
                "layer_blocks",
                i,
                level(i),
                out,
                out,
                3,
            )?);
        }
        // Detectron2 keeps the ResNet inside the FPN module (`backbone.bottom_up.*`): that
        // is the resnet node's.
        b.ignore_module("bottom_up.");
        b.finish()?;
        let bf16 = match config.precision {
            Precision::Fp32 => None,
            Precision::Bf16 => {
                config
                    .precision
                    .check_supported()
                    .map_err(|why| ModelError::param("precision", why))?;
                let nhwc = |convs: &[Conv2d], kind: &str| {
                    convs
                        .iter()
                        .enumerate()
                        .map(|(i, c)| {
                            NhwcConv2d::from_conv2d(c, Precision::Bf16)
                                .ctx(|| format!("{kind}.{i}"))?
                                .ok_or_else(|| ModelError::input("fpn: a grouped convolution"))
                        })
                        .collect::<Result<Vec<_>, ModelError>>()
                };
                Some((nhwc(&inner, "inner_blocks")?, nhwc(&layer, "layer_blocks")?))
            }
        };
        Ok(Fpn {
            config,
            inner,
            layer,
            bf16,
        })
    }

    pub fn config(&self) -> &FpnConfig {
        &self.config
    }

    /// Runs the FPN on the input levels (finest first, each `[N, C_i, H_i, W_i]`) and returns
    /// the output levels, finest first, plus the extra level.
    pub fn forward(&self, xs: &[ArrayView4<'_, f32>]) -> Result<Vec<Array4<f32>>, ModelError> {
        let n = self.config.in_channels.len();
        if xs.len() != n {
            return Err(ModelError::input(format!(
                "fpn: got {} input levels, expected {n}",
                xs.len()
            )));
        }
        for (i, (x, &c)) in xs.iter().zip(&self.config.in_channels).enumerate() {
            if x.dim().1 != c {
                return Err(ModelError::input(format!(
                    "fpn: input level {i} has {} channels, expected {c} (shape {:?}; is the resnet depth right?)",
                    x.dim().1,
                    x.shape()
                )));
            }
            if x.dim().0 != xs[0].dim().0 {
                return Err(ModelError::input(
                    "fpn: input levels have different batch sizes",
                ));
            }
        }
        if let Some((inner, layer)) = &self.bf16 {
            return self.forward_bf16(xs, inner, layer);
        }
        let mut results: Vec<Array4<f32>> = vec![Array4::zeros((0, 0, 0, 0)); n];
        let last = n - 1;
        let mut last_inner = self.inner[last]
            .forward(xs[last])
            .ctx(|| format!("inner_blocks.{last}"))?;
        results[last] = self.layer[last]
            .forward(last_inner.view())
            .ctx(|| format!("layer_blocks.{last}"))?;
        for i in (0..last).rev() {
            let (_, _, h, w) = xs[i].dim();
            let top_down = resize(last_inner.view(), (h, w), ResizeMode::Nearest)
                .ctx(|| format!("top-down upsampling into level {i}"))?;
            // inner_blocks[i](x) + top_down, the sum made in the convolution's epilogue.
            last_inner = self.inner[i]
                .forward_residual(xs[i], top_down.view())
                .ctx(|| format!("inner_blocks.{i}"))?;
            results[i] = self.layer[i]
                .forward(last_inner.view())
                .ctx(|| format!("layer_blocks.{i}"))?;
        }
        if self.config.extra == ExtraBlock::MaxPool {
            let pool = max_pool2d(results[last].view(), Pool2dParams::new(1).stride(2))
                .ctx(|| "LastLevelMaxPool".into())?;
            results.push(pool);
        }
        Ok(results)
    }
}

impl Fpn {
    /// [`Fpn::forward`] in `NHWC` with bf16 activations: each input rounded and transposed
    /// once, the top-down sum in the lateral's epilogue as in fp32, each output widened back
    /// to fp32 `NCHW`.
    fn forward_bf16(
        &self,
        xs: &[ArrayView4<'_, f32>],
        inner: &[NhwcConv2d],
        layer: &[NhwcConv2d],
    ) -> Result<Vec<Array4<f32>>, ModelError> {
        let n = xs.len();
        let last = n - 1;
        let nhwc_bf16 = |x: ArrayView4<'_, f32>| -> Result<Array4<u16>, ModelError> {
            let (b, c, h, w) = x.dim();
            let x = x.as_standard_layout();
            let xs = x
                .as_slice()
                .ok_or_else(|| ModelError::input("fpn: a non-contiguous level"))?;
            let t = bf16::nchw_to_nhwc_bf16(xs, b, c, h * w);
            Array4::from_shape_vec((b, h, w, c), t)
                .map_err(|e| ModelError::input(format!("fpn: {e}")))
        };
        let nchw_f32 = |y: Array4<u16>| -> Result<Array4<f32>, ModelError> {
            let (b, h, w, c) = y.dim();
            let ys = y
                .as_slice()
                .ok_or_else(|| ModelError::input("fpn: a non-contiguous level"))?;
            let t = bf16::nhwc_bf16_to_nchw(ys, b, h * w, c);
            Array4::from_shape_vec((b, c, h, w), t)
                .map_err(|e| ModelError::input(format!("fpn: {e}")))
        };
        let mut results: Vec<Array4<f32>> = vec![Array4::zeros((0, 0, 0, 0)); n];
        let mut last_inner = inner[last]
            .forward_bf16(nhwc_bf16(xs[last])?.view(), None)
            .ctx(|| format!("inner_blocks.{last}"))?;
        results[last] = nchw_f32(
            layer[last]
                .forward_bf16(last_inner.view(), None)
                .ctx(|| format!("layer_blocks.{last}"))?,
        )?;
        for i in (0..last).rev() {
            let (_, _, h, w) = xs[i].dim();
            let top_down = resize_nearest_nhwc(last_inner.view(), (h, w))
                .ctx(|| format!("top-down upsampling into level {i}"))?;
            last_inner = inner[i]
                .forward_bf16(nhwc_bf16(xs[i])?.view(), Some(top_down.view()))
                .ctx(|| format!("inner_blocks.{i}"))?;
            results[i] = nchw_f32(
                layer[i]
                    .forward_bf16(last_inner.view(), None)
                    .ctx(|| format!("layer_blocks.{i}"))?,
            )?;
        }
        if self.config.extra == ExtraBlock::MaxPool {
            let pool = max_pool2d(results[last].view(), Pool2dParams::new(1).stride(2))
                .ctx(|| "LastLevelMaxPool".into())?;
            results.push(pool);
        }
        Ok(results)
    }
}

pub fn kind() -> NodeKind {
    let spec = NodeSpec::new(
        "fpn",
        "torchvision FeaturePyramidNetwork with LastLevelMaxPool: c2..c5 in, p2..p6 out (256 channels)",
    )
    .input(
        PortSpec::new(
            "features",
            PortKind::Features,
            "the backbone levels named in `in_features` (from resnet: c2..c5)",
        )
        .dtype(DType::F32)
        .shape("C,H,W"),
    )
    .output(
        PortSpec::new(
            "features",
            PortKind::Features,
            "p2..p6 (torchvision's \"0\"..\"3\", \"pool\"), each [256, H, W]",
        )
        .dtype(DType::F32)
        .shape("C,H,W"),
    )
    .param(ParamSpec::required(
        "weights",
        ParamType::Path,
        "torchvision checkpoint (.pth or .safetensors) holding the FPN (a Mask R-CNN state dict)",
    ))
    .param(ParamSpec::optional(
        "prefix",
        ParamType::Str,
        ParamValue::Str("backbone.fpn.".into()),
        "name prefix of the FPN's tensors",
    ))
    .param(ParamSpec::optional(
        "depth",
        ParamType::Int,
        ParamValue::Int(50),
        "depth of the ResNet feeding it (sets in_channels: 64..512 for 18/34, 256..2048 for 50+)",
    ))
    .param(ParamSpec::optional(
        "in_channels",
        ParamType::IntList,
        ParamValue::IntList(vec![]),
        "channels of each input level; empty: from `depth` and `in_features`",
    ))
    .param(ParamSpec::optional(
        "out_channels",
        ParamType::Int,
        ParamValue::Int(256),
        "channels of every output level",
    ))
    .param(ParamSpec::optional(
        "in_features",
        ParamType::StrList,
        ParamValue::StrList(["c2", "c3", "c4", "c5"].map(String::from).to_vec()),
        "input levels, finest first",
    ))
    .param(ParamSpec::optional(
        "out_features",
        ParamType::StrList,
        ParamValue::StrList(["p2", "p3", "p4", "p5", "p6"].map(String::from).to_vec()),
        "output level names, finest first, the extra level last",
    ))
    .param(ParamSpec::optional(
        "extra_block",
        ParamType::Str,
        ParamValue::Str("pool".into()),
        "\"pool\" (LastLevelMaxPool: max_pool2d(k=1, s=2) of the last level) or \"none\"",
    ))
    .param(crate::resnet::precision_spec());
    NodeKind::new(spec, |params| {
        Ok(Box::new(FpnNode::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `fpn` node.
#[derive(Debug)]
pub struct FpnNode {
    model: Fpn,
    in_features: Vec<String>,
    out_features: Vec<String>,
}

impl FpnNode {
    pub fn from_params(params: &Params) -> Result<FpnNode, ModelError> {
        let p = |e: String| ModelError::Input(e);
        let in_features = params.str_list("in_features").map_err(p)?;
        let out_features = params.str_list("out_features").map_err(p)?;
        let extra = match params.str("extra_block").map_err(p)? {
            "pool" => ExtraBlock::MaxPool,
            "none" => ExtraBlock::None,
            other => {
                return Err(ModelError::param(
                    "extra_block",
                    format!("must be \"pool\" or \"none\", got \"{other}\""),
                ))
            }
        };
        let given = params.int_list("in_channels").map_err(p)?;
        let in_channels = if given.is_empty() {
            let depth = params.int("depth").map_err(p)?;
            let stages = ResNetConfig {
                depth: usize::try_from(depth).unwrap_or(0),
                ..Default::default()
            }
            .stage_channels()?;
            in_features
                .iter()
                .map(|name| {
                    let level = name.strip_prefix('c').and_then(|l| l.parse::<usize>().ok());
                    match level {
                        Some(l @ 2..=5) => Ok(stages[l - 2]),
                        _ => Err(ModelError::param(
                            "in_channels",
                            format!("must be given for input level \"{name}\" (only c2..c5 are known from `depth`)"),
                        )),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            given
                .iter()
                .map(|&c| usize::try_from(c).unwrap_or(0))
                .collect()
        };
        if in_channels.len() != in_features.len() {
            return Err(ModelError::param(
                "in_channels",
                format!(
                    "has {} values for {} input levels {in_features:?}",
                    in_channels.len(),
                    in_features.len()
                ),
            ));
        }
        let out_channels = params.int("out_channels").map_err(p)?;
        let first_level = in_features
            .first()
            .and_then(|n| n.strip_prefix('c'))
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(2);
        let config = FpnConfig {
            in_channels,
            out_channels: usize::try_from(out_channels).unwrap_or(0),
            extra,
            first_level,
            precision: crate::resnet::precision_param(params)?,
        };
        config.check()?;
        if out_features.len() != config.num_outputs() {
            return Err(ModelError::param(
                "out_features",
                format!(
                    "has {} names, the FPN makes {} levels ({} inputs{})",
                    out_features.len(),
                    config.num_outputs(),
                    in_features.len(),
                    if extra == ExtraBlock::MaxPool {
                        " + pool"
                    } else {
                        ""
                    }
                ),
            ));
        }
        let path = PathBuf::from(params.str("weights").map_err(p)?);
        let weights = load_weights(&path)?;
        let prefix = params.str("prefix").map_err(p)?;
        Ok(FpnNode {
            model: Fpn::from_weights(&weights, prefix, config)?,
            in_features,
            out_features,
        })
    }

    pub fn model(&self) -> &Fpn {
        &self.model
    }

    /// The node's computation on a `features` value.
    pub fn run(&self, features: &Value) -> Result<Value, ModelError> {
        let mut views = Vec::new();
        let mut batched_all = None;
        for name in &self.in_features {
            let t = features.get(name).ok_or_else(|| {
                ModelError::input(format!(
                    "fpn: the features have no level \"{name}\" (they have: {}); set `in_features`",
                    features.names().join(", ")
                ))
            })?;
            let (v, batched) = nchw(t, &format!("feature level \"{name}\""))?;
            if *batched_all.get_or_insert(batched) != batched {
                return Err(ModelError::input(
                    "fpn: some levels have a batch axis and others do not",
                ));
            }
            views.push(v);
        }
        let batched = batched_all.unwrap_or(false);
        let mut out = Value::new(PortKind::Features);
        for (name, level) in self.out_features.iter().zip(self.model.forward(&views)?) {
            out.insert(name, from_nchw(level, batched)?);
        }
        Ok(out)
    }
}

impl Node for FpnNode {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(inputs.value("features")?)?;
        Ok(Outputs::one("features", v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels::Tensor;
    use std::path::Path;

    fn fill(name: String, shape: &[usize], v: f32) -> (String, Tensor) {
        let n = shape.iter().product();
        (name, Tensor::from_vec(shape, vec![v; n]).unwrap())
    }

    /// 1x1 inner convs summing the input channels, 3x3 layer convs that pick the centre of
    /// channel 0 only, biases `bias`.
    fn weights(cin: &[usize], out: usize, old_names: bool, bias: f32) -> Weights {
        let mut t = Vec::new();
        for (i, &c) in cin.iter().enumerate() {
            let sub = if old_names { "" } else { ".0" };
            t.push(fill(
                format!("backbone.fpn.inner_blocks.{i}{sub}.weight"),
                &[out, c, 1, 1],
                1.0,
            ));
            t.push(fill(
                format!("backbone.fpn.inner_blocks.{i}{sub}.bias"),
                &[out],
                bias,
            ));
            let mut w = vec![0f32; out * out * 9];
            for o in 0..out {
                w[o * out * 9 + 4] = 1.0;
            }
            t.push((
                format!("backbone.fpn.layer_blocks.{i}{sub}.weight"),
                Tensor::from_vec(&[out, out, 3, 3], w).unwrap(),
            ));
            t.push(fill(
                format!("backbone.fpn.layer_blocks.{i}{sub}.bias"),
                &[out],
                0.0,
            ));
        }
        t.push(fill(
            "rpn.head.conv.0.0.weight".into(),
            &[out, out, 3, 3],
            0.0,
        ));
        Weights::from_tensors(Path::new("fpn.pth"), t)
    }

    #[test]
    fn top_down_nearest_and_max_pool_level() {
        for old in [false, true] {
            let config = FpnConfig {
                in_channels: vec![2, 4],
                out_channels: 3,
                extra: ExtraBlock::MaxPool,
                first_level: 2,
                precision: Precision::Fp32,
            };
            let fpn =
                Fpn::from_weights(&weights(&[2, 4], 3, old, 0.0), "backbone.fpn.", config).unwrap();
            // Fine level 5x5 of ones (inner: 2 per position), coarse 3x3 of its position index.
            let fine = Array4::<f32>::from_elem((1, 2, 5, 5), 1.0);
            let coarse =
                Array4::from_shape_fn((1, 4, 3, 3), |(_, _, y, x)| (y * 3 + x) as f32 / 4.0);
            let out = fpn.forward(&[fine.view(), coarse.view()]).unwrap();
            assert_eq!(out.len(), 3);
            assert_eq!(out[1].dim(), (1, 3, 3, 3));
            assert_eq!(out[1][[0, 0, 2, 1]], 7.0);
            // Nearest with size 5 from 3: source index floor(d * 3/5) = 0,0,1,1,2.
            assert_eq!(out[0].dim(), (1, 3, 5, 5));
            assert_eq!(out[0][[0, 0, 3, 4]], 2.0 + (3 + 2) as f32);
            assert_eq!(out[0][[0, 1, 0, 2]], 2.0 + 1.0);
            // pool = p5[:, :, ::2, ::2]
            assert_eq!(out[2].dim(), (1, 3, 2, 2));
            assert_eq!(out[2][[0, 0, 1, 1]], out[1][[0, 0, 2, 2]]);
        }
    }

    #[test]
    fn wrong_weights_and_inputs_are_errors() {
        let config = FpnConfig::for_resnet(50).unwrap();
        assert_eq!(config.in_channels, [256, 512, 1024, 2048]);
        // An FPN for a ResNet-18 body.
        let err = Fpn::from_weights(
            &weights(&[64, 128, 256, 512], 256, false, 0.0),
            "backbone.fpn.",
            config,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("mis-shaped (4)"), "{err}");
        assert!(err.contains("backbone.fpn.inner_blocks.3.0.weight: the model expects [256, 2048, 1, 1], the file has [256, 512, 1, 1]"), "{err}");
        let config = FpnConfig {
            in_channels: vec![2, 4],
            out_channels: 3,
            extra: ExtraBlock::None,
            first_level: 2,
            precision: Precision::Fp32,
        };
        let fpn =
            Fpn::from_weights(&weights(&[2, 4], 3, false, 0.0), "backbone.fpn.", config).unwrap();
        let a = Array4::<f32>::zeros((1, 2, 4, 4));
        let b = Array4::<f32>::zeros((1, 3, 2, 2));
        let err = fpn.forward(&[a.view(), b.view()]).unwrap_err().to_string();
        assert!(
            err.contains("input level 1 has 3 channels, expected 4"),
            "{err}"
        );
        assert!(fpn.forward(&[a.view()]).is_err());
        assert!(FpnConfig {
            in_channels: vec![],
            out_channels: 3,
            extra: ExtraBlock::None,
            first_level: 2,
            precision: Precision::Fp32,
        }
        .check()
        .is_err());
    }
}
