//! Pipeline specs: the YAML file that names a model, a prompt dataset, the generation and
//! batching settings, the analyses and the run directory. Owns parsing (errors carry
//! `file:line:column`), defaults, resolution of relative paths, and validation, alone
//! ([`PipelineSpec::load`]) and against a model's dimensions ([`PipelineSpec::validate_against`]).
//!
//! Every struct rejects unknown keys. Relative paths (`model`, `model.tokenizer`, `dataset.path`,
//! `output.dir`) are resolved against the directory of the YAML file, not the current directory,
//! so a spec means the same thing wherever it is run from; no `~` or `$VAR` expansion is done.
//!
//! YAML library: `serde_norway`, a maintained fork of the deprecated `serde_yaml` (same API and
//! messages). Checked against `serde_yaml_ng` and `serde-saphyr`: all three report line and column
//! for syntax errors, unknown keys and mistyped values, but `serde_norway` (like `serde_yaml_ng`,
//! which has seen fewer releases) also names the key path and both types
//! (`generation.top_p: invalid type: string "abc", expected f64`), where `serde-saphyr` says only
//! `invalid floating point` without the key, accepts `yes` as `true`, and needs Rust 1.89 (this
//! crate supports 1.88). `serde-saphyr` is the better-maintained, libyaml-free crate and would be the
//! one to move to if its messages improve.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::dataset::Format;
pub use crate::model::WeightDtype;

/// A whole pipeline. After [`PipelineSpec::load`], every path is resolved and the values are
/// checked; checks that need the model are in [`PipelineSpec::validate_against`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Free text, copied to the manifest.
    #[serde(default)]
    pub description: Option<String>,
    pub model: ModelSpec,
    pub dataset: DatasetSpec,
    #[serde(default, deserialize_with = "null_is_default")]
    pub generation: GenerationSpec,
    #[serde(default, deserialize_with = "null_is_default")]
    pub batching: BatchingSpec,
    #[serde(default, deserialize_with = "null_is_default")]
    pub analyses: AnalysesSpec,
    /// Named edits applied while generating; each regenerates every prompt (`interventions`).
    #[serde(default, deserialize_with = "null_is_default")]
    pub interventions: Vec<InterventionSpec>,
    pub output: OutputSpec,
    /// The YAML file this spec was loaded from (as given); not a key of the file.
    #[serde(skip)]
    pub source: PathBuf,
}

/// Which model. In YAML either a string (`model: default`, `model: path/to/model.gguf`,
/// `model: org/name`) or a mapping with the keys below.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSpec {
    /// `default` (the default model, see `model::default_model_path`), a `.gguf` file, an HF
    /// checkpoint directory, or a hub id `org/name` (when no such local path exists).
    pub path: ModelSource,
    /// A `tokenizer.json` to use instead of the checkpoint's own. Default: none.
    pub tokenizer: Option<PathBuf>,
    /// The dtype the weights are held in: `auto` (default: the checkpoint's own), `f32`, `bf16`
    /// or `f16`; activations are f32 whatever it is (see `model::precision`).
    pub dtype: WeightDtype,
}

/// Where the model comes from, after resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSource {
    /// `model: default`: `tokenlens::model::default_model_path()`.
    Default,
    /// A local `.gguf` file or HF directory, resolved against the spec's directory.
    Path(PathBuf),
    /// A Hugging Face hub id `org/name` (no local path of that name exists).
    Hub(String),
    /// `model: fetched:NAME`: a real checkpoint `scripts/fetch-model.sh NAME` caches (`smollm2`,
    /// `gemma3`, `minilm`; see `tokenlens::model::FETCHED_MODELS`).
    Fetched(String),
}

impl ModelSource {
    /// The path or id to hand to `Model::load`.
    pub fn load_path(&self) -> PathBuf {
        match self {
            ModelSource::Default => crate::model::default_model_path(),
            ModelSource::Path(p) => p.clone(),
            ModelSource::Hub(id) => PathBuf::from(id),
            ModelSource::Fetched(name) => {
                crate::model::fetched_model_path(name).unwrap_or_else(|| PathBuf::from(name))
            }
        }
    }
}

