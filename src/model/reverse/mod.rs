//! The multi-target reverse pass behind input saliency: one forward pass per sequence serves
//! every target of that sequence, and one backward pass carries every target's cotangent at once.
//!
//! A *segment* is one sequence of input embeddings (a prompt plus its generated tokens, possibly
//! scaled for an integrated-gradients step). A *target* asks for a [`Metric`] of the output
//! distribution after the first `prefix` positions of the segment (a token's probability, or a
//! contrast between two tokens), and optionally its gradient with respect to those positions'
//! embeddings. Attention is causal, so the activations of one forward pass over the
//! whole segment are, at every position, exactly those of a forward pass over any prefix: the
//! forward pass is shared by all the segment's targets. An encoder's target (a [MASK]
//! prediction) depends on the whole segment: its prefix is the segment, its rows attend both
//! ways, and it reads its own position.
//!
//! The backward pass works on *packed* cotangents: target j of a segment owns `prefix_j` rows,
//! one per position it can depend on, so no row is spent on positions after a target (the
//! gradient there is exactly zero). Every linear layer's input gradient is then one large gemm
//! over all targets of all segments of a chunk, element-wise steps (norms, activations, RoPE)
//! read the forward activation of the row's token, and attention runs per (target, key/value
//! head) on the target's own prefix, causal rows only (row i meets keys 0..=i), as plain
//! vectorized loops: the matrices are a few dozen rows, too small for gemm's per-call cost. Only
//! input gradients are computed, never weight gradients.
//!
//! Everything runs on raw f32 slices with the gemm crate; the formulas are those of
//! `autodiff.rs` (checked by finite differences there) and the results are checked against the
//! candle-autograd path (`Model::embedding_gradients`) in `tests.rs`.
//!
//! This file drives the pass: packing, the loop over blocks, the LM head. `block` is a block
//! as the pass reads it, `forward` and `backward` one block's two halves, `attention` the
//! attention in both directions, and `rows` the steps that work one row at a time.

mod attention;
mod backward;
mod block;
mod forward;
mod rows;
#[cfg(test)]
mod tests;

use rayon::prelude::*;

use super::Model;
use crate::error::{Error, Result};
use crate::numerics::wmat::gemm_w_strided;
use backward::RowMap;
use backward::Scratch;
use block::{Data, Lin, Norm, gemm};
use rows::metric_cotangent_row;

/// One sequence to explain.
pub struct Segment {
    /// Input token embeddings [len, d] (already scaled by the caller, e.g. for an IG step).
    pub embeds: Vec<f32>,
    pub targets: Vec<SegTarget>,
}

/// A metric of the output distribution at position `at` given the segment's first `prefix`
/// positions (decoders: `at = prefix - 1`, the next-token prediction; encoders: `prefix` is the
/// whole segment, every position seeing every other, and `at` e.g. a [MASK]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegTarget {
    pub prefix: usize,
    pub at: usize,
    pub metric: Metric,
    /// Whether to compute d prob / d embeds[..prefix] (otherwise only the value).
    pub grad: bool,
}

/// What a target measures, from the logits z at its position (after a final soft-cap, where the
/// model has one) and their softmax p.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// p[token]: Ecco's and captum's target.
    Prob(u32),
    /// z[a] - z[b].
    LogitDiff(u32, u32),
    /// p[a] - p[b].
    ProbDiff(u32, u32),
    /// log p[a] - log p[b]: equal to `LogitDiff` up to rounding (the log-sum-exp cancels).
    LogProbRatio(u32, u32),
}

