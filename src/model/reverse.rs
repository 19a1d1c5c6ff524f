//! The multi-target reverse pass behind input saliency: one forward pass per sequence serves
//! every target of that sequence, and one backward pass carries every target's cotangent at once.
//!
//! A *segment* is one sequence of input embeddings (a prompt plus its generated tokens, possibly
//! scaled for an integrated-gradients step). A *target* asks for the probability of `token` after
//! the first `prefix` positions of the segment, and optionally its gradient with respect to those
//! positions' embeddings. Attention is causal, so the activations of one forward pass over the
//! whole segment are, at every position, exactly those of a forward pass over any prefix: the
//! forward pass is shared by all the segment's targets.
//!
//! The backward pass works on *packed* cotangents: target j of a segment owns `prefix_j` rows,
//! one per position it can depend on, so no row is spent on positions after a target (the
//! gradient there is exactly zero). Every linear layer's input gradient is then one large gemm
//! over all targets of all segments of a chunk, element-wise steps (norms, activations, RoPE)
//! read the forward activation of the row's token, and attention runs per (target, key/value
//! head) on the target's own prefix, causal rows only (row i meets keys 0..=i), as plain
//! vectorized loops: the matrices are a few dozen rows, too small for gemm's per-call cost. Only
//! input gradients are computed, never weight gradients.
//!
//! Everything runs on raw f32 slices with the gemm crate; the formulas are those of
//! `autodiff.rs` (checked by finite differences there) and the results are checked against the
//! candle-autograd path (`Model::embedding_gradients`) in the tests below.

use candle_core::{Storage, Tensor};
use rayon::prelude::*;

use super::Model;
use super::ops::Linear;
use crate::error::{Error, Result};
use crate::numerics::buffer::SharedMut;
use crate::numerics::math::{fast_exp, lane_sum};
use crate::numerics::matrix::{gemm_strided, mm};
use crate::numerics::simd::simd_call;

/// A normalization layer as the reverse pass reads it.
#[derive(Clone, Copy)]
pub enum NormRef<'a> {
    /// x / sqrt(mean(x^2) + eps) * w
    Rms { w: &'a Tensor, eps: f32 },
    /// (x - mean) / sqrt(var + eps) * w + b
    Layer {
        w: &'a Tensor,
        b: &'a Tensor,
        eps: f32,
    },
}

/// The MLP nonlinearity between the up and down projections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActKind {
    /// silu(gate) * up on a stacked [gate | up] projection.
    SwiGlu,
    /// GELU, tanh approximation.
    GeluTanh,
    /// GELU, exact (erf).
    GeluErf,
}

/// One pre-norm decoder block: x + o(attn(qkv(norm1(x)))), then + down(act(up(norm2(x)))).
pub struct BlockRef<'a> {
    pub norm1: NormRef<'a>,
    /// Stacked q | k | v projection.
    pub qkv: &'a Linear,
    pub o: &'a Linear,
    pub norm2: NormRef<'a>,
    pub up: &'a Linear,
    pub act: ActKind,
    pub down: &'a Linear,
}

/// One sequence to explain.
pub struct Segment {
    /// Input token embeddings [len, d] (already scaled by the caller, e.g. for an IG step).
    pub embeds: Vec<f32>,
    pub targets: Vec<SegTarget>,
}

/// The probability of `token` after the segment's first `prefix` positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegTarget {
    pub prefix: usize,
    pub token: u32,
    /// Whether to compute d prob / d embeds[..prefix] (otherwise only the value).
    pub grad: bool,
}

/// Per target of a segment: the probability, and the gradient [prefix, d] if asked for.
#[derive(Debug, Default)]
pub struct SegResult {
    pub probs: Vec<f32>,
    pub grads: Vec<Option<Vec<f32>>>,
}

/// The f32 data of a contiguous CPU tensor, borrowed for as long as the guard lives.
struct Data<'a> {
    guard: Box<dyn std::ops::Deref<Target = Storage> + Sync + 'a>,
    range: (usize, usize),
}

impl Data<'_> {
    fn of(t: &Tensor) -> Result<Data<'_>> {
        let (guard, layout) = t.storage_and_layout();
        let range = layout
            .contiguous_offsets()
            .ok_or_else(|| Error::Input("reverse pass: weight is not contiguous".into()))?;
        if !matches!(&*guard, Storage::Cpu(_)) {
            return Err(Error::Input("the reverse pass runs on the CPU only".into()));
        }
        Ok(Data {
            guard: Box::new(guard),
            range,
        })
    }

    fn s(&self) -> &[f32] {
        match &**self.guard {
            Storage::Cpu(c) => match c.as_slice::<f32>() {
                Ok(s) => &s[self.range.0..self.range.1],
                Err(_) => &[],
            },
            _ => &[],
        }
    }
}

/// A linear layer's weight [in, out] and bias, borrowed.
struct Lin<'a> {
    w: Data<'a>,
    /// The weight as [out, in], for widening layers (see `Linear::weight_out_in`).
    w_out_in: Option<Data<'a>>,
    b: Option<Data<'a>>,
    inp: usize,
    out: usize,
}

impl<'a> Lin<'a> {
    fn of(l: &'a Linear) -> Result<Self> {
        let (wt, b) = l.parts();
        let (inp, out) = wt.dims2()?;
        let b = b.map(Data::of).transpose()?;
        let w_out_in = if out > inp {
            Some(Data::of(l.weight_out_in()?)?)
        } else {
            None
        };
        Ok(Lin {
            w: Data::of(wt)?,
            w_out_in,
            b,
            inp,
            out,
        })
    }

    /// y [m, out] = x [m, in] W + b.
    fn forward(&self, x: &[f32], y: &mut [f32]) {
        let m = x.len() / self.inp;
        match &self.b {
            Some(b) => {
                y.par_chunks_mut(self.out)
                    .for_each(|r| r.copy_from_slice(b.s()));
                gemm(m, self.out, self.inp, y, true, x, self.w.s(), self.out, 1);
            }
            None => gemm(m, self.out, self.inp, y, false, x, self.w.s(), self.out, 1),
        }
    }

    /// dx [m, in] = dy [m, out] W^T.
    fn backward(&self, dy: &[f32], dx: &mut [f32]) {
        let m = dy.len() / self.out;
        match &self.w_out_in {
            Some(w) => gemm(m, self.inp, self.out, dx, false, dy, w.s(), self.inp, 1),
            None => gemm(
                m,
                self.inp,
                self.out,
                dx,
                false,
                dy,
                self.w.s(),
                1,
                self.out,
            ),
        }
    }
}

