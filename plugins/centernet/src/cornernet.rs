//! `cornernet`: CornerNet's corner heads, corner grouping and post-processing
//! (princeton-vl/CornerNet @ e5c39a31: `models/CornerNet.py`, `models/py_utils/kp.py`,
//! `kp_utils.py`, `test/coco.py` `kp_detection`, `external/nms.pyx`), on the last stack of
//! the `hourglass` backbone:
//!
//! 1. The corner pooling modules `tl_cnvs` / `br_cnvs` (`pool`): two 3x3 convolutions to 128
//!    channels (BatchNorm, ReLU), pooled Top + Left (or Bottom + Right,
//!    [`kernels::ops::corner_pool`]) and summed; `relu(p_bn1(p_conv1(sum)) + bn1(conv1(x)))`;
//!    a 3x3 `convolution`.
//! 2. Per corner the heads `heats` (80 classes), `tags` (1) and `regrs` (2): a 3x3
//!    convolution with bias and ReLU, then 1x1 (`make_kp_layer`).
//! 3. `_decode`: sigmoid, 3x3 max-pool suppression, the top `K` (100) corners over the
//!    flattened `C·H·W`, every top-left with every bottom-right: the score is the mean of the
//!    two, and −1 where the classes differ, the embeddings are further apart than
//!    `ae_threshold` (0.5), or the bottom-right is left of or above the top-left; the best
//!    `num_dets` (1000) pairs.
//! 4. `kp_detection`: the detections of the mirrored image (the pre-processing's second
//!    image) mirrored back (`x1' = out_w − x2`), both images' pairs mapped to the photo
//!    (`_rescale_dets`: divided by the output/input ratio, the crop border removed, clipped),
//!    the pairs with score −1 dropped, per class `soft_nms` (Gaussian, σ 0.5, threshold
//!    0.001, in `f32` as the Cython code; see [`soft_nms`]) and the best `max_per_image`
//!    (100) over all classes.
//!
//! Weights: the released `CornerNet_500000.pkl` (a legacy `torch.save` file) names everything
//! under `module.` (the training wrapper): `module.tl_cnvs.1.p1_conv1.conv.weight`,
//! `module.tl_heats.1.0.conv.bias`, ...; only the last stack's heads are bound, as the
//! official `_test` runs only those.

use kernels::layers::{Activation, Conv2d, Conv2dParams};
use kernels::ops::corner_pool::{corner_pool, CornerPool};
use kernels::ops::heatmap::extract_peaks_flat_mapped;
use kernels::ops::sigmoid_slice;
use kernels::weights::{Binder, Weights};
use ndarray::{Array4, ArrayView3, ArrayView4, Axis};
use plugin_sdk::{
    FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec, Value,
};
use vision_common::{
    conv_bn, conv_bn_relu, count_param, float_param, nchw, weights_param, weights_params,
    ImageSizes, LayerContext, ModelError, COCO_CATEGORY_IDS,
};

use crate::model::{category_ids_param, head, instances_value, Head, HeadNames};

const NODE: &str = "cornernet";

/// Where `kp_detection` puts a photo of `(h, w)` in the network's input (`crop_image` at
/// scale 1): the input is `(h | 127, w | 127)`, the photo's centre `(h / 2, w / 2)` goes to the
/// input's `(inp_h / 2, inp_w / 2)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropGeometry {
    pub input: (usize, usize),
    /// The photo's rows `y0..y1` and columns `x0..x1` that are copied.
    pub src_rows: (usize, usize),
    pub src_cols: (usize, usize),
    /// `border`: the input rows and columns they land on, `[top, bottom, left, right]`.
    pub border: [usize; 4],
    /// The network's output, `((inp_h + 1) / 4, (inp_w + 1) / 4)`.
    pub output: (usize, usize),
}

