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

/// Positions projected at once: bounds the vocabulary-sized buffer (chunk x V floats).
const CHUNK_POSITIONS: usize = 256;

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

/// Softmax statistics of one logit row.
fn reduce_row(logits: &[f32], target: Option<u32>, r: &Reduce) -> PositionStats {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f64 = logits.iter().map(|&v| ((v - max) as f64).exp()).sum();
    let prob = |v: f32| (((v - max) as f64).exp() / sum) as f32;
    let rank = |t: u32| -> (u32, f32) {
        let lt = logits[t as usize];
        let above = logits.iter().filter(|&&v| v > lt).count();
        (above as u32 + 1, prob(lt))
    };
    // Top-k by a bounded insertion sort (k is small): ties keep the lower token id first.
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(r.top_k + 1);
    if r.top_k > 0 {
        for (i, &v) in logits.iter().enumerate() {
            if top.len() == r.top_k && v <= top[top.len() - 1].1 {
                continue;
            }
            let at = top.partition_point(|&(_, w)| w >= v);
            top.insert(at, (i as u32, v));
            top.truncate(r.top_k);
        }
    }
    PositionStats {
        target: target.map(rank),
        top: top.into_iter().map(|(i, v)| (i, prob(v))).collect(),
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
    for chunk in cells.chunks(CHUNK_POSITIONS) {
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
