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
  Other decoder families (family_configs; same tokenizer, same keys as the tiny goldens; the sidecar adds
  "architecture" (salient config values), "family_notes" (what the family computes that a reimplementation
  must match), "embed_scale" and "grad_note"). L = layers, d = hidden, H/KV = heads/kv heads, hd = head_dim:
    tiny-qwen3           Qwen3ForCausalLM: q/k RMSNorm per head (weight [hd]) before RoPE; hd 16 != 32/4; GQA 4:2;
                         L 2, d 32, tied. TINY_PROMPTS.
    tiny-olmo2           Olmo2ForCausalLM: no pre-norms, post_attention_layernorm / post_feedforward_layernorm on
                         the sublayer outputs; q_norm / k_norm over the whole projection (H*hd = 32, KV*hd = 16);
                         GQA 4:2; L 2, d 32, untied. TINY_PROMPTS.
    tiny-gemma           GemmaForCausalLM: embeddings times sqrt(d), (1 + w) RMSNorms (weights jittered around 0),
                         GeGLU (gelu_pytorch_tanh), MQA (KV 1), hd 16 != 32/4, tied; L 2, d 32. TINY_PROMPTS.
    tiny-gemma2          Gemma2ForCausalLM: pre + post norms, query_pre_attn_scalar 24 (hd 16), attention
                         soft-cap 2.5 and final soft-cap 3.0 (max |x|/cap ~1.2-1.7 and ~1.5-1.8: tanh well into
                         its bend; in the sidecar's "softcapping"), sliding_window 8 with layer_types [sliding,
                         full, sliding]; GQA 4:2; L 3, d 32, tied. ROPE_PROMPTS.
    tiny-gemma3          Gemma3ForCausalLM (Gemma3TextConfig, model_type gemma3_text): q/k (1 + w) norms per head,
                         sliding_window 8, layer_types [sliding, sliding, full], rope_parameters keyed by layer type
                         (sliding: default, theta 1e4; full: linear factor 8, theta 1e6), query_pre_attn_scalar 32
                         (hd 16); GQA 4:2; L 3, d 32, tied. ROPE_PROMPTS; adds rope_cos.<type> / rope_sin.<type>
                         [43, 16] for both layer types.
    tiny-pythia          GPTNeoXForCausalLM: rotary_pct 0.25 (4 of hd 16 rotated), parallel residual, LayerNorms and
                         linears with biases, exact gelu, untied embed_out; H 3, L 2, d 48; config.json in the Hub's
                         Pythia layout (rotary_pct, rotary_emb_base). TINY_PROMPTS; adds rope_cos / rope_sin [23, 4].
    tiny-neox-seq        The same family with use_parallel_residual false and rotary_pct 0.5 (8 of hd 16); H 2, L 2,
                         d 32; config.json as transformers 5 writes it (rope_parameters.partial_rotary_factor).
                         TINY_PROMPTS; adds rope_cos / rope_sin [23, 8].
    tiny-phi3            Phi3ForCausalLM: fused qkv_proj [q | k | v] and gate_up_proj [gate | up], GQA 4:2, hd 8,
                         untied; L 2, d 32. TINY_PROMPTS.
    tiny-phi3-longrope   Phi-3 with rope type longrope (short_factor / long_factor PHI3_SHORT / PHI3_LONG, 8 values
                         each, original_max_position_embeddings 64, max_position_embeddings 256, so attention
                         factor sqrt(1 + ln 4 / ln 64)); H 2, KV 1, hd 16, L 2, d 32; config.json in the Hub's
                         Phi-3 layout (rope_scaling + top-level rope_theta). ROPE_PROMPTS (every sequence < 64
                         tokens: short factors); adds rope_cos / rope_sin / rope_inv_freq as the RoPE goldens do, and
                         the sidecar's "rope" block says which factors and attention factor transformers used.
    tiny-mistral-window  MistralForCausalLM with sliding_window 8 on every layer; hd 16 != 32/4, GQA 4:2, untied;
                         L 2, d 32. ROPE_PROMPTS.
    tiny-qwen2-window    Qwen2 with use_sliding_window true, sliding_window 8, max_window_layers 1 of 3 layers, so
                         layer_types [full, sliding, sliding]; q/k/v biases, GQA 4:2, tied; d 32. ROPE_PROMPTS.
  For the windowed models (gemma2, gemma3, mistral-window, qwen2-window) the script checks that the logits
  equal those of the same weights without the window for the prompts of <= 8 tokens and differ for the
  longer ones (sidecar "sliding_window_check"); their greedy continuations (8 tokens after the 43-token
  prompt) go past the window too. For every family model it also recomputes each block from the weights
  (block_by_hand) and checks resid and mlp_act against it.
  Gradients (grad_logprob / grad_prob) of the family goldens are w.r.t. the token-embedding rows fed as
  inputs_embeds, before any scale the model applies inside: for Gemma 1/2/3, whose embed_tokens multiplies by
  sqrt(d), that is sqrt(d) times the gradient w.r.t. resid[0] (token_embedding_grads).
  tiny-bert/, golden/tiny-bert.{safetensors,json}
      BertForMaskedLM (L 2, d 32, H 4, ffn 64, absolute positions up to 64, token_type_ids all 0, gelu, decoder
      tied to the word embeddings as transformers does for MLM by default) with its own 512-token WordPiece
      tokenizer built here (wordpiece_vocab: [PAD] [UNK] [CLS] [SEP] [MASK] = 0..4, lowercase BertNormalizer,
      BertPreTokenizer, TemplateProcessing [CLS] $A [SEP]). For BERT_PROMPTS (one or two [MASK]s each), key
      `p{i}.<name>`:
        input_ids [T] i64 ([CLS] ... [SEP] included);
        resid [L+1,T,d]: 0 = output of the embeddings block, LayerNorm(word + position + token_type[0]);
          l+1 = output of encoder layer l (after its output LayerNorm; there is no final norm);
        mlp_act [L,T,ffn]: gelu(intermediate.dense(.)) of layer l, the input of its output.dense;
        attn [L,H,T,T]: attention probabilities (eager, bidirectional, no mask);
        head_hidden [T,d]: cls.predictions.transform(resid[L]) = LayerNorm(gelu(dense(resid[L])));
        logits [T,V]: the MLM head's logits at every position (head_hidden @ word_embeddings^T +
          cls.predictions.bias);
        mask_positions [n] i64: positions of [MASK] in input_ids;
        target [1] i64: argmax of logits at the FIRST mask position;
        grad_logprob / grad_prob [T,d]: d log p / d p of target at that position w.r.t. the word-embedding rows
          (fed as inputs_embeds; position and token-type embeddings are added inside the model).
      No greedy. The sidecar's "keys" states the same.
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
--skip-smollm2 to only make the tiny models, --only NAME,NAME,... (e.g. --only tiny-gemma2,tiny-qwen3;
'smollm2' names the SmolLM2 golden) to make just those. Each model's seed comes from its place in
the lists above, not from the selection, so a model made alone is the same as made with the others. Everything is seeded and runs on CPU with
one thread, so reruns with the same library versions give byte-identical files.
"""

import argparse
import copy
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch

import transformers
import tokenizers
import safetensors
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GemmaConfig,
    GemmaForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from golden_util import DATA, GOLDEN, SEED, assert_close, deterministic_setup, greedy, load_tiny, write_golden
from golden_util import argmax_loop, fetch_model, generate_greedy
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
    return p.dim() == 1 and ("norm" in name or "LayerNorm" in name or ".ln_" in name
                             or name.startswith("transformer.ln_f"))


@torch.no_grad()
def init_weights(model, seed, norm_center=1.0):
    """Explicit, order-independent init: every parameter from its own seeded generator,
    so the weights do not depend on how a transformers version orders its own init.
    norm_center: what norm weights are jittered around (0 for Gemma's (1 + w) RMSNorms)."""
    std = model.config.initializer_range
    for i, (name, p) in enumerate(sorted(model.named_parameters())):  # tied params listed once
        g = torch.Generator().manual_seed(seed * 1000 + i)
        r = torch.randn(p.shape, generator=g, dtype=torch.float32)
        if is_norm(name, p) and name.endswith("weight"):
            p.copy_(norm_center + NORM_JITTER * r)
        elif name.endswith("bias"):
            s = QKV_BIAS_STD if any(k in name for k in ("q_proj", "k_proj", "v_proj")) else BIAS_STD
            p.copy_(s * r)
        else:
            p.copy_(std * r)
    # GPT-2 has attention-mask buffers etc., nothing random; rotary inv_freq is derived.


def save_checkpoint(name, cls, cfg, tok, seed, layout="v5", norm_center=1.0):
    out = DATA / name
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = cls(cfg)
    init_weights(model, seed, norm_center)
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
    "longrope": "_compute_longrope_parameters(seq_len): L = original_max_position_embeddings (Phi-3: the top-level "
                "config key wins over the one in rope_parameters), factor = rope_parameters.factor if given, else "
                "max_position_embeddings / L; ext = long_factor if seq_len > L else short_factor (seq_len None at "
                "init: short); inv = 1 / (ext_i * theta^(2i/d)). attention_scaling = attention_factor if given, else "
                "sqrt(1 + ln(factor) / ln(L)) (1 if factor <= 1), applied to cos and sin for BOTH factor sets. "
                "Per forward (longrope_frequency_update): seq_len = max(position_ids) + 1 over the call; inv_freq = "
                "long if seq_len > L else the original (short) one, so a cached decode step at position p >= L "
                "switches to the long factors for that step only (keys already cached keep theirs).",
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
    if t == "default":
        return inv, 1.0
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
    if t == "longrope":
        L = rp["original_max_position_embeddings"]
        f = rp.get("factor") or max_pos / L
        att = rp.get("attention_factor") or (math.sqrt(1 + math.log(f) / math.log(L)) if f > 1 else 1.0)
        ext = np.asarray(rp["long_factor"] if (seq_len or 0) > L else rp["short_factor"], dtype=np.float64)
        return 1.0 / (ext * theta ** j), att
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
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.max_pos = cfg.max_position_embeddings
        self.dynamic = self.rp["rope_type"] == "dynamic"
        # The sequence length each rotary call computes its frequencies for: max(M, seq_len) for dynamic (and
        # irrelevant for the static types); longrope looks at seq_len itself (short vs long factors).
        self.longrope = self.rp["rope_type"] == "longrope"
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
        return [self.seq_of(T if p < T else p + 1) for p in range(n_positions)]

    def seq_of(self, s):
        return s if self.longrope else max(self.max_pos, s)

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
        cos, sin = self.check(self.calls, [self.seq_of(T)] * T, f"p{i} forward")
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
        if self.longrope:
            m.update(self.longrope_meta(greedy_lists))
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
        elif self.longrope:
            m["notes"] = ["Two static sets of frequencies (short and long factors, both computed from the config); "
                          "each forward picks one from its own max(position_ids) + 1 (see 'formula'). Every forward "
                          "here is short, so the tables and all positions use short_factor."]
        else:
            m["notes"] = ["Static frequencies: computed once at init from the config; every forward and every "
                          "generation step uses the same inv_freq (no dependence on the sequence length)."]
        return m

    def longrope_meta(self, greedy_lists):
        """Which factors transformers used (short: every golden position is < L), with a check that a
        forward past L does switch to the long ones (then back)."""
        L = self.rp["original_max_position_embeddings"]
        longest = max(len(g) for g in greedy_lists) + self.table_T
        assert longest <= L, (longest, L)
        r = self.rotary
        x = torch.zeros(1, 1, self.head_dim)
        long_inv, _ = ref_rope(self.rp, self.head_dim, self.max_pos, seq_len=L + 1)
        with torch.no_grad():
            r(x, torch.arange(L + 6).view(1, -1))
            assert_close(r.inv_freq.double(), torch.from_numpy(long_inv), "longrope inv_freq past L", ROPE_TOL)
            r(x, torch.arange(4).view(1, -1))
            assert torch.equal(r.inv_freq, r.original_inv_freq), "longrope did not switch back to short"
        self.calls.clear()
        f = self.rp.get("factor") or self.max_pos / L
        return {
            "longrope": {
                "factors_used": "short_factor",
                "why": f"every forward of these goldens (prompts, gradient forwards, each generate step, the argmax "
                       f"loop) has seq_len = max(position_ids) + 1 <= {longest} <= original_max_position_embeddings "
                       f"{L}; the long_factor would be used for seq_len > {L}",
                "short_factor": self.rp["short_factor"],
                "long_factor": self.rp["long_factor"],
                "factor": f,
                "factor_source": "rope_parameters.factor" if self.rp.get("factor") else
                                 "max_position_embeddings / original_max_position_embeddings",
                "attention_factor": self.rotary.attention_scaling,
                "attention_factor_formula": "sqrt(1 + ln(factor) / ln(original_max_position_embeddings))",
                "inv_freq_long": [float(f"{x:.8g}") for x in long_inv],
                "checked": f"a rotary_emb call for positions 0..{L + 5} gives the long inv_freq, a later one "
                           f"for 0..3 the short one again",
            }
        }

    def compare_default(self, ids, logits):
        """max |logits - logits with the same weights and rope_type default|, for the sidecar (how
        much this golden tells the scaled RoPE from the plain one)."""
        if not hasattr(self, "plain"):
            cfg = copy.deepcopy(self.model.config)
            cfg.rope_parameters = {"rope_type": "default", "rope_theta": self.rp["rope_theta"]}
            self.plain = type(self.model)(cfg).eval()
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
    if hasattr(model, "gpt_neox"):  # GPT-NeoX / Pythia
        return model.gpt_neox.layers, model.gpt_neox.final_layer_norm
    return model.model.layers, model.model.norm


def mlp_out_proj(layer):
    if hasattr(layer.mlp, "dense_4h_to_h"):  # GPT-NeoX
        return layer.mlp.dense_4h_to_h
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


def token_embedding_grads(model, ids, target, pos=-1):
    """Like embedding_grads, but w.r.t. the token embeddings themselves (the rows of the input embedding
    matrix, fed as inputs_embeds), i.e. before any scale the embedding module applies inside: Gemma's
    embed_tokens multiplies by embed_scale = sqrt(hidden_size) in its own forward, and model(inputs_embeds=x)
    does not, so x = rows * embed_scale is fed and the gradient is taken w.r.t. the rows. For every other
    family (embed_scale absent) this is embedding_grads. `pos`: the position whose logits give the target
    (BERT: the first [MASK]). Returns (logits [V] at pos, d log p / d rows [T, d], d p / d rows [T, d])."""
    mod = model.get_input_embeddings()
    rows = mod.weight.detach()[ids].clone().requires_grad_(True)
    scale = getattr(mod, "embed_scale", None)
    x = rows * scale.to(rows.dtype) if scale is not None else rows
    logits = model(inputs_embeds=x).logits[0, pos]
    lp = torch.log_softmax(logits, dim=-1)[target]
    (g_lp,) = torch.autograd.grad(lp, rows, retain_graph=True)
    p = torch.softmax(logits, dim=-1)[target]
    (g_p,) = torch.autograd.grad(p, rows)
    return logits.detach(), g_lp[0].detach(), g_p[0].detach()


class SoftcapProbe:
    """Gemma 2's soft-capping: records max |x| / cap of the attention scores before the tanh (over the
    positions the mask lets through) by wrapping the family's eager_attention_forward (looked up as a module
    global at call time), and of the final logits (lm_head output before the tanh)."""

    def __init__(self, model):
        self.model, self.cfg = model, model.config
        self.mod = sys.modules[type(model.model.layers[0].self_attn).__module__]
        self.orig = self.mod.eager_attention_forward
        self.attn_ratio, self.logit_ratio, self.active = [], [], False
        self.cur = 0.0
        orig, mod = self.orig, self.mod

        def wrapped(module, query, key, value, attention_mask, *args, **kwargs):
            softcap = kwargs.get("softcap")
            if self.active and softcap is not None:
                k = mod.repeat_kv(key, module.num_key_value_groups)
                x = torch.matmul(query, k.transpose(2, 3)) * kwargs["scaling"]
                ok = torch.ones_like(x, dtype=torch.bool) if attention_mask is None else (
                    attention_mask[..., : x.shape[-1]] if attention_mask.dtype == torch.bool
                    else attention_mask[..., : x.shape[-1]] == 0).expand_as(x)
                self.cur = max(self.cur, (x.abs()[ok].max() / softcap).item())
            return orig(module, query, key, value, attention_mask, *args, **kwargs)

        self.mod.eager_attention_forward = wrapped

    def start(self):
        self.active, self.cur = True, 0.0

    def stop(self, final_hidden):
        self.active = False
        self.attn_ratio.append(round(self.cur, 4))
        with torch.no_grad():
            pre = self.model.lm_head(final_hidden)
        self.logit_ratio.append(round(pre.abs().max().item() / self.cfg.final_logit_softcapping, 4))

    def remove(self):
        self.mod.eager_attention_forward = self.orig

    def meta(self):
        return {
            "attn_logit_softcapping": self.cfg.attn_logit_softcapping,
            "final_logit_softcapping": self.cfg.final_logit_softcapping,
            "attn_max_abs_over_cap": self.attn_ratio,
            "final_max_abs_over_cap": self.logit_ratio,
            "note": "per prompt: max |x| / cap of the values entering tanh (attention: q.k * scaling over the "
                    "unmasked positions, all layers and heads; final: lm_head(final_hidden)). tanh(1) = 0.76: at "
                    "ratio 1 the cap bends the value by 24%. Attention: scores = cap * tanh(q.k * scaling / cap), "
                    "then the mask is added, then softmax; logits = cap * tanh(lm_head(h) / cap).",
        }


NO_WINDOW = 4096  # a sliding window wider than every golden sequence: the same as no window


class WindowCheck:
    """The same weights with the sliding window widened to NO_WINDOW (layer types, and so Gemma 3's per-layer
    RoPE, unchanged): the logits must be equal for prompts no longer than the window and differ for longer
    ones, or the golden would not test the window."""

    def __init__(self, model):
        self.window = model.config.sliding_window
        cfg = copy.deepcopy(model.config)
        cfg.sliding_window = NO_WINDOW
        self.full = type(model)(cfg).eval()
        self.full.load_state_dict(model.state_dict())
        self.diffs = []

    def compare(self, name, i, ids, logits):
        with torch.no_grad():
            d = (self.full(ids).logits[0] - logits).abs().max().item()
        T = ids.shape[1]
        if T <= self.window:
            assert d <= 1e-6, f"{name} p{i}: T={T} <= window but logits differ by {d}"
        else:
            assert d > 1e-3, f"{name} p{i}: T={T} > window {self.window} but logits only differ by {d}"
        self.diffs.append(float(f"{d:.3g}"))
        print(f"    window check p{i}: T={T}, window {self.window}: max |logits - logits without window| = {d:.3g}")

    def meta(self, lengths):
        return {
            "sliding_window": self.window,
            "layer_types": list(getattr(self.full.config, "layer_types", None) or []),
            "mask_rule": "a query at position q sees keys k with q - window < k <= q (window keys, itself "
                         "included), on the sliding_attention layers; full_attention layers are plain causal",
            "prompt_lengths": lengths,
            "logits_max_abs_diff_vs_no_window": self.diffs,
            "note": f"the same weights with sliding_window = {NO_WINDOW} (wider than every sequence): equal logits "
                    f"for prompts of <= {self.window} tokens, different ones for the longer prompts, so these "
                    "goldens test the window; greedy goes past the window too (generate with its KV cache, "
                    "checked against a no-cache argmax loop)",
        }


def rope_tables(model, T):
    """cos / sin [T, rotary_dim] the model's rotary module gives for positions 0..T-1 (one pair per layer type
    if it has several, as Gemma 3), checked against ref_rope; returns (tensors, sidecar block)."""
    base = model.gpt_neox if hasattr(model, "gpt_neox") else model.model
    r, cfg = base.rotary_emb, model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    pos = torch.arange(T).view(1, -1)
    x = torch.zeros(1, T, 1)
    tensors, meta = {}, {}
    per_type = isinstance(r.rope_type, dict)
    for lt in (sorted(r.rope_type) if per_type else [None]):
        rp = dict(cfg.rope_parameters[lt] if per_type else cfg.rope_parameters)
        rot = int(head_dim * rp.get("partial_rotary_factor", 1.0))
        with torch.no_grad():
            cos, sin = r(x, pos, lt) if per_type else r(x, pos)
        inv, att = ref_rope(rp, rot, cfg.max_position_embeddings)
        c, sn = ref_tables(inv, att, range(T))
        assert cos.shape[-1] == rot, (cos.shape, rot)
        assert_close(cos[0].double(), torch.from_numpy(c), f"rope cos {lt}", ROPE_TOL)
        assert_close(sin[0].double(), torch.from_numpy(sn), f"rope sin {lt}", ROPE_TOL)
        sfx = f".{lt}" if per_type else ""
        tensors[f"rope_cos{sfx}"], tensors[f"rope_sin{sfx}"] = cos[0], sin[0]
        meta[lt or "all_layers"] = {
            "rope_parameters": rp, "head_dim": head_dim, "rotary_dim": rot, "attention_scaling": att,
            "inv_freq": [float(f"{v:.8g}") for v in inv],
            "tables": f"rope_cos{sfx}, rope_sin{sfx} [{T}, {rot}] float32: cos/sin for positions 0..{T - 1} "
                      "(the d/2 angles repeated twice, rotate_half layout); "
                      + ("dims rotary_dim..head_dim-1 of each q/k head pass through unrotated"
                         if rot < head_dim else "the whole head is rotated"),
        }
    if per_type:
        meta["layer_types"] = list(cfg.layer_types)
    return tensors, meta


def tiny_golden(name, model_dir, tok_ref, prompts=TINY_PROMPTS, rope=None, spec=None):
    """`rope`: the intended rope_parameters of a RoPE-scaling model (adds RopeRecorder's
    tensors and "rope" block), None for the plain tiny models. `spec`: None for the original tiny and
    RoPE goldens; for the families of FAMILY_MODELS a dict: "softcap" (SoftcapProbe), "window"
    (WindowCheck), "rope_tables" (rope_tables of the longest prompt), "meta" (added to the sidecar). With a
    spec the gradients are token_embedding_grads (w.r.t. the unscaled embedding rows)."""
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
    probe = SoftcapProbe(model) if spec and spec.get("softcap") else None
    win = WindowCheck(model) if spec and spec.get("window") else None
    longest = max(range(len(prompts)), key=lambda k: len(tok.encode(prompts[k]).ids))
    extra_meta = {}
    for i, prompt in enumerate(prompts):
        ids_list = tok.encode(prompt).ids
        assert ids_list == tok_ref(prompt).input_ids, "tokenizer.json round trip changed the ids"
        assert 0 not in ids_list  # no BOS / EOT
        ids = torch.tensor([ids_list], dtype=torch.int64)
        cap = Capture(model)
        if rec:
            rec.fresh()
        if probe:
            probe.start()
        with torch.no_grad():
            out = model(ids, output_attentions=True, output_hidden_states=True)
        cap.remove()
        if probe:
            probe.stop(cap.final)
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
            assert_close(model.get_input_embeddings()(ids)[0], resid[0], f"{name} p{i} embed", TOL)
        logits = out.logits[0]
        target = logits[-1].argmax().view(1)
        if rec:
            rec.compare_default(ids, logits)
            rec.fresh()
        if win:
            win.compare(name, i, ids, logits)
        if spec:
            with torch.no_grad():
                for l in range(L):
                    y, act = block_by_hand(model, l, resid[l])
                    assert_close(y, resid[l + 1], f"{name} p{i} block {l} by hand", TOL)
                    assert_close(act, cap.mlp[l][0], f"{name} p{i} mlp_act {l} by hand", TOL)
        if spec and spec.get("rope_tables") and i == longest:
            t, extra_meta["rope"] = rope_tables(model, T)
            tensors.update(t)
        grads = token_embedding_grads if spec else embedding_grads
        logits_e, g_lp, g_p = grads(model, ids, target.item())
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
    if spec:
        meta.update(spec_meta(model, spec, all_ids))
        meta.update(extra_meta)
        if probe:
            probe.remove()
            meta["softcapping"] = probe.meta()
            print(f"    softcap: attention max |x|/cap {probe.attn_ratio}, final {probe.logit_ratio}")
        if win:
            meta["sliding_window_check"] = win.meta([len(x) for x in all_ids])
    write_golden(name, tensors, meta, GENERATOR)


# --------------------------------------------------------------------------- other families

# Phi-3 LongRoPE: one factor per rotary frequency (head_dim 16 -> 8), distinct and none 1.0.
PHI3_SHORT = [1.05, 1.15, 1.3, 1.5, 1.8, 2.2, 2.7, 3.3]
PHI3_LONG = [1.6, 2.4, 3.5, 5.0, 7.0, 9.5, 12.5, 16.0]
WINDOW = 8  # every sliding window below: shorter than 3 of the 4 ROPE_PROMPTS


def family_configs(vocab):
    """(name, class, config, prompts, spec, config.json layout) of the tiny checkpoints of the other
    decoder families; spec as in tiny_golden, plus "norm_center" (0 for Gemma's (1 + w) norms)."""
    common = dict(vocab_size=vocab, initializer_range=INIT_STD, bos_token_id=0, eos_token_id=0, pad_token_id=None)

    def rope(theta, **kw):
        return {"rope_type": "default", "rope_theta": theta, **kw}

    small = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                 max_position_embeddings=128)
    gemma_act = dict(hidden_activation="gelu_pytorch_tanh")
    return [
        ("tiny-qwen3", Qwen3ForCausalLM, Qwen3Config(
            **small, head_dim=16, num_hidden_layers=2, rms_norm_eps=1e-6, rope_parameters=rope(1e6),
            tie_word_embeddings=True, hidden_act="silu", use_sliding_window=False, **common),
         TINY_PROMPTS, {}, "v5"),
        ("tiny-olmo2", Olmo2ForCausalLM, Olmo2Config(
            **small, num_hidden_layers=2, rms_norm_eps=1e-6, rope_parameters=rope(5e5),
            tie_word_embeddings=False, hidden_act="silu", **common),
         TINY_PROMPTS, {}, "v5"),
        ("tiny-gemma", GemmaForCausalLM, GemmaConfig(
            **dict(small, num_key_value_heads=1), head_dim=16, num_hidden_layers=2, rms_norm_eps=1e-6,
            rope_parameters=rope(1e4), hidden_act="gelu_pytorch_tanh", tie_word_embeddings=True, **common),
         TINY_PROMPTS, {"norm_center": 0.0}, "v5"),
        ("tiny-gemma2", Gemma2ForCausalLM, Gemma2Config(
            **small, head_dim=16, num_hidden_layers=3, rms_norm_eps=1e-6, rope_parameters=rope(1e4),
            query_pre_attn_scalar=24, attn_logit_softcapping=2.5, final_logit_softcapping=3.0,
            sliding_window=WINDOW, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            tie_word_embeddings=True, **gemma_act, **common),
         ROPE_PROMPTS, {"norm_center": 0.0, "softcap": True, "window": True}, "v5"),
        ("tiny-gemma3", Gemma3ForCausalLM, Gemma3TextConfig(
            **small, head_dim=16, num_hidden_layers=3, rms_norm_eps=1e-6,
            rope_parameters={"sliding_attention": rope(10000.0),
                             "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}},
            query_pre_attn_scalar=32, sliding_window=WINDOW,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
            final_logit_softcapping=None, attn_logit_softcapping=None, tie_word_embeddings=True,
            **gemma_act, **common),
         ROPE_PROMPTS, {"norm_center": 0.0, "window": True, "rope_tables": True}, "v5"),
        ("tiny-pythia", GPTNeoXForCausalLM, GPTNeoXConfig(
            hidden_size=48, num_attention_heads=3, num_hidden_layers=2, intermediate_size=96,
            max_position_embeddings=128, layer_norm_eps=1e-5, hidden_act="gelu",
            rope_parameters=rope(10000.0, partial_rotary_factor=0.25), use_parallel_residual=True,
            attention_bias=True, tie_word_embeddings=False, **common),
         TINY_PROMPTS, {"rope_tables": True}, "neox_hub"),
        ("tiny-neox-seq", GPTNeoXForCausalLM, GPTNeoXConfig(
            hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=64,
            max_position_embeddings=128, layer_norm_eps=1e-5, hidden_act="gelu",
            rope_parameters=rope(10000.0, partial_rotary_factor=0.5), use_parallel_residual=False,
            attention_bias=True, tie_word_embeddings=False, **common),
         TINY_PROMPTS, {"rope_tables": True}, "v5"),
        ("tiny-phi3", Phi3ForCausalLM, Phi3Config(
            **small, num_hidden_layers=2, rms_norm_eps=1e-5, original_max_position_embeddings=128,
            rope_parameters=rope(10000.0), tie_word_embeddings=False, hidden_act="silu", **common),
         TINY_PROMPTS, {}, "v5"),
        ("tiny-phi3-longrope", Phi3ForCausalLM, Phi3Config(
            hidden_size=32, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
            num_hidden_layers=2, rms_norm_eps=1e-5, max_position_embeddings=256, original_max_position_embeddings=64,
            rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                             "short_factor": PHI3_SHORT, "long_factor": PHI3_LONG},
            tie_word_embeddings=False, hidden_act="silu", **common),
         ROPE_PROMPTS, {"longrope": True}, "hub"),
        ("tiny-mistral-window", MistralForCausalLM, MistralConfig(
            **small, head_dim=16, num_hidden_layers=2, rms_norm_eps=1e-5, rope_parameters=rope(10000.0),
            sliding_window=WINDOW, tie_word_embeddings=False, hidden_act="silu", **common),
         ROPE_PROMPTS, {"window": True}, "v5"),
        ("tiny-qwen2-window", Qwen2ForCausalLM, Qwen2Config(
            **small, num_hidden_layers=3, rms_norm_eps=1e-6, rope_parameters=rope(1e6),
            use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1,
            tie_word_embeddings=True, hidden_act="silu", **common),
         ROPE_PROMPTS, {"window": True}, "v5"),
    ]