impl CropGeometry {
    pub fn new((h, w): (usize, usize)) -> CropGeometry {
        let input = (h | 127, w | 127);
        // crop_image(image, center=(h // 2, w // 2), size=input), in its own arithmetic: a
        // side of the form 128k - 1 loses its last row or column (ctx + inp_w // 2 = w - 1).
        let axis = |len: usize, inp: usize| {
            let ct = len / 2;
            let (lo, hi) = (ct.saturating_sub(inp / 2), (ct + inp / 2).min(len));
            let dst = inp / 2;
            ((lo, hi), (dst - (ct - lo), dst + (hi - ct)))
        };
        let (src_rows, (top, bottom)) = axis(h, input.0);
        let (src_cols, (left, right)) = axis(w, input.1);
        CropGeometry {
            input,
            src_rows,
            src_cols,
            border: [top, bottom, left, right],
            output: ((input.0 + 1) / 4, (input.1 + 1) / 4),
        }
    }

    /// `ratios`: output over input per axis, as `float32` (height, width).
    pub fn ratios(&self) -> (f32, f32) {
        (
            (self.output.0 as f64 / self.input.0 as f64) as f32,
            (self.output.1 as f64 / self.input.1 as f64) as f32,
        )
    }
}

/// CornerNet's `pool` module (`tl_pool`: Top and Left; `br_pool`: Bottom and Right).
#[derive(Debug)]
struct CornerPoolModule {
    name: String,
    p1_conv1: Conv2d,
    p2_conv1: Conv2d,
    /// `p_bn1(p_conv1(·))` with the shortcut added and the ReLU fused.
    p_conv1: Conv2d,
    /// `bn1(conv1(x))`, the shortcut.
    conv1: Conv2d,
    conv2: Conv2d,
    pools: (CornerPool, CornerPool),
}

impl CornerPoolModule {
    fn bind(
        b: &mut Binder<'_>,
        name: &str,
        dim: usize,
        pools: (CornerPool, CornerPool),
    ) -> Result<CornerPoolModule, ModelError> {
        let n = |s: &str| format!("{name}.{s}");
        let bn = |b: &mut Binder<'_>, conv: &str, bn: &str, cin: usize, k: usize, act| {
            conv_bn(
                b,
                &n(conv),
                &n(bn),
                cin,
                dim,
                k,
                Conv2dParams::default().padding(k / 2),
                1e-5,
                act,
            )
        };
        Ok(CornerPoolModule {
            p1_conv1: conv_bn_relu(b, &n("p1_conv1"), 3, dim, 128, 1)?,
            p2_conv1: conv_bn_relu(b, &n("p2_conv1"), 3, dim, 128, 1)?,
            p_conv1: bn(b, "p_conv1", "p_bn1", 128, 3, Activation::Relu)?,
            conv1: bn(b, "conv1", "bn1", dim, 1, Activation::Identity)?,
            conv2: conv_bn_relu(b, &n("conv2"), 3, dim, dim, 1)?,
            name: name.to_string(),
            pools,
        })
    }

    fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>, ModelError> {
        let ctx = |s: &str| format!("{}.{s}", self.name);
        let pooled = |conv: &Conv2d, pool: CornerPool, s: &str| -> Result<_, ModelError> {
            let y = conv.forward(x).ctx(|| ctx(s))?;
            corner_pool(y.view(), pool).map_err(|e| ModelError::input(format!("{}: {e}", ctx(s))))
        };
        let mut sum = pooled(&self.p1_conv1, self.pools.0, "p1_conv1")?;
        sum += &pooled(&self.p2_conv1, self.pools.1, "p2_conv1")?;
        let shortcut = self.conv1.forward(x).ctx(|| ctx("conv1"))?;
        let y = self
            .p_conv1
            .forward_residual(sum.view(), shortcut.view())
            .ctx(|| ctx("p_conv1"))?;
        self.conv2.forward(y.view()).ctx(|| ctx("conv2"))
    }
}

/// Gaussian, linear or hard suppression in [`soft_nms`] (`method` 2, 1, 0 of `nms.pyx`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftNmsMethod {
    Hard,
    Linear,
    Gaussian,
}

