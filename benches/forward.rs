//! Batched forward pass on the default real model (SmolLM2-135M), with every capture on
//! (residual stream, MLP activations, attention, all-position logits) and with logits only.
//! Shape from the issue: 8 prompts x 64 tokens. scripts/bench_forward.sh runs this next to the
//! same work in transformers and prints the ratio.
//!
//! Needs the model (scripts/fetch-model.sh): fails without it, unless
//! `TOKENLENS_SKIP_REAL_MODELS=1` is set (then it skips, saying so), as the tests on real models.

use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokenlens::model::{Capture, Layers, Logits, Model};

const BATCH: usize = 8;
const TOKENS: usize = 64;

/// Deterministic ordinary-vocabulary ids (the same formula as scripts/bench_forward_transformers.py).
fn bench_ids() -> Vec<Vec<u32>> {
    (0..BATCH)
        .map(|r| {
            (0..TOKENS)
                .map(|i| 1000 + ((r * 104_729 + i * 7_919) % 48_000) as u32)
                .collect()
        })
        .collect()
}

/// The default model, or `None` (with a note) when it is missing and
/// `TOKENLENS_SKIP_REAL_MODELS=1`; a failure naming the fetch command otherwise.
fn model_path() -> Option<PathBuf> {
    let p = tokenlens::model::default_model_path();
    if p.exists() {
        return Some(p);
    }
    let missing = format!(
        "default model missing at {}: run `scripts/fetch-model.sh`",
        p.display()
    );
    if std::env::var("TOKENLENS_SKIP_REAL_MODELS").is_ok_and(|v| v == "1") {
        eprintln!("forward bench skipped: TOKENLENS_SKIP_REAL_MODELS=1 and the {missing}");
        return None;
    }
    panic!("{missing}; TOKENLENS_SKIP_REAL_MODELS=1 skips this bench");
}

fn forward(c: &mut Criterion) {
    tokenlens::tune_allocator();
    let Some(path) = model_path() else {
        return;
    };
    let model = Model::load(&path, None).expect("load model");
    let batch = model.batch(&bench_ids()).unwrap();
    let mut g = c.benchmark_group("smollm2_8x64");
    g.sample_size(10);
    g.throughput(Throughput::Elements((BATCH * TOKENS) as u64));
    let all = Capture {
        residual: true,
        mlp: Layers::All,
        attention: Layers::All,
        final_hidden: false,
        sites: false,
        logits: Logits::All,
    };
    g.bench_function("forward_all_captures", |b| {
        b.iter(|| model.forward(&batch, &all).unwrap())
    });
    let logits = Capture {
        logits: Logits::All,
        ..Capture::default()
    };
    g.bench_function("forward_logits_only", |b| {
        b.iter(|| model.forward(&batch, &logits).unwrap())
    });
    g.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
