//! Times `rcnn_preprocess` → `resnet` → `fpn` on one photo, the nodes coming from their plugin
//! libraries as in `engine run`, and writes the FPN levels and the ResNet levels as raw
//! little-endian f32 files (`<out_dir>/p2.f32`, `c2.f32` ...) for a comparison with
//! torchvision. Driven by `tests/reference/bench_resnet_fpn.py`, which generates the weights
//! and times torchvision in the same run:
//!
//!     cargo build --release --workspace --examples
//!     target/release/examples/bench_resnet_fpn WEIGHTS IMAGE OUT_DIR [REPS] [DEPTH]

use std::path::Path;
use std::time::Instant;

use engine::registry::Registry;
use plugin_sdk::{ParamValue, Value};

kernels::engine_allocator!();

fn main() -> Result<(), Box<dyn std::error::Error>> {
    kernels::process::memory_policy();
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: bench_resnet_fpn WEIGHTS IMAGE OUT_DIR [REPS] [DEPTH]".into());
    }
    let reps: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let depth: i64 = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(50);
    let registry = Registry::from_cargo_target_dir()?;
    let w = || ("weights", ParamValue::Str(args[1].clone()));
    let d = || ("depth", ParamValue::Int(depth));
    let t = Instant::now();
    let mut pre = registry.create_node("rcnn_preprocess", &[])?;
    let mut body = registry.create_node("resnet", &[w(), d()])?;
    let mut fpn = registry.create_node("fpn", &[w(), d()])?;
    println!("load {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    let image = Value::image(plugin_io::image_source::read_image(Path::new(&args[2]))?);
    let mut times = vec![Vec::new(); 3];
    let mut last = None;
    for _ in 0..reps {
        let t0 = Instant::now();
        let x = Registry::run_once(&mut pre, &[("image", &image)], "image")?;
        let t1 = Instant::now();
        let c = Registry::run_once(&mut body, &[("image", &x)], "features")?;
        let t2 = Instant::now();
        let p = Registry::run_once(&mut fpn, &[("features", &c)], "features")?;
        let t3 = Instant::now();
        times[0].push((t1 - t0).as_secs_f64() * 1e3);
        times[1].push((t2 - t1).as_secs_f64() * 1e3);
        times[2].push((t3 - t2).as_secs_f64() * 1e3);
        last = Some((x, c, p));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (pm, rm, fm) = (
        median(&mut times[0]),
        median(&mut times[1]),
        median(&mut times[2]),
    );
    let (x, c, p) = last.ok_or("REPS must be >= 1")?;
    println!(
        "input {:?}: preprocess {pm:.1} ms, resnet {rm:.1} ms, fpn {fm:.1} ms, total {:.1} ms (median of {reps}, {} threads per library)",
        x.tensor("tensor")?.shape(),
        pm + rm + fm,
        registry.threads()
    );
    let out = Path::new(&args[3]);
    std::fs::create_dir_all(out)?;
    for (name, t) in c.tensors().iter().chain(p.tensors()) {
        let bytes: Vec<u8> = t
            .as_slice::<f32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(out.join(format!("{name}.f32")), bytes)?;
    }
    Ok(())
}
