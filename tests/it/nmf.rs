//! `tokenlens nmf RUN_DIR` end to end on synthetic runs with planted factors (no model): the
//! tables and their row counts, recovery of the planted components (clip and split, in memory
//! and streamed), determinism, and every kind of bad input with its message and exit code.

use std::path::Path;

use arrow_array::{Array, Float32Array, Float64Array, Int8Array, Int32Array};
use tokenlens::pipeline::nmf_stage::synthetic::{Planted, SyntheticRun};

use crate::common::{Tokenlens, batches, cosine, scratch};

const BIN: Tokenlens = Tokenlens::PLAIN;

fn rows(dir: &Path, table: &str) -> usize {
    batches(dir, table).iter().map(|b| b.num_rows()).sum()
}

fn values<T: Array + 'static, V>(
    dir: &Path,
    table: &str,
    col: &str,
    f: impl Fn(&T) -> Vec<V>,
) -> Vec<V> {
    batches(dir, table)
        .iter()
        .flat_map(|b| {
            f(b.column_by_name(col)
                .unwrap()
                .as_any()
                .downcast_ref::<T>()
                .unwrap())
        })
        .collect()
}

fn f32s(dir: &Path, table: &str, col: &str) -> Vec<f32> {
    values::<Float32Array, _>(dir, table, col, |a| a.values().to_vec())
}

/// The components of nmf_components as [k][columns of the signed neuron axis]: a row with
/// sign -1 is the negative part of its neuron, compared with -min(h, 0) of the planted one.
fn check_recovered(dir: &Path, planted: &Planted, split: bool) {
    let (k, cols) = (planted.k, planted.cols);
    let width = if split { 2 * cols } else { cols };
    let weight = f32s(dir, "nmf_components", "weight");
    let factor = values::<Int32Array, _>(dir, "nmf_components", "factor", |a| a.values().to_vec());
    let layer = values::<Int32Array, _>(dir, "nmf_components", "layer", |a| a.values().to_vec());
    let neuron = values::<Int32Array, _>(dir, "nmf_components", "neuron", |a| a.values().to_vec());
    let sign = values::<Int8Array, _>(dir, "nmf_components", "sign", |a| a.values().to_vec());
    assert_eq!(weight.len(), k * width);
    let neurons = cols / 2; // two layers
    let mut h = vec![vec![0f32; width]; k];
    for i in 0..weight.len() {
        let c = layer[i] as usize * neurons + neuron[i] as usize;
        let c = if sign[i] == -1 { cols + c } else { c };
        h[factor[i] as usize][c] = weight[i];
    }
    for j in 0..k {
        let truth: Vec<f32> = (0..width)
            .map(|c| {
                let v = planted.h[j * cols + c % cols];
                if c < cols { v.max(0.0) } else { (-v).max(0.0) }
            })
            .collect();
        let best = h.iter().map(|x| cosine(&truth, x)).fold(0f64, f64::max);
        assert!(best > 0.99, "planted component {j}: best cosine {best}");
    }
}

const PLANTED: SyntheticRun = SyntheticRun {
    docs: 40,
    prompt_tokens: 8,
    generated_tokens: 4,
    layers: 2,
    neurons: 24,
    k: 4,
    noise: 0.01,
    signed: false,
    f16: false,
    shards: 2,
    part_bytes: 64 << 10,
    seed: 11,
};

