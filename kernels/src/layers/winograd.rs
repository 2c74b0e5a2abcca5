//! Winograd minimal filtering for 3x3, stride-1, undilated, ungrouped convolutions (Lavin &
//! Gray, "Fast Algorithms for Convolutional Neural Networks", 2015), in two tile sizes:
//! F(2x2, 3x3) and F(4x4, 3x3).
//!
//! Each m x m output tile comes from an α x α input tile (α = m + 2):
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`. Summed over input channels, the element-wise product
//! becomes α² independent GEMMs `M_e = U_e · V_e` (`U_e`: `[C_out, C_in]`, the transformed
//! weights, computed once; `V_e`: `[C_in, tiles]`, the transformed input). Per output and
//! channel pair a direct 3x3 convolution costs 9 multiply-adds, F(2x2) 16/4 = 4 (2.25x
//! fewer) and F(4x4) 36/16 = 2.25 (4x fewer). The transforms add a few adds per tile and
//! channel, small at the channel counts of an FPN, an RPN or a mask head.
//!
//! Rounding: F(2x2)'s coefficients are 0, ±1 and ±½, exact in f32, so it differs from a
//! direct convolution by a few units in the last place of the partial sums. F(4x4)'s are up
//! to 8 (and 1/24 in G, applied in f64 when the weights are transformed), which costs about
//! 3 more bits of the mantissa: relative errors of a few 1e-6 of the output's scale instead of
//! a few 1e-7. Both are checked here against an f64 direct convolution and, through the
//! layers, against torch and the Mask R-CNN reference. The tile size is chosen per call from
//! the output size (F(4x4) unless its padding waste costs more than it saves, or the map is
//! too narrow or small for its transforms to pay; a batch of narrow maps, such as the mask
//! head's RoIs, is convolved side by side as one wide map); `KERNELS_WINOGRAD=2` keeps F(2x2)
//! everywhere and `KERNELS_WINOGRAD=0` turns Winograd off.
//!
//! Work is split into chunks of tiles (over the whole batch, so that the mask head's hundred
//! 14x14 maps form large GEMMs): for F(2x2) each chunk's transformed input and products stay
//! within a core's L2 cache; for F(4x4), whose transformed weights are 4x the original ones,
//! one product's operands do, so that the weights are streamed fewer times. Chunks hold whole
//! blocks of 16 tiles (the `gemm` crate's micro-kernel width) and run in parallel, each GEMM
//! on one thread. A map with too few F(2x2) tiles for two chunks per thread (a ResNet's 28x28
//! and 14x14 maps at 224x224) runs whole instead, each step split between the threads: the
//! input transform by input channels, one product per task, the output transform by output
//! channels; the results are the same bits. The transforms work on runs of tiles along a tile
//! row, in blocks of 16 tiles held in local arrays so that LLVM vectorises them across tiles
//! (compiled for AVX-512 and AVX2 where the CPU has them); F(4x4)'s input transform gathers
//! the tiles' columns with AVX-512 permutes, or AVX2 unpacks, shuffles and permutes, and its
//! output transform interleaves the tiles' outputs with shuffles, where the CPU has AVX-512.

use std::sync::OnceLock;

use rayon::prelude::*;

use super::activation::Activation;
use super::gemm::{sgemm_raw, Backend, Threading};
use super::packed_gemm::{Epilogue, PackedMatrix, Runs};
use crate::ops::simd::multiversion;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m256, _mm256_add_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_set1_ps, _mm256_storeu_ps,
    _mm256_sub_ps,
};

/// Channels below which the transforms cost more than the multiplications they save.
pub(crate) const MIN_CHANNELS: usize = 16;

/// F(2x2) chunks: bytes of transformed input and products per chunk: about a core's L2 (1 MB on this
/// machine's Zen 4, 2 MB on a Sapphire Rapids); 1-2 MB chunks measured faster than 4-8 MB.
const CHUNK_BYTES: usize = 1 << 21;

/// F(4x4) chunks: bytes of one product's transformed input and output (`V_e` and `M_e`).
const F4_PRODUCT_BYTES: usize = 1 << 19;

/// Tiles in all below which F(4x4) does not pay (see [`Tile::for_output`]).
const MIN_F4_TILES: usize = 128;

/// Tiles per row below which F(4x4) does not pay (see [`Tile::for_output`]).
const MIN_F4_ROW_TILES: usize = 8;

/// Columns (tiles) of the `gemm` crate's AVX2 and AVX-512 micro-kernels for these products: a
/// chunk of 81 tiles ran its last column through a whole 8-wide kernel of its own.
const GEMM_COLUMNS: usize = 16;

/// Tiles handled together by the vectorised transforms.
const LANES: usize = 16;

/// The output tile size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tile {
    /// F(2x2, 3x3): 4x4 input tiles, 16 products.
    F2,
    /// F(4x4, 3x3): 6x6 input tiles, 36 products.
    F4,
}

impl Tile {
    /// Output tile side `m`.
    fn m(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }

    /// Input tile side `α = m + 2`.
    fn alpha(self) -> usize {
        self.m() + 2
    }

    /// `G` (α x 3), the filter transform.
    fn g(self) -> &'static [[f64; 3]] {
        const F2: [[f64; 3]; 4] = [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5],
            [0.0, 0.0, 1.0],
        ];
        const F4: [[f64; 3]; 6] = [
            [1.0 / 4.0, 0.0, 0.0],
            [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
            [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
            [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
            [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
            [0.0, 0.0, 1.0],
        ];
        match self {
            Tile::F2 => &F2,
            Tile::F4 => &F4,
        }
    }

    /// The tile size for an `oh x ow` output: F(4x4) unless rounding the output up to whole
    /// 4x4 tiles costs more products than F(2x2) needs (`KERNELS_WINOGRAD=2`: always F(2x2)).
    /// The transforms work on runs of tiles along a row, 16 at a time: with fewer than 8
    /// tiles per row (the mask head's 14x14 maps) most of each block is wasted and F(4x4)
    /// measured slower than F(2x2). With few tiles in all, the chunks are small and each
    /// streams all of U (4x the weights): 512 channels at 25x38 measured slower.
    fn for_output(n: usize, oh: usize, ow: usize) -> Tile {
        Self::for_output_from(n, oh, ow, (MIN_F4_ROW_TILES, MIN_F4_TILES))
    }

    /// [`Tile::for_output`] for [`conv_nhwc_winograd`], whose transforms run across channels
    /// rather than along rows of tiles, so that short rows waste nothing: F(4x4) from 4 tiles
    /// a row and 16 in all. Measured on a Zen 4 (2 threads, 128-256 channels): 1.5-1.9x
    /// F(2x2)'s speed at 28x28 to 55x55 (RetinaFace's and ResNet-50's maps at 435x435) and
    /// 1.3x at 18x18; at 11x11 (9 tiles) slower.
    fn for_nhwc_output(n: usize, oh: usize, ow: usize) -> Tile {
        Self::for_output_from(n, oh, ow, (4, 16))
    }

    /// F(4x4) where it needs fewer products than F(2x2) and the output has at least
    /// `min_row_tiles` 4x4 tiles a row and `min_tiles` in all.
    fn for_output_from(
        n: usize,
        oh: usize,
        ow: usize,
        (min_row_tiles, min_tiles): (usize, usize),
    ) -> Tile {
        if mode() == Mode::F2Only {
            return Tile::F2;
        }
        let f2 = 16 * oh.div_ceil(2) * ow.div_ceil(2);
        let f4 = 36 * oh.div_ceil(4) * ow.div_ceil(4);
        if f4 < f2
            && ow.div_ceil(4) >= min_row_tiles
            && n * oh.div_ceil(4) * ow.div_ceil(4) >= min_tiles
        {
            Tile::F4
        } else {
            Tile::F2
        }
    }
}

/// The transformed weights, made on first use for each tile size: `U_e = (G g Gᵀ)_e` for
/// every (output, input) channel pair, stored as α² row-major `[C_out, C_in]` matrices.
#[derive(Clone, Debug)]
pub(crate) struct WinogradWeights {
    cout: usize,
    cin: usize,
    f2: OnceLock<Vec<f32>>,
    f4: OnceLock<Vec<f32>>,
}

impl WinogradWeights {
    pub(crate) fn new(cout: usize, cin: usize) -> WinogradWeights {
        WinogradWeights {
            cout,
            cin,
            f2: OnceLock::new(),
            f4: OnceLock::new(),
        }
    }

    /// `U` for `tile`, from the `[C_out, C_in, 3, 3]` row-major `weight` (the same weight on
    /// every call).
    fn transformed(&self, tile: Tile, weight: &[f32]) -> &[f32] {
        let cell = match tile {
            Tile::F2 => &self.f2,
            Tile::F4 => &self.f4,
        };
        cell.get_or_init(|| transform_weights(tile, weight, self.cout, self.cin))
    }
}

/// `U = G g Gᵀ` for every channel pair, in f64 and rounded once.
fn transform_weights(tile: Tile, weight: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    let g_mat = tile.g();
    let a = tile.alpha();
    let mut u = vec![0f32; a * a * cout * cin];
    for co in 0..cout {
        for ci in 0..cin {
            let g = &weight[(co * cin + ci) * 9..][..9];
            // t = G g (α x 3).
            let mut t = [[0f64; 3]; 6];
            for (r, grow) in g_mat.iter().enumerate() {
                for c in 0..3 {
                    t[r][c] = (0..3).map(|k| grow[k] * g[k * 3 + c] as f64).sum();
                }
            }
            // U = t Gᵀ (α x α).
            for (r, trow) in t.iter().take(a).enumerate() {
                for (c, grow) in g_mat.iter().enumerate() {
                    let v: f64 = (0..3).map(|k| trow[k] * grow[k]).sum();
                    u[((r * a + c) * cout + co) * cin + ci] = v as f32;
                }
            }
        }
    }
    u
}

/// Whether Winograd pays for an `n x oh x ow` output: with few tiles, each of the α² products
/// is a thin GEMM that streams its `[C_out, C_in]` transformed weights for a handful of
/// columns, and α² of those (16 for F(2x2)) move more weight bytes than the direct path's one
/// `[C_out, 9 C_in]` GEMM (the bottom levels of an Hourglass: 512 channels at 4x4).
pub(crate) fn pays(n: usize, oh: usize, ow: usize) -> bool {
    n * oh.div_ceil(2) * ow.div_ceil(2) >= MIN_F2_TILES
}

/// F(2x2) tiles in all below which the direct path is taken (see [`pays`]). Measured on
/// Hourglass-104's levels, one thread: the direct path took 0.19x Winograd's time at 512
/// channels and 4x4 (4 tiles), 0.25x at 384 and 8x8 (16), 0.64x at 384 and 16x16 (64), 1.1x at
/// 32x32 (256). The cut stays below the smallest maps of the two-stage detectors (an RPN's P6,
/// a 14x14 RoI: 49 tiles), whose results are checked against torchvision and keep the path
/// they were checked with.
const MIN_F2_TILES: usize = 32;

/// Whether a convolution can (and should) take the Winograd path.
pub(crate) fn eligible(
    kernel: (usize, usize),
    stride: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
    cin: usize,
    cout: usize,
) -> bool {
    kernel == (3, 3)
        && stride == (1, 1)
        && dilation == (1, 1)
        && groups == 1
        && cin >= MIN_CHANNELS
        && cout >= MIN_CHANNELS
        && mode() != Mode::Off
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Off,
    F2Only,
    Auto,
}

/// `KERNELS_WINOGRAD=0` turns the path off, `=2` keeps F(2x2) only (for comparisons).
fn mode() -> Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    *MODE.get_or_init(|| match std::env::var("KERNELS_WINOGRAD").as_deref() {
        Ok("0") => Mode::Off,
        Ok("2") => Mode::F2Only,
        _ => Mode::Auto,
    })
}

/// The row and column transforms of one tile size, applied to one column or row of a tile.
trait Transforms<const A: usize, const M: usize> {
    /// `Bᵀ x`: input transform of α values.
    fn bt(x: [f32; A]) -> [f32; A];
    /// `Aᵀ x`: output transform of α values into m.
    fn at(x: [f32; A]) -> [f32; M];
    /// The `NHWC` input transform of a tile on blocks of 8 channels with AVX2
    /// ([`nhwc_input_tile_vectors`]).
    #[cfg(target_arch = "x86_64")]
    const NHWC_INPUT_VECTORS: InputVectors<A>;
    /// The `NHWC` output transform, as [`Transforms::NHWC_INPUT_VECTORS`].
    #[cfg(target_arch = "x86_64")]
    const NHWC_OUTPUT_VECTORS: OutputVectors;
}

/// F(2x2, 3x3): `Bᵀ` rows (1,0,-1,0), (0,1,1,0), (0,-1,1,0), (0,1,0,-1); `Aᵀ` rows
/// (1,1,1,0), (0,1,-1,-1).
struct F2x2;

impl Transforms<4, 2> for F2x2 {
    #[cfg(target_arch = "x86_64")]
    const NHWC_INPUT_VECTORS: InputVectors<4> = nhwc_input_tile_f2_avx2;
    #[cfg(target_arch = "x86_64")]
    const NHWC_OUTPUT_VECTORS: OutputVectors = nhwc_output_tile_f2_avx2;
    #[inline(always)]
    fn bt([x0, x1, x2, x3]: [f32; 4]) -> [f32; 4] {
        [x0 - x2, x1 + x2, x2 - x1, x1 - x3]
    }
    #[inline(always)]
    fn at([x0, x1, x2, x3]: [f32; 4]) -> [f32; 2] {
        [x0 + x1 + x2, x1 - x2 - x3]
    }
}

/// F(4x4, 3x3) with the points 0, ±1, ±2 and ∞: `Bᵀ` rows (4,0,-5,0,1,0), (0,-4,-4,1,1,0),
/// (0,4,-4,-1,1,0), (0,-2,-1,2,1,0), (0,2,-1,-2,1,0), (0,4,0,-5,0,1); `Aᵀ` rows
/// (1,1,1,1,1,0), (0,1,-1,2,-2,0), (0,1,1,4,4,0), (0,1,-1,8,-8,1).
struct F4x4;

impl Transforms<6, 4> for F4x4 {
    #[cfg(target_arch = "x86_64")]
    const NHWC_INPUT_VECTORS: InputVectors<6> = nhwc_input_tile_f4_avx2;
    #[cfg(target_arch = "x86_64")]
    const NHWC_OUTPUT_VECTORS: OutputVectors = nhwc_output_tile_f4_avx2;
    #[inline(always)]
    fn bt([x0, x1, x2, x3, x4, x5]: [f32; 6]) -> [f32; 6] {
        let a = x4 - x2 * 4.0;
        let b = x1 * 4.0 - x3;
        let c = x4 - x2;
        let d = (x1 - x3) * 2.0;
        [
            x0 * 4.0 - x2 * 5.0 + x4,
            a - b,
            a + b,
            c - d,
            c + d,
            x1 * 4.0 - x3 * 5.0 + x5,
        ]
    }
    #[inline(always)]
    fn at([x0, x1, x2, x3, x4, x5]: [f32; 6]) -> [f32; 4] {
        let (s12, d12) = (x1 + x2, x1 - x2);
        let (s34, d34) = (x3 + x4, x3 - x4);
        [
            x0 + s12 + s34,
            d12 + d34 * 2.0,
            s12 + s34 * 4.0,
            d12 + d34 * 8.0 + x5,
        ]
    }
}

/// Input transform of one run of `len` tiles of one channel: `d` holds the run's α input rows
/// (`m·len + 2` values each, row stride `drow`); `tmp` (row stride `row`) receives `Bᵀ d`; the
/// result `(Bᵀ d B)_e` of tile `q` goes to `v[e·vstride + voff + q]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn input_run<const A: usize, const M: usize, T: Transforms<A, M>>(
    d: &[f32],
    drow: usize,
    tmp: &mut [f32],
    row: usize,
    len: usize,
    v: &mut [f32],
    vstride: usize,
    voff: usize,
) {
    input_rows::<A, M, T>(d, drow, tmp, row, M * len + 2);
    input_cols::<A, M, T>(tmp, row, 0, len, v, vstride, voff);
}

