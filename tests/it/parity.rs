//! Parity with HF transformers: every captured internal, logits, gradients and greedy
//! generation of our implementation against goldens made by scripts/make_goldens.py.

use candle_core::{D, IndexOp, Tensor};
use tokenlens::model::generate::{Decoding, GenerateOptions};
use tokenlens::model::reverse::{Metric, SegTarget, Segment};
use tokenlens::model::{Capture, Layers, LensNorm, Logits, Model, Objective, Target};

use crate::common::{
    Golden, assert_close, data_dir, real_fetched, real_minilm, real_model, single_target_segments,
};

/// Forward tolerance (max abs error scaled by the reference's magnitude) and gradient tolerance.
const FWD_TOL: f32 = 1e-4;
const GRAD_TOL: f32 = 1e-3;

fn all_captures() -> Capture {
    Capture {
        residual: true,
        mlp: Layers::All,
        attention: Layers::All,
        final_hidden: true,
        sites: false,
        logits: Logits::All,
    }
}

/// Gradients of each objective (with its golden key) for one target per row, one backward pass
/// each, against the golden rows `golden_row(r)`; padding positions must get no gradient.
fn check_embedding_grads(
    name: &str,
    model: &Model,
    batch: &tokenlens::model::Batch,
    targets: &[Target],
    golden: &Golden,
    objectives: &[(Objective, &str)],
    golden_row: impl Fn(usize) -> usize,
) {
    for &(objective, key) in objectives {
        let g = model
            .embedding_gradients(batch, None, targets, objective)
            .unwrap();
        let mut worst = 0f32;
        for r in 0..batch.rows() {
            let pad = batch.pad(r);
            worst = worst.max(assert_close(
                &format!("{name} p{r} {key}"),
                &g.grad.i((r, pad..)).unwrap(),
                golden.t(&format!("p{}.{key}", golden_row(r))),
                GRAD_TOL,
            ));
            if pad > 0 {
                let leaked: f32 = g
                    .grad
                    .i((r, ..pad))
                    .unwrap()
                    .abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar()
                    .unwrap();
                assert_eq!(leaked, 0.0, "{name} p{r}: gradient leaked into padding");
            }
        }
        eprintln!("{name}: {key} parity, worst scaled error {worst:.2e}");
    }
}

const BOTH_GRADS: &[(Objective, &str)] = &[
    (Objective::LogProb, "grad_logprob"),
    (Objective::Prob, "grad_prob"),
];

/// Runs all golden prompts as ONE left-padded batch and compares every row with the reference,
/// which ran each prompt alone: this checks padding, masks and per-row positions too.
fn check_tiny(name: &str) {
    let n = Golden::load(name).prompts().len();
    check_tiny_rows(name, &(0..n).collect::<Vec<_>>());
}

