//! The layers' building blocks, shared by the architectures: linear layers, norms, softmax,
//! RoPE (tables and rotation), attention with its mask and KV cache. Each op has two paths and
//! `Mode` picks one. The fast path runs our fused kernels (`kernels.rs`) or candle's fused ops
//! (`softmax_last_dim`, `layer_norm`, `rotary_emb::rope`), through which candle silently drops
//! gradients. The differentiable path runs our fused ops with written-out input-only backward
//! passes (`InputGradLinear` in `kernels.rs`, the ops of `autodiff.rs`) or candle ops whose
//! backward pass candle implements (`softmax`, `layer_norm_slow`, matmul).

use candle_core::{D, Device, Tensor};

use super::Rope;
pub use super::kernels::{AttnMask, Scores};
use super::precision::Compute;
use super::rope::RopeScaling;
use super::{autodiff, kernels};
use crate::error::Result;
use crate::numerics::amx::Packs;
use crate::numerics::matrix::transpose;
use std::sync::Arc;

/// How a forward pass computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Fused kernels (ours and candle's); no gradients flow through them.
    #[default]
    Fast,
    /// Ops with a backward pass (ours or candle's), so gradients with respect to the input
    /// embeddings are exact.
    Differentiable,
}

/// Additive attention mask value: large enough that exp() underflows to exactly 0, finite so
/// that rows with no visible key (query positions in the left padding) stay NaN-free.
pub const MASKED: f32 = -1.0e30;

/// A matrix [r, c] as a contiguous [c, r]: a parallel tiled transpose for CPU f32 / bf16 / f16
/// weights (candle's strided copy is single-threaded and ~10x slower: seconds for a 1B model),
/// candle's copy otherwise.
fn transposed(w: &Tensor) -> Result<Tensor> {
    use candle_core::{CpuStorage as C, Storage};
    let (r, c) = w.dims2()?;
    let w = w.contiguous()?;
    let t = {
        let (storage, layout) = w.storage_and_layout();
        let dev = w.device();
        match (&*storage, layout.contiguous_offsets()) {
            (Storage::Cpu(C::F32(v)), Some((a, b))) => {
                Some(Tensor::from_vec(transpose(&v[a..b], r, c), (c, r), dev)?)
            }
            (Storage::Cpu(C::BF16(v)), Some((a, b))) => {
                Some(Tensor::from_vec(transpose(&v[a..b], r, c), (c, r), dev)?)
            }
            (Storage::Cpu(C::F16(v)), Some((a, b))) => {
                Some(Tensor::from_vec(transpose(&v[a..b], r, c), (c, r), dev)?)
            }
            _ => None,
        }
    };
    Ok(match t {
        Some(t) => t,
        None => w.t()?.contiguous()?,
    })
}

/// A linear layer: weight stored [in, out] contiguous (the fastest layout for gemm), optional bias.
pub struct Linear {
    wt: Tensor,
    b: Option<Tensor>,
    /// The weight's packed bf16 copies when products run in bf16 (`set_compute`).
    bf16: Option<Arc<Packs>>,
}

impl Linear {
    /// From a PyTorch-layout weight [out, in].
    pub fn from_out_in(w: Tensor, b: Option<Tensor>) -> Result<Self> {
        Ok(Linear {
            wt: transposed(&w)?,
            b,
            bf16: None,
        })
    }

    /// From a weight already stored [in, out] (GPT-2's Conv1D).
    pub fn from_in_out(wt: Tensor, b: Option<Tensor>) -> Self {
        Linear { wt, b, bf16: None }
    }

    /// Stacks layers that read the same input along the output dimension (one matmul for q|k|v).
    pub fn stack(parts: Vec<Linear>) -> Result<Self> {
        let wt = Tensor::cat(&parts.iter().map(|p| &p.wt).collect::<Vec<_>>(), 1)?;
        let b = match parts
            .iter()
            .map(|p| p.b.as_ref())
            .collect::<Option<Vec<_>>>()
        {
            Some(bs) => Some(Tensor::cat(&bs, 0)?),
            None => None,
        };
        Ok(Linear { wt, b, bf16: None })
    }

    /// The weight [in, out] and the bias.
    pub fn parts(&self) -> (&Tensor, Option<&Tensor>) {
        (&self.wt, self.b.as_ref())
    }

