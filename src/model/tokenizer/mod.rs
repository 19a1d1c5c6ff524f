//! Tokenizers: HF `tokenizer.json` files, and tokenizers rebuilt from a GGUF file's
//! `tokenizer.ggml.*` metadata as transformers' GGUF loader rebuilds them: byte-level BPE with the
//! pre-tokenizer the model was trained with (`bpe.rs`; candle's GGUF tokenizer gets SmolLM's
//! wrong) and SentencePiece vocabularies (`spm.rs`), with the special tokens and BOS/EOS they
//! share (`special.rs`), read through typed metadata accessors (`metadata.rs`).

mod bpe;
mod metadata;
mod special;
mod spm;
#[cfg(test)]
mod tests;
mod wpm;

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value as GgufValue};

use crate::error::{Error, Result};
pub use bpe::SUPPORTED_GGUF_PRE;
use metadata::Meta;
use special::GgufVocab;

/// GGUF `tokenizer.ggml.model` values tokenizers can be rebuilt for.
pub const SUPPORTED_GGUF_TOKENIZERS: &str =
    "gpt2 (byte-level BPE), llama (SentencePiece: Llama, Mistral, Gemma), bert (WordPiece)";

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
        let meta = Meta::new(path, md);
        let kind = meta.require_string("tokenizer.ggml.model")?;
        let arch = meta.string("general.architecture")?.unwrap_or("");
        let (vocab, inner) = match kind {
            "gpt2" => {
                let vocab = GgufVocab::read(&meta, false)?;
                let inner = bpe::build(&meta, &vocab)?;
                (vocab, inner)
            }
            "llama" => {
                let vocab = GgufVocab::read(&meta, true)?;
                let inner = spm::build(&meta, &vocab, arch)?;
                (vocab, inner)
            }
            "bert" => {
                let tokens = meta.require_strings("tokenizer.ggml.tokens")?;
                let (inner, cls, sep) = wpm::build(&meta, &tokens)?;
                return Ok(Tokenizer {
                    inner,
                    bos_token_id: Some(cls),
                    eos_token_ids: vec![sep],
                });
            }
            other => {
                return Err(meta.err(format!(
                    "GGUF tokenizer type `{other}` (metadata `tokenizer.ggml.model`) cannot be \
                     rebuilt (supported: {SUPPORTED_GGUF_TOKENIZERS}); give the model's \
                     tokenizer.json with the `tokenizer` option instead"
                )));
            }
        };
        Ok(Tokenizer {
            inner,
            bos_token_id: vocab.bos,
            eos_token_ids: vocab.eos.into_iter().collect(),
        })
    }

    /// Rebuilds the tokenizer of a GGUF file, reading only its metadata (not the tensors).
    pub fn from_gguf_file(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let content = Content::read(&mut std::io::BufReader::new(file))
            .map_err(|e| Error::model(path, format!("not a readable GGUF file: {e}")))?;
        Self::from_gguf(path, &content.metadata)
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
