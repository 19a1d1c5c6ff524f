//! GGUF loading: tiny HF checkpoints written as GGUF files the way llama.cpp's converter lays
//! them out (Q/K rows permuted for interleaved RoPE, linear [out, in] weights, tokenizer in the
//! metadata) must load back to exactly the model the HF directory gives.

use candle_core::{Device, IndexOp, Tensor};
use tokenlens::model::{Capture, Layers, Logits, Model};

use crate::common::{assert_close, data_dir, scratch, write_gguf, write_gguf_with};

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
