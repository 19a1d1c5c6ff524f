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
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow_array::{Array, Float16Array, Float32Array, Int32Array, ListArray, StringArray};
use half::slice::HalfFloatSliceExt;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowSelection,
};
use serde::Serialize;

use super::spec::{NegativeHandling, NmfInit, NmfSpec, Positions, Selection};
use crate::analysis::nmf::{InMemory, Negatives, NmfOptions, RowSource, nmf};
use crate::error::{Error, Result};
use crate::store::schema::{
    NMF_COMPONENTS, NMF_FACTORS, NMF_SUMMARY, NMF_TOP_CONTEXTS, NmfComponents, NmfComponentsRow,
    NmfFactors, NmfFactorsRow, NmfSummary, NmfSummaryRow, NmfTopContexts, NmfTopContextsRow,
};
use crate::store::{Staging, StoreError, Table, TableOptions, TableWriter, WriterOptions};

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
/// [`resolve_layers`]); a caller that knows the model should pass block indices
/// (`Selection::List(spec.layers.resolve(n_layers)?)`) when the activations table may not hold
/// the last block.
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
    record_in_manifest(run_dir, &report)?;
    Ok(report)
}

/// Records the NMF tables' row counts in the run's manifest (`nmf_rows`), so readers can check
/// them like the shards' tables; a run directory without a manifest is left as it is.
fn record_in_manifest(run_dir: &Path, report: &NmfReport) -> Result<()> {
    let path = run_dir.join(crate::store::writer::MANIFEST);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let mut m: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Input(format!("{}: not a tokenlens manifest: {e}", path.display())))?;
    let rows: serde_json::Map<String, serde_json::Value> = report
        .tables
        .iter()
        .map(|(t, n)| (t.to_string(), (*n).into()))
        .collect();
    m["nmf_rows"] = rows.into();
    let tmp = run_dir.join(format!(".{}.tmp", crate::store::writer::MANIFEST));
    let bytes = serde_json::to_vec_pretty(&m).map_err(|e| Error::Input(e.to_string()))?;
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
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
        return Err(Error::Input(format!(
            "{}: no such run directory",
            run_dir.display()
        )));
    }
    let started = Instant::now();
    let scan = scan(run_dir, spec)?;
    if spec.top_contexts > 0 && table_parts(run_dir, "tokens")?.is_empty() {
        return Err(Error::Input(format!(
            "{}: no tokens table, needed for nmf_top_contexts (use --top-contexts 0 to skip them)",
            run_dir.display()
        )));
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

fn check_spec(spec: &NmfSpec) -> Result<()> {
    let bad = |m: String| Err(Error::Input(m));
    if spec.n_components == 0 {
        return bad("nmf.n_components must be at least 1".into());
    }
    if spec.max_iter == 0 {
        return bad("nmf.max_iter must be at least 1".into());
    }
    if !(spec.tolerance.is_finite() && spec.tolerance >= 0.0) {
        return bad(format!(
            "nmf.tolerance must be >= 0 (0: run max_iter iterations), got {}",
            spec.tolerance
        ));
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

/// `all`, or comma-separated items each a block index (negative from the end) or a half-open
/// range `a..b` (or `a..=b`) of non-negative indices: `0..30`, `0,5,-1`, `0..4,10`.
pub fn parse_layers(s: &str) -> std::result::Result<Selection, String> {
    let s = s.trim();
    if s == "all" {
        return Ok(Selection::All);
    }
    let mut v = Vec::new();
    for item in s.split(',').map(str::trim) {
        let index = |t: &str| {
            t.trim().parse::<i64>().map_err(|_| {
                format!("`{item}` is not a layer index or range (e.g. `0..30`, `0,5,-1`, `all`)")
            })
        };
        if let Some((a, b)) = item.split_once("..") {
            let (inclusive, b) = match b.strip_prefix('=') {
                Some(b) => (true, b),
                None => (false, b),
            };
            let (a, b) = (index(a)?, index(b)?);
            if a < 0 || b < 0 {
                return Err(format!(
                    "`{item}`: ranges take non-negative layers; list negative ones (`-2,-1`)"
                ));
            }
            let end = if inclusive { b + 1 } else { b };
            if end <= a {
                return Err(format!("`{item}` is an empty range"));
            }
            v.extend(a..end);
        } else {
            v.push(index(item)?);
        }
    }
    Ok(Selection::List(v))
}

/// The chosen layers (ascending) among those the activations table has. `all` is every layer of
/// the table; negative indices count from the table's highest layer + 1 (-1 is the highest).
pub fn resolve_layers(
    sel: &Selection,
    present: &BTreeSet<i32>,
    run_dir: &Path,
) -> Result<Vec<usize>> {
    let have = || {
        format!(
            "the activations table of {} has layers {:?}",
            run_dir.display(),
            present.iter().collect::<Vec<_>>()
        )
    };
    let Some(&max) = present.last() else {
        return Err(Error::Input(format!(
            "{}: the activations table has no rows",
            run_dir.display()
        )));
    };
    let mut out = match sel {
        Selection::All => present.iter().map(|&l| l as usize).collect::<Vec<_>>(),
        Selection::List(v) => {
            if v.is_empty() {
                return Err(Error::Input("nmf.layers lists no layer".into()));
            }
            let n = max as i64 + 1;
            let mut out = Vec::new();
            for &i in v {
                let j = if i < 0 { i + n } else { i };
                if j < 0 {
                    return Err(Error::Input(format!(
                        "nmf.layers includes layer {i}, out of range: {} (negative indices count \
                         from layer {n})",
                        have()
                    )));
                }
                if !present.contains(&(j as i32)) || j > i32::MAX as i64 {
                    let from = if i < 0 {
                        format!(" ({i} from the end)")
                    } else {
                        String::new()
                    };
                    return Err(Error::Input(format!(
                        "nmf.layers includes layer {j}{from} but {}",
                        have()
                    )));
                }
                if out.contains(&(j as usize)) {
                    return Err(Error::Input(format!("nmf.layers selects layer {j} twice")));
                }
                out.push(j as usize);
            }
            out
        }
    };
    out.sort_unstable();
    Ok(out)
}

/// The finished parts of a run's table, in file-name order; hidden `.part-*.tmp` files (parts
/// being written) are skipped. No folder: no parts.
pub fn table_parts(run_dir: &Path, table: &str) -> Result<Vec<PathBuf>> {
    let dir = run_dir.join(table);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut parts = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
        let e = e.map_err(|e| Error::io(&dir, e))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("part-") && name.ends_with(".parquet") {
            parts.push(e.path());
        }
    }
    parts.sort();
    Ok(parts)
}

fn pq(path: &Path, e: parquet::errors::ParquetError) -> Error {
    StoreError::parquet(path, e).into()
}

/// A reader of some columns of one part (and only the selected rows), and its row count.
fn open(
    path: &Path,
    columns: &[&str],
    selection: Option<RowSelection>,
    batch_rows: usize,
) -> Result<(ParquetRecordBatchReader, usize)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| pq(path, e))?;
    for c in columns {
        if b.schema().field_with_name(c).is_err() {
            return Err(Error::Input(format!(
                "{}: no column `{c}` (not a tokenlens table?)",
                path.display()
            )));
        }
    }
    let rows = b.metadata().file_metadata().num_rows() as usize;
    let mask = ProjectionMask::columns(b.parquet_schema(), columns.iter().copied());
    let mut b = b.with_projection(mask).with_batch_size(batch_rows.max(1));
    if let Some(s) = selection {
        b = b.with_row_selection(s);
    }
    Ok((b.build().map_err(|e| pq(path, e))?, rows))
}

