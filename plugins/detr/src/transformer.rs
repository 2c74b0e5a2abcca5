//! The transformer of DETR (`models/transformer.py`), which MaskFormer copies
//! (`mask_former/modeling/transformer/transformer.py`): post-norm encoder and decoder layers
//! with the positions added to the queries and keys, the decoder's learned queries, and the
//! sine positional encoding. Bound from either naming of the parameters ([`Naming`]).

use kernels::layers::attention::{LayerNorm, MultiheadAttention};
use kernels::layers::{Activation, Linear};
use kernels::weights::{Binder, Weights};
use kernels::Tensor;
use ndarray::{Array2, ArrayView2, Ix1, Ix2};
use vision_common::{linear, LayerContext, ModelError};

const LN_EPS: f32 = 1e-5;

/// Which parameter names a checkpoint uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// facebookresearch/detr's `state_dict` (`model` of the released `.pth`).
    Official,
    /// Hugging Face transformers' `DetrForObjectDetection`.
    Transformers,
}

impl Naming {
    pub fn detect(weights: &Weights, prefix: &str) -> Naming {
        if weights
            .get(&format!(
                "{prefix}model.encoder.layers.0.self_attn.q_proj.weight"
            ))
            .is_some()
        {
            Naming::Transformers
        } else {
            Naming::Official
        }
    }
}

/// One FFN: `linear2(relu(linear1(x)))`.
#[derive(Debug)]
struct FeedForward {
    up: Linear,
    down: Linear,
}

impl FeedForward {
    fn forward(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>, ModelError> {
        let h = self.up.forward(x).ctx(|| "FFN".into())?;
        self.down.forward(h.view()).ctx(|| "FFN".into())
    }
}

#[derive(Debug)]
struct EncoderLayer {
    attn: MultiheadAttention,
    norm1: LayerNorm,
    ffn: FeedForward,
    norm2: LayerNorm,
}

#[derive(Debug)]
struct DecoderLayer {
    self_attn: MultiheadAttention,
    norm1: LayerNorm,
    cross_attn: MultiheadAttention,
    norm2: LayerNorm,
    ffn: FeedForward,
    norm3: LayerNorm,
}

/// The widths of a transformer.
#[derive(Clone, Copy, Debug)]
pub struct Widths {
    pub dim: usize,
    pub ffn: usize,
    pub heads: usize,
}

fn view2(t: &Tensor) -> Result<ArrayView2<'_, f32>, ModelError> {
    t.view::<f32>()?
        .into_dimensionality::<Ix2>()
        .map_err(|e| ModelError::input(e.to_string()))
}

fn view1(t: &Tensor) -> Result<ndarray::ArrayView1<'_, f32>, ModelError> {
    t.view::<f32>()?
        .into_dimensionality::<Ix1>()
        .map_err(|e| ModelError::input(e.to_string()))
}

fn layer_norm(b: &mut Binder<'_>, name: &str, dim: usize) -> Result<LayerNorm, ModelError> {
    let w = b.take(&format!("{name}.weight"), &[dim]);
    let bias = b.take(&format!("{name}.bias"), &[dim]);
    LayerNorm::new(view1(&w)?, view1(&bias)?, LN_EPS).ctx(|| name.to_string())
}

/// An attention module under `name`: torch's packed `in_proj_*` (official) or separate
/// `q_proj`/`k_proj`/`v_proj` (transformers).
fn attention(
    b: &mut Binder<'_>,
    naming: Naming,
    name: &str,
    dim: usize,
    heads: usize,
) -> Result<MultiheadAttention, ModelError> {
    match naming {
        Naming::Official => {
            let w = b.take(&format!("{name}.in_proj_weight"), &[3 * dim, dim]);
            let bias = b.take(&format!("{name}.in_proj_bias"), &[3 * dim]);
            let ow = b.take(&format!("{name}.out_proj.weight"), &[dim, dim]);
            let ob = b.take(&format!("{name}.out_proj.bias"), &[dim]);
            MultiheadAttention::from_packed(
                heads,
                view2(&w)?,
                view1(&bias)?,
                view2(&ow)?,
                view1(&ob)?,
            )
            .ctx(|| name.to_string())
        }
        Naming::Transformers => {
            let mut proj =
                |p: &str| linear(b, &format!("{name}.{p}"), dim, dim, Activation::Identity);
            let (q, k, v, o) = (
                proj("q_proj")?,
                proj("k_proj")?,
                proj("v_proj")?,
                proj("out_proj")?,
            );
            MultiheadAttention::new(heads, q, k, v, o).ctx(|| name.to_string())
        }
    }
}

