//! `image_sink`: draws instances on the image and writes one PNG per frame.
//!
//! Per instance whose score is at least `score_threshold`, in a colour chosen by its class:
//! the mask blended at 45 % opacity, DensePose's body parts (each part's colour at 60 %, with
//! the U isolines in white and the V isolines in black, every 0.1), a 2 px box outline, keypoints (those with score > 0) and
//! landmarks as dots (small ones above 68 points per instance, such as a 468-point face mesh;
//! an instance's all-zero landmarks are `concat_instances` padding and are not drawn), and a
//! label "name 0.93" on a filled background above the box (inside it when there is no room
//! above). A panoptic segmentation (optional `panoptic` input) is drawn underneath: every
//! segment in a colour with a white outline and its class name. Everything is clipped to the
//! image.

use std::path::PathBuf;

use plugin_sdk::{
    DType, FrameInfo, Inputs, Instances, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec,
    ParamType, ParamValue, Params, PortKind, PortSpec, Value,
};

use crate::densepose::DensePose;
use crate::font;
use crate::json_sink::mask_plane;
use crate::quoted;

/// Opacity of masks, in percent.
const MASK_ALPHA: u32 = 45;
/// Opacity of DensePose's part colours, in percent.
const DENSEPOSE_ALPHA: u32 = 60;
/// Threshold of f32 masks.
const MASK_THRESHOLD: f32 = 0.5;
/// Above this many points per instance, points are drawn as small dots (face meshes).
const DENSE_POINTS: usize = 68;

/// 20 distinct colours (Sasha Trubetskoy's list); class `c` gets `PALETTE[c mod 20]`.
pub const PALETTE: [[u8; 3]; 20] = [
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
    [250, 190, 212],
    [0, 128, 128],
    [220, 190, 255],
    [170, 110, 40],
    [255, 250, 200],
    [128, 0, 0],
    [170, 255, 195],
    [128, 128, 0],
    [255, 215, 180],
    [0, 0, 128],
    [128, 128, 128],
];

/// The colour of a track, the same in every frame of its life.
pub fn track_color(track_id: i64) -> [u8; 3] {
    // Consecutive ids land far apart in the palette (7 and its 20 entries are coprime, so
    // 20 consecutive ids get 20 different colours).
    PALETTE[(track_id.unsigned_abs() as usize).wrapping_mul(7) % PALETTE.len()]
}

/// The colour of a class.
pub fn class_color(class: i64) -> [u8; 3] {
    PALETTE[class.rem_euclid(PALETTE.len() as i64) as usize]
}

pub fn kind() -> NodeKind {
    let spec = NodeSpec::new(
        "image_sink",
        "Draws instances (masks, boxes, labels, keypoints, landmarks) on the image and writes one PNG per frame",
    )
    .input(PortSpec::new("image", PortKind::Image, "the image to draw on").dtype(DType::U8).shape("H,W,C"))
    .input(
        PortSpec::new(
            "instances",
            PortKind::Instances,
            "instances to draw; masks must be [N, H, W] at image resolution",
        )
        .optional(),
    )
    .input(
        PortSpec::new(
            "panoptic",
            PortKind::Panoptic,
            "a panoptic segmentation to draw (segments [H, W] at image resolution): each segment in a colour, its outline, its class name",
        )
        .optional(),
    )
    .param(ParamSpec::required(
        "dir",
        ParamType::Path,
        "output directory (created if missing); frame i is written as {i:06}.png (streams other than 0: s{stream}_{i:06}.png)",
    ));
    let spec = overlay_params(spec);
    NodeKind::new(spec, |params| {
        Ok(Box::new(ImageSink::from_params(params)?) as Box<dyn Node>)
    })
}

