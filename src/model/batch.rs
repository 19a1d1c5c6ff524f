//! `Batch`: token sequences left-padded to one width, with their positions and key mask.

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// A left-padded batch of token sequences: every row ends at the last column.
#[derive(Debug, Clone)]
pub struct Batch {
    /// [B, T] u32 token ids (padding uses the pad id, masked out).
    pub ids: Tensor,
    /// [B, T] u32 position of each token within its row (0 for padding).
    pub positions: Tensor,
    /// [B * Tk] 1 for real keys, 0 for padding; Tk = cached keys + T.
    pub key_mask: Vec<u8>,
    /// Real tokens per row.
    pub lengths: Vec<usize>,
}

impl Batch {
    /// Left-pads `seqs` to a common width.
    pub fn left_padded(seqs: &[Vec<u32>], pad_id: u32, device: &Device) -> Result<Self> {
        let width = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        Self::left_padded_to(seqs, width, pad_id, device)
    }

    /// Left-pads `seqs` to `width` columns (at least the longest's).
    pub fn left_padded_to(
        seqs: &[Vec<u32>],
        width: usize,
        pad_id: u32,
        device: &Device,
    ) -> Result<Self> {
        if let Some(s) = seqs.iter().find(|s| s.len() > width) {
            return Err(Error::Input(format!(
                "a sequence of {} tokens does not fit a batch of width {width}",
                s.len()
            )));
        }
        if seqs.is_empty() || width == 0 {
            return Err(Error::Input(
                "a batch needs at least one non-empty sequence".into(),
            ));
        }
        if let Some(i) = seqs.iter().position(|s| s.is_empty()) {
            return Err(Error::Input(format!(
                "sequence {i} of the batch has no tokens"
            )));
        }
        let b = seqs.len();
        let mut ids = vec![pad_id; b * width];
        let mut pos = vec![0u32; b * width];
        let mut mask = vec![0u8; b * width];
        for (r, s) in seqs.iter().enumerate() {
            let pad = width - s.len();
            for (j, &id) in s.iter().enumerate() {
                ids[r * width + pad + j] = id;
                pos[r * width + pad + j] = j as u32;
                mask[r * width + pad + j] = 1;
            }
        }
        Ok(Batch {
            ids: Tensor::from_vec(ids, (b, width), device)?,
            positions: Tensor::from_vec(pos, (b, width), device)?,
            key_mask: mask,
            lengths: seqs.iter().map(|s| s.len()).collect(),
        })
    }

    pub fn rows(&self) -> usize {
        self.lengths.len()
    }

    /// Rows `a..b` as a batch of their own (same width).
    pub fn rows_range(&self, a: usize, b: usize) -> Result<Batch> {
        let keys = self.key_mask.len() / self.rows();
        Ok(Batch {
            ids: self.ids.narrow(0, a, b - a)?,
            positions: self.positions.narrow(0, a, b - a)?,
            key_mask: self.key_mask[a * keys..b * keys].to_vec(),
            lengths: self.lengths[a..b].to_vec(),
        })
    }

    /// Columns (padded length) of the batch.
    pub fn width(&self) -> usize {
        self.ids.dims()[1]
    }

    /// Padding columns at the start of `row`.
    pub fn pad(&self, row: usize) -> usize {
        self.width() - self.lengths[row]
    }
}