fn feed_forward(
    b: &mut Binder<'_>,
    up: &str,
    down: &str,
    dim: usize,
    ffn: usize,
) -> Result<FeedForward, ModelError> {
    Ok(FeedForward {
        up: linear(b, up, dim, ffn, Activation::Relu)?,
        down: linear(b, down, ffn, dim, Activation::Identity)?,
    })
}

/// The encoder: post-norm layers (self attention, `norm1`, FFN, `norm2`), no final norm.
#[derive(Debug)]
pub struct TransformerEncoder {
    layers: Vec<EncoderLayer>,
}

impl TransformerEncoder {
    /// Binds `{layers}.{i}` for `i < count`.
    pub fn from_weights(
        b: &mut Binder<'_>,
        naming: Naming,
        layers: &str,
        count: usize,
        w: Widths,
    ) -> Result<TransformerEncoder, ModelError> {
        let (d, f, h) = (w.dim, w.ffn, w.heads);
        let names = match naming {
            Naming::Official => ["norm1", "norm2", "linear1", "linear2"],
            Naming::Transformers => ["self_attn_layer_norm", "final_layer_norm", "fc1", "fc2"],
        };
        let layers = (0..count)
            .map(|i| {
                let l = format!("{layers}.{i}");
                Ok(EncoderLayer {
                    attn: attention(b, naming, &format!("{l}.self_attn"), d, h)?,
                    norm1: layer_norm(b, &format!("{l}.{}", names[0]), d)?,
                    ffn: feed_forward(
                        b,
                        &format!("{l}.{}", names[2]),
                        &format!("{l}.{}", names[3]),
                        d,
                        f,
                    )?,
                    norm2: layer_norm(b, &format!("{l}.{}", names[1]), d)?,
                })
            })
            .collect::<Result<_, ModelError>>()?;
        Ok(TransformerEncoder { layers })
    }

    /// The memory `[L, dim]` of tokens `src` `[L, dim]` at positions `pos` `[L, dim]`.
    pub fn forward(&self, src: Array2<f32>, pos: &Array2<f32>) -> Result<Array2<f32>, ModelError> {
        let mut x = src;
        for (i, layer) in self.layers.iter().enumerate() {
            let ctx = || format!("encoder layer {i}");
            let qk = &x + pos;
            let a = layer
                .attn
                .forward(qk.view(), qk.view(), x.view())
                .ctx(ctx)?;
            x += &a;
            layer.norm1.forward_inplace(&mut x).ctx(ctx)?;
            let f = layer.ffn.forward(x.view())?;
            x += &f;
            layer.norm2.forward_inplace(&mut x).ctx(ctx)?;
        }
        Ok(x)
    }
}

/// Where a decoder's tensors are.
#[derive(Clone, Copy, Debug)]
pub struct DecoderNames<'a> {
    /// The layers' module, e.g. `transformer.decoder.layers`.
    pub layers: &'a str,
    /// The final norm, e.g. `transformer.decoder.norm`.
    pub norm: &'a str,
    /// The learned queries (`query_embed.weight`), used as the queries' positions.
    pub query: &'a str,
}

