#!/usr/bin/env python3
"""Make tokenlens' tiny test checkpoints and the golden reference outputs.

What it writes (all under tests/data/, relative to the repo root):

  tiny-gpt2/, tiny-llama/, tiny-qwen2/
      Tiny random-weight Hugging Face checkpoints (config.json, model.safetensors,
      generation_config.json, tokenizer.json, tokenizer_config.json), all sharing one
      512-token byte-level BPE tokenizer trained here on the inline TRAIN_TEXT.
  golden/tiny-gpt2.{safetensors,json}, golden/tiny-llama.*, golden/tiny-qwen2.*
      Reference activations from transformers for TINY_PROMPTS, key `p{i}.<name>`:
        input_ids [T] i64, resid [L+1,T,d] (0 = embedding output entering block 0,
        l+1 = output of block l, before the final norm), final_hidden [T,d] (after
        the final norm), mlp_act [L,T,ffn] (input of the MLP output projection),
        attn [L,H,T,T], logits [T,V], target [1] i64 (argmax at last position),
        grad_logprob / grad_prob [T,d] (d/d token-embeddings of log p / p of target
        at the last position), greedy [8] i64 (greedy continuation).
  tiny-llama3/, tiny-llama-linear/, tiny-llama-yarn/, tiny-llama-dynamic/
      Tiny Llama checkpoints with RoPE scaling (rope_type llama3, linear, yarn, dynamic; see
      ROPE_MODELS), same tokenizer; head_dim 32 != hidden 32 / 4 heads, GQA, tied head.
  golden/tiny-llama3.{safetensors,json}, golden/tiny-llama-{linear,yarn,dynamic}.*
      The same keys as the tiny goldens for ROPE_PROMPTS (TINY_PROMPTS plus ROPE_LONG_PROMPT,
      43 tokens, past every original context), plus rope_cos / rope_sin [T,head_dim] and
      rope_inv_freq [head_dim/2] (what the model's rotary_emb gave for positions 0..T-1 of the
      longest prompt) and, for dynamic, gen_rope_cos / gen_rope_sin [T+7,head_dim] (row p: the
      cos/sin position p was rotated with during cached generation). The JSON sidecar's "rope"
      block states transformers' formula for the type and (dynamic) its update rule.
  golden/smollm2.{safetensors,json}
      Reference outputs for SmolLM2-135M-Instruct (the Q4_1 GGUF, as loaded and
      dequantized to f32 by transformers) for SMOL_PROMPTS: input_ids, logits_last [V],
      resid_sel [6,T,576] at RESID_SEL, mlp_act_l0, attn_l0, attn_l29, greedy [10],
      grad_logprob [T,576].

Every JSON sidecar records the prompts, input_ids, greedy tokens and library versions.

How to run (a developer does this by hand; CI never runs it), from the repo root:

    $REFENV_PY scripts/make_goldens.py

$REFENV_PY is the reference venv's python (default ~/.cache/tokenlens/refenv/bin/python; see
scripts/lib.sh and scripts/README.md). The SmolLM2 GGUF path comes
from scripts/fetch-model.sh (override with TOKENLENS_GGUF=/path/to/file.gguf); pass
--skip-smollm2 to only make the tiny models. Everything is seeded and runs on CPU with
one thread, so reruns with the same library versions give byte-identical files.
"""

import argparse
import copy
import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import torch

import transformers
import tokenizers
import safetensors
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from golden_util import DATA, GOLDEN, ROOT, SEED, assert_close, deterministic_setup, greedy, load_tiny, write_golden
from golden_util import argmax_loop, generate_greedy
from golden_util import versions as lib_versions

GENERATOR = "scripts/make_goldens.py"
TOL = 1e-4              # cross-checks against transformers' own outputs (scaled by max(1, max |b|))
INIT_STD = 0.2          # config.initializer_range: large enough that activations are not tiny
NORM_JITTER = 0.1       # norm weights = 1 + NORM_JITTER * randn (so a dropped norm weight is caught)
BIAS_STD = 0.1          # GPT-2 LayerNorm / linear biases
QKV_BIAS_STD = 0.3      # Qwen2 q/k/v biases
VOCAB_SIZE = 512
EOT = "<|endoftext|>"   # id 0; bos = eos for the tiny models

TINY_PROMPTS = [
    "The cat sat",
    "Once upon a time there was a",
    "In 1999, 42 people walked 7 miles to the old river bank.",
]
TINY_GREEDY_NEW = 8

# The RoPE-scaling models run TINY_PROMPTS plus this one: 43 tokens, so the prompt itself (and
# its continuation, to position 50) goes past every original context below (40 and 16).
ROPE_LONG_PROMPT = ("Once upon a time there was a little house by the old river bank, "
                    "and in the house there lived a cat, a dog and a mouse.")
ROPE_PROMPTS = TINY_PROMPTS + [ROPE_LONG_PROMPT]
ROPE_TOL = 1e-5         # transformers' float32 cos/sin tables vs the float64 formulas below

SMOL_PROMPTS = [
    "The capital of France is",
    "Hello world, the cat sat",
    "def fibonacci(n):",
    "In 2024, 17 scientists",
]
SMOL_EXPECTED_IDS = {1: [19556, 905, 28, 260, 2644, 2643]}
RESID_SEL = [0, 1, 2, 15, 29, 30]
SMOL_GREEDY_NEW = 10

