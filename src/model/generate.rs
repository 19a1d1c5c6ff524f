//! Batched text generation with a KV cache: greedy or sampled (temperature, top-k, top-p),
//! per-row seeds so a prompt's output does not depend on the batch it ran in, stop at EOS;
//! optionally under an intervention (`intervene`) applied at every step.

use candle_core::{DType, Tensor};

use super::intervene::Intervention;
use super::ops::LayerCache;
use super::{Batch, Capture, Logits, Mode, Model};
use crate::error::{Error, Result};
use crate::numerics::rng::SplitMix64;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decoding {
    Greedy,
    Sample {
        temperature: f64,
        top_k: Option<usize>,
        top_p: Option<f64>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub decoding: Decoding,
    /// Stop a row when it produces an EOS token (kept as its last generated token).
    pub stop_at_eos: bool,
}

/// One row's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub prompt: Vec<u32>,
    pub generated: Vec<u32>,
    /// Each generated token's softmax probability (temperature 1) when it was chosen.
    pub probs: Vec<f32>,
    pub stopped_at_eos: bool,
}

impl Generation {
    /// Prompt followed by the generated tokens.
    pub fn sequence(&self) -> Vec<u32> {
        let mut s = self.prompt.clone();
        s.extend_from_slice(&self.generated);
        s
    }
}

/// Picks the next token from one row of logits.
pub fn choose(logits: &[f32], decoding: Decoding, rng: &mut SplitMix64) -> u32 {
    match decoding {
        Decoding::Greedy => argmax(logits),
        Decoding::Sample {
            temperature,
            top_k,
            top_p,
        } => {
            if temperature <= 0.0 {
                return argmax(logits);
            }
            let mut idx: Vec<usize> = (0..logits.len()).collect();
            // Highest logit first; ties by id so the order is deterministic.
            idx.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
            if let Some(k) = top_k {
                idx.truncate(k.max(1));
            }
            let max = logits[idx[0]] as f64;
            let mut probs: Vec<f64> = idx
                .iter()
                .map(|&i| ((logits[i] as f64 - max) / temperature).exp())
                .collect();
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
            if let Some(p) = top_p {
                let mut cum = 0.0;
                let mut keep = probs.len();
                for (n, q) in probs.iter().enumerate() {
                    cum += q;
                    if cum >= p {
                        keep = n + 1;
                        break;
                    }
                }
                probs.truncate(keep);
                idx.truncate(keep);
            }
            let total: f64 = probs.iter().sum();
            let mut u = rng.next_f64() * total;
            for (n, q) in probs.iter().enumerate() {
                if u < *q {
                    return idx[n] as u32;
                }
                u -= q;
            }
            idx[probs.len() - 1] as u32
        }
    }
}

