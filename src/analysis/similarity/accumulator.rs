//! The streaming covariance accumulator: two runs' per-layer activations over matched positions
//! pushed chunk by chunk, reduced to per-layer Σx and Σxxᵀ and per requested layer pair
//! Σ x_a x_bᵀ (f64), from which `finish` computes CKA, CCA, SVCCA and PWCCA of every pair —
//! the same code as the in-memory functions, on the same covariances up to rounding. Memory
//! does not depend on the number of positions; `MemoryEstimate` says what a pair set needs so
//! the caller can split the pairs into passes (`plan_passes`).
//!
//! Accuracy: each layer's sums are taken around a shift, the mean of the first chunk pushed
//! (x - c), so the covariance Σ(x-c)(x-c)ᵀ - n (m-c)(m-c)ᵀ does not lose the digits that large
//! neuron means (massive activations) would cost with raw sums.
//!
//! Cost: `push` is f64 gemms, 2 Σ_pairs d_a d_b (+ about Σ_layers d², the upper triangle of each
//! layer's own product) flops per position — for all
//! 31 × 31 pairs at d = 576, 6.4e8 per position: ~58 positions/s on a shared 2-core Xeon (so
//! ~30 min per 100k positions; fewer pairs or `MinibatchCka` for more); for the 30 diagonal
//! pairs of two runs' 1536-wide MLP activations, ~150 positions/s on 2 quiet cores. `finish` on that set
//! (same box): CKA 2 s, + SVCCA 8 s, + CCA 74 s, + PWCCA 194 s (per pair: three d³ gemms and
//! a d × d eigendecomposition, values only for CCA, with vectors for PWCCA).

use rayon::prelude::*;

use super::cca::{LayerPrep, prepare};
use super::chunk::{SIDES, chunk_rows};
use super::dense::add_mul_tn;
use super::moments::LayerStats;
use super::pair::{check_pair, needs_cca, pair_values};
use super::{EPSILON, Metric, SVCCA_DIMS, SimilarityError, SimilarityValue};
use crate::numerics::matrix::gemm_f64_into;

/// What `CovarianceAccumulator::finish` computes.
#[derive(Debug, Clone)]
pub struct MomentOptions {
    /// Values per pair, in this order; any of `Cka`, `Cca`, `Svcca`, `Pwcca`.
    pub metrics: Vec<Metric>,
    /// SVCCA's principal directions per side (Ecco's `dims`, default 20).
    pub svcca_dims: usize,
    /// Ecco's epsilon (1e-10).
    pub epsilon: f64,
}

impl Default for MomentOptions {
    fn default() -> Self {
        MomentOptions {
            metrics: vec![Metric::Cka, Metric::Cca, Metric::Svcca, Metric::Pwcca],
            svcca_dims: SVCCA_DIMS,
            epsilon: EPSILON,
        }
    }
}

/// Bytes a `CovarianceAccumulator` needs for a pair set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// The running sums, held from `new` to the end: per layer named by a pair (d² + 2d) f64, per
    /// pair d_a d_b f64.
    pub accumulators: usize,
    /// Added during `push`, per position of the chunk: the chunk in f64 for every such layer.
    pub push_per_row: usize,
    /// Added during `finish` (an upper bound): per such layer its covariance, inverse square
    /// root and principal directions, plus the working matrices of one pair and one layer per
    /// rayon thread.
    pub finish: usize,
}

impl MemoryEstimate {
    /// The peak with chunks of `chunk_rows` positions.
    pub fn peak(&self, chunk_rows: usize) -> usize {
        let push = self.push_per_row.saturating_mul(chunk_rows);
        self.accumulators.saturating_add(self.finish.max(push))
    }
}

/// Running sums of one layer around its shift.
#[derive(Debug, Clone)]
struct LayerSums {
    width: usize,
    /// The first chunk's mean (empty before the first push).
    shift: Vec<f64>,
    /// Σ (x - shift).
    sum: Vec<f64>,
    /// Σ (x - shift)(x - shift)ᵀ, width × width: the upper triangle (with the diagonal blocks)
    /// only, see `add_gram_upper`.
    scatter: Vec<f64>,
}