# A few KB of English (with digits, punctuation and a little non-ASCII) to train the
# tiny byte-level BPE on. Changing it changes the tokenizer and therefore every golden.
TRAIN_TEXT = """\
The cat sat on the mat. The dog sat on the log. Once upon a time there was a little
house by the old river bank, and in the house there lived a cat, a dog and a mouse.
Every morning the cat woke up at 7 o'clock, walked 3 miles to the market and came
back with 12 fish, 4 apples and a loaf of bread. "Why do you walk so far?" asked the
dog. "Because the fish are fresher there," said the cat, "and the baker is kind."
In 1999, 42 people walked 7 miles to the old river bank to watch the sun rise. They
brought tea, coffee, and 100 sandwiches; nobody was hungry by 9:30 a.m.
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs!
How vexingly quick daft zebras jump. Sphinx of black quartz, judge my vow.
It was the best of times, it was the worst of times, it was the age of wisdom, it was
the age of foolishness, it was the epoch of belief, it was the epoch of incredulity.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28
29 30 31 32 64 100 128 256 512 1000 1024 2024 2048 4096 65536 3.14159 2.71828 -1 +1.
Dates such as 2024-01-15, 12/31/1999 and 07:45:00 appear in logs, tables and reports.
Punctuation matters: commas, periods. Semicolons; colons: dashes - and (parentheses),
[brackets], {braces}, <angle brackets>, "double quotes", 'single quotes', slashes /
and back\\slashes, question marks? exclamation marks! ellipses... hash # at @ and &
percent % dollars $5.99 carets ^ stars * underscores _ equals = pipes | tildes ~.
A tokenizer splits text into tokens, and a language model predicts the next token.
The model reads the prompt, builds a residual stream, and every layer adds to it.
Attention lets each position look at the earlier positions; the MLP then transforms
each position on its own. At the end, a final norm and an unembedding give logits.
def fibonacci(n):
    if n < 2:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)
for i in range(10):
    print(i, fibonacci(i))
The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is
Madrid, the capital of Germany is Berlin, and the capital of Japan is Tokyo.
She said that they would meet at the station at half past four, but the train was late
and they did not arrive until six. Then they walked along the river to the old bridge,
where a man was selling flowers, newspapers and hot chestnuts from a small cart.
Water boils at 100 degrees Celsius and freezes at 0 degrees; the café served crème
brûlée for €4.50, and the naïve tourist paid 5 euros anyway.
There were 365 days in the year, 24 hours in a day, 60 minutes in an hour and 60
seconds in a minute. A week has 7 days; a year has 12 months and 52 weeks.
Hello world! Hello, world. hello again, World? HELLO!!! Good morning, good evening,
good night. Thank you very much. You are welcome. See you later.
The old man and the sea. The sun also rises. A tale of two cities. War and peace.
Pride and prejudice. The river flows to the sea, and the sea is wide and deep.
If x = 3 and y = 4, then x + y = 7, x * y = 12, and the square root of x^2 + y^2 is 5.
"""


def versions():
    return lib_versions([torch, transformers, tokenizers, safetensors, np], ["gguf", "accelerate"])


# --------------------------------------------------------------------------- tokenizer


def train_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TRAIN_TEXT.splitlines(keepends=True), trainer=trainer)
    return tok


def make_tokenizer():
    tok = train_tokenizer()
    again = train_tokenizer()
    assert tok.to_str() == again.to_str(), "BPE training is not deterministic"
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
    assert tok.token_to_id(EOT) == 0
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT, add_prefix_space=False
    )
    for p in ROPE_PROMPTS:
        ids = fast(p).input_ids
        assert ids == tok.encode(p).ids and 0 not in ids, (p, ids)
        assert fast.decode(ids) == p, (p, fast.decode(ids))
    return fast


# --------------------------------------------------------------------------- tiny models


def tiny_configs(vocab):
    common = dict(vocab_size=vocab, initializer_range=INIT_STD, bos_token_id=0, eos_token_id=0)
    gpt2 = GPT2Config(
        n_embd=64, n_head=4, n_layer=3, n_positions=128,
        activation_function="gelu_new", tie_word_embeddings=True, **common,
    )
    llama = LlamaConfig(
        hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=3,
        intermediate_size=128, rms_norm_eps=1e-5, max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False, hidden_act="silu", **common,
    )
    qwen2 = Qwen2Config(
        hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
        intermediate_size=128, rms_norm_eps=1e-6, max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        tie_word_embeddings=True, hidden_act="silu", use_sliding_window=False, **common,
    )
    return [
        ("tiny-gpt2", GPT2LMHeadModel, gpt2),
        ("tiny-llama", LlamaForCausalLM, llama),
        ("tiny-qwen2", Qwen2ForCausalLM, qwen2),
    ]


# The RoPE-scaling models: one small Llama shape (head_dim 32 != hidden 32 / 4 heads, GQA 4:2,
# head tied to the embedding as in Llama 3.2), one checkpoint per rope type.
ROPE_ARCH = dict(
    hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_hidden_layers=2,
    intermediate_size=64, rms_norm_eps=1e-5, tie_word_embeddings=True, hidden_act="silu",
)
# (name, max_position_embeddings, rope_parameters, config.json layout)
#   llama3: with head_dim 32 and theta 5e5 the wavelengths 2 pi / inv_freq are 6.3, 14.3, 32.4,
#     73.6, ...; original context 40 puts the first in the high band (< 40/4 = 10: kept), the next
#     two in the medium band (10..40: smoothed) and 13 in the low band (> 40: divided by 8).
#   yarn: max_position_embeddings = factor * original, so transformers' consistency check is quiet.
#   dynamic: max_position_embeddings 16, so prompts 2 and 3 (23, 43 tokens) start past it and
#     prompt 1 (12 tokens) crosses it during generation.
# Layouts: "hub" = how transformers 4.x wrote it and Llama 3.x checkpoints on the Hub have it
# (top-level rope_theta + "rope_scaling"); "v5" = transformers 5's "rope_parameters" (with
# rope_theta inside) plus the top-level rope_theta (add_legacy_rope_theta).
ROPE_MODELS = [
    ("tiny-llama3", 320, {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 40}, "hub"),
    ("tiny-llama-linear", 128, {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}, "v5"),
    ("tiny-llama-yarn", 64, {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                             "original_max_position_embeddings": 16}, "v5"),
    ("tiny-llama-dynamic", 16, {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 4.0}, "v5"),
]


