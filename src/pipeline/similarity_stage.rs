//! The similarity stage: `analyses.similarity`, the layer similarity of the run's own layers
//! (table `similarity`, docs/compare.md), at the end of an unsharded run. The computation is
//! `tokenlens compare`'s ([`compare::similarity::within_run`](crate::compare::similarity::within_run),
//! the one part of `compare` the pipeline uses: docs/architecture.md), so the table equals what
//! `tokenlens compare RUN_DIR --out DIR --pairs all` writes with the same options. It is written
//! into a staging folder and swapped in whole (`store::Staging`), and its row count recorded in
//! the manifest (`similarity_rows`).

use std::path::Path;

use super::error::{Error, Result};
use super::spec::{PipelineSpec, SimilarityMetric, SimilarityPairs, SimilaritySource};
use crate::analysis::similarity::Metric;
use crate::compare::similarity::{Pairs, SimilarityOptions, Source, within_run};
use crate::store::schema::SIMILARITY;
use crate::store::{Manifest, Staging};

/// What the stage did.
#[derive(Debug, Clone, PartialEq)]
pub struct SimilarityReport {
    /// Rows of the table.
    pub rows: u64,
    /// One sentence per representation compared.
    pub compared: Vec<String>,
    /// What was left out, and why (`what: why`).
    pub skipped: Vec<String>,
}

/// `tokenlens compare`'s options for the spec's `analyses.similarity` (None without it).
pub fn options(spec: &PipelineSpec) -> Option<SimilarityOptions> {
    let a = &spec.analyses;
    let s = a.similarity.as_ref()?;
    Some(SimilarityOptions {
        sources: a
            .similarity_sources()
            .into_iter()
            .map(|s| match s {
                SimilaritySource::Residuals => Source::Residuals,
                SimilaritySource::Activations => Source::Activations,
            })
            .collect(),
        metrics: s
            .metrics
            .iter()
            .map(|m| match m {
                SimilarityMetric::CkaMinibatch => Metric::CkaMinibatch,
                SimilarityMetric::Cka => Metric::Cka,
                SimilarityMetric::Cca => Metric::Cca,
                SimilarityMetric::Svcca => Metric::Svcca,
                SimilarityMetric::Pwcca => Metric::Pwcca,
            })
            .collect(),
        pairs: match s.pairs {
            SimilarityPairs::All => Pairs::All,
            SimilarityPairs::Diagonal => Pairs::Diagonal,
        },
        minibatch: s.minibatch,
        svcca_dims: s.svcca_dims,
        memory_budget: s.memory_mib << 20,
        ..SimilarityOptions::default()
    })
}

/// The `tokenlens compare` command that computes the same table over a sharded run once every
/// shard is done (into a comparison directory).
pub fn compare_command(spec: &PipelineSpec) -> Option<String> {
    let s = spec.analyses.similarity.as_ref()?;
    let list = |v: Vec<&str>| v.join(",");
    let sources = list(
        spec.analyses
            .similarity_sources()
            .iter()
            .map(|s| s.as_str())
            .collect(),
    );
    let metrics = list(
        s.metrics
            .iter()
            .map(|m| match m {
                SimilarityMetric::CkaMinibatch => "cka-minibatch",
                SimilarityMetric::Cka => "cka",
                SimilarityMetric::Cca => "cca",
                SimilarityMetric::Svcca => "svcca",
                SimilarityMetric::Pwcca => "pwcca",
            })
            .collect(),
    );
    Some(format!(
        "tokenlens compare {} --out DIR --pairs all --similarity {sources} --metrics {metrics} \
         --minibatch {} --svcca-dims {} --memory-mib {}",
        spec.output.dir.display(),
        s.minibatch,
        s.svcca_dims,
        s.memory_mib
    ))
}

/// Computes the spec's `analyses.similarity` over the run in `run_dir` (its tables written, the
/// run not yet marked done), replaces the run's `similarity` table with the new one once it is
/// complete, and records its rows in the manifest. What was skipped is printed unless `quiet`
/// (as is a progress bar). Without the analysis: nothing.
pub fn run_stage(run_dir: &Path, spec: &PipelineSpec, quiet: bool) -> Result<SimilarityReport> {
    let Some(opts) = options(spec) else {
        return Ok(SimilarityReport {
            rows: 0,
            compared: vec![],
            skipped: vec![],
        });
    };
    let staging = Staging::create(run_dir)?;
    // The run's directory name: the same whatever the working directory the spec was run from.
    let dir = &spec.output.dir;
    let name = dir.file_name().unwrap_or(dir.as_os_str()).to_string_lossy();
    let r = within_run(run_dir, &name, &opts, staging.run_dir(), quiet).map_err(Error::from)?;
    staging.commit(&[&SIMILARITY])?;
    let rows: u64 = r.tables.iter().map(|t| t.rows).sum();
    Manifest::record_similarity_rows(run_dir, &[(SIMILARITY.name, rows)])?;
    let skipped: Vec<String> = r
        .skipped
        .iter()
        .map(|s| format!("{}: {}", s.what, s.why))
        .collect();
    if !quiet {
        for s in &skipped {
            eprintln!("note: analyses.similarity skipped {s}");
        }
    }
    Ok(SimilarityReport {
        rows,
        compared: r.compared,
        skipped,
    })
}
