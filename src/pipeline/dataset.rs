//! Prompt datasets: streaming readers for jsonl, csv, parquet and txt files that yield one
//! [`Prompt`] (its `doc_id` and text) at a time. Owns format detection, field lookup, `limit`, and
//! errors that name the file and the line (jsonl, csv, txt) or row (parquet) of a bad record.
//!
//! Memory is bounded whatever the file size: one line (jsonl, txt), one record (csv) or one
//! record batch of [`PARQUET_BATCH_ROWS`] rows of the text and id columns (parquet) at a time.
//!
//! `doc_id` is a string: the id field's value if `id_field` is set (strings as they are, integers
//! in decimal), else the prompt's 0-based index in the dataset (`"0"`, `"1"`, ...). Blank lines
//! of jsonl and txt files are skipped and are not prompts. Lines are counted from 1, parquet rows
//! from 0.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::spec::DatasetSpec;

/// Rows per record batch read from a parquet dataset.
pub const PARQUET_BATCH_ROWS: usize = 1024;

/// A dataset file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated, with a header row.
    Csv,
    Parquet,
    /// One prompt per line.
    Txt,
}

impl Format {
    /// The format of a file by its extension: `.jsonl`/`.ndjson`, `.csv`, `.parquet`/`.pq`, `.txt`.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "jsonl" | "ndjson" => Format::Jsonl,
            "csv" => Format::Csv,
            "parquet" | "pq" => Format::Parquet,
            "txt" => Format::Txt,
            _ => return None,
        })
    }
}

/// One prompt of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The id field's value, else `index` in decimal.
    pub doc_id: String,
    /// 0-based index among the dataset's prompts.
    pub index: u64,
    pub text: String,
    /// Where it is in the file (for messages).
    pub location: Location,
}

/// A place in a dataset file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// 1-based line (and byte column) of a text file; a csv record's first line.
    Line { line: u64, column: Option<u64> },
    /// 0-based row of a parquet file.
    Row(u64),
}

impl Location {
    fn line(line: u64) -> Self {
        Location::Line { line, column: None }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Location::Line { line, column: None } => write!(f, "line {line}"),
            Location::Line {
                line,
                column: Some(c),
            } => write!(f, "line {line}, column {c}"),
            Location::Row(r) => write!(f, "row {r}"),
        }
    }
}

/// Errors of reading a dataset. Each names the file, and the line or row where there is one.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file could not be opened or read.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A bad record: `file:line[:column]: msg` or `file: row N: msg`.
    #[error("{}", at_message(path, at, msg))]
    At {
        path: PathBuf,
        at: Location,
        msg: String,
    },
    /// A problem with the file as a whole (format, columns, no prompts).
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
}

fn at_message(path: &Path, at: &Location, msg: &str) -> String {
    match at {
        Location::Line { line, column: None } => format!("{}:{line}: {msg}", path.display()),
        Location::Line {
            line,
            column: Some(c),
        } => format!("{}:{line}:{c}: {msg}", path.display()),
        Location::Row(r) => format!("{}: row {r}: {msg}", path.display()),
    }
}

/// A record as a source found it, before `Prompts` numbers it.
struct Record {
    id: Option<String>,
    text: String,
    at: Location,
}

/// A format's reader: the next record, `Ok(None)` at the end.
trait Source {
    fn next_record(&mut self) -> Result<Option<Record>, DatasetError>;
}

/// The prompts of a dataset, read lazily. Stops after the first error or after `limit` prompts;
/// a dataset without prompts is an error.
pub struct Prompts {
    path: PathBuf,
    source: Box<dyn Source>,
    limit: Option<u64>,
    count: u64,
    done: bool,
}

impl fmt::Debug for Prompts {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("Prompts")
            .field("path", &self.path)
            .field("count", &self.count)
            .finish()
    }
}

