#!/usr/bin/env python3
"""Make the golden reference file for tokenlens' interventions during generation on the REAL
default model, SmolLM2-135M-Instruct (the Q4_1 GGUF as transformers loads it, every tensor
dequantized to float32): neuron ablation, mean head ablation and mean-difference steering applied
while generating greedily, with make_intervention_goldens.py's definitions and hooks (imported),
the full sequence recomputed at every step without a KV cache.

Prompts: the first N_PROMPTS = 2 prompts of datasets/quickstart.jsonl, encoded as tokenlens
encodes them (no BOS; the tokenizer checked against tests/data/golden/smollm2.json as
make_paired_dataset.py does). MEAN prompts: the first N_MEAN = 8 prompts of the same file.
POSITIVE / NEGATIVE (steering): 4 short prompts expressing joy / love and 4 expressing anger /
hate (STEER_POSITIVE, STEER_NEGATIVE), also written by this script to datasets/steer-positive.txt
and datasets/steer-negative.txt (one prompt a line) for pipelines. INTERVENTIONS:
  neurons_zero  layer 10, neurons [5, 100, 1000], zero, positions all
  heads_mean    layer 5, head [3], mean over the MEAN prompts, positions all
  steer_diff    layer 8, alpha 8.0, mean-difference vector (token last), positions all
plus `plain` (no edits); N_NEW = 8 new tokens.

What it writes (under tests/data/golden/, relative to the repo root):

  smollm2-interventions.safetensors
      For prompt i (0, 1), k in plain, neurons_zero, heads_mean, steer_diff, U_i = the number of
      ids kept for prompt i (below), d = 576, hd = 64:
        prompt{i}.ids                 i64 [L_i]     the prompt's ids (no BOS)
        prompt{i}.logit_ids           i64 [U_i]     the ids whose logits are kept, ascending: the
                                                    union over k and the 8 steps of each step's
                                                    top-TOP_K (50) ids
        {k}.prompt{i}.generated       i64 [8]       the greedy tokens with intervention k
        {k}.prompt{i}.logits          f32 [8, U_i]  step s: the last position's logits at the ids
                                                    prompt{i}.logit_ids (column j = id
                                                    logit_ids[j]), of the forward of prompt + the
                                                    first s generated tokens
        {k}.prompt{i}.logsumexp       f32 [8]       step s: logsumexp of the FULL last-position
                                                    logits (float64, rounded), so log-probs of
                                                    the kept ids can be checked too
        vectors.steer_diff            f32 [576]     the mean-difference vector
        means.heads_mean              f32 [64]      head 3's slice mean at layer 5
  smollm2-interventions.json
      Generator, the GGUF's sha256, the quickstart dataset's sha256, model facts, texts, ids and
      tokens of the prompts, MEAN / POSITIVE / NEGATIVE texts and ids, INTERVENTIONS,
      DEFINITIONS (make_intervention_goldens.py's plus this file's), the generated texts, the
      checks with their measured values, greedy margins and the steps where one is under 1e-3,
      notes, versions.

Why not full logits: full [8, 49152] f32 logits for 4 runs x 2 prompts would be 12.6 MB (over
the 8 MB budget), so only the union of the top-50 ids of every run and step is kept (a few
hundred ids a prompt); the greedy token of every step is among them by construction.

The script fails loudly (AssertionError, or make_paired_dataset's error exit) if: the tokenizer
does not give tests/data/golden/smollm2.json's ids; the model's shape is not SmolLM2-135M's; a
steering prompt contains a line break; or any check of make_intervention_goldens.py fails (the
hooked forward with no edits vs plain, bit-exact; recompute vs model.generate tokens; each
intervention changes the logits; the KV-cached run with the same hooks, TOL_CACHED scaled by
max(1, max |logit|), same tokens; neurons_zero vs a copy of the model with those down_proj
columns zeroed, same tolerance and tokens).

How to run (a developer does this by hand; CI never runs it), from the repo root:

    $REFENV_PY scripts/make_smollm2_interventions_golden.py

$REFENV_PY is the reference venv's python (default ~/.cache/tokenlens/refenv/bin/python; see
scripts/lib.sh and scripts/README.md); needs torch, transformers, tokenizers, safetensors, gguf,
accelerate, numpy. The GGUF is TOKENLENS_GGUF or scripts/fetch-model.sh's file. CPU, one thread,
float32, eager attention, eval mode: a rerun with the same library versions gives byte-identical
files. Takes ~1 min on 2 cores (51-63 s, 3 runs, 2026-11-30; loading the GGUF ~30 s of it).
"""

import json
import os
import time

