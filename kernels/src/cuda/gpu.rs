//! A CUDA device through cudarc: context, stream, modules compiled by NVRTC (cached per
//! context), kernel launches with host-to-device and device-to-host copies (large ones through
//! a page-locked staging buffer).
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
    CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr,
    DriverError, LaunchConfig, PinnedHostSlice, PushKernelArg,
};
use rayon::prelude::*;

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
    /// Page-locked host memory that argument copies go through (see [`Staging`]).
    staging: Staging,
}

/// Page-locked host memory that a launch's host arguments are copied through. The driver
/// copies pageable memory at a fraction of the bus's speed (on an H100, 62 MB to the device
/// in 7.6 ms from pageable memory, 1.2 ms from pinned; a parallel host copy into the pinned
/// buffer is faster than the difference), so each launch copies its inputs into this buffer,
/// transfers from it, and copies outputs back out of it. Grown on demand, kept across
/// launches; without it (a failed allocation, small arguments) the copies are direct.
#[derive(Default)]
struct Staging(Option<PinnedHostSlice<u8>>);

/// Launches whose host arguments add up to fewer bytes than this copy them directly: below
/// it, staging did not pay for its extra host copy (box decoding's 3 MB was slower staged).
const STAGING_MIN_BYTES: usize = 4 << 20;

impl Staging {
    /// A pointer to at least `bytes` bytes of pinned memory, or `None` (then copy directly).
    fn get(&mut self, ctx: &Arc<CudaContext>, bytes: usize) -> Option<*mut u8> {
        if bytes < STAGING_MIN_BYTES {
            return None;
        }
        if self.0.as_ref().is_none_or(|b| b.len() < bytes) {
            self.0 = None; // free the smaller buffer first
            let len = bytes.checked_next_power_of_two().unwrap_or(bytes);
            // SAFETY: the memory is zeroed right below, before any slice is made over it.
            // Flags 0: plain pinned memory (write-combined memory is slow for the host to read
            // back outputs from).
            self.0 = catch_unwind(AssertUnwindSafe(|| unsafe {
                ctx.alloc_pinned_with_flags::<u8>(len, 0)
            }))
            .ok()
            .and_then(Result::ok);
            // Zeroed once, so that the typed slices made over it (`staged`) never cover
            // uninitialised memory.
            if let Some(bytes) = self.0.as_mut().and_then(|b| b.as_mut_slice().ok()) {
                bytes.par_chunks_mut(1 << 20).for_each(|c| c.fill(0));
            }
        }
        self.0.as_mut().and_then(|b| b.as_mut_ptr().ok())
    }
}

/// Byte offsets, 64-byte aligned, of host buffers of the given byte sizes in a staging
/// buffer, and the total.
fn staging_layout(buffers: impl Iterator<Item = usize>) -> (Vec<usize>, usize) {
    let mut total = 0;
    let offsets = buffers
        .map(|bytes| {
            let at = total;
            total += bytes.div_ceil(64) * 64;
            at
        })
        .collect();
    (offsets, total)
}

/// `len` values of `T` at byte `off` of the staging buffer `base`.
///
/// # Safety
/// `base` must point to a live staging buffer holding `off + len·size_of::<T>()` bytes, `off`
/// must be a multiple of 64, and no other live slice may overlap the region.
unsafe fn staged<'a, T>(base: *mut u8, off: usize, len: usize) -> &'a mut [T] {
    std::slice::from_raw_parts_mut(base.add(off).cast::<T>(), len)
}

