//! Parameters read as the types the layers use; their ranges are declared on the parameters
//! (`ParamSpec::range`) and checked by the engine.

use plugin_sdk::Params;

use crate::error::ModelError;

/// A count parameter as `usize`. Its range is declared on the parameter
/// (`ParamSpec::range`), where `engine check` reports it at the value's location and every
/// creation of the node checks it; this only refuses what cannot be a count.
pub fn count_param(params: &Params, name: &'static str) -> Result<usize, ModelError> {
    let v = params.int(name).map_err(ModelError::Input)?;
    usize::try_from(v).map_err(|_| ModelError::param(name, format!("must be >= 0, got {v}")))
}

/// A float parameter as `f32`. Its range is declared on the parameter (`ParamSpec::range`).
pub fn float_param(params: &Params, name: &'static str) -> Result<f32, ModelError> {
    let v = params.float(name).map_err(ModelError::Input)?;
    if !v.is_finite() {
        return Err(ModelError::param(
            name,
            format!("must be a finite number, got {v}"),
        ));
    }
    Ok(v as f32)
}
