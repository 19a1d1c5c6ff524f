//! `tokenlens nmf RUN_DIR`: the NMF stage on an existing run (`tokenlens::pipeline::nmf_stage`).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use tokenlens::pipeline::nmf_stage::{NmfStageOptions, run_stage_with};
use tokenlens::pipeline::spec::{NegativeHandling, NmfSpec, Positions, ranges};
use tokenlens::pipeline::stage_input::parse_layers;
use tokenlens::store::manifest::{Manifest, Shard, ShardStatus};

#[derive(Args)]
pub struct NmfArgs {
    /// The run directory (a pipeline's output.dir) whose activations table is factorized. The
    /// tables nmf_components, nmf_factors, nmf_summary and nmf_top_contexts are written into it,
    /// replacing those of a previous NMF.
    run_dir: PathBuf,
    /// Factors (NMF components).
    #[arg(long, short = 'k', default_value_t = NmfSpec::default().n_components)]
    components: usize,
    /// Layers whose neurons are factorized together: `all`, indices `0,5,-1` (negative: from
    /// the last layer of the activations table), ranges `0..30` (half-open) or `0..=29`.
    #[arg(long, default_value = "all", allow_hyphen_values = true)]
    layers: String,
    /// The rows: `all` positions, `prompt` or `generated` ones.
    #[arg(long, default_value = "all")]
    positions: String,
    /// Iterations at most.
    #[arg(long, default_value_t = NmfSpec::default().max_iter)]
    max_iter: usize,
    /// Stop when the relative error improves by less than this between iterations (relative to
    /// the first iteration's error); 0: run all --max-iter iterations.
    #[arg(long, default_value_t = NmfSpec::default().tolerance)]
    tol: f64,
    /// Seed of the random initialization (same seed, same factors).
    #[arg(long, default_value_t = NmfSpec::default().seed)]
    seed: u64,
    /// Negative activations: `clip` (set to 0, as Ecco does) or `split` (each neuron's positive
    /// and negative parts become two columns).
    #[arg(long, default_value = "clip")]
    negative: String,
    /// Positions per factor in nmf_top_contexts (0: none, and no tokens table needed).
    #[arg(long, default_value_t = NmfSpec::default().top_contexts)]
    top_contexts: usize,
    /// Tokens of text before each top context's position.
    #[arg(long, default_value_t = NmfSpec::default().context_tokens)]
    context_tokens: usize,
    /// Factorize in memory when the matrix (4 bytes per value) fits in this much, else stream it
    /// from the Parquet files at every iteration: e.g. 2G, 512M, 0 (always stream).
    #[arg(long, default_value = "2G")]
    memory_budget: String,
    /// HALS sweeps over W and over H per pass over the matrix (scikit-learn's cd does 1; more
    /// sweeps cost little and cut the passes needed).
    #[arg(long, default_value_t = tokenlens::analysis::nmf::NmfOptions::default().inner)]
    sweeps: usize,
    /// When streamed, decode the Parquet parts at every iteration instead of reading back a
    /// scratch copy of the matrix written by the first pass (RUN_DIR/.staging-*/x.f16 or x.f32,
    /// deleted at the end; 2 or 4 bytes per value on disk).
    #[arg(long)]
    no_spill: bool,
    /// No progress bar; only the summary (and errors).
    #[arg(long, short)]
    quiet: bool,
}

/// Bytes from `123`, `64K`, `512M`, `2G` (binary units; a trailing `B` or `iB` is allowed).
fn parse_bytes(s: &str) -> Option<u64> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.char_indices().last()? {
        (i, 'K' | 'k') => (&t[..i], 10),
        (i, 'M' | 'm') => (&t[..i], 20),
        (i, 'G' | 'g') => (&t[..i], 30),
        (i, 'T' | 't') => (&t[..i], 40),
        _ => (t, 0),
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| (v * (1u64 << shift) as f64) as u64)
}

/// Layers as the CLI takes them: `0..30`, `0,14,29`, `0..4,10`.
pub(super) fn compact(layers: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < layers.len() {
        let mut j = i;
        while j + 1 < layers.len() && layers[j + 1] == layers[j] + 1 {
            j += 1;
        }
        parts.push(if j >= i + 2 {
            format!("{}..{}", layers[i], layers[j] + 1)
        } else {
            (i..=j)
                .map(|x| layers[x].to_string())
                .collect::<Vec<_>>()
                .join(",")
        });
        i = j + 1;
    }
    parts.join(",")
}

