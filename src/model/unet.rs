//! The AVDC / VideoAgent video U-Net (`UNetModel` with `dims=3, task_tokens=True`).
//! Every `vb.pp(..)` path is the reference state_dict path without its `unet.` prefix.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::attention::AttentionBlock;
use super::blocks::{Layer, ResBlock, Sequential};
use super::config::UNetConfig;
use super::conv::FactorizedConv;
use super::layers::{GroupNorm, linear};
use super::perceiver::PerceiverResampler;
use super::video::{Conditioning, unet_input};

#[derive(Debug, Clone)]
pub struct UNet {
    /// Of the weights and activations (f32, or bf16 for `Precision::Bf16`).
    dtype: DType,
    in_channels: usize,
    model_channels: usize,
    levels: usize,
    time_embed_in: Linear,
    time_embed_out: Linear,
    resampler: PerceiverResampler,
    task_proj: Linear,
    input_blocks: Vec<Sequential>,
    middle_block: Sequential,
    output_blocks: Vec<Sequential>,
    out_norm: GroupNorm,
    out_conv: FactorizedConv,
}

impl UNet {
    pub fn new(cfg: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        let mc = cfg.model_channels;
        let emb_dim = cfg.time_embed_dim();
        let heads = cfg.num_head_channels;
        let has_attention = |ds: usize| cfg.attention_resolutions.contains(&ds);
        let Some(&first_mult) = cfg.channel_mult.first() else {
            candle_core::bail!("channel_mult must not be empty");
        };
        let input_vb = vb.pp("input_blocks");
        let mut ch = first_mult * mc;
        let input_ch = ch;
        let stem = FactorizedConv::new(cfg.in_channels, ch, 3, 1, input_vb.pp("0.0"))?;
        let mut input_blocks = vec![Sequential(vec![Layer::Conv(stem)])];
        let mut skip_channels = vec![ch];
        let mut ds = 1;
        for (level, &mult) in cfg.channel_mult.iter().enumerate() {
            for _ in 0..cfg.num_res_blocks {
                let block_vb = input_vb.pp(input_blocks.len());
                let layers = res_then_attention(
                    ch,
                    mult * mc,
                    emb_dim,
                    has_attention(ds).then_some(heads),
                    &block_vb,
                )?;
                ch = mult * mc;
                input_blocks.push(Sequential(layers));
                skip_channels.push(ch);
            }
            if level + 1 != cfg.channel_mult.len() {
                let op_vb = input_vb.pp(input_blocks.len()).pp("0.op");
                let down = FactorizedConv::new(ch, ch, 3, 2, op_vb)?;
                input_blocks.push(Sequential(vec![Layer::Conv(down)]));
                skip_channels.push(ch);
                ds *= 2;
            }
        }

        let middle_vb = vb.pp("middle_block");
        let middle_block = Sequential(vec![
            Layer::Res(ResBlock::new(ch, ch, emb_dim, middle_vb.pp("0"))?),
            Layer::Attention(AttentionBlock::new(ch, heads, middle_vb.pp("1"))?),
            Layer::Res(ResBlock::new(ch, ch, emb_dim, middle_vb.pp("2"))?),
        ]);

        let output_vb = vb.pp("output_blocks");
        let mut output_blocks = Vec::new();
        for (level, &mult) in cfg.channel_mult.iter().enumerate().rev() {
            for i in 0..=cfg.num_res_blocks {
                let block_vb = output_vb.pp(output_blocks.len());
                let Some(skip) = skip_channels.pop() else {
                    candle_core::bail!("U-Net decoder has more blocks than encoder outputs");
                };
                let mut layers = res_then_attention(
                    ch + skip,
                    mult * mc,
                    emb_dim,
                    has_attention(ds).then_some(heads),
                    &block_vb,
                )?;
                ch = mult * mc;
                if level > 0 && i == cfg.num_res_blocks {
                    let conv_vb = block_vb.pp(layers.len()).pp("conv");
                    layers.push(Layer::Upsample(FactorizedConv::new(ch, ch, 3, 1, conv_vb)?));
                    ds /= 2;
                }
                output_blocks.push(Sequential(layers));
            }
        }

        Ok(Self {
            dtype: vb.dtype(),
            in_channels: cfg.in_channels,
            model_channels: mc,
            levels: cfg.channel_mult.len(),
            time_embed_in: linear(mc, emb_dim, true, vb.pp("time_embed.0"))?,
            time_embed_out: linear(emb_dim, emb_dim, true, vb.pp("time_embed.2"))?,
            // The text pooling stays f32 in every precision: its layer norms and attention
            // over a few tokens cost nothing and lose a quarter of their output in bf16.
            resampler: PerceiverResampler::new(
                cfg.task_token_channels,
                vb.pp("task_attnpool.0").set_dtype(DType::F32),
            )?,
            task_proj: linear(
                cfg.task_token_channels,
                emb_dim,
                true,
                vb.pp("task_attnpool.1").set_dtype(DType::F32),
            )?,
            input_blocks,
            middle_block,
            output_blocks,
            out_norm: GroupNorm::new(ch, vb.pp("out.0"))?,
            out_conv: FactorizedConv::new(input_ch, cfg.out_channels, 3, 1, vb.pp("out.2"))?,
        })
    }

    /// The input [`Self::forward`] takes for `noisy` frames under `cond` (see [`unet_input`]).
    pub fn input(&self, noisy: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        unet_input(noisy, cond, self.in_channels)
    }

