//! The similarity metrics' error: what input was wrong (which side, layer, width or count), so
//! that the caller can name the run and layer.

use crate::numerics::eigen::EigenError;

use super::Metric;

/// Why a similarity could not be computed. `what` names the input: "a" / "b" for the in-memory
/// functions' arguments, "side a layer 3" for the accumulators'.
#[derive(Debug, thiserror::Error)]
pub enum SimilarityError {
    /// A slice that is not a whole number of rows of the width it should have.
    #[error("{what}: {len} values are not rows of width {width}")]
    Shape {
        what: String,
        len: usize,
        width: usize,
    },
    /// Two inputs that should cover the same datapoints have different numbers of rows.
    #[error("{what}: {rows} rows, but {other} has {other_rows}")]
    Rows {
        what: String,
        rows: usize,
        other: String,
        other_rows: usize,
    },
    /// Fewer datapoints than the metric is defined for.
    #[error("{metric}: {what} needs more than {needed_over} datapoints ({why}), got {got}")]
    TooFewDatapoints {
        metric: &'static str,
        what: String,
        /// The metric needs strictly more datapoints than this.
        needed_over: usize,
        got: usize,
        why: &'static str,
    },
    /// A NaN or infinite activation.
    #[error("{what}: datapoint {row}, neuron {col} is {value}")]
    NotFinite {
        what: String,
        row: usize,
        col: usize,
        value: f64,
    },
    /// A layer index beyond a side's layers.
    #[error("layer pair ({layer_a}, {layer_b}): side {side} has {layers} layers")]
    LayerOutOfRange {
        layer_a: usize,
        layer_b: usize,
        side: char,
        layers: usize,
    },
    /// A push with another number of layers than the accumulator was made for.
    #[error("push: side {side} has {got} layer slices, the accumulator {expected} layers")]
    LayerCount {
        side: char,
        got: usize,
        expected: usize,
    },
    /// A side with no layers, or a layer of width 0.
    #[error("side {side}: {what}")]
    EmptySide { side: char, what: &'static str },
    /// SVCCA's number of directions out of range (0, or above a layer's width).
    #[error("svcca: dims {dims} must be in 1..={width} ({what}'s width)")]
    SvccaDims {
        dims: usize,
        what: String,
        width: usize,
    },
    /// The minibatch size cannot give an unbiased HSIC.
    #[error("minibatch CKA: batch size {batch} is below 4 (the unbiased HSIC needs n >= 4)")]
    BatchSize { batch: usize },
    /// A metric this accumulator does not compute.
    #[error("{metric} is not computed from {by}")]
    UnsupportedMetric { metric: Metric, by: &'static str },
    /// A pass plan whose single pair does not fit the memory budget.
    #[error(
        "layer pair ({layer_a}, {layer_b}) alone needs {needed} bytes, over the budget of {budget}"
    )]
    OverBudget {
        layer_a: usize,
        layer_b: usize,
        needed: usize,
        budget: usize,
    },
    /// An eigendecomposition failed (non-finite intermediate values).
    #[error("{what}")]
    Eigen {
        what: String,
        #[source]
        source: EigenError,
    },
}
