//! `tokenlens export-html`: the viewer and a run's viewed tables as one self-contained HTML
//! file.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use tokenlens::store::Manifest;

#[derive(Args)]
pub struct ExportHtmlArgs {
    /// The run directory.
    run_dir: PathBuf,
    /// The HTML file to write.
    out: PathBuf,
    /// Refuse runs whose viewed tables exceed this many MB of Parquet.
    #[arg(long, default_value_t = 100.0)]
    max_mb: f64,
}

pub fn run(a: ExportHtmlArgs) -> Result<()> {
    if !Manifest::path(&a.run_dir).is_file() {
        bail!(
            "{}: not a run directory (no manifest.json)",
            a.run_dir.display()
        );
    }
    let (html, inlined) = tokenlens::view::export_html(&a.run_dir, (a.max_mb * 1e6) as u64)
        .with_context(|| format!("{}", a.run_dir.display()))?;
    std::fs::write(&a.out, &html).with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "wrote {} ({:.1} MB, {:.1} MB of Parquet inlined)",
        a.out.display(),
        html.len() as f64 / 1e6,
        inlined as f64 / 1e6
    );
    Ok(())
}
