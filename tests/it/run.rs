//! `tokenlens run` end to end on the tiny checkpoints: every table, the manifest, resume after
//! `kill -9` (identical files), sharding (the union equals the unsharded run), and the bad inputs
//! a run can meet (message and exit code, nothing left looking complete).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float16Type, Float32Type, Float64Type, Int8Type, Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use tokenlens::store::schema::{ALL_TABLES, NMF_SUMMARY, SIMILARITY, is_run_table};

use crate::common::{Tokenlens, batches, data_dir, real_fetched, scratch, tiny_spec};

const DATA: &str = "\
{\"id\": \"a\", \"text\": \"The cat sat on the mat\"}
{\"id\": \"b\", \"text\": \"Once upon a time\"}
{\"id\": \"c\", \"text\": \"1, 2, 3,\"}
{\"id\": \"d\", \"text\": \"def add(a, b):\"}
{\"id\": \"e\", \"text\": \"The capital of France is\"}
{\"id\": \"f\", \"text\": \"Roses are red and\"}
{\"id\": \"g\", \"text\": \"a b c d e f g\"}
";

/// Every analysis, small windows (3 prompts) so a run has several.
const SPEC: &str = "\
model: MODEL
dataset:
  path: data.jsonl
  id_field: id
generation:
  max_new_tokens: 3
batching:
  batch_size: 2
  bucket_window: 3
analyses:
  predictions: {top_k: 3}
  saliency: {methods: [gradient, grad_x_input, integrated_gradients], n_steps: 3}
  lens: {top_k: 2}
  watch: {tokens: [' the', ' cat']}
  activations: {layers: all, dtype: f16}
  residuals: {layers: [0, -1], positions: prompt}
  attention: {layers: all, rollout: true}
  nmf: {n_components: 3, max_iter: 20, top_contexts: 2}
  neurons: {top_k: 2, context_tokens: 2}
  similarity: {metrics: [cka_minibatch, cka]}
interventions:
  - name: inhibit
    neurons: {layer: 1, ids: [0, 5, 9], value: zero}
  - name: mean_heads
    heads: [{layer: 0, ids: [1], value: mean}, {layer: -1, ids: [0], value: 0.5}]
    positions: prompt
    mean_prompts: 4
  - name: steer
    steer: {layer: 1, alpha: 20, mean_diff: {positive: REPO/datasets/steer-positive.txt, negative: REPO/datasets/steer-negative.txt}}
    positions: generated
output:
  dir: out
";

const BIN: Tokenlens = Tokenlens::RUN;

/// A cell, floats kept apart so runs can be compared within a tolerance.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Cell {
    Null,
    Text(String),
    Num(f64),
    List(Vec<f64>),
}

fn cell(col: &ArrayRef, i: usize) -> Cell {
    if col.is_null(i) {
        return Cell::Null;
    }
    match col.data_type() {
        DataType::Utf8 => Cell::Text(col.as_string::<i32>().value(i).to_string()),
        DataType::Boolean => Cell::Text(col.as_boolean().value(i).to_string()),
        DataType::Int8 => Cell::Num(col.as_primitive::<Int8Type>().value(i) as f64),
        DataType::Int32 => Cell::Num(col.as_primitive::<Int32Type>().value(i) as f64),
        DataType::Int64 => Cell::Num(col.as_primitive::<Int64Type>().value(i) as f64),
        DataType::Float32 => Cell::Num(col.as_primitive::<Float32Type>().value(i) as f64),
        DataType::Float64 => Cell::Num(col.as_primitive::<Float64Type>().value(i)),
        DataType::List(_) => {
            let v = col.as_list::<i32>().value(i);
            Cell::List(match v.data_type() {
                DataType::Float16 => v
                    .as_primitive::<Float16Type>()
                    .values()
                    .iter()
                    .map(|x| x.to_f64())
                    .collect(),
                _ => v
                    .as_primitive::<Float32Type>()
                    .values()
                    .iter()
                    .map(|&x| x as f64)
                    .collect(),
            })
        }
        t => panic!("unexpected column type {t}"),
    }
}

/// Every row of every part of a table, sorted.
fn rows(run: &Path, table: &str) -> Vec<Vec<Cell>> {
    let mut out: Vec<Vec<Cell>> = vec![];
    for batch in batches(run, table) {
        for i in 0..batch.num_rows() {
            out.push(batch.columns().iter().map(|c| cell(c, i)).collect());
        }
    }
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

/// Every table a run of an unpaired dataset can write: all but `pairs` and `patching` (and the
/// comparison tables but `similarity`, never a run's).
fn unpaired_tables() -> impl Iterator<Item = &'static str> {
    ALL_TABLES
        .iter()
        .filter(|t| is_run_table(t))
        .map(|t| t.name)
        .filter(|t| !["pairs", "patching"].contains(t))
}

/// Every file in a table's folder (finished parts and anything left behind), by name.
fn parts(run: &Path, table: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(run.join(table))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn same_rows(a: &[Vec<Cell>], b: &[Vec<Cell>], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: row counts");
    for (ra, rb) in a.iter().zip(b) {
        for (x, y) in ra.iter().zip(rb) {
            let close = |p: f64, q: f64| (p - q).abs() <= 1e-5 * (1.0 + p.abs());
            let ok = match (x, y) {
                (Cell::Num(p), Cell::Num(q)) => close(*p, *q),
                (Cell::List(p), Cell::List(q)) => {
                    p.len() == q.len() && p.iter().zip(q).all(|(p, q)| close(*p, *q))
                }
                _ => x == y,
            };
            assert!(ok, "{what}: {ra:?}\n vs {rb:?}");
        }
    }
}

/// `spec` without its `interventions:` section (for encoders, which do not generate).
fn without_interventions(spec: &str) -> String {
    let (head, rest) = spec
        .split_once("interventions:\n")
        .expect("an interventions section");
    format!("{head}{}", &rest[rest.find("output:").unwrap()..])
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_run_writes_every_table_and_its_manifest() {
    let spec = tiny_spec("run-all", DATA, SPEC);
    let out_dir = spec.parent().unwrap().join("out");
    let stdout = BIN.ok(&["run", "-q", spec.to_str().unwrap()]);
    assert!(stdout.starts_with("done: 7 prompts, "), "{stdout}");
    let manifest = json(&out_dir.join("manifest.json"));
    assert_eq!(manifest["status"], "done");
    assert_eq!(manifest["shard_count"], 1);
    let shard = &manifest["shards"]["shard-000-of-001.json"];
    assert_eq!(shard["status"], "done");
    assert_eq!(shard["windows_done"], 3);
    // Seconds per stage: every stage this spec has, and only those, each timed.
    let stages = shard["stage_seconds"].as_object().unwrap();
    let names: Vec<&str> = stages.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "activations",
            "attention",
            "forward",
            "generate",
            "interventions",
            "lens_watch",
            "load",
            "neurons",
            "nmf",
            "predictions",
            "residuals",
            "saliency",
            "similarity",
            "tokenize",
            "write"
        ]
    );
    for (stage, s) in stages {
        let s = s.as_f64().unwrap();
        assert!(s > 0.0 && s < 60.0, "stage {stage}: {s} s");
    }
    let n_layers = 3; // tiny-llama
    let tokens = rows(&out_dir, "tokens");
    let gens = rows(&out_dir, "generations");
    assert_eq!(gens.len(), 7);
    // 3 generated tokens per prompt (EOS cannot stop the tiny model this early).
    let generated: f64 = gens
        .iter()
        .map(|r| match r[5] {
            Cell::Num(n) => n,
            _ => panic!(),
        })
        .sum();
    assert_eq!(generated, 21.0);
    for t in unpaired_tables() {
        let r = rows(&out_dir, t);
        let recorded = if t.starts_with("nmf_") {
            &manifest["nmf_rows"][t]
        } else if t.starts_with("neuron_") {
            &manifest["neurons_rows"][t]
        } else if t == SIMILARITY.name {
            &manifest["similarity_rows"][t]
        } else {
            &shard["rows"][t]
        };
        assert_eq!(
            recorded.as_u64(),
            Some(r.len() as u64),
            "table {t}: manifest rows"
        );
        assert!(!r.is_empty(), "table {t} is empty");
        // No temporary files left behind.
        assert!(
            parts(&out_dir, t)
                .iter()
                .all(|p| p.extension().unwrap() == "parquet"),
            "{t}"
        );
    }
    let n_tok = tokens.len();
    // Lens: every position but each sequence's last, at layers 0..=n_layers.
    assert_eq!(rows(&out_dir, "lens").len(), (n_layers + 1) * (n_tok - 7));
    assert_eq!(rows(&out_dir, "watch").len(), (n_layers + 1) * n_tok * 2);
    assert_eq!(rows(&out_dir, "predictions").len(), 3 * n_tok);
    assert_eq!(rows(&out_dir, "activations").len(), n_layers * n_tok);
    // Residual indices 0 and n_layers at the 21 generated tokens' complement: the prompts.
    let prompt_tokens = n_tok - 21;
    let resid = rows(&out_dir, "residuals");
    assert_eq!(resid.len(), 2 * prompt_tokens);
    let layers: std::collections::BTreeSet<String> =
        resid.iter().map(|r| format!("{:?}", r[2])).collect();
    assert_eq!(layers.len(), 2);
    assert_eq!(rows(&out_dir, "saliency_completeness").len(), 21);
    // Every prompt under each of the 3 interventions, 3 tokens each; the edits once: 3 neurons,
    // 2 heads, 1 steering vector of the model's width (64), alpha x the mean difference.
    assert_eq!(rows(&out_dir, "interventions").len(), 21);
    assert_eq!(rows(&out_dir, "intervention_tokens").len(), 63);
    let edits = rows(&out_dir, "intervention_edits");
    assert_eq!(edits.len(), 6);
    let steer = edits
        .iter()
        .find(|r| r[1] == Cell::Text("steer".into()))
        .unwrap();
    assert_eq!(steer[4], Cell::Text("mean_diff".into()));
    assert_eq!(steer[5], Cell::Num(20.0));
    match (&steer[6], &steer[7]) {
        (Cell::List(v), Cell::Num(norm)) => {
            assert_eq!(v.len(), 64);
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!(
                (n - norm).abs() < 1e-3 * norm && *norm > 0.0,
                "{n} vs {norm}"
            );
        }
        c => panic!("{c:?}"),
    }
    // A second run into the same directory is refused unless asked for.
    let err = BIN.fails(&["run", "-q", spec.to_str().unwrap()]);
    assert!(
        err.contains("already exists and is not empty; set output.overwrite: true"),
        "{err}"
    );
    BIN.ok(&["run", "-q", "--overwrite", spec.to_str().unwrap()]);
    // Resuming a finished run does nothing.
    let stderr = String::from_utf8(
        BIN.output(&["run", "--resume", spec.to_str().unwrap()])
            .stderr,
    )
    .unwrap();
    assert!(stderr.contains("is already done"), "{stderr}");
}

/// Kills the run at several points with SIGKILL, resumes it, and checks that every table's files
/// are byte for byte those of an uninterrupted run.
#[test]
fn a_killed_run_resumes_to_identical_tables() {
    let spec = tiny_spec("run-resume", DATA, SPEC);
    let dir = spec.parent().unwrap();
    let spec = spec.to_str().unwrap();
    BIN.ok(&["run", "-q", spec]);
    std::fs::rename(dir.join("out"), dir.join("reference")).unwrap();
    let status = dir.join("out/shards/shard-000-of-001.json");
    // Kill points: right after the first and second windows, and at fixed delays.
    let points: &[(Option<u64>, u64)] = &[(Some(1), 0), (Some(2), 0), (None, 30), (None, 150)];
    let mut interrupted = 0;
    for &(after_window, delay_ms) in points {
        let _ = std::fs::remove_dir_all(dir.join("out"));
        let mut child = BIN
            .cmd(&["run", "-q", spec])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        loop {
            let done = std::fs::read_to_string(&status)
                .ok()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                .and_then(|v| v["windows_done"].as_u64())
                .unwrap_or(0);
            let hit = match after_window {
                Some(w) => done >= w,
                None => start.elapsed() >= Duration::from_millis(delay_ms),
            };
            if hit
                || child.try_wait().unwrap().is_some()
                || start.elapsed() > Duration::from_secs(60)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        let finished =
            std::fs::read_to_string(&status).is_ok_and(|s| s.contains("\"status\": \"done\""));
        interrupted += usize::from(!finished);
        if dir.join("out/manifest.json").exists() {
            BIN.ok(&["run", "-q", "--resume", spec]);
        } else {
            // Killed before the run directory existed: a plain resume starts from scratch.
            BIN.ok(&["run", "-q", "--resume", "--overwrite", spec]);
        }
        for t in unpaired_tables() {
            let (a, b) = (parts(&dir.join("reference"), t), parts(&dir.join("out"), t));
            let names = |v: &[PathBuf]| {
                v.iter()
                    .map(|p| p.file_name().unwrap().to_owned())
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                names(&a),
                names(&b),
                "{t} after a kill at {after_window:?}/{delay_ms} ms"
            );
            if t == NMF_SUMMARY.name {
                // Its `seconds` column is a timing: compare every other column.
                let strip = |v: Vec<Vec<Cell>>| -> Vec<Vec<Cell>> {
                    v.into_iter().map(|r| r[..r.len() - 1].to_vec()).collect()
                };
                let (ra, rb) = (dir.join("reference"), dir.join("out"));
                assert_eq!(strip(rows(&ra, t)), strip(rows(&rb, t)), "{t}");
                continue;
            }
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    std::fs::read(x).unwrap() == std::fs::read(y).unwrap(),
                    "{} differs after a kill at {after_window:?}/{delay_ms} ms",
                    y.display()
                );
            }
        }
    }
    assert!(
        interrupted >= 3,
        "only {interrupted} of the kills interrupted the run"
    );
}

/// Two shards into one directory hold exactly the rows of the unsharded run.
#[test]
fn shards_union_to_the_whole_run() {
    let spec = tiny_spec("run-shards", DATA, SPEC);
    let dir = spec.parent().unwrap();
    let spec = spec.to_str().unwrap();
    BIN.ok(&["run", "-q", spec]);
    std::fs::rename(dir.join("out"), dir.join("whole")).unwrap();
    BIN.ok(&["run", "-q", "--shard", "0/2", spec]);
    // NMF over a run whose shards are not all done is refused.
    let out = dir.join("out");
    BIN.fails_with(
        &["nmf", "--quiet", out.to_str().unwrap()],
        &format!(
            "{}: 1 of 2 shards done; finish the others first (tokenlens run --shards 2 \
             --shard I --resume), then factorize the whole run",
            out.display()
        ),
    );
    // The second shard takes its index from a Kubernetes Indexed Job's variable.
    let o = BIN
        .cmd(&["run", "-q", "--shards", "2", spec])
        .env("JOB_COMPLETION_INDEX", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let manifest = json(&dir.join("out/manifest.json"));
    assert_eq!(manifest["status"], "done");
    assert_eq!(manifest["shard_count"], 2);
    // Corpus-level NMF runs once every shard is done.
    assert!(!dir.join("out/nmf_components").exists());
    BIN.ok(&[
        "nmf",
        "--quiet",
        "--components",
        "3",
        "--max-iter",
        "20",
        dir.join("out").to_str().unwrap(),
    ]);
    // The neuron tables too (the same activations: the same top contexts; statistics summed in
    // another order, equal within the tolerance).
    assert!(!dir.join("out/neuron_stats").exists());
    BIN.ok(&[
        "neurons",
        "--quiet",
        "--top-k",
        "2",
        "--context-tokens",
        "2",
        dir.join("out").to_str().unwrap(),
    ]);
    // The run's own layer similarity is `tokenlens compare`'s, into a comparison directory: the
    // values of the unsharded run's table.
    assert!(!dir.join("out").join(SIMILARITY.name).exists());
    BIN.ok(&[
        "compare",
        "-q",
        dir.join("out").to_str().unwrap(),
        "--out",
        dir.join("cmp").to_str().unwrap(),
        "--pairs",
        "all",
        "--metrics",
        "cka-minibatch,cka",
    ]);
    // Without the run columns (each names its directory).
    let values = |d: &Path| -> Vec<Vec<Cell>> {
        let mut v: Vec<Vec<Cell>> = rows(d, SIMILARITY.name)
            .into_iter()
            .map(|r| {
                vec![
                    r[0].clone(),
                    r[1].clone(),
                    r[3].clone(),
                    r[5].clone(),
                    r[6].clone(),
                    r[7].clone(),
                ]
            })
            .collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v
    };
    let whole = values(&dir.join("whole"));
    assert!(!whole.is_empty());
    same_rows(&whole, &values(&dir.join("cmp")), SIMILARITY.name);
    for t in unpaired_tables() {
        if t.starts_with("nmf_") {
            // Same matrix, rows read in another order: equal up to rounding (which can move the
            // iteration where the tolerance stops), not bitwise.
            assert!(!rows(&dir.join("out"), t).is_empty(), "{t}");
            continue;
        }
        if t == SIMILARITY.name {
            continue;
        }
        same_rows(&rows(&dir.join("whole"), t), &rows(&dir.join("out"), t), t);
    }
    // Part names carry the shard.
    let names: Vec<String> = parts(&dir.join("out"), "tokens")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("part-000-")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("part-001-")),
        "{names:?}"
    );
}

#[test]
fn bad_runs_fail_cleanly() {
    // A prompt longer than the context (tiny models: 128 positions).
    let long = format!("{{\"id\": \"x\", \"text\": \"{}\"}}\n", "cat ".repeat(200));
    let spec = tiny_spec("run-too-long", DATA, SPEC);
    let dir = spec.parent().unwrap().to_path_buf();
    std::fs::write(dir.join("data.jsonl"), format!("{DATA}{long}")).unwrap();
    let err = BIN.fails(&["run", "-q", spec.to_str().unwrap()]);
    assert!(
        err.contains(
            "data.jsonl:8: prompt `x` has 202 tokens; with max_new_tokens 3 the model's \
                      context of 128 leaves room for 125 (set dataset.too_long: truncate"
        ),
        "{err}"
    );
    // Nothing that looks like a finished run is left behind.
    let m = dir.join("out/manifest.json");
    assert!(!m.exists() || json(&m)["status"] != "done");
    // Truncation keeps the last tokens and says how many were dropped.
    std::fs::write(
        &spec,
        std::fs::read_to_string(&spec)
            .unwrap()
            .replace("  id_field: id\n", "  id_field: id\n  too_long: truncate\n"),
    )
    .unwrap();
    BIN.ok(&["run", "-q", "--overwrite", spec.to_str().unwrap()]);
    let gens = rows(&dir.join("out"), "generations");
    let x = gens
        .iter()
        .find(|r| r[0] == Cell::Text("x".into()))
        .unwrap();
    assert_eq!(
        (x[4].clone(), x[7].clone()),
        (Cell::Num(125.0), Cell::Num(77.0))
    );

    // A bad dataset row: nothing is written at all.
    let spec = tiny_spec("run-bad-row", DATA, SPEC);
    let dir = spec.parent().unwrap().to_path_buf();
    std::fs::write(dir.join("data.jsonl"), format!("{DATA}{{\"id\": \"z\"}}\n")).unwrap();
    let err = BIN.fails(&["run", "-q", spec.to_str().unwrap()]);
    assert!(err.contains("data.jsonl:8: "), "{err}");
    assert!(!dir.join("out").exists());

    // An output directory that cannot be created.
    let spec = tiny_spec(
        "run-unwritable",
        DATA,
        &SPEC.replace("dir: out", "dir: blocker/out"),
    );
    let dir = spec.parent().unwrap().to_path_buf();
    std::fs::write(dir.join("blocker"), "a file, not a directory").unwrap();
    let err = BIN.fails(&["run", "-q", spec.to_str().unwrap()]);
    assert!(err.contains("blocker/out"), "{err}");

    // Shard options.
    let s = spec.to_str().unwrap();
    let err = BIN.fails(&["run", "--shard", "2/2", s]);
    assert!(
        err.contains("--shard `2/2`: expected I/N with 0 <= I < N"),
        "{err}"
    );
    let err = BIN.fails(&["run", "--shards", "4", s]);
    assert!(
        err.contains("--shards 4: neither JOB_COMPLETION_INDEX nor SLURM_ARRAY_TASK_ID is set"),
        "{err}"
    );

    // Resuming with a changed spec is refused.
    let spec = tiny_spec("run-changed", DATA, SPEC);
    let s = spec.to_str().unwrap();
    BIN.ok(&["run", "-q", s]);
    std::fs::write(
        &spec,
        std::fs::read_to_string(&spec)
            .unwrap()
            .replace("max_new_tokens: 3", "max_new_tokens: 4"),
    )
    .unwrap();
    let err = BIN.fails(&["run", "--resume", s]);
    assert!(
        err.contains("cannot resume: the pipeline spec changed since this run started"),
        "{err}"
    );
}

/// Residuals beyond float16's range recorded with `dtype: f16` are an error naming the key, the
/// position, layer and value (not infinities stored quietly), and the run is not left looking
/// complete; as f32 the same run succeeds. The model: tiny-llama with its embeddings scaled by
/// 1e6 (RMSNorm makes the blocks indifferent to the scale; the residual stream carries it).
#[test]
fn f16_residuals_out_of_range_fail_cleanly() {
    let dir = scratch("run-f16-range");
    let src = data_dir().join("tiny-llama");
    let model = dir.join("huge-embeddings");
    std::fs::create_dir_all(&model).unwrap();
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(src.join(f), model.join(f)).unwrap();
    }
    let mut weights =
        candle_core::safetensors::load(src.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let key = "model.embed_tokens.weight";
    let scaled = (weights[key].clone() * 1e6).unwrap();
    weights.insert(key.to_string(), scaled);
    candle_core::safetensors::save(&weights, model.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("data.jsonl"), DATA).unwrap();
    let spec = format!(
        "model: {}\ndataset: {{path: data.jsonl, id_field: id}}\ngeneration: {{max_new_tokens: 2}}\n\
         analyses:\n  residuals: {{layers: [0, -1], dtype: f16}}\noutput: {{dir: out}}\n",
        model.display()
    );
    let path = dir.join("spec.yaml");
    std::fs::write(&path, &spec).unwrap();
    let err = BIN.fails(&["run", "-q", path.to_str().unwrap()]);
    for want in [
        "analyses.residuals.dtype: f16 cannot hold doc `",
        ", layer 0, index ",
        "float16's largest is 65504; record this model's residuals as f32 (`dtype: f32`)",
    ] {
        assert!(err.contains(want), "{err}");
    }
    let m = dir.join("out/manifest.json");
    assert!(!m.exists() || json(&m)["status"] != "done");
    std::fs::write(&path, spec.replace("dtype: f16", "dtype: f32")).unwrap();
    BIN.ok(&["run", "-q", "--overwrite", path.to_str().unwrap()]);
    let resid = rows(&dir.join("out"), "residuals");
    let largest = resid
        .iter()
        .flat_map(|r| r.iter())
        .filter_map(|c| match c {
            Cell::List(v) => v.iter().map(|x| x.abs()).reduce(f64::max),
            _ => None,
        })
        .fold(0.0, f64::max);
    assert!(largest > 65504.0, "largest |residual| {largest}");
}

/// The same pipeline twice gives identical files, sampling included (seeded per prompt).
#[test]
fn sampled_runs_are_deterministic() {
    let sampled = SPEC.replace(
        "  max_new_tokens: 3\n",
        "  max_new_tokens: 3\n  temperature: 0.9\n  top_k: 50\n  top_p: 0.95\n  seed: 7\n",
    );
    let spec = tiny_spec("run-sampled", DATA, &sampled);
    let dir = spec.parent().unwrap();
    let s = spec.to_str().unwrap();
    BIN.ok(&["run", "-q", s]);
    std::fs::rename(dir.join("out"), dir.join("first")).unwrap();
    BIN.ok(&["run", "-q", s]);
    for t in unpaired_tables().filter(|t| *t != NMF_SUMMARY.name) {
        let (a, b) = (parts(&dir.join("first"), t), parts(&dir.join("out"), t));
        assert_eq!(a.len(), b.len(), "{t}");
        for (x, y) in a.iter().zip(&b) {
            assert!(
                std::fs::read(x).unwrap() == std::fs::read(y).unwrap(),
                "{t}: {x:?}"
            );
        }
    }
    // Another seed samples other tokens.
    std::fs::write(
        &spec,
        sampled
            .replace("seed: 7", "seed: 8")
            .replace("MODEL", data_dir().join("tiny-llama").to_str().unwrap())
            .replace("REPO", env!("CARGO_MANIFEST_DIR")),
    )
    .unwrap();
    BIN.ok(&["run", "-q", "--overwrite", s]);
    assert_ne!(
        rows(&dir.join("first"), "tokens"),
        rows(&dir.join("out"), "tokens")
    );
}

/// Every analysis, integrated gradients and NMF included, on a model with scaled RoPE (Llama
/// 3.x's `llama3`, head_dim != hidden / heads): every table gets rows.
#[test]
fn every_analysis_runs_on_a_llama3_rope_model() {
    let model = data_dir().join("tiny-llama3");
    let spec = tiny_spec(
        "run-llama3",
        DATA,
        &SPEC.replace("MODEL", model.to_str().unwrap()),
    );
    let out_dir = spec.parent().unwrap().join("out");
    let stdout = BIN.ok(&["run", "-q", spec.to_str().unwrap()]);
    assert!(stdout.starts_with("done: 7 prompts, "), "{stdout}");
    let manifest = json(&out_dir.join("manifest.json"));
    assert_eq!(
        manifest["model"]["config"]["rope_scaling"]["rope_type"],
        "llama3"
    );
    for t in unpaired_tables() {
        assert!(!rows(&out_dir, t).is_empty(), "{t} has no rows");
    }
}

/// Every analysis (integrated gradients included) on every decoder family, from its tiny
/// checkpoint: each table gets rows.
#[test]
fn every_analysis_runs_on_every_decoder_family() {
    for name in [
        "tiny-qwen3",
        "tiny-olmo2",
        "tiny-gemma",
        "tiny-gemma2",
        "tiny-gemma3",
        "tiny-pythia",
        "tiny-neox-seq",
        "tiny-phi3",
        "tiny-phi3-longrope",
        "tiny-mistral-window",
        "tiny-qwen2-window",
    ] {
        let model = data_dir().join(name);
        let spec = tiny_spec(
            &format!("run-{name}"),
            DATA,
            &SPEC.replace("MODEL", model.to_str().unwrap()),
        );
        let out_dir = spec.parent().unwrap().join("out");
        let stdout = BIN.ok(&["run", "-q", spec.to_str().unwrap()]);
        assert!(stdout.starts_with("done: 7 prompts, "), "{name}: {stdout}");
        for t in unpaired_tables() {
            assert!(!rows(&out_dir, t).is_empty(), "{name}: {t} has no rows");
        }
    }
}

/// Every analysis with the weights in bf16 and in f16 (soft-capped Gemma 2, Qwen3 with q/k norms,
/// BERT): every table gets rows and the manifest records the dtype.
#[test]
fn every_analysis_runs_in_bf16_and_f16() {
    for (name, data) in [
        ("tiny-gemma2", DATA),
        ("tiny-qwen3", DATA),
        ("tiny-bert", MASKED),
    ] {
        for dtype in ["bf16", "f16"] {
            let model = data_dir().join(name);
            let mut spec_text = SPEC.replace(
                "model: MODEL",
                &format!("model: {{path: {}, dtype: {dtype}}}", model.display()),
            );
            if name == "tiny-bert" {
                spec_text = without_interventions(&spec_text)
                    .replace("max_new_tokens: 3", "max_new_tokens: 0")
                    .replace(
                        "  watch: {tokens: [' the', ' cat']}\n",
                        "  watch: {tokens: [cat]}\n",
                    );
            }
            let spec = tiny_spec(&format!("run-{name}-{dtype}"), data, &spec_text);
            let out_dir = spec.parent().unwrap().join("out");
            BIN.ok(&["run", "-q", spec.to_str().unwrap()]);
            let manifest = json(&out_dir.join("manifest.json"));
            assert_eq!(manifest["model"]["weights_dtype"], dtype, "{name}");
            for t in unpaired_tables() {
                if name == "tiny-bert" && (t == "generations" || t.starts_with("intervention")) {
                    continue;
                }
                assert!(
                    !rows(&out_dir, t).is_empty(),
                    "{name} {dtype}: {t} has no rows"
                );
            }
        }
    }
}

const MASKED: &str = "\
{\"id\": \"a\", \"text\": \"The cat sat on the [MASK].\"}
{\"id\": \"b\", \"text\": \"Once upon a [MASK] there was a [MASK] house.\"}
{\"id\": \"c\", \"text\": \"The old river bank.\"}
";

/// An encoder (tiny BERT masked LM) runs every analysis but generation: predictions and the
/// lens at every position, saliency of each [MASK] prediction over the whole document (tokens
/// after the mask included), activations, attention, NMF.
#[test]
fn an_encoder_runs_every_analysis_without_generation() {
    let model = data_dir().join("tiny-bert");
    let spec_text = without_interventions(SPEC)
        .replace("MODEL", model.to_str().unwrap())
        .replace("max_new_tokens: 3", "max_new_tokens: 0")
        .replace(
            "  watch: {tokens: [' the', ' cat']}\n",
            "  watch: {tokens: [cat]}\n",
        );
    let spec = tiny_spec("run-bert", MASKED, &spec_text);
    let out_dir = spec.parent().unwrap().join("out");
    let stdout = BIN.ok(&["run", "-q", spec.to_str().unwrap()]);
    assert!(stdout.starts_with("done: 3 prompts, "), "{stdout}");
    for t in unpaired_tables() {
        if t != "generations" && !t.starts_with("intervention") {
            assert!(!rows(&out_dir, t).is_empty(), "{t} has no rows");
        }
    }
    // Saliency: one target per [MASK] (3 in all), each over every token of its document.
    let sal = batches(&out_dir, "saliency");
    let mut targets = std::collections::BTreeSet::new();
    let mut after = 0;
    for b in &sal {
        let doc = b.column_by_name("doc_id").unwrap().as_string::<i32>();
        let tp = b
            .column_by_name("target_position")
            .unwrap()
            .as_primitive::<Int32Type>();
        let sp = b
            .column_by_name("source_position")
            .unwrap()
            .as_primitive::<Int32Type>();
        for i in 0..b.num_rows() {
            targets.insert((doc.value(i).to_string(), tp.value(i)));
            after += (sp.value(i) > tp.value(i)) as usize;
        }
    }
    assert_eq!(
        targets.into_iter().collect::<Vec<_>>(),
        [("a".to_string(), 6), ("b".into(), 7), ("b".into(), 11)]
    );
    assert!(
        after > 0,
        "an encoder's saliency covers the tokens after the mask"
    );
    assert_eq!(rows(&out_dir, "saliency_completeness").len(), 3);
}

/// What an encoder cannot do is refused before anything runs, each problem naming its key.
#[test]
fn encoder_specs_name_what_they_cannot_do() {
    let model = data_dir().join("tiny-bert");
    let spec = tiny_spec(
        "run-bert-bad",
        MASKED,
        &SPEC.replace("MODEL", model.to_str().unwrap()),
    );
    let e = BIN.fails(&["run", "-q", spec.to_str().unwrap()]);
    assert!(
        e.contains("generation.max_new_tokens: an encoder does not generate: set it to 0 (got 3"),
        "{e}"
    );
    assert!(!spec.parent().unwrap().join("out/manifest.json").exists());
}

/// pipelines/gemma3.yaml on the real Gemma 3 270M, cut to 3 prompts and 4 integrated-gradients
/// steps (the whole run takes ~15 min): every table gets rows.
#[test]
fn gemma3_pipeline_runs_every_analysis_on_the_real_model() {
    if real_fetched("gemma3").is_none() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("pipelines/gemma3.yaml")).unwrap();
    let dir = scratch("run-gemma3");
    let spec = text
        .replace(
            "../datasets/quickstart.jsonl",
            root.join("datasets/quickstart.jsonl").to_str().unwrap(),
        )
        .replace("  # limit: 10 ", "  limit: 3 ")
        .replace("n_steps: 20 ", "n_steps: 4 ")
        .replace("max_new_tokens: 12 ", "max_new_tokens: 3 ")
        .replace("../runs/gemma3", "out");
    assert!(
        spec.contains("limit: 3") && spec.contains("n_steps: 4"),
        "{spec}"
    );
    std::fs::write(dir.join("spec.yaml"), spec).unwrap();
    let stdout = BIN.ok(&["run", "-q", dir.join("spec.yaml").to_str().unwrap()]);
    assert!(stdout.starts_with("done: 3 prompts, "), "{stdout}");
    // The pipeline declares no interventions.
    for t in unpaired_tables().filter(|t| !t.starts_with("intervention")) {
        assert!(!rows(&dir.join("out"), t).is_empty(), "{t} has no rows");
    }
}

/// The real all-MiniLM-L6-v2 (an encoder without a masked-LM head): activations, attention
/// (with rollout) and NMF; what needs a head is refused by key before anything runs.
#[test]
fn minilm_pipeline_runs_what_needs_no_head() {
    let Some(model) = real_fetched("minilm") else {
        return;
    };
    let spec = format!(
        "model: {}\ndataset:\n  path: data.jsonl\n  id_field: id\ngeneration:\n  max_new_tokens: 0\n\
         analyses:\n  activations: {{layers: all}}\n  attention: {{layers: all, rollout: true}}\n\
         \x20 nmf: {{n_components: 3, max_iter: 20}}\noutput:\n  dir: out\n",
        model.display()
    );
    let path = tiny_spec("run-minilm", DATA, &spec);
    let out_dir = path.parent().unwrap().join("out");
    BIN.ok(&["run", "-q", path.to_str().unwrap()]);
    for t in [
        "tokens",
        "activations",
        "attention",
        "attention_rollout",
        "nmf_factors",
    ] {
        assert!(!rows(&out_dir, t).is_empty(), "{t} has no rows");
    }
    let bad = tiny_spec(
        "run-minilm-lens",
        DATA,
        &spec.replace("analyses:\n", "analyses:\n  lens: {}\n"),
    );
    let e = BIN.fails(&["run", "-q", bad.to_str().unwrap()]);
    assert!(
        e.contains("analyses.lens: needs a language-model head, and this checkpoint has none"),
        "{e}"
    );
}

const PAIRED_DATA: &str = "\
{\"id\": \"p0\", \"clean\": \"The cat and the dog sat, and the dog gave a fish to the\", \"bad\": \"The cat and the dog sat, and the man gave a fish to the\", \"a\": \" cat\", \"b\": \" dog\"}
{\"id\": \"p1\", \"clean\": \"The capital of France is\", \"bad\": \"The capital of Japan is\", \"a\": \" Paris\", \"b\": \" Tokyo\"}
";

const PAIRED_SPEC: &str = "\
model: MODEL
dataset:
  path: data.jsonl
  id_field: id
  text_field: clean
  corrupted_field: bad
  answer_field: a
  foil_field: b
generation:
  max_new_tokens: 2
analyses:
  saliency:
    methods: [gradient, integrated_gradients]
    targets: [generated, logit_diff]
    baseline: corrupted
    n_steps: 50
output:
  dir: out
";

/// A paired dataset: the `pairs` table, and saliency of each row's logit difference (answer vs
/// foil, after the prompt) besides the generated tokens, integrated from the corrupted prompt.
/// Its values at the input and the baseline are transformers' (the contrast golden's, same
/// texts), and the IG attributions add up to their difference.
#[test]
fn a_paired_run_explains_contrasts_from_the_corrupted_baseline() {
    let spec = tiny_spec("run-paired", PAIRED_DATA, PAIRED_SPEC);
    let out = spec.parent().unwrap().join("out");
    BIN.ok(&["run", "-q", spec.to_str().unwrap()]);
    let t = |s: &str| Cell::Text(s.into());
    let n = |v: f64| Cell::Num(v);
    assert_eq!(
        rows(&out, "pairs"),
        [
            vec![
                t("p0"),
                t("The cat and the dog sat, and the man gave a fish to the"),
                n(18.0),
                t(" cat"),
                n(366.0),
                t(" dog"),
                n(405.0)
            ],
            vec![
                t("p1"),
                t("The capital of Japan is"),
                n(8.0),
                t(" Paris"),
                n(466.0),
                t(" Tokyo"),
                n(467.0)
            ],
        ]
    );
    let golden = crate::common::Golden::load("saliency-contrast-tiny-llama");
    let scalar = |k: &str| -> f64 { golden.t(k).to_vec1::<f32>().unwrap()[0] as f64 };
    let completeness = rows(&out, "saliency_completeness");
    for (doc, len) in [("p0", 18.0), ("p1", 8.0)] {
        let i = if doc == "p0" { 0 } else { 1 };
        let c = completeness
            .iter()
            .find(|r| r[0] == t(doc) && r[2] == t("logit_diff"))
            .unwrap();
        assert_eq!((&c[1], &c[3]), (&n(len), &t("corrupted")));
        let num = |c: &Cell| match c {
            Cell::Num(v) => *v,
            _ => panic!("not a number"),
        };
        let (value, base, error) = (num(&c[4]), num(&c[5]), num(&c[7]));
        let f = scalar(&format!("pair{i}.logit_diff.f"));
        let fb = scalar(&format!("pair{i}.logit_diff.f_corrupted"));
        assert!(
            (value - f).abs() < 1e-4 && (base - fb).abs() < 1e-4,
            "{doc}: {value} {base} vs {f} {fb}"
        );
        // The corrupted baseline integrates cleanly: captum leaves ~1e-5 here.
        assert!(
            error.abs() < 1e-3 * (f - fb).abs(),
            "{doc}: completeness error {error}"
        );
        // One saliency row per method and prompt position, at the answer's position.
        let sal: Vec<_> = rows(&out, "saliency")
            .into_iter()
            .filter(|r| r[0] == t(doc) && r[2] == t("logit_diff"))
            .collect();
        assert_eq!(sal.len(), 2 * len as usize);
        assert!(sal.iter().all(|r| r[3] == n(len)));
    }
    // The generated tokens are explained too, each its probability, from the same baseline.
    let generated = completeness.iter().filter(|r| r[2] == t("prob")).count();
    assert_eq!(generated, 4);
}

/// Paired rows that cannot be compared are errors naming the row: prompts of different token
/// counts, an answer and a foil with the same first token. Nothing is left looking finished.
#[test]
fn bad_pairs_fail_naming_the_row() {
    for (name, data, expected) in [
        (
            "pair-lengths",
            PAIRED_DATA.replace("The capital of Japan is", "The capital city of Japan is"),
            "data.jsonl:2: prompt `p1`: the corrupted prompt has 11 tokens and the prompt 8; \
             paired prompts must tokenize to the same length (patching and the corrupted \
             baseline match them position by position), or set dataset.align: end",
        ),
        (
            "pair-same-token",
            PAIRED_DATA.replace("\" Tokyo\"", "\" Paris\""),
            "data.jsonl:2: prompt `p1`: the answer \" Paris\" and the foil \" Paris\" start with \
             the same token (466); a contrast between them is always 0",
        ),
        (
            "pair-missing-field",
            PAIRED_DATA.replace(", \"b\": \" Tokyo\"", ""),
            "data.jsonl:2: no field `b` (fields: a, bad, clean, id)",
        ),
    ] {
        let spec = tiny_spec(name, &data, PAIRED_SPEC);
        let err = BIN.fails(&["run", "-q", spec.to_str().unwrap()]);
        assert!(err.contains(expected), "{name}: {err}");
        let m = spec.parent().unwrap().join("out/manifest.json");
        assert!(!m.exists() || json(&m)["status"] != "done", "{name}");
    }
}

/// Activation patching in a pipeline: the `patching` table holds transformers' values (the
/// patching golden, same pairs) and, for attribution patching, the base run's value plus
/// autograd's estimate; effects are normalized by the unpatched values it records; `--limit`
/// reads fewer rows.
#[test]
fn a_paired_run_patches_activations() {
    let spec = PAIRED_SPEC.replace(
        "analyses:\n",
        "analyses:\n  patching:\n    methods: [exact, attribution]\n    components: [resid_pre, attn_head, attn_head_pos, mlp_out]\n    directions: [denoise, noise]\n    batch_rows: 16\n",
    );
    let spec = tiny_spec("run-patching", PAIRED_DATA, &spec);
    let out = spec.parent().unwrap().join("out");
    BIN.ok(&["run", "-q", spec.to_str().unwrap()]);
    let golden = crate::common::Golden::load("patching-tiny-llama");
    let patched = rows(&out, "patching");
    // 3 layers, 4 heads: per pair and direction, 2 * 3 * L + 3 * 4 + 3 * 4 * L rows.
    assert_eq!(
        patched.len(),
        2 * (2 * (2 * 3 * 18 + 12 + 12 * 18) + 2 * (2 * 3 * 8 + 12 + 12 * 8))
    );
    let num = |c: &Cell| match c {
        Cell::Num(v) => *v,
        other => panic!("not a number: {other:?}"),
    };
    let mut checked = 0;
    for r in &patched {
        let doc = match &r[0] {
            Cell::Text(t) if t == "p0" => 0,
            _ => 1,
        };
        let (Cell::Text(method), Cell::Text(component), Cell::Text(direction)) =
            (&r[1], &r[2], &r[3])
        else {
            panic!("{r:?}")
        };
        assert_eq!(r[4], Cell::Text("logit_diff".into()));
        let len = if doc == 0 { 18 } else { 8 };
        let layer = num(&r[5]) as usize;
        let (clean, corrupted) = (num(&r[10]), num(&r[11]));
        // Exact: the patched metric; attribution: the base run's + autograd's estimate.
        let (key, base, tol) = match (method.as_str(), direction.as_str()) {
            ("exact", _) => (format!("{direction}.{component}"), 0.0, 1e-4),
            (_, "denoise") => (format!("{direction}.attrib.{component}"), corrupted, 1e-3),
            _ => (format!("{direction}.attrib.{component}"), clean, 1e-3),
        };
        let want = golden
            .t(&format!("pair{doc}.{key}"))
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let i = match (&r[6], &r[7]) {
            (Cell::Null, p) => layer * len + num(p) as usize,
            (h, Cell::Null) => layer * 4 + num(h) as usize,
            (h, p) => (layer * 4 + num(h) as usize) * len + num(p) as usize,
        };
        let value = num(&r[8]);
        assert!(
            (value - base - want[i] as f64).abs() < tol,
            "{r:?} vs {}",
            want[i]
        );
        assert!((num(&r[9]) - (value - corrupted) / (clean - corrupted)).abs() < 1e-4);
        checked += 1;
    }
    assert_eq!(checked, patched.len());
    // --limit: the first row only.
    BIN.ok(&[
        "run",
        "-q",
        "--overwrite",
        "--limit",
        "1",
        spec.to_str().unwrap(),
    ]);
    assert_eq!(rows(&out, "pairs").len(), 1);
    let err = BIN.fails(&[
        "run",
        "-q",
        "--overwrite",
        "--limit",
        "0",
        spec.to_str().unwrap(),
    ]);
    assert!(err.contains("--limit must be at least 1"), "{err}");
}

/// A baseline token the model's vocabulary cannot give is an error naming the key, before
/// anything runs.
#[test]
fn a_baseline_token_of_several_tokens_is_refused() {
    let spec = PAIRED_SPEC.replace(
        "    baseline: corrupted\n",
        "    baseline: token\n    baseline_token: \"the cat sat\"\n",
    );
    let spec = tiny_spec("run-bad-baseline-token", PAIRED_DATA, &spec);
    let err = BIN.fails(&["run", "-q", spec.to_str().unwrap()]);
    assert!(
        err.contains(
            "spec.yaml: analyses.saliency.baseline_token: \"the cat sat\" is neither a \
             vocabulary entry nor one token (it is 4 tokens"
        ),
        "{err}"
    );
    let m = spec.parent().unwrap().join("out/manifest.json");
    assert!(!m.exists() || json(&m)["status"] != "done");
}

/// Interventions a run cannot carry out fail before anything is written, naming the key (and
/// the file): a vector of the wrong width, a missing or corrupt vector file, a neuron the model
/// lacks, an empty prompt set.
#[test]
fn bad_interventions_fail_naming_the_key() {
    let base = "model: MODEL\ndataset:\n  path: data.jsonl\n  id_field: id\ngeneration:\n  \
                max_new_tokens: 2\noutput:\n  dir: out\ninterventions:\n";
    /// (interventions, expected message, a file to write: name and bytes).
    type Case<'a> = (&'a str, &'a str, Option<(&'a str, &'a [u8])>);
    let cases: &[Case] = &[
        (
            "  - name: v\n    steer: {layer: 0, vector: v.json}\n",
            "interventions[0].steer[0].vector: a vector of 3 values; the model's residual stream \
             has 64",
            Some(("v.json", b"[1, 2, 3]")),
        ),
        (
            "  - name: v\n    steer: {layer: 0, vector: nope.npy}\n",
            "interventions[0].steer[0].vector: DIR/nope.npy: no such file",
            None,
        ),
        (
            "  - name: v\n    steer: {layer: 0, vector: v.npy}\n",
            "interventions[0].steer[0].vector: DIR/v.npy: not a .npy file (no NUMPY magic)",
            Some(("v.npy", b"not numpy")),
        ),
        (
            "  - name: n\n    neurons: {layer: 1, ids: [128]}\n",
            "interventions[0].neurons[0].ids: 128 is out of range: the model has 128 neurons per \
             block (0..=127)",
            None,
        ),
        (
            "  - name: s\n    steer: {layer: 0, mean_diff: {positive: p.txt, negative: data.jsonl}}\n",
            "DIR/p.txt: the dataset has no prompts",
            Some(("p.txt", b"")),
        ),
    ];
    for (k, (interventions, want, file)) in cases.iter().enumerate() {
        let spec = tiny_spec(
            &format!("run-bad-iv-{k}"),
            DATA,
            &format!("{base}{interventions}"),
        );
        let dir = spec.parent().unwrap();
        if let Some((name, bytes)) = file {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        let err = BIN.fails(&["run", "-q", spec.to_str().unwrap()]);
        let want = want.replace("DIR", dir.to_str().unwrap());
        assert!(err.contains(&want), "case {k}: {err:?} lacks {want:?}");
        assert!(!dir.join("out").exists(), "case {k}: output left behind");
    }
}

/// `value: mean` reads the run's own dataset as the run reads it (here a csv whose prompts are
/// in column `prompt`), its first `mean_prompts` prompts.
#[test]
fn mean_ablation_reads_the_dataset_as_the_run_does() {
    let spec = tiny_spec(
        "run-iv-csv",
        DATA,
        "model: MODEL\ndataset:\n  path: data.csv\n  text_field: prompt\ngeneration:\n  \
         max_new_tokens: 2\noutput:\n  dir: out\ninterventions:\n  - name: m\n    neurons: \
         {layer: 0, ids: [3], value: mean}\n    mean_prompts: 2\n",
    );
    let dir = spec.parent().unwrap();
    std::fs::write(
        dir.join("data.csv"),
        "id,prompt\n1,The cat sat\n2,on the mat\n3,and slept\n",
    )
    .unwrap();
    BIN.ok(&["run", "-q", spec.to_str().unwrap()]);
    let edits = rows(&dir.join("out"), "intervention_edits");
    assert_eq!(edits.len(), 1);
    assert_eq!(edits[0][4], Cell::Text("mean".into()));
    // The mean of neuron 3 of block 0 over the first two prompts' tokens, by the library.
    let model = tokenlens::model::Model::load(&data_dir().join("tiny-llama"), None).unwrap();
    let prompts: Vec<Vec<u32>> = ["The cat sat", "on the mat"]
        .iter()
        .map(|t| model.tokenizer.encode(t).unwrap())
        .collect();
    let sites = tokenlens::analysis::interventions::MeanSites {
        mlp_act: [0].into(),
        ..Default::default()
    };
    let m = tokenlens::analysis::interventions::site_means(&model, &prompts, 8, &sites).unwrap();
    match &edits[0][6] {
        Cell::List(v) => assert!((v[0] - m.mlp_act[&0][3] as f64).abs() < 1e-6, "{v:?}"),
        c => panic!("{c:?}"),
    }
    assert_eq!(rows(&dir.join("out"), "interventions").len(), 3);
}

/// `dataset.align: end`: prompts of different lengths are aligned at their last token; patching
/// covers the positions both have (counted in the clean prompt), and the exact values are the
/// library's (checked against transformers by `patching::unequal_pairs_are_patched_aligned_at_the_end`);
/// the `corrupted` baseline still refuses them, naming the row.
#[test]
fn unequal_pairs_align_at_the_end() {
    let data = PAIRED_DATA.replace("The capital of Japan is", "The capital city of Japan is");
    let aligned = PAIRED_SPEC.replace("  foil_field: b\n", "  foil_field: b\n  align: end\n");
    let spec = tiny_spec("run-align-ig", &data, &aligned);
    BIN.fails_mentioning(
        &["run", "-q", spec.to_str().unwrap()],
        &[
            "data.jsonl:2: prompt `p1`: the corrupted prompt has 11 tokens and the prompt 8; the \
           `corrupted` baseline interpolates between them position by position and needs as many",
        ],
    );
    let patch = aligned
        .replace("    baseline: corrupted\n", "")
        .replace(
            "analyses:\n",
            "analyses:\n  patching:\n    components: [resid_pre, attn_head]\n    directions: [denoise, noise]\n",
        );
    let spec = tiny_spec("run-align", &data, &patch);
    BIN.ok(&["run", "-q", spec.to_str().unwrap()]);
    let out = spec.parent().unwrap().join("out");
    let patched = rows(&out, "patching");
    // p0: 18 tokens each; p1: 8 clean, 11 corrupted (8 aligned). 3 layers, 4 heads.
    assert_eq!(patched.len(), 2 * (3 * 18 + 12) + 2 * (3 * 8 + 12));
    let pairs = rows(&out, "pairs");
    assert!(pairs.iter().any(|r| r[2] == Cell::Num(11.0)), "{pairs:?}");
    // The library computes the same rows for p1 (positions 0..8 of the clean prompt).
    let model = tokenlens::model::Model::load(&data_dir().join("tiny-llama"), None).unwrap();
    let enc = |t: &str| model.tokenizer.encode(t).unwrap();
    let (a, b) = (
        model.tokenizer.encode_plain(" Paris").unwrap()[0],
        model.tokenizer.encode_plain(" Tokyo").unwrap()[0],
    );
    use tokenlens::analysis::patching::*;
    let lib = activation_patching(
        &model,
        &[PairInput {
            clean: enc("The capital of France is"),
            corrupted: enc("The capital city of Japan is"),
            metric: tokenlens::model::reverse::Metric::LogitDiff(a, b),
        }],
        &PatchOptions {
            methods: vec![Method::Exact],
            components: vec![Component::ResidPre],
            directions: vec![Direction::Denoise],
            batch_rows: 64,
        },
    )
    .unwrap();
    let positions: Vec<usize> = lib.rows.iter().filter_map(|r| r.position).collect();
    assert_eq!(positions.iter().max(), Some(&7));
    for r in &lib.rows {
        let hit = patched.iter().find(|row| {
            row[0] == Cell::Text("p1".into())
                && row[2] == Cell::Text("resid_pre".into())
                && row[3] == Cell::Text("denoise".into())
                && row[5] == Cell::Num(r.layer as f64)
                && row[7] == Cell::Num(r.position.unwrap() as f64)
        });
        match hit.map(|row| &row[8]) {
            Some(Cell::Num(v)) => assert!((v - r.value as f64).abs() < 1e-4, "{v} vs {}", r.value),
            other => panic!("no row for {r:?}: {other:?}"),
        }
    }
}
