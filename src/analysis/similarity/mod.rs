//! Representation similarity between two sets of activations over the same datapoints (token
//! positions): CCA, SVCCA, PWCCA and linear CKA as Ecco 0.1.2 defines them (`ecco/analysis.py`
//! over its copy of Google's svcca_lib; two bugs of its PWCCA fixed, see `cca.rs`), the
//! debiased linear CKA of Kornblith et al.'s `cka_lib`, and the minibatch CKA of Nguyen, Raghu &
//! Kornblith 2021. Pure math, no I/O. Checked against Ecco's own code by the golden of
//! scripts/make_similarity_goldens.py (`tests.rs`).
//!
//! Layout convention: every matrix here is **row-major datapoints × neurons** (one row per token
//! position, one column per neuron); Ecco's functions take the transpose, (neurons, datapoints).
//!
//! Two ways in:
//! - in memory (`in_memory`): [`cca`], [`svcca`], [`pwcca`], [`linear_cka`],
//!   [`linear_cka_unbiased`] on two [`Activations`] (f32 or f64), computed in f64;
//! - streaming, memory independent of the number of positions: [`CovarianceAccumulator`]
//!   (`accumulator`) keeps per layer Σx and Σxxᵀ and per requested layer pair Σx_a x_bᵀ, and
//!   gives CKA, CCA, SVCCA and PWCCA of every pair from those moments alone, equal to the
//!   in-memory functions on the same data; [`MinibatchCka`] (`minibatch`) keeps per-batch Gram
//!   matrices only and gives the minibatch CKA of all layer pairs.
//!
//! The rest: `moments` (a layer's mean and covariance, cross covariances, from data), `cca`
//! (Ecco's `get_cca_similarity`, SVCCA and PWCCA on covariances), `pair` (one pair's moment
//! metrics, shared by both ways in), `chunk` (the streaming accumulators' check of a pushed
//! chunk), `cka` (linear CKA and HSIC), `dense` (small f64 matrix helpers), `error`.

mod accumulator;
mod cca;
mod chunk;
mod cka;
mod dense;
mod error;
mod in_memory;
mod minibatch;
mod moments;
mod pair;

#[cfg(test)]
mod tests;

pub use accumulator::{CovarianceAccumulator, MemoryEstimate, MomentOptions, plan_passes};
pub use error::SimilarityError;
pub use in_memory::{cca, linear_cka, linear_cka_unbiased, pwcca, svcca};
pub use minibatch::{MinibatchCka, MinibatchResult};

/// Ecco's epsilon for `cca`, `svcca` and `pwcca` (`get_cca_similarity(..., epsilon=1e-10)`):
/// neurons whose variance, relative to the largest covariance entry, is below it are dropped,
/// and it is added to the diagonal of the scaled covariances before their inverse square root.
pub const EPSILON: f64 = 1e-10;

/// svcca's default number of principal directions kept per side (Ecco's `dims=20`).
pub const SVCCA_DIMS: usize = 20;

/// A similarity metric, as named in the `similarity` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Linear CKA (Ecco's `cka`: the biased, feature-space form), exact over all positions.
    Cka,
    /// The minibatch CKA of Nguyen et al. 2021 (unbiased HSIC per batch).
    CkaMinibatch,
    /// Ecco's `svcca` (top-`dims` principal directions, then the mean of all canonical
    /// correlations).
    Svcca,
    /// Ecco's `pwcca` (projection-weighted mean of the canonical correlations).
    Pwcca,
    /// Ecco's `cca` (mean of the canonical correlations up to 98% of their sum).
    Cca,
}

impl Metric {
    pub const ALL: [Metric; 5] = [
        Metric::Cka,
        Metric::CkaMinibatch,
        Metric::Svcca,
        Metric::Pwcca,
        Metric::Cca,
    ];

    /// The name in the `similarity` table.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cka => "cka",
            Metric::CkaMinibatch => "cka_minibatch",
            Metric::Svcca => "svcca",
            Metric::Pwcca => "pwcca",
            Metric::Cca => "cca",
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value of the `similarity` table (the caller adds the run names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimilarityValue {
    pub metric: Metric,
    pub layer_a: usize,
    pub layer_b: usize,
    pub value: f64,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// An element type the in-memory functions take: f32 or f64 (computed in f64 either way).
pub trait Sample: Copy + Send + Sync + 'static + sealed::Sealed {
    fn to_f64(self) -> f64;
}

impl Sample for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Sample for f64 {
    fn to_f64(self) -> f64 {
        self
    }
}

/// A row-major matrix of activations, **datapoints × neurons** (the transpose of Ecco's
/// (neurons, datapoints)).
#[derive(Debug, Clone, Copy)]
pub struct Activations<'a, T> {
    data: &'a [T],
    width: usize,
}

impl<'a, T: Sample> Activations<'a, T> {
    /// `data` holds `data.len() / width` rows of `width` neurons.
    pub fn new(data: &'a [T], width: usize) -> Result<Self, SimilarityError> {
        if width == 0 || !data.len().is_multiple_of(width) {
            return Err(SimilarityError::Shape {
                what: "activations".into(),
                len: data.len(),
                width,
            });
        }
        Ok(Activations { data, width })
    }
    /// The number of datapoints.
    pub fn rows(&self) -> usize {
        self.data.len() / self.width
    }
    /// The number of neurons.
    pub fn width(&self) -> usize {
        self.width
    }
    pub fn data(&self) -> &'a [T] {
        self.data
    }
}
