//! Run-time selection of x86 vector extensions for the hot loops of the ops.
//!
//! Hot loops are written as plain `#[inline(always)]` Rust over slices, which LLVM
//! vectorises; [`multiversion!`] compiles such a function a second and third time with
//! AVX-512 and AVX2 enabled and picks the best one the CPU has at run time. Enabling these
//! features never changes results: Rust does not contract `a * b + c` into a fused
//! multiply-add, so every variant performs the same IEEE operations in the same order
//! (an explicit `f32::mul_add` is a fused multiply-add everywhere; with FMA enabled it is
//! one instruction instead of a library call).

#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// `multiversion!(fn name(args) -> ret => inner)` defines `name`, which calls the
/// `#[inline(always)]` function `inner` compiled for AVX-512, AVX2 or the baseline target.
/// Exported (as `kernels::multiversion!`) for the family libraries' own element-wise loops.
#[macro_export]
macro_rules! multiversion {
    ($vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? => $inner:path) => {
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? {
                    $inner($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? {
                    $inner($($arg),*)
                }
                if $crate::__has_avx512() {
                    // SAFETY: the CPU supports every feature `v4` was compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if $crate::__has_avx2() {
                    // SAFETY: the CPU supports AVX2 and FMA, the features `v3` was compiled for.
                    return unsafe { v3($($arg),*) };
                }
            }
            $inner($($arg),*)
        }
    };
}

pub(crate) use crate::multiversion;

