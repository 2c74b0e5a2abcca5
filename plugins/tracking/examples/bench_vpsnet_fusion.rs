//! Times the `flownet2` and `vpsnet_fusion` nodes (VPSNet's FlowNet2 through `compute_flow`,
//! and its BFPTcea neck: `plugin_tracking::flownet2`, `plugin_tracking::vpsnet_fusion`) per
//! frame at the official widths, for `tests/reference/bench_vpsnet_fusion.py`, which times
//! the official code (mcahny/vps) on the same weights and inputs in the same run:
//!
//!     cargo build --release -p plugin-tracking --example bench_vpsnet_fusion
//!     RAYON_NUM_THREADS=2 target/release/examples/bench_vpsnet_fusion \
//!         [--size 512x1024] [--frames 4] [--warmup 1] [--manifest PATH] [--dump DIR]
//!
//! - Nodes: FlowNet2 with `FlowConfig::default()` (VPSNet's `img_norm_cfg`, `rgb_max` 255,
//!   `div_flow` 20, `scale_factor` 0.25) and BFPTcea with `BfpTceaConfig::default()`
//!   (`configs/cityscapes/fusetrack.py`: 256 channels, five levels p2..p6, `refine_level` 0,
//!   `refine_type` conv, `center` 0, `search_range` 4), chained as in VPSNet: the flow node's
//!   output is the fusion node's `flow`.
//! - Weights: generated from their official checkpoint names as
//!   `tests/vpsnet_fusion_reference.rs` does (`kernels::weights::generated_tensor` with each
//!   tensor's `(a, b)`), from a manifest of `{name: {shape, a, b}}`: by default the `weights`
//!   of `tests/fixtures/vpsnet_fusion.json` (written by
//!   `tests/reference/make_vpsnet_fusion_fixtures.py`: Xavier-uniform bounds, two gains,
//!   biases in ±0.1); the driver passes the manifest it generated its own weights from, so
//!   both sides run bit-identical weights (FlowNet2 162.5 M values, the neck 3.7 M). The cost
//!   does not depend on the values.
//! - Frames (`--size`, default 512x1024, half a Cityscapes frame; 1024x2048 is the full
//!   one; both multiples of 64, as FlowNet2 needs): the fixture script's recipe under the
//!   names `vpsnet_fusion_bench.*`: an RGB "world" (`vpsnet_fusion_bench.world`,
//!   `[3, (H + 2·MARGIN) / BLOCK, (W + 2·MARGIN) / BLOCK]`, uniform in [0, 255), repeated
//!   BLOCK x BLOCK) cropped at an offset moving by SHIFT per frame, plus noise
//!   (`vpsnet_fusion_bench.f{t}.noise`, ±NOISE), clamped to [0, 255] and normalised
//!   (`(rgb - mean) / std`, f32); FPN levels p2..p6 (`[256, h, w]` at the sizes mmdet's
//!   ResNet-FPN gives, uniform in [-1, 1): `vpsnet_fusion_bench.f{t}.p{l}`). The driver
//!   builds the same values bit for bit.
//!
//! Runs FRAMES frames (default 4) of one stream through `Node::process` of both nodes and
//! times each call separately (inputs are built before the clock starts). The first frame
//! is its own reference (as in the official test); the first WARMUP frames (default 1, that
//! frame) are not counted. Threads: the rayon pool, sized by `RAYON_NUM_THREADS`.
//!
//! Breakdown (medians over the timed frames, in the JSON): with `KERNELS_PROFILE=1` (the
//! driver sets it), the convolutions' and transposed convolutions' time inside each timed
//! call (`kernels::profile`, which adds a lock per layer call: microseconds against
//! seconds; the last frame's twelve slowest layers of each node go to stderr). After the stream, outside the timed calls, on inputs of the same shapes as the
//! last frame's: the two correlations (FlowNetC's 441 displacements on conv3's output at
//! 1/8, LiteFlowNetCorr's 81 at P2), FlowNet2's warps (`resample2d` x4 and `channel_norm` x6
//! at the padded input's size) and the neck's (`flow_warp` x2 at P2), each the median of 3
//! runs. What is left of a node's time (concatenations, upsamplings, gather and scatter,
//! TCEA's element-wise work, pooling) is "rest".
//!
//! `--dump DIR` writes the last frame's flow (`flow.f32`, `[2, H/4, W/4]`) and fused levels
//! (`p2.f32` .. `p6.f32`, `[256, h, w]`) as raw little-endian f32, for the driver's check.
//! Prints one JSON line.

