//! Scalar math written so that loops over it vectorize (a branch-free `exp`, a sum in 16
//! lanes), and the cosine similarity of two vectors.

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

/// sum f(i) for i in 0..n, in 16 lanes (a single running sum cannot be vectorized without
/// reassociating it; lanes can, and are summed at the end).
#[inline(always)]
pub(crate) fn lane_sum(n: usize, f: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let full = n / 16 * 16;
    let mut i = 0;
    while i < full {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(i + l);
        }
        i += 16;
    }
    let mut s: f32 = acc.iter().sum();
    for j in full..n {
        s += f(j);
    }
    s
}

/// The cosine of the angle between `a` and `b`, summed in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