/// softmax(v)[i], computed in f64.
fn softmax_at(v: &[f32], i: usize) -> f32 {
    let max = v.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let total: f64 = v.iter().map(|&x| (x as f64 - max).exp()).sum();
    ((v[i] as f64 - max).exp() / total) as f32
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

impl Model {
    /// Generates continuations for a batch of tokenized prompts. `seeds[i]` drives row i's sampling.
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        seeds: &[u64],
        opts: &GenerateOptions,
    ) -> Result<Vec<Generation>> {
        self.generate_with(prompts, seeds, opts, None)
    }

    /// `generate` under `intervention`, whose edits apply at every step to the positions of
    /// its span (the prompt's at the first step, each fed-back token's at the next ones).
    pub fn generate_with(
        &self,
        prompts: &[Vec<u32>],
        seeds: &[u64],
        opts: &GenerateOptions,
        intervention: Option<&Intervention>,
    ) -> Result<Vec<Generation>> {
        self.generate_traced(prompts, seeds, opts, intervention, &mut |_| {})
    }

    /// `generate_with`, telling `on_step` each step's last-position logits (one row per prompt;
    /// rows that have stopped included).
    pub fn generate_traced(
        &self,
        prompts: &[Vec<u32>],
        seeds: &[u64],
        opts: &GenerateOptions,
        intervention: Option<&Intervention>,
        on_step: &mut dyn FnMut(&[Vec<f32>]),
    ) -> Result<Vec<Generation>> {
        if let Some(iv) = intervention {
            iv.check(self)?;
        }
        if seeds.len() != prompts.len() {
            return Err(Error::Input(format!(
                "{} seeds for {} prompts",
                seeds.len(),
                prompts.len()
            )));
        }
        let ctx = self.config.max_position_embeddings;
        for (i, p) in prompts.iter().enumerate() {
            if p.len() + opts.max_new_tokens > ctx {
                return Err(Error::Input(format!(
                    "prompt {i}: {} tokens + {} new tokens exceed the model's context of {ctx} tokens",
                    p.len(),
                    opts.max_new_tokens
                )));
            }
        }
        let mut batch = self.batch(prompts)?;
        let rows = prompts.len();
        let mut rngs: Vec<SplitMix64> = seeds.iter().map(|&s| SplitMix64::new(s)).collect();
        let mut out: Vec<Generation> = prompts
            .iter()
            .map(|p| Generation {
                prompt: p.clone(),
                generated: vec![],
                probs: vec![],
                stopped_at_eos: false,
            })
            .collect();
        let plens: Vec<usize> = prompts.iter().map(Vec::len).collect();
        // The sequence position of each current column (None for padding).
        let width = batch.width();
        let mut cols: Vec<Vec<Option<usize>>> = (0..rows)
            .map(|r| {
                (0..width)
                    .map(|c| {
                        let pad = width - plens[r];
                        (c >= pad).then(|| c - pad)
                    })
                    .collect()
            })
            .collect();
        let mut cache: Vec<LayerCache> = Vec::new();
        let capture = Capture {
            logits: Logits::Last,
            ..Capture::default()
        };
        let mut embeds = self.embed(&batch.ids)?;
        for step in 0..opts.max_new_tokens {
            let edits = match intervention {
                Some(iv) => iv.layer_edits(self, &cols, &plens)?,
                None => vec![],
            };
            let logits = self
                .forward_edited(
                    &embeds,
                    &batch,
                    &capture,
                    Mode::Fast,
                    Some(&mut cache),
                    &edits,
                    None,
                )?
                .logits
                .expect("logits were requested")
                .to_dtype(DType::F32)?
                .to_vec2::<f32>()?;
            on_step(&logits);
            let mut next = vec![self.pad_id(); rows];
            let mut produced = vec![0u8; rows];
            for r in 0..rows {
                let g = &mut out[r];
                if g.stopped_at_eos {
                    continue;
                }
                let tok = choose(&logits[r], opts.decoding, &mut rngs[r]);
                g.generated.push(tok);
                g.probs.push(softmax_at(&logits[r], tok as usize));
                next[r] = tok;
                produced[r] = 1;
                if opts.stop_at_eos && self.config.eos_token_ids.contains(&tok) {
                    g.stopped_at_eos = true;
                }
            }
            if step + 1 == opts.max_new_tokens || out.iter().all(|g| g.stopped_at_eos) {
                break;
            }
            // Next step: one new column; finished rows feed a masked pad token.
            let keys = batch.key_mask.len() / rows;
            let mut mask = Vec::with_capacity(rows * (keys + 1));
            let mut pos = Vec::with_capacity(rows);
            for (r, g) in out.iter().enumerate() {
                mask.extend_from_slice(&batch.key_mask[r * keys..(r + 1) * keys]);
                mask.push(produced[r]);
                let p = g.prompt.len() + g.generated.len() - 1;
                pos.push(p as u32);
                cols[r] = vec![(produced[r] == 1).then_some(p)];
            }
            let ids = Tensor::from_vec(next, (rows, 1), self.device())?;
            batch = Batch {
                positions: Tensor::from_vec(pos, (rows, 1), self.device())?,
                key_mask: mask,
                lengths: batch.lengths.iter().map(|l| l + 1).collect(),
                ids,
            };
            embeds = self.embed(&batch.ids)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_deterministic_and_respects_top_k_and_top_p() {
        let logits = [0.0f32, 3.0, 2.9, -1.0, 1.0];
        let d = Decoding::Sample {
            temperature: 1.0,
            top_k: Some(2),
            top_p: None,
        };
        let draw = |seed| {
            let mut r = SplitMix64::new(seed);
            (0..200)
                .map(|_| choose(&logits, d, &mut r))
                .collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        assert!(a.iter().all(|&t| t == 1 || t == 2));
        assert!(a.contains(&1) && a.contains(&2));
        // Softmax of the logits: p(1) = 0.47, p(2) = 0.43, so a nucleus of 0.4 holds token 1 only.
        let nucleus = Decoding::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.4),
        };
        let mut r = SplitMix64::new(1);
        assert!((0..100).all(|_| choose(&logits, nucleus, &mut r) == 1));
        assert_eq!(choose(&logits, Decoding::Greedy, &mut r), 1);
    }
}
