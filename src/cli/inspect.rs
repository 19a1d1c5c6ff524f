//! `tokenlens inspect`: the loaded model's path, format, weights' dtype and bytes, and
//! configuration as JSON.

use anyhow::Result;
use clap::Args;

use super::model_args::ModelArgs;

#[derive(Args)]
pub struct InspectArgs {
    #[command(flatten)]
    model: ModelArgs,
}

pub fn run(a: InspectArgs) -> Result<()> {
    let m = a.model.load()?;
    let info = serde_json::json!({
        "path": m.path, "format": m.format,
        "weights_dtype": tokenlens::model::precision::dtype_name(m.dtype),
        "weight_bytes": m.weight_bytes(),
        "config": m.config,
        "tokenizer_vocab_size": m.tokenizer.vocab_size(),
    });
    println!("{}", serde_json::to_string_pretty(&info)?);
    Ok(())
}
