//! parquet datasets: the text (id, pair) columns only, one record batch of
//! [`PARQUET_BATCH_ROWS`](super::PARQUET_BATCH_ROWS) rows at a time; errors name the row.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use super::{DatasetError, Location, PARQUET_BATCH_ROWS, Record, Source};

/// parquet: the text (and id) columns only, a record batch at a time.
pub(super) struct ParquetSource {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    batch: Option<RecordBatch>,
    /// Next row within `batch`, and the file row of the batch's first row.
    pos: usize,
    batch_start: u64,
    text: String,
    id: Option<String>,
    extra: Vec<String>,
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_integer(t: &DataType) -> bool {
    t.is_integer()
}

impl ParquetSource {
    pub fn new(
        path: &Path,
        file: File,
        text: &str,
        id: Option<&str>,
        extra: &[String],
    ) -> Result<Self, DatasetError> {
        let file_err = |msg: String| DatasetError::File {
            path: path.to_path_buf(),
            msg,
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| file_err(format!("not a readable Parquet file: {e}")))?;
        let schema = builder.schema().clone();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let column = |name: &str, ok: fn(&DataType) -> bool, expected: &str| {
            let i = names.iter().position(|n| *n == name).ok_or_else(|| {
                file_err(format!(
                    "no column `{name}` (columns: {})",
                    names.join(", ")
                ))
            })?;
            let t = schema.field(i).data_type();
            if !ok(t) {
                return Err(file_err(format!(
                    "column `{name}` has type {t}, expected {expected}"
                )));
            }
            Ok(i)
        };
        let mut roots = vec![column(text, is_string, "a string")?];
        for name in extra {
            roots.push(column(name, is_string, "a string")?);
        }
        if let Some(id) = id {
            roots.push(column(
                id,
                |t| is_string(t) || is_integer(t),
                "a string or an integer",
            )?);
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(PARQUET_BATCH_ROWS)
            .build()
            .map_err(|e| file_err(format!("not a readable Parquet file: {e}")))?;
        Ok(ParquetSource {
            path: path.to_path_buf(),
            reader,
            batch: None,
            pos: 0,
            batch_start: 0,
            text: text.to_string(),
            id: id.map(str::to_string),
            extra: extra.to_vec(),
        })
    }
}

/// The value of a string or integer cell; None for null.
fn cell(col: &ArrayRef, i: usize) -> Option<String> {
    use arrow_array::types::*;
    if col.is_null(i) {
        return None;
    }
    Some(match col.data_type() {
        DataType::Utf8 => col.as_string::<i32>().value(i).to_string(),
        DataType::LargeUtf8 => col.as_string::<i64>().value(i).to_string(),
        DataType::Utf8View => col.as_string_view().value(i).to_string(),
        DataType::Int8 => col.as_primitive::<Int8Type>().value(i).to_string(),
        DataType::Int16 => col.as_primitive::<Int16Type>().value(i).to_string(),
        DataType::Int32 => col.as_primitive::<Int32Type>().value(i).to_string(),
        DataType::Int64 => col.as_primitive::<Int64Type>().value(i).to_string(),
        DataType::UInt8 => col.as_primitive::<UInt8Type>().value(i).to_string(),
        DataType::UInt16 => col.as_primitive::<UInt16Type>().value(i).to_string(),
        DataType::UInt32 => col.as_primitive::<UInt32Type>().value(i).to_string(),
        DataType::UInt64 => col.as_primitive::<UInt64Type>().value(i).to_string(),
        // Types are checked when the file is opened.
        other => unreachable!("column type {other} was checked at open"),
    })
}

impl Source for ParquetSource {
    fn next_record(&mut self) -> Result<Option<Record>, DatasetError> {
        while self.batch.as_ref().is_none_or(|b| self.pos >= b.num_rows()) {
            if let Some(b) = &self.batch {
                self.batch_start += b.num_rows() as u64;
            }
            self.pos = 0;
            self.batch = match self.reader.next() {
                None => return Ok(None),
                Some(Ok(b)) => Some(b),
                Some(Err(e)) => {
                    return Err(DatasetError::At {
                        path: self.path.clone(),
                        at: Location::Row(self.batch_start),
                        msg: format!("cannot read the rows from here on: {e}"),
                    });
                }
            };
        }
        let batch = self.batch.as_ref().expect("a batch with rows left");
        let i = self.pos;
        self.pos += 1;
        let at = Location::Row(self.batch_start + i as u64);
        let get = |name: &str| -> Result<String, DatasetError> {
            let col = batch.column_by_name(name).expect("projected column");
            let err = |msg: String| DatasetError::At {
                path: self.path.clone(),
                at,
                msg,
            };
            match cell(col, i) {
                None => Err(err(format!("`{name}` is null"))),
                Some(s) if s.is_empty() => Err(err(format!("`{name}` is empty"))),
                Some(s) => Ok(s),
            }
        };
        let text = get(&self.text)?;
        let id = self.id.as_deref().map(get).transpose()?;
        let extra = self
            .extra
            .iter()
            .map(|n| get(n))
            .collect::<Result<_, _>>()?;
        Ok(Some(Record {
            id,
            text,
            extra,
            at,
        }))
    }
}
