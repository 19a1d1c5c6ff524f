//! The neurons stage's reads of the activations table: the documents' dataset order (from
//! `generations`), which layers the table has (its `layer` column only), and the one pass over
//! the chosen layers' rows (a Parquet row selection skips the others) that feeds every row to its
//! layer's [`LayerAccumulator`], one record batch at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use arrow_array::{
    Array, Float16Array, Float32Array, Int32Array, Int64Array, ListArray, StringArray,
};
use half::slice::HalfFloatSliceExt;
use parquet::arrow::arrow_reader::RowSelection;

use super::NeuronsError;
use crate::analysis::neurons::LayerAccumulator;
use crate::pipeline::error::Result;
use crate::pipeline::stage_input::StageInputError;
use crate::store::reader::{batches, column, open_part, table_parts};
use crate::store::schema::GENERATIONS;

/// Rows per record batch when reading keys only.
const KEY_BATCH_ROWS: usize = 64 * 1024;

/// The run's documents: doc_id <-> dataset index (`generations.index`), the order that breaks
/// ties between equal activations whatever the shards.
#[derive(Debug, Default)]
pub(super) struct Docs {
    pub index: HashMap<String, u32>,
    pub id: HashMap<u32, String>,
}

impl Docs {
    pub fn read(run_dir: &Path) -> Result<Docs> {
        let parts = table_parts(run_dir, &GENERATIONS)?;
        if parts.is_empty() {
            return Err(StageInputError::NoTable {
                dir: run_dir.to_path_buf(),
                table: GENERATIONS.name,
                needed: "for the documents' dataset order (the tie-break of equal activations)",
            }
            .into());
        }
        let mut docs = Docs::default();
        for p in &parts {
            let (reader, _) = open_part(p, &["doc_id", "index"], None, KEY_BATCH_ROWS)?;
            for b in batches(reader, p) {
                let b = b?;
                let ids = column::<StringArray>(&b, "doc_id", p, "string")?;
                let index = column::<Int64Array>(&b, "index", p, "int64")?;
                for i in 0..b.num_rows() {
                    let (doc, x) = (ids.value(i), index.value(i));
                    let Ok(x32) = u32::try_from(x) else {
                        return Err(NeuronsError::DocIndex {
                            path: p.clone(),
                            doc: doc.to_string(),
                            index: x,
                        }
                        .into());
                    };
                    if docs.index.insert(doc.to_string(), x32).is_some()
                        || docs.id.insert(x32, doc.to_string()).is_some()
                    {
                        return Err(NeuronsError::DocTwice {
                            path: p.clone(),
                            doc: doc.to_string(),
                        }
                        .into());
                    }
                }
            }
        }
        Ok(docs)
    }
}

/// The layers of the activations table and its rows per layer, per part.
pub(super) struct Layers {
    pub present: BTreeSet<i32>,
    /// Per part: rows per layer.
    pub rows: Vec<BTreeMap<i32, u64>>,
}

/// Reads the `layer` column of every part.
pub(super) fn layers(parts: &[PathBuf]) -> Result<Layers> {
    let mut out = Layers {
        present: BTreeSet::new(),
        rows: Vec::new(),
    };
    for f in parts {
        let (reader, _) = open_part(f, &["layer"], None, KEY_BATCH_ROWS)?;
        let mut rows = BTreeMap::new();
        for b in batches(reader, f) {
            let b = b?;
            for &l in column::<Int32Array>(&b, "layer", f, "int32")?.values() {
                if l < 0 {
                    return Err(StageInputError::NegativeLayer {
                        path: f.clone(),
                        layer: l,
                    }
                    .into());
                }
                *rows.entry(l).or_insert(0u64) += 1;
            }
        }
        out.present.extend(rows.keys());
        out.rows.push(rows);
    }
    Ok(out)
}

/// The accumulators of the chosen layers, filled by [`accumulate`].
pub(super) struct Accumulators {
    /// The chosen layers, ascending.
    pub layers: Vec<usize>,
    /// Index in `layers` of each layer value (None: not chosen).
    chosen: Vec<Option<usize>>,
    /// One per chosen layer, created at its first row (which sets its width).
    pub acc: Vec<Option<LayerAccumulator>>,
    k: usize,
}

impl Accumulators {
    pub fn new(layers: Vec<usize>, k: usize) -> Self {
        let mut chosen = vec![None; layers.last().map_or(0, |&l| l + 1)];
        for (i, &l) in layers.iter().enumerate() {
            chosen[l] = Some(i);
        }
        let acc = vec![None; layers.len()];
        Accumulators {
            layers,
            chosen,
            acc,
            k,
        }
    }

    fn index(&self, layer: i32) -> Option<usize> {
        self.chosen.get(layer as usize).copied().flatten()
    }
}

/// One layer's rows of a record batch, gathered before they go to its accumulator.
#[derive(Default)]
struct Gathered {
    keys: Vec<(u32, u32)>,
    values: Vec<f32>,
}