impl Metric {
    /// Its name in tables and YAML: `prob`, `logit_diff`, `prob_diff`, `log_prob_ratio`.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Prob(_) => "prob",
            Metric::LogitDiff(..) => "logit_diff",
            Metric::ProbDiff(..) => "prob_diff",
            Metric::LogProbRatio(..) => "log_prob_ratio",
        }
    }

    /// Its value on one row of logits (after any final soft-cap).
    pub fn eval(self, logits: &[f32]) -> f32 {
        let mut row = logits.to_vec();
        metric_cotangent_row(&mut row, self)
    }

    /// The tokens it reads.
    pub fn tokens(self) -> Vec<u32> {
        match self {
            Metric::Prob(t) => vec![t],
            Metric::LogitDiff(a, b) | Metric::ProbDiff(a, b) | Metric::LogProbRatio(a, b) => {
                vec![a, b]
            }
        }
    }
}

/// Per target of a segment: the metric's value, and its gradient [prefix, d] if asked for.
#[derive(Debug, Default)]
pub struct SegResult {
    pub values: Vec<f32>,
    pub grads: Vec<Option<Vec<f32>>>,
}

/// A RoPE table's cos and sin [max_pos, rot / 2], borrowed.
type Rope<'a> = (&'a [f32], &'a [f32]);

/// Sizes shared by every step.
#[derive(Clone, Copy)]
struct Dims {
    d: usize,
    h: usize,
    hkv: usize,
    hd: usize,
    /// Width of the stacked q | k | v projection.
    wqkv: usize,
    ffn: usize,
    // What differs between blocks (`Dims::of_block`):
    window: Option<usize>,
    causal: bool,
    /// Half the values of each head RoPE rotates (0 without RoPE).
    rot_half: usize,
    /// Scores are `scale * q . k`, soft-capped as `cap * tanh(score / cap)` if `softcap`.
    scale: f32,
    softcap: Option<f32>,
}

impl Dims {
    fn visible(&self, i: usize, j: usize) -> bool {
        (!self.causal || j <= i) && self.window.is_none_or(|w| i.abs_diff(j) < w)
    }

    /// These sizes with block `b`'s attention settings; `rot_half` from its RoPE table.
    fn of_block(&self, b: &crate::model::block::Block, rot_half: usize) -> Dims {
        Dims {
            window: b.attn.window,
            causal: b.attn.causal,
            rot_half,
            scale: b.attn.scale,
            softcap: b.attn.softcap,
            ..*self
        }
    }
}

/// Where each segment lives in the packed token arrays.
struct Packing {
    /// First packed token of each segment.
    start: Vec<usize>,
    len: Vec<usize>,
    /// Offset of each segment's [H, len, len] probabilities.
    prob_off: Vec<usize>,
    /// Position of each packed token within its segment.
    pos: Vec<usize>,
}

/// One target's gradients at every block's patching sites (`model::patch`), over its prefix:
/// per layer, d metric / d (block input) [prefix, d], d metric / d (heads' outputs before the
/// output projection) [prefix, H * hd], d metric / d (MLP output as added to the residual)
/// [prefix, d].
#[derive(Debug, Default)]
pub struct SiteGrads {
    pub resid_pre: Vec<Vec<f32>>,
    pub z: Vec<Vec<f32>>,
    pub mlp_out: Vec<Vec<f32>>,
}

impl Model {
    /// An upper bound on the bytes the reverse pass keeps per forward token: its tape over every
    /// block (the input and mid-block residual streams, q | k | v before and after norms and
    /// RoPE, the attention output, the nonlinearity's Jacobian, the optional pre-norm sums),
    /// attention probabilities aside. Target-prefix rows cost far less (one block's scratch).
    pub fn reverse_bytes_per_token(&self) -> usize {
        let cfg = &self.config;
        let (d, ffn) = (cfg.hidden_size, cfg.intermediate_size);
        let wqkv = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim;
        let wo = cfg.n_heads * cfg.head_dim;
        let f32s: usize = (self.body.blocks.iter())
            .map(|b| 6 * d + 2 * wqkv + wo + b.mlp.act.pre_width(ffn))
            .sum();
        4 * f32s
    }

