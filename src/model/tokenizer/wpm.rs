//! WordPiece rebuilt from GGUF metadata (`tokenizer.ggml.model = bert`, BERT encoders).
//! llama.cpp's converter stores the vocabulary in "phantom space" form: a word-initial piece
//! `word` as `▁word`, a continuation `##ing` as `ing`, bracketed specials (`[CLS]`) as they
//! are; this undoes it. Text is normalized as BERT's uncased tokenizer does (llama.cpp's WPM
//! tokenizer lowercases too), split on whitespace and punctuation, and wrapped in [CLS] ... [SEP].

use serde_json::json;

use super::metadata::Meta;
use crate::error::Result;

/// The vocabulary as HF's WordPiece spells it.
pub fn unphantom(tokens: &[&str]) -> Vec<String> {
    tokens
        .iter()
        .map(|t| {
            if t.starts_with('[') && t.ends_with(']') {
                t.to_string()
            } else if let Some(w) = t.strip_prefix('\u{2581}') {
                w.to_string()
            } else {
                format!("##{t}")
            }
        })
        .collect()
}

/// The tokenizer and its [CLS] and [SEP] ids.
pub fn build(meta: &Meta, tokens: &[&str]) -> Result<(tokenizers::Tokenizer, u32, u32)> {
    let n = tokens.len();
    let vocab = unphantom(tokens);
    let find = |key: &str, name: &str| -> Result<u32> {
        if let Some(id) = meta.token_id(key, n)? {
            return Ok(id);
        }
        vocab
            .iter()
            .position(|t| t == name)
            .map(|i| i as u32)
            .ok_or_else(|| {
                meta.err(format!(
                    "metadata `{key}` is missing and there is no {name}"
                ))
            })
    };
    let cls = match meta.token_id("tokenizer.ggml.cls_token_id", n)? {
        Some(id) => id,
        None => find("tokenizer.ggml.bos_token_id", "[CLS]")?,
    };
    let sep = match meta.token_id("tokenizer.ggml.seperator_token_id", n)? {
        Some(id) => id,
        None => find("tokenizer.ggml.eos_token_id", "[SEP]")?,
    };
    let unk = find("tokenizer.ggml.unknown_token_id", "[UNK]")?;
    let map: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let added: Vec<serde_json::Value> = vocab
        .iter()
        .enumerate()
        .filter(|(_, t)| t.starts_with('[') && t.ends_with(']'))
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let (c, s) = (&vocab[cls as usize], &vocab[sep as usize]);
    let spec = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": c, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": s, "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": c, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": s, "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": s, "type_id": 1}}],
            "special_tokens": {
                c.clone(): {"id": c, "ids": [cls], "tokens": [c]},
                s.clone(): {"id": s, "ids": [sep], "tokens": [s]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": vocab[unk as usize], "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": map},
    });
    let inner: tokenizers::Tokenizer = spec
        .to_string()
        .parse()
        .map_err(|e| meta.err(format!("cannot build the WordPiece tokenizer: {e}")))?;
    Ok((inner, cls, sep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phantom_space_is_undone() {
        assert_eq!(
            unphantom(&["[CLS]", "\u{2581}the", "ing", "\u{2581}cat", "[MASK]"]),
            ["[CLS]", "the", "##ing", "cat", "[MASK]"]
        );
    }
}
