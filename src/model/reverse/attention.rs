//! Attention inside the reverse pass, on packed segments: the forward pass per (segment, head),
//! keeping the probabilities, and the backward pass per (target, key/value head) on the
//! target's own prefix, causal rows only, as plain vectorized loops (the matrices are a few
//! dozen rows, too small for gemm's per-call cost).

use rayon::prelude::*;

use super::rows::softmax_row;
use super::{Dims, Packing};
use crate::numerics::buffer::SharedMut;
use crate::numerics::matrix::mm;
use crate::numerics::simd::simd_call;

/// Attention of every (segment, head) over the packed q|k|v rows `qkv` [n, wqkv], rows i of a
/// segment attending to its keys 0..=i: returns the probabilities (each segment's [H, len, len]
/// at its `prob_off`, `n_prob` in all) and the output [n, H * hd].
pub(super) fn forward(
    qkv: &[f32],
    pk: &Packing,
    dims: &Dims,
    n_prob: usize,
) -> (Vec<f32>, Vec<f32>) {
    let Dims {
        h, hkv, hd, wqkv, ..
    } = *dims;
    let n = qkv.len() / wqkv;
    let mut probs = vec![0f32; n_prob];
    let mut attn = vec![0f32; n * h * hd];
    let attn_ptr = SharedMut(attn.as_mut_ptr());
    let probs_ptr = SharedMut(probs.as_mut_ptr());
    let scale = dims.scale;
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
                if let Some(c) = dims.softcap {
                    row.iter_mut().for_each(|v| *v = c * (*v / c).tanh());
                }
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
    (probs, attn)
}

/// d target / d (q|k|v after RoPE) into `dqkv` [rows, wqkv] from d target / d (attention
/// output) `da` [rows, H * hd], one task per (target, key/value head); `spans` gives each
/// target's (segment, first packed row, prefix).
pub(super) fn backward(
    qkv: &[f32],
    probs: &[f32],
    da: &[f32],
    dqkv: &mut [f32],
    spans: &[(usize, usize, usize)],
    pk: &Packing,
    dims: &Dims,
) {
    let Dims { hkv, .. } = *dims;
    let dqkv_ptr = SharedMut(dqkv.as_mut_ptr());
    let scale = dims.scale;
    (0..spans.len() * hkv).into_par_iter().for_each(|task| {
        let (j, kh) = (task / hkv, task % hkv);
        let (si, r0, n) = spans[j];
        let (ts, len) = (pk.start[si], pk.len[si]);
        let t = AttnTask {
            qkv,
            probs: &probs[pk.prob_off[si]..],
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
}

/// One (target, key/value head) of the attention backward pass: for each of the head's query
/// heads, rows 0..n of the target's prefix (causal: row i reads keys 0..=i; an encoder's rows
/// read all n keys).
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
                // Keys row i sees: 0..=i (causal), or all n = len (an encoder's whole segment).
                let keys = if self.dims.causal { i + 1 } else { n };
                let dob = &self.da[(r0 + i) * h * hd + hi * hd..][..hd];
                let prow = &pr[i * len..i * len + keys];
                let ds = &mut ds[..keys];
                let mut sum = 0f32;
                for (jj, (d, &pv)) in ds.iter_mut().zip(prow).enumerate() {
                    *d = dot(dob, &qkv[(ts + jj) * wqkv + vc..][..hd]);
                    sum += *d * pv;
                }
                for (d, &pv) in ds.iter_mut().zip(prow) {
                    *d = pv * (*d - sum) * self.scale;
                }
                let qi = &qkv[(ts + i) * wqkv + hi * hd..][..hd];
                if let Some(c) = self.dims.softcap {
                    // Through the cap: d / d score = d / d capped * (1 - tanh^2(score / c)).
                    for (jj, d) in ds.iter_mut().enumerate() {
                        let s = self.scale * dot(qi, &qkv[(ts + jj) * wqkv + kc..][..hd]);
                        let t = (s / c).tanh();
                        *d *= 1.0 - t * t;
                    }
                }
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
