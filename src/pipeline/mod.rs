//! Batch pipelines (`tokenlens run`): the YAML spec (`spec`) and the prompt dataset readers
//! (`dataset`). The runner that pushes prompts through the model and into `store` comes next.

pub mod dataset;
pub mod spec;

pub use dataset::{DatasetError, Prompt, Prompts};
pub use spec::{PipelineSpec, SpecError};
