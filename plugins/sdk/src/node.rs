//! The `Node` trait that every node implements, built-in or external, and the declarations
//! (ports, parameters) that let the engine check a pipeline before it runs.

use std::fmt;
use std::sync::Arc;

use engine_tensor::DType;

use crate::params::{ParamSpec, Params};
use crate::value::{PortKind, Value};

/// Which frame a value belongs to. Every value in the graph travels with one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FrameInfo {
    /// Which stream the frame belongs to: one id per video, camera session or file sequence,
    /// unique within a run and never reused. A source starts with one stream and may start
    /// further ones ([`FrameInfo::begin_stream`]); state a node keeps across frames is per
    /// stream (see [`StreamState`]).
    pub stream: u32,
    /// Position of the frame in its source's output, from 0, assigned by the engine. It keeps
    /// counting across the streams of one source: nodes with several inputs join by it.
    pub index: u64,
    /// Nanoseconds: the engine presets the wall-clock time since the Unix epoch before the
    /// source runs; a video source replaces it with the frame's presentation time from the
    /// start of its stream.
    pub timestamp_ns: u64,
    /// Where the frame came from (file path, "synthetic", ...).
    pub source: Arc<str>,
    /// Size of the original image in pixels (0 when not an image stream).
    pub width: u32,
    pub height: u32,
}

impl FrameInfo {
    /// Called by a source in `next_frame`: this frame starts a new stream (the next video of
    /// a list, say). The engine gives the frame a fresh stream id, so state kept per stream
    /// starts afresh. Only the change matters: the id the source leaves here is replaced.
    pub fn begin_stream(&mut self) {
        self.stream = self.stream.wrapping_add(1);
    }
}

/// State a node keeps across the frames of each stream (a tracker's tracks, a keyframe's
/// features). A new stream gets a fresh state from `init`; the states of the streams used
/// least recently are dropped beyond `capacity`, so that a run over many videos holds a
/// bounded amount (stream ids are never reused, so a dropped stream does not come back).
#[derive(Debug)]
pub struct StreamState<T> {
    capacity: usize,
    clock: u64,
    /// (stream, last use, state), in no particular order: capacity is small.
    states: Vec<(u32, u64, T)>,
}

impl<T> StreamState<T> {
    /// Keeps at most `capacity` streams' states (at least 1).
    pub fn new(capacity: usize) -> StreamState<T> {
        StreamState {
            capacity: capacity.max(1),
            clock: 0,
            states: Vec::new(),
        }
    }

    /// The state of `stream`, created by `init` when the stream is new to this node.
    pub fn get_or_insert_with(&mut self, stream: u32, init: impl FnOnce() -> T) -> &mut T {
        let position = match self.states.iter().position(|s| s.0 == stream) {
            Some(i) => i,
            None => self.push(stream, init()),
        };
        self.clock += 1;
        let entry = &mut self.states[position];
        entry.1 = self.clock;
        &mut entry.2
    }

    /// The state of `stream`, if this node has one.
    pub fn get(&self, stream: u32) -> Option<&T> {
        self.states.iter().find(|s| s.0 == stream).map(|s| &s.2)
    }

    /// Replaces (or creates) the state of `stream`.
    pub fn insert(&mut self, stream: u32, state: T) {
        match self.states.iter().position(|s| s.0 == stream) {
            Some(i) => {
                self.clock += 1;
                self.states[i] = (stream, self.clock, state);
            }
            None => {
                self.push(stream, state);
            }
        }
    }

    /// Adds a stream's state, dropping the least recently used one when full; its position.
    fn push(&mut self, stream: u32, state: T) -> usize {
        if self.states.len() >= self.capacity {
            if let Some(oldest) = (0..self.states.len()).min_by_key(|&i| self.states[i].1) {
                self.states.swap_remove(oldest);
            }
        }
        self.clock += 1;
        self.states.push((stream, self.clock, state));
        self.states.len() - 1
    }

    /// How many streams' states are held.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

impl<T> Default for StreamState<T> {
    /// Room for 16 concurrent streams.
    fn default() -> StreamState<T> {
        StreamState::new(16)
    }
}

/// An error raised by a node. The engine adds the node, plugin and frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeError {
    message: String,
}

