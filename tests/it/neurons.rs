//! Neuron pages' tables end to end: `tokenlens neurons RUN_DIR` on a synthetic run (its summary,
//! the manifest's row counts, the tables against the activations and tokens tables read here),
//! the pipeline's `analyses.neurons` on the tiny model, sharded runs merged by `tokenlens
//! neurons` into exactly the unsharded run's top contexts, and every bad input with its message
//! and exit code (nothing written).

use std::collections::HashMap;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float16Type, Float32Type, Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use tokenlens::pipeline::nmf_stage::synthetic::SyntheticRun;
use tokenlens::store::schema::{
    ACTIVATIONS, GENERATIONS, NEURON_STATS, NEURON_TOP_CONTEXTS, TOKENS,
};

use crate::common::{Tokenlens, batches, manifest, scratch, tiny_spec};

const BIN: Tokenlens = Tokenlens::RUN;

/// One row of `neuron_top_contexts` as read back.
#[derive(Debug, Clone, PartialEq)]
struct Top {
    layer: i32,
    neuron: i32,
    rank: i32,
    value: f32,
    doc_id: String,
    position: i32,
    token: String,
    before: String,
    after: String,
}

fn read_top(run: &Path) -> Vec<Top> {
    let mut out = Vec::new();
    for b in batches(run, NEURON_TOP_CONTEXTS.name) {
        let i32s = |c: &str| {
            b.column_by_name(c)
                .unwrap()
                .as_primitive::<Int32Type>()
                .clone()
        };
        let strs = |c: &str| b.column_by_name(c).unwrap().as_string::<i32>().clone();
        let (layer, neuron, rank, position) = (
            i32s("layer"),
            i32s("neuron"),
            i32s("rank"),
            i32s("position"),
        );
        let value = b
            .column_by_name("value")
            .unwrap()
            .as_primitive::<Float32Type>()
            .clone();
        let (doc, token, before, after) =
            (strs("doc_id"), strs("token"), strs("before"), strs("after"));
        for i in 0..b.num_rows() {
            out.push(Top {
                layer: layer.value(i),
                neuron: neuron.value(i),
                rank: rank.value(i),
                value: value.value(i),
                doc_id: doc.value(i).into(),
                position: position.value(i),
                token: token.value(i).into(),
                before: before.value(i).into(),
                after: after.value(i).into(),
            });
        }
    }
    out
}

/// `neuron_stats` as (layer, neuron) -> (count, mean, std, min, max, fraction_active,
/// mean_active).
type Stats = HashMap<(i32, i32), (i64, f64, f64, f32, f32, f64, Option<f64>)>;

fn read_stats(run: &Path) -> Stats {
    let mut out = HashMap::new();
    for b in batches(run, NEURON_STATS.name) {
        let c = |n: &str| b.column_by_name(n).unwrap().clone();
        let (l, j) = (c("layer"), c("neuron"));
        let (l, j) = (l.as_primitive::<Int32Type>(), j.as_primitive::<Int32Type>());
        let count = c("count");
        let f64s = |n: &str| c(n).as_primitive::<Float64Type>().clone();
        let f32s = |n: &str| c(n).as_primitive::<Float32Type>().clone();
        let (mean, std, frac, ma) = (
            f64s("mean"),
            f64s("std"),
            f64s("fraction_active"),
            f64s("mean_active"),
        );
        let (min, max) = (f32s("min"), f32s("max"));
        for i in 0..b.num_rows() {
            out.insert(
                (l.value(i), j.value(i)),
                (
                    count.as_primitive::<Int64Type>().value(i),
                    mean.value(i),
                    std.value(i),
                    min.value(i),
                    max.value(i),
                    frac.value(i),
                    (!ma.is_null(i)).then(|| ma.value(i)),
                ),
            );
        }
    }
    out
}

fn strings(b: &RecordBatch, c: &str) -> Vec<String> {
    let a = b.column_by_name(c).unwrap().as_string::<i32>();
    (0..a.len()).map(|i| a.value(i).to_string()).collect()
}

fn ints(b: &RecordBatch, c: &str) -> Vec<i64> {
    let a = b.column_by_name(c).unwrap();
    match a.data_type() {
        DataType::Int64 => a.as_primitive::<Int64Type>().values().to_vec(),
        _ => a
            .as_primitive::<Int32Type>()
            .values()
            .iter()
            .map(|&x| x as i64)
            .collect(),
    }
}

