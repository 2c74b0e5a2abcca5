//! `json_sink`: writes instances as JSON lines (one record per frame) or as a COCO results
//! array. Each instance is a COCO result object:
//!
//! ```json
//! {"image_id": 0, "category_id": 3, "bbox": [x, y, w, h], "score": 0.93,
//!  "segmentation": {"size": [H, W], "counts": "..."}, "keypoints": [x1, y1, v1, ...],
//!  "landmarks": [x1, y1, (z1,) ...]}
//! ```
//!
//! `image_id` is the frame index, `bbox` the box in COCO's x, y, width, height form,
//! `segmentation` (when the value has `masks`) the mask in COCO compressed RLE, identical to
//! `pycocotools.mask.encode`, `keypoints` (when it has `keypoints`) the flattened [K, 3], and
//! `landmarks` (not a COCO field; when the value has `landmarks` and the instance's are not
//! all zero, i.e. not `concat_instances` padding) the flattened [L, 2] or [L, 3].
//!
//! Instances with DensePose results (`roi_densepose_head`) get DensePose's results format:
//! `"densepose": {"labels_uv_str": "<base64 PNG>", "shape_chw": [3, h, w]}` (see
//! [`crate::densepose`]), and, when they have no `masks`, the `segmentation` of the chart
//! result (its pixels with a part label).

use std::fmt::Write as _;
use std::path::PathBuf;

use plugin_sdk::{
    DType, FrameInfo, Inputs, Instances, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec,
    ParamType, ParamValue, Params, PortKind, PortSpec, Tensor, Value,
};

use crate::atomic_file::AtomicFile;
use crate::densepose::DensePose;
use crate::{quoted, rle};

const FORMATS: [&str; 3] = ["jsonl", "coco", "mot"];

pub fn kind() -> NodeKind {
    let spec = NodeSpec::new(
        "json_sink",
        "Writes instances as COCO result objects: one JSON line per frame, or one COCO results array",
    )
    .input(PortSpec::new(
        "instances",
        PortKind::Instances,
        "the instances to write (masks become COCO RLE, keypoints are flattened)",
    ))
    .param(ParamSpec::required(
        "path",
        ParamType::Path,
        "output file (parent directories are created)",
    ))
    .param(ParamSpec::optional(
        "format",
        ParamType::Str,
        ParamValue::Str("jsonl".into()),
        "\"jsonl\": one {frame, stream, source, width, height, instances} object per line; \"coco\": one array of all instances; \"mot\": MOTChallenge lines frame,id,left,top,width,height,score,-1,-1,-1 of tracked instances (frames from 1 in each stream), for engine eval mot",
    ))
    .param(ParamSpec::optional(
        "mask_threshold",
        ParamType::Float,
        ParamValue::Float(0.5),
        "f32 masks: pixels >= this value are foreground (u8 and bool masks: nonzero)",
    ));
    NodeKind::new(spec, |params| {
        Ok(Box::new(JsonSink::from_params(params)?) as Box<dyn Node>)
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Jsonl,
    Coco,
    Mot,
}

/// The `json_sink` node.
#[derive(Debug)]
pub struct JsonSink {
    format: Format,
    mask_threshold: f32,
    out: AtomicFile,
    /// Instances written so far (COCO: decides the separator).
    written: u64,
    /// Reused per frame.
    line: String,
    /// MOT: the stream being written and its first frame's index (MOT frames count from 1
    /// in each sequence).
    stream_start: Option<(u32, u64)>,
}

impl JsonSink {
    pub fn from_params(params: &Params) -> Result<JsonSink, NodeError> {
        let format = match params.str("format")? {
            "jsonl" => Format::Jsonl,
            "coco" => Format::Coco,
            "mot" => Format::Mot,
            other => {
                return Err(NodeError::new(format!(
                    "parameter \"format\" must be one of {}, got {other:?}",
                    FORMATS.map(|f| format!("\"{f}\"")).join(", ")
                )))
            }
        };
        let mask_threshold = params.float("mask_threshold")?;
        if !mask_threshold.is_finite() {
            return Err(NodeError::new(format!(
                "parameter \"mask_threshold\" must be a finite number, got {mask_threshold}"
            )));
        }
        let path = PathBuf::from(params.str("path")?);
        // Written beside `path` and renamed over it when the sink finishes: a run that never
        // starts, or stops before the end, leaves the previous file as it was.
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                NodeError::new(format!("cannot create directory {}: {e}", quoted(parent)))
            })?;
        }
        let out = AtomicFile::create(&path)
            .map_err(|e| NodeError::new(format!("cannot create {}: {e}", quoted(&path))))?;
        let mut sink = JsonSink {
            format,
            mask_threshold: mask_threshold as f32,
            out,
            written: 0,
            line: String::new(),
            stream_start: None,
        };
        if format == Format::Coco {
            sink.write(b"[")?;
        }
        Ok(sink)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), NodeError> {
        self.out.write_all(bytes)
    }
}

