//! The CPU layers against PyTorch's own outputs (fixtures written by
//! `tests/reference/make_layer_fixtures.py`; format described there).
//!
//! Tolerance: `|ours - torch| <= tol·max(1, |torch|)` with `tol = 1e-4` for convolutions and
//! linear layers (different summation order over up to a few hundred products) and `1e-5`
//! for everything else. Integer outputs (argmax, top-k indices, sizes) must match exactly.
//! Convolutions may instead be within `5e-5` of the output's RMS: a sum of a few hundred
//! products that cancels to a small value carries the rounding of its large terms, whatever
//! the summation order, and Winograd F(4x4, 3x3) rounds about 10x more than a direct sum
//! (up to about 2.5e-5 of the output's RMS here; see `kernels/src/layers/winograd.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use kernels::layers::activation::{prelu, Activation};
use kernels::layers::conv::{
    fold_batch_norm, Conv2d, Conv2dParams, ConvTranspose2d, ConvTranspose2dParams,
};
use kernels::layers::deform_conv::DeformConv2d;
use kernels::layers::linear::Linear;
use kernels::layers::norm::{batch_norm, group_norm};
use kernels::layers::pool::{adaptive_avg_pool2d, avg_pool2d, max_pool2d, Pool2dParams};
use kernels::layers::preprocess::RcnnTransform;
use kernels::layers::resize::{interpolate_scale, resize, ResizeMode};
use kernels::layers::shape::{
    argmax, concat, gather, pad, permute, slice, softmax, split, topk, PadMode,
};
use ndarray::{ArrayD, ArrayView1, Ix1, Ix2, Ix3, Ix4, IxDyn};
use serde_json::Value;

struct Fixtures {
    cases: Vec<Value>,
    blob: Vec<u8>,
}

fn fixtures() -> Fixtures {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/layers");
    let json = std::fs::read_to_string(dir.join("layers.json"))
        .expect("layers.json (run make_layer_fixtures.py)");
    let blob = std::fs::read(dir.join("layers.bin")).expect("layers.bin");
    let v: Value = serde_json::from_str(&json).expect("valid json");
    Fixtures {
        cases: v["cases"].as_array().expect("cases").clone(),
        blob,
    }
}

struct Case<'a> {
    c: &'a Value,
    blob: &'a [u8],
}

impl Case<'_> {
    fn name(&self) -> &str {
        self.c["name"].as_str().unwrap()
    }
    fn op(&self) -> &str {
        self.c["op"].as_str().unwrap()
    }
    fn p(&self, k: &str) -> &Value {
        &self.c["params"][k]
    }
    fn pu(&self, k: &str) -> usize {
        self.p(k)
            .as_u64()
            .unwrap_or_else(|| panic!("{}: param {k}", self.name())) as usize
    }
    fn pair(&self, k: &str) -> (usize, usize) {
        let a = self.p(k).as_array().unwrap();
        (
            a[0].as_u64().unwrap() as usize,
            a[1].as_u64().unwrap() as usize,
        )
    }
    fn has(&self, k: &str) -> bool {
        self.c["tensors"].get(k).is_some()
    }
    fn raw(&self, k: &str) -> (Vec<usize>, &[u8], String) {
        let t = &self.c["tensors"][k];
        assert!(!t.is_null(), "{}: no tensor {k}", self.name());
        let shape: Vec<usize> = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let off = t["offset"].as_u64().unwrap() as usize;
        let len = t["len"].as_u64().unwrap() as usize;
        (
            shape,
            &self.blob[off..off + len],
            t["dtype"].as_str().unwrap().to_string(),
        )
    }
    fn f32(&self, k: &str) -> ArrayD<f32> {
        let (shape, b, dt) = self.raw(k);
        assert_eq!(dt, "f32");
        let v = b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        ArrayD::from_shape_vec(IxDyn(&shape), v).unwrap()
    }
    fn i64(&self, k: &str) -> ArrayD<i64> {
        let (shape, b, dt) = self.raw(k);
        assert_eq!(dt, "i64");
        let v = b
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        ArrayD::from_shape_vec(IxDyn(&shape), v).unwrap()
    }
    fn u8(&self, k: &str) -> ArrayD<u8> {
        let (shape, b, dt) = self.raw(k);
        assert_eq!(dt, "u8");
        ArrayD::from_shape_vec(IxDyn(&shape), b.to_vec()).unwrap()
    }
}

