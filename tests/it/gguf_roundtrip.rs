//! GGUF loading: tiny HF checkpoints written as GGUF files the way llama.cpp's converter lays
//! them out (Q/K rows permuted for interleaved RoPE, linear [out, in] weights, tokenizer in the
//! metadata) must load back to exactly the model the HF directory gives.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use tokenlens::model::{Arch, Capture, Layers, Logits, Model, gguf};

use crate::common::{assert_close, data_dir, scratch};

/// Writes the HF checkpoint `name` as a GGUF file; returns its path.
/// `permute`: apply llama.cpp's Q/K permutation (as its converter does for llama files).
pub fn write_gguf(
    name: &str,
    out_dir: &Path,
    permute: bool,
    metadata_override: &[(&str, Value)],
) -> PathBuf {
    let dir = data_dir().join(name);
    let model = Model::load(&dir, None).unwrap();
    let cfg = &model.config;
    let arch_name = match cfg.arch {
        Arch::Gpt2 => "gpt2",
        Arch::Llama => cfg.model_type.as_str(),
    };
    // HF name -> GGUF name, from the loader's own mapping.
    let mut stems = vec![
        "token_embd".to_string(),
        "position_embd".into(),
        "output_norm".into(),
        "output".into(),
    ];
    for l in 0..cfg.n_layers {
        for s in [
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "attn_qkv",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ] {
            stems.push(format!("blk.{l}.{s}"));
        }
    }
    let mut to_gguf = HashMap::new();
    for s in stems {
        for kind in ["weight", "bias"] {
            let g = format!("{s}.{kind}");
            if let Some(h) = gguf::hf_name(cfg.arch, &g) {
                to_gguf.insert(h.clone(), g.clone());
                to_gguf.insert(h.trim_start_matches("transformer.").to_string(), g);
            }
        }
    }
    let tensors =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut q = vec![];
    for (hf, t) in tensors {
        let g = to_gguf
            .get(&hf)
            .unwrap_or_else(|| panic!("no GGUF name for {hf}"))
            .clone();
        let mut t = t;
        if cfg.arch == Arch::Gpt2
            && t.rank() == 2
            && (hf.contains(".attn.") || hf.contains(".mlp."))
        {
            t = t.t().unwrap().contiguous().unwrap(); // Conv1D [in, out] -> linear [out, in]
        }
        if permute && arch_name == "llama" && g.contains("attn_q") {
            t = gguf::permute(&t, cfg.n_heads).unwrap();
        }
        if permute && arch_name == "llama" && g.contains("attn_k") {
            t = gguf::permute(&t, cfg.n_kv_heads).unwrap();
        }
        q.push((g, QTensor::quantize(&t, GgmlDType::F32).unwrap()));
    }
    q.sort_by(|a, b| a.0.cmp(&b.0));

    // Tokenizer metadata from tokenizer.json.
    let tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap())
            .unwrap();
    let vocab = tok["model"]["vocab"].as_object().unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (t, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = t.clone();
    }
    let merges: Vec<Value> = tok["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            serde_json::Value::Array(p) => Value::String(format!(
                "{} {}",
                p[0].as_str().unwrap(),
                p[1].as_str().unwrap()
            )),
            s => Value::String(s.as_str().unwrap().to_string()),
        })
        .collect();
    let types: Vec<Value> = (0..tokens.len())
        .map(|i| Value::I32(if i == 0 { 3 } else { 1 }))
        .collect();
    let k = |s: &str| format!("{arch_name}.{s}");
    let u = |x: usize| Value::U32(x as u32);
    let mut md: Vec<(String, Value)> = vec![
        (
            "general.architecture".into(),
            Value::String(arch_name.into()),
        ),
        (k("block_count"), u(cfg.n_layers)),
        (k("embedding_length"), u(cfg.hidden_size)),
        (k("feed_forward_length"), u(cfg.intermediate_size)),
        (k("attention.head_count"), u(cfg.n_heads)),
        (k("context_length"), u(cfg.max_position_embeddings)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("gpt-2".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(0)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(0)),
    ];
    if cfg.arch == Arch::Llama {
        md.push((k("attention.head_count_kv"), u(cfg.n_kv_heads)));
        md.push((
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(cfg.norm_eps as f32),
        ));
        md.push((k("rope.freq_base"), Value::F32(cfg.rope_theta as f32)));
        md.push((k("rope.dimension_count"), u(cfg.head_dim)));
    } else {
        md.push((
            k("attention.layer_norm_epsilon"),
            Value::F32(cfg.norm_eps as f32),
        ));
    }
    for (key, v) in metadata_override {
        md.retain(|(k2, _)| k2 != key);
        md.push((key.to_string(), v.clone()));
    }
    let path = out_dir.join(format!("{name}.gguf"));
    let mut f = std::fs::File::create(&path).unwrap();
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = q.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut f, &md_refs, &t_refs).unwrap();
    path
}

