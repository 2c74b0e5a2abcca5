//! The pipeline file: TOML parsed with spans, so that every later error can point at the
//! line and column it is about. This module only reads the file's structure; what the values
//! mean (plugins, ports, parameter types) is checked in `graph`.

use std::ops::Range;

use plugin_sdk::ParamValue;
use toml::de::{DeTable, DeValue};

use crate::diag::{Diagnostic, Origin};

/// A value and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct At<T> {
    pub value: T,
    pub origin: Origin,
}

impl<T> At<T> {
    pub fn new(value: T, origin: Origin) -> At<T> {
        At { value, origin }
    }
}

/// What happens when a queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// The producer waits (back-pressure). Nothing is lost.
    Block,
    /// The oldest queued value is dropped to make room.
    DropOldest,
    /// The new value is dropped.
    DropNewest,
    /// The pipeline stops with an error.
    Fail,
}

impl Policy {
    pub const NAMES: [&'static str; 4] = ["block", "drop_oldest", "drop_newest", "fail"];

    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "block" => Some(Policy::Block),
            "drop_oldest" => Some(Policy::DropOldest),
            "drop_newest" => Some(Policy::DropNewest),
            "fail" => Some(Policy::Fail),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        Policy::NAMES[self as usize]
    }
}

/// What a node does when processing a frame fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Stop the pipeline (default).
    Stop,
    /// Log, count, and mark the frame absent downstream.
    Skip,
}

/// One `inputs` entry: `port = "node.port"` or `port = { from = "node.port", capacity, policy }`.
#[derive(Clone, Debug, PartialEq)]
pub struct InputConfig {
    pub port: At<String>,
    /// "node.port" as written.
    pub from: At<String>,
    pub capacity: Option<At<usize>>,
    pub policy: Option<At<Policy>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    pub name: At<String>,
    pub plugin: At<String>,
    pub inputs: Vec<InputConfig>,
    pub on_error: OnError,
    /// Every other key: a plugin parameter.
    pub params: Vec<(At<String>, At<ParamValue>)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PipelineConfig {
    pub name: String,
    pub device: At<String>,
    pub queue: At<usize>,
    /// `[pipeline] threads`: the thread budget of every plugin library's compute pool.
    pub threads: Option<At<usize>>,
    /// `[pipeline] precision`: the default of every node's `precision` parameter.
    pub precision: Option<At<String>>,
    pub libraries: Vec<At<String>>,
    /// `[plugins] path`: directories searched for plugin libraries.
    pub plugin_path: Vec<At<String>>,
    /// `[vars]`: values that parameters use as `"${name}"` (see [`substitute_vars`]).
    pub vars: Vec<(At<String>, At<ParamValue>)>,
    pub nodes: Vec<NodeConfig>,
}

pub const DEFAULT_QUEUE: usize = 4;
/// The largest edge capacity (`queue`, an input's `capacity`), in frames. A bounded queue
/// allocates its slots when the run starts, and each queued frame can hold a whole image or
/// feature pyramid: more than this only costs memory (deeper queues do not run faster).
pub const MAX_QUEUE: usize = 4096;
const NODE_KEYS: [&str; 3] = ["plugin", "inputs", "on_error"];

fn at<T>(value: T, span: Range<usize>) -> At<T> {
    At::new(value, Origin::File(span))
}

fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a bool",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn int_of(v: &DeValue<'_>) -> Option<i64> {
    let i = v.as_integer()?;
    i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok()
}

