//! Typed reads of a GGUF file's `tokenizer.ggml.*` metadata: every error names the file and the
//! key, and says what was expected and found (never the value itself, which may be a 262k-entry
//! array).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;

use crate::error::{Error, Result};

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
pub const TOKEN_TYPE_NORMAL: i32 = 1;
pub const TOKEN_TYPE_CONTROL: i32 = 3;
pub const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// A GGUF file's metadata, with the file's path for the errors.
pub struct Meta<'a> {
    pub path: &'a Path,
    md: &'a HashMap<String, Value>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::U8(_) => "a u8",
        Value::I8(_) => "an i8",
        Value::U16(_) => "a u16",
        Value::I16(_) => "an i16",
        Value::U32(_) => "a u32",
        Value::I32(_) => "an i32",
        Value::U64(_) => "a u64",
        Value::I64(_) => "an i64",
        Value::F32(_) => "an f32",
        Value::F64(_) => "an f64",
        Value::Bool(_) => "a bool",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
    }
}

/// An integer metadata value as i64, whatever its width.
fn as_int(v: &Value) -> Option<i64> {
    Some(match v {
        Value::U8(x) => i64::from(*x),
        Value::I8(x) => i64::from(*x),
        Value::U16(x) => i64::from(*x),
        Value::I16(x) => i64::from(*x),
        Value::U32(x) => i64::from(*x),
        Value::I32(x) => i64::from(*x),
        Value::U64(x) => i64::try_from(*x).ok()?,
        Value::I64(x) => *x,
        _ => return None,
    })
}

impl<'a> Meta<'a> {
    pub fn new(path: &'a Path, md: &'a HashMap<String, Value>) -> Self {
        Meta { path, md }
    }

    pub fn err(&self, msg: impl Into<String>) -> Error {
        Error::model(self.path, msg)
    }

    fn wrong(&self, key: &str, expected: &str, found: &Value) -> Error {
        self.err(format!(
            "metadata `{key}` must be {expected}, found {}",
            type_name(found)
        ))
    }

    fn missing(&self, key: &str) -> Error {
        self.err(format!("metadata `{key}` is missing"))
    }

    pub fn string(&self, key: &str) -> Result<Option<&'a str>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong(key, "a string", v)),
        }
    }

    pub fn require_string(&self, key: &str) -> Result<&'a str> {
        self.string(key)?.ok_or_else(|| self.missing(key))
    }

    fn array(&self, key: &str) -> Result<Option<&'a [Value]>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(self.wrong(key, "an array", v)),
        }
    }

    /// An array of strings, borrowed (a vocabulary is not copied).
    pub fn strings(&self, key: &str) -> Result<Option<Vec<&'a str>>> {
        let Some(a) = self.array(key)? else {
            return Ok(None);
        };
        a.iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.as_str()),
                v => Err(self.err(format!(
                    "metadata `{key}` must be an array of strings, entry {i} is {}",
                    type_name(v)
                ))),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    pub fn require_strings(&self, key: &str) -> Result<Vec<&'a str>> {
        self.strings(key)?.ok_or_else(|| self.missing(key))
    }

    /// An array of numbers (any width) as f64, of length `n` (the vocabulary size).
    pub fn numbers(&self, key: &str, n: usize) -> Result<Option<Vec<f64>>> {
        let Some(a) = self.array(key)? else {
            return Ok(None);
        };
        if a.len() != n {
            return Err(self.err(format!(
                "metadata `{key}` has {} entries but `tokenizer.ggml.tokens` has {n}",
                a.len()
            )));
        }
        a.iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::F32(x) => Ok(f64::from(*x)),
                Value::F64(x) => Ok(*x),
                v => as_int(v).map(|x| x as f64).ok_or_else(|| {
                    self.err(format!(
                        "metadata `{key}` must be an array of numbers, entry {i} is {}",
                        type_name(v)
                    ))
                }),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// `tokenizer.ggml.token_type`, or every token normal when the key is absent.
    pub fn token_types(&self, n: usize) -> Result<Vec<i32>> {
        const KEY: &str = "tokenizer.ggml.token_type";
        Ok(match self.numbers(KEY, n)? {
            Some(v) => v.into_iter().map(|x| x as i32).collect(),
            None => vec![TOKEN_TYPE_NORMAL; n],
        })
    }

    /// A token id, checked against the vocabulary size `n`.
    pub fn token_id(&self, key: &str, n: usize) -> Result<Option<u32>> {
        let Some(v) = self.md.get(key) else {
            return Ok(None);
        };
        let id = as_int(v).ok_or_else(|| self.wrong(key, "an integer", v))?;
        match u32::try_from(id) {
            Ok(id) if (id as usize) < n => Ok(Some(id)),
            _ => Err(self.err(format!(
                "metadata `{key}` = {id} is not a token id (the vocabulary has {n} tokens)"
            ))),
        }
    }

    pub fn flag(&self, key: &str) -> Result<Option<bool>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong(key, "a bool", v)),
        }
    }
}