impl Node for JsonSink {
    fn process(&mut self, frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let value = inputs.value("instances")?;
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        if self.format == Format::Mot {
            let first = match self.stream_start {
                Some((stream, first)) if stream == frame.stream => first,
                _ => frame.index,
            };
            self.stream_start = Some((frame.stream, first));
            mot_lines(&mut line, value, frame.index - first + 1)?;
            let result = self.write(line.as_bytes());
            self.line = line;
            result?;
            return Ok(Outputs::new());
        }
        let objects = coco_objects(value, frame.index, self.mask_threshold)?;
        match self.format {
            Format::Mot => {}
            Format::Jsonl => {
                let _ = write!(
                    line,
                    "{{\"frame\":{},\"stream\":{},\"source\":{},\"width\":{},\"height\":{},\"instances\":[",
                    frame.index,
                    frame.stream,
                    json_string(&frame.source),
                    frame.width,
                    frame.height
                );
                line.push_str(&objects.join(","));
                line.push_str("]}\n");
            }
            Format::Coco => {
                for obj in &objects {
                    line.push_str(if self.written == 0 { "\n" } else { ",\n" });
                    line.push_str(obj);
                    self.written += 1;
                }
            }
        }
        let result = self.write(line.as_bytes());
        self.line = line;
        result?;
        Ok(Outputs::new())
    }

    fn finish(&mut self) -> Result<(), NodeError> {
        if self.out.is_committed() {
            return Ok(());
        }
        if self.format == Format::Coco {
            self.write(b"\n]\n")?;
        }
        self.out.commit_in_place()
    }
}

