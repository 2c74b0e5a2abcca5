//! The compiled execution plan of a loaded graph: shapes fixed at load, constants folded,
//! every intermediate tensor placed in one arena by a lifetime-based memory plan, and each
//! step a kernel that writes into its place. A planned run allocates nothing.
//!
//! Planning runs the graph once op by op on zeros of the input's shape (a leading `-1`
//! batch is planned as 1): that dry run gives every value's shape, and every value that
//! does not depend on an input (a constant, or computed from constants only) becomes a
//! constant of the plan. Each value that does depend on an input becomes a step, with the
//! same kernel as the op-by-op executor's (the `_into` forms in [`crate::ops_cpu`] and
//! `kernels::layers`), so both executors give the same bits; `Reshape`, `Identity`,
//! `ExpandDims` and `Squeeze` become views of their input's place.
//!
//! The memory plan is TFLite's greedy-by-size: each arena value lives from the step that
//! writes it to the last step that reads it (or one of its views), and the values, largest
//! first, take the lowest offset that no value alive at the same time holds. One scratch
//! area after them serves the convolutions' im2col.
//!
//! Where the model loads with two threads or more, runs of small steps that form two
//! independent branches (a landmark model's heads) become forks: two lanes that two threads
//! compute at once ([`find_forks`]). Every buffer a fork touches stays alive through all of
//! it, and the second lane has its own scratch area, so the lanes never write where the other
//! reads; each step computes the same bits in either order.
//!
//! A graph plans when every input has a static shape (but for the batch) and float32 type.
//! The ops with a planned kernel whose inputs are all planned (or constant) make the steps;
//! the ops after the first without one (a detector's decoding: `TopKV2`, gathers, integer
//! arithmetic) make the plan's op-by-op tail. After the steps, the tail runs through the
//! op-by-op executor, seeded with the planned values it reads, and allocates as that does.
//! A graph whose first op has no planned kernel runs op by op, and
//! [`crate::GraphModel::plan_status`] says why.

use std::sync::Mutex;

use kernels::layers::conv_nhwc::{
    self, BandedDepthwisePlan, ConvPlan, ConvTransposePlan, PackedTransposedFilter,
};
use kernels::layers::packed_gemm::Epilogue;
use kernels::layers::pool::{pool2d_nhwc_dims, pool2d_nhwc_into};
use kernels::layers::resize::NhwcResize;
use kernels::layers::shape::{pad_constant_into, PermutePlan};
use kernels::layers::{NhwcConvGeom, ResizeMode};
use kernels::{DType, Tensor};

use crate::error::{GraphModelError, OpError, OpResult};
use crate::graph::{GNode, GraphModel, Op, ValueMeta};
use crate::ops_cpu::{
    self as ops, binary_f32_into_par, broadcast_shape, concat_into_par, prelu_into, unary_f32_into,
    Act, BinOp, HardSwish, Padding, Reduce, UnOp, MAX_CONCAT,
};

/// Why a graph has no compiled plan (its runs go op by op).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoPlan {
    /// An input's shape is not fixed (but for a leading batch of -1).
    DynamicShape(String),
    /// Something the plan has no kernel or form for.
    Unsupported(String),
}

impl std::fmt::Display for NoPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoPlan::DynamicShape(why) | NoPlan::Unsupported(why) => f.write_str(why),
        }
    }
}

/// Where a value lives during a planned run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// The `k`-th input, read in place.
    Feed(usize),
    /// A constant of the plan.
    Const(usize),
    /// An arena buffer (its offset is the memory plan's).
    Arena(usize),
    /// The `k`-th value the op-by-op tail computes for the outputs (never read by a step).
    Tail(usize),
}

/// A value: its place and shape.
#[derive(Clone, Debug, PartialEq)]
struct Slot {
    place: Place,
    shape: Vec<usize>,
}

impl Slot {
    fn len(&self) -> usize {
        self.shape.iter().product()
    }

    fn dims4(&self) -> OpResult<[usize; 4]> {
        <[usize; 4]>::try_from(self.shape.as_slice())
            .map_err(|_| OpError::new(format!("expected a rank-4 value, got {:?}", self.shape)))
    }
}

/// The kernel of a step, with everything about it that is known at load.
#[derive(Debug)]
enum Kernel {
    Conv {
        geom: NhwcConvGeom,
        plan: ConvPlan,
        /// The node holding the packed filter.
        filter: usize,
        act: Act,
    },
    Depthwise {
        geom: NhwcConvGeom,
        act: Act,
    },
    /// A depthwise convolution (the `Depthwise` step `depthwise`) computed band by band with
    /// the 1x1 expansion that alone feeds it (`expand`), the 1x1 projection that alone reads
    /// it (`project`), or both (`Conv` steps): the images between them are never written
    /// whole. The step itself only holds the input of the first and the output of the last,
    /// which each of them holds too; see [`Builder::fuse_banded`].
    Banded {
        expand: Option<Box<Step>>,
        depthwise: Box<Step>,
        project: Option<Box<Step>>,
        plan: Box<BandedDepthwisePlan>,
    },
    ConvTranspose {
        filter: Box<PackedTransposedFilter>,
        plan: ConvTransposePlan,
    },
    Binary(BinOp),
    Prelu,
    Unary(UnOp),
    AddN,
    Pool {
        max: bool,
        k: (usize, usize),
        s: (usize, usize),
        padding: Padding,
    },
    Pad {
        pairs: Vec<(usize, usize)>,
        value: f32,
    },
    Concat {
        /// Product of the output's dimensions before the axis.
        outer: usize,
    },
    Resize(Box<NhwcResize>),
    Transpose(Box<PermutePlan>),
    /// The `k`-th input, int32, cast to float32 (`ops_cpu::cast_i32_to_f32_into`).
    CastInput(usize),
    /// Which axes are reduced.
    Reduce {
        kind: Reduce,
        axes: Vec<bool>,
    },
}

/// One step: the graph node it computes, its kernel, its inputs and its output.
#[derive(Debug)]
struct Step {
    node: usize,
    kernel: Kernel,
    /// The kernel's operands. Conv: x, then the bias and the Prelu slope when the node has
    /// them (`bias`, `alpha`); Depthwise: x, filter, then the same.
    args: Vec<Slot>,
    bias: Option<Slot>,
    alpha: Option<Slot>,
    /// A convolution's fused `Add` (the node, and its other operand) and the activation
    /// after it (with Prelu's slope).
    residual: Option<(usize, Slot)>,
    act2: Act,
    alpha2: Option<Slot>,
    /// A hard swish fused after all that (see [`find_hard_swish`]).
    hard_swish: Option<HardSwish>,
    out: Slot,
}

impl Step {
    /// Every operand the step reads (those of the convolutions of a banded step too, but not
    /// the images between them).
    fn reads(&self) -> impl Iterator<Item = &Slot> {
        let stages = match &self.kernel {
            Kernel::Banded {
                expand,
                depthwise,
                project,
                ..
            } => Some(
                expand
                    .iter()
                    .chain([depthwise])
                    .chain(project)
                    .flat_map(|s| s.own_reads().skip(1)),
            ),
            _ => None,
        };
        self.own_reads().chain(stages.into_iter().flatten())
    }

    /// A step that computes `kernel` (a banded one) from `input` into `out`, for node `node`,
    /// with nothing else of its own.
    fn shell(node: usize, input: Slot, kernel: Kernel, out: Slot) -> Step {
        Step {
            node,
            kernel,
            args: vec![input],
            bias: None,
            alpha: None,
            residual: None,
            act2: Act::None,
            alpha2: None,
            hard_swish: None,
            out,
        }
    }

    /// The operands in the step's own fields.
    fn own_reads(&self) -> impl Iterator<Item = &Slot> {
        self.args
            .iter()
            .chain(&self.bias)
            .chain(&self.alpha)
            .chain(self.residual.as_ref().map(|r| &r.1))
            .chain(&self.alpha2)
    }
}

/// An output of a planned run: in the arena, or computed by the tail.
enum Delivered<'a> {
    Planned(&'a [f32]),
    Tail(Tensor),
}

/// A compiled plan for one set of outputs.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The output names it serves, as requested.
    names: Vec<String>,
    /// The input shapes it was planned for.
    feed_shapes: Vec<(DType, Vec<usize>)>,
    steps: Vec<Step>,
    consts: Vec<Tensor>,
    outputs: Vec<Slot>,
    /// The op-by-op tail: its nodes (a count), the planned values it reads (node, slot),
    /// and the outputs it computes (`Place::Tail(k)` is `tail_targets[k]`).
    tail_nodes: usize,
    boundary: Vec<(usize, Slot)>,
    tail_targets: Vec<(usize, usize)>,
    /// Offset of each arena buffer.
    offsets: Vec<usize>,
    /// Floats of the arena's values; the scratch of each lane follows them (see [`Fork`]).
    values_len: usize,
    scratch_len: [usize; 2],
    /// f64 accumulators of the reductions (the most one step of the lane needs), per lane.
    acc_len: [usize; 2],
    /// Runs of steps that two threads compute at once.
    forks: Vec<Fork>,
    /// The arena and the accumulators, held between runs (a run finding them busy uses
    /// fresh ones).
    arena: Mutex<(Vec<f32>, Vec<f64>)>,
}

/// The scratch floats and reduction accumulators the most demanding of `steps` needs.
fn scratch_and_acc<'a>(steps: impl Iterator<Item = &'a Step>) -> (usize, usize) {
    steps.fold((0, 0), |(scratch, acc), s| match &s.kernel {
        Kernel::Conv { plan, .. } => (scratch.max(plan.scratch), acc),
        Kernel::ConvTranspose { plan, .. } => (scratch.max(plan.scratch), acc),
        Kernel::Banded { plan, .. } => (scratch.max(plan.scratch), acc),
        Kernel::Reduce { .. } => (scratch, acc.max(s.out.len())),
        _ => (scratch, acc),
    })
}

/// Time per op type of a run (`GRAPH_MODEL_PROFILE=1`): calls and milliseconds.
type Profile<'m> = std::collections::BTreeMap<&'m str, (u32, f64)>;

/// The arena's start, shared by the two lanes of a fork.
#[derive(Clone, Copy)]
struct ArenaPtr(*mut f32);

