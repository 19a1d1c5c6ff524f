//! What can stop the neurons stage: options out of range, a layer selection the activations table
//! cannot satisfy, a run directory missing a table the stage reads, and tables that disagree
//! with each other or are not what a run writes. Each names the run directory or the part.

use std::path::PathBuf;

/// Errors of the neurons stage (`tokenlens neurons`, the pipeline's `analyses.neurons`).
#[derive(Debug, thiserror::Error)]
pub enum NeuronsError {
    #[error("neurons.top_k must be at least 1")]
    NoTopK,

    #[error("{}: no such run directory", dir.display())]
    NoRunDir { dir: PathBuf },
    #[error(
        "{}: no activations table (no {}/activations/part-*.parquet); the neuron tables summarize \
         the activations a run recorded (analyses.activations)",
        dir.display(), dir.display()
    )]
    NoActivations { dir: PathBuf },
    #[error(
        "{}: no {table} table, needed for {why}",
        dir.display()
    )]
    NoTable {
        dir: PathBuf,
        table: &'static str,
        why: &'static str,
    },

    /// The layer selection (`neurons.layers`, `--layers`) against the layers the table has.
    #[error("{}: the activations table has no rows", dir.display())]
    NoRows { dir: PathBuf },
    #[error("neurons.layers lists no layer")]
    NoLayers,
    #[error(
        "neurons.layers includes layer {layer}, out of range: {} (negative indices count from \
         layer {count})",
        has_layers(dir, present)
    )]
    LayerOutOfRange {
        layer: i64,
        count: i64,
        dir: PathBuf,
        present: Vec<i32>,
    },
    #[error(
        "neurons.layers includes layer {layer}{} but {}",
        from_end.map(|i| format!(" ({i} from the end)")).unwrap_or_default(),
        has_layers(dir, present)
    )]
    LayerMissing {
        layer: i64,
        /// The index as given, when it was negative.
        from_end: Option<i64>,
        dir: PathBuf,
        present: Vec<i32>,
    },
    #[error("neurons.layers selects layer {0} twice")]
    LayerTwice(i64),

    /// The tables are not what a run writes.
    #[error("{}: negative layer {layer}", path.display())]
    NegativeLayer { path: PathBuf, layer: i32 },
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
        "{}: column `values` is {found}, expected a list of non-null float32 or float16",
        path.display()
    )]
    ValuesType { path: PathBuf, found: String },
    #[error(
        "{}: doc `{doc}` position {position} layer {layer} has {found} values, the layer's first \
         row {expected}",
        path.display()
    )]
    Width {
        path: PathBuf,
        doc: String,
        position: i32,
        layer: usize,
        found: usize,
        expected: usize,
    },
    #[error(
        "{}: doc `{doc}` position {position} layer {layer} neuron {neuron} is {value}",
        path.display()
    )]
    NotFinite {
        path: PathBuf,
        doc: String,
        position: i32,
        layer: usize,
        neuron: usize,
        value: f32,
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

fn has_layers(dir: &std::path::Path, present: &[i32]) -> String {
    format!(
        "the activations table of {} has layers {:?}",
        dir.display(),
        present
    )
}
