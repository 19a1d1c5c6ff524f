//! GPT-2 (gpt2, distilgpt2): learned position embeddings, pre-LayerNorm blocks, fused QKV
//! projection, GELU (tanh) MLP, LM head tied to the token embeddings.

use super::block::{ActKind, Block, Mlp, Norm};
use super::config::{Activation, ModelConfig};
use super::ops::Linear;
use super::transformer::{Transformer, build};
use super::weights::Weights;
use crate::error::Result;

/// Builds the model from HF-named tensors. `conv1d`: weights are stored [in, out] (HF's
/// Conv1D) rather than [out, in] (GGUF).
pub fn load(cfg: &ModelConfig, w: &mut Weights, conv1d: bool) -> Result<Transformer> {
    let (d, ffn, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    // Some GPT-2 checkpoints (e.g. the original `gpt2`) have no `transformer.` prefix.
    let p = if w.contains("transformer.wte.weight") {
        "transformer."
    } else {
        ""
    };
    let norm = |w: &mut Weights, name: &str| -> Result<Norm> {
        Ok(Norm::layer(
            w.take(&format!("{p}{name}.weight"), &[d])?,
            w.take(&format!("{p}{name}.bias"), &[d])?,
            cfg.norm_eps,
        ))
    };
    let lin = |w: &mut Weights, name: &str, out: usize, inp: usize| -> Result<Linear> {
        let bias = Some(w.take(&format!("{p}{name}.bias"), &[out])?);
        if conv1d {
            Ok(Linear::from_in_out(
                w.take_matrix(&format!("{p}{name}.weight"), &[inp, out])?,
                bias,
            ))
        } else {
            Linear::from_out_in(
                w.take_matrix(&format!("{p}{name}.weight"), &[out, inp])?,
                bias,
            )
        }
    };
    let wte = w.take_matrix(&format!("{p}wte.weight"), &[v, d])?;
    let wpe = w.take(&format!("{p}wpe.weight"), &[cfg.max_position_embeddings, d])?;
    let act = match cfg.activation {
        Activation::Gelu => ActKind::GeluErf,
        _ => ActKind::GeluTanh,
    };
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let h = format!("h.{l}");
        let qkv = lin(w, &format!("{h}.attn.c_attn"), 3 * d, d)?;
        let o = lin(w, &format!("{h}.attn.c_proj"), d, d)?;
        blocks.push(Block {
            attn_in: Some(norm(w, &format!("{h}.ln_1"))?),
            attn_out: None,
            attn_res: None,
            attn: build::attention(cfg, l, qkv, o, None, None),
            mlp_in: Some(norm(w, &format!("{h}.ln_2"))?),
            mlp_out: None,
            mlp_res: None,
            mlp: Mlp {
                up: lin(w, &format!("{h}.mlp.c_fc"), ffn, d)?,
                act,
                down: lin(w, &format!("{h}.mlp.c_proj"), d, ffn)?,
            },
            parallel: false,
        });
    }
    let final_norm = Some(norm(w, "ln_f")?);
    let lm_head = Some(match w.take_matrix_opt("lm_head.weight", &[v, d])? {
        Some(t) => t,
        None => wte.clone(),
    });
    Ok(Transformer {
        embed: wte,
        embed_scale: None,
        pos_embed: Some(wpe),
        embed_norm: None,
        ropes: vec![],
        blocks,
        head_transform: None,
        final_norm,
        lm_head,
        lm_bias: None,
        lm_bf16: None,
        final_softcap: None,
    })
}
