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
import json
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
    for p in TINY_PROMPTS:
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


def save_checkpoint(name, cls, cfg, tok, seed):
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


def tiny_golden(name, model_dir, tok_ref):
    model = load_tiny(model_dir)
    # Tokenize with tokenizer.json itself (what the Rust side loads). Do NOT use
    # AutoTokenizer here: for model_type qwen2, transformers 5 picks Qwen2Tokenizer, which
    # replaces the pre-tokenizer from tokenizer.json with Qwen2's own regex (digits split
    # one by one) and so gives different ids than tokenizer.json does.
    tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    L = model.config.num_hidden_layers
    tensors, all_ids, all_greedy = {}, [], []
    for i, prompt in enumerate(TINY_PROMPTS):
        ids_list = tok.encode(prompt).ids
        assert ids_list == tok_ref(prompt).input_ids, "tokenizer.json round trip changed the ids"
        assert 0 not in ids_list  # no BOS / EOT
        ids = torch.tensor([ids_list], dtype=torch.int64)
        cap = Capture(model)
        with torch.no_grad():
            out = model(ids, output_attentions=True, output_hidden_states=True)
        cap.remove()
        T = ids.shape[1]
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
        logits_e, g_lp, g_p = embedding_grads(model, ids, target.item())
        assert_close(logits_e, logits[-1], f"{name} p{i} logits via inputs_embeds", TOL)
        gr = greedy(model, ids, TINY_GREEDY_NEW)
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
        "prompts": TINY_PROMPTS,
        "input_ids": all_ids,
        "tokenizer_note": "input_ids = tokenizers.Tokenizer.from_file(tokenizer.json).encode(prompt).ids, no BOS",
        "greedy": all_greedy,
        "greedy_max_new_tokens": TINY_GREEDY_NEW,
        "greedy_note": "generate(do_sample=False, eos_token_id=None): EOS (id 0) does not stop generation",
        "targets": [int(tensors[f"p{i}.target"]) for i in range(len(TINY_PROMPTS))],
        "dtype": "float32",
        "attn_implementation": "eager",
        "versions": versions(),
    }
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
    for k, (name, cls, cfg) in enumerate(tiny_configs(len(tok))):
        print(f"{name}: writing checkpoint")
        d = save_checkpoint(name, cls, cfg, tok, SEED + k)
        tiny_golden(name, d, tok)
    if not args.skip_smollm2:
        print("smollm2: loading GGUF")
        smollm2_golden()
    print("done; versions:", json.dumps(versions()))


if __name__ == "__main__":
    main()
