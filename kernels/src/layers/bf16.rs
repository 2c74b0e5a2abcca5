//! bf16 products with fp32 accumulation: the `precision = "bf16"` path of the NHWC
//! convolutions ([`super::NhwcConv2d::to_bf16`]).
//!
//! Both operands are rounded to bf16 (to nearest, ties to even); every product and sum is
//! fp32, and so are the bias, the residual, the activation and the output. As on every bf16
//! unit, values below bf16's normal range (about 1e-38) become zero. The filter is
//! rounded and packed once, at load; the activations are rounded block by block as the
//! product reads them, so the tensors between nodes stay fp32.
//!
//! Two kernels, chosen at run time ([`units`]):
//! - **AMX** (Sapphire Rapids and later): `tdpbf16ps` on 16x32 tiles, a 32x32 block of the
//!   output in four accumulator tiles. Linux hands out the tile registers only to a process
//!   that asks (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`), which [`units`] does.
//! - **AVX-512 BF16** (Zen 4, Cooper Lake): `vdpbf16ps`, 8 rows by 32 columns in registers.
//!
//! One packing serves both: the filter `[K, N]` is stored as blocks of 16 columns, each as
//! `K/2` rows of 16 pairs `(w[2p][j], w[2p+1][j])`. That is AMX's layout of a `B` tile (16
//! rows of 64 bytes, 32 values of `K` each) and, row by row, the operand of `vdpbf16ps`.

use std::mem::MaybeUninit;
use std::sync::OnceLock;

use half::bf16;
use rayon::prelude::*;

use super::{invalid, shape_err, Activation, Result};

/// Which units run the bf16 products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Units {
    /// AMX tiles (`amx-bf16`), with AVX-512 BF16 for the rounding.
    Amx,
    /// AVX-512 BF16 (`vdpbf16ps`) alone.
    Avx512,
}

impl Bf16Units {
    pub fn name(self) -> &'static str {
        match self {
            Bf16Units::Amx => "AMX tiles",
            Bf16Units::Avx512 => "AVX-512 BF16",
        }
    }
}

/// The bf16 units of this CPU, or `None` where it has no AVX-512 BF16. Detected once; asks
/// Linux for the AMX tile registers the first time. `KERNELS_BF16=avx512` keeps AMX unused
/// (to compare the two kernels), `KERNELS_BF16=off` reports no units at all.
pub fn units() -> Option<Bf16Units> {
    static UNITS: OnceLock<Option<Bf16Units>> = OnceLock::new();
    *UNITS.get_or_init(|| {
        let choice = std::env::var("KERNELS_BF16").unwrap_or_default();
        if choice == "off" {
            return None;
        }
        detect(choice != "avx512")
    })
}