/// A column of a batch as its Arrow array type.
fn column<'a, T: 'static>(
    batch: &'a arrow_array::RecordBatch,
    name: &str,
    path: &Path,
    expected: &str,
) -> Result<&'a T> {
    let c = batch
        .column_by_name(name)
        .ok_or_else(|| Error::Input(format!("{}: no column `{name}`", path.display())))?;
    if c.null_count() > 0 {
        return Err(Error::Input(format!(
            "{}: column `{name}` has nulls",
            path.display()
        )));
    }
    c.as_any().downcast_ref::<T>().ok_or_else(|| {
        Error::Input(format!(
            "{}: column `{name}` is {}, expected {expected}",
            path.display(),
            c.data_type()
        ))
    })
}

/// Where the columns of X come from.
#[derive(Debug, Clone)]
struct Layout {
    /// The chosen layers, ascending, their neuron counts and first column in a raw row.
    layers: Vec<usize>,
    widths: Vec<usize>,
    offsets: Vec<usize>,
    /// Values per raw row (sum of widths).
    raw: usize,
    negatives: Negatives,
}

impl Layout {
    fn cols(&self) -> usize {
        self.raw * self.negatives.width()
    }

    /// (layer, neuron, sign) of column `c` of X.
    fn column(&self, c: usize) -> (i32, i32, i8) {
        let (raw, sign) = if c < self.raw {
            (c, 1)
        } else {
            (c - self.raw, -1)
        };
        let li = self.offsets.partition_point(|&o| o <= raw) - 1;
        (
            self.layers[li] as i32,
            (raw - self.offsets[li]) as i32,
            sign,
        )
    }
}