/// Streaming second moments of two runs' layers over matched positions; see the module doc.
#[derive(Debug, Clone)]
pub struct CovarianceAccumulator {
    widths: [Vec<usize>; 2],
    pairs: Vec<(usize, usize)>,
    /// Per side and layer: the sums, for layers some pair names.
    sums: [Vec<Option<LayerSums>>; 2],
    /// Per pair, Σ (x_a - shift_a)(x_b - shift_b)ᵀ, d_a × d_b.
    cross: Vec<Vec<f64>>,
    n: usize,
}

/// The layers of each side that some pair names.
fn used_layers(widths: &[Vec<usize>; 2], pairs: &[(usize, usize)]) -> [Vec<bool>; 2] {
    let mut used = [vec![false; widths[0].len()], vec![false; widths[1].len()]];
    for &(a, b) in pairs {
        used[0][a] = true;
        used[1][b] = true;
    }
    used
}

fn validate(
    widths_a: &[usize],
    widths_b: &[usize],
    pairs: &[(usize, usize)],
) -> Result<(), SimilarityError> {
    for (side, widths) in SIDES.into_iter().zip([widths_a, widths_b]) {
        if widths.contains(&0) {
            return Err(SimilarityError::EmptySide {
                side,
                what: "a layer of width 0",
            });
        }
    }
    for &(layer_a, layer_b) in pairs {
        for (side, (layer, layers)) in SIDES
            .into_iter()
            .zip([(layer_a, widths_a.len()), (layer_b, widths_b.len())])
        {
            if layer >= layers {
                return Err(SimilarityError::LayerOutOfRange {
                    layer_a,
                    layer_b,
                    side,
                    layers,
                });
            }
        }
    }
    Ok(())
}

impl CovarianceAccumulator {
    /// For side a's layers of widths `widths_a`, side b's `widths_b`, and the layer pairs
    /// (layer_a, layer_b) to compare (duplicates dropped, first occurrence kept). Only layers some
    /// pair names are accumulated.
    pub fn new(
        widths_a: &[usize],
        widths_b: &[usize],
        pairs: &[(usize, usize)],
    ) -> Result<Self, SimilarityError> {
        validate(widths_a, widths_b, pairs)?;
        let mut unique: Vec<(usize, usize)> = Vec::with_capacity(pairs.len());
        for p in pairs {
            if !unique.contains(p) {
                unique.push(*p);
            }
        }
        let widths = [widths_a.to_vec(), widths_b.to_vec()];
        let used = used_layers(&widths, &unique);
        let sums = [0, 1].map(|s| {
            widths[s]
                .iter()
                .zip(&used[s])
                .map(|(&width, &u)| {
                    u.then(|| LayerSums {
                        width,
                        shift: Vec::new(),
                        sum: vec![0.0; width],
                        scatter: vec![0.0; width * width],
                    })
                })
                .collect()
        });
        let cross = unique
            .iter()
            .map(|&(a, b)| vec![0.0; widths_a[a] * widths_b[b]])
            .collect();
        Ok(CovarianceAccumulator {
            widths,
            pairs: unique,
            sums,
            cross,
            n: 0,
        })
    }

    /// The memory `new(widths_a, widths_b, pairs)` and its use need (`svcca_dims` counts the
    /// principal directions `finish` keeps; pass 0 without SVCCA).
    pub fn memory_estimate(
        widths_a: &[usize],
        widths_b: &[usize],
        pairs: &[(usize, usize)],
        svcca_dims: usize,
    ) -> Result<MemoryEstimate, SimilarityError> {
        validate(widths_a, widths_b, pairs)?;
        let mut est = Estimator::new(widths_a, widths_b, svcca_dims);
        pairs.iter().for_each(|&p| est.add(p));
        Ok(est.estimate())
    }

    /// The pairs, deduplicated, in the order `finish` reports them.
    pub fn pairs(&self) -> &[(usize, usize)] {
        &self.pairs
    }

    /// The positions pushed so far.
    pub fn positions(&self) -> usize {
        self.n
    }

