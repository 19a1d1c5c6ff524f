//! `tokenlens compare RUN_A [RUN_B]`: comparisons of finished runs, written as tables into a
//! comparison directory (docs/compare.md). The driver ([`compare`]) opens the runs
//! (`matching::Run`), matches their documents and positions (`matching::Matching`), then runs
//! each [`Step`] in turn (the run diff, `diff::DiffStep`, writes tables `diff` and `diff_docs`);
//! every table goes into a hidden temporary directory that is renamed into place at the end
//! (`output::OutDir`), with `comparison.json` saying what was compared and skipped and why.
//!
//! A new comparison is a [`Step`]: it gets the runs, the matching, the directory to write its
//! tables into (`TableWriter::<T>::create(cx.out, ..)`) and the progress bar, and returns what it
//! wrote and compared; add it to [`default_steps`]. Steps read runs with `store::reader` (or
//! [`matching::DocRows`], a table's rows document by document) and never load a model.

pub mod chunks;
pub mod diff;
pub mod divergence;
pub mod matching;
pub mod output;
pub mod reps;
pub mod similarity;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

pub use matching::{DocRows, DocSide, Level, MatchedDoc, Matching, ModelInfo, Run};
pub use output::{COMPARISON_JSON, ComparisonFile, OutDir, Skipped};

use crate::store::StoreError;
use crate::store::manifest::MANIFEST;
use crate::store::writer::{RunDir, TableSummary};

/// Errors of a comparison; each names the run directory, table, document or file it is about.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{}: no such run directory", dir.display())]
    NoRun { dir: PathBuf },
    #[error("{}: not a tokenlens run (no {MANIFEST})", dir.display())]
    NotARun { dir: PathBuf },
    #[error(
        "{}: the run is not finished (status `{status}`); compare finished runs",
        dir.display()
    )]
    Unfinished { dir: PathBuf, status: String },
    /// A table every run has is missing.
    #[error(
        "{}: no `{table}` table (every finished run has one: is this a whole run directory?)",
        dir.display()
    )]
    MissingTable { dir: PathBuf, table: &'static str },
    /// A run's manifest or table cannot be read.
    #[error("{}: {what}", dir.display())]
    Read {
        dir: PathBuf,
        what: String,
        #[source]
        source: Box<StoreError>,
    },
    /// Layer similarity failed: reading a representation table, or its math.
    #[error("similarity: {what}: {msg}")]
    Similarity { what: String, msg: String },
    /// A table's rows are not what a run writes.
    #[error("{}: table `{table}`: doc `{doc_id}`: {msg}", dir.display())]
    BadTable {
        dir: PathBuf,
        table: &'static str,
        doc_id: String,
        msg: String,
    },
    #[error(
        "no document of run A ({}, {a_docs} documents) is in run B ({}, {b_docs} documents): \
         documents are matched by doc_id; compare runs over the same dataset",
        a.display(),
        b.display()
    )]
    NoCommonDocs {
        a: PathBuf,
        b: PathBuf,
        a_docs: usize,
        b_docs: usize,
    },
    #[error(
        "doc `{}`: the prompt's tokens differ at position {}: run A ({}) has {}, run B ({}) has \
         {}; positions are matched only when both runs tokenize every prompt alike (same \
         tokenizer, same prompt): compare at document level instead (--level document)",
        .0.doc_id,
        .0.position,
        .0.a.display(),
        .0.a_token,
        .0.b.display(),
        .0.b_token
    )]
    PromptsDiffer(Box<PromptsDiffer>),
    #[error(
        "{}: already exists; --overwrite replaces it, or choose another --out",
        dir.display()
    )]
    OutExists { dir: PathBuf },
    #[error(
        "{}: not replaced: it is not a comparison directory (no {COMPARISON_JSON} of kind \
         `comparison`); choose another --out",
        dir.display()
    )]
    NotAComparison { dir: PathBuf },
    /// Writing the comparison's tables or JSON.
    #[error("{}: writing the comparison", dir.display())]
    Write {
        dir: PathBuf,
        #[source]
        source: Box<StoreError>,
    },
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where two runs tokenized a prompt differently ([`CompareError::PromptsDiffer`]).
#[derive(Debug)]
pub struct PromptsDiffer {
    pub doc_id: String,
    /// The first position whose tokens differ (or where the shorter prompt ends).
    pub position: usize,
    /// Run A's and run B's directories, as given.
    pub a: PathBuf,
    pub b: PathBuf,
    /// Each run's token there: `id "text"`, or that its prompt has ended.
    pub a_token: String,
    pub b_token: String,
}

