//! The similarity metrics of two activation matrices in memory, each **datapoints × neurons**
//! (row-major; Ecco's `acts1.T`, `acts2.T`), f32 or f64, computed in f64: Ecco's `cca`,
//! `svcca`, `pwcca`, `cka`, and cka_lib's debiased linear CKA. The CCA family goes through the
//! same covariance code as the streaming accumulator (`pair`), CKA through the centred data.

use super::cca::prepare;
use super::cka::{cka_biased, cka_debiased, hsic_terms};
use super::moments::{LayerStats, centred, cross_cov};
use super::pair::{check_pair, needs_cca, pair_values};
use super::{Activations, EPSILON, Metric, Sample, SimilarityError};

fn same_rows<A: Sample, B: Sample>(
    a: &Activations<'_, A>,
    b: &Activations<'_, B>,
) -> Result<usize, SimilarityError> {
    if a.rows() != b.rows() {
        return Err(SimilarityError::Rows {
            what: "a".into(),
            rows: a.rows(),
            other: "b".into(),
            other_rows: b.rows(),
        });
    }
    Ok(a.rows())
}

fn moment_metric<A: Sample, B: Sample>(
    a: Activations<'_, A>,
    b: Activations<'_, B>,
    metric: Metric,
    dims: usize,
) -> Result<f64, SimilarityError> {
    let n = same_rows(&a, &b)?;
    let (da, db) = (a.width(), b.width());
    check_pair(n, [(da, "a"), (db, "b")], &[metric], dims)?;
    let xc = centred(a, "a")?;
    let yc = centred(b, "b")?;
    let cross = cross_cov(&xc, &yc, n, da, db);
    let sa = LayerStats::from_centred(&xc, da, n);
    let sb = LayerStats::from_centred(&yc, db, n);
    drop((xc, yc));
    let cca = needs_cca(&[metric]);
    let svcca = (metric == Metric::Svcca).then_some(dims);
    let pa = prepare(&sa, cca, svcca, EPSILON, "a")?;
    let pb = prepare(&sb, cca, svcca, EPSILON, "b")?;
    Ok(pair_values((&sa, &pa), (&sb, &pb), &cross, &[metric], EPSILON, "a, b")?[0])
}

/// Ecco's `cca(acts1, acts2)` = `get_cca_similarity(acts1, acts2, epsilon=1e-10)['mean'][0]`:
/// the mean of the canonical correlations up to 98% of their sum (see `cca.rs` for the steps).
/// 0 when either side is constant (Ecco's zero result). Needs more datapoints than neurons on
/// each side.
pub fn cca<A: Sample, B: Sample>(
    a: Activations<'_, A>,
    b: Activations<'_, B>,
) -> Result<f64, SimilarityError> {
    moment_metric(a, b, Metric::Cca, 0)
}

/// Ecco's `svcca(acts1, acts2, dims)`: each side projected on its top `dims` principal
/// directions (Ecco's s·V), then the mean of all their canonical correlations. Needs
/// 1 ≤ dims ≤ both widths and more datapoints than dims.
pub fn svcca<A: Sample, B: Sample>(
    a: Activations<'_, A>,
    b: Activations<'_, B>,
    dims: usize,
) -> Result<f64, SimilarityError> {
    moment_metric(a, b, Metric::Svcca, dims)
}

/// Ecco's `pwcca(acts1, acts2, epsilon=1e-10)` = `compute_pwcca(...)[0]`: the canonical
/// correlations averaged with the projection weights of the side keeping fewer neurons (the
/// first on a tie). Two fixes of Ecco's code (details in `cca.rs`): the directions are not
/// shifted by the neuron means (which makes Ecco's value depend on LAPACK's singular vector
/// signs; equal to Ecco's on centred inputs), and the second side's branch uses the second
/// side's activations. Needs more datapoints than neurons on each side.
pub fn pwcca<A: Sample, B: Sample>(
    a: Activations<'_, A>,
    b: Activations<'_, B>,
) -> Result<f64, SimilarityError> {
    moment_metric(a, b, Metric::Pwcca, 0)
}

/// Ecco's `cka(acts1, acts2)` = `feature_space_linear_cka(acts1.T, acts2.T)`: linear CKA with
/// the biased HSIC, ||Acᵀ Bc||²_F / (||Acᵀ Ac||_F ||Bcᵀ Bc||_F) over the column-centred data.
/// Any shape (more neurons than datapoints too; n ≥ 2); NaN when a side is constant.
pub fn linear_cka<A: Sample, B: Sample>(
    a: Activations<'_, A>,
    b: Activations<'_, B>,
) -> Result<f64, SimilarityError> {
    let n = same_rows(&a, &b)?;
    check_pair(n, [(a.width(), "a"), (b.width(), "b")], &[Metric::Cka], 0)?;
    let xc = centred(a, "a")?;
    let yc = centred(b, "b")?;
    Ok(cka_biased(&hsic_terms(&xc, &yc, n, a.width(), b.width())))
}

/// cka_lib's `feature_space_linear_cka(x, y, debiased=True)`: linear CKA with Song et al.'s
/// unbiased HSIC estimator (Kornblith et al. 2019; Nguyen et al. 2021's HSIC_1) in each of the
/// three places. Needs n ≥ 4; may be negative, and NaN when an estimated self-similarity is
/// negative (cka_lib's square root of it).
pub fn linear_cka_unbiased<A: Sample, B: Sample>(
    a: Activations<'_, A>,
    b: Activations<'_, B>,
) -> Result<f64, SimilarityError> {
    let n = same_rows(&a, &b)?;
    if n < 4 {
        return Err(SimilarityError::TooFewDatapoints {
            metric: "cka_unbiased",
            what: "a, b".into(),
            needed_over: 3,
            got: n,
            why: "the unbiased HSIC",
        });
    }
    let xc = centred(a, "a")?;
    let yc = centred(b, "b")?;
    Ok(cka_debiased(
        &hsic_terms(&xc, &yc, n, a.width(), b.width()),
        n,
    ))
}
