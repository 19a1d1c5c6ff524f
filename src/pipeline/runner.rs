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

use serde::{Deserialize, Serialize};

use super::dataset::{self, DatasetError, Prompt};
use super::process::{self, ActivationsPlan, AttentionPlan, BatchOut, Doc, LensPlan, Plan};
use super::spec::{
    FloatDtype, IgRule, ModelDims, PipelineSpec, Positions, SaliencyMethod, TooLong,
};
use crate::analysis::saliency::{Method, Rule, SaliencyOptions};
use crate::error::{Error, Result};
use crate::model::generate::{Decoding, GenerateOptions};
use crate::model::{LensNorm, Model};
use crate::store::schema::{self as tables, Precision, Table, TableOptions};
use crate::store::writer::{MANIFEST, RunDir, SHARDS_DIR, TableWriter, WriterOptions};

/// Parts per window and table: a window's part sequence numbers are window * this + k.
const PARTS_PER_WINDOW: u32 = 100;

/// Which slice of the dataset this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parses `I/N` (0 <= I < N).
    pub fn parse(s: &str) -> Result<Shard> {
        let bad = || Error::Input(format!("--shard `{s}`: expected I/N with 0 <= I < N"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<u32>().map_err(|_| bad())?,
            n.trim().parse::<u32>().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    fn file_name(self) -> String {
        format!("shard-{:03}-of-{:03}.json", self.index, self.count)
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub resume: bool,
    pub shard: Shard,
    pub quiet: bool,
}

/// A shard's progress, `RUN_DIR/shards/shard-I-of-N.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ShardStatus {
    /// `running` or `done`.
    pub status: String,
    /// Windows whose parts are complete; a resumed run starts after them.
    pub windows_done: u64,
    pub prompts_done: u64,
    pub tokens_done: u64,
    /// Rows written per table.
    pub rows: std::collections::BTreeMap<String, u64>,
    /// Compute + write time of this shard, summed over its (resumed) runs.
    pub seconds: f64,
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

/// The spec as the engine's options.
fn plan(spec: &PipelineSpec, model: &Model, watch: Vec<(String, u32)>) -> Result<Plan> {
    let n = model.config.n_layers;
    let h = model.config.n_heads;
    let sel = |s: &super::spec::Selection, n: usize, what: &str| {
        s.resolve(n)
            .map_err(|e| Error::Input(format!("{}: {what}: {e}", spec.source.display())))
    };
    let g = &spec.generation;
    let a = &spec.analyses;
    let norm = |final_norm: bool| {
        if final_norm {
            LensNorm::FinalNorm
        } else {
            LensNorm::Raw
        }
    };
    let positions = |p: Positions| match p {
        Positions::All => process::PositionSet::All,
        Positions::Prompt => process::PositionSet::Prompt,
        Positions::Generated => process::PositionSet::Generated,
    };
    Ok(Plan {
        generation: GenerateOptions {
            max_new_tokens: g.max_new_tokens,
            decoding: if g.temperature == 0.0 {
                Decoding::Greedy
            } else {
                Decoding::Sample {
                    temperature: g.temperature,
                    top_k: g.top_k,
                    top_p: g.top_p,
                }
            },
            stop_at_eos: g.stop_at_eos,
        },
        predictions: a.predictions.as_ref().map(|p| p.top_k),
        lens: a.lens.as_ref().map(|l| LensPlan {
            norm: norm(l.final_norm),
            top_k: l.top_k,
        }),
        watch_norm: norm(a.watch.as_ref().is_none_or(|w| w.final_norm)),
        watch,
        saliency: a.saliency.as_ref().map(|s| SaliencyOptions {
            methods: s
                .methods
                .iter()
                .map(|m| match m {
                    SaliencyMethod::Gradient => Method::Gradient,
                    SaliencyMethod::GradXInput => Method::GradXInput,
                    SaliencyMethod::IntegratedGradients => Method::IntegratedGradients,
                })
                .collect(),
            n_steps: s.n_steps,
            rule: match s.rule {
                IgRule::GaussLegendre => Rule::GaussLegendre,
                IgRule::Trapezoid => Rule::Trapezoid,
            },
            chunk_tokens: s.chunk_tokens,
        }),
        activations: match &a.activations {
            Some(x) => Some(ActivationsPlan {
                layers: sel(&x.layers, n, "analyses.activations.layers")?,
                positions: positions(x.positions),
            }),
            None => None,
        },
        attention: match &a.attention {
            Some(x) => Some(AttentionPlan {
                layers: sel(&x.layers, n, "analyses.attention.layers")?,
                heads: sel(&x.heads, h, "analyses.attention.heads")?,
                rollout: x.rollout,
            }),
            None => None,
        },
    })
}

/// Watched tokens as (text, id); each must be one token (checked by `validate_watch_tokens`).
fn watch_tokens(spec: &PipelineSpec, model: &Model) -> Result<Vec<(String, u32)>> {
    let special = model.tokenizer.encode("")?;
    let encode = |t: &str| -> Result<Vec<u32>> {
        let ids = model.tokenizer.encode(t)?;
        Ok(match ids.strip_prefix(special.as_slice()) {
            Some(rest) => rest.to_vec(),
            None => ids,
        })
    };
    spec.validate_watch_tokens(encode)?;
    let Some(w) = &spec.analyses.watch else {
        return Ok(vec![]);
    };
    w.tokens
        .iter()
        .map(|t| Ok((t.clone(), encode(t)?[0])))
        .collect()
}

/// The run-level manifest (`manifest.json`): what was asked for and with what. Shard progress
/// lives in the shard status files and is copied into `shards` here when a shard finishes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    tokenlens_version: String,
    spec_path: PathBuf,
    /// The spec file's text, verbatim; `--resume` refuses a changed spec.
    spec_yaml: String,
    spec: serde_json::Value,
    model: serde_json::Value,
    shard_count: u32,
    tables: Vec<String>,
    /// Shard file name -> status, as of the last shard to finish.
    shards: std::collections::BTreeMap<String, ShardStatus>,
    /// `done` once every shard is.
    status: String,
    /// Rows of the NMF tables (`tokenlens nmf` or the pipeline's NMF stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nmf_rows: Option<std::collections::BTreeMap<String, u64>>,
}

fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Input(format!("{}: not a tokenlens run file: {e}", path.display())))
}

