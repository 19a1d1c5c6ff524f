//! The Llama family (Llama, Mistral, Qwen2, Qwen3, OLMo-2, SmolLM2): RMSNorm, rotary position
//! embeddings (rotate-half layout), grouped-query attention, SwiGLU MLP; q/k/v biases (Qwen2),
//! per-head q/k norms (Qwen3), norms on the sublayers' outputs and whole-projection q/k norms
//! (OLMo-2). HF weight names; `gguf.rs` maps llama.cpp's names onto these.

use super::block::{ActKind, Block, Norm};
use super::config::{ModelConfig, NormPlacement, QkNorm};
use super::transformer::{Transformer, build};
use super::weights::Weights;
use crate::error::Result;

pub fn load(cfg: &ModelConfig, w: &mut Weights) -> Result<Transformer> {
    let (d, v) = (cfg.hidden_size, cfg.vocab_size);
    let (hq, hkv) = (cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim);
    let eps = cfg.norm_eps;
    let embed = w.take_matrix("model.embed_tokens.weight", &[v, d])?;
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("model.layers.{l}");
        let mut norm = |name: &str, width: usize| -> Result<Norm> {
            Ok(Norm::rms(
                w.take(&format!("{p}.{name}.weight"), &[width])?,
                eps,
            ))
        };
        let (q_norm, k_norm) = match cfg.qk_norm {
            QkNorm::None => (None, None),
            QkNorm::PerHead => (
                Some(norm("self_attn.q_norm", cfg.head_dim)?),
                Some(norm("self_attn.k_norm", cfg.head_dim)?),
            ),
            QkNorm::Whole => (
                Some(norm("self_attn.q_norm", hq)?),
                Some(norm("self_attn.k_norm", hkv)?),
            ),
        };
        let (attn_in, attn_out, mlp_in, mlp_out) = match cfg.norm_placement {
            NormPlacement::Post => (
                None,
                Some(norm("post_attention_layernorm", d)?),
                None,
                Some(norm("post_feedforward_layernorm", d)?),
            ),
            _ => (
                Some(norm("input_layernorm", d)?),
                None,
                Some(norm("post_attention_layernorm", d)?),
                None,
            ),
        };
        let sa = format!("{p}.self_attn");
        let qkv = build::qkv(w, &sa, cfg)?;
        let o = build::proj(w, &format!("{sa}.o_proj"), d, hq, cfg.o_bias)?;
        let mlp = build::gated_mlp(w, &format!("{p}.mlp"), cfg, ActKind::SwiGlu)?;
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
    let final_norm = Norm::rms(w.take("model.norm.weight", &[d])?, eps);
    let lm_head = build::lm_head(cfg, w, "lm_head.weight", &embed)?;
    let ropes = build::ropes(cfg, embed.device())?;
    Ok(Transformer::decoder(
        embed, ropes, blocks, final_norm, lm_head,
    ))
}
