//! Saliency against captum (Saliency, InputXGradient, IntegratedGradients) on the tiny
//! checkpoints, goldens by scripts/make_saliency_goldens.py.

use candle_core::{D, IndexOp, Tensor};
use tokenlens::analysis::saliency::{
    Baseline, COMPLETENESS_FLOOR, Method, Rule, SaliencyOptions, fejer_levels, quadrature, saliency,
};
use tokenlens::model::Model;

use crate::common::{Golden, data_dir};

/// Relative tolerance on per-source reductions (max error / max reference value).
const TOL: f32 = 1e-3;

/// Per-source L2 norm and signed sum over the embedding dimension of a golden [p, d] attribution.
fn reductions(attr: &Tensor) -> (Vec<f32>, Vec<f32>) {
    let norm = attr
        .sqr()
        .unwrap()
        .sum(D::Minus1)
        .unwrap()
        .sqrt()
        .unwrap()
        .to_vec1()
        .unwrap();
    let sum = attr.sum(D::Minus1).unwrap().to_vec1().unwrap();
    (norm, sum)
}

fn close(what: &str, got: &[f32], want: &[f32], tol: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    let err = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale;
    assert!(
        err <= tol,
        "{what}: relative error {err:e} > {tol:e}\n got {got:?}\nwant {want:?}"
    );
    err
}

fn check(name: &str, rules: &[Rule]) {
    let golden = Golden::load(&format!("saliency-{name}"));
    let model = Model::load(&data_dir().join(name), None).unwrap();
    let sequences = golden.ids("sequences");
    let n_gen = golden.meta["n_gen"].as_u64().unwrap() as usize;
    let prompt_lens: Vec<usize> = sequences.iter().map(|s| s.len() - n_gen).collect();
    for &rule in rules {
        let opts = SaliencyOptions {
            methods: vec![
                Method::Gradient,
                Method::GradXInput,
                Method::IntegratedGradients,
            ],
            n_steps: 50,
            rule,
            ig_tolerance: None,
            chunk_tokens: 64, // several chunks: exercises chunking and padding
            baseline: Baseline::Zero,
        };
        let out = saliency(&model, &sequences, &prompt_lens, &opts).unwrap();
        // captum's trapezoid weights sum to (n-1)/n instead of 1 (its bug); ours are the textbook
        // rule, so our IG is captum's times n/(n-1).
        let (ig_key, ig_scale) = match rule {
            Rule::GaussLegendre => ("ig_gl", 1.0),
            Rule::Trapezoid => ("ig_trap", 50.0 / 49.0),
        };
        let mut worst = 0f32;
        for (doc, &plen) in prompt_lens.iter().enumerate() {
            for t in 0..n_gen {
                let target = plen + t;
                for (method, key) in [
                    (Method::Gradient, "gradient"),
                    (Method::GradXInput, "grad_x_input"),
                    (Method::IntegratedGradients, ig_key),
                ] {
                    let scale = if method == Method::IntegratedGradients {
                        ig_scale
                    } else {
                        1.0
                    };
                    let want = (golden.t(&format!("p{doc}.t{t}.{key}")) * scale).unwrap();
                    let (norm, sum) = reductions(&want);
                    let rows: Vec<_> = out
                        .rows
                        .iter()
                        .filter(|r| {
                            r.doc == doc && r.target_position == target && r.method == method
                        })
                        .collect();
                    assert_eq!(rows.len(), target, "one row per source position");
                    let what = format!("{name} {rule:?} p{doc} t{t} {key}");
                    let raw: Vec<f32> = rows.iter().map(|r| r.raw).collect();
                    worst = worst.max(close(&format!("{what} raw"), &raw, &norm, TOL));
                    let total: f32 = norm.iter().sum();
                    let score: Vec<f32> = rows.iter().map(|r| r.score).collect();
                    let want_score: Vec<f32> = norm.iter().map(|n| n / total).collect();
                    close(&format!("{what} score"), &score, &want_score, TOL);
                    assert!((score.iter().sum::<f32>() - 1.0).abs() < 1e-5);
                    match method {
                        Method::Gradient => assert!(rows.iter().all(|r| r.signed.is_none())),
                        _ => {
                            let signed: Vec<f32> = rows.iter().map(|r| r.signed.unwrap()).collect();
                            close(&format!("{what} signed"), &signed, &sum, TOL);
                        }
                    }
                }
                let c = out
                    .completeness
                    .iter()
                    .find(|c| c.doc == doc && c.target_position == target)
                    .unwrap();
                let f: f32 = golden
                    .t(&format!("p{doc}.t{t}.f"))
                    .i(0)
                    .unwrap()
                    .to_scalar()
                    .unwrap();
                let f0: f32 = golden
                    .t(&format!("p{doc}.t{t}.f0"))
                    .i(0)
                    .unwrap()
                    .to_scalar()
                    .unwrap();
                assert!(
                    (c.value - f).abs() <= 1e-5 * f.max(1e-3),
                    "{name} p{doc} t{t}: f {} vs {f}",
                    c.value
                );
                assert!(
                    (c.baseline_value - f0).abs() <= 1e-6,
                    "{name} p{doc} t{t}: f0 {} vs {f0}",
                    c.baseline_value
                );
            }
        }
        eprintln!("{name} {rule:?}: worst relative error {worst:.2e}");
    }
}