/// Row combinations (`Bᵀ ·`) of the α rows of `d` (`width` values each), into `tmp`,
/// LANES columns at a time.
#[inline(always)]
fn input_rows<const A: usize, const M: usize, T: Transforms<A, M>>(
    d: &[f32],
    drow: usize,
    tmp: &mut [f32],
    row: usize,
    width: usize,
) {
    let mut j0 = 0;
    while j0 < width {
        let n = (width - j0).min(LANES);
        let mut x = [[0f32; LANES]; A];
        for (k, xk) in x.iter_mut().enumerate() {
            copy_block(xk, &d[k * drow + j0..], n);
        }
        let mut y = [[0f32; LANES]; A];
        for l in 0..LANES {
            let col = T::bt(std::array::from_fn(|k| x[k][l]));
            for k in 0..A {
                y[k][l] = col[k];
            }
        }
        for (k, yk) in y.iter().enumerate() {
            store_block(&mut tmp[k * row + j0..], yk, n);
        }
        j0 += LANES;
    }
}

/// Column combinations (`· B`) of tiles `q0..len` of the rows in `tmp`, LANES tiles at a time.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn input_cols<const A: usize, const M: usize, T: Transforms<A, M>>(
    tmp: &[f32],
    row: usize,
    mut q0: usize,
    len: usize,
    v: &mut [f32],
    vstride: usize,
    voff: usize,
) {
    let width = M * len + 2;
    let start = q0;
    for r in 0..A {
        let t = &tmp[r * row..][..width];
        q0 = start;
        while q0 < len {
            let n = (len - q0).min(LANES);
            let mut raw = [0f32; LANES * 4 + 2];
            raw[..M * n + 2].copy_from_slice(&t[M * q0..][..M * n + 2]);
            let mut y = [[0f32; LANES]; A];
            for l in 0..LANES {
                let o = T::bt(std::array::from_fn(|k| raw[M * l + k]));
                for c in 0..A {
                    y[c][l] = o[c];
                }
            }
            for (c, yc) in y.iter().enumerate() {
                store_block(&mut v[(r * A + c) * vstride + voff + q0..], yc, n);
            }
            q0 += LANES;
        }
    }
}

/// [`F4x4::bt`] on vectors of tiles, with the intrinsics of one vector width: the same
/// operations in the same order, so each lane gets the portable transform's bits. `c` holds
/// the vectors of 4, 5 and 2.
#[cfg(target_arch = "x86_64")]
macro_rules! bt_f4_vectors {
    ($add:ident, $sub:ident, $mul:ident, [$c4:expr, $c5:expr, $c2:expr], [$x0:expr, $x1:expr, $x2:expr, $x3:expr, $x4:expr, $x5:expr]) => {{
        let (x0, x1, x2, x3, x4, x5) = ($x0, $x1, $x2, $x3, $x4, $x5);
        let (c4, c5, c2) = ($c4, $c5, $c2);
        let a = $sub(x4, $mul(c4, x2));
        let b = $sub($mul(c4, x1), x3);
        let c = $sub(x4, x2);
        let dd = $mul(c2, $sub(x1, x3));
        [
            $add($sub($mul(c4, x0), $mul(c5, x2)), x4),
            $sub(a, b),
            $add(a, b),
            $sub(c, dd),
            $add(c, dd),
            $add($sub($mul(c4, x1), $mul(c5, x3)), x5),
        ]
    }};
}

/// F(4x4) input transform of one run ([`input_run`]) with AVX-512: the column combinations of
/// each full block of 16 tiles gather the tiles' columns `4q + k` with two-source permutes
/// instead of 96 scalar loads. Same operations in the same order as [`F4x4::bt`], so the
/// results are bit-identical to the portable version.
///
/// # Safety
/// The CPU must support AVX-512F ([`crate::ops::simd::has_avx512`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn input_run_f4_avx512(
    d: &[f32],
    drow: usize,
    tmp: &mut [f32],
    row: usize,
    len: usize,
    v: &mut [f32],
    vstride: usize,
    voff: usize,
) {
    use std::arch::x86_64::*;
    let width = 4 * len + 2;
    input_rows::<6, 4, F4x4>(d, drow, tmp, row, width);
    let full = len / LANES * LANES;
    let (c4, c5, c2) = (
        _mm512_set1_ps(4.0),
        _mm512_set1_ps(5.0),
        _mm512_set1_ps(2.0),
    );
    for r in 0..6 {
        let t = &tmp[r * row..][..width];
        for q0 in (0..full).step_by(LANES) {
            // Columns 4·q0 .. 4·q0 + 66 are within the run's `width`.
            let cols = &t[4 * q0..4 * q0 + 4 * LANES + 2];
            // Lane l of x_k is column 4l + k of the block.
            let x = crate::ops::simd::deinterleave4_avx512(
                [0, 16, 32, 48].map(|o| _mm512_loadu_ps(cols[o..].as_ptr())),
            );
            // x_4 and x_5 are x_0 and x_1 one tile on, the last lane from columns 64 and 65.
            let e64 = _mm512_castps_si512(_mm512_set1_ps(cols[64]));
            let e65 = _mm512_castps_si512(_mm512_set1_ps(cols[65]));
            let x4 = _mm512_castsi512_ps(_mm512_alignr_epi32(e64, _mm512_castps_si512(x[0]), 1));
            let x5 = _mm512_castsi512_ps(_mm512_alignr_epi32(e65, _mm512_castps_si512(x[1]), 1));
            let o = bt_f4_vectors!(
                _mm512_add_ps,
                _mm512_sub_ps,
                _mm512_mul_ps,
                [c4, c5, c2],
                [x[0], x[1], x[2], x[3], x4, x5]
            );
            for (c, oc) in o.into_iter().enumerate() {
                let dst = &mut v[(r * 6 + c) * vstride + voff + q0..][..LANES];
                _mm512_storeu_ps(dst.as_mut_ptr(), oc);
            }
        }
    }
    input_cols::<6, 4, F4x4>(tmp, row, full, len, v, vstride, voff);
}

