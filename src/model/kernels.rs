//! Fused CPU kernels for the fast (no-gradient) forward path: attention (scores, mask, softmax and
//! the weighted sum in one pass per head, heads in parallel) and SwiGLU. candle's generic
//! element-wise ops call libm's `expf` one value at a time and are single-threaded; these use a
//! vectorizable `exp` and rayon. The differentiable path never uses them.

use std::mem::MaybeUninit;

use candle_core::{Storage, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Runs `f` on the f32 data of `t` (made contiguous first), in row-major order.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Err(Error::Input("fused kernels run on the CPU only".into()));
    };
    let data = cpu.as_slice::<f32>()?;
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| Error::Input("kernel input is not contiguous".into()))?;
    Ok(f(&data[start..end]))
}

/// An output buffer the kernel fully writes before `init` (no zeroing pass: with the heap kept
/// by `tune_allocator`, zeroing every activation costs ~5% of a forward pass).
pub(crate) fn uninit(n: usize) -> Vec<MaybeUninit<f32>> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: MaybeUninit needs no initialization.
    unsafe { v.set_len(n) };
    v
}

/// # Safety
/// Every element of `v` has been written.
pub(crate) unsafe fn init(v: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: same allocation, MaybeUninit<f32> has the layout of f32, all elements written.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr() as *mut f32, v.len(), v.capacity()) }
}

/// A written chunk of an uninit buffer, as floats.
///
/// # Safety
/// Every element of `c` has been written.
unsafe fn written(c: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: layout-compatible, all elements written (caller's promise).
    unsafe { std::slice::from_raw_parts_mut(c.as_mut_ptr() as *mut f32, c.len()) }
}

/// A raw pointer that may be shared by tasks writing disjoint regions.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub(crate) *mut f32);
// SAFETY: users write disjoint regions only (see `attention`).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// e^x for f32 with ~1 ulp error, written so the compiler vectorizes loops over it (no libm call,
/// no branches). Inputs below -87.3 give exactly 0, like a masked score should.
#[inline(always)]
#[allow(clippy::excessive_precision)] // Cephes' published coefficients
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.3, 88.7);
    // Round to nearest via the 1.5 * 2^23 trick (vectorizes on plain SSE2).
    let n = (xc * LOG2E + 12_582_912.0) - 12_582_912.0;
    let r = xc - n * LN2_HI - n * LN2_LO;
    // Cephes expf polynomial on [-ln2/2, ln2/2].
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_2e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5.000_000_1e-1;
    let e = p * r * r + r + 1.0;
    // SAFETY: n is an integer in [-126, 128] after the clamp; a plain (non-saturating) conversion
    // keeps the loop vectorizable.
    let scale = f32::from_bits(((unsafe { n.to_int_unchecked::<i32>() } + 127) as u32) << 23);
    if x < -87.3 { 0.0 } else { e * scale }
}

/// How a weight matrix is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// [in, out] row-major: the layout gemm reads fastest (~5% faster than `OutIn`).
    InOut,
    /// [out, in] row-major (PyTorch's Linear), read as its transpose.
    OutIn,
}

/// `x @ W + b` for x [.., in], with the bias folded into the gemm. Inside a rayon task (row
/// groups already run in parallel) the gemm runs single-threaded.
pub fn linear(x: &Tensor, w: &Tensor, layout: WeightLayout, b: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = *dims.last().expect("rank >= 1");
    let n = match layout {
        WeightLayout::InOut => w.dim(1)?,
        WeightLayout::OutIn => w.dim(0)?,
    };
    let bias = match b {
        Some(b) => Some(b.flatten_all()?.to_vec1::<f32>()?),
        None => None,
    };
    let out = with_f32(x, |x| {
        with_f32(w, |w| gemm_linear(x, k, w, layout, n, bias.as_deref()))
    })??;
    let mut shape = dims;
    *shape.last_mut().expect("rank >= 1") = n;
    Ok(Tensor::from_vec(out, shape, x.device())?)
}

