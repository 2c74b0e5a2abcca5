//! What travels on an edge: a `Value`, i.e. a port kind plus named tensors, and the schema
//! each kind promises.

use std::fmt;

use engine_tensor::{DType, Tensor};

/// The kind of a port. A kind is a schema of named tensors (see [`Value::validate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum PortKind {
    /// On an input: accepts any kind (sinks, pass-through nodes). On an output: the value has
    /// the kind of whatever arrives on the node's first input (pass-through nodes); the engine
    /// resolves it when it checks the graph.
    Any = 0,
    /// `image`: u8 [H, W, C] with C in {1, 3, 4}, RGB(A) order.
    Image = 1,
    /// `tensor`: one tensor named `tensor`, any dtype and shape.
    Tensor = 2,
    /// `features`: pyramid levels named `p2`..`p7` (or `c2`..`c5`), each [C, H, W] f32.
    Features = 3,
    /// `instances`: `boxes` f32 [N, 4] (x1, y1, x2, y2 in image pixels), `scores` f32 [N],
    /// `classes` i64 [N]; optional `masks` [N, H, W] (u8/bool/f32), `keypoints` f32 [N, K, 3]
    /// (x, y, score; score 0: not detected), `landmarks` f32 [N, L, 2] (x, y) or [N, L, 3]
    /// (x, y, z; e.g. a face mesh), `track_ids` i64 [N], `embeddings` f32 [N, D].
    /// `concat_instances` pads a tensor only one of its inputs has with zero rows: all-zero
    /// landmarks of an instance mean it has none.
    Instances = 4,
    /// `semantic`: `logits` f32 [C, H, W] and/or `labels` [H, W] (integer).
    Semantic = 5,
    /// `panoptic`: `segments` i32 [H, W] segment ids, `segment_classes` i64 [S],
    /// `segment_ids` i32 [S], optional `segment_scores` f32 [S].
    Panoptic = 6,
    /// `model_image`: a pre-processed image as a model takes it: `tensor` f32 [C, H, W] (or
    /// [N, C, H, W]: views of the same photo, such as CornerNet's image and its mirror;
    /// normalised, resized, padded), `image_size` i64 [2] (height, width after
    /// resizing, before padding) and `original_size` i64 [2] (the photo's), so that heads can
    /// clip to the image and map results back to the photo. Added in plugin ABI 1.1. An input
    /// of kind `tensor` accepts it (it is a tensor with more), never the other way round.
    ModelImage = 7,
}

impl PortKind {
    pub const ALL: [PortKind; 8] = [
        PortKind::Any,
        PortKind::Image,
        PortKind::Tensor,
        PortKind::Features,
        PortKind::Instances,
        PortKind::Semantic,
        PortKind::Panoptic,
        PortKind::ModelImage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PortKind::Any => "any",
            PortKind::Image => "image",
            PortKind::Tensor => "tensor",
            PortKind::Features => "features",
            PortKind::Instances => "instances",
            PortKind::Semantic => "semantic",
            PortKind::Panoptic => "panoptic",
            PortKind::ModelImage => "model_image",
        }
    }

    pub fn from_u32(code: u32) -> Option<PortKind> {
        PortKind::ALL.into_iter().find(|k| *k as u32 == code)
    }

    /// Whether a value of kind `produced` may flow into an input of this kind.
    pub fn accepts(self, produced: PortKind) -> bool {
        self == PortKind::Any
            || self == produced
            || (self == PortKind::Tensor && produced == PortKind::ModelImage)
    }
}

impl fmt::Display for PortKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A value on a port: a kind and its named tensors. Cloning shares the tensors' storage.
#[derive(Clone, Debug)]
pub struct Value {
    kind: PortKind,
    tensors: Vec<(String, Tensor)>,
}

impl Value {
    /// An empty value of `kind`; add tensors with [`Value::with`].
    pub fn new(kind: PortKind) -> Value {
        Value {
            kind,
            tensors: Vec::new(),
        }
    }

    /// Adds (or replaces) the tensor `name`.
    pub fn with(mut self, name: &str, tensor: Tensor) -> Value {
        self.insert(name, tensor);
        self
    }

