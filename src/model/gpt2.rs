//! GPT-2 (gpt2, distilgpt2): learned position embeddings, pre-LayerNorm blocks, fused QKV
//! projection, GELU (tanh) MLP, LM head tied to the token embeddings.

use candle_core::Tensor;

use super::config::{Activation, ModelConfig};
use super::kernels;
use super::ops::{self, LayerCache, Linear, Mode};
use super::reverse::{ActKind, BlockRef, NormRef};
use super::weights::Weights;
use super::{Architecture, LayerCtx, LayerOut, Rope};
use crate::error::Result;

struct Norm {
    w: Tensor,
    b: Tensor,
}

struct Layer {
    ln_1: Norm,
    c_attn: Linear,
    c_proj: Linear,
    ln_2: Norm,
    c_fc: Linear,
    mlp_proj: Linear,
}

pub struct Gpt2 {
    cfg: ModelConfig,
    wte: Tensor,
    wpe: Tensor,
    layers: Vec<Layer>,
    ln_f: Norm,
    lm_head: Tensor,
}

impl Gpt2 {
    /// Builds the model from HF-named tensors. `conv1d`: weights are stored [in, out] (HF's
    /// Conv1D) rather than [out, in] (GGUF).
    pub fn from_weights(cfg: &ModelConfig, w: &mut Weights, conv1d: bool) -> Result<Self> {
        let (d, ffn, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        // Some GPT-2 checkpoints (e.g. the original `gpt2`) have no `transformer.` prefix.
        let p = if w.contains("transformer.wte.weight") {
            "transformer."
        } else {
            ""
        };
        let norm = |w: &mut Weights, name: &str| -> Result<Norm> {
            Ok(Norm {
                w: w.take(&format!("{p}{name}.weight"), &[d])?,
                b: w.take(&format!("{p}{name}.bias"), &[d])?,
            })
        };
        let lin = |w: &mut Weights, name: &str, out: usize, inp: usize| -> Result<Linear> {
            let bias = Some(w.take(&format!("{p}{name}.bias"), &[out])?);
            if conv1d {
                Ok(Linear::from_in_out(
                    w.take(&format!("{p}{name}.weight"), &[inp, out])?,
                    bias,
                ))
            } else {
                Linear::from_out_in(w.take(&format!("{p}{name}.weight"), &[out, inp])?, bias)
            }
        };
        let wte = w.take(&format!("{p}wte.weight"), &[v, d])?;
        let wpe = w.take(&format!("{p}wpe.weight"), &[cfg.max_position_embeddings, d])?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let h = format!("h.{i}");
            layers.push(Layer {
                ln_1: norm(w, &format!("{h}.ln_1"))?,
                c_attn: lin(w, &format!("{h}.attn.c_attn"), 3 * d, d)?,
                c_proj: lin(w, &format!("{h}.attn.c_proj"), d, d)?,
                ln_2: norm(w, &format!("{h}.ln_2"))?,
                c_fc: lin(w, &format!("{h}.mlp.c_fc"), ffn, d)?,
                mlp_proj: lin(w, &format!("{h}.mlp.c_proj"), d, ffn)?,
            });
        }
        let ln_f = norm(w, "ln_f")?;
        let lm_head = match w.take_opt("lm_head.weight", &[v, d])? {
            Some(t) => t,
            None => wte.clone(),
        };
        Ok(Gpt2 {
            cfg: cfg.clone(),
            wte,
            wpe,
            layers,
            ln_f,
            lm_head,
        })
    }

    fn norm_ref<'a>(&self, n: &'a Norm) -> NormRef<'a> {
        NormRef::Layer {
            w: &n.w,
            b: &n.b,
            eps: self.cfg.norm_eps as f32,
        }
    }

    fn ln(&self, x: &Tensor, n: &Norm, mode: Mode) -> Result<Tensor> {
        ops::layer_norm(x, &n.w, &n.b, self.cfg.norm_eps, mode)
    }
}

impl Architecture for Gpt2 {
    fn embed_tokens(&self) -> &Tensor {
        &self.wte
    }

    fn lm_head(&self) -> &Tensor {
        &self.lm_head
    }

    fn input(&self, embeds: &Tensor, positions: &Tensor) -> Result<(Tensor, Option<Rope>)> {
        let (b, t) = positions.dims2()?;
        let pos = self
            .wpe
            .index_select(&positions.flatten_all()?, 0)?
            .reshape((b, t, self.cfg.hidden_size))?;
        Ok(((embeds + pos)?, None))
    }

    fn layer(
        &self,
        l: usize,
        x: &Tensor,
        ctx: &LayerCtx,
        cache: Option<&mut LayerCache>,
    ) -> Result<LayerOut> {
        let layer = &self.layers[l];
        let h = self.ln(x, &layer.ln_1, ctx.mode)?;
        let qkv = layer.c_attn.forward(&h, ctx.mode)?;
        let layout = kernels::QkvLayout {
            n_heads: self.cfg.n_heads,
            n_kv_heads: self.cfg.n_heads,
            head_dim: self.cfg.head_dim,
        };
        let (a, probs) = ops::self_attention(&qkv, layout, ctx, cache)?;
        let x = (x + layer.c_proj.forward(&a, ctx.mode)?)?;
        let h = self.ln(&x, &layer.ln_2, ctx.mode)?;
        let pre = layer.c_fc.forward(&h, ctx.mode)?;
        let act = match self.cfg.activation {
            Activation::Gelu => pre.gelu_erf()?,
            _ => pre.gelu()?,
        };
        let x = (x + layer.mlp_proj.forward(&act, ctx.mode)?)?;
        Ok(LayerOut {
            x,
            mlp: ctx.want_mlp.then_some(act),
            attn: probs,
        })
    }

    fn final_norm(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.ln(x, &self.ln_f, mode)
    }

    fn block(&self, l: usize) -> BlockRef<'_> {
        let layer = &self.layers[l];
        BlockRef {
            norm1: self.norm_ref(&layer.ln_1),
            qkv: &layer.c_attn,
            o: &layer.c_proj,
            norm2: self.norm_ref(&layer.ln_2),
            up: &layer.c_fc,
            act: match self.cfg.activation {
                Activation::Gelu => ActKind::GeluErf,
                _ => ActKind::GeluTanh,
            },
            down: &layer.mlp_proj,
        }
    }

    fn final_norm_ref(&self) -> NormRef<'_> {
        self.norm_ref(&self.ln_f)
    }

    fn position_embeddings(&self) -> Option<&Tensor> {
        Some(&self.wpe)
    }

    fn rope_tables(&self) -> Option<(&Tensor, &Tensor)> {
        None
    }
}
