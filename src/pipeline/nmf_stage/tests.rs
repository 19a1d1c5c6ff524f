use std::ops::Range;
use std::path::{Path, PathBuf};

use arrow_array::{
    Array, Float32Array, Float64Array, Int8Array, Int32Array, RecordBatch, StringArray,
};

use super::scan::Scan;
use super::synthetic::SyntheticRun;
use super::*;
use crate::numerics::math::cosine;
use crate::pipeline::spec::{NegativeHandling, Positions, Selection};
use crate::pipeline::stage_input::parse_layers;
use crate::store::RunDir;
use crate::store::reader::read_table;
use crate::store::schema::{Activations, ActivationsRow, Tokens, TokensRow};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir()
        .join(format!("tokenlens-nmf-stage-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn spec(f: impl FnOnce(&mut NmfSpec)) -> NmfSpec {
    let mut s = NmfSpec::default();
    f(&mut s);
    s
}

/// X as the solver sees it, and the first row of each chunk.
fn read(dir: &Path, spec: &NmfSpec, chunk_rows: usize) -> Result<(Scan, Vec<f32>, Vec<usize>)> {
    let scan = scan(dir, spec)?;
    let (mut x, mut firsts) = (Vec::new(), Vec::new());
    let ticks = std::cell::Cell::new(0);
    let tick = || ticks.set(ticks.get() + 1);
    let mut src = ActivationsSource {
        scan: &scan,
        chunk_rows,
        on_chunk: &tick,
        spill: None,
    };
    src.for_each_chunk(&mut |first, c| {
        firsts.push(first);
        x.extend_from_slice(c);
        Ok(())
    })?;
    assert_eq!(ticks.get(), firsts.len());
    Ok((scan, x, firsts))
}

fn err(r: Result<impl Sized>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn parts(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every batch of a table of the run.
fn batches(dir: &Path, table: &str) -> Vec<RecordBatch> {
    read_table(dir, crate::store::schema::table_def(table).unwrap()).unwrap()
}

fn col<T: Array + Clone + 'static>(bs: &[RecordBatch], name: &str) -> Vec<T> {
    bs.iter()
        .map(|b| {
            b.column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<T>()
                .unwrap()
                .clone()
        })
        .collect()
}

fn f32s(bs: &[RecordBatch], name: &str) -> Vec<f32> {
    col::<Float32Array>(bs, name)
        .iter()
        .flat_map(|a| a.values().to_vec())
        .collect()
}

fn f64s(bs: &[RecordBatch], name: &str) -> Vec<f64> {
    col::<Float64Array>(bs, name)
        .iter()
        .flat_map(|a| a.values().to_vec())
        .collect()
}

fn i32s(bs: &[RecordBatch], name: &str) -> Vec<i32> {
    col::<Int32Array>(bs, name)
        .iter()
        .flat_map(|a| a.values().to_vec())
        .collect()
}

fn strings(bs: &[RecordBatch], name: &str) -> Vec<String> {
    col::<StringArray>(bs, name)
        .iter()
        .flat_map(|a| {
            (0..a.len())
                .map(|i| a.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Keys in file order: shard 0's documents, then shard 1's..., each position in order.
fn expected_keys(s: &SyntheticRun, positions: Range<usize>) -> Vec<(String, i32)> {
    let shards = s.shards as usize;
    (0..shards)
        .flat_map(|sh| (0..s.docs).filter(move |d| d % shards == sh))
        .flat_map(|d| {
            positions
                .clone()
                .map(move |p| (SyntheticRun::doc_id(d), p as i32))
        })
        .collect()
}

fn keys(scan: &Scan) -> Vec<(String, i32)> {
    scan.keys
        .iter()
        .map(|&(d, p)| (scan.docs[d as usize].clone(), p))
        .collect()
}

const MANY_PARTS: SyntheticRun = SyntheticRun {
    docs: 9,
    prompt_tokens: 4,
    generated_tokens: 3,
    layers: 3,
    neurons: 5,
    k: 2,
    noise: 0.05,
    signed: true,
    f16: false,
    shards: 2,
    // Every flush of 64 activation rows closes a part: a position's 3 layers straddle parts.
    part_bytes: 1,
    seed: 3,
};

#[test]
fn reads_every_position_of_every_part_in_order_f32_and_f16() {
    for f16 in [false, true] {
        let s = SyntheticRun { f16, ..MANY_PARTS };
        let dir = scratch(&format!("order-{f16}"));
        let planted = s.write(&dir).unwrap();
        let act = parts(&dir.join("activations"));
        assert!(act.len() >= 4, "{act:?}");
        assert!(act.iter().any(|p| p.starts_with("part-001-")), "{act:?}");
        // A part being written is not read.
        std::fs::write(dir.join("activations/.part-000-99999.parquet.tmp"), "junk").unwrap();

        let (scan, x, firsts) = read(&dir, &NmfSpec::default(), 5).unwrap();
        assert_eq!(keys(&scan), expected_keys(&s, 0..7));
        assert_eq!(scan.layout.layers, [0, 1, 2]);
        assert_eq!(scan.layout.widths, [5, 5, 5]);
        let (rows, cols) = (scan.keys.len(), scan.layout.cols());
        assert_eq!((rows, cols), (63, 15));
        assert_eq!(firsts, (0..rows).step_by(5).collect::<Vec<_>>());
        let mut negatives = 0;
        for (r, (doc, p)) in keys(&scan).iter().enumerate() {
            let d: usize = doc[3..].parse().unwrap();
            let raw = s.row(&planted, d, *p as usize);
            for c in 0..cols {
                let v = if f16 {
                    half::f16::from_f32(raw[c]).to_f32()
                } else {
                    raw[c]
                };
                negatives += usize::from(v < 0.0);
                assert_eq!(x[r * cols + c], v.max(0.0), "row {r} col {c}");
            }
        }
        assert!(negatives > 100, "clipping was exercised: {negatives}");
    }
}

#[test]
fn layer_subsets_and_split_negatives() {
    let dir = scratch("subsets");
    let s = MANY_PARTS;
    let planted = s.write(&dir).unwrap();
    let (scan, x, _) = read(
        &dir,
        &spec(|n| {
            n.layers = Selection::List(vec![2, 0]);
            n.negative = NegativeHandling::Split;
        }),
        100,
    )
    .unwrap();
    let lay = &scan.layout;
    assert_eq!(lay.layers, [0, 2]);
    assert_eq!(lay.cols(), 20);
    // Columns: positive parts of layer 0 then 2, then the negative parts.
    assert_eq!(lay.column(0), (0, 0, 1));
    assert_eq!(lay.column(5), (2, 0, 1));
    assert_eq!(lay.column(9), (2, 4, 1));
    assert_eq!(lay.column(10), (0, 0, -1));
    assert_eq!(lay.column(19), (2, 4, -1));
    for (r, (doc, p)) in keys(&scan).iter().enumerate() {
        let d: usize = doc[3..].parse().unwrap();
        let raw = s.row(&planted, d, *p as usize);
        let chosen: Vec<f32> = raw[0..5].iter().chain(&raw[10..15]).copied().collect();
        let row = &x[r * 20..(r + 1) * 20];
        for c in 0..10 {
            assert_eq!(row[c], chosen[c].max(0.0));
            assert_eq!(row[10 + c], (-chosen[c]).max(0.0));
        }
    }
    // Negative indices count from the table's last layer.
    let scan = super::scan(&dir, &spec(|n| n.layers = Selection::List(vec![-1, -3]))).unwrap();
    assert_eq!(scan.layout.layers, [0, 2]);
}

#[test]
fn layer_errors_name_the_layers_the_table_has() {
    let dir = scratch("layer-errors");
    SyntheticRun {
        layers: 3,
        ..SyntheticRun::default()
    }
    .write(&dir)
    .unwrap();
    let e = |layers: Vec<i64>| {
        err(super::scan(
            &dir,
            &spec(|n| n.layers = Selection::List(layers)),
        ))
    };
    let d = dir.display();
    assert_eq!(
        e(vec![0, 5]),
        format!(
            "nmf.layers includes layer 5 but the activations table of {d} has layers [0, 1, 2]"
        )
    );
    assert_eq!(
        e(vec![-4]),
        format!(
            "nmf.layers includes layer -4, out of range: the activations table of {d} has layers \
             [0, 1, 2] (negative indices count from layer 3)"
        )
    );
    assert_eq!(e(vec![1, -2]), "nmf.layers selects layer 1 twice");
    assert_eq!(e(vec![]), "nmf.layers lists no layer");

    // A table recorded with layers [0, 2] (the runner's `activations.layers`): -1 is layer 2,
    // and layer 1 is named as missing.
    let dir = scratch("layer-gap");
    let run = RunDir::create(&dir, false).unwrap();
    let mut w = TableWriter::<Activations>::create(
        &run,
        &TableOptions::default(),
        &WriterOptions::default(),
    )
    .unwrap();
    for layer in [0, 2] {
        w.append(ActivationsRow {
            doc_id: "a",
            position: 0,
            layer,
            values: &[1.0, 2.0],
        })
        .unwrap();
    }
    w.finish().unwrap();
    let scan = super::scan(&dir, &spec(|n| n.layers = Selection::List(vec![-1]))).unwrap();
    assert_eq!(scan.layout.layers, [2]);
    assert_eq!(
        err(super::scan(
            &dir,
            &spec(|n| n.layers = Selection::List(vec![1, 0]))
        )),
        format!(
            "nmf.layers includes layer 1 but the activations table of {} has layers [0, 2]",
            dir.display()
        )
    );
}

#[test]
fn incomplete_and_repeated_positions_are_errors() {
    let dir = scratch("incomplete");
    let run = RunDir::create(&dir, false).unwrap();
    let mut w = TableWriter::<Activations>::create(
        &run,
        &TableOptions::default(),
        &WriterOptions::default(),
    )
    .unwrap();
    let rows: &[(&str, i32, i32)] = &[("a", 0, 0), ("a", 0, 1), ("a", 1, 0), ("b", 0, 0)];
    for &(doc_id, position, layer) in rows {
        w.append(ActivationsRow {
            doc_id,
            position,
            layer,
            values: &[1.0, -1.0, 2.0],
        })
        .unwrap();
    }
    let part = w.finish().unwrap().parts[0].path.clone();
    assert_eq!(
        err(super::scan(&dir, &NmfSpec::default())),
        format!(
            "{}: doc `a` position 1 has no row for layer 1 (nmf.layers)",
            part.display()
        )
    );
    // Layer 0 alone is complete.
    let (scan, x, _) = read(&dir, &spec(|n| n.layers = Selection::List(vec![0])), 10).unwrap();
    assert_eq!(scan.keys.len(), 3);
    assert_eq!(x, [1.0, 0.0, 2.0].repeat(3));

    // The same position again further on (a second part of the same document).
    let mut w = TableWriter::<Activations>::create(
        &run,
        &TableOptions::default(),
        &WriterOptions {
            shard: 1,
            ..WriterOptions::default()
        },
    )
    .unwrap();
    w.append(ActivationsRow {
        doc_id: "a",
        position: 0,
        layer: 0,
        values: &[1.0, 1.0, 1.0],
    })
    .unwrap();
    let part = w.finish().unwrap().parts[0].path.clone();
    assert_eq!(
        err(super::scan(
            &dir,
            &spec(|n| n.layers = Selection::List(vec![0]))
        )),
        format!(
            "{}: doc `a` position 0 appears twice (apart) in the activations table",
            part.display()
        )
    );
}

#[test]
fn positions_subsets_use_the_prompt_lengths() {
    let dir = scratch("positions");
    let s = SyntheticRun {
        shards: 2,
        ..SyntheticRun::default()
    };
    s.write(&dir).unwrap();
    let scan = super::scan(&dir, &spec(|n| n.positions = Positions::Prompt)).unwrap();
    assert_eq!(keys(&scan), expected_keys(&s, 0..6));
    let scan = super::scan(&dir, &spec(|n| n.positions = Positions::Generated)).unwrap();
    assert_eq!(keys(&scan), expected_keys(&s, 6..10));
    let (_, x, _) = read(&dir, &spec(|n| n.positions = Positions::Generated), 7).unwrap();
    assert_eq!(x.len(), 20 * 4 * 32);

    std::fs::remove_dir_all(dir.join("generations")).unwrap();
    assert_eq!(
        err(super::scan(
            &dir,
            &spec(|n| n.positions = Positions::Prompt)
        )),
        format!(
            "{}: no generations table, needed to tell prompt from generated positions",
            dir.display()
        )
    );
    // `all` does not need it.
    super::scan(&dir, &NmfSpec::default()).unwrap();
}

#[test]
fn missing_run_or_table() {
    let dir = scratch("missing");
    let opts = NmfStageOptions::new(NmfSpec::default());
    let e = err(run_nmf(&dir.join("nope"), &opts, &mut |_| {}));
    assert_eq!(e, format!("{}/nope: no such run directory", dir.display()));
    let e = err(run_nmf(&dir, &opts, &mut |_| {}));
    assert_eq!(
        e,
        format!(
            "{0}: no activations table (no {0}/activations/part-*.parquet); NMF factorizes the \
             activations a run recorded (analyses.activations)",
            dir.display()
        )
    );
    let bad = NmfStageOptions::new(spec(|n| n.n_components = 0));
    assert_eq!(
        err(run_nmf(&dir, &bad, &mut |_| {})),
        "nmf.n_components must be at least 1"
    );
}

#[test]
fn parse_layer_lists_and_ranges() {
    assert_eq!(parse_layers("all"), Ok(Selection::All));
    assert_eq!(parse_layers("0..3"), Ok(Selection::List(vec![0, 1, 2])));
    assert_eq!(parse_layers("0..=2"), Ok(Selection::List(vec![0, 1, 2])));
    assert_eq!(parse_layers("0, 5,-1"), Ok(Selection::List(vec![0, 5, -1])));
    assert_eq!(parse_layers("1..3,7"), Ok(Selection::List(vec![1, 2, 7])));
    assert!(parse_layers("3..3").unwrap_err().contains("empty range"));
    assert!(parse_layers("-3..-1").unwrap_err().contains("non-negative"));
    assert!(
        parse_layers("0..x")
            .unwrap_err()
            .contains("`0..x` is not a layer index")
    );
    assert!(parse_layers("").is_err());
}

/// The whole stage on a small planted run: the four tables, their contents, both solver paths,
/// and the replacement of a previous result.
#[test]
fn run_nmf_writes_and_replaces_the_tables() {
    let dir = scratch("run");
    let s = SyntheticRun {
        docs: 30,
        k: 3,
        layers: 2,
        neurons: 12,
        shards: 2,
        ..SyntheticRun::default()
    };
    let planted = s.write(&dir).unwrap();
    let opts = NmfStageOptions::new(spec(|n| {
        n.n_components = 3;
        n.max_iter = 150;
        n.tolerance = 1e-7;
        n.top_contexts = 4;
        n.context_tokens = 2;
    }));
    let mut events = Vec::new();
    let r = run_nmf(&dir, &opts, &mut |e| events.push(e)).unwrap();
    let (rows, cols) = (300, 24);
    assert_eq!((r.rows, r.cols, r.in_memory), (rows, cols, true));
    assert_eq!(
        events[0],
        NmfEvent::Scanned {
            rows,
            cols,
            chunks: 1,
            in_memory: true
        }
    );
    assert!(matches!(events.last(), Some(NmfEvent::Writing)));
    assert_eq!(
        r.tables,
        [
            ("nmf_components", 3 * 24),
            ("nmf_factors", 3 * 300),
            ("nmf_summary", r.iterations as u64),
            ("nmf_top_contexts", 12)
        ]
    );
    assert!(r.relative_error < 0.02, "{r:?}");
    assert!(
        !parts(&dir).iter().any(|p| p.starts_with('.')),
        "{:?}",
        parts(&dir)
    );

    // Components: [k, cols] in row order, and they are the planted ones up to permutation.
    let comp = batches(&dir, "nmf_components");
    let h = f32s(&comp, "weight");
    assert_eq!(
        i32s(&comp, "layer")[..13],
        [[0; 12].as_slice(), &[1]].concat()
    );
    assert_eq!(i32s(&comp, "neuron")[10..14], [10, 11, 0, 1]);
    assert!(
        col::<Int8Array>(&comp, "sign")
            .iter()
            .all(|a| a.values().iter().all(|&s| s == 1))
    );
    for j in 0..3 {
        let truth = &planted.h[j * cols..(j + 1) * cols];
        let best = (0..3)
            .map(|i| cosine(truth, &h[i * cols..(i + 1) * cols]))
            .fold(0f64, f64::max);
        assert!(best > 0.99, "component {j}: {best}");
    }
    // Summary: iterations from 1, seconds growing.
    let summary = batches(&dir, "nmf_summary");
    assert_eq!(
        i32s(&summary, "iteration"),
        (1..=r.iterations as i32).collect::<Vec<_>>()
    );
    // Top contexts: ranked by value, with the 2 tokens before.
    let top = batches(&dir, "nmf_top_contexts");
    let factors = batches(&dir, "nmf_factors");
    let (fdoc, fpos, ffac, fval) = (
        strings(&factors, "doc_id"),
        i32s(&factors, "position"),
        i32s(&factors, "factor"),
        f32s(&factors, "value"),
    );
    let (tdoc, tpos, tfac, trank, tval, tctx) = (
        strings(&top, "doc_id"),
        i32s(&top, "position"),
        i32s(&top, "factor"),
        i32s(&top, "rank"),
        f32s(&top, "value"),
        strings(&top, "context"),
    );
    for i in 0..12 {
        assert_eq!((tfac[i], trank[i]), (i as i32 / 4, i as i32 % 4 + 1));
        let best = (0..fval.len())
            .filter(|&x| ffac[x] == tfac[i])
            .map(|x| fval[x])
            .fold(0f32, f32::max);
        if trank[i] == 1 {
            assert_eq!(tval[i], best);
        } else {
            assert!(tval[i] <= tval[i - 1]);
        }
        let x = (0..fval.len())
            .find(|&x| fdoc[x] == tdoc[i] && fpos[x] == tpos[i] && ffac[x] == tfac[i])
            .unwrap();
        assert_eq!(fval[x], tval[i]);
        let d: usize = tdoc[i][3..].parse().unwrap();
        let p = tpos[i] as usize;
        let want: String = (p.saturating_sub(2)..=p)
            .map(|q| SyntheticRun::token(d, q))
            .collect();
        assert_eq!(tctx[i], want);
    }

    // Streaming (no memory budget, chunks of 7 rows) gives the same factors up to rounding.
    let streamed = NmfStageOptions {
        memory_budget: 0,
        chunk_bytes: 7 * cols * 4,
        ..opts.clone()
    };
    let mut chunks = 0;
    let r2 = run_nmf(&dir, &streamed, &mut |e| {
        chunks += usize::from(e == NmfEvent::Chunk);
    })
    .unwrap();
    assert!(!r2.in_memory);
    // 43 chunks per pass, one pass per iteration plus the solver's first pass.
    assert_eq!(chunks, 43 * (r2.iterations + 1));
    let h2 = f32s(&batches(&dir, "nmf_components"), "weight");
    for j in 0..3 {
        let (a, b) = (&h[j * cols..(j + 1) * cols], &h2[j * cols..(j + 1) * cols]);
        assert!(cosine(a, b) > 0.9999, "component {j}: {}", cosine(a, b));
    }
    // The same errors iteration by iteration, up to rounding (amplified by the iterations, and
    // deciding where each run stops near the noise floor).
    let e2 = batches(&dir, "nmf_summary");
    let (e1, e2) = (
        f64s(&summary, "relative_error"),
        f64s(&e2, "relative_error"),
    );
    for (i, (a, b)) in e1.iter().zip(&e2).enumerate() {
        assert!(
            (a - b).abs() < 1e-4 * e1[0],
            "iteration {}: {a} vs {b}",
            i + 1
        );
    }

    // Run again with other options: the tables are replaced, not added to.
    let again = NmfStageOptions::new(spec(|n| {
        n.n_components = 2;
        n.max_iter = 5;
        n.layers = Selection::List(vec![1]);
        n.negative = NegativeHandling::Split;
        n.top_contexts = 0;
    }));
    let r3 = run_nmf(&dir, &again, &mut |_| {}).unwrap();
    assert_eq!(
        r3.tables,
        [
            ("nmf_components", 2 * 24),
            ("nmf_factors", 2 * 300),
            ("nmf_summary", 5),
            ("nmf_top_contexts", 0)
        ]
    );
    assert_eq!(
        parts(&dir.join("nmf_components")),
        ["part-000-00000.parquet"]
    );
    let comp = batches(&dir, "nmf_components");
    assert_eq!(comp.iter().map(|b| b.num_rows()).sum::<usize>(), 48);
    assert_eq!(batches(&dir, "nmf_top_contexts").len(), 0);
    assert!(!parts(&dir).iter().any(|p| p.starts_with('.')));
}

#[test]
fn top_contexts_need_the_tokens_table() {
    let dir = scratch("no-tokens");
    SyntheticRun::default().write(&dir).unwrap();
    std::fs::remove_dir_all(dir.join("tokens")).unwrap();
    let opts = NmfStageOptions::new(spec(|n| n.max_iter = 3));
    assert_eq!(
        err(run_nmf(&dir, &opts, &mut |_| {})),
        format!(
            "{}: no tokens table, needed for nmf_top_contexts (use --top-contexts 0 to skip them)",
            dir.display()
        )
    );
    let opts = NmfStageOptions::new(spec(|n| {
        n.max_iter = 3;
        n.top_contexts = 0;
    }));
    run_nmf(&dir, &opts, &mut |_| {}).unwrap();
    // Tokens of a context that are missing are left out.
    let dir = scratch("few-tokens");
    SyntheticRun::default().write(&dir).unwrap();
    std::fs::remove_dir_all(dir.join("tokens")).unwrap();
    let other = scratch("few-tokens-only");
    let run = RunDir::create(&other, true).unwrap();
    let mut w =
        TableWriter::<Tokens>::create(&run, &TableOptions::default(), &WriterOptions::default())
            .unwrap();
    for d in 0..20 {
        w.append(TokensRow {
            doc_id: &SyntheticRun::doc_id(d),
            position: 0,
            token_id: 0,
            token: "<s>",
            is_generated: false,
        })
        .unwrap();
    }
    w.finish().unwrap();
    std::fs::rename(other.join("tokens"), dir.join("tokens")).unwrap();
    let opts = NmfStageOptions::new(spec(|n| n.max_iter = 3));
    run_nmf(&dir, &opts, &mut |_| {}).unwrap();
    let top = batches(&dir, "nmf_top_contexts");
    let (pos, ctx) = (i32s(&top, "position"), strings(&top, "context"));
    assert!(!pos.is_empty());
    for (p, c) in pos.iter().zip(&ctx) {
        assert_eq!(c, if *p <= 10 { "<s>" } else { "" }, "position {p}");
    }
}

/// Streamed passes read the first pass's copy of X (float16 when the table is, float32 else):
/// the same factors, to the bit, as decoding the Parquet parts every time.
#[test]
fn spilled_passes_equal_parquet_passes() {
    for f16 in [false, true] {
        let dir = scratch(&format!("spill-{f16}"));
        SyntheticRun {
            f16,
            signed: true,
            ..SyntheticRun::default()
        }
        .write(&dir)
        .unwrap();
        let (rows, cols) = (200u64, 64u64);
        let mut results = Vec::new();
        for spill in [true, false] {
            let opts = NmfStageOptions {
                memory_budget: 0,
                chunk_bytes: 30 * cols as usize * 4,
                spill,
                ..NmfStageOptions::new(spec(|n| {
                    n.max_iter = 12;
                    n.negative = NegativeHandling::Split;
                }))
            };
            let r = run_nmf(&dir, &opts, &mut |_| {}).unwrap();
            assert!(!r.in_memory);
            let width = if f16 { 2 } else { 4 };
            assert_eq!(r.spill_bytes, if spill { rows * cols * width } else { 0 });
            assert_eq!((r.rows as u64, r.cols as u64), (rows, cols));
            results.push((
                f32s(&batches(&dir, "nmf_components"), "weight"),
                f64s(&batches(&dir, "nmf_summary"), "relative_error"),
            ));
            // No scratch file or staging folder is left.
            assert!(!parts(&dir).iter().any(|p| p.starts_with('.')));
        }
        assert!(results[0] == results[1], "f16 {f16}");
    }
}
