//! Unit tests of the NMF solver: recovery of planted factors, determinism across chunkings and
//! seeds, input errors.

use super::*;
use crate::numerics::math::cosine;

/// A non-negative matrix from known factors plus a little noise.
fn planted(rows: usize, cols: usize, k: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = SplitMix64::new(seed);
    // Sparse-ish, distinct components: each has a block of strong columns.
    let mut h = vec![0f32; k * cols];
    for j in 0..k {
        for c in 0..cols {
            let base = if c * k / cols == j { 1.0 } else { 0.0 };
            h[j * cols + c] = base + 0.05 * rng.next_f64() as f32;
        }
    }
    let w = abs_normal(&mut rng, rows * k, 1.0);
    let mut x = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let v: f32 = (0..k).map(|j| w[r * k + j] * h[j * cols + c]).sum();
            x[r * cols + c] = v + 0.01 * rng.next_f64() as f32;
        }
    }
    (x, h)
}

#[test]
fn recovers_planted_factors_up_to_permutation() {
    let (rows, cols, k) = (300, 60, 4);
    let (x, h_true) = planted(rows, cols, k, 7);
    let opts = NmfOptions {
        n_components: k,
        max_iter: 300,
        tol: 1e-7,
        ..NmfOptions::default()
    };
    let mut src = InMemory {
        data: &x,
        cols,
        chunk_rows: 64,
    };
    let out = nmf(&mut src, &opts, &mut |_, _| {}).unwrap();
    for j in 0..k {
        let truth = &h_true[j * cols..(j + 1) * cols];
        let best = (0..k)
            .map(|i| cosine(truth, &out.h[i * cols..(i + 1) * cols]))
            .fold(0f64, f64::max);
        assert!(best > 0.99, "component {j}: best cosine {best}");
    }
    let last = out.history.last().unwrap().relative_error;
    assert!(last < 0.02, "relative error {last}");
    // The error never goes up (HALS is monotone), up to rounding in the streamed formula:
    // ||X - WH||^2 / ||X||^2 = 1 - 2 <B, H> / ||X||^2 + ..., with <B, H> from f32 products,
    // is resolved to ~1e-7, which at this error (~2.6e-3, squared 7e-6) is ~1% of it.
    for p in out.history.windows(2) {
        assert!(
            p[1].relative_error.powi(2) <= p[0].relative_error.powi(2) + 1e-6,
            "{:?}",
            p
        );
    }
    // The streamed error formula agrees with a direct computation from the final W and H
    // (to its resolution, ~1% of an error this small; see above).
    let mut sq = 0f64;
    let mut total = 0f64;
    for r in 0..rows {
        for c in 0..cols {
            let v: f32 = (0..k).map(|j| out.w[r * k + j] * out.h[j * cols + c]).sum();
            sq += ((x[r * cols + c] - v) as f64).powi(2);
            total += (x[r * cols + c] as f64).powi(2);
        }
    }
    let direct = (sq / total).sqrt();
    assert!(
        (direct - last).abs() < 0.02 * direct,
        "direct {direct} vs streamed {last}"
    );
}

#[test]
fn chunking_and_seed_determinism() {
    let (x, _) = planted(120, 30, 3, 1);
    let opts = NmfOptions {
        n_components: 3,
        max_iter: 20,
        tol: 0.0,
        ..NmfOptions::default()
    };
    let run = |chunk_rows, seed| {
        let mut src = InMemory {
            data: &x,
            cols: 30,
            chunk_rows,
        };
        nmf(
            &mut src,
            &NmfOptions {
                seed,
                ..opts.clone()
            },
            &mut |_, _| {},
        )
        .unwrap()
    };
    let (a, b) = (run(17, 3), run(17, 3));
    assert_eq!(a.h, b.h, "same seed, same factors");
    let c = run(120, 3);
    let diff =
        a.h.iter()
            .zip(&c.h)
            .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
    assert!(diff < 1e-3, "chunk size changes only rounding: {diff}");
    assert_ne!(run(17, 4).h, a.h, "another seed, another start");
}

#[test]
fn bad_inputs() {
    let x = vec![1.0f32, -2.0, 3.0, 4.0];
    let mut src = InMemory {
        data: &x,
        cols: 2,
        chunk_rows: 1,
    };
    let e = nmf(&mut src, &NmfOptions::default(), &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("non-negative, found -2"), "{e}");
    let z = vec![0f32; 4];
    let mut src = InMemory {
        data: &z,
        cols: 2,
        chunk_rows: 1,
    };
    let e = nmf(&mut src, &NmfOptions::default(), &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("all zeros"), "{e}");
    let mut out = Vec::new();
    Negatives::Split.apply(&[1.0, -2.0], &mut out);
    assert_eq!(out, vec![1.0, 0.0, 0.0, 2.0]);
}
