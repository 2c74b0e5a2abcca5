//! From a parsed pipeline file to a checked graph: plugins resolved, parameters typed, every
//! edge connected port to port with matching contracts, no cycles. Everything that can be
//! known before the first frame is checked here, and all errors are reported at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kernels::{Device, DeviceError, DeviceRequest};
use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use plugin_sdk::{NodeKind, ParamType, ParamValue, Params, PortKind, PortSpec};

use crate::config::{self, At, OnError, PipelineConfig, Policy};
use crate::diag::{Diagnostic, Diagnostics, Origin, SourceFile};
use crate::registry::{Provider, Registry};

/// A node of a checked pipeline.
pub struct PipelineNode {
    pub name: String,
    pub kind: NodeKind,
    pub provider: Provider,
    pub params: Params,
    pub on_error: OnError,
    /// For each declared input port, the edge feeding it (None: an unconnected optional input).
    pub inputs: Vec<Option<usize>>,
    /// For each declared output port, the edges it feeds.
    pub outputs: Vec<Vec<usize>>,
    /// The kind each output port produces (pass-through `any` outputs resolved).
    pub output_kinds: Vec<PortKind>,
    pub origin: Origin,
}

impl PipelineNode {
    pub fn plugin(&self) -> &str {
        &self.kind.spec.kind
    }
}

/// An edge: one output port to one input port.
#[derive(Clone, Debug)]
pub struct Edge {
    pub from: usize,
    pub from_port: usize,
    pub to: usize,
    pub to_port: usize,
    pub capacity: usize,
    pub policy: Policy,
    pub kind: PortKind,
    pub origin: Origin,
}

/// A checked pipeline, ready to run.
pub struct Pipeline {
    pub name: String,
    pub device: Device,
    pub device_reason: &'static str,
    /// What `precision = "auto"` chose and why, where a node or `[pipeline]` asked for it.
    pub precision_reason: Option<&'static str>,
    pub nodes: Vec<PipelineNode>,
    pub edges: Vec<Edge>,
    /// Node indices in topological order (sources first).
    pub order: Vec<usize>,
    pub file: SourceFile,
}

impl Pipeline {
    /// "device cpu (why)", and "; precision auto: ..." where `auto` chose: the end of the
    /// header of `engine run` and `engine check`.
    pub fn device_and_precision(&self) -> String {
        let mut s = format!("device {} ({})", self.device, self.device_reason);
        if let Some(why) = self.precision_reason {
            s.push_str("; precision ");
            s.push_str(why);
        }
        s
    }

    /// "backbone.features -> fpn.features"
    pub fn edge_label(&self, e: &Edge) -> String {
        let from = &self.nodes[e.from];
        let to = &self.nodes[e.to];
        format!(
            "{}.{} -> {}.{}",
            from.name,
            from.kind.spec.outputs[e.from_port].name,
            to.name,
            to.kind.spec.inputs[e.to_port].name
        )
    }

    /// "instances f32[N,4]  (queue 4, block)"
    pub fn edge_contract(&self, e: &Edge) -> String {
        let out = &self.nodes[e.from].kind.spec.outputs[e.from_port];
        let inp = &self.nodes[e.to].kind.spec.inputs[e.to_port];
        let mut c = PortSpec {
            kind: e.kind,
            dtype: out.dtype.or(inp.dtype),
            shape: out.shape.clone().or_else(|| inp.shape.clone()),
            ..out.clone()
        }
        .contract();
        if !inp.required {
            c.push_str(", optional");
        }
        format!("{c}  (queue {}, {})", e.capacity, e.policy.name())
    }
}

/// Why a pipeline could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read pipeline file \"{path}\": {reason}")]
    Io { path: String, reason: String },
    #[error("{0}")]
    Invalid(Box<Diagnostics>),
}

