//! One layer pair's moment metrics (CKA, CCA, SVCCA, PWCCA) from the two layers' statistics and
//! preparations and their cross covariance, and the checks of the datapoint count and SVCCA's
//! dims that come before: shared by the in-memory functions and the streaming accumulator, so
//! the two compute the same thing.

use super::cca::{LayerPrep, canonical, cca_value, pwcca_value, svcca_value};
use super::cka::cka_from_cov;
use super::moments::LayerStats;
use super::{Metric, SimilarityError};

/// Whether any of `metrics` needs each side's CCA preparation.
pub(crate) fn needs_cca(metrics: &[Metric]) -> bool {
    metrics
        .iter()
        .any(|m| matches!(m, Metric::Cca | Metric::Pwcca))
}

/// Checks n and SVCCA's dims for the two sides' (width, name) `widths`. Every metric needs a
/// covariance (n ≥ 2); CCA and PWCCA need more datapoints than neurons on each side (Ecco
/// asserts it for its first argument, to catch transposed input; with n ≤ d the covariance is
/// singular and the canonical correlations go to 1 — required of both sides here so that the
/// metric stays symmetric); SVCCA needs 1 ≤ dims ≤ both widths and n > dims (Ecco's
/// `s[:dims] * np.eye(dims)` and its assertion on the projected data).
pub(crate) fn check_pair(
    n: usize,
    widths: [(usize, &str); 2],
    metrics: &[Metric],
    dims: usize,
) -> Result<(), SimilarityError> {
    for &m in metrics {
        let too_few = |needed_over: usize, what: &str, why: &'static str| {
            Err(SimilarityError::TooFewDatapoints {
                metric: m.as_str(),
                what: what.into(),
                needed_over,
                got: n,
                why,
            })
        };
        if n < 2 {
            return too_few(1, widths[0].1, "a covariance");
        }
        match m {
            Metric::Cca | Metric::Pwcca => {
                for (d, what) in widths {
                    if n <= d {
                        return too_few(d, what, "more datapoints than neurons");
                    }
                }
            }
            Metric::Svcca => {
                for (d, what) in widths {
                    if dims == 0 || dims > d {
                        return Err(SimilarityError::SvccaDims {
                            dims,
                            what: what.into(),
                            width: d,
                        });
                    }
                }
                if n <= dims {
                    return too_few(dims, widths[0].1, "more datapoints than svcca dims");
                }
            }
            Metric::Cka | Metric::CkaMinibatch => {}
        }
    }
    Ok(())
}

/// The values of `metrics` for layers a, b (`cross` = their cross covariance [d_a, d_b]).
/// `CkaMinibatch` is refused (it is not a moment metric).
pub(crate) fn pair_values(
    a: (&LayerStats, &LayerPrep),
    b: (&LayerStats, &LayerPrep),
    cross: &[f64],
    metrics: &[Metric],
    eps: f64,
    what: &str,
) -> Result<Vec<f64>, SimilarityError> {
    let ((sa, pa), (sb, pb)) = (a, b);
    let can = if needs_cca(metrics) {
        let (ca, cb) = (pa.cca.as_ref(), pb.cca.as_ref());
        let (ca, cb) = ca.zip(cb).expect("prepared for CCA");
        canonical(
            ca,
            cb,
            cross,
            sb.width,
            metrics.contains(&Metric::Pwcca),
            what,
        )?
    } else {
        None
    };
    metrics
        .iter()
        .map(|&m| match m {
            Metric::Cka => Ok(cka_from_cov(&sa.cov, &sb.cov, cross)),
            Metric::Cca => Ok(cca_value(can.as_ref())),
            Metric::Pwcca => {
                let first = can.as_ref().is_none_or(|c| c.first);
                let (stats, prep) = if first { (sa, pa) } else { (sb, pb) };
                let side = prep.cca.as_ref().expect("prepared for CCA");
                Ok(pwcca_value(can.as_ref(), side, stats))
            }
            Metric::Svcca => {
                let (qa, qb) = pa
                    .pca
                    .as_ref()
                    .zip(pb.pca.as_ref())
                    .expect("prepared for SVCCA");
                svcca_value(qa, qb, cross, sa.width, sb.width, eps, what)
            }
            Metric::CkaMinibatch => Err(SimilarityError::UnsupportedMetric {
                metric: m,
                by: "covariances (use MinibatchCka)",
            }),
        })
        .collect()
}
