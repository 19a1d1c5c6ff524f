//! The spec turned into the engine's options for every batch ([`Plan`]): generation, the
//! analyses with their layers and heads resolved against the model, and the watched tokens' ids.

use crate::analysis::patching::{Component, Direction, Method as PMethod, PatchOptions};
use crate::analysis::saliency::{Baseline, Method, Metric, Rule, SaliencyOptions};
use crate::model::generate::{Decoding, GenerateOptions};
use crate::model::{LensNorm, Model};
use crate::pipeline::error::{Error, Result};
use crate::pipeline::process::{
    self, ActivationsPlan, AttentionPlan, LensPlan, Plan, SaliencyPlan,
};
use crate::pipeline::spec::{
    BaselineSpec, IgRule, PatchComponent, PatchDirection, PatchMethod, PatchMetric, PipelineSpec,
    Positions, SaliencyMethod, SaliencyTarget, Selection,
};

/// The spec as the engine's options.
pub(super) fn plan(spec: &PipelineSpec, model: &Model, watch: Vec<(String, u32)>) -> Result<Plan> {
    let n = model.config.n_layers;
    let h = model.config.n_heads;
    let sel = |s: &Selection, n: usize, key: &'static str| {
        s.resolve(n).map_err(|msg| Error::Selection {
            spec: spec.source.clone(),
            key,
            msg,
        })
    };
    let g = &spec.generation;
    let a = &spec.analyses;
    let norm = |final_norm: bool| {
        if final_norm {
            LensNorm::FinalNorm
        } else {
            LensNorm::Raw
        }
    };
    let positions = |p: Positions| match p {
        Positions::All => process::PositionSet::All,
        Positions::Prompt => process::PositionSet::Prompt,
        Positions::Generated => process::PositionSet::Generated,
    };
    Ok(Plan {
        generation: GenerateOptions {
            max_new_tokens: g.max_new_tokens,
            decoding: if g.temperature == 0.0 {
                Decoding::Greedy
            } else {
                Decoding::Sample {
                    temperature: g.temperature,
                    top_k: g.top_k,
                    top_p: g.top_p,
                }
            },
            stop_at_eos: g.stop_at_eos,
        },
        predictions: a.predictions.as_ref().map(|p| p.top_k),
        lens: a.lens.as_ref().map(|l| LensPlan {
            norm: norm(l.final_norm),
            top_k: l.top_k,
        }),
        watch_norm: norm(a.watch.as_ref().is_none_or(|w| w.final_norm)),
        watch,
        saliency: match &a.saliency {
            Some(s) => Some(SaliencyPlan {
                generated: s.targets.contains(&SaliencyTarget::Generated),
                contrasts: s
                    .targets
                    .iter()
                    .filter_map(|t| match t {
                        SaliencyTarget::Generated => None,
                        SaliencyTarget::LogitDiff => {
                            Some(Metric::LogitDiff as fn(u32, u32) -> Metric)
                        }
                        SaliencyTarget::ProbDiff => {
                            Some(Metric::ProbDiff as fn(u32, u32) -> Metric)
                        }
                        SaliencyTarget::LogProbRatio => {
                            Some(Metric::LogProbRatio as fn(u32, u32) -> Metric)
                        }
                    })
                    .collect(),
                options: SaliencyOptions {
                    methods: s
                        .methods
                        .iter()
                        .map(|m| match m {
                            SaliencyMethod::Gradient => Method::Gradient,
                            SaliencyMethod::GradXInput => Method::GradXInput,
                            SaliencyMethod::IntegratedGradients => Method::IntegratedGradients,
                        })
                        .collect(),
                    n_steps: s.n_steps,
                    rule: match s.rule {
                        IgRule::GaussLegendre => Rule::GaussLegendre,
                        IgRule::Trapezoid => Rule::Trapezoid,
                    },
                    ig_tolerance: s.ig_tolerance,
                    chunk_tokens: s
                        .chunk_tokens
                        .unwrap_or_else(|| crate::analysis::saliency::auto_chunk_tokens(model)),
                    baseline: baseline(spec, model)?,
                },
            }),
            None => None,
        },
        patching: a.patching.as_ref().map(|p| {
            (
                PatchOptions {
                    methods: p
                        .methods
                        .iter()
                        .map(|m| match m {
                            PatchMethod::Exact => PMethod::Exact,
                            PatchMethod::Attribution => PMethod::Attribution,
                        })
                        .collect(),
                    components: p
                        .components
                        .iter()
                        .map(|c| match c {
                            PatchComponent::ResidPre => Component::ResidPre,
                            PatchComponent::AttnHead => Component::AttnHead,
                            PatchComponent::AttnHeadPos => Component::AttnHeadPos,
                            PatchComponent::MlpOut => Component::MlpOut,
                        })
                        .collect(),
                    directions: p
                        .directions
                        .iter()
                        .map(|d| match d {
                            PatchDirection::Denoise => Direction::Denoise,
                            PatchDirection::Noise => Direction::Noise,
                        })
                        .collect(),
                    batch_rows: p.batch_rows,
                },
                match p.metric {
                    PatchMetric::LogitDiff => Metric::LogitDiff as fn(u32, u32) -> Metric,
                    PatchMetric::ProbDiff => Metric::ProbDiff,
                    PatchMetric::LogProbRatio => Metric::LogProbRatio,
                },
            )
        }),
        activations: match &a.activations {
            Some(x) => Some(ActivationsPlan {
                layers: sel(&x.layers, n, "analyses.activations.layers")?,
                positions: positions(x.positions),
            }),
            None => None,
        },
        residuals: match &a.residuals {
            Some(x) => Some(ActivationsPlan {
                layers: sel(&x.layers, n + 1, "analyses.residuals.layers")?,
                positions: positions(x.positions),
            }),
            None => None,
        },
        attention: match &a.attention {
            Some(x) => Some(AttentionPlan {
                layers: sel(&x.layers, n, "analyses.attention.layers")?,
                heads: sel(&x.heads, h, "analyses.attention.heads")?,
                rollout: x.rollout,
            }),
            None => None,
        },
        interventions: crate::pipeline::interventions::resolve(
            spec,
            model,
            spec.batching.batch_size,
        )?,
    })
}