/// The drawing parameters of the sinks that draw overlays (`image_sink`, `video_sink`).
pub fn overlay_params(spec: NodeSpec) -> NodeSpec {
    spec.param(ParamSpec::optional(
        "score_threshold",
        ParamType::Float,
        ParamValue::Float(0.0),
        "instances with a lower score are not drawn",
    ))
    .param(ParamSpec::optional(
        "labels",
        ParamType::StrList,
        ParamValue::StrList(Vec::new()),
        "class names indexed by class id (empty: the class id is drawn)",
    ))
}

/// The `image_sink` node.
#[derive(Debug)]
pub struct ImageSink {
    dir: PathBuf,
    score_threshold: f32,
    labels: Vec<String>,
}

impl ImageSink {
    pub fn from_params(params: &Params) -> Result<ImageSink, NodeError> {
        let dir = PathBuf::from(params.str("dir")?);
        let overlay = ImageSink::overlay_from_params(params)?;
        std::fs::create_dir_all(&dir).map_err(|e| {
            NodeError::new(format!("cannot create directory {}: {e}", quoted(&dir)))
        })?;
        Ok(ImageSink { dir, ..overlay })
    }

    /// A drawer from the [`overlay_params`], without an output directory.
    pub fn overlay_from_params(params: &Params) -> Result<ImageSink, NodeError> {
        let score_threshold = params.float("score_threshold")?;
        if score_threshold.is_nan() {
            return Err(NodeError::new(
                "parameter \"score_threshold\" must be a number, got NaN",
            ));
        }
        Ok(ImageSink::overlay(
            score_threshold as f32,
            params.str_list("labels")?,
        ))
    }

    /// A drawer without an output directory, for sinks that write the canvas elsewhere (a
    /// video).
    pub fn overlay(score_threshold: f32, labels: Vec<String>) -> ImageSink {
        ImageSink {
            dir: PathBuf::new(),
            score_threshold,
            labels,
        }
    }

    /// Draws the frame's `panoptic` and `instances` inputs, where present, on `image`.
    pub fn draw(&self, image: &Value, inputs: &Inputs) -> Result<Canvas, NodeError> {
        let mut canvas = Canvas::from_image(image)?;
        if let Some(p) = inputs.get("panoptic") {
            self.draw_panoptic(&mut canvas, p)?;
        }
        if let Some(v) = inputs.get("instances") {
            self.draw_instances(&mut canvas, v)?;
        }
        Ok(canvas)
    }

    /// The file frame `frame` is written to.
    pub fn file_of(&self, frame: &FrameInfo) -> PathBuf {
        let name = if frame.stream == 0 {
            format!("{:06}.png", frame.index)
        } else {
            format!("s{}_{:06}.png", frame.stream, frame.index)
        };
        self.dir.join(name)
    }

    fn label_of(&self, class: i64, score: f32) -> String {
        let name = usize::try_from(class)
            .ok()
            .and_then(|c| self.labels.get(c))
            .cloned()
            .unwrap_or_else(|| class.to_string());
        format!("{name} {score:.2}")
    }

    /// Draws `instances` (if any) on `image` and returns the RGB canvas.
    pub fn render(&self, image: &Value, instances: Option<&Value>) -> Result<Canvas, NodeError> {
        let mut canvas = Canvas::from_image(image)?;
        if let Some(v) = instances {
            self.draw_instances(&mut canvas, v)?;
        }
        Ok(canvas)
    }

