//! The pipeline's error: the engine's error (model, tokenizer, tensor ops) plus everything a run
//! adds — the spec, the dataset, the store, the NMF, neurons and similarity stages and their
//! input, shards and resume. Each wrapped error is shown as itself and keeps its own cause chain.

use std::path::PathBuf;

use super::dataset::DatasetError;
use super::neurons_stage::NeuronsError;
use super::nmf_stage::NmfError;
use super::spec::SpecError;
use super::stage_input::StageInputError;
use crate::store::StoreError;
use crate::store::manifest::BadShard;

/// Errors of `tokenlens run`, `validate`, `nmf` and `neurons`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine failed: the model, its tokenizer, a tensor op, a prompt it refused.
    #[error(transparent)]
    Engine(#[from] crate::Error),
    /// The pipeline spec is unreadable, malformed or invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The prompt dataset is unreadable or has a bad record.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// Writing or reading the run's files failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A corpus stage (NMF, neurons) cannot read the run: a table or layer it needs is missing,
    /// or the activations table is not one a run writes.
    #[error(transparent)]
    StageInput(#[from] StageInputError),
    /// The NMF stage cannot factorize the run's activations as asked.
    #[error(transparent)]
    Nmf(#[from] NmfError),
    /// The neurons stage cannot summarize the run's activations as asked.
    #[error(transparent)]
    Neurons(#[from] NeuronsError),
    /// The similarity stage (`tokenlens compare`'s layer similarity) failed on the run's tables.
    #[error(transparent)]
    Similarity(#[from] crate::compare::CompareError),
    #[error(transparent)]
    Shard(#[from] BadShard),
    /// `--resume` of a run whose spec file changed.
    #[error(
        "{}: cannot resume: the pipeline spec changed since this run started ({}); run without \
         --resume (and output.overwrite: true) to start over",
        dir.display(), spec.display()
    )]
    SpecChanged { dir: PathBuf, spec: PathBuf },
    /// `--resume` of a shard of a run started with another shard count.
    #[error(
        "{}: cannot resume shard {index}/{count}: the run was started with {started} shard(s)",
        dir.display()
    )]
    ShardCountChanged {
        dir: PathBuf,
        index: u32,
        count: u32,
        started: u32,
    },
    /// A shard's output directory holds a run of another spec or shard count.
    #[error(
        "{}: holds a run of another spec or shard count; choose another output.dir, or remove it",
        dir.display()
    )]
    OtherRun { dir: PathBuf },
    /// `--resume` of an unsharded run in a directory that holds files but never a run.
    #[error(
        "--resume: {} holds no run to resume (no manifest.json); run without --resume to start \
         one (output.overwrite: true replaces what the directory holds)",
        dir.display()
    )]
    NothingToResume { dir: PathBuf },
    /// A layer or head selection the model does not have (`key` is the spec's key).
    #[error("{}: {key}: {msg}", spec.display())]
    Selection {
        spec: PathBuf,
        key: &'static str,
        msg: String,
    },
    /// A value of the spec this model cannot satisfy (e.g. a baseline token it lacks).
    #[error("{}: {key}: {msg}", spec.display())]
    ModelValue {
        spec: PathBuf,
        key: &'static str,
        msg: String,
    },
    /// An intervention this model or its files cannot satisfy (`key` names the edit).
    #[error("{}: {key}: {msg}", spec.display())]
    Intervention {
        spec: PathBuf,
        key: String,
        msg: String,
    },
    /// More windows than part file names can number.
    #[error("too many windows for part numbering")]
    TooManyWindows,
    /// A value asked to be stored as float16 is beyond its range (it would be stored as inf).
    #[error(
        "{key}: f16 cannot hold doc `{doc_id}`'s value {value} (position {position}, layer \
         {layer}, index {index}): float16's largest is 65504; record this model's {table} as f32 \
         (`dtype: f32`)"
    )]
    F16Range {
        key: &'static str,
        table: &'static str,
        doc_id: String,
        position: usize,
        layer: usize,
        index: usize,
        value: f32,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
