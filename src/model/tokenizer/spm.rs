//! SentencePiece vocabularies from GGUF metadata (`tokenizer.ggml.model = llama`: Llama 1/2,
//! Mistral, Gemma), rebuilt as transformers' GGUF loader rebuilds them: a BPE with byte fallback
//! whose merges are derived from the vocabulary (`generate_merges`), ranked by the tokens' scores,
//! or for Gemma by their order in the file.
//!
//! - Llama style (every architecture but Gemma's and Phi-3's): `▁` replaces spaces and is
//!   prepended to the text (Metaspace, prepend "first"), unless `tokenizer.ggml.add_space_prefix`
//!   is false (llama.cpp reads that key; transformers decides by architecture alone).
//! - Phi-3 style (`phi3`): the same, with the prefix prepended before the spaces are replaced, so a
//!   text starting with spaces keeps one more `▁`.
//! - Gemma style (`general.architecture` gemma, gemma2, gemma3): spaces become `▁`, nothing is
//!   prepended, and tokens of two or more spaces, which Gemma files store as real spaces, are
//!   respelled with `▁`.

use serde_json::json;
use tokenizers::models::bpe::{BPE, Merges, Vocab};

use super::metadata::Meta;
use super::special::GgufVocab;
use crate::error::Result;

/// Architectures whose SentencePiece vocabulary is Gemma's.
const GEMMA_ARCHS: [&str; 3] = ["gemma", "gemma2", "gemma3"];

/// Phi-3 prepends its prefix space with a normalizer (transformers' `phi3_tokenizer`).
const PHI3_ARCH: &str = "phi3";

/// Python's `str.isspace` (Rust's `char::is_whitespace` plus the separators U+001C..U+001F).
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The merges transformers' `generate_merges` derives from a vocabulary: every split of a token
/// into two tokens, ranked by the token's score (higher first), then by the left and right
/// pieces' lengths in chars (longer first), ties kept in vocabulary order and, within a token, in
/// the order of the pieces' ids. A token listed twice counts once, at its first place, with its
/// last id and score (a Python dict). `vocab` is the model's vocabulary (token -> last id).
pub fn merges_from_scores(tokens: &[&str], scores: &[f64], vocab: &Vocab) -> Merges {
    // `vocab` maps each token to its last id; the first places in order, unless the vocabulary
    // has no duplicate (the usual case: then every place is a first one).
    let order: Vec<&str> = if vocab.len() == tokens.len() {
        tokens.to_vec()
    } else {
        let mut seen = std::collections::HashSet::with_capacity(vocab.len());
        tokens.iter().copied().filter(|t| seen.insert(*t)).collect()
    };
    struct Cand {
        token: u32,
        split: u32,
        score: f64,
        len_l: u32,
        len_r: u32,
    }
    let mut cands = vec![];
    let mut local: Vec<(u32, u32, Cand)> = vec![];
    for (k, t) in order.iter().enumerate() {
        let score = scores[vocab[*t] as usize];
        let n_chars = t.chars().count() as u32;
        local.clear();
        for (n_left, (b, _)) in t.char_indices().enumerate().skip(1) {
            let (l, r) = t.split_at(b);
            if let (Some(&id_l), Some(&id_r)) = (vocab.get(l), vocab.get(r)) {
                let c = Cand {
                    token: k as u32,
                    split: b as u32,
                    score,
                    len_l: n_left as u32,
                    len_r: n_chars - n_left as u32,
                };
                local.push((id_l, id_r, c));
            }
        }
        local.sort_by_key(|(l, r, _)| (*l, *r));
        cands.extend(local.drain(..).map(|(_, _, c)| c));
    }
    // Stable, descending: Python's sorted(..., reverse=True) keeps ties in order.
    cands.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.len_l.cmp(&a.len_l))
            .then(b.len_r.cmp(&a.len_r))
    });
    cands
        .into_iter()
        .map(|c| {
            let (l, r) = order[c.token as usize].split_at(c.split as usize);
            (l.to_string(), r.to_string())
        })
        .collect()
}

