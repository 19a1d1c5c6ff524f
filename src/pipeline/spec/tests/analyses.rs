//! The spec's checks of paired datasets, contrasts, patching, the neurons and similarity
//! options.

use super::*;

/// Paired datasets and contrastive saliency: pair fields need a format with fields and distinct
/// names, answer and foil go together, contrasts need them, a non-zero baseline needs
/// integrated gradients (and `corrupted` its field, `token` its text); each problem names its key.
#[test]
fn paired_datasets_and_contrasts() {
    let paired = MINIMAL.replace(
        "p.jsonl",
        "p.jsonl\n  corrupted_field: bad\n  answer_field: a\n  foil_field: b",
    );
    let s = parse(&format!(
        "{paired}generation: {{max_new_tokens: 0}}\nanalyses:\n  saliency: {{targets: [logit_diff, prob_diff], baseline: corrupted}}\n"
    ))
    .unwrap();
    assert_eq!(
        s.dataset.pair_fields(),
        [
            (PairField::Corrupted, "bad"),
            (PairField::Answer, "a"),
            (PairField::Foil, "b")
        ]
    );
    assert!(s.tables().contains(&"pairs"));
    // Contrasts read the prompt: no generation needed.
    s.validate_against(ModelDims::decoder(2, 2, 64)).unwrap();
    let encoder = ModelDims {
        encoder: true,
        ..ModelDims::decoder(2, 2, 64)
    };
    assert_eq!(
        s.validate_against(encoder).unwrap_err().to_string(),
        "pipelines/x.yaml: analyses.saliency.targets: an encoder explains its [MASK] predictions; \
         contrasts are for decoders\n\
         pipelines/x.yaml: analyses.saliency.baseline: `corrupted` is for decoders' paired prompts"
    );

    let e = err(&MINIMAL.replace(
        "p.jsonl",
        "p.txt\n  corrupted_field: bad\n  answer_field: text\n  foil_field: ''",
    ));
    assert_eq!(
        e,
        "pipelines/x.yaml: dataset.corrupted_field: a txt dataset has one prompt per line and no fields\n\
         pipelines/x.yaml: dataset.answer_field: a txt dataset has one prompt per line and no fields\n\
         pipelines/x.yaml: dataset.foil_field: a txt dataset has one prompt per line and no fields"
    );
    let e = err(&MINIMAL.replace("p.jsonl", "p.jsonl\n  answer_field: text\n  foil_field: ''"));
    assert_eq!(
        e,
        "pipelines/x.yaml: dataset.answer_field: `text` is already the text, id or another pair field\n\
         pipelines/x.yaml: dataset.foil_field: must not be empty"
    );
    let e = err(&MINIMAL.replace("p.jsonl", "p.jsonl\n  answer_field: a"));
    assert_eq!(
        e,
        "pipelines/x.yaml: dataset.foil_field: answer_field and foil_field go together: a contrast needs both"
    );
    let e = err(&format!(
        "{MINIMAL}analyses:\n  saliency: {{targets: [generated, logit_diff, generated], baseline: corrupted, baseline_token: x}}\n"
    ));
    assert_eq!(
        e,
        "pipelines/x.yaml: analyses.saliency.targets: lists a target twice\n\
         pipelines/x.yaml: analyses.saliency.targets: `logit_diff` contrasts each row's answer with its foil: set dataset.answer_field and dataset.foil_field\n\
         pipelines/x.yaml: analyses.saliency.baseline: `corrupted` needs each row's corrupted prompt: set dataset.corrupted_field\n\
         pipelines/x.yaml: analyses.saliency.baseline_token: only used with `baseline: token` (baseline is `corrupted`)"
    );
    let e = err(&format!(
        "{MINIMAL}analyses:\n  saliency: {{methods: [gradient], baseline: token, targets: []}}\n"
    ));
    assert_eq!(
        e,
        "pipelines/x.yaml: analyses.saliency.targets: list at least one of generated, logit_diff, prob_diff, log_prob_ratio\n\
         pipelines/x.yaml: analyses.saliency.baseline: only integrated_gradients uses a baseline: add it to methods or remove baseline\n\
         pipelines/x.yaml: analyses.saliency.baseline_token: `baseline: token` needs the token (e.g. baseline_token: \"<pad>\")"
    );
    let e = err(&format!(
        "{MINIMAL}analyses:\n  saliency: {{baseline: average}}\n"
    ));
    assert!(
        e.contains("analyses.saliency.baseline: unknown variant `average`, expected one of `zero`, `eos`, `bos`, `token`, `mean`, `corrupted`"),
        "{e}"
    );
}

