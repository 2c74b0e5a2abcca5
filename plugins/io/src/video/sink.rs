//! `video_sink`: draws the frame's instances (tracked ones in their track's colour, with
//! their id) and writes an H.264 Constrained Baseline MP4, which every browser plays. Each
//! stream gets its own file; a file appears only complete (written beside its target and
//! renamed when its stream ends).

use std::path::{Path, PathBuf};

use openh264::encoder::{
    Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, QpRange, RateControlMode,
};
use openh264::formats::YUVSlices;
use openh264::OpenH264API;
use plugin_sdk::{
    DType, FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec,
};

use super::yuv::rgb_to_yuv420;
use crate::atomic_file::AtomicFile;
use crate::image_sink::ImageSink;
use crate::quoted;

/// The track's clock: 90 kHz, the usual video timescale (exact for 24, 25, 30, 50, 60 fps and
/// their 1000/1001 variants' durations to the tick).
const TIMESCALE: u32 = 90_000;

/// The smallest side OpenH264 encodes: one 16x16 macroblock.
const MIN_SIDE: usize = 16;

pub fn kind() -> NodeKind {
    let spec = NodeSpec::new(
        "video_sink",
        "Draws instances (tracked ones with their id, in a colour per track) and panoptic segments on each frame and writes an H.264 MP4 per stream",
    )
    .input(PortSpec::new("image", PortKind::Image, "the frame to draw on").dtype(DType::U8).shape("H,W,C"))
    .input(
        PortSpec::new("instances", PortKind::Instances, "instances to draw (with track_ids: labelled #id and coloured by track)")
            .optional(),
    )
    .input(PortSpec::new("panoptic", PortKind::Panoptic, "a panoptic segmentation to draw").optional())
    .param(ParamSpec::required(
        "path",
        ParamType::Path,
        "the MP4 file to write (its directory is created); the streams after the first go to NAME-1.mp4, NAME-2.mp4, ...",
    ))
    .param(
        ParamSpec::optional(
            "fps",
            ParamType::Float,
            ParamValue::Float(0.0),
            "frame rate of the file; 0: each frame lasts until the next one's timestamp (a video source's presentation times)",
        )
        .range(0.0, 1000.0),
    )
    .param(
        ParamSpec::optional(
            "qp",
            ParamType::Int,
            ParamValue::Int(24),
            "H.264 quantiser, constant for every frame: lower is sharper and larger (0-51)",
        )
        .range(0.0, 51.0),
    );
    let spec = crate::image_sink::overlay_params(spec);
    NodeKind::new(spec, |params| {
        Ok(Box::new(VideoSink::from_params(params)?) as Box<dyn Node>)
    })
}

/// One encoded frame waiting for its duration (the next frame's timestamp).
struct PendingSample {
    bytes: Vec<u8>,
    is_sync: bool,
    timestamp_ns: u64,
}

/// The MP4 file of one stream.
struct StreamFile {
    stream: u32,
    path: PathBuf,
    size: (usize, usize),
    encoder: Encoder,
    writer: Option<mp4::Mp4Writer<AtomicFile>>,
    /// Kept until `writer` exists: it is created at the first frame, which holds the
    /// parameter sets its header needs.
    file: Option<AtomicFile>,
    pending: Option<PendingSample>,
    /// Ticks written so far (fixed frame rate) and the first frame's timestamp.
    first_ns: u64,
    frames: u64,
}

/// The `video_sink` node.
pub struct VideoSink {
    path: PathBuf,
    fps: f64,
    qp: u8,
    overlay: ImageSink,
    current: Option<StreamFile>,
    streams_seen: usize,
}

