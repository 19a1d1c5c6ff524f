//! Adaptive integrated gradients: per target, a nested quadrature refined until the
//! completeness error is within the tolerance.
//!
//! The rule is Fejér's second rule (the interior points of Clenshaw-Curtis) on [0, 1] with 1, 3,
//! 7, 15, 31, 63, ... nodes: each level keeps every node of the one before and adds one between
//! each pair, so a target that stops at n nodes cost n gradient evaluations, none wasted (Gauss-
//! Legendre levels do not nest: stopping at n cost up to 2n). For analytic integrands it
//! converges about as fast as Gauss-Legendre with as many nodes. Its nodes avoid alpha = 0, where
//! the zero baseline is degenerate (docs/saliency.md).
//!
//! The weights of a node differ between levels, so every target keeps one weighted gradient sum
//! per level it may still reach: a new node's gradient is added to each with that level's
//! weight. Levels are global (the same alphas for every target), so one forward pass per
//! (document, alpha) serves every target of the document still refining; targets that are done
//! drop out of later passes. A target is done at the first level whose completeness error
//! |sum of attributions - (f(x) - f(b))| is at most `tolerance * |f(x) - f(0)|` (or below
//! `COMPLETENESS_FLOOR`), or at the last level within `max_evals`.

use super::{COMPLETENESS_FLOOR, DocInput, TargetState, doc_passes, run_passes};
use crate::error::Result;
use crate::model::Model;

pub struct Settings {
    /// Whether `gradient` / `grad_x_input` need the gradient at the input.
    pub input_grad: bool,
    pub tolerance: f64,
    /// The most gradient evaluations a target may use.
    pub max_evals: usize,
    pub chunk_tokens: usize,
}

/// The node counts adaptive integrated gradients tries, in order: 3, 7, 15, ... (2^k - 1), the
/// largest at most `max_evals`; just `[1]` below 3.
pub fn fejer_levels(max_evals: usize) -> Vec<usize> {
    let mut levels = Vec::new();
    let mut n = 3;
    while n <= max_evals {
        levels.push(n);
        n = 2 * n + 1;
    }
    if levels.is_empty() {
        levels.push(1);
    }
    levels
}

/// Fejér's second rule with `n` nodes (n + 1 a power of two) on [0, 1]: node j of 1..=n is at
/// (1 - cos(j pi / (n + 1))) / 2; returns (j, alpha, weight).
pub fn fejer(n: usize) -> Vec<(usize, f64, f64)> {
    let big_n = n + 1;
    (1..=n)
        .map(|j| {
            let th = j as f64 * std::f64::consts::PI / big_n as f64;
            let s: f64 = (1..=big_n / 2)
                .map(|m| ((2 * m - 1) as f64 * th).sin() / (2 * m - 1) as f64)
                .sum();
            (j, 0.5 * (1.0 - th.cos()), 2.0 * th.sin() / big_n as f64 * s)
        })
        .collect()
}

/// Adaptive integrated gradients for every target: fills `ig_sum`, `steps`, the input and
/// baseline values, and (if `input_grad`) the gradient at the input.
pub(super) fn run(
    model: &Model,
    docs: &[DocInput],
    targets: &mut [TargetState],
    s: &Settings,
    d: usize,
) -> Result<()> {
    let levels = fejer_levels(s.max_evals);
    let rules: Vec<Vec<(usize, f64, f64)>> = levels.iter().map(|&n| fejer(n)).collect();
    // Per target, the weighted gradient sum of every level (allocated at the first gradient).
    let mut sums: Vec<Vec<Vec<f64>>> = vec![vec![]; targets.len()];
    let mut active = vec![true; targets.len()];
    for (li, &n) in levels.iter().enumerate() {
        // This level's new nodes: those not in the level before (node j of n is node j / 2 of
        // (n - 1) / 2 when j is even).
        let new: Vec<(usize, f64)> = rules[li]
            .iter()
            .filter(|(j, _, _)| li == 0 || j % 2 == 1)
            .map(|&(j, a, _)| (j, a))
            .collect();
        // (alpha, at input, baseline, node index j at this level).
        let mut specs: Vec<(f64, bool, bool, Option<usize>)> = Vec::new();
        if li == 0 {
            specs.push((1.0, true, false, None));
            specs.push((0.0, false, true, None));
        }
        specs.extend(new.iter().map(|&(j, a)| (a, false, false, Some(j))));
        let (passes, spec_of) = doc_passes(
            docs,
            specs
                .iter()
                .map(|&(a, at_input, _, node)| (a, (at_input && s.input_grad) || node.is_some())),
            |t| active[t],
        );
        run_passes(
            model,
            docs,
            targets,
            &passes,
            s.chunk_tokens,
            d,
            |ts, pass, t, prob, grad| {
                let (_, at_input, baseline, node) = specs[spec_of[pass]];
                if at_input {
                    ts[t].value = prob;
                }
                if baseline {
                    ts[t].baseline_value = prob;
                }
                let Some(grad) = grad else { return };
                if let Some(j) = node {
                    let sums = &mut sums[t];
                    if sums.is_empty() {
                        *sums = vec![vec![0.0; grad.len()]; levels.len()];
                    }
                    // Node j of level li is node j * 2^(l - li) of level l.
                    for l in li..levels.len() {
                        let w = rules[l][(j << (l - li)) - 1].2;
                        for (acc, g) in sums[l].iter_mut().zip(&grad) {
                            *acc += w * *g as f64;
                        }
                    }
                }
                if at_input && s.input_grad {
                    ts[t].grad_at_input = Some(grad);
                }
            },
        )?;
        let last = li + 1 == levels.len();
        for (t, target) in targets.iter_mut().enumerate() {
            if !active[t] {
                continue;
            }
            let sum = sums[t].get_mut(li).map(std::mem::take).unwrap_or_default();
            let attributed: f64 = sum
                .iter()
                .zip(&target.path)
                .map(|(g, x)| g * *x as f64)
                .sum();
            let delta = target.value as f64 - target.baseline_value as f64;
            let err = (attributed - delta).abs();
            if last || err <= s.tolerance * delta.abs() || err <= COMPLETENESS_FLOOR {
                target.ig_sum = sum;
                target.steps = n;
                active[t] = false;
                sums[t] = vec![];
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fejer_levels_nest_and_integrate_polynomials() {
        assert_eq!(fejer_levels(50), [3, 7, 15, 31]);
        assert_eq!(fejer_levels(63), [3, 7, 15, 31, 63]);
        assert_eq!(fejer_levels(2), [1]);
        for n in [1usize, 3, 7, 15, 31, 63] {
            let rule = fejer(n);
            assert!(
                (rule.iter().map(|r| r.2).sum::<f64>() - 1.0).abs() < 1e-14,
                "n={n}"
            );
            assert!(rule.windows(2).all(|p| p[0].1 < p[1].1) && rule[0].1 > 0.0);
            // Exact for polynomials of degree n - 1 (n odd: degree n).
            for k in 0..=n as i32 {
                let q: f64 = rule.iter().map(|(_, a, w)| w * a.powi(k)).sum();
                assert!(
                    (q - 1.0 / (k as f64 + 1.0)).abs() < 1e-13,
                    "n={n} k={k}: {q}"
                );
            }
            // Nested: every node of the level before is a node here, at index 2 j.
            if n > 1 {
                for (j, a, _) in fejer((n - 1) / 2) {
                    assert!((rule[2 * j - 1].1 - a).abs() < 1e-15);
                }
            }
        }
    }
}