# What each family does that a reimplementation must match (transformers 5.24's modeling_<family>.py),
# written to the sidecar as "family_notes".
FAMILY_NOTES = {
    "qwen3": [
        "q_norm / k_norm: RMSNorm over head_dim, weight [head_dim] shared by all heads, applied per head to q and "
        "k after the projection and BEFORE RoPE (k_norm on the kv heads); eps = rms_norm_eps; no q/k/v biases "
        "(attention_bias false).",
        "head_dim from config (16) != hidden_size / num_attention_heads (8): q_proj [H*head_dim, d], "
        "o_proj [d, H*head_dim]; scaling head_dim^-0.5.",
        "layer_types written to config.json (all full_attention: use_sliding_window false).",
    ],
    "olmo2": [
        "No pre-norms: h = h + post_attention_layernorm(attn(h)); h = h + post_feedforward_layernorm(mlp(h)); "
        "the final norm as usual.",
        "q_norm is an RMSNorm over the WHOLE q projection (width num_attention_heads * head_dim = 32), k_norm over "
        "the whole k projection (num_key_value_heads * head_dim = 16), applied before splitting into heads and "
        "before RoPE (unlike Qwen3's per-head norms).",
        "RMSNorm computes (weight * x_normalized) in float32 then casts (Llama casts before the weight multiply).",
    ],
    "gemma": [
        "embed_tokens multiplies by embed_scale = sqrt(hidden_size) inside its forward (a float32 tensor here, "
        "cast to the weight dtype); resid[0] is that scaled embedding. model(inputs_embeds=x) does NOT scale x, "
        "so grad_logprob / grad_prob are w.r.t. the unscaled rows (= sqrt(d) * the gradient w.r.t. resid[0]).",
        "RMSNorm: x * rsqrt(mean(x^2) + eps) * (1 + weight), computed in float32 (weights here are jittered around "
        "0, so (1 + w) is ~1 +- 0.1). The final norm too.",
        "MLP: down(gelu_tanh(gate(x)) * up(x)) (gelu_pytorch_tanh; config hidden_act 'gelu' is rewritten to it).",
        "MQA: num_key_value_heads 1; head_dim 16 != 32 / 4; scaling head_dim^-0.5; lm_head tied to embed_tokens "
        "(unscaled weight).",
    ],
    "gemma2": [
        "Four norms per layer (all (1 + w) RMSNorms in float32): h = h + post_attention_layernorm(attn("
        "input_layernorm(h))); h = h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h))).",
        "Attention scores: (q . k) * query_pre_attn_scalar^-0.5 (24^-0.5 here, NOT head_dim^-0.5), then "
        "attn_logit_softcapping: s = cap * tanh(s / cap), then the (causal or sliding) mask, then softmax.",
        "Logits: lm_head(final_norm(h)), then final_logit_softcapping: cap * tanh(logits / cap). 'logits' here "
        "are after the cap.",
        "layer_types from config.json (default: sliding_attention for even layer index i, i.e. (i + 1) % 2 != 0); "
        "the sliding layers see the last sliding_window keys (q - window < k <= q). One RoPE for all layers.",
        "embed_scale sqrt(hidden_size) as in Gemma (gradients w.r.t. the unscaled rows); the config key is "
        "hidden_activation (not hidden_act).",
    ],
    "gemma3_text": [
        "rope_parameters is keyed by layer type: {'sliding_attention': {...}, 'full_attention': {...}} (what "
        "transformers 5 saves; Hub checkpoints written by 4.x have rope_theta (global), rope_local_base_freq "
        "(local) and rope_scaling (applies to full_attention only), which transformers converts to this). The "
        "rotary module computes one cos/sin table per layer type and layer i uses the table of layer_types[i]: "
        "sliding layers theta 10000 unscaled, full layers theta 1e6 with linear factor 8 (inv_freq / 8).",
        "q_norm / k_norm: (1 + w) RMSNorm over head_dim per head, after the projection, before RoPE.",
        "Scores scaled by query_pre_attn_scalar^-0.5 (32^-0.5 here; head_dim 16). No attention soft-capping in "
        "Gemma 3's attention (attn_logit_softcapping is ignored even if set); final_logit_softcapping is applied "
        "if set (null here).",
        "Four (1 + w) norms per layer as in Gemma 2, embed_scale sqrt(hidden_size) (gradients w.r.t. the unscaled "
        "rows), tied lm_head.",
        "layer_types from config.json (default pattern: every sliding_window_pattern-th layer (6) full).",
    ],
    "gpt_neox": [
        "query_key_value is fused PER HEAD: its output (3 * hidden) is viewed as [heads, 3 * head_size] and each "
        "head's chunk split into q, k, v (rows h*3*hs .. h*3*hs+hs-1 = q of head h, the next hs = k, then v), "
        "not [all q | all k | all v]. Biases on every linear and LayerNorm.",
        "Partial rotary: rotary_dim = int(head_size * partial_rotary_factor); only the first rotary_dim dims of "
        "each q/k head are rotated (rotate_half within those dims), the rest pass through; inv_freq uses "
        "rotary_dim as the dimension (theta^(-2i/rotary_dim)).",
        "use_parallel_residual true: h = h + attn(ln1(h)) + mlp(ln2(h)) (both norms read the block input); false: "
        "h = h + attn(ln1(h)); h = h + mlp(ln2(h)).",
        "MLP dense_h_to_4h -> gelu (exact erf) -> dense_4h_to_h; final_layer_norm; untied output matrix: "
        "transformers 5 names it lm_head in the model and reads/writes 'embed_out.weight' in the checkpoint "
        "(conversion_mapping renames it), as in real Pythia checkpoints.",
        "Config: 4.x / Hub layout is rotary_pct + rotary_emb_base; transformers 5 reads them into rope_parameters "
        "(partial_rotary_factor, rope_theta).",
    ],
    "phi3": [
        "qkv_proj fused as [all q (H*hd rows) | all k (KV*hd) | all v (KV*hd)]; gate_up_proj fused as "
        "[gate (ffn rows) | up (ffn rows)], MLP = down(up * silu(gate)). No biases.",
        "head_dim = hidden_size / num_attention_heads (Phi3Config has no head_dim key).",
        "original_max_position_embeddings: the top-level config key takes priority over the one in "
        "rope_scaling / rope_parameters (standardize_rope_params).",
    ],
    "mistral": [
        "sliding_window applies to every layer (no layer_types): a query at q sees keys q - window < k <= q.",
        "head_dim from config (16) != 32 / 4.",
    ],
    "qwen2": [
        "Window layers: sliding_window is kept only if use_sliding_window is true; layer_types[i] = "
        "sliding_attention iff i >= max_window_layers (the LAST layers slide, the first max_window_layers are "
        "full), and transformers 5 writes layer_types into config.json. Here max_window_layers 1 of 3 layers: "
        "[full, sliding, sliding].",
        "q/k/v biases (o_proj none).",
    ],
}


