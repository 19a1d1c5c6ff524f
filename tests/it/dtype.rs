//! Weights held in bf16 / f16 (`--dtype`, `model.dtype`): a half-precision model computes
//! exactly what the f32 engine computes on the same weights rounded to that dtype (activations
//! and accumulation stay f32), for every family, forward, autograd and the reverse pass; `auto`
//! keeps a half-precision checkpoint in its dtype; bad values fail clearly. Parity with
//! transformers run in each dtype: `parity_dtype.rs`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use tokenlens::model::{Capture, Layers, Logits, Model, Objective, Target, WeightDtype};

use crate::common::{Tokenlens, assert_close, data_dir, scratch, single_target_segments};

const BIN: Tokenlens = Tokenlens::RUN;

/// The same computation up to the order of f32 sums (the widened panels are multiplied in
/// blocks of their own).
const SAME_TOL: f32 = 2e-5;

/// A copy of the tiny checkpoint `name` with every float tensor rounded to `round` and stored as
/// `store`.
pub fn rounded_copy(name: &str, round: DType, store: DType) -> PathBuf {
    let src = data_dir().join(name);
    let dir = scratch(&format!("dtype-{name}-{round:?}-as-{store:?}"));
    let tensors = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, t)| {
            let t = if t.dtype().is_float() {
                t.to_dtype(round).unwrap().to_dtype(store).unwrap()
            } else {
                t
            };
            (k, t)
        })
        .collect();
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    for f in std::fs::read_dir(&src).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "json") {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    dir
}

fn prompts(model: &Model) -> Vec<Vec<u32>> {
    [
        "The capital of France is",
        "Once upon a time there was a little",
        "x = 1",
    ]
    .iter()
    .map(|p| model.encode(p).unwrap())
    .collect()
}

/// Every capture, the autograd gradients of p and log p at each row's last position and (for
/// decoders) the reverse pass's, of `got` against `want`.
fn check_same(what: &str, got: &Model, want: &Model) {
    let ids = prompts(want);
    let batch = want.batch(&ids).unwrap();
    let all = Capture {
        residual: true,
        mlp: Layers::All,
        attention: Layers::All,
        final_hidden: true,
        sites: false,
        logits: Logits::All,
    };
    let (a, b) = (
        got.forward(&batch, &all).unwrap(),
        want.forward(&batch, &all).unwrap(),
    );
    let mut worst = 0f32;
    for (l, (x, y)) in a.residual.iter().zip(&b.residual).enumerate() {
        worst = worst.max(assert_close(&format!("{what} resid {l}"), x, y, SAME_TOL));
    }
    for l in 0..want.config.n_layers {
        worst = worst.max(assert_close(
            &format!("{what} mlp {l}"),
            &a.mlp[&l],
            &b.mlp[&l],
            SAME_TOL,
        ));
        worst = worst.max(assert_close(
            &format!("{what} attn {l}"),
            &a.attention[&l],
            &b.attention[&l],
            SAME_TOL,
        ));
    }
    let (la, lb) = (a.logits.unwrap(), b.logits.unwrap());
    worst = worst.max(assert_close(&format!("{what} logits"), &la, &lb, SAME_TOL));
    let targets: Vec<Target> = (0..ids.len())
        .map(|r| Target {
            position: batch.width() - 1,
            token: lb
                .i((r, batch.width() - 1))
                .unwrap()
                .argmax(0)
                .unwrap()
                .to_scalar::<u32>()
                .unwrap(),
        })
        .collect();
    for objective in [Objective::Prob, Objective::LogProb] {
        let ga = got
            .embedding_gradients(&batch, None, &targets, objective)
            .unwrap();
        let gb = want
            .embedding_gradients(&batch, None, &targets, objective)
            .unwrap();
        worst = worst.max(assert_close(
            &format!("{what} {objective:?} gradient"),
            &ga.grad,
            &gb.grad,
            SAME_TOL,
        ));
    }
    if !want.config.is_encoder() {
        let pairs: Vec<(usize, u32)> = ids
            .iter()
            .zip(&targets)
            .map(|(row, t)| (row.len() - 1, t.token))
            .collect();
        let segments = |m: &Model| single_target_segments(m, &ids, &pairs);
        let ra = got.metric_gradients(&segments(got)).unwrap();
        let rb = want.metric_gradients(&segments(want)).unwrap();
        for (r, (x, y)) in ra.iter().zip(&rb).enumerate() {
            let t = |v: &Vec<f32>| Tensor::from_slice(v, v.len(), want.device()).unwrap();
            worst = worst.max(assert_close(
                &format!("{what} p{r} reverse pass"),
                &t(x.grads[0].as_ref().unwrap()),
                &t(y.grads[0].as_ref().unwrap()),
                SAME_TOL,
            ));
        }
    }
    eprintln!("{what}: worst scaled difference {worst:.1e}");
}

