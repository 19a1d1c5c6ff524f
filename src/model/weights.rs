//! Named tensors of a checkpoint, loaded from HF safetensors (single file or sharded with an
//! index) or handed over by the GGUF reader, with lookups that fail with the file and tensor name
//! instead of a panic. Safetensors files are memory-mapped and each tensor is read and converted
//! only when an architecture takes it, so loading holds one tensor's copy at a time beside the
//! model being built, not the whole file again. Matrices are taken in the model's weight dtype
//! (`take_matrix`), every other tensor as f32 holding that dtype's values (`take`; see
//! `precision`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// The tensors of one checkpoint, keyed by their HF names; taken out on the CPU.
pub struct Weights {
    /// The file or directory the tensors came from (for error messages).
    pub source: PathBuf,
    /// The dtype the checkpoint stores its matrices in (`precision::WeightDtype::resolve`'s input).
    pub stored: DType,
    /// The dtype matrices are taken in; other tensors are rounded to it and held as f32.
    pub dtype: DType,
    /// Tensors already in memory (GGUF).
    tensors: HashMap<String, Tensor>,
    /// Memory-mapped safetensors and the names of their float tensors not taken yet.
    mapped: Option<(MmapedSafetensors, HashSet<String>)>,
    /// A reader that makes each tensor on demand (GGUF: read and dequantized to f32), and the
    /// names not taken yet.
    lazy: Option<(LazyRead, HashSet<String>)>,
}

/// Reads one tensor by its HF name (see `Weights::lazy`).
pub type LazyRead = Box<dyn FnMut(&str) -> Result<Tensor>>;

impl Weights {
    /// Tensors already in memory; `stored` is the dtype the file holds its matrices in.
    pub fn new(
        source: impl Into<PathBuf>,
        tensors: HashMap<String, Tensor>,
        stored: DType,
    ) -> Self {
        Weights {
            source: source.into(),
            stored,
            dtype: DType::F32,
            tensors,
            mapped: None,
            lazy: None,
        }
    }

    /// Tensors `names` made on demand by `read` (called once per tensor taken); `stored` is the
    /// dtype the file holds its matrices in.
    pub fn lazy(
        source: impl Into<PathBuf>,
        names: HashSet<String>,
        stored: DType,
        read: LazyRead,
    ) -> Self {
        Weights {
            lazy: Some((read, names)),
            ..Weights::new(source, HashMap::new(), stored)
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
        // The dtypes of the matrices (rank >= 2 float tensors).
        let mut matrix_dtypes: Vec<safetensors::Dtype> = Vec::new();
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
                        if view.shape().len() >= 2 && !matrix_dtypes.contains(&view.dtype()) {
                            matrix_dtypes.push(view.dtype());
                        }
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
        let stored = match matrix_dtypes[..] {
            [safetensors::Dtype::BF16] => DType::BF16,
            [safetensors::Dtype::F16] => DType::F16,
            _ => DType::F32,
        };
        Ok(Weights {
            source: dir.to_path_buf(),
            stored,
            dtype: DType::F32,
            tensors: HashMap::new(),
            mapped: Some((st, names)),
            lazy: None,
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
            || self.mapped.as_ref().is_some_and(|(_, n)| n.contains(name))
            || self.lazy.as_ref().is_some_and(|(_, n)| n.contains(name))
    }

    /// Takes a tensor out by name, as f32 holding values of the weight dtype, and checks its shape.
    pub fn take(&mut self, name: &str, dims: &[usize]) -> Result<Tensor> {
        let t = self.take_stored(name, dims)?;
        Ok(if self.dtype != DType::F32 && t.dtype() != self.dtype {
            t.to_dtype(self.dtype)?.to_dtype(DType::F32)?
        } else {
            t.to_dtype(DType::F32)?
        })
    }

    /// Takes a matrix (linear weight, embedding, unembedding) out by name, in the weight dtype,
    /// and checks its shape.
    pub fn take_matrix(&mut self, name: &str, dims: &[usize]) -> Result<Tensor> {
        let t = self.take_stored(name, dims)?;
        Ok(t.to_dtype(self.dtype)?)
    }

    /// Like `take_matrix`, for matrices a checkpoint may omit (e.g. a tied LM head).
    pub fn take_matrix_opt(&mut self, name: &str, dims: &[usize]) -> Result<Option<Tensor>> {
        if self.contains(name) {
            self.take_matrix(name, dims).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Takes a tensor out by name, in the dtype the file stores it in (f64 as f32), and checks
    /// its shape.
    fn take_stored(&mut self, name: &str, dims: &[usize]) -> Result<Tensor> {
        let missing = || Error::model(&self.source, format!("tensor `{name}` is missing"));
        let t = match self.tensors.remove(name) {
            Some(t) => t,
            None if self.lazy.as_ref().is_some_and(|(_, n)| n.contains(name)) => {
                let (read, names) = self.lazy.as_mut().expect("checked");
                names.remove(name);
                read(name)?
            }
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
                    DType::F64 => t.to_dtype(DType::F32)?,
                    _ => t,
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