#[test]
fn saliency_matches_captum_gpt2() {
    check("tiny-gpt2", &[Rule::GaussLegendre, Rule::Trapezoid]);
}

/// Llama's zero baseline is degenerate (all-zero residual stream; RMSNorm amplifies gradients
/// ~300x near it), which makes the trapezoid rule's alpha = 0 node meaningless: Gauss-Legendre only.
#[test]
fn saliency_matches_captum_llama() {
    check("tiny-llama", &[Rule::GaussLegendre]);
}

/// The nodes and weights are captum's (Gauss-Legendre) and the textbook trapezoid.
#[test]
fn quadrature_matches_captum() {
    let golden = Golden::load("saliency-tiny-gpt2");
    let (a, w) = quadrature(Rule::GaussLegendre, 50);
    let ga: Vec<f32> = golden.t("ig.gl.alphas").to_vec1().unwrap();
    let gw: Vec<f32> = golden.t("ig.gl.weights").to_vec1().unwrap();
    // captum lists the nodes in numpy's order; compare as sets.
    let mut pairs: Vec<(f32, f32)> = ga.into_iter().zip(gw).collect();
    pairs.sort_by(|x, y| x.0.total_cmp(&y.0));
    for ((x, y), (ca, cw)) in a.iter().zip(&w).zip(pairs) {
        assert!(
            (*x as f32 - ca).abs() < 1e-6 && (*y as f32 - cw).abs() < 1e-6,
            "{x} {y} vs {ca} {cw}"
        );
    }
    let ta: Vec<f32> = golden.t("ig.trap.alphas").to_vec1().unwrap();
    let (a, _) = quadrature(Rule::Trapezoid, 50);
    for (x, c) in a.iter().zip(ta) {
        assert!((*x as f32 - c).abs() < 1e-6);
    }
}

/// More steps, smaller completeness error (on a model whose path is smooth).
#[test]
fn ig_completeness_improves_with_steps() {
    let model = Model::load(&data_dir().join("tiny-gpt2"), None).unwrap();
    let seq = Golden::load("saliency-tiny-gpt2").ids("sequences");
    let plens: Vec<usize> = seq.iter().map(|s| s.len() - 4).collect();
    let err = |n_steps, rule| {
        let opts = SaliencyOptions {
            methods: vec![Method::IntegratedGradients],
            n_steps,
            rule,
            ig_tolerance: None,
            chunk_tokens: 4096,
            baseline: Baseline::Zero,
        };
        let out = saliency(&model, &seq, &plens, &opts).unwrap();
        out.completeness
            .iter()
            .map(|c| c.error.abs())
            .fold(0f32, f32::max)
    };
    let (t2, t8, t64) = (
        err(2, Rule::Trapezoid),
        err(8, Rule::Trapezoid),
        err(64, Rule::Trapezoid),
    );
    assert!(t64 < t8 && t8 < t2, "trapezoid errors {t2} {t8} {t64}");
    let (g2, g8, g64) = (
        err(2, Rule::GaussLegendre),
        err(8, Rule::GaussLegendre),
        err(64, Rule::GaussLegendre),
    );
    assert!(g64 < g8 && g8 < g2, "gauss-legendre errors {g2} {g8} {g64}");
    assert!(
        g64 < 1e-3 && t64 < 1e-3,
        "64 steps should be nearly exact: {g64} {t64}"
    );
}