impl Iterator for Prompts {
    type Item = Result<Prompt, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.limit.is_some_and(|l| self.count >= l) {
            return None;
        }
        match self.source.next_record() {
            Ok(Some(r)) => {
                let index = self.count;
                self.count += 1;
                Some(Ok(Prompt {
                    doc_id: r.id.unwrap_or_else(|| index.to_string()),
                    index,
                    text: r.text,
                    location: r.at,
                }))
            }
            Ok(None) => {
                self.done = true;
                (self.count == 0).then(|| {
                    Err(DatasetError::File {
                        path: self.path.clone(),
                        msg: "the dataset has no prompts".into(),
                    })
                })
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Opens a dataset for streaming. The file is opened (and for csv and parquet, its header or
/// schema checked) here; records are read as the iterator advances.
pub fn open(spec: &DatasetSpec) -> Result<Prompts, DatasetError> {
    let path = spec.path.clone();
    let format = spec.format().ok_or_else(|| DatasetError::File {
        path: path.clone(),
        msg: "cannot tell the format from the file extension; set dataset.format to jsonl, csv, \
              parquet or txt"
            .into(),
    })?;
    let file = File::open(&path).map_err(|error| DatasetError::Io {
        path: path.clone(),
        error,
    })?;
    let text_field = spec.text_field().to_string();
    let id_field = spec.id_field.clone();
    let source: Box<dyn Source> = match format {
        Format::Jsonl | Format::Txt => Box::new(LineSource {
            path: path.clone(),
            reader: BufReader::new(file),
            buf: Vec::new(),
            line: 0,
            json: (format == Format::Jsonl).then_some(JsonFields {
                text: text_field,
                id: id_field,
            }),
        }),
        Format::Csv => Box::new(CsvSource::new(
            &path,
            file,
            &text_field,
            id_field.as_deref(),
        )?),
        Format::Parquet => Box::new(ParquetSource::new(
            &path,
            file,
            &text_field,
            id_field.as_deref(),
        )?),
    };
    Ok(Prompts {
        path,
        source,
        limit: spec.limit.map(|l| l as u64),
        count: 0,
        done: false,
    })
}

/// What a full pass over a dataset found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSummary {
    /// Prompts read (at most `limit`).
    pub prompts: u64,
}

/// Reads the whole dataset (up to `limit`) and checks every record, and that no `doc_id` is used
/// twice. Memory grows with the number of ids only.
pub fn scan(spec: &DatasetSpec) -> Result<DatasetSummary, DatasetError> {
    let mut seen: HashMap<String, Location> = HashMap::new();
    let mut prompts = 0;
    for p in open(spec)? {
        let p = p?;
        if let Some(first) = seen.get(&p.doc_id) {
            return Err(DatasetError::At {
                path: spec.path.clone(),
                at: p.location,
                msg: format!("doc_id `{}` is already used at {first}", p.doc_id),
            });
        }
        prompts += 1;
        seen.insert(p.doc_id, p.location);
    }
    Ok(DatasetSummary { prompts })
}

/// jsonl and txt: one record per non-blank line.
struct LineSource {
    path: PathBuf,
    reader: BufReader<File>,
    buf: Vec<u8>,
    line: u64,
    /// Some for jsonl (the fields to read), None for txt (the line is the prompt).
    json: Option<JsonFields>,
}

struct JsonFields {
    text: String,
    id: Option<String>,
}

impl LineSource {
    fn err(&self, column: Option<u64>, msg: impl Into<String>) -> DatasetError {
        DatasetError::At {
            path: self.path.clone(),
            at: Location::Line {
                line: self.line,
                column,
            },
            msg: msg.into(),
        }
    }

    /// The next non-blank line without its line ending, as UTF-8.
    fn next_line(&mut self) -> Result<Option<String>, DatasetError> {
        loop {
            self.buf.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|error| DatasetError::Io {
                    path: self.path.clone(),
                    error,
                })?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            let mut bytes = self.buf.as_slice();
            if self.line == 1 {
                bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            }
            bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
            bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return match std::str::from_utf8(bytes) {
                Ok(s) => Ok(Some(s.to_string())),
                Err(e) => Err(self.err(
                    Some(e.valid_up_to() as u64 + 1),
                    "invalid UTF-8 (the file must be UTF-8 encoded)",
                )),
            };
        }
    }
}

impl Source for LineSource {
    fn next_record(&mut self) -> Result<Option<Record>, DatasetError> {
        let Some(line) = self.next_line()? else {
            return Ok(None);
        };
        let at = Location::line(self.line);
        let Some(fields) = &self.json else {
            return Ok(Some(Record {
                id: None,
                text: line,
                at,
            }));
        };
        let value: Value = serde_json::from_str(&line).map_err(|e| {
            let msg = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let msg = msg.strip_suffix(&suffix).unwrap_or(&msg).to_string();
            self.err(Some(e.column() as u64), format!("invalid JSON: {msg}"))
        })?;
        let Value::Object(obj) = value else {
            return Err(self.err(
                None,
                format!("expected a JSON object, found {}", json_kind(&value)),
            ));
        };
        let field = |name: &str| {
            obj.get(name).ok_or_else(|| {
                let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
                keys.truncate(20);
                self.err(
                    None,
                    format!("no field `{name}` (fields: {})", keys.join(", ")),
                )
            })
        };
        let text = match field(&fields.text)? {
            Value::String(s) if s.is_empty() => {
                return Err(self.err(None, format!("field `{}` is empty", fields.text)));
            }
            Value::String(s) => s.clone(),
            other => {
                return Err(self.err(
                    None,
                    format!(
                        "field `{}` is {}, expected a string",
                        fields.text,
                        json_kind(other)
                    ),
                ));
            }
        };
        let id = match &fields.id {
            None => None,
            Some(name) => Some(match field(name)? {
                Value::String(s) if s.is_empty() => {
                    return Err(self.err(None, format!("field `{name}` is empty")));
                }
                Value::String(s) => s.clone(),
                Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
                other => {
                    return Err(self.err(
                        None,
                        format!(
                            "field `{name}` is {}, expected a string or an integer",
                            json_kind(other)
                        ),
                    ));
                }
            }),
        };
        Ok(Some(Record { id, text, at }))
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a non-integer number",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// csv with a header row; fields are looked up by column name.
struct CsvSource {
    path: PathBuf,
    reader: csv::Reader<File>,
    record: csv::ByteRecord,
    text: (usize, String),
    id: Option<(usize, String)>,
}

impl CsvSource {
    fn new(path: &Path, file: File, text: &str, id: Option<&str>) -> Result<Self, DatasetError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(file);
        let headers = reader
            .byte_headers()
            .map_err(|e| csv_error(path, e))?
            .clone();
        let names: Vec<String> = headers
            .iter()
            .map(|h| String::from_utf8_lossy(h).into_owned())
            .collect();
        let column = |name: &str| -> Result<(usize, String), DatasetError> {
            names
                .iter()
                .position(|h| h == name)
                .map(|i| (i, name.to_string()))
                .ok_or_else(|| DatasetError::At {
                    path: path.to_path_buf(),
                    at: Location::line(1),
                    msg: format!("no column `{name}` (columns: {})", names.join(", ")),
                })
        };
        Ok(CsvSource {
            path: path.to_path_buf(),
            text: column(text)?,
            id: id.map(column).transpose()?,
            reader,
            record: csv::ByteRecord::new(),
        })
    }

    fn field(&self, (i, name): &(usize, String), at: Location) -> Result<String, DatasetError> {
        let err = |msg: String| DatasetError::At {
            path: self.path.clone(),
            at,
            msg,
        };
        let bytes = self.record.get(*i).unwrap_or_default();
        if bytes.is_empty() {
            return Err(err(format!("column `{name}` is empty")));
        }
        std::str::from_utf8(bytes).map(str::to_string).map_err(|e| {
            err(format!(
                "column `{name}` is not valid UTF-8 (at byte {} of the field)",
                e.valid_up_to() + 1
            ))
        })
    }
}

fn csv_error(path: &Path, e: csv::Error) -> DatasetError {
    let at = |line: u64, msg: String| DatasetError::At {
        path: path.to_path_buf(),
        at: Location::line(line),
        msg,
    };
    let line = e.position().map(|p| p.line());
    match (e.kind(), line) {
        (csv::ErrorKind::Io(_), _) => match e.into_kind() {
            csv::ErrorKind::Io(error) => DatasetError::Io {
                path: path.to_path_buf(),
                error,
            },
            _ => unreachable!(),
        },
        (
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            },
            Some(l),
        ) => at(
            l,
            format!("malformed CSV: {len} fields, but the header has {expected_len}"),
        ),
        (_, Some(l)) => at(l, format!("malformed CSV: {e}")),
        (_, None) => DatasetError::File {
            path: path.to_path_buf(),
            msg: format!("malformed CSV: {e}"),
        },
    }
}

impl Source for CsvSource {
    fn next_record(&mut self) -> Result<Option<Record>, DatasetError> {
        let more = self
            .reader
            .read_byte_record(&mut self.record)
            .map_err(|e| csv_error(&self.path, e))?;
        if !more {
            return Ok(None);
        }
        let line = self.record.position().map_or(0, |p| p.line());
        let at = Location::line(line);
        let text = self.field(&self.text, at)?;
        let id = match &self.id {
            Some(c) => Some(self.field(c, at)?),
            None => None,
        };
        Ok(Some(Record { id, text, at }))
    }
}

/// parquet: the text (and id) columns only, a record batch at a time.
struct ParquetSource {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    batch: Option<RecordBatch>,
    /// Next row within `batch`, and the file row of the batch's first row.
    pos: usize,
    batch_start: u64,
    text: String,
    id: Option<String>,
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_integer(t: &DataType) -> bool {
    t.is_integer()
}

impl ParquetSource {
    fn new(path: &Path, file: File, text: &str, id: Option<&str>) -> Result<Self, DatasetError> {
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
        Ok(Some(Record { id, text, at }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Float64Array, Int64Array, StringArray};
    use arrow_schema::{Field, Schema};
    use parquet::arrow::ArrowWriter;

    use super::*;

    /// A fresh directory per call (tests run in parallel).
    fn dir(name: &str) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir()
            .join(format!("tokenlens-dataset-{}", std::process::id()))
            .join(format!("{name}-{}", N.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn write(name: &str, bytes: &[u8]) -> DatasetSpec {
        let d = dir(name.split('.').next().unwrap());
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        DatasetSpec::new(p)
    }

    fn read(spec: &DatasetSpec) -> Result<Vec<(String, String)>, String> {
        open(spec)
            .map_err(|e| e.to_string())?
            .map(|p| p.map(|p| (p.doc_id, p.text)).map_err(|e| e.to_string()))
            .collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// The error message with the temp directory replaced by `DIR`.
    fn read_err(spec: &DatasetSpec) -> String {
        let e = read(spec).unwrap_err();
        e.replace(spec.path.parent().unwrap().to_str().unwrap(), "DIR")
    }

    #[test]
    fn formats_from_extensions() {
        let f = |p: &str| Format::from_path(Path::new(p));
        assert_eq!(f("a/b.jsonl"), Some(Format::Jsonl));
        assert_eq!(f("b.NDJSON"), Some(Format::Jsonl));
        assert_eq!(f("b.csv"), Some(Format::Csv));
        assert_eq!(f("b.pq"), Some(Format::Parquet));
        assert_eq!(f("b.parquet"), Some(Format::Parquet));
        assert_eq!(f("b.txt"), Some(Format::Txt));
        assert_eq!(f("b.json"), None);
        assert_eq!(f("b"), None);
    }

    #[test]
    fn jsonl_with_and_without_ids() {
        let mut spec = write(
            "a.jsonl",
            b"\xEF\xBB\xBF{\"id\": \"q1\", \"text\": \"Hello\", \"extra\": [1]}\r\n\n  \n{\"id\": 7, \"text\": \"caf\xC3\xA9 \\\"x\\\"\"}\n{\"id\": \"q3\", \"text\": \" spaced \"}",
        );
        assert_eq!(
            read(&spec).unwrap(),
            pairs(&[("0", "Hello"), ("1", "café \"x\""), ("2", " spaced ")])
        );
        spec.id_field = Some("id".into());
        assert_eq!(
            read(&spec).unwrap(),
            pairs(&[("q1", "Hello"), ("7", "café \"x\""), ("q3", " spaced ")])
        );
        let locations: Vec<Location> = open(&spec).unwrap().map(|p| p.unwrap().location).collect();
        assert_eq!(
            locations,
            [Location::line(1), Location::line(4), Location::line(5)]
        );
        spec.limit = Some(2);
        assert_eq!(read(&spec).unwrap().len(), 2);
        let indices: Vec<u64> = open(&spec).unwrap().map(|p| p.unwrap().index).collect();
        assert_eq!(indices, [0, 1]);
    }

    #[test]
    fn jsonl_errors_name_file_and_line() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"{\"text\": \"a\"}\n{\"prompt\": \"b\", \"id\": 1}\n",
                "DIR/e.jsonl:2: no field `text` (fields: id, prompt)",
            ),
            (
                b"{\"text\": \"a\"}\n\n{\"text\": 3}\n",
                "DIR/e.jsonl:3: field `text` is a number, expected a string",
            ),
            (
                b"{\"text\": null}\n",
                "DIR/e.jsonl:1: field `text` is null, expected a string",
            ),
            (
                b"{\"text\": \"\"}\n",
                "DIR/e.jsonl:1: field `text` is empty",
            ),
            (
                b"{\"text\": \"a\"}\n{\"text\": \"b\",}\n",
                "DIR/e.jsonl:2:14: invalid JSON: trailing comma",
            ),
            (
                b"{\"text\": \"a\"\n",
                "DIR/e.jsonl:1:12: invalid JSON: EOF while parsing an object",
            ),
            (
                b"[\"a\"]\n",
                "DIR/e.jsonl:1: expected a JSON object, found an array",
            ),
            (
                b"{\"text\": \"ok\"}\n{\"text\": \"caf\xE9\"}\n",
                "DIR/e.jsonl:2:14: invalid UTF-8 (the file must be UTF-8 encoded)",
            ),
            (b"\n\n", "DIR/e.jsonl: the dataset has no prompts"),
            (b"", "DIR/e.jsonl: the dataset has no prompts"),
        ];
        for (bytes, expected) in cases {
            assert_eq!(&read_err(&write("e.jsonl", bytes)), expected);
        }
        let mut spec = write(
            "e.jsonl",
            b"{\"text\": \"a\", \"id\": \"x\"}\n{\"text\": \"b\", \"id\": 1.5}\n",
        );
        spec.id_field = Some("id".into());
        assert_eq!(
            read_err(&spec),
            "DIR/e.jsonl:2: field `id` is a non-integer number, expected a string or an integer"
        );
        // The error ends the stream; the good record before it was yielded.
        let items: Vec<_> = open(&spec).unwrap().collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok() && items[1].is_err());
    }

    #[test]
    fn missing_file_and_unknown_format() {
        let spec = DatasetSpec::new("/no/such/prompts.jsonl");
        assert_eq!(
            open(&spec).unwrap_err().to_string(),
            "/no/such/prompts.jsonl: No such file or directory (os error 2)"
        );
        let spec = DatasetSpec::new("/no/such/prompts.xlsx");
        assert_eq!(
            open(&spec).unwrap_err().to_string(),
            "/no/such/prompts.xlsx: cannot tell the format from the file extension; set \
             dataset.format to jsonl, csv, parquet or txt"
        );
    }

    #[test]
    fn txt_one_prompt_per_line() {
        let spec = write(
            "t.txt",
            b"The capital of France is\r\n\n   \n  Once upon a time\nlast line, no newline",
        );
        assert_eq!(
            read(&spec).unwrap(),
            pairs(&[
                ("0", "The capital of France is"),
                ("1", "  Once upon a time"),
                ("2", "last line, no newline")
            ])
        );
        assert_eq!(
            read_err(&write("t.txt", b"ok\n\xFF\xFEbad\n")),
            "DIR/t.txt:2:1: invalid UTF-8 (the file must be UTF-8 encoded)"
        );
        assert_eq!(
            read_err(&write("t.txt", b"\n \n")),
            "DIR/t.txt: the dataset has no prompts"
        );
    }

    #[test]
    fn csv_by_column_name() {
        let mut spec = write(
            "c.csv",
            b"\xEF\xBB\xBFid,text,lang\nq1,\"Hello, world\",en\nq2,\"two\nlines\",en\n\nq3,\"say \"\"hi\"\"\",en\n",
        );
        spec.id_field = Some("id".into());
        assert_eq!(
            read(&spec).unwrap(),
            pairs(&[
                ("q1", "Hello, world"),
                ("q2", "two\nlines"),
                ("q3", "say \"hi\"")
            ])
        );
        // A record's line is where it starts (q2 spans lines 3-4). The csv crate counts blank
        // lines before a record as its start: q3 is on line 6, reported as 5.
        let locations: Vec<Location> = open(&spec).unwrap().map(|p| p.unwrap().location).collect();
        assert_eq!(
            locations,
            [Location::line(2), Location::line(3), Location::line(5)]
        );
    }

    #[test]
    fn csv_errors_name_file_and_line() {
        let spec = write("c.csv", b"id,prompt\n1,a\n");
        assert_eq!(
            read_err(&spec),
            "DIR/c.csv:1: no column `text` (columns: id, prompt)"
        );
        let spec = write("c.csv", b"id,text\n1,a\n2,b,extra\n");
        assert_eq!(
            read_err(&spec),
            "DIR/c.csv:3: malformed CSV: 3 fields, but the header has 2"
        );
        let spec = write("c.csv", b"id,text\n1,a\n2,\n");
        assert_eq!(read_err(&spec), "DIR/c.csv:3: column `text` is empty");
        let spec = write("c.csv", b"id,text\n1,caf\xE9\n");
        assert_eq!(
            read_err(&spec),
            "DIR/c.csv:2: column `text` is not valid UTF-8 (at byte 4 of the field)"
        );
        let spec = write("c.csv", b"id,text\n");
        assert_eq!(read_err(&spec), "DIR/c.csv: the dataset has no prompts");
        let mut spec = write("c.csv", b"id,text\n1,a\n,b\n");
        spec.id_field = Some("id".into());
        assert_eq!(read_err(&spec), "DIR/c.csv:3: column `id` is empty");
    }

    fn write_parquet(name: &str, batches: &[RecordBatch]) -> DatasetSpec {
        let d = dir(name.split('.').next().unwrap());
        let p = d.join(name);
        let mut w =
            ArrowWriter::try_new(File::create(&p).unwrap(), batches[0].schema(), None).unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.close().unwrap();
        DatasetSpec::new(p)
    }

    #[test]
    fn parquet_streams_batches_and_projects() {
        // More rows than a reader batch, and a column that is never read.
        let n = PARQUET_BATCH_ROWS + 10;
        let schema = Arc::new(Schema::new(vec![
            Field::new("score", DataType::Float64, false),
            Field::new("id", DataType::Int64, false),
            Field::new("text", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Float64Array::from(vec![0.5; n])) as ArrayRef,
                Arc::new(Int64Array::from_iter_values((0..n as i64).map(|i| 100 + i))),
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("prompt {i}")),
                )),
            ],
        )
        .unwrap();
        let mut spec = write_parquet("p.parquet", &[batch]);
        let all = read(&spec).unwrap();
        assert_eq!(all.len(), n);
        assert_eq!(all[n - 1], ("1033".into(), "prompt 1033".into()));
        spec.id_field = Some("id".into());
        let all = read(&spec).unwrap();
        assert_eq!(all[1030], ("1130".into(), "prompt 1030".into()));
        let last = open(&spec).unwrap().last().unwrap().unwrap();
        assert_eq!(last.location, Location::Row(n as u64 - 1));
        spec.limit = Some(3);
        assert_eq!(read(&spec).unwrap().len(), 3);
    }

    #[test]
    fn parquet_errors_name_file_and_row() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Float64, true),
            Field::new("text", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])) as ArrayRef,
                Arc::new(StringArray::from(vec![Some("a"), Some("b"), None])),
                Arc::new(Int64Array::from(vec![1, 2, 3])),
            ],
        )
        .unwrap();
        let mut spec = write_parquet("q.parquet", &[batch]);
        assert_eq!(read_err(&spec), "DIR/q.parquet: row 2: `text` is null");
        spec.id_field = Some("id".into());
        assert_eq!(
            read_err(&spec),
            "DIR/q.parquet: column `id` has type Float64, expected a string or an integer"
        );
        spec.id_field = None;
        spec.text_field = Some("n".into());
        assert_eq!(
            read_err(&spec),
            "DIR/q.parquet: column `n` has type Int64, expected a string"
        );
        spec.text_field = Some("prompt".into());
        assert_eq!(
            read_err(&spec),
            "DIR/q.parquet: no column `prompt` (columns: id, text, n)"
        );
        let bad = write("r.parquet", b"PAR1 this is not parquet");
        let e = read_err(&bad);
        assert!(
            e.starts_with("DIR/r.parquet: not a readable Parquet file: "),
            "{e}"
        );
    }

    #[test]
    fn scan_counts_and_finds_duplicate_ids() {
        let mut spec = write(
            "s.jsonl",
            b"{\"id\": \"a\", \"text\": \"x\"}\n{\"id\": \"b\", \"text\": \"y\"}\n\n{\"id\": \"a\", \"text\": \"z\"}\n",
        );
        assert_eq!(scan(&spec).unwrap(), DatasetSummary { prompts: 3 });
        spec.id_field = Some("id".into());
        let e = scan(&spec).unwrap_err().to_string();
        assert_eq!(
            e.replace(spec.path.parent().unwrap().to_str().unwrap(), "DIR"),
            "DIR/s.jsonl:4: doc_id `a` is already used at line 1"
        );
        spec.limit = Some(2);
        assert_eq!(scan(&spec).unwrap(), DatasetSummary { prompts: 2 });
    }

    /// The shipped example dataset is valid, has ids, and has no duplicates.
    #[test]
    fn quickstart_dataset() {
        let mut spec = DatasetSpec::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/quickstart.jsonl"),
        );
        spec.id_field = Some("id".into());
        let n = scan(&spec).unwrap().prompts;
        assert!((30..=60).contains(&n), "{n} prompts");
    }
}