/// The mapping form of `model:`; its `path` is still unresolved.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelMapping {
    path: String,
    #[serde(default)]
    tokenizer: Option<PathBuf>,
    #[serde(default)]
    dtype: WeightDtype,
}

impl<'de> Deserialize<'de> for ModelSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ModelSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`default`, a model path or hub id, or a mapping with `path`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ModelSpec, E> {
                Ok(ModelSpec {
                    path: ModelSource::unresolved(s),
                    tokenizer: None,
                    dtype: WeightDtype::Auto,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ModelSpec, A::Error> {
                let m = ModelMapping::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ModelSpec {
                    path: ModelSource::unresolved(&m.path),
                    tokenizer: m.tokenizer,
                    dtype: m.dtype,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl ModelSource {
    /// Before resolution every non-default model is a `Path` holding the text as written.
    fn unresolved(s: &str) -> ModelSource {
        if s == "default" {
            ModelSource::Default
        } else if let Some(name) = s.strip_prefix("fetched:") {
            ModelSource::Fetched(name.to_string())
        } else {
            ModelSource::Path(PathBuf::from(s))
        }
    }
}

/// The prompt dataset, read as a stream (see `pipeline::dataset`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// The file, resolved against the spec's directory.
    pub path: PathBuf,
    /// `jsonl`, `csv`, `parquet` or `txt` (one prompt per line). Default: from the extension
    /// (`.jsonl`/`.ndjson`, `.csv`, `.parquet`/`.pq`, `.txt`).
    #[serde(default)]
    pub format: Option<Format>,
    /// The field (jsonl), column (csv, parquet) holding the prompt. Default: `text`. Not allowed
    /// for txt.
    #[serde(default)]
    pub text_field: Option<String>,
    /// The field or column holding each prompt's id (string or integer), which becomes `doc_id`.
    /// Default: none, and `doc_id` is the prompt's 0-based index in the dataset. Not allowed for
    /// txt.
    #[serde(default)]
    pub id_field: Option<String>,
    /// Paired rows (contrastive saliency, the `corrupted` baseline): the field or column holding
    /// each row's corrupted prompt, which must tokenize to as many tokens as the prompt. Default:
    /// none. Not allowed for txt.
    #[serde(default)]
    pub corrupted_field: Option<String>,
    /// The field or column holding each row's answer: the correct next token after the prompt,
    /// as text with its leading space (`" Mary"`); its first token counts. Default: none. Not
    /// allowed for txt.
    #[serde(default)]
    pub answer_field: Option<String>,
    /// The field or column holding each row's foil: the wrong token the answer is contrasted with
    /// (`" John"`); its first token counts, and must differ from the answer's. Default: none. Not
    /// allowed for txt.
    #[serde(default)]
    pub foil_field: Option<String>,
    /// How a paired row's prompts line up: `equal` (default: they must tokenize to as many
    /// tokens) or `end` (prompts of different lengths are aligned at their last token; patching
    /// runs on the positions both have; the `corrupted` baseline still needs equal lengths).
    #[serde(default)]
    pub align: PairAlign,
    /// Read only the first `limit` prompts. Default: all.
    #[serde(default)]
    pub limit: Option<usize>,
    /// A prompt that does not fit the model's context together with `max_new_tokens`: `error`
    /// (default) stops the run naming the prompt; `truncate` keeps its last tokens that fit.
    #[serde(default)]
    pub too_long: TooLong,
}

impl DatasetSpec {
    /// A spec reading `path` with every default (format from the extension).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DatasetSpec {
            path: path.into(),
            format: None,
            text_field: None,
            id_field: None,
            corrupted_field: None,
            answer_field: None,
            foil_field: None,
            align: PairAlign::Equal,
            limit: None,
            too_long: TooLong::Error,
        }
    }

    /// The text field or column name (`text` unless set).
    pub fn text_field(&self) -> &str {
        self.text_field.as_deref().unwrap_or("text")
    }

    /// The pair fields the spec names, with their YAML key's field.
    pub fn pair_fields(&self) -> Vec<(PairField, &str)> {
        [
            (PairField::Corrupted, &self.corrupted_field),
            (PairField::Answer, &self.answer_field),
            (PairField::Foil, &self.foil_field),
        ]
        .into_iter()
        .filter_map(|(f, name)| name.as_deref().map(|n| (f, n)))
        .collect()
    }

    /// Whether rows carry an answer and a foil (contrastive targets).
    pub fn has_contrast(&self) -> bool {
        self.answer_field.is_some() && self.foil_field.is_some()
    }

    /// The format: as given, else from the file extension.
    pub fn format(&self) -> Option<Format> {
        self.format.or_else(|| Format::from_path(&self.path))
    }
}

/// How a paired row's clean and corrupted prompts line up, position by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PairAlign {
    /// As many tokens each; position p is position p.
    #[default]
    Equal,
    /// Aligned at the last token: clean position p is corrupted position p + (corrupted length
    /// − clean length).
    End,
}

/// A paired row's field besides the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairField {
    Corrupted,
    Answer,
    Foil,
}

