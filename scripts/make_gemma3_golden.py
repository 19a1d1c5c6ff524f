#!/usr/bin/env python3
"""Golden reference outputs of the real Gemma 3 270M (the Q4_K_M GGUF `scripts/fetch-model.sh gemma3`
fetches), as transformers loads it, for tokenlens' Gemma 3 parity test.

Writes tests/data/golden/gemma3-270m.safetensors (< 2 MB) + gemma3-270m.json. The GGUF's sha256 is checked
before use (override the path with TOKENLENS_GEMMA3_GGUF=/path/to/file.gguf; the hash must still match).
transformers loads it with AutoModelForCausalLM.from_pretrained(dir, gguf_file=name, dtype=float32,
attn_implementation="eager") and AutoTokenizer the same way: every tensor dequantized to float32 by gguf-py
(tokenlens dequantizes the same blocks with candle), CPU, one thread. Each prompt runs on its own (batch 1,
no padding); the tokenizer adds <bos> (id 2) as transformers does. Per prompt i (L = 18 layers, d = 640,
H = 4 heads, V = 262144):

  p{i}.input_ids      [T]           int64, <bos> first
  p{i}.resid          [L+1, T, 640] 0 = the residual stream entering block 0 (embed_tokens output, already
                                    times sqrt(640): hidden_states[0]); l+1 = output of block l, before the
                                    final norm (forward hooks; transformers' hidden_states[-1] is after it)
  p{i}.top_ids        [T, 20]       int64: the top-20 logits' ids at every position (descending)
  p{i}.top_logits     [T, 20]       their logits
  p{i}.lens_top_ids   [L+1, T, 5]   int64: logit lens, top-5 ids of lm_head(model.model.norm(resid[l]))
                                    for every l (l = L gives the model's own top-5)
  p{i}.attn_l0        [H, T, T]     attention probabilities of layer 0 (sliding_attention)
  p{i}.attn_l5        [H, T, T]     layer 5 (full_attention)
  p{i}.mlp_act_l0     [T, 2048]     gelu_tanh(gate_proj(x)) * up_proj(x) of layer 0: the input of down_proj
  p{i}.greedy         [10]          int64: greedy continuation with the KV cache (generate, EOS ignored),
                                    checked equal to an argmax loop of full forwards without a cache
  p{i}.grad_logprob   [T, 640]      d log softmax(logits[T-1])[argmax] / d token-embedding rows: the rows
                                    embed_tokens.weight[ids] (unscaled) are the leaf, scaled by embed_scale
                                    (the float32 buffer sqrt(640), as Gemma3TextScaledWordEmbedding does)
                                    and fed as inputs_embeds; those logits are checked equal to the plain
                                    forward's

The prompts are short (the golden costs ~60 KB a token, mostly resid): T = 6, 7, 17, 2; all far inside the
512-token sliding window, so sliding and full layers differ here only by their RoPE base. The one-word
prompt "Yesterday" was chosen for clear greedy margins (every step >= 0.33; "Hello" had a step at 0.0007).

Checks (asserts): hooks vs transformers' hidden_states / final norm; resid[0] = embed_tokens.weight[ids] *
embed_scale; each block recomputed from the weights and config alone (make_goldens.block_by_hand, float32)
against resid and mlp_act_l0; lens[L] = the model's logits; GGUF vs loaded weights: every norm weight is the
GGUF's minus 1 (Gemma's (1 + w) RMSNorm), attn_q/attn_k rows not permuted, lm_head tied to embed_tokens.
The JSON records the config transformers built (and which values come from GGUF metadata and which are
transformers' defaults), the GGUF tensor types, prompts, ids, tokens, greedy tokens and text, per prompt
the max |logit| and the top-1 margin at the last position, the top-1 margin of each greedy step and the
smallest gaps in the stored rankings (to choose tolerances), the checks' errors, library versions and the GGUF's sha256.

Run with the reference venv (scripts/README.md): "$REFENV_PY" scripts/make_gemma3_golden.py
(~3 min on 2 cores, most of it loading the GGUF and its 262k vocabulary). A rerun with the same library
versions gives byte-identical files.
"""