/// The settings of [`CornerNet`]; the defaults are `config/CornerNet.json`'s and
/// `db/detection.py`'s.
#[derive(Clone, Debug, PartialEq)]
pub struct CornerNetConfig {
    /// Channels of the hourglass's features (`cnv_dim`).
    pub cnv_dim: usize,
    /// Channels of the heads' 3x3 convolutions (`curr_dim`, the hourglass's `dims[0]`).
    pub head_conv: usize,
    pub num_classes: usize,
    /// The last stack, whose heads are run.
    pub stack: usize,
    /// Corners kept per type (`top_k`).
    pub k: usize,
    pub ae_threshold: f32,
    /// Pairs kept by the decoding (`num_dets`).
    pub num_dets: usize,
    pub nms_kernel: usize,
    pub soft_nms: SoftNmsMethod,
    /// `Nt` (linear and hard suppression only).
    pub nms_threshold: f32,
    pub sigma: f32,
    /// Soft-NMS drops a box whose score falls below this.
    pub nms_score_threshold: f32,
    pub max_per_image: usize,
}

impl Default for CornerNetConfig {
    fn default() -> Self {
        CornerNetConfig {
            cnv_dim: 256,
            head_conv: 256,
            num_classes: 80,
            stack: 1,
            k: 100,
            ae_threshold: 0.5,
            num_dets: 1000,
            nms_kernel: 3,
            soft_nms: SoftNmsMethod::Gaussian,
            nms_threshold: 0.5,
            sigma: 0.5,
            nms_score_threshold: 0.001,
            max_per_image: 100,
        }
    }
}

/// The raw outputs of the last stack, `[N, C, H, W]` (N: the image and its mirror).
#[derive(Clone, Debug)]
pub struct CornerOutputs {
    pub tl_heat: Array4<f32>,
    pub br_heat: Array4<f32>,
    pub tl_tag: Array4<f32>,
    pub br_tag: Array4<f32>,
    pub tl_regr: Array4<f32>,
    pub br_regr: Array4<f32>,
}

/// One corner pair of `_decode` (at output stride) or of the post-processing (in photo
/// pixels): `[x1, y1, x2, y2]`, its score, its corners' scores and its class index.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CornerDetection {
    pub bbox: [f32; 4],
    pub score: f32,
    pub tl_score: f32,
    pub br_score: f32,
    pub class: usize,
}

/// CornerNet's corner modules and heads with their weights bound.
#[derive(Debug)]
pub struct CornerNet {
    config: CornerNetConfig,
    tl_pool: CornerPoolModule,
    br_pool: CornerPoolModule,
    heads: [Head; 6],
}

/// The modules that exist once per stack.
const PER_STACK: [&str; 8] = [
    "tl_cnvs", "br_cnvs", "tl_heats", "br_heats", "tl_tags", "br_tags", "tl_regrs", "br_regrs",
];

impl CornerNet {
    /// Binds the corner modules and heads, found under `prefix` (`module.` in the released
    /// file).
    pub fn from_weights(
        weights: &Weights,
        prefix: &str,
        config: CornerNetConfig,
    ) -> Result<CornerNet, ModelError> {
        let c = &config;
        let mut b = weights.binder(prefix);
        let s = c.stack;
        let tl_pool = CornerPoolModule::bind(
            &mut b,
            &format!("tl_cnvs.{s}"),
            c.cnv_dim,
            (CornerPool::Top, CornerPool::Left),
        )?;
        let br_pool = CornerPoolModule::bind(
            &mut b,
            &format!("br_cnvs.{s}"),
            c.cnv_dim,
            (CornerPool::Bottom, CornerPool::Right),
        )?;
        let names = HeadNames::Hourglass { stack: s };
        let mut bind =
            |name: &str, cout: usize| head(&mut b, names.names(name), c.cnv_dim, c.head_conv, cout);
        let heads = [
            bind("tl_heats", c.num_classes)?,
            bind("br_heats", c.num_classes)?,
            bind("tl_tags", 1)?,
            bind("br_tags", 1)?,
            bind("tl_regrs", 2)?,
            bind("br_regrs", 2)?,
        ];
        // The earlier stacks' corner modules and heads supervise training only.
        for h in PER_STACK {
            for earlier in 0..s {
                b.ignore_module(&format!("{h}.{earlier}."));
            }
        }
        b.ignore("num_batches_tracked");
        b.ignore_unbound_modules();
        b.finish()?;
        Ok(CornerNet {
            config,
            tl_pool,
            br_pool,
            heads,
        })
    }

