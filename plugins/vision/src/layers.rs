//! Tensor views for the layers and layer binding from checkpoints: `[N, C, H, W]` views of
//! feature maps, and convolutions (with a frozen batch norm folded in) and linear layers bound
//! by parameter name.

use kernels::layers::{Activation, Conv2d, Conv2dParams};
use kernels::weights::Binder;
use kernels::Tensor;
use ndarray::{Array4, ArrayView1, ArrayView4, Ix1, Ix4};
use plugin_sdk::DType;

use crate::error::{LayerContext, ModelError};

/// A feature map as the layers want it: `[N, C, H, W]`, and whether the tensor had the batch
/// axis (`[N, C, H, W]`) or not (`[C, H, W]`, read as `N = 1`).
pub fn nchw<'a>(t: &'a Tensor, what: &str) -> Result<(ArrayView4<'a, f32>, bool), ModelError> {
    if t.dtype() != DType::F32 {
        return Err(ModelError::input(format!(
            "{what} must be f32, got {}",
            t.describe()
        )));
    }
    let v = t.view::<f32>()?;
    let batched = match t.ndim() {
        3 => false,
        4 => true,
        _ => {
            return Err(ModelError::input(format!(
                "{what} must be [C, H, W] or [N, C, H, W], got {}",
                t.describe()
            )))
        }
    };
    let s = t.shape();
    let dims = if batched {
        (s[0], s[1], s[2], s[3])
    } else {
        (1, s[0], s[1], s[2])
    };
    let v = v
        .into_shape_with_order(dims)
        .map_err(|e| ModelError::input(format!("{what}: {e}")))?;
    Ok((
        v.into_dimensionality::<Ix4>()
            .map_err(|e| ModelError::input(e.to_string()))?,
        batched,
    ))
}

/// The tensor of a layer output: `[N, C, H, W]`, or `[C, H, W]` when the input had no batch axis.
pub fn from_nchw(a: Array4<f32>, batched: bool) -> Result<Tensor, ModelError> {
    let (n, c, h, w) = a.dim();
    let t = kernels::layers::array_to_tensor(a.into_dyn()).ctx(|| "output".into())?;
    if batched || n != 1 {
        Ok(t)
    } else {
        Ok(t.reshape(&[c, h, w])?)
    }
}

/// `[N, C, H, W]` as `[N, H, W, C]` (`to_nchw` false), or back (`to_nchw` true): for nodes
/// that take and give `NCHW` features and compute in `NHWC` between.
pub fn transpose_layout(x: ArrayView4<'_, f32>, to_nchw: bool) -> Result<Array4<f32>, ModelError> {
    let (n, a, b, c) = x.dim();
    let x = x.as_standard_layout();
    let xs = x
        .as_slice()
        .ok_or_else(|| ModelError::input("a non-contiguous map"))?;
    // An NCHW image is a `C x HW` matrix, and its NHWC form that matrix transposed.
    let (rows, cols, dims) = if to_nchw {
        (a * b, c, (n, c, a, b))
    } else {
        (a, b * c, (n, b, c, a))
    };
    let t = kernels::layers::shape::transpose_2d_batched(xs, n, rows, cols);
    Array4::from_shape_vec(dims, t).map_err(|e| ModelError::input(e.to_string()))
}

fn vec1(t: &Tensor) -> Result<ArrayView1<'_, f32>, ModelError> {
    t.view::<f32>()?
        .into_dimensionality::<Ix1>()
        .map_err(|e| ModelError::input(e.to_string()))
}

/// Binds `conv` (`[cout, cin/groups, k, k]`, no bias) followed by a FrozenBatchNorm2d `bn`
/// (`weight`, `bias`, `running_mean`, `running_var`), folded into the convolution's weight and
/// bias, with `activation` fused.
#[allow(clippy::too_many_arguments)]
pub fn conv_bn(
    b: &mut Binder<'_>,
    conv: &str,
    bn: &str,
    cin: usize,
    cout: usize,
    k: usize,
    params: Conv2dParams,
    eps: f32,
    activation: Activation,
) -> Result<Conv2d, ModelError> {
    let w = b.take(
        &format!("{conv}.weight"),
        &[cout, cin / params.groups, k, k],
    );
    let gamma = b.take(&format!("{bn}.weight"), &[cout]);
    let beta = b.take(&format!("{bn}.bias"), &[cout]);
    let mean = b.take(&format!("{bn}.running_mean"), &[cout]);
    let var = b.take(&format!("{bn}.running_var"), &[cout]);
    let c = Conv2d::from_tensors(&w, None, params)
        .ctx(|| conv.to_string())?
        .with_batch_norm(vec1(&gamma)?, vec1(&beta)?, vec1(&mean)?, vec1(&var)?, eps)
        .ctx(|| bn.to_string())?;
    Ok(c.with_activation(activation))
}

/// CornerNet's (and CenterNet's Hourglass's) `convolution(k, in, out, stride)`: `{name}.conv`
/// (`k x k`, padding `(k - 1) / 2`, no bias), `{name}.bn` (BatchNorm2d, eps 1e-5, folded) and a
/// ReLU.
pub fn conv_bn_relu(
    b: &mut Binder<'_>,
    name: &str,
    k: usize,
    cin: usize,
    cout: usize,
    stride: usize,
) -> Result<Conv2d, ModelError> {
    conv_bn(
        b,
        &format!("{name}.conv"),
        &format!("{name}.bn"),
        cin,
        cout,
        k,
        Conv2dParams::default().stride(stride).padding((k - 1) / 2),
        1e-5,
        Activation::Relu,
    )
}

