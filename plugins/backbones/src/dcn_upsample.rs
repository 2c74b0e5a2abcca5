//! `dcn_upsample`: CenterNet's up-sampling of a ResNet's last level to stride 4
//! (xingyizhou/CenterNet @ 4c50fd3a, `src/lib/models/networks/resnet_dcn.py`,
//! `PoseResNet._make_deconv_layer`; the `resdcn_*` architectures).
//!
//! Per stage (planes 256, 128, 64 by default), the six modules of `deconv_layers.{6i}..`:
//! 1. a 3x3 deformable convolution (DCNv2's `DCN`, with bias): `conv_offset_mask`, a 3x3
//!    convolution to 27 channels, gives the offsets (its first 18 channels: `chunk(3)` then
//!    `cat(o1, o2)` keeps them in order) and the mask (the last 9, after a sigmoid);
//! 2. BatchNorm (eps 1e-5) and 3. ReLU, folded into the deformable convolution;
//! 4. a 4x4 transposed convolution, stride 2, padding 1, no bias;
//! 5. BatchNorm and 6. ReLU.
//!
//! Three stages take stride 32 to stride 4. The output is one level, `p2` (stride 4), which
//! CenterNet's heads read. Weights: the released checkpoints' names (`ctdet_coco_resdcn18.pth`
//! keeps `deconv_layers.*` at the top level, beside the body and the heads, which are other
//! nodes').

use kernels::layers::norm::batch_norm;
use kernels::layers::{
    Activation, Conv2d, Conv2dParams, ConvTranspose2d, ConvTranspose2dParams, DeformConv2d,
};
use kernels::weights::{Binder, Weights};
use ndarray::{s, Array4, ArrayView1, ArrayView4, Ix4};
use plugin_sdk::{
    DType, FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Value,
};
use vision_common::{
    conv_bias, count_list_param, count_param, from_nchw, named_levels, weights_param,
    weights_params, LayerContext, ModelError,
};

const NODE: &str = "dcn_upsample";
const BN_EPS: f32 = 1e-5;

/// DCNv2's `DCN` (3x3, stride 1, padding 1, one offset group, with bias) followed by
/// BatchNorm and ReLU, folded into it: `conv_offset_mask` (a 3x3 convolution to 27 channels)
/// gives the offsets (its first 18 channels: `chunk(3)` then `cat(o1, o2)` keeps them in
/// order) and the mask (the last 9, after a sigmoid). Bound from `{dcn}.weight`,
/// `{dcn}.bias`, `{dcn}.conv_offset_mask.*` and the BatchNorm `{bn}.*`. CenterNet's resdcn
/// up-sampling and DLA's `DeformConv` (IDAUp) are this.
#[derive(Debug)]
pub(crate) struct DcnBnRelu {
    offset_mask: Conv2d,
    dcn: DeformConv2d,
    name: String,
}

impl DcnBnRelu {
    pub(crate) fn bind(
        b: &mut Binder<'_>,
        dcn: &str,
        bn: &str,
        cin: usize,
        cout: usize,
    ) -> Result<DcnBnRelu, ModelError> {
        let p3 = Conv2dParams::default().padding(1);
        let offset_mask = conv_bias(b, &format!("{dcn}.conv_offset_mask"), cin, 27, 3, p3)?;
        let w = b.take(&format!("{dcn}.weight"), &[cout, cin, 3, 3]);
        let bias = b.take(&format!("{dcn}.bias"), &[cout]);
        let [g, be, m, v] = take_bn(b, bn, cout);
        let conv = Conv2d::from_tensors(&w, Some(&bias), p3)
            .ctx(|| dcn.to_string())?
            .with_batch_norm(view(&g), view(&be), view(&m), view(&v), BN_EPS)
            .ctx(|| bn.to_string())?
            .with_activation(Activation::Relu);
        Ok(DcnBnRelu {
            offset_mask,
            dcn: DeformConv2d::new(conv),
            name: dcn.to_string(),
        })
    }

