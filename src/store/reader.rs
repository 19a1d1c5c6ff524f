//! Reading a run's tables back: the finished parts of a table ([`table_parts`]), a reader of
//! some of a part's columns and rows ([`open_part`]), and a column of a record batch as its
//! Arrow array type ([`column`]), every failure naming the file and column.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::{Array, RecordBatch};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::file::metadata::PageIndexPolicy;

use super::StoreError;
use super::schema::TableDef;

/// The finished parts of a run's table, in file-name order; hidden `.part-*.tmp` files (parts
/// being written) are skipped. No folder: no parts.
pub fn table_parts(run_dir: &Path, table: &TableDef) -> Result<Vec<PathBuf>, StoreError> {
    let dir = run_dir.join(table.name);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut parts = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(|e| StoreError::io(&dir, e))? {
        let e = e.map_err(|e| StoreError::io(&dir, e))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("part-") && name.ends_with(".parquet") {
            parts.push(e.path());
        }
    }
    parts.sort();
    Ok(parts)
}

/// A reader of some columns of one part (and only the selected rows, in record batches of
/// `batch_rows`), and the part's row count.
pub fn open_part(
    path: &Path,
    columns: &[&str],
    selection: Option<RowSelection>,
    batch_rows: usize,
) -> Result<(ParquetRecordBatchReader, usize), StoreError> {
    let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    // With a selection, the page index lets the reader skip whole pages outside it instead of
    // decompressing them to count their rows (reading chunk k of a part would otherwise decode
    // every page before it).
    let options = if selection.is_some() {
        ArrowReaderOptions::new().with_offset_index_policy(PageIndexPolicy::Optional)
    } else {
        ArrowReaderOptions::new()
    };
    let b = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
        .map_err(|e| StoreError::parquet(path, e))?;
    for c in columns {
        if b.schema().field_with_name(c).is_err() {
            return Err(StoreError::NoColumn {
                path: path.to_path_buf(),
                column: c.to_string(),
            });
        }
    }
    let rows = b.metadata().file_metadata().num_rows() as usize;
    let mask = ProjectionMask::columns(b.parquet_schema(), columns.iter().copied());
    let mut b = b.with_projection(mask).with_batch_size(batch_rows.max(1));
    if let Some(s) = selection {
        b = b.with_row_selection(s);
    }
    Ok((b.build().map_err(|e| StoreError::parquet(path, e))?, rows))
}

/// The record batches of a part's reader, each error naming the part.
pub fn batches<'a>(
    reader: ParquetRecordBatchReader,
    path: &'a Path,
) -> impl Iterator<Item = Result<RecordBatch, StoreError>> + 'a {
    reader.map(move |b| b.map_err(|e| StoreError::parquet(path, e.into())))
}

/// A column of a batch read from `path` as its Arrow array type (`expected` names it in the
/// error); nulls are an error.
pub fn column<'a, T: 'static>(
    batch: &'a RecordBatch,
    name: &str,
    path: &Path,
    expected: &str,
) -> Result<&'a T, StoreError> {
    let c = batch
        .column_by_name(name)
        .ok_or_else(|| StoreError::NoColumn {
            path: path.to_path_buf(),
            column: name.to_string(),
        })?;
    if c.null_count() > 0 {
        return Err(StoreError::Nulls {
            path: path.to_path_buf(),
            column: name.to_string(),
        });
    }
    c.as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| StoreError::ColumnType {
            path: path.to_path_buf(),
            column: name.to_string(),
            found: c.data_type().to_string(),
            expected: expected.to_string(),
        })
}

/// Every record batch of a run's table, all columns, parts in order (for tests, small tables and
/// checks; large tables are better read part by part with [`open_part`]).
pub fn read_table(run_dir: &Path, table: &TableDef) -> Result<Vec<RecordBatch>, StoreError> {
    let mut out = Vec::new();
    for p in table_parts(run_dir, table)? {
        let file = File::open(&p).map_err(|e| StoreError::io(&p, e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| StoreError::parquet(&p, e))?;
        for b in batches(reader, &p) {
            out.push(b?);
        }
    }
    Ok(out)
}
