//! Ecco's CCA family computed from covariances alone: `get_cca_similarity` (svcca_lib's
//! `cca_core.py`), SVCCA's projection on the top principal directions, and PWCCA's projection
//! weights (`pwcca.py`), step by step as Ecco does them.
//!
//! `get_cca_similarity(acts1, acts2, epsilon)` on covariances Σxx, Σxy, Σyy (`np.cov`):
//! 1. Σxx /= max|Σxx|, Σyy /= max|Σyy|, Σxy /= sqrt(max|Σxx| max|Σyy|);
//! 2. `remove_small`: neurons whose scaled variance is below epsilon are dropped (a side with
//!    none left gives Ecco's zero result: every metric 0);
//! 3. (Σxx + εI)^(-1/2) Σxy (Σyy + εI)^(-1/2) = U diag(s) Vᵀ; s, descending, are the canonical
//!    correlations. Ecco takes `pinv` then the square root by `eigh`; here one eigendecomposition
//!    of Σxx gives the inverse square root directly (the same matrix: with ε = 1e-10 and the
//!    scaled entries ≤ 1, pinv's cutoff of 1e-15 σ_max never drops a direction; but with a
//!    nearly singular Σxx, condition ~1e10 after adding ε, Ecco's two steps lose ~6 digits, so
//!    there its values differ from these by up to ~1e-5 while these match the same steps done
//!    with `eigh` to ~1e-12: see the golden's duplicated-neuron layer). s comes from
//!    the eigenvalues of T Tᵀ on the smaller side, so a canonical correlation near 0 carries an
//!    absolute error up to ~sqrt(machine epsilon) ≈ 1e-8; the larger ones ~1e-15.
//! 4. `cca` = the mean of s[..i], i the first index with sum(s[..i]) ≥ 0.98 sum(s) (all of s if
//!    none); `svcca` = the mean of all of s.
//!
//! SVCCA (Ecco's `svcca(acts1, acts2, dims)`): centre, SVD Xc = U S Vᵀ (neurons × datapoints),
//! keep s_i v_iᵀ for the top `dims`. Those rows are u_iᵀ Xc, the data projected on the top
//! principal directions u_i (eigenvectors of Xc Xcᵀ = (n-1) Σ), so their covariances are
//! Cov(sv1) = U_kᵀ Σxx U_k = diag(λ_1..λ_k), Cov(sv1, sv2) = U_kᵀ Σxy W_k: the top-`dims`
//! eigenvectors of each side's covariance and the cross covariance are all CCA needs (the
//! projections have mean 0, so `np.cov` recentring them changes nothing). Eigenvector signs do
//! not matter (they flip rows and columns of T, not its singular values).
//!
//! PWCCA (Ecco's `compute_pwcca`): the side keeping fewer neurons (the first on a tie) with its
//! k × k singular vectors C (rows; U's columns for the first side, V's for the second) and its
//! kept centred activations Xc (k × n): directions D = C Xc (no inverse square root, as Ecco),
//! Q R = qr(Dᵀ), weights_i = Σ_j |(Qᵀ Xᵀ)_ij| over the side's kept neurons, normalized to sum 1,
//! pwcca = Σ_i weights_i s_i. With S = Xc Xcᵀ = (n-1) Σ: G = D Dᵀ = C S Cᵀ = Rᵀ R, and
//! Qᵀ Xᵀ = R⁻ᵀ D Xᵀ = R⁻ᵀ C S (Q's columns are centred, so raw or centred X give the same), so
//! the weights come from the covariance through a Cholesky factor of G (the signs numpy's QR
//! may give R's rows vanish in the absolute values).
//!
//! Two deviations from Ecco's code, both plain bugs there:
//! - Ecco adds the neuron means back to the rotated directions, D = C Xc + μ1ᵀ (μ indexed by
//!   neuron, added to rows indexed by direction). Its value then depends on the arbitrary sign
//!   LAPACK gives each singular vector: flipping c_i turns row i into -c_iᵀXc + μ_i, not into
//!   minus itself (on the golden pair a0, b0, flipping one sign moves Ecco's value by 1.3e-4;
//!   dropping the means moves it from 0.714 to 0.743). Here D = C Xc: Ecco's value whenever its
//!   inputs are centred, the one case where Ecco's value is a function of the data alone, and
//!   invariant to a shift of either side.
//! - Ecco's second-side branch multiplies `acts1[y_idxs]`, a typo for `acts2` (it raises
//!   IndexError when the second side has fewer neurons, and silently mixes the two sides when
//!   both have as many); this is the intended `acts2`.
//!
//! The Cholesky works on G, whose condition number is the square of the data's, so with
//! strongly collinear neurons it is less accurate than numpy's QR on the data. Linearly
//! dependent kept neurons (a duplicated neuron, fewer distinct positions than neurons) make G
//! singular: a direction with less than 1e-10 of its squared norm outside the span of the
//! directions before it gets weight 0, as in numpy, where QR gives it a column orthogonal to
//! all the data (weight ~1e-17; checked on the golden's duplicated-neuron layer).

