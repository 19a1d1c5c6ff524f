//! One block's forward pass over the packed tokens of all segments, keeping on a `Tape` what
//! its backward pass reads.

use rayon::prelude::*;

use super::block::BlockW;
use super::rows::rope_rows;
use super::{Dims, Packing, attention, row_range};
use crate::error::Result;
use crate::model::Model;

/// What the backward pass of one block needs from its forward pass, for every packed token.
pub(super) struct Tape {
    pub(super) x_in: Vec<f32>,
    /// q | k | v after RoPE.
    pub(super) qkv: Vec<f32>,
    /// Attention probabilities per segment: [H, len, len] each, concatenated.
    pub(super) probs: Vec<f32>,
    pub(super) x_mid: Vec<f32>,
    /// The nonlinearity's Jacobian at the up projection's output (see `ActKind::forward_row`).
    pub(super) jac: Vec<f32>,
}

impl Model {
    /// One block's forward pass over the packed tokens `x`; returns its tape and output.
    pub(super) fn block_forward(
        &self,
        l: usize,
        x: Vec<f32>,
        pk: &Packing,
        dims: &Dims,
        rope: Option<(&[f32], &[f32])>,
        n_prob: usize,
    ) -> Result<(Tape, Vec<f32>)> {
        let BlockW {
            b,
            norm1,
            norm2,
            qkv: qkv_l,
            o: o_l,
            up: up_l,
            down: down_l,
        } = BlockW::of(self, l)?;
        let Dims {
            d,
            h,
            hd,
            wqkv,
            ffn,
            ..
        } = *dims;
        let n = x.len() / d;
        // Per range of rows (one per thread, gemms single-threaded): norm1, q|k|v, RoPE.
        let per = row_range(n);
        let mut qkv = vec![0f32; n * wqkv];
        qkv.par_chunks_mut(per * wqkv)
            .zip(x.par_chunks(per * d))
            .zip(pk.pos.par_chunks(per))
            .for_each(|((qkv, x), poss)| {
                let mut hb = vec![0f32; x.len()];
                for (y, x) in hb.chunks_mut(d).zip(x.chunks(d)) {
                    norm1.forward_row(x, y);
                }
                qkv_l.forward(&hb, qkv);
                rope_rows(qkv, poss, rope, dims, false);
            });
        // Attention per (segment, head).
        let (probs, attn) = attention::forward(&qkv, pk, dims, n_prob);
        // Per range of rows: o, residual, norm2, up, the nonlinearity (its Jacobian kept in
        // `pre`), down, residual.
        let pw = b.act.pre_width(ffn);
        let mut x_mid = vec![0f32; n * d];
        let mut pre = vec![0f32; n * pw];
        let mut out = vec![0f32; n * d];
        x_mid
            .par_chunks_mut(per * d)
            .zip(out.par_chunks_mut(per * d))
            .zip(pre.par_chunks_mut(per * pw))
            .zip(attn.par_chunks(per * h * hd))
            .zip(x.par_chunks(per * d))
            .for_each(|((((xm, out), pre), attn), x)| {
                o_l.forward(attn, xm);
                xm.iter_mut().zip(x).for_each(|(a, b)| *a += b);
                let mut hb = vec![0f32; xm.len()];
                for (y, x) in hb.chunks_mut(d).zip(xm.chunks(d)) {
                    norm2.forward_row(x, y);
                }
                up_l.forward(&hb, pre);
                let rows = xm.len() / d;
                let mut act = vec![0f32; rows * ffn];
                for (a, p) in act.chunks_mut(ffn).zip(pre.chunks_mut(pw)) {
                    b.act.forward_row(p, a);
                }
                down_l.forward(&act, out);
                out.iter_mut().zip(xm.iter()).for_each(|(a, b)| *a += b);
            });
        drop(attn);
        Ok((
            Tape {
                x_in: x,
                qkv,
                probs,
                x_mid,
                jac: pre,
            },
            out,
        ))
    }
}