    /// For every segment and target: the target's metric and, where asked, its gradient with
    /// respect to the prefix's input token embeddings (see the module docs). Memory grows with
    /// the total tokens and the total prefix rows of the segments given: the caller bounds it
    /// by chunking.
    pub fn metric_gradients(&self, segments: &[Segment]) -> Result<Vec<SegResult>> {
        self.reverse(segments, None)
    }

    /// One target's metric and its gradients at every block's sites (attribution patching):
    /// `embeds` [len, d] the segment's token embeddings, the target reads position `len - 1`
    /// after the whole segment (a decoder's).
    pub fn site_gradients(&self, embeds: Vec<f32>, metric: Metric) -> Result<(f32, SiteGrads)> {
        let len = embeds.len() / self.config.hidden_size.max(1);
        if self.config.is_encoder() || len == 0 {
            return Err(Error::Input(
                "site gradients read a decoder's prediction after a non-empty segment".into(),
            ));
        }
        let seg = Segment {
            embeds,
            targets: vec![SegTarget {
                prefix: len,
                at: len - 1,
                metric,
                grad: true,
            }],
        };
        let n = self.config.n_layers;
        let mut sites = SiteGrads {
            resid_pre: vec![vec![]; n],
            z: vec![vec![]; n],
            mlp_out: vec![vec![]; n],
        };
        let res = self.reverse(std::slice::from_ref(&seg), Some(&mut sites))?;
        Ok((res[0].values[0], sites))
    }