impl VideoSink {
    pub fn from_params(params: &Params) -> Result<VideoSink, NodeError> {
        let path = PathBuf::from(params.str("path")?);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                NodeError::new(format!("cannot create directory {}: {e}", quoted(dir)))
            })?;
        }
        Ok(VideoSink {
            path,
            fps: params.float("fps")?,
            qp: u8::try_from(params.int("qp")?)
                .ok()
                .filter(|&q| q <= 51)
                .ok_or_else(|| NodeError::new("parameter \"qp\" must be 0 to 51"))?,
            overlay: ImageSink::overlay_from_params(params)?,
            current: None,
            streams_seen: 0,
        })
    }

    /// The file of the `n`-th stream (from 0): the path itself, then NAME-n.mp4 beside it.
    fn path_of(&self, n: usize) -> PathBuf {
        if n == 0 {
            return self.path.clone();
        }
        let stem = self
            .path
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        let ext = self
            .path
            .extension()
            .map_or_else(|| "mp4".into(), |e| e.to_string_lossy().into_owned());
        self.path.with_file_name(format!("{stem}-{n}.{ext}"))
    }

    fn open(&mut self, stream: u32, width: usize, height: usize) -> Result<StreamFile, NodeError> {
        let path = self.path_of(self.streams_seen);
        self.streams_seen += 1;
        let fps = if self.fps > 0.0 { self.fps } else { 30.0 };
        // A constant quantiser, no rate control: every frame is written (a bit-rate target
        // would have the encoder drop frames) at an even quality.
        let config = EncoderConfig::new()
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .rate_control_mode(RateControlMode::Off)
            .qp(QpRange::new(self.qp, self.qp))
            .skip_frames(false)
            // A keyframe every two seconds, so that a player can seek.
            .intra_frame_period(IntraFramePeriod::from_num_frames(
                (2.0 * fps).round().max(1.0) as u32,
            ));
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| NodeError::new(format!("cannot start the H.264 encoder: {e}")))?;
        let file = AtomicFile::create(&path)
            .map_err(|e| NodeError::new(format!("cannot create {}: {e}", quoted(&path))))?;
        Ok(StreamFile {
            stream,
            path,
            size: (width, height),
            encoder,
            writer: None,
            file: Some(file),
            pending: None,
            first_ns: 0,
            frames: 0,
        })
    }
}

/// NAL units of an Annex B unit without their start code.
fn strip_start_code(nal: &[u8]) -> &[u8] {
    if nal.starts_with(&[0, 0, 0, 1]) {
        &nal[4..]
    } else if nal.starts_with(&[0, 0, 1]) {
        &nal[3..]
    } else {
        nal
    }
}

fn mp4_error(path: &Path, e: mp4::Error) -> NodeError {
    NodeError::new(format!("cannot write {}: {e}", quoted(path)))
}

impl StreamFile {
    /// Encodes one RGB frame and writes the frame before it (whose duration it gives).
    fn push(&mut self, rgb: &[u8], timestamp_ns: u64, fps: f64) -> Result<(), NodeError> {
        let (w, h) = self.size;
        let (ew, eh, yuv) = rgb_to_yuv420(rgb, w, h);
        let (y, chroma) = yuv.split_at(ew * eh);
        let (u, v) = chroma.split_at(ew * eh / 4);
        let source = YUVSlices::new((y, u, v), (ew, eh), (ew, ew / 2, ew / 2));
        let encoded = self
            .encoder
            .encode(&source)
            .map_err(|e| NodeError::new(format!("H.264 encoder: {e}")))?;
        let is_sync = matches!(encoded.frame_type(), FrameType::IDR | FrameType::I);
        let (mut sps, mut pps, mut bytes) = (None, None, Vec::new());
        for l in 0..encoded.num_layers() {
            let Some(layer) = encoded.layer(l) else {
                continue;
            };
            for n in 0..layer.nal_count() {
                let Some(nal) = layer.nal_unit(n).map(strip_start_code) else {
                    continue;
                };
                match nal.first().map(|b| b & 0x1F) {
                    // Parameter sets live in the track header (avcC), as `avc1` requires.
                    Some(7) => sps = Some(nal.to_vec()),
                    Some(8) => pps = Some(nal.to_vec()),
                    Some(_) => {
                        bytes.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                        bytes.extend_from_slice(nal);
                    }
                    None => {}
                }
            }
        }
        if bytes.is_empty() {
            return Err(NodeError::new(
                "H.264 encoder: it returned no picture for this frame",
            ));
        }
        if self.writer.is_none() {
            let (Some(sps), Some(pps)) = (sps, pps) else {
                return Err(NodeError::new(
                    "H.264 encoder: its first frame holds no parameter sets",
                ));
            };
            let file = self.file.take().ok_or("the output file is closed")?;
            let config = mp4::Mp4Config {
                major_brand: str::parse("isom").map_err(|e| mp4_error(&self.path, e))?,
                minor_version: 512,
                compatible_brands: ["isom", "iso2", "avc1", "mp41"]
                    .iter()
                    .filter_map(|b| str::parse(b).ok())
                    .collect(),
                timescale: 1000,
            };
            let mut writer =
                mp4::Mp4Writer::write_start(file, &config).map_err(|e| mp4_error(&self.path, e))?;
            let track = mp4::TrackConfig {
                track_type: mp4::TrackType::Video,
                timescale: TIMESCALE,
                language: "und".into(),
                media_conf: mp4::MediaConfig::AvcConfig(mp4::AvcConfig {
                    width: u16::try_from(ew).unwrap_or(u16::MAX),
                    height: u16::try_from(eh).unwrap_or(u16::MAX),
                    seq_param_set: sps,
                    pic_param_set: pps,
                }),
            };
            writer
                .add_track(&track)
                .map_err(|e| mp4_error(&self.path, e))?;
            self.writer = Some(writer);
            self.first_ns = timestamp_ns;
        }
        let next = PendingSample {
            bytes,
            is_sync,
            timestamp_ns,
        };
        if let Some(previous) = self.pending.replace(next) {
            let ticks = if fps > 0.0 {
                self.fixed_ticks(fps)
            } else {
                ticks_between(previous.timestamp_ns, timestamp_ns)
            };
            self.write(previous, ticks)?;
        }
        Ok(())
    }

