//! Shared helpers of the integration tests, each written once: golden files and tolerances, paths
//! of the test checkpoints and the real model, scratch folders and pipeline specs on the tiny
//! model, running the `tokenlens` binary (its output, success, failure with a message), reading a
//! run's tables, and writing a tiny checkpoint as a GGUF file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow_array::RecordBatch;
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use tokenlens::model::{Arch, Model, gguf};
pub use tokenlens::numerics::math::cosine;
use tokenlens::store::reader::{read_table, table_parts};
use tokenlens::store::schema::table_def;

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// A golden file written by scripts/make_goldens.py: tensors plus the JSON sidecar.
pub struct Golden {
    pub tensors: HashMap<String, Tensor>,
    pub meta: serde_json::Value,
}

impl Golden {
    pub fn load(name: &str) -> Golden {
        let dir = data_dir().join("golden");
        let tensors =
            candle_core::safetensors::load(dir.join(format!("{name}.safetensors")), &Device::Cpu)
                .unwrap_or_else(|e| panic!("golden {name}: {e}"));
        let meta = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        Golden { tensors, meta }
    }

    pub fn t(&self, key: &str) -> &Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("golden tensor {key} missing"))
    }

    /// The golden's prompts (`prompts`, or `sentences` for an encoder's).
    pub fn prompts(&self) -> Vec<String> {
        let key = if self.meta.get("prompts").is_some() {
            "prompts"
        } else {
            "sentences"
        };
        self.meta[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect()
    }

    pub fn ids(&self, key: &str) -> Vec<Vec<u32>> {
        self.meta[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect()
            })
            .collect()
    }
}

/// max |t|.
fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// max |a - b| and max |b|.
pub fn diff(a: &Tensor, b: &Tensor) -> (f32, f32) {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (max_abs(&(a - b).unwrap()), max_abs(b))
}

/// Asserts max |a - b| <= tol * max(1, max |b|), i.e. an absolute tolerance scaled by magnitude.
/// Returns the scaled error so callers can report it.
pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f32) -> f32 {
    let (d, m) = diff(a, b);
    let scaled = d / m.max(1.0);
    assert!(
        scaled <= tol,
        "{what}: max abs diff {d:e} (reference max {m:e}) scaled {scaled:e} > {tol:e}"
    );
    scaled
}

/// Set to `1` to let the tests on real checkpoints pass, each saying that it skipped, when their
/// checkpoint is missing. Never set by `.ci/run` or `scripts/test.sh`.
pub const SKIP_REAL_MODELS: &str = "TOKENLENS_SKIP_REAL_MODELS";

/// The real checkpoint cached at `path`. When it is missing the test fails, naming the command
/// that fetches it (`fetch`), unless [`SKIP_REAL_MODELS`] is `1`: then it prints that it skipped
/// and gets `None` (`let Some(p) = ... else { return };`).
pub fn real_checkpoint(path: PathBuf, fetch: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    let missing = format!(
        "real checkpoint missing at {}: run `{fetch}` (scripts/test.sh does)",
        path.display()
    );
    if std::env::var(SKIP_REAL_MODELS).is_ok_and(|v| v == "1") {
        eprintln!("skipped: {SKIP_REAL_MODELS}=1 and the {missing}");
        return None;
    }
    panic!("{missing}; {SKIP_REAL_MODELS}=1 skips the tests that need it");
}

/// The default real model (SmolLM2 GGUF), as [`real_checkpoint`].
pub fn real_model() -> Option<PathBuf> {
    real_checkpoint(
        tokenlens::model::default_model_path(),
        "scripts/fetch-model.sh",
    )
}

/// A real checkpoint `scripts/fetch-model.sh NAME` caches, as [`real_checkpoint`].
pub fn real_fetched(name: &str) -> Option<PathBuf> {
    real_checkpoint(
        tokenlens::model::fetched_model_path(name).unwrap(),
        &format!("scripts/fetch-model.sh {name}"),
    )
}

