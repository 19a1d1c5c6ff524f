//! The logit lens and next-token predictions: the residual stream at a layer (or the final
//! hidden state) projected through the unembedding, reduced per position to the rank and
//! probability of the actual next token, the top-k candidates, and the rank and probability of
//! watched tokens (Ecco's `layer_predictions`, `rankings` and `rankings_watch`).
//!
//! Definitions (docs/schema.md): probabilities are the softmax over the whole vocabulary; ranks are
//! 1-based (1 = the most likely token) and count the tokens with a strictly larger logit, so tied
//! tokens share a rank. Vocabulary-sized logits are never kept for more than a chunk of positions.

use candle_core::{IndexOp, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::{Batch, LensNorm, Model};
use crate::numerics::math::fast_exp;
use crate::numerics::simd::simd_call;

/// Logits held at once (128 MB of f32): positions are projected in chunks of this many over the
/// vocabulary size, within `CHUNK_POSITIONS`. Larger chunks spread gemm's packing of the
/// unembedding (d x V, repacked for every product) over more rows: on SmolLM2 (V = 49,152, 682
/// positions a chunk) the quickstart's lens and watch stage took 18.2 s instead of 22.8 s with 256.
const CHUNK_LOGITS: usize = 1 << 25;
const CHUNK_POSITIONS: std::ops::RangeInclusive<usize> = 64..=1024;

/// What one projected position reduces to.
#[derive(Debug, Clone, PartialEq)]
pub struct PositionStats {
    /// Rank and probability of the position's target token (the actual next token), if it has one.
    pub target: Option<(u32, f32)>,
    /// The `top_k` most likely tokens, most likely first: (token id, probability).
    pub top: Vec<(u32, f32)>,
    /// Rank and probability of each watched token, in the order given.
    pub watch: Vec<(u32, f32)>,
}

/// What to reduce each position to.
#[derive(Debug, Clone, Default)]
pub struct Reduce<'a> {
    pub top_k: usize,
    pub watch: &'a [u32],
}

/// The largest logit and the softmax's denominator, sum(exp(v - max)): one pass each, in 16
/// lanes (exp by `fast_exp`, ~1 ulp; the sum in f64), compiled for the widest registers the CPU
/// has. A row is a vocabulary (~50k-250k values) and every position of every layer is one.
#[inline(always)]
fn max_sum_exp_body(logits: &[f32]) -> (f32, f64) {
    let chunks = logits.chunks_exact(16);
    let rest = chunks.remainder();
    let mut m = [f32::NEG_INFINITY; 16];
    for c in chunks.clone() {
        for l in 0..16 {
            m[l] = if c[l] > m[l] { c[l] } else { m[l] };
        }
    }
    let max = rest
        .iter()
        .chain(&m)
        .fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    let mut s = [0f64; 16];
    for c in chunks {
        for l in 0..16 {
            s[l] += fast_exp(c[l] - max) as f64;
        }
    }
    let sum = s.iter().sum::<f64>() + rest.iter().map(|&v| fast_exp(v - max) as f64).sum::<f64>();
    (max, sum)
}

fn max_sum_exp(logits: &[f32]) -> (f32, f64) {
    simd_call!(max_sum_exp_body(logits: &[f32]) -> (f32, f64))
}

/// How many values are strictly larger than `t`, counted in 16 lanes.
#[inline(always)]
fn count_above_body(logits: &[f32], t: f32) -> usize {
    let chunks = logits.chunks_exact(16);
    let rest = chunks.remainder();
    let mut n = [0u32; 16];
    for c in chunks {
        for l in 0..16 {
            n[l] += (c[l] > t) as u32;
        }
    }
    n.iter().map(|&v| v as usize).sum::<usize>() + rest.iter().filter(|&&v| v > t).count()
}

fn count_above(logits: &[f32], t: f32) -> usize {
    simd_call!(count_above_body(logits: &[f32], t: f32) -> usize)
}

