//! `C = bias + A·B` with `B` packed once, for the NHWC convolutions (of small networks, and
//! of the ResNet bodies, see `conv_nhwc::NhwcConv2d`).
//!
//! Mobile networks multiply a few thousand pixels by filters of a few dozen to a few hundred
//! channels, hundreds of times per frame. There the `gemm` crate spends as long deciding,
//! packing and allocating as multiplying. Here, as in XNNPACK, the filter (a constant) is
//! packed at load into panels of [`PANEL`] columns with the bias in front, the pixels are
//! read in place (each row of `A` is one pixel's channels, or one im2col row), and a tile of
//! rows by [`PANEL`] columns of sums stays in registers for the whole depth: 12 rows with
//! AVX-512 ([`TILE_ROWS_AVX512`]), 6 with AVX2 ([`TILE_ROWS`]). A product allocates nothing,
//! so a planned graph runs without touching the allocator.
//!
//! Every sum starts at the bias and adds the `k` products in order with fused multiply-adds
//! (`f32::mul_add`, exact on every CPU), so results are identical on AVX-512, AVX2 and the
//! portable path.

use std::ops::Range;

use rayon::prelude::*;

use super::{shape_err, Result};

/// Columns per panel: one AVX-512 register or two AVX2 registers per row of a tile.
pub const PANEL: usize = 16;

/// Multiply-adds a task of a parallel product takes at least: about 30 µs at this GEMM's
/// speed. Smaller tasks (the layers' 64k operations, 2 µs here) made a pipeline of five small
/// models spend more time handing tasks over, in the kernel, than multiplying.
const TASK_MACS: usize = 1 << 20;

/// [`TASK_MACS`] inside helped work ([`crate::process::in_pool_helped`]), where the other
/// threads wait for tasks instead of sleeping (see `layers::HELPED_TASK_WORK`).
const HELPED_TASK_MACS: usize = 1 << 16;

/// The multiply-adds a task of a parallel product takes at least, here and now.
pub(crate) fn task_macs() -> usize {
    if crate::process::helped() {
        HELPED_TASK_MACS
    } else {
        TASK_MACS
    }
}

/// Rows per tile with AVX2: 6 x 2 accumulators plus the panel's two registers and a
/// broadcast fill 15 of the 16 registers.
const TILE_ROWS: usize = 6;

/// Rows per tile with AVX-512: 12 accumulators of 16 lanes, the panel's register and the
/// broadcasts (folded into the multiply-adds) of 32. Twice the AVX2 tile's rows, so each value
/// of the panel read from cache serves twice as many multiply-adds; at 14 rows the addresses
/// of the rows no longer fit in the general registers.
const TILE_ROWS_AVX512: usize = 12;

/// The vector units the tiles run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Units {
    Avx512,
    Avx2,
    Portable,
}

impl Units {
    /// This CPU's best, read once; `KERNELS_GEMM=avx2` keeps AVX-512 unused, to compare the
    /// two tiles in one binary.
    fn detect() -> Units {
        static UNITS: std::sync::OnceLock<Units> = std::sync::OnceLock::new();
        *UNITS.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                let avx2_only = std::env::var("KERNELS_GEMM").is_ok_and(|v| v == "avx2");
                if !avx2_only && crate::ops::simd::has_avx512() {
                    return Units::Avx512;
                }
                if crate::ops::simd::has_avx2() {
                    return Units::Avx2;
                }
            }
            Units::Portable
        })
    }

    /// Rows per tile, for rows of `a` `lda` values apart.
    ///
    /// Rows 4 KB apart (a 1x1 convolution of 1024 channels, or of 512 at stride 2) share one
    /// set of the L1 cache, which has 8 ways on current x86 cores: 12 rows there evict each
    /// other's lines before their next values are read, and the product took 1.3-1.5x the
    /// AVX2 tile's time (Zen 4). 8 rows keep to the ways.
    fn tile_rows(self, lda: usize) -> usize {
        match self {
            Units::Avx512 if (lda * 4).is_multiple_of(4096) => ALIASED_TILE_ROWS,
            _ => self.max_tile_rows(),
        }
    }

    /// The most rows a tile of these units takes.
    fn max_tile_rows(self) -> usize {
        match self {
            Units::Avx512 => TILE_ROWS_AVX512,
            Units::Avx2 | Units::Portable => TILE_ROWS,
        }
    }
}

/// AVX-512 tile rows for rows of `a` that share a set of the L1 cache
/// ([`Units::tile_rows`]).
const ALIASED_TILE_ROWS: usize = 8;

/// The rows of the next tile of at most `tile_rows` when `left` rows remain: as even as
/// `left`'s tiles come (14 rows as 7 + 7, not 12 + 2), since a tile of few rows runs at a
/// fraction of the speed.
fn next_tile(left: usize, tile_rows: usize) -> usize {
    left.div_ceil(left.div_ceil(tile_rows).max(1))
        .min(tile_rows)
}

