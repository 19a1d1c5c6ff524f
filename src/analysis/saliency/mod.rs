//! Input saliency (Ecco's "primary attributions"): for every generated token, how much each
//! earlier token (prompt and earlier generated tokens) contributed to it; for an encoder, for
//! every [MASK] prediction, how much each token of the sequence (both sides) contributed.
//!
//! Target of generated token t at sequence position p: the softmax probability of the produced
//! token `s[p]` at the last position, given `s[..p]`; the inputs are the token embeddings of
//! `s[..p]`. A target may instead measure a contrast between two tokens there ([`Metric`]:
//! logit or probability difference, log-probability ratio), as inseq's contrastive attribution
//! does. Methods:
//! - `gradient`: |d target / d embedding| (captum's Saliency);
//! - `grad_x_input`: gradient * embedding (captum's InputXGradient);
//! - `integrated_gradients`: (x - b) * sum_k w_k grad(b + alpha_k (x - b)) from a [`Baseline`] b
//!   (zero by default), Gauss-Legendre (captum's default) or trapezoid nodes; or adaptive
//!   (`adaptive`).
//!
//! Attention is causal, so one forward pass per (document, alpha) serves all of the document's
//! targets; one packed backward pass (`Model::metric_gradients`) carries all their cotangents at
//! once. Chunks are bounded by a row budget, so memory does not grow with the number of targets.

use candle_core::Tensor;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::Model;
pub use crate::model::reverse::Metric;
use crate::model::reverse::{SegTarget, Segment};

mod adaptive;
mod chunk_size;
pub use adaptive::{fejer, fejer_levels};
pub use chunk_size::{AUTO_CHUNK_BYTES, auto_chunk_tokens};

/// An attribution method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Gradient,
    GradXInput,
    IntegratedGradients,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Gradient => "gradient",
            Method::GradXInput => "grad_x_input",
            Method::IntegratedGradients => "integrated_gradients",
        }
    }

    pub fn parse(s: &str) -> Option<Method> {
        match s {
            "gradient" | "saliency" => Some(Method::Gradient),
            "grad_x_input" | "input_x_gradient" => Some(Method::GradXInput),
            "integrated_gradients" | "ig" => Some(Method::IntegratedGradients),
            _ => None,
        }
    }
}

/// Quadrature rule for integrated gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Gauss-Legendre nodes on [0, 1] (captum's default, exact for polynomials of degree 2n - 1).
    GaussLegendre,
    /// Trapezoid rule on n equally spaced points including both ends (captum's riemann_trapezoid).
    Trapezoid,
}

/// The most integrated-gradients steps accepted: computing the Gauss-Legendre nodes costs
/// O(n^2) and every step is a forward and backward pass, so a larger count would not answer.
pub const MAX_IG_STEPS: usize = 1000;

#[derive(Debug, Clone)]
pub struct SaliencyOptions {
    pub methods: Vec<Method>,
    /// Integrated-gradients steps; with `ig_tolerance`, the most a target may use.
    pub n_steps: usize,
    pub rule: Rule,
    /// Adaptive integrated gradients (`adaptive`): each target's quadrature goes through nested
    /// levels (3, 7, 15, ... nodes, at most `n_steps`) until its completeness error |sum of
    /// attributions - (p(input) - p(baseline))| is at most this fraction of |p(input) -
    /// p(baseline)| (or below `COMPLETENESS_FLOOR`). None: every target takes `n_steps` of
    /// `rule`.
    pub ig_tolerance: Option<f64>,
    /// Upper bound on the rows of one chunk of the reverse pass: forward tokens plus, per target,
    /// its prefix length (memory bound, see `saliency`).
    pub chunk_tokens: usize,
    /// Where integrated gradients' path starts.
    pub baseline: Baseline,
}

