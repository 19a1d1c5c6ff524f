//! GGUF loading: tiny HF checkpoints written as GGUF files the way llama.cpp's converter lays
//! them out (Q/K rows permuted for interleaved RoPE, linear [out, in] weights, tokenizer in the
//! metadata) must load back to exactly the model the HF directory gives.

use candle_core::quantized::gguf_file::Value;
use candle_core::{Device, IndexOp, Tensor};
use tokenlens::model::{Capture, Layers, Logits, Model};

use crate::common::{assert_close, data_dir, scratch, write_gguf, write_gguf_with};

/// `name`: a checkpoint in tests/data, or an absolute path to one.
fn check_same_as_hf(name: &str) {
    let label = std::path::Path::new(name)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let dir = scratch(&format!("gguf-{label}"));
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

/// Every decoder family llama.cpp defines, written as its converter lays it out (Gemma norms
/// as 1 + w, GPT-NeoX's q|k|v stacked, Phi-3's fused projections), loads back to the HF model.
#[test]
fn gguf_every_family_loads_like_hf() {
    for name in [
        "tiny-qwen3",
        "tiny-olmo2",
        "tiny-gemma",
        "tiny-pythia",
        "tiny-neox-seq",
        "tiny-phi3",
        "tiny-mistral-window",
    ] {
        check_same_as_hf(name);
    }
    // GGUF has no key for Gemma 2's query_pre_attn_scalar: llama.cpp (and transformers reading
    // a GGUF) scale by 1 / sqrt(head_dim), so the HF side here is tiny-gemma2 with that scalar.
    let dir = scratch("gguf-gemma2-std").join("tiny-gemma2-std");
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(data_dir().join("tiny-gemma2")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let cfg_path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["query_pre_attn_scalar"] = cfg["head_dim"].clone();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    check_same_as_hf(dir.to_str().unwrap());
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

/// A Llama 3.x GGUF carries its `llama3` RoPE scaling as per-frequency divisors
/// (`rope_freqs.weight`): tiny-llama3 written that way, the divisors taken from transformers' own
/// inverse frequencies, gives transformers' logits for every golden prompt.
#[test]
fn llama3_rope_freqs_in_gguf_match_transformers() {
    let golden = crate::common::Golden::load("tiny-llama3");
    let c = Model::load(&data_dir().join("tiny-llama3"), None)
        .unwrap()
        .config;
    let scaled = golden.t("rope_inv_freq").to_vec1::<f32>().unwrap();
    let factors: Vec<f32> = scaled
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (c.rope_theta as f32)
                .powf((2 * i) as f32 / c.head_dim as f32)
                .recip()
                / s
        })
        .collect();
    assert!(
        factors.iter().any(|f| *f > 1.5),
        "the scaling changes frequencies"
    );
    let dir = scratch("gguf-rope-freqs");
    let factors = Tensor::new(factors.as_slice(), &Device::Cpu).unwrap();
    let path = write_gguf_with(
        "tiny-llama3",
        &dir,
        true,
        &[],
        &[("rope_freqs.weight", factors)],
    );
    let model = Model::load(&path, None).unwrap();
    for (r, p) in golden.prompts().iter().enumerate() {
        let ids = model.encode(p).unwrap();
        let batch = model.batch(&[ids]).unwrap();
        let out = model
            .forward(
                &batch,
                &Capture {
                    logits: Logits::All,
                    ..Capture::default()
                },
            )
            .unwrap();
        let logits = out.logits.unwrap().i(0).unwrap();
        assert_close(
            &format!("tiny-llama3 GGUF p{r} logits"),
            &logits,
            golden.t(&format!("p{r}.logits")),
            1e-4,
        );
    }
}

/// Phi-3's LongRoPE in GGUF (llama.cpp's layout): `rope.scaling.*` metadata and the short
/// factors as the tensor `rope_factors_short.weight`; tiny-phi3-longrope written that way gives
/// transformers' logits for every golden prompt (all within the original context).
#[test]
fn phi3_longrope_in_gguf_matches_transformers() {
    let name = "tiny-phi3-longrope";
    let golden = crate::common::Golden::load(name);
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data_dir().join(name).join("config.json")).unwrap(),
    )
    .unwrap();
    let rs = &cfg["rope_scaling"];
    let short: Vec<f32> = rs["short_factor"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let long = vec![1f32; short.len()];
    let dir = scratch("gguf-longrope");
    let u = |x: u64| Value::U32(x as u32);
    let path = write_gguf_with(
        name,
        &dir,
        false,
        &[
            (
                "phi3.context_length",
                u(cfg["max_position_embeddings"].as_u64().unwrap()),
            ),
            ("phi3.rope.scaling.type", Value::String("longrope".into())),
            (
                "phi3.rope.scaling.original_context_length",
                u(cfg["original_max_position_embeddings"].as_u64().unwrap()),
            ),
        ],
        &[
            (
                "rope_factors_short.weight",
                Tensor::new(short.as_slice(), &Device::Cpu).unwrap(),
            ),
            (
                "rope_factors_long.weight",
                Tensor::new(long.as_slice(), &Device::Cpu).unwrap(),
            ),
        ],
    );
    let model = Model::load(&path, None).unwrap();
    assert_eq!(model.config.max_position_embeddings, 64);
    for (r, p) in golden.prompts().iter().enumerate() {
        let ids = model.encode(p).unwrap();
        let batch = model.batch(&[ids]).unwrap();
        let capture = Capture {
            logits: Logits::All,
            ..Capture::default()
        };
        let logits = model.forward(&batch, &capture).unwrap().logits.unwrap();
        assert_close(
            &format!("{name} GGUF p{r} logits"),
            &logits.i(0).unwrap(),
            golden.t(&format!("p{r}.logits")),
            1e-4,
        );
    }
}