    /// Runs this layer's products in `c` from now on (`precision::Compute`).
    pub fn set_compute(&mut self, c: Compute) {
        self.bf16 = match c {
            Compute::F32 => None,
            Compute::Bf16 => Some(Arc::default()),
        };
    }

    /// The packed bf16 copies, when products run in bf16.
    pub fn bf16_packs(&self) -> Option<&Packs> {
        self.bf16.as_deref()
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        match mode {
            Mode::Fast => kernels::linear(
                x,
                &self.wt,
                kernels::WeightLayout::InOut,
                self.b.as_ref(),
                self.bf16.as_deref(),
            ),
            Mode::Differentiable => {
                let y = x.contiguous()?.apply_op2(
                    &self.wt,
                    kernels::InputGradLinear(kernels::WeightLayout::InOut),
                )?;
                Ok(match &self.b {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                })
            }
        }
    }
}

/// `x @ w.T` for a PyTorch-layout [out, in] matrix (the LM head, which shares the embedding).
/// `packs`: its packed bf16 copies when products run in bf16 (fast mode only).
pub fn linear_t(x: &Tensor, w: &Tensor, mode: Mode, packs: Option<&Packs>) -> Result<Tensor> {
    match mode {
        Mode::Fast => kernels::linear(x, w, kernels::WeightLayout::OutIn, None, packs),
        Mode::Differentiable => Ok(x
            .contiguous()?
            .apply_op2(w, kernels::InputGradLinear(kernels::WeightLayout::OutIn))?),
    }
}

pub fn softmax_last(x: &Tensor, mode: Mode) -> Result<Tensor> {
    Ok(match mode {
        Mode::Fast => candle_nn::ops::softmax_last_dim(x)?,
        Mode::Differentiable => candle_nn::ops::softmax(x, D::Minus1)?,
    })
}

pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64, mode: Mode) -> Result<Tensor> {
    Ok(match mode {
        Mode::Fast => kernels::rms_norm(x, w, eps)?,
        Mode::Differentiable => x
            .contiguous()?
            .apply_op2(w, autodiff::RmsNorm(eps as f32))?,
    })
}

pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64, mode: Mode) -> Result<Tensor> {
    Ok(match mode {
        Mode::Fast => candle_nn::ops::layer_norm(&x.contiguous()?, w, b, eps as f32)?,
        Mode::Differentiable => candle_nn::ops::layer_norm_slow(x, w, b, eps as f32)?,
    })
}

/// The additive mask [B, 1, Tq, Tk] of `mask` for the differentiable path: 0 where a query sees
/// a key, `MASKED` elsewhere.
pub fn attention_bias(mask: &AttnMask, batch: usize, device: &Device) -> Result<Tensor> {
    let (tq, tk) = (mask.tq, mask.tk);
    let mut bias = vec![0f32; batch * tq * tk];
    for b in 0..batch {
        for i in 0..tq {
            for j in 0..tk {
                if !mask.visible(b, i, j) {
                    bias[(b * tq + i) * tk + j] = MASKED;
                }
            }
        }
    }
    Ok(Tensor::from_vec(bias, (batch, 1, tq, tk), device)?)
}

/// Per-layer key/value cache for incremental decoding.
#[derive(Default, Clone)]
pub struct LayerCache {
    pub kv: Option<(Tensor, Tensor)>,
}

