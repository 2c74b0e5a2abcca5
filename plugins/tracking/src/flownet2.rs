//! `flownet2`: the optical flow that VPSNet's feature fusion warps with, FlowNet2 as
//! `PanopticFuseTrack.compute_flow` runs it (mcahny/vps @ 138503ed:
//! `mmdet/models/flow_modules/flownet2.py`, `FlowNetC.py`, `FlowNetS.py`, `FlowNetSD.py`,
//! `FlowNetFusion.py`, `submodules.py`; the CUDA extensions `correlation_package`,
//! `resample2d_package`, `channelnorm_package`; `mmdet/models/detectors/panoptic_fusetrack.py`
//! `compute_flow`, called by `simple_test` with `scale_factor=0.25`).
//!
//! Per frame, with the frame's image and its reference (the stream's previous frame; the
//! first frame of a stream is its own reference, as in the official test):
//! 1. Both network inputs are de-normalised to RGB in 0..255 (`denormalize`: `x·std + mean`
//!    per channel, the config's `img_norm_cfg`), stacked, and zero-padded at the bottom and
//!    right to a multiple of 64 (the official code pads only its two known sizes, 800x1600 by
//!    32 rows and 64 columns and 200x400 by 56 and 48, and otherwise requires a multiple of
//!    64; both are this rule).
//! 2. FlowNet2 (`rgb_max` 255, `div_flow` 20, no batch norm): the per-channel mean of both
//!    padded images is subtracted and the result divided by 255 (`x1`, `x2`); then
//!    - FlowNetC on `x1`, `x2`: three shared strided convolutions, the correlation of the two
//!      (`kernels::ops::correlation`, 441 displacements) with LeakyReLU 0.1 beside a 1x1
//!      redirection of `x1`'s, an encoder to 1/64 and a decoder of transposed convolutions
//!      predicting a flow at 1/4; `flow·20` upsampled 4x (bilinear);
//!    - FlowNetS twice, each on `[x1, x2, x2 warped by the last flow, flow / 20, |x1 -
//!      warped|]` (12 channels), the second flow upsampled 4x by nearest neighbour;
//!    - FlowNetSD on `[x1, x2]`, its flow divided (not multiplied) by 20 before the 4x nearest
//!      upsampling, as the official code does;
//!    - FlowNetFusion on `[x1, flow_sd, flow_s2, |flow_sd|, |flow_s2|, |x1 - x2 warped by
//!      flow_sd|, |x1 - x2 warped by flow_s2|]`: the flow at full resolution.
//!
//!    Warping is `Resample2d`: `x2` sampled bilinearly at `(x + u, y + v)` with the
//!    neighbours' indices clamped to the image (a position outside reads the border), which
//!    is bilinear sampling at the position clamped to the image:
//!    `kernels::layers::grid_sample::sample`. `|·|` is `ChannelNorm`, the L2 norm over
//!    channels. LeakyReLU slopes are 0.1; every convolution has a bias; FlowNetS's flow
//!    upsamplings have none.
//! 3. The flow is cropped to the network input's size and resized by `scale_factor` (0.25:
//!    P2's size): bilinear, `align_corners=False`, and multiplied by `scale_factor`, so it is
//!    in the pixels of that size.
//!
//! Inputs and outputs:
//! - `image`: the pre-processed image the backbone receives (`tensor` `[3, H, W]`,
//!   normalised with `mean` / `std`, RGB; padded, as mmdet's `Pad(size_divisor=32)` leaves
//!   it: the official code feeds the padded tensor to FlowNet2 too).
//! - Output `flow`: `tensor` f32 `[2, H·s, W·s]` (x then y): for each pixel of this frame,
//!   where its content is in the reference frame, the flow `vpsnet_fusion` warps the
//!   reference's features with (`flowR2T`).
//!
//! Differences from the official code, none of which changes a result:
//! - The resize by `scale_factor` uses the output/input size ratio as torch 1.4 (the
//!   repository's) did; torch ≥ 1.6 uses `1 / scale_factor`. They differ only when the size
//!   is not a multiple of `1 / scale_factor`, which mmdet's padding to 32 rules out.
//! - The per-channel mean is summed in f64 (torch sums f32 in blocks): a rounding difference.
//!
//! Weights: PanopticFuseTrack's names, `flownet2.{flownetc, flownets_1, flownets_2,
//! flownets_d, flownetfusion}.*`; NVIDIA's `FlowNet2_checkpoint.pth.tar` (which
//! PanopticFuseTrack loads) names the same tensors without the `flownet2.` prefix, and binds
//! with the prefix falling back to none.

use kernels::layers::grid_sample::sample;
use kernels::layers::resize::resize;
use kernels::layers::{
    Activation, Conv2d, Conv2dParams, ConvTranspose2d, ConvTranspose2dParams, ResizeMode,
};
use kernels::ops::{correlation, CorrelationParams};
use kernels::weights::{Binder, Weights};
use ndarray::{concatenate, s, Array3, Array4, ArrayView3, ArrayView4, Axis, Ix1, Ix4, Zip};
use plugin_sdk::{
    FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, StreamState, Value,
};
use vision_common::{
    conv_bias, f32_value, float_param, image_input, nchw, resolve_prefix, weights_param,
    LayerContext, ModelError,
};

const NODE: &str = "flownet2";

const LEAKY: Activation = Activation::LeakyRelu(0.1);

const BILINEAR: ResizeMode = ResizeMode::Bilinear {
    align_corners: false,
};