/// BERT as llama.cpp converts it: the encoder alone (no masked-LM head), `token_types` and
/// `token_embd_norm`, and a WordPiece vocabulary in "phantom space" form (`▁word`, `ing` for
/// `##ing`). tiny-bert written that way gives the HF encoder's every capture and its token ids.
#[test]
fn bert_gguf_loads_like_hf_encoder() {
    use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
    let name = "tiny-bert";
    let src = data_dir().join(name);
    let hf = Model::load(&src, None).unwrap();
    let cfg = &hf.config;
    // GGUF name of every HF tensor, from the loader's own mapping.
    let mut stems = vec![
        "token_embd".to_string(),
        "position_embd".into(),
        "token_types".into(),
        "token_embd_norm".into(),
    ];
    for l in 0..cfg.n_layers {
        for s in [
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "attn_output_norm",
            "ffn_up",
            "ffn_down",
            "layer_output_norm",
        ] {
            stems.push(format!("blk.{l}.{s}"));
        }
    }
    let mut to_gguf = std::collections::HashMap::new();
    for s in stems {
        for kind in ["weight", "bias"] {
            let g = format!("{s}.{kind}");
            if let Some(h) = tokenlens::model::gguf::hf_name("bert", &g) {
                to_gguf.insert(h, g);
            }
        }
    }
    let mut q = vec![];
    for (h, t) in
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap()
    {
        if h.starts_with("cls.") || h.ends_with("position_ids") {
            continue; // llama.cpp drops the masked-LM head
        }
        let g = to_gguf[h.trim_start_matches("bert.")].clone();
        q.push((g, QTensor::quantize(&t, GgmlDType::F32).unwrap()));
    }
    let tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer.json")).unwrap())
            .unwrap();
    let vocab = tok["model"]["vocab"].as_object().unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (t, id) in vocab {
        let phantom = if t.starts_with('[') && t.ends_with(']') {
            t.clone()
        } else if let Some(rest) = t.strip_prefix("##") {
            rest.to_string()
        } else {
            format!("\u{2581}{t}")
        };
        tokens[id.as_u64().unwrap() as usize] = phantom;
    }
    let u = |x: usize| Value::U32(x as u32);
    let md: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("bert".into())),
        ("bert.block_count", u(cfg.n_layers)),
        ("bert.embedding_length", u(cfg.hidden_size)),
        ("bert.feed_forward_length", u(cfg.intermediate_size)),
        ("bert.attention.head_count", u(cfg.n_heads)),
        ("bert.context_length", u(cfg.max_position_embeddings)),
        (
            "bert.attention.layer_norm_epsilon",
            Value::F32(cfg.norm_eps as f32),
        ),
        ("bert.attention.causal", Value::Bool(false)),
        ("tokenizer.ggml.model", Value::String("bert".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        ("tokenizer.ggml.cls_token_id", Value::U32(2)),
        ("tokenizer.ggml.seperator_token_id", Value::U32(3)),
        ("tokenizer.ggml.unknown_token_id", Value::U32(1)),
    ];
    let dir = scratch("gguf-bert");
    let path = dir.join("tiny-bert.gguf");
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = q.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(
        &mut std::fs::File::create(&path).unwrap(),
        &md_refs,
        &t_refs,
    )
    .unwrap();

    let gg = Model::load(&path, None).unwrap();
    assert!(gg.config.is_encoder() && !gg.has_lm_head());
    let prompts = [
        "The cat sat on the [MASK].",
        "In 1999, 42 people walked 7 miles to the old river bank.",
    ];
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| hf.encode(p).unwrap()).collect();
    let gg_ids: Vec<Vec<u32>> = prompts.iter().map(|p| gg.encode(p).unwrap()).collect();
    assert_eq!(ids, gg_ids, "WordPiece rebuilt from GGUF metadata");
    let capture = Capture {
        residual: true,
        mlp: Layers::All,
        attention: Layers::All,
        ..Capture::default()
    };
    let a = hf.forward(&hf.batch(&ids).unwrap(), &capture).unwrap();
    let b = gg.forward(&gg.batch(&ids).unwrap(), &capture).unwrap();
    for l in 0..=cfg.n_layers {
        assert_close(&format!("resid {l}"), &b.residual[l], &a.residual[l], 1e-6);
    }
    for l in 0..cfg.n_layers {
        assert_close(&format!("mlp {l}"), &b.mlp[&l], &a.mlp[&l], 1e-6);
        assert_close(
            &format!("attn {l}"),
            &b.attention[&l],
            &a.attention[&l],
            1e-6,
        );
    }
}