    pub fn config(&self) -> &CornerNetConfig {
        &self.config
    }

    /// The corner modules and heads on the last stack's features `[N, cnv_dim, H, W]`.
    pub fn heads(&self, x: ArrayView4<'_, f32>) -> Result<CornerOutputs, ModelError> {
        let (n, c, h, w) = x.dim();
        if c != self.config.cnv_dim || n == 0 {
            return Err(ModelError::input(format!(
                "{NODE}: the features are [{n}, {c}, {h}, {w}]; the checkpoint's corner modules expect {} channels",
                self.config.cnv_dim
            )));
        }
        let (tl, br) = self.corner_modules(x)?;
        let [th, bh, tt, bt, tr, brr] = &self.heads;
        Ok(CornerOutputs {
            tl_heat: th.forward_batch(tl.view())?,
            br_heat: bh.forward_batch(br.view())?,
            tl_tag: tt.forward_batch(tl.view())?,
            br_tag: bt.forward_batch(br.view())?,
            tl_regr: tr.forward_batch(tl.view())?,
            br_regr: brr.forward_batch(br.view())?,
        })
    }

    /// The corner pooling modules alone (`tl_cnvs`, `br_cnvs` of the last stack): what the
    /// top-left and the bottom-right heads read.
    pub fn corner_modules(
        &self,
        x: ArrayView4<'_, f32>,
    ) -> Result<(Array4<f32>, Array4<f32>), ModelError> {
        Ok((self.tl_pool.forward(x)?, self.br_pool.forward(x)?))
    }