#[path = "../../../tests/support/bench.rs"]
mod bench;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bench::{median, ms};
use kernels::ops::{correlation, CorrelationParams};
use kernels::weights::{generated_tensor, Weights};
use ndarray::{Array4, ArrayView4};
use plugin_sdk::{FrameInfo, Inputs, Node, PortKind, Tensor, Value};
use plugin_tracking::flownet2::{channel_norm, resample2d, FlowConfig, FlowNet2, FlowNode};
use plugin_tracking::vpsnet_fusion::{flow_warp, BfpTcea, BfpTceaConfig, FusionNode};
use serde_json::Value as Json;

type Error = Box<dyn std::error::Error>;

const LEVELS: [&str; 5] = ["p2", "p3", "p4", "p5", "p6"];
const CHANNELS: usize = 256;
/// The world is generated this many times coarser than the image, then repeated.
const BLOCK: usize = 4;
/// The world's margin around the first frame's crop (pixels, each side).
const MARGIN: usize = 32;
/// The crop's offset per frame (dy, dx).
const SHIFT: (usize, usize) = (2, 3);
const NOISE: f32 = 6.0;

struct Args {
    size: (usize, usize),
    frames: usize,
    warmup: usize,
    manifest: PathBuf,
    dump: Option<PathBuf>,
}

fn parse_args() -> Result<Args, Error> {
    let usage = "usage: bench_vpsnet_fusion [--size HxW] [--frames N] [--warmup W] [--manifest PATH] [--dump DIR]";
    let mut args = Args {
        size: (512, 1024),
        frames: 4,
        warmup: 1,
        manifest: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/vpsnet_fusion.json"),
        dump: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value; {usage}"))
        };
        match flag.as_str() {
            "--size" => {
                let v = value()?;
                let (h, w) = v
                    .split_once('x')
                    .ok_or_else(|| format!("--size {v}: HxW"))?;
                args.size = (h.parse()?, w.parse()?);
            }
            "--frames" => args.frames = value()?.parse()?,
            "--warmup" => args.warmup = value()?.parse()?,
            "--manifest" => args.manifest = PathBuf::from(value()?),
            "--dump" => args.dump = Some(PathBuf::from(value()?)),
            _ => return Err(format!("unknown argument {flag}; {usage}").into()),
        }
    }
    let (h, w) = args.size;
    if h == 0 || w == 0 || h % 64 != 0 || w % 64 != 0 {
        return Err(format!("--size {h}x{w}: both sides must be multiples of 64").into());
    }
    if args.frames <= args.warmup || args.warmup == 0 {
        return Err(format!("FRAMES > WARMUP >= 1; {usage}").into());
    }
    if SHIFT.0.max(SHIFT.1) * (args.frames - 1) > 2 * MARGIN {
        return Err(format!(
            "at most {} frames (the crop leaves the world)",
            2 * MARGIN / SHIFT.0.max(SHIFT.1) + 1
        )
        .into());
    }
    Ok(args)
}

/// The weights of the manifest (`{name: {shape, a, b}}`, or a fixture holding one under
/// `weights`), generated.
fn generated_weights(manifest: &Path) -> Result<Weights, Error> {
    let text = std::fs::read_to_string(manifest).map_err(|e| format!("{manifest:?}: {e}"))?;
    let doc: Json = serde_json::from_str(&text)?;
    let entries = doc
        .get("weights")
        .unwrap_or(&doc)
        .as_object()
        .ok_or("the manifest is not an object of tensors")?;
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, w) in entries {
        let shape: Vec<usize> = w["shape"]
            .as_array()
            .ok_or("shape")?
            .iter()
            .map(|v| v.as_u64().map(|v| v as usize).ok_or("shape"))
            .collect::<Result<_, _>>()?;
        let a = w["a"].as_f64().ok_or("a")? as f32;
        let b = w["b"].as_f64().ok_or("b")? as f32;
        tensors.push((name.clone(), generated_tensor(name, &shape, a, b)?));
    }
    Ok(Weights::from_tensors(manifest, tensors))
}

