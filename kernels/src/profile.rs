//! Opt-in timing of the layers (`KERNELS_PROFILE=1`): every convolution, transposed
//! convolution and linear layer adds its wall time to a table keyed by its shape and path,
//! which [`report`] prints. Off by default (one relaxed load per layer call).

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Whether `KERNELS_PROFILE` is set (to anything but `0`).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("KERNELS_PROFILE").is_ok_and(|v| v != "0"))
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
