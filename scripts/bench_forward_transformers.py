#!/usr/bin/env python3
"""transformers side of the forward benchmark (see benches/forward.rs and scripts/bench_forward.sh).

SmolLM2-135M-Instruct loaded from the same GGUF (dequantized to f32), 8 prompts x 64 tokens (the
same ids as the Rust bench), one forward with the captures tokenlens makes: `--mode all`: hidden
states of every layer, attention probabilities of every layer, the MLP activations (input of
down_proj, via forward pre-hooks) and logits at all positions; `--mode logits`: logits at all
positions only. Prints one JSON line.

Attention (`--attn auto`, the default): transformers' default implementation (sdpa) when no
attention probabilities are asked for (`logits`), eager when they are (`all`: sdpa cannot return
them). The JSON says which one ran ("attn_implementation").

Run with the reference venv ($REFENV_PY, see scripts/lib.sh), normally through scripts/bench_forward.sh:
  $REFENV_PY scripts/bench_forward_transformers.py --gguf "$(scripts/fetch-model.sh)" --threads 1
"""
import argparse
import json
import os
import statistics
import time

import torch
import transformers
from transformers import AutoModelForCausalLM

BATCH, TOKENS = 8, 64


def bench_ids():
    return [[1000 + (r * 104_729 + i * 7_919) % 48_000 for i in range(TOKENS)] for r in range(BATCH)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--mode", choices=["all", "logits"], default="all")
    ap.add_argument("--attn", choices=["auto", "eager", "sdpa"], default="auto",
                    help="auto: eager when attention probabilities are captured (--mode all), else sdpa")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if not os.path.isfile(a.gguf):
        raise SystemExit(f"error: model {a.gguf} not found (scripts/fetch-model.sh fetches it)")
    attn = a.attn if a.attn != "auto" else ("eager" if a.mode == "all" else "sdpa")
    d, f = os.path.split(a.gguf)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32, attn_implementation=attn)
    model.eval()
    acts = []
    if a.mode == "all":
        for layer in model.model.layers:
            layer.mlp.down_proj.register_forward_pre_hook(lambda m, inp: acts.append(inp[0]))
    ids = torch.tensor(bench_ids())
    mask = torch.ones_like(ids)
    times = []
    with torch.inference_mode():
        for i in range(a.repeat + 1):
            acts.clear()
            t0 = time.perf_counter()
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=a.mode == "all",
                        output_attentions=a.mode == "all", use_cache=False)
            _ = out.logits
            dt = time.perf_counter() - t0
            if i > 0:  # first run is warm-up
                times.append(dt)
    med = statistics.median(times)
    print(json.dumps({"impl": "transformers", "torch": torch.__version__, "transformers": transformers.__version__,
                      "threads": a.threads, "mode": a.mode,
                      "attn_implementation": model.config._attn_implementation,
                      "output_attentions": a.mode == "all",
                      "median_s": med, "tokens_per_s": BATCH * TOKENS / med, "runs": len(times)}))


if __name__ == "__main__":
    main()
