//! One block's backward pass over the packed cotangent rows of all targets: the MLP branch and
//! the attention's output side (`mlp_backward`), attention, RoPE, the q/k norms, the q|k|v
//! projection and the attention's input norm, input gradients only. Like the forward pass, it
//! interprets the block's description.

use rayon::prelude::*;

use super::block::{BlockW, Norm};
use super::forward::Tape;
use super::rows::rope_rows;
use super::{Dims, Packing, Rope, attention, row_range};
use crate::error::Result;
use crate::model::Model;

/// Where one backward pass's rows are: packed token and position of each row, and each grad
/// target's (segment, first row, prefix).
pub(super) struct RowMap<'a> {
    pub(super) tok: &'a [usize],
    pub(super) pos: &'a [usize],
    pub(super) spans: &'a [(usize, usize, usize)],
}

/// dy := J_norm(x)^T dy for one row group of rows (a norm that replaces its input).
fn through(norm: &Option<Norm<'_>>, x: &[f32], dy: &mut [f32]) {
    if let Some(n) = norm {
        let src = dy.to_vec();
        dy.fill(0.0);
        n.backward_groups(x, &src, dy);
    }
}

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
        rows: &RowMap<'_>,
        pk: &Packing,
        dims: &Dims,
        rope: Option<Rope<'_>>,
    ) -> Result<()> {
        let w = BlockW::of(self, l)?;
        let Dims {
            d,
            h,
            hkv,
            hd,
            wqkv,
            ..
        } = *dims;
        let (hq, hk) = (h * hd, hkv * hd);
        let p = rows.tok.len();
        match top {
            None => {
                let mut da = std::mem::take(&mut ws.da);
                mlp_backward(&w, tape, g, rows.tok, &mut da[..p * hq], dims);
                ws.da = da;
            }
            Some(top) => {
                let mut gc: Vec<f32> = top
                    .iter()
                    .flat_map(|&r| g[r * d..(r + 1) * d].iter().copied())
                    .collect();
                let toks: Vec<usize> = top.iter().map(|&r| rows.tok[r]).collect();
                let mut dac = vec![0f32; top.len() * hq];
                mlp_backward(&w, tape, &mut gc, &toks, &mut dac, dims);
                let da = &mut ws.da[..p * hq];
                da.fill(0.0);
                for (k, &r) in top.iter().enumerate() {
                    g[r * d..(r + 1) * d].copy_from_slice(&gc[k * d..(k + 1) * d]);
                    da[r * hq..(r + 1) * hq].copy_from_slice(&dac[k * hq..(k + 1) * hq]);
                }
            }
        }
        let da = &ws.da[..p * hq];
        let dh = &mut ws.dh[..p * d];
        let dqkv = &mut ws.dqkv[..p * wqkv];
        // Attention: g += attn_in'(x_in)^T qkv^T qk_norm'^T rope^T attn'^T (o^T .., in `da`)
        attention::backward(&tape.qkv, &tape.probs, da, dqkv, rows.spans, pk, dims);
        // Per range of rows: un-rotate, q/k norms, qkv^T, attn_in'.
        let per = row_range(p);
        dqkv.par_chunks_mut(per * wqkv)
            .zip(dh.par_chunks_mut(per * d))
            .zip(g.par_chunks_mut(per * d))
            .zip(rows.tok.par_chunks(per))
            .zip(rows.pos.par_chunks(per))
            .for_each(|((((dqkv, dh), g), toks), poss)| {
                rope_rows(dqkv, poss, rope, dims, true);
                if let Some(raw) = &tape.qkv_raw {
                    for (row, &t) in dqkv.chunks_mut(wqkv).zip(toks) {
                        let x = &raw[t * wqkv..(t + 1) * wqkv];
                        through(&w.q_norm, &x[..hq], &mut row[..hq]);
                        through(&w.k_norm, &x[hq..hq + hk], &mut row[hq..hq + hk]);
                    }
                }
                w.qkv.backward(dqkv, dh);
                for ((g, dh), &t) in g.chunks_mut(d).zip(dh.chunks(d)).zip(toks) {
                    match &w.attn_in {
                        Some(n) => n.backward_row(&tape.x_in[t * d..(t + 1) * d], dh, g),
                        None => g.iter_mut().zip(dh).for_each(|(g, v)| *g += v),
                    }
                }
            });
        Ok(())
    }
}

