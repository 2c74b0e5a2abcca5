//! Times the face pipeline's task nodes on one photo:
//! `cargo run --release -p plugin-graph-model --example bench_tasks [runs]`. Prints one JSON
//! line per stage (median and min milliseconds after a warm-up run): `blazeface` (the
//! `BlazeFace::detect` of the node: resize, model, decoding, NMS) and `facemesh` (the
//! `FaceMesh::detect` of the node on those faces: crop, model and decoding per face);
//! `scripts/bench-graph-models.sh` compares them with `tests/reference/tfjs/tasks.js --bench`.

use std::path::Path;

use plugin_graph_model::tasks::{blazeface::BlazeFace, facemesh::FaceMesh};
use plugin_sdk::{Instances, ParamValue, Params};

fn params(kind: &str, model: &Path) -> Result<Params, Box<dyn std::error::Error>> {
    let kinds = plugin_graph_model::kinds();
    let k = kinds
        .iter()
        .find(|k| k.spec.kind == kind)
        .ok_or("no such kind")?;
    let mut p = Params::new();
    for spec in &k.spec.params {
        if let Some(d) = &spec.default {
            p.set(&spec.name, d.clone());
        }
    }
    p.set("model", ParamValue::Str(model.display().to_string()));
    Ok(p)
}

fn time(runs: usize, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[runs / 2], times[0])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The allocator policy of the engine and of the family library.
    kernels::process::memory_policy();
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5)
        .max(1);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let photo = "astronaut.png";
    let img = image(&root.join("assets").join(photo))?;
    let (h, w) = (img.shape()[0], img.shape()[1]);
    let models = root.join("models");
    let blaze = BlazeFace::from_params(&params("blazeface", &models.join("blazeface.json"))?)?;
    let mesh = FaceMesh::from_params(&params("facemesh", &models.join("facemesh.json"))?)?;
    let d = blaze.detect(&img, h, w)?;
    let faces = Instances {
        boxes: d.boxes.clone(),
        scores: d.scores.clone(),
        classes: d.classes.clone(),
    };
    let (med, min) = time(runs, || {
        let _ = blaze.detect(&img, h, w);
    });
    println!("{{\"task\":\"blazeface\",\"photo\":\"{photo}\",\"runs\":{runs},\"median_ms\":{med:.3},\"min_ms\":{min:.3}}}");
    let (med, min) = time(runs, || {
        let _ = mesh.detect(&img, &faces);
    });
    println!(
        "{{\"task\":\"facemesh\",\"photo\":\"{photo}\",\"faces\":{},\"runs\":{runs},\"median_ms\":{med:.3},\"min_ms\":{min:.3}}}",
        faces.len()
    );
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
