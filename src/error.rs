//! The engine's error type, used by `model/` and `analysis/`: every failure names the file,
//! field or value it is about, and keeps its cause as `source()`. The pipeline wraps it in its
//! own error (`pipeline::Error`) with the spec, dataset and store errors; the CLI prints the
//! whole chain.

use std::path::PathBuf;

/// Errors raised by the engine (model loading, tokenization, forward and reverse passes,
/// analyses). The CLI wraps them with `anyhow` context.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A model checkpoint (config, weights, tokenizer) is missing, malformed or unsupported.
    #[error("{}: {msg}", path.display())]
    Model { path: PathBuf, msg: String },
    /// The tokenizer failed or could not be built.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An input (prompt, option) is out of the range the model or the call accepts.
    #[error("{0}")]
    Input(String),
    /// A tensor operation failed (a shape bug or an internal error).
    #[error("tensor op")]
    Candle(#[from] candle_core::Error),
    /// A failure of code the engine calls back, e.g. an NMF row source reading a run's tables;
    /// shown as that error.
    #[error(transparent)]
    External(Box<dyn std::error::Error + Send + Sync>),
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
    /// Wraps an error of a caller's callback.
    pub fn external(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::External(Box::new(e))
    }
}
