//! Reading a run's representations back for comparison: the `residuals` or `activations` table
//! (one `values` list per document, position and layer) indexed by document ([`Reps::open`]: one
//! pass over the key columns), then the rows of any list of (document, positions) read as one
//! matrix per layer ([`Reps::read`]: a Parquet row selection per part, only the `values`
//! column). Memory: the index (a few words per document) and the rows asked for.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use arrow_array::{Array, Float16Array, Float32Array, Int32Array, ListArray, StringArray};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReaderBuilder, RowSelection, RowSelector};

use crate::store::StoreError;
use crate::store::reader::{batches, column, open_part, table_parts};
use crate::store::schema::{ACTIVATIONS, RESIDUALS, TableDef};

/// Which representation a comparison reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The residual stream (table `residuals`; layer = residual index).
    Residuals,
    /// MLP activations (table `activations`; layer = block index).
    Activations,
}

impl Source {
    pub fn table(self) -> &'static TableDef {
        match self {
            Source::Residuals => &RESIDUALS,
            Source::Activations => &ACTIVATIONS,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.table().name
    }
}

/// What can go wrong reading representations.
#[derive(Debug, thiserror::Error)]
pub enum RepsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "{}: no {table} table (no {table}/part-*.parquet); record it with `analyses.{table}` in the run's pipeline",
        dir.display()
    )]
    Missing { dir: PathBuf, table: &'static str },
    #[error(
        "{}: the rows of document `{doc_id}` are not stored as one block of (position, layer) rows in position order; was the table written by tokenlens?",
        path.display()
    )]
    Layout { path: PathBuf, doc_id: String },
    #[error(
        "{}: layer {layer} has rows of {found} values, layer {layer} elsewhere {expected}",
        path.display()
    )]
    Width {
        path: PathBuf,
        layer: i32,
        found: usize,
        expected: usize,
    },
    #[error(
        "{}: document `{doc_id}` has no {table} rows at positions {}..{}",
        dir.display(), range.start, range.end
    )]
    NoRows {
        dir: PathBuf,
        table: &'static str,
        doc_id: String,
        range: Range<usize>,
    },
}

/// Where one document's rows are: `count` positions from `first` in part `part`, starting at
/// row `row`, all layers of a position together.
#[derive(Debug, Clone, Copy)]
struct DocRows {
    part: usize,
    row: usize,
    first: usize,
    count: usize,
}

/// A run's representation table, indexed by document.
#[derive(Debug)]
pub struct Reps {
    pub dir: PathBuf,
    pub source: Source,
    /// The layers the table has, in the order every position stores them.
    pub layers: Vec<i32>,
    /// Values per row of each layer.
    pub widths: Vec<usize>,
    parts: Vec<PathBuf>,
    docs: HashMap<String, DocRows>,
}

/// Rows per record batch when reading keys.
const KEY_BATCH_ROWS: usize = 64 * 1024;

impl Reps {
    /// Indexes `source`'s table of the run in `dir` (reads its key columns once).
    pub fn open(dir: &Path, source: Source) -> Result<Reps, RepsError> {
        let table = source.table();
        let parts = table_parts(dir, table)?;
        if parts.is_empty() {
            return Err(RepsError::Missing {
                dir: dir.to_path_buf(),
                table: table.name,
            });
        }
        let mut docs: HashMap<String, DocRows> = HashMap::new();
        let mut layers: Option<Vec<i32>> = None;
        for (pi, path) in parts.iter().enumerate() {
            let (reader, _) =
                open_part(path, &["doc_id", "position", "layer"], None, KEY_BATCH_ROWS)?;
            // The document being read: its rows, and the layers of its first position.
            let mut cur: Option<(String, DocRows, Vec<i32>, usize)> = None;
            let mut row = 0usize;
            let layout = |doc: &str| RepsError::Layout {
                path: path.clone(),
                doc_id: doc.to_string(),
            };
            let mut close = |c: Option<(String, DocRows, Vec<i32>, usize)>,
                             layers: &mut Option<Vec<i32>>|
             -> Result<(), RepsError> {
                if let Some((doc, mut d, ls, n)) = c {
                    if ls.is_empty() || n % ls.len() != 0 {
                        return Err(layout(&doc));
                    }
                    match layers {
                        Some(l) if *l != ls => return Err(layout(&doc)),
                        Some(_) => {}
                        None => *layers = Some(ls.clone()),
                    }
                    d.count = n / ls.len();
                    if docs.insert(doc.clone(), d).is_some() {
                        return Err(layout(&doc));
                    }
                }
                Ok(())
            };
            for b in batches(reader, path) {
                let b = b?;
                let ids = column::<StringArray>(&b, "doc_id", path, "string")?;
                let pos = column::<Int32Array>(&b, "position", path, "int32")?;
                let lay = column::<Int32Array>(&b, "layer", path, "int32")?;
                for i in 0..b.num_rows() {
                    let (doc, p, l) = (ids.value(i), pos.value(i), lay.value(i));
                    let same = cur.as_ref().is_some_and(|c| c.0 == doc);
                    if !same {
                        close(cur.take(), &mut layers)?;
                        if p < 0 {
                            return Err(layout(doc));
                        }
                        let d = DocRows {
                            part: pi,
                            row,
                            first: p as usize,
                            count: 0,
                        };
                        cur = Some((doc.to_string(), d, Vec::new(), 0));
                    }
                    let c = cur.as_mut().expect("a document is open");
                    // Row n of the document is position first + n / L, layer n % L; the
                    // first position's rows define L.
                    let n = c.3;
                    let first_pos = p as usize == c.1.first;
                    if first_pos && (c.2.len() == n) {
                        c.2.push(l);
                    } else {
                        let nl = c.2.len();
                        if nl == 0 || p as usize != c.1.first + n / nl || l != c.2[n % nl] {
                            return Err(layout(doc));
                        }
                    }
                    c.3 += 1;
                    row += 1;
                }
            }
            close(cur.take(), &mut layers)?;
        }
        let layers = layers.unwrap_or_default();
        let mut reps = Reps {
            dir: dir.to_path_buf(),
            source,
            widths: vec![0; layers.len()],
            layers,
            parts,
            docs,
        };
        reps.widths = reps.measure_widths()?;
        Ok(reps)
    }

