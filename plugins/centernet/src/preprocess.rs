//! `centernet_preprocess`: CenterNet's test-time input (`src/lib/detectors/base_detector.py`
//! `pre_process` with `scale = 1`, `fix_res`, the default):
//!
//! 1. The photo in OpenCV's channel order (CenterNet reads it with `cv2.imread`: BGR).
//! 2. `cv2.warpAffine(image, get_affine_transform(c, s, 0, [512, 512]), (512, 512),
//!    flags=cv2.INTER_LINEAR)` with `c = (w / 2, h / 2)` and `s = max(h, w)`: the photo
//!    scaled so that its long side is 512 pixels and centred, zeros around it
//!    ([`cv_warp_affine_u8`], byte for byte with OpenCV's own kernel).
//! 3. `(x / 255 − mean) / std` in `f64`, rounded to `f32` (numpy's `astype(np.float32)`), with
//!    the BGR statistics `demo.py` uses (parameters `mean` and `std`; see [`MEAN_BGR`]).
//!
//! The output keeps `original_size`; the head recomputes `c` and `s` from it to map its boxes
//! back ([`affine`], [`invert`]).

use kernels::layers::resample::cv_warp_affine_u8;
use kernels::Tensor;
use plugin_sdk::{
    DType, FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Value,
};
use vision_common::{count_param, model_image_value, BgrPixels, LayerContext, ModelError};

use crate::cornernet::CropGeometry;

const NODE: &str = "centernet_preprocess";
/// `opts.py`'s `default_dataset_info['ctdet']` (what `demo.py`, through `opts().init()`,
/// uses): the mean and std of COCO in B, G, R order. `test.py` takes the COCO dataset class's
/// longer values instead ([`TEST_MEAN_BGR`], [`TEST_STD_BGR`]); both become `float32` arrays
/// (`BaseDetector`), promoted to `f64` by numpy's arithmetic with the `f64` pixels.
pub const MEAN_BGR: [f32; 3] = [0.408, 0.447, 0.470];
pub const STD_BGR: [f32; 3] = [0.289, 0.274, 0.278];
/// `src/lib/datasets/dataset/coco.py`'s mean and std (`test.py`'s COCO evaluation).
pub const TEST_MEAN_BGR: [f32; 3] = [0.407_896_54, 0.447_193_02, 0.470_261_15];
pub const TEST_STD_BGR: [f32; 3] = [0.288_638_3, 0.274_081_64, 0.278_098_35];

/// CenterNet's `get_affine_transform(c, s, rot=0, (out_w, out_h))` for a photo of `(h, w)`
/// with `c = (w / 2, h / 2)` and `s = max(h, w)`: the forward 2x3 matrix (photo to output).
/// Its three point pairs (`c`, `c + (0, −s/2)`, and their left turn; `(out_w/2, out_h/2)`,
/// ... with `out_w` on both axes) make a uniform scale `out_w / s` and a translation that
/// puts `c` at the output's centre.
pub fn affine((h, w): (usize, usize), (out_h, out_w): (usize, usize)) -> [f64; 6] {
    let s = h.max(w) as f64;
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let k = out_w as f64 / s;
    [
        k,
        0.0,
        out_w as f64 / 2.0 - k * cx,
        0.0,
        k,
        out_h as f64 / 2.0 - k * cy,
    ]
}

/// The inverse of a 2x3 affine matrix (`get_affine_transform(..., inv=1)`).
pub fn invert(m: &[f64; 6]) -> [f64; 6] {
    let d = m[0] * m[4] - m[1] * m[3];
    let d = if d != 0.0 { 1.0 / d } else { 0.0 };
    let (a11, a12, a21, a22) = (m[4] * d, -m[1] * d, -m[3] * d, m[0] * d);
    [
        a11,
        a12,
        -a11 * m[2] - a12 * m[5],
        a21,
        a22,
        -a21 * m[2] - a22 * m[5],
    ]
}

/// The normalised input `[3, out_h, out_w]` (B, G, R planes) of a warped BGR `u8` image.
fn normalise(warped: &[u8], plane: usize, mean: &[f32; 3], std: &[f32; 3]) -> Vec<f32> {
    let mut data = vec![0f32; 3 * plane];
    for (c, out) in data.chunks_mut(plane).enumerate() {
        for (dst, px) in out.iter_mut().zip(warped.chunks_exact(3)) {
            *dst = ((f64::from(px[c]) / 255.0 - f64::from(mean[c])) / f64::from(std[c])) as f32;
        }
    }
    data
}

