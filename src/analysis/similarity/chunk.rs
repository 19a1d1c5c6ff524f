//! The check both streaming accumulators (`accumulator`, `minibatch`) make of a pushed chunk:
//! per side one slice per layer, each a whole number of rows of its layer's width, the same
//! number of rows in every layer.

use super::SimilarityError;

/// The sides as errors name them.
pub(super) const SIDES: [char; 2] = ['a', 'b'];

/// Checks a chunk (`chunks[side][layer]`, rows × width row-major) pushed to an accumulator made
/// for layers of widths `widths[side]`: as many slices as layers, and every checked layer's slice
/// a whole number of rows of its width, the same number in all; with `finite`, also that each of
/// their values is finite. Layers are checked side a's first, in order, each wholly before the
/// next, so the first bad one is named. `checked(side, layer)` false: that slice is not looked at.
/// Returns the rows, None when no layer is checked.
pub(super) fn chunk_rows(
    chunks: [&[&[f32]]; 2],
    widths: &[Vec<usize>; 2],
    checked: impl Fn(usize, usize) -> bool,
    finite: bool,
) -> Result<Option<usize>, SimilarityError> {
    let mut rows: Option<(usize, String)> = None;
    for s in 0..2 {
        if chunks[s].len() != widths[s].len() {
            return Err(SimilarityError::LayerCount {
                side: SIDES[s],
                got: chunks[s].len(),
                expected: widths[s].len(),
            });
        }
        for (l, (&x, &d)) in chunks[s].iter().zip(&widths[s]).enumerate() {
            if !checked(s, l) {
                continue;
            }
            let what = format!("side {} layer {l}", SIDES[s]);
            if !x.len().is_multiple_of(d) {
                return Err(SimilarityError::Shape {
                    what,
                    len: x.len(),
                    width: d,
                });
            }
            if finite && let Some(i) = x.iter().position(|v| !v.is_finite()) {
                return Err(SimilarityError::NotFinite {
                    what,
                    row: i / d,
                    col: i % d,
                    value: x[i] as f64,
                });
            }
            match &rows {
                None => rows = Some((x.len() / d, what)),
                Some((r, first)) if *r != x.len() / d => {
                    return Err(SimilarityError::Rows {
                        what,
                        rows: x.len() / d,
                        other: first.clone(),
                        other_rows: *r,
                    });
                }
                Some(_) => {}
            }
        }
    }
    Ok(rows.map(|r| r.0))
}