    /// Ticks of the current frame at a fixed rate: the difference of rounded frame starts,
    /// so that durations never drift.
    fn fixed_ticks(&self, fps: f64) -> u32 {
        let start = |k: u64| (k as f64 * f64::from(TIMESCALE) / fps).round() as u64;
        u32::try_from(start(self.frames + 1) - start(self.frames)).unwrap_or(u32::MAX)
    }

    fn write(&mut self, sample: PendingSample, ticks: u32) -> Result<(), NodeError> {
        let writer = self.writer.as_mut().ok_or("the output file is closed")?;
        let mp4_sample = mp4::Mp4Sample {
            start_time: 0,
            duration: ticks.max(1),
            rendering_offset: 0,
            is_sync: sample.is_sync,
            bytes: sample.bytes.into(),
        };
        writer
            .write_sample(1, &mp4_sample)
            .map_err(|e| mp4_error(&self.path, e))?;
        self.frames += 1;
        Ok(())
    }

    /// Writes the last frame (lasting as long as the one before it) and the index, and
    /// renames the file into place.
    fn finish(mut self, fps: f64) -> Result<(), NodeError> {
        if let Some(last) = self.pending.take() {
            let ticks = if fps > 0.0 || self.frames == 0 {
                self.fixed_ticks(if fps > 0.0 { fps } else { 30.0 })
            } else {
                // The mean duration so far.
                let elapsed = ticks_between(self.first_ns, last.timestamp_ns);
                (u64::from(elapsed) / self.frames).max(1) as u32
            };
            self.write(last, ticks)?;
        }
        let Some(mut writer) = self.writer.take() else {
            return Ok(());
        };
        writer.write_end().map_err(|e| mp4_error(&self.path, e))?;
        writer.into_writer().commit_in_place()
    }
}

/// 90 kHz ticks between two timestamps (at least 1: a sample cannot last 0).
fn ticks_between(from_ns: u64, to_ns: u64) -> u32 {
    let ns = to_ns.saturating_sub(from_ns);
    let ticks = (u128::from(ns) * u128::from(TIMESCALE) + 500_000_000) / 1_000_000_000;
    u32::try_from(ticks).unwrap_or(u32::MAX).max(1)
}

