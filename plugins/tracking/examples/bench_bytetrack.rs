//! ByteTrack's cost per frame with 100 objects, and its memory over a long stream:
//!
//!     cargo run --release -p plugin-tracking --example bench_bytetrack -- [FRAMES] [OBJECTS]
//!
//! A synthetic scene of OBJECTS (default 100) moving boxes, each replaced by a new object
//! after a random lifetime (so ids keep growing), with score noise (some detections fall in
//! the low band), misses and false positives. Runs FRAMES frames (default 100000) through one
//! tracker and prints the median and 99th percentile time per frame and the peak RSS, read at
//! 1000 frames and at the end: a tracker whose state grew with the stream would show it.

use std::time::Instant;

use plugin_tracking::bytetrack::{ByteTrackConfig, ByteTracker, Detection};

/// A small deterministic generator (xorshift64*), so that runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32) / (1u64 << 24) as f32
    }
}

struct Object {
    x: f32,
    y: f32,
    vx: f32,
    vy: f32,
    w: f32,
    h: f32,
    frames_left: u32,
}

fn spawn(rng: &mut Rng) -> Object {
    Object {
        x: rng.next() * 1800.0,
        y: rng.next() * 1000.0,
        vx: (rng.next() - 0.5) * 8.0,
        vy: (rng.next() - 0.5) * 4.0,
        w: 20.0 + rng.next() * 60.0,
        h: 50.0 + rng.next() * 120.0,
        frames_left: 30 + (rng.next() * 600.0) as u32,
    }
}

/// Peak resident set size in KiB (Linux), 0 where unknown.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let frames = args.next().and_then(Result::ok).unwrap_or(100_000);
    let count = args.next().and_then(Result::ok).unwrap_or(100);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut objects: Vec<Object> = (0..count).map(|_| spawn(&mut rng)).collect();
    let mut tracker = ByteTracker::new(ByteTrackConfig::default());
    let mut times = Vec::with_capacity(frames);
    let (mut rss_early, mut detections_total, mut max_id) = (0, 0usize, 0u64);
    let mut detections = Vec::with_capacity(count + 10);
    for frame in 0..frames {
        detections.clear();
        for (k, o) in objects.iter_mut().enumerate() {
            o.x += o.vx;
            o.y += o.vy;
            o.frames_left -= 1;
            if o.frames_left == 0 {
                *o = spawn(&mut rng);
            }
            // 5% misses; scores mostly high, some in the low band.
            if rng.next() < 0.05 {
                continue;
            }
            let jitter = |r: &mut Rng| (r.next() - 0.5) * 2.0;
            let (x, y) = (o.x + jitter(&mut rng), o.y + jitter(&mut rng));
            let score = if rng.next() < 0.2 {
                0.15 + rng.next() * 0.3
            } else {
                0.6 + rng.next() * 0.4
            };
            detections.push(Detection {
                tlbr: [x, y, x + o.w, y + o.h],
                score,
                class: 1,
                index: k,
            });
        }
        for f in 0..3 {
            let (x, y) = (rng.next() * 1900.0, rng.next() * 1050.0);
            detections.push(Detection {
                tlbr: [x, y, x + 30.0, y + 60.0],
                score: rng.next() * 0.7,
                class: 1,
                index: count + f,
            });
        }
        detections_total += detections.len();
        let t = Instant::now();
        let out = tracker.update(&detections);
        times.push(t.elapsed().as_secs_f64() * 1e3);
        max_id = out.iter().map(|o| o.track_id).fold(max_id, u64::max);
        if frame == 999 {
            rss_early = peak_rss_kib();
        }
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    println!(
        "bytetrack: {frames} frames, {count} objects ({:.1} detections a frame), {max_id} track ids",
        detections_total as f64 / frames as f64
    );
    println!(
        "per frame: median {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    println!(
        "peak RSS: {} KiB after 1000 frames, {} KiB after {frames}",
        rss_early,
        peak_rss_kib()
    );
}
