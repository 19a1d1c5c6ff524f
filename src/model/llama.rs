//! The Llama family (Llama, Mistral, Qwen2, SmolLM2): RMSNorm, rotary position embeddings
//! (rotate-half layout), grouped-query attention, SwiGLU MLP; optional q/k/v bias (Qwen2).

use candle_core::Tensor;

use super::config::ModelConfig;
use super::ops::{self, LayerCache, Linear, Mode, RopeTable};
use super::reverse::{ActKind, BlockRef, NormRef};
use super::weights::Weights;
use super::{Architecture, LayerCtx, LayerOut, Rope};
use super::{autodiff, kernels};
use crate::error::Result;

fn proj(w: &mut Weights, name: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
    Linear::from_out_in(
        w.take(&format!("{name}.weight"), &[out, inp])?,
        w.take_if(bias, &format!("{name}.bias"), &[out])?,
    )
}

struct Layer {
    input_norm: Tensor,
    /// q, k and v projections stacked into one [hq + 2 hkv, d] matrix: one matmul instead of three.
    qkv: Linear,
    o: Linear,
    post_norm: Tensor,
    /// gate and up projections stacked into one [2 ffn, d] matrix.
    gate_up: Linear,
    down: Linear,
}

pub struct Llama {
    cfg: ModelConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,
    rope: RopeTable,
}

impl Llama {
    pub fn from_weights(cfg: &ModelConfig, w: &mut Weights) -> Result<Self> {
        let (d, ffn, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let (hq, hkv) = (cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim);
        let embed = w.take("model.embed_tokens.weight", &[v, d])?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let p = format!("model.layers.{i}");
            layers.push(Layer {
                input_norm: w.take(&format!("{p}.input_layernorm.weight"), &[d])?,
                qkv: Linear::stack(vec![
                    proj(w, &format!("{p}.self_attn.q_proj"), hq, d, cfg.qkv_bias)?,
                    proj(w, &format!("{p}.self_attn.k_proj"), hkv, d, cfg.qkv_bias)?,
                    proj(w, &format!("{p}.self_attn.v_proj"), hkv, d, cfg.qkv_bias)?,
                ])?,
                o: proj(w, &format!("{p}.self_attn.o_proj"), d, hq, cfg.o_bias)?,
                post_norm: w.take(&format!("{p}.post_attention_layernorm.weight"), &[d])?,
                gate_up: Linear::stack(vec![
                    proj(w, &format!("{p}.mlp.gate_proj"), ffn, d, cfg.mlp_bias)?,
                    proj(w, &format!("{p}.mlp.up_proj"), ffn, d, cfg.mlp_bias)?,
                ])?,
                down: proj(w, &format!("{p}.mlp.down_proj"), d, ffn, cfg.mlp_bias)?,
            });
        }
        let norm = w.take("model.norm.weight", &[d])?;
        let lm_head = match w.take_opt("lm_head.weight", &[v, d])? {
            Some(t) => t,
            None if cfg.tie_word_embeddings => embed.clone(),
            None => {
                return Err(crate::Error::model(
                    &w.source,
                    "tensor `lm_head.weight` is missing and the config does not tie it to the embeddings",
                ));
            }
        };
        let rope = RopeTable::new(
            cfg.head_dim,
            cfg.rope_theta,
            &cfg.rope_scaling,
            cfg.max_position_embeddings,
            embed.device(),
        )?;
        Ok(Llama {
            cfg: cfg.clone(),
            embed,
            layers,
            norm,
            lm_head,
            rope,
        })
    }
}

impl Architecture for Llama {
    fn embed_tokens(&self) -> &Tensor {
        &self.embed
    }

    fn lm_head(&self) -> &Tensor {
        &self.lm_head
    }

    fn input(&self, embeds: &Tensor, positions: &Tensor) -> Result<(Tensor, Option<Rope>)> {
        Ok((embeds.clone(), Some(self.rope.select(positions)?)))
    }

    fn layer(
        &self,
        l: usize,
        x: &Tensor,
        ctx: &LayerCtx,
        cache: Option<&mut LayerCache>,
    ) -> Result<LayerOut> {
        let layer = &self.layers[l];
        let cfg = &self.cfg;
        let h = ops::rms_norm(x, &layer.input_norm, cfg.norm_eps, ctx.mode)?;
        let qkv = layer.qkv.forward(&h, ctx.mode)?;
        let layout = kernels::QkvLayout {
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
        };
        let (a, probs) = ops::self_attention(&qkv, layout, ctx, cache)?;
        let x = (x + layer.o.forward(&a, ctx.mode)?)?;
        let h = ops::rms_norm(&x, &layer.post_norm, cfg.norm_eps, ctx.mode)?;
        let gate_up = layer.gate_up.forward(&h, ctx.mode)?;
        let act = match ctx.mode {
            Mode::Fast => kernels::swiglu(&gate_up)?,
            Mode::Differentiable => gate_up.contiguous()?.apply_op1(autodiff::Swiglu)?,
        };
        let x = (x + layer.down.forward(&act, ctx.mode)?)?;
        Ok(LayerOut {
            x,
            mlp: ctx.want_mlp.then_some(act),
            attn: probs,
        })
    }

    fn final_norm(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        ops::rms_norm(x, &self.norm, self.cfg.norm_eps, mode)
    }

    fn block(&self, l: usize) -> BlockRef<'_> {
        let layer = &self.layers[l];
        let eps = self.cfg.norm_eps as f32;
        BlockRef {
            norm1: NormRef::Rms {
                w: &layer.input_norm,
                eps,
            },
            qkv: &layer.qkv,
            o: &layer.o,
            norm2: NormRef::Rms {
                w: &layer.post_norm,
                eps,
            },
            up: &layer.gate_up,
            act: ActKind::SwiGlu,
            down: &layer.down,
        }
    }

    fn final_norm_ref(&self) -> NormRef<'_> {
        NormRef::Rms {
            w: &self.norm,
            eps: self.cfg.norm_eps as f32,
        }
    }

    fn position_embeddings(&self) -> Option<&Tensor> {
        None
    }

    fn rope_tables(&self) -> Option<(&Tensor, &Tensor)> {
        Some(self.rope.tables())
    }
}