/// The result of the scan: which rows of which parts make up X, and the key of each row of X.
struct Scan {
    /// Parts with at least one kept row, and the selection of their kept rows (None: all).
    files: Vec<(PathBuf, Option<RowSelection>)>,
    docs: Vec<String>,
    /// (index in `docs`, position) of each row of X.
    keys: Vec<(u32, i32)>,
    layout: Layout,
    /// Chosen index of each layer value (None: not chosen).
    chosen: Vec<Option<usize>>,
    /// Rows per record batch of the data pass (about 8 MB of values).
    batch_rows: usize,
    /// Every part stores `values` as float16 (so X is exact in float16 too).
    values_f16: bool,
}

/// Rows per record batch when reading keys only.
const KEY_BATCH_ROWS: usize = 64 * 1024;

/// `generations.prompt_tokens` by doc_id.
fn prompt_tokens(run_dir: &Path) -> Result<HashMap<String, i32>> {
    let parts = table_parts(run_dir, "generations")?;
    if parts.is_empty() {
        return Err(Error::Input(format!(
            "{}: no generations table, needed to tell prompt from generated positions",
            run_dir.display()
        )));
    }
    let mut map = HashMap::new();
    for p in &parts {
        let (reader, _) = open(p, &["doc_id", "prompt_tokens"], None, KEY_BATCH_ROWS)?;
        for b in reader {
            let b = b.map_err(|e| pq(p, e.into()))?;
            let docs = column::<StringArray>(&b, "doc_id", p, "string")?;
            let n = column::<Int32Array>(&b, "prompt_tokens", p, "int32")?;
            for i in 0..b.num_rows() {
                map.insert(docs.value(i).to_string(), n.value(i));
            }
        }
    }
    Ok(map)
}

/// One (doc_id, position) being collected by the scan.
struct Group {
    key: (u32, i32),
    file: usize,
    has: Vec<bool>,
    count: usize,
}