fn check_same_as_hf(name: &str) {
    let dir = scratch(&format!("gguf-{name}"));
    let path = write_gguf(name, &dir, true, &[]);
    let hf = Model::load(&data_dir().join(name), None).unwrap();
    let gg = Model::load(&path, None).unwrap();
    assert_eq!(gg.config.n_layers, hf.config.n_layers);
    assert_eq!(
        gg.config.tie_word_embeddings, hf.config.tie_word_embeddings,
        "{name}: tied head detection"
    );
    let prompts = [
        "The cat sat",
        "In 1999, 42 people walked 7 miles to the old river bank.",
    ];
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| hf.encode(p).unwrap()).collect();
    let gg_ids: Vec<Vec<u32>> = prompts.iter().map(|p| gg.encode(p).unwrap()).collect();
    assert_eq!(ids, gg_ids, "{name}: tokenizer rebuilt from GGUF metadata");
    let capture = Capture {
        attention: Layers::All,
        logits: Logits::All,
        ..Capture::default()
    };
    let a = hf.forward(&hf.batch(&ids).unwrap(), &capture).unwrap();
    let b = gg.forward(&gg.batch(&ids).unwrap(), &capture).unwrap();
    assert_close(
        &format!("{name} gguf logits"),
        b.logits.as_ref().unwrap(),
        a.logits.as_ref().unwrap(),
        1e-6,
    );
    for l in 0..hf.config.n_layers {
        assert_close(
            &format!("{name} gguf attn {l}"),
            &b.attention[&l],
            &a.attention[&l],
            1e-6,
        );
    }
    assert_eq!(
        gg.tokenizer.decode(&ids[1]).unwrap(),
        prompts[1],
        "{name}: decoding with the GGUF tokenizer"
    );
}

#[test]
fn gguf_llama_loads_like_hf() {
    check_same_as_hf("tiny-llama");
}

#[test]
fn gguf_qwen2_loads_like_hf() {
    check_same_as_hf("tiny-qwen2");
}

#[test]
fn gguf_gpt2_loads_like_hf() {
    check_same_as_hf("tiny-gpt2");
}

/// The llama test above can fail: a llama GGUF written without llama.cpp's Q/K permutation
/// (so the loader's un-permutation scrambles it) gives different logits.
#[test]
fn gguf_llama_permutation_matters() {
    let dir = scratch("gguf-unpermuted");
    let path = write_gguf("tiny-llama", &dir, false, &[]);
    let hf = Model::load(&data_dir().join("tiny-llama"), None).unwrap();
    let gg = Model::load(&path, None).unwrap();
    let ids = vec![hf.encode("The cat sat on the mat").unwrap()];
    let cap = Capture {
        logits: Logits::Last,
        ..Capture::default()
    };
    let a = hf
        .forward(&hf.batch(&ids).unwrap(), &cap)
        .unwrap()
        .logits
        .unwrap();
    let b = gg
        .forward(&gg.batch(&ids).unwrap(), &cap)
        .unwrap()
        .logits
        .unwrap();
    let (d, m) = crate::common::diff(&b, &a);
    assert!(
        d > 1e-2 * m,
        "un-permuting unpermuted Q/K should change the logits ({d} vs {m})"
    );
}