    /// Draws a panoptic segmentation: each segment blended in a colour (stuff by class,
    /// things by class and segment so that neighbours differ), its outline in white, and its
    /// class name at its first pixel.
    pub fn draw_panoptic(&self, canvas: &mut Canvas, value: &Value) -> Result<(), NodeError> {
        value.validate()?;
        let seg = value.tensor("segments")?;
        if seg.shape() != [canvas.height, canvas.width] {
            return Err(NodeError::new(format!(
                "panoptic segments {:?} do not match the image {}x{}",
                seg.shape(),
                canvas.height,
                canvas.width
            )));
        }
        let map = seg.as_slice::<i32>()?;
        let ids = value.tensor("segment_ids")?.as_slice::<i32>()?;
        let classes = value.tensor("segment_classes")?.as_slice::<i64>()?;
        let things = value
            .get("segment_isthing")
            .map(|t| t.as_slice::<u8>().map(<[u8]>::to_vec))
            .transpose()?
            .unwrap_or_else(|| vec![0; ids.len()]);
        let colour: std::collections::HashMap<i32, ([u8; 3], i64)> = ids
            .iter()
            .zip(classes)
            .zip(&things)
            .map(|((&id, &class), &thing)| {
                let c = if thing != 0 {
                    class_color(class + 7 * i64::from(id))
                } else {
                    class_color(class)
                };
                (id, (c, class))
            })
            .collect();
        let w = canvas.width;
        let mut first: std::collections::BTreeMap<i32, usize> = Default::default();
        for (i, &id) in map.iter().enumerate() {
            let Some(&(c, _)) = colour.get(&id) else {
                continue;
            };
            first.entry(id).or_insert(i);
            let x = i % w;
            let edge = (x + 1 < w && map[i + 1] != id) || (i + w < map.len() && map[i + w] != id);
            let px = &mut canvas.pixels[3 * i..3 * i + 3];
            if edge {
                px.copy_from_slice(&[255, 255, 255]);
            } else {
                for (p, &v) in px.iter_mut().zip(&c) {
                    *p = ((u32::from(*p) * (100 - MASK_ALPHA) + u32::from(v) * MASK_ALPHA + 50)
                        / 100) as u8;
                }
            }
        }
        let scale = (1 + canvas.width.max(canvas.height) / 800).min(4);
        for (id, i) in first {
            let (c, class) = colour[&id];
            let name = usize::try_from(class)
                .ok()
                .and_then(|k| self.labels.get(k))
                .cloned()
                .unwrap_or_else(|| class.to_string());
            canvas.label((i % w) as i64, (i / w) as i64, &name, scale, c);
        }
        Ok(())
    }

    fn draw_instances(&self, canvas: &mut Canvas, value: &Value) -> Result<(), NodeError> {
        let inst = Instances::from_value(value)?;
        let masks = value.get("masks");
        if let Some(m) = masks {
            let shape = m.shape();
            if shape[1..] != [canvas.height, canvas.width] {
                return Err(NodeError::new(format!(
                    "mask shape [{}, {}] does not match image shape [{}, {}]",
                    shape[1], shape[2], canvas.height, canvas.width
                )));
            }
        }
        let drawn: Vec<usize> = (0..inst.len())
            .filter(|&k| inst.scores[k] >= self.score_threshold)
            .collect();
        // Tracked instances take their track's colour, so that an object keeps its colour
        // from frame to frame; others their class's.
        let track_ids = match value.get("track_ids") {
            Some(t) => Some(t.as_slice::<i64>()?),
            None => None,
        };
        let color_of = |k: usize| match track_ids {
            Some(ids) => track_color(ids[k]),
            None => class_color(inst.classes[k]),
        };
        let scale = 1 + canvas.width.max(canvas.height) / 800;
        let scale = scale.min(4);

        if let Some(m) = masks {
            for &k in &drawn {
                let plane = mask_plane(m, k, MASK_THRESHOLD)?;
                canvas.blend_mask(&plane, color_of(k));
            }
        }
        if let Some(d) = DensePose::from_value(value)? {
            for &k in &drawn {
                d.draw(
                    k,
                    &mut canvas.pixels,
                    canvas.height,
                    canvas.width,
                    DENSEPOSE_ALPHA,
                );
            }
        }
        for &k in &drawn {
            if let Some([l, t, r, b]) = pixel_box(inst.boxes[k]) {
                canvas.outline(l, t, r, b, 2, color_of(k));
            }
        }
        for name in ["keypoints", "landmarks"] {
            let Some(t) = value.get(name) else { continue };
            let shape = t.shape();
            let (per, cols) = (shape[1], shape[2]);
            let data = t.as_slice::<f32>()?;
            // Dense point sets (a 468-point face mesh) as small dots without the white ring.
            let dense = per > DENSE_POINTS;
            for &k in &drawn {
                let color = color_of(k);
                let Some(rows) = data.get(k * per * cols..(k + 1) * per * cols) else {
                    continue;
                };
                // All-zero landmarks are padding (concat_instances), not points at (0, 0).
                if name == "landmarks" && rows.iter().all(|&v| v == 0.0) {
                    continue;
                }
                for p in rows.chunks_exact(cols) {
                    // keypoints: (x, y, score), drawn when score > 0; landmarks: (x, y[, z]).
                    let visible = name == "landmarks" || cols < 3 || p[2] > 0.0;
                    if visible && p[0].is_finite() && p[1].is_finite() {
                        let (x, y) = (to_px(p[0]), to_px(p[1]));
                        if dense {
                            canvas.small_dot(x, y, scale as i64 / 2, color);
                        } else {
                            canvas.dot(x, y, scale as i64 + 1, color);
                        }
                    }
                }
            }
        }
        for &k in &drawn {
            if let Some([l, t, _, _]) = pixel_box(inst.boxes[k]) {
                let mut text = self.label_of(inst.classes[k], inst.scores[k]);
                if let Some(ids) = track_ids {
                    text = format!("#{} {text}", ids[k]);
                }
                canvas.label(l, t, &text, scale, color_of(k));
            }
        }
        Ok(())
    }
}

