//! Times the `vpsnet_track_head` node (VPSNet's TrackHead and its ID association,
//! `plugin_tracking::vpsnet`) per frame at the official sizes, for
//! `tests/reference/bench_vpsnet_track.py`, which times the official code (mcahny/vps) on the
//! same weights, features and detections in the same run:
//!
//!     cargo build --release -p plugin-tracking --example bench_vpsnet_track
//!     RAYON_NUM_THREADS=2 target/release/examples/bench_vpsnet_track [WEIGHTS|-] [FRAMES] [WARMUP]
//!
//! - Node: every declared default (`configs/cityscapes/fusetrack.py`: in_channels 256,
//!   roi_feat_size 7, two fcs of 1024, match_coeff 1, 2, 10, strides 4..32). WEIGHTS: a `.pth`
//!   or `.safetensors` with `track_head.fcs.{0,1}.{weight,bias}` (the driver writes its
//!   seeded weights there, so that both sides run the same); `-` or none: generated weights
//!   (`kernels::weights::generated_tensor`, nn.Linear's ranges) written to a temporary
//!   `.safetensors` in the official names. The cost does not depend on the values; the
//!   association's outcome (how fast the memory grows) does.
//! - Features: P2..P5 of a 1024x2048 Cityscapes frame, `[256, 1024 / s, 2048 / s]`, a static
//!   "world" (`vpsnet_bench.world.p{l}`, uniform in [-1, 1), generated 4 times coarser and
//!   repeated) plus per-frame noise (`vpsnet_bench.f{t}.p{l}`, uniform in [-0.25, 0.25)), as
//!   `tests/reference/make_vpsnet_track_fixtures.py` builds them; the driver generates the
//!   same values bit for bit.
//! - Detections ([`scene`]): 26 objects (persons, cars, riders, bicycles, trucks) of typical
//!   Cityscapes sizes moving across the frame, 20 present from the first frame and 6 entering
//!   later, each missed in 10% of the frames: about 20 detections a frame. Boxes in whole
//!   pixels; the driver computes the same ones (f64 arithmetic in the same order, floored).
//!
//! Runs FRAMES frames (default 12) of one stream through `Node::process` and times each call
//! (features and instances are built before the clock starts). The first WARMUP frames
//! (default 2: the stream's first frame, which only fills the memory, and one association)
//! are not counted. Also times, on the same frames but outside `process`, the head's RoI
//! pooling alone and its two fcs alone. Threads: the rayon pool, sized by
//! `RAYON_NUM_THREADS` as in the other benches. Prints one JSON line.

#[path = "../../../tests/support/bench.rs"]
mod bench;

use std::path::PathBuf;
use std::time::Instant;

use bench::{median, ms};
use kernels::ops::roi_align::RoiAlignWorkspace;
use kernels::weights::generated_tensor;
use plugin_sdk::{FrameInfo, Inputs, Instances, Node, ParamValue, Params, PortKind, Tensor, Value};
use plugin_tracking::vpsnet::{track_head_kind, TrackHeadNode};

// The allocator is the library's own (`family_library!` in plugin_tracking declares
// `kernels::engine_allocator!`); the engine's setting too: freed pages kept committed.

type Error = Box<dyn std::error::Error>;

/// The network input of a Cityscapes frame (height, width).
const IMAGE: (usize, usize) = (1024, 2048);
const STRIDES: [usize; 4] = [4, 8, 16, 32];
const CHANNELS: usize = 256;
const ROI: usize = 7;
const FC_OUT: usize = 1024;
/// The world is generated this many times coarser than each level, then repeated.
const BLOCK: usize = 4;
const NOISE: f32 = 0.25;
/// Objects in the scene; the first `PRESENT` are there from the first frame.
const OBJECTS: usize = 26;
const PRESENT: usize = 20;
const MISS_RATE: f64 = 0.1;

/// `generated_tensor` values as f64 (uniform in [0, 1) for a = b = 0.5).
fn uniform(name: &str, shape: &[usize], a: f32, b: f32) -> Result<Vec<f64>, Error> {
    let t = generated_tensor(name, shape, a, b)?;
    Ok(t.as_slice::<f32>()?.iter().map(|&v| f64::from(v)).collect())
}

/// One frame's detections: boxes, scores and classes.
type Detections = (Vec<[f32; 4]>, Vec<f32>, Vec<i64>);