    /// `_decode` of image `n` of the batch: the valid pairs (score above −1) among the best
    /// `num_dets`, best first, at output stride.
    pub fn decode(
        &self,
        out: &CornerOutputs,
        n: usize,
    ) -> Result<Vec<CornerDetection>, ModelError> {
        let c = &self.config;
        // sigmoid, _nms and _topk in one pass per class plane.
        let corners = |heat: ArrayView3<'_, f32>| -> Result<_, ModelError> {
            let (ch, h, w) = heat.dim();
            extract_peaks_flat_mapped(heat, c.k.min(ch * h * w), c.nms_kernel, sigmoid_slice)
                .map_err(|e| ModelError::input(e.to_string()))
        };
        let tl = corners(out.tl_heat.index_axis(Axis(0), n))?;
        let br = corners(out.br_heat.index_axis(Axis(0), n))?;
        let (tl_tag, br_tag) = (
            out.tl_tag.index_axis(Axis(0), n),
            out.br_tag.index_axis(Axis(0), n),
        );
        let (tl_regr, br_regr) = (
            out.tl_regr.index_axis(Axis(0), n),
            out.br_regr.index_axis(Axis(0), n),
        );
        let corner = |p: &kernels::ops::heatmap::Peak, regr: &ArrayView3<'_, f32>| {
            (
                p.x as f32 + regr[[0, p.y, p.x]],
                p.y as f32 + regr[[1, p.y, p.x]],
            )
        };
        let tls: Vec<_> = tl
            .iter()
            .map(|p| (corner(p, &tl_regr), tl_tag[[0, p.y, p.x]]))
            .collect();
        let brs: Vec<_> = br
            .iter()
            .map(|p| (corner(p, &br_regr), br_tag[[0, p.y, p.x]]))
            .collect();
        // Every top-left with every bottom-right, in `_decode`'s (i, j) order; the rejected
        // pairs (score −1) are never among the results, so only the valid ones are kept.
        let mut pairs = Vec::new();
        for (i, (a, &((ax, ay), at))) in tl.iter().zip(&tls).enumerate() {
            for (j, (b, &((bx, by), bt))) in br.iter().zip(&brs).enumerate() {
                let rejected =
                    a.class != b.class || (at - bt).abs() > c.ae_threshold || bx < ax || by < ay;
                if !rejected {
                    pairs.push((
                        i * brs.len() + j,
                        (a.score + b.score) / 2.0,
                        [ax, ay, bx, by],
                        i,
                        j,
                    ));
                }
            }
        }
        // torch.topk(scores, num_dets): best first (ties by index, see kernels::ops).
        pairs.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        pairs.truncate(c.num_dets.min(tl.len() * br.len()));
        Ok(pairs
            .into_iter()
            .map(|(_, score, bbox, i, j)| CornerDetection {
                bbox,
                score,
                tl_score: tl[i].score,
                br_score: br[j].score,
                class: tl[i].class,
            })
            .collect())
    }

    /// `kp_detection` after the network: `per_image` holds `decode`'s pairs of the image and,
    /// if the batch had two, of its mirror. Returns the results in photo pixels, class by
    /// class (the order of the official results), each class in soft-NMS's order.
    pub fn postprocess(
        &self,
        per_image: &[Vec<CornerDetection>],
        geometry: &CropGeometry,
        original: (usize, usize),
    ) -> Vec<CornerDetection> {
        let c = &self.config;
        let (out_w, (ry, rx)) = (geometry.output.1 as f32, geometry.ratios());
        let border = geometry.border.map(|v| v as f32);
        let (h, w) = (original.0 as f32, original.1 as f32);
        let mut all: Vec<CornerDetection> = Vec::new();
        for (n, dets) in per_image.iter().enumerate() {
            for d in dets {
                let mut b = d.bbox;
                if n == 1 {
                    // The mirror's boxes, mirrored back (out_width - x, not out_width - 1 - x).
                    b = [out_w - b[2], b[1], out_w - b[0], b[3]];
                }
                // _rescale_dets, in float32.
                let x = |v: f32| (v / rx - border[2]).clamp(0.0, w);
                let y = |v: f32| (v / ry - border[0]).clamp(0.0, h);
                all.push(CornerDetection {
                    bbox: [x(b[0]), y(b[1]), x(b[2]), y(b[3])],
                    ..*d
                });
            }
        }
        let mut classes: Vec<Vec<CornerDetection>> = vec![Vec::new(); c.num_classes];
        for d in all {
            if d.class < c.num_classes {
                classes[d.class].push(d);
            }
        }
        for dets in &mut classes {
            let mut boxes: Vec<[f32; 5]> = dets
                .iter()
                .map(|d| [d.bbox[0], d.bbox[1], d.bbox[2], d.bbox[3], d.score])
                .collect();
            soft_nms(
                &mut boxes,
                c.sigma,
                c.nms_threshold,
                c.nms_score_threshold,
                c.soft_nms,
            );
            // nms.pyx swaps only the box and score columns; the corner scores are not
            // part of the results.
            for (d, b) in dets.iter_mut().zip(&boxes) {
                d.bbox = [b[0], b[1], b[2], b[3]];
                d.score = b[4];
            }
        }
        let scores: Vec<f32> = classes.iter().flatten().map(|d| d.score).collect();
        if scores.len() > c.max_per_image {
            // np.partition(scores, kth)[kth] with kth = len - max_per_image, and >= it kept.
            let mut scores = scores;
            scores.sort_by(f32::total_cmp);
            let thresh = scores[scores.len() - c.max_per_image];
            for dets in &mut classes {
                dets.retain(|d| d.score >= thresh);
            }
        }
        classes.into_iter().flatten().collect()
    }
}

