//! The model engine: loads real checkpoints (HF directories, GGUF files, hub ids `org/name`)
//! into one transformer implementation (`transformer`, `block`; a weight-name mapping per family:
//! `gpt2`, `llama`, `gemma`, `neox`, `phi3`, `bert`), with the weights in f32, bf16 or f16
//! (`precision`), and runs it on left-padded batches (`Batch`). A forward pass returns what its `Capture` asks for: residual stream, MLP
//! activations, attention probabilities, logits. `Model::lens_logits` projects residual states
//! to the vocabulary, and `generate` continues prompts with a KV cache. Gradients with respect
//! to the input embeddings come from candle's autograd through the differentiable path
//! (`Model::embedding_gradients`) or, for saliency, from our multi-target reverse pass
//! (`reverse`, `Model::metric_gradients`).
//!
//! Layout: `ops` are the layers' building blocks (each
//! with a fast and a differentiable path), `kernels` the fused CPU kernels of the fast path,
//! `autodiff` the differentiable fused ops; `config`, `weights`, `gguf`, `hub` and `tokenizer`
//! load a checkpoint.

pub mod autodiff;
mod batch;
pub mod bert;
pub mod block;
mod capture;
pub mod config;
pub mod gemma;
pub mod generate;
pub mod gguf;
pub mod gguf_types;
pub mod gpt2;
pub mod hub;
pub mod intervene;
pub mod kernels;
pub mod llama;
pub mod neox;
pub mod ops;
pub mod patch;
pub mod phi3;
pub mod precision;
pub mod reverse;
pub mod rope;
#[cfg(test)]
pub(crate) mod test_util;
pub mod tokenizer;
pub mod transformer;
pub mod weights;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{D, DType, Device, Tensor, Var};
use rayon::prelude::*;
use serde::Serialize;

pub use batch::Batch;
use capture::gather_positions;
pub use capture::{Capture, Captures, Layers, Logits};
pub use config::{Arch, ModelConfig};
pub use ops::{LayerCache, Mode};
pub use precision::{Compute, WeightDtype};
pub use tokenizer::Tokenizer;
pub use transformer::{LayerCtx, LayerOut, Rope, Transformer};
use weights::Weights;

use crate::error::{Error, Result};

/// File name of the default model, SmolLM2-135M-Instruct (GGUF, Q4_1), as scripts/fetch-model.sh
/// caches it.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The real checkpoints scripts/fetch-model.sh fetches, by the name it takes, with the file or
/// directory it caches.
pub const FETCHED_MODELS: &[(&str, &str)] = &[
    ("smollm2", DEFAULT_MODEL_FILE),
    ("gemma3", "gemma-3-270m-q4_k_m.gguf"),
    ("minilm", "all-MiniLM-L6-v2"),
];

/// Where scripts/fetch-model.sh caches models: `$TOKENLENS_CACHE/models/` (default
/// `~/.cache/tokenlens/models/`).
fn models_dir() -> PathBuf {
    let cache = std::env::var_os("TOKENLENS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/tokenlens")
        });
    cache.join("models")
}

/// Where scripts/fetch-model.sh caches the default model. The file may not exist yet.
pub fn default_model_path() -> PathBuf {
    models_dir().join(DEFAULT_MODEL_FILE)
}

/// Where `scripts/fetch-model.sh NAME` caches the model `NAME` (see `FETCHED_MODELS`), or None
/// for an unknown name. It may not exist yet.
pub fn fetched_model_path(name: &str) -> Option<PathBuf> {
    FETCHED_MODELS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| models_dir().join(f))
}

/// Whether the logit lens applies the final norm before the unembedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LensNorm {
    /// final norm, then unembedding: the usual logit lens (default). At the last layer this
    /// equals the model's own logits.
    #[default]
    FinalNorm,
    /// unembedding of the raw residual stream, as Ecco does for intermediate layers.
    Raw,
}

/// What `embedding_gradients` differentiates, for one target token at one position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    Logit,
    Prob,
    LogProb,
}

/// One target per row: the token whose score at `position` is differentiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub position: usize,
    pub token: u32,
}

