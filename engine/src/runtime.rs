//! Runs a checked pipeline: one stage (thread) per node, bounded crossbeam channels between
//! them.
//!
//! Invariants:
//! - Every stage handles frames in order and emits exactly one message per frame on every
//!   output edge: a value, or an explicit "absent" marker when the frame was skipped. So an
//!   edge carries frames in increasing index order, and nothing is silently lost.
//! - A node with several inputs joins them by frame index (a merge over ordered queues): it
//!   runs once per frame with that frame's values. A frame missing on one input (dropped by a
//!   queue policy) is absent there; a node never runs without a required input.
//! - End of stream is the closing of channels: sources stop, each stage drains its queues,
//!   calls `finish` (sinks flush) and drops its senders. An error or Ctrl-C stops the sources
//!   and the same drain follows; every thread is joined within the drain deadline.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{
    bounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError,
};
use plugin_sdk::abi::panic_message;
use plugin_sdk::{FrameInfo, Inputs, Node, NodeError, Outputs, PortKind, Value};

use crate::config::{OnError, Policy};
use crate::graph::Pipeline;

/// One frame's value on an edge; `None` marks the frame absent.
struct Msg {
    frame: Arc<FrameInfo>,
    value: Option<Value>,
}

/// A failure that stopped the pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct RunError {
    pub node: String,
    pub plugin: String,
    /// (index, source) of the frame being processed, if any.
    pub frame: Option<(u64, String)>,
    pub message: String,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node \"{}\" (plugin {}) failed", self.node, self.plugin)?;
        match &self.frame {
            Some((i, src)) if !src.is_empty() => write!(f, " on frame {i} ({src})")?,
            Some((i, _)) => write!(f, " on frame {i}")?,
            None => {}
        }
        write!(f, ": {}", self.message)
    }
}

/// Per-node measurements.
#[derive(Clone, Debug, Default)]
pub struct NodeStats {
    pub name: String,
    pub plugin: String,
    /// Frames the node processed (or produced, for a source).
    pub frames: u64,
    /// Frames the node passed on as absent (an input was absent, or it failed with
    /// `on_error = "skip"`).
    pub skipped: u64,
    pub errors: u64,
    /// Processing times of the frames (a streaming histogram: memory does not grow with the
    /// stream).
    pub latency: Latency,
    /// Time spent waiting for inputs.
    pub wait_in: Duration,
    /// Time spent blocked on full output queues.
    pub wait_out: Duration,
}

impl NodeStats {
    pub fn mean_ms(&self) -> f64 {
        self.latency.mean_ms()
    }

    /// Percentile (0..=100) of the latencies, in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        self.latency.percentile_ms(p)
    }
}

/// Frame processing times: an exact count and mean, and percentiles from an HDR histogram
/// with two significant digits (within 1% of the exact value), in a fixed ~70 KB whatever
/// the number of frames.
#[derive(Clone, Debug)]
pub struct Latency {
    count: u64,
    sum_ns: u128,
    histogram: hdrhistogram::Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            count: 0,
            sum_ns: 0,
            // 1 ns to about an hour; longer times are recorded as the maximum (`saturating_record`).
            histogram: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000_000, 2)
                .expect("constant histogram bounds are valid"),
        }
    }
}

impl Latency {
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.count += 1;
        self.sum_ns += u128::from(ns);
        self.histogram.saturating_record(ns.max(1));
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn mean_ms(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        self.sum_ns as f64 / self.count as f64 / 1e6
    }

    /// Percentile (0..=100), in milliseconds (within 1%).
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        self.histogram.value_at_percentile(p.clamp(0.0, 100.0)) as f64 / 1e6
    }
}

/// Per-edge counters.
#[derive(Debug, Default)]
pub struct EdgeCounters {
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
}

#[derive(Debug)]
pub struct EdgeStats {
    pub label: String,
    pub policy: Policy,
    pub capacity: usize,
    pub sent: u64,
    pub dropped: u64,
}

