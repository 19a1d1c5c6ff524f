//! The Parquet store: table definitions (`schema`), crash-safe part files and run directories
//! (`writer`), replacing the tables of an existing run (`stage`), and docs/schema.md rendered from the definitions (`docs`). Tables are tidy (one
//! row per observation), zstd-compressed, and readable by polars, pandas and duckdb as they are.

pub mod docs;
pub mod schema;
pub mod stage;
pub mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use schema::{ALL_TABLES, ColType, Column, Precision, Table, TableDef, TableOptions};
pub use stage::Staging;
pub use writer::{PartInfo, PartWriter, RunDir, TableSummary, TableWriter, WriterOptions};

/// Errors of writing a run. Each names the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {error}", path.display())]
    Parquet {
        path: PathBuf,
        error: parquet::errors::ParquetError,
    },
    /// The run directory or a part cannot be used as asked.
    #[error("{}: {msg}", path.display())]
    RunDir { path: PathBuf, msg: String },
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
