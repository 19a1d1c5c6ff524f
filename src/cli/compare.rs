//! `tokenlens compare RUN_A [RUN_B] --out DIR`: comparisons of finished runs written into a
//! comparison directory (`tokenlens::compare`, docs/compare.md).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use tokenlens::analysis::similarity::Metric;
use tokenlens::compare::diff::DiffStep;
use tokenlens::compare::reps::Source;
use tokenlens::compare::similarity::{Pairs, SimilarityOptions, SimilarityStep};
use tokenlens::compare::{CompareOptions, Level, Step, compare};
use tokenlens::pipeline::spec::ranges;

#[derive(Clone, Copy, ValueEnum)]
enum LevelArg {
    /// Match documents, then positions: every prompt must have the same tokens in both runs.
    Position,
    /// Match documents only (e.g. models with different tokenizers): texts, not tokens.
    Document,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum SourceArg {
    /// The residual stream (table `residuals`).
    Residuals,
    /// MLP activations (table `activations`).
    Activations,
    /// No layer similarity.
    None,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum MetricArg {
    /// Minibatch linear CKA (unbiased HSIC per batch) of every layer pair.
    CkaMinibatch,
    /// Ecco's linear CKA, exact, over the --pairs.
    Cka,
    /// Ecco's CCA (mean canonical correlation), over the --pairs.
    Cca,
    /// Ecco's SVCCA (top --svcca-dims directions), over the --pairs.
    Svcca,
    /// Ecco's PWCCA, over the --pairs.
    Pwcca,
}

#[derive(Clone, Copy, ValueEnum)]
enum PairsArg {
    /// Each layer of A with B's layer at the same relative depth (within one run: none).
    Diagonal,
    /// Every layer of A with every layer of B.
    All,
}

/// A flag's parser for one of the spec's ranges (`analyses.similarity` has the same options).
fn range((lo, hi): (usize, usize)) -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(lo as u64..=hi as u64)
}

#[derive(Args)]
pub struct CompareArgs {
    /// A finished run directory (a pipeline's output.dir): run A, the reference.
    run_a: PathBuf,
    /// The run to compare with A (same dataset: documents are matched by doc_id). Without it,
    /// only comparisons within run A are made (the diff needs two runs).
    run_b: Option<PathBuf>,
    /// The comparison directory to write: comparison.json and one folder per table.
    #[arg(long)]
    out: PathBuf,
    /// What is matched: `position` (documents, then positions whose context is the same in both
    /// runs) or `document` (documents only).
    #[arg(long, value_enum, default_value = "position")]
    level: LevelArg,
    /// Replace --out if it exists (only a comparison directory is ever replaced).
    #[arg(long)]
    overwrite: bool,
    /// No progress bar; only the summary (and errors).
    #[arg(long, short)]
    quiet: bool,
    /// Representations whose layer similarity is computed (those both runs recorded).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "residuals,activations"
    )]
    similarity: Vec<SourceArg>,
    /// Similarity metrics.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "cka-minibatch,cka,cca,svcca,pwcca"
    )]
    metrics: Vec<MetricArg>,
    /// Layer pairs of the exact metrics (cka, cca, svcca, pwcca); cka-minibatch does every pair.
    #[arg(long, value_enum, default_value = "diagonal")]
    pairs: PairsArg,
    /// Rows per batch of cka-minibatch (at least 4; fewer rows than this make one batch).
    #[arg(long, default_value_t = 256, value_parser = range(ranges::SIMILARITY_MINIBATCH))]
    minibatch: u64,
    /// Principal directions per side kept by SVCCA (Ecco's dims).
    #[arg(long, default_value_t = 20, value_parser = range(ranges::SIMILARITY_SVCCA_DIMS))]
    svcca_dims: u64,
    /// Memory for the exact metrics' accumulators, in MiB; more pairs than fit take more passes
    /// over the runs.
    #[arg(long, default_value_t = 2048, value_parser = range(ranges::SIMILARITY_MEMORY_MIB))]
    memory_mib: u64,
}

pub fn run(a: CompareArgs) -> Result<()> {
    let opts = CompareOptions {
        run_a: a.run_a,
        run_b: a.run_b,
        out: a.out,
        level: match a.level {
            LevelArg::Position => Level::Position,
            LevelArg::Document => Level::Document,
        },
        overwrite: a.overwrite,
        quiet: a.quiet,
    };
    let sources: Vec<Source> = if a.similarity.contains(&SourceArg::None) {
        vec![]
    } else {
        let mut v = vec![];
        for s in &a.similarity {
            let s = match s {
                SourceArg::Residuals => Source::Residuals,
                SourceArg::Activations => Source::Activations,
                SourceArg::None => continue,
            };
            if !v.contains(&s) {
                v.push(s);
            }
        }
        v
    };
    let mut metrics = vec![];
    for m in &a.metrics {
        let m = match m {
            MetricArg::CkaMinibatch => Metric::CkaMinibatch,
            MetricArg::Cka => Metric::Cka,
            MetricArg::Cca => Metric::Cca,
            MetricArg::Svcca => Metric::Svcca,
            MetricArg::Pwcca => Metric::Pwcca,
        };
        if !metrics.contains(&m) {
            metrics.push(m);
        }
    }
    let similarity = SimilarityStep {
        options: SimilarityOptions {
            sources,
            metrics,
            pairs: match a.pairs {
                PairsArg::Diagonal => Pairs::Diagonal,
                PairsArg::All => Pairs::All,
            },
            minibatch: a.minibatch as usize,
            svcca_dims: a.svcca_dims as usize,
            memory_budget: (a.memory_mib as usize) << 20,
            ..SimilarityOptions::default()
        },
    };
    let steps: Vec<Box<dyn Step>> = vec![Box::new(DiffStep), Box::new(similarity)];
    let f = compare(&opts, &steps)?;
    println!(
        "compare: {} documents matched ({} only in A, {} only in B), {} positions, {:.2} s",
        f.docs.matched,
        f.docs.only_a,
        f.docs.only_b,
        f.positions_compared,
        f.seconds.get("total").copied().unwrap_or_default()
    );
    for s in &f.skipped {
        println!("skipped {}: {}", s.what, s.why);
    }
    let tables: Vec<String> = f
        .tables
        .iter()
        .map(|(t, e)| format!("{t} {}", e.rows))
        .collect();
    let tables = if tables.is_empty() {
        "no tables".to_string()
    } else {
        tables.join(", ")
    };
    println!("rows: {tables} -> {}", opts.out.display());
    Ok(())
}