/// dst [m, n] (+)= lhs [m, k] (row-major, contiguous) . rhs, with rhs[kk, nn] at
/// `rhs[kk * rs + nn * cs]`. Multi-threaded unless already inside a rayon task.
#[allow(clippy::too_many_arguments)]
fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    acc: bool,
    lhs: &[f32],
    rhs: &[f32],
    rs: usize,
    cs: usize,
) {
    gemm_strided(m, n, k, dst, acc, lhs, k, 1, rhs, rs, cs)
}

/// A normalization layer, borrowed.
enum Norm<'a> {
    Rms(Data<'a>, f32),
    Layer(Data<'a>, Data<'a>, f32),
}

impl<'a> Norm<'a> {
    fn of(n: NormRef<'a>) -> Result<Self> {
        Ok(match n {
            NormRef::Rms { w, eps } => Norm::Rms(Data::of(w)?, eps),
            NormRef::Layer { w, b, eps } => Norm::Layer(Data::of(w)?, Data::of(b)?, eps),
        })
    }

    /// y = norm(x) for one row.
    fn forward_row(&self, x: &[f32], y: &mut [f32]) {
        let n = self;
        simd_call!(norm_forward_row(n: &Norm<'_>, x: &[f32], y: &mut [f32]))
    }

    /// dx += d norm(x) / dx ^T dy for one row.
    fn backward_row(&self, x: &[f32], dy: &[f32], dx: &mut [f32]) {
        let n = self;
        simd_call!(norm_backward_row(n: &Norm<'_>, x: &[f32], dy: &[f32], dx: &mut [f32]))
    }
}

#[inline(always)]
fn norm_forward_row(n: &Norm<'_>, x: &[f32], y: &mut [f32]) {
    let d = x.len() as f32;
    match n {
        Norm::Rms(w, eps) => {
            let r = 1.0 / (lane_sum(x.len(), |i| x[i] * x[i]) / d + eps).sqrt();
            for ((y, x), w) in y.iter_mut().zip(x).zip(w.s()) {
                *y = x * r * w;
            }
        }
        Norm::Layer(w, b, eps) => {
            let mean = lane_sum(x.len(), |i| x[i]) / d;
            let var = lane_sum(x.len(), |i| (x[i] - mean) * (x[i] - mean)) / d;
            let r = 1.0 / (var + eps).sqrt();
            for (((y, x), w), b) in y.iter_mut().zip(x).zip(w.s()).zip(b.s()) {
                *y = (x - mean) * r * w + b;
            }
        }
    }
}

#[inline(always)]
fn norm_backward_row(n: &Norm<'_>, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let len = x.len();
    let (dy, dx) = (&dy[..len], &mut dx[..len]);
    let nf = len as f32;
    match n {
        Norm::Rms(w, eps) => {
            let w = &w.s()[..len];
            let r = 1.0 / (lane_sum(len, |i| x[i] * x[i]) / nf + eps).sqrt();
            // dx = r (w dy) - x r^3 / d * sum(w dy x)
            let dot = lane_sum(len, |i| dy[i] * w[i] * x[i]);
            let c = r * r * r * dot / nf;
            for i in 0..len {
                dx[i] += r * w[i] * dy[i] - x[i] * c;
            }
        }
        Norm::Layer(w, _, eps) => {
            let w = &w.s()[..len];
            let mean = lane_sum(len, |i| x[i]) / nf;
            let var = lane_sum(len, |i| (x[i] - mean) * (x[i] - mean)) / nf;
            let r = 1.0 / (var + eps).sqrt();
            // g = w dy, xh = (x - mean) r: dx = r (g - mean(g) - xh mean(g xh))
            let sg = lane_sum(len, |i| w[i] * dy[i]);
            let sgx = lane_sum(len, |i| w[i] * dy[i] * (x[i] - mean) * r);
            let (mg, mgx) = (sg / nf, sgx / nf);
            for i in 0..len {
                let xh = (x[i] - mean) * r;
                dx[i] += r * (w[i] * dy[i] - mg - xh * mgx);
            }
        }
    }
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;

/// erf(x) with |error| < 1.2e-7 (Numerical Recipes' erfc via Chebyshev fit).
fn erf(x: f32) -> f32 {
    let z = (x as f64).abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    let e = 1.0 - r;
    (if x >= 0.0 { e } else { -e }) as f32
}

impl ActKind {
    /// Width of the projection feeding the nonlinearity, for `ffn` activations.
    fn pre_width(self, ffn: usize) -> usize {
        match self {
            ActKind::SwiGlu => 2 * ffn,
            _ => ffn,
        }
    }

    /// act = f(pre) for one row, and `pre` overwritten with the diagonal(s) of d act / d pre at
    /// that point: the backward pass then only multiplies (its rows outnumber the forward
    /// pass's by the average prefix length, so the transcendental work is done here, once).
    /// SwiGLU: [d act / d gate | d act / d up]; GELU: d act / d x.
    fn forward_row(self, pre: &mut [f32], act: &mut [f32]) {
        let k = self;
        simd_call!(act_forward_row(k: ActKind, pre: &mut [f32], act: &mut [f32]))
    }

    /// dpre = d act / d pre ^T dact for one row, from the Jacobian `forward_row` left.
    fn backward_row(self, jac: &[f32], dact: &[f32], dpre: &mut [f32]) {
        simd_call!(act_backward_row(jac: &[f32], dact: &[f32], dpre: &mut [f32]))
    }
}

#[inline(always)]
fn act_forward_row(k: ActKind, pre: &mut [f32], act: &mut [f32]) {
    match k {
        ActKind::SwiGlu => {
            let (g, u) = pre.split_at_mut(act.len());
            for i in 0..act.len() {
                let (x, y) = (g[i], u[i]);
                let s = 1.0 / (1.0 + fast_exp(-x));
                act[i] = x * s * y;
                g[i] = y * s * (1.0 + x * (1.0 - s));
                u[i] = x * s;
            }
        }
        ActKind::GeluTanh => {
            for (a, p) in act.iter_mut().zip(pre) {
                let x = *p;
                let t = (SQRT_2_OVER_PI * (x + GELU_C * x * x * x)).tanh();
                let dt = (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x);
                *a = 0.5 * x * (1.0 + t);
                *p = 0.5 * (1.0 + t) + 0.5 * x * dt;
            }
        }
        ActKind::GeluErf => {
            let inv_sqrt_2pi = 0.398_942_3f32;
            for (a, p) in act.iter_mut().zip(pre) {
                let x = *p;
                let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
                *a = x * cdf;
                *p = cdf + x * inv_sqrt_2pi * (-0.5 * x * x).exp();
            }
        }
    }
}

#[inline(always)]
fn act_backward_row(jac: &[f32], dact: &[f32], dpre: &mut [f32]) {
    for (dp, j) in dpre.chunks_mut(dact.len()).zip(jac.chunks(dact.len())) {
        for i in 0..dact.len() {
            dp[i] = dact[i] * j[i];
        }
    }
}

/// One block's weights, borrowed for a pass.
struct BlockW<'a> {
    b: BlockRef<'a>,
    norm1: Norm<'a>,
    norm2: Norm<'a>,
    qkv: Lin<'a>,
    o: Lin<'a>,
    up: Lin<'a>,
    down: Lin<'a>,
}

impl<'a> BlockW<'a> {
    fn of(model: &'a Model, l: usize) -> Result<Self> {
        let b = model.body.block(l);
        Ok(BlockW {
            norm1: Norm::of(b.norm1)?,
            norm2: Norm::of(b.norm2)?,
            qkv: Lin::of(b.qkv)?,
            o: Lin::of(b.o)?,
            up: Lin::of(b.up)?,
            down: Lin::of(b.down)?,
            b,
        })
    }
}

/// Sizes shared by every step.
#[derive(Clone, Copy)]
struct Dims {
    d: usize,
    h: usize,
    hkv: usize,
    hd: usize,
    /// Width of the stacked q | k | v projection.
    wqkv: usize,
    ffn: usize,
    window: Option<usize>,
}

impl Dims {
    fn visible(&self, i: usize, j: usize) -> bool {
        j <= i && self.window.is_none_or(|w| i - j < w)
    }
}

/// What the backward pass of one block needs from its forward pass, for every packed token.
struct Tape {
    x_in: Vec<f32>,
    /// q | k | v after RoPE.
    qkv: Vec<f32>,
    /// Attention probabilities per segment: [H, len, len] each, concatenated.
    probs: Vec<f32>,
    x_mid: Vec<f32>,
    /// The nonlinearity's Jacobian at the up projection's output (see `ActKind::forward_row`).
    jac: Vec<f32>,
}

/// Where each segment lives in the packed token arrays.
struct Packing {
    /// First packed token of each segment.
    start: Vec<usize>,
    len: Vec<usize>,
    /// Offset of each segment's [H, len, len] probabilities.
    prob_off: Vec<usize>,
    /// Position of each packed token within its segment.
    pos: Vec<usize>,
}

/// Rotates (inverse = false) or un-rotates the rotate-half pairs of one head vector.
#[inline(always)]
fn rope_row(x: &mut [f32], cos: &[f32], sin: &[f32], inverse: bool) {
    let half = x.len() / 2;
    let sign = if inverse { -1.0 } else { 1.0 };
    for i in 0..half {
        let (x1, x2, s) = (x[i], x[i + half], sign * sin[i]);
        x[i] = x1 * cos[i] - x2 * s;
        x[i + half] = x2 * cos[i] + x1 * s;
    }
}

/// Rotates (or un-rotates) the q and k heads of packed q|k|v rows at their positions; nothing
/// for models without RoPE.
fn rope_rows(
    qkv: &mut [f32],
    poss: &[usize],
    rope: Option<(&[f32], &[f32])>,
    dims: &Dims,
    inverse: bool,
) {
    let Some((cos, sin)) = rope else { return };
    simd_call!(rope_rows_body(
        qkv: &mut [f32],
        poss: &[usize],
        cos: &[f32],
        sin: &[f32],
        dims: &Dims,
        inverse: bool,
    ))
}

#[inline(always)]
fn rope_rows_body(
    qkv: &mut [f32],
    poss: &[usize],
    cos: &[f32],
    sin: &[f32],
    dims: &Dims,
    inverse: bool,
) {
    let half = dims.hd / 2;
    for (row, &p) in qkv.chunks_mut(dims.wqkv).zip(poss) {
        let (c, s) = (
            &cos[p * half..(p + 1) * half],
            &sin[p * half..(p + 1) * half],
        );
        for head in row[..(dims.h + dims.hkv) * dims.hd].chunks_mut(dims.hd) {
            rope_row(head, c, s, inverse);
        }
    }
}

/// Overwrites a row of logits with d p_tok / d logits = p_tok (onehot(tok) - p) and returns
/// p_tok. Sums in 16 lanes of f32 (each lane adds ~vocab/16 terms of at most 1).
fn prob_cotangent_row(row: &mut [f32], tok: usize) -> f32 {
    simd_call!(prob_cotangent_row_body(row: &mut [f32], tok: usize) -> f32)
}

#[inline(always)]
fn prob_cotangent_row_body(row: &mut [f32], tok: usize) -> f32 {
    let mut mx = [f32::NEG_INFINITY; 16];
    let mut chunks = row.chunks_exact(16);
    for c in &mut chunks {
        for l in 0..16 {
            mx[l] = mx[l].max(c[l]);
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&mx)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for v in row.iter_mut() {
        *v = fast_exp(*v - max);
    }
    let sum = lane_sum(row.len(), |i| row[i]);
    let pt = row[tok] / sum;
    let c = -pt / sum;
    row.iter_mut().for_each(|v| *v *= c);
    row[tok] += pt;
    pt
}

/// In-place causal softmax of one score row over keys 0..=i (within the window).
fn softmax_row(row: &mut [f32], i: usize, dims: &Dims) {
    simd_call!(softmax_row_body(row: &mut [f32], i: usize, dims: &Dims))
}

#[inline(always)]
fn softmax_row_body(row: &mut [f32], i: usize, dims: &Dims) {
    let mut max = f32::NEG_INFINITY;
    for (j, v) in row.iter_mut().enumerate() {
        if dims.visible(i, j) {
            max = max.max(*v);
        } else {
            *v = f32::NEG_INFINITY;
        }
    }
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = if *v == f32::NEG_INFINITY {
            0.0
        } else {
            fast_exp(*v - max)
        };
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

impl Model {
    /// Makes the [out, in] weight copies the reverse pass reads for widening layers (otherwise
    /// made on first use), all layers in parallel: a timed first call then does not pay for them.
    pub fn prepare_reverse(&self) -> Result<()> {
        (0..self.config.n_layers).into_par_iter().try_for_each(|l| {
            let b = self.body.block(l);
            for lin in [b.qkv, b.o, b.up, b.down] {
                Lin::of(lin)?;
            }
            Ok(())
        })
    }

    /// For every segment and target: the target token's probability and, where asked, its
    /// gradient with respect to the prefix's input token embeddings (see the module docs).
    /// Memory grows with the total tokens and the total prefix rows of the segments given: the
    /// caller bounds it by chunking.
    pub fn prob_gradients(&self, segments: &[Segment]) -> Result<Vec<SegResult>> {
        let cfg = &self.config;
        let d = cfg.hidden_size;
        let dims = Dims {
            d,
            h: cfg.n_heads,
            hkv: cfg.n_kv_heads,
            hd: cfg.head_dim,
            wqkv: (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim,
            ffn: cfg.intermediate_size,
            window: cfg.sliding_window,
        };
        // Validate and pack.
        let mut pk = Packing {
            start: vec![],
            len: vec![],
            prob_off: vec![],
            pos: vec![],
        };
        let (mut n_tok, mut n_prob) = (0, 0);
        for (si, s) in segments.iter().enumerate() {
            let len = s.embeds.len() / d;
            if len == 0 || s.embeds.len() != len * d {
                return Err(Error::Input(format!(
                    "segment {si}: embeddings of {} values are not a non-empty [len, {d}] matrix",
                    s.embeds.len()
                )));
            }
            if len > cfg.max_position_embeddings {
                return Err(Error::Input(format!(
                    "segment {si}: {len} positions exceed the model's context ({} tokens)",
                    cfg.max_position_embeddings
                )));
            }
            for t in &s.targets {
                if t.prefix == 0 || t.prefix > len || t.token as usize >= cfg.vocab_size {
                    return Err(Error::Input(format!(
                        "segment {si}: target prefix {} / token {} does not fit {len} positions",
                        t.prefix, t.token
                    )));
                }
            }
            pk.start.push(n_tok);
            pk.len.push(len);
            pk.prob_off.push(n_prob);
            pk.pos.extend(0..len);
            n_tok += len;
            n_prob += dims.h * len * len;
        }
        let mut x = Vec::with_capacity(n_tok * d);
        for s in segments {
            x.extend_from_slice(&s.embeds);
        }
        if let Some(wpe) = self.body.position_embeddings() {
            let wpe = Data::of(wpe)?;
            let wpe = wpe.s();
            x.par_chunks_mut(d).zip(&pk.pos).for_each(|(row, &p)| {
                for (v, e) in row.iter_mut().zip(&wpe[p * d..(p + 1) * d]) {
                    *v += e;
                }
            });
        }
        let rope = match self.body.rope_tables() {
            Some((c, s)) => Some((Data::of(c)?, Data::of(s)?)),
            None => None,
        };
        let rope = rope.as_ref().map(|(c, s)| (c.s(), s.s()));

        // ---- forward, keeping each block's tape ----
        let mut tapes = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let (tape, next) = self.block_forward(l, x, &pk, &dims, rope, n_prob)?;
            tapes.push(tape);
            x = next;
        }

        // ---- the targets' values and the cotangents at the final norm ----
        // Packed cotangent rows: target j owns `prefix_j` rows, its positions 0..prefix_j.
        struct Row {
            tok: usize,
            pos: usize,
        }
        let mut rows: Vec<Row> = Vec::new();
        let mut row_start = Vec::new(); // per (segment, target) with grad
        let mut last_tok = Vec::new(); // packed token of each target's last input position
        for (si, s) in segments.iter().enumerate() {
            for t in &s.targets {
                last_tok.push(pk.start[si] + t.prefix - 1);
                if t.grad {
                    row_start.push(rows.len());
                    rows.extend((0..t.prefix).map(|p| Row {
                        tok: pk.start[si] + p,
                        pos: p,
                    }));
                }
            }
        }
        let tokens: Vec<u32> = segments
            .iter()
            .flat_map(|s| s.targets.iter().map(|t| t.token))
            .collect();
        let n_targets = tokens.len();
        let final_norm = Norm::of(self.body.final_norm_ref())?;
        let lm = Data::of(self.body.lm_head())?;
        let vocab = cfg.vocab_size;
        let mut hf = vec![0f32; n_targets * d];
        hf.par_chunks_mut(d)
            .zip(&last_tok)
            .for_each(|(h, &t)| final_norm.forward_row(&x[t * d..(t + 1) * d], h));
        // logits [T, V] = hf . lm^T (lm is [V, d]).
        let mut logits = vec![0f32; n_targets * vocab];
        gemm(n_targets, vocab, d, &mut logits, false, &hf, lm.s(), 1, d);
        let probs: Vec<f32> = logits
            .par_chunks_mut(vocab)
            .zip(&tokens)
            .map(|(row, &tok)| prob_cotangent_row(row, tok as usize))
            .collect();
        let mut results: Vec<SegResult> = Vec::with_capacity(segments.len());
        {
            let mut k = 0;
            for s in segments {
                results.push(SegResult {
                    probs: probs[k..k + s.targets.len()].to_vec(),
                    grads: vec![None; s.targets.len()],
                });
                k += s.targets.len();
            }
        }
        let grad_targets: Vec<usize> = segments
            .iter()
            .flat_map(|s| s.targets.iter())
            .enumerate()
            .filter(|(_, t)| t.grad)
            .map(|(i, _)| i)
            .collect();
        if grad_targets.is_empty() {
            return Ok(results);
        }
        let p = rows.len();
        // d prob / d hf for the targets with gradients: [G, V] . lm [V, d].
        let dl: Vec<f32> = grad_targets
            .iter()
            .flat_map(|&i| logits[i * vocab..(i + 1) * vocab].iter().copied())
            .collect();
        drop(logits);
        // Over ranges of the vocabulary in parallel (a single gemm over k = vocab parallelizes
        // poorly), partial products summed in range order: fixed ranges, so the result does
        // not depend on the thread count.
        let ng = grad_targets.len();
        let per_v = 8192;
        let dhf = (0..vocab)
            .step_by(per_v)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|v0| {
                let len = per_v.min(vocab - v0);
                let mut part = vec![0f32; ng * d];
                gemm_strided(
                    ng,
                    d,
                    len,
                    &mut part,
                    false,
                    &dl[v0..],
                    vocab,
                    1,
                    &lm.s()[v0 * d..],
                    d,
                    1,
                );
                part
            })
            .reduce_with(|mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            })
            .unwrap_or_else(|| vec![0f32; ng * d]);
        let mut g = vec![0f32; p * d];
        for (gi, &ti) in grad_targets.iter().enumerate() {
            let t = last_tok[ti];
            let r = row_start[gi] + (t - rows[row_start[gi]].tok);
            final_norm.backward_row(
                &x[t * d..(t + 1) * d],
                &dhf[gi * d..(gi + 1) * d],
                &mut g[r * d..(r + 1) * d],
            );
        }
        drop(x);

        // ---- backward through the blocks ----
        // Per grad target: (segment, first row, prefix).
        let mut spans = Vec::with_capacity(grad_targets.len());
        {
            let mut gi = 0;
            for (si, s) in segments.iter().enumerate() {
                for t in &s.targets {
                    if t.grad {
                        spans.push((si, row_start[gi], t.prefix));
                        gi += 1;
                    }
                }
            }
        }
        let row_tok: Vec<usize> = rows.iter().map(|r| r.tok).collect();
        let row_pos: Vec<usize> = rows.iter().map(|r| r.pos).collect();
        // Rows with a cotangent at the top: each target's last position.
        let top: Vec<usize> = spans.iter().map(|&(_, r0, n)| r0 + n - 1).collect();
        let mut ws = Scratch::new(p, &dims, self.body.block(0).act.pre_width(dims.ffn));
        for l in (0..cfg.n_layers).rev() {
            let tape = tapes.pop().expect("one tape per layer");
            let top = (l + 1 == cfg.n_layers).then_some(&top[..]);
            self.block_backward(
                l, &tape, &mut g, top, &mut ws, &row_tok, &row_pos, &spans, &pk, &dims, rope,
            )?;
        }

        // ---- split the packed gradient by target ----
        let mut gi = 0;
        for (si, s) in segments.iter().enumerate() {
            for (ti, t) in s.targets.iter().enumerate() {
                if t.grad {
                    let r0 = spans[gi].1;
                    results[si].grads[ti] = Some(g[r0 * d..(r0 + t.prefix) * d].to_vec());
                    gi += 1;
                }
            }
        }
        Ok(results)
    }

    /// One block's forward pass over the packed tokens `x`; returns its tape and output.
    fn block_forward(
        &self,
        l: usize,
        x: Vec<f32>,
        pk: &Packing,
        dims: &Dims,
        rope: Option<(&[f32], &[f32])>,
        n_prob: usize,
    ) -> Result<(Tape, Vec<f32>)> {
        let BlockW {
            b,
            norm1,
            norm2,
            qkv: qkv_l,
            o: o_l,
            up: up_l,
            down: down_l,
        } = BlockW::of(self, l)?;
        let Dims {
            d,
            h,
            hkv,
            hd,
            wqkv,
            ffn,
            ..
        } = *dims;
        let n = x.len() / d;
        // Per range of rows (one per thread, gemms single-threaded): norm1, q|k|v, RoPE.
        let per = row_range(n);
        let mut qkv = vec![0f32; n * wqkv];
        qkv.par_chunks_mut(per * wqkv)
            .zip(x.par_chunks(per * d))
            .zip(pk.pos.par_chunks(per))
            .for_each(|((qkv, x), poss)| {
                let mut hb = vec![0f32; x.len()];
                for (y, x) in hb.chunks_mut(d).zip(x.chunks(d)) {
                    norm1.forward_row(x, y);
                }
                qkv_l.forward(&hb, qkv);
                rope_rows(qkv, poss, rope, dims, false);
            });
        // Attention per (segment, head).
        let mut probs = vec![0f32; n_prob];
        let mut attn = vec![0f32; n * h * hd];
        let attn_ptr = SharedMut(attn.as_mut_ptr());
        let probs_ptr = SharedMut(probs.as_mut_ptr());
        let scale = 1.0 / (hd as f32).sqrt();
        let rep = h / hkv;
        (0..pk.start.len() * h).into_par_iter().for_each(|task| {
            let (si, hi) = (task / h, task % h);
            let (ts, len) = (pk.start[si], pk.len[si]);
            let g = hi / rep;
            let q = &qkv[ts * wqkv + hi * hd..];
            let k = &qkv[ts * wqkv + (h + g) * hd..];
            let v = &qkv[ts * wqkv + (h + hkv + g) * hd..];
            // SAFETY: each task owns the [len, len] block of its (segment, head) in `probs` and
            // the [len, hd] block of its rows and head in `attn`; operands cover their strides.
            unsafe {
                let p = probs_ptr.ptr().add(pk.prob_off[si] + hi * len * len);
                mm(
                    len,
                    len,
                    hd,
                    p,
                    len,
                    false,
                    q.as_ptr(),
                    wqkv,
                    1,
                    k.as_ptr(),
                    1,
                    wqkv,
                    scale,
                );
                let ps = std::slice::from_raw_parts_mut(p, len * len);
                for (i, row) in ps.chunks_mut(len).enumerate() {
                    softmax_row(row, i, dims);
                }
                mm(
                    len,
                    hd,
                    len,
                    attn_ptr.ptr().add(ts * h * hd + hi * hd),
                    h * hd,
                    false,
                    p,
                    len,
                    1,
                    v.as_ptr(),
                    wqkv,
                    1,
                    1.0,
                );
            }
        });
        // Per range of rows: o, residual, norm2, up, the nonlinearity (its Jacobian kept in
        // `pre`), down, residual.
        let pw = b.act.pre_width(ffn);
        let mut x_mid = vec![0f32; n * d];
        let mut pre = vec![0f32; n * pw];
        let mut out = vec![0f32; n * d];
        x_mid
            .par_chunks_mut(per * d)
            .zip(out.par_chunks_mut(per * d))
            .zip(pre.par_chunks_mut(per * pw))
            .zip(attn.par_chunks(per * h * hd))
            .zip(x.par_chunks(per * d))
            .for_each(|((((xm, out), pre), attn), x)| {
                o_l.forward(attn, xm);
                xm.iter_mut().zip(x).for_each(|(a, b)| *a += b);
                let mut hb = vec![0f32; xm.len()];
                for (y, x) in hb.chunks_mut(d).zip(xm.chunks(d)) {
                    norm2.forward_row(x, y);
                }
                up_l.forward(&hb, pre);
                let rows = xm.len() / d;
                let mut act = vec![0f32; rows * ffn];
                for (a, p) in act.chunks_mut(ffn).zip(pre.chunks_mut(pw)) {
                    b.act.forward_row(p, a);
                }
                down_l.forward(&act, out);
                out.iter_mut().zip(xm.iter()).for_each(|(a, b)| *a += b);
            });
        drop(attn);
        Ok((
            Tape {
                x_in: x,
                qkv,
                probs,
                x_mid,
                jac: pre,
            },
            out,
        ))
    }

    /// One block's backward pass: `g` [rows, d] holds d target / d (block output) and becomes
    /// d target / d (block input). `top`, for the last block, lists the only rows where `g` is
    /// not zero (each target's last position): its MLP and output projection then run on those
    /// rows alone, since a zero cotangent stays zero through them.
    #[allow(clippy::too_many_arguments)]
    fn block_backward(
        &self,
        l: usize,
        tape: &Tape,
        g: &mut [f32],
        top: Option<&[usize]>,
        ws: &mut Scratch,
        row_tok: &[usize],
        row_pos: &[usize],
        spans: &[(usize, usize, usize)],
        pk: &Packing,
        dims: &Dims,
        rope: Option<(&[f32], &[f32])>,
    ) -> Result<()> {
        let w = BlockW::of(self, l)?;
        let Dims {
            d,
            h,
            hkv,
            hd,
            wqkv,
            ..
        } = *dims;
        let p = row_tok.len();
        match top {
            None => {
                let mut da = std::mem::take(&mut ws.da);
                mlp_backward(&w, tape, g, row_tok, ws, &mut da[..p * h * hd], dims);
                ws.da = da;
            }
            Some(rows) => {
                let mut gc: Vec<f32> = rows
                    .iter()
                    .flat_map(|&r| g[r * d..(r + 1) * d].iter().copied())
                    .collect();
                let toks: Vec<usize> = rows.iter().map(|&r| row_tok[r]).collect();
                let mut dac = vec![0f32; rows.len() * h * hd];
                mlp_backward(&w, tape, &mut gc, &toks, ws, &mut dac, dims);
                let da = &mut ws.da[..p * h * hd];
                da.fill(0.0);
                for (k, &r) in rows.iter().enumerate() {
                    g[r * d..(r + 1) * d].copy_from_slice(&gc[k * d..(k + 1) * d]);
                    da[r * h * hd..(r + 1) * h * hd]
                        .copy_from_slice(&dac[k * h * hd..(k + 1) * h * hd]);
                }
            }
        }
        let BlockW {
            norm1, qkv: qkv_l, ..
        } = w;
        let da = &ws.da[..p * h * hd];
        let dh = &mut ws.dh[..p * d];
        let dqkv = &mut ws.dqkv[..p * wqkv];
        // Attention: g += norm1'(x_in)^T qkv^T rope^T attn'^T (o^T g, in `da`)
        let dqkv_ptr = SharedMut(dqkv.as_mut_ptr());
        let scale = 1.0 / (hd as f32).sqrt();
        let qkv = &tape.qkv;
        (0..spans.len() * hkv).into_par_iter().for_each(|task| {
            let (j, kh) = (task / hkv, task % hkv);
            let (si, r0, n) = spans[j];
            let (ts, len) = (pk.start[si], pk.len[si]);
            let t = AttnTask {
                qkv,
                probs: &tape.probs[pk.prob_off[si]..],
                da,
                dqkv: dqkv_ptr,
                ts,
                len,
                r0,
                n,
                kh,
                dims,
                scale,
            };
            // SAFETY: this task writes only rows r0..r0+n of dqkv, in the columns of its query
            // heads and of its key/value head (no other task writes them).
            unsafe { t.run() }
        });
        // Per range of rows: un-rotate, qkv^T, norm1'.
        let per = row_range(p);
        dqkv.par_chunks_mut(per * wqkv)
            .zip(dh.par_chunks_mut(per * d))
            .zip(g.par_chunks_mut(per * d))
            .zip(row_tok.par_chunks(per))
            .zip(row_pos.par_chunks(per))
            .for_each(|((((dqkv, dh), g), toks), poss)| {
                rope_rows(dqkv, poss, rope, dims, true);
                qkv_l.backward(dqkv, dh);
                for ((g, dh), &t) in g.chunks_mut(d).zip(dh.chunks(d)).zip(toks) {
                    norm1.backward_row(&tape.x_in[t * d..(t + 1) * d], dh, g);
                }
            });
        Ok(())
    }
}

/// Scratch buffers of the backward pass, sized for the packed rows once and reused by every
/// block: each is overwritten in full before it is read, so they are never cleared.
struct Scratch {
    dact: Vec<f32>,
    dpre: Vec<f32>,
    dh: Vec<f32>,
    da: Vec<f32>,
    dqkv: Vec<f32>,
}

impl Scratch {
    fn new(rows: usize, dims: &Dims, pre_width: usize) -> Self {
        Scratch {
            dact: vec![0f32; rows * dims.ffn],
            dpre: vec![0f32; rows * pre_width],
            dh: vec![0f32; rows * dims.d],
            da: vec![0f32; rows * dims.h * dims.hd],
            dqkv: vec![0f32; rows * dims.wqkv],
        }
    }
}

/// The MLP's and the attention output projection's backward pass on the rows of `g` (whose
/// forward activations are those of the packed tokens `toks`): g += norm2'(x_mid)^T up^T
/// act'(pre)^T down^T g, then da = o^T g.
fn mlp_backward(
    w: &BlockW<'_>,
    tape: &Tape,
    g: &mut [f32],
    toks: &[usize],
    ws: &mut Scratch,
    da: &mut [f32],
    dims: &Dims,
) {
    let (d, ffn, wo) = (dims.d, dims.ffn, dims.h * dims.hd);
    let pw = w.b.act.pre_width(ffn);
    let m = toks.len();
    let per = row_range(m);
    g.par_chunks_mut(per * d)
        .zip(ws.dact[..m * ffn].par_chunks_mut(per * ffn))
        .zip(ws.dpre[..m * pw].par_chunks_mut(per * pw))
        .zip(ws.dh[..m * d].par_chunks_mut(per * d))
        .zip(toks.par_chunks(per))
        .zip(da[..m * wo].par_chunks_mut(per * wo))
        .for_each(|(((((g, dact), dpre), dh), toks), da)| {
            w.down.backward(g, dact);
            for ((dp, da), &t) in dpre.chunks_mut(pw).zip(dact.chunks(ffn)).zip(toks) {
                w.b.act
                    .backward_row(&tape.jac[t * pw..(t + 1) * pw], da, dp);
            }
            w.up.backward(dpre, dh);
            for ((g, dh), &t) in g.chunks_mut(d).zip(dh.chunks(d)).zip(toks) {
                w.norm2.backward_row(&tape.x_mid[t * d..(t + 1) * d], dh, g);
            }
            w.o.backward(g, da);
        });
}

/// One (target, key/value head) of the attention backward pass: for each of the head's query
/// heads, rows 0..n of the target's prefix (attention is causal: row i reads keys 0..=i).
struct AttnTask<'a> {
    qkv: &'a [f32],
    /// The segment's attention probabilities [h, len, len].
    probs: &'a [f32],
    /// d target / d (attention output) [rows, h * hd], packed rows.
    da: &'a [f32],
    dqkv: SharedMut,
    /// Segment start (packed token) and length.
    ts: usize,
    len: usize,
    /// The target's first packed row and prefix.
    r0: usize,
    n: usize,
    kh: usize,
    dims: &'a Dims,
    scale: f32,
}

impl AttnTask<'_> {
    /// # Safety
    /// No other thread reads or writes dqkv's rows r0..r0+n in this task's columns (its query
    /// heads' and its key/value head's), and dqkv covers them.
    unsafe fn run(&self) {
        let t = self;
        simd_call!(attn_task_body(t: &AttnTask<'_>))
    }

    /// dV_jj = sum_i P[i, jj] dO_i; dS = P * (dO V^T - rowsum(P * dO V^T));
    /// dQ_i = scale sum_jj dS[i, jj] K_jj; dK_jj = scale sum_i dS[i, jj] Q_i; summed over the
    /// key/value head's query heads. Reached only through `run`, whose contract its writes
    /// through `dqkv` rely on (a safe fn so that `simd_call!` can wrap it).
    #[inline(always)]
    fn body(&self) {
        let Dims {
            h, hkv, hd, wqkv, ..
        } = *self.dims;
        let (ts, len, r0, n, kh) = (self.ts, self.len, self.r0, self.n, self.kh);
        let rep = h / hkv;
        let (kc, vc) = ((h + kh) * hd, (h + hkv + kh) * hd);
        let base = self.dqkv.ptr();
        // SAFETY: (`run`'s caller) row r0 + i, columns col..col + hd of dqkv belong to this task.
        let row = |i: usize, col: usize| unsafe {
            std::slice::from_raw_parts_mut(base.add((r0 + i) * wqkv + col), hd)
        };
        for i in 0..n {
            row(i, kc).fill(0.0);
            row(i, vc).fill(0.0);
        }
        let qkv = self.qkv;
        let mut ds = vec![0f32; n];
        let mut dq = vec![0f32; hd];
        for r in 0..rep {
            let hi = kh * rep + r;
            let pr = &self.probs[hi * len * len..];
            for i in 0..n {
                let dob = &self.da[(r0 + i) * h * hd + hi * hd..][..hd];
                let prow = &pr[i * len..i * len + i + 1];
                let ds = &mut ds[..i + 1];
                let mut sum = 0f32;
                for (jj, (d, &pv)) in ds.iter_mut().zip(prow).enumerate() {
                    *d = dot(dob, &qkv[(ts + jj) * wqkv + vc..][..hd]);
                    sum += *d * pv;
                }
                for (d, &pv) in ds.iter_mut().zip(prow) {
                    *d = pv * (*d - sum) * self.scale;
                }
                let qi = &qkv[(ts + i) * wqkv + hi * hd..][..hd];
                dq.fill(0.0);
                for (jj, (&d, &pv)) in ds.iter().zip(prow).enumerate() {
                    axpy(&mut dq, d, &qkv[(ts + jj) * wqkv + kc..][..hd]);
                    axpy(row(jj, kc), d, qi);
                    axpy(row(jj, vc), pv, dob);
                }
                row(i, hi * hd).copy_from_slice(&dq);
            }
        }
    }
}

#[inline(always)]
fn attn_task_body(t: &AttnTask<'_>) {
    t.body()
}

/// a . b, in 16 lanes (vectorizable without reassociating a single sum). Over chunks rather
/// than through `lane_sum`'s indices: a `lane_sum` version made IG runs 1-3% slower (3
/// alternating pairs on 2 prompts, about the machine's noise, so kept as is).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// y += a x.
#[inline(always)]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// Rows per range when `m` rows are split into one range per thread. Steps that work row by row
/// run per range, each range's gemms single-threaded (see `numerics::matrix::gemm_strided`), with the
/// element-wise steps between them on rows still in that thread's cache: one synchronization
/// per group of steps instead of one per step and per gemm.
fn row_range(m: usize) -> usize {
    m.div_ceil(rayon::current_num_threads().max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Objective, Target};
    use std::path::Path;

    fn tiny(name: &str) -> Model {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name);
        Model::load(&dir, None).unwrap()
    }

    /// Two segments (one scaled, as an IG step) with a target at every prefix, all but one
    /// with gradients.
    fn segments(model: &Model) -> Vec<Segment> {
        let seqs: Vec<Vec<u32>> = vec![vec![5, 17, 301, 44, 9, 120, 77], vec![3, 250, 11, 400]];
        let mut segments = Vec::new();
        for (si, s) in seqs.iter().enumerate() {
            let ids = Tensor::from_slice(s, (1, s.len()), model.device()).unwrap();
            let alpha = if si == 0 { 1.0 } else { 0.37 };
            let e: Vec<f32> = model
                .embed(&ids)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v * alpha)
                .collect();
            let targets = (1..s.len())
                .map(|p| SegTarget {
                    prefix: p,
                    token: s[p],
                    grad: p != 2,
                })
                .collect();
            segments.push(Segment { embeds: e, targets });
        }
        segments
    }

    /// The packed reverse pass agrees with candle's autograd through the differentiable path,
    /// for several targets per segment, scaled inputs and segments of different lengths.
    fn check(model: &Model) {
        let d = model.config.hidden_size;
        let segments = segments(model);
        let got = model.prob_gradients(&segments).unwrap();
        for (seg, res) in segments.iter().zip(&got) {
            for (ti, t) in seg.targets.iter().enumerate() {
                let e = Tensor::from_slice(
                    &seg.embeds[..t.prefix * d],
                    (1, t.prefix, d),
                    model.device(),
                )
                .unwrap();
                let batch = model.batch(&[vec![0; t.prefix]]).unwrap();
                let want = model
                    .embedding_gradients(
                        &batch,
                        Some(&e),
                        &[Target {
                            position: t.prefix - 1,
                            token: t.token,
                        }],
                        Objective::Prob,
                    )
                    .unwrap();
                let dv = (want.values[0] - res.probs[ti]).abs();
                assert!(dv < 1e-5, "prob {} vs {}", res.probs[ti], want.values[0]);
                match &res.grads[ti] {
                    None => assert!(!t.grad),
                    Some(gv) => {
                        let w: Vec<f32> = want.grad.flatten_all().unwrap().to_vec1().unwrap();
                        let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
                        let err = gv
                            .iter()
                            .zip(&w)
                            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                        assert!(
                            err / scale < 1e-4,
                            "prefix {}: max err {err:e} at scale {scale:e}",
                            t.prefix
                        );
                    }
                }
            }
        }
    }

    /// Rows are split into one range per thread, and gemm's blocking follows the range's size:
    /// results are identical for the same thread count and agree to rounding across counts.
    #[test]
    fn thread_count_changes_only_rounding() {
        let model = tiny("tiny-llama");
        let segs = segments(&model);
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let r = pool.install(|| model.prob_gradients(&segs).unwrap());
            r.into_iter()
                .flat_map(|r| {
                    let mut v = r.probs;
                    v.extend(r.grads.into_iter().flatten().flatten());
                    v
                })
                .collect::<Vec<f32>>()
        };
        let one = run(1);
        let scale = one.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(one.len() > 100 && scale > 0.0);
        for threads in [2, 3, 5] {
            let other = run(threads);
            assert!(
                run(threads) == other,
                "{threads} threads: not deterministic"
            );
            let err = one
                .iter()
                .zip(&other)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                err <= 1e-6 * scale,
                "{threads} threads: max diff {err:e}, scale {scale:e}"
            );
        }
    }