// SAFETY: the lanes of a fork write disjoint ranges of the arena (see `Plan::execute`).
unsafe impl Send for ArenaPtr {}
// SAFETY: as above.
unsafe impl Sync for ArenaPtr {}

/// Arena offsets are multiples of this many floats (64 bytes: with the allocator's alignment
/// of the arena, usually whole cache lines).
const ALIGN: usize = 16;

impl Plan {
    /// Plans `model` for the outputs `names` (resolved to `targets`). `Err` says why the graph
    /// cannot be planned (it then runs op by op).
    pub(crate) fn build(
        model: &GraphModel,
        names: &[String],
        targets: &[(usize, usize)],
    ) -> Result<Plan, NoPlan> {
        let nodes = model.nodes();
        let unsupported = NoPlan::Unsupported;
        let mut feed_shapes = Vec::new();
        let mut feeds = Vec::new();
        for info in model.inputs() {
            if info.dtype != DType::F32 && info.dtype != DType::I32 {
                return Err(unsupported(format!(
                    "input \"{}\" is {}, not float32 or int32",
                    info.name, info.dtype
                )));
            }
            let shape: Vec<usize> = info
                .shape
                .iter()
                .enumerate()
                .map(|(d, &n)| match n {
                    -1 if d == 0 => Ok(1),
                    n if n >= 0 => Ok(n as usize),
                    _ => Err(NoPlan::DynamicShape(format!(
                        "input \"{}\" has no static shape ({:?})",
                        info.name, info.shape
                    ))),
                })
                .collect::<Result<_, _>>()?;
            if shape.is_empty() {
                return Err(NoPlan::DynamicShape(format!(
                    "input \"{}\" declares no shape",
                    info.name
                )));
            }
            feeds.push(Tensor::zeros(info.dtype, &shape).map_err(|e| unsupported(e.to_string()))?);
            feed_shapes.push((info.dtype, shape));
        }
        let feed_index = |i: usize| model.input_nodes().iter().position(|&j| j == i);
        let mut dynamic = vec![false; nodes.len()];
        for &i in model.order() {
            dynamic[i] =
                feed_index(i).is_some() || nodes[i].inputs.iter().any(|&(j, _)| dynamic[j]);
        }
        // Which ops become steps, found from the graph alone, before the dry run (which costs
        // a run): those with a kernel whose computed inputs are all planned. The other
        // computed ones make the tail.
        let needed = model.needed_nodes(targets);
        let mut planned = vec![false; nodes.len()];
        for &i in model.order() {
            // A `MatMul` is planned as a 1x1 convolution of its packed constant operand.
            let packed = !matches!(nodes[i].op, Op::MatMul { .. })
                || model.packed_operand(&nodes[i]).is_some();
            planned[i] = needed[i]
                && dynamic[i]
                && (feed_index(i).is_some()
                    || (has_kernel(&nodes[i].op)
                        && packed
                        && nodes[i]
                            .inputs
                            .iter()
                            .all(|&(j, _)| !dynamic[j] || planned[j])));
        }
        // The ops left to the tail; `Err` when no op would be planned.
        let split = |planned: &[bool], why: &str| -> Result<Vec<usize>, NoPlan> {
            let tail: Vec<usize> = model
                .order()
                .iter()
                .copied()
                .filter(|&i| needed[i] && dynamic[i] && !planned[i])
                .collect();
            if model
                .order()
                .iter()
                .any(|&i| planned[i] && feed_index(i).is_none())
            {
                return Ok(tail);
            }
            Err(match tail.first() {
                Some(&i) => unsupported(format!(
                    "node \"{}\" (op {}): {why}",
                    nodes[i].name, nodes[i].op_name
                )),
                None => unsupported("no op computes from an input".into()),
            })
        };
        split(&planned, "the plan has no kernel for this op")?;
        for &(i, k) in targets {
            if planned[i] && k != 0 {
                return Err(unsupported(format!(
                    "output {k} of node \"{}\" is requested",
                    nodes[i].name
                )));
            }
        }
        // The dry run: every value's type and shape, and the values of the constant part.
        let keep: Vec<bool> = dynamic.iter().map(|d| !d).collect();
        let mut metas = Vec::new();
        let values = kernels::process::in_pool(|| {
            model.evaluate_with(&feeds, Vec::new(), targets, Some((&keep, &mut metas)))
        })
        .map_err(|e| unsupported(format!("the dry run failed: {e}")))?;
        // With the dry run's types: only float32 values are planned, and an int32 input is
        // read by its cast to float32 alone; an op that takes or gives another type joins the
        // tail, with what reads it.
        let is_f32 = |i: usize| matches!(metas[i].as_deref(), Some([m]) if m.dtype == DType::F32);
        // A comparison of float32 values that only casts to float32 read is planned as the
        // 1 or 0 they read (CenterNet's peaks, `Equal(heatmap, MaxPool(heatmap))`, are
        // 1.3 million of them, which took 3 ms op by op).
        let mut cast_readers = vec![(0usize, 0usize); nodes.len()];
        for n in nodes {
            for &(j, _) in &n.inputs {
                cast_readers[j].0 += 1;
                cast_readers[j].1 += usize::from(n.op == Op::Cast(DType::F32));
            }
        }
        let read_as_f32 = |i: usize| {
            matches!(nodes[i].op, Op::Binary(op) if op.is_comparison())
                && nodes[i].inputs.iter().all(|&(j, _)| is_f32(j))
                && cast_readers[i].0 > 0
                && cast_readers[i].0 == cast_readers[i].1
                && targets.iter().all(|&(t, _)| t != i)
        };
        for &i in model.order() {
            if !planned[i] || feed_index(i).is_some() {
                continue;
            }
            let reads_int_feed = nodes[i]
                .inputs
                .iter()
                .any(|&(j, _)| feed_index(j).is_some() && !is_f32(j));
            planned[i] = (is_f32(i) || read_as_f32(i))
                && nodes[i]
                    .inputs
                    .iter()
                    .all(|&(j, _)| !dynamic[j] || planned[j])
                && (!reads_int_feed || nodes[i].op == Op::Cast(DType::F32));
        }
        let tail = split(&planned, "only float32 values are planned")?;
        // How many computed nodes (and outputs) read each value: a convolution read once can
        // take the `Add` and activation after it.
        let mut readers = vec![0usize; nodes.len()];
        for &i in model.order() {
            if dynamic[i] && metas[i].is_some() {
                for &(j, _) in &nodes[i].inputs {
                    readers[j] += 1;
                }
            }
        }
        for &(i, _) in targets {
            readers[i] += 1;
        }
        let mut b = Builder {
            nodes,
            readers,
            values: &values,
            metas: &metas,
            slots: vec![None; nodes.len()],
            consts: Vec::new(),
            steps: Vec::new(),
            buffers: Vec::new(),
            hard_swish: vec![None; nodes.len()],
            fused_into: vec![None; nodes.len()],
            int_feeds: feed_shapes.iter().map(|(d, _)| *d == DType::I32).collect(),
        };
        for (conv, swish) in find_hard_swish(nodes, &b.readers, &planned, &values) {
            b.hard_swish[conv] = Some(swish);
        }
        for &i in model.order() {
            if !planned[i] {
                continue;
            }
            b.plan_node(i, feed_index(i)).map_err(|e| {
                unsupported(format!(
                    "node \"{}\" (op {}): {e}",
                    nodes[i].name, nodes[i].op_name
                ))
            })?;
        }
        // The planned values the tail reads, each once.
        let mut boundary: Vec<(usize, Slot)> = Vec::new();
        for &t in &tail {
            for &(j, _) in &nodes[t].inputs {
                // The tail reads the inputs itself.
                if planned[j] && feed_index(j).is_none() && !boundary.iter().any(|(n, _)| *n == j) {
                    let slot = b.slot_of(j).map_err(|e| unsupported(e.0))?;
                    boundary.push((j, slot));
                }
            }
        }
        let mut tail_targets = Vec::new();
        let mut outputs = Vec::with_capacity(targets.len());
        for &(i, k) in targets {
            if planned[i] {
                outputs.push(b.slot_of(i).map_err(|e| unsupported(e.0))?);
                continue;
            }
            let shape = metas[i]
                .as_ref()
                .and_then(|m| m.get(k))
                .map(|m| m.shape.clone())
                .ok_or_else(|| {
                    unsupported(format!("node \"{}\" has no output {k}", nodes[i].name))
                })?;
            outputs.push(Slot {
                place: Place::Tail(tail_targets.len()),
                shape,
            });
            tail_targets.push((i, k));
        }
        let live: Vec<Place> = live_to_end(&outputs, &boundary).map(|s| s.place).collect();
        b.fuse_banded(&live).map_err(|e| unsupported(e.0))?;
        let forks = if rayon::current_num_threads() > 1 {
            find_forks(&b.steps, nodes)
        } else {
            Vec::new()
        };
        let (offsets, values_len) = b.memory_plan(live_to_end(&outputs, &boundary), &forks);
        // Lane 0 runs every step outside the forks too; lane 1 only its steps of the forks.
        let lane1 = forks.iter().flat_map(|f| &f.lanes[1]).map(|&s| &b.steps[s]);
        let (all, lane1) = (scratch_and_acc(b.steps.iter()), scratch_and_acc(lane1));
        let (scratch_len, acc_len) = ([all.0, lane1.0], [all.1, lane1.1]);
        Ok(Plan {
            names: names.to_vec(),
            feed_shapes,
            steps: b.steps,
            consts: b.consts,
            outputs,
            tail_nodes: tail.len(),
            boundary,
            tail_targets,
            offsets,
            values_len,
            scratch_len,
            acc_len,
            arena: Mutex::new((
                touched(values_len + scratch_len[0] + scratch_len[1]),
                vec![0f64; acc_len[0] + acc_len[1]],
            )),
            forks,
        })
    }