/// What to compare, and where to.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    pub run_a: PathBuf,
    /// None: one run (steps that compare two runs are skipped).
    pub run_b: Option<PathBuf>,
    /// The comparison directory.
    pub out: PathBuf,
    pub level: Level,
    /// Replace `out` if it is a comparison directory.
    pub overwrite: bool,
    /// No progress bar.
    pub quiet: bool,
}

/// What a step gets: the runs, their matching, where to write, the progress bar.
pub struct Context<'a> {
    pub a: &'a Run,
    /// None when one run is compared.
    pub b: Option<&'a Run>,
    pub matching: &'a Matching,
    /// The (temporary) comparison directory: `TableWriter::<T>::create(cx.out, ..)`.
    pub out: &'a RunDir,
    pub progress: &'a Progress,
}

/// What a step did: its tables, what it compared, what it skipped and why.
#[derive(Debug, Default)]
pub struct StepReport {
    pub tables: Vec<TableSummary>,
    /// One sentence per thing compared (into comparison.json's `compared`).
    pub compared: Vec<String>,
    pub skipped: Vec<Skipped>,
}

/// One comparison of `tokenlens compare`, writing its own tables.
pub trait Step {
    /// Its name in comparison.json's `seconds` and on the progress bar.
    fn name(&self) -> &'static str;
    fn run(&self, cx: &Context<'_>) -> Result<StepReport, CompareError>;
}

/// The steps `tokenlens compare` runs, in order.
pub fn default_steps() -> Vec<Box<dyn Step>> {
    vec![
        Box::new(diff::DiffStep),
        Box::new(similarity::SimilarityStep::default()),
    ]
}

/// The progress bar of a comparison (on stderr; hidden when quiet): documents done per step.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(0)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} {bar:30} {pos}/{len}  {per_sec}  ETA {eta}  {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        Progress { bar }
    }

    /// A step starts, over `docs` items (documents, or positions: `step` says which).
    pub fn start(&self, step: &str, docs: u64) {
        self.bar.set_prefix(step.to_string());
        self.bar.set_length(docs);
        self.bar.set_position(0);
        self.bar.set_message("");
    }

    /// `docs` more documents done.
    pub fn inc(&self, docs: u64) {
        self.bar.inc(docs);
    }

    pub fn message(&self, msg: &str) {
        self.bar.set_message(msg.to_string());
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Compares the runs of `opts` with `steps` (usually [`default_steps`]) and writes the
/// comparison directory; returns what comparison.json records.
pub fn compare(
    opts: &CompareOptions,
    steps: &[Box<dyn Step>],
) -> Result<ComparisonFile, CompareError> {
    let t0 = Instant::now();
    let a = Run::open("A", &opts.run_a)?;
    let b = opts
        .run_b
        .as_deref()
        .map(|p| Run::open("B", p))
        .transpose()?;
    let out = OutDir::create(&opts.out, opts.overwrite)?;
    let progress = Progress::new(opts.quiet);
    progress.start("match", 0);
    progress.message("reading tokens and generations");
    let t = Instant::now();
    let matching = match &b {
        Some(b) => Matching::new(&a, b, opts.level)?,
        None => Matching::single(&a)?,
    };
    let mut seconds = BTreeMap::from([("match".to_string(), t.elapsed().as_secs_f64())]);
    let cx = Context {
        a: &a,
        b: b.as_ref(),
        matching: &matching,
        out: out.run_dir(),
        progress: &progress,
    };
    let (mut compared, mut skipped, mut tables) = (Vec::new(), Vec::new(), BTreeMap::new());
    for step in steps {
        let t = Instant::now();
        progress.start(
            &format!("{} (documents)", step.name()),
            matching.docs.len() as u64,
        );
        let r = step.run(&cx)?;
        seconds.insert(step.name().to_string(), t.elapsed().as_secs_f64());
        compared.extend(r.compared);
        skipped.extend(r.skipped);
        for s in &r.tables {
            tables.insert(s.table.to_string(), output::TableEntry::of(s));
        }
    }
    progress.finish();
    let first = |v: &[String]| v.iter().take(10).cloned().collect();
    let mut file = ComparisonFile {
        kind: "comparison",
        tokenlens_version: env!("CARGO_PKG_VERSION").to_string(),
        run_a: output::RunEntry::of(&a),
        run_b: b.as_ref().map(output::RunEntry::of),
        level: matching.level,
        docs: output::DocCounts {
            matched: matching.docs.len(),
            only_a: matching.only_a.len(),
            only_b: matching.only_b.len(),
            only_a_first: first(&matching.only_a),
            only_b_first: first(&matching.only_b),
        },
        positions_compared: matching.positions(),
        compared,
        skipped,
        tables,
        seconds,
    };
    file.seconds
        .insert("total".into(), t0.elapsed().as_secs_f64());
    out.commit(&file)?;
    Ok(file)
}