/// `check_tiny` on some of the golden's prompts (`rows`, ascending); the greedy continuation is
/// checked for those whose 8 new tokens fit the model's context.
fn check_tiny_rows(name: &str, rows: &[usize]) {
    let golden = Golden::load(name);
    let model = Model::load(&data_dir().join(name), None).unwrap();
    let prompts = golden.prompts();
    let all_ids = golden.ids("input_ids");
    let ids: Vec<Vec<u32>> = rows
        .iter()
        .map(|&r| model.encode(&prompts[r]).unwrap())
        .collect();
    let want: Vec<Vec<u32>> = rows.iter().map(|&r| all_ids[r].clone()).collect();
    assert_eq!(ids, want, "{name}: tokenizer ids");
    // Golden rows of the checked prompts (their keys are `p{golden row}.*`).
    let row = |r: usize| rows[r];

    let batch = model.batch(&ids).unwrap();
    let out = model.forward(&batch, &all_captures()).unwrap();
    let n_layers = model.config.n_layers;
    assert_eq!(out.residual.len(), n_layers + 1);
    let mut worst = 0f32;
    for (r, row_ids) in ids.iter().enumerate() {
        let pad = batch.pad(r);
        let t = row_ids.len();
        let key = |k: &str| format!("p{}.{k}", row(r));
        let resid = Tensor::stack(
            &out.residual
                .iter()
                .map(|x| x.i((r, pad..)).unwrap())
                .collect::<Vec<_>>(),
            0,
        )
        .unwrap();
        worst = worst.max(assert_close(
            &format!("{name} p{r} resid"),
            &resid,
            golden.t(&key("resid")),
            FWD_TOL,
        ));
        let fh = out.final_hidden.as_ref().unwrap().i((r, pad..)).unwrap();
        worst = worst.max(assert_close(
            &format!("{name} p{r} final"),
            &fh,
            golden.t(&key("final_hidden")),
            FWD_TOL,
        ));
        let mlp = Tensor::stack(
            &(0..n_layers)
                .map(|l| out.mlp[&l].i((r, pad..)).unwrap())
                .collect::<Vec<_>>(),
            0,
        )
        .unwrap();
        worst = worst.max(assert_close(
            &format!("{name} p{r} mlp"),
            &mlp,
            golden.t(&key("mlp_act")),
            FWD_TOL,
        ));
        let attn = Tensor::stack(
            &(0..n_layers)
                .map(|l| out.attention[&l].i((r, .., pad.., pad..)).unwrap())
                .collect::<Vec<_>>(),
            0,
        )
        .unwrap();
        worst = worst.max(assert_close(
            &format!("{name} p{r} attn"),
            &attn,
            golden.t(&key("attn")),
            FWD_TOL,
        ));
        let logits = out.logits.as_ref().unwrap().i((r, pad..)).unwrap();
        worst = worst.max(assert_close(
            &format!("{name} p{r} logits"),
            &logits,
            golden.t(&key("logits")),
            FWD_TOL,
        ));
        // The lens with the final norm at the last layer is the model's own output.
        let lens = model
            .lens_logits(
                &out.residual[n_layers].i((r, pad..)).unwrap(),
                LensNorm::FinalNorm,
            )
            .unwrap();
        assert_close(
            &format!("{name} p{r} lens"),
            &lens,
            golden.t(&key("logits")),
            FWD_TOL,
        );
        assert_eq!(resid.dims()[1], t);
    }
    eprintln!("{name}: forward parity, worst scaled error {worst:.2e}");

    // Gradients of log p and p of the argmax token at each row's last position, one backward.
    let targets: Vec<Target> = (0..ids.len())
        .map(|r| Target {
            position: batch.width() - 1,
            token: golden
                .t(&format!("p{}.target", row(r)))
                .to_vec1::<i64>()
                .unwrap()[0] as u32,
        })
        .collect();
    check_embedding_grads(name, &model, &batch, &targets, &golden, BOTH_GRADS, row);
    // The same probability gradients from the multi-target reverse pass (saliency's engine).
    let pairs: Vec<(usize, u32)> = ids
        .iter()
        .zip(&targets)
        .map(|(row, t)| (row.len() - 1, t.token))
        .collect();
    let segments = single_target_segments(&model, &ids, &pairs);
    let res = model.metric_gradients(&segments).unwrap();
    let mut worst = 0f32;
    for (r, res) in res.iter().enumerate() {
        let got = Tensor::from_vec(
            res.grads[0].clone().unwrap(),
            (ids[r].len(), model.config.hidden_size),
            model.device(),
        )
        .unwrap();
        worst = worst.max(assert_close(
            &format!("{name} p{r} reverse grad_prob"),
            &got,
            golden.t(&format!("p{}.grad_prob", row(r))),
            GRAD_TOL,
        ));
    }
    eprintln!("{name}: reverse-pass grad_prob parity, worst scaled error {worst:.2e}");

    let fits: Vec<usize> = (0..ids.len())
        .filter(|&r| ids[r].len() + 8 <= model.config.max_position_embeddings)
        .collect();
    let gens = model
        .generate(
            &fits.iter().map(|&r| ids[r].clone()).collect::<Vec<_>>(),
            &vec![0; fits.len()],
            &GenerateOptions {
                max_new_tokens: 8,
                decoding: Decoding::Greedy,
                stop_at_eos: false,
            },
        )
        .unwrap();
    let got: Vec<Vec<u32>> = gens.into_iter().map(|g| g.generated).collect();
    let greedy = golden.ids("greedy");
    let want: Vec<Vec<u32>> = fits.iter().map(|&r| greedy[row(r)].clone()).collect();
    assert!(
        !want.is_empty(),
        "{name}: no prompt fits the context for generation"
    );
    assert_eq!(got, want, "{name}: greedy generation");
}

#[test]
fn tiny_gpt2_matches_transformers() {
    check_tiny("tiny-gpt2");
}

#[test]
fn tiny_llama_matches_transformers() {
    check_tiny("tiny-llama");
}

#[test]
fn tiny_qwen2_matches_transformers() {
    check_tiny("tiny-qwen2");
}

#[test]
fn tiny_qwen3_matches_transformers() {
    check_tiny("tiny-qwen3");
}