fn uniform(name: &str, shape: &[usize], a: f32, b: f32) -> Result<Vec<f32>, Error> {
    Ok(generated_tensor(name, shape, a, b)?
        .as_slice::<f32>()?
        .to_vec())
}

/// The network input of frame `t` (1-based): the world's crop plus noise, clamped to
/// [0, 255], then `(rgb - mean) / std`, all in f32. `[3, h, w]`.
fn image(
    world: &[f32],
    size: (usize, usize),
    t: usize,
    config: &FlowConfig,
) -> Result<Value, Error> {
    let (h, w) = size;
    let (ch, cw) = ((h + 2 * MARGIN) / BLOCK, (w + 2 * MARGIN) / BLOCK);
    let noise = uniform(
        &format!("vpsnet_fusion_bench.f{t}.noise"),
        &[3, h, w],
        NOISE,
        0.0,
    )?;
    let (oy, ox) = (MARGIN + SHIFT.0 * (t - 1), MARGIN + SHIFT.1 * (t - 1));
    let mut data = Vec::with_capacity(3 * h * w);
    for k in 0..3 {
        let (m, s) = (config.mean[k], config.std[k]);
        for y in 0..h {
            for x in 0..w {
                let v = world[(k * ch + (oy + y) / BLOCK) * cw + (ox + x) / BLOCK]
                    + noise[(k * h + y) * w + x];
                data.push((v.clamp(0.0, 255.0) - m) / s);
            }
        }
    }
    Ok(Value::new(PortKind::ModelImage).with("tensor", Tensor::from_vec(&[3, h, w], data)?))
}

/// mmdet's ResNet-FPN level sizes for an `h x w` input: strides 4..32 rounding up, P6 the
/// stride-2 max pool (kernel 1) of P5.
fn level_sizes(h: usize, w: usize) -> Vec<(usize, usize)> {
    let up = |v: usize| v.div_ceil(2);
    let mut sizes = Vec::new();
    let (mut hh, mut ww) = (up(up(h)), up(up(w)));
    for _ in 0..4 {
        sizes.push((hh, ww));
        (hh, ww) = (up(hh), up(ww));
    }
    let (h5, w5) = sizes[3];
    sizes.push(((h5 - 1) / 2 + 1, (w5 - 1) / 2 + 1));
    sizes
}

fn features(size: (usize, usize), t: usize) -> Result<Value, Error> {
    let mut value = Value::new(PortKind::Features);
    for (l, (h, w)) in LEVELS.iter().zip(level_sizes(size.0, size.1)) {
        let name = format!("vpsnet_fusion_bench.f{t}.{l}");
        let data = uniform(&name, &[CHANNELS, h, w], 1.0, 0.0)?;
        value = value.with(l, Tensor::from_vec(&[CHANNELS, h, w], data)?);
    }
    Ok(value)
}

/// The layers' table so far (`kernels::profile::report(1)`, which clears it) and the sum of
/// its rows (milliseconds); NaN when profiling is off.
fn layer_ms() -> (f64, String) {
    if !kernels::profile::enabled() {
        return (f64::NAN, String::new());
    }
    let table = kernels::profile::report(1);
    let sum = table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .sum();
    (sum, table)
}

/// The median time of 3 runs of `f` (milliseconds).
fn timed3<R>(mut f: impl FnMut() -> R) -> f64 {
    median(
        (0..3)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                ms(t)
            })
            .collect(),
    )
}

