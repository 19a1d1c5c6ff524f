//! The values interventions put into a model (`model::intervene`), measured from runs of it:
//! the mean of a site over a set of prompts (mean ablation: Ecco's "inhibit" toward a neuron's
//! typical value, or a head's), and the mean difference of the residual stream between two
//! prompt sets at a layer (a steering vector, as in Marks & Tegmark's diff-of-means or
//! contrastive activation addition).
//!
//! Every prompt runs unedited; means are summed in f64 over the real (unpadded) tokens, in
//! prompt order, so the same prompts give the same values whatever the caller's sharding.

use std::collections::{BTreeMap, BTreeSet};

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::model::{Batch, Capture, Layers, Mode, Model};

/// Which site means to measure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeanSites {
    /// Blocks whose MLP activation (every neuron) is averaged.
    pub mlp_act: BTreeSet<usize>,
    /// Blocks whose heads' outputs z (every head) are averaged.
    pub z: BTreeSet<usize>,
}

/// Per block, the mean of each column of a site over every token of the prompts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SiteMeans {
    pub mlp_act: BTreeMap<usize, Vec<f32>>,
    pub z: BTreeMap<usize, Vec<f32>>,
    /// Tokens averaged over.
    pub tokens: usize,
}

/// How a prompt's residual stream is read for a steering vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenReduce {
    /// At the prompt's last token.
    Last,
    /// Averaged over the prompt's tokens.
    Mean,
}

/// Forward passes over `prompts` in batches of `batch_size`, unedited; `f` gets each batch and
/// its captures.
fn each_batch(
    model: &Model,
    prompts: &[Vec<u32>],
    batch_size: usize,
    capture: &Capture,
    mut f: impl FnMut(&Batch, &crate::model::Captures) -> Result<()>,
) -> Result<()> {
    if prompts.is_empty() {
        return Err(Error::Input("no prompts to measure".into()));
    }
    for chunk in prompts.chunks(batch_size.max(1)) {
        let batch = model.batch(chunk)?;
        let embeds = model.embed(&batch.ids)?;
        let caps = model.forward_edited(&embeds, &batch, capture, Mode::Fast, None, &[], None)?;
        f(&batch, &caps)?;
    }
    Ok(())
}

/// Adds the real tokens' rows of `x` [B, T, W] into `sum`.
fn add_rows(sum: &mut Vec<f64>, x: &Tensor, batch: &Batch) -> Result<()> {
    let (b, t, w) = x.dims3()?;
    let v = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    sum.resize(w, 0.0);
    for r in 0..b {
        for c in batch.pad(r)..t {
            let row = &v[(r * t + c) * w..(r * t + c + 1) * w];
            sum.iter_mut().zip(row).for_each(|(s, &x)| *s += x as f64);
        }
    }
    Ok(())
}

/// The mean of every column of the asked-for sites over every token of `prompts`.
pub fn site_means(
    model: &Model,
    prompts: &[Vec<u32>],
    batch_size: usize,
    sites: &MeanSites,
) -> Result<SiteMeans> {
    let capture = Capture {
        mlp: Layers::Only(sites.mlp_act.iter().copied().collect()),
        sites: !sites.z.is_empty(),
        ..Capture::default()
    };
    let mut act: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let mut z: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let mut tokens = 0;
    each_batch(model, prompts, batch_size, &capture, |batch, caps| {
        tokens += batch.lengths.iter().sum::<usize>();
        for &l in &sites.mlp_act {
            add_rows(act.entry(l).or_default(), &caps.mlp[&l], batch)?;
        }
        for &l in &sites.z {
            add_rows(z.entry(l).or_default(), &caps.z[l], batch)?;
        }
        Ok(())
    })?;
    let mean = |m: BTreeMap<usize, Vec<f64>>| {
        m.into_iter()
            .map(|(l, s)| (l, s.iter().map(|x| (x / tokens as f64) as f32).collect()))
            .collect()
    };
    Ok(SiteMeans {
        mlp_act: mean(act),
        z: mean(z),
        tokens,
    })
}

/// The mean over `prompts` of block `layer`'s input (the residual stream), each prompt read at
/// its last token or averaged over its tokens.
pub fn mean_residual(
    model: &Model,
    prompts: &[Vec<u32>],
    batch_size: usize,
    layer: usize,
    reduce: TokenReduce,
) -> Result<Vec<f32>> {
    if layer >= model.config.n_layers {
        return Err(Error::Input(format!(
            "layer {layer} is out of range (the model has {} blocks)",
            model.config.n_layers
        )));
    }
    let capture = Capture {
        residual: true,
        ..Capture::default()
    };
    let mut sum = vec![0f64; model.config.hidden_size];
    each_batch(model, prompts, batch_size, &capture, |batch, caps| {
        let x = &caps.residual[layer];
        let (b, t, d) = x.dims3()?;
        let v = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        for r in 0..b {
            let rows = match reduce {
                TokenReduce::Last => t - 1..t,
                TokenReduce::Mean => batch.pad(r)..t,
            };
            let n = rows.len() as f64;
            for c in rows {
                let row = &v[(r * t + c) * d..(r * t + c + 1) * d];
                sum.iter_mut()
                    .zip(row)
                    .for_each(|(s, &x)| *s += x as f64 / n);
            }
        }
        Ok(())
    })?;
    Ok(sum
        .iter()
        .map(|s| (s / prompts.len() as f64) as f32)
        .collect())
}

/// The steering vector mean_residual(positive) - mean_residual(negative).
pub fn mean_difference(
    model: &Model,
    positive: &[Vec<u32>],
    negative: &[Vec<u32>],
    batch_size: usize,
    layer: usize,
    reduce: TokenReduce,
) -> Result<Vec<f32>> {
    let p = mean_residual(model, positive, batch_size, layer, reduce)?;
    let n = mean_residual(model, negative, batch_size, layer, reduce)?;
    Ok(p.iter().zip(&n).map(|(a, b)| a - b).collect())
}
