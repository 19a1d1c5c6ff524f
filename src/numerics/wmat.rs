//! Weight matrices held as f32, bf16 or f16 (`WSlice`) and their products with f32 activations
//! (`gemm_w`, `gemm_w_strided`). A half-precision matrix is widened to f32 one panel of output
//! columns at a time (about 1 MB, in a per-thread scratch buffer) and multiplied by the f32 gemm:
//! products accumulate in f32 and are exact with respect to the stored weights, and no f32 copy
//! of a whole matrix ever exists. Why not half-precision kernels: the gemm crate has none for
//! bf16, its f16 kernels on x86 also widen to f32 (native f16 arithmetic only on ARM), and both
//! need the activations in half precision too, which rounds every intermediate value. Widening
//! is memory-bound and costs about 1/m of the product for m activation rows; its loops are
//! compiled for AVX-512F / AVX2 and chosen at run time (`simd_call!`), f16 through the F16C
//! conversion the half crate selects at run time. A weight stored [n, k] (the reverse pass's
//! input-gradient product reads every weight that way) multiplying many rows is transposed into
//! the panels while widened, f32 too (a panel copy): gemm reads [k, n] panels faster, and no
//! transposed copy of a whole matrix is kept.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;

use super::buffer::SharedMut;
use super::matrix::{gemm_parallelism, gemm_raw};
use super::simd::simd_call;

/// A weight matrix's values in their storage type, row-major.
#[derive(Debug, Clone, Copy)]
pub enum WSlice<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
    F16(&'a [f16]),
}

