//! `tokenlens saliency`: generates greedily, then explains each generated token by the earlier
//! tokens (gradient, grad x input, integrated gradients), printed per token and optionally
//! written as JSON with the timing.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use tokenlens::analysis::saliency::{
    Baseline, Method, Rule, Saliency, SaliencyOptions, auto_chunk_tokens, saliency,
};
use tokenlens::model::Model;
use tokenlens::model::generate::{Decoding, GenerateOptions};
use tokenlens::pipeline::spec::ranges;

use super::model_args::{ModelArgs, encode_all};

#[derive(Args)]
pub struct SaliencyArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Tokens to generate (greedy) and explain.
    #[arg(long, default_value_t = 10)]
    generate: usize,
    /// gradient, grad_x_input, integrated_gradients (alias ig); comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "integrated_gradients")]
    method: Vec<String>,
    /// Integrated-gradients steps; with --ig-tolerance, the most a target may use.
    #[arg(long, default_value_t = 50)]
    n_steps: usize,
    /// Adaptive integrated gradients: refine each target's nested quadrature (3, 7, 15, 31, ...
    /// nodes, at most --n-steps) until its completeness error is at most this fraction of
    /// |p(input) - p(baseline)|; in (0, 1].
    #[arg(long)]
    ig_tolerance: Option<f64>,
    /// Integrated-gradients quadrature: gauss-legendre or trapezoid.
    #[arg(long, default_value = "gauss-legendre")]
    rule: String,
    /// Rows per chunk of the reverse pass: forward tokens plus each target's prefix length
    /// (bounds memory; SmolLM2: ~0.65 MB per forward token, ~30 KB per prefix row). Default: from
    /// the model's size, as in a pipeline (docs/saliency.md; SmolLM2: 1983).
    #[arg(long)]
    chunk_tokens: Option<usize>,
    /// Integrated gradients' baseline: zero, eos, bos (that token's embedding at every
    /// position), mean (the mean embedding over the vocabulary), or token with --baseline-token.
    #[arg(long, default_value = "zero")]
    baseline: String,
    /// With --baseline token: the token, by its vocabulary text ("<pad>") or a text of one token.
    #[arg(long)]
    baseline_token: Option<String>,
    /// Keep generating after an EOS token (always explain --generate tokens).
    #[arg(long)]
    ignore_eos: bool,
    /// Also write every score, the sequences and the timing as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(required = true)]
    prompts: Vec<String>,
}

