//! Batch pipelines (`tokenlens run`): the YAML spec (`spec`), the prompt dataset readers
//! (`dataset`), one batch through the model and the analyses (`process`), the interventions
//! regenerating it (`interventions`), the runner that cuts
//! the dataset into windows and batches and writes every batch's records into the `store`
//! (`runner`), and the corpus-level stages over a run's activations: NMF (`nmf_stage`) and the
//! neurons' top contexts and statistics (`neurons_stage`), with what they share about reading
//! the run (`stage_input`: the layer selection, the errors of a missing or malformed input). Its
//! errors (`error`) wrap the engine's with the spec, dataset, store, stage input, NMF and
//! neurons errors.

pub mod dataset;
pub mod error;
pub mod interventions;
pub mod neurons_stage;
pub mod nmf_stage;
pub mod process;
pub mod runner;
pub mod similarity_stage;
pub mod spec;
pub mod stage_input;

pub use dataset::{DatasetError, Prompt, Prompts};
pub use error::{Error, Result};
pub use spec::{PipelineSpec, SpecError};
