//! The model arguments every model command takes (`--model`, `--tokenizer`, `--dtype`), loading the model
//! they name (the default real model when none), and encoding the prompts given on the command
//! line.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use tokenlens::model::{Compute, Model, WeightDtype};

#[derive(Args)]
pub struct ModelArgs {
    /// A .gguf file or an HF checkpoint directory (config.json, tokenizer.json, *.safetensors).
    /// Default: SmolLM2-135M-Instruct as fetched by scripts/fetch-model.sh.
    #[arg(long, short)]
    model: Option<PathBuf>,
    /// A tokenizer.json to use instead of the checkpoint's own tokenizer.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The dtype the weights are held in: auto (the checkpoint's own: bf16/f16 safetensors or
    /// GGUF stay so, f32 and quantized GGUF are f32), f32, bf16 or f16. Activations and
    /// accumulation are f32 whatever it is (docs/model.md, "Precision").
    #[arg(long, default_value = "auto", value_parser = parse_dtype)]
    dtype: WeightDtype,
    /// The precision of the weight products: f32 (exact) or bf16 (operands rounded to bf16,
    /// sums in f32; 2-4x faster on CPUs with AMX, the same numbers at f32 speed elsewhere;
    /// docs/model.md, "Precision").
    #[arg(long, default_value = "f32", value_parser = parse_compute)]
    compute: Compute,
}

fn parse_compute(s: &str) -> std::result::Result<Compute, String> {
    s.parse()
}

fn parse_dtype(s: &str) -> std::result::Result<WeightDtype, String> {
    s.parse()
}

impl ModelArgs {
    pub fn load(&self) -> Result<Model> {
        let path = match &self.model {
            Some(p) => p.clone(),
            None => {
                let p = tokenlens::model::default_model_path();
                if !p.exists() {
                    bail!(
                        "no --model given and the default model is not at {}; run scripts/fetch-model.sh to fetch it",
                        p.display()
                    );
                }
                p
            }
        };
        let mut model = Model::load_as(&path, self.tokenizer.as_deref(), self.dtype)
            .with_context(|| format!("loading model {}", path.display()))?;
        model.set_compute(self.compute);
        Ok(model)
    }
}

/// Each prompt's token ids; an error names the prompt (1-based).
pub fn encode_all(model: &Model, prompts: &[String]) -> Result<Vec<Vec<u32>>> {
    prompts
        .iter()
        .enumerate()
        .map(|(i, p)| model.encode(p).with_context(|| format!("prompt {}", i + 1)))
        .collect()
}
