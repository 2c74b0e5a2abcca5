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
pub(crate) fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// `multiversion!(fn name(args) -> ret => inner)` defines `name`, which calls the
/// `#[inline(always)]` function `inner` compiled for AVX-512, AVX2 or the baseline target.
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
                if $crate::ops::simd::has_avx512() {
                    // SAFETY: the CPU supports every feature `v4` was compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if $crate::ops::simd::has_avx2() {
                    // SAFETY: the CPU supports AVX2 and FMA, the features `v3` was compiled for.
                    return unsafe { v3($($arg),*) };
                }
            }
            $inner($($arg),*)
        }
    };
}

pub(crate) use multiversion;
