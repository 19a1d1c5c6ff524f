//! The model engine: loads real checkpoints (HF directories, GGUF files) into our own
//! transformer implementations, runs padded batches, and returns on request the internals
//! the analyses need: residual stream, MLP activations, attention probabilities, logits, and
//! gradients with respect to the input embeddings.

pub mod autodiff;
pub mod config;
pub mod generate;
pub mod gguf;
pub mod gpt2;
pub mod hub;
pub mod kernels;
pub mod llama;
pub mod ops;
pub mod reverse;
pub mod tokenizer;
pub mod weights;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{D, Device, Tensor, Var};
use rayon::prelude::*;
use serde::Serialize;

pub use config::{Arch, ModelConfig};
pub use ops::{LayerCache, Mode};
pub use tokenizer::Tokenizer;
use weights::Weights;

use crate::error::{Error, Result};

/// File name of the default model, SmolLM2-135M-Instruct (GGUF, Q4_1), as scripts/fetch-model.sh
/// caches it.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where scripts/fetch-model.sh caches the default model: `$TOKENLENS_CACHE/models/` (default
/// `~/.cache/tokenlens/models/`). The file may not exist yet.
pub fn default_model_path() -> PathBuf {
    let cache = std::env::var_os("TOKENLENS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/tokenlens")
        });
    cache.join("models").join(DEFAULT_MODEL_FILE)
}

/// RoPE cos/sin for the batch's positions, [B, T, head_dim / 2] each.
pub type Rope = (Tensor, Tensor);

/// Inputs every decoder layer sees.
pub struct LayerCtx<'a> {
    /// Which keys each query sees.
    pub mask: &'a ops::AttnMask<'a>,
    /// The same as an additive mask [B, 1, Tq, Tk], built for the differentiable path only.
    pub bias: Option<&'a Tensor>,
    pub rope: Option<&'a Rope>,
    pub mode: Mode,
    pub want_mlp: bool,
    pub want_attn: bool,
}

/// What a decoder layer returns: its output (the residual stream) and the captures asked for.
pub struct LayerOut {
    pub x: Tensor,
    /// MLP activations after the nonlinearity, [B, T, ffn].
    pub mlp: Option<Tensor>,
    /// Attention probabilities, [B, H, Tq, Tk].
    pub attn: Option<Tensor>,
}

/// One architecture's body; the capture logic around it is shared (see `Model::forward`).
pub trait Architecture: Send + Sync {
    /// Token embedding matrix [V, d].
    fn embed_tokens(&self) -> &Tensor;
    /// Unembedding matrix [V, d].
    fn lm_head(&self) -> &Tensor;
    /// The residual stream entering block 0 (GPT-2 adds position embeddings), plus RoPE tables.
    fn input(&self, embeds: &Tensor, positions: &Tensor) -> Result<(Tensor, Option<Rope>)>;
    fn layer(
        &self,
        l: usize,
        x: &Tensor,
        ctx: &LayerCtx,
        cache: Option<&mut LayerCache>,
    ) -> Result<LayerOut>;
    fn final_norm(&self, x: &Tensor, mode: Mode) -> Result<Tensor>;
    /// Block `l`'s weights, for the multi-target reverse pass (`reverse.rs`).
    fn block(&self, l: usize) -> reverse::BlockRef<'_>;
    fn final_norm_ref(&self) -> reverse::NormRef<'_>;
    /// Learned position embeddings added to the input [max_pos, d] (GPT-2), if any.
    fn position_embeddings(&self) -> Option<&Tensor>;
    /// RoPE cos/sin tables [max_pos, head_dim / 2], if the model rotates q and k.
    fn rope_tables(&self) -> Option<(&Tensor, &Tensor)>;
}

/// Which layers a capture covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Layers {
    #[default]
    None,
    All,
    Only(Vec<usize>),
}

impl Layers {
    pub fn contains(&self, l: usize) -> bool {
        match self {
            Layers::None => false,
            Layers::All => true,
            Layers::Only(v) => v.contains(&l),
        }
    }
}

