//! Model hyper-parameters: one `ModelConfig` for every supported architecture, parsed from an
//! HF `config.json` or from GGUF metadata, with errors that name the missing or bad field.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::rope::RopeScaling;
use crate::error::{Error, Result};

/// The architecture families tokenlens implements: each has a file that maps its config and
/// weight names onto the shared block description (`block.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// GPT-2 / distilgpt2: learned positions, LayerNorm, fused QKV, GELU MLP (`gpt2.rs`).
    Gpt2,
    /// Llama family (Llama, Mistral, Qwen2, Qwen3, OLMo-2, SmolLM): RMSNorm, RoPE, GQA, SwiGLU
    /// (`llama.rs`).
    Llama,
    /// Gemma, Gemma 2, Gemma 3 (text): scaled embeddings, (1 + w) RMSNorm, GeGLU (`gemma.rs`).
    Gemma,
    /// GPT-NeoX / Pythia: LayerNorm, partial rotary, parallel residual (`neox.rs`).
    GptNeox,
    /// Phi-3: the Llama block with fused q|k|v and gate|up projections (`phi3.rs`).
    Phi3,
    /// BERT-family encoders (BERT, MiniLM): bidirectional attention, learned positions,
    /// post-LayerNorm blocks, optional masked-LM head (`bert.rs`).
    Bert,
}

/// The MLP nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// The tanh approximation of GELU (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// Exact GELU (erf).
    Gelu,
    /// SiLU, used inside SwiGLU.
    Silu,
}

/// Norms on the attention's queries and keys (after the projection, before RoPE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum QkNorm {
    #[default]
    None,
    /// RMSNorm over each head (Qwen3, Gemma 3).
    PerHead,
    /// RMSNorm over the whole q (and k) projection (OLMo-2).
    Whole,
}

/// Where a block's norms sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NormPlacement {
    /// On each sublayer's input (GPT-2, Llama).
    #[default]
    Pre,
    /// On each sublayer's output, before the residual sum (OLMo-2).
    Post,
    /// Both (Gemma 2, Gemma 3).
    Sandwich,
}

/// The model types (HF `model_type` / GGUF `general.architecture`) tokenlens accepts.
pub const SUPPORTED_MODEL_TYPES: &str =
    "gpt2, llama, mistral, qwen2, qwen3, olmo2, gemma, gemma2, gemma3_text, gpt_neox, phi3, bert";

