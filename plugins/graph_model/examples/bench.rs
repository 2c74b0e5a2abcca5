//! Times each model on one photo:
//! `cargo run --release -p plugin-graph-model --example bench [runs] [models] [dump_dir]`.
//! Prints one JSON line per model (the load time, and median and min milliseconds of
//! `GraphModel::run`, after a
//! warm-up run, and every run's time); `scripts/bench-graph-models.sh` compares them with
//! TF.js, `tests/reference/bench_tflite.py` with TFLite. `models` (comma-separated names, or
//! `all`) picks models; with `dump_dir`, each model's input and outputs are written there as
//! raw little-endian f32 (`<model>_input.f32`, `<model>_output<i>.f32`, shapes in
//! `<model>.json`), so that another runtime can be fed the same input and compared.
//! `GRAPH_MODEL_OP_BY_OP=1` times the op-by-op executor instead of the compiled plan.

use std::path::Path;

use plugin_graph_model::{preprocess_for, GraphModel};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The allocator policy of the engine and of the family library.
    kernels::process::memory_policy();
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5)
        .max(1);
    let only: Option<Vec<String>> = std::env::args()
        .nth(2)
        .filter(|a| a != "all")
        .map(|a| a.split(',').map(str::to_string).collect());
    let dump = std::env::args().nth(3).map(std::path::PathBuf::from);
    // GRAPH_MODEL_OP_BY_OP=1 times the op-by-op executor instead of the compiled plan.
    let op_by_op = std::env::var_os("GRAPH_MODEL_OP_BY_OP").is_some_and(|v| v != "0");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        root.join("tests/reference/tfjs/models.json"),
    )?)?;
    let gw: Vec<f32> = cfg["gray_weights"]
        .as_array()
        .ok_or("gray_weights")?
        .iter()
        .filter_map(|v| v.as_f64())
        .map(|v| v as f32)
        .collect();
    let img = image(
        &root
            .join("assets")
            .join(cfg["photos"][0].as_str().ok_or("photos")?),
    )?;
    for m in cfg["models"].as_array().ok_or("models")? {
        let name = m["name"].as_str().ok_or("name")?;
        if only.as_ref().is_some_and(|o| !o.iter().any(|n| n == name)) {
            continue;
        }
        let loading = std::time::Instant::now();
        let model = GraphModel::load(&root.join("models").join(format!("{name}.json")))?;
        let load_ms = loading.elapsed().as_secs_f64() * 1e3;
        let flag = |k: &str| m[k].as_bool().unwrap_or(false);
        let pre = preprocess_for(
            &model,
            &[],
            flag("int32").then_some(kernels::DType::I32),
            if flag("nchw") { "nchw" } else { "nhwc" },
            m["scale"].as_f64().unwrap_or(1.0) as f32,
            m["offset"].as_f64().unwrap_or(0.0) as f32,
            false,
            false,
            [gw[0], gw[1], gw[2]],
        )?;
        let x = pre.apply(&img)?;
        let outputs = model.run(std::slice::from_ref(&x), &[])?;
        if let Some(dir) = &dump {
            std::fs::create_dir_all(dir)?;
            let write = |file: String,
                         t: &kernels::Tensor|
             -> Result<(), Box<dyn std::error::Error>> {
                let values: Vec<f32> = match t.dtype() {
                    kernels::DType::I32 => t.as_slice::<i32>()?.iter().map(|&v| v as f32).collect(),
                    _ => t.as_slice::<f32>()?.to_vec(),
                };
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                std::fs::write(dir.join(file), bytes)?;
                Ok(())
            };
            write(format!("{name}_input.f32"), &x)?;
            for (i, o) in outputs.iter().enumerate() {
                write(format!("{name}_output{i}.f32"), o)?;
            }
            let shapes = serde_json::json!({
                "input": x.shape(),
                "outputs": outputs.iter().map(|o| o.shape().to_vec()).collect::<Vec<_>>(),
            });
            std::fs::write(dir.join(format!("{name}.json")), shapes.to_string())?;
        }
        // The compiled plan gives the op-by-op executor's bits, or the model has no plan.
        let reference = model.run_op_by_op(std::slice::from_ref(&x), &[])?;
        let same_bits = reference.iter().zip(&outputs).all(|(a, b)| {
            a.shape() == b.shape()
                && match (a.as_slice::<f32>(), b.as_slice::<f32>()) {
                    (Ok(a), Ok(b)) => a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                    _ => a.data_ptr() == b.data_ptr() || a.describe() == b.describe(),
                }
        });
        let plan = match model.plan_status() {
            Ok(p) => format!(
                "{} steps ({} in forks), {} KiB arena, {} ops op by op after them",
                p.steps,
                p.forked_steps,
                p.arena_bytes / 1024,
                p.tail_ops
            ),
            Err(why) => format!("op by op: {why}"),
        };
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = std::time::Instant::now();
            if op_by_op {
                model.run_op_by_op(std::slice::from_ref(&x), &[])?;
            } else {
                model.run(std::slice::from_ref(&x), &[])?;
            }
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let all: Vec<String> = times.iter().map(|t| format!("{t:.4}")).collect();
        times.sort_by(f64::total_cmp);
        println!(
            "{{\"model\":\"{name}\",\"plan\":{:?},\"plan_equals_op_by_op\":{same_bits},\"load_ms\":{load_ms:.1},\"runs\":{runs},\"median_ms\":{:.3},\"min_ms\":{:.3},\"times_ms\":[{}]}}",
            plan,
            times[runs / 2],
            times[0],
            all.join(",")
        );
    }
    Ok(())
}

fn image(path: &Path) -> Result<kernels::Tensor, Box<dyn std::error::Error>> {
    let mut dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path)?));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size().ok_or("png size")?];
    let info = reader.next_frame(&mut buf)?;
    let (w, h, ch) = (
        info.width as usize,
        info.height as usize,
        info.color_type.samples(),
    );
    let mut rgb = Vec::with_capacity(w * h * 3);
    for p in buf[..w * h * ch].chunks_exact(ch) {
        if ch < 3 {
            rgb.extend_from_slice(&[p[0]; 3]);
        } else {
            rgb.extend_from_slice(&p[..3]);
        }
    }
    Ok(kernels::Tensor::from_vec(&[h, w, 3], rgb)?)
}
