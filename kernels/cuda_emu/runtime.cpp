// The CPU emulation of the CUDA execution model declared in shim.h: thread-index variables,
// the block scheduler (direct calls, or cooperative ucontext fibers for kernels with
// barriers) and __syncthreads().

#include "shim.h"

#include <memory>

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace vp_emu {
namespace {

constexpr size_t kFiberStack = 64 * 1024;
constexpr unsigned kMaxThreadsPerBlock = 1024;

struct Fiber {
  ucontext_t ctx;
  uint3 tid;
  bool done;
};

struct BlockRun {
  ucontext_t scheduler;
  std::vector<Fiber> fibers;
  size_t current = 0;
  bool cooperative = false;
  const std::function<void()>* body = nullptr;
  std::string error;
};

thread_local BlockRun* t_run = nullptr;
// Fiber stacks, kept per OS thread and reused from launch to launch.
thread_local std::vector<std::unique_ptr<char[]>> t_stacks;

void fiber_entry() {
  BlockRun* run = t_run;
  try {
    (*run->body)();
  } catch (const std::exception& e) {
    if (run->error.empty()) run->error = e.what();
  } catch (...) {
    if (run->error.empty()) run->error = "unknown exception in an emulated thread";
  }
  run->fibers[run->current].done = true;
  // Returning resumes uc_link, the scheduler.
}

struct RunGuard {
  BlockRun* saved;
  explicit RunGuard(BlockRun* run) : saved(t_run) { t_run = run; }
  ~RunGuard() { t_run = saved; }
};

// Prepares a fiber that runs fiber_entry on `stack` and then resumes `link`. Kept out of line:
// getcontext "returns twice" in principle, which would make the caller's locals unsafe.
__attribute__((noinline)) void init_fiber(Fiber& f, char* stack, ucontext_t* link) {
  if (getcontext(&f.ctx) != 0) throw EmuError("getcontext failed");
  f.ctx.uc_stack.ss_sp = stack;
  f.ctx.uc_stack.ss_size = kFiberStack;
  f.ctx.uc_link = link;
  makecontext(&f.ctx, fiber_entry, 0);
}

std::string dims(dim3 d) {
  return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
}

}  // namespace

void syncthreads() {
  BlockRun* run = t_run;
  if (run == nullptr) throw EmuError("__syncthreads() called outside a kernel launch");
  if (!run->cooperative) {
    if ((unsigned long long)blockDim.x * blockDim.y * blockDim.z == 1) return;
    throw EmuError(
        "__syncthreads() reached in a kernel launched in direct mode (its .cu file does not "
        "mention __syncthreads, so the build script did not mark it as using barriers)");
  }
  Fiber& f = run->fibers[run->current];
  if (swapcontext(&f.ctx, &run->scheduler) != 0) throw EmuError("swapcontext failed");
}

void launch(dim3 grid, dim3 block, bool cooperative, const std::function<void()>& body) {
  // The limits a GPU of compute capability 8.x enforces (cudaErrorInvalidConfiguration).
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x == 0 || block.y == 0 || block.z == 0)
    throw EmuError("invalid launch: zero grid " + dims(grid) + " or block " + dims(block));
  if (grid.x > 2147483647u || grid.y > 65535u || grid.z > 65535u)
    throw EmuError("invalid launch: grid " + dims(grid) + " exceeds (2^31-1, 65535, 65535)");
  if (block.x > 1024u || block.y > 1024u || block.z > 64u ||
      (unsigned long long)block.x * block.y * block.z > kMaxThreadsPerBlock)
    throw EmuError("invalid launch: block " + dims(block) + " exceeds 1024 threads");

  const size_t nthreads = (size_t)block.x * block.y * block.z;
  BlockRun run;
  run.cooperative = cooperative;
  run.body = &body;
  RunGuard guard(&run);
  gridDim = grid;
  blockDim = block;

  if (cooperative) {
    while (t_stacks.size() < nthreads) t_stacks.emplace_back(new char[kFiberStack]);
    run.fibers.resize(nthreads);
  }

  for (unsigned bz = 0; bz < grid.z; ++bz) {
    for (unsigned by = 0; by < grid.y; ++by) {
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        blockIdx = uint3{bx, by, bz};
        if (!cooperative) {
          for (unsigned tz = 0; tz < block.z; ++tz)
            for (unsigned ty = 0; ty < block.y; ++ty)
              for (unsigned tx = 0; tx < block.x; ++tx) {
                threadIdx = uint3{tx, ty, tz};
                body();
              }
          continue;
        }
        // One fiber per thread, in threadIdx.x-fastest order.
        size_t t = 0;
        for (unsigned tz = 0; tz < block.z; ++tz)
          for (unsigned ty = 0; ty < block.y; ++ty)
            for (unsigned tx = 0; tx < block.x; ++tx, ++t) {
              Fiber& f = run.fibers[t];
              f.tid = uint3{tx, ty, tz};
              f.done = false;
              init_fiber(f, t_stacks[t].get(), &run.scheduler);
            }
        // Rounds: each live fiber runs to its next barrier or to its end. After a round every
        // live fiber waits at the same barrier, so the next round releases them together.
        size_t live = nthreads;
        while (live > 0) {
          for (size_t i = 0; i < nthreads; ++i) {
            Fiber& f = run.fibers[i];
            if (f.done) continue;
            run.current = i;
            threadIdx = f.tid;
            if (swapcontext(&run.scheduler, &f.ctx) != 0) throw EmuError("swapcontext failed");
            if (f.done) --live;
          }
        }
        if (!run.error.empty()) throw EmuError(run.error);
      }
    }
  }
}

}  // namespace vp_emu
