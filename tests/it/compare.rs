//! `tokenlens compare` end to end on runs of the tiny checkpoints: tiny-llama (3 layers) against
//! tiny-qwen2 (2 layers, the same tokenizer), whose predictions really differ, and tiny-llama
//! against itself with fewer generated tokens (the same model: no divergence where both ran).
//! The `diff` rows are checked against the runs' own tables, recomputed here (top-1, KL and JS
//! summed over the whole vocabulary, `common` from the tokens, the lens' last layer), and
//! `diff_docs` against the `diff` rows; then every bad input, with its message and exit code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};

use crate::common::{Tokenlens, batches, data_dir, scratch, tiny_spec};

const BIN: Tokenlens = Tokenlens::RUN;

const DATA: &str = "\
{\"id\": \"a\", \"text\": \"The cat sat on the mat\"}
{\"id\": \"b\", \"text\": \"Once upon a time\"}
{\"id\": \"c\", \"text\": \"1, 2, 3,\"}
{\"id\": \"d\", \"text\": \"def add(a, b):\"}
{\"id\": \"e\", \"text\": \"The capital of France is\"}
";

/// Predictions, the lens and gradient saliency; MAX_NEW generated tokens, never stopped early.
const SPEC: &str = "\
model: MODEL
dataset:
  path: data.jsonl
  id_field: id
generation:
  max_new_tokens: MAX_NEW
  stop_at_eos: false
batching:
  batch_size: BATCH
analyses:
  predictions: {top_k: 8}
  lens: {top_k: 1}
  saliency: {methods: [gradient, grad_x_input], n_steps: 2}
output:
  dir: out
";

/// Runs `SPEC` on `model` (a folder of tests/data) over `data`; returns the run directory.
fn run(name: &str, model: &str, data: &str, max_new: usize, batch: usize) -> PathBuf {
    let spec = SPEC
        .replace("MODEL", data_dir().join(model).to_str().unwrap())
        .replace("MAX_NEW", &max_new.to_string())
        .replace("BATCH", &batch.to_string());
    let spec = tiny_spec(name, data, &spec);
    BIN.ok(&["run", "-q", spec.to_str().unwrap()]);
    spec.parent().unwrap().join("out")
}

/// The three runs the tests share: tiny-llama (4 new tokens), tiny-qwen2 (4), tiny-llama (2
/// new tokens, other batches).
fn runs() -> &'static [PathBuf; 3] {
    static RUNS: OnceLock<[PathBuf; 3]> = OnceLock::new();
    RUNS.get_or_init(|| {
        [
            run("compare-llama", "tiny-llama", DATA, 4, 2),
            run("compare-qwen2", "tiny-qwen2", DATA, 4, 2),
            run("compare-llama-short", "tiny-llama", DATA, 2, 3),
        ]
    })
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every row of a table as column name -> cell (None for null), numbers as f64.
fn rows(dir: &Path, table: &str) -> Vec<HashMap<String, Cell>> {
    let mut out = Vec::new();
    for b in batches(dir, table) {
        for i in 0..b.num_rows() {
            out.push(row(&b, i));
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Num(f64),
    Text(String),
    Bool(bool),
}

impl Cell {
    fn num(&self) -> Option<f64> {
        match self {
            Cell::Num(x) => Some(*x),
            Cell::Null => None,
            c => panic!("not a number: {c:?}"),
        }
    }
    fn text(&self) -> &str {
        match self {
            Cell::Text(t) => t,
            c => panic!("not a text: {c:?}"),
        }
    }
}

fn cell(c: &ArrayRef, i: usize) -> Cell {
    if c.is_null(i) {
        return Cell::Null;
    }
    match c.data_type() {
        arrow_schema::DataType::Utf8 => Cell::Text(c.as_string::<i32>().value(i).into()),
        arrow_schema::DataType::Boolean => Cell::Bool(c.as_boolean().value(i)),
        arrow_schema::DataType::Int32 => Cell::Num(c.as_primitive::<Int32Type>().value(i).into()),
        arrow_schema::DataType::Int64 => Cell::Num(c.as_primitive::<Int64Type>().value(i) as f64),
        arrow_schema::DataType::Float32 => {
            Cell::Num(c.as_primitive::<Float32Type>().value(i).into())
        }
        t => panic!("unexpected type {t}"),
    }
}

fn row(b: &RecordBatch, i: usize) -> HashMap<String, Cell> {
    b.schema()
        .fields()
        .iter()
        .zip(b.columns())
        .map(|(f, c)| (f.name().clone(), cell(c, i)))
        .collect()
}

/// A run's tokens by document.
fn tokens(run: &Path) -> HashMap<String, Vec<u32>> {
    let mut t: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
    for r in rows(run, "tokens") {
        let pos = r["position"].num().unwrap() as u32;
        let id = r["token_id"].num().unwrap() as u32;
        t.entry(r["doc_id"].text().to_string())
            .or_default()
            .push((pos, id));
    }
    t.into_iter()
        .map(|(d, mut v)| {
            v.sort();
            (d, v.into_iter().map(|x| x.1).collect())
        })
        .collect()
}

/// A candidate: (rank, token, prob).
type Ranked = (u32, u32, f64);

/// Top-k `(token, prob)` lists by (document, position).
type TopK = HashMap<(String, u32), Vec<(u32, f64)>>;

/// A run's predictions by (document, position): `(token, prob)` by rank.
fn predictions(run: &Path) -> TopK {
    let mut p: HashMap<(String, u32), Vec<Ranked>> = HashMap::new();
    for r in rows(run, "predictions") {
        let key = (
            r["doc_id"].text().to_string(),
            r["position"].num().unwrap() as u32,
        );
        let v = (
            r["rank"].num().unwrap() as u32,
            r["token_id"].num().unwrap() as u32,
            r["prob"].num().unwrap(),
        );
        p.entry(key).or_default().push(v);
    }
    p.into_iter()
        .map(|(k, mut v)| {
            v.sort_by_key(|x| x.0);
            (k, v.into_iter().map(|x| (x.1, x.2)).collect())
        })
        .collect()
}

/// The distribution docs/compare.md defines, written out over the vocabulary.
fn full(top: &[(u32, f64)], vocab: usize) -> Vec<f64> {
    let sum: f64 = top.iter().map(|t| t.1).sum();
    let tail = (1.0 - sum).max(0.0) / (vocab - top.len()) as f64;
    let mut d = vec![tail; vocab];
    for &(id, p) in top {
        d[id as usize] = p;
    }
    d
}

fn kl(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .map(|(&x, &y)| if x > 0.0 { x * (x / y).ln() } else { 0.0 })
        .sum()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

#[test]
fn two_models_diff_position_by_position() {
    let [llama, qwen, _] = runs();
    let out = scratch("compare-llama-qwen").join("cmp");
    let stdout = BIN.ok(&["compare", "-q", s(llama), s(qwen), "--out", s(&out)]);
    assert!(
        stdout.starts_with("compare: 5 documents matched (0 only in A, 0 only in B), "),
        "{stdout}"
    );
    let j = json(&out.join("comparison.json"));
    assert_eq!(j["kind"], "comparison");
    assert_eq!(j["level"], "position");
    assert_eq!(j["run_a"]["given"], s(llama));
    assert_eq!(j["run_a"]["model"]["n_layers"], 3);
    assert_eq!(j["run_b"]["model"]["n_layers"], 2);
    // Nothing of the diff is skipped (the similarity is: these runs record no representations).
    let skipped = j["skipped"].as_array().unwrap();
    assert!(
        skipped
            .iter()
            .all(|s| s["what"].as_str().unwrap().starts_with("similarity of")),
        "{j}"
    );
    assert_eq!(j["compared"].as_array().unwrap().len(), 3, "{j}");
    assert!(Path::new(j["run_b"]["path"].as_str().unwrap()).is_absolute());
    for step in ["match", "diff", "total"] {
        assert!(j["seconds"][step].as_f64().unwrap() >= 0.0);
    }

    let (ta, tb) = (tokens(llama), tokens(qwen));
    let (pa, pb) = (predictions(llama), predictions(qwen));
    let vocab = 512;
    let diff = rows(&out, "diff");
    let docs = rows(&out, "diff_docs");
    assert_eq!(j["tables"]["diff"]["rows"], diff.len());
    assert_eq!(j["tables"]["diff_docs"]["rows"], 5);
    assert_eq!(j["positions_compared"], diff.len());
    let mut per_doc: HashMap<&str, Vec<&HashMap<String, Cell>>> = HashMap::new();
    for r in &diff {
        per_doc.entry(r["doc_id"].text()).or_default().push(r);
    }
    let (mut disagree, mut checked) = (0, 0);
    for d in &docs {
        let id = d["doc_id"].text();
        let (a, b) = (&ta[id], &tb[id]);
        let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
        assert_eq!(d["common"].num(), Some(common as f64), "{id}");
        let mut rows_d = per_doc.remove(id).unwrap();
        rows_d.sort_by_key(|r| r["position"].num().unwrap() as u32);
        assert_eq!(rows_d.len(), common, "{id}: one row per position < common");
        assert_eq!(d["diverges_at"].num(), (a != b).then_some(common as f64));
        // Every row against the two runs' predictions, KL and JS over the whole vocabulary.
        let (mut kls, mut jss, mut agree) = (Vec::new(), Vec::new(), 0);
        for (p, r) in rows_d.iter().enumerate() {
            assert_eq!(r["position"].num(), Some(p as f64));
            let key = (id.to_string(), p as u32);
            let (xa, xb) = (&pa[&key], &pb[&key]);
            assert_eq!(r["top1_a"].num(), Some(xa[0].0 as f64));
            assert_eq!(r["top1_b"].num(), Some(xb[0].0 as f64));
            assert_eq!(r["agree"], Cell::Bool(xa[0].0 == xb[0].0));
            agree += usize::from(xa[0].0 == xb[0].0);
            let (fa, fb) = (full(xa, vocab), full(xb, vocab));
            let m: Vec<f64> = fa.iter().zip(&fb).map(|(x, y)| 0.5 * (x + y)).collect();
            let js = 0.5 * (kl(&fa, &m) + kl(&fb, &m)) / std::f64::consts::LN_2;
            let k = kl(&fa, &fb);
            assert!(
                close(r["kl_ab"].num().unwrap(), k, 1e-5),
                "{id}@{p}: {r:?} vs {k}"
            );
            assert!(close(r["kl_ba"].num().unwrap(), kl(&fb, &fa), 1e-5));
            assert!(close(r["js"].num().unwrap(), js, 1e-5));
            kls.push(k);
            jss.push(js);
            disagree += usize::from(js > 1e-3);
            checked += 1;
            // The next token, and the lens' last layer is the model's own output.
            let next = (p + 1 < common).then(|| a[p + 1] as f64);
            assert_eq!(r["next_token_id"].num(), next);
            assert_eq!(r["rank_a"].num().is_some(), next.is_some());
            if let Some(n) = next {
                if let Some(i) = xa.iter().position(|t| t.0 as f64 == n) {
                    assert!(close(r["prob_a"].num().unwrap(), xa[i].1, 1e-5));
                    assert_eq!(r["rank_a"].num(), Some(i as f64 + 1.0));
                }
                let depth = r["top1_depth_b"].num();
                assert_eq!(depth.is_some(), r["rank_b"].num() == Some(1.0));
                assert!(
                    depth.is_none_or(|x| [0.0, 0.5, 1.0].contains(&x)),
                    "2 layers"
                );
            }
        }
        let n = kls.len() as f64;
        assert_eq!(d["n_positions"].num(), Some(n));
        assert!(close(
            d["mean_kl"].num().unwrap(),
            kls.iter().sum::<f64>() / n,
            1e-5
        ));
        assert!(close(
            d["mean_js"].num().unwrap(),
            jss.iter().sum::<f64>() / n,
            1e-5
        ));
        assert!(close(
            d["top1_agreement"].num().unwrap(),
            agree as f64 / n,
            1e-6
        ));
        let argmax = (0..kls.len()).fold(0, |m, i| if kls[i] > kls[m] { i } else { m });
        assert_eq!(d["max_kl_position"].num(), Some(argmax as f64));
        assert_eq!(d["same_output"], Cell::Bool(a == b));
        assert_eq!(d["same_prompt"], Cell::Bool(true));
    }
    assert!(per_doc.is_empty());
    assert!(
        checked >= 25 && disagree > checked / 2,
        "{disagree} of {checked}: two models"
    );
}

#[test]
fn a_model_against_itself_agrees_where_both_ran() {
    let [llama, _, short] = runs();
    let out = scratch("compare-llama-self").join("cmp");
    BIN.ok(&["compare", "-q", s(llama), s(short), "--out", s(&out)]);
    let diff = rows(&out, "diff");
    let mut saliency = 0;
    for r in &diff {
        assert_eq!(r["agree"], Cell::Bool(true), "{r:?}");
        assert!(r["js"].num().unwrap() < 1e-4, "{r:?}");
        assert!(r["kl_ab"].num().unwrap() < 1e-4, "{r:?}");
        assert_eq!(r["prob_a"].num().is_some(), r["prob_b"].num().is_some());
        if let (Some(x), Some(y)) = (r["prob_a"].num(), r["prob_b"].num()) {
            assert!(close(x, y, 1e-4));
            assert_eq!(r["rank_a"], r["rank_b"]);
            assert_eq!(r["log_rank_a"], r["log_rank_b"]);
        }
        if let Some(d) = r["saliency_distance"].num() {
            assert!(d < 1e-3, "{r:?}");
            saliency += 1;
        }
    }
    // The two tokens both runs generated, per document (positions P and P + 1 of a prompt of P
    // tokens, compared at rows P - 1 and P).
    assert_eq!(
        saliency, 10,
        "two generated tokens both explain, per document"
    );
    let j = json(&out.join("comparison.json"));
    assert!(
        j["compared"][2]
            .as_str()
            .unwrap()
            .contains("`grad_x_input` scores"),
        "{j}"
    );
    for d in rows(&out, "diff_docs") {
        // The short run generated 2 tokens and the long one 4: they part where the short ends.
        let p = d["prompt_tokens_a"].num().unwrap();
        assert_eq!(d["common"].num(), Some(p + 2.0));
        assert_eq!(d["diverges_at"].num(), Some(p + 2.0));
        assert_eq!(d["top1_agreement"].num(), Some(1.0));
        assert_eq!(d["same_output"], Cell::Bool(false));
        let (a, b) = (d["output_text_a"].text(), d["output_text_b"].text());
        assert!(a.starts_with(b), "{a:?} {b:?}");
        assert_eq!(d["first_diff_char"].num(), Some(b.chars().count() as f64));
    }
}

#[test]
fn document_level_and_one_run() {
    let [llama, qwen, _] = runs();
    let dir = scratch("compare-levels");
    let out = dir.join("doc");
    BIN.ok(&[
        "compare",
        "-q",
        s(llama),
        s(qwen),
        "--out",
        s(&out),
        "--level",
        "document",
    ]);
    let j = json(&out.join("comparison.json"));
    assert_eq!(j["level"], "document");
    assert_eq!(j["positions_compared"], 0);
    assert!(!out.join("diff").exists());
    for d in rows(&out, "diff_docs") {
        assert_eq!(d["common"], Cell::Null);
        assert_eq!(d["mean_kl"], Cell::Null);
        assert_eq!(d["same_prompt"], Cell::Bool(true));
        let (a, b) = (d["output_text_a"].text(), d["output_text_b"].text());
        let same = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
        assert_eq!(d["first_diff_char"].num(), (a != b).then_some(same as f64));
    }
    // One run: nothing to diff, said so.
    let one = dir.join("one");
    let stdout = BIN.ok(&["compare", "-q", s(llama), "--out", s(&one)]);
    assert!(
        stdout.contains("skipped diff, diff_docs: one run: a diff needs two"),
        "{stdout}"
    );
    let j = json(&one.join("comparison.json"));
    assert_eq!(j["run_b"], serde_json::Value::Null);
    assert_eq!(j["tables"], serde_json::json!({}));
}

#[test]
fn bad_inputs_name_the_run_the_document_and_the_way_out() {
    let [llama, qwen, _] = runs();
    let dir = scratch("compare-bad");
    let out = dir.join("cmp");
    let out_s = s(&out);
    let missing = dir.join("missing");
    BIN.fails_with(
        &["compare", s(&missing), s(qwen), "--out", out_s],
        &format!("{}: no such run directory", missing.display()),
    );
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    BIN.fails_with(
        &["compare", s(llama), s(&empty), "--out", out_s],
        &format!(
            "{}: not a tokenlens run (no manifest.json)",
            empty.display()
        ),
    );
    // A run without its tokens table.
    let broken = dir.join("broken");
    copy_dir(llama, &broken);
    std::fs::remove_dir_all(broken.join("tokens")).unwrap();
    BIN.fails_mentioning(
        &["compare", s(llama), s(&broken), "--out", out_s],
        &[&format!("{}: no `tokens` table", broken.display())],
    );
    // No document in common.
    let other = run(
        "compare-other-ids",
        "tiny-llama",
        "{\"id\": \"z\", \"text\": \"Once upon a time\"}\n",
        1,
        1,
    );
    BIN.fails_mentioning(
        &["compare", s(llama), s(&other), "--out", out_s],
        &[
            "no document of run A (",
            "5 documents) is in run B (",
            "matched by doc_id",
        ],
    );
    // Document `b`'s prompt changed: its tokens differ at position 3 (" u" of " upon" vs " in").
    let changed = run(
        "compare-changed-prompt",
        "tiny-llama",
        &DATA.replace("Once upon a time", "Once in a time"),
        1,
        2,
    );
    let err = BIN.fails_mentioning(
        &["compare", s(llama), s(&changed), "--out", out_s],
        &[
            "doc `b`: the prompt's tokens differ at position 3: run A (",
            ") has 393 \" u\", run B (",
            ") has 303 \" in\"; ",
            "--level document",
        ],
    );
    assert!(!out.exists(), "nothing written: {err}");
    // --level document accepts it.
    BIN.ok(&[
        "compare",
        "-q",
        s(llama),
        s(&changed),
        "--out",
        out_s,
        "--level",
        "document",
    ]);
    // The directory now exists: refused without --overwrite, replaced with it.
    BIN.fails_with(
        &["compare", s(llama), s(qwen), "--out", out_s],
        &format!(
            "{}: already exists; --overwrite replaces it, or choose another --out",
            out.display()
        ),
    );
    BIN.ok(&[
        "compare",
        "-q",
        "--overwrite",
        s(llama),
        s(qwen),
        "--out",
        out_s,
    ]);
    assert_eq!(json(&out.join("comparison.json"))["level"], "position");
    // A run is never replaced.
    BIN.fails_mentioning(
        &[
            "compare",
            "--overwrite",
            s(llama),
            s(qwen),
            "--out",
            s(llama),
        ],
        &["is not a comparison directory"],
    );
    assert!(llama.join("manifest.json").is_file());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}