    /// Checks the memory plan: buffers alive at the same time hold disjoint ranges inside
    /// the values' part of the arena.
    #[cfg(test)]
    pub(crate) fn check_memory_plan(&self) -> Result<(), String> {
        let n = self.offsets.len();
        let sizes: Vec<usize> = (0..n)
            .map(|b| {
                self.steps
                    .iter()
                    .find(|s| s.out.place == Place::Arena(b))
                    .map_or(0, |s| s.out.len())
            })
            .collect();
        let live = live_to_end(&self.outputs, &self.boundary);
        let (first, last) = lifetimes(&self.steps, live, &self.forks, n);
        for a in 0..n {
            if self.offsets[a] + sizes[a] > self.values_len {
                return Err(format!("buffer {a} ends past the arena"));
            }
            for b in a + 1..n {
                let together = first[a] <= last[b] && first[b] <= last[a];
                let apart = self.offsets[a] + sizes[a] <= self.offsets[b]
                    || self.offsets[b] + sizes[b] <= self.offsets[a];
                if together && !apart {
                    return Err(format!("buffers {a} and {b} overlap while both alive"));
                }
            }
        }
        // Each fork's lanes hold its steps, each once, in order, and neither reads what the
        // other writes.
        for f in &self.forks {
            let mut all: Vec<usize> = f.lanes.concat();
            all.sort_unstable();
            if all != (f.start..f.end).collect::<Vec<_>>()
                || f.lanes.iter().any(|l| l.windows(2).any(|w| w[0] >= w[1]))
            {
                return Err(format!(
                    "fork {}..{} has lanes {:?}",
                    f.start, f.end, f.lanes
                ));
            }
            let writes = |lane: &[usize]| -> Vec<Place> {
                lane.iter().map(|&s| self.steps[s].out.place).collect()
            };
            // Whatever the order of the lanes' steps, the buffers a fork touches are all
            // alive during it: none may share memory.
            let mut touched: Vec<usize> = Vec::new();
            for step in &self.steps[f.start..f.end] {
                for r in step.reads().chain([&step.out]) {
                    if let Place::Arena(b) = r.place {
                        if !touched.contains(&b) {
                            touched.push(b);
                        }
                    }
                }
            }
            for (k, &a) in touched.iter().enumerate() {
                for &b in &touched[k + 1..] {
                    if self.offsets[a] < self.offsets[b] + sizes[b]
                        && self.offsets[b] < self.offsets[a] + sizes[a]
                    {
                        return Err(format!(
                            "buffers {a} and {b} of fork {} share memory",
                            f.start
                        ));
                    }
                }
            }
            for (l, lane) in f.lanes.iter().enumerate() {
                let other = writes(&f.lanes[1 - l]);
                if let Some(s) = lane
                    .iter()
                    .find(|&&s| self.steps[s].reads().any(|r| other.contains(&r.place)))
                {
                    return Err(format!("step {s} of lane {l} reads the other lane's value"));
                }
            }
        }
        Ok(())
    }

    /// Nodes of the op-by-op tail.
    pub(crate) fn tail_nodes(&self) -> usize {
        self.tail_nodes
    }

    /// Bytes of the arena (values and scratch).
    pub(crate) fn arena_bytes(&self) -> usize {
        (self.values_len + self.scratch_len[0] + self.scratch_len[1]) * std::mem::size_of::<f32>()
    }

    /// Steps in forks.
    pub(crate) fn forked_steps(&self) -> usize {
        self.forks.iter().map(|f| f.end - f.start).sum()
    }

    /// Steps of the plan (the op-by-op executor runs one per node).
    pub(crate) fn steps(&self) -> usize {
        self.steps.len()
    }

    /// The output names it serves.
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether a run of `names` on `feeds` is the one planned.
    pub(crate) fn serves(&self, names: &[String], feeds: &[Tensor]) -> bool {
        names == self.names.as_slice() && self.serves_feeds(feeds)
    }

    /// Whether `feeds` have the planned shapes and types.
    pub(crate) fn serves_feeds(&self, feeds: &[Tensor]) -> bool {
        feeds.len() == self.feed_shapes.len()
            && feeds
                .iter()
                .zip(&self.feed_shapes)
                .all(|(t, (dtype, s))| t.dtype() == *dtype && t.shape() == s.as_slice())
    }

    /// The shapes of the planned outputs.
    pub(crate) fn output_shapes(&self) -> impl Iterator<Item = &[usize]> {
        self.outputs.iter().map(|s| s.shape.as_slice())
    }

    /// A planned run returning new tensors.
    pub(crate) fn run(
        &self,
        model: &GraphModel,
        feeds: &[Tensor],
    ) -> Result<Vec<Tensor>, GraphModelError> {
        let mut outs: Vec<Option<Tensor>> = vec![None; self.outputs.len()];
        self.execute(model, feeds, |k, value| {
            outs[k] = Some(match value {
                Delivered::Planned(v) => Tensor::from_vec(&self.outputs[k].shape, v.to_vec())
                    .map_err(|e| model.plan_error(e.to_string()))?,
                Delivered::Tail(t) => t,
            });
            Ok(())
        })?;
        outs.into_iter()
            .map(|t| t.ok_or_else(|| model.plan_error("an output was not computed".into())))
            .collect()
    }

    /// A planned run writing the outputs into `outs` (one slice per output, of its size).
    /// Allocates nothing when the arena is free (it is, unless another thread runs the
    /// same model at the same time) and the plan has no op-by-op tail.
    pub(crate) fn run_into(
        &self,
        model: &GraphModel,
        feeds: &[Tensor],
        outs: &mut [&mut [f32]],
    ) -> Result<(), GraphModelError> {
        if outs.len() != self.outputs.len()
            || outs
                .iter()
                .zip(&self.outputs)
                .any(|(o, s)| o.len() != s.len())
        {
            return Err(model.plan_error(format!(
                "{} output buffers do not fit the planned outputs {:?}",
                outs.len(),
                self.outputs.iter().map(|s| &s.shape).collect::<Vec<_>>()
            )));
        }
        self.execute(model, feeds, |k, value| {
            let v = match &value {
                Delivered::Planned(v) => *v,
                Delivered::Tail(t) => ops::f32s(t).map_err(|e| model.plan_error(e.0))?,
            };
            if v.len() != outs[k].len() {
                return Err(model.plan_error(format!(
                    "output {k} has {} values, {:?} were planned",
                    v.len(),
                    self.outputs[k].shape
                )));
            }
            outs[k].copy_from_slice(v);
            Ok(())
        })
    }

    /// Runs the steps, then the tail, and hands each output to `deliver` (its index, its
    /// value) while the arena is still held.
    fn execute(
        &self,
        model: &GraphModel,
        feeds: &[Tensor],
        mut deliver: impl FnMut(usize, Delivered<'_>) -> Result<(), GraphModelError>,
    ) -> Result<(), GraphModelError> {
        let mut fresh;
        let mut held = self.arena.try_lock();
        let (arena, acc) = match held.as_deref_mut() {
            Ok((a, acc)) => (a, acc),
            Err(_) => {
                fresh = (
                    vec![0f32; self.values_len + self.scratch_len[0] + self.scratch_len[1]],
                    vec![0f64; self.acc_len[0] + self.acc_len[1]],
                );
                (&mut fresh.0, &mut fresh.1)
            }
        };
        let base = ArenaPtr(arena.as_mut_ptr());
        // GRAPH_MODEL_PROFILE=1: time per op type, printed to stderr after each run.
        let mut profile: Option<Profile<'_>> = crate::graph::profiling().then(Default::default);
        let (acc0, acc1) = acc.split_at_mut(self.acc_len[0]);
        let mut next = 0;
        for fork in self.forks.iter().chain([&Fork {
            start: self.steps.len(),
            end: self.steps.len(),
            lanes: [Vec::new(), Vec::new()],
        }]) {
            // SAFETY: `base` is the arena, borrowed mutably above for this run alone.
            unsafe {
                self.run_steps(
                    model,
                    next..fork.start,
                    feeds,
                    (base, 0),
                    acc0,
                    &mut profile,
                )
            }?;
            if fork.start == fork.end {
                break;
            }
            if rayon::current_num_threads() < 2 {
                // SAFETY: as above.
                let all = fork.start..fork.end;
                unsafe { self.run_steps(model, all, feeds, (base, 0), acc0, &mut profile) }?;
            } else {
                let mut profiles = [profile.as_ref().map(|_| Profile::new()), None];
                profiles[1] = profiles[0].clone();
                let [p0, p1] = &mut profiles;
                let (l0, l1) = (fork.lanes[0].iter().copied(), fork.lanes[1].iter().copied());
                // SAFETY: as above; the two lanes write apart: no buffer alive during the fork
                // shares memory with another (`lifetimes`), no step of a lane reads what
                // the other writes (`find_forks`), and each lane has its own scratch and
                // accumulators.
                let (r0, r1) = rayon::join(
                    || unsafe { self.run_steps(model, l0, feeds, (base, 0), acc0, p0) },
                    || unsafe { self.run_steps(model, l1, feeds, (base, 1), acc1, p1) },
                );
                r0?;
                r1?;
                if let Some(p) = profile.as_mut() {
                    for (op, (count, ms)) in profiles.into_iter().flatten().flatten() {
                        let e = p.entry(op).or_default();
                        e.0 += count;
                        e.1 += ms;
                    }
                }
            }
            next = fork.end;
        }
        if let Some(p) = profile {
            crate::graph::print_profile(model.file(), "planned", p.into_iter());
        }
        let base = base.0;
        let mut tail_values = Vec::new();
        if !self.tail_targets.is_empty() {
            let seeds = self
                .boundary
                .iter()
                .map(|(node, slot)| {
                    // SAFETY: no step runs any more; `read` stays inside the arena.
                    let v = unsafe { self.read(slot, feeds, base) }
                        .map_err(|e| model.plan_error(e.0))?;
                    let t = Tensor::from_vec(&slot.shape, v.to_vec())
                        .map_err(|e| model.plan_error(e.to_string()))?;
                    Ok((*node, t))
                })
                .collect::<Result<Vec<_>, GraphModelError>>()?;
            tail_values = model.evaluate_with(feeds, seeds, &self.tail_targets, None)?;
        }
        for (k, slot) in self.outputs.iter().enumerate() {
            let value = match slot.place {
                Place::Tail(t) => {
                    let (i, out) = self.tail_targets[t];
                    // A clone shares the data; an output may be requested twice.
                    let v = tail_values
                        .get(i)
                        .and_then(Option::as_ref)
                        .and_then(|v| v.get(out))
                        .cloned()
                        .ok_or_else(|| {
                            model.plan_error(format!(
                                "node \"{}\" has no output {out}",
                                model.nodes()[i].name
                            ))
                        })?;
                    Delivered::Tail(v)
                }
                // SAFETY: no step runs any more; `base` points to the arena, which `read`
                // stays inside of.
                _ => Delivered::Planned(
                    unsafe { self.read(slot, feeds, base) }.map_err(|e| model.plan_error(e.0))?,
                ),
            };
            deliver(k, value)?;
        }
        Ok(())
    }

    /// Runs the steps `which` in order, in lane `lane`'s scratch and with its accumulators
    /// `acc`, timing each into `profile` when there is one.
    ///
    /// # Safety
    /// `base` must point to this plan's arena, borrowed mutably by the caller for the whole
    /// run; steps running at the same time on other threads must write apart from these.
    unsafe fn run_steps<'m>(
        &self,
        model: &'m GraphModel,
        which: impl Iterator<Item = usize>,
        feeds: &[Tensor],
        (base, lane): (ArenaPtr, usize),
        acc: &mut [f64],
        profile: &mut Option<Profile<'m>>,
    ) -> Result<(), GraphModelError> {
        for step in which.map(|s| &self.steps[s]) {
            let started = profile.as_ref().map(|_| std::time::Instant::now());
            // SAFETY: the caller's.
            unsafe { self.exec(model, step, feeds, base.0, lane, acc) }.map_err(|e| {
                let node = &model.nodes()[step.node];
                GraphModelError::Node {
                    file: model.file().to_path_buf(),
                    node: node.name.clone(),
                    op: node.op_name.clone(),
                    msg: e.0,
                }
            })?;
            if let (Some(p), Some(t)) = (profile.as_mut(), started) {
                let e = p.entry(&model.nodes()[step.node].op_name).or_default();
                e.0 += 1;
                e.1 += t.elapsed().as_secs_f64() * 1e3;
            }
        }
        Ok(())
    }

