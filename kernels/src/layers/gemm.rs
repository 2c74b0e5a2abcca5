//! Single-precision matrix product: the one GEMM entry point of the CPU layers.
//!
//! `C = A·B` (or `C += A·B`) over strided matrices. The default backend is the `gemm` crate
//! (its AVX-512 micro-kernel is compiled in through the `x86-v4` feature and chosen at run
//! time; on CPUs without AVX-512 it uses FMA/AVX2 or scalar code). Measured on the project
//! machine (2 vCPUs of an AMD EPYC, Zen 4 with AVX-512; `cargo bench -p kernels --bench layers`), it is faster
//! than `matrixmultiply` (with its AVX-512 kernel) on every shape that matters, so
//! `matrixmultiply` is only the fallback backend ([`Backend::MatrixMultiply`]), and
//! [`Backend::Naive`] is a plain triple loop used as the test oracle.
//!
//! Threading: [`Threading::Auto`] runs one product on all rayon threads when it is large
//! enough, and single-threaded when called from a task of a parallel loop
//! ([`crate::process::in_parallel_task`]; callers such as the
//! convolution parallelise over tiles themselves).

use ndarray::{Array2, ArrayView2};

use super::{invalid, shape_err, Result};

/// Which implementation computes the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Backend {
    /// The `gemm` crate (fastest measured here).
    #[default]
    Gemm,
    /// `matrixmultiply` (AVX-512 kernel enabled), always single-threaded.
    MatrixMultiply,
    /// Triple loop with f64 accumulation: slow, the reference.
    Naive,
}

/// How many threads one product may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Threading {
    /// All rayon threads for large products, one thread for small ones or inside a task of a
    /// parallel loop.
    #[default]
    Auto,
    /// One thread.
    Single,
    /// Exactly this many rayon threads (at least 1).
    Threads(usize),
}

/// Products below this many multiply-adds run on one thread under [`Threading::Auto`].
pub(crate) const PARALLEL_MIN_MACS: usize = 1 << 19;

/// A read-only strided matrix: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

/// A writable strided matrix: element `(i, j)` is `data[i * rs + j * cs]`. Distinct elements
/// must not share memory (checked: `rs`/`cs` must not overlap).
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

fn check_fits(
    op: &'static str,
    len: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let last = (rows - 1)
        .checked_mul(rs)
        .and_then(|a| (cols - 1).checked_mul(cs).and_then(|b| a.checked_add(b)));
    match last {
        Some(last) if last < len => Ok(()),
        _ => shape_err(
            op,
            format!(
                "a {rows}x{cols} matrix with strides ({rs}, {cs}) does not fit in {len} elements"
            ),
        ),
    }
}

impl<'a> MatRef<'a> {
    /// A strided matrix over `data`; errors when it does not fit.
    pub fn new(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Result<Self> {
        check_fits("MatRef", data.len(), rows, cols, rs, cs)?;
        Ok(MatRef {
            data,
            rows,
            cols,
            rs,
            cs,
        })
    }

    /// A row-major `rows x cols` matrix with leading dimension `ld` (row stride).
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize, ld: usize) -> Result<Self> {
        Self::new(data, rows, cols, ld, 1)
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }
}

impl<'a> MatMut<'a> {
    /// A strided writable matrix over `data`; errors when it does not fit or its elements
    /// would overlap.
    pub fn new(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        rs: usize,
        cs: usize,
    ) -> Result<Self> {
        check_fits("MatMut", data.len(), rows, cols, rs, cs)?;
        // Distinct elements: one stride must step over the whole extent of the other.
        let ok = match (rows, cols) {
            (0, _) | (_, 0) | (1, 1) => true,
            (1, _) => cs >= 1,
            (_, 1) => rs >= 1,
            _ => {
                (cs >= 1 && rs >= cs.saturating_mul(cols))
                    || (rs >= 1 && cs >= rs.saturating_mul(rows))
            }
        };
        if !ok {
            return invalid(
                "MatMut",
                format!("strides ({rs}, {cs}) of a {rows}x{cols} output overlap"),
            );
        }
        Ok(MatMut {
            data,
            rows,
            cols,
            rs,
            cs,
        })
    }

    /// A row-major `rows x cols` matrix with leading dimension `ld`.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize, ld: usize) -> Result<Self> {
        Self::new(data, rows, cols, ld, 1)
    }
}

