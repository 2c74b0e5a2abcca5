//! Winograd F(2x2, 3x3) for 3x3, stride-1, undilated, ungrouped convolutions (Lavin & Gray,
//! "Fast Algorithms for Convolutional Neural Networks", 2015).
//!
//! Each 2x2 output tile comes from a 4x4 input tile: `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`. Summed
//! over input channels, the element-wise product becomes 16 independent GEMMs
//! `M_e = U_e · V_e` (`U_e`: `[C_out, C_in]`, the transformed weights, computed once;
//! `V_e`: `[C_in, tiles]`, the transformed input), so a 3x3 convolution costs 16 instead of 36
//! multiply-adds per output tile and channel pair: 2.25x fewer. The transforms add a few adds
//! per tile and channel, negligible at the channel counts of an FPN, an RPN or a mask head.
//!
//! Rounding differs from a direct convolution by a few units in the last place of the
//! partial sums (the transforms' coefficients are 0, ±1 and ±½, exact in f32); the layer tests
//! compare both against torch.
//!
//! Work is split into chunks of tiles (over the whole batch, so that the mask head's hundred
//! 14x14 maps form large GEMMs), each chunk's transformed input and products staying within a
//! core's L2 cache; chunks run in parallel, each GEMM on one thread.

use rayon::prelude::*;

use super::activation::Activation;
use super::gemm::{sgemm_raw, Backend, Threading};

/// Channels below which the transforms cost more than the multiplications they save.
pub(crate) const MIN_CHANNELS: usize = 16;

/// Bytes of transformed input and products per chunk: about a core's L2 (1 MB on this
/// machine's Zen 4, 2 MB on a Sapphire Rapids); 1-2 MB chunks measured faster than 4-8 MB.
const CHUNK_BYTES: usize = 1 << 21;

/// `U_e = (G g Gᵀ)_e` for every (output, input) channel pair, stored as 16 row-major
/// `[C_out, C_in]` matrices.
#[derive(Clone, Debug)]
pub(crate) struct WinogradWeights {
    cout: usize,
    cin: usize,
    u: Vec<f32>,
}

impl WinogradWeights {
    /// From a `[C_out, C_in, 3, 3]` row-major weight.
    pub(crate) fn new(weight: &[f32], cout: usize, cin: usize) -> WinogradWeights {
        let mut u = vec![0f32; 16 * cout * cin];
        for co in 0..cout {
            for ci in 0..cin {
                let g = &weight[(co * cin + ci) * 9..][..9];
                // t = G g (4x3): rows g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2.
                let mut t = [[0f32; 3]; 4];
                for c in 0..3 {
                    let (g0, g1, g2) = (g[c], g[3 + c], g[6 + c]);
                    t[0][c] = g0;
                    t[1][c] = 0.5 * (g0 + g1 + g2);
                    t[2][c] = 0.5 * (g0 - g1 + g2);
                    t[3][c] = g2;
                }
                // U = t Gᵀ (4x4).
                for (r, row) in t.iter().enumerate() {
                    let (r0, r1, r2) = (row[0], row[1], row[2]);
                    let vals = [r0, 0.5 * (r0 + r1 + r2), 0.5 * (r0 - r1 + r2), r2];
                    for (c, v) in vals.into_iter().enumerate() {
                        u[((r * 4 + c) * cout + co) * cin + ci] = v;
                    }
                }
            }
        }
        WinogradWeights { cout, cin, u }
    }
}

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
        && enabled()
}

/// `KERNELS_WINOGRAD=0` turns the path off (for comparisons).
fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("KERNELS_WINOGRAD").as_deref() != Ok("0"))
}

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

