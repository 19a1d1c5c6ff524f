//! Tokenizers rebuilt from GGUF metadata give transformers' ids: the tiny GGUFs of every supported
//! tokenizer type (tests/data/tokenizers/, made by scripts/make_tokenizer_goldens.py) and the
//! real Gemma 3 270M vocabulary (262k tokens), on a text set with accents, CJK, long numbers,
//! whitespace runs, code and emoji. Where transformers' GGUF loader is not the model's tokenizer
//! (goldens.json lists each such text under `transformers_differs` with the reason: no `smollm`
//! pre-tokenizer, a special token it adds outside the vocabulary), the expected ids are the
//! model's tokenizer.json's, which llama.cpp reproduces.

use std::path::Path;
use std::time::Instant;

use candle_core::quantized::gguf_file::Content;
use tokenlens::model::Tokenizer;

use crate::common::{data_dir, gemma3_model};

fn ids_of(v: &serde_json::Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

/// Encodes every text and lists the texts whose ids differ from `expected`.
fn compare(tok: &Tokenizer, texts: &[String], expected: &[Vec<u32>]) -> (usize, Vec<String>) {
    assert_eq!(texts.len(), expected.len());
    let mut n_ids = 0;
    let mut bad = vec![];
    for (text, want) in texts.iter().zip(expected) {
        let got = tok.encode(text).unwrap();
        n_ids += want.len();
        if &got != want {
            bad.push(format!(
                "{text:?}:\n  tokenlens    {got:?}\n  transformers {want:?}"
            ));
        }
    }
    (n_ids, bad)
}

fn load_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn gguf_tokenizers_match_transformers() {
    let dir = data_dir().join("tokenizers");
    let golden = load_json(&dir.join("goldens.json"));
    let texts: Vec<String> = serde_json::from_value(golden["texts"].clone()).unwrap();
    let kinds = golden["tokenizers"].as_object().unwrap();
    assert_eq!(
        kinds.len(),
        7,
        "spm-llama, spm-phi3, spm-gemma and four BPE pre-tokenizers"
    );
    let mut failures = vec![];
    for (name, entry) in kinds {
        let path = dir.join(entry["gguf"].as_str().unwrap());
        let tok = Tokenizer::from_gguf_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (n_ids, bad) = compare(&tok, &texts, &ids_of(&entry["ids"]));
        let own = entry["transformers_differs"]
            .as_object()
            .map_or(0, |m| m.len());
        eprintln!(
            "{name}: {} texts, {n_ids} ids, {} mismatches of ids or decoded text ({own} compared with tokenizer.json's \
             ids, where transformers' GGUF loader is not the model's tokenizer)",
            texts.len(),
            bad.len()
        );
        failures.extend(bad.into_iter().map(|b| format!("{name}: {b}")));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn gemma3_270m_tokenizer_matches_transformers() {
    let Some(path) = gemma3_model() else { return };
    let golden = load_json(&data_dir().join("tokenizers/gemma3-270m.json"));
    let texts: Vec<String> = serde_json::from_value(golden["texts"].clone()).unwrap();
    let start = Instant::now();
    let file = std::fs::File::open(&path).unwrap();
    let content = Content::read(&mut std::io::BufReader::new(file)).unwrap();
    let read = start.elapsed();
    let start = Instant::now();
    let tok = Tokenizer::from_gguf(&path, &content.metadata).unwrap();
    eprintln!(
        "gemma3-270m: metadata read in {read:.2?}; tokenizer of {} tokens rebuilt in {:.2?}",
        tok.vocab_size(),
        start.elapsed()
    );
    assert_eq!(tok.bos_token_id, Some(2));
    assert_eq!(tok.eos_token_ids, vec![1]);
    let (n_ids, bad) = compare(&tok, &texts, &ids_of(&golden["ids"]));
    eprintln!(
        "gemma3-270m: {} texts, {n_ids} ids, {} mismatches of ids or decoded text",
        texts.len(),
        bad.len()
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
