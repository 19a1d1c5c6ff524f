//! `tokenlens run`: a pipeline spec end to end. Reads the dataset streaming, cuts it into
//! *windows* of `batching.bucket_window` prompts (of this shard), sorts each window by length and
//! cuts it into batches, runs every batch through `process`, and writes the records into one
//! Parquet part per table and window. A compute thread and the writing thread overlap; at most
//! two batches are in flight, so memory does not grow with the dataset.
//!
//! Crash safety and resume: a window's parts are written under hidden temporary names and renamed
//! when complete; only then does the shard's status file (`shards/shard-I-of-N.json`) record the
//! window as done. `--resume` deletes whatever a killed window left behind and restarts at the
//! first window not recorded as done. Windows, batches and seeds depend only on the spec and the
//! shard, so a resumed run writes exactly the tables of an uninterrupted one.
//!
//! Sharding: shard I of N takes the prompts whose dataset index is I mod N; shards write side by
//! side into one run directory (part names carry the shard), so the union reads as one dataset.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use indicatif::ProgressBar;

use super::dataset::{self, Prompt};
use super::error::{Error, Result};
use super::process::{self, BatchOut, Doc, Plan};
use super::spec::{ModelDims, NeuronsSpec, NmfSpec, PipelineSpec, Selection};
use crate::model::Model;
use crate::store::StoreError;
use crate::store::manifest::{Manifest, SHARDS_DIR, Shard, ShardStatus};
use crate::store::writer::RunDir;

mod batches;
mod plan;
#[cfg(test)]
mod tests;
mod writers;

use batches::{DocMeta, window_batches};
use plan::{plan, watch_tokens};
use writers::Writers;

/// Parts per window and table: a window's part sequence numbers are window * this + k.
const PARTS_PER_WINDOW: u32 = 100;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub resume: bool,
    pub shard: Shard,
    pub quiet: bool,
}

/// What `run` returns (and prints).
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_dir: PathBuf,
    pub prompts: u64,
    pub tokens: u64,
    pub seconds: f64,
    pub rows: std::collections::BTreeMap<String, u64>,
}

/// Runs `spec` (one shard of it).
pub fn run(spec: &PipelineSpec, opts: &RunOptions) -> Result<RunReport> {
    let started = Instant::now();
    let shard = opts.shard;
    let prep = prepare(spec)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let root = spec.output.dir.clone();
    let (run_dir, mut status) = match open_run(spec, opts, &prep)? {
        Opened::Ready(run_dir, status) => (run_dir, status),
        Opened::AlreadyDone(report) => return Ok(report),
    };
    status.add_stage("load", load_seconds);
    let bar = progress_bar(opts.quiet, prep.prompts, shard, spec, &status);
    compute_and_write(spec, shard, &prep, &run_dir, &mut status, &bar)?;
    bar.finish_and_clear();
    // The NMF stage needs only the model's layer count. The model itself (its weights as f32:
    // ~0.5 GB for the default model) is released, and the freed heap returned to the OS, before the stage reads X into
    // memory (up to its 2 GiB budget): the two are never resident together, so a larger corpus
    // does not add X on top of the model.
    let nmf = nmf_spec(spec, prep.model.config.n_layers)?;
    let neurons = neurons_spec(spec, prep.model.config.n_layers)?;
    drop(prep);
    if nmf.is_some() || neurons.is_some() || spec.analyses.similarity.is_some() {
        crate::release_free_memory();
    }
    corpus_nmf(spec, opts, nmf, &mut status)?;
    corpus_neurons(spec, opts, neurons, &mut status)?;
    corpus_similarity(spec, opts, &mut status)?;
    finish(&root, shard, &mut status)?;
    Ok(RunReport {
        run_dir: root,
        prompts: status.prompts_done,
        tokens: status.tokens_done,
        seconds: started.elapsed().as_secs_f64(),
        rows: status.rows,
    })
}

/// Everything checked and loaded before the run directory is touched.
struct Prepared {
    /// Prompts in the dataset (every shard's).
    prompts: u64,
    model: Model,
    plan: Plan,
    watch_names: Vec<String>,
    /// The spec file's text, recorded in the manifest.
    spec_yaml: String,
}

