//! Study of integrated gradients' path on a real model: for the first N quickstart prompts,
//! generates 12 tokens greedily and prints, per target, the target probability F(alpha) along
//! the zero-baseline path on a uniform alpha grid (forward passes only). JSON on stdout.
//!
//!   TOKENLENS_STUDY_MODEL (required), TOKENLENS_STUDY_N (14), TOKENLENS_STUDY_GRID (256)

use anyhow::{Context, Result};
use candle_core::Tensor;
use tokenlens::model::Model;
use tokenlens::model::generate::{Decoding, GenerateOptions};
use tokenlens::model::reverse::{Metric, SegTarget, Segment};

fn main() -> Result<()> {
    let path = std::env::var("TOKENLENS_STUDY_MODEL").context("TOKENLENS_STUDY_MODEL")?;
    let n: usize = std::env::var("TOKENLENS_STUDY_N").map_or(Ok(14), |s| s.parse())?;
    let grid: usize = std::env::var("TOKENLENS_STUDY_GRID").map_or(Ok(256), |s| s.parse())?;
    let lo: f64 = std::env::var("TOKENLENS_STUDY_LO").map_or(Ok(0.0), |s| s.parse())?;
    let hi: f64 = std::env::var("TOKENLENS_STUDY_HI").map_or(Ok(1.0), |s| s.parse())?;
    let model = Model::load(std::path::Path::new(&path), None)?;
    let text = std::fs::read_to_string("datasets/quickstart.jsonl")?;
    let prompts: Vec<String> = text
        .lines()
        .take(n)
        .map(|l| {
            let row: serde_json::Value = serde_json::from_str(l)?;
            row["text"]
                .as_str()
                .map(str::to_string)
                .context("a quickstart row without text")
        })
        .collect::<Result<_>>()?;
    let seqs: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| model.encode(p))
        .collect::<Result<_, _>>()?;
    let opts = GenerateOptions {
        max_new_tokens: 12,
        decoding: Decoding::Greedy,
        stop_at_eos: false,
    };
    let gens = model.generate(&seqs, &vec![0; seqs.len()], &opts)?;
    let d = model.config.hidden_size;
    let mut out = Vec::new();
    for (g, s) in gens.iter().zip(&seqs) {
        let seq = g.sequence();
        let plen = s.len();
        let emb = model
            .embed(&Tensor::from_slice(&seq, (1, seq.len()), model.device())?)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let alphas: Vec<f64> = (0..=grid)
            .map(|i| lo + (hi - lo) * i as f64 / grid as f64)
            .collect();
        let segs: Vec<Segment> = alphas
            .iter()
            .map(|&a| Segment {
                embeds: emb[..(seq.len() - 1) * d]
                    .iter()
                    .map(|x| x * a as f32)
                    .collect(),
                targets: (plen..seq.len())
                    .map(|p| SegTarget {
                        prefix: p,
                        at: p - 1,
                        metric: Metric::Prob(seq[p]),
                        grad: false,
                    })
                    .collect(),
            })
            .collect();
        let res = model.metric_gradients(&segs)?;
        let f: Vec<Vec<f32>> = (0..seq.len() - plen)
            .map(|t| res.iter().map(|r| r.values[t]).collect())
            .collect();
        out.push(serde_json::json!({"seq": seq, "plen": plen, "f": f}));
    }
    println!(
        "{}",
        serde_json::json!({"grid": grid, "lo": lo, "hi": hi, "docs": out})
    );
    Ok(())
}