/// The `k` largest values, largest first, as (index, value); ties keep the lower index first. A
/// bounded insertion sort that skips, 16 values at a time, every block whose largest value
/// cannot enter (almost all of a vocabulary once the list is full).
#[inline(always)]
fn top_k_body(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return top;
    }
    let offer = |top: &mut Vec<(u32, f32)>, i: usize, v: f32| {
        if top.len() == k && v <= top[k - 1].1 {
            return;
        }
        let at = top.partition_point(|&(_, w)| w >= v);
        top.insert(at, (i as u32, v));
        top.truncate(k);
    };
    let chunks = logits.chunks_exact(16);
    let rest = chunks.remainder();
    for (ci, c) in chunks.enumerate() {
        if top.len() == k {
            let floor = top[k - 1].1;
            let mut any = false;
            for &v in c {
                any |= v > floor;
            }
            if !any {
                continue;
            }
        }
        for (l, &v) in c.iter().enumerate() {
            offer(&mut top, ci * 16 + l, v);
        }
    }
    let base = logits.len() - rest.len();
    for (l, &v) in rest.iter().enumerate() {
        offer(&mut top, base + l, v);
    }
    top
}

fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    simd_call!(top_k_body(logits: &[f32], k: usize) -> Vec<(u32, f32)>)
}

/// Softmax statistics of one logit row.
fn reduce_row(logits: &[f32], target: Option<u32>, r: &Reduce) -> PositionStats {
    let (max, sum) = max_sum_exp(logits);
    let prob = |v: f32| (((v - max) as f64).exp() / sum) as f32;
    let rank = |t: u32| -> (u32, f32) {
        let lt = logits[t as usize];
        (count_above(logits, lt) as u32 + 1, prob(lt))
    };
    PositionStats {
        target: target.map(rank),
        top: top_k(logits, r.top_k)
            .into_iter()
            .map(|(i, v)| (i, prob(v)))
            .collect(),
        watch: r.watch.iter().map(|&w| rank(w)).collect(),
    }
}

/// Projects every real position of `x` [B, T, d] (the residual stream of the left-padded `batch`
/// at some layer) to the vocabulary and reduces it. `targets[row][p]` is the target token at
/// position p of that row (None where there is none, e.g. the last position). Returns, per row,
/// one `PositionStats` per real position.
pub fn project(
    model: &Model,
    batch: &Batch,
    x: &Tensor,
    norm: LensNorm,
    targets: &[Vec<Option<u32>>],
    r: &Reduce,
) -> Result<Vec<Vec<PositionStats>>> {
    let (b, t, d) = x.dims3()?;
    if b != batch.rows() || t != batch.width() || targets.len() != b {
        return Err(Error::Input(format!(
            "lens: states [{b}, {t}, {d}] do not fit a batch of {} x {} with {} target rows",
            batch.rows(),
            batch.width(),
            targets.len()
        )));
    }
    let vocab = model.config.vocab_size as u32;
    if let Some(&w) = r.watch.iter().find(|&&w| w >= vocab) {
        return Err(Error::Input(format!(
            "watched token id {w} is outside the vocabulary ({vocab})"
        )));
    }
    // (row, position) of every real token, in row-major order.
    let cells: Vec<(usize, usize)> = (0..b)
        .flat_map(|row| (0..batch.lengths[row]).map(move |p| (row, p)))
        .collect();
    let flat = x.reshape((b * t, d))?;
    let mut out: Vec<PositionStats> = Vec::with_capacity(cells.len());
    let positions = (CHUNK_LOGITS / vocab.max(1) as usize)
        .clamp(*CHUNK_POSITIONS.start(), *CHUNK_POSITIONS.end());
    for chunk in cells.chunks(positions) {
        let idx: Vec<u32> = chunk
            .iter()
            .map(|&(row, p)| (row * t + batch.pad(row) + p) as u32)
            .collect();
        let idx = Tensor::from_vec(idx, chunk.len(), x.device())?;
        let logits = model.lens_logits(&flat.index_select(&idx, 0)?, norm)?;
        let logits = logits.flatten_all()?.to_vec1::<f32>()?;
        let v = logits.len() / chunk.len();
        let stats: Vec<PositionStats> = logits
            .par_chunks(v)
            .zip(chunk)
            .map(|(row, &(r_i, p))| {
                let target = targets[r_i].get(p).copied().flatten();
                reduce_row(row, target, r)
            })
            .collect();
        out.extend(stats);
    }
    let mut it = out.into_iter();
    Ok((0..b)
        .map(|row| it.by_ref().take(batch.lengths[row]).collect())
        .collect())
}