/// All threads for a gemm called outside rayon tasks; one inside them (row groups, heads or
/// targets already run in parallel).
fn gemm_parallelism() -> gemm::Parallelism {
    let threads = rayon::current_num_threads();
    match rayon::current_thread_index() {
        None if threads > 1 => gemm::Parallelism::Rayon(threads),
        _ => gemm::Parallelism::None,
    }
}

/// The gemm behind `linear`: x [m, k] row-major, w [k, n] (InOut) or [n, k] (OutIn).
fn gemm_linear(
    x: &[f32],
    k: usize,
    w: &[f32],
    layout: WeightLayout,
    n: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let m = x.len() / k;
    let (w_rs, w_cs) = match layout {
        WeightLayout::InOut => (n as isize, 1),
        WeightLayout::OutIn => (1, k as isize),
    };
    // With a bias, gemm accumulates onto the bias rows; without, it writes every element.
    let mut out: Vec<MaybeUninit<f32>> = match bias {
        Some(b) => b.repeat(m).into_iter().map(MaybeUninit::new).collect(),
        None => uninit(m * n),
    };
    let parallelism = gemm_parallelism();
    assert!(
        x.len() == m * k && w.len() == k * n,
        "linear: shapes do not match"
    );
    // SAFETY: out is m x n and x is m x k, row-major; w holds k x n values at the strides given.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr() as *mut f32,
            1,
            n as isize,
            bias.is_some(),
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            w_cs,
            w_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
        // SAFETY: gemm wrote (or accumulated onto) every element.
        init(out)
    }
}

/// dst [m, n] (row-major, contiguous) (+)= lhs . rhs with lhs[i, kk] at `lhs[i * lrs + kk * lcs]`
/// and rhs[kk, j] at `rhs[kk * rrs + j * rcs]`. Multi-threaded unless already inside a rayon task.
/// Panics if an operand is smaller than its strides say.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_strided(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    acc: bool,
    lhs: &[f32],
    lrs: usize,
    lcs: usize,
    rhs: &[f32],
    rrs: usize,
    rcs: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(dst.len() >= m * n, "gemm: dst size");
    assert!(k == 0 || lhs.len() > last(m, k, lrs, lcs), "gemm: lhs size");
    assert!(k == 0 || rhs.len() > last(k, n, rrs, rcs), "gemm: rhs size");
    let parallelism = gemm_parallelism();
    // SAFETY: the asserts above check every operand covers the matrix its strides describe.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            acc,
            lhs.as_ptr(),
            lcs as isize,
            lrs as isize,
            rhs.as_ptr(),
            rcs as isize,
            rrs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// `src` [rows, cols] row-major, transposed to [cols, rows]: 32 x 32 tiles, one band of output
/// rows per task.
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const T: usize = 32;
    assert_eq!(src.len(), rows * cols, "transpose: size");
    let mut dst = vec![0f32; rows * cols];
    dst.par_chunks_mut(T * rows.max(1))
        .enumerate()
        .for_each(|(band, out)| {
            let c0 = band * T;
            let nc = out.len() / rows.max(1);
            for r0 in (0..rows).step_by(T) {
                for c in c0..c0 + nc {
                    for r in r0..(r0 + T).min(rows) {
                        out[(c - c0) * rows + r] = src[r * cols + c];
                    }
                }
            }
        });
    dst
}

/// The f32 data of a contiguous CPU storage, borrowed.
pub(crate) fn contiguous_f32<'a>(
    s: &'a candle_core::CpuStorage,
    l: &candle_core::Layout,
) -> candle_core::Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("fused ops need contiguous inputs"),
    }
}

/// `x @ W` as a candle op whose backward pass returns the gradient for `x` only. candle's own
/// matmul always computes the weight gradient too (and allocates a zero tensor the size of every
/// weight to accumulate it), which is most of the cost of an input-gradient backward pass.
#[derive(Debug, Clone, Copy)]
pub struct InputGradLinear(pub WeightLayout);