pub fn run(a: SaliencyArgs) -> Result<()> {
    let methods = a
        .method
        .iter()
        .map(|m| {
            Method::parse(m).with_context(|| {
                format!("unknown --method `{m}` (gradient, grad_x_input, integrated_gradients)")
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let rule = match a.rule.as_str() {
        "gauss-legendre" | "gausslegendre" => Rule::GaussLegendre,
        "trapezoid" => Rule::Trapezoid,
        other => bail!("unknown --rule `{other}` (gauss-legendre, trapezoid)"),
    };
    if let Some(t) = a.ig_tolerance {
        if !(t > 0.0 && t <= 1.0) {
            bail!("--ig-tolerance must be in (0, 1], got {t}");
        }
        if rule == Rule::Trapezoid {
            bail!(
                "--ig-tolerance uses its own nested rule (docs/saliency.md): drop --rule trapezoid"
            );
        }
    }
    if a.generate == 0 {
        bail!("--generate must be at least 1: saliency explains generated tokens");
    }
    let (lo, hi) = ranges::IG_STEPS;
    if !(lo..=hi).contains(&a.n_steps) {
        bail!("--n-steps must be in {lo}..={hi}, got {}", a.n_steps);
    }
    let (lo, hi) = ranges::CHUNK_TOKENS;
    if let Some(c) = a.chunk_tokens
        && !(lo..=hi).contains(&c)
    {
        bail!("--chunk-tokens must be in {lo}..={hi}, got {c}");
    }
    if a.baseline_token.is_some() != (a.baseline == "token") {
        bail!("--baseline token and --baseline-token TEXT go together");
    }
    let model = a.model.load()?;
    let tokenizer = &model.tokenizer;
    let baseline = match a.baseline.as_str() {
        "zero" => Baseline::Zero,
        "mean" => Baseline::MeanEmbedding,
        "eos" => Baseline::Token(
            *tokenizer
                .eos_token_ids
                .first()
                .context("--baseline eos: the model has no EOS token")?,
        ),
        "bos" => Baseline::Token(
            tokenizer
                .bos_token_id
                .context("--baseline bos: the model has no BOS token")?,
        ),
        "token" => {
            let text = a.baseline_token.as_deref().unwrap_or_default();
            match tokenizer.token_to_id(text) {
                Some(id) => Baseline::Token(id),
                None => match tokenizer.encode_plain(text)?.as_slice() {
                    [id] => Baseline::Token(*id),
                    ids => bail!(
                        "--baseline-token {text:?} is neither a vocabulary entry nor one token \
                         ({} tokens)",
                        ids.len()
                    ),
                },
            }
        }
        other => bail!("unknown --baseline `{other}` (zero, eos, bos, mean, token)"),
    };
    let seqs = encode_all(&model, &a.prompts)?;
    let opts = GenerateOptions {
        max_new_tokens: a.generate,
        decoding: Decoding::Greedy,
        stop_at_eos: !a.ignore_eos,
    };
    let gens = model.generate(&seqs, &vec![0; seqs.len()], &opts)?;
    let sequences: Vec<Vec<u32>> = gens.iter().map(|g| g.sequence()).collect();
    let prompt_lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
    let sopts = SaliencyOptions {
        methods: methods.clone(),
        n_steps: a.n_steps,
        rule,
        ig_tolerance: a.ig_tolerance,
        chunk_tokens: a.chunk_tokens.unwrap_or_else(|| auto_chunk_tokens(&model)),
        baseline,
    };
    let started = std::time::Instant::now();
    let result = saliency(&model, &sequences, &prompt_lens, &sopts)?;
    let elapsed = started.elapsed().as_secs_f64();
    print_saliency(
        &model,
        &a.prompts,
        &sequences,
        &prompt_lens,
        &result,
        &sopts,
    )?;
    let n_targets: usize = sequences
        .iter()
        .zip(&prompt_lens)
        .map(|(s, p)| s.len() - p)
        .sum();
    if let Some(path) = a.json {
        let doc = serde_json::json!({
            "prompts": a.prompts, "sequences": sequences, "prompt_lens": prompt_lens,
            "methods": methods, "n_steps": a.n_steps, "ig_tolerance": a.ig_tolerance,
            "rule": rule, "seconds": elapsed,
            "generated_tokens": n_targets, "threads": rayon::current_num_threads(),
            "rows": result.rows, "completeness": result.completeness,
        });
        std::fs::write(&path, serde_json::to_string(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!(
        "saliency: {n_targets} generated tokens, {} method(s), {elapsed:.2} s ({:.3} s per generated token)",
        methods.len(),
        elapsed / n_targets.max(1) as f64
    );
    Ok(())
}

/// One line per generated token: each source token with its share of the attribution.
fn print_saliency(
    model: &Model,
    prompts: &[String],
    sequences: &[Vec<u32>],
    prompt_lens: &[usize],
    result: &Saliency,
    opts: &SaliencyOptions,
) -> Result<()> {
    let tok = |id: u32| format!("{:?}", model.tokenizer.token_text(id));
    for (doc, seq) in sequences.iter().enumerate() {
        let plen = prompt_lens[doc];
        println!(
            "{:?} -> {:?}",
            prompts[doc],
            model.tokenizer.decode(&seq[plen..])?
        );
        for method in &opts.methods {
            match method {
                Method::IntegratedGradients => match opts.ig_tolerance {
                    None => println!(
                        "  [{}: {:?}, {} steps]",
                        method.name(),
                        opts.rule,
                        opts.n_steps
                    ),
                    Some(t) => println!(
                        "  [{}: nested Fejer levels, adaptive to {t} of the probability change, \
                         at most {} steps]",
                        method.name(),
                        opts.n_steps
                    ),
                },
                _ => println!("  [{}]", method.name()),
            }
            for target in plen..seq.len() {
                let mut line = format!("    {:>14} <-", tok(seq[target]));
                for r in result
                    .rows
                    .iter()
                    .filter(|r| r.doc == doc && r.method == *method && r.target_position == target)
                {
                    line.push_str(&format!(
                        " {}{:.0}%",
                        tok(seq[r.source_position]),
                        100.0 * r.score
                    ));
                }
                if *method == Method::IntegratedGradients
                    && let Some(c) = result
                        .completeness
                        .iter()
                        .find(|c| c.doc == doc && c.target_position == target)
                {
                    line.push_str(&format!(
                        "   (p={:.3}, completeness error {:+.1e}, {} steps)",
                        c.value, c.error, c.steps
                    ));
                }
                println!("{line}");
            }
        }
    }
    Ok(())
}
