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

/// A list of counts (channels of stacked layers) as `usize`; a negative entry reads as 0,
/// which the layers that take the list refuse with their own message.
pub fn count_list_param(params: &Params, name: &'static str) -> Result<Vec<usize>, ModelError> {
    Ok(params
        .int_list(name)
        .map_err(ModelError::Input)?
        .iter()
        .map(|&v| usize::try_from(v).unwrap_or(0))
        .collect())
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

/// An `f32` as the `f64` a parameter default shows: the shortest decimal that reads back as the
/// same `f32` (0.7, not 0.699999988079071), so that `engine plugins --kind` prints what the
/// reference wrote. A node reading it back as `f32` gets the same value either way.
pub fn f32_value(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn f32_defaults_print_as_written() {
        assert_eq!(super::f32_value(0.7).to_string(), "0.7");
        assert_eq!(super::f32_value(0.7) as f32, 0.7f32);
        assert_eq!(super::f32_value(1e-3), 0.001);
    }
}
