//! `synthetic_source`: generated frames for tests and benchmarks of the engine.
//!
//! The image is generated once and every frame carries a clone of the same tensor (an `Arc`
//! clone, no pixel copy), so the source costs next to nothing per frame. The instances are a
//! function of the frame index: instance `j` of frame `i` has box `[i, j, i+1, j+1]`, score
//! `1 / (1 + j)` and class `i % 80`, so a sink can check frame order from `boxes[0][0]`.

use std::sync::Arc;

use plugin_sdk::{
    DType, FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Tensor, Value,
};

use crate::image_source::{MAX_PIXELS, MAX_SIDE};

pub fn kind() -> NodeKind {
    let spec = NodeSpec::new(
        "synthetic_source",
        "Generates frames of a fixed gradient image and deterministic instances (for tests and benchmarks)",
    )
    .output(
        PortSpec::new("image", PortKind::Image, "the same gradient image every frame (shared, not copied)")
            .dtype(DType::U8)
            .shape("H,W,3"),
    )
    .output(
        PortSpec::new(
            "instances",
            PortKind::Instances,
            "instance j of frame i: box [i, j, i+1, j+1], score 1/(1+j), class i % 80",
        )
        .dtype(DType::F32)
        .shape("N,4"),
    )
    .param(ParamSpec::optional(
        "frames",
        ParamType::Int,
        ParamValue::Int(100),
        "number of frames to produce",
    )
    .range(0.0, 1e15))
    .param(ParamSpec::optional(
        "width",
        ParamType::Int,
        ParamValue::Int(64),
        "image width in pixels",
    )
    .range(1.0, MAX_SIDE as f64))
    .param(ParamSpec::optional(
        "height",
        ParamType::Int,
        ParamValue::Int(48),
        "image height in pixels",
    )
    .range(1.0, MAX_SIDE as f64))
    .param(ParamSpec::optional(
        "instances",
        ParamType::Int,
        ParamValue::Int(1),
        "instances per frame",
    )
    .range(0.0, (1u32 << 20) as f64));
    NodeKind::new(spec, |params| {
        Ok(Box::new(SyntheticSource::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `synthetic_source` node.
#[derive(Debug)]
pub struct SyntheticSource {
    frames: u64,
    instances: usize,
    width: u32,
    height: u32,
    image: Value,
    produced: u64,
    source: Arc<str>,
}

fn int_at_least(params: &Params, name: &str, min: i64) -> Result<i64, NodeError> {
    let v = params.int(name)?;
    if v < min {
        return Err(NodeError::new(format!(
            "parameter \"{name}\" must be >= {min}, got {v}"
        )));
    }
    Ok(v)
}

fn side(params: &Params, name: &str) -> Result<usize, NodeError> {
    let v = int_at_least(params, name, 1)?;
    match usize::try_from(v) {
        Ok(v) if v <= MAX_SIDE => Ok(v),
        _ => Err(NodeError::new(format!(
            "parameter \"{name}\" must be <= {MAX_SIDE}, got {v}"
        ))),
    }
}

impl SyntheticSource {
    pub fn from_params(params: &Params) -> Result<SyntheticSource, NodeError> {
        let frames = int_at_least(params, "frames", 0)? as u64;
        let width = side(params, "width")?;
        let height = side(params, "height")?;
        if width * height > MAX_PIXELS {
            return Err(NodeError::new(format!(
                "image of {width}x{height} pixels is larger than the limit of {MAX_PIXELS} pixels"
            )));
        }
        let instances = int_at_least(params, "instances", 0)?;
        let instances = usize::try_from(instances)
            .ok()
            .filter(|&n| n <= 1 << 20)
            .ok_or_else(|| {
                format!(
                    "parameter \"instances\" must be <= {}, got {instances}",
                    1 << 20
                )
            })?;
        let image = Value::image(gradient(width, height)?);
        Ok(SyntheticSource {
            frames,
            instances,
            width: width as u32,
            height: height as u32,
            image,
            produced: 0,
            source: Arc::from("synthetic"),
        })
    }

    /// The instances of frame `index`.
    pub fn instances_of(&self, index: u64) -> Result<Value, NodeError> {
        let n = self.instances;
        let i = index as f32;
        let mut boxes = Vec::with_capacity(n * 4);
        let mut scores = Vec::with_capacity(n);
        for j in 0..n {
            let jf = j as f32;
            boxes.extend_from_slice(&[i, jf, i + 1.0, jf + 1.0]);
            scores.push(1.0 / (1.0 + jf));
        }
        let class = (index % 80) as i64;
        Ok(Value::new(PortKind::Instances)
            .with("boxes", Tensor::from_vec(&[n, 4], boxes)?)
            .with("scores", Tensor::from_vec(&[n], scores)?)
            .with("classes", Tensor::from_vec(&[n], vec![class; n])?))
    }
}

/// A smooth RGB gradient: red grows left to right, green top to bottom, blue diagonally.
fn gradient(width: usize, height: usize) -> Result<Tensor, NodeError> {
    let mut px = Vec::with_capacity(width * height * 3);
    let wd = (width.max(2) - 1) as u64;
    let hd = (height.max(2) - 1) as u64;
    for y in 0..height as u64 {
        for x in 0..width as u64 {
            let r = x * 255 / wd;
            let g = y * 255 / hd;
            let b = (x * 255 / wd + y * 255 / hd) / 2;
            px.extend_from_slice(&[r as u8, g as u8, (255 - b) as u8]);
        }
    }
    Ok(Tensor::from_vec(&[height, width, 3], px)?)
}

impl Node for SyntheticSource {
    fn process(&mut self, _frame: &FrameInfo, _inputs: &Inputs) -> Result<Outputs, NodeError> {
        Err(NodeError::new(
            "synthetic_source is a source and takes no inputs",
        ))
    }

    fn next_frame(&mut self, frame: &mut FrameInfo) -> Result<Option<Outputs>, NodeError> {
        if self.produced >= self.frames {
            return Ok(None);
        }
        self.produced += 1;
        frame.source = self.source.clone();
        frame.width = self.width;
        frame.height = self.height;
        let instances = self.instances_of(frame.index)?;
        Ok(Some(
            Outputs::one("image", self.image.clone()).with("instances", instances),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_sdk::Instances;

    fn params(overrides: &[(&str, i64)]) -> Params {
        let mut p = Params::new();
        for spec in kind().spec.params {
            p.set(&spec.name, spec.default.unwrap());
        }
        for (k, v) in overrides {
            p.set(k, ParamValue::Int(*v));
        }
        p
    }

    #[test]
    fn frame_index_is_box_x1_and_image_is_shared() {
        let mut node =
            SyntheticSource::from_params(&params(&[("frames", 5), ("instances", 3)])).unwrap();
        let mut first_image: Option<Tensor> = None;
        let mut count = 0;
        let mut frame = FrameInfo::default();
        for index in 0.. {
            frame.index = index;
            let Some(out) = node.next_frame(&mut frame).unwrap() else {
                break;
            };
            count += 1;
            assert_eq!(&*frame.source, "synthetic");
            assert_eq!((frame.width, frame.height), (64, 48));
            let img = out.get("image").unwrap();
            img.validate().unwrap();
            let t = img.get("image").unwrap();
            assert_eq!(t.shape(), [48, 64, 3]);
            match &first_image {
                None => first_image = Some(t.clone()),
                Some(f) => assert!(t.shares_storage_with(f)),
            }
            let inst = Instances::from_value(out.get("instances").unwrap()).unwrap();
            assert_eq!(inst.len(), 3);
            for (j, b) in inst.boxes.iter().enumerate() {
                assert_eq!(
                    *b,
                    [index as f32, j as f32, index as f32 + 1.0, j as f32 + 1.0]
                );
                assert_eq!(inst.scores[j], 1.0 / (1.0 + j as f32));
                assert_eq!(inst.classes[j], (index % 80) as i64);
            }
        }
        assert_eq!(count, 5);
        assert!(node.next_frame(&mut frame).unwrap().is_none());
        // Classes wrap at 80.
        let v = node.instances_of(83).unwrap();
        assert_eq!(Instances::from_value(&v).unwrap().classes, vec![3; 3]);
    }

    #[test]
    fn zero_frames_and_zero_instances() {
        let mut node = SyntheticSource::from_params(&params(&[("frames", 0)])).unwrap();
        assert!(node
            .next_frame(&mut FrameInfo::default())
            .unwrap()
            .is_none());
        let node = SyntheticSource::from_params(&params(&[("instances", 0)])).unwrap();
        let v = node.instances_of(0).unwrap();
        v.validate().unwrap();
        assert!(Instances::from_value(&v).unwrap().is_empty());
    }

    #[test]
    fn bad_parameters_are_named() {
        let err = |o: &[(&str, i64)]| {
            SyntheticSource::from_params(&params(o))
                .unwrap_err()
                .message()
                .to_string()
        };
        assert_eq!(
            err(&[("frames", -3)]),
            "parameter \"frames\" must be >= 0, got -3"
        );
        assert_eq!(
            err(&[("width", 0)]),
            "parameter \"width\" must be >= 1, got 0"
        );
        assert_eq!(
            err(&[("height", -1)]),
            "parameter \"height\" must be >= 1, got -1"
        );
        assert_eq!(
            err(&[("instances", -1)]),
            "parameter \"instances\" must be >= 0, got -1"
        );
        assert!(err(&[("width", 100_000)]).contains("\"width\" must be <= 30000"));
    }
}