impl candle_core::CustomOp2 for InputGradLinear {
    fn name(&self) -> &'static str {
        "input-grad-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        // Borrow both operands: copying the weight matrix on every call costs more than the gemm
        // on small inputs.
        let x = contiguous_f32(s1, l1)?;
        let w = contiguous_f32(s2, l2)?;
        let dims = l1.dims();
        let k = dims[dims.len() - 1];
        let wd = l2.dims();
        let n = match self.0 {
            WeightLayout::InOut => wd[1],
            WeightLayout::OutIn => wd[0],
        };
        let out = gemm_linear(x, k, w, self.0, n, None);
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("rank >= 1") = n;
        Ok((candle_core::CpuStorage::F32(out), shape.into()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // dx = grad @ W^T: the same weight read in the other layout.
        let other = match self.0 {
            WeightLayout::InOut => WeightLayout::OutIn,
            WeightLayout::OutIn => WeightLayout::InOut,
        };
        let dx = linear(grad, w, other, None).map_err(candle_core::Error::wrap)?;
        Ok((Some(dx), None))
    }
}

/// SwiGLU on stacked projections: x [.., 2F] = [gate | up] -> silu(gate) * up, [.., F].
pub fn swiglu(x: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let two_f = *dims.last().expect("rank >= 1");
    let f = two_f / 2;
    let rows = x.elem_count() / two_f;
    let mut out = uninit(rows * f);
    with_f32(x, |src| {
        out.par_chunks_mut(f * 16)
            .zip(src.par_chunks(two_f * 16))
            .for_each(|(o, s)| {
                for (orow, srow) in o.chunks_mut(f).zip(s.chunks(two_f)) {
                    let (g, u) = srow.split_at(f);
                    simd::silu_mul(orow, g, u);
                }
            })
    })?;
    // SAFETY: silu_mul wrote every element of every row.
    let out = unsafe { init(out) };
    let mut shape = dims;
    *shape.last_mut().expect("rank >= 1") = f;
    Ok(Tensor::from_vec(out, shape, x.device())?)
}

/// Which keys each query sees: causal, padding (per-row key mask), optional sliding window.
pub struct AttnMask<'a> {
    /// [B * Tk], 1 for real tokens.
    pub key_mask: &'a [u8],
    pub tq: usize,
    pub tk: usize,
    pub window: Option<usize>,
}

impl AttnMask<'_> {
    #[inline]
    pub fn visible(&self, b: usize, i: usize, j: usize) -> bool {
        let qi = self.tk - self.tq + i;
        j <= qi && self.key_mask[b * self.tk + j] != 0 && self.window.is_none_or(|w| qi - j < w)
    }
}

/// RMSNorm over the last dimension: x / sqrt(mean(x^2) + eps) * w, rows in parallel.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let d = w.dim(0)?;
    let mut out = uninit(x.elem_count());
    with_f32(x, |x| {
        with_f32(w, |w| {
            out.par_chunks_mut(d * 32)
                .zip(x.par_chunks(d * 32))
                .for_each(|(o, x)| {
                    for (o, x) in o.chunks_mut(d).zip(x.chunks(d)) {
                        let ss: f32 = x.iter().map(|v| v * v).sum();
                        let inv = 1.0 / (ss / d as f32 + eps as f32).sqrt();
                        for ((o, x), w) in o.iter_mut().zip(x).zip(w) {
                            o.write(x * inv * w);
                        }
                    }
                })
        })
    })??;
    // SAFETY: every row was written.
    let out = unsafe { init(out) };
    Ok(Tensor::from_vec(out, x.dims(), x.device())?)
}