/// Gradients of one objective per row with respect to that row's input token embeddings.
pub struct EmbeddingGrad {
    /// The input token embeddings [B, T, d].
    pub embeds: Tensor,
    /// d objective / d embeds [B, T, d].
    pub grad: Tensor,
    /// The objective's value per row.
    pub values: Vec<f32>,
}

/// Checkpoint formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A directory with config.json, tokenizer.json and *.safetensors.
    Hf,
    /// A single .gguf file (each tensor dequantized to f32, then held in the weights' dtype).
    Gguf,
}

/// A loaded model: config, tokenizer and an architecture body.
pub struct Model {
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub path: PathBuf,
    pub format: Format,
    /// The dtype the matrices are held in (`precision`); activations are f32 whatever it is.
    pub dtype: DType,
    /// The precision of the weight products (`precision::Compute`; `set_compute`).
    pub compute: Compute,
    body: Transformer,
    device: Device,
}

impl Model {
    /// Loads a GGUF file, an HF checkpoint directory, or a hub id `org/name` (see `hub`), with
    /// its weights in the checkpoint's own dtype (`WeightDtype::Auto`). `tokenizer` overrides
    /// the tokenizer (a tokenizer.json), e.g. for GGUF files whose tokenizer type cannot be
    /// rebuilt.
    pub fn load(path: &Path, tokenizer: Option<&Path>) -> Result<Self> {
        Self::load_as(path, tokenizer, WeightDtype::Auto)
    }

    /// `load` with the weights held in `dtype` (see `precision`).
    pub fn load_as(path: &Path, tokenizer: Option<&Path>, dtype: WeightDtype) -> Result<Self> {
        if !path.exists() {
            let s = path.to_string_lossy();
            if hub::looks_like_hub_id(&s) {
                return Self::load_as(&hub::resolve(&s)?, tokenizer, dtype);
            }
            return Err(Error::model(path, "no such file or directory"));
        }
        if path.is_dir() {
            let cfg_path = path.join("config.json");
            if !cfg_path.exists() {
                return Err(Error::model(
                    path,
                    "no config.json: an HF checkpoint directory holds config.json, \
                     tokenizer.json and its *.safetensors weights",
                ));
            }
            let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
            let mut config = ModelConfig::from_hf_json(&cfg_path, &text)?;
            let tok_path = tokenizer
                .map(Path::to_path_buf)
                .unwrap_or_else(|| path.join("tokenizer.json"));
            let tok =
                Tokenizer::from_file(&tok_path, config.bos_token_id, config.eos_token_ids.clone())?;
            let mut w = Weights::from_hf_dir(path)?;
            w.dtype = dtype.resolve(w.stored);
            let body = Self::body(&mut config, &mut w, true)?;
            Ok(Model {
                config,
                tokenizer: tok,
                path: path.to_path_buf(),
                format: Format::Hf,
                dtype: w.dtype,
                compute: Compute::F32,
                body,
                device: Device::Cpu,
            })
        } else {
            let ck = gguf::load(path)?;
            let mut config = ck.config;
            let mut w = ck.weights;
            config.tie_word_embeddings =
                !(w.contains("lm_head.weight") || w.contains("embed_out.weight"));
            let tok = match tokenizer {
                Some(t) => {
                    Tokenizer::from_file(t, config.bos_token_id, config.eos_token_ids.clone())?
                }
                None => Tokenizer::from_gguf(path, &ck.metadata)?,
            };
            w.dtype = dtype.resolve(w.stored);
            let body = Self::body(&mut config, &mut w, false)?;
            Ok(Model {
                config,
                tokenizer: tok,
                path: path.to_path_buf(),
                format: Format::Gguf,
                dtype: w.dtype,
                compute: Compute::F32,
                body,
                device: Device::Cpu,
            })
        }
    }

    /// Runs every weight product in `c` from now on (`precision::Compute`).
    pub fn set_compute(&mut self, c: Compute) {
        self.compute = c;
        self.body.set_compute(c);
    }