    /// The widths of each layer, from the first document's first position.
    fn measure_widths(&self) -> Result<Vec<usize>, RepsError> {
        let Some((doc, d)) = self.docs.iter().min_by_key(|(_, d)| (d.part, d.row)) else {
            return Ok(vec![]);
        };
        let mut widths = Vec::with_capacity(self.layers.len());
        self.read_doc_rows(d.part, &[(d.row, self.layers.len())], |v| {
            widths.push(v.len());
            Ok(())
        })?;
        if widths.contains(&0) {
            return Err(RepsError::Layout {
                path: self.parts[d.part].clone(),
                doc_id: doc.clone(),
            });
        }
        Ok(widths)
    }

    /// The documents the table has.
    pub fn doc_ids(&self) -> impl Iterator<Item = &str> {
        self.docs.keys().map(String::as_str)
    }

    /// The positions stored for a document.
    pub fn positions(&self, doc_id: &str) -> Option<Range<usize>> {
        self.docs.get(doc_id).map(|d| d.first..d.first + d.count)
    }

    /// The rows of `items` (document, positions), in item order: one matrix per layer (in
    /// `self.layers` order), row-major, a row per position, `self.widths[l]` columns.
    pub fn read(&self, items: &[(&str, Range<usize>)]) -> Result<Vec<Vec<f32>>, RepsError> {
        let nl = self.layers.len();
        // Per part: (first row, row count, output row of the first position).
        let mut by_part: HashMap<usize, Vec<(usize, usize, usize)>> = HashMap::new();
        let mut out_row = 0;
        for (doc, range) in items {
            let d = self.docs.get(*doc).filter(|d| {
                range.start >= d.first && range.end <= d.first + d.count && !range.is_empty()
            });
            let Some(d) = d else {
                return Err(RepsError::NoRows {
                    dir: self.dir.clone(),
                    table: self.source.as_str(),
                    doc_id: doc.to_string(),
                    range: range.clone(),
                });
            };
            let row = d.row + (range.start - d.first) * nl;
            by_part
                .entry(d.part)
                .or_default()
                .push((row, range.len() * nl, out_row));
            out_row += range.len();
        }
        let mut mats: Vec<Vec<f32>> = self
            .widths
            .iter()
            .map(|&w| vec![0f32; out_row * w])
            .collect();
        for (part, mut spans) in by_part {
            spans.sort_unstable();
            let ranges: Vec<(usize, usize)> = spans.iter().map(|&(r, n, _)| (r, n)).collect();
            // The part's rows arrive in row order, which is `spans` order: (span, row in it).
            let (mut si, mut j) = (0, 0);
            self.read_doc_rows(part, &ranges, |v| {
                while si < spans.len() && j == spans[si].1 {
                    (si, j) = (si + 1, 0);
                }
                // More rows than selected: read_doc_rows reports the count after the last one.
                let Some(&(_, _, first)) = spans.get(si) else {
                    return Ok(());
                };
                let (pos, li) = (j / nl, j % nl);
                let w = self.widths[li];
                if v.len() != w {
                    return Err(RepsError::Width {
                        path: self.parts[part].clone(),
                        layer: self.layers[li],
                        found: v.len(),
                        expected: w,
                    });
                }
                let o = first + pos;
                v.copy_to(&mut mats[li][o * w..(o + 1) * w]);
                j += 1;
                Ok(())
            })?;
        }
        Ok(mats)
    }

