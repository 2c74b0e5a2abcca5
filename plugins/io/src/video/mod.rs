//! Video in and out: `video_source` reads H.264 MP4, Y4M and frame sequences, one stream
//! per video; `video_sink` draws the instances (track ids in stable colours) and writes an
//! H.264 MP4 that browsers play. Everything builds with cargo alone: OpenH264 is compiled
//! from its sources by the `openh264` crate.

pub mod mp4;
pub mod sink;
pub mod y4m;
pub mod yuv;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use plugin_sdk::{
    DType, FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Tensor, Value,
};

use crate::quoted;

/// A decoded frame: RGB u8 `[height, width, 3]` and its presentation time in its stream.
pub struct Frame {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
    pub pts_ns: u64,
}

/// Frames of one stream, in presentation order. Errors are short (the caller adds the file).
pub trait FrameReader: Send {
    fn next_frame(&mut self) -> Result<Option<Frame>, String>;
    fn name(&self) -> &str;
}

const VIDEO_EXTENSIONS: [&str; 4] = ["mp4", "m4v", "mov", "y4m"];
const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

fn has_extension(path: &Path, list: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| list.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// What one stream reads.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamInput {
    Video(PathBuf),
    /// Image files, one frame each, at a fixed frame rate.
    Images(Vec<PathBuf>),
}

/// A reader of the video at `path`: its container from its first bytes (the extension can
/// lie).
pub fn open_video(path: &Path) -> Result<Box<dyn FrameReader>, String> {
    let mut head = [0u8; 12];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let mut n = 0;
        while n < head.len() {
            match f.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Err(format!("cannot read: {e}")),
            }
        }
        n
    };
    let head = &head[..n];
    if head.starts_with(b"YUV4MPEG2") {
        return Ok(Box::new(y4m::Y4mReader::open(path)?));
    }
    if head.len() >= 8 && matches!(&head[4..8], b"ftyp" | b"moov" | b"mdat" | b"free" | b"wide") {
        return Ok(Box::new(mp4::Mp4Reader::open(path)?));
    }
    let name = path.display().to_string();
    let what = if n == 0 {
        "the file is empty".to_string()
    } else if head.starts_with(b"RIFF") && head.get(8..12) == Some(b"AVI ") {
        format!(
            "an AVI file: only MP4 (H.264) and Y4M are read; convert with: {}",
            mp4::convert_command(&name)
        )
    } else if head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        format!(
            "a Matroska/WebM file: only MP4 (H.264) and Y4M are read; convert with: {}",
            mp4::convert_command(&name)
        )
    } else {
        "not an MP4 or Y4M video (unknown format)".to_string()
    };
    Err(what)
}

/// The streams `path` names: a video file, a directory or glob of videos (one stream each,
/// sorted by name), or a directory or glob of images (one stream, sorted by name).
pub fn list_streams(path: &str) -> Result<Vec<StreamInput>, NodeError> {
    let p = Path::new(path);
    let known =
        |f: &Path| has_extension(f, &VIDEO_EXTENSIONS) || has_extension(f, &IMAGE_EXTENSIONS);
    let files = crate::image_source::list_matching(
        path,
        known,
        known,
        "a video file",
        "video (.mp4, .m4v, .mov, .y4m) or image (.jpg, .jpeg, .png)",
    )?;
    let (images, videos): (Vec<PathBuf>, Vec<PathBuf>) = files
        .into_iter()
        .partition(|f| has_extension(f, &IMAGE_EXTENSIONS));
    match (images.is_empty(), videos.is_empty()) {
        (true, _) => Ok(videos.into_iter().map(StreamInput::Video).collect()),
        (false, true) => Ok(vec![StreamInput::Images(images)]),
        (false, false) => Err(NodeError::new(format!(
            "path {} mixes videos ({}) and images ({}): give one kind",
            quoted(p),
            quoted(&videos[0]),
            quoted(&images[0])
        ))),
    }
}