def rope_configs(vocab):
    common = dict(vocab_size=vocab, initializer_range=INIT_STD, bos_token_id=0, eos_token_id=0)
    return [
        (name, LlamaConfig(max_position_embeddings=max_pos, rope_parameters=dict(rp), **ROPE_ARCH, **common), rp, layout)
        for name, max_pos, rp, layout in ROPE_MODELS
    ]


def is_norm(name, p):
    return p.dim() == 1 and ("norm" in name or ".ln_" in name or name.startswith("transformer.ln_f"))


@torch.no_grad()
def init_weights(model, seed):
    """Explicit, order-independent init: every parameter from its own seeded generator,
    so the weights do not depend on how a transformers version orders its own init."""
    std = model.config.initializer_range
    for i, (name, p) in enumerate(sorted(model.named_parameters())):  # tied params listed once
        g = torch.Generator().manual_seed(seed * 1000 + i)
        r = torch.randn(p.shape, generator=g, dtype=torch.float32)
        if is_norm(name, p) and name.endswith("weight"):
            p.copy_(1.0 + NORM_JITTER * r)
        elif name.endswith("bias"):
            s = QKV_BIAS_STD if any(k in name for k in ("q_proj", "k_proj", "v_proj")) else BIAS_STD
            p.copy_(s * r)
        else:
            p.copy_(std * r)
    # GPT-2 has attention-mask buffers etc., nothing random; rotary inv_freq is derived.


def save_checkpoint(name, cls, cfg, tok, seed, layout="v5"):
    out = DATA / name
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = cls(cfg)
    init_weights(model, seed)
    model.eval()
    # Generation defaults for this checkpoint: eos_token_id stays 0 as in config.json.
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    # Extra files transformers may write that tokenlens does not need; keep the dir small.
    for extra in ("special_tokens_map.json", "chat_template.jinja"):
        (out / extra).unlink(missing_ok=True)
    add_legacy_rope_theta(out / "config.json")
    if layout == "hub":
        hub_rope_layout(out / "config.json")
    return out


def add_legacy_rope_theta(path):
    """transformers 5 writes rope_theta inside "rope_parameters"; most checkpoints in the
    wild (written by transformers 4.x) have a top-level "rope_theta". Write both so the
    Rust loader is exercised on the common layout; transformers reads either."""
    cfg = json.loads(path.read_text())
    rp = cfg.get("rope_parameters")
    if isinstance(rp, dict) and "rope_theta" in rp and "rope_theta" not in cfg:
        cfg["rope_theta"] = rp["rope_theta"]
        path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def hub_rope_layout(path):
    """Rewrites config.json's RoPE keys the way transformers 4.x wrote them (and Llama 3.x
    checkpoints on the Hub have them): top-level "rope_theta" and "rope_scaling" (the other
    parameters, "rope_type" included), no "rope_parameters". transformers 5 reads it back into
    the same rope_parameters (checked after loading)."""
    cfg = json.loads(path.read_text())
    rp = dict(cfg.pop("rope_parameters"))
    cfg["rope_theta"] = rp.pop("rope_theta")
    cfg["rope_scaling"] = rp
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- RoPE scaling

# transformers' formulas, as in the installed version's src/transformers/modeling_rope_utils.py
# (5.24.0), stated for the sidecars. d = rotary dim = head_dim (partial_rotary_factor 1),
# theta = rope_theta, i = 0 .. d/2-1, inv_i = theta^(-2i/d) (the "default" frequencies), all in
# float32 there. Every layer's q and k are rotated with cos/sin of position * inv_freq (rotate_half
# layout, the d/2 angles repeated twice), cos and sin both multiplied by attention_scaling.
ROPE_FORMULAS = {
    "linear": "_compute_linear_scaling_rope_parameters: inv_freq = inv_i / factor; attention_scaling 1. "
              "(Same as dividing positions by factor.)",
    "llama3": "_compute_llama3_parameters: L = original_max_position_embeddings, "
              "low_wavelen = L / low_freq_factor, high_wavelen = L / high_freq_factor, wavelen_i = 2 pi / inv_i; "
              "wavelen > low_wavelen: inv_i / factor; wavelen < high_wavelen: inv_i; otherwise (medium, both "
              "bounds inclusive) s = (L / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor), "
              "inv = (1 - s) * inv_i / factor + s * inv_i. attention_scaling 1. max_position_embeddings unused "
              "(only a validation warning if L >= it).",
    "yarn": "_compute_yarn_parameters: L = original_max_position_embeddings, factor as given (only if factor is "
            "None: max_position_embeddings / L); beta_fast = 32, beta_slow = 1 when absent (or 0/None); "
            "corr_dim(r) = d * ln(L / (r * 2 pi)) / (2 ln theta); low = max(floor(corr_dim(beta_fast)), 0), "
            "high = min(ceil(corr_dim(beta_slow)), d - 1) (no floor/ceil if truncate=false; default true); "
            "if low == high: high += 0.001; ramp_i = clamp((i - low) / (high - low), 0, 1) for i in 0..d/2-1; "
            "e_i = 1 - ramp_i; inv = (inv_i / factor) * (1 - e_i) + inv_i * e_i (e = 1: unchanged, e = 0: "
            "divided by factor). attention_scaling = attention_factor if given, else 0.1 * ln(factor) + 1 "
            "(1 if factor <= 1); if mscale and mscale_all_dim are both given: "
            "(0.1 * mscale * ln(factor) + 1) / (0.1 * mscale_all_dim * ln(factor) + 1). cos and sin are "
            "multiplied by attention_scaling, so q.k (and the attention logits) are scaled by attention_scaling^2.",
    "dynamic": "_compute_dynamic_ntk_parameters(seq_len): M = max_position_embeddings, s = max(seq_len, M), "
               "theta' = theta * (factor * s / M - (factor - 1)) ^ (d / (d - 2)), inv = theta'^(-2i/d); "
               "attention_scaling 1. With s = M (at init) this is the default inv_i.",
}

