//! CUDA backend: kernels in kernels/cuda/*.cu compiled at run time by NVRTC and launched through cudarc.
//!
//! # Layout
//!
//! - The CUDA C sources live in `kernels/cuda/*.cu` and are embedded in the binary
//!   ([`SOURCES`], [`COMMON`]). Nothing CUDA is needed to build: `cudarc` loads `libcuda` and
//!   `libnvrtc` with `dlopen` when they are first used.
//! - [`nvrtc`] compiles a source to PTX (architecture `compute_80`, `--fmad=false`), with the
//!   shared helpers of `common.cuh` prepended; PTX is cached per process.
//! - [`Gpu`] owns a CUDA context and stream, loads modules (cached per context) and launches
//!   kernels. [`Gpu::new`] returns an error, never panics, when no driver, device or NVRTC
//!   library exists.
//! - [`ops`] has the GPU entry points of the hot ops, mirroring the CPU ops of
//!   [`crate::ops`] and [`crate::layers::preprocess`]: same arguments, same validation (the
//!   CPU code's own checks), same results. They are generic over an [`Executor`], the thing
//!   that runs a kernel: [`Gpu`] on a real device, or the CPU emulation of the CUDA execution
//!   model in the `cuda-emu` crate, which compiles the same `.cu` files as C++. So the host
//!   code (validation, sorting, launch shapes, the greedy pass of NMS) is exercised in both.
//!
//! # Data movement (first version)
//!
//! Every entry point takes host data and returns host data: each launch copies its inputs to
//! the device and its outputs back ([`Arg`]). This keeps the API identical to the CPU ops and
//! is correct, but a pipeline that chains several ops on the GPU pays a round trip per op;
//! device-resident tensors are the next step.
//!
//! See `docs/CUDA.md` for how the kernels are compiled and checked without a GPU.

use crate::layers::LayerError;
use crate::ops::OpError;

mod gpu;
pub mod nvrtc;
pub mod ops;

pub use gpu::{probe, DeviceInfo, Gpu};

/// One CUDA C source file of `kernels/cuda/`.
#[derive(Debug, PartialEq, Eq)]
pub struct CudaSource {
    /// File name, e.g. `"roi_align.cu"`.
    pub file: &'static str,
    /// The file's text.
    pub code: &'static str,
}

/// The device helpers prepended to every source (`kernels/cuda/common.cuh`).
pub const COMMON: &str = include_str!("../../cuda/common.cuh");

macro_rules! sources {
    ($($id:ident => $file:literal),* $(,)?) => {
        $(
            #[doc = concat!("`kernels/cuda/", $file, "`.")]
            pub const $id: CudaSource = CudaSource { file: $file, code: include_str!(concat!("../../cuda/", $file)) };
        )*
        /// Every `.cu` file of `kernels/cuda/`.
        pub const SOURCES: &[&CudaSource] = &[$(&$id),*];
    };
}

sources! {
    PREPROCESS_CU => "preprocess.cu",
    ROI_ALIGN_CU => "roi_align.cu",
    NMS_CU => "nms.cu",
    BOX_DECODE_CU => "box_decode.cu",
    PASTE_MASKS_CU => "paste_masks.cu",
    YOLACT_CU => "yolact.cu",
    HEATMAP_CU => "heatmap.cu",
    CONV_CU => "conv.cu",
    TRANSFORMER_CU => "transformer.cu",
    DEFORM_CONV_CU => "deform_conv.cu",
    CORNER_POOL_CU => "corner_pool.cu",
}

/// A kernel: its `extern "C"` name and the source that defines it.
#[derive(Debug, PartialEq, Eq)]
pub struct KernelRef {
    pub source: &'static CudaSource,
    pub name: &'static str,
}