/// FlowNet2 takes inputs whose sides are multiples of this (its encoders stride to 1/64).
const MULTIPLE: usize = 64;

fn run(c: &Conv2d, x: ArrayView4<'_, f32>, name: &str) -> Result<Array4<f32>, ModelError> {
    c.forward(x).ctx(|| name.to_string())
}

fn cat(parts: &[ArrayView4<'_, f32>], what: &str) -> Result<Array4<f32>, ModelError> {
    concatenate(Axis(1), parts).map_err(|e| ModelError::input(format!("{NODE}: {what}: {e}")))
}

/// `submodules.conv`: `{name}.0`, a convolution with bias (padding `(k - 1) / 2`) and
/// LeakyReLU 0.1.
fn conv(
    b: &mut Binder<'_>,
    name: &str,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
) -> Result<Conv2d, ModelError> {
    let p = Conv2dParams::default().stride(stride).padding((k - 1) / 2);
    Ok(conv_bias(b, &format!("{name}.0"), cin, cout, k, p)?.with_activation(LEAKY))
}

/// `submodules.i_conv`: `{name}.0`, a 3x3 convolution with bias and no activation.
fn i_conv(b: &mut Binder<'_>, name: &str, cin: usize, cout: usize) -> Result<Conv2d, ModelError> {
    conv_bias(
        b,
        &format!("{name}.0"),
        cin,
        cout,
        3,
        Conv2dParams::default().padding(1),
    )
}

/// `submodules.predict_flow`: `{name}`, a 3x3 convolution to 2 channels with bias.
fn predict_flow(b: &mut Binder<'_>, name: &str, cin: usize) -> Result<Conv2d, ModelError> {
    conv_bias(b, name, cin, 2, 3, Conv2dParams::default().padding(1))
}

/// A `ConvTranspose2d(cin, cout, 4, 2, 1)` bound from `{name}.weight` (`[cin, cout, 4, 4]`)
/// and, with `bias`, `{name}.bias`.
fn transposed(
    b: &mut Binder<'_>,
    name: &str,
    cin: usize,
    cout: usize,
    bias: bool,
    act: Activation,
) -> Result<ConvTranspose2d, ModelError> {
    let w = b.take(&format!("{name}.weight"), &[cin, cout, 4, 4]);
    let bias_t = bias.then(|| b.take(&format!("{name}.bias"), &[cout]));
    let w4 = w
        .view::<f32>()?
        .into_dimensionality::<Ix4>()
        .map_err(|e| ModelError::input(e.to_string()))?;
    let b1 = match &bias_t {
        Some(t) => Some(
            t.view::<f32>()?
                .into_dimensionality::<Ix1>()
                .map_err(|e| ModelError::input(e.to_string()))?,
        ),
        None => None,
    };
    let p = ConvTranspose2dParams::default().stride(2).padding(1);
    Ok(ConvTranspose2d::new(w4, b1, p)
        .ctx(|| name.to_string())?
        .with_activation(act))
}

/// `submodules.deconv`: `{name}.0`, `ConvTranspose2d(cin, cout, 4, 2, 1)` with bias and
/// LeakyReLU 0.1.
fn deconv(
    b: &mut Binder<'_>,
    name: &str,
    cin: usize,
    cout: usize,
) -> Result<ConvTranspose2d, ModelError> {
    transposed(b, &format!("{name}.0"), cin, cout, true, LEAKY)
}

fn run_t(
    c: &ConvTranspose2d,
    x: ArrayView4<'_, f32>,
    name: &str,
) -> Result<Array4<f32>, ModelError> {
    c.forward(x).ctx(|| name.to_string())
}

/// The decoder that FlowNetC, FlowNetS and FlowNetSD share: from the encoder's outputs at
/// 1/64 .. 1/4 (`conv6`, `conv5`, `conv4`, `conv3`, `conv2`), a flow at each scale, each
/// level concatenating `[skip, deconv(previous), upsampled flow]`; the flow at 1/4 (`flow2`)
/// is the result.
#[derive(Debug)]
struct Decoder {
    name: String,
    /// `predict_flow6` .. `predict_flow2`.
    predict: Vec<Conv2d>,
    /// `upsampled_flow6_to_5` .. `upsampled_flow3_to_2`.
    up_flow: Vec<ConvTranspose2d>,
    /// `deconv5` .. `deconv2`.
    deconv: Vec<ConvTranspose2d>,
    /// FlowNetSD's `inter_conv5` .. `inter_conv2`, between each concatenation and its flow.
    inter: Option<Vec<Conv2d>>,
}

impl Decoder {
    /// `skips`: the channels of `conv6` .. `conv2`; `up_bias`: whether the flow upsamplings
    /// have a bias (FlowNetS's do not).
    fn bind(
        b: &mut Binder<'_>,
        name: &str,
        skips: [usize; 5],
        up_bias: bool,
        inter: bool,
    ) -> Result<Decoder, ModelError> {
        let deconv_out = [512, 256, 128, 64];
        let inter_out = [512, 256, 128, 64];
        let mut predict = vec![predict_flow(b, &format!("{name}.predict_flow6"), skips[0])?];
        let mut up_flow = Vec::new();
        let mut deconvs = Vec::new();
        let mut inters = Vec::new();
        let mut x_channels = skips[0];
        for i in 0..4 {
            let (from, to) = (6 - i, 5 - i);
            up_flow.push(transposed(
                b,
                &format!("{name}.upsampled_flow{from}_to_{to}"),
                2,
                2,
                up_bias,
                Activation::Identity,
            )?);
            deconvs.push(deconv(
                b,
                &format!("{name}.deconv{to}"),
                x_channels,
                deconv_out[i],
            )?);
            let concat = skips[i + 1] + deconv_out[i] + 2;
            let flow_in = if inter {
                inters.push(i_conv(
                    b,
                    &format!("{name}.inter_conv{to}"),
                    concat,
                    inter_out[i],
                )?);
                inter_out[i]
            } else {
                concat
            };
            predict.push(predict_flow(
                b,
                &format!("{name}.predict_flow{to}"),
                flow_in,
            )?);
            x_channels = concat;
        }
        Ok(Decoder {
            name: name.to_string(),
            predict,
            up_flow,
            deconv: deconvs,
            inter: inter.then_some(inters),
        })
    }

    /// `flow2` from `[conv6, conv5, conv4, conv3, conv2]`.
    fn forward(&self, skips: [&Array4<f32>; 5]) -> Result<Array4<f32>, ModelError> {
        let n = &self.name;
        let mut flow = run(
            &self.predict[0],
            skips[0].view(),
            &format!("{n}.predict_flow6"),
        )?;
        let mut x = skips[0].clone();
        for i in 0..4 {
            let (from, to) = (6 - i, 5 - i);
            let flow_up = run_t(
                &self.up_flow[i],
                flow.view(),
                &format!("{n}.upsampled_flow{from}_to_{to}"),
            )?;
            let d = run_t(&self.deconv[i], x.view(), &format!("{n}.deconv{to}"))?;
            let concat = cat(
                &[skips[i + 1].view(), d.view(), flow_up.view()],
                &format!("{n} concat{to}"),
            )?;
            flow = match &self.inter {
                Some(inter) => {
                    let y = run(&inter[i], concat.view(), &format!("{n}.inter_conv{to}"))?;
                    run(
                        &self.predict[i + 1],
                        y.view(),
                        &format!("{n}.predict_flow{to}"),
                    )?
                }
                None => run(
                    &self.predict[i + 1],
                    concat.view(),
                    &format!("{n}.predict_flow{to}"),
                )?,
            };
            x = concat;
        }
        Ok(flow)
    }
}

/// A chain of `submodules.conv` layers: `(name, cin, cout, kernel, stride)`.
#[derive(Debug)]
struct Chain {
    convs: Vec<(String, Conv2d)>,
}

impl Chain {
    fn bind(
        b: &mut Binder<'_>,
        prefix: &str,
        layers: &[(&str, usize, usize, usize, usize)],
    ) -> Result<Chain, ModelError> {
        let convs = layers
            .iter()
            .map(|&(name, cin, cout, k, s)| {
                let full = format!("{prefix}.{name}");
                Ok((full.clone(), conv(b, &full, cin, cout, k, s)?))
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(Chain { convs })
    }

    /// The output of every layer, in order.
    fn forward_all(&self, x: ArrayView4<'_, f32>) -> Result<Vec<Array4<f32>>, ModelError> {
        let mut outs: Vec<Array4<f32>> = Vec::with_capacity(self.convs.len());
        for (name, c) in &self.convs {
            let y = match outs.last() {
                Some(prev) => run(c, prev.view(), name)?,
                None => run(c, x, name)?,
            };
            outs.push(y);
        }
        Ok(outs)
    }
}

/// FlowNetC (`batchNorm=False`).
#[derive(Debug)]
struct FlowNetC {
    /// `conv1`, `conv2`, `conv3`, run on each image.
    stem: Chain,
    conv_redir: Conv2d,
    /// `conv3_1`, `conv4`, `conv4_1`, `conv5`, `conv5_1`, `conv6`, `conv6_1`.
    trunk: Chain,
    decoder: Decoder,
}

impl FlowNetC {
    fn bind(b: &mut Binder<'_>, p: &str) -> Result<FlowNetC, ModelError> {
        let stem = Chain::bind(
            b,
            p,
            &[
                ("conv1", 3, 64, 7, 2),
                ("conv2", 64, 128, 5, 2),
                ("conv3", 128, 256, 5, 2),
            ],
        )?;
        let conv_redir = conv(b, &format!("{p}.conv_redir"), 256, 32, 1, 1)?;
        let corr_channels = CorrelationParams::flownet_c().out_channels();
        let trunk = Chain::bind(
            b,
            p,
            &[
                ("conv3_1", 32 + corr_channels, 256, 3, 1),
                ("conv4", 256, 512, 3, 2),
                ("conv4_1", 512, 512, 3, 1),
                ("conv5", 512, 512, 3, 2),
                ("conv5_1", 512, 512, 3, 1),
                ("conv6", 512, 1024, 3, 2),
                ("conv6_1", 1024, 1024, 3, 1),
            ],
        )?;
        let decoder = Decoder::bind(b, p, [1024, 512, 512, 256, 128], true, false)?;
        Ok(FlowNetC {
            stem,
            conv_redir,
            trunk,
            decoder,
        })
    }

    /// `flow2` of `x` (`[1, 6, H, W]`: the two images).
    fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>, ModelError> {
        let a = self.stem.forward_all(x.slice(s![.., 0..3, .., ..]))?;
        let b = self.stem.forward_all(x.slice(s![.., 3..6, .., ..]))?;
        let corr = correlation(a[2].view(), b[2].view(), CorrelationParams::flownet_c())
            .map_err(|e| ModelError::input(format!("{NODE}: flownetc.corr: {e}")))?
            .mapv(|v| LEAKY.eval(v));
        let redir = run(&self.conv_redir, a[2].view(), "flownetc.conv_redir")?;
        let t = self
            .trunk
            .forward_all(cat(&[redir.view(), corr.view()], "flownetc in_conv3_1")?.view())?;
        // conv3_1, conv4_1, conv5_1, conv6_1 and conv2 of the first image.
        self.decoder.forward([&t[6], &t[4], &t[2], &t[0], &a[1]])
    }
}

/// FlowNetS (`input_channels=12`, `batchNorm=False`).
#[derive(Debug)]
struct FlowNetS {
    encoder: Chain,
    decoder: Decoder,
}

impl FlowNetS {
    fn bind(b: &mut Binder<'_>, p: &str) -> Result<FlowNetS, ModelError> {
        let encoder = Chain::bind(
            b,
            p,
            &[
                ("conv1", 12, 64, 7, 2),
                ("conv2", 64, 128, 5, 2),
                ("conv3", 128, 256, 5, 2),
                ("conv3_1", 256, 256, 3, 1),
                ("conv4", 256, 512, 3, 2),
                ("conv4_1", 512, 512, 3, 1),
                ("conv5", 512, 512, 3, 2),
                ("conv5_1", 512, 512, 3, 1),
                ("conv6", 512, 1024, 3, 2),
                ("conv6_1", 1024, 1024, 3, 1),
            ],
        )?;
        let decoder = Decoder::bind(b, p, [1024, 512, 512, 256, 128], false, false)?;
        Ok(FlowNetS { encoder, decoder })
    }

    fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>, ModelError> {
        let e = self.encoder.forward_all(x)?;
        self.decoder.forward([&e[9], &e[7], &e[5], &e[3], &e[1]])
    }
}

/// FlowNetSD (`batchNorm=False`): small displacements, stride 1 first and `inter_conv`s.
#[derive(Debug)]
struct FlowNetSD {
    encoder: Chain,
    decoder: Decoder,
}

impl FlowNetSD {
    fn bind(b: &mut Binder<'_>, p: &str) -> Result<FlowNetSD, ModelError> {
        let encoder = Chain::bind(
            b,
            p,
            &[
                ("conv0", 6, 64, 3, 1),
                ("conv1", 64, 64, 3, 2),
                ("conv1_1", 64, 128, 3, 1),
                ("conv2", 128, 128, 3, 2),
                ("conv2_1", 128, 128, 3, 1),
                ("conv3", 128, 256, 3, 2),
                ("conv3_1", 256, 256, 3, 1),
                ("conv4", 256, 512, 3, 2),
                ("conv4_1", 512, 512, 3, 1),
                ("conv5", 512, 512, 3, 2),
                ("conv5_1", 512, 512, 3, 1),
                ("conv6", 512, 1024, 3, 2),
                ("conv6_1", 1024, 1024, 3, 1),
            ],
        )?;
        let decoder = Decoder::bind(b, p, [1024, 512, 512, 256, 128], true, true)?;
        Ok(FlowNetSD { encoder, decoder })
    }

    fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>, ModelError> {
        let e = self.encoder.forward_all(x)?;
        self.decoder.forward([&e[12], &e[10], &e[8], &e[6], &e[4]])
    }
}

/// FlowNetFusion (`batchNorm=False`): the full-resolution flow from the two flows and their
/// errors.
#[derive(Debug)]
struct FlowNetFusion {
    /// `conv0`, `conv1`, `conv1_1`, `conv2`, `conv2_1`.
    encoder: Chain,
    predict_flow2: Conv2d,
    predict_flow1: Conv2d,
    predict_flow0: Conv2d,
    upsampled_flow2_to_1: ConvTranspose2d,
    upsampled_flow1_to_0: ConvTranspose2d,
    deconv1: ConvTranspose2d,
    deconv0: ConvTranspose2d,
    inter_conv1: Conv2d,
    inter_conv0: Conv2d,
}

impl FlowNetFusion {
    fn bind(b: &mut Binder<'_>, p: &str) -> Result<FlowNetFusion, ModelError> {
        let encoder = Chain::bind(
            b,
            p,
            &[
                ("conv0", 11, 64, 3, 1),
                ("conv1", 64, 64, 3, 2),
                ("conv1_1", 64, 128, 3, 1),
                ("conv2", 128, 128, 3, 2),
                ("conv2_1", 128, 128, 3, 1),
            ],
        )?;
        let up = |b: &mut Binder<'_>, name: &str| {
            transposed(b, &format!("{p}.{name}"), 2, 2, true, Activation::Identity)
        };
        Ok(FlowNetFusion {
            encoder,
            predict_flow2: predict_flow(b, &format!("{p}.predict_flow2"), 128)?,
            predict_flow1: predict_flow(b, &format!("{p}.predict_flow1"), 32)?,
            predict_flow0: predict_flow(b, &format!("{p}.predict_flow0"), 16)?,
            upsampled_flow2_to_1: up(b, "upsampled_flow2_to_1")?,
            upsampled_flow1_to_0: up(b, "upsampled_flow1_to_0")?,
            deconv1: deconv(b, &format!("{p}.deconv1"), 128, 32)?,
            deconv0: deconv(b, &format!("{p}.deconv0"), 162, 16)?,
            inter_conv1: i_conv(b, &format!("{p}.inter_conv1"), 162, 32)?,
            inter_conv0: i_conv(b, &format!("{p}.inter_conv0"), 82, 16)?,
        })
    }

    fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>, ModelError> {
        const P: &str = "flownetfusion";
        let e = self.encoder.forward_all(x)?;
        let (conv0, conv1, conv2) = (&e[0], &e[2], &e[4]);
        let flow2 = run(
            &self.predict_flow2,
            conv2.view(),
            "flownetfusion.predict_flow2",
        )?;
        let flow2_up = run_t(&self.upsampled_flow2_to_1, flow2.view(), P)?;
        let deconv1 = run_t(&self.deconv1, conv2.view(), "flownetfusion.deconv1")?;
        let concat1 = cat(&[conv1.view(), deconv1.view(), flow2_up.view()], P)?;
        let inter1 = run(
            &self.inter_conv1,
            concat1.view(),
            "flownetfusion.inter_conv1",
        )?;
        let flow1 = run(
            &self.predict_flow1,
            inter1.view(),
            "flownetfusion.predict_flow1",
        )?;
        let flow1_up = run_t(&self.upsampled_flow1_to_0, flow1.view(), P)?;
        let deconv0 = run_t(&self.deconv0, concat1.view(), "flownetfusion.deconv0")?;
        let concat0 = cat(&[conv0.view(), deconv0.view(), flow1_up.view()], P)?;
        let inter0 = run(
            &self.inter_conv0,
            concat0.view(),
            "flownetfusion.inter_conv0",
        )?;
        run(
            &self.predict_flow0,
            inter0.view(),
            "flownetfusion.predict_flow0",
        )
    }
}

/// `Resample2d` (bilinear, kernel_size 1): `x` (`[1, C, H, W]`) sampled at `(y + v, x + u)`
/// of `flow` (`[1, 2, H, W]`), the neighbours' indices clamped to the image. Clamping the
/// indices while keeping the fraction gives the border pixel's value (its two weights add up
/// to 1), which is what sampling at the clamped position gives: one bilinear sampler serves
/// this and `grid_sample`.
pub fn resample2d(
    x: ArrayView4<'_, f32>,
    flow: ArrayView4<'_, f32>,
) -> Result<Array4<f32>, ModelError> {
    let (n, c, h, w) = x.dim();
    let (fn_, two, fh, fw) = flow.dim();
    if n != 1 || fn_ != 1 || two != 2 || (fh, fw) != (h, w) {
        return Err(ModelError::input(format!(
            "{NODE}: resample2d of {:?} by a flow of {:?}",
            x.dim(),
            flow.dim()
        )));
    }
    // The positions in f32 (the kernel's scalar_t), clamped to the image.
    let (ymax, xmax) = ((h - 1) as f32, (w - 1) as f32);
    let pos = Array3::from_shape_fn((h, w, 2), |(y, xx, k)| {
        if k == 0 {
            (y as f32 + flow[[0, 1, y, xx]]).clamp(0.0, ymax)
        } else {
            (xx as f32 + flow[[0, 0, y, xx]]).clamp(0.0, xmax)
        }
    });
    let mut out = Array4::zeros((1, c, h, w));
    Zip::from(out.slice_mut(s![0, .., .., ..]).outer_iter_mut())
        .and(x.slice(s![0, .., .., ..]).outer_iter())
        .for_each(|mut dst, src| {
            for ((y, xx), v) in dst.indexed_iter_mut() {
                *v = sample(src, pos[[y, xx, 0]], pos[[y, xx, 1]]);
            }
        });
    Ok(out)
}

/// `ChannelNorm` (norm_deg 2): `sqrt(sum_c x²)`, `[1, 1, H, W]`, summed channel after
/// channel as the CUDA kernel does.
pub fn channel_norm(x: ArrayView4<'_, f32>) -> Array4<f32> {
    let (n, _, h, w) = x.dim();
    let mut out = Array4::zeros((n, 1, h, w));
    for (mut dst, src) in out.outer_iter_mut().zip(x.outer_iter()) {
        let mut acc = dst.index_axis_mut(Axis(0), 0);
        for plane in src.outer_iter() {
            Zip::from(&mut acc)
                .and(&plane)
                .for_each(|a, &v| *a += v * v);
        }
        acc.mapv_inplace(f32::sqrt);
    }
    out
}

/// The settings of [`FlowNet2`] and of `compute_flow`; the defaults are VPSNet's.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowConfig {
    /// The normalisation of the image input (`img_norm_cfg`), undone before FlowNet2.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// `args.rgb_max`.
    pub rgb_max: f32,
    /// FlowNet2's `div_flow`.
    pub div_flow: f32,
    /// `compute_flow`'s `scale_factor` (0.25 in `simple_test`; 1 keeps the full resolution).
    pub scale_factor: f32,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            mean: [123.675, 116.28, 103.53],
            std: [58.395, 57.12, 57.375],
            rgb_max: 255.0,
            div_flow: 20.0,
            scale_factor: 0.25,
        }
    }
}