/// `c = a·b`, or `c += a·b` when `accumulate`, with the default backend and threading.
pub fn sgemm(a: MatRef<'_>, b: MatRef<'_>, c: MatMut<'_>, accumulate: bool) -> Result<()> {
    sgemm_with(
        a,
        b,
        c,
        accumulate,
        Backend::default(),
        Threading::default(),
    )
}

/// [`sgemm`] with an explicit backend and threading.
pub fn sgemm_with(
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: MatMut<'_>,
    accumulate: bool,
    backend: Backend,
    threading: Threading,
) -> Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k || c.rows != m || c.cols != n {
        return shape_err(
            "sgemm",
            format!(
                "cannot multiply {}x{} by {}x{} into {}x{}",
                a.rows, a.cols, b.rows, b.cols, c.rows, c.cols
            ),
        );
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    c.data[i * c.rs + j * c.cs] = 0.0;
                }
            }
        }
        return Ok(());
    }
    match backend {
        Backend::Naive => {
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0f64;
                    for p in 0..k {
                        s += a.at(i, p) as f64 * b.at(p, j) as f64;
                    }
                    let d = &mut c.data[i * c.rs + j * c.cs];
                    *d = if accumulate { *d + s as f32 } else { s as f32 };
                }
            }
        }
        _ => {
            // SAFETY: all three matrices were checked to fit their slices (`check_fits`), the
            // output's elements do not overlap (`MatMut::new`), and `c` is borrowed mutably
            // while `a` and `b` are shared borrows, so the output aliases no input.
            unsafe {
                sgemm_raw(
                    m,
                    n,
                    k,
                    a.data.as_ptr(),
                    a.rs,
                    a.cs,
                    b.data.as_ptr(),
                    b.rs,
                    b.cs,
                    c.data.as_mut_ptr(),
                    c.rs,
                    c.cs,
                    accumulate,
                    backend,
                    threading,
                )
            }
        }
    }
    Ok(())
}

/// Number of threads a product of `macs` multiply-adds gets.
pub(crate) fn threads_for(macs: usize, threading: Threading) -> usize {
    match threading {
        Threading::Single => 1,
        Threading::Threads(t) => t.max(1),
        Threading::Auto => {
            if crate::process::in_parallel_task() || macs < PARALLEL_MIN_MACS {
                1
            } else {
                rayon::current_num_threads().max(1)
            }
        }
    }
}

/// The unchecked product behind [`sgemm_with`].
///
/// # Safety
/// `a` must point to a `m x k` matrix with strides `(ars, acs)`, `b` to `k x n` with
/// `(brs, bcs)`, and `c` to `m x n` with `(crs, ccs)`, all readable (and `c` writable) for
/// the whole call; the elements of `c` must not overlap each other nor `a` or `b`, and no
/// other thread may access `c` during the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm_raw(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    ars: usize,
    acs: usize,
    b: *const f32,
    brs: usize,
    bcs: usize,
    c: *mut f32,
    crs: usize,
    ccs: usize,
    accumulate: bool,
    backend: Backend,
    threading: Threading,
) {
    if m == 0 || n == 0 || k == 0 {
        if !accumulate && k == 0 {
            for i in 0..m {
                for j in 0..n {
                    *c.add(i * crs + j * ccs) = 0.0;
                }
            }
        }
        return;
    }
    match backend {
        Backend::MatrixMultiply | Backend::Naive => {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a,
                ars as isize,
                acs as isize,
                b,
                brs as isize,
                bcs as isize,
                if accumulate { 1.0 } else { 0.0 },
                c,
                crs as isize,
                ccs as isize,
            );
        }
        Backend::Gemm => {
            let threads = threads_for(m.saturating_mul(n).saturating_mul(k), threading);
            let par = if threads > 1 {
                gemm::Parallelism::Rayon(threads)
            } else {
                gemm::Parallelism::None
            };
            // gemm computes dst := alpha·dst + beta·lhs·rhs; strides are given as (col, row).
            gemm::gemm(
                m,
                n,
                k,
                c,
                ccs as isize,
                crs as isize,
                accumulate,
                a,
                acs as isize,
                ars as isize,
                b,
                bcs as isize,
                brs as isize,
                if accumulate { 1.0 } else { 0.0 },
                1.0,
                false,
                false,
                false,
                par,
            );
        }
    }
}