    pub fn insert(&mut self, name: &str, tensor: Tensor) {
        match self.tensors.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = tensor,
            None => self.tensors.push((name.to_string(), tensor)),
        }
    }

    pub fn kind(&self) -> PortKind {
        self.kind
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The tensor `name`, or an error that names the tensors this value has.
    pub fn tensor(&self, name: &str) -> Result<&Tensor, String> {
        self.get(name).ok_or_else(|| {
            format!(
                "{} value has no tensor \"{name}\" (it has: {})",
                self.kind,
                self.names().join(", ")
            )
        })
    }

    pub fn tensors(&self) -> &[(String, Tensor)] {
        &self.tensors
    }

    pub fn names(&self) -> Vec<&str> {
        self.tensors.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// An `image` value from u8 [H, W, C] pixels.
    pub fn image(pixels: Tensor) -> Value {
        Value::new(PortKind::Image).with("image", pixels)
    }

    /// A `tensor` value.
    pub fn single(tensor: Tensor) -> Value {
        Value::new(PortKind::Tensor).with("tensor", tensor)
    }

    /// One line per tensor: "boxes f32[3, 4], scores f32[3]".
    /// The instances `rows` (in that order; rows may repeat), with every per-instance tensor
    /// selected alike: boxes, scores, classes, masks, keypoints, landmarks, track ids and any
    /// other tensor a head added. Filtering, sorting and top-k in a head use this, so that no
    /// tensor is dropped or left with the old row count. Only for `instances` values.
    pub fn select_rows(&self, rows: &[usize]) -> Result<Value, String> {
        if self.kind != PortKind::Instances {
            return Err(format!(
                "select_rows needs an instances value, got {}",
                self.kind
            ));
        }
        self.validate()?;
        let mut out = Value::new(self.kind);
        for (name, t) in &self.tensors {
            let picked = t
                .gather_rows(rows)
                .map_err(|e| format!("tensor \"{name}\": {e}"))?;
            out.insert(name, picked);
        }
        Ok(out)
    }

    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .tensors
            .iter()
            .map(|(n, t)| format!("{n} {}", t.describe()))
            .collect();
        format!("{} {{{}}}", self.kind, parts.join(", "))
    }

    /// Checks the value against its kind's schema. The message says which tensor is wrong
    /// and what was expected, so that a plugin returning mis-shaped data is easy to fix.
    pub fn validate(&self) -> Result<(), String> {
        match self.kind {
            PortKind::Any => Err("a value cannot have kind \"any\"; pick a concrete kind".into()),
            PortKind::Image => {
                let t = self.tensor("image")?;
                expect_dtype("image", t, &[DType::U8])?;
                if t.ndim() != 3 || ![1, 3, 4].contains(&t.shape()[2]) {
                    return Err(format!(
                        "tensor \"image\" must be [H, W, C] with C = 1, 3 or 4, got {:?}",
                        t.shape()
                    ));
                }
                Ok(())
            }
            PortKind::Tensor => self.tensor("tensor").map(|_| ()),
            PortKind::ModelImage => {
                let t = self.tensor("tensor")?;
                expect_dtype("tensor", t, &[DType::F32])?;
                let s = t.shape();
                if !(s.len() == 3 || (s.len() == 4 && s[0] >= 1)) {
                    return Err(format!(
                        "tensor \"tensor\" must be [C, H, W] or [N, C, H, W] (views of one photo), got {s:?}"
                    ));
                }
                for name in ["image_size", "original_size"] {
                    let v = self.tensor(name)?;
                    expect_dtype(name, v, &[DType::I64])?;
                    match v.as_slice::<i64>().map_err(|e| e.to_string())? {
                        [h, w] if *h > 0 && *w > 0 => {}
                        other => {
                            return Err(format!(
                            "tensor \"{name}\" must hold a positive (height, width), got {other:?}"
                        ))
                        }
                    }
                }
                Ok(())
            }
            PortKind::Features => {
                if self.tensors.is_empty() {
                    return Err("features value holds no levels".into());
                }
                for (name, t) in &self.tensors {
                    expect_dtype(name, t, &[DType::F32, DType::F16])?;
                    if t.ndim() != 3 && t.ndim() != 4 {
                        return Err(format!(
                            "feature level \"{name}\" must be [C, H, W] or [N, C, H, W], got {:?}",
                            t.shape()
                        ));
                    }
                }
                Ok(())
            }
            PortKind::Instances => self.validate_instances(),
            PortKind::Semantic => {
                let logits = self.get("logits");
                let labels = self.get("labels");
                if logits.is_none() && labels.is_none() {
                    return Err(
                        "semantic value needs \"logits\" [C, H, W] or \"labels\" [H, W]".into(),
                    );
                }
                if let Some(t) = logits {
                    expect_dtype("logits", t, &[DType::F32, DType::F16])?;
                    expect_rank("logits", t, 3)?;
                }
                if let Some(t) = labels {
                    expect_dtype("labels", t, &[DType::U8, DType::I32, DType::I64])?;
                    expect_rank("labels", t, 2)?;
                }
                Ok(())
            }
            PortKind::Panoptic => {
                let seg = self.tensor("segments")?;
                expect_dtype("segments", seg, &[DType::I32])?;
                expect_rank("segments", seg, 2)?;
                let ids = self.tensor("segment_ids")?;
                let classes = self.tensor("segment_classes")?;
                expect_dtype("segment_ids", ids, &[DType::I32])?;
                expect_dtype("segment_classes", classes, &[DType::I64])?;
                expect_rank("segment_ids", ids, 1)?;
                expect_len("segment_classes", classes, ids.shape()[0], "segment_ids")
            }
        }
    }

    fn validate_instances(&self) -> Result<(), String> {
        let boxes = self.tensor("boxes")?;
        expect_dtype("boxes", boxes, &[DType::F32])?;
        if boxes.ndim() != 2 || boxes.shape()[1] != 4 {
            return Err(format!(
                "tensor \"boxes\" must be [N, 4] (x1, y1, x2, y2), got {:?}",
                boxes.shape()
            ));
        }
        let n = boxes.shape()[0];
        let scores = self.tensor("scores")?;
        expect_dtype("scores", scores, &[DType::F32])?;
        expect_len("scores", scores, n, "boxes")?;
        let classes = self.tensor("classes")?;
        expect_dtype("classes", classes, &[DType::I64])?;
        expect_len("classes", classes, n, "boxes")?;
        for (name, t) in &self.tensors {
            match name.as_str() {
                "boxes" | "scores" | "classes" => {}
                "masks" => {
                    expect_dtype(name, t, &[DType::U8, DType::Bool, DType::F32])?;
                    expect_rank(name, t, 3)?;
                    expect_leading(name, t, n)?;
                }
                "keypoints" => {
                    expect_dtype(name, t, &[DType::F32])?;
                    if t.ndim() != 3 || t.shape()[2] != 3 {
                        return Err(format!(
                            "tensor \"keypoints\" must be [N, K, 3] (x, y, score), got {:?}",
                            t.shape()
                        ));
                    }
                    expect_leading(name, t, n)?;
                }
                "landmarks" => {
                    expect_dtype(name, t, &[DType::F32])?;
                    if t.ndim() != 3 || !(2..=3).contains(&t.shape()[2]) {
                        return Err(format!(
                            "tensor \"landmarks\" must be [N, L, 2] (x, y) or [N, L, 3] (x, y, z), got {:?}",
                            t.shape()
                        ));
                    }
                    expect_leading(name, t, n)?;
                }
                "track_ids" => {
                    expect_dtype(name, t, &[DType::I64])?;
                    expect_len(name, t, n, "boxes")?;
                }
                // Other per-instance tensors (embeddings, mask logits, DensePose, ...) only need
                // one row per instance.
                _ => expect_leading(name, t, n)?,
            }
        }
        Ok(())
    }
}

