#!/usr/bin/env python3
"""Make golden reference files for tokenlens' input-saliency methods, computed with captum.

What it writes (under tests/data/golden/, relative to the repo root), for MODELS =
tiny-gpt2 and tiny-llama (the tiny checkpoints made by scripts/make_goldens.py):

  saliency-<model>.safetensors
      For prompt i in PROMPTS and generated index t in 0..N_GEN-1 (p = len(ids) + t):
        p{i}.sequence            i64 [L]   ids + N_GEN greedy tokens (L = len(ids) + N_GEN)
        p{i}.t{t}.gradient       f32 [p,d] captum Saliency, abs=True          (|df/de|)
        p{i}.t{t}.grad_x_input   f32 [p,d] captum InputXGradient             (df/de * e)
        p{i}.t{t}.ig_gl          f32 [p,d] captum IntegratedGradients, gausslegendre, 50 steps
        p{i}.t{t}.ig_trap        f32 [p,d] captum IntegratedGradients, riemann_trapezoid, 50 steps
        p{i}.t{t}.ig_gl_delta    f32 [1]   captum convergence delta of ig_gl
        p{i}.t{t}.ig_trap_delta  f32 [1]   captum convergence delta of ig_trap
        p{i}.t{t}.f              f32 [1]   f(e)
        p{i}.t{t}.f0             f32 [1]   f(0), the IG baseline value
        ig.gl.alphas / ig.gl.weights       f32 [50]  captum's gausslegendre nodes / step sizes
        ig.trap.alphas / ig.trap.weights   f32 [50]  captum's riemann_trapezoid nodes / step sizes
  saliency-<model>.json
      Prompts, input ids, sequences, n_gen, n_steps, the exact definitions (DEFINITIONS),
      the IG convergence deltas per target for both rules, and library versions.

Definitions (also written into the JSON): see DEFINITIONS below. In short, with
s = ids + greedy tokens, target y = s[p], e = token embeddings of s[:p] ([1, p, d]; for
GPT-2 the position embeddings are added inside the model, as for any inputs_embeds), and
f(e) = softmax(model(inputs_embeds=e).logits[0, -1, :])[y] (a probability).
captum's convergence delta is  delta = sum(IG attributions) - (f(e) - f(0)).

The script fails loudly (AssertionError) if: the argmax loop differs from
model.generate(do_sample=False, eos_token_id=None) (or from the greedy tokens in
golden/<model>.safetensors); f(e) via inputs_embeds differs from the ids forward;
Saliency != |signed gradient| or InputXGradient != signed gradient * e (signed gradient from
torch.autograd); captum's IG differs from IG computed by hand from the stored alphas/weights;
or sum(IG) - delta != f(e) - f(0) (tolerance 1e-5, plus float32 rounding of the sum when the
attributions are huge, which happens for tiny-llama + trapezoid: see ZERO_BASELINE_NOTE).

Surprises recorded in each JSON's "notes": captum's riemann_trapezoid weights sum to 0.98,
not 1; and for tiny-llama the zero baseline is a degenerate point (the residual stream stays
exactly 0, RMSNorm sits in its eps regime), so IG with that baseline converges badly.

How to run (a developer does this by hand; CI never runs it), from the repo root:

    $REFENV_PY scripts/make_saliency_goldens.py

$REFENV_PY is the reference venv's python (default ~/.cache/tokenlens/refenv/bin/python; see
scripts/lib.sh and scripts/README.md). Needs captum in it (`$TOKENLENS_REFENV/bin/pip install
captum`; made with captum 0.9.0). CPU, one thread, float32, eager attention, eval mode: a rerun with the same
library versions gives byte-identical files. Takes a few seconds.
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
from safetensors.torch import load_file
from tokenizers import Tokenizer

from golden_util import DATA, GOLDEN, ROOT, assert_close, deterministic_setup, greedy, load_tiny, write_golden
from golden_util import versions as lib_versions

GENERATOR = "scripts/make_saliency_goldens.py"
MODELS = ["tiny-gpt2", "tiny-llama"]
PROMPTS = ["The cat sat", "Once upon a time there was a"]
N_GEN = 4
N_STEPS = 50
TOL = 1e-5

DEFINITIONS = {
    "ids": "tokenizers.Tokenizer.from_file(<checkpoint>/tokenizer.json).encode(prompt).ids, no BOS",
    "sequence": "s = ids + N_GEN greedily generated tokens (argmax of the last-position logits, full "
                "forward each step, no EOS stop); equals model.generate(do_sample=False, eos_token_id=None)",
    "p": "p = len(ids) + t for generated index t in 0..N_GEN-1: the position in s of the generated token",
    "target": "y = s[p]",
    "inputs": "e = model.get_input_embeddings()(torch.tensor([s[:p]])), shape [1, p, d]; token embeddings "
              "only (GPT-2 adds its position embeddings inside the model, as for any inputs_embeds)",
    "f": "f(e) = softmax(model(inputs_embeds=e).logits[0, -1, :])[y], a probability (not a log-prob); "
         "captum's forward_func computes it for every row of a batch: softmax(logits[:, -1, :], -1)[:, y]",
    "f0": "f(zeros_like(e)), the IG baseline value",
    "gradient": "captum.attr.Saliency(forward_func).attribute(e, abs=True)[0] = |df/de|, shape [p, d]",
    "grad_x_input": "captum.attr.InputXGradient(forward_func).attribute(e)[0] = df/de * e, shape [p, d]",
    "ig_gl": "captum.attr.IntegratedGradients(forward_func).attribute(e, baselines=torch.zeros_like(e), "
             "n_steps=50, method='gausslegendre', return_convergence_delta=True): attributions[0], shape [p, d]",
    "ig_trap": "same as ig_gl with method='riemann_trapezoid', n_steps=50",
    "ig_gl_delta / ig_trap_delta": "captum convergence delta, shape [1]: "
                                   "delta = sum(attributions) - (f(e) - f(zeros))",
    "ig_formula": "attr = (e - 0) * sum_k weights[k] * df/de evaluated at alphas[k] * e, "
                  "all 50 points in one forward/backward batch (internal_batch_size=None)",
    "ig.gl.alphas / ig.gl.weights": "captum.attr._utils.approximation_methods.approximation_parameters"
                                    "('gausslegendre') -> (step_sizes, alphas) at n=50; weights = step_sizes "
                                    "= 0.5 * leggauss(50) weights, alphas = 0.5 * (1 + leggauss(50) nodes); "
                                    "stored as float32 (captum applies the weights as float32)",
    "ig.trap.alphas / ig.trap.weights": "same for 'riemann_trapezoid': alphas = torch.linspace(0, 1, 50), "
                                        "weights = 1/50 each with the first and last halved. NOTE: these weights sum to "
                                        "49/50 = 0.98, not 1 (a proper trapezoid on linspace(0, 1, 50) would use "
                                        "1/49), so ig_trap is ~0.98x the integral and its delta is ~ -0.02 (f - f0); "
                                        "the golden reproduces captum exactly, including this",
    "dtype": "float32, eager attention, eval mode, CPU, torch.set_num_threads(1)",
}

ZERO_BASELINE_NOTE = (
    "For tiny-llama (RMSNorm, no biases) the zero baseline is a degenerate point: with e = 0 the "
    "residual stream stays exactly 0 through every block, all logits are exactly 0 and f(0) = 1/V; "
    "each RMSNorm there is in its eps regime (d/dx = 1/sqrt(eps) ~ 316), so |df/de| at alpha = 0 is "
    "~1e8 and f(alpha e) jumps from 1/V to near f(e)-levels by alpha ~ 1e-4. Hence: ig_trap (whose "
    "first node is alpha = 0, weight 0.01) is dominated by that one gradient (attributions ~1e5..1e6, "
    "delta of the same size), and ig_gl (smallest node ~5.7e-4) misses the jump (|delta| up to ~0.03 "
    "against f(e) - f(0) ~ 0.05). Both are still exactly what captum computes; compare with relative "
    "tolerances. tiny-gpt2 does not have this problem (position embeddings and biases keep it away "
    "from 0): its ig_gl deltas are < 1e-6 and its ig_trap deltas are ~ -0.02 (f - f0), from captum's "
    "trapezoid weights summing to 0.98."
)
TRAP_NOTE = (
    "captum 0.9 riemann_trapezoid: alphas = linspace(0, 1, 50) but weights = 1/50 (ends halved), "
    "which sum to 0.98, not 1; the golden reproduces captum exactly"
)


def versions():
    return lib_versions([captum, torch, transformers, tokenizers, safetensors, np])


def ig_parameters(method):
    step_sizes_fn, alphas_fn = approximation_parameters(method)
    weights, alphas = step_sizes_fn(N_STEPS), alphas_fn(N_STEPS)
    assert len(weights) == len(alphas) == N_STEPS
    # Gauss-Legendre weights sum to 1. captum's riemann_trapezoid does NOT: its nodes are
    # linspace(0, 1, n) (spacing 1/(n-1)) but its weights are 1/n with the ends halved, so
    # they sum to (n-1)/n = 0.98 and ig_trap under-counts by ~2% (delta ~ -0.02 (f - f0)).
    expected = 1.0 if method == "gausslegendre" else (N_STEPS - 1) / N_STEPS
    assert abs(sum(weights) - expected) < 1e-9, (method, sum(weights))
    return alphas, weights


def manual_ig(fwd, e, method):
    """IG with a zero baseline exactly as captum 0.9 computes it: all N_STEPS points
    alpha_k * e in one batch, gradients of sum(f) (= captum's unbind), weighted by the
    float32 step sizes, summed over k, times e."""
    alphas, weights = ig_parameters(method)
    xs = torch.cat([0 + a * (e - 0) for a in alphas], dim=0).requires_grad_(True)
    (g,) = torch.autograd.grad(fwd(xs).sum(), xs)
    w = torch.tensor(weights).float().view(N_STEPS, 1)
    total = (g.contiguous().view(N_STEPS, -1) * w).view(N_STEPS, *e.shape[1:]).sum(0, keepdim=True)
    return total * e


def make_forward(model, y):
    """forward_func for captum: [batch, p, d] embeddings -> [batch] probabilities of y."""

    def forward(x):
        logits = model(inputs_embeds=x).logits[:, -1, :]
        return torch.softmax(logits, dim=-1)[:, y]

    return forward


def saliency_golden(name):
    model_dir = DATA / name
    model = load_tiny(model_dir)
    model.requires_grad_(False)  # only input gradients are needed
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    embed = model.get_input_embeddings()

    # Cross-check against the greedy tokens in the main golden, if present.
    main_golden = GOLDEN / f"{name}.safetensors"
    main = load_file(str(main_golden)) if main_golden.exists() else {}
    main_meta = json.loads((GOLDEN / f"{name}.json").read_text()) if main else {}

    tensors, seqs, all_ids, deltas, fvals = {}, [], [], {"gausslegendre": [], "riemann_trapezoid": []}, []
    for method, key in (("gausslegendre", "gl"), ("riemann_trapezoid", "trap")):
        alphas, weights = ig_parameters(method)
        tensors[f"ig.{key}.alphas"] = torch.tensor(alphas, dtype=torch.float32)
        tensors[f"ig.{key}.weights"] = torch.tensor(weights, dtype=torch.float32)

    for i, prompt in enumerate(PROMPTS):
        ids = tok.encode(prompt).ids
        assert 0 not in ids, (prompt, ids)  # no BOS / EOT
        # ids + N_GEN greedy tokens (model.generate, checked against an argmax loop).
        s = torch.cat([torch.tensor(ids, dtype=torch.int64), greedy(model, torch.tensor([ids]), N_GEN)])
        if main and main_meta.get("prompts", [None] * (i + 1))[i] == prompt:
            assert main[f"p{i}.input_ids"].tolist() == ids, f"{name} p{i}: ids differ from {main_golden.name}"
            assert main[f"p{i}.greedy"][:N_GEN].tolist() == s[len(ids):].tolist(), \
                f"{name} p{i}: greedy differs from {main_golden.name}"
        tensors[f"p{i}.sequence"] = s
        seqs.append(s.tolist())
        all_ids.append(ids)
        with torch.no_grad():
            full_logits = model(s.view(1, -1)).logits[0]
        for t in range(N_GEN):
            p = len(ids) + t
            y = int(s[p])
            pre = f"p{i}.t{t}"
            with torch.no_grad():
                e = embed(s[:p].view(1, -1)).detach().clone()
            assert e.shape == (1, p, model.config.hidden_size) and e.dtype == torch.float32
            fwd = make_forward(model, y)

            with torch.no_grad():
                f = fwd(e)
                f0 = fwd(torch.zeros_like(e))
            assert f.shape == (1,) and f0.shape == (1,)
            # inputs_embeds path == ids path (causal: logits at p-1 of the full sequence).
            assert_close(f, torch.softmax(full_logits[p - 1], -1)[y].view(1), f"{name} {pre} f vs ids forward",
                         TOL, float64=True)

            # Signed gradient with plain autograd.
            ee = e.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(fwd(ee).sum(), ee)

            sal = Saliency(fwd).attribute(e, abs=True)
            gxi = InputXGradient(fwd).attribute(e)
            ig_gl, d_gl = IntegratedGradients(fwd).attribute(
                e, baselines=torch.zeros_like(e), n_steps=N_STEPS, method="gausslegendre",
                return_convergence_delta=True,
            )
            ig_tr, d_tr = IntegratedGradients(fwd).attribute(
                e, baselines=torch.zeros_like(e), n_steps=N_STEPS, method="riemann_trapezoid",
                return_convergence_delta=True,
            )
            for a in (sal, gxi, ig_gl, ig_tr):
                assert a.shape == e.shape and a.dtype == torch.float32, (a.shape, a.dtype)
            assert d_gl.shape == (1,) and d_tr.shape == (1,)

            # Sanity checks (fail loudly).
            assert_close(sal, g.abs(), f"{name} {pre} Saliency vs |autograd grad|", TOL, float64=True)
            assert_close(gxi, g * e, f"{name} {pre} InputXGradient vs autograd grad * e", TOL, float64=True)
            for attr, delta, rule in ((ig_gl, d_gl, "gausslegendre"), (ig_tr, d_tr, "riemann_trapezoid")):
                # IG as documented in DEFINITIONS["ig_formula"], by hand, == captum.
                assert_close(attr, manual_ig(fwd, e, rule), f"{name} {pre} {rule}: captum IG vs by-hand IG",
                             TOL, float64=True)
                # captum: delta = sum(attr) - (f(e) - f(0))  <=>  sum(attr) - delta = f(e) - f(0).
                # captum sums the attributions in float32, so allow for its rounding when they
                # are huge (tiny-llama + riemann_trapezoid, see ZERO_BASELINE_NOTE).
                abs_sum = attr.double().abs().sum().item()
                lhs = attr.double().sum() - delta.double()
                rhs = f.double() - f0.double()
                err = (lhs - rhs).abs().item()
                tol = TOL + 1e-6 * abs_sum
                assert err <= tol, f"{name} {pre} {rule}: |sum(IG) - delta - (f - f0)| = {err:.3e} > {tol:.3e}"
                deltas[rule].append({"prompt": i, "t": t, "p": p, "target": y, "delta": float(delta),
                                     "f_minus_f0": float(rhs), "sum_attr": float(attr.double().sum()),
                                     "sum_abs_attr": abs_sum})

            tensors.update({
                f"{pre}.gradient": sal[0],
                f"{pre}.grad_x_input": gxi[0],
                f"{pre}.ig_gl": ig_gl[0],
                f"{pre}.ig_trap": ig_tr[0],
                f"{pre}.ig_gl_delta": d_gl.reshape(1).float(),
                f"{pre}.ig_trap_delta": d_tr.reshape(1).float(),
                f"{pre}.f": f.reshape(1),
                f"{pre}.f0": f0.reshape(1),
            })
            fvals.append({"prompt": i, "t": t, "p": p, "target": y, "f": float(f), "f0": float(f0)})
            print(f"  {name} {pre}: p={p} y={y} f={float(f):.6f} f0={float(f0):.6f} "
                  f"delta_gl={float(d_gl):+.3e} delta_trap={float(d_tr):+.3e}")

    def summary(rule):
        ds = [abs(d["delta"]) for d in deltas[rule]]
        return {"min_abs": min(ds), "max_abs": max(ds)}

    gl_alphas, gl_weights = ig_parameters("gausslegendre")
    tr_alphas, tr_weights = ig_parameters("riemann_trapezoid")
    meta = {
        "model": name,
        "checkpoint": f"tests/data/{name}",
        "generator": "scripts/make_saliency_goldens.py",
        "prompts": PROMPTS,
        "input_ids": all_ids,
        "sequences": seqs,
        "n_gen": N_GEN,
        "n_steps": N_STEPS,
        "hidden_size": model.config.hidden_size,
        "key_pattern": "p{i}.t{t}.{gradient,grad_x_input,ig_gl,ig_trap} [p,d]; "
                       "p{i}.t{t}.{ig_gl_delta,ig_trap_delta,f,f0} [1]; p{i}.sequence i64 [L]; "
                       "ig.{gl,trap}.{alphas,weights} [50]",
        "definitions": DEFINITIONS,
        "targets": fvals,
        "ig_convergence_delta": {
            "definition": "delta = sum(attributions) - (f(e) - f(zeros)) (captum compute_convergence_delta)",
            "gausslegendre": deltas["gausslegendre"],
            "riemann_trapezoid": deltas["riemann_trapezoid"],
            "summary": {"gausslegendre": summary("gausslegendre"),
                        "riemann_trapezoid": summary("riemann_trapezoid")},
        },
        "ig_parameters_float64": {
            "gausslegendre": {"alphas": gl_alphas, "weights": gl_weights},
            "riemann_trapezoid": {"alphas": tr_alphas, "weights": tr_weights},
        },
        "checks": {
            "tolerance": TOL,
            "performed": [
                "argmax loop == model.generate(do_sample=False, eos_token_id=None)",
                "sequence prefix == greedy tokens in golden/<model>.safetensors (when present)",
                "f via inputs_embeds == softmax of the ids forward at position p-1",
                "Saliency == |torch.autograd grad of f|",
                "InputXGradient == torch.autograd grad of f * e",
                "sum(IG attributions) - delta == f(e) - f(0) for both rules",
            ],
        },
        "notes": [ZERO_BASELINE_NOTE, TRAP_NOTE],
        "dtype": "float32",
        "attn_implementation": "eager",
        "versions": versions(),
    }
    write(name, tensors, meta)
    return meta


def write(name, tensors, meta):
    path = write_golden(f"saliency-{name}", tensors, meta, GENERATOR)
    size = path.stat().st_size
    assert size < 1024 * 1024, (path, size)
    print(f"  wrote {path.relative_to(ROOT)} ({size} bytes)")


def main():
    deterministic_setup()
    warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
    for name in MODELS:
        print(f"{name}:")
        meta = saliency_golden(name)
        print(f"  IG |delta| {json.dumps(meta['ig_convergence_delta']['summary'])}")
    print("done; versions:", json.dumps(versions()))


if __name__ == "__main__":
    main()
