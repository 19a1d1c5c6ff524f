//! A window of prompts made into batches: each prompt (and a paired row's corrupted prompt,
//! answer and foil) tokenized and checked against the model's context and each other (an error
//! naming the dataset row, or truncation as the spec asks), sorted by length when bucketing, and
//! cut at `batch_size` prompts or `max_tokens` padded tokens.

use crate::model::Model;
use crate::pipeline::dataset::{DatasetError, Prompt};
use crate::pipeline::error::{Error, Result};
use crate::pipeline::process::{Doc, DocPair, Plan};
use crate::pipeline::spec::{BaselineSpec, PairAlign, PipelineSpec, TooLong};

/// Per-document facts the tables need beyond `Doc`.
#[derive(Debug, Clone)]
pub(super) struct DocMeta {
    pub index: u64,
    pub truncated: usize,
}

/// Tokenizes a window of prompts and cuts it into batches (sorted by length if bucketing).
#[allow(clippy::type_complexity)]
pub(super) fn window_batches(
    model: &Model,
    spec: &PipelineSpec,
    plan: &Plan,
    prompts: Vec<Prompt>,
) -> Result<Vec<(Vec<Doc>, Vec<DocMeta>)>> {
    let context = model.config.max_position_embeddings;
    let new = plan.generation.max_new_tokens;
    let room = context.saturating_sub(new);
    let mut docs = Vec::with_capacity(prompts.len());
    for p in prompts {
        let mut ids = model.tokenizer.encode(&p.text)?;
        let at = |msg: String| -> Error {
            DatasetError::At {
                path: spec.dataset.path.clone(),
                at: p.location,
                msg,
            }
            .into()
        };
        if ids.is_empty() {
            return Err(at(format!("prompt `{}` has no tokens", p.doc_id)));
        }
        let mut pair = DocPair::default();
        if let Some(text) = &p.pair.corrupted {
            let c = model.tokenizer.encode(text)?;
            let baseline = spec.analyses.saliency.as_ref().map(|s| s.baseline);
            if c.len() != ids.len() && spec.dataset.align == PairAlign::Equal {
                return Err(at(format!(
                    "prompt `{}`: the corrupted prompt has {} tokens and the prompt {}; paired \
                     prompts must tokenize to the same length (patching and the corrupted \
                     baseline match them position by position), or set dataset.align: end to \
                     align them at their last token",
                    p.doc_id,
                    c.len(),
                    ids.len()
                )));
            }
            if c.len() != ids.len() && baseline == Some(BaselineSpec::Corrupted) {
                return Err(at(format!(
                    "prompt `{}`: the corrupted prompt has {} tokens and the prompt {}; the \
                     `corrupted` baseline interpolates between them position by position and \
                     needs as many (dataset.align: end aligns them for patching only)",
                    p.doc_id,
                    c.len(),
                    ids.len()
                )));
            }
            if c.is_empty() {
                return Err(at(format!(
                    "prompt `{}`: the corrupted prompt has no tokens",
                    p.doc_id
                )));
            }
            pair.corrupted = Some((text.clone(), c));
        }
        let first_token = |what: &str, text: &str| -> Result<u32> {
            match model.tokenizer.encode_plain(text)?.first() {
                Some(&t) => Ok(t),
                None => Err(at(format!(
                    "prompt `{}`: the {what} {text:?} has no tokens",
                    p.doc_id
                ))),
            }
        };
        if let Some(text) = &p.pair.answer {
            pair.answer = Some((text.clone(), first_token("answer", text)?));
        }
        if let Some(text) = &p.pair.foil {
            pair.foil = Some((text.clone(), first_token("foil", text)?));
        }
        if let (Some((a, ta)), Some((f, tf))) = (&pair.answer, &pair.foil)
            && ta == tf
        {
            return Err(at(format!(
                "prompt `{}`: the answer {a:?} and the foil {f:?} start with the same token \
                 ({ta}); a contrast between them is always 0",
                p.doc_id
            )));
        }
        let mut truncated = 0;
        if ids.len() > room {
            match spec.dataset.too_long {
                TooLong::Error => {
                    return Err(at(format!(
                        "prompt `{}` has {} tokens; with max_new_tokens {new} the model's \
                         context of {context} leaves room for {room} (set dataset.too_long: \
                         truncate to keep its last {room} tokens)",
                        p.doc_id,
                        ids.len()
                    )));
                }
                TooLong::Truncate => {
                    truncated = ids.len() - room;
                    ids.drain(..truncated);
                    if let Some((_, c)) = &mut pair.corrupted {
                        // Equal lengths: the same positions go; aligned at the end: it keeps
                        // its last `room` tokens too.
                        c.drain(..c.len().saturating_sub(room));
                    }
                    if ids.is_empty() {
                        return Err(at(format!(
                            "prompt `{}`: max_new_tokens {new} leaves no room in the model's \
                             context ({context})",
                            p.doc_id
                        )));
                    }
                }
            }
        }
        // A corrupted prompt longer than the prompt (dataset.align: end) is read, not continued:
        // it must fit the context.
        if let Some((_, c)) = &mut pair.corrupted
            && c.len() > context
        {
            match spec.dataset.too_long {
                TooLong::Error => {
                    return Err(at(format!(
                        "prompt `{}`: the corrupted prompt has {} tokens, more than the model's \
                         context of {context} (set dataset.too_long: truncate to keep its last \
                         {context} tokens)",
                        p.doc_id,
                        c.len()
                    )));
                }
                TooLong::Truncate => {
                    c.drain(..c.len() - context);
                }
            }
        }
        docs.push((
            Doc {
                id: p.doc_id,
                text: p.text,
                ids,
                seed: spec.generation.seed.wrapping_add(p.index),
                pair,
            },
            DocMeta {
                index: p.index,
                truncated,
            },
        ));
    }
    if spec.batching.bucket_by_length {
        // Stable: equal lengths keep dataset order.
        docs.sort_by_key(|(d, _)| d.ids.len());
    }
    let mut batches = Vec::new();
    let mut cur: (Vec<Doc>, Vec<DocMeta>) = (vec![], vec![]);
    for (d, m) in docs {
        let longest = cur
            .0
            .iter()
            .map(|d| d.ids.len())
            .max()
            .unwrap_or(0)
            .max(d.ids.len());
        let padded = (cur.0.len() + 1) * (longest + new);
        let full = cur.0.len() >= spec.batching.batch_size.max(1)
            || spec.batching.max_tokens.is_some_and(|t| padded > t);
        if full && !cur.0.is_empty() {
            batches.push(std::mem::take(&mut cur));
        }
        cur.0.push(d);
        cur.1.push(m);
    }
    if !cur.0.is_empty() {
        batches.push(cur);
    }
    Ok(batches)
}
