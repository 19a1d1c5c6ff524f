//! Parity with transformers in bf16 and f16, against goldens made by
//! scripts/make_dtype_goldens.py, two references per model and dtype:
//! - `rounded`: transformers in float32 on the parameters rounded to the dtype. That is exactly
//!   what tokenlens computes (weights in the dtype, activations and accumulation in f32), so it
//!   is held to the float32 tolerances: forward 1e-4, gradients 1e-3, greedy identical.
//! - `native`: transformers loaded and run in the dtype, every activation rounded to it (what a
//!   transformers user gets). The gap to it is transformers' own rounding, which the goldens
//!   measure (native vs rounded, in each JSON): the largest over all models and quantities was
//!   bf16 5.4e-2 forward / 6.4e-2 gradients, f16 8.6e-3 / 1.1e-2. The tolerances below leave
//!   about 2x of that. Greedy text is reported, not asserted: where native differs, its
//!   two best logits tie or nearly tie in the dtype (recorded in the JSON).

use candle_core::{IndexOp, Tensor};
use tokenlens::model::generate::{Decoding, GenerateOptions};
use tokenlens::model::{Capture, Layers, Logits, Model, Objective, Target, WeightDtype};

use crate::common::{Golden, assert_close, data_dir, real_model, single_target_segments};

const ROUNDED_FWD: f32 = 1e-4;
const ROUNDED_GRAD: f32 = 1e-3;

/// (forward, gradient) tolerances against transformers running natively in the dtype.
fn native_tol(dtype: &str) -> (f32, f32) {
    match dtype {
        "bf16" => (1e-1, 1.5e-1),
        "f16" => (2e-2, 2.5e-2),
        other => panic!("no tolerance for {other}"),
    }
}

fn weight_dtype(dtype: &str) -> WeightDtype {
    dtype.parse().unwrap()
}

/// Max scaled error of each (kind, quantity), for the report.
#[derive(Default)]
struct Worst(std::collections::BTreeMap<String, f32>);

impl Worst {
    fn check(&mut self, kind: &str, what: &str, got: &Tensor, want: &Tensor, tol: f32, ctx: &str) {
        let e = assert_close(&format!("{ctx} {kind} {what}"), got, want, tol);
        let w = self.0.entry(format!("{kind} {what}")).or_default();
        *w = w.max(e);
    }

    fn report(&self, ctx: &str) {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k} {v:.1e}")).collect();
        eprintln!("{ctx}: {}", parts.join(", "));
    }
}