/// Which positions get logits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Logits {
    #[default]
    None,
    /// The last position of every row: [B, V].
    Last,
    /// One position per row: [B, V].
    At(Vec<usize>),
    /// Every position: [B, T, V].
    All,
}

/// What a forward pass keeps. Nothing that is not asked for is kept.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    /// The embedding output (index 0) and the output of every block (index l + 1), before the final norm.
    pub residual: bool,
    /// MLP activations after the nonlinearity (the input of the MLP's output projection).
    pub mlp: Layers,
    /// Attention probabilities per head.
    pub attention: Layers,
    /// The last block's output after the final norm.
    pub final_hidden: bool,
    pub logits: Logits,
}

/// The internals a forward pass returns, per `Capture`.
#[derive(Debug, Default)]
pub struct Captures {
    /// n_layers + 1 tensors [B, T, d] if asked for.
    pub residual: Vec<Tensor>,
    /// layer -> [B, T, ffn].
    pub mlp: BTreeMap<usize, Tensor>,
    /// layer -> [B, H, T, Tk].
    pub attention: BTreeMap<usize, Tensor>,
    pub final_hidden: Option<Tensor>,
    pub logits: Option<Tensor>,
}

/// Helpers for the unit tests of the model modules.
#[cfg(test)]
pub(crate) mod test_util {
    use candle_core::{Device, Tensor, Var};

    /// max |a - b|.
    pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// Deterministic values in [-1, 1) without a RNG crate.
    pub fn randn(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut s = seed;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Checks autodiff's gradient of the scalar `f` at `x0` against central finite differences,
    /// on every `stride`-th element.
    pub fn check_gradient(f: impl Fn(&Tensor) -> Tensor, x0: &Tensor, stride: usize) {
        let var = Var::from_tensor(x0).unwrap();
        let grads = f(var.as_tensor()).backward().unwrap();
        let g: Vec<f32> = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let base: Vec<f32> = x0.flatten_all().unwrap().to_vec1().unwrap();
        let eps = 1e-2f32;
        for i in (0..base.len()).step_by(stride) {
            let (mut plus, mut minus) = (base.clone(), base.clone());
            plus[i] += eps;
            minus[i] -= eps;
            let t = |v: Vec<f32>| Tensor::from_vec(v, x0.shape(), &Device::Cpu).unwrap();
            let fp: f32 = f(&t(plus)).to_scalar().unwrap();
            let fm: f32 = f(&t(minus)).to_scalar().unwrap();
            let fd = (fp - fm) / (2.0 * eps);
            assert!(
                (fd - g[i]).abs() < 2e-2 * (1.0 + fd.abs()),
                "element {i}: autodiff {} vs fd {fd}",
                g[i]
            );
        }
    }
}

/// One position per row of x [B, T, d] -> [B, d] (differentiable).
fn gather_positions(x: &Tensor, positions: &[usize]) -> Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    if positions.len() != b || positions.iter().any(|&p| p >= t) {
        return Err(Error::Input(format!(
            "logit positions {positions:?} do not fit a batch of {b} x {t}"
        )));
    }
    let idx: Vec<u32> = positions
        .iter()
        .enumerate()
        .map(|(r, &p)| (r * t + p) as u32)
        .collect();
    let idx = Tensor::from_vec(idx, b, x.device())?;
    Ok(x.reshape((b * t, d))?.index_select(&idx, 0)?)
}

