//! Unit tests of the GGUF tokenizer rebuild: error messages and merge derivation.