/// The actual next token at every position of each sequence (None at the last one).
pub fn next_tokens(seqs: &[Vec<u32>]) -> Vec<Vec<Option<u32>>> {
    seqs.iter()
        .map(|s| {
            (0..s.len())
                .map(|p| s.get(p + 1).copied())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Attention rollout (Abnar & Zuidema, 2020) of one sequence: `attn[l]` is layer l's attention
/// [H, T, T] over the real tokens. Each layer's head-averaged attention is mixed with the identity
/// for the residual connection, rows renormalized, and the layers multiplied up:
/// `R_l = norm(0.5 mean_h(A_l) + 0.5 I) R_{l-1}`, `R_{-1} = I`. Returns R_l [T, T] for every layer.
pub fn attention_rollout(attn: &[Tensor]) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(attn.len());
    let mut prev: Option<Vec<f32>> = None;
    for a in attn {
        let (h, t, t2) = a.dims3()?;
        if t != t2 {
            return Err(Error::Input(format!(
                "rollout needs square attention, got [{h}, {t}, {t2}]"
            )));
        }
        let mean = a.mean(0)?.flatten_all()?.to_vec1::<f32>()?;
        let mut m = vec![0f32; t * t];
        for i in 0..t {
            let row = &mut m[i * t..(i + 1) * t];
            for j in 0..t {
                row[j] = 0.5 * mean[i * t + j] + if i == j { 0.5 } else { 0.0 };
            }
            let s: f32 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= s);
        }
        let r = match &prev {
            None => m,
            Some(p) => {
                let mut r = vec![0f32; t * t];
                for i in 0..t {
                    for k in 0..t {
                        let mik = m[i * t + k];
                        if mik != 0.0 {
                            for j in 0..t {
                                r[i * t + j] += mik * p[k * t + j];
                            }
                        }
                    }
                }
                r
            }
        };
        out.push(r.clone());
        prev = Some(r);
    }
    Ok(out)
}

/// The attention of one row of a left-padded batch capture [B, H, T, Tk], cut to its real tokens.
pub fn row_attention(attn: &Tensor, batch: &Batch, row: usize) -> Result<Tensor> {
    let pad = batch.pad(row);
    let len = batch.lengths[row];
    Ok(attn
        .i(row)?
        .narrow(1, pad, len)?
        .narrow(2, pad, len)?
        .contiguous()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The naive definitions: f64 softmax, ranks by counting, top-k by a stable sort.
    fn reduce_naive(logits: &[f32], target: Option<u32>, r: &Reduce) -> PositionStats {
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let z: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
        let p = |v: f32| ((v as f64 - max).exp() / z) as f32;
        let rank = |t: u32| {
            let lt = logits[t as usize];
            (logits.iter().filter(|&&v| v > lt).count() as u32 + 1, p(lt))
        };
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        PositionStats {
            target: target.map(rank),
            top: order
                .iter()
                .take(r.top_k)
                .map(|&i| (i, p(logits[i as usize])))
                .collect(),
            watch: r.watch.iter().map(|&w| rank(w)).collect(),
        }
    }

    #[test]
    fn reduce_row_matches_the_naive_definitions_at_any_width() {
        let mut rng = crate::numerics::rng::SplitMix64::new(11);
        // Widths below, at and off multiples of the 16 lanes; values on a coarse grid so that
        // ties are common; top-k below, at and above 16.
        for &(n, k) in &[
            (1, 1),
            (5, 3),
            (16, 16),
            (17, 20),
            (100, 10),
            (4099, 10),
            (49_157, 40),
        ] {
            let logits: Vec<f32> = (0..n)
                .map(|_| ((rng.next_f64() * 400.0).floor() as f32 - 200.0) / 10.0)
                .collect();
            let watch: Vec<u32> = (0..4).map(|i| ((i * 7919) % n) as u32).collect();
            let r = Reduce {
                top_k: k,
                watch: &watch,
            };
            let target = Some((n / 2) as u32);
            let got = reduce_row(&logits, target, &r);
            let want = reduce_naive(&logits, target, &r);
            let close = |a: f32, b: f32| (a - b).abs() <= 1e-6 * b.abs() + 1e-12;
            assert_eq!(got.target.unwrap().0, want.target.unwrap().0, "n {n}");
            assert!(
                close(got.target.unwrap().1, want.target.unwrap().1),
                "n {n}"
            );
            assert_eq!(got.top.len(), want.top.len().min(k), "n {n}");
            for (g, w) in got.top.iter().zip(&want.top) {
                assert_eq!(g.0, w.0, "n {n} k {k}: top-k order (ties: lower id first)");
                assert!(close(g.1, w.1), "n {n}: {} vs {}", g.1, w.1);
            }
            for (g, w) in got.watch.iter().zip(&want.watch) {
                assert_eq!(g.0, w.0, "n {n}: watched rank");
                assert!(close(g.1, w.1), "n {n}: watched prob");
            }
        }
    }

    #[test]
    fn reduce_row_ranks_probs_and_topk() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, -1.0];
        let r = Reduce {
            top_k: 3,
            watch: &[4, 1],
        };
        let s = reduce_row(&logits, Some(2), &r);
        let z: f64 = logits.iter().map(|&v| (v as f64).exp()).sum();
        let p = |i: usize| ((logits[i] as f64).exp() / z) as f32;
        // Token 2 has two strictly larger logits: rank 3.
        assert_eq!(s.target.unwrap().0, 3);
        assert!((s.target.unwrap().1 - p(2)).abs() < 1e-7);
        // Ties keep the lower id first.
        let ids: Vec<u32> = s.top.iter().map(|t| t.0).collect();
        assert_eq!(ids, vec![1, 3, 2]);
        assert!((s.top[0].1 - p(1)).abs() < 1e-7);
        assert_eq!(s.watch[0].0, 5);
        assert_eq!(s.watch[1].0, 1, "tied tokens share the rank");
        assert!((s.watch[0].1 - p(4)).abs() < 1e-7);
    }

    /// On a left-padded batch, the lens at the last layer (with the final norm) is the model's own
    /// next-token distribution, position by position.
    #[test]
    fn last_layer_lens_is_the_models_prediction() {
        use crate::model::test_util::tiny_model;
        use crate::model::{Capture, Logits};
        let model = tiny_model("tiny-llama");
        let seqs = vec![vec![5u32, 17, 301, 44, 9], vec![3, 250]];
        let batch = model.batch(&seqs).unwrap();
        let cap = Capture {
            residual: true,
            logits: Logits::All,
            ..Capture::default()
        };
        let out = model.forward(&batch, &cap).unwrap();
        let n = model.config.n_layers;
        let targets = next_tokens(&seqs);
        let r = Reduce {
            top_k: 4,
            watch: &[7, 300],
        };
        let stats = project(
            &model,
            &batch,
            &out.residual[n],
            LensNorm::FinalNorm,
            &targets,
            &r,
        )
        .unwrap();
        let logits = out.logits.unwrap();
        for (row, seq) in seqs.iter().enumerate() {
            assert_eq!(stats[row].len(), seq.len());
            for p in 0..seq.len() {
                let l: Vec<f32> = logits
                    .i((row, batch.pad(row) + p))
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let want = reduce_row(&l, targets[row][p], &r);
                let got = &stats[row][p];
                assert_eq!(got.target.is_some(), p + 1 < seq.len());
                if let (Some(a), Some(b)) = (got.target, want.target) {
                    assert_eq!(a.0, b.0);
                    assert!((a.1 - b.1).abs() < 1e-5);
                }
                let ids = |s: &PositionStats| s.top.iter().map(|t| t.0).collect::<Vec<_>>();
                assert_eq!(ids(got), ids(&want));
                assert_eq!(got.watch.len(), 2);
                assert_eq!(got.watch[0].0, want.watch[0].0);
            }
        }
    }

    #[test]
    fn rollout_of_identity_attention_is_identity_and_rows_sum_to_one() {
        let t = 3;
        let mut eye = vec![0f32; 2 * t * t];
        for h in 0..2 {
            for i in 0..t {
                eye[h * t * t + i * t + i] = 1.0;
            }
        }
        let eye = Tensor::from_vec(eye, (2, t, t), &candle_core::Device::Cpu).unwrap();
        let r = attention_rollout(&[eye.clone(), eye]).unwrap();
        for layer in &r {
            for i in 0..t {
                for j in 0..t {
                    assert_eq!(layer[i * t + j], if i == j { 1.0 } else { 0.0 });
                }
            }
        }
        // Causal uniform attention, one head: by hand for T = 2.
        // A = [[1, 0], [.5, .5]] -> M = 0.5 A + 0.5 I = [[1, 0], [.25, .75]];
        // two layers: M^2 = [[1, 0], [.25 + .75 * .25, .5625]] = [[1, 0], [.4375, .5625]].
        let a = Tensor::from_vec(
            vec![1f32, 0., 0.5, 0.5],
            (1, 2, 2),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let r = attention_rollout(&[a.clone(), a]).unwrap();
        assert_eq!(r[0], vec![1.0, 0.0, 0.25, 0.75]);
        assert_eq!(r[1], vec![1.0, 0.0, 0.4375, 0.5625]);
    }
}
