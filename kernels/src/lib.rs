//! Compute kernels of the vision pipeline engine: the `Tensor` and `Device` types that every
//! node exchanges, CPU layers and vision ops, and model weights loaded from PyTorch
//! checkpoints and safetensors files.

pub mod cuda;
pub mod device;
pub mod files;
pub mod layers;
pub mod ops;
pub mod process;
pub mod profile;
pub mod weights;

pub use device::{Device, DeviceError, DeviceRequest};
pub use engine_tensor::f16;
pub use engine_tensor::{tensor, DType, Element, Tensor, TensorError};
pub use process::configure_library;

// For `multiversion!`, which expands in other crates too.
#[cfg(target_arch = "x86_64")]
#[doc(hidden)]
pub use ops::simd::{has_avx2 as __has_avx2, has_avx512 as __has_avx512};