/// What the tables should hold, from the run's activations, tokens and generations tables read
/// here: every neuron's values sorted (value desc, dataset index, position), the context's text
/// joined from the tokens, and the statistics in two passes.
fn independent(run: &Path, k: usize, c: i32) -> (Vec<Top>, Stats) {
    let mut index = HashMap::new();
    for b in batches(run, GENERATIONS.name) {
        for (d, i) in strings(&b, "doc_id").into_iter().zip(ints(&b, "index")) {
            index.insert(d, i);
        }
    }
    let mut tokens = HashMap::new();
    for b in batches(run, TOKENS.name) {
        let (d, p, t) = (
            strings(&b, "doc_id"),
            ints(&b, "position"),
            strings(&b, "token"),
        );
        for i in 0..d.len() {
            tokens.insert((d[i].clone(), p[i] as i32), t[i].clone());
        }
    }
    // (layer, neuron) -> [(value, dataset index, position, doc_id)]
    type Values = Vec<(f32, i64, i32, String)>;
    let mut by: HashMap<(i32, i32), Values> = HashMap::new();
    for b in batches(run, ACTIVATIONS.name) {
        let (d, p, l) = (
            strings(&b, "doc_id"),
            ints(&b, "position"),
            ints(&b, "layer"),
        );
        let v = b.column_by_name("values").unwrap().as_list::<i32>();
        for i in 0..d.len() {
            let x = v.value(i);
            let vals: Vec<f32> = match x.data_type() {
                DataType::Float16 => x
                    .as_primitive::<Float16Type>()
                    .values()
                    .iter()
                    .map(|h| h.to_f32())
                    .collect(),
                _ => x.as_primitive::<Float32Type>().values().to_vec(),
            };
            for (j, &val) in vals.iter().enumerate() {
                by.entry((l[i] as i32, j as i32)).or_default().push((
                    val,
                    index[&d[i]],
                    p[i] as i32,
                    d[i].clone(),
                ));
            }
        }
    }
    let mut keys: Vec<(i32, i32)> = by.keys().copied().collect();
    keys.sort_unstable();
    let (mut top, mut stats) = (Vec::new(), HashMap::new());
    for key in keys {
        let v = by.get_mut(&key).unwrap();
        v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        for (r, (value, _, p, d)) in v.iter().take(k).enumerate() {
            let text = |range: std::ops::Range<i32>| {
                range
                    .filter_map(|q| tokens.get(&(d.clone(), q)).cloned())
                    .collect::<String>()
            };
            top.push(Top {
                layer: key.0,
                neuron: key.1,
                rank: r as i32 + 1,
                value: *value,
                doc_id: d.clone(),
                position: *p,
                token: tokens[&(d.clone(), *p)].clone(),
                before: text((p - c).max(0)..*p),
                after: text(p + 1..p + c + 1),
            });
        }
        let x: Vec<f64> = v.iter().map(|a| a.0 as f64).collect();
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let std = (x.iter().map(|y| (y - mean).powi(2)).sum::<f64>() / n).sqrt();
        let act: Vec<f64> = x.iter().copied().filter(|&y| y > 0.0).collect();
        stats.insert(
            key,
            (
                x.len() as i64,
                mean,
                std,
                v.iter().map(|a| a.0).fold(f32::INFINITY, f32::min),
                v[0].0,
                act.len() as f64 / n,
                (!act.is_empty()).then(|| act.iter().sum::<f64>() / act.len() as f64),
            ),
        );
    }
    (top, stats)
}

fn assert_stats_close(got: &Stats, want: &Stats) {
    assert_eq!(got.len(), want.len());
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * (1.0 + b.abs());
    for (k, w) in want {
        let g = &got[k];
        assert_eq!((g.0, g.3, g.4, g.5), (w.0, w.3, w.4, w.5), "{k:?}");
        assert!(close(g.1, w.1) && close(g.2, w.2), "{k:?}: {g:?} vs {w:?}");
        match (g.6, w.6) {
            (Some(a), Some(b)) => assert!(close(a, b), "{k:?}"),
            (a, b) => assert_eq!(a, b, "{k:?}"),
        }
    }
}

