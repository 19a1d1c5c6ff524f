//! One transformer block described as data, and its forward pass. The description says which
//! norms sit where (on a sublayer's input, on its output, on the residual sum after it), whether
//! the residual is sequential or parallel, the attention's heads, q/k norms, score scale and
//! soft-cap, causal or bidirectional mask, sliding window and RoPE table, and the MLP's
//! nonlinearity. `Block::forward` interprets it on candle tensors (fast or differentiable); the
//! reverse pass (`reverse`) interprets the same description on raw slices. An architecture
//! only fills it in from its config and weight names (`gpt2.rs`, `llama.rs`, `gemma.rs`, ...).

use candle_core::Tensor;

use super::kernels::{self, AttnMask, QkvLayout, Scores};
use super::ops::{self, LayerCache, Linear, Mode};
use super::patch::edited;
use super::{LayerCtx, LayerOut};
use crate::error::{Error, Result};

/// A normalization's formula.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// x / sqrt(mean(x^2) + eps) * w. Gemma's (1 + w) is folded into `w` when loading.
    Rms,
    /// (x - mean) / sqrt(var + eps) * w + b.
    Layer,
}

/// A normalization layer. It normalizes groups of `w.len()` values of the last dimension: the
/// whole row, or each head of a q/k projection (per-head q/k norms).
pub struct Norm {
    pub kind: NormKind,
    pub w: Tensor,
    /// LayerNorm's bias (always present for `NormKind::Layer`).
    pub b: Option<Tensor>,
    pub eps: f64,
}

impl Norm {
    pub fn rms(w: Tensor, eps: f64) -> Self {
        Norm {
            kind: NormKind::Rms,
            w,
            b: None,
            eps,
        }
    }

    pub fn layer(w: Tensor, b: Tensor, eps: f64) -> Self {
        Norm {
            kind: NormKind::Layer,
            w,
            b: Some(b),
            eps,
        }
    }

    /// Values per normalized group.
    pub fn width(&self) -> usize {
        self.w.dims1().unwrap_or(0)
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let n = self.width();
        let dims = x.dims().to_vec();
        let last = *dims.last().expect("rank >= 1");
        if n == 0 || !last.is_multiple_of(n) {
            return Err(Error::Input(format!(
                "norm of width {n} applied to rows of {last} values"
            )));
        }
        let grouped = last != n;
        let xg = if grouped {
            let mut g = dims[..dims.len() - 1].to_vec();
            g.extend([last / n, n]);
            x.reshape(g)?
        } else {
            x.clone()
        };
        let y = match (self.kind, &self.b) {
            (NormKind::Rms, _) => ops::rms_norm(&xg, &self.w, self.eps, mode)?,
            (NormKind::Layer, Some(b)) => ops::layer_norm(&xg, &self.w, b, self.eps, mode)?,
            (NormKind::Layer, None) => {
                return Err(Error::Input("LayerNorm without a bias".into()));
            }
        };
        Ok(if grouped { y.reshape(dims)? } else { y })
    }
}

/// The MLP nonlinearity between the up and down projections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActKind {
    /// silu(gate) * up on a stacked [gate | up] projection (Llama family).
    SwiGlu,
    /// gelu_tanh(gate) * up on a stacked [gate | up] projection (Gemma).
    GeGluTanh,
    /// GELU, tanh approximation.
    GeluTanh,
    /// GELU, exact (erf).
    GeluErf,
}

impl ActKind {
    /// Width of the projection feeding the nonlinearity, for `ffn` activations.
    pub fn pre_width(self, ffn: usize) -> usize {
        match self {
            ActKind::SwiGlu | ActKind::GeGluTanh => 2 * ffn,
            _ => ffn,
        }
    }

    pub fn forward(self, pre: &Tensor, mode: Mode) -> Result<Tensor> {
        Ok(match (self, mode) {
            (ActKind::SwiGlu, Mode::Fast) => kernels::swiglu(pre)?,
            (ActKind::SwiGlu, Mode::Differentiable) => {
                pre.contiguous()?.apply_op1(super::autodiff::Swiglu)?
            }
            (ActKind::GeGluTanh, _) => {
                let f = pre.dim(candle_core::D::Minus1)? / 2;
                let gate = pre.narrow(candle_core::D::Minus1, 0, f)?;
                let up = pre.narrow(candle_core::D::Minus1, f, f)?;
                (gate.gelu()? * up)?
            }
            (ActKind::GeluTanh, _) => pre.gelu()?,
            (ActKind::GeluErf, _) => pre.gelu_erf()?,
        })
    }
}

/// Self-attention: a stacked q | k | v projection, optional q/k norms (applied before RoPE),
/// scaled (and optionally soft-capped) scores, the output projection.
pub struct Attention {
    pub qkv: Linear,
    /// Norms of q and k: per head (width head_dim) or over the whole projection.
    pub q_norm: Option<Norm>,
    pub k_norm: Option<Norm>,
    pub o: Linear,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Scores are `scale * q . k` (usually 1 / sqrt(head_dim)).
    pub scale: f32,
    /// Gemma 2's `cap * tanh(score / cap)` before the softmax.
    pub softcap: Option<f32>,
    /// Each query sees the `window` latest keys at most (itself included).
    pub window: Option<usize>,
    /// Causal (decoders) or bidirectional (encoders).
    pub causal: bool,
    /// Which of the model's RoPE tables rotates q and k, if any.
    pub rope: Option<usize>,
}