/// How a row of the left matrix lies in memory: `k / seg` runs of `seg` values, run `s` at
/// `s · stride` from the row's start. One run (`seg = k`) is a plain row; a convolution's
/// window over a padded NHWC input is `KH` runs of `KW · C` values, one per kernel row, read in
/// place instead of copied into an im2col row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Runs {
    pub seg: usize,
    pub stride: usize,
}

impl Runs {
    /// A plain row of `k` values.
    pub fn row(k: usize) -> Runs {
        Runs { seg: k, stride: 0 }
    }

    /// The runs of a row of depth `k`.
    fn count(self, k: usize) -> usize {
        k.checked_div(self.seg).unwrap_or(0)
    }

    /// Values from a row's start to the end of its last run.
    fn span(self, k: usize) -> usize {
        match self.count(k) {
            0 => 0,
            n => (n - 1) * self.stride + self.seg,
        }
    }
}

/// A `k x n` matrix with a bias row, packed for [`gemm_packed`]: `ceil(n / PANEL)` panels,
/// each the bias then `k` rows of [`PANEL`] values, zero-padded past column `n`.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedMatrix {
    k: usize,
    n: usize,
    data: Vec<f32>,
}

impl PackedMatrix {
    /// Packs `b` (row `p` of length `n` at `b[p * n..]`) with `bias` (`n` values, or zeros).
    pub fn new(b: &[f32], k: usize, n: usize, bias: Option<&[f32]>) -> Result<PackedMatrix> {
        const OP: &str = "PackedMatrix";
        if b.len() != k * n {
            return shape_err(
                OP,
                format!("a {k}x{n} matrix needs {} values, got {}", k * n, b.len()),
            );
        }
        if let Some(bias) = bias.filter(|bias| bias.len() != n) {
            return shape_err(
                OP,
                format!("the bias has {} values, the matrix {n} columns", bias.len()),
            );
        }
        let panels = n.div_ceil(PANEL);
        let mut data = vec![0f32; panels * (k + 1) * PANEL];
        for (j, panel) in data.chunks_exact_mut((k + 1) * PANEL).enumerate() {
            let cols = j * PANEL..((j + 1) * PANEL).min(n);
            let width = cols.len();
            if let Some(bias) = bias {
                panel[..width].copy_from_slice(&bias[cols.clone()]);
            }
            for (p, dst) in panel[PANEL..].chunks_exact_mut(PANEL).enumerate() {
                dst[..width].copy_from_slice(&b[p * n + cols.start..p * n + cols.end]);
            }
        }
        Ok(PackedMatrix { k, n, data })
    }

    /// Rows of the matrix (the depth of the product).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of the matrix (and of the product).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Whether a product of `m` rows by this matrix runs in [`deep_product`]'s order: the
    /// matrix too large to stay in L2 between tiles of rows, and `m` small. (A ResNet-50's
    /// 7x7 stage at 224x224, 49 rows: its 3x3 convolutions took 0.6x the time, 2 threads on a
    /// Zen 3; at 196 rows, with windows read in place, the order of [`rows_packed`] was as
    /// fast or faster.)
    pub(crate) fn deep_pays(&self, m: usize) -> bool {
        self.data.len() * 4 >= STREAMED_BYTES && m <= DEEP_MAX_ROWS
    }
}

/// Packed matrices from this size on may run [`deep_product`]: half a Zen 3 core's L2.
const STREAMED_BYTES: usize = 1 << 19;

/// Rows of a product up to which [`deep_product`] pays (see [`PackedMatrix::deep_pays`]).
const DEEP_MAX_ROWS: usize = 2 * DEEP_ROWS;

/// Depth per slice in [`deep_product`]: a panel's slice is 32 KB.
const DEEP_K: usize = 512;

/// Rows per block in [`deep_product`]: a block's slice of `a` (60 x 512 values, 120 KB) stays
/// in L2 while every panel's slice passes it.
const DEEP_ROWS: usize = 60;

