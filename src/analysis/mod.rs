//! Analyses over model captures: each turns forward/backward passes of the engine into tidy
//! records (one row per document, target, source, layer, ...) that the store writes.

pub mod interventions;
pub mod lens;
pub mod nmf;
pub mod patching;
pub mod saliency;
pub mod similarity;
