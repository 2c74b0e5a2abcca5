//! `hourglass`: the stacked Hourglass of CenterNet (xingyizhou/CenterNet @ 4c50fd3a,
//! `src/lib/models/networks/large_hourglass.py`: `exkp`, `kp_module`, `residual`,
//! `convolution`; `HourglassNet` is Hourglass-104: `n = 5`, two stacks, dims `[256, 256, 384,
//! 384, 384, 512]`, modules `[2, 2, 2, 2, 2, 4]`, `cnv_dim = 256`).
//!
//! - `pre`: a 7x7 stride-2 convolution (128 channels, BatchNorm, ReLU) and a stride-2
//!   residual block to 256 channels: stride 4.
//! - Each stack `kps.i` is a `kp_module`, recursive over `n` levels: `up1` (residual blocks at
//!   this level) plus the nearest 2x up-sampling of `low3(low2(low1(x)))`, where `low1`
//!   starts with a stride-2 residual block (CenterNet's `make_hg_layer`; no max-pool), `low2`
//!   is the next level (or residual blocks at the bottom) and `low3` returns to this level's
//!   width (`make_layer_revr`).
//! - `cnvs.i`: a 3x3 convolution to `cnv_dim` with BatchNorm and ReLU.
//! - Between stacks: `inter = inters.i(relu(inters_.i(inter) + cnvs_.i(cnv)))` (1x1
//!   convolutions with BatchNorm, then a residual block).
//!
//! The heads of every stack but the last (intermediate supervision) are not computed: at
//! inference CenterNet keeps only the last stack's outputs (`self.model(images)[-1]`). The
//! output is one level, `p2` (stride 4, `cnv_dim` channels): the last stack's `cnv`.
//! Residual blocks are `relu(bn2(conv2(relu(bn1(conv1(x))))) + skip(x))`, `skip` a 1x1
//! convolution with BatchNorm where the stride or the width changes. BatchNorm eps is 1e-5.
//! Weights: the released checkpoints' names (`ctdet_coco_hg.pth`: `pre.*`, `kps.*`, `cnvs.*`,
//! `inters.*`, `inters_.*`, `cnvs_.*`, beside the heads `hm.*`, `wh.*`, `reg.*`).

use kernels::layers::resize::{resize, ResizeMode};
use kernels::layers::{Activation, Conv2d, Conv2dParams};
use kernels::weights::{Binder, Weights};
use ndarray::{Array4, ArrayView4};
use plugin_sdk::{
    DType, FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Value,
};
use vision_common::{
    conv_bn, conv_bn_relu, count_list_param, count_param, from_nchw, nchw, weights_param,
    weights_params, LayerContext, ModelError,
};

const NODE: &str = "hourglass";
const BN_EPS: f32 = 1e-5;

/// The shape of a stacked Hourglass; the defaults are Hourglass-104's.
#[derive(Clone, Debug, PartialEq)]
pub struct HourglassConfig {
    /// Levels of each hourglass (`n`).
    pub levels: usize,
    pub stacks: usize,
    /// Widths per level, `levels + 1` of them.
    pub dims: Vec<usize>,
    /// Residual blocks per level, `levels + 1` of them.
    pub modules: Vec<usize>,
    pub cnv_dim: usize,
}

impl Default for HourglassConfig {
    fn default() -> Self {
        HourglassConfig {
            levels: 5,
            stacks: 2,
            dims: vec![256, 256, 384, 384, 384, 512],
            modules: vec![2, 2, 2, 2, 2, 4],
            cnv_dim: 256,
        }
    }
}

/// `residual(3, in, out, stride)`.
#[derive(Debug)]
struct Residual {
    name: String,
    conv1: Conv2d,
    conv2: Conv2d,
    skip: Option<Conv2d>,
}