fn float_of(v: &DeValue<'_>) -> Option<f64> {
    let s = v.as_float()?.as_str().replace('_', "");
    match s.as_str() {
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        "nan" | "+nan" | "-nan" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Converts a TOML value into a parameter value (types are checked against the plugin's
/// schema later).
pub fn param_value(v: &DeValue<'_>) -> Result<ParamValue, String> {
    match v {
        DeValue::String(s) => Ok(ParamValue::Str(s.to_string())),
        DeValue::Boolean(b) => Ok(ParamValue::Bool(*b)),
        DeValue::Integer(_) => int_of(v)
            .map(ParamValue::Int)
            .ok_or_else(|| "integer does not fit in 64 bits".to_string()),
        DeValue::Float(_) => float_of(v)
            .map(ParamValue::Float)
            .ok_or_else(|| "invalid float".to_string()),
        DeValue::Array(items) => {
            let items: Vec<&DeValue<'_>> = items.iter().map(|i| i.get_ref()).collect();
            if items.is_empty() {
                Ok(ParamValue::StrList(Vec::new()))
            } else if items.iter().all(|i| i.is_integer()) {
                items
                    .iter()
                    .map(|i| int_of(i).ok_or("integer does not fit in 64 bits".to_string()))
                    .collect::<Result<_, _>>()
                    .map(ParamValue::IntList)
            } else if items.iter().all(|i| i.is_integer() || i.is_float()) {
                items
                    .iter()
                    .map(|i| {
                        int_of(i)
                            .map(|x| x as f64)
                            .or_else(|| float_of(i))
                            .ok_or("invalid number".to_string())
                    })
                    .collect::<Result<_, _>>()
                    .map(ParamValue::FloatList)
            } else if items.iter().all(|i| i.is_str()) {
                Ok(ParamValue::StrList(
                    items
                        .iter()
                        .map(|i| i.as_str().unwrap_or_default().to_string())
                        .collect(),
                ))
            } else {
                Err("arrays must hold only numbers or only strings".into())
            }
        }
        DeValue::Datetime(_) | DeValue::Table(_) => Err(format!(
            "{} cannot be a parameter value; use a string, number, bool or array",
            type_name(v)
        )),
    }
}

/// Reads a pipeline file. Returns every structural error found, not only the first.
pub fn parse(text: &str) -> Result<PipelineConfig, Vec<Diagnostic>> {
    let doc = DeTable::parse(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        vec![Diagnostic::new(
            format!("invalid TOML: {}", e.message().trim_end()),
            Origin::File(span),
        )]
    })?;
    let mut errors = Vec::new();
    let mut config = PipelineConfig {
        name: String::new(),
        device: At::new("auto".into(), Origin::None),
        queue: At::new(DEFAULT_QUEUE, Origin::None),
        threads: None,
        precision: None,
        libraries: Vec::new(),
        plugin_path: Vec::new(),
        vars: Vec::new(),
        nodes: Vec::new(),
    };
    let mut saw_nodes = false;
    for (key, value) in doc.get_ref().iter() {
        let table = |errors: &mut Vec<Diagnostic>| match value.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                errors.push(Diagnostic::new(
                    format!(
                        "[{}] must be a table, found {}",
                        key.get_ref(),
                        type_name(other)
                    ),
                    Origin::File(value.span()),
                ));
                None
            }
        };
        match key.get_ref().as_ref() {
            "pipeline" => {
                if let Some(t) = table(&mut errors) {
                    parse_pipeline_table(t, &mut config, &mut errors);
                }
            }
            "plugins" => {
                if let Some(t) = table(&mut errors) {
                    parse_plugins_table(t, &mut config, &mut errors);
                }
            }
            "vars" => {
                if let Some(t) = table(&mut errors) {
                    for (name, v) in t.iter() {
                        match param_value(v.get_ref()) {
                            Ok(value) => config.vars.push((
                                at(name.get_ref().to_string(), name.span()),
                                at(value, v.span()),
                            )),
                            Err(e) => errors.push(Diagnostic::new(
                                format!("vars.{}: {e}", name.get_ref()),
                                Origin::File(v.span()),
                            )),
                        }
                    }
                }
            }
            "nodes" => {
                saw_nodes = true;
                if let Some(t) = table(&mut errors) {
                    for (name, node) in t.iter() {
                        if let Some(n) = parse_node(name.get_ref(), name.span(), node, &mut errors)
                        {
                            config.nodes.push(n);
                        }
                    }
                }
            }
            other => errors.push(
                Diagnostic::new(
                    format!("unknown top-level table [{other}]"),
                    Origin::File(key.span()),
                )
                .suggest(other, ["pipeline", "plugins", "vars", "nodes"])
                .help_if_none(
                    "a pipeline file has [pipeline], [plugins], [vars] and [nodes.NAME] tables",
                ),
            ),
        }
    }
    if !saw_nodes && errors.is_empty() {
        errors.push(
            Diagnostic::new("the pipeline has no nodes", Origin::File(0..0))
                .help("add a node: [nodes.frames] with plugin = \"image_source\""),
        );
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

fn parse_pipeline_table(
    t: &DeTable<'_>,
    config: &mut PipelineConfig,
    errors: &mut Vec<Diagnostic>,
) {
    for (key, value) in t.iter() {
        let span = value.span();
        match (key.get_ref().as_ref(), value.get_ref()) {
            ("name", DeValue::String(s)) => config.name = s.to_string(),
            ("device", DeValue::String(s)) => config.device = at(s.to_string(), span),
            ("queue", v @ DeValue::Integer(_)) => match int_of(v) {
                Some(q) if (1..=MAX_QUEUE as i64).contains(&q) => {
                    config.queue = at(q as usize, span)
                }
                _ => errors.push(
                    Diagnostic::new(
                        format!("queue must be an integer from 1 to {MAX_QUEUE}"),
                        Origin::File(span),
                    )
                    .help(format!(
                        "queue is the default capacity (in frames) of every edge; the limit is {MAX_QUEUE} frames, since a queue allocates its slots at start (it cannot be raised)"
                    )),
                ),
            },
            ("threads", v @ DeValue::Integer(_)) => match int_of(v) {
                Some(n) if (1..=1024).contains(&n) => config.threads = Some(at(n as usize, span)),
                _ => errors.push(
                    Diagnostic::new("threads must be an integer in 1..=1024", Origin::File(span))
                        .help("threads is the size of each plugin library's compute pool (default: every core)"),
                ),
            },
            ("precision", DeValue::String(p)) => match p.as_ref() {
                "fp32" | "bf16" | "auto" => config.precision = Some(at(p.to_string(), span)),
                other => errors.push(
                    Diagnostic::new(
                        format!("precision must be \"fp32\", \"bf16\" or \"auto\", found \"{other}\""),
                        Origin::File(span),
                    )
                    .help("precision is the default of every node's `precision` parameter: \"bf16\" rounds filters and activations to bf16 with fp32 sums (AMX or AVX-512 BF16), \"auto\" takes bf16 where the CPU has it and fp32 elsewhere"),
                ),
            },
            (k @ ("name" | "device" | "queue" | "threads" | "precision"), v) => errors.push(Diagnostic::new(
                format!(
                    "pipeline.{k} must be {}, found {}",
                    if k == "queue" || k == "threads" {
                        "an integer"
                    } else {
                        "a string"
                    },
                    type_name(v)
                ),
                Origin::File(span),
            )),
            (other, _) => errors.push(
                Diagnostic::new(
                    format!("unknown key \"{other}\" in [pipeline]"),
                    Origin::File(key.span()),
                )
                .suggest(other, ["name", "device", "queue", "threads", "precision"])
                .help_if_none("[pipeline] takes name, device, queue, threads and precision"),
            ),
        }
    }
}

fn parse_plugins_table(t: &DeTable<'_>, config: &mut PipelineConfig, errors: &mut Vec<Diagnostic>) {
    for (key, value) in t.iter() {
        let list = match key.get_ref().as_ref() {
            "libraries" => &mut config.libraries,
            "path" => &mut config.plugin_path,
            other => {
                errors.push(
                    Diagnostic::new(
                        format!("unknown key \"{other}\" in [plugins]"),
                        Origin::File(key.span()),
                    )
                    .suggest(other, ["libraries", "path"])
                    .help_if_none("[plugins] takes libraries = [\"path/to/libplugin.so\"] and path = [\"dir\"]"),
                );
                continue;
            }
        };
        let what = if key.get_ref().as_ref() == "path" {
            ("plugins.path", "directories")
        } else {
            ("plugins.libraries", "paths")
        };
        match value.get_ref() {
            DeValue::Array(items) => {
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::String(s) => list.push(at(s.to_string(), item.span())),
                        other => errors.push(Diagnostic::new(
                            format!(
                                "{} entries must be {} (strings), found {}",
                                what.0,
                                what.1,
                                type_name(other)
                            ),
                            Origin::File(item.span()),
                        )),
                    }
                }
            }
            other => errors.push(Diagnostic::new(
                format!(
                    "{} must be an array of {}, found {}",
                    what.0,
                    what.1,
                    type_name(other)
                ),
                Origin::File(value.span()),
            )),
        }
    }
}