#[cfg(target_arch = "x86_64")]
fn detect(amx_wanted: bool) -> Option<Bf16Units> {
    if !(is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512bf16"))
    {
        return None;
    }
    let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
    let amx_cpu = leaf7.edx & (1 << 22) != 0 && leaf7.edx & (1 << 24) != 0;
    if amx_wanted && amx_cpu && request_amx_permission() {
        Some(Bf16Units::Amx)
    } else {
        Some(Bf16Units::Avx512)
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect(_amx_wanted: bool) -> Option<Bf16Units> {
    None
}

/// Asks Linux (5.16 and later) to let this process use the AMX tile data registers; they
/// fault otherwise. The permission is per process and cannot be taken back.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_amx_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only changes the process's permission mask;
    // it reads and writes no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(all(target_arch = "x86_64", not(target_os = "linux")))]
fn request_amx_permission() -> bool {
    false
}

/// The precision a node computes in (`precision = "fp32"` or `"bf16"`; `"auto"` is one of
/// them, see [`Precision::auto`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
}

impl Precision {
    /// `"fp32"`, `"bf16"`, or `"auto"` ([`Precision::auto`]'s choice).
    pub fn parse(s: &str) -> Option<Precision> {
        match s {
            "fp32" => Some(Precision::Fp32),
            "bf16" => Some(Precision::Bf16),
            "auto" => Some(Precision::auto().0),
            _ => None,
        }
    }

    /// The name `parse` takes.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }

    /// `precision = "auto"`: the fastest precision this CPU computes in (bf16 wherever it has
    /// AVX-512 BF16, on AMX tiles where it has them too, else fp32), and a line that says
    /// which and why, for the run's header.
    pub fn auto() -> (Precision, &'static str) {
        match units() {
            Some(Bf16Units::Amx) => (Precision::Bf16, "auto: bf16, on AMX tiles"),
            Some(Bf16Units::Avx512) => (
                Precision::Bf16,
                "auto: bf16, on AVX-512 BF16 (this CPU has no AMX tiles)",
            ),
            None => (
                Precision::Fp32,
                "auto: fp32 (this CPU has no AVX-512 BF16 and no AMX)",
            ),
        }
    }

    /// `Ok` when this CPU can compute in `self`; else what the user should do.
    pub fn check_supported(self) -> std::result::Result<(), String> {
        match (self, units()) {
            (Precision::Bf16, None) => Err(
                "precision = \"bf16\" needs a CPU with AVX-512 BF16 (Intel Cooper Lake or Sapphire Rapids and later, AMD Zen 4 and later), and this one has none; use precision = \"fp32\", or \"auto\" (the best this CPU has)"
                    .into(),
            ),
            _ => Ok(()),
        }
    }
}

/// Values of `K` per AMX tile row and per step of the products.
const KSTEP: usize = 32;
/// Output columns per packed block (a tile's 16 fp32 accumulators per row).
const NBLOCK: usize = 16;
/// Output rows and columns per kernel call.
const MR: usize = 32;
const NR: usize = 32;

/// 64 bytes of bf16 values on a cache line of their own. AMX tile rows must not straddle
/// cache lines: tiles loaded from 16-byte-aligned memory (what `Vec<u16>` gets) ran at 0.29x
/// the speed of aligned ones on Sapphire Rapids (438 against 1532 GMAC/s in a loop of loads and
/// products), so the filter and the gathered rows live in these.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
struct Line([u16; 32]);

/// `n` bf16 values (zeros) on whole cache lines.
fn lines(n: usize) -> Vec<Line> {
    vec![Line([0; 32]); n.div_ceil(32)]
}

fn line_values(v: &[Line]) -> &[u16] {
    // SAFETY: a `Line` is 32 `u16`s with no padding (size 64, align 64), so the lines are
    // `32 · len` contiguous initialised `u16`s.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u16>(), v.len() * 32) }
}

fn line_values_mut(v: &mut [Line]) -> &mut [u16] {
    // SAFETY: as in `line_values`, borrowed mutably; any `u16` is a valid value.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u16>(), v.len() * 32) }
}

/// A `[K, N]` matrix (a convolution's filter as `[KH·KW·C, CO]`) rounded to bf16 and packed
/// for both kernels (see the module documentation), with its fp32 bias.
#[derive(Clone, Debug)]
pub struct Bf16Filter {
    /// `np / 16` blocks of `kp / 2` rows of 16 pairs.
    packed: Vec<Line>,
    k: usize,
    /// `k` rounded up to [`KSTEP`] (zeros after `k`).
    kp: usize,
    n: usize,
    /// `n` rounded up to [`NR`] values, zeros after `n`.
    bias: Vec<f32>,
}

impl Bf16Filter {
    /// Packs `w` (`k` rows of `n` values, row-major) and `bias` (`n` values, or zeros).
    pub fn new(w: &[f32], k: usize, n: usize, bias: Option<&[f32]>) -> Result<Bf16Filter> {
        const OP: &str = "bf16 filter";
        if w.len() != k * n || k == 0 || n == 0 {
            return shape_err(
                OP,
                format!("{} values do not make a {k}x{n} matrix", w.len()),
            );
        }
        if bias.is_some_and(|b| b.len() != n) {
            return shape_err(OP, format!("the bias must have {n} values"));
        }
        let kp = k.div_ceil(KSTEP) * KSTEP;
        let np = n.div_ceil(NR) * NR;
        let mut lines = lines(kp * np);
        let packed = line_values_mut(&mut lines);
        for block in 0..np / NBLOCK {
            for p in 0..kp / 2 {
                for j in 0..NBLOCK {
                    let col = block * NBLOCK + j;
                    for t in 0..2 {
                        let row = 2 * p + t;
                        if row < k && col < n {
                            let at = ((block * kp / 2 + p) * NBLOCK + j) * 2 + t;
                            packed[at] = bf16::from_f32(w[row * n + col]).to_bits();
                        }
                    }
                }
            }
        }
        let mut b = vec![0f32; np];
        if let Some(bias) = bias {
            b[..n].copy_from_slice(bias);
        }
        Ok(Bf16Filter {
            packed: lines,
            k,
            kp,
            n,
            bias: b,
        })
    }

    /// `(K, N)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// The packed block of columns `16·block..`, from its first row pair.
    fn block(&self, block: usize) -> &[u16] {
        &line_values(&self.packed)[block * self.kp * NBLOCK..][..self.kp * NBLOCK]
    }
}

/// Rounds `src` to bf16 into `dst` (the same length).
pub fn round_to_bf16(src: &[f32], dst: &mut [u16]) {
    // SAFETY: a `u16` slice is a valid `MaybeUninit<u16>` slice, and `round_into` writes only
    // valid values.
    let dst = unsafe { &mut *(dst as *mut [u16] as *mut [MaybeUninit<u16>]) };
    round_into(src, dst);
}

/// [`round_to_bf16`] into memory not yet written.
fn round_into(src: &[f32], dst: &mut [MaybeUninit<u16>]) {
    debug_assert_eq!(src.len(), dst.len());
    let n = src.len().min(dst.len());
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if units().is_some() {
        // SAFETY: `units` found AVX-512 F, BW and BF16 on this CPU.
        done = unsafe { round_avx512(&src[..n], &mut dst[..n]) };
    }
    for (d, &s) in dst[done..n].iter_mut().zip(&src[done..n]) {
        d.write(bf16::from_f32(s).to_bits());
    }
}

/// Rounds the whole blocks of 16 values of `src` into `dst`; returns how many it did.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn round_avx512(src: &[f32], dst: &mut [MaybeUninit<u16>]) -> usize {
    use std::arch::x86_64::{__m256i, _mm256_storeu_si256, _mm512_cvtneps_pbh, _mm512_loadu_ps};
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n, the length of both slices.
        unsafe {
            let v = _mm512_loadu_ps(src.as_ptr().add(i));
            let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
            _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, h);
        }
        i += 16;
    }
    i
}

/// What the product adds after the sums: the filter's bias always, then `residual` (an
/// output-shaped `[M, N]` buffer, of the output's type) where given, then `activation`.
#[derive(Clone, Copy)]
pub struct Bf16Epilogue<'a, T> {
    pub residual: Option<&'a [T]>,
    pub activation: Activation,
}

/// The values a [`product`] writes: `f32`, or bf16 (its bits as `u16`), rounded once after
/// the epilogue (activations kept in bf16 between layers, as OpenVINO's bf16 mode keeps
/// them: half the memory traffic of the layers that write 4 values per value read).
pub trait Element: Copy + Send + Sync + 'static {
    fn values(s: &[Self]) -> Values<'_>;
    fn slots(s: &mut [MaybeUninit<Self>]) -> Slots<'_>;
}

/// Values of either type (see [`Element`]).
#[derive(Clone, Copy)]
pub enum Values<'a> {
    F32(&'a [f32]),
    Bf16(&'a [u16]),
}

/// Memory for values of either type, not yet written.
pub enum Slots<'a> {
    F32(&'a mut [MaybeUninit<f32>]),
    Bf16(&'a mut [MaybeUninit<u16>]),
}

impl Element for f32 {
    fn values(s: &[f32]) -> Values<'_> {
        Values::F32(s)
    }
    fn slots(s: &mut [MaybeUninit<f32>]) -> Slots<'_> {
        Slots::F32(s)
    }
}