/// What one flow computed (the intermediates the reference test compares). The flows at
/// 1/4 are the sub-networks' `flow2`, before FlowNet2 scales and upsamples them.
#[derive(Clone, Debug)]
pub struct FlowTrace {
    pub flownetc: Array4<f32>,
    pub flownets_1: Array4<f32>,
    pub flownets_2: Array4<f32>,
    pub flownets_d: Array4<f32>,
    /// FlowNetFusion's flow, at the padded input's full resolution.
    pub flownetfusion: Array4<f32>,
    /// `compute_flow`'s result, `[1, 2, H·s, W·s]`.
    pub flow: Array4<f32>,
}

/// FlowNet2 with its weights bound, and `compute_flow` around it.
#[derive(Debug)]
pub struct FlowNet2 {
    config: FlowConfig,
    flownetc: FlowNetC,
    flownets_1: FlowNetS,
    flownets_2: FlowNetS,
    flownets_d: FlowNetSD,
    flownetfusion: FlowNetFusion,
}

impl FlowNet2 {
    /// Binds FlowNet2 under `prefix` (`"flownet2."` in a VPSNet checkpoint; NVIDIA's
    /// FlowNet2 checkpoint binds with the prefix falling back to none).
    pub fn from_weights(
        weights: &Weights,
        prefix: &str,
        config: FlowConfig,
    ) -> Result<FlowNet2, ModelError> {
        if !(config.scale_factor > 0.0 && config.scale_factor <= 1.0) {
            return Err(ModelError::param(
                "scale_factor",
                format!("must be in (0, 1], got {}", config.scale_factor),
            ));
        }
        if !(config.rgb_max.is_finite() && config.rgb_max != 0.0) {
            return Err(ModelError::param(
                "rgb_max",
                format!("must be a non-zero number, got {}", config.rgb_max),
            ));
        }
        if !(config.div_flow.is_finite() && config.div_flow != 0.0) {
            return Err(ModelError::param(
                "div_flow",
                format!("must be a non-zero number, got {}", config.div_flow),
            ));
        }
        let prefix = resolve_prefix(weights, prefix, &["flownetc.conv1.0.weight"]);
        let mut b = weights.binder(&prefix);
        let net = FlowNet2 {
            flownetc: FlowNetC::bind(&mut b, "flownetc")?,
            flownets_1: FlowNetS::bind(&mut b, "flownets_1")?,
            flownets_2: FlowNetS::bind(&mut b, "flownets_2")?,
            flownets_d: FlowNetSD::bind(&mut b, "flownets_d")?,
            flownetfusion: FlowNetFusion::bind(&mut b, "flownetfusion")?,
            config,
        };
        b.finish()?;
        Ok(net)
    }