    /// The data of `slot`.
    ///
    /// # Safety
    /// `base` must point to this plan's arena (its values, then the lanes' scratch), and no
    /// mutable slice of the arena may overlap the slot's buffer while the result lives.
    unsafe fn read<'a>(
        &'a self,
        slot: &Slot,
        feeds: &'a [Tensor],
        base: *mut f32,
    ) -> OpResult<&'a [f32]> {
        let len = slot.len();
        let data = match slot.place {
            Place::Feed(k) => {
                ops::f32s(feeds.get(k).ok_or_else(|| OpError::new("missing input"))?)?
            }
            Place::Const(c) => ops::f32s(&self.consts[c])?,
            Place::Tail(_) => return Err(OpError::new("a step reads the tail's value")),
            Place::Arena(b) => {
                let off = self.offsets[b];
                if off + len > self.values_len {
                    return Err(OpError::new("a value lies outside the arena"));
                }
                // SAFETY: inside the arena (checked above); the caller guarantees that nothing
                // writes to this range meanwhile.
                return Ok(unsafe { std::slice::from_raw_parts(base.add(off), len) });
            }
        };
        if data.len() != len {
            return Err(OpError::new(format!(
                "a value of {} floats where {:?} was planned",
                data.len(),
                slot.shape
            )));
        }
        Ok(data)
    }

    /// The epilogue of `step`'s convolution (`len` values of `c` channels): its bias and
    /// activation, and what the plan fused after them.
    ///
    /// # Safety
    /// As [`Plan::read`]'s, for the step's operands.
    unsafe fn epilogue_of<'a>(
        &'a self,
        step: &'a Step,
        len: usize,
        c: usize,
        feeds: &'a [Tensor],
        base: *mut f32,
    ) -> OpResult<ops::ConvEpilogue<'a>> {
        // SAFETY: the caller's.
        let read = |slot: &Option<Slot>| -> OpResult<Option<&'a [f32]>> {
            slot.as_ref()
                .map(|s| unsafe { self.read(s, feeds, base) })
                .transpose()
        };
        let (bias, alpha, alpha2) = (read(&step.bias)?, read(&step.alpha)?, read(&step.alpha2)?);
        let residual = step
            .residual
            .as_ref()
            // SAFETY: the caller's.
            .map(|r| unsafe { self.read(&r.1, feeds, base) })
            .transpose()?;
        let e = ops::ConvEpilogue::new(len, c, bias, act_of(&step.kernel), alpha)?;
        let e = match residual {
            Some(r) => e.then_add(r, step.act2, alpha2)?,
            None => e,
        };
        Ok(e.then_hard_swish(step.hard_swish))
    }

    /// The packed filter and the epilogue (`c` channels) of a banded step's 1x1 convolution
    /// `stage`, where it has one.
    ///
    /// # Safety
    /// As [`Plan::read`]'s, for the stage's operands.
    unsafe fn pointwise_stage<'a>(
        &'a self,
        model: &'a GraphModel,
        stage: &'a Option<Box<Step>>,
        c: usize,
        feeds: &'a [Tensor],
        base: *mut f32,
    ) -> OpResult<Option<(&'a conv_nhwc::PackedFilter, ops::ConvEpilogue<'a>)>> {
        let Some(s) = stage.as_deref() else {
            return Ok(None);
        };
        // SAFETY: the caller's.
        let e = unsafe { self.epilogue_of(s, s.out.len(), c, feeds, base) }?;
        Ok(Some((conv_filter(model.nodes(), s)?, e)))
    }

    /// Runs one step, in lane `lane`'s scratch.
    ///
    /// # Safety
    /// `base` must point to this plan's arena (`values_len` floats, then a scratch area of
    /// `scratch_len` per lane), borrowed mutably by the caller for the whole run; steps
    /// running at the same time on other threads write apart from this one.
    unsafe fn exec(
        &self,
        model: &GraphModel,
        step: &Step,
        feeds: &[Tensor],
        base: *mut f32,
        lane: usize,
        acc: &mut [f64],
    ) -> OpResult<()> {
        let Place::Arena(b) = step.out.place else {
            return Err(OpError::new("a step's output is not in the arena"));
        };
        let (off, len) = (self.offsets[b], step.out.len());
        if off + len > self.values_len {
            return Err(OpError::new("a value lies outside the arena"));
        }
        let Some(&scratch_len) = self.scratch_len.get(lane) else {
            return Err(OpError::new(
                "a step runs in a lane the plan has no scratch for",
            ));
        };
        // SAFETY: the memory plan gives this step's output a range of the arena that no value
        // alive during the step holds (its inputs are alive until they are read, here), and
        // the lanes' scratch areas lie after every value; all stay inside the arena (checked
        // above), and the arena is borrowed mutably by this run alone.
        let out = unsafe { std::slice::from_raw_parts_mut(base.add(off), len) };
        let scratch = unsafe {
            let at = self.values_len + self.scratch_len[..lane].iter().sum::<usize>();
            std::slice::from_raw_parts_mut(base.add(at), scratch_len)
        };
        // SAFETY: as above: the inputs' buffers do not overlap `out` nor the scratch.
        let arg = |k: usize| -> OpResult<&[f32]> {
            let slot = step
                .args
                .get(k)
                .ok_or_else(|| OpError::new("missing operand"))?;
            unsafe { self.read(slot, feeds, base) }
        };
        // SAFETY: as above: the epilogue's operands are alive, so apart from `out`.
        let epilogue = |c: usize| unsafe { self.epilogue_of(step, len, c, feeds, base) };
        let shape = |k: usize| step.args[k].shape.as_slice();
        match &step.kernel {
            Kernel::Conv {
                geom, plan, filter, ..
            } => {
                let f = packed_filter(model, *filter)?;
                let e = epilogue(plan.out[3])?;
                Ok(conv_nhwc::conv2d_nhwc_packed(
                    arg(0)?,
                    f,
                    *geom,
                    plan,
                    out,
                    scratch,
                    &|row0, rows| e.apply(row0, rows),
                )?)
            }
            Kernel::Depthwise { geom, .. } => {
                let (x, w) = (step.args[0].dims4()?, step.args[1].dims4()?);
                let e = epilogue(w[2] * w[3])?;
                let (x_data, w_data) = (arg(0)?, arg(1)?);
                Ok(conv_nhwc::depthwise_conv2d_nhwc_then(
                    x_data,
                    x,
                    w_data,
                    w,
                    *geom,
                    out,
                    &|row0, rows| e.apply(row0, rows),
                )?)
            }
            Kernel::Banded {
                expand,
                depthwise,
                project,
                plan,
            } => {
                // SAFETY: as above: the convolutions' operands are alive, so apart from `out`
                // and the scratch.
                let (expand, project) = unsafe {
                    (
                        self.pointwise_stage(model, expand, plan.expanded[3], feeds, base)?,
                        self.pointwise_stage(model, project, plan.out[3], feeds, base)?,
                    )
                };
                // SAFETY: as above, for the depthwise convolution's operands.
                let d = unsafe {
                    self.epilogue_of(
                        depthwise,
                        depthwise.out.len(),
                        plan.depthwise[3],
                        feeds,
                        base,
                    )
                }?;
                let w = depthwise
                    .args
                    .get(1)
                    .ok_or_else(|| OpError::new("missing operand"))?;
                // SAFETY: as above: the filter is a constant or a live value.
                let w = unsafe { self.read(w, feeds, base) }?;
                let expand_epilogue = |row0, rows: &mut [f32]| {
                    if let Some((_, e)) = &expand {
                        e.apply(row0, rows)
                    }
                };
                let project_epilogue = |row0, rows: &mut [f32]| {
                    if let Some((_, e)) = &project {
                        e.apply(row0, rows)
                    }
                };
                Ok(conv_nhwc::banded_depthwise_nhwc(
                    arg(0)?,
                    expand
                        .as_ref()
                        .map(|(f, _)| (*f, &expand_epilogue as Epilogue<'_>)),
                    w,
                    &|row0, rows| d.apply(row0, rows),
                    project
                        .as_ref()
                        .map(|(f, _)| (*f, &project_epilogue as Epilogue<'_>)),
                    plan,
                    out,
                    scratch,
                )?)
            }
            Kernel::ConvTranspose { filter, plan } => Ok(conv_nhwc::conv_transpose2d_nhwc_packed(
                arg(0)?,
                filter,
                plan,
                out,
                scratch,
            )?),
            Kernel::Binary(op) => binary_f32_into_par(
                *op,
                (arg(0)?, shape(0)),
                (arg(1)?, shape(1)),
                &step.out.shape,
                out,
            ),
            Kernel::Prelu => prelu_into(
                (arg(0)?, shape(0)),
                (arg(1)?, shape(1)),
                &step.out.shape,
                out,
            ),
            Kernel::Unary(op) => unary_f32_into(*op, arg(0)?, out),
            Kernel::AddN => {
                out.copy_from_slice(arg(0)?);
                for k in 1..step.args.len() {
                    // `binary`'s addition, element by element, as `add_n` sums.
                    for (o, &v) in out.iter_mut().zip(arg(k)?) {
                        *o += v;
                    }
                }
                Ok(())
            }
            Kernel::Pool { max, k, s, padding } => Ok(pool2d_nhwc_into(
                arg(0)?,
                step.args[0].dims4()?,
                *k,
                *s,
                *padding,
                *max,
                out,
            )?),
            Kernel::Pad { pairs, value } => {
                Ok(pad_constant_into(arg(0)?, shape(0), pairs, *value, out)?)
            }
            Kernel::Concat { outer } => {
                let mut parts = [(&[][..], 0usize); MAX_CONCAT];
                for (k, part) in parts.iter_mut().enumerate().take(step.args.len()) {
                    *part = (arg(k)?, step.args[k].len() / (*outer).max(1));
                }
                concat_into_par(&parts[..step.args.len()], *outer, out)
            }
            Kernel::Resize(resize) => Ok(resize.run(arg(0)?, out)?),
            Kernel::Transpose(permute) => Ok(permute.run(arg(0)?, out)?),
            Kernel::CastInput(k) => {
                let x = feeds
                    .get(*k)
                    .ok_or_else(|| OpError::new("missing input"))?
                    .as_slice::<i32>()?;
                if x.len() != out.len() {
                    return Err(OpError::new("the input does not have the planned size"));
                }
                ops::cast_i32_to_f32_into(x, out);
                Ok(())
            }
            Kernel::Reduce { kind, axes } => {
                let acc = acc
                    .get_mut(..len)
                    .ok_or_else(|| OpError::new("the reduction's accumulators are missing"))?;
                ops::reduce_into(arg(0)?, shape(0), axes, *kind, acc, out)
            }
        }
    }
}

/// `len` zeros, written at load: `vec![0; len]` asks the allocator for zeroed memory, which
/// for an arena of megabytes is fresh pages from the system, each faulted in by the first
/// run's first write to it (CenterNet's first run took 13-21 ms longer than the next).
fn touched(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    v.resize(len, 0.0);
    v
}

/// The slots read after the last step: the outputs, and the planned values the tail reads.
fn live_to_end<'a>(
    outputs: &'a [Slot],
    boundary: &'a [(usize, Slot)],
) -> impl Iterator<Item = &'a Slot> {
    outputs.iter().chain(boundary.iter().map(|(_, s)| s))
}

/// The step that writes each of `n` arena buffers and the last step that reads it (or one of
/// its views); `steps.len()` for the outputs and what the tail reads, which are read after
/// the last step. A buffer alive at any step of a fork is alive through the whole fork: its
/// lanes run their steps in any interleaving.
fn lifetimes<'a>(
    steps: &[Step],
    live_to_end: impl Iterator<Item = &'a Slot>,
    forks: &[Fork],
    n: usize,
) -> (Vec<usize>, Vec<usize>) {
    let (mut first, mut last) = (vec![usize::MAX; n], vec![0usize; n]);
    for (s, step) in steps.iter().enumerate() {
        if let Place::Arena(b) = step.out.place {
            first[b] = first[b].min(s);
            last[b] = last[b].max(s);
        }
        for slot in step.reads() {
            if let Place::Arena(b) = slot.place {
                last[b] = last[b].max(s);
            }
        }
    }
    for slot in live_to_end {
        if let Place::Arena(b) = slot.place {
            last[b] = steps.len();
        }
    }
    for fork in forks {
        for b in 0..n {
            if first[b] < fork.end && last[b] >= fork.start {
                first[b] = first[b].min(fork.start);
                last[b] = last[b].max(fork.end - 1);
            }
        }
    }
    (first, last)
}

