//! tokenlens' side of the forward benchmark of scripts/bench_1b.sh: one batched forward pass
//! over any checkpoint with every capture (residual stream of every layer, MLP activations of
//! every layer, attention probabilities of every layer, logits at every position), timed after a
//! warm-up pass. Prints one JSON line. Settings from the environment:
//!
//!   TOKENLENS_BENCH_MODEL    checkpoint (HF directory or .gguf); required
//!   TOKENLENS_BENCH_DTYPE    the weights' dtype, as `--dtype`: auto (default), f32, bf16, f16
//!   TOKENLENS_BENCH_COMPUTE  the products' precision, as `--compute`: f32 (default), bf16
//!   TOKENLENS_BENCH_BATCH    prompts per batch (default 4)
//!   TOKENLENS_BENCH_TOKENS   tokens per prompt (default 64)
//!   TOKENLENS_BENCH_REPS     timed passes after the warm-up (default 3)
//!   TOKENLENS_BENCH_CAPTURE  all (default) or logits
//!   RAYON_NUM_THREADS        threads
//!
//! The token ids are those of benches/forward.rs and scripts/bench_1b_transformers.py:
//! 1000 + (r * 104729 + i * 7919) % 48000 for prompt r, position i.
//!
//!   cargo build --release --example bench_forward
//!   TOKENLENS_BENCH_MODEL=dir target/release/examples/bench_forward

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use tokenlens::model::{Capture, Captures, Layers, Logits, Model, WeightDtype};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn env_usize(name: &str, default: usize) -> Result<usize> {
    env_or(name, &default.to_string())
        .parse()
        .with_context(|| format!("{name} is not a number"))
}

fn bench_ids(batch: usize, tokens: usize) -> Vec<Vec<u32>> {
    (0..batch)
        .map(|r| {
            (0..tokens)
                .map(|i| 1000 + ((r * 104_729 + i * 7_919) % 48_000) as u32)
                .collect()
        })
        .collect()
}

/// Bytes of every tensor the forward pass returned.
fn capture_bytes(c: &Captures) -> usize {
    let size = |t: &candle_core::Tensor| t.elem_count() * t.dtype().size_in_bytes();
    c.residual.iter().map(size).sum::<usize>()
        + c.mlp.values().map(size).sum::<usize>()
        + c.attention.values().map(size).sum::<usize>()
        + c.final_hidden.iter().map(size).sum::<usize>()
        + c.logits.iter().map(size).sum::<usize>()
}

fn main() -> Result<()> {
    tokenlens::tune_allocator();
    let model_path =
        PathBuf::from(std::env::var("TOKENLENS_BENCH_MODEL").context("set TOKENLENS_BENCH_MODEL")?);
    let dtype: WeightDtype = env_or("TOKENLENS_BENCH_DTYPE", "auto")
        .parse()
        .map_err(|e: String| anyhow::anyhow!("TOKENLENS_BENCH_DTYPE: {e}"))?;
    let compute: tokenlens::model::Compute = env_or("TOKENLENS_BENCH_COMPUTE", "f32")
        .parse()
        .map_err(|e: String| anyhow::anyhow!("TOKENLENS_BENCH_COMPUTE: {e}"))?;
    let batch = env_usize("TOKENLENS_BENCH_BATCH", 4)?;
    let tokens = env_usize("TOKENLENS_BENCH_TOKENS", 64)?;
    let reps = env_usize("TOKENLENS_BENCH_REPS", 3)?.max(1);
    let mode = env_or("TOKENLENS_BENCH_CAPTURE", "all");
    let t0 = Instant::now();
    let mut model = Model::load_as(&model_path, None, dtype)
        .with_context(|| format!("loading {}", model_path.display()))?;
    model.set_compute(compute);
    let load_s = t0.elapsed().as_secs_f64();
    let capture = match mode.as_str() {
        "all" => Capture {
            residual: true,
            mlp: Layers::All,
            attention: Layers::All,
            final_hidden: false,
            sites: false,
            logits: Logits::All,
        },
        "logits" => Capture {
            logits: Logits::All,
            ..Capture::default()
        },
        other => bail!("TOKENLENS_BENCH_CAPTURE={other}: all or logits"),
    };
    let b = model.batch(&bench_ids(batch, tokens))?;
    let t = Instant::now();
    let out = model.forward(&b, &capture)?;
    let warmup_s = t.elapsed().as_secs_f64();
    let bytes = capture_bytes(&out);
    drop(out);
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let out = model.forward(&b, &capture)?;
        times.push(t.elapsed().as_secs_f64());
        drop(out);
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let best = sorted[0];
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        0.5 * (sorted[mid - 1] + sorted[mid])
    };
    let n = (batch * tokens) as f64;
    println!(
        "{}",
        serde_json::json!({
            "impl": "tokenlens", "task": "forward", "capture": mode, "dtype": dtype.to_string(), "compute": compute.to_string(),
            "weights_dtype": tokenlens::model::precision::dtype_name(model.dtype),
            "weight_bytes": model.weight_bytes(),
            "model": model_path, "batch": batch, "tokens": tokens,
            "threads": rayon::current_num_threads(), "load_s": load_s, "warmup_s": warmup_s,
            "times_s": times, "best_s": best, "median_s": median,
            "tokens_per_s_best": n / best, "tokens_per_s_median": n / median,
            "capture_bytes": bytes,
        })
    );
    Ok(())
}