use crate::numerics::eigen::{SymmetricEigen, symmetric_eigenvalues};

use super::SimilarityError;
use super::dense::{
    cholesky_semidefinite, eigen, inv_sqrt, mul, mul_nt, mul_tn, select, solve_lower,
};
use super::moments::LayerStats;

/// Ecco's threshold on the cumulative sum of the canonical correlations for `cca`'s mean.
const THRESHOLD: f64 = 0.98;

/// PWCCA: a direction whose part not in the span of the ones before has less than this
/// fraction of its squared norm is taken as dependent (weight 0).
const DEPENDENT: f64 = 1e-10;

/// One side of `get_cca_similarity` after its steps 1-2 and the inverse square root of step 3.
#[derive(Debug, Clone)]
pub(crate) struct CcaSide {
    /// The neurons `remove_small` keeps.
    pub kept: Vec<usize>,
    /// max |Σ| (Ecco's xmax / ymax).
    pub scale: f64,
    /// (Σ[kept, kept] / scale + ε I)^(-1/2), k × k.
    pub invsqrt: Vec<f64>,
}

/// The top principal directions of one side for SVCCA.
#[derive(Debug, Clone)]
pub(crate) struct PcaSide {
    /// The covariance's top eigenvalues, descending.
    pub values: Vec<f64>,
    /// Their unit eigenvectors, one row each (dims × width).
    pub vectors: Vec<f64>,
}

/// What a layer's metrics need, computed once per layer.
#[derive(Debug, Clone, Default)]
pub(crate) struct LayerPrep {
    pub cca: Option<CcaSide>,
    pub pca: Option<PcaSide>,
}

fn eigen_error(what: &str, source: crate::numerics::eigen::EigenError) -> SimilarityError {
    SimilarityError::Eigen {
        what: format!("{what}: eigendecomposition"),
        source,
    }
}

/// Steps 1-2 and the inverse square root of a side with covariance `cov` [d, d]; also the
/// eigendecomposition of Σ[kept, kept] / scale (for reuse by SVCCA when nothing was dropped).
fn cca_side(
    cov: &[f64],
    d: usize,
    eps: f64,
    what: &str,
) -> Result<(CcaSide, Option<SymmetricEigen>), SimilarityError> {
    let scale = cov.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let kept: Vec<usize> = if scale > 0.0 {
        (0..d)
            .filter(|&i| (cov[i * d + i] / scale).abs() >= eps)
            .collect()
    } else {
        Vec::new()
    };
    if kept.is_empty() {
        let side = CcaSide {
            kept,
            scale,
            invsqrt: Vec::new(),
        };
        return Ok((side, None));
    }
    let k = kept.len();
    let sub = select(cov, d, &kept, &kept, 1.0 / scale);
    let eig = eigen(&sub, k).map_err(|e| eigen_error(what, e))?;
    let invsqrt = inv_sqrt(&eig, eps);
    Ok((
        CcaSide {
            kept,
            scale,
            invsqrt,
        },
        Some(eig),
    ))
}

/// The top `dims` eigenpairs of an eigendecomposition, descending, eigenvalues times `scale`.
fn top(eig: &SymmetricEigen, dims: usize, scale: f64) -> PcaSide {
    let n = eig.n();
    let mut values = Vec::with_capacity(dims);
    let mut vectors = Vec::with_capacity(dims * n);
    for j in (n - dims..n).rev() {
        values.push(eig.values[j] * scale);
        vectors.extend_from_slice(eig.vector(j));
    }
    PcaSide { values, vectors }
}

/// A layer's CCA side (when `cca`) and its top-`dims` principal directions (when `dims`).
pub(crate) fn prepare(
    stats: &LayerStats,
    cca: bool,
    dims: Option<usize>,
    eps: f64,
    what: &str,
) -> Result<LayerPrep, SimilarityError> {
    let d = stats.width;
    let mut prep = LayerPrep::default();
    let mut shared = None;
    if cca {
        let (side, eig) = cca_side(&stats.cov, d, eps, what)?;
        if side.kept.len() == d {
            shared = eig.map(|e| (e, side.scale));
        }
        prep.cca = Some(side);
    }
    if let Some(dims) = dims {
        prep.pca = Some(match &shared {
            Some((eig, scale)) => top(eig, dims, *scale),
            None => top(
                &eigen(&stats.cov, d).map_err(|e| eigen_error(what, e))?,
                dims,
                1.0,
            ),
        });
    }
    Ok(prep)
}

/// Step 3's canonical correlations, and the chosen side's singular vectors for PWCCA.
#[derive(Debug, Clone)]
pub(crate) struct Canonical {
    /// Descending, min(k_a, k_b) of them.
    pub s: Vec<f64>,
    /// Whether the first side keeps no more neurons than the second (PWCCA's side).
    pub first: bool,
    /// With `vectors`: that side's singular vectors, one row each in the order of `s`.
    pub coef: Option<Vec<f64>>,
}

