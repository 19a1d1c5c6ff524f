//! The Parquet store: table definitions (`schema`), crash-safe part files and run directories
//! (`writer`), the run's JSON files and its one atomic writer (`manifest`), reading tables back
//! (`reader`), replacing the tables of an existing run (`stage`), and docs/schema.md rendered from
//! the definitions (`docs`). Tables are tidy (one row per observation), zstd-compressed, and
//! readable by polars, pandas and duckdb as they are.

pub mod docs;
pub mod manifest;
pub mod reader;
pub mod schema;
pub mod stage;
pub mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use manifest::{MANIFEST, Manifest, SHARDS_DIR, Shard, ShardStatus};
pub use schema::{ALL_TABLES, ColType, Column, Precision, Table, TableDef, TableOptions};
pub use stage::Staging;
pub use writer::{PartInfo, PartWriter, RunDir, TableSummary, TableWriter, WriterOptions};

/// Errors of writing or reading a run. Each names the file or directory; the cause, where there
/// is one, is the error's `source()`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("{}", path.display())]
    Parquet {
        path: PathBuf,
        #[source]
        error: parquet::errors::ParquetError,
    },
    /// The run directory or a part cannot be used as asked.
    #[error("{}: {msg}", path.display())]
    RunDir { path: PathBuf, msg: String },
    /// A run's JSON file (manifest, shard status) cannot be serialized.
    #[error("{}: cannot serialize", path.display())]
    Json {
        path: PathBuf,
        #[source]
        error: serde_json::Error,
    },
    /// A run's JSON file (manifest, shard status) is not what tokenlens writes.
    #[error("{}: not a tokenlens run file", path.display())]
    NotARunFile {
        path: PathBuf,
        #[source]
        error: serde_json::Error,
    },
    /// A part lacks a column its table has.
    #[error("{}: no column `{column}` (not a tokenlens table?)", path.display())]
    NoColumn { path: PathBuf, column: String },
    /// A column that is never null has nulls.
    #[error("{}: column `{column}` has nulls", path.display())]
    Nulls { path: PathBuf, column: String },
    /// A column has another type than its table's.
    #[error("{}: column `{column}` is {found}, expected {expected}", path.display())]
    ColumnType {
        path: PathBuf,
        column: String,
        found: String,
        expected: String,
    },
}

impl StoreError {
    pub(crate) fn io(path: impl AsRef<Path>, error: std::io::Error) -> Self {
        StoreError::Io {
            path: path.as_ref().to_path_buf(),
            error,
        }
    }
    pub(crate) fn parquet(path: impl AsRef<Path>, error: parquet::errors::ParquetError) -> Self {
        StoreError::Parquet {
            path: path.as_ref().to_path_buf(),
            error,
        }
    }
}
