//! An external head, built as a `cdylib` and loaded by path from a pipeline:
//!
//! ```toml
//! [plugins]
//! libraries = ["target/debug/libcustom_head.so"]
//!
//! [nodes.rescored]
//! plugin = "score_filter"
//! inputs = { instances = "detector.instances" }
//! min_score = 0.3
//! class_weights = [1.0, 0.5]   # score of class c is multiplied by class_weights[c]
//! ```
//!
//! `score_filter` re-scores instances per class, drops those below `min_score` or outside
//! `keep_classes`, sorts by score and keeps at most `max_instances`. Every per-instance tensor
//! (masks, keypoints, ...) is filtered with the same rows. It is written exactly as a built-in
//! node: implement `Node`, declare a `NodeSpec`, and call `export_plugin!`.

use plugin_sdk::{
    export_plugin, DType, FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs,
    ParamSpec, ParamType, ParamValue, Params, PortKind, PortSpec, Tensor, Value,
};

export_plugin!(name: "custom_head", version: env!("CARGO_PKG_VERSION"), kinds: kinds);

/// The node kinds this library provides.
pub fn kinds() -> Vec<NodeKind> {
    let spec = NodeSpec::new(
        "score_filter",
        "Re-scores instances per class and keeps the confident ones (example external head)",
    )
    .input(PortSpec::new("instances", PortKind::Instances, "detections to filter").dtype(DType::F32).shape("N,4"))
    .output(PortSpec::new("instances", PortKind::Instances, "kept detections, best first").dtype(DType::F32).shape("N,4"))
    .param(ParamSpec::optional(
        "min_score",
        ParamType::Float,
        ParamValue::Float(0.5),
        "instances scoring below this (after re-scoring) are dropped",
    ))
    .param(ParamSpec::optional(
        "class_weights",
        ParamType::FloatList,
        ParamValue::FloatList(Vec::new()),
        "score multiplier per class id (classes beyond the list keep their score)",
    ))
    .param(ParamSpec::optional(
        "keep_classes",
        ParamType::IntList,
        ParamValue::IntList(Vec::new()),
        "class ids to keep (empty: all)",
    ))
    .param(ParamSpec::optional(
        "max_instances",
        ParamType::Int,
        ParamValue::Int(100),
        "keep at most this many instances",
    ))
    .param(ParamSpec::optional(
        "panic_on_frame",
        ParamType::Int,
        ParamValue::Int(-1),
        "panic on this frame index (demonstrates that the engine contains plugin panics); -1: never",
    ));
    vec![NodeKind::new(spec, |p| {
        Ok(Box::new(ScoreFilter::new(p)?) as Box<dyn Node>)
    })]
}

struct ScoreFilter {
    min_score: f32,
    class_weights: Vec<f32>,
    keep_classes: Vec<i64>,
    max_instances: usize,
    panic_on_frame: i64,
}

impl ScoreFilter {
    fn new(p: &Params) -> Result<ScoreFilter, NodeError> {
        let max = p.int("max_instances")?;
        if max < 0 {
            return Err(format!("parameter \"max_instances\" must be >= 0, got {max}").into());
        }
        Ok(ScoreFilter {
            min_score: p.float("min_score")? as f32,
            class_weights: p
                .float_list("class_weights")?
                .into_iter()
                .map(|w| w as f32)
                .collect(),
            keep_classes: p.int_list("keep_classes")?,
            max_instances: max as usize,
            panic_on_frame: p.int("panic_on_frame")?,
        })
    }
}

/// Rows `rows` of a tensor whose first dimension indexes instances.
fn gather_rows(t: &Tensor, rows: &[usize]) -> Result<Tensor, NodeError> {
    fn pick<T: plugin_sdk::kernels::Element>(
        t: &Tensor,
        rows: &[usize],
    ) -> Result<Tensor, NodeError> {
        let data = t.as_slice::<T>()?;
        let row = t.shape()[1..].iter().product::<usize>();
        let mut out = Vec::with_capacity(rows.len() * row);
        for &r in rows {
            out.extend_from_slice(&data[r * row..(r + 1) * row]);
        }
        let mut shape = t.shape().to_vec();
        shape[0] = rows.len();
        Ok(Tensor::from_vec(&shape, out)?)
    }
    match t.dtype() {
        DType::F32 => pick::<f32>(t, rows),
        DType::F16 => pick::<plugin_sdk::kernels::f16>(t, rows),
        DType::U8 => pick::<u8>(t, rows),
        DType::I32 => pick::<i32>(t, rows),
        DType::I64 => pick::<i64>(t, rows),
        DType::Bool => pick::<bool>(t, rows),
    }
}

impl Node for ScoreFilter {
    fn process(&mut self, frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        if self.panic_on_frame >= 0 && frame.index == self.panic_on_frame as u64 {
            panic!("score_filter was asked to panic on frame {}", frame.index);
        }
        let input = inputs.value("instances")?;
        let scores = input.tensor("scores")?.as_slice::<f32>()?;
        let classes = input.tensor("classes")?.as_slice::<i64>()?;
        let mut kept: Vec<(usize, f32)> = scores
            .iter()
            .zip(classes)
            .enumerate()
            .filter(|(_, (_, c))| self.keep_classes.is_empty() || self.keep_classes.contains(c))
            .map(|(i, (&s, &c))| {
                let w = usize::try_from(c)
                    .ok()
                    .and_then(|c| self.class_weights.get(c))
                    .copied()
                    .unwrap_or(1.0);
                (i, s * w)
            })
            .filter(|&(_, s)| s >= self.min_score)
            .collect();
        // Stable sort: equal scores keep their input order.
        kept.sort_by(|a, b| b.1.total_cmp(&a.1));
        kept.truncate(self.max_instances);
        let rows: Vec<usize> = kept.iter().map(|&(i, _)| i).collect();
        let mut out = Value::new(PortKind::Instances);
        for (name, t) in input.tensors() {
            if name == "scores" {
                continue;
            }
            out.insert(name, gather_rows(t, &rows)?);
        }
        out.insert(
            "scores",
            Tensor::from_vec(&[rows.len()], kept.iter().map(|&(_, s)| s).collect())?,
        );
        Ok(Outputs::one("instances", out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_sdk::Instances;

    fn params() -> Params {
        let mut p = Params::new();
        for spec in kinds()[0].spec.params.iter() {
            p.set(&spec.name, spec.default.clone().unwrap());
        }
        p
    }

    #[test]
    fn rescales_filters_and_sorts() {
        let p = params()
            .with("class_weights", ParamValue::FloatList(vec![1.0, 0.1]))
            .with("min_score", ParamValue::Float(0.3));
        let mut node = ScoreFilter::new(&p).unwrap();
        let det = Instances {
            boxes: vec![
                [0.0, 0.0, 1.0, 1.0],
                [1.0, 1.0, 2.0, 2.0],
                [2.0, 2.0, 3.0, 3.0],
            ],
            scores: vec![0.4, 0.9, 0.8],
            classes: vec![0, 1, 0],
        };
        let mut inputs = Inputs::new();
        inputs.push("instances", Some(det.to_value().unwrap()));
        let out = node.process(&FrameInfo::default(), &inputs).unwrap();
        let kept = Instances::from_value(out.get("instances").unwrap()).unwrap();
        // class 1 is scaled to 0.09 and dropped; the rest are sorted by score.
        assert_eq!(kept.scores, vec![0.8, 0.4]);
        assert_eq!(kept.boxes, vec![[2.0, 2.0, 3.0, 3.0], [0.0, 0.0, 1.0, 1.0]]);
        assert_eq!(kept.classes, vec![0, 0]);
    }
}