/// The decoder: learned queries (starting from zeros, their embeddings as positions),
/// post-norm layers (self attention, `norm1`, cross attention on the memory, `norm2`, FFN,
/// `norm3`), and the final norm.
#[derive(Debug)]
pub struct TransformerDecoder {
    layers: Vec<DecoderLayer>,
    norm: LayerNorm,
    /// `[num_queries, dim]`.
    query_pos: Array2<f32>,
}

impl TransformerDecoder {
    pub fn from_weights(
        b: &mut Binder<'_>,
        naming: Naming,
        names: DecoderNames<'_>,
        count: usize,
        num_queries: usize,
        w: Widths,
    ) -> Result<TransformerDecoder, ModelError> {
        let (d, f, h) = (w.dim, w.ffn, w.heads);
        let n = match naming {
            Naming::Official => [
                "multihead_attn",
                "norm1",
                "norm2",
                "norm3",
                "linear1",
                "linear2",
            ],
            Naming::Transformers => [
                "encoder_attn",
                "self_attn_layer_norm",
                "encoder_attn_layer_norm",
                "final_layer_norm",
                "fc1",
                "fc2",
            ],
        };
        let layers = (0..count)
            .map(|i| {
                let l = format!("{}.{i}", names.layers);
                Ok(DecoderLayer {
                    self_attn: attention(b, naming, &format!("{l}.self_attn"), d, h)?,
                    norm1: layer_norm(b, &format!("{l}.{}", n[1]), d)?,
                    cross_attn: attention(b, naming, &format!("{l}.{}", n[0]), d, h)?,
                    norm2: layer_norm(b, &format!("{l}.{}", n[2]), d)?,
                    ffn: feed_forward(b, &format!("{l}.{}", n[4]), &format!("{l}.{}", n[5]), d, f)?,
                    norm3: layer_norm(b, &format!("{l}.{}", n[3]), d)?,
                })
            })
            .collect::<Result<_, ModelError>>()?;
        let norm = layer_norm(b, names.norm, d)?;
        let query = b.take(names.query, &[num_queries, d]);
        Ok(TransformerDecoder {
            layers,
            norm,
            query_pos: view2(&query)?.to_owned(),
        })
    }

    pub fn num_queries(&self) -> usize {
        self.query_pos.nrows()
    }

    /// The output after the final norm, `[num_queries, dim]`, from the memory `[L, dim]` and
    /// its positions.
    pub fn forward(
        &self,
        memory: &Array2<f32>,
        pos: &Array2<f32>,
    ) -> Result<Array2<f32>, ModelError> {
        let q = &self.query_pos;
        let mut t = Array2::<f32>::zeros(q.dim());
        let keys = memory + pos;
        for (i, layer) in self.layers.iter().enumerate() {
            let ctx = || format!("decoder layer {i}");
            let qk = &t + q;
            let a = layer
                .self_attn
                .forward(qk.view(), qk.view(), t.view())
                .ctx(ctx)?;
            t += &a;
            layer.norm1.forward_inplace(&mut t).ctx(ctx)?;
            let query = &t + q;
            let a = layer
                .cross_attn
                .forward(query.view(), keys.view(), memory.view())
                .ctx(ctx)?;
            t += &a;
            layer.norm2.forward_inplace(&mut t).ctx(ctx)?;
            let f = layer.ffn.forward(t.view())?;
            t += &f;
            layer.norm3.forward_inplace(&mut t).ctx(ctx)?;
        }
        self.norm
            .forward_inplace(&mut t)
            .ctx(|| "decoder norm".into())?;
        Ok(t)
    }
}

/// A 3-layer MLP with ReLU between layers (`MLP(d, d, out, 3)` of DETR and MaskFormer), the
/// last layer's activation given.
pub fn mlp(
    b: &mut Binder<'_>,
    name: &str,
    dim: usize,
    out: usize,
    last: Activation,
) -> Result<Vec<Linear>, ModelError> {
    let names = [0, 1, 2].map(|i| format!("{name}.layers.{i}"));
    mlp_named(b, &names, dim, out, last)
}

