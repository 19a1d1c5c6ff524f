//! Analyses over model captures: each turns forward/backward passes of the engine into tidy
//! records (one row per document, target, source, layer, ...) that the store writes; and the
//! corpus-level summaries of recorded activations (NMF, per-neuron top-k and statistics).

pub mod interventions;
pub mod lens;
pub mod neurons;
pub mod nmf;
pub mod patching;
pub mod saliency;
pub mod similarity;