/// Scaled dot-product attention with grouped-query heads.
/// q: [B, H, Tq, hd]; k, v: [B, Hkv, Tk, hd]. The fast path uses the fused kernel and `mask`;
/// the differentiable path the fused differentiable op, or composed ops with `bias`
/// ([B, 1, Tq, Tk], see `attention_bias`; made here if not given) when the probabilities are
/// kept or the scores soft-capped. Returns the output [B, Tq, H*hd] and, if asked, the
/// probabilities [B, H, Tq, Tk].
#[allow(clippy::too_many_arguments)]
pub fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttnMask,
    bias: Option<&Tensor>,
    scores: Scores,
    mode: Mode,
    keep_probs: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    if mode == Mode::Fast {
        return kernels::attention(q, k, v, mask, scores, keep_probs);
    }
    if !keep_probs && scores.softcap.is_none() {
        let op = autodiff::Attention {
            key_mask: mask.key_mask.to_vec(),
            tq: mask.tq,
            tk: mask.tk,
            window: mask.window,
            causal: mask.causal,
            scale: scores.scale,
        };
        return Ok((
            q.contiguous()?
                .apply_op3(&k.contiguous()?, &v.contiguous()?, op)?,
            None,
        ));
    }
    // Composed ops with the additive mask: probabilities as a differentiable tensor, or
    // soft-capped scores.
    let (b, h, tq, hd) = q.dims4()?;
    let (_, hkv, tk, _) = k.dims4()?;
    let made;
    let bias = match bias {
        Some(x) => x,
        None => {
            made = attention_bias(mask, b, q.device())?;
            &made
        }
    };
    let rep = h / hkv;
    // Group the query heads that share a key/value head, so keys are not copied `rep` times.
    let qg = q.contiguous()?.reshape((b, hkv, rep * tq, hd))?;
    let mut s = (qg.matmul(&k.t()?)? * scores.scale as f64)?.reshape((b, h, tq, tk))?;
    if let Some(c) = scores.softcap {
        s = ((s / c as f64)?.tanh()? * c as f64)?;
    }
    let s = s.broadcast_add(bias)?;
    let probs = softmax_last(&s, mode)?;
    let out = probs
        .reshape((b, hkv, rep * tq, tk))?
        .matmul(&v.contiguous()?)?
        .reshape((b, h, tq, hd))?
        .transpose(1, 2)?
        .reshape((b, tq, h * hd))?;
    Ok((out, keep_probs.then_some(probs)))
}

/// Self-attention from a stacked q|k|v projection [B, T, (H + 2 Hkv) hd]: split into heads,
/// RoPE on q and k if given (on the first `rot` values of each head when cos/sin are
/// [B, T, rot / 2]), append to the KV cache, attend. Returns [B, T, H*hd] and the
/// probabilities [B, H, T, Tk] if asked. The fast path uses fused kernels, the differentiable
/// path composed ops.
#[allow(clippy::too_many_arguments)]
pub fn self_attention(
    qkv: &Tensor,
    layout: kernels::QkvLayout,
    rope: Option<&Rope>,
    mask: &AttnMask,
    bias: Option<&Tensor>,
    scores: Scores,
    mode: Mode,
    keep_probs: bool,
    cache: Option<&mut LayerCache>,
) -> Result<(Tensor, Option<Tensor>)> {
    let (q, k, v) = match mode {
        Mode::Fast => kernels::split_qkv(qkv, layout, rope.map(|(c, s)| (c, s)))?,
        Mode::Differentiable => {
            let (hq, hkv) = (
                layout.n_heads * layout.head_dim,
                layout.n_kv_heads * layout.head_dim,
            );
            let q = split_heads(&qkv.narrow(2, 0, hq)?, layout.n_heads)?;
            let k = split_heads(&qkv.narrow(2, hq, hkv)?, layout.n_kv_heads)?;
            let v = split_heads(&qkv.narrow(2, hq + hkv, hkv)?, layout.n_kv_heads)?.contiguous()?;
            match rope {
                Some((cos, sin)) => (
                    apply_rope_partial(&q, cos, sin, mode)?,
                    apply_rope_partial(&k, cos, sin, mode)?.contiguous()?,
                    v,
                ),
                None => (q, k.contiguous()?, v),
            }
        }
    };
    let (k, v) = cache_append(cache, k, v)?;
    attend(&q, &k, &v, mask, bias, scores, mode, keep_probs)
}

/// RoPE on the first `2 * cos.dim(-1)` values of each head of x [B, H, T, hd].
fn apply_rope_partial(x: &Tensor, cos: &Tensor, sin: &Tensor, mode: Mode) -> Result<Tensor> {
    let (hd, rot) = (x.dim(3)?, 2 * cos.dim(2)?);
    if rot == hd {
        return apply_rope(x, cos, sin, mode);
    }
    let r = apply_rope(&x.narrow(3, 0, rot)?, cos, sin, mode)?;
    Ok(Tensor::cat(&[&r, &x.narrow(3, rot, hd - rot)?], 3)?)
}

/// Appends new keys/values [B, Hkv, T, hd] to a layer's cache and returns the full ones.
pub fn cache_append(
    cache: Option<&mut LayerCache>,
    k: Tensor,
    v: Tensor,
) -> Result<(Tensor, Tensor)> {
    let Some(cache) = cache else {
        return Ok((k, v));
    };
    let (k, v) = match cache.kv.take() {
        Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
        None => (k.contiguous()?, v.contiguous()?),
    };
    cache.kv = Some((k.clone(), v.clone()));
    Ok((k, v))
}