/// Frames of an image sequence at a fixed rate.
struct ImageSequence {
    files: Vec<PathBuf>,
    next: usize,
    frame_ns: f64,
    name: String,
}

impl FrameReader for ImageSequence {
    fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        let Some(path) = self.files.get(self.next) else {
            return Ok(None);
        };
        // The frame's file names the errors too.
        self.name = path.display().to_string();
        let image = crate::image_source::read_image(path).map_err(|e| e.to_string())?;
        let pts_ns = (self.next as f64 * self.frame_ns).round() as u64;
        self.next += 1;
        let shape = image.shape().to_vec();
        let rgb = image.as_slice::<u8>().map_err(|e| e.to_string())?.to_vec();
        Ok(Some(Frame {
            width: shape[1],
            height: shape[0],
            rgb,
            pts_ns,
        }))
    }

    fn name(&self) -> &str {
        &self.name
    }
}

pub fn source_kind() -> NodeKind {
    let spec = NodeSpec::new(
        "video_source",
        "Reads videos (MP4 with H.264 Constrained Baseline, Y4M 4:2:0) or a sequence of images, one RGB frame at a time with its presentation time; each video is a stream of its own",
    )
    .output(
        PortSpec::new("image", PortKind::Image, "the decoded frame, RGB")
            .dtype(DType::U8)
            .shape("H,W,3"),
    )
    .param(ParamSpec::required(
        "path",
        ParamType::Path,
        "a video file; a directory or glob of videos (one stream each, by name); or a directory or glob of JPEG/PNG frames (one stream, by name)",
    ))
    .param(
        ParamSpec::optional(
            "fps",
            ParamType::Float,
            ParamValue::Float(30.0),
            "frame rate of an image sequence (videos carry their own)",
        )
        .range(1e-3, 1e6),
    )
    .param(
        ParamSpec::optional(
            "max_frames",
            ParamType::Int,
            ParamValue::Int(0),
            "read at most this many frames of each stream (0: all)",
        )
        .range(0.0, 1e15),
    );
    NodeKind::new(spec, |params| {
        Ok(Box::new(VideoSource::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `video_source` node.
pub struct VideoSource {
    streams: Vec<StreamInput>,
    /// The reader of the stream being read.
    current: Option<Box<dyn FrameReader>>,
    next_stream: usize,
    frames_in_stream: u64,
    max_frames: u64,
    fps: f64,
    name: Arc<str>,
}

impl VideoSource {
    pub fn from_params(params: &Params) -> Result<VideoSource, NodeError> {
        let streams = list_streams(params.str("path")?)?;
        let fps = params.float("fps")?;
        if !(fps.is_finite() && fps > 0.0) {
            return Err(NodeError::new(format!(
                "parameter \"fps\" must be a positive number, got {fps}"
            )));
        }
        let max_frames = u64::try_from(params.int("max_frames")?)
            .map_err(|_| NodeError::new("parameter \"max_frames\" must be 0 (all) or more"))?;
        let source = VideoSource {
            streams,
            current: None,
            next_stream: 0,
            frames_in_stream: 0,
            max_frames,
            fps,
            name: Arc::from(""),
        };
        // Every video's header is checked now, so that an unsupported file is named before
        // the first frame runs through the pipeline.
        for s in &source.streams {
            if let StreamInput::Video(path) = s {
                open_video(path).map_err(|e| format!("{}: {e}", quoted(path)))?;
            }
        }
        Ok(source)
    }

    fn open(&self, input: &StreamInput) -> Result<Box<dyn FrameReader>, NodeError> {
        match input {
            StreamInput::Video(path) => {
                open_video(path).map_err(|e| NodeError::new(format!("{}: {e}", quoted(path))))
            }
            StreamInput::Images(files) => Ok(Box::new(ImageSequence {
                files: files.clone(),
                next: 0,
                frame_ns: 1e9 / self.fps,
                name: String::new(),
            })),
        }
    }
}

impl Node for VideoSource {
    fn process(&mut self, _frame: &FrameInfo, _inputs: &Inputs) -> Result<Outputs, NodeError> {
        Err(NodeError::new(
            "video_source is a source and takes no inputs",
        ))
    }

    fn next_frame(&mut self, frame: &mut FrameInfo) -> Result<Option<Outputs>, NodeError> {
        loop {
            if self.current.is_none() {
                let Some(input) = self.streams.get(self.next_stream) else {
                    return Ok(None);
                };
                let reader = self.open(input)?;
                if self.next_stream > 0 {
                    frame.begin_stream();
                }
                self.current = Some(reader);
                self.next_stream += 1;
                self.frames_in_stream = 0;
            }
            let Some(reader) = self.current.as_mut() else {
                continue;
            };
            let done = self.max_frames > 0 && self.frames_in_stream >= self.max_frames;
            let next = if done {
                None
            } else {
                reader.next_frame().map_err(|e| {
                    NodeError::new(format!("{}: {e}", quoted(Path::new(reader.name()))))
                })?
            };
            let Some(decoded) = next else {
                // This stream ended (an empty video adds no frame): the next one, if any.
                self.current = None;
                continue;
            };
            self.frames_in_stream += 1;
            // A video's name, or the image file the frame came from.
            if *self.name != *reader.name() {
                self.name = Arc::from(reader.name());
            }
            frame.source = self.name.clone();
            frame.timestamp_ns = decoded.pts_ns;
            frame.width = u32::try_from(decoded.width).unwrap_or(u32::MAX);
            frame.height = u32::try_from(decoded.height).unwrap_or(u32::MAX);
            let image = Tensor::from_vec(&[decoded.height, decoded.width, 3], decoded.rgb)?;
            return Ok(Some(Outputs::one("image", Value::image(image))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/video")
            .join(name)
    }

    /// Every frame until the end or the first error.
    fn read_all(name: &str) -> (Vec<Frame>, Option<String>) {
        let mut reader = match open_video(&fixture(name)) {
            Ok(r) => r,
            Err(e) => return (Vec::new(), Some(e)),
        };
        let mut frames = Vec::new();
        loop {
            match reader.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => return (frames, None),
                Err(e) => return (frames, Some(e)),
            }
        }
    }

    /// ffmpeg's decoded planes of tiny_baseline.mp4, as RGB by our conversion.
    fn ffmpeg_frames() -> Vec<Vec<u8>> {
        let yuv = std::fs::read(fixture("tiny_baseline.yuv")).unwrap();
        let (w, h) = (64, 48);
        yuv.chunks_exact(w * h * 3 / 2)
            .map(|f| {
                let (y, uv) = f.split_at(w * h);
                let (u, v) = uv.split_at(w * h / 4);
                yuv::Yuv420 {
                    width: w,
                    height: h,
                    y,
                    u,
                    v,
                    y_stride: w,
                    uv_stride: w / 2,
                }
                .to_rgb()
                .unwrap()
            })
            .collect()
    }

    /// OpenH264 decodes the Constrained Baseline file to the same pictures as ffmpeg, with
    /// the container's presentation times.
    #[test]
    fn h264_baseline_decodes_as_ffmpeg_does() {
        let (frames, error) = read_all("tiny_baseline.mp4");
        assert_eq!(error, None);
        let expected = ffmpeg_frames();
        assert_eq!(frames.len(), 12);
        for (k, (f, e)) in frames.iter().zip(&expected).enumerate() {
            assert_eq!((f.width, f.height), (64, 48));
            assert!(f.rgb == *e, "frame {k} differs from ffmpeg's");
            assert_eq!(f.pts_ns, k as u64 * 100_000_000, "frame {k}");
        }
        // SPS cropping: a 62x46 picture coded as 64x48.
        let (odd, error) = read_all("tiny_odd.mp4");
        assert_eq!((odd.len(), error), (12, None));
        assert_eq!((odd[0].width, odd[0].height), (62, 46));
    }

    #[test]
    fn other_profiles_and_containers_are_named_with_the_command_that_converts_them() {
        let e = open_video(&fixture("tiny_high.mp4")).err().unwrap();
        assert!(
            e.contains("H.264 High profile") && e.contains("Constrained Baseline only"),
            "{e}"
        );
        assert!(
            e.contains("ffmpeg -i") && e.contains("-profile:v baseline"),
            "{e}"
        );
        let e = open_video(&fixture("tiny_444.y4m")).err().unwrap();
        assert!(e.contains("C444") && e.contains("-pix_fmt yuv420p"), "{e}");
        let e = open_video(&fixture("frames/frame_000.png")).err().unwrap();
        assert!(e.contains("not an MP4 or Y4M"), "{e}");
    }

    /// A damaged file gives the frames before the damage, then an error naming the frame.
    #[test]
    fn damaged_videos_give_their_good_frames_then_name_the_bad_one() {
        let expected = ffmpeg_frames();
        let (frames, error) = read_all("tiny_truncated.mp4");
        assert_eq!(frames.len(), 7);
        assert!(frames.iter().zip(&expected).all(|(f, e)| f.rgb == *e));
        let e = error.unwrap();
        assert!(
            e.starts_with("frame 7: the file ends inside") && e.contains("truncated"),
            "{e}"
        );
        let (frames, error) = read_all("tiny.y4m");
        assert_eq!((frames.len(), error), (5, None));
        assert_eq!(frames[1].pts_ns, 40_000_000);
        let (frames, error) = read_all("tiny_truncated.y4m");
        assert_eq!(frames.len(), 2);
        assert!(error.unwrap().starts_with("frame 2: the file ends inside"));
        let (frames, error) = read_all("tiny_corrupt.mp4");
        assert_eq!(frames.len(), 7);
        assert!(frames.iter().zip(&expected).all(|(f, e)| f.rgb == *e));
        let e = error.unwrap();
        assert!(e.starts_with("frame 7: the H.264 data is corrupt"), "{e}");
    }

    /// An `stts` box with no entries: the `mp4` crate panics on it when reading a sample.
    #[test]
    fn an_index_without_sample_times_is_an_error_not_a_panic() {
        let mut bytes = std::fs::read(fixture("tiny_baseline.mp4")).unwrap();
        let at = bytes.windows(4).position(|w| w == b"stts").unwrap();
        // After the type: version and flags (4 bytes), then the entry count.
        bytes[at + 8..at + 12].copy_from_slice(&0u32.to_be_bytes());
        let path = std::env::temp_dir().join(format!("video-stts-{}.mp4", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let mut reader = open_video(&path).unwrap();
        let e = reader.next_frame().err().unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(e.starts_with("frame 0: the MP4 index is corrupt"), "{e}");
    }

    #[test]
    fn an_empty_video_has_no_frames() {
        let (frames, error) = read_all("tiny_empty.mp4");
        assert_eq!((frames.len(), error), (0, None));
    }

    #[test]
    fn sources_list_videos_as_streams_and_images_as_one() {
        let dir = fixture("frames");
        let streams = list_streams(dir.to_str().unwrap()).unwrap();
        assert!(matches!(&streams[..], [StreamInput::Images(f)] if f.len() == 4));
        let glob = fixture("tiny_*.y4m");
        let streams = list_streams(glob.to_str().unwrap()).unwrap();
        assert_eq!(streams.len(), 2);
        // Other files (the fixtures' JSON and raw YUV) are not videos.
        let all = list_streams(fixture("*").to_str().unwrap()).unwrap();
        assert_eq!(all.len(), 9);
        let mixed = std::env::temp_dir().join(format!("video-mixed-{}", std::process::id()));
        std::fs::create_dir_all(&mixed).unwrap();
        std::fs::copy(fixture("tiny.y4m"), mixed.join("a.y4m")).unwrap();
        std::fs::copy(fixture("frames/frame_000.png"), mixed.join("b.png")).unwrap();
        let e = list_streams(mixed.to_str().unwrap()).unwrap_err();
        assert!(e.message().contains("mixes videos"), "{e}");
        std::fs::remove_dir_all(&mixed).unwrap();
    }
}
