//! `tokenlens validate`: checks a pipeline spec without running it and prints one `ok: ...`
//! line, or fails with every problem found.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use tokenlens::model::Model;
use tokenlens::pipeline::dataset;
use tokenlens::pipeline::spec::{ModelDims, PipelineSpec};

#[derive(Args)]
pub struct ValidateArgs {
    /// The pipeline spec (YAML).
    pipeline: PathBuf,
    /// Do not load the model; skips the checks that need it.
    #[arg(long)]
    no_model: bool,
}

pub fn run(a: ValidateArgs) -> Result<()> {
    let pipeline = &a.pipeline;
    let spec = PipelineSpec::load(pipeline)?;
    spec.check_inputs(!a.no_model)?;
    let data = dataset::scan(&spec.dataset)?;
    let model_note = if a.no_model {
        "model not loaded (--no-model)".to_string()
    } else {
        let path = spec.model.path.load_path();
        let model = Model::load_as(&path, spec.model.tokenizer.as_deref(), spec.model.dtype)
            .with_context(|| format!("loading model {}", path.display()))?;
        spec.validate_against(ModelDims::from(&model))?;
        // Tokens the tokenizer adds to any text (e.g. a BOS) are not part of a watched token.
        spec.validate_watch_tokens(|t| model.tokenizer.encode_plain(t), model.config.vocab_size)?;
        let c = &model.config;
        format!(
            "model {} ({} layers, {} heads, context {})",
            path.display(),
            c.n_layers,
            c.n_heads,
            c.max_position_embeddings
        )
    };
    let tables = spec.tables();
    println!(
        "ok: {}: {} prompts from {}; {} tables ({}) -> {}; {model_note}",
        pipeline.display(),
        data.prompts,
        spec.dataset.path.display(),
        tables.len(),
        tables.join(", "),
        spec.output.dir.display(),
    );
    if spec.output.dir.exists() && !spec.output.overwrite {
        println!(
            "note: {} exists; the run will fail unless it is empty or output.overwrite is true",
            spec.output.dir.display()
        );
    }
    Ok(())
}