/// RoPE tables cos/sin [max_pos, head_dim / 2], computed in f32 the way transformers does.
pub struct RopeTable {
    cos: Tensor,
    sin: Tensor,
}

impl RopeTable {
    /// The table of positions `0..max_pos` rotating `rotary_dim` values of each head (the
    /// head dim unless the rotary is partial), RoPE base `theta`, scaled as `scaling` says (see
    /// `model::rope`).
    pub fn new(
        rotary_dim: usize,
        theta: f64,
        scaling: &RopeScaling,
        max_pos: usize,
        device: &Device,
    ) -> Result<Self> {
        let half = rotary_dim / 2;
        let (inv, attention_factor) = scaling.inv_freq(rotary_dim, theta);
        let mut cos = Vec::with_capacity(max_pos * half);
        let mut sin = Vec::with_capacity(max_pos * half);
        for p in 0..max_pos {
            for f in &inv {
                let a = p as f32 * f;
                cos.push(a.cos() * attention_factor);
                sin.push(a.sin() * attention_factor);
            }
        }
        Ok(RopeTable {
            cos: Tensor::from_vec(cos, (max_pos, half), device)?,
            sin: Tensor::from_vec(sin, (max_pos, half), device)?,
        })
    }

    /// The whole cos and sin tables, [max_pos, head_dim / 2] each.
    pub fn tables(&self) -> (&Tensor, &Tensor) {
        (&self.cos, &self.sin)
    }

    /// cos and sin for every (row, position): [B, T, head_dim / 2].
    pub fn select(&self, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, t) = positions.dims2()?;
        let flat = positions.flatten_all()?;
        let half = self.cos.dim(1)?;
        let cos = self.cos.index_select(&flat, 0)?.reshape((b, t, half))?;
        let sin = self.sin.index_select(&flat, 0)?.reshape((b, t, half))?;
        Ok((cos, sin))
    }
}

/// Applies RoPE (rotate-half layout) to x [B, H, T, hd] with cos/sin [B, T, hd/2].
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor, mode: Mode) -> Result<Tensor> {
    Ok(match mode {
        Mode::Fast => candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin)?,
        Mode::Differentiable => {
            x.contiguous()?
                .apply_op3(&cos.contiguous()?, &sin.contiguous()?, autodiff::Rope)?
        }
    })
}