/// Steps `start..end` of a plan that two threads compute at once, each in one of two lanes:
/// no step of one lane reads a value that a step of the other writes. Iris's two branches
/// (the contour and the iris, 21 small steps each at 4x4 and 2x2 pixels) are one: steps too
/// small to split between threads, which at two threads ran one after the other.
#[derive(Debug)]
struct Fork {
    start: usize,
    end: usize,
    /// The steps of each lane, in the plan's order.
    lanes: [Vec<usize>; 2],
}

/// A step's fixed cost, in multiply-adds: about what a small step takes beyond its
/// arithmetic (a few microseconds at 20-40 G multiply-adds a second).
const STEP_COST: f64 = 50_000.0;

/// The most work of a step in a fork, in multiply-adds: larger steps are split between the
/// threads themselves, and a fork of them measured slower (CenterNet's and MoveNet's heads).
const MAX_FORKED_STEP: f64 = 1_000_000.0;

/// The least work of the lighter lane for a fork to pay for its hand-off between the
/// threads, in multiply-adds (about 20 microseconds of work).
const MIN_FORK_COST: f64 = 500_000.0;

/// About what step `step` costs, in multiply-adds (or values written, for the steps without).
fn step_cost(step: &Step, nodes: &[GNode]) -> f64 {
    let out = step.out.len() as f64;
    let work = match &step.kernel {
        Kernel::Conv { .. } => conv_filter(nodes, step)
            .map(|f| out * f.dims()[..3].iter().product::<usize>() as f64)
            .unwrap_or(out),
        // Each output of a depthwise convolution reads its own inputs: about 4 multiply-adds'
        // time per tap.
        Kernel::Depthwise { .. } => step
            .args
            .get(1)
            .map(|w| 4.0 * out * w.shape.iter().take(2).product::<usize>() as f64)
            .unwrap_or(out),
        Kernel::Banded {
            expand,
            depthwise,
            project,
            ..
        } => {
            return expand
                .iter()
                .chain([depthwise])
                .chain(project)
                .map(|s| step_cost(s, nodes))
                .sum()
        }
        // A value written from memory takes about as long as 8 multiply-adds in cache.
        _ => 8.0 * out,
    };
    STEP_COST + work
}

/// The forks of a plan: from each step on, the run of steps (none larger than
/// [`MAX_FORKED_STEP`]) whose dependencies make two or more separate groups, split between two lanes (largest group first, each to the lighter
/// lane) so that the lighter lane has the most work, when that is at least
/// [`MIN_FORK_COST`]; the search goes on after the fork's last step.
fn find_forks(steps: &[Step], nodes: &[GNode]) -> Vec<Fork> {
    let n = steps.len();
    let cost: Vec<f64> = steps.iter().map(|s| step_cost(s, nodes)).collect();
    let mut writer = std::collections::HashMap::new();
    for (s, step) in steps.iter().enumerate() {
        if let Place::Arena(b) = step.out.place {
            writer.insert(b, s);
        }
    }
    // The steps before `s` that step `s` reads from.
    let sources: Vec<Vec<usize>> = steps
        .iter()
        .enumerate()
        .map(|(s, step)| {
            step.reads()
                .filter_map(|r| match r.place {
                    Place::Arena(b) => writer.get(&b).copied().filter(|&w| w < s),
                    _ => None,
                })
                .collect()
        })
        .collect();
    // Splits the steps `start..` between two lanes by their groups (`group[k]`: step
    // `start + k`'s), largest group first, each to the lighter lane; returns the lanes and
    // the lighter one's work.
    let split = |group: &[usize], start: usize| {
        let mut sums: Vec<(usize, f64)> = Vec::new();
        for (k, &g) in group.iter().enumerate() {
            match sums.iter_mut().find(|(h, _)| *h == g) {
                Some(e) => e.1 += cost[start + k],
                None => sums.push((g, cost[start + k])),
            }
        }
        sums.sort_by(|a, b| b.1.total_cmp(&a.1));
        let (mut lane_of, mut load) = (Vec::with_capacity(sums.len()), [0.0f64; 2]);
        for (g, c) in sums {
            let lane = usize::from(load[1] < load[0]);
            load[lane] += c;
            lane_of.push((g, lane));
        }
        let mut lanes = [Vec::new(), Vec::new()];
        for (k, g) in group.iter().enumerate() {
            let lane = lane_of.iter().find(|(h, _)| h == g).map_or(0, |e| e.1);
            lanes[lane].push(start + k);
        }
        (lanes, load[0].min(load[1]))
    };
    // The root of `k` in a union-find forest.
    fn root(parent: &mut [usize], mut k: usize) -> usize {
        while parent[k] != k {
            parent[k] = parent[parent[k]];
            k = parent[k];
        }
        k
    }
    let mut forks = Vec::new();
    let mut start = 0;
    while start < n {
        // The group of each step of `start..=end` (as offsets from `start`): steps joined by
        // what they read from one another.
        let mut parent: Vec<usize> = Vec::with_capacity(n - start);
        let mut best: Option<(f64, Fork)> = None;
        for end in start..n {
            if cost[end] > MAX_FORKED_STEP {
                break;
            }
            parent.push(end - start);
            for &w in sources[end].iter().filter(|&&w| w >= start) {
                let (a, b) = (root(&mut parent, w - start), root(&mut parent, end - start));
                parent[a] = b;
            }
            let group: Vec<usize> = (0..parent.len()).map(|k| root(&mut parent, k)).collect();
            let (lanes, lighter) = split(&group, start);
            if lighter >= MIN_FORK_COST && best.as_ref().is_none_or(|(b, _)| lighter > *b) {
                let end = end + 1;
                best = Some((lighter, Fork { start, end, lanes }));
            }
        }
        match best {
            Some((_, fork)) => {
                start = fork.end;
                forks.push(fork);
            }
            None => start += 1,
        }
    }
    forks
}