/// Head layout of a stacked q|k|v projection output.
#[derive(Debug, Clone, Copy)]
pub struct QkvLayout {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// Splits a stacked projection [B, T, (H + 2 Hkv) hd] into q [B, H, T, hd] and k, v
/// [B, Hkv, T, hd], applying RoPE (rotate-half layout, cos/sin [B, T, hd/2]) to q and k.
pub fn split_qkv(
    qkv: &Tensor,
    l: QkvLayout,
    rope: Option<(&Tensor, &Tensor)>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (b, t, width) = qkv.dims3()?;
    let (h, hkv, hd) = (l.n_heads, l.n_kv_heads, l.head_dim);
    let half = hd / 2;
    let mut q = uninit(b * h * t * hd);
    let mut k = uninit(b * hkv * t * hd);
    let mut v = uninit(b * hkv * t * hd);
    // Borrow the cos/sin tables (no copy); without RoPE, empty tables.
    let empty = Tensor::zeros(0, candle_core::DType::F32, qkv.device())?;
    let (cos_t, sin_t) = rope.unwrap_or((&empty, &empty));
    with_f32(cos_t, |cos| {
        with_f32(sin_t, |sin| {
            let tables = rope.map(|_| (cos, sin));
            with_f32(qkv, |src| {
                // One task per (row, head) of q, k and v together: disjoint outputs.
                let put = |dst: &mut [MaybeUninit<f32>], head: usize, bi: usize, roped: bool| {
                    for ti in 0..t {
                        let s = &src[(bi * t + ti) * width + head * hd..][..hd];
                        let d = &mut dst[ti * hd..(ti + 1) * hd];
                        match (&tables, roped) {
                            (Some((cos, sin)), true) => {
                                let (c, sn) = (
                                    &cos[(bi * t + ti) * half..][..half],
                                    &sin[(bi * t + ti) * half..][..half],
                                );
                                for i in 0..half {
                                    let (x1, x2) = (s[i], s[i + half]);
                                    d[i].write(x1 * c[i] - x2 * sn[i]);
                                    d[i + half].write(x2 * c[i] + x1 * sn[i]);
                                }
                            }
                            _ => d.iter_mut().zip(s).for_each(|(d, s)| {
                                d.write(*s);
                            }),
                        }
                    }
                };
                q.par_chunks_mut(t * hd)
                    .enumerate()
                    .for_each(|(i, d)| put(d, i % h, i / h, true));
                k.par_chunks_mut(t * hd)
                    .enumerate()
                    .for_each(|(i, d)| put(d, h + i % hkv, i / hkv, true));
                v.par_chunks_mut(t * hd)
                    .enumerate()
                    .for_each(|(i, d)| put(d, h + hkv + i % hkv, i / hkv, false));
            })
        })
    })???;
    // SAFETY: every (row, head, position) was written by `put`.
    let (q, k, v) = unsafe { (init(q), init(k), init(v)) };
    let dev = qkv.device();
    Ok((
        Tensor::from_vec(q, (b, h, t, hd), dev)?,
        Tensor::from_vec(k, (b, hkv, t, hd), dev)?,
        Tensor::from_vec(v, (b, hkv, t, hd), dev)?,
    ))
}

/// Scaled dot-product attention with grouped-query heads: scores, mask, softmax and the weighted
/// sum per (row, head), heads in parallel, the output written straight into [B, Tq, H*hd].
/// q [B, H, Tq, hd], k and v [B, Hkv, Tk, hd] (contiguous); probs [B, H, Tq, Tk] if asked.
/// A query with no visible key (left padding) attends uniformly, as the additive-mask path does.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttnMask,
    keep_probs: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let dims = AttnDims::of(q.shape(), k.shape())?;
    let AttnDims {
        b, h, tq, tk, hd, ..
    } = dims;
    let (out, probs) = with_f32(q, |q| {
        with_f32(k, |k| with_f32(v, |v| attention_raw(q, k, v, dims, mask)))
    })????;
    let dev = q.device();
    let out = Tensor::from_vec(out, (b, tq, h * hd), dev)?;
    let probs = if keep_probs {
        Some(Tensor::from_vec(probs, (b, h, tq, tk), dev)?)
    } else {
        None
    };
    Ok((out, probs))
}

