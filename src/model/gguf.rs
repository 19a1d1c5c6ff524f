//! GGUF checkpoints: the config from `general.architecture` metadata, every tensor dequantized to
//! f32 and renamed to its HF name, llama.cpp's interleaved-RoPE Q/K layout undone.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
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

/// Phi-3's LongRoPE short factors.
const ROPE_SHORT: &str = "rope_factors_short.weight";

/// Reads a GGUF file's metadata and tensor index; each tensor is read and dequantized when an
/// architecture takes it (`Weights::lazy`), so loading never holds the whole file as f32.
pub fn load(path: &Path) -> Result<GgufCheckpoint> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        return Err(Error::model(
            path,
            "the file is empty (0 bytes), not a GGUF model",
        ));
    }
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader).map_err(|e| {
        // candle refuses a tensor type it cannot dequantize here, without naming the tensor.
        let msg = super::gguf_types::unsupported_tensor_type(path).unwrap_or_else(|| {
            if e.to_string().contains("failed to fill whole buffer") {
                format!("the file ends after {len} bytes, inside its GGUF header (truncated?)")
            } else {
                format!("not a readable GGUF file: {e}")
            }
        });
        Error::model(path, msg)
    })?;
    check_tensor_shapes(path, &content, &mut reader)?;
    let mut config = config_from_metadata(path, &content.metadata)?;
    // Llama 3.x GGUFs carry their `llama3` RoPE scaling as per-frequency divisors.
    if content.tensor_infos.contains_key(ROPE_FREQS) {
        let factors = dequantize_tensor(path, &content, &mut reader, ROPE_FREQS)?
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
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
    let arch = gguf_arch(&content.metadata).unwrap_or_default();
    if let Some(info) = content.tensor_infos.get("token_types.weight") {
        config.type_vocab_size = info.shape.dims().first().copied().unwrap_or(0);
    }
    // Phi-3's LongRoPE: the short factors as a tensor (used within the original context).
    if content.tensor_infos.contains_key(ROPE_SHORT) {
        let factors = dequantize_tensor(path, &content, &mut reader, ROPE_SHORT)?
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| Error::model(path, format!("tensor `{ROPE_SHORT}`: {e}")))?;
        if factors.len() != config.rotary_dim / 2 {
            return Err(Error::model(
                path,
                format!(
                    "tensor `{ROPE_SHORT}` must hold {} factors (rotary dim / 2), got {}",
                    config.rotary_dim / 2,
                    factors.len()
                ),
            ));
        }
        if let RopeScaling::LongRope { short_factor, .. } = &mut config.rope_scaling {
            *short_factor = factors;
        }
    }
    if matches!(config.rope_scaling, RopeScaling::LongRope { ref short_factor, .. } if short_factor.is_empty())
    {
        return Err(Error::model(
            path,
            format!("LongRoPE metadata without the tensor `{ROPE_SHORT}`"),
        ));
    }
    // The dtype the file holds its matrices in: F16 or BF16 when all are, else f32 (quantized
    // or mixed).
    let matrix_types: std::collections::HashSet<_> = content
        .tensor_infos
        .iter()
        .filter(|(name, info)| info.shape.rank() >= 2 && hf_name(&arch, name).is_some())
        .map(|(_, info)| info.ggml_dtype)
        .collect();
    let stored = match matrix_types.into_iter().collect::<Vec<_>>()[..] {
        [candle_core::quantized::GgmlDType::F16] => candle_core::DType::F16,
        [candle_core::quantized::GgmlDType::BF16] => candle_core::DType::BF16,
        _ => candle_core::DType::F32,
    };
    // HF name -> GGUF name of every tensor a supported architecture reads.
    let names: HashMap<String, String> = content
        .tensor_infos
        .keys()
        .filter_map(|name| hf_name(&arch, name).map(|hf| (hf, name.clone())))
        .collect();
    let (model_type, family, heads, kv_heads) = (
        config.model_type.clone(),
        config.arch,
        config.n_heads,
        config.n_kv_heads,
    );
    let metadata = content.metadata.clone();
    let hf_names = names.keys().cloned().collect();
    let file = path.to_path_buf();
    let read = move |hf: &str| -> Result<Tensor> {
        let name = &names[hf];
        let mut t = dequantize_tensor(&file, &content, &mut reader, name)?;
        // llama.cpp permutes Q and K rows so that RoPE rotates interleaved pairs; we use the HF
        // (rotate-half) layout, so undo it. Other architectures (qwen2) are stored unpermuted.
        if model_type == "llama" {
            if name.ends_with("attn_q.weight") || name.ends_with("attn_q.bias") {
                t = unpermute(&t, heads)?;
            } else if name.ends_with("attn_k.weight") || name.ends_with("attn_k.bias") {
                t = unpermute(&t, kv_heads)?;
            }
        }
        // llama.cpp's converter stores Gemma's RMSNorm weights as 1 + w; `gemma.rs` reads w.
        if family == Arch::Gemma && name.ends_with("norm.weight") {
            t = (t - 1.0)?;
        }
        // GPT-NeoX's fused q|k|v is stored stacked; HF's layout interleaves it per head.
        if family == Arch::GptNeox && name.contains("attn_qkv") {
            t = super::neox::interleave_qkv(&t, heads)?;
        }
        Ok(t)
    };
    Ok(GgufCheckpoint {
        config,
        weights: Weights::lazy(path, hf_names, stored, Box::new(read)),
        metadata,
    })
}

