//! What a forward pass keeps (`Capture`: residual stream, MLP activations, attention
//! probabilities, logits) and returns (`Captures`), and the joining of the captures of row
//! groups run in parallel.

use std::collections::BTreeMap;

use candle_core::Tensor;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Which layers a capture covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Layers {
    #[default]
    None,
    All,
    Only(Vec<usize>),
}

impl Layers {
    pub fn contains(&self, l: usize) -> bool {
        match self {
            Layers::None => false,
            Layers::All => true,
            Layers::Only(v) => v.contains(&l),
        }
    }
}

/// Which positions get logits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Logits {
    #[default]
    None,
    /// The last position of every row: [B, V].
    Last,
    /// One position per row: [B, V].
    At(Vec<usize>),
    /// Every position: [B, T, V].
    All,
}

/// What a forward pass keeps. Nothing that is not asked for is kept.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    /// The embedding output (index 0) and the output of every block (index l + 1), before the final norm.
    pub residual: bool,
    /// MLP activations after the nonlinearity (the input of the MLP's output projection).
    pub mlp: Layers,
    /// Attention probabilities per head.
    pub attention: Layers,
    /// The last block's output after the final norm.
    pub final_hidden: bool,
    /// Activation patching's sites at every block (`model::patch`): the heads' outputs z and
    /// the MLP outputs (the blocks' inputs are `residual`).
    pub sites: bool,
    pub logits: Logits,
}

/// The internals a forward pass returns, per `Capture`.
#[derive(Debug, Default)]
pub struct Captures {
    /// n_layers + 1 tensors [B, T, d] if asked for.
    pub residual: Vec<Tensor>,
    /// layer -> [B, T, ffn].
    pub mlp: BTreeMap<usize, Tensor>,
    /// layer -> [B, H, T, Tk].
    pub attention: BTreeMap<usize, Tensor>,
    pub final_hidden: Option<Tensor>,
    pub logits: Option<Tensor>,
    /// Per layer, the heads' outputs [B, T, H * hd] (`sites`).
    pub z: Vec<Tensor>,
    /// Per layer, the MLP outputs [B, T, d] (`sites`).
    pub mlp_out: Vec<Tensor>,
}

/// One position per row of x [B, T, d] -> [B, d] (differentiable).
pub(super) fn gather_positions(x: &Tensor, positions: &[usize]) -> Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    if positions.len() != b || positions.iter().any(|&p| p >= t) {
        return Err(Error::Input(format!(
            "logit positions {positions:?} do not fit a batch of {b} x {t}"
        )));
    }
    let idx: Vec<u32> = positions
        .iter()
        .enumerate()
        .map(|(r, &p)| (r * t + p) as u32)
        .collect();
    let idx = Tensor::from_vec(idx, b, x.device())?;
    Ok(x.reshape((b * t, d))?.index_select(&idx, 0)?)
}

impl Captures {
    /// Joins the captures of consecutive row groups along the batch dimension.
    pub(super) fn concat_rows(parts: Vec<Captures>) -> Result<Captures> {
        // Every captured tensor is joined independently: do the copies in parallel.
        let first = &parts[0];
        let n_res = first.residual.len();
        let mlp_layers: Vec<usize> = first.mlp.keys().copied().collect();
        let attn_layers: Vec<usize> = first.attention.keys().copied().collect();
        let jobs = n_res + mlp_layers.len() + attn_layers.len() + 2;
        let joined: Vec<Option<Tensor>> = (0..jobs)
            .into_par_iter()
            .map(|j| -> Result<Option<Tensor>> {
                let pick = |p: &Captures| -> Option<Tensor> {
                    if j < n_res {
                        return Some(p.residual[j].clone());
                    }
                    let j = j - n_res;
                    if j < mlp_layers.len() {
                        return Some(p.mlp[&mlp_layers[j]].clone());
                    }
                    let j = j - mlp_layers.len();
                    if j < attn_layers.len() {
                        return Some(p.attention[&attn_layers[j]].clone());
                    }
                    match j - attn_layers.len() {
                        0 => p.final_hidden.clone(),
                        _ => p.logits.clone(),
                    }
                };
                let ts: Option<Vec<Tensor>> = parts.iter().map(pick).collect();
                Ok(match ts {
                    Some(ts) => Some(Tensor::cat(&ts, 0)?),
                    None => None,
                })
            })
            .collect::<Result<_>>()?;
        let mut it = joined.into_iter();
        let mut next = || it.next().flatten();
        let residual = (0..n_res).map(|_| next().expect("joined")).collect();
        let mlp = mlp_layers
            .iter()
            .map(|&l| (l, next().expect("joined")))
            .collect();
        let attention = attn_layers
            .iter()
            .map(|&l| (l, next().expect("joined")))
            .collect();
        let final_hidden = next();
        let logits = next();
        // Patching's sites (rarely asked of a row-parallel pass): joined one layer at a time.
        let sites = |get: fn(&Captures) -> &Vec<Tensor>| -> Result<Vec<Tensor>> {
            (0..get(&parts[0]).len())
                .map(|l| {
                    let ts: Vec<Tensor> = parts.iter().map(|p| get(p)[l].clone()).collect();
                    Ok(Tensor::cat(&ts, 0)?)
                })
                .collect()
        };
        Ok(Captures {
            residual,
            mlp,
            attention,
            final_hidden,
            logits,
            z: sites(|c| &c.z)?,
            mlp_out: sites(|c| &c.mlp_out)?,
        })
    }
}
