//! Checkpoints: reading a weights file, finding the sub-module's prefix in it, and the
//! `weights`/`prefix` parameters that every node loading a checkpoint declares.

use std::path::Path;

use kernels::weights::Weights;
use plugin_sdk::{NodeSpec, ParamSpec, ParamType, ParamValue, Params};

use crate::error::ModelError;

/// Reads a weights file (`.pth` / `.safetensors`).
pub fn load_weights(path: &Path) -> Result<Weights, ModelError> {
    Ok(Weights::load(path)?)
}

/// The prefix to bind under: `prefix` itself when some tensor name starts with it, otherwise
/// `""` when the file holds the sub-module on its own (`probe`, e.g. "conv1.weight", is a
/// top-level name), so that a plain torchvision `resnet50` state dict loads with the default
/// `prefix = "backbone.body."`. When neither fits, `prefix` stays and the binder reports what
/// is missing. A checkpoint saved from `nn.DataParallel` (every name under `module.`, as the
/// released RetinaFace files) binds under `module.` + that prefix.
pub fn resolve_prefix(weights: &Weights, prefix: &str, probes: &[&str]) -> String {
    let parallel = weights.names().next().is_some()
        && weights.names().all(|n| n.starts_with("module."))
        && !prefix.starts_with("module.");
    let outer = if parallel { "module." } else { "" };
    let full = format!("{outer}{prefix}");
    if weights.names().any(|n| n.starts_with(&full)) {
        return full;
    }
    if probes
        .iter()
        .any(|p| weights.get(&format!("{outer}{p}")).is_some())
    {
        return outer.to_string();
    }
    full
}

/// `name` if the file has `{prefix}{name}.weight`, else `old` when it has that one (the
/// module names of torchvision < 0.13 checkpoints), else `name` (the binder then reports it
/// missing).
pub fn module_name(weights: &Weights, prefix: &str, name: &str, old: &str) -> String {
    let has = |n: &str| weights.get(&format!("{prefix}{n}.weight")).is_some();
    if !has(name) && has(old) {
        old.to_string()
    } else {
        name.to_string()
    }
}

/// `weights` (required) and `prefix` of a node that binds `module` of a checkpoint.
pub fn weights_params(spec: NodeSpec, module: &str, prefix: &str, prefix_doc: &str) -> NodeSpec {
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

/// The checkpoint named by `weights`, and the `prefix` parameter.
pub fn weights_param(params: &Params) -> Result<(Weights, String), ModelError> {
    let path = std::path::PathBuf::from(params.str("weights").map_err(ModelError::Input)?);
    let prefix = params.str("prefix").map_err(ModelError::Input)?.to_string();
    Ok((load_weights(&path)?, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels::Tensor;

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
        // nn.DataParallel checkpoints: everything under `module.`.
        let parallel = Weights::from_tensors(
            Path::new("p.pth"),
            [("module.body.conv1.weight".to_string(), t())],
        );
        assert_eq!(
            resolve_prefix(&parallel, "body.", &["conv1.weight"]),
            "module.body."
        );
        assert_eq!(resolve_prefix(&parallel, "", &[]), "module.");
        let bare = Weights::from_tensors(
            Path::new("b.pth"),
            [("module.conv1.weight".to_string(), t())],
        );
        assert_eq!(resolve_prefix(&bare, "body.", &["conv1.weight"]), "module.");
    }
}
