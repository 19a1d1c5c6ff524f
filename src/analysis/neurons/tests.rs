//! The accumulator against sorting everything: ties, fewer rows than k, merged splits in any
//! order and in parallel, the moments against a two-pass computation, and -0.0.

use super::*;
use crate::numerics::rng::SplitMix64;

/// Rows of a small corpus: (doc, position, values), values on a coarse grid so that ties are
/// frequent (the tie-break is exercised), some negative.
fn corpus(docs: u32, len: u32, neurons: usize, seed: u64) -> Vec<(u32, u32, Vec<f32>)> {
    let mut rng = SplitMix64::new(seed);
    let mut rows = Vec::new();
    for d in 0..docs {
        for p in 0..len {
            let v = (0..neurons)
                .map(|_| ((rng.next_f64() * 12.0).floor() as f32 - 4.0) * 0.5)
                .collect();
            rows.push((d * 7 % docs, p, v));
        }
    }
    rows
}

fn accumulate<'a>(
    rows: impl IntoIterator<Item = &'a (u32, u32, Vec<f32>)>,
    neurons: usize,
    k: usize,
) -> LayerAccumulator {
    let mut acc = LayerAccumulator::new(neurons, k);
    for (d, p, v) in rows {
        acc.push(*d, *p, v);
    }
    acc
}

/// The top-k by sorting everything.
fn brute_top(rows: &[(u32, u32, Vec<f32>)], j: usize, k: usize) -> Vec<Hit> {
    let mut all: Vec<Hit> = rows
        .iter()
        .map(|(d, p, v)| Hit {
            value: v[j],
            doc: *d,
            position: *p,
        })
        .collect();
    all.sort_by(Hit::rank_cmp);
    all.truncate(k);
    all
}

#[test]
fn top_k_is_the_sorted_prefix_with_ties_broken_by_doc_then_position() {
    let (neurons, k) = (5, 7);
    let rows = corpus(9, 6, neurons, 1);
    let acc = accumulate(&rows, neurons, k);
    assert_eq!(acc.count(), 54);
    for j in 0..neurons {
        let top = acc.top(j);
        assert_eq!(top, brute_top(&rows, j, k), "neuron {j}");
        // The grid makes ties: some equal values are ordered by doc, then position.
        assert!(
            top.windows(2)
                .all(|w| w[0].rank_cmp(&w[1]) == Ordering::Less)
        );
    }
    let ties = (0..neurons)
        .flat_map(|j| {
            acc.top(j)
                .windows(2)
                .map(|w| w[0].value == w[1].value)
                .collect::<Vec<_>>()
        })
        .filter(|&t| t)
        .count();
    assert!(
        ties > 5,
        "the test corpus should have ties in the top-k ({ties})"
    );
    // Fewer rows than k: every row, ranked.
    let few = accumulate(&rows[..3], neurons, k);
    assert_eq!(few.top(2), brute_top(&rows[..3], 2, k));
    assert_eq!(few.top(2).len(), 3);
}

#[test]
fn merged_splits_equal_the_whole_in_any_order() {
    let (neurons, k) = (300, 4);
    let rows = corpus(23, 5, neurons, 2);
    let whole = accumulate(&rows, neurons, k);
    // Split by doc parity (as shards do), and into uneven contiguous pieces in reverse order.
    let even = accumulate(rows.iter().filter(|r| r.0 % 2 == 0), neurons, k);
    let odd = accumulate(rows.iter().filter(|r| r.0 % 2 == 1), neurons, k);
    let mut merged = odd.clone();
    merged.merge(&even);
    let mut pieces = LayerAccumulator::new(neurons, k);
    for piece in rows.chunks(17).rev() {
        pieces.merge(&accumulate(piece, neurons, k));
    }
    // Rows in reverse order, pushed in one batch (in parallel over neurons).
    let mut reversed = LayerAccumulator::new(neurons, k);
    let rev: Vec<_> = rows.iter().rev().collect();
    let keys: Vec<(u32, u32)> = rev.iter().map(|r| (r.0, r.1)).collect();
    let vals: Vec<f32> = rev.iter().flat_map(|r| r.2.iter().copied()).collect();
    reversed.push_rows(&keys, &vals);
    for other in [&merged, &pieces, &reversed] {
        assert_eq!(other.count(), whole.count());
        for j in 0..neurons {
            assert_eq!(other.top(j), whole.top(j), "neuron {j}");
            let (a, b) = (other.stats(j).unwrap(), whole.stats(j).unwrap());
            assert_eq!(
                (a.count, a.min, a.max, a.active),
                (b.count, b.min, b.max, b.active)
            );
            assert!((a.mean - b.mean).abs() <= 1e-12 * (1.0 + b.mean.abs()));
            assert!((a.std - b.std).abs() <= 1e-12 * (1.0 + b.std));
            let (x, y) = (a.mean_active.unwrap(), b.mean_active.unwrap());
            assert!((x - y).abs() <= 1e-12 * y.abs());
        }
    }
    // Merging an empty accumulator changes nothing, and into an empty one copies.
    let mut same = whole.clone();
    same.merge(&LayerAccumulator::new(neurons, k));
    assert_eq!(same, whole);
    let mut copy = LayerAccumulator::new(neurons, k);
    copy.merge(&whole);
    assert_eq!(copy, whole);
}

#[test]
fn stats_match_a_two_pass_computation() {
    let neurons = 3;
    let mut rows = corpus(4, 10, neurons, 3);
    // A far outlier first (the shift) and a neuron never active.
    rows[0].2[0] = 1.0e4;
    for r in &mut rows {
        r.2[2] = -r.2[2].abs() - 1.0;
    }
    let acc = accumulate(&rows, neurons, 2);
    for j in 0..neurons {
        let v: Vec<f64> = rows.iter().map(|r| r.2[j] as f64).collect();
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        let act: Vec<f64> = v.iter().copied().filter(|&x| x > 0.0).collect();
        let s = acc.stats(j).unwrap();
        assert!((s.mean - mean).abs() < 1e-9 * (1.0 + mean.abs()), "{j}");
        assert!(
            (s.std - std).abs() < 1e-9 * (1.0 + std),
            "{j}: {} {std}",
            s.std
        );
        assert_eq!(
            s.min as f64,
            v.iter().copied().fold(f64::INFINITY, f64::min)
        );
        assert_eq!(
            s.max as f64,
            v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        );
        assert_eq!(s.active, act.len() as u64);
        assert_eq!(s.fraction_active(), act.len() as f64 / n);
        match s.mean_active {
            None => assert!(act.is_empty()),
            Some(m) => assert!((m - act.iter().sum::<f64>() / act.len() as f64).abs() < 1e-12),
        }
    }
    assert_eq!(acc.stats(2).unwrap().mean_active, None);
    assert_eq!(LayerAccumulator::new(2, 1).stats(0), None);
}

#[test]
fn negative_zero_ranks_below_zero() {
    let mut acc = LayerAccumulator::new(1, 1);
    acc.push(0, 0, &[-0.0]);
    acc.push(1, 0, &[0.0]);
    acc.push(2, 0, &[0.0]);
    assert_eq!(
        acc.top(0),
        [Hit {
            value: 0.0,
            doc: 1,
            position: 0
        }]
    );
}
