//! The `tokenlens` binary end to end: predict / generate / tokenize / inspect on the tiny
//! checkpoints, and every bad input: the message it prints and its exit code.

use std::path::Path;

use candle_core::quantized::gguf_file::Value;

use crate::common::{Golden, Tokenlens, data_dir, scratch, write_gguf, write_gguf_with};

const BIN: Tokenlens = Tokenlens::NO_CACHE;

fn tiny(name: &str) -> String {
    data_dir().join(name).to_string_lossy().into_owned()
}

#[test]
fn predict_prints_the_reference_top1() {
    let golden = Golden::load("tiny-llama");
    let target = golden.t("p0.target").to_vec1::<i64>().unwrap()[0];
    let out = BIN.ok(&[
        "predict",
        "--model",
        &tiny("tiny-llama"),
        "--top-k",
        "3",
        "The cat sat",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "\"The cat sat\"");
    let first: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(first[0], "1");
    assert_eq!(first[1], target.to_string(), "{out}");
    assert_eq!(lines.len(), 5);
}

#[test]
fn generate_greedy_matches_reference() {
    let golden = Golden::load("tiny-gpt2");
    let model = tokenlens::model::Model::load(&data_dir().join("tiny-gpt2"), None).unwrap();
    let prompts = golden.prompts();
    let greedy = golden.ids("greedy");
    let out = BIN.ok(&[
        "generate",
        "--model",
        &tiny("tiny-gpt2"),
        "--max-new-tokens",
        "8",
        "--ignore-eos",
        &prompts[0],
        &prompts[1],
    ]);
    let lines: Vec<&str> = out.lines().collect();
    for r in 0..2 {
        // Not a terminal: no bold escape codes.
        let expected = format!(
            "{}{}",
            prompts[r],
            model.tokenizer.decode(&greedy[r]).unwrap()
        );
        assert_eq!(lines[r], expected);
    }
}

#[test]
fn sampling_is_seeded() {
    let args = |seed: &'static str| {
        vec![
            "generate",
            "--max-new-tokens",
            "12",
            "--temperature",
            "1.5",
            "--top-p",
            "0.95",
            "--seed",
            seed,
            "--ignore-eos",
            "The cat sat",
        ]
    };
    let m = tiny("tiny-llama");
    let run = |seed| {
        let mut a = args(seed);
        a.splice(1..1, ["--model", m.as_str()]);
        BIN.ok(&a)
    };
    assert_eq!(run("1"), run("1"));
    assert_ne!(run("1"), run("2"));
}

#[test]
fn tokenize_and_inspect() {
    let golden = Golden::load("tiny-qwen2");
    let out = BIN.ok(&[
        "tokenize",
        "--model",
        &tiny("tiny-qwen2"),
        &golden.prompts()[1],
    ]);
    let ids: Vec<u32> = out
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, golden.ids("input_ids")[1]);
    let info: serde_json::Value =
        serde_json::from_str(&BIN.ok(&["inspect", "--model", &tiny("tiny-qwen2")])).unwrap();
    assert_eq!(info["config"]["model_type"], "qwen2");
    assert_eq!(info["config"]["qkv_bias"], true);
    assert_eq!(info["format"], "hf");
}

#[test]
fn missing_model_and_default_model() {
    BIN.fails_mentioning(
        &["predict", "--model", "/no/such/model.gguf", "x"],
        &["/no/such/model.gguf: no such file or directory"],
    );
    BIN.fails_mentioning(
        &["predict", "x"],
        &["no --model given", "scripts/fetch-model.sh"],
    );
}

/// Copies a tiny checkpoint so a test can break it.
fn copy_checkpoint(name: &str, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(data_dir().join(name).join(f), to.join(f)).unwrap();
    }
}