impl PairField {
    /// Its YAML key under `dataset`.
    pub fn key(self) -> &'static str {
        match self {
            PairField::Corrupted => "dataset.corrupted_field",
            PairField::Answer => "dataset.answer_field",
            PairField::Foil => "dataset.foil_field",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TooLong {
    #[default]
    Error,
    Truncate,
}

/// How continuations are generated. `temperature: 0` (default) is greedy decoding.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerationSpec {
    /// New tokens per prompt (fewer if EOS comes first and `stop_at_eos`). 0 analyses the
    /// prompts alone. Default: 20.
    pub max_new_tokens: usize,
    /// 0 = greedy (default); > 0 samples from softmax(logits / temperature).
    pub temperature: f64,
    /// Sample among the `top_k` most likely tokens only. Default: no limit.
    pub top_k: Option<usize>,
    /// Nucleus sampling: the smallest set of tokens whose probability reaches `top_p`, in (0, 1].
    /// Default: no limit.
    pub top_p: Option<f64>,
    /// Sampling seed; prompt i uses `seed + i`, so a prompt's sample does not depend on its batch.
    /// Default: 0.
    pub seed: u64,
    /// Stop a prompt at its first EOS token (kept as the last token). Default: true.
    pub stop_at_eos: bool,
}

impl Default for GenerationSpec {
    fn default() -> Self {
        GenerationSpec {
            max_new_tokens: 20,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
            stop_at_eos: true,
        }
    }
}

/// How prompts are grouped into batches.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingSpec {
    /// At most this many prompts per batch. Default: 8.
    pub batch_size: usize,
    /// At most this many padded tokens per batch (rows x longest row, generated tokens included).
    /// Default: no limit.
    pub max_tokens: Option<usize>,
    /// Sort prompts by length within a window before cutting batches, so batches waste little
    /// padding. Output rows are keyed by `doc_id`, so order does not matter. Default: true.
    pub bucket_by_length: bool,
    /// Prompts read ahead and sorted at a time when bucketing (bounds memory). Default: 256.
    pub bucket_window: usize,
}

impl Default for BatchingSpec {
    fn default() -> Self {
        BatchingSpec {
            batch_size: 8,
            max_tokens: None,
            bucket_by_length: true,
            bucket_window: 256,
        }
    }
}

/// The analyses to run; each is off unless its key is present. `tokens` and `generations` are
/// always written. A key with no value (`lens:`) or `true` turns an analysis on with its defaults;
/// `false` turns it off.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysesSpec {
    #[serde(default, deserialize_with = "enabled")]
    pub predictions: Option<PredictionsSpec>,
    #[serde(default, deserialize_with = "enabled")]
    pub saliency: Option<SaliencySpec>,
    #[serde(default, deserialize_with = "enabled")]
    pub lens: Option<LensSpec>,
    #[serde(default, deserialize_with = "enabled")]
    pub watch: Option<WatchSpec>,
    #[serde(default, deserialize_with = "enabled")]
    pub activations: Option<ActivationsSpec>,
    #[serde(default, deserialize_with = "enabled")]
    pub residuals: Option<ResidualsSpec>,
    #[serde(default, deserialize_with = "enabled")]
    pub attention: Option<AttentionSpec>,
    #[serde(default, deserialize_with = "enabled")]
    pub nmf: Option<NmfSpec>,
    #[serde(default, deserialize_with = "enabled")]
    pub neurons: Option<NeuronsSpec>,
    #[serde(default, deserialize_with = "enabled")]
    pub similarity: Option<SimilaritySpec>,
    #[serde(default, deserialize_with = "enabled")]
    pub patching: Option<PatchingSpec>,
}

