//! What every tokenizer rebuilt from GGUF metadata shares: the vocabulary with its token types,
//! the special token ids and the add-BOS/EOS flags, the tokens matched whole in the text (control
//! and user-defined ones) and the post-processor that adds BOS/EOS, as transformers' GGUF loader
//! sets them up (`add_gguf_special_tokens`, `update_post_processor`).

use serde_json::json;
use tokenizers::{AddedToken, PostProcessorWrapper};

use super::metadata::{Meta, TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED};
use crate::error::Result;

/// `tokenizer.ggml.tokens` / `token_type` and the special ids and flags.
pub struct GgufVocab<'a> {
    pub tokens: Vec<&'a str>,
    pub types: Vec<i32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
}

impl<'a> GgufVocab<'a> {
    /// Reads the vocabulary; `default_add_bos` applies when `tokenizer.ggml.add_bos_token` is
    /// absent (llama.cpp and transformers add BOS to a SentencePiece vocabulary by default).
    pub fn read(meta: &Meta<'a>, default_add_bos: bool) -> Result<Self> {
        let tokens = meta.require_strings("tokenizer.ggml.tokens")?;
        let n = tokens.len();
        if n == 0 {
            return Err(meta.err("metadata `tokenizer.ggml.tokens` is empty"));
        }
        let types = meta.token_types(n)?;
        let id = |key: &str| meta.token_id(key, n);
        let vocab = GgufVocab {
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            unk: id("tokenizer.ggml.unknown_token_id")?,
            pad: id("tokenizer.ggml.padding_token_id")?,
            add_bos: meta
                .flag("tokenizer.ggml.add_bos_token")?
                .unwrap_or(default_add_bos),
            add_eos: meta.flag("tokenizer.ggml.add_eos_token")?.unwrap_or(false),
            tokens,
            types,
        };
        for (flag, key, id, id_key) in [
            (vocab.add_bos, "add_bos_token", vocab.bos, "bos_token_id"),
            (vocab.add_eos, "add_eos_token", vocab.eos, "eos_token_id"),
        ] {
            if flag && id.is_none() {
                return Err(meta.err(format!(
                    "metadata `tokenizer.ggml.{key}` is true but `tokenizer.ggml.{id_key}` is \
                     missing"
                )));
            }
        }
        Ok(vocab)
    }

    /// The tokens matched whole in the text before the model splits it: control tokens (special;
    /// `keep_control` may reject mislabelled ones), user-defined tokens the model's vocabulary
    /// spells as the file does (`in_vocab`), then the BOS/EOS/UNK/PAD tokens not yet among them.
    pub fn added_tokens(
        &self,
        keep_control: impl Fn(&str) -> bool,
        in_vocab: impl Fn(&str) -> bool,
    ) -> Vec<AddedToken> {
        let mut seen = std::collections::HashSet::new();
        let mut out = vec![];
        let mut push = |content: &str, special: bool| {
            if seen.insert(content.to_string()) {
                out.push(AddedToken::from(content, special).normalized(false));
            }
        };
        for (tok, ty) in self.tokens.iter().zip(&self.types) {
            if *ty == TOKEN_TYPE_CONTROL && keep_control(tok) {
                push(tok, true);
            }
        }
        for (tok, ty) in self.tokens.iter().zip(&self.types) {
            if *ty == TOKEN_TYPE_USER_DEFINED && in_vocab(tok) {
                push(tok, false);
            }
        }
        for id in [self.bos, self.eos, self.unk, self.pad]
            .into_iter()
            .flatten()
        {
            let tok = self.tokens[id as usize];
            if in_vocab(tok) {
                push(tok, true);
            }
        }
        out
    }

    /// BOS and/or EOS around every sequence, or None when the file asks for neither.
    pub fn post_processor(&self, meta: &Meta) -> Result<Option<PostProcessorWrapper>> {
        let mut single = vec![];
        let mut pair = vec![];
        let mut special = serde_json::Map::new();
        let mut add = |id: u32, template: &mut Vec<serde_json::Value>, type_id: u32| {
            let name = self.tokens[id as usize];
            template.push(json!({"SpecialToken": {"id": name, "type_id": type_id}}));
            special.insert(
                name.to_string(),
                json!({"id": name, "ids": [id], "tokens": [name]}),
            );
        };
        let bos = self.bos.filter(|_| self.add_bos);
        let eos = self.eos.filter(|_| self.add_eos);
        if bos.is_none() && eos.is_none() {
            return Ok(None);
        }
        for (seq, type_id) in [("A", 0), ("B", 1)] {
            if let Some(b) = bos {
                add(b, &mut pair, type_id);
                if seq == "A" {
                    add(b, &mut single, 0);
                }
            }
            let s = json!({"Sequence": {"id": seq, "type_id": type_id}});
            pair.push(s.clone());
            if seq == "A" {
                single.push(s);
            }
            if let Some(e) = eos {
                add(e, &mut pair, type_id);
                if seq == "A" {
                    add(e, &mut single, 0);
                }
            }
        }
        let spec = json!({"type": "TemplateProcessing", "single": single, "pair": pair,
                          "special_tokens": special});
        serde_json::from_value(spec)
            .map(Some)
            .map_err(|e| meta.err(format!("cannot build the BOS/EOS post-processor: {e}")))
    }
}
