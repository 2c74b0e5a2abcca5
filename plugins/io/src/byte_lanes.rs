//! Byte comparisons as bit masks, 16 bytes per instruction (SSE2, part of every x86-64
//! CPU) or 32 (AVX2), for the label-map loops of `engine eval pq`: PNG unfiltering and
//! run finding. LLVM does not turn a plain loop of byte comparisons into `pmovmskb`, so
//! the instructions are written out.
//!
//! A hot loop is written once, generic over [`Lanes`], and [`with_lanes!`] runs it with a
//! `Wide` in a function compiled for AVX2 where the CPU has it, and with a `Narrow`
//! otherwise. A `Wide` exists only where [`Wide::detect`] found AVX2.

/// A way to compare bytes. `SPAN` is 16, 32 or 64, and every slice has `SPAN` bytes or
/// more.
pub(crate) trait Lanes: Copy {
    /// How many of the first `SPAN` bytes of `x` and `y` are equal before the first that
    /// differs (`SPAN` if none does). Found chunk by chunk: LLVM splits a 64-bit mask of
    /// two `vpmovmskb` results back into 64 bytes when it only needs its first zero.
    #[inline(always)]
    fn equal_prefix<const SPAN: usize>(self, x: &[u8], y: &[u8]) -> usize {
        self.both_equal_prefix::<SPAN>(x, y, x, y)
    }

    /// How many of the first `SPAN` positions have `x[t] == y[t]` and `u[t] == v[t]`
    /// before the first that does not.
    #[inline(always)]
    fn both_equal_prefix<const SPAN: usize>(self, x: &[u8], y: &[u8], u: &[u8], v: &[u8]) -> usize {
        equal_prefix_by::<Self, SPAN, 16>(self, x, y, u, v)
    }

    /// Bit `t` is set where `x[t] == y[t]` and `u[t] == v[t]`, for `t < SPAN`. The two
    /// comparisons are joined before they become bits: LLVM splits a mask made of two
    /// `vpmovmskb` results joined afterwards back into 64 separate bytes.
    fn both_equal_span<const SPAN: usize>(self, x: &[u8], y: &[u8], u: &[u8], v: &[u8]) -> u64;
}

/// 16 bytes per comparison.
#[derive(Clone, Copy)]
pub(crate) struct Narrow;

/// 32 bytes per comparison. The private field keeps it to [`Wide::detect`].
#[derive(Clone, Copy)]
pub(crate) struct Wide(());

impl Wide {
    /// A `Wide` where the CPU has AVX2.
    pub(crate) fn detect() -> Option<Wide> {
        #[cfg(test)]
        if FORCE_NARROW.get() {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Some(Wide(()));
        }
        None
    }
}

#[cfg(test)]
thread_local! {
    /// Tests set it to run the `Narrow` versions on a CPU with AVX2 too.
    pub(crate) static FORCE_NARROW: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `test` with `Wide` where the CPU has it, then with `Narrow`.
#[cfg(test)]
pub(crate) fn with_each_lanes(test: impl Fn()) {
    for narrow in [false, true] {
        FORCE_NARROW.set(narrow);
        test();
    }
    FORCE_NARROW.set(false);
}

impl Lanes for Narrow {
    #[inline(always)]
    fn both_equal_span<const SPAN: usize>(self, x: &[u8], y: &[u8], u: &[u8], v: &[u8]) -> u64 {
        let mut bits = 0;
        for at in (0..SPAN).step_by(16) {
            let span = at..at + 16;
            let (x, y, u, v) = (
                &x[span.clone()],
                &y[span.clone()],
                &u[span.clone()],
                &v[span],
            );
            bits |= u64::from(both_equal_16(x, y, u, v)) << at;
        }
        bits
    }
}

impl Lanes for Wide {
    #[inline(always)]
    fn both_equal_span<const SPAN: usize>(self, x: &[u8], y: &[u8], u: &[u8], v: &[u8]) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if SPAN >= 32 {
            let (x, y, u, v) = (&x[..SPAN], &y[..SPAN], &u[..SPAN], &v[..SPAN]);
            // SAFETY: a `Wide` is made only by `Wide::detect`, where the CPU has AVX2.
            return unsafe { both_equal_span_avx2::<SPAN>(x, y, u, v) };
        }
        Narrow.both_equal_span::<SPAN>(x, y, u, v)
    }

    #[inline(always)]
    fn both_equal_prefix<const SPAN: usize>(self, x: &[u8], y: &[u8], u: &[u8], v: &[u8]) -> usize {
        if SPAN < 32 {
            return equal_prefix_by::<Self, SPAN, 16>(self, x, y, u, v);
        }
        equal_prefix_by::<Self, SPAN, 32>(self, x, y, u, v)
    }
}

/// [`Lanes::both_equal_prefix`] from `CHUNK`-byte masks, stopping at the first chunk with a
/// difference.
#[inline(always)]
fn equal_prefix_by<L: Lanes, const SPAN: usize, const CHUNK: usize>(
    lanes: L,
    x: &[u8],
    y: &[u8],
    u: &[u8],
    v: &[u8],
) -> usize {
    let all = u64::MAX >> (64 - CHUNK);
    let mut at = 0;
    while at < SPAN {
        let bits = lanes.both_equal_span::<CHUNK>(&x[at..], &y[at..], &u[at..], &v[at..]);
        if bits != all {
            return at + bits.trailing_ones() as usize;
        }
        at += CHUNK;
    }
    SPAN
}