    pub fn config(&self) -> &FlowConfig {
        &self.config
    }

    /// `[x1, x2, x2 warped by flow, flow / div_flow, |x1 - warped|]`, FlowNetS's input.
    fn warped_input(
        &self,
        x: ArrayView4<'_, f32>,
        flow: &Array4<f32>,
        what: &str,
    ) -> Result<Array4<f32>, ModelError> {
        let (x1, x2) = (x.slice(s![.., 0..3, .., ..]), x.slice(s![.., 3..6, .., ..]));
        let resampled = resample2d(x2, flow.view())?;
        let norm_diff = channel_norm((&x1 - &resampled).view());
        let scaled = flow.mapv(|v| v / self.config.div_flow);
        cat(
            &[x, resampled.view(), scaled.view(), norm_diff.view()],
            what,
        )
    }

    /// `|x1 - x2 warped by flow|`.
    fn warp_error(
        &self,
        x: ArrayView4<'_, f32>,
        flow: &Array4<f32>,
    ) -> Result<Array4<f32>, ModelError> {
        let (x1, x2) = (x.slice(s![.., 0..3, .., ..]), x.slice(s![.., 3..6, .., ..]));
        let resampled = resample2d(x2, flow.view())?;
        Ok(channel_norm((&x1 - &resampled).view()))
    }

