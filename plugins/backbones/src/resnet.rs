//! `resnet`: torchvision's ResNet body (`torchvision.models.resnet`, v1.5: the stride of a
//! Bottleneck is on its 3x3 convolution) with FrozenBatchNorm2d folded into the convolutions
//! at load, returning the stages an FPN needs.
//!
//! Names. torchvision's `resnet_fpn_backbone` wraps the ResNet in an `IntermediateLayerGetter`
//! that returns `layer1`..`layer4` as `"0"`..`"3"` (strides 4, 8, 16, 32); this node names them
//! by their pyramid level instead:
//!
//! | torchvision module | torchvision FPN input | this node | stride | channels (18/34) | channels (50/101/152) |
//! |---|---|---|---|---|---|
//! | `layer1` | `"0"` | `c2` | 4 | 64 | 256 |
//! | `layer2` | `"1"` | `c3` | 8 | 128 | 512 |
//! | `layer3` | `"2"` | `c4` | 16 | 256 | 1024 |
//! | `layer4` | `"3"` | `c5` | 32 | 512 | 2048 |
//!
//! Weights use torchvision's parameter names (or YOLACT's, `stage_names = "yolact"`: its
//! `ResNetBackbone` is the same network with the stages named `layers.0`..`layers.3`) (`conv1.weight`, `bn1.running_var`,
//! `layer3.5.downsample.1.weight`, ...) under `prefix`, `"backbone.body."` by default, i.e. a
//! full `maskrcnn_resnet50_fpn` state dict. A plain torchvision ResNet state dict (top-level
//! `conv1.weight`, plus `fc.*`, which is ignored) loads with the same default: when no tensor
//! name starts with the prefix but `conv1.weight` exists, the prefix is dropped. Top-level
//! modules of such a file that the body does not bind (`fc`; CenterNet's `deconv_layers`,
//! `hm`, `wh`, `reg`) are left to other nodes. `stage_names = "detectron2"` reads
//! Detectron2's names and `"transformers"` Hugging Face transformers' `ResNetModel`'s
//! (`embedder.embedder.convolution`, `encoder.stages.2.layers.0.layer.1.normalization`, ...;
//! MaskFormer's backbone under `model.pixel_level_module.encoder.`), see [`StageNames`].
//!
//! FrozenBatchNorm2d computes `x·w/sqrt(var + eps) + (b - mean·w/sqrt(var + eps))`; its `eps`
//! is 1e-5, but `maskrcnn_resnet50_fpn` sets it to 0 for its COCO weights
//! (`overwrite_eps(model, 0.0)`), hence the default `bn_eps = 0.0`. Use 1e-5 for ImageNet
//! ResNets and `resnet_fpn_backbone` with ImageNet weights.

use std::path::PathBuf;

use kernels::layers::bf16::{self, Precision};
use kernels::layers::pool::{max_pool2d, max_pool2d_nhwc, Pool2dParams};
use kernels::layers::{Activation, Conv2d, Conv2dParams, NhwcConv2d, Padding};
use kernels::weights::Weights;
use ndarray::{Array4, ArrayView4, CowArray};
use plugin_sdk::{
    DType, FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Value,
};

use vision_common::{conv_bn, from_nchw, load_weights, nchw, resolve_prefix, transpose_layout};
use vision_common::{LayerContext, ModelError};

/// What a [`ResNet`] looks like: torchvision's `resnet{depth}` / `resnext` / `wide_resnet`
/// arguments that matter at inference.
#[derive(Clone, Debug, PartialEq)]
pub struct ResNetConfig {
    /// 18, 34 (BasicBlock) or 50, 101, 152 (Bottleneck).
    pub depth: usize,
    /// Groups of the 3x3 convolutions (ResNeXt: 32); Bottleneck only.
    pub groups: usize,
    /// torchvision's `width_per_group` (ResNeXt-50 32x4d: 4, Wide ResNet: 128); Bottleneck only.
    pub width_per_group: usize,
    /// FrozenBatchNorm2d's eps (see the module documentation).
    pub bn_eps: f32,
    /// Which of `layer1`..`layer4` to return (torchvision's `returned_layers`), increasing.
    pub returned_layers: Vec<usize>,
    /// How the checkpoint names the four stages.
    pub stage_names: StageNames,
    /// The stride of a downsampling Bottleneck on its first 1x1 convolution instead of its
    /// 3x3 (ResNet v1, Detectron2's `STRIDE_IN_1X1 = True` for the MSRA weights).
    pub stride_in_1x1: bool,
    /// What the convolutions compute in: bf16 rounds the filters at load and the activations
    /// as the products read them, with fp32 sums ([`kernels::layers::bf16`]); NHWC bodies only.
    pub precision: Precision,
    /// F(4x4) Winograd for the NHWC body's 3x3 stride-1 layers of 64 channels or more, on
    /// the maps where it pays ([`NhwcConv2d::from_conv2d_allowing_f4`]): about 1.5x F(2x2)'s
    /// speed there, with rounding differences a few times F(2x2)'s. Off by default: Mask
    /// R-CNN's mask probabilities then move past the 1e-4 its tests allow.
    pub winograd_f4: bool,
}

/// How a checkpoint names the four stages of a ResNet (the blocks inside are named alike).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StageNames {
    /// torchvision: `layer1`..`layer4`.
    #[default]
    Torchvision,
    /// YOLACT's `ResNetBackbone` (and YolactEdge's): `layers.0`..`layers.3`.
    Yolact,
    /// Detectron2's `ResNet`: `stem.conv1`, stages `res2`..`res5`, each convolution's
    /// FrozenBatchNorm as its `.norm`, the projection as `shortcut`.
    Detectron2,
    /// Hugging Face transformers' `ResNetModel` (the `ResNetConfig` backbone of
    /// `MaskFormerForInstanceSegmentation`): `embedder.embedder`, blocks
    /// `encoder.stages.{s}.layers.{i}`, convolutions `layer.{0,1,2}` and `shortcut`, each a
    /// `convolution` with its `normalization`.
    Transformers,
}

