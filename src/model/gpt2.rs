//! GPT-2 (gpt2, distilgpt2): learned position embeddings, pre-LayerNorm blocks, fused QKV
//! projection, GELU (tanh) MLP, LM head tied to the token embeddings.

use candle_core::Tensor;

use super::config::{Activation, ModelConfig};
use super::ops::{self, LayerCache, Mode};
use super::weights::Weights;
use super::{Architecture, LayerCtx, LayerOut, Rope};
use crate::error::Result;

struct Norm {
    w: Tensor,
    b: Tensor,
}

struct Layer {
    ln_1: Norm,
    /// [3d, d] (linear layout; HF's Conv1D [d, 3d] is transposed at load).
    c_attn_w: Tensor,
    c_attn_b: Tensor,
    c_proj_w: Tensor,
    c_proj_b: Tensor,
    ln_2: Norm,
    fc_w: Tensor,
    fc_b: Tensor,
    proj_w: Tensor,
    proj_b: Tensor,
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
    /// Builds the model from HF-named tensors. `conv1d`: weights are stored [in, out] (HF's Conv1D)
    /// rather than [out, in] (GGUF).
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
        let lin =
            |w: &mut Weights, name: &str, out: usize, inp: usize| -> Result<(Tensor, Tensor)> {
                let weight = if conv1d {
                    w.take(&format!("{p}{name}.weight"), &[inp, out])?
                        .t()?
                        .contiguous()?
                } else {
                    w.take(&format!("{p}{name}.weight"), &[out, inp])?
                };
                Ok((weight, w.take(&format!("{p}{name}.bias"), &[out])?))
            };
        let wte = w.take(&format!("{p}wte.weight"), &[v, d])?;
        let wpe = w.take(&format!("{p}wpe.weight"), &[cfg.max_position_embeddings, d])?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let h = format!("h.{i}");
            let (c_attn_w, c_attn_b) = lin(w, &format!("{h}.attn.c_attn"), 3 * d, d)?;
            let (c_proj_w, c_proj_b) = lin(w, &format!("{h}.attn.c_proj"), d, d)?;
            let (fc_w, fc_b) = lin(w, &format!("{h}.mlp.c_fc"), ffn, d)?;
            let (proj_w, proj_b) = lin(w, &format!("{h}.mlp.c_proj"), d, ffn)?;
            layers.push(Layer {
                ln_1: norm(w, &format!("{h}.ln_1"))?,
                c_attn_w,
                c_attn_b,
                c_proj_w,
                c_proj_b,
                ln_2: norm(w, &format!("{h}.ln_2"))?,
                fc_w,
                fc_b,
                proj_w,
                proj_b,
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
        let d = self.cfg.hidden_size;
        let h = self.ln(x, &layer.ln_1, ctx.mode)?;
        let qkv = ops::linear(&h, &layer.c_attn_w, Some(&layer.c_attn_b))?;
        let q = ops::split_heads(&qkv.narrow(2, 0, d)?, self.cfg.n_heads)?;
        let k = ops::split_heads(&qkv.narrow(2, d, d)?, self.cfg.n_heads)?.contiguous()?;
        let v = ops::split_heads(&qkv.narrow(2, 2 * d, d)?, self.cfg.n_heads)?.contiguous()?;
        let (k, v) = ops::cache_append(cache, k, v)?;
        let (a, probs) = ops::attend(&q, &k, &v, ctx.bias, ctx.mode, ctx.want_attn)?;
        let x = (x + ops::linear(&a, &layer.c_proj_w, Some(&layer.c_proj_b))?)?;
        let h = self.ln(&x, &layer.ln_2, ctx.mode)?;
        let pre = ops::linear(&h, &layer.fc_w, Some(&layer.fc_b))?;
        let act = match self.cfg.activation {
            Activation::Gelu => pre.gelu_erf()?,
            _ => pre.gelu()?,
        };
        let x = (x + ops::linear(&act, &layer.proj_w, Some(&layer.proj_b))?)?;
        Ok(LayerOut {
            x,
            mlp: ctx.want_mlp.then_some(act),
            attn: probs,
        })
    }

    fn final_norm(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.ln(x, &self.ln_f, mode)
    }
}