/// Exact activation patching of paired rows (table `patching`; docs/patching.md): each
/// component's activation of one run replaced by the other run's, and the metric after the
/// prompt. Needs `dataset.corrupted_field`, `answer_field` and `foil_field`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PatchingSpec {
    /// `exact` (a forward pass per patch; default) and/or `attribution` (every patch's first-
    /// order estimate from one forward and backward pass per pair and direction).
    pub methods: Vec<PatchMethod>,
    /// `resid_pre` (a block's input at a position), `attn_head` (a head's output at every
    /// position), `attn_head_pos` (at one position), `mlp_out` (the MLP's output at a position).
    /// Default: `[resid_pre, attn_head, mlp_out]`.
    pub components: Vec<PatchComponent>,
    /// `denoise` (the corrupted run, clean activations patched in; default) and/or `noise` (the
    /// clean run, corrupted activations patched in).
    pub directions: Vec<PatchDirection>,
    /// `logit_diff` (default: logit(answer) − logit(foil)), `prob_diff`, `log_prob_ratio`.
    pub metric: PatchMetric,
    /// Patched runs per forward pass (memory: rows × prompt tokens of activations). Default: 64.
    pub batch_rows: usize,
}

impl Default for PatchingSpec {
    fn default() -> Self {
        PatchingSpec {
            methods: vec![PatchMethod::Exact],
            components: vec![
                PatchComponent::ResidPre,
                PatchComponent::AttnHead,
                PatchComponent::MlpOut,
            ],
            directions: vec![PatchDirection::Denoise],
            metric: PatchMetric::LogitDiff,
            batch_rows: 64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchMethod {
    Exact,
    Attribution,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchComponent {
    ResidPre,
    AttnHead,
    AttnHeadPos,
    MlpOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchDirection {
    Denoise,
    Noise,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchMetric {
    LogitDiff,
    ProbDiff,
    LogProbRatio,
}

/// Top-k next-token predictions at every position (table `predictions`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PredictionsSpec {
    /// Candidates per position. Default: 10.
    pub top_k: usize,
}

impl Default for PredictionsSpec {
    fn default() -> Self {
        PredictionsSpec { top_k: 10 }
    }
}

/// Input saliency of every generated token, or of a contrast between a paired row's answer and
/// foil (tables `saliency`, `saliency_completeness`); see docs/saliency.md.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SaliencySpec {
    /// `gradient`, `grad_x_input`, `integrated_gradients` (alias `ig`). Default:
    /// `[integrated_gradients]`.
    pub methods: Vec<SaliencyMethod>,
    /// What is explained: `generated` (each generated token's probability) and/or contrasts at
    /// the end of each prompt between its answer a and foil b (`dataset.answer_field`,
    /// `foil_field`): `logit_diff` (z[a] - z[b]), `prob_diff` (p[a] - p[b]), `log_prob_ratio`
    /// (log p[a] - log p[b]). Default: `[generated]`.
    pub targets: Vec<SaliencyTarget>,
    /// Integrated gradients' baseline: `zero` (default), `eos` or `bos` (that token's embedding
    /// at every position), `token` (`baseline_token`'s), `mean` (the mean embedding over the
    /// vocabulary), `corrupted` (each row's corrupted prompt, `dataset.corrupted_field`).
    pub baseline: BaselineSpec,
    /// With `baseline: token`: the token, by its text in the vocabulary (`"<pad>"`, `"[UNK]"`)
    /// or a text of exactly one token (`" the"`). Default: none.
    pub baseline_token: Option<String>,
    /// Integrated-gradients steps; with `ig_tolerance`, the most a target may use. Default: 50.
    pub n_steps: usize,
    /// Adaptive integrated gradients: refine each target's nested quadrature (3, 7, 15, 31, ...
    /// nodes, at most `n_steps`) until its completeness error is at most this fraction of
    /// |p(input) - p(baseline)|; in (0, 1]. Default: none (every target takes `n_steps`).
    pub ig_tolerance: Option<f64>,
    /// Integrated-gradients quadrature: `gauss_legendre` (default) or `trapezoid`; fixed steps
    /// only (`ig_tolerance` has its own rule).
    pub rule: IgRule,
    /// Rows (forward tokens plus target-prefix rows) per reverse-pass chunk: bounds memory.
    /// Default: none, chosen from the model's size (`saliency::auto_chunk_tokens`).
    pub chunk_tokens: Option<usize>,
}

impl Default for SaliencySpec {
    fn default() -> Self {
        SaliencySpec {
            methods: vec![SaliencyMethod::IntegratedGradients],
            targets: vec![SaliencyTarget::Generated],
            baseline: BaselineSpec::Zero,
            baseline_token: None,
            n_steps: 50,
            ig_tolerance: None,
            rule: IgRule::GaussLegendre,
            chunk_tokens: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SaliencyMethod {
    Gradient,
    GradXInput,
    #[serde(alias = "ig")]
    IntegratedGradients,
}

impl SaliencyMethod {
    /// The name written to the `method` column.
    pub fn name(self) -> &'static str {
        match self {
            SaliencyMethod::Gradient => "gradient",
            SaliencyMethod::GradXInput => "grad_x_input",
            SaliencyMethod::IntegratedGradients => "integrated_gradients",
        }
    }
}

/// What saliency explains (`analyses.saliency.targets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SaliencyTarget {
    /// Each generated token's probability.
    Generated,
    LogitDiff,
    ProbDiff,
    LogProbRatio,
}

impl SaliencyTarget {
    pub fn name(self) -> &'static str {
        match self {
            SaliencyTarget::Generated => "generated",
            SaliencyTarget::LogitDiff => "logit_diff",
            SaliencyTarget::ProbDiff => "prob_diff",
            SaliencyTarget::LogProbRatio => "log_prob_ratio",
        }
    }
}

/// Integrated gradients' baseline (`analyses.saliency.baseline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineSpec {
    #[default]
    Zero,
    Eos,
    Bos,
    Token,
    Mean,
    Corrupted,
}

impl BaselineSpec {
    pub fn name(self) -> &'static str {
        match self {
            BaselineSpec::Zero => "zero",
            BaselineSpec::Eos => "eos",
            BaselineSpec::Bos => "bos",
            BaselineSpec::Token => "token",
            BaselineSpec::Mean => "mean",
            BaselineSpec::Corrupted => "corrupted",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IgRule {
    #[serde(alias = "gauss-legendre")]
    GaussLegendre,
    Trapezoid,
}

/// The logit lens (tables `lens`, `lens_topk`): at every layer and position, the rank and
/// probability of the token that comes next in the sequence, and the top-k tokens.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LensSpec {
    /// Apply the final norm before the unembedding (the usual logit lens; at the last layer it
    /// gives the model's own logits). `false` projects the raw residual stream, as Ecco does for
    /// intermediate layers. Default: true.
    pub final_norm: bool,
    /// Tokens per layer and position in `lens_topk`. Default: 5.
    pub top_k: usize,
}

impl Default for LensSpec {
    fn default() -> Self {
        LensSpec {
            final_norm: true,
            top_k: 5,
        }
    }
}

/// Rank and probability of chosen tokens at every layer and position (table `watch`), as Ecco's
/// `rankings_watch`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchSpec {
    /// Token strings, each exactly one token of the model's vocabulary (mind the leading space:
    /// `" Paris"`). Required.
    pub tokens: Vec<String>,
    /// As `lens.final_norm`. Default: true.
    pub final_norm: bool,
}

/// MLP neuron activations (table `activations`): the input of each block's MLP output
/// projection, one list of the layer's neurons per (document, position, layer).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActivationsSpec {
    /// `all` (default) or a list of block indices; negative indices count from the end (-1 = last).
    pub layers: Selection,
    /// `f32` (default) or `f16` (half the size; Parquet's FLOAT16 logical type).
    pub dtype: FloatDtype,
    /// `all` (default), `prompt` or `generated` positions.
    pub positions: Positions,
}

impl Default for ActivationsSpec {
    fn default() -> Self {
        ActivationsSpec {
            layers: Selection::All,
            dtype: FloatDtype::F32,
            positions: Positions::All,
        }
    }
}

/// The residual stream (table `residuals`): one list of the hidden size per (document,
/// position, residual index), what `tokenlens compare` reads for layer similarity.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResidualsSpec {
    /// `all` (default) or a list of residual stream indices, 0 (the embeddings) to n_layers (the
    /// last block's output, before the final norm); negative indices count from the end (-1 =
    /// n_layers).
    pub layers: Selection,
    /// `f32` (default) or `f16` (half the size).
    pub dtype: FloatDtype,
    /// `all` (default), `prompt` or `generated` positions.
    pub positions: Positions,
}

impl Default for ResidualsSpec {
    fn default() -> Self {
        ResidualsSpec {
            layers: Selection::All,
            dtype: FloatDtype::F32,
            positions: Positions::All,
        }
    }
}

/// Attention probabilities (tables `attention`, `attention_rollout`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttentionSpec {
    /// `all` (default) or a list of block indices (negative from the end).
    pub layers: Selection,
    /// `all` (default) or a list of head indices (negative from the end).
    pub heads: Selection,
    /// Also write attention rollout (Abnar & Zuidema 2020) through every layer, from the
    /// head-averaged attention of all layers whatever `layers` and `heads` say. Default: false.
    pub rollout: bool,
}

