//! One block's forward pass over the packed tokens of all segments, keeping on a `Tape` what
//! its backward pass reads. It interprets the block's description (`model::block::Block`):
//! norms on a sublayer's input, output or residual sum, q/k norms, sequential or parallel
//! residual.

use rayon::prelude::*;

use super::block::{BlockW, Norm};
use super::rows::rope_rows;
use super::{Dims, Packing, Rope, attention, row_range};
use crate::error::Result;
use crate::model::Model;

/// What the backward pass of one block needs from its forward pass, for every packed token.
/// The optional parts are kept only when the block has the norm that reads them.
pub(super) struct Tape {
    pub(super) x_in: Vec<f32>,
    /// q | k | v before the q/k norms.
    pub(super) qkv_raw: Option<Vec<f32>>,
    /// q | k | v after the q/k norms and RoPE.
    pub(super) qkv: Vec<f32>,
    /// Attention probabilities per segment: [H, len, len] each, concatenated.
    pub(super) probs: Vec<f32>,
    /// The attention's output projection before `attn_out`.
    pub(super) a_raw: Option<Vec<f32>>,
    /// x + attention before `attn_res`.
    pub(super) mid_raw: Option<Vec<f32>>,
    /// The residual stream entering the MLP branch (sequential blocks; parallel ones read
    /// `x_in`).
    pub(super) x_mid: Vec<f32>,
    /// The nonlinearity's Jacobian at the up projection's output (see `ActKind::forward_row`).
    pub(super) jac: Vec<f32>,
    /// The MLP's down projection before `mlp_out`.
    pub(super) m_raw: Option<Vec<f32>>,
    /// The block's sum before `mlp_res`.
    pub(super) out_raw: Option<Vec<f32>>,
}

impl Tape {
    /// The MLP branch's input row of packed token `t`.
    pub(super) fn mlp_x(&self, parallel: bool, t: usize, d: usize) -> &[f32] {
        let src = if parallel { &self.x_in } else { &self.x_mid };
        &src[t * d..(t + 1) * d]
    }
}

/// y = norm(x) if there is a norm, else a copy; the input kept in `keep` when asked.
fn norm_rows(norm: &Option<Norm<'_>>, x: &mut [f32], keep: Option<&mut [f32]>) {
    if let Some(n) = norm {
        if let Some(k) = keep {
            k.copy_from_slice(x);
        }
        let src = x.to_vec();
        n.forward_groups(&src, x);
    }
}

/// A buffer for an optional tape part: full size if `on`, else empty.
fn opt_buf(on: bool, len: usize) -> Option<Vec<f32>> {
    on.then(|| vec![0f32; len])
}

/// Chunks of an optional buffer (or of nothing) to zip with the others.
fn opt_chunks(b: &mut Option<Vec<f32>>, per: usize, n: usize) -> Vec<Option<&mut [f32]>> {
    match b {
        Some(v) => v.chunks_mut(per).map(Some).collect(),
        None => (0..n).map(|_| None).collect(),
    }
}