    /// `time_embed(timestep_embedding(t, model_channels))`: `t` `(b,)` -> `(b, 4 model_channels)`.
    /// The sinusoid is `[cos(t f_i), sin(t f_i)]` with `f_i = exp(-ln(10000) i / half)`.
    pub fn time_embedding(&self, t: &Tensor) -> Result<Tensor> {
        let half = self.model_channels / 2;
        let freqs: Vec<f32> = (0..half)
            .map(|i| (-(10000f32.ln()) * i as f32 / half as f32).exp())
            .collect();
        let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
        let args = t
            .to_dtype(DType::F32)?
            .unsqueeze(1)?
            .broadcast_mul(&freqs)?;
        let mut parts = vec![args.cos()?, args.sin()?];
        if !self.model_channels.is_multiple_of(2) {
            parts.push(args.narrow(1, 0, 1)?.zeros_like()?);
        }
        let sinusoid = Tensor::cat(&parts, 1)?.to_dtype(self.dtype)?;
        self.time_embed_out
            .forward(&self.time_embed_in.forward(&sinusoid)?.silu()?)
    }

    /// `task_attnpool(tokens).mean(dim=1)`: `(b, L, D)` -> `(b, 4 model_channels)`; it is added
    /// to the time embedding (no cross-attention in this network).
    pub fn task_embedding(&self, tokens: &Tensor) -> Result<Tensor> {
        self.task_proj
            .forward(&self.resampler.forward(&tokens.to_dtype(DType::F32)?)?)?
            .mean(1)?
            .to_dtype(self.dtype)
    }

    /// `x`: `(b, in_channels, f, h, w)` (noisy frames, then conditioning frames), `t`: `(b,)`
    /// timesteps, `task_embed`: `(b, L, task_token_channels)` -> `(b, out_channels, f, h, w)`.
    /// Inputs of any float type are cast to the weights' type; the output is f32.
    pub fn forward(&self, x: &Tensor, t: &Tensor, task_embed: &Tensor) -> Result<Tensor> {
        super::parallel::on_gemm_pool(x.device(), || self.forward_here(x, t, task_embed))
    }

    fn forward_here(&self, x: &Tensor, t: &Tensor, task_embed: &Tensor) -> Result<Tensor> {
        let x = &x.to_dtype(self.dtype)?;
        let (b, c, frames, h, w) = x.dims5()?;
        let factor = 1 << (self.levels - 1);
        if !h.is_multiple_of(factor) || !w.is_multiple_of(factor) {
            candle_core::bail!("frame size {h}x{w} is not divisible by {factor}");
        }
        let emb = (self.time_embedding(t)? + self.task_embedding(task_embed)?)?;
        let mut h_act = x.permute((0, 2, 1, 3, 4))?.reshape((b * frames, c, h, w))?;
        let mut skips = Vec::with_capacity(self.input_blocks.len());
        for block in &self.input_blocks {
            h_act = block.forward(&h_act, &emb, frames)?;
            skips.push(h_act.clone());
        }
        h_act = self.middle_block.forward(&h_act, &emb, frames)?;
        for block in &self.output_blocks {
            let Some(skip) = skips.pop() else {
                candle_core::bail!("U-Net decoder has more blocks than encoder outputs");
            };
            h_act = block.forward(&Tensor::cat(&[&h_act, &skip], 1)?, &emb, frames)?;
        }
        let h_act = self.out_norm.forward_silu(&h_act, frames)?;
        let out = self.out_conv.forward(&h_act, frames)?;
        let out_channels = out.dim(1)?;
        out.reshape((b, frames, out_channels, h, w))?
            .permute((0, 2, 1, 3, 4))?
            .to_dtype(DType::F32)?
            .contiguous()
    }
}

/// A ResBlock (`<block>.0`) followed, at levels with attention, by an attention block
/// (`<block>.1`): the body of every encoder and decoder block.
fn res_then_attention(
    c_in: usize,
    c_out: usize,
    emb_dim: usize,
    attention_heads: Option<usize>,
    block_vb: &VarBuilder,
) -> Result<Vec<Layer>> {
    let mut layers = vec![Layer::Res(ResBlock::new(
        c_in,
        c_out,
        emb_dim,
        block_vb.pp("0"),
    )?)];
    if let Some(heads) = attention_heads {
        layers.push(Layer::Attention(AttentionBlock::new(
            c_out,
            heads,
            block_vb.pp("1"),
        )?));
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};
    use candle_nn::VarMap;

    use super::*;
    use crate::model::diffusion::Diffusion;

    #[test]
    fn gradients_reach_every_parameter_of_a_varmap_network() -> Result<()> {
        let cfg = UNetConfig::tiny();
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let unet = UNet::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
        let (h, w) = cfg.image_size;
        let video = |lo: f32| Tensor::rand(lo, 1.0, (2, 3, cfg.frames, h, w), &device);
        let tokens = Tensor::randn(0f32, 1.0, (2, 5, cfg.task_token_channels), &device)?;
        let noise = Tensor::randn(0f32, 1.0, (2, 3, cfg.frames, h, w), &device)?;
        let loss = Diffusion::default().loss(
            &unet,
            &video(-1.0)?,
            &Conditioning::Video(video(0.0)?),
            &tokens,
            &[3, 60],
            &noise,
        )?;
        let grads = loss.mean.backward()?;
        let data = varmap.data().lock().expect("varmap lock");
        let mut without: Vec<&String> = data
            .iter()
            .filter(|(_, var)| grads.get(var.as_tensor()).is_none())
            .map(|(name, _)| name)
            .collect();
        without.sort();
        assert!(without.is_empty(), "no gradient for {without:?}");
        Ok(())
    }
}