/// Integrated gradients' baseline b: the embeddings the path b + alpha (x - b) starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// All-zero embeddings (captum's and Ecco's default; degenerate for RMSNorm models, see
    /// docs/saliency.md).
    Zero,
    /// One token's embedding at every position (e.g. eos, pad, unk).
    Token(u32),
    /// The mean of the embedding matrix's rows (over the vocabulary) at every position.
    #[serde(rename = "mean")]
    MeanEmbedding,
    /// Each document's own baseline tokens ([`DocTargets::baseline_tokens`], e.g. a pair's
    /// corrupted prompt) embedded at their positions; later positions keep the input's
    /// embeddings, so they get no attribution.
    #[serde(rename = "corrupted")]
    Tokens,
}

impl Baseline {
    pub fn name(self) -> &'static str {
        match self {
            Baseline::Zero => "zero",
            Baseline::Token(_) => "token",
            Baseline::MeanEmbedding => "mean",
            Baseline::Tokens => "corrupted",
        }
    }
}

/// One document to explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocTargets {
    pub tokens: Vec<u32>,
    /// (position, metric): a decoder explains the metric of its prediction after `tokens[..position]`
    /// (position may be `tokens.len()`: the prediction after the whole sequence); an encoder its
    /// prediction at `position` (e.g. a [MASK]) from the whole sequence.
    pub targets: Vec<(usize, Metric)>,
    /// The baseline's tokens for [`Baseline::Tokens`] (at most `tokens.len()`).
    pub baseline_tokens: Option<Vec<u32>>,
}

/// A completeness error this small counts as converged whatever the tolerance: probabilities
/// are f32, whose rounding leaves errors of this order.
pub const COMPLETENESS_FLOOR: f64 = 1e-6;

impl Default for SaliencyOptions {
    fn default() -> Self {
        SaliencyOptions {
            methods: vec![
                Method::Gradient,
                Method::GradXInput,
                Method::IntegratedGradients,
            ],
            n_steps: 50,
            rule: Rule::GaussLegendre,
            ig_tolerance: None,
            chunk_tokens: 2048,
            baseline: Baseline::Zero,
        }
    }
}

/// One attribution score: `doc` indexes the input sequences.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SaliencyRow {
    pub doc: usize,
    pub method: Method,
    /// Position of the generated token in its sequence (a contrast: the position its tokens would
    /// take).
    pub target_position: usize,
    /// What the target measures.
    pub metric: Metric,
    pub source_position: usize,
    /// L2 norm over the embedding dimension, divided by the sum over source positions (Ecco's score).
    pub score: f32,
    /// The L2 norm before normalization.
    pub raw: f32,
    /// Sum over the embedding dimension (signed); None for `gradient` (an absolute value).
    pub signed: Option<f32>,
}

/// Integrated gradients' completeness check for one target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Completeness {
    pub doc: usize,
    pub target_position: usize,
    pub metric: Metric,
    pub baseline: Baseline,
    /// The metric at the input.
    pub value: f32,
    /// The metric at the baseline.
    pub baseline_value: f32,
    /// Sum of all attributions.
    pub attribution_sum: f32,
    /// attribution_sum - (value - baseline_value).
    pub error: f32,
    /// Gradient evaluations of the attributions reported (adaptive IG: the nested level it
    /// stopped at, which holds every node of the levels before).
    pub steps: u32,
}

#[derive(Debug, Default)]
pub struct Saliency {
    pub rows: Vec<SaliencyRow>,
    pub completeness: Vec<Completeness>,
}

/// Nodes and weights on [0, 1] for `n` steps of `rule`, as captum computes them.
pub fn quadrature(rule: Rule, n: usize) -> (Vec<f64>, Vec<f64>) {
    match rule {
        Rule::Trapezoid => {
            if n == 1 {
                return (vec![1.0], vec![1.0]);
            }
            let alphas = (0..n).map(|i| i as f64 / (n - 1) as f64).collect();
            let mut w = vec![1.0 / (n - 1) as f64; n];
            w[0] /= 2.0;
            w[n - 1] /= 2.0;
            (alphas, w)
        }
        Rule::GaussLegendre => {
            let (x, w) = gauss_legendre(n);
            // Map [-1, 1] to [0, 1].
            (
                x.iter().map(|x| 0.5 * (x + 1.0)).collect(),
                w.iter().map(|w| 0.5 * w).collect(),
            )
        }
    }
}

