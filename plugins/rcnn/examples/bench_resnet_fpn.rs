//! Times `rcnn_preprocess` → `resnet` → `fpn` on one photo and writes the FPN levels as raw
//! little-endian f32 files and the ResNet levels (`<out_dir>/p2.f32`, `c2.f32` ...) for a comparison with torchvision. Driven
//! by `tests/reference/bench_resnet_fpn.py`, which generates the weights and times
//! torchvision in the same run:
//!
//!     cargo run --release -p plugin-rcnn --example bench_resnet_fpn -- WEIGHTS IMAGE OUT_DIR [REPS] [DEPTH]

use std::path::Path;
use std::time::Instant;

use plugin_rcnn::fpn::FpnNode;
use plugin_rcnn::preprocess::RcnnPreprocess;
use plugin_rcnn::resnet::ResNetNode;
use plugin_sdk::{ParamValue, Params, Value};

fn params(kind: &str, set: &[(&str, ParamValue)]) -> Params {
    let k = plugin_rcnn::kinds()
        .into_iter()
        .find(|k| k.spec.kind == kind)
        .expect("known kind");
    let mut p = Params::new();
    for spec in &k.spec.params {
        if let Some(d) = &spec.default {
            p.set(&spec.name, d.clone());
        }
    }
    for (n, v) in set {
        p.set(n, v.clone());
    }
    p
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: bench_resnet_fpn WEIGHTS IMAGE OUT_DIR [REPS] [DEPTH]".into());
    }
    let reps: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let depth: i64 = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(50);
    let w = ParamValue::Str(args[1].clone());
    let t = Instant::now();
    let pre = RcnnPreprocess::from_params(&params("rcnn_preprocess", &[]))?;
    let body = ResNetNode::from_params(&params(
        "resnet",
        &[("weights", w.clone()), ("depth", ParamValue::Int(depth))],
    ))?;
    let fpn = FpnNode::from_params(&params(
        "fpn",
        &[("weights", w), ("depth", ParamValue::Int(depth))],
    ))?;
    println!("load {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    let image = Value::image(plugin_io::image_source::read_image(Path::new(&args[2]))?);
    let mut times = vec![Vec::new(); 3];
    let mut last = None;
    for _ in 0..reps {
        let t0 = Instant::now();
        let x = pre.run(&image)?;
        let t1 = Instant::now();
        let c = body.run(&x)?;
        let t2 = Instant::now();
        let p = fpn.run(&c)?;
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
        "input {:?}: preprocess {pm:.1} ms, resnet {rm:.1} ms, fpn {fm:.1} ms, total {:.1} ms (median of {reps}, {} rayon threads)",
        x.tensor("tensor")?.shape(),
        pm + rm + fm,
        rayon::current_num_threads()
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
