//! The video readers as `video_source` opens them (`plugin_io::video::open_video`: MP4 with
//! H.264 through the mp4 crate and OpenH264, Y4M): frames of the size they declare, then the
//! end or a clean error, never a panic or a hang. The readers take a path, so each input is
//! written to one scratch file first.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("fuzz-video-{}", std::process::id())))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let path = scratch();
    if std::fs::write(path, data).is_err() {
        return;
    }
    let Ok(mut reader) = plugin_io::video::open_video(path) else {
        return;
    };
    // A few frames: enough to reach the decoder on every kind of sample.
    for _ in 0..8 {
        match reader.next_frame() {
            Ok(Some(f)) => assert_eq!(f.rgb.len(), f.width * f.height * 3, "frame size"),
            _ => break,
        }
    }
});
