//! The plugin SDK of the vision pipeline engine.
//!
//! Everything a node author needs: the [`Node`] trait (implemented by built-in nodes and
//! external plugins alike), port kinds and [`Value`]s, parameter schemas, and the C ABI with
//! the [`export_plugin!`] macro that turns a `cdylib` crate into a loadable plugin.

pub mod abi;
pub mod node;
pub mod params;
pub mod value;

pub use engine_tensor::{self as tensor, f16, DType, Element, Tensor, TensorError};
pub use node::{
    lint_kinds, CreateFn, FrameInfo, HostConfig, Inputs, Node, NodeError, NodeKind, NodeSpec,
    Outputs, PortSpec, StreamState,
};
pub use params::{ParamSpec, ParamType, ParamValue, Params};
pub use value::{Instances, PortKind, Value};
