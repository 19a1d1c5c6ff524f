#!/usr/bin/env python3
"""transformers' side of the 1B-class benchmark (scripts/bench_1b.sh): one task per process, so
that the peak RSS GNU time measures is that task's. Prints one JSON line.

Tasks (the same work as tokenlens' side; BENCHMARKS.md, "1B-class models", lists the differences):

  forward               B prompts x T tokens (ids 1000 + (r * 104729 + i * 7919) % 48000, as
                        examples/bench_forward.rs), one forward pass with every capture: eager
                        attention (below), output_hidden_states, output_attentions, forward pre-hooks on
                        every mlp.down_proj (the MLP activations), logits at every position.
                        One warm-up pass, then --reps timed passes: best and median tokens/s.
  grad_x_input          S prompts of P tokens (prompt r: the forward formula's first P ids),
  integrated_gradients  G greedy tokens each (EOS not special; not timed), then for every generated
                        token at position p: target f(e) = softmax(logits at p - 1 of s[..p])[s[p]],
                        inputs e = the token embeddings of s[..p] (tokenlens' definition,
                        src/analysis/saliency.rs, docs/saliency.md). grad_x_input: one forward and
                        one backward per target. integrated_gradients: zero baseline, --n-steps
                        Gauss-Legendre nodes on (0, 1) (captum's default rule), all nodes of one
                        target in one batch [n_steps, p, d] (captum's default internal batch), one
                        forward + backward; plus f(e) and f(0) without gradients (tokenlens computes
                        both for its completeness check). Timed: the whole attribution stage
                        (embeddings, passes, attributions and their per-position reductions),
                        after one untimed warm-up attribution of the first target; reported as
                        seconds per generated token. Each target's probability, attribution sum
                        and per-position scores are printed, for the parity check against
                        tokenlens' --json output (scripts/bench_1b_report.py).

Attention (--attn auto, the default): eager for `forward`, which asks for the attention
probabilities (sdpa cannot return them); transformers' default, sdpa, for the saliency tasks,
which do not. The JSON says which one ran ("attn_implementation").

The model is loaded in --dtype (bf16: torch computes in bf16; f32), eval mode,
parameters frozen (requires_grad False: input gradients only, as tokenlens). Gradients come from
torch.autograd.grad (as captum's). The LM head runs at the target's position only
(logits_to_keep=1); captum/Ecco's forward function computes it at every position.

  $REFENV_PY scripts/bench_1b_transformers.py --model DIR --task forward --threads 2 --dtype bf16
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time
import warnings

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM


def bench_ids(batch, tokens):
    return [[1000 + (r * 104_729 + i * 7_919) % 48_000 for i in range(tokens)] for r in range(batch)]


def quadrature(n):
    """Gauss-Legendre nodes and weights on [0, 1] (as captum's gausslegendre and tokenlens)."""
    x, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (x + 1.0), 0.5 * w


def forward_task(model, a):
    acts = []
    for layer in model.model.layers:
        layer.mlp.down_proj.register_forward_pre_hook(lambda m, inp: acts.append(inp[0]))
    ids = torch.tensor(bench_ids(a.batch, a.tokens))
    mask = torch.ones_like(ids)
    times = []
    capture_bytes = 0
    with torch.inference_mode():
        for i in range(a.reps + 1):
            acts.clear()
            t0 = time.perf_counter()
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                        output_attentions=True, use_cache=False)
            _ = out.logits
            dt = time.perf_counter() - t0
            if i == 0:  # warm-up
                warmup = dt
                tensors = [out.logits, *out.hidden_states, *out.attentions, *acts]
                capture_bytes = sum(t.numel() * t.element_size() for t in tensors)
            else:
                times.append(dt)
            del out
    n = a.batch * a.tokens
    best, med = min(times), statistics.median(times)
    return {"batch": a.batch, "tokens": a.tokens, "warmup_s": warmup, "times_s": times, "best_s": best,
            "median_s": med, "tokens_per_s_best": n / best, "tokens_per_s_median": n / med,
            "capture_bytes": capture_bytes}


@torch.no_grad()
def greedy(model, prompt, n_new):
    """n_new greedy tokens with the KV cache; EOS is an ordinary token."""
    ids = torch.tensor([prompt])
    out = model(input_ids=ids, use_cache=True)
    past, seq = out.past_key_values, list(prompt)
    for _ in range(n_new):
        nxt = int(out.logits[0, -1].float().argmax())
        seq.append(nxt)
        out = model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
    return seq