/// Gauss-Legendre nodes (ascending) and weights on [-1, 1], by Newton iteration on P_n.
fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut x = vec![0.0; n];
    let mut w = vec![0.0; n];
    for i in 0..n.div_ceil(2) {
        let mut z = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 0.0;
        for _ in 0..100 {
            let (mut p0, mut p1) = (1.0, z);
            for k in 2..=n {
                let p2 = ((2 * k - 1) as f64 * z * p1 - (k - 1) as f64 * p0) / k as f64;
                p0 = p1;
                p1 = p2;
            }
            let pn = if n == 0 {
                1.0
            } else if n == 1 {
                z
            } else {
                p1
            };
            let pn1 = if n == 1 { 1.0 } else { p0 };
            dp = n as f64 * (z * pn - pn1) / (z * z - 1.0);
            let dz = pn / dp;
            z -= dz;
            if dz.abs() < 1e-15 {
                break;
            }
        }
        x[i] = -z;
        x[n - 1 - i] = z;
        w[i] = 2.0 / ((1.0 - z * z) * dp * dp);
        w[n - 1 - i] = w[i];
    }
    (x, w)
}

/// A target to explain.
struct TargetState {
    doc: usize,
    /// The explained token's position (decoders: predicted from the positions before it;
    /// encoders: a [MASK] predicted from the whole sequence).
    position: usize,
    metric: Metric,
    /// Source positions 0..sources: the prefix (decoders) or the whole sequence (encoders).
    sources: usize,
    /// Token embeddings of the prefix [p * d].
    embeds: Vec<f32>,
    /// Integrated gradients' x - b over the prefix [p * d] (empty without IG).
    path: Vec<f32>,
    grad_at_input: Option<Vec<f32>>,
    ig_sum: Vec<f64>,
    value: f32,
    baseline_value: f32,
    /// Gradient evaluations behind `ig_sum` (adaptive IG: the nested level it stopped at).
    steps: usize,
}

/// One forward pass: a document's point `alpha` of the path from its baseline to its embeddings;
/// for each listed target (an index into the target list, with whether its gradient is
/// needed), its metric there.
struct Pass {
    doc: usize,
    alpha: f64,
    targets: Vec<(usize, bool)>,
}

/// A document's inputs to the passes: its range of targets, its token embeddings [len * d] and
/// its integrated-gradients baseline [len * d] (None: zero).
struct DocInput {
    range: std::ops::Range<usize>,
    embeds: Vec<f32>,
    baseline: Option<Vec<f32>>,
}

impl DocInput {
    /// b + alpha (x - b) over the first `len` positions.
    fn point(&self, alpha: f64, len: usize, d: usize) -> Vec<f32> {
        let x = &self.embeds[..len * d];
        let a = alpha as f32;
        match &self.baseline {
            None => x.iter().map(|x| x * a).collect(),
            Some(b) => x.iter().zip(b).map(|(x, b)| b + a * (x - b)).collect(),
        }
    }
}

/// Rows of the reverse pass for `list` (targets of one document): forward tokens (the longest
/// prefix) plus the prefix of every target whose gradient is needed.
fn pass_cost(targets: &[TargetState], list: &[(usize, bool)]) -> usize {
    let forward = list.iter().map(|&(t, _)| targets[t].sources).max();
    let rows: usize = list
        .iter()
        .filter(|x| x.1)
        .map(|&(t, _)| targets[t].sources)
        .sum();
    forward.unwrap_or(0) + rows
}