/// One open part per enabled table, for one window.
struct Writers {
    tokens: TableWriter<tables::Tokens>,
    generations: TableWriter<tables::Generations>,
    predictions: Option<TableWriter<tables::Predictions>>,
    lens: Option<TableWriter<tables::Lens>>,
    lens_topk: Option<TableWriter<tables::LensTopk>>,
    watch: Option<TableWriter<tables::Watch>>,
    saliency: Option<TableWriter<tables::Saliency>>,
    completeness: Option<TableWriter<tables::SaliencyCompleteness>>,
    activations: Option<TableWriter<tables::Activations>>,
    attention: Option<TableWriter<tables::Attention>>,
    rollout: Option<TableWriter<tables::AttentionRollout>>,
}

impl Writers {
    fn open(run: &RunDir, spec: &PipelineSpec, shard: Shard, window: u64) -> Result<Writers> {
        let names = spec.tables();
        let has = |n: &str| names.contains(&n);
        let mut wopts = WriterOptions {
            shard: shard.index,
            ..WriterOptions::default()
        };
        let topts = TableOptions::default();
        let seq = u32::try_from(window)
            .ok()
            .and_then(|w| w.checked_mul(PARTS_PER_WINDOW))
            .ok_or_else(|| Error::Input("too many windows for part numbering".into()))?;
        fn open_t<T: Table>(
            run: &RunDir,
            t: &TableOptions,
            w: &WriterOptions,
            seq: u32,
        ) -> Result<TableWriter<T>> {
            Ok(TableWriter::<T>::create(run, t, w)?.starting_at(seq))
        }
        let opt = |on: bool| on;
        let act_opts = TableOptions {
            list_float: match spec.analyses.activations.as_ref().map(|a| a.dtype) {
                Some(FloatDtype::F16) => Precision::F16,
                _ => Precision::F32,
            },
        };
        wopts.shard = shard.index;
        Ok(Writers {
            tokens: open_t(run, &topts, &wopts, seq)?,
            generations: open_t(run, &topts, &wopts, seq)?,
            predictions: opt(has("predictions"))
                .then(|| open_t(run, &topts, &wopts, seq))
                .transpose()?,
            lens: opt(has("lens"))
                .then(|| open_t(run, &topts, &wopts, seq))
                .transpose()?,
            lens_topk: opt(has("lens_topk"))
                .then(|| open_t(run, &topts, &wopts, seq))
                .transpose()?,
            watch: opt(has("watch"))
                .then(|| open_t(run, &topts, &wopts, seq))
                .transpose()?,
            saliency: opt(has("saliency"))
                .then(|| open_t(run, &topts, &wopts, seq))
                .transpose()?,
            completeness: opt(has("saliency_completeness"))
                .then(|| open_t(run, &topts, &wopts, seq))
                .transpose()?,
            activations: opt(has("activations"))
                .then(|| open_t(run, &act_opts, &wopts, seq))
                .transpose()?,
            attention: opt(has("attention"))
                .then(|| open_t(run, &topts, &wopts, seq))
                .transpose()?,
            rollout: opt(has("attention_rollout"))
                .then(|| open_t(run, &topts, &wopts, seq))
                .transpose()?,
        })
    }

