//! GGUF checkpoints: the config from `general.architecture` metadata, every tensor dequantized to
//! f32 and renamed to its HF name, llama.cpp's interleaved-RoPE Q/K layout undone.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};

use super::config::{Activation, Arch, ModelConfig, SUPPORTED_MODEL_TYPES};
use super::rope::{RopeScaling, SUPPORTED_ROPE_TYPES};
use super::weights::Weights;
use crate::error::{Error, Result};

/// A GGUF file read: its config, tensors (HF names, f32) and raw metadata.
pub struct GgufCheckpoint {
    pub config: ModelConfig,
    pub weights: Weights,
    pub metadata: HashMap<String, Value>,
}

/// The tensor of per-frequency RoPE divisors (Llama 3.x's `llama3` scaling).
const ROPE_FREQS: &str = "rope_freqs.weight";

/// Reads and dequantizes a whole GGUF file.
pub fn load(path: &Path) -> Result<GgufCheckpoint> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader)
        .map_err(|e| Error::model(path, format!("not a readable GGUF file: {e}")))?;
    let mut config = config_from_metadata(path, &content.metadata)?;
    let mut tensors = HashMap::new();
    // Llama 3.x GGUFs carry their `llama3` RoPE scaling as per-frequency divisors.
    if content.tensor_infos.contains_key(ROPE_FREQS) {
        let factors = content
            .tensor(&mut reader, ROPE_FREQS, &Device::Cpu)
            .and_then(|q| q.dequantize(&Device::Cpu))
            .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
            .map_err(|e| Error::model(path, format!("tensor `{ROPE_FREQS}`: {e}")))?;
        if factors.len() != config.head_dim / 2 || factors.iter().any(|f| f.is_nan() || *f <= 0.0) {
            return Err(Error::model(
                path,
                format!(
                    "tensor `{ROPE_FREQS}` must hold {} positive factors (head_dim / 2), got {} \
                     values",
                    config.head_dim / 2,
                    factors.len()
                ),
            ));
        }
        config.rope_scaling = RopeScaling::Factors { factors };
    }
    for name in content.tensor_infos.keys() {
        let Some(hf_name) = hf_name(config.arch, name) else {
            continue; // a tensor no supported architecture reads
        };
        let q = content
            .tensor(&mut reader, name, &Device::Cpu)
            .map_err(|e| Error::model(path, format!("tensor `{name}`: {e}")))?;
        let mut t = q.dequantize(&Device::Cpu).map_err(|e| {
            Error::model(path, format!("tensor `{name}` cannot be dequantized: {e}"))
        })?;
        // llama.cpp permutes Q and K rows so that RoPE rotates interleaved pairs; we use the HF
        // (rotate-half) layout, so undo it. Other architectures (qwen2) are stored unpermuted.
        if config.model_type == "llama" {
            if name.ends_with("attn_q.weight") || name.ends_with("attn_q.bias") {
                t = unpermute(&t, config.n_heads)?;
            } else if name.ends_with("attn_k.weight") || name.ends_with("attn_k.bias") {
                t = unpermute(&t, config.n_kv_heads)?;
            }
        }
        tensors.insert(hf_name, t);
    }
    Ok(GgufCheckpoint {
        config,
        weights: Weights::new(path, tensors),
        metadata: content.metadata,
    })
}

/// Inverse of llama.cpp's `permute(w, n_head)`: rows grouped (head, pair, half) -> (head, half, pair).
pub fn unpermute(t: &Tensor, n_head: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    let half = rows / n_head / 2;
    let mut shape = vec![n_head, half, 2];
    shape.extend_from_slice(&dims[1..]);
    Ok(t.reshape(shape)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?)
}

/// llama.cpp's `permute(w, n_head)` (HF layout -> GGUF layout), used to write test checkpoints.
pub fn permute(t: &Tensor, n_head: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let half = dims[0] / n_head / 2;
    let mut shape = vec![n_head, 2, half];
    shape.extend_from_slice(&dims[1..]);
    Ok(t.reshape(shape)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?)
}

