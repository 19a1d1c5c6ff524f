//! Linear CKA: from covariances (Ecco's `cka`, `cka_lib.feature_space_linear_cka`, which is
//! ||Σab||²_F / (||Σaa||_F ||Σbb||_F): the 1/(n-1) factors cancel), its debiased form
//! (`debiased=True`: Song et al.'s unbiased HSIC in feature space), and the U-centring of a Gram
//! matrix that the minibatch estimator's unbiased HSIC uses.

use super::dense::{frob2, mul_nt, mul_tn};

/// Ecco's `cka` from the covariances of a pair: ||Σab||²_F / (||Σaa||_F ||Σbb||_F) (NaN when a
/// side is constant, as Ecco's).
pub(crate) fn cka_from_cov(caa: &[f64], cbb: &[f64], cab: &[f64]) -> f64 {
    frob2(cab) / (frob2(caa).sqrt() * frob2(cbb).sqrt())
}

/// The inner products a linear CKA of two centred matrices needs: ||XcᵀYc||², ||XcᵀXc||²,
/// ||YcᵀYc||² and the datapoints' squared norms ||xc_i||², ||yc_i||².
pub(crate) struct HsicTerms {
    pub xy: f64,
    pub xx: f64,
    pub yy: f64,
    pub rows_x: Vec<f64>,
    pub rows_y: Vec<f64>,
}

/// `HsicTerms` of centred xc [n, dx], yc [n, dy], in feature space (d × d products) or, when
/// cheaper, with n × n Gram matrices (||XcᵀYc||²_F = <Xc Xcᵀ, Yc Ycᵀ>_F).
pub(crate) fn hsic_terms(xc: &[f64], yc: &[f64], n: usize, dx: usize, dy: usize) -> HsicTerms {
    let rows = |m: &[f64], d: usize| -> Vec<f64> {
        m.chunks_exact(d.max(1))
            .map(|r| r.iter().map(|v| v * v).sum())
            .collect()
    };
    let (rows_x, rows_y) = (rows(xc, dx), rows(yc, dy));
    let feature_cost = dx * dx + dy * dy + dx * dy;
    let gram_cost = n * (dx + dy);
    let (xy, xx, yy) = if feature_cost <= gram_cost {
        (
            frob2(&mul_tn(xc, yc, n, dx, dy)),
            frob2(&mul_tn(xc, xc, n, dx, dx)),
            frob2(&mul_tn(yc, yc, n, dy, dy)),
        )
    } else {
        let k = mul_nt(xc, xc, n, dx, n);
        let l = mul_nt(yc, yc, n, dy, n);
        (
            k.iter().zip(&l).map(|(a, b)| a * b).sum(),
            frob2(&k),
            frob2(&l),
        )
    };
    HsicTerms {
        xy,
        xx,
        yy,
        rows_x,
        rows_y,
    }
}

/// Ecco's biased linear CKA from the terms.
pub(crate) fn cka_biased(t: &HsicTerms) -> f64 {
    t.xy / (t.xx.sqrt() * t.yy.sqrt())
}

/// `cka_lib._debiased_dot_product_similarity_helper`.
fn debiased(xty: f64, rx: &[f64], ry: &[f64], nx: f64, ny: f64, n: f64) -> f64 {
    let dot: f64 = rx.iter().zip(ry).map(|(a, b)| a * b).sum();
    xty - n / (n - 2.0) * dot + nx * ny / ((n - 1.0) * (n - 2.0))
}

/// `cka_lib.feature_space_linear_cka(x, y, debiased=True)` from the terms (n ≥ 4; NaN when an
/// estimated self-HSIC is negative, as cka_lib's square root gives).
pub(crate) fn cka_debiased(t: &HsicTerms, n: usize) -> f64 {
    let n = n as f64;
    let nx: f64 = t.rows_x.iter().sum();
    let ny: f64 = t.rows_y.iter().sum();
    let xy = debiased(t.xy, &t.rows_x, &t.rows_y, nx, ny, n);
    let xx = debiased(t.xx, &t.rows_x, &t.rows_x, nx, nx, n).sqrt();
    let yy = debiased(t.yy, &t.rows_y, &t.rows_y, ny, ny, n).sqrt();
    xy / (xx * yy)
}

/// The U-centred Gram matrix (Székely & Rizzo 2014; `cka_lib.center_gram(unbiased=True)`), in
/// place: with it, <Ũ(K), Ũ(L)>_F / (n (n - 3)) is the unbiased HSIC of Song et al. 2007
/// (n ≥ 4). Invariant to adding a constant to every feature, so the features may be centred
/// first for accuracy.
pub(crate) fn u_centre(g: &mut [f64], n: usize) {
    for i in 0..n {
        g[i * n + i] = 0.0;
    }
    let mut means = vec![0.0; n];
    for r in g.chunks_exact(n) {
        means.iter_mut().zip(r).for_each(|(m, v)| *m += v);
    }
    means.iter_mut().for_each(|m| *m /= n as f64 - 2.0);
    let total = means.iter().sum::<f64>() / (2.0 * (n as f64 - 1.0));
    means.iter_mut().for_each(|m| *m -= total);
    for (i, r) in g.chunks_exact_mut(n).enumerate() {
        let mi = means[i];
        r.iter_mut().zip(&means).for_each(|(v, mj)| *v -= mi + mj);
        r[i] = 0.0;
    }
}
