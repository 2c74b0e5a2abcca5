//! Element-wise activations (in place where possible) and PReLU.
//!
//! Formulas follow PyTorch's CPU kernels: `relu6 = min(max(x, 0), 6)`,
//! `leaky_relu = x > 0 ? x : x·slope`, `sigmoid = 1 / (1 + e^-x)`, `silu = x·sigmoid(x)`,
//! `hardswish = x·min(max(x + 3, 0), 6) / 6`, `hardsigmoid = min(max(x + 3, 0), 6) / 6`.
//! NaN propagates through every one of them, as in torch.

use ndarray::{ArrayD, ArrayView1, ArrayViewD, ArrayViewMutD, Axis};
use rayon::prelude::*;

use super::{invalid, shape_err, Result};

/// Element-wise activations that need no per-channel parameter (PReLU is [`prelu`]).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Activation {
    #[default]
    Identity,
    Relu,
    Relu6,
    LeakyRelu(f32),
    Sigmoid,
    Tanh,
    Silu,
    HardSwish,
    HardSigmoid,
}

/// Chunks at least this long are processed on separate rayon threads.
const PAR_CHUNK: usize = 1 << 16;

#[inline(always)]
fn relu(x: f32) -> f32 {
    // `x < 0` is false for NaN, so NaN passes through.
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

#[inline(always)]
fn clamp06(x: f32) -> f32 {
    // `f32::clamp` returns NaN for NaN.
    x.clamp(0.0, 6.0)
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Activation {
    /// The activation of one value.
    #[inline(always)]
    pub fn eval(self, x: f32) -> f32 {
        match self {
            Activation::Identity => x,
            Activation::Relu => relu(x),
            Activation::Relu6 => clamp06(x),
            Activation::LeakyRelu(slope) => {
                if x > 0.0 {
                    x
                } else {
                    x * slope
                }
            }
            Activation::Sigmoid => sigmoid(x),
            Activation::Tanh => x.tanh(),
            Activation::Silu => x / (1.0 + (-x).exp()),
            Activation::HardSwish => x * clamp06(x + 3.0) / 6.0,
            Activation::HardSigmoid => clamp06(x + 3.0) / 6.0,
        }
    }

    /// Applies the activation to every element of `data` (single-threaded; callers tile).
    pub fn apply_slice(self, data: &mut [f32]) {
        macro_rules! each {
            ($f:expr) => {
                for v in data.iter_mut() {
                    *v = $f(*v);
                }
            };
        }
        match self {
            Activation::Identity => {}
            Activation::Relu => each!(relu),
            Activation::Relu6 => each!(clamp06),
            other => each!(|x| other.eval(x)),
        }
    }

    /// Applies the activation in place to a contiguous buffer, in parallel when it is large.
    pub fn apply_inplace(self, data: &mut [f32]) {
        if self == Activation::Identity {
            return;
        }
        if data.len() >= 2 * PAR_CHUNK {
            data.par_chunks_mut(PAR_CHUNK)
                .for_each(|c| self.apply_slice(c));
        } else {
            self.apply_slice(data);
        }
    }

    /// Applies the activation in place to an array of any layout.
    pub fn apply_array(self, mut x: ArrayViewMutD<'_, f32>) {
        if let Some(s) = x.as_slice_memory_order_mut() {
            self.apply_inplace(s);
        } else {
            x.mapv_inplace(|v| self.eval(v));
        }
    }

    /// A new array holding the activation of `x`.
    pub fn apply(self, x: ArrayViewD<'_, f32>) -> ArrayD<f32> {
        let mut out = x.as_standard_layout().into_owned();
        self.apply_array(out.view_mut());
        out
    }
}

/// PReLU as `torch.nn.functional.prelu`: `x > 0 ? x : w[c]·x`, where `c` is the index along
/// axis 1 (the channel of NCHW) and `weight` holds either one value for every channel or
/// one per channel.
pub fn prelu(x: ArrayViewD<'_, f32>, weight: ArrayView1<'_, f32>) -> Result<ArrayD<f32>> {
    let mut out = x.as_standard_layout().into_owned();
    prelu_inplace(out.view_mut(), weight)?;
    Ok(out)
}

/// [`prelu`] in place.
pub fn prelu_inplace(mut x: ArrayViewMutD<'_, f32>, weight: ArrayView1<'_, f32>) -> Result<()> {
    let nw = weight.len();
    if nw == 0 {
        return invalid("prelu", "empty weight");
    }
    if nw == 1 {
        let w = weight[0];
        x.mapv_inplace(|v| if v > 0.0 { v } else { w * v });
        return Ok(());
    }
    if x.ndim() < 2 || x.shape()[1] != nw {
        return shape_err(
            "prelu",
            format!(
                "{} weights need an input with {nw} channels on axis 1, got shape {:?}",
                nw,
                x.shape()
            ),
        );
    }
    for mut lane in x.axis_iter_mut(Axis(0)) {
        for (c, mut plane) in lane.axis_iter_mut(Axis(0)).enumerate() {
            let w = weight[c];
            plane.mapv_inplace(|v| if v > 0.0 { v } else { w * v });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, ArrayD, IxDyn};

    #[test]
    fn values() {
        let xs = [-4.0f32, -1.0, 0.0, 0.5, 3.0, 7.0];
        let r: Vec<f32> = xs.iter().map(|&x| Activation::Relu6.eval(x)).collect();
        assert_eq!(r, vec![0.0, 0.0, 0.0, 0.5, 3.0, 6.0]);
        let r: Vec<f32> = xs.iter().map(|&x| Activation::HardSwish.eval(x)).collect();
        assert_eq!(r, vec![0.0, -2.0 / 6.0, 0.0, 0.5 * 3.5 / 6.0, 3.0, 7.0]);
        assert_eq!(Activation::LeakyRelu(0.1).eval(-2.0), -0.2);
        assert!((Activation::Sigmoid.eval(0.0) - 0.5).abs() < 1e-7);
        assert!((Activation::Silu.eval(1.0) - 0.731_058_6).abs() < 1e-6);
        assert!(Activation::Relu.eval(f32::NAN).is_nan());
        assert!(Activation::Relu6.eval(f32::NAN).is_nan());
    }

    #[test]
    fn inplace_large_matches_scalar() {
        let mut v: Vec<f32> = (0..300_000)
            .map(|i| (i as f32 - 150_000.0) * 1e-4)
            .collect();
        let want: Vec<f32> = v.iter().map(|&x| Activation::Silu.eval(x)).collect();
        Activation::Silu.apply_inplace(&mut v);
        assert_eq!(v, want);
    }

    #[test]
    fn prelu_per_channel() {
        let x = ArrayD::from_shape_vec(IxDyn(&[1, 2, 2]), vec![-1.0, 2.0, -3.0, 4.0]).unwrap();
        let y = prelu(x.view(), arr1(&[0.5, 0.25]).view()).unwrap();
        assert_eq!(y.as_slice().unwrap(), &[-0.5, 2.0, -0.75, 4.0]);
        assert!(prelu(x.view(), arr1(&[0.5, 0.25, 1.0]).view()).is_err());
        assert!(prelu(x.view(), arr1(&[]).view()).is_err());
        let y = prelu(x.view(), arr1(&[0.1]).view()).unwrap();
        assert_eq!(y.as_slice().unwrap()[0], -0.1);
    }
}
