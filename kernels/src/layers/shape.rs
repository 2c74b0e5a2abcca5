//! Tensor shape and selection ops: concat, split, slice, pad, permute/transpose, reshape,
//! softmax, argmax, top-k and gather. Axes may be negative (counted from the end, as torch).

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Slice};

use super::{checked_numel, invalid, shape_err, Result};

/// Resolves a possibly negative axis against `ndim`.
pub fn normalize_axis(op: &'static str, axis: isize, ndim: usize) -> Result<usize> {
    let a = if axis < 0 { axis + ndim as isize } else { axis };
    if a < 0 || a as usize >= ndim {
        return invalid(op, format!("axis {axis} is out of range for rank {ndim}"));
    }
    Ok(a as usize)
}

/// `torch.cat(xs, dim=axis)`.
pub fn concat<T: Copy>(xs: &[ArrayViewD<'_, T>], axis: isize) -> Result<ArrayD<T>> {
    const OP: &str = "concat";
    let Some(first) = xs.first() else {
        return invalid(OP, "no inputs");
    };
    let ax = normalize_axis(OP, axis, first.ndim())?;
    for x in xs {
        let same = x.ndim() == first.ndim()
            && x.shape()
                .iter()
                .zip(first.shape())
                .enumerate()
                .all(|(i, (a, b))| i == ax || a == b);
        if !same {
            return shape_err(
                OP,
                format!(
                    "cannot concatenate {:?} with {:?} along axis {ax}",
                    x.shape(),
                    first.shape()
                ),
            );
        }
    }
    // Each input contributes one contiguous chunk per index of the axes before `ax`.
    let mut shape = first.shape().to_vec();
    shape[ax] = xs.iter().map(|x| x.shape()[ax]).sum();
    let parts: Vec<_> = xs.iter().map(|x| x.as_standard_layout()).collect();
    let chunks: Vec<(&[T], usize)> = parts
        .iter()
        .map(|p| {
            let chunk = p.shape()[ax..].iter().product::<usize>();
            Ok((contiguous(OP, p.as_slice())?, chunk))
        })
        .collect::<Result<_>>()?;
    let outer: usize = shape[..ax].iter().product();
    let mut out = Vec::with_capacity(checked_numel(OP, &shape)?);
    for o in 0..outer {
        for (s, chunk) in &chunks {
            out.extend_from_slice(&s[o * chunk..(o + 1) * chunk]);
        }
    }
    ArrayD::from_shape_vec(IxDyn(&shape), out).or_else(|e| shape_err(OP, e.to_string()))
}

/// [`concat`] of contiguous parts into `out`: each part gives its data and its chunk (the
/// product of its dimensions from the axis on), and contributes one chunk per index of the
/// `outer` leading positions, in order. Allocates nothing.
pub fn concat_into<T: Copy>(parts: &[(&[T], usize)], outer: usize, out: &mut [T]) -> Result<()> {
    let total: usize = parts.iter().map(|p| p.1).sum::<usize>() * outer;
    if out.len() != total || parts.iter().any(|(s, chunk)| s.len() != chunk * outer) {
        return shape_err(
            "concat",
            format!("parts do not fill an output of {}", out.len()),
        );
    }
    let mut at = 0;
    for o in 0..outer {
        for (s, chunk) in parts {
            out[at..at + chunk].copy_from_slice(&s[o * chunk..(o + 1) * chunk]);
            at += chunk;
        }
    }
    Ok(())
}

/// The elements of a standard-layout array (always `Some` for one).
fn contiguous<'a, T>(op: &'static str, s: Option<&'a [T]>) -> Result<&'a [T]> {
    s.ok_or(super::LayerError::Invalid {
        op,
        msg: "not contiguous".into(),
    })
}

/// `torch.split(x, sizes, dim=axis)` with explicit section sizes (they must add up).
pub fn split<T: Copy>(
    x: ArrayViewD<'_, T>,
    sizes: &[usize],
    axis: isize,
) -> Result<Vec<ArrayD<T>>> {
    const OP: &str = "split";
    let ax = normalize_axis(OP, axis, x.ndim())?;
    let total: usize = sizes.iter().sum();
    if total != x.shape()[ax] {
        return shape_err(
            OP,
            format!("sections {sizes:?} do not add up to {}", x.shape()[ax]),
        );
    }
    let mut start = 0;
    Ok(sizes
        .iter()
        .map(|&s| {
            let part = x
                .slice_axis(Axis(ax), Slice::from(start..start + s))
                .to_owned();
            start += s;
            part
        })
        .collect())
}

/// `torch.split(x, size, dim=axis)` with one chunk size (the last chunk may be shorter).
pub fn split_even<T: Copy>(
    x: ArrayViewD<'_, T>,
    size: usize,
    axis: isize,
) -> Result<Vec<ArrayD<T>>> {
    if size == 0 {
        return invalid("split", "chunk size must be positive");
    }
    let ax = normalize_axis("split", axis, x.ndim())?;
    let len = x.shape()[ax];
    let mut sizes = vec![size; len / size];
    if !len.is_multiple_of(size) {
        sizes.push(len % size);
    }
    split(x, &sizes, axis)
}

/// `x[..., start:end:step, ...]` on `axis` with Python slice semantics (negative bounds count
/// from the end, out-of-range bounds clamp; `step` must be positive, as torch).
pub fn slice<T: Copy>(
    x: ArrayViewD<'_, T>,
    axis: isize,
    start: isize,
    end: isize,
    step: usize,
) -> Result<ArrayD<T>> {
    const OP: &str = "slice";
    if step == 0 {
        return invalid(OP, "step must be positive");
    }
    let ax = normalize_axis(OP, axis, x.ndim())?;
    let len = x.shape()[ax] as isize;
    let clampi = |i: isize| if i < 0 { (i + len).max(0) } else { i.min(len) };
    let (s, e) = (clampi(start), clampi(end));
    let e = e.max(s);
    Ok(
        x.slice_axis(Axis(ax), Slice::new(s, Some(e), step as isize))
            .to_owned(),
    )
}

/// Padding modes of [`pad`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PadMode<T> {
    Constant(T),
    /// Mirror without repeating the edge (torch `"reflect"`; padding must be < the size).
    Reflect,
    /// Repeat the edge (torch `"replicate"`).
    Replicate,
}