import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import transformers
from gguf import GGUFReader
from gguf.quants import dequantize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from golden_util import GOLDEN, assert_close, deterministic_setup, fetch_model, greedy, sha256, write_golden  # noqa: E402
from make_goldens import TOL, Capture, block_by_hand, token_embedding_grads, versions  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

GENERATOR = "scripts/make_gemma3_golden.py"
STEM = "gemma3-270m"
GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
MAX_BYTES = 2_000_000

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village by the sea, there lived a",
    "Yesterday",
]
EXPECTED_IDS = {0: [2, 818, 5279, 529, 7001, 563]}  # <bos> The ▁capital ▁of ▁France ▁is
ATTN_LAYERS = (0, 5)
TOP_K, LENS_K = 20, 5
GREEDY_NEW = 10

# What transformers' GGUF loader maps from the file's metadata (integrations/ggml.py, "gemma3") and the
# Gemma3TextConfig values it leaves at their defaults (the GGUF has no key for them).
FROM_GGUF = {
    "gemma3.context_length": "max_position_embeddings",
    "gemma3.block_count": "num_hidden_layers",
    "gemma3.feed_forward_length": "intermediate_size",
    "gemma3.embedding_length": "hidden_size",
    "gemma3.rope.freq_base": "rope_parameters.full_attention.rope_theta",
    "gemma3.attention.key_length": "head_dim",
    "gemma3.attention.head_count": "num_attention_heads",
    "gemma3.attention.head_count_kv": "num_key_value_heads",
    "gemma3.attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "gemma3.attention.sliding_window": "sliding_window",
}
DEFAULTS = ["layer_types (from the default sliding_window_pattern 6: every 6th layer full)",
            "rope_parameters.sliding_attention (rope_theta 10000, default rope: Gemma3TextConfig's "
            "rope_local_base_freq)", "query_pre_attn_scalar 256", "attn_logit_softcapping null",
            "final_logit_softcapping null", "hidden_activation gelu_pytorch_tanh", "tie_word_embeddings true "
            "(the GGUF has no output.weight)"]

CONFIG_KEYS = ["model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
               "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings", "rms_norm_eps",
               "hidden_activation", "layer_types", "sliding_window", "_sliding_window_pattern",
               "rope_parameters", "query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping",
               "tie_word_embeddings", "use_bidirectional_attention", "bos_token_id", "eos_token_id",
               "pad_token_id"]