    /// Appends one batch's records.
    fn append(
        &mut self,
        docs: &[Doc],
        meta: &[DocMeta],
        out: &BatchOut,
        model: &Model,
        watch: &[String],
    ) -> Result<()> {
        let id = |i: usize| docs[i].id.as_str();
        let text = |t: u32| model.tokenizer.token_text(t);
        for t in &out.tokens {
            self.tokens.append(tables::TokensRow {
                doc_id: id(t.doc),
                position: t.position as i32,
                token_id: t.token_id as i32,
                token: &t.token,
                is_generated: t.is_generated,
            })?;
        }
        for g in &out.generations {
            self.generations.append(tables::GenerationsRow {
                doc_id: id(g.doc),
                index: meta[g.doc].index as i64,
                prompt: &docs[g.doc].text,
                output_text: &g.output_text,
                prompt_tokens: g.prompt_tokens as i32,
                generated_tokens: g.generated_tokens as i32,
                stopped_at_eos: g.stopped_at_eos,
                truncated_tokens: meta[g.doc].truncated as i32,
            })?;
        }
        if let Some(w) = &mut self.predictions {
            for c in &out.predictions {
                w.append(tables::PredictionsRow {
                    doc_id: id(c.doc),
                    position: c.position as i32,
                    rank: c.rank as i32,
                    token_id: c.token_id as i32,
                    token: &text(c.token_id),
                    prob: c.prob,
                })?;
            }
        }
        if let Some(w) = &mut self.lens {
            for r in &out.lens {
                w.append(tables::LensRow {
                    doc_id: id(r.doc),
                    position: r.position as i32,
                    layer: r.layer as i32,
                    token_id: r.token_id as i32,
                    rank: r.rank as i32,
                    prob: r.prob,
                })?;
            }
        }
        if let Some(w) = &mut self.lens_topk {
            for c in &out.lens_topk {
                w.append(tables::LensTopkRow {
                    doc_id: id(c.doc),
                    position: c.position as i32,
                    layer: c.layer.unwrap_or(0) as i32,
                    rank: c.rank as i32,
                    token_id: c.token_id as i32,
                    token: &text(c.token_id),
                    prob: c.prob,
                })?;
            }
        }
        if let Some(w) = &mut self.watch {
            for r in &out.watch {
                w.append(tables::WatchRow {
                    doc_id: id(r.doc),
                    position: r.position as i32,
                    layer: r.layer as i32,
                    token_id: r.token_id as i32,
                    token: &watch[r.watch.unwrap_or(0) as usize],
                    rank: r.rank as i32,
                    prob: r.prob,
                })?;
            }
        }
        if let Some(w) = &mut self.saliency {
            for r in &out.saliency {
                w.append(tables::SaliencyRow {
                    doc_id: id(r.doc),
                    method: r.method.name(),
                    target_position: r.target_position as i32,
                    source_position: r.source_position as i32,
                    score: r.score,
                    raw: r.raw,
                    signed: r.signed,
                })?;
            }
        }
        if let Some(w) = &mut self.completeness {
            for c in &out.completeness {
                w.append(tables::SaliencyCompletenessRow {
                    doc_id: id(c.doc),
                    target_position: c.target_position as i32,
                    target_prob: c.target_prob,
                    baseline_prob: c.baseline_prob,
                    attribution_sum: c.attribution_sum,
                    error: c.error,
                })?;
            }
        }
        if let Some(w) = &mut self.activations {
            for a in &out.activations {
                w.append(tables::ActivationsRow {
                    doc_id: id(a.doc),
                    position: a.position as i32,
                    layer: a.layer as i32,
                    values: &a.values,
                })?;
            }
        }
        if let Some(w) = &mut self.attention {
            for a in &out.attention {
                w.append(tables::AttentionRow {
                    doc_id: id(a.doc),
                    layer: a.layer as i32,
                    head: a.head.unwrap_or(0) as i32,
                    query_position: a.query_position as i32,
                    weights: &a.weights,
                })?;
            }
        }
        if let Some(w) = &mut self.rollout {
            for a in &out.rollout {
                w.append(tables::AttentionRolloutRow {
                    doc_id: id(a.doc),
                    layer: a.layer as i32,
                    query_position: a.query_position as i32,
                    weights: &a.weights,
                })?;
            }
        }
        Ok(())
    }

