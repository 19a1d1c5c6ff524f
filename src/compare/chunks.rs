//! The matched rows of two runs' representations, streamed in chunks: at position level, the
//! same (document, position) rows of both runs, a chunk of at most `rows` positions at a time;
//! at document level, each document's mean over its positions in each run (the runs may
//! tokenize differently), a chunk of documents at a time. Within one run (no run B) both sides
//! are the same rows, read once.

use std::ops::Range;

use super::reps::{Reps, RepsError};

/// One document's rows to compare: positions `a` of run A, positions `b` of run B (equal at
/// position level).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub doc_id: String,
    pub a: Range<usize>,
    pub b: Range<usize>,
}

/// How rows are matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// Row = (document, position).
    Position,
    /// Row = document (the mean over its positions).
    Document,
}

/// One chunk, owned (so it can be handed to another thread): per layer of each side a
/// row-major matrix of `rows` rows.
pub struct Chunk {
    pub rows: usize,
    pub a: Vec<Vec<f32>>,
    /// Side b's layers; None within one run, where b is a (`Chunk::b`).
    pub b_own: Option<Vec<Vec<f32>>>,
}

impl Chunk {
    /// Side b's layers.
    pub fn b(&self) -> &[Vec<f32>] {
        self.b_own.as_deref().unwrap_or(&self.a)
    }
}

/// Calls `f` with every chunk of the matched rows of `items`, in item order; at most `rows`
/// rows (positions, or documents) per chunk.
pub fn for_each_chunk(
    a: &Reps,
    b: Option<&Reps>,
    items: &[Item],
    granularity: Granularity,
    rows: usize,
    mut f: impl FnMut(Chunk) -> Result<(), RepsError>,
) -> Result<(), RepsError> {
    let rows = rows.max(1);
    match granularity {
        Granularity::Position => {
            // Items cut into pieces of at most `rows` positions, grouped into chunks.
            let mut pieces: Vec<(&str, Range<usize>)> = Vec::new();
            let mut n = 0;
            let flush = |pieces: &mut Vec<(&str, Range<usize>)>,
                         n: &mut usize,
                         f: &mut dyn FnMut(Chunk) -> Result<(), RepsError>|
             -> Result<(), RepsError> {
                if *n == 0 {
                    return Ok(());
                }
                let ma = a.read(pieces)?;
                let mb = match b {
                    Some(b) => Some(b.read(pieces)?),
                    None => None,
                };
                f(Chunk {
                    rows: *n,
                    a: ma,
                    b_own: mb,
                })?;
                pieces.clear();
                *n = 0;
                Ok(())
            };
            for it in items {
                debug_assert_eq!(it.a, it.b, "position level compares the same positions");
                let mut start = it.a.start;
                while start < it.a.end {
                    let take = (it.a.end - start).min(rows - n);
                    pieces.push((it.doc_id.as_str(), start..start + take));
                    n += take;
                    start += take;
                    if n == rows {
                        flush(&mut pieces, &mut n, &mut f)?;
                    }
                }
            }
            flush(&mut pieces, &mut n, &mut f)
        }
        Granularity::Document => {
            for group in items.chunks(rows) {
                let side = |reps: &Reps, pick: fn(&Item) -> Range<usize>| {
                    let want: Vec<(&str, Range<usize>)> = group
                        .iter()
                        .map(|it| (it.doc_id.as_str(), pick(it)))
                        .collect();
                    let lens: Vec<usize> = want.iter().map(|w| w.1.len()).collect();
                    reps.read(&want).map(|m| doc_means(&m, &reps.widths, &lens))
                };
                let ma = side(a, |it| it.a.clone())?;
                let mb = match b {
                    Some(b) => Some(side(b, |it| it.b.clone())?),
                    None => None,
                };
                f(Chunk {
                    rows: group.len(),
                    a: ma,
                    b_own: mb,
                })?;
            }
            Ok(())
        }
    }
}

/// Per layer, the mean of each consecutive group of `lens[i]` rows (f64 sums).
fn doc_means(mats: &[Vec<f32>], widths: &[usize], lens: &[usize]) -> Vec<Vec<f32>> {
    mats.iter()
        .zip(widths)
        .map(|(m, &w)| {
            let mut out = Vec::with_capacity(lens.len() * w);
            let mut row = 0;
            for &n in lens {
                let mut acc = vec![0f64; w];
                for r in row..row + n {
                    for (s, &x) in acc.iter_mut().zip(&m[r * w..(r + 1) * w]) {
                        *s += x as f64;
                    }
                }
                out.extend(acc.iter().map(|s| (s / n.max(1) as f64) as f32));
                row += n;
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_means_average_each_group() {
        let m = vec![vec![1.0, 10.0, 3.0, 30.0, 5.0, 50.0]];
        assert_eq!(doc_means(&m, &[2], &[2, 1]), [vec![2.0, 20.0, 5.0, 50.0]]);
    }

    #[test]
    fn chunks_cover_every_matched_row_once_in_item_order() {
        let dir = std::env::temp_dir().join(format!("tokenlens-chunks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        crate::compare::reps::tests::write(&dir, &[("a", 1, 0..4), ("b", 0, 2..5)]);
        let r = Reps::open(&dir, super::super::reps::Source::Residuals).unwrap();
        let items = [
            Item {
                doc_id: "b".into(),
                a: 2..5,
                b: 2..5,
            },
            Item {
                doc_id: "a".into(),
                a: 1..4,
                b: 1..4,
            },
        ];
        let mut seen = vec![];
        for_each_chunk(&r, Some(&r), &items, Granularity::Position, 4, |c| {
            assert_eq!(c.a, c.b());
            seen.push((c.rows, c.a[0].chunks(2).map(|x| x[0]).collect::<Vec<_>>()));
            Ok(())
        })
        .unwrap();
        // Values encode 100 * (document index when written) + position.
        assert_eq!(
            seen,
            [(4, vec![102.0, 103.0, 104.0, 1.0]), (2, vec![2.0, 3.0])]
        );
        let mut means = vec![];
        for_each_chunk(&r, None, &items, Granularity::Document, 8, |c| {
            means.push((c.rows, c.a[1].chunks(2).map(|x| x[0]).collect::<Vec<_>>()));
            Ok(())
        })
        .unwrap();
        assert_eq!(means, [(2, vec![103.0, 2.0])]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