/// The chunk budget changes how work is packed (one chunk for everything, or every target of a
/// document split into its own forward pass and chunk), never the result.
#[test]
fn chunking_does_not_change_results() {
    let model = Model::load(&data_dir().join("tiny-llama"), None).unwrap();
    let seq = Golden::load("saliency-tiny-llama").ids("sequences");
    let plens: Vec<usize> = seq.iter().map(|s| s.len() - 4).collect();
    let run = |chunk_tokens, rule| {
        let opts = SaliencyOptions {
            methods: vec![
                Method::Gradient,
                Method::GradXInput,
                Method::IntegratedGradients,
            ],
            n_steps: 7,
            rule,
            ig_tolerance: None,
            chunk_tokens,
            baseline: Baseline::Zero,
        };
        saliency(&model, &seq, &plens, &opts).unwrap()
    };
    for rule in [Rule::GaussLegendre, Rule::Trapezoid] {
        let (one, split) = (run(1 << 20, rule), run(1, rule));
        assert_eq!(one.rows.len(), split.rows.len());
        assert!(!one.rows.is_empty());
        for (a, b) in one.rows.iter().zip(&split.rows) {
            assert_eq!(
                (a.doc, a.method, a.target_position, a.source_position),
                (b.doc, b.method, b.target_position, b.source_position)
            );
            assert!(
                (a.raw - b.raw).abs() <= 1e-5 * (1.0 + a.raw.abs()),
                "{a:?} vs {b:?}"
            );
            assert!((a.score - b.score).abs() <= 1e-5, "{a:?} vs {b:?}");
        }
        for (a, b) in one.completeness.iter().zip(&split.completeness) {
            // (The zero baseline is degenerate on Llama models: sums can be huge; see docs.)
            // A sum of ~1e5 made of larger terms of both signs carries their rounding (f32,
            // summed in another order when the rows are grouped differently): 1e-4 relative.
            let rel = |x: f32, y: f32, tol: f32| (x - y).abs() <= tol * (1.0 + x.abs());
            assert!(
                rel(a.error, b.error, 1e-4) && rel(a.value, b.value, 1e-5),
                "{a:?} vs {b:?}"
            );
            assert!(a.value.is_finite() && a.baseline_value.is_finite());
        }
    }
}

/// Adaptive integrated gradients (tiny GPT-2, whose path integrand is smooth): every target
/// ends at a nested level (3, 7, 15, 31 of a budget of 48) within the tolerance, or at the last
/// one; targets differ in the evaluations they need, the reported error is that of the attributions reported (nothing
/// rescaled), and the attributions agree with a 200-step fixed rule.
#[test]
fn adaptive_ig_refines_until_complete_within_its_budget() {
    let model = Model::load(&data_dir().join("tiny-gpt2"), None).unwrap();
    let seq = Golden::load("saliency-tiny-gpt2").ids("sequences");
    let plens: Vec<usize> = seq.iter().map(|s| s.len() - 4).collect();
    let run = |n_steps, ig_tolerance| {
        let opts = SaliencyOptions {
            methods: vec![Method::IntegratedGradients, Method::GradXInput],
            n_steps,
            rule: Rule::GaussLegendre,
            ig_tolerance,
            chunk_tokens: 64,
            baseline: Baseline::Zero,
        };
        saliency(&model, &seq, &plens, &opts).unwrap()
    };
    let (tol, budget) = (1e-4, 48);
    let adaptive = run(budget, Some(tol));
    let reference = run(200, None);
    let find = |s: &tokenlens::analysis::saliency::Saliency,
                r: &tokenlens::analysis::saliency::SaliencyRow| {
        s.rows
            .iter()
            .find(|x| {
                (x.doc, x.method, x.target_position, x.source_position)
                    == (r.doc, r.method, r.target_position, r.source_position)
            })
            .cloned()
            .unwrap()
    };
    let mut used = std::collections::BTreeSet::new();
    assert_eq!(adaptive.completeness.len(), reference.completeness.len());
    for c in &adaptive.completeness {
        let n = c.steps as usize;
        used.insert(n);
        assert!(fejer_levels(budget).contains(&n), "{c:?}");
        let delta = (c.value - c.baseline_value).abs() as f64;
        let within =
            (c.error.abs() as f64) <= tol * delta || (c.error.abs() as f64) <= COMPLETENESS_FLOOR;
        assert!(within || n == 31, "stopped early: {c:?}");
        let rows: Vec<_> = adaptive
            .rows
            .iter()
            .filter(|r| (r.doc, r.target_position) == (c.doc, c.target_position))
            .collect();
        // The error is the reported attributions' own.
        let sum: f32 = rows
            .iter()
            .filter(|r| r.method == Method::IntegratedGradients)
            .map(|r| r.signed.unwrap())
            .sum();
        assert!(
            (sum - c.attribution_sum).abs() <= 1e-5 * (1.0 + sum.abs()),
            "{sum} vs {c:?}"
        );
        let scale = rows.iter().map(|r| r.raw).fold(0.0f32, f32::max);
        for r in rows {
            let w = find(&reference, r);
            let tol = match r.method {
                Method::GradXInput => 1e-6,
                _ => 1e-2,
            };
            assert!((w.raw - r.raw).abs() <= tol * scale, "{w:?} vs {r:?}");
        }
    }
    // Adaptivity shows: not every target needed the same number of evaluations.
    assert!(used.len() >= 2, "evaluations used: {used:?}");
    // Below 3 evaluations: the one-node rule (the midpoint).
    for c in run(2, Some(tol)).completeness {
        assert_eq!(c.steps, 1, "{c:?}");
    }
}