/// Hyper-parameters of a checkpoint, independent of the file format it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    pub arch: Arch,
    /// The checkpoint's own name for its architecture (e.g. "llama", "qwen2", "gpt2").
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    /// Longest sequence (prompt + generated tokens) the model accepts.
    pub max_position_embeddings: usize,
    pub norm_eps: f64,
    /// RoPE base frequency (0 without RoPE).
    pub rope_theta: f64,
    /// RoPE's long-context scaling.
    pub rope_scaling: RopeScaling,
    /// Values of each head RoPE rotates: head_dim unless the rotary is partial (GPT-NeoX, Phi).
    pub rotary_dim: usize,
    /// RoPE base of the sliding-window layers, when it differs (Gemma 3's local base; their
    /// RoPE is never scaled).
    pub rope_local_theta: Option<f64>,
    /// Bias on the q, k and v projections (Qwen2, GPT-NeoX; Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub o_bias: bool,
    /// Bias on the MLP projections.
    pub mlp_bias: bool,
    pub tie_word_embeddings: bool,
    /// The sliding attention window of the layers that have one.
    pub sliding_window: Option<usize>,
    /// Per layer: whether it attends within `sliding_window` only.
    pub sliding_layers: Vec<bool>,
    pub activation: Activation,
    pub qk_norm: QkNorm,
    pub norm_placement: NormPlacement,
    /// GPT-NeoX's parallel residual: x + attn(ln1(x)) + mlp(ln2(x)).
    pub parallel_residual: bool,
    /// Attention scores are `attn_scale * q . k`; 1 / sqrt(head_dim) when `None`.
    pub attn_scale: Option<f64>,
    /// Gemma 2's soft-caps of attention scores and of the final logits.
    pub attn_softcap: Option<f64>,
    pub final_softcap: Option<f64>,
    /// Token-type (segment) embeddings of an encoder; type 0 is added to every token.
    pub type_vocab_size: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl ModelConfig {
    /// A config with every optional feature off, for the parsers to fill in.
    pub fn base(arch: Arch, model_type: &str) -> Self {
        ModelConfig {
            arch,
            model_type: model_type.to_string(),
            vocab_size: 0,
            hidden_size: 0,
            n_layers: 0,
            n_heads: 0,
            n_kv_heads: 0,
            head_dim: 0,
            intermediate_size: 0,
            max_position_embeddings: 0,
            norm_eps: 1e-5,
            rope_theta: 0.0,
            rope_scaling: RopeScaling::Default,
            rotary_dim: 0,
            rope_local_theta: None,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            tie_word_embeddings: false,
            sliding_window: None,
            sliding_layers: vec![],
            activation: Activation::Silu,
            qk_norm: QkNorm::None,
            norm_placement: NormPlacement::Pre,
            parallel_residual: false,
            attn_scale: None,
            attn_softcap: None,
            final_softcap: None,
            type_vocab_size: 0,
            bos_token_id: None,
            eos_token_ids: vec![],
        }
    }

    /// Whether the model rotates q and k (every family but GPT-2 and BERT).
    pub fn has_rope(&self) -> bool {
        !matches!(self.arch, Arch::Gpt2 | Arch::Bert)
    }

    /// An encoder: bidirectional attention, no generation.
    pub fn is_encoder(&self) -> bool {
        self.arch == Arch::Bert
    }

    /// The attention window of layer `l`, if it has one.
    pub fn window(&self, l: usize) -> Option<usize> {
        match self.sliding_layers.get(l) {
            Some(true) => self.sliding_window,
            _ => None,
        }
    }

    /// The block shape each family has whatever file it comes from (HF or GGUF): q/k norms and
    /// where the norms sit, from `model_type`.
    pub fn set_block_traits(&mut self) {
        match self.model_type.as_str() {
            "qwen3" => self.qk_norm = QkNorm::PerHead,
            "olmo2" => {
                self.qk_norm = QkNorm::Whole;
                self.norm_placement = NormPlacement::Post;
            }
            "gemma2" => self.norm_placement = NormPlacement::Sandwich,
            "gemma3_text" => {
                self.norm_placement = NormPlacement::Sandwich;
                self.qk_norm = QkNorm::PerHead;
            }
            _ => {}
        }
    }

    /// Checks the invariants every architecture relies on.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |msg: String| Err(Error::model(path, msg));
        if self.n_layers == 0 || self.hidden_size == 0 || self.vocab_size == 0 {
            return bad(format!(
                "config has zero layers, width or vocabulary (layers {}, hidden {}, vocab {})",
                self.n_layers, self.hidden_size, self.vocab_size
            ));
        }
        if self.n_heads == 0
            || self.n_kv_heads == 0
            || !self.n_heads.is_multiple_of(self.n_kv_heads)
        {
            return bad(format!(
                "{} attention heads cannot be grouped over {} key/value heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        if matches!(self.arch, Arch::Gpt2 | Arch::GptNeox | Arch::Bert)
            && self.hidden_size != self.n_heads * self.head_dim
        {
            return bad(format!(
                "hidden size {} is not heads ({}) x head dim ({})",
                self.hidden_size, self.n_heads, self.head_dim
            ));
        }
        if self.has_rope()
            && (!self.rotary_dim.is_multiple_of(2)
                || self.rotary_dim == 0
                || self.rotary_dim > self.head_dim)
        {
            return bad(format!(
                "RoPE needs an even rotary dim between 2 and the head dim ({}), got {}",
                self.head_dim, self.rotary_dim
            ));
        }
        if self.sliding_layers.len() != self.n_layers {
            return bad(format!(
                "{} layer types for {} layers",
                self.sliding_layers.len(),
                self.n_layers
            ));
        }
        if self.sliding_layers.iter().any(|&s| s) && self.sliding_window.is_none_or(|w| w == 0) {
            return bad("sliding-window layers without a positive `sliding_window`".into());
        }
        Ok(())
    }

    /// Parses an HF `config.json`.
    pub fn from_hf_json(path: &Path, text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::model(path, format!("invalid JSON: {e}")))?;
        let f = Fields { path, v: &v };
        let model_type = f.str("model_type")?;
        let arch = match model_type.as_str() {
            "gpt2" => Arch::Gpt2,
            "llama" | "mistral" | "qwen2" | "qwen3" | "olmo2" => Arch::Llama,
            "gemma" | "gemma2" | "gemma3_text" => Arch::Gemma,
            "gpt_neox" => Arch::GptNeox,
            "phi3" => Arch::Phi3,
            "bert" => Arch::Bert,
            other => {
                return Err(Error::model(
                    path,
                    format!(
                        "unsupported architecture `{other}` (model_type); supported: {SUPPORTED_MODEL_TYPES}"
                    ),
                ));
            }
        };
        let mut c = ModelConfig::base(arch, &model_type);
        c.eos_token_ids = match v.get("eos_token_id") {
            Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_u64())
                .map(|x| x as u32)
                .collect(),
            _ => vec![],
        };
        c.bos_token_id = f.opt_usize("bos_token_id")?.map(|x| x as u32);
        match arch {
            Arch::Gpt2 => gpt2_config(&f, &mut c)?,
            Arch::Bert => bert_config(&f, &mut c)?,
            _ => decoder_config(&f, &mut c)?,
        }
        c.validate(path)?;
        Ok(c)
    }
}

