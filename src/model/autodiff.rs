//! Fused ops for the differentiable path: the forward pass runs the fast kernels, the backward
//! pass is written out and returns input gradients only (never weight gradients). Composing these
//! from candle's element-wise ops works too but keeps ~30 intermediate tensors per layer alive for
//! the backward pass (gigabytes for a few thousand tokens) and is several times slower.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::kernels::{self, AttnDims, AttnMask, Scores, contiguous_f32};
use crate::numerics::buffer::{SharedMut, init, uninit};
use crate::numerics::math::fast_exp;
use crate::numerics::matrix::mm;

type CResult<T> = candle_core::Result<T>;

fn wrap<T>(r: crate::error::Result<T>) -> CResult<T> {
    r.map_err(candle_core::Error::wrap)
}

fn tensor_data(t: &Tensor) -> CResult<Vec<f32>> {
    t.contiguous()?.flatten_all()?.to_vec1::<f32>()
}

/// RMSNorm, y = x r w with r = 1 / sqrt(mean(x^2) + eps), over the last dimension.
pub struct RmsNorm(pub f32);

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm-diff"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (x, w) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?);
        let d = w.len();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .for_each(|(o, x)| {
                let r = 1.0 / (x.iter().map(|v| v * v).sum::<f32>() / d as f32 + self.0).sqrt();
                for ((o, x), w) in o.iter_mut().zip(x).zip(w) {
                    *o = x * r * w;
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let (xs, ws, dys) = (tensor_data(x)?, tensor_data(w)?, tensor_data(dy)?);
        let d = ws.len();
        let mut dx = vec![0f32; xs.len()];
        dx.par_chunks_mut(d)
            .zip(xs.par_chunks(d))
            .zip(dys.par_chunks(d))
            .for_each(|((dx, x), dy)| {
                let r = 1.0 / (x.iter().map(|v| v * v).sum::<f32>() / d as f32 + self.0).sqrt();
                // dx = r (w dy) - x r^3 / d * sum(w dy x)
                let dot: f32 = dy.iter().zip(&ws).zip(x).map(|((g, w), x)| g * w * x).sum();
                let c = r * r * r * dot / d as f32;
                for i in 0..d {
                    dx[i] = r * ws[i] * dy[i] - x[i] * c;
                }
            });
        Ok((Some(Tensor::from_vec(dx, x.shape(), x.device())?), None))
    }
}

/// RoPE (rotate-half layout) on x [B, H, T, hd] with cos, sin [B, T, hd/2].
pub struct Rope;

fn rope_apply(
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    dims: (usize, usize, usize, usize),
    inverse: bool,
) -> Vec<f32> {
    let (_, h, t, hd) = dims;
    let half = hd / 2;
    let mut out = vec![0f32; x.len()];
    let sign = if inverse { -1.0 } else { 1.0 };
    out.par_chunks_mut(hd)
        .zip(x.par_chunks(hd))
        .enumerate()
        .for_each(|(row, (o, x))| {
            let (bi, ti) = (row / (h * t), row % t);
            let c = &cos[(bi * t + ti) * half..][..half];
            let s = &sin[(bi * t + ti) * half..][..half];
            for i in 0..half {
                let (x1, x2, si) = (x[i], x[i + half], sign * s[i]);
                o[i] = x1 * c[i] - x2 * si;
                o[i + half] = x2 * c[i] + x1 * si;
            }
        });
    out
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "rope-diff"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let dims = l1.shape().dims4()?;
        let out = rope_apply(
            contiguous_f32(s1, l1)?,
            contiguous_f32(s2, l2)?,
            contiguous_f32(s3, l3)?,
            dims,
            false,
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // The rotation is orthogonal: its transpose is the rotation by the opposite angle.
        let dx = rope_apply(
            &tensor_data(dy)?,
            &tensor_data(cos)?,
            &tensor_data(sin)?,
            x.dims4()?,
            true,
        );
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            None,
            None,
        ))
    }
}

/// SwiGLU on stacked projections: [.., 2F] = [gate | up] -> silu(gate) * up.
pub struct Swiglu;

