//! An executable graph built from a [`ModelFile`]: every node's op and attributes are parsed
//! at load (an unsupported op or attribute is a load error naming the op and node), nodes run
//! in topological order, and only the nodes the requested outputs depend on run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kernels::layers::conv_nhwc::{self, PackedFilter};
use kernels::{DType, Tensor};
use serde_json::Value as Json;

use crate::error::{op_err, GraphModelError, OpError, OpResult};
use crate::model::{ModelFile, NodeDef};
use crate::ops_cpu::{self as ops, Act, BinOp, ConvGeom, Padding, Reduce, SliceMasks, UnOp};
use crate::plan::{NoPlan, Plan};

/// A parsed op with its attributes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Op {
    Const,
    Placeholder,
    Identity,
    Conv {
        depthwise: bool,
        geom: ConvGeom,
        bias: bool,
        act: Act,
    },
    ConvTranspose {
        strides: (usize, usize),
        padding: Padding,
    },
    MatMul {
        ta: bool,
        tb: bool,
        bias: bool,
        act: Act,
    },
    Binary(BinOp),
    BiasAdd,
    AddN,
    Unary(UnOp),
    Prelu,
    Pool {
        max: bool,
        k: (usize, usize),
        s: (usize, usize),
        padding: Padding,
    },
    Reduce {
        kind: Reduce,
        keep: bool,
    },
    Softmax,
    ArgMax,
    TopK,
    Resize {
        align_corners: bool,
        half_pixel: bool,
    },
    Concat,
    SplitV,
    Unpack {
        axis: i64,
    },
    Pack {
        axis: i64,
    },
    Reshape,
    ExpandDims,
    Squeeze {
        dims: Vec<i64>,
    },
    Transpose,
    Pad {
        v2: bool,
    },
    StridedSlice(SliceMasks),
    Gather,
    GatherNd,
    Cast(DType),
    SparseToDense,
    Shape,
}

#[derive(Debug)]
pub(crate) struct GNode {
    pub(crate) name: String,
    pub(crate) op_name: String,
    pub(crate) op: Op,
    /// (node index, output index).
    pub(crate) inputs: Vec<(usize, usize)>,
    pub(crate) value: Option<Tensor>,
    /// A constant that is a `Conv2D` filter, packed at load for the convolution's product.
    pub(crate) packed_filter: Option<PackedFilter>,
}

/// A graph input (a `Placeholder`).
#[derive(Clone, Debug, PartialEq)]
pub struct InputInfo {
    pub name: String,
    pub dtype: DType,
    /// Dimensions; -1 where any size is accepted.
    pub shape: Vec<i64>,
}

/// A loaded, executable TF.js graph model.
#[derive(Debug)]
pub struct GraphModel {
    file: PathBuf,
    nodes: Vec<GNode>,
    order: Vec<usize>,
    by_name: HashMap<String, usize>,
    inputs: Vec<InputInfo>,
    input_nodes: Vec<usize>,
    default_outputs: Vec<String>,
    signature_outputs: Vec<(String, String)>,
    /// The compiled plan of the outputs runs ask for, or why there is none.
    plan: Result<Plan, NoPlan>,
}

/// What [`GraphModel::plan_status`] reports of a compiled plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanSummary {
    /// Kernels a run executes (views and constants take none).
    pub steps: usize,
    /// Bytes of the arena: every intermediate value and the convolutions' scratch.
    pub arena_bytes: usize,
    /// Ops after the steps that run op by op (the plan's tail; 0: a run allocates nothing).
    pub tail_ops: usize,
    /// Steps in forks: runs of steps that two threads compute at once, as two lanes that
    /// do not read each other's values (planned only where the model loads with two threads
    /// or more).
    pub forked_steps: usize,
}

/// The type and shape of each output of a node, as the plan's dry run saw them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ValueMeta {
    pub(crate) dtype: DType,
    pub(crate) shape: Vec<usize>,
}

/// Each node's [`ValueMeta`]s (`None` where the node did not run).
pub(crate) type ValueMetas = Vec<Option<Vec<ValueMeta>>>;

impl ValueMeta {
    fn of(outputs: &[Tensor]) -> Vec<ValueMeta> {
        outputs
            .iter()
            .map(|t| ValueMeta {
                dtype: t.dtype(),
                shape: t.shape().to_vec(),
            })
            .collect()
    }
}

fn attr<'a>(n: &'a NodeDef, key: &str) -> Option<&'a Json> {
    n.attr.get(key)
}

fn attr_bool(n: &NodeDef, key: &str) -> bool {
    attr(n, key)
        .and_then(|v| v.get("b"))
        .and_then(Json::as_bool)
        .unwrap_or(false)
}

fn json_int(v: &Json) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn attr_int(n: &NodeDef, key: &str) -> Option<i64> {
    attr(n, key).and_then(|v| v.get("i")).and_then(json_int)
}

fn attr_float(n: &NodeDef, key: &str) -> Option<f32> {
    attr(n, key)
        .and_then(|v| v.get("f"))
        .and_then(Json::as_f64)
        .map(|f| f as f32)
}

fn attr_ints(n: &NodeDef, key: &str) -> Option<Vec<i64>> {
    let list = attr(n, key)?.get("list")?;
    match list.get("i") {
        None => Some(Vec::new()),
        Some(a) => a.as_array()?.iter().map(json_int).collect(),
    }
}

/// Base64 (standard alphabet) as TF.js stores string attributes.
fn base64_decode(s: &str) -> Option<String> {
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = Vec::new();
    for ch in s.bytes() {
        let v = match ch {
            b'A'..=b'Z' => ch - b'A',
            b'a'..=b'z' => ch - b'a' + 26,
            b'0'..=b'9' => ch - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        } as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    String::from_utf8(out).ok()
}

fn attr_str(n: &NodeDef, key: &str) -> Option<String> {
    attr(n, key)
        .and_then(|v| v.get("s"))
        .and_then(Json::as_str)
        .and_then(base64_decode)
}

fn attr_strs(n: &NodeDef, key: &str) -> Vec<String> {
    attr(n, key)
        .and_then(|v| v.get("list"))
        .and_then(|l| l.get("s"))
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Json::as_str)
                .filter_map(base64_decode)
                .collect()
        })
        .unwrap_or_default()
}

fn tf_dtype(s: &str) -> Option<DType> {
    Some(match s {
        "DT_FLOAT" => DType::F32,
        "DT_INT32" | "DT_INT64" | "DT_INT16" | "DT_INT8" | "DT_UINT8" => DType::I32,
        "DT_BOOL" => DType::Bool,
        _ => return None,
    })
}

fn padding_of(n: &NodeDef) -> Result<Padding, String> {
    match attr_str(n, "padding").as_deref() {
        Some("SAME") => Ok(Padding::Same),
        Some("VALID") | None => Ok(Padding::Valid),
        Some("EXPLICIT") => {
            let p = attr_ints(n, "explicit_paddings").unwrap_or_default();
            if p.len() != 8 || p.iter().any(|&v| v < 0) {
                return Err(format!(
                    "explicit_paddings {p:?} must be 8 non-negative values"
                ));
            }
            Ok(Padding::Explicit([
                p[2] as usize,
                p[3] as usize,
                p[4] as usize,
                p[5] as usize,
            ]))
        }
        Some(other) => Err(format!("padding \"{other}\" is not supported")),
    }
}

fn hw_pair(n: &NodeDef, key: &str, default: usize) -> Result<(usize, usize), String> {
    match attr_ints(n, key) {
        None => Ok((default, default)),
        Some(v) if v.len() == 4 && v[1] > 0 && v[2] > 0 => Ok((v[1] as usize, v[2] as usize)),
        Some(v) if v.len() == 4 && v[1] == 0 && v[2] == 0 => Ok((default, default)),
        Some(v) => Err(format!(
            "{key} {v:?} must be 4 values [1, h, w, 1] with h, w >= 1"
        )),
    }
}

fn check_nhwc(n: &NodeDef) -> Result<(), String> {
    match attr_str(n, "data_format").as_deref() {
        None | Some("NHWC") => Ok(()),
        Some(f) => Err(format!("data_format \"{f}\" is not supported (only NHWC)")),
    }
}

/// Fused ops of `_FusedConv2D`, `FusedDepthwiseConv2dNative`, `_FusedMatMul`.
fn fused(n: &NodeDef) -> Result<(bool, Act), String> {
    let list = attr_strs(n, "fused_ops");
    let alpha = attr_float(n, "leakyrelu_alpha").unwrap_or(0.2);
    let mut bias = false;
    let mut act = Act::None;
    for f in &list {
        if f == "BiasAdd" {
            bias = true;
        } else if let Some(a) = Act::parse(f, alpha) {
            act = a;
        } else {
            return Err(format!(
                "fused op \"{f}\" is not supported (fused_ops {list:?})"
            ));
        }
    }
    Ok((bias, act))
}

