//! Activation patching's edits: during a forward pass, chosen activations of a block take other
//! values (typically another run's). Three sites per block, as TransformerLens names them:
//! `resid_pre` (the block's input), `z` (every head's attention output before the output
//! projection, [B, T, H * head_dim]; a head is a slice of it) and `mlp_out` (the MLP branch's
//! output as added to the residual stream, after its output norm where the block has one).
//!
//! An edit is a mask over the site's activations (which rows, positions and columns to replace)
//! and the values to put there; elsewhere the activations are untouched, bit for bit.

use candle_core::{DType, Tensor};

use crate::error::Result;

/// One site's replacement: where `mask` is 1 the activation becomes `src`'s.
#[derive(Debug, Clone)]
pub struct SiteEdit {
    /// u8 [B, T, W], 1 where replaced.
    pub mask: Tensor,
    /// [B or 1, T, W] f32, broadcast over the rows.
    pub src: Tensor,
}

impl SiteEdit {
    /// x [B, T, W] with the masked entries replaced.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let src = self.src.to_dtype(x.dtype())?.broadcast_as(x.shape())?;
        Ok(self.mask.where_cond(&src, x)?)
    }

    /// An edit of the rows of a [B, T, W] site: for each (row, position, columns), those entries
    /// take `src`'s ([1, T, W], shared by the rows).
    pub fn rows(
        shape: (usize, usize, usize),
        places: &[(usize, usize, std::ops::Range<usize>)],
        src: &Tensor,
    ) -> Result<SiteEdit> {
        let (b, t, w) = shape;
        let mut mask = vec![0u8; b * t * w];
        for (row, pos, cols) in places {
            let at = (row * t + pos) * w;
            mask[at + cols.start..at + cols.end].fill(1);
        }
        Ok(SiteEdit {
            mask: Tensor::from_vec(mask, (b, t, w), src.device())?.to_dtype(DType::U8)?,
            src: src.clone(),
        })
    }
}

/// The edits of one block; None where a site is left alone.
#[derive(Debug, Clone, Default)]
pub struct LayerEdit {
    pub resid_pre: Option<SiteEdit>,
    pub z: Option<SiteEdit>,
    pub mlp_out: Option<SiteEdit>,
}

impl LayerEdit {
    pub fn is_empty(&self) -> bool {
        self.resid_pre.is_none() && self.z.is_none() && self.mlp_out.is_none()
    }
}

/// `edit`'s site applied to `x` if there is one.
pub(crate) fn edited(x: Tensor, edit: Option<&SiteEdit>) -> Result<Tensor> {
    match edit {
        Some(e) => e.apply(&x),
        None => Ok(x),
    }
}
