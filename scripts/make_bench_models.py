#!/usr/bin/env python3
"""Random-weight checkpoints of real model shapes, for the 1B-class benchmark (scripts/bench_1b.sh).

Two checkpoints, each built by transformers from a config written below (the real models' shapes;
the values of the weights do not change speed or memory), initialized by transformers' own
`_init_weights` after `torch.manual_seed(SEED)`, saved as bf16 safetensors with config.json and a
tokenizer.json:

  llama-1b     Llama-3.2-1B: hidden 2048, 16 layers, 32 heads / 8 kv heads (head_dim 64),
               intermediate 8192, vocab 128256, rope_theta 500000 with llama3 rope scaling
               (factor 32, original context 8192), max_position_embeddings 131072, tied embeddings;
               config.json in the Hub's layout (top-level rope_theta + rope_scaling).
  qwen2-0.5b   Qwen2.5-0.5B: hidden 896, 24 layers, 14 heads / 2 kv heads (head_dim 64),
               intermediate 4864, vocab 151936, q/k/v biases, rope_theta 1e6,
               max_position_embeddings 32768, tied embeddings, no sliding window.

The tokenizer is a WordLevel vocabulary of one word per id, "t0" .. "t{vocab-1}", split on
whitespace, no special tokens added: the text "t1000 t8919" encodes to exactly [1000, 8919], so
both sides of the benchmark can be given the same token ids as text (tokenlens saliency takes
prompts) or as ids (transformers).

Output: $TOKENLENS_CACHE/bench-models/{llama-1b,qwen2-0.5b}/ (TOKENLENS_CACHE defaults to
~/.cache/tokenlens, as in scripts/lib.sh) plus a bench-model.json per model (parameter count,
weight bytes per dtype, seed, versions). Made once: a directory whose bench-model.json exists is
left as it is (--force rebuilds). Each model is written to a temporary directory and renamed.

  "$REFENV_PY" scripts/make_bench_models.py [--only llama-1b,qwen2-0.5b] [--force]

~1.5 min and ~3.5 GB of disk for both (llama-1b: 2.5 GB, qwen2-0.5b: 1.0 GB of bf16 weights).
"""
import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

SEED = 0


def llama_1b():
    return LlamaConfig(
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        hidden_act="silu",
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        initializer_range=0.02,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=True,
        bos_token_id=128000,
        eos_token_id=128001,
    )


def qwen2_05b():
    return Qwen2Config(
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        hidden_act="silu",
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        initializer_range=0.02,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        use_sliding_window=False,
        tie_word_embeddings=True,
        bos_token_id=151643,
        eos_token_id=151643,
    )


# name -> (config builder, config.json layout)
#   "hub": top-level rope_theta + rope_scaling (how Llama 3.2's config.json on the Hub has it)
#   "v5":  transformers 5's rope_parameters plus a top-level rope_theta (Qwen2.5's has rope_theta)
MODELS = {
    "llama-1b": (llama_1b, "hub"),
    "qwen2-0.5b": (qwen2_05b, "v5"),
}


def rewrite_config(path, layout):
    cfg = json.loads(path.read_text())
    rp = dict(cfg.pop("rope_parameters"))
    if layout == "hub":
        cfg["rope_theta"] = rp.pop("rope_theta")
        if rp.get("rope_type", "default") != "default":
            cfg["rope_scaling"] = rp
    else:
        cfg["rope_parameters"] = rp
        cfg["rope_theta"] = rp["rope_theta"]
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def word_tokenizer(vocab_size):
    """WordLevel: "t{i}" -> i for every id, whitespace-split, nothing added or stripped."""
    vocab = {f"t{i}": i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


def build(name, out_root, force):
    make_config, layout = MODELS[name]
    out = out_root / name
    if (out / "bench-model.json").exists() and not force:
        print(f"{name}: exists at {out}")
        return
    t0 = time.time()
    cfg = make_config()
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).eval()
    n_params = sum(p.numel() for p in model.parameters())  # a tied head counted once
    tmp = out_root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    for extra in ("generation_config.json",):
        (tmp / extra).unlink(missing_ok=True)
    rewrite_config(tmp / "config.json", layout)
    tok = word_tokenizer(cfg.vocab_size)
    tok.save(str(tmp / "tokenizer.json"))
    assert tok.encode("t1000 t8919 t0").ids == [1000, 8919, 0]
    assert tok.encode(f"t{cfg.vocab_size - 1}").ids == [cfg.vocab_size - 1]
    st_bytes = sum(f.stat().st_size for f in tmp.glob("*.safetensors"))
    info = {
        "name": name,
        "shape_of": {"llama-1b": "meta-llama/Llama-3.2-1B", "qwen2-0.5b": "Qwen/Qwen2.5-0.5B"}[name],
        "parameters": n_params,
        "weight_bytes": {"bf16": 2 * n_params, "f16": 2 * n_params, "f32": 4 * n_params},
        "safetensors_bytes": st_bytes,
        "seed": SEED,
        "init": "transformers' _init_weights (normal, std initializer_range; norms 1; biases 0)",
        "tokenizer": "WordLevel t0..t{vocab-1}, whitespace split, no special tokens added",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    (tmp / "bench-model.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"{name}: {n_params / 1e9:.3f} B parameters, {st_bytes / 1e9:.2f} GB safetensors, "
          f"{time.time() - t0:.0f} s -> {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    ap.add_argument("--force", action="store_true", help="rebuild even if present")
    a = ap.parse_args()
    cache = Path(os.environ.get("TOKENLENS_CACHE") or Path.home() / ".cache" / "tokenlens")
    out_root = cache / "bench-models"
    out_root.mkdir(parents=True, exist_ok=True)
    transformers.logging.set_verbosity_error()
    for name in a.only.split(","):
        if name not in MODELS:
            sys.exit(f"unknown model {name!r} (known: {', '.join(MODELS)})")
        build(name, out_root, a.force)


if __name__ == "__main__":
    main()