fn scan(run_dir: &Path, spec: &NmfSpec) -> Result<Scan> {
    let files = table_parts(run_dir, "activations")?;
    if files.is_empty() {
        return Err(Error::Input(format!(
            "{}: no activations table (no {}/activations/part-*.parquet); NMF factorizes the \
             activations a run recorded (analyses.activations)",
            run_dir.display(),
            run_dir.display()
        )));
    }
    // The layers the table has.
    let mut present = BTreeSet::new();
    let mut values_f16 = true;
    for f in &files {
        let file = File::open(f).map_err(|e| Error::io(f, e))?;
        let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| pq(f, e))?;
        values_f16 &= matches!(
            b.schema().field_with_name("values").map(|x| x.data_type()),
            Ok(arrow_schema::DataType::List(item)) if item.data_type() == &arrow_schema::DataType::Float16
        );
        let (reader, _) = open(f, &["layer"], None, KEY_BATCH_ROWS)?;
        let mut last = None;
        for b in reader {
            let b = b.map_err(|e| pq(f, e.into()))?;
            for &l in column::<Int32Array>(&b, "layer", f, "int32")?.values() {
                if last != Some(l) {
                    if l < 0 {
                        return Err(Error::Input(format!("{}: negative layer {l}", f.display())));
                    }
                    present.insert(l);
                    last = Some(l);
                }
            }
        }
    }
    let layers = resolve_layers(&spec.layers, &present, run_dir)?;
    let mut chosen = vec![None; *present.last().unwrap_or(&0) as usize + 1];
    for (i, &l) in layers.iter().enumerate() {
        chosen[l] = Some(i);
    }
    let prompts = match spec.positions {
        Positions::All => None,
        _ => Some(prompt_tokens(run_dir)?),
    };

    // The kept rows, their keys and checks.
    let n = layers.len();
    let mut docs: Vec<String> = Vec::new();
    let mut doc_index: HashMap<String, u32> = HashMap::new();
    let mut keys = Vec::new();
    let mut seen = HashSet::new();
    let mut kept = Vec::new();
    // First (file, row) of each chosen layer, to read its width.
    let mut first: Vec<Option<(usize, usize)>> = vec![None; n];
    let mut group: Option<Group> = None;
    let finish = |g: &Group, docs: &[String]| -> Result<()> {
        if g.count < n {
            let missing = (0..n).find(|&i| !g.has[i]).unwrap();
            return Err(Error::Input(format!(
                "{}: doc `{}` position {} has no row for layer {} (nmf.layers)",
                files[g.file].display(),
                docs[g.key.0 as usize],
                g.key.1,
                layers[missing]
            )));
        }
        Ok(())
    };
    for (fi, f) in files.iter().enumerate() {
        let (reader, total) = open(f, &["doc_id", "position", "layer"], None, KEY_BATCH_ROWS)?;
        let mut ranges: Vec<Range<usize>> = Vec::new();
        let mut row = 0usize;
        // The current document, its index and prompt length.
        let mut doc: Option<(String, u32, i32)> = None;
        for b in reader {
            let b = b.map_err(|e| pq(f, e.into()))?;
            let d = column::<StringArray>(&b, "doc_id", f, "string")?;
            let p = column::<Int32Array>(&b, "position", f, "int32")?;
            let l = column::<Int32Array>(&b, "layer", f, "int32")?;
            for i in 0..b.num_rows() {
                let r = row + i;
                let Some(ci) = chosen.get(l.value(i) as usize).copied().flatten() else {
                    continue;
                };
                let id = d.value(i);
                if doc.as_ref().is_none_or(|(s, _, _)| s != id) {
                    let index = match doc_index.get(id) {
                        Some(&x) => x,
                        None => {
                            let x = docs.len() as u32;
                            docs.push(id.to_string());
                            doc_index.insert(id.to_string(), x);
                            x
                        }
                    };
                    let plen = match &prompts {
                        None => 0,
                        Some(m) => *m.get(id).ok_or_else(|| {
                            Error::Input(format!(
                                "{}: doc `{id}` has activations but no row in the generations \
                                 table",
                                f.display()
                            ))
                        })?,
                    };
                    doc = Some((id.to_string(), index, plen));
                }
                let (_, index, plen) = doc.as_ref().unwrap();
                let pos = p.value(i);
                let keep = match spec.positions {
                    Positions::All => true,
                    Positions::Prompt => pos < *plen,
                    Positions::Generated => pos >= *plen,
                };
                if !keep {
                    continue;
                }
                let key = (*index, pos);
                if group.as_ref().is_none_or(|g| g.key != key) {
                    if let Some(g) = &group {
                        finish(g, &docs)?;
                    }
                    if !seen.insert(key) {
                        return Err(Error::Input(format!(
                            "{}: doc `{id}` position {pos} appears twice (apart) in the \
                             activations table",
                            f.display()
                        )));
                    }
                    group = Some(Group {
                        key,
                        file: fi,
                        has: vec![false; n],
                        count: 0,
                    });
                }
                let g = group.as_mut().unwrap();
                if g.has[ci] {
                    return Err(Error::Input(format!(
                        "{}: doc `{id}` position {pos} has two rows for layer {}",
                        f.display(),
                        layers[ci]
                    )));
                }
                g.has[ci] = true;
                g.count += 1;
                if g.count == n {
                    keys.push(key);
                }
                first[ci].get_or_insert((kept.len(), r));
                match ranges.last_mut() {
                    Some(last) if last.end == r => last.end = r + 1,
                    _ => ranges.push(r..r + 1),
                }
            }
            row += b.num_rows();
        }
        if !ranges.is_empty() {
            let all = ranges.len() == 1 && ranges[0] == (0..total);
            let sel =
                (!all).then(|| RowSelection::from_consecutive_ranges(ranges.into_iter(), total));
            kept.push((f.clone(), sel));
        }
    }
    if let Some(g) = &group {
        finish(g, &docs)?;
    }
    if keys.is_empty() {
        return Err(Error::Input(format!(
            "{}: the activations table has no rows for nmf.positions `{}`",
            run_dir.display(),
            match spec.positions {
                Positions::All => "all",
                Positions::Prompt => "prompt",
                Positions::Generated => "generated",
            }
        )));
    }

    // Neurons per chosen layer, from its first row.
    let mut widths = vec![0usize; n];
    for (ki, (f, _)) in kept.iter().enumerate() {
        let mut rows: Vec<(usize, usize)> = first
            .iter()
            .enumerate()
            .filter_map(|(ci, x)| x.filter(|x| x.0 == ki).map(|x| (x.1, ci)))
            .collect();
        if rows.is_empty() {
            continue;
        }
        rows.sort_unstable();
        let total = open(f, &["layer"], None, 1)?.1;
        let sel = RowSelection::from_consecutive_ranges(rows.iter().map(|&(r, _)| r..r + 1), total);
        let (reader, _) = open(f, &["values"], Some(sel), rows.len())?;
        let mut it = rows.iter();
        for b in reader {
            let b = b.map_err(|e| pq(f, e.into()))?;
            let v = column::<ListArray>(&b, "values", f, "a list of floats")?;
            for i in 0..b.num_rows() {
                let &(_, ci) = it.next().expect("one row per selected row");
                widths[ci] = v.value_length(i) as usize;
            }
        }
    }
    let mut offsets = Vec::with_capacity(n);
    let mut raw = 0;
    for (&w, &l) in widths.iter().zip(&layers) {
        if w == 0 {
            return Err(Error::Input(format!(
                "{}: layer {l} has no neurons in the activations table",
                run_dir.display()
            )));
        }
        offsets.push(raw);
        raw += w;
    }
    let negatives = match spec.negative {
        NegativeHandling::Clip => Negatives::Clip,
        NegativeHandling::Split => Negatives::Split,
    };
    let max_width = *widths.iter().max().unwrap();
    Ok(Scan {
        files: kept,
        docs,
        keys,
        layout: Layout {
            layers,
            widths,
            offsets,
            raw,
            negatives,
        },
        chosen,
        values_f16,
        batch_rows: ((8 << 20) / (max_width * 4)).clamp(16, 8192),
    })
}

