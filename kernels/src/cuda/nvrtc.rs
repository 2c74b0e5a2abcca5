//! Run-time compilation of the CUDA sources to PTX with NVRTC (through cudarc, which loads
//! `libnvrtc.so.12` with `dlopen` on first use).
//!
//! Each `.cu` file is compiled on its own, as `common.cuh` followed by
//! `#line 1 "<file>.cu"` and the file, so diagnostics name the file and line. Options:
//! `--gpu-architecture=compute_80` (PTX that the driver JIT-compiles for Ampere and newer),
//! `--fmad=false` (no contraction of `a * b + c`: results match the CPU references and the CPU
//! emulation; kernels that want a fused multiply-add call `fmaf`), `--std=c++17`.

use std::collections::HashMap;
use std::ffi::{c_char, CString};
use std::sync::{Mutex, OnceLock};

use cudarc::nvrtc::result as nvrtc_result;

use super::{CudaError, CudaSource, COMMON};

/// Virtual architecture the PTX is compiled for.
pub const ARCH: &str = "compute_80";

/// NVRTC options used for every source (besides `--gpu-architecture`).
pub const OPTIONS: &[&str] = &["--fmad=false", "--std=c++17"];

/// Whether the NVRTC library can be loaded (never panics).
pub fn available() -> bool {
    std::panic::catch_unwind(|| {
        // SAFETY: only tries to dlopen the library by its usual names.
        unsafe { cudarc::nvrtc::sys::is_culib_present() }
    })
    .unwrap_or(false)
}

/// NVRTC's version `(major, minor)`, or `None` when the library cannot be loaded.
pub fn version() -> Option<(i32, i32)> {
    if !available() {
        return None;
    }
    std::panic::catch_unwind(|| {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: the library is present; both pointers are valid for writes.
        let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
        (r == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS).then_some((major, minor))
    })
    .ok()
    .flatten()
}

/// The program text NVRTC compiles for `src`: `common.cuh`, a `#line` directive, the file.
pub fn program_text(src: &CudaSource) -> String {
    format!("{COMMON}\n#line 1 \"{}\"\n{}", src.file, src.code)
}

/// The result of a compilation: PTX and NVRTC's log (warnings; empty for a clean source).
#[derive(Clone, Debug)]
pub struct Compiled {
    pub ptx: String,
    pub log: String,
}

fn c_text(v: &[c_char]) -> String {
    let bytes: Vec<u8> = v
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Compiles `src` (with `common.cuh` prepended) for `arch` (e.g. `"compute_80"`). An error
/// carries NVRTC's log; on success the log holds any warnings.
pub fn compile(src: &CudaSource, arch: &str) -> Result<Compiled, CudaError> {
    compile_text(src.file, &program_text(src), arch)
}

/// Compiles a whole program text named `file`; see [`compile`].
pub fn compile_text(file: &str, text: &str, arch: &str) -> Result<Compiled, CudaError> {
    if !available() {
        return Err(CudaError::NvrtcMissing);
    }
    let fail = |log: String| CudaError::Compile {
        file: file.to_string(),
        log,
    };
    let code = CString::new(text).map_err(|_| fail("the source contains a NUL byte".into()))?;
    let name = CString::new(file).map_err(|_| fail("the file name contains a NUL byte".into()))?;
    let mut options: Vec<String> = vec![format!("--gpu-architecture={arch}")];
    options.extend(OPTIONS.iter().map(|s| s.to_string()));
    if options.iter().any(|o| o.contains('\0')) {
        return Err(fail("an option contains a NUL byte".into()));
    }
    let run = || -> Result<Compiled, CudaError> {
        let prog = nvrtc_result::create_program(code.as_c_str(), Some(name.as_c_str()))
            .map_err(|e| fail(format!("nvrtcCreateProgram: {e:?}")))?;
        // SAFETY: `prog` was just created and is destroyed exactly once below; `code` and
        // `name` outlive it.
        let compiled = unsafe { nvrtc_result::compile_program(prog, &options) };
        // SAFETY: as above.
        let log = unsafe { nvrtc_result::get_program_log(prog) }
            .map(|l| c_text(&l))
            .unwrap_or_default();
        let ptx = match compiled {
            // SAFETY: as above; the program compiled.
            Ok(()) => unsafe { nvrtc_result::get_ptx(prog) }
                .map(|p| c_text(&p))
                .map_err(|e| fail(format!("nvrtcGetPTX: {e:?}"))),
            Err(e) => Err(fail(format!("{e:?}\n{log}"))),
        };
        // SAFETY: `prog` is valid and not used after this.
        let _ = unsafe { nvrtc_result::destroy_program(prog) };
        Ok(Compiled { ptx: ptx?, log })
    };
    std::panic::catch_unwind(run).unwrap_or_else(|_| Err(fail("NVRTC panicked".into())))
}

/// The PTX of `src` for [`ARCH`], compiled once per process and cached.
pub fn ptx(src: &CudaSource) -> Result<String, CudaError> {
    static CACHE: OnceLock<Mutex<HashMap<&'static str, String>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(p) = cache.lock().ok().and_then(|c| c.get(src.file).cloned()) {
        return Ok(p);
    }
    let compiled = compile(src, ARCH)?;
    if let Ok(mut c) = cache.lock() {
        c.insert(src.file, compiled.ptx.clone());
    }
    Ok(compiled.ptx)
}
