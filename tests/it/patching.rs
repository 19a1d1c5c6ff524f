//! Activation patching against transformers with forward hooks doing the same edits, and
//! attribution patching against torch autograd's estimates (goldens by
//! scripts/make_patching_goldens.py: tiny GPT-2 and Llama, 2 clean/corrupted pairs, every site
//! in both directions).

use tokenlens::analysis::patching::{
    Component, Direction, Method, PairInput, PatchOptions, activation_patching,
};
use tokenlens::model::Model;
use tokenlens::model::reverse::Metric;

use crate::common::{Golden, data_dir};

/// The forward tolerance: absolute on the metric (a logit difference of order 1-10).
const TOL: f32 = 1e-4;

/// The two clean/corrupted pairs of a patching golden, with their logit-difference metric.
fn golden_pairs(golden: &Golden) -> Vec<PairInput> {
    let ids = |k: &str| -> Vec<u32> {
        golden
            .t(k)
            .to_vec1::<i64>()
            .unwrap()
            .iter()
            .map(|&v| v as u32)
            .collect()
    };
    (0..2)
        .map(|i| PairInput {
            clean: ids(&format!("pair{i}.clean")),
            corrupted: ids(&format!("pair{i}.corrupted")),
            metric: Metric::LogitDiff(
                ids(&format!("pair{i}.answer"))[0],
                ids(&format!("pair{i}.foil"))[0],
            ),
        })
        .collect()
}

/// A pair's aligned positions (the clean prompt's last `len`, from `first`), checked against
/// the golden's `pair{doc}.first_aligned` where it has one.
fn aligned(golden: &Golden, doc: usize, pair: &PairInput) -> (usize, usize) {
    let len = pair.clean.len().min(pair.corrupted.len());
    let first = pair.clean.len() - len;
    if let Some(f) = golden.tensors.get(&format!("pair{doc}.first_aligned")) {
        assert_eq!(f.to_vec1::<i64>().unwrap()[0] as usize, first);
    }
    (len, first)
}

fn check(name: &str) {
    check_golden(name, &format!("patching-{name}"));
}