/// `tokenlens ARGS` that must fail within `secs` seconds (killed and failed otherwise): exit code
/// 1 and exactly `error: <expected>`.
fn fails_quickly(args: &[&str], secs: u64, expected: &str) {
    let mut child = crate::common::Tokenlens::NO_CACHE
        .cmd(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed().as_secs() >= secs {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} still running after {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{args:?}");
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim_end(),
        format!("error: {expected}"),
        "{args:?}"
    );
}

/// Integrated gradients' step count has a range (the Gauss-Legendre nodes cost O(n^2)): a huge
/// one is refused at once, by the command line and by a pipeline spec, instead of never
/// answering.
#[test]
fn a_huge_step_count_is_refused_at_once() {
    let m = data_dir().join("tiny-llama");
    fails_quickly(
        &[
            "saliency",
            "--model",
            m.to_str().unwrap(),
            "--n-steps",
            "100000000",
            "x",
        ],
        60,
        "--n-steps must be in 1..=1000, got 100000000",
    );
    fails_quickly(
        &[
            "saliency",
            "--model",
            m.to_str().unwrap(),
            "--chunk-tokens",
            "0",
            "x",
        ],
        60,
        "--chunk-tokens must be in 1..=65536, got 0",
    );
    let spec = crate::common::tiny_spec(
        "saliency-huge-steps",
        "{\"text\": \"The cat sat\"}\n",
        "model: MODEL\ndataset:\n  path: data.jsonl\ngeneration:\n  max_new_tokens: 1\n\
         analyses:\n  saliency: {n_steps: 100000000}\noutput:\n  dir: out\n",
    );
    let s = spec.to_str().unwrap();
    let expected = format!("{s}: analyses.saliency.n_steps: must be in 1..=1000, got 100000000");
    fails_quickly(&["validate", s], 60, &expected);
    fails_quickly(&["run", "--quiet", s], 60, &expected);
}

/// Contrastive targets (logit / probability difference, log-probability ratio) and integrated
/// gradients from every baseline (zero, a token's embedding, the mean embedding, the corrupted
/// prompt) against captum, goldens by scripts/make_contrast_goldens.py: per pair, the metric
/// after the whole clean prompt.
fn check_contrast(name: &str) {
    use tokenlens::analysis::saliency::{DocTargets, Metric, saliency_of};
    let golden = Golden::load(&format!("saliency-contrast-{name}"));
    let model = Model::load(&data_dir().join(name), None).unwrap();
    let token = golden.meta["baseline_token_id"].as_u64().unwrap() as u32;
    let pairs = golden.meta["pairs"].as_array().unwrap().len();
    let ids = |key: &str| -> Vec<u32> {
        golden
            .t(key)
            .to_vec1::<i64>()
            .unwrap()
            .iter()
            .map(|&v| v as u32)
            .collect()
    };
    let scalar = |key: &str| -> f32 { golden.t(key).i(0).unwrap().to_scalar().unwrap() };
    let mut worst = 0f32;
    for (baseline, bkey) in [
        (Baseline::Zero, "zero"),
        (Baseline::Token(token), "token"),
        (Baseline::MeanEmbedding, "mean"),
        (Baseline::Tokens, "corrupted"),
    ] {
        for (oi, okey) in ["prob", "logit_diff", "prob_diff", "log_prob_ratio"]
            .into_iter()
            .enumerate()
        {
            let docs: Vec<DocTargets> = (0..pairs)
                .map(|i| {
                    let clean = ids(&format!("pair{i}.clean"));
                    let (a, b) = (
                        ids(&format!("pair{i}.answer"))[0],
                        ids(&format!("pair{i}.foil"))[0],
                    );
                    let metric = [
                        Metric::Prob(a),
                        Metric::LogitDiff(a, b),
                        Metric::ProbDiff(a, b),
                        Metric::LogProbRatio(a, b),
                    ][oi];
                    DocTargets {
                        targets: vec![(clean.len(), metric)],
                        tokens: clean,
                        baseline_tokens: Some(ids(&format!("pair{i}.corrupted"))),
                    }
                })
                .collect();
            let opts = SaliencyOptions {
                methods: vec![
                    Method::Gradient,
                    Method::GradXInput,
                    Method::IntegratedGradients,
                ],
                baseline,
                chunk_tokens: 24, // several chunks
                ..SaliencyOptions::default()
            };
            let out = saliency_of(&model, &docs, &opts).unwrap();
            for (doc, input) in docs.iter().enumerate() {
                let len = input.tokens.len();
                let pre = format!("pair{doc}.{okey}");
                for (method, key) in [
                    (Method::Gradient, "gradient".to_string()),
                    (Method::GradXInput, "grad_x_input".to_string()),
                    (Method::IntegratedGradients, format!("ig_{bkey}")),
                ] {
                    let (norm, sum) = reductions(golden.t(&format!("{pre}.{key}")));
                    let rows: Vec<_> = out
                        .rows
                        .iter()
                        .filter(|r| r.doc == doc && r.method == method)
                        .collect();
                    assert_eq!(rows.len(), len, "one row per source position");
                    assert!(
                        rows.iter()
                            .all(|r| r.target_position == len && r.metric == input.targets[0].1)
                    );
                    let what = format!("{name} {pre} {key}");
                    let raw: Vec<f32> = rows.iter().map(|r| r.raw).collect();
                    worst = worst.max(close(&format!("{what} raw"), &raw, &norm, TOL));
                    if method != Method::Gradient {
                        let signed: Vec<f32> = rows.iter().map(|r| r.signed.unwrap()).collect();
                        close(&format!("{what} signed"), &signed, &sum, TOL);
                    }
                }
                let c = &out.completeness[doc];
                assert_eq!((c.doc, c.baseline), (doc, baseline));
                let (f, fb) = (
                    scalar(&format!("{pre}.f")),
                    scalar(&format!("{pre}.f_{bkey}")),
                );
                let delta = scalar(&format!("{pre}.ig_{bkey}_delta"));
                let tol = |v: f32| 1e-5 * v.abs().max(1e-2);
                assert!(
                    (c.value - f).abs() <= tol(f),
                    "{name} {pre}: f {} vs {f}",
                    c.value
                );
                assert!(
                    (c.baseline_value - fb).abs() <= tol(fb),
                    "{name} {pre} {bkey}: f(baseline) {} vs {fb}",
                    c.baseline_value
                );
                // The same completeness error as captum's convergence delta.
                let scale = (f - fb).abs().max(delta.abs()).max(1e-4);
                assert!(
                    (c.error - delta).abs() <= 2e-3 * scale,
                    "{name} {pre} {bkey}: completeness error {} vs captum's {delta}",
                    c.error
                );
            }
        }
    }
    eprintln!("{name}: contrastive saliency, worst relative error {worst:.2e}");
}

#[test]
fn contrastive_saliency_and_baselines_match_captum_gpt2() {
    check_contrast("tiny-gpt2");
}

#[test]
fn contrastive_saliency_and_baselines_match_captum_llama() {
    check_contrast("tiny-llama");
}

/// A pipeline's default chunk size follows the model's size: the reverse pass's bytes per
/// forward token (every block's tape), and as many rows as 2 GiB holds at that rate, within
/// 256..=2048. SmolLM2-135M: 30 blocks of (6 x 576 + 2 x 960 + 576 + 2 x 1536) f32 = 1,082,880
/// bytes, 1983 rows; the tiny checkpoints hit the 2048 cap.
#[test]
fn the_automatic_chunk_size_follows_the_model() {
    use tokenlens::analysis::saliency::auto_chunk_tokens;
    let tiny = Model::load(&data_dir().join("tiny-llama"), None).unwrap();
    // 3 blocks of (6 x 64 + 2 x 128 + 64 + 2 x 128) f32.
    assert_eq!(
        tiny.reverse_bytes_per_token(),
        3 * 4 * (384 + 256 + 64 + 256)
    );
    assert_eq!(auto_chunk_tokens(&tiny), 2048);
    let Some(path) = crate::common::real_model() else {
        return;
    };
    let smol = Model::load(&path, None).unwrap();
    assert_eq!(smol.reverse_bytes_per_token(), 1_082_880);
    assert_eq!(auto_chunk_tokens(&smol), 1983);
}
