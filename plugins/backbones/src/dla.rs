//! `dla`: DLA-34 with CenterNet's deformable up-sampling to stride 4 (xingyizhou/CenterNet @
//! 4c50fd3a, `src/lib/models/networks/pose_dla_dcn.py`: `DLA`, `Tree`, `Root`, `BasicBlock`,
//! `DLAUp`, `IDAUp`, `DeformConv`, and `DLASeg` with `down_ratio 4`, `last_level 5`).
//!
//! - The body (`base.*`): `base_layer` (7x7, 3 → 16), `level0` (3x3, 16), `level1` (3x3, 32,
//!   stride 2), then `level2..5`, trees of BasicBlocks (levels `[1, 1, 1, 2, 2, 1]`, channels
//!   `[16, 32, 64, 128, 256, 512]`) whose roots concatenate their children (1x1 convolution,
//!   BatchNorm, ReLU), with max-pool downsampling and 1x1 projections of the residual.
//!   BatchNorm eps is 1e-5, folded into the convolutions.
//! - `dla_up` (`DLAUp` from level 2): three `IDAUp`s merge the levels from the coarsest down.
//!   Each step projects a level (`proj_i`: DCNv2 3x3, BatchNorm, ReLU), up-samples it by a
//!   depthwise transposed convolution (`up_i`: kernel `2f`, stride `f`, padding `f / 2`), adds
//!   the next finer level and refines the sum (`node_i`: DCNv2, BatchNorm, ReLU).
//! - `ida_up`: one more `IDAUp` over `dla_up`'s outputs at strides 4, 8 and 16 to stride 4.
//!
//! The output is one level, `p2` (stride 4, 64 channels), which CenterNet's heads read.
//! Weights: the released checkpoints' names (`ctdet_coco_dla_2x.pth`: `base.*`, `dla_up.*`,
//! `ida_up.*` beside the heads, which are another node's).

use kernels::layers::pool::{max_pool2d, Pool2dParams};
use kernels::layers::{Activation, Conv2d, Conv2dParams, ConvTranspose2d, ConvTranspose2dParams};
use kernels::weights::{Binder, Weights};
use ndarray::{concatenate, Array4, ArrayView4, Axis, Ix4};
use plugin_sdk::{
    DType, FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, PortKind, PortSpec,
    Value,
};
use vision_common::{
    conv_bn, from_nchw, nchw, weights_param, weights_params, LayerContext, ModelError,
};

use crate::dcn_upsample::DcnBnRelu;

const NODE: &str = "dla";
const BN_EPS: f32 = 1e-5;
/// DLA-34's levels and channels (`dla34`).
const LEVELS: [usize; 6] = [1, 1, 1, 2, 2, 1];
const CHANNELS: [usize; 6] = [16, 32, 64, 128, 256, 512];
/// `DLASeg`'s first level (`log2(down_ratio 4)`) and last level.
const FIRST_LEVEL: usize = 2;
const LAST_LEVEL: usize = 5;

fn conv3(
    b: &mut Binder<'_>,
    conv: &str,
    bn: &str,
    cin: usize,
    cout: usize,
    stride: usize,
    act: Activation,
) -> Result<Conv2d, ModelError> {
    conv_bn(
        b,
        conv,
        bn,
        cin,
        cout,
        3,
        Conv2dParams::default().stride(stride).padding(1),
        BN_EPS,
        act,
    )
}

/// `BasicBlock`: `relu(bn2(conv2(relu(bn1(conv1(x))))) + residual)`.
#[derive(Debug)]
struct Block {
    conv1: Conv2d,
    conv2: Conv2d,
    name: String,
}

impl Block {
    fn bind(
        b: &mut Binder<'_>,
        name: &str,
        cin: usize,
        cout: usize,
        stride: usize,
    ) -> Result<Block, ModelError> {
        Ok(Block {
            conv1: conv3(
                b,
                &format!("{name}.conv1"),
                &format!("{name}.bn1"),
                cin,
                cout,
                stride,
                Activation::Relu,
            )?,
            name: name.to_string(),
            conv2: conv3(
                b,
                &format!("{name}.conv2"),
                &format!("{name}.bn2"),
                cout,
                cout,
                1,
                Activation::Relu,
            )?,
        })
    }

    fn forward(
        &self,
        x: ArrayView4<'_, f32>,
        residual: ArrayView4<'_, f32>,
    ) -> Result<Array4<f32>, ModelError> {
        let y = self
            .conv1
            .forward(x)
            .ctx(|| format!("{}.conv1", self.name))?;
        self.conv2
            .forward_residual(y.view(), residual)
            .ctx(|| format!("{}.conv2", self.name))
    }
}