/// Ranks [`pad_constant_into`] handles (its index lives on the stack).
pub const MAX_PAD_RANK: usize = 8;

/// Constant padding of `src` (`shape`, contiguous) by `pads` (before, after) per dimension,
/// into `out` (the padded size): fills with `value`, then copies each innermost row of the
/// input to its place. Allocates nothing; ranks up to [`MAX_PAD_RANK`].
pub fn pad_constant_into<T: Copy>(
    src: &[T],
    shape: &[usize],
    pads: &[(usize, usize)],
    value: T,
    out: &mut [T],
) -> Result<()> {
    const OP: &str = "pad";
    let nd = shape.len();
    let padded = |d: usize| shape[d] + pads[d].0 + pads[d].1;
    if nd == 0 || nd > MAX_PAD_RANK || pads.len() != nd {
        return shape_err(
            OP,
            format!("cannot pad a rank-{nd} input by {} pairs", pads.len()),
        );
    }
    if src.len() != shape.iter().product::<usize>()
        || out.len() != (0..nd).map(padded).product::<usize>()
    {
        return shape_err(
            OP,
            format!(
                "buffers of {} and {} values do not fit {shape:?} padded by {pads:?}",
                src.len(),
                out.len()
            ),
        );
    }
    out.fill(value);
    let row = shape[nd - 1];
    if row == 0 {
        return Ok(());
    }
    let mut out_strides = [0usize; MAX_PAD_RANK];
    let mut stride = 1;
    for d in (0..nd).rev() {
        out_strides[d] = stride;
        stride *= padded(d);
    }
    let mut cur = [0usize; MAX_PAD_RANK];
    for k in 0..src.len() / row {
        let mut off = pads[nd - 1].0;
        for d in 0..nd - 1 {
            off += (cur[d] + pads[d].0) * out_strides[d];
        }
        out[off..off + row].copy_from_slice(&src[k * row..(k + 1) * row]);
        for d in (0..nd - 1).rev() {
            cur[d] += 1;
            if cur[d] < shape[d] {
                break;
            }
            cur[d] = 0;
        }
    }
    Ok(())
}

