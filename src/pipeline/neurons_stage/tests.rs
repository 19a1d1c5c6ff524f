//! The neurons stage on synthetic runs: its tables against an independent computation from the
//! activations and tokens tables, the same tables from one shard or several (and from per-shard
//! accumulators merged), ties ranked by dataset index whatever the files' order, layer subsets,
//! and the errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float16Type, Float32Type, Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;

use super::*;
use crate::pipeline::nmf_stage::synthetic::SyntheticRun;
use crate::pipeline::spec::Selection;
use crate::store::reader::read_table;
use crate::store::schema::{
    Activations, ActivationsRow, GENERATIONS, Generations, GenerationsRow, Tokens, TokensRow,
    table_def,
};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir()
        .join(format!("tokenlens-neurons-stage-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn spec(top_k: usize, context_tokens: usize) -> NeuronsSpec {
    NeuronsSpec {
        top_k,
        context_tokens,
        layers: Selection::All,
    }
}

fn err(r: Result<impl Sized>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn batches(dir: &Path, table: &str) -> Vec<RecordBatch> {
    read_table(dir, table_def(table).unwrap()).unwrap()
}

/// A cell as text or number, to compare rows.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Text(String),
    Num(f64),
    Null,
}

fn rows(dir: &Path, table: &str) -> Vec<Vec<Cell>> {
    let mut out = Vec::new();
    for b in batches(dir, table) {
        for i in 0..b.num_rows() {
            out.push(
                b.columns()
                    .iter()
                    .map(|c| match c.data_type() {
                        _ if c.is_null(i) => Cell::Null,
                        DataType::Utf8 => Cell::Text(c.as_string::<i32>().value(i).into()),
                        DataType::Boolean => Cell::Text(c.as_boolean().value(i).to_string()),
                        DataType::Int32 => Cell::Num(c.as_primitive::<Int32Type>().value(i) as f64),
                        DataType::Int64 => Cell::Num(c.as_primitive::<Int64Type>().value(i) as f64),
                        DataType::Float32 => {
                            Cell::Num(c.as_primitive::<Float32Type>().value(i) as f64)
                        }
                        DataType::Float64 => Cell::Num(c.as_primitive::<Float64Type>().value(i)),
                        t => panic!("{t}"),
                    })
                    .collect(),
            );
        }
    }
    out
}

/// Every activation row of the run: (doc_id, position, layer, values).
fn activations(dir: &Path) -> Vec<(String, i32, i32, Vec<f32>)> {
    let mut out = Vec::new();
    for b in batches(dir, "activations") {
        let d = b.column(0).as_string::<i32>();
        let p = b.column(1).as_primitive::<Int32Type>();
        let l = b.column(2).as_primitive::<Int32Type>();
        let v = b.column(3).as_list::<i32>();
        for i in 0..b.num_rows() {
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
            out.push((d.value(i).to_string(), p.value(i), l.value(i), vals));
        }
    }
    out
}

/// The tables as they should be, computed here by sorting every value and summing in two passes:
/// (top contexts rows, stats rows), both sorted by layer and neuron.
fn expected(dir: &Path, k: usize, c: i32, layers: &[i32]) -> (Vec<Vec<Cell>>, Vec<Vec<Cell>>) {
    let index: HashMap<String, i64> = rows(dir, GENERATIONS.name)
        .into_iter()
        .map(|r| match (&r[0], &r[1]) {
            (Cell::Text(d), Cell::Num(i)) => (d.clone(), *i as i64),
            _ => panic!(),
        })
        .collect();
    let mut tokens: HashMap<(String, i32), String> = HashMap::new();
    for r in rows(dir, "tokens") {
        if let (Cell::Text(d), Cell::Num(p), Cell::Text(t)) = (&r[0], &r[1], &r[3]) {
            tokens.insert((d.clone(), *p as i32), t.clone());
        }
    }
    let acts = activations(dir);
    let (mut top, mut stats) = (Vec::new(), Vec::new());
    for &layer in layers {
        let mine: Vec<_> = acts.iter().filter(|a| a.2 == layer).collect();
        for j in 0..mine[0].3.len() {
            let mut v: Vec<(f32, i64, i32, &str)> = mine
                .iter()
                .map(|a| (a.3[j], index[&a.0], a.1, a.0.as_str()))
                .collect();
            v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            for (rank, &(value, _, p, d)) in v.iter().take(k).enumerate() {
                let text = |r: std::ops::Range<i32>| {
                    r.filter_map(|q| tokens.get(&(d.to_string(), q)).cloned())
                        .collect::<String>()
                };
                top.push(vec![
                    Cell::Num(layer as f64),
                    Cell::Num(j as f64),
                    Cell::Num(rank as f64 + 1.0),
                    Cell::Num(value as f64),
                    Cell::Text(d.into()),
                    Cell::Num(p as f64),
                    Cell::Text(tokens[&(d.to_string(), p)].clone()),
                    Cell::Text(text((p - c).max(0)..p)),
                    Cell::Text(text(p + 1..p + c + 1)),
                ]);
            }
            let x: Vec<f64> = v.iter().map(|a| a.0 as f64).collect();
            let n = x.len() as f64;
            let mean = x.iter().sum::<f64>() / n;
            let var = x.iter().map(|y| (y - mean).powi(2)).sum::<f64>() / n;
            let act: Vec<f64> = x.iter().copied().filter(|&y| y > 0.0).collect();
            stats.push(vec![
                Cell::Num(layer as f64),
                Cell::Num(j as f64),
                Cell::Num(n),
                Cell::Num(mean),
                Cell::Num(var.sqrt()),
                Cell::Num(x.iter().copied().fold(f64::INFINITY, f64::min)),
                Cell::Num(x.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
                Cell::Num(act.len() as f64 / n),
                if act.is_empty() {
                    Cell::Null
                } else {
                    Cell::Num(act.iter().sum::<f64>() / act.len() as f64)
                },
            ]);
        }
    }
    (top, stats)
}

/// Stats rows equal but for f64 rounding of the sums (mean, std, mean_active).
fn assert_stats_close(a: &[Vec<Cell>], b: &[Vec<Cell>]) {
    assert_eq!(a.len(), b.len());
    for (ra, rb) in a.iter().zip(b) {
        for (i, (x, y)) in ra.iter().zip(rb).enumerate() {
            match (x, y) {
                (Cell::Num(p), Cell::Num(q)) if [3, 4, 8].contains(&i) => {
                    assert!((p - q).abs() <= 1e-9 * (1.0 + q.abs()), "{ra:?} vs {rb:?}")
                }
                _ => assert_eq!(x, y, "{ra:?} vs {rb:?}"),
            }
        }
    }
}

const MANY_PARTS: SyntheticRun = SyntheticRun {
    docs: 11,
    prompt_tokens: 5,
    generated_tokens: 3,
    layers: 3,
    neurons: 7,
    k: 2,
    noise: 0.05,
    signed: true,
    f16: false,
    shards: 3,
    // Every flush of 64 activation rows closes a part.
    part_bytes: 1,
    seed: 5,
};

#[test]
fn tables_equal_an_independent_computation_f32_and_f16() {
    for f16 in [false, true] {
        let dir = scratch(&format!("independent-{f16}"));
        SyntheticRun { f16, ..MANY_PARTS }.write(&dir).unwrap();
        let mut events = Vec::new();
        let r = run_neurons(&dir, &spec(4, 2), &mut |e| events.push(e)).unwrap();
        assert_eq!(
            (r.layers.clone(), r.neurons.clone()),
            (vec![0, 1, 2], vec![7; 3])
        );
        assert_eq!((r.positions, r.rows), (88, 3 * 88));
        assert_eq!(
            r.tables,
            [("neuron_top_contexts", 3 * 7 * 4), ("neuron_stats", 21)]
        );
        assert_eq!(
            events[0],
            NeuronsEvent::Scanned {
                rows: 264,
                layers: 3
            }
        );
        let read: u64 = events
            .iter()
            .map(|e| match e {
                NeuronsEvent::Rows(n) => *n,
                _ => 0,
            })
            .sum();
        assert_eq!(
            (read, *events.last().unwrap()),
            (264, NeuronsEvent::Writing)
        );
        let (top, stats) = expected(&dir, 4, 2, &[0, 1, 2]);
        assert_eq!(rows(&dir, "neuron_top_contexts"), top, "f16 {f16}");
        assert_stats_close(&rows(&dir, "neuron_stats"), &stats);
        // Contexts cross no document: a first position has nothing before it, a last nothing after.
        let t = rows(&dir, "neuron_top_contexts");
        assert!(
            t.iter()
                .any(|r| r[5] == Cell::Num(0.0) && r[7] == Cell::Text(String::new()))
        );
    }
}

/// One shard or three (many parts, documents interleaved): the same top contexts, exactly, and
/// the same statistics up to rounding; and per-shard accumulators merged equal the whole.
#[test]
fn shards_merge_to_the_unsharded_tables() {
    let one = scratch("one-shard");
    SyntheticRun {
        shards: 1,
        part_bytes: 1 << 30,
        ..MANY_PARTS
    }
    .write(&one)
    .unwrap();
    let three = scratch("three-shards");
    MANY_PARTS.write(&three).unwrap();
    for d in [&one, &three] {
        run_neurons(d, &spec(5, 1), &mut |_| {}).unwrap();
    }
    assert_eq!(
        rows(&one, "neuron_top_contexts"),
        rows(&three, "neuron_top_contexts")
    );
    assert_stats_close(&rows(&one, "neuron_stats"), &rows(&three, "neuron_stats"));

    // Each shard's parts into an accumulator of its own, then merged.
    let parts = table_parts(&three, &ACTIVATIONS).unwrap();
    assert_eq!(parts.len(), 6, "two parts per shard");
    let docs = Docs::read(&three).unwrap();
    let mut whole = Accumulators::new(vec![0, 1, 2], 5);
    for p in &parts {
        accumulate(p, true, &docs, &mut whole, &mut |_| {}).unwrap();
    }
    let mut merged: Vec<Option<crate::analysis::neurons::LayerAccumulator>> = vec![None; 3];
    for shard in ["part-002-", "part-000-", "part-001-"] {
        let mut accs = Accumulators::new(vec![0, 1, 2], 5);
        for p in parts.iter().filter(|p| p.to_string_lossy().contains(shard)) {
            accumulate(p, true, &docs, &mut accs, &mut |_| {}).unwrap();
        }
        for (m, a) in merged.iter_mut().zip(accs.acc) {
            let a = a.unwrap();
            match m {
                None => *m = Some(a),
                Some(m) => m.merge(&a),
            }
        }
    }
    for (m, w) in merged.iter().zip(&whole.acc) {
        let (m, w) = (m.as_ref().unwrap(), w.as_ref().unwrap());
        assert_eq!(m.count(), w.count());
        for j in 0..7 {
            assert_eq!(m.top(j), w.top(j));
        }
    }
}

/// Equal activations rank by dataset index (not by doc_id, nor by part order), then position.
#[test]
fn ties_rank_by_dataset_index_then_position() {
    let dir = scratch("ties");
    let run = crate::store::RunDir::create(&dir, true).unwrap();
    let topts = TableOptions::default();
    // Shard 0 holds the documents of dataset index 1 and 2, shard 1 index 0; doc_ids sort the
    // other way round.
    for (shard, docs) in [(0u32, vec![("a", 2i64), ("b", 1)]), (1, vec![("z", 0)])] {
        let wopts = WriterOptions {
            shard,
            ..WriterOptions::default()
        };
        let mut act = TableWriter::<Activations>::create(&run, &topts, &wopts).unwrap();
        let mut tok = TableWriter::<Tokens>::create(&run, &topts, &wopts).unwrap();
        let mut gen_ = TableWriter::<Generations>::create(&run, &topts, &wopts).unwrap();
        for (doc, index) in docs {
            gen_.append(GenerationsRow {
                doc_id: doc,
                index,
                prompt: "p",
                output_text: "",
                prompt_tokens: 2,
                generated_tokens: 0,
                stopped_at_eos: false,
                truncated_tokens: 0,
            })
            .unwrap();
            for p in 0..2 {
                let t = format!("{doc}{p}");
                tok.append(TokensRow {
                    doc_id: doc,
                    position: p,
                    token_id: 0,
                    token: &t,
                    is_generated: false,
                })
                .unwrap();
                act.append(ActivationsRow {
                    doc_id: doc,
                    position: p,
                    layer: 0,
                    values: &[1.0, -0.0, p as f32],
                })
                .unwrap();
            }
        }
        act.finish().unwrap();
        tok.finish().unwrap();
        gen_.finish().unwrap();
    }
    run_neurons(&dir, &spec(6, 1), &mut |_| {}).unwrap();
    let t = rows(&dir, "neuron_top_contexts");
    let order = |neuron: f64| -> Vec<String> {
        t.iter()
            .filter(|r| r[1] == Cell::Num(neuron))
            .map(|r| match (&r[4], &r[5]) {
                (Cell::Text(d), Cell::Num(p)) => format!("{d}{p}"),
                _ => panic!(),
            })
            .collect()
    };
    assert_eq!(order(0.0), ["z0", "z1", "b0", "b1", "a0", "a1"]);
    assert_eq!(order(1.0), ["z0", "z1", "b0", "b1", "a0", "a1"]);
    assert_eq!(order(2.0), ["z1", "b1", "a1", "z0", "b0", "a0"]);
    // The context of b1: one token before, none after (the document ends).
    let b1 = t
        .iter()
        .find(|r| {
            r[1] == Cell::Num(0.0) && r[4] == Cell::Text("b".into()) && r[5] == Cell::Num(1.0)
        })
        .unwrap();
    assert_eq!(
        b1[6..],
        [
            Cell::Text("b1".into()),
            Cell::Text("b0".into()),
            Cell::Text("".into())
        ]
    );
    // -0.0 is not active; neuron 1 never is.
    let s = rows(&dir, "neuron_stats");
    assert_eq!(s[1][7], Cell::Num(0.0));
    assert_eq!(s[1][8], Cell::Null);
}

#[test]
fn layer_subsets_and_their_errors() {
    let dir = scratch("layers");
    MANY_PARTS.write(&dir).unwrap();
    let with = |layers: Vec<i64>| NeuronsSpec {
        layers: Selection::List(layers),
        ..spec(2, 0)
    };
    let r = run_neurons(&dir, &with(vec![-1, 0]), &mut |_| {}).unwrap();
    assert_eq!((r.layers.clone(), r.rows), (vec![0, 2], 2 * 88));
    let (top, stats) = expected(&dir, 2, 0, &[0, 2]);
    assert_eq!(rows(&dir, "neuron_top_contexts"), top);
    assert_stats_close(&rows(&dir, "neuron_stats"), &stats);
    let d = dir.display();
    assert_eq!(
        err(run_neurons(&dir, &with(vec![5]), &mut |_| {})),
        format!(
            "neurons.layers includes layer 5 but the activations table of {d} has layers [0, 1, 2]"
        )
    );
    assert_eq!(
        err(run_neurons(&dir, &with(vec![-4]), &mut |_| {})),
        format!(
            "neurons.layers includes layer -4, out of range: the activations table of {d} has \
             layers [0, 1, 2] (negative indices count from layer 3)"
        )
    );
    assert_eq!(
        err(run_neurons(&dir, &with(vec![2, -1]), &mut |_| {})),
        "neurons.layers selects layer 2 twice"
    );
    assert_eq!(
        err(run_neurons(&dir, &with(vec![]), &mut |_| {})),
        "neurons.layers lists no layer"
    );
    // The failed runs left the previous tables as they were.
    assert_eq!(rows(&dir, "neuron_top_contexts"), top);
}

#[test]
fn missing_tables_and_bad_rows() {
    let dir = scratch("missing");
    let d = dir.display();
    let s = spec(3, 2);
    assert_eq!(
        err(run_neurons(&dir.join("nope"), &s, &mut |_| {})),
        format!("{d}/nope: no such run directory")
    );
    assert_eq!(
        err(run_neurons(&dir, &s, &mut |_| {})),
        format!(
            "{d}: no activations table (no {d}/activations/part-*.parquet); the neuron tables \
             summarize the activations a run recorded (analyses.activations)"
        )
    );
    assert_eq!(
        err(run_neurons(&dir, &spec(0, 2), &mut |_| {})),
        "neurons.top_k must be at least 1"
    );
    SyntheticRun::default().write(&dir).unwrap();
    std::fs::remove_dir_all(dir.join("tokens")).unwrap();
    assert_eq!(
        err(run_neurons(&dir, &s, &mut |_| {})),
        format!("{d}: no tokens table, needed for the text of the top contexts")
    );
    SyntheticRun::default().write(&dir).unwrap();
    std::fs::remove_dir_all(dir.join("generations")).unwrap();
    assert_eq!(
        err(run_neurons(&dir, &s, &mut |_| {})),
        format!(
            "{d}: no generations table, needed for the documents' dataset order (the tie-break \
             of equal activations)"
        )
    );
    assert!(!dir.join("neuron_stats").exists());

    // A non-finite activation, named.
    let run = crate::store::RunDir::create(&dir, true).unwrap();
    let o = (TableOptions::default(), WriterOptions::default());
    let mut g = TableWriter::<Generations>::create(&run, &o.0, &o.1).unwrap();
    g.append(GenerationsRow {
        doc_id: "x",
        index: 0,
        prompt: "p",
        output_text: "",
        prompt_tokens: 1,
        generated_tokens: 0,
        stopped_at_eos: false,
        truncated_tokens: 0,
    })
    .unwrap();
    g.finish().unwrap();
    let mut t = TableWriter::<Tokens>::create(&run, &o.0, &o.1).unwrap();
    t.append(TokensRow {
        doc_id: "x",
        position: 0,
        token_id: 1,
        token: "x",
        is_generated: false,
    })
    .unwrap();
    t.finish().unwrap();
    let mut a = TableWriter::<Activations>::create(&run, &o.0, &o.1).unwrap();
    for (doc, values) in [("x", [0.5, f32::NAN]), ("y", [0.0, 0.0])] {
        a.append(ActivationsRow {
            doc_id: doc,
            position: 0,
            layer: 0,
            values: &values,
        })
        .unwrap();
    }
    let part = a.finish().unwrap().parts[0].path.clone();
    assert_eq!(
        err(run_neurons(&dir, &s, &mut |_| {})),
        format!(
            "{}: doc `x` position 0 layer 0 neuron 1 is NaN",
            part.display()
        )
    );
}