/// A product of few rows by a large packed matrix, such as a ResNet's 3x3 512 -> 512
/// convolution at 7x7 (9.4 MB of weights, 49 pixels). [`rows_packed`] reads the whole matrix
/// for each block of rows that fits its output in L1 (6 rows there: 9 reads a call, and
/// another for each task of a parallel split). Here the rows go in blocks of [`DEEP_ROWS`]
/// and the depth in slices of [`DEEP_K`]: each slice of a panel is read once per block, from
/// memory, and stays in L1 while the block's tiles pass it; the sums of a tile go through
/// `c` between slices, as the f32 they are, so the results are those of one pass. With
/// fewer blocks than threads, the threads split the panels instead (each reads its part of
/// the matrix once), and the epilogue runs after them, block by block.
fn deep_product(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedMatrix,
    c: &mut [f32],
    ldc: usize,
    epilogue: Epilogue<'_>,
) {
    let (k, n) = (b.k, b.n);
    let panels = n.div_ceil(PANEL);
    // Blocks of whole tiles, as even as they come.
    let tr = Units::detect().tile_rows(lda);
    let tiles = m.div_ceil(tr);
    let block_rows = tiles.div_ceil(m.div_ceil(DEEP_ROWS)) * tr;
    let blocks = m.div_ceil(block_rows);
    let threads = rayon::current_num_threads();
    let serial = threads == 1 || crate::process::in_parallel_task() || m * k * n < task_macs();
    let c = &mut c[..(m - 1) * ldc + n];
    if serial || blocks >= threads {
        let block = |(t, c): (usize, &mut [f32])| {
            let i0 = t * block_rows;
            let rows = block_rows.min(m - i0);
            let out = super::few_rows::OutPtr(c.as_mut_ptr());
            // SAFETY: this block's rows of `c` (the chunk), all panels, on this thread.
            unsafe { deep_block(rows, &a[i0 * lda..], lda, b, out, ldc, 0..panels) };
            epilogue(i0, &mut c[..(rows - 1) * ldc + n]);
        };
        if serial {
            c.chunks_mut(block_rows * ldc).enumerate().for_each(block);
        } else {
            c.par_chunks_mut(block_rows * ldc)
                .enumerate()
                .for_each(block);
        }
        return;
    }
    // Few blocks: each task a block's share of the panels.
    let shares = (2 * threads).div_ceil(blocks).clamp(1, panels);
    let per_share = panels.div_ceil(shares);
    let out = super::few_rows::OutPtr(c.as_mut_ptr());
    (0..blocks * shares).into_par_iter().for_each(|t| {
        let (blk, share) = (t / shares, t % shares);
        let i0 = blk * block_rows;
        let rows = block_rows.min(m - i0);
        let cols = share * per_share..((share + 1) * per_share).min(panels);
        // SAFETY: task `t` writes rows `i0..i0 + rows` in the columns of panels `cols` only
        // (distinct tasks: distinct blocks or panels), inside `c`; nothing reads them meanwhile.
        unsafe {
            deep_block(
                rows,
                &a[i0 * lda..],
                lda,
                b,
                out.offset(i0 * ldc),
                ldc,
                cols,
            )
        };
    });
    c.par_chunks_mut(block_rows * ldc)
        .enumerate()
        .for_each(|(t, c)| {
            let rows = block_rows.min(m - t * block_rows);
            epilogue(t * block_rows, &mut c[..(rows - 1) * ldc + n]);
        });
}

/// `rows` rows of the product (`a` from their first, `c` their first output) in the columns of
/// `panels`, slice of depth by slice.
///
/// # Safety
/// `a` must hold `(rows - 1) * lda + k` values, `c` must point to `(rows - 1) * ldc + n`
/// writable values, of which no one else reads or writes those in `panels`' columns.
unsafe fn deep_block(
    rows: usize,
    a: &[f32],
    lda: usize,
    b: &PackedMatrix,
    c: super::few_rows::OutPtr,
    ldc: usize,
    panels: Range<usize>,
) {
    let (k, n) = (b.k, b.n);
    let runs = Runs::row(k);
    let units = Units::detect();
    let tr = units.tile_rows(lda);
    let mut p0 = 0;
    // At least one slice: a product of depth 0 is its bias.
    loop {
        let depth = p0..(p0 + DEEP_K).min(k);
        for j in panels.clone() {
            let panel = &b.data[j * (k + 1) * PANEL..(j + 1) * (k + 1) * PANEL];
            let width = PANEL.min(n - j * PANEL);
            let mut i = 0;
            while i < rows {
                let tile_rows = next_tile(rows - i, tr);
                let a = &a[i * lda..];
                // SAFETY: rows `i..i + tile_rows` of `c`, columns of panel `j`: in the
                // caller's region, written by this call only.
                let c = std::slice::from_raw_parts_mut(
                    c.get().add(i * ldc + j * PANEL),
                    (tile_rows - 1) * ldc + width,
                );
                let tile = Tile {
                    rows: tile_rows,
                    runs,
                    k,
                    panel,
                    ldc,
                    width,
                };
                tile.run(a, lda, depth.clone(), c, units);
                i += tile_rows;
            }
        }
        p0 = depth.end;
        if p0 >= k {
            break;
        }
    }
}

/// Work run on each block of finished output rows while they are still in L1:
/// `(first row, rows)`, where `rows` holds the block's rows at stride `ldc` (the last one `n`
/// values long). A convolution adds its bias and applies its activation there, instead of
/// in a pass over the whole output.
pub type Epilogue<'a> = &'a (dyn Fn(usize, &mut [f32]) + Sync);