impl Default for AttentionSpec {
    fn default() -> Self {
        AttentionSpec {
            layers: Selection::All,
            heads: Selection::All,
            rollout: false,
        }
    }
}

/// Non-negative matrix factorization of MLP activations over the whole run (tables
/// `nmf_components`, `nmf_factors`, `nmf_summary`, `nmf_top_contexts`), as Ecco's NMF.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NmfSpec {
    /// Factors. Default: 10.
    pub n_components: usize,
    /// Blocks whose neurons are factorized together: `all` (default) or a list.
    pub layers: Selection,
    /// Which positions are the samples: `all` (default), `prompt` or `generated`.
    pub positions: Positions,
    /// Iterations at most. Default: 200.
    pub max_iter: usize,
    /// Stop when the relative error ||X - WH|| / ||X|| improves by less than this between
    /// iterations (relative to the initial error, as scikit-learn checks). Default: 1e-4.
    pub tolerance: f64,
    /// Seed of the random initialization. Default: 0.
    pub seed: u64,
    /// Initialization: `random` (seeded by `seed`), the default and only one so far.
    pub init: NmfInit,
    /// Activations can be negative (GELU, SwiGLU): `clip` (default) sets them to 0, as Ecco does;
    /// `split` factorizes [max(x, 0), max(-x, 0)], doubling the neurons (`sign` column).
    pub negative: NegativeHandling,
    /// Contexts per factor in `nmf_top_contexts`. Default: 10.
    pub top_contexts: usize,
    /// Tokens of text before each top context's position, in its `context`. Default: 10.
    pub context_tokens: usize,
}