    /// `FlowNet2.forward` on the two RGB images in 0..255, `[1, 3, H, W]` each (`H`, `W`
    /// multiples of 64): the full-resolution flow and the sub-networks' flows.
    fn forward_rgb(
        &self,
        rgb: ArrayView4<'_, f32>,
        ref_rgb: ArrayView4<'_, f32>,
    ) -> Result<[Array4<f32>; 5], ModelError> {
        let (_, _, h, w) = rgb.dim();
        let div = self.config.div_flow;
        // x = (inputs - rgb_mean) / rgb_max, the mean per channel over both images.
        let mut x = cat(&[rgb, ref_rgb], "inputs")?;
        for k in 0..3 {
            let sum: f64 = rgb
                .slice(s![0, k, .., ..])
                .iter()
                .chain(ref_rgb.slice(s![0, k, .., ..]).iter())
                .map(|&v| v as f64)
                .sum();
            let mean = (sum / (2 * h * w) as f64) as f32;
            for plane in [k, k + 3] {
                x.slice_mut(s![0, plane, .., ..])
                    .mapv_inplace(|v| (v - mean) / self.config.rgb_max);
            }
        }
        let up4 = |f: &Array4<f32>, mode: ResizeMode, what: &str| {
            resize(f.view(), (h, w), mode).ctx(|| format!("{what} (4x upsampling)"))
        };

        let c_flow2 = self.flownetc.forward(x.view())?;
        let c_flow = up4(&c_flow2.mapv(|v| v * div), BILINEAR, "flownetc")?;
        let concat1 = self.warped_input(x.view(), &c_flow, "concat1")?;

        let s1_flow2 = self.flownets_1.forward(concat1.view())?;
        let s1_flow = up4(&s1_flow2.mapv(|v| v * div), BILINEAR, "flownets_1")?;
        let concat2 = self.warped_input(x.view(), &s1_flow, "concat2")?;

        let s2_flow2 = self.flownets_2.forward(concat2.view())?;
        let s2_flow = up4(
            &s2_flow2.mapv(|v| v * div),
            ResizeMode::Nearest,
            "flownets_2",
        )?;
        let norm_s2 = channel_norm(s2_flow.view());
        let diff_s2 = self.warp_error(x.view(), &s2_flow)?;

        let sd_flow2 = self.flownets_d.forward(x.view())?;
        // Divided by div_flow, as the official FlowNet2 does for this branch.
        let sd_flow = up4(
            &sd_flow2.mapv(|v| v / div),
            ResizeMode::Nearest,
            "flownets_d",
        )?;
        let norm_sd = channel_norm(sd_flow.view());
        let diff_sd = self.warp_error(x.view(), &sd_flow)?;

        let concat3 = cat(
            &[
                x.slice(s![.., 0..3, .., ..]),
                sd_flow.view(),
                s2_flow.view(),
                norm_sd.view(),
                norm_s2.view(),
                diff_sd.view(),
                diff_s2.view(),
            ],
            "concat3",
        )?;
        let fused = self.flownetfusion.forward(concat3.view())?;
        Ok([c_flow2, s1_flow2, s2_flow2, sd_flow2, fused])
    }