    fn body(config: &mut ModelConfig, w: &mut Weights, hf: bool) -> Result<Transformer> {
        match config.arch {
            Arch::Gpt2 => gpt2::load(config, w, hf),
            Arch::Llama => llama::load(config, w),
            Arch::Gemma => gemma::load(config, w),
            Arch::GptNeox => neox::load(config, w),
            Arch::Phi3 => phi3::load(config, w),
            Arch::Bert => bert::load(config, w),
        }
    }

    /// Bytes of every parameter as held in memory (matrices in `dtype`, the rest f32; a tied
    /// unembedding counted once).
    pub fn weight_bytes(&self) -> usize {
        self.body.weight_bytes()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The id used for padding: the tokenizer's EOS, else 0 (padding is always masked).
    pub fn pad_id(&self) -> u32 {
        self.config.eos_token_ids.first().copied().unwrap_or(0)
    }

    /// Whether the checkpoint has a language-model head (predictions, the lens and saliency
    /// need one; a sentence-transformers encoder has none).
    pub fn has_lm_head(&self) -> bool {
        self.body.lm_head.is_some()
    }

    /// An encoder's mask token ([MASK], or <mask> for RoBERTa-style vocabularies), if any.
    pub fn mask_token_id(&self) -> Option<u32> {
        if !self.config.is_encoder() {
            return None;
        }
        ["[MASK]", "<mask>"]
            .iter()
            .find_map(|t| self.tokenizer.token_to_id(t))
    }

    /// Tokenizes `text` and checks the result fits the context.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let ids = self.tokenizer.encode(text)?;
        if ids.is_empty() {
            return Err(Error::Input(format!("prompt {text:?} has no tokens")));
        }
        if ids.len() > self.config.max_position_embeddings {
            return Err(Error::Input(format!(
                "prompt of {} tokens is longer than the model's context ({} tokens)",
                ids.len(),
                self.config.max_position_embeddings
            )));
        }
        Ok(ids)
    }

    /// Builds a left-padded batch from token sequences.
    pub fn batch(&self, seqs: &[Vec<u32>]) -> Result<Batch> {
        Batch::left_padded(seqs, self.pad_id(), &self.device)
    }

    /// A left-padded batch `width` columns wide.
    pub fn batch_to(&self, seqs: &[Vec<u32>], width: usize) -> Result<Batch> {
        Batch::left_padded_to(seqs, width, self.pad_id(), &self.device)
    }