fn random4(name: &str, shape: (usize, usize, usize, usize), a: f32) -> Result<Array4<f32>, Error> {
    let (n, c, h, w) = shape;
    Ok(Array4::from_shape_vec(
        shape,
        uniform(name, &[n, c, h, w], a, 0.0)?,
    )?)
}

/// The separately timed parts (see the module documentation), for an `h x w` input.
fn parts(h: usize, w: usize) -> Result<Vec<(&'static str, f64)>, Error> {
    let (hp, wp) = (h.div_ceil(64) * 64, w.div_ceil(64) * 64);
    // FlowNetC: conv3 of each image, [1, 256, hp / 8, wp / 8].
    let c3 = (1, 256, hp / 8, wp / 8);
    let (a, b) = (
        random4("bench.c3a", c3, 1.0)?,
        random4("bench.c3b", c3, 1.0)?,
    );
    let corr_c = timed3(|| correlation(a.view(), b.view(), CorrelationParams::flownet_c()));
    // FlowNet2's warps: x2 (3 channels) by a flow of a few pixels, and the norms.
    let img = random4("bench.img", (1, 3, hp, wp), 0.5)?;
    let flow = random4("bench.flow", (1, 2, hp, wp), 8.0)?;
    let warp_f = timed3(|| -> Result<(), Error> {
        for _ in 0..4 {
            let r = resample2d(img.view(), flow.view())?;
            std::hint::black_box(channel_norm((&img - &r).view()));
        }
        // The two norms of the flows themselves.
        for _ in 0..2 {
            std::hint::black_box(channel_norm(flow.view()));
        }
        Ok(())
    });
    // The neck, at P2.
    let (h2, w2) = level_sizes(h, w)[0];
    let p2 = (1, CHANNELS, h2, w2);
    let (x, y) = (
        random4("bench.p2a", p2, 1.0)?,
        random4("bench.p2b", p2, 1.0)?,
    );
    let corr_n = timed3(|| correlation(x.view(), y.view(), CorrelationParams::search_range(4)));
    let fl = random4("bench.flow2", (1, 2, h2, w2), 2.0)?;
    let warp_n = timed3(|| -> Result<(), Error> {
        let once = flow_warp(y.view(), fl.view())?;
        std::hint::black_box(flow_warp(once.view(), fl.view())?);
        Ok(())
    });
    Ok(vec![
        ("flow_correlation_ms", corr_c),
        ("flow_warps_ms", warp_f),
        ("fusion_correlation_ms", corr_n),
        ("fusion_warps_ms", warp_n),
    ])
}

fn dump(dir: &Path, name: &str, t: ArrayView4<'_, f32>) -> Result<(), Error> {
    std::fs::create_dir_all(dir)?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join(format!("{name}.f32")))?);
    for v in t.iter() {
        f.write_all(&v.to_le_bytes())?;
    }
    f.flush()?;
    Ok(())
}

fn tensor4(t: &Tensor) -> Result<ArrayView4<'_, f32>, Error> {
    let s = t.shape().to_vec();
    let dims = match s[..] {
        [c, h, w] => (1, c, h, w),
        [n, c, h, w] => (n, c, h, w),
        _ => return Err(format!("rank {s:?}").into()),
    };
    Ok(t.view::<f32>()?.into_shape_with_order(dims)?)
}

fn fmt_list(v: &[f64]) -> String {
    let items: Vec<String> = v.iter().map(|x| format!("{x:.1}")).collect();
    format!("[{}]", items.join(","))
}

