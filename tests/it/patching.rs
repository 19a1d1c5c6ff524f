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

fn check(name: &str) {
    let golden = Golden::load(&format!("patching-{name}"));
    let model = Model::load(&data_dir().join(name), None).unwrap();
    let (n, h) = (model.config.n_layers, model.config.n_heads);
    let ids = |k: &str| -> Vec<u32> {
        golden
            .t(k)
            .to_vec1::<i64>()
            .unwrap()
            .iter()
            .map(|&v| v as u32)
            .collect()
    };
    let pairs: Vec<PairInput> = (0..2)
        .map(|i| PairInput {
            clean: ids(&format!("pair{i}.clean")),
            corrupted: ids(&format!("pair{i}.corrupted")),
            metric: Metric::LogitDiff(
                ids(&format!("pair{i}.answer"))[0],
                ids(&format!("pair{i}.foil"))[0],
            ),
        })
        .collect();
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
        let len = pair.clean.len();
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
                            r.layer * len + r.position.unwrap()
                        }
                        Component::AttnHead => r.layer * h + r.head.unwrap(),
                        Component::AttnHeadPos => {
                            (r.layer * h + r.head.unwrap()) * len + r.position.unwrap()
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