impl Default for NmfSpec {
    fn default() -> Self {
        NmfSpec {
            n_components: 10,
            layers: Selection::All,
            positions: Positions::All,
            max_iter: 200,
            tolerance: 1e-4,
            seed: 0,
            init: NmfInit::Random,
            negative: NegativeHandling::Clip,
            top_contexts: 10,
            context_tokens: 10,
        }
    }
}

/// Every recorded MLP neuron's strongest activations over the whole run and its summary
/// statistics (tables `neuron_top_contexts`, `neuron_stats`; docs/neurons.md), read from the
/// `activations` table (so it needs `analyses.activations`) after the run.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NeuronsSpec {
    /// Contexts per neuron in `neuron_top_contexts` (the largest values). Default: 20.
    pub top_k: usize,
    /// Tokens of text before and after each context's position. Default: 8.
    pub context_tokens: usize,
    /// Blocks whose neurons are summarized: `all` (default: every layer the activations table
    /// has) or a list (among `activations.layers`; negative from the model's last block).
    pub layers: Selection,
}

impl Default for NeuronsSpec {
    fn default() -> Self {
        NeuronsSpec {
            top_k: 20,
            context_tokens: 8,
            layers: Selection::All,
        }
    }
}

/// Layer similarity of the run's own layers, each recorded layer against every other (table
/// `similarity`; docs/compare.md), read from the `residuals` and/or `activations` tables after
/// the run: what `tokenlens compare RUN_DIR --out DIR --pairs all` computes, with the same
/// options.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimilaritySpec {
    /// The representations compared: `residuals` and/or `activations`, each recorded by the
    /// spec. Default: every one of them the spec records.
    pub sources: Option<Vec<SimilaritySource>>,
    /// `cka_minibatch` (every layer pair), `cka`, `cca`, `svcca`, `pwcca` (the `pairs`). Default:
    /// `cka_minibatch` and `cka`: within one run every pair is compared, and the CCA family over
    /// all pairs takes minutes (~8 on the quickstart's 31 × 31 residual layers).
    pub metrics: Vec<SimilarityMetric>,
    /// Layer pairs of the exact metrics: `all` (default, and the only choice within one run:
    /// `diagonal` would compare each layer with itself).
    pub pairs: SimilarityPairs,
    /// Rows per batch of `cka_minibatch`. Default: 256.
    pub minibatch: usize,
    /// Principal directions per side kept by SVCCA. Default: 20.
    pub svcca_dims: usize,
    /// MiB the exact metrics' accumulators may hold; more pairs take more passes over the
    /// table. Default: 2048.
    pub memory_mib: usize,
}