pub fn kind() -> NodeKind {
    let spec = NodeSpec::new(
        NODE,
        "CenterNet's pre_process: the BGR photo centred and scaled to a square input by OpenCV's bilinear warpAffine, then (x/255 - mean) / std",
    )
    .input(
        PortSpec::new("image", PortKind::Image, "the photo: u8 [H, W, C] RGB (C = 1, 3 or 4)")
            .dtype(DType::U8),
    )
    .output(PortSpec::new(
        "image",
        PortKind::ModelImage,
        "\"tensor\" f32 [3, S, S] (B, G, R planes, normalised) with \"image_size\" (S, S) and \"original_size\" (H, W) i64 [2]",
    ))
    .param(
        ParamSpec::optional(
            "input_size",
            ParamType::Int,
            ParamValue::Int(512),
            "side of the square input (ctdet's default_resolution, 512; a multiple of 32)",
        )
        .range(32.0, 4096.0),
    )
    ;
    let spec = mean_std_params(
        spec,
        (MEAN_BGR, STD_BGR),
        "demo.py's; test.py's COCO evaluation uses [0.40789654, 0.44719302, 0.47026115] and [0.28863828, 0.27408164, 0.27809835]",
    );
    NodeKind::new(spec, |params| {
        Ok(Box::new(CenterNetPreprocess::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `mean` and `std` parameters, B, G, R, with their defaults and where those come from.
fn mean_std_params(spec: NodeSpec, (mean, std): ([f32; 3], [f32; 3]), source: &str) -> NodeSpec {
    let list = |v: [f32; 3]| ParamValue::FloatList(v.iter().map(|&x| f64::from(x)).collect());
    spec.param(ParamSpec::optional(
        "mean",
        ParamType::FloatList,
        list(mean),
        &format!("per-channel mean in B, G, R order ({source})"),
    ))
    .param(ParamSpec::optional(
        "std",
        ParamType::FloatList,
        list(std),
        &format!("per-channel std in B, G, R order ({source})"),
    ))
}

/// The `mean` or `std` parameter: three finite values, B, G, R (std positive).
fn mean_std_param(params: &Params, name: &'static str) -> Result<[f32; 3], ModelError> {
    let v = params.float_list(name).map_err(ModelError::Input)?;
    match v[..] {
        [a, b, c]
            if v.iter().all(|x| x.is_finite()) && (name != "std" || v.iter().all(|&x| x > 0.0)) =>
        {
            Ok([a as f32, b as f32, c as f32])
        }
        _ => Err(ModelError::param(
            name,
            format!("must be three finite values (B, G, R; std positive), got {v:?}"),
        )),
    }
}

/// The `centernet_preprocess` node.
#[derive(Clone, Debug)]
pub struct CenterNetPreprocess {
    input_size: usize,
    mean: [f32; 3],
    std: [f32; 3],
}

impl CenterNetPreprocess {
    pub fn new(input_size: usize, mean: [f32; 3], std: [f32; 3]) -> CenterNetPreprocess {
        CenterNetPreprocess {
            input_size,
            mean,
            std,
        }
    }

    pub fn from_params(params: &Params) -> Result<CenterNetPreprocess, ModelError> {
        let size = count_param(params, "input_size")?;
        if size % 32 != 0 {
            return Err(ModelError::param(
                "input_size",
                format!("must be a multiple of 32 (the network's stride), got {size}"),
            ));
        }
        Ok(CenterNetPreprocess::new(
            size,
            mean_std_param(params, "mean")?,
            mean_std_param(params, "std")?,
        ))
    }

    /// The node's computation on a u8 `[H, W, C]` image.
    pub fn run(&self, image: &Value) -> Result<Value, ModelError> {
        let px = BgrPixels::from_value(NODE, image)?;
        let (h, w) = (px.height, px.width);
        let bgr: Vec<u8> = px
            .pixels
            .chunks_exact(px.channels)
            .flat_map(|p| px.bgr.map(|c| p[c]))
            .collect();
        let size = self.input_size;
        let m = affine((h, w), (size, size));
        let warped = cv_warp_affine_u8(&bgr, (h, w, 3), &m, (size, size))
            .ctx(|| format!("{NODE} (warp {h}x{w} to {size}x{size})"))?;
        let data = normalise(&warped, size * size, &self.mean, &self.std);
        model_image_value(data, (size, size), (h, w))
    }
}

impl Node for CenterNetPreprocess {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(inputs.value("image")?)?;
        Ok(Outputs::one("image", v))
    }
}

const CORNERNET_NODE: &str = "cornernet_preprocess";

/// `cornernet_preprocess`: CornerNet's test-time input (`test/coco.py` `kp_detection` at scale
/// 1): the BGR photo copied, unscaled, into the centre of a zero `(h | 127, w | 127)` canvas
/// (`crop_image`; [`CropGeometry`]), `(x / 255 − mean) / std` in `f64` rounded to `f32`
/// (`db/coco.py`'s statistics, as `test.py` uses them), and with `flip` the mirrored canvas as
/// a second image: the official test always runs both, and `cornernet` merges them.
pub fn cornernet_kind() -> NodeKind {
    let spec = NodeSpec::new(
        CORNERNET_NODE,
        "CornerNet's kp_detection input: the BGR photo centred on a zero (h|127, w|127) canvas, (x/255 - mean) / std, and its mirror",
    )
    .input(
        PortSpec::new("image", PortKind::Image, "the photo: u8 [H, W, C] RGB (C = 1, 3 or 4)")
            .dtype(DType::U8),
    )
    .output(PortSpec::new(
        "image",
        PortKind::ModelImage,
        "\"tensor\" f32 [2, 3, H|127, W|127] (the image and its mirror; [3, ...] without flip; B, G, R planes, normalised) with \"image_size\" and \"original_size\" (H, W) i64 [2]",
    ))
    .param(ParamSpec::optional(
        "flip",
        ParamType::Bool,
        ParamValue::Bool(true),
        "also the mirrored image (the official test always flips)",
    ))
    ;
    let spec = mean_std_params(spec, (TEST_MEAN_BGR, TEST_STD_BGR), "db/coco.py's");
    NodeKind::new(spec, |params| {
        Ok(Box::new(CornerNetPreprocess::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `cornernet_preprocess` node.
#[derive(Clone, Debug)]
pub struct CornerNetPreprocess {
    mean: [f32; 3],
    std: [f32; 3],
    flip: bool,
}

impl CornerNetPreprocess {
    pub fn new(mean: [f32; 3], std: [f32; 3], flip: bool) -> CornerNetPreprocess {
        CornerNetPreprocess { mean, std, flip }
    }

    pub fn from_params(params: &Params) -> Result<CornerNetPreprocess, ModelError> {
        Ok(CornerNetPreprocess::new(
            mean_std_param(params, "mean")?,
            mean_std_param(params, "std")?,
            params.bool("flip").map_err(ModelError::Input)?,
        ))
    }

    /// The node's computation on a u8 `[H, W, C]` image.
    pub fn run(&self, image: &Value) -> Result<Value, ModelError> {
        let px = BgrPixels::from_value(CORNERNET_NODE, image)?;
        let (h, w) = (px.height, px.width);
        let g = CropGeometry::new((h, w));
        let (ih, iw) = g.input;
        let mut canvas = vec![0u8; ih * iw * 3];
        let (cols, rows) = (g.src_cols.1 - g.src_cols.0, g.src_rows.1 - g.src_rows.0);
        for r in 0..rows {
            let src = &px.pixels[((g.src_rows.0 + r) * w + g.src_cols.0) * px.channels..];
            let dst = &mut canvas[((g.border[0] + r) * iw + g.border[2]) * 3..];
            for (d, p) in dst[..cols * 3]
                .chunks_exact_mut(3)
                .zip(src.chunks_exact(px.channels))
            {
                d.copy_from_slice(&px.bgr.map(|c| p[c]));
            }
        }
        let mut data = normalise(&canvas, ih * iw, &self.mean, &self.std);
        let shape = if self.flip {
            let mirrored: Vec<f32> = data
                .chunks_exact(iw)
                .flat_map(|row| row.iter().rev().copied())
                .collect();
            data.extend(mirrored);
            vec![2, 3, ih, iw]
        } else {
            vec![3, ih, iw]
        };
        Ok(Value::new(PortKind::ModelImage)
            .with("tensor", Tensor::from_vec(&shape, data)?)
            .with(
                "image_size",
                Tensor::from_vec(&[2], vec![ih as i64, iw as i64])?,
            )
            .with(
                "original_size",
                Tensor::from_vec(&[2], vec![h as i64, w as i64])?,
            ))
    }
}

impl Node for CornerNetPreprocess {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(inputs.value("image")?)?;
        Ok(Outputs::one("image", v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_affine_centres_the_long_side() {
        // 264x397 (chelsea.png) to 512: scale 512/397, the short side centred.
        let m = affine((264, 397), (512, 512));
        let k = 512.0 / 397.0;
        assert_eq!(m[0], k);
        assert!((m[2] - 0.0).abs() < 1e-12);
        assert!((m[5] - (256.0 - k * 132.0)).abs() < 1e-12);
        // The output's centre maps back to the photo's centre; a corner to a corner.
        let inv = invert(&m);
        let map =
            |m: &[f64; 6], x: f64, y: f64| (m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5]);
        let (x, y) = map(&inv, 256.0, 256.0);
        assert!((x - 198.5).abs() < 1e-9 && (y - 132.0).abs() < 1e-9);
        let (x, y) = map(&inv, 0.0, map(&m, 0.0, 0.0).1);
        assert!(x.abs() < 1e-9 && y.abs() < 1e-9);
    }

    #[test]
    fn bgr_planes_normalised_in_f64() {
        // One red pixel fills the whole input (s = 1).
        let img = Tensor::from_vec(&[1, 1, 3], vec![255u8, 0, 0]).unwrap();
        let out = CenterNetPreprocess::new(32, MEAN_BGR, STD_BGR)
            .run(&Value::image(img))
            .unwrap();
        let t = out.tensor("tensor").unwrap();
        assert_eq!(t.shape(), &[3, 32, 32]);
        let v = t.as_slice::<f32>().unwrap();
        let plane = 32 * 32;
        // The warp scales by 32: output (0, 0) reads the pixel itself (blue 0, red 255).
        let at = |c: usize| v[c * plane];
        let want = |v: f64, c: usize| ((v - f64::from(MEAN_BGR[c])) / f64::from(STD_BGR[c])) as f32;
        assert_eq!(at(0), want(0.0, 0));
        assert_eq!(at(2), want(1.0, 2));
    }
}
