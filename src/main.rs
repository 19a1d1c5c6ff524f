//! The `tokenlens` command line: a thin layer over the library; errors become one clear
//! message and a nonzero exit.

mod cli_nmf;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use candle_core::D;
use clap::{Args, Parser, Subcommand};
use tokenlens::analysis::saliency::{Method, Rule, Saliency, SaliencyOptions, saliency};
use tokenlens::model::generate::{Decoding, GenerateOptions};
use tokenlens::model::{Capture, Logits, Model};
use tokenlens::pipeline::dataset;
use tokenlens::pipeline::runner::{RunOptions, Shard};
use tokenlens::pipeline::spec::{ModelDims, PipelineSpec};

#[derive(Parser)]
#[command(
    name = "tokenlens",
    version,
    about = "Why did the model say that? Interpretability for whole prompt datasets."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Top-k next-token predictions for each prompt.
    Predict {
        #[command(flatten)]
        model: ModelArgs,
        /// How many candidates to print.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// One or more prompts.
        #[arg(required = true)]
        prompts: Vec<String>,
    },
    /// Generate continuations for prompts, batched.
    Generate {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long, default_value_t = 20)]
        max_new_tokens: usize,
        /// 0 = greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        #[arg(long)]
        top_k: Option<usize>,
        #[arg(long)]
        top_p: Option<f64>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Keep generating after an EOS token.
        #[arg(long)]
        ignore_eos: bool,
        #[arg(required = true)]
        prompts: Vec<String>,
    },
    /// Input saliency: how much each earlier token contributed to each generated token.
    Saliency {
        #[command(flatten)]
        model: ModelArgs,
        /// Tokens to generate (greedy) and explain.
        #[arg(long, default_value_t = 10)]
        generate: usize,
        /// gradient, grad_x_input, integrated_gradients (alias ig); comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "integrated_gradients")]
        method: Vec<String>,
        /// Integrated-gradients steps.
        #[arg(long, default_value_t = 50)]
        n_steps: usize,
        /// Integrated-gradients quadrature: gauss-legendre or trapezoid.
        #[arg(long, default_value = "gauss-legendre")]
        rule: String,
        /// Rows per chunk of the reverse pass: forward tokens plus each target's prefix length
        /// (bounds memory; SmolLM2: ~0.65 MB per forward token, ~30 KB per prefix row).
        #[arg(long, default_value_t = 2048)]
        chunk_tokens: usize,
        /// Keep generating after an EOS token (always explain --generate tokens).
        #[arg(long)]
        ignore_eos: bool,
        /// Also write every score, the sequences and the timing as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(required = true)]
        prompts: Vec<String>,
    },
    /// Show how text is tokenized.
    Tokenize {
        #[command(flatten)]
        model: ModelArgs,
        text: String,
    },
    /// Print the model's configuration as JSON.
    Inspect {
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Run a pipeline: the dataset through the model, every analysis written as Parquet tables
    /// into the spec's output.dir (see docs/schema.md and docs/pipelines.md).
    Run {
        /// The pipeline spec (YAML).
        pipeline: PathBuf,
        /// Continue a run that was interrupted (killed, crashed): completed windows are kept,
        /// the rest is recomputed; the final tables equal those of an uninterrupted run.
        #[arg(long)]
        resume: bool,
        /// Replace an existing run directory (as output.overwrite: true does).
        #[arg(long)]
        overwrite: bool,
        /// Run shard I of N (prompts whose dataset index is I mod N), e.g. --shard 3/16.
        #[arg(long, conflicts_with = "shards")]
        shard: Option<String>,
        /// Run one of N shards, its index taken from JOB_COMPLETION_INDEX (Kubernetes Indexed
        /// Jobs) or SLURM_ARRAY_TASK_ID (Slurm job arrays).
        #[arg(long)]
        shards: Option<u32>,
        /// No progress bar; only the final summary (and errors).
        #[arg(long, short)]
        quiet: bool,
    },
    /// Print the output tables' schema (every table, column, type, nullability) as JSON: the
    /// same definitions the writer and docs/schema.md use.
    Schema,
    /// Serve the viewer for a run directory on 127.0.0.1 (the viewer is built into the binary;
    /// the browser reads the run's Parquet tables directly).
    View {
        /// The run directory (output.dir of the pipeline).
        run_dir: PathBuf,
        /// Port to listen on (0: any free port). Default: 8470, or a free port if it is taken.
        #[arg(long)]
        port: Option<u16>,
        /// Do not open a browser.
        #[arg(long)]
        no_open: bool,
    },
    /// Write the viewer and a run (the tables it shows) as one self-contained HTML file, to open
    /// or share without a server. Best for small runs: the Parquet parts are inlined.
    ExportHtml {
        /// The run directory.
        run_dir: PathBuf,
        /// The HTML file to write.
        out: PathBuf,
        /// Refuse runs whose viewed tables exceed this many MB of Parquet.
        #[arg(long, default_value_t = 100.0)]
        max_mb: f64,
    },
    /// Check a pipeline spec without running it: the YAML, every value, every dataset record, and
    /// (unless --no-model) the model's layers, heads, context and the watched tokens.
    Validate {
        /// The pipeline spec (YAML).
        pipeline: PathBuf,
        /// Do not load the model; skips the checks that need it.
        #[arg(long)]
        no_model: bool,
    },
    /// Factorize the MLP activations of an existing run (NMF over every recorded position) and
    /// write the nmf_* tables into it (see docs/nmf.md).
    Nmf(cli_nmf::NmfArgs),
}

