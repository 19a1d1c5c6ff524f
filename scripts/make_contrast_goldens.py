#!/usr/bin/env python3
"""Make golden reference files for tokenlens' contrastive saliency and integrated-gradients
baselines, computed with captum.

What it writes (under tests/data/golden/, relative to the repo root), for MODELS =
tiny-gpt2 and tiny-llama (the tiny checkpoints made by scripts/make_goldens.py):

  saliency-contrast-<model>.safetensors
      For pair i in PAIRS, objective o in OBJECTIVES, baseline bl in BASELINES (L = the pair's
      token length, d = hidden size):
        pair{i}.clean                 i64 [L]   clean prompt ids
        pair{i}.corrupted             i64 [L]   corrupted prompt ids (same length)
        pair{i}.answer / .foil        i64 [1]   answer id a / foil id b
        pair{i}.{o}.f                 f32 [1]   f(e)
        pair{i}.{o}.gradient          f32 [L,d] captum Saliency, abs=True          (|df/de|)
        pair{i}.{o}.grad_x_input      f32 [L,d] captum InputXGradient             (df/de * e)
        pair{i}.{o}.ig_{bl}           f32 [L,d] captum IntegratedGradients, gausslegendre, 50 steps
        pair{i}.{o}.ig_{bl}_delta     f32 [1]   its convergence delta
        pair{i}.{o}.f_{bl}            f32 [1]   f(B), the baseline's value
        baseline.mean                 f32 [d]   the `mean` baseline row
        ig.gl.alphas / ig.gl.weights  f32 [50]  captum's gausslegendre nodes / step sizes
  saliency-contrast-<model>.json
      Texts, ids, answer/foil ids, baseline_token_id, objectives, baselines, n_steps, the exact
      definitions (DEFINITIONS), the IG convergence deltas per pair/objective/baseline and
      their maxima, the checks performed, notes and library versions.

Definitions (also written into the JSON): see DEFINITIONS below. In short, e = token
embeddings of the clean ids ([1, L, d]), z(x) = model(inputs_embeds=x).logits[:, -1, :], and
the objectives are prob = softmax(z)[a], logit_diff = z[a] - z[b], prob_diff = softmax(z)[a] -
softmax(z)[b], log_prob_ratio = log_softmax(z)[a] - log_softmax(z)[b] (= logit_diff in exact
arithmetic; stored anyway). IG baselines: zero, token (the EOS row at every position), mean
(the vocabulary-mean row at every position), corrupted (the corrupted prompt's embeddings).
captum's convergence delta is  delta = sum(IG attributions) - (f(e) - f(B)).

The script fails loudly (AssertionError) if: a pair's clean and corrupted ids differ in
length, contain id 0, or a == b; f(e) / f(corrupted embeddings) via inputs_embeds differ from
the ids forward; Saliency != |signed gradient| or InputXGradient != signed gradient * e (signed
gradient from torch.autograd); captum's IG differs from IG computed by hand from the stored
alphas/weights and the baseline; or sum(IG) - delta != f(e) - f(B) (tolerance 1e-5, plus the
float32 rounding of the sum).

How to run (a developer does this by hand; CI never runs it), from the repo root:

    $REFENV_PY scripts/make_contrast_goldens.py

$REFENV_PY is the reference venv's python (default ~/.cache/tokenlens/refenv/bin/python; see
scripts/lib.sh and scripts/README.md). Needs captum in it (`$TOKENLENS_REFENV/bin/pip install
captum`; made with captum 0.9.0; captum.attr imports matplotlib, which pip brings along). CPU,
one thread, float32, eager attention, eval mode: a rerun with the same library versions gives
byte-identical files. Takes ~15 s (11-20 s measured on 2 cores).
"""

import json
import warnings

import numpy as np
import torch

import captum
import safetensors
import tokenizers
import transformers
from captum.attr import InputXGradient, IntegratedGradients, Saliency
from captum.attr._utils.approximation_methods import approximation_parameters
from tokenizers import Tokenizer

from golden_util import DATA, ROOT, assert_close, deterministic_setup, load_tiny, write_golden
from golden_util import versions as lib_versions

