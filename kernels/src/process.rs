//! The process-wide policies that every binary and plugin library linking `kernels` applies:
//! one allocator policy and one thread budget.
//!
//! Each plugin library is a `cdylib` with its own copy of Rust's standard library, of rayon and
//! of the allocator, so these cannot be set once by the host for everyone. Instead:
//! - every artifact (the `engine` binary, each family library, the benches) declares
//!   [`engine_allocator!`](crate::engine_allocator): mimalloc as its global allocator;
//! - the host calls each library's `configure` (plugin ABI 1.1) once after loading it, and the
//!   library calls [`configure_library`] with the host's thread budget, which sizes the
//!   library's rayon pool and turns mimalloc's purging off.
//!
//! docs/ARCHITECTURE.md ("One allocator policy and one thread budget") gives the measurements
//! behind both choices.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};

pub use mimalloc::MiMalloc;

/// mimalloc, counting the allocations it serves ([`allocations`]), so that a test can show
/// that a planned graph run makes none. The count is one relaxed atomic add per allocation.
pub struct EngineAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to mimalloc, a correct global allocator; the
// counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for EngineAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is `GlobalAlloc::alloc`'s, passed on.
        unsafe { MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }
}

/// Allocations (and reallocations) served so far by the [`EngineAllocator`] of the calling
/// artifact, on every thread; 0 where the artifact declared another allocator.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (v2 and v3 as bundled by
/// libmimalloc-sys 0.1.49, which does not export the constant). We build v2 (feature "v2"):
/// with v3, a thread's first allocation in the second of several libraries that each link
/// mimalloc crashed in `mi_thread_init` (`_mi_subproc`), seen in the rcnn fidelity test.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Declares mimalloc ([`EngineAllocator`], which counts allocations) as the global allocator of the artifact (binary or plugin library) whose
/// crate root invokes it. Stages allocate and free feature maps of tens of MB every frame from
/// several threads; glibc's malloc returns such blocks to the OS and page-faults them back in
/// on every use (~10% of a Mask R-CNN frame, far more when stages overlap). Pair it with
/// [`memory_policy`] (the host does, and [`configure_library`] does in a library).
#[macro_export]
macro_rules! engine_allocator {
    () => {
        #[global_allocator]
        static ENGINE_ALLOCATOR: $crate::process::EngineAllocator =
            $crate::process::EngineAllocator;
    };
}

/// The memory policy of every artifact (binary or plugin library), for the mimalloc linked
/// into the calling artifact and for the process:
///
/// - **Freed pages stay committed.** mimalloc's purging is turned off: freed pages stay
///   committed for the next frame instead of being returned to the OS after a delay (10 ms in
///   mimalloc v2) and faulted in again (a Mask R-CNN frame at 800x1216 took ~41k page faults
///   with purging, ~800 without, and ~8% less time; the resident size stays at its peak,
///   +10%). A pipeline reaches its peak on the first frame anyway.
/// - **No transparent huge pages for the process** (`PR_SET_THP_DISABLE` on Linux). mimalloc
///   advises its 1 GiB arenas `MADV_HUGEPAGE`, and each library links its own mimalloc with
///   its own arenas, so every thread's first allocation in every library faults in a 2 MB page
///   that the kernel must zero, and, where `defrag` is `madvise` (the common default), first
///   compact memory for, synchronously. The demo pipeline (11 nodes on 4 photos) spent 0.2 to
///   1.1 s of system time there, run to run; without huge pages 0.2 s. ResNet-FPN at 800x1216
///   kept its speed (BENCHMARKS.md, "Transparent huge pages").
///
/// Call it before the artifact starts threads of its own: mimalloc's option setters are not
/// thread-safe. The host calls it first thing in `main`; a library in `configure`, which the
/// host calls once, before creating any node of the library.
pub fn memory_policy() {
    // SAFETY: see above: no other thread of this artifact allocates through mimalloc's options
    // at this point; the option index is checked by a test below.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes an integer flag and touches no memory of ours. It
    // fails only on kernels older than 3.15, where huge pages then stay as they are.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Sizes the rayon pool of the calling artifact at `threads` (at least 1). Does nothing if the
/// pool already exists (it is built once, on first use or here). Returns the pool's size.
pub fn use_threads(threads: usize) -> usize {
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build_global();
    rayon::current_num_threads()
}

/// The size of the calling artifact's rayon pool.
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Runs `work` on a thread of the calling artifact's rayon pool (inline when already on
/// one), and waits for it. A node's work called from an engine stage thread should run this
/// way: every parallel loop inside it then starts from within the pool, where the loops'
/// tasks are shared out by work stealing, instead of being handed from the stage thread to
/// the pool and the stage thread woken again when they are done: two context switches per
/// loop, which cost a graph of a hundred small ops a fifth to a half of its time.
pub fn in_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    /// Restores the flag even when the work panics.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            NODE_ROOT.with(|f| f.set(self.0));
        }
    }
    rayon::scope(|_| {
        let _restore = Restore(NODE_ROOT.with(|f| f.replace(true)));
        work()
    })
}

