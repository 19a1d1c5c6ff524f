//! One batch of documents through the model: generation, one forward pass with the captures the
//! plan needs, and every analysis, reduced to plain records (one Vec per output table). The
//! runner owns batching, order and writing; this module owns what is computed for a batch.

use candle_core::{DType, IndexOp, Tensor};

use crate::analysis::lens::{self, Reduce};
use crate::analysis::patching::{self, PairInput, PatchOptions, Patching};
use crate::analysis::saliency::{self, Completeness, Metric, SaliencyOptions, SaliencyRow};
use crate::error::Result;
use crate::model::generate::{GenerateOptions, Generation};
use crate::model::{Batch, Capture, Captures, Layers, LensNorm, Model};
use crate::pipeline::interventions::{self, InterventionRec, Named};

/// A prompt, tokenized.
#[derive(Debug, Clone)]
pub struct Doc {
    /// The document's id (joins every table).
    pub id: String,
    pub text: String,
    pub ids: Vec<u32>,
    /// Seed of this document's sampling (depends on the document, never on its batch).
    pub seed: u64,
    /// A paired row's other fields, tokenized.
    pub pair: DocPair,
}

/// A paired row's corrupted prompt (as many tokens as the prompt), answer and foil (text, first
/// token); None where the dataset has no such field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DocPair {
    pub corrupted: Option<(String, Vec<u32>)>,
    pub answer: Option<(String, u32)>,
    pub foil: Option<(String, u32)>,
}

/// A metric of a document's (answer, foil) tokens.
pub type MetricOf = fn(u32, u32) -> Metric;

/// Saliency's options and what it explains.
#[derive(Debug, Clone)]
pub struct SaliencyPlan {
    pub options: SaliencyOptions,
    /// Each generated token's probability.
    pub generated: bool,
    /// Contrasts of each document's answer and foil after its prompt, as metrics of (answer,
    /// foil).
    pub contrasts: Vec<MetricOf>,
}

/// Which MLP positions the activations table keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionSet {
    All,
    Prompt,
    Generated,
}

