//! Errors of model nodes. Every message says which node kind, parameter, input or
//! weights file is at fault.

use kernels::layers::LayerError;
use kernels::weights::WeightsError;
use kernels::TensorError;
use plugin_sdk::NodeError;

/// An error of a model node: bad parameters, unusable weights, or an input that does not
/// fit the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A parameter value out of range; the message names the parameter.
    #[error("parameter \"{name}\" {msg}")]
    Param { name: &'static str, msg: String },
    /// The weights file could not be read, or its tensors do not fit the model (the message
    /// lists every missing, unexpected and mis-shaped tensor and names the file).
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// An input value that the node cannot use (wrong kind of tensor, rank, channels, level).
    #[error("{0}")]
    Input(String),
    /// A layer refused its input (e.g. an image too small for the network).
    #[error("{context}: {source}")]
    Layer {
        context: String,
        #[source]
        source: LayerError,
    },
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

impl ModelError {
    pub fn param(name: &'static str, msg: impl Into<String>) -> ModelError {
        ModelError::Param {
            name,
            msg: msg.into(),
        }
    }

    pub fn input(msg: impl Into<String>) -> ModelError {
        ModelError::Input(msg.into())
    }
}

/// Adds a context (which layer) to a layer error.
pub trait LayerContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, ModelError>;
}

impl<T> LayerContext<T> for Result<T, LayerError> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, ModelError> {
        self.map_err(|source| ModelError::Layer {
            context: context(),
            source,
        })
    }
}

impl From<ModelError> for NodeError {
    fn from(e: ModelError) -> NodeError {
        NodeError::new(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_culprit() {
        let e = ModelError::param("depth", "must be 18, 34, 50, 101 or 152, got 20");
        assert_eq!(
            e.to_string(),
            "parameter \"depth\" must be 18, 34, 50, 101 or 152, got 20"
        );
        let layer: Result<(), LayerError> = Err(LayerError::Shape {
            op: "conv2d",
            msg: "too small".into(),
        });
        let e = layer.ctx(|| "layer1.0.conv1".into()).unwrap_err();
        assert_eq!(e.to_string(), "layer1.0.conv1: conv2d: too small");
        let n: NodeError = e.into();
        assert!(n.message().starts_with("layer1.0.conv1"));
    }
}
