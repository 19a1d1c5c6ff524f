//! The `tokenlens` command line: one file per subcommand (its arguments and its `run`), the
//! shared model arguments in `model_args`, and here the command list and the dispatch. A thin
//! layer over the library: errors become one clear message (with their causes) and a nonzero
//! exit.

mod compare;
mod export_html;
mod generate;
mod inspect;
mod model_args;
mod neurons;
mod nmf;
mod predict;
mod run;
mod saliency;
mod schema;
mod tokenize;
mod validate;
mod view;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tokenlens",
    version,
    about = "Why did the model say that? Interpretability for whole prompt datasets."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Top-k next-token predictions for each prompt.
    Predict(predict::PredictArgs),
    /// Generate continuations for prompts, batched.
    Generate(generate::GenerateArgs),
    /// Input saliency: how much each earlier token contributed to each generated token.
    Saliency(saliency::SaliencyArgs),
    /// Show how text is tokenized.
    Tokenize(tokenize::TokenizeArgs),
    /// Print the model's configuration as JSON.
    Inspect(inspect::InspectArgs),
    /// Run a pipeline: the dataset through the model, every analysis written as Parquet tables
    /// into the spec's output.dir (see docs/schema.md and docs/pipelines.md).
    Run(run::RunArgs),
    /// Print the output tables' schema (every table, column, type, nullability) as JSON: the
    /// same definitions the writer and docs/schema.md use.
    Schema,
    /// Serve the viewer for a run directory on 127.0.0.1 (the viewer is built into the binary;
    /// the browser reads the run's Parquet tables directly).
    View(view::ViewArgs),
    /// Write the viewer and a run (the tables it shows) as one self-contained HTML file, to open
    /// or share without a server. Best for small runs: the Parquet parts are inlined.
    ExportHtml(export_html::ExportHtmlArgs),
    /// Check a pipeline spec without running it: the YAML, every value, every dataset record, and
    /// (unless --no-model) the model's layers, heads, context and the watched tokens.
    Validate(validate::ValidateArgs),
    /// Factorize the MLP activations of an existing run (NMF over every recorded position) and
    /// write the nmf_* tables into it (see docs/nmf.md).
    Nmf(nmf::NmfArgs),
    /// Compare two finished runs over the same documents (e.g. two models or checkpoints): per
    /// document and position top-1 agreement, KL and JS of the next-token distributions, lens
    /// ranks and saliency, into a comparison directory (see docs/compare.md).
    Compare(compare::CompareArgs),
    /// Every recorded MLP neuron's strongest activations over an existing run (with their
    /// context) and its statistics: the neuron_top_contexts and neuron_stats tables (see
    /// docs/neurons.md).
    Neurons(neurons::NeuronsArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Predict(a) => predict::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Saliency(a) => saliency::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Run(a) => run::run(a),
        Command::Schema => schema::run(),
        Command::View(a) => view::run(a),
        Command::ExportHtml(a) => export_html::run(a),
        Command::Validate(a) => validate::run(a),
        Command::Nmf(a) => nmf::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Neurons(a) => neurons::run(a),
    }
}