/// F(4x4) input transform of one run ([`input_run`]) with AVX2: the column combinations of
/// each group of 8 tiles gather the tiles' columns `4q + k` with in-lane unpacks and
/// shuffles and one cross-lane permute each, instead of scalar loads.
/// Same operations in the same order as [`F4x4::bt`], so the results are bit-identical to
/// the portable version.
///
/// # Safety
/// The CPU must support AVX2 and FMA ([`crate::ops::simd::has_avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn input_run_f4_avx2(
    d: &[f32],
    drow: usize,
    tmp: &mut [f32],
    row: usize,
    len: usize,
    v: &mut [f32],
    vstride: usize,
    voff: usize,
) {
    use std::arch::x86_64::*;
    let width = 4 * len + 2;
    input_rows::<6, 4, F4x4>(d, drow, tmp, row, width);
    // Whole groups of 8 tiles; the rest go through the portable transform.
    let full = len / 8 * 8;
    let (c4, c5, c2) = (
        _mm256_set1_ps(4.0),
        _mm256_set1_ps(5.0),
        _mm256_set1_ps(2.0),
    );
    // After the in-lane transposes, lane l holds tile [0, 2, 4, 6, 1, 3, 5, 7][l]; this puts
    // the tiles back in order. The second index shifts by one tile (x_4 and x_5).
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let next = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 7);
    for r in 0..6 {
        let t = &tmp[r * row..][..width];
        for q in (0..full).step_by(8) {
            // Columns 4q .. 4q + 34 are within the run's `width`.
            let cols = &t[4 * q..4 * q + 34];
            let [a0, a1, a2, a3] = [0, 8, 16, 24].map(|o| _mm256_loadu_ps(cols[o..].as_ptr()));
            let (u0, u1) = (_mm256_unpacklo_ps(a0, a1), _mm256_unpackhi_ps(a0, a1));
            let (u2, u3) = (_mm256_unpacklo_ps(a2, a3), _mm256_unpackhi_ps(a2, a3));
            let gather = |lo: __m256, hi: __m256, upper: bool| {
                let x = if upper {
                    _mm256_shuffle_ps::<0b11_10_11_10>(lo, hi)
                } else {
                    _mm256_shuffle_ps::<0b01_00_01_00>(lo, hi)
                };
                _mm256_permutevar8x32_ps(x, order)
            };
            // Lane l of x_k is column 4l + k of the group.
            let (x0, x1) = (gather(u0, u2, false), gather(u0, u2, true));
            let (x2, x3) = (gather(u1, u3, false), gather(u1, u3, true));
            // x_4 and x_5 are x_0 and x_1 one tile on, the last lane from columns 32 and 33.
            let x4 = _mm256_blend_ps::<0x80>(
                _mm256_permutevar8x32_ps(x0, next),
                _mm256_set1_ps(cols[32]),
            );
            let x5 = _mm256_blend_ps::<0x80>(
                _mm256_permutevar8x32_ps(x1, next),
                _mm256_set1_ps(cols[33]),
            );
            let o = bt_f4_vectors!(
                _mm256_add_ps,
                _mm256_sub_ps,
                _mm256_mul_ps,
                [c4, c5, c2],
                [x0, x1, x2, x3, x4, x5]
            );
            for (c, oc) in o.into_iter().enumerate() {
                let dst = &mut v[(r * 6 + c) * vstride + voff + q..][..8];
                _mm256_storeu_ps(dst.as_mut_ptr(), oc);
            }
        }
    }
    input_cols::<6, 4, F4x4>(tmp, row, full, len, v, vstride, voff);
}

/// `dst[..n] = src[..n]`, as a fixed-size (inlined) copy for a full block.
#[inline(always)]
fn copy_block(dst: &mut [f32; LANES], src: &[f32], n: usize) {
    if n == LANES {
        dst.copy_from_slice(&src[..LANES]);
    } else {
        dst[..n].copy_from_slice(&src[..n]);
    }
}

/// `dst[..n] = src[..n]`, as a fixed-size (inlined) copy for a full block.
#[inline(always)]
fn store_block(dst: &mut [f32], src: &[f32; LANES], n: usize) {
    if n == LANES {
        dst[..LANES].copy_from_slice(src);
    } else {
        dst[..n].copy_from_slice(&src[..n]);
    }
}

/// Output transform of one run of `len` tiles of one output channel: the products of tile
/// `q` are `m[e·mstride + moff + q]`; `Aᵀ M A + bias` goes to m output rows of `m·len`
/// values (row stride `row`) in `rows`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn output_run<const A: usize, const M: usize, T: Transforms<A, M>>(
    m: &[f32],
    mstride: usize,
    moff: usize,
    len: usize,
    bias: f32,
    rows: &mut [f32],
    row: usize,
) {
    output_run_from::<A, M, T>(m, mstride, moff, 0, len, bias, rows, row);
}

/// [`output_run`] for tiles `q0..len`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn output_run_from<const A: usize, const M: usize, T: Transforms<A, M>>(
    m: &[f32],
    mstride: usize,
    moff: usize,
    mut q0: usize,
    len: usize,
    bias: f32,
    rows: &mut [f32],
    row: usize,
) {
    while q0 < len {
        let n = (len - q0).min(LANES);
        let mut x = [[[0f32; LANES]; A]; A];
        for (r, xr) in x.iter_mut().enumerate() {
            for (c, xrc) in xr.iter_mut().enumerate() {
                copy_block(xrc, &m[(r * A + c) * mstride + moff + q0..], n);
            }
        }
        let mut out = [[0f32; LANES * 4]; 4];
        for l in 0..LANES {
            let mut s = [[0f32; A]; M];
            for c in 0..A {
                let col = T::at(std::array::from_fn(|r| x[r][c][l]));
                for i in 0..M {
                    s[i][c] = col[i];
                }
            }
            for i in 0..M {
                let y = T::at(s[i]);
                for j in 0..M {
                    out[i][M * l + j] = y[j] + bias;
                }
            }
        }
        for (i, oi) in out.iter().take(M).enumerate() {
            if n == LANES {
                rows[i * row + M * q0..][..M * LANES].copy_from_slice(&oi[..M * LANES]);
            } else {
                rows[i * row + M * q0..][..M * n].copy_from_slice(&oi[..M * n]);
            }
        }
        q0 += LANES;
    }
}

/// F(4x4) output transform of one run ([`output_run`]) with AVX-512: each full block of 16
/// tiles is read straight from the products, and each output row's four vectors (column j of
/// the 16 tiles) are interleaved into 64 consecutive values with in-register shuffles. Same
/// operations in the same order as [`F4x4::at`], so the results are bit-identical to the
/// portable version.
///
/// # Safety
/// The CPU must support AVX-512F ([`crate::ops::simd::has_avx512`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn output_run_f4_avx512(
    m: &[f32],
    mstride: usize,
    moff: usize,
    len: usize,
    bias: f32,
    rows: &mut [f32],
    row: usize,
) {
    use std::arch::x86_64::*;
    let full = len / LANES * LANES;
    let (c2, c4, c8, bv) = (
        _mm512_set1_ps(2.0),
        _mm512_set1_ps(4.0),
        _mm512_set1_ps(8.0),
        _mm512_set1_ps(bias),
    );
    // As F4x4::at.
    let at = |x: [__m512; 6]| -> [__m512; 4] {
        let (s12, d12) = (_mm512_add_ps(x[1], x[2]), _mm512_sub_ps(x[1], x[2]));
        let (s34, d34) = (_mm512_add_ps(x[3], x[4]), _mm512_sub_ps(x[3], x[4]));
        [
            _mm512_add_ps(_mm512_add_ps(x[0], s12), s34),
            _mm512_add_ps(d12, _mm512_mul_ps(c2, d34)),
            _mm512_add_ps(s12, _mm512_mul_ps(c4, s34)),
            _mm512_add_ps(_mm512_add_ps(d12, _mm512_mul_ps(c8, d34)), x[5]),
        ]
    };
    for q0 in (0..full).step_by(LANES) {
        let mut s = [[_mm512_setzero_ps(); 6]; 4];
        for c in 0..6 {
            let x: [__m512; 6] = std::array::from_fn(|r| {
                let src = &m[(r * 6 + c) * mstride + moff + q0..][..LANES];
                _mm512_loadu_ps(src.as_ptr())
            });
            for (i, v) in at(x).into_iter().enumerate() {
                s[i][c] = v;
            }
        }
        for (i, si) in s.iter().enumerate() {
            let [y0, y1, y2, y3] = at(*si).map(|y| _mm512_add_ps(y, bv));
            // Tile l's four outputs y0[l], y1[l], y2[l], y3[l] go to 4l..4l+4.
            let o = crate::ops::simd::interleave4_avx512([y0, y1, y2, y3]);
            let dst = &mut rows[i * row + 4 * q0..][..4 * LANES];
            for (k, ok) in o.into_iter().enumerate() {
                _mm512_storeu_ps(dst[16 * k..].as_mut_ptr(), ok);
            }
        }
    }
    output_run_from::<6, 4, F4x4>(m, mstride, moff, full, len, bias, rows, row);
}

multiversion!(fn input_run_f2(d: &[f32], drow: usize, tmp: &mut [f32], row: usize, len: usize, v: &mut [f32], vstride: usize, voff: usize) => input_run::<4, 2, F2x2>);
multiversion!(fn input_run_f4(d: &[f32], drow: usize, tmp: &mut [f32], row: usize, len: usize, v: &mut [f32], vstride: usize, voff: usize) => input_run::<6, 4, F4x4>);
multiversion!(fn output_run_f2(m: &[f32], mstride: usize, moff: usize, len: usize, bias: f32, rows: &mut [f32], row: usize) => output_run::<4, 2, F2x2>);
multiversion!(fn output_run_f4(m: &[f32], mstride: usize, moff: usize, len: usize, bias: f32, rows: &mut [f32], row: usize) => output_run::<6, 4, F4x4>);

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: chunks write disjoint output tiles (see `forward`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// The geometry of one call.
#[derive(Clone, Copy)]
pub(crate) struct Shape {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub pad: (usize, usize),
    pub oh: usize,
    pub ow: usize,
}

/// Everything a chunk needs.
struct Job<'a> {
    tile: Tile,
    u: &'a [f32],
    cin: usize,
    cout: usize,
    bias: Option<&'a [f32]>,
    activation: Activation,
    xs: &'a [f32],
    s: Shape,
    /// Tile rows and columns per image.
    th: usize,
    tw: usize,
    out: SendPtr,
}

/// Runs the convolution on `xs` (`[N, C_in, H, W]`) into `out` (`[N, C_out, OH, OW]`, every
/// element written), with the `[C_out, C_in, 3, 3]` `weight` (the one `wt` was made for),
/// adding `bias` and applying `activation`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    wt: &WinogradWeights,
    weight: &[f32],
    bias: Option<&[f32]>,
    activation: Activation,
    xs: &[f32],
    s: Shape,
    out: &mut [f32],
) {
    let tile = Tile::for_output(s.n, s.oh, s.ow);
    if tile == Tile::F2 && s.n > 1 && mode() == Mode::Auto {
        let canvas_ow = s.n * (s.w + s.pad.1) - s.pad.1 + 2 * s.pad.1 - 2;
        if Tile::for_output(1, s.oh, canvas_ow) == Tile::F4 {
            return forward_side_by_side(wt, weight, bias, activation, xs, s, out);
        }
    }
    forward_tile(tile, wt, weight, bias, activation, xs, s, out);
}