/// `c[i * ldc + j] = bias[j] + Σ_p a[i * lda + p] · b[p][j]` for `i < m`, `j < b.n()`.
///
/// Tiles of rows go to other rayon threads when a task gets at least
/// [`TASK_MACS`] multiply-adds, and never from inside a task of a parallel
/// loop.
pub fn gemm_packed(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedMatrix,
    c: &mut [f32],
    ldc: usize,
) -> Result<()> {
    gemm_packed_then(m, a, lda, b, c, ldc, &|_, _| {})
}

/// [`gemm_packed`], then `epilogue` on each block of finished rows.
pub fn gemm_packed_then(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedMatrix,
    c: &mut [f32],
    ldc: usize,
    epilogue: Epilogue<'_>,
) -> Result<()> {
    const OP: &str = "gemm_packed";
    let (k, n) = (b.k, b.n);
    if m == 0 || n == 0 {
        return Ok(());
    }
    if lda < k {
        return shape_err(
            OP,
            format!("row stride {lda} (a) is shorter than rows of {k}"),
        );
    }
    check_operands(m, a, lda, Runs::row(k), b, c, ldc)?;
    if b.deep_pays(m) {
        deep_product(m, a, lda, b, c, ldc, epilogue);
        return Ok(());
    }
    let tr = Units::detect().tile_rows(lda);
    let tile_work = tr * k.max(1) * n;
    let tiles_per_task = (task_macs() / tile_work.max(1)).max(1);
    let tiles = m.div_ceil(tr);
    if tiles <= tiles_per_task
        || rayon::current_num_threads() == 1
        || crate::process::in_parallel_task()
    {
        rows_packed(m, a, lda, Runs::row(k), b, c, ldc, 0, epilogue);
        return Ok(());
    }
    let rows_per_task = tiles_per_task * tr;
    let c = &mut c[..(m - 1) * ldc + n];
    c.par_chunks_mut(rows_per_task * ldc)
        .enumerate()
        .for_each(|(t, c)| {
            let i0 = t * rows_per_task;
            let rows = rows_per_task.min(m - i0);
            rows_packed(
                rows,
                &a[i0 * lda..],
                lda,
                Runs::row(k),
                b,
                c,
                ldc,
                i0,
                epilogue,
            );
        });
    Ok(())
}

/// [`gemm_packed_then`] on the calling thread, with each row of `a` in `runs` (row `i` starts
/// at `a[i * lda]`), and the epilogue told rows from `row0`: for callers that split the work
/// themselves (a convolution, by output rows).
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed_runs_then(
    m: usize,
    a: &[f32],
    lda: usize,
    runs: Runs,
    b: &PackedMatrix,
    c: &mut [f32],
    ldc: usize,
    row0: usize,
    epilogue: Epilogue<'_>,
) -> Result<()> {
    if m == 0 || b.n == 0 {
        return Ok(());
    }
    check_operands(m, a, lda, runs, b, c, ldc)?;
    rows_packed(m, a, lda, runs, b, c, ldc, row0, epilogue);
    Ok(())
}

/// Checks that `m` rows of `a` in `runs` at stride `lda`, and their products with `b` at
/// stride `ldc`, lie inside `a` and `c` (`m` and `b.n()` not 0).
fn check_operands(
    m: usize,
    a: &[f32],
    lda: usize,
    runs: Runs,
    b: &PackedMatrix,
    c: &[f32],
    ldc: usize,
) -> Result<()> {
    const OP: &str = "gemm_packed";
    let (k, n) = (b.k, b.n);
    if runs.count(k) * runs.seg != k || ldc < n {
        return shape_err(
            OP,
            format!("rows of {k} in runs {runs:?}, output row stride {ldc} for {n} columns"),
        );
    }
    if a.len() < (m - 1) * lda + runs.span(k) {
        return shape_err(
            OP,
            format!(
                "{m} rows of {k} values (runs {runs:?}) at stride {lda} do not fit in {} values",
                a.len()
            ),
        );
    }
    if c.len() < (m - 1) * ldc + n {
        return shape_err(
            OP,
            format!(
                "a {m}x{n} output with row stride {ldc} does not fit in {} values",
                c.len()
            ),
        );
    }
    Ok(())
}

/// Output values (at most) of a block of rows that [`rows_packed`] finishes before moving
/// on: 16 KB, which stay in L1 for the epilogue.
const BLOCK_VALUES: usize = 4096;

