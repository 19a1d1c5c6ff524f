//! One block's backward pass over the packed cotangent rows of all targets: the MLP and the
//! attention output projection (`mlp_backward`), attention, RoPE, the q|k|v projection and the
//! first norm, input gradients only.

use rayon::prelude::*;

use super::block::BlockW;
use super::forward::Tape;
use super::rows::rope_rows;
use super::{Dims, Packing, attention, row_range};
use crate::error::Result;
use crate::model::Model;

impl Model {
    /// One block's backward pass: `g` [rows, d] holds d target / d (block output) and becomes
    /// d target / d (block input). `top`, for the last block, lists the only rows where `g` is
    /// not zero (each target's last position): its MLP and output projection then run on those
    /// rows alone, since a zero cotangent stays zero through them.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn block_backward(
        &self,
        l: usize,
        tape: &Tape,
        g: &mut [f32],
        top: Option<&[usize]>,
        ws: &mut Scratch,
        row_tok: &[usize],
        row_pos: &[usize],
        spans: &[(usize, usize, usize)],
        pk: &Packing,
        dims: &Dims,
        rope: Option<(&[f32], &[f32])>,
    ) -> Result<()> {
        let w = BlockW::of(self, l)?;
        let Dims { d, h, hd, wqkv, .. } = *dims;
        let p = row_tok.len();
        match top {
            None => {
                let mut da = std::mem::take(&mut ws.da);
                mlp_backward(&w, tape, g, row_tok, ws, &mut da[..p * h * hd], dims);
                ws.da = da;
            }
            Some(rows) => {
                let mut gc: Vec<f32> = rows
                    .iter()
                    .flat_map(|&r| g[r * d..(r + 1) * d].iter().copied())
                    .collect();
                let toks: Vec<usize> = rows.iter().map(|&r| row_tok[r]).collect();
                let mut dac = vec![0f32; rows.len() * h * hd];
                mlp_backward(&w, tape, &mut gc, &toks, ws, &mut dac, dims);
                let da = &mut ws.da[..p * h * hd];
                da.fill(0.0);
                for (k, &r) in rows.iter().enumerate() {
                    g[r * d..(r + 1) * d].copy_from_slice(&gc[k * d..(k + 1) * d]);
                    da[r * h * hd..(r + 1) * h * hd]
                        .copy_from_slice(&dac[k * h * hd..(k + 1) * h * hd]);
                }
            }
        }
        let BlockW {
            norm1, qkv: qkv_l, ..
        } = w;
        let da = &ws.da[..p * h * hd];
        let dh = &mut ws.dh[..p * d];
        let dqkv = &mut ws.dqkv[..p * wqkv];
        // Attention: g += norm1'(x_in)^T qkv^T rope^T attn'^T (o^T g, in `da`)
        attention::backward(&tape.qkv, &tape.probs, da, dqkv, spans, pk, dims);
        // Per range of rows: un-rotate, qkv^T, norm1'.
        let per = row_range(p);
        dqkv.par_chunks_mut(per * wqkv)
            .zip(dh.par_chunks_mut(per * d))
            .zip(g.par_chunks_mut(per * d))
            .zip(row_tok.par_chunks(per))
            .zip(row_pos.par_chunks(per))
            .for_each(|((((dqkv, dh), g), toks), poss)| {
                rope_rows(dqkv, poss, rope, dims, true);
                qkv_l.backward(dqkv, dh);
                for ((g, dh), &t) in g.chunks_mut(d).zip(dh.chunks(d)).zip(toks) {
                    norm1.backward_row(&tape.x_in[t * d..(t + 1) * d], dh, g);
                }
            });
        Ok(())
    }
}

/// Scratch buffers of the backward pass, sized for the packed rows once and reused by every
/// block: each is overwritten in full before it is read, so they are never cleared.
pub(super) struct Scratch {
    dact: Vec<f32>,
    dpre: Vec<f32>,
    dh: Vec<f32>,
    da: Vec<f32>,
    dqkv: Vec<f32>,
}

impl Scratch {
    pub(super) fn new(rows: usize, dims: &Dims, pre_width: usize) -> Self {
        Scratch {
            dact: vec![0f32; rows * dims.ffn],
            dpre: vec![0f32; rows * pre_width],
            dh: vec![0f32; rows * dims.d],
            da: vec![0f32; rows * dims.h * dims.hd],
            dqkv: vec![0f32; rows * dims.wqkv],
        }
    }
}

/// The MLP's and the attention output projection's backward pass on the rows of `g` (whose
/// forward activations are those of the packed tokens `toks`): g += norm2'(x_mid)^T up^T
/// act'(pre)^T down^T g, then da = o^T g.
fn mlp_backward(
    w: &BlockW<'_>,
    tape: &Tape,
    g: &mut [f32],
    toks: &[usize],
    ws: &mut Scratch,
    da: &mut [f32],
    dims: &Dims,
) {
    let (d, ffn, wo) = (dims.d, dims.ffn, dims.h * dims.hd);
    let pw = w.b.act.pre_width(ffn);
    let m = toks.len();
    let per = row_range(m);
    g.par_chunks_mut(per * d)
        .zip(ws.dact[..m * ffn].par_chunks_mut(per * ffn))
        .zip(ws.dpre[..m * pw].par_chunks_mut(per * pw))
        .zip(ws.dh[..m * d].par_chunks_mut(per * d))
        .zip(toks.par_chunks(per))
        .zip(da[..m * wo].par_chunks_mut(per * wo))
        .for_each(|(((((g, dact), dpre), dh), toks), da)| {
            w.down.backward(g, dact);
            for ((dp, da), &t) in dpre.chunks_mut(pw).zip(dact.chunks(ffn)).zip(toks) {
                w.b.act
                    .backward_row(&tape.jac[t * pw..(t + 1) * pw], da, dp);
            }
            w.up.backward(dpre, dh);
            for ((g, dh), &t) in g.chunks_mut(d).zip(dh.chunks(d)).zip(toks) {
                w.norm2.backward_row(&tape.x_mid[t * d..(t + 1) * d], dh, g);
            }
            w.o.backward(g, da);
        });
}