/// X from the activations table: the scan's kept rows, `n` activation rows per row of X.
struct ActivationsSource<'a> {
    scan: &'a Scan,
    chunk_rows: usize,
    on_chunk: &'a dyn Fn(),
    spill: Option<Spill>,
}

/// X as written by its first pass, raw (float16 when the activations are, which is exact; else
/// float32), in a scratch file: later passes read it back instead of decoding the Parquet parts
/// again (~5x faster). If the file cannot be written (e.g. no space), passes keep reading Parquet.
struct Spill {
    path: PathBuf,
    f16: bool,
    /// The file holds all of X.
    ready: bool,
    /// Writing failed once: not tried again.
    failed: bool,
    bytes: u64,
}

/// The bytes of a slice of plain numbers (f32, f16), for raw file I/O in native byte order.
fn as_bytes<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: only called with f32 and f16 (a transparent u16): no padding, and the bytes are
    // read back as the same numbers by this process (the file never leaves the machine).
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

fn as_bytes_mut<T: Copy>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: as `as_bytes`; every bit pattern is a valid f32 or f16.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

impl Spill {
    fn new(dir: &Path, f16: bool) -> Self {
        Spill {
            path: dir.join(if f16 { "x.f16" } else { "x.f32" }),
            f16,
            ready: false,
            failed: false,
            bytes: 0,
        }
    }