/// `torch.nn.functional.pad(x, pads, mode)`: `pads` lists `(before, after)` pairs starting at
/// the **last** axis, as torch's flat `(left, right, top, bottom, ...)`.
pub fn pad<T: Copy>(
    x: ArrayViewD<'_, T>,
    pads: &[(usize, usize)],
    mode: PadMode<T>,
) -> Result<ArrayD<T>> {
    const OP: &str = "pad";
    let nd = x.ndim();
    if pads.len() > nd {
        return shape_err(
            OP,
            format!("{} padding pairs for a rank-{nd} input", pads.len()),
        );
    }
    let mut full = vec![(0usize, 0usize); nd];
    for (i, &p) in pads.iter().enumerate() {
        full[nd - 1 - i] = p;
    }
    let mut shape = Vec::with_capacity(nd);
    for (d, &(a, b)) in full.iter().enumerate() {
        let len = x.shape()[d];
        if matches!(mode, PadMode::Reflect) && (a > 0 || b > 0) && (a >= len || b >= len) {
            return shape_err(
                OP,
                format!("reflect padding {a},{b} must be smaller than the size {len}"),
            );
        }
        if matches!(mode, PadMode::Replicate) && (a > 0 || b > 0) && len == 0 {
            return shape_err(OP, "cannot replicate an empty axis");
        }
        shape.push(len.checked_add(a).and_then(|v| v.checked_add(b)).ok_or(
            super::LayerError::Shape {
                op: OP,
                msg: "padded size overflows".into(),
            },
        )?);
    }
    let total = checked_numel(OP, &shape)?;
    if let PadMode::Constant(v) = mode {
        if (1..=MAX_PAD_RANK).contains(&nd) {
            let mut out = vec![v; total];
            let x = x.as_standard_layout();
            let src = contiguous(OP, x.as_slice())?;
            pad_constant_into(src, x.shape(), &full, v, &mut out)?;
            return ArrayD::from_shape_vec(IxDyn(&shape), out)
                .or_else(|e| shape_err(OP, e.to_string()));
        }
    }
    let map = |d: usize, o: usize| -> Option<usize> {
        let (a, _) = full[d];
        let len = x.shape()[d] as isize;
        let i = o as isize - a as isize;
        if i >= 0 && i < len {
            return Some(i as usize);
        }
        match mode {
            PadMode::Constant(_) => None,
            PadMode::Replicate => Some(i.clamp(0, len - 1) as usize),
            PadMode::Reflect => {
                let j = if i < 0 { -i } else { 2 * (len - 1) - i };
                Some(j as usize)
            }
        }
    };
    let fill = match mode {
        PadMode::Constant(v) => Some(v),
        _ => None,
    };
    let out = ArrayD::from_shape_fn(IxDyn(&shape), |idx| {
        let mut src = Vec::with_capacity(nd);
        for d in 0..nd {
            match map(d, idx[d]) {
                Some(i) => src.push(i),
                None => return fill.unwrap_or_else(|| x[IxDyn(&vec![0; nd])]),
            }
        }
        x[IxDyn(&src)]
    });
    Ok(out)
}

/// An error unless `perm` is a permutation of `nd` axes.
fn check_permutation(perm: &[usize], nd: usize) -> Result<()> {
    let mut seen = vec![false; nd];
    if perm.len() != nd
        || perm
            .iter()
            .any(|&a| a >= nd || std::mem::replace(&mut seen[a], true))
    {
        return invalid(
            "permute",
            format!("{perm:?} is not a permutation of {nd} axes"),
        );
    }
    Ok(())
}

/// `x.permute(axes)`, materialised in standard layout.
pub fn permute<T: Copy + Default + Send + Sync>(
    x: ArrayViewD<'_, T>,
    axes: &[usize],
) -> Result<ArrayD<T>> {
    check_permutation(axes, x.ndim())?;
    if let (Some(src), Some((batch, rows, cols))) = (x.as_slice(), as_batched_2d(x.shape(), axes)) {
        let shape: Vec<usize> = axes.iter().map(|&a| x.shape()[a]).collect();
        let data = transpose_2d_batched(src, batch, rows, cols);
        return ArrayD::from_shape_vec(IxDyn(&shape), data)
            .or_else(|e| shape_err("permute", e.to_string()));
    }
    Ok(x.permuted_axes(IxDyn(axes))
        .as_standard_layout()
        .into_owned())
}

/// `(batch, rows, cols)` when permuting `shape` by `perm` is a batched 2-D transpose: after
/// dropping size-1 axes and merging axes that stay adjacent and in order, the permutation is
/// `[1, 0]` or `[0, 2, 1]` (e.g. NCHW -> NHWC is `[N, C, H·W] -> [N, H·W, C]`), or nothing
/// moves (`(1, 1, len)`, a copy).
fn as_batched_2d(shape: &[usize], perm: &[usize]) -> Option<(usize, usize, usize)> {
    // Output axes without the size-1 ones, as input axes.
    let axes: Vec<usize> = perm.iter().copied().filter(|&a| shape[a] != 1).collect();
    // Groups of consecutive output axes that are consecutive input axes.
    let mut groups: Vec<(usize, usize)> = Vec::new(); // (first input axis, size)
    let mut last: Option<usize> = None;
    for &a in &axes {
        // Input axes between `last` and `a` that are size 1 do not break adjacency.
        let adjacent = last.is_some_and(|l| a > l && (l + 1..a).all(|k| shape[k] == 1));
        match groups.last_mut() {
            Some(g) if adjacent => g.1 *= shape[a],
            _ => groups.push((a, shape[a])),
        }
        last = Some(a);
    }
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|&g| groups[g].0);
    // `order[k]`: the output group that is the k-th in input order.
    match (groups.len(), order.as_slice()) {
        // Nothing moves: a copy.
        (0 | 1, _) => Some((1, 1, shape.iter().product())),
        (2, [1, 0]) => Some((1, groups[1].1, groups[0].1)),
        (3, [0, 2, 1]) => Some((groups[0].1, groups[2].1, groups[1].1)),
        _ => None,
    }
}