/// GPT-2's own field names.
fn gpt2_config(f: &Fields, c: &mut ModelConfig) -> Result<()> {
    for flag in ["scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"] {
        if f.opt_bool(flag)?.unwrap_or(false) {
            return Err(Error::model(
                f.path,
                format!("GPT-2 option `{flag}: true` is not supported"),
            ));
        }
    }
    let hidden = f.usize("n_embd")?;
    let heads = f.usize("n_head")?;
    c.activation = match f.opt_str("activation_function")?.as_deref() {
        None | Some("gelu_new") | Some("gelu_pytorch_tanh") => Activation::GeluTanh,
        Some("gelu") => Activation::Gelu,
        Some(other) => {
            return Err(Error::model(
                f.path,
                format!("activation_function `{other}` is not supported (gelu_new, gelu)"),
            ));
        }
    };
    c.vocab_size = f.usize("vocab_size")?;
    c.hidden_size = hidden;
    c.n_layers = f.usize("n_layer")?;
    c.n_heads = heads;
    c.n_kv_heads = heads;
    c.head_dim = hidden / heads.max(1);
    c.intermediate_size = f.opt_usize("n_inner")?.unwrap_or(4 * hidden);
    c.max_position_embeddings = f.usize("n_positions")?;
    c.norm_eps = f.opt_f64("layer_norm_epsilon")?.unwrap_or(1e-5);
    c.qkv_bias = true;
    c.o_bias = true;
    c.mlp_bias = true;
    c.tie_word_embeddings = f.opt_bool("tie_word_embeddings")?.unwrap_or(true);
    c.sliding_layers = vec![false; c.n_layers];
    Ok(())
}

/// BERT's field names.
fn bert_config(f: &Fields, c: &mut ModelConfig) -> Result<()> {
    if let Some(kind) = f.opt_str("position_embedding_type")?
        && kind != "absolute"
    {
        return Err(f.err(
            "position_embedding_type",
            &format!("`{kind}` is not supported (absolute)"),
        ));
    }
    if f.opt_bool("is_decoder")?.unwrap_or(false) {
        return Err(f.err(
            "is_decoder",
            "a BERT decoder is not supported (encoders only)",
        ));
    }
    let hidden = f.usize("hidden_size")?;
    let heads = f.usize("num_attention_heads")?;
    c.activation = match f.opt_str("hidden_act")?.as_deref() {
        None | Some("gelu") => Activation::Gelu,
        Some("gelu_new" | "gelu_pytorch_tanh") => Activation::GeluTanh,
        Some(other) => {
            return Err(f.err(
                "hidden_act",
                &format!("`{other}` is not supported for bert (gelu, gelu_new)"),
            ));
        }
    };
    c.vocab_size = f.usize("vocab_size")?;
    c.hidden_size = hidden;
    c.n_layers = f.usize("num_hidden_layers")?;
    c.n_heads = heads;
    c.n_kv_heads = heads;
    c.head_dim = hidden / heads.max(1);
    c.intermediate_size = f.usize("intermediate_size")?;
    c.max_position_embeddings = f.usize("max_position_embeddings")?;
    c.norm_eps = f.opt_f64("layer_norm_eps")?.unwrap_or(1e-12);
    c.type_vocab_size = f.opt_usize("type_vocab_size")?.unwrap_or(2).max(1);
    c.qkv_bias = true;
    c.o_bias = true;
    c.mlp_bias = true;
    c.tie_word_embeddings = f.opt_bool("tie_word_embeddings")?.unwrap_or(true);
    c.sliding_layers = vec![false; c.n_layers];
    Ok(())
}

