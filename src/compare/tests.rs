//! The comparison on small runs written by hand (tables through the store's writers, a minimal
//! manifest): matching (documents, `common`, order, the errors), the diff's values against
//! numbers worked out here, and the comparison directory's write-then-rename rules.

use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int32Type};
use arrow_array::{Array, RecordBatch};

use super::*;
use crate::store::reader::read_table;
use crate::store::schema::*;
use crate::store::writer::{TableWriter, WriterOptions};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir()
        .join(format!("tokenlens-compare-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// One document of a hand-written run: id, prompt length, tokens, and per position its top-k
/// `(token, prob)` by rank.
struct Doc {
    id: &'static str,
    prompt: usize,
    tokens: Vec<u32>,
    top: Vec<Vec<(u32, f32)>>,
}

/// A run of a 2-layer model with vocabulary 10: tokens, generations, predictions, lens (the
/// next token's rank at layer l is `ranks[l]`, the same at every position) and gradient
/// saliency (`score(target, source)`).
fn write_run(dir: &Path, docs: &[Doc], ranks: [u32; 3], score: impl Fn(u32, u32) -> f32) {
    let run = RunDir::create(dir, false).unwrap();
    let (to, wo) = (TableOptions::default(), WriterOptions::default());
    let mut tokens = TableWriter::<Tokens>::create(&run, &to, &wo).unwrap();
    let mut gens = TableWriter::<Generations>::create(&run, &to, &wo).unwrap();
    let mut preds = TableWriter::<Predictions>::create(&run, &to, &wo).unwrap();
    let mut lens = TableWriter::<Lens>::create(&run, &to, &wo).unwrap();
    let mut sal = TableWriter::<Saliency>::create(&run, &to, &wo).unwrap();
    // Written in reverse dataset order: the matching must follow generations.index.
    for (i, d) in docs.iter().enumerate().rev() {
        let text = |t: &[u32]| t.iter().map(|x| format!("<{x}>")).collect::<String>();
        for (p, &t) in d.tokens.iter().enumerate() {
            tokens
                .append(TokensRow {
                    doc_id: d.id,
                    position: p as i32,
                    token_id: t as i32,
                    token: &format!("<{t}>"),
                    is_generated: p >= d.prompt,
                })
                .unwrap();
        }
        gens.append(GenerationsRow {
            doc_id: d.id,
            index: i as i64,
            prompt: &text(&d.tokens[..d.prompt]),
            output_text: &text(&d.tokens[d.prompt..]),
            prompt_tokens: d.prompt as i32,
            generated_tokens: (d.tokens.len() - d.prompt) as i32,
            stopped_at_eos: false,
            truncated_tokens: 0,
        })
        .unwrap();
        for (p, top) in d.top.iter().enumerate() {
            for (r, &(t, prob)) in top.iter().enumerate() {
                preds
                    .append(PredictionsRow {
                        doc_id: d.id,
                        position: p as i32,
                        rank: r as i32 + 1,
                        token_id: t as i32,
                        token: &format!("<{t}>"),
                        prob,
                    })
                    .unwrap();
            }
        }
        for p in 0..d.tokens.len() - 1 {
            for (layer, &rank) in ranks.iter().enumerate() {
                lens.append(LensRow {
                    doc_id: d.id,
                    position: p as i32,
                    layer: layer as i32,
                    token_id: d.tokens[p + 1] as i32,
                    rank: rank as i32,
                    prob: 1.0 / rank as f32,
                })
                .unwrap();
            }
        }
        for t in d.prompt..d.tokens.len() {
            for s in 0..t {
                sal.append(SaliencyRow {
                    doc_id: d.id,
                    method: "gradient",
                    metric: "prob",
                    target_position: t as i32,
                    source_position: s as i32,
                    score: score(t as u32, s as u32),
                    raw: 1.0,
                    signed: None,
                })
                .unwrap();
            }
        }
    }
    for w in [
        tokens.finish(),
        gens.finish(),
        preds.finish(),
        lens.finish(),
        sal.finish(),
    ] {
        w.unwrap();
    }
    let manifest = serde_json::json!({
        "tokenlens_version": "0", "spec_path": "spec.yaml", "spec_yaml": "",
        "spec": {"analyses": {"predictions": {"top_k": 2}, "lens": {"final_norm": true},
                 "saliency": {"methods": ["gradient"], "targets": ["generated"]}}},
        "model": {"path": "m", "config": {"model_type": "llama", "arch": "llama",
                  "n_layers": 2, "vocab_size": 10}},
        "shard_count": 1,
        "tables": ["tokens", "generations", "predictions", "lens", "saliency"],
        "shards": {}, "status": "done",
    });
    crate::store::manifest::write_json_atomic(&dir.join("manifest.json"), &manifest).unwrap();
}

fn doc(id: &'static str, prompt: usize, tokens: &[u32], top: &[(u32, f32)]) -> Doc {
    Doc {
        id,
        prompt,
        tokens: tokens.to_vec(),
        top: vec![top.to_vec(); tokens.len()],
    }
}

fn opts(a: &Path, b: Option<&Path>, out: &Path) -> CompareOptions {
    CompareOptions {
        run_a: a.to_path_buf(),
        run_b: b.map(Path::to_path_buf),
        out: out.to_path_buf(),
        level: Level::Position,
        overwrite: false,
        quiet: true,
    }
}

fn i32s(b: &RecordBatch, c: &str) -> Vec<Option<i32>> {
    b.column_by_name(c)
        .unwrap()
        .as_primitive::<Int32Type>()
        .iter()
        .collect()
}

fn f32s(b: &RecordBatch, c: &str) -> Vec<Option<f32>> {
    b.column_by_name(c)
        .unwrap()
        .as_primitive::<Float32Type>()
        .iter()
        .collect()
}

#[test]
fn documents_and_positions_are_matched() {
    let root = scratch("match");
    let (a, b) = (root.join("a"), root.join("b"));
    let t = [(1, 0.5f32), (2, 0.25)];
    write_run(
        &a,
        &[
            doc("x", 2, &[5, 6, 7, 8], &t),
            doc("only-a", 1, &[5, 6], &t),
            doc("y", 3, &[1, 2, 3, 4, 5], &t),
        ],
        [3, 2, 1],
        |_, _| 0.0,
    );
    write_run(
        &b,
        &[
            doc("y", 3, &[1, 2, 3, 9], &t),
            doc("x", 2, &[5, 6, 7, 8], &t),
            doc("only-b", 1, &[5], &t),
        ],
        [3, 2, 1],
        |_, _| 0.0,
    );
    let (ra, rb) = (Run::open("A", &a).unwrap(), Run::open("B", &b).unwrap());
    let m = Matching::new(&ra, &rb, Level::Position).unwrap();
    let ids: Vec<(&str, u32)> = m.docs.iter().map(|d| (&*d.doc_id, d.common)).collect();
    assert_eq!(ids, [("x", 4), ("y", 3)], "run A's dataset order");
    assert_eq!(
        (&m.only_a, &m.only_b),
        (&vec!["only-a".to_string()], &vec!["only-b".to_string()])
    );
    assert_eq!(m.positions(), 7);
    assert_eq!(m.docs[1].b.as_ref().unwrap().index, 0);
    assert_eq!(Matching::single(&ra).unwrap().positions(), 11);

    // A prompt tokenized otherwise: an error naming the document, position and both tokens.
    let c = root.join("c");
    write_run(&c, &[doc("x", 2, &[5, 4, 7, 8], &t)], [3, 2, 1], |_, _| 0.0);
    let rc = Run::open("B", &c).unwrap();
    let e = Matching::new(&ra, &rc, Level::Position)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("doc `x`: the prompt's tokens differ at position 1: run A (")
            && e.contains(") has 6 \"<6>\", run B (")
            && e.contains(") has 4 \"<4>\";")
            && e.ends_with("(--level document)"),
        "{e}"
    );
    // At document level tokens are not compared.
    let m = Matching::new(&ra, &rc, Level::Document).unwrap();
    assert_eq!((m.docs.len(), m.docs[0].common), (1, 0));

    // A longer prompt: "no token" on the side that ended.
    let d = root.join("d");
    write_run(&d, &[doc("x", 3, &[5, 6, 7, 8], &t)], [3, 2, 1], |_, _| 0.0);
    let e = Matching::new(&ra, &Run::open("B", &d).unwrap(), Level::Position)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("position 2: run A (")
            && e.contains("has no token (its prompt has 2 tokens), run B ("),
        "{e}"
    );

    // No common document.
    let n = root.join("n");
    write_run(&n, &[doc("z", 1, &[1], &t)], [3, 2, 1], |_, _| 0.0);
    let e = Matching::new(&ra, &Run::open("B", &n).unwrap(), Level::Position).unwrap_err();
    assert!(e.to_string().starts_with("no document of run A ("), "{e}");
    assert!(e.to_string().contains("3 documents) is in run B ("), "{e}");
}

