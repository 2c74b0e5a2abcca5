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

/// libfuzzer-sys's panic hook aborts on every panic, even one the reader catches. The `mp4`
/// crate panics on many malformed indexes, and `Mp4Reader` turns each such panic into an
/// error (`catch_unwind`), as the engine runs it. So the hook here only prints: a panic that
/// escapes the reader still aborts, as it unwinds out of libFuzzer's `extern "C"` callback.
fn print_panics_only() {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("panic (a crash only if it escapes the reader): {info}")
    }));
}

fn read_video(data: &[u8]) {
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
}

libfuzzer_sys::fuzz_target!(init: print_panics_only(), |data: &[u8]| read_video(data));