#[test]
fn tiny_olmo2_matches_transformers() {
    check_tiny("tiny-olmo2");
}

#[test]
fn tiny_gemma_matches_transformers() {
    check_tiny("tiny-gemma");
}

/// Soft-capped attention scores and logits, query_pre_attn_scalar, sliding layers (window 8)
/// alternating with global ones, prompts longer than the window.
#[test]
fn tiny_gemma2_matches_transformers() {
    check_tiny("tiny-gemma2");
}

/// q/k norms, sliding and global layers with their own RoPE bases (the global one scaled).
#[test]
fn tiny_gemma3_matches_transformers() {
    check_tiny("tiny-gemma3");
}

/// Partial rotary (25%), parallel residual, LayerNorm, per-head fused q|k|v.
#[test]
fn tiny_pythia_matches_transformers() {
    check_tiny("tiny-pythia");
}

#[test]
fn tiny_neox_sequential_matches_transformers() {
    check_tiny("tiny-neox-seq");
}

#[test]
fn tiny_phi3_matches_transformers() {
    check_tiny("tiny-phi3");
}

/// LongRoPE within the original context (64): the short factors and the attention factor,
/// as transformers uses them there; a longer prompt is refused with the context in the message.
#[test]
fn tiny_phi3_longrope_matches_transformers_within_the_original_context() {
    check_tiny("tiny-phi3-longrope");
    let model = Model::load(&data_dir().join("tiny-phi3-longrope"), None).unwrap();
    assert_eq!(model.config.max_position_embeddings, 64);
    let long = "word ".repeat(80);
    let e = model.encode(&long).unwrap_err().to_string();
    assert!(e.contains("context (64 tokens)"), "{e}");
}

/// Sliding windows for real: prompts and greedy continuations longer than the window of 8.
#[test]
fn tiny_mistral_window_matches_transformers() {
    check_tiny("tiny-mistral-window");
}

#[test]
fn tiny_qwen2_window_matches_transformers() {
    check_tiny("tiny-qwen2-window");
}

/// RoPE scaling (`rope_scaling` / `rope_parameters`): Llama 3.x's `llama3`, `linear` and `yarn`
/// (whose attention factor scales cos and sin), with a 43-token prompt past the original context.
#[test]
fn tiny_llama3_rope_scaling_matches_transformers() {
    check_tiny("tiny-llama3");
}

#[test]
fn tiny_llama_linear_rope_scaling_matches_transformers() {
    check_tiny("tiny-llama-linear");
}

#[test]
fn tiny_llama_yarn_rope_scaling_matches_transformers() {
    check_tiny("tiny-llama-yarn");
}

/// Dynamic NTK changes nothing within `max_position_embeddings` (16 here), the only lengths
/// tokenlens runs: the prompts that fit match transformers, a longer one is refused.
#[test]
fn tiny_llama_dynamic_rope_matches_transformers_within_the_context() {
    check_tiny_rows("tiny-llama-dynamic", &[0, 1]);
    let golden = Golden::load("tiny-llama-dynamic");
    let model = Model::load(&data_dir().join("tiny-llama-dynamic"), None).unwrap();
    let long = &golden.prompts()[3];
    let e = model
        .encode(long)
        .and_then(|ids| model.batch(&[ids]))
        .unwrap_err();
    assert!(e.to_string().contains("16"), "{e}");
}

