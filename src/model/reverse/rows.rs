//! The row steps of the reverse pass, one token row (or one head vector) at a time: norms and
//! their backward passes, the MLP nonlinearities (forward pass and Jacobian), RoPE, the causal
//! softmax of attention scores and the cotangent of a target's probability at the LM head.
//! Each is an `#[inline(always)]` body run through `simd_call!`, its sums in 16 lanes.

use super::block::Norm;
use super::{Dims, Metric};
use crate::model::block::ActKind;
use crate::numerics::math::{fast_exp, lane_sum};
use crate::numerics::simd::simd_call;

impl Norm<'_> {
    /// y = norm(x) for one row.
    pub(super) fn forward_row(&self, x: &[f32], y: &mut [f32]) {
        let n = self;
        simd_call!(norm_forward_row(n: &Norm<'_>, x: &[f32], y: &mut [f32]))
    }

    /// dx += d norm(x) / dx ^T dy for one row.
    pub(super) fn backward_row(&self, x: &[f32], dy: &[f32], dx: &mut [f32]) {
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
    /// act = f(pre) for one row, and `pre` overwritten with the diagonal(s) of d act / d pre at
    /// that point: the backward pass then only multiplies (its rows outnumber the forward
    /// pass's by the average prefix length, so the transcendental work is done here, once).
    /// Gated units: [d act / d gate | d act / d up]; GELU: d act / d x.
    pub(super) fn forward_row(self, pre: &mut [f32], act: &mut [f32]) {
        let k = self;
        simd_call!(act_forward_row(k: ActKind, pre: &mut [f32], act: &mut [f32]))
    }

    /// dpre = d act / d pre ^T dact for one row, from the Jacobian `forward_row` left.
    pub(super) fn backward_row(self, jac: &[f32], dact: &[f32], dpre: &mut [f32]) {
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
        ActKind::GeGluTanh => {
            let (g, u) = pre.split_at_mut(act.len());
            for i in 0..act.len() {
                let (x, y) = (g[i], u[i]);
                let t = (SQRT_2_OVER_PI * (x + GELU_C * x * x * x)).tanh();
                let dt = (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x);
                let gelu = 0.5 * x * (1.0 + t);
                act[i] = gelu * y;
                g[i] = y * (0.5 * (1.0 + t) + 0.5 * x * dt);
                u[i] = gelu;
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

/// Rotates (inverse = false) or un-rotates the rotate-half pairs of the first `2 cos.len()`
/// values of one head vector.
#[inline(always)]
fn rope_row(x: &mut [f32], cos: &[f32], sin: &[f32], inverse: bool) {
    let half = cos.len();
    let sign = if inverse { -1.0 } else { 1.0 };
    for i in 0..half {
        let (x1, x2, s) = (x[i], x[i + half], sign * sin[i]);
        x[i] = x1 * cos[i] - x2 * s;
        x[i + half] = x2 * cos[i] + x1 * s;
    }
}

/// Rotates (or un-rotates) the q and k heads of packed q|k|v rows at their positions; nothing
/// for models without RoPE.
pub(super) fn rope_rows(
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
    let half = dims.rot_half;
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
pub(super) fn prob_cotangent_row(row: &mut [f32], tok: usize) -> f32 {
    simd_call!(prob_cotangent_row_body(row: &mut [f32], tok: usize) -> f32)
}

/// The value of `metric` on one row of logits, the row replaced by d metric / d logits.
pub(super) fn metric_cotangent_row(row: &mut [f32], metric: Metric) -> f32 {
    match metric {
        Metric::Prob(t) => prob_cotangent_row(row, t as usize),
        Metric::ProbDiff(a, b) => {
            let (a, b) = (a as usize, b as usize);
            simd_call!(prob_diff_cotangent_row_body(row: &mut [f32], a: usize, b: usize) -> f32)
        }
        Metric::LogitDiff(a, b) | Metric::LogProbRatio(a, b) => {
            let (a, b) = (a as usize, b as usize);
            let value = if let Metric::LogProbRatio(..) = metric {
                // log p[a] - log p[b], each through the log-sum-exp.
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
                let lse = max as f64 + sum.ln();
                ((row[a] as f64 - lse) - (row[b] as f64 - lse)) as f32
            } else {
                row[a] - row[b]
            };
            row.fill(0.0);
            row[a] += 1.0;
            row[b] -= 1.0;
            value
        }
    }
}

/// exp(row - max) in place; returns their sum.
#[inline(always)]
fn exp_row(row: &mut [f32]) -> f32 {
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
    lane_sum(row.len(), |i| row[i])
}

#[inline(always)]
fn prob_cotangent_row_body(row: &mut [f32], tok: usize) -> f32 {
    let sum = exp_row(row);
    let pt = row[tok] / sum;
    let c = -pt / sum;
    row.iter_mut().for_each(|v| *v *= c);
    row[tok] += pt;
    pt
}

/// d (p[a] - p[b]) / d z_j = p[a] [j = a] - p[b] [j = b] - (p[a] - p[b]) p_j.
#[inline(always)]
fn prob_diff_cotangent_row_body(row: &mut [f32], a: usize, b: usize) -> f32 {
    let sum = exp_row(row);
    let (pa, pb) = (row[a] / sum, row[b] / sum);
    let v = pa - pb;
    let c = -v / sum;
    row.iter_mut().for_each(|x| *x *= c);
    row[a] += pa;
    row[b] -= pb;
    v
}

/// In-place causal softmax of one score row over keys 0..=i (within the window).
pub(super) fn softmax_row(row: &mut [f32], i: usize, dims: &Dims) {
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

#[cfg(test)]
mod tests {
    use candle_core::Tensor;

    use super::*;
    use crate::model::block;

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
            block::Norm::rms(w.clone(), 1e-5),
            block::Norm::layer(w.clone(), b.clone(), 1e-5),
        ] {
            let n = Norm::of(&nr).unwrap();
            let (mut y1, mut y2) = (vec![0f32; d], vec![0f32; d]);
            n.forward_row(&x, &mut y1);
            norm_forward_row(&n, &x, &mut y2);
            assert_eq!(y1, y2);
            let (mut g1, mut g2) = (dy.clone(), dy.clone());
            n.backward_row(&x, &dy, &mut g1);
            norm_backward_row(&n, &x, &dy, &mut g2);
            assert_eq!(g1, g2);
        }
        for k in [
            ActKind::SwiGlu,
            ActKind::GeGluTanh,
            ActKind::GeluTanh,
            ActKind::GeluErf,
        ] {
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
            causal: true,
            rot_half: 4,
            scale: 0.5,
            softcap: None,
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

    /// Every metric's value and cotangent against the metric computed in f64 and its central
    /// differences.
    #[test]
    fn metric_cotangents_match_finite_differences() {
        let z: Vec<f32> = (0..37)
            .map(|i| ((i * 7919 % 97) as f32 / 97.0 - 0.5) * 6.0)
            .collect();
        let exact = |z: &[f64], m: Metric| -> f64 {
            let max = z.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
            let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            let p = |t: u32| (z[t as usize] - lse).exp();
            match m {
                Metric::Prob(t) => p(t),
                Metric::ProbDiff(a, b) => p(a) - p(b),
                Metric::LogitDiff(a, b) => z[a as usize] - z[b as usize],
                Metric::LogProbRatio(a, b) => (z[a as usize] - lse) - (z[b as usize] - lse),
            }
        };
        for m in [
            Metric::Prob(5),
            Metric::ProbDiff(5, 30),
            Metric::LogitDiff(30, 5),
            Metric::LogProbRatio(3, 36),
        ] {
            let mut row = z.clone();
            let v = metric_cotangent_row(&mut row, m);
            let z64: Vec<f64> = z.iter().map(|&v| v as f64).collect();
            let want = exact(&z64, m);
            assert!(
                (v as f64 - want).abs() < 1e-5 * want.abs().max(1e-2),
                "{m:?}: {v} vs {want}"
            );
            for j in 0..z.len() {
                let h = 1e-5;
                let (mut up, mut dn) = (z64.clone(), z64.clone());
                up[j] += h;
                dn[j] -= h;
                let fd = (exact(&up, m) - exact(&dn, m)) / (2.0 * h);
                assert!(
                    (row[j] as f64 - fd).abs() < 1e-5,
                    "{m:?} at {j}: {} vs {fd}",
                    row[j]
                );
            }
        }
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
