//! A CUDA device through cudarc: context, stream, modules compiled by NVRTC (cached per
//! context), kernel launches with host-to-device and device-to-host copies.
//!
//! Nothing here panics when CUDA is missing: the driver library is looked for first
//! (`cudarc::driver::sys::is_culib_present`, since `CudaContext::new` panics without it), and
//! every call into cudarc runs under `catch_unwind`, so a driver that lacks a symbol cudarc
//! expects becomes an error too.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig,
    PushKernelArg,
};

use super::{nvrtc, Arg, CudaError, Executor, KernelRef, Launch};

/// Whether the CUDA driver library (`libcuda.so`) can be loaded (never panics).
pub(crate) fn driver_present() -> bool {
    catch_unwind(|| {
        // SAFETY: only tries to dlopen the library by its usual names.
        unsafe { cudarc::driver::sys::is_culib_present() }
    })
    .unwrap_or(false)
}

fn driver_err(context: &str) -> impl Fn(cudarc::driver::DriverError) -> CudaError + '_ {
    move |e| CudaError::Driver {
        context: context.to_string(),
        detail: format!("{e:?}"),
    }
}

fn panicked(context: &str) -> CudaError {
    CudaError::Driver {
        context: context.to_string(),
        detail: "cudarc panicked (a symbol missing from the driver library?)".into(),
    }
}

/// A CUDA device that exists, as found by [`probe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub ordinal: usize,
    /// Number of CUDA devices on the machine.
    pub count: usize,
}

/// Checks, without creating a context, that the driver library loads and device `ordinal`
/// exists. Never panics.
pub fn probe(ordinal: usize) -> Result<DeviceInfo, CudaError> {
    if !driver_present() {
        return Err(CudaError::NoDriver);
    }
    let count = catch_unwind(CudaContext::device_count)
        .map_err(|_| panicked("cuDeviceGetCount"))?
        .map_err(|e| {
            CudaError::NoDevice(format!("the CUDA driver reports no usable device ({e:?})"))
        })?;
    let count = usize::try_from(count).unwrap_or(0);
    if ordinal >= count {
        return Err(CudaError::NoDevice(format!(
            "device {ordinal} does not exist ({count} CUDA device(s) found)"
        )));
    }
    Ok(DeviceInfo { ordinal, count })
}

/// A CUDA context on one device with its default stream, the modules loaded into it, and a
/// cuBLAS handle made on first use.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    blas: Option<CudaBlas>,
    name: String,
    /// Whether kernels and products are bracketed by CUDA events ([`Gpu::set_timing`]).
    timing: bool,
    /// Device nanoseconds measured by those events since the last [`Gpu::take_device_ms`].
    device_ns: AtomicU64,
}

/// A pair of CUDA events around device work, when timing is on.
struct DeviceSpan(Option<(CudaEvent, CudaEvent)>);

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("device", &self.describe())
            .finish()
    }
}

