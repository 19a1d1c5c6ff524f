//! Input saliency (Ecco's "primary attributions"): for every generated token, how much each
//! earlier token (prompt and earlier generated tokens) contributed to it.
//!
//! Target of generated token t at sequence position p: the softmax probability of the produced
//! token `s[p]` at the last position, given `s[..p]`; the inputs are the token embeddings of
//! `s[..p]`. Methods:
//! - `gradient`: |d target / d embedding| (captum's Saliency);
//! - `grad_x_input`: gradient * embedding (captum's InputXGradient);
//! - `integrated_gradients`: (x - 0) * sum_k w_k grad(alpha_k x), zero-embedding baseline,
//!   Gauss-Legendre (captum's default) or trapezoid nodes.
//!
//! Each (target, IG step) is one row of a left-padded batch holding only that target's prefix; rows
//! are independent, so one backward pass serves a whole chunk of rows. Chunks are bounded by a
//! token budget, so memory does not grow with the number of targets.

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::{Model, Objective, Target};

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

#[derive(Debug, Clone)]
pub struct SaliencyOptions {
    pub methods: Vec<Method>,
    pub n_steps: usize,
    pub rule: Rule,
    /// Upper bound on padded tokens per forward/backward chunk (memory bound).
    pub chunk_tokens: usize,
}

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
            chunk_tokens: 512,
        }
    }
}

/// One attribution score: `doc` indexes the input sequences.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SaliencyRow {
    pub doc: usize,
    pub method: Method,
    /// Position of the generated token in its sequence.
    pub target_position: usize,
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
    /// Target probability at the input.
    pub target_prob: f32,
    /// Target probability at the zero baseline.
    pub baseline_prob: f32,
    /// Sum of all attributions.
    pub attribution_sum: f32,
    /// attribution_sum - (target_prob - baseline_prob).
    pub error: f32,
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

/// One row of work: a target's prefix scaled by `alpha`.
struct Unit {
    target: usize,
    alpha: f32,
    /// IG quadrature weight (0 for the gradient-at-input and baseline rows).
    weight: f32,
    kind: UnitKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum UnitKind {
    AtInput,
    Baseline,
    IgStep,
}

/// A generated token to explain.
struct TargetState {
    doc: usize,
    position: usize,
    /// Token embeddings of the prefix [p * d].
    embeds: Vec<f32>,
    grad_at_input: Option<Vec<f32>>,
    ig_sum: Vec<f64>,
    target_prob: f32,
    baseline_prob: f32,
}

/// Saliency of every generated token of every sequence. `sequences[i]` is prompt + generated
/// tokens; `prompt_lens[i]` its prompt length: targets are positions prompt_len..len.
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
    if opts.methods.is_empty() {
        return Ok(Saliency::default());
    }
    let wants_ig = opts.methods.contains(&Method::IntegratedGradients);
    if wants_ig && opts.n_steps == 0 {
        return Err(Error::Input(
            "integrated gradients needs n_steps >= 1".into(),
        ));
    }
    let d = model.config.hidden_size;
    let mut targets = Vec::new();
    for (doc, (seq, &plen)) in sequences.iter().zip(prompt_lens).enumerate() {
        if plen == 0 || plen > seq.len() {
            return Err(Error::Input(format!(
                "sequence {doc}: prompt length {plen} does not fit {} tokens",
                seq.len()
            )));
        }
        let all = model
            .embed(&Tensor::from_slice(seq, (1, seq.len()), model.device())?)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for p in plen..seq.len() {
            targets.push(TargetState {
                doc,
                position: p,
                embeds: all[..p * d].to_vec(),
                grad_at_input: None,
                ig_sum: if wants_ig { vec![0.0; p * d] } else { vec![] },
                target_prob: f32::NAN,
                baseline_prob: f32::NAN,
            });
        }
    }
    let mut units = Vec::new();
    for t in 0..targets.len() {
        units.push(Unit {
            target: t,
            alpha: 1.0,
            weight: 0.0,
            kind: UnitKind::AtInput,
        });
        if wants_ig {
            units.push(Unit {
                target: t,
                alpha: 0.0,
                weight: 0.0,
                kind: UnitKind::Baseline,
            });
            let (alphas, weights) = quadrature(opts.rule, opts.n_steps);
            for (a, w) in alphas.iter().zip(&weights) {
                units.push(Unit {
                    target: t,
                    alpha: *a as f32,
                    weight: *w as f32,
                    kind: UnitKind::IgStep,
                });
            }
        }
    }
    // Longest prefixes first, so each chunk's rows have similar lengths (little padding).
    units.sort_by_key(|u| std::cmp::Reverse(targets[u.target].position));
    let mut start = 0;
    while start < units.len() {
        let width = targets[units[start].target].position;
        let rows = (opts.chunk_tokens / width.max(1)).max(1);
        let end = (start + rows).min(units.len());
        run_chunk(model, sequences, &mut targets, &units[start..end], d)?;
        start = end;
    }
    Ok(reduce(targets, opts, d))
}

