//! The library's error type: every failure names the file, field or value it is about.

use std::path::PathBuf;

/// Errors raised by the tokenlens library. The CLI wraps them with `anyhow` context.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A model checkpoint (config, weights, tokenizer) is missing, malformed or unsupported.
    #[error("{path}: {msg}")]
    Model { path: PathBuf, msg: String },
    /// The tokenizer failed or could not be built.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An input (prompt, option) is out of the range the model or the call accepts.
    #[error("{0}")]
    Input(String),
    /// A tensor operation failed (a shape bug or an internal error).
    #[error("tensor op: {0}")]
    Candle(#[from] candle_core::Error),
    /// A pipeline spec is unreadable, malformed or invalid.
    #[error(transparent)]
    Spec(#[from] crate::pipeline::SpecError),
    /// A prompt dataset is unreadable or has a bad record.
    #[error(transparent)]
    Dataset(#[from] crate::pipeline::DatasetError),
    /// Writing a run's Parquet files failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn model(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Model {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