DYNAMIC_NOTES = [
    "Update rule (modeling_rope_utils.dynamic_rope_update -> dynamic_frequency_update, run at the start of "
    "every rotary_emb forward, i.e. once per model forward): seq_len = max(position_ids) + 1 over the whole "
    "call (the batch included: with left padding the longest row decides for every row). The module keeps "
    "state: max_seq_len_cached (starts at max_position_embeddings M) and inv_freq. If seq_len > "
    "max_seq_len_cached: inv_freq = _compute_dynamic_ntk_parameters(seq_len), max_seq_len_cached = seq_len. "
    "If seq_len < M and max_seq_len_cached > M: back to the original inv_freq, max_seq_len_cached = M. "
    "Otherwise inv_freq is kept as it is.",
    "So a forward of T <= M tokens uses the original frequencies; a forward of T > M tokens on a fresh module "
    "uses the frequencies for seq_len = T, for all its positions.",
    "Cached generation (model.generate, KV cache): the prefill (positions 0..T-1) uses s = max(M, T); each "
    "decode step is one forward with position_ids = [p], so seq_len = p + 1 and, once p + 1 > max(M, T), the "
    "frequencies are recomputed for s = p + 1 at every step. Keys already in the cache are NOT re-rotated: "
    "position p's key (and query) keep the frequencies of the forward that computed them, s_p = max(M, T) for "
    "p < T and s_p = max(M, p + 1) for p >= T ('rope_seq_len' below lists s_p per prompt; gen_rope_cos / "
    "gen_rope_sin hold the resulting rows for the longest prompt). 'greedy' is that cached generation.",
    "A no-cache argmax loop (a full forward of the whole sequence each step, on a fresh module) rotates every "
    "position with s = max(M, current length) instead; its tokens are 'greedy_nocache' (they differ from "
    "'greedy' when listed in 'greedy_nocache_differs').",
    "The state carries across calls: after a forward with seq_len = S > M, a later forward with M <= seq_len <= S "
    "keeps S's frequencies (stale), and one with seq_len < M resets. These goldens avoid that: the rotary state "
    "is reset (inv_freq = original_inv_freq, max_seq_len_cached = M) before each prompt's forward, its gradient "
    "forward, its generate call and each forward of the no-cache loop, so each golden is what a freshly loaded "
    "model gives for that prompt alone (batch of 1).",
]


