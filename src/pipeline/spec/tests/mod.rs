use std::path::Path;

use super::*;

mod analyses;

const MINIMAL: &str = "model: default\ndataset:\n  path: data/p.jsonl\noutput:\n  dir: out\n";

fn parse(text: &str) -> Result<PipelineSpec, SpecError> {
    PipelineSpec::from_yaml(text, Path::new("pipelines/x.yaml"))
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn minimal_spec_gets_every_default() {
    let s = parse(MINIMAL).unwrap();
    assert_eq!(s.model.path, ModelSource::Default);
    assert_eq!(s.model.dtype, WeightDtype::Auto);
    // Relative paths resolve against the spec's directory.
    assert_eq!(s.dataset.path, Path::new("pipelines/data/p.jsonl"));
    assert_eq!(s.output.dir, Path::new("pipelines/out"));
    assert_eq!(s.dataset.format(), Some(Format::Jsonl));
    assert_eq!(s.dataset.text_field(), "text");
    assert_eq!(s.generation, GenerationSpec::default());
    assert_eq!(s.batching, BatchingSpec::default());
    assert_eq!(s.analyses, AnalysesSpec::default());
    assert!(!s.output.overwrite);
    assert_eq!(s.tables(), ["tokens", "generations"]);
}

#[test]
fn model_forms() {
    let with = |model: &str| parse(&MINIMAL.replace("model: default", model)).unwrap();
    let s = with("model: /abs/m.gguf");
    assert_eq!(s.model.path, ModelSource::Path("/abs/m.gguf".into()));
    let s = with("model: m.gguf");
    assert_eq!(s.model.path, ModelSource::Path("pipelines/m.gguf".into()));
    // No such local path and shaped like org/name: a hub id, not resolved.
    let s = with("model: HuggingFaceTB/SmolLM2-135M");
    assert_eq!(
        s.model.path,
        ModelSource::Hub("HuggingFaceTB/SmolLM2-135M".into())
    );
    let s = with("model:\n  path: ckpt\n  tokenizer: tok/tokenizer.json\n  dtype: f32");
    assert_eq!(s.model.path, ModelSource::Path("pipelines/ckpt".into()));
    assert_eq!(
        s.model.tokenizer.as_deref(),
        Some(Path::new("pipelines/tok/tokenizer.json"))
    );
    let s = with("model:\n  path: default");
    assert_eq!(s.model.path, ModelSource::Default);
    assert_eq!(s.model.path.load_path(), crate::model::default_model_path());
    // A spec in the current directory: relative paths stay relative.
    let s = PipelineSpec::from_yaml(MINIMAL, Path::new("x.yaml")).unwrap();
    assert_eq!(s.dataset.path, Path::new("./data/p.jsonl"));
}

#[test]
fn unknown_keys_name_file_line_column() {
    let e = err(
        "model: default\ndataset:\n  path: p.jsonl\nbatching:\n  batchsize: 4\noutput: {dir: o}\n",
    );
    assert_eq!(
        e,
        "pipelines/x.yaml:5:3: batching: unknown field `batchsize`, expected one of \
         `batch_size`, `max_tokens`, `bucket_by_length`, `bucket_window`"
    );
    let e = err(&format!("{MINIMAL}outptu: {{}}\n"));
    assert!(
        e.starts_with("pipelines/x.yaml:6:1: unknown field `outptu`, expected one of"),
        "{e}"
    );
    // Inside an analysis, through the `enabled` wrapper, and in the model mapping.
    let e = err(&format!("{MINIMAL}analyses:\n  saliency:\n    nsteps: 3\n"));
    assert!(
        e.starts_with(
            "pipelines/x.yaml:8:5: analyses.saliency: unknown field `nsteps`, expected one of"
        ),
        "{e}"
    );
    let e = err(&MINIMAL.replace("model: default", "model:\n  path: m\n  device: cuda"));
    assert!(
        e.starts_with("pipelines/x.yaml:3:3: model: unknown field `device`"),
        "{e}"
    );
    let e = err(&format!("{MINIMAL}analyses:\n  tokens: true\n"));
    assert!(e.contains("unknown field `tokens`, expected one of `predictions`"));
}

#[test]
fn mistyped_values_name_key_and_types() {
    let e = err(&format!("{MINIMAL}generation:\n  top_p: high\n"));
    assert_eq!(
        e,
        "pipelines/x.yaml:7:10: generation.top_p: invalid type: string \"high\", expected f64"
    );
    let e = err(&format!("{MINIMAL}batching:\n  batch_size: -2\n"));
    assert_eq!(
        e,
        "pipelines/x.yaml:7:15: batching.batch_size: invalid type: integer `-2`, expected usize"
    );
    let e = err(&format!(
        "{MINIMAL}analyses:\n  saliency:\n    methods: [gradient, lime]\n"
    ));
    assert_eq!(
        e,
        "pipelines/x.yaml:8:25: analyses.saliency.methods[1]: unknown variant `lime`, \
         expected one of `gradient`, `grad_x_input`, `ig`, `integrated_gradients`"
    );
    let e = err(&format!(
        "{MINIMAL}analyses:\n  attention:\n    layers: some\n"
    ));
    assert!(e.contains("expected `all` or a list of indices"), "{e}");
    let e = err(&format!("{MINIMAL}analyses:\n  lens: 3\n"));
    assert!(
        e.contains("expected a mapping of options, true, false, or nothing"),
        "{e}"
    );
    let e = err("model: default\ndataset:\n  path: p.jsonl\n");
    assert_eq!(e, "pipelines/x.yaml:1:1: missing field `output`");
    let e = err("model: default\ndataset:\n  format: csv\noutput: {dir: o}\n");
    assert!(e.contains("dataset: missing field `path`"), "{e}");
}

#[test]
fn malformed_yaml_and_empty_file() {
    let e = err("model: default\ndataset:\n  path: \"p.jsonl\noutput: {dir: o}\n");
    assert_eq!(
        e,
        "pipelines/x.yaml:5:1: found unexpected end of stream, while scanning a quoted scalar at \
         line 3 column 9"
    );
    let e = err("model: default\n  dataset: x\n");
    assert_eq!(
        e,
        "pipelines/x.yaml:2:10: mapping values are not allowed in this context"
    );
    assert_eq!(
        err("\n  \n"),
        "pipelines/x.yaml: the file is empty; a pipeline needs at least `model`, `dataset` and `output`"
    );
    let e = anyhow::Error::from(PipelineSpec::load(Path::new("/no/such/spec.yaml")).unwrap_err());
    let e = format!("{e:#}");
    assert!(e.starts_with("/no/such/spec.yaml: No such file"), "{e}");
}

#[test]
fn empty_sections_are_their_defaults() {
    let s = parse(&format!("{MINIMAL}generation:\nbatching:\nanalyses:\n")).unwrap();
    assert_eq!(s.generation, GenerationSpec::default());
    assert_eq!(s.analyses, AnalysesSpec::default());
    let e = err(&format!("{MINIMAL}generation:\n  max_new_tokens: x\n"));
    assert!(
        e.starts_with("pipelines/x.yaml:7:19: generation.max_new_tokens: invalid type"),
        "{e}"
    );
}

#[test]
fn serializes_for_the_manifest() {
    let s = parse(&format!(
        "{MINIMAL}analyses:\n  attention: {{layers: [0, -1]}}\n"
    ))
    .unwrap();
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["model"]["path"], "default");
    assert_eq!(
        v["analyses"]["attention"]["layers"],
        serde_json::json!([0, -1])
    );
    assert_eq!(v["analyses"]["attention"]["heads"], "all");
    assert_eq!(v["analyses"]["lens"], serde_json::Value::Null);
}