def target_probs(model, x, token):
    """softmax(logits at the last position)[token] for each row of x [n, p, d]."""
    logits = model(inputs_embeds=x, use_cache=False, logits_to_keep=1).logits[:, -1]
    return torch.softmax(logits.float(), dim=-1)[:, token]


def saliency_task(model, a):
    prompts = bench_ids(a.prompts, a.prompt_len)
    t0 = time.perf_counter()
    seqs = [greedy(model, p, a.generate) for p in prompts]
    generate_s = time.perf_counter() - t0
    embed = model.get_input_embeddings()
    alphas, weights = quadrature(a.n_steps)
    dtype = next(model.parameters()).dtype
    alphas_t = torch.tensor(alphas, dtype=dtype)[:, None, None]
    weights_t = torch.tensor(weights, dtype=torch.float32)[:, None, None]

    def attribute(e, token):
        if a.task == "grad_x_input":
            x = e[None].clone().requires_grad_(True)
            prob = target_probs(model, x, token)
            (g,) = torch.autograd.grad(prob.sum(), x)
            attr = g[0].float() * e.float()
            rec = {"prob": float(prob[0].detach())}
        else:
            with torch.no_grad():
                ends = target_probs(model, torch.stack([e, torch.zeros_like(e)]), token)
            x = (alphas_t * e[None]).requires_grad_(True)
            probs = target_probs(model, x, token)
            (g,) = torch.autograd.grad(probs.sum(), x)
            attr = e.float() * (weights_t * g.float()).sum(0)
            rec = {"prob": float(ends[0]), "baseline_prob": float(ends[1])}
        norms = attr.norm(dim=-1)
        rec.update(attribution_sum=float(attr.sum()), scores=(norms / norms.sum()).tolist())
        return rec

    # Warm-up, not timed: the first target once (the first backward pass pays one-time set-up
    # costs; tokenlens' one-time preparation is outside its timer too).
    t0 = time.perf_counter()
    with torch.no_grad():
        e0 = embed(torch.tensor([seqs[0]]))[0]
    attribute(e0[: a.prompt_len], seqs[0][a.prompt_len])
    warmup_s = time.perf_counter() - t0
    per_target = []
    t0 = time.perf_counter()
    for doc, seq in enumerate(seqs):
        with torch.no_grad():
            e_all = embed(torch.tensor([seq]))[0]
        for p in range(a.prompt_len, len(seq)):
            rec = attribute(e_all[:p], seq[p])
            per_target.append({"doc": doc, "position": p, **rec})
    seconds = time.perf_counter() - t0
    n = len(per_target)
    return {"prompts": a.prompts, "prompt_len": a.prompt_len, "generate": a.generate, "n_steps": a.n_steps,
            "rule": "gauss-legendre", "generate_s": generate_s, "warmup_s": warmup_s, "seconds": seconds, "generated_tokens": n,
            "s_per_token": seconds / n, "sequences": seqs, "targets": per_target}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint directory")
    ap.add_argument("--task", required=True, choices=["forward", "grad_x_input", "integrated_gradients"])
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--generate", type=int, default=8)
    ap.add_argument("--n-steps", type=int, default=16)
    ap.add_argument("--attn", choices=["auto", "eager", "sdpa"], default="auto",
                    help="auto: eager when attention probabilities are captured (forward), else sdpa")
    a = ap.parse_args()
    warnings.filterwarnings("ignore", message=".*past_key_values.*")
    torch.set_num_threads(a.threads)
    transformers.logging.set_verbosity_error()
    dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[a.dtype]
    t0 = time.perf_counter()
    if not os.path.isfile(os.path.join(a.model, "config.json")):
        raise SystemExit(f"error: no checkpoint at {a.model} (scripts/make_bench_models.py makes it)")
    attn = a.attn if a.attn != "auto" else ("eager" if a.task == "forward" else "sdpa")
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype, attn_implementation=attn).eval()
    model.requires_grad_(False)
    load_s = time.perf_counter() - t0
    res = forward_task(model, a) if a.task == "forward" else saliency_task(model, a)
    out = {"impl": "transformers", "task": a.task, "dtype": a.dtype, "threads": torch.get_num_threads(),
           "model": a.model, "load_s": load_s, "attn_implementation": model.config._attn_implementation,
           "output_attentions": a.task == "forward", **res,
           "peak_rss_mb_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                        "transformers": transformers.__version__}}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