/// Binds a convolution with a bias (`[cout, cin, k, k]`, `[cout]`).
pub fn conv_bias(
    b: &mut Binder<'_>,
    name: &str,
    cin: usize,
    cout: usize,
    k: usize,
    params: Conv2dParams,
) -> Result<Conv2d, ModelError> {
    let w = b.take(&format!("{name}.weight"), &[cout, cin, k, k]);
    let bias = b.take(&format!("{name}.bias"), &[cout]);
    Conv2d::from_tensors(&w, Some(&bias), params).ctx(|| name.to_string())
}

/// Detectron2's `Conv2d(..., bias=False, norm=GroupNorm(32, C), activation)`: a convolution
/// without bias, GroupNorm (32 groups, eps 1e-5) and an optional ReLU. Bound from
/// `{name}.weight`, `{name}.norm.weight` and `{name}.norm.bias`.
#[derive(Clone, Debug)]
pub struct ConvGroupNorm {
    conv: Conv2d,
    gamma: ndarray::Array1<f32>,
    beta: ndarray::Array1<f32>,
    relu: bool,
    name: String,
}

/// GroupNorm's groups in Detectron2's `get_norm("GN", C)`.
pub const GN_GROUPS: usize = 32;
const GN_EPS: f32 = 1e-5;

impl ConvGroupNorm {
    /// Binds `name` as a `k x k` convolution (padding `k / 2`) from `cin` to `cout` channels,
    /// with its GroupNorm as `{name}.norm` (Detectron2's `Conv2d(norm=...)`).
    pub fn bind(
        b: &mut Binder<'_>,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        relu: bool,
    ) -> Result<ConvGroupNorm, ModelError> {
        Self::bind_parts(b, name, &format!("{name}.norm"), cin, cout, k, relu)
    }

    /// [`ConvGroupNorm::bind`] with the convolution and the GroupNorm under names of their
    /// own (`nn.Sequential(conv, norm)`: `{module}.0` and `{module}.1`).
    pub fn bind_parts(
        b: &mut Binder<'_>,
        name: &str,
        norm: &str,
        cin: usize,
        cout: usize,
        k: usize,
        relu: bool,
    ) -> Result<ConvGroupNorm, ModelError> {
        if !cout.is_multiple_of(GN_GROUPS) {
            return Err(ModelError::input(format!(
                "{name}: GroupNorm needs a width divisible by {GN_GROUPS}, got {cout}"
            )));
        }
        let w = b.take(&format!("{name}.weight"), &[cout, cin, k, k]);
        let gamma = b.take(&format!("{norm}.weight"), &[cout]);
        let beta = b.take(&format!("{norm}.bias"), &[cout]);
        Ok(ConvGroupNorm {
            conv: Conv2d::from_tensors(&w, None, Conv2dParams::default().padding(k / 2))
                .ctx(|| name.to_string())?,
            gamma: vec1(&gamma)?.to_owned(),
            beta: vec1(&beta)?.to_owned(),
            relu,
            name: name.to_string(),
        })
    }

    pub fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>, ModelError> {
        let mut y = self.conv.forward(x).ctx(|| self.name.clone())?.into_dyn();
        let activation = if self.relu {
            Activation::Relu
        } else {
            Activation::Identity
        };
        kernels::layers::norm::group_norm_in_place(
            &mut y,
            GN_GROUPS,
            Some(self.gamma.view()),
            Some(self.beta.view()),
            GN_EPS,
            activation,
        )
        .ctx(|| format!("{}.norm", self.name))?;
        y.into_dimensionality::<Ix4>()
            .map_err(|e| ModelError::input(e.to_string()))
    }
}

/// Binds a linear layer (`[out, in]`, `[out]`).
pub fn linear(
    b: &mut Binder<'_>,
    name: &str,
    cin: usize,
    cout: usize,
    activation: Activation,
) -> Result<kernels::layers::Linear, ModelError> {
    let w = b.take(&format!("{name}.weight"), &[cout, cin]);
    let bias = b.take(&format!("{name}.bias"), &[cout]);
    let w = w
        .view::<f32>()?
        .into_dimensionality::<ndarray::Ix2>()
        .map_err(|e| ModelError::input(e.to_string()))?;
    Ok(kernels::layers::Linear::new(w, Some(vec1(&bias)?))
        .ctx(|| name.to_string())?
        .with_activation(activation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_keep_or_add_the_batch_axis() {
        let t = Tensor::from_vec(&[2, 3, 4], (0..24).map(|v| v as f32).collect()).unwrap();
        let (v, batched) = nchw(&t, "x").unwrap();
        assert_eq!(v.dim(), (1, 2, 3, 4));
        assert!(!batched);
        let back = from_nchw(v.to_owned(), batched).unwrap();
        assert_eq!(back.shape(), &[2, 3, 4]);
        let t4 = t.reshape(&[1, 2, 3, 4]).unwrap();
        let (_, batched) = nchw(&t4, "x").unwrap();
        assert!(batched);
        assert_eq!(
            from_nchw(v.to_owned(), true).unwrap().shape(),
            &[1, 2, 3, 4]
        );
        assert!(nchw(&t.reshape(&[24]).unwrap(), "x").is_err());
        let ints = Tensor::from_vec(&[1, 1, 1], vec![1i64]).unwrap();
        assert!(nchw(&ints, "x")
            .unwrap_err()
            .to_string()
            .contains("must be f32"));
    }
}