/// Bit `t` is set where `x[t] == y[t]` and `u[t] == v[t]` (16 bytes each).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn both_equal_16(x: &[u8], y: &[u8], u: &[u8], v: &[u8]) -> u32 {
    use std::arch::x86_64::*;
    let (x, y, u, v) = (&x[..16], &y[..16], &u[..16], &v[..16]);
    // SAFETY: each unaligned load reads the 16 bytes of a 16-byte slice; SSE2 is part of
    // every x86-64 CPU.
    unsafe {
        let load = |s: &[u8]| _mm_loadu_si128(s.as_ptr().cast());
        let both = _mm_and_si128(
            _mm_cmpeq_epi8(load(x), load(y)),
            _mm_cmpeq_epi8(load(u), load(v)),
        );
        _mm_movemask_epi8(both) as u32 & 0xffff
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn both_equal_16(x: &[u8], y: &[u8], u: &[u8], v: &[u8]) -> u32 {
    (0..16).fold(0, |bits, t| {
        bits | (u32::from(x[t] == y[t] && u[t] == v[t]) << t)
    })
}

/// [`Lanes::both_equal_span`] with 32-byte comparisons; `SPAN` is 32 or 64 and the slices
/// have exactly `SPAN` bytes.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn both_equal_span_avx2<const SPAN: usize>(x: &[u8], y: &[u8], u: &[u8], v: &[u8]) -> u64 {
    use std::arch::x86_64::*;
    // Plain loops, no closures: a closure would not be compiled for AVX2.
    let mut bits = 0;
    for at in (0..SPAN).step_by(32) {
        let span = at..at + 32;
        let (x, y, u, v) = (
            &x[span.clone()],
            &y[span.clone()],
            &u[span.clone()],
            &v[span],
        );
        // SAFETY: each unaligned load reads the 32 bytes of a 32-byte slice.
        let both = unsafe {
            _mm256_movemask_epi8(_mm256_and_si256(
                _mm256_cmpeq_epi8(
                    _mm256_loadu_si256(x.as_ptr().cast()),
                    _mm256_loadu_si256(y.as_ptr().cast()),
                ),
                _mm256_cmpeq_epi8(
                    _mm256_loadu_si256(u.as_ptr().cast()),
                    _mm256_loadu_si256(v.as_ptr().cast()),
                ),
            ))
        };
        bits |= u64::from(both as u32) << at;
    }
    bits
}

/// `with_lanes!(fn name(args) -> ret => body_fn)` defines `name`, which calls the
/// `#[inline(always)]` function `body_fn::<L: Lanes>(lanes, args)` with a `Wide` inside a
/// function compiled for AVX2 where the CPU has AVX2, and with a `Narrow` otherwise.
macro_rules! with_lanes {
    ($vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:ident) => {
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            if let Some(lanes) = $crate::byte_lanes::Wide::detect() {
                #[target_feature(enable = "avx2")]
                fn wide(lanes: $crate::byte_lanes::Wide, $($arg: $ty),*) $(-> $ret)? {
                    $body(lanes, $($arg),*)
                }
                // SAFETY: `Wide::detect` found AVX2, the feature `wide` was compiled for.
                return unsafe { wide(lanes, $($arg),*) };
            }
            $body($crate::byte_lanes::Narrow, $($arg),*)
        }
    };
}

pub(crate) use with_lanes;

#[cfg(test)]
mod tests {
    use super::*;

    /// Both kinds agree with a byte loop on every span.
    #[test]
    fn masks_equal_a_byte_loop() {
        // y differs from x first at 40 (past a 16- and a 32-byte chunk), then at two of
        // every three bytes; v differs from x first at 37.
        let x: Vec<u8> = (0..64u32).map(|i| (i % 7) as u8).collect();
        let y: Vec<u8> = (0..64)
            .map(|i| x[i] + u8::from(i >= 40 && i % 3 != 0))
            .collect();
        let mut v = x.clone();
        v[37] = 99;
        let want = |n: usize| (0..n).fold(0u64, |b, t| b | u64::from(x[t] == y[t]) << t);
        let both = |n: usize| {
            (0..n).fold(0u64, |b, t| {
                b | u64::from(x[t] == y[t] && x[t] == v[t]) << t
            })
        };
        assert_ne!(want(64), u64::MAX);
        assert_eq!(Narrow.both_equal_span::<16>(&x, &y, &x, &y), want(16));
        assert_eq!(Narrow.both_equal_span::<64>(&x, &y, &x, &y), want(64));
        assert_eq!(Narrow.both_equal_span::<64>(&x, &y, &x, &v), both(64));
        assert_eq!(Narrow.equal_prefix::<64>(&x, &y), 40);
        assert_eq!(Narrow.equal_prefix::<32>(&x, &y), 32);
        assert_eq!(Narrow.both_equal_prefix::<64>(&x, &y, &x, &v), 37);
        if let Some(wide) = Wide::detect() {
            assert_eq!(wide.both_equal_span::<16>(&x, &y, &x, &y), want(16));
            assert_eq!(wide.both_equal_span::<32>(&x, &y, &x, &y), want(32));
            assert_eq!(wide.both_equal_span::<64>(&x, &y, &x, &y), want(64));
            assert_eq!(wide.both_equal_span::<64>(&x, &y, &x, &v), both(64));
            assert_eq!(wide.equal_prefix::<64>(&x, &y), 40);
            assert_eq!(wide.equal_prefix::<16>(&x, &y), 16);
            assert_eq!(wide.both_equal_prefix::<64>(&x, &y, &x, &v), 37);
        }
    }
}