/// Copies `src` into `dst` (same length), in parallel chunks for large buffers.
fn par_copy<T: Copy + Send + Sync>(dst: &mut [T], src: &[T]) {
    const CHUNK: usize = 1 << 18;
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

/// A device copy of `v` (one element if `v` is empty: no zero-byte allocation), through the
/// staging region at byte `off` of `stage` when there is one.
fn upload<T: DeviceRepr + Default + Copy + Send + Sync>(
    s: &Arc<CudaStream>,
    v: &[T],
    stage: Option<*mut u8>,
    off: usize,
) -> Result<CudaSlice<T>, DriverError> {
    match stage {
        Some(base) if !v.is_empty() => {
            // SAFETY: the caller laid out this argument's region at `off` (staging_layout).
            let region = unsafe { staged::<T>(base, off, v.len()) };
            par_copy(region, v);
            // SAFETY: every element is written by the copy below before any kernel reads it.
            let mut d = unsafe { s.alloc::<T>(v.len()) }?;
            s.memcpy_htod(&*region, &mut d)?;
            Ok(d)
        }
        _ if v.is_empty() => s.clone_htod(&[T::default()][..]),
        _ => s.clone_htod(v),
    }
}

/// Starts copying `d` back into `h` (through the staging region at `off` when there is one);
/// [`download_finish`] completes it after the stream is synchronised.
fn download_start<T: DeviceRepr + Copy>(
    s: &Arc<CudaStream>,
    d: &CudaSlice<T>,
    h: &mut [T],
    stage: Option<*mut u8>,
    off: usize,
) -> Result<(), DriverError> {
    if h.is_empty() {
        return Ok(());
    }
    match stage {
        // SAFETY: as in `upload`.
        Some(base) => s.memcpy_dtoh(d, unsafe { staged::<T>(base, off, h.len()) }),
        None => s.memcpy_dtoh(d, h),
    }
}

/// Copies a staged output into `h` (after the stream was synchronised).
fn download_finish<T: Copy + Send + Sync>(h: &mut [T], stage: Option<*mut u8>, off: usize) {
    if let (Some(base), false) = (stage, h.is_empty()) {
        // SAFETY: as in `upload`; the device copy into the region has completed.
        par_copy(h, unsafe { staged::<T>(base, off, h.len()) });
    }
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
            staging: Staging::default(),
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
        &mut self,
        kernel: &KernelRef,
        launch: Launch,
        args: &mut [Arg<'_>],
    ) -> Result<(), CudaError> {
        let func = self.function(kernel)?;
        let ctx = kernel.name;
        // Each host buffer's region in the staging buffer.
        let host_bytes = |a: &Arg<'_>| match a {
            Arg::InF32(v) => v.len() * 4,
            Arg::InU8(v) => v.len(),
            Arg::InI64(v) => v.len() * 8,
            Arg::OutF32(v) => v.len() * 4,
            Arg::OutI32(v) => v.len() * 4,
            Arg::OutI64(v) => v.len() * 8,
            Arg::OutU64(v) => v.len() * 8,
            Arg::I32(_) | Arg::I64(_) | Arg::F32(_) => 0,
        };
        let (offs, total) = staging_layout(args.iter().map(host_bytes));
        let stage = self.staging.get(&self.ctx, total);
        let s = self.stream.clone();
        let s = &s;
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
        let mut dev = Vec::with_capacity(args.len());
        for (a, &off) in args.iter().zip(&offs) {
            let d = match a {
                Arg::I32(v) => Dev::I32(*v),
                Arg::I64(v) => Dev::I64(*v),
                Arg::F32(v) => Dev::F32(*v),
                Arg::InF32(v) => Dev::BufF32(upload(s, v, stage, off).map_err(driver_err(ctx))?),
                Arg::InU8(v) => Dev::BufU8(upload(s, v, stage, off).map_err(driver_err(ctx))?),
                Arg::InI64(v) => Dev::BufI64(upload(s, v, stage, off).map_err(driver_err(ctx))?),
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
        for ((a, d), &off) in args.iter_mut().zip(&dev).zip(&offs) {
            match (a, d) {
                (Arg::OutF32(h), Dev::BufF32(v)) => download_start(s, v, h, stage, off),
                (Arg::OutI32(h), Dev::BufI32(v)) => download_start(s, v, h, stage, off),
                (Arg::OutI64(h), Dev::BufI64(v)) => download_start(s, v, h, stage, off),
                (Arg::OutU64(h), Dev::BufU64(v)) => download_start(s, v, h, stage, off),
                _ => Ok(()),
            }
            .map_err(driver_err(ctx))?;
        }
        s.synchronize().map_err(driver_err(ctx))?;
        for (a, &off) in args.iter_mut().zip(&offs) {
            match a {
                Arg::OutF32(h) => download_finish(h, stage, off),
                Arg::OutI32(h) => download_finish(h, stage, off),
                Arg::OutI64(h) => download_finish(h, stage, off),
                Arg::OutU64(h) => download_finish(h, stage, off),
                _ => {}
            }
        }
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
        let ctx = "sgemm";
        let (offs, total) = staging_layout([a.len() * 4, b.len() * 4, c.len() * 4].into_iter());
        let stage = self.staging.get(&self.ctx, total);
        let s = self.stream.clone();
        let da = upload(&s, a, stage, offs[0]).map_err(driver_err(ctx))?;
        let db = upload(&s, b, stage, offs[1]).map_err(driver_err(ctx))?;
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
        download_start(&s, &dc, c, stage, offs[2]).map_err(driver_err(ctx))?;
        s.synchronize().map_err(driver_err(ctx))?;
        download_finish(c, stage, offs[2]);
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