/// The HF name of a GGUF tensor, or None for tensors we do not use.
pub fn hf_name(arch: Arch, gguf: &str) -> Option<String> {
    let (prefix, rest) = match gguf.strip_prefix("blk.") {
        Some(r) => {
            let (layer, rest) = r.split_once('.')?;
            (Some(layer), rest)
        }
        None => (None, gguf),
    };
    let (stem, kind) = rest.rsplit_once('.')?;
    let mapped = match (arch, prefix, stem) {
        (Arch::Llama, None, "token_embd") => "model.embed_tokens".to_string(),
        (Arch::Llama, None, "output_norm") => "model.norm".to_string(),
        (Arch::Llama, None, "output") => "lm_head".to_string(),
        (Arch::Llama, Some(l), s) => {
            let m = match s {
                "attn_norm" => "input_layernorm",
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "ffn_norm" => "post_attention_layernorm",
                "ffn_gate" => "mlp.gate_proj",
                "ffn_up" => "mlp.up_proj",
                "ffn_down" => "mlp.down_proj",
                _ => return None,
            };
            format!("model.layers.{l}.{m}")
        }
        (Arch::Gpt2, None, "token_embd") => "transformer.wte".to_string(),
        (Arch::Gpt2, None, "position_embd") => "transformer.wpe".to_string(),
        (Arch::Gpt2, None, "output_norm") => "transformer.ln_f".to_string(),
        (Arch::Gpt2, None, "output") => "lm_head".to_string(),
        (Arch::Gpt2, Some(l), s) => {
            let m = match s {
                "attn_norm" => "ln_1",
                "attn_qkv" => "attn.c_attn",
                "attn_output" => "attn.c_proj",
                "ffn_norm" => "ln_2",
                "ffn_up" => "mlp.c_fc",
                "ffn_down" => "mlp.c_proj",
                _ => return None,
            };
            format!("transformer.h.{l}.{m}")
        }
        _ => return None,
    };
    Some(format!("{mapped}.{kind}"))
}