def spec_meta(model, spec, all_ids):
    """The sidecar blocks every family golden has: salient config values, the gradient convention and
    the family's notes."""
    cfg = model.config
    keys = ["model_type", "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
            "intermediate_size", "vocab_size", "tie_word_embeddings", "hidden_act", "hidden_activation",
            "rms_norm_eps", "layer_norm_eps", "max_position_embeddings", "original_max_position_embeddings",
            "rope_parameters", "attention_bias", "sliding_window", "use_sliding_window", "max_window_layers",
            "layer_types", "query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping",
            "use_parallel_residual"]
    arch = {k: getattr(cfg, k) for k in keys if hasattr(cfg, k)}
    arch["head_dim"] = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    emb = model.get_input_embeddings()
    scale = getattr(emb, "embed_scale", None)
    m = {
        "architecture": arch,
        "embed_scale": None if scale is None else float(scale),
        "grad_note": "grad_logprob / grad_prob: d/d token-embedding rows (embedding matrix rows for the input ids, "
                     "fed as inputs_embeds) of log p / p of target at the last position"
                     + ("; the model multiplies them by embed_scale before block 0, so they are embed_scale "
                        "times the gradient w.r.t. resid[0]" if scale is not None else ""),
        "norm_weights": "jittered around 0 (the norm multiplies by 1 + w)" if spec.get("norm_center") == 0.0
                        else "1 + 0.1 * randn (biases, where the family has them, random too)",
        "family_notes": FAMILY_NOTES[cfg.model_type],
    }
    return m


