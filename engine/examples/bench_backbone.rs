//! Times the `resnet` node, and optionally the `fpn` node after it, on a given input tensor (no
//! pre-processing), the nodes coming from their plugin libraries as in `engine run`. Writes
//! every output level as raw little-endian f32 (`<out_dir>/c2.f32` ... `p6.f32`). Driven by
//! `tests/reference/bench_onnx.py`, which times ONNX Runtime, OpenVINO and torch on the same
//! network, weights and input in the same run:
//!
//!     cargo build --release --workspace --examples
//!     target/release/examples/bench_backbone WEIGHTS INPUT.f32 H W OUT_DIR REPS [fpn] [bf16]
//!
//! INPUT.f32 holds one normalised image, f32 [3, H, W]. `bf16` sets both nodes'
//! `precision = "bf16"`.

use std::path::Path;
use std::time::Instant;

use engine::registry::Registry;
use kernels::Tensor;
use plugin_sdk::{ParamValue, Value};

kernels::engine_allocator!();

fn main() -> Result<(), Box<dyn std::error::Error>> {
    kernels::process::memory_policy();
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 7 {
        return Err(
            "usage: bench_backbone WEIGHTS INPUT.f32 H W OUT_DIR REPS [fpn] [bf16] [warmup=N]"
                .into(),
        );
    }
    let (h, w): (usize, usize) = (args[3].parse()?, args[4].parse()?);
    let reps: usize = args[6].parse()?;
    let with_fpn = args[7..].iter().any(|a| a == "fpn");
    // Untimed runs first (1 by default, as the peers get a warm-up).
    let warmup: usize = match args[7..].iter().find_map(|a| a.strip_prefix("warmup=")) {
        Some(n) => n.parse()?,
        None => 1,
    };
    let precision = if args[7..].iter().any(|a| a == "bf16") {
        "bf16"
    } else {
        "fp32"
    };
    let bytes = std::fs::read(&args[2])?;
    if bytes.len() != 3 * h * w * 4 {
        return Err(format!(
            "{} holds {} bytes, not f32 [3, {h}, {w}]",
            args[2],
            bytes.len()
        )
        .into());
    }
    let data: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let input = Value::single(Tensor::from_vec(&[3, h, w], data)?);

    let registry = Registry::from_cargo_target_dir()?;
    let weights = || ("weights", ParamValue::Str(args[1].clone()));
    let precision = || ("precision", ParamValue::Str(precision.into()));
    let mut body = registry.create_node("resnet", &[weights(), precision()])?;
    let mut fpn = if with_fpn {
        Some(registry.create_node("fpn", &[weights(), precision()])?)
    } else {
        None
    };
    let (mut t_body, mut t_fpn) = (Vec::new(), Vec::new());
    let mut last = None;
    for rep in 0..warmup + reps {
        let t0 = Instant::now();
        let c = Registry::run_once(&mut body, &[("image", &input)], "features")?;
        let t1 = Instant::now();
        let p = match fpn.as_mut() {
            Some(f) => Some(Registry::run_once(f, &[("features", &c)], "features")?),
            None => None,
        };
        let t2 = Instant::now();
        if rep >= warmup {
            t_body.push((t1 - t0).as_secs_f64() * 1e3);
            t_fpn.push((t2 - t1).as_secs_f64() * 1e3);
        }
        last = Some((c, p));
    }
    let (c, p) = last.ok_or("no run")?;
    // Every rep's times, so that the driver takes medians over all rounds.
    let list = |v: &[f64]| {
        v.iter()
            .map(|t| format!("{t:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("resnet_ms {}", list(&t_body));
    if with_fpn {
        println!("fpn_ms {}", list(&t_fpn));
    }
    println!("threads {}", registry.threads());
    let out = Path::new(&args[5]);
    std::fs::create_dir_all(out)?;
    for (name, t) in c.tensors().iter().chain(p.iter().flat_map(|p| p.tensors())) {
        let bytes: Vec<u8> = t
            .as_slice::<f32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(out.join(format!("{name}.f32")), bytes)?;
    }
    Ok(())
}
