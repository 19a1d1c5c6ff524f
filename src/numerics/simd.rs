//! Run-time SIMD dispatch: the same Rust loops compiled for wider registers when the CPU has
//! them, chosen once per process. Rust never fuses a multiply and an add on its own and sums
//! run in a fixed order, so every variant gives the same bits.
//!
//! Two forms: `simd_call!` (AVX-512F, or AVX2 + FMA), for the reverse pass's row steps and
//! attention; and `silu_mul` / `exp_shift_sum`, the element-wise loops of the fused forward
//! kernels, compiled for AVX2 + FMA only.

use std::mem::MaybeUninit;

use super::math::fast_exp;

/// Calls the `#[inline(always)]` function `body` compiled for AVX-512F, or AVX2 + FMA, when the
/// CPU has them (else as is): the function is inlined into a wrapper with those features, so
/// its loops use the wide registers. Closures handed to a feature-enabled function are not
/// reliably inlined into it, which left the reverse pass's row steps in SSE code.
macro_rules! simd_call {
    ($body:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)?) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f")]
            unsafe fn wide($($a: $t),*) $(-> $r)? { $body($($a),*) }
            #[target_feature(enable = "avx2,fma")]
            unsafe fn narrow($($a: $t),*) $(-> $r)? { $body($($a),*) }
            match $crate::numerics::simd::simd_level() {
                // SAFETY: the CPU has the features (checked once by `simd_level`).
                2 => return unsafe { wide($($a),*) },
                // SAFETY: as above.
                1 => return unsafe { narrow($($a),*) },
                _ => {}
            }
        }
        $body($($a),*)
    }};
}
pub(crate) use simd_call;

/// 2: AVX-512F, 1: AVX2 + FMA, 0: neither.
#[cfg(target_arch = "x86_64")]
pub(crate) fn simd_level() -> u8 {
    static LEVEL: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        if std::is_x86_feature_detected!("avx512f") {
            2
        } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            1
        } else {
            0
        }
    })
}

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
        *AVX2.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
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
