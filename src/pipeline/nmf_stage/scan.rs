//! The NMF stage's first pass over the activations table: which layers it has, which rows
//! make up X (chosen layers and positions, each position with every chosen layer once), the
//! (doc_id, position) key of every row of X, and each layer's width. It reads only the key
//! columns (and one `values` row per layer).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use arrow_array::{Int32Array, ListArray, StringArray};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReaderBuilder, RowSelection};

use super::NmfError;
use crate::analysis::nmf::Negatives;
use crate::pipeline::error::Result;
use crate::pipeline::spec::{NegativeHandling, NmfSpec, Positions};
use crate::pipeline::stage_input::{StageInputError, resolve_layers};
use crate::store::StoreError;
use crate::store::reader::{batches, column, open_part, table_parts};
use crate::store::schema::{ACTIVATIONS, GENERATIONS};

/// Where the columns of X come from.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    /// The chosen layers, ascending, their neuron counts and first column in a raw row.
    pub layers: Vec<usize>,
    pub widths: Vec<usize>,
    pub offsets: Vec<usize>,
    /// Values per raw row (sum of widths).
    pub raw: usize,
    pub negatives: Negatives,
}

impl Layout {
    pub fn cols(&self) -> usize {
        self.raw * self.negatives.width()
    }

    /// (layer, neuron, sign) of column `c` of X.
    pub fn column(&self, c: usize) -> (i32, i32, i8) {
        let (raw, sign) = if c < self.raw {
            (c, 1)
        } else {
            (c - self.raw, -1)
        };
        let li = self.offsets.partition_point(|&o| o <= raw) - 1;
        (
            self.layers[li] as i32,
            (raw - self.offsets[li]) as i32,
            sign,
        )
    }
}

/// The result of the scan: which rows of which parts make up X, and the key of each row of X.
pub(super) struct Scan {
    /// Parts with at least one kept row, and the selection of their kept rows (None: all).
    pub files: Vec<(PathBuf, Option<RowSelection>)>,
    pub docs: Vec<String>,
    /// (index in `docs`, position) of each row of X.
    pub keys: Vec<(u32, i32)>,
    pub layout: Layout,
    /// Chosen index of each layer value (None: not chosen).
    pub chosen: Vec<Option<usize>>,
    /// Rows per record batch of the data pass (about 8 MB of values).
    pub batch_rows: usize,
    /// Every part stores `values` as float16 (so X is exact in float16 too).
    pub values_f16: bool,
}

/// Rows per record batch when reading keys only.
pub(super) const KEY_BATCH_ROWS: usize = 64 * 1024;

/// `generations.prompt_tokens` by doc_id.
fn prompt_tokens(run_dir: &Path) -> Result<HashMap<String, i32>> {
    let parts = table_parts(run_dir, &GENERATIONS)?;
    if parts.is_empty() {
        return Err(StageInputError::NoTable {
            dir: run_dir.to_path_buf(),
            table: GENERATIONS.name,
            needed: "to tell prompt from generated positions",
        }
        .into());
    }
    let mut map = HashMap::new();
    for p in &parts {
        let (reader, _) = open_part(p, &["doc_id", "prompt_tokens"], None, KEY_BATCH_ROWS)?;
        for b in batches(reader, p) {
            let b = b?;
            let docs = column::<StringArray>(&b, "doc_id", p, "string")?;
            let n = column::<Int32Array>(&b, "prompt_tokens", p, "int32")?;
            for i in 0..b.num_rows() {
                map.insert(docs.value(i).to_string(), n.value(i));
            }
        }
    }
    Ok(map)
}

/// One (doc_id, position) being collected by the scan.
struct Group {
    key: (u32, i32),
    file: usize,
    has: Vec<bool>,
    count: usize,
}

