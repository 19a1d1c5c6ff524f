//! Tokenizers: HF `tokenizer.json` files, and byte-level BPE tokenizers rebuilt from GGUF metadata
//! with the pre-tokenizer the model was trained with (candle's GGUF tokenizer gets SmolLM's wrong).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value as GgufValue;
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// GGUF `tokenizer.ggml.pre` values tokenizers can be rebuilt for, with their pre-tokenizers.
pub const SUPPORTED_GGUF_PRE: &str = "smollm, starcoder, refact, gpt-2, default";

/// A tokenizer plus the special ids the model needs.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl Tokenizer {
    /// Loads an HF `tokenizer.json`.
    pub fn from_file(
        path: &Path,
        bos_token_id: Option<u32>,
        eos_token_ids: Vec<u32>,
    ) -> Result<Self> {
        if !path.exists() {
            return Err(Error::model(path, "tokenizer.json is missing"));
        }
        let mut inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::model(path, format!("cannot read tokenizer: {e}")))?;
        // A prompt is never padded nor cut short behind the user's back (sentence-transformers'
        // tokenizer.json pads and truncates to 128): batches pad themselves, and a prompt over
        // the context is an error.
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| Error::model(path, format!("cannot read tokenizer: {e}")))?;
        Ok(Tokenizer {
            inner,
            bos_token_id,
            eos_token_ids,
        })
    }

    /// Rebuilds the tokenizer stored in a GGUF file's metadata (`tokenizer.ggml.*`).
    pub fn from_gguf(path: &Path, md: &HashMap<String, GgufValue>) -> Result<Self> {
        let err = |msg: String| Error::model(path, msg);
        let get = |key: &str| {
            md.get(key)
                .ok_or_else(|| err(format!("metadata `{key}` is missing")))
        };
        let strings = |key: &str| -> Result<Vec<String>> {
            get(key)?
                .to_vec()
                .and_then(|v| v.iter().map(|x| x.to_string().cloned()).collect())
                .map_err(|e| err(format!("metadata `{key}`: {e}")))
        };
        let u32_of = |key: &str| md.get(key).and_then(|v| v.to_u32().ok());
        let kind = get("tokenizer.ggml.model")?
            .to_string()
            .map_err(|e| err(e.to_string()))?
            .clone();
        if kind != "gpt2" {
            return Err(err(format!(
                "GGUF tokenizer type `{kind}` cannot be rebuilt (only byte-level BPE, `gpt2`); \
                 give the model's tokenizer.json with the `tokenizer` option instead"
            )));
        }
        let pre = md
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok().cloned())
            .unwrap_or_else(|| "default".to_string());
        let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
        let pre_tokenizer = match pre.as_str() {
            // llama.cpp splits every digit first, then applies the GPT-2 regex (no prefix space).
            "smollm" | "starcoder" | "refact" => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level]}),
            "gpt-2" | "gpt2" | "default" => byte_level,
            other => {
                return Err(err(format!(
                    "GGUF pre-tokenizer `{other}` is not supported (supported: {SUPPORTED_GGUF_PRE}); \
                     give the model's tokenizer.json with the `tokenizer` option instead"
                )));
            }
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types: Vec<i32> = match md.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .and_then(|v| v.iter().map(|x| x.to_i32()).collect())
                .map_err(|e| err(format!("metadata `tokenizer.ggml.token_type`: {e}")))?,
            None => vec![1; tokens.len()],
        };
        let mut vocab = serde_json::Map::new();
        let mut added = vec![];
        for (id, tok) in tokens.iter().enumerate() {
            vocab.insert(tok.clone(), json!(id));
            // 3 = control, 4 = user-defined: matched whole in the text, never split by BPE.
            let ty = types.get(id).copied().unwrap_or(1);
            if ty == 3 || ty == 4 {
                added.push(
                    json!({"id": id, "content": tok, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": ty == 3}),
                );
            }
        }
        let bos = u32_of("tokenizer.ggml.bos_token_id");
        let eos = u32_of("tokenizer.ggml.eos_token_id");
        let add_bos = md
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        let post_processor = match (add_bos, bos) {
            (true, Some(b)) => {
                let name = tokens.get(b as usize).cloned().unwrap_or_default();
                json!({"type": "TemplateProcessing",
                    "single": [{"SpecialToken": {"id": name, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                    "pair": [{"SpecialToken": {"id": name, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                             {"Sequence": {"id": "B", "type_id": 1}}],
                    "special_tokens": {name.clone(): {"id": name, "ids": [b], "tokens": [name]}}})
            }
            _ => Value::Null,
        };
        let spec = json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": null, "pre_tokenizer": pre_tokenizer, "post_processor": post_processor,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges},
        });
        let inner: tokenizers::Tokenizer = spec.to_string().parse().map_err(|e| {
            err(format!(
                "cannot build the tokenizer from GGUF metadata: {e}"
            ))
        })?;
        Ok(Tokenizer {
            inner,
            bos_token_id: bos,
            eos_token_ids: eos.into_iter().collect(),
        })
    }

    /// Token ids of `text`, with the special tokens the tokenizer adds itself (e.g. a BOS).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(format!("cannot encode {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text` alone, without the special tokens the tokenizer adds (BOS, [CLS],
    /// [SEP]): what a watched token must be one of.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(format!("cannot encode {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of a sequence of ids.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::Tokenizer(format!("cannot decode {ids:?}: {e}")))
    }

    /// The display text of one token (e.g. " Paris"); raw vocabulary string if it is not valid UTF-8 alone.
    pub fn token_text(&self, id: u32) -> String {
        match self.inner.decode(&[id], false) {
            Ok(s) if !s.contains('\u{FFFD}') => s,
            _ => self
                .inner
                .id_to_token(id)
                .unwrap_or_else(|| format!("<{id}>")),
        }
    }

    /// The vocabulary id of an exact token string (e.g. "ĠParis"), if there is one.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