/// The output channels of convolution node `c` (from its constant filter), if known at load.
fn conv_out_channels(nodes: &[GNode], c: usize, depthwise: bool) -> Option<usize> {
    let &(f, _) = nodes[c].inputs.get(1)?;
    let shape = nodes[f].value.as_ref()?.shape();
    match (shape, depthwise) {
        ([_, _, _, co], false) => Some(*co),
        ([_, _, ch, m], true) => Some(ch * m),
        _ => None,
    }
}

/// Load-time fusion of what converters leave unfused after a convolution (MediaPipe's selfie
/// model: 53 `Add`s of a constant bias after `Conv2D` or `DepthwiseConv2dNative`):
/// - `Add(Conv(x, w), b)` (either order) with `b` a constant f32 vector over the output
///   channels (all its other dimensions 1), the convolution read by nothing else, becomes
///   the convolution with that bias;
/// - an activation (`Relu`, `Relu6`, `Sigmoid`, ...) whose input is such a convolution,
///   read by nothing else, becomes the convolution with that activation.
///
/// The node that is rewritten is the later one (the `Add`, the activation), so every node's
/// value keeps its meaning when it is requested by name; the earlier nodes simply are no
/// longer needed for the default outputs. The fused op adds the bias and applies the
/// activation with the same code and in the same order as the separate ops, so results are
/// identical bit for bit. `users` counts each node's readers in the graph as written.
fn fuse_conv_epilogues(nodes: &mut [GNode], users: &[Vec<usize>]) {
    for i in 0..nodes.len() {
        if nodes[i].op != Op::Binary(BinOp::Add) || nodes[i].inputs.len() != 2 {
            continue;
        }
        for (ci, ki) in [(0, 1), (1, 0)] {
            let ((c, c_out), (k, k_out)) = (nodes[i].inputs[ci], nodes[i].inputs[ki]);
            let Op::Conv {
                depthwise,
                geom,
                bias: false,
                act: Act::None,
            } = nodes[c].op
            else {
                continue;
            };
            let bias_fits = |t: &Tensor, co: usize| {
                t.dtype() == DType::F32
                    && t.shape().last() == Some(&co)
                    && t.shape().iter().rev().skip(1).all(|&d| d == 1)
            };
            // A convolution read elsewhere too would be computed twice: left alone.
            let fits = c_out == 0
                && k_out == 0
                && users[c].len() == 1
                && nodes[k].op == Op::Const
                && nodes[c].inputs.len() == 2
                && conv_out_channels(nodes, c, depthwise)
                    .zip(nodes[k].value.as_ref())
                    .is_some_and(|(co, t)| bias_fits(t, co));
            if fits {
                let mut inputs = nodes[c].inputs.clone();
                inputs.push((k, 0));
                nodes[i].op = Op::Conv {
                    depthwise,
                    geom,
                    bias: true,
                    act: Act::None,
                };
                nodes[i].op_name = format!("{}+{}", nodes[c].op_name, nodes[i].op_name);
                nodes[i].inputs = inputs;
                break;
            }
        }
    }
    for i in 0..nodes.len() {
        let Op::Unary(UnOp::Act(act)) = nodes[i].op else {
            continue;
        };
        let Some(&(c, 0)) = nodes[i].inputs.first() else {
            continue;
        };
        let Op::Conv {
            depthwise,
            geom,
            bias,
            act: Act::None,
        } = nodes[c].op
        else {
            continue;
        };
        if act == Act::Prelu || users[c].len() != 1 {
            continue;
        }
        nodes[i].op = Op::Conv {
            depthwise,
            geom,
            bias,
            act,
        };
        nodes[i].op_name = format!("{}+{}", nodes[c].op_name, nodes[i].op_name);
        nodes[i].inputs = nodes[c].inputs.clone();
    }
}

/// Packs every constant filter of a (non-depthwise) convolution once, for
/// [`ops::conv2d_nhwc_packed`]; a convolution whose filter is computed packs it per run. So is
/// the constant right operand `[K, N]` of a `MatMul` without transposes, as the filter
/// `[1, 1, K, N]` of a 1x1 convolution ([`ops::matmul_packed`]).
/// On error, the convolution node whose filter does not fit.
fn pack_conv_filters(nodes: &mut [GNode]) -> Result<(), (usize, OpError)> {
    for i in 0..nodes.len() {
        let matmul = match nodes[i].op {
            Op::Conv {
                depthwise: false, ..
            } => false,
            Op::MatMul {
                ta: false,
                tb: false,
                ..
            } => true,
            _ => continue,
        };
        let Some(&(f, 0)) = nodes[i].inputs.get(1) else {
            continue;
        };
        if nodes[f].packed_filter.is_some() || nodes[f].op != Op::Const {
            continue;
        }
        let Some(value) = &nodes[f].value else {
            continue;
        };
        let packed = ops::f32s(value)
            .and_then(|_| {
                let w = match (matmul, value.shape()) {
                    (true, &[k, n]) => value.reshape(&[1, 1, k, n])?,
                    (true, _) => {
                        return Err(OpError::new(format!(
                            "the MatMul operand {} is not 2-D",
                            value.describe()
                        )))
                    }
                    (false, _) => value.clone(),
                };
                let w = w
                    .view::<f32>()?
                    .into_dimensionality::<ndarray::Ix4>()
                    .map_err(|_| {
                        OpError::new(format!("the filter {} is not 4-D", value.describe()))
                    })?;
                Ok(PackedFilter::new(w, None)?)
            })
            .map_err(|e| (i, e))?;
        nodes[f].packed_filter = Some(packed);
    }
    Ok(())
}