    /// Adds a chunk of n matched positions: `a[l]` is side a's layer l as an n × width_a[l]
    /// row-major slice (positions × neurons), `b` likewise; every layer of a side must be there,
    /// but the slices of layers no pair names are not read (they may be empty). On an error
    /// (wrong layer count or width, different n, a NaN or infinite value) nothing is added.
    /// Chunks of a few hundred positions or more keep the products efficient.
    pub fn push(&mut self, a: &[&[f32]], b: &[&[f32]]) -> Result<(), SimilarityError> {
        let chunks = [a, b];
        let checked = |s: usize, l: usize| self.sums[s][l].is_some();
        let rows = chunk_rows(chunks, &self.widths, checked, false)?.unwrap_or(0);
        if rows == 0 {
            return Ok(());
        }
        // Every used layer's chunk in f64 around its shift (the chunk's mean if none yet).
        /// (side, layer, chunk, shift if set).
        type Job<'a> = (usize, usize, &'a [f32], Option<&'a [f64]>);
        let mut jobs: Vec<Job<'_>> = Vec::new();
        for (s, (sums, chunk)) in self.sums.iter().zip(chunks).enumerate() {
            for (l, sums) in sums.iter().enumerate() {
                if let Some(sums) = sums {
                    let shift = (!sums.shift.is_empty()).then_some(&sums.shift[..]);
                    jobs.push((s, l, chunk[l], shift));
                }
            }
        }
        type Converted = (usize, usize, Vec<f64>, Option<Vec<f64>>);
        let converted: Vec<Converted> = jobs
            .into_par_iter()
            .map(|(s, l, x, shift)| {
                let what = || format!("side {} layer {l}", SIDES[s]);
                let d = x.len() / rows;
                if let Some(i) = x.iter().position(|v| !v.is_finite()) {
                    return Err(SimilarityError::NotFinite {
                        what: what(),
                        row: i / d,
                        col: i % d,
                        value: x[i] as f64,
                    });
                }
                let mut y: Vec<f64> = x.iter().map(|&v| v as f64).collect();
                let new_shift = match shift {
                    Some(_) => None,
                    None => {
                        let mut m = vec![0.0; d];
                        for r in y.chunks_exact(d) {
                            m.iter_mut().zip(r).for_each(|(m, v)| *m += v);
                        }
                        m.iter_mut().for_each(|m| *m /= rows as f64);
                        Some(m)
                    }
                };
                let c = shift.or(new_shift.as_deref()).expect("a shift");
                for r in y.chunks_exact_mut(d) {
                    r.iter_mut().zip(c).for_each(|(v, c)| *v -= c);
                }
                Ok((s, l, y, new_shift))
            })
            .collect::<Result<_, _>>()?;
        let mut shifted: [Vec<Option<Vec<f64>>>; 2] = [
            vec![None; self.widths[0].len()],
            vec![None; self.widths[1].len()],
        ];
        for (s, l, y, new_shift) in converted {
            if let Some(c) = new_shift {
                self.sums[s][l].as_mut().expect("used").shift = c;
            }
            shifted[s][l] = Some(y);
        }
        self.accumulate(&shifted, rows);
        self.n += rows;
        Ok(())
    }

