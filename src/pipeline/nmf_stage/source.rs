//! X for the NMF solver, read from the activations table: the rows the scan kept, each row of X
//! gathered from one activation row per chosen layer, negatives handled, handed over in chunks;
//! checked against the scan (a table that changes while being read is an error), and spilled to
//! a scratch file on the first pass when streaming (see `spill`).

use std::fs::File;
use std::path::Path;

use arrow_array::{Array, Float16Array, Float32Array, Int32Array, ListArray, StringArray};
use half::slice::HalfFloatSliceExt;

use super::NmfError;
use super::scan::Scan;
use super::spill::Spill;
use crate::analysis::nmf::RowSource;
use crate::error::{Error, Result};
use crate::pipeline::stage_input::StageInputError;
use crate::store::reader::{batches, column, open_part};

/// X from the activations table: the scan's kept rows, `n` activation rows per row of X.
pub(super) struct ActivationsSource<'a> {
    pub scan: &'a Scan,
    pub chunk_rows: usize,
    pub on_chunk: &'a dyn Fn(),
    pub spill: Option<Spill>,
}

impl RowSource for ActivationsSource<'_> {
    fn rows(&self) -> usize {
        self.scan.keys.len()
    }

    fn cols(&self) -> usize {
        self.scan.layout.cols()
    }

    fn for_each_chunk(&mut self, f: &mut dyn FnMut(usize, &[f32]) -> Result<()>) -> Result<()> {
        let s = self.scan;
        let lay = &s.layout;
        let n = lay.layers.len();
        let cols = lay.cols();
        if let Some(sp) = &self.spill
            && sp.ready
        {
            return sp.read(s.keys.len(), cols, self.chunk_rows, self.on_chunk, f);
        }
        let mut spill_file = match &mut self.spill {
            Some(sp) if !sp.failed => match File::create(&sp.path) {
                Ok(file) => Some(std::io::BufWriter::with_capacity(4 << 20, file)),
                Err(_) => {
                    sp.failed = true;
                    None
                }
            },
            _ => None,
        };
        let mut half_buf = Vec::new();
        let changed = |path: &Path, what: String| {
            Error::external(NmfError::Changed {
                path: path.to_path_buf(),
                what,
            })
        };
        let mut raw = vec![0f32; lay.raw];
        let mut has = vec![false; n];
        let mut filled = 0;
        let mut chunk: Vec<f32> = Vec::with_capacity(self.chunk_rows * cols);
        let (mut row, mut first) = (0usize, 0usize);
        for (path, sel) in &s.files {
            let (reader, _) = open_part(
                path,
                &["doc_id", "position", "layer", "values"],
                sel.clone(),
                s.batch_rows,
            )
            .map_err(Error::external)?;
            for b in batches(reader, path) {
                let b = b.map_err(Error::external)?;
                let d = col::<StringArray>(&b, "doc_id", path, "string")?;
                let p = col::<Int32Array>(&b, "position", path, "int32")?;
                let l = col::<Int32Array>(&b, "layer", path, "int32")?;
                let v = col::<ListArray>(&b, "values", path, "a list of floats")?;
                let f16 = v.values().as_any().downcast_ref::<Float16Array>();
                let f32s = v.values().as_any().downcast_ref::<Float32Array>();
                if (f16.is_none() && f32s.is_none()) || v.values().null_count() > 0 {
                    return Err(Error::external(StageInputError::ValuesType {
                        path: path.to_path_buf(),
                        found: v.data_type().to_string(),
                    }));
                }
                let offs = v.value_offsets();
                for i in 0..b.num_rows() {
                    let Some(&(doc, pos)) = s.keys.get(row) else {
                        return Err(changed(path, "more rows than scanned".into()));
                    };
                    let Some(ci) = s.chosen.get(l.value(i) as usize).copied().flatten() else {
                        return Err(changed(path, format!("layer {}", l.value(i))));
                    };
                    if p.value(i) != pos || d.value(i) != s.docs[doc as usize] || has[ci] {
                        return Err(changed(
                            path,
                            format!("doc `{}` position {}", d.value(i), p.value(i)),
                        ));
                    }
                    let (a, e) = (offs[i] as usize, offs[i + 1] as usize);
                    let w = lay.widths[ci];
                    if e - a != w {
                        return Err(Error::external(StageInputError::Width {
                            path: path.to_path_buf(),
                            doc: d.value(i).to_string(),
                            position: pos,
                            layer: lay.layers[ci],
                            found: e - a,
                            expected: w,
                        }));
                    }
                    let dst = &mut raw[lay.offsets[ci]..lay.offsets[ci] + w];
                    match (f16, f32s) {
                        (Some(h), _) => h.values()[a..e].convert_to_f32_slice(dst),
                        (_, Some(x)) => dst.copy_from_slice(&x.values()[a..e]),
                        _ => unreachable!("checked above"),
                    }
                    has[ci] = true;
                    filled += 1;
                    if filled < n {
                        continue;
                    }
                    if let Some(bad) = raw.iter().position(|x| !x.is_finite()) {
                        let li = lay.offsets.partition_point(|&o| o <= bad) - 1;
                        return Err(Error::external(StageInputError::NotFinite {
                            path: path.to_path_buf(),
                            doc: d.value(i).to_string(),
                            position: pos,
                            layer: lay.layers[li],
                            neuron: bad - lay.offsets[li],
                            value: raw[bad],
                        }));
                    }
                    lay.negatives.apply(&raw, &mut chunk);
                    has.fill(false);
                    filled = 0;
                    row += 1;
                    if row - first == self.chunk_rows {
                        if let Some(sp) = &mut self.spill {
                            sp.write(&mut spill_file, &chunk, &mut half_buf);
                        }
                        (self.on_chunk)();
                        f(first, &chunk)?;
                        chunk.clear();
                        first = row;
                    }
                }
            }
        }
        if row != s.keys.len() || filled != 0 {
            let path = &s.files.last().expect("at least one part").0;
            return Err(changed(path, "fewer rows than scanned".into()));
        }
        if !chunk.is_empty() {
            if let Some(sp) = &mut self.spill {
                sp.write(&mut spill_file, &chunk, &mut half_buf);
            }
            (self.on_chunk)();
            f(first, &chunk)?;
        }
        if let (Some(sp), Some(w)) = (&mut self.spill, spill_file) {
            // Flushed, not synced: a scratch file that nothing reads after a crash.
            match w.into_inner() {
                Ok(_) => {
                    sp.ready = true;
                    sp.bytes = (s.keys.len() * cols * if sp.f16 { 2 } else { 4 }) as u64;
                }
                Err(_) => {
                    sp.failed = true;
                    let _ = std::fs::remove_file(&sp.path);
                }
            }
        }
        Ok(())
    }
}

/// A column of a batch (see `store::reader::column`), its error carried through the solver's
/// callback as the engine's `External` error.
fn col<'a, T: 'static>(
    b: &'a arrow_array::RecordBatch,
    name: &str,
    path: &Path,
    expected: &str,
) -> Result<&'a T> {
    column::<T>(b, name, path, expected).map_err(Error::external)
}
