//! The reverse pass's chunk size when a pipeline sets none: from the model's size, so small
//! models get large (faster) chunks and large ones stay within memory.

use crate::model::Model;

/// The memory a pipeline's saliency chunk may take when its spec sets no `chunk_tokens`, were
/// every row a forward token (most rows are target-prefix rows, which cost far less).
pub const AUTO_CHUNK_BYTES: usize = 2 << 30;

/// The rows per chunk a pipeline uses when its spec sets none: as many as `AUTO_CHUNK_BYTES`
/// holds at the model's `reverse_bytes_per_token`, within 256..=2048 (larger chunks make larger,
/// faster gemms; beyond 2048 rows nothing was gained on SmolLM2: docs/saliency.md). SmolLM2-135M:
/// 1983; a Llama-3.2-1B shape: 910.
pub fn auto_chunk_tokens(model: &Model) -> usize {
    (AUTO_CHUNK_BYTES / model.reverse_bytes_per_token().max(1)).clamp(256, 2048)
}
