//! Named f32 tensors of a checkpoint, loaded from HF safetensors (single file or sharded with an
//! index) or handed over by the GGUF reader, with lookups that fail with the file and tensor name
//! instead of a panic. Safetensors files are memory-mapped and each tensor is read and converted
//! to f32 only when an architecture takes it, so loading holds one tensor's copy at a time
//! beside the model being built, not the whole file again.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// The tensors of one checkpoint, keyed by their HF names; taken out as f32 on the CPU.
pub struct Weights {
    /// The file or directory the tensors came from (for error messages).
    pub source: PathBuf,
    /// Tensors already in memory (GGUF).
    tensors: HashMap<String, Tensor>,
    /// Memory-mapped safetensors and the names of their float tensors not taken yet.
    mapped: Option<(MmapedSafetensors, HashSet<String>)>,
}

impl Weights {
    pub fn new(source: impl Into<PathBuf>, tensors: HashMap<String, Tensor>) -> Self {
        Weights {
            source: source.into(),
            tensors,
            mapped: None,
        }
    }

    /// Maps `model.safetensors`, or every shard listed in `model.safetensors.index.json`.
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
        let mut names = HashSet::new();
        for file in &files {
            if !file.exists() {
                return Err(Error::model(file, "weights file is missing"));
            }
            // SAFETY: the files are only read while the model loads, and a checkpoint is not
            // expected to change under a running program (as for any memory-mapped loader).
            let st = unsafe { MmapedSafetensors::new(file) }
                .map_err(|e| Error::model(file, format!("cannot read safetensors: {e}")))?;
            for (name, view) in st.tensors() {
                match view.dtype() {
                    safetensors::Dtype::F32
                    | safetensors::Dtype::F16
                    | safetensors::Dtype::BF16
                    | safetensors::Dtype::F64 => {
                        names.insert(name);
                    }
                    // Integer buffers (e.g. BERT's `embeddings.position_ids`): no architecture
                    // reads one, and a missing weight is reported by name when it is taken.
                    safetensors::Dtype::I64 | safetensors::Dtype::U32 | safetensors::Dtype::U8 => {}
                    other => {
                        return Err(Error::model(
                            file,
                            format!("tensor `{name}` has unsupported dtype {other:?}"),
                        ));
                    }
                }
            }
        }
        // SAFETY: as above.
        let st = unsafe { MmapedSafetensors::multi(&files) }
            .map_err(|e| Error::model(dir, format!("cannot read safetensors: {e}")))?;
        Ok(Weights {
            source: dir.to_path_buf(),
            tensors: HashMap::new(),
            mapped: Some((st, names)),
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
            || self.mapped.as_ref().is_some_and(|(_, n)| n.contains(name))
    }

    /// Takes a tensor out by name, as f32, and checks its shape.
    pub fn take(&mut self, name: &str, dims: &[usize]) -> Result<Tensor> {
        let missing = || Error::model(&self.source, format!("tensor `{name}` is missing"));
        let t = match self.tensors.remove(name) {
            Some(t) => t,
            None => {
                let (st, names) = self.mapped.as_mut().ok_or_else(missing)?;
                if !names.remove(name) {
                    return Err(missing());
                }
                let view = st
                    .get(name)
                    .map_err(|e| Error::model(&self.source, format!("tensor `{name}`: {e}")))?;
                if view.shape() != dims {
                    return Err(Error::model(
                        &self.source,
                        format!(
                            "tensor `{name}` has shape {:?}, expected {dims:?}",
                            view.shape()
                        ),
                    ));
                }
                let t = st
                    .load(name, &Device::Cpu)
                    .map_err(|e| Error::model(&self.source, format!("tensor `{name}`: {e}")))?;
                release_pages(view.data());
                match t.dtype() {
                    DType::F32 => t,
                    _ => t.to_dtype(DType::F32)?,
                }
            }
        };
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

/// Drops the pages of a memory-mapped range from this process (they are re-read from the file
/// if touched again): a tensor copied out of the map then no longer counts twice in memory.
fn release_pages(data: &[u8]) {
    if data.is_empty() {
        return;
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
    let start = data.as_ptr() as usize;
    let begin = start - start % page;
    let end = start + data.len();
    // SAFETY: [begin, end) lies within the read-only private file mapping that holds `data`
    // (mappings are page-aligned); MADV_DONTNEED on such a mapping only discards pages that are
    // re-read from the file on the next access, so no data visible to Rust changes.
    unsafe {
        libc::madvise(begin as *mut libc::c_void, end - begin, libc::MADV_DONTNEED);
    }
}
