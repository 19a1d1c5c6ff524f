//! Interventions during generation against transformers with forward hooks doing the same edits
//! (goldens by scripts/make_intervention_goldens.py: tiny GPT-2, Llama, Pythia and Gemma 2;
//! scripts/make_smollm2_interventions_golden.py: the real default model). The golden generates
//! greedily by recomputing the whole sequence at every step; tokenlens generates the prompts as
//! one left-padded batch through its KV cache, so masks, padding and cached positions are all
//! checked. The means and mean-difference vectors are measured by tokenlens too and compared.

use serde_json::Value;
use tokenlens::analysis::interventions::{MeanSites, TokenReduce, mean_difference, site_means};
use tokenlens::model::Model;
use tokenlens::model::generate::{Decoding, GenerateOptions};
use tokenlens::model::intervene::{Edit, Intervention, Span};

use crate::common::{Golden, assert_close, data_dir};

/// Forward tolerance on logits, scaled by max(1, |logit|) (`assert_close`).
const TOL: f32 = 1e-4;

fn vec_of(g: &Golden, key: &str) -> Vec<f32> {
    g.t(key).flatten_all().unwrap().to_vec1().unwrap()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// The golden's interventions as tokenlens edits. Means and mean-difference vectors are measured
/// by tokenlens (and checked against the golden's); a given vector is the golden's.
fn interventions(model: &Model, g: &Golden) -> Vec<(String, Intervention)> {
    let m = &g.meta;
    let mean_prompts = g.ids("mean_prompts");
    let (pos, neg) = (g.ids("positive"), g.ids("negative"));
    let d = model.config.head_dim;
    let mut out = vec![];
    for iv in m["interventions"].as_array().unwrap() {
        let name = iv["name"].as_str().unwrap().to_string();
        let mut edits = vec![];
        let mut span = Span::All;
        for e in iv["edits"].as_array().unwrap() {
            let layer = e["layer"].as_u64().unwrap() as usize;
            span = match e["positions"].as_str().unwrap() {
                "all" => Span::All,
                "prompt" => Span::Prompt,
                "generated" => Span::Generated,
                p => panic!("positions {p}"),
            };
            let site = e["site"].as_str().unwrap();
            let mean = |ids: &[usize], width: usize| -> Vec<f32> {
                let mut sites = MeanSites::default();
                if site == "neurons" {
                    sites.mlp_act.insert(layer);
                } else {
                    sites.z.insert(layer);
                }
                let means = site_means(model, &mean_prompts, 2, &sites).unwrap();
                let row = if site == "neurons" {
                    &means.mlp_act[&layer]
                } else {
                    &means.z[&layer]
                };
                let got: Vec<f32> = ids
                    .iter()
                    .flat_map(|&i| row[i * width..(i + 1) * width].to_vec())
                    .collect();
                let key = e["mean_key"].as_str().unwrap();
                let want = vec_of(g, key);
                let err = max_diff(&got, &want);
                assert!(err < TOL, "{name}: {key} differs by {err:e}");
                got
            };
            let value = |ids: &[usize], width: usize| -> Vec<f32> {
                match &e["value"] {
                    Value::String(s) if s == "zero" => vec![0.0; ids.len() * width],
                    Value::String(s) if s == "mean" => mean(ids, width),
                    Value::Number(x) => vec![x.as_f64().unwrap() as f32; ids.len() * width],
                    v => panic!("value {v}"),
                }
            };
            edits.push(match site {
                "neurons" => {
                    let ids = usizes(&e["neurons"]);
                    Edit::Neurons {
                        layer,
                        values: value(&ids, 1),
                        ids,
                    }
                }
                "heads" => {
                    let heads = usizes(&e["heads"]);
                    Edit::Heads {
                        layer,
                        values: value(&heads, d),
                        heads,
                    }
                }
                "steer" => {
                    let key = e["vector_key"].as_str().unwrap();
                    let v = if e["vector"] == "mean_diff" {
                        let reduce = match e["token"].as_str().unwrap() {
                            "last" => TokenReduce::Last,
                            _ => TokenReduce::Mean,
                        };
                        let got = mean_difference(model, &pos, &neg, 2, layer, reduce).unwrap();
                        let err = max_diff(&got, &vec_of(g, key));
                        assert!(err < TOL, "{name}: {key} differs by {err:e}");
                        got
                    } else {
                        vec_of(g, key)
                    };
                    let alpha = e["alpha"].as_f64().unwrap() as f32;
                    Edit::Steer {
                        layer,
                        vector: v.iter().map(|x| x * alpha).collect(),
                    }
                }
                s => panic!("site {s}"),
            });
        }
        out.push((name, Intervention { edits, span }));
    }
    out
}

/// Generates the golden's prompts as one batch under every intervention (and none), comparing
/// the tokens exactly and each step's logits at `columns` (all when None) within TOL.
fn check(model: &Model, g: &Golden, label: &str) -> f32 {
    let n = g.meta["prompts"].as_array().unwrap().len();
    let prompts: Vec<Vec<u32>> = (0..n)
        .map(|i| {
            g.t(&format!("prompt{i}.ids"))
                .to_vec1::<i64>()
                .unwrap()
                .iter()
                .map(|&x| x as u32)
                .collect()
        })
        .collect();
    let n_new = g.meta["n_new"].as_u64().unwrap() as usize;
    let opts = GenerateOptions {
        max_new_tokens: n_new,
        decoding: Decoding::Greedy,
        stop_at_eos: false,
    };
    let mut runs = vec![("plain".to_string(), None)];
    runs.extend(
        interventions(model, g)
            .into_iter()
            .map(|(name, iv)| (name, Some(iv))),
    );
    assert!(
        runs.len() >= 4,
        "{label}: the golden lists its interventions"
    );
    let mut worst = 0f32;
    for (name, iv) in &runs {
        let mut steps: Vec<Vec<Vec<f32>>> = vec![];
        let gens = model
            .generate_traced(&prompts, &vec![0; n], &opts, iv.as_ref(), &mut |l| {
                steps.push(l.to_vec())
            })
            .unwrap();
        assert_eq!(steps.len(), n_new);
        for (i, gen_) in gens.iter().enumerate() {
            let k = |s: &str| format!("{name}.prompt{i}.{s}");
            let want: Vec<u32> = g
                .t(&k("generated"))
                .to_vec1::<i64>()
                .unwrap()
                .iter()
                .map(|&x| x as u32)
                .collect();
            assert_eq!(gen_.generated, want, "{label} {name} prompt {i}: tokens");
            let want = g.t(&k("logits"));
            let cols: Option<Vec<usize>> =
                g.tensors.get(&format!("prompt{i}.logit_ids")).map(|t| {
                    t.to_vec1::<i64>()
                        .unwrap()
                        .iter()
                        .map(|&x| x as usize)
                        .collect()
                });
            let got: Vec<f32> = steps
                .iter()
                .flat_map(|s| match &cols {
                    Some(c) => c.iter().map(|&j| s[i][j]).collect::<Vec<_>>(),
                    None => s[i].clone(),
                })
                .collect();
            let got = candle_core::Tensor::from_vec(got, want.dims(), want.device()).unwrap();
            worst = worst.max(assert_close(
                &format!("{label} {name} prompt {i}: step logits"),
                &got,
                want,
                TOL,
            ));
        }
    }
    eprintln!("{label}: interventions during generation, worst scaled logit error {worst:.2e}");
    worst
}

fn check_tiny(name: &str) {
    let g = Golden::load(&format!("interventions-{name}"));
    let model = Model::load(&data_dir().join(name), None).unwrap();
    check(&model, &g, name);
}

#[test]
fn interventions_match_transformers_hooks_gpt2() {
    check_tiny("tiny-gpt2");
}

#[test]
fn interventions_match_transformers_hooks_llama() {
    check_tiny("tiny-llama");
}

#[test]
fn interventions_match_transformers_hooks_pythia() {
    check_tiny("tiny-pythia");
}

#[test]
fn interventions_match_transformers_hooks_gemma2() {
    check_tiny("tiny-gemma2");
}

/// On the real default model: a neuron zero-ablation, a head mean-ablation and a mean-difference
/// steering vector from the shipped prompt sets, on two quickstart prompts.
#[test]
fn smollm2_interventions_match_transformers() {
    let Some(path) = crate::common::real_model() else {
        return;
    };
    let g = Golden::load("smollm2-interventions");
    let model = Model::load(&path, None).unwrap();
    check(&model, &g, "smollm2");
}