/// Patching needs a paired dataset with answer and foil, non-empty lists without repeats and a
/// batch size in range; an encoder cannot be patched.
#[test]
fn patching_checks() {
    let e = err(&format!(
        "{MINIMAL}analyses:\n  patching: {{methods: [exact, exact], components: [], directions: [noise, noise], batch_rows: 0}}\n"
    ));
    assert_eq!(
        e,
        "pipelines/x.yaml: analyses.patching: patches between each row's prompt and its corrupted prompt and reads its answer and foil: set dataset.corrupted_field, answer_field and foil_field\n\
         pipelines/x.yaml: analyses.patching.methods: lists a method twice\n\
         pipelines/x.yaml: analyses.patching.components: list at least one of resid_pre, attn_head, attn_head_pos, mlp_out\n\
         pipelines/x.yaml: analyses.patching.directions: lists a direction twice\n\
         pipelines/x.yaml: analyses.patching.batch_rows: must be in 1..=4096, got 0"
    );
    let paired = MINIMAL.replace(
        "p.jsonl",
        "p.jsonl\n  corrupted_field: bad\n  answer_field: a\n  foil_field: b",
    );
    let s = parse(&format!("{paired}analyses:\n  patching:\n")).unwrap();
    let p = s.analyses.patching.as_ref().unwrap();
    assert_eq!(
        (
            p.methods.clone(),
            p.components.len(),
            p.directions.clone(),
            p.batch_rows
        ),
        (
            vec![PatchMethod::Exact],
            3,
            vec![PatchDirection::Denoise],
            64
        )
    );
    assert!(s.tables().contains(&"patching"));
    let encoder = ModelDims {
        encoder: true,
        ..ModelDims::decoder(2, 2, 64)
    };
    let e = parse(&format!(
        "{paired}generation: {{max_new_tokens: 0}}\nanalyses:\n  patching:\n"
    ))
    .unwrap()
    .validate_against(encoder)
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "pipelines/x.yaml: analyses.patching: reads the prediction after a prompt: an encoder has none"
    );
}

#[test]
fn align_needs_a_corrupted_field() {
    let s = parse(&MINIMAL.replace(
        "  path: data/p.jsonl\n",
        "  path: data/p.jsonl\n  align: end\n",
    ));
    assert_eq!(
        s.unwrap_err().to_string(),
        "pipelines/x.yaml: dataset.align: aligns a row's clean and corrupted prompts: set \
         dataset.corrupted_field"
    );
    let s = parse(&MINIMAL.replace(
        "  path: data/p.jsonl\n",
        "  path: data/p.jsonl\n  corrupted_field: bad\n  align: end\n",
    ))
    .unwrap();
    assert_eq!(s.dataset.align, PairAlign::End);
    assert!(
        err(&MINIMAL.replace(
            "  path: data/p.jsonl\n",
            "  path: data/p.jsonl\n  align: start\n"
        ))
        .contains("unknown variant `start`, expected `equal` or `end`")
    );
}

