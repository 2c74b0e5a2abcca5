// shim.h: a small emulation of the CUDA execution model on the CPU, so that the kernels in
// kernels/cuda/*.cu compile as plain C++ (g++ -x c++ -std=c++17) and run on the host.
//
// What it provides
// - `__global__`, `__device__`, `__host__`, `__forceinline__`, `__launch_bounds__(...)`,
//   `__restrict__` (native in g++), `__shared__`.
// - `threadIdx`, `blockIdx`, `blockDim`, `gridDim` as thread_local globals (uint3/dim3).
// - `__syncthreads()`, `atomicAdd`, `atomicMax`, `atomicMin`, `atomicExch`, `atomicCAS`,
//   `__ldg`, `__int_as_float`, `__float_as_int`, and the single-precision math builtins
//   (expf, logf, floorf, ceilf, fmaf, sqrtf, fabsf, fmaxf, fminf, ...) from <cmath>.
// - `vp_emu::launch(grid, block, cooperative, body)`: runs `body` once per thread of every
//   block, blocks one after another on the calling OS thread.
//
// How __syncthreads works: every thread of a block runs as a cooperative fiber (ucontext:
// makecontext/swapcontext, each fiber with its own 64 KiB stack). A scheduler resumes the live
// fibers of a block one after another; __syncthreads() switches back to the scheduler. When
// every live fiber has either reached the barrier or returned, the next round resumes them
// all, so no thread passes a barrier before all threads of its block arrived there (threads
// that returned no longer count, as on current GPUs). Local variables live on each fiber's own
// stack, so they are per thread, as in CUDA.
//
// `__shared__` is `static thread_local`: one instance per OS thread, shared by all fibers of
// the block being run on it (blocks run one after another, so this is one instance per
// resident block, as on a GPU). Dynamic shared memory (`extern __shared__`) is not supported.
//
// Kernels whose source never calls __syncthreads run in "direct" mode (no fibers: each thread
// is a plain function call, much faster); the build script decides this per .cu file. A
// __syncthreads() reached in direct mode with more than one thread per block is reported as an
// error (an exception caught by the launcher), never silently ignored.
//
// Atomics: blocks and fibers of one launch run on a single OS thread and fibers switch only at
// barriers, so a read-modify-write is already atomic; the GCC __atomic builtins are used anyway.
// Warp intrinsics (__shfl_*, __ballot_sync, ...) are not provided: the kernels do not use them.

#pragma once

#include <math.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include <ucontext.h>

struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static thread_local

extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;

using std::isnan;
using std::isinf;
using std::isfinite;

inline float __int_as_float(int v) {
  float f;
  std::memcpy(&f, &v, sizeof f);
  return f;
}
inline int __float_as_int(float f) {
  int v;
  std::memcpy(&v, &f, sizeof v);
  return v;
}

template <typename T>
inline T __ldg(const T* p) {
  return *p;
}

template <typename T>
inline T atomicAdd(T* p, T v) {
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
inline float atomicAdd(float* p, float v) {
  float old = *p;
  *p = old + v;
  return old;
}
template <typename T>
inline T atomicMax(T* p, T v) {
  T old = *p;
  if (v > old) *p = v;
  return old;
}
template <typename T>
inline T atomicMin(T* p, T v) {
  T old = *p;
  if (v < old) *p = v;
  return old;
}
template <typename T>
inline T atomicExch(T* p, T v) {
  T old = *p;
  *p = v;
  return old;
}
template <typename T>
inline T atomicCAS(T* p, T compare, T v) {
  T old = *p;
  if (old == compare) *p = v;
  return old;
}

namespace vp_emu {

// Thrown by the emulation on misuse (e.g. a barrier in direct mode); the launcher turns it
// into an error for the caller.
struct EmuError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void syncthreads();

// Runs `body` for every thread of every block of a grid. `cooperative`: run the threads of a
// block as fibers so that __syncthreads() works. Throws EmuError on misuse.
void launch(dim3 grid, dim3 block, bool cooperative, const std::function<void()>& body);

}  // namespace vp_emu

inline void __syncthreads() { vp_emu::syncthreads(); }
