//! Check (b) of the CUDA kernels: each kernel of `kernels/cuda/*.cu`, compiled as C++ and run
//! under the CPU emulation of the CUDA execution model, gives the CPU reference op's result
//! on random and edge-case inputs (through the same host code as on a GPU,
//! `kernels::cuda::ops`). The checks themselves are shared with the real-GPU tests.

#[path = "../../tests/cuda_checks/mod.rs"]
mod cuda_checks;

use cuda_emu::Emu;
use kernels::cuda::{Arg, Executor, Launch, KERNELS, K_NMS_MASK};

#[test]
fn conv2d_matches_cpu() {
    cuda_checks::conv2d(&mut Emu);
}

#[test]
fn preprocess_matches_cpu() {
    cuda_checks::preprocess(&mut Emu);
}

#[test]
fn roi_align_matches_cpu() {
    cuda_checks::roi_align(&mut Emu);
}

#[test]
fn nms_matches_cpu() {
    cuda_checks::nms(&mut Emu);
}

#[test]
fn batched_nms_matches_cpu() {
    cuda_checks::batched_nms(&mut Emu);
}

#[test]
fn box_decode_matches_cpu() {
    cuda_checks::box_decode(&mut Emu);
}

#[test]
fn paste_masks_matches_cpu() {
    cuda_checks::paste_masks(&mut Emu);
}

#[test]
fn yolact_matches_cpu() {
    cuda_checks::yolact(&mut Emu);
}

#[test]
fn heatmap_matches_cpu() {
    cuda_checks::heatmap(&mut Emu);
}

#[test]
fn transformer_matches_cpu() {
    cuda_checks::transformer(&mut Emu);
}

#[test]
fn deform_conv2d_matches_cpu() {
    cuda_checks::deform_conv2d(&mut Emu);
}

#[test]
fn corner_pool_matches_cpu() {
    cuda_checks::corner_pool(&mut Emu);
}

#[test]
fn every_kernel_is_compiled_into_the_emulation() {
    let names = cuda_emu::kernel_names();
    for k in KERNELS {
        assert!(
            names.iter().any(|n| n == k.name),
            "{} missing from {names:?}",
            k.name
        );
    }
}

#[test]
fn bad_launches_are_errors() {
    let mut mask = vec![0u64; 1];
    // Wrong argument types for the kernel's parameters.
    let err = Emu
        .launch(
            &K_NMS_MASK,
            Launch::linear(1, 64),
            &mut [Arg::I32(1), Arg::OutU64(&mut mask)],
        )
        .expect_err("signature mismatch");
    assert!(err.to_string().contains("takes parameters"), "{err}");
    // A block larger than a GPU allows.
    let boxes = [0f32; 4];
    let err = Emu
        .launch(
            &K_NMS_MASK,
            Launch {
                grid: (1, 1, 1),
                block: (2048, 1, 1),
            },
            &mut [
                Arg::I32(1),
                Arg::InF32(&boxes),
                Arg::InI64(&[]),
                Arg::I32(0),
                Arg::F32(0.5),
                Arg::OutU64(&mut mask),
            ],
        )
        .expect_err("block too large");
    assert!(err.to_string().contains("1024"), "{err}");
}
