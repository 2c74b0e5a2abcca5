//! `mobilenet_v1`: the MobileNet-0.25 of RetinaFace (biubug6/Pytorch_Retinaface,
//! `models/net.py`, `MobileNetV1`), the body of `retinaface_mnet`.
//!
//! - `stage1`: `conv_bn(3, 8, stride 2)`, then `conv_dw` 8→16, 16→32 (stride 2), 32→32,
//!   32→64 (stride 2), 64→64;
//! - `stage2`: `conv_dw` 64→128 (stride 2), then five 128→128;
//! - `stage3`: `conv_dw` 128→256 (stride 2), 256→256.
//!
//! `conv_bn` is a 3x3 convolution (padding 1, no bias), BatchNorm and LeakyReLU(0.1);
//! `conv_dw` a depthwise 3x3 convolution, BatchNorm, LeakyReLU(0.1), then a 1x1 convolution,
//! BatchNorm, LeakyReLU(0.1). BatchNorm (eps 1e-5) is folded into the convolutions at load.
//! The classifier (`avg`, `fc`) is not run: RetinaFace takes the stages' outputs.
//!
//! Outputs `c3`, `c4`, `c5`: the outputs of `stage1..stage3` (strides 8, 16, 32; 64, 128 and
//! 256 channels), RetinaFace's `return_layers {'stage1': 1, 'stage2': 2, 'stage3': 3}`.
//!
//! Weights: `stage{1,2,3}.{i}.{0,1,3,4}.*` (`conv_bn`: `.0` conv, `.1` BatchNorm; `conv_dw`:
//! `.0`/`.1` depthwise, `.3`/`.4` pointwise) under `prefix` (`"body."`, RetinaFace's
//! `IntermediateLayerGetter`; `module.` of a DataParallel checkpoint is found by itself).

use kernels::layers::{Activation, Conv2d, Conv2dParams};
use ndarray::{Array4, ArrayView4};
use plugin_sdk::{
    DType, FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Value,
};

use vision_common::{conv_bn, from_nchw, nchw, resolve_prefix, weights_param};
use vision_common::{LayerContext, ModelError};

/// BatchNorm2d's default eps, which RetinaFace trains with.
const BN_EPS: f32 = 1e-5;
/// `conv_bn(..., leaky=0.1)` and `conv_dw`'s default slope.
const LEAKY: f32 = 0.1;

/// `(input channels, output channels, stride)` of each `conv_dw`, per stage; the first item
/// of stage 1 is the `conv_bn(3, 8, 2)` stem.
const STAGES: [&[(usize, usize, usize)]; 3] = [
    &[
        (8, 16, 1),
        (16, 32, 2),
        (32, 32, 1),
        (32, 64, 2),
        (64, 64, 1),
    ],
    &[
        (64, 128, 2),
        (128, 128, 1),
        (128, 128, 1),
        (128, 128, 1),
        (128, 128, 1),
        (128, 128, 1),
    ],
    &[(128, 256, 2), (256, 256, 1)],
];

/// RetinaFace's MobileNet-0.25 with its weights bound.
#[derive(Debug)]
pub struct MobileNetV1 {
    /// Per stage, its convolutions in order (BatchNorm and LeakyReLU fused).
    stages: Vec<Vec<(String, Conv2d)>>,
}

impl MobileNetV1 {
    pub fn from_weights(
        weights: &kernels::weights::Weights,
        prefix: &str,
    ) -> Result<MobileNetV1, ModelError> {
        let prefix = resolve_prefix(weights, prefix, &["stage1.0.0.weight"]);
        let mut b = weights.binder(&prefix);
        let act = Activation::LeakyRelu(LEAKY);
        let mut stages = Vec::new();
        for (s, items) in STAGES.iter().enumerate() {
            let stage = format!("stage{}", s + 1);
            let mut convs = Vec::new();
            let first = if s == 0 {
                let p = Conv2dParams::default().stride(2).padding(1);
                let name = format!("{stage}.0");
                let c = conv_bn(
                    &mut b,
                    &format!("{name}.0"),
                    &format!("{name}.1"),
                    3,
                    8,
                    3,
                    p,
                    BN_EPS,
                    act,
                )?;
                convs.push((name, c));
                1
            } else {
                0
            };
            for (i, &(cin, cout, stride)) in items.iter().enumerate() {
                let name = format!("{stage}.{}", i + first);
                let dw = Conv2dParams::default()
                    .stride(stride)
                    .padding(1)
                    .groups(cin);
                let depthwise = conv_bn(
                    &mut b,
                    &format!("{name}.0"),
                    &format!("{name}.1"),
                    cin,
                    cin,
                    3,
                    dw,
                    BN_EPS,
                    act,
                )?;
                let pointwise = conv_bn(
                    &mut b,
                    &format!("{name}.3"),
                    &format!("{name}.4"),
                    cin,
                    cout,
                    1,
                    Conv2dParams::default(),
                    BN_EPS,
                    act,
                )?;
                convs.push((format!("{name} (depthwise)"), depthwise));
                convs.push((format!("{name} (pointwise)"), pointwise));
            }
            stages.push(convs);
        }
        // BatchNorm's step counters, and the classifier RetinaFace does not run.
        b.ignore("num_batches_tracked");
        b.ignore_module("fc.");
        b.finish()?;
        Ok(MobileNetV1 { stages })
    }