/// Batched 2-D transpose: `src` holds `batch` row-major `rows x cols` matrices, the result
/// their transposes (`cols x rows` each); see [`transpose_2d_batched_into`].
pub fn transpose_2d_batched<T: Copy + Default + Send + Sync>(
    src: &[T],
    batch: usize,
    rows: usize,
    cols: usize,
) -> Vec<T> {
    let n = batch * rows * cols;
    if src.len() < n || n == 0 {
        return Vec::new();
    }
    // The default (zero bits for numbers) lets the allocator hand out zeroed pages.
    let mut out = vec![T::default(); n];
    transpose_2d_batched_into(src, batch, rows, cols, &mut out);
    out
}

/// Matrices smaller than this many elements are transposed whole by one task, several to a
/// task (ShuffleNet's channel shuffles are thousands of 2 x 58 transposes).
const SMALL_PLANE: usize = 1 << 14;

/// [`transpose_2d_batched`] into `out` (at least `batch·rows·cols` long, as `src`; shorter
/// buffers leave it untouched). Rows of blocks run in parallel; for 4-byte elements with
/// AVX, whole 8x8 blocks are moved in registers (the NCHW <-> NHWC conversions of converted
/// TF.js and ONNX graphs are such transposes). Allocates nothing.
pub fn transpose_2d_batched_into<T: Copy + Send + Sync>(
    src: &[T],
    batch: usize,
    rows: usize,
    cols: usize,
    out: &mut [T],
) {
    use rayon::prelude::*;
    let plane = rows * cols;
    let n = batch * plane;
    if src.len() < n || out.len() < n || n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    let avx = std::mem::size_of::<T>() == 4 && crate::ops::simd::has_avx();
    // One task per (matrix, block of 8 source columns): it writes 8 whole output rows.
    let tasks = cols.div_ceil(8);
    let block = |s: &[T], (t, d): (usize, &mut [T])| {
        let c0 = t * 8;
        let cn = 8.min(cols - c0);
        let mut r0 = 0;
        #[cfg(target_arch = "x86_64")]
        if avx && cn == 8 {
            let blocks = rows / 8;
            for b in 0..blocks {
                // SAFETY: AVX is present; the block reads rows `8b..8b+8`, columns
                // `c0..c0+8 <= cols` of this matrix (stride `cols`) and writes output rows
                // `c0..c0+8` (this task's chunk), columns `8b..8b+8` (stride `rows`). `T` is 4
                // bytes wide (checked with `avx`), and the blocks only load and store 32-bit
                // lanes, no arithmetic, so any such `T` moves bit for bit as `f32`.
                unsafe {
                    crate::ops::simd::transpose8x8_blocks(
                        s.as_ptr().add(8 * b * cols + c0).cast::<f32>(),
                        cols,
                        d.as_mut_ptr().add(8 * b).cast::<f32>(),
                        rows,
                        1,
                    );
                }
            }
            r0 = blocks * 8;
        }
        for r in r0..rows {
            for c in 0..cn {
                d[c * rows + r] = s[r * cols + c0 + c];
            }
        }
    };
    out[..n]
        .par_chunks_mut(plane)
        .zip(src[..n].par_chunks(plane))
        .with_min_len((SMALL_PLANE / plane).max(1))
        .for_each(|(dst, s)| {
            if plane < SMALL_PLANE {
                dst.chunks_mut(8 * rows)
                    .enumerate()
                    .take(tasks)
                    .for_each(|task| block(s, task));
            } else {
                dst.par_chunks_mut(8 * rows)
                    .enumerate()
                    .take(tasks)
                    .for_each(|task| block(s, task));
            }
        });
}

/// A permutation of the axes of one shape, worked out once (a graph's compiled plan builds
/// it at load) and run without allocating: a batched 2-D transpose where the axes allow it
/// (see [`permute`]), else a walk of the output in order with the input's strides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PermutePlan {
    Batched2d {
        batch: usize,
        rows: usize,
        cols: usize,
    },
    Strided {
        out_shape: Vec<usize>,
        /// The input's stride along each output axis.
        strides: Vec<usize>,
    },
}

impl PermutePlan {
    /// The plan of permuting `shape` by `perm` (output axis `k` is input axis `perm[k]`).
    pub fn new(shape: &[usize], perm: &[usize]) -> Result<PermutePlan> {
        let nd = shape.len();
        check_permutation(perm, nd)?;
        checked_numel("permute", shape)?;
        if let Some((batch, rows, cols)) = as_batched_2d(shape, perm) {
            return Ok(PermutePlan::Batched2d { batch, rows, cols });
        }
        let mut in_strides = vec![1usize; nd];
        for d in (0..nd.saturating_sub(1)).rev() {
            in_strides[d] = in_strides[d + 1] * shape[d + 1];
        }
        Ok(PermutePlan::Strided {
            out_shape: perm.iter().map(|&a| shape[a]).collect(),
            strides: perm.iter().map(|&a| in_strides[a]).collect(),
        })
    }