#[test]
fn neurons_command_on_a_synthetic_run() {
    let dir = scratch("neurons-synthetic");
    SyntheticRun {
        docs: 13,
        layers: 3,
        neurons: 10,
        signed: true,
        f16: true,
        shards: 2,
        part_bytes: 1,
        ..SyntheticRun::default()
    }
    .write(&dir)
    .unwrap();
    let d = dir.to_str().unwrap();
    let out = BIN.ok(&[
        "neurons",
        d,
        "--top-k",
        "4",
        "--context-tokens",
        "2",
        "--layers",
        "0,-1",
        "--quiet",
    ]);
    assert!(
        out.starts_with("neurons: 130 positions x 2 layers (0,2; 10 neurons each), top 4: read "),
        "{out}"
    );
    assert!(
        out.ends_with(&format!(
            "rows: neuron_top_contexts 80, neuron_stats 20 -> {d}\n"
        )),
        "{out}"
    );
    let m = manifest(&dir);
    assert_eq!(m["neurons_rows"]["neuron_top_contexts"], 80);
    assert_eq!(m["neurons_rows"]["neuron_stats"], 20);
    let (top, stats) = independent(&dir, 4, 2);
    let keep = |l: i32| l != 1;
    assert_eq!(
        read_top(&dir),
        top.into_iter()
            .filter(|t| keep(t.layer))
            .collect::<Vec<_>>()
    );
    let stats: Stats = stats.into_iter().filter(|(k, _)| keep(k.0)).collect();
    assert_stats_close(&read_stats(&dir), &stats);
    // Synthetic tokens are ` w<doc>.<position>`: a context is its neighbours in the document.
    let t = &read_top(&dir)[0];
    let doc: usize = t.doc_id.trim_start_matches("doc").parse().unwrap();
    let p = t.position as usize;
    assert_eq!(t.token, SyntheticRun::token(doc, p));
    let after: String = (p + 1..(p + 3).min(10))
        .map(|q| SyntheticRun::token(doc, q))
        .collect();
    assert_eq!(t.after, after);

    // Again with the defaults (every layer, top 20, 8 tokens of context): the tables replaced.
    let out = BIN.ok(&["neurons", d, "-q"]);
    assert!(
        out.ends_with(&format!(
            "rows: neuron_top_contexts 600, neuron_stats 30 -> {d}\n"
        )),
        "{out}"
    );
    assert_eq!(manifest(&dir)["neurons_rows"]["neuron_stats"], 30);
    let (top, stats) = independent(&dir, 20, 8);
    assert_eq!(read_top(&dir), top);
    assert_stats_close(&read_stats(&dir), &stats);
}

#[test]
fn bad_inputs_exit_1_with_a_message() {
    let dir = scratch("neurons-bad");
    let d = dir.to_str().unwrap();
    BIN.fails_with(
        &["neurons", &format!("{d}/missing")],
        &format!("{d}/missing: no such run directory"),
    );
    BIN.fails_with(
        &["neurons", d],
        &format!(
            "{d}: no activations table (no {d}/activations/part-*.parquet); the neuron tables \
             summarize the activations a run recorded (analyses.activations)"
        ),
    );
    SyntheticRun::default().write(&dir).unwrap();
    BIN.fails_with(
        &["neurons", d, "--top-k", "0"],
        "--top-k must be in 1..=1000, got 0",
    );
    BIN.fails_with(
        &["neurons", d, "--top-k", "1001"],
        "--top-k must be in 1..=1000, got 1001",
    );
    BIN.fails_with(
        &["neurons", d, "--context-tokens", "5000"],
        "--context-tokens must be in 0..=1000, got 5000",
    );
    BIN.fails_with(
        &["neurons", d, "--layers", "0,5"],
        &format!(
            "neurons.layers includes layer 5 but the activations table of {d} has layers [0, 1]"
        ),
    );
    BIN.fails_with(
        &["neurons", d, "--layers", "-3"],
        &format!(
            "neurons.layers includes layer -3, out of range: the activations table of {d} has \
             layers [0, 1] (negative indices count from layer 2)"
        ),
    );
    BIN.fails_with(
        &["neurons", d, "--layers", "x"],
        "--layers `x` is not a layer index or range (e.g. `0..30`, `0,5,-1`, `all`)",
    );
    std::fs::remove_dir_all(dir.join("tokens")).unwrap();
    BIN.fails_with(
        &["neurons", d],
        &format!("{d}: no tokens table, needed for the text of the top contexts"),
    );
    // Nothing was written by the failed runs, and no staging folder is left.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("neuron") && !n.starts_with('.')),
        "{names:?}"
    );
    // A usage error (not a number) is clap's: exit 2.
    assert_eq!(
        BIN.output(&["neurons", d, "--top-k", "ten"]).status.code(),
        Some(2)
    );
}

