//! Model hyper-parameters: one `ModelConfig` for every supported architecture, parsed from an
//! HF `config.json` or from GGUF metadata, with errors that name the missing or bad field.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::rope::RopeScaling;
use crate::error::{Error, Result};

/// The architecture families tokenlens implements (see `gpt2.rs` and `llama.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// GPT-2 / distilgpt2: learned positions, LayerNorm, fused QKV, GELU MLP.
    Gpt2,
    /// Llama family (Llama, Mistral, Qwen2, SmolLM): RMSNorm, RoPE, GQA, SwiGLU.
    Llama,
}

/// The MLP nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// GPT-2's tanh approximation of GELU (`gelu_new`).
    GeluTanh,
    /// Exact GELU (erf).
    Gelu,
    /// SiLU, used inside SwiGLU.
    Silu,
}

/// The model types (HF `model_type` / GGUF `general.architecture`) tokenlens accepts.
pub const SUPPORTED_MODEL_TYPES: &str = "gpt2, llama, mistral, qwen2";

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
    /// RoPE base frequency (Llama family only).
    pub rope_theta: f64,
    /// RoPE's long-context scaling (Llama family only).
    pub rope_scaling: RopeScaling,
    /// Bias on the q, k and v projections (Qwen2; Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the attention output projection (Llama with `attention_bias`).
    pub o_bias: bool,
    /// Bias on the MLP projections (Llama with `mlp_bias`).
    pub mlp_bias: bool,
    pub tie_word_embeddings: bool,
    /// Mistral's sliding attention window, if any.
    pub sliding_window: Option<usize>,
    pub activation: Activation,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl ModelConfig {
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
        if self.arch == Arch::Gpt2 && self.hidden_size != self.n_heads * self.head_dim {
            return bad(format!(
                "hidden size {} is not heads ({}) x head dim ({})",
                self.hidden_size, self.n_heads, self.head_dim
            ));
        }
        if self.arch == Arch::Llama && !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "RoPE needs an even head dim, got {}",
                self.head_dim
            ));
        }
        Ok(())
    }

    /// Parses an HF `config.json`.
    pub fn from_hf_json(path: &Path, text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::model(path, format!("invalid JSON: {e}")))?;
        let f = Fields { path, v: &v };
        let model_type = f.str("model_type")?;
        let eos_token_ids = match v.get("eos_token_id") {
            Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_u64())
                .map(|x| x as u32)
                .collect(),
            _ => vec![],
        };
        let bos_token_id = f.opt_usize("bos_token_id")?.map(|x| x as u32);
        let cfg = match model_type.as_str() {
            "gpt2" => {
                for flag in ["scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"] {
                    if f.opt_bool(flag)?.unwrap_or(false) {
                        return Err(Error::model(
                            path,
                            format!("GPT-2 option `{flag}: true` is not supported"),
                        ));
                    }
                }
                let hidden = f.usize("n_embd")?;
                let heads = f.usize("n_head")?;
                let activation = match f.opt_str("activation_function")?.as_deref() {
                    None | Some("gelu_new") | Some("gelu_pytorch_tanh") => Activation::GeluTanh,
                    Some("gelu") => Activation::Gelu,
                    Some(other) => {
                        return Err(Error::model(
                            path,
                            format!(
                                "activation_function `{other}` is not supported (gelu_new, gelu)"
                            ),
                        ));
                    }
                };
                ModelConfig {
                    arch: Arch::Gpt2,
                    model_type,
                    vocab_size: f.usize("vocab_size")?,
                    hidden_size: hidden,
                    n_layers: f.usize("n_layer")?,
                    n_heads: heads,
                    n_kv_heads: heads,
                    head_dim: hidden / heads.max(1),
                    intermediate_size: f.opt_usize("n_inner")?.unwrap_or(4 * hidden),
                    max_position_embeddings: f.usize("n_positions")?,
                    norm_eps: f.opt_f64("layer_norm_epsilon")?.unwrap_or(1e-5),
                    rope_theta: 0.0,
                    rope_scaling: RopeScaling::Default,
                    qkv_bias: true,
                    o_bias: true,
                    mlp_bias: true,
                    tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(true),
                    sliding_window: None,
                    activation,
                    bos_token_id,
                    eos_token_ids,
                }
            }
            "llama" | "mistral" | "qwen2" => {
                let hidden = f.usize("hidden_size")?;
                let heads = f.usize("num_attention_heads")?;
                match f.opt_str("hidden_act")?.as_deref() {
                    None | Some("silu") => {}
                    Some(other) => {
                        return Err(Error::model(
                            path,
                            format!("hidden_act `{other}` is not supported (silu)"),
                        ));
                    }
                }
                // transformers >= 5 writes `rope_parameters`; older versions `rope_theta` + `rope_scaling`.
                let rope = v.get("rope_parameters").filter(|x| !x.is_null());
                let max_position_embeddings = f.usize("max_position_embeddings")?;
                let rope_scaling = RopeScaling::from_hf(path, &v, max_position_embeddings)?;
                let rope_theta = match rope
                    .and_then(|r| r.get("rope_theta"))
                    .and_then(|x| x.as_f64())
                {
                    Some(t) => t,
                    None => f.opt_f64("rope_theta")?.unwrap_or(10_000.0),
                };
                let is_qwen = model_type == "qwen2";
                if is_qwen && f.opt_bool("use_sliding_window")?.unwrap_or(false) {
                    return Err(Error::model(
                        path,
                        "Qwen2 `use_sliding_window: true` is not supported",
                    ));
                }
                let attention_bias = f.opt_bool("attention_bias")?.unwrap_or(false);
                ModelConfig {
                    arch: Arch::Llama,
                    vocab_size: f.usize("vocab_size")?,
                    hidden_size: hidden,
                    n_layers: f.usize("num_hidden_layers")?,
                    n_heads: heads,
                    n_kv_heads: f.opt_usize("num_key_value_heads")?.unwrap_or(heads),
                    head_dim: f.opt_usize("head_dim")?.unwrap_or(hidden / heads.max(1)),
                    intermediate_size: f.usize("intermediate_size")?,
                    max_position_embeddings,
                    norm_eps: f.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
                    rope_theta,
                    rope_scaling,
                    qkv_bias: is_qwen || attention_bias,
                    o_bias: !is_qwen && attention_bias,
                    mlp_bias: f.opt_bool("mlp_bias")?.unwrap_or(false),
                    tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
                    sliding_window: if model_type == "mistral" {
                        f.opt_usize("sliding_window")?
                    } else {
                        None
                    },
                    activation: Activation::Silu,
                    bos_token_id,
                    eos_token_ids,
                    model_type,
                }
            }
            other => {
                return Err(Error::model(
                    path,
                    format!(
                        "unsupported architecture `{other}` (model_type); supported: {SUPPORTED_MODEL_TYPES}"
                    ),
                ));
            }
        };
        cfg.validate(path)?;
        Ok(cfg)
    }
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
        let e = ModelConfig::from_hf_json(Path::new("c.json"), r#"{"model_type":"bert"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unsupported architecture `bert`") && e.contains("gpt2, llama"),
            "{e}"
        );
        let e = ModelConfig::from_hf_json(Path::new("c.json"), "{not json")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.json: invalid JSON"), "{e}");
        let text = r#"{"model_type":"llama","hidden_size":64,"num_attention_heads":4,"num_hidden_layers":1,
            "intermediate_size":8,"vocab_size":8,"max_position_embeddings":8,"rope_scaling":{"rope_type":"longrope"}}"#;
        let e = ModelConfig::from_hf_json(Path::new("c.json"), text)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rope scaling `longrope` is not supported"),
            "{e}"
        );
    }
}