#[test]
fn analyses_on_off_and_defaults() {
    let s = parse(&format!(
        "{MINIMAL}analyses:\n  predictions:\n  lens: true\n  saliency: false\n  nmf: {{n_components: 3}}\n  watch: {{tokens: [' Paris']}}\n"
    ))
    .unwrap();
    let a = &s.analyses;
    assert_eq!(a.predictions, Some(PredictionsSpec { top_k: 10 }));
    assert_eq!(a.lens, Some(LensSpec::default()));
    assert_eq!(a.saliency, None);
    let nmf = a.nmf.as_ref().unwrap();
    assert_eq!(nmf.n_components, 3);
    assert_eq!(nmf.max_iter, 200);
    assert_eq!(a.watch.as_ref().unwrap().tokens, [" Paris"]);
    assert_eq!(
        s.tables(),
        [
            "tokens",
            "generations",
            "predictions",
            "lens",
            "lens_topk",
            "watch",
            "nmf_components",
            "nmf_factors",
            "nmf_summary",
            "nmf_top_contexts"
        ]
    );
    let s = parse(&format!(
        "{MINIMAL}analyses:\n  saliency: {{methods: [ig, gradient], rule: gauss-legendre}}\n"
    ))
    .unwrap();
    let sal = s.analyses.saliency.unwrap();
    assert_eq!(
        sal.methods,
        [
            SaliencyMethod::IntegratedGradients,
            SaliencyMethod::Gradient
        ]
    );
    assert_eq!(sal.rule, IgRule::GaussLegendre);
}