impl Element for u16 {
    fn values(s: &[u16]) -> Values<'_> {
        Values::Bf16(s)
    }
    fn slots(s: &mut [MaybeUninit<u16>]) -> Slots<'_> {
        Slots::Bf16(s)
    }
}

/// The rows of the left matrix `A` of a [`product`].
#[derive(Clone, Copy)]
pub enum Rows<'a> {
    /// `M` rows of `kp` bf16 values, contiguous: a 1x1 convolution's input as it is.
    Direct(&'a [u16]),
    /// `gather(row0, rows, dst)` writes rows `row0..row0 + rows` into `dst`, each `kp`
    /// values long (zeros from `K` on): a convolution's windows ([`conv_rows`]).
    Gather(&'a (dyn Fn(usize, usize, &mut [u16]) + Sync)),
}

/// `epilogue(A · filter)`, `[M, N]` row-major, on the bf16 units, on the calling rayon pool.
pub fn product<T: Element>(
    m: usize,
    filter: &Bf16Filter,
    rows: Rows<'_>,
    epilogue: Bf16Epilogue<'_, T>,
) -> Result<Vec<T>> {
    const OP: &str = "bf16 product";
    let Some(units) = units() else {
        return invalid(OP, "this CPU has no AVX-512 BF16");
    };
    let (kp, n) = (filter.kp, filter.n);
    let len = super::checked_numel(OP, &[m, n])?;
    if epilogue.residual.is_some_and(|r| r.len() != len) {
        return shape_err(OP, format!("the residual must hold {m}x{n} values"));
    }
    if let Rows::Direct(a) = rows {
        if a.len() != m * kp {
            return shape_err(OP, format!("{} values are not {m} rows of {kp}", a.len()));
        }
    }
    let mut out: Vec<T> = Vec::with_capacity(len);
    if len == 0 {
        return Ok(out);
    }
    // Rows per task: a multiple of the kernel's 32, the bf16 rows of `A` about 128 KB (in L2
    // beside the filter's 32 columns it sweeps), and at least a task per thread.
    let threads = rayon::current_num_threads().max(1);
    let by_cache = (128 * 1024 / (2 * kp)).clamp(MR, 8 * MR) / MR * MR;
    let by_threads = m.div_ceil(threads).div_ceil(MR) * MR;
    let rows_per_task = by_cache.min(by_threads).max(MR);
    let row_tasks = m.div_ceil(rows_per_task);
    // Fewer row blocks than threads (a 7x7 or 14x14 map): the columns are split too, so that
    // each thread streams its part of the filter (9.4 MB for a 3x3 512 -> 512 in bf16)
    // rather than all of it.
    let col_blocks = n.div_ceil(NR);
    let col_parts = if row_tasks < threads {
        threads.div_ceil(row_tasks).min(col_blocks)
    } else {
        1
    };
    let cols_per_part = col_blocks.div_ceil(col_parts) * NR;
    let out_ptr = OutPtr(out.as_mut_ptr());
    (0..row_tasks * col_parts).into_par_iter().for_each(|task| {
        let (row_task, part) = (task / col_parts, task % col_parts);
        let row0 = row_task * rows_per_task;
        let count = rows_per_task.min(m - row0);
        let cols = part * cols_per_part..((part + 1) * cols_per_part).min(n);
        if cols.is_empty() {
            return;
        }
        SCRATCH.with_borrow_mut(|scratch| {
            // The kernel reads whole blocks of 32 rows from cache-line-aligned memory: rows
            // read in place only where they are so, else copied (a partial last block too,
            // its rows after `count` holding anything: their sums are dropped).
            let padded = count.div_ceil(MR) * MR * kp;
            if scratch.len() * 32 < padded {
                *scratch = lines(padded);
            }
            let a = match rows {
                Rows::Direct(a)
                    if count.is_multiple_of(MR)
                        && (a.as_ptr() as usize).is_multiple_of(std::mem::align_of::<Line>()) =>
                {
                    &a[row0 * kp..][..padded]
                }
                Rows::Direct(a) => {
                    let scratch = line_values_mut(scratch);
                    scratch[..count * kp].copy_from_slice(&a[row0 * kp..][..count * kp]);
                    &scratch[..padded]
                }
                Rows::Gather(gather) => {
                    let scratch = line_values_mut(scratch);
                    gather(row0, count, &mut scratch[..count * kp]);
                    &scratch[..padded]
                }
            };
            let block = Block {
                rows: row0..row0 + count,
                cols,
            };
            // SAFETY: `units` found AVX-512 F, BW and BF16; the tasks' blocks of rows and
            // columns do not overlap, and `out_ptr` holds `m · n` values.
            unsafe { task_product(units, a, block, filter, epilogue, &out_ptr) };
        });
    });
    // SAFETY: the tasks' blocks cover every row and column of the `m · n` values, and
    // `task_product` writes every value of its block.
    unsafe { out.set_len(len) };
    Ok(out)
}

thread_local! {
    /// A task's gathered rows, kept between tasks and calls.
    static SCRATCH: std::cell::RefCell<Vec<Line>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The output of a [`product`], shared by its tasks, each writing its own [`Block`].
struct OutPtr<T>(*mut T);
// SAFETY: the tasks write disjoint blocks of the buffer (see `product`).
unsafe impl<T> Sync for OutPtr<T> {}

impl<T> OutPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

/// A task's rows (of the whole product) and columns.
struct Block {
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
}

/// One task's block: for each 32 of its columns, each 32 of its rows (`a`, from the block's
/// first row), then the epilogue on the 32x32 sums.
///
/// # Safety
/// AVX-512 F, BW and BF16 (and AMX for [`Bf16Units::Amx`]) on this CPU; `out` holds the
/// product's `M · N` values and no other task writes this block.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn task_product<T: Element>(
    units: Bf16Units,
    a: &[u16],
    block: Block,
    filter: &Bf16Filter,
    epilogue: Bf16Epilogue<'_, T>,
    out: &OutPtr<T>,
) {
    let (kp, n) = (filter.kp, filter.n);
    let rows = block.rows.len();
    let mut sums = Sums([0f32; MR * NR]);
    let c = &mut sums.0;
    let _tiles = (units == Bf16Units::Amx).then(AmxTiles::configure);
    for col0 in block.cols.clone().step_by(NR) {
        let b0 = filter.block(col0 / NBLOCK);
        let b1 = filter.block(col0 / NBLOCK + 1);
        let cols = NR.min(n - col0);
        for r0 in (0..rows).step_by(MR) {
            let a = &a[r0 * kp..][..MR * kp];
            kernel(units, a, kp, b0, b1, c);
            for r in 0..MR.min(rows - r0) {
                let at = (block.rows.start + r0 + r) * n + col0;
                let res = epilogue.residual.map(|v| T::values(&v[at..at + cols]));
                // SAFETY: `at..at + cols` is in row `block.rows.start + r0 + r` and the
                // columns of this block, within the `M · N` values and this task's alone.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(out.0.add(at) as *mut MaybeUninit<T>, cols)
                };
                let sums = &c[r * NR..][..cols];
                let bias = &filter.bias[col0..col0 + cols];
                // SAFETY: this function's target features; every slice holds `cols` <= 32
                // values.
                unsafe { epilogue_avx512(sums, bias, res, epilogue.activation, T::slots(dst)) };
            }
        }
    }
}

