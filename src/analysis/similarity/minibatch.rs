//! The minibatch CKA of Nguyen, Raghu & Kornblith 2021 ("Do wide and deep networks learn the
//! same things?"), streamed: positions are cut into consecutive batches of a fixed size n
//! (whatever the chunks `push` receives); per batch and layer the linear Gram matrix K = X Xᵀ
//! (n × n) and the unbiased HSIC_1 of Song et al. 2007, accumulated over batches for every
//! (layer_a, layer_b) pair:
//!
//!   CKA_minibatch = Σ_t HSIC_1(K_t, L_t) / sqrt(Σ_t HSIC_1(K_t, K_t) · Σ_t HSIC_1(L_t, L_t)).
//!
//! HSIC_1(K, L) = <Ũ(K), Ũ(L)>_F / (n (n - 3)) with Ũ the U-centring (`cka::u_centre`); all
//! pairs of a batch come from one product of the stacked Ũ's. Ũ ignores any constant added to
//! the features, so each batch's features are centred (in f64) before the Gram matrix, for
//! accuracy only. Memory: the batch of every layer (f32) and one n × n f64 matrix per layer,
//! O(layers · n²), none of it growing with the positions.
//!
//! The last batch: positions left over when `finish` is called (fewer than n) are not used; the
//! result says how many (`positions_dropped`). Each batch is then an HSIC_1 over exactly n
//! positions, as in the paper. Batches are consecutive positions in push order; the paper draws
//! random minibatches — a caller that wants that shuffles the positions first (HSIC_1 assumes
//! independent samples within a batch, and positions of one sequence are not).

use rayon::prelude::*;

use super::chunk::{SIDES, chunk_rows};
use super::cka::u_centre;
use super::{Metric, SimilarityError, SimilarityValue};
use crate::numerics::matrix::gemm_f64;

/// The minibatch CKA of all layer pairs of two runs, with how many positions it used.
#[derive(Debug, Clone)]
pub struct MinibatchResult {
    /// `Metric::CkaMinibatch` for every (layer_a, layer_b), layer_a-major.
    pub values: Vec<SimilarityValue>,
    pub batches: usize,
    pub positions_used: usize,
    /// The positions of the last, incomplete batch.
    pub positions_dropped: usize,
}

/// Streaming minibatch CKA; see the module doc.
#[derive(Debug, Clone)]
pub struct MinibatchCka {
    batch: usize,
    widths: [Vec<usize>; 2],
    /// Per side and layer, the current batch (batch × width, f32), `filled` rows of it valid.
    buffers: [Vec<Vec<f32>>; 2],
    filled: usize,
    /// Σ_t HSIC_1(K_a, L_b), layers_a × layers_b.
    cross: Vec<f64>,
    /// Σ_t HSIC_1(K, K) per layer of each side.
    own: [Vec<f64>; 2],
    batches: usize,
    /// The batch's Ũ(K) of every layer, side a's then side b's, n × n each.
    grams: Vec<f64>,
}

impl MinibatchCka {
    /// A default batch size: 256 positions (n² = 65536 Gram entries per layer and batch).
    pub const DEFAULT_BATCH: usize = 256;

    /// For side a's layers of widths `widths_a`, side b's `widths_b`, batches of `batch`
    /// positions (at least 4).
    pub fn new(
        widths_a: &[usize],
        widths_b: &[usize],
        batch: usize,
    ) -> Result<Self, SimilarityError> {
        if batch < 4 {
            return Err(SimilarityError::BatchSize { batch });
        }
        for (side, w) in SIDES.into_iter().zip([widths_a, widths_b]) {
            if w.is_empty() {
                return Err(SimilarityError::EmptySide {
                    side,
                    what: "no layers",
                });
            }
            if w.contains(&0) {
                return Err(SimilarityError::EmptySide {
                    side,
                    what: "a layer of width 0",
                });
            }
        }
        let buffers =
            [widths_a, widths_b].map(|w| w.iter().map(|&d| vec![0.0f32; batch * d]).collect());
        Ok(MinibatchCka {
            batch,
            widths: [widths_a.to_vec(), widths_b.to_vec()],
            buffers,
            filled: 0,
            cross: vec![0.0; widths_a.len() * widths_b.len()],
            own: [vec![0.0; widths_a.len()], vec![0.0; widths_b.len()]],
            batches: 0,
            grams: Vec::new(),
        })
    }

