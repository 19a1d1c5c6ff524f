//! `tokenlens neurons RUN_DIR`: the neurons stage on an existing run
//! (`tokenlens::pipeline::neurons_stage`): every recorded neuron's top contexts and statistics.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use tokenlens::pipeline::neurons_stage::run_stage;
use tokenlens::pipeline::spec::{NeuronsSpec, ranges};
use tokenlens::pipeline::stage_input::parse_layers;

use super::nmf::{check_shards_done, compact};

#[derive(Args)]
pub struct NeuronsArgs {
    /// The run directory (a pipeline's output.dir) whose activations table is summarized. The
    /// tables neuron_top_contexts and neuron_stats are written into it, replacing earlier ones.
    run_dir: PathBuf,
    /// Contexts per neuron: its largest activations over the run.
    #[arg(long, default_value_t = NeuronsSpec::default().top_k)]
    top_k: usize,
    /// Tokens of text before and after each context's position.
    #[arg(long, default_value_t = NeuronsSpec::default().context_tokens)]
    context_tokens: usize,
    /// Layers whose neurons are summarized: `all`, indices `0,5,-1` (negative: from the last
    /// layer of the activations table), ranges `0..30` (half-open) or `0..=29`.
    #[arg(long, default_value = "all", allow_hyphen_values = true)]
    layers: String,
    /// No progress bar; only the summary (and errors).
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(a: NeuronsArgs) -> Result<()> {
    let layers = parse_layers(&a.layers).map_err(|e| anyhow::anyhow!("--layers {e}"))?;
    let within = |flag: &str, v: usize, (lo, hi): (usize, usize)| -> Result<()> {
        if !(lo..=hi).contains(&v) {
            bail!("{flag} must be in {lo}..={hi}, got {v}");
        }
        Ok(())
    };
    within("--top-k", a.top_k, ranges::NEURONS_TOP_K)?;
    within(
        "--context-tokens",
        a.context_tokens,
        ranges::NEURONS_CONTEXT_TOKENS,
    )?;
    check_shards_done(&a.run_dir, "summarize")?;
    let spec = NeuronsSpec {
        top_k: a.top_k,
        context_tokens: a.context_tokens,
        layers,
    };
    let r = run_stage(&a.run_dir, &spec, a.quiet)?;
    let widths: Vec<usize> = {
        let mut w = r.neurons.clone();
        w.dedup();
        w
    };
    println!(
        "neurons: {} positions x {} layers ({}; {} neurons{}), top {}: read {:.2} s, contexts \
         {:.2} s, written {:.2} s",
        r.positions,
        r.layers.len(),
        compact(&r.layers),
        widths
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("/"),
        if widths.len() == 1 { " each" } else { "" },
        r.top_k,
        r.read_seconds,
        r.contexts_seconds,
        r.write_seconds,
    );
    let tables: Vec<String> = r.tables.iter().map(|(t, n)| format!("{t} {n}")).collect();
    println!("rows: {} -> {}", tables.join(", "), a.run_dir.display());
    Ok(())
}