    pub(crate) fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>, ModelError> {
        let om = self
            .offset_mask
            .forward(x)
            .ctx(|| format!("{}.conv_offset_mask", self.name))?;
        let offset = om.slice(s![.., 0..18, .., ..]);
        let mut mask = om.slice(s![.., 18..27, .., ..]).to_owned();
        Activation::Sigmoid.apply_array(mask.view_mut().into_dyn());
        self.dcn
            .forward(x, offset, Some(mask.view()))
            .ctx(|| self.name.clone())
    }
}

/// BatchNorm (`[weight, bias, mean, var]`, eps 1e-5) and ReLU in place.
pub(crate) fn bn_relu(
    x: Array4<f32>,
    [g, b, m, v]: &[Vec<f32>; 4],
    name: &str,
) -> Result<Array4<f32>, ModelError> {
    let mut y = batch_norm(
        x.view().into_dyn(),
        view(m),
        view(v),
        Some(view(g)),
        Some(view(b)),
        BN_EPS,
    )
    .ctx(|| name.to_string())?;
    Activation::Relu.apply_array(y.view_mut());
    y.into_dimensionality()
        .map_err(|e| ModelError::input(e.to_string()))
}

/// One stage: the deformable convolution with its BatchNorm and ReLU, then the transposed
/// convolution and its BatchNorm (`[weight, bias, mean, var]`) and ReLU.
#[derive(Debug)]
struct Stage {
    dcn: DcnBnRelu,
    up: ConvTranspose2d,
    up_bn: [Vec<f32>; 4],
}

/// CenterNet's `deconv_layers` with their weights bound.
#[derive(Debug)]
pub struct DcnUpsample {
    in_channels: usize,
    stages: Vec<Stage>,
}

pub(crate) fn take_bn(b: &mut Binder<'_>, name: &str, c: usize) -> [Vec<f32>; 4] {
    ["weight", "bias", "running_mean", "running_var"].map(|p| {
        b.take(&format!("{name}.{p}"), &[c])
            .as_slice::<f32>()
            .map(<[f32]>::to_vec)
            .unwrap_or_default()
    })
}

fn view(v: &[f32]) -> ArrayView1<'_, f32> {
    ArrayView1::from(v)
}

impl DcnUpsample {
    /// Binds `deconv_layers.*` under `prefix` for a body whose last level has `in_channels`.
    pub fn from_weights(
        weights: &Weights,
        prefix: &str,
        in_channels: usize,
        planes: &[usize],
    ) -> Result<DcnUpsample, ModelError> {
        let mut b = weights.binder(prefix);
        let mut stages = Vec::new();
        let mut cin = in_channels;
        for (i, &c) in planes.iter().enumerate() {
            let name = |k: usize| format!("deconv_layers.{}", 6 * i + k);
            let dcn = DcnBnRelu::bind(&mut b, &name(0), &name(1), cin, c)?;
            let up_w = b.take(&format!("{}.weight", name(3)), &[c, c, 4, 4]);
            let up_w = up_w
                .view::<f32>()?
                .into_dimensionality::<Ix4>()
                .map_err(|e| ModelError::input(e.to_string()))?;
            let up = ConvTranspose2d::new(
                up_w,
                None,
                ConvTranspose2dParams::default().stride(2).padding(1),
            )
            .ctx(|| name(3))?;
            let up_bn = take_bn(&mut b, &name(4), c);
            stages.push(Stage { dcn, up, up_bn });
            cin = c;
        }
        b.ignore("num_batches_tracked");
        b.ignore_unbound_modules();
        b.finish()?;
        Ok(DcnUpsample {
            in_channels,
            stages,
        })
    }