fn check_close(name: &str, got: &ArrayD<f32>, want: &ArrayD<f32>, tol: f32) -> Result<(), String> {
    check_close_scaled(name, got, want, tol, 0.0)
}

/// [`check_close`], where an element also passes within `scale_tol` times the RMS of `want`.
fn check_close_scaled(
    name: &str,
    got: &ArrayD<f32>,
    want: &ArrayD<f32>,
    tol: f32,
    scale_tol: f32,
) -> Result<(), String> {
    let rms = if want.is_empty() {
        0.0
    } else {
        (want.iter().map(|&w| (w as f64).powi(2)).sum::<f64>() / want.len() as f64).sqrt() as f32
    };
    // Expressed on the `tol·max(1, |torch|)` scale so that the message reports one number.
    let floor = scale_tol * rms / tol;
    if got.shape() != want.shape() {
        return Err(format!(
            "{name}: shape {:?} != torch {:?}",
            got.shape(),
            want.shape()
        ));
    }
    let mut worst = (0f32, 0usize);
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        let err = (g - w).abs() / w.abs().max(1.0).max(floor);
        if err.is_nan() || err > worst.0 {
            worst = (if err.is_nan() { f32::INFINITY } else { err }, i);
        }
    }
    if worst.0 > tol {
        let (g, w) = (
            got.iter().nth(worst.1).unwrap(),
            want.iter().nth(worst.1).unwrap(),
        );
        return Err(format!(
            "{name}: element {} = {g}, torch {w} (rel err {:.2e} > {tol:.0e})",
            worst.1, worst.0
        ));
    }
    Ok(())
}

fn conv_params(c: &Case) -> Conv2dParams {
    Conv2dParams {
        stride: c.pair("stride"),
        padding: c.pair("padding"),
        dilation: c.pair("dilation"),
        groups: c.pu("groups"),
    }
}

fn mode_of(s: &str) -> ResizeMode {
    match s {
        "nearest" => ResizeMode::Nearest,
        "nearest_exact" => ResizeMode::NearestExact,
        "bilinear" => ResizeMode::Bilinear {
            align_corners: false,
        },
        "bilinear_align_corners" => ResizeMode::Bilinear {
            align_corners: true,
        },
        "tf_bilinear_legacy" => ResizeMode::TfBilinearLegacy,
        "tf_bilinear_half_pixel" => ResizeMode::TfBilinearHalfPixel,
        "tf_nearest_align_corners" => ResizeMode::TfNearestAlignCorners,
        other => panic!("unknown mode {other}"),
    }
}