/// MOTChallenge lines of tracked instances: `frame,id,left,top,width,height,score,-1,-1,-1`.
fn mot_lines(out: &mut String, value: &Value, frame: u64) -> Result<(), NodeError> {
    let inst = Instances::from_value(value)?;
    let ids = value
        .get("track_ids")
        .ok_or(
            "format \"mot\" writes tracks, and these instances have no track_ids: put a tracker (bytetrack) before this sink",
        )?
        .as_slice::<i64>()?;
    for (k, b) in inst.boxes.iter().enumerate() {
        let _ = write!(out, "{frame},{}", ids[k]);
        for x in [b[0], b[1], b[2] - b[0], b[3] - b[1], inst.scores[k]] {
            out.push(',');
            push_f32(out, x);
        }
        out.push_str(",-1,-1,-1\n");
    }
    Ok(())
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Appends a JSON number (`null` for NaN and infinities, which JSON cannot express).
fn push_f32(s: &mut String, x: f32) {
    if x.is_finite() {
        let start = s.len();
        let _ = write!(s, "{x}");
        // Keep floats floats ("1.0", not "1"): `Display` of f32 never uses an exponent.
        if !s[start..].contains('.') {
            s.push_str(".0");
        }
    } else {
        s.push_str("null");
    }
}

/// Row `k` of a masks tensor [N, H, W] as row-major 0/1 bytes (u8 and bool: nonzero; f32:
/// `>= threshold`).
pub(crate) fn mask_plane(masks: &Tensor, k: usize, threshold: f32) -> Result<Vec<u8>, NodeError> {
    let shape = masks.shape();
    if shape.len() != 3 {
        return Err(NodeError::new(format!(
            "tensor \"masks\" must be [N, H, W], got {:?}",
            shape
        )));
    }
    let plane = shape[1] * shape[2];
    let range = k * plane..(k + 1) * plane;
    let out = match masks.dtype() {
        DType::U8 => slice_range(masks.as_slice::<u8>()?, range)?
            .iter()
            .map(|&v| u8::from(v != 0))
            .collect(),
        DType::Bool => slice_range(masks.as_slice::<bool>()?, range)?
            .iter()
            .map(|&v| u8::from(v))
            .collect(),
        DType::F32 => slice_range(masks.as_slice::<f32>()?, range)?
            .iter()
            .map(|&v| u8::from(v >= threshold))
            .collect(),
        other => {
            return Err(NodeError::new(format!(
                "tensor \"masks\" has dtype {other}, expected u8, bool or f32"
            )))
        }
    };
    Ok(out)
}

fn slice_range<T>(data: &[T], range: std::ops::Range<usize>) -> Result<&[T], NodeError> {
    let len = data.len();
    data.get(range.clone()).ok_or_else(|| {
        NodeError::new(format!(
            "tensor \"masks\" holds {len} elements, too few for elements {range:?}"
        ))
    })
}

/// The COCO result objects of one instances value, as JSON text.
pub fn coco_objects(
    value: &Value,
    image_id: u64,
    mask_threshold: f32,
) -> Result<Vec<String>, NodeError> {
    let inst = Instances::from_value(value)?;
    let masks = value.get("masks");
    let keypoints = match value.get("keypoints") {
        Some(t) => Some((
            t.as_slice::<f32>()?,
            t.shape().get(1).copied().unwrap_or(0) * 3,
        )),
        None => None,
    };
    let landmarks = match value.get("landmarks") {
        Some(t) => Some((
            t.as_slice::<f32>()?,
            t.shape()
                .get(1..)
                .map_or(0, |s| s.iter().product::<usize>()),
        )),
        None => None,
    };
    let densepose = DensePose::from_value(value)?;
    let track_ids = match value.get("track_ids") {
        Some(t) => Some(t.as_slice::<i64>()?),
        None => None,
    };
    let mut objects = Vec::with_capacity(inst.len());
    for (k, b) in inst.boxes.iter().enumerate() {
        let mut s = String::with_capacity(96);
        let _ = write!(
            s,
            "{{\"image_id\":{image_id},\"category_id\":{},\"bbox\":[",
            inst.classes[k]
        );
        for (i, x) in [b[0], b[1], b[2] - b[0], b[3] - b[1]]
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                s.push(',');
            }
            push_f32(&mut s, x);
        }
        s.push_str("],\"score\":");
        push_f32(&mut s, inst.scores[k]);
        if let Some(ids) = track_ids {
            let _ = write!(s, ",\"track_id\":{}", ids[k]);
        }
        if let Some(m) = masks {
            let (h, w) = (m.shape()[1], m.shape()[2]);
            let plane = mask_plane(m, k, mask_threshold)?;
            let counts = rle::to_string(&rle::encode(&plane, h, w));
            let _ = write!(
                s,
                ",\"segmentation\":{{\"size\":[{h},{w}],\"counts\":{}}}",
                json_string(&counts)
            );
        }
        if let Some(d) = &densepose {
            // DensePose's evaluator writes the chart result's own mask when there is none.
            if masks.is_none() {
                let (h, w) = d.image_size(k);
                let counts = rle::to_string(&rle::encode(&d.mask_plane(k), h, w));
                let _ = write!(
                    s,
                    ",\"segmentation\":{{\"size\":[{h},{w}],\"counts\":{}}}",
                    json_string(&counts)
                );
            }
            let _ = write!(s, ",\"densepose\":{}", d.results_json(k)?);
        }
        if let Some((data, per)) = keypoints {
            s.push_str(",\"keypoints\":[");
            let row = data.get(k * per..(k + 1) * per).unwrap_or(&[]);
            for (i, &x) in row.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                push_f32(&mut s, x);
            }
            s.push(']');
        }
        if let Some((data, per)) = landmarks {
            let row = data.get(k * per..(k + 1) * per).unwrap_or(&[]);
            if row.iter().any(|&x| x != 0.0) {
                s.push_str(",\"landmarks\":[");
                for (i, &x) in row.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    push_f32(&mut s, x);
                }
                s.push(']');
            }
        }
        s.push('}');
        objects.push(s);
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as Json;
    use std::sync::Arc;

    fn temp_path(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "plugin-io-json-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ))
    }

    fn params(path: &std::path::Path, format: &str) -> Params {
        Params::new()
            .with("path", ParamValue::Str(path.display().to_string()))
            .with("format", ParamValue::Str(format.into()))
            .with("mask_threshold", ParamValue::Float(0.5))
    }

    fn frame(index: u64) -> FrameInfo {
        FrameInfo {
            stream: 0,
            index,
            timestamp_ns: 0,
            source: Arc::from(format!("img\"{index}\".jpg")),
            width: 5,
            height: 4,
        }
    }

    /// MOTChallenge lines of the tracked instances, frames from 1 in each stream; instances
    /// without track ids are refused with what to do.
    #[test]
    fn mot_format_writes_tracks_per_stream() {
        let path = temp_path("mot");
        let mut sink = JsonSink::from_params(&params(&path, "mot")).unwrap();
        let tracked =
            value(false).with("track_ids", Tensor::from_vec(&[2], vec![4i64, 9]).unwrap());
        let mut inputs = Inputs::new();
        inputs.push("instances", Some(tracked));
        for (stream, index) in [(0, 0), (0, 1), (3, 2)] {
            let f = FrameInfo {
                stream,
                ..frame(index)
            };
            sink.process(&f, &inputs).unwrap();
        }
        let mut untracked = Inputs::new();
        untracked.push("instances", Some(value(false)));
        let e = sink.process(&frame(3), &untracked).unwrap_err();
        assert!(e.message().contains("no track_ids: put a tracker"), "{e}");
        sink.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[0], "1,4,10.0,20.0,30.5,40.0,0.93,-1,-1,-1");
        assert_eq!(lines[3], "2,9,1.0,2.0,2.0,3.0,0.25,-1,-1,-1");
        assert!(
            lines[4].starts_with("1,4,"),
            "a new stream starts at frame 1"
        );
        let _ = std::fs::remove_file(&path);
    }

    fn value(with_extras: bool) -> Value {
        let v = Instances {
            boxes: vec![[10.0, 20.0, 40.5, 60.0], [1.0, 2.0, 3.0, 5.0]],
            scores: vec![0.93, 0.25],
            classes: vec![3, 17],
        }
        .to_value()
        .unwrap();
        if !with_extras {
            return v;
        }
        // f32 masks [2, 4, 5]. Instance 0: a 2x2 square at rows 1-2, cols 1-2; instance 1:
        // 0.5 at (0, 0) (on) and 0.49 at (1, 2) (off).
        let mut masks = vec![0.0f32; 2 * 4 * 5];
        for (y, x) in [(1, 1), (1, 2), (2, 1), (2, 2)] {
            masks[y * 5 + x] = 1.0;
        }
        masks[20] = 0.5;
        masks[20 + 7] = 0.49;
        let kp: Vec<f32> = (0..2 * 2 * 3).map(|i| i as f32).collect();
        // landmarks [2, 2, 3]: instance 0 has two 3D points, instance 1 is all zero (padding).
        let lm = vec![
            1.5f32, 2.5, -0.5, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ];
        v.with("masks", Tensor::from_vec(&[2, 4, 5], masks).unwrap())
            .with("keypoints", Tensor::from_vec(&[2, 2, 3], kp).unwrap())
            .with("landmarks", Tensor::from_vec(&[2, 2, 3], lm).unwrap())
    }

    /// DensePose's fields: the compressed chart result, and the chart's own segmentation when
    /// the instances have no masks.
    #[test]
    fn densepose_results_format() {
        let mut v = value(false);
        for (name, t) in crate::densepose::tests::value().tensors() {
            v.insert(name, t.clone());
        }
        let objects = coco_objects(&v, 7, 0.5).unwrap();
        let o: Json = serde_json::from_str(&objects[0]).unwrap();
        assert_eq!(o["densepose"]["shape_chw"], serde_json::json!([3, 2, 3]));
        assert!(o["densepose"]["labels_uv_str"].as_str().unwrap().len() > 20);
        assert_eq!(o["segmentation"]["size"], serde_json::json!([3, 3]));
        // Mask pixels (1, 2), (2, 1), (2, 2) in column-major RLE: 5 off, 1 on, 1 off, 2 on.
        let rle = rle::encode(&[0, 0, 0, 0, 0, 1, 0, 1, 1], 3, 3);
        assert_eq!(
            o["segmentation"]["counts"].as_str().unwrap(),
            rle::to_string(&rle)
        );
        let with_masks = value(true);
        let mut both = with_masks.clone();
        for (name, t) in crate::densepose::tests::value().tensors() {
            both.insert(name, t.clone());
        }
        let o: Json = serde_json::from_str(&coco_objects(&both, 7, 0.5).unwrap()[0]).unwrap();
        assert_eq!(
            o["segmentation"]["size"],
            serde_json::json!([4, 5]),
            "the masks win"
        );
        assert!(o.get("densepose").is_some());
    }

    fn inputs(v: Value) -> Inputs {
        let mut i = Inputs::new();
        i.push("instances", Some(v));
        i
    }

    #[test]
    fn jsonl_two_frames_parse_back_with_coco_boxes() {
        let path = temp_path("jsonl").join("sub/dir/out.jsonl");
        let mut node = (kind().create)(&params(&path, "jsonl")).unwrap();
        node.process(&frame(0), &inputs(value(true))).unwrap();
        node.process(&frame(1), &inputs(value(false))).unwrap();
        node.finish().unwrap();
        node.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Json> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        let r = &lines[0];
        assert_eq!(r["frame"], 0);
        assert_eq!(r["stream"], 0);
        assert_eq!(r["source"], "img\"0\".jpg");
        assert_eq!(
            (r["width"].as_u64(), r["height"].as_u64()),
            (Some(5), Some(4))
        );
        let i0 = &r["instances"][0];
        assert_eq!(i0["image_id"], 0);
        assert_eq!(i0["category_id"], 3);
        let bbox: Vec<f64> = i0["bbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(bbox, [10.0, 20.0, 30.5, 40.0]);
        assert!((i0["score"].as_f64().unwrap() - 0.93).abs() < 1e-6);
        assert_eq!(i0["segmentation"]["size"], serde_json::json!([4, 5]));
        // Column-major runs of the square: 5 zeros, 2 ones, 2 zeros, 2 ones, 9 zeros.
        let counts = i0["segmentation"]["counts"].as_str().unwrap();
        assert_eq!(rle::decode(counts).unwrap(), [5, 2, 2, 2, 9]);
        assert_eq!(
            i0["keypoints"],
            serde_json::json!([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
        );
        assert_eq!(
            i0["landmarks"],
            serde_json::json!([1.5, 2.5, -0.5, 3.0, 4.0, 0.0])
        );
        let i1 = &r["instances"][1];
        assert_eq!(i1["category_id"], 17);
        assert!(i1.get("landmarks").is_none(), "padding is not written");
        assert_eq!(
            i1["keypoints"],
            serde_json::json!([6.0, 7.0, 8.0, 9.0, 10.0, 11.0])
        );
        // f32 mask: 0.5 >= threshold is on, 0.49 is not.
        let counts = i1["segmentation"]["counts"].as_str().unwrap();
        assert_eq!(rle::decode(counts).unwrap(), [0, 1, 19]);

        let r = &lines[1];
        assert_eq!(r["frame"], 1);
        assert_eq!(r["instances"][1]["image_id"], 1);
        assert!(r["instances"][1].get("segmentation").is_none());
        assert!(r["instances"][1].get("keypoints").is_none());
        std::fs::remove_dir_all(temp_path("jsonl")).unwrap();
    }

    #[test]
    fn coco_format_is_one_array() {
        let path = temp_path("coco.json");
        let mut node = (kind().create)(&params(&path, "coco")).unwrap();
        node.process(&frame(0), &inputs(value(false))).unwrap();
        let empty = Instances::default().to_value().unwrap();
        node.process(&frame(1), &inputs(empty)).unwrap();
        node.process(&frame(2), &inputs(value(true))).unwrap();
        node.finish().unwrap();
        let all: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let all = all.as_array().unwrap();
        assert_eq!(all.len(), 4);
        let ids: Vec<u64> = all
            .iter()
            .map(|o| o["image_id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids, [0, 0, 2, 2]);
        assert_eq!(all[1]["bbox"], serde_json::json!([1.0, 2.0, 2.0, 3.0]));
        std::fs::remove_file(&path).unwrap();

        // No frames at all: an empty array.
        let mut node = (kind().create)(&params(&path, "coco")).unwrap();
        node.finish().unwrap();
        let all: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(all, serde_json::json!([]));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn bad_format_and_bad_values_are_errors() {
        let path = temp_path("bad.json");
        let err = JsonSink::from_params(&params(&path, "csv")).unwrap_err();
        assert_eq!(
            err.message(),
            "parameter \"format\" must be one of \"jsonl\", \"coco\", \"mot\", got \"csv\""
        );
        let mut node = (kind().create)(&params(&path, "jsonl")).unwrap();
        let bad = Value::new(PortKind::Instances);
        assert!(node
            .process(&frame(0), &inputs(bad))
            .unwrap_err()
            .message()
            .contains("boxes"));
        node.finish().unwrap();
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn mask_planes_of_every_dtype() {
        let u8s = Tensor::from_vec(&[2, 1, 3], vec![0u8, 9, 1, 255, 0, 0]).unwrap();
        assert_eq!(mask_plane(&u8s, 0, 0.5).unwrap(), [0, 1, 1]);
        assert_eq!(mask_plane(&u8s, 1, 0.5).unwrap(), [1, 0, 0]);
        let bools = Tensor::from_vec(&[1, 1, 2], vec![true, false]).unwrap();
        assert_eq!(mask_plane(&bools, 0, 0.5).unwrap(), [1, 0]);
        let f = Tensor::from_vec(&[1, 1, 3], vec![0.2f32, 0.7, f32::NAN]).unwrap();
        assert_eq!(mask_plane(&f, 0, 0.7).unwrap(), [0, 1, 0]);
        assert_eq!(mask_plane(&f, 0, 0.1).unwrap(), [1, 1, 0]);
        assert!(mask_plane(&f, 1, 0.5).is_err());
        let i = Tensor::from_vec(&[1, 1, 1], vec![1i32]).unwrap();
        assert!(mask_plane(&i, 0, 0.5)
            .unwrap_err()
            .message()
            .contains("dtype i32"));
    }

    #[test]
    fn non_finite_numbers_become_null() {
        let v = Instances {
            boxes: vec![[f32::NAN, 0.0, 1.0, f32::INFINITY]],
            scores: vec![0.5],
            classes: vec![1],
        }
        .to_value()
        .unwrap();
        let objs = coco_objects(&v, 7, 0.5).unwrap();
        let o: Json = serde_json::from_str(&objs[0]).unwrap();
        assert_eq!(o["bbox"], serde_json::json!([null, 0.0, null, null]));
    }
}