/// Reads, checks and resolves a pipeline file. `sets` are `--set node.key=value` overrides.
pub fn load(path: &Path, sets: &[String], registry: &mut Registry) -> Result<Pipeline, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let file = SourceFile::new(path, text);
    let invalid = |file: SourceFile, items: Vec<Diagnostic>| {
        LoadError::Invalid(Box::new(Diagnostics { file, items }))
    };
    let mut config = match config::parse(&file.text) {
        Ok(c) => c,
        Err(items) => return Err(invalid(file, items)),
    };
    if let Err(items) = config::apply_overrides(&mut config, sets) {
        return Err(invalid(file, items));
    }
    if let Err(items) = config::substitute_vars(&mut config) {
        return Err(invalid(file, items));
    }
    if let Some(threads) = &config.threads {
        registry.set_threads(threads.value);
    }
    let mut errors = Vec::new();
    if let Some(p) = &config.precision {
        errors.extend(unsupported_precision(
            &ParamValue::Str(p.value.clone()),
            &p.origin,
        ));
    }
    for lib in &config.libraries {
        if let Err(e) = registry.load_library(Path::new(&lib.value)) {
            errors.push(Diagnostic::new(e.to_string(), lib.origin.clone()));
        }
    }
    if !errors.is_empty() {
        return Err(invalid(file, errors));
    }
    let pipeline_dirs: Vec<PathBuf> = config
        .plugin_path
        .iter()
        .map(|d| PathBuf::from(&d.value))
        .collect();
    if let Err(e) = registry.load_search_path(&pipeline_dirs) {
        return Err(invalid(
            file,
            vec![Diagnostic::new(e.to_string(), Origin::None).help(
                "`engine plugins` lists every kind with its library; ENGINE_PLUGIN_PATH, [plugins] path and the engine's own directory are searched",
            )],
        ));
    }
    match build(&config, registry) {
        Ok((nodes, edges, order)) => {
            let (device, device_reason) = match DeviceRequest::parse(&config.device.value)
                .and_then(|r| node_device(r, r.resolve()))
            {
                Ok(d) => d,
                Err(e) => {
                    return Err(invalid(
                        file,
                        vec![Diagnostic::new(e.to_string(), config.device.origin.clone())],
                    ))
                }
            };
            Ok(Pipeline {
                name: if config.name.is_empty() {
                    path.file_stem()
                        .map_or("pipeline".into(), |s| s.to_string_lossy().into_owned())
                } else {
                    config.name.clone()
                },
                device,
                device_reason,
                precision_reason: auto_precision_reason(&config),
                nodes,
                edges,
                order,
                file,
            })
        }
        Err(items) => Err(invalid(file, items)),
    }
}

type Built = (Vec<PipelineNode>, Vec<Edge>, Vec<usize>);

