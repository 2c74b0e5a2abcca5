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
//!
//! `box_source` shows a source in a library (plugin ABI 1.1): a node kind without inputs
//! implements `Node::next_frame`, filling in the frame's source name and size.

use plugin_sdk::{
    export_plugin, DType, FrameInfo, Inputs, Instances, Node, NodeError, NodeKind, NodeSpec,
    Outputs, ParamSpec, ParamType, ParamValue, Params, PortKind, PortSpec, Tensor,
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
    ).range(0.0, 1e9))
    .param(ParamSpec::optional(
        "panic_on_frame",
        ParamType::Int,
        ParamValue::Int(-1),
        "panic on this frame index (demonstrates that the engine contains plugin panics); -1: never",
    ));
    let source = NodeSpec::new(
        "box_source",
        "Emits `frames` frames of `count` boxes each (example source in a library)",
    )
    .output(
        PortSpec::new(
            "instances",
            PortKind::Instances,
            "count boxes at x = frame index, scores 1/(1+j)",
        )
        .dtype(DType::F32)
        .shape("N,4"),
    )
    .param(ParamSpec::optional(
        "frames",
        ParamType::Int,
        ParamValue::Int(3),
        "how many frames",
    ))
    .param(ParamSpec::optional(
        "count",
        ParamType::Int,
        ParamValue::Int(2),
        "boxes per frame",
    ));
    vec![
        NodeKind::new(
            spec,
            |p| Ok(Box::new(ScoreFilter::new(p)?) as Box<dyn Node>),
        ),
        NodeKind::new(source, |p| {
            let frames =
                u64::try_from(p.int("frames")?).map_err(|_| "parameter \"frames\" must be >= 0")?;
            let count =
                usize::try_from(p.int("count")?).map_err(|_| "parameter \"count\" must be >= 0")?;
            Ok(Box::new(BoxSource { frames, count }) as Box<dyn Node>)
        }),
    ]
}

struct BoxSource {
    frames: u64,
    count: usize,
}

impl Node for BoxSource {
    fn process(&mut self, _: &FrameInfo, _: &Inputs) -> Result<Outputs, NodeError> {
        Err("box_source is a source; the engine calls next_frame".into())
    }

    fn next_frame(&mut self, frame: &mut FrameInfo) -> Result<Option<Outputs>, NodeError> {
        if frame.index >= self.frames {
            return Ok(None);
        }
        frame.source = format!("box_source/{}", frame.index).into();
        (frame.width, frame.height) = (64, 48);
        let x = frame.index as f32;
        let det = Instances {
            boxes: vec![[x, 0.0, x + 1.0, 1.0]; self.count],
            scores: (0..self.count).map(|j| 1.0 / (1.0 + j as f32)).collect(),
            classes: vec![1; self.count],
        };
        Ok(Some(Outputs::one("instances", det.to_value()?)))
    }
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
        // The declared range (0..=1e9) was checked by the engine before this runs.
        let max = p.int("max_instances")?;
        Ok(ScoreFilter {
            min_score: p.float("min_score")? as f32,
            class_weights: p
                .float_list("class_weights")?
                .into_iter()
                .map(|w| w as f32)
                .collect(),
            keep_classes: p.int_list("keep_classes")?,
            max_instances: usize::try_from(max).unwrap_or(0),
            panic_on_frame: p.int("panic_on_frame")?,
        })
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
        // Every per-instance tensor (masks, keypoints, landmarks, ...) follows the same rows.
        let mut out = input.select_rows(&rows)?;
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