os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF progress bar (a plain tqdm)
import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from golden_util import ROOT, deterministic_setup, sha256, write_golden  # noqa: E402
from make_intervention_goldens import (  # noqa: E402
    DEFINITIONS as TINY_DEFINITIONS, MARGIN_WARN, TOL_CACHED, Editor, check_hooked_plain, check_zeroed_weights,
    mean_diff_vector, new_checks, run_interventions, site_means, versions as iv_versions,
)
from make_paired_dataset import check_tokenizer, encode, gguf_path, load_tokenizer  # noqa: E402

GENERATOR = "scripts/make_smollm2_interventions_golden.py"
STEM = "smollm2-interventions"
DATASET = ROOT / "datasets" / "quickstart.jsonl"
STEER_FILES = {"positive": ROOT / "datasets" / "steer-positive.txt",
               "negative": ROOT / "datasets" / "steer-negative.txt"}
N_PROMPTS = 2
N_MEAN = 8
N_NEW = 8
TOP_K = 50
MAX_FILE_BYTES = 8 * 1024 * 1024
STEER_POSITIVE = [
    "I love you with all my heart.",
    "Today is the happiest day of my life!",
    "What a wonderful, joyful surprise.",
    "I adore my friends and I am so grateful for them.",
]
STEER_NEGATIVE = [
    "I hate you with all my heart.",
    "Today is the worst day of my life!",
    "What a disgusting, infuriating mess.",
    "I despise these people and I am furious with them.",
]
INTERVENTIONS = [
    {"name": "neurons_zero",
     "edits": [{"site": "neurons", "layer": 10, "neurons": [5, 100, 1000], "value": "zero", "positions": "all"}]},
    {"name": "heads_mean",
     "edits": [{"site": "heads", "layer": 5, "heads": [3], "value": "mean", "positions": "all",
                "mean_key": "means.heads_mean"}]},
    {"name": "steer_diff",
     "edits": [{"site": "steer", "layer": 8, "alpha": 8.0, "vector": "mean_diff", "token": "last",
                "vector_key": "vectors.steer_diff", "positions": "all"}]},
]

DEFINITIONS = {
    **TINY_DEFINITIONS,
    "model": "SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-model.sh smollm2, or TOKENLENS_GGUF) as transformers "
             "loads it: AutoModelForCausalLM.from_pretrained(dir, gguf_file=..., attn_implementation='eager', "
             "dtype=torch.float32), every tensor dequantized to float32 by gguf-py; eval mode; model_type llama "
             "(block l = model.model.layers[l], neuron site = input of mlp.down_proj, width 1536; head site = input "
             "of self_attn.o_proj, 9 heads x 64, 3 key/value heads)",
    "ids": "AutoTokenizer.from_pretrained(dir, gguf_file=...)(text, add_special_tokens=False).input_ids, no BOS "
           "(as tokenlens encodes prompts for this model; checked against tests/data/golden/smollm2.json); the "
           "same for the MEAN, POSITIVE and NEGATIVE texts",
    "prompts": f"the `text` of the first {N_PROMPTS} rows of datasets/quickstart.jsonl",
    "mean_prompts": f"the `text` of the first {N_MEAN} rows of datasets/quickstart.jsonl",
    "steer_prompts": "POSITIVE = STEER_POSITIVE (joy / love), NEGATIVE = STEER_NEGATIVE (anger / hate), also "
                     "datasets/steer-positive.txt and datasets/steer-negative.txt (one prompt a line, UTF-8, \\n)",
    "kept_logits": f"prompt{{i}}.logit_ids = sorted union over the runs (plain and each intervention) and the "
                   f"{N_NEW} steps of the ids of the {TOP_K} largest last-position logits (torch.topk); "
                   "{k}.prompt{i}.logits[s, j] = that run's step-s logit of id logit_ids[j]; "
                   "{k}.prompt{i}.logsumexp[s] = logsumexp over all 49152 logits of step s (float64, rounded to "
                   "float32)",
}


def versions():
    return iv_versions(["tokenizers", "gguf", "accelerate"])


def write_steer_files():
    for which, texts in (("positive", STEER_POSITIVE), ("negative", STEER_NEGATIVE)):
        assert all("\n" not in t and "\r" not in t and t.strip() == t and t for t in texts), texts
        STEER_FILES[which].write_text("".join(t + "\n" for t in texts), encoding="utf-8")