impl PositionSet {
    pub fn keeps(self, position: usize, prompt_len: usize) -> bool {
        match self {
            PositionSet::All => true,
            PositionSet::Prompt => position < prompt_len,
            PositionSet::Generated => position >= prompt_len,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LensPlan {
    pub norm: LensNorm,
    /// Top-k layer predictions per (position, layer); 0 for none.
    pub top_k: usize,
}

#[derive(Debug, Clone)]
pub struct ActivationsPlan {
    pub layers: Vec<usize>,
    pub positions: PositionSet,
}

#[derive(Debug, Clone)]
pub struct AttentionPlan {
    pub layers: Vec<usize>,
    /// Heads to keep (all when empty).
    pub heads: Vec<usize>,
    pub rollout: bool,
}

/// Everything to compute for each batch.
#[derive(Debug, Clone)]
pub struct Plan {
    pub generation: GenerateOptions,
    /// Top-k next-token predictions per position; None to skip the table.
    pub predictions: Option<usize>,
    pub lens: Option<LensPlan>,
    /// Watched tokens: (as written, token id).
    pub watch: Vec<(String, u32)>,
    /// Whether the watched tokens' lens applies the final norm.
    pub watch_norm: LensNorm,
    pub saliency: Option<SaliencyPlan>,
    /// Activation patching of paired documents, with the metric of (answer, foil).
    pub patching: Option<(PatchOptions, MetricOf)>,
    pub activations: Option<ActivationsPlan>,
    /// The residual stream (table `residuals`): residual indices 0..=n_layers.
    pub residuals: Option<ActivationsPlan>,
    pub attention: Option<AttentionPlan>,
    /// Each document regenerated under each of these.
    pub interventions: Vec<Named>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenRec {
    pub doc: usize,
    pub position: u32,
    pub token_id: u32,
    pub token: String,
    pub is_generated: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRec {
    pub doc: usize,
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    pub output_text: String,
    pub stopped_at_eos: bool,
}

/// A ranked candidate at a position (predictions) or at a (position, layer) (lens top-k).
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateRec {
    pub doc: usize,
    pub position: u32,
    /// None for next-token predictions.
    pub layer: Option<u32>,
    pub rank: u32,
    pub token_id: u32,
    pub prob: f32,
}

/// Rank and probability of one token at a (position, layer).
#[derive(Debug, Clone, PartialEq)]
pub struct RankRec {
    pub doc: usize,
    pub position: u32,
    pub layer: u32,
    /// For watched tokens: the index into the plan's watch list.
    pub watch: Option<u32>,
    pub token_id: u32,
    pub rank: u32,
    pub prob: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ActivationRec {
    pub doc: usize,
    pub position: u32,
    pub layer: u32,
    /// One value per neuron (the store narrows to f16 if asked).
    pub values: Vec<f32>,
}

/// One attention row: weights of query `query_position` over keys 0..=query_position.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionRec {
    pub doc: usize,
    pub layer: u32,
    /// None for attention rollout.
    pub head: Option<u32>,
    pub query_position: u32,
    pub weights: Vec<f32>,
}

/// What one batch produced; `doc` fields index the batch's documents.
#[derive(Debug, Default)]
pub struct BatchOut {
    pub tokens: Vec<TokenRec>,
    pub generations: Vec<GenerationRec>,
    pub predictions: Vec<CandidateRec>,
    pub lens: Vec<RankRec>,
    pub lens_topk: Vec<CandidateRec>,
    pub watch: Vec<RankRec>,
    pub saliency: Vec<SaliencyRow>,
    pub completeness: Vec<Completeness>,
    pub patching: Patching,
    pub interventions: Vec<InterventionRec>,
    pub activations: Vec<ActivationRec>,
    /// The `residuals` records (`layer` is the residual index).
    pub residuals: Vec<ActivationRec>,
    pub attention: Vec<AttentionRec>,
    pub rollout: Vec<AttentionRec>,
    /// Tokens processed (prompt + generated), for throughput figures.
    pub n_tokens: usize,
    /// Seconds spent in each stage of `process` (`STAGES`).
    pub stage_seconds: Vec<(&'static str, f64)>,
}

/// The stages of `process`, in order, as the manifest and the progress bar name them.
pub const STAGES: &[&str] = &[
    "generate",
    "forward",
    "predictions",
    "lens_watch",
    "activations",
    "residuals",
    "attention",
    "saliency",
    "patching",
    "interventions",
];

/// Times the stages of one batch and tells `on_stage` when one starts.
struct StageClock<'a> {
    on_stage: &'a dyn Fn(&'static str),
    current: Option<(&'static str, std::time::Instant)>,
    done: Vec<(&'static str, f64)>,
}

impl<'a> StageClock<'a> {
    fn new(on_stage: &'a dyn Fn(&'static str)) -> Self {
        StageClock {
            on_stage,
            current: None,
            done: Vec::new(),
        }
    }

    /// Ends the current stage (if any) and starts `stage`.
    fn start(&mut self, stage: &'static str) {
        self.stop();
        (self.on_stage)(stage);
        self.current = Some((stage, std::time::Instant::now()));
    }

    fn stop(&mut self) {
        if let Some((s, t)) = self.current.take() {
            self.done.push((s, t.elapsed().as_secs_f64()));
        }
    }
}

/// Runs `plan` over a batch of documents: generation, the token and generation records, one
/// forward pass with every capture the analyses need, then each analysis. `on_stage` is told
/// each stage as it starts (`STAGES`); `BatchOut::stage_seconds` says how long each took.
pub fn process(
    model: &Model,
    docs: &[Doc],
    plan: &Plan,
    on_stage: &dyn Fn(&'static str),
) -> Result<BatchOut> {
    let mut out = BatchOut::default();
    if docs.is_empty() {
        return Ok(out);
    }
    let mut clock = StageClock::new(on_stage);
    clock.start("generate");
    let gens = generate(model, docs, plan)?;
    let seqs: Vec<Vec<u32>> = gens.iter().map(|g| g.sequence()).collect();
    let plens: Vec<usize> = docs.iter().map(|d| d.ids.len()).collect();
    out.n_tokens = seqs.iter().map(Vec::len).sum();
    token_records(model, &gens, &seqs, &plens, &mut out)?;

    // One forward pass over prompt + generated tokens with every capture the plan needs.
    if let Some(capture) = capture_for(plan) {
        clock.start("forward");
        let batch = model.batch(&seqs)?;
        let caps = model.forward(&batch, &capture)?;
        let needs_targets =
            plan.predictions.is_some() || plan.lens.is_some() || !plan.watch.is_empty();
        let targets = if !model.config.is_encoder() {
            lens::next_tokens(&seqs)
        } else if needs_targets {
            encoder_targets(model, &seqs)?
        } else {
            vec![]
        };
        if let Some(k) = plan.predictions {
            clock.start("predictions");
            predictions(model, &batch, &caps, &targets, k, &mut out)?;
        }
        if plan.lens.is_some() || !plan.watch.is_empty() {
            clock.start("lens_watch");
            lens_and_watch(model, plan, &batch, &caps, &seqs, &targets, &mut out)?;
        }
        if let Some(a) = &plan.activations {
            clock.start("activations");
            let mlp = |l: usize| &caps.mlp[&l];
            out.activations = per_position(a, &batch, mlp, &plens)?;
        }
        if let Some(r) = &plan.residuals {
            clock.start("residuals");
            let resid = |l: usize| &caps.residual[l];
            out.residuals = per_position(r, &batch, resid, &plens)?;
        }
        if let Some(a) = &plan.attention {
            clock.start("attention");
            attention(a, &batch, &caps, docs.len(), &mut out)?;
        }
    }

    if let Some(s) = &plan.saliency {
        clock.start("saliency");
        let inputs = saliency_inputs(model, docs, &seqs, &plens, s)?;
        if inputs.iter().any(|d| !d.targets.is_empty()) {
            let res = saliency::saliency_of(model, &inputs, &s.options)?;
            out.saliency = res.rows;
            out.completeness = res.completeness;
        }
    }
    if let Some((opts, metric)) = &plan.patching {
        clock.start("patching");
        let pairs = docs
            .iter()
            .map(
                |d| match (&d.pair.corrupted, &d.pair.answer, &d.pair.foil) {
                    (Some((_, c)), Some((_, a)), Some((_, b))) => Ok(PairInput {
                        clean: d.ids.clone(),
                        corrupted: c.clone(),
                        metric: metric(*a, *b),
                    }),
                    _ => Err(crate::error::Error::Input(format!(
                        "document `{}`: patching needs its corrupted prompt, answer and foil",
                        d.id
                    ))),
                },
            )
            .collect::<Result<Vec<_>>>()?;
        out.patching = patching::activation_patching(model, &pairs, opts)?;
    }
    if !plan.interventions.is_empty() {
        clock.start("interventions");
        let prompts: Vec<Vec<u32>> = docs.iter().map(|d| d.ids.clone()).collect();
        let seeds: Vec<u64> = docs.iter().map(|d| d.seed).collect();
        out.interventions = interventions::generate_all(
            model,
            &prompts,
            &seeds,
            &plan.generation,
            &plan.interventions,
            &gens,
        )?;
    }
    clock.stop();
    out.stage_seconds = clock.done;
    Ok(out)
}

/// What saliency explains in each document: an encoder's [MASK] predictions; a decoder's
/// generated tokens and its contrasts after the prompt; with the corrupted prompt as the
/// baseline's tokens when the baseline is `corrupted`.
fn saliency_inputs(
    model: &Model,
    docs: &[Doc],
    seqs: &[Vec<u32>],
    plens: &[usize],
    s: &SaliencyPlan,
) -> Result<Vec<saliency::DocTargets>> {
    let masks = if model.config.is_encoder() {
        saliency::mask_targets(model, seqs)?
    } else {
        vec![vec![]; seqs.len()]
    };
    let corrupted = s.options.baseline == saliency::Baseline::Tokens;
    Ok(docs
        .iter()
        .enumerate()
        .map(|(i, doc)| {
            let seq = &seqs[i];
            let mut targets: Vec<(usize, Metric)> = masks[i]
                .iter()
                .map(|&(p, t)| (p, Metric::Prob(t)))
                .collect();
            if s.generated && !model.config.is_encoder() {
                targets.extend((plens[i]..seq.len()).map(|p| (p, Metric::Prob(seq[p]))));
            }
            if let (Some((_, a)), Some((_, b))) = (&doc.pair.answer, &doc.pair.foil) {
                targets.extend(s.contrasts.iter().map(|m| (plens[i], m(*a, *b))));
            }
            saliency::DocTargets {
                tokens: seq.clone(),
                targets,
                baseline_tokens: if corrupted {
                    doc.pair.corrupted.as_ref().map(|(_, ids)| ids.clone())
                } else {
                    None
                },
            }
        })
        .collect())
}

/// An encoder's target at each position, what the lens ranks and `predictions` are read
/// against: the token itself (a masked LM reconstructs its input), and at a [MASK] the model's
/// own top-1 prediction there.
fn encoder_targets(model: &Model, seqs: &[Vec<u32>]) -> Result<Vec<Vec<Option<u32>>>> {
    let masks = saliency::mask_targets(model, seqs)?;
    Ok(seqs
        .iter()
        .zip(masks)
        .map(|(seq, m)| {
            let mut t: Vec<Option<u32>> = seq.iter().map(|&x| Some(x)).collect();
            for (p, tok) in m {
                t[p] = Some(tok);
            }
            t
        })
        .collect())
}

/// Each document's generation (or its prompt alone when nothing is generated).
fn generate(model: &Model, docs: &[Doc], plan: &Plan) -> Result<Vec<Generation>> {
    let prompts: Vec<Vec<u32>> = docs.iter().map(|d| d.ids.clone()).collect();
    let seeds: Vec<u64> = docs.iter().map(|d| d.seed).collect();
    if plan.generation.max_new_tokens > 0 {
        model.generate(&prompts, &seeds, &plan.generation)
    } else {
        Ok(prompts
            .into_iter()
            .map(|p| Generation {
                prompt: p,
                generated: vec![],
                probs: vec![],
                stopped_at_eos: false,
            })
            .collect())
    }
}

/// The `tokens` and `generations` records.
fn token_records(
    model: &Model,
    gens: &[Generation],
    seqs: &[Vec<u32>],
    plens: &[usize],
    out: &mut BatchOut,
) -> Result<()> {
    let tok = &model.tokenizer;
    for (i, g) in gens.iter().enumerate() {
        for (p, &id) in seqs[i].iter().enumerate() {
            out.tokens.push(TokenRec {
                doc: i,
                position: p as u32,
                token_id: id,
                token: tok.token_text(id),
                is_generated: p >= plens[i],
            });
        }
        out.generations.push(GenerationRec {
            doc: i,
            prompt_tokens: plens[i] as u32,
            generated_tokens: g.generated.len() as u32,
            output_text: tok.decode(&g.generated)?,
            stopped_at_eos: g.stopped_at_eos,
        });
    }
    Ok(())
}

/// What the forward pass must capture for the plan's analyses; None: no forward pass needed.
fn capture_for(plan: &Plan) -> Option<Capture> {
    let want_resid = plan.predictions.is_some() || plan.lens.is_some() || !plan.watch.is_empty();
    let want_resid = want_resid || plan.residuals.is_some();
    let needs_forward = want_resid || plan.activations.is_some() || plan.attention.is_some();
    let layers_of = |l: &[usize]| Layers::Only(l.to_vec());
    needs_forward.then(|| Capture {
        residual: want_resid,
        mlp: plan
            .activations
            .as_ref()
            .map(|a| layers_of(&a.layers))
            .unwrap_or_default(),
        attention: match &plan.attention {
            Some(a) if a.rollout => Layers::All,
            Some(a) => layers_of(&a.layers),
            None => Layers::None,
        },
        ..Capture::default()
    })
}

/// The `predictions` records: the top-k next tokens at every position.
fn predictions(
    model: &Model,
    batch: &Batch,
    caps: &Captures,
    targets: &[Vec<Option<u32>>],
    k: usize,
    out: &mut BatchOut,
) -> Result<()> {
    let r = Reduce {
        top_k: k,
        watch: &[],
    };
    let stats = lens::project(
        model,
        batch,
        &caps.residual[model.config.n_layers],
        LensNorm::FinalNorm,
        targets,
        &r,
    )?;
    for (i, row) in stats.iter().enumerate() {
        for (p, s) in row.iter().enumerate() {
            for (rank, &(id, prob)) in s.top.iter().enumerate() {
                out.predictions.push(CandidateRec {
                    doc: i,
                    position: p as u32,
                    layer: None,
                    rank: rank as u32 + 1,
                    token_id: id,
                    prob,
                });
            }
        }
    }
    Ok(())
}

/// The `lens`, `lens_topk` and `watch` records: every residual stream projected through the
/// unembedding, once per norm setting (the lens and the watched tokens share a projection when
/// they can).
fn lens_and_watch(
    model: &Model,
    plan: &Plan,
    batch: &Batch,
    caps: &Captures,
    seqs: &[Vec<u32>],
    targets: &[Vec<Option<u32>>],
    out: &mut BatchOut,
) -> Result<()> {
    let n_layers = model.config.n_layers;
    let watch_ids: Vec<u32> = plan.watch.iter().map(|w| w.1).collect();
    let mut passes: Vec<(LensNorm, bool, bool)> = Vec::new();
    if let Some(l) = &plan.lens {
        passes.push((
            l.norm,
            true,
            plan.watch_norm == l.norm && !watch_ids.is_empty(),
        ));
    }
    if !watch_ids.is_empty() && !passes.iter().any(|p| p.2) {
        passes.push((plan.watch_norm, false, true));
    }
    for (norm, do_lens, do_watch) in passes {
        let top_k = match (&plan.lens, do_lens) {
            (Some(l), true) => l.top_k,
            _ => 0,
        };
        let r = Reduce {
            top_k,
            watch: if do_watch { &watch_ids } else { &[] },
        };
        // Layer = residual stream index: 0 = embeddings, l = after block l - 1.
        let per_layer: Vec<Vec<Vec<lens::PositionStats>>> = (0..=n_layers)
            .map(|layer| lens::project(model, batch, &caps.residual[layer], norm, targets, &r))
            .collect::<Result<_>>()?;
        for (i, seq) in seqs.iter().enumerate() {
            for p in 0..seq.len() {
                for (layer, stats) in per_layer.iter().enumerate() {
                    let s = &stats[i][p];
                    let (position, layer) = (p as u32, layer as u32);
                    if do_lens {
                        if let (Some((rank, prob)), Some(id)) = (s.target, targets[i][p]) {
                            out.lens.push(RankRec {
                                doc: i,
                                position,
                                layer,
                                watch: None,
                                token_id: id,
                                rank,
                                prob,
                            });
                        }
                        for (rank, &(id, prob)) in s.top.iter().enumerate() {
                            out.lens_topk.push(CandidateRec {
                                doc: i,
                                position,
                                layer: Some(layer),
                                rank: rank as u32 + 1,
                                token_id: id,
                                prob,
                            });
                        }
                    }
                    for (w, &(rank, prob)) in s.watch.iter().enumerate() {
                        out.watch.push(RankRec {
                            doc: i,
                            position,
                            layer,
                            watch: Some(w as u32),
                            token_id: watch_ids[w],
                            rank,
                            prob,
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// The `activations` or `residuals` records of a per-layer capture ([B, T, width] tensors by
/// layer), ordered by (document, position, layer): all layers of a position together (the NMF
/// stage and `compare` read them that way).
fn per_position<'c>(
    a: &ActivationsPlan,
    batch: &Batch,
    capture: impl Fn(usize) -> &'c Tensor,
    plens: &[usize],
) -> Result<Vec<ActivationRec>> {
    let mut out = Vec::new();
    for (i, &plen) in plens.iter().enumerate() {
        let pad = batch.pad(i);
        let per_layer: Vec<Vec<Vec<f32>>> = a
            .layers
            .iter()
            .map(|&l| {
                Ok(capture(l)
                    .i(i)?
                    .narrow(0, pad, batch.lengths[i])?
                    .to_vec2()?)
            })
            .collect::<Result<_>>()?;
        #[allow(clippy::needless_range_loop)] // p indexes the inner vectors
        for p in 0..batch.lengths[i] {
            if !a.positions.keeps(p, plen) {
                continue;
            }
            for (li, &layer) in a.layers.iter().enumerate() {
                out.push(ActivationRec {
                    doc: i,
                    position: p as u32,
                    layer: layer as u32,
                    values: per_layer[li][p].clone(),
                });
            }
        }
    }
    Ok(out)
}

/// The `attention` records (each chosen head's rows) and, when asked, `attention_rollout`.
fn attention(
    a: &AttentionPlan,
    batch: &Batch,
    caps: &Captures,
    n_docs: usize,
    out: &mut BatchOut,
) -> Result<()> {
    for i in 0..n_docs {
        let per_layer: Vec<Tensor> = caps
            .attention
            .values()
            .map(|t| lens::row_attention(t, batch, i))
            .collect::<Result<_>>()?;
        let layer_ids: Vec<usize> = caps.attention.keys().copied().collect();
        for (t, &layer) in per_layer.iter().zip(&layer_ids) {
            if !a.layers.contains(&layer) {
                continue;
            }
            let (h, len, _) = t.dims3()?;
            let data: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            for head in 0..h {
                if !a.heads.is_empty() && !a.heads.contains(&head) {
                    continue;
                }
                for q in 0..len {
                    let row = &data[(head * len + q) * len..][..q + 1];
                    out.attention.push(AttentionRec {
                        doc: i,
                        layer: layer as u32,
                        head: Some(head as u32),
                        query_position: q as u32,
                        weights: row.to_vec(),
                    });
                }
            }
        }
        if a.rollout {
            let rolled = lens::attention_rollout(&per_layer)?;
            let len = batch.lengths[i];
            for (layer, r) in rolled.iter().enumerate() {
                if !a.layers.contains(&layer) {
                    continue;
                }
                for q in 0..len {
                    out.rollout.push(AttentionRec {
                        doc: i,
                        layer: layer as u32,
                        head: None,
                        query_position: q as u32,
                        weights: r[q * len..q * len + q + 1].to_vec(),
                    });
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