fn expect_dtype(name: &str, t: &Tensor, allowed: &[DType]) -> Result<(), String> {
    if allowed.contains(&t.dtype()) {
        return Ok(());
    }
    let names: Vec<&str> = allowed.iter().map(|d| d.name()).collect();
    Err(format!(
        "tensor \"{name}\" has dtype {}, expected {}",
        t.dtype(),
        names.join(" or ")
    ))
}

fn expect_rank(name: &str, t: &Tensor, rank: usize) -> Result<(), String> {
    if t.ndim() == rank {
        Ok(())
    } else {
        Err(format!(
            "tensor \"{name}\" must have {rank} dimensions, got shape {:?}",
            t.shape()
        ))
    }
}

fn expect_len(name: &str, t: &Tensor, n: usize, of: &str) -> Result<(), String> {
    if t.shape() == [n] {
        Ok(())
    } else {
        Err(format!(
            "tensor \"{name}\" must be [{n}] (one per row of \"{of}\"), got {:?}",
            t.shape()
        ))
    }
}

fn expect_leading(name: &str, t: &Tensor, n: usize) -> Result<(), String> {
    if t.shape().first() == Some(&n) {
        Ok(())
    } else {
        Err(format!(
            "tensor \"{name}\" must have {n} rows (one per instance), got shape {:?}",
            t.shape()
        ))
    }
}

/// Typed view of an `instances` value, for nodes that build or read detections.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Instances {
    /// [x1, y1, x2, y2] in image pixels.
    pub boxes: Vec<[f32; 4]>,
    pub scores: Vec<f32>,
    pub classes: Vec<i64>,
}