fn parse_node(
    name: &str,
    name_span: Range<usize>,
    node: &toml::Spanned<DeValue<'_>>,
    errors: &mut Vec<Diagnostic>,
) -> Option<NodeConfig> {
    let DeValue::Table(t) = node.get_ref() else {
        errors.push(Diagnostic::new(
            format!(
                "nodes.{name} must be a table, found {}",
                type_name(node.get_ref())
            ),
            Origin::File(node.span()),
        ));
        return None;
    };
    if name.is_empty() || name.contains(['.', ' ']) {
        errors.push(Diagnostic::new(
            format!("node name \"{name}\" must be non-empty and contain no '.' or spaces"),
            Origin::File(name_span.clone()),
        ));
    }
    let mut plugin = None;
    let mut inputs = Vec::new();
    let mut on_error = OnError::Stop;
    let mut params = Vec::new();
    for (key, value) in t.iter() {
        let k = key.get_ref().as_ref();
        match (k, value.get_ref()) {
            ("plugin", DeValue::String(s)) => plugin = Some(at(s.to_string(), value.span())),
            ("plugin", other) => errors.push(Diagnostic::new(
                format!("nodes.{name}.plugin must be a string, found {}", type_name(other)),
                Origin::File(value.span()),
            )),
            ("inputs", DeValue::Table(ins)) => {
                for (port, from) in ins.iter() {
                    if let Some(i) = parse_input(name, port, from, errors) {
                        inputs.push(i);
                    }
                }
            }
            ("inputs", other) => errors.push(
                Diagnostic::new(
                    format!("nodes.{name}.inputs must be a table, found {}", type_name(other)),
                    Origin::File(value.span()),
                )
                .help("write inputs = { port = \"node.port\" }"),
            ),
            ("on_error", DeValue::String(s)) if s == "stop" || s == "skip" => {
                on_error = if s == "skip" { OnError::Skip } else { OnError::Stop }
            }
            ("on_error", _) => errors.push(
                Diagnostic::new(
                    format!("nodes.{name}.on_error must be \"stop\" or \"skip\""),
                    Origin::File(value.span()),
                )
                .help("\"stop\" ends the pipeline on a failed frame; \"skip\" drops that frame and goes on"),
            ),
            (_, v) => match param_value(v) {
                Ok(p) => params.push((at(k.to_string(), key.span()), at(p, value.span()))),
                Err(e) => errors.push(Diagnostic::new(
                    format!("parameter \"{k}\" of node \"{name}\": {e}"),
                    Origin::File(value.span()),
                )),
            },
        }
    }
    let Some(plugin) = plugin else {
        errors.push(
            Diagnostic::new(
                format!("node \"{name}\" has no plugin"),
                Origin::File(name_span),
            )
            .help("add plugin = \"<kind>\"; `engine plugins` lists the kinds"),
        );
        return None;
    };
    Some(NodeConfig {
        name: at(name.to_string(), name_span),
        plugin,
        inputs,
        on_error,
        params,
    })
}

