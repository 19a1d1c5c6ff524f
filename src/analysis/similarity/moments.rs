//! Second-order statistics of activations, from data in memory: one layer's covariance
//! (`LayerStats`, as `np.cov`: centred, divided by n - 1) and the cross covariance of
//! two layers over the same datapoints. The streaming accumulator builds the same `LayerStats`
//! from running sums.

use rayon::prelude::*;

use super::dense::mul_tn;
use super::{Activations, Sample, SimilarityError};

/// One layer over n datapoints.
#[derive(Debug, Clone)]
pub(crate) struct LayerStats {
    pub n: usize,
    pub width: usize,
    /// width × width, centred, divided by n - 1 (`np.cov`'s normalization).
    pub cov: Vec<f64>,
}

/// The column-centred data (n × width, f64) of `x`; fails on a non-finite value.
pub(crate) fn centred<T: Sample>(
    x: Activations<'_, T>,
    what: &str,
) -> Result<Vec<f64>, SimilarityError> {
    let (n, d) = (x.rows(), x.width());
    let mut out: Vec<f64> = x.data().iter().map(|v| v.to_f64()).collect();
    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
        return Err(SimilarityError::NotFinite {
            what: what.into(),
            row: i / d,
            col: i % d,
            value: out[i],
        });
    }
    let mut mean = vec![0.0; d];
    for r in out.chunks_exact(d) {
        mean.iter_mut().zip(r).for_each(|(m, v)| *m += v);
    }
    mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
    out.par_chunks_mut(d.max(1)).for_each(|r| {
        r.iter_mut().zip(&mean).for_each(|(v, m)| *v -= m);
    });
    Ok(out)
}

/// Xcᵀ Yc / (n - 1) of two centred n × d matrices.
pub(crate) fn cross_cov(xc: &[f64], yc: &[f64], n: usize, dx: usize, dy: usize) -> Vec<f64> {
    let mut c = mul_tn(xc, yc, n, dx, dy);
    let f = 1.0 / (n as f64 - 1.0);
    c.iter_mut().for_each(|v| *v *= f);
    c
}

impl LayerStats {
    /// From the centred data, n × width.
    pub fn from_centred(xc: &[f64], width: usize, n: usize) -> Self {
        LayerStats {
            n,
            width,
            cov: cross_cov(xc, xc, n, width, width),
        }
    }
}