impl CustomOp1 for Swiglu {
    fn name(&self) -> &'static str {
        "swiglu-diff"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l)?;
        let mut dims = l.dims().to_vec();
        let f = dims[dims.len() - 1] / 2;
        let mut out = vec![0f32; x.len() / 2];
        out.par_chunks_mut(f)
            .zip(x.par_chunks(2 * f))
            .for_each(|(o, x)| {
                let (g, u) = x.split_at(f);
                for i in 0..f {
                    o[i] = g[i] / (1.0 + fast_exp(-g[i])) * u[i];
                }
            });
        *dims.last_mut().expect("rank >= 1") = f;
        Ok((CpuStorage::F32(out), dims.into()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> CResult<Option<Tensor>> {
        let (xs, dys) = (tensor_data(x)?, tensor_data(dy)?);
        let f = x.dims()[x.rank() - 1] / 2;
        let mut dx = vec![0f32; xs.len()];
        dx.par_chunks_mut(2 * f)
            .zip(xs.par_chunks(2 * f))
            .zip(dys.par_chunks(f))
            .for_each(|((dx, x), dy)| {
                let (g, u) = x.split_at(f);
                let (dg, du) = dx.split_at_mut(f);
                for i in 0..f {
                    let s = 1.0 / (1.0 + fast_exp(-g[i]));
                    du[i] = dy[i] * g[i] * s;
                    dg[i] = dy[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
                }
            });
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// Attention with grouped-query heads and a causal/padding/window mask; q [B, H, Tq, hd],
/// k and v [B, Hkv, Tk, hd] -> [B, Tq, H*hd]. The backward pass recomputes the probabilities.
pub struct Attention {
    pub key_mask: Vec<u8>,
    pub tq: usize,
    pub tk: usize,
    pub window: Option<usize>,
    pub causal: bool,
    /// Scores are `scale * q . k`; soft-capped scores take the composed path (`ops::attend`).
    pub scale: f32,
}

impl Attention {
    fn mask(&self) -> AttnMask<'_> {
        AttnMask {
            key_mask: &self.key_mask,
            tq: self.tq,
            tk: self.tk,
            window: self.window,
            causal: self.causal,
        }
    }

    fn scores(&self) -> Scores {
        Scores {
            scale: self.scale,
            softcap: None,
        }
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "attention-diff"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let dims = AttnDims::of(l1.shape(), l2.shape())?;
        let AttnDims { b, h, tq, hd, .. } = dims;
        let (out, _) = wrap(kernels::attention_raw(
            contiguous_f32(s1, l1)?,
            contiguous_f32(s2, l2)?,
            contiguous_f32(s3, l3)?,
            dims,
            &self.mask(),
            self.scores(),
        ))?;
        Ok((CpuStorage::F32(out), (b, tq, h * hd).into()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _out: &Tensor,
        dout: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = AttnDims::of(q.shape(), k.shape())?;
        let AttnDims {
            h, hkv, tq, tk, hd, ..
        } = dims;
        let rep = h / hkv;
        let scale = self.scale;
        let (qs, ks, vs, dos) = (
            tensor_data(q)?,
            tensor_data(k)?,
            tensor_data(v)?,
            tensor_data(dout)?,
        );
        let (_, probs) = wrap(kernels::attention_raw(
            &qs,
            &ks,
            &vs,
            dims,
            &self.mask(),
            self.scores(),
        ))?;
        let mut dq = uninit(qs.len());
        let mut dk = uninit(ks.len());
        let mut dv = uninit(vs.len());
        let dq_ptr = SharedMut(dq.as_mut_ptr() as *mut f32);
        // One task per (row, kv head): it owns dk, dv of that head and dq of its `rep` query heads.
        dk.par_chunks_mut(tk * hd)
            .zip(dv.par_chunks_mut(tk * hd))
            .enumerate()
            .for_each(|(g, (dk, dv))| {
                let (bi, kh) = (g / hkv, g % hkv);
                let kv = g * tk * hd;
                let (kk, vv) = (&ks[kv..kv + tk * hd], &vs[kv..kv + tk * hd]);
                let mut ds = vec![0f32; tq * tk];
                for r in 0..rep {
                    let hi = kh * rep + r;
                    let bh = bi * h + hi;
                    let p = &probs[bh * tq * tk..(bh + 1) * tq * tk];
                    let qh = &qs[bh * tq * hd..(bh + 1) * tq * hd];
                    // dO block [tq, hd] inside dout [B, Tq, H*hd].
                    let dob = dos[bi * tq * h * hd + hi * hd..].as_ptr();
                    let acc = r > 0;
                    // SAFETY: all operands address full matrices at the given strides; each task writes
                    // only its own dk, dv chunks and the disjoint dq blocks of its query heads.
                    unsafe {
                        // dV += P^T dO   [tk, hd]
                        mm(
                            tk,
                            hd,
                            tq,
                            dv.as_mut_ptr() as *mut f32,
                            hd,
                            acc,
                            p.as_ptr(),
                            1,
                            tk,
                            dob,
                            h * hd,
                            1,
                            1.0,
                        );
                        // dP = dO V^T   [tq, tk]
                        mm(
                            tq,
                            tk,
                            hd,
                            ds.as_mut_ptr(),
                            tk,
                            false,
                            dob,
                            h * hd,
                            1,
                            vv.as_ptr(),
                            1,
                            hd,
                            1.0,
                        );
                    }
                    // dS = P * (dP - rowsum(dP * P)); a query with no visible key attends
                    // uniformly whatever its scores, so its dS is 0.
                    let mask = self.mask();
                    for (i, (drow, prow)) in ds.chunks_mut(tk).zip(p.chunks(tk)).enumerate() {
                        if !(0..tk).any(|j| mask.visible(bi, i, j)) {
                            drow.fill(0.0);
                            continue;
                        }
                        let dot: f32 = drow.iter().zip(prow).map(|(a, b)| a * b).sum();
                        for (dsv, pv) in drow.iter_mut().zip(prow) {
                            *dsv = pv * (*dsv - dot);
                        }
                    }
                    unsafe {
                        // dQ = scale dS K   [tq, hd]
                        let dqh = dq_ptr.ptr().add(bh * tq * hd);
                        mm(
                            tq,
                            hd,
                            tk,
                            dqh,
                            hd,
                            false,
                            ds.as_ptr(),
                            tk,
                            1,
                            kk.as_ptr(),
                            hd,
                            1,
                            scale,
                        );
                        // dK += scale dS^T Q   [tk, hd]
                        mm(
                            tk,
                            hd,
                            tq,
                            dk.as_mut_ptr() as *mut f32,
                            hd,
                            acc,
                            ds.as_ptr(),
                            1,
                            tk,
                            qh.as_ptr(),
                            hd,
                            1,
                            scale,
                        );
                    }
                }
            });
        // SAFETY: every (row, kv head) task wrote its dk and dv chunks and the dq blocks of all its
        // query heads; together they cover every element.
        let (dq, dk, dv) = unsafe { (init(dq), init(dk), init(dv)) };
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), dev)?),
            Some(Tensor::from_vec(dk, k.shape(), dev)?),
            Some(Tensor::from_vec(dv, v.shape(), dev)?),
        ))
    }
}
