//! Tests on real checkpoints cannot pass vacuously: without their model they fail, naming the
//! command that fetches it, unless `TOKENLENS_SKIP_REAL_MODELS=1` is set (never by `.ci/run` or
//! `scripts/test.sh`); then they pass saying that they skipped. Each real-model test is run
//! alone in a child process of this test binary, with the model cache pointed at a folder that
//! does not exist.

use std::process::Command;

use crate::common::SKIP_REAL_MODELS;

/// Every test that needs a real checkpoint, and the fetch command its failure must name.
const REAL_MODEL_TESTS: &[(&str, &str)] = &[
    (
        "parity::smollm2_gguf_matches_transformers",
        "scripts/fetch-model.sh",
    ),
    (
        "parity::minilm_matches_transformers",
        "scripts/fetch-model.sh minilm",
    ),
    (
        "parity::gemma3_270m_gguf_matches_transformers",
        "scripts/fetch-model.sh gemma3",
    ),
    (
        "parity_dtype::smollm2_in_bf16_matches_transformers",
        "scripts/fetch-model.sh",
    ),
    (
        "parity_dtype::smollm2_in_f16_matches_transformers",
        "scripts/fetch-model.sh",
    ),
    (
        "patching::smollm2_ioi_patching_and_contrast_match_transformers",
        "scripts/fetch-model.sh",
    ),
    (
        "interventions::smollm2_interventions_match_transformers",
        "scripts/fetch-model.sh",
    ),
    (
        "validate::the_quickstart_pipeline_is_valid",
        "scripts/fetch-model.sh",
    ),
    (
        "run::gemma3_pipeline_runs_every_analysis_on_the_real_model",
        "scripts/fetch-model.sh gemma3",
    ),
    (
        "run::minilm_pipeline_runs_what_needs_no_head",
        "scripts/fetch-model.sh minilm",
    ),
    (
        "tokenizers::gemma3_270m_tokenizer_matches_transformers",
        "scripts/fetch-model.sh gemma3",
    ),
];

/// Runs one test of this binary alone, without any real model: (passed, its output).
fn run_alone(test: &str, skip: bool) -> (bool, String) {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env("TOKENLENS_CACHE", "/nonexistent-tokenlens-cache")
        .env("RUST_BACKTRACE", "0");
    if skip {
        c.env(SKIP_REAL_MODELS, "1");
    } else {
        c.env_remove(SKIP_REAL_MODELS);
    }
    let o = c.output().unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("1 passed") || out.contains("1 failed"),
        "{test} did not run: {out}"
    );
    (o.status.success(), out)
}

#[test]
fn real_model_tests_fail_without_their_model_unless_skipping_is_asked_for() {
    for (test, fetch) in REAL_MODEL_TESTS {
        let (passed, out) = run_alone(test, false);
        assert!(!passed, "{test} passed without its model: {out}");
        assert!(
            out.contains(&format!("run `{fetch}`")),
            "{test}: the failure does not name `{fetch}`: {out}"
        );
        let (passed, out) = run_alone(test, true);
        assert!(passed, "{test} failed with {SKIP_REAL_MODELS}=1: {out}");
        assert!(
            out.contains(&format!("skipped: {SKIP_REAL_MODELS}=1")),
            "{test} did not say it skipped: {out}"
        );
    }
}