#[test]
fn semantic_problems_are_all_listed_with_their_keys() {
    let e = err(&format!(
        "{MINIMAL}generation:\n  max_new_tokens: 0\n  top_p: 1.5\nbatching:\n  batch_size: 0\nanalyses:\n  saliency: {{n_steps: 0, methods: []}}\n  watch: {{}}\n  attention: {{layers: [1, 1]}}\n  nmf: {{tolerance: 0, positions: generated}}\n"
    ));
    let lines: Vec<&str> = e.lines().collect();
    let expected = [
        "pipelines/x.yaml: generation.top_p: must be in (0, 1], got 1.5",
        "pipelines/x.yaml: generation.top_p: has no effect with greedy decoding; set temperature > 0 to sample",
        "pipelines/x.yaml: batching.batch_size: must be in 1..=1024, got 0",
        "pipelines/x.yaml: analyses.saliency.methods: list at least one of gradient, grad_x_input, integrated_gradients",
        "pipelines/x.yaml: analyses.saliency.n_steps: must be in 1..=1000, got 0",
        "pipelines/x.yaml: analyses.watch.tokens: list at least one token",
        "pipelines/x.yaml: analyses.attention.layers: lists an index twice",
        "pipelines/x.yaml: analyses.nmf.positions: `generated` needs generation.max_new_tokens >= 1",
        "pipelines/x.yaml: analyses.nmf.tolerance: must be in (0, 1], got 0",
    ];
    assert_eq!(lines, expected, "{e}");
    // The bucket window must hold a batch, unless there is no bucketing.
    let e = err(&format!("{MINIMAL}batching: {{batch_size: 512}}\n"));
    assert_eq!(
        e,
        "pipelines/x.yaml: batching.bucket_window: must be at least batch_size (512), got 256"
    );
    assert!(
        parse(&format!(
            "{MINIMAL}batching: {{batch_size: 512, bucket_by_length: false}}\n"
        ))
        .is_ok()
    );
}

#[test]
fn dataset_checks() {
    let e = err(&MINIMAL.replace("p.jsonl", "p.xlsx"));
    assert_eq!(
        e,
        "pipelines/x.yaml: dataset.format: cannot tell the format from `.xlsx`; set it to jsonl, csv, parquet or txt"
    );
    assert!(parse(&MINIMAL.replace("p.jsonl", "p.xlsx\n  format: csv")).is_ok());
    let e = err(&MINIMAL.replace("p.jsonl", "p.txt\n  id_field: id\n  limit: 0"));
    assert_eq!(
        e,
        "pipelines/x.yaml: dataset.id_field: a txt dataset has no fields; doc_id is the line's prompt index\n\
         pipelines/x.yaml: dataset.limit: must be at least 1 (omit it to read every prompt)"
    );
    let e = err(&MINIMAL.replace("p.jsonl", "p.csv\n  id_field: text"));
    assert_eq!(
        e,
        "pipelines/x.yaml: dataset.id_field: `text` is also the text field"
    );
    let s = parse(&MINIMAL.replace("p.jsonl", "p.csv\n  too_long: truncate")).unwrap();
    assert_eq!(s.dataset.too_long, TooLong::Truncate);
}

#[test]
fn validate_against_model_dims() {
    let s = parse(&format!(
        "{MINIMAL}generation: {{max_new_tokens: 128}}\nanalyses:\n  attention: {{layers: [0, -1, 4], heads: [-5]}}\n  activations: {{layers: [-4]}}\n  nmf: {{layers: all}}\n"
    ))
    .unwrap();
    let dims = ModelDims::decoder(4, 4, 128);
    let e = s.validate_against(dims).unwrap_err().to_string();
    assert_eq!(
        e,
        "pipelines/x.yaml: analyses.attention.layers: index 4 is out of range: the model has 4 layers (0..=3, or -4..=-1 from the end)\n\
         pipelines/x.yaml: analyses.attention.heads: index -5 is out of range: the model has 4 heads (0..=3, or -4..=-1 from the end)\n\
         pipelines/x.yaml: generation.max_new_tokens: 128 leaves no room for a prompt in the model's context of 128 tokens"
    );
    let five = ModelDims::decoder(5, 5, 2048);
    // -1 and 4 are the same layer of 5.
    assert_eq!(
        s.validate_against(five).unwrap_err().to_string(),
        "pipelines/x.yaml: analyses.attention.layers: selects an index twice (negative indices count from the end)"
    );
    let six = ModelDims {
        n_layers: 6,
        ..five
    };
    s.validate_against(six).unwrap();
    let at = s.analyses.attention.as_ref().unwrap();
    assert_eq!(at.layers.resolve(6).unwrap(), [0, 5, 4]);
    assert_eq!(at.heads.resolve(5).unwrap(), [0]);
    assert_eq!(Selection::All.resolve(3).unwrap(), [0, 1, 2]);
}

