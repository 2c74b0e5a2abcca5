//! Decoding and encoding speed of the video nodes' codecs on one core:
//!
//!     cargo run --release -p plugin-io --example bench_video -- [VIDEO] [FRAMES]
//!
//! Decodes VIDEO (default: the 768x576 clip in assets/) to RGB as `video_source` does, then
//! encodes the first FRAMES frames (default 200) as `video_sink` does, and prints the median
//! of three runs in ms per frame and frames per second. `tests/reference/bench_video.py` runs
//! this beside OpenCV's and ffmpeg's decoders.

use std::time::Instant;

use plugin_io::video::sink::VideoSink;
use plugin_io::video::{list_streams, open_video, StreamInput};
use plugin_sdk::{FrameInfo, Inputs, Node, ParamValue, Params, Tensor, Value};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let video = args.next().unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../assets/vtest_baseline.mp4"
        )
        .to_string()
    });
    let encode_frames: usize = args
        .next()
        .map_or(Ok(200), |a| a.parse())
        .map_err(|e| format!("FRAMES: {e}"))?;
    let path = match list_streams(&video).map_err(|e| e.to_string())?.first() {
        Some(StreamInput::Video(p)) => p.clone(),
        _ => return Err(format!("{video} is not a video")),
    };
    let mut decode_ms = Vec::new();
    let mut frames = Vec::new();
    for run in 0..3 {
        let mut reader = open_video(&path)?;
        let t = Instant::now();
        let mut n = 0usize;
        while let Some(f) = reader.next_frame()? {
            if run == 0 && frames.len() < encode_frames {
                frames.push(f);
            }
            n += 1;
        }
        decode_ms.push(t.elapsed().as_secs_f64() * 1e3 / n as f64);
        if run == 0 {
            println!(
                "{}: {n} frames of {}x{}",
                path.display(),
                frames[0].width,
                frames[0].height
            );
        }
    }
    let d = median(decode_ms);
    println!(
        "decode (OpenH264 + RGB): {d:.3} ms/frame, {:.0} frames/s, 1 thread",
        1e3 / d
    );

    let out = std::env::temp_dir().join(format!("bench-video-{}.mp4", std::process::id()));
    let params = Params::new()
        .with("path", ParamValue::Str(out.display().to_string()))
        .with("fps", ParamValue::Float(0.0))
        .with("qp", ParamValue::Int(24))
        .with("score_threshold", ParamValue::Float(0.0))
        .with("labels", ParamValue::StrList(Vec::new()));
    let images: Vec<Value> = frames
        .iter()
        .map(|f| Tensor::from_vec(&[f.height, f.width, 3], f.rgb.clone()).map(Value::image))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut encode_ms = Vec::new();
    for _ in 0..3 {
        let mut sink = VideoSink::from_params(&params).map_err(|e| e.to_string())?;
        let t = Instant::now();
        for (k, (image, f)) in images.iter().zip(&frames).enumerate() {
            let mut inputs = Inputs::new();
            inputs.push("image", Some(image.clone()));
            let info = FrameInfo {
                index: k as u64,
                timestamp_ns: f.pts_ns,
                ..FrameInfo::default()
            };
            sink.process(&info, &inputs).map_err(|e| e.to_string())?;
        }
        sink.finish().map_err(|e| e.to_string())?;
        encode_ms.push(t.elapsed().as_secs_f64() * 1e3 / images.len() as f64);
    }
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&out);
    let e = median(encode_ms);
    println!(
        "encode (RGB + OpenH264 + MP4): {e:.3} ms/frame, {:.0} frames/s, 1 thread ({} frames, {size} bytes)",
        1e3 / e,
        images.len()
    );
    Ok(())
}