pub const K_PREPROCESS: KernelRef = KernelRef {
    source: &PREPROCESS_CU,
    name: "preprocess_u8_hwc_to_chw",
};
pub const K_ROI_ALIGN: KernelRef = KernelRef {
    source: &ROI_ALIGN_CU,
    name: "roi_align_forward",
};
pub const K_NMS_MASK: KernelRef = KernelRef {
    source: &NMS_CU,
    name: "nms_mask",
};
pub const K_BOX_DECODE: KernelRef = KernelRef {
    source: &BOX_DECODE_CU,
    name: "box_decode",
};
pub const K_PASTE_MASKS: KernelRef = KernelRef {
    source: &PASTE_MASKS_CU,
    name: "paste_masks",
};
pub const K_YOLACT_ASSEMBLE: KernelRef = KernelRef {
    source: &YOLACT_CU,
    name: "yolact_assemble",
};
pub const K_HEATMAP_NMS: KernelRef = KernelRef {
    source: &HEATMAP_CU,
    name: "heatmap_nms",
};
pub const K_HEATMAP_CANDIDATES: KernelRef = KernelRef {
    source: &HEATMAP_CU,
    name: "heatmap_candidates",
};

pub const K_CONV_IM2COL: KernelRef = KernelRef {
    source: &CONV_CU,
    name: "conv_im2col",
};
pub const K_BIAS_ACTIVATION: KernelRef = KernelRef {
    source: &CONV_CU,
    name: "bias_activation",
};
pub const K_ATTENTION_SOFTMAX: KernelRef = KernelRef {
    source: &TRANSFORMER_CU,
    name: "attention_softmax",
};
pub const K_LAYER_NORM: KernelRef = KernelRef {
    source: &TRANSFORMER_CU,
    name: "layer_norm",
};
pub const K_DEFORM_IM2COL: KernelRef = KernelRef {
    source: &DEFORM_CONV_CU,
    name: "deform_im2col",
};
pub const K_CORNER_POOL: KernelRef = KernelRef {
    source: &CORNER_POOL_CU,
    name: "corner_pool",
};
/// Every kernel the ops launch.
pub const KERNELS: &[&KernelRef] = &[
    &K_PREPROCESS,
    &K_ROI_ALIGN,
    &K_NMS_MASK,
    &K_BOX_DECODE,
    &K_PASTE_MASKS,
    &K_YOLACT_ASSEMBLE,
    &K_HEATMAP_NMS,
    &K_HEATMAP_CANDIDATES,
    &K_CONV_IM2COL,
    &K_BIAS_ACTIVATION,
    &K_ATTENTION_SOFTMAX,
    &K_LAYER_NORM,
    &K_DEFORM_IM2COL,
    &K_CORNER_POOL,
];

/// Grid and block dimensions of a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
}

/// Most blocks of a 1-D grid-stride launch (the kernels loop over the rest).
pub const MAX_LINEAR_BLOCKS: u64 = 8192;

impl Launch {
    /// A 1-D launch of `threads` per block covering `total` items with a grid-stride loop.
    pub fn linear(total: u64, threads: u32) -> Launch {
        let threads = threads.max(1);
        let blocks = total.div_ceil(threads as u64).clamp(1, MAX_LINEAR_BLOCKS);
        Launch {
            grid: (blocks as u32, 1, 1),
            block: (threads, 1, 1),
        }
    }
}

