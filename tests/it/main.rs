//! Integration tests: one binary (fewer links, faster CI), one module per concern.

mod cli;
mod common;
mod compare;
mod compute;
mod dtype;
mod gguf_roundtrip;
mod interventions;
mod layering;
mod neurons;
mod nmf;
mod parity;
mod parity_dtype;
mod patching;
mod quants;
mod real_models;
mod run;
mod saliency;
mod similarity;
mod tokenizers;
mod validate;
mod view;