/// Scratch buffers of the backward pass, sized for the packed rows once and reused by every
/// block: each is overwritten in full before it is read, so they are never cleared.
pub(super) struct Scratch {
    dh: Vec<f32>,
    da: Vec<f32>,
    dqkv: Vec<f32>,
}

impl Scratch {
    /// d / d (attention output before the output projection) of the last block run, [rows, H *
    /// hd].
    pub(super) fn da(&self, rows: usize, dims: &Dims) -> &[f32] {
        &self.da[..rows * dims.h * dims.hd]
    }

    pub(super) fn new(rows: usize, dims: &Dims) -> Self {
        Scratch {
            dh: vec![0f32; rows * dims.d],
            da: vec![0f32; rows * dims.h * dims.hd],
            dqkv: vec![0f32; rows * dims.wqkv],
        }
    }
}

/// The MLP branch's and the attention output side's backward pass on the rows of `g` (whose
/// forward activations are those of the packed tokens `toks`): `g` goes from d / d (block
/// output) to d / d (the residual stream before the attention's sum, plus, for parallel
/// blocks, the MLP branch's share of d / d (block input)), and da = d / d (attention output).
fn mlp_backward(
    w: &BlockW<'_>,
    tape: &Tape,
    g: &mut [f32],
    toks: &[usize],
    da: &mut [f32],
    dims: &Dims,
) {
    let (d, ffn, wo) = (dims.d, dims.ffn, dims.h * dims.hd);
    let b = w.b;
    let pw = b.mlp.act.pre_width(ffn);
    let m = toks.len();
    let per = row_range(m);
    let row = |v: &'_ Option<Vec<f32>>, t: usize| -> Vec<f32> {
        v.as_ref()
            .map(|v| v[t * d..(t + 1) * d].to_vec())
            .unwrap_or_default()
    };
    g.par_chunks_mut(per * d)
        .zip(toks.par_chunks(per))
        .zip(da[..m * wo].par_chunks_mut(per * wo))
        .for_each(|((g, toks), da)| {
            let rows = toks.len();
            // Through mlp_res, then the MLP branch: gm = mlp_out'^T g.
            for (g, &t) in g.chunks_mut(d).zip(toks) {
                through(&w.mlp_res, &row(&tape.out_raw, t), g);
            }
            let mut gm = g.to_vec();
            for (gm, &t) in gm.chunks_mut(d).zip(toks) {
                through(&w.mlp_out, &row(&tape.m_raw, t), gm);
            }
            let mut dact = vec![0f32; rows * ffn];
            w.down.backward(&gm, &mut dact);
            let mut dpre = vec![0f32; rows * pw];
            for ((dp, dact), &t) in dpre.chunks_mut(pw).zip(dact.chunks(ffn)).zip(toks) {
                b.mlp
                    .act
                    .backward_row(&tape.jac[t * pw..(t + 1) * pw], dact, dp);
            }
            let mut dh = vec![0f32; rows * d];
            w.up.backward(&dpre, &mut dh);
            // The attention's share: d / d (its output after attn_out).
            let mut ga = if b.parallel { g.to_vec() } else { vec![] };
            for ((g, dh), &t) in g.chunks_mut(d).zip(dh.chunks(d)).zip(toks) {
                match &w.mlp_in {
                    Some(n) => n.backward_row(tape.mlp_x(b.parallel, t, d), dh, g),
                    None => g.iter_mut().zip(dh).for_each(|(g, v)| *g += v),
                }
                if !b.parallel {
                    through(&w.attn_res, &row(&tape.mid_raw, t), g);
                }
            }
            if !b.parallel {
                ga = g.to_vec();
            }
            for (ga, &t) in ga.chunks_mut(d).zip(toks) {
                through(&w.attn_out, &row(&tape.a_raw, t), ga);
            }
            w.o.backward(&ga, da);
        });
}