/// A child of a [`Tree`]: a block (levels 1) or a smaller tree.
#[derive(Debug)]
enum Child {
    Block(Box<Block>),
    Tree(Box<Tree>),
}

/// `Tree`: see the module documentation; `root` exists at levels 1.
#[derive(Debug)]
struct Tree {
    name: String,
    tree1: Child,
    tree2: Child,
    root: Option<Conv2d>,
    level_root: bool,
    downsample: Option<usize>,
    project: Option<Conv2d>,
}

impl Tree {
    #[allow(clippy::too_many_arguments)]
    fn bind(
        b: &mut Binder<'_>,
        name: &str,
        levels: usize,
        cin: usize,
        cout: usize,
        stride: usize,
        level_root: bool,
        root_dim: usize,
    ) -> Result<Tree, ModelError> {
        let mut root_dim = if root_dim == 0 { 2 * cout } else { root_dim };
        if level_root {
            root_dim += cin;
        }
        let (tree1, tree2) = if levels == 1 {
            (
                Child::Block(Box::new(Block::bind(
                    b,
                    &format!("{name}.tree1"),
                    cin,
                    cout,
                    stride,
                )?)),
                Child::Block(Box::new(Block::bind(
                    b,
                    &format!("{name}.tree2"),
                    cout,
                    cout,
                    1,
                )?)),
            )
        } else {
            (
                Child::Tree(Box::new(Tree::bind(
                    b,
                    &format!("{name}.tree1"),
                    levels - 1,
                    cin,
                    cout,
                    stride,
                    false,
                    0,
                )?)),
                Child::Tree(Box::new(Tree::bind(
                    b,
                    &format!("{name}.tree2"),
                    levels - 1,
                    cout,
                    cout,
                    1,
                    false,
                    root_dim + cout,
                )?)),
            )
        };
        let root = if levels == 1 {
            Some(conv_bn(
                b,
                &format!("{name}.root.conv"),
                &format!("{name}.root.bn"),
                root_dim,
                cout,
                1,
                Conv2dParams::default(),
                BN_EPS,
                Activation::Relu,
            )?)
        } else {
            None
        };
        let project = if cin != cout {
            Some(conv_bn(
                b,
                &format!("{name}.project.0"),
                &format!("{name}.project.1"),
                cin,
                cout,
                1,
                Conv2dParams::default(),
                BN_EPS,
                Activation::Identity,
            )?)
        } else {
            None
        };
        Ok(Tree {
            name: name.to_string(),
            tree1,
            tree2,
            root,
            level_root,
            downsample: (stride > 1).then_some(stride),
            project,
        })
    }

    /// `Tree.forward(x, residual, children)`.
    fn forward(
        &self,
        x: ArrayView4<'_, f32>,
        mut children: Vec<Array4<f32>>,
    ) -> Result<Array4<f32>, ModelError> {
        let bottom = match self.downsample {
            Some(s) => max_pool2d(x, Pool2dParams::new(s).stride(s))
                .ctx(|| format!("{}.downsample", self.name))?,
            None => x.to_owned(),
        };
        let residual = match &self.project {
            Some(p) => p
                .forward(bottom.view())
                .ctx(|| format!("{}.project", self.name))?,
            None => bottom.clone(),
        };
        if self.level_root {
            children.push(bottom);
        }
        let x1 = match &self.tree1 {
            Child::Block(blk) => blk.forward(x, residual.view())?,
            // A sub-tree's own residual is computed inside it (Tree ignores the one passed).
            Child::Tree(t) => t.forward(x, Vec::new())?,
        };
        match (&self.tree2, &self.root) {
            (Child::Block(blk), Some(root)) => {
                let x2 = blk.forward(x1.view(), x1.view())?;
                // Root: conv(cat(x2, x1, *children)), BatchNorm, ReLU (no residual in DLA-34).
                let mut parts = vec![x2.view(), x1.view()];
                parts.extend(children.iter().map(|c| c.view()));
                let cat =
                    concatenate(Axis(1), &parts).map_err(|e| ModelError::input(e.to_string()))?;
                root.forward(cat.view())
                    .ctx(|| format!("{}.root", self.name))
            }
            (Child::Tree(t), _) => {
                // tree2(x1, children=children + [x1]): x1 is both its input and a child.
                children.push(x1.clone());
                t.forward(x1.view(), children)
            }
            (Child::Block(_), None) => Err(ModelError::input("dla: a tree of blocks has a root")),
        }
    }
}

