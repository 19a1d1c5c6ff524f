//! `tokenlens compare`'s layer similarity end to end: two tiny models (tiny-llama, 3 layers, and
//! tiny-qwen2, 2 layers, the same tokenizer and width) over 24 prompts, their residual streams
//! recorded; the `similarity` table must equal the in-memory metrics (validated against Ecco's
//! own code in `analysis::similarity`'s tests) computed here on the matched rows read straight
//! from the runs: every metric, every layer pair, at position and document level.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type};
use tokenlens::analysis::similarity::{
    Activations, cca, linear_cka, linear_cka_unbiased, pwcca, svcca,
};
use tokenlens::compare::reps::{Reps, Source};

use crate::common::{Tokenlens, batches, data_dir, tiny_spec};

const BIN: Tokenlens = Tokenlens::RUN;

const SPEC: &str = "\
model: MODEL
dataset:
  path: data.jsonl
  id_field: id
generation:
  max_new_tokens: 3
  stop_at_eos: false
analyses:
  predictions: {top_k: 4}
  residuals: {layers: all}
output:
  dir: out
";

fn data() -> String {
    let words = ["cat", "dog", "river", "number", "house", "tree"];
    (0..24)
        .map(|i| {
            let w = words[i % words.len()];
            format!(
                "{{\"id\": \"p{i}\", \"text\": \"The {w} number {i} is near the {} and\"}}\n",
                words[(i * 5 + 1) % words.len()]
            )
        })
        .collect()
}

fn run(name: &str, model: &str) -> PathBuf {
    let spec = SPEC.replace("MODEL", data_dir().join(model).to_str().unwrap());
    let spec = tiny_spec(name, &data(), &spec);
    BIN.ok(&["run", "-q", spec.to_str().unwrap()]);
    spec.parent().unwrap().join("out")
}

/// (metric, layer_a, layer_b) -> (value, rows) of a comparison's similarity table.
fn similarity(dir: &Path) -> HashMap<(String, i32, i32), (f64, i64)> {
    let mut out = HashMap::new();
    for b in batches(dir, "similarity") {
        let col = |n: &str| b.column_by_name(n).unwrap().clone();
        let (m, la, lb, v, r) = (
            col("metric"),
            col("layer_a"),
            col("layer_b"),
            col("value"),
            col("rows"),
        );
        for i in 0..b.num_rows() {
            out.insert(
                (
                    m.as_string::<i32>().value(i).to_string(),
                    la.as_primitive::<Int32Type>().value(i),
                    lb.as_primitive::<Int32Type>().value(i),
                ),
                (
                    v.as_primitive::<Float64Type>().value(i),
                    r.as_primitive::<Int64Type>().value(i),
                ),
            );
        }
    }
    out
}

/// Per layer, the rows of `items` (document, positions) of a run's residuals, or their
/// per-document means.
fn matrices(reps: &Reps, items: &[(String, std::ops::Range<usize>)], means: bool) -> Vec<Vec<f32>> {
    let want: Vec<(&str, std::ops::Range<usize>)> =
        items.iter().map(|(d, r)| (d.as_str(), r.clone())).collect();
    let m = reps.read(&want).unwrap();
    if !means {
        return m;
    }
    m.iter()
        .zip(&reps.widths)
        .map(|(x, &w)| {
            let mut row = 0;
            let mut out = vec![];
            for (_, r) in items {
                for j in 0..w {
                    let s: f64 = (row..row + r.len()).map(|k| x[k * w + j] as f64).sum();
                    out.push((s / r.len() as f64) as f32);
                }
                row += r.len();
            }
            out
        })
        .collect()
}

