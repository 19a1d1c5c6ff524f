//! `tokenlens run`: a pipeline spec run end to end (or one shard of it, or resumed), with the
//! final summary of prompts, tokens, time and rows per table.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use tokenlens::pipeline::runner::RunOptions;
use tokenlens::pipeline::spec::PipelineSpec;
use tokenlens::store::Shard;

#[derive(Args)]
pub struct RunArgs {
    /// The pipeline spec (YAML).
    pipeline: PathBuf,
    /// Continue a run that was interrupted (killed, crashed): completed windows are kept,
    /// the rest is recomputed; the final tables equal those of an uninterrupted run.
    #[arg(long)]
    resume: bool,
    /// Replace an existing run directory (as output.overwrite: true does).
    #[arg(long)]
    overwrite: bool,
    /// Read only the first N prompts (as dataset.limit: N does; recorded in the manifest's
    /// spec, so a resume must give the same).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Run shard I of N (prompts whose dataset index is I mod N), e.g. --shard 3/16.
    #[arg(long, conflicts_with = "shards")]
    shard: Option<String>,
    /// Run one of N shards, its index taken from JOB_COMPLETION_INDEX (Kubernetes Indexed
    /// Jobs) or SLURM_ARRAY_TASK_ID (Slurm job arrays).
    #[arg(long)]
    shards: Option<u32>,
    /// No progress bar; only the final summary (and errors).
    #[arg(long, short)]
    quiet: bool,
}

/// The shard to run: `--shard I/N`, or `--shards N` with I from the scheduler's environment.
fn shard(a: &RunArgs) -> Result<Shard> {
    Ok(match (&a.shard, a.shards) {
        (Some(s), _) => Shard::parse(s)?,
        (None, Some(0)) => bail!("--shards must be at least 1, got 0"),
        (None, Some(n)) => {
            let var = ["JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID"]
                .into_iter()
                .find_map(|v| std::env::var(v).ok().map(|x| (v, x)));
            let Some((name, value)) = var else {
                bail!(
                    "--shards {n}: neither JOB_COMPLETION_INDEX nor SLURM_ARRAY_TASK_ID is set; \
                     use --shard I/{n}"
                );
            };
            Shard::parse(&format!("{value}/{n}")).with_context(|| format!("{name}={value}"))?
        }
        (None, None) => Shard::ALL,
    })
}

pub fn run(a: RunArgs) -> Result<()> {
    let mut spec = PipelineSpec::load(&a.pipeline)?;
    spec.output.overwrite |= a.overwrite;
    if let Some(n) = a.limit {
        if n == 0 {
            bail!("--limit must be at least 1 (omit it to read every prompt)");
        }
        spec.dataset.limit = Some(n);
    }
    let opts = RunOptions {
        resume: a.resume,
        shard: shard(&a)?,
        quiet: a.quiet,
    };
    let r = tokenlens::pipeline::runner::run(&spec, &opts)?;
    let rows: Vec<String> = r.rows.iter().map(|(t, n)| format!("{t} {n}")).collect();
    println!(
        "done: {} prompts, {} tokens in {:.1} s ({:.2} prompts/s, {:.0} tokens/s) -> {}\nrows: {}",
        r.prompts,
        r.tokens,
        r.seconds,
        r.prompts as f64 / r.seconds.max(1e-9),
        r.tokens as f64 / r.seconds.max(1e-9),
        r.run_dir.display(),
        rows.join(", ")
    );
    Ok(())
}
