//! TensorFlow.js graph models (`model.json` + binary weight shards, as produced by
//! `tensorflowjs_converter`) as pipeline nodes. Built as a plugin library
//! (`libplugin_graph_model.so`) that the engine finds on its plugin path.
//!
//! - [`model`] reads `model.json` and the shards (sizes checked; uint8/uint16/float16
//!   weights dequantised at load);
//! - [`graph`] builds an executable graph: every op is checked at load, nodes run in
//!   topological order on the CPU ([`ops_cpu`], NHWC like TF);
//! - [`preprocess`] turns an `image` into the model's input as TF.js would;
//! - the node kind `graph_model` (see [`kinds`]) ties them together;
//! - [`tasks`]: task nodes (`movenet`, `centernet`, `blazeface`, `facemesh`,
//!   `person_segmentation`) that run one model each and decode its outputs into `instances` /
//!   `semantic` as `@vladmandic/human` does.
//!
//! Output convention of `graph_model`: one output port `outputs` of kind `tensor`. Its value
//! holds the first requested output as `tensor` (the kind's main tensor) and **every**
//! requested output under its own name (e.g. `Identity:0`, `tower_0/wh`), in the order of
//! the `outputs` parameter (default: the model's signature outputs, or the graph's sinks).

pub mod error;
pub mod graph;
pub mod model;
pub mod ops_cpu;
pub mod plan;
pub mod preprocess;
pub mod tasks;

use std::path::Path;

use plugin_sdk::{
    DType, FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Tensor, Value,
};

pub use error::GraphModelError;
pub use graph::{GraphModel, InputInfo, PlanSummary};
pub use plan::NoPlan;
pub use preprocess::Preprocess;

vision_common::family_library!(name: "graph_model", kinds: kinds);

/// The node kinds of this crate.
pub fn kinds() -> Vec<NodeKind> {
    vec![
        graph_model_kind(),
        tasks::movenet::kind(),
        tasks::centernet::kind(),
        tasks::blazeface::kind(),
        tasks::facemesh::kind(),
        tasks::segmentation::kind(),
    ]
}