GENERATOR = "scripts/make_contrast_goldens.py"
MODELS = ["tiny-gpt2", "tiny-llama"]
# Both tiny checkpoints share one 512-token byte-level BPE (trained on make_goldens.TRAIN_TEXT),
# so one set of texts serves both. Names are not in that vocabulary: the IOI sentence "When
# Mary and John went to the store, John gave a drink to" is 37 tokens (its corruption with
# Alice/Bob/Carl 35), and " Mary" and " John" both start with the bare-space token 221, so
# a == b. The texts below use words the tokenizer has (the answer and foil of pair 0 are single
# tokens; pair 1's are the first tokens of " Paris" = 'ĠP' 'ar' 'is' and " Tokyo" = 'ĠT' 'ok' 'y' 'o').
PAIRS = [
    {"clean": "The cat and the dog sat, and the dog gave a fish to the",
     "corrupted": "The cat and the dog sat, and the man gave a fish to the",
     "answer": " cat", "foil": " dog"},
    {"clean": "The capital of France is",
     "corrupted": "The capital of Japan is",
     "answer": " Paris", "foil": " Tokyo"},
]
OBJECTIVES = ["prob", "logit_diff", "prob_diff", "log_prob_ratio"]
BASELINES = ["zero", "token", "mean", "corrupted"]
N_STEPS = 50
METHOD = "gausslegendre"
TOL = 1e-5
MAX_FILE_BYTES = 256 * 1024

DEFINITIONS = {
    "ids": "tokenizers.Tokenizer.from_file(<checkpoint>/tokenizer.json).encode(text).ids, no BOS; "
           "clean and corrupted ids of a pair have the same length L and contain no id 0",
    "answer / foil": "a = encode(answer_text).ids[0], b = encode(foil_text).ids[0] (the first token), a != b",
    "inputs": "e = model.get_input_embeddings()(torch.tensor([clean ids])), shape [1, L, d]; token embeddings "
              "only (GPT-2 adds its position embeddings inside the model, as for any inputs_embeds)",
    "z": "z(x) = model(inputs_embeds=x).logits[:, -1, :], shape [batch, V]: the next-token logits after the "
         "whole prompt, one row per batch row",
    "objectives": {
        "prob": "f(x) = softmax(z(x), -1)[:, a]",
        "logit_diff": "f(x) = z(x)[:, a] - z(x)[:, b]",
        "prob_diff": "f(x) = softmax(z(x), -1)[:, a] - softmax(z(x), -1)[:, b]",
        "log_prob_ratio": "f(x) = log_softmax(z(x), -1)[:, a] - log_softmax(z(x), -1)[:, b] (equal to logit_diff "
                          "in exact arithmetic; computed and stored separately, see notes for the float32 difference)",
    },
    "f": "f(e), shape [1]",
    "gradient": "captum.attr.Saliency(f).attribute(e, abs=True)[0] = |df/de|, shape [L, d]",
    "grad_x_input": "captum.attr.InputXGradient(f).attribute(e)[0] = df/de * e, shape [L, d]",
    "baselines": {
        "zero": "B = torch.zeros_like(e)",
        "token": "B = get_input_embeddings()(torch.full([1, L], baseline_token_id)): the embedding row of one token "
                 "at every position; baseline_token_id = the tokenizer's EOS id (tokenizer_config.json eos_token, "
                 "which must equal config.eos_token_id), else config.eos_token_id, else 1",
        "mean": "B = m repeated at every position, m = get_input_embeddings().weight.double().mean(0).float() "
                "(the mean of all V rows of the input-embedding matrix, in float64, cast to float32), shape [1, L, d]; "
                "m is stored as baseline.mean",
        "corrupted": "B = get_input_embeddings()(torch.tensor([corrupted ids]))",
    },
    "f_{bl}": "f(B), shape [1]",
    "ig_{bl}": "captum.attr.IntegratedGradients(f).attribute(e, baselines=B, n_steps=50, method='gausslegendre', "
               "return_convergence_delta=True): attributions[0], shape [L, d]",
    "ig_{bl}_delta": "captum convergence delta, shape [1]: delta = sum(attributions) - (f(e) - f(B))",
    "ig_formula": "attr = (e - B) * sum_k weights[k] * df/dx evaluated at x = B + alphas[k] * (e - B), "
                  "all 50 points in one forward/backward batch (internal_batch_size=None), weights in float32",
    "ig.gl.alphas / ig.gl.weights": "captum.attr._utils.approximation_methods.approximation_parameters"
                                    "('gausslegendre') -> (step_sizes, alphas) at n=50; weights = step_sizes "
                                    "= 0.5 * leggauss(50) weights, alphas = 0.5 * (1 + leggauss(50) nodes); "
                                    "stored as float32 (captum applies the weights as float32)",
    "dtype": "float32, eager attention, eval mode, CPU, torch.set_num_threads(1)",
}


