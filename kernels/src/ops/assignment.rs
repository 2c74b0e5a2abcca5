//! Linear sum assignment (minimum-cost bipartite matching of a rectangular matrix), as
//! `scipy.optimize.linear_sum_assignment` computes it.
//!
//! The references this engine is checked against call scipy's solver: py-motmetrics (its
//! per-frame CLEAR MOT matching and the global IDF1 matching) and ByteTrack's matching. When
//! several assignments have the same minimum cost (equal IoUs, constant matrices, the large
//! "no match" costs of motmetrics' IDF1 matrix) any solver is correct, but only the same
//! algorithm run in the same order picks the same one, and the metrics that follow (ID
//! switches, which track keeps an identity) depend on that choice. So this is a line-by-line
//! port of scipy's `rectangular_lsap.cpp` (Crouse's shortest augmenting path, by
//! P. M. Larsen): the same column scan order, the same tie rule, the same dual updates and
//! the same transpose of tall matrices, in the same `f64` arithmetic.

/// Why [`linear_sum_assignment`] found no assignment.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AssignmentError {
    /// The slice does not hold `rows * cols` values.
    #[error("linear_sum_assignment: the cost matrix is {rows}x{cols} but has {len} values")]
    Shape {
        rows: usize,
        cols: usize,
        len: usize,
    },
    /// A cost is NaN or -inf (scipy: "matrix contains invalid numeric entries").
    #[error("linear_sum_assignment: cost[{row}][{col}] is {value}, which is not a valid cost")]
    InvalidEntry { row: usize, col: usize, value: f64 },
    /// No assignment of every row (or every column, whichever is fewer) avoids +inf costs
    /// (scipy: "cost matrix is infeasible").
    #[error("linear_sum_assignment: the cost matrix is infeasible")]
    Infeasible,
}

/// Minimum-cost assignment of the `rows x cols` matrix `cost` (row-major): `min(rows, cols)`
/// pairs `(row, col)`, sorted by row, each row and column used at most once. `+inf` marks a
/// pair that may not be assigned.
///
/// Equals `scipy.optimize.linear_sum_assignment(cost)` (scipy >= 1.4, whose solver is the
/// one ported here), ties included; see the [module docs](self) for why that matters.
/// An empty matrix (no rows or no columns) gives no pairs.
///
/// # Errors
/// [`AssignmentError::Shape`] when `cost.len() != rows * cols`,
/// [`AssignmentError::InvalidEntry`] for a NaN or -inf cost, [`AssignmentError::Infeasible`]
/// when every complete assignment uses a +inf cost.
pub fn linear_sum_assignment(
    cost: &[f64],
    rows: usize,
    cols: usize,
) -> Result<Vec<(usize, usize)>, AssignmentError> {
    if rows.checked_mul(cols) != Some(cost.len()) {
        return Err(AssignmentError::Shape {
            rows,
            cols,
            len: cost.len(),
        });
    }
    if let Some(k) = cost
        .iter()
        .position(|c| c.is_nan() || *c == f64::NEG_INFINITY)
    {
        return Err(AssignmentError::InvalidEntry {
            row: k / cols,
            col: k % cols,
            value: cost[k],
        });
    }
    if rows == 0 || cols == 0 {
        return Ok(Vec::new());
    }
    // The algorithm augments one row at a time and needs at least as many columns as rows,
    // so scipy solves a tall matrix transposed.
    if cols < rows {
        let mut transposed = vec![0.0; rows * cols];
        for i in 0..rows {
            for j in 0..cols {
                transposed[j * rows + i] = cost[i * cols + j];
            }
        }
        let col4row = solve(&transposed, cols, rows)?;
        // Rows of the transposed matrix are the original columns; scipy argsorts them by
        // the original row they got, so the pairs come out sorted by row. The assigned rows
        // are distinct, so the sort order is unique.
        let mut pairs: Vec<(usize, usize)> = col4row
            .iter()
            .enumerate()
            .map(|(col, &row)| (row, col))
            .collect();
        pairs.sort_unstable();
        Ok(pairs)
    } else {
        let col4row = solve(cost, rows, cols)?;
        Ok(col4row.into_iter().enumerate().collect())
    }
}

/// scipy's `solve` for `rows <= cols` and no NaN or -inf: the column of each row.
fn solve(cost: &[f64], rows: usize, cols: usize) -> Result<Vec<usize>, AssignmentError> {
    let mut state = State {
        cost,
        cols,
        u: vec![0.0; rows],
        v: vec![0.0; cols],
        shortest_path_costs: vec![0.0; cols],
        path: vec![NONE; cols],
        col4row: vec![NONE; rows],
        row4col: vec![NONE; cols],
        scanned_rows: vec![false; rows],
        scanned_cols: vec![false; cols],
        remaining: vec![0; cols],
    };
    for cur_row in 0..rows {
        let (sink, min_val) = state.augmenting_path(cur_row)?;
        state.update_duals(cur_row, min_val);
        // Flip the alternating path from the sink back to the current row.
        let mut j = sink;
        loop {
            let i = state.path[j];
            state.row4col[j] = i;
            std::mem::swap(&mut state.col4row[i], &mut j);
            if i == cur_row {
                break;
            }
        }
    }
    Ok(state.col4row)
}

