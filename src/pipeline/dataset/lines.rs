//! jsonl and txt datasets: one record per non-blank line (a JSON object's text and id fields,
//! or the line itself), read one line at a time; errors name the line and, for JSON, the column.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use serde_json::Value;

use super::{DatasetError, Location, Record, Source};

/// jsonl and txt: one record per non-blank line.
pub(super) struct LineSource {
    pub path: PathBuf,
    pub reader: BufReader<File>,
    pub buf: Vec<u8>,
    pub line: u64,
    /// Some for jsonl (the fields to read), None for txt (the line is the prompt).
    pub json: Option<JsonFields>,
}

pub(super) struct JsonFields {
    pub text: String,
    pub id: Option<String>,
    /// Further string fields every record must have (a paired row's).
    pub extra: Vec<String>,
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
                extra: vec![],
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
        let string = |name: &str| match field(name)? {
            Value::String(s) if s.is_empty() => {
                Err(self.err(None, format!("field `{name}` is empty")))
            }
            Value::String(s) => Ok(s.clone()),
            other => Err(self.err(
                None,
                format!("field `{name}` is {}, expected a string", json_kind(other)),
            )),
        };
        let text = string(&fields.text)?;
        let extra = fields
            .extra
            .iter()
            .map(|name| string(name))
            .collect::<Result<Vec<_>, _>>()?;
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
        Ok(Some(Record {
            id,
            text,
            extra,
            at,
        }))
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