/// Checks every tensor's recorded shape before any is read: its element count must be
/// addressable and a whole number of its type's blocks, and its bytes must lie inside the file.
/// (The GGUF reader multiplies the dimensions unchecked and allocates what they ask for.)
fn check_tensor_shapes<R: Read + Seek>(
    path: &Path,
    content: &Content,
    reader: &mut R,
) -> Result<()> {
    let file_len = reader
        .seek(std::io::SeekFrom::End(0))
        .map_err(|e| Error::io(path, e))?;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let info = &content.tensor_infos[name];
        let dims = info.shape.dims();
        let bad =
            |msg: String| Error::model(path, format!("tensor `{name}`: shape {dims:?} {msg}"));
        let elems = dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .filter(|&n| n <= isize::MAX as usize)
            .ok_or_else(|| bad("has more elements than can be addressed".into()))?;
        let block = info.ggml_dtype.block_size();
        if elems % block != 0 {
            return Err(bad(format!(
                "has {elems} elements, not a whole number of {:?} blocks of {block}",
                info.ggml_dtype
            )));
        }
        let bytes = (elems / block) as u128 * info.ggml_dtype.type_size() as u128;
        let start = content.tensor_data_offset as u128 + info.offset as u128;
        if start + bytes > file_len as u128 {
            return Err(bad(format!(
                "of type {:?} needs {bytes} bytes at offset {start}, only {} remaining in file \
                 (truncated, or a bad shape)",
                info.ggml_dtype,
                (file_len as u128).saturating_sub(start)
            )));
        }
    }
    Ok(())
}

