//! The body every architecture loads into: token (and optionally position) embeddings, a stack
//! of `Block`s described as data, a final norm and the LM head. `Model::forward` runs it with
//! its captures; the reverse pass reads the same fields. The inputs every block sees are a
//! `LayerCtx`; what a block returns is a `LayerOut`.

use std::collections::BTreeMap;

use candle_core::Tensor;

use super::block::{ActKind, Block, Norm};
use super::ops::{self, Linear, Mode, RopeTable};
use crate::error::{Error, Result};

/// RoPE cos/sin for the batch's positions, [B, T, rotary_dim / 2] each.
pub type Rope = (Tensor, Tensor);

/// Inputs every block sees.
pub struct LayerCtx<'a> {
    /// Which keys each query sees (padding, sizes); each block sets its own window and
    /// causality.
    pub mask: &'a ops::AttnMask<'a>,
    /// Additive masks [B, 1, Tq, Tk] per (window, causal), built for differentiable
    /// attention probabilities only.
    pub biases: Option<&'a BTreeMap<(Option<usize>, bool), Tensor>>,
    /// cos/sin of each of the model's RoPE tables at the batch's positions.
    pub ropes: &'a [Rope],
    pub mode: Mode,
    pub want_mlp: bool,
    pub want_attn: bool,
    /// Keep the block's head outputs z and MLP output (`LayerOut::z`, `mlp_out`).
    pub want_sites: bool,
    /// Activation patching's edits of this block.
    pub edit: Option<&'a super::patch::LayerEdit>,
}

/// What a block returns: its output (the residual stream) and the captures asked for.
pub struct LayerOut {
    pub x: Tensor,
    /// MLP activations after the nonlinearity, [B, T, ffn].
    pub mlp: Option<Tensor>,
    /// Attention probabilities, [B, H, Tq, Tk].
    pub attn: Option<Tensor>,
    /// The heads' outputs before the output projection [B, T, H * hd] (`want_sites`).
    pub z: Option<Tensor>,
    /// The MLP branch's output as added to the residual [B, T, d] (`want_sites`).
    pub mlp_out: Option<Tensor>,
}

/// A transformer: what every architecture loads into.
pub struct Transformer {
    /// Token embeddings [V, d].
    pub embed: Tensor,
    /// Multiplies the token embeddings entering block 0 (Gemma's sqrt(d)).
    pub embed_scale: Option<f32>,
    /// Learned position embeddings [max_pos, d] added to the input (GPT-2, BERT).
    pub pos_embed: Option<Tensor>,
    /// Norm on the summed embeddings (BERT).
    pub embed_norm: Option<Norm>,
    /// RoPE tables [max_pos, rotary_dim / 2]; blocks name theirs by index.
    pub ropes: Vec<RopeTable>,
    pub blocks: Vec<Block>,
    /// A dense layer and nonlinearity before the final norm (BERT's masked-LM head transform).
    pub head_transform: Option<(Linear, ActKind)>,
    pub final_norm: Option<Norm>,
    /// Unembedding [V, d]; `None` for an encoder shipped without its language-model head.
    pub lm_head: Option<Tensor>,
    /// Bias of the unembedding (BERT's masked-LM head).
    pub lm_bias: Option<Tensor>,
    /// Gemma 2's `cap * tanh(logit / cap)`.
    pub final_softcap: Option<f32>,
    /// The unembedding's packed bf16 copies when products run in bf16 (`set_compute`).
    pub lm_bf16: Option<std::sync::Arc<crate::numerics::amx::Packs>>,
}

impl Transformer {
    /// A decoder: token embeddings, blocks, final norm and head; nothing else set.
    pub fn decoder(
        embed: Tensor,
        ropes: Vec<RopeTable>,
        blocks: Vec<Block>,
        final_norm: Norm,
        lm_head: Tensor,
    ) -> Self {
        Transformer {
            embed,
            embed_scale: None,
            pos_embed: None,
            embed_norm: None,
            ropes,
            blocks,
            head_transform: None,
            final_norm: Some(final_norm),
            lm_head: Some(lm_head),
            lm_bias: None,
            lm_bf16: None,
            final_softcap: None,
        }
    }