    /// Closes every part (renaming it into place); returns rows per table.
    fn finish(self) -> Result<Vec<(&'static str, u64)>> {
        let mut rows = vec![];
        macro_rules! fin {
            ($w:expr) => {
                let s = $w.finish()?;
                rows.push((s.table, s.rows));
            };
        }
        fin!(self.tokens);
        fin!(self.generations);
        for w in [self.predictions].into_iter().flatten() {
            fin!(w);
        }
        for w in [self.lens].into_iter().flatten() {
            fin!(w);
        }
        for w in [self.lens_topk].into_iter().flatten() {
            fin!(w);
        }
        for w in [self.watch].into_iter().flatten() {
            fin!(w);
        }
        for w in [self.saliency].into_iter().flatten() {
            fin!(w);
        }
        for w in [self.completeness].into_iter().flatten() {
            fin!(w);
        }
        for w in [self.activations].into_iter().flatten() {
            fin!(w);
        }
        for w in [self.attention].into_iter().flatten() {
            fin!(w);
        }
        for w in [self.rollout].into_iter().flatten() {
            fin!(w);
        }
        Ok(rows)
    }
}

/// Per-document facts the tables need beyond `Doc`.
#[derive(Debug, Clone)]
struct DocMeta {
    index: u64,
    truncated: usize,
}

/// Messages from the compute thread to the writer.
enum Msg {
    Batch(Vec<Doc>, Vec<DocMeta>, Box<BatchOut>),
    /// Every batch of window `n` has been sent.
    WindowEnd(u64),
}