/// A batch of maps too narrow for F(4x4) on their own (the mask head's hundred 14x14 RoIs)
/// laid side by side in one wide map, `pad.1` zero columns apart, convolved with F(4x4)
/// as one image and cut apart again. The zero columns are each map's own left and right
/// padding, so every output is the same sum of products as map by map; output columns that
/// straddle two maps are dropped.
#[allow(clippy::too_many_arguments)]
fn forward_side_by_side(
    wt: &WinogradWeights,
    weight: &[f32],
    bias: Option<&[f32]>,
    activation: Activation,
    xs: &[f32],
    s: Shape,
    out: &mut [f32],
) {
    let (n, h, w, (ph, pw)) = (s.n, s.h, s.w, s.pad);
    let (cin, cout) = (wt.cin, wt.cout);
    let slot = w + pw;
    let cw = n * slot - pw;
    let cow = cw + 2 * pw - 2;
    // canvas[ci][y][b·slot + x] = xs[b][ci][y][x]; the gap columns stay zero.
    let mut canvas = super::zeroed(cin * h * cw);
    canvas
        .par_chunks_mut(h * cw)
        .enumerate()
        .for_each(|(ci, plane)| {
            for b in 0..n {
                let src = &xs[(b * cin + ci) * h * w..][..h * w];
                for y in 0..h {
                    plane[y * cw + b * slot..][..w].copy_from_slice(&src[y * w..][..w]);
                }
            }
        });
    let mut wide = super::zeroed(cout * s.oh * cow);
    let cs = Shape {
        n: 1,
        h,
        w: cw,
        pad: (ph, pw),
        oh: s.oh,
        ow: cow,
    };
    forward_tile(
        Tile::F4,
        wt,
        weight,
        bias,
        activation,
        &canvas,
        cs,
        &mut wide,
    );
    // out[b][co][y][x] = wide[co][y][b·slot + x].
    let plane = s.oh * s.ow;
    out.par_chunks_mut(plane).enumerate().for_each(|(i, dst)| {
        let (b, co) = (i / cout, i % cout);
        for y in 0..s.oh {
            dst[y * s.ow..][..s.ow]
                .copy_from_slice(&wide[(co * s.oh + y) * cow + b * slot..][..s.ow]);
        }
    });
}

/// [`forward`] with a given tile size.
#[allow(clippy::too_many_arguments)]
fn forward_tile(
    tile: Tile,
    wt: &WinogradWeights,
    weight: &[f32],
    bias: Option<&[f32]>,
    activation: Activation,
    xs: &[f32],
    s: Shape,
    out: &mut [f32],
) {
    let mt = tile.m();
    let (th, tw) = (s.oh.div_ceil(mt), s.ow.div_ceil(mt));
    let tiles = s.n * th * tw;
    if tiles == 0 {
        return;
    }
    let (cin, cout) = (wt.cin, wt.cout);
    let a2 = tile.alpha() * tile.alpha();
    let per_tile = a2 * (cin + cout) * 4;
    let threads = rayon::current_num_threads().max(1);
    let mut chunk = match tile {
        Tile::F2 => (CHUNK_BYTES / per_tile).clamp(16, 512),
        // Every chunk streams all of U (36·C_out·C_in floats: 9.4 MB for 256 channels, more
        // than a core's L2) once, so F(4x4) chunks are sized by one product's working set
        // instead: U_e, V_e and M_e together within about half an L2. Chunks of 16-32 tiles
        // (the F(2x2) rule) made FPN and RPN 25-30% slower end to end, bound by U's traffic
        // through the L3 that this machine shares with its neighbours.
        Tile::F4 => (F4_PRODUCT_BYTES / ((cin + cout) * 4)).clamp(32, 256),
    }
    .next_multiple_of(GEMM_COLUMNS);
    let job = Job {
        tile,
        u: wt.transformed(tile, weight),
        cin,
        cout,
        bias,
        activation,
        xs,
        s,
        th,
        tw,
        out: SendPtr(out.as_mut_ptr()),
    };
    // Enough chunks to keep every thread busy. With too few F(2x2) tiles for that, every
    // step is split between the threads instead (`run_whole`): at 224x224, ResNet-50's 14x14
    // and 28x28 maps took 15% and 10% less time (2 threads), its 56x56 map with F(4x4),
    // whose chunks keep their products in L2, 5% more.
    if tiles.div_ceil(chunk) < 2 * threads {
        if threads > 1 && tile == Tile::F2 {
            return run_whole(&job, tiles);
        }
        // Whole blocks of the GEMM's columns (a 69x69 map's 324 F(4x4) tiles on 2 threads:
        // 5 chunks of 80, 80, 80, 80 and 4 tiles took 8% less time than 4 of 81).
        chunk = tiles.div_ceil(2 * threads);
        if chunk >= GEMM_COLUMNS {
            chunk = chunk / GEMM_COLUMNS * GEMM_COLUMNS;
        }
        chunk = chunk.max(8);
    }
    let chunks = tiles.div_ceil(chunk);
    (0..chunks).into_par_iter().for_each(|c| {
        let t0 = c * chunk;
        let t1 = (t0 + chunk).min(tiles);
        super::with_scratch(&SCRATCH, |buf| run_chunk(&job, t0, t1, buf));
    });
}

/// A run of consecutive tiles of one tile row: chunk-local tiles `k0..k0 + len`, image `b`,
/// tile row `ty`, first tile column `tx0`.
#[derive(Clone, Copy)]
struct Run {
    k0: usize,
    len: usize,
    b: usize,
    ty: usize,
    tx0: usize,
}

fn runs(t0: usize, t1: usize, th: usize, tw: usize) -> Vec<Run> {
    let mut out = Vec::new();
    let mut t = t0;
    while t < t1 {
        let tx0 = t % tw;
        let len = (tw - tx0).min(t1 - t);
        out.push(Run {
            k0: t - t0,
            len,
            b: t / (th * tw),
            ty: (t / tw) % th,
            tx0,
        });
        t += len;
    }
    out
}

/// Copies rows `y0..y0 + rows` and columns `x0..x0 + width` of `plane` (`h x w`) into `d`
/// (row stride `row`), zero outside the plane.
#[allow(clippy::too_many_arguments)]
fn load_rows(
    plane: &[f32],
    (h, w): (usize, usize),
    y0: isize,
    x0: isize,
    rows: usize,
    width: usize,
    row: usize,
    d: &mut [f32],
) {
    for i in 0..rows {
        let dst = &mut d[i * row..i * row + width];
        let y = y0 + i as isize;
        if y < 0 || y >= h as isize {
            dst.fill(0.0);
            continue;
        }
        let src = &plane[y as usize * w..][..w];
        let lo = (-x0).clamp(0, width as isize) as usize;
        let hi = (w as isize - x0).clamp(0, width as isize) as usize;
        dst[..lo].fill(0.0);
        if hi > lo {
            let s0 = (x0 + lo as isize) as usize;
            dst[lo..hi].copy_from_slice(&src[s0..s0 + hi - lo]);
        }
        dst[hi.max(lo)..].fill(0.0);
    }
}

/// Scratch rows of one run of tiles: `α` input rows of `m·len + 2` columns, their `α` row
/// combinations, and `m` output rows.
fn run_row(job: &Job<'_>, runs: &[Run]) -> usize {
    job.tile.m() * runs.iter().map(|r| r.len).max().unwrap_or(0) + 2
}

/// One chunk of tiles (`t0..t1`) on the calling thread: the input transform, the α²
/// products and the output transform.
fn run_chunk(job: &Job<'_>, t0: usize, t1: usize, buf: &mut Vec<f32>) {
    let (cin, cout) = (job.cin, job.cout);
    let alpha = job.tile.alpha();
    let a2 = alpha * alpha;
    let nt = t1 - t0;
    let runs = runs(t0, t1, job.th, job.tw);
    let row = run_row(job, &runs);
    let need = a2 * (cin + cout) * nt + 2 * alpha * row + job.tile.m() * row;
    if buf.len() < need {
        buf.resize(need, 0.0);
    }
    let (v, rest) = buf[..need].split_at_mut(a2 * cin * nt);
    let (m, rest) = rest.split_at_mut(a2 * cout * nt);
    let (rows_in, rows_out) = rest.split_at_mut(2 * alpha * row);
    input_transform(job, &runs, nt, 0, v, rows_in);
    for (e, m_e) in m.chunks_exact_mut(cout * nt).enumerate() {
        product(job, nt, e, v, m_e);
    }
    output_transform(job, &runs, nt, 0..cout, m, rows_out);
}

/// All the tiles at once, each step split between the threads: the input transform by
/// input channels, the α² products one per task, the output transform by output channels.
/// For maps with few tiles (14x14 and smaller in a ResNet at 224x224), where chunks of
/// tiles would each stream all of U for a handful of columns.
fn run_whole(job: &Job<'_>, tiles: usize) {
    let (cin, cout) = (job.cin, job.cout);
    let alpha = job.tile.alpha();
    let a2 = alpha * alpha;
    let runs = runs(0, tiles, job.th, job.tw);
    let row = run_row(job, &runs);
    super::with_scratch(&SCRATCH, |buf| {
        if buf.len() < a2 * (cin + cout) * tiles {
            buf.resize(a2 * (cin + cout) * tiles, 0.0);
        }
        let (v, m) = buf[..a2 * (cin + cout) * tiles].split_at_mut(a2 * cin * tiles);
        let threads = rayon::current_num_threads().max(1);
        let per_task = cin.div_ceil(2 * threads).max(1);
        v.par_chunks_mut(per_task * a2 * tiles)
            .enumerate()
            .for_each(|(i, v)| {
                let mut rows_in = vec![0f32; 2 * alpha * row];
                input_transform(job, &runs, tiles, i * per_task, v, &mut rows_in);
            });
        m.par_chunks_mut(cout * tiles)
            .enumerate()
            .for_each(|(e, m_e)| product(job, tiles, e, v, m_e));
        let per_task = cout.div_ceil(2 * threads).max(1);
        (0..cout.div_ceil(per_task)).into_par_iter().for_each(|i| {
            let mut rows_out = vec![0f32; job.tile.m() * row];
            let cos = i * per_task..((i + 1) * per_task).min(cout);
            output_transform(job, &runs, tiles, cos, m, &mut rows_out);
        });
    })
}

/// `V[ci][e][k] = (Bᵀ d B)_e` of tile `k` and input channel `ci`, for the channels
/// `ci0..ci0 + v.len() / (α² nt)` (`v` holds exactly those channels' values).
fn input_transform(
    job: &Job<'_>,
    runs: &[Run],
    nt: usize,
    ci0: usize,
    v: &mut [f32],
    rows_in: &mut [f32],
) {
    let (cin, s) = (job.cin, job.s);
    let (alpha, mt) = (job.tile.alpha(), job.tile.m());
    let a2 = alpha * alpha;
    let row = rows_in.len() / (2 * alpha);
    let (d, tmp) = rows_in.split_at_mut(alpha * row);
    let (py, px) = (s.pad.0 as isize, s.pad.1 as isize);
    #[cfg(target_arch = "x86_64")]
    let (avx512, avx2) = (crate::ops::simd::has_avx512(), crate::ops::simd::has_avx2());
    for (i, v) in v.chunks_exact_mut(a2 * nt).enumerate() {
        let ci = ci0 + i;
        for r in runs {
            let plane = &job.xs[(r.b * cin + ci) * s.h * s.w..][..s.h * s.w];
            let width = mt * r.len + 2;
            let y0 = (mt * r.ty) as isize - py;
            let x0 = (mt * r.tx0) as isize - px;
            // Runs inside the plane read it in place; the others copy their rows, zero-padded.
            let inside =
                y0 >= 0 && x0 >= 0 && y0 as usize + alpha <= s.h && x0 as usize + width <= s.w;
            let (src, drow): (&[f32], usize) = if inside {
                (&plane[y0 as usize * s.w + x0 as usize..], s.w)
            } else {
                load_rows(plane, (s.h, s.w), y0, x0, alpha, width, row, d);
                (d, row)
            };
            match job.tile {
                Tile::F2 => input_run_f2(src, drow, tmp, row, r.len, v, nt, r.k0),
                Tile::F4 => {
                    #[cfg(target_arch = "x86_64")]
                    if avx512 {
                        // SAFETY: the CPU has AVX-512 (checked above).
                        unsafe { input_run_f4_avx512(src, drow, tmp, row, r.len, v, nt, r.k0) };
                        continue;
                    } else if avx2 {
                        // SAFETY: the CPU has AVX2 and FMA (checked above).
                        unsafe { input_run_f4_avx2(src, drow, tmp, row, r.len, v, nt, r.k0) };
                        continue;
                    }
                    input_run_f4(src, drow, tmp, row, r.len, v, nt, r.k0)
                }
            }
        }
    }
}

