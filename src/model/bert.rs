//! BERT-family encoders (BERT, MiniLM as sentence-transformers ships it): word + learned
//! position + token-type-0 embeddings, a LayerNorm on their sum, post-LayerNorm blocks
//! (x = LN(x + attn(x)), then x = LN(x + mlp(x))) with bidirectional attention and GELU, and,
//! when the checkpoint has it, the masked-LM head (dense, GELU, LayerNorm, unembedding tied to
//! the word embeddings, bias). Checkpoints saved from `BertForMaskedLM` prefix the encoder with
//! `bert.`; a bare `BertModel` (sentence-transformers) has no prefix and no head. HF names.

use super::block::{ActKind, Block, Mlp, Norm};
use super::config::{Activation, ModelConfig};
use super::ops::Linear;
use super::transformer::{Transformer, build};
use super::weights::Weights;
use crate::error::Result;

pub fn load(cfg: &ModelConfig, w: &mut Weights) -> Result<Transformer> {
    let (d, ffn, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let eps = cfg.norm_eps;
    let p = if w.contains("bert.embeddings.word_embeddings.weight") {
        "bert."
    } else {
        ""
    };
    let norm = |w: &mut Weights, name: &str| -> Result<Norm> {
        Ok(Norm::layer(
            w.take(&format!("{name}.weight"), &[d])?,
            w.take(&format!("{name}.bias"), &[d])?,
            eps,
        ))
    };
    let act = match cfg.activation {
        Activation::GeluTanh => ActKind::GeluTanh,
        _ => ActKind::GeluErf,
    };
    let e = format!("{p}embeddings");
    let embed = w.take_matrix(&format!("{e}.word_embeddings.weight"), &[v, d])?;
    let pos = w.take(
        &format!("{e}.position_embeddings.weight"),
        &[cfg.max_position_embeddings, d],
    )?;
    let types = w.take(
        &format!("{e}.token_type_embeddings.weight"),
        &[cfg.type_vocab_size, d],
    )?;
    // Every token has type 0: its embedding joins the position embeddings.
    let pos_embed = pos.broadcast_add(&types.get(0)?)?;
    let embed_norm = norm(w, &format!("{e}.LayerNorm"))?;
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let b = format!("{p}encoder.layer.{l}");
        let qkv = Linear::stack(vec![
            build::proj(w, &format!("{b}.attention.self.query"), d, d, true)?,
            build::proj(w, &format!("{b}.attention.self.key"), d, d, true)?,
            build::proj(w, &format!("{b}.attention.self.value"), d, d, true)?,
        ])?;
        let o = build::proj(w, &format!("{b}.attention.output.dense"), d, d, true)?;
        let mut attn = build::attention(cfg, l, qkv, o, None, None);
        attn.causal = false;
        blocks.push(Block {
            attn_in: None,
            attn_out: None,
            attn_res: Some(norm(w, &format!("{b}.attention.output.LayerNorm"))?),
            attn,
            mlp_in: None,
            mlp_out: None,
            mlp_res: Some(norm(w, &format!("{b}.output.LayerNorm"))?),
            mlp: Mlp {
                up: build::proj(w, &format!("{b}.intermediate.dense"), ffn, d, true)?,
                act,
                down: build::proj(w, &format!("{b}.output.dense"), d, ffn, true)?,
            },
            parallel: false,
        });
    }
    // The masked-LM head, if the checkpoint has one.
    let (head_transform, final_norm, lm_head, lm_bias) =
        if w.contains("cls.predictions.transform.dense.weight") {
            let t = "cls.predictions";
            let dense = build::proj(w, &format!("{t}.transform.dense"), d, d, true)?;
            let ln = norm(w, &format!("{t}.transform.LayerNorm"))?;
            let head = build::lm_head(cfg, w, &format!("{t}.decoder.weight"), &embed)?;
            let bias = match w.take_opt(&format!("{t}.bias"), &[v])? {
                Some(b) => Some(b),
                None => w.take_opt(&format!("{t}.decoder.bias"), &[v])?,
            };
            (Some((dense, act)), Some(ln), Some(head), bias)
        } else {
            (None, None, None, None)
        };
    Ok(Transformer {
        embed,
        embed_scale: None,
        pos_embed: Some(pos_embed),
        embed_norm: Some(embed_norm),
        ropes: vec![],
        blocks,
        head_transform,
        final_norm,
        lm_head,
        lm_bias,
        lm_bf16: None,
        final_softcap: None,
    })
}
