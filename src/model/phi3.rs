//! Phi-3: the Llama block (RMSNorm, RoPE, GQA, SwiGLU) with a fused `qkv_proj` (already
//! q | k | v) and a fused `gate_up_proj` (gate | up), an optional sliding window on every
//! layer, partial rotary and long-context RoPE from its config. HF weight names.

use super::block::{ActKind, Block, Mlp, Norm};
use super::config::ModelConfig;
use super::transformer::{Transformer, build};
use super::weights::Weights;
use crate::error::Result;

pub fn load(cfg: &ModelConfig, w: &mut Weights) -> Result<Transformer> {
    let (d, ffn, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let hq = cfg.n_heads * cfg.head_dim;
    let wqkv = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim;
    let eps = cfg.norm_eps;
    let embed = w.take_matrix("model.embed_tokens.weight", &[v, d])?;
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("model.layers.{l}");
        let qkv = build::proj(w, &format!("{p}.self_attn.qkv_proj"), wqkv, d, cfg.qkv_bias)?;
        let o = build::proj(w, &format!("{p}.self_attn.o_proj"), d, hq, cfg.o_bias)?;
        blocks.push(Block {
            attn_in: Some(Norm::rms(
                w.take(&format!("{p}.input_layernorm.weight"), &[d])?,
                eps,
            )),
            attn_out: None,
            attn_res: None,
            attn: build::attention(cfg, l, qkv, o, None, None),
            mlp_in: Some(Norm::rms(
                w.take(&format!("{p}.post_attention_layernorm.weight"), &[d])?,
                eps,
            )),
            mlp_out: None,
            mlp_res: None,
            mlp: Mlp {
                up: build::proj(
                    w,
                    &format!("{p}.mlp.gate_up_proj"),
                    2 * ffn,
                    d,
                    cfg.mlp_bias,
                )?,
                act: ActKind::SwiGlu,
                down: build::proj(w, &format!("{p}.mlp.down_proj"), d, ffn, cfg.mlp_bias)?,
            },
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
