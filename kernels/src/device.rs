//! Device selection: what a pipeline asks for (`auto`, `cpu`, `cuda`, `cuda:N`) and what this
//! machine can give. The [`Device`] type itself lives in the tensor crate.

pub use engine_tensor::Device;

/// What a pipeline asks for: `auto`, `cpu`, `cuda` or `cuda:N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceRequest {
    Auto,
    Cpu,
    Cuda(u32),
}

#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum DeviceError {
    #[error("unknown device \"{0}\": use \"auto\", \"cpu\", \"cuda\" or \"cuda:N\"")]
    Unknown(String),
    /// CUDA was asked for but cannot be used here; the string says why.
    #[error("device {0} was asked for, but {1}; use device = \"cpu\" or \"auto\"")]
    CudaUnavailable(Device, String),
}

impl DeviceRequest {
    pub fn parse(s: &str) -> Result<DeviceRequest, DeviceError> {
        match s {
            "auto" => Ok(DeviceRequest::Auto),
            "cpu" => Ok(DeviceRequest::Cpu),
            "cuda" => Ok(DeviceRequest::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<u32>().ok())
                .map(DeviceRequest::Cuda)
                .ok_or_else(|| DeviceError::Unknown(s.to_string())),
        }
    }

    /// Picks a device and says why, in one line.
    ///
    /// `auto` picks `cuda:0` when the CUDA driver library loads, device 0 exists and NVRTC
    /// (needed to compile the kernels) loads; otherwise the CPU. `cuda`/`cuda:N` is an error
    /// when any of these is missing. Never panics (see [`crate::cuda::probe`]).
    pub fn resolve(self) -> Result<(Device, &'static str), DeviceError> {
        match self {
            DeviceRequest::Cpu => Ok((Device::Cpu, "the pipeline asks for the CPU")),
            DeviceRequest::Auto => Ok(match cuda_status(0) {
                CudaStatus::Ready => (
                    Device::Cuda(0),
                    "auto: a CUDA driver, device 0 and NVRTC were found, running on cuda:0",
                ),
                CudaStatus::NoDriver => (
                    Device::Cpu,
                    "auto: no CUDA driver (libcuda.so not found), running on the CPU",
                ),
                CudaStatus::NoDevice(_) => (
                    Device::Cpu,
                    "auto: a CUDA driver is installed but no CUDA device was found, running on the CPU",
                ),
                CudaStatus::NoNvrtc => (
                    Device::Cpu,
                    "auto: a CUDA device was found but NVRTC (libnvrtc.so.12) is missing, running on the CPU",
                ),
            }),
            DeviceRequest::Cuda(n) => {
                let device = Device::Cuda(n);
                match cuda_status(n as usize) {
                    CudaStatus::Ready => Ok((device, "the pipeline asks for this CUDA device")),
                    CudaStatus::NoDriver => Err(DeviceError::CudaUnavailable(
                        device,
                        "no CUDA driver is installed (libcuda.so not found)".into(),
                    )),
                    CudaStatus::NoDevice(why) => Err(DeviceError::CudaUnavailable(device, why)),
                    CudaStatus::NoNvrtc => Err(DeviceError::CudaUnavailable(
                        device,
                        "NVRTC (libnvrtc.so.12), needed to compile the CUDA kernels, cannot be loaded".into(),
                    )),
                }
            }
        }
    }
}

enum CudaStatus {
    Ready,
    NoDriver,
    NoDevice(String),
    NoNvrtc,
}

/// What stands between this process and running kernels on CUDA device `ordinal`.
fn cuda_status(ordinal: usize) -> CudaStatus {
    match crate::cuda::probe(ordinal) {
        Err(crate::cuda::CudaError::NoDriver) => CudaStatus::NoDriver,
        Err(e) => CudaStatus::NoDevice(e.to_string()),
        Ok(_) if !crate::cuda::nvrtc::available() => CudaStatus::NoNvrtc,
        Ok(_) => CudaStatus::Ready,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!(DeviceRequest::parse("auto"), Ok(DeviceRequest::Auto));
        assert_eq!(DeviceRequest::parse("cuda"), Ok(DeviceRequest::Cuda(0)));
        assert_eq!(DeviceRequest::parse("cuda:3"), Ok(DeviceRequest::Cuda(3)));
        assert!(matches!(
            DeviceRequest::parse("gpu"),
            Err(DeviceError::Unknown(_))
        ));
        assert!(DeviceRequest::parse("cuda:x").is_err());
    }

    #[test]
    fn auto_resolves_with_a_reason_and_cuda_never_panics() {
        let (d, why) = DeviceRequest::Auto.resolve().unwrap();
        match d {
            Device::Cpu => assert!(why.contains("CPU"), "{why}"),
            Device::Cuda(0) => assert!(why.contains("cuda:0"), "{why}"),
            Device::Cuda(n) => panic!("auto picked cuda:{n}"),
        }
        // No machine has this many devices: a clear error, not a panic.
        let err = DeviceRequest::Cuda(4096).resolve().unwrap_err();
        assert!(matches!(
            err,
            DeviceError::CudaUnavailable(Device::Cuda(4096), _)
        ));
        assert!(err.to_string().contains("cuda:4096"), "{err}");
    }
}
