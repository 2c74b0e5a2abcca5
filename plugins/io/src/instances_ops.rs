//! `concat_instances`: merges the instances of two heads (say, a face detector and a person
//! detector) of the same frame into one set. `merge_instances` (at the end) joins the
//! branches of heads that ran on the same detections instead: same rows, more tensors.
//!
//! Every tensor of either input is in the output, first's rows then second's. A tensor that
//! only one input carries (say `keypoints` from a pose model, `landmarks` from a face model,
//! `masks` from a segmenter) is padded with zero rows of its shape for the other input's
//! instances: zero keypoints have score 0, a zero mask is empty, and `image_sink` and
//! `json_sink` skip an instance's all-zero landmarks. Tensors both inputs carry must agree in
//! dtype and in every dimension but the first (masks of different H x W are an error naming
//! both shapes).

use plugin_sdk::{f16, Element};
use plugin_sdk::{
    DType, FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, PortKind, PortSpec,
    Tensor, Value,
};

pub fn concat_instances() -> NodeKind {
    let spec = NodeSpec::new(
        "concat_instances",
        "Concatenates two instance sets of the same frame (first's rows, then second's)",
    )
    .input(PortSpec::new(
        "first",
        PortKind::Instances,
        "instances placed first",
    ))
    .input(
        PortSpec::new(
            "second",
            PortKind::Instances,
            "instances appended (absent: first alone)",
        )
        .optional(),
    )
    .output(PortSpec::new(
        "instances",
        PortKind::Instances,
        "first's rows followed by second's",
    ));
    NodeKind::new(spec, |_| Ok(Box::new(ConcatInstances) as Box<dyn Node>))
}

struct ConcatInstances;

fn concat_typed<T: Element>(a: &Tensor, b: &Tensor) -> Result<Tensor, NodeError> {
    let mut data = a.as_slice::<T>()?.to_vec();
    data.extend_from_slice(b.as_slice::<T>()?);
    let mut shape = a.shape().to_vec();
    shape[0] += b.shape()[0];
    Ok(Tensor::from_vec(&shape, data)?)
}

/// Concatenates two tensors along their first dimension.
fn concat_rows(name: &str, a: &Tensor, b: &Tensor) -> Result<Tensor, NodeError> {
    if a.dtype() != b.dtype() || a.ndim() == 0 || a.shape()[1..] != b.shape()[1..] {
        return Err(NodeError::new(format!(
            "cannot concatenate \"{name}\": first has {}, second has {}",
            a.describe(),
            b.describe()
        )));
    }
    match a.dtype() {
        DType::F32 => concat_typed::<f32>(a, b),
        DType::F16 => concat_typed::<f16>(a, b),
        DType::U8 => concat_typed::<u8>(a, b),
        DType::I32 => concat_typed::<i32>(a, b),
        DType::I64 => concat_typed::<i64>(a, b),
        DType::Bool => concat_typed::<bool>(a, b),
    }
}

/// `rows` rows of zeros shaped like the rows of `like`, of its dtype.
fn zero_rows(name: &str, like: &Tensor, rows: usize) -> Result<Tensor, NodeError> {
    let Some((_, rest)) = like.shape().split_first() else {
        return Err(NodeError::new(format!(
            "tensor \"{name}\" must have one row per instance, got a scalar"
        )));
    };
    let mut shape = Vec::with_capacity(like.ndim());
    shape.push(rows);
    shape.extend_from_slice(rest);
    Tensor::zeros(like.dtype(), &shape).map_err(|e| {
        NodeError::new(format!(
            "cannot pad \"{name}\" to {rows} rows of {}: {e}",
            like.describe()
        ))
    })
}

/// The number of instances of a value (rows of `boxes`).
fn rows(which: &str, v: &Value) -> Result<usize, NodeError> {
    let boxes = v
        .tensor("boxes")
        .map_err(|e| NodeError::new(format!("{which} instances: {e}")))?;
    boxes.shape().first().copied().ok_or_else(|| {
        NodeError::new(format!(
            "{which} instances: tensor \"boxes\" must be [N, 4], got {}",
            boxes.describe()
        ))
    })
}

impl Node for ConcatInstances {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let first = inputs.value("first")?;
        let Some(second) = inputs.get("second") else {
            return Ok(Outputs::one("instances", first.clone()));
        };
        let (n1, n2) = (rows("first", first)?, rows("second", second)?);
        let mut out = Value::new(PortKind::Instances);
        for (name, a) in first.tensors() {
            let merged = match second.get(name) {
                Some(b) => concat_rows(name, a, b)?,
                None => concat_rows(name, a, &zero_rows(name, a, n2)?)?,
            };
            out.insert(name, merged);
        }
        for (name, b) in second.tensors() {
            if first.get(name).is_none() {
                out.insert(name, concat_rows(name, &zero_rows(name, b, n1)?, b)?);
            }
        }
        Ok(Outputs::one("instances", out))
    }
}

/// The optional inputs of `merge_instances`, after `first`.
const MERGED: [&str; 3] = ["second", "third", "fourth"];

