//! Runs the CUDA kernels of `kernels/cuda/*.cu` on the CPU, under a small emulation of the
//! CUDA execution model, so that their logic can be checked without a GPU.
//!
//! `build.rs` compiles the same `.cu` files as C++ against `shim.h` (which supplies
//! `threadIdx`/`blockIdx`/`blockDim`/`gridDim`, `__shared__`, `__syncthreads()` through
//! cooperative fibers, atomics, `__ldg` and the math builtins) into a static library with one
//! entry point, `vp_emu_launch`, that takes arguments the way the CUDA driver's
//! `cuLaunchKernel` does. [`Emu`] implements [`kernels::cuda::Executor`] on top of it, so the
//! GPU entry points of [`kernels::cuda::ops`] (validation, launch shapes, host-side passes)
//! run unchanged, with the emulation in place of the device.
//!
//! The emulation also enforces the launch limits of a real GPU (block size, grid size) and
//! checks every argument list against the kernel's C++ parameter types, so mistakes in the
//! host code show up here before they reach a GPU.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

use kernels::cuda::{signature, Arg, CudaError, Executor, KernelRef, Launch};

extern "C" {
    fn vp_emu_launch(
        name: *const c_char,
        grid: *const u32,
        block: *const u32,
        signature: *const c_char,
        args: *mut *mut c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn vp_emu_kernel_count() -> c_int;
    fn vp_emu_kernel_name(i: c_int) -> *const c_char;
}

/// The names of every kernel compiled into the emulation (all `extern "C" __global__`
/// functions of `kernels/cuda/*.cu`).
pub fn kernel_names() -> Vec<String> {
    // SAFETY: plain queries of a static table; names are NUL-terminated literals.
    unsafe {
        (0..vp_emu_kernel_count())
            .filter_map(|i| {
                let p = vp_emu_kernel_name(i);
                (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
            })
            .collect()
    }
}

/// The CPU emulation of a CUDA device. Blocks run one after another on the calling thread;
/// threads of a block run as plain calls, or as fibers for kernels that use barriers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Emu;

/// The storage of one argument value, whose address is passed to the kernel.
enum Slot {
    I32(i32),
    I64(i64),
    F32(f32),
    Ptr(*mut c_void),
}

impl Executor for Emu {
    /// cuBLAS is not ours to emulate: the CPU GEMM stands in for it.
    fn sgemm(
        &mut self,
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
    ) -> Result<(), CudaError> {
        use kernels::layers::gemm::{sgemm, MatMut, MatRef};
        let a = MatRef::row_major(a, m, k, k)?;
        let b = MatRef::row_major(b, k, n, n)?;
        let c = MatMut::row_major(c, m, n, n)?;
        Ok(sgemm(a, b, c, false)?)
    }

    fn launch(
        &mut self,
        kernel: &KernelRef,
        launch: Launch,
        args: &mut [Arg<'_>],
    ) -> Result<(), CudaError> {
        let fail = |detail: String| CudaError::Launch {
            kernel: kernel.name.to_string(),
            detail,
        };
        let name = CString::new(kernel.name).map_err(|_| fail("bad kernel name".into()))?;
        let sig = CString::new(signature(args)).map_err(|_| fail("bad signature".into()))?;
        // Values first (their addresses must stay fixed), then the pointer array.
        let mut slots: Vec<Slot> = args
            .iter_mut()
            .map(|a| match a {
                Arg::I32(v) => Slot::I32(*v),
                Arg::I64(v) => Slot::I64(*v),
                Arg::F32(v) => Slot::F32(*v),
                Arg::InF32(s) => Slot::Ptr(s.as_ptr() as *mut c_void),
                Arg::InU8(s) => Slot::Ptr(s.as_ptr() as *mut c_void),
                Arg::InI64(s) => Slot::Ptr(s.as_ptr() as *mut c_void),
                Arg::OutF32(s) => Slot::Ptr(s.as_mut_ptr() as *mut c_void),
                Arg::OutI32(s) => Slot::Ptr(s.as_mut_ptr() as *mut c_void),
                Arg::OutI64(s) => Slot::Ptr(s.as_mut_ptr() as *mut c_void),
                Arg::OutU64(s) => Slot::Ptr(s.as_mut_ptr() as *mut c_void),
            })
            .collect();
        let mut ptrs: Vec<*mut c_void> = slots
            .iter_mut()
            .map(|s| match s {
                Slot::I32(v) => v as *mut i32 as *mut c_void,
                Slot::I64(v) => v as *mut i64 as *mut c_void,
                Slot::F32(v) => v as *mut f32 as *mut c_void,
                Slot::Ptr(p) => p as *mut *mut c_void as *mut c_void,
            })
            .collect();
        let grid = [launch.grid.0, launch.grid.1, launch.grid.2];
        let block = [launch.block.0, launch.block.1, launch.block.2];
        let mut err = vec![0 as c_char; 1024];
        // SAFETY: `ptrs[i]` points to a live value of the type the signature letter names
        // (checked against the kernel's parameter list before the call); the slices behind
        // the pointers are borrowed from `args` for the whole call. The kernels index them
        // within the sizes the calling op allocated (which the tests check against the CPU).
        let rc = unsafe {
            vp_emu_launch(
                name.as_ptr(),
                grid.as_ptr(),
                block.as_ptr(),
                sig.as_ptr(),
                ptrs.as_mut_ptr(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            // SAFETY: the C++ side always NUL-terminates within `err`.
            let msg = unsafe { CStr::from_ptr(err.as_ptr()) }
                .to_string_lossy()
                .into_owned();
            Err(fail(msg))
        }
    }

    fn describe(&self) -> String {
        "CPU emulation of CUDA (cuda-emu)".into()
    }
}