fn to_px(v: f32) -> i64 {
    // `as` saturates and maps NaN to 0; clamping first keeps later arithmetic in range.
    v.round().clamp(-1.0e9, 1.0e9) as i64
}

/// A box in whole pixels: left, top, right, bottom (right and bottom exclusive).
fn pixel_box(b: [f32; 4]) -> Option<[i64; 4]> {
    if !b.iter().all(|v| v.is_finite()) {
        return None;
    }
    let (l, t) = (to_px(b[0]), to_px(b[1]));
    let r = to_px(b[2]).max(l + 1);
    let bottom = to_px(b[3]).max(t + 1);
    Some([l, t, r, bottom])
}

/// An RGB u8 image being drawn on; every drawing call clips to the image.
#[derive(Clone, Debug)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    /// Row-major RGB.
    pub pixels: Vec<u8>,
}

impl Canvas {
    /// An RGB copy of an `image` value (grayscale replicated, alpha dropped).
    pub fn from_image(image: &Value) -> Result<Canvas, NodeError> {
        image.validate()?;
        let t = image.tensor("image")?;
        let (height, width, c) = (t.shape()[0], t.shape()[1], t.shape()[2]);
        let data = t.as_slice::<u8>()?;
        let pixels = match c {
            3 => data.to_vec(),
            _ => {
                let mut out = Vec::with_capacity(width * height * 3);
                for p in data.chunks_exact(c) {
                    if c == 1 {
                        out.extend_from_slice(&[p[0], p[0], p[0]]);
                    } else {
                        out.extend_from_slice(&p[..3]);
                    }
                }
                out
            }
        };
        Ok(Canvas {
            width,
            height,
            pixels,
        })
    }