impl WSlice<'_> {
    pub fn len(&self) -> usize {
        match self {
            WSlice::F32(s) => s.len(),
            WSlice::Bf16(s) => s.len(),
            WSlice::F16(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values from `start` on.
    pub fn tail(&self, start: usize) -> Self {
        match self {
            WSlice::F32(s) => WSlice::F32(&s[start..]),
            WSlice::Bf16(s) => WSlice::Bf16(&s[start..]),
            WSlice::F16(s) => WSlice::F16(&s[start..]),
        }
    }

    /// dst = the values at `start..start + dst.len()`, as f32 (exact: every bf16 and f16 value is
    /// an f32 value).
    pub fn widen(&self, start: usize, dst: &mut [f32]) {
        let end = start + dst.len();
        match self {
            WSlice::F32(s) => dst.copy_from_slice(&s[start..end]),
            WSlice::Bf16(s) => widen_bf16(s[start..end].reinterpret_cast(), dst),
            WSlice::F16(s) => s[start..end].convert_to_f32_slice(dst),
        }
    }
}

#[inline(always)]
fn widen_bf16_body(src: &[u16], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f32::from_bits((s as u32) << 16);
    }
}

fn widen_bf16(src: &[u16], dst: &mut [f32]) {
    simd_call!(widen_bf16_body(src: &[u16], dst: &mut [f32]))
}

/// Elements of f32 scratch per widened panel (1 MB): large enough that gemm works on full
/// blocks, small enough to stay in the cache until gemm packs it.
const PANEL_ELEMS: usize = 1 << 18;

/// The narrowest panel (output columns) when n allows: gemm's widest micro-kernel covers 64.
const MIN_PANEL_COLS: usize = 128;

/// Activation rows from which a half-precision weight stored [n, k] is transposed while widened:
/// below that, it is widened as is and gemm reads it strided.
const TRANSPOSE_MIN_ROWS: usize = 64;

/// Activation rows from which an f32 weight stored [n, k] is copied into transposed panels:
/// below that, gemm reads it in place. The copy costs about one memory pass over the weight per
/// call, the faster layout saves ~30% of the product, so it pays from a few hundred rows (with
/// 64, grad x input on a 1B model, ~160 rows a thread, ran 25% slower than without copies).
const F32_PANEL_MIN_ROWS: usize = 256;

thread_local! {
    /// Each thread's panel buffer, taken out while in use (so a task stolen by a waiting thread
    /// gets a fresh one instead of a borrow error).
    static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    /// Rows of a weight stored [n, k], widened before they are written into a panel.
    static TILE: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// dst [m, n] (row stride `dst_rs`) = dst (if `acc`) + lhs [m, k] . rhs [k, n], with lhs[i, kk] at
/// `lhs[i * lrs + kk * lcs]` and rhs[kk, j] at `rhs[kk * rrs + j * rcs]`, on the threads
/// `parallelism` gives. A half-precision rhs must be stored row-major either way round:
/// `rcs == 1` ([k, n] rows) or `rrs == 1` ([n, k] rows).
///
/// # Safety
/// dst and lhs must address the whole matrices their strides describe, dst must not alias lhs,
/// and rhs must hold every element its strides address (checked by an assert).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_w(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    acc: bool,
    lhs: *const f32,
    lrs: usize,
    lcs: usize,
    rhs: WSlice,
    rrs: usize,
    rcs: usize,
    parallelism: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = if k == 0 {
        0
    } else {
        (k - 1) * rrs + (n - 1) * rcs + 1
    };
    assert!(rhs.len() >= last, "gemm: rhs size");
    // f32 goes straight to gemm, except a weight stored [n, k] multiplying many rows: that one
    // is copied into transposed panels like a half-precision one (gemm reads [k, n] panels
    // faster, and no transposed copy of the whole matrix is kept).
    let f32_panels = rrs == 1 && rcs != 1 && m >= F32_PANEL_MIN_ROWS;
    if let (WSlice::F32(w), false) = (rhs, f32_panels) {
        // SAFETY: forwarded from the caller; rhs checked above.
        unsafe {
            gemm_raw(
                m,
                n,
                k,
                dst,
                dst_rs,
                acc,
                lhs,
                lrs,
                lcs,
                w.as_ptr(),
                rrs,
                rcs,
                1.0,
                parallelism,
            )
        };
        return;
    }
    assert!(
        rcs == 1 || rrs == 1,
        "gemm: a half-precision weight must be row-major"
    );
    // A panel is `kb` rows of k by `nb` output columns: at least MIN_PANEL_COLS columns, so
    // that gemm runs its widest micro-kernels (a 16-column panel of a [16384, 2048] weight ran
    // the 16-lane kernel at a third of the speed), and k split into blocks when the panel would
    // exceed PANEL_ELEMS; the blocks of one panel accumulate into its columns in turn.
    let nb = PANEL_ELEMS
        .checked_div(k)
        .map_or(n, |c| (c / 16 * 16).max(MIN_PANEL_COLS).min(n));
    let kb = if k == 0 {
        0
    } else {
        (PANEL_ELEMS / nb).clamp(1, k)
    };
    let panels: Vec<usize> = (0..n).step_by(nb).collect();
    let out = SharedMut(dst);
    let lhs = lhs as usize;
    let run = |j0: usize, inner: gemm::Parallelism| {
        let w = (n - j0).min(nb);
        let mut buf = SCRATCH.take();
        let mut k0 = 0;
        loop {
            let kw = (k - k0).min(kb);
            buf.resize(kw * w, 0.0);
            let (prs, pcs) = if rcs == 1 {
                for kk in 0..kw {
                    rhs.widen((k0 + kk) * rrs + j0, &mut buf[kk * w..(kk + 1) * w]);
                }
                (w, 1)
            } else if m < TRANSPOSE_MIN_ROWS {
                for j in 0..w {
                    rhs.widen((j0 + j) * rcs + k0, &mut buf[j * kw..(j + 1) * kw]);
                }
                (1, kw)
            } else {
                let mut tile = TILE.take();
                tile.resize(16 * kw, 0.0);
                for t0 in (0..w).step_by(16) {
                    let tw = (w - t0).min(16);
                    for j in 0..tw {
                        rhs.widen((j0 + t0 + j) * rcs + k0, &mut tile[j * kw..(j + 1) * kw]);
                    }
                    for kk in 0..kw {
                        let row = &mut buf[kk * w + t0..kk * w + t0 + tw];
                        for (j, v) in row.iter_mut().enumerate() {
                            *v = tile[j * kw + kk];
                        }
                    }
                }
                TILE.set(tile);
                (w, 1)
            };
            // SAFETY: panels write disjoint column ranges of dst; lhs is only read.
            unsafe {
                gemm_raw(
                    m,
                    w,
                    kw,
                    out.ptr().add(j0),
                    dst_rs,
                    acc || k0 > 0,
                    (lhs as *const f32).add(k0 * lcs),
                    lrs,
                    lcs,
                    buf.as_ptr(),
                    prs,
                    pcs,
                    1.0,
                    inner,
                )
            };
            k0 += kw;
            if k0 >= k {
                break;
            }
        }
        SCRATCH.set(buf);
    };
    match parallelism {
        gemm::Parallelism::Rayon(t) if t > 1 && panels.len() > 1 => panels
            .par_iter()
            .for_each(|&j0| run(j0, gemm::Parallelism::None)),
        p if panels.len() == 1 => run(0, p),
        _ => panels
            .iter()
            .for_each(|&j0| run(j0, gemm::Parallelism::None)),
    }
}

/// `gemm_w` on slices: dst [m, n] contiguous (+)= lhs . rhs; multi-threaded unless already inside
/// a rayon task. Panics if an operand is smaller than its strides say.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_w_strided(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    acc: bool,
    lhs: &[f32],
    lrs: usize,
    lcs: usize,
    rhs: WSlice,
    rrs: usize,
    rcs: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst.len() >= m * n, "gemm: dst size");
    assert!(
        k == 0 || lhs.len() > (m - 1) * lrs + (k - 1) * lcs,
        "gemm: lhs size"
    );
    // SAFETY: checked above (rhs inside gemm_w).
    unsafe {
        gemm_w(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            n,
            acc,
            lhs.as_ptr(),
            lrs,
            lcs,
            rhs,
            rrs,
            rcs,
            gemm_parallelism(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numerics::rng::SplitMix64;

    fn naive(
        m: usize,
        n: usize,
        k: usize,
        lhs: &[f32],
        rhs: &[f32],
        rrs: usize,
        rcs: usize,
    ) -> Vec<f32> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                for kk in 0..k {
                    out[i * n + j] += lhs[i * k + kk] as f64 * rhs[kk * rrs + j * rcs] as f64;
                }
            }
        }
        out.into_iter().map(|v| v as f32).collect()
    }

    #[test]
    fn half_weights_multiply_like_their_f32_values() {
        let mut rng = SplitMix64::new(7);
        let mut normal = move || (rng.next_f64() * 2.0 - 1.0) as f32;
        // Shapes with one panel, several panels and a ragged last panel (k = 300: 864 columns
        // a panel), k split into blocks (k = 3000 and 5000 > 2048 rows a 128-column panel, the
        // last block ragged), few and many rows (the [n, k] order widened as is, or
        // transposed; f32 copied into panels from 256 rows), in both storage orders, with and
        // without accumulation.
        for &(m, n, k) in &[
            (3, 5, 7),
            (17, 200, 3000),
            (1, 33, 64),
            (40, 1000, 300),
            (70, 100, 50),
            (70, 300, 5000),
            (260, 140, 40),
            (0, 10, 10),
            (5, 10, 0),
        ] {
            let lhs: Vec<f32> = (0..m * k).map(|_| normal()).collect();
            let w32: Vec<f32> = (0..k * n).map(|_| normal()).collect();
            let wb: Vec<bf16> = w32.iter().map(|&v| bf16::from_f32(v)).collect();
            let wh: Vec<f16> = w32.iter().map(|&v| f16::from_f32(v)).collect();
            for (rrs, rcs) in [(n, 1), (1, k)] {
                for (name, w, widened) in [
                    (
                        "bf16",
                        WSlice::Bf16(&wb),
                        wb.iter().map(|v| v.to_f32()).collect::<Vec<_>>(),
                    ),
                    (
                        "f16",
                        WSlice::F16(&wh),
                        wh.iter().map(|v| v.to_f32()).collect(),
                    ),
                    ("f32", WSlice::F32(&w32), w32.clone()),
                ] {
                    let want = naive(m, n, k, &lhs, &widened, rrs, rcs);
                    for acc in [false, true] {
                        let mut got = vec![if acc { 1.0 } else { f32::NAN }; m * n];
                        gemm_w_strided(m, n, k, &mut got, acc, &lhs, k, 1, w, rrs, rcs);
                        let bias = if acc { 1.0 } else { 0.0 };
                        for (g, w) in got.iter().zip(&want) {
                            let err = (g - (w + bias)).abs();
                            assert!(
                                err <= 1e-4 * (1.0 + w.abs()) * (k as f32).sqrt(),
                                "{name} {m}x{n}x{k} strides ({rrs},{rcs}) acc {acc}: {g} vs {}",
                                w + bias
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bf16_widening_is_exact() {
        let vals = [0.0f32, -0.0, 1.0, -2.5, 3.0e38, 1.0e-40, f32::INFINITY, 0.1];
        let b: Vec<bf16> = vals.iter().map(|&v| bf16::from_f32(v)).collect();
        let mut out = vec![0f32; vals.len()];
        WSlice::Bf16(&b).widen(0, &mut out);
        for (o, b) in out.iter().zip(&b) {
            assert_eq!(o.to_bits(), b.to_f32().to_bits());
        }
    }
}