/// A hard swish fused into a convolution's epilogue: its last node, its constants, and the
/// three nodes between.
type FusedSwish = (usize, HardSwish, [usize; 3]);

/// MobileNetV3's hard swishes that can run in the epilogue of the step computing their input
/// `x`: `y = Mul(Mul(scale, x), Relu6(Add(x, shift)))` (operands of each op in either
/// order), `scale` and `shift` constant scalars, all of it planned, and nothing else reading
/// `x` or the values between. Returns `(x, (y, constants, [the Mul, Add and Relu6 between]))`.
fn find_hard_swish(
    nodes: &[GNode],
    readers: &[usize],
    planned: &[bool],
    values: &[Option<Vec<Tensor>>],
) -> Vec<(usize, FusedSwish)> {
    let scalar = |j: usize| -> Option<f32> {
        let t = values[j].as_ref()?.first()?;
        match ops::f32s(t).ok()? {
            [v] => Some(*v),
            _ => None,
        }
    };
    // The two operands of binary node `i` (first outputs), the one `pick` accepts first.
    let operands = |i: usize, pick: &dyn Fn(usize) -> bool| -> Option<(usize, usize)> {
        match nodes[i].inputs[..] {
            [(p, 0), (q, 0)] if pick(p) => Some((p, q)),
            [(p, 0), (q, 0)] if pick(q) => Some((q, p)),
            _ => None,
        }
    };
    let mut found = Vec::new();
    for (y, node) in nodes.iter().enumerate() {
        if node.op != Op::Binary(BinOp::Mul) || !planned[y] {
            continue;
        }
        let is = |j: usize, op: Op| nodes[j].op == op && planned[j] && readers[j] == 1;
        let Some((m, r)) = operands(y, &|j| is(j, Op::Binary(BinOp::Mul))) else {
            continue;
        };
        if !is(r, Op::Unary(UnOp::Act(Act::Relu6))) {
            continue;
        }
        let Some(&(a, 0)) = nodes[r].inputs.first() else {
            continue;
        };
        if !is(a, Op::Binary(BinOp::Add)) {
            continue;
        }
        let Some((scale, x)) = operands(m, &|j| scalar(j).is_some()) else {
            continue;
        };
        let Some((shift, x2)) = operands(a, &|j| scalar(j).is_some()) else {
            continue;
        };
        if x != x2 || !planned[x] || readers[x] != 2 {
            continue;
        }
        if let (Some(scale), Some(shift)) = (scalar(scale), scalar(shift)) {
            found.push((x, (y, HardSwish { scale, shift }, [m, a, r])));
        }
    }
    found
}

/// Whether the plan has a kernel for `op` (or makes it a view); the builder still checks
/// operands and types.
fn has_kernel(op: &Op) -> bool {
    match op {
        Op::Identity
        | Op::Unpack { .. }
        | Op::Reshape
        | Op::ExpandDims
        | Op::Squeeze { .. }
        | Op::Conv { .. }
        | Op::ConvTranspose { .. }
        | Op::BiasAdd
        | Op::Prelu
        | Op::Unary(_)
        | Op::AddN
        | Op::Pool { .. }
        | Op::Pad { .. }
        | Op::Concat
        | Op::Reduce { .. }
        | Op::Cast(DType::F32)
        | Op::Transpose
        | Op::MatMul { .. }
        | Op::Resize { .. } => true,
        Op::Binary(op) => op.is_arithmetic() || op.is_comparison(),
        _ => false,
    }
}

/// The filter packed at load in node `filter` of `model`.
fn packed_filter(model: &GraphModel, filter: usize) -> OpResult<&conv_nhwc::PackedFilter> {
    packed_in(model.nodes(), filter)
}

/// The filter packed at load in node `filter` of `nodes`.
fn packed_in(nodes: &[GNode], filter: usize) -> OpResult<&conv_nhwc::PackedFilter> {
    nodes
        .get(filter)
        .and_then(|n| n.packed_filter.as_ref())
        .ok_or_else(|| OpError::new("the filter was not packed"))
}

/// The packed filter of a `Conv` step, in `nodes`.
fn conv_filter<'a>(nodes: &'a [GNode], step: &Step) -> OpResult<&'a conv_nhwc::PackedFilter> {
    match step.kernel {
        Kernel::Conv { filter, .. } => packed_in(nodes, filter),
        _ => Err(OpError::new("a banded stage is not a convolution")),
    }
}

/// The activation of a convolution's kernel (`None` for other kernels).
fn act_of(kernel: &Kernel) -> Act {
    match kernel {
        Kernel::Conv { act, .. } | Kernel::Depthwise { act, .. } => *act,
        _ => Act::None,
    }
}

/// Plans the nodes one by one.
struct Builder<'a> {
    nodes: &'a [GNode],
    /// Planned readers of each node's value.
    readers: Vec<usize>,
    /// The dry run's values of the constant part, and every value's type and shape.
    values: &'a [Option<Vec<Tensor>>],
    metas: &'a [Option<Vec<ValueMeta>>],
    /// The planned value of each node (dynamic ones, and constants once used).
    slots: Vec<Option<Slot>>,
    consts: Vec<Tensor>,
    steps: Vec<Step>,
    /// Floats of each arena buffer.
    buffers: Vec<usize>,
    /// The hard swishes to fuse, by the convolution they follow: (the swish's last node, its
    /// constants, the three nodes between).
    hard_swish: Vec<Option<FusedSwish>>,
    /// Nodes computed by another's step: a fused hard swish's, by its convolution; the
    /// swish's last node takes the convolution's place.
    fused_into: Vec<Option<usize>>,
    /// Whether each input is int32 (read only by its cast to float32).
    int_feeds: Vec<bool>,
}

