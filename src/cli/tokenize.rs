//! `tokenlens tokenize`: how a text is tokenized, one token per line (id and text).

use anyhow::Result;
use clap::Args;

use super::model_args::ModelArgs;

#[derive(Args)]
pub struct TokenizeArgs {
    #[command(flatten)]
    model: ModelArgs,
    text: String,
}

pub fn run(a: TokenizeArgs) -> Result<()> {
    let model = a.model.load()?;
    let ids = model.tokenizer.encode(&a.text)?;
    for id in ids {
        println!("{id:>8}  {:?}", model.tokenizer.token_text(id));
    }
    Ok(())
}