def ref_rope(rp, head_dim, max_pos, seq_len=None):
    """float64 re-statement of transformers' RoPE init functions (ROPE_FORMULAS): (inv_freq [d/2],
    attention_scaling), checked against what the loaded model uses."""
    d, theta, t = head_dim, rp["rope_theta"], rp["rope_type"]
    j = np.arange(0, d, 2, dtype=np.float64) / d
    inv = theta ** -j
    if t == "linear":
        return inv / rp["factor"], 1.0
    if t == "dynamic":
        s = max(seq_len or max_pos, max_pos)
        base = theta * (rp["factor"] * s / max_pos - (rp["factor"] - 1)) ** (d / (d - 2))
        return base ** -j, 1.0
    if t == "llama3":
        f, lo, hi, L = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"], rp["original_max_position_embeddings"]
        wl = 2 * math.pi / inv
        smooth = (L / wl - lo) / (hi - lo)
        out = np.where(wl > L / lo, inv / f, inv)
        return np.where((wl >= L / hi) & (wl <= L / lo), (1 - smooth) * inv / f + smooth * inv, out), 1.0
    if t == "yarn":
        f, L = rp["factor"], rp["original_max_position_embeddings"]
        low, high = yarn_range(rp, d)
        if low == high:
            high += 0.001
        e = 1 - np.clip((np.arange(d // 2) - low) / (high - low), 0, 1)
        att = rp.get("attention_factor") or (0.1 * math.log(f) + 1 if f > 1 else 1.0)
        return inv / f * (1 - e) + inv * e, att
    raise ValueError(t)


def yarn_range(rp, d):
    L, theta = rp["original_max_position_embeddings"], rp["rope_theta"]
    def corr_dim(r):
        return d * math.log(L / (r * 2 * math.pi)) / (2 * math.log(theta))
    return max(math.floor(corr_dim(rp.get("beta_fast") or 32)), 0), min(math.ceil(corr_dim(rp.get("beta_slow") or 1)), d - 1)


def ref_tables(inv, att, positions):
    """cos, sin [len(positions), d] as transformers builds them (angles repeated twice, times att)."""
    ang = np.asarray(positions, dtype=np.float64)[:, None] * inv[None, :]
    ang = np.concatenate([ang, ang], axis=1)
    return np.cos(ang) * att, np.sin(ang) * att


class RopeRecorder:
    """For the RoPE-scaling goldens: records every rotary_emb call (positions, cos, sin, inv_freq),
    resets the dynamic state between calls (see DYNAMIC_NOTES), checks the tables against
    ref_rope, and collects the extra tensors and the sidecar's "rope" block."""

    def __init__(self, model, intended, table_prompt):
        cfg = model.config
        self.model, self.rotary = model, model.model.rotary_emb
        self.rp = dict(cfg.rope_parameters)
        assert self.rp == intended, f"config.json read back as {self.rp}, not {intended}"
        self.head_dim, self.max_pos = cfg.head_dim, cfg.max_position_embeddings
        self.dynamic = self.rp["rope_type"] == "dynamic"
        self.table_prompt = table_prompt
        self.calls, self.tensors, self.seq_lens, self.nocache, self.gen_vs_nocache = [], {}, [], [], []
        self.vs_default = []
        self.handle = self.rotary.register_forward_hook(self._hook, with_kwargs=True)
        inv, att = ref_rope(self.rp, self.head_dim, self.max_pos)
        assert_close(self.rotary.inv_freq.double(), torch.from_numpy(inv), "inv_freq at load", ROPE_TOL)
        assert abs(self.rotary.attention_scaling - att) < 1e-12, (self.rotary.attention_scaling, att)

    def _hook(self, _m, args, kwargs, out):
        pos = kwargs["position_ids"] if "position_ids" in kwargs else args[1]
        assert pos.shape[0] == 1
        self.calls.append((pos[0].clone(), out[0][0].detach().clone(), out[1][0].detach().clone(),
                           self.rotary.inv_freq.detach().clone()))

    def fresh(self):
        """A freshly loaded model's rotary state (only the dynamic type has any)."""
        r = self.rotary
        if self.dynamic:
            r.register_buffer("inv_freq", r.original_inv_freq.clone(), persistent=False)
            r.max_seq_len_cached = r.original_max_seq_len
        else:
            assert torch.equal(r.inv_freq, r.original_inv_freq)
        self.calls.clear()

    def seq_len_rule(self, T, n_positions):
        """s_p per position in cached generation (DYNAMIC_NOTES); the static types ignore it."""
        return [max(self.max_pos, T if p < T else p + 1) for p in range(n_positions)]

    def check(self, calls, seq_lens, what):
        pos = torch.cat([c[0] for c in calls])
        assert torch.equal(pos, torch.arange(len(seq_lens))), (what, pos.tolist())
        cos, sin = torch.cat([c[1] for c in calls]), torch.cat([c[2] for c in calls])
        rows_c, rows_s = [], []
        for p, s in enumerate(seq_lens):
            inv, att = ref_rope(self.rp, self.head_dim, self.max_pos, seq_len=s)
            c, sn = ref_tables(inv, att, [p])
            rows_c.append(c), rows_s.append(sn)
        assert_close(cos.double(), torch.from_numpy(np.concatenate(rows_c)), f"{what} cos", ROPE_TOL)
        assert_close(sin.double(), torch.from_numpy(np.concatenate(rows_s)), f"{what} sin", ROPE_TOL)
        return cos, sin

    def forward_done(self, i, T):
        """After prompt i's forward: one rotary call for positions 0..T-1, with s = max(M, T)."""
        assert len(self.calls) == 1, len(self.calls)
        cos, sin = self.check(self.calls, [max(self.max_pos, T)] * T, f"p{i} forward")
        if i == self.table_prompt:
            inv_used = self.calls[0][3]
            inv, _ = ref_rope(self.rp, self.head_dim, self.max_pos, seq_len=T)
            assert_close(inv_used.double(), torch.from_numpy(inv), f"p{i} inv_freq", ROPE_TOL)
            self.tensors.update({"rope_cos": cos, "rope_sin": sin, "rope_inv_freq": inv_used})
            self.table_T = T

    def greedy(self, i, ids, n_new):
        """model.generate on a fresh rotary state, its tables checked against the rule; for the
        static types also the usual cross-check against the argmax loop."""
        T = ids.shape[1]
        self.fresh()
        new = generate_greedy(self.model, ids, n_new)
        calls = list(self.calls)
        assert len(calls) == n_new, len(calls)  # prefill + n_new - 1 decode steps
        seq_lens = self.seq_len_rule(T, T + n_new - 1)
        cos, sin = self.check(calls, seq_lens, f"p{i} generate")
        loop = argmax_loop(self.model, ids, n_new, before_forward=self.fresh)
        if self.dynamic:
            self.seq_lens.append(seq_lens)
            self.nocache.append(loop.tolist())
            if i == self.table_prompt:
                self.tensors.update({"gen_rope_cos": cos, "gen_rope_sin": sin})
            # The logits of each generation step, cached (what generate picked from) and without cache
            # (a full forward of ids + new[:k] on a fresh state): the greedy tokens may agree under both
            # rules, these logits do not once positions pass max_position_embeddings.
            self.fresh()
            g = self.model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new, min_new_tokens=n_new,
                do_sample=False, eos_token_id=None, pad_token_id=0, output_logits=True, return_dict_in_generate=True,
            )
            assert torch.equal(g.sequences[0, T:], new)
            cached = torch.cat(g.logits)                                   # [n_new, V]
            nocache = []
            with torch.no_grad():
                for k in range(n_new):
                    self.fresh()
                    nocache.append(self.model(torch.cat([ids, new[:k].view(1, -1)], dim=1)).logits[0, -1])
            self.tensors[f"p{i}.gen_logits"] = cached
            self.gen_vs_nocache.append(float(f"{(cached - torch.stack(nocache)).abs().max().item():.3g}"))
        else:
            assert torch.equal(new, loop), f"generate {new.tolist()} != argmax loop {loop.tolist()}"
        return new

    def meta(self, greedy_lists):
        d = self.head_dim
        inv0, att = ref_rope(self.rp, d, self.max_pos)
        default = self.rp["rope_theta"] ** -(np.arange(0, d, 2) / d)
        m = {
            "rope_parameters": self.rp,
            "max_position_embeddings": self.max_pos,
            "head_dim": d,
            "rotary_dim": d,
            "attention_scaling": self.rotary.attention_scaling,
            "formula": ROPE_FORMULAS[self.rp["rope_type"]],
            "inv_freq_default": [float(f"{x:.8g}") for x in default],
            "inv_freq": [float(f"{x:.8g}") for x in inv0],
            "logits_max_abs_diff_vs_default_rope": self.vs_default,
            "tables": {
                "rope_cos, rope_sin": f"[{self.table_T}, {d}] float32: rotary_emb's output for positions "
                                      f"0..{self.table_T - 1} of prompt {self.table_prompt} (its forward), "
                                      "attention_scaling included",
                "rope_inv_freq": f"[{d // 2}] float32: rotary_emb.inv_freq during that forward",
            },
        }
        if self.rp["rope_type"] == "llama3":
            L = self.rp["original_max_position_embeddings"]
            wl = 2 * math.pi / default
            bands = {"high (kept)": [int(k) for k in np.nonzero(wl < L / self.rp["high_freq_factor"])[0]],
                     "medium (smoothed)": [int(k) for k in np.nonzero((wl >= L / self.rp["high_freq_factor"])
                                                                        & (wl <= L / self.rp["low_freq_factor"]))[0]],
                     "low (divided by factor)": [int(k) for k in np.nonzero(wl > L / self.rp["low_freq_factor"])[0]]}
            assert all(bands.values()), bands
            m["llama3_bands"] = bands
            m["wavelengths"] = [round(float(x), 3) for x in wl]
        if self.rp["rope_type"] == "yarn":
            low, high = yarn_range(self.rp, d)
            e = 1 - np.clip((np.arange(d // 2) - low) / ((high + 0.001 if low == high else high) - low), 0, 1)
            assert ((e > 0) & (e < 1)).any(), e
            m["yarn_ramp"] = {"low": low, "high": high, "extrapolation_factor": [float(x) for x in e]}
        if self.dynamic:
            m["tables"].update({
                "rope_inv_freq": f"[{d // 2}] float32: rotary_emb.inv_freq during that forward "
                                 f"(the seq_len = {self.table_T} frequencies)",
                "gen_rope_cos, gen_rope_sin": f"[{self.table_T + TINY_GREEDY_NEW - 1}, {d}] float32: row p = the "
                                              f"cos/sin position p was rotated with during model.generate of prompt "
                                              f"{self.table_prompt} (KV cache), i.e. for seq_len rope_seq_len[{self.table_prompt}][p]",
            })
            m["tables"]["p{i}.gen_logits"] = (f"[{TINY_GREEDY_NEW}, V] float32: the logits of each step of model.generate "
                                              "(KV cache; row k picks greedy[i][k])")
            m["gen_logits_max_abs_diff_vs_nocache"] = self.gen_vs_nocache
            m["rope_seq_len"] = self.seq_lens
            m["greedy_nocache"] = self.nocache
            m["greedy_nocache_differs"] = [k for k, (a, b) in enumerate(zip(self.nocache, greedy_lists)) if a != b]
            m["notes"] = DYNAMIC_NOTES
        else:
            m["notes"] = ["Static frequencies: computed once at init from the config; every forward and every "
                          "generation step uses the same inv_freq (no dependence on the sequence length)."]
        return m

    def compare_default(self, ids, logits):
        """max |logits - logits with the same weights and rope_type default|, for the sidecar (how
        much this golden tells the scaled RoPE from the plain one)."""
        if not hasattr(self, "plain"):
            cfg = copy.deepcopy(self.model.config)
            cfg.rope_parameters = {"rope_type": "default", "rope_theta": self.rp["rope_theta"]}
            self.plain = LlamaForCausalLM(cfg).eval()
            self.plain.load_state_dict(self.model.state_dict())
        with torch.no_grad():
            d = (self.plain(ids).logits[0] - logits).abs().max().item()
        self.vs_default.append(float(f"{d:.3g}"))

    def remove(self):
        self.handle.remove()


# --------------------------------------------------------------------------- capture


def decoder_layers(model):
    if hasattr(model, "transformer"):  # GPT-2
        t = model.transformer
        return t.h, t.ln_f
    return model.model.layers, model.model.norm


def mlp_out_proj(layer):
    return layer.mlp.c_proj if hasattr(layer.mlp, "c_proj") else layer.mlp.down_proj


class Capture:
    """Forward hooks recording resid (embedding + block outputs), final-norm output and
    the input of each MLP output projection."""

    def __init__(self, model, mlp_layers=None):
        layers, final_norm = decoder_layers(model)
        self.n = len(layers)
        self.resid = [None] * (self.n + 1)
        self.mlp = {}
        self.final = None
        self.handles = []

        def first(x):
            return x[0] if isinstance(x, (tuple, list)) else x

        def pre0(_m, args, kwargs):
            hs = args[0] if args else kwargs["hidden_states"]
            self.resid[0] = hs.detach().clone()

        self.handles.append(layers[0].register_forward_pre_hook(pre0, with_kwargs=True))
        for l, layer in enumerate(layers):
            def post(_m, _a, out, l=l):
                self.resid[l + 1] = first(out).detach().clone()
            self.handles.append(layer.register_forward_hook(post))
            if mlp_layers is None or l in mlp_layers:
                def mpre(_m, args, l=l):
                    self.mlp[l] = args[0].detach().clone()
                self.handles.append(mlp_out_proj(layer).register_forward_pre_hook(mpre))

        def fin(_m, _a, out):
            self.final = first(out).detach().clone()

        self.handles.append(final_norm.register_forward_hook(fin))

    def remove(self):
        for h in self.handles:
            h.remove()


def embedding_grads(model, ids, target):
    emb = model.get_input_embeddings()(ids).detach().clone().requires_grad_(True)
    logits = model(inputs_embeds=emb).logits[0, -1]
    lp = torch.log_softmax(logits, dim=-1)[target]
    (g_lp,) = torch.autograd.grad(lp, emb, retain_graph=True)
    p = torch.softmax(logits, dim=-1)[target]
    (g_p,) = torch.autograd.grad(p, emb)
    return logits.detach(), g_lp[0].detach(), g_p[0].detach()


def tiny_golden(name, model_dir, tok_ref, prompts=TINY_PROMPTS, rope=None):
    """`rope`: the intended rope_parameters of a RoPE-scaling model (adds RopeRecorder's
    tensors and "rope" block), None for the plain tiny models."""
    model = load_tiny(model_dir)
    # Tokenize with tokenizer.json itself (what the Rust side loads). Do NOT use
    # AutoTokenizer here: for model_type qwen2, transformers 5 picks Qwen2Tokenizer, which
    # replaces the pre-tokenizer from tokenizer.json with Qwen2's own regex (digits split
    # one by one) and so gives different ids than tokenizer.json does.
    tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    L = model.config.num_hidden_layers
    rec = None
    if rope is not None:
        rec = RopeRecorder(model, rope, table_prompt=max(range(len(prompts)), key=lambda k: len(tok.encode(prompts[k]).ids)))
    tensors, all_ids, all_greedy = {}, [], []
    for i, prompt in enumerate(prompts):
        ids_list = tok.encode(prompt).ids
        assert ids_list == tok_ref(prompt).input_ids, "tokenizer.json round trip changed the ids"
        assert 0 not in ids_list  # no BOS / EOT
        ids = torch.tensor([ids_list], dtype=torch.int64)
        cap = Capture(model)
        if rec:
            rec.fresh()
        with torch.no_grad():
            out = model(ids, output_attentions=True, output_hidden_states=True)
        cap.remove()
        T = ids.shape[1]
        if rec:
            rec.forward_done(i, T)
        resid = torch.stack([r[0] for r in cap.resid])             # [L+1, T, d]
        # Cross-checks against HF's own outputs.
        hs = out.hidden_states
        for l in range(L):
            assert_close(hs[l][0], resid[l], f"{name} p{i} hidden_states[{l}]", TOL)
        assert_close(hs[L][0], cap.final[0], f"{name} p{i} last hidden_states = final norm", TOL)
        with torch.no_grad():
            assert_close(decoder_layers(model)[1](resid[L]), cap.final[0], f"{name} p{i} final_norm(resid[L])", TOL)
        if not hasattr(model, "transformer"):
            assert_close(model.model.embed_tokens(ids)[0], resid[0], f"{name} p{i} embed", TOL)
        logits = out.logits[0]
        target = logits[-1].argmax().view(1)
        if rec:
            rec.compare_default(ids, logits)
            rec.fresh()
        logits_e, g_lp, g_p = embedding_grads(model, ids, target.item())
        assert_close(logits_e, logits[-1], f"{name} p{i} logits via inputs_embeds", TOL)
        gr = rec.greedy(i, ids, TINY_GREEDY_NEW) if rec else greedy(model, ids, TINY_GREEDY_NEW)
        tensors.update({
            f"p{i}.input_ids": ids[0],
            f"p{i}.resid": resid,
            f"p{i}.final_hidden": cap.final[0],
            f"p{i}.mlp_act": torch.stack([cap.mlp[l][0] for l in range(L)]),
            f"p{i}.attn": torch.stack([a[0] for a in out.attentions]),
            f"p{i}.logits": logits,
            f"p{i}.target": target.to(torch.int64),
            f"p{i}.grad_logprob": g_lp,
            f"p{i}.grad_prob": g_p,
            f"p{i}.greedy": gr,
        })
        assert tensors[f"p{i}.attn"].shape == (L, model.config.num_attention_heads, T, T)
        all_ids.append(ids_list)
        all_greedy.append(gr.tolist())
        print(f"  {name} p{i}: T={T} target={target.item()} greedy={gr.tolist()}")
    meta = {
        "model": name,
        "checkpoint": f"tests/data/{name}",
        "prompts": prompts,
        "input_ids": all_ids,
        "tokenizer_note": "input_ids = tokenizers.Tokenizer.from_file(tokenizer.json).encode(prompt).ids, no BOS",
        "greedy": all_greedy,
        "greedy_max_new_tokens": TINY_GREEDY_NEW,
        "greedy_note": "generate(do_sample=False, eos_token_id=None): EOS (id 0) does not stop generation",
        "targets": [int(tensors[f"p{i}.target"]) for i in range(len(prompts))],
        "dtype": "float32",
        "attn_implementation": "eager",
        "versions": versions(),
    }
    if rec:
        rec.remove()
        tensors.update(rec.tensors)
        meta["rope"] = rec.meta(all_greedy)
    write_golden(name, tensors, meta, GENERATOR)


# --------------------------------------------------------------------------- SmolLM2


def gguf_path():
    p = os.environ.get("TOKENLENS_GGUF")
    if not p:
        p = subprocess.run(
            ["bash", str(ROOT / "scripts" / "fetch-model.sh")], check=True, capture_output=True, text=True
        ).stdout.strip().splitlines()[-1]
    return Path(p)


def smollm2_golden():
    path = gguf_path()
    d, f = str(path.parent), path.name
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=f, attn_implementation="eager", dtype=torch.float32
    ).eval()
    cfg = model.config
    L = cfg.num_hidden_layers
    assert (L, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.intermediate_size, cfg.vocab_size) == (30, 576, 9, 3, 1536, 49152), cfg
    tensors, all_ids, all_greedy, top5 = {}, [], [], None
    id_checks = {}
    for i, prompt in enumerate(SMOL_PROMPTS):
        ids_list = tok(prompt).input_ids
        assert ids_list == tok(prompt, add_special_tokens=False).input_ids, "GGUF tokenizer added specials"
        if i in SMOL_EXPECTED_IDS:
            ok = ids_list == SMOL_EXPECTED_IDS[i]
            id_checks[prompt] = {"expected": SMOL_EXPECTED_IDS[i], "got": ids_list, "match": ok}
            if not ok:
                print(f"WARNING: GGUF tokenizer gives {ids_list} for {prompt!r}, expected {SMOL_EXPECTED_IDS[i]}")
        ids = torch.tensor([ids_list], dtype=torch.int64)
        cap = Capture(model, mlp_layers={0})
        with torch.no_grad():
            out = model(ids, output_attentions=True, output_hidden_states=True)
        cap.remove()
        resid = torch.stack([r[0] for r in cap.resid])
        for l in range(L):
            assert_close(out.hidden_states[l][0], resid[l], f"smollm2 p{i} hidden_states[{l}]", TOL)
        assert_close(out.hidden_states[L][0], cap.final[0], f"smollm2 p{i} final norm", TOL)
        with torch.no_grad():
            assert_close(model.model.norm(resid[L]), cap.final[0], f"smollm2 p{i} final_norm(resid[L])", TOL)
        logits_last = out.logits[0, -1]
        target = int(logits_last.argmax())
        logits_e, g_lp, _ = embedding_grads(model, ids, target)
        assert_close(logits_e, logits_last, f"smollm2 p{i} logits via inputs_embeds", TOL)
        gr = greedy(model, ids, SMOL_GREEDY_NEW)
        tensors.update({
            f"p{i}.input_ids": ids[0],
            f"p{i}.logits_last": logits_last,
            f"p{i}.resid_sel": resid[RESID_SEL],
            f"p{i}.mlp_act_l0": cap.mlp[0][0],
            f"p{i}.attn_l0": out.attentions[0][0],
            f"p{i}.attn_l29": out.attentions[29][0],
            f"p{i}.greedy": gr,
            f"p{i}.grad_logprob": g_lp,
        })
        all_ids.append(ids_list)
        all_greedy.append(gr.tolist())
        probs = torch.softmax(logits_last, -1)
        v, ix = probs.topk(5)
        top = [{"id": int(t), "token": tok.decode([int(t)]), "prob": round(float(p), 6)} for p, t in zip(v, ix)]
        if i == 0:
            top5 = top
        print(f"  smollm2 p{i}: {prompt!r} ids={ids_list}")
        print(f"    top5={[(t['token'], t['prob']) for t in top]}")
        print(f"    greedy={gr.tolist()} {tok.decode(gr.tolist())!r}")
    assert top5[0]["token"] == " Paris", top5
    meta = {
        "model": "SmolLM2-135M-Instruct.Q4_1.gguf (transformers GGUF load, dequantized to float32)",
        "gguf_file": f,
        "prompts": SMOL_PROMPTS,
        "input_ids": all_ids,
        "tokenizer_check": id_checks,
        "resid_indices": RESID_SEL,
        "resid_note": "resid index 0 = embedding output entering block 0; index l+1 = output of block l, before the final norm",
        "mlp_act_layer": 0,
        "attn_layers": [0, 29],
        "greedy": all_greedy,
        "greedy_max_new_tokens": SMOL_GREEDY_NEW,
        "greedy_note": "generate(do_sample=False, eos_token_id=None): EOS does not stop generation",
        "top5_prompt0": top5,
        "config_from_gguf": {
            "rope_theta": (cfg.rope_parameters or {}).get("rope_theta"),
            "rms_norm_eps": cfg.rms_norm_eps,
            "tie_word_embeddings": cfg.tie_word_embeddings,
            "bos_token_id": cfg.bos_token_id,
            "eos_token_id": cfg.eos_token_id,
        },
        "weights_note": "transformers dequantizes every GGUF tensor to float32 with gguf-py "
                        "(token_embd Q8_0, other matrices Q4_1, norms F32) and un-permutes attn_q/attn_k "
                        "rows back to the HF rotate-half layout; lm_head is tied to embed_tokens",
        "dtype": "float32",
        "attn_implementation": "eager",
        "versions": versions(),
    }
    write_golden("smollm2", tensors, meta, GENERATOR)
    size = (GOLDEN / "smollm2.safetensors").stat().st_size
    assert size < 3 * 1024 * 1024, size


# --------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-smollm2", action="store_true", help="only make the tiny checkpoints and goldens")
    args = ap.parse_args()

    deterministic_setup()

    tok = make_tokenizer()
    tiny = tiny_configs(len(tok))
    for k, (name, cls, cfg) in enumerate(tiny):
        print(f"{name}: writing checkpoint")
        d = save_checkpoint(name, cls, cfg, tok, SEED + k)
        tiny_golden(name, d, tok)
    for k, (name, cfg, rp, layout) in enumerate(rope_configs(len(tok)), start=len(tiny)):
        print(f"{name}: writing checkpoint")
        d = save_checkpoint(name, LlamaForCausalLM, cfg, tok, SEED + k, layout=layout)
        tiny_golden(name, d, tok, prompts=ROPE_PROMPTS, rope=rp)
    if not args.skip_smollm2:
        print("smollm2: loading GGUF")
        smollm2_golden()
    print("done; versions:", json.dumps(versions()))


if __name__ == "__main__":
    main()