    /// The bytes an accumulator for these layers and batch size holds, at most (batch buffers,
    /// the per-layer n × n matrices of a batch and one layer's centred batch per thread).
    pub fn memory_estimate(widths_a: &[usize], widths_b: &[usize], batch: usize) -> usize {
        let layers = widths_a.len() + widths_b.len();
        let all: usize = widths_a.iter().chain(widths_b).sum();
        let dmax = widths_a.iter().chain(widths_b).copied().max().unwrap_or(0);
        all * batch * 4
            + layers * batch * batch * 8
            + rayon::current_num_threads() * batch * dmax * 8
            + widths_a.len() * widths_b.len() * 8
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Adds a chunk of matched positions: `a[l]` is side a's layer l, n × width_a[l] row-major
    /// (positions × neurons), every layer of both sides present with the same n. Full batches
    /// are processed as they complete. On an error (layer count, width, n, a NaN or infinite
    /// value) nothing is added.
    pub fn push(&mut self, a: &[&[f32]], b: &[&[f32]]) -> Result<(), SimilarityError> {
        let chunks = [a, b];
        let rows = chunk_rows(chunks, &self.widths, |_, _| true, true)?.unwrap_or(0);
        let mut start = 0;
        while start < rows {
            let take = (self.batch - self.filled).min(rows - start);
            for ((bufs, chunk), widths) in self.buffers.iter_mut().zip(chunks).zip(&self.widths) {
                for ((buf, &x), &d) in bufs.iter_mut().zip(chunk).zip(widths) {
                    buf[self.filled * d..(self.filled + take) * d]
                        .copy_from_slice(&x[start * d..(start + take) * d]);
                }
            }
            self.filled += take;
            start += take;
            if self.filled == self.batch {
                self.process();
                self.filled = 0;
            }
        }
        Ok(())
    }

    /// One full batch: every layer's Ũ(K), then all pairs' HSIC_1 from one product.
    fn process(&mut self) {
        let n = self.batch;
        let nn = n * n;
        let (la, lb) = (self.widths[0].len(), self.widths[1].len());
        self.grams.resize((la + lb) * nn, 0.0);
        let jobs: Vec<(&[f32], usize)> = (0..2)
            .flat_map(|s| {
                self.buffers[s]
                    .iter()
                    .zip(&self.widths[s])
                    .map(|(b, &d)| (&b[..], d))
            })
            .collect();
        self.grams
            .par_chunks_mut(nn)
            .zip(jobs)
            .for_each(|(k, (x, d))| {
                let mut y: Vec<f64> = x.iter().map(|&v| v as f64).collect();
                let mut mean = vec![0.0; d];
                for r in y.chunks_exact(d) {
                    mean.iter_mut().zip(r).for_each(|(m, v)| *m += v);
                }
                mean.iter_mut().for_each(|m| *m /= n as f64);
                for r in y.chunks_exact_mut(d) {
                    r.iter_mut().zip(&mean).for_each(|(v, m)| *v -= m);
                }
                gemm_f64(n, n, d, k, false, &y, d, 1, &y, 1, d);
                u_centre(k, n);
            });
        let (ga, gb) = self.grams.split_at(la * nn);
        let scale = 1.0 / (n as f64 * (n as f64 - 3.0));
        for (s, g) in [ga, gb].into_iter().enumerate() {
            for (o, k) in self.own[s].iter_mut().zip(g.chunks_exact(nn)) {
                *o += k.iter().map(|v| v * v).sum::<f64>() * scale;
            }
        }
        // cross[i, j] += <Ũ_a,i, Ũ_b,j> / (n (n - 3)): [la, n²] · [n², lb].
        let mut prod = vec![0.0; la * lb];
        gemm_f64(la, lb, nn, &mut prod, false, ga, nn, 1, gb, 1, nn);
        self.cross
            .iter_mut()
            .zip(&prod)
            .for_each(|(c, p)| *c += p * scale);
        self.batches += 1;
    }

    /// The minibatch CKA of every (layer_a, layer_b) over the complete batches so far. Fails
    /// when no batch is complete. NaN for a layer constant over every batch.
    pub fn finish(&self) -> Result<MinibatchResult, SimilarityError> {
        if self.batches == 0 {
            return Err(SimilarityError::TooFewDatapoints {
                metric: Metric::CkaMinibatch.as_str(),
                what: "sides a, b".into(),
                needed_over: self.batch - 1,
                got: self.filled,
                why: "one complete batch",
            });
        }
        let lb = self.widths[1].len();
        let values = self
            .cross
            .iter()
            .enumerate()
            .map(|(i, &xy)| {
                let (layer_a, layer_b) = (i / lb, i % lb);
                SimilarityValue {
                    metric: Metric::CkaMinibatch,
                    layer_a,
                    layer_b,
                    value: xy / (self.own[0][layer_a] * self.own[1][layer_b]).sqrt(),
                }
            })
            .collect();
        Ok(MinibatchResult {
            values,
            batches: self.batches,
            positions_used: self.batches * self.batch,
            positions_dropped: self.filled,
        })
    }
}