/// `M_e = U_e V_e` (`cout x nt`, into `m_e`), with `V_e` read from the `[ci][e][k]` layout.
fn product(job: &Job<'_>, nt: usize, e: usize, v: &[f32], m_e: &mut [f32]) {
    let (cin, cout) = (job.cin, job.cout);
    let a2 = job.tile.alpha() * job.tile.alpha();
    assert!(v.len() >= a2 * cin * nt && m_e.len() >= cout * nt);
    // SAFETY: U_e is `cout x cin` row-major inside `u`; V_e is `cin x nt` at row stride
    // `α² nt` from `v[e * nt]`, inside `v` (asserted); M_e is `cout x nt` row-major inside
    // `m_e` (asserted), which nothing else accesses.
    unsafe {
        sgemm_raw(
            cout,
            nt,
            cin,
            job.u[e * cout * cin..].as_ptr(),
            cin,
            1,
            v[e * nt..].as_ptr(),
            a2 * nt,
            1,
            m_e.as_mut_ptr(),
            nt,
            1,
            false,
            Backend::Gemm,
            Threading::Single,
        );
    }
}

/// `Y = Aᵀ M A + bias`, then the activation, into the output rows of each run's tiles, for
/// the output channels `cos`.
fn output_transform(
    job: &Job<'_>,
    runs: &[Run],
    nt: usize,
    cos: std::ops::Range<usize>,
    m: &[f32],
    rows_out: &mut [f32],
) {
    let (cout, s) = (job.cout, job.s);
    let mt = job.tile.m();
    let row = rows_out.len() / mt;
    #[cfg(target_arch = "x86_64")]
    let avx512 = crate::ops::simd::has_avx512();
    let plane_out = s.oh * s.ow;
    for co in cos {
        let bv = job.bias.map_or(0.0, |b| b[co]);
        for r in runs {
            let moff = co * nt + r.k0;
            match job.tile {
                Tile::F2 => output_run_f2(m, cout * nt, moff, r.len, bv, rows_out, row),
                Tile::F4 => {
                    #[cfg(target_arch = "x86_64")]
                    if avx512 {
                        // SAFETY: the CPU has AVX-512 (checked above).
                        unsafe {
                            output_run_f4_avx512(m, cout * nt, moff, r.len, bv, rows_out, row)
                        }
                    } else {
                        output_run_f4(m, cout * nt, moff, r.len, bv, rows_out, row)
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    output_run_f4(m, cout * nt, moff, r.len, bv, rows_out, row)
                }
            }
            let ox0 = mt * r.tx0;
            let cols = (mt * r.len).min(s.ow - ox0);
            let base = (r.b * cout + co) * plane_out;
            for dy in 0..mt {
                let oy = mt * r.ty + dy;
                if oy >= s.oh {
                    break;
                }
                let src = &mut rows_out[dy * row..dy * row + cols];
                job.activation.apply_slice(src);
                // SAFETY: row `oy`, columns `ox0..ox0 + cols` of plane (b, co) belong to
                // this run's tiles only, each tile to exactly one chunk, and each output
                // channel to one call.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        src.as_ptr(),
                        job.out.0.add(base + oy * s.ow + ox0),
                        cols,
                    );
                }
            }
        }
    }
}

thread_local! {
    /// Per-thread buffer of a chunk's transformed input and products.
    static SCRATCH: super::Scratch = const { std::cell::RefCell::new(Vec::new()) };
}

// ---------------------------------------------------------------------------------------
// NHWC, for the backbones' and the graph models' convolutions (`conv_nhwc`).
//
// There each pixel's channels are contiguous, so the transforms run across channels (a tile
// at a time, the α² input pixels' channel rows combined into α² transformed rows), and each
// of the α² products is a `packed_gemm` product of a chunk's tiles `[T, C]` by the
// transformed filter `[C, CO]`, packed at load: F(2x2)'s 16, and F(4x4)'s 36 (4x the
// filter) only for filters packed allowing F(4x4) (`PackedFilter::allowing_f4`); a plan takes
// F(4x4) on the maps where `Tile::for_nhwc_output` does (see [`NhwcWinogradPlan::new`]).

/// The Winograd weights of an NHWC 3x3 filter `[3, 3, C, CO]`: each product's `[C, CO]`
/// matrix `U_e`, packed for [`super::packed_gemm`], and the bias added after the output
/// transform.
#[derive(Clone, Debug, PartialEq)]
pub struct NhwcWinograd {
    c: usize,
    co: usize,
    /// F(2x2)'s 16 products.
    f2: Vec<PackedMatrix>,
    /// F(4x4)'s 36 products, where F(4x4) was asked for and the channels are enough
    /// ([`NHWC_F4_MIN_CHANNELS`]). Made at load (on a first frame, 7 of YOLACT's layers
    /// took 100 ms to make them).
    f4: Option<Vec<PackedMatrix>>,
    bias: Vec<f32>,
}

/// Input and output channels below which [`NhwcWinograd`] is not made: the transforms cost
/// as much as the products save. NanoDet's layers at one thread on a Zen 3, Winograd against
/// the direct path: 1.5-1.7x faster at 128 channels (52x52), 1.2-1.7x at 64, 0.7-1.4x at 32,
/// 0.45-0.9x at 16.
pub const NHWC_WINOGRAD_MIN_CHANNELS: usize = 64;

/// Input and output channels from which F(4x4) is taken on large maps. On a Zen 4 (2 threads)
/// F(4x4) took 64-channel maps of 109x109 and 200x301 (ResNet-50's layer1 at 435x435 and
/// 800x1203) at 1.35-1.4x F(2x2)'s speed.
const NHWC_F4_MIN_CHANNELS: usize = 64;

/// Bytes of a chunk's transformed tiles and products: half of a core's L2 (512 KB on a Zen
/// 3), so that the products read and the output transform reads them there.
const NHWC_CHUNK_BYTES: usize = 256 << 10;

/// Parts of the tile rows per thread (each with its scratch).
const NHWC_PARTS_PER_THREAD: usize = 3;

/// F(2x2) tiles in all from which an NHWC convolution splits its rows of tiles between the
/// threads (a few rows of tiles).
const NHWC_MIN_TILES: usize = 64;

/// F(2x2) tiles in all from which an NHWC convolution takes Winograd, with fewer than
/// [`NHWC_MIN_TILES`] by products ([`NhwcWinogradPlan::by_products`]).
const NHWC_MIN_TILES_BY_PRODUCTS: usize = 16;

/// Multiply-adds each of the 16 products needs at least for Winograd by products: a task of
/// its own (ResNet-50's 14x14 and 7x7 maps: 3.2 M and 4.2 M). The small maps of mobile
/// networks (64 channels on 8x8: 65 k) keep the direct path, whose speed they were tuned on.
const NHWC_BY_PRODUCTS_MIN_MACS: usize = 1 << 20;

impl NhwcWinograd {
    /// The weights of `w` (`[3, 3, C, CO]`, row-major) with `bias` (`CO` values) or none,
    /// with F(4x4) where `f4` says so and the channels are enough; `None` for other filters
    /// or fewer channels than [`NHWC_WINOGRAD_MIN_CHANNELS`].
    pub fn new(
        w: &[f32],
        [kh, kw, c, co]: [usize; 4],
        bias: Option<&[f32]>,
        f4: bool,
    ) -> super::Result<Option<NhwcWinograd>> {
        if (kh, kw) != (3, 3)
            || c < NHWC_WINOGRAD_MIN_CHANNELS
            || co < NHWC_WINOGRAD_MIN_CHANNELS
            || w.len() != 9 * c * co
            || bias.is_some_and(|b| b.len() != co)
        {
            return Ok(None);
        }
        // The shared transform takes `[CO, C, 3, 3]`.
        let mut oihw = vec![0f32; co * c * 9];
        for k in 0..9 {
            for ci in 0..c {
                for o in 0..co {
                    oihw[(o * c + ci) * 9 + k] = w[(k * c + ci) * co + o];
                }
            }
        }
        let f4 = f4 && c >= NHWC_F4_MIN_CHANNELS && co >= NHWC_F4_MIN_CHANNELS;
        Ok(Some(NhwcWinograd {
            c,
            co,
            f2: packed_products(Tile::F2, &oihw, c, co)?,
            f4: f4
                .then(|| packed_products(Tile::F4, &oihw, c, co))
                .transpose()?,
            bias: bias.map_or_else(|| vec![0.0; co], <[f32]>::to_vec),
        }))
    }

    /// F(4x4)'s products; an error where there are none (a plan never asks for them then).
    fn f4_products(&self) -> super::Result<&[PackedMatrix]> {
        self.f4
            .as_deref()
            .ok_or_else(|| super::LayerError::Invalid {
                op: "conv_nhwc_winograd",
                msg: format!(
                    "a {} -> {} filter made without F(4x4) products",
                    self.c, self.co
                ),
            })
    }
}

/// The α² products' `[C, CO]` matrices `U_e` of `tile` for the filter `oihw` (`[CO, C, 3,
/// 3]`), packed.
fn packed_products(
    tile: Tile,
    oihw: &[f32],
    c: usize,
    co: usize,
) -> super::Result<Vec<PackedMatrix>> {
    // `[α²][CO][C]`, each product transposed into `[C, CO]`.
    let u = transform_weights(tile, oihw, co, c);
    (0..tile.alpha() * tile.alpha())
        .into_par_iter()
        .map(|e| {
            let mut b = vec![0f32; c * co];
            for o in 0..co {
                for ci in 0..c {
                    b[ci * co + o] = u[(e * co + o) * c + ci];
                }
            }
            PackedMatrix::new(&b, c, co, None)
        })
        .collect()
}

/// How [`conv_nhwc_winograd`] splits an output of `oh x ow` pixels: the tile size, rows of
/// tiles per chunk, chunks run one after the other by each of `parts` parts, and the scratch
/// it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NhwcWinogradPlan {
    tile: Tile,
    tile_rows_per_chunk: usize,
    parts: usize,
    /// Few tiles (a ResNet's 14x14 maps: 49): every tile transformed first, then the 16
    /// products split between the threads, each reading its transformed filter once, then
    /// the output transform. Split by rows of tiles instead, each part would read all 16
    /// filters (4 MB at 256 channels), from memory, for a row or two of tiles. F(2x2) only.
    pub(crate) by_products: bool,
    /// Scratch values of each part: a row of zeros, then a chunk's transformed tiles and
    /// products.
    part_len: usize,
    pub scratch: usize,
}

