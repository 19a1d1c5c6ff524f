//! Byte-level BPE rebuilt from GGUF metadata (`tokenizer.ggml.model = gpt2`): the vocabulary and
//! `tokenizer.ggml.merges`, split first by the pre-tokenizer `tokenizer.ggml.pre` names, with the
//! regexes llama.cpp (src/llama-vocab.cpp) and the models' HF tokenizer.json files use.

use serde_json::{Value, json};
use tokenizers::models::bpe::{BPE, Vocab};

use super::metadata::Meta;
use super::special::GgufVocab;
use crate::error::Result;

/// `tokenizer.ggml.pre` values a byte-level BPE tokenizer can be rebuilt for.
pub const SUPPORTED_GGUF_PRE: &str = "llama-bpe (also llama3, llama-v3), qwen2 (also deepseek-r1-qwen), smollm, starcoder, refact, \
     gpt-2, default";

/// Llama 3's split (HF tokenizer.json; llama.cpp spells the contractions case by case).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's split: Llama 3's with one digit per piece.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer (tokenizers JSON) of a `tokenizer.ggml.pre` value, or None if unsupported.
pub fn pre_tokenizer(pre: &str) -> Option<Value> {
    let byte_level = |use_regex: bool| {
        json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
               "use_regex": use_regex})
    };
    let split_then_bytes = |regex: &str| {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
            byte_level(false)]})
    };
    Some(match pre {
        "llama-bpe" | "llama3" | "llama-v3" => split_then_bytes(LLAMA3_SPLIT),
        "qwen2" | "deepseek-r1-qwen" => split_then_bytes(QWEN2_SPLIT),
        // llama.cpp splits every digit first, then applies the GPT-2 regex (no prefix space), as
        // SmolLM's tokenizer.json does.
        "smollm" | "starcoder" | "refact" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        "gpt-2" | "gpt2" | "default" => byte_level(true),
        _ => return None,
    })
}

/// GPT-2's byte -> char table (`bytes_to_unicode`): printable bytes stand for themselves, the
/// others for the chars from U+0100 on.
pub fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            next += 1;
            char::from_u32(255 + next).expect("U+0100..U+0143 are chars")
        };
    }
    table
}

pub fn build(meta: &Meta, vocab: &GgufVocab) -> Result<tokenizers::Tokenizer> {
    let pre = meta.string("tokenizer.ggml.pre")?.unwrap_or("default");
    let pre_tokenizer = pre_tokenizer(pre).ok_or_else(|| {
        meta.err(format!(
            "GGUF pre-tokenizer `{pre}` (metadata `tokenizer.ggml.pre`) is not supported \
             (supported: {SUPPORTED_GGUF_PRE}); give the model's tokenizer.json with the \
             `tokenizer` option instead"
        ))
    })?;
    let pre_tokenizer: tokenizers::PreTokenizerWrapper = serde_json::from_value(pre_tokenizer)
        .map_err(|e| meta.err(format!("pre-tokenizer `{pre}`: {e}")))?;
    const MERGES: &str = "tokenizer.ggml.merges";
    let merges = meta
        .require_strings(MERGES)?
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    meta.err(format!(
                        "metadata `{MERGES}` entry {i} ({m:?}) is not two tokens separated by a \
                         space"
                    ))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    // Every token is spelled in the byte alphabet; one that is not (a raw space, say) is respelled
    // from its UTF-8 bytes, as transformers does.
    let chars = byte_chars();
    let alphabet: std::collections::HashSet<char> = chars.iter().copied().collect();
    let spelled = |t: &str| t.chars().all(|c| alphabet.contains(&c));
    let model_vocab: Vocab = vocab
        .tokens
        .iter()
        .enumerate()
        .map(|(id, t)| {
            let t = if spelled(t) {
                t.to_string()
            } else {
                t.bytes().map(|b| chars[b as usize]).collect()
            };
            (t, id as u32)
        })
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(model_vocab, merges)
        .build()
        .map_err(|e| meta.err(format!("metadata `{MERGES}`: {e}")))?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(pre_tokenizer));
    tok.with_decoder(Some(tokenizers::DecoderWrapper::ByteLevel(
        tokenizers::decoders::byte_level::ByteLevel::new(true, true, true),
    )));
    tok.with_post_processor(vocab.post_processor(meta)?);
    // A control token outside the byte alphabet is a llama.cpp mislabel; transformers skips it.
    let added = vocab.added_tokens(spelled, |t| tok.token_to_id(t).is_some());
    tok.add_tokens(added)
        .map_err(|e| meta.err(format!("cannot add the special tokens: {e}")))?;
    Ok(tok)
}