/// A 32x32 block of sums, on whole cache lines (as the tiles store them fastest).
#[repr(C, align(64))]
struct Sums([f32; MR * NR]);

/// `dst = activation(sums + bias [+ residual])` on 32 values at most, in two AVX-512
/// registers (masked at the edge); ReLU there too, other activations through a buffer. A
/// bf16 `dst` gets the fp32 result rounded once.
///
/// # Safety
/// AVX-512 F, BW and BF16 on this CPU; `sums`, `bias` and `residual` hold at least as many
/// values as `dst`, which holds 32 at most.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
#[inline]
unsafe fn epilogue_avx512(
    sums: &[f32],
    bias: &[f32],
    residual: Option<Values<'_>>,
    activation: Activation,
    dst: Slots<'_>,
) {
    use std::arch::x86_64::*;
    let len = match &dst {
        Slots::F32(d) => d.len(),
        Slots::Bf16(d) => d.len(),
    };
    debug_assert!(len <= NR && sums.len() >= len && bias.len() >= len);
    let relu = activation == Activation::Relu;
    let other = !relu && activation != Activation::Identity;
    let mask = |at: usize| -> __mmask16 {
        if len - at >= 16 {
            0xffff
        } else {
            (1u16 << (len - at)) - 1
        }
    };
    let mut v = [_mm512_setzero_ps(); NR / 16];
    for (half, v) in v.iter_mut().enumerate().take(len.div_ceil(16)) {
        let (at, k) = (half * 16, mask(half * 16));
        // SAFETY: the mask keeps every access within the first `len` values of each slice
        // (the contract).
        unsafe {
            *v = _mm512_add_ps(
                _mm512_maskz_loadu_ps(k, sums.as_ptr().add(at)),
                _mm512_maskz_loadu_ps(k, bias.as_ptr().add(at)),
            );
            match residual {
                Some(Values::F32(r)) => {
                    *v = _mm512_add_ps(*v, _mm512_maskz_loadu_ps(k, r.as_ptr().add(at)))
                }
                Some(Values::Bf16(r)) => {
                    let bits = _mm256_maskz_loadu_epi16(k, r.as_ptr().add(at) as *const i16);
                    let wide = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(bits));
                    *v = _mm512_add_ps(*v, _mm512_castsi512_ps(wide));
                }
                None => {}
            }
            if relu {
                // ReLU as the fp32 layers compute it: 0 where v < 0, NaN passes through.
                let negative = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(*v, _mm512_setzero_ps());
                *v = _mm512_mask_mov_ps(*v, negative, _mm512_setzero_ps());
            }
        }
    }
    if other {
        let mut buf = [0f32; NR];
        for (half, v) in v.iter_mut().enumerate() {
            // SAFETY: 16 values at 16·half < 32.
            unsafe { _mm512_storeu_ps(buf.as_mut_ptr().add(half * 16), *v) };
        }
        activation.apply_slice(&mut buf[..len]);
        for (half, v) in v.iter_mut().enumerate() {
            // SAFETY: as above.
            *v = unsafe { _mm512_loadu_ps(buf.as_ptr().add(half * 16)) };
        }
    }
    for (half, v) in v.iter().enumerate().take(len.div_ceil(16)) {
        let (at, k) = (half * 16, mask(half * 16));
        // SAFETY: the mask keeps the stores within `dst`'s `len` values.
        unsafe {
            match &dst {
                Slots::F32(d) => _mm512_mask_storeu_ps(d.as_ptr().add(at) as *mut f32, k, *v),
                Slots::Bf16(d) => {
                    let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(*v));
                    _mm256_mask_storeu_epi16(d.as_ptr().add(at) as *mut i16, k, h)
                }
            }
        }
    }
}

/// `c[32, 32] = a[32, kp] · [b0 | b1]` (`b0`, `b1`: packed blocks of 16 columns).
fn kernel(units: Bf16Units, a: &[u16], kp: usize, b0: &[u16], b1: &[u16], c: &mut [f32; MR * NR]) {
    assert!(a.len() >= MR * kp && b0.len() >= kp * NBLOCK && b1.len() >= kp * NBLOCK);
    assert!(kp.is_multiple_of(KSTEP) && kp > 0);
    #[cfg(target_arch = "x86_64")]
    match units {
        // SAFETY: the tiles are configured (`AmxTiles` in the caller), the slices hold what
        // the kernel reads (asserted above), and `units` found AMX.
        Bf16Units::Amx => unsafe { amx_kernel(a, kp, b0, b1, c) },
        // SAFETY: as above; `units` found AVX-512 BF16.
        Bf16Units::Avx512 => unsafe {
            for r in (0..MR).step_by(8) {
                avx512_kernel(&a[r * kp..], kp, b0, b1, &mut c[r * NR..]);
            }
        },
    }
}

/// The tile configuration of [`amx_kernel`] on this thread, released when dropped.
#[cfg(target_arch = "x86_64")]
struct AmxTiles;