    /// The residual stream entering block 0, and each RoPE table at the batch's positions.
    pub fn input(
        &self,
        embeds: &Tensor,
        positions: &Tensor,
        mode: Mode,
    ) -> Result<(Tensor, Vec<Rope>)> {
        let mut x = match self.embed_scale {
            Some(s) => (embeds * s as f64)?,
            None => embeds.clone(),
        };
        if let Some(wpe) = &self.pos_embed {
            let (b, t) = positions.dims2()?;
            let d = wpe.dim(1)?;
            let pos = wpe
                .index_select(&positions.flatten_all()?, 0)?
                .reshape((b, t, d))?;
            x = (x + pos)?;
        }
        if let Some(n) = &self.embed_norm {
            x = n.forward(&x, mode)?;
        }
        let ropes = self
            .ropes
            .iter()
            .map(|r| r.select(positions))
            .collect::<Result<Vec<_>>>()?;
        Ok((x, ropes))
    }

    /// What stands between the last block and the unembedding: the head transform (BERT), then
    /// the final norm.
    pub fn final_norm(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let x = match &self.head_transform {
            Some((lin, act)) => act.forward(&lin.forward(x, mode)?, mode)?,
            None => x.clone(),
        };
        match &self.final_norm {
            Some(n) => n.forward(&x, mode),
            None => Ok(x),
        }
    }

    /// The unembedding, or an error saying the checkpoint has none.
    /// Bytes of every parameter as held (a tied unembedding counted once; RoPE tables not
    /// counted).
    pub fn weight_bytes(&self) -> usize {
        let t = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let norm = |n: &Option<super::block::Norm>| {
            n.as_ref()
                .map_or(0, |n| t(&n.w) + n.b.as_ref().map_or(0, t))
        };
        let lin = |l: &super::ops::Linear| {
            let (w, b) = l.parts();
            t(w) + b.map_or(0, t)
        };
        let mut n = t(&self.embed) + self.pos_embed.as_ref().map_or(0, t) + norm(&self.embed_norm);
        for b in &self.blocks {
            n += [
                &b.attn_in,
                &b.attn_out,
                &b.attn_res,
                &b.attn.q_norm,
                &b.attn.k_norm,
            ]
            .into_iter()
            .chain([&b.mlp_in, &b.mlp_out, &b.mlp_res])
            .map(norm)
            .sum::<usize>();
            n += lin(&b.attn.qkv) + lin(&b.attn.o) + lin(&b.mlp.up) + lin(&b.mlp.down);
        }
        n += self.head_transform.as_ref().map_or(0, |(l, _)| lin(l));
        n += norm(&self.final_norm) + self.lm_bias.as_ref().map_or(0, t);
        if let Some(h) = self.lm_head.as_ref().filter(|h| h.id() != self.embed.id()) {
            n += t(h);
        }
        n
    }

    pub fn lm_head(&self) -> Result<&Tensor> {
        self.lm_head.as_ref().ok_or_else(|| {
            Error::Input(
                "this checkpoint has no language-model head (an encoder without its masked-LM \
                 head, e.g. a sentence-transformers model): predictions, the lens, watched \
                 tokens, saliency and generation need one; activations, attention and NMF do not"
                    .into(),
            )
        })
    }

    /// Runs every weight product (linear layers, unembedding) in `c` from now on.
    pub fn set_compute(&mut self, c: super::precision::Compute) {
        for b in &mut self.blocks {
            for l in [
                &mut b.attn.qkv,
                &mut b.attn.o,
                &mut b.mlp.up,
                &mut b.mlp.down,
            ] {
                l.set_compute(c);
            }
        }
        if let Some((l, _)) = &mut self.head_transform {
            l.set_compute(c);
        }
        self.lm_bf16 = match c {
            super::precision::Compute::F32 => None,
            super::precision::Compute::Bf16 => Some(Default::default()),
        };
    }

    /// Logits of final-normed states [.., d] -> [.., V], soft-capped if the model caps them.
    pub fn unembed(&self, h: &Tensor, mode: Mode) -> Result<Tensor> {
        let mut logits = ops::linear_t(h, self.lm_head()?, mode, self.lm_bf16.as_deref())?;
        if let Some(b) = &self.lm_bias {
            logits = logits.broadcast_add(b)?;
        }
        Ok(match self.final_softcap {
            Some(c) => ((logits / c as f64)?.tanh()? * c as f64)?,
            None => logits,
        })
    }
}

