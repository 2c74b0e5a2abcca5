//! Times CornerNet Hourglass-104 through its plugin libraries as `engine run` has them
//! (`cornernet_preprocess` → `hourglass` → `cornernet`, the pipeline
//! `pipelines/cornernet_hg104.toml`) on one photo, for `tests/reference/bench_cornernet.py`,
//! which times the official code in the same run:
//!
//!     cargo build --release -p plugin-centernet -p plugin-backbones --example bench_cornernet --lib
//!     target/release/examples/bench_cornernet WEIGHTS PHOTO [REPS]
//!
//! Prints one JSON line: the median and minimum milliseconds of the whole, the median of each
//! node, the medians of the head's stages (corner modules and heads; `_decode` of both images;
//! the post-processing; through the library on the same weights), and the results for the
//! driver to compare.

#[path = "../../../tests/support/bench.rs"]
mod bench;

use std::path::Path;
use std::time::Instant;

use bench::{median, ms};
use engine::registry::Registry;
use ndarray::ArrayView4;
use plugin_centernet::cornernet::{CornerNet, CornerNetConfig, CropGeometry};
use plugin_sdk::{ParamValue, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_cornernet WEIGHTS PHOTO [REPS]";
    let weights = args.get(1).ok_or(usage)?;
    let photo = args.get(2).ok_or(usage)?;
    let reps: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let registry = Registry::from_cargo_target_dir()?;
    let w = || ("weights", ParamValue::Str(weights.clone()));
    let prefix = || ("prefix", ParamValue::Str("module.".into()));
    let mut nodes = [
        registry.create_node("cornernet_preprocess", &[])?,
        registry.create_node("hourglass", &[w(), prefix()])?,
        registry.create_node("cornernet", &[w(), prefix()])?,
    ];
    let model = CornerNet::from_weights(
        &kernels::weights::Weights::load(Path::new(weights))?,
        "module.",
        CornerNetConfig::default(),
    )?;
    let image = plugin_io::image_source::read_image(Path::new(photo))?;
    let original = (image.shape()[0], image.shape()[1]);
    let image = Value::image(image);
    let mut whole = Vec::new();
    let mut node_ms = [Vec::new(), Vec::new(), Vec::new()];
    let mut stages = [Vec::new(), Vec::new(), Vec::new()];
    let mut last = None;
    for _ in 0..reps + 1 {
        let t0 = Instant::now();
        let x = Registry::run_once(&mut nodes[0], &[("image", &image)], "image")?;
        node_ms[0].push(ms(t0));
        let t = Instant::now();
        let f = Registry::run_once(&mut nodes[1], &[("image", &x)], "features")?;
        node_ms[1].push(ms(t));
        let t = Instant::now();
        let out = Registry::run_once(
            &mut nodes[2],
            &[("features", &f), ("image", &x)],
            "instances",
        )?;
        node_ms[2].push(ms(t));
        whole.push(ms(t0));
        // The head's stages, through the library.
        let p2 = f.tensor("p2")?;
        let p2: ArrayView4<f32> = p2.view::<f32>()?.into_dimensionality()?;
        let t = Instant::now();
        let heads = model.heads(p2)?;
        stages[0].push(ms(t));
        let t = Instant::now();
        let per_image = (0..p2.dim().0)
            .map(|n| model.decode(&heads, n))
            .collect::<Result<Vec<_>, _>>()?;
        stages[1].push(ms(t));
        let t = Instant::now();
        let _ = model.postprocess(&per_image, &CropGeometry::new(original), original);
        stages[2].push(ms(t));
        last = Some(out);
    }
    // The first round warms up.
    let drop_first = |v: &Vec<f64>| v[1..].to_vec();
    let out = last.ok_or("no run")?;
    let scores = out.tensor("scores")?.as_slice::<f32>()?.to_vec();
    let classes = out.tensor("classes")?.as_slice::<i64>()?.to_vec();
    let boxes = out.tensor("boxes")?.as_slice::<f32>()?.to_vec();
    let min = drop_first(&whole).into_iter().fold(f64::INFINITY, f64::min);
    let names = ["cornernet_preprocess", "hourglass", "cornernet"];
    let nodes_json: Vec<String> = names
        .iter()
        .zip(&node_ms)
        .map(|(k, v)| format!("\"{k}\": {:.2}", median(drop_first(v))))
        .collect();
    println!(
        "{{\"median_ms\": {:.2}, \"min_ms\": {min:.2}, \"nodes_ms\": {{{}}}, \"stages_ms\": {{\"heads\": {:.2}, \"decode\": {:.3}, \"post\": {:.3}}}, \"scores\": {scores:?}, \"classes\": {classes:?}, \"boxes\": {boxes:?}}}",
        median(drop_first(&whole)),
        nodes_json.join(", "),
        median(drop_first(&stages[0])),
        median(drop_first(&stages[1])),
        median(drop_first(&stages[2])),
    );
    Ok(())
}