#[test]
fn watch_tokens_must_be_single_tokens() {
    let s = parse(&format!(
        "{MINIMAL}analyses:\n  watch: {{tokens: [' Paris', ' Parisian']}}\n"
    ))
    .unwrap();
    let encode = |t: &str| -> Result<Vec<u32>, String> {
        Ok(if t == " Paris" { vec![7] } else { vec![7, 9] })
    };
    assert_eq!(
        s.validate_watch_tokens(encode, 100)
            .unwrap_err()
            .to_string(),
        "pipelines/x.yaml: analyses.watch.tokens: \" Parisian\" is 2 tokens [7, 9], not one"
    );
    // One token, but past the model's rows.
    let s = parse(&format!(
        "{MINIMAL}analyses:\n  watch: {{tokens: [' Paris']}}\n"
    ))
    .unwrap();
    assert!(s.validate_watch_tokens(encode, 8).is_ok());
    assert_eq!(
        s.validate_watch_tokens(encode, 7).unwrap_err().to_string(),
        "pipelines/x.yaml: analyses.watch.tokens: \" Paris\" is token id 7, outside the model's \
         vocabulary of 7 ids (0..=6)"
    );
}

#[test]
fn check_inputs_names_missing_files() {
    let s = parse(
        &MINIMAL
            .replace(
                "model: default",
                "model: {path: nope.gguf, tokenizer: t.json}",
            )
            .replace("data/p.jsonl", "/no/such/p.jsonl"),
    )
    .unwrap();
    assert_eq!(
        s.check_inputs(true).unwrap_err().to_string(),
        "pipelines/x.yaml: dataset.path: /no/such/p.jsonl: no such file\n\
         pipelines/x.yaml: model: pipelines/nope.gguf: no such file or directory\n\
         pipelines/x.yaml: model.tokenizer: pipelines/t.json: no such file"
    );
}

/// `model: fetched:NAME` names a checkpoint scripts/fetch-model.sh caches; an unknown name is
/// an error listing the known ones.
#[test]
fn fetched_models_by_name() {
    let s = parse(&MINIMAL.replace("model: default", "model: fetched:gemma3")).unwrap();
    assert_eq!(s.model.path, ModelSource::Fetched("gemma3".into()));
    assert!(
        s.model
            .path
            .load_path()
            .ends_with("models/gemma-3-270m-q4_k_m.gguf")
    );
    let s = parse(&MINIMAL.replace("model: default", "model: fetched:llama9")).unwrap();
    let e = s.check_inputs(true).unwrap_err().to_string();
    assert!(
        e.contains("model: `fetched:llama9`: unknown model (known: smollm2, gemma3, minilm)"),
        "{e}"
    );
}

/// The example spec shipped in pipelines/ parses, turns every analysis on and points at the
/// shipped dataset.
#[test]
fn quickstart_spec_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/quickstart.yaml");
    let s = PipelineSpec::load(&path).unwrap();
    assert_eq!(s.model.path, ModelSource::Default);
    let a = &s.analyses;
    assert!(
        a.predictions.is_some()
            && a.saliency.is_some()
            && a.lens.is_some()
            && a.watch.is_some()
            && a.activations.is_some()
            && a.attention.as_ref().is_some_and(|at| at.rollout)
            && a.nmf.is_some()
            && a.neurons.is_some()
            && a.similarity.is_some()
    );
    // Every table but `pairs` and `patching` (the quickstart dataset is not paired) and the
    // three of interventions (pipelines/interventions.yaml); of the comparison tables only
    // `similarity` is a run's.
    let run_tables = crate::store::schema::ALL_TABLES
        .iter()
        .filter(|t| crate::store::schema::is_run_table(t))
        .count();
    assert_eq!(s.tables().len(), run_tables - 5);
    assert!(!s.tables().contains(&"pairs") && !s.tables().contains(&"patching"));
    assert!(s.dataset.path.is_file(), "{}", s.dataset.path.display());
    // SmolLM2-135M: 30 layers, 9 heads, 8192 tokens of context.
    s.validate_against(ModelDims::decoder(30, 9, 8192)).unwrap();
}