impl EdgeStats {
    /// Frames offered to the edge. `drop_newest` refuses a frame instead of sending it, so its
    /// drops come on top of the frames sent; `drop_oldest` sends every frame and drops ones
    /// already sent, so they are among them.
    pub fn offered(&self) -> u64 {
        match self.policy {
            Policy::DropOldest => self.sent,
            _ => self.sent + self.dropped,
        }
    }
}

/// What a run did.
#[derive(Debug)]
pub struct RunReport {
    pub nodes: Vec<NodeStats>,
    pub edges: Vec<EdgeStats>,
    /// The error that stopped the pipeline, if any.
    pub error: Option<RunError>,
    /// Whether the run was interrupted (Ctrl-C).
    pub interrupted: bool,
    /// Stages that did not finish within the drain deadline.
    pub stuck: Vec<String>,
    pub wall: Duration,
}

/// How often a stage waiting for input checks whether the run gave up on the drain.
const ABANDON_POLL: Duration = Duration::from_millis(50);
/// How long after the drain deadline the stages waiting for input get to finish (flush).
const ABANDON_GRACE: Duration = Duration::from_millis(1000);

pub struct RunOptions {
    /// Set to stop the sources (Ctrl-C); the pipeline then drains.
    pub stop: Arc<AtomicBool>,
    /// How long stages may take to drain after a stop before the run gives up on them.
    pub drain_timeout: Duration,
    /// Called about ten times a second with the number of frames that reached the sinks.
    pub progress: Option<Box<dyn FnMut(u64)>>,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            stop: Arc::new(AtomicBool::new(false)),
            drain_timeout: Duration::from_secs(30),
            progress: None,
        }
    }
}

/// A node could not be created (bad parameter value, missing weights file, ...).
#[derive(Debug, thiserror::Error)]
#[error("node \"{node}\" (plugin {plugin}) could not be created: {message}")]
pub struct CreateError {
    pub node: String,
    pub plugin: String,
    pub message: String,
}

/// Sending side of one edge.
struct EdgeTx {
    tx: Sender<Msg>,
    /// For `drop_oldest`: a receiver of the same queue, to drop its oldest message. Only
    /// `drop_oldest` edges hold one, because holding it keeps the queue open.
    oldest: Option<Receiver<Msg>>,
    policy: Policy,
    capacity: usize,
    label: Arc<str>,
    counters: Arc<EdgeCounters>,
    /// The consumer is gone (it failed); nothing more is sent.
    dead: bool,
    /// Sources only: the stop flag. A source blocked on a full queue gives up its pending
    /// frame when the pipeline stops (the frame was never admitted), so that it cannot hold
    /// up the drain.
    abort: Option<Arc<AtomicBool>>,
}