/// `IDAUp(o, channels, up_f)`: per input level `i >= 1`, `proj_i`, `up_i` and `node_i`.
#[derive(Debug)]
struct IdaUp {
    name: String,
    steps: Vec<(DcnBnRelu, ConvTranspose2d, DcnBnRelu)>,
}

impl IdaUp {
    fn bind(
        b: &mut Binder<'_>,
        name: &str,
        o: usize,
        channels: &[usize],
        up_f: &[usize],
    ) -> Result<IdaUp, ModelError> {
        let mut steps = Vec::new();
        for i in 1..channels.len() {
            let f = up_f[i];
            let proj = DcnBnRelu::bind(
                b,
                &format!("{name}.proj_{i}.conv"),
                &format!("{name}.proj_{i}.actf.0"),
                channels[i],
                o,
            )?;
            let up_name = format!("{name}.up_{i}");
            let w = b.take(&format!("{up_name}.weight"), &[o, 1, 2 * f, 2 * f]);
            let w = w
                .view::<f32>()?
                .into_dimensionality::<Ix4>()
                .map_err(|e| ModelError::input(e.to_string()))?;
            let mut params = ConvTranspose2dParams::default().stride(f).padding(f / 2);
            params.groups = o;
            let up = ConvTranspose2d::new(w, None, params).ctx(|| up_name.clone())?;
            let node = DcnBnRelu::bind(
                b,
                &format!("{name}.node_{i}.conv"),
                &format!("{name}.node_{i}.actf.0"),
                o,
                o,
            )?;
            steps.push((proj, up, node));
        }
        Ok(IdaUp {
            name: name.to_string(),
            steps,
        })
    }

    /// `IDAUp.forward(layers, startp, endp)`: rewrites `layers[startp + 1..endp]` in place.
    fn forward(
        &self,
        layers: &mut [Array4<f32>],
        startp: usize,
        endp: usize,
    ) -> Result<(), ModelError> {
        for i in startp + 1..endp {
            let (proj, up, node) = &self.steps[i - startp - 1];
            let y = up
                .forward(proj.forward(layers[i].view())?.view())
                .ctx(|| format!("{}.up_{}", self.name, i - startp))?;
            let sum = &y + &layers[i - 1];
            layers[i] = node.forward(sum.view())?;
        }
        Ok(())
    }
}

/// DLA-34 with `DLAUp` and `IDAUp`, weights bound.
#[derive(Debug)]
pub struct Dla {
    stem: Vec<Conv2d>,
    trees: Vec<Tree>,
    dla_up: Vec<IdaUp>,
    ida_up: IdaUp,
}

impl Dla {
    /// Binds `base.*`, `dla_up.*` and `ida_up.*` under `prefix`.
    pub fn from_weights(weights: &Weights, prefix: &str) -> Result<Dla, ModelError> {
        let mut b = weights.binder(prefix);
        let c = CHANNELS;
        let stem = vec![
            conv_bn(
                &mut b,
                "base.base_layer.0",
                "base.base_layer.1",
                3,
                c[0],
                7,
                Conv2dParams::default().padding(3),
                BN_EPS,
                Activation::Relu,
            )?,
            conv3(
                &mut b,
                "base.level0.0",
                "base.level0.1",
                c[0],
                c[0],
                1,
                Activation::Relu,
            )?,
            conv3(
                &mut b,
                "base.level1.0",
                "base.level1.1",
                c[0],
                c[1],
                2,
                Activation::Relu,
            )?,
        ];
        let mut trees = Vec::new();
        for level in 2..6 {
            trees.push(Tree::bind(
                &mut b,
                &format!("base.level{level}"),
                LEVELS[level],
                c[level - 1],
                c[level],
                2,
                level > 2,
                0,
            )?);
        }
        // DLAUp(startp 2, channels[2:], scales [1, 2, 4, 8]).
        let channels: Vec<usize> = c[FIRST_LEVEL..].to_vec();
        let mut scales: Vec<usize> = (0..channels.len()).map(|i| 1 << i).collect();
        let mut in_channels = channels.clone();
        let mut dla_up = Vec::new();
        for i in 0..channels.len() - 1 {
            let j = channels.len() - 2 - i;
            let up_f: Vec<usize> = scales[j..].iter().map(|s| s / scales[j]).collect();
            dla_up.push(IdaUp::bind(
                &mut b,
                &format!("dla_up.ida_{i}"),
                channels[j],
                &in_channels[j..],
                &up_f,
            )?);
            for k in j + 1..channels.len() {
                scales[k] = scales[j];
                in_channels[k] = channels[j];
            }
        }
        let n = LAST_LEVEL - FIRST_LEVEL;
        let up_f: Vec<usize> = (0..n).map(|i| 1 << i).collect();
        let ida_up = IdaUp::bind(&mut b, "ida_up", channels[0], &channels[..n], &up_f)?;
        b.ignore("num_batches_tracked");
        // The ImageNet classifier that `load_pretrained_model` adds to the body: saved in
        // the released checkpoints, never run.
        b.ignore_module("base.fc.");
        b.ignore_unbound_modules();
        b.finish()?;
        Ok(Dla {
            stem,
            trees,
            dla_up,
            ida_up,
        })
    }

