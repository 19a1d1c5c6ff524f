//! Loading a spec: reading and parsing the YAML, resolving relative paths against the spec's
//! folder, and checking every value alone ([`PipelineSpec::validate`]); and the tables a spec
//! writes. The checks against a model and the input files are in `validate_model.rs`.

use std::path::{Path, PathBuf};

use super::*;
use crate::model::ModelConfig;
use crate::store::schema::{
    ACTIVATIONS, ALL_TABLES, ATTENTION, ATTENTION_ROLLOUT, GENERATIONS, INTERVENTION_EDITS,
    INTERVENTION_TOKENS, INTERVENTIONS, LENS, LENS_TOPK, NEURON_STATS, NEURON_TOP_CONTEXTS,
    NMF_COMPONENTS, NMF_FACTORS, NMF_SUMMARY, NMF_TOP_CONTEXTS, PAIRS, PATCHING, PREDICTIONS,
    RESIDUALS, SALIENCY, SALIENCY_COMPLETENESS, SIMILARITY, TOKENS, TableDef, WATCH,
};

/// The model dimensions the spec is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelDims {
    pub n_layers: usize,
    pub n_heads: usize,
    /// Context length in tokens (`max_position_embeddings`).
    pub context: usize,
    /// An encoder (bidirectional, no generation): its saliency explains [MASK] predictions.
    pub encoder: bool,
    /// Whether the model has a language-model head (encoders may not).
    pub lm_head: bool,
    /// (hidden size, MLP neurons), for interventions' vectors and neuron ids; None: unchecked.
    pub widths: Option<(usize, usize)>,
}

impl ModelDims {
    /// A decoder with an LM head (what most checks assume).
    pub fn decoder(n_layers: usize, n_heads: usize, context: usize) -> Self {
        ModelDims {
            n_layers,
            n_heads,
            context,
            encoder: false,
            lm_head: true,
            widths: None,
        }
    }
}

impl From<&crate::model::Model> for ModelDims {
    fn from(m: &crate::model::Model) -> Self {
        let c: &ModelConfig = &m.config;
        ModelDims {
            n_layers: c.n_layers,
            n_heads: c.n_heads,
            context: c.max_position_embeddings,
            encoder: c.is_encoder(),
            lm_head: m.has_lm_head(),
            widths: Some((c.hidden_size, c.intermediate_size)),
        }
    }
}

/// Collects problems with their key paths.
#[derive(Default)]
pub(super) struct Problems(Vec<Problem>);

impl Problems {
    pub(super) fn add(&mut self, key: &str, msg: impl Into<String>) {
        self.0.push(Problem {
            key: key.to_string(),
            msg: msg.into(),
        });
    }
    pub(super) fn check(&mut self, ok: bool, key: &str, msg: impl FnOnce() -> String) {
        if !ok {
            self.add(key, msg());
        }
    }
    pub(super) fn into_result(self, path: &Path) -> Result<(), SpecError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(SpecError::Invalid {
                path: path.to_path_buf(),
                problems: self.0,
            })
        }
    }
}

/// The range of every numeric option (docs/pipelines.md, "Ranges"): inclusive bounds. The tops
/// keep a run finite and its memory bounded (integrated gradients' Gauss-Legendre nodes cost
/// O(n_steps^2), every step a forward and backward pass).
pub mod ranges {
    pub const TEMPERATURE: (f64, f64) = (0.0, 100.0);
    pub const BATCH_SIZE: (usize, usize) = (1, 1024);
    pub const BUCKET_WINDOW: (usize, usize) = (1, 1_000_000);
    pub const TOP_K: (usize, usize) = (1, 1000);
    pub const IG_STEPS: (usize, usize) = (1, crate::analysis::saliency::MAX_IG_STEPS);
    /// Patched runs per forward pass.
    pub const PATCH_ROWS: (usize, usize) = (1, 4096);
    pub const CHUNK_TOKENS: (usize, usize) = (1, 65_536);
    pub const NMF_COMPONENTS: (usize, usize) = (1, 1000);
    pub const NMF_MAX_ITER: (usize, usize) = (1, 100_000);
    /// Exclusive below: (0, 1].
    pub const NMF_TOLERANCE_MAX: f64 = 1.0;
    pub const NMF_TOP_CONTEXTS: (usize, usize) = (0, 1000);
    pub const NMF_CONTEXT_TOKENS: (usize, usize) = (0, 1000);
    /// Contexts per neuron (`analyses.neurons.top_k`, `tokenlens neurons --top-k`): memory is
    /// 12 bytes per context and neuron of the chosen layers.
    pub const NEURONS_TOP_K: (usize, usize) = (1, 1000);
    pub const NEURONS_CONTEXT_TOKENS: (usize, usize) = (0, 1000);
    /// Rows per minibatch of `cka_minibatch` (`analyses.similarity.minibatch`, `tokenlens
    /// compare --minibatch`): memory is a few batch × batch matrices per layer.
    pub const SIMILARITY_MINIBATCH: (usize, usize) = (4, 65_536);
    /// SVCCA's principal directions per side (`svcca_dims`, `--svcca-dims`).
    pub const SIMILARITY_SVCCA_DIMS: (usize, usize) = (1, 100_000);
    /// MiB for the exact metrics' accumulators (`memory_mib`, `--memory-mib`).
    pub const SIMILARITY_MEMORY_MIB: (usize, usize) = (16, 1_048_576);
}

