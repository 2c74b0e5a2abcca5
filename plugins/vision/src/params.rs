//! Parameters read with range checks: a value out of range names the parameter and the range.

use plugin_sdk::Params;

use crate::error::ModelError;

/// A non-negative integer parameter as `usize`, at most `max`.
pub fn count_param(
    params: &Params,
    name: &'static str,
    min: i64,
    max: i64,
) -> Result<usize, ModelError> {
    let v = params.int(name).map_err(ModelError::Input)?;
    if v < min || v > max {
        return Err(ModelError::param(
            name,
            format!("must be in {min}..={max}, got {v}"),
        ));
    }
    Ok(v as usize)
}

/// A float parameter within `[lo, hi]`.
pub fn float_param(
    params: &Params,
    name: &'static str,
    lo: f64,
    hi: f64,
) -> Result<f32, ModelError> {
    let v = params.float(name).map_err(ModelError::Input)?;
    if !(lo..=hi).contains(&v) {
        return Err(ModelError::param(
            name,
            format!("must be in [{lo}, {hi}], got {v}"),
        ));
    }
    Ok(v as f32)
}
