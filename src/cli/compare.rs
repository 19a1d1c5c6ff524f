//! `tokenlens compare RUN_A [RUN_B] --out DIR`: comparisons of finished runs written into a
//! comparison directory (`tokenlens::compare`, docs/compare.md).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use tokenlens::compare::{CompareOptions, Level, compare, default_steps};

#[derive(Clone, Copy, ValueEnum)]
enum LevelArg {
    /// Match documents, then positions: every prompt must have the same tokens in both runs.
    Position,
    /// Match documents only (e.g. models with different tokenizers): texts, not tokens.
    Document,
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
    let f = compare(&opts, &default_steps())?;
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
