//! tokenlens: Ecco-style interpretability for whole prompt datasets.
//!
//! Data flows one way: `model` (checkpoints, forward passes, captures, gradients) ->
//! analyses -> store (Parquet) -> viewer.

pub mod error;
pub mod model;

pub use error::{Error, Result};