/// Removes what a killed window of `shard` left in the table folders: temporary files, and parts
/// numbered at or after window `from`.
fn clean_partial(run: &Path, shard: Shard, from: u64) -> Result<()> {
    let prefix = format!("part-{:03}-", shard.index);
    let tmp_prefix = format!(".part-{:03}-", shard.index);
    for def in tables::ALL_TABLES {
        let dir = run.join(def.name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let e = e.map_err(|x| Error::io(&dir, x))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let stale = if name.starts_with(&tmp_prefix) {
                true
            } else if let Some(rest) = name.strip_prefix(&prefix) {
                let seq: u64 = rest
                    .trim_end_matches(".parquet")
                    .parse()
                    .unwrap_or(u64::MAX);
                seq >= from * PARTS_PER_WINDOW as u64
            } else {
                false
            };
            if stale {
                std::fs::remove_file(e.path()).map_err(|x| Error::io(e.path(), x))?;
            }
        }
    }
    Ok(())
}

/// Runs `spec` (one shard of it).
pub fn run(spec: &PipelineSpec, opts: &RunOptions) -> Result<RunReport> {
    let started = Instant::now();
    let shard = opts.shard;
    spec.check_inputs(true)?;
    // Every record is read and checked before anything is computed or written.
    let summary = dataset::scan(&spec.dataset)?;
    let model_path = spec.model.path.load_path();
    let model = Model::load(&model_path, spec.model.tokenizer.as_deref())?;
    spec.validate_against(ModelDims::from(&model.config))?;
    let watch = watch_tokens(spec, &model)?;
    let watch_names: Vec<String> = watch.iter().map(|w| w.0.clone()).collect();
    let plan = plan(spec, &model, watch)?;
    let spec_yaml =
        std::fs::read_to_string(&spec.source).map_err(|e| Error::io(&spec.source, e))?;

    // ---- run directory, manifest, shard status ----
    let root = spec.output.dir.clone();
    let manifest_path = root.join(MANIFEST);
    let shards_dir = root.join(SHARDS_DIR);
    let status_path = shards_dir.join(shard.file_name());
    let run_dir;
    let mut status;
    if opts.resume && manifest_path.exists() {
        let m: Manifest = read_json(&manifest_path)?;
        if m.spec_yaml != spec_yaml {
            return Err(Error::Input(format!(
                "{}: cannot resume: the pipeline spec changed since this run started ({}); \
                 run without --resume (and output.overwrite: true) to start over",
                root.display(),
                spec.source.display()
            )));
        }
        if m.shard_count != shard.count {
            return Err(Error::Input(format!(
                "{}: cannot resume shard {}/{}: the run was started with {} shard(s)",
                root.display(),
                shard.index,
                shard.count,
                m.shard_count
            )));
        }
        run_dir = RunDir::open(&root)?;
        status = if status_path.exists() {
            read_json::<ShardStatus>(&status_path)?
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
            return Ok(RunReport {
                run_dir: root,
                prompts: status.prompts_done,
                tokens: status.tokens_done,
                seconds: 0.0,
                rows: status.rows,
            });
        }
    } else {
        // Shards of one run share the directory and may start in any order, at the same time:
        // each creates it if missing and never clears it; the manifests they write are the same.
        run_dir = if shard.count > 1 {
            std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
            if manifest_path.exists() {
                let m: Manifest = read_json(&manifest_path)?;
                if m.spec_yaml != spec_yaml || m.shard_count != shard.count {
                    return Err(Error::Input(format!(
                        "{}: holds a run of another spec or shard count; choose another \
                         output.dir, or remove it",
                        root.display()
                    )));
                }
            }
            RunDir::open(&root)?
        } else {
            RunDir::create(&root, spec.output.overwrite)?
        };
        status = ShardStatus::default();
        let manifest = Manifest {
            tokenlens_version: env!("CARGO_PKG_VERSION").into(),
            spec_path: spec.source.clone(),
            spec_yaml: spec_yaml.clone(),
            spec: serde_json::to_value(spec).unwrap_or_default(),
            model: serde_json::json!({
                "path": model.path, "format": model.format, "config": model.config,
                "bytes": std::fs::metadata(&model.path).map(|m| m.len()).ok(),
            }),
            shard_count: shard.count,
            tables: spec.tables().iter().map(|s| s.to_string()).collect(),
            shards: Default::default(),
            status: "running".into(),
            nmf_rows: None,
        };
        if !manifest_path.exists() {
            write_json_atomic(&manifest_path, &manifest)?;
        }
    }
    std::fs::create_dir_all(&shards_dir).map_err(|e| Error::io(&shards_dir, e))?;
    clean_partial(&root, shard, status.windows_done)?;
    status.status = "running".into();
    write_json_atomic(&status_path, &status)?;

    // ---- progress ----
    let shard_prompts = (0..summary.prompts)
        .filter(|i| i % shard.count as u64 == shard.index as u64)
        .count() as u64;
    let bar = if opts.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(shard_prompts);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} prompts  {per_sec}  ETA {eta}  {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b
    };
    let window = spec.batching.bucket_window.max(1);
    let skip_windows = status.windows_done;
    bar.set_position((skip_windows * window as u64).min(shard_prompts));

    // ---- compute thread -> writer (this thread) ----
    let (tx, rx) = mpsc::sync_channel::<Result<Msg>>(1);
    let result = std::thread::scope(|scope| -> Result<()> {
        let model = &model;
        let plan = &plan;
        scope.spawn(move || {
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
                    match window_batches(model, spec, plan, chunk) {
                        Ok(batches) => {
                            for (docs, meta) in batches {
                                let out = process::process(model, &docs, plan);
                                let ok = match out {
                                    Ok(out) => send(Ok(Msg::Batch(docs, meta, Box::new(out)))),
                                    Err(e) => {
                                        send(Err(e));
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
        });
        let mut writers: Option<Writers> = None;
        let mut since = Instant::now();
        for msg in rx {
            match msg? {
                Msg::Batch(docs, meta, out) => {
                    let w = match &mut writers {
                        Some(w) => w,
                        None => writers.insert(Writers::open(
                            &run_dir,
                            spec,
                            shard,
                            status.windows_done,
                        )?),
                    };
                    w.append(&docs, &meta, &out, model, &watch_names)?;
                    status.prompts_done += docs.len() as u64;
                    status.tokens_done += out.n_tokens as u64;
                    bar.inc(docs.len() as u64);
                    bar.set_message(format!("{} tokens", status.tokens_done));
                }
                Msg::WindowEnd(n) => {
                    debug_assert_eq!(n, status.windows_done);
                    if let Some(w) = writers.take() {
                        for (table, rows) in w.finish()? {
                            *status.rows.entry(table.to_string()).or_default() += rows;
                        }
                    }
                    status.windows_done = n + 1;
                    status.seconds += since.elapsed().as_secs_f64();
                    since = Instant::now();
                    write_json_atomic(&status_path, &status)?;
                }
            }
        }
        Ok(())
    });
    // Dropping unfinished writers removed their temporary files; the status file still says
    // which windows are complete.
    result?;
    bar.finish_and_clear();

    // ---- corpus-level NMF: needs every prompt's activations, so only an unsharded run does it
    // here; a sharded run's last step is `tokenlens nmf RUN_DIR` once every shard is done ----
    if let Some(nmf) = &spec.analyses.nmf {
        if shard.count == 1 {
            let t = Instant::now();
            // Negative layers count from the model's last block (the stage alone only knows the
            // table's layers).
            let mut nmf = nmf.clone();
            nmf.layers = super::spec::Selection::List(
                nmf.layers
                    .resolve(model.config.n_layers)
                    .map_err(|e| Error::Input(format!("analyses.nmf.layers: {e}")))?
                    .into_iter()
                    .map(|l| l as i64)
                    .collect(),
            );
            // Its row counts go to the manifest's `nmf_rows` (a corpus table, not a shard's).
            super::nmf_stage::run_stage(&root, &nmf, opts.quiet)?;
            status.seconds += t.elapsed().as_secs_f64();
        } else if !opts.quiet {
            eprintln!(
                "note: analyses.nmf runs over the whole corpus: once every shard is done, run \
                 `tokenlens nmf {}`",
                root.display()
            );
        }
    }

    // ---- done: shard status, then the manifest's copy of every shard's ----
    status.status = "done".into();
    write_json_atomic(&status_path, &status)?;
    let mut manifest: Manifest = read_json(&manifest_path)?;
    manifest.shards.clear();
    if let Ok(entries) = std::fs::read_dir(&shards_dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json")
                && let Ok(s) = read_json::<ShardStatus>(&e.path())
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
    write_json_atomic(&manifest_path, &manifest)?;
    Ok(RunReport {
        run_dir: root,
        prompts: status.prompts_done,
        tokens: status.tokens_done,
        seconds: started.elapsed().as_secs_f64(),
        rows: status.rows,
    })
}

/// Tokenizes a window of prompts and cuts it into batches (sorted by length if bucketing).
#[allow(clippy::type_complexity)]
fn window_batches(
    model: &Model,
    spec: &PipelineSpec,
    plan: &Plan,
    prompts: Vec<Prompt>,
) -> Result<Vec<(Vec<Doc>, Vec<DocMeta>)>> {
    let context = model.config.max_position_embeddings;
    let new = plan.generation.max_new_tokens;
    let room = context.saturating_sub(new);
    let mut docs = Vec::with_capacity(prompts.len());
    for p in prompts {
        let mut ids = model.tokenizer.encode(&p.text)?;
        let at = |msg: String| -> Error {
            DatasetError::At {
                path: spec.dataset.path.clone(),
                at: p.location,
                msg,
            }
            .into()
        };
        if ids.is_empty() {
            return Err(at(format!("prompt `{}` has no tokens", p.doc_id)));
        }
        let mut truncated = 0;
        if ids.len() > room {
            match spec.dataset.too_long {
                TooLong::Error => {
                    return Err(at(format!(
                        "prompt `{}` has {} tokens; with max_new_tokens {new} the model's \
                         context of {context} leaves room for {room} (set dataset.too_long: \
                         truncate to keep its last {room} tokens)",
                        p.doc_id,
                        ids.len()
                    )));
                }
                TooLong::Truncate => {
                    truncated = ids.len() - room;
                    ids.drain(..truncated);
                    if ids.is_empty() {
                        return Err(at(format!(
                            "prompt `{}`: max_new_tokens {new} leaves no room in the model's \
                             context ({context})",
                            p.doc_id
                        )));
                    }
                }
            }
        }
        docs.push((
            Doc {
                id: p.doc_id,
                text: p.text,
                ids,
                seed: spec.generation.seed.wrapping_add(p.index),
            },
            DocMeta {
                index: p.index,
                truncated,
            },
        ));
    }
    if spec.batching.bucket_by_length {
        // Stable: equal lengths keep dataset order.
        docs.sort_by_key(|(d, _)| d.ids.len());
    }
    let mut batches = Vec::new();
    let mut cur: (Vec<Doc>, Vec<DocMeta>) = (vec![], vec![]);
    for (d, m) in docs {
        let longest = cur
            .0
            .iter()
            .map(|d| d.ids.len())
            .max()
            .unwrap_or(0)
            .max(d.ids.len());
        let padded = (cur.0.len() + 1) * (longest + new);
        let full = cur.0.len() >= spec.batching.batch_size.max(1)
            || spec.batching.max_tokens.is_some_and(|t| padded > t);
        if full && !cur.0.is_empty() {
            batches.push(std::mem::take(&mut cur));
        }
        cur.0.push(d);
        cur.1.push(m);
    }
    if !cur.0.is_empty() {
        batches.push(cur);
    }
    Ok(batches)
}
