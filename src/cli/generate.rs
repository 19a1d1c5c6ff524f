//! `tokenlens generate`: continuations of the prompts, batched, greedy or sampled.

use std::io::IsTerminal;

use anyhow::{Result, bail};
use clap::Args;
use tokenlens::model::generate::{Decoding, GenerateOptions};

use super::model_args::{ModelArgs, encode_all};

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, default_value_t = 20)]
    max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    top_p: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep generating after an EOS token.
    #[arg(long)]
    ignore_eos: bool,
    #[arg(required = true)]
    prompts: Vec<String>,
}

pub fn run(a: GenerateArgs) -> Result<()> {
    if let Some(p) = a.top_p
        && !(p > 0.0 && p <= 1.0)
    {
        bail!("--top-p must be in (0, 1], got {p}");
    }
    let (lo, hi) = tokenlens::pipeline::spec::ranges::TEMPERATURE;
    if !(a.temperature.is_finite() && (lo..=hi).contains(&a.temperature)) {
        bail!(
            "--temperature must be in {lo}..={hi} (0 = greedy), got {}",
            a.temperature
        );
    }
    if a.top_k == Some(0) {
        bail!("--top-k must be at least 1");
    }
    let model = a.model.load()?;
    let seqs = encode_all(&model, &a.prompts)?;
    let decoding = if a.temperature == 0.0 {
        Decoding::Greedy
    } else {
        Decoding::Sample {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
        }
    };
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        decoding,
        stop_at_eos: !a.ignore_eos,
    };
    let seeds: Vec<u64> = (0..seqs.len() as u64)
        .map(|i| a.seed.wrapping_add(i))
        .collect();
    let gens = model.generate(&seqs, &seeds, &opts)?;
    // The generated part in bold on a terminal.
    let bold = std::io::stdout().is_terminal();
    for (prompt, g) in a.prompts.iter().zip(gens) {
        let text = model.tokenizer.decode(&g.generated)?;
        if bold {
            println!("{prompt}\x1b[1m{text}\x1b[0m");
        } else {
            println!("{prompt}{text}");
        }
    }
    Ok(())
}