const DATA: &str = "\
{\"id\": \"a\", \"text\": \"The cat sat on the mat\"}
{\"id\": \"b\", \"text\": \"Once upon a time\"}
{\"id\": \"c\", \"text\": \"1, 2, 3,\"}
{\"id\": \"d\", \"text\": \"def add(a, b):\"}
{\"id\": \"e\", \"text\": \"The capital of France is\"}
";

const SPEC: &str = "\
model: MODEL
dataset:
  path: data.jsonl
  id_field: id
generation:
  max_new_tokens: 3
batching:
  batch_size: 2
  bucket_window: 2
analyses:
  activations: {layers: [0, 2]}
  neurons: {top_k: 3, context_tokens: 2, layers: [-1]}
output:
  dir: out
";

/// The pipeline writes the tables (the last layer only, as asked); two shards, then
/// `tokenlens neurons`, give exactly the unsharded run's top contexts.
#[test]
fn pipeline_and_sharded_runs_give_the_same_tables() {
    let spec = tiny_spec("neurons-run", DATA, SPEC);
    let dir = spec.parent().unwrap();
    let spec = spec.to_str().unwrap();
    BIN.ok(&["run", "-q", spec]);
    let whole = dir.join("whole");
    std::fs::rename(dir.join("out"), &whole).unwrap();
    let m = manifest(&whole);
    let stages = m["shards"]["shard-000-of-001.json"]["stage_seconds"]
        .as_object()
        .unwrap();
    assert!(stages["neurons"].as_f64().unwrap() > 0.0, "{stages:?}");
    // tiny-llama: 3 layers of 128 neurons; layer -1 is block 2.
    assert_eq!(m["neurons_rows"]["neuron_stats"], 128);
    assert_eq!(m["neurons_rows"]["neuron_top_contexts"], 128 * 3);
    let top = read_top(&whole);
    assert!(top.iter().all(|t| t.layer == 2));
    let (want, stats) = independent(&whole, 3, 2);
    let want: Vec<Top> = want.into_iter().filter(|t| t.layer == 2).collect();
    assert_eq!(top, want);
    let stats: Stats = stats.into_iter().filter(|(k, _)| k.0 == 2).collect();
    assert_stats_close(&read_stats(&whole), &stats);
    // Every position of the 5 documents counted once.
    let positions: i64 = batches(&whole, TOKENS.name)
        .iter()
        .map(|b| b.num_rows() as i64)
        .sum();
    assert!(read_stats(&whole).values().all(|s| s.0 == positions));

    // Sharded: the shards skip the stage; it refuses to run before every shard is done.
    let out = dir.join("out");
    let o = BIN.output(&["run", "--shard", "0/2", spec]);
    assert!(o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!(
            "note: analyses.neurons runs over the whole corpus: once every shard is done, run \
             `tokenlens neurons {}`",
            out.display()
        )),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o_str = out.to_str().unwrap();
    BIN.fails_with(
        &["neurons", o_str],
        &format!(
            "{o_str}: 1 of 2 shards done; finish the others first (tokenlens run --shards 2 \
             --shard I --resume), then summarize the whole run"
        ),
    );
    BIN.ok(&["run", "-q", "--shard", "1/2", spec]);
    assert!(!out.join(NEURON_STATS.name).exists());
    BIN.ok(&[
        "neurons",
        o_str,
        "--top-k",
        "3",
        "--context-tokens",
        "2",
        "--layers",
        "2",
        "-q",
    ]);
    // The same activations (batches differ, values do not), hence exactly the same top contexts.
    let acts = |run: &Path| {
        let mut v: Vec<(String, i64, i64, String)> = Vec::new();
        for b in batches(run, ACTIVATIONS.name) {
            let (d, p, l) = (
                strings(&b, "doc_id"),
                ints(&b, "position"),
                ints(&b, "layer"),
            );
            let vals = b.column_by_name("values").unwrap().as_list::<i32>();
            for i in 0..d.len() {
                v.push((d[i].clone(), p[i], l[i], format!("{:?}", vals.value(i))));
            }
        }
        v.sort();
        v
    };
    assert!(
        acts(&out) == acts(&whole),
        "sharded activations differ from the unsharded run's"
    );
    assert_eq!(read_top(&out), read_top(&whole));
    assert_stats_close(&read_stats(&out), &read_stats(&whole));
    assert_eq!(manifest(&out)["neurons_rows"], m["neurons_rows"]);
}