const FAMILIES: &[&str] = &[
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
fn half_weights_compute_what_f32_computes_on_the_rounded_weights() {
    for name in FAMILIES {
        for (choice, dtype) in [
            (WeightDtype::Bf16, DType::BF16),
            (WeightDtype::F16, DType::F16),
        ] {
            let half = Model::load_as(&data_dir().join(name), None, choice).unwrap();
            assert_eq!(half.dtype, dtype);
            let reference = Model::load_as(
                &rounded_copy(name, dtype, DType::F32),
                None,
                WeightDtype::F32,
            )
            .unwrap();
            assert_eq!(reference.dtype, DType::F32);
            // Matrices take half the bytes; the vectors (norms, biases) stay f32.
            assert!(half.weight_bytes() * 2 > reference.weight_bytes());
            assert!(
                half.weight_bytes() * 10 < reference.weight_bytes() * 6,
                "{name}"
            );
            check_same(&format!("{name} {dtype:?}"), &half, &reference);
        }
    }
}

#[test]
fn auto_keeps_a_half_checkpoint_in_its_dtype() {
    for (store, name) in [(DType::BF16, "bf16"), (DType::F16, "f16")] {
        let dir = rounded_copy("tiny-qwen3", store, store);
        let auto = Model::load(&dir, None).unwrap();
        assert_eq!(auto.dtype, store);
        let wide = Model::load_as(&dir, None, WeightDtype::F32).unwrap();
        assert_eq!(wide.dtype, DType::F32);
        check_same(&format!("{name} checkpoint, auto vs f32"), &auto, &wide);
        let json = BIN.ok(&["inspect", "--model", dir.to_str().unwrap()]);
        assert!(
            json.contains(&format!("\"weights_dtype\": \"{name}\"")),
            "{json}"
        );
    }
    // f32 checkpoints and quantized GGUF stay f32.
    let f32_model = Model::load(&data_dir().join("tiny-qwen3"), None).unwrap();
    assert_eq!(f32_model.dtype, DType::F32);
}

#[test]
fn bad_dtypes_fail_with_the_field_named() {
    let m = data_dir().join("tiny-llama");
    let m = m.to_str().unwrap();
    let o = BIN.output(&["predict", "--model", m, "--dtype", "int8", "x"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("invalid value 'int8' for '--dtype <DTYPE>': unknown dtype `int8` (expected one of: auto, f32, bf16, f16)"),
        "{err}"
    );
    let dir = scratch("dtype-bad-yaml");
    let spec = dir.join("spec.yaml");
    std::fs::write(dir.join("data.jsonl"), "{\"text\": \"hi\"}\n").unwrap();
    std::fs::write(
        &spec,
        format!(
            "model:\n  path: {m}\n  dtype: fp8\ndataset:\n  path: data.jsonl\noutput:\n  dir: out\n"
        ),
    )
    .unwrap();
    BIN.fails_mentioning(
        &["validate", "--no-model", spec.to_str().unwrap()],
        &["spec.yaml", "dtype", "fp8", "auto", "bf16"],
    );
}

/// `model: {dtype: bf16}` runs a pipeline with the weights in bf16 and records the dtype.
#[test]
fn a_pipeline_runs_in_bf16() {
    let dir = scratch("dtype-pipeline");
    let m = data_dir().join("tiny-llama");
    std::fs::write(
        dir.join("data.jsonl"),
        "{\"text\": \"The capital of France is\"}\n",
    )
    .unwrap();
    let spec = dir.join("spec.yaml");
    std::fs::write(
        &spec,
        format!(
            "model:\n  path: {}\n  dtype: bf16\ndataset:\n  path: data.jsonl\ngeneration:\n  max_new_tokens: 2\nanalyses:\n  predictions: {{top_k: 3}}\n  saliency: {{methods: [integrated_gradients], n_steps: 4}}\noutput:\n  dir: out\n",
            m.display()
        ),
    )
    .unwrap();
    BIN.ok(&["run", "--quiet", spec.to_str().unwrap()]);
    let manifest = std::fs::read_to_string(dir.join("out/manifest.json")).unwrap();
    assert!(
        manifest.contains("\"weights_dtype\": \"bf16\""),
        "{manifest}"
    );
    assert!(Path::new(&dir.join("out/saliency")).exists());
}