impl Node for VideoSink {
    fn process(&mut self, frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let canvas = self.overlay.draw(inputs.value("image")?, inputs)?;
        let (w, h) = (canvas.width, canvas.height);
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.stream != frame.stream)
        {
            if let Some(done) = self.current.take() {
                done.finish(self.fps)?;
            }
        }
        if self.current.is_none() {
            if w < MIN_SIDE || h < MIN_SIDE {
                return Err(NodeError::new(format!(
                    "cannot encode a {w}x{h} frame: OpenH264 needs at least {MIN_SIDE}x{MIN_SIDE} (one macroblock)"
                )));
            }
            self.current = Some(self.open(frame.stream, w, h)?);
        }
        let fps = self.fps;
        let Some(current) = self.current.as_mut() else {
            return Ok(Outputs::new());
        };
        if current.size != (w, h) {
            return Err(NodeError::new(format!(
                "the frame is {w}x{h} but this stream's video {} is {}x{}: an MP4 track has one size (resize the frames, or give each size its own stream)",
                quoted(&current.path),
                current.size.0,
                current.size.1
            )));
        }
        current.push(&canvas.pixels, frame.timestamp_ns, fps)?;
        Ok(Outputs::new())
    }

    fn finish(&mut self) -> Result<(), NodeError> {
        match self.current.take() {
            Some(current) => current.finish(self.fps),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::open_video;
    use plugin_sdk::{Tensor, Value};
    use std::sync::Arc;

    fn params(path: &Path, fps: f64) -> Params {
        let mut p = Params::new();
        p.set("path", ParamValue::Str(path.display().to_string()));
        p.set("fps", ParamValue::Float(fps));
        p.set("qp", ParamValue::Int(24));
        p.set("score_threshold", ParamValue::Float(0.0));
        p.set("labels", ParamValue::StrList(Vec::new()));
        p
    }

    fn sink_for(path: &Path) -> VideoSink {
        VideoSink::from_params(&params(path, 25.0)).unwrap()
    }

    fn frames_of(path: &Path) -> Vec<crate::video::Frame> {
        let mut reader = open_video(path).unwrap();
        std::iter::from_fn(|| reader.next_frame().unwrap()).collect()
    }

    fn frame(stream: u32, index: u64, timestamp_ns: u64) -> FrameInfo {
        FrameInfo {
            stream,
            index,
            timestamp_ns,
            source: Arc::from("test"),
            ..FrameInfo::default()
        }
    }

    fn inputs(rgb: Vec<u8>, w: usize, h: usize) -> Inputs {
        let mut inputs = Inputs::new();
        let image = Tensor::from_vec(&[h, w, 3], rgb).unwrap();
        inputs.push("image", Some(Value::image(image)));
        inputs
    }

    /// The frames of a real clip, encoded and read back by our own decoder: the same
    /// number of frames with the source's timestamps, close to the originals, and each
    /// stream in its own file, which exists only once complete.
    #[test]
    fn writes_a_baseline_mp4_per_stream_with_the_frames_and_their_times() {
        let dir = std::env::temp_dir().join(format!("video-sink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = dir.join("out.mp4");
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/video/tiny_baseline.mp4");
        let originals = frames_of(&source);
        let mut sink = VideoSink::from_params(&params(&out, 0.0)).unwrap();
        for (k, f) in originals.iter().enumerate() {
            let info = frame(0, k as u64, f.pts_ns);
            sink.process(&info, &inputs(f.rgb.clone(), 64, 48)).unwrap();
        }
        assert!(!out.exists(), "the file appears only when its stream ends");
        // A second stream of another size: the first file is complete, the second begins.
        sink.process(&frame(7, 12, 0), &inputs(vec![200; 30 * 20 * 3], 30, 20))
            .unwrap();
        assert!(out.exists());
        let e = sink
            .process(&frame(7, 13, 1), &inputs(vec![0; 32 * 20 * 3], 32, 20))
            .unwrap_err();
        assert!(
            e.message()
                .contains("the frame is 32x20 but this stream's video"),
            "{e}"
        );
        sink.finish().unwrap();

        let written = frames_of(&out);
        assert_eq!(written.len(), originals.len());
        for (k, (w, o)) in written.iter().zip(&originals).enumerate() {
            assert_eq!(w.pts_ns, o.pts_ns, "frame {k}");
            let diff: f64 = w
                .rgb
                .iter()
                .zip(&o.rgb)
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs())
                .sum::<f64>()
                / w.rgb.len() as f64;
            assert!(diff < 12.0, "frame {k}: mean difference {diff}");
        }
        // The odd-sized second stream: its even-padded picture, one frame of a 30 fps clip.
        let second = frames_of(&dir.join("out-1.mp4"));
        assert_eq!(
            (second.len(), second[0].width, second[0].height),
            (1, 30, 20)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_fixed_rate_spaces_frames_evenly_and_an_unfinished_file_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("video-sink-fps-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = dir.join("fixed.mp4");
        let mut sink = sink_for(&out);
        for k in 0..3u64 {
            // Wall-clock timestamps are ignored at a fixed rate.
            let rgb = vec![(k * 80) as u8; 17 * 19 * 3];
            sink.process(
                &frame(0, k, 1_700_000_000_000_000_000 + k * 7),
                &inputs(rgb, 17, 19),
            )
            .unwrap();
        }
        sink.finish().unwrap();
        let frames = frames_of(&out);
        let times: Vec<u64> = frames.iter().map(|f| f.pts_ns).collect();
        assert_eq!(times, [0, 40_000_000, 80_000_000]);
        assert_eq!((frames[0].width, frames[0].height), (18, 20));
        let e = sink_for(&dir.join("small.mp4"))
            .process(&frame(0, 0, 0), &inputs(vec![0; 15 * 40 * 3], 15, 40))
            .unwrap_err();
        assert!(e.message().contains("at least 16x16"), "{e}");
        let partial = dir.join("partial.mp4");
        let mut sink = sink_for(&partial);
        sink.process(&frame(0, 0, 0), &inputs(vec![9; 16 * 16 * 3], 16, 16))
            .unwrap();
        drop(sink);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "only fixed.mp4"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