/// `analyses.neurons`: its defaults, its ranges, that it reads the activations table, and its
/// layers among the recorded ones.
#[test]
fn neurons_options_and_their_checks() {
    let s = parse(&format!(
        "{MINIMAL}analyses:\n  activations: {{layers: [0, -1]}}\n  neurons:\n"
    ))
    .unwrap();
    assert_eq!(s.analyses.neurons, Some(NeuronsSpec::default()));
    assert_eq!(
        (
            NeuronsSpec::default().top_k,
            NeuronsSpec::default().context_tokens
        ),
        (20, 8)
    );
    assert_eq!(
        s.tables(),
        [
            "tokens",
            "generations",
            "activations",
            "neuron_top_contexts",
            "neuron_stats"
        ]
    );
    s.validate_against(ModelDims::decoder(4, 4, 128)).unwrap();
    let e = err(&format!(
        "{MINIMAL}analyses:\n  neurons: {{top_k: 0, context_tokens: 1001, layers: [1, 1]}}\n"
    ));
    assert_eq!(
        e.lines().collect::<Vec<_>>(),
        [
            "pipelines/x.yaml: analyses.neurons.top_k: must be in 1..=1000, got 0",
            "pipelines/x.yaml: analyses.neurons.context_tokens: must be in 0..=1000, got 1001",
            "pipelines/x.yaml: analyses.neurons.layers: lists an index twice",
            "pipelines/x.yaml: analyses.neurons: reads the activations table: add \
             analyses.activations (its layers)",
        ]
    );
    assert!(
        parse(&format!(
            "{MINIMAL}analyses:\n  activations:\n  neurons: {{top_k: 1000}}\n"
        ))
        .is_ok()
    );
    let e = err(&format!(
        "{MINIMAL}analyses:\n  activations:\n  neurons: {{k: 3}}\n"
    ));
    assert!(
        e.contains("unknown field `k`, expected one of `top_k`, `context_tokens`, `layers`"),
        "{e}"
    );
    // Layers must be among the recorded ones (negative indices from the model's last block).
    let s = parse(&format!(
        "{MINIMAL}analyses:\n  activations: {{layers: [0, -1]}}\n  neurons: {{layers: [3, 1, -5]}}\n"
    ))
    .unwrap();
    assert_eq!(
        s.validate_against(ModelDims::decoder(4, 4, 128))
            .unwrap_err()
            .to_string(),
        "pipelines/x.yaml: analyses.neurons.layers: index -5 is out of range: the model has 4 layers (0..=3, or -4..=-1 from the end)"
    );
    assert_eq!(
        s.validate_against(ModelDims::decoder(5, 4, 128))
            .unwrap_err()
            .to_string(),
        "pipelines/x.yaml: analyses.neurons.layers: layers [3, 1] are not among analyses.activations.layers [0, 4]"
    );
}