impl Model {
    /// One block's forward pass over the packed tokens `x`; returns its tape and output.
    pub(super) fn block_forward(
        &self,
        l: usize,
        x: Vec<f32>,
        pk: &Packing,
        dims: &Dims,
        rope: Option<Rope<'_>>,
        n_prob: usize,
    ) -> Result<(Tape, Vec<f32>)> {
        let w = BlockW::of(self, l)?;
        let b = w.b;
        let Dims {
            d,
            h,
            hkv,
            hd,
            wqkv,
            ffn,
            ..
        } = *dims;
        let n = x.len() / d;
        let per = row_range(n);
        let ranges = n.div_ceil(per);
        let (hq, hk) = (h * hd, hkv * hd);
        // Per range of rows (one per thread, gemms single-threaded): attn_in, q|k|v, q/k
        // norms, RoPE.
        let mut qkv = vec![0f32; n * wqkv];
        let mut qkv_raw = opt_buf(w.q_norm.is_some() || w.k_norm.is_some(), n * wqkv);
        qkv.par_chunks_mut(per * wqkv)
            .zip(opt_chunks(&mut qkv_raw, per * wqkv, ranges))
            .zip(x.par_chunks(per * d))
            .zip(pk.pos.par_chunks(per))
            .for_each(|(((qkv, raw), x), poss)| {
                let mut hb = x.to_vec();
                norm_rows(&w.attn_in, &mut hb, None);
                w.qkv.forward(&hb, qkv);
                if let Some(raw) = raw {
                    raw.copy_from_slice(qkv);
                    for (row, src) in qkv.chunks_mut(wqkv).zip(raw.chunks(wqkv)) {
                        if let Some(qn) = &w.q_norm {
                            qn.forward_groups(&src[..hq], &mut row[..hq]);
                        }
                        if let Some(kn) = &w.k_norm {
                            kn.forward_groups(&src[hq..hq + hk], &mut row[hq..hq + hk]);
                        }
                    }
                }
                rope_rows(qkv, poss, rope, dims, false);
            });
        // Attention per (segment, head).
        let (probs, attn) = attention::forward(&qkv, pk, dims, n_prob);
        // Per range of rows: o, attn_out, residual, attn_res, mlp_in, up, the nonlinearity (its
        // Jacobian kept in `jac`), down, mlp_out, residual, mlp_res.
        let pw = b.mlp.act.pre_width(ffn);
        let mut a_raw = opt_buf(w.attn_out.is_some(), n * d);
        let mut mid_raw = opt_buf(w.attn_res.is_some(), n * d);
        let mut m_raw = opt_buf(w.mlp_out.is_some(), n * d);
        let mut out_raw = opt_buf(w.mlp_res.is_some(), n * d);
        let mut x_mid = vec![0f32; if b.parallel { 0 } else { n * d }];
        let mids: Vec<Option<&mut [f32]>> = if b.parallel {
            (0..ranges).map(|_| None).collect()
        } else {
            x_mid.chunks_mut(per * d).map(Some).collect()
        };
        let mut jac = vec![0f32; n * pw];
        let mut out = vec![0f32; n * d];
        out.par_chunks_mut(per * d)
            .zip(jac.par_chunks_mut(per * pw))
            .zip(attn.par_chunks(per * h * hd))
            .zip(x.par_chunks(per * d))
            .zip(mids)
            .zip(opt_chunks(&mut a_raw, per * d, ranges))
            .zip(opt_chunks(&mut mid_raw, per * d, ranges))
            .zip(opt_chunks(&mut m_raw, per * d, ranges))
            .zip(opt_chunks(&mut out_raw, per * d, ranges))
            .for_each(|((((((((out, jac), attn), x), mid), ar), mr), mmr), or)| {
                let rows = x.len() / d;
                let mut a = vec![0f32; rows * d];
                w.o.forward(attn, &mut a);
                norm_rows(&w.attn_out, &mut a, ar);
                let mut hb = if b.parallel {
                    x.to_vec()
                } else {
                    let mid = mid.expect("sequential blocks keep x_mid");
                    for ((m, a), x) in mid.iter_mut().zip(&a).zip(x) {
                        *m = x + a;
                    }
                    norm_rows(&w.attn_res, mid, mr);
                    mid.to_vec()
                };
                let mid_sum = (!b.parallel).then(|| hb.clone());
                norm_rows(&w.mlp_in, &mut hb, None);
                w.up.forward(&hb, jac);
                let mut act = vec![0f32; rows * ffn];
                for (a, p) in act.chunks_mut(ffn).zip(jac.chunks_mut(pw)) {
                    b.mlp.act.forward_row(p, a);
                }
                w.down.forward(&act, out);
                norm_rows(&w.mlp_out, out, mmr);
                match mid_sum {
                    Some(mid) => out.iter_mut().zip(&mid).for_each(|(o, m)| *o += m),
                    // transformers' order: (mlp + attn) + x.
                    None => {
                        for ((o, a), x) in out.iter_mut().zip(&a).zip(x) {
                            *o = (*o + a) + x;
                        }
                    }
                }
                norm_rows(&w.mlp_res, out, or);
            });
        drop(attn);
        Ok((
            Tape {
                x_in: x,
                qkv_raw,
                qkv,
                probs,
                a_raw,
                mid_raw,
                x_mid,
                jac,
                m_raw,
                out_raw,
            },
            out,
        ))
    }
}
