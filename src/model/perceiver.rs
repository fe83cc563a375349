//! Imagen's Perceiver resampler (`task_attnpool.0`): text tokens -> 68 latents (4 from the
//! mean-pooled tokens, 64 learned) refined by 2 layers of cross-attention + feed-forward.

use candle_core::{D, Module, Result, Tensor};
use candle_nn::{Init, Linear, VarBuilder};

use super::fused::softmax_last_dim;
use super::layers::{GainLayerNorm, LayerNorm, linear};

const DEPTH: usize = 2;
const HEADS: usize = 8;
const DIM_HEAD: usize = 64;
const NUM_LATENTS: usize = 64;
const NUM_LATENTS_MEAN_POOLED: usize = 4;
const MAX_SEQ_LEN: usize = 512;
const FF_MULT: usize = 4;
/// Logit multiplier applied after the q/k L2 normalisation.
const ATTN_SCALE: f64 = 8.0;

/// `F.normalize(x, dim=-1)`: divide by the L2 norm, clamped below at 1e-12.
fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norm)
}

/// `(b, n, heads * dim_head)` -> `(b, heads, n, dim_head)`.
fn split_heads(x: &Tensor) -> Result<Tensor> {
    let (b, n, _) = x.dims3()?;
    x.reshape((b, n, HEADS, DIM_HEAD))?.transpose(1, 2)
}

#[derive(Debug, Clone)]
struct PerceiverAttention {
    norm: LayerNorm,
    norm_latents: LayerNorm,
    to_q: Linear,
    to_kv: Linear,
    q_scale: Tensor,
    k_scale: Tensor,
    to_out: Linear,
    to_out_norm: LayerNorm,
}

impl PerceiverAttention {
    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let inner = HEADS * DIM_HEAD;
        Ok(Self {
            norm: LayerNorm::new(dim, vb.pp("norm"))?,
            norm_latents: LayerNorm::new(dim, vb.pp("norm_latents"))?,
            to_q: linear(dim, inner, false, vb.pp("to_q"))?,
            to_kv: linear(dim, 2 * inner, false, vb.pp("to_kv"))?,
            q_scale: vb.get_with_hints(DIM_HEAD, "q_scale", Init::Const(1.0))?,
            k_scale: vb.get_with_hints(DIM_HEAD, "k_scale", Init::Const(1.0))?,
            to_out: linear(inner, dim, false, vb.pp("to_out.0"))?,
            to_out_norm: LayerNorm::new(dim, vb.pp("to_out.1"))?,
        })
    }

    /// `tokens`: `(b, L, dim)`, `latents`: `(b, n, dim)` -> `(b, n, dim)`.
    fn forward(&self, tokens: &Tensor, latents: &Tensor) -> Result<Tensor> {
        let tokens = self.norm.forward(tokens)?;
        let latents = self.norm_latents.forward(latents)?;
        let (b, n, _) = latents.dims3()?;
        let inner = HEADS * DIM_HEAD;
        let q = split_heads(&self.to_q.forward(&latents)?)?;
        let kv = self.to_kv.forward(&Tensor::cat(&[&tokens, &latents], 1)?)?;
        let k = split_heads(&kv.narrow(D::Minus1, 0, inner)?)?;
        let v = split_heads(&kv.narrow(D::Minus1, inner, inner)?)?.contiguous()?;
        let q = l2_normalize(&q)?.broadcast_mul(&self.q_scale)?;
        let k = l2_normalize(&k)?.broadcast_mul(&self.k_scale)?;
        let sim = (q.contiguous()?.matmul(&k.transpose(2, 3)?.contiguous()?)? * ATTN_SCALE)?;
        let attn = softmax_last_dim(&sim)?;
        let out = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, n, inner))?;
        self.to_out_norm.forward(&self.to_out.forward(&out)?)
    }
}

/// Imagen's `FeedForward`: gain-only LayerNorm, Linear, exact GELU, LayerNorm, Linear.
#[derive(Debug, Clone)]
struct FeedForward {
    norm_in: GainLayerNorm,
    proj_in: Linear,
    norm_hidden: GainLayerNorm,
    proj_out: Linear,
}

impl FeedForward {
    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let hidden = dim * FF_MULT;
        Ok(Self {
            norm_in: GainLayerNorm::new(dim, vb.pp("0"))?,
            proj_in: linear(dim, hidden, false, vb.pp("1"))?,
            norm_hidden: GainLayerNorm::new(hidden, vb.pp("3"))?,
            proj_out: linear(hidden, dim, false, vb.pp("4"))?,
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self
            .proj_in
            .forward(&self.norm_in.forward(x)?)?
            .gelu_erf()?;
        self.proj_out.forward(&self.norm_hidden.forward(&h)?)
    }
}

#[derive(Debug, Clone)]
pub struct PerceiverResampler {
    pos_emb: Tensor,
    latents: Tensor,
    mean_pooled_norm: GainLayerNorm,
    mean_pooled_proj: Linear,
    layers: Vec<(PerceiverAttention, FeedForward)>,
    dim: usize,
}

impl PerceiverResampler {
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let standard_normal = Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        };
        let to_latents = vb.pp("to_latents_from_mean_pooled_seq");
        let layers = (0..DEPTH)
            .map(|i| {
                let layer = vb.pp("layers").pp(i);
                Ok((
                    PerceiverAttention::new(dim, layer.pp("0"))?,
                    FeedForward::new(dim, layer.pp("1"))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            pos_emb: vb.pp("pos_emb").get_with_hints(
                (MAX_SEQ_LEN, dim),
                "weight",
                standard_normal,
            )?,
            latents: vb.get_with_hints((NUM_LATENTS, dim), "latents", standard_normal)?,
            mean_pooled_norm: GainLayerNorm::new(dim, to_latents.pp("0"))?,
            mean_pooled_proj: linear(dim, dim * NUM_LATENTS_MEAN_POOLED, true, to_latents.pp("1"))?,
            layers,
            dim,
        })
    }

    /// `tokens`: `(b, L, dim)` with `L <= 512` -> latents `(b, 68, dim)`.
    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        let (b, len, _) = tokens.dims3()?;
        if len > MAX_SEQ_LEN {
            candle_core::bail!(
                "task embedding has {len} tokens, the resampler takes at most {MAX_SEQ_LEN}"
            );
        }
        let with_pos = tokens.broadcast_add(&self.pos_emb.narrow(0, 0, len)?)?;
        // The mean-pooled latents come from the tokens without positions, as upstream.
        let pooled = self
            .mean_pooled_proj
            .forward(&self.mean_pooled_norm.forward(&tokens.mean(1)?)?)?
            .reshape((b, NUM_LATENTS_MEAN_POOLED, self.dim))?;
        let learned = self
            .latents
            .unsqueeze(0)?
            .broadcast_as((b, NUM_LATENTS, self.dim))?;
        let mut latents = Tensor::cat(&[&pooled, &learned], 1)?;
        for (attention, feed_forward) in &self.layers {
            latents = (attention.forward(&with_pos, &latents)? + &latents)?;
            latents = (feed_forward.forward(&latents)? + &latents)?;
        }
        Ok(latents)
    }
}