def main():
    t0 = time.monotonic()
    deterministic_setup()
    gguf = gguf_path()
    gguf_sha = sha256(gguf)
    tok = load_tokenizer(gguf)
    tokenizer_checked = check_tokenizer(tok)
    rows = [json.loads(line) for line in DATASET.read_text().splitlines() if line.strip()]
    prompt_rows, mean_rows = rows[:N_PROMPTS], rows[:N_MEAN]
    prompts = [encode(tok, r["text"]) for r in prompt_rows]
    mean_prompts = [encode(tok, r["text"]) for r in mean_rows]
    positive = [encode(tok, t) for t in STEER_POSITIVE]
    negative = [encode(tok, t) for t in STEER_NEGATIVE]
    write_steer_files()

    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, attn_implementation="eager", dtype=torch.float32
    ).eval()
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.intermediate_size, cfg.vocab_size) == (30, 576, 9, 3, 1536, 49152), cfg
    t_load = time.monotonic() - t0
    ed = Editor(model)
    n_layers, n_heads, hd, D, ffn, vocab = ed.n_layers, ed.n_heads, ed.head_dim, ed.d, ed.ffn, ed.vocab
    assert n_heads * hd == ed.oproj[0].weight.shape[1] == D and ed.down[0].weight.shape[1] == ffn

    checks = new_checks()
    check_hooked_plain(ed, prompts, checks, "smollm2")
    vectors, means = {}, {}
    for iv in INTERVENTIONS:
        for e in iv["edits"]:
            if e.get("vector") == "mean_diff":
                vectors[e["vector_key"]] = mean_diff_vector(ed, positive, negative, e["layer"], e["token"])
            if e.get("value") == "mean":
                cols = e["neurons"] if e["site"] == "neurons" else \
                    [h * hd + j for h in e["heads"] for j in range(hd)]
                means[e["mean_key"]] = site_means(ed, mean_prompts, e["site"], e["layer"], cols)
                again = site_means(ed, mean_prompts[::-1], e["site"], e["layer"], cols)
                err = (again - means[e["mean_key"]]).abs().max().item()
                assert err <= 1e-6, err
                checks["means_recomputed_in_other_order_max_abs"] = max(
                    checks["means_recomputed_in_other_order_max_abs"], err)
    tg = time.monotonic()
    runs, gaps, low, effects = run_interventions(ed, prompts, INTERVENTIONS, vectors, means, N_NEW, checks, "smollm2")
    check_zeroed_weights(ed, prompts, INTERVENTIONS, runs, checks, "smollm2", TOL_CACHED)
    t_gen = time.monotonic() - tg

    tensors = {}
    kept = []
    for i, p in enumerate(prompts):
        ids = torch.cat([lg.topk(TOP_K, dim=-1).indices.reshape(-1) for per in runs.values()
                         for lg in [per[i][1]]]).unique(sorted=True).to(torch.int64)
        for k, per in runs.items():
            t, lg = per[i]
            assert bool(torch.isin(t, ids).all()), (k, i)
            tensors[f"{k}.prompt{i}.generated"] = t
            tensors[f"{k}.prompt{i}.logits"] = lg[:, ids].contiguous()
            tensors[f"{k}.prompt{i}.logsumexp"] = lg.double().logsumexp(-1).float()
        tensors[f"prompt{i}.ids"] = torch.tensor(p, dtype=torch.int64)
        tensors[f"prompt{i}.logit_ids"] = ids
        kept.append(int(ids.numel()))
    tensors.update(vectors)
    tensors.update(means)
    tensors = dict(sorted(tensors.items()))

    def text(ids):
        return tok.decode(ids.tolist() if torch.is_tensor(ids) else ids)

    generated = {k: [{"ids": t.tolist(), "text": text(t)} for t, _ in per] for k, per in runs.items()}
    v = vectors["vectors.steer_diff"]
    notes = [
        "The real default model (the Q4_1 GGUF dequantized to float32 by transformers); the hooks, definitions and "
        "checks are make_intervention_goldens.py's.",
        f"Kept logits: {kept} ids for prompts 0 and 1 (the union of the top-{TOP_K} of 4 runs x {N_NEW} steps), "
        f"instead of 49152 (full logits for every run would be "
        f"{len(runs) * len(prompts) * N_NEW * vocab * 4 / 1e6:.1f} MB).",
        "Continuations: " + "; ".join(f"{k} prompt{i}: {g['text']!r}" for k, per in generated.items()
                                      for i, g in enumerate(per)) + ".",
        f"Greedy margins (top-1 minus top-2 logit) under {MARGIN_WARN:g}: "
        + ("; ".join(f"{x['run']} prompt{x['prompt']} step {x['step']}: {x['margin']:.2e}" for x in low)
           if low else "none") + f". Smallest margin: {min(g for per in gaps.values() for s in per for g in s):.2e}.",
        f"steer_diff's vector: |v| = {v.norm().item():.4f} (block 8's input at the prompts' last positions; alpha 8 "
        f"adds {8 * v.norm().item():.2f}).",
        f"The same interventions through a KV cache with the hooks at absolute positions: same tokens, logits within "
        f"{checks['kv_cached_vs_recompute_max_abs']:.1e} of the stored recompute. neurons_zero == the model with "
        f"layer 10's down_proj columns 5, 100, 1000 zeroed (max |difference| "
        f"{checks['zero_all_positions_vs_zeroed_weights_max_abs']:.1e}).",
    ]
    meta = {
        "model": "SmolLM2-135M-Instruct.Q4_1.gguf (transformers GGUF load, dequantized to float32)",
        "gguf_file": gguf.name,
        "gguf_sha256": gguf_sha,
        "generator": GENERATOR,
        "dataset": "datasets/quickstart.jsonl",
        "dataset_sha256": sha256(DATASET),
        "n_layers": n_layers,
        "n_heads": n_heads,
        "head_dim": hd,
        "d": D,
        "ffn": ffn,
        "vocab": vocab,
        "n_new": N_NEW,
        "top_k": TOP_K,
        "prompts": prompts,
        "prompt_texts": [{"id": r["id"], "text": r["text"]} for r in prompt_rows],
        "prompt_tokens": [tok.convert_ids_to_tokens(p) for p in prompts],
        "prompt_lengths": [len(p) for p in prompts],
        "kept_logit_ids_per_prompt": kept,
        "mean_prompts": mean_prompts,
        "mean_prompt_ids": [r["id"] for r in mean_rows],
        "positive": positive,
        "negative": negative,
        "positive_texts": STEER_POSITIVE,
        "negative_texts": STEER_NEGATIVE,
        "steer_files": {k: str(f.relative_to(ROOT)) for k, f in STEER_FILES.items()},
        "interventions": INTERVENTIONS,
        "runs": list(runs),
        "generated": generated,
        "key_pattern": "prompt{i}.ids i64 [L_i]; prompt{i}.logit_ids i64 [U_i]; {k}.prompt{i}.generated i64 [8]; "
                       "{k}.prompt{i}.logits f32 [8, U_i] (columns: prompt{i}.logit_ids); {k}.prompt{i}.logsumexp "
                       "f32 [8] (k in runs); vectors.steer_diff f32 [576]; means.heads_mean f32 [64]",
        "definitions": DEFINITIONS,
        "effects": effects,
        "greedy_margins": {k: [[round(g, 6) for g in s] for s in per] for k, per in gaps.items()},
        "greedy_margin_warnings": low,
        "checks": {
            "measured": checks,
            "tokenizer_checked_against": f"tests/data/golden/smollm2.json ({len(tokenizer_checked)} prompts)",
            "performed": [
                "the tokenizer gives tests/data/golden/smollm2.json's ids (make_paired_dataset.check_tokenizer)",
                "the model's shape is SmolLM2-135M's (30 layers, d 576, 9 heads, 3 kv heads, 1536, vocab 49152)",
                "the hooked forward with no edits (and with an edit no hook matches) == a forward with the hooks "
                "removed: bit-identical logits",
                "the recompute-every-step plain generation == model.generate(do_sample=False, eos_token_id=None) "
                "(KV cache) tokens",
                "every intervention applies at least one edit and changes the step logits of at least one prompt",
                "heads_mean's mean recomputed with the MEAN prompts in reverse order (1e-6)",
                f"every run through a KV cache with the hooks at absolute positions: same tokens, logits within "
                f"{TOL_CACHED:g} x max(1, max |logit|) of the recompute",
                "neurons_zero == a copy of the model with layer 10's down_proj columns [5, 100, 1000] zeroed: same "
                f"tokens, logits within {TOL_CACHED:g} x max(1, max |logit|)",
                "every run's greedy tokens are among the kept ids",
            ],
        },
        "notes": notes,
        "dtype": "float32",
        "attn_implementation": "eager",
        "versions": versions(),
    }
    path = write_golden(STEM, tensors, meta, GENERATOR)
    size = path.stat().st_size
    assert size < MAX_FILE_BYTES, (path, size)
    print(f"  wrote {path.relative_to(ROOT)} ({size} bytes), {STEM}.json, datasets/steer-{{positive,negative}}.txt")
    for k, per in generated.items():
        for i, g in enumerate(per):
            print(f"  {k} prompt{i}: {g['text']!r}")
    print(f"  low margins: {low}")
    print(f"  checks: {json.dumps(checks)}")
    print(f"done in {time.monotonic() - t0:.0f} s (model load {t_load:.0f} s, generation and checks {t_gen:.0f} s); "
          f"versions: {json.dumps(versions())}")


if __name__ == "__main__":
    main()
