//! The tensor type that crosses every boundary of the engine: between nodes, and between the
//! engine and plugin libraries (as DLPack). Deliberately small (`half`, and `ndarray` behind a feature), so
//! that the plugin SDK, and with it a custom head, does not compile the compute stack.
//!
//! - [`Tensor`]: a dtype, a shape and shared, contiguous storage (owned or foreign);
//! - [`DType`], with the codes it has in the plugin ABI ([`DType::abi_code`]);
//! - [`Device`]: where a tensor's storage lives.

pub mod device;
pub mod tensor;

pub use device::Device;
pub use half::f16;
pub use tensor::{DType, Element, Tensor, TensorError};