fn build(config: &PipelineConfig, registry: &Registry) -> Result<Built, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let index: HashMap<&str, usize> = config
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.value.as_str(), i))
        .collect();
    let node_names: Vec<&str> = config.nodes.iter().map(|n| n.name.value.as_str()).collect();

    // 1. Plugins and parameters.
    let mut kinds: Vec<Option<(NodeKind, Provider)>> = Vec::new();
    let mut params_of = Vec::new();
    for n in &config.nodes {
        let Some((kind, provider)) = registry.find(&n.plugin.value) else {
            errors.push(
                Diagnostic::new(
                    format!("node \"{}\": unknown plugin \"{}\"", n.name.value, n.plugin.value),
                    n.plugin.origin.clone(),
                )
                .suggest(&n.plugin.value, registry.names())
                .help_if_none("`engine plugins` lists the available kinds; the model families and other plugins are libraries on the plugin path: build the workspace (`cargo build --release`), or add their directory to ENGINE_PLUGIN_PATH or [plugins] path"),
            );
            kinds.push(None);
            params_of.push(Params::new());
            continue;
        };
        params_of.push(resolve_params(
            n,
            kind,
            config.precision.as_ref(),
            &mut errors,
        ));
        kinds.push(Some((kind.clone(), provider.clone())));
    }

    // 2. Edges.
    let mut edges: Vec<Edge> = Vec::new();
    let mut inputs_of: Vec<Vec<Option<usize>>> = kinds
        .iter()
        .map(|k| vec![None; k.as_ref().map_or(0, |(k, _)| k.spec.inputs.len())])
        .collect();
    for (to, n) in config.nodes.iter().enumerate() {
        let Some((kind, _)) = &kinds[to] else {
            continue;
        };
        for input in &n.inputs {
            let port_names: Vec<&str> = kind.spec.inputs.iter().map(|p| p.name.as_str()).collect();
            let Some(to_port) = port_names.iter().position(|p| *p == input.port.value) else {
                let d = if port_names.is_empty() {
                    Diagnostic::new(
                        format!(
                            "node \"{}\" (plugin {}) is a source and takes no inputs",
                            n.name.value, kind.spec.kind
                        ),
                        input.port.origin.clone(),
                    )
                } else {
                    Diagnostic::new(
                        format!(
                            "node \"{}\" (plugin {}) has no input port \"{}\"",
                            n.name.value, kind.spec.kind, input.port.value
                        ),
                        input.port.origin.clone(),
                    )
                    .suggest(&input.port.value, port_names.iter().copied())
                    .help_if_none(format!("its inputs are: {}", port_names.join(", ")))
                };
                errors.push(d);
                continue;
            };
            let Some((src_name, src_port)) = input.from.value.split_once('.') else {
                errors.push(
                    Diagnostic::new(
                        format!(
                            "input \"{}\" of node \"{}\": \"{}\" is not \"node.port\"",
                            input.port.value, n.name.value, input.from.value
                        ),
                        input.from.origin.clone(),
                    )
                    .help(
                        "name the producing node and its output port, e.g. \"backbone.features\"",
                    ),
                );
                continue;
            };
            let Some(&from) = index.get(src_name) else {
                errors.push(
                    Diagnostic::new(
                        format!(
                            "input \"{}\" of node \"{}\" refers to unknown node \"{src_name}\"",
                            input.port.value, n.name.value
                        ),
                        input.from.origin.clone(),
                    )
                    .suggest(src_name, node_names.iter().copied())
                    .help_if_none(format!("the nodes are: {}", node_names.join(", "))),
                );
                continue;
            };
            let Some((src_kind, _)) = &kinds[from] else {
                continue;
            };
            let out_names: Vec<&str> = src_kind
                .spec
                .outputs
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            let Some(from_port) = out_names.iter().position(|p| *p == src_port) else {
                let d = Diagnostic::new(
                    format!(
                        "node \"{src_name}\" (plugin {}) has no output port \"{src_port}\" (edge {}.{src_port} -> {}.{})",
                        src_kind.spec.kind, src_name, n.name.value, input.port.value
                    ),
                    input.from.origin.clone(),
                );
                errors.push(if out_names.is_empty() {
                    d.help(format!("\"{src_name}\" is a sink and has no outputs"))
                } else {
                    d.suggest(src_port, out_names.iter().copied())
                        .help_if_none(format!("its outputs are: {}", out_names.join(", ")))
                });
                continue;
            };
            if inputs_of[to][to_port].is_some() {
                errors.push(Diagnostic::new(
                    format!(
                        "input \"{}\" of node \"{}\" is connected twice",
                        input.port.value, n.name.value
                    ),
                    input.port.origin.clone(),
                ));
                continue;
            }
            inputs_of[to][to_port] = Some(edges.len());
            edges.push(Edge {
                from,
                from_port,
                to,
                to_port,
                capacity: input
                    .capacity
                    .as_ref()
                    .map_or(config.queue.value, |c| c.value),
                policy: input.policy.as_ref().map_or(Policy::Block, |p| p.value),
                kind: src_kind.spec.outputs[from_port].kind,
                origin: input.from.origin.clone(),
            });
        }
        for (i, port) in kind.spec.inputs.iter().enumerate() {
            if port.required
                && inputs_of[to][i].is_none()
                && !n.inputs.iter().any(|x| x.port.value == port.name)
            {
                errors.push(
                    Diagnostic::new(
                        format!(
                            "required input \"{}\" ({}) of node \"{}\" (plugin {}) is not connected",
                            port.name,
                            port.contract(),
                            n.name.value,
                            kind.spec.kind
                        ),
                        n.name.origin.clone(),
                    )
                    .help(format!("add inputs = {{ {} = \"<node>.<port>\" }}", port.name)),
                );
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    // 3. Cycles.
    let mut graph = DiGraph::<usize, usize>::new();
    let gi: Vec<NodeIndex> = (0..config.nodes.len()).map(|i| graph.add_node(i)).collect();
    for (i, e) in edges.iter().enumerate() {
        graph.add_edge(gi[e.from], gi[e.to], i);
    }
    let order: Vec<usize> = match toposort(&graph, None) {
        Ok(o) => o.into_iter().map(|ix| graph[ix]).collect(),
        Err(_) => {
            for scc in tarjan_scc(&graph) {
                let members: Vec<usize> = scc.iter().map(|ix| graph[*ix]).collect();
                let cyclic = members.len() > 1
                    || edges
                        .iter()
                        .any(|e| e.from == members[0] && e.to == members[0]);
                if !cyclic {
                    continue;
                }
                let in_cycle: Vec<&Edge> = edges
                    .iter()
                    .filter(|e| members.contains(&e.from) && members.contains(&e.to))
                    .collect();
                let labels: Vec<String> = in_cycle
                    .iter()
                    .map(|e| {
                        format!(
                            "{}.{} -> {}.{}",
                            config.nodes[e.from].name.value,
                            kinds[e.from]
                                .as_ref()
                                .map_or("?", |k| k.0.spec.outputs[e.from_port].name.as_str()),
                            config.nodes[e.to].name.value,
                            kinds[e.to]
                                .as_ref()
                                .map_or("?", |k| k.0.spec.inputs[e.to_port].name.as_str()),
                        )
                    })
                    .collect();
                errors.push(
                    Diagnostic::new(
                        format!("the graph has a cycle: {}", labels.join(", ")),
                        in_cycle.first().map_or(Origin::None, |e| e.origin.clone()),
                    )
                    .help("a pipeline must be a directed acyclic graph; remove one of these edges"),
                );
            }
            return Err(errors);
        }
    };

    // 4. Kinds across edges, in topological order so that pass-through kinds resolve.
    let mut output_kinds: Vec<Vec<PortKind>> = kinds
        .iter()
        .map(|k| {
            k.as_ref().map_or(Vec::new(), |(k, _)| {
                k.spec.outputs.iter().map(|p| p.kind).collect()
            })
        })
        .collect();
    for &n in &order {
        let Some((kind, _)) = &kinds[n] else { continue };
        // Resolve this node's inputs (their producers come earlier in the order).
        let first_input_kind = inputs_of[n]
            .first()
            .copied()
            .flatten()
            .map(|e| output_kinds[edges[e].from][edges[e].from_port]);
        for (p, port) in kind.spec.outputs.iter().enumerate() {
            if port.kind == PortKind::Any {
                output_kinds[n][p] = first_input_kind.unwrap_or(PortKind::Any);
            }
        }
        for (p, slot) in inputs_of[n].iter().enumerate() {
            let Some(e) = *slot else { continue };
            let produced = output_kinds[edges[e].from][edges[e].from_port];
            edges[e].kind = produced;
            let input = &kind.spec.inputs[p];
            let out = &kinds[edges[e].from]
                .as_ref()
                .map(|k| &k.0.spec.outputs[edges[e].from_port]);
            let label = format!(
                "{}.{} -> {}.{}",
                config.nodes[edges[e].from].name.value,
                out.map_or("?", |o| o.name.as_str()),
                config.nodes[n].name.value,
                input.name
            );
            if produced != PortKind::Any && !input.kind.accepts(produced) {
                errors.push(
                    Diagnostic::new(
                        format!(
                            "kind mismatch on edge {label}: the output produces {produced}, the input expects {}",
                            input.kind
                        ),
                        edges[e].origin.clone(),
                    )
                    .help(format!("connect \"{}\" to an output of kind {}", input.name, input.kind)),
                );
                continue;
            }
            let Some(out) = out else { continue };
            if let (Some(a), Some(b)) = (out.dtype, input.dtype) {
                if a != b {
                    errors.push(Diagnostic::new(
                        format!("dtype mismatch on edge {label}: the output produces {a}, the input expects {b}"),
                        edges[e].origin.clone(),
                    ));
                }
            }
            if let (Some(a), Some(b)) = (out.rank(), input.rank()) {
                if a != b {
                    errors.push(Diagnostic::new(
                        format!(
                            "shape mismatch on edge {label}: the output is [{}], the input expects [{}]",
                            out.shape.as_deref().unwrap_or(""),
                            input.shape.as_deref().unwrap_or("")
                        ),
                        edges[e].origin.clone(),
                    ));
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let mut outputs_of: Vec<Vec<Vec<usize>>> = output_kinds
        .iter()
        .map(|o| vec![Vec::new(); o.len()])
        .collect();
    for (i, e) in edges.iter().enumerate() {
        outputs_of[e.from][e.from_port].push(i);
    }
    let nodes = config
        .nodes
        .iter()
        .zip(kinds)
        .zip(params_of)
        .zip(inputs_of)
        .zip(outputs_of.into_iter().zip(output_kinds))
        .filter_map(|((((n, kind), params), inputs), (outputs, output_kinds))| {
            let (kind, provider) = kind?;
            Some(PipelineNode {
                name: n.name.value.clone(),
                kind,
                provider,
                params,
                on_error: n.on_error,
                inputs,
                outputs,
                output_kinds,
                origin: n.name.origin.clone(),
            })
        })
        .collect();
    Ok((nodes, edges, order))
}

/// The node's parameters: its own values, checked, then `[pipeline] precision` (where it has a
/// `precision` parameter), then the defaults.
fn resolve_params(
    n: &config::NodeConfig,
    kind: &NodeKind,
    pipeline_precision: Option<&At<String>>,
    errors: &mut Vec<Diagnostic>,
) -> Params {
    let spec = &kind.spec;
    let mut params = Params::new();
    for (key, value) in &n.params {
        let Some(p) = spec.params.iter().find(|p| p.name == key.value) else {
            let known: Vec<&str> = spec.params.iter().map(|p| p.name.as_str()).collect();
            errors.push(
                Diagnostic::new(
                    format!(
                        "unknown parameter \"{}\" for node \"{}\" (plugin {})",
                        key.value, n.name.value, spec.kind
                    ),
                    key.origin.clone(),
                )
                .suggest(&key.value, known.iter().copied())
                .help_if_none(if known.is_empty() {
                    format!("plugin {} takes no parameters", spec.kind)
                } else {
                    format!("its parameters are: {}", known.join(", "))
                }),
            );
            continue;
        };
        match value.value.clone().coerce(p.ty) {
            Some(v) => {
                if let Err(e) = p.check(&v) {
                    errors.push(
                        Diagnostic::new(
                            format!("parameter \"{}\" of node \"{}\" {e}", p.name, n.name.value),
                            value.origin.clone(),
                        )
                        .help(p.doc.clone()),
                    );
                }
                if p.name == "precision" {
                    errors.extend(unsupported_precision(&v, &value.origin));
                }
                params.set(&p.name, v)
            }
            None => errors.push(
                Diagnostic::new(
                    format!(
                        "parameter \"{}\" of node \"{}\" must be {} {}, found {}",
                        p.name,
                        n.name.value,
                        if matches!(p.ty, ParamType::Int | ParamType::IntList) {
                            "an"
                        } else {
                            "a"
                        },
                        p.ty,
                        value.value.describe()
                    ),
                    value.origin.clone(),
                )
                .help(p.doc.clone()),
            ),
        }
    }
    for p in &spec.params {
        if params.get(&p.name).is_some() || n.params.iter().any(|(k, _)| k.value == p.name) {
            continue;
        }
        if let (Some(precision), "precision") = (pipeline_precision, p.name.as_str()) {
            // Its support is checked once, at [pipeline] precision.
            params.set(&p.name, ParamValue::Str(precision.value.clone()));
            continue;
        }
        match &p.default {
            Some(d) => params.set(&p.name, d.clone()),
            None => errors.push(
                Diagnostic::new(
                    format!(
                        "node \"{}\" (plugin {}) is missing required parameter \"{}\" ({})",
                        n.name.value, spec.kind, p.name, p.ty
                    ),
                    n.name.origin.clone(),
                )
                .help(format!("add {} = ...  ({})", p.name, p.doc)),
            ),
        }
    }
    if params.str("precision").is_ok_and(|p| p == "auto") {
        // The node gets the choice itself; the run's header says which and why
        // (`Pipeline::precision_reason`).
        let (chosen, _) = kernels::layers::bf16::Precision::auto();
        params.set("precision", ParamValue::Str(chosen.name().into()));
    }
    params
}

/// `Some(why)` when `precision = "auto"` is asked for, by `[pipeline]` or by a node: what
/// `auto` chose on this CPU, and why.
fn auto_precision_reason(config: &PipelineConfig) -> Option<&'static str> {
    let is_auto = |v: &ParamValue| matches!(v, ParamValue::Str(s) if s == "auto");
    let asked = config.precision.as_ref().is_some_and(|p| p.value == "auto")
        || config.nodes.iter().any(|n| {
            n.params
                .iter()
                .any(|(k, v)| k.value == "precision" && is_auto(&v.value))
        });
    asked.then(|| kernels::layers::bf16::Precision::auto().1)
}

/// An error at `origin` when `value` asks for a precision this CPU cannot compute in.
fn unsupported_precision(value: &ParamValue, origin: &Origin) -> Option<Diagnostic> {
    let ParamValue::Str(s) = value else {
        return None;
    };
    let why = kernels::layers::bf16::Precision::parse(s)?
        .check_supported()
        .err()?;
    Some(Diagnostic::new(why, origin.clone()))
}

/// The device the nodes run on, given what the kernels crate found (`resolved`). The kernels
/// have CUDA entry points (`kernels::cuda`, checked on a real GPU), but no node of this build
/// calls them yet: every pipeline runs on the CPU. So `auto` gives the CPU and says that a GPU
/// was seen, and `cuda`/`cuda:N` is refused rather than silently run on the CPU.
fn node_device(
    request: DeviceRequest,
    resolved: Result<(Device, &'static str), DeviceError>,
) -> Result<(Device, &'static str), DeviceError> {
    match resolved? {
        (Device::Cuda(_), _) if request == DeviceRequest::Auto => Ok((
            Device::Cpu,
            "auto: a CUDA device was found, but the nodes of this build have no GPU path yet, running on the CPU",
        )),
        (Device::Cuda(n), _) => Err(DeviceError::CudaUnavailable(
            Device::Cuda(n),
            "the nodes of this build have no GPU path yet (the CUDA kernels exist in the kernels crate but no node calls them)".into(),
        )),
        cpu => Ok(cpu),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nodes_run_on_the_cpu_whatever_cuda_is_found() {
        let found = Ok((Device::Cuda(0), "found"));
        let (d, why) = node_device(DeviceRequest::Auto, found.clone()).unwrap();
        assert_eq!(d, Device::Cpu);
        assert!(
            why.contains("CUDA device was found") && why.contains("CPU"),
            "{why}"
        );
        let err = node_device(DeviceRequest::Cuda(0), found).unwrap_err();
        assert!(err.to_string().contains("cuda:0") && err.to_string().contains("no GPU path"));
        let cpu = Ok((Device::Cpu, "no driver"));
        assert_eq!(
            node_device(DeviceRequest::Auto, cpu).unwrap(),
            (Device::Cpu, "no driver")
        );
        let missing = Err(DeviceError::Unknown("x".into()));
        assert!(node_device(DeviceRequest::Cuda(1), missing).is_err());
    }

    use super::*;

    const PIPELINE: &str = r#"
[pipeline]
name = "t"
queue = 2
[nodes.src]
plugin = "synthetic_source"
frames = 3
[nodes.mid]
plugin = "identity"
inputs = { in = { from = "src.instances", capacity = 1, policy = "drop_oldest" } }
[nodes.both]
plugin = "concat_instances"
inputs = { first = "mid.out", second = "src.instances" }
[nodes.out]
plugin = "json_sink"
inputs = { instances = "both.instances" }
path = "x.jsonl"
"#;

    fn check(text: &str) -> Result<Built, Vec<Diagnostic>> {
        let config = config::parse(text)?;
        build(&config, &Registry::builtin())
    }

    #[test]
    fn resolves_edges_kinds_and_order() {
        let (nodes, edges, order) = check(PIPELINE).unwrap();
        assert_eq!(nodes.len(), 4);
        assert_eq!(edges.len(), 4);
        // The pass-through output of `mid` takes the kind of its input.
        let mid = nodes.iter().position(|n| n.name == "mid").unwrap();
        assert_eq!(nodes[mid].output_kinds, vec![PortKind::Instances]);
        let e = edges.iter().find(|e| e.from == mid).unwrap();
        assert_eq!(e.kind, PortKind::Instances);
        let first_edge = edges.iter().find(|e| e.to == mid).unwrap();
        assert_eq!(
            (first_edge.capacity, first_edge.policy),
            (1, Policy::DropOldest)
        );
        let pos = |name: &str| order.iter().position(|&i| nodes[i].name == name).unwrap();
        assert!(pos("src") < pos("mid") && pos("mid") < pos("both") && pos("both") < pos("out"));
    }

    /// Random damage to a valid pipeline must give diagnostics, never a panic.
    #[test]
    fn damaged_pipelines_never_panic() {
        let bytes = PIPELINE.as_bytes();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"[]{}=\".,_ azAZ09\n#'";
        let mut invalid = 0;
        for _ in 0..3000 {
            let mut text = bytes.to_vec();
            for _ in 0..(1 + next() % 4) {
                let at = (next() as usize) % text.len();
                match next() % 3 {
                    0 => {
                        text.remove(at);
                    }
                    1 => text.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                    _ => text[at] = alphabet[(next() as usize) % alphabet.len()],
                }
            }
            let text = String::from_utf8_lossy(&text);
            if let Err(diags) = check(&text) {
                invalid += 1;
                assert!(!diags.is_empty());
                let file = SourceFile::new(Path::new("p.toml"), text.to_string());
                for d in diags {
                    assert!(d.render(&file).starts_with("error: p.toml"));
                }
            }
        }
        assert!(
            invalid > 1000,
            "the damage should usually break the pipeline ({invalid})"
        );
    }

    /// A bounded mutation run over the shipped pipelines: edited, inserted and deleted
    /// characters and truncations must give a pipeline or diagnostics, never a panic. A
    /// failing input is written out for reproduction.
    #[test]
    fn mutated_pipelines_never_panic() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // Characters that matter to TOML and to the checker.
        const ALPHABET: &[u8] = b"[]{}=\"',.#\n 0123456789-+_abcxyz.eE";
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
        let dir = std::env::temp_dir().join(format!("pipeline-mutate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut runs = 0;
        let mut seeds: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        seeds.sort();
        for seed_path in &seeds {
            let seed = std::fs::read(seed_path).unwrap();
            for i in 0..150 {
                let mut b = seed.clone();
                for _ in 0..1 + next() % 3 {
                    let at = (next() as usize) % b.len().max(1);
                    let c = ALPHABET[(next() as usize) % ALPHABET.len()];
                    match next() % 4 {
                        0 if !b.is_empty() => b[at] = c,
                        1 => b.insert(at.min(b.len()), c),
                        2 if !b.is_empty() => {
                            b.remove(at);
                        }
                        _ => b.truncate(at),
                    }
                }
                let path = dir.join(format!("{i}.toml"));
                std::fs::write(&path, &b).unwrap();
                let outcome = std::panic::catch_unwind(|| {
                    let mut registry = Registry::builtin();
                    let _ = load(&path, &[], &mut registry).map(|p| p.nodes.len());
                });
                if outcome.is_err() {
                    let keep = dir.join(format!(
                        "panic-{}",
                        seed_path.file_name().unwrap().to_string_lossy()
                    ));
                    std::fs::write(&keep, &b).unwrap();
                    panic!(
                        "graph::load panicked on a mutation of {}, kept at {}",
                        seed_path.display(),
                        keep.display()
                    );
                }
                runs += 1;
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(runs, 150 * seeds.len());
    }
}