pub fn merge_instances() -> NodeKind {
    let mut spec = NodeSpec::new(
        "merge_instances",
        "Merges the outputs of heads that ran on the same detections (say the mask, keypoint and DensePose branches of one box head): one row per detection, with every head's tensors",
    )
    .input(PortSpec::new(
        "first",
        PortKind::Instances,
        "one head's instances",
    ));
    for name in MERGED {
        spec = spec.input(
            PortSpec::new(
                name,
                PortKind::Instances,
                "another head's instances on the same detections (absent: not merged)",
            )
            .optional(),
        );
    }
    let spec = spec.output(PortSpec::new(
        "instances",
        PortKind::Instances,
        "the detections with the tensors of every input",
    ));
    NodeKind::new(spec, |_| Ok(Box::new(MergeInstances) as Box<dyn Node>))
}

struct MergeInstances;

fn same_typed<T: Element + PartialEq>(a: &Tensor, b: &Tensor) -> Result<bool, NodeError> {
    Ok(a.as_slice::<T>()? == b.as_slice::<T>()?)
}

/// Whether two tensors hold the same values (floats compared bit for bit).
fn same_tensor(a: &Tensor, b: &Tensor) -> Result<bool, NodeError> {
    if a.dtype() != b.dtype() || a.shape() != b.shape() {
        return Ok(false);
    }
    // Branches that clone one detections value share its tensors' storage.
    if a.shares_storage_with(b) && a.data_ptr() == b.data_ptr() {
        return Ok(true);
    }
    match a.dtype() {
        DType::F32 => Ok(a
            .as_slice::<f32>()?
            .iter()
            .zip(b.as_slice::<f32>()?)
            .all(|(x, y)| x.to_bits() == y.to_bits())),
        DType::F16 => Ok(a
            .as_slice::<f16>()?
            .iter()
            .zip(b.as_slice::<f16>()?)
            .all(|(x, y)| x.to_bits() == y.to_bits())),
        DType::U8 => same_typed::<u8>(a, b),
        DType::I32 => same_typed::<i32>(a, b),
        DType::I64 => same_typed::<i64>(a, b),
        DType::Bool => same_typed::<bool>(a, b),
    }
}