fn parse_op(n: &NodeDef) -> Result<Option<Op>, String> {
    let bin = |b| Ok(Some(Op::Binary(b)));
    let un = |u| Ok(Some(Op::Unary(u)));
    Ok(Some(match n.op.as_str() {
        "Const" => Op::Const,
        "Placeholder" | "PlaceholderWithDefault" => Op::Placeholder,
        "Identity" | "StopGradient" | "Snapshot" | "NoOp" => Op::Identity,
        "Conv2D"
        | "_FusedConv2D"
        | "DepthwiseConv2dNative"
        | "DepthwiseConv2d"
        | "FusedDepthwiseConv2dNative" => {
            check_nhwc(n)?;
            let depthwise = n.op.contains("Depthwise");
            let (bias, act) = if n.op.starts_with('_') || n.op.starts_with("Fused") {
                fused(n)?
            } else {
                (false, Act::None)
            };
            Op::Conv {
                depthwise,
                geom: ConvGeom {
                    strides: hw_pair(n, "strides", 1)?,
                    dilations: hw_pair(n, "dilations", 1)?,
                    padding: padding_of(n)?,
                },
                bias,
                act,
            }
        }
        "Conv2DBackpropInput" => {
            check_nhwc(n)?;
            if hw_pair(n, "dilations", 1)? != (1, 1) {
                return Err("dilated transposed convolutions are not supported".into());
            }
            Op::ConvTranspose {
                strides: hw_pair(n, "strides", 1)?,
                padding: padding_of(n)?,
            }
        }
        "MatMul" | "_FusedMatMul" => {
            let (bias, act) = if n.op == "_FusedMatMul" {
                fused(n)?
            } else {
                (false, Act::None)
            };
            Op::MatMul {
                ta: attr_bool(n, "transpose_a"),
                tb: attr_bool(n, "transpose_b"),
                bias,
                act,
            }
        }
        "Add" | "AddV2" => return bin(BinOp::Add),
        "BiasAdd" => {
            check_nhwc(n)?;
            Op::BiasAdd
        }
        "Sub" => return bin(BinOp::Sub),
        "Mul" => return bin(BinOp::Mul),
        "RealDiv" | "Div" => return bin(BinOp::Div),
        "FloorDiv" => return bin(BinOp::FloorDiv),
        "FloorMod" => return bin(BinOp::FloorMod),
        "SquaredDifference" => return bin(BinOp::SquaredDifference),
        "Maximum" => return bin(BinOp::Maximum),
        "Minimum" => return bin(BinOp::Minimum),
        "Pow" => return bin(BinOp::Pow),
        "Equal" => return bin(BinOp::Equal),
        "NotEqual" => return bin(BinOp::NotEqual),
        "Greater" => return bin(BinOp::Greater),
        "GreaterEqual" => return bin(BinOp::GreaterEqual),
        "Less" => return bin(BinOp::Less),
        "LessEqual" => return bin(BinOp::LessEqual),
        "LogicalAnd" => return bin(BinOp::LogicalAnd),
        "LogicalOr" => return bin(BinOp::LogicalOr),
        "AddN" => Op::AddN,
        "Relu" => return un(UnOp::Act(Act::Relu)),
        "Relu6" => return un(UnOp::Act(Act::Relu6)),
        "Elu" => return un(UnOp::Act(Act::Elu)),
        "Sigmoid" => return un(UnOp::Act(Act::Sigmoid)),
        "Tanh" => return un(UnOp::Act(Act::Tanh)),
        "LeakyRelu" => {
            return un(UnOp::Act(Act::LeakyRelu(
                attr_float(n, "alpha").unwrap_or(0.2),
            )))
        }
        "Sqrt" => return un(UnOp::Sqrt),
        "Rsqrt" => return un(UnOp::Rsqrt),
        "Exp" => return un(UnOp::Exp),
        "Log" => return un(UnOp::Log),
        "Neg" => return un(UnOp::Neg),
        "Abs" => return un(UnOp::Abs),
        "Square" => return un(UnOp::Square),
        "Floor" => return un(UnOp::Floor),
        "Ceil" => return un(UnOp::Ceil),
        "Round" => return un(UnOp::Round),
        "Reciprocal" => return un(UnOp::Reciprocal),
        "Prelu" => Op::Prelu,
        "MaxPool" | "AvgPool" => {
            check_nhwc(n)?;
            let padding = padding_of(n)?;
            Op::Pool {
                max: n.op == "MaxPool",
                k: hw_pair(n, "ksize", 1)?,
                s: hw_pair(n, "strides", 1)?,
                padding,
            }
        }
        "Mean" | "Sum" | "Max" | "Min" => Op::Reduce {
            kind: match n.op.as_str() {
                "Mean" => Reduce::Mean,
                "Sum" => Reduce::Sum,
                "Max" => Reduce::Max,
                _ => Reduce::Min,
            },
            keep: attr_bool(n, "keep_dims"),
        },
        "Softmax" => Op::Softmax,
        "ArgMax" => Op::ArgMax,
        "TopKV2" => Op::TopK,
        "ResizeBilinear" => Op::Resize {
            align_corners: attr_bool(n, "align_corners"),
            half_pixel: attr_bool(n, "half_pixel_centers"),
        },
        "ConcatV2" | "Concat" => Op::Concat,
        "SplitV" => Op::SplitV,
        "Unpack" => Op::Unpack {
            axis: attr_int(n, "axis").unwrap_or(0),
        },
        "Pack" => Op::Pack {
            axis: attr_int(n, "axis").unwrap_or(0),
        },
        "Reshape" => Op::Reshape,
        "ExpandDims" => Op::ExpandDims,
        "Squeeze" => Op::Squeeze {
            dims: attr_ints(n, "squeeze_dims")
                .or_else(|| attr_ints(n, "axis"))
                .unwrap_or_default(),
        },
        "Transpose" => Op::Transpose,
        "Pad" | "PadV2" => Op::Pad {
            v2: n.op == "PadV2",
        },
        "StridedSlice" => {
            let m = SliceMasks {
                begin: attr_int(n, "begin_mask").unwrap_or(0),
                end: attr_int(n, "end_mask").unwrap_or(0),
                ellipsis: attr_int(n, "ellipsis_mask").unwrap_or(0),
                new_axis: attr_int(n, "new_axis_mask").unwrap_or(0),
                shrink_axis: attr_int(n, "shrink_axis_mask").unwrap_or(0),
            };
            if m.ellipsis != 0 || m.new_axis != 0 {
                return Err("ellipsis_mask and new_axis_mask are not supported".into());
            }
            Op::StridedSlice(m)
        }
        "GatherV2" | "Gather" => {
            if attr_int(n, "batch_dims").unwrap_or(0) != 0 {
                return Err("batch_dims != 0 is not supported".into());
            }
            Op::Gather
        }
        "GatherNd" => Op::GatherNd,
        "Cast" => {
            let to = attr(n, "DstT")
                .and_then(|v| v.get("type"))
                .and_then(Json::as_str)
                .unwrap_or("");
            Op::Cast(tf_dtype(to).ok_or_else(|| format!("cast to {to:?} is not supported"))?)
        }
        "SparseToDense" => Op::SparseToDense,
        "Shape" => Op::Shape,
        _ => return Ok(None),
    }))
}

fn parse_ref(s: &str) -> (&str, usize) {
    match s.rsplit_once(':') {
        Some((name, idx)) => match idx.parse() {
            Ok(i) => (name, i),
            Err(_) => (s, 0),
        },
        None => (s, 0),
    }
}

impl GraphModel {
    /// Loads `model.json` and its shards and builds the graph.
    pub fn load(path: &Path) -> Result<GraphModel, GraphModelError> {
        GraphModel::from_model(ModelFile::load(path)?)
    }

    /// Builds the graph from a parsed model file.
    pub fn from_model(mut m: ModelFile) -> Result<GraphModel, GraphModelError> {
        let file = m.path.clone();
        let by_name: HashMap<String, usize> = m
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        let mut unsupported: Vec<String> = Vec::new();
        let mut nodes = Vec::with_capacity(m.nodes.len());
        let mut inputs = Vec::new();
        let mut input_nodes = Vec::new();
        for (i, n) in m.nodes.iter().enumerate() {
            let op = match parse_op(n) {
                Ok(Some(op)) => op,
                Ok(None) => {
                    unsupported.push(format!("{} (graph node \"{}\")", n.op, n.name));
                    Op::Identity
                }
                Err(msg) => {
                    unsupported.push(format!("{} (graph node \"{}\"): {msg}", n.op, n.name));
                    Op::Identity
                }
            };
            let mut refs = Vec::with_capacity(n.inputs.len());
            for inp in &n.inputs {
                let (name, idx) = parse_ref(inp);
                let Some(&j) = by_name.get(name) else {
                    return Err(GraphModelError::Node {
                        file: file.clone(),
                        node: n.name.clone(),
                        op: n.op.clone(),
                        msg: format!("input \"{inp}\" names no node of the graph"),
                    });
                };
                refs.push((j, idx));
            }
            let value = if op == Op::Const {
                Some(
                    m.weights
                        .remove(&n.name)
                        .ok_or_else(|| GraphModelError::Weight {
                            file: file.clone(),
                            tensor: n.name.clone(),
                            msg: "constant has no entry in weightsManifest".into(),
                        })?,
                )
            } else {
                None
            };
            if op == Op::Placeholder {
                let dtype = attr(n, "dtype")
                    .and_then(|v| v.get("type"))
                    .and_then(Json::as_str)
                    .and_then(tf_dtype)
                    .unwrap_or(DType::F32);
                let shape = attr(n, "shape")
                    .and_then(|v| v.get("shape"))
                    .and_then(|s| s.get("dim"))
                    .and_then(Json::as_array)
                    .map(|dims| {
                        dims.iter()
                            .map(|d| d.get("size").and_then(json_int).unwrap_or(-1))
                            .collect()
                    })
                    .unwrap_or_default();
                inputs.push(InputInfo {
                    name: n.name.clone(),
                    dtype,
                    shape,
                });
                input_nodes.push(i);
            }
            nodes.push(GNode {
                name: n.name.clone(),
                op_name: n.op.clone(),
                op,
                inputs: refs,
                value,
                packed_filter: None,
            });
        }
        if !unsupported.is_empty() {
            return Err(GraphModelError::Unsupported {
                file,
                list: unsupported.join("; "),
            });
        }
        // Topological order (Kahn), in file order among ready nodes.
        let mut indeg: Vec<usize> = nodes.iter().map(|n| n.inputs.len()).collect();
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
        for (i, n) in nodes.iter().enumerate() {
            for &(j, _) in &n.inputs {
                users[j].push(i);
            }
        }
        let mut ready: std::collections::VecDeque<usize> =
            (0..nodes.len()).filter(|&i| indeg[i] == 0).collect();
        let mut order = Vec::with_capacity(nodes.len());
        while let Some(i) = ready.pop_front() {
            order.push(i);
            for &u in &users[i] {
                indeg[u] -= 1;
                if indeg[u] == 0 {
                    ready.push_back(u);
                }
            }
        }
        if order.len() != nodes.len() {
            let stuck = (0..nodes.len())
                .find(|&i| indeg[i] > 0)
                .map(|i| nodes[i].name.clone())
                .unwrap_or_default();
            return Err(GraphModelError::Malformed {
                file,
                msg: format!("the graph has a cycle (through node \"{stuck}\")"),
            });
        }
        let signature_outputs: Vec<(String, String)> = m
            .signature_outputs
            .iter()
            .map(|s| (s.key.clone(), s.tensor.clone()))
            .collect();
        let default_outputs = if signature_outputs.is_empty() {
            nodes
                .iter()
                .enumerate()
                .filter(|(i, n)| {
                    users[*i].is_empty() && !matches!(n.op, Op::Const | Op::Placeholder)
                })
                .map(|(_, n)| n.name.clone())
                .collect()
        } else {
            signature_outputs.iter().map(|(_, t)| t.clone()).collect()
        };
        // After the default outputs are known (they come from the graph as written) and on
        // the topological order found above, which the fusion keeps valid.
        fuse_conv_epilogues(&mut nodes, &users);
        pack_conv_filters(&mut nodes).map_err(|(node, e)| GraphModelError::Node {
            file: file.clone(),
            node: nodes[node].name.clone(),
            op: nodes[node].op_name.clone(),
            msg: e.0,
        })?;
        let mut model = GraphModel {
            file,
            nodes,
            order,
            by_name,
            inputs,
            input_nodes,
            default_outputs,
            signature_outputs,
            plan: Err(NoPlan::Unsupported(String::new())),
        };
        model.plan_outputs(&[]);
        Ok(model)
    }