/// Step 3 for two prepared sides and their cross covariance `cross` [d_a, d_b]; `None` when a
/// side kept no neuron (Ecco's zero result).
pub(crate) fn canonical(
    a: &CcaSide,
    b: &CcaSide,
    cross: &[f64],
    db: usize,
    vectors: bool,
    what: &str,
) -> Result<Option<Canonical>, SimilarityError> {
    let (ka, kb) = (a.kept.len(), b.kept.len());
    if ka == 0 || kb == 0 {
        return Ok(None);
    }
    let c = select(
        cross,
        db,
        &a.kept,
        &b.kept,
        1.0 / (a.scale * b.scale).sqrt(),
    );
    let t = mul(&a.invsqrt, &c, ka, ka, kb);
    let t = mul(&t, &b.invsqrt, ka, kb, kb);
    let first = ka <= kb;
    let (m, k) = if first {
        (mul_nt(&t, &t, ka, kb, ka), ka)
    } else {
        (mul_tn(&t, &t, ka, kb, kb), kb)
    };
    let sv = |l: f64| l.max(0.0).sqrt();
    if vectors {
        let eig = eigen(&m, k).map_err(|e| eigen_error(what, e))?;
        let s = eig.values.iter().rev().map(|&l| sv(l)).collect();
        let mut coef = Vec::with_capacity(k * k);
        for j in (0..k).rev() {
            coef.extend_from_slice(eig.vector(j));
        }
        Ok(Some(Canonical {
            s,
            first,
            coef: Some(coef),
        }))
    } else {
        let values = symmetric_eigenvalues(&m, k).map_err(|e| eigen_error(what, e))?;
        let s = values.iter().rev().map(|&l| sv(l)).collect();
        Ok(Some(Canonical {
            s,
            first,
            coef: None,
        }))
    }
}

/// Ecco's `cca`: the mean of s up to 98% of its sum (0 for Ecco's zero result).
pub(crate) fn cca_value(can: Option<&Canonical>) -> f64 {
    let Some(can) = can else { return 0.0 };
    let s = &can.s;
    let total: f64 = s.iter().sum();
    let mut idx = s.len();
    let mut partial = 0.0;
    for (i, v) in s.iter().enumerate() {
        if partial / total >= THRESHOLD {
            idx = i;
            break;
        }
        partial += v;
    }
    s[..idx].iter().sum::<f64>() / idx as f64
}

/// Ecco's `svcca` from two sides' top principal directions and their cross covariance.
pub(crate) fn svcca_value(
    pa: &PcaSide,
    pb: &PcaSide,
    cross: &[f64],
    da: usize,
    db: usize,
    eps: f64,
    what: &str,
) -> Result<f64, SimilarityError> {
    let (ka, kb) = (pa.values.len(), pb.values.len());
    let diag = |v: &[f64]| {
        let k = v.len();
        let mut m = vec![0.0; k * k];
        v.iter().enumerate().for_each(|(i, &x)| m[i * k + i] = x);
        m
    };
    let tmp = mul(&pa.vectors, cross, ka, da, db);
    let c = mul_nt(&tmp, &pb.vectors, ka, db, kb);
    let (sa, _) = cca_side(&diag(&pa.values), ka, eps, what)?;
    let (sb, _) = cca_side(&diag(&pb.values), kb, eps, what)?;
    Ok(match canonical(&sa, &sb, &c, kb, false, what)? {
        None => 0.0,
        Some(can) => can.s.iter().sum::<f64>() / can.s.len() as f64,
    })
}

/// Ecco's `pwcca` (with the fixes above) from step 3's result with vectors and the chosen
/// side's statistics and preparation (the first side when `can.first`).
pub(crate) fn pwcca_value(can: Option<&Canonical>, side: &CcaSide, stats: &LayerStats) -> f64 {
    let Some(can) = can else { return 0.0 };
    let coef = can
        .coef
        .as_deref()
        .expect("pwcca needs the singular vectors");
    let k = side.kept.len();
    let scatter = select(
        &stats.cov,
        stats.width,
        &side.kept,
        &side.kept,
        stats.n as f64 - 1.0,
    );
    // H = C S, G = C S Cᵀ = L Lᵀ, weights from L⁻¹ H.
    let mut h = mul(coef, &scatter, k, k, k);
    let mut g = mul_nt(&h, coef, k, k, k);
    cholesky_semidefinite(&mut g, k, DEPENDENT);
    solve_lower(&g, k, &mut h, k);
    let weights: Vec<f64> = h
        .chunks_exact(k)
        .map(|r| r.iter().map(|v| v.abs()).sum())
        .collect();
    let total: f64 = weights.iter().sum();
    weights.iter().zip(&can.s).map(|(w, s)| w / total * s).sum()
}