#[test]
fn broken_hf_checkpoints() {
    let dir = scratch("broken-hf");
    let d = |s: &str| dir.join(s).to_string_lossy().into_owned();

    std::fs::create_dir_all(dir.join("empty")).unwrap();
    BIN.fails_mentioning(
        &["predict", "--model", &d("empty"), "x"],
        &["empty: no config.json: an HF checkpoint directory holds"],
    );

    copy_checkpoint("tiny-llama", &dir.join("no-tok"));
    std::fs::remove_file(dir.join("no-tok/tokenizer.json")).unwrap();
    BIN.fails_mentioning(
        &["predict", "--model", &d("no-tok"), "x"],
        &["no-tok/tokenizer.json: tokenizer.json is missing"],
    );

    copy_checkpoint("tiny-llama", &dir.join("no-weights"));
    std::fs::remove_file(dir.join("no-weights/model.safetensors")).unwrap();
    BIN.fails_mentioning(
        &["predict", "--model", &d("no-weights"), "x"],
        &["no model.safetensors"],
    );

    copy_checkpoint("tiny-llama", &dir.join("corrupt"));
    std::fs::write(
        dir.join("corrupt/model.safetensors"),
        b"this is not a safetensors file",
    )
    .unwrap();
    BIN.fails_mentioning(
        &["predict", "--model", &d("corrupt"), "x"],
        &["corrupt/model.safetensors: cannot read safetensors"],
    );

    copy_checkpoint("tiny-llama", &dir.join("truncated"));
    let bytes = std::fs::read(dir.join("truncated/model.safetensors")).unwrap();
    std::fs::write(
        dir.join("truncated/model.safetensors"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    BIN.fails_mentioning(
        &["predict", "--model", &d("truncated"), "x"],
        &["truncated/model.safetensors: cannot read safetensors"],
    );

    copy_checkpoint("tiny-llama", &dir.join("t5"));
    let cfg = std::fs::read_to_string(dir.join("t5/config.json"))
        .unwrap()
        .replace("\"llama\"", "\"t5\"");
    std::fs::write(dir.join("t5/config.json"), cfg).unwrap();
    BIN.fails_mentioning(
        &["predict", "--model", &d("t5"), "x"],
        &[
            "unsupported architecture `t5`",
            "supported: gpt2, llama, mistral, qwen2, qwen3, olmo2, gemma, gemma2, gemma3_text, \
             gpt_neox, phi3, bert",
        ],
    );

    copy_checkpoint("tiny-llama", &dir.join("bad-json"));
    std::fs::write(
        dir.join("bad-json/config.json"),
        "{\"model_type\": \"llama\",",
    )
    .unwrap();
    BIN.fails_mentioning(
        &["predict", "--model", &d("bad-json"), "x"],
        &["bad-json/config.json: invalid JSON"],
    );

    // A config that disagrees with the weights: the tensor and both shapes are named.
    copy_checkpoint("tiny-llama", &dir.join("wrong-shape"));
    let cfg = std::fs::read_to_string(dir.join("wrong-shape/config.json"))
        .unwrap()
        .replace("\"intermediate_size\": 128", "\"intermediate_size\": 96");
    std::fs::write(dir.join("wrong-shape/config.json"), cfg).unwrap();
    BIN.fails_mentioning(
        &["predict", "--model", &d("wrong-shape"), "x"],
        &["tensor `model.layers.0.mlp.gate_proj.weight` has shape [128, 64], expected [96, 64]"],
    );
}

#[test]
fn broken_gguf_files() {
    let dir = scratch("broken-gguf");
    let d = |s: &str| dir.join(s).to_string_lossy().into_owned();
    std::fs::write(dir.join("garbage.gguf"), b"definitely not gguf").unwrap();
    BIN.fails_mentioning(
        &["predict", "--model", &d("garbage.gguf"), "x"],
        &["garbage.gguf: not a readable GGUF file"],
    );

    let good = write_gguf("tiny-llama", &dir, true, &[]);
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(dir.join("truncated.gguf"), &bytes[..bytes.len() - 5000]).unwrap();
    BIN.fails_mentioning(
        &["predict", "--model", &d("truncated.gguf"), "x"],
        &["truncated.gguf: tensor `", "remaining in file"],
    );

    std::fs::create_dir_all(dir.join("t5")).unwrap();
    write_gguf(
        "tiny-llama",
        &dir.join("t5"),
        true,
        &[("general.architecture", Value::String("t5".into()))],
    );
    BIN.fails_mentioning(
        &["predict", "--model", &d("t5/tiny-llama.gguf"), "x"],
        &["unsupported architecture `t5`"],
    );

    // An unsupported tokenizer kind (t5: Unigram) is named with the key and what is supported.
    std::fs::create_dir_all(dir.join("spm")).unwrap();
    write_gguf(
        "tiny-llama",
        &dir.join("spm"),
        true,
        &[("tokenizer.ggml.model", Value::String("t5".into()))],
    );
    BIN.fails_mentioning(
        &["predict", "--model", &d("spm/tiny-llama.gguf"), "x"],
        &[
            "GGUF tokenizer type `t5` (metadata `tokenizer.ggml.model`) cannot be rebuilt",
            "supported: gpt2 (byte-level BPE), llama (SentencePiece",
            "`tokenizer` option",
        ],
    );
    // ... and the override makes it usable.
    let tok = data_dir().join("tiny-llama/tokenizer.json");
    BIN.ok(&[
        "predict",
        "--model",
        &d("spm/tiny-llama.gguf"),
        "--tokenizer",
        tok.to_str().unwrap(),
        "x",
    ]);

    // RoPE scaling in GGUF: Llama 3.x's frequency divisors of the wrong count, and scaling
    // metadata.
    std::fs::create_dir_all(dir.join("freqs")).unwrap();
    let factors =
        candle_core::Tensor::ones(4, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    write_gguf_with(
        "tiny-llama",
        &dir.join("freqs"),
        true,
        &[],
        &[("rope_freqs.weight", factors)],
    );
    BIN.fails_mentioning(
        &["predict", "--model", &d("freqs/tiny-llama.gguf"), "x"],
        &[
            "freqs/tiny-llama.gguf: tensor `rope_freqs.weight` must hold 8 positive factors \
             (head_dim / 2), got 4 values",
        ],
    );
    std::fs::create_dir_all(dir.join("yarn")).unwrap();
    write_gguf(
        "tiny-llama",
        &dir.join("yarn"),
        true,
        &[("llama.rope.scaling.type", Value::String("yarn".into()))],
    );
    BIN.fails_mentioning(
        &["predict", "--model", &d("yarn/tiny-llama.gguf"), "x"],
        &[
            "rope scaling `yarn` is not supported in GGUF files",
            "default, linear, dynamic, llama3, yarn",
        ],
    );

    std::fs::create_dir_all(dir.join("pre")).unwrap();
    write_gguf(
        "tiny-llama",
        &dir.join("pre"),
        true,
        &[("tokenizer.ggml.pre", Value::String("deepseek-llm".into()))],
    );
    BIN.fails_mentioning(
        &["predict", "--model", &d("pre/tiny-llama.gguf"), "x"],
        &[
            "GGUF pre-tokenizer `deepseek-llm` (metadata `tokenizer.ggml.pre`) is not supported",
            "supported: llama-bpe (also llama3, llama-v3), qwen2",
            "`tokenizer` option",
        ],
    );
}

/// A GGUF v3 file (architecture llama) holding 1-d tensors of 256 elements of the given GGML type
/// ids, their data zeros: enough for the reader to reach the tensor types.
fn gguf_with_types(tensors: &[(&str, u32)]) -> Vec<u8> {
    let mut b = Vec::new();
    let s = |b: &mut Vec<u8>, s: &str| {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    };
    b.extend(b"GGUF");
    b.extend(3u32.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend(1u64.to_le_bytes());
    s(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes()); // string
    s(&mut b, "llama");
    for (i, (name, id)) in tensors.iter().enumerate() {
        s(&mut b, name);
        b.extend(1u32.to_le_bytes());
        b.extend(256u64.to_le_bytes());
        b.extend(id.to_le_bytes());
        b.extend((i as u64 * 1024).to_le_bytes());
    }
    b.resize(b.len().div_ceil(32) * 32 + tensors.len() * 1024, 0);
    b
}

#[test]
fn unsupported_gguf_tensor_types() {
    let dir = scratch("gguf-types");
    let supported = "supported types: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, \
                     Q3_K, Q4_K, Q5_K, Q6_K, Q8_K";
    // The whole message once: the file, the tensor, the type's name and id, what is supported.
    let path = dir.join("iq2.gguf");
    std::fs::write(
        &path,
        gguf_with_types(&[("token_embd.weight", 2), ("blk.0.attn_q.weight", 16)]),
    )
    .unwrap();
    let p = path.to_string_lossy().into_owned();
    BIN.fails_with(
        &["predict", "--model", &p, "x"],
        &format!(
            "loading model {p}: {p}: tensor `blk.0.attn_q.weight` has type IQ2_XXS (GGML type id \
             16), which tokenlens cannot dequantize; {supported}"
        ),
    );
    // The other families llama.cpp writes that candle cannot read, and an id nobody knows.
    for (name, id) in [
        ("IQ1_S", 19),
        ("IQ4_NL", 20),
        ("IQ4_XS", 23),
        ("IQ1_M", 29),
        ("TQ1_0", 34),
        ("TQ2_0", 35),
        ("MXFP4", 39),
    ] {
        let path = dir.join(format!("{name}.gguf"));
        std::fs::write(&path, gguf_with_types(&[("output.weight", id)])).unwrap();
        BIN.fails_mentioning(
            &["predict", "--model", path.to_str().unwrap(), "x"],
            &[
                &format!("{name}.gguf: tensor `output.weight` has type {name} (GGML type id {id})"),
                supported,
            ],
        );
    }
    let path = dir.join("unknown.gguf");
    let three = [
        ("a.weight", 99),
        ("b.weight", 0),
        ("c.weight", 16),
        ("d.weight", 35),
    ];
    std::fs::write(&path, gguf_with_types(&three)).unwrap();
    BIN.fails_mentioning(
        &["predict", "--model", path.to_str().unwrap(), "x"],
        &[
            "unknown.gguf: tensor `a.weight` has GGML type id 99, a type unknown to tokenlens, \
             which tokenlens cannot dequantize (and 2 more tensors of unsupported types)",
            supported,
        ],
    );
}

#[test]
fn bad_prompts_and_options() {
    let m = tiny("tiny-llama");
    let long = "word ".repeat(300);
    BIN.fails_mentioning(
        &["predict", "--model", &m, &long],
        &["prompt 1", "longer than the model's context (128 tokens)"],
    );
    BIN.fails_mentioning(
        &["predict", "--model", &m, "ok", ""],
        &["prompt 2", "has no tokens"],
    );
    let medium = "word ".repeat(60);
    BIN.fails_mentioning(
        &[
            "generate",
            "--model",
            &m,
            "--max-new-tokens",
            "100",
            &medium,
        ],
        &[
            "prompt 0",
            "new tokens exceed the model's context of 128 tokens",
        ],
    );
    BIN.fails_mentioning(
        &["generate", "--model", &m, "--top-p", "1.5", "x"],
        &["--top-p must be in (0, 1]"],
    );
    // Numeric options out of their range (docs/pipelines.md, "Ranges"): NaN and 0 used to be
    // taken silently.
    BIN.fails_with(
        &["generate", "--model", &m, "--temperature", "NaN", "x"],
        "--temperature must be in 0..=100 (0 = greedy), got NaN",
    );
    BIN.fails_with(
        &[
            "generate",
            "--model",
            &m,
            "--temperature",
            "0.7",
            "--top-k",
            "0",
            "x",
        ],
        "--top-k must be at least 1",
    );
    BIN.fails_with(
        &["predict", "--model", &m, "--top-k", "0", "x"],
        "--top-k must be in 1..=1000, got 0",
    );
    // clap's own usage errors exit with 2.
    let o = BIN.output(&["predict", "--model", &m]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn saliency_command_prints_scores_and_json() {
    let dir = scratch("saliency-cli");
    let json = dir.join("s.json");
    let out = BIN.ok(&[
        "saliency",
        "--model",
        &tiny("tiny-gpt2"),
        "--generate",
        "3",
        "--ignore-eos",
        "--method",
        "grad_x_input,ig",
        "--n-steps",
        "8",
        "--json",
        json.to_str().unwrap(),
        "The cat sat",
    ]);
    assert!(
        out.contains("[grad_x_input]")
            && out.contains("[integrated_gradients: GaussLegendre, 8 steps]"),
        "{out}"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = doc["rows"].as_array().unwrap();
    // 3 targets with prefixes of 3, 4 and 5 tokens, 2 methods.
    assert_eq!(rows.len(), 2 * (3 + 4 + 5));
    for m in ["grad_x_input", "integrated_gradients"] {
        for target in 3..6 {
            let total: f64 = rows
                .iter()
                .filter(|r| r["method"] == m && r["target_position"] == target)
                .map(|r| r["score"].as_f64().unwrap())
                .sum();
            assert!(
                (total - 1.0).abs() < 1e-5,
                "{m} target {target}: scores sum to {total}"
            );
        }
    }
    assert_eq!(doc["completeness"].as_array().unwrap().len(), 3);
}

#[test]
fn saliency_bad_options() {
    let m = tiny("tiny-llama");
    BIN.fails_mentioning(
        &["saliency", "--model", &m, "--method", "lime", "x"],
        &["unknown --method `lime`"],
    );
    BIN.fails_mentioning(
        &["saliency", "--model", &m, "--rule", "simpson", "x"],
        &["unknown --rule `simpson`"],
    );
    BIN.fails_mentioning(
        &["saliency", "--model", &m, "--generate", "0", "x"],
        &["--generate must be at least 1"],
    );
    BIN.fails_mentioning(
        &["saliency", "--model", &m, "--n-steps", "0", "x"],
        &["--n-steps must be in 1..=1000, got 0"],
    );
    BIN.fails_mentioning(
        &[
            "saliency",
            "--model",
            &m,
            "--ig-tolerance",
            "0.01",
            "--rule",
            "trapezoid",
            "x",
        ],
        &["--ig-tolerance uses its own nested rule (docs/saliency.md): drop --rule trapezoid"],
    );
}

/// Hub ids resolve from the local Hugging Face cache without the network (HF_HUB_OFFLINE=1).
#[test]
fn hub_id_loads_from_the_local_cache() {
    let home = scratch("hf-home");
    let snap = home.join("hub/models--tiny-org--tiny-llama/snapshots/0123abcd");
    copy_checkpoint("tiny-llama", &snap);
    std::fs::create_dir_all(home.join("hub/models--tiny-org--tiny-llama/refs")).unwrap();
    std::fs::write(
        home.join("hub/models--tiny-org--tiny-llama/refs/main"),
        "0123abcd",
    )
    .unwrap();
    let run = |id: &str| {
        Tokenlens::PLAIN
            .cmd(&["inspect", "--model", id])
            .env("HF_HOME", &home)
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap()
    };
    let o = run("tiny-org/tiny-llama");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["config"]["model_type"], "llama");
    assert!(
        info["path"]
            .as_str()
            .unwrap()
            .ends_with("snapshots/0123abcd")
    );
    let o = run("tiny-org/absent");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("tiny-org/absent: not in the local Hugging Face cache")
            && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
}

/// Messages that name the problem, each exactly, with exit code 1: a YAML file indented with a
/// tab, an empty or cut-short .gguf, `--shards 0`, `--resume` on a directory that never held a
/// run, an HF directory without config.json.
#[test]
fn messages_name_the_problem() {
    let dir = scratch("messages");
    let d = |s: &str| dir.join(s).to_string_lossy().into_owned();
    let data = d("data.jsonl");
    std::fs::write(&data, "{\"text\": \"hi\"}\n").unwrap();
    let spec = |name: &str, body: &str| {
        let p = d(name);
        std::fs::write(
            &p,
            format!(
                "model: {}\ndataset:\n{body}output:\n  dir: out\n",
                tiny("tiny-llama")
            ),
        )
        .unwrap();
        p
    };

    let tab = spec("tab.yaml", "\tpath: data.jsonl\n");
    BIN.fails_with(
        &["validate", &tab],
        &format!(
            "{tab}:3:1: a tab character; YAML indents with spaces only (replace the tab with \
             spaces)"
        ),
    );

    std::fs::write(d("empty.gguf"), b"").unwrap();
    BIN.fails_with(
        &["predict", "--model", &d("empty.gguf"), "x"],
        &format!(
            "loading model {0}: {0}: the file is empty (0 bytes), not a GGUF model",
            d("empty.gguf")
        ),
    );
    std::fs::write(d("short.gguf"), b"GGUF\x03\x00\x00\x00\x01").unwrap();
    BIN.fails_with(
        &["predict", "--model", &d("short.gguf"), "x"],
        &format!(
            "loading model {0}: {0}: the file ends after 9 bytes, inside its GGUF header \
             (truncated?)",
            d("short.gguf")
        ),
    );

    let ok = spec("ok.yaml", "  path: data.jsonl\n");
    BIN.fails_with(
        &["run", "--shards", "0", &ok],
        "--shards must be at least 1, got 0",
    );
    let o = BIN
        .cmd(&["run", "--shards", "0", &ok])
        .env("JOB_COMPLETION_INDEX", "0")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "error: --shards must be at least 1, got 0\n"
    );

    std::fs::create_dir_all(d("out")).unwrap();
    std::fs::write(d("out/notes.txt"), "mine").unwrap();
    BIN.fails_with(
        &["run", "--quiet", "--resume", &ok],
        &format!(
            "--resume: {} holds no run to resume (no manifest.json); run without --resume to \
             start one (output.overwrite: true replaces what the directory holds)",
            d("out")
        ),
    );
    assert_eq!(std::fs::read_to_string(d("out/notes.txt")).unwrap(), "mine");

    std::fs::create_dir_all(d("hf")).unwrap();
    for f in ["tokenizer.json", "model.safetensors"] {
        std::fs::copy(
            data_dir().join("tiny-llama").join(f),
            dir.join("hf").join(f),
        )
        .unwrap();
    }
    BIN.fails_with(
        &["predict", "--model", &d("hf"), "x"],
        &format!(
            "loading model {0}: {0}: no config.json: an HF checkpoint directory holds \
             config.json, tokenizer.json and its *.safetensors weights",
            d("hf")
        ),
    );
}