    /// The pixel at (x, y), if inside.
    pub fn get(&self, x: usize, y: usize) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y * self.width + x) * 3;
        Some([self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]])
    }

    fn set(&mut self, x: i64, y: i64, color: [u8; 3]) {
        if x < 0 || y < 0 || x as usize >= self.width || y as usize >= self.height {
            return;
        }
        let i = (y as usize * self.width + x as usize) * 3;
        self.pixels[i..i + 3].copy_from_slice(&color);
    }

    /// Fills [x0, x1) x [y0, y1), clipped.
    pub fn fill_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, color: [u8; 3]) {
        let (w, h) = (self.width as i64, self.height as i64);
        let (x0, x1) = (x0.clamp(0, w), x1.clamp(0, w));
        let (y0, y1) = (y0.clamp(0, h), y1.clamp(0, h));
        for y in y0..y1 {
            let row = y as usize * self.width;
            for x in x0..x1 {
                let i = (row + x as usize) * 3;
                self.pixels[i..i + 3].copy_from_slice(&color);
            }
        }
    }

    /// The outline of [l, r) x [t, b), `thickness` pixels wide, inside the box.
    pub fn outline(&mut self, l: i64, t: i64, r: i64, b: i64, thickness: i64, color: [u8; 3]) {
        self.fill_rect(l, t, r, t + thickness, color);
        self.fill_rect(l, b - thickness, r, b, color);
        self.fill_rect(l, t, l + thickness, b, color);
        self.fill_rect(r - thickness, t, r, b, color);
    }

    /// Blends `color` over the pixels where `mask` (row-major, same size) is nonzero.
    pub fn blend_mask(&mut self, mask: &[u8], color: [u8; 3]) {
        for (px, &m) in self.pixels.chunks_exact_mut(3).zip(mask) {
            if m != 0 {
                for (p, &c) in px.iter_mut().zip(&color) {
                    let v =
                        (u32::from(*p) * (100 - MASK_ALPHA) + u32::from(c) * MASK_ALPHA + 50) / 100;
                    *p = v as u8;
                }
            }
        }
    }

    /// A filled dot of `radius` in `color` with a one pixel white rim.
    pub fn dot(&mut self, cx: i64, cy: i64, radius: i64, color: [u8; 3]) {
        for (r, c) in [(radius + 1, [255, 255, 255]), (radius, color)] {
            for dy in -r..=r {
                for dx in -r..=r {
                    if dx * dx + dy * dy <= r * r {
                        self.set(cx + dx, cy + dy, c);
                    }
                }
            }
        }
    }

    /// A filled square of side `2 * radius + 1` (radius 0: a plus sign of 5 pixels) in
    /// `color`, clipped; for dense point sets such as a face mesh.
    pub fn small_dot(&mut self, cx: i64, cy: i64, radius: i64, color: [u8; 3]) {
        if radius <= 0 {
            for (dx, dy) in [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)] {
                self.set(cx + dx, cy + dy, color);
            }
            return;
        }
        for dy in -radius..=radius {
            for dx in -radius..=radius {
                self.set(cx + dx, cy + dy, color);
            }
        }
    }

    /// `text` on a filled background of `color`, above the point (x, y) (below it when there
    /// is no room above), shifted left to stay inside the image when possible.
    pub fn label(&mut self, x: i64, y: i64, text: &str, scale: usize, color: [u8; 3]) {
        let pad = scale as i64;
        let tw = font::text_width(text, scale) as i64 + 2 * pad;
        let th = (font::HEIGHT * scale) as i64 + 2 * pad;
        let mut x0 = x.max(0);
        if x0 + tw > self.width as i64 {
            x0 = (self.width as i64 - tw).max(0);
        }
        let y0 = if y - th >= 0 { y - th } else { y.max(0) };
        self.fill_rect(x0, y0, x0 + tw, y0 + th, color);
        let luma =
            299 * u32::from(color[0]) + 587 * u32::from(color[1]) + 114 * u32::from(color[2]);
        let ink = if luma > 128_000 {
            [0, 0, 0]
        } else {
            [255, 255, 255]
        };
        font::for_each_pixel(text, scale, |dx, dy| {
            self.set(x0 + pad + dx as i64, y0 + pad + dy as i64, ink);
        });
    }

    /// Writes the canvas as an RGB8 PNG.
    pub fn write_png(&self, path: &std::path::Path) -> Result<(), NodeError> {
        write_rgb_png(path, self.width, self.height, &self.pixels)
    }
}