/// `check` against the golden `stem`: its pairs' prompts may differ in length (aligned at the
/// last token; the golden's positions are the clean prompt's aligned ones, from
/// `pair{i}.first_aligned`).
fn check_golden(name: &str, stem: &str) {
    let golden = Golden::load(stem);
    let model = Model::load(&data_dir().join(name), None).unwrap();
    let (n, h) = (model.config.n_layers, model.config.n_heads);
    let pairs = golden_pairs(&golden);
    let all = [
        Component::ResidPre,
        Component::AttnHead,
        Component::AttnHeadPos,
        Component::MlpOut,
    ];
    let out = activation_patching(
        &model,
        &pairs,
        &PatchOptions {
            methods: vec![Method::Exact, Method::Attribution],
            components: all.to_vec(),
            directions: vec![Direction::Denoise, Direction::Noise],
            batch_rows: 37, // chunks that split layers and sites
        },
    )
    .unwrap();
    let (mut worst, mut worst_attr) = (0f32, 0f32);
    for (doc, pair) in pairs.iter().enumerate() {
        let (len, first) = aligned(&golden, doc, pair);
        let scalar = |k: &str| {
            golden
                .t(&format!("pair{doc}.{k}"))
                .to_vec1::<f32>()
                .unwrap()[0]
        };
        let (clean, corrupted) = (scalar("clean_value"), scalar("corrupted_value"));
        let v = out.pairs[doc];
        assert!(
            (v.clean - clean).abs() < TOL && (v.corrupted - corrupted).abs() < TOL,
            "{name} pair {doc}: {v:?} vs {clean} {corrupted}"
        );
        for dir in [Direction::Denoise, Direction::Noise] {
            for c in all {
                let want: Vec<f32> = golden
                    .t(&format!("pair{doc}.{}.{}", dir.name(), c.name()))
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let got: Vec<_> = out
                    .rows
                    .iter()
                    .filter(|r| {
                        r.doc == doc
                            && r.direction == dir
                            && r.component == c
                            && r.method == Method::Exact
                    })
                    .collect();
                let expected_rows = match c {
                    Component::ResidPre | Component::MlpOut => n * len,
                    Component::AttnHead => n * h,
                    Component::AttnHeadPos => n * h * len,
                };
                assert_eq!((got.len(), want.len()), (expected_rows, expected_rows));
                for r in got {
                    // The golden's layout: [layer, position], [layer, head], [layer, head, position].
                    let i = match c {
                        Component::ResidPre | Component::MlpOut => {
                            r.layer * len + r.position.unwrap() - first
                        }
                        Component::AttnHead => r.layer * h + r.head.unwrap(),
                        Component::AttnHeadPos => {
                            (r.layer * h + r.head.unwrap()) * len + r.position.unwrap() - first
                        }
                    };
                    let err = (r.value - want[i]).abs();
                    worst = worst.max(err);
                    assert!(
                        err < TOL,
                        "{name} pair {doc} {} {} layer {} head {:?} position {:?}: {} vs {}",
                        dir.name(),
                        c.name(),
                        r.layer,
                        r.head,
                        r.position,
                        r.value,
                        want[i]
                    );
                    let effect = (r.value - corrupted) / (clean - corrupted);
                    assert!((r.effect.unwrap() - effect).abs() < 1e-3 * effect.abs().max(1.0));
                }
                // Attribution patching: the estimate (value − the base run's value) against
                // autograd's, relative to the largest estimate of this kind.
                let want: Vec<f32> = golden
                    .t(&format!("pair{doc}.{}.attrib.{}", dir.name(), c.name()))
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
                let base = match dir {
                    Direction::Denoise => v.corrupted,
                    Direction::Noise => v.clean,
                };
                let attr: Vec<_> = out
                    .rows
                    .iter()
                    .filter(|r| {
                        r.doc == doc
                            && r.direction == dir
                            && r.component == c
                            && r.method == Method::Attribution
                    })
                    .collect();
                assert_eq!(attr.len(), expected_rows);
                for (r, want) in attr.iter().zip(&want) {
                    let err = ((r.value - base) - want).abs() / scale;
                    worst_attr = worst_attr.max(err);
                    assert!(
                        err < 1e-3,
                        "{name} pair {doc} {} {} attribution layer {} head {:?} position {:?}: \
                         {} vs {want}",
                        dir.name(),
                        c.name(),
                        r.layer,
                        r.head,
                        r.position,
                        r.value - base
                    );
                }
            }
        }
    }
    eprintln!(
        "{name}: activation patching, worst absolute error {worst:.2e}; attribution patching, \
         worst error {worst_attr:.2e} of the largest estimate"
    );
}

#[test]
fn activation_patching_matches_transformers_hooks_gpt2() {
    check("tiny-gpt2");
}

#[test]
fn activation_patching_matches_transformers_hooks_llama() {
    check("tiny-llama");
}

/// Pairs of different lengths, aligned at their last token (scripts/
/// make_patching_unequal_goldens.py: the corrupted prompt 2 tokens longer, then 2 shorter).
#[test]
fn unequal_pairs_are_patched_aligned_at_the_end() {
    check_golden("tiny-gpt2", "patching-unequal-tiny-gpt2");
    check_golden("tiny-llama", "patching-unequal-tiny-llama");
}

