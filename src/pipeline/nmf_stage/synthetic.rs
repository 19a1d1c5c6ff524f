//! Synthetic run directories with planted NMF factors, for tests and benchmarks (no model
//! needed): `activations` (every layer of every position), `tokens`, `generations` and a
//! `manifest.json`, laid out as the runner writes them.
//!
//! Row (doc, position) of the matrix is `sum_j w_j * h_j + noise`, with w = |N(0, 1)| drawn from
//! a generator seeded by (seed, doc, position), and component h_j [layers * neurons] strong (1.0)
//! on the j-th block of columns and weak (0.05 * U[0, 1)) elsewhere. With `signed`, every third
//! column has its sign flipped, so `negative: split` recovers [h+, h-] exactly. The noise is
//! uniform in [-noise, noise].

use std::path::Path;

use serde::Serialize;

use crate::numerics::rng::SplitMix64;
use crate::pipeline::error::Result;
use crate::store::manifest::write_json_atomic;
use crate::store::schema::{
    Activations, ActivationsRow, Generations, GenerationsRow, Precision, Tokens, TokensRow,
};
use crate::store::{Manifest, RunDir, TableOptions, TableWriter, WriterOptions};

#[derive(Debug, Clone, Serialize)]
pub struct SyntheticRun {
    pub docs: usize,
    /// Tokens per prompt and generated tokens per document (the same for every document).
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Layers 0..layers, each of `neurons` neurons.
    pub layers: usize,
    pub neurons: usize,
    /// Planted components.
    pub k: usize,
    pub noise: f32,
    /// Flip the sign of every third column (negative activations).
    pub signed: bool,
    /// Store activations as float16.
    pub f16: bool,
    /// Documents are spread over this many shards (doc d in shard d % shards), each written by
    /// its own table writer, as parallel runner processes do.
    pub shards: u32,
    /// A part file is closed at about this many bytes (small values give many parts).
    pub part_bytes: u64,
    pub seed: u64,
}

impl Default for SyntheticRun {
    fn default() -> Self {
        SyntheticRun {
            docs: 20,
            prompt_tokens: 6,
            generated_tokens: 4,
            layers: 2,
            neurons: 16,
            k: 3,
            noise: 0.01,
            signed: false,
            f16: false,
            shards: 1,
            part_bytes: 1 << 30,
            seed: 0,
        }
    }
}

/// The planted components: `h` is [k, layers * neurons], signed as the activations are.
#[derive(Debug, Clone)]
pub struct Planted {
    pub k: usize,
    pub cols: usize,
    pub h: Vec<f32>,
}

impl SyntheticRun {
    /// The document id of document `d`.
    pub fn doc_id(d: usize) -> String {
        format!("doc{d:05}")
    }

    /// The text of the token at `position` of document `d`.
    pub fn token(d: usize, position: usize) -> String {
        format!(" w{d}.{position}")
    }

    pub fn planted(&self) -> Planted {
        let cols = self.layers * self.neurons;
        let mut rng = SplitMix64::new(self.seed ^ 0x5eed);
        let mut h = vec![0f32; self.k * cols];
        for j in 0..self.k {
            for c in 0..cols {
                let base = if c * self.k / cols == j { 1.0 } else { 0.0 };
                let sign = if self.signed && c % 3 == 1 { -1.0 } else { 1.0 };
                h[j * cols + c] = sign * (base + 0.05 * rng.next_f64() as f32);
            }
        }
        Planted { k: self.k, cols, h }
    }

    /// The activations of one position, [layers * neurons].
    pub fn row(&self, planted: &Planted, d: usize, position: usize) -> Vec<f32> {
        let mut rng = SplitMix64::new(
            self.seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add((d as u64) << 32 | position as u64),
        );
        let w: Vec<f32> = (0..self.k)
            .map(|_| {
                let u1 = rng.next_f64().max(1e-300);
                let u2 = rng.next_f64();
                ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()).abs() as f32
            })
            .collect();
        let cols = planted.cols;
        let mut x = vec![0f32; cols];
        for (j, wj) in w.iter().enumerate() {
            for (xc, hc) in x.iter_mut().zip(&planted.h[j * cols..(j + 1) * cols]) {
                *xc += wj * hc;
            }
        }
        for xc in &mut x {
            *xc += self.noise * (2.0 * rng.next_f64() as f32 - 1.0);
        }
        x
    }

    /// Writes the run directory (replacing a previous run there) and returns the planted
    /// components.
    pub fn write(&self, dir: &Path) -> Result<Planted> {
        let planted = self.planted();
        let run = RunDir::create(dir, true)?;
        let shards = self.shards.max(1);
        let topts = TableOptions {
            list_float: if self.f16 {
                Precision::F16
            } else {
                Precision::F32
            },
        };
        let len = self.prompt_tokens + self.generated_tokens;
        for shard in 0..shards {
            let wopts = WriterOptions {
                shard,
                part_bytes: self.part_bytes,
                // Not a multiple of most layer counts: positions straddle batches (and parts).
                batch_rows: 64,
                ..WriterOptions::default()
            };
            let mut act = TableWriter::<Activations>::create(&run, &topts, &wopts)?;
            let mut tok = TableWriter::<Tokens>::create(&run, &topts, &wopts)?;
            let mut gen_ = TableWriter::<Generations>::create(&run, &topts, &wopts)?;
            for d in (0..self.docs).filter(|d| d % shards as usize == shard as usize) {
                let id = Self::doc_id(d);
                gen_.append(GenerationsRow {
                    doc_id: &id,
                    index: d as i64,
                    prompt: "synthetic",
                    output_text: "",
                    prompt_tokens: self.prompt_tokens as i32,
                    generated_tokens: self.generated_tokens as i32,
                    stopped_at_eos: false,
                    truncated_tokens: 0,
                })?;
                for p in 0..len {
                    tok.append(TokensRow {
                        doc_id: &id,
                        position: p as i32,
                        token_id: p as i32,
                        token: &Self::token(d, p),
                        is_generated: p >= self.prompt_tokens,
                    })?;
                    let x = self.row(&planted, d, p);
                    for (l, values) in x.chunks(self.neurons).enumerate() {
                        act.append(ActivationsRow {
                            doc_id: &id,
                            position: p as i32,
                            layer: l as i32,
                            values,
                        })?;
                    }
                }
            }
            act.finish()?;
            tok.finish()?;
            gen_.finish()?;
        }
        write_json_atomic(
            &Manifest::path(run.root()),
            &serde_json::json!({ "synthetic": self }),
        )?;
        Ok(planted)
    }
}
