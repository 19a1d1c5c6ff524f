//! What can stop the neurons stage besides what every corpus stage checks of its input
//! (`pipeline::stage_input`): options out of range, and tables that disagree with each other or
//! are not what a run writes. Each names the run directory or the part.

use std::path::PathBuf;

/// Errors of the neurons stage (`tokenlens neurons`, the pipeline's `analyses.neurons`).
#[derive(Debug, thiserror::Error)]
pub enum NeuronsError {
    #[error("neurons.top_k must be at least 1")]
    NoTopK,

    /// The tables are not what a run writes.
    #[error("{}: negative position {position} of doc `{doc}`", path.display())]
    NegativePosition {
        path: PathBuf,
        doc: String,
        position: i32,
    },
    #[error(
        "{}: doc `{doc}` has activations but no row in the generations table (its dataset index \
         orders equal activations)",
        path.display()
    )]
    NoGenerationsRow { path: PathBuf, doc: String },
    #[error("{}: doc `{doc}` appears twice", path.display())]
    DocTwice { path: PathBuf, doc: String },
    #[error("{}: doc `{doc}` has dataset index {index}, outside 0..2^32", path.display())]
    DocIndex {
        path: PathBuf,
        doc: String,
        index: i64,
    },
    #[error(
        "{}: doc `{doc}` position {position} has activations but no row in the tokens table",
        dir.display()
    )]
    NoToken {
        dir: PathBuf,
        doc: String,
        position: i32,
    },
}