/// Integrated gradients' baseline, its token resolved against the model's vocabulary.
fn baseline(spec: &PipelineSpec, model: &Model) -> Result<Baseline> {
    let Some(s) = &spec.analyses.saliency else {
        return Ok(Baseline::Zero);
    };
    let err = |msg: String| Error::ModelValue {
        spec: spec.source.clone(),
        key: "analyses.saliency.baseline",
        msg,
    };
    Ok(match s.baseline {
        BaselineSpec::Zero => Baseline::Zero,
        BaselineSpec::Mean => Baseline::MeanEmbedding,
        BaselineSpec::Corrupted => Baseline::Tokens,
        BaselineSpec::Eos => Baseline::Token(
            model
                .tokenizer
                .eos_token_ids
                .first()
                .copied()
                .ok_or_else(|| err("the model has no EOS token; choose another baseline".into()))?,
        ),
        BaselineSpec::Bos => Baseline::Token(
            model
                .tokenizer
                .bos_token_id
                .ok_or_else(|| err("the model has no BOS token; choose another baseline".into()))?,
        ),
        BaselineSpec::Token => {
            let text = s.baseline_token.as_deref().unwrap_or_default();
            Baseline::Token(
                baseline_token(model, text).map_err(|msg| Error::ModelValue {
                    spec: spec.source.clone(),
                    key: "analyses.saliency.baseline_token",
                    msg,
                })?,
            )
        }
    })
}

/// A token by its text in the vocabulary, else a text of exactly one token.
fn baseline_token(model: &Model, text: &str) -> std::result::Result<u32, String> {
    if let Some(id) = model.tokenizer.token_to_id(text) {
        return Ok(id);
    }
    match model.tokenizer.encode_plain(text) {
        Ok(ids) if ids.len() == 1 => Ok(ids[0]),
        Ok(ids) => Err(format!(
            "{text:?} is neither a vocabulary entry nor one token (it is {} tokens {ids:?})",
            ids.len()
        )),
        Err(e) => Err(format!("{text:?}: {e}")),
    }
}

/// Watched tokens as (text, id); each must be one token of the model's vocabulary (checked by
/// `validate_watch_tokens`).
pub(super) fn watch_tokens(spec: &PipelineSpec, model: &Model) -> Result<Vec<(String, u32)>> {
    let encode = |t: &str| -> Result<Vec<u32>> { Ok(model.tokenizer.encode_plain(t)?) };
    spec.validate_watch_tokens(encode, model.config.vocab_size)?;
    let Some(w) = &spec.analyses.watch else {
        return Ok(vec![]);
    };
    w.tokens
        .iter()
        .map(|t| Ok((t.clone(), encode(t)?[0])))
        .collect()
}