/// The product of [`gemm_packed_then`] on one thread (rows `row0..row0 + m` of the whole
/// product); arguments checked there.
#[allow(clippy::too_many_arguments)]
fn rows_packed(
    m: usize,
    a: &[f32],
    lda: usize,
    runs: Runs,
    b: &PackedMatrix,
    c: &mut [f32],
    ldc: usize,
    row0: usize,
    epilogue: Epilogue<'_>,
) {
    let (k, n) = (b.k, b.n);
    let units = Units::detect();
    let tr = units.tile_rows(lda);
    let block = (BLOCK_VALUES / n.max(1) / tr).max(1) * tr;
    let prefetch = k >= PREFETCH_MIN_K && m * lda * 4 >= PREFETCH_MIN_BYTES;
    let mut i0 = 0;
    while i0 < m {
        let block_rows = block.min(m - i0);
        // Panel by panel over the block: a panel (the bias and k x 16 values) stays in L1
        // while the block's tiles of rows pass it.
        for (j, panel) in b.data.chunks_exact((k + 1) * PANEL).enumerate() {
            let width = PANEL.min(n - j * PANEL);
            let mut i = i0;
            while i < i0 + block_rows {
                let rows = next_tile(i0 + block_rows - i, tr);
                if prefetch && j == 0 {
                    let ahead = i + AHEAD_TILES * tr;
                    prefetch_rows(a, lda, runs, k, ahead, (ahead + rows).min(m));
                }
                let (a, c) = (&a[i * lda..], &mut c[i * ldc + j * PANEL..]);
                let tile = Tile {
                    rows,
                    runs,
                    k,
                    panel,
                    ldc,
                    width,
                };
                tile.run(a, lda, 0..k, c, units);
                i += rows;
            }
        }
        epilogue(row0 + i0, &mut c[i0 * ldc..(i0 + block_rows - 1) * ldc + n]);
        i0 += block_rows;
    }
}

/// A tile of `rows` (1 to [`Units::tile_rows`]) rows of `a` (in `runs`, whole depth `k`) by
/// one `panel`, stored `width` columns wide at stride `ldc`: [`tile_avx512`], [`tile_avx2`]
/// or [`tile`].
struct Tile<'p> {
    rows: usize,
    runs: Runs,
    k: usize,
    panel: &'p [f32],
    ldc: usize,
    width: usize,
}

impl Tile<'_> {
    /// The sums over `depth` (within `k`) of `a`'s rows (stride `lda`) into `c`, with AVX2,
    /// AVX-512 or the portable path, as `units` says.
    #[inline(always)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    fn run(&self, a: &[f32], lda: usize, depth: Range<usize>, c: &mut [f32], units: Units) {
        let Tile {
            rows,
            runs,
            k,
            panel,
            ldc,
            width,
        } = *self;
        assert!(
            rows >= 1
                && rows <= units.max_tile_rows()
                && depth.end <= k
                && panel.len() >= (k + 1) * PANEL
                && width <= PANEL
                && a.len() >= (rows - 1) * lda + runs.span(k)
                && c.len() >= (rows - 1) * ldc + width,
            "gemm_packed tile out of bounds"
        );
        macro_rules! tile_of {
            ($rows:literal) => {{
                #[cfg(target_arch = "x86_64")]
                if units == Units::Avx2 {
                    // SAFETY: the CPU has AVX2 and FMA; `a` holds `$rows` rows of the runs of
                    // `k` at stride `lda`, `c` `$rows` rows of `width` at stride `ldc`, and
                    // the panel `(k + 1) * PANEL` values (asserted above).
                    unsafe { tile_avx2::<$rows>(a, lda, runs, depth, panel, c, ldc, width) };
                    return;
                }
                tile::<$rows>(a, lda, runs, depth, panel, c, ldc, width)
            }};
        }
        macro_rules! tile_avx512_of {
            ($rows:literal) => {{
                // SAFETY: the CPU has AVX-512 (F, BW, VL) and FMA; the operands as above.
                unsafe { tile_avx512::<$rows>(a, lda, runs, depth, panel, c, ldc, width) };
                return;
            }};
        }
        #[cfg(target_arch = "x86_64")]
        if units == Units::Avx512 {
            match rows {
                12 => tile_avx512_of!(12),
                11 => tile_avx512_of!(11),
                10 => tile_avx512_of!(10),
                9 => tile_avx512_of!(9),
                8 => tile_avx512_of!(8),
                7 => tile_avx512_of!(7),
                6 => tile_avx512_of!(6),
                5 => tile_avx512_of!(5),
                4 => tile_avx512_of!(4),
                3 => tile_avx512_of!(3),
                2 => tile_avx512_of!(2),
                _ => tile_avx512_of!(1),
            }
        }
        match rows {
            6 => tile_of!(6),
            5 => tile_of!(5),
            4 => tile_of!(4),
            3 => tile_of!(3),
            2 => tile_of!(2),
            _ => tile_of!(1),
        }
    }
}

