//! Unit tests of the GGUF tokenizer rebuild: the merges derived from a SentencePiece vocabulary
//! (against transformers' `generate_merges`) and the error messages for unsupported or malformed
//! metadata, which name the file and the key.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use tokenizers::models::bpe::Vocab;

use super::Tokenizer;
use super::spm::merges_from_scores;

fn strs(v: &[&str]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect())
}

/// A tiny SentencePiece vocabulary, Llama style.
fn spm_md() -> HashMap<String, Value> {
    let tokens = [
        "<unk>",
        "<s>",
        "</s>",
        "\u{2581}",
        "a",
        "b",
        "ab",
        "\u{2581}ab",
    ];
    HashMap::from([
        ("general.architecture".into(), Value::String("llama".into())),
        ("tokenizer.ggml.model".into(), Value::String("llama".into())),
        ("tokenizer.ggml.tokens".into(), strs(&tokens)),
        (
            "tokenizer.ggml.scores".into(),
            Value::Array((0..tokens.len()).map(|i| Value::F32(-(i as f32))).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array([2, 3, 3, 1, 1, 1, 1, 1].map(Value::I32).to_vec()),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
    ])
}

/// A tiny byte-level BPE vocabulary.
fn bpe_md(pre: &str) -> HashMap<String, Value> {
    HashMap::from([
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String(pre.into())),
        ("tokenizer.ggml.tokens".into(), strs(&["a", "b", "ab"])),
        ("tokenizer.ggml.merges".into(), strs(&["a b"])),
    ])
}

fn err(md: &HashMap<String, Value>) -> String {
    match Tokenizer::from_gguf(Path::new("m.gguf"), md) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn merges_follow_transformers_generate_merges() {
    // transformers 5.24: generate_merges(vocab, dict(zip(tokens, scores))) on this vocabulary,
    // with a duplicate token ("a", last score wins) and a -0.0 score.
    let tokens = [
        "a",
        "b",
        "c",
        "ab",
        "bc",
        "abc",
        "ca",
        "a",
        "cab",
        "\u{2581}",
        "\u{2581}a",
    ];
    let scores = [0., 0., 0., -1., -1., -2., -1., 0.5, -3., 0., -0.0];
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    let pairs = |m: Vec<(String, String)>| -> Vec<String> {
        m.into_iter().map(|(l, r)| format!("{l} {r}")).collect()
    };
    assert_eq!(
        pairs(merges_from_scores(&tokens, &scores, &vocab)),
        [
            "\u{2581} a",
            "a b",
            "b c",
            "c a",
            "ab c",
            "a bc",
            "ca b",
            "c ab"
        ]
    );
    // Gemma: ranked by position in the file (score -index).
    let positions: Vec<f64> = (0..tokens.len()).map(|i| -(i as f64)).collect();
    assert_eq!(
        pairs(merges_from_scores(&tokens, &positions, &vocab)),
        [
            "a b",
            "b c",
            "ab c",
            "a bc",
            "c a",
            "ca b",
            "c ab",
            "\u{2581} a"
        ]
    );
}

#[test]
fn sentencepiece_rebuilds_with_prefix_space_bos_and_byte_fallback() {
    let tok = Tokenizer::from_gguf(Path::new("m.gguf"), &spm_md()).unwrap();
    // "ab" -> Metaspace "▁ab" -> merges ▁+ab after a+b; BOS first.
    assert_eq!(tok.encode("ab").unwrap(), vec![1, 7]);
    assert_eq!(tok.bos_token_id, Some(1));
    assert_eq!(tok.eos_token_ids, vec![2]);
    assert_eq!(tok.decode(&[7]).unwrap(), "ab");
    // Without the prefix space the text is not prepended with ▁.
    let mut md = spm_md();
    md.insert("tokenizer.ggml.add_space_prefix".into(), Value::Bool(false));
    let tok = Tokenizer::from_gguf(Path::new("m.gguf"), &md).unwrap();
    assert_eq!(tok.encode("ab").unwrap(), vec![1, 6]);
}

#[test]
fn unsupported_tokenizer_model_names_value_key_and_supported() {
    let mut md = spm_md();
    md.insert("tokenizer.ggml.model".into(), Value::String("rwkv".into()));
    let e = err(&md);
    assert!(e.starts_with("m.gguf: "), "{e}");
    for want in [
        "`rwkv`",
        "`tokenizer.ggml.model`",
        "supported: gpt2 (byte-level BPE), llama (SentencePiece",
        "bert (WordPiece)",
        "tokenizer.json",
    ] {
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn unsupported_pre_tokenizer_names_value_key_and_supported() {
    let e = err(&bpe_md("falcon"));
    for want in [
        "m.gguf: ",
        "`falcon`",
        "`tokenizer.ggml.pre`",
        "llama-bpe",
        "qwen2",
        "smollm",
        "gpt-2",
    ] {
        assert!(e.contains(want), "{e}");
    }
    // the supported ones build
    for pre in ["llama-bpe", "qwen2", "gpt-2", "smollm", "default"] {
        let tok = Tokenizer::from_gguf(Path::new("m.gguf"), &bpe_md(pre)).unwrap();
        assert_eq!(tok.encode("ab").unwrap(), vec![2], "{pre}");
    }
}

#[test]
fn malformed_metadata_names_the_key() {
    let cases: Vec<(&str, Option<Value>, &str)> = vec![
        (
            "tokenizer.ggml.model",
            None,
            "metadata `tokenizer.ggml.model` is missing",
        ),
        (
            "tokenizer.ggml.tokens",
            None,
            "metadata `tokenizer.ggml.tokens` is missing",
        ),
        (
            "tokenizer.ggml.tokens",
            Some(Value::U32(3)),
            "metadata `tokenizer.ggml.tokens` must be an array, found a u32",
        ),
        (
            "tokenizer.ggml.scores",
            None,
            "metadata `tokenizer.ggml.scores` is missing (a SentencePiece vocabulary needs",
        ),
        (
            "tokenizer.ggml.scores",
            Some(Value::Array(vec![Value::F32(0.0)])),
            "metadata `tokenizer.ggml.scores` has 1 entries but `tokenizer.ggml.tokens` has 8",
        ),
        (
            "tokenizer.ggml.token_type",
            Some(strs(&["x"; 8])),
            "metadata `tokenizer.ggml.token_type` must be an array of numbers, entry 0 is a string",
        ),
        (
            "tokenizer.ggml.bos_token_id",
            Some(Value::U32(99)),
            "metadata `tokenizer.ggml.bos_token_id` = 99 is not a token id (the vocabulary has 8",
        ),
        (
            "tokenizer.ggml.bos_token_id",
            None,
            "metadata `tokenizer.ggml.add_bos_token` is true but `tokenizer.ggml.bos_token_id` \
             is missing",
        ),
        (
            "tokenizer.ggml.add_bos_token",
            Some(Value::U8(1)),
            "metadata `tokenizer.ggml.add_bos_token` must be a bool, found a u8",
        ),
    ];
    for (key, value, want) in cases {
        let mut md = spm_md();
        match value {
            Some(v) => md.insert(key.into(), v),
            None => md.remove(key),
        };
        let e = err(&md);
        assert!(e.starts_with("m.gguf: ") && e.contains(want), "{key}: {e}");
    }
    let mut md = bpe_md("gpt-2");
    md.insert("tokenizer.ggml.merges".into(), strs(&["ab"]));
    let e = err(&md);
    assert!(
        e.contains("metadata `tokenizer.ggml.merges` entry 0 (\"ab\") is not two tokens"),
        "{e}"
    );
    md.insert("tokenizer.ggml.merges".into(), strs(&["a c"]));
    let e = err(&md);
    assert!(e.contains("metadata `tokenizer.ggml.merges`"), "{e}");
}

#[test]
fn byte_alphabet_is_gpt2s() {
    let chars = super::bpe::byte_chars();
    assert_eq!(chars[b'!' as usize], '!');
    assert_eq!(chars[b' ' as usize], '\u{120}'); // Ġ
    assert_eq!(chars[b'\n' as usize], '\u{10a}'); // Ċ
    assert_eq!(chars[0], '\u{100}');
    assert_eq!(chars[0xAD], '\u{143}'); // the soft hyphen, last of the 68 moved bytes
    assert_eq!(chars[0xFF], '\u{ff}');
    let distinct: std::collections::HashSet<char> = chars.iter().copied().collect();
    assert_eq!(distinct.len(), 256);
}

#[test]
fn byte_level_respells_raw_tokens_and_skips_mislabelled_control_tokens() {
    // A token stored raw ("\n") is the byte-level "Ċ"; a control token with a char outside the
    // byte alphabet ("<▁x>") is not matched whole (transformers skips it), "<c>" is.
    let mut md = bpe_md("gpt-2");
    md.insert(
        "tokenizer.ggml.tokens".into(),
        strs(&["a", "b", "ab", "\n", "<\u{2581}x>", "<c>"]),
    );
    md.insert(
        "tokenizer.ggml.token_type".into(),
        Value::Array([1, 1, 1, 1, 3, 3].map(Value::I32).to_vec()),
    );
    let tok = Tokenizer::from_gguf(Path::new("m.gguf"), &md).unwrap();
    assert_eq!(tok.encode("ab\n").unwrap(), vec![2, 3]);
    assert_eq!(tok.encode("<c>ab").unwrap(), vec![5, 2]);
    assert_eq!(tok.token_to_id("<\u{2581}x>"), None);
}