impl EdgeTx {
    fn send_blocking(&mut self, mut msg: Msg) {
        let Some(abort) = &self.abort else {
            if self.tx.send(msg).is_err() {
                self.dead = true;
            }
            return;
        };
        loop {
            match self.tx.send_timeout(msg, Duration::from_millis(50)) {
                Ok(()) => return,
                Err(SendTimeoutError::Timeout(m)) if !abort.load(Ordering::SeqCst) => msg = m,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
    }

    /// Sends a message according to the edge's policy. Returns the time spent blocked.
    fn send(&mut self, msg: Msg) -> Result<Duration, String> {
        if self.dead {
            return Ok(Duration::ZERO);
        }
        let mut waited = Duration::ZERO;
        match self.policy {
            Policy::Block => match self.tx.try_send(msg) {
                Ok(()) => {}
                Err(TrySendError::Full(msg)) => {
                    let t = Instant::now();
                    self.send_blocking(msg);
                    waited = t.elapsed();
                }
                Err(TrySendError::Disconnected(_)) => self.dead = true,
            },
            Policy::DropNewest => match self.tx.try_send(msg) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    return Ok(waited);
                }
                Err(TrySendError::Disconnected(_)) => self.dead = true,
            },
            Policy::DropOldest => {
                let mut msg = msg;
                loop {
                    match self.tx.try_send(msg) {
                        Ok(()) => break,
                        Err(TrySendError::Full(m)) => {
                            msg = m;
                            if let Some(rx) = &self.oldest {
                                if rx.try_recv().is_ok() {
                                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Err(TrySendError::Disconnected(_)) => {
                            self.dead = true;
                            break;
                        }
                    }
                }
            }
            Policy::Fail => match self.tx.try_send(msg) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    return Err(format!(
                        "the queue of edge {} is full (capacity {}) and its policy is \"fail\"; raise its capacity or use policy \"block\"",
                        self.label, self.capacity
                    ))
                }
                Err(TrySendError::Disconnected(_)) => self.dead = true,
            },
        }
        if !self.dead {
            self.counters.sent.fetch_add(1, Ordering::Relaxed);
        }
        Ok(waited)
    }
}

struct Stage {
    name: String,
    plugin: String,
    node: Box<dyn Node>,
    on_error: OnError,
    /// The stream of the source's current frames (sources only).
    stream: u32,
    /// The next unused stream id, shared by the sources: the first ids are the sources'
    /// ordinals, further streams take the next ones.
    next_stream: Arc<AtomicU32>,
    /// One receiver per declared input (None: unconnected optional input).
    inputs: Vec<Option<Receiver<Msg>>>,
    input_names: Vec<String>,
    input_required: Vec<bool>,
    /// Per declared output port: its edges.
    outputs: Vec<Vec<EdgeTx>>,
    /// Per declared output port: name and resolved kind.
    output_ports: Vec<(String, PortKind)>,
    stop: Arc<AtomicBool>,
    /// Set when the drain deadline passes: a stage waiting for input stops waiting and
    /// finishes with what it has (a sink flushes), instead of waiting on a stuck producer.
    abandon: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<RunError>>>,
    sink_frames: Arc<AtomicU64>,
    stats: NodeStats,
    /// This node failed (so it is not asked to finish).
    failed: bool,
}

enum Step {
    Continue,
    Stop,
}

/// Checks a node's outputs against its declared ports, in port order.
fn check_outputs(
    output_ports: &[(String, PortKind)],
    mut out: Outputs,
) -> Result<Vec<Value>, String> {
    // An undeclared port first: a value written to a misspelt port would otherwise be
    // reported as a missing value on the right one.
    if let Some(extra) = out
        .ports()
        .find(|p| !output_ports.iter().any(|(name, _)| name == p))
    {
        let declared: Vec<String> = output_ports
            .iter()
            .map(|(name, _)| format!("\"{name}\""))
            .collect();
        return Err(format!(
            "the node produced a value for \"{extra}\", which is not one of its output ports ({})",
            if declared.is_empty() {
                "it has none".to_string()
            } else {
                declared.join(", ")
            }
        ));
    }
    let mut values = Vec::with_capacity(output_ports.len());
    for (name, kind) in output_ports {
        let v = out
            .take(name)
            .ok_or_else(|| format!("the node produced no value for its output port \"{name}\""))?;
        if *kind != PortKind::Any && v.kind() != *kind {
            return Err(format!(
                "output port \"{name}\" is declared {kind} but the node produced a {} value",
                v.kind()
            ));
        }
        v.validate().map_err(|e| {
            format!(
                "output port \"{name}\" produced an invalid {} value: {e}",
                v.kind()
            )
        })?;
        values.push(v);
    }
    Ok(values)
}

impl Stage {
    fn fail(&mut self, frame: Option<&FrameInfo>, message: String) {
        let err = RunError {
            node: self.name.clone(),
            plugin: self.plugin.clone(),
            frame: frame.map(|f| (f.index, f.source.to_string())),
            message,
        };
        self.failed = true;
        tracing::debug!("{err}");
        if let Ok(mut slot) = self.failure.lock() {
            slot.get_or_insert(err);
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Sends one frame's values (None: absent on every output).
    fn emit(&mut self, frame: &Arc<FrameInfo>, values: Option<Vec<Value>>) -> Result<(), String> {
        for (p, edges) in self.outputs.iter_mut().enumerate() {
            let value = values.as_ref().map(|v| v[p].clone());
            for e in edges.iter_mut() {
                let waited = e.send(Msg {
                    frame: frame.clone(),
                    value: value.clone(),
                })?;
                self.stats.wait_out += waited;
            }
        }
        Ok(())
    }

    fn all_outputs_dead(&self) -> bool {
        let mut edges = self.outputs.iter().flatten().peekable();
        edges.peek().is_some() && edges.all(|e| e.dead)
    }

    /// Handles the result of one call of the node.
    fn after_call(
        &mut self,
        frame: &Arc<FrameInfo>,
        result: std::thread::Result<Result<Outputs, NodeError>>,
    ) -> Step {
        let outcome = match result {
            Ok(Ok(out)) => check_outputs(&self.output_ports, out),
            Ok(Err(e)) => Err(e.to_string()),
            Err(panic) => Err(format!("panicked: {}", panic_message(panic.as_ref()))),
        };
        let sent = match outcome {
            Ok(values) => {
                self.stats.frames += 1;
                if self.outputs.is_empty() {
                    self.sink_frames.fetch_add(1, Ordering::Relaxed);
                }
                self.emit(frame, Some(values))
            }
            Err(message) => {
                self.stats.errors += 1;
                if self.on_error == OnError::Skip {
                    tracing::warn!(
                        "node \"{}\" (plugin {}) skipped frame {} ({}): {message}",
                        self.name,
                        self.plugin,
                        frame.index,
                        frame.source
                    );
                    self.stats.skipped += 1;
                    self.emit(frame, None)
                } else {
                    self.fail(Some(frame), message);
                    return Step::Stop;
                }
            }
        };
        if let Err(message) = sent {
            self.fail(Some(frame), message);
            return Step::Stop;
        }
        if self.all_outputs_dead() {
            return Step::Stop;
        }
        Step::Continue
    }

    fn run_source(&mut self) {
        let mut index = 0u64;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let mut info = FrameInfo {
                stream: self.stream,
                index,
                timestamp_ns: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64),
                ..FrameInfo::default()
            };
            let span = tracing::trace_span!("next_frame", node = %self.name, frame = index);
            let t = Instant::now();
            let result = {
                let _g = span.enter();
                let node = &mut self.node;
                catch_unwind(AssertUnwindSafe(|| node.next_frame(&mut info)))
            };
            let result = match result {
                Ok(Ok(None)) => return,
                Ok(Ok(Some(out))) => Ok(Ok(out)),
                Ok(Err(e)) => Ok(Err(e)),
                Err(p) => Err(p),
            };
            self.stats.latency.record(t.elapsed());
            if info.stream != self.stream {
                // The source began a new stream: a fresh id, never used in this run, so that
                // no node's state of an earlier stream carries over.
                self.stream = self.next_stream.fetch_add(1, Ordering::SeqCst);
                info.stream = self.stream;
            }
            let frame = Arc::new(info);
            if let Step::Stop = self.after_call(&frame, result) {
                return;
            }
            index += 1;
        }
    }

