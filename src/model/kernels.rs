//! Fused CPU kernels on the raw f32 data of candle tensors: linear layers (bias folded into the
//! gemm; `InputGradLinear`, the same with an input-only backward pass), RMSNorm, SwiGLU, the
//! q|k|v split with RoPE, and attention (scores, mask, softmax and the weighted sum in one pass
//! per head, heads in parallel). candle's generic element-wise ops call libm's `expf` one value
//! at a time and are single-threaded; these use a vectorizable `exp` and rayon. `Mode::Fast`
//! runs them; the differentiable path runs `InputGradLinear`, and the attention op of
//! `autodiff.rs` runs the attention kernel as its forward pass.

use std::mem::MaybeUninit;

use candle_core::{Storage, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::numerics::amx::{self, Packs};
use crate::numerics::buffer::{SharedMut, init, uninit, written};
use crate::numerics::matrix::{gemm_parallelism, mm};
use crate::numerics::simd;
use crate::numerics::wmat::{WSlice, gemm_w};

/// Runs `f` on the f32 data of `t` (made contiguous first), in row-major order.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Err(Error::Input("fused kernels run on the CPU only".into()));
    };
    let data = cpu.as_slice::<f32>()?;
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| Error::Input("kernel input is not contiguous".into()))?;
    Ok(f(&data[start..end]))
}

/// Runs `f` on the values of a weight matrix `t` (f32, bf16 or f16; made contiguous first).
pub(crate) fn with_weight<R>(t: &Tensor, f: impl FnOnce(WSlice) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Err(Error::Input("fused kernels run on the CPU only".into()));
    };
    Ok(f(weight_slice(cpu, layout)?))
}

/// The values of a contiguous CPU weight storage (f32, bf16 or f16), borrowed.
pub(crate) fn weight_slice<'a>(
    s: &'a candle_core::CpuStorage,
    l: &candle_core::Layout,
) -> candle_core::Result<WSlice<'a>> {
    use candle_core::CpuStorage as C;
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("fused ops need contiguous weights")
    };
    Ok(match s {
        C::F32(v) => WSlice::F32(&v[a..b]),
        C::BF16(v) => WSlice::Bf16(&v[a..b]),
        C::F16(v) => WSlice::F16(&v[a..b]),
        _ => candle_core::bail!("weights must be f32, bf16 or f16"),
    })
}

/// How a weight matrix is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// [in, out] row-major: the layout gemm reads fastest (~5% faster than `OutIn`).
    InOut,
    /// [out, in] row-major (PyTorch's Linear), read as its transpose.
    OutIn,
}

/// `x @ W + b` for x [.., in], with the bias folded into the gemm. Inside a rayon task (row
/// groups already run in parallel) the gemm runs single-threaded.
/// With `packs` (the `bf16` compute precision, `precision::Compute`), the product runs on the
/// weight's packed bf16 copy (`numerics::amx`).
pub fn linear(
    x: &Tensor,
    w: &Tensor,
    layout: WeightLayout,
    b: Option<&Tensor>,
    packs: Option<&Packs>,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = *dims.last().expect("rank >= 1");
    let n = match layout {
        WeightLayout::InOut => w.dim(1)?,
        WeightLayout::OutIn => w.dim(0)?,
    };
    let bias = match b {
        Some(b) => Some(b.flatten_all()?.to_vec1::<f32>()?),
        None => None,
    };
    let out = with_f32(x, |x| {
        with_weight(w, |w| {
            gemm_linear(x, k, w, layout, n, bias.as_deref(), packs)
        })
    })??;
    let mut shape = dims;
    *shape.last_mut().expect("rank >= 1") = n;
    Ok(Tensor::from_vec(out, shape, x.device())?)
}

