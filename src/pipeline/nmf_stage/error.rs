//! What can stop the NMF stage besides its input (`pipeline::stage_input`): options out of
//! range, chosen layers or positions without data, and activations tables that are inconsistent
//! (or change while being read). Each names the run directory or the part.

use std::path::PathBuf;

/// Errors of the NMF stage (`tokenlens nmf`, the pipeline's `analyses.nmf`).
#[derive(Debug, thiserror::Error)]
pub enum NmfError {
    #[error("nmf.n_components must be at least 1")]
    NoComponents,
    #[error("nmf.max_iter must be at least 1")]
    NoIterations,
    #[error("nmf.tolerance must be >= 0 (0: run max_iter iterations), got {0}")]
    Tolerance(f64),

    /// The chosen layers and positions against the table's rows.
    #[error("{}: layer {layer} has no neurons in the activations table", dir.display())]
    NoNeurons { dir: PathBuf, layer: usize },
    #[error(
        "{}: the activations table has no rows for nmf.positions `{positions}`",
        dir.display()
    )]
    NoPositions {
        dir: PathBuf,
        positions: &'static str,
    },

    /// The activations table is not one a run writes.
    #[error(
        "{}: doc `{doc}` position {position} has no row for layer {layer} (nmf.layers)",
        path.display()
    )]
    MissingLayerRow {
        path: PathBuf,
        doc: String,
        position: i32,
        layer: usize,
    },
    #[error(
        "{}: doc `{doc}` position {position} appears twice (apart) in the activations table",
        path.display()
    )]
    PositionTwice {
        path: PathBuf,
        doc: String,
        position: i32,
    },
    #[error(
        "{}: doc `{doc}` position {position} has two rows for layer {layer}",
        path.display()
    )]
    LayerRowTwice {
        path: PathBuf,
        doc: String,
        position: i32,
        layer: usize,
    },
    #[error(
        "{}: doc `{doc}` has activations but no row in the generations table",
        path.display()
    )]
    NoGenerationsRow { path: PathBuf, doc: String },
    /// The table differs between the scan and a later pass.
    #[error(
        "{}: {what}: the activations table changed while being read",
        path.display()
    )]
    Changed { path: PathBuf, what: String },
}