impl Attention {
    pub fn layout(&self) -> QkvLayout {
        QkvLayout {
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
        }
    }

    pub fn scores(&self) -> Scores {
        Scores {
            scale: self.scale,
            softcap: self.softcap,
        }
    }

    /// Width of q | k | v.
    pub fn qkv_width(&self) -> usize {
        (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
    }

    /// The attention output [B, T, H*hd] (before the output projection) and probabilities.
    fn forward(
        &self,
        h: &Tensor,
        ctx: &LayerCtx,
        cache: Option<&mut LayerCache>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let mode = ctx.mode;
        let mut qkv = self.qkv.forward(h, mode)?;
        if self.q_norm.is_some() || self.k_norm.is_some() {
            let (hq, hkv) = (
                self.n_heads * self.head_dim,
                self.n_kv_heads * self.head_dim,
            );
            let mut q = qkv.narrow(2, 0, hq)?;
            let mut k = qkv.narrow(2, hq, hkv)?;
            let v = qkv.narrow(2, hq + hkv, hkv)?;
            if let Some(n) = &self.q_norm {
                q = n.forward(&q, mode)?;
            }
            if let Some(n) = &self.k_norm {
                k = n.forward(&k, mode)?;
            }
            qkv = Tensor::cat(&[&q, &k, &v], 2)?;
        }
        let mask = AttnMask {
            window: self.window,
            causal: self.causal,
            ..*ctx.mask
        };
        let bias = match ctx.biases {
            Some(b) => b.get(&(self.window, self.causal)),
            None => None,
        };
        let rope = self.rope.and_then(|i| ctx.ropes.get(i));
        ops::self_attention(
            &qkv,
            self.layout(),
            rope,
            &mask,
            bias,
            self.scores(),
            mode,
            ctx.want_attn,
            cache,
        )
    }
}

/// The MLP: up (stacked gate | up for gated units), nonlinearity, down.
pub struct Mlp {
    pub up: Linear,
    pub act: ActKind,
    pub down: Linear,
}

/// A transformer block. Sequential: x += out(attn(in(x))), x = res(x), then the same with the
/// MLP. Parallel (GPT-NeoX): x + attn(attn_in(x)) + mlp(mlp_in(x)).
pub struct Block {
    /// Norm on the attention's input (pre-norm).
    pub attn_in: Option<Norm>,
    /// Norm on the attention's output, before the residual sum (Gemma 2/3, OLMo-2).
    pub attn_out: Option<Norm>,
    /// Norm on the residual sum after attention (post-norm BERT).
    pub attn_res: Option<Norm>,
    pub attn: Attention,
    pub mlp_in: Option<Norm>,
    pub mlp_out: Option<Norm>,
    pub mlp_res: Option<Norm>,
    pub mlp: Mlp,
    pub parallel: bool,
}

fn apply(norm: &Option<Norm>, x: Tensor, mode: Mode) -> Result<Tensor> {
    match norm {
        Some(n) => n.forward(&x, mode),
        None => Ok(x),
    }
}

impl Block {
    pub fn forward(
        &self,
        x: &Tensor,
        ctx: &LayerCtx,
        cache: Option<&mut LayerCache>,
    ) -> Result<LayerOut> {
        let mode = ctx.mode;
        let edit = ctx.edit;
        let x = &edited(x.clone(), edit.and_then(|e| e.resid_pre.as_ref()))?;
        let h = apply(&self.attn_in, x.clone(), mode)?;
        let (z, probs) = self.attn.forward(&h, ctx, cache)?;
        let z = edited(z, edit.and_then(|e| e.z.as_ref()))?;
        let a = apply(&self.attn_out, self.attn.o.forward(&z, mode)?, mode)?;
        let (mid, mlp_in) = if self.parallel {
            (x.clone(), x.clone())
        } else {
            let mid = apply(&self.attn_res, (x + a.clone())?, mode)?;
            (mid.clone(), mid)
        };
        let h = apply(&self.mlp_in, mlp_in, mode)?;
        let act = self
            .mlp
            .act
            .forward(&self.mlp.up.forward(&h, mode)?, mode)?;
        let act = edited(act, edit.and_then(|e| e.mlp_act.as_ref()))?;
        let m = apply(&self.mlp_out, self.mlp.down.forward(&act, mode)?, mode)?;
        let m = edited(m, edit.and_then(|e| e.mlp_out.as_ref()))?;
        let sites = ctx.want_sites.then(|| (z, m.clone()));
        let out = if self.parallel {
            // transformers' order of the sum.
            ((m + a)? + mid)?
        } else {
            (mid + m)?
        };
        let out = apply(&self.mlp_res, out, mode)?;
        let (z, mlp_out) = sites.unzip();
        Ok(LayerOut {
            x: out,
            mlp: ctx.want_mlp.then_some(act),
            attn: probs,
            z,
            mlp_out,
        })
    }
}
