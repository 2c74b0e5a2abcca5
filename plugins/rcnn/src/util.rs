//! Shared helpers: tensor views for the layers, residual adds, weights files and prefixes,
//! binding a convolution with its frozen batch norm.

use std::path::Path;

use kernels::layers::{Activation, Conv2d, Conv2dParams};
use kernels::weights::{Binder, Weights};
use kernels::Tensor;
use ndarray::{Array4, ArrayView1, ArrayView4, Ix1, Ix4};
use plugin_sdk::{
    DType, NodeSpec, ParamSpec, ParamType, ParamValue, Params, PortKind, PortSpec, Value,
};

use crate::error::{LayerContext, RcnnError};

/// A feature map as the layers want it: `[N, C, H, W]`, and whether the tensor had the batch
/// axis (`[N, C, H, W]`) or not (`[C, H, W]`, read as `N = 1`).
pub(crate) fn nchw<'a>(
    t: &'a Tensor,
    what: &str,
) -> Result<(ArrayView4<'a, f32>, bool), RcnnError> {
    if t.dtype() != DType::F32 {
        return Err(RcnnError::input(format!(
            "{what} must be f32, got {}",
            t.describe()
        )));
    }
    let v = t.view::<f32>()?;
    let batched = match t.ndim() {
        3 => false,
        4 => true,
        _ => {
            return Err(RcnnError::input(format!(
                "{what} must be [C, H, W] or [N, C, H, W], got {}",
                t.describe()
            )))
        }
    };
    let s = t.shape();
    let dims = if batched {
        (s[0], s[1], s[2], s[3])
    } else {
        (1, s[0], s[1], s[2])
    };
    let v = v
        .into_shape_with_order(dims)
        .map_err(|e| RcnnError::input(format!("{what}: {e}")))?;
    Ok((
        v.into_dimensionality::<Ix4>()
            .map_err(|e| RcnnError::input(e.to_string()))?,
        batched,
    ))
}

/// The tensor of a layer output: `[N, C, H, W]`, or `[C, H, W]` when the input had no batch axis.
pub(crate) fn from_nchw(a: Array4<f32>, batched: bool) -> Result<Tensor, RcnnError> {
    let (n, c, h, w) = a.dim();
    let t = kernels::layers::array_to_tensor(a.into_dyn()).ctx(|| "output".into())?;
    if batched || n != 1 {
        Ok(t)
    } else {
        Ok(t.reshape(&[c, h, w])?)
    }
}

/// Reads a weights file (`.pth` / `.safetensors`).
pub(crate) fn load_weights(path: &Path) -> Result<Weights, RcnnError> {
    Ok(Weights::load(path)?)
}

/// The prefix to bind under: `prefix` itself when some tensor name starts with it, otherwise
/// `""` when the file holds the sub-module on its own (`probe`, e.g. "conv1.weight", is a
/// top-level name), so that a plain torchvision `resnet50` state dict loads with the default
/// `prefix = "backbone.body."`. When neither fits, `prefix` stays and the binder reports what
/// is missing.
pub(crate) fn resolve_prefix(weights: &Weights, prefix: &str, probes: &[&str]) -> String {
    if prefix.is_empty() || weights.names().any(|n| n.starts_with(prefix)) {
        return prefix.to_string();
    }
    if probes.iter().any(|p| weights.get(p).is_some()) {
        return String::new();
    }
    prefix.to_string()
}

fn vec1(t: &Tensor) -> Result<ArrayView1<'_, f32>, RcnnError> {
    t.view::<f32>()?
        .into_dimensionality::<Ix1>()
        .map_err(|e| RcnnError::input(e.to_string()))
}

