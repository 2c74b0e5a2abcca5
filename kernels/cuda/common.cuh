// common.cuh: device helpers shared by every kernel in kernels/cuda/.
//
// This file is prepended to each .cu source before NVRTC compiles it (kernels/src/cuda/nvrtc.rs,
// followed by a `#line 1 "<file>.cu"` directive so diagnostics name the right line), and it is
// included once before all .cu sources when kernels/cuda_emu compiles them as C++ against its
// shim.h. So it must use only what both provide: no #include, `long long` rather than
// <cstdint> types, math through the CUDA builtins (expf, floorf, ceilf, fmaf) that shim.h maps
// to <cmath>.
//
// Floating point: kernels are compiled with --fmad=false (NVRTC) and -ffp-contract=off (C++),
// so `a * b + c` rounds twice, as in the Rust CPU references; where a reference uses a fused
// multiply-add, the kernel calls fmaf explicitly.

#define VP_DEVICE __device__ __forceinline__

// Grid-stride loops: elementwise kernels use 256 threads per block.
#define VP_THREADS 256

// std::max / std::min of C++ as torchvision's CPU kernels use them: on NaN the first
// argument is returned.
VP_DEVICE float vp_cxx_max(float a, float b) { return (a < b) ? b : a; }
VP_DEVICE float vp_cxx_min(float a, float b) { return (b < a) ? b : a; }

// torch.maximum / torch.minimum: NaN if either argument is NaN.
VP_DEVICE float vp_nan() { return __int_as_float(0x7fc00000); }
VP_DEVICE float vp_neg_inf() { return __int_as_float((int)0xff800000u); }
VP_DEVICE bool vp_isnan(float a) { return a != a; }
VP_DEVICE float vp_nan_max(float a, float b) {
  return (vp_isnan(a) || vp_isnan(b)) ? vp_nan() : ((a < b) ? b : a);
}
VP_DEVICE float vp_nan_min(float a, float b) {
  return (vp_isnan(a) || vp_isnan(b)) ? vp_nan() : ((b < a) ? b : a);
}

// torch.clamp(x, min=lo) and torch.clamp(x, max=hi): NaN stays NaN.
VP_DEVICE float vp_clamp_min(float x, float lo) { return (x < lo) ? lo : x; }
VP_DEVICE float vp_clamp_max(float x, float hi) { return (x > hi) ? hi : x; }

VP_DEVICE long long vp_min_ll(long long a, long long b) { return a < b ? a : b; }
VP_DEVICE int vp_min_i(int a, int b) { return a < b ? a : b; }

// Index of this thread in a 1-D grid, and the grid's total thread count (grid-stride loops).
VP_DEVICE long long vp_global_index() {
  return (long long)blockIdx.x * (long long)blockDim.x + (long long)threadIdx.x;
}
VP_DEVICE long long vp_grid_stride() { return (long long)blockDim.x * (long long)gridDim.x; }