/// Runs one case; returns the op family (for the coverage count) or a failure message.
fn run_case(c: &Case) -> Result<&'static str, String> {
    let name = c.name().to_string();
    let e = |err: kernels::layers::LayerError| format!("{name}: {err}");
    const CONV: f32 = 1e-4;
    const CONV_OF_RMS: f32 = 5e-5;
    const REST: f32 = 1e-5;
    let x = || c.f32("x");
    let x4 = || x().into_dimensionality::<Ix4>().unwrap();
    match c.op() {
        "conv2d" => {
            let w = c.f32("weight").into_dimensionality::<Ix4>().unwrap();
            let b = c
                .has("bias")
                .then(|| c.f32("bias").into_dimensionality::<Ix1>().unwrap());
            let conv =
                Conv2d::new(w.view(), b.as_ref().map(|b| b.view()), conv_params(c)).map_err(e)?;
            let got = conv.forward(x4().view()).map_err(e)?;
            check_close_scaled(&name, &got.into_dyn(), &c.f32("out"), CONV, CONV_OF_RMS)?;
            Ok("conv2d")
        }
        "deform_conv2d" => {
            let w = c.f32("weight").into_dimensionality::<Ix4>().unwrap();
            let b = c
                .has("bias")
                .then(|| c.f32("bias").into_dimensionality::<Ix1>().unwrap());
            let conv =
                Conv2d::new(w.view(), b.as_ref().map(|b| b.view()), conv_params(c)).map_err(e)?;
            let offset = c.f32("offset").into_dimensionality::<Ix4>().unwrap();
            let mask = c
                .has("mask")
                .then(|| c.f32("mask").into_dimensionality::<Ix4>().unwrap());
            let got = DeformConv2d::new(conv)
                .forward(x4().view(), offset.view(), mask.as_ref().map(|m| m.view()))
                .map_err(e)?;
            check_close_scaled(&name, &got.into_dyn(), &c.f32("out"), CONV, CONV_OF_RMS)?;
            Ok("deform_conv2d")
        }
        "conv_bn" => {
            let w = c.f32("weight").into_dimensionality::<Ix4>().unwrap();
            let b = c.f32("bias").into_dimensionality::<Ix1>().unwrap();
            let v1 = |k: &str| c.f32(k).into_dimensionality::<Ix1>().unwrap();
            let (g, be, m, va) = (v1("gamma"), v1("beta"), v1("mean"), v1("var"));
            let eps = c.p("eps").as_f64().unwrap() as f32;
            let (fw, fb) = fold_batch_norm(
                w.view(),
                Some(b.view()),
                g.view(),
                be.view(),
                m.view(),
                va.view(),
                eps,
            )
            .map_err(e)?;
            check_close(
                &format!("{name} weight"),
                &fw.into_dyn(),
                &c.f32("out_weight"),
                REST,
            )?;
            check_close(
                &format!("{name} bias"),
                &fb.into_dyn(),
                &c.f32("out_bias"),
                REST,
            )?;
            let conv = Conv2d::new(w.view(), Some(b.view()), conv_params(c))
                .and_then(|cv| cv.with_batch_norm(g.view(), be.view(), m.view(), va.view(), eps))
                .map_err(e)?;
            check_close(
                &name,
                &conv.forward(x4().view()).map_err(e)?.into_dyn(),
                &c.f32("out"),
                CONV,
            )?;
            let conv = conv.with_activation(Activation::Relu);
            check_close(
                &format!("{name} relu"),
                &conv.forward(x4().view()).map_err(e)?.into_dyn(),
                &c.f32("out_relu"),
                CONV,
            )?;
            Ok("conv_bn")
        }
        "conv_transpose2d" => {
            let w = c.f32("weight").into_dimensionality::<Ix4>().unwrap();
            let b = c
                .has("bias")
                .then(|| c.f32("bias").into_dimensionality::<Ix1>().unwrap());
            let p = ConvTranspose2dParams {
                stride: c.pair("stride"),
                padding: c.pair("padding"),
                output_padding: c.pair("output_padding"),
                dilation: c.pair("dilation"),
                groups: c.pu("groups"),
            };
            let conv =
                ConvTranspose2d::new(w.view(), b.as_ref().map(|b| b.view()), p).map_err(e)?;
            check_close(
                &name,
                &conv.forward(x4().view()).map_err(e)?.into_dyn(),
                &c.f32("out"),
                CONV,
            )?;
            Ok("conv_transpose2d")
        }
        "linear" => {
            let w = c.f32("weight").into_dimensionality::<Ix2>().unwrap();
            let b = c
                .has("bias")
                .then(|| c.f32("bias").into_dimensionality::<Ix1>().unwrap());
            let l = Linear::new(w.view(), b.as_ref().map(|b| b.view())).map_err(e)?;
            check_close(
                &name,
                &l.forward_nd(x().view()).map_err(e)?,
                &c.f32("out"),
                CONV,
            )?;
            Ok("linear")
        }
        "group_norm" => {
            let g = c
                .has("gamma")
                .then(|| c.f32("gamma").into_dimensionality::<Ix1>().unwrap());
            let b = c
                .has("beta")
                .then(|| c.f32("beta").into_dimensionality::<Ix1>().unwrap());
            let eps = c.p("eps").as_f64().unwrap() as f32;
            let got = group_norm(
                x().view(),
                c.pu("groups"),
                g.as_ref().map(|v| v.view()),
                b.as_ref().map(|v| v.view()),
                eps,
            )
            .map_err(e)?;
            check_close(&name, &got, &c.f32("out"), REST)?;
            Ok("group_norm")
        }
        "batch_norm" => {
            let v1 = |k: &str| c.f32(k).into_dimensionality::<Ix1>().unwrap();
            let (m, v, g, b) = (v1("mean"), v1("var"), v1("gamma"), v1("beta"));
            let eps = c.p("eps").as_f64().unwrap() as f32;
            let got = batch_norm(
                x().view(),
                m.view(),
                v.view(),
                Some(g.view()),
                Some(b.view()),
                eps,
            )
            .map_err(e)?;
            check_close(&name, &got, &c.f32("out"), REST)?;
            Ok("batch_norm")
        }
        "activation" => {
            let act = match c.p("kind").as_str().unwrap() {
                "relu" => Activation::Relu,
                "relu6" => Activation::Relu6,
                "leaky_relu" => Activation::LeakyRelu(c.p("slope").as_f64().unwrap() as f32),
                "sigmoid" => Activation::Sigmoid,
                "tanh" => Activation::Tanh,
                "silu" => Activation::Silu,
                "hardswish" => Activation::HardSwish,
                "hardsigmoid" => Activation::HardSigmoid,
                other => return Err(format!("{name}: unknown activation {other}")),
            };
            check_close(&name, &act.apply(x().view()), &c.f32("out"), REST)?;
            let mut inplace = x();
            act.apply_array(inplace.view_mut());
            check_close(&format!("{name} in place"), &inplace, &c.f32("out"), REST)?;
            Ok("activation")
        }
        "prelu" => {
            let w = c.f32("weight").into_dimensionality::<Ix1>().unwrap();
            check_close(
                &name,
                &prelu(x().view(), w.view()).map_err(e)?,
                &c.f32("out"),
                REST,
            )?;
            Ok("prelu")
        }
        "pool" => {
            let k = c.pu("kernel");
            let p = Pool2dParams::new(k)
                .stride(c.pu("stride"))
                .padding(c.pu("padding"))
                .dilation(c.pu("dilation"))
                .ceil_mode(c.p("ceil_mode").as_bool().unwrap());
            let got = if c.p("kind").as_str() == Some("max") {
                max_pool2d(x4().view(), p)
            } else {
                let div = c.p("divisor_override").as_u64().map(|v| v as usize);
                avg_pool2d(
                    x4().view(),
                    p,
                    c.p("count_include_pad").as_bool().unwrap(),
                    div,
                )
            }
            .map_err(e)?;
            check_close(&name, &got.into_dyn(), &c.f32("out"), REST)?;
            Ok("pool")
        }
        "adaptive_avg_pool" => {
            let got = adaptive_avg_pool2d(x4().view(), c.pair("out")).map_err(e)?;
            check_close(&name, &got.into_dyn(), &c.f32("out"), REST)?;
            Ok("adaptive_avg_pool")
        }
        "resize" => {
            let mode = mode_of(c.p("mode").as_str().unwrap());
            let got = resize(x4().view(), c.pair("size"), mode).map_err(e)?;
            check_close(&name, &got.into_dyn(), &c.f32("out"), REST)?;
            Ok("resize")
        }
        "interpolate_scale" => {
            let mode = mode_of(c.p("mode").as_str().unwrap());
            let s = c.p("scale").as_f64().unwrap();
            let got = interpolate_scale(
                x4().view(),
                (s, s),
                mode,
                c.p("recompute").as_bool().unwrap(),
            )
            .map_err(e)?;
            check_close(&name, &got.into_dyn(), &c.f32("out"), REST)?;
            Ok("interpolate_scale")
        }
        "softmax" => {
            let got = softmax(x().view(), c.p("axis").as_i64().unwrap() as isize).map_err(e)?;
            check_close(&name, &got, &c.f32("out"), REST)?;
            Ok("softmax")
        }
        "argmax" => {
            let got =
                argmax(x().view(), c.p("axis").as_i64().unwrap() as isize, false).map_err(e)?;
            if got != c.i64("out") {
                return Err(format!("{name}: {got:?} != torch {:?}", c.i64("out")));
            }
            Ok("argmax")
        }
        "topk" => {
            let (v, i) = topk(
                x().view(),
                c.pu("k"),
                c.p("axis").as_i64().unwrap() as isize,
                c.p("largest").as_bool().unwrap(),
            )
            .map_err(e)?;
            check_close(&name, &v, &c.f32("out_values"), REST)?;
            if i != c.i64("out_indices") {
                return Err(format!(
                    "{name}: indices {i:?} != torch {:?}",
                    c.i64("out_indices")
                ));
            }
            Ok("topk")
        }
        "gather" => {
            let got = gather(
                x().view(),
                c.p("axis").as_i64().unwrap() as isize,
                c.i64("index").view(),
            )
            .map_err(e)?;
            check_close(&name, &got, &c.f32("out"), REST)?;
            Ok("gather")
        }
        "concat" => {
            let (a, b) = (x(), c.f32("y"));
            let got = concat(
                &[a.view(), b.view()],
                c.p("axis").as_i64().unwrap() as isize,
            )
            .map_err(e)?;
            check_close(&name, &got, &c.f32("out"), REST)?;
            Ok("concat")
        }
        "split" => {
            let sizes: Vec<usize> = c
                .p("sizes")
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let parts =
                split(x().view(), &sizes, c.p("axis").as_i64().unwrap() as isize).map_err(e)?;
            for (k, part) in parts.iter().enumerate() {
                check_close(
                    &format!("{name}[{k}]"),
                    part,
                    &c.f32(&format!("out{k}")),
                    REST,
                )?;
            }
            Ok("split")
        }
        "slice" => {
            let gi = |k: &str| c.p(k).as_i64().unwrap() as isize;
            let got =
                slice(x().view(), gi("axis"), gi("start"), gi("end"), c.pu("step")).map_err(e)?;
            check_close(&name, &got, &c.f32("out"), REST)?;
            Ok("slice")
        }
        "permute" => {
            let axes: Vec<usize> = c
                .p("axes")
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            check_close(
                &name,
                &permute(x().view(), &axes).map_err(e)?,
                &c.f32("out"),
                REST,
            )?;
            Ok("permute")
        }
        "pad" => {
            let flat: Vec<usize> = c
                .p("pads")
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let pairs: Vec<(usize, usize)> = flat.chunks(2).map(|p| (p[0], p[1])).collect();
            let mode = match c.p("mode").as_str().unwrap() {
                "constant" => PadMode::Constant(c.p("value").as_f64().unwrap() as f32),
                "reflect" => PadMode::Reflect,
                _ => PadMode::Replicate,
            };
            check_close(
                &name,
                &pad(x().view(), &pairs, mode).map_err(e)?,
                &c.f32("out"),
                REST,
            )?;
            Ok("pad")
        }
        "rcnn_transform" => {
            let img = c.u8("x").into_dimensionality::<Ix3>().unwrap();
            let arr3 = |k: &str| -> [f32; 3] {
                let a = c.p(k).as_array().unwrap();
                [0, 1, 2].map(|i| a[i].as_f64().unwrap() as f32)
            };
            let t = RcnnTransform {
                min_size: c.pu("min_size"),
                max_size: c.pu("max_size"),
                mean: arr3("mean"),
                std: arr3("std"),
                size_divisible: c.pu("size_divisible"),
            };
            let got = t.apply(img.view()).map_err(e)?;
            let size = c.i64("out_size");
            let want_size = (size[[0]] as usize, size[[1]] as usize);
            if got.image_size != want_size {
                return Err(format!(
                    "{name}: size {:?} != torch {want_size:?}",
                    got.image_size
                ));
            }
            check_close(&name, &got.image.into_dyn(), &c.f32("out"), REST)?;
            Ok("rcnn_transform")
        }
        other => Err(format!("{name}: unknown op {other}")),
    }
}