impl Captures {
    /// Joins the captures of consecutive row groups along the batch dimension.
    fn concat_rows(parts: Vec<Captures>) -> Result<Captures> {
        // Every captured tensor is joined independently: do the copies in parallel.
        let first = &parts[0];
        let n_res = first.residual.len();
        let mlp_layers: Vec<usize> = first.mlp.keys().copied().collect();
        let attn_layers: Vec<usize> = first.attention.keys().copied().collect();
        let jobs = n_res + mlp_layers.len() + attn_layers.len() + 2;
        let joined: Vec<Option<Tensor>> = (0..jobs)
            .into_par_iter()
            .map(|j| -> Result<Option<Tensor>> {
                let pick = |p: &Captures| -> Option<Tensor> {
                    if j < n_res {
                        return Some(p.residual[j].clone());
                    }
                    let j = j - n_res;
                    if j < mlp_layers.len() {
                        return Some(p.mlp[&mlp_layers[j]].clone());
                    }
                    let j = j - mlp_layers.len();
                    if j < attn_layers.len() {
                        return Some(p.attention[&attn_layers[j]].clone());
                    }
                    match j - attn_layers.len() {
                        0 => p.final_hidden.clone(),
                        _ => p.logits.clone(),
                    }
                };
                let ts: Option<Vec<Tensor>> = parts.iter().map(pick).collect();
                Ok(match ts {
                    Some(ts) => Some(Tensor::cat(&ts, 0)?),
                    None => None,
                })
            })
            .collect::<Result<_>>()?;
        let mut it = joined.into_iter();
        let mut next = || it.next().flatten();
        let residual = (0..n_res).map(|_| next().expect("joined")).collect();
        let mlp = mlp_layers
            .iter()
            .map(|&l| (l, next().expect("joined")))
            .collect();
        let attention = attn_layers
            .iter()
            .map(|&l| (l, next().expect("joined")))
            .collect();
        let final_hidden = next();
        let logits = next();
        Ok(Captures {
            residual,
            mlp,
            attention,
            final_hidden,
            logits,
        })
    }
}

/// A left-padded batch of token sequences: every row ends at the last column.
#[derive(Debug, Clone)]
pub struct Batch {
    /// [B, T] u32 token ids (padding uses the pad id, masked out).
    pub ids: Tensor,
    /// [B, T] u32 position of each token within its row (0 for padding).
    pub positions: Tensor,
    /// [B * Tk] 1 for real keys, 0 for padding; Tk = cached keys + T.
    pub key_mask: Vec<u8>,
    /// Real tokens per row.
    pub lengths: Vec<usize>,
}

impl Batch {
    /// Left-pads `seqs` to a common width.
    pub fn left_padded(seqs: &[Vec<u32>], pad_id: u32, device: &Device) -> Result<Self> {
        let width = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        if seqs.is_empty() || width == 0 {
            return Err(Error::Input(
                "a batch needs at least one non-empty sequence".into(),
            ));
        }
        if let Some(i) = seqs.iter().position(|s| s.is_empty()) {
            return Err(Error::Input(format!(
                "sequence {i} of the batch has no tokens"
            )));
        }
        let b = seqs.len();
        let mut ids = vec![pad_id; b * width];
        let mut pos = vec![0u32; b * width];
        let mut mask = vec![0u8; b * width];
        for (r, s) in seqs.iter().enumerate() {
            let pad = width - s.len();
            for (j, &id) in s.iter().enumerate() {
                ids[r * width + pad + j] = id;
                pos[r * width + pad + j] = j as u32;
                mask[r * width + pad + j] = 1;
            }
        }
        Ok(Batch {
            ids: Tensor::from_vec(ids, (b, width), device)?,
            positions: Tensor::from_vec(pos, (b, width), device)?,
            key_mask: mask,
            lengths: seqs.iter().map(|s| s.len()).collect(),
        })
    }

    pub fn rows(&self) -> usize {
        self.lengths.len()
    }

    /// Rows `a..b` as a batch of their own (same width).
    pub fn rows_range(&self, a: usize, b: usize) -> Result<Batch> {
        let keys = self.key_mask.len() / self.rows();
        Ok(Batch {
            ids: self.ids.narrow(0, a, b - a)?,
            positions: self.positions.narrow(0, a, b - a)?,
            key_mask: self.key_mask[a * keys..b * keys].to_vec(),
            lengths: self.lengths[a..b].to_vec(),
        })
    }

    /// Columns (padded length) of the batch.
    pub fn width(&self) -> usize {
        self.ids.dims()[1]
    }

    /// Padding columns at the start of `row`.
    pub fn pad(&self, row: usize) -> usize {
        self.width() - self.lengths[row]
    }
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
    /// A single .gguf file (tensors dequantized to f32).
    Gguf,
}