def block_by_hand(model, l, x):
    """Block l of a decoder family recomputed from its weights and the config alone, as FAMILY_NOTES
    describe it (fused-weight layouts, norm widths and placement, (1 + w), scaling, soft-capping, window,
    per-layer RoPE, partial rotary, parallel residual): x = resid[l] [T, d] -> (resid[l+1], mlp_act[l]).
    Checked against transformers' hooks, so the notes are what transformers computes."""
    cfg, mt = model.config, model.config.model_type
    T = x.shape[0]
    neox = mt == "gpt_neox"
    layer = model.gpt_neox.layers[l] if neox else model.model.layers[l]
    H = cfg.num_attention_heads
    KV = getattr(cfg, "num_key_value_heads", H)
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    gemma = mt.startswith("gemma")
    F = torch.nn.functional

    def rms(v, norm, plus_one=gemma):
        w = norm.weight
        return v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps) * ((1.0 + w) if plus_one else w)

    def lin(v, mod):
        return F.linear(v, mod.weight, mod.bias)

    lt = (getattr(cfg, "layer_types", None) or ["full_attention"] * cfg.num_hidden_layers)[l]
    rp = cfg.rope_parameters[lt] if lt in cfg.rope_parameters else cfg.rope_parameters
    rot = int(hd * rp.get("partial_rotary_factor", 1.0))
    inv, att = ref_rope(rp, rot, cfg.max_position_embeddings, seq_len=T)
    c, s = (torch.from_numpy(t).float() for t in ref_tables(inv, att, range(T)))

    def rope(v):  # [heads, T, hd]: rotate_half on the first rot dims
        r, rest = v[..., :rot], v[..., rot:]
        half = torch.cat([-r[..., rot // 2:], r[..., : rot // 2]], dim=-1)
        return torch.cat([r * c + half * s, rest], dim=-1)

    # --- attention input and q, k, v [heads, T, hd]
    if neox:
        h_in = F.layer_norm(x, (x.shape[-1],), layer.input_layernorm.weight, layer.input_layernorm.bias, cfg.layer_norm_eps)
        qkv = lin(h_in, layer.attention.query_key_value).view(T, H, 3 * hd).transpose(0, 1)
        q, k, v = qkv[..., :hd], qkv[..., hd: 2 * hd], qkv[..., 2 * hd:]
        attn_mod = layer.attention
    else:
        a = layer.self_attn
        h_in = x if mt == "olmo2" else rms(x, layer.input_layernorm)
        if mt == "phi3":
            qkv = lin(h_in, a.qkv_proj)
            q, k, v = qkv[:, : H * hd], qkv[:, H * hd: (H + KV) * hd], qkv[:, (H + KV) * hd:]
        else:
            q, k, v = lin(h_in, a.q_proj), lin(h_in, a.k_proj), lin(h_in, a.v_proj)
        if mt == "olmo2":  # over the whole projection width, before the split into heads
            q, k = rms(q, a.q_norm), rms(k, a.k_norm)
        q, k, v = (t.view(T, -1, hd).transpose(0, 1) for t in (q, k, v))
        if mt in ("qwen3", "gemma3_text"):  # per head, weight [hd]
            q, k = rms(q, a.q_norm), rms(k, a.k_norm)
        attn_mod = a
    q, k = rope(q), rope(k)
    k, v = k.repeat_interleave(H // k.shape[0], 0), v.repeat_interleave(H // v.shape[0], 0)
    scale = (cfg.query_pre_attn_scalar if gemma and mt != "gemma" else hd) ** -0.5
    sc = q @ k.transpose(1, 2) * scale
    cap = getattr(cfg, "attn_logit_softcapping", None) if mt == "gemma2" else None
    if cap:
        sc = cap * torch.tanh(sc / cap)
    qi, ki = torch.arange(T).view(-1, 1), torch.arange(T).view(1, -1)
    ok = ki <= qi
    window = cfg.sliding_window if (lt == "sliding_attention" or mt == "mistral") else None
    if window:
        ok = ok & (ki > qi - window)
    p = torch.softmax(sc.masked_fill(~ok, float("-inf")), dim=-1)
    o = (p @ v).transpose(0, 1).reshape(T, H * hd)
    o = lin(o, attn_mod.dense if neox else attn_mod.o_proj)

    # --- residual and MLP
    if neox:
        ln2 = layer.post_attention_layernorm
        mlp_in = F.layer_norm(x if cfg.use_parallel_residual else x + o, (x.shape[-1],), ln2.weight, ln2.bias,
                              cfg.layer_norm_eps)
        act = F.gelu(lin(mlp_in, layer.mlp.dense_h_to_4h))
        out = lin(act, layer.mlp.dense_4h_to_h)
        return x + o + out, act  # both: parallel reads x for both norms, sequential x + o for ln2 (above)
    if mt == "olmo2":
        h = x + rms(o, layer.post_attention_layernorm)
        mlp_in = h
    elif mt in ("gemma2", "gemma3_text"):
        h = x + rms(o, layer.post_attention_layernorm)
        mlp_in = rms(h, layer.pre_feedforward_layernorm)
    else:
        h = x + o
        mlp_in = rms(h, layer.post_attention_layernorm)
    m = layer.mlp
    if mt == "phi3":
        gu = F.linear(mlp_in, m.gate_up_proj.weight)
        gate, up = gu[:, : cfg.intermediate_size], gu[:, cfg.intermediate_size:]
    else:
        gate, up = F.linear(mlp_in, m.gate_proj.weight), F.linear(mlp_in, m.up_proj.weight)
    act = (F.gelu(gate, approximate="tanh") if gemma else F.silu(gate)) * up
    out = F.linear(act, m.down_proj.weight)
    if mt in ("olmo2", "gemma2", "gemma3_text"):
        out = rms(out, layer.post_feedforward_layernorm)
    return h + out, act


def neox_hub_layout(path):
    """Rewrites a GPT-NeoX config.json the way Pythia checkpoints on the Hub have it: rotary_pct and
    rotary_emb_base, no rope_parameters / rope_theta (transformers 5 reads them back; checked on load)."""
    cfg = json.loads(path.read_text())
    rp = cfg.pop("rope_parameters")
    cfg.pop("rope_theta", None)
    assert rp["rope_type"] == "default", rp
    cfg["rotary_pct"] = rp["partial_rotary_factor"]
    cfg["rotary_emb_base"] = rp["rope_theta"]
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def make_family(name, cls, cfg, prompts, spec, layout, tok, seed):
    intended_rp = copy.deepcopy(cfg.rope_parameters)
    d = save_checkpoint(name, cls, cfg, tok, seed, layout="v5" if layout == "neox_hub" else layout,
                        norm_center=spec.get("norm_center", 1.0))
    if layout == "neox_hub":
        neox_hub_layout(d / "config.json")
    back = AutoConfig.from_pretrained(d)
    assert back.rope_parameters == intended_rp, f"{name}: config.json read back as {back.rope_parameters}, not {intended_rp}"
    st = {k: v for k, v in spec.items() if k not in ("longrope",)}
    tiny_golden(name, d, tok, prompts=prompts, rope=intended_rp if spec.get("longrope") else None, spec=st)


# --------------------------------------------------------------------------- BERT

BERT_NAME = "tiny-bert"
FAMILY_SEED = SEED + 100
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4
BERT_PROMPTS = [
    "The cat sat on the [MASK].",
    "Once upon a [MASK] there was a [MASK] house by the river.",
    "In 1999, 42 people walked 7 [MASK] to the old river bank.",
]


def bert_normalizer():
    return normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)


def wordpiece_vocab():
    """A deterministic WordPiece vocabulary of VOCAB_SIZE tokens from TRAIN_TEXT (tokenizers' WordPieceTrainer
    is not: its ids, and which pieces it keeps, change from run to run): BERT_SPECIALS, every character seen
    (word-initial form and ## continuation form), then the most frequent whole words (count >= 2), then the
    most frequent ## word endings of 2-4 characters; ties broken alphabetically."""
    norm, pre = bert_normalizer(), pre_tokenizers.BertPreTokenizer()
    counts = {}
    for line in TRAIN_TEXT.splitlines():
        for w, _ in pre.pre_tokenize_str(norm.normalize_str(line)):
            counts[w] = counts.get(w, 0) + 1
    vocab = list(BERT_SPECIALS) + sorted({c for w in counts for c in w})
    vocab += ["##" + c for c in sorted({c for w in counts for c in w[1:]})]
    n_suffix = 64
    words = sorted((w for w in counts if len(w) > 1 and counts[w] >= 2), key=lambda w: (-counts[w], w))
    vocab += words[: VOCAB_SIZE - n_suffix - len(vocab)]
    suffix = {}
    for w, n in counts.items():
        for k in range(1, len(w) - 1):
            if 2 <= len(w) - k <= 4:
                suffix["##" + w[k:]] = suffix.get("##" + w[k:], 0) + n
    have = set(vocab)
    vocab += [t for t in sorted(suffix, key=lambda t: (-suffix[t], t)) if t not in have][: VOCAB_SIZE - len(vocab)]
    assert len(vocab) == len(set(vocab)) == VOCAB_SIZE, len(vocab)
    return {t: i for i, t in enumerate(vocab)}


def train_wordpiece():
    tok = Tokenizer(models.WordPiece(vocab=wordpiece_vocab(), unk_token="[UNK]", continuing_subword_prefix="##"))
    tok.normalizer = bert_normalizer()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(BERT_SPECIALS)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return tok


def make_bert_tokenizer():
    tok = train_wordpiece()
    assert tok.to_str() == train_wordpiece().to_str(), "WordPiece vocabulary is not deterministic"
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
    assert [tok.token_to_id(t) for t in BERT_SPECIALS] == list(range(len(BERT_SPECIALS)))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                                   cls_token="[CLS]", mask_token="[MASK]")
    return tok, fast


def bert_config(vocab):
    return BertConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        hidden_act="gelu", max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-12,
        initializer_range=INIT_STD, pad_token_id=0, tie_word_embeddings=True,
    )


BERT_KEYS = {
    "p{i}.input_ids": "[T] int64: tokenizer.json's encoding of the prompt, [CLS] ... [SEP] included (token_type_ids "
                      "all 0, no attention mask: every position sees every position)",
    "p{i}.resid": "[L+1, T, d]: 0 = output of the embeddings block, LayerNorm(word_embeddings[ids] + "
                  "position_embeddings[0..T-1] + token_type_embeddings[0]) (post-LN: the stream entering layer 0); "
                  "l+1 = output of layer l (after its output LayerNorm). resid[L] is the encoder output (no final "
                  "norm: BERT's LayerNorms sit inside each layer).",
    "p{i}.mlp_act": "[L, T, ffn]: gelu(intermediate.dense(a)) of layer l, a = the attention sublayer's output "
                    "(after attention.output.LayerNorm); the input of output.dense",
    "p{i}.attn": "[L, H, T, T]: softmax(q k^T / sqrt(head_size)) (eager, bidirectional)",
    "p{i}.head_hidden": "[T, d]: cls.predictions.transform(resid[L]) = LayerNorm(gelu(dense(resid[L]))), the MLM "
                        "head's input to the decoder",
    "p{i}.logits": "[T, V]: the MLM head's logits at every position: head_hidden @ word_embeddings^T + "
                   "cls.predictions.bias (decoder weight tied to the word embeddings)",
    "p{i}.mask_positions": "[n_mask] int64: the positions of [MASK] in input_ids (1 or 2)",
    "p{i}.target": "[1] int64: argmax of logits at the FIRST mask position",
    "p{i}.grad_logprob": "[T, d]: d log softmax(logits[m])[target] / d word-embedding rows (word_embeddings[ids], fed "
                         "as inputs_embeds; position and token-type embeddings are added inside), m = first mask "
                         "position",
    "p{i}.grad_prob": "[T, d]: the same for softmax(logits[m])[target]",
}


def bert_golden(seed):
    name = BERT_NAME
    tok_obj, fast = make_bert_tokenizer()
    cfg = bert_config(tok_obj.get_vocab_size())
    d = save_checkpoint(name, BertForMaskedLM, cfg, fast, seed)
    model = AutoModelForMaskedLM.from_pretrained(d, attn_implementation="eager", dtype=torch.float32).eval()
    assert type(model) is BertForMaskedLM
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    auto = AutoTokenizer.from_pretrained(d)
    bert, head = model.bert, model.cls.predictions
    emb = bert.embeddings
    assert head.decoder.weight.data_ptr() == emb.word_embeddings.weight.data_ptr(), "decoder not tied"
    L = cfg.num_hidden_layers
    mask_id, cls_id, sep_id = (tok.token_to_id(t) for t in ("[MASK]", "[CLS]", "[SEP]"))
    tensors, all_ids, all_masks, auto_same = {}, [], [], []
    for i, prompt in enumerate(BERT_PROMPTS):
        enc = tok.encode(prompt)
        ids_list = enc.ids
        assert ids_list[0] == cls_id and ids_list[-1] == sep_id and set(enc.type_ids) == {0}, enc.tokens
        auto_same.append(auto(prompt).input_ids == ids_list)
        masks = [k for k, t in enumerate(ids_list) if t == mask_id]
        assert 1 <= len(masks) <= 2, enc.tokens
        ids = torch.tensor([ids_list], dtype=torch.int64)
        T = ids.shape[1]
        rec = {"resid": [None] * (L + 1), "mlp": [None] * L}
        hs = [emb.register_forward_hook(lambda _m, _a, o: rec["resid"].__setitem__(0, o[0].detach().clone())),
              head.transform.register_forward_hook(lambda _m, _a, o: rec.__setitem__("head", o[0].detach().clone()))]
        for l, layer in enumerate(bert.encoder.layer):
            hs.append(layer.register_forward_hook(
                lambda _m, _a, o, l=l: rec["resid"].__setitem__(l + 1, (o[0] if isinstance(o, tuple) else o)[0].detach().clone())))
            hs.append(layer.intermediate.register_forward_hook(
                lambda _m, _a, o, l=l: rec["mlp"].__setitem__(l, o[0].detach().clone())))
        with torch.no_grad():
            out = model(ids, output_attentions=True, output_hidden_states=True)
        for h in hs:
            h.remove()
        resid = torch.stack(rec["resid"])
        assert len(out.hidden_states) == L + 1
        for l in range(L + 1):
            assert_close(out.hidden_states[l][0], resid[l], f"{name} p{i} hidden_states[{l}]", TOL)
        logits = out.logits[0]
        with torch.no_grad():
            e = emb.word_embeddings.weight[ids[0]] + emb.position_embeddings.weight[:T] + emb.token_type_embeddings.weight[0]
            assert_close(emb.LayerNorm(e), resid[0], f"{name} p{i} embeddings by hand", TOL)
            assert_close(head.transform(resid[L]), rec["head"], f"{name} p{i} head transform", TOL)
            by_hand = rec["head"] @ emb.word_embeddings.weight.T + head.bias
            assert_close(by_hand, logits, f"{name} p{i} logits by hand", TOL)
        m = masks[0]
        target = logits[m].argmax().view(1)
        logits_e, g_lp, g_p = token_embedding_grads(model, ids, target.item(), pos=m)
        assert_close(logits_e, logits[m], f"{name} p{i} logits via inputs_embeds", TOL)
        tensors.update({
            f"p{i}.input_ids": ids[0],
            f"p{i}.resid": resid,
            f"p{i}.mlp_act": torch.stack(rec["mlp"]),
            f"p{i}.attn": torch.stack([a[0] for a in out.attentions]),
            f"p{i}.head_hidden": rec["head"],
            f"p{i}.logits": logits,
            f"p{i}.mask_positions": torch.tensor(masks, dtype=torch.int64),
            f"p{i}.target": target.to(torch.int64),
            f"p{i}.grad_logprob": g_lp,
            f"p{i}.grad_prob": g_p,
        })
        assert tensors[f"p{i}.attn"].shape == (L, cfg.num_attention_heads, T, T)
        assert tensors[f"p{i}.mlp_act"].shape == (L, T, cfg.intermediate_size)
        all_ids.append(ids_list)
        all_masks.append(masks)
        print(f"  {name} p{i}: T={T} masks={masks} target={target.item()} ({tok.id_to_token(target.item())!r})")
    meta = {
        "model": name,
        "checkpoint": f"tests/data/{name}",
        "prompts": BERT_PROMPTS,
        "input_ids": all_ids,
        "tokens": [tok.encode(p).tokens for p in BERT_PROMPTS],
        "tokenizer_note": "input_ids = tokenizers.Tokenizer.from_file(tokenizer.json).encode(prompt).ids: a WordPiece "
                          "vocabulary (## continuation prefix) trained here on TRAIN_TEXT, BertNormalizer (lowercase, "
                          "clean_text, Chinese chars split, accents kept: strip_accents null), BertPreTokenizer, "
                          "TemplateProcessing [CLS] $A [SEP]; [PAD] [UNK] [CLS] [SEP] [MASK] = ids 0..4 (added tokens, "
                          "matched before normalization, so '[MASK]' survives lowercasing)",
        "autotokenizer_same_ids": auto_same,
        "mask_positions": all_masks,
        "targets": [int(tensors[f"p{i}.target"]) for i in range(len(BERT_PROMPTS))],
        "target_tokens": [tok.id_to_token(int(tensors[f"p{i}.target"])) for i in range(len(BERT_PROMPTS))],
        "keys": BERT_KEYS,
        "architecture": {k: getattr(cfg, k) for k in (
            "num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size",
            "hidden_act", "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "tie_word_embeddings")},
        "family_notes": [
            "Post-LN encoder: a = LayerNorm(x + attention.output.dense(selfattn(x))); "
            "x' = LayerNorm(a + output.dense(gelu(intermediate.dense(a)))); attention.self.{query,key,value} "
            "separate linears with biases, scaling head_size^-0.5, no mask (bidirectional).",
            "Embeddings: LayerNorm(word + position (absolute, learned, positions 0..T-1) + token_type (row 0)); "
            "layer_norm_eps 1e-12; gelu is the exact erf gelu.",
            "MLM head (BertOnlyMLMHead, weights cls.predictions.*): transform.dense -> gelu -> transform.LayerNorm, "
            "then decoder = word_embeddings^T (tied: tie_word_embeddings true, the transformers default for "
            "BertForMaskedLM) plus the vocab bias cls.predictions.bias (the decoder's bias is tied to it). No "
            "pooler (BertForMaskedLM builds BertModel(add_pooling_layer=False)).",
        ],
        "grad_note": "gradients w.r.t. the word-embedding rows fed as inputs_embeds; position and token-type "
                     "embeddings are added inside BertEmbeddings, so they are not part of the input",
        "dtype": "float32",
        "attn_implementation": "eager",
        "versions": versions(),
    }
    write_golden(name, tensors, meta, GENERATOR)


# --------------------------------------------------------------------------- SmolLM2


def gguf_path():
    p = os.environ.get("TOKENLENS_GGUF")
    return Path(p) if p else fetch_model("smollm2")


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
    ap.add_argument("--only", metavar="NAMES", help="comma-separated list of what to make, e.g. "
                    "tiny-gemma2,tiny-qwen3 (names as in tests/data/; 'smollm2' for the SmolLM2 golden, "
                    "'tiny-bert' for BERT); default: everything")
    args = ap.parse_args()

    deterministic_setup()

    tok = make_tokenizer()
    tiny = tiny_configs(len(tok))
    rope = rope_configs(len(tok))
    fams = family_configs(len(tok))
    known = ([n for n, _, _ in tiny] + [n for n, _, _, _ in rope] + [f[0] for f in fams]
             + [BERT_NAME, "smollm2"])
    only = None
    if args.only:
        only = {n.strip() for n in args.only.split(",") if n.strip()}
        unknown = only - set(known)
        assert not unknown, f"--only: unknown {sorted(unknown)}; known: {known}"

    def wanted(name):
        return only is None or name in only

    # Seeds come from each model's place in these lists, not from the selection: a model made alone
    # is byte-identical to the one made with all the others.
    for k, (name, cls, cfg) in enumerate(tiny):
        if not wanted(name):
            continue
        print(f"{name}: writing checkpoint")
        d = save_checkpoint(name, cls, cfg, tok, SEED + k)
        tiny_golden(name, d, tok)
    for k, (name, cfg, rp, layout) in enumerate(rope, start=len(tiny)):
        if not wanted(name):
            continue
        print(f"{name}: writing checkpoint")
        d = save_checkpoint(name, LlamaForCausalLM, cfg, tok, SEED + k, layout=layout)
        tiny_golden(name, d, tok, prompts=ROPE_PROMPTS, rope=rp)
    for k, (name, cls, cfg, prompts, spec, layout) in enumerate(fams):
        if not wanted(name):
            continue
        print(f"{name}: writing checkpoint")
        make_family(name, cls, cfg, prompts, spec, layout, tok, FAMILY_SEED + k)
    if wanted(BERT_NAME):
        print(f"{BERT_NAME}: writing checkpoint")
        bert_golden(FAMILY_SEED + len(fams))
    if not args.skip_smollm2 and wanted("smollm2"):
        print("smollm2: loading GGUF")
        smollm2_golden()
    print("done; versions:", json.dumps(versions()))


if __name__ == "__main__":
    main()