    /// Elements of the input (and output).
    pub fn len(&self) -> usize {
        match self {
            PermutePlan::Batched2d { batch, rows, cols } => batch * rows * cols,
            PermutePlan::Strided { out_shape, .. } => out_shape.iter().product(),
        }
    }

    /// Whether the shape holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `out` = `src` permuted; both must hold [`PermutePlan::len`] elements.
    pub fn run<T: Copy + Send + Sync>(&self, src: &[T], out: &mut [T]) -> Result<()> {
        let n = self.len();
        if src.len() != n || out.len() != n {
            return shape_err(
                "permute",
                format!(
                    "{} and {} elements where {n} were planned",
                    src.len(),
                    out.len()
                ),
            );
        }
        match self {
            &PermutePlan::Batched2d { batch, rows, cols } => {
                transpose_2d_batched_into(src, batch, rows, cols, out)
            }
            PermutePlan::Strided { out_shape, strides } => {
                const MAX_RANK: usize = 8;
                let nd = out_shape.len();
                if nd > MAX_RANK {
                    return invalid("permute", format!("rank {nd} (at most {MAX_RANK})"));
                }
                let Some((&inner, outer)) = out_shape.split_last() else {
                    out.copy_from_slice(src);
                    return Ok(());
                };
                let step = strides[nd - 1];
                let mut idx = [0usize; MAX_RANK];
                for row in out.chunks_exact_mut(inner.max(1)) {
                    let base: usize = (0..nd - 1).map(|d| idx[d] * strides[d]).sum();
                    for (k, o) in row.iter_mut().enumerate() {
                        *o = src[base + k * step];
                    }
                    for d in (0..outer.len()).rev() {
                        idx[d] += 1;
                        if idx[d] < outer[d] {
                            break;
                        }
                        idx[d] = 0;
                    }
                }
            }
        }
        Ok(())
    }
}

/// `x.transpose(a, b)`, materialised in standard layout.
pub fn transpose<T: Copy + Default + Send + Sync>(
    x: ArrayViewD<'_, T>,
    a: isize,
    b: isize,
) -> Result<ArrayD<T>> {
    let nd = x.ndim();
    let (a, b) = (
        normalize_axis("transpose", a, nd)?,
        normalize_axis("transpose", b, nd)?,
    );
    let mut axes: Vec<usize> = (0..nd).collect();
    axes.swap(a, b);
    permute(x, &axes)
}

/// The dimensions of a reshape of `numel` elements to `shape`, with at most one `-1`
/// (inferred): an error when they do not hold exactly `numel` elements.
pub fn reshape_dims(op: &'static str, numel: usize, shape: &[isize]) -> Result<Vec<usize>> {
    let mut known = 1usize;
    let mut infer = None;
    for (i, &d) in shape.iter().enumerate() {
        match d {
            -1 if infer.is_none() => infer = Some(i),
            d if d >= 0 => {
                known = known
                    .checked_mul(d as usize)
                    .ok_or(super::LayerError::Shape {
                        op,
                        msg: format!("shape {shape:?} overflows"),
                    })?
            }
            _ => return invalid(op, format!("bad shape {shape:?} (one -1 at most)")),
        }
    }
    let mut dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    match infer {
        Some(i) if known != 0 && numel.is_multiple_of(known) => dims[i] = numel / known,
        None if known == numel => {}
        _ => {
            return shape_err(
                op,
                format!("cannot reshape {numel} elements into {shape:?}"),
            )
        }
    }
    Ok(dims)
}

/// `x.reshape(shape)` with at most one `-1` (inferred), on the standard-layout order.
pub fn reshape<T: Copy>(x: ArrayViewD<'_, T>, shape: &[isize]) -> Result<ArrayD<T>> {
    const OP: &str = "reshape";
    let dims = reshape_dims(OP, x.len(), shape)?;
    let data: Vec<T> = x.iter().copied().collect();
    ArrayD::from_shape_vec(IxDyn(&dims), data).or_else(|e| shape_err(OP, e.to_string()))
}

/// `torch.softmax(x, dim=axis)` (max-subtracted, f32 like torch's CPU kernel, sum in f64).
pub fn softmax(x: ArrayViewD<'_, f32>, axis: isize) -> Result<ArrayD<f32>> {
    let ax = normalize_axis("softmax", axis, x.ndim())?;
    let mut out = x.as_standard_layout().into_owned();
    let mut scratch = Vec::new();
    for mut lane in out.lanes_mut(Axis(ax)) {
        match lane.as_slice_mut() {
            Some(row) => softmax_in_place(row),
            None => {
                scratch.clear();
                scratch.extend(lane.iter().copied());
                softmax_in_place(&mut scratch);
                lane.iter_mut().zip(&scratch).for_each(|(v, s)| *v = *s);
            }
        }
    }
    Ok(out)
}