/// What a spec may ask of a model depends on its kind: a decoder's saliency explains generated
/// tokens; an encoder never generates (its saliency explains [MASK] predictions); a checkpoint
/// without a language-model head refuses what needs one. Each problem names its key.
#[test]
fn encoder_and_headless_models() {
    let sal = parse(&format!(
        "{MINIMAL}generation: {{max_new_tokens: 0}}\nanalyses:\n  saliency: {{}}\n"
    ))
    .unwrap();
    let decoder = ModelDims::decoder(2, 2, 64);
    assert_eq!(
        sal.validate_against(decoder).unwrap_err().to_string(),
        "pipelines/x.yaml: analyses.saliency: explains generated tokens (targets: \
         [generated]): set generation.max_new_tokens >= 1, or explain a contrast (targets: \
         [logit_diff])"
    );
    let encoder = ModelDims {
        encoder: true,
        ..decoder
    };
    sal.validate_against(encoder).unwrap();
    let default_generation = parse(&format!("{MINIMAL}analyses:\n  attention: {{}}\n")).unwrap();
    assert_eq!(
        default_generation
            .validate_against(encoder)
            .unwrap_err()
            .to_string(),
        "pipelines/x.yaml: generation.max_new_tokens: an encoder does not generate: set it to 0 \
         (got 20; the default is 20)"
    );
    let headless = ModelDims {
        lm_head: false,
        ..encoder
    };
    let all = parse(&format!(
        "{MINIMAL}generation: {{max_new_tokens: 0}}\nanalyses:\n  predictions: {{}}\n  lens: {{}}\n  saliency: {{}}\n  attention: {{}}\n"
    ))
    .unwrap();
    let e = all.validate_against(headless).unwrap_err().to_string();
    let keys: Vec<&str> = e.lines().map(|l| l.split(": ").nth(1).unwrap()).collect();
    assert_eq!(
        keys,
        ["analyses.predictions", "analyses.lens", "analyses.saliency"],
        "{e}"
    );
    assert!(e.contains("needs a language-model head"), "{e}");
}

/// Every numeric option has a range (docs/pipelines.md), checked by `validate`: values past the
/// top, which would make a run take forever or allocate without bound, are refused with the key,
/// the range and the value.
#[test]
fn numeric_options_past_their_range_are_refused() {
    let e = err(&format!(
        "{MINIMAL}generation:\n  temperature: 1000\nbatching:\n  batch_size: 100000\n  bucket_window: 100000000\nanalyses:\n  predictions: {{top_k: 100000}}\n  lens: {{top_k: 100000}}\n  saliency: {{n_steps: 100000000, chunk_tokens: 100000000}}\n  nmf: {{n_components: 100000, max_iter: 100000000, tolerance: 2, top_contexts: 100000, context_tokens: 100000}}\n"
    ));
    let lines: Vec<&str> = e.lines().collect();
    let expected = [
        "pipelines/x.yaml: generation.temperature: must be in 0..=100 (0 = greedy), got 1000",
        "pipelines/x.yaml: batching.batch_size: must be in 1..=1024, got 100000",
        "pipelines/x.yaml: batching.bucket_window: must be in 1..=1000000, got 100000000",
        "pipelines/x.yaml: analyses.predictions.top_k: must be in 1..=1000, got 100000",
        "pipelines/x.yaml: analyses.saliency.n_steps: must be in 1..=1000, got 100000000",
        "pipelines/x.yaml: analyses.saliency.chunk_tokens: must be in 1..=65536, got 100000000",
        "pipelines/x.yaml: analyses.lens.top_k: must be in 1..=1000, got 100000",
        "pipelines/x.yaml: analyses.nmf.n_components: must be in 1..=1000, got 100000",
        "pipelines/x.yaml: analyses.nmf.max_iter: must be in 1..=100000, got 100000000",
        "pipelines/x.yaml: analyses.nmf.tolerance: must be in (0, 1], got 2",
        "pipelines/x.yaml: analyses.nmf.top_contexts: must be in 0..=1000, got 100000",
        "pipelines/x.yaml: analyses.nmf.context_tokens: must be in 0..=1000, got 100000",
    ];
    assert_eq!(lines, expected, "{e}");
    // The tops themselves are accepted.
    parse(&format!(
        "{MINIMAL}generation:\n  temperature: 100\nbatching:\n  batch_size: 1024\n  bucket_window: 1000000\nanalyses:\n  predictions: {{top_k: 1000}}\n  lens: {{top_k: 1000}}\n  saliency: {{n_steps: 1000, chunk_tokens: 65536}}\n  nmf: {{n_components: 1000, max_iter: 100000, tolerance: 1, top_contexts: 1000, context_tokens: 1000}}\n"
    ))
    .unwrap();
}
