//! What an architecture (GPT-2, Llama and its relatives) provides to the engine: the
//! `Architecture` trait, the inputs every decoder layer sees (`LayerCtx`) and what a layer
//! returns (`LayerOut`). The forward pass and the captures around the layers are shared
//! (`Model::forward`).

use candle_core::Tensor;

use super::ops::{self, LayerCache, Mode};
use super::reverse;
use crate::error::Result;

/// RoPE cos/sin for the batch's positions, [B, T, head_dim / 2] each.
pub type Rope = (Tensor, Tensor);

/// Inputs every decoder layer sees.
pub struct LayerCtx<'a> {
    /// Which keys each query sees.
    pub mask: &'a ops::AttnMask<'a>,
    /// The same as an additive mask [B, 1, Tq, Tk], built for the differentiable path only.
    pub bias: Option<&'a Tensor>,
    pub rope: Option<&'a Rope>,
    pub mode: Mode,
    pub want_mlp: bool,
    pub want_attn: bool,
}

/// What a decoder layer returns: its output (the residual stream) and the captures asked for.
pub struct LayerOut {
    pub x: Tensor,
    /// MLP activations after the nonlinearity, [B, T, ffn].
    pub mlp: Option<Tensor>,
    /// Attention probabilities, [B, H, Tq, Tk].
    pub attn: Option<Tensor>,
}

/// One architecture's body; the capture logic around it is shared (see `Model::forward`).
pub trait Architecture: Send + Sync {
    /// Token embedding matrix [V, d].
    fn embed_tokens(&self) -> &Tensor;
    /// Unembedding matrix [V, d].
    fn lm_head(&self) -> &Tensor;
    /// The residual stream entering block 0 (GPT-2 adds position embeddings), plus RoPE tables.
    fn input(&self, embeds: &Tensor, positions: &Tensor) -> Result<(Tensor, Option<Rope>)>;
    fn layer(
        &self,
        l: usize,
        x: &Tensor,
        ctx: &LayerCtx,
        cache: Option<&mut LayerCache>,
    ) -> Result<LayerOut>;
    fn final_norm(&self, x: &Tensor, mode: Mode) -> Result<Tensor>;
    /// Block `l`'s weights, for the multi-target reverse pass (`reverse`).
    fn block(&self, l: usize) -> reverse::BlockRef<'_>;
    fn final_norm_ref(&self) -> reverse::NormRef<'_>;
    /// Learned position embeddings added to the input [max_pos, d] (GPT-2), if any.
    fn position_embeddings(&self) -> Option<&Tensor>;
    /// RoPE cos/sin tables [max_pos, head_dim / 2], if the model rotates q and k.
    fn rope_tables(&self) -> Option<(&Tensor, &Tensor)>;
}