fn graph_model_kind() -> NodeKind {
    let spec = NodeSpec::new(
        "graph_model",
        "Runs a TensorFlow.js graph model (model.json + weight shards) on each image, on the CPU",
    )
    .input(PortSpec::new("image", PortKind::Image, "the image, RGB").dtype(DType::U8).shape("H,W,3"))
    .output(PortSpec::new(
        "outputs",
        PortKind::Tensor,
        "the first requested output as \"tensor\", and every requested output under its graph name",
    ))
    .param(ParamSpec::required("model", ParamType::Path, "the model.json file; its weight shards are read from the same folder"))
    .param(ParamSpec::optional(
        "outputs",
        ParamType::StrList,
        ParamValue::StrList(Vec::new()),
        "tensors to return: signature keys, graph tensor names (\"Identity:0\") or intermediate node names; empty: the model's outputs",
    ))
    .param(ParamSpec::optional(
        "input_size",
        ParamType::IntList,
        ParamValue::IntList(Vec::new()),
        "[height, width] of the model input; empty: from the model's input shape",
    ))
    .param(ParamSpec::optional("scale", ParamType::Float, ParamValue::Float(1.0), "input normalisation: x * scale + offset, x in 0..255"))
    .param(ParamSpec::optional("offset", ParamType::Float, ParamValue::Float(0.0), "input normalisation offset (after scale)"))
    .param(ParamSpec::optional(
        "dtype",
        ParamType::Str,
        ParamValue::Str("auto".into()),
        "input dtype: \"auto\" (the model's), \"float32\" or \"int32\" (truncated, as tf.cast)",
    ))
    .param(ParamSpec::optional(
        "layout",
        ParamType::Str,
        ParamValue::Str("auto".into()),
        "input layout: \"auto\" (NCHW when the model's input is [1, 3, H, W]), \"nhwc\" or \"nchw\"",
    ))
    .param(ParamSpec::optional(
        "align_corners",
        ParamType::Bool,
        ParamValue::Bool(false),
        "resize with align_corners (TF.js resizeBilinear; default false: the legacy mapping)",
    ))
    .param(ParamSpec::optional("half_pixel_centers", ParamType::Bool, ParamValue::Bool(false), "resize with half-pixel centres"))
    .param(ParamSpec::optional(
        "memory_limit_mb",
        ParamType::Float,
        ParamValue::Float(0.0),
        "the most memory (MiB) the compiled plan may take for the model's intermediate tensors; a model that needs more fails at load (0: no limit)",
    ))
    .param(ParamSpec::optional(
        "gray_weights",
        ParamType::FloatList,
        ParamValue::FloatList(vec![0.2989, 0.587, 0.114]),
        "RGB weights for models with one input channel",
    ));
    NodeKind::new(spec, |params| {
        Ok(Box::new(GraphModelNode::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `graph_model` node.
#[derive(Debug)]
pub struct GraphModelNode {
    model: GraphModel,
    outputs: Vec<String>,
    pre: Preprocess,
}

impl GraphModelNode {
    pub fn from_params(params: &Params) -> Result<GraphModelNode, NodeError> {
        let path = params.str("model")?;
        let mut model =
            GraphModel::load(Path::new(path)).map_err(|e| NodeError::new(e.to_string()))?;
        let mut outputs = params.str_list("outputs")?;
        if outputs.is_empty() {
            outputs = model.default_outputs().to_vec();
        }
        for o in &outputs {
            model
                .resolve(o)
                .map_err(|e| NodeError::new(e.to_string()))?;
        }
        model.plan_outputs(&outputs);
        let limit_mb = params.float("memory_limit_mb")?;
        if !(limit_mb.is_finite() && limit_mb >= 0.0) {
            return Err(NodeError::new(format!(
                "parameter \"memory_limit_mb\" must be a number >= 0 (0: no limit), got {limit_mb}"
            )));
        }
        if limit_mb > 0.0 {
            model
                .check_memory_limit((limit_mb * (1 << 20) as f64) as usize)
                .map_err(|e| NodeError::new(e.to_string()))?;
        }
        if let Err(NoPlan::DynamicShape(why)) = model.plan_status() {
            // Said once, when the pipeline is built: every frame will take the slower path.
            eprintln!(
                "note: {}: {why}, so the model runs op by op instead of from a compiled plan",
                model.file().display()
            );
        }
        let size = params.int_list("input_size")?;
        let dtype = match params.str("dtype")? {
            "auto" => None,
            "float32" => Some(DType::F32),
            "int32" => Some(DType::I32),
            other => {
                return Err(format!(
                "parameter \"dtype\" must be \"auto\", \"float32\" or \"int32\", got \"{other}\""
            )
                .into())
            }
        };
        let layout = params.str("layout")?.to_string();
        let gw = params.float_list("gray_weights")?;
        let gray_weights = match gw[..] {
            [r, g, b] => [r as f32, g as f32, b as f32],
            _ => {
                return Err(format!(
                    "parameter \"gray_weights\" must have 3 values, got {}",
                    gw.len()
                )
                .into())
            }
        };
        let pre = preprocess_for(
            &model,
            &size,
            dtype,
            &layout,
            params.float("scale")? as f32,
            params.float("offset")? as f32,
            params.bool("align_corners")?,
            params.bool("half_pixel_centers")?,
            gray_weights,
        )
        .map_err(|m| NodeError::new(format!("{}: {m}", model.file().display())))?;
        Ok(GraphModelNode {
            model,
            outputs,
            pre,
        })
    }

    pub fn model(&self) -> &GraphModel {
        &self.model
    }
}

/// The largest model input side, in pixels: a model or an `input_size` asking for more
/// would allocate gigabytes per frame.
pub const MAX_INPUT_SIDE: i64 = 16384;

/// Derives the pre-processing from the model's single input and the parameters.
#[allow(clippy::too_many_arguments)]
pub fn preprocess_for(
    model: &GraphModel,
    size: &[i64],
    dtype: Option<DType>,
    layout: &str,
    scale: f32,
    offset: f32,
    align_corners: bool,
    half_pixel_centers: bool,
    gray_weights: [f32; 3],
) -> Result<Preprocess, String> {
    let [input] = model.inputs() else {
        return Err(format!(
            "graph_model supports models with one input, this one has {}",
            model.inputs().len()
        ));
    };
    let s = &input.shape;
    if s.len() != 4 {
        return Err(format!(
            "input \"{}\" has shape {s:?}; graph_model needs a rank-4 image input",
            input.name
        ));
    }
    let nchw = match layout {
        "nchw" => true,
        "nhwc" => false,
        "auto" => s[1] == 3 && s[3] != 3 && s[3] != 1,
        other => {
            return Err(format!(
                "parameter \"layout\" must be \"auto\", \"nhwc\" or \"nchw\", got \"{other}\""
            ))
        }
    };
    let (h, w, c) = if nchw {
        (s[2], s[3], s[1])
    } else {
        (s[1], s[2], s[3])
    };
    let (h, w) = match size {
        [] => (h, w),
        [sh, sw] => (*sh, *sw),
        _ => {
            return Err(format!(
                "parameter \"input_size\" must be [height, width], got {size:?}"
            ))
        }
    };
    if h <= 0 || w <= 0 {
        return Err(format!(
            "input \"{}\" has no fixed size ({s:?}); set input_size = [height, width]",
            input.name
        ));
    }
    if h > MAX_INPUT_SIDE || w > MAX_INPUT_SIDE {
        return Err(format!(
            "input \"{}\" of {h}x{w} pixels exceeds the limit of {MAX_INPUT_SIDE} pixels per side (every frame allocates it); set a smaller input_size",
            input.name
        ));
    }
    if c != 1 && c != 3 && c != -1 {
        return Err(format!(
            "input \"{}\" has {c} channels; graph_model feeds 1 or 3",
            input.name
        ));
    }
    Ok(Preprocess {
        height: h as usize,
        width: w as usize,
        channels: if c == 1 { 1 } else { 3 },
        nchw,
        dtype: dtype.unwrap_or(input.dtype),
        scale,
        offset,
        align_corners,
        half_pixel_centers,
        gray_weights,
    })
}

impl Node for GraphModelNode {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let image = inputs.value("image")?.tensor("image")?;
        let x = self.pre.apply(image).map_err(|e| {
            NodeError::new(format!(
                "{}: input \"{}\": {e}",
                self.model.file().display(),
                self.model
                    .inputs()
                    .first()
                    .map(|i| i.name.as_str())
                    .unwrap_or("?")
            ))
        })?;
        let outs = self
            .model
            .run(&[x], &self.outputs)
            .map_err(|e| NodeError::new(e.to_string()))?;
        Ok(Outputs::one("outputs", outputs_value(&self.outputs, outs)?))
    }
}

/// The `tensor` value of the convention above.
pub fn outputs_value(names: &[String], tensors: Vec<Tensor>) -> Result<Value, NodeError> {
    let Some(first) = tensors.first() else {
        return Err("the model returned no outputs".into());
    };
    let mut v = Value::single(first.clone());
    for (n, t) in names.iter().zip(tensors) {
        if n != "tensor" {
            v.insert(n, t);
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_declares_ports_and_params() {
        let k = kinds();
        assert_eq!(k[0].spec.kind, "graph_model");
        assert!(k[0].spec.find_input("image").is_some());
        assert!(k[0].spec.find_output("outputs").is_some());
        assert!(k[0].spec.params.iter().any(|p| p.name == "model"));
    }

    #[test]
    fn missing_model_is_a_clear_error() {
        let p = Params::new().with("model", ParamValue::Str("/nonexistent/model.json".into()));
        let mut full = p.clone();
        for spec in &kinds()[0].spec.params {
            if let Some(d) = &spec.default {
                full.set(&spec.name, d.clone());
            }
        }
        let e = (kinds()[0].create)(&full)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("/nonexistent/model.json") && e.contains("cannot read"),
            "{e}"
        );
    }
}