/// Sizes of an attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnDims {
    pub b: usize,
    pub h: usize,
    pub hkv: usize,
    pub tq: usize,
    pub tk: usize,
    pub hd: usize,
}

impl AttnDims {
    /// From the shapes of q [B, H, Tq, hd] and k [B, Hkv, Tk, hd].
    pub fn of(q: &candle_core::Shape, k: &candle_core::Shape) -> candle_core::Result<Self> {
        let (b, h, tq, hd) = q.dims4()?;
        let (_, hkv, tk, _) = k.dims4()?;
        Ok(AttnDims {
            b,
            h,
            hkv,
            tq,
            tk,
            hd,
        })
    }
}

/// `gemm` on row-major operands: dst[m, n] (row stride dst_rs) = alpha * dst (if `acc`) + beta *
/// lhs[m, k] . rhs[k, n], each operand given by (row stride, column stride).
///
/// # Safety
/// Every pointer must address the whole matrix its strides describe; dst must not alias the inputs.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn mm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    acc: bool,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
    beta: f32,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            acc,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// The attention computation on raw slices: returns out [B, Tq, H*hd] and probs [B, H, Tq, Tk].
pub(crate) fn attention_raw(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    d: AttnDims,
    mask: &AttnMask,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let AttnDims {
        b,
        h,
        hkv,
        tq,
        tk,
        hd,
    } = d;
    if q.len() != b * h * tq * hd || k.len() != b * hkv * tk * hd || v.len() != k.len() {
        return Err(Error::Input("attention: q, k, v sizes do not match".into()));
    }
    let rep = h / hkv;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = uninit(b * tq * h * hd);
    let mut probs = uninit(b * h * tq * tk);
    let dst = SharedMut(out.as_mut_ptr() as *mut f32);
    probs
        .par_chunks_mut(tq * tk)
        .enumerate()
        .for_each(|(bh, p)| {
            let (bi, hi) = (bh / h, bh % h);
            let kv = (bi * hkv + hi / rep) * tk * hd;
            let qs = &q[bh * tq * hd..(bh + 1) * tq * hd];
            let (ks, vs) = (&k[kv..kv + tk * hd], &v[kv..kv + tk * hd]);
            // SAFETY: every slice holds exactly the rows x cols its strides describe; each task writes
            // its own probs block and the disjoint block out[bi, :, hi*hd..(hi+1)*hd].
            unsafe {
                // scores = scale * q . k^T   [tq, tk]
                mm(
                    tq,
                    tk,
                    hd,
                    p.as_mut_ptr() as *mut f32,
                    tk,
                    false,
                    qs.as_ptr(),
                    hd,
                    1,
                    ks.as_ptr(),
                    1,
                    hd,
                    scale,
                );
                let p = written(p);
                for (i, row) in p.chunks_mut(tk).enumerate() {
                    softmax_masked(row, |j| mask.visible(bi, i, j));
                }
                // out[bi, :, hi] = probs . v   [tq, hd], row stride H*hd
                let o = dst.ptr().add(bi * tq * h * hd + hi * hd);
                mm(
                    tq,
                    hd,
                    tk,
                    o,
                    h * hd,
                    false,
                    p.as_ptr(),
                    tk,
                    1,
                    vs.as_ptr(),
                    hd,
                    1,
                    1.0,
                );
            }
        });
    // SAFETY: the (row, head) tasks together wrote every block of `out`, and all of `probs`.
    Ok(unsafe { (init(out), init(probs)) })
}

/// In-place softmax over the visible entries of one row; hidden entries become exactly 0.
fn softmax_masked(row: &mut [f32], visible: impl Fn(usize) -> bool) {
    let mut max = f32::NEG_INFINITY;
    for (j, x) in row.iter_mut().enumerate() {
        if visible(j) {
            max = max.max(*x);
        } else {
            *x = f32::NEG_INFINITY;
        }
    }
    if max == f32::NEG_INFINITY {
        let u = 1.0 / row.len() as f32;
        row.iter_mut().for_each(|x| *x = u);
        return;
    }
    let sum = simd::exp_shift_sum(row, max);
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|x| *x *= inv);
}

