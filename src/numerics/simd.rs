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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numerics::rng::SplitMix64;

    /// Seeded values in [-scale, scale).
    fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut r = SplitMix64::new(seed);
        (0..n)
            .map(|_| (r.next_f64() as f32 * 2.0 - 1.0) * scale)
            .collect()
    }

    /// Every length from 0 to 70 (all remainders of the 8- and 16-lane loops), seeded inputs:
    /// the dispatched kernel gives the portable loop's bits and is close to f64.
    #[test]
    fn silu_mul_at_every_width() {
        for n in 0..=70 {
            let (g, u) = (values(n, n as u64, 8.0), values(n, 1000 + n as u64, 2.0));
            let mut fast = vec![MaybeUninit::new(f32::NAN); n];
            let mut plain = vec![MaybeUninit::new(f32::NAN); n];
            silu_mul(&mut fast, &g, &u);
            silu_mul_body(&mut plain, &g, &u);
            for i in 0..n {
                // SAFETY: both kernels write every element (and they start initialized).
                let (a, b) = unsafe { (fast[i].assume_init(), plain[i].assume_init()) };
                assert_eq!(a.to_bits(), b.to_bits(), "width {n}, element {i}");
                let x = g[i] as f64;
                let want = x / (1.0 + (-x).exp()) * u[i] as f64;
                assert!(
                    (a as f64 - want).abs() < 1e-5,
                    "width {n}, element {i}: {a} vs {want}"
                );
            }
        }
    }

    #[test]
    fn exp_shift_sum_at_every_width() {
        for n in 0..=70 {
            let mut row = values(n, 7 + n as u64, 20.0);
            // Masked entries, as attention gives them.
            for x in row.iter_mut().skip(2).step_by(5) {
                *x = f32::NEG_INFINITY;
            }
            let shift = row
                .iter()
                .copied()
                .fold(f32::NEG_INFINITY, f32::max)
                .max(0.0);
            let (mut fast, mut plain) = (row.clone(), row.clone());
            let sum = exp_shift_sum(&mut fast, shift);
            let sum_plain = exp_shift_sum_body(&mut plain, shift);
            assert_eq!(sum.to_bits(), sum_plain.to_bits(), "width {n}");
            let mut want_sum = 0f64;
            for i in 0..n {
                assert_eq!(
                    fast[i].to_bits(),
                    plain[i].to_bits(),
                    "width {n}, element {i}"
                );
                // From the f32 difference the kernel exponentiates (its rounding is not the
                // kernel's error).
                let want = ((row[i] - shift) as f64).exp();
                want_sum += want;
                assert!(
                    (fast[i] as f64 - want).abs() <= 1e-6 * want.max(1e-30) + 1e-37,
                    "width {n}, element {i}: {} vs {want}",
                    fast[i]
                );
            }
            assert!(
                (sum as f64 - want_sum).abs() <= 1e-5 * want_sum.max(1e-30),
                "width {n}: sum {sum} vs {want_sum}"
            );
        }
    }
}
