//! The NMF stage: factorizes the MLP activations a run recorded (table `activations`) with
//! [`analysis::nmf`](crate::analysis::nmf) and writes the tables `nmf_components`, `nmf_factors`,
//! `nmf_summary` and `nmf_top_contexts` into the run (docs/nmf.md).
//!
//! The matrix X has one row per token position (document, position) and one column per neuron of
//! the chosen layers, concatenated in ascending layer order (twice as many columns with
//! `negative: split`: first every neuron's positive part, then every neuron's negative part). It
//! is read from the Parquet parts with the arrow reader, one record batch at a time:
//!
//! 1. a scan reads only the `layer` column, then `doc_id`, `position` and `layer`: which layers
//!    the table has, which rows are kept (chosen layers, chosen positions), that every kept
//!    position has each chosen layer exactly once, and the (doc_id, position) of every row of X
//!    (8 bytes per row, kept for the outputs);
//! 2. the data pass reads the kept rows' `values` (a Parquet row selection skips the others) and
//!    hands X to the solver in chunks of about `chunk_bytes`.
//!
//! When X fits `memory_budget` it is read once into memory and the solver iterates over it there
//! (full batch); otherwise every iteration streams it again from the Parquet files, and memory
//! stays one chunk plus the factors (docs/nmf.md).

use std::cell::RefCell;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::error::Result;
use super::spec::{NmfInit, NmfSpec};
use super::stage_input::StageInputError;
use crate::analysis::nmf::{InMemory, Negatives, NmfOptions, RowSource, nmf};
use crate::store::reader::table_parts;
use crate::store::schema::{
    NMF_COMPONENTS, NMF_FACTORS, NMF_SUMMARY, NMF_TOP_CONTEXTS, NmfComponents, NmfComponentsRow,
    NmfFactors, NmfFactorsRow, NmfSummary, NmfSummaryRow, NmfTopContexts, NmfTopContextsRow,
    TOKENS,
};
use crate::store::{
    Manifest, Staging, StoreError, Table, TableOptions, TableWriter, WriterOptions,
};

mod contexts;
mod error;
mod scan;
mod source;
mod spill;
pub mod synthetic;
#[cfg(test)]
mod tests;

pub use error::NmfError;

use contexts::top_contexts;
use scan::scan;
use source::ActivationsSource;
use spill::Spill;

/// Everything the stage needs besides the run directory.
#[derive(Debug, Clone)]
pub struct NmfStageOptions {
    pub spec: NmfSpec,
    /// Factorize in memory (X read once) when X takes at most this many bytes (4 per value);
    /// otherwise stream it from the Parquet files every iteration. 0 always streams.
    /// Default: 2 GiB.
    pub memory_budget: u64,
    /// Bytes of X per chunk handed to the solver (the streaming path's memory). Default: 64 MiB.
    pub chunk_bytes: usize,
    /// HALS sweeps over W and H per iteration (`NmfOptions::inner`). Default: 8.
    pub inner: usize,
    /// When streaming, keep the first pass's X in a scratch file in the run directory
    /// (`RUN_DIR/.staging-<pid>.tmp/x.f16` or `x.f32`: 2 or 4 bytes per value, deleted at the
    /// end) and read later passes from it instead of decoding Parquet again. Default: true.
    pub spill: bool,
}

impl NmfStageOptions {
    pub fn new(spec: NmfSpec) -> Self {
        NmfStageOptions {
            spec,
            memory_budget: 2 << 30,
            chunk_bytes: 64 << 20,
            inner: NmfOptions::default().inner,
            spill: true,
        }
    }
}

/// What [`run_nmf`] reports as it goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NmfEvent {
    /// The scan is done: X is `rows` x `cols`; each pass over it is `chunks` chunks.
    Scanned {
        rows: usize,
        cols: usize,
        chunks: usize,
        in_memory: bool,
    },
    /// One chunk was read from the Parquet files (the load when in memory; the first pass and
    /// every iteration when streaming).
    Chunk,
    /// Iteration `iteration` (from 1) is done.
    Iteration {
        iteration: usize,
        relative_error: f64,
    },
    /// The factorization is done; the tables are being written.
    Writing,
}

