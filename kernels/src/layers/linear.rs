//! Fully connected layer: `y = x·Wᵀ + b` with torch's `[out, in]` weight.

use ndarray::{Array2, ArrayD, ArrayView1, ArrayView2, ArrayViewD, IxDyn};

use super::activation::Activation;
use super::gemm::{sgemm, MatMut, MatRef};
use super::{checked_numel, invalid, shape_err, Result};

/// A linear layer. The weight is stored transposed (`[in, out]`, row-major) at load, so the
/// GEMM streams both operands with unit stride.
#[derive(Clone, Debug)]
pub struct Linear {
    in_features: usize,
    out_features: usize,
    /// `[in, out]` row-major.
    weight_t: Vec<f32>,
    bias: Option<Vec<f32>>,
    activation: Activation,
}

impl Linear {
    /// A linear layer from torch's `weight` `[out, in]` and optional `bias` `[out]`.
    pub fn new(weight: ArrayView2<'_, f32>, bias: Option<ArrayView1<'_, f32>>) -> Result<Self> {
        let (out_features, in_features) = weight.dim();
        checked_numel("linear", &[out_features, in_features])?;
        if let Some(b) = &bias {
            if b.len() != out_features {
                return shape_err(
                    "linear",
                    format!("bias has {} values for {out_features} outputs", b.len()),
                );
            }
        }
        Ok(Linear {
            in_features,
            out_features,
            weight_t: weight.t().as_standard_layout().iter().copied().collect(),
            bias: bias.map(|b| b.to_vec()),
            activation: Activation::Identity,
        })
    }

    /// Fuses an element-wise activation into the output.
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    pub fn in_features(&self) -> usize {
        self.in_features
    }
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// `[N, in]` → `[N, out]`.
    pub fn forward(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        crate::profile::timed(
            || {
                let (n, k) = x.dim();
                format!("linear {k}->{} n{n}", self.out_features)
            },
            || self.forward_untimed(x),
        )
    }

    fn forward_untimed(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        let (n, k) = x.dim();
        if k != self.in_features {
            return shape_err(
                "linear",
                format!("input has {k} features, expected {}", self.in_features),
            );
        }
        let x = x.as_standard_layout();
        let xs = x.as_slice().ok_or(super::LayerError::Invalid {
            op: "linear",
            msg: "input not contiguous".into(),
        })?;
        let m = self.out_features;
        let mut out = vec![0f32; checked_numel("linear", &[n, m])?];
        if super::few_rows::pays(n, k, m) {
            // A few vectors by a large weight: read the weight once (see `few_rows`).
            super::few_rows::few_rows_product(n, k, m, xs, &self.weight_t, &mut out);
        } else {
            sgemm(
                MatRef::row_major(xs, n, k, k)?,
                MatRef::row_major(&self.weight_t, k, m, m)?,
                MatMut::row_major(&mut out, n, m, m)?,
                false,
            )?;
        }
        if self.bias.is_some() || self.activation != Activation::Identity {
            let epilogue = |row: &mut [f32]| {
                if let Some(b) = &self.bias {
                    row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
                }
                self.activation.apply_slice(row);
            };
            // Large outputs (a transformer's FFN: 950 x 2048) in parallel, by rows.
            if out.len() >= 1 << 16 {
                use rayon::prelude::*;
                out.par_chunks_mut(m.max(1)).for_each(epilogue);
            } else {
                out.chunks_mut(m.max(1)).for_each(epilogue);
            }
        }
        Array2::from_shape_vec((n, m), out).or_else(|e| invalid("linear", e.to_string()))
    }

    /// `[*, in]` → `[*, out]` (any number of leading dimensions, as torch).
    pub fn forward_nd(&self, x: ArrayViewD<'_, f32>) -> Result<ArrayD<f32>> {
        let Some((&k, lead)) = x.shape().split_last() else {
            return shape_err("linear", "input is a scalar");
        };
        let rows = checked_numel("linear", lead)?;
        let x = x.as_standard_layout();
        let x2 = x
            .view()
            .into_shape_with_order((rows, k))
            .or_else(|e| invalid("linear", e.to_string()))?;
        let y = self.forward(x2)?;
        let mut shape = lead.to_vec();
        shape.push(self.out_features);
        y.into_shape_with_order(IxDyn(&shape))
            .or_else(|e| invalid("linear", e.to_string()))
    }
}

/// `torch.nn.functional.linear(x, weight, bias)` for `[N, in]` inputs.
pub fn linear(
    x: ArrayView2<'_, f32>,
    weight: ArrayView2<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
) -> Result<Array2<f32>> {
    Linear::new(weight, bias)?.forward(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, arr2, Array3};

    #[test]
    fn small_linear() {
        let w = arr2(&[[1.0f32, 2.0, 3.0], [0.0, -1.0, 0.5]]);
        let b = arr1(&[0.5f32, -0.5]);
        let x = arr2(&[[1.0f32, 1.0, 1.0], [2.0, 0.0, -2.0]]);
        let y = linear(x.view(), w.view(), Some(b.view())).unwrap();
        assert_eq!(y, arr2(&[[6.5, -1.0], [-3.5, -1.5]]));
        let l = Linear::new(w.view(), None)
            .unwrap()
            .with_activation(Activation::Relu);
        let y = l.forward(x.view()).unwrap();
        assert_eq!(y, arr2(&[[6.0, 0.0], [0.0, 0.0]]));
        let x3 = Array3::<f32>::ones((2, 4, 3));
        assert_eq!(
            l.forward_nd(x3.view().into_dyn()).unwrap().shape(),
            &[2, 4, 2]
        );
        assert!(l.forward(arr2(&[[1.0f32, 2.0]]).view()).is_err());
        assert!(Linear::new(w.view(), Some(arr1(&[1.0f32]).view())).is_err());
    }
}
