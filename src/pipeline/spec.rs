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
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::dataset::Format;
use crate::model::ModelConfig;

/// Errors of loading and validating a pipeline spec. `path` is the spec file as given.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Not valid YAML, or not the structure of a spec: unknown key, missing key, mistyped value.
    #[error("{}", parse_message(path, *location, msg))]
    Parse {
        path: PathBuf,
        /// 1-based line and column, when the YAML library knows them.
        location: Option<(usize, usize)>,
        msg: String,
    },
    /// Well-formed, but some values are out of range or contradict each other (all are listed).
    #[error("{}", problems_message(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// One semantic problem: the key path (`analyses.saliency.n_steps`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub msg: String,
}

fn parse_message(path: &Path, location: Option<(usize, usize)>, msg: &str) -> String {
    match location {
        Some((line, col)) => format!("{}:{line}:{col}: {msg}", path.display()),
        None => format!("{}: {msg}", path.display()),
    }
}

fn problems_message(path: &Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}: {}", path.display(), p.key, p.msg))
        .collect::<Vec<_>>()
        .join("\n")
}

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
    /// Compute dtype. Default and only value so far: `f32` (weights of any stored dtype are
    /// converted to f32 at load).
    pub dtype: ComputeDtype,
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
}

impl ModelSource {
    /// The path or id to hand to `Model::load`.
    pub fn load_path(&self) -> PathBuf {
        match self {
            ModelSource::Default => crate::model::default_model_path(),
            ModelSource::Path(p) => p.clone(),
            ModelSource::Hub(id) => PathBuf::from(id),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComputeDtype {
    #[default]
    F32,
}

/// The mapping form of `model:`; its `path` is still unresolved.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelMapping {
    path: String,
    #[serde(default)]
    tokenizer: Option<PathBuf>,
    #[serde(default)]
    dtype: ComputeDtype,
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
                    dtype: ComputeDtype::F32,
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
            limit: None,
            too_long: TooLong::Error,
        }
    }

    /// The text field or column name (`text` unless set).
    pub fn text_field(&self) -> &str {
        self.text_field.as_deref().unwrap_or("text")
    }