impl NhwcWinogradPlan {
    /// The plan of `wino` for an `[N, OH, OW, CO]` output on up to `threads` threads, if
    /// Winograd is on (`KERNELS_WINOGRAD`) and the output has enough tiles.
    pub fn new(
        wino: &NhwcWinograd,
        n: usize,
        oh: usize,
        ow: usize,
        threads: usize,
    ) -> Option<Self> {
        let f2_tiles = n * oh.div_ceil(2) * ow.div_ceil(2);
        if mode() == Mode::Off || f2_tiles < NHWC_MIN_TILES_BY_PRODUCTS {
            return None;
        }
        let (c, co) = (wino.c, wino.co);
        if f2_tiles < NHWC_MIN_TILES {
            if f2_tiles * c * co < NHWC_BY_PRODUCTS_MIN_MACS {
                return None;
            }
            // One chunk: every row of tiles of every image.
            let len = c + 16 * f2_tiles * (c + co);
            return Some(NhwcWinogradPlan {
                tile: Tile::F2,
                tile_rows_per_chunk: n * oh.div_ceil(2),
                parts: 1,
                by_products: true,
                part_len: len,
                scratch: len,
            });
        }
        let tile = match Tile::for_nhwc_output(n, oh, ow) {
            Tile::F4 if wino.f4.is_some() => Tile::F4,
            _ => Tile::F2,
        };
        let (m, a2) = (tile.m(), tile.alpha() * tile.alpha());
        let (ty, tx) = (oh.div_ceil(m), ow.div_ceil(m));
        let row_bytes = a2 * tx * (c + co) * 4;
        let tile_rows_per_chunk = (NHWC_CHUNK_BYTES / row_bytes.max(1)).clamp(1, ty);
        // A few parts per thread, taken as threads come free: a vCPU slowed by another
        // process would hold a half up (2 parts on 2 threads ran 0.88x the direct path).
        let parts = (threads * NHWC_PARTS_PER_THREAD).clamp(1, ty);
        let part_len = c + a2 * tile_rows_per_chunk * tx * (c + co);
        Some(NhwcWinogradPlan {
            tile,
            tile_rows_per_chunk,
            parts,
            by_products: false,
            part_len,
            scratch: parts * part_len,
        })
    }

    /// Whether the plan takes F(4x4).
    pub fn is_f4(&self) -> bool {
        self.tile == Tile::F4
    }
}

/// A 3x3, stride-1, undilated convolution of `x` (`[N, H, W, C]`, padded by `pad` =
/// (top, left) with zeros) into `out` (`[N, OH, OW, CO]`) by Winograd (F(2x2) or F(4x4), as
/// `plan` says), then `epilogue` on each block of finished output rows (their first pixel's
/// index in the output, and their values). Each part of the output rows runs on its own
/// thread, chunk by chunk of tile rows: the α² transformed input rows of each tile, α²
/// products `[T, C] x [C, CO]`, and the output transform with the bias. The same bits
/// whatever the threads.
#[allow(clippy::too_many_arguments)]
pub fn conv_nhwc_winograd(
    x: &[f32],
    [n, h, wd, c]: [usize; 4],
    wino: &NhwcWinograd,
    pad: (usize, usize),
    [oh, ow]: [usize; 2],
    plan: &NhwcWinogradPlan,
    out: &mut [f32],
    scratch: &mut [f32],
    epilogue: Epilogue<'_>,
) -> super::Result<()> {
    const OP: &str = "conv_nhwc_winograd";
    let co = wino.co;
    let (m, a) = (plan.tile.m(), plan.tile.alpha());
    let tx = ow.div_ceil(m);
    let chunk_len = a * a * plan.tile_rows_per_chunk * tx * (c + co);
    if wino.c != c
        || x.len() != n * h * wd * c
        || out.len() != n * oh * ow * co
        || scratch.len() < plan.scratch
        || (!plan.by_products && plan.part_len != c + chunk_len)
    {
        return super::shape_err(
            OP,
            format!(
                "an input of {} values [{n}, {h}, {wd}, {c}], an output of {} [{n}, {oh}, {ow}, {co}] and a scratch of {} do not fit {plan:?}",
                x.len(),
                out.len(),
                scratch.len()
            ),
        );
    }
    if out.is_empty() {
        return Ok(());
    }
    let job = RowsJob {
        x,
        dims: [n, h, wd, c],
        co,
        bias: &wino.bias,
        pad,
        out_size: [oh, ow],
        plan,
        epilogue,
    };
    match (plan.by_products, plan.tile) {
        (true, _) => f2_by_products(&job, &wino.f2, out, scratch),
        (false, Tile::F2) => by_rows::<4, 2, F2x2>(&job, &wino.f2, out, scratch),
        (false, Tile::F4) => by_rows::<6, 4, F4x4>(&job, wino.f4_products()?, out, scratch),
    }
}

/// The arguments of [`conv_nhwc_winograd`] that [`by_rows`] and [`f2_by_products`] read.
struct RowsJob<'a> {
    x: &'a [f32],
    dims: [usize; 4],
    co: usize,
    bias: &'a [f32],
    pad: (usize, usize),
    out_size: [usize; 2],
    plan: &'a NhwcWinogradPlan,
    epilogue: Epilogue<'a>,
}

/// [`conv_nhwc_winograd`] by rows of `M x M` tiles (`A = M + 2`), split into parts.
fn by_rows<const A: usize, const M: usize, T: Transforms<A, M>>(
    job: &RowsJob<'_>,
    products: &[PackedMatrix],
    out: &mut [f32],
    scratch: &mut [f32],
) -> super::Result<()> {
    let [n, h, wd, c] = job.dims;
    let [oh, ow] = job.out_size;
    let (co, plan) = (job.co, job.plan);
    let (ty, tx) = (oh.div_ceil(M), ow.div_ceil(M));
    // Tile rows `rows` of image `b` into `orows` (their output rows), with `buf` as scratch.
    let part = |b: usize, rows: std::ops::Range<usize>, orows: &mut [f32], buf: &mut [f32]| {
        let xb = &job.x[b * h * wd * c..(b + 1) * h * wd * c];
        let (zero, buf) = buf.split_at_mut(c);
        zero.fill(0.0);
        let zero = &*zero;
        let mut ty0 = rows.start;
        while ty0 < rows.end {
            let ty1 = (ty0 + plan.tile_rows_per_chunk).min(rows.end);
            let t_len = (ty1 - ty0) * tx;
            let (v, m) = buf.split_at_mut(A * A * t_len * c);
            let m = &mut m[..A * A * t_len * co];
            for t in 0..t_len {
                let tile = (ty0 + t / tx, t % tx);
                input_tile::<A, M, T>(xb, [h, wd, c], zero, job.pad, tile, v, (t, t_len));
            }
            for (e, product) in products.iter().enumerate() {
                super::packed_gemm::gemm_packed_runs_then(
                    t_len,
                    &v[e * t_len * c..(e + 1) * t_len * c],
                    c,
                    Runs::row(c),
                    product,
                    &mut m[e * t_len * co..(e + 1) * t_len * co],
                    co,
                    0,
                    &|_, _| {},
                )?;
            }
            let (oy0, oy1) = (
                M * (ty0 - rows.start),
                (M * (ty1 - rows.start)).min(orows.len() / (ow * co)),
            );
            let oband = &mut orows[oy0 * ow * co..oy1 * ow * co];
            for t in 0..t_len {
                let (r, txx) = (t / tx, t % tx);
                nhwc_output_tile::<A, M, T>(
                    m,
                    (t, t_len),
                    job.bias,
                    oband,
                    (M * r, M * txx),
                    (oy1 - oy0, ow),
                );
            }
            (job.epilogue)((b * oh + M * rows.start + oy0) * ow, oband);
            ty0 = ty1;
        }
        Ok::<(), super::LayerError>(())
    };
    let macs = n * ty * tx * A * A * c * co;
    // Units of rows of tiles: `M` output rows each (fewer in the last one).
    super::conv_nhwc::in_parts(
        out,
        (n, ty, M * ow * co),
        (plan.parts, macs),
        (scratch, plan.part_len),
        part,
    )
}

/// The input transform of the `M x M` output tile `(ty, tx)` of image `xb` (`[H, W, C]`,
/// padded by `pad` with `zero`, `C` zeros) into row `t` of the α² `[t_len, C]` matrices of
/// `v`.
#[allow(clippy::too_many_arguments)]
fn input_tile<const A: usize, const M: usize, T: Transforms<A, M>>(
    xb: &[f32],
    [h, wd, c]: [usize; 3],
    zero: &[f32],
    pad: (usize, usize),
    (ty, tx): (usize, usize),
    v: &mut [f32],
    (t, t_len): (usize, usize),
) {
    let iy0 = (M * ty) as isize - pad.0 as isize;
    let ix0 = (M * tx) as isize - pad.1 as isize;
    let pixel = |i: usize, j: usize| -> &[f32] {
        let (iy, ix) = (iy0 + i as isize, ix0 + j as isize);
        if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= wd {
            zero
        } else {
            let at = (iy as usize * wd + ix as usize) * c;
            &xb[at..at + c]
        }
    };
    let d: [[&[f32]; A]; A] = std::array::from_fn(|i| std::array::from_fn(|j| pixel(i, j)));
    nhwc_input_tile::<A, M, T>(&d, v, (t, t_len, c));
}

/// [`conv_nhwc_winograd`] for few tiles ([`NhwcWinogradPlan::by_products`]): the input transform
/// of every tile, the 16 products as tasks of their own, then the output transform by rows
/// of tiles, each band followed by `epilogue`. The same bits as by rows of tiles.
fn f2_by_products(
    job: &RowsJob<'_>,
    products: &[PackedMatrix],
    out: &mut [f32],
    scratch: &mut [f32],
) -> super::Result<()> {
    let (x, [n, h, wd, c], [oh, ow], co) = (job.x, job.dims, job.out_size, job.co);
    let (ty, tx) = (oh.div_ceil(2), ow.div_ceil(2));
    let tiles = n * ty * tx;
    let (zero, rest) = scratch.split_at_mut(c);
    zero.fill(0.0);
    let zero = &*zero;
    let (v, rest) = rest.split_at_mut(16 * tiles * c);
    let m = &mut rest[..16 * tiles * co];
    for t in 0..tiles {
        let b = t / (ty * tx);
        let xb = &x[b * h * wd * c..(b + 1) * h * wd * c];
        let tile = (t / tx % ty, t % tx);
        input_tile::<4, 2, F2x2>(xb, [h, wd, c], zero, job.pad, tile, v, (t, tiles));
    }
    let parallel = rayon::current_num_threads() > 1 && !crate::process::in_parallel_task();
    let product = |((m, v), product): ((&mut [f32], &[f32]), &super::packed_gemm::PackedMatrix)| {
        super::packed_gemm::gemm_packed_runs_then(
            tiles,
            v,
            c,
            Runs::row(c),
            product,
            m,
            co,
            0,
            &|_, _| {},
        )
    };
    if parallel {
        m.par_chunks_mut(tiles * co)
            .zip(v.par_chunks(tiles * c))
            .zip(products.par_iter())
            .try_for_each(product)?;
    } else {
        m.chunks_mut(tiles * co)
            .zip(v.chunks(tiles * c))
            .zip(products)
            .try_for_each(product)?;
    }
    let m = &*m;
    // A band of output rows per row of tiles (two rows; the last one where OH is odd).
    let band = |b: usize, (tyy, oband): (usize, &mut [f32])| {
        let rows = oband.len() / (ow * co);
        for txx in 0..tx {
            let t = (b * ty + tyy) * tx + txx;
            let at = (0, 2 * txx);
            nhwc_output_tile::<4, 2, F2x2>(m, (t, tiles), job.bias, oband, at, (rows, ow));
        }
        (job.epilogue)((b * oh + 2 * tyy) * ow, oband);
    };
    for (b, image) in out.chunks_mut(oh * ow * co).enumerate() {
        if parallel {
            image
                .par_chunks_mut(2 * ow * co)
                .enumerate()
                .for_each(|r| band(b, r));
        } else {
            image
                .chunks_mut(2 * ow * co)
                .enumerate()
                .for_each(|r| band(b, r));
        }
    }
    Ok(())
}