/// One forward + backward over a chunk of units; accumulates into the targets.
fn run_chunk(
    model: &Model,
    sequences: &[Vec<u32>],
    targets: &mut [TargetState],
    units: &[Unit],
    d: usize,
) -> Result<()> {
    let seqs: Vec<Vec<u32>> = units
        .iter()
        .map(|u| {
            let t = &targets[u.target];
            sequences[t.doc][..t.position].to_vec()
        })
        .collect();
    let batch = model.batch(&seqs)?;
    let width = batch.width();
    let mut embeds = vec![0f32; units.len() * width * d];
    for (r, u) in units.iter().enumerate() {
        let src = &targets[u.target].embeds;
        let pad = width - src.len() / d;
        let dst = &mut embeds[(r * width + pad) * d..(r + 1) * width * d];
        for (o, x) in dst.iter_mut().zip(src) {
            *o = x * u.alpha;
        }
    }
    let embeds = Tensor::from_vec(embeds, (units.len(), width, d), &Device::Cpu)?;
    let goals: Vec<Target> = units
        .iter()
        .map(|u| {
            let t = &targets[u.target];
            Target {
                position: width - 1,
                token: sequences[t.doc][t.position],
            }
        })
        .collect();
    let g = model.embedding_gradients(&batch, Some(&embeds), &goals, Objective::Prob)?;
    let grad = g.grad.flatten_all()?.to_vec1::<f32>()?;
    for (r, u) in units.iter().enumerate() {
        let t = &mut targets[u.target];
        let len = t.position;
        let row = &grad[(r * width + width - len) * d..(r + 1) * width * d];
        match u.kind {
            UnitKind::AtInput => {
                t.target_prob = g.values[r];
                t.grad_at_input = Some(row.to_vec());
            }
            UnitKind::Baseline => t.baseline_prob = g.values[r],
            UnitKind::IgStep => {
                for (acc, gv) in t.ig_sum.iter_mut().zip(row) {
                    *acc += u.weight as f64 * *gv as f64;
                }
            }
        }
    }
    Ok(())
}

/// Per-source reductions of the attributions [p * d] of one target and method.
fn push_rows(out: &mut Vec<SaliencyRow>, t: &TargetState, method: Method, attr: &[f32], d: usize) {
    let p = t.position;
    let norms: Vec<f32> = (0..p)
        .map(|s| {
            attr[s * d..(s + 1) * d]
                .iter()
                .map(|x| x * x)
                .sum::<f32>()
                .sqrt()
        })
        .collect();
    let total: f32 = norms.iter().sum();
    for s in 0..p {
        let signed = match method {
            Method::Gradient => None,
            _ => Some(attr[s * d..(s + 1) * d].iter().sum()),
        };
        out.push(SaliencyRow {
            doc: t.doc,
            method,
            target_position: p,
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
        let g = t
            .grad_at_input
            .as_deref()
            .expect("every target has a gradient at its input");
        for &m in &methods {
            let attr: Vec<f32> = match m {
                Method::Gradient => g.iter().map(|x| x.abs()).collect(),
                Method::GradXInput => g.iter().zip(&t.embeds).map(|(g, x)| g * x).collect(),
                Method::IntegratedGradients => t
                    .ig_sum
                    .iter()
                    .zip(&t.embeds)
                    .map(|(s, x)| (*s as f32) * x)
                    .collect(),
            };
            if m == Method::IntegratedGradients {
                let sum: f32 = attr.iter().sum();
                out.completeness.push(Completeness {
                    doc: t.doc,
                    target_position: t.position,
                    target_prob: t.target_prob,
                    baseline_prob: t.baseline_prob,
                    attribution_sum: sum,
                    error: sum - (t.target_prob - t.baseline_prob),
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