/// Checks the inputs, reads and checks every dataset record (before anything is computed or
/// written), loads the model and checks the spec against it.
fn prepare(spec: &PipelineSpec) -> Result<Prepared> {
    spec.check_inputs(true)?;
    let summary = dataset::scan(&spec.dataset)?;
    let model_path = spec.model.path.load_path();
    let mut model = Model::load_as(
        &model_path,
        spec.model.tokenizer.as_deref(),
        spec.model.dtype,
    )?;
    model.set_compute(spec.model.compute);
    spec.validate_against(ModelDims::from(&model))?;
    let watch = watch_tokens(spec, &model)?;
    let watch_names: Vec<String> = watch.iter().map(|w| w.0.clone()).collect();
    let plan = plan(spec, &model, watch)?;
    let spec_yaml =
        std::fs::read_to_string(&spec.source).map_err(|e| crate::Error::io(&spec.source, e))?;
    Ok(Prepared {
        prompts: summary.prompts,
        model,
        plan,
        watch_names,
        spec_yaml,
    })
}

enum Opened {
    /// The run directory and this shard's status, recorded as running.
    Ready(RunDir, ShardStatus),
    /// `--resume` of a shard that is already done.
    AlreadyDone(RunReport),
}

/// The run directory, its manifest and this shard's status file: created (or, with `--resume`,
/// reopened and checked against the spec), with whatever a killed window left removed.
fn open_run(spec: &PipelineSpec, opts: &RunOptions, prep: &Prepared) -> Result<Opened> {
    let shard = opts.shard;
    let root = spec.output.dir.clone();
    let manifest_path = Manifest::path(&root);
    let status_path = shard.status_path(&root);
    let run_dir;
    let mut status;
    let holds_files = || std::fs::read_dir(&root).is_ok_and(|mut d| d.next().is_some());
    if opts.resume
        && shard.count == 1
        && !manifest_path.exists()
        && !spec.output.overwrite
        && holds_files()
    {
        // Nothing to resume, and starting afresh would refuse the files as strays (with
        // overwrite they are replaced: a run killed before its manifest starts over).
        return Err(Error::NothingToResume { dir: root });
    }
    if opts.resume && manifest_path.exists() {
        let m = Manifest::read(&root)?;
        if m.spec_yaml != prep.spec_yaml {
            return Err(Error::SpecChanged {
                dir: root,
                spec: spec.source.clone(),
            });
        }
        if m.shard_count != shard.count {
            return Err(Error::ShardCountChanged {
                dir: root,
                index: shard.index,
                count: shard.count,
                started: m.shard_count,
            });
        }
        run_dir = RunDir::open(&root)?;
        status = if status_path.exists() {
            ShardStatus::read(&status_path)?
        } else {
            ShardStatus::default()
        };
        if status.status == "done" {
            if !opts.quiet {
                eprintln!(
                    "shard {}/{} of {} is already done",
                    shard.index,
                    shard.count,
                    root.display()
                );
            }
            return Ok(Opened::AlreadyDone(RunReport {
                run_dir: root,
                prompts: status.prompts_done,
                tokens: status.tokens_done,
                seconds: 0.0,
                rows: status.rows,
            }));
        }
    } else {
        // Shards of one run share the directory and may start in any order, at the same time:
        // each creates it if missing and never clears it; the manifests they write are the same.
        run_dir = if shard.count > 1 {
            std::fs::create_dir_all(&root).map_err(|e| StoreError::io(&root, e))?;
            if manifest_path.exists() {
                let m = Manifest::read(&root)?;
                if m.spec_yaml != prep.spec_yaml || m.shard_count != shard.count {
                    return Err(Error::OtherRun { dir: root });
                }
            }
            RunDir::open(&root)?
        } else {
            RunDir::create(&root, spec.output.overwrite)?
        };
        status = ShardStatus::default();
        let model = &prep.model;
        let manifest = Manifest {
            tokenlens_version: env!("CARGO_PKG_VERSION").into(),
            spec_path: spec.source.clone(),
            spec_yaml: prep.spec_yaml.clone(),
            spec: serde_json::to_value(spec).unwrap_or_default(),
            model: serde_json::json!({
                "path": model.path, "format": model.format, "config": model.config,
                "bytes": std::fs::metadata(&model.path).map(|m| m.len()).ok(),
                "weights_dtype": crate::model::precision::dtype_name(model.dtype),
                "compute": model.compute.to_string(),
                // Whether the AMX tile unit ran the weight products (only bf16 ones use it).
                "amx": model.compute == crate::model::Compute::Bf16
                    && crate::numerics::amx::available(),
                "weight_bytes": model.weight_bytes(),
            }),
            shard_count: shard.count,
            tables: spec.tables().iter().map(|s| s.to_string()).collect(),
            shards: Default::default(),
            status: "running".into(),
            nmf_rows: None,
            neurons_rows: None,
            similarity_rows: None,
        };
        if !manifest_path.exists() {
            manifest.write(&root)?;
        }
    }
    let shards_dir = root.join(SHARDS_DIR);
    std::fs::create_dir_all(&shards_dir).map_err(|e| StoreError::io(&shards_dir, e))?;
    // Whatever a killed window left behind.
    run_dir.remove_parts_from(shard.index, status.windows_done * PARTS_PER_WINDOW as u64)?;
    status.status = "running".into();
    status.write(&status_path)?;
    Ok(Opened::Ready(run_dir, status))
}