/// The cos and sin tables of every scaled RoPE against the ones transformers' rotary embedding
/// produced for the 43-token prompt ([T, head_dim]: the half-table twice, rotate-half layout).
#[test]
fn rope_tables_match_transformers() {
    use tokenlens::model::ops::RopeTable;
    for name in ["tiny-llama3", "tiny-llama-linear", "tiny-llama-yarn"] {
        let golden = Golden::load(name);
        let c = Model::load(&data_dir().join(name), None).unwrap().config;
        let table = RopeTable::new(
            c.head_dim,
            c.rope_theta,
            &c.rope_scaling,
            c.max_position_embeddings,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let (cos, sin) = table.tables();
        for (ours, key) in [(cos, "rope_cos"), (sin, "rope_sin")] {
            let want = golden.t(key);
            let t = want.dims()[0];
            let half = ours.narrow(0, 0, t).unwrap();
            let full = Tensor::cat(&[&half, &half], 1).unwrap();
            assert_close(&format!("{name} {key}"), &full, want, 1e-5);
        }
    }
}

/// Both lens variants against a computation from the checkpoint's tensors: Ecco's (no final
/// norm) and the usual one (final RMSNorm, then the unembedding).
#[test]
fn raw_lens_is_plain_unembedding() {
    let model = Model::load(&data_dir().join("tiny-llama"), None).unwrap();
    let batch = model
        .batch(&[model.encode("The cat sat").unwrap()])
        .unwrap();
    let out = model
        .forward(
            &batch,
            &Capture {
                residual: true,
                ..Capture::default()
            },
        )
        .unwrap();
    let x = &out.residual[1];
    let raw = model.lens_logits(x, LensNorm::Raw).unwrap();
    let normed = model.lens_logits(x, LensNorm::FinalNorm).unwrap();
    assert_eq!(raw.dims(), &[1, 3, 512]);
    // Independent reference from the checkpoint's own tensors (tiny-llama's head is untied).
    let w = candle_core::safetensors::load(
        data_dir().join("tiny-llama/model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let head = &w["lm_head.weight"];
    let x2 = x.squeeze(0).unwrap();
    let want_raw = x2.matmul(&head.t().unwrap()).unwrap().unsqueeze(0).unwrap();
    assert_close("raw lens = x W^T", &raw, &want_raw, 1e-5);
    let rms = candle_nn::ops::rms_norm_slow(&x2, &w["model.norm.weight"], 1e-5).unwrap();
    let want_normed = rms
        .matmul(&head.t().unwrap())
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    assert_close("normed lens = rmsnorm(x) W^T", &normed, &want_normed, 1e-5);
    let (d, _) = crate::common::diff(&raw, &normed);
    assert!(
        d > 1e-2,
        "the final norm must change intermediate-layer lens logits"
    );
}

/// The real default model: transformers loading the same GGUF is the reference.
#[test]
fn smollm2_gguf_matches_transformers() {
    let Some(path) = real_model() else { return };
    let golden = Golden::load("smollm2");
    let model = Model::load(&path, None).unwrap();
    assert_eq!(model.config.n_layers, 30);
    assert_eq!(model.config.n_kv_heads, 3);
    let prompts = golden.prompts();
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| model.encode(p).unwrap()).collect();
    assert_eq!(ids, golden.ids("input_ids"), "tokenizer ids");
    assert_eq!(ids[1], vec![19556, 905, 28, 260, 2644, 2643]);

    let batch = model.batch(&ids).unwrap();
    let capture = Capture {
        residual: true,
        mlp: Layers::Only(vec![0]),
        attention: Layers::Only(vec![0, 29]),
        logits: Logits::Last,
        ..Capture::default()
    };
    let out = model.forward(&batch, &capture).unwrap();
    let logits = out.logits.as_ref().unwrap();
    let sel: Vec<usize> = golden.meta["resid_indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let mut worst = [0f32; 4];
    for r in 0..ids.len() {
        let pad = batch.pad(r);
        let k = |s: &str| format!("p{r}.{s}");
        worst[0] = worst[0].max(assert_close(
            &k("logits_last"),
            &logits.i(r).unwrap(),
            golden.t(&k("logits_last")),
            SMOL_TOL,
        ));
        let resid = Tensor::stack(
            &sel.iter()
                .map(|&l| out.residual[l].i((r, pad..)).unwrap())
                .collect::<Vec<_>>(),
            0,
        )
        .unwrap();
        worst[1] = worst[1].max(assert_close(
            &k("resid_sel"),
            &resid,
            golden.t(&k("resid_sel")),
            SMOL_TOL,
        ));
        worst[2] = worst[2].max(assert_close(
            &k("mlp_act_l0"),
            &out.mlp[&0].i((r, pad..)).unwrap(),
            golden.t(&k("mlp_act_l0")),
            SMOL_TOL,
        ));
        for l in [0usize, 29] {
            let a = out.attention[&l].i((r, .., pad.., pad..)).unwrap();
            worst[3] = worst[3].max(assert_close(
                &k(&format!("attn_l{l}")),
                &a,
                golden.t(&k(&format!("attn_l{l}"))),
                SMOL_TOL,
            ));
        }
    }
    eprintln!(
        "smollm2 scaled errors: logits {:.2e} resid {:.2e} mlp {:.2e} attn {:.2e}",
        worst[0], worst[1], worst[2], worst[3]
    );

    // "The capital of France is" -> " Paris" (p ~ 0.77).
    let probs = candle_nn::ops::softmax_last_dim(&logits.i(0).unwrap()).unwrap();
    let top = probs.argmax(D::Minus1).unwrap().to_scalar::<u32>().unwrap();
    assert_eq!(model.tokenizer.token_text(top), " Paris");
    let p: f32 = probs.i(top as usize).unwrap().to_scalar().unwrap();
    assert!((p - 0.7725).abs() < 1e-3, "p(Paris) = {p}");

    let targets: Vec<Target> = (0..ids.len())
        .map(|r| Target {
            position: batch.width() - 1,
            token: golden.ids("greedy")[r][0],
        })
        .collect();
    let log_prob = [(Objective::LogProb, "grad_logprob")];
    check_embedding_grads(
        "smollm2",
        &model,
        &batch,
        &targets,
        &golden,
        &log_prob,
        |r| r,
    );

    // The saliency engine's packed reverse pass (each prompt alone, unpadded) against the same
    // reference: d p / d emb = p d log p / d emb. Relative to the largest reference value,
    // which is stricter than the scaled error above (these gradients are far below 1).
    let pairs: Vec<(usize, u32)> = ids
        .iter()
        .enumerate()
        .map(|(r, row)| (row.len() - 1, golden.ids("greedy")[r][0]))
        .collect();
    let segments = single_target_segments(&model, &ids, &pairs);
    let mut worst = 0f32;
    for (r, res) in model
        .metric_gradients(&segments)
        .unwrap()
        .iter()
        .enumerate()
    {
        let p = res.values[0];
        let want: Vec<f32> = golden
            .t(&format!("p{r}.grad_logprob"))
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|g| g * p)
            .collect();
        let got = res.grads[0].as_ref().unwrap();
        assert_eq!(got.len(), want.len());
        let m = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = got
            .iter()
            .zip(&want)
            .fold(0f32, |acc, (a, b)| acc.max((a - b).abs()));
        worst = worst.max(d / m);
        assert!(d / m <= GRAD_TOL, "p{r} reverse pass: {d:e} at max {m:e}");
    }
    eprintln!("smollm2 reverse-pass d p / d emb relative error {worst:.2e}");

    let gens = model
        .generate(
            &ids,
            &vec![0; ids.len()],
            &GenerateOptions {
                max_new_tokens: 10,
                decoding: Decoding::Greedy,
                stop_at_eos: false,
            },
        )
        .unwrap();
    let got: Vec<Vec<u32>> = gens.into_iter().map(|g| g.generated).collect();
    assert_eq!(got, golden.ids("greedy"), "greedy generation");
}

/// SmolLM2 tolerance: both sides dequantize the same Q4_1 blocks to the same f32 weights, so
/// differences come only from f32 summation order over 30 layers.
const SMOL_TOL: f32 = 1e-4;

/// Rows that stop at EOS early must not disturb the others (KV cache, masks, positions), and a
/// stopped row keeps its EOS as the last generated token.
#[test]
fn generation_rows_stop_independently() {
    let golden = Golden::load("tiny-llama");
    let greedy = golden.ids("greedy");
    // Make row 0's second greedy token the EOS token.
    let dir = crate::common::scratch("eos-llama");
    for f in ["tokenizer.json", "model.safetensors"] {
        std::fs::copy(data_dir().join("tiny-llama").join(f), dir.join(f)).unwrap();
    }
    let mut cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data_dir().join("tiny-llama/config.json")).unwrap(),
    )
    .unwrap();
    let eos = greedy[0][1];
    assert!(
        !greedy[1].contains(&eos) && !greedy[2].contains(&eos),
        "pick another EOS for this test"
    );
    cfg["eos_token_id"] = serde_json::json!(eos);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let model = Model::load(&dir, None).unwrap();
    let ids = golden.ids("input_ids");
    let opts = GenerateOptions {
        max_new_tokens: 8,
        decoding: Decoding::Greedy,
        stop_at_eos: true,
    };
    let gens = model.generate(&ids, &[0, 0, 0], &opts).unwrap();
    assert_eq!(gens[0].generated, greedy[0][..2].to_vec());
    assert!(gens[0].stopped_at_eos);
    assert_eq!(gens[1].generated, greedy[1]);
    assert_eq!(gens[2].generated, greedy[2]);
    assert!(!gens[1].stopped_at_eos);
    assert_eq!(
        gens[1].sequence(),
        [ids[1].clone(), greedy[1].clone()].concat()
    );
}

