//! Activation patching's edits: during a forward pass, chosen activations of a block take other
//! values (typically another run's). Three sites per block, as TransformerLens names them:
//! `resid_pre` (the block's input), `z` (every head's attention output before the output
//! projection, [B, T, H * head_dim]; a head is a slice of it) and `mlp_out` (the MLP branch's
//! output as added to the residual stream, after its output norm where the block has one).
//!
//! Interventions during generation (`intervene`) use the same hooks and one more site,
//! `mlp_act` (the MLP's hidden activation, the input of its output projection: the neurons).
//!
//! An edit is a mask over the site's activations (which rows, positions and columns) and the
//! values to put there ([`EditOp::Replace`]) or to add there ([`EditOp::Add`], steering);
//! elsewhere the activations are untouched, bit for bit.

use candle_core::{DType, Tensor};

use crate::error::Result;

/// What an edit does where its mask is 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EditOp {
    /// The activation becomes `src`'s.
    #[default]
    Replace,
    /// `src` is added to the activation.
    Add,
}

/// One site's edit: where `mask` is 1 the activation is replaced by (or added) `src`.
#[derive(Debug, Clone)]
pub struct SiteEdit {
    /// u8 [B, T, W], 1 where edited.
    pub mask: Tensor,
    /// [B or 1, T or 1, W] f32, broadcast over the rows (and positions).
    pub src: Tensor,
    pub op: EditOp,
}

impl SiteEdit {
    /// x [B, T, W] with the masked entries replaced (or added to).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let src = self.src.to_dtype(x.dtype())?.broadcast_as(x.shape())?;
        Ok(match self.op {
            EditOp::Replace => self.mask.where_cond(&src, x)?,
            EditOp::Add => (x + self.mask.where_cond(&src, &src.zeros_like()?)?)?,
        })
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
            op: EditOp::Replace,
        })
    }
}

/// The edits of one block; None where a site is left alone.
#[derive(Debug, Clone, Default)]
pub struct LayerEdit {
    pub resid_pre: Option<SiteEdit>,
    pub z: Option<SiteEdit>,
    /// The MLP's hidden activation [B, T, ffn] (neurons).
    pub mlp_act: Option<SiteEdit>,
    pub mlp_out: Option<SiteEdit>,
}

impl LayerEdit {
    pub fn is_empty(&self) -> bool {
        self.resid_pre.is_none()
            && self.z.is_none()
            && self.mlp_act.is_none()
            && self.mlp_out.is_none()
    }
}

/// `edit`'s site applied to `x` if there is one.
pub(crate) fn edited(x: Tensor, edit: Option<&SiteEdit>) -> Result<Tensor> {
    match edit {
        Some(e) => e.apply(&x),
        None => Ok(x),
    }
}