    /// `compute_flow(img, ref_img, scale_factor)`: the images as the network receives them
    /// (`[3, H, W]`, normalised), the flow from `img` to `ref_img` at the scaled size.
    pub fn compute_flow(
        &self,
        img: ArrayView3<'_, f32>,
        ref_img: ArrayView3<'_, f32>,
    ) -> Result<FlowTrace, ModelError> {
        let (c, h, w) = img.dim();
        if c != 3 {
            return Err(ModelError::input(format!(
                "{NODE}: the image must have 3 channels (RGB), got {c}"
            )));
        }
        if ref_img.dim() != img.dim() {
            return Err(ModelError::input(format!(
                "{NODE}: the reference image is {:?} but this one is {:?}; a stream's frames must have one size",
                ref_img.dim(),
                img.dim()
            )));
        }
        let (hp, wp) = (
            h.div_ceil(MULTIPLE) * MULTIPLE,
            w.div_ceil(MULTIPLE) * MULTIPLE,
        );
        // denormalize (x·std + mean, in place in f32), then F.pad with zeros to (hp, wp).
        let rgb = |im: ArrayView3<'_, f32>| {
            let mut out = Array4::<f32>::zeros((1, 3, hp, wp));
            for k in 0..3 {
                let (sd, m) = (self.config.std[k], self.config.mean[k]);
                Zip::from(out.slice_mut(s![0, k, ..h, ..w]))
                    .and(im.slice(s![k, .., ..]))
                    .for_each(|o, &v| *o = v * sd + m);
            }
            out
        };
        let [flownetc, flownets_1, flownets_2, flownets_d, flownetfusion] =
            self.forward_rgb(rgb(img).view(), rgb(ref_img).view())?;
        // Crop to the input and resize by scale_factor (torch 1.4: the size floor(n·s) and
        // the kernel's scale from the sizes), in the new size's pixels.
        let cropped = flownetfusion.slice(s![.., .., ..h, ..w]);
        let s = self.config.scale_factor;
        let flow = if s == 1.0 {
            cropped.to_owned()
        } else {
            let size = (
                (h as f64 * s as f64).floor() as usize,
                (w as f64 * s as f64).floor() as usize,
            );
            if size.0 == 0 || size.1 == 0 {
                return Err(ModelError::input(format!(
                    "{NODE}: a {h}x{w} image is too small for scale_factor {s}"
                )));
            }
            resize(cropped, size, BILINEAR)
                .ctx(|| "compute_flow (resizing the flow)".into())?
                .mapv(|v| v * s)
        };
        Ok(FlowTrace {
            flownetc,
            flownets_1,
            flownets_2,
            flownets_d,
            flownetfusion,
            flow,
        })
    }
}