impl Residual {
    fn bind(
        b: &mut Binder<'_>,
        name: &str,
        cin: usize,
        cout: usize,
        stride: usize,
    ) -> Result<Residual, ModelError> {
        let p3 = |s: usize| Conv2dParams::default().stride(s).padding(1);
        let conv1 = conv_bn(
            b,
            &format!("{name}.conv1"),
            &format!("{name}.bn1"),
            cin,
            cout,
            3,
            p3(stride),
            BN_EPS,
            Activation::Relu,
        )?;
        let conv2 = conv_bn(
            b,
            &format!("{name}.conv2"),
            &format!("{name}.bn2"),
            cout,
            cout,
            3,
            p3(1),
            BN_EPS,
            Activation::Relu,
        )?;
        let skip = if stride != 1 || cin != cout {
            Some(conv_bn(
                b,
                &format!("{name}.skip.0"),
                &format!("{name}.skip.1"),
                cin,
                cout,
                1,
                Conv2dParams::default().stride(stride),
                BN_EPS,
                Activation::Identity,
            )?)
        } else {
            None
        };
        Ok(Residual {
            name: name.to_string(),
            conv1,
            conv2,
            skip,
        })
    }

    fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>, ModelError> {
        let y = self
            .conv1
            .forward(x)
            .ctx(|| format!("{}.conv1", self.name))?;
        let skip = match &self.skip {
            Some(s) => Some(s.forward(x).ctx(|| format!("{}.skip", self.name))?),
            None => None,
        };
        let skip = skip.as_ref().map_or(x, |s| s.view());
        self.conv2
            .forward_residual(y.view(), skip)
            .ctx(|| format!("{}.conv2", self.name))
    }
}

fn run_all(blocks: &[Residual], x: ArrayView4<'_, f32>) -> Result<Array4<f32>, ModelError> {
    let mut y = x.to_owned();
    for blk in blocks {
        y = blk.forward(y.view())?;
    }
    Ok(y)
}

/// The bottom of a `kp_module`: the next level, or residual blocks at the last one.
#[derive(Debug)]
enum Low {
    Level(Box<KpModule>),
    Blocks(Vec<Residual>),
}

/// `kp_module(n, dims, modules)`.
#[derive(Debug)]
struct KpModule {
    up1: Vec<Residual>,
    low1: Vec<Residual>,
    low2: Low,
    low3: Vec<Residual>,
}