#[test]
fn the_diff_has_the_values_worked_out_by_hand() {
    let root = scratch("diff");
    let (a, b, out) = (root.join("a"), root.join("b"), root.join("cmp"));
    // Same prompt [1, 2]; A generates 3, 4 and B 3, 5: common = 3 (positions 0, 1, 2).
    let ta = [(3, 0.5f32), (4, 0.25)];
    let tb = [(4, 0.5f32), (3, 0.25)];
    write_run(&a, &[doc("d", 2, &[1, 2, 3, 4], &ta)], [4, 1, 1], |t, _| {
        1.0 / t as f32
    });
    // A's saliency is even over the sources; B's of the token at 2 all on source 0.
    let b_score = |t: u32, s: u32| match (t, s) {
        (2, 0) => 1.0,
        (2, _) => 0.0,
        _ => 1.0 / t as f32,
    };
    write_run(&b, &[doc("d", 2, &[1, 2, 3, 5], &tb)], [2, 2, 1], b_score);
    let f = compare(&opts(&a, Some(&b), &out), &default_steps()).unwrap();
    assert_eq!(f.docs.matched, 1);
    assert_eq!(f.positions_compared, 3);
    // Nothing of the diff is skipped (the similarity is: these runs have no representations).
    assert!(
        f.skipped
            .iter()
            .all(|s| s.what.starts_with("similarity of")),
        "{:?}",
        f.skipped
    );
    assert_eq!(f.tables["diff"].rows, 3);
    let diff = read_table(&out, &DIFF).unwrap().remove(0);
    assert_eq!(i32s(&diff, "position"), [Some(0), Some(1), Some(2)]);
    assert_eq!(i32s(&diff, "top1_a"), [Some(3); 3]);
    assert_eq!(i32s(&diff, "top1_b"), [Some(4); 3]);
    let agree = diff.column_by_name("agree").unwrap().as_boolean();
    assert!((0..3).all(|i| !agree.value(i)));
    // KL with the tail: each side's 0.25 left spread over the 8 other tokens of 10.
    // The tails are equal and add nothing: KL = 0.5 ln(0.5 / 0.25) + 0.25 ln(0.25 / 0.5), both
    // ways.
    let kl = 0.25 * std::f64::consts::LN_2;
    for v in f32s(&diff, "kl_ab").into_iter().chain(f32s(&diff, "kl_ba")) {
        assert!((v.unwrap() as f64 - kl).abs() < 1e-6, "{v:?} vs {kl}");
    }
    // The next token: 2, 3, then none (position 2 + 1 = common).
    assert_eq!(i32s(&diff, "next_token_id"), [Some(2), Some(3), None]);
    assert_eq!(i32s(&diff, "rank_a"), [Some(1), Some(1), None]);
    assert_eq!(f32s(&diff, "top1_depth_a"), [Some(0.5), Some(0.5), None]);
    assert_eq!(f32s(&diff, "top1_depth_b"), [Some(1.0), Some(1.0), None]);
    // A: log2 ranks 2, 0, 0 -> (1 + 0) / 2; B: 1, 1, 0 -> (1 + 0.5) / 2.
    assert_eq!(f32s(&diff, "log_rank_a")[0], Some(0.5));
    assert_eq!(f32s(&diff, "log_rank_b")[0], Some(0.75));
    // Saliency of the token at 2 (generated in both): A spreads 1/2, 1/2; B puts all on 0.
    assert_eq!(f32s(&diff, "saliency_distance"), [None, Some(0.5), None]);

    let docs = read_table(&out, &DIFF_DOCS).unwrap().remove(0);
    assert_eq!(i32s(&docs, "common"), [Some(3)]);
    assert_eq!(i32s(&docs, "diverges_at"), [Some(3)]);
    assert_eq!(i32s(&docs, "n_positions"), [Some(3)]);
    assert_eq!(f32s(&docs, "top1_agreement"), [Some(0.0)]);
    assert!((f32s(&docs, "mean_kl")[0].unwrap() as f64 - kl).abs() < 1e-6);
    assert_eq!(
        i32s(&docs, "max_kl_position"),
        [Some(0)],
        "the first on ties"
    );
    assert_eq!(f32s(&docs, "mean_saliency_distance"), [Some(0.5)]);
    assert_eq!(
        i32s(&docs, "first_diff_char"),
        [Some(4)],
        "<3><4> vs <3><5>"
    );
    assert!(
        !docs
            .column_by_name("same_output")
            .unwrap()
            .as_boolean()
            .value(0)
    );
    assert!(
        docs.column_by_name("same_prompt")
            .unwrap()
            .as_boolean()
            .value(0)
    );

    // comparison.json; no temporary directory is left beside it.
    let j: serde_json::Value =
        crate::store::manifest::read_json(&out.join(COMPARISON_JSON)).unwrap();
    assert_eq!(j["kind"], "comparison");
    assert_eq!(j["level"], "position");
    assert_eq!(
        j["tables"]["diff_docs"]["parts"][0],
        "diff_docs/part-000-00000.parquet"
    );
    let names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");

    // Document level: diff_docs only, its position columns null.
    let doc_out = root.join("doc-level");
    let o = CompareOptions {
        level: Level::Document,
        ..opts(&a, Some(&b), &doc_out)
    };
    let f = compare(&o, &default_steps()).unwrap();
    assert_eq!(f.tables.keys().collect::<Vec<_>>(), ["diff_docs"]);
    let docs = read_table(&doc_out, &DIFF_DOCS).unwrap().remove(0);
    assert_eq!(i32s(&docs, "common"), [None]);
    assert!(docs.column_by_name("mean_kl").unwrap().is_null(0));
    assert_eq!(i32s(&docs, "first_diff_char"), [Some(4)]);
}

