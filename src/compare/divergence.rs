//! The per-position measures of a run diff, on plain values: divergences between two next-token
//! distributions known only by their top-k (a run's `predictions`), the logit lens' depth
//! summaries that compare models of different depths, and the distance between two saliency
//! vectors.
//!
//! **Tail treatment.** A run records a position's top-k tokens and their probabilities, not the
//! whole distribution. Each side is taken as the distribution that gives its k tokens their
//! recorded probabilities and spreads its remaining mass, 1 - sum of the k, evenly over the other
//! V - k tokens of the vocabulary. KL and JS are then exact for that pair of distributions, in
//! closed form: the tokens in either top-k list are summed one by one, and the V - |union| tokens
//! in neither list all have the same pair of probabilities (the two tails), so they add one term
//! times their count. No loop runs over the vocabulary.

/// KL in both directions (nats) and Jensen-Shannon (bits) between two distributions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Divergences {
    /// KL(P || Q), nats; +inf when Q gives 0 to a token P does not (possible only when Q's top-k
    /// holds all its mass and P's does not).
    pub kl_pq: f64,
    /// KL(Q || P), nats.
    pub kl_qp: f64,
    /// Jensen-Shannon divergence, bits: 0 for equal distributions, 1 for disjoint ones.
    pub js: f64,
}

/// One side: its top-k sorted by token id, probabilities in f64, and the probability of each
/// token outside its top-k.
#[derive(Debug, Default)]
struct Side {
    top: Vec<(u32, f64)>,
    tail: f64,
}

impl Side {
    fn fill(&mut self, top: &[(u32, f32)], vocab: usize) {
        self.top.clear();
        self.top
            .extend(top.iter().map(|&(id, p)| (id, f64::from(p.max(0.0)))));
        self.top.sort_unstable_by_key(|t| t.0);
        self.top.dedup_by_key(|t| t.0);
        let sum: f64 = self.top.iter().map(|t| t.1).sum();
        let others = vocab.saturating_sub(self.top.len());
        // Rounded float32 probabilities may sum to a hair over 1, or a top-k may cover the
        // vocabulary: then the listed tokens are rescaled to sum to 1 and the tail is empty.
        if sum >= 1.0 || others == 0 {
            if sum > 0.0 {
                self.top.iter_mut().for_each(|t| t.1 /= sum);
            }
            self.tail = 0.0;
        } else {
            self.tail = (1.0 - sum) / others as f64;
        }
    }
}

/// x ln(x / y), with 0 ln 0 = 0 and +inf where y = 0 < x.
fn xlogy(x: f64, y: f64) -> f64 {
    if x <= 0.0 {
        0.0
    } else if y <= 0.0 {
        f64::INFINITY
    } else {
        x * (x / y).ln()
    }
}

/// Reusable buffers for [`Divergence::between`] (one per thread; no allocation per position once
/// warm).
#[derive(Debug, Default)]
pub struct Divergence {
    p: Side,
    q: Side,
}

impl Divergence {
    /// The divergences between P and Q, each given as its top-k `(token id, probability)` (ids
    /// distinct, any order) over a vocabulary of `vocab` tokens, with the tail treatment of the
    /// module doc.
    pub fn between(&mut self, p: &[(u32, f32)], q: &[(u32, f32)], vocab: usize) -> Divergences {
        self.p.fill(p, vocab);
        self.q.fill(q, vocab);
        let (p, q) = (&self.p, &self.q);
        let (mut kl_pq, mut kl_qp, mut js) = (0.0, 0.0, 0.0);
        let mut add = |pt: f64, qt: f64, count: f64| {
            let m = 0.5 * (pt + qt);
            kl_pq += count * xlogy(pt, qt);
            kl_qp += count * xlogy(qt, pt);
            js += count * (xlogy(pt, m) + xlogy(qt, m));
        };
        // Merge the two id-sorted lists: every token of the union once.
        let (mut i, mut j, mut union) = (0, 0, 0usize);
        while i < p.top.len() || j < q.top.len() {
            let pi = p.top.get(i).map_or(u32::MAX, |t| t.0);
            let qj = q.top.get(j).map_or(u32::MAX, |t| t.0);
            let (pt, qt) = if pi == qj {
                i += 1;
                j += 1;
                (p.top[i - 1].1, q.top[j - 1].1)
            } else if pi < qj {
                i += 1;
                (p.top[i - 1].1, q.tail)
            } else {
                j += 1;
                (p.tail, q.top[j - 1].1)
            };
            add(pt, qt, 1.0);
            union += 1;
        }
        // The tokens in neither list: both tails, `vocab - union` times.
        let rest = vocab.saturating_sub(union);
        if rest > 0 {
            add(p.tail, q.tail, rest as f64);
        }
        Divergences {
            kl_pq: kl_pq.max(0.0),
            kl_qp: kl_qp.max(0.0),
            js: (0.5 * js / std::f64::consts::LN_2).clamp(0.0, 1.0),
        }
    }
}

