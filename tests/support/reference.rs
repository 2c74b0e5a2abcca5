//! What the families' reference tests share: reading a fixture, writing its generated
//! weights, creating nodes from the plugin libraries as `engine run` does, running them, and
//! comparing tensors with the reference script's summaries.
//!
//! A test includes it with `#[path = "../../../tests/support/reference.rs"] mod reference;`
//! (one file, compiled into each family's test binary; the families do not link each other).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

#[path = "scratch.rs"]
mod scratch;
pub use scratch::Scratch;

use engine::registry::{Provider, Registry};
use kernels::Tensor;
use ndarray::ArrayView4;
use plugin_sdk::{Node, ParamValue, Value};
use serde_json::Value as Json;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A JSON fixture under the crate's `tests/fixtures/`.
pub fn fixture(name: &str) -> Json {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fresh scratch directory for this test process, removed when dropped.
pub fn scratch(name: &str) -> Scratch {
    Scratch::new(name)
}

fn shape_of(j: &Json) -> Vec<usize> {
    j.as_array()
        .expect("shape")
        .iter()
        .map(|v| v.as_u64().expect("dim") as usize)
        .collect()
}

/// The tensors of a generated state dict (`spec`: a list of `{name, shape, a, b}`), as
/// `kernels::weights::generated_tensor` reproduces the scripts' generator bit for bit.
pub fn generated(spec: &Json) -> Vec<(String, Tensor)> {
    spec.as_array()
        .expect("weights")
        .iter()
        .map(|w| {
            let name = w["name"].as_str().expect("name");
            let (a, b) = (w["a"].as_f64().expect("a"), w["b"].as_f64().expect("b"));
            let t = kernels::weights::generated_tensor(
                name,
                &shape_of(&w["shape"]),
                a as f32,
                b as f32,
            )
            .expect("generated tensor");
            (name.to_string(), t)
        })
        .collect()
}

/// A `[C, H, W]` tensor (a feature level of a node's output) as a batch of one.
pub fn batch_of_one(t: &Tensor) -> ArrayView4<'_, f32> {
    let s = t.shape().to_vec();
    t.view::<f32>()
        .expect("f32 tensor")
        .into_shape_with_order((1, s[0], s[1], s[2]))
        .expect("a [C, H, W] tensor")
}

/// Writes tensors as a `.safetensors` file.
pub fn save(tensors: &[(String, Tensor)], path: &Path) {
    kernels::weights::save_safetensors(path, tensors).expect("write weights");
}

fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| Registry::from_cargo_target_dir().unwrap_or_else(|e| panic!("{e}")))
}

/// A node of `kind` from the plugin libraries (never a built-in), created as the engine does:
/// every declared default, then `set` (each of which the kind must declare).
pub fn create(kind: &str, set: &[(&str, ParamValue)]) -> Result<Box<dyn Node>, String> {
    let (k, provider) = registry()
        .find(kind)
        .unwrap_or_else(|| panic!("no kind {kind} in the plugin libraries"));
    assert_ne!(*provider, Provider::BuiltIn, "{kind} comes from a library");
    for (name, _) in set {
        assert!(
            k.spec.params.iter().any(|s| s.name == *name),
            "{kind} has no parameter {name}"
        );
    }
    registry().create_node(kind, set)
}

/// Runs `node` once on `inputs` and returns its (validated) `port_out`.
pub fn run_with(node: &mut Box<dyn Node>, inputs: &[(&str, &Value)], port_out: &str) -> Value {
    run_frame(node, &plugin_sdk::FrameInfo::default(), inputs, port_out)
}

/// [`run_with`] as frame `frame` of a stream.
pub fn run_frame(
    node: &mut Box<dyn Node>,
    frame: &plugin_sdk::FrameInfo,
    inputs: &[(&str, &Value)],
    port_out: &str,
) -> Value {
    let mut ins = plugin_sdk::Inputs::new();
    for (port, v) in inputs {
        ins.push(port, Some((*v).clone()));
    }
    let out = node
        .process(frame, &ins)
        .unwrap_or_else(|e| panic!("{}", e.message()));
    let v = out.get(port_out).expect("output port").clone();
    v.validate().expect("valid output");
    v
}

/// The numbers of a JSON array, nested arrays flattened in order.
pub fn floats(j: &Json) -> Vec<f64> {
    match j {
        Json::Array(items) => items.iter().flat_map(floats).collect(),
        v => vec![v.as_f64().expect("number")],
    }
}

/// `|a - b| / max(1, |b|)`.
pub fn relative_error(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1.0)
}

/// Compares row-major `data` of `shape` with a script's summary (`shape`, sampled `indices`
/// and `values`, `min`, `max`, `sum`, and `channel_means` over the first axis, or over the
/// columns of an `[N, C]` tensor when `channel_axis` is 1), each within `tol` relative to
/// `max(1, |reference|)`. Returns the largest error.
pub fn compare(what: &str, data: &[f32], shape: &[usize], s: &Json, tol: f64) -> f64 {
    assert_eq!(shape, shape_of(&s["shape"]).as_slice(), "{what}: shape");
    let mut worst = 0f64;
    let mut check = |name: String, a: f64, b: f64| {
        let err = relative_error(a, b);
        worst = worst.max(err);
        assert!(
            err <= tol,
            "{what} {name}: ours {a}, reference {b} (error {err:.3e})"
        );
    };
    for (i, v) in s["indices"]
        .as_array()
        .expect("indices")
        .iter()
        .zip(s["values"].as_array().expect("values"))
    {
        let i = i.as_u64().expect("index") as usize;
        check(format!("[{i}]"), data[i] as f64, v.as_f64().expect("value"));
    }
    let min = data.iter().copied().fold(f32::INFINITY, f32::min);
    let max = data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    check("min".into(), min as f64, s["min"].as_f64().expect("min"));
    check("max".into(), max as f64, s["max"].as_f64().expect("max"));
    let n = data.len() as f64;
    let sum: f64 = data.iter().map(|&v| v as f64).sum();
    check("mean".into(), sum / n, s["sum"].as_f64().expect("sum") / n);
    if let Some(means) = s.get("channel_means") {
        let axis = s["channel_axis"].as_u64().unwrap_or(0);
        for (c, m) in floats(means).iter().enumerate() {
            let ours = if axis == 1 {
                let cols = shape[1];
                data.iter()
                    .skip(c)
                    .step_by(cols)
                    .map(|&v| v as f64)
                    .sum::<f64>()
                    / shape[0] as f64
            } else {
                let plane = data.len() / shape[0];
                data[c * plane..(c + 1) * plane]
                    .iter()
                    .map(|&v| v as f64)
                    .sum::<f64>()
                    / plane as f64
            };
            check(format!("mean of {c}"), ours, *m);
        }
    }
    worst
}

/// Intersection over union of two `(x1, y1, x2, y2)` boxes.
pub fn iou(a: &[f64], b: &[f64]) -> f64 {
    let area = |r: &[f64]| (r[2] - r[0]) * (r[3] - r[1]);
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    inter / (area(a) + area(b) - inter)
}