#[test]
fn the_comparison_directory_is_refused_replaced_or_left_alone() {
    let root = scratch("out");
    let a = root.join("a");
    write_run(
        &a,
        &[doc("d", 1, &[1, 2], &[(1, 0.5)])],
        [2, 1, 1],
        |_, _| 1.0,
    );
    let out = root.join("cmp");
    let f = compare(&opts(&a, None, &out), &default_steps()).unwrap();
    assert_eq!(f.skipped[0].why, "one run: a diff needs two");
    assert!(f.tables.is_empty() && out.join(COMPARISON_JSON).is_file());
    let e = compare(&opts(&a, None, &out), &default_steps()).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("cmp: already exists; --overwrite replaces it, or choose another --out"),
        "{e}"
    );
    let again = CompareOptions {
        overwrite: true,
        ..opts(&a, Some(&a), &out)
    };
    compare(&again, &default_steps()).unwrap();
    assert!(out.join("diff").is_dir(), "replaced by the new comparison");
    // A run is never replaced, even with --overwrite.
    let into_run = CompareOptions {
        overwrite: true,
        ..opts(&a, None, &a)
    };
    let e = compare(&into_run, &default_steps()).unwrap_err();
    assert!(
        e.to_string().contains("is not a comparison directory"),
        "{e}"
    );
    assert!(a.join("manifest.json").is_file());
    let e = compare(&opts(&a, Some(&root.join("nope")), &out), &default_steps()).unwrap_err();
    assert!(
        e.to_string().ends_with("nope: no such run directory"),
        "{e}"
    );
    // A comparison failing after it started writing leaves no directory behind.
    let z = root.join("z");
    write_run(
        &z,
        &[doc("other", 1, &[1, 2], &[(1, 0.5)])],
        [2, 1, 1],
        |_, _| 1.0,
    );
    let bad = root.join("bad");
    let e = compare(&opts(&a, Some(&z), &bad), &default_steps()).unwrap_err();
    assert!(e.to_string().starts_with("no document of run A"), "{e}");
    let names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with('.') || n == "bad"),
        "{names:?}"
    );
}