/// Transposes 8x8 blocks of `f32` with AVX: `dst[j * ds + i] = src[i * ss + j]` for
/// `i, j < 8`, for each of `blocks` blocks, block `k` starting at `src + k * 8` and
/// `dst + k * 8 * ds` (8 consecutive columns of the source become 8 consecutive rows).
///
/// # Safety
/// The CPU must support AVX ([`has_avx`]); every addressed element must be in bounds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
pub(crate) unsafe fn transpose8x8_blocks(
    src: *const f32,
    ss: usize,
    dst: *mut f32,
    ds: usize,
    blocks: usize,
) {
    use std::arch::x86_64::*;
    for k in 0..blocks {
        let s = src.add(k * 8);
        let d = dst.add(k * 8 * ds);
        let r0 = _mm256_loadu_ps(s);
        let r1 = _mm256_loadu_ps(s.add(ss));
        let r2 = _mm256_loadu_ps(s.add(2 * ss));
        let r3 = _mm256_loadu_ps(s.add(3 * ss));
        let r4 = _mm256_loadu_ps(s.add(4 * ss));
        let r5 = _mm256_loadu_ps(s.add(5 * ss));
        let r6 = _mm256_loadu_ps(s.add(6 * ss));
        let r7 = _mm256_loadu_ps(s.add(7 * ss));
        let t0 = _mm256_unpacklo_ps(r0, r1);
        let t1 = _mm256_unpackhi_ps(r0, r1);
        let t2 = _mm256_unpacklo_ps(r2, r3);
        let t3 = _mm256_unpackhi_ps(r2, r3);
        let t4 = _mm256_unpacklo_ps(r4, r5);
        let t5 = _mm256_unpackhi_ps(r4, r5);
        let t6 = _mm256_unpacklo_ps(r6, r7);
        let t7 = _mm256_unpackhi_ps(r6, r7);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        _mm256_storeu_ps(d, _mm256_permute2f128_ps::<0x20>(u0, u4));
        _mm256_storeu_ps(d.add(ds), _mm256_permute2f128_ps::<0x20>(u1, u5));
        _mm256_storeu_ps(d.add(2 * ds), _mm256_permute2f128_ps::<0x20>(u2, u6));
        _mm256_storeu_ps(d.add(3 * ds), _mm256_permute2f128_ps::<0x20>(u3, u7));
        _mm256_storeu_ps(d.add(4 * ds), _mm256_permute2f128_ps::<0x31>(u0, u4));
        _mm256_storeu_ps(d.add(5 * ds), _mm256_permute2f128_ps::<0x31>(u1, u5));
        _mm256_storeu_ps(d.add(6 * ds), _mm256_permute2f128_ps::<0x31>(u2, u6));
        _mm256_storeu_ps(d.add(7 * ds), _mm256_permute2f128_ps::<0x31>(u3, u7));
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx() -> bool {
    std::arch::is_x86_feature_detected!("avx")
}

/// Splits 64 consecutive values (four vectors) into their four interleaved components:
/// lane `l` of result `j` is value `4l + j` (16 groups of four, e.g. boxes or tile columns);
/// the inverse of [`interleave4_avx512`]. Two two-source permutes and a blend per component.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn deinterleave4_avx512(
    a: [std::arch::x86_64::__m512; 4],
) -> [std::arch::x86_64::__m512; 4] {
    use std::arch::x86_64::*;
    std::array::from_fn(|j| {
        let j = j as i32;
        // Lanes 0-7 from the first 32 values, lanes 8-15 from the next 32: one index vector
        // serves both halves.
        let idx = _mm512_setr_epi32(
            j,
            j + 4,
            j + 8,
            j + 12,
            j + 16,
            j + 20,
            j + 24,
            j + 28,
            j,
            j + 4,
            j + 8,
            j + 12,
            j + 16,
            j + 20,
            j + 24,
            j + 28,
        );
        _mm512_mask_blend_ps(
            0xFF00,
            _mm512_permutex2var_ps(a[0], idx, a[1]),
            _mm512_permutex2var_ps(a[2], idx, a[3]),
        )
    })
}

/// Interleaves four vectors of 16 into 64 consecutive values: value `4l + j` is lane `l` of
/// `y[j]` (16 groups of four, e.g. boxes or output tiles).
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn interleave4_avx512(
    y: [std::arch::x86_64::__m512; 4],
) -> [std::arch::x86_64::__m512; 4] {
    use std::arch::x86_64::*;
    let [y0, y1, y2, y3] = y;
    let t0 = _mm512_unpacklo_ps(y0, y1);
    let t1 = _mm512_unpackhi_ps(y0, y1);
    let t2 = _mm512_unpacklo_ps(y2, y3);
    let t3 = _mm512_unpackhi_ps(y2, y3);
    let pd = _mm512_castps_pd;
    let ps = _mm512_castpd_ps;
    // u_k, 128-bit lane L: group 4L + k.
    let u0 = ps(_mm512_unpacklo_pd(pd(t0), pd(t2)));
    let u1 = ps(_mm512_unpackhi_pd(pd(t0), pd(t2)));
    let u2 = ps(_mm512_unpacklo_pd(pd(t1), pd(t3)));
    let u3 = ps(_mm512_unpackhi_pd(pd(t1), pd(t3)));
    let v0 = _mm512_shuffle_f32x4(u0, u1, 0b01_00_01_00);
    let v1 = _mm512_shuffle_f32x4(u2, u3, 0b01_00_01_00);
    let v2 = _mm512_shuffle_f32x4(u0, u1, 0b11_10_11_10);
    let v3 = _mm512_shuffle_f32x4(u2, u3, 0b11_10_11_10);
    [
        _mm512_shuffle_f32x4(v0, v1, 0b10_00_10_00),
        _mm512_shuffle_f32x4(v0, v1, 0b11_01_11_01),
        _mm512_shuffle_f32x4(v2, v3, 0b10_00_10_00),
        _mm512_shuffle_f32x4(v2, v3, 0b11_01_11_01),
    ]
}

/// [`super::exp_fast`] on 8 lanes with AVX2 and FMA, the same operations in the same order:
/// bit-identical wherever the result is a normal number or infinite. `y · 2^n` is formed as
/// `(y · 2^max(n, -126)) · 2^(n - max(n, -126))`, so a subnormal result may round twice
/// (an ulp of a subnormal).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn exp_avx2(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let set = |v: f32| _mm256_set1_ps(v);
    use super::exp_consts::*;
    // `max(lo, x)` and `min(hi, x)` return x (their second operand) when it is NaN.
    let xc = _mm256_min_ps(set(HI), _mm256_max_ps(set(LO), x));
    let n = _mm256_round_ps::<0x08>(_mm256_mul_ps(xc, set(std::f32::consts::LOG2_E)));
    let minus_n = _mm256_sub_ps(_mm256_setzero_ps(), n);
    let r = _mm256_fmadd_ps(
        minus_n,
        set(LN2_LO),
        _mm256_fmadd_ps(minus_n, set(LN2_HI), xc),
    );
    let z = _mm256_mul_ps(r, r);
    let mut p = set(POLY[0]);
    for c in &POLY[1..] {
        p = _mm256_fmadd_ps(p, r, set(*c));
    }
    let y = _mm256_add_ps(_mm256_fmadd_ps(p, z, r), set(1.0));
    // n is in [-150, 128]: 2^n as one or two exact powers of two built from their exponents.
    let n1 = _mm256_max_ps(n, set(-126.0));
    let n2 = _mm256_sub_ps(n, n1);
    let pow2 = |k: __m256| {
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(k),
            _mm256_set1_epi32(127),
        ));
        _mm256_castsi256_ps(bits)
    };
    // 2^128 does not exist as an f32: n = 128 (x near HI) goes as 2^127 · 2.
    let big = _mm256_cmp_ps::<_CMP_GT_OQ>(n1, set(127.0));
    let n1 = _mm256_blendv_ps(n1, set(127.0), big);
    let y = _mm256_blendv_ps(y, _mm256_mul_ps(y, set(2.0)), big);
    _mm256_mul_ps(_mm256_mul_ps(y, pow2(n1)), pow2(n2))
}

/// [`super::exp_fast`] on 16 lanes, with the same operations in the same order (bit-identical
/// results, NaN, overflow to infinity and subnormal results included: `vscalefps` rounds
/// `y · 2^n` once, as `exp_fast`'s f64 product does).
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn exp_avx512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let set = |v: f32| _mm512_set1_ps(v);
    // `max(lo, x)` and `min(hi, x)` return x when it is NaN, as f32::clamp.
    use super::exp_consts::*;
    let xc = _mm512_min_ps(set(HI), _mm512_max_ps(set(LO), x));
    let n = _mm512_roundscale_ps::<0x08>(_mm512_mul_ps(xc, set(std::f32::consts::LOG2_E)));
    let minus_n = _mm512_sub_ps(_mm512_setzero_ps(), n);
    let r = _mm512_fmadd_ps(
        minus_n,
        set(LN2_LO),
        _mm512_fmadd_ps(minus_n, set(LN2_HI), xc),
    );
    let z = _mm512_mul_ps(r, r);
    let mut p = set(POLY[0]);
    for c in &POLY[1..] {
        p = _mm512_fmadd_ps(p, r, set(*c));
    }
    let y = _mm512_add_ps(_mm512_fmadd_ps(p, z, r), set(1.0));
    _mm512_scalef_ps(y, n)
}