#[cfg(target_arch = "x86_64")]
impl AmxTiles {
    fn configure() -> AmxTiles {
        // Palette 1; tiles 0-7 all 16 rows of 64 bytes: tmm0-3 the fp32 block, tmm4-5 two
        // 16-row slices of `a`, tmm6-7 two 16-column blocks of the filter.
        let mut cfg = [0u8; 64];
        cfg[0] = 1;
        for t in 0..8 {
            cfg[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
            cfg[48 + t] = 16;
        }
        // SAFETY: `cfg` is a valid 64-byte palette-1 configuration; `units` found AMX and
        // Linux granted the tile data permission.
        unsafe {
            std::arch::asm!("ldtilecfg [{0}]", in(reg) cfg.as_ptr(), options(nostack, readonly))
        };
        AmxTiles
    }
}

#[cfg(target_arch = "x86_64")]
impl Drop for AmxTiles {
    fn drop(&mut self) {
        // SAFETY: releases the tile state configured in `configure`.
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// AMX: the K loop in one asm block, so that no tile lives across compiler-visible code.
///
/// # Safety
/// Tiles configured by [`AmxTiles::configure`] on this thread; `a` holds 32 rows of `kp`,
/// `b0` and `b1` hold `kp · 16` values each.
#[cfg(target_arch = "x86_64")]
unsafe fn amx_kernel(a: &[u16], kp: usize, b0: &[u16], b1: &[u16], c: &mut [f32; MR * NR]) {
    let a_stride = kp * 2;
    let a0 = a.as_ptr();
    // SAFETY: row 16 of 32 rows of `kp` values.
    let a1 = unsafe { a0.add(16 * kp) };
    // SAFETY: see the function's contract: every load stays within `a`, `b0` and `b1`
    // (kp / 32 steps of 64 bytes along 16 rows of `a`, 1024 bytes of each block), every store
    // within `c` (32 rows of 128 bytes).
    unsafe {
        std::arch::asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "tileloadd tmm4, [{a0} + {as}*1]",
            "tileloadd tmm5, [{a1} + {as}*1]",
            "tileloadd tmm6, [{b0} + {bs}*1]",
            "tileloadd tmm7, [{b1} + {bs}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a0}, 64",
            "add {a1}, 64",
            "add {b0}, 1024",
            "add {b1}, 1024",
            "dec {steps}",
            "jnz 2b",
            "tilestored [{c} + {cs}*1], tmm0",
            "tilestored [{c1} + {cs}*1], tmm1",
            "tilestored [{c2} + {cs}*1], tmm2",
            "tilestored [{c3} + {cs}*1], tmm3",
            a0 = inout(reg) a0 => _,
            a1 = inout(reg) a1 => _,
            b0 = inout(reg) b0.as_ptr() => _,
            b1 = inout(reg) b1.as_ptr() => _,
            steps = inout(reg) kp / KSTEP => _,
            as = in(reg) a_stride,
            bs = in(reg) 64usize,
            c = in(reg) c.as_mut_ptr(),
            c1 = in(reg) c.as_mut_ptr().add(16),
            c2 = in(reg) c.as_mut_ptr().add(16 * NR),
            c3 = in(reg) c.as_mut_ptr().add(16 * NR + 16),
            cs = in(reg) NR * 4,
            options(nostack),
        );
    }
}

/// AVX-512 BF16: rows `0..8` of `a` (each `kp` long) times `[b0 | b1]` into `c` (8 rows of
/// 32), 16 accumulators in registers.
///
/// # Safety
/// AVX-512 F and BF16 on this CPU; `a` holds 8 rows of `kp`, `b0` and `b1` `kp · 16` values,
/// `c` 8 rows of 32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn avx512_kernel(a: &[u16], kp: usize, b0: &[u16], b1: &[u16], c: &mut [f32]) {
    use std::arch::x86_64::*;
    const R: usize = 8;
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let (a, b0, b1) = (a.as_ptr(), b0.as_ptr(), b1.as_ptr());
    for p in 0..kp / 2 {
        // SAFETY: pair p of kp / 2, within both blocks and every row (the contract).
        unsafe {
            let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b0.add(p * 32) as *const _));
            let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b1.add(p * 32) as *const _));
            for (r, acc) in acc.iter_mut().enumerate() {
                let pair = (a.add(r * kp + 2 * p) as *const u32).read_unaligned();
                let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair as i32));
                acc[0] = _mm512_dpbf16_ps(acc[0], x, w0);
                acc[1] = _mm512_dpbf16_ps(acc[1], x, w1);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        // SAFETY: row r of 8 rows of 32 in `c`.
        unsafe {
            _mm512_storeu_ps(c.as_mut_ptr().add(r * NR), acc[0]);
            _mm512_storeu_ps(c.as_mut_ptr().add(r * NR + 16), acc[1]);
        }
    }
}

/// A convolution's geometry for [`conv_rows`]: `x` `[N, H, W, C]`, a `kh x kw` window at
/// `strides` and `dilations`, `pad` cells before each axis (top, left), output `oh x ow`.
#[derive(Clone, Copy, Debug)]
pub struct WindowGeom {
    pub input: [usize; 4],
    pub kernel: (usize, usize),
    pub strides: (usize, usize),
    pub dilations: (usize, usize),
    pub pad: (usize, usize),
    pub out: (usize, usize),
}

/// `x` rounded to bf16, on the calling rayon pool.
pub fn to_bf16(x: &[f32]) -> Vec<u16> {
    let mut out: Vec<u16> = Vec::with_capacity(x.len());
    out.spare_capacity_mut()
        .par_chunks_mut(1 << 14)
        .zip(x.par_chunks(1 << 14))
        .for_each(|(d, s)| round_into(s, d));
    // SAFETY: every value was written above (the chunks of `out` and `x` pair one to one).
    unsafe { out.set_len(x.len()) };
    out
}