/// A tile's input transform for channels `from..c` (the vector versions below take whole
/// blocks of 8 first): `d` its α x α input pixels (`C` values each, zeros outside the image);
/// `(Bᵀ d B)_e` goes to row `t` of product `e`'s `[t_len, C]` matrix in `v`.
// `i` picks the second index of `cols`, which no iterator gives.
#[allow(clippy::needless_range_loop)]
fn nhwc_input_tile_scalar<const A: usize, const M: usize, T: Transforms<A, M>>(
    d: &[[&[f32]; A]; A],
    v: &mut [f32],
    (t, t_len): (usize, usize),
    (from, c): (usize, usize),
) {
    for ch in from..c {
        // `Bᵀ d` (the tile's rows combined), then `· B` (its columns combined).
        let cols: [[f32; A]; A] =
            std::array::from_fn(|j| T::bt(std::array::from_fn(|i| d[i][j][ch])));
        for i in 0..A {
            let row = T::bt(std::array::from_fn(|j| cols[j][i]));
            for (j, r) in row.into_iter().enumerate() {
                v[((i * A + j) * t_len + t) * c + ch] = r;
            }
        }
    }
}

/// A tile's output transform for channels `from..CO` (`CO = bias.len()`; the vector versions
/// below take whole blocks of 8 first): `Aᵀ m A` + bias of tile `t` (row `t` of each
/// product's `[t_len, CO]` matrix in `m`), into the output pixels at `(y0, x0)` of `out`
/// (`rows x ow` pixels of `CO` values) that lie inside.
#[allow(clippy::needless_range_loop)]
fn nhwc_output_tile_scalar<const A: usize, const M: usize, T: Transforms<A, M>>(
    m: &[f32],
    (t, t_len): (usize, usize),
    (bias, from): (&[f32], usize),
    out: &mut [f32],
    (y0, x0): (usize, usize),
    (rows, ow): (usize, usize),
) {
    let co = bias.len();
    let (ny, nx) = (M.min(rows - y0), M.min(ow - x0));
    for o in from..co {
        // `Aᵀ m` (rows combined), then `· A` (columns combined), then the bias.
        let cols: [[f32; M]; A] = std::array::from_fn(|j| {
            T::at(std::array::from_fn(|i| {
                m[((i * A + j) * t_len + t) * co + o]
            }))
        });
        for i in 0..ny {
            let row = T::at(std::array::from_fn(|j| cols[j][i]));
            for (j, r) in row.into_iter().enumerate().take(nx) {
                out[((y0 + i) * ow + x0 + j) * co + o] = r + bias[o];
            }
        }
    }
}

/// [`nhwc_input_tile_scalar`] on blocks of 8 channels `0..full` with AVX2 vectors, `bt` being
/// `Bᵀ` on vectors (the same operations in the same order as [`Transforms::bt`], so the same
/// bits). Inlined into the `avx2` functions below, which compile it for AVX2.
///
/// # Safety
/// The CPU must support AVX2; `full % 8 == 0`, `full <= c`, `t < t_len`, every pixel of `d`
/// has `c` values and `v` has `A² t_len c`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::needless_range_loop)] // As in the scalar version.
unsafe fn nhwc_input_tile_vectors<const A: usize>(
    d: &[[&[f32]; A]; A],
    v: &mut [f32],
    (t, t_len): (usize, usize),
    (full, c): (usize, usize),
    bt: impl Fn([__m256; A]) -> [__m256; A],
) {
    let vp = v.as_mut_ptr();
    for ch in (0..full).step_by(8) {
        let cols: [[__m256; A]; A] = std::array::from_fn(|j| {
            bt(std::array::from_fn(|i| {
                _mm256_loadu_ps(d[i][j].as_ptr().add(ch))
            }))
        });
        for i in 0..A {
            let row = bt(std::array::from_fn(|j| cols[j][i]));
            for (j, r) in row.into_iter().enumerate() {
                _mm256_storeu_ps(vp.add(((i * A + j) * t_len + t) * c + ch), r);
            }
        }
    }
}

/// [`nhwc_output_tile_scalar`] on blocks of 8 channels `0..full` with AVX2 vectors, `at`
/// being `Aᵀ` on vectors (as [`nhwc_input_tile_vectors`]).
///
/// # Safety
/// The CPU must support AVX2; `full % 8 == 0`, `full <= CO` (`CO = bias.len()`), `t <
/// t_len`, `m` has `A² t_len CO` values, `(y0, x0)` lies within `rows x ow` and `out` has
/// `rows · ow · CO`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::needless_range_loop)] // As in the scalar version.
unsafe fn nhwc_output_tile_vectors<const A: usize, const M: usize>(
    m: &[f32],
    (t, t_len): (usize, usize),
    (bias, full): (&[f32], usize),
    out: &mut [f32],
    (y0, x0): (usize, usize),
    (rows, ow): (usize, usize),
    at: impl Fn([__m256; A]) -> [__m256; M],
) {
    let co = bias.len();
    let (ny, nx) = (M.min(rows - y0), M.min(ow - x0));
    let (mp, op) = (m.as_ptr(), out.as_mut_ptr());
    for o in (0..full).step_by(8) {
        let b = _mm256_loadu_ps(bias.as_ptr().add(o));
        let cols: [[__m256; M]; A] = std::array::from_fn(|j| {
            at(std::array::from_fn(|i| {
                _mm256_loadu_ps(mp.add(((i * A + j) * t_len + t) * co + o))
            }))
        });
        for i in 0..ny {
            let row = at(std::array::from_fn(|j| cols[j][i]));
            for (j, r) in row.into_iter().enumerate().take(nx) {
                let dst = op.add(((y0 + i) * ow + x0 + j) * co + o);
                _mm256_storeu_ps(dst, _mm256_add_ps(r, b));
            }
        }
    }
}

/// F(2x2)'s [`nhwc_input_tile_vectors`].
///
/// # Safety
/// As [`nhwc_input_tile_vectors`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn nhwc_input_tile_f2_avx2(
    d: &[[&[f32]; 4]; 4],
    v: &mut [f32],
    tile: (usize, usize),
    channels: (usize, usize),
) {
    // As F2x2::bt.
    nhwc_input_tile_vectors::<4>(d, v, tile, channels, |[x0, x1, x2, x3]| {
        [
            _mm256_sub_ps(x0, x2),
            _mm256_add_ps(x1, x2),
            _mm256_sub_ps(x2, x1),
            _mm256_sub_ps(x1, x3),
        ]
    })
}

/// F(4x4)'s [`nhwc_input_tile_vectors`].
///
/// # Safety
/// As [`nhwc_input_tile_vectors`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn nhwc_input_tile_f4_avx2(
    d: &[[&[f32]; 6]; 6],
    v: &mut [f32],
    tile: (usize, usize),
    channels: (usize, usize),
) {
    let (c4, c5, c2) = (
        _mm256_set1_ps(4.0),
        _mm256_set1_ps(5.0),
        _mm256_set1_ps(2.0),
    );
    nhwc_input_tile_vectors::<6>(d, v, tile, channels, |x| {
        bt_f4_vectors!(
            _mm256_add_ps,
            _mm256_sub_ps,
            _mm256_mul_ps,
            [c4, c5, c2],
            [x[0], x[1], x[2], x[3], x[4], x[5]]
        )
    })
}

/// F(2x2)'s [`nhwc_output_tile_vectors`].
///
/// # Safety
/// As [`nhwc_output_tile_vectors`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn nhwc_output_tile_f2_avx2(
    m: &[f32],
    tile: (usize, usize),
    bias: (&[f32], usize),
    out: &mut [f32],
    at: (usize, usize),
    size: (usize, usize),
) {
    // As F2x2::at.
    nhwc_output_tile_vectors::<4, 2>(m, tile, bias, out, at, size, |[x0, x1, x2, x3]| {
        [
            _mm256_add_ps(_mm256_add_ps(x0, x1), x2),
            _mm256_sub_ps(_mm256_sub_ps(x1, x2), x3),
        ]
    })
}

/// F(4x4)'s [`nhwc_output_tile_vectors`].
///
/// # Safety
/// As [`nhwc_output_tile_vectors`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn nhwc_output_tile_f4_avx2(
    m: &[f32],
    tile: (usize, usize),
    bias: (&[f32], usize),
    out: &mut [f32],
    at: (usize, usize),
    size: (usize, usize),
) {
    let (c2, c4, c8) = (
        _mm256_set1_ps(2.0),
        _mm256_set1_ps(4.0),
        _mm256_set1_ps(8.0),
    );
    // As F4x4::at.
    nhwc_output_tile_vectors::<6, 4>(m, tile, bias, out, at, size, |x| {
        let (s12, d12) = (_mm256_add_ps(x[1], x[2]), _mm256_sub_ps(x[1], x[2]));
        let (s34, d34) = (_mm256_add_ps(x[3], x[4]), _mm256_sub_ps(x[3], x[4]));
        [
            _mm256_add_ps(_mm256_add_ps(x[0], s12), s34),
            _mm256_add_ps(d12, _mm256_mul_ps(d34, c2)),
            _mm256_add_ps(s12, _mm256_mul_ps(s34, c4)),
            _mm256_add_ps(_mm256_add_ps(d12, _mm256_mul_ps(d34, c8)), x[5]),
        ]
    })
}

/// A vector input transform ([`nhwc_input_tile_vectors`] for one tile size).
#[cfg(target_arch = "x86_64")]
type InputVectors<const A: usize> =
    unsafe fn(&[[&[f32]; A]; A], &mut [f32], (usize, usize), (usize, usize));

/// A vector output transform ([`nhwc_output_tile_vectors`] for one tile size).
#[cfg(target_arch = "x86_64")]
type OutputVectors =
    unsafe fn(&[f32], (usize, usize), (&[f32], usize), &mut [f32], (usize, usize), (usize, usize));