/// Writes row-major RGB8 `pixels` of `width x height` as a PNG, through a temporary renamed
/// into place: an interrupted write never leaves a truncated PNG, and a previous file stays
/// until the new one is complete.
pub fn write_rgb_png(
    path: &std::path::Path,
    width: usize,
    height: usize,
    pixels: &[u8],
) -> Result<(), NodeError> {
    let err =
        |e: &dyn std::fmt::Display| NodeError::new(format!("cannot write {}: {e}", quoted(path)));
    let (w, h) = (
        u32::try_from(width).map_err(|e| err(&e))?,
        u32::try_from(height).map_err(|e| err(&e))?,
    );
    let mut file = crate::atomic_file::AtomicFile::create(path).map_err(|e| err(&e))?;
    {
        let out = file
            .writer()
            .ok_or_else(|| NodeError::new(format!("{} was already closed", quoted(path))))?;
        let mut encoder = png::Encoder::new(out, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder.write_header().map_err(|e| err(&e))?;
        writer.write_image_data(pixels).map_err(|e| err(&e))?;
        writer.finish().map_err(|e| err(&e))?;
    }
    file.commit()
}

impl Node for ImageSink {
    fn process(&mut self, frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let canvas = self.draw(inputs.value("image")?, inputs)?;
        canvas.write_png(&self.file_of(frame))?;
        Ok(Outputs::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_sdk::Tensor;
    use std::sync::Arc;

    /// Segments are coloured, outlined where the id changes, and a segment of another size
    /// than the image is an error.
    #[test]
    fn panoptic_segments_are_drawn() {
        let sink = ImageSink {
            dir: std::env::temp_dir(),
            score_threshold: 0.0,
            labels: vec![],
        };
        let img = Value::image(Tensor::from_vec(&[2, 40, 3], vec![100u8; 240]).unwrap());
        let mut canvas = Canvas::from_image(&img).unwrap();
        let mut map = vec![0i32; 80];
        for (i, v) in map.iter_mut().enumerate() {
            *v = if i % 40 < 20 { 1 } else { 2 };
        }
        let pan = Value::new(PortKind::Panoptic)
            .with("segments", Tensor::from_vec(&[2, 40], map).unwrap())
            .with(
                "segment_ids",
                Tensor::from_vec(&[2], vec![1i32, 2]).unwrap(),
            )
            .with(
                "segment_classes",
                Tensor::from_vec(&[2], vec![3i64, 9]).unwrap(),
            );
        sink.draw_panoptic(&mut canvas, &pan).unwrap();
        assert_eq!(
            canvas.get(19, 1),
            Some([255, 255, 255]),
            "outline where the id changes"
        );
        assert_ne!(canvas.get(30, 1), Some([100, 100, 100]));
        let small = Value::new(PortKind::Panoptic)
            .with("segments", Tensor::from_vec(&[1, 1], vec![1i32]).unwrap())
            .with("segment_ids", Tensor::from_vec(&[1], vec![1i32]).unwrap())
            .with(
                "segment_classes",
                Tensor::from_vec(&[1], vec![3i64]).unwrap(),
            );
        assert!(sink.draw_panoptic(&mut canvas, &small).is_err());
    }

    fn temp_dir(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "plugin-io-sink-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ))
    }

    fn params(dir: &std::path::Path, threshold: f64, labels: &[&str]) -> Params {
        Params::new()
            .with("dir", ParamValue::Str(dir.display().to_string()))
            .with("score_threshold", ParamValue::Float(threshold))
            .with(
                "labels",
                ParamValue::StrList(labels.iter().map(|s| s.to_string()).collect()),
            )
    }

    fn gray_image(w: usize, h: usize, v: u8) -> Value {
        Value::image(Tensor::from_vec(&[h, w, 3], vec![v; w * h * 3]).unwrap())
    }

    fn frame(index: u64) -> FrameInfo {
        FrameInfo {
            index,
            source: Arc::from("test"),
            ..FrameInfo::default()
        }
    }

    fn read_png(path: &std::path::Path) -> (u32, u32, Vec<u8>) {
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        (info.width, info.height, buf)
    }

    #[test]
    fn writes_png_with_box_pixels_in_the_class_colour() {
        let dir = temp_dir("box");
        let mut node = (kind().create)(&params(&dir, 0.3, &["cat", "dog"])).unwrap();
        let inst = Instances {
            boxes: vec![[20.0, 30.0, 60.0, 70.0], [5.0, 5.0, 15.0, 15.0]],
            scores: vec![0.93, 0.1],
            classes: vec![1, 2],
        }
        .to_value()
        .unwrap();
        let mut inputs = Inputs::new();
        inputs.push("image", Some(gray_image(100, 80, 0)));
        inputs.push("instances", Some(inst));
        node.process(&frame(7), &inputs).unwrap();

        let path = dir.join("000007.png");
        let (w, h, px) = read_png(&path);
        assert_eq!((w, h), (100, 80));
        let at = |x: usize, y: usize| {
            let i = (y * 100 + x) * 3;
            [px[i], px[i + 1], px[i + 2]]
        };
        let dog = class_color(1);
        // Box edges (2 px, inside [20, 60) x [30, 70)).
        for (x, y) in [
            (20, 50),
            (21, 50),
            (58, 50),
            (59, 50),
            (40, 68),
            (40, 69),
            (25, 31),
        ] {
            assert_eq!(at(x, y), dog, "pixel ({x}, {y})");
        }
        // Inside and outside the box: untouched.
        assert_eq!(at(40, 50), [0, 0, 0]);
        assert_eq!(at(60, 50), [0, 0, 0]);
        assert_eq!(at(40, 71), [0, 0, 0]);
        // The label background sits above the box: rows [30 - 9, 30).
        assert_eq!(at(20, 22), dog);
        // The low-score instance is not drawn.
        assert_eq!(at(5, 10), [0, 0, 0]);
        assert_eq!(at(10, 5), [0, 0, 0]);

        // Without instances: the image as is.
        let mut inputs = Inputs::new();
        inputs.push("image", Some(gray_image(4, 3, 9)));
        inputs.push("instances", None);
        node.process(&frame(8), &inputs).unwrap();
        let (w, h, px) = read_png(&dir.join("000008.png"));
        assert_eq!((w, h), (4, 3));
        assert!(px.iter().all(|&v| v == 9));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn masks_keypoints_and_clipping() {
        let sink = ImageSink {
            dir: temp_dir("unused"),
            score_threshold: 0.0,
            labels: Vec::new(),
        };
        let (w, h) = (16usize, 12usize);
        let mut mask = vec![0u8; w * h];
        mask[10 * w + 8] = 1;
        let mut kp = vec![0.0f32; 2 * 3];
        kp[..3].copy_from_slice(&[3.0, 9.0, 1.0]); // visible
        kp[3..].copy_from_slice(&[12.0, 11.0, 0.0]); // not visible
        let inst = Instances {
            // Far outside the image on every side: clipped, no panic.
            boxes: vec![[-1e12, -50.0, 1e12, f32::MAX]],
            scores: vec![0.5],
            classes: vec![-3],
        }
        .to_value()
        .unwrap()
        .with("masks", Tensor::from_vec(&[1, h, w], mask).unwrap())
        .with("keypoints", Tensor::from_vec(&[1, 2, 3], kp).unwrap())
        .with(
            "landmarks",
            Tensor::from_vec(&[1, 1, 2], vec![-100.0f32, 5.0]).unwrap(),
        );
        let canvas = sink.render(&gray_image(w, h, 100), Some(&inst)).unwrap();
        let c = class_color(-3);
        let blended: Vec<u8> = c
            .iter()
            .map(|&c| ((100 * 55 + u32::from(c) * 45 + 50) / 100) as u8)
            .collect();
        assert_eq!(canvas.get(8, 10).unwrap().to_vec(), blended);
        assert_eq!(canvas.get(3, 9).unwrap(), c);
        assert_eq!(canvas.get(12, 11).unwrap(), [100, 100, 100]);
        // The label is clipped into the top left corner, on the class colour.
        assert_eq!(canvas.get(0, 0).unwrap(), c);

        // Masks at another resolution are an error naming both shapes.
        let bad = Instances {
            boxes: vec![[0.0, 0.0, 1.0, 1.0]],
            scores: vec![0.5],
            classes: vec![0],
        }
        .to_value()
        .unwrap()
        .with("masks", Tensor::zeros(DType::Bool, &[1, 6, 8]).unwrap());
        let err = sink.render(&gray_image(w, h, 0), Some(&bad)).unwrap_err();
        assert_eq!(
            err.message(),
            "mask shape [6, 8] does not match image shape [12, 16]"
        );
    }

    #[test]
    fn face_mesh_points_and_padded_landmarks() {
        let sink = ImageSink {
            dir: temp_dir("unused"),
            score_threshold: 0.0,
            labels: Vec::new(),
        };
        let (w, h) = (120usize, 60usize);
        // Instance 0: a 468-point mesh on a grid (x, y, z with negative z); instance 1:
        // all-zero landmarks (padding from concat_instances), not drawn at (0, 0).
        let mut lm = vec![0.0f32; 2 * 468 * 3];
        for (i, p) in lm[..468 * 3].chunks_exact_mut(3).enumerate() {
            p.copy_from_slice(&[5.0 + (i % 26) as f32, 5.0 + (i / 26) as f32, -3.0]);
        }
        let inst = Instances {
            boxes: vec![[100.0, 50.0, 101.0, 51.0], [100.0, 50.0, 101.0, 51.0]],
            scores: vec![0.9, 0.9],
            classes: vec![2, 5],
        }
        .to_value()
        .unwrap()
        .with("landmarks", Tensor::from_vec(&[2, 468, 3], lm).unwrap());
        let canvas = sink.render(&gray_image(w, h, 100), Some(&inst)).unwrap();
        let c = class_color(2);
        assert_eq!(canvas.get(5, 5).unwrap(), c);
        assert_eq!(canvas.get(30, 22).unwrap(), c);
        assert_eq!(canvas.get(0, 0).unwrap(), [100, 100, 100]);
        assert_eq!(canvas.get(1, 1).unwrap(), [100, 100, 100]);
        // Small dots: no white ring around the mesh.
        assert_eq!(canvas.get(3, 5).unwrap(), [100, 100, 100]);
    }

    #[test]
    fn grayscale_and_rgba_images_become_rgb() {
        let g = Value::image(Tensor::from_vec(&[1, 2, 1], vec![7u8, 9]).unwrap());
        assert_eq!(Canvas::from_image(&g).unwrap().pixels, [7, 7, 7, 9, 9, 9]);
        let rgba = Value::image(Tensor::from_vec(&[1, 1, 4], vec![1u8, 2, 3, 4]).unwrap());
        assert_eq!(Canvas::from_image(&rgba).unwrap().pixels, [1, 2, 3]);
    }

    #[test]
    fn labels_name_the_class_or_its_id() {
        let sink = ImageSink {
            dir: PathBuf::new(),
            score_threshold: 0.0,
            labels: vec!["person".into()],
        };
        assert_eq!(sink.label_of(0, 0.934), "person 0.93");
        assert_eq!(sink.label_of(5, 0.5), "5 0.50");
        assert_eq!(sink.label_of(-1, 1.0), "-1 1.00");
    }

    #[test]
    fn unwritable_file_is_named() {
        let canvas = Canvas {
            width: 1,
            height: 1,
            pixels: vec![0, 0, 0],
        };
        let path = std::path::Path::new("/nonexistent-dir-for-test/x.png");
        let err = canvas.write_png(path).unwrap_err();
        assert!(
            err.message()
                .starts_with("cannot write \"/nonexistent-dir-for-test/x.png\": "),
            "{err}"
        );
    }
}