/// What the architecture files share when they fill in the description.
pub(super) mod build {
    use candle_core::Tensor;

    use super::super::block::{ActKind, Attention, Mlp, Norm};
    use super::super::config::ModelConfig;
    use super::super::ops::{Linear, RopeTable};
    use super::super::weights::Weights;
    use crate::error::{Error, Result};

    /// A PyTorch-layout linear layer `{name}.weight` [out, in] (+ `{name}.bias` if `bias`).
    pub fn proj(w: &mut Weights, name: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
        Linear::from_out_in(
            w.take_matrix(&format!("{name}.weight"), &[out, inp])?,
            w.take_if(bias, &format!("{name}.bias"), &[out])?,
        )
    }

    /// The separate `{p}.q_proj`, `k_proj`, `v_proj` of a block's attention, stacked.
    pub fn qkv(w: &mut Weights, p: &str, cfg: &ModelConfig) -> Result<Linear> {
        let (d, b) = (cfg.hidden_size, cfg.qkv_bias);
        let (hq, hkv) = (cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim);
        Linear::stack(vec![
            proj(w, &format!("{p}.q_proj"), hq, d, b)?,
            proj(w, &format!("{p}.k_proj"), hkv, d, b)?,
            proj(w, &format!("{p}.v_proj"), hkv, d, b)?,
        ])
    }

    /// A gated MLP from `{p}.gate_proj`, `up_proj` and `down_proj` (SwiGLU, GeGLU).
    pub fn gated_mlp(w: &mut Weights, p: &str, cfg: &ModelConfig, act: ActKind) -> Result<Mlp> {
        let (d, ffn, b) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        Ok(Mlp {
            up: Linear::stack(vec![
                proj(w, &format!("{p}.gate_proj"), ffn, d, b)?,
                proj(w, &format!("{p}.up_proj"), ffn, d, b)?,
            ])?,
            act,
            down: proj(w, &format!("{p}.down_proj"), d, ffn, b)?,
        })
    }

    /// The RoPE tables: 0 = the model's (scaled) RoPE, 1 = the sliding layers' own base if the
    /// model has one (Gemma 3).
    pub fn ropes(cfg: &ModelConfig, dev: &candle_core::Device) -> Result<Vec<RopeTable>> {
        if !cfg.has_rope() {
            return Ok(vec![]);
        }
        let mut t = vec![RopeTable::new(
            cfg.rotary_dim,
            cfg.rope_theta,
            &cfg.rope_scaling,
            cfg.max_position_embeddings,
            dev,
        )?];
        if let Some(theta) = cfg.rope_local_theta {
            t.push(RopeTable::new(
                cfg.rotary_dim,
                theta,
                &super::super::rope::RopeScaling::Default,
                cfg.max_position_embeddings,
                dev,
            )?);
        }
        Ok(t)
    }

    /// Layer `l`'s attention as the config describes it, around its projections and q/k norms.
    pub fn attention(
        cfg: &ModelConfig,
        l: usize,
        qkv: Linear,
        o: Linear,
        q_norm: Option<Norm>,
        k_norm: Option<Norm>,
    ) -> Attention {
        let sliding = cfg.sliding_layers.get(l).copied().unwrap_or(false);
        Attention {
            qkv,
            q_norm,
            k_norm,
            o,
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
            scale: match cfg.attn_scale {
                Some(s) => s as f32,
                None => 1.0 / (cfg.head_dim as f32).sqrt(),
            },
            softcap: cfg.attn_softcap.map(|c| c as f32),
            window: cfg.window(l),
            causal: true,
            rope: cfg
                .has_rope()
                .then_some(usize::from(sliding && cfg.rope_local_theta.is_some())),
        }
    }

    /// The unembedding `name` [V, d], or the embeddings when the config ties them.
    pub fn lm_head(
        cfg: &ModelConfig,
        w: &mut Weights,
        name: &str,
        embed: &Tensor,
    ) -> Result<Tensor> {
        let (v, d) = (cfg.vocab_size, cfg.hidden_size);
        match w.take_matrix_opt(name, &[v, d])? {
            Some(t) => Ok(t),
            None if cfg.tie_word_embeddings => Ok(embed.clone()),
            None => Err(Error::model(
                &w.source,
                format!(
                    "tensor `{name}` is missing and the config does not tie it to the embeddings"
                ),
            )),
        }
    }
}