/// The input transform of one tile (its α x α input pixels `d`, into row `t` of the α²
/// `[t_len, C]` matrices of `v`) for `(α, m)` = `(A, M)`: whole blocks of 8 channels with
/// AVX2 ([`Transforms::NHWC_INPUT_VECTORS`]) where the CPU has it, the rest one by one.
#[inline(always)]
fn nhwc_input_tile<const A: usize, const M: usize, T: Transforms<A, M>>(
    d: &[[&[f32]; A]; A],
    v: &mut [f32],
    (t, t_len, c): (usize, usize, usize),
) {
    let mut from = 0;
    #[cfg(target_arch = "x86_64")]
    if t < t_len
        && v.len() >= A * A * t_len * c
        && d.iter().flatten().all(|p| p.len() >= c)
        && crate::__has_avx2()
    {
        from = c / 8 * 8;
        // SAFETY: the CPU has AVX2 and FMA; every read is within a pixel's `c` values and
        // every write within `v` (checked above).
        unsafe { T::NHWC_INPUT_VECTORS(d, v, (t, t_len), (from, c)) };
    }
    nhwc_input_tile_scalar::<A, M, T>(d, v, (t, t_len), (from, c));
}

/// The output transform of one tile ([`nhwc_output_tile_scalar`]) for `(α, m)` = `(A, M)`,
/// as [`nhwc_input_tile`].
#[inline(always)]
fn nhwc_output_tile<const A: usize, const M: usize, T: Transforms<A, M>>(
    m: &[f32],
    (t, t_len): (usize, usize),
    bias: &[f32],
    out: &mut [f32],
    (y0, x0): (usize, usize),
    (rows, ow): (usize, usize),
) {
    let co = bias.len();
    let mut from = 0;
    #[cfg(target_arch = "x86_64")]
    if t < t_len
        && m.len() >= A * A * t_len * co
        && y0 < rows
        && x0 < ow
        && out.len() >= rows * ow * co
        && crate::__has_avx2()
    {
        from = co / 8 * 8;
        // SAFETY: the CPU has AVX2 and FMA; every read is within `m` and `bias`, and every
        // write within the `rows x ow` pixels of `out` (checked above).
        unsafe { T::NHWC_OUTPUT_VECTORS(m, (t, t_len), (bias, from), out, (y0, x0), (rows, ow)) };
    }
    nhwc_output_tile_scalar::<A, M, T>(m, (t, t_len), (bias, from), out, (y0, x0), (rows, ow));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct 3x3 convolution, stride 1, in f64.
    fn direct(
        x: &[f32],
        wgt: &[f32],
        bias: &[f32],
        (n, cin, h, w): (usize, usize, usize, usize),
        cout: usize,
        pad: usize,
    ) -> Vec<f64> {
        let (oh, ow) = (h + 2 * pad - 2, w + 2 * pad - 2);
        let mut out = vec![0f64; n * cout * oh * ow];
        for b in 0..n {
            for co in 0..cout {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = bias[co] as f64;
                        for ci in 0..cin {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let y = oy as isize + ky as isize - pad as isize;
                                    let xx = ox as isize + kx as isize - pad as isize;
                                    if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                                        continue;
                                    }
                                    acc += x[((b * cin + ci) * h + y as usize) * w + xx as usize]
                                        as f64
                                        * wgt[((co * cin + ci) * 3 + ky) * 3 + kx] as f64;
                                }
                            }
                        }
                        out[((b * cout + co) * oh + oy) * ow + ox] = acc;
                    }
                }
            }
        }
        out
    }

    /// Uniform values in [-1, 1) from a seeded LCG.
    fn uniform(mut seed: u64) -> impl FnMut() -> f32 {
        move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u32 << 24) as f32) * 2.0 - 1.0
        }
    }

    #[test]
    fn matches_a_direct_convolution_on_odd_sizes_and_paddings() {
        let mut rnd = uniform(1);
        for &(n, cin, cout, h, w, pad) in &[
            (1, 16, 16, 5, 7, 1),
            (3, 17, 20, 6, 6, 1),
            (2, 16, 24, 9, 4, 0),
            (1, 32, 16, 1, 1, 1),
            (1, 16, 16, 3, 3, 2),
            (1, 16, 16, 9, 150, 1),
            (2, 16, 16, 6, 70, 0),
        ] {
            let x: Vec<f32> = (0..n * cin * h * w).map(|_| rnd()).collect();
            let wgt: Vec<f32> = (0..cout * cin * 9).map(|_| rnd()).collect();
            let bias: Vec<f32> = (0..cout).map(|_| rnd()).collect();
            let want = direct(&x, &wgt, &bias, (n, cin, h, w), cout, pad);
            let (oh, ow) = (h + 2 * pad - 2, w + 2 * pad - 2);
            for tile in [Tile::F2, Tile::F4] {
                let mut out = vec![f32::NAN; n * cout * oh * ow];
                let wt = WinogradWeights::new(cout, cin);
                forward_tile(
                    tile,
                    &wt,
                    &wgt,
                    Some(&bias),
                    Activation::Identity,
                    &x,
                    Shape {
                        n,
                        h,
                        w,
                        pad: (pad, pad),
                        oh,
                        ow,
                    },
                    &mut out,
                );
                // F(4x4) rounds about 10x more (worst measured here: 4.7e-5; F(2x2) 2.5e-6).
                let tol = if tile == Tile::F2 { 1e-5 } else { 1e-4 };
                for (i, (&a, &b)) in out.iter().zip(&want).enumerate() {
                    assert!(
                        (a as f64 - b).abs() <= tol * b.abs().max(1.0),
                        "{tile:?} {n}x{cin}x{h}x{w} pad {pad}: [{i}] {a} vs {b}"
                    );
                }
            }
        }
    }

    /// A map of few F(2x2) tiles on several threads (every step split between them) gives
    /// the bits of one thread's chunk.
    #[test]
    fn few_tiles_on_several_threads_give_one_threads_bits() {
        let mut rnd = uniform(3);
        let (cin, cout, h, w) = (24, 40, 14, 14);
        let x: Vec<f32> = (0..cin * h * w).map(|_| rnd()).collect();
        let wgt: Vec<f32> = (0..cout * cin * 9).map(|_| rnd()).collect();
        let bias: Vec<f32> = (0..cout).map(|_| rnd()).collect();
        let want = direct(&x, &wgt, &bias, (1, cin, h, w), cout, 1);
        let s = Shape {
            n: 1,
            h,
            w,
            pad: (1, 1),
            oh: h,
            ow: w,
        };
        assert_eq!(Tile::for_output(1, h, w), Tile::F2);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let wt = WinogradWeights::new(cout, cin);
            let mut out = vec![f32::NAN; cout * h * w];
            pool.install(|| {
                forward_tile(
                    Tile::F2,
                    &wt,
                    &wgt,
                    Some(&bias),
                    Activation::Relu,
                    &x,
                    s,
                    &mut out,
                )
            });
            out
        };
        let one = run(1);
        for (i, (&a, &b)) in one.iter().zip(&want).enumerate() {
            let b = b.max(0.0);
            assert!(
                (a as f64 - b).abs() <= 1e-5 * b.abs().max(1.0),
                "[{i}] {a} vs {b}"
            );
        }
        for threads in [2, 3] {
            let several = run(threads);
            assert!(
                one.iter()
                    .zip(&several)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{threads} threads"
            );
        }
    }

    /// Batches of narrow maps take the side-by-side F(4x4) path; every output matches.
    #[test]
    fn side_by_side_batches_match_a_direct_convolution() {
        if mode() != Mode::Auto {
            eprintln!("skipped: KERNELS_WINOGRAD is set");
            return;
        }
        let mut rnd = uniform(7);
        for &(n, cin, cout, h, w, pad) in &[
            (9, 16, 24, 14, 14, 1),
            (90, 16, 16, 6, 6, 0),
            (24, 16, 16, 9, 9, 2),
        ] {
            let (oh, ow) = (h + 2 * pad - 2, w + 2 * pad - 2);
            let canvas_ow = n * (w + pad) + pad - 2;
            assert_eq!(Tile::for_output(n, oh, ow), Tile::F2);
            assert_eq!(Tile::for_output(1, oh, canvas_ow), Tile::F4);
            let x: Vec<f32> = (0..n * cin * h * w).map(|_| rnd()).collect();
            let wgt: Vec<f32> = (0..cout * cin * 9).map(|_| rnd()).collect();
            let bias: Vec<f32> = (0..cout).map(|_| rnd()).collect();
            let want = direct(&x, &wgt, &bias, (n, cin, h, w), cout, pad);
            let mut out = vec![f32::NAN; n * cout * oh * ow];
            let s = Shape {
                n,
                h,
                w,
                pad: (pad, pad),
                oh,
                ow,
            };
            let wt = WinogradWeights::new(cout, cin);
            forward(&wt, &wgt, Some(&bias), Activation::Relu, &x, s, &mut out);
            for (i, (&a, &b)) in out.iter().zip(&want).enumerate() {
                let b = b.max(0.0);
                assert!(
                    (a as f64 - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "{n}x{cin}x{h}x{w} pad {pad}: [{i}] {a} vs {b}"
                );
            }
        }
    }

    /// The AVX-512 F(4x4) output transform gives the portable one's bits.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_output_transform_is_bit_identical() {
        if !crate::ops::simd::has_avx512() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        for len in [16usize, 37, 5] {
            let (mstride, moff) = (len + 11, 3);
            let m: Vec<f32> = (0..36 * mstride)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 37.0)
                .collect();
            let row = 4 * len + 2;
            let mut want = vec![0f32; 4 * row];
            let mut got = want.clone();
            output_run_f4(&m, mstride, moff, len, 0.25, &mut want, row);
            // SAFETY: AVX-512 checked above.
            unsafe { output_run_f4_avx512(&m, mstride, moff, len, 0.25, &mut got, row) };
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "len {len}");
        }
    }

    /// The AVX2 F(4x4) input transform gives the portable one's bits, on runs with full
    /// 16-tile blocks and a tail.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_input_transform_is_bit_identical() {
        if !crate::ops::simd::has_avx2() {
            eprintln!("skipped: this CPU has no AVX2");
            return;
        }
        for len in [16usize, 37, 5, 32, 12] {
            let width = 4 * len + 2;
            let drow = width + 3;
            let d: Vec<f32> = (0..6 * drow)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 37.0)
                .collect();
            let (vstride, voff) = (len + 9, 4);
            let mut want = vec![0f32; 36 * vstride];
            let mut got = want.clone();
            let mut tmp = vec![0f32; 6 * width];
            input_run_f4(&d, drow, &mut tmp, width, len, &mut want, vstride, voff);
            // SAFETY: AVX2 checked above.
            unsafe { input_run_f4_avx2(&d, drow, &mut tmp, width, len, &mut got, vstride, voff) };
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "len {len}");
        }
    }

    /// The AVX-512 F(4x4) input transform gives the portable one's bits, on runs with full
    /// 16-tile blocks and a tail.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_input_transform_is_bit_identical() {
        if !crate::ops::simd::has_avx512() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        for len in [16usize, 37, 5] {
            let width = 4 * len + 2;
            let drow = width + 3;
            let d: Vec<f32> = (0..6 * drow)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 37.0)
                .collect();
            let (vstride, voff) = (len + 9, 4);
            let mut want = vec![0f32; 36 * vstride];
            let mut got = want.clone();
            let mut tmp = vec![0f32; 6 * width];
            input_run_f4(&d, drow, &mut tmp, width, len, &mut want, vstride, voff);
            // SAFETY: AVX-512 checked above.
            unsafe { input_run_f4_avx512(&d, drow, &mut tmp, width, len, &mut got, vstride, voff) };
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "len {len}");
        }
    }
}