impl Instances {
    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    /// Reads boxes, scores and classes of a validated `instances` value.
    pub fn from_value(value: &Value) -> Result<Instances, String> {
        if value.kind() != PortKind::Instances {
            return Err(format!("expected an instances value, got {}", value.kind()));
        }
        value.validate()?;
        let flat = value
            .tensor("boxes")?
            .as_slice::<f32>()
            .map_err(|e| e.to_string())?;
        Ok(Instances {
            boxes: flat
                .chunks_exact(4)
                .map(|c| [c[0], c[1], c[2], c[3]])
                .collect(),
            scores: value
                .tensor("scores")?
                .as_slice::<f32>()
                .map_err(|e| e.to_string())?
                .to_vec(),
            classes: value
                .tensor("classes")?
                .as_slice::<i64>()
                .map_err(|e| e.to_string())?
                .to_vec(),
        })
    }

    /// Builds an `instances` value (boxes, scores, classes).
    pub fn to_value(&self) -> Result<Value, String> {
        let n = self.len();
        if self.scores.len() != n || self.classes.len() != n {
            return Err(format!(
                "instances have {n} boxes, {} scores and {} classes",
                self.scores.len(),
                self.classes.len()
            ));
        }
        let flat: Vec<f32> = self.boxes.iter().flatten().copied().collect();
        let err = |e: engine_tensor::TensorError| e.to_string();
        Ok(Value::new(PortKind::Instances)
            .with("boxes", Tensor::from_vec(&[n, 4], flat).map_err(err)?)
            .with(
                "scores",
                Tensor::from_vec(&[n], self.scores.clone()).map_err(err)?,
            )
            .with(
                "classes",
                Tensor::from_vec(&[n], self.classes.clone()).map_err(err)?,
            ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instances(n: usize) -> Value {
        Instances {
            boxes: vec![[0.0, 0.0, 1.0, 1.0]; n],
            scores: vec![0.5; n],
            classes: vec![1; n],
        }
        .to_value()
        .unwrap()
    }

    #[test]
    fn select_rows_keeps_every_per_instance_tensor() {
        let v = instances(3)
            .with(
                "masks",
                Tensor::from_vec(&[3, 1, 2], vec![1u8, 1, 2, 2, 3, 3]).unwrap(),
            )
            .with(
                "keypoints",
                Tensor::from_vec(&[3, 1, 3], vec![0f32, 0., 1., 1., 1., 1., 2., 2., 1.]).unwrap(),
            );
        let s = v.select_rows(&[2, 0]).unwrap();
        s.validate().unwrap();
        assert_eq!(s.names(), v.names());
        assert_eq!(
            s.tensor("masks").unwrap().as_slice::<u8>().unwrap(),
            &[3, 3, 1, 1]
        );
        assert_eq!(s.tensor("keypoints").unwrap().shape(), &[2, 1, 3],);
        assert!(v
            .select_rows(&[3])
            .unwrap_err()
            .contains("row 3 is out of range"));
        assert!(Value::single(Tensor::scalar(1f32))
            .select_rows(&[0])
            .unwrap_err()
            .contains("needs an instances value"));
    }

    #[test]
    fn instances_round_trip_and_validate() {
        let v = instances(3);
        assert!(v.validate().is_ok());
        let back = Instances::from_value(&v).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back.classes, vec![1, 1, 1]);
    }

    #[test]
    fn mis_shaped_instances_are_named() {
        let v = instances(3).with("scores", Tensor::from_vec(&[2], vec![0.1f32, 0.2]).unwrap());
        assert_eq!(
            v.validate().unwrap_err(),
            "tensor \"scores\" must be [3] (one per row of \"boxes\"), got [2]"
        );
        let v = instances(2).with("masks", Tensor::zeros(DType::U8, &[3, 4, 4]).unwrap());
        assert!(v
            .validate()
            .unwrap_err()
            .contains("\"masks\" must have 2 rows"));
        let v = Value::new(PortKind::Instances);
        assert!(v.validate().unwrap_err().contains("no tensor \"boxes\""));
    }

    #[test]
    fn image_schema() {
        let ok = Value::image(Tensor::zeros(DType::U8, &[4, 5, 3]).unwrap());
        assert!(ok.validate().is_ok());
        let bad = Value::image(Tensor::zeros(DType::F32, &[4, 5, 3]).unwrap());
        assert!(bad
            .validate()
            .unwrap_err()
            .contains("dtype f32, expected u8"));
        let bad = Value::image(Tensor::zeros(DType::U8, &[4, 5, 2]).unwrap());
        assert!(bad.validate().is_err());
    }

    #[test]
    fn any_accepts_everything_but_concrete_kinds_match_exactly() {
        assert!(PortKind::Any.accepts(PortKind::Image));
        assert!(PortKind::Instances.accepts(PortKind::Instances));
        assert!(!PortKind::Instances.accepts(PortKind::Features));
        for k in PortKind::ALL {
            assert_eq!(PortKind::from_u32(k as u32), Some(k));
        }
    }
}
