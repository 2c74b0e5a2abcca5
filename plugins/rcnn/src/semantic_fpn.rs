//! The semantic-FPN merge of Panoptic FPN (Kirillov et al.) as Detectron2 builds it twice:
//! `SemSegFPNHead` (`modeling/meta_arch/semantic_seg.py`, with GroupNorm) and DensePose's
//! `Decoder` (`projects/DensePose/.../roi_head.py`, without a norm). Per FPN level (p2..p5,
//! strides 4..32), `max(1, log2(stride / 4))` 3x3 convolutions, each followed by the norm (if
//! any), ReLU, and a 2x bilinear upsampling (`align_corners=False`) while the level is coarser
//! than 1/4; the levels summed; a 1x1 `predictor`. Weight names under `module`:
//! `{module}.{level}.{0,2,4}` (with `.norm` for GroupNorm) and `{module}.predictor`.

use kernels::layers::resize::interpolate_scale;
use kernels::layers::ResizeMode;
use kernels::layers::{Activation, Conv2d, Conv2dParams};
use kernels::weights::Binder;
use ndarray::{Array4, ArrayView4};

use vision_common::{conv_bias, ConvGroupNorm, LayerContext, ModelError, GN_GROUPS};

const BILINEAR: ResizeMode = ResizeMode::Bilinear {
    align_corners: false,
};

/// The output stride of the merge (`COMMON_STRIDE`).
pub const COMMON_STRIDE: usize = 4;

/// One 3x3 convolution of a level's tower and its ReLU, with GroupNorm between them when
/// normalised.
#[derive(Debug)]
enum Block {
    Normalised(ConvGroupNorm),
    Plain(Conv2d),
}

impl Block {
    fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>, ModelError> {
        match self {
            Block::Normalised(c) => c.forward(x),
            Block::Plain(c) => c.forward(x).ctx(|| "convolution".into()),
        }
    }
}

/// The merge with its weights bound.
#[derive(Debug)]
pub struct SemanticFpn {
    towers: Vec<Vec<Block>>,
    /// Per level: whether its convolutions are followed by a 2x upsampling.
    upsample: Vec<bool>,
    predictor: Conv2d,
    module: String,
}

/// `module.name`, or `name` for the binder's own level (`module` empty).
fn join(module: &str, name: &str) -> String {
    if module.is_empty() {
        name.to_string()
    } else {
        format!("{module}.{name}")
    }
}

/// The stride of the `index`-th level from p2.
fn level_stride(index: usize) -> usize {
    COMMON_STRIDE << index
}

impl SemanticFpn {
    /// Binds `{module}.*` (or the binder's own tensors when `module` is empty): `in_features` are the levels from p2, `channels` their width,
    /// `conv_dims` the towers' width, `out_channels` the predictor's, `group_norm` whether
    /// the convolutions are normalised (and then have no bias).
    pub fn bind(
        b: &mut Binder<'_>,
        module: &str,
        in_features: &[String],
        channels: usize,
        conv_dims: usize,
        out_channels: usize,
        group_norm: bool,
    ) -> Result<SemanticFpn, ModelError> {
        if group_norm && !conv_dims.is_multiple_of(GN_GROUPS) {
            return Err(ModelError::input(format!(
                "{module}: GroupNorm needs a width divisible by {GN_GROUPS}, got {conv_dims}"
            )));
        }
        let mut towers = Vec::new();
        let mut upsample = Vec::new();
        for (i, level) in in_features.iter().enumerate() {
            let stride = level_stride(i);
            let length = (stride.ilog2() as usize)
                .saturating_sub(COMMON_STRIDE.ilog2() as usize)
                .max(1);
            let up = stride != COMMON_STRIDE;
            let mut blocks = Vec::new();
            for k in 0..length {
                // nn.Sequential(conv, Upsample, conv, Upsample, ...) or just (conv,).
                let index = if up { 2 * k } else { k };
                let cin = if k == 0 { channels } else { conv_dims };
                let name = join(module, &format!("{level}.{index}"));
                let params = Conv2dParams::default().padding(1);
                let block = if group_norm {
                    Block::Normalised(ConvGroupNorm::bind(b, &name, cin, conv_dims, 3, true)?)
                } else {
                    Block::Plain(
                        conv_bias(b, &name, cin, conv_dims, 3, params)?
                            .with_activation(Activation::Relu),
                    )
                };
                blocks.push(block);
            }
            towers.push(blocks);
            upsample.push(up);
        }
        let predictor = conv_bias(
            b,
            &join(module, "predictor"),
            conv_dims,
            out_channels,
            1,
            Conv2dParams::default(),
        )?;
        Ok(SemanticFpn {
            towers,
            upsample,
            predictor,
            module: module.to_string(),
        })
    }

    /// The merged map at 1/4 of the input, `[1, out_channels, H/4, W/4]`.
    pub fn forward(&self, levels: &[ArrayView4<'_, f32>]) -> Result<Array4<f32>, ModelError> {
        let module = &self.module;
        let mut sum: Option<Array4<f32>> = None;
        for (l, (blocks, level)) in self.towers.iter().zip(levels).enumerate() {
            let mut x: Option<Array4<f32>> = None;
            for (k, block) in blocks.iter().enumerate() {
                let input = x.as_ref().map_or(level.view(), |a| a.view());
                let mut y = block.forward(input).map_err(|e| {
                    ModelError::input(format!("{module} level {l}, convolution {k}: {e}"))
                })?;
                if self.upsample[l] {
                    y = interpolate_scale(y.view(), (2.0, 2.0), BILINEAR, false)
                        .ctx(|| format!("{module} level {l}, upsampling {k}"))?;
                }
                x = Some(y);
            }
            let x = x.ok_or_else(|| {
                ModelError::input(format!("{module} level {l}: a tower without convolutions"))
            })?;
            sum = Some(match sum {
                None => x,
                Some(acc) if acc.dim() == x.dim() => acc + &x,
                Some(acc) => {
                    return Err(ModelError::input(format!(
                        "{module}: level {l} upsamples to {:?}, level 0 is {:?}; the levels must be p2..p5 of one FPN (strides 4..32, image padded to 32)",
                        x.dim(),
                        acc.dim()
                    )))
                }
            });
        }
        let sum = sum.ok_or_else(|| ModelError::input(format!("{module}: no feature levels")))?;
        self.predictor
            .forward(sum.view())
            .ctx(|| format!("{module}.predictor"))
    }
}