/// Binds `conv` (`[cout, cin/groups, k, k]`, no bias) followed by a FrozenBatchNorm2d `bn`
/// (`weight`, `bias`, `running_mean`, `running_var`), folded into the convolution's weight and
/// bias, with `activation` fused.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_bn(
    b: &mut Binder<'_>,
    conv: &str,
    bn: &str,
    cin: usize,
    cout: usize,
    k: usize,
    params: Conv2dParams,
    eps: f32,
    activation: Activation,
) -> Result<Conv2d, RcnnError> {
    let w = b.take(
        &format!("{conv}.weight"),
        &[cout, cin / params.groups, k, k],
    );
    let gamma = b.take(&format!("{bn}.weight"), &[cout]);
    let beta = b.take(&format!("{bn}.bias"), &[cout]);
    let mean = b.take(&format!("{bn}.running_mean"), &[cout]);
    let var = b.take(&format!("{bn}.running_var"), &[cout]);
    let c = Conv2d::from_tensors(&w, None, params)
        .ctx(|| conv.to_string())?
        .with_batch_norm(vec1(&gamma)?, vec1(&beta)?, vec1(&mean)?, vec1(&var)?, eps)
        .ctx(|| bn.to_string())?;
    Ok(c.with_activation(activation))
}

/// Binds a convolution with a bias (`[cout, cin, k, k]`, `[cout]`).
pub(crate) fn conv_bias(
    b: &mut Binder<'_>,
    name: &str,
    cin: usize,
    cout: usize,
    k: usize,
    params: Conv2dParams,
) -> Result<Conv2d, RcnnError> {
    let w = b.take(&format!("{name}.weight"), &[cout, cin, k, k]);
    let bias = b.take(&format!("{name}.bias"), &[cout]);
    Conv2d::from_tensors(&w, Some(&bias), params).ctx(|| name.to_string())
}

/// What the heads need to know about the preprocessed image: the padded tensor's size (the
/// anchors' strides), the resized size before padding (clipping, RoIAlign's scales) and the
/// original size (pasting masks), all `(height, width)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ImageSizes {
    pub padded: (usize, usize),
    pub resized: (usize, usize),
    pub original: (usize, usize),
}

impl ImageSizes {
    /// Reads an `image` value of `rcnn_preprocess` (`tensor` `[3, H, W]` or `[1, 3, H, W]`
    /// with `image_size` and `original_size`).
    pub fn from_value(node: &str, image: &Value) -> Result<ImageSizes, RcnnError> {
        let t = image.tensor("tensor").map_err(RcnnError::Input)?;
        let s = t.shape();
        let padded = match s.len() {
            3 => (s[1], s[2]),
            4 if s[0] == 1 => (s[2], s[3]),
            _ => {
                return Err(RcnnError::input(format!(
                    "{node}: the image tensor must be [3, H, W] (one image, from rcnn_preprocess), got {}",
                    t.describe()
                )))
            }
        };
        let pair = |name: &str| -> Result<(usize, usize), RcnnError> {
            let t = image.get(name).ok_or_else(|| {
                RcnnError::input(format!(
                    "{node}: the image value has no \"{name}\"; connect the `image` output of rcnn_preprocess"
                ))
            })?;
            let v = t.as_slice::<i64>().map_err(|_| {
                RcnnError::input(format!(
                    "{node}: \"{name}\" must be i64 [2], got {}",
                    t.describe()
                ))
            })?;
            match v {
                [h, w] if *h > 0 && *w > 0 => Ok((*h as usize, *w as usize)),
                _ => Err(RcnnError::input(format!(
                    "{node}: \"{name}\" must hold a positive (height, width), got {v:?}"
                ))),
            }
        };
        let resized = pair("image_size")?;
        if resized.0 > padded.0 || resized.1 > padded.1 {
            return Err(RcnnError::input(format!(
                "{node}: image_size {resized:?} exceeds the padded tensor {padded:?}"
            )));
        }
        Ok(ImageSizes {
            padded,
            resized,
            original: pair("original_size")?,
        })
    }
}

/// The levels `names` of a `features` value as `[1, C, H, W]` views, all with the same
/// channels.
pub(crate) fn feature_levels<'a>(
    node: &str,
    features: &'a Value,
    names: &[String],
) -> Result<Vec<ArrayView4<'a, f32>>, RcnnError> {
    let mut out: Vec<ArrayView4<'a, f32>> = Vec::with_capacity(names.len());
    for name in names {
        let t = features.get(name).ok_or_else(|| {
            RcnnError::input(format!(
                "{node}: the features have no level \"{name}\" (they have: {}); set `in_features`",
                features.names().join(", ")
            ))
        })?;
        let (v, _) = nchw(t, &format!("{node}: feature level \"{name}\""))?;
        if v.dim().0 != 1 {
            return Err(RcnnError::input(format!(
                "{node}: feature level \"{name}\" holds a batch of {} images; the heads take one image per frame",
                v.dim().0
            )));
        }
        if let Some(first) = out.first() {
            if first.dim().1 != v.dim().1 {
                return Err(RcnnError::input(format!(
                    "{node}: feature level \"{name}\" has {} channels, \"{}\" has {}",
                    v.dim().1,
                    names[0],
                    first.dim().1
                )));
            }
        }
        out.push(v);
    }
    Ok(out)
}

