//! Errors of loading and running a graph model. Every message names the file and, where one
//! is involved, the tensor or graph node.

use std::path::PathBuf;

/// An error of [`crate::GraphModel`]: loading `model.json`, its weights, or running it.
#[derive(Debug, thiserror::Error)]
pub enum GraphModelError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: malformed model.json: {msg}")]
    Malformed { file: PathBuf, msg: String },
    #[error("{file}: weight tensor \"{tensor}\": {msg}")]
    Weight {
        file: PathBuf,
        tensor: String,
        msg: String,
    },
    #[error("{file}: unsupported op(s): {list}")]
    Unsupported { file: PathBuf, list: String },
    #[error("{file}: graph node \"{node}\" (op {op}): {msg}")]
    Node {
        file: PathBuf,
        node: String,
        op: String,
        msg: String,
    },
    #[error("{file}: input tensor \"{input}\": {msg}")]
    Input {
        file: PathBuf,
        input: String,
        msg: String,
    },
    #[error("{file}: output \"{name}\": {msg}")]
    Output {
        file: PathBuf,
        name: String,
        msg: String,
    },
}

/// An error inside one op; the graph adds the file, node and op.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct OpError(pub String);

impl OpError {
    pub fn new(msg: impl Into<String>) -> OpError {
        OpError(msg.into())
    }
}

impl From<kernels::TensorError> for OpError {
    fn from(e: kernels::TensorError) -> OpError {
        OpError(e.to_string())
    }
}

impl From<kernels::layers::LayerError> for OpError {
    fn from(e: kernels::layers::LayerError) -> OpError {
        OpError(e.to_string())
    }
}

/// Result of one op.
pub type OpResult<T> = Result<T, OpError>;

/// Shorthand: an `Err(OpError)` from a format string.
macro_rules! op_err {
    ($($arg:tt)*) => { Err($crate::error::OpError(format!($($arg)*))) };
}
pub(crate) use op_err;