pub(super) fn scan(run_dir: &Path, spec: &NmfSpec) -> Result<Scan> {
    let files = table_parts(run_dir, &ACTIVATIONS)?;
    if files.is_empty() {
        return Err(StageInputError::NoActivations {
            dir: run_dir.to_path_buf(),
            reads: "NMF factorizes",
        }
        .into());
    }
    // The layers the table has.
    let mut present = BTreeSet::new();
    let mut values_f16 = true;
    for f in &files {
        let file = File::open(f).map_err(|e| StoreError::io(f, e))?;
        let b = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| StoreError::parquet(f, e))?;
        values_f16 &= matches!(
            b.schema().field_with_name("values").map(|x| x.data_type()),
            Ok(arrow_schema::DataType::List(item)) if item.data_type() == &arrow_schema::DataType::Float16
        );
        let (reader, _) = open_part(f, &["layer"], None, KEY_BATCH_ROWS)?;
        let mut last = None;
        for b in batches(reader, f) {
            let b = b?;
            for &l in column::<Int32Array>(&b, "layer", f, "int32")?.values() {
                if last != Some(l) {
                    if l < 0 {
                        return Err(StageInputError::NegativeLayer {
                            path: f.clone(),
                            layer: l,
                        }
                        .into());
                    }
                    present.insert(l);
                    last = Some(l);
                }
            }
        }
    }
    let layers = resolve_layers(&spec.layers, &present, run_dir, "nmf.layers")?;
    let mut chosen = vec![None; *present.last().unwrap_or(&0) as usize + 1];
    for (i, &l) in layers.iter().enumerate() {
        chosen[l] = Some(i);
    }
    let prompts = match spec.positions {
        Positions::All => None,
        _ => Some(prompt_tokens(run_dir)?),
    };

    // The kept rows, their keys and checks.
    let n = layers.len();
    let mut docs: Vec<String> = Vec::new();
    let mut doc_index: HashMap<String, u32> = HashMap::new();
    let mut keys = Vec::new();
    let mut seen = HashSet::new();
    let mut kept = Vec::new();
    // First (file, row) of each chosen layer, to read its width.
    let mut first: Vec<Option<(usize, usize)>> = vec![None; n];
    let mut group: Option<Group> = None;
    let finish = |g: &Group, docs: &[String]| -> Result<(), NmfError> {
        if g.count < n {
            let missing = (0..n).find(|&i| !g.has[i]).unwrap();
            return Err(NmfError::MissingLayerRow {
                path: files[g.file].clone(),
                doc: docs[g.key.0 as usize].clone(),
                position: g.key.1,
                layer: layers[missing],
            });
        }
        Ok(())
    };
    for (fi, f) in files.iter().enumerate() {
        let (reader, total) = open_part(f, &["doc_id", "position", "layer"], None, KEY_BATCH_ROWS)?;
        let mut ranges: Vec<Range<usize>> = Vec::new();
        let mut row = 0usize;
        // The current document, its index and prompt length.
        let mut doc: Option<(String, u32, i32)> = None;
        for b in batches(reader, f) {
            let b = b?;
            let d = column::<StringArray>(&b, "doc_id", f, "string")?;
            let p = column::<Int32Array>(&b, "position", f, "int32")?;
            let l = column::<Int32Array>(&b, "layer", f, "int32")?;
            for i in 0..b.num_rows() {
                let r = row + i;
                let Some(ci) = chosen.get(l.value(i) as usize).copied().flatten() else {
                    continue;
                };
                let id = d.value(i);
                if doc.as_ref().is_none_or(|(s, _, _)| s != id) {
                    let index = match doc_index.get(id) {
                        Some(&x) => x,
                        None => {
                            let x = docs.len() as u32;
                            docs.push(id.to_string());
                            doc_index.insert(id.to_string(), x);
                            x
                        }
                    };
                    let plen = match &prompts {
                        None => 0,
                        Some(m) => *m.get(id).ok_or_else(|| NmfError::NoGenerationsRow {
                            path: f.clone(),
                            doc: id.to_string(),
                        })?,
                    };
                    doc = Some((id.to_string(), index, plen));
                }
                let (_, index, plen) = doc.as_ref().unwrap();
                let pos = p.value(i);
                let keep = match spec.positions {
                    Positions::All => true,
                    Positions::Prompt => pos < *plen,
                    Positions::Generated => pos >= *plen,
                };
                if !keep {
                    continue;
                }
                let key = (*index, pos);
                if group.as_ref().is_none_or(|g| g.key != key) {
                    if let Some(g) = &group {
                        finish(g, &docs)?;
                    }
                    if !seen.insert(key) {
                        return Err(NmfError::PositionTwice {
                            path: f.clone(),
                            doc: id.to_string(),
                            position: pos,
                        }
                        .into());
                    }
                    group = Some(Group {
                        key,
                        file: fi,
                        has: vec![false; n],
                        count: 0,
                    });
                }
                let g = group.as_mut().unwrap();
                if g.has[ci] {
                    return Err(NmfError::LayerRowTwice {
                        path: f.clone(),
                        doc: id.to_string(),
                        position: pos,
                        layer: layers[ci],
                    }
                    .into());
                }
                g.has[ci] = true;
                g.count += 1;
                if g.count == n {
                    keys.push(key);
                }
                first[ci].get_or_insert((kept.len(), r));
                match ranges.last_mut() {
                    Some(last) if last.end == r => last.end = r + 1,
                    _ => ranges.push(r..r + 1),
                }
            }
            row += b.num_rows();
        }
        if !ranges.is_empty() {
            let all = ranges.len() == 1 && ranges[0] == (0..total);
            let sel =
                (!all).then(|| RowSelection::from_consecutive_ranges(ranges.into_iter(), total));
            kept.push((f.clone(), sel));
        }
    }
    if let Some(g) = &group {
        finish(g, &docs)?;
    }
    if keys.is_empty() {
        return Err(NmfError::NoPositions {
            dir: run_dir.to_path_buf(),
            positions: match spec.positions {
                Positions::All => "all",
                Positions::Prompt => "prompt",
                Positions::Generated => "generated",
            },
        }
        .into());
    }

    // Neurons per chosen layer, from its first row.
    let mut widths = vec![0usize; n];
    for (ki, (f, _)) in kept.iter().enumerate() {
        let mut rows: Vec<(usize, usize)> = first
            .iter()
            .enumerate()
            .filter_map(|(ci, x)| x.filter(|x| x.0 == ki).map(|x| (x.1, ci)))
            .collect();
        if rows.is_empty() {
            continue;
        }
        rows.sort_unstable();
        let total = open_part(f, &["layer"], None, 1)?.1;
        let sel = RowSelection::from_consecutive_ranges(rows.iter().map(|&(r, _)| r..r + 1), total);
        let (reader, _) = open_part(f, &["values"], Some(sel), rows.len())?;
        let mut it = rows.iter();
        for b in batches(reader, f) {
            let b = b?;
            let v = column::<ListArray>(&b, "values", f, "a list of floats")?;
            for i in 0..b.num_rows() {
                let &(_, ci) = it.next().expect("one row per selected row");
                widths[ci] = v.value_length(i) as usize;
            }
        }
    }
    let mut offsets = Vec::with_capacity(n);
    let mut raw = 0;
    for (&w, &l) in widths.iter().zip(&layers) {
        if w == 0 {
            return Err(NmfError::NoNeurons {
                dir: run_dir.to_path_buf(),
                layer: l,
            }
            .into());
        }
        offsets.push(raw);
        raw += w;
    }
    let negatives = match spec.negative {
        NegativeHandling::Clip => Negatives::Clip,
        NegativeHandling::Split => Negatives::Split,
    };
    let max_width = *widths.iter().max().unwrap();
    Ok(Scan {
        files: kept,
        docs,
        keys,
        layout: Layout {
            layers,
            widths,
            offsets,
            raw,
            negatives,
        },
        chosen,
        values_f16,
        batch_rows: ((8 << 20) / (max_width * 4)).clamp(16, 8192),
    })
}
