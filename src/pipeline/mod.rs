//! Batch pipelines (`tokenlens run`): the YAML spec (`spec`), the prompt dataset readers
//! (`dataset`), one batch through the model and the analyses (`process`), the interventions
//! regenerating it (`interventions`), the runner that cuts
//! the dataset into windows and batches and writes every batch's records into the `store`
//! (`runner`), and the corpus-level NMF stage over a run's activations (`nmf_stage`). Its
//! errors (`error`) wrap the engine's with the spec, dataset, store and NMF errors.

pub mod dataset;
pub mod error;
pub mod interventions;
pub mod nmf_stage;
pub mod process;
pub mod runner;
pub mod spec;

pub use dataset::{DatasetError, Prompt, Prompts};
pub use error::{Error, Result};
pub use spec::{PipelineSpec, SpecError};