/// The gemm behind `linear`: x [m, k] row-major, w [k, n] (InOut) or [n, k] (OutIn).
fn gemm_linear(
    x: &[f32],
    k: usize,
    w: WSlice,
    layout: WeightLayout,
    n: usize,
    bias: Option<&[f32]>,
    packs: Option<&Packs>,
) -> Vec<f32> {
    let m = x.len() / k;
    let (w_rs, w_cs) = match layout {
        WeightLayout::InOut => (n, 1),
        WeightLayout::OutIn => (1, k),
    };
    if let Some(p) = packs {
        let packed = p.forward(n, k, w, w_rs, w_cs);
        let mut out = match bias {
            Some(b) => b.repeat(m),
            None => vec![0f32; m * n],
        };
        amx::gemm_packed(
            m,
            &mut out,
            n,
            bias.is_some(),
            x,
            k,
            1,
            packed,
            amx::threads_here(),
        );
        return out;
    }
    // With a bias, gemm accumulates onto the bias rows; without, it writes every element.
    let mut out: Vec<MaybeUninit<f32>> = match bias {
        Some(b) => b.repeat(m).into_iter().map(MaybeUninit::new).collect(),
        None => uninit(m * n),
    };
    let parallelism = gemm_parallelism();
    assert!(
        x.len() == m * k && w.len() == k * n,
        "linear: shapes do not match"
    );
    // SAFETY: out is m x n and x is m x k, row-major; w holds k x n values at the strides given.
    unsafe {
        gemm_w(
            m,
            n,
            k,
            out.as_mut_ptr() as *mut f32,
            n,
            bias.is_some(),
            x.as_ptr(),
            k,
            1,
            w,
            w_rs,
            w_cs,
            parallelism,
        );
        // SAFETY: gemm wrote (or accumulated onto) every element.
        init(out)
    }
}

/// The f32 data of a contiguous CPU storage, borrowed.
pub(crate) fn contiguous_f32<'a>(
    s: &'a candle_core::CpuStorage,
    l: &candle_core::Layout,
) -> candle_core::Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("fused ops need contiguous inputs"),
    }
}

/// `x @ W` as a candle op whose backward pass returns the gradient for `x` only. candle's own
/// matmul always computes the weight gradient too (and allocates a zero tensor the size of every
/// weight to accumulate it), which is most of the cost of an input-gradient backward pass.
#[derive(Debug, Clone, Copy)]
pub struct InputGradLinear(pub WeightLayout);

impl candle_core::CustomOp2 for InputGradLinear {
    fn name(&self) -> &'static str {
        "input-grad-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        // Borrow both operands: copying the weight matrix on every call costs more than the gemm
        // on small inputs.
        let x = contiguous_f32(s1, l1)?;
        let w = weight_slice(s2, l2)?;
        let dims = l1.dims();
        let k = dims[dims.len() - 1];
        let wd = l2.dims();
        let n = match self.0 {
            WeightLayout::InOut => wd[1],
            WeightLayout::OutIn => wd[0],
        };
        let out = gemm_linear(x, k, w, self.0, n, None, None);
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("rank >= 1") = n;
        Ok((candle_core::CpuStorage::F32(out), shape.into()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // dx = grad @ W^T: the same weight read in the other layout.
        let other = match self.0 {
            WeightLayout::InOut => WeightLayout::OutIn,
            WeightLayout::OutIn => WeightLayout::InOut,
        };
        let dx = linear(grad, w, other, None, None).map_err(candle_core::Error::wrap)?;
        Ok((Some(dx), None))
    }
}

/// SwiGLU on stacked projections: x [.., 2F] = [gate | up] -> silu(gate) * up, [.., F].
pub fn swiglu(x: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let two_f = *dims.last().expect("rank >= 1");
    let f = two_f / 2;
    let rows = x.elem_count() / two_f;
    let mut out = uninit(rows * f);
    with_f32(x, |src| {
        out.par_chunks_mut(f * 16)
            .zip(src.par_chunks(two_f * 16))
            .for_each(|(o, s)| {
                for (orow, srow) in o.chunks_mut(f).zip(s.chunks(two_f)) {
                    let (g, u) = srow.split_at(f);
                    simd::silu_mul(orow, g, u);
                }
            })
    })?;
    // SAFETY: silu_mul wrote every element of every row.
    let out = unsafe { init(out) };
    let mut shape = dims;
    *shape.last_mut().expect("rank >= 1") = f;
    Ok(Tensor::from_vec(out, shape, x.device())?)
}

/// Which keys each query sees: causal (or not), padding (per-row key mask), optional sliding
/// window.
#[derive(Clone, Copy)]
pub struct AttnMask<'a> {
    /// [B * Tk], 1 for real tokens.
    pub key_mask: &'a [u8],
    pub tq: usize,
    pub tk: usize,
    /// A query sees the `window` latest keys at most, itself included.
    pub window: Option<usize>,
    /// Keys after the query are hidden (decoders); encoders see every real token.
    pub causal: bool,
}