impl NodeError {
    pub fn new(message: impl Into<String>) -> NodeError {
        NodeError {
            message: message.into(),
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NodeError {}

impl From<String> for NodeError {
    fn from(message: String) -> NodeError {
        NodeError { message }
    }
}

impl From<&str> for NodeError {
    fn from(message: &str) -> NodeError {
        NodeError::new(message)
    }
}

impl From<engine_tensor::TensorError> for NodeError {
    fn from(e: engine_tensor::TensorError) -> NodeError {
        NodeError::new(e.to_string())
    }
}

/// A port declaration: name, kind and, where the node promises them, dtype and shape.
#[derive(Clone, Debug, PartialEq)]
pub struct PortSpec {
    pub name: String,
    pub kind: PortKind,
    /// The dtype of the kind's main tensor, when fixed.
    pub dtype: Option<DType>,
    /// Symbolic shape of the main tensor, e.g. "H,W,3" or "N,4" (documentation and checks of
    /// rank across edges).
    pub shape: Option<String>,
    /// Inputs only: whether the node cannot run without it.
    pub required: bool,
    pub doc: String,
}

impl PortSpec {
    pub fn new(name: &str, kind: PortKind, doc: &str) -> PortSpec {
        PortSpec {
            name: name.into(),
            kind,
            dtype: None,
            shape: None,
            required: true,
            doc: doc.into(),
        }
    }

    pub fn dtype(mut self, dtype: DType) -> PortSpec {
        self.dtype = Some(dtype);
        self
    }

    pub fn shape(mut self, shape: &str) -> PortSpec {
        self.shape = Some(shape.into());
        self
    }

    /// Marks an input optional: the node runs without it.
    pub fn optional(mut self) -> PortSpec {
        self.required = false;
        self
    }

    /// "image u8[H,W,3]"
    pub fn contract(&self) -> String {
        let mut s = self.kind.name().to_string();
        if self.dtype.is_some() || self.shape.is_some() {
            s.push(' ');
            if let Some(d) = self.dtype {
                s.push_str(d.name());
            }
            if let Some(shape) = &self.shape {
                s.push('[');
                s.push_str(shape);
                s.push(']');
            }
        }
        s
    }

    /// Rank of the declared shape, if any.
    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(|s| s.split(',').count())
    }
}

/// Everything the engine needs to know about a node kind before creating one.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSpec {
    /// The name pipelines use in `plugin = "..."`.
    pub kind: String,
    pub doc: String,
    pub inputs: Vec<PortSpec>,
    pub outputs: Vec<PortSpec>,
    pub params: Vec<ParamSpec>,
}

impl NodeSpec {
    pub fn new(kind: &str, doc: &str) -> NodeSpec {
        NodeSpec {
            kind: kind.into(),
            doc: doc.into(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            params: Vec::new(),
        }
    }

    pub fn input(mut self, port: PortSpec) -> NodeSpec {
        self.inputs.push(port);
        self
    }

    pub fn output(mut self, port: PortSpec) -> NodeSpec {
        self.outputs.push(port);
        self
    }

    pub fn param(mut self, param: ParamSpec) -> NodeSpec {
        self.params.push(param);
        self
    }

    /// A node without inputs is a source: the engine calls [`Node::next_frame`].
    pub fn is_source(&self) -> bool {
        self.inputs.is_empty()
    }

    pub fn find_input(&self, name: &str) -> Option<&PortSpec> {
        self.inputs.iter().find(|p| p.name == name)
    }

    pub fn find_output(&self, name: &str) -> Option<&PortSpec> {
        self.outputs.iter().find(|p| p.name == name)
    }

    /// Checks the values of `params` against the declared ranges: the check `engine check`
    /// makes at each value's location, made again whenever a node is created.
    pub fn check_params(&self, params: &Params) -> Result<(), NodeError> {
        for spec in &self.params {
            if let Some(v) = params.get(&spec.name) {
                spec.check(v)
                    .map_err(|e| NodeError::new(format!("parameter \"{}\" {e}", spec.name)))?;
            }
        }
        Ok(())
    }
}

/// The values of one frame on a node's input ports. An optional input that is not connected,
/// or whose value was shed upstream, is absent.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    ports: Vec<(String, Option<Value>)>,
}

impl Inputs {
    pub fn new() -> Inputs {
        Inputs::default()
    }

    pub fn push(&mut self, port: &str, value: Option<Value>) {
        self.ports.push((port.to_string(), value));
    }

    /// The value on `port`, or `None` when it is absent for this frame.
    pub fn get(&self, port: &str) -> Option<&Value> {
        self.ports
            .iter()
            .find(|(p, _)| p == port)
            .and_then(|(_, v)| v.as_ref())
    }

    /// The value on a required port. The engine never runs a node with a required input
    /// absent, so this fails only when the node asks for a port it did not declare.
    pub fn value(&self, port: &str) -> Result<&Value, NodeError> {
        self.get(port)
            .ok_or_else(|| NodeError::new(format!("input port \"{port}\" has no value")))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&Value>)> {
        self.ports.iter().map(|(p, v)| (p.as_str(), v.as_ref()))
    }
}

/// The values a node produces for one frame, one per declared output port.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    ports: Vec<(String, Value)>,
}

impl Outputs {
    pub fn new() -> Outputs {
        Outputs::default()
    }

    /// Outputs with a single port.
    pub fn one(port: &str, value: Value) -> Outputs {
        Outputs::new().with(port, value)
    }

    pub fn with(mut self, port: &str, value: Value) -> Outputs {
        self.set(port, value);
        self
    }

    pub fn set(&mut self, port: &str, value: Value) {
        match self.ports.iter_mut().find(|(p, _)| p == port) {
            Some(slot) => slot.1 = value,
            None => self.ports.push((port.to_string(), value)),
        }
    }

    pub fn get(&self, port: &str) -> Option<&Value> {
        self.ports.iter().find(|(p, _)| p == port).map(|(_, v)| v)
    }