/// all-MiniLM-L6-v2 (a BERT encoder without a masked-LM head), as `scripts/fetch-model.sh
/// minilm` caches it; as [`real_checkpoint`].
pub fn real_minilm() -> Option<PathBuf> {
    real_fetched("minilm")
}

/// Gemma 3 270M (Q4_K_M GGUF, fetched by `scripts/fetch-model.sh gemma3`), as
/// [`real_checkpoint`].
pub fn gemma3_model() -> Option<PathBuf> {
    real_checkpoint(
        tokenlens::model::default_model_path().with_file_name(GEMMA3_FILE),
        "scripts/fetch-model.sh gemma3",
    )
}

/// The file name scripts/fetch-model.sh gives Gemma 3 270M in the model cache.
pub const GEMMA3_FILE: &str = "gemma-3-270m-q4_k_m.gguf";

/// A scratch directory unique to one test.
pub fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A scratch folder `name` holding `data.jsonl` (`data`) and `spec.yaml` (`spec` with `MODEL`
/// replaced by the tiny-llama checkpoint and `REPO` by the repository's root); returns the
/// spec's path.
pub fn tiny_spec(name: &str, data: &str, spec: &str) -> PathBuf {
    let dir = scratch(name);
    std::fs::write(dir.join("data.jsonl"), data).unwrap();
    let model = data_dir().join("tiny-llama");
    std::fs::write(
        dir.join("spec.yaml"),
        spec.replace("MODEL", model.to_str().unwrap())
            .replace("REPO", env!("CARGO_MANIFEST_DIR")),
    )
    .unwrap();
    dir.join("spec.yaml")
}

/// A run directory's manifest.json.
pub fn manifest(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Running the binary

/// The `tokenlens` binary as a test module runs it: the environment variables it sets and
/// removes. Each module names its own (`const BIN: Tokenlens = Tokenlens::...`).
#[derive(Debug, Clone, Copy)]
pub struct Tokenlens {
    pub set: &'static [(&'static str, &'static str)],
    pub remove: &'static [&'static str],
}

impl Tokenlens {
    /// The test process's environment as it is.
    pub const PLAIN: Tokenlens = Tokenlens {
        set: &[],
        remove: &[],
    };

    /// `TOKENLENS_CACHE` pointed at a folder that does not exist, so that no command finds the
    /// developer's fetched models (`model: default` fails the same way on every machine).
    pub const NO_CACHE: Tokenlens = Tokenlens {
        set: &[("TOKENLENS_CACHE", "/nonexistent-tokenlens-cache")],
        remove: &[],
    };

    /// For `tokenlens run`: two rayon threads, and no shard index inherited from a Kubernetes
    /// Indexed Job or a SLURM array the tests happen to run in.
    pub const RUN: Tokenlens = Tokenlens {
        set: &[("RAYON_NUM_THREADS", "2")],
        remove: &["JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID"],
    };

    /// The command, not started (to add environment or pipes).
    pub fn cmd(self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tokenlens"));
        c.args(args);
        for (k, v) in self.set {
            c.env(k, v);
        }
        for k in self.remove {
            c.env_remove(k);
        }
        c
    }

    /// Runs the command to its end.
    pub fn output(self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    #[track_caller]
    pub fn ok(self, args: &[&str]) -> String {
        let o = self.output(args);
        assert!(
            o.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs a command that must fail: exit code 1, no panic, stderr starting with `error: `;
    /// returns the stderr.
    #[track_caller]
    pub fn fails(self, args: &[&str]) -> String {
        let o = self.output(args);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(
            o.status.code(),
            Some(1),
            "{args:?}: expected exit 1, stderr: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        err
    }

    /// [`Tokenlens::fails`], and the stderr holds each of `expected`; returns the stderr.
    #[track_caller]
    pub fn fails_mentioning(self, args: &[&str], expected: &[&str]) -> String {
        let err = self.fails(args);
        for e in expected {
            assert!(err.contains(e), "{args:?}: stderr {err:?} lacks {e:?}");
        }
        err
    }

    /// [`Tokenlens::fails`], and the stderr is exactly `error: <expected>` (and a line end).
    #[track_caller]
    pub fn fails_with(self, args: &[&str], expected: &str) {
        let err = self.fails(args);
        assert_eq!(err.trim_end(), format!("error: {expected}"), "{args:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// A run's tables

/// The finished Parquet parts of a run's table (`part-*.parquet`; hidden temporaries skipped), in
/// file-name order.
pub fn finished_parts(run: &Path, table: &str) -> Vec<PathBuf> {
    table_parts(run, table_def(table).unwrap()).unwrap()
}

/// Every record batch of a run's table, its finished parts in file-name order.
pub fn batches(run: &Path, table: &str) -> Vec<RecordBatch> {
    read_table(run, table_def(table).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// GGUF files

/// Writes the HF checkpoint `name` as a GGUF file; returns its path.
/// `permute`: apply llama.cpp's Q/K permutation (as its converter does for llama files).
pub fn write_gguf(
    name: &str,
    out_dir: &Path,
    permute: bool,
    metadata_override: &[(&str, Value)],
) -> PathBuf {
    write_gguf_with(name, out_dir, permute, metadata_override, &[])
}

/// [`write_gguf`] plus `extra` tensors under their GGUF names.
pub fn write_gguf_with(
    name: &str,
    out_dir: &Path,
    permute: bool,
    metadata_override: &[(&str, Value)],
    extra: &[(&str, Tensor)],
) -> PathBuf {
    let dir = data_dir().join(name);
    let model = Model::load(&dir, None).unwrap();
    let cfg = &model.config;
    // llama.cpp's architecture names.
    let arch_name = match cfg.model_type.as_str() {
        "gemma3_text" => "gemma3",
        "gpt_neox" => "gptneox",
        m => m,
    };
    // HF name -> GGUF name, from the loader's own mapping.
    let mut stems = vec![
        "token_embd".to_string(),
        "position_embd".into(),
        "output_norm".into(),
        "output".into(),
    ];
    for l in 0..cfg.n_layers {
        for s in [
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "attn_qkv",
            "attn_q_norm",
            "attn_k_norm",
            "post_attention_norm",
            "post_ffw_norm",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ] {
            stems.push(format!("blk.{l}.{s}"));
        }
    }
    let mut to_gguf = HashMap::new();
    for s in stems {
        for kind in ["weight", "bias"] {
            let g = format!("{s}.{kind}");
            if let Some(h) = gguf::hf_name(arch_name, &g) {
                to_gguf.insert(h.clone(), g.clone());
                to_gguf.insert(h.trim_start_matches("transformer.").to_string(), g);
            }
        }
    }
    let tensors =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut q = vec![];
    for (hf, t) in tensors {
        let g = to_gguf
            .get(&hf)
            .unwrap_or_else(|| panic!("no GGUF name for {hf}"))
            .clone();
        let mut t = t;
        if cfg.arch == Arch::Gpt2
            && t.rank() == 2
            && (hf.contains(".attn.") || hf.contains(".mlp."))
        {
            t = t.t().unwrap().contiguous().unwrap(); // Conv1D [in, out] -> linear [out, in]
        }
        // llama.cpp's converters: Gemma norms stored as 1 + w, GPT-NeoX's q|k|v stacked.
        if cfg.arch == Arch::Gemma && g.ends_with("norm.weight") {
            t = (t + 1.0).unwrap();
        }
        if cfg.arch == Arch::GptNeox && g.contains("attn_qkv") {
            t = tokenlens::model::neox::regroup_qkv(&t, cfg.n_heads).unwrap();
        }
        if permute && arch_name == "llama" && g.contains("attn_q") {
            t = gguf::permute(&t, cfg.n_heads).unwrap();
        }
        if permute && arch_name == "llama" && g.contains("attn_k") {
            t = gguf::permute(&t, cfg.n_kv_heads).unwrap();
        }
        q.push((g, QTensor::quantize(&t, GgmlDType::F32).unwrap()));
    }
    for (g, t) in extra {
        q.push((g.to_string(), QTensor::quantize(t, GgmlDType::F32).unwrap()));
    }
    q.sort_by(|a, b| a.0.cmp(&b.0));

    // Tokenizer metadata from tokenizer.json.
    let tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap())
            .unwrap();
    let vocab = tok["model"]["vocab"].as_object().unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (t, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = t.clone();
    }
    let merges: Vec<Value> = tok["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            serde_json::Value::Array(p) => Value::String(format!(
                "{} {}",
                p[0].as_str().unwrap(),
                p[1].as_str().unwrap()
            )),
            s => Value::String(s.as_str().unwrap().to_string()),
        })
        .collect();
    let types: Vec<Value> = (0..tokens.len())
        .map(|i| Value::I32(if i == 0 { 3 } else { 1 }))
        .collect();
    let k = |s: &str| format!("{arch_name}.{s}");
    let u = |x: usize| Value::U32(x as u32);
    let mut md: Vec<(String, Value)> = vec![
        (
            "general.architecture".into(),
            Value::String(arch_name.into()),
        ),
        (k("block_count"), u(cfg.n_layers)),
        (k("embedding_length"), u(cfg.hidden_size)),
        (k("feed_forward_length"), u(cfg.intermediate_size)),
        (k("attention.head_count"), u(cfg.n_heads)),
        (k("context_length"), u(cfg.max_position_embeddings)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("gpt-2".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(0)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(0)),
    ];
    if cfg.arch != Arch::Gpt2 {
        md.push((k("attention.head_count_kv"), u(cfg.n_kv_heads)));
        let eps_key = if cfg.arch == Arch::GptNeox {
            "attention.layer_norm_epsilon"
        } else {
            "attention.layer_norm_rms_epsilon"
        };
        md.push((k(eps_key), Value::F32(cfg.norm_eps as f32)));
        md.push((k("rope.freq_base"), Value::F32(cfg.rope_theta as f32)));
        md.push((k("rope.dimension_count"), u(cfg.rotary_dim)));
        md.push((k("attention.key_length"), u(cfg.head_dim)));
        md.push((k("attention.value_length"), u(cfg.head_dim)));
        if let Some(w) = cfg.sliding_window {
            md.push((k("attention.sliding_window"), u(w)));
        }
        if let Some(c) = cfg.attn_softcap {
            md.push((k("attn_logit_softcapping"), Value::F32(c as f32)));
        }
        if let Some(c) = cfg.final_softcap {
            md.push((k("final_logit_softcapping"), Value::F32(c as f32)));
        }
        if cfg.arch == Arch::GptNeox {
            md.push((
                k("use_parallel_residual"),
                Value::Bool(cfg.parallel_residual),
            ));
        }
    } else {
        md.push((
            k("attention.layer_norm_epsilon"),
            Value::F32(cfg.norm_eps as f32),
        ));
    }
    for (key, v) in metadata_override {
        md.retain(|(k2, _)| k2 != key);
        md.push((key.to_string(), v.clone()));
    }
    let path = out_dir.join(format!("{name}.gguf"));
    let mut f = std::fs::File::create(&path).unwrap();
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = q.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut f, &md_refs, &t_refs).unwrap();
    path
}

/// One reverse-pass segment per sequence (its token embeddings, unpadded) with one target each:
/// `(position read, token)`; the prefix is the whole sequence.
pub fn single_target_segments(
    model: &tokenlens::model::Model,
    ids: &[Vec<u32>],
    targets: &[(usize, u32)],
) -> Vec<tokenlens::model::reverse::Segment> {
    ids.iter()
        .zip(targets)
        .map(|(row, &(at, token))| {
            let t = candle_core::Tensor::from_slice(row, (1, row.len()), model.device()).unwrap();
            tokenlens::model::reverse::Segment {
                embeds: model
                    .embed(&t)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap(),
                targets: vec![tokenlens::model::reverse::SegTarget {
                    prefix: row.len(),
                    at,
                    metric: tokenlens::model::reverse::Metric::Prob(token),
                    grad: true,
                }],
            }
        })
        .collect()
}
