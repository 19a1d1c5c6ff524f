//! GPT-NeoX / Pythia: LayerNorm with biases, rotary embeddings on the first `rotary_pct` of each
//! head, parallel residual (x + attn(ln1(x)) + mlp(ln2(x))) or sequential, exact GELU, untied
//! `embed_out`. Its fused `query_key_value` is laid out per head (q, k, v of head 0, then of
//! head 1, ...): the rows are regrouped into q | k | v when loading. HF weight names.

use candle_core::Tensor;

use super::block::{ActKind, Block, Mlp, Norm};
use super::config::{Activation, ModelConfig};
use super::ops::Linear;
use super::transformer::{Transformer, build};
use super::weights::Weights;
use crate::error::Result;

/// Rows [heads * (q | k | v) of head_dim] regrouped as [q of every head | k .. | v ..].
pub fn regroup_qkv(t: &Tensor, heads: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let hd = dims[0] / (3 * heads);
    let mut shape = vec![heads, 3, hd];
    shape.extend(&dims[1..]);
    let g = t.reshape(shape)?.transpose(0, 1)?.contiguous()?;
    Ok(g.reshape(dims)?)
}

/// The inverse of `regroup_qkv`: [q | k | v] rows interleaved per head, as HF stores them
/// (llama.cpp's converter stacks them).
pub fn interleave_qkv(t: &Tensor, heads: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let hd = dims[0] / (3 * heads);
    let mut shape = vec![3, heads, hd];
    shape.extend(&dims[1..]);
    let g = t.reshape(shape)?.transpose(0, 1)?.contiguous()?;
    Ok(g.reshape(dims)?)
}

pub fn load(cfg: &ModelConfig, w: &mut Weights) -> Result<Transformer> {
    let (d, ffn, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let eps = cfg.norm_eps;
    let norm = |w: &mut Weights, name: &str| -> Result<Norm> {
        Ok(Norm::layer(
            w.take(&format!("{name}.weight"), &[d])?,
            w.take(&format!("{name}.bias"), &[d])?,
            eps,
        ))
    };
    let embed = w.take_matrix("gpt_neox.embed_in.weight", &[v, d])?;
    let act = match cfg.activation {
        Activation::Gelu => ActKind::GeluErf,
        _ => ActKind::GeluTanh,
    };
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("gpt_neox.layers.{l}");
        let qkv_w = w.take_matrix(
            &format!("{p}.attention.query_key_value.weight"),
            &[3 * d, d],
        )?;
        let qkv_b = w.take_if(
            cfg.qkv_bias,
            &format!("{p}.attention.query_key_value.bias"),
            &[3 * d],
        )?;
        let qkv = Linear::from_out_in(
            regroup_qkv(&qkv_w, cfg.n_heads)?,
            qkv_b.map(|b| regroup_qkv(&b, cfg.n_heads)).transpose()?,
        )?;
        let o = build::proj(w, &format!("{p}.attention.dense"), d, d, cfg.o_bias)?;
        blocks.push(Block {
            attn_in: Some(norm(w, &format!("{p}.input_layernorm"))?),
            attn_out: None,
            attn_res: None,
            attn: build::attention(cfg, l, qkv, o, None, None),
            mlp_in: Some(norm(w, &format!("{p}.post_attention_layernorm"))?),
            mlp_out: None,
            mlp_res: None,
            mlp: Mlp {
                up: build::proj(w, &format!("{p}.mlp.dense_h_to_4h"), ffn, d, true)?,
                act,
                down: build::proj(w, &format!("{p}.mlp.dense_4h_to_h"), d, ffn, true)?,
            },
            parallel: cfg.parallel_residual,
        });
    }
    let final_norm = norm(w, "gpt_neox.final_layer_norm")?;
    let lm_head = build::lm_head(cfg, w, "embed_out.weight", &embed)?;
    let ropes = build::ropes(cfg, embed.device())?;
    Ok(Transformer::decoder(
        embed, ropes, blocks, final_norm, lm_head,
    ))
}
