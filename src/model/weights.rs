//! Named f32 tensors of a checkpoint, loaded from HF safetensors (single file or sharded with an
//! index), with lookups that fail with the file and tensor name instead of a panic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// The tensors of one checkpoint, keyed by their HF names, all f32 on the CPU.
pub struct Weights {
    /// The file or directory the tensors came from (for error messages).
    pub source: PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    pub fn new(source: impl Into<PathBuf>, tensors: HashMap<String, Tensor>) -> Self {
        Weights {
            source: source.into(),
            tensors,
        }
    }

    /// Loads `model.safetensors`, or every shard listed in `model.safetensors.index.json`.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::model(&index, format!("invalid JSON: {e}")))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::model(&index, "field `weight_map`: missing"))?;
            let mut files: Vec<PathBuf> = map
                .values()
                .filter_map(|f| f.as_str())
                .map(|f| dir.join(f))
                .collect();
            files.sort();
            files.dedup();
            files
        } else {
            return Err(Error::model(
                dir,
                "no model.safetensors or model.safetensors.index.json in this directory",
            ));
        };
        let mut tensors = HashMap::new();
        for file in files {
            if !file.exists() {
                return Err(Error::model(&file, "weights file is missing"));
            }
            let loaded = candle_core::safetensors::load(&file, &Device::Cpu)
                .map_err(|e| Error::model(&file, format!("cannot read safetensors: {e}")))?;
            for (name, t) in loaded {
                let t = match t.dtype() {
                    DType::F32 => t,
                    DType::F16 | DType::BF16 | DType::F64 => t.to_dtype(DType::F32)?,
                    // Integer buffers (e.g. BERT's `embeddings.position_ids`): no architecture
                    // reads one, and a missing weight is reported by name when it is taken.
                    DType::I64 | DType::U32 | DType::U8 => continue,
                    other => {
                        return Err(Error::model(
                            &file,
                            format!("tensor `{name}` has unsupported dtype {other:?}"),
                        ));
                    }
                };
                tensors.insert(name, t);
            }
        }
        Ok(Weights::new(dir, tensors))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Takes a tensor out by name and checks its shape.
    pub fn take(&mut self, name: &str, dims: &[usize]) -> Result<Tensor> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| Error::model(&self.source, format!("tensor `{name}` is missing")))?;
        if t.dims() != dims {
            return Err(Error::model(
                &self.source,
                format!(
                    "tensor `{name}` has shape {:?}, expected {dims:?}",
                    t.dims()
                ),
            ));
        }
        Ok(t)
    }

    /// Like `take`, for tensors a checkpoint may omit (e.g. a tied LM head).
    pub fn take_opt(&mut self, name: &str, dims: &[usize]) -> Result<Option<Tensor>> {
        if self.contains(name) {
            self.take(name, dims).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Takes `name` if `present`, and errors if it is there although it should not be.
    pub fn take_if(&mut self, present: bool, name: &str, dims: &[usize]) -> Result<Option<Tensor>> {
        if present {
            self.take(name, dims).map(Some)
        } else {
            Ok(None)
        }
    }
}