impl KpModule {
    fn bind(
        b: &mut Binder<'_>,
        name: &str,
        n: usize,
        dims: &[usize],
        modules: &[usize],
    ) -> Result<KpModule, ModelError> {
        let (curr, next) = (dims[0], dims[1]);
        let (curr_mod, next_mod) = (modules[0], modules[1]);
        // make_layer: the first block changes the width, the rest keep it.
        let up1 = (0..curr_mod)
            .map(|j| Residual::bind(b, &format!("{name}.up1.{j}"), curr, curr, 1))
            .collect::<Result<Vec<_>, _>>()?;
        // make_hg_layer: a stride-2 block to the next width, then blocks at that width.
        let low1 = (0..curr_mod)
            .map(|j| {
                let (cin, stride) = if j == 0 { (curr, 2) } else { (next, 1) };
                Residual::bind(b, &format!("{name}.low1.{j}"), cin, next, stride)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let low2 = if n > 1 {
            Low::Level(Box::new(KpModule::bind(
                b,
                &format!("{name}.low2"),
                n - 1,
                &dims[1..],
                &modules[1..],
            )?))
        } else {
            Low::Blocks(
                (0..next_mod)
                    .map(|j| Residual::bind(b, &format!("{name}.low2.{j}"), next, next, 1))
                    .collect::<Result<Vec<_>, _>>()?,
            )
        };
        // make_layer_revr: blocks at the next width, the last back to this level's.
        let low3 = (0..curr_mod)
            .map(|j| {
                let cout = if j + 1 == curr_mod { curr } else { next };
                Residual::bind(b, &format!("{name}.low3.{j}"), next, cout, 1)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KpModule {
            up1,
            low1,
            low2,
            low3,
        })
    }

    fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>, ModelError> {
        let up1 = run_all(&self.up1, x)?;
        let low1 = run_all(&self.low1, x)?;
        let low2 = match &self.low2 {
            Low::Level(k) => k.forward(low1.view())?,
            Low::Blocks(blocks) => run_all(blocks, low1.view())?,
        };
        let low3 = run_all(&self.low3, low2.view())?;
        let (_, _, h, w) = low3.dim();
        let up2 = resize(low3.view(), (2 * h, 2 * w), ResizeMode::Nearest)
            .ctx(|| "up2 (nearest 2x)".into())?;
        if up2.dim() != up1.dim() {
            return Err(ModelError::input(format!(
                "{NODE}: the up-sampled {:?} does not meet the skip branch's {:?}; the input's sides must be multiples of {}",
                up2.dim(),
                up1.dim(),
                4 << self.depth()
            )));
        }
        Ok(up1 + up2)
    }

    fn depth(&self) -> usize {
        match &self.low2 {
            Low::Level(k) => 1 + k.depth(),
            Low::Blocks(_) => 1,
        }
    }
}

/// A stacked Hourglass with its weights bound (see the module documentation).
#[derive(Debug)]
pub struct Hourglass {
    pre: (Conv2d, Residual),
    kps: Vec<KpModule>,
    cnvs: Vec<Conv2d>,
    inters: Vec<Residual>,
    inters_: Vec<Conv2d>,
    cnvs_: Vec<Conv2d>,
}

impl Hourglass {
    pub fn from_weights(
        weights: &Weights,
        prefix: &str,
        config: &HourglassConfig,
    ) -> Result<Hourglass, ModelError> {
        let c = config;
        if c.stacks == 0
            || c.levels == 0
            || c.dims.len() != c.levels + 1
            || c.modules.len() != c.levels + 1
        {
            return Err(ModelError::param(
                "dims",
                format!(
                    "an hourglass of {} levels needs {} dims and modules, and at least one stack; got {:?}, {:?}, {} stacks",
                    c.levels,
                    c.levels + 1,
                    c.dims,
                    c.modules,
                    c.stacks
                ),
            ));
        }
        let mut b = weights.binder(prefix);
        let curr = c.dims[0];
        let pre = (
            conv_bn_relu(&mut b, "pre.0", 7, 3, 128, 2)?,
            Residual::bind(&mut b, "pre.1", 128, curr, 2)?,
        );
        let mut kps = Vec::new();
        let mut cnvs = Vec::new();
        for i in 0..c.stacks {
            kps.push(KpModule::bind(
                &mut b,
                &format!("kps.{i}"),
                c.levels,
                &c.dims,
                &c.modules,
            )?);
            cnvs.push(conv_bn_relu(
                &mut b,
                &format!("cnvs.{i}"),
                3,
                curr,
                c.cnv_dim,
                1,
            )?);
        }
        let one = |b: &mut Binder<'_>, name: String, cin: usize| {
            conv_bn(
                b,
                &format!("{name}.0"),
                &format!("{name}.1"),
                cin,
                curr,
                1,
                Conv2dParams::default(),
                BN_EPS,
                Activation::Identity,
            )
        };
        let mut inters = Vec::new();
        let mut inters_ = Vec::new();
        let mut cnvs_ = Vec::new();
        for i in 0..c.stacks - 1 {
            inters.push(Residual::bind(
                &mut b,
                &format!("inters.{i}"),
                curr,
                curr,
                1,
            )?);
            inters_.push(one(&mut b, format!("inters_.{i}"), curr)?);
            cnvs_.push(one(&mut b, format!("cnvs_.{i}"), c.cnv_dim)?);
        }
        b.ignore("num_batches_tracked");
        b.ignore_unbound_modules();
        b.finish()?;
        Ok(Hourglass {
            pre,
            kps,
            cnvs,
            inters,
            inters_,
            cnvs_,
        })
    }

    /// The last stack's `cnv` `[N, cnv_dim, H/4, W/4]` for images `[N, 3, H, W]`.
    pub fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>, ModelError> {
        let y = self.pre.0.forward(x).ctx(|| "pre.0".into())?;
        let mut inter = self.pre.1.forward(y.view())?;
        let mut cnv = None;
        for (i, (kp, c)) in self.kps.iter().zip(&self.cnvs).enumerate() {
            let k = kp.forward(inter.view())?;
            let out = c.forward(k.view()).ctx(|| format!("cnvs.{i}"))?;
            if i + 1 < self.kps.len() {
                let a = self.inters_[i]
                    .forward(inter.view())
                    .ctx(|| format!("inters_.{i}"))?;
                let mut s = self.cnvs_[i]
                    .forward_residual(out.view(), a.view())
                    .ctx(|| format!("cnvs_.{i}"))?;
                Activation::Relu.apply_array(s.view_mut().into_dyn());
                inter = self.inters[i].forward(s.view())?;
            }
            cnv = Some(out);
        }
        cnv.ok_or_else(|| ModelError::input(format!("{NODE}: no stack")))
    }
}

pub fn kind() -> NodeKind {
    let d = HourglassConfig::default();
    let list = |v: &[usize]| ParamValue::IntList(v.iter().map(|&x| x as i64).collect());
    let spec = NodeSpec::new(
        NODE,
        "CenterNet's stacked Hourglass (Hourglass-104 by default): the image in, the last stack's features p2 (stride 4) out; intermediate supervision skipped",
    )
    .input(
        PortSpec::new(
            "image",
            PortKind::ModelImage,
            "\"tensor\" f32 [3, H, W] or a batch [N, 3, H, W] (CornerNet's image and mirror); H/4 and W/4 multiples of 2^n (n = 5: sides 128k or 128k - 1)",
        )
        .dtype(DType::F32),
    )
    .output(
        PortSpec::new("features", PortKind::Features, "p2: [cnv_dim, H/4, W/4] ([N, cnv_dim, H/4, W/4] for a batch)")
            .dtype(DType::F32)
            .shape("C,H,W"),
    );
    let spec = weights_params(
        spec,
        "the Hourglass",
        "",
        "name prefix of pre / kps / cnvs / inters (empty for the released ctdet_coco_hg.pth)",
    );
    let spec = spec
        .param(
            ParamSpec::optional(
                "levels",
                ParamType::Int,
                ParamValue::Int(d.levels as i64),
                "levels of each hourglass (n)",
            )
            .range(1.0, 16.0),
        )
        .param(
            ParamSpec::optional(
                "stacks",
                ParamType::Int,
                ParamValue::Int(d.stacks as i64),
                "stacked hourglasses (nstack)",
            )
            .range(1.0, 16.0),
        )
        .param(ParamSpec::optional(
            "dims",
            ParamType::IntList,
            list(&d.dims),
            "width of each level (levels + 1)",
        ))
        .param(ParamSpec::optional(
            "modules",
            ParamType::IntList,
            list(&d.modules),
            "residual blocks of each level (levels + 1)",
        ))
        .param(
            ParamSpec::optional(
                "cnv_dim",
                ParamType::Int,
                ParamValue::Int(d.cnv_dim as i64),
                "channels of each stack's output",
            )
            .range(1.0, 65536.0),
        );
    NodeKind::new(spec, |params| {
        Ok(Box::new(HourglassNode::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `hourglass` node.
#[derive(Debug)]
pub struct HourglassNode {
    model: Hourglass,
}

impl HourglassNode {
    pub fn from_params(params: &Params) -> Result<HourglassNode, ModelError> {
        let config = HourglassConfig {
            levels: count_param(params, "levels")?,
            stacks: count_param(params, "stacks")?,
            dims: count_list_param(params, "dims")?,
            modules: count_list_param(params, "modules")?,
            cnv_dim: count_param(params, "cnv_dim")?,
        };
        let (weights, prefix) = weights_param(params)?;
        Ok(HourglassNode {
            model: Hourglass::from_weights(&weights, &prefix, &config)?,
        })
    }

    pub fn run(&self, image: &Value) -> Result<Value, ModelError> {
        let t = image.tensor("tensor").map_err(ModelError::Input)?;
        let (x, _) = nchw(t, "the image tensor")?;
        let y = self.model.forward(x)?;
        let mut out = Value::new(PortKind::Features);
        out.insert("p2", from_nchw(y, false)?);
        Ok(out)
    }
}

impl Node for HourglassNode {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(inputs.value("image")?)?;
        Ok(Outputs::one("features", v))
    }
}