/// What the stage did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NmfReport {
    /// Rows of X: token positions factorized.
    pub rows: usize,
    /// Columns of X: neurons of the chosen layers (twice that with `split`).
    pub cols: usize,
    pub n_components: usize,
    /// The chosen layers, ascending, and their neuron counts.
    pub layers: Vec<usize>,
    pub neurons: Vec<usize>,
    pub negative: Negatives,
    /// X was read once into memory (full batch) rather than streamed every iteration.
    pub in_memory: bool,
    /// Bytes of X as f32.
    pub matrix_bytes: u64,
    /// Bytes of the scratch copy of X that streamed passes read (0: none; see
    /// [`NmfStageOptions::spill`]).
    pub spill_bytes: u64,
    pub iterations: usize,
    /// The last iteration's relative reconstruction error.
    pub relative_error: f64,
    /// Reading the keys, loading X (in memory only), the solver, writing the tables.
    pub scan_seconds: f64,
    pub load_seconds: f64,
    pub solve_seconds: f64,
    pub write_seconds: f64,
    /// Rows written per table.
    pub tables: Vec<(&'static str, u64)>,
}

/// The tables the stage writes (and replaces).
pub const NMF_TABLES: [&crate::store::TableDef; 4] = [
    &NMF_COMPONENTS,
    &NMF_FACTORS,
    &NMF_SUMMARY,
    &NMF_TOP_CONTEXTS,
];

/// The pipeline stage: [`run_nmf`] with the default memory budget and chunk size, and a progress
/// bar on stderr (iterations, the current relative error, chunks while reading) unless `quiet`
/// or stderr is not a terminal.
///
/// Negative indices in `spec.layers` count from the table's highest layer + 1 (see
/// [`resolve_layers`](super::stage_input::resolve_layers)); a caller that knows the model should
/// pass block indices (`Selection::List(spec.layers.resolve(n_layers)?)`) when the activations
/// table may not hold the last block.
pub fn run_stage(run_dir: &Path, spec: &NmfSpec, quiet: bool) -> Result<NmfReport> {
    run_stage_with(run_dir, &NmfStageOptions::new(spec.clone()), quiet)
}

/// [`run_stage`] with every option.
pub fn run_stage_with(run_dir: &Path, opts: &NmfStageOptions, quiet: bool) -> Result<NmfReport> {
    use indicatif::{ProgressBar, ProgressStyle};
    let max_iter = opts.spec.max_iter as u64;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(max_iter)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "nmf {bar:30} {pos}/{len} iterations  {msg}  [{elapsed_precise}, eta {eta}]",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message("scanning the activations table");
    let (mut chunk, mut chunks, mut in_memory, mut err) = (0usize, 1usize, false, None);
    let mut iteration = 0usize;
    let result = run_nmf(run_dir, opts, &mut |e| match e {
        NmfEvent::Scanned {
            rows,
            cols,
            chunks: c,
            in_memory: m,
        } => {
            (chunks, in_memory) = (c, m);
            bar.println(format!(
                "nmf: {rows} positions x {cols} columns, {} ({})",
                if m { "in memory" } else { "streamed" },
                human_bytes(rows as u64 * cols as u64 * 4)
            ));
        }
        NmfEvent::Chunk => {
            chunk = chunk % chunks + 1;
            let what = match (in_memory, err) {
                (true, _) => "loading".to_string(),
                (false, None) => "first pass".to_string(),
                (false, Some(e)) => format!("rel. error {e:.5}, reading"),
            };
            bar.set_message(format!("{what} chunk {chunk}/{chunks}"));
        }
        NmfEvent::Iteration {
            iteration: i,
            relative_error,
        } => {
            (iteration, err) = (i, Some(relative_error));
            bar.set_position(i as u64);
            bar.set_message(format!("rel. error {relative_error:.5}"));
        }
        NmfEvent::Writing => {
            bar.set_length(iteration as u64);
            bar.set_message(format!(
                "rel. error {:.5}, writing the tables",
                err.unwrap_or(f64::NAN)
            ));
        }
    });
    bar.finish_and_clear();
    let report = result?;
    // The tables' row counts go to the manifest (`nmf_rows`), so readers can check them like
    // the shards' tables.
    Manifest::record_nmf_rows(run_dir, &report.tables)?;
    Ok(report)
}