    /// The stages on the body's last level `[1, C, h, w]`: `[1, planes.last, 8h, 8w]`.
    pub fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>, ModelError> {
        let (n, c, h, w) = x.dim();
        if n != 1 || c != self.in_channels {
            return Err(ModelError::input(format!(
                "{NODE}: the body's last level is [{n}, {c}, {h}, {w}]; the checkpoint's deconv_layers expect one image of {} channels",
                self.in_channels
            )));
        }
        let mut x = x.to_owned();
        for (i, st) in self.stages.iter().enumerate() {
            let name = |k: usize| format!("deconv_layers.{}", 6 * i + k);
            let y = st.dcn.forward(x.view())?;
            let y = st.up.forward(y.view()).ctx(|| name(3))?;
            x = bn_relu(y, &st.up_bn, &name(4))?;
        }
        Ok(x)
    }
}

pub fn kind() -> NodeKind {
    let spec = NodeSpec::new(
        NODE,
        "CenterNet's PoseResNet up-sampling (deconv_layers): per stage a 3x3 DCNv2 + BN + ReLU and a 4x4 stride-2 transposed convolution + BN + ReLU; stride 32 in, p2 (stride 4) out",
    )
    .input(
        PortSpec::new(
            "features",
            PortKind::Features,
            "the body's levels (from resnet: the last, in_feature)",
        )
        .dtype(DType::F32)
        .shape("C,H,W"),
    )
    .output(
        PortSpec::new(
            "features",
            PortKind::Features,
            "p2: the up-sampled features at stride 4, [planes.last, H, W]",
        )
        .dtype(DType::F32)
        .shape("C,H,W"),
    );
    let spec = weights_params(
        spec,
        "CenterNet's deconv_layers",
        "",
        "name prefix of deconv_layers (empty for the released resdcn checkpoints)",
    );
    let spec = spec
        .param(ParamSpec::optional(
            "in_feature",
            ParamType::Str,
            ParamValue::Str("c5".into()),
            "the body's level to up-sample (layer4)",
        ))
        .param(
            ParamSpec::optional(
                "in_channels",
                ParamType::Int,
                ParamValue::Int(512),
                "channels of that level (ResNet-18: 512, ResNet-101: 2048)",
            )
            .range(1.0, 65536.0),
        )
        .param(ParamSpec::optional(
            "planes",
            ParamType::IntList,
            ParamValue::IntList(vec![256, 128, 64]),
            "output channels of the stages (num_deconv_filters)",
        ));
    NodeKind::new(spec, |params| {
        Ok(Box::new(DcnUpsampleNode::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `dcn_upsample` node.
#[derive(Debug)]
pub struct DcnUpsampleNode {
    model: DcnUpsample,
    in_feature: String,
}

impl DcnUpsampleNode {
    pub fn from_params(params: &Params) -> Result<DcnUpsampleNode, ModelError> {
        let (weights, prefix) = weights_param(params)?;
        let planes = count_list_param(params, "planes")?;
        if planes.is_empty() {
            return Err(ModelError::param("planes", "needs at least one stage"));
        }
        Ok(DcnUpsampleNode {
            model: DcnUpsample::from_weights(
                &weights,
                &prefix,
                count_param(params, "in_channels")?,
                &planes,
            )?,
            in_feature: params
                .str("in_feature")
                .map_err(ModelError::Input)?
                .to_string(),
        })
    }

    pub fn model(&self) -> &DcnUpsample {
        &self.model
    }

    /// The node's computation on a `features` value.
    pub fn run(&self, features: &Value) -> Result<Value, ModelError> {
        let levels = named_levels(NODE, features, std::slice::from_ref(&self.in_feature))?;
        let y = self.model.forward(levels[0])?;
        let mut out = Value::new(PortKind::Features);
        out.insert("p2", from_nchw(y, false)?);
        Ok(out)
    }
}

impl Node for DcnUpsampleNode {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(inputs.value("features")?)?;
        Ok(Outputs::one("features", v))
    }
}
