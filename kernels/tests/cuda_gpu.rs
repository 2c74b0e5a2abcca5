//! Check (c) of the CUDA kernels: on a machine with a CUDA device (driver, device and NVRTC),
//! every GPU entry point of `kernels::cuda::ops` is compared with the CPU op, with the same
//! checks the CPU emulation runs (`tests/cuda_checks`). Elsewhere the test prints
//! `SKIPPED: no CUDA device (...)` and passes.

mod cuda_checks;

use kernels::cuda::{Executor, Gpu};
use kernels::{Device, DeviceRequest};

fn gpu_or_skip() -> Option<Gpu> {
    match Gpu::new(0) {
        Ok(g) => Some(g),
        Err(e) => {
            let msg = format!("SKIPPED: no CUDA device ({e})");
            println!("{msg}");
            eprintln!("{msg}");
            None
        }
    }
}

#[test]
fn gpu_ops_match_the_cpu_ops() {
    let Some(mut gpu) = gpu_or_skip() else {
        return;
    };
    for (name, check) in cuda_checks::all::<Gpu>() {
        println!("{name} on {}", gpu.describe());
        check(&mut gpu);
    }
}

#[test]
fn missing_cuda_is_an_error_never_a_panic() {
    // Whatever this machine has, these return (no panic).
    let _ = Gpu::new(0);
    assert!(Gpu::new(1 << 20).is_err());
    let _ = kernels::cuda::probe(0);
    let (device, why) = DeviceRequest::Auto.resolve().expect("auto always resolves");
    println!("auto -> {device}: {why}");
    assert!(!why.is_empty());
    match kernels::cuda::probe(0)
        .ok()
        .zip(kernels::cuda::nvrtc::available().then_some(()))
    {
        Some(_) => assert_eq!(device, Device::Cuda(0)),
        None => assert_eq!(device, Device::Cpu),
    }
    let err = DeviceRequest::Cuda(1 << 20)
        .resolve()
        .expect_err("no such device");
    assert!(err.to_string().contains("cuda:1048576"), "{err}");
}