/// Sampling uses one seed per row: a prompt's sample does not depend on its batch neighbours.
#[test]
fn sampling_does_not_depend_on_the_batch() {
    let model = Model::load(&data_dir().join("tiny-gpt2"), None).unwrap();
    let a = model.encode("Once upon a time there was a").unwrap();
    let b = model.encode("The cat").unwrap();
    let opts = GenerateOptions {
        max_new_tokens: 12,
        decoding: Decoding::Sample {
            temperature: 1.0,
            top_k: Some(50),
            top_p: Some(0.9),
        },
        stop_at_eos: false,
    };
    let alone = model
        .generate(std::slice::from_ref(&a), &[42], &opts)
        .unwrap();
    let batched = model
        .generate(&[b.clone(), a.clone()], &[7, 42], &opts)
        .unwrap();
    assert_eq!(alone[0].generated, batched[1].generated);
    let other_seed = model.generate(&[a], &[43], &opts).unwrap();
    assert_ne!(alone[0].generated, other_seed[0].generated);
}

/// A checkpoint sharded over several safetensors files with an index loads to the same model.
#[test]
fn sharded_safetensors_load_like_single_file() {
    let dir = crate::common::scratch("sharded-llama");
    let src = data_dir().join("tiny-llama");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (i, chunk) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", i + 1);
        let part: std::collections::HashMap<String, Tensor> = chunk
            .iter()
            .map(|n| ((*n).clone(), tensors[*n].clone()))
            .collect();
        candle_core::safetensors::save(&part, dir.join(&file)).unwrap();
        for n in chunk {
            weight_map.insert((*n).clone(), serde_json::json!(file));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let a = Model::load(&src, None).unwrap();
    let b = Model::load(&dir, None).unwrap();
    let ids = vec![a.encode("Once upon a time").unwrap()];
    let cap = Capture {
        logits: Logits::All,
        ..Capture::default()
    };
    let la = a
        .forward(&a.batch(&ids).unwrap(), &cap)
        .unwrap()
        .logits
        .unwrap();
    let lb = b
        .forward(&b.batch(&ids).unwrap(), &cap)
        .unwrap()
        .logits
        .unwrap();
    assert_close("sharded logits", &lb, &la, 0.0);
    // A shard listed in the index but missing is named in the error.
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let err = Model::load(&dir, None).err().unwrap().to_string();
    assert!(
        err.contains("model-00002-of-00002.safetensors: weights file is missing"),
        "{err}"
    );
}

/// Every capture of an encoder batch (left-padded) against a golden's `resid`, `mlp_act` and
/// `attn`; returns the forward pass's outputs and the batch.
fn check_encoder_captures(
    name: &str,
    model: &Model,
    golden: &Golden,
    logits: bool,
) -> (Vec<Vec<u32>>, tokenlens::model::Batch) {
    let prompts = golden.prompts();
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| model.encode(p).unwrap()).collect();
    assert_eq!(ids, golden.ids("input_ids"), "{name}: tokenizer ids");
    let batch = model.batch(&ids).unwrap();
    let capture = Capture {
        logits: if logits { Logits::All } else { Logits::None },
        final_hidden: logits,
        ..all_captures()
    };
    let out = model.forward(&batch, &capture).unwrap();
    let n_layers = model.config.n_layers;
    let mut worst = 0f32;
    for (r, row_ids) in ids.iter().enumerate() {
        let pad = batch.pad(r);
        let key = |k: &str| format!("p{r}.{k}");
        let stack = |xs: Vec<Tensor>| Tensor::stack(&xs, 0).unwrap();
        let resid = stack(
            out.residual
                .iter()
                .map(|x| x.i((r, pad..)).unwrap())
                .collect(),
        );
        let mlp = stack(
            (0..n_layers)
                .map(|l| out.mlp[&l].i((r, pad..)).unwrap())
                .collect(),
        );
        let attn = stack(
            (0..n_layers)
                .map(|l| out.attention[&l].i((r, .., pad.., pad..)).unwrap())
                .collect(),
        );
        for (what, got) in [("resid", &resid), ("mlp_act", &mlp), ("attn", &attn)] {
            worst = worst.max(assert_close(
                &format!("{name} p{r} {what}"),
                got,
                golden.t(&key(what)),
                FWD_TOL,
            ));
        }
        if logits {
            let l = out.logits.as_ref().unwrap().i((r, pad..)).unwrap();
            worst = worst.max(assert_close(
                &format!("{name} p{r} logits"),
                &l,
                golden.t(&key("logits")),
                FWD_TOL,
            ));
            let h = out.final_hidden.as_ref().unwrap().i((r, pad..)).unwrap();
            worst = worst.max(assert_close(
                &format!("{name} p{r} head"),
                &h,
                golden.t(&key("head_hidden")),
                FWD_TOL,
            ));
        }
        assert_eq!(resid.dims()[1], row_ids.len());
    }
    eprintln!("{name}: forward parity, worst scaled error {worst:.2e}");
    (ids, batch)
}