/// `analyses.similarity`: its defaults (every recorded source, `tokenlens compare`'s metrics,
/// every pair), and every bad value: an unknown key, `diagonal` pairs, a source the spec does not
/// record, no source at all, empty and repeated lists, numbers out of range.
#[test]
fn similarity_options_and_their_checks() {
    let s = parse(&format!(
        "{MINIMAL}analyses:\n  activations:\n  residuals:\n  similarity:\n"
    ))
    .unwrap();
    let sim = s.analyses.similarity.as_ref().unwrap();
    assert_eq!(*sim, SimilaritySpec::default());
    assert_eq!(
        s.analyses.similarity_sources(),
        [SimilaritySource::Residuals, SimilaritySource::Activations]
    );
    assert_eq!(
        sim.metrics,
        [SimilarityMetric::CkaMinibatch, SimilarityMetric::Cka]
    );
    assert_eq!(sim.pairs, SimilarityPairs::All);
    assert_eq!(
        (sim.minibatch, sim.svcca_dims, sim.memory_mib),
        (256, 20, 2048)
    );
    assert_eq!(
        s.tables(),
        [
            "tokens",
            "generations",
            "activations",
            "residuals",
            "similarity"
        ]
    );
    let s = parse(&format!(
        "{MINIMAL}analyses:\n  residuals:\n  similarity: {{sources: [residuals], metrics: \
         [cka_minibatch, cka], pairs: all, minibatch: 4, svcca_dims: 100000, memory_mib: 16}}\n"
    ))
    .unwrap();
    assert_eq!(
        s.analyses.similarity_sources(),
        [SimilaritySource::Residuals]
    );
    // Only the residuals recorded: the default takes them alone.
    let s = parse(&format!(
        "{MINIMAL}analyses:\n  residuals:\n  similarity:\n"
    ))
    .unwrap();
    assert_eq!(
        s.analyses.similarity_sources(),
        [SimilaritySource::Residuals]
    );

    let e = err(&format!(
        "{MINIMAL}analyses:\n  residuals:\n  similarity: {{metric: [cka]}}\n"
    ));
    assert!(
        e.contains(
            "analyses.similarity: unknown field `metric`, expected one of `sources`, `metrics`, \
             `pairs`, `minibatch`, `svcca_dims`, `memory_mib`"
        ),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}analyses:\n  residuals:\n  similarity: {{metrics: [cka, kca]}}\n"
    ));
    assert!(e.contains("unknown variant `kca`"), "{e}");
    assert_eq!(
        err(&format!(
            "{MINIMAL}analyses:\n  residuals:\n  similarity: {{pairs: diagonal}}\n"
        )),
        "pipelines/x.yaml: analyses.similarity.pairs: `diagonal` pairs each layer with itself \
         within one run (always 1): use `all` (the default; `diagonal` is for `tokenlens compare \
         RUN_A RUN_B`)"
    );
    assert_eq!(
        err(&format!(
            "{MINIMAL}analyses:\n  residuals:\n  similarity: {{sources: [residuals, activations]}}\n"
        )),
        "pipelines/x.yaml: analyses.similarity.sources: `activations` is not recorded: add \
         analyses.activations"
    );
    assert_eq!(
        err(&format!(
            "{MINIMAL}analyses:\n  activations:\n  similarity: {{sources: [residuals]}}\n"
        )),
        "pipelines/x.yaml: analyses.similarity.sources: `residuals` is not recorded: add \
         analyses.residuals"
    );
    assert_eq!(
        err(&format!("{MINIMAL}analyses:\n  similarity:\n")),
        "pipelines/x.yaml: analyses.similarity: reads the residuals or activations table: add \
         analyses.residuals (or analyses.activations)"
    );
    let e = err(&format!(
        "{MINIMAL}analyses:\n  residuals:\n  similarity: {{sources: [], metrics: [], \
         minibatch: 3, svcca_dims: 0, memory_mib: 15}}\n"
    ));
    assert_eq!(
        e.lines().collect::<Vec<_>>(),
        [
            "pipelines/x.yaml: analyses.similarity.sources: list at least one of residuals, \
             activations (or omit it for every one recorded)",
            "pipelines/x.yaml: analyses.similarity.metrics: list at least one of cka_minibatch, \
             cka, cca, svcca, pwcca",
            "pipelines/x.yaml: analyses.similarity.minibatch: must be in 4..=65536, got 3",
            "pipelines/x.yaml: analyses.similarity.svcca_dims: must be in 1..=100000, got 0",
            "pipelines/x.yaml: analyses.similarity.memory_mib: must be in 16..=1048576, got 15",
        ]
    );
    let e = err(&format!(
        "{MINIMAL}analyses:\n  residuals:\n  similarity: {{sources: [residuals, residuals], \
         metrics: [cka, cka], minibatch: 65537, svcca_dims: 100001, memory_mib: 1048577}}\n"
    ));
    assert_eq!(
        e.lines().collect::<Vec<_>>(),
        [
            "pipelines/x.yaml: analyses.similarity.sources: lists a source twice",
            "pipelines/x.yaml: analyses.similarity.metrics: lists a metric twice",
            "pipelines/x.yaml: analyses.similarity.minibatch: must be in 4..=65536, got 65537",
            "pipelines/x.yaml: analyses.similarity.svcca_dims: must be in 1..=100000, got 100001",
            "pipelines/x.yaml: analyses.similarity.memory_mib: must be in 16..=1048576, got \
             1048577",
        ]
    );
}