/// bf16 bits as the f32 they stand for, bit for bit (`half`'s `to_f32` also quiets a
/// signalling NaN, a compare and a select per value on the hot path).
#[inline(always)]
fn widen(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// Pixels per task of the layout changes below: a task's `[16, C]` f32 block (at most 128 KB)
/// stays in cache between its transpose and its rounding or widening.
const LAYOUT_PIXELS: usize = 16;

/// `[N, C, HW]` fp32 (an `NCHW` image) as `[N, HW, C]` bf16, in one pass over memory: each
/// block of 16 pixels is transposed in 8x8 blocks into a buffer in cache, then rounded from
/// there (the values of `to_bf16` after `shape::transpose_2d_batched`).
pub fn nchw_to_nhwc_bf16(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<u16> {
    let len = n * c * hw;
    assert!(x.len() >= len, "{} values for [{n}, {c}, {hw}]", x.len());
    let mut out: Vec<u16> = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }
    let avx = crate::ops::simd::has_avx();
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(LAYOUT_PIXELS * c)
        .enumerate()
        .for_each_init(Vec::new, |tmp: &mut Vec<f32>, (task, dst)| {
            let first = task * LAYOUT_PIXELS;
            let pixels = dst.len() / c;
            tmp.resize(pixels * c, 0.0);
            let (b, p) = (first / hw, first % hw);
            if avx && pixels == LAYOUT_PIXELS && p + LAYOUT_PIXELS <= hw && c.is_multiple_of(8) {
                for c0 in (0..c).step_by(8) {
                    // SAFETY: AVX is present; two 8x8 blocks read channels c0..c0 + 8 (rows
                    // `hw` apart) of pixels p..p + 16 <= hw of image b, and write pixels
                    // 0..16 (rows `c` apart) of `tmp`, channels c0..c0 + 8 <= c.
                    unsafe {
                        crate::ops::simd::transpose8x8_blocks(
                            x.as_ptr().add((b * c + c0) * hw + p),
                            hw,
                            tmp.as_mut_ptr().add(c0),
                            c,
                            LAYOUT_PIXELS / 8,
                        )
                    };
                }
            } else {
                for (i, row) in tmp.chunks_exact_mut(c).enumerate() {
                    let (b, p) = ((first + i) / hw, (first + i) % hw);
                    for (ch, v) in row.iter_mut().enumerate() {
                        *v = x[(b * c + ch) * hw + p];
                    }
                }
            }
            round_into(tmp, dst);
        });
    // SAFETY: the chunks cover the `len` values and `round_into` writes each.
    unsafe { out.set_len(len) };
    out
}

/// `[N, HW, C]` bf16 as `[N, C, HW]` fp32 (an `NCHW` image), in one pass over memory: each
/// block of 16 pixels is widened into a buffer in cache, then transposed from there in 8x8
/// blocks (the values widened, then `shape::transpose_2d_batched`).
pub fn nhwc_bf16_to_nchw(x: &[u16], n: usize, hw: usize, c: usize) -> Vec<f32> {
    let len = n * c * hw;
    assert!(x.len() >= len, "{} values for [{n}, {hw}, {c}]", x.len());
    let mut out: Vec<f32> = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }
    let avx = crate::ops::simd::has_avx();
    let out_ptr = OutPtr(out.as_mut_ptr());
    x[..len]
        .par_chunks(LAYOUT_PIXELS * c)
        .enumerate()
        .for_each_init(Vec::new, |tmp: &mut Vec<f32>, (task, src)| {
            let first = task * LAYOUT_PIXELS;
            let pixels = src.len() / c;
            tmp.clear();
            tmp.extend(src.iter().map(|&v| widen(v)));
            let (b, p) = (first / hw, first % hw);
            // Each task writes pixels first..first + pixels of every channel row: disjoint
            // from every other task's.
            let base = out_ptr.get();
            if avx && pixels == LAYOUT_PIXELS && p + LAYOUT_PIXELS <= hw && c.is_multiple_of(8) {
                for p8 in (0..LAYOUT_PIXELS).step_by(8) {
                    // SAFETY: AVX is present; the blocks read pixels p8..p8 + 8 of `tmp`
                    // (rows `c` apart), every channel, and write channels 0..c (rows `hw`
                    // apart) of pixels p + p8..p + p8 + 8 <= hw of image b, this task's.
                    unsafe {
                        crate::ops::simd::transpose8x8_blocks(
                            tmp.as_ptr().add(p8 * c),
                            c,
                            base.add(b * c * hw + p + p8),
                            hw,
                            c / 8,
                        )
                    };
                }
            } else {
                for (i, row) in tmp.chunks_exact(c).enumerate() {
                    let (b, p) = ((first + i) / hw, (first + i) % hw);
                    for (ch, &v) in row.iter().enumerate() {
                        // SAFETY: pixel p of channel ch of image b, within `len`; this task's.
                        unsafe { base.add((b * c + ch) * hw + p).write(v) };
                    }
                }
            }
        });
    // SAFETY: the tasks cover every pixel of every channel of every image.
    unsafe { out.set_len(len) };
    out
}

