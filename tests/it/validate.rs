//! `tokenlens validate PIPELINE.yaml`: the ok summary on good specs (tiny model, the shipped
//! quickstart), and every kind of bad spec: the message it prints and exit code 1.

use std::path::Path;

use crate::common::{Tokenlens, data_dir, real_model, tiny_spec};

const BIN: Tokenlens = Tokenlens::NO_CACHE;

/// Validates a spec that must fail: exit code 1, no panic, and the stderr is exactly
/// `error: <expected>` with the scratch directory written as `DIR`.
fn fails(spec: &Path, expected: &str) {
    let err = BIN.fails(&["validate", spec.to_str().unwrap()]);
    let dir = spec.parent().unwrap().to_str().unwrap();
    assert_eq!(
        err.replace(dir, "DIR").trim_end(),
        format!("error: {expected}")
    );
}

const DATA: &str = "{\"id\": \"a\", \"text\": \"The cat sat\"}\n\
                    {\"id\": \"b\", \"text\": \"Once upon a time\"}\n\
                    {\"id\": 3, \"text\": \"1, 2, 3,\"}\n";

const GOOD: &str = "\
model: MODEL
dataset:
  path: data.jsonl
  id_field: id
generation:
  max_new_tokens: 4
analyses:
  predictions: {top_k: 3}
  attention: {layers: [0, -1], heads: [1], rollout: true}
output:
  dir: out
";

#[test]
fn a_good_spec_prints_a_summary() {
    let spec = tiny_spec("validate-good", DATA, GOOD);
    let out = BIN.ok(&["validate", spec.to_str().unwrap()]);
    let dir = spec.parent().unwrap().to_str().unwrap();
    let model = data_dir().join("tiny-llama");
    assert_eq!(
        out.replace(dir, "DIR"),
        format!(
            "ok: DIR/spec.yaml: 3 prompts from DIR/data.jsonl; 5 tables (tokens, generations, \
             predictions, attention, attention_rollout) -> DIR/out; model {} (3 layers, 4 heads, \
             context 128)\n",
            model.display()
        )
    );
    // Without the model, and with an existing run directory.
    std::fs::create_dir_all(spec.parent().unwrap().join("out")).unwrap();
    let out = BIN.ok(&["validate", "--no-model", spec.to_str().unwrap()]);
    assert!(
        out.contains("; model not loaded (--no-model)\nnote: "),
        "{out}"
    );
    assert!(out.contains("the run will fail unless it is empty or output.overwrite is true"));
}

/// Every committed pipeline parses and finds its dataset.
#[test]
fn every_shipped_pipeline_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "yaml") {
            let out = BIN.ok(&["validate", "--no-model", path.to_str().unwrap()]);
            assert!(out.starts_with("ok: "), "{}: {out}", path.display());
            n += 1;
        }
    }
    assert!(n >= 3, "{n} pipelines");
}

/// The shipped example: its dataset and, when the default model is there, its layers, heads and
/// watched tokens.
#[test]
fn the_quickstart_pipeline_is_valid() {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/quickstart.yaml");
    let spec = spec.to_str().unwrap();
    let out = BIN.ok(&["validate", "--no-model", spec]);
    assert!(out.contains("42 prompts from"), "{out}");
    assert!(out.contains("19 tables"), "{out}");
    let Some(model) = real_model() else { return };
    let cache = model.parent().unwrap().parent().unwrap();
    let o = BIN
        .cmd(&["validate", spec])
        .env("TOKENLENS_CACHE", cache)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("(30 layers, 9 heads, context 8192)"), "{out}");
}

#[test]
fn malformed_yaml() {
    let spec = tiny_spec(
        "validate-yaml",
        DATA,
        "model: MODEL\ndataset:\n  path: \"data.jsonl\noutput: {dir: o}\n",
    );
    fails(
        &spec,
        "DIR/spec.yaml:5:1: found unexpected end of stream, while scanning a quoted scalar at \
         line 3 column 9",
    );
    let spec = tiny_spec("validate-indent", DATA, "model: MODEL\n  dataset: x\n");
    fails(
        &spec,
        "DIR/spec.yaml:2:10: mapping values are not allowed in this context",
    );
}

#[test]
fn unknown_keys_name_file_line_and_column() {
    let spec = tiny_spec(
        "validate-unknown",
        DATA,
        &GOOD.replace("  id_field: id\n", "  id_feld: id\n"),
    );
    fails(
        &spec,
        "DIR/spec.yaml:4:3: dataset: unknown field `id_feld`, expected one of `path`, `format`, \
         `text_field`, `id_field`, `corrupted_field`, `answer_field`, `foil_field`, `align`, `limit`, \
         `too_long`",
    );
    let spec = tiny_spec(
        "validate-unknown-analysis",
        DATA,
        &GOOD.replace("predictions: {top_k: 3}", "predictions: {topk: 3}"),
    );
    fails(
        &spec,
        "DIR/spec.yaml:8:17: analyses.predictions: unknown field `topk`, expected `top_k`",
    );
}