/// One pass per document and (alpha, gradients needed) spec, over the document's targets that
/// `keep` accepts (none: no pass); with each pass's spec index.
fn doc_passes(
    docs: &[DocInput],
    specs: impl Iterator<Item = (f64, bool)> + Clone,
    keep: impl Fn(usize) -> bool,
) -> (Vec<Pass>, Vec<usize>) {
    let mut passes = Vec::new();
    let mut spec_of = Vec::new();
    for (doc, input) in docs.iter().enumerate() {
        for (i, (alpha, grad)) in specs.clone().enumerate() {
            let targets: Vec<(usize, bool)> = input
                .range
                .clone()
                .filter(|&t| keep(t))
                .map(|t| (t, grad))
                .collect();
            if !targets.is_empty() {
                passes.push(Pass {
                    doc,
                    alpha,
                    targets,
                });
                spec_of.push(i);
            }
        }
    }
    (passes, spec_of)
}

/// Runs `passes` in chunks of at most `chunk_tokens` rows: a pass too big for one chunk is split
/// between its targets (at least one per piece), and pieces are packed into chunks in order (at
/// least one per chunk). For every target of every pass, `each(targets, pass index, target,
/// metric value, gradient if asked)`.
fn run_passes(
    model: &Model,
    docs: &[DocInput],
    targets: &mut [TargetState],
    passes: &[Pass],
    chunk_tokens: usize,
    d: usize,
    mut each: impl FnMut(&mut [TargetState], usize, usize, f32, Option<Vec<f32>>),
) -> Result<()> {
    let mut pieces: Vec<(usize, Vec<(usize, bool)>)> = Vec::new();
    for (i, p) in passes.iter().enumerate() {
        let mut piece: Vec<(usize, bool)> = Vec::new();
        for &x in &p.targets {
            piece.push(x);
            if piece.len() > 1 && pass_cost(targets, &piece) > chunk_tokens {
                piece.pop();
                pieces.push((i, std::mem::replace(&mut piece, vec![x])));
            }
        }
        if !piece.is_empty() {
            pieces.push((i, piece));
        }
    }
    let encoder = model.config.is_encoder();
    let mut start = 0;
    while start < pieces.len() {
        let mut end = start;
        let mut cost = 0;
        while end < pieces.len() {
            let c = pass_cost(targets, &pieces[end].1);
            if end > start && cost + c > chunk_tokens {
                break;
            }
            cost += c;
            end += 1;
        }
        let chunk = &pieces[start..end];
        let segments: Vec<Segment> = chunk
            .iter()
            .map(|(i, list)| {
                let p = &passes[*i];
                let len = list
                    .iter()
                    .map(|&(t, _)| targets[t].sources)
                    .max()
                    .unwrap_or(0);
                Segment {
                    embeds: docs[p.doc].point(p.alpha, len, d),
                    targets: list
                        .iter()
                        .map(|&(t, grad)| {
                            let t = &targets[t];
                            SegTarget {
                                prefix: t.sources,
                                at: if encoder { t.position } else { t.position - 1 },
                                metric: t.metric,
                                grad,
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        let results = model.metric_gradients(&segments)?;
        drop(segments);
        for ((i, list), res) in chunk.iter().zip(results) {
            for ((&(t, _), prob), grad) in list.iter().zip(res.values).zip(res.grads) {
                each(targets, *i, t, prob, grad);
            }
        }
        start = end;
    }
    Ok(())
}

/// Saliency of every generated token of every sequence. `sequences[i]` is prompt + generated
/// tokens; `prompt_lens[i]` its prompt length: targets are positions prompt_len..len, each
/// explaining its token's probability. The baseline must not be [`Baseline::Tokens`].
///
/// Work is organized as one forward pass per (document, alpha) (alpha = 1 for the input, 0 for
/// the baseline, and each IG node), shared by all the document's targets, and one packed backward
/// pass per chunk of such passes (`Model::metric_gradients`). Chunks hold at most
/// `chunk_tokens` rows (forward tokens plus target-prefix rows); a document too long for one
/// chunk has its targets split across several.
pub fn saliency(
    model: &Model,
    sequences: &[Vec<u32>],
    prompt_lens: &[usize],
    opts: &SaliencyOptions,
) -> Result<Saliency> {
    if sequences.len() != prompt_lens.len() {
        return Err(Error::Input(
            "one prompt length per sequence is needed".into(),
        ));
    }
    let mut docs = Vec::with_capacity(sequences.len());
    for (doc, (seq, &plen)) in sequences.iter().zip(prompt_lens).enumerate() {
        if plen == 0 || plen > seq.len() {
            return Err(Error::Input(format!(
                "sequence {doc}: prompt length {plen} does not fit {} tokens",
                seq.len()
            )));
        }
        docs.push(DocTargets {
            tokens: seq.clone(),
            targets: (plen..seq.len())
                .map(|p| (p, Metric::Prob(seq[p])))
                .collect(),
            baseline_tokens: None,
        });
    }
    saliency_of(model, &docs, opts)
}

/// The [MASK] positions of an encoder's sequences and the model's top-1 prediction at each:
/// what encoder saliency explains.
pub fn mask_targets(model: &Model, sequences: &[Vec<u32>]) -> Result<Vec<Vec<(usize, u32)>>> {
    let Some(mask) = model.mask_token_id() else {
        return Ok(vec![vec![]; sequences.len()]);
    };
    sequences
        .iter()
        .map(|seq| {
            let at: Vec<usize> = (0..seq.len()).filter(|&p| seq[p] == mask).collect();
            if at.is_empty() {
                return Ok(vec![]);
            }
            let batch = model.batch(std::slice::from_ref(seq))?;
            let out = model.forward(
                &batch,
                &crate::model::Capture {
                    logits: crate::model::Logits::All,
                    ..Default::default()
                },
            )?;
            let logits = out.logits.expect("logits were requested").squeeze(0)?;
            at.into_iter()
                .map(|p| {
                    let tok = logits.get(p)?.argmax(0)?.to_scalar::<u32>()?;
                    Ok((p, tok))
                })
                .collect()
        })
        .collect()
}

/// Saliency toward explicit targets (see [`DocTargets`]): a decoder explains the metric of its
/// prediction after `tokens[..position]` from those positions; an encoder (bidirectional) its
/// prediction at `position` (e.g. a [MASK]) from every position of the sequence.
pub fn saliency_of(
    model: &Model,
    inputs: &[DocTargets],
    opts: &SaliencyOptions,
) -> Result<Saliency> {
    let encoder = model.config.is_encoder();
    if opts.methods.is_empty() {
        return Ok(Saliency::default());
    }
    let wants_ig = opts.methods.contains(&Method::IntegratedGradients);
    if wants_ig && !(1..=MAX_IG_STEPS).contains(&opts.n_steps) {
        return Err(Error::Input(format!(
            "integrated gradients needs n_steps in 1..={MAX_IG_STEPS}, got {}",
            opts.n_steps
        )));
    }
    let input_grad = opts
        .methods
        .iter()
        .any(|m| matches!(m, Method::Gradient | Method::GradXInput));
    let d = model.config.hidden_size;
    let vocab = model.config.vocab_size;
    let embed = |ids: &[u32]| -> Result<Vec<f32>> {
        Ok(model
            .embed(&Tensor::from_slice(ids, (1, ids.len()), model.device())?)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    };
    // A baseline row repeated at every position (token and mean baselines).
    let row = match (wants_ig, opts.baseline) {
        (true, Baseline::Token(t)) => {
            if t as usize >= vocab {
                return Err(Error::Input(format!(
                    "baseline token {t} is outside the vocabulary ({vocab} tokens)"
                )));
            }
            Some(embed(&[t])?)
        }
        (true, Baseline::MeanEmbedding) => Some(model.mean_embedding()?),
        _ => None,
    };
    let mut targets = Vec::new();
    let mut docs: Vec<DocInput> = Vec::new();
    for (doc, input) in inputs.iter().enumerate() {
        let seq = &input.tokens;
        for &(p, metric) in &input.targets {
            let fits = if encoder {
                p < seq.len()
            } else {
                p > 0 && p <= seq.len()
            };
            if !fits {
                return Err(Error::Input(format!(
                    "sequence {doc}: target position {p} does not fit {} tokens{}",
                    seq.len(),
                    if encoder {
                        ""
                    } else {
                        " (a decoder's target needs a position before it)"
                    }
                )));
            }
            if let Some(t) = metric.tokens().into_iter().find(|&t| t as usize >= vocab) {
                return Err(Error::Input(format!(
                    "sequence {doc}: target token {t} is outside the vocabulary ({vocab} tokens)"
                )));
            }
        }
        let all = embed(seq)?;
        let baseline = match (wants_ig, opts.baseline) {
            (false, _) | (true, Baseline::Zero) => None,
            (true, Baseline::Token(_) | Baseline::MeanEmbedding) => {
                let row = row.as_deref().expect("made above");
                Some(row.iter().copied().cycle().take(all.len()).collect())
            }
            (true, Baseline::Tokens) => {
                let Some(b) = &input.baseline_tokens else {
                    return Err(Error::Input(format!(
                        "sequence {doc}: the corrupted baseline needs the document's baseline tokens"
                    )));
                };
                if b.len() > seq.len() || b.is_empty() {
                    return Err(Error::Input(format!(
                        "sequence {doc}: {} baseline tokens for {} input tokens (1 to {} expected)",
                        b.len(),
                        seq.len(),
                        seq.len()
                    )));
                }
                let mut v = embed(b)?;
                v.extend_from_slice(&all[b.len() * d..]);
                Some(v)
            }
        };
        let first = targets.len();
        for &(p, metric) in &input.targets {
            let sources = if encoder { seq.len() } else { p };
            let x = &all[..sources * d];
            targets.push(TargetState {
                doc,
                position: p,
                metric,
                sources,
                embeds: x.to_vec(),
                path: match (wants_ig, &baseline) {
                    (false, _) => vec![],
                    (true, None) => x.to_vec(),
                    (true, Some(b)) => x.iter().zip(b).map(|(x, b)| x - b).collect(),
                },
                grad_at_input: None,
                ig_sum: if wants_ig {
                    vec![0.0; sources * d]
                } else {
                    vec![]
                },
                value: f32::NAN,
                baseline_value: f32::NAN,
                steps: 0,
            });
        }
        docs.push(DocInput {
            range: first..targets.len(),
            embeds: all,
            baseline,
        });
    }
    if let (true, Some(tol)) = (wants_ig, opts.ig_tolerance) {
        adaptive::run(
            model,
            &docs,
            &mut targets,
            &adaptive::Settings {
                input_grad,
                tolerance: tol,
                max_evals: opts.n_steps,
                chunk_tokens: opts.chunk_tokens,
            },
            d,
        )?;
        return Ok(reduce(targets, opts, d));
    }
    // The forward passes of every document, by alpha: (alpha, at input, baseline, IG weight).
    // Equal alphas share one pass (the trapezoid rule's end points are the input and the
    // baseline).
    let mut specs: Vec<(f64, bool, bool, Option<f64>)> = vec![(1.0, true, false, None)];
    if wants_ig {
        specs.push((0.0, false, true, None));
        let (alphas, weights) = quadrature(opts.rule, opts.n_steps);
        for (a, w) in alphas.into_iter().zip(weights) {
            match specs.iter_mut().find(|p| p.0 == a) {
                Some(p) => p.3 = Some(w),
                None => specs.push((a, false, false, Some(w))),
            }
        }
    }
    let (passes, spec_of) = doc_passes(
        &docs,
        specs
            .iter()
            .map(|&(a, at_input, _, w)| (a, (at_input && input_grad) || w.is_some())),
        |_| true,
    );
    run_passes(
        model,
        &docs,
        &mut targets,
        &passes,
        opts.chunk_tokens,
        d,
        |ts, pass, t, prob, grad| {
            let (_, at_input, baseline, ig_weight) = specs[spec_of[pass]];
            let t = &mut ts[t];
            if at_input {
                t.value = prob;
            }
            if baseline {
                t.baseline_value = prob;
            }
            let Some(grad) = grad else { return };
            if let Some(w) = ig_weight {
                for (acc, g) in t.ig_sum.iter_mut().zip(&grad) {
                    *acc += w * *g as f64;
                }
            }
            if at_input && input_grad {
                t.grad_at_input = Some(grad);
            }
        },
    )?;
    for t in &mut targets {
        t.steps = opts.n_steps;
    }
    Ok(reduce(targets, opts, d))
}

/// Per-source reductions of the attributions [p * d] of one target and method.
fn push_rows(out: &mut Vec<SaliencyRow>, t: &TargetState, method: Method, attr: &[f32], d: usize) {
    let (p, sources) = (t.position, t.sources);
    let norms: Vec<f32> = (0..sources)
        .map(|s| {
            attr[s * d..(s + 1) * d]
                .iter()
                .map(|x| x * x)
                .sum::<f32>()
                .sqrt()
        })
        .collect();
    let total: f32 = norms.iter().sum();
    for s in 0..sources {
        let signed = match method {
            Method::Gradient => None,
            _ => Some(attr[s * d..(s + 1) * d].iter().sum()),
        };
        out.push(SaliencyRow {
            doc: t.doc,
            method,
            target_position: p,
            metric: t.metric,
            source_position: s,
            score: if total > 0.0 { norms[s] / total } else { 0.0 },
            raw: norms[s],
            signed,
        });
    }
}

fn reduce(targets: Vec<TargetState>, opts: &SaliencyOptions, d: usize) -> Saliency {
    let mut out = Saliency::default();
    let mut methods = opts.methods.clone();
    methods.sort();
    methods.dedup();
    for t in &targets {
        let g = t.grad_at_input.as_deref().unwrap_or_default();
        for &m in &methods {
            let attr: Vec<f32> = match m {
                // `saliency` asks for the gradient at the input whenever these methods are on.
                Method::Gradient => g.iter().map(|x| x.abs()).collect(),
                Method::GradXInput => g.iter().zip(&t.embeds).map(|(g, x)| g * x).collect(),
                Method::IntegratedGradients => t
                    .ig_sum
                    .iter()
                    .zip(&t.path)
                    .map(|(s, x)| (*s as f32) * x)
                    .collect(),
            };
            if m == Method::IntegratedGradients {
                let sum: f32 = attr.iter().sum();
                out.completeness.push(Completeness {
                    doc: t.doc,
                    target_position: t.position,
                    metric: t.metric,
                    baseline: opts.baseline,
                    value: t.value,
                    baseline_value: t.baseline_value,
                    attribution_sum: sum,
                    error: sum - (t.value - t.baseline_value),
                    steps: t.steps as u32,
                });
            }
            push_rows(&mut out.rows, t, m, &attr, d);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_legendre_integrates_polynomials_exactly() {
        for n in [1usize, 2, 5, 50] {
            let (a, w) = quadrature(Rule::GaussLegendre, n);
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12, "n={n}");
            assert!(a.windows(2).all(|p| p[0] < p[1]) && a[0] > 0.0 && a[n - 1] < 1.0);
            // Exact up to degree 2n - 1: integral of x^k on [0, 1] = 1 / (k + 1).
            let k = (2 * n - 1) as i32;
            let q: f64 = a.iter().zip(&w).map(|(x, w)| w * x.powi(k)).sum();
            assert!((q - 1.0 / (k as f64 + 1.0)).abs() < 1e-12, "n={n}: {q}");
        }
        let (a, w) = quadrature(Rule::Trapezoid, 5);
        assert_eq!(a, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(w, vec![0.125, 0.25, 0.25, 0.25, 0.125]);
    }
}