/// Reads the chosen layers' rows of `part` (`all`: every row is of a chosen layer) into `accs`;
/// `on_rows(n)` after every record batch of n rows.
pub(super) fn accumulate(
    part: &Path,
    all: bool,
    docs: &Docs,
    accs: &mut Accumulators,
    on_rows: &mut dyn FnMut(u64),
) -> Result<()> {
    let selection = if all {
        None
    } else {
        Some(selection(part, accs)?)
    };
    let width = accs
        .acc
        .iter()
        .flatten()
        .map(LayerAccumulator::neurons)
        .max();
    // About 8 MB of values per batch once a width is known.
    let batch_rows = width.map_or(256, |w| ((8 << 20) / (4 * w.max(1))).clamp(16, 8192));
    let (reader, _) = open_part(
        part,
        &["doc_id", "position", "layer", "values"],
        selection,
        batch_rows,
    )?;
    let mut gathered: Vec<Gathered> = (0..accs.layers.len())
        .map(|_| Gathered::default())
        .collect();
    // The last document's id and dataset index (rows come document by document).
    let mut last: Option<(String, u32)> = None;
    for b in batches(reader, part) {
        let b = b?;
        let d = column::<StringArray>(&b, "doc_id", part, "string")?;
        let p = column::<Int32Array>(&b, "position", part, "int32")?;
        let l = column::<Int32Array>(&b, "layer", part, "int32")?;
        let v = column::<ListArray>(&b, "values", part, "a list of floats")?;
        let f16 = v.values().as_any().downcast_ref::<Float16Array>();
        let f32s = v.values().as_any().downcast_ref::<Float32Array>();
        if (f16.is_none() && f32s.is_none()) || v.values().null_count() > 0 {
            return Err(StageInputError::ValuesType {
                path: part.to_path_buf(),
                found: v.data_type().to_string(),
            }
            .into());
        }
        let offs = v.value_offsets();
        for i in 0..b.num_rows() {
            let Some(ci) = accs.index(l.value(i)) else {
                continue;
            };
            let id = d.value(i);
            if last.as_ref().is_none_or(|(s, _)| s != id) {
                let Some(&x) = docs.index.get(id) else {
                    return Err(NeuronsError::NoGenerationsRow {
                        path: part.to_path_buf(),
                        doc: id.to_string(),
                    }
                    .into());
                };
                last = Some((id.to_string(), x));
            }
            let doc = last.as_ref().expect("set above").1;
            let position = p.value(i);
            let Ok(pos) = u32::try_from(position) else {
                return Err(NeuronsError::NegativePosition {
                    path: part.to_path_buf(),
                    doc: id.to_string(),
                    position,
                }
                .into());
            };
            let (a, e) = (offs[i] as usize, offs[i + 1] as usize);
            let layer = accs.layers[ci];
            let k = accs.k;
            let acc = accs.acc[ci].get_or_insert_with(|| LayerAccumulator::new(e - a, k));
            if e - a != acc.neurons() {
                return Err(StageInputError::Width {
                    path: part.to_path_buf(),
                    doc: id.to_string(),
                    position,
                    layer,
                    found: e - a,
                    expected: acc.neurons(),
                }
                .into());
            }
            let g = &mut gathered[ci];
            let start = g.values.len();
            g.values.resize(start + (e - a), 0.0);
            let dst = &mut g.values[start..];
            match (f16, f32s) {
                (Some(h), _) => h.values()[a..e].convert_to_f32_slice(dst),
                (_, Some(x)) => dst.copy_from_slice(&x.values()[a..e]),
                _ => unreachable!("checked above"),
            }
            if let Some(bad) = dst.iter().position(|x| !x.is_finite()) {
                return Err(StageInputError::NotFinite {
                    path: part.to_path_buf(),
                    doc: id.to_string(),
                    position,
                    layer,
                    neuron: bad,
                    value: dst[bad],
                }
                .into());
            }
            g.keys.push((doc, pos));
        }
        for (ci, g) in gathered.iter_mut().enumerate() {
            if let Some(acc) = accs.acc[ci].as_mut()
                && !g.keys.is_empty()
            {
                acc.push_rows(&g.keys, &g.values);
            }
            g.keys.clear();
            g.values.clear();
        }
        on_rows(b.num_rows() as u64);
    }
    Ok(())
}

/// The rows of `part` whose layer is chosen.
fn selection(part: &Path, accs: &Accumulators) -> Result<RowSelection> {
    let (reader, total) = open_part(part, &["layer"], None, KEY_BATCH_ROWS)?;
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let mut row = 0usize;
    for b in batches(reader, part) {
        let b = b?;
        for (i, &l) in column::<Int32Array>(&b, "layer", part, "int32")?
            .values()
            .iter()
            .enumerate()
        {
            if accs.index(l).is_some() {
                let r = row + i;
                match ranges.last_mut() {
                    Some(last) if last.end == r => last.end = r + 1,
                    _ => ranges.push(r..r + 1),
                }
            }
        }
        row += b.num_rows();
    }
    Ok(RowSelection::from_consecutive_ranges(
        ranges.into_iter(),
        total,
    ))
}