    /// `metric_gradients`, and with `sites` (one segment, one target with a gradient) the
    /// gradients at every block's sites.
    fn reverse(
        &self,
        segments: &[Segment],
        mut sites: Option<&mut SiteGrads>,
    ) -> Result<Vec<SegResult>> {
        let cfg = &self.config;
        let d = cfg.hidden_size;
        let dims = Dims {
            d,
            h: cfg.n_heads,
            hkv: cfg.n_kv_heads,
            hd: cfg.head_dim,
            wqkv: (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim,
            ffn: cfg.intermediate_size,
            window: None,
            causal: true,
            rot_half: 0,
            scale: 1.0,
            softcap: None,
        };
        let encoder = self.body.blocks.iter().any(|b| !b.attn.causal);
        // Validate and pack.
        let mut pk = Packing {
            start: vec![],
            len: vec![],
            prob_off: vec![],
            pos: vec![],
        };
        let (mut n_tok, mut n_prob) = (0, 0);
        for (si, s) in segments.iter().enumerate() {
            let len = s.embeds.len() / d;
            if len == 0 || s.embeds.len() != len * d {
                return Err(Error::Input(format!(
                    "segment {si}: embeddings of {} values are not a non-empty [len, {d}] matrix",
                    s.embeds.len()
                )));
            }
            if len > cfg.max_position_embeddings {
                return Err(Error::Input(format!(
                    "segment {si}: {len} positions exceed the model's context ({} tokens)",
                    cfg.max_position_embeddings
                )));
            }
            for t in &s.targets {
                if t.prefix == 0
                    || t.prefix > len
                    || t.at >= t.prefix
                    || (encoder && t.prefix != len)
                    || (!encoder && t.at + 1 != t.prefix)
                    || t.metric
                        .tokens()
                        .iter()
                        .any(|&k| k as usize >= cfg.vocab_size)
                {
                    return Err(Error::Input(format!(
                        "segment {si}: target prefix {} / position {} / {:?} does not fit \
                         {len} positions and {} tokens{}",
                        t.prefix,
                        t.at,
                        t.metric,
                        cfg.vocab_size,
                        if encoder {
                            " (an encoder's target sees the whole segment)"
                        } else {
                            " (a decoder's target reads the last position of its prefix)"
                        }
                    )));
                }
            }
            pk.start.push(n_tok);
            pk.len.push(len);
            pk.prob_off.push(n_prob);
            pk.pos.extend(0..len);
            n_tok += len;
            n_prob += dims.h * len * len;
        }
        let mut x = Vec::with_capacity(n_tok * d);
        for s in segments {
            x.extend_from_slice(&s.embeds);
        }
        if let Some(s) = self.body.embed_scale {
            x.par_iter_mut().for_each(|v| *v *= s);
        }
        if let Some(wpe) = &self.body.pos_embed {
            let wpe = Data::of(wpe)?;
            let wpe = wpe.s();
            x.par_chunks_mut(d).zip(&pk.pos).for_each(|(row, &p)| {
                for (v, e) in row.iter_mut().zip(&wpe[p * d..(p + 1) * d]) {
                    *v += e;
                }
            });
        }
        // BERT's embedding LayerNorm: its input kept for the backward pass.
        let embed_norm = self.body.embed_norm.as_ref().map(Norm::of).transpose()?;
        let x_embed = match &embed_norm {
            Some(n) => {
                let raw = x.clone();
                x.par_chunks_mut(d)
                    .zip(raw.par_chunks(d))
                    .for_each(|(y, r)| n.forward_row(r, y));
                Some(raw)
            }
            None => None,
        };
        let tables = self
            .body
            .ropes
            .iter()
            .map(|r| {
                let (c, s) = r.tables();
                Ok((Data::of(c)?, Data::of(s)?, c.dim(1)?))
            })
            .collect::<Result<Vec<_>>>()?;
        // Each block's RoPE table and sizes.
        let layer = |l: usize| -> (Option<Rope<'_>>, Dims) {
            let b = &self.body.blocks[l];
            match b.attn.rope.and_then(|i| tables.get(i)) {
                Some((c, s, half)) => (Some((c.s(), s.s())), dims.of_block(b, *half)),
                None => (None, dims.of_block(b, 0)),
            }
        };

        // ---- forward, keeping each block's tape ----
        let mut tapes = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let (rope, ldims) = layer(l);
            let (tape, next) = self.block_forward(l, x, &pk, &ldims, rope, n_prob)?;
            tapes.push(tape);
            x = next;
        }

        // ---- the targets' values and the cotangents at the final norm ----
        // Packed cotangent rows: target j owns `prefix_j` rows, its positions 0..prefix_j.
        struct Row {
            tok: usize,
            pos: usize,
        }
        let mut rows: Vec<Row> = Vec::new();
        let mut row_start = Vec::new(); // per (segment, target) with grad
        let mut last_tok = Vec::new(); // packed token of each target's last input position
        for (si, s) in segments.iter().enumerate() {
            for t in &s.targets {
                last_tok.push(pk.start[si] + t.at);
                if t.grad {
                    row_start.push(rows.len());
                    rows.extend((0..t.prefix).map(|p| Row {
                        tok: pk.start[si] + p,
                        pos: p,
                    }));
                }
            }
        }
        let metrics: Vec<Metric> = segments
            .iter()
            .flat_map(|s| s.targets.iter().map(|t| t.metric))
            .collect();
        let n_targets = metrics.len();
        let final_norm = self.body.final_norm.as_ref().map(Norm::of).transpose()?;
        let lm = Data::of(self.body.lm_head()?)?;
        let vocab = cfg.vocab_size;
        // The head at the targets' rows: the transform (BERT: dense + nonlinearity, its
        // Jacobian kept), then the final norm (its input kept).
        let head = match &self.body.head_transform {
            Some((lin, act)) => Some((Lin::of(lin)?, *act)),
            None => None,
        };
        let mut hin: Vec<f32> = last_tok
            .iter()
            .flat_map(|&t| x[t * d..(t + 1) * d].iter().copied())
            .collect();
        let mut head_jac = vec![];
        if let Some((lin, act)) = &head {
            let pw = act.pre_width(d);
            head_jac = vec![0f32; n_targets * pw];
            lin.forward(&hin, &mut head_jac);
            for (h, p) in hin.chunks_mut(d).zip(head_jac.chunks_mut(pw)) {
                act.forward_row(p, h);
            }
        }
        let mut hf = vec![0f32; n_targets * d];
        hf.par_chunks_mut(d)
            .zip(hin.par_chunks(d))
            .for_each(|(h, xr)| match &final_norm {
                Some(n) => n.forward_row(xr, h),
                None => h.copy_from_slice(xr),
            });
        // logits [T, V] = hf . lm^T (lm is [V, d]) + bias, soft-capped if the model caps them.
        let mut logits = vec![0f32; n_targets * vocab];
        match self.body.lm_bf16.as_deref() {
            Some(p) => {
                let packed = p.forward(vocab, d, lm.w(), 1, d);
                let threads = crate::numerics::amx::threads_here();
                crate::numerics::amx::gemm_packed(
                    n_targets,
                    &mut logits,
                    vocab,
                    false,
                    &hf,
                    d,
                    1,
                    packed,
                    threads,
                );
            }
            None => gemm(n_targets, vocab, d, &mut logits, false, &hf, lm.w(), 1, d),
        }
        if let Some(b) = &self.body.lm_bias {
            let b = Data::of(b)?;
            logits
                .par_chunks_mut(vocab)
                .for_each(|row| row.iter_mut().zip(b.s()).for_each(|(l, b)| *l += b));
        }
        let cap = self.body.final_softcap;
        let values: Vec<f32> = logits
            .par_chunks_mut(vocab)
            .zip(&metrics)
            .map(|(row, &metric)| match cap {
                None => metric_cotangent_row(row, metric),
                Some(c) => {
                    // d p / d raw = d p / d capped * (1 - tanh^2)
                    let mut deriv = Vec::with_capacity(row.len());
                    for v in row.iter_mut() {
                        let t = (*v / c).tanh();
                        *v = c * t;
                        deriv.push(1.0 - t * t);
                    }
                    let p = metric_cotangent_row(row, metric);
                    row.iter_mut().zip(&deriv).for_each(|(v, k)| *v *= k);
                    p
                }
            })
            .collect();
        let mut results: Vec<SegResult> = Vec::with_capacity(segments.len());
        {
            let mut k = 0;
            for s in segments {
                results.push(SegResult {
                    values: values[k..k + s.targets.len()].to_vec(),
                    grads: vec![None; s.targets.len()],
                });
                k += s.targets.len();
            }
        }
        let grad_targets: Vec<usize> = segments
            .iter()
            .flat_map(|s| s.targets.iter())
            .enumerate()
            .filter(|(_, t)| t.grad)
            .map(|(i, _)| i)
            .collect();
        if grad_targets.is_empty() {
            return Ok(results);
        }
        let p = rows.len();
        // d prob / d hf for the targets with gradients: [G, V] . lm [V, d].
        let dl: Vec<f32> = grad_targets
            .iter()
            .flat_map(|&i| logits[i * vocab..(i + 1) * vocab].iter().copied())
            .collect();
        drop(logits);
        // Over ranges of the vocabulary in parallel (a single gemm over k = vocab parallelizes
        // poorly), partial products summed in range order: fixed ranges, so the result does
        // not depend on the thread count.
        let ng = grad_targets.len();
        let per_v = 8192;
        let dhf = (0..vocab)
            .step_by(per_v)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|v0| {
                let len = per_v.min(vocab - v0);
                let mut part = vec![0f32; ng * d];
                gemm_w_strided(
                    ng,
                    d,
                    len,
                    &mut part,
                    false,
                    &dl[v0..],
                    vocab,
                    1,
                    lm.w().tail(v0 * d),
                    d,
                    1,
                );
                part
            })
            .reduce_with(|mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            })
            .unwrap_or_else(|| vec![0f32; ng * d]);
        let mut g = vec![0f32; p * d];
        for (gi, &ti) in grad_targets.iter().enumerate() {
            let t = last_tok[ti];
            let r = row_start[gi] + (t - rows[row_start[gi]].tok);
            let dy = &dhf[gi * d..(gi + 1) * d];
            let xin = &hin[ti * d..(ti + 1) * d];
            let mut dn = vec![0f32; d];
            match &final_norm {
                Some(n) => n.backward_row(xin, dy, &mut dn),
                None => dn.copy_from_slice(dy),
            }
            if let Some((lin, act)) = &head {
                let pw = act.pre_width(d);
                let mut dpre = vec![0f32; pw];
                act.backward_row(&head_jac[ti * pw..(ti + 1) * pw], &dn, &mut dpre);
                lin.backward(&dpre, &mut dn);
            }
            let dx = &mut g[r * d..(r + 1) * d];
            dx.iter_mut().zip(&dn).for_each(|(a, b)| *a += b);
        }
        drop(x);

        // ---- backward through the blocks ----
        // Per grad target: (segment, first row, prefix).
        let mut spans = Vec::with_capacity(grad_targets.len());
        {
            let mut gi = 0;
            for (si, s) in segments.iter().enumerate() {
                for t in &s.targets {
                    if t.grad {
                        spans.push((si, row_start[gi], t.prefix));
                        gi += 1;
                    }
                }
            }
        }
        let row_tok: Vec<usize> = rows.iter().map(|r| r.tok).collect();
        let row_pos: Vec<usize> = rows.iter().map(|r| r.pos).collect();
        // Rows with a cotangent at the top: each target's own position.
        let at: Vec<usize> = segments
            .iter()
            .flat_map(|s| s.targets.iter().filter(|t| t.grad).map(|t| t.at))
            .collect();
        let top: Vec<usize> = spans
            .iter()
            .zip(&at)
            .map(|(&(_, r0, _), &a)| r0 + a)
            .collect();
        let mut ws = Scratch::new(p, &dims);
        let map = RowMap {
            tok: &row_tok,
            pos: &row_pos,
            spans: &spans,
        };
        for l in (0..cfg.n_layers).rev() {
            let tape = tapes.pop().expect("one tape per layer");
            let top = (l + 1 == cfg.n_layers).then_some(&top[..]);
            let (rope, ldims) = layer(l);
            if let Some(s) = sites.as_deref_mut() {
                // Decoders' blocks have no norm after the residual sum: d / d (block output) is
                // d / d (MLP output).
                s.mlp_out[l] = g.clone();
            }
            self.block_backward(l, &tape, &mut g, top, &mut ws, &map, &pk, &ldims, rope)?;
            if let Some(s) = sites.as_deref_mut() {
                s.z[l] = ws.da(p, &ldims).to_vec();
                s.resid_pre[l] = g.clone();
            }
        }
        // Back through the embedding LayerNorm (BERT).
        if let (Some(n), Some(raw)) = (&embed_norm, &x_embed) {
            g.par_chunks_mut(d).zip(&row_tok).for_each(|(gr, &t)| {
                let dy = gr.to_vec();
                gr.fill(0.0);
                n.backward_row(&raw[t * d..(t + 1) * d], &dy, gr);
            });
        }
        // Gradients with respect to the unscaled token embeddings.
        if let Some(s) = self.body.embed_scale {
            g.par_iter_mut().for_each(|v| *v *= s);
        }

        // ---- split the packed gradient by target ----
        let mut gi = 0;
        for (si, s) in segments.iter().enumerate() {
            for (ti, t) in s.targets.iter().enumerate() {
                if t.grad {
                    let r0 = spans[gi].1;
                    results[si].grads[ti] = Some(g[r0 * d..(r0 + t.prefix) * d].to_vec());
                    gi += 1;
                }
            }
        }
        Ok(results)
    }
}

/// Rows per range when `m` rows are split into one range per thread. Steps that work row by row
/// run per range, each range's gemms single-threaded (see `numerics::matrix::gemm_strided`), with the
/// element-wise steps between them on rows still in that thread's cache: one synchronization
/// per group of steps instead of one per step and per gemm.
fn row_range(m: usize) -> usize {
    m.div_ceil(rayon::current_num_threads().max(1)).max(1)
}