#[test]
fn layers_match_torch() {
    let f = fixtures();
    let mut failures = Vec::new();
    let mut count: BTreeMap<&'static str, usize> = BTreeMap::new();
    for c in &f.cases {
        let case = Case { c, blob: &f.blob };
        match run_case(&case) {
            Ok(op) => *count.entry(op).or_default() += 1,
            Err(msg) => failures.push(msg),
        }
    }
    println!("fixture cases passed per op: {count:?}");
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        f.cases.len(),
        failures.join("\n")
    );
    // Every family the fixture script writes was exercised.
    for op in [
        "conv2d",
        "conv_bn",
        "conv_transpose2d",
        "deform_conv2d",
        "linear",
        "group_norm",
        "batch_norm",
        "activation",
        "prelu",
        "pool",
        "adaptive_avg_pool",
        "resize",
        "interpolate_scale",
        "softmax",
        "argmax",
        "topk",
        "gather",
        "concat",
        "split",
        "slice",
        "permute",
        "pad",
        "rcnn_transform",
    ] {
        assert!(count.contains_key(op), "no fixture case for {op}");
    }
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let x = ndarray::Array4::<f32>::zeros((1, 3, 4, 4));
    let w = ndarray::Array4::<f32>::zeros((2, 4, 3, 3));
    assert!(Conv2d::new(w.view(), None, Conv2dParams::default())
        .unwrap()
        .forward(x.view())
        .is_err());
    assert!(max_pool2d(x.view(), Pool2dParams::new(5)).is_err());
    assert!(resize(x.view(), (0, 3), ResizeMode::Nearest).is_err());
    let b = ndarray::Array1::<f32>::zeros(5);
    let v: ArrayView1<f32> = b.view();
    assert!(group_norm(x.view().into_dyn(), 2, None, None, 1e-5).is_err());
    assert!(batch_norm(x.view().into_dyn(), v, v, None, None, 1e-5).is_err());
    let img = ndarray::Array3::<u8>::zeros((0, 5, 3));
    assert!(RcnnTransform::default().apply(img.view()).is_err());
}

