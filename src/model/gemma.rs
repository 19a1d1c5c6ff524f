//! Gemma, Gemma 2 and Gemma 3 (text): token embeddings scaled by sqrt(d), RMSNorm with a
//! (1 + w) weight (folded into `w` here), GeGLU with tanh GELU, multi-query or grouped
//! attention. Gemma 2 and 3 add norms on the sublayers' outputs, a query scale from
//! `query_pre_attn_scalar`, and sliding-window layers alternating with global ones; Gemma 2
//! soft-caps attention scores and final logits; Gemma 3 has per-head q/k norms and its own RoPE
//! base for the sliding layers. HF weight names.

use candle_core::Tensor;

use super::block::{ActKind, Block, Norm};
use super::config::{ModelConfig, NormPlacement, QkNorm};
use super::transformer::{Transformer, build};
use super::weights::Weights;
use crate::error::Result;

/// Gemma's RMSNorm `x_normed * (1 + w)`, as a plain RMSNorm of weight 1 + w.
fn norm(w: &mut Weights, name: &str, width: usize, eps: f64) -> Result<Norm> {
    let t: Tensor = w.take(&format!("{name}.weight"), &[width])?;
    Ok(Norm::rms((t + 1.0)?, eps))
}

pub fn load(cfg: &ModelConfig, w: &mut Weights) -> Result<Transformer> {
    let (d, v) = (cfg.hidden_size, cfg.vocab_size);
    let hq = cfg.n_heads * cfg.head_dim;
    let eps = cfg.norm_eps;
    let embed = w.take_matrix("model.embed_tokens.weight", &[v, d])?;
    let sandwich = cfg.norm_placement == NormPlacement::Sandwich;
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("model.layers.{l}");
        let sa = format!("{p}.self_attn");
        let (q_norm, k_norm) = match cfg.qk_norm {
            QkNorm::PerHead => (
                Some(norm(w, &format!("{sa}.q_norm"), cfg.head_dim, eps)?),
                Some(norm(w, &format!("{sa}.k_norm"), cfg.head_dim, eps)?),
            ),
            _ => (None, None),
        };
        let qkv = build::qkv(w, &sa, cfg)?;
        let o = build::proj(w, &format!("{sa}.o_proj"), d, hq, cfg.o_bias)?;
        let attn_in = Some(norm(w, &format!("{p}.input_layernorm"), d, eps)?);
        let (attn_out, mlp_in, mlp_out) = if sandwich {
            (
                Some(norm(w, &format!("{p}.post_attention_layernorm"), d, eps)?),
                Some(norm(w, &format!("{p}.pre_feedforward_layernorm"), d, eps)?),
                Some(norm(w, &format!("{p}.post_feedforward_layernorm"), d, eps)?),
            )
        } else {
            (
                None,
                Some(norm(w, &format!("{p}.post_attention_layernorm"), d, eps)?),
                None,
            )
        };
        let mlp = build::gated_mlp(w, &format!("{p}.mlp"), cfg, ActKind::GeGluTanh)?;
        blocks.push(Block {
            attn_in,
            attn_out,
            attn_res: None,
            attn: build::attention(cfg, l, qkv, o, q_norm, k_norm),
            mlp_in,
            mlp_out,
            mlp_res: None,
            mlp,
            parallel: false,
        });
    }
    let final_norm = norm(w, "model.norm", d, eps)?;
    let lm_head = build::lm_head(cfg, w, "lm_head.weight", &embed)?;
    let ropes = build::ropes(cfg, embed.device())?;
    Ok(Transformer {
        // transformers multiplies by sqrt(d) rounded to the activations' dtype.
        embed_scale: Some((d as f64).sqrt() as f32),
        final_softcap: cfg.final_softcap.map(|c| c as f32),
        ..Transformer::decoder(embed, ropes, blocks, final_norm, lm_head)
    })
}