/// Tiles of rows of `a` ahead of the tile being computed that [`rows_packed`] prefetches,
/// when `a` is large and its rows long ([`PREFETCH_MIN_BYTES`], [`PREFETCH_MIN_K`]). Each row of a
/// 1x1 convolution's input is a stream of a few cache lines, too short for the hardware
/// prefetcher to follow: at one thread on a Zen 3, 16384x128x80 took 5.4 ms without and 4.1-4.4 ms
/// with 6 to 24 rows prefetched, and 16384x192x64 6.4-6.7 against 5.4-5.7 ms.
const AHEAD_TILES: usize = 2;

/// The size of `a`, in bytes, from which [`rows_packed`] prefetches it: smaller ones are
/// likely in cache, where the prefetches cost 1-3%.
const PREFETCH_MIN_BYTES: usize = 1 << 20;

/// The depth from which [`rows_packed`] prefetches: a shorter row is a line or two, whose
/// prefetches cost more than they save (65536x16x16: 0.47 ms without, 0.57 ms with).
const PREFETCH_MIN_K: usize = 64;

/// Prefetches into L1 the values of rows `from..to` of `a` (rows at stride `lda`, depth `k`
/// in `runs`) that lie in `a`, one per cache line.
#[inline(always)]
fn prefetch_rows(a: &[f32], lda: usize, runs: Runs, k: usize, from: usize, to: usize) {
    #[cfg(target_arch = "x86_64")]
    for r in from..to {
        for s in 0..runs.count(k) {
            let start = r * lda + s * runs.stride;
            let mut q = 0;
            while q < runs.seg {
                if let Some(v) = a.get(start + q) {
                    // SAFETY: a prefetch of a value inside `a`; it reads nothing.
                    unsafe {
                        std::arch::x86_64::_mm_prefetch(
                            (v as *const f32).cast::<i8>(),
                            std::arch::x86_64::_MM_HINT_T0,
                        )
                    };
                }
                q += 16;
            }
        }
    }
}