    #[test]
    fn matches_autograd_gpt2() {
        check(&tiny("tiny-gpt2"));
    }

    #[test]
    fn matches_autograd_llama() {
        check(&tiny("tiny-llama"));
    }

    #[test]
    fn matches_autograd_qwen2() {
        check(&tiny("tiny-qwen2"));
    }

    /// The row steps give the same bits through `simd_call!` (AVX-512F or AVX2 here) as compiled
    /// plainly (what a CPU without them runs): lane sums fix the order of every sum, and Rust
    /// never fuses a multiply and an add on its own.
    #[test]
    fn simd_row_steps_match_the_plain_code() {
        let vals = |n: usize, seed: u32| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    let h = (i as u32 ^ seed).wrapping_mul(2654435761).rotate_left(11);
                    (h % 4001) as f32 / 1000.0 - 2.0
                })
                .collect()
        };
        let dev = candle_core::Device::Cpu;
        let d = 77; // not a multiple of 16: remainders too
        let w = Tensor::from_vec(vals(d, 1), d, &dev).unwrap();
        let b = Tensor::from_vec(vals(d, 2), d, &dev).unwrap();
        let (x, dy) = (vals(d, 3), vals(d, 4));
        for nr in [
            NormRef::Rms { w: &w, eps: 1e-5 },
            NormRef::Layer {
                w: &w,
                b: &b,
                eps: 1e-5,
            },
        ] {
            let n = Norm::of(nr).unwrap();
            let (mut y1, mut y2) = (vec![0f32; d], vec![0f32; d]);
            n.forward_row(&x, &mut y1);
            norm_forward_row(&n, &x, &mut y2);
            assert_eq!(y1, y2);
            let (mut g1, mut g2) = (dy.clone(), dy.clone());
            n.backward_row(&x, &dy, &mut g1);
            norm_backward_row(&n, &x, &dy, &mut g2);
            assert_eq!(g1, g2);
        }
        for k in [ActKind::SwiGlu, ActKind::GeluTanh, ActKind::GeluErf] {
            let pw = k.pre_width(d);
            let (mut p1, mut p2) = (vals(pw, 5), vals(pw, 5));
            let (mut a1, mut a2) = (vec![0f32; d], vec![0f32; d]);
            k.forward_row(&mut p1, &mut a1);
            act_forward_row(k, &mut p2, &mut a2);
            assert_eq!((&p1, &a1), (&p2, &a2), "{k:?}");
            let (mut q1, mut q2) = (vec![0f32; pw], vec![0f32; pw]);
            k.backward_row(&p1, &dy, &mut q1);
            act_backward_row(&p1, &dy, &mut q2);
            assert_eq!(q1, q2, "{k:?}");
        }
        let dims = Dims {
            d,
            h: 1,
            hkv: 1,
            hd: 8,
            wqkv: 24,
            ffn: d,
            window: Some(30),
        };
        let (mut r1, mut r2) = (vals(50, 6), vals(50, 6));
        softmax_row(&mut r1, 41, &dims);
        softmax_row_body(&mut r2, 41, &dims);
        assert_eq!(r1, r2);
        let (mut l1, mut l2) = (vals(1000, 7), vals(1000, 7));
        let p1 = prob_cotangent_row(&mut l1, 17);
        let p2 = prob_cotangent_row_body(&mut l2, 17);
        assert_eq!((p1, &l1), (p2, &l2));
        let (cos, sin) = (vals(4 * 3, 8), vals(4 * 3, 9));
        let (mut q1, mut q2) = (vals(3 * 24, 10), vals(3 * 24, 10));
        rope_rows(&mut q1, &[0, 2, 1], Some((&cos, &sin)), &dims, false);
        rope_rows_body(&mut q2, &[0, 2, 1], &cos, &sin, &dims, false);
        assert_eq!(q1, q2);
    }

    #[test]
    fn erf_is_accurate() {
        for (x, want) in [
            (0.0f32, 0.0f64),
            (0.5, 0.520_499_877_8),
            (1.0, 0.842_700_792_9),
            (-2.0, -0.995_322_265),
            (3.0, 0.999_977_909_5),
        ] {
            assert!((erf(x) as f64 - want).abs() < 2e-7, "erf({x})");
        }
    }
}
