//! What can stop the NMF stage: options out of range, a layer selection the activations table
//! cannot satisfy, a run directory missing the tables the stage reads, and activations tables
//! that are inconsistent (or change while being read). Each names the run directory or the part.

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

    #[error("{}: no such run directory", dir.display())]
    NoRunDir { dir: PathBuf },
    #[error(
        "{}: no activations table (no {}/activations/part-*.parquet); NMF factorizes the \
         activations a run recorded (analyses.activations)",
        dir.display(), dir.display()
    )]
    NoActivations { dir: PathBuf },
    #[error(
        "{}: no generations table, needed to tell prompt from generated positions",
        dir.display()
    )]
    NoGenerations { dir: PathBuf },
    #[error(
        "{}: no tokens table, needed for nmf_top_contexts (use --top-contexts 0 to skip them)",
        dir.display()
    )]
    NoTokens { dir: PathBuf },

    /// The layer selection (`nmf.layers`, `--layers`) against the layers the table has.
    #[error("{}: the activations table has no rows", dir.display())]
    NoRows { dir: PathBuf },
    #[error("nmf.layers lists no layer")]
    NoLayers,
    #[error(
        "nmf.layers includes layer {layer}, out of range: {} (negative indices count from layer \
         {count})",
        has_layers(dir, present)
    )]
    LayerOutOfRange {
        layer: i64,
        count: i64,
        dir: PathBuf,
        present: Vec<i32>,
    },
    #[error(
        "nmf.layers includes layer {layer}{} but {}",
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
    #[error("nmf.layers selects layer {0} twice")]
    LayerTwice(i64),
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
    #[error("{}: negative layer {layer}", path.display())]
    NegativeLayer { path: PathBuf, layer: i32 },
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
    /// The table differs between the scan and a later pass.
    #[error(
        "{}: {what}: the activations table changed while being read",
        path.display()
    )]
    Changed { path: PathBuf, what: String },
}

fn has_layers(dir: &std::path::Path, present: &[i32]) -> String {
    format!(
        "the activations table of {} has layers {:?}",
        dir.display(),
        present.iter().collect::<Vec<_>>()
    )
}