    /// Appends a chunk; on failure the file is removed and `failed` set.
    fn write(
        &mut self,
        file: &mut Option<std::io::BufWriter<File>>,
        chunk: &[f32],
        half: &mut Vec<half::f16>,
    ) {
        use std::io::Write;
        let Some(w) = file else { return };
        let r = if self.f16 {
            half.resize(chunk.len(), half::f16::ZERO);
            half.convert_from_f32_slice(chunk);
            w.write_all(as_bytes(half))
        } else {
            w.write_all(as_bytes(chunk))
        };
        if r.is_err() {
            *file = None;
            self.failed = true;
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// Calls `f` on every chunk of X read back from the file. A thread reads (and converts) the
    /// next chunk while `f` works on this one: two chunk buffers.
    fn read(
        &self,
        rows: usize,
        cols: usize,
        chunk_rows: usize,
        on_chunk: &dyn Fn(),
        f: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()> {
        use std::io::Read;
        use std::sync::mpsc::sync_channel;
        let mut file = File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        type Full = std::io::Result<(usize, Vec<f32>)>;
        let (full_tx, full_rx) = sync_channel::<Full>(1);
        let (empty_tx, empty_rx) = sync_channel::<Vec<f32>>(2);
        for _ in 0..2 {
            empty_tx
                .send(Vec::with_capacity(chunk_rows * cols))
                .expect("the receiver is alive");
        }
        let f16 = self.f16;
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let mut half = vec![half::f16::ZERO; if f16 { chunk_rows * cols } else { 0 }];
                let mut first = 0;
                while first < rows {
                    let Ok(mut chunk) = empty_rx.recv() else {
                        return; // the consumer stopped (an error)
                    };
                    let n = (rows - first).min(chunk_rows) * cols;
                    chunk.resize(n, 0.0);
                    let r = if f16 {
                        let h = &mut half[..n];
                        file.read_exact(as_bytes_mut(h))
                            .map(|()| h.convert_to_f32_slice(&mut chunk))
                    } else {
                        file.read_exact(as_bytes_mut(&mut chunk))
                    };
                    let failed = r.is_err();
                    if full_tx.send(r.map(|()| (first, chunk))).is_err() || failed {
                        return;
                    }
                    first += chunk_rows;
                }
            });
            let mut done = 0;
            while done < rows {
                let (first, chunk) = full_rx
                    .recv()
                    .expect("the reader sends every chunk or an error")
                    .map_err(|e| Error::io(&self.path, e))?;
                on_chunk();
                f(first, &chunk)?;
                done = first + chunk.len() / cols;
                let _ = empty_tx.send(chunk);
            }
            Ok(())
        })
    }
}

