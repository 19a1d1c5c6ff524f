use super::*;
use crate::analysis::saliency::Method;
use crate::model::generate::Decoding;
use crate::model::intervene::{Edit, Intervention, Span};

#[test]
fn every_table_has_the_rows_the_plan_implies() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-llama");
    let model = Model::load(&dir, None).unwrap();
    let cfg = model.config.clone();
    let docs: Vec<Doc> = ["The cat sat", "Once upon a time there was"]
        .iter()
        .enumerate()
        .map(|(i, t)| Doc {
            id: format!("d{i}"),
            text: t.to_string(),
            ids: model.encode(t).unwrap(),
            seed: i as u64,
            // The second document is paired: its contrast is explained too.
            pair: if i == 1 {
                DocPair {
                    corrupted: None,
                    answer: Some((" a".into(), 5)),
                    foil: Some((" b".into(), 6)),
                }
            } else {
                DocPair::default()
            },
        })
        .collect();
    let new = 3;
    let plan = Plan {
        generation: GenerateOptions {
            max_new_tokens: new,
            decoding: Decoding::Greedy,
            stop_at_eos: false,
        },
        predictions: Some(5),
        lens: Some(LensPlan {
            norm: LensNorm::FinalNorm,
            top_k: 2,
        }),
        watch: vec![("x".into(), 7), ("y".into(), 9)],
        watch_norm: LensNorm::Raw,
        saliency: Some(SaliencyPlan {
            options: SaliencyOptions {
                methods: vec![Method::GradXInput, Method::IntegratedGradients],
                n_steps: 4,
                ..SaliencyOptions::default()
            },
            generated: true,
            contrasts: vec![Metric::LogitDiff],
        }),
        patching: None,
        activations: Some(ActivationsPlan {
            layers: vec![0, cfg.n_layers - 1],
            positions: PositionSet::Generated,
        }),
        residuals: Some(ActivationsPlan {
            layers: vec![0, cfg.n_layers],
            positions: PositionSet::Prompt,
        }),
        attention: Some(AttentionPlan {
            layers: vec![1],
            heads: vec![],
            rollout: true,
        }),
        interventions: vec![
            // No edits: the plain generation again, bit for bit.
            Named {
                name: "none".into(),
                intervention: Intervention {
                    edits: vec![],
                    span: Span::All,
                },
                edits: vec![],
            },
            Named {
                name: "steer".into(),
                intervention: Intervention {
                    edits: vec![Edit::Steer {
                        layer: 0,
                        vector: vec![30.0; cfg.hidden_size],
                    }],
                    span: Span::Generated,
                },
                edits: vec![],
            },
        ],
    };
    let out = process(&model, &docs, &plan, &|_| {}).unwrap();
    // Each document under each intervention, in intervention order.
    assert_eq!(out.interventions.len(), 4);
    for r in &out.interventions {
        let plain: Vec<(u32, u32)> = out
            .tokens
            .iter()
            .filter(|t| t.doc == r.doc && t.is_generated)
            .map(|t| (t.position, t.token_id))
            .collect();
        let got: Vec<(u32, u32)> = r.tokens.iter().map(|t| (t.0, t.1)).collect();
        assert_eq!(got.len(), new);
        assert_eq!(got[0].0 as usize, docs[r.doc].ids.len());
        if r.intervention == 0 {
            assert_eq!(got, plain);
            assert_eq!(r.diverges_at, None);
            assert_eq!(r.output_text, out.generations[r.doc].output_text);
        } else {
            // Generated positions only: the first token is read before any is fed back.
            assert_eq!(got[0], plain[0]);
            assert_ne!(r.diverges_at, Some(0));
            let first = got.iter().zip(&plain).position(|(a, b)| a != b);
            assert_eq!(r.diverges_at, first.map(|i| i as u32));
        }
        assert!(r.tokens.iter().all(|t| t.2 > 0.0 && t.2 <= 1.0));
    }
    let lens: Vec<usize> = docs.iter().map(|d| d.ids.len() + new).collect();
    let total: usize = lens.iter().sum();
    let (nl, h) = (cfg.n_layers, cfg.n_heads);
    assert_eq!(out.n_tokens, total);
    assert_eq!(out.tokens.len(), total);
    assert_eq!(
        out.tokens.iter().filter(|t| t.is_generated).count(),
        2 * new
    );
    assert_eq!(out.generations.len(), 2);
    assert!(
        out.generations
            .iter()
            .all(|g| g.generated_tokens == new as u32)
    );
    assert_eq!(out.predictions.len(), total * 5);
    // The lens has a target everywhere but the last position.
    // Layers 0..=n_layers (0 = embeddings).
    assert_eq!(out.lens.len(), (nl + 1) * (total - 2));
    assert_eq!(out.lens_topk.len(), (nl + 1) * total * 2);
    assert_eq!(out.watch.len(), (nl + 1) * total * 2);
    assert_eq!(out.activations.len(), 2 * 2 * new);
    assert!(
        out.activations
            .iter()
            .all(|a| a.values.len() == cfg.intermediate_size)
    );
    let order: Vec<(usize, u32, u32)> = out
        .activations
        .iter()
        .map(|a| (a.doc, a.position, a.layer))
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "(doc, position, layer) order"
    );
    // The residual stream of the prompt positions, as an unpadded forward pass of each
    // document alone computes it (the batch was left-padded).
    let prompts: usize = docs.iter().map(|d| d.ids.len()).sum();
    assert_eq!(out.residuals.len(), 2 * prompts);
    for (i, d) in docs.iter().enumerate() {
        let seq: Vec<u32> = out
            .tokens
            .iter()
            .filter(|t| t.doc == i)
            .map(|t| t.token_id)
            .collect();
        let b = model.batch(&[seq]).unwrap();
        let capture = crate::model::Capture {
            residual: true,
            ..Default::default()
        };
        let caps = model.forward(&b, &capture).unwrap();
        let rows: Vec<_> = out.residuals.iter().filter(|r| r.doc == i).collect();
        assert_eq!(rows.len(), 2 * d.ids.len());
        for r in rows {
            let want: Vec<f32> = caps.residual[r.layer as usize]
                .i((0, r.position as usize))
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(r.values.len(), cfg.hidden_size);
            let err = want
                .iter()
                .zip(&r.values)
                .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
                .fold(0f32, f32::max);
            assert!(err < 1e-4, "doc {i} {r:?}: {err}");
        }
    }
    let tri = |n: usize| n * (n + 1) / 2;
    assert_eq!(out.attention.len(), h * total);
    assert_eq!(
        out.attention.iter().map(|a| a.weights.len()).sum::<usize>(),
        h * lens.iter().map(|&n| tri(n)).sum::<usize>()
    );
    assert_eq!(out.rollout.len(), total);
    for a in out.attention.iter().chain(&out.rollout) {
        let s: f32 = a.weights.iter().sum();
        assert!((s - 1.0).abs() < 1e-4, "weights sum to {s}");
    }
    // Saliency: one row per (method, target, source); the paired document's contrast reads
    // its prompt, and its target is where the answer would go.
    let pairs: usize = docs
        .iter()
        .map(|d| (0..new).map(|g| d.ids.len() + g).sum::<usize>())
        .sum();
    let contrast = docs[1].ids.len();
    assert_eq!(out.saliency.len(), 2 * (pairs + contrast));
    assert_eq!(out.completeness.len(), 2 * new + 1);
    let c: Vec<_> = out
        .saliency
        .iter()
        .filter(|r| r.metric == Metric::LogitDiff(5, 6))
        .collect();
    assert_eq!(c.len(), 2 * contrast);
    assert!(
        c.iter()
            .all(|r| r.doc == 1 && r.target_position == contrast)
    );
    // The greedy next-token prediction is the generated token.
    for (i, d) in docs.iter().enumerate() {
        let p = d.ids.len() - 1;
        let top1 = out
            .predictions
            .iter()
            .find(|c| c.doc == i && c.position == p as u32 && c.rank == 1)
            .unwrap();
        let next = out
            .tokens
            .iter()
            .find(|t| t.doc == i && t.position == p as u32 + 1)
            .unwrap();
        assert_eq!(top1.token_id, next.token_id);
    }
}
