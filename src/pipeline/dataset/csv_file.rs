//! csv datasets with a header row: the text (id, pair) fields looked up by column name, one record
//! at a time; errors name the line.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{DatasetError, Location, Record, Source};

/// csv with a header row; fields are looked up by column name.
pub(super) struct CsvSource {
    path: PathBuf,
    reader: csv::Reader<File>,
    record: csv::ByteRecord,
    text: (usize, String),
    id: Option<(usize, String)>,
    extra: Vec<(usize, String)>,
}

impl CsvSource {
    pub fn new(
        path: &Path,
        file: File,
        text: &str,
        id: Option<&str>,
        extra: &[String],
    ) -> Result<Self, DatasetError> {
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
            extra: extra.iter().map(|n| column(n)).collect::<Result<_, _>>()?,
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
        let extra = self
            .extra
            .iter()
            .map(|c| self.field(c, at))
            .collect::<Result<_, _>>()?;
        Ok(Some(Record {
            id,
            text,
            extra,
            at,
        }))
    }
}