/// `bytes` (a GGUF file) with the dimensions of tensor `name` replaced by `dims` (GGUF order,
/// fastest first; as many as it had).
fn with_tensor_dims(bytes: &[u8], name: &str, dims: &[u64]) -> Vec<u8> {
    let mut key = (name.len() as u64).to_le_bytes().to_vec();
    key.extend(name.as_bytes());
    let at = bytes
        .windows(key.len())
        .position(|w| w == key.as_slice())
        .unwrap_or_else(|| panic!("no tensor info for {name}"))
        + key.len();
    let n_dims = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    assert_eq!(n_dims, dims.len(), "{name} has {n_dims} dimensions");
    let mut out = bytes.to_vec();
    for (i, d) in dims.iter().enumerate() {
        let p = at + 4 + 8 * i;
        out[p..p + 8].copy_from_slice(&d.to_le_bytes());
    }
    out
}

/// A tensor whose recorded shape is malformed — its element count overflows, needs more bytes
/// than the file holds, or disagrees with the config — is an error naming the file and the
/// tensor, never a panic (an overflowing shape used to panic inside the GGUF reader).
#[test]
fn malformed_gguf_tensor_shapes_are_errors() {
    let dir = scratch("gguf-bad-shapes");
    let good = std::fs::read(write_gguf("tiny-llama", &dir, true, &[])).unwrap();
    let bin = crate::common::Tokenlens::NO_CACHE;
    let q = "blk.0.attn_q.weight";
    for (file, dims, expected) in [
        (
            "overflow.gguf",
            [1u64 << 40, 1 << 40],
            "tensor `blk.0.attn_q.weight`: shape [1099511627776, 1099511627776] has more \
             elements than can be addressed",
        ),
        (
            "too-big.gguf",
            [64, 1 << 30],
            "tensor `blk.0.attn_q.weight`: shape [1073741824, 64] of type F32 needs 274877906944 \
             bytes at offset",
        ),
        (
            "vs-config.gguf",
            [64, 32],
            "tensor `model.layers.0.self_attn.q_proj.weight` has shape [32, 64], expected [64, 64]",
        ),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, with_tensor_dims(&good, q, &dims)).unwrap();
        let err = Model::load(&path, None)
            .err()
            .unwrap_or_else(|| panic!("{file} loaded"))
            .to_string();
        assert!(
            err.contains(file) && err.contains(expected),
            "{file}: {err}"
        );
        bin.fails_mentioning(
            &["predict", "--model", path.to_str().unwrap(), "x"],
            &[file, expected],
        );
    }
    // An element count that is not a whole number of its type's blocks: the F32 tensor's type
    // id (after its dimensions) rewritten to Q4_K (id 12, blocks of 256), 3 x 64 elements.
    let mut bytes = with_tensor_dims(&good, q, &[64, 3]);
    let mut key = (q.len() as u64).to_le_bytes().to_vec();
    key.extend(q.as_bytes());
    let at = bytes
        .windows(key.len())
        .position(|w| w == key.as_slice())
        .unwrap()
        + key.len();
    bytes[at + 4 + 16..at + 4 + 20].copy_from_slice(&12u32.to_le_bytes());
    let path = dir.join("blocks.gguf");
    std::fs::write(&path, bytes).unwrap();
    bin.fails_mentioning(
        &["predict", "--model", path.to_str().unwrap(), "x"],
        &[
            "blocks.gguf",
            "tensor `blk.0.attn_q.weight`: shape [3, 64] has 192 elements, not a whole number \
             of Q4K blocks of 256",
        ],
    );
}