pub fn kind() -> NodeKind {
    let d = FlowConfig::default();
    let spec = NodeSpec::new(
        NODE,
        "Optical flow from each frame to the previous one of its stream with FlowNet2, as VPSNet's compute_flow runs it (mcahny/vps; NVIDIA flownet2-pytorch): the flow vpsnet_fusion warps with",
    );
    let spec = image_input(
        spec,
        "the pre-processed image the backbone receives (tensor [3, H, W], normalised with mean/std, RGB; the whole padded tensor is used)",
    )
    .output(
        PortSpec::new(
            "flow",
            PortKind::Tensor,
            "f32 [2, H·s, W·s] (x then y, in pixels of that size): where each pixel of this frame is in the previous frame of the stream (the first frame: itself)",
        )
        .dtype(plugin_sdk::DType::F32)
        .shape("2,H,W"),
    )
    .param(ParamSpec::required(
        "weights",
        ParamType::Path,
        "VPSNet checkpoint (.pth or .safetensors) holding flownet2.* (or NVIDIA's FlowNet2_checkpoint.pth.tar)",
    ))
    .param(ParamSpec::optional(
        "prefix",
        ParamType::Str,
        ParamValue::Str("flownet2.".into()),
        "name prefix of FlowNet2's tensors",
    ))
    .param(ParamSpec::optional(
        "mean",
        ParamType::FloatList,
        ParamValue::FloatList(d.mean.iter().map(|&v| f32_value(v)).collect()),
        "per-channel mean the image was normalised with (RGB; undone before FlowNet2)",
    ))
    .param(ParamSpec::optional(
        "std",
        ParamType::FloatList,
        ParamValue::FloatList(d.std.iter().map(|&v| f32_value(v)).collect()),
        "per-channel standard deviation the image was normalised with (RGB)",
    ))
    .param(
        ParamSpec::optional(
            "scale_factor",
            ParamType::Float,
            ParamValue::Float(f32_value(d.scale_factor)),
            "the flow's size relative to the image (0.25: VPSNet's P2)",
        )
        .range(1e-3, 1.0),
    )
    .param(
        ParamSpec::optional(
            "rgb_max",
            ParamType::Float,
            ParamValue::Float(f32_value(d.rgb_max)),
            "FlowNet2's rgb_max (the mean-subtracted images are divided by it)",
        )
        .range(1e-6, 1e9),
    )
    .param(
        ParamSpec::optional(
            "div_flow",
            ParamType::Float,
            ParamValue::Float(f32_value(d.div_flow)),
            "FlowNet2's div_flow (the sub-networks' flow scale)",
        )
        .range(1e-6, 1e9),
    );
    NodeKind::new(spec, |params| {
        Ok(Box::new(FlowNode::from_params(params)?) as Box<dyn Node>)
    })
}

