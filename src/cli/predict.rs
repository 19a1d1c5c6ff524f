//! `tokenlens predict`: the top-k next-token predictions for each prompt.

use anyhow::{Context, Result, bail};
use candle_core::D;
use clap::Args;
use tokenlens::model::{Capture, Logits};

use super::model_args::{ModelArgs, encode_all};

#[derive(Args)]
pub struct PredictArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// How many candidates to print.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// One or more prompts.
    #[arg(required = true)]
    prompts: Vec<String>,
}

pub fn run(a: PredictArgs) -> Result<()> {
    let (lo, hi) = tokenlens::pipeline::spec::ranges::TOP_K;
    if !(lo..=hi).contains(&a.top_k) {
        bail!("--top-k must be in {lo}..={hi}, got {}", a.top_k);
    }
    let model = a.model.load()?;
    let seqs = encode_all(&model, &a.prompts)?;
    let batch = model.batch(&seqs)?;
    let out = model.forward(
        &batch,
        &Capture {
            logits: Logits::Last,
            ..Capture::default()
        },
    )?;
    let probs = candle_nn::ops::softmax_last_dim(&out.logits.context("no logits")?)?;
    let k = a.top_k.min(model.config.vocab_size).max(1);
    let sorted = probs
        .arg_sort_last_dim(false)?
        .narrow(D::Minus1, 0, k)?
        .to_vec2::<u32>()?;
    let probs = probs.to_vec2::<f32>()?;
    for (r, prompt) in a.prompts.iter().enumerate() {
        println!("{prompt:?}");
        println!("  {:>4}  {:>8}  {:>9}  token", "rank", "id", "prob");
        for (rank, &id) in sorted[r].iter().enumerate() {
            let text = model.tokenizer.token_text(id);
            println!(
                "  {:>4}  {:>8}  {:>9.6}  {:?}",
                rank + 1,
                id,
                probs[r][id as usize],
                text
            );
        }
    }
    Ok(())
}