/// `a·b` of two `ndarray` matrices (any strides).
pub fn matmul(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
    if a.ncols() != b.nrows() {
        return shape_err(
            "matmul",
            format!("cannot multiply {:?} by {:?}", a.shape(), b.shape()),
        );
    }
    let a = a.as_standard_layout();
    let b = b.as_standard_layout();
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    let mut out = vec![0f32; m * n];
    let (Some(ad), Some(bd)) = (a.as_slice(), b.as_slice()) else {
        return invalid("matmul", "input is not contiguous");
    };
    sgemm(
        MatRef::row_major(ad, m, k, k)?,
        MatRef::row_major(bd, k, n, n)?,
        MatMut::row_major(&mut out, m, n, n)?,
        false,
    )?;
    Array2::from_shape_vec((m, n), out).or_else(|e| invalid("matmul", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    fn check(m: usize, n: usize, k: usize, backend: Backend, threading: Threading) {
        let a = rand_vec(m * k, 1);
        let b = rand_vec(k * n, 2);
        let mut want = vec![0f32; m * n];
        let mut got = vec![1f32; m * n];
        sgemm_with(
            MatRef::row_major(&a, m, k, k).unwrap(),
            MatRef::row_major(&b, k, n, n).unwrap(),
            MatMut::row_major(&mut want, m, n, n).unwrap(),
            false,
            Backend::Naive,
            Threading::Single,
        )
        .unwrap();
        sgemm_with(
            MatRef::row_major(&a, m, k, k).unwrap(),
            MatRef::row_major(&b, k, n, n).unwrap(),
            MatMut::row_major(&mut got, m, n, n).unwrap(),
            false,
            backend,
            threading,
        )
        .unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "{g} vs {w}");
        }
    }

    #[test]
    fn backends_agree_with_naive() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 5, 7),
            (17, 33, 65),
            (64, 200, 128),
            (130, 70, 300),
        ] {
            check(m, n, k, Backend::Gemm, Threading::Auto);
            check(m, n, k, Backend::Gemm, Threading::Threads(2));
            check(m, n, k, Backend::MatrixMultiply, Threading::Single);
        }
    }

    #[test]
    fn transposed_and_accumulate() {
        // c = aᵀ·b + c with a stored as k x m.
        let (m, n, k) = (5, 4, 3);
        let at = rand_vec(k * m, 3);
        let b = rand_vec(k * n, 4);
        let mut c = vec![1f32; m * n];
        sgemm(
            MatRef::row_major(&at, k, m, m).unwrap().t(),
            MatRef::row_major(&b, k, n, n).unwrap(),
            MatMut::row_major(&mut c, m, n, n).unwrap(),
            true,
        )
        .unwrap();
        for i in 0..m {
            for j in 0..n {
                let s: f32 = (0..k).map(|p| at[p * m + i] * b[p * n + j]).sum();
                assert!((c[i * n + j] - (1.0 + s)).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let a = vec![0f32; 6];
        let mut c = vec![0f32; 4];
        assert!(MatRef::row_major(&a, 3, 3, 3).is_err());
        let ar = MatRef::row_major(&a, 2, 3, 3).unwrap();
        assert!(sgemm(ar, ar, MatMut::row_major(&mut c, 2, 2, 2).unwrap(), false).is_err());
        assert!(MatMut::new(&mut c, 2, 2, 1, 1).is_err());
        let x = ndarray::Array2::<f32>::zeros((2, 3));
        assert!(matmul(x.view(), x.view()).is_err());
        let y = matmul(x.view(), x.t()).unwrap();
        assert_eq!(y.shape(), &[2, 2]);
    }

    #[test]
    fn empty_k_zeroes_output() {
        let a: Vec<f32> = vec![];
        let mut c = vec![5f32; 4];
        sgemm(
            MatRef::new(&a, 2, 0, 0, 1).unwrap(),
            MatRef::new(&a, 0, 2, 2, 1).unwrap(),
            MatMut::row_major(&mut c, 2, 2, 2).unwrap(),
            false,
        )
        .unwrap();
        assert_eq!(c, vec![0.0; 4]);
    }
}