    fn run_node(&mut self) {
        let k = self.inputs.len();
        let mut heads: Vec<Option<Msg>> = (0..k).map(|_| None).collect();
        let mut open: Vec<bool> = self.inputs.iter().map(Option::is_some).collect();
        loop {
            for i in 0..k {
                if open[i] && heads[i].is_none() {
                    let Some(rx) = &self.inputs[i] else { continue };
                    let t = Instant::now();
                    loop {
                        match rx.recv_timeout(ABANDON_POLL) {
                            Ok(m) => heads[i] = Some(m),
                            Err(RecvTimeoutError::Timeout)
                                if !self.abandon.load(Ordering::SeqCst) =>
                            {
                                continue
                            }
                            Err(_) => open[i] = false,
                        }
                        break;
                    }
                    self.stats.wait_in += t.elapsed();
                }
            }
            let Some(index) = heads.iter().flatten().map(|m| m.frame.index).min() else {
                return; // every input has ended
            };
            let mut inputs = Inputs::new();
            let mut frame = None;
            let mut complete = true;
            for ((head, name), required) in heads
                .iter_mut()
                .zip(&self.input_names)
                .zip(&self.input_required)
            {
                let msg = match head {
                    Some(m) if m.frame.index == index => head.take(),
                    _ => None,
                };
                let value = msg.and_then(|m| {
                    frame.get_or_insert(m.frame);
                    m.value
                });
                if value.is_none() && *required {
                    complete = false;
                }
                inputs.push(name, value);
            }
            let Some(frame) = frame else { return };
            if !complete {
                self.stats.skipped += 1;
                if let Err(message) = self.emit(&frame, None) {
                    self.fail(Some(&frame), message);
                    return;
                }
                continue;
            }
            let span = tracing::trace_span!("process", node = %self.name, frame = frame.index);
            let t = Instant::now();
            let result = {
                let _g = span.enter();
                let node = &mut self.node;
                catch_unwind(AssertUnwindSafe(|| node.process(&frame, &inputs)))
            };
            self.stats.latency.record(t.elapsed());
            drop(inputs);
            if let Step::Stop = self.after_call(&frame, result) {
                return;
            }
        }
    }