/// The detections of frames `0..frames`. The driver's `scene` computes the same numbers: f64
/// arithmetic in the same order, boxes floored to whole pixels and clamped to the image.
fn scene(frames: usize) -> Result<Vec<Detections>, Error> {
    let u = uniform("vpsnet_bench.objects", &[OBJECTS, 8], 0.5, 0.5)?;
    let visible = uniform("vpsnet_bench.visible", &[frames, OBJECTS], 0.5, 0.5)?;
    let jitter = uniform("vpsnet_bench.jitter", &[frames, OBJECTS, 4], 2.0, 0.0)?;
    let (ih, iw) = (IMAGE.0 as f64, IMAGE.1 as f64);
    let mut out = Vec::with_capacity(frames);
    for t in 0..frames {
        let (mut boxes, mut scores, mut classes) = (Vec::new(), Vec::new(), Vec::new());
        for k in 0..OBJECTS {
            let o = &u[k * 8..k * 8 + 8];
            // Cityscapes' thing classes: 0 person, 1 rider, 2 car, 3 truck, 7 bicycle.
            let (label, w, h) = if o[0] < 0.4 {
                let h = 40.0 + 200.0 * o[1];
                (0, h * 0.4, h)
            } else if o[0] < 0.8 {
                let w = 50.0 + 350.0 * o[1];
                (2, w, w * 0.6)
            } else if o[0] < 0.9 {
                let h = 40.0 + 160.0 * o[1];
                (7, h * 0.8, h)
            } else if o[0] < 0.95 {
                let h = 50.0 + 200.0 * o[1];
                (1, h * 0.5, h)
            } else {
                let w = 100.0 + 400.0 * o[1];
                (3, w, w * 0.8)
            };
            let x0 = o[2] * (iw - w);
            let y0 = 300.0 + o[3] * (ih - 300.0 - h);
            let vx = (o[4] - 0.5) * 20.0;
            let vy = (o[5] - 0.5) * 4.0;
            let start = if k < PRESENT {
                0
            } else {
                1 + (o[6] * 10.0).floor() as usize
            };
            if t < start || visible[t * OBJECTS + k] < MISS_RATE {
                continue;
            }
            let j = &jitter[(t * OBJECTS + k) * 4..(t * OBJECTS + k) * 4 + 4];
            let tt = t as f64;
            let x1 = x0 + tt * vx + j[0];
            let y1 = y0 + tt * vy + j[1];
            let x2 = x1 + w + j[2];
            let y2 = y1 + h + j[3];
            let b = [
                x1.floor().clamp(0.0, iw - 1.0),
                y1.floor().clamp(0.0, ih - 1.0),
                x2.floor().clamp(0.0, iw - 1.0),
                y2.floor().clamp(0.0, ih - 1.0),
            ];
            if b[2] - b[0] < 8.0 || b[3] - b[1] < 8.0 {
                continue; // left the frame
            }
            boxes.push(b.map(|v| v as f32));
            scores.push((0.5 + 0.49 * o[7]) as f32);
            classes.push(label);
        }
        out.push((boxes, scores, classes));
    }
    Ok(out)
}

/// The static world of each level, `[C, ceil(H / BLOCK), ceil(W / BLOCK)]`.
fn world() -> Result<Vec<Tensor>, Error> {
    STRIDES
        .iter()
        .zip(2..)
        .map(|(&s, l)| {
            let (h, w) = (IMAGE.0 / s, IMAGE.1 / s);
            let shape = [CHANNELS, h.div_ceil(BLOCK), w.div_ceil(BLOCK)];
            Ok(generated_tensor(
                &format!("vpsnet_bench.world.p{l}"),
                &shape,
                1.0,
                0.0,
            )?)
        })
        .collect()
}

/// P2..P5 of frame `t`: the world (repeated BLOCK x BLOCK) plus the frame's noise, in f32.
fn features(world: &[Tensor], t: usize) -> Result<Value, Error> {
    let mut value = Value::new(PortKind::Features);
    for ((&s, l), coarse) in STRIDES.iter().zip(2..).zip(world) {
        let (c, h, w) = (CHANNELS, IMAGE.0 / s, IMAGE.1 / s);
        let (ch, cw) = (h.div_ceil(BLOCK), w.div_ceil(BLOCK));
        let noise = generated_tensor(&format!("vpsnet_bench.f{t}.p{l}"), &[c, h, w], NOISE, 0.0)?;
        let (coarse, noise) = (coarse.as_slice::<f32>()?, noise.as_slice::<f32>()?);
        let data: Vec<f32> = (0..c * h * w)
            .map(|i| {
                let (k, y, x) = (i / (h * w), (i / w) % h, i % w);
                coarse[(k * ch + y / BLOCK) * cw + x / BLOCK] + noise[i]
            })
            .collect();
        value = value.with(&format!("p{l}"), Tensor::from_vec(&[c, h, w], data)?);
    }
    Ok(value)
}