    /// The body's six levels (`DLA.forward`): strides 1, 2, 4, 8, 16, 32.
    pub fn body(&self, x: ArrayView4<'_, f32>) -> Result<Vec<Array4<f32>>, ModelError> {
        let mut y = Vec::new();
        let base = self.stem[0].forward(x).ctx(|| "base.base_layer".into())?;
        let l0 = self.stem[1]
            .forward(base.view())
            .ctx(|| "base.level0".into())?;
        let l1 = self.stem[2]
            .forward(l0.view())
            .ctx(|| "base.level1".into())?;
        y.push(l0);
        y.push(l1);
        for t in &self.trees {
            let next = t.forward(y[y.len() - 1].view(), Vec::new())?;
            y.push(next);
        }
        Ok(y)
    }

    /// The whole: the stride-4 features `[1, 64, H/4, W/4]`.
    pub fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>, ModelError> {
        let mut layers = self.body(x)?;
        // DLAUp.forward: out starts with the coarsest level, each IDAUp prepends its result.
        let len = layers.len();
        let mut out = vec![layers[len - 1].clone()];
        for (i, ida) in self.dla_up.iter().enumerate() {
            ida.forward(&mut layers, len - i - 2, len)?;
            out.insert(0, layers[len - 1].clone());
        }
        let n = LAST_LEVEL - FIRST_LEVEL;
        let mut y: Vec<Array4<f32>> = out.into_iter().take(n).collect();
        self.ida_up.forward(&mut y, 0, n)?;
        y.pop().ok_or_else(|| ModelError::input("dla: no output"))
    }
}

pub fn kind() -> NodeKind {
    let spec = NodeSpec::new(
        NODE,
        "DLA-34 with CenterNet's deformable up-sampling (DLAUp + IDAUp, DCNv2): the image in, p2 (stride 4, 64 channels) out",
    )
    .input(
        PortSpec::new("image", PortKind::ModelImage, "\"tensor\" f32 [3, H, W] (H and W multiples of 32)")
            .dtype(DType::F32),
    )
    .output(
        PortSpec::new("features", PortKind::Features, "p2: [64, H/4, W/4]")
            .dtype(DType::F32)
            .shape("C,H,W"),
    );
    let spec = weights_params(
        spec,
        "DLA-34 and its up-sampling",
        "",
        "name prefix of base / dla_up / ida_up (empty for the released ctdet_coco_dla_2x.pth)",
    );
    NodeKind::new(spec, |params| {
        let (weights, prefix) = weights_param(params)?;
        Ok(Box::new(DlaNode {
            model: Dla::from_weights(&weights, &prefix)?,
        }) as Box<dyn Node>)
    })
}

/// The `dla` node.
#[derive(Debug)]
pub struct DlaNode {
    model: Dla,
}

impl DlaNode {
    pub fn run(&self, image: &Value) -> Result<Value, ModelError> {
        let t = image.tensor("tensor").map_err(ModelError::Input)?;
        let (x, _) = nchw(t, "the image tensor")?;
        let (_, _, h, w) = x.dim();
        if h % 32 != 0 || w % 32 != 0 {
            return Err(ModelError::input(format!(
                "{NODE}: the image is {h}x{w}; DLA's up-sampling needs sides that are multiples of 32 (centernet_preprocess gives 512x512)"
            )));
        }
        let y = self.model.forward(x)?;
        let mut out = Value::new(PortKind::Features);
        out.insert("p2", from_nchw(y, false)?);
        Ok(out)
    }
}

impl Node for DlaNode {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(inputs.value("image")?)?;
        Ok(Outputs::one("features", v))
    }
}