    /// Compiles the plan of runs that ask for `outputs` (empty: the default outputs), in
    /// place of the one held; a graph that cannot be planned keeps running op by op, and
    /// [`GraphModel::plan_status`] says why.
    pub fn plan_outputs(&mut self, outputs: &[String]) {
        let names = if outputs.is_empty() {
            self.default_outputs.clone()
        } else {
            outputs.to_vec()
        };
        // The `graph_model` node asks again for the default outputs planned at load: the dry
        // run is not repeated.
        if self
            .plan
            .as_ref()
            .is_ok_and(|p| p.names() == names.as_slice())
        {
            return;
        }
        self.plan = names
            .iter()
            .map(|n| self.resolve(n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| NoPlan::Unsupported(e.to_string()))
            .and_then(|targets| Plan::build(self, &names, &targets));
    }

    /// Whether runs asking for `outputs` (empty: the default outputs) take the compiled
    /// plan (on inputs of the planned shapes); others run op by op.
    pub fn plan_serves(&self, outputs: &[String]) -> bool {
        let names = if outputs.is_empty() {
            &self.default_outputs
        } else {
            outputs
        };
        self.plan.as_ref().is_ok_and(|p| p.names() == names)
    }

    /// The compiled plan's size, or why runs go op by op.
    pub fn plan_status(&self) -> Result<PlanSummary, &NoPlan> {
        match &self.plan {
            Ok(p) => Ok(PlanSummary {
                steps: p.steps(),
                arena_bytes: p.arena_bytes(),
                tail_ops: p.tail_nodes(),
                forked_steps: p.forked_steps(),
            }),
            Err(why) => Err(why),
        }
    }

    /// An error at load when the plan's arena would exceed `limit` bytes.
    pub fn check_memory_limit(&self, limit: usize) -> Result<(), GraphModelError> {
        match &self.plan {
            Ok(p) if p.arena_bytes() > limit => Err(GraphModelError::Malformed {
                file: self.file.clone(),
                msg: format!(
                    "the compiled plan needs {:.1} MiB of memory for its tensors, more than the limit of {:.1} MiB; raise the limit",
                    p.arena_bytes() as f64 / (1 << 20) as f64,
                    limit as f64 / (1 << 20) as f64
                ),
            }),
            _ => Ok(()),
        }
    }

    /// The shapes of the planned outputs (for [`GraphModel::run_into`]'s buffers).
    pub fn planned_output_shapes(&self) -> Option<Vec<Vec<usize>>> {
        self.plan
            .as_ref()
            .ok()
            .map(|p| p.output_shapes().map(<[usize]>::to_vec).collect())
    }

    /// A planned run (the outputs [`GraphModel::plan_outputs`] chose) that writes into `outs`,
    /// one buffer per output of [`GraphModel::planned_output_shapes`]; allocates nothing.
    pub fn run_into(
        &self,
        feeds: &[Tensor],
        outs: &mut [&mut [f32]],
    ) -> Result<(), GraphModelError> {
        let plan = self
            .plan
            .as_ref()
            .map_err(|why| self.plan_error(format!("the graph has no compiled plan: {why}")))?;
        if !plan.serves_feeds(feeds) {
            return Err(
                self.plan_error("the inputs do not have the planned shapes and types".into())
            );
        }
        kernels::process::in_pool_helped(|| plan.run_into(self, feeds, outs))
    }

    /// Whether each node is one that `targets` depend on (the targets included).
    pub(crate) fn needed_nodes(&self, targets: &[(usize, usize)]) -> Vec<bool> {
        self.needed_nodes_from(targets, &vec![false; self.nodes.len()])
    }

    /// [`GraphModel::needed_nodes`] when the `known` nodes' values are given: what they read
    /// is not needed for them.
    fn needed_nodes_from(&self, targets: &[(usize, usize)], known: &[bool]) -> Vec<bool> {
        let mut needed = vec![false; self.nodes.len()];
        let mut stack: Vec<usize> = targets.iter().map(|t| t.0).collect();
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut needed[i], true) && !known[i] {
                stack.extend(self.nodes[i].inputs.iter().map(|r| r.0));
            }
        }
        needed
    }

    pub(crate) fn nodes(&self) -> &[GNode] {
        &self.nodes
    }

    pub(crate) fn order(&self) -> &[usize] {
        &self.order
    }

    pub(crate) fn input_nodes(&self) -> &[usize] {
        &self.input_nodes
    }

    pub(crate) fn plan_error(&self, msg: String) -> GraphModelError {
        GraphModelError::Malformed {
            file: self.file.clone(),
            msg,
        }
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The graph's inputs (placeholders).
    pub fn inputs(&self) -> &[InputInfo] {
        &self.inputs
    }

    /// The outputs returned when none are requested: the signature's outputs, or the nodes
    /// nothing consumes.
    pub fn default_outputs(&self) -> &[String] {
        &self.default_outputs
    }

    /// The op name of every node, in file order (for inventories).
    pub fn ops(&self) -> impl Iterator<Item = (&str, &str)> {
        self.nodes
            .iter()
            .map(|n| (n.name.as_str(), n.op_name.as_str()))
    }

    /// Resolves an output name: a signature key, "node:k" or "node".
    pub fn resolve(&self, name: &str) -> Result<(usize, usize), GraphModelError> {
        let target = self
            .signature_outputs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, t)| t.as_str())
            .unwrap_or(name);
        let found = self.by_name.get(target).map(|&i| (i, 0)).or_else(|| {
            let (n, k) = parse_ref(target);
            self.by_name.get(n).map(|&i| (i, k))
        });
        found.ok_or_else(|| GraphModelError::Output {
            file: self.file.clone(),
            name: name.to_string(),
            msg: format!(
                "no such tensor in the graph (graph outputs: {})",
                self.default_outputs.join(", ")
            ),
        })
    }

    /// Runs the graph on `feeds` (one tensor per input, in [`GraphModel::inputs`] order) and
    /// returns the tensors `outputs` name (empty: the default outputs).
    ///
    /// The whole run executes on a thread of the rayon pool ([`kernels::process::in_pool`]):
    /// iris 2.7x, facemesh 2.4x and selfie 1.6x faster at 1 thread than with each op's
    /// parallel loop handed to the pool from the caller's thread. While it is the only run of
    /// the library in flight, the pool's other threads wait for its loops' tasks instead of
    /// sleeping between them ([`kernels::process::in_pool_helped`]): 15-27% faster at 2
    /// threads on those models, and the demo pipeline, whose models often run side by
    /// side, kept its time.
    pub fn run(
        &self,
        feeds: &[Tensor],
        outputs: &[String],
    ) -> Result<Vec<Tensor>, GraphModelError> {
        kernels::process::in_pool_helped(|| self.run_here(feeds, outputs, true))
    }

    /// [`GraphModel::run`] without the compiled plan: op by op, each op allocating its
    /// result (the plan's reference, and its baseline in benchmarks).
    pub fn run_op_by_op(
        &self,
        feeds: &[Tensor],
        outputs: &[String],
    ) -> Result<Vec<Tensor>, GraphModelError> {
        kernels::process::in_pool(|| self.run_here(feeds, outputs, false))
    }

    fn run_here(
        &self,
        feeds: &[Tensor],
        outputs: &[String],
        use_plan: bool,
    ) -> Result<Vec<Tensor>, GraphModelError> {
        if feeds.len() != self.inputs.len() {
            return Err(GraphModelError::Input {
                file: self.file.clone(),
                input: self
                    .inputs
                    .iter()
                    .map(|i| i.name.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
                msg: format!(
                    "the graph has {} inputs, {} were given",
                    self.inputs.len(),
                    feeds.len()
                ),
            });
        }
        for (info, t) in self.inputs.iter().zip(feeds) {
            let shape_ok = t.ndim() == info.shape.len()
                && info
                    .shape
                    .iter()
                    .zip(t.shape())
                    .all(|(&want, &got)| want < 0 || want as usize == got);
            if t.dtype() != info.dtype || !(shape_ok || info.shape.is_empty()) {
                let dims: Vec<String> = info
                    .shape
                    .iter()
                    .map(|d| if *d < 0 { "?".into() } else { d.to_string() })
                    .collect();
                return Err(GraphModelError::Input {
                    file: self.file.clone(),
                    input: info.name.clone(),
                    msg: format!(
                        "expects {}[{}], got {}",
                        info.dtype,
                        dims.join(", "),
                        t.describe()
                    ),
                });
            }
        }
        let names: Vec<String> = if outputs.is_empty() {
            self.default_outputs.clone()
        } else {
            outputs.to_vec()
        };
        let targets: Vec<(usize, usize)> = names
            .iter()
            .map(|n| self.resolve(n))
            .collect::<Result<_, _>>()?;
        if let (Ok(plan), true) = (&self.plan, use_plan) {
            if plan.serves(&names, feeds) {
                return plan.run(self, feeds);
            }
        }
        let values = self.evaluate(feeds, &targets)?;
        targets
            .iter()
            .zip(&names)
            .map(|(&(i, k), name)| {
                values[i]
                    .as_ref()
                    .and_then(|v| v.get(k))
                    .cloned()
                    .ok_or_else(|| GraphModelError::Output {
                        file: self.file.clone(),
                        name: name.clone(),
                        msg: format!("node \"{}\" has no output {k}", self.nodes[i].name),
                    })
            })
            .collect()
    }

    /// Runs the nodes `targets` depend on, op by op, and returns every node's outputs that
    /// are still held at the end: the targets' and constants'.
    pub(crate) fn evaluate(
        &self,
        feeds: &[Tensor],
        targets: &[(usize, usize)],
    ) -> Result<Vec<Option<Vec<Tensor>>>, GraphModelError> {
        self.evaluate_with(feeds, Vec::new(), targets, None)
    }

    /// [`GraphModel::evaluate`] with the values of the `seeds` nodes given (they and what only
    /// they need are not run: a planned run's op-by-op tail), and with `keep`, the nodes whose
    /// values are held to the end too (the plan's dry run), and every value's types and
    /// shapes returned with them.
    pub(crate) fn evaluate_with(
        &self,
        feeds: &[Tensor],
        seeds: Vec<(usize, Tensor)>,
        targets: &[(usize, usize)],
        mut keep: Option<(&[bool], &mut ValueMetas)>,
    ) -> Result<Vec<Option<Vec<Tensor>>>, GraphModelError> {
        // Which nodes are needed, and how many times each value is still to be read.
        let mut seeded = vec![false; self.nodes.len()];
        for (i, _) in &seeds {
            seeded[*i] = true;
        }
        let needed = self.needed_nodes_from(targets, &seeded);
        let mut remaining = vec![0usize; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            if needed[i] {
                for &(j, _) in &n.inputs {
                    remaining[j] += 1;
                }
            }
        }
        for &(j, _) in targets {
            remaining[j] += 1;
        }
        let mut values: Vec<Option<Vec<Tensor>>> = vec![None; self.nodes.len()];
        for (k, &i) in self.input_nodes.iter().enumerate() {
            values[i] = Some(vec![feeds[k].clone()]);
        }
        for (i, t) in seeds {
            values[i] = Some(vec![t]);
        }
        if let Some((_, metas)) = keep.as_mut() {
            **metas = vec![None; self.nodes.len()];
            for &i in &self.input_nodes {
                metas[i] = values[i].as_deref().map(ValueMeta::of);
            }
        }
        // GRAPH_MODEL_PROFILE=1: time per op type, printed to stderr after each run.
        let mut profile: Option<std::collections::BTreeMap<String, (u32, f64)>> =
            profiling().then(Default::default);
        for &i in &self.order {
            if !needed[i] || seeded[i] {
                continue;
            }
            let node = &self.nodes[i];
            if node.op == Op::Placeholder {
                continue;
            }
            let out = {
                let mut args: Vec<&Tensor> = Vec::with_capacity(node.inputs.len());
                for &(j, k) in &node.inputs {
                    let t = values[j].as_ref().and_then(|v| v.get(k)).ok_or_else(|| {
                        GraphModelError::Node {
                            file: self.file.clone(),
                            node: node.name.clone(),
                            op: node.op_name.clone(),
                            msg: format!(
                                "input \"{}:{k}\" has no value (the node has fewer outputs)",
                                self.nodes[j].name
                            ),
                        }
                    })?;
                    args.push(t);
                }
                let started = profile.as_ref().map(|_| std::time::Instant::now());
                // The plan's dry run needs only the shapes of computed values: its
                // convolutions are not run.
                let shape_only = keep.as_ref().is_some_and(|(k, _)| !k[i]);
                let out = match shape_only.then(|| self.conv_shape(node, &args)).flatten() {
                    Some(shape) => Tensor::zeros(DType::F32, &shape)
                        .map(|t| vec![t])
                        .map_err(OpError::from),
                    None => self.exec(node, &args),
                }
                .map_err(|e| GraphModelError::Node {
                    file: self.file.clone(),
                    node: node.name.clone(),
                    op: node.op_name.clone(),
                    msg: e.0,
                })?;
                if let (Some(p), Some(t)) = (profile.as_mut(), started) {
                    let e = p.entry(node.op_name.clone()).or_default();
                    e.0 += 1;
                    e.1 += t.elapsed().as_secs_f64() * 1e3;
                }
                out
            };
            if let Some((_, metas)) = keep.as_mut() {
                metas[i] = Some(ValueMeta::of(&out));
            }
            values[i] = Some(out);
            for &(j, _) in &node.inputs {
                remaining[j] -= 1;
                let kept = keep.as_ref().is_some_and(|(k, _)| k[j]);
                if remaining[j] == 0 && self.nodes[j].op != Op::Const && !kept {
                    values[j] = None;
                }
            }
        }
        if let Some(p) = profile {
            print_profile(
                &self.file,
                "op by op",
                p.iter().map(|(k, v)| (k.as_str(), *v)),
            );
        }
        Ok(values)
    }

    /// The packed constant right operand of a `MatMul` without transposes (see
    /// [`pack_conv_filters`]).
    pub(crate) fn packed_operand(&self, node: &GNode) -> Option<&PackedFilter> {
        if !matches!(
            node.op,
            Op::MatMul {
                ta: false,
                tb: false,
                ..
            }
        ) {
            return None;
        }
        match node.inputs.get(1)? {
            &(b, 0) => self.nodes[b].packed_filter.as_ref(),
            _ => None,
        }
    }

    /// The output shape of a convolution on `args` without running it (`None` for other ops,
    /// or where the shapes do not fit: the convolution then reports it).
    fn conv_shape(&self, node: &GNode, args: &[&Tensor]) -> Option<Vec<usize>> {
        let Op::Conv {
            depthwise, geom, ..
        } = &node.op
        else {
            return None;
        };
        let x = <[usize; 4]>::try_from(args.first()?.shape()).ok()?;
        let out = if *depthwise {
            let w = <[usize; 4]>::try_from(args.get(1)?.shape()).ok()?;
            conv_nhwc::depthwise_conv2d_nhwc_dims(x, w, *geom).ok()?
        } else {
            let &(f, _) = node.inputs.get(1)?;
            let filter = self.nodes[f].packed_filter.as_ref()?;
            conv_nhwc::conv2d_nhwc_plan(x, filter, *geom).ok()?.out
        };
        Some(out.to_vec())
    }

    fn exec(&self, node: &GNode, a: &[&Tensor]) -> OpResult<Vec<Tensor>> {
        let arg = |i: usize| -> OpResult<&Tensor> {
            a.get(i).copied().ok_or_else(|| {
                OpError::new(format!(
                    "expects at least {} inputs, has {}",
                    i + 1,
                    a.len()
                ))
            })
        };
        let one = |t: Tensor| Ok(vec![t]);
        match &node.op {
            Op::Const => match &node.value {
                Some(v) => one(v.clone()),
                None => op_err!("constant without a value"),
            },
            Op::Placeholder => op_err!("placeholder was not fed"),
            Op::Identity => one(arg(0)?.clone()),
            Op::Conv {
                depthwise,
                geom,
                bias,
                act,
            } => {
                let b = if *bias {
                    Some(ops::f32s(arg(2)?)?)
                } else {
                    None
                };
                let alpha_idx = if *bias { 3 } else { 2 };
                let alpha = if *act == Act::Prelu {
                    Some(ops::f32s(arg(alpha_idx)?)?)
                } else {
                    None
                };
                if *depthwise {
                    one(ops::depthwise_conv2d_nhwc(
                        arg(0)?,
                        arg(1)?,
                        b,
                        *geom,
                        *act,
                        alpha,
                    )?)
                } else if let Some(f) = node
                    .inputs
                    .get(1)
                    .and_then(|&(f, _)| self.nodes[f].packed_filter.as_ref())
                {
                    one(ops::conv2d_nhwc_packed(arg(0)?, f, b, *geom, *act, alpha)?)
                } else {
                    one(ops::conv2d_nhwc(arg(0)?, arg(1)?, b, *geom, *act, alpha)?)
                }
            }
            Op::ConvTranspose { strides, padding } => {
                let shape = ops::int_values(arg(0)?)?;
                one(ops::conv2d_transpose_nhwc(
                    &shape,
                    arg(1)?,
                    arg(2)?,
                    *strides,
                    *padding,
                )?)
            }
            Op::MatMul { ta, tb, bias, act } => {
                let b = if *bias {
                    Some(ops::f32s(arg(2)?)?)
                } else {
                    None
                };
                let alpha_idx = if *bias { 3 } else { 2 };
                let alpha = if *act == Act::Prelu {
                    Some(ops::f32s(arg(alpha_idx)?)?)
                } else {
                    None
                };
                match self.packed_operand(node) {
                    Some(packed) => one(ops::matmul_packed(arg(0)?, packed, b, *act, alpha)?),
                    None => one(ops::matmul(arg(0)?, arg(1)?, *ta, *tb, b, *act, alpha)?),
                }
            }
            Op::Binary(b) => one(ops::binary(*b, arg(0)?, arg(1)?)?),
            Op::BiasAdd => one(ops::binary(BinOp::Add, arg(0)?, arg(1)?)?),
            Op::AddN => one(ops::add_n(a)?),
            Op::Unary(u) => one(ops::unary(*u, arg(0)?)?),
            Op::Prelu => one(ops::prelu(arg(0)?, arg(1)?)?),
            Op::Pool { max, k, s, padding } => {
                one(ops::pool2d_nhwc(arg(0)?, *k, *s, *padding, *max)?)
            }
            Op::Reduce { kind, keep } => {
                let axes = ops::int_values(arg(1)?)?;
                one(ops::reduce(arg(0)?, &axes, *keep, *kind)?)
            }
            Op::Softmax => one(ops::softmax(arg(0)?)?),
            Op::ArgMax => {
                let axis = scalar_int(arg(1)?)?;
                one(ops::argmax(arg(0)?, axis)?)
            }
            Op::TopK => {
                let k = scalar_int(arg(1)?)?;
                let (v, i) = ops::top_k(arg(0)?, k)?;
                Ok(vec![v, i])
            }
            Op::Resize {
                align_corners,
                half_pixel,
            } => {
                let size = ops::int_values(arg(1)?)?;
                let [h, w] = size[..] else {
                    return op_err!("size must have 2 values, got {size:?}");
                };
                if h <= 0 || w <= 0 {
                    return op_err!("size {size:?} must be positive");
                }
                one(ops::resize_bilinear_nhwc(
                    arg(0)?,
                    h as usize,
                    w as usize,
                    *align_corners,
                    *half_pixel,
                )?)
            }
            Op::Concat => {
                let Some((axis_t, xs)) = a.split_last() else {
                    return op_err!("needs inputs");
                };
                one(ops::concat(xs, scalar_int(axis_t)?)?)
            }
            Op::SplitV => {
                let sizes = ops::int_values(arg(1)?)?;
                Ok(ops::split(arg(0)?, &sizes, scalar_int(arg(2)?)?)?)
            }
            Op::Unpack { axis } => ops::unpack(arg(0)?, *axis),
            Op::Pack { axis } => one(ops::pack(a, *axis)?),
            Op::Reshape => {
                let shape = ops::int_values(arg(1)?)?;
                one(ops::reshape(arg(0)?, &shape)?)
            }
            Op::ExpandDims => {
                let x = arg(0)?;
                let ax = ops::norm_axis(scalar_int(arg(1)?)?, x.ndim() + 1)?;
                let mut s = x.shape().to_vec();
                s.insert(ax, 1);
                one(x.reshape(&s)?)
            }
            Op::Squeeze { dims } => {
                let x = arg(0)?;
                let r = x.ndim();
                let drop: Vec<usize> = if dims.is_empty() {
                    (0..r).filter(|&d| x.shape()[d] == 1).collect()
                } else {
                    dims.iter()
                        .map(|&d| ops::norm_axis(d, r))
                        .collect::<OpResult<_>>()?
                };
                for &d in &drop {
                    if x.shape()[d] != 1 {
                        return op_err!("cannot squeeze dimension {d} of {:?}", x.shape());
                    }
                }
                let s: Vec<usize> = (0..r)
                    .filter(|d| !drop.contains(d))
                    .map(|d| x.shape()[d])
                    .collect();
                one(x.reshape(&s)?)
            }
            Op::Transpose => one(ops::transpose(arg(0)?, &ops::int_values(arg(1)?)?)?),
            Op::Pad { v2 } => {
                let pads = ops::int_values(arg(1)?)?;
                let value = if *v2 {
                    ops::f32s(arg(2)?)
                        .ok()
                        .and_then(|v| v.first().copied())
                        .unwrap_or(0.0)
                } else {
                    0.0
                };
                one(ops::pad(arg(0)?, &pads, value)?)
            }
            Op::StridedSlice(m) => {
                let (b, e, s) = (
                    ops::int_values(arg(1)?)?,
                    ops::int_values(arg(2)?)?,
                    ops::int_values(arg(3)?)?,
                );
                one(ops::strided_slice(arg(0)?, &b, &e, &s, *m)?)
            }
            Op::Gather => {
                let axis = if a.len() > 2 { scalar_int(arg(2)?)? } else { 0 };
                one(ops::gather(arg(0)?, arg(1)?, axis)?)
            }
            Op::GatherNd => one(ops::gather_nd(arg(0)?, arg(1)?)?),
            Op::Cast(to) => one(ops::cast(arg(0)?, *to)?),
            Op::SparseToDense => {
                let shape = ops::int_values(arg(1)?)?;
                one(ops::sparse_to_dense(arg(0)?, &shape, arg(2)?, arg(3)?)?)
            }
            Op::Shape => {
                let s: Vec<i32> = arg(0)?.shape().iter().map(|&d| d as i32).collect();
                one(Tensor::from_vec(&[s.len()], s)?)
            }
        }
    }
}

