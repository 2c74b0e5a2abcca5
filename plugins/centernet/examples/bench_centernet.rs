//! Times CenterNet ctdet (resdcn_18, dla_34 or hourglass) through its plugin libraries as `engine run` has them
//! (`centernet_preprocess` → `resnet` → `dcn_upsample`, or `dla`, → `centernet_ctdet`) on one
//! photo, for
//! `tests/reference/bench_centernet.py`, which times the official code in the same run:
//!
//!     cargo build --release -p plugin-centernet -p plugin-backbones --example bench_centernet
//!     target/release/examples/bench_centernet WEIGHTS PHOTO [REPS] [resdcn_18|dla_34|hourglass]
//!
//! Prints one JSON line: the median and minimum milliseconds of the whole, the median of each
//! node, the medians of the head's stages (heads, decoding; through the library on the same
//! weights), and the detections for the driver to compare.

#[path = "../../../tests/support/bench.rs"]
mod bench;

use std::path::Path;
use std::time::Instant;

use bench::{median, ms};
use engine::registry::Registry;
use ndarray::ArrayView4;
use plugin_centernet::model::{CenterNet, CenterNetConfig, HeadNames};
use plugin_sdk::{ParamValue, Value};

/// The nodes from the image to `p2`, each with its kind.
type Trunk = Vec<(&'static str, Box<dyn plugin_sdk::Node>)>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_centernet WEIGHTS PHOTO [REPS] [resdcn_18|dla_34|hourglass]";
    let weights = args.get(1).ok_or(usage)?;
    let photo = args.get(2).ok_or(usage)?;
    let reps: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let arch = args.get(4).map_or("resdcn_18", String::as_str);
    let registry = Registry::from_cargo_target_dir()?;
    let w = || ("weights", ParamValue::Str(weights.clone()));
    let mut pre = registry.create_node("centernet_preprocess", &[])?;
    // The trunk: (kind, node) from the image to p2.
    let (mut trunk, head_conv): (Trunk, usize) = match arch {
        "resdcn_18" => (
            vec![
                (
                    "resnet",
                    registry.create_node(
                        "resnet",
                        &[
                            w(),
                            ("prefix", ParamValue::Str(String::new())),
                            ("depth", ParamValue::Int(18)),
                            ("bn_eps", ParamValue::Float(1e-5)),
                            ("returned_layers", ParamValue::IntList(vec![4])),
                        ],
                    )?,
                ),
                (
                    "dcn_upsample",
                    registry.create_node("dcn_upsample", &[w()])?,
                ),
            ],
            64,
        ),
        "dla_34" => (vec![("dla", registry.create_node("dla", &[w()])?)], 256),
        "hourglass" => (
            vec![("hourglass", registry.create_node("hourglass", &[w()])?)],
            256,
        ),
        other => return Err(format!("unknown arch {other}; {usage}").into()),
    };
    let mut head_params = vec![w(), ("head_conv", ParamValue::Int(head_conv as i64))];
    let mut config = CenterNetConfig {
        head_conv,
        ..CenterNetConfig::default()
    };
    if arch == "hourglass" {
        // Hourglass-104's heads read cnv_dim (256) channels, named per stack.
        head_params.push(("in_channels", ParamValue::Int(256)));
        head_params.push(("head_names", ParamValue::Str("hourglass".into())));
        config.in_channels = 256;
        config.head_names = HeadNames::Hourglass { stack: 1 };
    }
    let mut head = registry.create_node("centernet_ctdet", &head_params)?;
    let model = CenterNet::from_weights(
        &kernels::weights::Weights::load(Path::new(weights))?,
        "",
        config,
    )?;
    let image = Value::image(plugin_io::image_source::read_image(Path::new(photo))?);
    let mut whole = Vec::new();
    let mut nodes: Vec<(String, Vec<f64>)> = std::iter::once("centernet_preprocess")
        .chain(trunk.iter().map(|(k, _)| *k))
        .chain(std::iter::once("centernet_ctdet"))
        .map(|k| (k.to_string(), Vec::new()))
        .collect();
    let mut stages = [Vec::new(), Vec::new()];
    let mut last = None;
    for _ in 0..reps + 1 {
        let t0 = Instant::now();
        let x = Registry::run_once(&mut pre, &[("image", &image)], "image")?;
        nodes[0].1.push(ms(t0));
        let mut f = x.clone();
        for (k, (_, node)) in trunk.iter_mut().enumerate() {
            let t = Instant::now();
            let port = if k == 0 { "image" } else { "features" };
            f = Registry::run_once(node, &[(port, &f)], "features")?;
            nodes[k + 1].1.push(ms(t));
        }
        let t = Instant::now();
        let out = Registry::run_once(&mut head, &[("features", &f), ("image", &x)], "instances")?;
        let n = nodes.len();
        nodes[n - 1].1.push(ms(t));
        whole.push(ms(t0));
        // The head's stages, through the library.
        let p2 = f.tensor("p2")?;
        let s = p2.shape();
        let p2: ArrayView4<f32> = p2
            .view::<f32>()?
            .into_shape_with_order((1, s[0], s[1], s[2]))?
            .into_dimensionality()?;
        let t = Instant::now();
        let heads = model.heads(p2)?;
        stages[0].push(ms(t));
        let t = Instant::now();
        let _ = model.decode(&heads)?;
        stages[1].push(ms(t));
        last = Some(out);
    }
    // The first round warms up.
    let drop_first = |v: &Vec<f64>| v[1..].to_vec();
    let out = last.ok_or("no run")?;
    let scores = out.tensor("scores")?.as_slice::<f32>()?.to_vec();
    let classes = out.tensor("classes")?.as_slice::<i64>()?.to_vec();
    let boxes = out.tensor("boxes")?.as_slice::<f32>()?.to_vec();
    let min = drop_first(&whole).into_iter().fold(f64::INFINITY, f64::min);
    let nodes_ms: Vec<String> = nodes
        .iter()
        .map(|(k, v)| format!("\"{k}\": {:.2}", median(drop_first(v))))
        .collect();
    println!(
        "{{\"median_ms\": {:.2}, \"min_ms\": {min:.2}, \"nodes_ms\": {{{}}}, \"stages_ms\": {{\"heads\": {:.2}, \"decode\": {:.3}}}, \"scores\": {scores:?}, \"classes\": {classes:?}, \"boxes\": {boxes:?}}}",
        median(drop_first(&whole)),
        nodes_ms.join(", "),
        median(drop_first(&stages[0])),
        median(drop_first(&stages[1])),
    );
    Ok(())
}