fn parse_input(
    node: &str,
    port: &toml::Spanned<toml::de::DeString<'_>>,
    from: &toml::Spanned<DeValue<'_>>,
    errors: &mut Vec<Diagnostic>,
) -> Option<InputConfig> {
    let port_at = at(port.get_ref().to_string(), port.span());
    match from.get_ref() {
        DeValue::String(s) => Some(InputConfig {
            port: port_at,
            from: at(s.to_string(), from.span()),
            capacity: None,
            policy: None,
        }),
        DeValue::Table(t) => {
            let mut src = None;
            let mut capacity = None;
            let mut policy = None;
            for (k, v) in t.iter() {
                let span = v.span();
                match (k.get_ref().as_ref(), v.get_ref()) {
                    ("from", DeValue::String(s)) => src = Some(at(s.to_string(), span)),
                    ("capacity", x @ DeValue::Integer(_)) => match int_of(x) {
                        Some(c) if (1..=MAX_QUEUE as i64).contains(&c) => {
                            capacity = Some(at(c as usize, span))
                        }
                        _ => errors.push(
                            Diagnostic::new(
                                format!("capacity must be an integer from 1 to {MAX_QUEUE}"),
                                Origin::File(span),
                            )
                            .help(format!(
                                "the limit is {MAX_QUEUE} frames, since a queue allocates its slots at start (it cannot be raised)"
                            )),
                        ),
                    },
                    ("policy", DeValue::String(s)) => match Policy::parse(s) {
                        Some(p) => policy = Some(at(p, span)),
                        None => errors.push(
                            Diagnostic::new(
                                format!("unknown queue policy \"{s}\""),
                                Origin::File(span),
                            )
                            .suggest(s, Policy::NAMES)
                            .help_if_none("policy is one of block, drop_oldest, drop_newest, fail"),
                        ),
                    },
                    (key @ ("from" | "capacity" | "policy"), other) => {
                        errors.push(Diagnostic::new(
                            format!("{key} has the wrong type ({})", type_name(other)),
                            Origin::File(span),
                        ))
                    }
                    (other, _) => errors.push(
                        Diagnostic::new(
                            format!(
                                "unknown key \"{other}\" in input \"{}\" of node \"{node}\"",
                                port.get_ref()
                            ),
                            Origin::File(k.span()),
                        )
                        .suggest(other, ["from", "capacity", "policy"])
                        .help_if_none("an input takes from, capacity and policy"),
                    ),
                }
            }
            match src {
                Some(from) => Some(InputConfig {
                    port: port_at,
                    from,
                    capacity,
                    policy,
                }),
                None => {
                    errors.push(
                        Diagnostic::new(
                            format!(
                                "input \"{}\" of node \"{node}\" has no `from`",
                                port.get_ref()
                            ),
                            Origin::File(from.span()),
                        )
                        .help("write { from = \"node.port\" }"),
                    );
                    None
                }
            }
        }
        other => {
            errors.push(
                Diagnostic::new(
                    format!(
                        "input \"{}\" of node \"{node}\" must be \"node.port\", found {}",
                        port.get_ref(),
                        type_name(other)
                    ),
                    Origin::File(from.span()),
                )
                .help("write inputs = { port = \"node.port\" }"),
            );
            None
        }
    }
}