/// On the real default model: exact and attribution patching and contrastive integrated
/// gradients (logit difference, corrupted baseline) of two shipped IOI pairs against
/// transformers and autograd on the same GGUF weights (golden by
/// scripts/make_smollm2_ioi_golden.py).
#[test]
fn smollm2_ioi_patching_and_contrast_match_transformers() {
    use tokenlens::analysis::saliency::{
        Baseline, DocTargets, Method as SMethod, SaliencyOptions, saliency_of,
    };
    let Some(path) = crate::common::real_model() else {
        return;
    };
    let golden = Golden::load("smollm2-ioi");
    let model = Model::load(&path, None).unwrap();
    let (n, h) = (model.config.n_layers, model.config.n_heads);
    let f = |k: &str| -> Vec<f32> { golden.t(k).flatten_all().unwrap().to_vec1().unwrap() };
    let pairs = golden_pairs(&golden);
    let comps = [Component::ResidPre, Component::AttnHead, Component::MlpOut];
    let out = activation_patching(
        &model,
        &pairs,
        &PatchOptions {
            methods: vec![Method::Exact, Method::Attribution],
            components: comps.to_vec(),
            directions: vec![Direction::Denoise],
            batch_rows: 64,
        },
    )
    .unwrap();
    let (mut worst, mut worst_attr) = (0f32, 0f32);
    for (doc, pair) in pairs.iter().enumerate() {
        let len = pair.clean.len();
        let v = out.pairs[doc];
        let (clean, corrupted) = (
            f(&format!("pair{doc}.clean_value"))[0],
            f(&format!("pair{doc}.corrupted_value"))[0],
        );
        assert!(
            (v.clean - clean).abs() < 1e-3 && (v.corrupted - corrupted).abs() < 1e-3,
            "pair {doc}: {v:?} vs {clean} {corrupted}"
        );
        for c in comps {
            let exact = f(&format!("pair{doc}.denoise.{}", c.name()));
            let attrib = f(&format!("pair{doc}.denoise.attrib.{}", c.name()));
            let rows = |m: Method| -> Vec<f32> {
                out.rows
                    .iter()
                    .filter(|r| r.doc == doc && r.component == c && r.method == m)
                    .map(|r| r.value)
                    .collect()
            };
            let (e, a) = (rows(Method::Exact), rows(Method::Attribution));
            let expected = if c == Component::AttnHead {
                n * h
            } else {
                n * len
            };
            assert_eq!(
                (e.len(), a.len(), exact.len()),
                (expected, expected, expected)
            );
            for (got, want) in e.iter().zip(&exact) {
                worst = worst.max((got - want).abs());
            }
            let scale = attrib.iter().fold(1e-3f32, |m, x| m.max(x.abs()));
            for (got, want) in a.iter().zip(&attrib) {
                worst_attr = worst_attr.max(((got - v.corrupted) - want).abs() / scale);
            }
        }
    }
    // Forward parity on SmolLM2 is ~1e-5 relative; the logit differences are of order 5.
    assert!(
        worst < 1e-3,
        "exact patching: worst absolute error {worst:e}"
    );
    assert!(
        worst_attr < 1e-3,
        "attribution: worst error {worst_attr:e} of the largest"
    );

    // Contrastive integrated gradients from the corrupted prompt, and grad x input.
    let docs: Vec<DocTargets> = pairs
        .iter()
        .map(|p| DocTargets {
            tokens: p.clean.clone(),
            targets: vec![(p.clean.len(), p.metric)],
            baseline_tokens: Some(p.corrupted.clone()),
        })
        .collect();
    let sal = saliency_of(
        &model,
        &docs,
        &SaliencyOptions {
            methods: vec![SMethod::GradXInput, SMethod::IntegratedGradients],
            n_steps: 50,
            baseline: Baseline::Tokens,
            ..SaliencyOptions::default()
        },
    )
    .unwrap();
    let mut worst_ig = 0f32;
    for doc in 0..2 {
        for (m, key) in [
            (SMethod::GradXInput, "gxi"),
            (SMethod::IntegratedGradients, "ig"),
        ] {
            let rows: Vec<_> = sal
                .rows
                .iter()
                .filter(|r| r.doc == doc && r.method == m)
                .collect();
            for (col, want) in [
                ("norm", f(&format!("pair{doc}.{key}.norm"))),
                ("signed", f(&format!("pair{doc}.{key}.signed"))),
            ] {
                let got: Vec<f32> = rows
                    .iter()
                    .map(|r| {
                        if col == "norm" {
                            r.raw
                        } else {
                            r.signed.unwrap()
                        }
                    })
                    .collect();
                let scale = want.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
                let err = got
                    .iter()
                    .zip(&want)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
                    / scale;
                worst_ig = worst_ig.max(err);
                assert!(err < 1e-3, "pair {doc} {key} {col}: relative error {err:e}");
            }
        }
        let c = &sal.completeness[doc];
        let delta = f(&format!("pair{doc}.ig.delta"))[0];
        assert!(
            (c.error - delta).abs() < 1e-2 * (c.value - c.baseline_value).abs().max(1e-3),
            "pair {doc}: completeness error {} vs {delta}",
            c.error
        );
    }
    eprintln!(
        "smollm2 IOI: exact patching worst {worst:.2e}, attribution {worst_attr:.2e} of the \
         largest, contrastive saliency {worst_ig:.2e} relative"
    );
}
