//! Compute kernels of the vision pipeline engine: the `Tensor` and `Device` types that every
//! node exchanges. CPU layers, vision ops and CUDA kernels build on these.

pub mod device;
pub mod layers;
pub mod ops;
pub mod tensor;

pub use device::{Device, DeviceError, DeviceRequest};
pub use half::f16;
pub use tensor::{DType, Element, Tensor, TensorError};
