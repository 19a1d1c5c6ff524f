//! Pipeline specs: the YAML file that names a model, a prompt dataset, the generation and
//! batching settings, the analyses and the run directory. Owns parsing (errors carry
//! `file:line:column`), defaults, resolution of relative paths, and validation, alone
//! ([`PipelineSpec::load`]) and against a model's dimensions ([`PipelineSpec::validate_against`]).
//!
//! This file holds the spec's top level (model, dataset, generation, batching, output);
//! `analyses.rs` the analyses' options, `interventions.rs` the interventions', `validate.rs` the
//! checks.
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
pub use crate::model::{Compute, WeightDtype};

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
    /// The precision of the weight products: `f32` (default) or `bf16` (`model::Compute`).
    pub compute: Compute,
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
    #[serde(default)]
    compute: Compute,
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
                    compute: Compute::F32,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ModelSpec, A::Error> {
                let m = ModelMapping::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ModelSpec {
                    path: ModelSource::unresolved(&m.path),
                    tokenizer: m.tokenizer,
                    dtype: m.dtype,
                    compute: m.compute,
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
pub(super) fn enabled<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
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

mod analyses;
mod error;
mod interventions;
mod selection;
#[cfg(test)]
mod tests;
mod validate;
mod validate_model;

pub use analyses::*;
pub use error::{Problem, SpecError};
pub use interventions::{
    AblationSpec, AblationValue, InterventionSpec, MeanDiffSpec, SteerSpec, TokenChoice,
};
pub use selection::Selection;
pub use validate::{ModelDims, ranges};