impl RowSource for ActivationsSource<'_> {
    fn rows(&self) -> usize {
        self.scan.keys.len()
    }

    fn cols(&self) -> usize {
        self.scan.layout.cols()
    }

    fn for_each_chunk(&mut self, f: &mut dyn FnMut(usize, &[f32]) -> Result<()>) -> Result<()> {
        let s = self.scan;
        let lay = &s.layout;
        let n = lay.layers.len();
        let cols = lay.cols();
        if let Some(sp) = &self.spill
            && sp.ready
        {
            return sp.read(s.keys.len(), cols, self.chunk_rows, self.on_chunk, f);
        }
        let mut spill_file = match &mut self.spill {
            Some(sp) if !sp.failed => match File::create(&sp.path) {
                Ok(file) => Some(std::io::BufWriter::with_capacity(4 << 20, file)),
                Err(_) => {
                    sp.failed = true;
                    None
                }
            },
            _ => None,
        };
        let mut half_buf = Vec::new();
        let changed = |path: &Path, what: String| {
            Error::Input(format!(
                "{}: {what}: the activations table changed while being read",
                path.display()
            ))
        };
        let mut raw = vec![0f32; lay.raw];
        let mut has = vec![false; n];
        let mut filled = 0;
        let mut chunk: Vec<f32> = Vec::with_capacity(self.chunk_rows * cols);
        let (mut row, mut first) = (0usize, 0usize);
        for (path, sel) in &s.files {
            let (reader, _) = open(
                path,
                &["doc_id", "position", "layer", "values"],
                sel.clone(),
                s.batch_rows,
            )?;
            for b in reader {
                let b = b.map_err(|e| pq(path, e.into()))?;
                let d = column::<StringArray>(&b, "doc_id", path, "string")?;
                let p = column::<Int32Array>(&b, "position", path, "int32")?;
                let l = column::<Int32Array>(&b, "layer", path, "int32")?;
                let v = column::<ListArray>(&b, "values", path, "a list of floats")?;
                let f16 = v.values().as_any().downcast_ref::<Float16Array>();
                let f32s = v.values().as_any().downcast_ref::<Float32Array>();
                if (f16.is_none() && f32s.is_none()) || v.values().null_count() > 0 {
                    return Err(Error::Input(format!(
                        "{}: column `values` is {}, expected a list of non-null float32 or \
                         float16",
                        path.display(),
                        v.data_type()
                    )));
                }
                let offs = v.value_offsets();
                for i in 0..b.num_rows() {
                    let Some(&(doc, pos)) = s.keys.get(row) else {
                        return Err(changed(path, "more rows than scanned".into()));
                    };
                    let Some(ci) = s.chosen.get(l.value(i) as usize).copied().flatten() else {
                        return Err(changed(path, format!("layer {}", l.value(i))));
                    };
                    if p.value(i) != pos || d.value(i) != s.docs[doc as usize] || has[ci] {
                        return Err(changed(
                            path,
                            format!("doc `{}` position {}", d.value(i), p.value(i)),
                        ));
                    }
                    let (a, e) = (offs[i] as usize, offs[i + 1] as usize);
                    let w = lay.widths[ci];
                    if e - a != w {
                        return Err(Error::Input(format!(
                            "{}: doc `{}` position {pos} layer {} has {} values, the layer's \
                             first row {w}",
                            path.display(),
                            d.value(i),
                            lay.layers[ci],
                            e - a
                        )));
                    }
                    let dst = &mut raw[lay.offsets[ci]..lay.offsets[ci] + w];
                    match (f16, f32s) {
                        (Some(h), _) => h.values()[a..e].convert_to_f32_slice(dst),
                        (_, Some(x)) => dst.copy_from_slice(&x.values()[a..e]),
                        _ => unreachable!("checked above"),
                    }
                    has[ci] = true;
                    filled += 1;
                    if filled < n {
                        continue;
                    }
                    if let Some(bad) = raw.iter().position(|x| !x.is_finite()) {
                        let li = lay.offsets.partition_point(|&o| o <= bad) - 1;
                        return Err(Error::Input(format!(
                            "{}: doc `{}` position {pos} layer {} neuron {} is {}",
                            path.display(),
                            d.value(i),
                            lay.layers[li],
                            bad - lay.offsets[li],
                            raw[bad]
                        )));
                    }
                    lay.negatives.apply(&raw, &mut chunk);
                    has.fill(false);
                    filled = 0;
                    row += 1;
                    if row - first == self.chunk_rows {
                        if let Some(sp) = &mut self.spill {
                            sp.write(&mut spill_file, &chunk, &mut half_buf);
                        }
                        (self.on_chunk)();
                        f(first, &chunk)?;
                        chunk.clear();
                        first = row;
                    }
                }
            }
        }
        if row != s.keys.len() || filled != 0 {
            let path = &s.files.last().expect("at least one part").0;
            return Err(changed(path, "fewer rows than scanned".into()));
        }
        if !chunk.is_empty() {
            if let Some(sp) = &mut self.spill {
                sp.write(&mut spill_file, &chunk, &mut half_buf);
            }
            (self.on_chunk)();
            f(first, &chunk)?;
        }
        if let (Some(sp), Some(w)) = (&mut self.spill, spill_file) {
            // Flushed, not synced: a scratch file that nothing reads after a crash.
            match w.into_inner() {
                Ok(_) => {
                    sp.ready = true;
                    sp.bytes = (s.keys.len() * cols * if sp.f16 { 2 } else { 4 }) as u64;
                }
                Err(_) => {
                    sp.failed = true;
                    let _ = std::fs::remove_file(&sp.path);
                }
            }
        }
        Ok(())
    }
}

