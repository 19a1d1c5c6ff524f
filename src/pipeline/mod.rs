//! Batch pipelines (`tokenlens run`): the YAML spec (`spec`), the prompt dataset readers
//! (`dataset`), one batch through the model and the analyses (`process`), and the runner that
//! writes the results into `store`.

pub mod dataset;
pub mod nmf_stage;
pub mod process;
pub mod runner;
pub mod spec;

pub use dataset::{DatasetError, Prompt, Prompts};
pub use spec::{PipelineSpec, SpecError};