/// Splits [B, T, H*hd] into heads [B, H, T, hd].
pub fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, t, w) = x.dims3()?;
    Ok(x.reshape((b, t, heads, w / heads))?.transpose(1, 2)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_util::{check_gradient, max_diff, randn};

    #[test]
    fn fast_and_differentiable_paths_agree() {
        let x = randn(&[2, 3, 5, 8], 1);
        let w = randn(&[8], 2);
        let b = randn(&[8], 3);
        for (f, s) in [
            (
                softmax_last(&x, Mode::Fast).unwrap(),
                softmax_last(&x, Mode::Differentiable).unwrap(),
            ),
            (
                rms_norm(&x, &w, 1e-5, Mode::Fast).unwrap(),
                rms_norm(&x, &w, 1e-5, Mode::Differentiable).unwrap(),
            ),
            (
                layer_norm(&x, &w, &b, 1e-5, Mode::Fast).unwrap(),
                layer_norm(&x, &w, &b, 1e-5, Mode::Differentiable).unwrap(),
            ),
        ] {
            assert!(max_diff(&f, &s) < 1e-5, "{}", max_diff(&f, &s));
        }
        let table = RopeTable::new(8, 10000.0, &RopeScaling::Default, 16, &Device::Cpu).unwrap();
        let pos = Tensor::new(&[[0u32, 1, 2, 3, 4], [0, 0, 0, 1, 2]], &Device::Cpu).unwrap();
        let (c, s) = table.select(&pos).unwrap();
        let fast = apply_rope(&x, &c, &s, Mode::Fast).unwrap();
        let slow = apply_rope(&x, &c, &s, Mode::Differentiable).unwrap();
        assert!(max_diff(&fast, &slow) < 1e-5);
        // Position 0 is the identity rotation.
        let x0 = x.narrow(2, 0, 1).unwrap();
        assert!(max_diff(&fast.narrow(2, 0, 1).unwrap(), &x0) < 1e-6);
    }

    /// The differentiable path must carry gradients: compare with central finite differences.
    #[test]
    fn differentiable_path_matches_finite_differences() {
        let w = randn(&[6], 5).affine(0.5, 1.0).unwrap();
        let bb = randn(&[6], 6);
        let table = RopeTable::new(6, 100.0, &RopeScaling::Default, 8, &Device::Cpu).unwrap();
        let pos = Tensor::new(&[[0u32, 1, 2, 3]], &Device::Cpu).unwrap();
        let (c, s) = table.select(&pos).unwrap();
        let f = |x: &Tensor| -> Tensor {
            let n = rms_norm(x, &w, 1e-5, Mode::Differentiable).unwrap();
            let n = layer_norm(&n, &w, &bb, 1e-5, Mode::Differentiable).unwrap();
            let r = apply_rope(&n.unsqueeze(1).unwrap(), &c, &s, Mode::Differentiable).unwrap();
            let p = softmax_last(&r, Mode::Differentiable).unwrap();
            (p.sqr().unwrap().sum_all().unwrap() + r.sum_all().unwrap()).unwrap()
        };
        check_gradient(f, &randn(&[1, 4, 6], 7), 1);
    }

    /// The fused differentiable attention and SwiGLU ops: backward against finite differences.
    #[test]
    fn fused_attention_and_swiglu_gradients_match_finite_differences() {
        let (b, h, hkv, t, hd) = (2, 4, 2, 4, 6);
        let key_mask = [0u8, 1, 1, 1, 1, 1, 1, 1];
        let mask = AttnMask {
            key_mask: &key_mask,
            tq: t,
            tk: t,
            window: None,
            causal: true,
        };
        let k = randn(&[b, hkv, t, hd], 21);
        let v = randn(&[b, hkv, t, hd], 22);
        let wsum = randn(&[b, t, h * hd], 23);
        let f = |q: &Tensor| -> Tensor {
            let (o, _) = attend(
                q,
                &k,
                &v,
                &mask,
                None,
                Scores::plain(hd),
                Mode::Differentiable,
                false,
            )
            .unwrap();
            let o = (o * &wsum).unwrap();
            let g = super::autodiff::Swiglu;
            let s = o.contiguous().unwrap().apply_op1(g).unwrap();
            s.sum_all().unwrap()
        };
        check_gradient(f, &randn(&[b, h, t, hd], 24), 3);
    }

    #[test]
    fn bias_is_causal_masks_padding_and_window() {
        // Row 0 has one left pad, row 1 none; 2 new queries over 2 cached + 2 new keys.
        let key_mask = [0u8, 1, 1, 1, 1, 1, 1, 1];
        let visible = |window| -> Vec<u8> {
            let mask = AttnMask {
                key_mask: &key_mask,
                tq: 2,
                tk: 4,
                window,
                causal: true,
            };
            let b = attention_bias(&mask, 2, &Device::Cpu).unwrap();
            let flat: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
            flat.iter().map(|&x| (x == 0.0) as u8).collect()
        };
        assert_eq!(
            visible(None),
            vec![0, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1]
        );
        assert_eq!(
            visible(Some(2)),
            vec![0, 1, 1, 0, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 1, 1]
        );
    }

    /// The fused attention kernel and the composed path agree, with GQA, padding, a window and
    /// cached keys (Tq < Tk), including the uniform rows of padded queries.
    #[test]
    fn fused_attention_matches_composed() {
        let (b, h, hkv, tq, tk, hd) = (2, 6, 2, 3, 5, 8);
        let q = randn(&[b, h, tq, hd], 11);
        let k = randn(&[b, hkv, tk, hd], 12);
        let v = randn(&[b, hkv, tk, hd], 13);
        let key_mask = [0u8, 0, 0, 1, 1, 1, 1, 1, 1, 1];
        for window in [None, Some(3)] {
            let mask = AttnMask {
                key_mask: &key_mask,
                tq,
                tk,
                window,
                causal: true,
            };
            let bias = attention_bias(&mask, b, &Device::Cpu).unwrap();
            let (fo, fp) =
                attend(&q, &k, &v, &mask, None, Scores::plain(hd), Mode::Fast, true).unwrap();
            let (so, sp) = attend(
                &q,
                &k,
                &v,
                &mask,
                Some(&bias),
                Scores::plain(hd),
                Mode::Differentiable,
                true,
            )
            .unwrap();
            assert!(max_diff(&fo, &so) < 1e-5, "out {}", max_diff(&fo, &so));
            assert!(max_diff(&fp.unwrap(), &sp.unwrap()) < 1e-6);
        }
    }
}