/// [`mlp`] with its three linear layers under `names`.
pub fn mlp_named(
    b: &mut Binder<'_>,
    names: &[String; 3],
    dim: usize,
    out: usize,
    last: Activation,
) -> Result<Vec<Linear>, ModelError> {
    Ok(vec![
        linear(b, &names[0], dim, dim, Activation::Relu)?,
        linear(b, &names[1], dim, dim, Activation::Relu)?,
        linear(b, &names[2], dim, out, last)?,
    ])
}

/// Runs an [`mlp`].
pub fn run_mlp(layers: &[Linear], x: &Array2<f32>, name: &str) -> Result<Array2<f32>, ModelError> {
    let mut x = x.clone();
    for (i, l) in layers.iter().enumerate() {
        x = l.forward(x.view()).ctx(|| format!("{name}.layers.{i}"))?;
    }
    Ok(x)
}

/// `PositionEmbeddingSine(num_pos_feats, temperature=10000, normalize=True, scale=2π)` of an
/// unpadded `h x w` map, as tokens `[h·w, 2·num_pos_feats]`: the first `num_pos_feats`
/// channels encode the row, the others the column; channel `2i` is a sine and `2i + 1` a
/// cosine of `embed / 10000^(2i / num_pos_feats)`, where `embed = k / (n + 1e-6) · 2π` for
/// the 1-based row (column) `k` of `n`. All in f32, step by step as torch computes it.
pub fn sine_position_embedding(h: usize, w: usize, num_pos_feats: usize) -> Array2<f32> {
    let scale = (2.0 * std::f64::consts::PI) as f32;
    let eps = 1e-6f32;
    let dim_t: Vec<f32> = (0..num_pos_feats)
        .map(|i| {
            let e = 2.0 * (i / 2) as f32 / num_pos_feats as f32;
            10000f32.powf(e)
        })
        .collect();
    let embed = |k: usize, n: usize| (k as f32 / (n as f32 + eps)) * scale;
    let encode = |e: f32, out: &mut [f32]| {
        for (i, (o, &t)) in out.iter_mut().zip(&dim_t).enumerate() {
            let v = e / t;
            *o = if i % 2 == 0 { v.sin() } else { v.cos() };
        }
    };
    let rows: Vec<Vec<f32>> = (1..=h)
        .map(|k| {
            let mut v = vec![0f32; num_pos_feats];
            encode(embed(k, h), &mut v);
            v
        })
        .collect();
    let cols: Vec<Vec<f32>> = (1..=w)
        .map(|k| {
            let mut v = vec![0f32; num_pos_feats];
            encode(embed(k, w), &mut v);
            v
        })
        .collect();
    let mut pos = Array2::<f32>::zeros((h * w, 2 * num_pos_feats));
    for (t, mut row) in pos.outer_iter_mut().enumerate() {
        let (y, x) = (t / w, t % w);
        for (dst, src) in row.iter_mut().zip(rows[y].iter().chain(&cols[x])) {
            *dst = *src;
        }
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_by_hand() {
        let pos = sine_position_embedding(2, 3, 4);
        assert_eq!(pos.dim(), (6, 8));
        // Token (row 1 of 2, column 2 of 3): y = 1/2·2π, x = 2/3·2π (up to the eps).
        let t = &pos.row(1);
        let y = 1.0f32 / (2.0 + 1e-6) * (2.0 * std::f64::consts::PI) as f32;
        let x = 2.0f32 / (3.0 + 1e-6) * (2.0 * std::f64::consts::PI) as f32;
        assert!((t[0] - y.sin()).abs() < 1e-6 && (t[1] - y.cos()).abs() < 1e-6);
        // Channels 2, 3 divide by 10000^(2/4) = 100.
        assert!((t[2] - (y / 100.0).sin()).abs() < 1e-6);
        assert!((t[4] - x.sin()).abs() < 1e-6 && (t[7] - (x / 100.0).cos()).abs() < 1e-6);
    }
}
