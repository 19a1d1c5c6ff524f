//! Pipelines: a YAML spec, a prompt dataset, batches through the model, tables out.

pub mod process;