pub fn run(a: NmfArgs) -> Result<()> {
    let layers = parse_layers(&a.layers).map_err(|e| anyhow::anyhow!("--layers {e}"))?;
    let positions = match a.positions.as_str() {
        "all" => Positions::All,
        "prompt" => Positions::Prompt,
        "generated" => Positions::Generated,
        other => bail!("unknown --positions `{other}` (all, prompt, generated)"),
    };
    let negative = match a.negative.as_str() {
        "clip" => NegativeHandling::Clip,
        "split" => NegativeHandling::Split,
        other => bail!("unknown --negative `{other}` (clip, split)"),
    };
    let Some(memory_budget) = parse_bytes(&a.memory_budget) else {
        bail!(
            "--memory-budget `{}` is not a size (e.g. 2G, 512M, 0)",
            a.memory_budget
        );
    };
    let within = |flag: &str, v: usize, (lo, hi): (usize, usize)| -> Result<()> {
        if !(lo..=hi).contains(&v) {
            bail!("{flag} must be in {lo}..={hi}, got {v}");
        }
        Ok(())
    };
    within("--components", a.components, ranges::NMF_COMPONENTS)?;
    within("--max-iter", a.max_iter, ranges::NMF_MAX_ITER)?;
    within("--top-contexts", a.top_contexts, ranges::NMF_TOP_CONTEXTS)?;
    within(
        "--context-tokens",
        a.context_tokens,
        ranges::NMF_CONTEXT_TOKENS,
    )?;
    check_shards_done(&a.run_dir, "factorize")?;
    within("--sweeps", a.sweeps, (1, 100))?;
    if !(a.tol.is_finite() && a.tol >= 0.0 && a.tol <= ranges::NMF_TOLERANCE_MAX) {
        bail!(
            "--tol must be in 0..={}, got {}",
            ranges::NMF_TOLERANCE_MAX,
            a.tol
        );
    }
    let spec = NmfSpec {
        n_components: a.components,
        layers,
        positions,
        max_iter: a.max_iter,
        tolerance: a.tol,
        seed: a.seed,
        negative,
        top_contexts: a.top_contexts,
        context_tokens: a.context_tokens,
        ..NmfSpec::default()
    };
    let opts = NmfStageOptions {
        memory_budget,
        spill: !a.no_spill,
        inner: a.sweeps,
        ..NmfStageOptions::new(spec)
    };
    let r = run_stage_with(&a.run_dir, &opts, a.quiet)?;
    let per_iter = r.solve_seconds / r.iterations.max(1) as f64;
    println!(
        "nmf: {} positions x {} columns (layers {}, {}), k = {}, {}: {} iterations, relative \
         error {:.5}, {:.2} s ({:.3} s/iteration)",
        r.rows,
        r.cols,
        compact(&r.layers),
        match r.negative {
            tokenlens::analysis::nmf::Negatives::Clip => "clip",
            tokenlens::analysis::nmf::Negatives::Split => "split",
        },
        r.n_components,
        if r.in_memory { "in memory" } else { "streamed" },
        r.iterations,
        r.relative_error,
        r.solve_seconds,
        per_iter,
    );
    let tables: Vec<String> = r.tables.iter().map(|(t, n)| format!("{t} {n}")).collect();
    println!("rows: {} -> {}", tables.join(", "), a.run_dir.display());
    Ok(())
}

/// A sharded run is factorized (or summarized: `verb`) once, over the union of its shards'
/// tables: refuse it while some shard is not done (a run without a manifest, e.g. a synthetic
/// one, is not checked).
pub(super) fn check_shards_done(run_dir: &std::path::Path, verb: &str) -> Result<()> {
    let Ok(m) = Manifest::read(run_dir) else {
        return Ok(());
    };
    let n = m.shard_count;
    let done = (0..n)
        .filter(|&index| {
            let path = Shard { index, count: n }.status_path(run_dir);
            ShardStatus::read(&path).is_ok_and(|s| s.status == "done")
        })
        .count();
    if done < n as usize {
        bail!(
            "{}: {done} of {n} shards done; finish the others first (tokenlens run --shards {n} \
             --shard I --resume), then {verb} the whole run",
            run_dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_layer_lists() {
        assert_eq!(parse_bytes("2G"), Some(2 << 30));
        assert_eq!(parse_bytes("512MiB"), Some(512 << 20));
        assert_eq!(parse_bytes("1.5k"), Some(1536));
        assert_eq!(parse_bytes("0"), Some(0));
        assert_eq!(parse_bytes("12B"), Some(12));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("-1G"), None);
        assert_eq!(compact(&(0..30).collect::<Vec<_>>()), "0..30");
        assert_eq!(compact(&[0, 14, 29]), "0,14,29");
        assert_eq!(compact(&[0, 1, 2, 3, 10, 11]), "0..4,10,11");
    }
}
