//! The checks of a spec that need more than the spec: against a model's dimensions
//! ([`PipelineSpec::validate_against`]) and its tokenizer (watched tokens), and that the input
//! files exist ([`PipelineSpec::check_inputs`]).

use std::fmt;

use super::validate::{ModelDims, Problems, no_duplicates};
use super::*;

impl PipelineSpec {
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
        if let Some(r) = &a.residuals {
            check(
                "analyses.residuals.layers",
                &r.layers,
                dims.n_layers + 1,
                "residual streams",
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
        if let Some(n) = &a.neurons {
            check(
                "analyses.neurons.layers",
                &n.layers,
                dims.n_layers,
                "layers",
            );
            // Its layers must be recorded (`all`: every recorded layer).
            let recorded = a
                .activations
                .as_ref()
                .map(|x| x.layers.resolve(dims.n_layers));
            if let (Selection::List(_), Ok(want), Some(Ok(have))) =
                (&n.layers, n.layers.resolve(dims.n_layers), recorded)
            {
                let missing: Vec<usize> = want.into_iter().filter(|l| !have.contains(l)).collect();
                p.check(missing.is_empty(), "analyses.neurons.layers", || {
                    format!("layers {missing:?} are not among analyses.activations.layers {have:?}")
                });
            }
        }
        let g = &self.generation;
        if dims.encoder {
            p.check(g.max_new_tokens == 0, "generation.max_new_tokens", || {
                format!(
                    "an encoder does not generate: set it to 0 (got {}; the default is 20)",
                    g.max_new_tokens
                )
            });
        } else if let Some(s) = &a.saliency {
            p.check(
                g.max_new_tokens >= 1 || !s.targets.contains(&SaliencyTarget::Generated),
                "analyses.saliency",
                || {
                    "explains generated tokens (targets: [generated]): set \
                     generation.max_new_tokens >= 1, or explain a contrast (targets: \
                     [logit_diff])"
                        .into()
                },
            );
        }
        p.check(
            !dims.encoder || a.patching.is_none(),
            "analyses.patching",
            || "reads the prediction after a prompt: an encoder has none".into(),
        );
        if let Some(s) = &a.saliency {
            p.check(
                !dims.encoder || s.targets == [SaliencyTarget::Generated],
                "analyses.saliency.targets",
                || "an encoder explains its [MASK] predictions; contrasts are for decoders".into(),
            );
            p.check(
                !dims.encoder || s.baseline != BaselineSpec::Corrupted,
                "analyses.saliency.baseline",
                || "`corrupted` is for decoders' paired prompts".into(),
            );
        }
        if !dims.lm_head {
            for (key, on) in [
                ("analyses.predictions", a.predictions.is_some()),
                ("analyses.lens", a.lens.is_some()),
                ("analyses.watch", a.watch.is_some()),
                ("analyses.saliency", a.saliency.is_some()),
            ] {
                p.check(!on, key, || {
                    "needs a language-model head, and this checkpoint has none (an encoder \
                     without its masked-LM head); activations, attention and nmf work without"
                        .into()
                });
            }
        }
        interventions::check_against(&self.interventions, dims, &mut p);
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

    /// Checks the watched tokens against the model's tokenizer and vocabulary: each must be
    /// exactly one token, whose id is below `vocab` (the model's embedding and logit rows; a
    /// tokenizer may know more ids than the model has). `encode` tokenizes without special tokens.
    pub fn validate_watch_tokens<E: fmt::Display>(
        &self,
        encode: impl Fn(&str) -> Result<Vec<u32>, E>,
        vocab: usize,
    ) -> Result<(), SpecError> {
        let mut p = Problems::default();
        if let Some(w) = &self.analyses.watch {
            for t in &w.tokens {
                match encode(t) {
                    Ok(ids) if ids.len() == 1 && (ids[0] as usize) < vocab => {}
                    Ok(ids) if ids.len() == 1 => p.add(
                        "analyses.watch.tokens",
                        format!(
                            "{t:?} is token id {}, outside the model's vocabulary of {vocab} ids \
                             (0..={})",
                            ids[0],
                            vocab.saturating_sub(1)
                        ),
                    ),
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
            ModelSource::Fetched(name) => match crate::model::fetched_model_path(name) {
                None => p.add(
                    "model",
                    format!(
                        "`fetched:{name}`: unknown model (known: {})",
                        crate::model::FETCHED_MODELS
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
                Some(d) => p.check(d.exists(), "model", || {
                    format!(
                        "`fetched:{name}` is not at {}; run scripts/fetch-model.sh {name} to \
                         fetch it",
                        d.display()
                    )
                }),
            },
        }
        if let Some(t) = &self.model.tokenizer {
            p.check(t.is_file(), "model.tokenizer", || {
                format!("{}: no such file", t.display())
            });
        }
        interventions::check_files(&self.interventions, &mut p);
        p.into_result(&self.source)
    }
}