/// `name` if the file has `{prefix}{name}.weight`, else `old` when it has that one (the
/// module names of torchvision < 0.13 checkpoints), else `name` (the binder then reports it
/// missing).
pub(crate) fn module_name(weights: &Weights, prefix: &str, name: &str, old: &str) -> String {
    let has = |n: &str| weights.get(&format!("{prefix}{n}.weight")).is_some();
    if !has(name) && has(old) {
        old.to_string()
    } else {
        name.to_string()
    }
}

/// Binds a linear layer (`[out, in]`, `[out]`).
pub(crate) fn linear(
    b: &mut Binder<'_>,
    name: &str,
    cin: usize,
    cout: usize,
    activation: Activation,
) -> Result<kernels::layers::Linear, RcnnError> {
    let w = b.take(&format!("{name}.weight"), &[cout, cin]);
    let bias = b.take(&format!("{name}.bias"), &[cout]);
    let w = w
        .view::<f32>()?
        .into_dimensionality::<ndarray::Ix2>()
        .map_err(|e| RcnnError::input(e.to_string()))?;
    Ok(kernels::layers::Linear::new(w, Some(vec1(&bias)?))
        .ctx(|| name.to_string())?
        .with_activation(activation))
}

/// A non-negative integer parameter as `usize`, at most `max`.
pub(crate) fn count_param(
    params: &Params,
    name: &'static str,
    min: i64,
    max: i64,
) -> Result<usize, RcnnError> {
    let v = params.int(name).map_err(RcnnError::Input)?;
    if v < min || v > max {
        return Err(RcnnError::param(
            name,
            format!("must be in {min}..={max}, got {v}"),
        ));
    }
    Ok(v as usize)
}

/// A float parameter within `[lo, hi]`.
pub(crate) fn float_param(
    params: &Params,
    name: &'static str,
    lo: f64,
    hi: f64,
) -> Result<f32, RcnnError> {
    let v = params.float(name).map_err(RcnnError::Input)?;
    if !(lo..=hi).contains(&v) {
        return Err(RcnnError::param(
            name,
            format!("must be in [{lo}, {hi}], got {v}"),
        ));
    }
    Ok(v as f32)
}

/// MultiScaleRoIAlign with the channels-last workspace a head keeps across frames.
#[derive(Debug)]
pub(crate) struct RoiPooler {
    align: kernels::ops::MultiScaleRoIAlign,
    workspace: std::sync::Mutex<kernels::ops::roi_align::RoiAlignWorkspace>,
}

impl RoiPooler {
    pub fn new(output_size: usize, sampling_ratio: i32) -> RoiPooler {
        RoiPooler {
            align: kernels::ops::MultiScaleRoIAlign::new(output_size, sampling_ratio),
            workspace: Default::default(),
        }
    }