impl StageNames {
    pub fn parse(s: &str) -> Option<StageNames> {
        match s {
            "torchvision" => Some(StageNames::Torchvision),
            "yolact" => Some(StageNames::Yolact),
            "detectron2" => Some(StageNames::Detectron2),
            "transformers" => Some(StageNames::Transformers),
            _ => None,
        }
    }

    /// The module name of stage `s` (0-based) in the checkpoint.
    pub fn stage(self, s: usize) -> String {
        match self {
            StageNames::Torchvision => format!("layer{}", s + 1),
            StageNames::Yolact => format!("layers.{s}"),
            StageNames::Detectron2 => format!("res{}", s + 2),
            StageNames::Transformers => format!("encoder.stages.{s}.layers"),
        }
    }

    /// The convolution and batch norm of the stem.
    fn stem(self) -> (&'static str, &'static str) {
        match self {
            StageNames::Detectron2 => ("stem.conv1", "stem.conv1.norm"),
            StageNames::Transformers => (
                "embedder.embedder.convolution",
                "embedder.embedder.normalization",
            ),
            _ => ("conv1", "bn1"),
        }
    }

    /// The `k`-th (1-based) convolution of block `block` and its batch norm.
    fn conv(self, block: &str, k: usize) -> (String, String) {
        match self {
            StageNames::Detectron2 => (format!("{block}.conv{k}"), format!("{block}.conv{k}.norm")),
            StageNames::Transformers => (
                format!("{block}.layer.{}.convolution", k - 1),
                format!("{block}.layer.{}.normalization", k - 1),
            ),
            _ => (format!("{block}.conv{k}"), format!("{block}.bn{k}")),
        }
    }

    /// The projection shortcut of block `block` and its batch norm.
    fn shortcut(self, block: &str) -> (String, String) {
        match self {
            StageNames::Detectron2 => (
                format!("{block}.shortcut"),
                format!("{block}.shortcut.norm"),
            ),
            StageNames::Transformers => (
                format!("{block}.shortcut.convolution"),
                format!("{block}.shortcut.normalization"),
            ),
            _ => (
                format!("{block}.downsample.0"),
                format!("{block}.downsample.1"),
            ),
        }
    }
}

impl Default for ResNetConfig {
    /// `maskrcnn_resnet50_fpn`'s body: ResNet-50, eps 0, layers 1-4.
    fn default() -> Self {
        ResNetConfig {
            depth: 50,
            groups: 1,
            width_per_group: 64,
            bn_eps: 0.0,
            returned_layers: vec![1, 2, 3, 4],
            stage_names: StageNames::Torchvision,
            stride_in_1x1: false,
            precision: Precision::Fp32,
            winograd_f4: false,
        }
    }
}

impl ResNetConfig {
    /// Blocks per stage and whether they are Bottlenecks.
    pub fn layout(&self) -> Result<([usize; 4], bool), ModelError> {
        Ok(match self.depth {
            18 => ([2, 2, 2, 2], false),
            34 => ([3, 4, 6, 3], false),
            50 => ([3, 4, 6, 3], true),
            101 => ([3, 4, 23, 3], true),
            152 => ([3, 8, 36, 3], true),
            d => {
                return Err(ModelError::param(
                    "depth",
                    format!("must be 18, 34, 50, 101 or 152, got {d}"),
                ))
            }
        })
    }

    /// Output channels of `layer1`..`layer4`.
    pub fn stage_channels(&self) -> Result<[usize; 4], ModelError> {
        let (_, bottleneck) = self.layout()?;
        let e = if bottleneck { 4 } else { 1 };
        Ok([64 * e, 128 * e, 256 * e, 512 * e])
    }

    fn check(&self) -> Result<(), ModelError> {
        let (_, bottleneck) = self.layout()?;
        if self.groups == 0 || self.width_per_group == 0 {
            return Err(ModelError::param(
                "groups",
                "and \"width_per_group\" must be positive",
            ));
        }
        if !bottleneck && (self.groups != 1 || self.width_per_group != 64) {
            return Err(ModelError::param(
                "groups",
                format!(
                    "and \"width_per_group\" must be 1 and 64 for ResNet-{} (BasicBlock), as in torchvision; got {} and {}",
                    self.depth, self.groups, self.width_per_group
                ),
            ));
        }
        if !self.bn_eps.is_finite() || self.bn_eps < 0.0 {
            return Err(ModelError::param(
                "bn_eps",
                format!("must be >= 0, got {}", self.bn_eps),
            ));
        }
        let l = &self.returned_layers;
        if l.is_empty()
            || l.iter().any(|&x| !(1..=4).contains(&x))
            || l.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(ModelError::param(
                "returned_layers",
                format!("must be increasing values in 1..=4, got {l:?}"),
            ));
        }
        Ok(())
    }
}

/// The pyramid name of `layer{i}`: `c{i + 1}`.
pub fn level_name(layer: usize) -> String {
    format!("c{}", layer + 1)
}

/// A convolution of the body in the layout the body runs in: `NHWC` unless the 3x3
/// convolutions are grouped (ResNeXt), which only the `NCHW` path has (see
/// [`NhwcConv2d`] for why `NHWC`).
#[derive(Clone, Debug)]
enum BodyConv {
    Nchw(Conv2d),
    Nhwc(NhwcConv2d),
}

impl BodyConv {
    /// `conv` in `NHWC` when `nhwc` (the body ungrouped), else as it is.
    fn new(
        conv: Conv2d,
        nhwc: bool,
        precision: Precision,
        winograd_f4: bool,
        name: &str,
    ) -> Result<BodyConv, ModelError> {
        if !nhwc {
            return Ok(BodyConv::Nchw(conv));
        }
        let nhwc = if winograd_f4 && precision == Precision::Fp32 {
            NhwcConv2d::from_conv2d_allowing_f4(&conv)
        } else {
            NhwcConv2d::from_conv2d(&conv, precision)
        };
        nhwc.ctx(|| name.to_string())?
            .map(BodyConv::Nhwc)
            .ok_or_else(|| ModelError::input(format!("resnet: {name} is grouped, in an NHWC body")))
    }

    /// The `NHWC` layer (bf16 runs only there).
    fn nhwc(&self, name: &str) -> Result<&NhwcConv2d, ModelError> {
        match self {
            BodyConv::Nhwc(c) => Ok(c),
            BodyConv::Nchw(_) => Err(ModelError::input(format!(
                "resnet: {name} is not in the NHWC body that bf16 needs"
            ))),
        }
    }