impl AttnMask<'_> {
    #[inline]
    pub fn visible(&self, b: usize, i: usize, j: usize) -> bool {
        let qi = self.tk - self.tq + i;
        (!self.causal || j <= qi)
            && self.key_mask[b * self.tk + j] != 0
            && self.window.is_none_or(|w| qi.abs_diff(j) < w)
    }
}

/// How attention scores are made from q . k: `scale * q . k`, then optionally Gemma 2's
/// soft-cap `cap * tanh(score / cap)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    pub scale: f32,
    pub softcap: Option<f32>,
}

impl Scores {
    /// The usual 1 / sqrt(head_dim), no cap.
    pub fn plain(head_dim: usize) -> Self {
        Scores {
            scale: 1.0 / (head_dim as f32).sqrt(),
            softcap: None,
        }
    }

    /// Soft-caps a row of scaled scores in place.
    #[inline]
    pub fn cap_row(&self, row: &mut [f32]) {
        if let Some(c) = self.softcap {
            row.iter_mut().for_each(|v| *v = c * (*v / c).tanh());
        }
    }
}

/// RMSNorm over the last dimension: x / sqrt(mean(x^2) + eps) * w, rows in parallel.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let d = w.dim(0)?;
    let mut out = uninit(x.elem_count());
    with_f32(x, |x| {
        with_f32(w, |w| {
            out.par_chunks_mut(d * 32)
                .zip(x.par_chunks(d * 32))
                .for_each(|(o, x)| {
                    for (o, x) in o.chunks_mut(d).zip(x.chunks(d)) {
                        let ss: f32 = x.iter().map(|v| v * v).sum();
                        let inv = 1.0 / (ss / d as f32 + eps as f32).sqrt();
                        for ((o, x), w) in o.iter_mut().zip(x).zip(w) {
                            o.write(x * inv * w);
                        }
                    }
                })
        })
    })??;
    // SAFETY: every row was written.
    let out = unsafe { init(out) };
    Ok(Tensor::from_vec(out, x.dims(), x.device())?)
}

/// Head layout of a stacked q|k|v projection output.
#[derive(Debug, Clone, Copy)]
pub struct QkvLayout {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// Splits a stacked projection [B, T, (H + 2 Hkv) hd] into q [B, H, T, hd] and k, v
/// [B, Hkv, T, hd], applying RoPE (rotate-half layout, cos/sin [B, T, rot/2]) to the first
/// `rot` values of each q and k head (all of them unless the rotary is partial).
pub fn split_qkv(
    qkv: &Tensor,
    l: QkvLayout,
    rope: Option<(&Tensor, &Tensor)>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (b, t, width) = qkv.dims3()?;
    let (h, hkv, hd) = (l.n_heads, l.n_kv_heads, l.head_dim);
    let half = match rope {
        Some((c, _)) => c.dim(candle_core::D::Minus1)?,
        None => 0,
    };
    let mut q = uninit(b * h * t * hd);
    let mut k = uninit(b * hkv * t * hd);
    let mut v = uninit(b * hkv * t * hd);
    // Borrow the cos/sin tables (no copy); without RoPE, empty tables.
    let empty = Tensor::zeros(0, candle_core::DType::F32, qkv.device())?;
    let (cos_t, sin_t) = rope.unwrap_or((&empty, &empty));
    with_f32(cos_t, |cos| {
        with_f32(sin_t, |sin| {
            let tables = rope.map(|_| (cos, sin));
            with_f32(qkv, |src| {
                // One task per (row, head) of q, k and v together: disjoint outputs.
                let put = |dst: &mut [MaybeUninit<f32>], head: usize, bi: usize, roped: bool| {
                    for ti in 0..t {
                        let s = &src[(bi * t + ti) * width + head * hd..][..hd];
                        let d = &mut dst[ti * hd..(ti + 1) * hd];
                        match (&tables, roped) {
                            (Some((cos, sin)), true) => {
                                let (c, sn) = (
                                    &cos[(bi * t + ti) * half..][..half],
                                    &sin[(bi * t + ti) * half..][..half],
                                );
                                for i in 0..half {
                                    let (x1, x2) = (s[i], s[i + half]);
                                    d[i].write(x1 * c[i] - x2 * sn[i]);
                                    d[i + half].write(x2 * c[i] + x1 * sn[i]);
                                }
                                for i in 2 * half..hd {
                                    d[i].write(s[i]);
                                }
                            }
                            _ => d.iter_mut().zip(s).for_each(|(d, s)| {
                                d.write(*s);
                            }),
                        }
                    }
                };
                q.par_chunks_mut(t * hd)
                    .enumerate()
                    .for_each(|(i, d)| put(d, i % h, i / h, true));
                k.par_chunks_mut(t * hd)
                    .enumerate()
                    .for_each(|(i, d)| put(d, h + i % hkv, i / hkv, true));
                v.par_chunks_mut(t * hd)
                    .enumerate()
                    .for_each(|(i, d)| put(d, h + hkv + i % hkv, i / hkv, false));
            })
        })
    })???;
    // SAFETY: every (row, head, position) was written by `put`.
    let (q, k, v) = unsafe { (init(q), init(k), init(v)) };
    let dev = qkv.device();
    Ok((
        Tensor::from_vec(q, (b, h, t, hd), dev)?,
        Tensor::from_vec(k, (b, hkv, t, hd), dev)?,
        Tensor::from_vec(v, (b, hkv, t, hd), dev)?,
    ))
}

/// Scaled dot-product attention with grouped-query heads: scores, mask, softmax and the weighted
/// sum per (row, head), heads in parallel, the output written straight into [B, Tq, H*hd].
/// q [B, H, Tq, hd], k and v [B, Hkv, Tk, hd] (contiguous); probs [B, H, Tq, Tk] if asked.
/// A query with no visible key (left padding) attends uniformly, as the additive-mask path does.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttnMask,
    scores: Scores,
    keep_probs: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let dims = AttnDims::of(q.shape(), k.shape())?;
    let AttnDims {
        b, h, tq, tk, hd, ..
    } = dims;
    let (out, probs) = with_f32(q, |q| {
        with_f32(k, |k| {
            with_f32(v, |v| attention_raw(q, k, v, dims, mask, scores))
        })
    })????;
    let dev = q.device();
    let out = Tensor::from_vec(out, (b, tq, h * hd), dev)?;
    let probs = if keep_probs {
        Some(Tensor::from_vec(probs, (b, h, tq, tk), dev)?)
    } else {
        None
    };
    Ok((out, probs))
}