    /// The format: as given, else from the file extension.
    pub fn format(&self) -> Option<Format> {
        self.format.or_else(|| Format::from_path(&self.path))
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
    pub attention: Option<AttentionSpec>,
    #[serde(default, deserialize_with = "enabled")]
    pub nmf: Option<NmfSpec>,
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

/// Input saliency of every generated token (tables `saliency`, `saliency_completeness`); see
/// docs/saliency.md.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SaliencySpec {
    /// `gradient`, `grad_x_input`, `integrated_gradients` (alias `ig`). Default:
    /// `[integrated_gradients]`.
    pub methods: Vec<SaliencyMethod>,
    /// Integrated-gradients steps. Default: 50.
    pub n_steps: usize,
    /// Integrated-gradients quadrature: `gauss_legendre` (default) or `trapezoid`.
    pub rule: IgRule,
    /// Padded tokens per forward/backward chunk (bounds memory, ~3 MB per token). Default: 512.
    pub chunk_tokens: usize,
}

impl Default for SaliencySpec {
    fn default() -> Self {
        SaliencySpec {
            methods: vec![SaliencyMethod::IntegratedGradients],
            n_steps: 50,
            rule: IgRule::GaussLegendre,
            chunk_tokens: 512,
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

/// `all` or a list of indices (layers or heads); negative indices count from the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    List(Vec<i64>),
}

impl Serialize for Selection {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Selection::All => s.serialize_str("all"),
            Selection::List(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Selection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Selection;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`all` or a list of indices")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Selection, E> {
                if s == "all" {
                    Ok(Selection::All)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(s), &self))
                }
            }
            fn visit_i64<E: de::Error>(self, i: i64) -> Result<Selection, E> {
                Ok(Selection::List(vec![i]))
            }
            fn visit_u64<E: de::Error>(self, i: u64) -> Result<Selection, E> {
                i64::try_from(i)
                    .map(|i| Selection::List(vec![i]))
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(i), &self))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Selection, A::Error> {
                let mut v = Vec::new();
                while let Some(i) = seq.next_element::<i64>()? {
                    v.push(i);
                }
                Ok(Selection::List(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl Selection {
    /// The selected indices in 0..n, in the order given (`all`: 0..n). Negative indices count
    /// from the end. Errors name the first index out of range.
    pub fn resolve(&self, n: usize) -> Result<Vec<usize>, String> {
        match self {
            Selection::All => Ok((0..n).collect()),
            Selection::List(v) => v
                .iter()
                .map(|&i| {
                    let j = if i < 0 { i + n as i64 } else { i };
                    if (0..n as i64).contains(&j) {
                        Ok(j as usize)
                    } else {
                        Err(format!("index {i} is out of range"))
                    }
                })
                .collect(),
        }
    }
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

/// The model dimensions the spec is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelDims {
    pub n_layers: usize,
    pub n_heads: usize,
    /// Context length in tokens (`max_position_embeddings`).
    pub context: usize,
}

impl From<&ModelConfig> for ModelDims {
    fn from(c: &ModelConfig) -> Self {
        ModelDims {
            n_layers: c.n_layers,
            n_heads: c.n_heads,
            context: c.max_position_embeddings,
        }
    }
}

/// Collects problems with their key paths.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: &str, msg: impl Into<String>) {
        self.0.push(Problem {
            key: key.to_string(),
            msg: msg.into(),
        });
    }
    fn check(&mut self, ok: bool, key: &str, msg: impl FnOnce() -> String) {
        if !ok {
            self.add(key, msg());
        }
    }
    fn into_result(self, path: &Path) -> Result<(), SpecError> {
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

fn no_duplicates<T: PartialEq>(v: &[T]) -> bool {
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
            // The library appends " at line L column C"; we put the location in front instead.
            if let Some((line, col)) = location
                && let Some(m) = msg.strip_suffix(&format!(" at line {line} column {col}"))
            {
                msg = m.to_string();
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
    }

    /// Checks every value that can be checked without the model or the files. Lists all problems.
    pub fn validate(&self) -> Result<(), SpecError> {
        let mut p = Problems::default();
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

        let g = &self.generation;
        let greedy = g.temperature == 0.0;
        p.check(
            g.temperature.is_finite() && g.temperature >= 0.0,
            "generation.temperature",
            || format!("must be >= 0 (0 = greedy), got {}", g.temperature),
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

        let b = &self.batching;
        p.check(b.batch_size >= 1, "batching.batch_size", || {
            "must be at least 1".into()
        });
        p.check(b.max_tokens != Some(0), "batching.max_tokens", || {
            "must be at least 1 (omit it for no limit)".into()
        });
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

        let a = &self.analyses;
        let generates = g.max_new_tokens >= 1;
        if let Some(pr) = &a.predictions {
            p.check(pr.top_k >= 1, "analyses.predictions.top_k", || {
                "must be at least 1".into()
            });
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
            p.check(s.n_steps >= 1, "analyses.saliency.n_steps", || {
                format!("must be at least 1, got {}", s.n_steps)
            });
            p.check(
                s.rule != IgRule::Trapezoid || s.n_steps >= 2,
                "analyses.saliency.n_steps",
                || "the trapezoid rule needs at least 2 steps".into(),
            );
            p.check(
                s.chunk_tokens >= 1,
                "analyses.saliency.chunk_tokens",
                || "must be at least 1".into(),
            );
            p.check(generates, "analyses.saliency", || {
                "explains generated tokens: set generation.max_new_tokens >= 1".into()
            });
        }
        if let Some(l) = &a.lens {
            p.check(l.top_k >= 1, "analyses.lens.top_k", || {
                "must be at least 1".into()
            });
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
            selection(&mut p, "analyses.activations.layers", &act.layers);
            positions(&mut p, "analyses.activations.positions", act.positions);
        }
        if let Some(at) = &a.attention {
            selection(&mut p, "analyses.attention.layers", &at.layers);
            selection(&mut p, "analyses.attention.heads", &at.heads);
        }
        if let Some(n) = &a.nmf {
            p.check(n.n_components >= 1, "analyses.nmf.n_components", || {
                "must be at least 1".into()
            });
            selection(&mut p, "analyses.nmf.layers", &n.layers);
            positions(&mut p, "analyses.nmf.positions", n.positions);
            p.check(n.max_iter >= 1, "analyses.nmf.max_iter", || {
                "must be at least 1".into()
            });
            p.check(
                n.tolerance.is_finite() && n.tolerance > 0.0,
                "analyses.nmf.tolerance",
                || format!("must be > 0, got {}", n.tolerance),
            );
        }
        p.into_result(&self.source)
    }

    /// Checks what needs the model's dimensions: layer and head indices in range, and room in the
    /// context for generation. Lists all problems.
    pub fn validate_against(&self, dims: ModelDims) -> Result<(), SpecError> {
        let mut p = Problems::default();
        let mut check = |key: &str, s: &Selection, n: usize, what: &str| match s.resolve(n) {
            Err(e) => p.add(
                key,
                format!(
                    "{e}: the model has {n} {what} (0..={}, or -{n}..=-1 from the end)",
                    n - 1
                ),
            ),
            Ok(v) if !no_duplicates(&v) => p.add(
                key,
                "selects an index twice (negative indices count from the end)",
            ),
            Ok(_) => {}
        };
        let a = &self.analyses;
        if let Some(act) = &a.activations {
            check(
                "analyses.activations.layers",
                &act.layers,
                dims.n_layers,
                "layers",
            );
        }
        if let Some(at) = &a.attention {
            check(
                "analyses.attention.layers",
                &at.layers,
                dims.n_layers,
                "layers",
            );
            check("analyses.attention.heads", &at.heads, dims.n_heads, "heads");
        }
        if let Some(n) = &a.nmf {
            check("analyses.nmf.layers", &n.layers, dims.n_layers, "layers");
        }
        let g = &self.generation;
        p.check(
            g.max_new_tokens < dims.context,
            "generation.max_new_tokens",
            || {
                format!(
                    "{} leaves no room for a prompt in the model's context of {} tokens",
                    g.max_new_tokens, dims.context
                )
            },
        );
        p.into_result(&self.source)
    }

    /// Checks the watched tokens against the model's tokenizer: each must be exactly one token.
    /// `encode` tokenizes without special tokens.
    pub fn validate_watch_tokens<E: fmt::Display>(
        &self,
        encode: impl Fn(&str) -> Result<Vec<u32>, E>,
    ) -> Result<(), SpecError> {
        let mut p = Problems::default();
        if let Some(w) = &self.analyses.watch {
            for t in &w.tokens {
                match encode(t) {
                    Ok(ids) if ids.len() == 1 => {}
                    Ok(ids) => p.add(
                        "analyses.watch.tokens",
                        format!("{t:?} is {} tokens {ids:?}, not one", ids.len()),
                    ),
                    Err(e) => p.add("analyses.watch.tokens", format!("{t:?}: {e}")),
                }
            }
        }
        p.into_result(&self.source)
    }

    /// Checks that the files the run reads exist: the dataset, a tokenizer override, and with
    /// `model` a local model or the default model (hub ids are not looked up).
    pub fn check_inputs(&self, model: bool) -> Result<(), SpecError> {
        let mut p = Problems::default();
        let ds = &self.dataset.path;
        p.check(ds.is_file(), "dataset.path", || {
            if ds.exists() {
                format!("{} is not a file", ds.display())
            } else {
                format!("{}: no such file", ds.display())
            }
        });
        match &self.model.path {
            _ if !model => {}
            ModelSource::Default => {
                let d = crate::model::default_model_path();
                p.check(d.exists(), "model", || {
                    format!(
                        "the default model is not at {}; run scripts/fetch-model.sh to fetch it",
                        d.display()
                    )
                });
            }
            ModelSource::Path(m) => p.check(m.exists(), "model", || {
                format!("{}: no such file or directory", m.display())
            }),
            ModelSource::Hub(_) => {}
        }
        if let Some(t) = &self.model.tokenizer {
            p.check(t.is_file(), "model.tokenizer", || {
                format!("{}: no such file", t.display())
            });
        }
        p.into_result(&self.source)
    }

    /// Names of the tables this pipeline writes, in `store::schema` order.
    pub fn tables(&self) -> Vec<&'static str> {
        let a = &self.analyses;
        let mut t = vec!["tokens", "generations"];
        if a.predictions.is_some() {
            t.push("predictions");
        }
        if a.lens.is_some() {
            t.extend(["lens", "lens_topk"]);
        }
        if a.watch.is_some() {
            t.push("watch");
        }
        if let Some(s) = &a.saliency {
            t.push("saliency");
            if s.methods.contains(&SaliencyMethod::IntegratedGradients) {
                t.push("saliency_completeness");
            }
        }
        if a.activations.is_some() {
            t.push("activations");
        }
        if let Some(at) = &a.attention {
            t.push("attention");
            if at.rollout {
                t.push("attention_rollout");
            }
        }
        if a.nmf.is_some() {
            t.extend([
                "nmf_components",
                "nmf_factors",
                "nmf_summary",
                "nmf_top_contexts",
            ]);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(s.model.dtype, ComputeDtype::F32);
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
            "pipelines/x.yaml:5:1: found unexpected end of stream at line 5 column 1, while \
             scanning a quoted scalar at line 3 column 9"
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
        let e = PipelineSpec::load(Path::new("/no/such/spec.yaml"))
            .unwrap_err()
            .to_string();
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
            "pipelines/x.yaml: batching.batch_size: must be at least 1",
            "pipelines/x.yaml: analyses.saliency.methods: list at least one of gradient, grad_x_input, integrated_gradients",
            "pipelines/x.yaml: analyses.saliency.n_steps: must be at least 1, got 0",
            "pipelines/x.yaml: analyses.saliency: explains generated tokens: set generation.max_new_tokens >= 1",
            "pipelines/x.yaml: analyses.watch.tokens: list at least one token",
            "pipelines/x.yaml: analyses.attention.layers: lists an index twice",
            "pipelines/x.yaml: analyses.nmf.positions: `generated` needs generation.max_new_tokens >= 1",
            "pipelines/x.yaml: analyses.nmf.tolerance: must be > 0, got 0",
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
        let dims = ModelDims {
            n_layers: 4,
            n_heads: 4,
            context: 128,
        };
        let e = s.validate_against(dims).unwrap_err().to_string();
        assert_eq!(
            e,
            "pipelines/x.yaml: analyses.attention.layers: index 4 is out of range: the model has 4 layers (0..=3, or -4..=-1 from the end)\n\
             pipelines/x.yaml: analyses.attention.heads: index -5 is out of range: the model has 4 heads (0..=3, or -4..=-1 from the end)\n\
             pipelines/x.yaml: generation.max_new_tokens: 128 leaves no room for a prompt in the model's context of 128 tokens"
        );
        let five = ModelDims {
            n_layers: 5,
            n_heads: 5,
            context: 2048,
        };
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
            s.validate_watch_tokens(encode).unwrap_err().to_string(),
            "pipelines/x.yaml: analyses.watch.tokens: \" Parisian\" is 2 tokens [7, 9], not one"
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
        );
        assert_eq!(s.tables().len(), crate::store::schema::ALL_TABLES.len());
        assert!(s.dataset.path.is_file(), "{}", s.dataset.path.display());
        // SmolLM2-135M: 30 layers, 9 heads, 8192 tokens of context.
        s.validate_against(ModelDims {
            n_layers: 30,
            n_heads: 9,
            context: 8192,
        })
        .unwrap();
    }
}
