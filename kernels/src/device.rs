//! Where computation runs: the CPU, or a CUDA device.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    Cuda(u32),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// What a pipeline asks for: `auto`, `cpu`, `cuda` or `cuda:N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceRequest {
    Auto,
    Cpu,
    Cuda(u32),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DeviceError {
    #[error("unknown device \"{0}\": use \"auto\", \"cpu\", \"cuda\" or \"cuda:N\"")]
    Unknown(String),
    #[error("device {0} was asked for, but this build of the engine has no CUDA backend yet; use device = \"cpu\" or \"auto\"")]
    CudaUnavailable(Device),
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
    pub fn resolve(self) -> Result<(Device, &'static str), DeviceError> {
        match self {
            DeviceRequest::Cpu => Ok((Device::Cpu, "the pipeline asks for the CPU")),
            DeviceRequest::Auto => Ok((
                Device::Cpu,
                "auto: no CUDA backend in this build, running on the CPU",
            )),
            DeviceRequest::Cuda(n) => Err(DeviceError::CudaUnavailable(Device::Cuda(n))),
        }
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
    fn auto_resolves_to_cpu_with_a_reason() {
        let (d, why) = DeviceRequest::Auto.resolve().unwrap();
        assert_eq!(d, Device::Cpu);
        assert!(why.contains("CPU"));
        assert!(DeviceRequest::Cuda(0).resolve().is_err());
    }
}