/// Factorizes the activations of the run in `run_dir` and writes the NMF tables into it.
///
/// Existing NMF tables are replaced only once all four new ones are complete: they are written
/// into a hidden staging folder and swapped in table by table (see `store::stage`); on any error
/// the run is left as it was. The manifest is not changed.
pub fn run_nmf(
    run_dir: &Path,
    opts: &NmfStageOptions,
    progress: &mut dyn FnMut(NmfEvent),
) -> Result<NmfReport> {
    let spec = &opts.spec;
    check_spec(spec)?;
    if !run_dir.is_dir() {
        return Err(StageInputError::NoRunDir {
            dir: run_dir.to_path_buf(),
        }
        .into());
    }
    let started = Instant::now();
    let scan = scan(run_dir, spec)?;
    if spec.top_contexts > 0 && table_parts(run_dir, &TOKENS)?.is_empty() {
        return Err(StageInputError::NoTable {
            dir: run_dir.to_path_buf(),
            table: TOKENS.name,
            needed: "for nmf_top_contexts (use --top-contexts 0 to skip them)",
        }
        .into());
    }
    let scan_seconds = started.elapsed().as_secs_f64();
    let (rows, cols, k) = (scan.keys.len(), scan.layout.cols(), spec.n_components);
    let matrix_bytes = rows as u64 * cols as u64 * 4;
    let chunk_rows = (opts.chunk_bytes / (cols * 4)).clamp(1, rows);
    let mut in_memory = matrix_bytes <= opts.memory_budget;
    let mut data = Vec::new();
    if in_memory && data.try_reserve_exact(rows * cols).is_err() {
        in_memory = false;
    }
    progress(NmfEvent::Scanned {
        rows,
        cols,
        chunks: rows.div_ceil(chunk_rows),
        in_memory,
    });
    // Output tables, and the spill file, go to a staging folder (removed on any error).
    let staging = Staging::create(run_dir)?;
    let progress = RefCell::new(progress);
    let tick = || (progress.borrow_mut())(NmfEvent::Chunk);
    let mut src = ActivationsSource {
        scan: &scan,
        chunk_rows,
        on_chunk: &tick,
        spill: (opts.spill && !in_memory)
            .then(|| Spill::new(staging.run_dir().root(), scan.values_f16)),
    };
    let nmf_opts = NmfOptions {
        n_components: k,
        max_iter: spec.max_iter,
        tol: spec.tolerance,
        seed: spec.seed,
        inner: opts.inner,
    };
    let mut elapsed = Vec::new();
    let mut on_iter = |it: usize, err: f64, since: Instant| {
        elapsed.push(since.elapsed().as_secs_f64());
        (progress.borrow_mut())(NmfEvent::Iteration {
            iteration: it + 1,
            relative_error: err,
        });
    };
    let load = Instant::now();
    let (result, load_seconds, solve_seconds) = if in_memory {
        src.for_each_chunk(&mut |_, c| {
            data.extend_from_slice(c);
            Ok(())
        })?;
        let load_seconds = load.elapsed().as_secs_f64();
        let mut mem = InMemory {
            data: &data,
            cols,
            chunk_rows: IN_MEMORY_CHUNK_ROWS.min(rows),
        };
        let solve = Instant::now();
        let r = nmf(&mut mem, &nmf_opts, &mut |it, e| on_iter(it, e, solve))?;
        (r, load_seconds, solve.elapsed().as_secs_f64())
    } else {
        let solve = Instant::now();
        let r = nmf(&mut src, &nmf_opts, &mut |it, e| on_iter(it, e, solve))?;
        (r, 0.0, solve.elapsed().as_secs_f64())
    };
    drop(data);
    let spill_bytes = src.spill.as_ref().map_or(0, |sp| sp.bytes);
    if let Some(sp) = src.spill.take() {
        let _ = std::fs::remove_file(&sp.path);
    }
    let progress = progress.into_inner();
    progress(NmfEvent::Writing);

    let write = Instant::now();
    let contexts = if spec.top_contexts > 0 {
        top_contexts(run_dir, &scan, &result.w, k, spec)?
    } else {
        Vec::new()
    };
    let run = staging.run_dir();
    let mut tables = Vec::new();
    let layout = &scan.layout;
    tables.push(write_table::<NmfComponents>(run, |w| {
        for j in 0..k {
            for c in 0..cols {
                let (layer, neuron, sign) = layout.column(c);
                w.append(NmfComponentsRow {
                    factor: j as i32,
                    layer,
                    neuron,
                    sign,
                    weight: result.h[j * cols + c],
                })?;
            }
        }
        Ok(())
    })?);
    tables.push(write_table::<NmfFactors>(run, |w| {
        for (r, &(doc, position)) in scan.keys.iter().enumerate() {
            for j in 0..k {
                w.append(NmfFactorsRow {
                    doc_id: &scan.docs[doc as usize],
                    position,
                    factor: j as i32,
                    value: result.w[r * k + j],
                })?;
            }
        }
        Ok(())
    })?);
    tables.push(write_table::<NmfSummary>(run, |w| {
        for (rec, &seconds) in result.history.iter().zip(&elapsed) {
            w.append(NmfSummaryRow {
                iteration: rec.iteration as i32 + 1,
                relative_error: rec.relative_error,
                seconds,
            })?;
        }
        Ok(())
    })?);
    tables.push(write_table::<NmfTopContexts>(run, |w| {
        for c in &contexts {
            w.append(NmfTopContextsRow {
                factor: c.factor as i32,
                rank: c.rank as i32,
                doc_id: &scan.docs[c.doc as usize],
                position: c.position,
                value: c.value,
                context: &c.context,
            })?;
        }
        Ok(())
    })?);
    staging.commit(&NMF_TABLES)?;
    let last = result.history.last().map_or(f64::NAN, |h| h.relative_error);
    Ok(NmfReport {
        rows,
        cols,
        n_components: k,
        layers: layout.layers.clone(),
        neurons: layout.widths.clone(),
        negative: layout.negatives,
        in_memory,
        matrix_bytes,
        spill_bytes,
        iterations: result.history.len(),
        relative_error: last,
        scan_seconds,
        load_seconds,
        solve_seconds,
        write_seconds: write.elapsed().as_secs_f64(),
        tables,
    })
}

/// Rows per chunk of the in-memory solver: X H^T and W^T X as a few large gemms.
const IN_MEMORY_CHUNK_ROWS: usize = 4096;

fn write_table<T: Table>(
    run: &crate::store::RunDir,
    fill: impl FnOnce(&mut TableWriter<T>) -> Result<(), StoreError>,
) -> Result<(&'static str, u64)> {
    let mut w = TableWriter::<T>::create(run, &TableOptions::default(), &WriterOptions::default())?;
    fill(&mut w)?;
    let s = w.finish()?;
    Ok((s.table, s.rows))
}

fn check_spec(spec: &NmfSpec) -> Result<(), NmfError> {
    if spec.n_components == 0 {
        return Err(NmfError::NoComponents);
    }
    if spec.max_iter == 0 {
        return Err(NmfError::NoIterations);
    }
    if !(spec.tolerance.is_finite() && spec.tolerance >= 0.0) {
        return Err(NmfError::Tolerance(spec.tolerance));
    }
    match spec.init {
        NmfInit::Random => Ok(()),
    }
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{:.1} KiB", b as f64 / 1024.0),
    }
}