fn three(params: &Params, name: &'static str) -> Result<[f32; 3], ModelError> {
    match params.float_list(name).map_err(ModelError::Input)?[..] {
        [a, b, c] if [a, b, c].iter().all(|v| v.is_finite()) => Ok([a as f32, b as f32, c as f32]),
        ref other => Err(ModelError::param(
            name,
            format!("must be 3 finite numbers (R, G, B), got {other:?}"),
        )),
    }
}

/// The `flownet2` node: the network and, per stream, the previous frame's image.
#[derive(Debug)]
pub struct FlowNode {
    net: FlowNet2,
    streams: StreamState<Array3<f32>>,
}

impl FlowNode {
    pub fn from_params(params: &Params) -> Result<FlowNode, ModelError> {
        let std = three(params, "std")?;
        if std.contains(&0.0) {
            return Err(ModelError::param("std", "must not be 0"));
        }
        let config = FlowConfig {
            mean: three(params, "mean")?,
            std,
            rgb_max: float_param(params, "rgb_max")?,
            div_flow: float_param(params, "div_flow")?,
            scale_factor: float_param(params, "scale_factor")?,
        };
        let (weights, prefix) = weights_param(params)?;
        Ok(FlowNode::new(FlowNet2::from_weights(
            &weights, &prefix, config,
        )?))
    }

    pub fn new(net: FlowNet2) -> FlowNode {
        FlowNode {
            net,
            streams: StreamState::default(),
        }
    }

    pub fn net(&self) -> &FlowNet2 {
        &self.net
    }

    /// The image `stream` keeps as the next frame's reference.
    pub fn reference(&self, stream: u32) -> Option<&Array3<f32>> {
        self.streams.get(stream)
    }

    /// One frame of `stream`: the flow value and what FlowNet2 computed.
    pub fn run(&mut self, stream: u32, image: &Value) -> Result<(Value, FlowTrace), ModelError> {
        let t = image.tensor("tensor").map_err(ModelError::Input)?;
        let (v, _) = nchw(t, &format!("{NODE}: the image tensor"))?;
        if v.dim().0 != 1 {
            return Err(ModelError::input(format!(
                "{NODE}: the image tensor holds {} images; this node takes one per frame",
                v.dim().0
            )));
        }
        let img = v.index_axis(Axis(0), 0);
        let reference = self.streams.get(stream).map(|r| r.view());
        let trace = self.net.compute_flow(img, reference.unwrap_or(img))?;
        let (_, _, fh, fw) = trace.flow.dim();
        let flow = trace
            .flow
            .clone()
            .into_shape_with_order((2, fh, fw))
            .map_err(|e| ModelError::input(e.to_string()))?;
        let tensor = kernels::layers::array_to_tensor(flow.into_dyn()).ctx(|| "flow".into())?;
        // This frame is the next one's reference.
        self.streams.insert(stream, img.to_owned());
        Ok((Value::single(tensor), trace))
    }
}

impl Node for FlowNode {
    fn process(&mut self, frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let (flow, _) = self.run(frame.stream, inputs.value("image")?)?;
        Ok(Outputs::one("flow", flow))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resample2d_reads_the_border_outside() {
        let x = Array4::from_shape_fn((1, 1, 2, 3), |(_, _, y, x)| (y * 10 + x) as f32);
        let mut flow = Array4::zeros((1, 2, 2, 3));
        // Pixel (0, 0) moved 0.5 right: halfway between columns 0 and 1.
        flow[[0, 0, 0, 0]] = 0.5;
        // Pixel (0, 2) moved 7 right and 3 down: the bottom-right corner.
        flow[[0, 0, 0, 2]] = 7.0;
        flow[[0, 1, 0, 2]] = 3.0;
        // Pixel (1, 1) moved 4.25 left: the first column (the fraction does not matter).
        flow[[0, 0, 1, 1]] = -4.25;
        let y = resample2d(x.view(), flow.view()).unwrap();
        assert_eq!(y[[0, 0, 0, 0]], 0.5);
        assert_eq!(y[[0, 0, 0, 1]], 1.0);
        assert_eq!(y[[0, 0, 0, 2]], 12.0);
        assert_eq!(y[[0, 0, 1, 1]], 10.0);
    }

    #[test]
    fn channel_norm_is_the_l2_norm_over_channels() {
        let x = Array4::from_shape_vec((1, 2, 1, 2), vec![3.0, 0.0, 4.0, -2.0]).unwrap();
        let n = channel_norm(x.view());
        assert_eq!(n.iter().copied().collect::<Vec<_>>(), vec![5.0, 2.0]);
    }
}