/// The RoPE decoders (every family but GPT-2), which share HF's field names.
fn decoder_config(f: &Fields, c: &mut ModelConfig) -> Result<()> {
    let (path, v) = (f.path, f.v);
    let mt = c.model_type.clone();
    let hidden = f.usize("hidden_size")?;
    let heads = f.usize("num_attention_heads")?;
    c.vocab_size = f.usize("vocab_size")?;
    c.hidden_size = hidden;
    c.n_layers = f.usize("num_hidden_layers")?;
    c.n_heads = heads;
    c.n_kv_heads = f.opt_usize("num_key_value_heads")?.unwrap_or(heads);
    c.head_dim = match c.arch {
        Arch::GptNeox => hidden / heads.max(1),
        _ => f.opt_usize("head_dim")?.unwrap_or(hidden / heads.max(1)),
    };
    c.intermediate_size = f.usize("intermediate_size")?;
    c.max_position_embeddings = f.usize("max_position_embeddings")?;
    c.norm_eps = match c.arch {
        Arch::GptNeox => f.opt_f64("layer_norm_eps")?.unwrap_or(1e-5),
        _ => f.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
    };
    // The activation: its key and accepted values per family.
    let (act_key, default_act) = match c.arch {
        Arch::Gemma if mt != "gemma" => ("hidden_activation", "gelu_pytorch_tanh"),
        Arch::Gemma => ("hidden_act", "gelu_pytorch_tanh"),
        Arch::GptNeox => ("hidden_act", "gelu"),
        _ => ("hidden_act", "silu"),
    };
    let act = f.opt_str(act_key)?.unwrap_or_else(|| default_act.into());
    c.activation = match (c.arch, act.as_str()) {
        (Arch::Llama | Arch::Phi3, "silu") => Activation::Silu,
        // transformers reads Gemma's legacy `gelu` as the tanh approximation.
        (Arch::Gemma, "gelu_pytorch_tanh" | "gelu" | "gelu_new") => Activation::GeluTanh,
        (Arch::GptNeox, "gelu") => Activation::Gelu,
        (Arch::GptNeox, "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast") => Activation::GeluTanh,
        (_, other) => {
            return Err(Error::model(
                path,
                format!("{act_key} `{other}` is not supported for {mt} (supported: {default_act})"),
            ));
        }
    };
    // RoPE: transformers >= 5 writes `rope_parameters` (Gemma 3: one per layer type); older
    // versions `rope_theta` + `rope_scaling`, GPT-NeoX `rotary_emb_base` + `rotary_pct`.
    let rope = v.get("rope_parameters").filter(|x| !x.is_null());
    let per_type = rope.is_some_and(|r| r.get("full_attention").is_some());
    let global = if per_type {
        rope.and_then(|r| r.get("full_attention"))
    } else {
        rope
    };
    let theta_of = |p: Option<&Value>| p.and_then(|r| r.get("rope_theta")).and_then(|x| x.as_f64());
    let default_theta = match mt.as_str() {
        "gemma3_text" => 1_000_000.0,
        _ => 10_000.0,
    };
    c.rope_theta = match theta_of(global) {
        Some(t) => t,
        None => match f.opt_f64("rope_theta")? {
            Some(t) => t,
            None => f.opt_f64("rotary_emb_base")?.unwrap_or(default_theta),
        },
    };
    c.rope_scaling = RopeScaling::from_hf_params(path, v, global, c.max_position_embeddings)?;
    let partial = match global
        .and_then(|r| r.get("partial_rotary_factor"))
        .and_then(|x| x.as_f64())
    {
        Some(p) => p,
        None => match f.opt_f64("partial_rotary_factor")? {
            Some(p) => p,
            None if c.arch == Arch::GptNeox => f.opt_f64("rotary_pct")?.unwrap_or(0.25),
            None => 1.0,
        },
    };
    c.rotary_dim = (c.head_dim as f64 * partial) as usize;
    if let RopeScaling::LongRope {
        short_factor,
        original_max_position_embeddings: original,
        ..
    } = &c.rope_scaling
    {
        if short_factor.len() != c.rotary_dim / 2 {
            return Err(Error::model(
                path,
                format!(
                    "field `rope_scaling.short_factor`: {} factors for a rotary dim of {} (needs \
                     {})",
                    short_factor.len(),
                    c.rotary_dim,
                    c.rotary_dim / 2
                ),
            ));
        }
        // Within the original context transformers uses the short factors: that is the
        // context tokenlens runs (see `RopeScaling::LongRope`).
        c.max_position_embeddings = c.max_position_embeddings.min(*original);
    }
    if mt == "gemma3_text" {
        let local = if per_type {
            rope.and_then(|r| r.get("sliding_attention"))
        } else {
            None
        };
        if let Some(l) = local
            && l.get("rope_type")
                .and_then(|x| x.as_str())
                .unwrap_or("default")
                != "default"
        {
            return Err(Error::model(
                path,
                "field `rope_parameters.sliding_attention.rope_type`: only `default` is supported \
                 for the sliding-window layers",
            ));
        }
        c.rope_local_theta = Some(match theta_of(local) {
            Some(t) => t,
            None => f.opt_f64("rope_local_base_freq")?.unwrap_or(10_000.0),
        });
    }
    // Biases.
    let attention_bias = f.opt_bool("attention_bias")?;
    match c.arch {
        Arch::GptNeox => {
            c.qkv_bias = attention_bias.unwrap_or(true);
            c.o_bias = c.qkv_bias;
            c.mlp_bias = true;
        }
        _ => {
            c.qkv_bias = mt == "qwen2" || attention_bias.unwrap_or(false);
            c.o_bias = mt != "qwen2" && attention_bias.unwrap_or(false);
            c.mlp_bias = f.opt_bool("mlp_bias")?.unwrap_or(false);
        }
    }
    c.tie_word_embeddings = f
        .opt_bool("tie_word_embeddings")?
        .unwrap_or(c.arch == Arch::Gemma);
    // Sliding windows: which layers, and how wide.
    let window = match mt.as_str() {
        "qwen2" | "qwen3" if !f.opt_bool("use_sliding_window")?.unwrap_or(false) => None,
        "olmo2" | "gemma" | "gpt_neox" | "llama" => None,
        _ => f.opt_usize("sliding_window")?,
    };
    c.sliding_window = window;
    let n = c.n_layers;
    c.sliding_layers = match (v.get("layer_types").filter(|x| !x.is_null()), window) {
        (_, None) => vec![false; n],
        (Some(types), Some(_)) => {
            let arr = types
                .as_array()
                .ok_or_else(|| f.err("layer_types", "expected a list"))?;
            if arr.len() != n {
                return Err(f.err(
                    "layer_types",
                    &format!("{} entries for {n} layers", arr.len()),
                ));
            }
            arr.iter()
                .map(|t| match t.as_str() {
                    Some("sliding_attention") => Ok(true),
                    Some("full_attention") => Ok(false),
                    _ => Err(f.err(
                        "layer_types",
                        &format!("`{t}` is not supported (sliding_attention, full_attention)"),
                    )),
                })
                .collect::<Result<_>>()?
        }
        (None, Some(_)) => match mt.as_str() {
            "qwen2" | "qwen3" => {
                let first = f.opt_usize("max_window_layers")?.unwrap_or(28);
                (0..n).map(|i| i >= first).collect()
            }
            "gemma2" => (0..n).map(|i| (i + 1) % 2 != 0).collect(),
            "gemma3_text" => {
                let pattern = f.opt_usize("sliding_window_pattern")?.unwrap_or(6).max(1);
                (0..n).map(|i| (i + 1) % pattern != 0).collect()
            }
            _ => vec![true; n],
        },
    };
    c.set_block_traits();
    // What the config file says beyond the family's block shape.
    match mt.as_str() {
        "gemma2" | "gemma3_text" => {
            c.attn_scale = Some(1.0 / f.opt_f64("query_pre_attn_scalar")?.unwrap_or(256.0).sqrt());
            c.attn_softcap = f.opt_f64("attn_logit_softcapping")?;
            c.final_softcap = f.opt_f64("final_logit_softcapping")?;
        }
        "gpt_neox" => c.parallel_residual = f.opt_bool("use_parallel_residual")?.unwrap_or(true),
        _ => {}
    }
    Ok(())
}