/// The softmax of one row, in place: `exp(x - max)`, summed in f64, times the reciprocal of
/// the sum (as torch's CPU kernel). NaN counts as the maximum. The one softmax of the engine:
/// [`softmax`] runs it on every lane, the R-CNN box head on each RoI's class logits, and the
/// TF.js executor on the last axis.
pub fn softmax_in_place(row: &mut [f32]) {
    let m = row.iter().fold(
        f32::NEG_INFINITY,
        |a, &b| if b > a || b.is_nan() { b } else { a },
    );
    let mut s = 0f64;
    for v in row.iter_mut() {
        *v = (*v - m).exp();
        s += *v as f64;
    }
    let inv = (1.0 / s) as f32;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// `torch.argmax(x, dim=axis, keepdim)`: the first index of the maximum; NaN counts as the
/// maximum (the first NaN wins), as torch.
pub fn argmax(x: ArrayViewD<'_, f32>, axis: isize, keepdim: bool) -> Result<ArrayD<i64>> {
    const OP: &str = "argmax";
    let ax = normalize_axis(OP, axis, x.ndim())?;
    if x.shape()[ax] == 0 {
        return shape_err(OP, "cannot take the argmax of an empty axis");
    }
    let mut r = x.map_axis(Axis(ax), |lane| {
        let mut best = 0usize;
        let mut bv = lane[0];
        for (i, &v) in lane.iter().enumerate().skip(1) {
            if bv.is_nan() {
                break;
            }
            if v > bv || v.is_nan() {
                best = i;
                bv = v;
            }
        }
        best as i64
    });
    if keepdim {
        r = r.insert_axis(Axis(ax));
    }
    Ok(r)
}

/// `torch.topk(x, k, dim=axis, largest, sorted=True)`: values and indices, sorted (descending
/// for `largest`). NaN counts as larger than every number, as torch. Ties keep the lower
/// index first (torch leaves their order unspecified).
pub fn topk(
    x: ArrayViewD<'_, f32>,
    k: usize,
    axis: isize,
    largest: bool,
) -> Result<(ArrayD<f32>, ArrayD<i64>)> {
    const OP: &str = "topk";
    let ax = normalize_axis(OP, axis, x.ndim())?;
    let len = x.shape()[ax];
    if k > len {
        return invalid(OP, format!("k = {k} is larger than the axis size {len}"));
    }
    let mut shape = x.shape().to_vec();
    shape[ax] = k;
    let mut vals = ArrayD::<f32>::zeros(IxDyn(&shape));
    let mut idxs = ArrayD::<i64>::zeros(IxDyn(&shape));
    let key = |v: f32| if v.is_nan() { f32::INFINITY } else { v };
    let cmp = |a: &(f32, usize), b: &(f32, usize)| {
        let (ka, kb) = (key(a.0), key(b.0));
        let ord = match (a.0.is_nan(), b.0.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ => ka.partial_cmp(&kb).unwrap_or(std::cmp::Ordering::Equal),
        };
        let ord = if largest { ord.reverse() } else { ord };
        ord.then(a.1.cmp(&b.1))
    };
    let mut buf: Vec<(f32, usize)> = Vec::with_capacity(len);
    for ((lane, mut vl), mut il) in x
        .lanes(Axis(ax))
        .into_iter()
        .zip(vals.lanes_mut(Axis(ax)))
        .zip(idxs.lanes_mut(Axis(ax)))
    {
        buf.clear();
        buf.extend(lane.iter().copied().zip(0..));
        if k > 0 && k < len {
            buf.select_nth_unstable_by(k - 1, cmp);
        }
        buf[..k].sort_by(cmp);
        for (j, &(v, i)) in buf[..k].iter().enumerate() {
            vl[j] = v;
            il[j] = i as i64;
        }
    }
    Ok((vals, idxs))
}

/// `torch.gather(x, dim=axis, index)`: `out[i][j][k] = x[index[i][j][k]][j][k]` (for axis 0).
/// `index` has the rank of `x`, and no larger size than `x` on the other axes; indices must
/// be in `[-len, len)` (negative ones count from the end, as torch).
pub fn gather<T: Copy>(
    x: ArrayViewD<'_, T>,
    axis: isize,
    index: ArrayViewD<'_, i64>,
) -> Result<ArrayD<T>> {
    const OP: &str = "gather";
    let nd = x.ndim();
    let ax = normalize_axis(OP, axis, nd)?;
    if index.ndim() != nd {
        return shape_err(
            OP,
            format!("index rank {} differs from input rank {nd}", index.ndim()),
        );
    }
    for d in 0..nd {
        if d != ax && index.shape()[d] > x.shape()[d] {
            return shape_err(
                OP,
                format!(
                    "index shape {:?} exceeds input shape {:?} on axis {d}",
                    index.shape(),
                    x.shape()
                ),
            );
        }
    }
    let len = x.shape()[ax] as i64;
    if let Some(&bad) = index.iter().find(|&&i| i < -len || i >= len) {
        return invalid(OP, format!("index {bad} is out of bounds for size {len}"));
    }
    let mut pos = vec![0usize; nd];
    Ok(ArrayD::from_shape_fn(index.raw_dim(), |idx| {
        for d in 0..nd {
            pos[d] = idx[d];
        }
        let i = index[&idx];
        pos[ax] = if i < 0 {
            (i + len) as usize
        } else {
            i as usize
        };
        x[IxDyn(&pos)]
    }))
}

#[cfg(test)]
mod tests {

    #[test]
    fn permute_plans_equal_permute() {
        let cases: &[(&[usize], &[usize])] = &[
            (&[1, 40, 40, 2, 58], &[0, 1, 2, 4, 3]),
            (&[2, 3, 4, 5], &[0, 2, 3, 1]),
            (&[2, 3, 4, 5], &[3, 1, 0, 2]),
            (&[1, 9, 17, 130], &[0, 3, 1, 2]),
            (&[6, 1, 7], &[1, 0, 2]),
            (&[4], &[0]),
            (&[], &[]),
        ];
        for &(shape, perm) in cases {
            let n: usize = shape.iter().product();
            let x = ndarray::ArrayD::from_shape_vec(
                ndarray::IxDyn(shape),
                (0..n).map(|i| i as f32).collect(),
            )
            .unwrap();
            let want = permute(x.view(), perm).unwrap();
            let plan = PermutePlan::new(shape, perm).unwrap();
            let mut out = vec![-1f32; n];
            plan.run(x.as_slice().unwrap(), &mut out).unwrap();
            assert_eq!(
                out,
                want.as_slice().unwrap(),
                "{shape:?} by {perm:?}: {plan:?}"
            );
        }
        assert!(PermutePlan::new(&[2, 3], &[0, 0]).is_err());
        let plan = PermutePlan::new(&[2, 3], &[1, 0]).unwrap();
        assert!(plan.run(&[0f32; 5], &mut [0f32; 6]).is_err());
    }
    use super::*;

    #[test]
    fn batched_transpose_matches_a_plain_one() {
        for &(b, r, c) in &[(2, 16, 24), (1, 9, 17), (3, 8, 8), (1, 1, 5), (2, 40, 3)] {
            let src: Vec<f32> = (0..b * r * c).map(|v| v as f32).collect();
            let got = transpose_2d_batched(&src, b, r, c);
            for m in 0..b {
                for i in 0..r {
                    for k in 0..c {
                        assert_eq!(got[m * r * c + k * r + i], src[m * r * c + i * c + k]);
                    }
                }
            }
        }
        assert!(transpose_2d_batched::<f32>(&[], 0, 3, 3).is_empty());
    }
    use ndarray::{arr1, arr2};

    #[test]
    fn concat_split_slice() {
        let a = arr2(&[[1, 2], [3, 4]]).into_dyn();
        let b = arr2(&[[5, 6]]).into_dyn();
        let c = concat(&[a.view(), b.view()], 0).unwrap();
        assert_eq!(c.shape(), &[3, 2]);
        assert!(concat(&[a.view(), b.view()], 1).is_err());
        let parts = split(c.view(), &[1, 2], 0).unwrap();
        assert_eq!(parts[1], arr2(&[[3, 4], [5, 6]]).into_dyn());
        assert!(split(c.view(), &[1, 1], 0).is_err());
        assert_eq!(split_even(c.view(), 2, 0).unwrap().len(), 2);
        let s = slice(c.view(), 0, -2, 100, 1).unwrap();
        assert_eq!(s, arr2(&[[3, 4], [5, 6]]).into_dyn());
        let s = slice(c.view(), -1, 0, 2, 2).unwrap();
        assert_eq!(s, arr2(&[[1], [3], [5]]).into_dyn());
        assert!(slice(c.view(), 2, 0, 1, 1).is_err());
    }

    #[test]
    fn pad_modes() {
        let x = arr1(&[1, 2, 3]).into_dyn();
        assert_eq!(
            pad(x.view(), &[(2, 1)], PadMode::Constant(0))
                .unwrap()
                .as_slice()
                .unwrap(),
            &[0, 0, 1, 2, 3, 0]
        );
        assert_eq!(
            pad(x.view(), &[(2, 2)], PadMode::Reflect)
                .unwrap()
                .as_slice()
                .unwrap(),
            &[3, 2, 1, 2, 3, 2, 1]
        );
        assert_eq!(
            pad(x.view(), &[(1, 2)], PadMode::Replicate)
                .unwrap()
                .as_slice()
                .unwrap(),
            &[1, 1, 2, 3, 3, 3]
        );
        assert!(pad(x.view(), &[(3, 0)], PadMode::Reflect).is_err());
    }

    #[test]
    fn reshape_permute() {
        let x = arr2(&[[1, 2, 3], [4, 5, 6]]).into_dyn();
        assert_eq!(reshape(x.view(), &[3, -1]).unwrap().shape(), &[3, 2]);
        assert!(reshape(x.view(), &[4, -1]).is_err());
        assert!(reshape(x.view(), &[-1, -1]).is_err());
        assert_eq!(
            transpose(x.view(), 0, 1).unwrap().as_slice().unwrap(),
            &[1, 4, 2, 5, 3, 6]
        );
        assert!(permute(x.view(), &[0, 0]).is_err());
    }

    #[test]
    fn softmax_argmax_topk_gather() {
        let x = arr2(&[[1.0f32, 3.0, 2.0, 3.0], [0.0, f32::NAN, 5.0, 1.0]]).into_dyn();
        let s = softmax(x.view(), -1).unwrap();
        assert!((s.row_sum(0) - 1.0).abs() < 1e-6);
        let a = argmax(x.view(), 1, false).unwrap();
        assert_eq!(a.as_slice().unwrap(), &[1, 1]);
        let (v, i) = topk(x.view(), 2, 1, true).unwrap();
        assert_eq!(i.as_slice().unwrap(), &[1, 3, 1, 2]);
        assert_eq!(v[[0, 0]], 3.0);
        let (_, i) = topk(x.view(), 2, 1, false).unwrap();
        assert_eq!(i.as_slice().unwrap(), &[0, 2, 0, 3]);
        assert!(topk(x.view(), 5, 1, true).is_err());
        let idx = arr2(&[[3i64, 0], [-1, 2]]).into_dyn();
        let g = gather(x.view(), 1, idx.view()).unwrap();
        assert_eq!(g[[0, 0]], 3.0);
        assert_eq!(g[[1, 0]], 1.0);
        assert!(gather(x.view(), 1, arr2(&[[4i64]]).into_dyn().view()).is_err());
    }

    trait RowSum {
        fn row_sum(&self, r: usize) -> f32;
    }
    impl RowSum for ArrayD<f32> {
        fn row_sum(&self, r: usize) -> f32 {
            self.index_axis(Axis(0), r).sum()
        }
    }

    /// `permute` takes the batched-transpose path for 4-byte and other element types alike,
    /// and any other permutation the general one; both equal ndarray's own permutation.
    #[test]
    fn permute_fast_and_general_paths() {
        let x = ArrayD::from_shape_fn(IxDyn(&[2, 3, 9, 17]), |i| {
            (i[0] * 1000 + i[1] * 100 + i[2] * 10 + i[3]) as i32
        });
        for perm in [
            [0, 2, 3, 1],
            [0, 3, 1, 2],
            [3, 2, 1, 0],
            [1, 0, 2, 3],
            [0, 1, 2, 3],
        ] {
            let want = x
                .view()
                .permuted_axes(IxDyn(&perm))
                .as_standard_layout()
                .into_owned();
            assert_eq!(permute(x.view(), &perm).unwrap(), want, "{perm:?}");
            let wide = x.mapv(|v| v as i64);
            let want = wide
                .view()
                .permuted_axes(IxDyn(&perm))
                .as_standard_layout()
                .into_owned();
            assert_eq!(permute(wide.view(), &perm).unwrap(), want, "i64 {perm:?}");
        }
    }

    /// Constant padding (row copies) places the input where the general index map does.
    #[test]
    fn constant_pad_places_rows() {
        let x = ArrayD::from_shape_fn(IxDyn(&[2, 3, 4]), |i| {
            (i[0] * 12 + i[1] * 4 + i[2]) as u8 + 1
        });
        let pads = [(1, 2), (0, 1), (2, 0)];
        let out = pad(x.view(), &pads, PadMode::Constant(0u8)).unwrap();
        assert_eq!(out.shape(), &[4, 4, 7]);
        for (idx, &v) in out.indexed_iter() {
            let src = (idx[0] as isize - 2, idx[1] as isize, idx[2] as isize - 1);
            let inside =
                (0..2).contains(&src.0) && (0..3).contains(&src.1) && (0..4).contains(&src.2);
            let want = if inside {
                x[[src.0 as usize, src.1 as usize, src.2 as usize]]
            } else {
                0
            };
            assert_eq!(v, want, "{idx:?}");
        }
        assert!(reshape_dims("r", 12, &[-1, 5]).is_err());
        assert_eq!(reshape_dims("r", 12, &[-1, 4]).unwrap(), vec![3, 4]);
        assert!(reshape_dims("r", 12, &[-1, -1]).is_err());
    }
}