#[test]
fn mistyped_values() {
    let spec = tiny_spec(
        "validate-type",
        DATA,
        &GOOD.replace("max_new_tokens: 4", "max_new_tokens: four"),
    );
    fails(
        &spec,
        "DIR/spec.yaml:6:19: generation.max_new_tokens: invalid type: string \"four\", expected usize",
    );
    let spec = tiny_spec(
        "validate-enum",
        DATA,
        &GOOD.replace("rollout: true", "rollout: yes"),
    );
    fails(
        &spec,
        "DIR/spec.yaml:9:53: analyses.attention.rollout: invalid type: string \"yes\", expected a boolean",
    );
}

#[test]
fn missing_files() {
    let spec = tiny_spec(
        "validate-missing",
        DATA,
        &GOOD.replace("data.jsonl", "nope.jsonl"),
    );
    fails(
        &spec,
        "DIR/spec.yaml: dataset.path: DIR/nope.jsonl: no such file",
    );
    let spec = tiny_spec(
        "validate-default-model",
        DATA,
        &GOOD.replace("model: MODEL", "model: default"),
    );
    fails(
        &spec,
        "DIR/spec.yaml: model: the default model is not at \
         /nonexistent-tokenlens-cache/models/SmolLM2-135M-Instruct.Q4_1.gguf; run \
         scripts/fetch-model.sh to fetch it",
    );
    let o = BIN.output(&["validate", "/no/such/pipeline.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "error: /no/such/pipeline.yaml: No such file or directory (os error 2)\n"
    );
}

#[test]
fn bad_option_values_are_all_listed() {
    let spec = tiny_spec("validate-values", DATA,
        &GOOD
            .replace("max_new_tokens: 4", "max_new_tokens: 4\n  top_p: 0\n  temperature: 0.7")
            .replace("top_k: 3", "top_k: 0")
            .replace(
                "output:",
                "  saliency: {methods: [ig, ig], n_steps: 0, ig_tolerance: 1.5}\n  nmf: {tolerance: -1}\nbatching: {batch_size: 0}\noutput:",
            ),
    );
    fails(
        &spec,
        "DIR/spec.yaml: generation.top_p: must be in (0, 1], got 0\n\
         DIR/spec.yaml: batching.batch_size: must be in 1..=1024, got 0\n\
         DIR/spec.yaml: analyses.predictions.top_k: must be in 1..=1000, got 0\n\
         DIR/spec.yaml: analyses.saliency.methods: lists a method twice\n\
         DIR/spec.yaml: analyses.saliency.n_steps: must be in 1..=1000, got 0\n\
         DIR/spec.yaml: analyses.saliency.ig_tolerance: must be in (0, 1], got 1.5\n\
         DIR/spec.yaml: analyses.nmf.tolerance: must be in (0, 1], got -1",
    );
}

/// Adaptive integrated gradients has its own nested rule: asking for the trapezoid with it is
/// refused, not silently ignored.
#[test]
fn adaptive_ig_refuses_the_trapezoid_rule() {
    let spec = tiny_spec(
        "validate-adaptive-rule",
        DATA,
        &GOOD.replace(
            "output:",
            "  saliency: {methods: [ig], ig_tolerance: 0.01, rule: trapezoid}\noutput:",
        ),
    );
    fails(
        &spec,
        "DIR/spec.yaml: analyses.saliency.rule: adaptive integrated gradients (ig_tolerance) uses \
         its own nested rule (docs/saliency.md): remove `rule: trapezoid` or `ig_tolerance`",
    );
}

#[test]
fn checks_against_the_model() {
    let spec = tiny_spec(
        "validate-layers",
        DATA,
        &GOOD
            .replace("layers: [0, -1], heads: [1]", "layers: [0, 3], heads: [-5]")
            .replace("max_new_tokens: 4", "max_new_tokens: 200"),
    );
    fails(
        &spec,
        "DIR/spec.yaml: analyses.attention.layers: index 3 is out of range: the model has 3 \
         layers (0..=2, or -3..=-1 from the end)\n\
         DIR/spec.yaml: analyses.attention.heads: index -5 is out of range: the model has 4 heads \
         (0..=3, or -4..=-1 from the end)\n\
         DIR/spec.yaml: generation.max_new_tokens: 200 leaves no room for a prompt in the model's \
         context of 128 tokens",
    );
    // --no-model skips those checks.
    BIN.ok(&["validate", "--no-model", spec.to_str().unwrap()]);
}

#[test]
fn bad_dataset_records() {
    let spec = tiny_spec("validate-record", DATA, GOOD);
    let dir = spec.parent().unwrap();
    std::fs::write(
        dir.join("data.jsonl"),
        "{\"id\": \"a\", \"text\": \"x\"}\n{\"id\": \"b\", \"prompt\": \"y\"}\n",
    )
    .unwrap();
    fails(
        &spec,
        "DIR/data.jsonl:2: no field `text` (fields: id, prompt)",
    );
    std::fs::write(
        dir.join("data.jsonl"),
        "{\"id\": \"a\", \"text\": \"x\"}\n{\"id\": \"a\", \"text\": \"y\"}\n",
    )
    .unwrap();
    fails(
        &spec,
        "DIR/data.jsonl:2: doc_id `a` is already used at line 1",
    );
}

/// A tokenizer (here `model.tokenizer`) may know ids the model's embedding and logits do not
/// have: a watched token with such an id is a validation error naming the field and the id, for
/// `validate` and for `run` (it used to pass `validate` and reach the lens).
#[test]
fn a_watched_token_outside_the_models_vocabulary_is_refused() {
    let spec = tiny_spec(
        "validate-watch-vocab",
        DATA,
        &GOOD
            .replace(
                "model: MODEL",
                "model:\n  path: MODEL\n  tokenizer: tokenizer.json",
            )
            .replace(
                "  predictions: {top_k: 3}",
                "  predictions: {top_k: 3}\n  watch: {tokens: ['<extra>']}",
            ),
    );
    // The tiny model's tokenizer plus one added token: the tokenizer gives it id 512, one past
    // the model's 512 embedding rows.
    let dir = spec.parent().unwrap();
    let mut tok: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data_dir().join("tiny-llama/tokenizer.json")).unwrap(),
    )
    .unwrap();
    tok["added_tokens"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "id": 512, "content": "<extra>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": false
        }));
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    let expected = "DIR/spec.yaml: analyses.watch.tokens: \"<extra>\" is token id 512, outside \
                    the model's vocabulary of 512 ids (0..=511)";
    fails(&spec, expected);
    let err = Tokenlens::RUN.fails(&["run", "--quiet", spec.to_str().unwrap()]);
    assert_eq!(
        err.replace(dir.to_str().unwrap(), "DIR").trim_end(),
        format!("error: {expected}")
    );
}