# GGUF tensor name (block part) -> the loaded module's parameter
NORMS = {"attn_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
         "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
         "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}


def gguf_file():
    env = os.environ.get("TOKENLENS_GEMMA3_GGUF")
    path = Path(env) if env else fetch_model("gemma3")
    digest = sha256(path)
    assert digest == GGUF_SHA256, f"{path}: sha256 {digest}, expected {GGUF_SHA256}"
    return path


def check_weights(model, reader):
    """The loaded float32 weights vs the GGUF's tensors: norms (F32 in the file) are the GGUF's minus 1 exactly,
    attn_q / attn_k of block 0 are the dequantized rows in the file's order (no un-permute), lm_head is
    embed_tokens. Returns notes for the JSON."""
    tensors = {t.name: t for t in reader.tensors}
    layers = model.model.layers
    n_norms = 0
    for name, t in tensors.items():
        parts = name.split(".")
        if name == "output_norm.weight":
            mod = model.model.norm.weight
        elif parts[0] == "blk" and parts[2] in NORMS:
            mod = layers[int(parts[1])].get_submodule(NORMS[parts[2]]).weight
        else:
            continue
        assert t.tensor_type.name == "F32", (name, t.tensor_type.name)
        raw = torch.from_numpy(np.asarray(t.data, dtype=np.float32).copy())
        assert torch.equal(mod.detach(), raw - 1.0), f"{name}: not the GGUF's weight minus 1"
        n_norms += 1
    assert n_norms == 1 + 6 * len(layers), n_norms
    for gname, mod in (("attn_q", layers[0].self_attn.q_proj), ("attn_k", layers[0].self_attn.k_proj)):
        t = tensors[f"blk.0.{gname}.weight"]
        w = torch.from_numpy(dequantize(t.data, t.tensor_type).astype(np.float32))
        assert torch.equal(mod.weight.detach(), w.reshape(mod.weight.shape)), f"{gname} rows permuted"
    assert "output.weight" not in tensors
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "lm_head not tied"
    types = {n: tensors[n].tensor_type.name for n in sorted(tensors) if not n.startswith("blk.") or n.startswith("blk.0.")}
    return {
        "tensor_type_counts": dict(sorted(Counter(t.tensor_type.name for t in reader.tensors).items())),
        "tensor_types_block0_and_global": types,
        "norms": f"all {n_norms} norm weights (output_norm, per block attn_norm, post_attention_norm, ffn_norm, "
                 "post_ffw_norm, attn_q_norm, attn_k_norm; F32 in the GGUF) load as the GGUF value minus 1 "
                 "exactly (transformers' Gemma2TensorProcessor, also used for gemma3, subtracts 1 from every "
                 "'norm.weight'; llama.cpp's converter added 1); the model computes x / rms(x) * (1 + w), so "
                 "the effective scale is the GGUF value itself",
        "norm_mapping": {f"blk.N.{k}": f"model.layers.N.{v}" for k, v in NORMS.items()}
                        | {"output_norm": "model.norm"},
        "q_k_layout": "attn_q / attn_k rows are used in the file's order (no un-permute for Gemma; checked on "
                      "block 0: loaded q_proj / k_proj == gguf.quants.dequantize of the file's blocks); RoPE is "
                      "rotate-half (first half of each head's 256 dims paired with the second half)",
        "lm_head": "tied: the GGUF has no output.weight; lm_head.weight is embed_tokens.weight (token_embd, Q8_0), "
                   "unscaled (the sqrt(640) scale applies to the input embeddings only)",
    }


def min_gap(values):
    """Smallest difference between neighbours along the last axis of descending-sorted values."""
    return float((values[..., :-1] - values[..., 1:]).min()) if values.shape[-1] > 1 else None


def main():
    t0 = time.time()
    deterministic_setup()
    path = gguf_file()
    d, f = str(path.parent), path.name
    assert f == GGUF_NAME, f
    reader = GGUFReader(str(path))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=f, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    t_load = time.time() - t0
    cfg = model.config
    config = {k: getattr(cfg, k) for k in CONFIG_KEYS}
    print("config transformers built from the GGUF:")
    for k, v in config.items():
        print(f"  {k}: {v}")
    L, dm, H = cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads
    assert (type(model).__name__, L, dm, H, cfg.num_key_value_heads, cfg.head_dim, cfg.intermediate_size,
            cfg.vocab_size) == ("Gemma3ForCausalLM", 18, 640, 4, 1, 256, 2048, 262144), config
    assert [cfg.layer_types[l] for l in ATTN_LAYERS] == ["sliding_attention", "full_attention"], cfg.layer_types
    weights = check_weights(model, reader)
    emb = model.model.embed_tokens
    embed_scale = emb.embed_scale.to(torch.float32)
    rot = model.model.rotary_emb
    rope_scaling = {lt: float(getattr(rot, f"{lt}_attention_scaling")) for lt in cfg.rope_parameters}
    scaling = {f"layer {l}": layer.self_attn.scaling for l, layer in enumerate(model.model.layers) if l in ATTN_LAYERS}

    tensors, per_prompt, checks = {}, [], []
    for i, prompt in enumerate(PROMPTS):
        ids_list = tok(prompt).input_ids
        assert ids_list[0] == cfg.bos_token_id == 2 and ids_list[1:] == tok(prompt, add_special_tokens=False).input_ids
        if i in EXPECTED_IDS:
            assert ids_list == EXPECTED_IDS[i], ids_list
        ids = torch.tensor([ids_list], dtype=torch.int64)
        T = ids.shape[1]
        cap = Capture(model, mlp_layers={0})
        with torch.no_grad():
            out = model(ids, output_attentions=True, output_hidden_states=True)
        cap.remove()
        resid = torch.stack([r[0] for r in cap.resid])
        err = {}
        for l in range(L):
            assert_close(out.hidden_states[l][0], resid[l], f"p{i} hidden_states[{l}]", TOL)
        assert_close(out.hidden_states[L][0], cap.final[0], f"p{i} final norm", TOL)
        logits = out.logits[0]
        with torch.no_grad():
            err["resid0_vs_rows_times_scale"] = assert_close(emb.weight[ids[0]] * embed_scale, resid[0], f"p{i} resid[0]", 0.0)
            by_hand = [block_by_hand(model, l, resid[l]) for l in range(L)]
            err["blocks_by_hand_max_rel"] = max(
                assert_close(h, resid[l + 1], f"p{i} block {l} by hand", TOL) / max(1.0, resid[l + 1].abs().max().item())
                for l, (h, _) in enumerate(by_hand))
            err["mlp_act_l0_by_hand"] = assert_close(by_hand[0][1], cap.mlp[0][0], f"p{i} mlp_act_l0 by hand", TOL)
            lens_top, lens_gap = [], []
            for l in range(L + 1):
                ll = model.lm_head(model.model.norm(resid[l]))
                v, ix = ll.topk(LENS_K + 1, dim=-1)
                lens_top.append(ix[:, :LENS_K])
                lens_gap.append(min_gap(v))
                if l == L:
                    err["lens_L_vs_logits"] = assert_close(ll, logits, f"p{i} lens[L]", TOL)
            lens_top = torch.stack(lens_top).to(torch.int64)
        top_v, top_i = logits.topk(TOP_K + 1, dim=-1)
        assert torch.equal(lens_top[L], top_i[:, :LENS_K]), f"p{i}: lens[L] top-5 != logits top-5"
        target = int(logits[-1].argmax())
        logits_e, g_lp, _ = token_embedding_grads(model, ids, target)
        err["logits_via_inputs_embeds"] = assert_close(logits_e, logits[-1], f"p{i} logits via inputs_embeds", TOL)
        gr = greedy(model, ids, GREEDY_NEW)
        with torch.no_grad():  # the margin of each greedy step, from one forward over prompt + continuation
            steps = model(torch.cat([ids, gr.view(1, -1)], dim=1)).logits[0, T - 1: T - 1 + GREEDY_NEW]
        sv, si = steps.topk(2, dim=-1)
        assert torch.equal(si[:, 0], gr), f"p{i}: greedy != argmax of the full forward"
        attn = {l: out.attentions[l][0] for l in ATTN_LAYERS}
        for a in attn.values():
            assert a.shape == (H, T, T)
        tensors.update({
            f"p{i}.input_ids": ids[0],
            f"p{i}.resid": resid,
            f"p{i}.top_ids": top_i[:, :TOP_K].to(torch.int64),
            f"p{i}.top_logits": top_v[:, :TOP_K],
            f"p{i}.lens_top_ids": lens_top,
            f"p{i}.attn_l0": attn[0],
            f"p{i}.attn_l5": attn[5],
            f"p{i}.mlp_act_l0": cap.mlp[0][0],
            f"p{i}.greedy": gr,
            f"p{i}.grad_logprob": g_lp,
        })
        assert resid.shape == (L + 1, T, dm) and cap.mlp[0][0].shape == (T, cfg.intermediate_size)
        last = logits[-1]
        probs = torch.softmax(last, -1)
        pv, pix = probs.topk(5)
        info = {
            "prompt": prompt,
            "T": T,
            "input_ids": ids_list,
            "tokens": [tok.decode([t]) for t in ids_list],
            "target": target,
            "target_token": tok.decode([target]),
            "top5_last": [{"id": int(t), "token": tok.decode([int(t)]), "logit": round(float(last[t]), 4),
                           "prob": round(float(p), 6)} for p, t in zip(pv, pix)],
            "max_abs_logit_last": round(float(last.abs().max()), 4),
            "max_abs_logit_all": round(float(logits.abs().max()), 4),
            "top1_margin_last": round(float(top_v[-1, 0] - top_v[-1, 1]), 5),
            "min_gap_top21_all_positions": round(min_gap(top_v), 6),
            "min_gap_lens_top6": round(min(lens_gap), 6),
            "greedy": gr.tolist(),
            "greedy_min_top1_margin": round(float((sv[:, 0] - sv[:, 1]).min()), 5),
            "greedy_top1_margins": [round(float(x), 5) for x in sv[:, 0] - sv[:, 1]],
            "greedy_text": tok.decode(gr.tolist()),
        }
        per_prompt.append(info)
        checks.append({k: float(f"{v:.3e}") for k, v in err.items()})
        print(f"  p{i}: {prompt!r} T={T} ids={ids_list}")
        print(f"    top5={[(t['token'], t['logit']) for t in info['top5_last']]} margin={info['top1_margin_last']} "
              f"max|logit|={info['max_abs_logit_last']}")
        print(f"    greedy={gr.tolist()} {info['greedy_text']!r}; checks {checks[-1]}")

    meta = {
        "model": f"{GGUF_NAME} (Gemma 3 270M, Q4_K_M; transformers GGUF load, dequantized to float32)",
        "gguf_file": GGUF_NAME,
        "gguf_sha256": GGUF_SHA256,
        "prompts": PROMPTS,
        "input_ids": [p["input_ids"] for p in per_prompt],
        "greedy": [p["greedy"] for p in per_prompt],
        "greedy_max_new_tokens": GREEDY_NEW,
        "greedy_note": "generate(do_sample=False, eos_token_id=None) with the KV cache: EOS does not stop "
                       "generation; checked equal to an argmax loop of full forwards without a cache",
        "per_prompt": per_prompt,
        "config": config,
        "config_from_gguf_metadata": FROM_GGUF,
        "config_transformers_defaults": DEFAULTS,
        "embed_scale": float(embed_scale),
        "embed_scale_note": "Gemma3TextScaledWordEmbedding: embedding rows * embed_scale, a float32 buffer "
                            "sqrt(640) (25.298221588134766 in float32)",
        "attention_scaling": scaling,
        "attention_scaling_note": "scores = q k^T * query_pre_attn_scalar^-0.5 (256^-0.5 = 0.0625)",
        "rope_attention_scaling": rope_scaling,
        "weights": weights,
        "keys": {
            "p{i}.input_ids": "[T] int64, <bos> (2) first, as the tokenizer adds it",
            "p{i}.resid": "[L+1, T, 640]: 0 = embed_tokens output entering block 0 (rows * sqrt(640): "
                          "hidden_states[0]); l+1 = output of block l, before the final norm",
            "p{i}.top_ids": "[T, 20] int64: ids of the 20 largest logits at each position, descending",
            "p{i}.top_logits": "[T, 20]: those logits",
            "p{i}.lens_top_ids": "[L+1, T, 5] int64: top-5 ids (descending) of lm_head(model.norm(resid[l]))",
            "p{i}.attn_l0": "[H, T, T]: layer 0 attention probabilities (sliding_attention)",
            "p{i}.attn_l5": "[H, T, T]: layer 5 attention probabilities (full_attention)",
            "p{i}.mlp_act_l0": "[T, 2048]: gelu_tanh(gate_proj(x)) * up_proj(x) of layer 0, the input of down_proj",
            "p{i}.greedy": "[10] int64: greedy continuation (see greedy_note)",
            "p{i}.grad_logprob": "[T, 640]: d log softmax(logits[T-1])[target] / d embed_tokens.weight[ids] "
                                 "(unscaled rows; the model sees rows * embed_scale); target = argmax at T-1",
        },
        "window_note": "every sequence here (prompt + 10 generated tokens) is far shorter than sliding_window "
                       "512: the window masks nothing, sliding and full layers differ only in their RoPE base",
        "checks": checks,
        "checks_note": "max abs errors (blocks_by_hand_max_rel: relative to max |resid[l+1]|) of the script's "
                       "asserts: hooks vs transformers' outputs, resid[0] = rows * embed_scale (exact), every "
                       "block recomputed from weights + config (make_goldens.block_by_hand), lens[L] = logits, "
                       "the inputs_embeds forward = the plain forward",
        "tolerance_hint": "the golden is transformers' float32 on gguf-py's dequantization; per_prompt has "
                          "max |logit|, the top-1 margin at the last position and the smallest gaps in the "
                          "stored top-21 / lens top-6 rankings (an order comparison is only meaningful where "
                          "the gap exceeds the expected error)",
        "dtype": "float32",
        "attn_implementation": "eager",
        "threads": 1,
        "versions": versions(),
    }
    path_out = write_golden(STEM, tensors, meta, GENERATOR)
    size = path_out.stat().st_size
    assert size < MAX_BYTES, size
    print(f"wrote {path_out} ({size} bytes) and {GOLDEN / (STEM + '.json')}; load {t_load:.0f} s, "
          f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