/// `external/nms.pyx`'s `soft_nms` on `[x1, y1, x2, y2, score]` rows, in place and in its
/// `float` arithmetic. As `kp_detection` calls it, its return value (the rows still alive) is
/// ignored, so every row stays in the results: a row that falls below `threshold` is
/// overwritten by the last live row, which leaves that row's copy behind at the end, and the
/// loop over `i` still visits the rows past the live ones (`range(N)` is evaluated once).
pub fn soft_nms(
    boxes: &mut [[f32; 5]],
    sigma: f32,
    nt: f32,
    threshold: f32,
    method: SoftNmsMethod,
) {
    let total = boxes.len();
    let mut n = total;
    for i in 0..total {
        let mut maxpos = i;
        let mut maxscore = boxes[i][4];
        for (pos, b) in boxes.iter().enumerate().take(n).skip(i + 1) {
            if maxscore < b[4] {
                maxscore = b[4];
                maxpos = pos;
            }
        }
        boxes.swap(i, maxpos);
        let [tx1, ty1, tx2, ty2, _] = boxes[i];
        let mut pos = i + 1;
        while pos < n {
            let [x1, y1, x2, y2, _] = boxes[pos];
            // Cython compiles the literal `1` to the C double 1.0: each sum with it, and the
            // products and sums that follow in the same expression, are computed in double
            // and rounded to the float variable once.
            let plus_one = |d: f32| f64::from(d) + 1.0;
            let area = (plus_one(x2 - x1) * plus_one(y2 - y1)) as f32;
            let iw = plus_one(tx2.min(x2) - tx1.max(x1)) as f32;
            if iw > 0.0 {
                let ih = plus_one(ty2.min(y2) - ty1.max(y1)) as f32;
                if ih > 0.0 {
                    let ua = (plus_one(tx2 - tx1) * plus_one(ty2 - ty1) + f64::from(area)
                        - f64::from(iw * ih)) as f32;
                    let ov = iw * ih / ua;
                    let weight = match method {
                        SoftNmsMethod::Linear if ov > nt => 1.0 - ov,
                        // np.exp of the float expression, promoted to a Python float.
                        SoftNmsMethod::Gaussian => f64::from(-(ov * ov) / sigma).exp() as f32,
                        SoftNmsMethod::Hard if ov > nt => 0.0,
                        _ => 1.0,
                    };
                    boxes[pos][4] *= weight;
                    if boxes[pos][4] < threshold {
                        boxes[pos] = boxes[n - 1];
                        n -= 1;
                        continue;
                    }
                }
            }
            pos += 1;
        }
    }
}