    fn forward(&self, x: ArrayView4<'_, f32>) -> kernels::layers::Result<Array4<f32>> {
        match self {
            BodyConv::Nchw(c) => c.forward(x),
            BodyConv::Nhwc(c) => c.forward(x),
        }
    }

    /// [`BodyConv::forward`] or [`BodyConv::forward_residual`], an `NHWC` layer's output in
    /// one of the `spare` buffers where one fits ([`NhwcConv2d::forward_reusing`]).
    fn forward_reusing(
        &self,
        x: ArrayView4<'_, f32>,
        residual: Option<ArrayView4<'_, f32>>,
        spare: &mut Vec<Vec<f32>>,
    ) -> kernels::layers::Result<Array4<f32>> {
        match (self, residual) {
            (BodyConv::Nhwc(c), _) => c.forward_reusing(x, residual, spare),
            (BodyConv::Nchw(c), Some(r)) => c.forward_residual(x, r),
            (BodyConv::Nchw(c), None) => c.forward(x),
        }
    }
}

/// Hands a spent activation's buffer to `spare` for a later layer's output.
fn recycle(a: Array4<f32>, spare: &mut Vec<Vec<f32>>) {
    let (v, _) = a.into_raw_vec_and_offset();
    spare.push(v);
}

#[derive(Clone, Debug)]
struct Block {
    /// conv1, conv2 (BasicBlock) or conv1, conv2, conv3 (Bottleneck), batch norms folded; all
    /// with ReLU fused; the last one's ReLU comes after the residual add, which that
    /// convolution's epilogue does ([`Conv2d::forward_residual`]).
    convs: Vec<BodyConv>,
    downsample: Option<BodyConv>,
}

impl Block {
    /// The block's output; its intermediate maps go to `spare` when done with, and its
    /// layers' outputs come from there where they fit.
    fn forward(
        &self,
        x: ArrayView4<'_, f32>,
        name: &str,
        spare: &mut Vec<Vec<f32>>,
    ) -> Result<Array4<f32>, ModelError> {
        let identity = match &self.downsample {
            Some(d) => Some(
                d.forward_reusing(x, None, spare)
                    .ctx(|| format!("{name}.downsample"))?,
            ),
            None => None,
        };
        let shortcut = identity.as_ref().map_or(x, |i| i.view());
        let last = self.convs.len().saturating_sub(1);
        let mut out: Option<Array4<f32>> = None;
        for (i, conv) in self.convs.iter().enumerate() {
            let input = match &out {
                Some(o) => o.view(),
                None => x,
            };
            let residual = (i == last).then_some(shortcut);
            let y = conv
                .forward_reusing(input, residual, spare)
                .ctx(|| format!("{name}.conv{}", i + 1))?;
            if let Some(done) = out.replace(y) {
                recycle(done, spare);
            }
        }
        if let Some(identity) = identity {
            recycle(identity, spare);
        }
        out.ok_or_else(|| ModelError::input("empty block"))
    }
}

impl Block {
    /// [`Block::forward`] on bf16 activations (`precision = "bf16"`, an NHWC body).
    fn forward_bf16(&self, x: ArrayView4<'_, u16>, name: &str) -> Result<Array4<u16>, ModelError> {
        let nhwc = |c| BodyConv::nhwc(c, name);
        let identity = match &self.downsample {
            Some(d) => Some(
                nhwc(d)?
                    .forward_bf16(x, None)
                    .ctx(|| format!("{name}.downsample"))?,
            ),
            None => None,
        };
        let shortcut = identity.as_ref().map_or(x, |i| i.view());
        let last = self.convs.len().saturating_sub(1);
        let mut out: Option<Array4<u16>> = None;
        for (i, conv) in self.convs.iter().enumerate() {
            let input = out.as_ref().map_or(x, |o| o.view());
            let residual = (i == last).then_some(shortcut);
            let y = nhwc(conv)?.forward_bf16(input, residual);
            out = Some(y.ctx(|| format!("{name}.conv{}", i + 1))?);
        }
        out.ok_or_else(|| ModelError::input("empty block"))
    }
}

/// Where transformers' checkpoints keep a ResNet body under torchvision's names.
const TRANSFORMERS_BODIES: &[&str] = &["model.backbone.conv_encoder.model."];

/// A ResNet body with its weights bound and batch norms folded.
#[derive(Clone, Debug)]
pub struct ResNet {
    config: ResNetConfig,
    stem: BodyConv,
    /// `layer1`..`layer{max returned}`.
    stages: Vec<Vec<Block>>,
}