    /// Calls `put` with the `values` of every row of sorted, non-overlapping (first row, count)
    /// spans of a part, in order.
    fn read_doc_rows(
        &self,
        part: usize,
        spans: &[(usize, usize)],
        mut put: impl FnMut(Values<'_>) -> Result<(), RepsError>,
    ) -> Result<(), RepsError> {
        let path = &self.parts[part];
        let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
        let total = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| StoreError::parquet(path, e))?
            .metadata()
            .file_metadata()
            .num_rows() as usize;
        let mut sel = Vec::new();
        let mut at = 0;
        for &(r, n) in spans {
            if r > at {
                sel.push(RowSelector::skip(r - at));
            }
            sel.push(RowSelector::select(n));
            at = r + n;
        }
        if at < total {
            sel.push(RowSelector::skip(total - at));
        }
        let want: usize = spans.iter().map(|s| s.1).sum();
        let (reader, _) = open_part(path, &["values"], Some(RowSelection::from(sel)), 4096)?;
        let mut rows = 0;
        for b in batches(reader, path) {
            let b = b?;
            let list = column::<ListArray>(&b, "values", path, "list<float>")?;
            for i in 0..list.len() {
                let v = list.value(i);
                if let Some(a) = v.as_any().downcast_ref::<Float32Array>() {
                    put(Values::F32(a.values()))?;
                } else if let Some(a) = v.as_any().downcast_ref::<Float16Array>() {
                    put(Values::F16(a.values()))?;
                } else {
                    return Err(StoreError::ColumnType {
                        path: path.clone(),
                        column: "values".into(),
                        found: v.data_type().to_string(),
                        expected: "list<float32> or list<float16>".into(),
                    }
                    .into());
                }
                rows += 1;
            }
        }
        if rows != want {
            return Err(StoreError::ColumnType {
                path: path.clone(),
                column: "values".into(),
                found: format!("{rows} rows"),
                expected: format!("{want} rows"),
            }
            .into());
        }
        Ok(())
    }
}

/// One row's `values`, as stored.
enum Values<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16]),
}

impl Values<'_> {
    fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F16(v) => v.len(),
        }
    }

    /// Into `dst` (of the same length) as f32 (f16 converted with the CPU's F16C where present).
    fn copy_to(&self, dst: &mut [f32]) {
        match self {
            Values::F32(v) => dst.copy_from_slice(v),
            Values::F16(v) => half::slice::HalfFloatSliceExt::convert_to_f32_slice(*v, dst),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::store::schema::{Residuals, ResidualsRow, Table, TableOptions};
    use crate::store::writer::{RunDir, TableWriter, WriterOptions};

    /// Writes a residuals table: docs in two parts, 3 layers of widths 2, values encoding
    /// (doc, position, layer).
    pub(in crate::compare) fn write(dir: &Path, docs: &[(&str, usize, Range<usize>)]) {
        let run = RunDir::create(dir, true).unwrap();
        let opts = TableOptions::default();
        let mut writers: Vec<TableWriter<Residuals>> = (0..2)
            .map(|seq| {
                TableWriter::<Residuals>::create(&run, &opts, &WriterOptions::default())
                    .unwrap()
                    .starting_at(seq)
            })
            .collect();
        for (i, (doc, part, range)) in docs.iter().enumerate() {
            for p in range.clone() {
                for l in [0, 2, 5] {
                    let v = [(i * 100 + p) as f32, l as f32];
                    writers[*part]
                        .append(ResidualsRow {
                            doc_id: doc,
                            position: p as i32,
                            layer: l,
                            values: &v,
                        })
                        .unwrap();
                }
            }
        }
        for w in writers {
            w.finish().unwrap();
        }
        let _ = Residuals::def();
    }

    #[test]
    fn reads_any_positions_of_any_documents_in_item_order() {
        let dir = std::env::temp_dir().join(format!("tokenlens-reps-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write(
            &dir,
            &[
                ("a", 1, 0..4),
                ("b", 0, 2..5),
                ("c", 1, 0..3),
                ("d", 0, 0..2),
            ],
        );
        let r = Reps::open(&dir, Source::Residuals).unwrap();
        assert_eq!(r.layers, [0, 2, 5]);
        assert_eq!(r.widths, [2, 2, 2]);
        assert_eq!(r.positions("b"), Some(2..5));
        assert_eq!(r.positions("x"), None);
        let m = r.read(&[("c", 1..3), ("a", 0..2), ("b", 4..5)]).unwrap();
        let firsts: Vec<f32> = m[0].chunks(2).map(|x| x[0]).collect();
        assert_eq!(firsts, [201.0, 202.0, 0.0, 1.0, 104.0]);
        assert_eq!(m[2].chunks(2).map(|x| x[1]).collect::<Vec<_>>(), [5.0; 5]);
        let e = r.read(&[("b", 1..3)]).unwrap_err().to_string();
        assert!(
            e.contains("document `b` has no residuals rows at positions 1..3"),
            "{e}"
        );
        let e = Reps::open(&dir, Source::Activations)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no activations table"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