    /// Runs the stage to its end; returns its statistics.
    fn run(mut self) -> NodeStats {
        if self.inputs.is_empty() {
            self.run_source()
        } else {
            self.run_node()
        }
        // Close inputs first: producers blocked on us see the queue gone at once.
        self.inputs.clear();
        if !self.failed {
            let node = &mut self.node;
            match catch_unwind(AssertUnwindSafe(|| node.finish())) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self.fail(None, format!("finish failed: {e}")),
                Err(p) => self.fail(
                    None,
                    format!("panicked in finish: {}", panic_message(p.as_ref())),
                ),
            }
        }
        self.outputs.clear();
        self.stats
    }
}

/// Creates every node of the pipeline before any stage starts, so that a bad parameter
/// value fails the run before the first frame; the error is the first failing node's, in
/// the pipeline's order.
///
/// Nodes are created at the same time, one thread each: creating a node can be most of a
/// short run (a graph model reads its weights, packs its filters and plans its run with a
/// dry run on zeros), and one node's work then overlaps another's.
pub fn create_nodes(pipeline: &Pipeline) -> Result<Vec<Box<dyn Node>>, CreateError> {
    let error = |n: &crate::graph::PipelineNode, message: String| CreateError {
        node: n.name.clone(),
        plugin: n.plugin().to_string(),
        message,
    };
    let panicked = |p: &(dyn std::any::Any + Send)| format!("panicked: {}", panic_message(p));
    let create = |n: &crate::graph::PipelineNode| match catch_unwind(AssertUnwindSafe(|| {
        (n.kind.create)(&n.params)
    })) {
        Ok(Ok(node)) => Ok(node),
        Ok(Err(e)) => Err(error(n, e.to_string())),
        Err(p) => Err(error(n, panicked(p.as_ref()))),
    };
    let created: Vec<Result<Box<dyn Node>, CreateError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = pipeline
            .nodes
            .iter()
            .map(|n| (n, scope.spawn(move || create(n))))
            .collect();
        handles
            .into_iter()
            .map(|(n, h)| {
                // `create` catches a node's panic; a thread that still fails is one.
                h.join()
                    .unwrap_or_else(|p| Err(error(n, panicked(p.as_ref()))))
            })
            .collect()
    });
    created.into_iter().collect()
}