/// Runs the convolution on `xs` (`[N, C_in, H, W]`) into `out` (`[N, C_out, OH, OW]`, every
/// element written), adding `bias` and applying `activation`.
pub(crate) fn forward(
    wt: &WinogradWeights,
    bias: Option<&[f32]>,
    activation: Activation,
    xs: &[f32],
    s: Shape,
    out: &mut [f32],
) {
    let (th, tw) = (s.oh.div_ceil(2), s.ow.div_ceil(2));
    let tiles = s.n * th * tw;
    if tiles == 0 {
        return;
    }
    let per_tile = 16 * (wt.cin + wt.cout) * 4;
    let threads = rayon::current_num_threads().max(1);
    let mut chunk = (CHUNK_BYTES / per_tile).clamp(16, 512);
    // Enough chunks to keep every thread busy.
    if tiles.div_ceil(chunk) < 2 * threads {
        chunk = tiles.div_ceil(2 * threads).max(8);
    }
    let chunks = tiles.div_ceil(chunk);
    let outp = SendPtr(out.as_mut_ptr());
    (0..chunks).into_par_iter().for_each(|c| {
        let t0 = c * chunk;
        let t1 = (t0 + chunk).min(tiles);
        with_scratch(|buf| run_chunk(wt, bias, activation, xs, s, (th, tw), t0, t1, outp, buf));
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

#[allow(clippy::too_many_arguments)]
fn run_chunk(
    wt: &WinogradWeights,
    bias: Option<&[f32]>,
    activation: Activation,
    xs: &[f32],
    s: Shape,
    (th, tw): (usize, usize),
    t0: usize,
    t1: usize,
    outp: SendPtr,
    buf: &mut Vec<f32>,
) {
    let (cin, cout) = (wt.cin, wt.cout);
    let nt = t1 - t0;
    let runs = runs(t0, t1, th, tw);
    let max_len = runs.iter().map(|r| r.len).max().unwrap_or(0);
    // Per run: 4 input rows of 2·len + 2 columns, their 4 row combinations, and 4 output
    // rows of 2·len.
    let row = 2 * max_len + 2;
    let need = 16 * (cin + cout) * nt + 8 * row + 4 * row;
    if buf.len() < need {
        buf.resize(need, 0.0);
    }
    let (v, rest) = buf[..need].split_at_mut(16 * cin * nt);
    let (m, rest) = rest.split_at_mut(16 * cout * nt);
    let (rows_in, rows_out) = rest.split_at_mut(8 * row);
    let (d, tmp) = rows_in.split_at_mut(4 * row);
    let (h, w) = (s.h, s.w);
    let (py, px) = (s.pad.0 as isize, s.pad.1 as isize);

    // V_e[ci][k] = (Bᵀ d B)_e of tile k, channel ci. Per run of tiles along a row, the four
    // input rows are copied (zero outside the image), combined row-wise (Bᵀ ·), then
    // column-wise per tile (· B), each step a loop over the run that vectorises.
    for ci in 0..cin {
        for r in &runs {
            let plane = &xs[(r.b * cin + ci) * h * w..][..h * w];
            let width = 2 * r.len + 2;
            let y0 = (2 * r.ty) as isize - py;
            let x0 = (2 * r.tx0) as isize - px;
            for i in 0..4 {
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
            {
                let (d0, d1, d2, d3) = (
                    &d[..width],
                    &d[row..row + width],
                    &d[2 * row..2 * row + width],
                    &d[3 * row..3 * row + width],
                );
                let (t01, t23) = tmp.split_at_mut(2 * row);
                let (ta, tb) = t01.split_at_mut(row);
                let (tc, td) = t23.split_at_mut(row);
                for j in 0..width {
                    ta[j] = d0[j] - d2[j];
                    tb[j] = d1[j] + d2[j];
                    tc[j] = d2[j] - d1[j];
                    td[j] = d1[j] - d3[j];
                }
            }
            for i in 0..4 {
                let t = &tmp[i * row..i * row + width];
                let base = |c: usize| ((i * 4 + c) * cin + ci) * nt + r.k0;
                let (b0, b1, b2, b3) = (base(0), base(1), base(2), base(3));
                for q in 0..r.len {
                    let x = 2 * q;
                    let (a, b, c, e) = (t[x], t[x + 1], t[x + 2], t[x + 3]);
                    v[b0 + q] = a - c;
                    v[b1 + q] = b + c;
                    v[b2 + q] = c - b;
                    v[b3 + q] = b - e;
                }
            }
        }
    }
    // M_e = U_e V_e.
    for e in 0..16 {
        // SAFETY: U_e is `cout x cin` row-major inside `wt.u`; V_e is `cin x nt` row-major
        // inside `v`; M_e is `cout x nt` row-major inside `m`; all within their buffers.
        unsafe {
            sgemm_raw(
                cout,
                nt,
                cin,
                wt.u[e * cout * cin..].as_ptr(),
                cin,
                1,
                v[e * cin * nt..].as_ptr(),
                nt,
                1,
                m[e * cout * nt..].as_mut_ptr(),
                nt,
                1,
                false,
                Backend::Gemm,
                Threading::Single,
            );
        }
    }
    // Y = Aᵀ M A, plus bias and activation, into the output: per run, Aᵀ · combines the 16
    // products into 8 (two output rows' worth), · A gives each tile's 2x2, interleaved into
    // two output rows.
    let plane_out = s.oh * s.ow;
    for co in 0..cout {
        let bv = bias.map_or(0.0, |b| b[co]);
        let g = |e: usize| &m[(e * cout + co) * nt..(e * cout + co + 1) * nt];
        let ms: [&[f32]; 16] = std::array::from_fn(g);
        for r in &runs {
            let width = 2 * r.len;
            let (y_top, y_bot) = rows_out[..2 * row].split_at_mut(row);
            for q in 0..r.len {
                let k = r.k0 + q;
                let c = |e: usize| ms[e][k];
                let a = [
                    c(0) + c(4) + c(8),
                    c(1) + c(5) + c(9),
                    c(2) + c(6) + c(10),
                    c(3) + c(7) + c(11),
                ];
                let b = [
                    c(4) - c(8) - c(12),
                    c(5) - c(9) - c(13),
                    c(6) - c(10) - c(14),
                    c(7) - c(11) - c(15),
                ];
                y_top[2 * q] = activation.eval(a[0] + a[1] + a[2] + bv);
                y_top[2 * q + 1] = activation.eval(a[1] - a[2] - a[3] + bv);
                y_bot[2 * q] = activation.eval(b[0] + b[1] + b[2] + bv);
                y_bot[2 * q + 1] = activation.eval(b[1] - b[2] - b[3] + bv);
            }
            let ox0 = 2 * r.tx0;
            let cols = width.min(s.ow - ox0);
            let base = (r.b * cout + co) * plane_out;
            for (dy, src) in [&y_top[..cols], &y_bot[..cols]].into_iter().enumerate() {
                let oy = 2 * r.ty + dy;
                if oy < s.oh {
                    // SAFETY: row `oy`, columns `ox0..ox0 + cols` of plane (b, co) belong to
                    // this run's tiles only, and each tile to exactly one chunk.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            src.as_ptr(),
                            outp.0.add(base + oy * s.ow + ox0),
                            cols,
                        );
                    }
                }
            }
        }
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn with_scratch<R>(f: impl FnOnce(&mut Vec<f32>) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => f(&mut v),
        Err(_) => f(&mut Vec::new()),
    })
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

    #[test]
    fn matches_a_direct_convolution_on_odd_sizes_and_paddings() {
        let mut seed = 1u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u32 << 24) as f32) * 2.0 - 1.0
        };
        for &(n, cin, cout, h, w, pad) in &[
            (1, 16, 16, 5, 7, 1),
            (3, 17, 20, 6, 6, 1),
            (2, 16, 24, 9, 4, 0),
            (1, 32, 16, 1, 1, 1),
            (1, 16, 16, 3, 3, 2),
        ] {
            let x: Vec<f32> = (0..n * cin * h * w).map(|_| rnd()).collect();
            let wgt: Vec<f32> = (0..cout * cin * 9).map(|_| rnd()).collect();
            let bias: Vec<f32> = (0..cout).map(|_| rnd()).collect();
            let want = direct(&x, &wgt, &bias, (n, cin, h, w), cout, pad);
            let (oh, ow) = (h + 2 * pad - 2, w + 2 * pad - 2);
            let mut out = vec![f32::NAN; n * cout * oh * ow];
            let wt = WinogradWeights::new(&wgt, cout, cin);
            forward(
                &wt,
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
            for (i, (&a, &b)) in out.iter().zip(&want).enumerate() {
                assert!(
                    (a as f64 - b).abs() <= 1e-5 * b.abs().max(1.0),
                    "{n}x{cin}x{h}x{w} pad {pad}: [{i}] {a} vs {b}"
                );
            }
        }
    }
}