/// Typed access to JSON fields, with errors naming the file and the field.
struct Fields<'a> {
    path: &'a Path,
    v: &'a Value,
}

impl Fields<'_> {
    fn err(&self, key: &str, what: &str) -> Error {
        Error::model(self.path, format!("field `{key}`: {what}"))
    }
    fn get(&self, key: &str) -> Option<&Value> {
        self.v.get(key).filter(|x| !x.is_null())
    }
    fn str(&self, key: &str) -> Result<String> {
        self.opt_str(key)?.ok_or_else(|| self.err(key, "missing"))
    }
    fn opt_str(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.err(key, "expected a string")),
        }
    }
    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.err(key, "missing"))
    }
    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(x) => x
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.err(key, "expected a non-negative integer")),
        }
    }
    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(x) => x
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(key, "expected a number")),
        }
    }
    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(x) => x
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(key, "expected true or false")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_config_defaults_and_rope_parameters() {
        let text = r#"{"model_type":"llama","hidden_size":64,"num_attention_heads":4,
            "num_key_value_heads":2,"num_hidden_layers":3,"intermediate_size":128,"vocab_size":512,
            "max_position_embeddings":128,"rms_norm_eps":1e-5,
            "rope_parameters":{"rope_theta":500.0,"rope_type":"default"},"eos_token_id":[2,3]}"#;
        let c = ModelConfig::from_hf_json(Path::new("c.json"), text).unwrap();
        assert_eq!(c.arch, Arch::Llama);
        assert_eq!(c.head_dim, 16);
        assert_eq!(c.rope_theta, 500.0);
        assert_eq!(c.eos_token_ids, vec![2, 3]);
        assert!(!c.qkv_bias && !c.tie_word_embeddings);
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let e = ModelConfig::from_hf_json(
            Path::new("x/config.json"),
            r#"{"model_type":"gpt2","n_embd":8}"#,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "x/config.json: field `n_head`: missing");
        let e = ModelConfig::from_hf_json(Path::new("c.json"), r#"{"model_type":"t5"}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "c.json: unsupported architecture `t5` (model_type); supported: \
                 {SUPPORTED_MODEL_TYPES}"
            )
        );
        assert!(SUPPORTED_MODEL_TYPES.contains("gemma3_text, gpt_neox, phi3, bert"));
        let bert = r#"{"model_type":"bert","hidden_size":8,"num_attention_heads":2,"num_hidden_layers":1,
            "intermediate_size":8,"vocab_size":8,"max_position_embeddings":8,
            "position_embedding_type":"relative_key"}"#;
        let e = ModelConfig::from_hf_json(Path::new("c.json"), bert)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "c.json: field `position_embedding_type`: `relative_key` is not supported (absolute)"
        );
        let e = ModelConfig::from_hf_json(Path::new("c.json"), "{not json")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.json: invalid JSON"), "{e}");
        let text = r#"{"model_type":"llama","hidden_size":64,"num_attention_heads":4,"num_hidden_layers":1,
            "intermediate_size":8,"vocab_size":8,"max_position_embeddings":8,"rope_scaling":{"rope_type":"proportional"}}"#;
        let e = ModelConfig::from_hf_json(Path::new("c.json"), text)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rope scaling `proportional` is not supported"),
            "{e}"
        );
    }
}