pub fn kind() -> NodeKind {
    let d = CornerNetConfig::default();
    let int = |name: &'static str, v: usize, doc: &'static str| {
        ParamSpec::optional(name, ParamType::Int, ParamValue::Int(v as i64), doc)
            .range(1.0, 65536.0)
    };
    let float = |name: &'static str, v: f32, doc: &'static str| {
        ParamSpec::optional(name, ParamType::Float, ParamValue::Float(f64::from(v)), doc)
    };
    let spec = NodeSpec::new(
        NODE,
        "CornerNet on the hourglass's last stack: corner pooling, corner heatmaps, embeddings and offsets, corner grouping, the mirror merged back, per-class soft-NMS; boxes in photo pixels",
    )
    .input(
        PortSpec::new(
            "features",
            PortKind::Features,
            "the hourglass's last stack (in_feature, p2): [N, cnv_dim, H/4, W/4], N = 2 with the mirror",
        )
        .dtype(plugin_sdk::DType::F32),
    )
    .input(
        PortSpec::new(
            "image",
            PortKind::ModelImage,
            "the image from cornernet_preprocess (original_size: the photo the results are mapped back to)",
        )
        .dtype(plugin_sdk::DType::F32),
    )
    .output(PortSpec::new(
        "instances",
        PortKind::Instances,
        "the detections in photo pixels, class by class as the official results, with scores and COCO category ids",
    ));
    let spec = weights_params(
        spec,
        "the corner modules and heads",
        "module.",
        "name prefix of tl_cnvs / tl_heats / ... (module. in the released CornerNet_500000.pkl)",
    );
    let spec = spec.param(ParamSpec::optional(
        "in_feature",
        ParamType::Str,
        ParamValue::Str("p2".into()),
        "the level the corner modules read",
    ))
    .param(int("cnv_dim", d.cnv_dim, "channels of the features (the hourglass's cnv_dim)"))
    .param(int("head_conv", d.head_conv, "channels of the heads' 3x3 convolutions (the hourglass's dims[0])"))
    .param(int("num_classes", d.num_classes, "heatmap classes (COCO: 80)"))
    .param(ParamSpec::optional(
        "category_ids",
        ParamType::IntList,
        ParamValue::IntList(COCO_CATEGORY_IDS.to_vec()),
        "the category id of each class index (COCO's 80 sparse ids by default)",
    ))
    .param(
        ParamSpec::optional("stacks", ParamType::Int, ParamValue::Int(2), "the hourglass's stacks (the last one's heads are used)")
            .range(1.0, 16.0),
    )
    .param(int("k", d.k, "corners of each type kept by the decoding (top_k)"))
    .param(float("ae_threshold", d.ae_threshold, "largest embedding distance of a corner pair").range(0.0, 1e6))
    .param(int("num_dets", d.num_dets, "corner pairs kept by the decoding"))
    .param(int("nms_kernel", d.nms_kernel, "max-pool window of the corner suppression (odd)"))
    .param(ParamSpec::optional(
        "soft_nms",
        ParamType::Str,
        ParamValue::Str("gaussian".into()),
        "per-class suppression: \"gaussian\" (exp_soft_nms, the official), \"linear\" or \"hard\"",
    ))
    .param(float("nms_threshold", d.nms_threshold, "IoU threshold of linear and hard suppression (Nt)").range(0.0, 1.0))
    .param(float("sigma", d.sigma, "sigma of Gaussian soft-NMS").range(1e-6, 1e6))
    .param(float("nms_score_threshold", d.nms_score_threshold, "soft-NMS drops the boxes whose score falls below this").range(0.0, 1.0))
    .param(int("max_per_image", d.max_per_image, "results kept per photo over all classes"))
    .param(
        float("score_threshold", 0.0, "keep the results whose score is above this (0: all, as for COCO evaluation)")
            .range(0.0, 1.0),
    );
    NodeKind::new(spec, |params| {
        Ok(Box::new(CornerNetNode::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `cornernet` node.
#[derive(Debug)]
pub struct CornerNetNode {
    model: CornerNet,
    in_feature: String,
    category_ids: Vec<i64>,
    score_threshold: f32,
}

impl CornerNetNode {
    pub fn from_params(params: &Params) -> Result<CornerNetNode, ModelError> {
        let soft_nms = match params.str("soft_nms").map_err(ModelError::Input)? {
            "gaussian" => SoftNmsMethod::Gaussian,
            "linear" => SoftNmsMethod::Linear,
            "hard" => SoftNmsMethod::Hard,
            other => {
                return Err(ModelError::param(
                    "soft_nms",
                    format!("must be \"gaussian\", \"linear\" or \"hard\", got \"{other}\""),
                ))
            }
        };
        let nms_kernel = count_param(params, "nms_kernel")?;
        if nms_kernel % 2 == 0 {
            return Err(ModelError::param(
                "nms_kernel",
                format!("must be odd, got {nms_kernel}"),
            ));
        }
        let config = CornerNetConfig {
            cnv_dim: count_param(params, "cnv_dim")?,
            head_conv: count_param(params, "head_conv")?,
            num_classes: count_param(params, "num_classes")?,
            stack: count_param(params, "stacks")? - 1,
            k: count_param(params, "k")?,
            ae_threshold: float_param(params, "ae_threshold")?,
            num_dets: count_param(params, "num_dets")?,
            nms_kernel,
            soft_nms,
            nms_threshold: float_param(params, "nms_threshold")?,
            sigma: float_param(params, "sigma")?,
            nms_score_threshold: float_param(params, "nms_score_threshold")?,
            max_per_image: count_param(params, "max_per_image")?,
        };
        let category_ids = category_ids_param(params, config.num_classes)?;
        let (weights, prefix) = weights_param(params)?;
        Ok(CornerNetNode {
            model: CornerNet::from_weights(&weights, &prefix, config)?,
            in_feature: params
                .str("in_feature")
                .map_err(ModelError::Input)?
                .to_string(),
            category_ids,
            score_threshold: float_param(params, "score_threshold")?,
        })
    }

    pub fn model(&self) -> &CornerNet {
        &self.model
    }

    /// The node's computation: the results (above the threshold) in photo pixels.
    pub fn run(&self, features: &Value, image: &Value) -> Result<Value, ModelError> {
        let (sizes, views) = ImageSizes::from_batch(NODE, image)?;
        let geometry = CropGeometry::new(sizes.original);
        let level = features.get(&self.in_feature).ok_or_else(|| {
            ModelError::input(format!(
                "{NODE}: the features have no level \"{}\" (they have: {}); set `in_feature`",
                self.in_feature,
                features.names().join(", ")
            ))
        })?;
        let (x, _) = nchw(
            level,
            &format!("{NODE}: feature level \"{}\"", self.in_feature),
        )?;
        let (n, _, h, w) = x.dim();
        if n != views || n > 2 || (h, w) != geometry.output {
            return Err(ModelError::input(format!(
                "{NODE}: the features are [{n}, _, {h}, {w}] for {views} view(s) of a {}x{} photo; expected the image (and its mirror) at {}x{}: connect cornernet_preprocess → hourglass",
                sizes.original.0, sizes.original.1, geometry.output.0, geometry.output.1
            )));
        }
        let out = self.model.heads(x)?;
        let per_image = (0..n)
            .map(|i| self.model.decode(&out, i))
            .collect::<Result<Vec<_>, _>>()?;
        let dets = self
            .model
            .postprocess(&per_image, &geometry, sizes.original);
        instances_value(
            dets.iter().map(|d| (d.bbox, d.score, d.class)),
            &self.category_ids,
            self.score_threshold,
        )
    }
}

impl Node for CornerNetNode {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let v = self.run(inputs.value("features")?, inputs.value("image")?)?;
        Ok(Outputs::one("instances", v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crop_centres_the_photo_and_may_drop_a_last_column() {
        // chelsea (264x397): input 383x511, output 96x128; the photo at rows 59..323 (191 - 132
        // .. 191 + 132) and columns 57..454 (255 - 198 .. 255 + 199).
        let g = CropGeometry::new((264, 397));
        assert_eq!(g.input, (383, 511));
        assert_eq!(g.output, (96, 128));
        assert_eq!(g.src_rows, (0, 264));
        assert_eq!(g.src_cols, (0, 397));
        assert_eq!(g.border, [59, 323, 57, 454]);
        // A side of 128k - 1 is its own input size; crop_image copies only 0..w - 1.
        let g = CropGeometry::new((255, 383));
        assert_eq!(g.input, (255, 383));
        assert_eq!(g.src_rows, (0, 254));
        assert_eq!(g.border, [0, 254, 0, 382]);
    }

    #[test]
    fn soft_nms_keeps_stale_rows_as_the_official_caller_does() {
        // Two identical boxes: the second decays by exp(-1 / 0.5) and survives; a third, far
        // away, keeps its score.
        let mut b = vec![
            [0.0, 0.0, 9.0, 9.0, 0.5],
            [0.0, 0.0, 9.0, 9.0, 0.9],
            [50.0, 50.0, 60.0, 60.0, 0.7],
        ];
        soft_nms(&mut b, 0.5, 0.5, 0.001, SoftNmsMethod::Gaussian);
        let decay = (-2.0f64).exp() as f32;
        assert_eq!(b[0][4], 0.9);
        assert_eq!(b[1][4], 0.7);
        assert_eq!(b[2][4], 0.5 * decay);
        // Hard suppression drops the duplicate: it is overwritten by the last live row, whose
        // copy stays behind at the end.
        let mut b = vec![
            [0.0, 0.0, 9.0, 9.0, 0.9],
            [0.0, 0.0, 9.0, 9.0, 0.5],
            [50.0, 50.0, 60.0, 60.0, 0.7],
        ];
        soft_nms(&mut b, 0.5, 0.5, 0.001, SoftNmsMethod::Hard);
        assert_eq!(b[0][4], 0.9);
        assert_eq!(b[1], [50.0, 50.0, 60.0, 60.0, 0.7]);
        assert_eq!(b[2], [50.0, 50.0, 60.0, 60.0, 0.7]);
    }
}