impl Node for MergeInstances {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let mut out = inputs.value("first")?.clone();
        for port in MERGED {
            let Some(other) = inputs.get(port) else {
                continue;
            };
            for (name, t) in other.tensors() {
                match out.get(name) {
                    None => out.insert(name, t.clone()),
                    Some(have) if same_tensor(have, t)? => {}
                    Some(have) => {
                        return Err(NodeError::new(format!(
                            "merge_instances: \"{name}\" differs between the inputs ({} before, {} on \"{port}\"); merge only heads that ran on the same detections (one roi_box_head output)",
                            have.describe(),
                            t.describe()
                        )))
                    }
                }
            }
        }
        out.validate().map_err(NodeError::new)?;
        Ok(Outputs::one("instances", out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_sdk::{Instances, Params};

    fn dets(x: f32, n: usize) -> Value {
        Instances {
            boxes: vec![[x, 0.0, x + 1.0, 1.0]; n],
            scores: vec![0.5; n],
            classes: vec![3; n],
        }
        .to_value()
        .unwrap()
    }

    #[test]
    fn concatenates_rows_in_order() {
        let mut node = (concat_instances().create)(&Params::new()).unwrap();
        let mut inputs = Inputs::new();
        inputs.push("first", Some(dets(1.0, 2)));
        inputs.push("second", Some(dets(5.0, 1)));
        let out = node.process(&FrameInfo::default(), &inputs).unwrap();
        let merged = Instances::from_value(out.get("instances").unwrap()).unwrap();
        assert_eq!(merged.len(), 3);
        assert_eq!(merged.boxes[2][0], 5.0);
        assert_eq!(merged.boxes[1][0], 1.0);
    }

    #[test]
    fn absent_second_passes_first() {
        let mut node = (concat_instances().create)(&Params::new()).unwrap();
        let mut inputs = Inputs::new();
        inputs.push("first", Some(dets(1.0, 2)));
        inputs.push("second", None);
        let out = node.process(&FrameInfo::default(), &inputs).unwrap();
        assert_eq!(
            Instances::from_value(out.get("instances").unwrap())
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn tensors_one_side_lacks_are_zero_padded() {
        let mut node = (concat_instances().create)(&Params::new()).unwrap();
        let kp: Vec<f32> = (0..2 * 17 * 3).map(|i| i as f32 + 1.0).collect();
        let first = dets(1.0, 2)
            .with("keypoints", Tensor::from_vec(&[2, 17, 3], kp).unwrap())
            .with("track_ids", Tensor::from_vec(&[2], vec![7i64, 8]).unwrap());
        let second = dets(5.0, 1)
            .with(
                "landmarks",
                Tensor::from_vec(&[1, 468, 3], vec![2.0f32; 468 * 3]).unwrap(),
            )
            .with(
                "masks",
                Tensor::from_vec(&[1, 3, 4], vec![1u8; 12]).unwrap(),
            );
        let mut inputs = Inputs::new();
        inputs.push("first", Some(first));
        inputs.push("second", Some(second));
        let out = node.process(&FrameInfo::default(), &inputs).unwrap();
        let v = out.get("instances").unwrap();
        v.validate().unwrap();
        assert_eq!(
            v.names(),
            [
                "boxes",
                "scores",
                "classes",
                "keypoints",
                "track_ids",
                "landmarks",
                "masks"
            ]
        );
        let k = v.tensor("keypoints").unwrap();
        assert_eq!(k.shape(), &[3, 17, 3]);
        let k = k.as_slice::<f32>().unwrap();
        assert_eq!(k[2 * 17 * 3 - 1], (2 * 17 * 3) as f32);
        assert!(k[2 * 17 * 3..].iter().all(|&x| x == 0.0));
        assert_eq!(
            v.tensor("track_ids").unwrap().as_slice::<i64>().unwrap(),
            &[7, 8, 0]
        );
        let l = v.tensor("landmarks").unwrap();
        assert_eq!(l.shape(), &[3, 468, 3]);
        let l = l.as_slice::<f32>().unwrap();
        assert!(l[..2 * 468 * 3].iter().all(|&x| x == 0.0));
        assert!(l[2 * 468 * 3..].iter().all(|&x| x == 2.0));
        let m = v.tensor("masks").unwrap();
        assert_eq!((m.shape(), m.dtype()), (&[3usize, 3, 4][..], DType::U8));
        assert_eq!(
            m.as_slice::<u8>()
                .unwrap()
                .iter()
                .filter(|&&x| x == 1)
                .count(),
            12
        );

        // Empty inputs pad to zero rows.
        let mut inputs = Inputs::new();
        inputs.push("first", Some(dets(1.0, 0)));
        inputs.push(
            "second",
            Some(dets(1.0, 0).with("masks", Tensor::zeros(DType::Bool, &[0, 5, 6]).unwrap())),
        );
        let out = node.process(&FrameInfo::default(), &inputs).unwrap();
        assert_eq!(
            out.get("instances")
                .unwrap()
                .tensor("masks")
                .unwrap()
                .shape(),
            &[0, 5, 6]
        );
    }

    #[test]
    fn mismatched_shapes_are_errors_naming_both() {
        let mut node = (concat_instances().create)(&Params::new()).unwrap();
        let mut inputs = Inputs::new();
        inputs.push(
            "first",
            Some(dets(1.0, 2).with("masks", Tensor::zeros(DType::U8, &[2, 4, 5]).unwrap())),
        );
        inputs.push(
            "second",
            Some(dets(1.0, 1).with("masks", Tensor::zeros(DType::U8, &[1, 6, 8]).unwrap())),
        );
        let err = node.process(&FrameInfo::default(), &inputs).unwrap_err();
        assert_eq!(
            err.message(),
            "cannot concatenate \"masks\": first has u8[2, 4, 5], second has u8[1, 6, 8]"
        );
        let mut inputs = Inputs::new();
        inputs.push(
            "first",
            Some(dets(1.0, 1).with("landmarks", Tensor::zeros(DType::F32, &[1, 6, 2]).unwrap())),
        );
        inputs.push(
            "second",
            Some(dets(1.0, 1).with(
                "landmarks",
                Tensor::zeros(DType::F32, &[1, 468, 3]).unwrap(),
            )),
        );
        let err = node.process(&FrameInfo::default(), &inputs).unwrap_err();
        assert!(
            err.message().contains("[1, 6, 2]") && err.message().contains("[1, 468, 3]"),
            "{err}"
        );
    }

    #[test]
    fn merge_joins_branches_of_the_same_detections() {
        let mut node = (merge_instances().create)(&Params::new()).unwrap();
        let base = dets(2.0, 2);
        let kp = Tensor::from_vec(&[2, 1, 3], vec![1.0f32, 2.0, 1.0, 3.0, 4.0, 1.0]).unwrap();
        let mut inputs = Inputs::new();
        inputs.push("first", Some(base.clone().with("keypoints", kp)));
        inputs.push(
            "third",
            Some(
                base.clone()
                    .with("masks", Tensor::zeros(DType::U8, &[2, 3, 4]).unwrap()),
            ),
        );
        let out = node.process(&FrameInfo::default(), &inputs).unwrap();
        let v = out.get("instances").unwrap();
        assert_eq!(
            v.names(),
            ["boxes", "scores", "classes", "keypoints", "masks"]
        );
        // The same values in separate storage merge too; different detections do not.
        let mut with_second = |second: Value| {
            let mut inputs = Inputs::new();
            inputs.push("first", Some(base.clone()));
            inputs.push("second", Some(second));
            node.process(&FrameInfo::default(), &inputs)
        };
        assert!(with_second(dets(2.0, 2)).is_ok());
        let err = with_second(dets(3.0, 2)).err().unwrap().to_string();
        assert!(
            err.contains("\"boxes\" differs") && err.contains("second"),
            "{err}"
        );
        assert!(with_second(dets(2.0, 3)).is_err());
    }
}