fn scalar_int(t: &Tensor) -> OpResult<i64> {
    let v = ops::int_values(t)?;
    match v[..] {
        [x] => Ok(x),
        _ => op_err!("expected a scalar integer, got {}", t.describe()),
    }
}

/// Prints `GRAPH_MODEL_PROFILE`'s table: per op type, the count and the milliseconds.
pub(crate) fn print_profile<'a>(
    file: &Path,
    how: &str,
    rows: impl Iterator<Item = (&'a str, (u32, f64))>,
) {
    let mut rows: Vec<_> = rows.collect();
    rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    let total: f64 = rows.iter().map(|r| r.1 .1).sum();
    eprintln!("{} ({how}): {total:.2} ms in ops", file.display());
    for (op, (count, ms)) in rows {
        eprintln!("  {op:<24} {count:>5} x  {ms:>8.2} ms");
    }
}

/// Whether `GRAPH_MODEL_PROFILE` asks for per-op timings (read once).
pub(crate) fn profiling() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("GRAPH_MODEL_PROFILE").is_some_and(|v| v != "0"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ModelFile, NodeDef};

    fn node(name: &str, op: &str, inputs: &[&str]) -> NodeDef {
        NodeDef {
            name: name.into(),
            op: op.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            attr: Default::default(),
        }
    }

    fn graph(nodes: Vec<NodeDef>) -> GraphModel {
        let w: Vec<f32> = (0..2 * 2 * 3 * 4)
            .map(|i| ((i * 7) % 11) as f32 * 0.1 - 0.5)
            .collect();
        let mut weights = HashMap::new();
        weights.insert("w".to_string(), Tensor::from_vec(&[2, 2, 3, 4], w).unwrap());
        let b = vec![0.3f32, -2.0, 0.1, -0.7];
        weights.insert("b".to_string(), Tensor::from_vec(&[1, 4], b).unwrap());
        // Hard swish's constants.
        weights.insert("sixth".to_string(), Tensor::scalar(1f32 / 6.0));
        weights.insert("three".to_string(), Tensor::scalar(3f32));
        weights.insert("zero".to_string(), Tensor::scalar(0i32));
        model_of(nodes, weights)
    }

    /// A graph of `nodes` with `weights` (the constants' values), as `test.json`.
    fn model_of(nodes: Vec<NodeDef>, weights: HashMap<String, Tensor>) -> GraphModel {
        GraphModel::from_model(ModelFile {
            path: "test.json".into(),
            nodes,
            weights,
            signature_inputs: vec![],
            signature_outputs: vec![],
        })
        .unwrap()
    }

    fn op_of<'a>(g: &'a GraphModel, name: &str) -> &'a str {
        g.ops().find(|(n, _)| *n == name).unwrap().1
    }

    /// `Relu(Add(b, Conv2D(x, w)))` runs as one convolution with bias and activation, with the
    /// results of the separate ops bit for bit; every node keeps its own value by name.
    #[test]
    fn conv_bias_and_activation_fuse_with_identical_results() {
        let nodes = |extra: bool| {
            let mut v = vec![
                node("x", "Placeholder", &[]),
                node("w", "Const", &[]),
                node("b", "Const", &[]),
                node("conv", "Conv2D", &["x", "w"]),
                node("add", "AddV2", &["b", "conv"]),
                node("relu", "Relu", &["add"]),
            ];
            if extra {
                // A second reader of the convolution: fusing would compute it twice.
                v.push(node("other", "Neg", &["conv"]));
            }
            v
        };
        let g = graph(nodes(false));
        assert_eq!(op_of(&g, "add"), "Conv2D+AddV2");
        assert_eq!(op_of(&g, "relu"), "Conv2D+AddV2+Relu");
        assert_eq!(g.default_outputs(), ["relu"]);
        let x: Vec<f32> = (0..5 * 6 * 3)
            .map(|i| ((i * 13) % 17) as f32 * 0.2 - 1.5)
            .collect();
        let x = Tensor::from_vec(&[1, 5, 6, 3], x).unwrap();
        let names = ["conv", "add", "relu"].map(String::from);
        let out = g.run(std::slice::from_ref(&x), &names).unwrap();
        let conv = out[0].as_slice::<f32>().unwrap();
        let b = [0.3f32, -2.0, 0.1, -0.7];
        let add: Vec<f32> = conv.iter().enumerate().map(|(i, v)| b[i % 4] + v).collect();
        let relu: Vec<f32> = add.iter().map(|v| v.max(0.0)).collect();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(out[1].as_slice::<f32>().unwrap()), bits(&add));
        assert_eq!(bits(out[2].as_slice::<f32>().unwrap()), bits(&relu));
        assert!(relu.contains(&0.0) && relu.iter().any(|&v| v > 0.0));
        // The default output alone (the fused path only) gives the same values.
        let alone = g.run(std::slice::from_ref(&x), &[]).unwrap();
        assert_eq!(bits(alone[0].as_slice::<f32>().unwrap()), bits(&relu));

        let g = graph(nodes(true));
        assert_eq!(op_of(&g, "add"), "AddV2");
        assert_eq!(op_of(&g, "relu"), "Relu");
    }

    /// A placeholder `x` of `dims` (-1: any size).
    /// Planned and op-by-op runs must agree on the bits of every value.
    use crate::ops_cpu::f32_bits as bits;

    fn placeholder(dims: &[i64]) -> NodeDef {
        let mut n = node("x", "Placeholder", &[]);
        let dim: Vec<Json> = dims
            .iter()
            .map(|d| serde_json::json!({ "size": d.to_string() }))
            .collect();
        n.attr.insert(
            "shape".into(),
            serde_json::json!({ "shape": { "dim": dim } }),
        );
        n
    }

    /// A graph with a static input plans; its planned runs give the op-by-op bits, and values
    /// alive at the same time never share memory while dead ones do.
    #[test]
    fn planned_runs_equal_op_by_op_runs() {
        let g = graph(vec![
            placeholder(&[-1, 5, 6, 3]),
            node("w", "Const", &[]),
            node("b", "Const", &[]),
            node("conv", "Conv2D", &["x", "w"]),
            node("add", "AddV2", &["b", "conv"]),
            node("relu", "Relu", &["add"]),
            node("sig", "Sigmoid", &["relu"]),
            node("neg", "Neg", &["relu"]),
            node("sum", "AddV2", &["sig", "neg"]),
            node("view", "Identity", &["sum"]),
            node("out", "Mul", &["view", "relu"]),
        ]);
        let summary = g.plan_status().unwrap();
        assert_eq!(summary.steps, 5, "conv+bias+relu, sigmoid, neg, add, mul");
        let plan = g.plan.as_ref().unwrap();
        plan.check_memory_plan().unwrap();
        let x: Vec<f32> = (0..5 * 6 * 3)
            .map(|i| ((i * 13) % 17) as f32 * 0.2 - 1.5)
            .collect();
        let x = Tensor::from_vec(&[1, 5, 6, 3], x).unwrap();
        let planned = g.run(std::slice::from_ref(&x), &[]).unwrap();
        let op_by_op = g.run_op_by_op(std::slice::from_ref(&x), &[]).unwrap();
        assert_eq!(planned[0].shape(), op_by_op[0].shape());
        assert_eq!(bits(&planned[0]), bits(&op_by_op[0]));
        // The arena reuses dead values' memory: five values of 80 floats, at most four alive
        // at once (sig, neg, relu and sum), take four places; then the im2col scratch of the
        // 2x2 convolution (4 rows x 5 pixels x 12 taps).
        assert_eq!(
            summary.arena_bytes,
            (4 * 80 + 4 * 5 * 12) * 4,
            "{summary:?}"
        );
        // Output buffers of the wrong size, or inputs of another shape, are errors of
        // `run_into` that name the model.
        let shapes = g.planned_output_shapes().unwrap();
        assert_eq!(shapes, [vec![1, 4, 5, 4]]);
        let mut small = [0f32; 3];
        let e = g
            .run_into(std::slice::from_ref(&x), &mut [&mut small[..]])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("test.json") && e.contains("output buffers"),
            "{e}"
        );
        let mut buf = vec![0f32; 80];
        let x2 = Tensor::from_vec(&[2, 5, 6, 3], vec![0.5f32; 180]).unwrap();
        let e = g
            .run_into(&[x2], &mut [&mut buf[..]])
            .unwrap_err()
            .to_string();
        assert!(e.contains("planned shapes"), "{e}");
        g.run_into(std::slice::from_ref(&x), &mut [&mut buf[..]])
            .unwrap();
        assert_eq!(
            buf.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            bits(&op_by_op[0])
        );
        // Another batch size is not the planned shape: it runs op by op, still correctly.
        let x2 = Tensor::from_vec(&[2, 5, 6, 3], vec![0.5f32; 180]).unwrap();
        assert_eq!(g.run(&[x2], &[]).unwrap()[0].shape(), [2, 4, 5, 4]);
        // So do other outputs than the planned ones, until they are planned.
        let mut g = g;
        let sig = ["sig".to_string()];
        assert!(!g
            .plan
            .as_ref()
            .unwrap()
            .serves(&sig, std::slice::from_ref(&x)));
        g.plan_outputs(&sig);
        assert!(g
            .plan
            .as_ref()
            .unwrap()
            .serves(&sig, std::slice::from_ref(&x)));
        let planned = g.run(std::slice::from_ref(&x), &sig).unwrap();
        let op_by_op = g.run_op_by_op(std::slice::from_ref(&x), &sig).unwrap();
        assert_eq!(bits(&planned[0]), bits(&op_by_op[0]));
    }

    /// A depthwise convolution and the 1x1 convolution that alone reads it, with a 2 MB image
    /// between them, run as one banded step with the op-by-op bits; one that also adds that
    /// image as its residual stays apart (the image must then be written). A comparison that
    /// only a cast to float32 reads is planned, so nothing runs op by op after the plan.
    #[test]
    fn projections_band_with_their_depthwise_convolutions() {
        let (h, w, c) = (128usize, 128usize, 32usize);
        let values = |n: usize, k: usize| -> Vec<f32> {
            (0..n).map(|i| ((i * k) % 23) as f32 * 0.05 - 0.5).collect()
        };
        let attr = |mut n: NodeDef, key: &str, v: serde_json::Value| {
            n.attr.insert(key.into(), v);
            n
        };
        let same = serde_json::json!({ "s": "U0FNRQ==" });
        let model = |residual: bool| {
            let mut nodes = vec![
                placeholder(&[1, h as i64, w as i64, c as i64]),
                node("dw_w", "Const", &[]),
                node("pw_w", "Const", &[]),
                attr(
                    node("dw", "DepthwiseConv2dNative", &["x", "dw_w"]),
                    "padding",
                    same.clone(),
                ),
                node("pw", "Conv2D", &["dw", "pw_w"]),
            ];
            let last = if residual {
                nodes.push(node("sum", "AddV2", &["pw", "dw"]));
                "sum"
            } else {
                "pw"
            };
            let ones = serde_json::json!({ "list": { "i": ["1", "3", "3", "1"] } });
            let pool = attr(node("pool", "MaxPool", &[last]), "ksize", ones);
            let pool = attr(
                attr(
                    pool,
                    "strides",
                    serde_json::json!({ "list": { "i": ["1", "1", "1", "1"] } }),
                ),
                "padding",
                same.clone(),
            );
            nodes.extend([
                pool,
                node("peak", "Equal", &[last, "pool"]),
                attr(
                    node("keep", "Cast", &["peak"]),
                    "DstT",
                    serde_json::json!({ "type": "DT_FLOAT" }),
                ),
                node("out", "Mul", &[last, "keep"]),
            ]);
            let mut weights = HashMap::new();
            weights.insert(
                "dw_w".to_string(),
                Tensor::from_vec(&[3, 3, c, 1], values(9 * c, 7)).unwrap(),
            );
            weights.insert(
                "pw_w".to_string(),
                Tensor::from_vec(&[1, 1, c, c], values(c * c, 11)).unwrap(),
            );
            model_of(nodes, weights)
        };
        let x = Tensor::from_vec(&[1, h, w, c], values(h * w * c, 13)).unwrap();
        for residual in [false, true] {
            let g = model(residual);
            let summary = g.plan_status().unwrap();
            // Banded: the depthwise and 1x1 convolutions in one step, then the pool, the
            // comparison and the product; apart, one more.
            let steps = if residual { 5 } else { 4 };
            assert_eq!((summary.steps, summary.tail_ops), (steps, 0), "{summary:?}");
            let planned = g.run(std::slice::from_ref(&x), &[]).unwrap();
            let op_by_op = g.run_op_by_op(std::slice::from_ref(&x), &[]).unwrap();
            assert_eq!(bits(&planned[0]), bits(&op_by_op[0]), "residual {residual}");
        }
    }

    /// Two branches of small convolutions from one input (two outputs), loaded with two
    /// threads, run as a fork (two lanes at once) with the op-by-op bits, on two threads and on one; loaded
    /// with one thread, the plan has no fork.
    #[test]
    fn branches_of_small_steps_run_as_two_lanes() {
        let c = 64usize;
        let values = |n: usize, k: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * k) % 29) as f32 * 0.01 - 0.14)
                .collect()
        };
        let model = || {
            let mut weights = HashMap::new();
            // Branch `a` widens to 2c channels and back, `b` keeps c.
            for (name, k, cin, cout) in [
                ("a1", 3, c, 2 * c),
                ("a2", 5, 2 * c, c),
                ("b1", 7, c, c),
                ("b2", 11, c, c),
            ] {
                let w = Tensor::from_vec(&[1, 1, cin, cout], values(cin * cout, k)).unwrap();
                weights.insert(name.to_string(), w);
            }
            let mut nodes = vec![placeholder(&[1, 8, 8, c as i64])];
            for name in ["a1", "a2", "b1", "b2"] {
                nodes.push(node(name, "Const", &[]));
            }
            nodes.extend([
                node("ca1", "Conv2D", &["x", "a1"]),
                node("ra1", "Relu", &["ca1"]),
                node("ca2", "Conv2D", &["ra1", "a2"]),
                node("cb1", "Conv2D", &["x", "b1"]),
                node("cb2", "Conv2D", &["cb1", "b2"]),
            ]);
            model_of(nodes, weights)
        };
        let pool = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
        };
        let x = Tensor::from_vec(&[1, 8, 8, c], values(64 * c, 13)).unwrap();
        let g = pool(2).install(model);
        let summary = g.plan_status().unwrap();
        assert_eq!((summary.steps, summary.forked_steps), (4, 4), "{summary:?}");
        g.plan.as_ref().unwrap().check_memory_plan().unwrap();
        let op_by_op = g.run_op_by_op(std::slice::from_ref(&x), &[]).unwrap();
        assert_eq!(op_by_op.len(), 2);
        for threads in [2, 1] {
            let planned = pool(threads)
                .install(|| g.run(std::slice::from_ref(&x), &[]))
                .unwrap();
            for (p, o) in planned.iter().zip(&op_by_op) {
                assert_eq!(bits(p), bits(o), "{threads} threads");
            }
        }
        let g = pool(1).install(model);
        assert_eq!(g.plan_status().unwrap().forked_steps, 0);
    }

    /// A hard swish after a convolution (four ops) runs in the convolution's epilogue, with
    /// the separate ops' bits; with another reader of the convolution it stays apart.
    #[test]
    fn hard_swish_fuses_into_the_convolution() {
        let nodes = |extra_reader: bool| {
            let mut v = vec![
                placeholder(&[1, 5, 6, 3]),
                node("w", "Const", &[]),
                node("sixth", "Const", &[]),
                node("three", "Const", &[]),
                node("conv", "Conv2D", &["x", "w"]),
                node("m", "Mul", &["sixth", "conv"]),
                node("a", "AddV2", &["conv", "three"]),
                node("r", "Relu6", &["a"]),
                node("y", "Mul", &["m", "r"]),
            ];
            if extra_reader {
                v.push(node("z", "Neg", &["conv"]));
                v.push(node("out", "AddV2", &["y", "z"]));
            }
            v
        };
        let x = Tensor::from_vec(
            &[1, 5, 6, 3],
            (0..90)
                .map(|i| ((i * 37) % 19) as f32 * 0.7 - 6.0)
                .collect(),
        )
        .unwrap();
        for (extra, steps) in [(false, 1), (true, 7)] {
            let g = graph(nodes(extra));
            assert_eq!(
                g.plan_status().unwrap().steps,
                steps,
                "extra reader: {extra}"
            );
            let planned = g.run(std::slice::from_ref(&x), &[]).unwrap();
            let op_by_op = g.run_op_by_op(std::slice::from_ref(&x), &[]).unwrap();
            assert_eq!(bits(&planned[0]), bits(&op_by_op[0]));
            let v = op_by_op[0].as_slice::<f32>().unwrap();
            // Both sides of the swish's bends are exercised.
            assert!(v.contains(&0.0) && v.iter().any(|&v| v > 1.0));
        }
    }

    /// An int32 input is planned through its cast to float32 (and a batch `Unpack` as a view),
    /// with the op-by-op values.
    #[test]
    fn int32_inputs_are_cast_by_the_plan() {
        let mut x = placeholder(&[1, 5, 6, 3]);
        x.attr
            .insert("dtype".into(), serde_json::json!({ "type": "DT_INT32" }));
        let mut cast = node("cast", "Cast", &["x"]);
        cast.attr
            .insert("DstT".into(), serde_json::json!({ "type": "DT_FLOAT" }));
        let mut unpack = node("image", "Unpack", &["cast"]);
        unpack
            .attr
            .insert("axis".into(), serde_json::json!({ "i": "0" }));
        unpack
            .attr
            .insert("num".into(), serde_json::json!({ "i": "1" }));
        let g = graph(vec![
            x,
            cast,
            unpack,
            node("zero", "Const", &[]),
            node("batch", "ExpandDims", &["image", "zero"]),
            node("w", "Const", &[]),
            node("conv", "Conv2D", &["batch", "w"]),
        ]);
        let summary = g.plan_status().unwrap();
        assert_eq!((summary.steps, summary.tail_ops), (2, 0), "{summary:?}");
        let x = Tensor::from_vec(&[1, 5, 6, 3], (0..90).map(|i| i * 3 - 100).collect()).unwrap();
        let planned = g.run(std::slice::from_ref(&x), &[]).unwrap();
        let op_by_op = g.run_op_by_op(std::slice::from_ref(&x), &[]).unwrap();
        assert_eq!(
            planned[0].as_slice::<f32>().unwrap(),
            op_by_op[0].as_slice::<f32>().unwrap()
        );
        // A float input is not the planned one: an error that says so, before any work.
        let xf = Tensor::from_vec(&[1, 5, 6, 3], vec![0f32; 90]).unwrap();
        assert!(g.run(&[xf], &[]).is_err());
    }

    #[test]
    fn unplannable_graphs_and_memory_limits_are_reported() {
        let nodes = |dims: &[i64]| {
            vec![
                placeholder(dims),
                node("w", "Const", &[]),
                node("conv", "Conv2D", &["x", "w"]),
            ]
        };
        let g = graph(nodes(&[1, -1, -1, 3]));
        assert!(
            matches!(g.plan_status(), Err(NoPlan::DynamicShape(why)) if why.contains("\"x\"")),
            "{:?}",
            g.plan_status()
        );
        let g = graph(nodes(&[1, 5, 6, 3]));
        let bytes = g.plan_status().unwrap().arena_bytes;
        g.check_memory_limit(bytes).unwrap();
        let e = g.check_memory_limit(bytes - 1).unwrap_err().to_string();
        assert!(e.contains("test.json") && e.contains("MiB"), "{e}");
        // An op without a planned kernel after the steps runs op by op, in the plan's tail,
        // with the op-by-op values; so does what reads it.
        let mut v = nodes(&[1, 5, 6, 3]);
        v.push(node("soft", "Softmax", &["conv"]));
        v.push(node("r", "Relu", &["soft"]));
        let mut g = graph(v);
        // "r" twice: each request of a tail value gets it.
        let outs = ["r".to_string(), "conv".to_string(), "r".to_string()];
        g.plan_outputs(&outs);
        let summary = g.plan_status().unwrap();
        assert_eq!((summary.steps, summary.tail_ops), (1, 2), "{summary:?}");
        let x = Tensor::from_vec(&[1, 5, 6, 3], (0..90).map(|i| i as f32 * 0.1).collect()).unwrap();
        let planned = g.run(std::slice::from_ref(&x), &outs).unwrap();
        let op_by_op = g.run_op_by_op(std::slice::from_ref(&x), &outs).unwrap();
        assert_eq!(planned.len(), 3);
        for (p, o) in planned.iter().zip(&op_by_op) {
            assert_eq!(bits(p), bits(o));
        }
        let shapes = g.planned_output_shapes().unwrap();
        let mut bufs: Vec<Vec<f32>> = shapes
            .iter()
            .map(|s| vec![0f32; s.iter().product()])
            .collect();
        let mut views: Vec<&mut [f32]> = bufs.iter_mut().map(Vec::as_mut_slice).collect();
        g.run_into(std::slice::from_ref(&x), &mut views).unwrap();
        for k in [0, 2] {
            assert_eq!(
                bufs[k].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                bits(&op_by_op[k])
            );
        }
        // An op without a planned kernel before any step names itself.
        let mut v = nodes(&[1, 5, 6, 3]);
        v.push(node("soft", "Softmax", &["x"]));
        v[2] = node("conv", "Conv2D", &["soft", "w"]);
        let g = graph(v);
        assert!(
            matches!(g.plan_status(), Err(NoPlan::Unsupported(why)) if why.contains("Softmax")),
            "{:?}",
            g.plan_status()
        );
    }
}
