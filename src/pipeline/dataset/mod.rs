//! Prompt datasets: streaming readers for jsonl, csv, parquet and txt files that yield one
//! [`Prompt`] (its `doc_id`, text, and for paired datasets its corrupted prompt, answer and foil)
//! at a time. Owns format detection, field lookup, `limit`, and
//! errors that name the file and the line (jsonl, csv, txt) or row (parquet) of a bad record.
//!
//! Memory is bounded whatever the file size: one line (jsonl, txt), one record (csv) or one
//! record batch of [`PARQUET_BATCH_ROWS`] rows of the text and id columns (parquet) at a time.
//!
//! `doc_id` is a string: the id field's value if `id_field` is set (strings as they are, integers
//! in decimal), else the prompt's 0-based index in the dataset (`"0"`, `"1"`, ...). Blank lines
//! of jsonl and txt files are skipped and are not prompts. Lines are counted from 1, parquet rows
//! from 0.
//!
//! Each format's reader has its file: `lines` (jsonl, txt), `csv_file`, `parquet_file`.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::DatasetSpec;
pub use super::spec::PairField;

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
    /// A paired row's other fields (those the spec names).
    pub pair: Pair,
    /// Where it is in the file (for messages).
    pub location: Location,
}

/// A paired row's fields besides the (clean) prompt: each Some when the spec names its field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pair {
    /// The corrupted prompt (activation patching's other run; integrated gradients' `corrupted`
    /// baseline).
    pub corrupted: Option<String>,
    /// The correct next token after the prompt, as text (e.g. `" Mary"`).
    pub answer: Option<String>,
    /// The contrasting wrong one (e.g. `" John"`).
    pub foil: Option<String>,
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
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
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
    /// The values of the source's extra string fields, in the order asked for.
    extra: Vec<String>,
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
    /// Which pair field each of a record's extra values fills.
    pair_fields: Vec<PairField>,
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
                let mut pair = Pair::default();
                for (field, value) in self.pair_fields.iter().zip(r.extra) {
                    *match field {
                        PairField::Corrupted => &mut pair.corrupted,
                        PairField::Answer => &mut pair.answer,
                        PairField::Foil => &mut pair.foil,
                    } = Some(value);
                }
                Some(Ok(Prompt {
                    doc_id: r.id.unwrap_or_else(|| index.to_string()),
                    index,
                    text: r.text,
                    pair,
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
    let pairs = spec.pair_fields();
    let extra: Vec<String> = pairs.iter().map(|(_, name)| name.to_string()).collect();
    let source: Box<dyn Source> = match format {
        Format::Jsonl | Format::Txt => Box::new(LineSource {
            path: path.clone(),
            reader: BufReader::new(file),
            buf: Vec::new(),
            line: 0,
            json: (format == Format::Jsonl).then_some(JsonFields {
                text: text_field,
                id: id_field,
                extra,
            }),
        }),
        Format::Csv => Box::new(CsvSource::new(
            &path,
            file,
            &text_field,
            id_field.as_deref(),
            &extra,
        )?),
        Format::Parquet => Box::new(ParquetSource::new(
            &path,
            file,
            &text_field,
            id_field.as_deref(),
            &extra,
        )?),
    };
    Ok(Prompts {
        path,
        source,
        pair_fields: pairs.iter().map(|(f, _)| *f).collect(),
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

mod csv_file;
mod lines;
mod parquet_file;
#[cfg(test)]
mod tests;

use csv_file::CsvSource;
use lines::{JsonFields, LineSource};
use parquet_file::ParquetSource;