/// Whether helped work is running now, alone: its helpers wait for tasks.
static HELPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the caller runs inside helped work ([`in_pool_helped`]) whose helpers are waiting
/// for tasks (no other work of this artifact has started since): parallel loops may then
/// hand over smaller tasks, as taking one costs a waiting thread about a microsecond rather
/// than a wake-up.
pub fn helped() -> bool {
    use std::sync::atomic::Ordering;
    HELPED.load(Ordering::Relaxed) && IN_FLIGHT.load(Ordering::Relaxed) == 1
}

/// Work of [`in_pool_helped`] in flight in this artifact.
static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// [`in_pool`] with the other threads of the pool kept spinning for `work`'s parallel loops
/// while it runs, when it is the only such work in flight in this artifact (otherwise plain
/// [`in_pool`]).
///
/// A small model's run is a hundred ops of tens of microseconds, each splitting its loop
/// between the threads. An idle rayon worker soon goes to sleep, and waking it for the next
/// loop costs about as long as the loop's share it takes over, so two threads ran such a
/// model barely faster than one. Here a helper task waits in `rayon::yield_now`, taking
/// every task the run's loops share out at once, until the run ends or other work (a second
/// run of the same artifact) starts.
pub fn in_pool_helped<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    /// Counts the run out (and marks it done) even when the work panics.
    struct Leave<'a>(&'a AtomicUsize);
    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::AcqRel);
        }
    }
    /// Ends the help when the work ends, even by a panic.
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            HELPED.store(false, Ordering::Release);
            self.0.store(true, Ordering::Release);
        }
    }
    let alone = IN_FLIGHT.fetch_add(1, Ordering::AcqRel) == 0;
    let _leave = Leave(&IN_FLIGHT);
    if !alone || threads() < 2 {
        return in_pool(work);
    }
    let done = AtomicBool::new(false);
    HELPED.store(true, Ordering::Release);
    in_pool(|| {
        let (r, ()) = rayon::join(
            || {
                let _done = Done(&done);
                work()
            },
            || {
                while !done.load(Ordering::Acquire) && IN_FLIGHT.load(Ordering::Acquire) == 1 {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::hint::spin_loop();
                    }
                }
            },
        );
        r
    })
}

thread_local! {
    /// Whether this thread is running a node's work for [`in_pool`] (rather than a task of a
    /// parallel loop stolen from another thread).
    static NODE_ROOT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the caller is inside a task of a parallel loop: on a rayon worker, other than
/// the one running a node's work for [`in_pool`]. Products that would split themselves over
/// the pool stay on one thread there, as their caller already splits the work (on the root
/// thread a loop's inlined tasks count as outside, which only costs some splitting).
pub fn in_parallel_task() -> bool {
    rayon::current_thread_index().is_some() && !NODE_ROOT.with(|f| f.get())
}

/// What a family library does when the host configures it: the host's thread budget for its
/// rayon pool, and the memory policy ([`memory_policy`]).
pub fn configure_library(threads: usize) {
    memory_policy();
    use_threads(threads);
}

#[cfg(test)]
mod tests {
    use rayon::prelude::*;
    use std::sync::atomic::Ordering;

    /// Helped work returns its result, runs its parallel loops on both threads, lets a second
    /// caller's work through while one is in flight (no deadlock, no lost result), and counts
    /// itself out even when it panics.
    #[test]
    fn helped_work_returns_runs_beside_other_work_and_survives_a_panic() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let sum = |n: u64| {
            (0..n as usize)
                .into_par_iter()
                .with_max_len(64)
                .map(|v| v as u64)
                .sum::<u64>()
        };
        let want = |n: u64| n * (n - 1) / 2;
        pool.install(|| {
            assert_eq!(super::in_pool_helped(|| sum(100_000)), want(100_000));
        });
        std::thread::scope(|s| {
            for t in 0..3u64 {
                let pool = &pool;
                s.spawn(move || {
                    for i in 0..200u64 {
                        let n = 1_000 + 37 * i + t;
                        let got = pool.install(|| super::in_pool_helped(|| sum(n)));
                        assert_eq!(got, want(n));
                    }
                });
            }
        });
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| super::in_pool_helped(|| -> u64 { panic!("work panicked") }))
        }));
        assert!(caught.is_err());
        assert_eq!(super::IN_FLIGHT.load(Ordering::Acquire), 0);
        pool.install(|| assert_eq!(super::in_pool_helped(|| sum(5_000)), want(5_000)));
    }
    #[test]
    fn the_purge_delay_option_index_is_mimallocs() {
        // mimalloc v2's mi_option_purge_delay defaults to 10 (ms); its neighbours
        // (eager_commit_delay: 1, use_numa_nodes: 0) do not, so a shifted index would show.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reading an option.
        let v = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(v, 10);
    }
}