/// The progress bar over this shard's prompts (hidden when quiet), starting after the windows
/// a resumed run already has.
fn progress_bar(
    quiet: bool,
    dataset_prompts: u64,
    shard: Shard,
    spec: &PipelineSpec,
    status: &ShardStatus,
) -> ProgressBar {
    let shard_prompts = (0..dataset_prompts)
        .filter(|i| i % shard.count as u64 == shard.index as u64)
        .count() as u64;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(shard_prompts);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} prompts  {per_sec}  ETA {eta}  {prefix}  {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b
    };
    let window = spec.batching.bucket_window.max(1);
    bar.set_position((status.windows_done * window as u64).min(shard_prompts));
    bar
}

/// Messages from the compute thread to the writer.
enum Msg {
    Batch(Vec<Doc>, Vec<DocMeta>, Box<BatchOut>),
    /// Seconds the compute thread spent in a stage outside `process` (tokenizing a window).
    Stage(&'static str, f64),
    /// Every batch of window `n` has been sent.
    WindowEnd(u64),
}

/// The windows not yet done through the model (a compute thread) and into the tables (this
/// thread), recording each finished window in the shard's status file.
fn compute_and_write(
    spec: &PipelineSpec,
    shard: Shard,
    prep: &Prepared,
    run_dir: &RunDir,
    status: &mut ShardStatus,
    bar: &ProgressBar,
) -> Result<()> {
    let status_path = shard.status_path(run_dir.root());
    let (tx, rx) = mpsc::sync_channel::<Result<Msg>>(1);
    let skip_windows = status.windows_done;
    let result = std::thread::scope(|scope| -> Result<()> {
        let stage_bar = bar.clone();
        scope.spawn(move || {
            compute(
                spec,
                shard,
                &prep.model,
                &prep.plan,
                skip_windows,
                tx,
                &stage_bar,
            )
        });
        let mut writers: Option<Writers> = None;
        let mut since = Instant::now();
        for msg in rx {
            match msg? {
                Msg::Stage(stage, s) => status.add_stage(stage, s),
                Msg::Batch(docs, meta, out) => {
                    for &(stage, s) in &out.stage_seconds {
                        status.add_stage(stage, s);
                    }
                    let t = Instant::now();
                    let w = match &mut writers {
                        Some(w) => w,
                        None => writers.insert(Writers::open(
                            run_dir,
                            spec,
                            shard,
                            status.windows_done,
                            &prep.plan.interventions,
                        )?),
                    };
                    w.append(
                        &docs,
                        &meta,
                        &out,
                        &prep.model,
                        &prep.watch_names,
                        &prep.plan.interventions,
                    )?;
                    status.add_stage("write", t.elapsed().as_secs_f64());
                    status.prompts_done += docs.len() as u64;
                    status.tokens_done += out.n_tokens as u64;
                    bar.inc(docs.len() as u64);
                    bar.set_prefix(format!("{} tokens", status.tokens_done));
                }
                Msg::WindowEnd(n) => {
                    debug_assert_eq!(n, status.windows_done);
                    if let Some(w) = writers.take() {
                        let t = Instant::now();
                        for (table, rows) in w.finish()? {
                            *status.rows.entry(table.to_string()).or_default() += rows;
                        }
                        status.add_stage("write", t.elapsed().as_secs_f64());
                    }
                    status.windows_done = n + 1;
                    status.seconds += since.elapsed().as_secs_f64();
                    since = Instant::now();
                    status.write(&status_path)?;
                }
            }
        }
        Ok(())
    });
    // Dropping unfinished writers removed their temporary files; the status file still says
    // which windows are complete.
    result
}

/// The compute thread: reads this shard's prompts in windows, skips the first `skip_windows`,
/// and sends every other window's batches through the model and the analyses, then the window's
/// end, showing the current stage on `bar`. Stops at the first error (sent) or when the writer
/// hangs up.
fn compute(
    spec: &PipelineSpec,
    shard: Shard,
    model: &Model,
    plan: &Plan,
    skip_windows: u64,
    tx: mpsc::SyncSender<Result<Msg>>,
    bar: &ProgressBar,
) {
    let on_stage = |s: &'static str| bar.set_message(s);
    let window = spec.batching.bucket_window.max(1);
    let send = |m: Result<Msg>| tx.send(m).is_ok();
    let mut prompts = match dataset::open(&spec.dataset) {
        Ok(p) => p.filter(|p| match p {
            Ok(p) => p.index % shard.count as u64 == shard.index as u64,
            Err(_) => true,
        }),
        Err(e) => {
            send(Err(e.into()));
            return;
        }
    };
    let mut w = 0u64;
    loop {
        let mut chunk: Vec<Prompt> = Vec::with_capacity(window);
        for p in prompts.by_ref() {
            match p {
                Ok(p) => chunk.push(p),
                Err(e) => {
                    send(Err(e.into()));
                    return;
                }
            }
            if chunk.len() == window {
                break;
            }
        }
        if chunk.is_empty() {
            return;
        }
        if w >= skip_windows {
            on_stage("tokenize");
            let t = Instant::now();
            let batches = window_batches(model, spec, plan, chunk);
            if !send(Ok(Msg::Stage("tokenize", t.elapsed().as_secs_f64()))) {
                return;
            }
            match batches {
                Ok(batches) => {
                    for (docs, meta) in batches {
                        let out = process::process(model, &docs, plan, &on_stage);
                        let ok = match out {
                            Ok(out) => send(Ok(Msg::Batch(docs, meta, Box::new(out)))),
                            Err(e) => {
                                send(Err(e.into()));
                                return;
                            }
                        };
                        if !ok {
                            return;
                        }
                    }
                }
                Err(e) => {
                    send(Err(e));
                    return;
                }
            }
            if !send(Ok(Msg::WindowEnd(w))) {
                return;
            }
        }
        w += 1;
    }
}

/// The spec's `analyses.nmf` with its layers resolved against the model's `n_layers` blocks
/// (negative layers count from the model's last block; the stage alone only knows the table's
/// layers); None without NMF.
fn nmf_spec(spec: &PipelineSpec, n_layers: usize) -> Result<Option<NmfSpec>> {
    let Some(nmf) = &spec.analyses.nmf else {
        return Ok(None);
    };
    let mut nmf = nmf.clone();
    nmf.layers = Selection::List(
        nmf.layers
            .resolve(n_layers)
            .map_err(|msg| Error::Selection {
                spec: spec.source.clone(),
                key: "analyses.nmf.layers",
                msg,
            })?
            .into_iter()
            .map(|l| l as i64)
            .collect(),
    );
    Ok(Some(nmf))
}

/// The spec's `analyses.neurons` with a list of layers resolved against the model's `n_layers`
/// blocks (as [`nmf_spec`]; `all` stays every layer the activations table has); None without it.
fn neurons_spec(spec: &PipelineSpec, n_layers: usize) -> Result<Option<NeuronsSpec>> {
    let Some(neurons) = &spec.analyses.neurons else {
        return Ok(None);
    };
    let mut neurons = neurons.clone();
    if neurons.layers == Selection::All {
        return Ok(Some(neurons));
    }
    neurons.layers = Selection::List(
        neurons
            .layers
            .resolve(n_layers)
            .map_err(|msg| Error::Selection {
                spec: spec.source.clone(),
                key: "analyses.neurons.layers",
                msg,
            })?
            .into_iter()
            .map(|l| l as i64)
            .collect(),
    );
    Ok(Some(neurons))
}

/// The neurons' top contexts and statistics (`neurons` from [`neurons_spec`]): like NMF, over
/// every shard's activations, so only an unsharded run does it here; a sharded run's last step
/// is `tokenlens neurons RUN_DIR` once every shard is done.
fn corpus_neurons(
    spec: &PipelineSpec,
    opts: &RunOptions,
    neurons: Option<NeuronsSpec>,
    status: &mut ShardStatus,
) -> Result<()> {
    let Some(neurons) = neurons else {
        return Ok(());
    };
    let root = &spec.output.dir;
    if opts.shard.count == 1 {
        let t = Instant::now();
        // Its row counts go to the manifest's `neurons_rows` (corpus tables, not a shard's).
        super::neurons_stage::run_stage(root, &neurons, opts.quiet)?;
        status.seconds += t.elapsed().as_secs_f64();
        status.add_stage("neurons", t.elapsed().as_secs_f64());
    } else if !opts.quiet {
        eprintln!(
            "note: analyses.neurons runs over the whole corpus: once every shard is done, run \
             `tokenlens neurons {}`",
            root.display()
        );
    }
    Ok(())
}

/// The layer similarity of the run's own layers (`analyses.similarity`): over every shard's
/// representations, so only an unsharded run does it here; a sharded run's last step is
/// `tokenlens compare RUN_DIR --out DIR --pairs all` once every shard is done.
fn corpus_similarity(
    spec: &PipelineSpec,
    opts: &RunOptions,
    status: &mut ShardStatus,
) -> Result<()> {
    let Some(command) = super::similarity_stage::compare_command(spec) else {
        return Ok(());
    };
    let root = &spec.output.dir;
    if opts.shard.count == 1 {
        let t = Instant::now();
        // Its row count goes to the manifest's `similarity_rows` (a corpus table).
        super::similarity_stage::run_stage(root, spec, opts.quiet)?;
        status.seconds += t.elapsed().as_secs_f64();
        status.add_stage("similarity", t.elapsed().as_secs_f64());
    } else if !opts.quiet {
        eprintln!(
            "note: analyses.similarity runs over the whole corpus: once every shard is done, run \
             `{command}` (it writes the table into the comparison directory DIR)"
        );
    }
    Ok(())
}

/// Corpus-level NMF (`nmf` from [`nmf_spec`]): it needs every prompt's activations, so only an
/// unsharded run does it here; a sharded run's last step is `tokenlens nmf RUN_DIR` once every
/// shard is done.
fn corpus_nmf(
    spec: &PipelineSpec,
    opts: &RunOptions,
    nmf: Option<NmfSpec>,
    status: &mut ShardStatus,
) -> Result<()> {
    let Some(nmf) = nmf else {
        return Ok(());
    };
    let root = &spec.output.dir;
    if opts.shard.count == 1 {
        let t = Instant::now();
        // Its row counts go to the manifest's `nmf_rows` (a corpus table, not a shard's).
        super::nmf_stage::run_stage(root, &nmf, opts.quiet)?;
        status.seconds += t.elapsed().as_secs_f64();
        status.add_stage("nmf", t.elapsed().as_secs_f64());
    } else if !opts.quiet {
        eprintln!(
            "note: analyses.nmf runs over the whole corpus: once every shard is done, run \
             `tokenlens nmf {}`",
            root.display()
        );
    }
    Ok(())
}

/// Records the shard as done, then copies every shard's status into the manifest (`done` once
/// all are).
fn finish(root: &Path, shard: Shard, status: &mut ShardStatus) -> Result<()> {
    status.status = "done".into();
    status.write(&shard.status_path(root))?;
    let _lock = crate::store::manifest::lock_run(root)?;
    let mut manifest = Manifest::read(root)?;
    manifest.shards.clear();
    let shards_dir = root.join(SHARDS_DIR);
    if let Ok(entries) = std::fs::read_dir(&shards_dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json")
                && let Ok(s) = ShardStatus::read(&e.path())
            {
                manifest.shards.insert(name, s);
            }
        }
    }
    let done = manifest
        .shards
        .values()
        .filter(|s| s.status == "done")
        .count();
    manifest.status = if done as u32 == manifest.shard_count {
        "done".into()
    } else {
        "running".into()
    };
    manifest.write(root)?;
    Ok(())
}