impl ResNet {
    /// Binds the body's tensors from `weights` under `prefix` (see the module documentation
    /// for the fallback to a plain ResNet state dict). Every missing, unexpected or mis-shaped
    /// tensor is listed in one error.
    pub fn from_weights(
        weights: &Weights,
        prefix: &str,
        config: ResNetConfig,
    ) -> Result<ResNet, ModelError> {
        config.check()?;
        let (blocks, bottleneck) = config.layout()?;
        let prefix = resolve_prefix(weights, prefix, &["conv1.weight"]);
        // Hugging Face transformers keeps a timm ResNet (torchvision's names) under its own
        // path (DETR's `DetrForObjectDetection`): found there when the prefix names nothing.
        let prefix = if weights.names().any(|n| n.starts_with(&prefix)) {
            prefix
        } else {
            TRANSFORMERS_BODIES
                .iter()
                .find(|p| weights.get(&format!("{p}conv1.weight")).is_some())
                .map_or(prefix, |p| p.to_string())
        };
        let mut b = weights.binder(&prefix);
        b.ignore("num_batches_tracked");
        if prefix.is_empty() {
            // A body at the top level of its file: a classification ResNet, whose classifier
            // (`fc`) is not part of the body, or a detector such as CenterNet's resdcn, whose
            // other top-level modules (`deconv_layers`, `hm`, ...) are other nodes'.
            b.ignore_unbound_modules();
        }
        let eps = config.bn_eps;
        let relu = Activation::Relu;
        let nhwc = config.groups == 1 && kernels::layers::conv_nhwc::backbones_in_nhwc();
        let precision = config.precision;
        if precision == Precision::Bf16 {
            precision
                .check_supported()
                .map_err(|why| ModelError::param("precision", why))?;
            if !nhwc {
                return Err(ModelError::param(
                    "precision",
                    if config.groups != 1 {
                        "\"bf16\" has no grouped (ResNeXt) convolutions; use \"fp32\"".to_string()
                    } else {
                        "\"bf16\" needs the NHWC body, which KERNELS_NHWC=0 turned off".to_string()
                    },
                ));
            }
        }
        let (stem_conv, stem_bn) = config.stage_names.stem();
        let stem = conv_bn(
            &mut b,
            stem_conv,
            stem_bn,
            3,
            64,
            7,
            Conv2dParams::default().stride(2).padding(3),
            eps,
            relu,
        )?;
        let stem = BodyConv::new(stem, nhwc, precision, config.winograd_f4, stem_conv)?;
        let last = config.returned_layers.iter().copied().max().unwrap_or(4);
        let expansion = if bottleneck { 4 } else { 1 };
        let mut inplanes = 64;
        let mut stages = Vec::new();
        for (s, &n) in blocks.iter().enumerate().take(last) {
            let planes = 64 << s;
            let stride = if s == 0 { 1 } else { 2 };
            let mut stage = Vec::with_capacity(n);
            for i in 0..n {
                let name = format!("{}.{i}", config.stage_names.stage(s));
                let st = if i == 0 { stride } else { 1 };
                let out = planes * expansion;
                let p = |k: usize| Conv2dParams::default().padding(k / 2);
                let names = |k| config.stage_names.conv(&name, k);
                let convs = if bottleneck {
                    let width = planes * config.width_per_group / 64 * config.groups;
                    let (s1, s3) = if config.stride_in_1x1 {
                        (st, 1)
                    } else {
                        (1, st)
                    };
                    let ((c1, b1), (c2, b2), (c3, b3)) = (names(1), names(2), names(3));
                    vec![
                        conv_bn(
                            &mut b,
                            &c1,
                            &b1,
                            inplanes,
                            width,
                            1,
                            p(1).stride(s1),
                            eps,
                            relu,
                        )?,
                        conv_bn(
                            &mut b,
                            &c2,
                            &b2,
                            width,
                            width,
                            3,
                            p(3).stride(s3).groups(config.groups),
                            eps,
                            relu,
                        )?,
                        // ReLU after the residual add (Block::forward).
                        conv_bn(&mut b, &c3, &b3, width, out, 1, p(1), eps, relu)?,
                    ]
                } else {
                    let ((c1, b1), (c2, b2)) = (names(1), names(2));
                    vec![
                        conv_bn(
                            &mut b,
                            &c1,
                            &b1,
                            inplanes,
                            planes,
                            3,
                            p(3).stride(st),
                            eps,
                            relu,
                        )?,
                        // ReLU after the residual add (Block::forward).
                        conv_bn(&mut b, &c2, &b2, planes, planes, 3, p(3), eps, relu)?,
                    ]
                };
                let downsample = if st != 1 || inplanes != out {
                    let (conv, bn) = config.stage_names.shortcut(&name);
                    Some(conv_bn(
                        &mut b,
                        &conv,
                        &bn,
                        inplanes,
                        out,
                        1,
                        Conv2dParams::default().stride(st),
                        eps,
                        Activation::Identity,
                    )?)
                } else {
                    None
                };
                let convs = convs
                    .into_iter()
                    .map(|c| BodyConv::new(c, nhwc, precision, config.winograd_f4, &name))
                    .collect::<Result<_, _>>()?;
                let downsample = downsample
                    .map(|d| BodyConv::new(d, nhwc, precision, config.winograd_f4, &name))
                    .transpose()?;
                stage.push(Block { convs, downsample });
                inplanes = out;
            }
            stages.push(stage);
        }
        b.finish()?;
        Ok(ResNet {
            config,
            stem,
            stages,
        })
    }

    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }

    /// Whether the body runs in `NHWC`: all its convolutions do, or none.
    fn nhwc(&self) -> bool {
        matches!(self.stem, BodyConv::Nhwc(_))
    }

    /// Runs the body on `[N, 3, H, W]` and returns the returned layers as
    /// `(c{layer + 1}, [N, C, H, W])`, in increasing order.
    pub fn forward(
        &self,
        x: ArrayView4<'_, f32>,
    ) -> Result<Vec<(String, Array4<f32>)>, ModelError> {
        self.forward_stages(x, self.stages.len())
    }

    /// [`ResNet::forward`] through the first `stages` stages only (YolactEdge's partial
    /// backbone on the frames between keyframes).
    pub fn forward_stages(
        &self,
        x: ArrayView4<'_, f32>,
        stages: usize,
    ) -> Result<Vec<(String, Array4<f32>)>, ModelError> {
        let (_, c, h, w) = x.dim();
        if c != 3 {
            return Err(ModelError::input(format!(
                "resnet: the image must have 3 channels, got {c} (shape [{c}, {h}, {w}])"
            )));
        }
        if self.config.precision == Precision::Bf16 {
            return self.forward_bf16(x, stages);
        }
        let x = if self.nhwc() {
            CowArray::from(transpose_layout(x, false)?)
        } else {
            CowArray::from(x)
        };
        let y = self.stem.forward(x.view()).ctx(|| "conv1".into())?;
        // torch's max pool: padding never wins.
        let mut y = if self.nhwc() {
            max_pool2d_nhwc(y.view(), (3, 3), (2, 2), Padding::Explicit([1; 4]))
        } else {
            max_pool2d(y.view(), Pool2dParams::new(3).stride(2).padding(1))
        }
        .ctx(|| "maxpool".into())?;
        let mut out = Vec::new();
        // Spent activations, whose buffers take later layers' outputs (one frame's worth: at
        // most a block's maps and the block input before it).
        let mut spare = Vec::new();
        for (s, stage) in self.stages.iter().enumerate().take(stages) {
            for (i, block) in stage.iter().enumerate() {
                let stage = self.config.stage_names.stage(s);
                let next = block.forward(y.view(), &format!("{stage}.{i}"), &mut spare)?;
                recycle(std::mem::replace(&mut y, next), &mut spare);
            }
            // The next stage's maps are at most twice this one's output: larger buffers would
            // only raise the frame's peak memory.
            spare.retain(|b| b.capacity() <= 2 * y.len());
            if self.config.returned_layers.contains(&(s + 1)) {
                let level = if self.nhwc() {
                    transpose_layout(y.view(), true)?
                } else {
                    y.clone()
                };
                out.push((level_name(s + 1), level));
            }
        }
        Ok(out)
    }

    /// [`ResNet::forward_stages`] with bf16 activations between the layers (as OpenVINO's
    /// bf16 mode keeps them), from the image rounded once to each returned level widened to
    /// fp32 `NCHW`.
    fn forward_bf16(
        &self,
        x: ArrayView4<'_, f32>,
        stages: usize,
    ) -> Result<Vec<(String, Array4<f32>)>, ModelError> {
        let (n, c, h, w) = x.dim();
        let x = x.as_standard_layout();
        let xs = x
            .as_slice()
            .ok_or_else(|| ModelError::input("resnet: a non-contiguous image"))?;
        let x = Array4::from_shape_vec((n, h, w, c), bf16::nchw_to_nhwc_bf16(xs, n, c, h * w))
            .map_err(|e| ModelError::input(format!("resnet: {e}")))?;
        let y = self
            .stem
            .nhwc("conv1")?
            .forward_bf16(x.view(), None)
            .ctx(|| "conv1".into())?;
        // torch's max pool: padding never wins.
        let mut y = bf16::max_pool_nhwc_bf16(y.view(), 3, 2, 1).ctx(|| "maxpool".into())?;
        let mut out = Vec::new();
        for (s, stage) in self.stages.iter().enumerate().take(stages) {
            for (i, block) in stage.iter().enumerate() {
                let stage = self.config.stage_names.stage(s);
                y = block.forward_bf16(y.view(), &format!("{stage}.{i}"))?;
            }
            if self.config.returned_layers.contains(&(s + 1)) {
                let (n, h, w, c) = y.dim();
                let ys = y
                    .as_slice()
                    .ok_or_else(|| ModelError::input("resnet: a non-contiguous map"))?;
                let nchw = bf16::nhwc_bf16_to_nchw(ys, n, h * w, c);
                let level = Array4::from_shape_vec((n, c, h, w), nchw)
                    .map_err(|e| ModelError::input(format!("resnet: {e}")))?;
                out.push((level_name(s + 1), level));
            }
        }
        Ok(out)
    }
}