/// A BERT masked-LM (post-LayerNorm, bidirectional): every capture, the masked-LM head's logits
/// at every position, and the gradients of the first [MASK] prediction with respect to every
/// token's embedding (positions after the mask included).
#[test]
fn tiny_bert_matches_transformers() {
    let name = "tiny-bert";
    let golden = Golden::load(name);
    let model = Model::load(&data_dir().join(name), None).unwrap();
    assert!(model.config.is_encoder());
    let (ids, batch) = check_encoder_captures(name, &model, &golden, true);
    let targets: Vec<Target> = (0..ids.len())
        .map(|r| Target {
            position: batch.pad(r)
                + golden
                    .t(&format!("p{r}.mask_positions"))
                    .to_vec1::<i64>()
                    .unwrap()[0] as usize,
            token: golden.t(&format!("p{r}.target")).to_vec1::<i64>().unwrap()[0] as u32,
        })
        .collect();
    check_embedding_grads(name, &model, &batch, &targets, &golden, BOTH_GRADS, |r| r);
    // The reverse pass (saliency's engine), bidirectional: the [MASK] prediction's gradient
    // with respect to every position, before and after the mask.
    let pairs: Vec<(usize, u32)> = targets
        .iter()
        .enumerate()
        .map(|(r, t)| (t.position - batch.pad(r), t.token))
        .collect();
    let segments = single_target_segments(&model, &ids, &pairs);
    let res = model.metric_gradients(&segments).unwrap();
    let mut worst = 0f32;
    for (r, res) in res.iter().enumerate() {
        let got = Tensor::from_vec(
            res.grads[0].clone().unwrap(),
            (ids[r].len(), model.config.hidden_size),
            model.device(),
        )
        .unwrap();
        worst = worst.max(assert_close(
            &format!("{name} p{r} reverse grad_prob"),
            &got,
            golden.t(&format!("p{r}.grad_prob")),
            GRAD_TOL,
        ));
    }
    eprintln!("{name}: reverse-pass grad_prob parity, worst scaled error {worst:.2e}");
    // A decoder-style target (reading the last position of a prefix) is refused by name.
    let bad = Segment {
        embeds: segments[0].embeds.clone(),
        targets: vec![SegTarget {
            prefix: 3,
            at: 2,
            metric: Metric::Prob(1),
            grad: true,
        }],
    };
    let e = model.metric_gradients(&[bad]).unwrap_err().to_string();
    assert!(e.contains("sees the whole segment"), "{e}");
}