/// One row of `nmf_top_contexts`.
struct TopContext {
    factor: usize,
    rank: usize,
    doc: u32,
    position: i32,
    value: f32,
    context: String,
}

/// For each factor, the `top_contexts` rows of X with the largest positive W (ties: earlier
/// row first), and the text of the `context_tokens` tokens before each and the token at it.
fn top_contexts(
    run_dir: &Path,
    scan: &Scan,
    w: &[f32],
    k: usize,
    spec: &NmfSpec,
) -> Result<Vec<TopContext>> {
    let mut out = Vec::new();
    for j in 0..k {
        let mut v: Vec<(f32, usize)> = (0..scan.keys.len())
            .map(|r| (w[r * k + j], r))
            .filter(|x| x.0 > 0.0)
            .collect();
        let order = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if v.len() > spec.top_contexts {
            v.select_nth_unstable_by(spec.top_contexts - 1, order);
            v.truncate(spec.top_contexts);
        }
        v.sort_unstable_by(order);
        for (rank, (value, r)) in v.into_iter().enumerate() {
            let (doc, position) = scan.keys[r];
            out.push(TopContext {
                factor: j,
                rank: rank + 1,
                doc,
                position,
                value,
                context: String::new(),
            });
        }
    }
    // The tokens needed, read from the tokens table.
    let ctx = spec.context_tokens as i32;
    let mut needed: HashMap<u32, HashSet<i32>> = HashMap::new();
    for c in &out {
        needed
            .entry(c.doc)
            .or_default()
            .extend((c.position - ctx).max(0)..=c.position);
    }
    let wanted: HashMap<&str, u32> = needed
        .keys()
        .map(|&d| (scan.docs[d as usize].as_str(), d))
        .collect();
    let mut text: HashMap<(u32, i32), String> = HashMap::new();
    for f in &table_parts(run_dir, "tokens")? {
        let (reader, _) = open(f, &["doc_id", "position", "token"], None, KEY_BATCH_ROWS)?;
        for b in reader {
            let b = b.map_err(|e| pq(f, e.into()))?;
            let d = column::<StringArray>(&b, "doc_id", f, "string")?;
            let p = column::<Int32Array>(&b, "position", f, "int32")?;
            let t = column::<StringArray>(&b, "token", f, "string")?;
            for i in 0..b.num_rows() {
                if let Some(&doc) = wanted.get(d.value(i))
                    && needed[&doc].contains(&p.value(i))
                {
                    text.insert((doc, p.value(i)), t.value(i).to_string());
                }
            }
        }
    }
    for c in &mut out {
        for pos in (c.position - ctx).max(0)..=c.position {
            if let Some(t) = text.get(&(c.doc, pos)) {
                c.context.push_str(t);
            }
        }
    }
    Ok(out)
}

pub mod synthetic;

#[cfg(test)]
mod tests;
