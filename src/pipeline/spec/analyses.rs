//! The `analyses:` section of a spec: which analyses run and each one's options, with their
//! defaults (parsing only; `validate.rs` checks the values).

use serde::{Deserialize, Serialize};

use super::{Selection, enabled};

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