#[derive(Args)]
struct ModelArgs {
    /// A .gguf file or an HF checkpoint directory (config.json, tokenizer.json, *.safetensors).
    /// Default: SmolLM2-135M-Instruct as fetched by scripts/fetch-model.sh.
    #[arg(long, short)]
    model: Option<PathBuf>,
    /// A tokenizer.json to use instead of the checkpoint's own tokenizer.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

impl ModelArgs {
    fn load(&self) -> Result<Model> {
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
        let model = Model::load(&path, self.tokenizer.as_deref())
            .with_context(|| format!("loading model {}", path.display()))?;
        Ok(model)
    }
}

fn encode_all(model: &Model, prompts: &[String]) -> Result<Vec<Vec<u32>>> {
    prompts
        .iter()
        .enumerate()
        .map(|(i, p)| model.encode(p).with_context(|| format!("prompt {}", i + 1)))
        .collect()
}

/// One line per generated token: each source token with its share of the attribution.
fn print_saliency(
    model: &Model,
    prompts: &[String],
    sequences: &[Vec<u32>],
    prompt_lens: &[usize],
    result: &Saliency,
    opts: &SaliencyOptions,
) -> Result<()> {
    let tok = |id: u32| format!("{:?}", model.tokenizer.token_text(id));
    for (doc, seq) in sequences.iter().enumerate() {
        let plen = prompt_lens[doc];
        println!(
            "{:?} -> {:?}",
            prompts[doc],
            model.tokenizer.decode(&seq[plen..])?
        );
        for method in &opts.methods {
            match method {
                Method::IntegratedGradients => println!(
                    "  [{}: {:?}, {} steps]",
                    method.name(),
                    opts.rule,
                    opts.n_steps
                ),
                _ => println!("  [{}]", method.name()),
            }
            for target in plen..seq.len() {
                let mut line = format!("    {:>14} <-", tok(seq[target]));
                for r in result
                    .rows
                    .iter()
                    .filter(|r| r.doc == doc && r.method == *method && r.target_position == target)
                {
                    line.push_str(&format!(
                        " {}{:.0}%",
                        tok(seq[r.source_position]),
                        100.0 * r.score
                    ));
                }
                if *method == Method::IntegratedGradients
                    && let Some(c) = result
                        .completeness
                        .iter()
                        .find(|c| c.doc == doc && c.target_position == target)
                {
                    line.push_str(&format!(
                        "   (p={:.3}, completeness error {:+.1e})",
                        c.target_prob, c.error
                    ));
                }
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// `tokenlens validate`: prints one `ok: ...` line, or fails with every problem found.
fn validate(pipeline: &Path, no_model: bool) -> Result<()> {
    let spec = PipelineSpec::load(pipeline)?;
    spec.check_inputs(!no_model)?;
    let data = dataset::scan(&spec.dataset)?;
    let model_note = if no_model {
        "model not loaded (--no-model)".to_string()
    } else {
        let path = spec.model.path.load_path();
        let model = Model::load(&path, spec.model.tokenizer.as_deref())
            .with_context(|| format!("loading model {}", path.display()))?;
        spec.validate_against(ModelDims::from(&model.config))?;
        // Tokens the tokenizer adds to any text (e.g. a BOS) are not part of a watched token.
        let special = model.tokenizer.encode("")?;
        spec.validate_watch_tokens(|t| {
            model
                .tokenizer
                .encode(t)
                .map(|ids| match ids.strip_prefix(special.as_slice()) {
                    Some(rest) => rest.to_vec(),
                    None => ids,
                })
        })?;
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

/// `tokenlens view`: binds, prints the URL, optionally opens a browser, serves until killed.
fn view(run_dir: &Path, port: Option<u16>, no_open: bool) -> Result<()> {
    use std::io::Write;
    use tokenlens::view::Server;
    if !run_dir.is_dir() {
        bail!("{}: not a directory", run_dir.display());
    }
    if !run_dir.join("manifest.json").is_file() {
        bail!(
            "{}: not a run directory (no manifest.json); give the output.dir of a pipeline",
            run_dir.display()
        );
    }
    let server = match port {
        Some(p) => Server::bind(run_dir, p)
            .with_context(|| format!("listening on 127.0.0.1:{p} (--port 0 picks a free port)"))?,
        None => Server::bind(run_dir, 8470)
            .or_else(|_| Server::bind(run_dir, 0))
            .context("listening on 127.0.0.1")?,
    };
    let url = format!("http://127.0.0.1:{}/", server.port());
    println!("viewing {} at {url}", run_dir.display());
    std::io::stdout().flush()?;
    if !no_open {
        let opener = if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        };
        // Best effort: no browser (a server, ssh) is fine, the URL is printed.
        let _ = std::process::Command::new(opener)
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    server.run();
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Predict {
            model,
            top_k,
            prompts,
        } => {
            let model = model.load()?;
            let seqs = encode_all(&model, &prompts)?;
            let batch = model.batch(&seqs)?;
            let out = model.forward(
                &batch,
                &Capture {
                    logits: Logits::Last,
                    ..Capture::default()
                },
            )?;
            let probs = candle_nn::ops::softmax_last_dim(&out.logits.context("no logits")?)?;
            let k = top_k.min(model.config.vocab_size).max(1);
            let sorted = probs
                .arg_sort_last_dim(false)?
                .narrow(D::Minus1, 0, k)?
                .to_vec2::<u32>()?;
            let probs = probs.to_vec2::<f32>()?;
            for (r, prompt) in prompts.iter().enumerate() {
                println!("{prompt:?}");
                println!("  {:>4}  {:>8}  {:>9}  token", "rank", "id", "prob");
                for (rank, &id) in sorted[r].iter().enumerate() {
                    let text = model.tokenizer.token_text(id);
                    println!(
                        "  {:>4}  {:>8}  {:>9.6}  {:?}",
                        rank + 1,
                        id,
                        probs[r][id as usize],
                        text
                    );
                }
            }
        }
        Command::Generate {
            model,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            seed,
            ignore_eos,
            prompts,
        } => {
            if let Some(p) = top_p
                && !(p > 0.0 && p <= 1.0)
            {
                bail!("--top-p must be in (0, 1], got {p}");
            }
            if temperature < 0.0 {
                bail!("--temperature must be >= 0, got {temperature}");
            }
            let model = model.load()?;
            let seqs = encode_all(&model, &prompts)?;
            let decoding = if temperature == 0.0 {
                Decoding::Greedy
            } else {
                Decoding::Sample {
                    temperature,
                    top_k,
                    top_p,
                }
            };
            let opts = GenerateOptions {
                max_new_tokens,
                decoding,
                stop_at_eos: !ignore_eos,
            };
            let seeds: Vec<u64> = (0..seqs.len() as u64)
                .map(|i| seed.wrapping_add(i))
                .collect();
            let gens = model.generate(&seqs, &seeds, &opts)?;
            // The generated part in bold on a terminal.
            let bold = std::io::stdout().is_terminal();
            for (prompt, g) in prompts.iter().zip(gens) {
                let text = model.tokenizer.decode(&g.generated)?;
                if bold {
                    println!("{prompt}\x1b[1m{text}\x1b[0m");
                } else {
                    println!("{prompt}{text}");
                }
            }
        }
        Command::Saliency {
            model,
            generate,
            method,
            n_steps,
            rule,
            chunk_tokens,
            ignore_eos,
            json,
            prompts,
        } => {
            let methods = method
                .iter()
                .map(|m| {
                    Method::parse(m).with_context(|| {
                        format!(
                            "unknown --method `{m}` (gradient, grad_x_input, integrated_gradients)"
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let rule = match rule.as_str() {
                "gauss-legendre" | "gausslegendre" => Rule::GaussLegendre,
                "trapezoid" => Rule::Trapezoid,
                other => bail!("unknown --rule `{other}` (gauss-legendre, trapezoid)"),
            };
            if generate == 0 {
                bail!("--generate must be at least 1: saliency explains generated tokens");
            }
            let model = model.load()?;
            let seqs = encode_all(&model, &prompts)?;
            let opts = GenerateOptions {
                max_new_tokens: generate,
                decoding: Decoding::Greedy,
                stop_at_eos: !ignore_eos,
            };
            let gens = model.generate(&seqs, &vec![0; seqs.len()], &opts)?;
            let sequences: Vec<Vec<u32>> = gens.iter().map(|g| g.sequence()).collect();
            let prompt_lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
            let sopts = SaliencyOptions {
                methods: methods.clone(),
                n_steps,
                rule,
                chunk_tokens,
            };
            // One-time model preparation (transposed weight copies), outside the timed stage like
            // the model load; its time is reported on its own.
            let prep = std::time::Instant::now();
            model.prepare_reverse()?;
            let prepare_seconds = prep.elapsed().as_secs_f64();
            let started = std::time::Instant::now();
            let result = saliency(&model, &sequences, &prompt_lens, &sopts)?;
            let elapsed = started.elapsed().as_secs_f64();
            print_saliency(&model, &prompts, &sequences, &prompt_lens, &result, &sopts)?;
            let n_targets: usize = sequences
                .iter()
                .zip(&prompt_lens)
                .map(|(s, p)| s.len() - p)
                .sum();
            if let Some(path) = json {
                let doc = serde_json::json!({
                    "prompts": prompts, "sequences": sequences, "prompt_lens": prompt_lens,
                    "methods": methods, "n_steps": n_steps, "rule": rule, "seconds": elapsed,
                    "prepare_seconds": prepare_seconds,
                    "generated_tokens": n_targets, "threads": rayon::current_num_threads(),
                    "rows": result.rows, "completeness": result.completeness,
                });
                std::fs::write(&path, serde_json::to_string(&doc)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            eprintln!(
                "saliency: {n_targets} generated tokens, {} method(s), {elapsed:.2} s ({:.3} s per generated token; model preparation {prepare_seconds:.2} s before)",
                methods.len(),
                elapsed / n_targets.max(1) as f64
            );
        }
        Command::Nmf(args) => cli_nmf::run(args)?,
        Command::Tokenize { model, text } => {
            let model = model.load()?;
            let ids = model.tokenizer.encode(&text)?;
            for id in ids {
                println!("{id:>8}  {:?}", model.tokenizer.token_text(id));
            }
        }
        Command::Validate { pipeline, no_model } => validate(&pipeline, no_model)?,
        Command::View {
            run_dir,
            port,
            no_open,
        } => view(&run_dir, port, no_open)?,
        Command::ExportHtml {
            run_dir,
            out,
            max_mb,
        } => {
            if !run_dir.join("manifest.json").is_file() {
                bail!(
                    "{}: not a run directory (no manifest.json)",
                    run_dir.display()
                );
            }
            let (html, inlined) = tokenlens::view::export_html(&run_dir, (max_mb * 1e6) as u64)
                .with_context(|| format!("{}", run_dir.display()))?;
            std::fs::write(&out, &html).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "wrote {} ({:.1} MB, {:.1} MB of Parquet inlined)",
                out.display(),
                html.len() as f64 / 1e6,
                inlined as f64 / 1e6
            );
        }
        Command::Schema => {
            use tokenlens::store::schema::ALL_TABLES;
            let tables: Vec<serde_json::Value> = ALL_TABLES
                .iter()
                .map(|t| {
                    let cols: Vec<serde_json::Value> = t
                        .columns
                        .iter()
                        .map(|c| {
                            serde_json::json!({
                                "name": c.name, "type": c.ty.doc_name(), "nullable": c.nullable,
                            })
                        })
                        .collect();
                    serde_json::json!({"name": t.name, "columns": cols})
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&tables)?);
        }
        Command::Run {
            pipeline,
            resume,
            overwrite,
            shard,
            shards,
            quiet,
        } => {
            let mut spec = PipelineSpec::load(&pipeline)?;
            spec.output.overwrite |= overwrite;
            let shard = match (shard, shards) {
                (Some(s), _) => Shard::parse(&s)?,
                (None, Some(n)) => {
                    let var = ["JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID"]
                        .into_iter()
                        .find_map(|v| std::env::var(v).ok().map(|x| (v, x)));
                    let Some((name, value)) = var else {
                        bail!(
                            "--shards {n}: neither JOB_COMPLETION_INDEX nor SLURM_ARRAY_TASK_ID \
                             is set; use --shard I/{n}"
                        );
                    };
                    Shard::parse(&format!("{value}/{n}"))
                        .with_context(|| format!("{name}={value}"))?
                }
                (None, None) => Shard::ALL,
            };
            let opts = RunOptions {
                resume,
                shard,
                quiet,
            };
            let r = tokenlens::pipeline::runner::run(&spec, &opts)?;
            let rows: Vec<String> = r.rows.iter().map(|(t, n)| format!("{t} {n}")).collect();
            println!(
                "done: {} prompts, {} tokens in {:.1} s ({:.2} prompts/s, {:.0} tokens/s) -> {}\nrows: {}",
                r.prompts,
                r.tokens,
                r.seconds,
                r.prompts as f64 / r.seconds.max(1e-9),
                r.tokens as f64 / r.seconds.max(1e-9),
                r.run_dir.display(),
                rows.join(", ")
            );
        }
        Command::Inspect { model } => {
            let m = model.load()?;
            let info = serde_json::json!({
                "path": m.path, "format": m.format, "config": m.config,
                "tokenizer_vocab_size": m.tokenizer.vocab_size(),
            });
            println!("{}", serde_json::to_string_pretty(&info)?);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tokenlens::tune_allocator();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
