//! Check (a) of the CUDA kernels: every `kernels/cuda/*.cu` source compiles to PTX with NVRTC
//! for `compute_80`, with no diagnostic at all (a warning fails the test too), and the PTX
//! defines every kernel the ops launch.
//!
//! Needs `libnvrtc.so.12` on the library path (the PyPI wheel `nvidia-cuda-nvrtc-cu12`, as
//! `.ci/run` installs it); without it the tests print `SKIPPED: ...` and pass.
//! With `VP_REQUIRE_NVRTC=1` (set by `.ci/run`) a missing NVRTC fails instead. With
//! `VP_CUDA_PTX_DIR` set, the PTX files are written there (`.ci/run` then assembles them with
//! `ptxas` for sm_80 and sm_90).

use kernels::cuda::{nvrtc, KERNELS, SOURCES};

const SKIP: &str = "SKIPPED: NVRTC not found (install nvidia-cuda-nvrtc-cu12, see .ci/run)";

fn nvrtc_or_skip() -> bool {
    if nvrtc::available() {
        println!("NVRTC {:?}", nvrtc::version());
        true
    } else {
        let required = std::env::var("VP_REQUIRE_NVRTC").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "VP_REQUIRE_NVRTC=1 but NVRTC (libnvrtc.so.12) cannot be loaded; check LD_LIBRARY_PATH"
        );
        println!("{SKIP}");
        eprintln!("{SKIP}");
        false
    }
}

#[test]
fn every_cuda_source_compiles_cleanly_with_nvrtc() {
    if !nvrtc_or_skip() {
        return;
    }
    let out_dir = std::env::var_os("VP_CUDA_PTX_DIR").map(std::path::PathBuf::from);
    let mut failures = Vec::new();
    for src in SOURCES {
        match nvrtc::compile(src, nvrtc::ARCH) {
            Err(e) => failures.push(format!("{}: {e}", src.file)),
            Ok(c) if !c.log.trim().is_empty() => {
                failures.push(format!("{}: NVRTC diagnostics:\n{}", src.file, c.log))
            }
            Ok(c) => {
                for k in KERNELS.iter().filter(|k| k.source == *src) {
                    if !c.ptx.contains(&format!(".entry {}(", k.name)) {
                        failures.push(format!("{}: no kernel {} in the PTX", src.file, k.name));
                    }
                }
                println!("{}: {} bytes of PTX, no diagnostics", src.file, c.ptx.len());
                if let Some(dir) = &out_dir {
                    std::fs::create_dir_all(dir).expect("create VP_CUDA_PTX_DIR");
                    let path = dir.join(src.file.replace(".cu", ".ptx"));
                    std::fs::write(&path, &c.ptx).expect("write PTX");
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn nvrtc_errors_and_warnings_are_reported() {
    if !nvrtc_or_skip() {
        return;
    }
    let broken = "extern \"C\" __global__ void k(float* x) { x[0] = undefined_thing; }";
    match nvrtc::compile_text("broken.cu", broken, nvrtc::ARCH) {
        Err(kernels::cuda::CudaError::Compile { log, .. }) => {
            assert!(log.contains("undefined_thing"), "{log}")
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
    // A warning does not fail the compilation, but it lands in the log the check above
    // requires to be empty.
    let warns = "extern \"C\" __global__ void k(float* x) { int unused = 3; x[0] = 1.0f; }";
    let c = nvrtc::compile_text("warns.cu", warns, nvrtc::ARCH).expect("compiles");
    assert!(
        c.log.contains("unused"),
        "expected a warning, log: {:?}",
        c.log
    );
}