/// One kernel argument. Scalars are passed by value; `In*` slices are copied to the device
/// before the launch, `Out*` slices are allocated zero-filled on the device and copied back
/// after it (callers pass zero-filled slices, so the CPU emulation, which works in place,
/// sees the same initial contents).
#[derive(Debug)]
pub enum Arg<'a> {
    I32(i32),
    I64(i64),
    F32(f32),
    InF32(&'a [f32]),
    InU8(&'a [u8]),
    InI64(&'a [i64]),
    OutF32(&'a mut [f32]),
    OutI32(&'a mut [i32]),
    OutI64(&'a mut [i64]),
    OutU64(&'a mut [u64]),
}

impl Arg<'_> {
    /// The letter of the C++ parameter type this argument binds to (checked by the CPU
    /// emulation against the kernel's real parameter list): `i` int, `l` long long, `f` float,
    /// `F` const float*, `G` float*, `B` const unsigned char*, `L` const long long*,
    /// `J` int*, `M` long long*, `U` unsigned long long*.
    pub fn code(&self) -> char {
        match self {
            Arg::I32(_) => 'i',
            Arg::I64(_) => 'l',
            Arg::F32(_) => 'f',
            Arg::InF32(_) => 'F',
            Arg::InU8(_) => 'B',
            Arg::InI64(_) => 'L',
            Arg::OutF32(_) => 'G',
            Arg::OutI32(_) => 'J',
            Arg::OutI64(_) => 'M',
            Arg::OutU64(_) => 'U',
        }
    }
}

/// The parameter signature of an argument list (see [`Arg::code`]).
pub fn signature(args: &[Arg<'_>]) -> String {
    args.iter().map(Arg::code).collect()
}

/// Something that runs kernels of `kernels/cuda/`: a [`Gpu`], or the CPU emulation of the
/// `cuda-emu` crate.
pub trait Executor {
    /// Runs `kernel` with `args` (copying inputs in and outputs out, see [`Arg`]) and waits for
    /// it to finish.
    fn launch(
        &mut self,
        kernel: &KernelRef,
        launch: Launch,
        args: &mut [Arg<'_>],
    ) -> Result<(), CudaError>;

    /// `c = a · b` for row-major `a` (`m x k`), `b` (`k x n`) and `c` (`m x n`): cuBLAS SGEMM on
    /// a [`Gpu`], the CPU GEMM under the emulation (cuBLAS is NVIDIA's library, not a kernel
    /// of ours, so there is nothing of ours to emulate).
    fn sgemm(
        &mut self,
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
    ) -> Result<(), CudaError>;
    /// What runs the kernels, for reports (e.g. `"cuda:0 (NVIDIA H100)"`).
    fn describe(&self) -> String;
}

/// Errors of the CUDA backend.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// The CUDA driver library (`libcuda.so`) cannot be loaded.
    #[error("no CUDA driver: the CUDA driver library (libcuda.so) cannot be loaded")]
    NoDriver,
    /// The driver loads but there is no device with that ordinal.
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    /// The NVRTC library (libnvrtc.so.12) cannot be loaded.
    #[error("NVRTC (libnvrtc.so.12) cannot be loaded: install the CUDA toolkit or the PyPI wheel nvidia-cuda-nvrtc-cu12 and add its lib directory to LD_LIBRARY_PATH")]
    NvrtcMissing,
    /// A CUDA source did not compile (or compiled with diagnostics where none are allowed).
    #[error("NVRTC could not compile {file}:\n{log}")]
    Compile { file: String, log: String },
    /// An error reported by the CUDA driver.
    #[error("CUDA driver error in {context}: {detail}")]
    Driver { context: String, detail: String },
    /// A kernel launch failed (bad configuration, bad arguments, or an error inside the
    /// emulation).
    #[error("launch of {kernel} failed: {detail}")]
    Launch { kernel: String, detail: String },
    /// The input does not fit a GPU op (sizes beyond the kernels' index ranges, ...).
    #[error("{op}: {detail}")]
    Invalid { op: &'static str, detail: String },
    #[error(transparent)]
    Op(#[from] OpError),
    #[error(transparent)]
    Layer(#[from] LayerError),
}

impl CudaError {
    pub(crate) fn invalid(op: &'static str, detail: impl Into<String>) -> CudaError {
        CudaError::Invalid {
            op,
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_is_declared_in_its_source() {
        for k in KERNELS {
            let decl = format!("{}(", k.name);
            assert!(
                k.source.code.contains("extern \"C\" __global__") && k.source.code.contains(&decl),
                "{} not found in {}",
                k.name,
                k.source.file
            );
        }
        // Every .cu file of kernels/cuda/ is embedded (and so compiled by the NVRTC check).
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cuda");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .expect("kernels/cuda")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".cu"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = SOURCES.iter().map(|s| s.file.to_string()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
    }

    #[test]
    fn linear_launch_shapes() {
        assert_eq!(Launch::linear(0, 256).grid, (1, 1, 1));
        assert_eq!(Launch::linear(257, 256).grid, (2, 1, 1));
        assert_eq!(
            Launch::linear(u64::MAX, 256).grid.0 as u64,
            MAX_LINEAR_BLOCKS
        );
        let mut v = [0f32; 2];
        let args = [Arg::I32(1), Arg::InF32(&[1.0]), Arg::OutF32(&mut v)];
        assert_eq!(signature(&args), "iFG");
    }
}