/// Element-wise loops compiled twice: for AVX2 (+FMA registers; no fused arithmetic, so results
/// are bit-identical) and for the baseline, chosen at run time.
pub(crate) mod simd {
    use std::mem::MaybeUninit;

    use super::fast_exp;

    #[inline(always)]
    fn silu_mul_body(out: &mut [MaybeUninit<f32>], g: &[f32], u: &[f32]) {
        let n = out.len().min(g.len()).min(u.len());
        let (out, g, u) = (&mut out[..n], &g[..n], &u[..n]);
        for i in 0..n {
            let x = g[i];
            out[i] = MaybeUninit::new(x / (1.0 + fast_exp(-x)) * u[i]);
        }
    }

    #[inline(always)]
    fn exp_shift_sum_body(row: &mut [f32], shift: f32) -> f32 {
        // Masked entries are -inf: exp(-inf) = 0 through fast_exp's cut-off.
        let mut acc = [0f32; 8];
        let mut chunks = row.chunks_exact_mut(8);
        for c in &mut chunks {
            for j in 0..8 {
                c[j] = fast_exp(c[j] - shift);
                acc[j] += c[j];
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for x in chunks.into_remainder() {
            *x = fast_exp(*x - shift);
            sum += *x;
        }
        sum
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn silu_mul_avx2(out: &mut [MaybeUninit<f32>], g: &[f32], u: &[f32]) {
        silu_mul_body(out, g, u)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp_shift_sum_avx2(row: &mut [f32], shift: f32) -> f32 {
        exp_shift_sum_body(row, shift)
    }

    fn has_avx2() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
            *AVX2
                .get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// out = silu(g) * u
    pub fn silu_mul(out: &mut [MaybeUninit<f32>], g: &[f32], u: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            return unsafe { silu_mul_avx2(out, g, u) };
        }
        silu_mul_body(out, g, u)
    }

    /// row = exp(row - shift); returns the sum.
    pub fn exp_shift_sum(row: &mut [f32], shift: f32) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            return unsafe { exp_shift_sum_avx2(row, shift) };
        }
        exp_shift_sum_body(row, shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_util::max_diff;
    use candle_core::Device;

    #[test]
    fn transpose_matches_naive() {
        for (r, c) in [(1, 5), (5, 1), (37, 70), (64, 32), (33, 100)] {
            let src: Vec<f32> = (0..r * c).map(|i| i as f32).collect();
            let t = transpose(&src, r, c);
            for i in 0..r {
                for j in 0..c {
                    assert_eq!(t[j * r + i], src[i * c + j], "{r}x{c} at {i},{j}");
                }
            }
        }
    }

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let rel = ((fast_exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 3e-7, "max relative error {worst:e}");
        assert_eq!(fast_exp(-1e30), 0.0);
        assert_eq!(fast_exp(0.0), 1.0);
    }

    #[test]
    fn rms_norm_matches_candle() {
        let x = Tensor::randn(0f32, 2., (3, 5, 16), &Device::Cpu).unwrap();
        let w = Tensor::randn(1f32, 0.1, 16, &Device::Cpu).unwrap();
        let want = candle_nn::ops::rms_norm_slow(&x, &w, 1e-5).unwrap();
        let got = rms_norm(&x, &w, 1e-5).unwrap();
        let d = max_diff(&got, &want);
        assert!(d < 1e-5, "{d}");
    }

    #[test]
    fn swiglu_matches_candle() {
        let x = Tensor::randn(0f32, 2., (3, 5, 8), &Device::Cpu).unwrap();
        let g = x.narrow(2, 0, 4).unwrap();
        let u = x.narrow(2, 4, 4).unwrap();
        let want = (g.silu().unwrap() * u).unwrap();
        let got = swiglu(&x).unwrap();
        let d = max_diff(&got, &want);
        assert!(d < 1e-5, "{d}");
    }
}
