//! The reverse pass against candle's autograd on the tiny checkpoints, and its determinism
//! across thread counts.

use candle_core::Tensor;

use super::*;
use crate::model::test_util::tiny_model;
use crate::model::{Objective, Target};

/// Two segments (one scaled, as an IG step) with a target at every prefix, all but one
/// with gradients, the metrics taking turns.
fn segments(model: &Model) -> Vec<Segment> {
    let seqs: Vec<Vec<u32>> = vec![vec![5, 17, 301, 44, 9, 120, 77], vec![3, 250, 11, 400]];
    let mut segments = Vec::new();
    for (si, s) in seqs.iter().enumerate() {
        let ids = Tensor::from_slice(s, (1, s.len()), model.device()).unwrap();
        let alpha = if si == 0 { 1.0 } else { 0.37 };
        let e: Vec<f32> = model
            .embed(&ids)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v * alpha)
            .collect();
        let targets = (1..s.len())
            .map(|p| SegTarget {
                prefix: p,
                at: p - 1,
                metric: match p % 4 {
                    0 => Metric::Prob(s[p]),
                    1 => Metric::LogitDiff(s[p], 7),
                    2 => Metric::ProbDiff(s[p], 7),
                    _ => Metric::LogProbRatio(9, s[p]),
                },
                grad: p != 2,
            })
            .collect();
        segments.push(Segment { embeds: e, targets });
    }
    segments
}

/// The packed reverse pass agrees with candle's autograd through the differentiable path,
/// for several targets per segment, scaled inputs and segments of different lengths.
fn check(model: &Model) {
    let d = model.config.hidden_size;
    let segments = segments(model);
    let got = model.metric_gradients(&segments).unwrap();
    for (seg, res) in segments.iter().zip(&got) {
        for (ti, t) in seg.targets.iter().enumerate() {
            let e = Tensor::from_slice(
                &seg.embeds[..t.prefix * d],
                (1, t.prefix, d),
                model.device(),
            )
            .unwrap();
            let batch = model.batch(&[vec![0; t.prefix]]).unwrap();
            // The metric as signed terms of one-token objectives candle's autograd differentiates.
            let terms: Vec<(f32, u32, Objective)> = match t.metric {
                Metric::Prob(k) => vec![(1.0, k, Objective::Prob)],
                Metric::LogitDiff(a, b) => {
                    vec![(1.0, a, Objective::Logit), (-1.0, b, Objective::Logit)]
                }
                Metric::ProbDiff(a, b) => {
                    vec![(1.0, a, Objective::Prob), (-1.0, b, Objective::Prob)]
                }
                Metric::LogProbRatio(a, b) => {
                    vec![(1.0, a, Objective::LogProb), (-1.0, b, Objective::LogProb)]
                }
            };
            let mut value = 0f32;
            let mut w = vec![0f32; t.prefix * d];
            for (sign, token, objective) in terms {
                let g = model
                    .embedding_gradients(
                        &batch,
                        Some(&e),
                        &[Target {
                            position: t.prefix - 1,
                            token,
                        }],
                        objective,
                    )
                    .unwrap();
                value += sign * g.values[0];
                let gv: Vec<f32> = g.grad.flatten_all().unwrap().to_vec1().unwrap();
                w.iter_mut().zip(&gv).for_each(|(a, b)| *a += sign * b);
            }
            let dv = (value - res.values[ti]).abs();
            assert!(
                dv < 1e-5 * value.abs().max(1.0),
                "{:?}: {} vs {value}",
                t.metric,
                res.values[ti]
            );
            match &res.grads[ti] {
                None => assert!(!t.grad),
                Some(gv) => {
                    let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
                    let err = gv
                        .iter()
                        .zip(&w)
                        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                    assert!(
                        err / scale < 1e-4,
                        "prefix {} {:?}: max err {err:e} at scale {scale:e}",
                        t.prefix,
                        t.metric
                    );
                }
            }
        }
    }
}

/// Rows are split into one range per thread, and gemm's blocking follows the range's size:
/// results are identical for the same thread count and agree to rounding across counts.
#[test]
fn thread_count_changes_only_rounding() {
    let model = tiny_model("tiny-llama");
    let segs = segments(&model);
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let r = pool.install(|| model.metric_gradients(&segs).unwrap());
        r.into_iter()
            .flat_map(|r| {
                let mut v = r.values;
                v.extend(r.grads.into_iter().flatten().flatten());
                v
            })
            .collect::<Vec<f32>>()
    };
    let one = run(1);
    let scale = one.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(one.len() > 100 && scale > 0.0);
    for threads in [2, 3, 5] {
        let other = run(threads);
        assert!(
            run(threads) == other,
            "{threads} threads: not deterministic"
        );
        let err = one
            .iter()
            .zip(&other)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            err <= 1e-6 * scale,
            "{threads} threads: max diff {err:e}, scale {scale:e}"
        );
    }
}

#[test]
fn matches_autograd_gpt2() {
    check(&tiny_model("tiny-gpt2"));
}

#[test]
fn matches_autograd_llama() {
    check(&tiny_model("tiny-llama"));
}

#[test]
fn matches_autograd_qwen2() {
    check(&tiny_model("tiny-qwen2"));
}

/// Scaled RoPE (Llama 3.x's `llama3`; YaRN, whose attention factor scales cos and sin) reads the
/// same tables forward and backward.
#[test]
fn matches_autograd_with_scaled_rope() {
    check(&tiny_model("tiny-llama3"));
    check(&tiny_model("tiny-llama-yarn"));
}