#[test]
fn recovers_planted_factors_with_every_table() {
    let dir = scratch("nmf-planted");
    let planted = PLANTED.write(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let args = [
        "nmf",
        d,
        "--components",
        "4",
        "--layers",
        "0..2",
        "--max-iter",
        "300",
        "--tol",
        "1e-7",
        "--top-contexts",
        "5",
        "--quiet",
    ];
    let out = BIN.ok(&args);
    let (rows_x, cols) = (40 * 12, 48);
    assert!(
        out.starts_with(&format!(
            "nmf: {rows_x} positions x {cols} columns (layers 0,1, clip), k = 4, in memory: "
        )),
        "{out}"
    );
    let iterations = rows(&dir, "nmf_summary");
    assert!(iterations > 10 && iterations <= 300, "{iterations}");
    assert_eq!(rows(&dir, "nmf_components"), 4 * cols);
    assert_eq!(rows(&dir, "nmf_factors"), 4 * rows_x);
    assert_eq!(rows(&dir, "nmf_top_contexts"), 4 * 5);
    assert!(out.ends_with(&format!(
        "rows: nmf_components {} , nmf_factors {}, nmf_summary {iterations}, nmf_top_contexts 20 -> {d}\n",
        4 * cols,
        4 * rows_x
    ).replace(" ,", ",")), "{out}");
    check_recovered(&dir, &planted, false);
    let err = values::<Float64Array, _>(&dir, "nmf_summary", "relative_error", |a| {
        a.values().to_vec()
    });
    assert!(*err.last().unwrap() < 0.02, "{err:?}");

    // Same seed, same factors, errors and top contexts.
    let before = (
        f32s(&dir, "nmf_components", "weight"),
        f32s(&dir, "nmf_factors", "value"),
        err,
        f32s(&dir, "nmf_top_contexts", "value"),
    );
    BIN.ok(&args);
    let after = (
        f32s(&dir, "nmf_components", "weight"),
        f32s(&dir, "nmf_factors", "value"),
        values::<Float64Array, _>(&dir, "nmf_summary", "relative_error", |a| {
            a.values().to_vec()
        }),
        f32s(&dir, "nmf_top_contexts", "value"),
    );
    assert!(before == after, "a second run with the same seed differs");
    // Another seed, another start.
    let mut other = args.to_vec();
    other.extend(["--seed", "1"]);
    BIN.ok(&other);
    assert_ne!(f32s(&dir, "nmf_components", "weight"), before.0);

    // Streamed from the Parquet files at every iteration: the same components.
    let mut streamed = args.to_vec();
    streamed.extend(["--memory-budget", "0"]);
    let out = BIN.ok(&streamed);
    assert!(out.contains(", k = 4, streamed: "), "{out}");
    check_recovered(&dir, &planted, false);
}

#[test]
fn split_recovers_the_negative_parts() {
    let dir = scratch("nmf-split");
    let planted = SyntheticRun {
        signed: true,
        f16: true,
        ..PLANTED
    }
    .write(&dir)
    .unwrap();
    let d = dir.to_str().unwrap();
    let out = BIN.ok(&[
        "nmf",
        d,
        "-k",
        "4",
        "--negative",
        "split",
        "--max-iter",
        "300",
        "--tol",
        "1e-7",
        "--positions",
        "prompt",
        "--quiet",
    ]);
    assert!(
        out.starts_with("nmf: 320 positions x 96 columns (layers 0,1, split), k = 4"),
        "{out}"
    );
    check_recovered(&dir, &planted, true);
    assert_eq!(rows(&dir, "nmf_factors"), 4 * 40 * 8);
    let signs = values::<Int8Array, _>(&dir, "nmf_components", "sign", |a| a.values().to_vec());
    assert_eq!(signs.iter().filter(|&&s| s == -1).count(), 4 * 48);
}

#[test]
fn bad_inputs_exit_1_with_a_message() {
    let dir = scratch("nmf-bad");
    let d = dir.to_str().unwrap();
    BIN.fails_with(
        &["nmf", &format!("{d}/missing")],
        &format!("{d}/missing: no such run directory"),
    );
    BIN.fails_with(
        &["nmf", d],
        &format!(
            "{d}: no activations table (no {d}/activations/part-*.parquet); NMF factorizes the \
             activations a run recorded (analyses.activations)"
        ),
    );
    SyntheticRun::default().write(&dir).unwrap();
    BIN.fails_with(
        &["nmf", d, "--layers", "0,5"],
        &format!("nmf.layers includes layer 5 but the activations table of {d} has layers [0, 1]"),
    );
    BIN.fails_with(
        &["nmf", d, "--layers", "-3"],
        &format!(
            "nmf.layers includes layer -3, out of range: the activations table of {d} has layers \
             [0, 1] (negative indices count from layer 2)"
        ),
    );
    BIN.fails_with(
        &["nmf", d, "--layers", "0..x"],
        "--layers `0..x` is not a layer index or range (e.g. `0..30`, `0,5,-1`, `all`)",
    );
    BIN.fails_with(
        &["nmf", d, "--positions", "middle"],
        "unknown --positions `middle` (all, prompt, generated)",
    );
    BIN.fails_with(
        &["nmf", d, "--negative", "abs"],
        "unknown --negative `abs` (clip, split)",
    );
    BIN.fails_with(
        &["nmf", d, "--components", "0"],
        "--components must be in 1..=1000, got 0",
    );
    BIN.fails_with(
        &["nmf", d, "--max-iter", "0"],
        "--max-iter must be in 1..=100000, got 0",
    );
    BIN.fails_with(&["nmf", d, "--tol=-1"], "--tol must be in 0..=1, got -1");
    BIN.fails_with(
        &["nmf", d, "--memory-budget", "lots"],
        "--memory-budget `lots` is not a size (e.g. 2G, 512M, 0)",
    );
    // Nothing was written by the failed runs.
    assert!(!dir.join("nmf_components").exists());
    // A usage error (not a number) is clap's: exit 2.
    let o = BIN.output(&["nmf", d, "--components", "ten"]);
    assert_eq!(o.status.code(), Some(2));
}
