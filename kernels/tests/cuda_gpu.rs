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

/// Arguments of megabytes go through the page-locked staging buffer (the checks above use
/// small ones, which are copied directly): a RoIAlign on a Mask R-CNN-sized map, a box
/// decoding and mask pasting of Mask R-CNN's sizes, twice each (the buffer is reused),
/// against the CPU ops.
#[test]
fn large_arguments_through_staging_match_the_cpu_ops() {
    use kernels::ops::boxes::BoxCoder;
    use kernels::ops::roi_align::{roi_align, RoiAlignParams};
    use ndarray::{Array2, Array3, Array4};
    let Some(mut gpu) = gpu_or_skip() else {
        return;
    };
    let mut seed = 7u64;
    let mut rnd = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 40) as f32 / (1u32 << 24) as f32
    };
    let map = Array4::from_shape_fn((1, 256, 200, 304), |_| rnd() * 2.0 - 1.0);
    let rois: Vec<[f32; 5]> = (0..300)
        .map(|_| {
            let (x, y) = (rnd() * 1100.0, rnd() * 700.0);
            [
                0.0,
                x,
                y,
                x + 16.0 + rnd() * 300.0,
                y + 16.0 + rnd() * 300.0,
            ]
        })
        .collect();
    let p = RoiAlignParams {
        pooled_height: 7,
        pooled_width: 7,
        spatial_scale: 0.25,
        sampling_ratio: 2,
        aligned: true,
        plus_one_end: false,
    };
    let want = roi_align(map.view(), &rois, &p).expect("cpu roi_align");
    let boxes: Vec<[f32; 4]> = rois.iter().map(|r| [r[1], r[2], r[3], r[4]]).collect();
    let rel = Array2::from_shape_fn((300, 91 * 4), |_| rnd() * 2.0 - 1.0);
    let coder = BoxCoder::new([10.0, 10.0, 5.0, 5.0]);
    let want_boxes = coder.decode(rel.view(), &boxes).expect("cpu decode");
    let masks = Array3::from_shape_fn((100, 28, 28), |_| rnd());
    let want_masks = kernels::ops::paste_masks::paste_masks_in_image(
        masks.view(),
        &boxes[..100],
        (800, 1216),
        1,
    )
    .expect("cpu paste");
    for round in 0..2 {
        let got = kernels::cuda::ops::roi_align(&mut gpu, map.view(), &rois, &p).expect("gpu");
        assert!(
            got.iter()
                .zip(want.iter())
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "roi_align round {round}: not bit-identical"
        );
        let got =
            kernels::cuda::ops::box_decode(&mut gpu, &coder, rel.view(), &boxes).expect("gpu");
        // A corner is a centre minus half a width of up to ~1000 px here: a corner near 0
        // carries those terms' f32 rounding (6e-5 per ulp at 1000), and CUDA's expf and ours
        // differ by an ulp; hence the absolute term.
        for (a, b) in got.iter().zip(want_boxes.iter()) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0) + 2e-4,
                "box_decode round {round}: {a} vs {b}"
            );
        }
        let got = kernels::cuda::ops::paste_masks_in_image(
            &mut gpu,
            masks.view(),
            &boxes[..100],
            (800, 1216),
            1,
        )
        .expect("gpu");
        assert!(
            got.iter()
                .zip(want_masks.iter())
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "paste_masks round {round}: not bit-identical"
        );
    }
    println!(
        "staged arguments: roi_align 62 MB in, paste_masks 389 MB out, identical to the CPU ops"
    );
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