/// Max pooling of `[N, H, W, C]` bf16 values (their bits), `k x k` windows at stride `s`
/// with `pad` cells before each axis that never win (torch's `max_pool2d`), in the values'
/// order: the maximum is one of the inputs, so nothing is rounded. A NaN wins, as in torch.
pub fn max_pool_nhwc_bf16(
    x: ndarray::ArrayView4<'_, u16>,
    k: usize,
    s: usize,
    pad: usize,
) -> Result<ndarray::Array4<u16>> {
    const OP: &str = "max_pool_nhwc_bf16";
    let (n, h, w, c) = x.dim();
    if k == 0 || s == 0 || pad >= k || h + 2 * pad < k || w + 2 * pad < k {
        return invalid(
            OP,
            format!("a {k}x{k} window at stride {s}, padding {pad}, on {h}x{w}"),
        );
    }
    let (oh, ow) = ((h + 2 * pad - k) / s + 1, (w + 2 * pad - k) / s + 1);
    let x = x.as_standard_layout();
    let xs = x.as_slice().ok_or(super::LayerError::Invalid {
        op: OP,
        msg: "input not contiguous".into(),
    })?;
    // An order-preserving key: the float order of the values as unsigned integers, NaN above
    // every number (positive NaN; a negative one is below, and ReLU's outputs have none).
    let key = |b: u16| if b & 0x8000 != 0 { !b } else { b | 0x8000 };
    let unkey = |k: u16| if k & 0x8000 != 0 { k & 0x7fff } else { !k };
    let mut out = vec![0u16; n * oh * ow * c];
    out.par_chunks_mut(ow * c)
        .enumerate()
        .for_each(|(row, dst)| {
            let (b, oy) = (row / oh, row % oh);
            let image = &xs[b * h * w * c..][..h * w * c];
            let mut best = vec![0u16; c];
            for (ox, dst) in dst.chunks_exact_mut(c).enumerate() {
                best.fill(0);
                for iy in (oy * s).saturating_sub(pad)..(oy * s + k).saturating_sub(pad).min(h) {
                    for ix in (ox * s).saturating_sub(pad)..(ox * s + k).saturating_sub(pad).min(w)
                    {
                        let v = &image[(iy * w + ix) * c..][..c];
                        best.iter_mut()
                            .zip(v)
                            .for_each(|(m, &v)| *m = (*m).max(key(v)));
                    }
                }
                dst.iter_mut().zip(&best).for_each(|(d, &m)| *d = unkey(m));
            }
        });
    ndarray::Array4::from_shape_vec((n, oh, ow, c), out).or_else(|e| invalid(OP, e.to_string()))
}

/// [`Rows::Gather`] for a convolution of `x` (`geom.input`, NHWC, already bf16): row `r` of
/// `A` is output pixel `r`'s window, in the filter's `[KH, KW, C]` order, zeros for padding
/// and from `K` to `kp`.
pub fn conv_rows<'a>(
    x: &'a [u16],
    geom: WindowGeom,
    filter: &'a Bf16Filter,
) -> impl Fn(usize, usize, &mut [u16]) + Sync + 'a {
    let [_, h, w, c] = geom.input;
    let (kh, kw) = geom.kernel;
    let (oh, ow) = geom.out;
    let kp = filter.kp;
    move |row0, rows, dst| {
        for (i, dst) in dst.chunks_exact_mut(kp).take(rows).enumerate() {
            let pixel = row0 + i;
            let (b, oy, ox) = (pixel / (oh * ow), pixel / ow % oh, pixel % ow);
            let image = &x[b * h * w * c..][..h * w * c];
            for ky in 0..kh {
                let iy = (oy * geom.strides.0 + ky * geom.dilations.0)
                    .checked_sub(geom.pad.0)
                    .filter(|&iy| iy < h);
                let row = &mut dst[ky * kw * c..][..kw * c];
                let Some(iy) = iy else {
                    row.fill(0);
                    continue;
                };
                let first = (ox * geom.strides.1).checked_sub(geom.pad.1);
                let last = ox * geom.strides.1 + (kw - 1) * geom.dilations.1;
                match first {
                    // The window's row is one run of `kw · c` values (the stem: 21 values
                    // rather than 7 copies of 3).
                    Some(ix) if geom.dilations.1 == 1 && last - geom.pad.1 < w => {
                        copy_run(row, &image[(iy * w + ix) * c..][..kw * c])
                    }
                    _ => {
                        for (kx, d) in row.chunks_exact_mut(c).enumerate() {
                            let ix = (ox * geom.strides.1 + kx * geom.dilations.1)
                                .checked_sub(geom.pad.1)
                                .filter(|&ix| ix < w);
                            match ix {
                                Some(ix) => copy_run(d, &image[(iy * w + ix) * c..][..c]),
                                None => d.fill(0),
                            }
                        }
                    }
                }
            }
            dst[kh * kw * c..].fill(0);
        }
    }
}

/// `dst.copy_from_slice(src)`, without a call to `memcpy` for the short runs of a stem.
#[inline(always)]
fn copy_run(dst: &mut [u16], src: &[u16]) {
    if dst.len() >= 64 {
        dst.copy_from_slice(src);
    } else {
        dst.iter_mut().zip(src).for_each(|(d, &s)| *d = s);
    }
}