/// One tile: `ROWS` rows of `a` (stride `lda`, in `runs`) times one panel over `depth`, the
/// first `width` columns stored to `c` (stride `ldc`). The sums start at the panel's bias
/// when `depth` starts at 0, else at `c`'s values (the sums of the depth before: stored as
/// the f32 they were, so a product in slices of depth gives the bits of one pass). The
/// portable path.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile<const ROWS: usize>(
    a: &[f32],
    lda: usize,
    runs: Runs,
    depth: Range<usize>,
    panel: &[f32],
    c: &mut [f32],
    ldc: usize,
    width: usize,
) {
    let mut acc = [[0f32; PANEL]; ROWS];
    for (r, row) in acc.iter_mut().enumerate() {
        if depth.start == 0 {
            row.copy_from_slice(&panel[..PANEL]);
        } else {
            row[..width].copy_from_slice(&c[r * ldc..r * ldc + width]);
        }
    }
    for p in depth {
        let w = &panel[PANEL + p * PANEL..PANEL * (p + 2)];
        let at = (p / runs.seg) * runs.stride + p % runs.seg;
        for (r, row) in acc.iter_mut().enumerate() {
            let x = a[r * lda + at];
            for (s, &wj) in row.iter_mut().zip(w) {
                *s = x.mul_add(wj, *s);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        c[r * ldc..r * ldc + width].copy_from_slice(&row[..width]);
    }
}

/// [`tile`] with AVX2: two 8-lane accumulators per row, a broadcast of `a` and two fused
/// multiply-adds per row and step; the same operations in the same order.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `a` must hold `(ROWS - 1) * lda + runs.span(k)` values
/// (`k`: the whole depth, a whole number of runs, `depth` within it), `c`
/// `(ROWS - 1) * ldc + width`, `panel` `(k + 1) * PANEL`, and `width <= PANEL`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx2<const ROWS: usize>(
    a: &[f32],
    lda: usize,
    runs: Runs,
    depth: Range<usize>,
    panel: &[f32],
    c: &mut [f32],
    ldc: usize,
    width: usize,
) {
    use std::arch::x86_64::*;
    debug_assert!(panel.len() >= (depth.end + 1) * PANEL && width <= PANEL);
    let (a, w) = (a.as_ptr(), panel.as_ptr());
    // SAFETY (every pointer below): in bounds by the caller's contract.
    let mut lo = [_mm256_loadu_ps(w); ROWS];
    let mut hi = [_mm256_loadu_ps(w.add(8)); ROWS];
    if depth.start > 0 {
        for r in 0..ROWS {
            let mut row = [0f32; PANEL];
            row[..width].copy_from_slice(&c[r * ldc..r * ldc + width]);
            lo[r] = _mm256_loadu_ps(row.as_ptr());
            hi[r] = _mm256_loadu_ps(row.as_ptr().add(8));
        }
    }
    let mut wp = w.add(PANEL * (1 + depth.start));
    let mut p = depth.start;
    while p < depth.end {
        // The rest of the run that holds depth `p`, up to the slice's end.
        let (s, q0) = (p / runs.seg, p % runs.seg);
        let q1 = runs.seg.min(q0 + depth.end - p);
        let run = a.add(s * runs.stride);
        for q in q0..q1 {
            let (w0, w1) = (_mm256_loadu_ps(wp), _mm256_loadu_ps(wp.add(8)));
            for r in 0..ROWS {
                let x = _mm256_broadcast_ss(&*run.add(r * lda + q));
                lo[r] = _mm256_fmadd_ps(x, w0, lo[r]);
                hi[r] = _mm256_fmadd_ps(x, w1, hi[r]);
            }
            wp = wp.add(PANEL);
        }
        p += q1 - q0;
    }
    let c = c.as_mut_ptr();
    for r in 0..ROWS {
        let dst = c.add(r * ldc);
        if width == PANEL {
            _mm256_storeu_ps(dst, lo[r]);
            _mm256_storeu_ps(dst.add(8), hi[r]);
        } else {
            let mut row = [0f32; PANEL];
            _mm256_storeu_ps(row.as_mut_ptr(), lo[r]);
            _mm256_storeu_ps(row.as_mut_ptr().add(8), hi[r]);
            std::ptr::copy_nonoverlapping(row.as_ptr(), dst, width);
        }
    }
}

/// [`tile`] with AVX-512: one 16-lane accumulator per row, and per step one load of the
/// panel and a multiply-add per row with `a`'s value broadcast; the same operations in the
/// same order, so the same bits.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VL, and FMA; the operands as for [`tile_avx2`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx512<const ROWS: usize>(
    a: &[f32],
    lda: usize,
    runs: Runs,
    depth: Range<usize>,
    panel: &[f32],
    c: &mut [f32],
    ldc: usize,
    width: usize,
) {
    use std::arch::x86_64::*;
    debug_assert!(panel.len() >= (depth.end + 1) * PANEL && width <= PANEL);
    let (a, w) = (a.as_ptr(), panel.as_ptr());
    let c = c.as_mut_ptr();
    // The columns of `c` this tile owns.
    let mask: __mmask16 = if width == PANEL {
        !0
    } else {
        (1u16 << width) - 1
    };
    // SAFETY (every pointer below): in bounds by the caller's contract; the masked loads and
    // stores touch only the first `width` values of each row of `c`.
    let mut acc = [_mm512_loadu_ps(w); ROWS];
    if depth.start > 0 {
        for (r, acc) in acc.iter_mut().enumerate() {
            *acc = _mm512_maskz_loadu_ps(mask, c.add(r * ldc));
        }
    }
    let mut wp = w.add(PANEL * (1 + depth.start));
    let mut p = depth.start;
    while p < depth.end {
        // The rest of the run that holds depth `p`, up to the slice's end.
        let (s, q0) = (p / runs.seg, p % runs.seg);
        let q1 = runs.seg.min(q0 + depth.end - p);
        let run = a.add(s * runs.stride);
        for q in q0..q1 {
            // The panel's line 16 steps ahead. In a network the filters come from memory (a
            // ResNet-50's 100 MB stay in no cache), and the first tile to read a panel waits
            // on each line: ResNet-50 at 224, 2 threads, Zen 4, fastest of 40 runs 40.2-40.9
            // ms against 41.5-44.8 without, alternating. (Past the panel's end it fetches a
            // line of the next panel or of nothing; a prefetch never faults.)
            _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(PANEL * 16).cast::<i8>());
            let w0 = _mm512_loadu_ps(wp);
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*run.add(r * lda + q));
                *acc = _mm512_fmadd_ps(x, w0, *acc);
            }
            wp = wp.add(PANEL);
        }
        p += q1 - q0;
    }
    for (r, acc) in acc.iter().enumerate() {
        _mm512_mask_storeu_ps(c.add(r * ldc), mask, *acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32 ^ seed)
                    .wrapping_mul(2_654_435_761)
                    .rotate_left(13);
                (h % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// The same sums, element by element: the bias, then each product in order, fused.
    fn reference(
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        lda: usize,
        b: &[f32],
        bias: &[f32],
    ) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = bias[j];
                for p in 0..k {
                    s = a[i * lda + p].mul_add(b[p * n + j], s);
                }
                c[i * n + j] = s;
            }
        }
        c
    }

    #[test]
    fn equals_the_fused_sums_bit_for_bit() {
        // Row tails (m not a multiple of 6), panel tails (n not a multiple of 16), a row
        // stride longer than k, depth 0 and 1, and products large enough to be split.
        for &(m, k, n, lda) in &[
            (1, 1, 1, 1),
            (7, 3, 17, 5),
            (13, 0, 20, 0),
            (64, 40, 33, 40),
            (300, 64, 48, 70),
            // Five tasks of at least TASK_MACS on two threads (the product runs as a node's
            // work, `in_pool`, as in a graph run: from inside a task it would not split).
            (2000, 64, 40, 64),
            // A matrix of 576 KB: the deep order, in two slices of depth, on one block of
            // rows (split by panels at two threads) and on two.
            (49, 600, 240, 600),
            (97, 600, 250, 610),
        ] {
            let a = values(m * lda.max(1), 1);
            let b = values(k * n, 2);
            let bias = values(n, 3);
            let packed = PackedMatrix::new(&b, k, n, Some(&bias)).unwrap();
            let want = reference(m, k, n, &a, lda, &b, &bias);
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut c = vec![f32::NAN; m * n];
                pool.install(|| {
                    crate::process::in_pool(|| gemm_packed(m, &a, lda, &packed, &mut c, n))
                })
                .unwrap();
                let same = c.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "m={m} k={k} n={n} lda={lda} threads={threads}");
            }
        }
    }

    /// Each vector tile, of every height, gives the portable tile's bits: whole and partial
    /// panels, a depth slice that starts from `c`'s sums, and rows in runs.
    #[test]
    fn vector_tiles_equal_the_portable_tile_bit_for_bit() {
        let (k, n) = (24, 16 + 5);
        let b = values(k * n, 6);
        let packed = PackedMatrix::new(&b, k, n, Some(&values(n, 7))).unwrap();
        let mut units = vec![];
        #[cfg(target_arch = "x86_64")]
        {
            if crate::ops::simd::has_avx2() {
                units.push(Units::Avx2);
            }
            if crate::ops::simd::has_avx512() {
                units.push(Units::Avx512);
            }
        }
        if units.is_empty() {
            eprintln!("SKIPPED: this CPU has neither AVX2 nor AVX-512");
        }
        let (lda, ldc) = (40, 23);
        let a = values(TILE_ROWS_AVX512 * lda + 64, 8);
        for unit in units {
            for rows in 1..=unit.max_tile_rows() {
                for runs in [Runs::row(k), Runs { seg: 8, stride: 11 }] {
                    for (j, panel) in packed.data.chunks_exact((k + 1) * PANEL).enumerate() {
                        let width = PANEL.min(n - j * PANEL);
                        for depth in [0..k, 0..5, 5..k] {
                            let tile = Tile {
                                rows,
                                runs,
                                k,
                                panel,
                                ldc,
                                width,
                            };
                            let start = values(rows * ldc, 9);
                            // The fused sums of the portable tile, for any height.
                            let mut want = start.clone();
                            for r in 0..rows {
                                for col in 0..width {
                                    let mut sum = match depth.start {
                                        0 => panel[col],
                                        _ => start[r * ldc + col],
                                    };
                                    for p in depth.clone() {
                                        let at = (p / runs.seg) * runs.stride + p % runs.seg;
                                        let w = panel[PANEL * (p + 1) + col];
                                        sum = a[r * lda + at].mul_add(w, sum);
                                    }
                                    want[r * ldc + col] = sum;
                                }
                            }
                            let mut got = start;
                            tile.run(&a, lda, depth.clone(), &mut got, unit);
                            let same = want
                                .iter()
                                .zip(&got)
                                .all(|(x, y)| x.to_bits() == y.to_bits());
                            assert!(
                                same,
                                "{unit:?} rows={rows} {runs:?} width={width} depth={depth:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn strided_output_leaves_the_gaps_alone() {
        let (m, k, n, ldc) = (9, 4, 5, 8);
        let (a, b) = (values(m * k, 4), values(k * n, 5));
        let packed = PackedMatrix::new(&b, k, n, None).unwrap();
        let mut c = vec![7f32; (m - 1) * ldc + n];
        gemm_packed(m, &a, k, &packed, &mut c, ldc).unwrap();
        let want = reference(m, k, n, &a, k, &b, &[0.0; 5]);
        for i in 0..m {
            assert_eq!(&c[i * ldc..i * ldc + n], &want[i * n..(i + 1) * n]);
            if i + 1 < m {
                assert!(c[i * ldc + n..(i + 1) * ldc].iter().all(|&v| v == 7.0));
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(PackedMatrix::new(&[0.0; 5], 2, 3, None).is_err());
        assert!(PackedMatrix::new(&[0.0; 6], 2, 3, Some(&[0.0; 2])).is_err());
        let packed = PackedMatrix::new(&[0.0; 6], 2, 3, None).unwrap();
        let mut c = vec![0f32; 6];
        assert!(gemm_packed(2, &[0.0; 3], 2, &packed, &mut c, 3).is_err());
        assert!(gemm_packed(2, &[0.0; 4], 2, &packed, &mut c[..5], 3).is_err());
        assert!(gemm_packed(2, &[0.0; 4], 1, &packed, &mut c, 3).is_err());
    }
}