/// Runs the pipeline with the given nodes (from [`create_nodes`]) until every stage is done.
pub fn run(pipeline: &Pipeline, nodes: Vec<Box<dyn Node>>, mut options: RunOptions) -> RunReport {
    let started = Instant::now();
    let failure = Arc::new(Mutex::new(None));
    let sink_frames = Arc::new(AtomicU64::new(0));
    let counters: Vec<Arc<EdgeCounters>> = pipeline.edges.iter().map(|_| Arc::default()).collect();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for e in &pipeline.edges {
        let (tx, rx) = bounded::<Msg>(e.capacity);
        senders.push(Some((tx, rx.clone())));
        receivers.push(Some(rx));
    }
    let mut sources = 0u32;
    let source_count = pipeline
        .nodes
        .iter()
        .filter(|n| n.kind.spec.is_source())
        .count() as u32;
    let next_stream = Arc::new(AtomicU32::new(source_count));
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<(usize, NodeStats)>();
    let mut handles = Vec::new();
    // Stages whose thread started: one that never did is an error, not a stage stuck draining.
    let mut thread_started = vec![false; pipeline.nodes.len()];
    let abandon = Arc::new(AtomicBool::new(false));
    for (i, (n, node)) in pipeline.nodes.iter().zip(nodes).enumerate() {
        let spec = &n.kind.spec;
        let stream = if spec.is_source() {
            sources += 1;
            sources - 1
        } else {
            0
        };
        let stage = Stage {
            name: n.name.clone(),
            plugin: n.plugin().to_string(),
            node,
            on_error: n.on_error,
            stream,
            next_stream: next_stream.clone(),
            inputs: n
                .inputs
                .iter()
                .map(|e| e.and_then(|e| receivers[e].take()))
                .collect(),
            input_names: spec.inputs.iter().map(|p| p.name.clone()).collect(),
            input_required: spec.inputs.iter().map(|p| p.required).collect(),
            outputs: n
                .outputs
                .iter()
                .map(|edges| {
                    edges
                        .iter()
                        .filter_map(|&e| {
                            let (tx, rx) = senders[e].take()?;
                            let edge = &pipeline.edges[e];
                            Some(EdgeTx {
                                tx,
                                oldest: (edge.policy == Policy::DropOldest).then_some(rx),
                                policy: edge.policy,
                                capacity: edge.capacity,
                                label: pipeline.edge_label(edge).into(),
                                counters: counters[e].clone(),
                                dead: false,
                                abort: spec.is_source().then(|| options.stop.clone()),
                            })
                        })
                        .collect()
                })
                .collect(),
            output_ports: spec
                .outputs
                .iter()
                .zip(&n.output_kinds)
                .map(|(p, k)| (p.name.clone(), *k))
                .collect(),
            stop: options.stop.clone(),
            abandon: abandon.clone(),
            failure: failure.clone(),
            sink_frames: sink_frames.clone(),
            stats: NodeStats {
                name: n.name.clone(),
                plugin: n.plugin().to_string(),
                ..NodeStats::default()
            },
            failed: false,
        };
        let done = done_tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("node:{}", n.name))
            .spawn(move || {
                let stats = stage.run();
                let _ = done.send((i, stats));
            });
        match spawned {
            Ok(h) => {
                handles.push(h);
                thread_started[i] = true;
            }
            Err(e) => {
                options.stop.store(true, Ordering::SeqCst);
                if let Ok(mut slot) = failure.lock() {
                    slot.get_or_insert(RunError {
                        node: n.name.clone(),
                        plugin: n.plugin().to_string(),
                        frame: None,
                        message: format!("cannot start its thread: {e}"),
                    });
                }
            }
        }
    }
    drop(done_tx);
    drop(senders);
    drop(receivers);

    let mut stats: Vec<Option<NodeStats>> = pipeline.nodes.iter().map(|_| None).collect();
    let mut remaining = handles.len();
    let mut deadline: Option<Instant> = None;
    let mut abandoned_at: Option<Instant> = None;
    let tick = Duration::from_millis(100);
    while remaining > 0 {
        if deadline.is_none() && options.stop.load(Ordering::SeqCst) {
            deadline = Some(Instant::now() + options.drain_timeout);
        }
        let wait = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) => left.min(tick),
                // The deadline passed: the stages still waiting for input give up on it and
                // finish with what they have (so sinks flush); those still busy after a short
                // grace are named as stuck.
                None => match abandoned_at {
                    None => {
                        abandon.store(true, Ordering::SeqCst);
                        abandoned_at = Some(Instant::now());
                        tick
                    }
                    Some(t) if t.elapsed() < ABANDON_GRACE => tick,
                    Some(_) => break,
                },
            },
            None => tick,
        };
        match done_rx.recv_timeout(wait) {
            Ok((i, s)) => {
                stats[i] = Some(s);
                remaining -= 1;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if let Some(progress) = options.progress.as_mut() {
            progress(sink_frames.load(Ordering::Relaxed));
        }
    }
    let names: Vec<&str> = pipeline.nodes.iter().map(|n| n.name.as_str()).collect();
    let stuck = stuck_stages(&names, &thread_started, &stats);
    if stuck.is_empty() {
        for h in handles {
            let _ = h.join();
        }
    }
    let error = failure.lock().ok().and_then(|f| f.clone());
    RunReport {
        nodes: pipeline
            .nodes
            .iter()
            .zip(stats)
            .map(|(n, s)| {
                s.unwrap_or_else(|| NodeStats {
                    name: n.name.clone(),
                    plugin: n.plugin().to_string(),
                    ..NodeStats::default()
                })
            })
            .collect(),
        edges: pipeline
            .edges
            .iter()
            .zip(&counters)
            .map(|(e, c)| EdgeStats {
                label: pipeline.edge_label(e),
                policy: e.policy,
                capacity: e.capacity,
                sent: c.sent.load(Ordering::Relaxed),
                dropped: c.dropped.load(Ordering::Relaxed),
            })
            .collect(),
        interrupted: options.stop.load(Ordering::SeqCst) && error.is_none(),
        error,
        stuck,
        wall: started.elapsed(),
    }
}

