//! The spec turned into the engine's options for every batch ([`Plan`]): generation, the
//! analyses with their layers and heads resolved against the model, and the watched tokens' ids.

use crate::analysis::saliency::{Method, Rule, SaliencyOptions};
use crate::model::generate::{Decoding, GenerateOptions};
use crate::model::{LensNorm, Model};
use crate::pipeline::error::{Error, Result};
use crate::pipeline::process::{self, ActivationsPlan, AttentionPlan, LensPlan, Plan};
use crate::pipeline::spec::{IgRule, PipelineSpec, Positions, SaliencyMethod, Selection};

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
        saliency: a.saliency.as_ref().map(|s| SaliencyOptions {
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
            chunk_tokens: s.chunk_tokens,
        }),
        activations: match &a.activations {
            Some(x) => Some(ActivationsPlan {
                layers: sel(&x.layers, n, "analyses.activations.layers")?,
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
    })
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
