//! Feature pyramids as heads read them: levels by name, the `features`/`in_features`
//! declarations, and the RoI pooler over the levels.

use ndarray::{Array4, ArrayView4};
use plugin_sdk::{
    DType, NodeSpec, ParamSpec, ParamType, ParamValue, Params, PortKind, PortSpec, Value,
};

use crate::error::ModelError;
use crate::layers::nchw;

/// The levels `names` of a `features` value as `[1, C, H, W]` views, all with the same
/// channels (an FPN's).
pub fn feature_levels<'a>(
    node: &str,
    features: &'a Value,
    names: &[String],
) -> Result<Vec<ArrayView4<'a, f32>>, ModelError> {
    let out = named_levels(node, features, names)?;
    if let Some(first) = out.first() {
        for (v, name) in out.iter().zip(names) {
            if first.dim().1 != v.dim().1 {
                return Err(ModelError::input(format!(
                    "{node}: feature level \"{name}\" has {} channels, \"{}\" has {}",
                    v.dim().1,
                    names[0],
                    first.dim().1
                )));
            }
        }
    }
    Ok(out)
}

/// The levels `names` of a `features` value as `[1, C, H, W]` views, whatever their
/// channels (a backbone's stages).
pub fn named_levels<'a>(
    node: &str,
    features: &'a Value,
    names: &[String],
) -> Result<Vec<ArrayView4<'a, f32>>, ModelError> {
    let mut out: Vec<ArrayView4<'a, f32>> = Vec::with_capacity(names.len());
    for name in names {
        let t = features.get(name).ok_or_else(|| {
            ModelError::input(format!(
                "{node}: the features have no level \"{name}\" (they have: {}); set `in_features`",
                features.names().join(", ")
            ))
        })?;
        let (v, _) = nchw(t, &format!("{node}: feature level \"{name}\""))?;
        if v.dim().0 != 1 {
            return Err(ModelError::input(format!(
                "{node}: feature level \"{name}\" holds a batch of {} images; the heads take one image per frame",
                v.dim().0
            )));
        }
        out.push(v);
    }
    Ok(out)
}

/// MultiScaleRoIAlign with the channels-last workspace a head keeps across frames.
#[derive(Debug)]
pub struct RoiPooler {
    align: kernels::ops::MultiScaleRoIAlign,
    workspace: std::sync::Mutex<kernels::ops::roi_align::RoiAlignWorkspace>,
}

impl RoiPooler {
    pub fn new(output_size: usize, sampling_ratio: i32) -> RoiPooler {
        RoiPooler::from_align(kernels::ops::MultiScaleRoIAlign::new(
            output_size,
            sampling_ratio,
        ))
    }

    /// A pooler with other settings, such as Detectron2's level rule
    /// (`MultiScaleRoIAlign::detectron2`).
    pub fn from_align(align: kernels::ops::MultiScaleRoIAlign) -> RoiPooler {
        RoiPooler {
            align,
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
    ) -> Result<Array4<f32>, ModelError> {
        // A poisoned lock only means another frame panicked mid-call; the workspace is
        // scratch memory that every call overwrites.
        let mut ws = self
            .workspace
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.align
            .forward_with(&mut ws, levels, &[boxes], &[resized])
            .map_err(|e| ModelError::input(format!("{node}: {e}")))
    }
}

/// The `features` input of a head: FPN levels named in `in_features`.
pub fn features_input(spec: NodeSpec, doc: &str) -> NodeSpec {
    spec.input(
        PortSpec::new("features", PortKind::Features, doc)
            .dtype(DType::F32)
            .shape("C,H,W"),
    )
}

/// `in_features` (the levels, finest first) and `channels` of a head.
pub fn levels_params(spec: NodeSpec, levels: &[&str], doc: &str, channels: usize) -> NodeSpec {
    spec.param(ParamSpec::optional(
        "in_features",
        ParamType::StrList,
        ParamValue::StrList(levels.iter().map(|l| l.to_string()).collect()),
        doc,
    ))
    .param(
        ParamSpec::optional(
            "channels",
            ParamType::Int,
            ParamValue::Int(channels as i64),
            "channels of the feature levels",
        )
        .range(1.0, 65536.0),
    )
}

/// The `in_features` parameter, which must name at least one level.
pub fn in_features_param(params: &Params) -> Result<Vec<String>, ModelError> {
    let in_features = params.str_list("in_features").map_err(ModelError::Input)?;
    if in_features.is_empty() {
        return Err(ModelError::param(
            "in_features",
            "must name at least one level",
        ));
    }
    Ok(in_features)
}