/// Generated weights in the official names (nn.Linear's default ranges, biases in ±0.1),
/// written to a temporary `.safetensors`.
fn generated_weights() -> Result<PathBuf, Error> {
    let flat = CHANNELS * ROI * ROI;
    let mut tensors = Vec::new();
    for (i, cin) in [(0, flat), (1, FC_OUT)] {
        let bound = 1.0 / (cin as f32).sqrt();
        let name = format!("track_head.fcs.{i}.weight");
        tensors.push((
            name.clone(),
            generated_tensor(&name, &[FC_OUT, cin], bound, 0.0)?,
        ));
        let name = format!("track_head.fcs.{i}.bias");
        tensors.push((name.clone(), generated_tensor(&name, &[FC_OUT], 0.1, 0.0)?));
    }
    let path = std::env::temp_dir().join(format!(
        "bench-vpsnet-track-{}.safetensors",
        std::process::id()
    ));
    kernels::weights::save_safetensors(&path, &tensors)?;
    Ok(path)
}

fn main() -> Result<(), Error> {
    kernels::process::memory_policy();
    let args: Vec<String> = std::env::args().collect();
    let given = args.get(1).filter(|a| a.as_str() != "-");
    let frames: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(12);
    let warmup: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(2);
    if frames <= warmup {
        return Err(
            "usage: bench_vpsnet_track [WEIGHTS|-] [FRAMES] [WARMUP], FRAMES > WARMUP".into(),
        );
    }
    let (weights, temporary) = match given {
        Some(path) => (PathBuf::from(path), false),
        None => (generated_weights()?, true),
    };
    let mut params = Params::new();
    for s in &track_head_kind().spec.params {
        if let Some(d) = &s.default {
            params.set(&s.name, d.clone());
        }
    }
    params.set(
        "weights",
        ParamValue::Str(weights.to_string_lossy().into_owned()),
    );
    let node = TrackHeadNode::from_params(&params);
    if temporary {
        let _ = std::fs::remove_file(&weights);
    }
    let mut node = node?;

    let world = world()?;
    let scene = scene(frames)?;
    let names = ["p2", "p3", "p4", "p5"].map(String::from);
    let mut ws = RoiAlignWorkspace::new();
    let (mut times, mut roi_times, mut fc_times) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ids, mut memory, mut detections) = (Vec::new(), Vec::new(), Vec::new());
    let info = FrameInfo {
        stream: 0,
        ..FrameInfo::default()
    };
    for (t, (boxes, scores, classes)) in scene.into_iter().enumerate() {
        let feats = features(&world, t)?;
        let n = boxes.len();
        let instances = Instances {
            boxes,
            scores,
            classes,
        };
        let mut inputs = Inputs::new();
        inputs.push("instances", Some(instances.to_value()?));
        inputs.push("features", Some(feats));

        let t0 = Instant::now();
        let out = node
            .process(&info, &inputs)
            .map_err(|e| e.message().to_string())?;
        let elapsed = ms(t0);

        // The head's parts alone, on the same frame, outside the timed call.
        let levels = vision_common::feature_levels(
            "bench",
            inputs.get("features").ok_or("features")?,
            &names,
        )?;
        let t1 = Instant::now();
        let pooled = node
            .head()
            .roi_features(&mut ws, &levels, &instances.boxes)?;
        let roi_ms = ms(t1);
        let t2 = Instant::now();
        let emb = node.head().embed(pooled)?;
        let fc_ms = ms(t2);
        debug_assert_eq!(emb.nrows(), n);

        let frame_ids = out
            .get("instances")
            .ok_or("no output")?
            .tensor("track_ids")?
            .as_slice::<i64>()?
            .to_vec();
        ids.push(frame_ids);
        memory.push(node.memory(0).map_or(0, |m| m.len()));
        detections.push(n);
        if t >= warmup {
            times.push(elapsed);
            roi_times.push(roi_ms);
            fc_times.push(fc_ms);
        }
    }
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    let frame_ms: Vec<String> = times.iter().map(|v| format!("{v:.2}")).collect();
    println!(
        "{{\"threads\":{},\"frames\":{frames},\"warmup\":{warmup},\"median_ms\":{:.3},\"min_ms\":{min:.3},\"roi_align_ms\":{:.3},\"fcs_ms\":{:.3},\"frame_ms\":[{}],\"detections\":{detections:?},\"memory\":{memory:?},\"ids\":{ids:?}}}",
        kernels::process::threads(),
        median(times),
        median(roi_times),
        median(fc_times),
        frame_ms.join(",")
    );
    Ok(())
}