fn main() -> Result<(), Error> {
    kernels::process::memory_policy();
    let args = parse_args()?;
    let (h, w) = args.size;

    let t0 = Instant::now();
    let weights = generated_weights(&args.manifest)?;
    let flow_net = FlowNet2::from_weights(&weights, "flownet2.", FlowConfig::default())?;
    let neck = BfpTcea::from_weights(&weights, "extra_neck.", BfpTceaConfig::default())?;
    drop(weights);
    let config = flow_net.config().clone();
    let mut flow_node = FlowNode::new(flow_net);
    let mut fusion_node = FusionNode::new(neck, LEVELS.iter().map(|s| s.to_string()).collect());
    eprintln!(
        "weights generated and bound in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let world = uniform(
        "vpsnet_fusion_bench.world",
        &[3, (h + 2 * MARGIN) / BLOCK, (w + 2 * MARGIN) / BLOCK],
        127.5,
        127.5,
    )?;
    let info = FrameInfo {
        stream: 0,
        ..FrameInfo::default()
    };
    let (mut flow_times, mut fusion_times) = (Vec::new(), Vec::new());
    let (mut flow_convs, mut fusion_convs) = (Vec::new(), Vec::new());
    let mut last: Option<(Value, Value)> = None;
    for t in 1..=args.frames {
        let img = image(&world, args.size, t, &config)?;
        let feats = features(args.size, t)?;
        let mut inputs = Inputs::new();
        inputs.push("image", Some(img));
        layer_ms();

        let t1 = Instant::now();
        let out = flow_node
            .process(&info, &inputs)
            .map_err(|e| e.message().to_string())?;
        let flow_ms = ms(t1);
        let (flow_layers, flow_table) = layer_ms();
        let flow = out.get("flow").ok_or("no flow")?.clone();

        let mut inputs = Inputs::new();
        inputs.push("features", Some(feats));
        inputs.push("flow", Some(flow.clone()));
        let t2 = Instant::now();
        let out = fusion_node
            .process(&info, &inputs)
            .map_err(|e| e.message().to_string())?;
        let fusion_ms = ms(t2);
        let (fusion_layers, fusion_table) = layer_ms();
        eprintln!("frame {t}: flownet2 {flow_ms:.0} ms, vpsnet_fusion {fusion_ms:.0} ms");
        if t == args.frames && kernels::profile::enabled() {
            // The last frame's slowest layers of each node.
            for (node, table) in [("flownet2", flow_table), ("vpsnet_fusion", fusion_table)] {
                let top: Vec<&str> = table.lines().take(13).collect();
                eprintln!("{node}, last frame:\n{}", top.join("\n"));
            }
        }
        if t > args.warmup {
            flow_times.push(flow_ms);
            fusion_times.push(fusion_ms);
            flow_convs.push(flow_layers);
            fusion_convs.push(fusion_layers);
        }
        last = Some((flow, out.get("features").ok_or("no features")?.clone()));
    }
    let (flow, fused) = last.ok_or("no frame")?;
    if let Some(dir) = &args.dump {
        dump(
            dir,
            "flow",
            tensor4(flow.get("tensor").ok_or("flow tensor")?)?,
        )?;
        for l in LEVELS {
            dump(dir, l, tensor4(fused.get(l).ok_or("level")?)?)?;
        }
    }
    let parts = parts(h, w)?;
    let flow_shape = flow.get("tensor").ok_or("flow tensor")?.shape().to_vec();
    let parts_json: Vec<String> = parts
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v:.3}"))
        .collect();
    let med = |v: &[f64]| median(v.to_vec());
    println!(
        "{{\"threads\":{},\"size\":[{h},{w}],\"frames\":{},\"warmup\":{},\"flow_shape\":{flow_shape:?},\"flow_median_ms\":{:.3},\"fusion_median_ms\":{:.3},\"flow_min_ms\":{:.3},\"fusion_min_ms\":{:.3},\"flow_frame_ms\":{},\"fusion_frame_ms\":{},\"flow_convs_ms\":{},\"fusion_convs_ms\":{},{}}}",
        kernels::process::threads(),
        args.frames,
        args.warmup,
        med(&flow_times),
        med(&fusion_times),
        flow_times.iter().copied().fold(f64::INFINITY, f64::min),
        fusion_times.iter().copied().fold(f64::INFINITY, f64::min),
        fmt_list(&flow_times),
        fmt_list(&fusion_times),
        if kernels::profile::enabled() { format!("{:.3}", med(&flow_convs)) } else { "null".into() },
        if kernels::profile::enabled() { format!("{:.3}", med(&fusion_convs)) } else { "null".into() },
        parts_json.join(",")
    );
    Ok(())
}