    /// Token embeddings [B, T, d] of `ids` [B, T] (no position embeddings).
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let e = self.body.embed.index_select(&ids.flatten_all()?, 0)?;
        Ok(e.to_dtype(DType::F32)?
            .reshape((b, t, self.config.hidden_size))?)
    }

    /// The mean of the input-embedding matrix's rows, over the whole vocabulary [d]: summed in
    /// f64 in blocks of rows, then rounded to f32.
    pub fn mean_embedding(&self) -> Result<Vec<f32>> {
        let (v, d) = self.body.embed.dims2()?;
        let mut sum = vec![0f64; d];
        for start in (0..v).step_by(4096) {
            let rows = self
                .body
                .embed
                .narrow(0, start, 4096.min(v - start))?
                .to_dtype(DType::F64)?
                .sum(0)?
                .to_vec1::<f64>()?;
            sum.iter_mut().zip(rows).for_each(|(s, r)| *s += r);
        }
        Ok(sum.iter().map(|s| (s / v as f64) as f32).collect())
    }

    /// A forward pass over `batch` from its token ids.
    ///
    /// Rows are independent, so the batch is split into one group of rows per thread and the
    /// groups run in parallel (rayon); this scales better on few cores than splitting every
    /// matmul across threads. The captures are joined back in row order.
    pub fn forward(&self, batch: &Batch, capture: &Capture) -> Result<Captures> {
        let groups = rayon::current_num_threads().min(batch.rows());
        if groups <= 1 {
            let embeds = self.embed(&batch.ids)?;
            return self.forward_embeds(&embeds, batch, capture, Mode::Fast, None);
        }
        let rows = batch.rows();
        let bounds: Vec<(usize, usize)> = (0..groups)
            .map(|g| (g * rows / groups, (g + 1) * rows / groups))
            .collect();
        // Groups stop at the final norm; the LM head then runs once over the whole batch (a
        // larger, more efficient matmul, and no copy of the logits).
        let inner = Capture {
            final_hidden: capture.final_hidden || capture.logits != Logits::None,
            logits: Logits::None,
            ..capture.clone()
        };
        let parts: Vec<Result<Captures>> = bounds
            .par_iter()
            .map(|&(a, b)| {
                let sub = batch.rows_range(a, b)?;
                let embeds = self.embed(&sub.ids)?;
                self.forward_embeds(&embeds, &sub, &inner, Mode::Fast, None)
            })
            .collect();
        let parts = parts.into_iter().collect::<Result<Vec<_>>>()?;
        let mut out = Captures::concat_rows(parts)?;
        if let Some(h) = &out.final_hidden {
            let t = batch.width();
            out.logits = match &capture.logits {
                Logits::None => None,
                Logits::All => Some(self.unembed(h)?),
                Logits::Last => Some(self.unembed(&gather_positions(h, &vec![t - 1; rows])?)?),
                Logits::At(p) => Some(self.unembed(&gather_positions(h, p)?)?),
            };
        }
        if !capture.final_hidden {
            out.final_hidden = None;
        }
        Ok(out)
    }

    /// A forward pass from input embeddings [B, T, d] (the new tokens only when `cache` holds
    /// earlier ones). Use `Mode::Differentiable` when gradients must flow to `embeds`.
    pub fn forward_embeds(
        &self,
        embeds: &Tensor,
        batch: &Batch,
        capture: &Capture,
        mode: Mode,
        cache: Option<&mut Vec<LayerCache>>,
    ) -> Result<Captures> {
        self.forward_edited(embeds, batch, capture, mode, cache, &[], None)
    }

    /// `forward_embeds` with activation patching's edits: `edits[l]` edits block l (`patch`);
    /// blocks past the end of `edits` run unedited. With `from = (l, x)`, blocks before l are
    /// skipped and block l reads `x` ([B or 1, T, d]: the residual stream those blocks would
    /// have produced, e.g. a run's captured `residual[l]`); `residual` captures start there.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_edited(
        &self,
        embeds: &Tensor,
        batch: &Batch,
        capture: &Capture,
        mode: Mode,
        mut cache: Option<&mut Vec<LayerCache>>,
        edits: &[patch::LayerEdit],
        from: Option<(usize, &Tensor)>,
    ) -> Result<Captures> {
        let (b, t, _) = embeds.dims3()?;
        let tk = batch.key_mask.len() / b;
        let max = batch.positions.max_all()?.to_scalar::<u32>()? as usize;
        if max >= self.config.max_position_embeddings {
            return Err(Error::Input(format!(
                "position {max} is beyond the model's context ({} tokens)",
                self.config.max_position_embeddings
            )));
        }
        if let Some(c) = cache.as_deref_mut() {
            c.resize(self.config.n_layers, LayerCache::default());
        }
        let mask = ops::AttnMask {
            key_mask: &batch.key_mask,
            tq: t,
            tk,
            window: None,
            causal: true,
        };
        // The additive masks are only needed for differentiable attention probabilities: one
        // per (window, causality) the blocks use.
        let biases = match mode {
            Mode::Differentiable if capture.attention != Layers::None => {
                let mut m = BTreeMap::new();
                for blk in &self.body.blocks {
                    let key = (blk.attn.window, blk.attn.causal);
                    if let std::collections::btree_map::Entry::Vacant(e) = m.entry(key) {
                        let mk = ops::AttnMask {
                            window: key.0,
                            causal: key.1,
                            ..mask
                        };
                        e.insert(ops::attention_bias(&mk, b, &self.device)?);
                    }
                }
                Some(m)
            }
            _ => None,
        };
        let (mut x, ropes) = self.body.input(embeds, &batch.positions, mode)?;
        let first = match from {
            Some((l, start)) => {
                x = start.broadcast_as(x.shape())?.contiguous()?;
                l
            }
            None => 0,
        };
        let mut out = Captures::default();
        if capture.residual {
            out.residual.push(x.clone());
        }
        for l in first..self.config.n_layers {
            let ctx = LayerCtx {
                mask: &mask,
                biases: biases.as_ref(),
                ropes: &ropes,
                mode,
                want_mlp: capture.mlp.contains(l),
                want_attn: capture.attention.contains(l),
                want_sites: capture.sites,
                edit: edits.get(l).filter(|e| !e.is_empty()),
            };
            let layer_cache = cache.as_deref_mut().map(|c| &mut c[l]);
            let o = self.body.blocks[l].forward(&x, &ctx, layer_cache)?;
            x = o.x;
            if capture.residual {
                out.residual.push(x.clone());
            }
            if let Some(m) = o.mlp {
                out.mlp.insert(l, m);
            }
            if let Some(a) = o.attn {
                out.attention.insert(l, a);
            }
            out.z.extend(o.z);
            out.mlp_out.extend(o.mlp_out);
        }
        if capture.final_hidden {
            out.final_hidden = Some(self.body.final_norm(&x, mode)?);
        }
        out.logits = match &capture.logits {
            Logits::None => None,
            Logits::All => Some(self.unembed_mode(&self.body.final_norm(&x, mode)?, mode)?),
            Logits::Last => Some(self.logits_at(&x, &vec![t - 1; b], mode)?),
            Logits::At(p) => Some(self.logits_at(&x, p, mode)?),
        };
        Ok(out)
    }

    /// Logits [B, V] at one position per row of the last residual state `x` [B, T, d].
    fn logits_at(&self, x: &Tensor, positions: &[usize], mode: Mode) -> Result<Tensor> {
        let rows = gather_positions(x, positions)?;
        self.unembed_mode(&self.body.final_norm(&rows, mode)?, mode)
    }

    /// Logits of already-normalized states [.., d] -> [.., V].
    pub fn unembed(&self, h: &Tensor) -> Result<Tensor> {
        self.unembed_mode(h, Mode::Fast)
    }

    fn unembed_mode(&self, h: &Tensor, mode: Mode) -> Result<Tensor> {
        self.body.unembed(h, mode)
    }

    /// The logit lens: residual states [.., d] projected to vocabulary logits [.., V].
    pub fn lens_logits(&self, resid: &Tensor, norm: LensNorm) -> Result<Tensor> {
        match norm {
            LensNorm::FinalNorm => self.unembed(&self.body.final_norm(resid, Mode::Fast)?),
            LensNorm::Raw => self.unembed(resid),
        }
    }

    /// Gradients of one objective per row (e.g. log p(target token at position)) with respect to the
    /// row's input token embeddings. Rows are independent, so one backward pass serves the batch.
    pub fn embedding_gradients(
        &self,
        batch: &Batch,
        embeds: Option<&Tensor>,
        targets: &[Target],
        objective: Objective,
    ) -> Result<EmbeddingGrad> {
        if targets.len() != batch.rows() {
            return Err(Error::Input(format!(
                "{} targets for a batch of {} rows",
                targets.len(),
                batch.rows()
            )));
        }
        let embeds = match embeds {
            Some(e) => e.clone(),
            None => self.embed(&batch.ids)?,
        };
        let var = Var::from_tensor(&embeds)?;
        let capture = Capture {
            logits: Logits::At(targets.iter().map(|t| t.position).collect()),
            ..Capture::default()
        };
        let out =
            self.forward_embeds(var.as_tensor(), batch, &capture, Mode::Differentiable, None)?;
        let logits = out.logits.expect("logits were requested");
        let scores = match objective {
            Objective::Logit => logits,
            Objective::Prob => ops::softmax_last(&logits, Mode::Differentiable)?,
            Objective::LogProb => candle_nn::ops::log_softmax(&logits, D::Minus1)?,
        };
        let tok: Vec<u32> = targets.iter().map(|t| t.token).collect();
        let tok = Tensor::from_vec(tok, (batch.rows(), 1), &self.device)?;
        let picked = scores.gather(&tok, 1)?.squeeze(1)?;
        let grads = picked.sum_all()?.backward()?;
        let grad = grads.get(var.as_tensor()).cloned().ok_or_else(|| {
            Error::Input("the objective does not depend on the embeddings".into())
        })?;
        Ok(EmbeddingGrad {
            embeds,
            grad,
            values: picked.to_vec1()?,
        })
    }
}
