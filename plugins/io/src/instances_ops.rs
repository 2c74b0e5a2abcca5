//! `concat_instances`: merges the instances of two heads (say, a face detector and a person
//! detector) of the same frame into one set.

use plugin_sdk::kernels::{f16, Element};
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

impl Node for ConcatInstances {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let first = inputs.value("first")?;
        let Some(second) = inputs.get("second") else {
            return Ok(Outputs::one("instances", first.clone()));
        };
        let mut out = Value::new(PortKind::Instances);
        for (name, a) in first.tensors() {
            let b = second.get(name).ok_or_else(|| {
                NodeError::new(format!(
                    "tensor \"{name}\" is in the first instances but not in the second"
                ))
            })?;
            out.insert(name, concat_rows(name, a, b)?);
        }
        if let Some(extra) = second.names().into_iter().find(|n| first.get(n).is_none()) {
            return Err(NodeError::new(format!(
                "tensor \"{extra}\" is in the second instances but not in the first"
            )));
        }
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
    fn absent_second_passes_first_and_mismatches_are_errors() {
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
        let mut inputs = Inputs::new();
        inputs.push(
            "first",
            Some(dets(1.0, 2).with("track_ids", Tensor::from_vec(&[2], vec![1i64, 2]).unwrap())),
        );
        inputs.push("second", Some(dets(1.0, 1)));
        let err = node.process(&FrameInfo::default(), &inputs).unwrap_err();
        assert!(
            err.message().contains("\"track_ids\" is in the first"),
            "{err}"
        );
    }
}