/// Whether a convolution's `A` is its input as it is: 1x1, stride 1, no padding, and `C` a
/// whole number of the products' steps.
pub fn rows_are_pixels(geom: &WindowGeom) -> bool {
    geom.kernel == (1, 1)
        && geom.strides == (1, 1)
        && geom.pad == (0, 0)
        && geom.input[3].is_multiple_of(KSTEP)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bf(v: f32) -> f64 {
        bf16::from_f32(v).to_f64()
    }

    /// Deterministic values in about [-1, 1].
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn auto_is_bf16_exactly_where_the_cpu_has_it() {
        let (chosen, why) = Precision::auto();
        assert_eq!(Precision::parse("auto"), Some(chosen));
        assert_eq!(chosen == Precision::Bf16, units().is_some(), "{why}");
        assert!(chosen.check_supported().is_ok());
        for p in [Precision::Fp32, Precision::Bf16] {
            assert_eq!(Precision::parse(p.name()), Some(p));
        }
        assert_eq!(Precision::parse("fp16"), None);
    }

    #[test]
    fn packs_pairs_of_rows_in_blocks_of_16_columns() {
        let (k, n) = (3, 17);
        let w: Vec<f32> = (0..k * n).map(|i| i as f32).collect();
        let f = Bf16Filter::new(&w, k, n, None).unwrap();
        assert_eq!((f.kp, f.bias.len()), (32, 32));
        let at = |block: usize, p: usize, j: usize, t: usize| {
            bf16::from_bits(line_values(&f.packed)[((block * f.kp / 2 + p) * NBLOCK + j) * 2 + t])
                .to_f32()
        };
        assert_eq!(at(0, 0, 5, 1), w[n + 5]);
        assert_eq!(at(0, 1, 2, 0), w[2 * n + 2]);
        assert_eq!(at(0, 1, 2, 1), 0.0, "row 3 is padding");
        assert_eq!(at(1, 0, 0, 0), w[16]);
        assert_eq!(at(1, 0, 1, 0), 0.0, "column 17 is padding");
    }

    /// Every shape of the edges (rows, columns and depth not multiples of the blocks), with
    /// and without residual, against sums of the bf16-rounded operands in f64. The tolerance
    /// is fp32 summation's: a few units of 2^-24 of the sum of magnitudes per step.
    #[test]
    fn products_equal_the_sums_of_the_rounded_operands() {
        let Some(u) = units() else {
            eprintln!("SKIPPED products_equal_the_sums_of_the_rounded_operands: this CPU has no AVX-512 BF16");
            return;
        };
        eprintln!("bf16 units: {}", u.name());
        for &(m, k, n, with_residual) in &[
            (1, 1, 1, false),
            (33, 70, 47, true),
            (70, 576, 64, false),
            (200, 32, 96, true),
            (5, 1000, 130, true),
            (45, 64, 256, true),
        ] {
            let a = values(m * k, 1 + m as u32);
            let w = values(k * n, 7 + n as u32);
            let bias = values(n, 3);
            let residual = values(m * n, 5);
            let f = Bf16Filter::new(&w, k, n, Some(&bias)).unwrap();
            let fill = |row0: usize, rows: usize, dst: &mut [u16]| {
                for (i, d) in dst.chunks_exact_mut(f.kp).take(rows).enumerate() {
                    round_to_bf16(&a[(row0 + i) * k..][..k], &mut d[..k]);
                    d[k..].fill(0);
                }
            };
            let ep = Bf16Epilogue {
                residual: with_residual.then_some(&residual[..]),
                activation: Activation::Identity,
            };
            let residual_bf16 = to_bf16(&residual);
            let ep_bf16 = Bf16Epilogue {
                residual: with_residual.then_some(&residual_bf16[..]),
                activation: Activation::Identity,
            };
            let out = product(m, &f, Rows::Gather(&fill), ep).unwrap();
            // bf16 in and out: the same sums, with the residual rounded before and the result
            // after.
            let rounded: Vec<u16> = product(m, &f, Rows::Gather(&fill), ep_bf16).unwrap();
            let exact: Vec<f32> = if with_residual {
                let ep = Bf16Epilogue {
                    residual: Some(
                        &residual_bf16.iter().map(|&b| widen(b)).collect::<Vec<_>>()[..],
                    ),
                    activation: Activation::Identity,
                };
                product(m, &f, Rows::Gather(&fill), ep).unwrap()
            } else {
                out.clone()
            };
            assert_eq!(rounded, to_bf16(&exact), "{m}x{k}x{n}: bf16 out");
            if k % KSTEP == 0 {
                let direct = to_bf16(&a);
                let again = product(m, &f, Rows::Direct(&direct), ep).unwrap();
                assert_eq!(again, out, "{m}x{k}x{n}: rows read in place");
            }
            for i in 0..m {
                for j in 0..n {
                    let (mut s, mut mag) = (0f64, 0f64);
                    for t in 0..k {
                        let p = bf(a[i * k + t]) * bf(w[t * n + j]);
                        s += p;
                        mag += p.abs();
                    }
                    s += bias[j] as f64;
                    if with_residual {
                        s += residual[i * n + j] as f64;
                    }
                    let got = out[i * n + j] as f64;
                    let tol = 4.0 * (k as f64).sqrt() * mag * f32::EPSILON as f64 + 1e-6;
                    assert!(
                        (got - s).abs() <= tol,
                        "{m}x{k}x{n} [{i}, {j}]: {got} against {s} (tolerance {tol})"
                    );
                }
            }
        }
    }

    /// The one-pass layout changes give what a transpose and a rounding (or widening) give,
    /// on blocks of 16 pixels, on images of pixels not a multiple of 16, and on channels not a
    /// multiple of 8.
    #[test]
    fn layout_changes_equal_a_transpose_and_a_rounding() {
        for &(n, c, hw) in &[(1, 64, 48), (2, 24, 37), (1, 5, 20), (3, 16, 16)] {
            let x = values(n * c * hw, 11);
            let want = to_bf16(&crate::layers::shape::transpose_2d_batched(&x, n, c, hw));
            let got = nchw_to_nhwc_bf16(&x, n, c, hw);
            assert_eq!(got, want, "[{n}, {c}, {hw}] to NHWC");
            let back = nhwc_bf16_to_nchw(&got, n, hw, c);
            let wide: Vec<f32> = got.iter().map(|&b| widen(b)).collect();
            let want = crate::layers::shape::transpose_2d_batched(&wide, n, hw, c);
            assert_eq!(back, want, "[{n}, {hw}, {c}] to NCHW");
        }
    }

    /// The bf16 max pool picks what the fp32 NHWC pool picks on the widened values, padding
    /// never winning (negative values included).
    #[test]
    fn bf16_max_pool_picks_the_fp32_maximum() {
        let (n, h, w, c) = (2, 9, 8, 5);
        let x = ndarray::Array4::from_shape_vec((n, h, w, c), to_bf16(&values(n * h * w * c, 3)))
            .unwrap();
        let wide = x.mapv(widen);
        let want = crate::layers::pool::max_pool2d_nhwc(
            wide.view(),
            (3, 3),
            (2, 2),
            crate::layers::Padding::Explicit([1; 4]),
        )
        .unwrap();
        let got = max_pool_nhwc_bf16(x.view(), 3, 2, 1).unwrap();
        assert_eq!(got.mapv(widen), want);
    }

    #[test]
    fn rounds_to_nearest_even() {
        let src = [
            1.0f32,
            1.0 + 1.0 / 256.0,
            -3.3,
            f32::INFINITY,
            65504.0,
            0.1,
            7.0,
            1.0 + 1.0 / 256.0 + 1.0 / 512.0,
            1.0 + 3.0 / 256.0,
            2.5,
            -0.0,
            3.0,
            4.0,
            5.0,
            6.0,
            1.0 + 3.0 / 512.0,
        ];
        let mut dst = vec![0u16; src.len()];
        round_to_bf16(&src, &mut dst);
        for (s, d) in src.iter().zip(&dst) {
            assert_eq!(*d, bf16::from_f32(*s).to_bits(), "{s}");
        }
    }
}
