//! `panoptic_sink`: writes panoptic segmentations in the COCO panoptic format that
//! panopticapi and `engine eval pq` read: one PNG per frame in `dir` (segment id
//! `= R + 256·G + 256²·B`, 0 for VOID) and, when the run ends, one JSON file with
//! `{"annotations": [{"image_id", "file_name", "segments_info": [{"id", "category_id",
//! "iscrowd": 0, "area", "bbox": [x, y, w, h]}]}]}`, areas and boxes counted from the map.
//!
//! `image_id` is the frame's source file stem (a COCO image's id when the photos are named by
//! it, e.g. `000000139.jpg` → 139), or the frame index when the stem is not a number.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plugin_sdk::{
    FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    PortKind, PortSpec, Value,
};

use crate::atomic_file::AtomicFile;
use crate::image_sink::write_rgb_png;
use crate::quoted;

/// The largest id a panoptic PNG can hold (24 bits).
const MAX_ID: i32 = (1 << 24) - 1;

pub fn kind() -> NodeKind {
    let spec = NodeSpec::new(
        "panoptic_sink",
        "Writes panoptic segmentations as COCO panoptic PNGs (id = R + 256 G + 256^2 B) and one annotations JSON",
    )
    .input(PortSpec::new(
        "panoptic",
        PortKind::Panoptic,
        "segments i32 [H, W] with segment_ids and segment_classes (panoptic_fusion)",
    ))
    .param(ParamSpec::required(
        "dir",
        ParamType::Path,
        "folder of the PNGs (created)",
    ))
    .param(ParamSpec::required(
        "json",
        ParamType::Path,
        "the annotations JSON, written when the run ends",
    ));
    NodeKind::new(spec, |params| {
        Ok(Box::new(PanopticSink::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `panoptic_sink` node.
#[derive(Debug)]
pub struct PanopticSink {
    dir: PathBuf,
    json: AtomicFile,
    annotations: Vec<String>,
}

impl PanopticSink {
    pub fn from_params(params: &plugin_sdk::Params) -> Result<PanopticSink, NodeError> {
        let dir = PathBuf::from(params.str("dir")?);
        std::fs::create_dir_all(&dir).map_err(|e| {
            NodeError::new(format!("cannot create directory {}: {e}", quoted(&dir)))
        })?;
        let path = PathBuf::from(params.str("json")?);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                NodeError::new(format!("cannot create directory {}: {e}", quoted(parent)))
            })?;
        }
        let json = AtomicFile::create(&path)
            .map_err(|e| NodeError::new(format!("cannot create {}: {e}", quoted(&path))))?;
        Ok(PanopticSink {
            dir,
            json,
            annotations: Vec::new(),
        })
    }
}

/// The COCO image id of a frame: its source's file stem when that is a number.
fn image_id(frame: &FrameInfo) -> String {
    Path::new(&*frame.source)
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(frame.index)
        .to_string()
}

/// The annotation (JSON text) and the RGB pixels of one panoptic value.
pub fn encode(
    value: &Value,
    image_id: &str,
    file_name: &str,
) -> Result<(String, Vec<u8>), NodeError> {
    value.validate()?;
    let seg = value.tensor("segments")?;
    let (h, w) = (seg.shape()[0], seg.shape()[1]);
    let ids = value.tensor("segment_ids")?.as_slice::<i32>()?;
    let classes = value.tensor("segment_classes")?.as_slice::<i64>()?;
    let map = seg.as_slice::<i32>()?;
    // Per segment: area and the box (x0, y0, x1, y1), from the map.
    let mut stats: std::collections::HashMap<i32, (u64, [usize; 4])> = Default::default();
    let mut rgb = Vec::with_capacity(h * w * 3);
    for (i, &id) in map.iter().enumerate() {
        if !(0..=MAX_ID).contains(&id) {
            return Err(NodeError::new(format!(
                "panoptic_sink: segment id {id} does not fit a panoptic PNG (0..={MAX_ID})"
            )));
        }
        rgb.extend_from_slice(&[(id & 255) as u8, ((id >> 8) & 255) as u8, (id >> 16) as u8]);
        if id == 0 {
            continue;
        }
        let (x, y) = (i % w, i / w);
        let e = stats.entry(id).or_insert((0, [x, y, x, y]));
        e.0 += 1;
        e.1 = [e.1[0].min(x), e.1[1].min(y), e.1[2].max(x), e.1[3].max(y)];
    }
    let mut a = format!(
        "{{\"image_id\":{image_id},\"file_name\":{},\"segments_info\":[",
        serde_json::to_string(file_name).unwrap_or_default()
    );
    let mut first = true;
    for (&id, &class) in ids.iter().zip(classes) {
        // A segment without pixels is not in the PNG: panopticapi would reject it.
        let Some(&(area, [x0, y0, x1, y1])) = stats.get(&id) else {
            continue;
        };
        if !first {
            a.push(',');
        }
        first = false;
        let _ = write!(
            a,
            "{{\"id\":{id},\"category_id\":{class},\"iscrowd\":0,\"area\":{area},\"bbox\":[{x0},{y0},{},{}]}}",
            x1 - x0 + 1,
            y1 - y0 + 1
        );
    }
    if let Some(id) = stats.keys().find(|id| !ids.contains(id)) {
        return Err(NodeError::new(format!(
            "panoptic_sink: segment id {id} is in the map but not in segment_ids"
        )));
    }
    a.push_str("]}");
    Ok((a, rgb))
}

impl Node for PanopticSink {
    fn process(&mut self, frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let value = inputs.value("panoptic")?;
        let file_name = format!("{:06}.png", frame.index);
        let (annotation, rgb) = encode(value, &image_id(frame), &file_name)?;
        let seg = value.tensor("segments")?;
        write_rgb_png(
            &self.dir.join(&file_name),
            seg.shape()[1],
            seg.shape()[0],
            &rgb,
        )?;
        self.annotations.push(annotation);
        Ok(Outputs::new())
    }

    fn finish(&mut self) -> Result<(), NodeError> {
        if self.json.is_committed() {
            return Ok(());
        }
        let text = format!(
            "{{\"annotations\":[\n{}\n]}}\n",
            self.annotations.join(",\n")
        );
        self.json.write_all(text.as_bytes())?;
        self.json.commit_in_place()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_sdk::Tensor;

    /// Written PNG and JSON, read back by `pq`: the segmentation against itself is perfect.
    #[test]
    fn round_trip_through_eval_pq() {
        let dir = std::env::temp_dir().join(format!("panoptic-sink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let seg = vec![0i32, 1, 1, 2, 2, 2, 0, 1, 300, 300, 2, 2];
        let value = Value::new(PortKind::Panoptic)
            .with("segments", Tensor::from_vec(&[2, 6], seg).unwrap())
            .with(
                "segment_ids",
                Tensor::from_vec(&[3], vec![1i32, 2, 300]).unwrap(),
            )
            .with(
                "segment_classes",
                Tensor::from_vec(&[3], vec![1i64, 7, 1]).unwrap(),
            );
        let params = plugin_sdk::Params::new()
            .with(
                "dir",
                plugin_sdk::ParamValue::Str(dir.join("pred").display().to_string()),
            )
            .with(
                "json",
                plugin_sdk::ParamValue::Str(dir.join("pred.json").display().to_string()),
            );
        let mut sink = PanopticSink::from_params(&params).unwrap();
        let mut inputs = Inputs::new();
        inputs.push("panoptic", Some(value));
        let frame = FrameInfo {
            source: std::sync::Arc::from("photos/000042.jpg"),
            ..FrameInfo::default()
        };
        sink.process(&frame, &inputs).unwrap();
        sink.finish().unwrap();
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("pred.json")).unwrap()).unwrap();
        let ann = &doc["annotations"][0];
        assert_eq!(ann["image_id"], 42);
        assert_eq!(
            ann["segments_info"][2]["bbox"],
            serde_json::json!([2, 1, 2, 1])
        );
        assert_eq!(ann["segments_info"][1]["area"], 5);
        // The same files as ground truth (with categories) and as prediction.
        let mut gt = doc.clone();
        gt["categories"] = serde_json::json!([
            {"id": 1, "name": "person", "isthing": 1},
            {"id": 7, "name": "road", "isthing": 0}
        ]);
        std::fs::write(dir.join("gt.json"), gt.to_string()).unwrap();
        let r = crate::pq::pq_compute(
            &dir.join("gt.json"),
            &dir.join("pred.json"),
            &dir.join("pred"),
            &dir.join("pred"),
            None,
        )
        .unwrap();
        assert_eq!(r.groups[0].1.pq, 1.0);
        assert_eq!(r.groups[0].2, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