/// `analyses.similarity`'s bad values, each with its key and exit code 1: an unknown key (with
/// its line and column), `diagonal` pairs within one run, a source the spec does not record, and
/// numbers out of range.
#[test]
fn bad_similarity_options() {
    let with = |name: &str, sim: &str| {
        tiny_spec(
            name,
            DATA,
            &GOOD.replace(
                "output:",
                &format!("  residuals:\n  similarity: {sim}\noutput:"),
            ),
        )
    };
    fails(
        &with("validate-sim-key", "{pair: all}"),
        "DIR/spec.yaml:11:16: analyses.similarity: unknown field `pair`, expected one of \
         `sources`, `metrics`, `pairs`, `minibatch`, `svcca_dims`, `memory_mib`",
    );
    fails(
        &with("validate-sim-diagonal", "{pairs: diagonal}"),
        "DIR/spec.yaml: analyses.similarity.pairs: `diagonal` pairs each layer with itself \
         within one run (always 1): use `all` (the default; `diagonal` is for `tokenlens \
         compare RUN_A RUN_B`)",
    );
    fails(
        &with("validate-sim-source", "{sources: [activations]}"),
        "DIR/spec.yaml: analyses.similarity.sources: `activations` is not recorded: add \
         analyses.activations",
    );
    fails(
        &with(
            "validate-sim-ranges",
            "{minibatch: 2, svcca_dims: 0, memory_mib: 2000000}",
        ),
        "DIR/spec.yaml: analyses.similarity.minibatch: must be in 4..=65536, got 2\n\
         DIR/spec.yaml: analyses.similarity.svcca_dims: must be in 1..=100000, got 0\n\
         DIR/spec.yaml: analyses.similarity.memory_mib: must be in 16..=1048576, got 2000000",
    );
    // The same message from `tokenlens run`, before anything is written.
    let spec = with("validate-sim-run", "{pairs: diagonal}");
    let err = Tokenlens::RUN.fails(&["run", "-q", spec.to_str().unwrap()]);
    assert!(
        err.contains("analyses.similarity.pairs: `diagonal` pairs each layer with itself"),
        "{err}"
    );
    assert!(!spec.parent().unwrap().join("out").exists());
}