/// The logit lens' summaries of one position of one run: the next token's rank at residual
/// streams 0..=n_layers (index = layer), reduced to numbers that compare models of different
/// depths.
///
/// `top1_depth`: the smallest depth l / n_layers from which the rank is 1 at every later layer
/// (the layer where the prediction settles; a token ranked first at some middle layer and lost
/// again does not count); None when the last layer does not rank it first.
///
/// `log_rank`: the mean of log2(rank) over depth 0..1, the layers' points joined by straight
/// lines (trapezoids), so a 30-layer and a 12-layer model weigh the same stretch of depth alike.
pub fn lens_depths(ranks: &[u32]) -> (Option<f64>, Option<f64>) {
    let n = ranks.len().saturating_sub(1);
    if n == 0 {
        return (None, None);
    }
    let settled = ranks.iter().rev().take_while(|&&r| r == 1).count();
    let top1 = (settled > 0).then(|| (ranks.len() - settled) as f64 / n as f64);
    let lg = |r: u32| f64::from(r.max(1)).log2();
    let area: f64 = ranks.windows(2).map(|w| 0.5 * (lg(w[0]) + lg(w[1]))).sum();
    (top1, Some(area / n as f64))
}

/// Total variation between two saliency vectors over source positions, each `(source, score)`
/// with scores summing to 1 (a missing source counts 0): half the L1 distance, in 0..=1.
pub fn total_variation(a: &[(u32, f32)], b: &[(u32, f32)]) -> f64 {
    let mut a: Vec<(u32, f64)> = a.iter().map(|&(s, x)| (s, f64::from(x))).collect();
    let mut b: Vec<(u32, f64)> = b.iter().map(|&(s, x)| (s, f64::from(x))).collect();
    a.sort_unstable_by_key(|t| t.0);
    b.sort_unstable_by_key(|t| t.0);
    let (mut i, mut j, mut l1) = (0, 0, 0.0);
    while i < a.len() || j < b.len() {
        let (sa, sb) = (
            a.get(i).map_or(u32::MAX, |t| t.0),
            b.get(j).map_or(u32::MAX, |t| t.0),
        );
        let (x, y) = match sa.cmp(&sb) {
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
                (a[i - 1].1, b[j - 1].1)
            }
            std::cmp::Ordering::Less => {
                i += 1;
                (a[i - 1].1, 0.0)
            }
            std::cmp::Ordering::Greater => {
                j += 1;
                (0.0, b[j - 1].1)
            }
        };
        l1 += (x - y).abs();
    }
    (0.5 * l1).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numerics::rng::SplitMix64;

    /// The distribution of the module doc written out over the whole vocabulary.
    fn full(top: &[(u32, f32)], vocab: usize) -> Vec<f64> {
        let mut s = Side::default();
        s.fill(top, vocab);
        let mut d = vec![s.tail; vocab];
        for &(id, p) in &s.top {
            d[id as usize] = p;
        }
        d
    }

    /// KL and JS by the definition, one token at a time.
    fn brute(p: &[f64], q: &[f64]) -> Divergences {
        let kl = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(&x, &y)| xlogy(x, y)).sum::<f64>();
        let m: Vec<f64> = p.iter().zip(q).map(|(x, y)| 0.5 * (x + y)).collect();
        Divergences {
            kl_pq: kl(p, q),
            kl_qp: kl(q, p),
            js: 0.5 * (kl(p, &m) + kl(q, &m)) / std::f64::consts::LN_2,
        }
    }

    /// A model's top-k: a random softmax over the vocabulary, its k largest (rounded to f32).
    fn random_topk(rng: &mut SplitMix64, vocab: usize, k: usize, temp: f64) -> Vec<(u32, f32)> {
        let logits: Vec<f64> = (0..vocab).map(|_| rng.next_f64() * temp).collect();
        let z: f64 = logits.iter().map(|l| l.exp()).sum();
        let mut p: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u32, (l.exp() / z) as f32))
            .collect();
        p.sort_by(|a, b| b.1.total_cmp(&a.1));
        p.truncate(k);
        p
    }

    #[test]
    fn closed_form_equals_the_sum_over_the_vocabulary() {
        let mut rng = SplitMix64::new(7);
        let mut d = Divergence::default();
        let vocab = 97;
        let mut cases = 0;
        for (kp, kq) in [(1, 1), (3, 5), (10, 10), (40, 7), (97, 5), (96, 96)] {
            for temp in [0.5, 4.0, 12.0] {
                let p = random_topk(&mut rng, vocab, kp, temp);
                // Q: another random model (the two top-k lists overlap in part, or not at all).
                let q = random_topk(&mut rng, vocab, kq, temp);
                for (p, q) in [(&p, &q), (&p, &p)] {
                    let got = d.between(p, q, vocab);
                    let want = brute(&full(p, vocab), &full(q, vocab));
                    for (g, w, what) in [
                        (got.kl_pq, want.kl_pq, "kl_pq"),
                        (got.kl_qp, want.kl_qp, "kl_qp"),
                        (got.js, want.js.max(0.0), "js"),
                    ] {
                        let ok = (g.is_infinite() && w.is_infinite())
                            || (g - w).abs() <= 1e-12 * (1.0 + w.abs());
                        assert!(ok, "k {kp}/{kq} temp {temp}: {what} {g} vs {w}");
                    }
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, 36);
        // Equal distributions: 0; a shuffled list is the same distribution.
        let p = [(3, 0.5f32), (9, 0.25), (1, 0.125)];
        let shuffled = [(1, 0.125f32), (3, 0.5), (9, 0.25)];
        let e = d.between(&p, &shuffled, 50);
        assert_eq!((e.kl_pq, e.kl_qp, e.js), (0.0, 0.0, 0.0));
    }

    #[test]
    fn limits_disjoint_tails_and_full_lists() {
        let mut d = Divergence::default();
        // Disjoint point masses: JS 1 bit, KL infinite.
        let e = d.between(&[(0, 1.0)], &[(1, 1.0)], 10);
        assert_eq!(e.js, 1.0);
        assert!(e.kl_pq.is_infinite() && e.kl_qp.is_infinite());
        // One side complete (its top-k sums to 1), the other with a tail: KL(complete || tailed)
        // is finite, the other way infinite (the tail puts mass where the complete side has none).
        let e = d.between(&[(0, 0.6), (1, 0.4)], &[(0, 0.5), (1, 0.3)], 10);
        assert!(e.kl_pq.is_finite() && e.kl_qp.is_infinite() && e.js < 1.0);
        // A sum a hair over 1 (float32 rounding) is rescaled, not a negative tail.
        let e = d.between(&[(0, 0.5000001), (1, 0.5)], &[(0, 0.5), (1, 0.5)], 4);
        assert!(e.kl_pq < 1e-6 && e.kl_qp < 1e-6, "{e:?}");
        // Two tails only (k = 0 lists are uniform): no divergence.
        let e = d.between(&[], &[], 10);
        assert_eq!((e.kl_pq, e.js), (0.0, 0.0));
    }

    #[test]
    fn lens_depths_settle_and_weigh_depth() {
        // Ranked first from layer 3 of 4 on; the first place at layer 1, lost at layer 2, does
        // not count.
        let (top1, area) = lens_depths(&[8, 1, 2, 1, 1]);
        assert_eq!(top1, Some(0.75));
        // log2 ranks 3, 0, 1, 0, 0: trapezoids (1.5 + 0.5 + 0.5 + 0) / 4.
        assert!((area.unwrap() - 2.5 / 4.0).abs() < 1e-12);
        assert_eq!(
            lens_depths(&[1, 1, 3]).0,
            None,
            "the output does not rank it first"
        );
        assert_eq!(lens_depths(&[1, 1]), (Some(0.0), Some(0.0)));
        // The same curve sampled at 2 and at 4 layers: the same area.
        let coarse = lens_depths(&[16, 4, 1]).1.unwrap();
        let fine = lens_depths(&[16, 8, 4, 2, 1]).1.unwrap();
        assert!((coarse - fine).abs() < 1e-12, "{coarse} vs {fine}");
        assert_eq!(lens_depths(&[3]), (None, None));
    }

    #[test]
    fn total_variation_over_sources() {
        let a = [(0, 0.5f32), (1, 0.25), (2, 0.25)];
        assert_eq!(total_variation(&a, &a), 0.0);
        let b = [(2, 0.25f32), (0, 0.25), (1, 0.5)];
        assert!((total_variation(&a, &b) - 0.25).abs() < 1e-7);
        assert_eq!(total_variation(&[(0, 1.0)], &[(1, 1.0)]), 1.0);
        assert!((total_variation(&[(0, 1.0)], &[(0, 0.5), (3, 0.5)]) - 0.5).abs() < 1e-12);
    }
}