    /// Adds the shifted chunk's sums and products, one task per layer and per pair.
    fn accumulate(&mut self, shifted: &[Vec<Option<Vec<f64>>>; 2], rows: usize) {
        enum Task<'a> {
            Own(&'a mut LayerSums, &'a [f64]),
            Cross(&'a mut [f64], &'a [f64], &'a [f64]),
        }
        let mut tasks: Vec<Task<'_>> = Vec::new();
        let [sa, sb] = &mut self.sums;
        for (s, sums) in [sa, sb].into_iter().enumerate() {
            for (l, x) in sums.iter_mut().enumerate() {
                if let Some(x) = x {
                    tasks.push(Task::Own(x, shifted[s][l].as_deref().expect("converted")));
                }
            }
        }
        for (c, &(a, b)) in self.cross.iter_mut().zip(&self.pairs) {
            let xa = shifted[0][a].as_deref().expect("converted");
            let xb = shifted[1][b].as_deref().expect("converted");
            tasks.push(Task::Cross(c, xa, xb));
        }
        let run = |t: Task<'_>| match t {
            Task::Own(x, y) => {
                let d = x.width;
                for r in y.chunks_exact(d) {
                    x.sum.iter_mut().zip(r).for_each(|(s, v)| *s += v);
                }
                add_gram_upper(&mut x.scatter, y, rows, d);
            }
            Task::Cross(c, xa, xb) => {
                add_mul_tn(c, xa, xb, rows, xa.len() / rows, xb.len() / rows);
            }
        };
        if tasks.len() == 1 {
            // One product: let gemm use every thread.
            tasks.into_iter().for_each(run);
        } else {
            tasks.into_par_iter().for_each(run);
        }
    }

    /// `options.metrics` for every pair from the moments pushed so far, pair by pair in
    /// `pairs()` order, metrics in the options' order. Errors: a metric that is not a moment
    /// metric, too few positions or an SVCCA dims out of range for a pair (see `svcca`, `cca`),
    /// a failed eigendecomposition.
    pub fn finish(&self, options: &MomentOptions) -> Result<Vec<SimilarityValue>, SimilarityError> {
        self.finish_with(options, false).map(|(v, _)| v)
    }

    /// As [`finish`](Self::finish), but a pair whose metrics fail (PWCCA on dependent neurons,
    /// a failed eigendecomposition) gets NaN for the metrics that fail and a message each, in
    /// the second vector; the other pairs and metrics are unaffected.
    pub fn finish_lenient(
        &self,
        options: &MomentOptions,
    ) -> Result<(Vec<SimilarityValue>, Vec<String>), SimilarityError> {
        self.finish_with(options, true)
    }

    fn finish_with(
        &self,
        options: &MomentOptions,
        lenient: bool,
    ) -> Result<(Vec<SimilarityValue>, Vec<String>), SimilarityError> {
        let metrics = &options.metrics;
        if let Some(&m) = metrics.iter().find(|&&m| m == Metric::CkaMinibatch) {
            return Err(SimilarityError::UnsupportedMetric {
                metric: m,
                by: "covariances (use MinibatchCka)",
            });
        }
        let n = self.n;
        for &(a, b) in &self.pairs {
            let (wa, wb) = (format!("side a layer {a}"), format!("side b layer {b}"));
            let widths = [(self.widths[0][a], &wa[..]), (self.widths[1][b], &wb[..])];
            check_pair(n, widths, metrics, options.svcca_dims)?;
        }
        if self.pairs.is_empty() || metrics.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let cca = needs_cca(metrics);
        let dims = metrics
            .contains(&Metric::Svcca)
            .then_some(options.svcca_dims);
        // Per used layer: the statistics and the preparation.
        let mut jobs: Vec<(usize, usize, &LayerSums)> = Vec::new();
        for s in 0..2 {
            for (l, sums) in self.sums[s].iter().enumerate() {
                if let Some(sums) = sums {
                    jobs.push((s, l, sums));
                }
            }
        }
        type Prepared = (usize, usize, LayerStats, LayerPrep);
        let prepared: Vec<Prepared> = jobs
            .into_par_iter()
            .map(|(s, l, sums)| {
                let stats = layer_stats(sums, n);
                let prep = prepare(
                    &stats,
                    cca,
                    dims,
                    options.epsilon,
                    &format!("side {} layer {l}", SIDES[s]),
                )?;
                Ok((s, l, stats, prep))
            })
            .collect::<Result<_, SimilarityError>>()?;
        let mut layers: [Vec<Option<(LayerStats, LayerPrep)>>; 2] = [
            vec![None; self.widths[0].len()],
            vec![None; self.widths[1].len()],
        ];
        for (s, l, stats, prep) in prepared {
            layers[s][l] = Some((stats, prep));
        }
        let values: Vec<(Vec<f64>, Vec<String>)> = self
            .pairs
            .par_iter()
            .zip(&self.cross)
            .map(|(&(a, b), cross)| {
                let (sa, pa) = layers[0][a].as_ref().expect("prepared");
                let (sb, pb) = layers[1][b].as_ref().expect("prepared");
                let ma = self.sums[0][a].as_ref().expect("used");
                let mb = self.sums[1][b].as_ref().expect("used");
                let c = centred_cross(cross, &ma.sum, &mb.sum, n);
                let what = format!("layer pair ({a}, {b})");
                let eps = options.epsilon;
                match pair_values((sa, pa), (sb, pb), &c, metrics, eps, &what) {
                    Ok(v) => Ok((v, Vec::new())),
                    Err(e) if !lenient => Err(e),
                    // Each metric alone: only the ones that fail are lost.
                    Err(_) => {
                        let mut failed = Vec::new();
                        let v = metrics
                            .iter()
                            .map(
                                |&m| match pair_values((sa, pa), (sb, pb), &c, &[m], eps, &what) {
                                    Ok(v) => v[0],
                                    Err(e) => {
                                        failed.push(e.to_string());
                                        f64::NAN
                                    }
                                },
                            )
                            .collect();
                        Ok((v, failed))
                    }
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(values.len() * metrics.len());
        let mut failures = Vec::new();
        for (&(layer_a, layer_b), (v, failed)) in self.pairs.iter().zip(values) {
            failures.extend(failed);
            for (&metric, value) in metrics.iter().zip(v) {
                out.push(SimilarityValue {
                    metric,
                    layer_a,
                    layer_b,
                    value,
                });
            }
        }
        Ok((out, failures))
    }
}

/// (Σ(x-c)(y-e)ᵀ - Σ(x-c) Σ(y-e)ᵀ / n) / (n - 1): the centred cross covariance from sums around
/// shifts c, e.
fn centred_cross(cross: &[f64], sx: &[f64], sy: &[f64], n: usize) -> Vec<f64> {
    centre(cross.to_vec(), sx, sy, n)
}

/// `centred_cross` in place.
fn centre(mut c: Vec<f64>, sx: &[f64], sy: &[f64], n: usize) -> Vec<f64> {
    let (nf, dy) = (n as f64, sy.len());
    let f = 1.0 / (nf - 1.0);
    for (row, &x) in c.chunks_exact_mut(dy.max(1)).zip(sx) {
        let mx = x / nf;
        row.iter_mut()
            .zip(sy)
            .for_each(|(v, &y)| *v = (*v - mx * y) * f);
    }
    c
}

/// Columns per block of `add_gram_upper`: a multiple of the f64 kernels' 8 lanes, large enough
/// for gemm to run near its peak, small enough that skipping the lower blocks saves most of the
/// lower triangle (d = 1536: 6 x 6 blocks, 21 computed, 58% of the full product's flops).
const GRAM_BLOCK: usize = 256;

/// `scatter` (d × d) += yᵀy for `y` (rows × d, row-major) on and above the diagonal only: the
/// products of column blocks (i, j) with i <= j. The lower triangle of the diagonal blocks is
/// computed too; the rest of it is left alone and is restored by `mirror_upper`.
pub(super) fn add_gram_upper(scatter: &mut [f64], y: &[f64], rows: usize, d: usize) {
    let gb = GRAM_BLOCK;
    for i0 in (0..d).step_by(gb) {
        let bi = gb.min(d - i0);
        for j0 in (i0..d).step_by(gb) {
            let bj = gb.min(d - j0);
            // dst[i, j] = scatter[(i0 + i) d + j0 + j]; lhs[i, k] = y[k d + i0 + i];
            // rhs[k, j] = y[k d + j0 + j].
            gemm_f64_into(
                bi,
                bj,
                rows,
                &mut scatter[i0 * d + j0..],
                d,
                true,
                &y[i0..],
                1,
                d,
                &y[j0..],
                d,
                1,
            );
        }
    }
}

/// Copies the upper triangle of the d × d `s` onto its lower triangle.
pub(super) fn mirror_upper(s: &mut [f64], d: usize) {
    for i in 1..d {
        for j in 0..i {
            s[i * d + j] = s[j * d + i];
        }
    }
}

/// A layer's covariance from its shifted sums.
fn layer_stats(sums: &LayerSums, n: usize) -> LayerStats {
    let mut scatter = sums.scatter.clone();
    mirror_upper(&mut scatter, sums.width);
    LayerStats {
        n,
        width: sums.width,
        cov: centre(scatter, &sums.sum, &sums.sum, n),
    }
}

/// `MemoryEstimate` of a growing pair set.
#[derive(Clone)]
struct Estimator<'a> {
    widths: [&'a [usize]; 2],
    dims: usize,
    used: [Vec<bool>; 2],
    pairs: std::collections::HashSet<(usize, usize)>,
    est: MemoryEstimate,
    dmax: usize,
}

impl<'a> Estimator<'a> {
    fn new(widths_a: &'a [usize], widths_b: &'a [usize], dims: usize) -> Self {
        Estimator {
            widths: [widths_a, widths_b],
            dims,
            used: [vec![false; widths_a.len()], vec![false; widths_b.len()]],
            pairs: Default::default(),
            est: MemoryEstimate {
                accumulators: 0,
                push_per_row: 0,
                finish: 0,
            },
            dmax: 0,
        }
    }

    /// Adds a (validated) pair.
    fn add(&mut self, (a, b): (usize, usize)) {
        const F: usize = std::mem::size_of::<f64>();
        if !self.pairs.insert((a, b)) {
            return;
        }
        for (s, l) in [(0, a), (1, b)] {
            if !self.used[s][l] {
                self.used[s][l] = true;
                let d = self.widths[s][l];
                self.est.accumulators += (d * d + 2 * d) * F;
                self.est.push_per_row += d * F;
                self.est.finish += (2 * d * d + self.dims * d + 2 * d) * F;
                self.dmax = self.dmax.max(d);
            }
        }
        self.est.accumulators += self.widths[0][a] * self.widths[1][b] * F;
    }

    fn estimate(&self) -> MemoryEstimate {
        // Per thread: a pair's centred cross covariance, its selection, T twice, T Tᵀ, the
        // eigendecomposition's copy and vectors, PWCCA's three matrices (or a layer's
        // eigendecomposition and inverse square root): 12 d² bounds both.
        let threads = rayon::current_num_threads();
        let scratch = threads * 12 * self.dmax * self.dmax * std::mem::size_of::<f64>();
        MemoryEstimate {
            finish: self.est.finish + scratch,
            ..self.est
        }
    }
}

/// Splits `pairs` (in the given order: list them layer_a-major so that a pass shares its side a
/// layers) into consecutive passes whose `MemoryEstimate::peak(chunk_rows)` stays within
/// `budget` bytes. Fails when a single pair does not fit.
pub fn plan_passes(
    widths_a: &[usize],
    widths_b: &[usize],
    pairs: &[(usize, usize)],
    svcca_dims: usize,
    chunk_rows: usize,
    budget: usize,
) -> Result<Vec<Vec<(usize, usize)>>, SimilarityError> {
    validate(widths_a, widths_b, pairs)?;
    let empty = Estimator::new(widths_a, widths_b, svcca_dims);
    let mut passes: Vec<Vec<(usize, usize)>> = Vec::new();
    let mut current: Vec<(usize, usize)> = Vec::new();
    let mut est = empty.clone();
    for &p in pairs {
        let mut grown = est.clone();
        grown.add(p);
        if grown.estimate().peak(chunk_rows) <= budget {
            est = grown;
            if !current.contains(&p) {
                current.push(p);
            }
            continue;
        }
        let mut alone = empty.clone();
        alone.add(p);
        let needed = alone.estimate().peak(chunk_rows);
        if needed > budget {
            return Err(SimilarityError::OverBudget {
                layer_a: p.0,
                layer_b: p.1,
                needed,
                budget,
            });
        }
        passes.push(std::mem::replace(&mut current, vec![p]));
        est = alone;
    }
    if !current.is_empty() {
        passes.push(current);
    }
    Ok(passes)
}
