//! `C = A·B` for an `A` of a few rows and a large row-major `B`: a linear layer applied to a
//! handful of vectors, e.g. VPSNet's track head (20 RoIs by a 12544 x 1024 weight, 51 MB).
//!
//! Such a product is bound by reading `B` once from memory. The `gemm` crate packs `B` and
//! splits the work by rows of `A`, and took 2-3x the time of a single read of `B` here. This
//! kernel splits the columns of `B` between threads, walks the depth in chunks small enough
//! for a chunk of a column panel (`KC` rows of 16 values) to stay in L1 while every tile of
//! `A`'s rows passes it, and keeps a tile of sums in registers for the chunk.

use rayon::prelude::*;

/// Columns per panel: two AVX2 registers per row of a tile.
const PANEL: usize = 16;
/// Rows of `A` per tile: 6 x 2 accumulators, the panel's two registers and a broadcast.
const TILE_ROWS: usize = 6;
/// Depth per chunk: a chunk of a panel is `KC * 64` bytes (16 KB), within L1.
const KC: usize = 256;
/// Panels per parallel task (256 columns): each task reads 1 KB of every row of `B` it
/// covers. Measured on 12544 x 1024 at 2 threads: 4 and 8 panels took 1.6x and 1.2x the time
/// of 16 or 32, which read longer runs of each row.
const TASK_PANELS: usize = 16;

/// Rows of `A` up to which this kernel beat the `gemm` crate on a 12544 x 1024 `B` at 2
/// threads (20 rows: 5.7 against 14 ms; 48: 11 against 17; 64: 15 against 20).
const MAX_ROWS: usize = 64;

/// Whether a product of `rows` rows by a `k x m` matrix takes this kernel: `B` large (at
/// least 4 MB, beyond L2, where reading it dominates) and `A` of at most [`MAX_ROWS`] rows.
pub fn pays(rows: usize, k: usize, m: usize) -> bool {
    rows > 0 && rows <= MAX_ROWS && k.saturating_mul(m) >= 1 << 20
}

/// `c[i * m + j] = Σ_p a[i * k + p] · b[p * m + j]` for `i < rows`, `j < m`; all three
/// row-major and contiguous. Each sum adds its products in order of `p` with fused
/// multiply-adds, so the AVX2 and portable paths give the same values.
pub fn few_rows_product(rows: usize, k: usize, m: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(
        a.len() >= rows * k && b.len() >= k * m && c.len() >= rows * m,
        "few_rows_product: operands shorter than {rows}x{k} by {k}x{m}"
    );
    c[..rows * m].fill(0.0);
    if rows == 0 || m == 0 || k == 0 {
        return;
    }
    let panels = m.div_ceil(PANEL);
    let out = OutPtr(c.as_mut_ptr());
    let tasks = panels.div_ceil(TASK_PANELS);
    let run = |t: usize| {
        let cols = t * TASK_PANELS * PANEL..((t + 1) * TASK_PANELS * PANEL).min(m);
        // SAFETY: task `t` writes only columns `cols` of `c` (distinct tasks, disjoint
        // columns), inside `rows * m` values checked above; nothing reads `c` meanwhile.
        unsafe { columns(rows, k, m, a, b, out.get(), cols) };
    };
    if tasks > 1 && rayon::current_num_threads() > 1 && !crate::process::in_parallel_task() {
        (0..tasks).into_par_iter().for_each(run);
    } else {
        (0..tasks).for_each(run);
    }
}

/// A raw output pointer shared by the tasks, each of which writes its own columns (here and
/// in `packed_gemm`'s deep products).
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);

impl OutPtr {
    /// The pointer (through a method, so that closures capture the whole `Sync` wrapper).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }

    /// The pointer `count` values further.
    ///
    /// # Safety
    /// The result must stay inside the buffer.
    pub(crate) unsafe fn offset(self, count: usize) -> OutPtr {
        OutPtr(self.0.add(count))
    }
}
// SAFETY: the tasks write disjoint columns (see `few_rows_product`, `packed_gemm`).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// Columns `cols` of the product, on the calling thread.
///
/// # Safety
/// `c` must point to `rows * m` writable values that no one else reads or writes in `cols`.
unsafe fn columns(
    rows: usize,
    k: usize,
    m: usize,
    a: &[f32],
    b: &[f32],
    c: *mut f32,
    cols: std::ops::Range<usize>,
) {
    #[cfg(target_arch = "x86_64")]
    let avx2 = crate::ops::simd::has_avx2();
    for p0 in (0..k).step_by(KC) {
        let depth = KC.min(k - p0);
        let mut j = cols.start;
        while j < cols.end {
            let width = PANEL.min(cols.end - j);
            // Tiles of equal height (20 rows: 5, 5, 5, 5 rather than 6, 6, 6, 2): a tile of
            // fewer than four rows has too few sums in flight to keep both FMA units busy.
            let (tiles, mut i, mut t) = (rows.div_ceil(TILE_ROWS), 0, 0);
            while i < rows {
                let tile = rows / tiles + usize::from(t < rows % tiles);
                t += 1;
                let (ap, bp, cp) = (
                    a.as_ptr().add(i * k + p0),
                    b.as_ptr().add(p0 * m + j),
                    c.add(i * m + j),
                );
                macro_rules! tile_of {
                    ($r:literal) => {{
                        #[cfg(target_arch = "x86_64")]
                        if avx2 && width == PANEL {
                            // SAFETY: AVX2 and FMA checked; the tile's `$r` rows of `depth`
                            // values of `a`, `depth` rows of 16 values of `b` and `$r` x 16
                            // values of `c` are in bounds (asserted in `few_rows_product`).
                            tile_avx2::<$r>(ap, k, bp, m, depth, cp, m);
                            i += $r;
                            continue;
                        }
                        tile_portable::<$r>(ap, k, bp, m, depth, cp, m, width);
                    }};
                }
                match tile {
                    6 => tile_of!(6),
                    5 => tile_of!(5),
                    4 => tile_of!(4),
                    3 => tile_of!(3),
                    2 => tile_of!(2),
                    _ => tile_of!(1),
                }
                i += tile;
            }
            j += width;
        }
    }
}

/// `c[r][j] += Σ_p a[r][p] · b[p][j]` for `ROWS` rows, `depth` steps and `width` columns.
///
/// # Safety
/// The pointers must cover the tile at their strides.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tile_portable<const ROWS: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    depth: usize,
    c: *mut f32,
    ldc: usize,
    width: usize,
) {
    for r in 0..ROWS {
        for j in 0..width {
            let mut s = *c.add(r * ldc + j);
            for p in 0..depth {
                s = (*a.add(r * lda + p)).mul_add(*b.add(p * ldb + j), s);
            }
            *c.add(r * ldc + j) = s;
        }
    }
}

/// [`tile_portable`] for 16 columns with AVX2: two 8-lane accumulators per row, one broadcast
/// of `a` and two fused multiply-adds per row and step; the same operations in the same order.
///
/// # Safety
/// The CPU must have AVX2 and FMA, and the pointers must cover the tile at their strides.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<const ROWS: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    depth: usize,
    c: *mut f32,
    ldc: usize,
) {
    use std::arch::x86_64::*;
    let mut lo = [_mm256_setzero_ps(); ROWS];
    let mut hi = [_mm256_setzero_ps(); ROWS];
    for r in 0..ROWS {
        lo[r] = _mm256_loadu_ps(c.add(r * ldc));
        hi[r] = _mm256_loadu_ps(c.add(r * ldc + 8));
    }
    for p in 0..depth {
        let bp = b.add(p * ldb);
        let (b0, b1) = (_mm256_loadu_ps(bp), _mm256_loadu_ps(bp.add(8)));
        for r in 0..ROWS {
            let x = _mm256_broadcast_ss(&*a.add(r * lda + p));
            lo[r] = _mm256_fmadd_ps(x, b0, lo[r]);
            hi[r] = _mm256_fmadd_ps(x, b1, hi[r]);
        }
    }
    for r in 0..ROWS {
        _mm256_storeu_ps(c.add(r * ldc), lo[r]);
        _mm256_storeu_ps(c.add(r * ldc + 8), hi[r]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32)
                    .wrapping_mul(2654435761)
                    .wrapping_add(seed.wrapping_mul(40503));
                ((h >> 8) % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// The product summed in the kernel's order (fused multiply-adds by depth chunk, in
    /// order of `p`): equal to the bit on every path.
    #[test]
    fn equals_the_ordered_sums_bit_for_bit() {
        for &(rows, k, m) in &[
            (1, 3, 5),
            (7, 300, 40),
            (20, 513, 1024 + 3),
            (13, 257, 16),
            (24, 1000, 130),
        ] {
            let (a, b) = (values(rows * k, 1), values(k * m, 2));
            let mut got = vec![f32::NAN; rows * m];
            few_rows_product(rows, k, m, &a, &b, &mut got);
            for i in 0..rows {
                for j in 0..m {
                    let mut s = 0f32;
                    for p in 0..k {
                        s = a[i * k + p].mul_add(b[p * m + j], s);
                    }
                    assert_eq!(
                        got[i * m + j].to_bits(),
                        s.to_bits(),
                        "{rows}x{k}x{m} at ({i}, {j})"
                    );
                }
            }
        }
    }

    #[test]
    fn takes_only_large_matrices_and_few_rows() {
        assert!(pays(20, 12544, 1024));
        assert!(pays(64, 12544, 1024));
        assert!(!pays(65, 12544, 1024));
        assert!(!pays(20, 256, 256));
        assert!(!pays(0, 12544, 1024));
    }
}
