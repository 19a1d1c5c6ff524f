//! What the corpus stages (NMF, neurons) share about their input, a finished run's
//! `activations` table: which layers they read (`--layers` text parsed into a [`Selection`], and
//! a selection resolved against the layers the table holds), and the errors of a run that lacks
//! what a stage reads or whose activations table is not one a run writes
//! ([`StageInputError`]). Each stage's own errors (`NmfError`, `NeuronsError`) are the rest.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::pipeline::spec::Selection;

/// A corpus stage's input that the stage cannot read. The layer selection's errors name the
/// stage's key (`nmf.layers`, `neurons.layers`; also the CLI's `--layers`).
#[derive(Debug, thiserror::Error)]
pub enum StageInputError {
    #[error("{}: no such run directory", dir.display())]
    NoRunDir { dir: PathBuf },
    #[error(
        "{}: no activations table (no {}/activations/part-*.parquet); {reads} the activations a \
         run recorded (analyses.activations)",
        dir.display(), dir.display()
    )]
    NoActivations {
        dir: PathBuf,
        /// What the stage makes of them: `NMF factorizes`.
        reads: &'static str,
    },
    /// A table besides `activations` the stage reads.
    #[error("{}: no {table} table, needed {needed}", dir.display())]
    NoTable {
        dir: PathBuf,
        table: &'static str,
        /// What for: `for the text of the top contexts`.
        needed: &'static str,
    },

    /// The layer selection against the layers the table has.
    #[error("{}: the activations table has no rows", dir.display())]
    NoRows { dir: PathBuf },
    #[error("{key} lists no layer")]
    NoLayers { key: &'static str },
    #[error(
        "{key} includes layer {layer}, out of range: {} (negative indices count from layer \
         {count})",
        has_layers(dir, present)
    )]
    LayerOutOfRange {
        key: &'static str,
        layer: i64,
        count: i64,
        dir: PathBuf,
        present: Vec<i32>,
    },
    #[error(
        "{key} includes layer {layer}{} but {}",
        from_end.map(|i| format!(" ({i} from the end)")).unwrap_or_default(),
        has_layers(dir, present)
    )]
    LayerMissing {
        key: &'static str,
        layer: i64,
        /// The index as given, when it was negative.
        from_end: Option<i64>,
        dir: PathBuf,
        present: Vec<i32>,
    },
    #[error("{key} selects layer {layer} twice")]
    LayerTwice { key: &'static str, layer: i64 },

    /// The activations table is not one a run writes.
    #[error("{}: negative layer {layer}", path.display())]
    NegativeLayer { path: PathBuf, layer: i32 },
    #[error(
        "{}: column `values` is {found}, expected a list of non-null float32 or float16",
        path.display()
    )]
    ValuesType { path: PathBuf, found: String },
    #[error(
        "{}: doc `{doc}` position {position} layer {layer} has {found} values, the layer's first \
         row {expected}",
        path.display()
    )]
    Width {
        path: PathBuf,
        doc: String,
        position: i32,
        layer: usize,
        found: usize,
        expected: usize,
    },
    #[error(
        "{}: doc `{doc}` position {position} layer {layer} neuron {neuron} is {value}",
        path.display()
    )]
    NotFinite {
        path: PathBuf,
        doc: String,
        position: i32,
        layer: usize,
        neuron: usize,
        value: f32,
    },
}

fn has_layers(dir: &Path, present: &[i32]) -> String {
    format!(
        "the activations table of {} has layers {:?}",
        dir.display(),
        present
    )
}

/// `all`, or comma-separated items each a block index (negative from the end) or a half-open
/// range `a..b` (or `a..=b`) of non-negative indices: `0..30`, `0,5,-1`, `0..4,10`.
pub fn parse_layers(s: &str) -> std::result::Result<Selection, String> {
    let s = s.trim();
    if s == "all" {
        return Ok(Selection::All);
    }
    let mut v = Vec::new();
    for item in s.split(',').map(str::trim) {
        let index = |t: &str| {
            t.trim().parse::<i64>().map_err(|_| {
                format!("`{item}` is not a layer index or range (e.g. `0..30`, `0,5,-1`, `all`)")
            })
        };
        if let Some((a, b)) = item.split_once("..") {
            let (inclusive, b) = match b.strip_prefix('=') {
                Some(b) => (true, b),
                None => (false, b),
            };
            let (a, b) = (index(a)?, index(b)?);
            if a < 0 || b < 0 {
                return Err(format!(
                    "`{item}`: ranges take non-negative layers; list negative ones (`-2,-1`)"
                ));
            }
            let end = if inclusive { b + 1 } else { b };
            if end <= a {
                return Err(format!("`{item}` is an empty range"));
            }
            v.extend(a..end);
        } else {
            v.push(index(item)?);
        }
    }
    Ok(Selection::List(v))
}

/// The chosen layers (ascending) among those the activations table has. `all` is every layer of
/// the table; negative indices count from the table's highest layer + 1 (-1 is the highest).
/// `key` names the selection in the errors (`nmf.layers`).
pub fn resolve_layers(
    sel: &Selection,
    present: &BTreeSet<i32>,
    run_dir: &Path,
    key: &'static str,
) -> Result<Vec<usize>, StageInputError> {
    let Some(&max) = present.last() else {
        return Err(StageInputError::NoRows {
            dir: run_dir.to_path_buf(),
        });
    };
    let have = || (run_dir.to_path_buf(), present.iter().copied().collect());
    let mut out = match sel {
        Selection::All => present.iter().map(|&l| l as usize).collect::<Vec<_>>(),
        Selection::List(v) if v.is_empty() => return Err(StageInputError::NoLayers { key }),
        Selection::List(v) => {
            let n = max as i64 + 1;
            let mut out = Vec::new();
            for &i in v {
                let j = if i < 0 { i + n } else { i };
                if j < 0 {
                    let (dir, present) = have();
                    return Err(StageInputError::LayerOutOfRange {
                        key,
                        layer: i,
                        count: n,
                        dir,
                        present,
                    });
                }
                if j > i32::MAX as i64 || !present.contains(&(j as i32)) {
                    let (dir, present) = have();
                    return Err(StageInputError::LayerMissing {
                        key,
                        layer: j,
                        from_end: (i < 0).then_some(i),
                        dir,
                        present,
                    });
                }
                if out.contains(&(j as usize)) {
                    return Err(StageInputError::LayerTwice { key, layer: j });
                }
                out.push(j as usize);
            }
            out
        }
    };
    out.sort_unstable();
    Ok(out)
}