/// The `precision` parameter of a node (`[pipeline] precision` gives every node that has one
/// its default).
pub fn precision_spec() -> ParamSpec {
    ParamSpec::optional(
        "precision",
        ParamType::Str,
        ParamValue::Str("fp32".into()),
        "\"fp32\"; \"bf16\": filters and activations rounded to bf16 with fp32 sums, on AMX tiles or AVX-512 BF16 (an error on a CPU with neither); or \"auto\": bf16 where the CPU has it, else fp32",
    )
}

pub fn kind() -> NodeKind {
    let spec = NodeSpec::new(
        "resnet",
        "torchvision ResNet body (18/34/50/101/152, v1.5) with FrozenBatchNorm folded at load; returns layer1..layer4 as c2..c5",
    )
    .input(
        PortSpec::new(
            "image",
            PortKind::Tensor,
            "the normalised image from rcnn_preprocess: f32 [3, H, W] (or [N, 3, H, W])",
        )
        .dtype(DType::F32)
        .shape("3,H,W"),
    )
    .output(
        PortSpec::new(
            "features",
            PortKind::Features,
            "c2..c5 (torchvision's \"0\"..\"3\": layer1..layer4, strides 4..32), each [C, H, W]",
        )
        .dtype(DType::F32)
        .shape("C,H,W"),
    )
    .param(ParamSpec::required(
        "weights",
        ParamType::Path,
        "torchvision checkpoint (.pth or .safetensors): a Mask R-CNN state dict or a plain ResNet",
    ))
    .param(ParamSpec::optional(
        "prefix",
        ParamType::Str,
        ParamValue::Str("backbone.body.".into()),
        "name prefix of the body's tensors; dropped automatically for a plain ResNet state dict",
    ))
    .param(ParamSpec::optional(
        "depth",
        ParamType::Int,
        ParamValue::Int(50),
        "18, 34 (BasicBlock) or 50, 101, 152 (Bottleneck)",
    ))
    .param(ParamSpec::optional(
        "groups",
        ParamType::Int,
        ParamValue::Int(1),
        "groups of the 3x3 convolutions (ResNeXt: 32)",
    ))
    .param(ParamSpec::optional(
        "width_per_group",
        ParamType::Int,
        ParamValue::Int(64),
        "torchvision's width_per_group (ResNeXt-50 32x4d: 4, Wide ResNet-50-2: 128)",
    ))
    .param(ParamSpec::optional(
        "bn_eps",
        ParamType::Float,
        ParamValue::Float(0.0),
        "FrozenBatchNorm eps: 0 as maskrcnn_resnet50_fpn's COCO weights, 1e-5 for ImageNet ResNets",
    ))
    .param(ParamSpec::optional(
        "returned_layers",
        ParamType::IntList,
        ParamValue::IntList(vec![1, 2, 3, 4]),
        "which of layer1..layer4 to return (as c2..c5)",
    ))
    .param(ParamSpec::optional(
        "stage_names",
        ParamType::Str,
        ParamValue::Str("torchvision".into()),
        "how the checkpoint names the stages: \"torchvision\" (layer1..layer4), \"yolact\" (layers.0..layers.3, YOLACT's ResNetBackbone), \"detectron2\" (stem, res2..res5, conv*.norm, shortcut) or \"transformers\" (Hugging Face ResNetModel: embedder, encoder.stages.*.layers.*)",
    ))
    .param(ParamSpec::optional(
        "stride_in_1x1",
        ParamType::Bool,
        ParamValue::Bool(false),
        "a downsampling Bottleneck strides in its 1x1 conv1 (Detectron2's STRIDE_IN_1X1, true for its MSRA weights) instead of its 3x3 conv2",
    ))
    .param(precision_spec())
    .param(ParamSpec::optional(
        "winograd_f4",
        ParamType::Bool,
        ParamValue::Bool(false),
        "F(4x4) Winograd for the 3x3 layers of 64 channels or more on large maps (fp32): about 1.5x faster there, with rounding differences a few times the default F(2x2)'s",
    ))
    .param(
        ParamSpec::optional(
            "keyframe_interval",
            ParamType::Int,
            ParamValue::Int(0),
            "YolactEdge: the whole body runs on every N-th frame of a stream (and when the frame size changes); on the others only the first `partial_layers` stages (0: always the whole body)",
        )
        .range(0.0, 1e9),
    )
    .param(
        ParamSpec::optional(
            "partial_layers",
            ParamType::Int,
            ParamValue::Int(2),
            "stages run between keyframes (YolactEdge: layer1 and layer2, giving c2 and c3)",
        )
        .range(1.0, 4.0),
    );
    NodeKind::new(spec, |params| {
        Ok(Box::new(ResNetNode::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `precision` parameter: `"fp32"`, `"bf16"` or `"auto"`.
pub fn precision_param(params: &Params) -> Result<Precision, ModelError> {
    let v = params.str("precision").map_err(ModelError::Input)?;
    Precision::parse(v).ok_or_else(|| {
        ModelError::param(
            "precision",
            format!("must be \"fp32\", \"bf16\" or \"auto\", got \"{v}\""),
        )
    })
}

fn usize_param(params: &Params, name: &'static str) -> Result<usize, ModelError> {
    let v = params.int(name).map_err(ModelError::Input)?;
    usize::try_from(v).map_err(|_| ModelError::param(name, format!("must be >= 0, got {v}")))
}

/// The `resnet` node.
#[derive(Debug)]
pub struct ResNetNode {
    model: ResNet,
    keyframes: Keyframes,
}

/// YolactEdge's keyframe schedule, per stream: a keyframe every `interval` frames from the
/// stream's start, and whenever the frame size differs from the stream's last keyframe.
#[derive(Debug, Default)]
pub struct Keyframes {
    /// 0: every frame is a keyframe.
    pub interval: u64,
    pub partial_layers: usize,
    /// Per stream: its frames seen so far and the size of its last keyframe.
    streams: plugin_sdk::StreamState<(u64, (usize, usize))>,
}

impl Keyframes {
    /// Whether this frame of `stream`, of `size`, is a keyframe (and records it). `index`
    /// (the frame's index in its source) only labels the message.
    pub fn is_keyframe(&mut self, stream: u32, index: u64, size: (usize, usize)) -> bool {
        if self.interval == 0 {
            return true;
        }
        // A new stream starts with a keyframe.
        let (position, last) = self.streams.get_or_insert_with(stream, || (0, size));
        let due = position.is_multiple_of(self.interval);
        *position += 1;
        if !due {
            if *last == size {
                return false;
            }
            eprintln!(
                "resnet: stream {stream}, frame {index}: the frame size changed from {}x{} to {}x{}; forcing a keyframe",
                last.1, last.0, size.1, size.0
            );
        }
        *last = size;
        true
    }
}

impl ResNetNode {
    pub fn from_params(params: &Params) -> Result<ResNetNode, ModelError> {
        let returned = params
            .int_list("returned_layers")
            .map_err(ModelError::Input)?
            .into_iter()
            .map(|l| usize::try_from(l).unwrap_or(0))
            .collect();
        let config = ResNetConfig {
            depth: usize_param(params, "depth")?,
            groups: usize_param(params, "groups")?,
            width_per_group: usize_param(params, "width_per_group")?,
            bn_eps: params.float("bn_eps").map_err(ModelError::Input)? as f32,
            returned_layers: returned,
            stage_names: {
                let v = params.str("stage_names").map_err(ModelError::Input)?;
                StageNames::parse(v).ok_or_else(|| {
                    ModelError::param(
                        "stage_names",
                        format!(
                            "must be \"torchvision\", \"yolact\", \"detectron2\" or \"transformers\", got \"{v}\""
                        ),
                    )
                })?
            },
            stride_in_1x1: params.bool("stride_in_1x1").map_err(ModelError::Input)?,
            precision: precision_param(params)?,
            winograd_f4: params.bool("winograd_f4").map_err(ModelError::Input)?,
        };
        config.check()?;
        let path = PathBuf::from(params.str("weights").map_err(ModelError::Input)?);
        let weights = load_weights(&path)?;
        let prefix = params.str("prefix").map_err(ModelError::Input)?;
        let interval = params.int("keyframe_interval").map_err(ModelError::Input)?;
        Ok(ResNetNode {
            model: ResNet::from_weights(&weights, prefix, config)?,
            keyframes: Keyframes {
                interval: u64::try_from(interval).unwrap_or(0),
                partial_layers: usize_param(params, "partial_layers")?,
                ..Default::default()
            },
        })
    }

    pub fn model(&self) -> &ResNet {
        &self.model
    }

    /// The node's computation on the image tensor.
    pub fn run(&self, image: &Value) -> Result<Value, ModelError> {
        self.run_stages(image, self.model.stages.len())
    }

    /// [`ResNetNode::run`] through the first `stages` stages.
    fn run_stages(&self, image: &Value, stages: usize) -> Result<Value, ModelError> {
        let t = image.tensor("tensor").map_err(ModelError::Input)?;
        let (x, batched) = nchw(t, "resnet input \"tensor\"")?;
        let mut out = Value::new(PortKind::Features);
        for (name, level) in self.model.forward_stages(x, stages)? {
            out.insert(&name, from_nchw(level, batched)?);
        }
        Ok(out)
    }
}

impl Node for ResNetNode {
    fn process(&mut self, frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let image = inputs.value("image")?;
        let stages = if self.keyframes.interval == 0 {
            self.model.stages.len()
        } else {
            // The photo's size: the pre-processing may resize every frame to one size.
            let size = match image.get("original_size").map(|t| t.as_slice::<i64>()) {
                Some(Ok(&[h, w])) => (h as usize, w as usize),
                _ => {
                    let s = image.tensor("tensor").map_err(ModelError::Input)?.shape();
                    (s[s.len().saturating_sub(2)], s[s.len().saturating_sub(1)])
                }
            };
            if self.keyframes.is_keyframe(frame.stream, frame.index, size) {
                self.model.stages.len()
            } else {
                self.keyframes.partial_layers
            }
        };
        let v = self.run_stages(image, stages)?;
        Ok(Outputs::one("features", v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels::Tensor;
    use std::path::Path;

    #[test]
    fn keyframes_every_n_and_on_a_new_size_or_stream() {
        let mut k = Keyframes {
            interval: 3,
            partial_layers: 2,
            ..Default::default()
        };
        let s = (10, 20);
        let got: Vec<bool> = (0..7).map(|i| k.is_keyframe(0, i, s)).collect();
        assert_eq!(got, [true, false, false, true, false, false, true]);
        // A size change forces one; the schedule goes on by position in the stream.
        assert!(k.is_keyframe(0, 7, (11, 20)));
        assert!(!k.is_keyframe(0, 8, (11, 20)));
        assert!(k.is_keyframe(0, 9, (11, 20)));
        // Another stream starts with a keyframe, and its schedule counts from its start
        // (a source's indices go on across its streams).
        assert!(k.is_keyframe(1, 0, s));
        let got: Vec<bool> = (10..14).map(|i| k.is_keyframe(2, i, s)).collect();
        assert_eq!(got, [true, false, false, true]);
        let mut every = Keyframes::default();
        assert!(every.is_keyframe(0, 1, s));
    }

    /// A state dict of a torchvision ResNet with the given config: every conv weight `w`, and
    /// batch norms that are the identity except a bias of `shift`.
    fn state_dict(
        config: &ResNetConfig,
        prefix: &str,
        w: f32,
        shift: f32,
    ) -> Vec<(String, Tensor)> {
        let (blocks, bottleneck) = config.layout().unwrap();
        let mut out = Vec::new();
        let mut conv = |name: String, shape: [usize; 4]| {
            let n = shape.iter().product();
            out.push((
                format!("{prefix}{name}.weight"),
                Tensor::from_vec(&shape, vec![w; n]).unwrap(),
            ));
        };
        let mut bns = Vec::new();
        conv("conv1".into(), [64, 3, 7, 7]);
        bns.push(("bn1".to_string(), 64));
        let e = if bottleneck { 4 } else { 1 };
        let mut inplanes = 64;
        for (s, &n) in blocks.iter().enumerate() {
            let planes = 64 << s;
            for i in 0..n {
                let name = format!("{}.{i}", config.stage_names.stage(s));
                if bottleneck {
                    let width = planes * config.width_per_group / 64 * config.groups;
                    conv(format!("{name}.conv1"), [width, inplanes, 1, 1]);
                    conv(
                        format!("{name}.conv2"),
                        [width, width / config.groups, 3, 3],
                    );
                    conv(format!("{name}.conv3"), [planes * 4, width, 1, 1]);
                    bns.extend([
                        (format!("{name}.bn1"), width),
                        (format!("{name}.bn2"), width),
                        (format!("{name}.bn3"), planes * 4),
                    ]);
                } else {
                    conv(format!("{name}.conv1"), [planes, inplanes, 3, 3]);
                    conv(format!("{name}.conv2"), [planes, planes, 3, 3]);
                    bns.extend([
                        (format!("{name}.bn1"), planes),
                        (format!("{name}.bn2"), planes),
                    ]);
                }
                if i == 0 && (s > 0 || inplanes != planes * e) {
                    conv(format!("{name}.downsample.0"), [planes * e, inplanes, 1, 1]);
                    bns.push((format!("{name}.downsample.1"), planes * e));
                }
                inplanes = planes * e;
            }
        }
        for (bn, c) in bns {
            for (field, v) in [
                ("weight", 1.0),
                ("bias", shift),
                ("running_mean", 0.0),
                ("running_var", 1.0),
            ] {
                out.push((
                    format!("{prefix}{bn}.{field}"),
                    Tensor::from_vec(&[c], vec![v; c]).unwrap(),
                ));
            }
            out.push((
                format!("{prefix}{bn}.num_batches_tracked"),
                Tensor::from_vec(&[], vec![0i64]).unwrap(),
            ));
        }
        out
    }

    #[test]
    fn levels_have_torchvision_shapes() {
        for depth in [18, 50] {
            let config = ResNetConfig {
                depth,
                ..Default::default()
            };
            let w = Weights::from_tensors(
                Path::new("r.pth"),
                state_dict(&config, "backbone.body.", 0.01, 0.0),
            );
            let net = ResNet::from_weights(&w, "backbone.body.", config.clone()).unwrap();
            let x = Array4::<f32>::from_elem((1, 3, 64, 96), 0.5);
            let out = net.forward(x.view()).unwrap();
            let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["c2", "c3", "c4", "c5"]);
            let ch = config.stage_channels().unwrap();
            for (i, (_, a)) in out.iter().enumerate() {
                assert_eq!(
                    a.dim(),
                    (1, ch[i], 16 >> i, 24 >> i),
                    "depth {depth} level {i}"
                );
            }
            // Positive weights and input: every activation is positive.
            assert!(out[3].1.iter().all(|&v| v > 0.0));
        }
    }

    /// YOLACT's ResNetBackbone names (`backbone.layers.2.5.conv3.weight`) give the same
    /// network as torchvision's.
    #[test]
    fn yolact_stage_names_load_the_same_network() {
        let tv = ResNetConfig {
            depth: 18,
            returned_layers: vec![2, 3, 4],
            ..Default::default()
        };
        let yolact = ResNetConfig {
            stage_names: StageNames::Yolact,
            ..tv.clone()
        };
        let x = Array4::<f32>::from_shape_fn((1, 3, 32, 48), |(_, c, y, x)| {
            (c + y * 3 + x) as f32 * 0.01
        });
        let run = |config: &ResNetConfig, prefix: &str| {
            let w =
                Weights::from_tensors(Path::new("r.pth"), state_dict(config, prefix, 0.01, 0.1));
            ResNet::from_weights(&w, prefix, config.clone())
                .unwrap()
                .forward(x.view())
                .unwrap()
        };
        let a = run(&tv, "backbone.body.");
        let b = run(&yolact, "backbone.");
        assert_eq!(a, b);
        let w = Weights::from_tensors(
            Path::new("y.pth"),
            state_dict(&yolact, "backbone.", 0.01, 0.1),
        );
        let err = ResNet::from_weights(&w, "backbone.", tv)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("backbone.layer1.0.conv1.weight")
                && err.contains("backbone.layers.0.0.conv1.weight"),
            "{err}"
        );
        assert_eq!(StageNames::parse("yolact"), Some(StageNames::Yolact));
        assert_eq!(
            StageNames::parse("detectron2"),
            Some(StageNames::Detectron2)
        );
        assert_eq!(StageNames::parse("mmdet"), None);
    }

    #[test]
    fn plain_resnet_state_dicts_load_with_the_default_prefix() {
        let config = ResNetConfig {
            depth: 18,
            returned_layers: vec![2, 4],
            ..Default::default()
        };
        let mut sd = state_dict(&config, "", 0.01, 0.0);
        sd.push((
            "fc.weight".into(),
            Tensor::from_vec(&[10, 512], vec![0f32; 5120]).unwrap(),
        ));
        sd.push((
            "fc.bias".into(),
            Tensor::from_vec(&[10], vec![0f32; 10]).unwrap(),
        ));
        let w = Weights::from_tensors(Path::new("resnet18.pth"), sd);
        let net = ResNet::from_weights(&w, "backbone.body.", config).unwrap();
        let x = Array4::<f32>::from_elem((2, 3, 32, 32), 0.1);
        let out = net.forward(x.view()).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, "c3");
        assert_eq!(out[1].1.dim(), (2, 512, 1, 1));
    }

    #[test]
    fn wrong_weights_list_every_problem_in_one_error() {
        let r18 = ResNetConfig {
            depth: 18,
            ..Default::default()
        };
        let w = Weights::from_tensors(
            Path::new("r18.pth"),
            state_dict(&r18, "backbone.body.", 0.01, 0.0),
        );
        // A ResNet-18 checkpoint for a ResNet-50 model.
        let err = ResNet::from_weights(&w, "backbone.body.", ResNetConfig::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "weights \"r18.pth\" (prefix \"backbone.body.\") do not fit the model:"
            ),
            "{err}"
        );
        assert!(err.contains("missing ("), "{err}");
        assert!(
            err.contains("backbone.body.layer1.0.conv3.weight [256, 64, 1, 1]"),
            "{err}"
        );
        assert!(err.contains("mis-shaped ("), "{err}");
        assert!(err.contains("backbone.body.layer1.0.conv1.weight: the model expects [64, 64, 1, 1], the file has [64, 64, 3, 3]"), "{err}");
        // A checkpoint without the body.
        let other = Weights::from_tensors(
            Path::new("head.pth"),
            [(
                "rpn.w".to_string(),
                Tensor::from_vec(&[1], vec![0f32]).unwrap(),
            )],
        );
        let err = ResNet::from_weights(&other, "backbone.body.", r18.clone())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing (") && err.contains("backbone.body.conv1.weight [64, 3, 7, 7]"),
            "{err}"
        );
    }

    #[test]
    fn bad_configs_and_inputs_are_errors() {
        let bad = |c: ResNetConfig| c.check().unwrap_err().to_string();
        assert!(bad(ResNetConfig {
            depth: 20,
            ..Default::default()
        })
        .contains("\"depth\""));
        assert!(bad(ResNetConfig {
            depth: 18,
            groups: 32,
            ..Default::default()
        })
        .contains("BasicBlock"));
        assert!(bad(ResNetConfig {
            returned_layers: vec![3, 2],
            ..Default::default()
        })
        .contains("returned_layers"));
        assert!(bad(ResNetConfig {
            returned_layers: vec![0],
            ..Default::default()
        })
        .contains("returned_layers"));
        assert!(bad(ResNetConfig {
            bn_eps: -1.0,
            ..Default::default()
        })
        .contains("bn_eps"));
        let config = ResNetConfig {
            depth: 18,
            ..Default::default()
        };
        let w = Weights::from_tensors(
            Path::new("r.pth"),
            state_dict(&config, "backbone.body.", 0.01, 0.0),
        );
        let net = ResNet::from_weights(&w, "backbone.body.", config).unwrap();
        let four = Array4::<f32>::zeros((1, 4, 8, 8));
        assert!(net
            .forward(four.view())
            .unwrap_err()
            .to_string()
            .contains("3 channels, got 4"));
        // A 1x1 image still runs (every stage is 1x1), as in torch.
        let tiny = Array4::<f32>::zeros((1, 3, 1, 1));
        assert_eq!(net.forward(tiny.view()).unwrap()[3].1.dim(), (1, 512, 1, 1));
    }

    #[test]
    fn frozen_batch_norm_is_folded() {
        // All convs zero except BN biases: every block adds relu(shift) paths; check the
        // stem alone: conv1 = 0, bn1 bias 0.5 -> relu(0.5) = 0.5 after the max pool.
        let config = ResNetConfig {
            depth: 18,
            returned_layers: vec![1],
            ..Default::default()
        };
        let w = Weights::from_tensors(Path::new("r.pth"), state_dict(&config, "", 0.0, 0.5));
        let w = Weights::from_tensors(
            Path::new("r.pth"),
            w.names()
                .filter(|n| {
                    !n.starts_with("layer2") && !n.starts_with("layer3") && !n.starts_with("layer4")
                })
                .map(|n| (n.to_string(), w.get(n).unwrap().clone()))
                .collect::<Vec<_>>(),
        );
        let net = ResNet::from_weights(&w, "", config).unwrap();
        let x = Array4::<f32>::from_elem((1, 3, 8, 8), 1.0);
        let c2 = &net.forward(x.view()).unwrap()[0].1;
        // layer1 block: conv1 -> 0 + 0.5 -> relu 0.5; conv2 -> 0 + 0.5; + identity 0.5 -> 1.0;
        // second block: 0.5 + 1.0 = 1.5.
        assert!(
            c2.iter().all(|&v| (v - 1.5).abs() < 1e-6),
            "{:?}",
            &c2.as_slice().unwrap()[..4]
        );
    }
}