    /// `c3..c5` of an `[N, 3, H, W]` image.
    pub fn forward(
        &self,
        x: ArrayView4<'_, f32>,
    ) -> Result<Vec<(String, Array4<f32>)>, ModelError> {
        let mut out = Vec::with_capacity(3);
        let mut cur: Option<Array4<f32>> = None;
        for (s, convs) in self.stages.iter().enumerate() {
            for (name, conv) in convs {
                let next = match &cur {
                    None => conv.forward(x),
                    Some(a) => conv.forward(a.view()),
                }
                .ctx(|| name.clone())?;
                cur = Some(next);
            }
            if let Some(a) = &cur {
                out.push((format!("c{}", s + 3), a.clone()));
            }
        }
        Ok(out)
    }
}

pub fn kind() -> NodeKind {
    let spec = NodeSpec::new(
        "mobilenet_v1",
        "RetinaFace's MobileNet-0.25 body (BatchNorm folded at load); returns stage1..stage3 as c3..c5",
    )
    .input(
        PortSpec::new(
            "image",
            PortKind::Tensor,
            "the image from retinaface_preprocess: f32 [3, H, W] (or [N, 3, H, W])",
        )
        .dtype(DType::F32)
        .shape("3,H,W"),
    )
    .output(
        PortSpec::new(
            "features",
            PortKind::Features,
            "c3..c5 (stage1..stage3, strides 8, 16, 32; 64, 128, 256 channels), each [C, H, W]",
        )
        .dtype(DType::F32)
        .shape("C,H,W"),
    )
    .param(ParamSpec::required(
        "weights",
        ParamType::Path,
        "RetinaFace checkpoint (.pth or .safetensors) with a MobileNet-0.25 body (mobilenet0.25_Final.pth)",
    ))
    .param(ParamSpec::optional(
        "prefix",
        ParamType::Str,
        ParamValue::Str("body.".into()),
        "name prefix of the body's tensors (`module.` of a DataParallel checkpoint is found by itself)",
    ));
    NodeKind::new(spec, |params| {
        Ok(Box::new(MobileNetV1Node::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `mobilenet_v1` node.
#[derive(Debug)]
pub struct MobileNetV1Node {
    model: MobileNetV1,
}

impl MobileNetV1Node {
    pub fn from_params(params: &Params) -> Result<MobileNetV1Node, ModelError> {
        let (weights, prefix) = weights_param(params)?;
        Ok(MobileNetV1Node {
            model: MobileNetV1::from_weights(&weights, &prefix)?,
        })
    }

    /// The node's computation on the image tensor.
    pub fn run(&self, image: &Value) -> Result<Value, ModelError> {
        let t = image.tensor("tensor").map_err(ModelError::Input)?;
        let (x, batched) = nchw(t, "mobilenet_v1 input \"tensor\"")?;
        if x.dim().1 != 3 {
            return Err(ModelError::input(format!(
                "mobilenet_v1: the image has {} channels, the network takes 3",
                x.dim().1
            )));
        }
        let mut out = Value::new(PortKind::Features);
        for (name, level) in self.model.forward(x)? {
            out.insert(&name, from_nchw(level, batched)?);
        }
        Ok(out)
    }
}

impl Node for MobileNetV1Node {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(inputs.value("image")?)?;
        Ok(Outputs::one("features", v))
    }
}
