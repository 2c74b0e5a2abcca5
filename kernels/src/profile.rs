//! Opt-in timing of the layers (`KERNELS_PROFILE=1`): every convolution, transposed
//! convolution and linear layer adds its wall time to a table keyed by its shape and path,
//! which [`report`] prints. Off by default (one relaxed load per layer call).
//!
//! Each plugin library has its own copy of this table (its own copy of `kernels`), which the
//! host cannot read; so when profiling is on, each artifact prints what is left of its table
//! to stderr when it is unloaded or the process exits.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Whether `KERNELS_PROFILE` is set (to anything but `0`).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let on = std::env::var("KERNELS_PROFILE").is_ok_and(|v| v != "0");
        if on {
            // SAFETY: registers a plain function with the C library; in a shared library
            // glibc runs it when the library is unloaded or the process exits.
            unsafe { atexit(report_at_exit) };
        }
        on
    })
}

extern "C" {
    fn atexit(f: extern "C" fn()) -> std::ffi::c_int;
}

extern "C" fn report_at_exit() {
    let rows = report(1);
    if rows.lines().count() > 1 {
        // One table per library that ran layers (each has its own copy of this module).
        eprintln!("KERNELS_PROFILE totals of one library:\n{rows}");
    }
}

fn table() -> &'static Mutex<BTreeMap<String, (u64, Duration)>> {
    static TABLE: OnceLock<Mutex<BTreeMap<String, (u64, Duration)>>> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// Runs `f`, adding its time under `key()` when profiling is on.
pub fn timed<R>(key: impl FnOnce() -> String, f: impl FnOnce() -> R) -> R {
    if !enabled() {
        return f();
    }
    let t0 = Instant::now();
    let r = f();
    let dt = t0.elapsed();
    let mut t = table().lock().unwrap_or_else(|e| e.into_inner());
    let e = t.entry(key()).or_default();
    e.0 += 1;
    e.1 += dt;
    r
}

/// The table so far, largest total first, times divided by `per` (e.g. the frame count), and
/// cleared.
pub fn report(per: u64) -> String {
    let mut t = table().lock().unwrap_or_else(|e| e.into_inner());
    let mut rows: Vec<_> = std::mem::take(&mut *t).into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1 .1));
    let per = per.max(1);
    let total: Duration = rows.iter().map(|r| r.1 .1).sum();
    let mut out = format!(
        "{:>9} {:>6}  layer (KERNELS_PROFILE; per frame; total {:.1} ms)\n",
        "ms",
        "calls",
        total.as_secs_f64() * 1e3 / per as f64
    );
    for (key, (calls, dt)) in rows {
        out += &format!(
            "{:>9.2} {:>6}  {key}\n",
            dt.as_secs_f64() * 1e3 / per as f64,
            calls / per
        );
    }
    out
}