/// Sizes of an attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnDims {
    pub b: usize,
    pub h: usize,
    pub hkv: usize,
    pub tq: usize,
    pub tk: usize,
    pub hd: usize,
}

impl AttnDims {
    /// From the shapes of q [B, H, Tq, hd] and k [B, Hkv, Tk, hd].
    pub fn of(q: &candle_core::Shape, k: &candle_core::Shape) -> candle_core::Result<Self> {
        let (b, h, tq, hd) = q.dims4()?;
        let (_, hkv, tk, _) = k.dims4()?;
        Ok(AttnDims {
            b,
            h,
            hkv,
            tq,
            tk,
            hd,
        })
    }
}

/// The attention computation on raw slices: returns out [B, Tq, H*hd] and probs [B, H, Tq, Tk].
pub(crate) fn attention_raw(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    d: AttnDims,
    mask: &AttnMask,
    sc: Scores,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let AttnDims {
        b,
        h,
        hkv,
        tq,
        tk,
        hd,
    } = d;
    if q.len() != b * h * tq * hd || k.len() != b * hkv * tk * hd || v.len() != k.len() {
        return Err(Error::Input("attention: q, k, v sizes do not match".into()));
    }
    let rep = h / hkv;
    let scale = sc.scale;
    let mut out = uninit(b * tq * h * hd);
    let mut probs = uninit(b * h * tq * tk);
    let dst = SharedMut(out.as_mut_ptr() as *mut f32);
    probs
        .par_chunks_mut(tq * tk)
        .enumerate()
        .for_each(|(bh, p)| {
            let (bi, hi) = (bh / h, bh % h);
            let kv = (bi * hkv + hi / rep) * tk * hd;
            let qs = &q[bh * tq * hd..(bh + 1) * tq * hd];
            let (ks, vs) = (&k[kv..kv + tk * hd], &v[kv..kv + tk * hd]);
            // SAFETY: every slice holds exactly the rows x cols its strides describe; each task writes
            // its own probs block and the disjoint block out[bi, :, hi*hd..(hi+1)*hd].
            unsafe {
                // scores = scale * q . k^T   [tq, tk]
                mm(
                    tq,
                    tk,
                    hd,
                    p.as_mut_ptr() as *mut f32,
                    tk,
                    false,
                    qs.as_ptr(),
                    hd,
                    1,
                    ks.as_ptr(),
                    1,
                    hd,
                    scale,
                );
                let p = written(p);
                for (i, row) in p.chunks_mut(tk).enumerate() {
                    sc.cap_row(row);
                    softmax_masked(row, |j| mask.visible(bi, i, j));
                }
                // out[bi, :, hi] = probs . v   [tq, hd], row stride H*hd
                let o = dst.ptr().add(bi * tq * h * hd + hi * hd);
                mm(
                    tq,
                    hd,
                    tk,
                    o,
                    h * hd,
                    false,
                    p.as_ptr(),
                    tk,
                    1,
                    vs.as_ptr(),
                    hd,
                    1,
                    1.0,
                );
            }
        });
    // SAFETY: the (row, head) tasks together wrote every block of `out`, and all of `probs`.
    Ok(unsafe { (init(out), init(probs)) })
}