/// The real all-MiniLM-L6-v2 (sentence-transformers' BertModel, no masked-LM head): every
/// capture against transformers on the same weights; what needs a head is refused by name.
#[test]
fn minilm_matches_transformers() {
    let Some(path) = real_minilm() else { return };
    let model = Model::load(&path, None).unwrap();
    let golden = Golden::load("minilm");
    check_encoder_captures("minilm", &model, &golden, false);
    // The tokenizer on harder texts (accents, CJK, emoji, whitespace runs, special tokens):
    // the ids transformers' AutoTokenizer gave, with no padding nor truncation.
    for case in golden.meta["tokenizer_check"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(model.tokenizer.encode(text).unwrap(), want, "{text:?}");
    }
    let x = Tensor::zeros((1, 384), candle_core::DType::F32, model.device()).unwrap();
    let e = model
        .lens_logits(&x, LensNorm::Raw)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no language-model head"), "{e}");
}

/// The real Gemma 3 270M (Q4_K_M GGUF: Q4_K, Q5_0, Q6_K, Q8_0 blocks) against transformers
/// loading the same file: every residual stream, the MLP of layer 0, attention of a sliding
/// (0) and a global (5) layer, the top-20 logits at every position, the logit lens's top 5 at
/// every layer and position, greedy continuations, and log-prob gradients.
#[test]
fn gemma3_270m_gguf_matches_transformers() {
    let Some(path) = real_fetched("gemma3") else {
        return;
    };
    let model = Model::load(&path, None).unwrap();
    let golden = Golden::load("gemma3-270m");
    let c = &model.config;
    assert_eq!((c.n_layers, c.hidden_size, c.head_dim), (18, 640, 256));
    assert_eq!(
        c.sliding_layers.iter().filter(|&&s| !s).count(),
        3,
        "full-attention layers 5, 11, 17"
    );
    let prompts = golden.prompts();
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| model.encode(p).unwrap()).collect();
    assert_eq!(ids, golden.ids("input_ids"), "tokenizer ids");
    let batch = model.batch(&ids).unwrap();
    let capture = Capture {
        residual: true,
        mlp: Layers::Only(vec![0]),
        attention: Layers::Only(vec![0, 5]),
        logits: Logits::All,
        ..Capture::default()
    };
    let out = model.forward(&batch, &capture).unwrap();
    let n = c.n_layers;
    let mut worst = [0f32; 4];
    for r in 0..ids.len() {
        let pad = batch.pad(r);
        let k = |s: &str| format!("p{r}.{s}");
        let resid = Tensor::stack(
            &out.residual
                .iter()
                .map(|x| x.i((r, pad..)).unwrap())
                .collect::<Vec<_>>(),
            0,
        )
        .unwrap();
        worst[0] = worst[0].max(assert_close(
            &k("resid"),
            &resid,
            golden.t(&k("resid")),
            FWD_TOL,
        ));
        worst[1] = worst[1].max(assert_close(
            &k("mlp_act_l0"),
            &out.mlp[&0].i((r, pad..)).unwrap(),
            golden.t(&k("mlp_act_l0")),
            FWD_TOL,
        ));
        for l in [0usize, 5] {
            worst[2] = worst[2].max(assert_close(
                &k(&format!("attn_l{l}")),
                &out.attention[&l].i((r, .., pad.., pad..)).unwrap(),
                golden.t(&k(&format!("attn_l{l}"))),
                FWD_TOL,
            ));
        }
        // Our logits at transformers' top-20 ids, every position.
        let logits = out.logits.as_ref().unwrap().i((r, pad..)).unwrap();
        let top_ids = golden
            .t(&k("top_ids"))
            .to_dtype(candle_core::DType::U32)
            .unwrap();
        let ours = logits.gather(&top_ids, 1).unwrap();
        worst[3] = worst[3].max(assert_close(
            &k("top_logits"),
            &ours,
            golden.t(&k("top_logits")),
            FWD_TOL,
        ));
        // The lens (final norm) at every layer: transformers' top 5 are our top 5, up to ties
        // closer than 1e-3 (the reference's neighbouring logits come that close).
        let want = golden
            .t(&k("lens_top_ids"))
            .to_dtype(candle_core::DType::U32)
            .unwrap();
        for l in 0..=n {
            let lens = model
                .lens_logits(&out.residual[l].i((r, pad..)).unwrap(), LensNorm::FinalNorm)
                .unwrap();
            let w = want.i(l).unwrap();
            let at_want: Vec<Vec<f32>> = lens.gather(&w, 1).unwrap().to_vec2().unwrap();
            let mut sorted = lens.contiguous().unwrap();
            sorted = sorted.sort_last_dim(false).unwrap().0;
            let fifth: Vec<f32> = sorted
                .narrow(1, 4, 1)
                .unwrap()
                .squeeze(1)
                .unwrap()
                .to_vec1()
                .unwrap();
            for (p, row) in at_want.iter().enumerate() {
                for &v in row {
                    assert!(
                        v >= fifth[p] - 1e-3,
                        "p{r} lens layer {l} position {p}: {v} < {}",
                        fifth[p]
                    );
                }
            }
        }
    }
    eprintln!(
        "gemma3-270m scaled errors: resid {:.2e} mlp {:.2e} attn {:.2e} top-20 logits {:.2e}",
        worst[0], worst[1], worst[2], worst[3]
    );
    // Greedy continuations with the KV cache.
    let gens = model
        .generate(
            &ids,
            &vec![0; ids.len()],
            &GenerateOptions {
                max_new_tokens: 10,
                decoding: Decoding::Greedy,
                stop_at_eos: false,
            },
        )
        .unwrap();
    let got: Vec<Vec<u32>> = gens.into_iter().map(|g| g.generated).collect();
    assert_eq!(got, golden.ids("greedy"), "greedy generation");
    // Gradients of log p(argmax at the last position) w.r.t. the unscaled token embeddings.
    let targets: Vec<Target> = (0..ids.len())
        .map(|r| Target {
            position: batch.width() - 1,
            token: golden.ids("greedy")[r][0],
        })
        .collect();
    let log_prob = [(Objective::LogProb, "grad_logprob")];
    check_embedding_grads(
        "gemma3-270m",
        &model,
        &batch,
        &targets,
        &golden,
        &log_prob,
        |r| r,
    );
}