    /// Pools `boxes` (resized-image pixels) from the `[1, C, H, W]` levels:
    /// `[K, C, size, size]`.
    pub fn pool(
        &self,
        node: &str,
        levels: &[ArrayView4<'_, f32>],
        boxes: &[[f32; 4]],
        resized: (usize, usize),
    ) -> Result<Array4<f32>, RcnnError> {
        // A poisoned lock only means another frame panicked mid-call; the workspace is
        // scratch memory that every call overwrites.
        let mut ws = self
            .workspace
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.align
            .forward_with(&mut ws, levels, &[boxes], &[resized])
            .map_err(|e| RcnnError::input(format!("{node}: {e}")))
    }
}

/// The `features` input of a head: FPN levels named in `in_features`.
pub(crate) fn features_input(spec: NodeSpec, doc: &str) -> NodeSpec {
    spec.input(
        PortSpec::new("features", PortKind::Features, doc)
            .dtype(DType::F32)
            .shape("C,H,W"),
    )
}

/// The `image` input of a head: the value of rcnn_preprocess (`doc` says what the head reads
/// from it).
pub(crate) fn image_input(spec: NodeSpec, doc: &str) -> NodeSpec {
    spec.input(
        PortSpec::new("image", PortKind::Tensor, doc)
            .dtype(DType::F32)
            .shape("3,H,W"),
    )
}

/// `weights` (required) and `prefix` of a node that binds `module` of a checkpoint.
pub(crate) fn weights_params(
    spec: NodeSpec,
    module: &str,
    prefix: &str,
    prefix_doc: &str,
) -> NodeSpec {
    spec.param(ParamSpec::required(
        "weights",
        ParamType::Path,
        &format!("torchvision checkpoint (.pth or .safetensors) holding {module} (a Mask R-CNN state dict)"),
    ))
    .param(ParamSpec::optional(
        "prefix",
        ParamType::Str,
        ParamValue::Str(prefix.into()),
        prefix_doc,
    ))
}

/// `in_features` (the levels, finest first) and `channels` of a head.
pub(crate) fn levels_params(
    spec: NodeSpec,
    levels: &[&str],
    doc: &str,
    channels: usize,
) -> NodeSpec {
    spec.param(ParamSpec::optional(
        "in_features",
        ParamType::StrList,
        ParamValue::StrList(levels.iter().map(|l| l.to_string()).collect()),
        doc,
    ))
    .param(ParamSpec::optional(
        "channels",
        ParamType::Int,
        ParamValue::Int(channels as i64),
        "channels of the feature levels",
    ))
}

/// The `in_features` parameter, which must name at least one level.
pub(crate) fn in_features_param(params: &Params) -> Result<Vec<String>, RcnnError> {
    let in_features = params.str_list("in_features").map_err(RcnnError::Input)?;
    if in_features.is_empty() {
        return Err(RcnnError::param(
            "in_features",
            "must name at least one level",
        ));
    }
    Ok(in_features)
}

/// The checkpoint named by `weights`, and the `prefix` parameter.
pub(crate) fn weights_param(params: &Params) -> Result<(Weights, String), RcnnError> {
    let path = std::path::PathBuf::from(params.str("weights").map_err(RcnnError::Input)?);
    let prefix = params.str("prefix").map_err(RcnnError::Input)?.to_string();
    Ok((load_weights(&path)?, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_keep_or_add_the_batch_axis() {
        let t = Tensor::from_vec(&[2, 3, 4], (0..24).map(|v| v as f32).collect()).unwrap();
        let (v, batched) = nchw(&t, "x").unwrap();
        assert_eq!(v.dim(), (1, 2, 3, 4));
        assert!(!batched);
        let back = from_nchw(v.to_owned(), batched).unwrap();
        assert_eq!(back.shape(), &[2, 3, 4]);
        let t4 = t.reshape(&[1, 2, 3, 4]).unwrap();
        let (_, batched) = nchw(&t4, "x").unwrap();
        assert!(batched);
        assert_eq!(
            from_nchw(v.to_owned(), true).unwrap().shape(),
            &[1, 2, 3, 4]
        );
        assert!(nchw(&t.reshape(&[24]).unwrap(), "x").is_err());
        let ints = Tensor::from_vec(&[1, 1, 1], vec![1i64]).unwrap();
        assert!(nchw(&ints, "x")
            .unwrap_err()
            .to_string()
            .contains("must be f32"));
    }

    #[test]
    fn prefix_falls_back_to_a_plain_module() {
        let t = || Tensor::from_vec(&[1], vec![0f32]).unwrap();
        let full = Weights::from_tensors(
            Path::new("full.pth"),
            [("backbone.body.conv1.weight".to_string(), t())],
        );
        assert_eq!(
            resolve_prefix(&full, "backbone.body.", &["conv1.weight"]),
            "backbone.body."
        );
        let plain = Weights::from_tensors(Path::new("r.pth"), [("conv1.weight".to_string(), t())]);
        assert_eq!(
            resolve_prefix(&plain, "backbone.body.", &["conv1.weight"]),
            ""
        );
        let other = Weights::from_tensors(Path::new("o.pth"), [("head.w".to_string(), t())]);
        assert_eq!(
            resolve_prefix(&other, "backbone.body.", &["conv1.weight"]),
            "backbone.body."
        );
    }
}