def versions():
    return lib_versions([captum, torch, transformers, tokenizers, safetensors, np])


def ig_parameters():
    step_sizes_fn, alphas_fn = approximation_parameters(METHOD)
    weights, alphas = step_sizes_fn(N_STEPS), alphas_fn(N_STEPS)
    assert len(weights) == len(alphas) == N_STEPS
    assert abs(sum(weights) - 1.0) < 1e-9, sum(weights)
    return alphas, weights


def manual_ig(fwd, e, base):
    """IG exactly as captum 0.9 computes it, for any baseline: all N_STEPS points
    B + alpha_k (e - B) in one batch, gradients of sum(f) (= captum's unbind), weighted by
    the float32 step sizes, summed over k, times (e - B)."""
    alphas, weights = ig_parameters()
    xs = torch.cat([base + a * (e - base) for a in alphas], dim=0).requires_grad_(True)
    (g,) = torch.autograd.grad(fwd(xs).sum(), xs)
    w = torch.tensor(weights).float().view(N_STEPS, 1)
    total = (g.contiguous().view(N_STEPS, -1) * w).view(N_STEPS, *e.shape[1:]).sum(0, keepdim=True)
    return total * (e - base)


def objective(name, z, a, b):
    """The objective `name` of logits z [batch, V], one value per row."""
    if name == "prob":
        return torch.softmax(z, dim=-1)[:, a]
    if name == "logit_diff":
        return z[:, a] - z[:, b]
    if name == "prob_diff":
        p = torch.softmax(z, dim=-1)
        return p[:, a] - p[:, b]
    if name == "log_prob_ratio":
        lp = torch.log_softmax(z, dim=-1)
        return lp[:, a] - lp[:, b]
    raise ValueError(name)


def make_forward(model, name, a, b):
    """forward_func for captum: [batch, L, d] embeddings -> [batch] objective values."""

    def forward(x):
        return objective(name, model(inputs_embeds=x).logits[:, -1, :], a, b)

    return forward


def baseline_token(model_dir, tok, model):
    """(id, where it came from): the tokenizer's EOS id, else config.eos_token_id, else 1."""
    cfg_path = model_dir / "tokenizer_config.json"
    eos = json.loads(cfg_path.read_text()).get("eos_token") if cfg_path.exists() else None
    tid = tok.token_to_id(eos) if isinstance(eos, str) else None
    if tid is not None:
        assert model.config.eos_token_id in (None, tid), (tid, model.config.eos_token_id)
        return tid, f"tokenizer_config.json eos_token {eos!r} (= config.eos_token_id {model.config.eos_token_id})"
    if model.config.eos_token_id is not None:
        return int(model.config.eos_token_id), "config.eos_token_id"
    return 1, "no EOS in tokenizer or config: id 1"


def rms(x):
    """Root mean square over the last dimension (a float for a vector)."""
    r = x.double().pow(2).mean(-1).sqrt()
    return r.item() if r.dim() == 0 else r