/// `must be in LO..=HI, got V` unless `v` is in the range.
fn in_range(p: &mut Problems, key: &str, v: usize, (lo, hi): (usize, usize)) {
    p.check((lo..=hi).contains(&v), key, || {
        format!("must be in {lo}..={hi}, got {v}")
    });
}

pub(super) fn no_duplicates<T: PartialEq>(v: &[T]) -> bool {
    v.iter().enumerate().all(|(i, x)| !v[..i].contains(x))
}

impl PipelineSpec {
    /// Reads, parses, resolves and validates a spec file (no other file is touched; see
    /// [`PipelineSpec::check_inputs`]).
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|error| SpecError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Self::from_yaml(&text, path)
    }

    /// Parses, resolves and validates spec text as if read from `path` (which names the file in
    /// errors and is the base of relative paths).
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, SpecError> {
        if text.trim().is_empty() {
            return Err(SpecError::Parse {
                path: path.to_path_buf(),
                location: None,
                msg: "the file is empty; a pipeline needs at least `model`, `dataset` and `output`"
                    .into(),
            });
        }
        let mut spec: PipelineSpec = serde_norway::from_str(text).map_err(|e| {
            let location = e.location().map(|l| (l.line(), l.column()));
            let mut msg = e.to_string();
            // The library writes " at line L column C" (at the end or mid-sentence); we put the
            // location in front instead.
            if let Some((line, col)) = location {
                msg = msg.replace(&format!(" at line {line} column {col}"), "");
                // A tab where YAML expects indentation or a token: say so (the library says
                // "found character that cannot start any token").
                let at = text
                    .lines()
                    .nth(line.saturating_sub(1))
                    .and_then(|l| l.chars().nth(col.saturating_sub(1)));
                if at == Some('\t') {
                    msg = "a tab character; YAML indents with spaces only (replace the tab with \
                           spaces)"
                        .into();
                }
            }
            SpecError::Parse {
                path: path.to_path_buf(),
                location,
                msg,
            }
        })?;
        spec.source = path.to_path_buf();
        spec.resolve_paths();
        spec.validate()?;
        Ok(spec)
    }

    /// The directory relative paths are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        match self.source.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    fn resolve_paths(&mut self) {
        let base = self.base_dir();
        let join = |p: &Path| -> PathBuf {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        if let ModelSource::Path(p) = &self.model.path {
            let local = join(p);
            let s = p.to_string_lossy();
            self.model.path = if !local.exists() && crate::model::hub::looks_like_hub_id(&s) {
                ModelSource::Hub(s.into_owned())
            } else {
                ModelSource::Path(local)
            };
        }
        self.model.tokenizer = self.model.tokenizer.as_deref().map(join);
        self.dataset.path = join(&self.dataset.path);
        self.output.dir = join(&self.output.dir);
        interventions::resolve_paths(&mut self.interventions, join);
    }

    /// Checks every value that can be checked without the model or the files. Lists all problems.
    pub fn validate(&self) -> Result<(), SpecError> {
        let mut p = Problems::default();
        self.check_dataset(&mut p);
        self.check_generation(&mut p);
        self.check_batching(&mut p);
        self.check_analyses(&mut p);
        interventions::check(&self.interventions, self.generation.max_new_tokens, &mut p);
        p.into_result(&self.source)
    }

    fn check_dataset(&self, p: &mut Problems) {
        let ds = &self.dataset;
        if ds.format().is_none() {
            let ext = ds
                .path
                .extension()
                .map(|e| format!("`.{}`", e.to_string_lossy()))
                .unwrap_or_else(|| "no extension".into());
            p.add(
                "dataset.format",
                format!("cannot tell the format from {ext}; set it to jsonl, csv, parquet or txt"),
            );
        }
        if ds.format() == Some(Format::Txt) {
            p.check(ds.text_field.is_none(), "dataset.text_field", || {
                "a txt dataset has one prompt per line and no fields".into()
            });
            p.check(ds.id_field.is_none(), "dataset.id_field", || {
                "a txt dataset has no fields; doc_id is the line's prompt index".into()
            });
        }
        p.check(!ds.text_field().is_empty(), "dataset.text_field", || {
            "must not be empty".into()
        });
        if let Some(id) = &ds.id_field {
            p.check(!id.is_empty(), "dataset.id_field", || {
                "must not be empty".into()
            });
            p.check(id != ds.text_field(), "dataset.id_field", || {
                format!("`{id}` is also the text field")
            });
        }
        p.check(ds.limit != Some(0), "dataset.limit", || {
            "must be at least 1 (omit it to read every prompt)".into()
        });
        let mut used = vec![ds.text_field()];
        used.extend(ds.id_field.as_deref());
        for (field, name) in ds.pair_fields() {
            if ds.format() == Some(Format::Txt) {
                p.add(
                    field.key(),
                    "a txt dataset has one prompt per line and no fields",
                );
            } else if name.is_empty() {
                p.add(field.key(), "must not be empty");
            } else if used.contains(&name) {
                p.add(
                    field.key(),
                    format!("`{name}` is already the text, id or another pair field"),
                );
            }
            used.push(name);
        }
        p.check(
            ds.align == PairAlign::Equal || ds.corrupted_field.is_some(),
            "dataset.align",
            || "aligns a row's clean and corrupted prompts: set dataset.corrupted_field".into(),
        );
        p.check(
            ds.answer_field.is_some() == ds.foil_field.is_some(),
            if ds.answer_field.is_some() {
                "dataset.foil_field"
            } else {
                "dataset.answer_field"
            },
            || "answer_field and foil_field go together: a contrast needs both".into(),
        );
    }

    fn check_generation(&self, p: &mut Problems) {
        let g = &self.generation;
        let greedy = g.temperature == 0.0;
        let (lo, hi) = ranges::TEMPERATURE;
        p.check(
            g.temperature.is_finite() && (lo..=hi).contains(&g.temperature),
            "generation.temperature",
            || format!("must be in {lo}..={hi} (0 = greedy), got {}", g.temperature),
        );
        if let Some(k) = g.top_k {
            p.check(k >= 1, "generation.top_k", || "must be at least 1".into());
            p.check(!greedy, "generation.top_k", || {
                "has no effect with greedy decoding; set temperature > 0 to sample".into()
            });
        }
        if let Some(tp) = g.top_p {
            p.check(tp > 0.0 && tp <= 1.0, "generation.top_p", || {
                format!("must be in (0, 1], got {tp}")
            });
            p.check(!greedy, "generation.top_p", || {
                "has no effect with greedy decoding; set temperature > 0 to sample".into()
            });
        }
    }

    fn check_batching(&self, p: &mut Problems) {
        let b = &self.batching;
        in_range(p, "batching.batch_size", b.batch_size, ranges::BATCH_SIZE);
        p.check(b.max_tokens != Some(0), "batching.max_tokens", || {
            "must be at least 1 (omit it for no limit)".into()
        });
        in_range(
            p,
            "batching.bucket_window",
            b.bucket_window,
            ranges::BUCKET_WINDOW,
        );
        p.check(
            !b.bucket_by_length || b.bucket_window >= b.batch_size,
            "batching.bucket_window",
            || {
                format!(
                    "must be at least batch_size ({}), got {}",
                    b.batch_size, b.bucket_window
                )
            },
        );
    }

    /// `analyses.saliency.targets`, `baseline` and `baseline_token` against the dataset's
    /// fields.
    fn check_saliency_targets(&self, s: &SaliencySpec, p: &mut Problems) {
        let ds = &self.dataset;
        p.check(!s.targets.is_empty(), "analyses.saliency.targets", || {
            "list at least one of generated, logit_diff, prob_diff, log_prob_ratio".into()
        });
        p.check(
            no_duplicates(&s.targets),
            "analyses.saliency.targets",
            || "lists a target twice".into(),
        );
        if let Some(t) = s.targets.iter().find(|t| **t != SaliencyTarget::Generated) {
            p.check(ds.has_contrast(), "analyses.saliency.targets", || {
                format!(
                    "`{}` contrasts each row's answer with its foil: set dataset.answer_field \
                     and dataset.foil_field",
                    t.name()
                )
            });
        }
        let ig = s.methods.contains(&SaliencyMethod::IntegratedGradients);
        p.check(
            ig || s.baseline == BaselineSpec::Zero,
            "analyses.saliency.baseline",
            || {
                "only integrated_gradients uses a baseline: add it to methods or remove \
                 baseline"
                    .into()
            },
        );
        p.check(
            s.baseline != BaselineSpec::Corrupted || ds.corrupted_field.is_some(),
            "analyses.saliency.baseline",
            || "`corrupted` needs each row's corrupted prompt: set dataset.corrupted_field".into(),
        );
        match (&s.baseline_token, s.baseline) {
            (None, BaselineSpec::Token) => p.add(
                "analyses.saliency.baseline_token",
                "`baseline: token` needs the token (e.g. baseline_token: \"<pad>\")",
            ),
            (Some(t), BaselineSpec::Token) => {
                p.check(!t.is_empty(), "analyses.saliency.baseline_token", || {
                    "must not be empty".into()
                })
            }
            (Some(_), other) => p.add(
                "analyses.saliency.baseline_token",
                format!(
                    "only used with `baseline: token` (baseline is `{}`)",
                    other.name()
                ),
            ),
            (None, _) => {}
        }
    }

    fn check_analyses(&self, p: &mut Problems) {
        let a = &self.analyses;
        if let Some(pt) = &a.patching {
            let ds = &self.dataset;
            p.check(
                ds.corrupted_field.is_some() && ds.has_contrast(),
                "analyses.patching",
                || {
                    "patches between each row's prompt and its corrupted prompt and reads its \
                     answer and foil: set dataset.corrupted_field, answer_field and foil_field"
                        .into()
                },
            );
            p.check(!pt.methods.is_empty(), "analyses.patching.methods", || {
                "list at least one of exact, attribution".into()
            });
            p.check(
                no_duplicates(&pt.methods),
                "analyses.patching.methods",
                || "lists a method twice".into(),
            );
            p.check(
                !pt.components.is_empty(),
                "analyses.patching.components",
                || "list at least one of resid_pre, attn_head, attn_head_pos, mlp_out".into(),
            );
            p.check(
                no_duplicates(&pt.components),
                "analyses.patching.components",
                || "lists a component twice".into(),
            );
            p.check(
                !pt.directions.is_empty(),
                "analyses.patching.directions",
                || "list at least one of denoise, noise".into(),
            );
            p.check(
                no_duplicates(&pt.directions),
                "analyses.patching.directions",
                || "lists a direction twice".into(),
            );
            in_range(
                p,
                "analyses.patching.batch_rows",
                pt.batch_rows,
                ranges::PATCH_ROWS,
            );
        }
        let generates = self.generation.max_new_tokens >= 1;
        if let Some(pr) = &a.predictions {
            in_range(p, "analyses.predictions.top_k", pr.top_k, ranges::TOP_K);
        }
        if let Some(s) = &a.saliency {
            p.check(!s.methods.is_empty(), "analyses.saliency.methods", || {
                "list at least one of gradient, grad_x_input, integrated_gradients".into()
            });
            p.check(
                no_duplicates(&s.methods),
                "analyses.saliency.methods",
                || "lists a method twice".into(),
            );
            in_range(p, "analyses.saliency.n_steps", s.n_steps, ranges::IG_STEPS);
            p.check(
                s.rule != IgRule::Trapezoid || s.n_steps >= 2,
                "analyses.saliency.n_steps",
                || "the trapezoid rule needs at least 2 steps".into(),
            );
            if let Some(t) = s.ig_tolerance {
                p.check(
                    t > 0.0 && t <= 1.0,
                    "analyses.saliency.ig_tolerance",
                    || format!("must be in (0, 1], got {t}"),
                );
                p.check(
                    s.rule != IgRule::Trapezoid,
                    "analyses.saliency.rule",
                    || {
                        "adaptive integrated gradients (ig_tolerance) uses its own nested rule \
                         (docs/saliency.md): remove `rule: trapezoid` or `ig_tolerance`"
                            .into()
                    },
                );
            }
            if let Some(c) = s.chunk_tokens {
                in_range(p, "analyses.saliency.chunk_tokens", c, ranges::CHUNK_TOKENS);
            }
            self.check_saliency_targets(s, p);
        }
        if let Some(l) = &a.lens {
            in_range(p, "analyses.lens.top_k", l.top_k, ranges::TOP_K);
        }
        if let Some(w) = &a.watch {
            p.check(!w.tokens.is_empty(), "analyses.watch.tokens", || {
                "list at least one token".into()
            });
            p.check(
                w.tokens.iter().all(|t| !t.is_empty()),
                "analyses.watch.tokens",
                || "an empty string is not a token".into(),
            );
            p.check(no_duplicates(&w.tokens), "analyses.watch.tokens", || {
                "lists a token twice".into()
            });
        }
        let selection = |p: &mut Problems, key: &str, s: &Selection| {
            if let Selection::List(v) = s {
                p.check(!v.is_empty(), key, || {
                    "list at least one index, or `all`".into()
                });
                p.check(no_duplicates(v), key, || "lists an index twice".into());
            }
        };
        let positions = |p: &mut Problems, key: &str, pos: Positions| {
            p.check(pos != Positions::Generated || generates, key, || {
                "`generated` needs generation.max_new_tokens >= 1".into()
            });
        };
        if let Some(act) = &a.activations {
            selection(p, "analyses.activations.layers", &act.layers);
            positions(p, "analyses.activations.positions", act.positions);
        }
        if let Some(r) = &a.residuals {
            selection(p, "analyses.residuals.layers", &r.layers);
            positions(p, "analyses.residuals.positions", r.positions);
        }
        if let Some(at) = &a.attention {
            selection(p, "analyses.attention.layers", &at.layers);
            selection(p, "analyses.attention.heads", &at.heads);
        }
        if let Some(n) = &a.nmf {
            in_range(
                p,
                "analyses.nmf.n_components",
                n.n_components,
                ranges::NMF_COMPONENTS,
            );
            selection(p, "analyses.nmf.layers", &n.layers);
            positions(p, "analyses.nmf.positions", n.positions);
            in_range(p, "analyses.nmf.max_iter", n.max_iter, ranges::NMF_MAX_ITER);
            let top = ranges::NMF_TOLERANCE_MAX;
            p.check(
                n.tolerance.is_finite() && n.tolerance > 0.0 && n.tolerance <= top,
                "analyses.nmf.tolerance",
                || format!("must be in (0, {top}], got {}", n.tolerance),
            );
            in_range(
                p,
                "analyses.nmf.top_contexts",
                n.top_contexts,
                ranges::NMF_TOP_CONTEXTS,
            );
            in_range(
                p,
                "analyses.nmf.context_tokens",
                n.context_tokens,
                ranges::NMF_CONTEXT_TOKENS,
            );
        }
        if let Some(n) = &a.neurons {
            in_range(p, "analyses.neurons.top_k", n.top_k, ranges::NEURONS_TOP_K);
            in_range(
                p,
                "analyses.neurons.context_tokens",
                n.context_tokens,
                ranges::NEURONS_CONTEXT_TOKENS,
            );
            selection(p, "analyses.neurons.layers", &n.layers);
            p.check(a.activations.is_some(), "analyses.neurons", || {
                "reads the activations table: add analyses.activations (its layers)".into()
            });
        }
        if let Some(sim) = &a.similarity {
            Self::check_similarity(a, sim, p);
        }
    }

    /// `analyses.similarity`: its sources recorded, metrics listed once, pairs `all`, numbers
    /// in range.
    fn check_similarity(a: &AnalysesSpec, sim: &SimilaritySpec, p: &mut Problems) {
        let key = "analyses.similarity.sources";
        match &sim.sources {
            Some(v) => {
                p.check(!v.is_empty(), key, || {
                    "list at least one of residuals, activations (or omit it for every one \
                     recorded)"
                        .into()
                });
                p.check(no_duplicates(v), key, || "lists a source twice".into());
                for s in v {
                    let recorded = match s {
                        SimilaritySource::Residuals => a.residuals.is_some(),
                        SimilaritySource::Activations => a.activations.is_some(),
                    };
                    p.check(recorded, key, || {
                        format!(
                            "`{}` is not recorded: add analyses.{}",
                            s.as_str(),
                            s.as_str()
                        )
                    });
                }
            }
            None => p.check(
                a.residuals.is_some() || a.activations.is_some(),
                "analyses.similarity",
                || {
                    "reads the residuals or activations table: add analyses.residuals (or \
                     analyses.activations)"
                        .into()
                },
            ),
        }
        let key = "analyses.similarity.metrics";
        p.check(!sim.metrics.is_empty(), key, || {
            "list at least one of cka_minibatch, cka, cca, svcca, pwcca".into()
        });
        p.check(no_duplicates(&sim.metrics), key, || {
            "lists a metric twice".into()
        });
        p.check(
            sim.pairs == SimilarityPairs::All,
            "analyses.similarity.pairs",
            || {
                "`diagonal` pairs each layer with itself within one run (always 1): use `all` \
                 (the default; `diagonal` is for `tokenlens compare RUN_A RUN_B`)"
                    .into()
            },
        );
        in_range(
            p,
            "analyses.similarity.minibatch",
            sim.minibatch,
            ranges::SIMILARITY_MINIBATCH,
        );
        in_range(
            p,
            "analyses.similarity.svcca_dims",
            sim.svcca_dims,
            ranges::SIMILARITY_SVCCA_DIMS,
        );
        in_range(
            p,
            "analyses.similarity.memory_mib",
            sim.memory_mib,
            ranges::SIMILARITY_MEMORY_MIB,
        );
    }

    /// Names of the tables this pipeline writes, in `store::schema` order.
    pub fn tables(&self) -> Vec<&'static str> {
        let a = &self.analyses;
        let ig = |s: &SaliencySpec| s.methods.contains(&SaliencyMethod::IntegratedGradients);
        let nmf = a.nmf.is_some();
        let neurons = a.neurons.is_some();
        let iv = !self.interventions.is_empty();
        let written: [(&TableDef, bool); 24] = [
            (&TOKENS, true),
            (&GENERATIONS, true),
            (&PAIRS, !self.dataset.pair_fields().is_empty()),
            (&PREDICTIONS, a.predictions.is_some()),
            (&LENS, a.lens.is_some()),
            (&LENS_TOPK, a.lens.is_some()),
            (&WATCH, a.watch.is_some()),
            (&SALIENCY, a.saliency.is_some()),
            (&SALIENCY_COMPLETENESS, a.saliency.as_ref().is_some_and(ig)),
            (&PATCHING, a.patching.is_some()),
            (&INTERVENTIONS, iv),
            (&INTERVENTION_TOKENS, iv),
            (&INTERVENTION_EDITS, iv),
            (&ACTIVATIONS, a.activations.is_some()),
            (&RESIDUALS, a.residuals.is_some()),
            (&ATTENTION, a.attention.is_some()),
            (
                &ATTENTION_ROLLOUT,
                a.attention.as_ref().is_some_and(|x| x.rollout),
            ),
            (&NMF_COMPONENTS, nmf),
            (&NMF_FACTORS, nmf),
            (&NMF_SUMMARY, nmf),
            (&NMF_TOP_CONTEXTS, nmf),
            (&NEURON_TOP_CONTEXTS, neurons),
            (&NEURON_STATS, neurons),
            (&SIMILARITY, a.similarity.is_some()),
        ];
        ALL_TABLES
            .iter()
            .filter(|t| written.iter().any(|(d, on)| d == *t && *on))
            .map(|t| t.name)
            .collect()
    }
}