/// The stages that started and did not report their end (before the drain deadline).
fn stuck_stages(names: &[&str], started: &[bool], stats: &[Option<NodeStats>]) -> Vec<String> {
    names
        .iter()
        .zip(started)
        .zip(stats)
        .filter(|((_, &started), s)| started && s.is_none())
        .map(|((n, _), _)| n.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_sdk::Tensor;

    fn value() -> Value {
        Value::new(PortKind::Tensor).with("tensor", Tensor::from_vec(&[1], vec![1f32]).unwrap())
    }

    /// A value on a misspelt port is named as such (with the declared ports), not reported
    /// as a missing value on the right one; missing and extra values are errors.
    #[test]
    fn outputs_are_checked_against_the_declared_ports() {
        let ports = vec![("out".to_string(), PortKind::Tensor)];
        let ok = check_outputs(&ports, Outputs::one("out", value())).unwrap();
        assert_eq!(ok.len(), 1);
        let e = check_outputs(&ports, Outputs::one("outt", value())).unwrap_err();
        assert_eq!(
            e,
            "the node produced a value for \"outt\", which is not one of its output ports (\"out\")"
        );
        let e = check_outputs(&ports, Outputs::new()).unwrap_err();
        assert!(
            e.contains("produced no value for its output port \"out\""),
            "{e}"
        );
        let e =
            check_outputs(&ports, Outputs::one("out", Value::new(PortKind::Image))).unwrap_err();
        assert!(e.contains("declared tensor"), "{e}");
    }

    /// Exact count and mean; percentiles within the histogram's 1%.
    #[test]
    fn latency_is_streamed_with_exact_mean_and_close_percentiles() {
        let mut l = Latency::default();
        assert_eq!((l.mean_ms(), l.percentile_ms(50.0)), (0.0, 0.0));
        for i in 1..=1000u64 {
            l.record(Duration::from_micros(i * 10));
        }
        assert_eq!(l.count(), 1000);
        assert!((l.mean_ms() - 5.005).abs() < 1e-9, "{}", l.mean_ms());
        for (p, exact) in [(50.0, 5.0), (99.0, 9.9), (100.0, 10.0)] {
            let got = l.percentile_ms(p);
            assert!(
                (got - exact).abs() <= 0.01 * exact,
                "p{p}: {got} vs {exact}"
            );
        }
        l.record(Duration::from_secs(10 * 3600));
        assert!(l.percentile_ms(100.0) > 3.5e6, "saturated at the top bound");
    }

    /// A stage whose thread never started is not reported as stuck draining.
    #[test]
    fn only_started_stages_can_be_stuck() {
        let done = Some(NodeStats::default());
        let stuck = stuck_stages(
            &["src", "never", "slow"],
            &[true, false, true],
            &[done, None, None],
        );
        assert_eq!(stuck, vec!["slow".to_string()]);
    }
}