/// Checks every value of `table` against the in-memory metrics of the matrices.
fn check(
    table: &HashMap<(String, i32, i32), (f64, i64)>,
    a: &[Vec<f32>],
    b: &[Vec<f32>],
    w: usize,
    rows: usize,
    all_pairs: bool,
) {
    let mut checked = 0;
    for (la, xa) in a.iter().enumerate() {
        for (lb, xb) in b.iter().enumerate() {
            let (x, y) = (
                Activations::new(xa.as_slice(), w).unwrap(),
                Activations::new(xb.as_slice(), w).unwrap(),
            );
            let mut want = vec![("cka_minibatch", linear_cka_unbiased(x, y).ok())];
            let diagonal =
                lb == ((la as f64) * (b.len() - 1) as f64 / (a.len() - 1) as f64).round() as usize;
            if all_pairs || diagonal {
                want.push(("cka", linear_cka(x, y).ok()));
                if rows > w {
                    want.push(("cca", cca(x, y).ok()));
                    want.push(("svcca", svcca(x, y, 20).ok()));
                    want.push(("pwcca", pwcca(x, y).ok()));
                }
            }
            for (m, v) in want {
                let key = (m.to_string(), la as i32, lb as i32);
                let (got, n) = table.get(&key).unwrap_or_else(|| panic!("no row {key:?}"));
                assert_eq!(*n as usize, rows, "{key:?}");
                // A metric that fails in memory (PWCCA on the embeddings' dependent rows) is
                // NaN in the table.
                match v {
                    Some(v) => assert!(
                        (got - v).abs() <= 1e-7 * v.abs().max(1.0),
                        "{key:?}: table {got}, in memory {v}"
                    ),
                    None => assert!(got.is_nan(), "{key:?}: {got}, in memory an error"),
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, table.len(), "every row checked once");
}

#[test]
fn layer_similarity_equals_the_in_memory_metrics_on_the_matched_rows() {
    let (ra, rb) = (
        run("sim-llama", "tiny-llama"),
        run("sim-qwen2", "tiny-qwen2"),
    );
    let a = Reps::open(&ra, Source::Residuals).unwrap();
    let b = Reps::open(&rb, Source::Residuals).unwrap();
    assert_eq!((a.layers.len(), b.layers.len()), (4, 3));
    let w = a.widths[0];

    // Position level: the positions 0..common of every document, common = the common token
    // prefix (the prompt at least: the two models generate differently). One minibatch holds
    // every row, so cka_minibatch is the unbiased CKA of all of them.
    let out = ra.parent().unwrap().join("cmp-pos");
    BIN.ok(&[
        "compare",
        "-q",
        s(&ra),
        s(&rb),
        "--out",
        s(&out),
        "--pairs",
        "all",
        "--minibatch",
        "65536",
        "--similarity",
        "residuals",
    ]);
    // Neither run recorded the lens or saliency: the diff says so, once for both.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("comparison.json")).unwrap())
            .unwrap();
    let whys: Vec<&str> = json["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["why"].as_str().unwrap())
        .collect();
    assert!(
        whys.contains(&"neither run has a `lens` table")
            && whys.contains(&"neither run has a `saliency` table"),
        "{whys:?}"
    );
    let common = by_doc(&out, "diff_docs", "common");
    let items: Vec<(String, std::ops::Range<usize>)> = (0..24)
        .map(|i| format!("p{i}"))
        .map(|d| {
            let c = common[&d];
            (d, 0..c)
        })
        .collect();
    let rows: usize = items.iter().map(|i| i.1.len()).sum();
    assert!(
        rows > w,
        "{rows} rows: CCA needs more rows than the width {w}"
    );
    let table = similarity(&out);
    check(
        &table,
        &matrices(&a, &items, false),
        &matrices(&b, &items, false),
        w,
        rows,
        true,
    );

    // Document level, diagonal pairs (the default): each document the mean of its prompt
    // positions; 24 documents, fewer than the width, so the CCA family is skipped and says so.
    let out = ra.parent().unwrap().join("cmp-doc");
    let stdout = BIN.ok(&[
        "compare",
        "-q",
        s(&ra),
        s(&rb),
        "--out",
        s(&out),
        "--level",
        "document",
    ]);
    assert!(
        stdout.contains("CCA's covariances would be singular"),
        "{stdout}"
    );
    let (pa, pb) = (
        by_doc(&ra, "generations", "prompt_tokens"),
        by_doc(&rb, "generations", "prompt_tokens"),
    );
    let ia: Vec<_> = (0..24)
        .map(|i| format!("p{i}"))
        .map(|d| {
            let n = pa[&d];
            (d, 0..n)
        })
        .collect();
    let ib: Vec<_> = (0..24)
        .map(|i| format!("p{i}"))
        .map(|d| {
            let n = pb[&d];
            (d, 0..n)
        })
        .collect();
    let table = similarity(&out);
    check(
        &table,
        &matrices(&a, &ia, true),
        &matrices(&b, &ib, true),
        w,
        24,
        false,
    );

    // One run: layer x layer within run A (minibatch CKA of every pair; the diagonal of the
    // exact metrics would be all ones, so they are skipped with a reason).
    let out = ra.parent().unwrap().join("cmp-one");
    let stdout = BIN.ok(&["compare", "-q", s(&ra), "--out", s(&out)]);
    assert!(stdout.contains("use --pairs all"), "{stdout}");
    let table = similarity(&out);
    assert_eq!(table.len(), 16);
    for l in 0..4 {
        let (v, _) = table[&("cka_minibatch".to_string(), l, l)];
        assert!((v - 1.0).abs() < 1e-9, "layer {l} with itself: {v}");
    }
}

/// An int32 column of a table by doc_id.
fn by_doc(dir: &Path, table: &str, column: &str) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for bt in batches(dir, table) {
        let ids = bt
            .column_by_name("doc_id")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let v = bt
            .column_by_name(column)
            .unwrap()
            .as_primitive::<Int32Type>()
            .clone();
        for i in 0..bt.num_rows() {
            m.insert(ids.value(i).to_string(), v.value(i) as usize);
        }
    }
    m
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `analyses.similarity` in a pipeline: the run's own layers against each other, the values of
/// `tokenlens compare RUN --pairs all` (every metric: 24 prompts give more rows than the
/// residual stream is wide), its rows in the manifest, its stage timed; a resumed run ends with
/// the same table, also when the stage runs again; a sharded run skips it, naming the command.
#[test]
fn the_pipeline_writes_the_runs_own_layer_similarity() {
    let spec_text = SPEC.replace(
        "  residuals: {layers: all}\n",
        "  residuals: {layers: all}\n  similarity: {sources: [residuals], metrics: [cka_minibatch, cka, cca, svcca, pwcca], pairs: all}\n",
    );
    let spec = tiny_spec(
        "sim-pipeline",
        &data(),
        &spec_text.replace("MODEL", data_dir().join("tiny-llama").to_str().unwrap()),
    );
    let dir = spec.parent().unwrap().to_path_buf();
    let spec = spec.to_str().unwrap();
    BIN.ok(&["run", "-q", spec]);
    let run = dir.join("out");
    let own = similarity(&run);
    // 5 metrics, 4 x 4 residual layers.
    assert_eq!(own.len(), 5 * 16, "{own:?}");

    let cmp = dir.join("cmp");
    BIN.ok(&["compare", "-q", s(&run), "--out", s(&cmp), "--pairs", "all"]);
    let theirs = similarity(&cmp);
    assert_eq!(own.len(), theirs.len());
    for (key, (v, rows)) in &own {
        let (w, r) = theirs
            .get(key)
            .unwrap_or_else(|| panic!("{key:?}: not in the comparison"));
        assert_eq!(rows, r, "{key:?}");
        assert!(
            (v - w).abs() <= 1e-9 || (v.is_nan() && w.is_nan()),
            "{key:?}: run {v}, compare {w}"
        );
    }
    // Without PWCCA (the one asymmetric metric) only i <= j is accumulated within a run and
    // (j, i) mirrored from it: the values computed both ways above.
    let sym = dir.join("cmp-sym");
    BIN.ok(&[
        "compare",
        "-q",
        s(&run),
        "--out",
        s(&sym),
        "--pairs",
        "all",
        "--metrics",
        "cka,cca,svcca",
    ]);
    let mirrored = similarity(&sym);
    assert_eq!(mirrored.len(), 3 * 16, "{mirrored:?}");
    for (key, (v, _)) in &mirrored {
        let (w, _) = own[key];
        assert!((v - w).abs() <= 1e-9, "{key:?}: mirrored {v}, computed {w}");
    }
    // The run names itself by its directory's name; its manifest has the rows and the stage.
    let b = &batches(&run, "similarity")[0];
    let run_a = b.column_by_name("run_a").unwrap().as_string::<i32>();
    assert_eq!(run_a.value(0), run.file_name().unwrap().to_str().unwrap());
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["similarity_rows"]["similarity"], own.len() as u64);
    assert!(
        m["tables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "similarity")
    );
    let stage = &m["shards"]["shard-000-of-001.json"]["stage_seconds"]["similarity"];
    assert!(stage.as_f64().is_some_and(|x| x > 0.0), "{m}");

    // Resumed when done: nothing changes. Resumed after a kill during the stage (the shard not
    // yet done): the stage runs again and swaps in the same table.
    let part = run.join("similarity/part-000-00000.parquet");
    let bytes = std::fs::read(&part).unwrap();
    let o = BIN.output(&["run", "--resume", spec]);
    assert!(o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is already done"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(std::fs::read(&part).unwrap() == bytes);
    let status = run.join("shards/shard-000-of-001.json");
    let text = std::fs::read_to_string(&status).unwrap();
    std::fs::write(
        &status,
        text.replace("\"status\": \"done\"", "\"status\": \"running\""),
    )
    .unwrap();
    std::fs::remove_dir_all(run.join("similarity")).unwrap();
    BIN.ok(&["run", "-q", "--resume", spec]);
    assert!(std::fs::read(&part).unwrap() == bytes, "the stage again");
    assert_eq!(similarity(&run).len(), own.len());

    // Sharded: each shard skips the stage and says what to run once all are done.
    std::fs::remove_dir_all(&run).unwrap();
    let o = BIN.output(&["run", "--shard", "0/2", spec]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "note: analyses.similarity runs over the whole corpus: once every shard is done, run \
             `tokenlens compare {} --out DIR --pairs all --similarity residuals --metrics \
             cka-minibatch,cka,cca,svcca,pwcca --minibatch 256 --svcca-dims 20 --memory-mib \
             2048` (it writes the table into the comparison directory DIR)",
            run.display()
        )),
        "{err}"
    );
    assert!(!run.join("similarity").exists());
}