impl Default for SimilaritySpec {
    fn default() -> Self {
        SimilaritySpec {
            sources: None,
            metrics: vec![SimilarityMetric::CkaMinibatch, SimilarityMetric::Cka],
            pairs: SimilarityPairs::All,
            minibatch: 256,
            svcca_dims: 20,
            memory_mib: 2048,
        }
    }
}

impl AnalysesSpec {
    /// The representations `analyses.similarity` compares: its `sources`, or by default every
    /// one the spec records (residuals first). Empty without the analysis.
    pub fn similarity_sources(&self) -> Vec<SimilaritySource> {
        match &self.similarity {
            None => vec![],
            Some(SimilaritySpec {
                sources: Some(s), ..
            }) => s.clone(),
            Some(_) => [
                (SimilaritySource::Residuals, self.residuals.is_some()),
                (SimilaritySource::Activations, self.activations.is_some()),
            ]
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(s, _)| s)
            .collect(),
        }
    }
}

/// A representation `analyses.similarity` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SimilaritySource {
    /// The residual stream (table `residuals`).
    Residuals,
    /// MLP activations (table `activations`).
    Activations,
}

impl SimilaritySource {
    pub fn as_str(self) -> &'static str {
        match self {
            SimilaritySource::Residuals => "residuals",
            SimilaritySource::Activations => "activations",
        }
    }
}

/// A layer-similarity metric (the `metric` column's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SimilarityMetric {
    CkaMinibatch,
    Cka,
    Cca,
    Svcca,
    Pwcca,
}

/// Layer pairs of the exact similarity metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SimilarityPairs {
    All,
    /// Accepted by the parser so that validation can say why it is refused.
    Diagonal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FloatDtype {
    F16,
    F32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Positions {
    All,
    Prompt,
    Generated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NmfInit {
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NegativeHandling {
    Clip,
    Split,
}

/// Where the run goes.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// The run directory (manifest.json and one folder per table), resolved against the spec's
    /// directory. Required.
    pub dir: PathBuf,
    /// Replace an existing run directory. Default: false (an existing non-empty directory is an
    /// error).
    #[serde(default)]
    pub overwrite: bool,
}

/// A section written with no value (`analyses:` with everything below commented out) is its
/// defaults.
fn null_is_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `key:` with no value or `true` -> the defaults; `false` -> off; a mapping -> those options.
fn enabled<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    struct V<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de> + Default> Visitor<'de> for V<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a mapping of options, true, false, or nothing")
        }
        fn visit_bool<E: de::Error>(self, on: bool) -> Result<Option<T>, E> {
            Ok(on.then(T::default))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(Some(T::default()))
        }
        fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(Some(T::default()))
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Option<T>, D2::Error> {
            d.deserialize_any(self)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    d.deserialize_any(V(PhantomData))
}

mod error;
mod interventions;
mod selection;
#[cfg(test)]
mod tests;
mod validate;

pub use error::{Problem, SpecError};
pub use interventions::{
    AblationSpec, AblationValue, InterventionSpec, MeanDiffSpec, SteerSpec, TokenChoice,
};
pub use selection::Selection;
pub use validate::{ModelDims, ranges};