/// One tiny checkpoint in `dtype` against both references: all golden prompts as one left-padded
/// batch; every hidden state, attention probability and logit; autograd gradients of p and
/// log p and the reverse pass's of p; greedy (KV cache) against the rounded reference's.
fn check_tiny_dtype(name: &str, dtype: &str) {
    let golden = Golden::load(&format!("dtype/{name}.{dtype}"));
    let model = Model::load_as(&data_dir().join(name), None, weight_dtype(dtype)).unwrap();
    assert_eq!(tokenlens::model::precision::dtype_name(model.dtype), dtype);
    let ctx = format!("{name} {dtype}");
    let ids = golden.ids("input_ids");
    for (p, want) in golden.prompts().iter().zip(&ids) {
        assert_eq!(&model.encode(p).unwrap(), want, "{ctx}: tokenizer ids");
    }
    let encoder = model.config.is_encoder();
    let positions: Vec<usize> = golden.meta["gradient_positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let batch = model.batch(&ids).unwrap();
    let all = Capture {
        residual: true,
        mlp: Layers::None,
        attention: Layers::All,
        final_hidden: true,
        sites: false,
        logits: Logits::All,
    };
    let out = model.forward(&batch, &all).unwrap();
    let n = model.config.n_layers;
    let (nf, ng) = native_tol(dtype);
    let mut worst = Worst::default();
    for (r, row) in ids.iter().enumerate() {
        let pad = batch.pad(r);
        // transformers' hidden states: the residual entering each block, then (decoders) the
        // final norm's output, (encoders) the last block's output.
        let mut hidden: Vec<Tensor> = (0..n)
            .map(|l| out.residual[l].i((r, pad..)).unwrap())
            .collect();
        hidden.push(if encoder {
            out.residual[n].i((r, pad..)).unwrap()
        } else {
            out.final_hidden.as_ref().unwrap().i((r, pad..)).unwrap()
        });
        let hidden = Tensor::stack(&hidden, 0).unwrap();
        let attn = Tensor::stack(
            &(0..n)
                .map(|l| out.attention[&l].i((r, .., pad.., pad..)).unwrap())
                .collect::<Vec<_>>(),
            0,
        )
        .unwrap();
        let logits = out.logits.as_ref().unwrap().i((r, pad..)).unwrap();
        for (kind, tol) in [("rounded", ROUNDED_FWD), ("native", nf)] {
            let k = |q: &str| format!("{kind}.p{r}.{q}");
            worst.check(kind, "hidden", &hidden, golden.t(&k("hidden")), tol, &ctx);
            worst.check(kind, "attn", &attn, golden.t(&k("attn")), tol, &ctx);
            worst.check(kind, "logits", &logits, golden.t(&k("logits")), tol, &ctx);
        }
        assert_eq!(hidden.dims()[1], row.len());
    }
    let targets: Vec<Target> = (0..ids.len())
        .map(|r| Target {
            position: batch.pad(r) + positions[r],
            token: golden.t(&format!("p{r}.target")).to_vec1::<i64>().unwrap()[0] as u32,
        })
        .collect();
    for (objective, key) in [
        (Objective::Prob, "grad_prob"),
        (Objective::LogProb, "grad_logprob"),
    ] {
        let g = model
            .embedding_gradients(&batch, None, &targets, objective)
            .unwrap();
        for r in 0..ids.len() {
            let got = g.grad.i((r, batch.pad(r)..)).unwrap();
            for (kind, tol) in [("rounded", ROUNDED_GRAD), ("native", ng)] {
                let want = golden.t(&format!("{kind}.p{r}.{key}"));
                worst.check(kind, key, &got, want, tol, &ctx);
            }
        }
    }
    if !encoder {
        // The reverse pass (saliency's engine) on the same weights.
        let pairs: Vec<(usize, u32)> = ids
            .iter()
            .zip(&targets)
            .map(|(row, t)| (row.len() - 1, t.token))
            .collect();
        let segments = single_target_segments(&model, &ids, &pairs);
        let res = model.metric_gradients(&segments).unwrap();
        for (r, res) in res.iter().enumerate() {
            let got = Tensor::from_vec(
                res.grads[0].clone().unwrap(),
                (ids[r].len(), model.config.hidden_size),
                model.device(),
            )
            .unwrap();
            let want = golden.t(&format!("rounded.p{r}.grad_prob"));
            worst.check(
                "rounded",
                "reverse grad_prob",
                &got,
                want,
                ROUNDED_GRAD,
                &ctx,
            );
        }
        let gens = model
            .generate(
                &ids,
                &vec![0; ids.len()],
                &GenerateOptions {
                    max_new_tokens: 8,
                    decoding: Decoding::Greedy,
                    stop_at_eos: false,
                },
            )
            .unwrap();
        let mut native_same = 0;
        for (r, g) in gens.iter().enumerate() {
            let want = |kind: &str| -> Vec<u32> {
                golden
                    .t(&format!("{kind}.p{r}.greedy"))
                    .to_vec1::<i64>()
                    .unwrap()
                    .into_iter()
                    .map(|x| x as u32)
                    .collect()
            };
            assert_eq!(g.generated, want("rounded"), "{ctx} p{r}: greedy");
            native_same += usize::from(g.generated == want("native"));
        }
        eprintln!(
            "{ctx}: greedy equal to native transformers for {native_same}/{} prompts",
            ids.len()
        );
    }
    worst.report(&ctx);
}

const TINY: &[&str] = &[
    "tiny-gpt2",
    "tiny-llama",
    "tiny-qwen2",
    "tiny-qwen3",
    "tiny-olmo2",
    "tiny-gemma",
    "tiny-gemma2",
    "tiny-gemma3",
    "tiny-pythia",
    "tiny-neox-seq",
    "tiny-phi3",
    "tiny-mistral-window",
    "tiny-bert",
];

#[test]
fn tiny_models_in_bf16_match_transformers() {
    for name in TINY {
        check_tiny_dtype(name, "bf16");
    }
}

#[test]
fn tiny_models_in_f16_match_transformers() {
    for name in TINY {
        check_tiny_dtype(name, "f16");
    }
}

/// SmolLM2 (the real Q4_1 GGUF, dequantized, then held in the dtype) against transformers'
/// GGUF load in that dtype: hidden states 0/10/20/30, attention of layers 0 and 29, last logits,
/// the log-prob gradient and greedy.
fn check_smollm2(dtype: &str) {
    let Some(path) = real_model() else { return };
    let golden = Golden::load(&format!("dtype/smollm2.{dtype}"));
    let model = Model::load_as(&path, None, weight_dtype(dtype)).unwrap();
    let ctx = format!("smollm2 {dtype}");
    let ids = golden.ids("input_ids");
    let sel: Vec<usize> = [0, 10, 20, 30].to_vec();
    let (nf, ng) = native_tol(dtype);
    let mut worst = Worst::default();
    let batch = model.batch(&ids).unwrap();
    let out = model
        .forward(
            &batch,
            &Capture {
                residual: true,
                mlp: Layers::None,
                attention: Layers::Only(vec![0, 29]),
                final_hidden: true,
                sites: false,
                logits: Logits::Last,
            },
        )
        .unwrap();
    for r in 0..ids.len() {
        let pad = batch.pad(r);
        let hidden = Tensor::stack(
            &sel.iter()
                .map(|&l| {
                    if l == 30 {
                        out.final_hidden.as_ref().unwrap().i((r, pad..)).unwrap()
                    } else {
                        out.residual[l].i((r, pad..)).unwrap()
                    }
                })
                .collect::<Vec<_>>(),
            0,
        )
        .unwrap();
        let attn = Tensor::stack(
            &[0, 29]
                .iter()
                .map(|l| out.attention[l].i((r, .., pad.., pad..)).unwrap())
                .collect::<Vec<_>>(),
            0,
        )
        .unwrap();
        let logits = out.logits.as_ref().unwrap().i(r).unwrap();
        for (kind, tol) in [("rounded", ROUNDED_FWD), ("native", nf)] {
            let k = |q: &str| format!("{kind}.p{r}.{q}");
            worst.check(
                kind,
                "hidden",
                &hidden,
                golden.t(&k("hidden_sel")),
                tol,
                &ctx,
            );
            worst.check(kind, "attn", &attn, golden.t(&k("attn_sel")), tol, &ctx);
            worst.check(
                kind,
                "logits",
                &logits,
                golden.t(&k("logits_last")),
                tol,
                &ctx,
            );
        }
    }
    let targets: Vec<Target> = (0..ids.len())
        .map(|r| Target {
            position: batch.width() - 1,
            token: golden.t(&format!("p{r}.target")).to_vec1::<i64>().unwrap()[0] as u32,
        })
        .collect();
    let g = model
        .embedding_gradients(&batch, None, &targets, Objective::LogProb)
        .unwrap();
    for r in 0..ids.len() {
        let got = g.grad.i((r, batch.pad(r)..)).unwrap();
        for (kind, tol) in [("rounded", ROUNDED_GRAD), ("native", ng)] {
            let want = golden.t(&format!("{kind}.p{r}.grad_logprob"));
            worst.check(kind, "grad_logprob", &got, want, tol, &ctx);
        }
    }
    let gens = model
        .generate(
            &ids,
            &vec![0; ids.len()],
            &GenerateOptions {
                max_new_tokens: 8,
                decoding: Decoding::Greedy,
                stop_at_eos: false,
            },
        )
        .unwrap();
    for (r, g) in gens.iter().enumerate() {
        let want: Vec<u32> = golden
            .t(&format!("rounded.p{r}.greedy"))
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|x| x as u32)
            .collect();
        assert_eq!(g.generated, want, "{ctx} p{r}: greedy");
    }
    worst.report(&ctx);
}

#[test]
fn smollm2_in_bf16_matches_transformers() {
    check_smollm2("bf16");
}

#[test]
fn smollm2_in_f16_matches_transformers() {
    check_smollm2("f16");
}