pub fn build(meta: &Meta, vocab: &GgufVocab, arch: &str) -> Result<tokenizers::Tokenizer> {
    let gemma = GEMMA_ARCHS.contains(&arch);
    let n = vocab.tokens.len();
    let respelled: Vec<String>;
    let (tokens, scores): (Vec<&str>, Vec<f64>) = if gemma {
        respelled = vocab
            .tokens
            .iter()
            .map(|t| {
                if t.contains(' ') && t.chars().all(py_isspace) {
                    "\u{2581}".repeat(t.chars().count())
                } else {
                    t.to_string()
                }
            })
            .collect();
        // Gemma's scores do not follow its merge order; the tokens' order does.
        let tokens = respelled.iter().map(String::as_str).collect();
        (tokens, (0..n).map(|i| -(i as f64)).collect())
    } else {
        const SCORES: &str = "tokenizer.ggml.scores";
        let scores = meta.numbers(SCORES, n)?.ok_or_else(|| {
            meta.err(format!(
                "metadata `{SCORES}` is missing (a SentencePiece vocabulary needs its scores)"
            ))
        })?;
        (vocab.tokens.clone(), scores)
    };
    let model_vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    let merges = merges_from_scores(&tokens, &scores, &model_vocab);
    let mut builder = BPE::builder()
        .vocab_and_merges(model_vocab, merges)
        .fuse_unk(true)
        .byte_fallback(true);
    if gemma {
        let unk = vocab.unk.map_or("<unk>", |id| vocab.tokens[id as usize]);
        builder = builder.unk_token(unk.to_string());
    }
    let bpe = builder
        .build()
        .map_err(|e| meta.err(format!("cannot build the SentencePiece tokenizer: {e}")))?;
    let space_prefix = !gemma
        && meta
            .flag("tokenizer.ggml.add_space_prefix")?
            .unwrap_or(true);
    let replace_spaces =
        json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
    let (normalizer, pre_tokenizer) = if gemma {
        let split = json!({"type": "Split", "pattern": {"String": " "},
                           "behavior": "MergedWithPrevious", "invert": false});
        (replace_spaces, split)
    } else if arch == PHI3_ARCH {
        // The prefix from a normalizer: "  hi" is "▁▁▁hi" (Metaspace would make it "▁▁hi").
        let mut normalizers = vec![];
        if space_prefix {
            normalizers.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
        }
        normalizers.push(replace_spaces);
        let normalizer = json!({"type": "Sequence", "normalizers": normalizers});
        (normalizer, serde_json::Value::Null)
    } else {
        let prepend = if space_prefix { "first" } else { "never" };
        (
            serde_json::Value::Null,
            json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": prepend,
                   "split": false}),
        )
    };
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if space_prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    let decoder = json!({"type": "Sequence", "decoders": decoders});
    let parse_err = |what: &str, e: serde_json::Error| meta.err(format!("{what}: {e}"));
    let mut tok = tokenizers::Tokenizer::new(bpe);
    if !normalizer.is_null() {
        let n: tokenizers::NormalizerWrapper =
            serde_json::from_value(normalizer).map_err(|e| parse_err("normalizer", e))?;
        tok.with_normalizer(Some(n))
            .map_err(|e| meta.err(format!("normalizer: {e}")))?;
    }
    if !pre_tokenizer.is_null() {
        let p: tokenizers::PreTokenizerWrapper =
            serde_json::from_value(pre_tokenizer).map_err(|e| parse_err("pre-tokenizer", e))?;
        tok.with_pre_tokenizer(Some(p));
    }
    let d: tokenizers::DecoderWrapper =
        serde_json::from_value(decoder).map_err(|e| parse_err("decoder", e))?;
    tok.with_decoder(Some(d));
    tok.with_post_processor(vocab.post_processor(meta)?);
    let added = vocab.added_tokens(|_| true, |t| tok.token_to_id(t).is_some());
    tok.add_tokens(added)
        .map_err(|e| meta.err(format!("cannot add the special tokens: {e}")))?;
    Ok(tok)
}