impl Gpu {
    /// Opens device `ordinal`. An error (never a panic) when there is no driver, no such
    /// device, or no NVRTC library to compile the kernels with.
    pub fn new(ordinal: usize) -> Result<Gpu, CudaError> {
        probe(ordinal)?;
        if !nvrtc::available() {
            return Err(CudaError::NvrtcMissing);
        }
        let ctx = catch_unwind(|| CudaContext::new(ordinal))
            .map_err(|_| panicked("cuCtxCreate"))?
            .map_err(driver_err("creating a context"))?;
        let name = catch_unwind(AssertUnwindSafe(|| ctx.name()))
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| "unknown device".into());
        let stream = ctx.default_stream();
        Ok(Gpu {
            ctx,
            stream,
            modules: Mutex::new(HashMap::new()),
            blas: None,
            name,
            timing: false,
            device_ns: AtomicU64::new(0),
        })
    }

    /// Times every kernel and cuBLAS product from now on with CUDA events (for benchmarks:
    /// [`Gpu::take_device_ms`] then gives the device time alone, without the host work and
    /// the copies to and from the device that each entry point also does).
    pub fn set_timing(&mut self, on: bool) {
        self.timing = on;
    }

    /// Device milliseconds of the kernels and products run since the last call (0 unless
    /// [`Gpu::set_timing`] is on).
    pub fn take_device_ms(&mut self) -> f64 {
        self.device_ns.swap(0, Ordering::Relaxed) as f64 * 1e-6
    }

    /// Records a start event when timing is on.
    fn span_start(&self) -> Result<DeviceSpan, CudaError> {
        if !self.timing {
            return Ok(DeviceSpan(None));
        }
        let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self
            .stream
            .record_event(flags)
            .map_err(driver_err("cuEventRecord"))?;
        let end = self
            .ctx
            .new_event(flags)
            .map_err(driver_err("cuEventCreate"))?;
        Ok(DeviceSpan(Some((start, end))))
    }

    /// Records the end event of `span` (after the device work was queued).
    fn span_end(&self, span: &DeviceSpan) -> Result<(), CudaError> {
        match &span.0 {
            Some((_, end)) => end
                .record(&self.stream)
                .map_err(driver_err("cuEventRecord")),
            None => Ok(()),
        }
    }

    /// Adds the span's device time (waits for its end event).
    fn span_add(&self, span: DeviceSpan) -> Result<(), CudaError> {
        if let Some((start, end)) = span.0 {
            let ms = start
                .elapsed_ms(&end)
                .map_err(driver_err("cuEventElapsedTime"))?;
            self.device_ns
                .fetch_add((f64::from(ms) * 1e6) as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The device's ordinal.
    pub fn ordinal(&self) -> usize {
        self.ctx.ordinal()
    }

    /// The device's name, e.g. `"NVIDIA H100 80GB HBM3"`.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn function(&self, kernel: &KernelRef) -> Result<CudaFunction, CudaError> {
        let file = kernel.source.file;
        let cached = self.modules.lock().ok().and_then(|m| m.get(file).cloned());
        let module = match cached {
            Some(m) => m,
            None => {
                let ptx = nvrtc::ptx(kernel.source)?;
                let m = catch_unwind(AssertUnwindSafe(|| {
                    self.ctx.load_module(cudarc::nvrtc::Ptx::from_src(ptx))
                }))
                .map_err(|_| panicked("cuModuleLoadData"))?
                .map_err(driver_err(file))?;
                if let Ok(mut mods) = self.modules.lock() {
                    mods.insert(file, m.clone());
                }
                m
            }
        };
        catch_unwind(AssertUnwindSafe(|| module.load_function(kernel.name)))
            .map_err(|_| panicked("cuModuleGetFunction"))?
            .map_err(driver_err(kernel.name))
    }

    fn launch_inner(
        &self,
        kernel: &KernelRef,
        launch: Launch,
        args: &mut [Arg<'_>],
    ) -> Result<(), CudaError> {
        let func = self.function(kernel)?;
        let s = &self.stream;
        let ctx = kernel.name;
        // Device copies of the arguments, in order. Empty slices get one element so that no
        // zero-byte allocation is made (the kernels never read them).
        enum Dev {
            I32(i32),
            I64(i64),
            F32(f32),
            BufF32(CudaSlice<f32>),
            BufU8(CudaSlice<u8>),
            BufI32(CudaSlice<i32>),
            BufI64(CudaSlice<i64>),
            BufU64(CudaSlice<u64>),
        }
        fn up<T: cudarc::driver::DeviceRepr + Default + Clone>(
            s: &Arc<CudaStream>,
            v: &[T],
        ) -> Result<CudaSlice<T>, cudarc::driver::DriverError> {
            if v.is_empty() {
                s.clone_htod(&[T::default()][..])
            } else {
                s.clone_htod(v)
            }
        }
        let mut dev = Vec::with_capacity(args.len());
        for a in args.iter() {
            let d = match a {
                Arg::I32(v) => Dev::I32(*v),
                Arg::I64(v) => Dev::I64(*v),
                Arg::F32(v) => Dev::F32(*v),
                Arg::InF32(v) => Dev::BufF32(up(s, v).map_err(driver_err(ctx))?),
                Arg::InU8(v) => Dev::BufU8(up(s, v).map_err(driver_err(ctx))?),
                Arg::InI64(v) => Dev::BufI64(up(s, v).map_err(driver_err(ctx))?),
                Arg::OutF32(v) => {
                    Dev::BufF32(s.alloc_zeros(v.len().max(1)).map_err(driver_err(ctx))?)
                }
                Arg::OutI32(v) => {
                    Dev::BufI32(s.alloc_zeros(v.len().max(1)).map_err(driver_err(ctx))?)
                }
                Arg::OutI64(v) => {
                    Dev::BufI64(s.alloc_zeros(v.len().max(1)).map_err(driver_err(ctx))?)
                }
                Arg::OutU64(v) => {
                    Dev::BufU64(s.alloc_zeros(v.len().max(1)).map_err(driver_err(ctx))?)
                }
            };
            dev.push(d);
        }
        let span = self.span_start()?;
        {
            let mut b = s.launch_builder(&func);
            for d in &dev {
                match d {
                    Dev::I32(v) => b.arg(v),
                    Dev::I64(v) => b.arg(v),
                    Dev::F32(v) => b.arg(v),
                    Dev::BufF32(v) => b.arg(v),
                    Dev::BufU8(v) => b.arg(v),
                    Dev::BufI32(v) => b.arg(v),
                    Dev::BufI64(v) => b.arg(v),
                    Dev::BufU64(v) => b.arg(v),
                };
            }
            let cfg = LaunchConfig {
                grid_dim: launch.grid,
                block_dim: launch.block,
                shared_mem_bytes: 0,
            };
            // SAFETY: the argument list matches the kernel's parameters (the same lists run
            // under the CPU emulation, which checks them against the C++ signature); every
            // buffer holds at least as many elements as the kernel indexes.
            unsafe { b.launch(cfg) }.map_err(|e| CudaError::Launch {
                kernel: kernel.name.into(),
                detail: format!("{e:?}"),
            })?;
        }
        self.span_end(&span)?;
        for (a, d) in args.iter_mut().zip(&dev) {
            match (a, d) {
                (Arg::OutF32(h), Dev::BufF32(v)) if !h.is_empty() => s.memcpy_dtoh(v, &mut **h),
                (Arg::OutI32(h), Dev::BufI32(v)) if !h.is_empty() => s.memcpy_dtoh(v, &mut **h),
                (Arg::OutI64(h), Dev::BufI64(v)) if !h.is_empty() => s.memcpy_dtoh(v, &mut **h),
                (Arg::OutU64(h), Dev::BufU64(v)) if !h.is_empty() => s.memcpy_dtoh(v, &mut **h),
                _ => Ok(()),
            }
            .map_err(driver_err(ctx))?;
        }
        s.synchronize().map_err(driver_err(ctx))?;
        self.span_add(span)
    }
}

impl Gpu {
    /// The cuBLAS handle, created on first use (an error when libcublas cannot be loaded).
    fn blas(&mut self) -> Result<&CudaBlas, CudaError> {
        if self.blas.is_none() {
            let present = catch_unwind(|| {
                // SAFETY: only tries to dlopen the library by its usual names.
                unsafe { cudarc::cublas::sys::is_culib_present() }
            })
            .unwrap_or(false);
            if !present {
                return Err(CudaError::Driver {
                    context: "cuBLAS".into(),
                    detail: "libcublas cannot be loaded (install the CUDA toolkit or the PyPI wheel nvidia-cublas-cu12 and add its lib directory to LD_LIBRARY_PATH)".into(),
                });
            }
            let stream = self.stream.clone();
            let blas = catch_unwind(AssertUnwindSafe(|| CudaBlas::new(stream)))
                .map_err(|_| panicked("cublasCreate"))?
                .map_err(|e| CudaError::Driver {
                    context: "cublasCreate".into(),
                    detail: format!("{e:?}"),
                })?;
            self.blas = Some(blas);
        }
        self.blas.as_ref().ok_or_else(|| panicked("cuBLAS handle"))
    }

    fn sgemm_inner(
        &mut self,
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
    ) -> Result<(), CudaError> {
        let dim = |v: usize| {
            i32::try_from(v).map_err(|_| {
                CudaError::invalid("sgemm", format!("dimension {v} exceeds cuBLAS's int range"))
            })
        };
        let (mi, ni, ki) = (dim(m)?, dim(n)?, dim(k)?);
        if a.len() != m * k || b.len() != k * n || c.len() != m * n {
            return Err(CudaError::invalid(
                "sgemm",
                format!(
                    "buffers of {}, {} and {} values do not fit {m}x{k} · {k}x{n}",
                    a.len(),
                    b.len(),
                    c.len()
                ),
            ));
        }
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            c.fill(0.0);
            return Ok(());
        }
        let s = self.stream.clone();
        let ctx = "sgemm";
        let da = s.clone_htod(a).map_err(driver_err(ctx))?;
        let db = s.clone_htod(b).map_err(driver_err(ctx))?;
        let mut dc = s.alloc_zeros::<f32>(m * n).map_err(driver_err(ctx))?;
        // Row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ: cuBLAS computes the n x m column-major
        // product of b (n x k, ld n) and a (k x m, ld k), which is c row-major.
        let cfg = GemmConfig {
            transa: cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_N,
            transb: cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_N,
            m: ni,
            n: mi,
            k: ki,
            alpha: 1.0f32,
            lda: ni,
            ldb: ki,
            beta: 0.0f32,
            ldc: ni,
        };
        self.blas()?;
        let span = self.span_start()?;
        let blas = self.blas()?;
        // SAFETY: the device buffers hold exactly n·k, k·m and n·m values, matching the
        // dimensions and leading dimensions of `cfg`.
        unsafe { blas.gemm(cfg, &db, &da, &mut dc) }.map_err(|e| CudaError::Driver {
            context: "cublasSgemm".into(),
            detail: format!("{e:?}"),
        })?;
        self.span_end(&span)?;
        s.memcpy_dtoh(&dc, c).map_err(driver_err(ctx))?;
        s.synchronize().map_err(driver_err(ctx))?;
        self.span_add(span)
    }
}

impl Executor for Gpu {
    fn sgemm(
        &mut self,
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
    ) -> Result<(), CudaError> {
        catch_unwind(AssertUnwindSafe(|| self.sgemm_inner(m, n, k, a, b, c)))
            .unwrap_or_else(|_| Err(panicked("cublasSgemm")))
    }

    fn launch(
        &mut self,
        kernel: &KernelRef,
        launch: Launch,
        args: &mut [Arg<'_>],
    ) -> Result<(), CudaError> {
        catch_unwind(AssertUnwindSafe(|| self.launch_inner(kernel, launch, args)))
            .unwrap_or_else(|_| Err(panicked(kernel.name)))
    }

    fn describe(&self) -> String {
        format!("cuda:{} ({})", self.ordinal(), self.name)
    }
}
