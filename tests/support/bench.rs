//! What the families' benchmark examples share: medians and millisecond timers.
//!
//! An example includes it with `#[path = "../../../tests/support/bench.rs"] mod bench;`.
#![allow(dead_code)]

use std::time::Instant;

/// The median (the upper one of an even count) of `v`; NaN for an empty `v`.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Milliseconds since `t`.
pub fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}