def contrast_golden(name):
    model_dir = DATA / name
    model = load_tiny(model_dir)
    model.requires_grad_(False)  # only input gradients are needed
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    embed = model.get_input_embeddings()
    d, vocab = model.config.hidden_size, model.config.vocab_size

    alphas, weights = ig_parameters()
    mean_row = embed.weight.detach().double().mean(0).float()
    assert mean_row.shape == (d,)
    tok_id, tok_src = baseline_token(model_dir, tok, model)
    tensors = {
        "baseline.mean": mean_row,
        "ig.gl.alphas": torch.tensor(alphas, dtype=torch.float32),
        "ig.gl.weights": torch.tensor(weights, dtype=torch.float32),
    }

    pairs_meta, deltas, lpr_vs_ld, zero_logits_max = [], [], {}, []
    for i, pair in enumerate(PAIRS):
        clean, corrupted = tok.encode(pair["clean"]).ids, tok.encode(pair["corrupted"]).ids
        a, b = tok.encode(pair["answer"]).ids[0], tok.encode(pair["foil"]).ids[0]
        assert len(clean) == len(corrupted), (pair, len(clean), len(corrupted))
        assert 0 not in clean and 0 not in corrupted, (pair, clean, corrupted)  # no BOS / EOT
        assert clean != corrupted, pair
        assert a != b and 0 <= a < vocab and 0 <= b < vocab, (pair, a, b)
        L = len(clean)
        clean_t, corr_t = torch.tensor(clean, dtype=torch.int64), torch.tensor(corrupted, dtype=torch.int64)
        tensors.update({
            f"pair{i}.clean": clean_t,
            f"pair{i}.corrupted": corr_t,
            f"pair{i}.answer": torch.tensor([a], dtype=torch.int64),
            f"pair{i}.foil": torch.tensor([b], dtype=torch.int64),
        })
        with torch.no_grad():
            e = embed(clean_t.view(1, -1)).detach().clone()
            bases = {
                "zero": torch.zeros_like(e),
                "token": embed(torch.full((1, L), tok_id, dtype=torch.int64)).detach().clone(),
                "mean": mean_row.view(1, 1, d).expand(1, L, d).contiguous(),
                "corrupted": embed(corr_t.view(1, -1)).detach().clone(),
            }
            z_clean_ids = model(clean_t.view(1, -1)).logits[:, -1, :]
            z_corr_ids = model(corr_t.view(1, -1)).logits[:, -1, :]
            zero_logits_max.append(model(inputs_embeds=bases["zero"]).logits.abs().max().item())
        assert e.shape == (1, L, d) and e.dtype == torch.float32
        for bl in BASELINES:
            assert bases[bl].shape == e.shape and bases[bl].dtype == torch.float32, bl
        pairs_meta.append({"pair": i, **pair, "clean_ids": clean, "corrupted_ids": corrupted,
                           "clean_tokens": tok.encode(pair["clean"]).tokens,
                           "corrupted_tokens": tok.encode(pair["corrupted"]).tokens,
                           "answer_id": a, "foil_id": b, "L": L, "objectives": {}})

        attrs = {}
        for o in OBJECTIVES:
            pre = f"pair{i}.{o}"
            fwd = make_forward(model, o, a, b)
            with torch.no_grad():
                f = fwd(e)
                f_base = {bl: fwd(bases[bl]) for bl in BASELINES}
            assert f.shape == (1,)
            # inputs_embeds path == ids path, for the clean input and the corrupted baseline.
            assert_close(f, objective(o, z_clean_ids, a, b), f"{name} {pre} f vs ids forward", TOL, float64=True)
            assert_close(f_base["corrupted"], objective(o, z_corr_ids, a, b),
                         f"{name} {pre} f(corrupted) vs ids forward", TOL, float64=True)

            # Signed gradient with plain autograd.
            ee = e.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(fwd(ee).sum(), ee)
            sal = Saliency(fwd).attribute(e, abs=True)
            gxi = InputXGradient(fwd).attribute(e)
            assert_close(sal, g.abs(), f"{name} {pre} Saliency vs |autograd grad|", TOL, float64=True)
            assert_close(gxi, g * e, f"{name} {pre} InputXGradient vs autograd grad * e", TOL, float64=True)
            out = {"gradient": sal, "grad_x_input": gxi}
            tensors.update({f"{pre}.f": f.reshape(1), f"{pre}.gradient": sal[0], f"{pre}.grad_x_input": gxi[0]})

            line = []
            pairs_meta[i]["objectives"][o] = {"f": float(f), "baselines": {}}
            for bl in BASELINES:
                base = bases[bl]
                attr, delta = IntegratedGradients(fwd).attribute(
                    e, baselines=base, n_steps=N_STEPS, method=METHOD, return_convergence_delta=True,
                )
                assert attr.shape == e.shape and attr.dtype == torch.float32, (attr.shape, attr.dtype)
                assert delta.shape == (1,)
                # IG as documented in DEFINITIONS["ig_formula"], by hand, == captum.
                assert_close(attr, manual_ig(fwd, e, base), f"{name} {pre} {bl}: captum IG vs by-hand IG",
                             TOL, float64=True)
                # captum: delta = sum(attr) - (f(e) - f(B))  <=>  sum(attr) - delta = f(e) - f(B).
                abs_sum = attr.double().abs().sum().item()
                lhs = attr.double().sum() - delta.double()
                rhs = f.double() - f_base[bl].double()
                err = (lhs - rhs).abs().item()
                tol = TOL + 1e-6 * abs_sum
                assert err <= tol, f"{name} {pre} {bl}: |sum(IG) - delta - (f - f_B)| = {err:.3e} > {tol:.3e}"
                rec = {"pair": i, "objective": o, "baseline": bl, "delta": float(delta),
                       "f": float(f), "f_baseline": float(f_base[bl]), "f_minus_f_baseline": float(rhs),
                       "rel_delta": abs(float(delta)) / max(abs(float(rhs)), 1e-30),
                       "sum_attr": float(attr.double().sum()), "sum_abs_attr": abs_sum}
                deltas.append(rec)
                pairs_meta[i]["objectives"][o]["baselines"][bl] = {
                    k: rec[k] for k in ("f_baseline", "delta", "rel_delta", "sum_abs_attr")}
                out[f"ig_{bl}"] = attr
                tensors.update({
                    f"{pre}.ig_{bl}": attr[0],
                    f"{pre}.ig_{bl}_delta": delta.reshape(1).float(),
                    f"{pre}.f_{bl}": f_base[bl].reshape(1),
                })
                line.append(f"{bl} f_B={float(f_base[bl]):+.4f} d={float(delta):+.2e}")
            attrs[o] = out
            print(f"  {name} {pre}: L={L} f={float(f):+.6f} | " + " | ".join(line))

        # log_prob_ratio vs logit_diff (equal in exact arithmetic).
        for k in ["f"] + [f"f_{bl}" for bl in BASELINES] + [f"ig_{bl}_delta" for bl in BASELINES] + \
                ["gradient", "grad_x_input"] + [f"ig_{bl}" for bl in BASELINES]:
            diff = (tensors[f"pair{i}.log_prob_ratio.{k}"].double() - tensors[f"pair{i}.logit_diff.{k}"].double())
            lpr_vs_ld[k] = max(lpr_vs_ld.get(k, 0.0), diff.abs().max().item())

    table = {o: {bl: max(abs(r["delta"]) for r in deltas if r["objective"] == o and r["baseline"] == bl)
                 for bl in BASELINES} for o in OBJECTIVES}
    rel_table = {o: {bl: max(r["rel_delta"] for r in deltas if r["objective"] == o and r["baseline"] == bl)
                     for bl in BASELINES} for o in OBJECTIVES}
    notes = [
        "Texts: both tiny checkpoints share one 512-token byte-level BPE trained on a few KB of English "
        "(make_goldens.TRAIN_TEXT) that has no names: the IOI sentence 'When Mary and John went to the store, "
        "John gave a drink to' is 37 tokens and ' Mary' / ' John' both start with id 221 (a bare space), so "
        "a == b. The pairs use words in the vocabulary instead (pair 0: single-token answer/foil; pair 1: the "
        "first tokens of ' Paris' and ' Tokyo'). With random weights the objectives carry no meaning; the "
        "goldens only pin the arithmetic.",
        f"log_prob_ratio vs logit_diff (equal in exact arithmetic): max |difference| over both pairs, per "
        f"quantity: {json.dumps({k: float(f'{v:.3e}') for k, v in lpr_vs_ld.items()})}. The values (f, f_B, "
        f"deltas) differ by float32 rounding (log_softmax then subtract vs subtract logits); the gradients, and "
        f"so every attribution, are bit-identical: log_softmax's backward subtracts softmax * sum(upstream "
        f"gradient), and that sum (1 - 1) is exactly 0.",
        f"baseline_token_id = {tok_id} ({tok_src}); that row is the token's embedding, repeated at every "
        f"position (for GPT-2 the model still adds position embeddings).",
        f"max |delta| per objective and baseline (both pairs): {json.dumps({o: {bl: float(f'{v:.3e}') for bl, v in t.items()} for o, t in table.items()})}; "
        f"max |delta| / |f(e) - f(B)|: {json.dumps({o: {bl: float(f'{v:.3e}') for bl, v in t.items()} for o, t in rel_table.items()})}",
    ]
    if model.config.model_type == "llama":
        with torch.no_grad():
            e0 = embed(tensors["pair0.clean"].view(1, -1))
            fwd0 = make_forward(model, "logit_diff", int(tensors["pair0.answer"]), int(tensors["pair0.foil"]))
            probe = [(al, float(fwd0(al * e0))) for al in (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)]
            probe_fe = float(fwd0(e0))
        notes.append(
            "Zero baseline on tiny-llama (RMSNorm, no biases, no position embeddings) is a degenerate point: with "
            "B = 0 the residual stream stays exactly 0 through every block and all logits are exactly 0 (max "
            f"|logit| at B = 0: {max(zero_logits_max):.1e}), so f(0) = 1/V for prob and 0 for the three differences; "
            "every RMSNorm there is in its eps regime (d/dx ~ 1/sqrt(eps) ~ 316), and f(alpha e) swings far from "
            "f(0) at alphas below the smallest Gauss-Legendre node (~5.7e-4) (pair 0, logit_diff: f(alpha e) = "
            f"{', '.join(f'{v:+.3f} at {al:g}' for al, v in probe)}; f(e) = {probe_fe:+.3f}), so ig_zero converges "
            "badly (see the delta table). The token and corrupted baselines keep the residual stream away from 0 "
            "and converge far better. The mean baseline is in between: the vocabulary mean of random rows is "
            f"short (RMS {rms(mean_row):.4f} against a median row RMS of {rms(embed.weight.detach()).median():.4f}, "
            "the RMSNorm eps scale sqrt(1e-5) being 0.0032), so its path starts near the degenerate point and "
            "its relative deltas are ~1e-2. The goldens are still exactly captum's output; compare ig_zero (and "
            "ig_mean) with relative tolerances.")
    else:
        notes.append(
            "tiny-gpt2 at the zero baseline is not degenerate (position embeddings and biases keep the residual "
            f"stream away from 0; max |logit| at B = 0: {max(zero_logits_max):.3e}).")

    meta = {
        "model": name,
        "checkpoint": f"tests/data/{name}",
        "generator": GENERATOR,
        "pairs": pairs_meta,
        "baseline_token_id": tok_id,
        "baseline_token_source": tok_src,
        "objectives": OBJECTIVES,
        "baselines": BASELINES,
        "n_steps": N_STEPS,
        "ig_method": METHOD,
        "hidden_size": d,
        "vocab_size": vocab,
        "key_pattern": "pair{i}.{clean,corrupted} i64 [L]; pair{i}.{answer,foil} i64 [1]; pair{i}.{o}.f [1]; "
                       "pair{i}.{o}.{gradient,grad_x_input} [L,d]; pair{i}.{o}.ig_{bl} [L,d]; "
                       "pair{i}.{o}.ig_{bl}_delta [1]; pair{i}.{o}.f_{bl} [1]; baseline.mean [d]; "
                       "ig.gl.{alphas,weights} [50]; o in objectives, bl in baselines",
        "definitions": DEFINITIONS,
        "ig_convergence_delta": {
            "definition": "delta = sum(attributions) - (f(e) - f(B)) (captum compute_convergence_delta)",
            "max_abs": table,
            "max_rel": rel_table,
            "records": deltas,
        },
        "log_prob_ratio_minus_logit_diff_max_abs": lpr_vs_ld,
        "ig_parameters_float64": {"alphas": alphas, "weights": weights},
        "checks": {
            "tolerance": TOL,
            "performed": [
                "clean and corrupted ids have equal length, no id 0; answer != foil",
                "f via inputs_embeds == the objective of the ids forward (clean ids, and the corrupted ids for "
                "f_corrupted)",
                "Saliency == |torch.autograd grad of f|",
                "InputXGradient == torch.autograd grad of f * e",
                "captum IG == IG by hand (ig_formula) for every baseline",
                "sum(IG attributions) - delta == f(e) - f(B) for every baseline (tolerance 1e-5 + 1e-6 sum|attr|)",
            ],
        },
        "notes": notes,
        "dtype": "float32",
        "attn_implementation": "eager",
        "versions": versions(),
    }
    path = write_golden(f"saliency-contrast-{name}", tensors, meta, GENERATOR)
    size = path.stat().st_size
    assert size < MAX_FILE_BYTES, (path, size)
    print(f"  wrote {path.relative_to(ROOT)} ({size} bytes)")
    return meta


def main():
    deterministic_setup()
    warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
    tables = {}
    for name in MODELS:
        print(f"{name}:")
        meta = contrast_golden(name)
        tables[name] = meta["ig_convergence_delta"]
    print("max |delta| (max |delta| / |f(e) - f(B)|) per model, objective, baseline:")
    print("  " + " ".join(f"{s:>14}" for s in ["model", "objective"] + BASELINES))
    for name, t in tables.items():
        for o in OBJECTIVES:
            cells = [f"{t['max_abs'][o][bl]:.1e} ({t['max_rel'][o][bl]:.0e})" for bl in BASELINES]
            print("  " + " ".join(f"{s:>14}" for s in [name, o] + cells))
    print("done; versions:", json.dumps(versions()))


if __name__ == "__main__":
    main()