fn config_from_metadata(path: &Path, md: &HashMap<String, Value>) -> Result<ModelConfig> {
    let err = |msg: String| Error::model(path, msg);
    let arch_name = md
        .get("general.architecture")
        .and_then(|v| v.to_string().ok().cloned())
        .ok_or_else(|| err("metadata `general.architecture` is missing".into()))?;
    if !matches!(arch_name.as_str(), "llama" | "qwen2" | "mistral" | "gpt2") {
        return Err(err(format!(
            "unsupported architecture `{arch_name}` (general.architecture); supported: {SUPPORTED_MODEL_TYPES}"
        )));
    }
    let key = |k: &str| format!("{arch_name}.{k}");
    let usize_of = |k: &str| -> Result<usize> {
        let full = key(k);
        let v = md
            .get(&full)
            .ok_or_else(|| err(format!("metadata `{full}` is missing")))?;
        v.to_u64()
            .or_else(|_| v.to_u32().map(u64::from))
            .map(|x| x as usize)
            .map_err(|e| err(format!("metadata `{full}`: {e}")))
    };
    let opt_usize = |k: &str| {
        md.get(&key(k))
            .and_then(|v| v.to_u32().ok().map(|x| x as usize))
    };
    let opt_f64 = |k: &str| md.get(&key(k)).and_then(|v| v.to_f32().ok().map(f64::from));
    let n_tokens = md
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.to_vec().ok().map(|v| v.len()));
    let vocab_size = opt_usize("vocab_size")
        .or(n_tokens)
        .ok_or_else(|| err(format!("metadata `{}` is missing", key("vocab_size"))))?;
    let bos_token_id = md
        .get("tokenizer.ggml.bos_token_id")
        .and_then(|v| v.to_u32().ok());
    let eos_token_ids: Vec<u32> = md
        .get("tokenizer.ggml.eos_token_id")
        .and_then(|v| v.to_u32().ok())
        .into_iter()
        .collect();
    let hidden = usize_of("embedding_length")?;
    let heads = usize_of("attention.head_count")?;
    let cfg = match arch_name.as_str() {
        "llama" | "qwen2" | "mistral" => {
            let head_dim = opt_usize("rope.dimension_count").unwrap_or(hidden / heads.max(1));
            if md.contains_key(&key("rope.scaling.type")) {
                let kind = md[&key("rope.scaling.type")]
                    .to_string()
                    .cloned()
                    .unwrap_or_default();
                if kind != "none" {
                    return Err(err(format!(
                        "rope scaling `{kind}` is not supported in GGUF files yet (only plain \
                         RoPE; HF checkpoints support {SUPPORTED_ROPE_TYPES})"
                    )));
                }
            }
            let mut c = ModelConfig::base(Arch::Llama, &arch_name);
            c.vocab_size = vocab_size;
            c.hidden_size = hidden;
            c.n_layers = usize_of("block_count")?;
            c.n_heads = heads;
            c.n_kv_heads = opt_usize("attention.head_count_kv").unwrap_or(heads);
            c.head_dim = head_dim;
            c.rotary_dim = head_dim;
            c.intermediate_size = usize_of("feed_forward_length")?;
            c.max_position_embeddings = usize_of("context_length")?;
            c.norm_eps = opt_f64("attention.layer_norm_rms_epsilon").unwrap_or(1e-5);
            c.rope_theta = opt_f64("rope.freq_base").unwrap_or(10_000.0);
            c.qkv_bias = arch_name == "qwen2";
            // tie_word_embeddings is decided from the tensors present, see Model::load.
            c.sliding_layers = vec![false; c.n_layers];
            c.activation = Activation::Silu;
            c.bos_token_id = bos_token_id;
            c.eos_token_ids = eos_token_ids;
            c
        }
        "gpt2" => {
            let mut c = ModelConfig::base(Arch::Gpt2, &arch_name);
            c.vocab_size = vocab_size;
            c.hidden_size = hidden;
            c.n_layers = usize_of("block_count")?;
            c.n_heads = heads;
            c.n_kv_heads = heads;
            c.head_dim = hidden / heads.max(1);
            c.intermediate_size = opt_usize("feed_forward_length").unwrap_or(4 * hidden);
            c.max_position_embeddings = usize_of("context_length")?;
            c.norm_eps = opt_f64("attention.layer_norm_epsilon").unwrap_or(1e-5);
            c.qkv_bias = true;
            c.o_bias = true;
            c.mlp_bias = true;
            c.sliding_layers = vec![false; c.n_layers];
            c.activation = Activation::GeluTanh;
            c.bos_token_id = bos_token_id;
            c.eos_token_ids = eos_token_ids;
            c
        }
        _ => unreachable!("checked above"),
    };
    cfg.validate(path)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_roundtrip_and_known_layout() {
        // 2 heads x head dim 4 -> rows 8; HF rows per head: [a0 a1 | b0 b1] (halves),
        // llama.cpp interleaves them: [a0 b0 a1 b1].
        let t = Tensor::arange(0f32, 8., &Device::Cpu)
            .unwrap()
            .reshape((8, 1))
            .unwrap();
        let p = permute(&t, 2).unwrap();
        let rows: Vec<f32> = p.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(rows, vec![0., 2., 1., 3., 4., 6., 5., 7.]);
        let back: Vec<f32> = unpermute(&p, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(back, (0..8).map(|x| x as f32).collect::<Vec<_>>());
    }

    #[test]
    fn names_map_to_hf() {
        assert_eq!(
            hf_name(Arch::Llama, "blk.3.attn_q.weight").unwrap(),
            "model.layers.3.self_attn.q_proj.weight"
        );
        assert_eq!(
            hf_name(Arch::Llama, "token_embd.weight").unwrap(),
            "model.embed_tokens.weight"
        );
        assert_eq!(
            hf_name(Arch::Gpt2, "blk.0.attn_qkv.bias").unwrap(),
            "transformer.h.0.attn.c_attn.bias"
        );
        assert!(hf_name(Arch::Llama, "rope_freqs.weight").is_none());
    }
}