    pub fn take(&mut self, port: &str) -> Option<Value> {
        let i = self.ports.iter().position(|(p, _)| p == port)?;
        Some(self.ports.remove(i).1)
    }

    pub fn ports(&self) -> impl Iterator<Item = &str> {
        self.ports.iter().map(|(p, _)| p.as_str())
    }

    pub fn into_vec(self) -> Vec<(String, Value)> {
        self.ports
    }
}

/// A node of the pipeline graph. The engine runs each node on its own thread and calls it
/// with one frame at a time, in frame order.
pub trait Node: Send {
    /// Processes one frame: `inputs` holds the frame's values on every input port (absent
    /// optional inputs are `None`). Returns one value per declared output port.
    fn process(&mut self, frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError>;

    /// Sources only (nodes without inputs): produces the next frame, or `None` at the end.
    /// The engine has set `frame.stream`, `frame.index` and a wall-clock `timestamp_ns`; the
    /// source fills in `source`, `width`, `height`, may replace `timestamp_ns` (a video's
    /// presentation time) and calls [`FrameInfo::begin_stream`] on the first frame of each
    /// further stream.
    fn next_frame(&mut self, frame: &mut FrameInfo) -> Result<Option<Outputs>, NodeError> {
        let _ = frame;
        Err(NodeError::new(
            "this node declares no inputs, so it is a source, but it does not implement next_frame",
        ))
    }

    /// Called once after the last frame (also when the pipeline stops on an error): sinks
    /// write and flush what they hold.
    fn finish(&mut self) -> Result<(), NodeError> {
        Ok(())
    }
}

/// What the host tells a plugin library once, when it loads it (plugin ABI 1.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostConfig {
    /// The thread budget: how many threads the library's compute pool may use.
    pub threads: usize,
}

/// The problems of a set of node kinds that `engine plugins` users would trip over: a
/// missing doc on a kind, port or parameter, a default that does not fit its parameter's
/// type, or two kinds with one name. Empty when there are none; family tests assert that.
pub fn lint_kinds(kinds: &[NodeKind]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, k) in kinds.iter().enumerate() {
        let name = &k.spec.kind;
        if kinds[..i].iter().any(|o| o.spec.kind == *name) {
            problems.push(format!("{name}: two kinds have this name"));
        }
        if k.spec.doc.is_empty() {
            problems.push(format!("{name}: no doc"));
        }
        for p in k.spec.inputs.iter().chain(&k.spec.outputs) {
            if p.doc.is_empty() {
                problems.push(format!("{name}.{}: no doc", p.name));
            }
        }
        for p in &k.spec.params {
            if p.doc.is_empty() {
                problems.push(format!("{name}.{}: no doc", p.name));
            }
            if let Some(d) = &p.default {
                if d.clone().coerce(p.ty).is_none() {
                    problems.push(format!("{name}.{}: default does not fit {}", p.name, p.ty));
                }
            }
        }
    }
    problems
}

/// Creates a node from its resolved parameters.
pub type CreateFn = dyn Fn(&Params) -> Result<Box<dyn Node>, NodeError> + Send + Sync;

/// A node kind: its declaration and its constructor. Built-in plugins and loaded libraries
/// both provide these.
#[derive(Clone)]
pub struct NodeKind {
    pub spec: NodeSpec,
    pub create: Arc<CreateFn>,
}

impl NodeKind {
    pub fn new(
        spec: NodeSpec,
        create: impl Fn(&Params) -> Result<Box<dyn Node>, NodeError> + Send + Sync + 'static,
    ) -> NodeKind {
        // The declared ranges hold for every creation, whoever creates the node.
        let checked = spec.clone();
        NodeKind {
            spec,
            create: Arc::new(move |params: &Params| {
                checked.check_params(params)?;
                create(params)
            }),
        }
    }
}

impl fmt::Debug for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKind({})", self.spec.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each stream gets its own state; beyond the capacity the least recently used goes.
    #[test]
    fn stream_state_is_per_stream_and_bounded() {
        let mut states = StreamState::<u32>::new(2);
        *states.get_or_insert_with(0, || 10) += 1;
        *states.get_or_insert_with(1, || 20) += 1;
        *states.get_or_insert_with(0, || 99) += 1;
        assert_eq!((states.get(0), states.get(1)), (Some(&12), Some(&21)));
        // Stream 2 is new: stream 1, used least recently, is dropped.
        assert_eq!(*states.get_or_insert_with(2, || 30), 30);
        assert_eq!(
            (states.len(), states.get(1), states.get(0)),
            (2, None, Some(&12))
        );
        states.insert(0, 5);
        states.insert(3, 7);
        assert_eq!(
            (states.get(0), states.get(2), states.get(3)),
            (Some(&5), None, Some(&7))
        );
    }

    #[test]
    fn begin_stream_changes_the_stream() {
        let mut frame = FrameInfo {
            stream: u32::MAX,
            ..FrameInfo::default()
        };
        frame.begin_stream();
        assert_ne!(frame.stream, u32::MAX);
    }
}