impl Builder<'_> {
    /// The dry run's value of node `i`.
    fn value(&self, i: usize) -> OpResult<&Tensor> {
        self.values[i]
            .as_ref()
            .and_then(|v| v.first())
            .ok_or_else(|| OpError::new(format!("node \"{}\" has no value", self.nodes[i].name)))
    }

    /// The value of node `i`, which must not depend on an input (a constant of the plan).
    fn static_value(&self, i: usize) -> OpResult<&Tensor> {
        match &self.slots[i] {
            Some(s) if !matches!(s.place, Place::Const(_)) => Err(OpError::new(format!(
                "its operand \"{}\" is computed from the input; only a constant is planned",
                self.nodes[i].name
            ))),
            _ => self.value(i),
        }
    }

    /// The slot of node `i`'s value: its planned place, or a new constant of the plan.
    fn slot_of(&mut self, i: usize) -> OpResult<Slot> {
        if let Some(s) = &self.slots[i] {
            return Ok(s.clone());
        }
        let t = self.value(i)?;
        if t.dtype() != DType::F32 {
            return Err(OpError::new(format!(
                "operand \"{}\" is {}; only float32 values are planned",
                self.nodes[i].name,
                t.describe()
            )));
        }
        let s = Slot {
            place: Place::Const(self.consts.len()),
            shape: t.shape().to_vec(),
        };
        self.consts.push(t.clone());
        self.slots[i] = Some(s.clone());
        Ok(s)
    }

    /// The node that input `k` of node `i` reads.
    fn input_node(&self, i: usize, k: usize) -> OpResult<usize> {
        self.nodes[i]
            .inputs
            .get(k)
            .map(|r| r.0)
            .ok_or_else(|| OpError::new(format!("has no input {k}")))
    }

    /// The slot of input `k` of node `i` (output 0 of its producer).
    fn input(&mut self, i: usize, k: usize) -> OpResult<Slot> {
        match self.nodes[i].inputs.get(k) {
            Some(&(j, 0)) => self.slot_of(j),
            Some(&(j, out)) => Err(OpError::new(format!(
                "reads output {out} of \"{}\"; only first outputs are planned",
                self.nodes[j].name
            ))),
            None => Err(OpError::new(format!("has no input {k}"))),
        }
    }

    /// The bias (input 2, when the fused op has one) and Prelu slope (the input after) of a
    /// fused convolution or product, node `i`.
    fn bias_and_slope(
        &mut self,
        i: usize,
        has_bias: bool,
        act: Act,
    ) -> OpResult<(Option<Slot>, Option<Slot>)> {
        let bias = if has_bias {
            Some(self.input(i, 2)?)
        } else {
            None
        };
        let alpha = if act == Act::Prelu {
            Some(self.input(i, if has_bias { 3 } else { 2 })?)
        } else {
            None
        };
        Ok((bias, alpha))
    }

    fn plan_node(&mut self, i: usize, feed: Option<usize>) -> OpResult<()> {
        let node = &self.nodes[i];
        if let Some(k) = feed {
            let shape = self.metas[i]
                .as_deref()
                .and_then(|m| m.first())
                .map(|m| m.shape.clone())
                .ok_or_else(|| OpError::new("the input has no value"))?;
            self.slots[i] = Some(Slot {
                place: Place::Feed(k),
                shape,
            });
            return Ok(());
        }
        let meta = match self.metas[i].as_deref() {
            Some([meta]) => meta,
            other => {
                return Err(OpError::new(format!(
                    "{} outputs; only ops with one output are planned",
                    other.map_or(0, <[ValueMeta]>::len)
                )))
            }
        };
        let read_as_f32 =
            matches!(node.op, Op::Binary(op) if op.is_comparison()) && meta.dtype == DType::Bool;
        if meta.dtype != DType::F32 && !read_as_f32 {
            return Err(OpError::new(format!(
                "its value is {}{:?}; only float32 values are planned",
                meta.dtype, meta.shape
            )));
        }
        let shape = meta.shape.clone();
        if let Some(conv) = self.fused_into[i] {
            // Computed by the convolution's epilogue; the swish's value is in its place.
            if self.hard_swish[conv].is_some_and(|(last, ..)| last == i) {
                self.slots[i] = self.slots[conv].clone();
            }
            return Ok(());
        }
        if self.fuse_into_last_step(i, &shape)? {
            return Ok(());
        }
        let (mut bias, mut alpha) = (None, None);
        let (kernel, args) = match &node.op {
            Op::Cast(DType::F32) => {
                let src = self.input(i, 0)?;
                match src.place {
                    // Planning made sure that only an int32 input or a float32 value is cast.
                    Place::Feed(k) if self.int_feeds.get(k) == Some(&true) => {
                        (Kernel::CastInput(k), vec![])
                    }
                    _ => {
                        self.slots[i] = Some(Slot {
                            place: src.place,
                            shape,
                        });
                        return Ok(());
                    }
                }
            }
            // `Unpack` of an axis of size 1 (one output, checked above): the input, less the axis.
            Op::Identity
            | Op::Reshape
            | Op::ExpandDims
            | Op::Squeeze { .. }
            | Op::Unpack { .. } => {
                // A view: the input's place under the new shape.
                let src = self.input(i, 0)?;
                self.slots[i] = Some(Slot {
                    place: src.place,
                    shape,
                });
                return Ok(());
            }
            &Op::Conv {
                depthwise,
                geom,
                bias: has_bias,
                act,
            } => {
                let x = self.input(i, 0)?;
                (bias, alpha) = self.bias_and_slope(i, has_bias, act)?;
                if depthwise {
                    let w = self.input(i, 1)?;
                    if !matches!(w.place, Place::Const(_)) {
                        return Err(OpError::new(
                            "its filter is computed; only constant filters are planned",
                        ));
                    }
                    (Kernel::Depthwise { geom, act }, vec![x, w])
                } else {
                    let filter = node.inputs.get(1).map(|r| r.0).unwrap_or(usize::MAX);
                    let Some(packed) = self
                        .nodes
                        .get(filter)
                        .and_then(|n| n.packed_filter.as_ref())
                    else {
                        return Err(OpError::new(
                            "its filter is computed; only constant filters are planned",
                        ));
                    };
                    let plan = conv_nhwc::conv2d_nhwc_plan(x.dims4()?, packed, geom)?;
                    (
                        Kernel::Conv {
                            geom,
                            plan,
                            filter,
                            act,
                        },
                        vec![x],
                    )
                }
            }
            &Op::MatMul {
                bias: has_bias,
                act,
                ..
            } => {
                let a = self.input(i, 0)?;
                let &[m, k] = a.shape.as_slice() else {
                    return Err(OpError::new("only products of 2-D operands are planned"));
                };
                (bias, alpha) = self.bias_and_slope(i, has_bias, act)?;
                let filter = self.input_node(i, 1)?;
                let Some(packed) = self.nodes[filter].packed_filter.as_ref() else {
                    return Err(OpError::new(
                        "its right operand is computed; only constant ones are planned",
                    ));
                };
                let x = Slot {
                    place: a.place,
                    shape: vec![1, 1, m, k],
                };
                let plan = conv_nhwc::conv2d_nhwc_plan(x.dims4()?, packed, ops::MATMUL_GEOM)?;
                (
                    Kernel::Conv {
                        geom: ops::MATMUL_GEOM,
                        plan,
                        filter,
                        act,
                    },
                    vec![x],
                )
            }
            &Op::ConvTranspose { strides, padding } => {
                let w = self.static_value(self.input_node(i, 1)?)?;
                let w4 = w
                    .view::<f32>()?
                    .into_dimensionality::<ndarray::Ix4>()
                    .map_err(|_| OpError::new(format!("the filter {} is not 4-D", w.describe())))?;
                let filter = PackedTransposedFilter::new(w4)?;
                let x = self.input(i, 2)?;
                let [_, oh, ow, _] = <[usize; 4]>::try_from(shape.as_slice())
                    .map_err(|_| OpError::new("its output is not 4-D"))?;
                let plan = conv_nhwc::conv_transpose2d_nhwc_plan(
                    x.dims4()?,
                    &filter,
                    (oh, ow),
                    strides,
                    padding,
                )?;
                (
                    Kernel::ConvTranspose {
                        filter: Box::new(filter),
                        plan,
                    },
                    vec![x],
                )
            }
            // A comparison only where casts to float32 alone read it (checked before).
            &Op::Binary(op) if op.is_arithmetic() || op.is_comparison() => {
                let (a, b) = (self.input(i, 0)?, self.input(i, 1)?);
                if broadcast_shape(&a.shape, &b.shape)? != shape {
                    return Err(OpError::new("its operands do not broadcast to its value"));
                }
                (Kernel::Binary(op), vec![a, b])
            }
            Op::BiasAdd => (
                Kernel::Binary(BinOp::Add),
                vec![self.input(i, 0)?, self.input(i, 1)?],
            ),
            Op::Prelu => (Kernel::Prelu, vec![self.input(i, 0)?, self.input(i, 1)?]),
            &Op::Unary(op) => {
                let x = self.input(i, 0)?;
                if x.shape != shape {
                    return Err(OpError::new("its value's shape differs from its operand's"));
                }
                (Kernel::Unary(op), vec![x])
            }
            Op::AddN => {
                let args = (0..node.inputs.len())
                    .map(|k| self.input(i, k))
                    .collect::<OpResult<Vec<_>>>()?;
                if args.is_empty() || args.iter().any(|a| a.shape != shape) {
                    return Err(OpError::new(
                        "only sums of operands of one shape are planned",
                    ));
                }
                (Kernel::AddN, args)
            }
            &Op::Pool { max, k, s, padding } => {
                let x = self.input(i, 0)?;
                if pool2d_nhwc_dims("pool", x.dims4()?, k, s, padding)?.as_slice() != shape {
                    return Err(OpError::new("its value's shape differs from the pooling's"));
                }
                (Kernel::Pool { max, k, s, padding }, vec![x])
            }
            &Op::Pad { v2 } => {
                let x = self.input(i, 0)?;
                let pads = ops::int_values(self.static_value(self.input_node(i, 1)?)?)?;
                let value = if v2 {
                    let v = self.static_value(self.input_node(i, 2)?)?;
                    ops::f32s(v)
                        .ok()
                        .and_then(|v| v.first().copied())
                        .unwrap_or(0.0)
                } else {
                    0.0
                };
                if pads.len() != 2 * x.shape.len() || pads.iter().any(|&p| p < 0) {
                    return Err(OpError::new(format!(
                        "paddings {pads:?} do not fit {:?}",
                        x.shape
                    )));
                }
                let pairs = pads
                    .chunks_exact(2)
                    .map(|p| (p[0] as usize, p[1] as usize))
                    .collect();
                (Kernel::Pad { pairs, value }, vec![x])
            }
            Op::Concat => {
                let Some((&(axis_node, _), parts)) = node.inputs.split_last() else {
                    return Err(OpError::new("has no inputs"));
                };
                let axis = ops::int_values(self.static_value(axis_node)?)?;
                let [axis] = axis[..] else {
                    return Err(OpError::new("its axis is not a scalar"));
                };
                let axis = ops::norm_axis(axis, shape.len())?;
                if parts.is_empty() || parts.len() > MAX_CONCAT {
                    return Err(OpError::new(format!(
                        "{} inputs; 1 to {MAX_CONCAT} are planned",
                        parts.len()
                    )));
                }
                let args = (0..parts.len())
                    .map(|k| self.input(i, k))
                    .collect::<OpResult<Vec<_>>>()?;
                let outer: usize = shape[..axis].iter().product();
                (Kernel::Concat { outer }, args)
            }
            &Op::Resize {
                align_corners,
                half_pixel,
            } => {
                let x = self.input(i, 0)?;
                let [_, oh, ow, _] = <[usize; 4]>::try_from(shape.as_slice())
                    .map_err(|_| OpError::new("its output is not 4-D"))?;
                let mode = ResizeMode::TfjsBilinear {
                    align_corners,
                    half_pixel_centers: half_pixel,
                };
                let resize = NhwcResize::new(x.dims4()?, (oh, ow), mode)?;
                (Kernel::Resize(Box::new(resize)), vec![x])
            }
            Op::Transpose => {
                let x = self.input(i, 0)?;
                let perm = ops::int_values(self.static_value(self.input_node(i, 1)?)?)?;
                let perm = perm
                    .iter()
                    .map(|&a| ops::norm_axis(a, x.shape.len()))
                    .collect::<OpResult<Vec<_>>>()?;
                let permute = PermutePlan::new(&x.shape, &perm)?;
                if perm.iter().map(|&a| x.shape[a]).ne(shape.iter().copied()) {
                    return Err(OpError::new(
                        "its value's shape differs from the permutation's",
                    ));
                }
                (Kernel::Transpose(Box::new(permute)), vec![x])
            }
            &Op::Reduce { kind, .. } => {
                let x = self.input(i, 0)?;
                let axes = ops::int_values(self.static_value(self.input_node(i, 1)?)?)?;
                let axes = ops::reduced_axes(&axes, x.shape.len())?;
                if ops::reduced_shape(&x.shape, &axes)
                    .iter()
                    .product::<usize>()
                    != shape.iter().product::<usize>()
                {
                    return Err(OpError::new(
                        "its value's size differs from the reduction's",
                    ));
                }
                (Kernel::Reduce { kind, axes }, vec![x])
            }
            _ => return Err(OpError::new("the plan has no kernel for this op")),
        };
        let out = Slot {
            place: Place::Arena(self.buffers.len()),
            shape,
        };
        self.buffers.push(out.len());
        self.slots[i] = Some(out.clone());
        let mut hard_swish = None;
        if let (Some((last, h, between)), Kernel::Conv { .. } | Kernel::Depthwise { .. }) =
            (self.hard_swish[i], &kernel)
        {
            hard_swish = Some(h);
            for j in between.into_iter().chain([last]) {
                self.fused_into[j] = Some(i);
            }
        } else {
            self.hard_swish[i] = None;
        }
        self.steps.push(Step {
            node: i,
            kernel,
            args,
            bias,
            alpha,
            residual: None,
            act2: Act::None,
            alpha2: None,
            hard_swish,
            out,
        });
        Ok(())
    }

    /// Computes each depthwise convolution (one filter per channel) band by band
    /// ([`conv_nhwc::banded_depthwise_nhwc`]) together with the 1x1 expansion before it and the
    /// 1x1 projection after it, where nothing else reads the image between the two (`live`:
    /// what is read after the steps) and that image is at least
    /// [`conv_nhwc::BANDED_MIN_BYTES`]: it is then never written whole, and its size drops
    /// out of the arena.
    fn fuse_banded(&mut self, live: &[Place]) -> OpResult<()> {
        let (threads, nodes) = (rayon::current_num_threads(), self.nodes);
        // Whether the value of step `k` is read by step `reader` alone, as its input and
        // nothing else (not as a residual too), and is large enough.
        let only_reader = |steps: &[Step], k: usize, reader: usize| {
            let place = steps[k].out.place;
            let elsewhere = steps.iter().enumerate().any(|(s, step)| {
                (s != reader && step.reads().any(|r| r.place == place))
                    || (s != k && step.out.place == place)
            }) || live.contains(&place);
            !elsewhere
                && steps[reader].args.first() == Some(&steps[k].out)
                && steps[reader].reads().filter(|r| r.place == place).count() == 1
                && steps[k].out.len() * 4 >= conv_nhwc::BANDED_MIN_BYTES
        };
        // A 1x1 convolution at stride 1 without padding, and its packed filter.
        let pointwise = |step: &Step| {
            let Kernel::Conv { geom, filter, .. } = &step.kernel else {
                return None;
            };
            let f = nodes.get(*filter)?.packed_filter.as_ref()?;
            let (x, y) = (step.args.first()?.dims4().ok()?, step.out.dims4().ok()?);
            (f.dims()[..2] == [1, 1] && geom.strides == (1, 1) && x[1..3] == y[1..3]).then_some(f)
        };
        // A depthwise convolution with one filter per channel.
        let depthwise = |step: &Step| {
            matches!(step.kernel, Kernel::Depthwise { .. })
                && step.args.get(1).is_some_and(|w| w.shape.get(3) == Some(&1))
        };
        // Expansions: a 1x1 convolution and the depthwise convolution right after it.
        let mut k = 1;
        while k < self.steps.len() {
            let (expand, dw) = (&self.steps[k - 1], &self.steps[k]);
            let fits = depthwise(dw) && only_reader(&self.steps, k - 1, k);
            let (Some(f), true, Place::Arena(b)) = (pointwise(expand), fits, expand.out.place)
            else {
                k += 1;
                continue;
            };
            let (Kernel::Depthwise { geom, .. }, Some(x), Some(w)) =
                (&dw.kernel, expand.args.first(), dw.args.get(1))
            else {
                k += 1;
                continue;
            };
            let (x, w) = (x.clone(), w.dims4()?);
            let plan =
                conv_nhwc::banded_depthwise_plan(x.dims4()?, Some(f), w, *geom, None, threads)?;
            let dw = self.steps.remove(k);
            let expand = self.steps.remove(k - 1);
            self.buffers[b] = 0;
            let (node, out) = (dw.node, dw.out.clone());
            let kernel = Kernel::Banded {
                expand: Some(Box::new(expand)),
                depthwise: Box::new(dw),
                project: None,
                plan: Box::new(plan),
            };
            self.steps.insert(k - 1, Step::shell(node, x, kernel, out));
        }
        // Projections: a 1x1 convolution that alone reads a depthwise convolution, which then
        // runs there (its operands are all computed before it, so also before there).
        let mut j = 1;
        while j < self.steps.len() {
            let projection = &self.steps[j];
            let source = self.steps[..j].iter().rposition(|s| {
                Some(&s.out) == projection.args.first()
                    && (depthwise(s) || matches!(&s.kernel, Kernel::Banded { project: None, .. }))
            });
            let (Some(k), Some(f)) = (source, pointwise(projection)) else {
                j += 1;
                continue;
            };
            if !only_reader(&self.steps, k, j) {
                j += 1;
                continue;
            }
            let Place::Arena(b) = self.steps[k].out.place else {
                j += 1;
                continue;
            };
            let source = self.steps.remove(k);
            let j = j - 1;
            let projection = self.steps.remove(j);
            let (expand, depthwise, x) = match source.kernel {
                Kernel::Banded {
                    expand, depthwise, ..
                } => (expand, depthwise, source.args[0].clone()),
                Kernel::Depthwise { .. } => {
                    let x = source.args[0].clone();
                    (None, Box::new(source), x)
                }
                _ => {
                    return Err(OpError::new(
                        "a banded source is not a depthwise convolution",
                    ))
                }
            };
            let (Kernel::Depthwise { geom, .. }, Some(w)) =
                (&depthwise.kernel, depthwise.args.get(1))
            else {
                return Err(OpError::new(
                    "a banded source is not a depthwise convolution",
                ));
            };
            let expand_filter = expand
                .as_deref()
                .map(|s| conv_filter(nodes, s))
                .transpose()?;
            let plan = conv_nhwc::banded_depthwise_plan(
                x.dims4()?,
                expand_filter,
                w.dims4()?,
                *geom,
                Some(f),
                threads,
            )?;
            self.buffers[b] = 0;
            let (node, out) = (projection.node, projection.out.clone());
            let kernel = Kernel::Banded {
                expand,
                depthwise,
                project: Some(Box::new(projection)),
                plan: Box::new(plan),
            };
            self.steps.insert(j, Step::shell(node, x, kernel, out));
        }
        Ok(())
    }

    /// Folds node `i` into a planned convolution when it is `Add(conv, residual)` of the
    /// conv's shape, or the activation of such an `Add`, each the only reader of what it
    /// follows: the convolution's epilogue then adds and activates, in the same order and
    /// with the same operations as the separate ops. The convolution's step moves to the end
    /// of the plan, after the residual's: nothing else reads its value, so nothing between
    /// needs it earlier. Returns whether it did.
    fn fuse_into_last_step(&mut self, i: usize, shape: &[usize]) -> OpResult<bool> {
        let node = &self.nodes[i];
        let produces =
            |s: &Step, j: usize| s.node == j || s.residual.as_ref().is_some_and(|r| r.0 == j);
        for &(follows, out) in &node.inputs {
            if out != 0 || self.readers[follows] != 1 {
                continue;
            }
            let Some(pos) = self.steps.iter().rposition(|s| produces(s, follows)) else {
                continue;
            };
            let step = self.steps.remove(pos);
            self.steps.push(step);
            let fused = self.fuse_into_last(i, shape)?;
            if fused {
                return Ok(true);
            }
            // Back where it was: the plan's order stays the graph's.
            if let Some(step) = self.steps.pop() {
                self.steps.insert(pos, step);
            }
        }
        Ok(false)
    }

    /// [`Builder::fuse_into_last_step`] once the step that node `i` follows is the last one.
    fn fuse_into_last(&mut self, i: usize, shape: &[usize]) -> OpResult<bool> {
        let node = &self.nodes[i];
        let Some(last) = self.steps.last() else {
            return Ok(false);
        };
        if !matches!(last.kernel, Kernel::Conv { .. } | Kernel::Depthwise { .. })
            || last.out.shape != shape
        {
            return Ok(false);
        }
        let (conv, out, residual, act2) = (
            last.node,
            last.out.clone(),
            last.residual.as_ref().map(|r| r.0),
            last.act2,
        );
        match node.op {
            Op::Binary(BinOp::Add) if residual.is_none() && node.inputs.len() == 2 => {
                for (c, r) in [(0, 1), (1, 0)] {
                    let ((c, c_out), (r, r_out)) = (node.inputs[c], node.inputs[r]);
                    if c != conv || c_out != 0 || r_out != 0 || r == conv || self.readers[conv] != 1
                    {
                        continue;
                    }
                    let res = self.slot_of(r)?;
                    if res.shape != out.shape {
                        continue;
                    }
                    if let Some(step) = self.steps.last_mut() {
                        step.residual = Some((i, res));
                    }
                    self.slots[i] = Some(out);
                    return Ok(true);
                }
                Ok(false)
            }
            Op::Unary(UnOp::Act(_)) | Op::Prelu
                if act2 == Act::None
                    && residual.is_some()
                    && node.inputs.first() == residual.map(|a| (a, 0)).as_ref()
                    && residual.is_some_and(|a| self.readers[a] == 1) =>
            {
                let (act, alpha) = match node.op {
                    Op::Unary(UnOp::Act(act)) if act != Act::Prelu => (act, None),
                    Op::Prelu => {
                        let alpha = self.input(i, 1)?;
                        // A slope per channel or one for all (the epilogue's forms).
                        let c = out.shape.last().copied().unwrap_or(0);
                        let per_channel = alpha.shape.last() == Some(&c)
                            && alpha.shape.iter().rev().skip(1).all(|&d| d == 1);
                        if !(per_channel || alpha.len() == 1) {
                            return Ok(false);
                        }
                        (Act::Prelu, Some(alpha))
                    }
                    _ => return Ok(false),
                };
                if let Some(step) = self.steps.last_mut() {
                    step.act2 = act;
                    step.alpha2 = alpha;
                }
                self.slots[i] = Some(out);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// TFLite's greedy-by-size placement (see the module documentation): the offset of each
    /// buffer, and the floats they span.
    fn memory_plan<'a>(
        &self,
        live_to_end: impl Iterator<Item = &'a Slot>,
        forks: &[Fork],
    ) -> (Vec<usize>, usize) {
        let n = self.buffers.len();
        let (first, last) = lifetimes(&self.steps, live_to_end, forks, n);
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&b| std::cmp::Reverse(self.buffers[b]));
        let mut placed: Vec<(usize, usize, usize)> = Vec::with_capacity(n);
        let mut offsets = vec![0usize; n];
        let mut total = 0;
        for b in order {
            let size = self.buffers[b].div_ceil(ALIGN) * ALIGN;
            // The ranges held by buffers alive at the same time, by offset.
            let mut taken: Vec<(usize, usize)> = placed
                .iter()
                .filter(|&&(_, _, o)| first[o] <= last[b] && first[b] <= last[o])
                .map(|&(start, end, _)| (start, end))
                .collect();
            taken.sort_unstable();
            let mut offset = 0;
            for (start, end) in taken {
                if offset + size <= start {
                    break;
                }
                offset = offset.max(end);
            }
            offsets[b] = offset;
            placed.push((offset, offset + size, b));
            total = total.max(offset + size);
        }
        (offsets, total)
    }
}