/// A loaded model: config, tokenizer and an architecture body.
pub struct Model {
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub path: PathBuf,
    pub format: Format,
    body: Box<dyn Architecture>,
    device: Device,
}

impl Model {
    /// Loads a GGUF file, an HF checkpoint directory, or a hub id `org/name` (see `hub`).
    /// `tokenizer` overrides the tokenizer
    /// (a tokenizer.json), e.g. for GGUF files whose tokenizer type cannot be rebuilt.
    pub fn load(path: &Path, tokenizer: Option<&Path>) -> Result<Self> {
        if !path.exists() {
            let s = path.to_string_lossy();
            if hub::looks_like_hub_id(&s) {
                return Self::load(&hub::resolve(&s)?, tokenizer);
            }
            return Err(Error::model(path, "no such file or directory"));
        }
        if path.is_dir() {
            let cfg_path = path.join("config.json");
            let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
            let mut config = ModelConfig::from_hf_json(&cfg_path, &text)?;
            let tok_path = tokenizer
                .map(Path::to_path_buf)
                .unwrap_or_else(|| path.join("tokenizer.json"));
            let tok =
                Tokenizer::from_file(&tok_path, config.bos_token_id, config.eos_token_ids.clone())?;
            let mut w = Weights::from_hf_dir(path)?;
            let body = Self::body(&mut config, &mut w, true)?;
            Ok(Model {
                config,
                tokenizer: tok,
                path: path.to_path_buf(),
                format: Format::Hf,
                body,
                device: Device::Cpu,
            })
        } else {
            let ck = gguf::load(path)?;
            let mut config = ck.config;
            let mut w = ck.weights;
            config.tie_word_embeddings = !w.contains("lm_head.weight");
            let tok = match tokenizer {
                Some(t) => {
                    Tokenizer::from_file(t, config.bos_token_id, config.eos_token_ids.clone())?
                }
                None => Tokenizer::from_gguf(path, &ck.metadata)?,
            };
            let body = Self::body(&mut config, &mut w, false)?;
            Ok(Model {
                config,
                tokenizer: tok,
                path: path.to_path_buf(),
                format: Format::Gguf,
                body,
                device: Device::Cpu,
            })
        }
    }

    fn body(config: &mut ModelConfig, w: &mut Weights, hf: bool) -> Result<Box<dyn Architecture>> {
        Ok(match config.arch {
            Arch::Gpt2 => Box::new(gpt2::Gpt2::from_weights(config, w, hf)?),
            Arch::Llama => Box::new(llama::Llama::from_weights(config, w)?),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The id used for padding: the tokenizer's EOS, else 0 (padding is always masked).
    pub fn pad_id(&self) -> u32 {
        self.config.eos_token_ids.first().copied().unwrap_or(0)
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

    /// Token embeddings [B, T, d] of `ids` [B, T] (no position embeddings).
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let e = self
            .body
            .embed_tokens()
            .index_select(&ids.flatten_all()?, 0)?;
        Ok(e.reshape((b, t, self.config.hidden_size))?)
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
        mut cache: Option<&mut Vec<LayerCache>>,
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
            window: self.config.sliding_window,
        };
        // The additive mask is only needed for differentiable attention probabilities.
        let bias = match mode {
            Mode::Differentiable if capture.attention != Layers::None => {
                Some(ops::attention_bias(&mask, b, &self.device)?)
            }
            _ => None,
        };
        let (mut x, rope) = self.body.input(embeds, &batch.positions)?;
        let mut out = Captures::default();
        if capture.residual {
            out.residual.push(x.clone());
        }
        for l in 0..self.config.n_layers {
            let ctx = LayerCtx {
                mask: &mask,
                bias: bias.as_ref(),
                rope: rope.as_ref(),
                mode,
                want_mlp: capture.mlp.contains(l),
                want_attn: capture.attention.contains(l),
            };
            let layer_cache = cache.as_deref_mut().map(|c| &mut c[l]);
            let o = self.body.layer(l, &x, &ctx, layer_cache)?;
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
        ops::linear_t(h, self.body.lm_head(), mode)
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