/// Applies `--set node.key=value` overrides. A value that is not valid TOML is taken as a
/// string, so `--set frames.path=assets/x.jpg` works without quotes.
pub fn apply_overrides(
    config: &mut PipelineConfig,
    sets: &[String],
) -> Result<(), Vec<Diagnostic>> {
    let mut errors = Vec::new();
    for arg in sets {
        let origin = Origin::Cli(arg.clone());
        let Some((path, raw)) = arg.split_once('=') else {
            errors.push(
                Diagnostic::new("expected node.key=value", origin)
                    .help("for example --set frames.path=assets/cat.jpg"),
            );
            continue;
        };
        let path = path.trim();
        if let Some(var) = path.strip_prefix("vars.") {
            // A pipeline variable: replaced, or added (a parameter may use it).
            let value = match DeValue::parse(raw.trim()) {
                Ok(v) => param_value(v.get_ref()),
                Err(_) => Ok(ParamValue::Str(raw.to_string())),
            };
            match value {
                Ok(v) => {
                    let v = At::new(v, origin.clone());
                    match config.vars.iter_mut().find(|(k, _)| k.value == var) {
                        Some(slot) => slot.1 = v,
                        None => config.vars.push((At::new(var.to_string(), origin), v)),
                    }
                }
                Err(e) => errors.push(Diagnostic::new(e, origin)),
            }
            continue;
        }
        let path = path.strip_prefix("nodes.").unwrap_or(path);
        let Some((node, key)) = path.split_once('.') else {
            errors.push(Diagnostic::new(
                format!("\"{path}\" is not node.key"),
                origin,
            ));
            continue;
        };
        let value = match DeValue::parse(raw.trim()) {
            Ok(v) => param_value(v.get_ref()),
            Err(_) => Ok(ParamValue::Str(raw.to_string())),
        };
        let value = match value {
            Ok(v) => v,
            Err(e) => {
                errors.push(Diagnostic::new(e, origin));
                continue;
            }
        };
        let names: Vec<String> = config.nodes.iter().map(|n| n.name.value.clone()).collect();
        let Some(n) = config.nodes.iter_mut().find(|n| n.name.value == node) else {
            errors.push(
                Diagnostic::new(format!("no node named \"{node}\""), origin)
                    .suggest(node, names.iter().map(String::as_str)),
            );
            continue;
        };
        if NODE_KEYS.contains(&key) && key != "on_error" {
            errors.push(Diagnostic::new(
                format!("--set changes parameters; \"{key}\" is part of the graph and must be edited in the file"),
                origin,
            ));
            continue;
        }
        if key == "on_error" {
            match value {
                ParamValue::Str(s) if s == "skip" => n.on_error = OnError::Skip,
                ParamValue::Str(s) if s == "stop" => n.on_error = OnError::Stop,
                _ => errors.push(Diagnostic::new("on_error must be stop or skip", origin)),
            }
            continue;
        }
        let value = At::new(value, origin.clone());
        match n.params.iter_mut().find(|(k, _)| k.value == key) {
            Some(slot) => slot.1 = value,
            None => n.params.push((At::new(key.to_string(), origin), value)),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Replaces `${name}` in every string parameter (and string list entry) with the pipeline
/// variable `name` of `[vars]` (after `--set vars.name=...`). A value that is exactly
/// `"${name}"` takes the variable's own type (an integer stays an integer); inside a longer
/// string the variable's text is spliced in. `$${` is a literal `${`. An unknown variable is an
/// error at the parameter, with the closest name.
pub fn substitute_vars(config: &mut PipelineConfig) -> Result<(), Vec<Diagnostic>> {
    let vars = config.vars.clone();
    let mut errors = Vec::new();
    for node in &mut config.nodes {
        for (_, value) in &mut node.params {
            let origin = value.origin.clone();
            let result = match &value.value {
                ParamValue::Str(s) => expand(s, &vars, true).map(Some),
                ParamValue::StrList(items) => items
                    .iter()
                    .map(|i| match expand(i, &vars, false)? {
                        ParamValue::Str(s) => Ok(s),
                        other => Ok(other.to_string()),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(|l| Some(ParamValue::StrList(l))),
                _ => Ok(None),
            };
            match result {
                Ok(Some(v)) => value.value = v,
                Ok(None) => {}
                Err((msg, bad)) => errors.push(
                    Diagnostic::new(msg, origin)
                        .suggest(&bad, vars.iter().map(|(k, _)| k.value.as_str()))
                        .help_if_none("define it in [vars] or with --set vars.NAME=VALUE"),
                ),
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// `text` with its `${name}` references replaced (see [`substitute_vars`]). Errors carry the
/// message and the unknown name.
fn expand(
    text: &str,
    vars: &[(At<String>, At<ParamValue>)],
    typed: bool,
) -> Result<ParamValue, (String, String)> {
    let lookup = |name: &str| {
        vars.iter()
            .find(|(k, _)| k.value == name)
            .map(|(_, v)| v.value.clone())
            .ok_or_else(|| {
                (
                    format!("unknown pipeline variable \"{name}\" in \"{text}\""),
                    name.to_string(),
                )
            })
    };
    if typed {
        if let Some(name) = text.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
            if !name.contains(['$', '{', '}']) {
                return lookup(name);
            }
        }
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(r) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = r;
        } else if let Some(r) = after.strip_prefix("${") {
            let Some(end) = r.find('}') else {
                return Err((
                    format!("unclosed \"${{\" in \"{text}\"; write $${{ for a literal one"),
                    String::new(),
                ));
            };
            match lookup(&r[..end])? {
                ParamValue::Str(s) => out.push_str(&s),
                other => out.push_str(&other.to_string()),
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(ParamValue::Str(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_are_substituted_typed_or_spliced() {
        let text = "[vars]\nweights = \"m.pth\"\ndepth = 101\n[nodes.a]\nplugin = \"x\"\nweights = \"${weights}\"\ndepth = \"${depth}\"\nout = \"out/${depth}/$${literal}\"\nnames = [\"${weights}\", \"b\"]\n";
        let mut c = parse(text).unwrap();
        apply_overrides(&mut c, &["vars.weights=other.pth".to_string()]).unwrap();
        substitute_vars(&mut c).unwrap();
        let get = |k: &str| {
            c.nodes[0]
                .params
                .iter()
                .find(|(n, _)| n.value == k)
                .map(|(_, v)| v.value.clone())
                .unwrap()
        };
        assert_eq!(get("weights"), ParamValue::Str("other.pth".into()));
        assert_eq!(get("depth"), ParamValue::Int(101));
        assert_eq!(get("out"), ParamValue::Str("out/101/${literal}".into()));
        assert_eq!(
            get("names"),
            ParamValue::StrList(vec!["other.pth".into(), "b".into()])
        );
        let mut c =
            parse("[vars]\nweights = \"m\"\n[nodes.a]\nplugin = \"x\"\nw = \"${wieghts}\"\n")
                .unwrap();
        let e = substitute_vars(&mut c).unwrap_err();
        assert!(
            e[0].message
                .contains("unknown pipeline variable \"wieghts\""),
            "{:?}",
            e[0]
        );
    }

    const GOOD: &str = r#"
[pipeline]
name = "demo"
queue = 8

[nodes.frames]
plugin = "synthetic_source"
frames = 10
mean = [0.5, 1, 2]

[nodes.out]
plugin = "null_sink"
on_error = "skip"
inputs = { in = { from = "frames.image", capacity = 2, policy = "drop_oldest" } }
"#;

    #[test]
    fn parses_nodes_inputs_and_params() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.name, "demo");
        assert_eq!(c.queue.value, 8);
        assert_eq!(c.nodes.len(), 2);
        let frames = c.nodes.iter().find(|n| n.name.value == "frames").unwrap();
        assert_eq!(frames.params[0].1.value, ParamValue::Int(10));
        assert_eq!(
            frames.params[1].1.value,
            ParamValue::FloatList(vec![0.5, 1.0, 2.0])
        );
        let out = c.nodes.iter().find(|n| n.name.value == "out").unwrap();
        assert_eq!(out.on_error, OnError::Skip);
        assert_eq!(out.inputs[0].from.value, "frames.image");
        assert_eq!(out.inputs[0].capacity.as_ref().unwrap().value, 2);
        assert_eq!(
            out.inputs[0].policy.as_ref().unwrap().value,
            Policy::DropOldest
        );
    }

    #[test]
    fn reports_every_structural_error_with_spans() {
        let text = "[pipline]\nname = 1\n[nodes.a]\nplugin = 3\n[nodes.b]\nplugin = \"x\"\ninputs = { in = { from = \"a.out\", policy = \"drop_old\" } }\n";
        let errors = parse(text).unwrap_err();
        let msgs: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
        assert!(
            msgs.contains(&"unknown top-level table [pipline]"),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().any(|m| m.contains("plugin must be a string")),
            "{msgs:?}"
        );
        assert!(
            msgs.contains(&"unknown queue policy \"drop_old\""),
            "{msgs:?}"
        );
        let policy = errors
            .iter()
            .find(|e| e.message.contains("drop_old"))
            .unwrap();
        assert_eq!(
            policy.help.as_deref(),
            Some("did you mean \"drop_oldest\"?")
        );
        assert_eq!(
            errors[0].help.as_deref(),
            Some("did you mean \"pipeline\"?")
        );
    }

    #[test]
    fn toml_syntax_errors_have_a_span() {
        let errors = parse("[nodes.a]\nplugin = \"x\nfoo = 1\n").unwrap_err();
        assert!(errors[0].message.starts_with("invalid TOML"));
        assert!(matches!(errors[0].origin, Origin::File(_)));
    }

    #[test]
    fn overrides_set_parameters() {
        let mut c = parse(GOOD).unwrap();
        apply_overrides(
            &mut c,
            &["frames.frames=3".into(), "nodes.frames.path=a/b.jpg".into()],
        )
        .unwrap();
        let frames = c.nodes.iter().find(|n| n.name.value == "frames").unwrap();
        assert_eq!(frames.params[0].1.value, ParamValue::Int(3));
        assert_eq!(frames.params[2].1.value, ParamValue::Str("a/b.jpg".into()));
        let errs = apply_overrides(&mut c, &["frame.frames=3".into()]).unwrap_err();
        assert_eq!(errs[0].help.as_deref(), Some("did you mean \"frames\"?"));
    }
}