/// scipy's `-1`: no row, no column, no predecessor yet.
const NONE: usize = usize::MAX;

/// The working arrays of scipy's `solve`, named as there (`SR`, `SC` are `scanned_rows`,
/// `scanned_cols`).
struct State<'a> {
    cost: &'a [f64],
    cols: usize,
    u: Vec<f64>,
    v: Vec<f64>,
    shortest_path_costs: Vec<f64>,
    path: Vec<usize>,
    col4row: Vec<usize>,
    row4col: Vec<usize>,
    scanned_rows: Vec<bool>,
    scanned_cols: Vec<bool>,
    remaining: Vec<usize>,
}

impl State<'_> {
    /// scipy's `augmenting_path`: Dijkstra over reduced costs from row `i` to the nearest
    /// free column. Returns the sink column and the path's length.
    fn augmenting_path(&mut self, mut i: usize) -> Result<(usize, f64), AssignmentError> {
        let nc = self.cols;
        let mut min_val = 0.0;
        // Filled in reverse, as scipy does, so that a constant matrix gives the identity
        // (scipy issue #11602); with ties, this order decides which column wins.
        let mut num_remaining = nc;
        for (it, r) in self.remaining.iter_mut().enumerate() {
            *r = nc - it - 1;
        }
        self.scanned_rows.fill(false);
        self.scanned_cols.fill(false);
        self.shortest_path_costs.fill(f64::INFINITY);

        loop {
            let mut index = NONE;
            let mut lowest = f64::INFINITY;
            self.scanned_rows[i] = true;
            for it in 0..num_remaining {
                let j = self.remaining[it];
                // The same operation order as scipy's `minVal + cost - u[i] - v[j]`.
                let r = min_val + self.cost[i * nc + j] - self.u[i] - self.v[j];
                if r < self.shortest_path_costs[j] {
                    self.path[j] = i;
                    self.shortest_path_costs[j] = r;
                }
                // Among equal minima scipy prefers a free column (it ends the search).
                let s = self.shortest_path_costs[j];
                if s < lowest || (s == lowest && self.row4col[j] == NONE) {
                    lowest = s;
                    index = it;
                }
            }
            min_val = lowest;
            // All remaining columns unreachable (+inf): scipy's "infeasible". `index` is set
            // otherwise, since some `s` was below `lowest = inf`.
            if min_val == f64::INFINITY || index == NONE {
                return Err(AssignmentError::Infeasible);
            }
            let j = self.remaining[index];
            self.scanned_cols[j] = true;
            num_remaining -= 1;
            self.remaining[index] = self.remaining[num_remaining];
            if self.row4col[j] == NONE {
                return Ok((j, min_val));
            }
            i = self.row4col[j];
        }
    }

    /// scipy's dual update after an augmenting path of length `min_val` from `cur_row`.
    fn update_duals(&mut self, cur_row: usize, min_val: f64) {
        self.u[cur_row] += min_val;
        for i in 0..self.u.len() {
            if self.scanned_rows[i] && i != cur_row {
                self.u[i] += min_val - self.shortest_path_costs[self.col4row[i]];
            }
        }
        for j in 0..self.cols {
            if self.scanned_cols[j] {
                self.v[j] -= min_val - self.shortest_path_costs[j];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: f64 = f64::INFINITY;

    fn solve_rows(m: &[&[f64]]) -> Result<Vec<(usize, usize)>, AssignmentError> {
        let rows = m.len();
        let cols = m.first().map_or(0, |r| r.len());
        let flat: Vec<f64> = m.iter().flat_map(|r| r.iter().copied()).collect();
        linear_sum_assignment(&flat, rows, cols)
    }

    /// A named matrix (rows) and scipy's pairs for it.
    type Case<'a> = (&'a str, Vec<&'a [f64]>, Vec<(usize, usize)>);

    /// Every expected result below is what `scipy.optimize.linear_sum_assignment` (scipy
    /// 1.17.1, numpy 2.4.6) returned for the same matrix, as `list(zip(rows, cols))`.
    #[test]
    fn matches_scipy() {
        let cases: Vec<Case> = vec![
            (
                "square",
                vec![&[4., 1., 3.], &[2., 0., 5.], &[3., 2., 2.]],
                vec![(0, 1), (1, 0), (2, 2)],
            ),
            (
                "wide",
                vec![
                    &[10., 19., 8., 15., 19.],
                    &[10., 18., 7., 17., 19.],
                    &[13., 16., 9., 14., 19.],
                    &[12., 19., 8., 18., 19.],
                ],
                vec![(0, 3), (1, 0), (2, 1), (3, 2)],
            ),
            (
                "tall",
                vec![
                    &[10., 19., 8., 15.],
                    &[10., 18., 7., 17.],
                    &[13., 16., 9., 14.],
                    &[12., 19., 8., 18.],
                    &[14., 17., 10., 19.],
                ],
                vec![(0, 0), (1, 2), (2, 3), (4, 1)],
            ),
            (
                "constant3",
                vec![&[1., 1., 1.], &[1., 1., 1.], &[1., 1., 1.]],
                vec![(0, 0), (1, 1), (2, 2)],
            ),
            (
                "constant_wide",
                vec![&[0., 0., 0., 0.], &[0., 0., 0., 0.]],
                vec![(0, 0), (1, 1)],
            ),
            (
                "constant_tall",
                vec![&[0., 0.], &[0., 0.], &[0., 0.], &[0., 0.]],
                vec![(0, 0), (1, 1)],
            ),
            (
                "ties",
                vec![&[1., 2., 1.], &[2., 1., 1.], &[1., 1., 2.]],
                vec![(0, 0), (1, 2), (2, 1)],
            ),
            (
                "ties_tall",
                vec![&[1., 1.], &[1., 1.], &[0., 1.]],
                vec![(0, 1), (2, 0)],
            ),
            (
                "inf",
                vec![&[INF, 1., INF], &[2., INF, 3.], &[INF, 4., 5.]],
                vec![(0, 1), (1, 0), (2, 2)],
            ),
            (
                "inf_tall",
                vec![&[1., INF], &[INF, INF], &[3., 2.]],
                vec![(0, 0), (2, 1)],
            ),
            (
                "fractions",
                vec![
                    &[0.1, 0.2, 0.30000000000000004],
                    &[0.3, 0.1, 0.2],
                    &[0.2, 0.30000000000000004, 0.1],
                ],
                vec![(0, 0), (1, 1), (2, 2)],
            ),
            (
                "negative",
                vec![&[-1., -2.], &[-3., -5.]],
                vec![(0, 0), (1, 1)],
            ),
            ("one", vec![&[7.]], vec![(0, 0)]),
            ("row", vec![&[3., 1., 2.]], vec![(0, 1)]),
            ("col", vec![&[3.], &[1.], &[2.]], vec![(1, 0)]),
        ];
        for (name, m, want) in cases {
            assert_eq!(solve_rows(&m).unwrap(), want, "{name}");
        }
    }

    #[test]
    fn empty_matrices_give_no_pairs() {
        assert_eq!(linear_sum_assignment(&[], 0, 3).unwrap(), vec![]);
        assert_eq!(linear_sum_assignment(&[], 2, 0).unwrap(), vec![]);
        assert_eq!(linear_sum_assignment(&[], 0, 0).unwrap(), vec![]);
    }

    /// scipy raises "cost matrix is infeasible" for each of these.
    #[test]
    fn infeasible_matrices_are_errors() {
        for m in [
            vec![&[INF, INF][..], &[1., 2.]],
            vec![&[INF, 1.][..], &[INF, 2.]],
            vec![&[1., INF][..], &[2., INF], &[INF, INF]],
        ] {
            assert_eq!(solve_rows(&m), Err(AssignmentError::Infeasible), "{m:?}");
        }
    }

    /// scipy raises "matrix contains invalid numeric entries" for NaN and -inf.
    #[test]
    fn nan_and_negative_infinity_are_errors() {
        let err = solve_rows(&[&[1., 2.], &[f64::NAN, 3.]]).unwrap_err();
        assert!(matches!(
            err,
            AssignmentError::InvalidEntry { row: 1, col: 0, value } if value.is_nan()
        ));
        assert_eq!(
            solve_rows(&[&[1., -INF], &[2., 3.]]),
            Err(AssignmentError::InvalidEntry {
                row: 0,
                col: 1,
                value: -INF
            })
        );
        // Checked even when the matrix has no rows to assign in the other dimension.
        assert!(linear_sum_assignment(&[f64::NAN], 1, 1).is_err());
    }

    #[test]
    fn wrong_length_is_an_error() {
        assert_eq!(
            linear_sum_assignment(&[1.0, 2.0, 3.0], 2, 2),
            Err(AssignmentError::Shape {
                rows: 2,
                cols: 2,
                len: 3
            })
        );
        assert!(linear_sum_assignment(&[], usize::MAX, 2).is_err());
    }

    /// The result is optimal: no permutation of a small matrix costs less.
    #[test]
    fn is_optimal_on_small_matrices() {
        fn permutations(n: usize) -> Vec<Vec<usize>> {
            if n == 0 {
                return vec![vec![]];
            }
            let mut out = Vec::new();
            for p in permutations(n - 1) {
                for k in 0..n {
                    let mut q = p.clone();
                    q.insert(k, n - 1);
                    out.push(q);
                }
            }
            out
        }
        let mut seed = 12345u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) % 7) as f64
        };
        for n in 1..=5 {
            let perms = permutations(n);
            for _ in 0..50 {
                let m: Vec<f64> = (0..n * n).map(|_| next()).collect();
                let got = linear_sum_assignment(&m, n, n).unwrap();
                let total: f64 = got.iter().map(|&(i, j)| m[i * n + j]).sum();
                let best = perms
                    .iter()
                    .map(|p| (0..n).map(|i| m[i * n + p[i]]).sum::<f64>())
                    .fold(INF, f64::min);
                assert_eq!(total, best, "{m:?}");
            }
        }
    }
}