/// In-place softmax over the visible entries of one row; hidden entries become exactly 0.
fn softmax_masked(row: &mut [f32], visible: impl Fn(usize) -> bool) {
    let mut max = f32::NEG_INFINITY;
    for (j, x) in row.iter_mut().enumerate() {
        if visible(j) {
            max = max.max(*x);
        } else {
            *x = f32::NEG_INFINITY;
        }
    }
    if max == f32::NEG_INFINITY {
        let u = 1.0 / row.len() as f32;
        row.iter_mut().for_each(|x| *x = u);
        return;
    }
    let sum = simd::exp_shift_sum(row, max);
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|x| *x *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_util::{max_diff, randn};

    /// Row widths around the SIMD lane counts (8, 16) and the kernels' row-block sizes: most are
    /// not multiples of 16, so every remainder loop runs.
    const WIDTHS: [usize; 12] = [1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100];
    /// Row counts that are not multiples of the kernels' parallel row blocks (16, 32).
    const ROWS: [usize; 3] = [1, 5, 37];

    #[test]
    fn rms_norm_matches_candle_at_every_width() {
        for (i, &d) in WIDTHS.iter().enumerate() {
            for &rows in &ROWS {
                let seed = (i * 10 + rows) as u64;
                let x = (randn(&[rows, d], seed) * 2.0).unwrap();
                let w = randn(&[d], seed + 1).affine(0.1, 1.0).unwrap();
                let want = candle_nn::ops::rms_norm_slow(&x, &w, 1e-5).unwrap();
                let got = rms_norm(&x, &w, 1e-5).unwrap();
                let diff = max_diff(&got, &want);
                assert!(diff < 1e-5, "width {d}, {rows} rows: {diff}");
            }
        }
    }

    #[test]
    fn swiglu_matches_candle_at_every_width() {
        for (i, &f) in WIDTHS.iter().enumerate() {
            for &rows in &ROWS {
                let x = (randn(&[rows, 2 * f], (i * 10 + rows) as u64) * 4.0).unwrap();
                let g = x.narrow(1, 0, f).unwrap();
                let u = x.narrow(1, f, f).unwrap();
                let want = (g.silu().unwrap() * u).unwrap();
                let got = swiglu(&x).unwrap();
                let diff = max_diff(&got, &want);
                assert!(diff < 1e-5, "width {f}, {rows} rows: {diff}");
            }
        }
    }

    #[test]
    fn masked_softmax_matches_a_plain_one_at_every_width() {
        for (i, &n) in WIDTHS.iter().enumerate() {
            let x = (randn(&[n], i as u64) * 8.0)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            // Every third entry hidden, except when that would hide them all.
            let visible = |j: usize| n == 1 || j % 3 != 1;
            let mut got = x.clone();
            softmax_masked(&mut got, visible);
            let max = (0..n)
                .filter(|&j| visible(j))
                .map(|j| x[j] as f64)
                .fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = (0..n)
                .filter(|&j| visible(j))
                .map(|j| (x[j] as f64 - max).exp())
                .sum();
            for j in 0..n {
                let want = if visible(j) {
                    (x[j] as f64 - max).exp() / sum
                } else {
                    0.0
                };
                assert!(
                    (got[j] as f64 - want).abs() < 1e-6,
                    "width {n}, entry {j}: {} vs {want}",
                    got[j]
                );
            }
        }
    }
}