/// Pillow's `Image.resize(..., Image.BILINEAR)` on crops of a photo
/// (`tests/reference/make_pil_resize_fixtures.py`, Pillow 13): every byte equal, in both
/// pass orders, for downscales, upscales, mixed, one-axis, identity and 1x1 outputs.
#[test]
fn pil_resize_matches_pillow_byte_for_byte() {
    use kernels::layers::resample::{pil_resize_u8, PilFilter};
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/layers/pil_resize.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let bytes = |v: &Value| -> Vec<u8> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect()
    };
    let dims = |v: &Value| -> Vec<usize> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as usize)
            .collect()
    };
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let s = dims(&c["input_shape"]);
        let o = dims(&c["output_size"]);
        let got = pil_resize_u8(
            &bytes(&c["input"]),
            (s[0], s[1], s[2]),
            (o[0], o[1]),
            PilFilter::Bilinear,
        )
        .unwrap();
        let want = bytes(&c["output"]);
        let wrong = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(got.len(), want.len(), "{name}: size");
        assert_eq!(
            wrong, 0,
            "{name} ({}): {wrong} bytes differ from Pillow's",
            c["pass_order"]
        );
    }
}

/// OpenCV's bilinear `warpAffine` (`tests/reference/make_cv_warp_fixtures.py`, OpenCV 5.1):
/// every byte equal, for CenterNet's centring matrices, a rotation, a shear and a shift that
/// leaves most of the output outside the source.
#[test]
fn cv_warp_affine_matches_opencv_byte_for_byte() {
    use kernels::layers::resample::cv_warp_affine_u8;
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/layers/cv_warp.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let nums = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_f64().unwrap())
            .collect()
    };
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 7);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let s: Vec<usize> = nums(&c["input_shape"])
            .iter()
            .map(|&v| v as usize)
            .collect();
        let o: Vec<usize> = nums(&c["output_size"])
            .iter()
            .map(|&v| v as usize)
            .collect();
        let input: Vec<u8> = nums(&c["input"]).iter().map(|&v| v as u8).collect();
        let m: [f64; 6] = nums(&c["matrix"]).try_into().unwrap();
        let got = cv_warp_affine_u8(&input, (s[0], s[1], s[2]), &m, (o[0], o[1])).unwrap();
        let want: Vec<u8> = nums(&c["output"]).iter().map(|&v| v as u8).collect();
        assert_eq!(got.len(), want.len(), "{name}: size");
        let wrong = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(wrong, 0, "{name}: {wrong} bytes differ from OpenCV's");
    }
}
