//! Which layers the NMF stage factorizes: `--layers` text parsed into a [`Selection`], and a
//! selection resolved against the layers the activations table holds.

use std::collections::BTreeSet;
use std::path::Path;

use super::NmfError;
use crate::pipeline::spec::Selection;

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
pub fn resolve_layers(
    sel: &Selection,
    present: &BTreeSet<i32>,
    run_dir: &Path,
) -> Result<Vec<usize>, NmfError> {
    let Some(&max) = present.last() else {
        return Err(NmfError::NoRows {
            dir: run_dir.to_path_buf(),
        });
    };
    let have = || {
        (
            run_dir.to_path_buf(),
            present.iter().copied().collect::<Vec<_>>(),
        )
    };
    let mut out = match sel {
        Selection::All => present.iter().map(|&l| l as usize).collect::<Vec<_>>(),
        Selection::List(v) => {
            if v.is_empty() {
                return Err(NmfError::NoLayers);
            }
            let n = max as i64 + 1;
            let mut out = Vec::new();
            for &i in v {
                let j = if i < 0 { i + n } else { i };
                if j < 0 {
                    let (dir, present) = have();
                    return Err(NmfError::LayerOutOfRange {
                        layer: i,
                        count: n,
                        dir,
                        present,
                    });
                }
                if !present.contains(&(j as i32)) || j > i32::MAX as i64 {
                    let (dir, present) = have();
                    return Err(NmfError::LayerMissing {
                        layer: j,
                        from_end: (i < 0).then_some(i),
                        dir,
                        present,
                    });
                }
                if out.contains(&(j as usize)) {
                    return Err(NmfError::LayerTwice(j));
                }
                out.push(j as usize);
            }
            out
        }
    };
    out.sort_unstable();
    Ok(out)
}