/// One tensor of a GGUF file read (`content`, from `path`) and dequantized to f32 in its GGUF
/// shape: the one dequantization every tensor `load` reads goes through.
pub fn dequantize_tensor<R: Read + Seek>(
    path: &Path,
    content: &Content,
    reader: &mut R,
    name: &str,
) -> Result<Tensor> {
    let q = content
        .tensor(reader, name, &Device::Cpu)
        .map_err(|e| Error::model(path, format!("tensor `{name}`: {e}")))?;
    q.dequantize(&Device::Cpu)
        .map_err(|e| Error::model(path, format!("tensor `{name}` cannot be dequantized: {e}")))
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

/// The GGUF architecture name (`general.architecture`), if present.
fn gguf_arch(md: &HashMap<String, Value>) -> Option<String> {
    md.get("general.architecture")
        .and_then(|v| v.to_string().ok().cloned())
}

/// The GGUF architectures tokenlens reads (llama.cpp's names), with their HF model types.
const GGUF_ARCHS: &[(&str, &str)] = &[
    ("llama", "llama"),
    ("mistral", "mistral"),
    ("qwen2", "qwen2"),
    ("qwen3", "qwen3"),
    ("olmo2", "olmo2"),
    ("gemma", "gemma"),
    ("gemma2", "gemma2"),
    ("gemma3", "gemma3_text"),
    ("phi3", "phi3"),
    ("gptneox", "gpt_neox"),
    ("gpt2", "gpt2"),
    ("bert", "bert"),
];

/// The HF name of a GGUF tensor of architecture `arch` (llama.cpp's name, e.g. `gemma3`), or
/// None for tensors we do not use.
pub fn hf_name(arch: &str, gguf: &str) -> Option<String> {
    let (prefix, rest) = match gguf.strip_prefix("blk.") {
        Some(r) => {
            let (layer, rest) = r.split_once('.')?;
            (Some(layer), rest)
        }
        None => (None, gguf),
    };
    let (stem, kind) = rest.rsplit_once('.')?;
    let gemma = matches!(arch, "gemma" | "gemma2" | "gemma3");
    let mapped = match (arch, prefix, stem) {
        ("gpt2", None, "token_embd") => "transformer.wte".to_string(),
        ("gpt2", None, "position_embd") => "transformer.wpe".to_string(),
        ("gpt2", None, "output_norm") => "transformer.ln_f".to_string(),
        ("gpt2", None, "output") => "lm_head".to_string(),
        ("gpt2", Some(l), s) => {
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
        // BERT as llama.cpp converts it: the encoder of a `BertModel`, no masked-LM head.
        ("bert", None, "token_embd") => "embeddings.word_embeddings".to_string(),
        ("bert", None, "position_embd") => "embeddings.position_embeddings".to_string(),
        ("bert", None, "token_types") => "embeddings.token_type_embeddings".to_string(),
        ("bert", None, "token_embd_norm") => "embeddings.LayerNorm".to_string(),
        ("bert", Some(l), s) => {
            let m = match s {
                "attn_q" => "attention.self.query",
                "attn_k" => "attention.self.key",
                "attn_v" => "attention.self.value",
                "attn_output" => "attention.output.dense",
                "attn_output_norm" => "attention.output.LayerNorm",
                "ffn_up" => "intermediate.dense",
                "ffn_down" => "output.dense",
                "layer_output_norm" => "output.LayerNorm",
                _ => return None,
            };
            format!("encoder.layer.{l}.{m}")
        }
        ("gptneox", None, "token_embd") => "gpt_neox.embed_in".to_string(),
        ("gptneox", None, "output_norm") => "gpt_neox.final_layer_norm".to_string(),
        ("gptneox", None, "output") => "embed_out".to_string(),
        ("gptneox", Some(l), s) => {
            let m = match s {
                "attn_norm" => "input_layernorm",
                "attn_qkv" => "attention.query_key_value",
                "attn_output" => "attention.dense",
                "ffn_norm" => "post_attention_layernorm",
                "ffn_up" => "mlp.dense_h_to_4h",
                "ffn_down" => "mlp.dense_4h_to_h",
                _ => return None,
            };
            format!("gpt_neox.layers.{l}.{m}")
        }
        (_, None, "token_embd") => "model.embed_tokens".to_string(),
        (_, None, "output_norm") => "model.norm".to_string(),
        (_, None, "output") => "lm_head".to_string(),
        (_, Some(l), s) => {
            let m = match s {
                "attn_norm" => "input_layernorm",
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_qkv" => "self_attn.qkv_proj",
                "attn_output" => "self_attn.o_proj",
                "attn_q_norm" => "self_attn.q_norm",
                "attn_k_norm" => "self_attn.k_norm",
                "post_attention_norm" => "post_attention_layernorm",
                "post_ffw_norm" => "post_feedforward_layernorm",
                // Gemma 2/3 put a norm before the MLP and after attention both.
                "ffn_norm" if gemma && arch != "gemma" => "pre_feedforward_layernorm",
                "ffn_norm" => "post_attention_layernorm",
                "ffn_gate" => "mlp.gate_proj",
                // Phi-3's fused gate | up.
                "ffn_up" if arch == "phi3" => "mlp.gate_up_proj",
                "ffn_up" => "mlp.up_proj",
                "ffn_down" => "mlp.down_proj",
                _ => return None,
            };
            format!("model.layers.{l}.{m}")
        }
        _ => return None,
    };
    Some(format!("{mapped}.{kind}"))
}

fn config_from_metadata(path: &Path, md: &HashMap<String, Value>) -> Result<ModelConfig> {
    let err = |msg: String| Error::model(path, msg);
    let arch_name =
        gguf_arch(md).ok_or_else(|| err("metadata `general.architecture` is missing".into()))?;
    let Some(&(_, model_type)) = GGUF_ARCHS.iter().find(|(g, _)| *g == arch_name) else {
        let names: Vec<&str> = GGUF_ARCHS.iter().map(|(g, _)| *g).collect();
        return Err(err(format!(
            "unsupported architecture `{arch_name}` (general.architecture); supported in GGUF \
             files: {} (HF checkpoints: {SUPPORTED_MODEL_TYPES})",
            names.join(", ")
        )));
    };
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
        md.get(&key(k)).and_then(|v| {
            v.to_u32()
                .map(|x| x as usize)
                .or_else(|_| v.to_u64().map(|x| x as usize))
                .ok()
        })
    };
    let opt_f64 = |k: &str| {
        md.get(&key(k))
            .and_then(|v| v.to_f32().map(f64::from).or_else(|_| v.to_f64()).ok())
    };
    let opt_bool = |k: &str| md.get(&key(k)).and_then(|v| v.to_bool().ok());
    let opt_str = |k: &str| md.get(&key(k)).and_then(|v| v.to_string().ok().cloned());
    let n_tokens = md
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.to_vec().ok().map(|v| v.len()));
    let vocab_size = opt_usize("vocab_size")
        .or(n_tokens)
        .ok_or_else(|| err(format!("metadata `{}` is missing", key("vocab_size"))))?;
    let arch = match model_type {
        "gpt2" => Arch::Gpt2,
        "bert" => Arch::Bert,
        "gemma" | "gemma2" | "gemma3_text" => Arch::Gemma,
        "gpt_neox" => Arch::GptNeox,
        "phi3" => Arch::Phi3,
        _ => Arch::Llama,
    };
    let mut c = ModelConfig::base(arch, model_type);
    c.vocab_size = vocab_size;
    c.bos_token_id = md
        .get("tokenizer.ggml.bos_token_id")
        .and_then(|v| v.to_u32().ok());
    c.eos_token_ids = md
        .get("tokenizer.ggml.eos_token_id")
        .and_then(|v| v.to_u32().ok())
        .into_iter()
        .collect();
    let hidden = usize_of("embedding_length")?;
    let heads = usize_of("attention.head_count")?;
    c.hidden_size = hidden;
    c.n_layers = usize_of("block_count")?;
    c.n_heads = heads;
    c.n_kv_heads = opt_usize("attention.head_count_kv").unwrap_or(heads);
    c.max_position_embeddings = usize_of("context_length")?;
    c.intermediate_size = match arch {
        Arch::Gpt2 => opt_usize("feed_forward_length").unwrap_or(4 * hidden),
        _ => usize_of("feed_forward_length")?,
    };
    c.sliding_layers = vec![false; c.n_layers];
    if arch == Arch::Bert {
        c.head_dim = hidden / heads.max(1);
        c.norm_eps = opt_f64("attention.layer_norm_epsilon").unwrap_or(1e-12);
        c.qkv_bias = true;
        c.o_bias = true;
        c.mlp_bias = true;
        c.activation = Activation::Gelu;
        // The token-type count is the `token_types` tensor's (see `load`).
        c.type_vocab_size = opt_usize("token_type_count").unwrap_or(2).max(1);
        c.validate(path)?;
        return Ok(c);
    }
    if arch == Arch::Gpt2 {
        c.head_dim = hidden / heads.max(1);
        c.norm_eps = opt_f64("attention.layer_norm_epsilon").unwrap_or(1e-5);
        c.qkv_bias = true;
        c.o_bias = true;
        c.mlp_bias = true;
        c.activation = Activation::GeluTanh;
        c.validate(path)?;
        return Ok(c);
    }
    // Head size: the key length, else (Llama) the rotary dims, else hidden / heads.
    c.head_dim = opt_usize("attention.key_length")
        .or(match arch {
            Arch::Llama => opt_usize("rope.dimension_count"),
            _ => None,
        })
        .unwrap_or(hidden / heads.max(1));
    c.rotary_dim = opt_usize("rope.dimension_count").unwrap_or(c.head_dim);
    c.norm_eps = match arch {
        Arch::GptNeox => opt_f64("attention.layer_norm_epsilon").unwrap_or(1e-5),
        _ => opt_f64("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
    };
    c.rope_theta = opt_f64("rope.freq_base").unwrap_or(10_000.0);
    c.rope_scaling = match opt_str("rope.scaling.type").as_deref() {
        None | Some("none") => RopeScaling::Default,
        Some("linear") => RopeScaling::Linear {
            factor: opt_f64("rope.scaling.factor").ok_or_else(|| {
                err(format!(
                    "metadata `{}` is missing",
                    key("rope.scaling.factor")
                ))
            })?,
        },
        // Phi-3's LongRoPE: the short factors come as a tensor (see `load`).
        Some("longrope") if arch == Arch::Phi3 => {
            let original = opt_usize("rope.scaling.original_context_length")
                .unwrap_or(c.max_position_embeddings);
            let factor = c.max_position_embeddings as f64 / original as f64;
            let attention_factor = opt_f64("rope.scaling.attn_factor")
                .unwrap_or_else(|| RopeScaling::longrope_attention_factor(factor, original as f64));
            c.max_position_embeddings = c.max_position_embeddings.min(original);
            RopeScaling::LongRope {
                short_factor: vec![],
                attention_factor,
                original_max_position_embeddings: original,
            }
        }
        Some(kind) => {
            return Err(err(format!(
                "rope scaling `{kind}` is not supported in GGUF files (linear, and Phi-3's \
                 longrope; Llama 3.x's comes as `rope_freqs` factors; HF checkpoints support \
                 {SUPPORTED_ROPE_TYPES})"
            )));
        }
    };
    c.qkv_bias = matches!(model_type, "qwen2" | "gpt_neox");
    c.o_bias = model_type == "gpt_neox";
    c.mlp_bias = model_type == "gpt_neox";
    c.activation = match arch {
        Arch::Gemma => Activation::GeluTanh,
        // Pythia's HF config: exact GELU.
        Arch::GptNeox => Activation::Gelu,
        _ => Activation::Silu,
    };
    let window = opt_usize("attention.sliding_window").filter(|&w| w > 0);
    let n = c.n_layers;
    // Which layers slide, as llama.cpp and transformers' defaults have it.
    match (model_type, window) {
        ("mistral" | "phi3", Some(w)) => {
            c.sliding_window = Some(w);
            c.sliding_layers = vec![true; n];
        }
        ("gemma2", Some(w)) => {
            c.sliding_window = Some(w);
            c.sliding_layers = (0..n).map(|i| i % 2 == 0).collect();
        }
        ("gemma3_text", Some(w)) => {
            c.sliding_window = Some(w);
            c.sliding_layers = (0..n).map(|i| (i + 1) % 6 != 0).collect();
        }
        _ => {}
    }
    c.set_block_traits();
    match model_type {
        "gemma2" | "gemma3_text" => {
            // llama.cpp: 1 / sqrt(head_dim), but 1 / sqrt(hidden / heads) for the 27B models
            // (query_pre_attn_scalar = 168 there).
            let big =
                (model_type == "gemma2" && n == 46) || (model_type == "gemma3_text" && n == 62);
            let scalar = if big { hidden / heads } else { c.head_dim };
            c.attn_scale = Some(1.0 / (scalar as f64).sqrt());
            if model_type == "gemma2" {
                c.attn_softcap = opt_f64("attn_logit_softcapping");
                c.final_softcap = opt_f64("final_logit_softcapping");
            } else {
                // llama.cpp's fixed base of Gemma 3's sliding layers.
                c.rope_local_theta = Some(10_000.0);
            }
        }
        "gpt_neox" => c.parallel_residual = opt_bool("use_parallel_residual").unwrap_or(true),
        _ => {}
    }
    c.validate(path)?;
    Ok(c)
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
            hf_name("llama", "blk.3.attn_q.weight").unwrap(),
            "model.layers.3.self_attn.q_proj.weight"
        );
        assert_eq!(
            hf_name("llama", "token_embd.weight").unwrap(),
            "model.embed_tokens.weight"
        );
        assert_eq!(
            hf_name("gpt2", "blk.0.attn_qkv.bias").unwrap(),
            "transformer.h.0.attn.c_attn.bias"
        );
        assert!(hf_name("llama", "rope_freqs.weight").is_none());
        assert_eq!(
            hf_name("gemma3", "blk.2.ffn_norm.weight").unwrap(),
            "model.layers.2.pre_feedforward_layernorm.weight"
        );
        assert_eq!(
            hf_name("gemma", "blk.2.ffn_norm.weight").unwrap(),
            "model.layers.2.post_attention_layernorm.weight"
        );
        assert_eq!(
            hf_name("phi3", "blk.0.ffn_up.weight").unwrap(),
            "model.layers.0.mlp.gate_up_proj.weight"
        );
        assert_eq!(
            hf_name("gptneox", "blk.1.attn_qkv.bias").unwrap(),
            "gpt_neox.layers.1.attention.query_key_value.bias"
        );
    }
}
