#!/usr/bin/env python3
"""Make golden reference files for tokenlens' activation patching of clean / corrupted pairs
whose prompts have DIFFERENT token lengths, aligned at their last token ("end alignment"): exact
patching (one patched forward per site) and attribution patching (the first-order estimate),
with the hooks, site helpers and Float64 mode of make_patching_goldens.py (imported).

What it writes (under tests/data/golden/, relative to the repo root), for MODELS =
tiny-gpt2 and tiny-llama (the tiny checkpoints made by scripts/make_goldens.py):

  patching-unequal-<model>.safetensors
      For pair i in PAIRS (fixed ids; clean length Lc != corrupted length Lk), dir in DIRECTIONS
      (denoise, noise), with A = min(Lc, Lk) aligned positions, n = n_layers, H = n_heads:
        pair{i}.clean / .corrupted         i64 [Lc] / [Lk]  prompt ids
        pair{i}.answer / .foil             i64 [1]       answer id a / foil id b
        pair{i}.first_aligned              i64 [1]       the first aligned CLEAN position, max(0, Lc - Lk)
        pair{i}.clean_value                f32 [1]       m(clean run)
        pair{i}.corrupted_value            f32 [1]       m(corrupted run)
        pair{i}.{dir}.resid_pre            f32 [n, A]    m of the run patched at that one site
        pair{i}.{dir}.mlp_out              f32 [n, A]
        pair{i}.{dir}.attn_head            f32 [n, H]    (all aligned positions at once)
        pair{i}.{dir}.attn_head_pos        f32 [n, H, A]
        pair{i}.{dir}.attrib.<site kind>   same shapes   first-order estimates of (patched - base)
      Position axes run over the aligned CLEAN positions first_aligned .. Lc-1, in increasing order.
  patching-unequal-<model>.json
      Ids, tokens, lengths, aligned positions (clean and corrupted), answer/foil ids, n_layers,
      n_heads, head_dim, the exact definitions (DEFINITIONS, with the alignment rule), the checks
      performed with their measured errors, the Pearson correlations of attribution vs exact
      effect, notes, versions.

Definitions (also written into the JSON): see DEFINITIONS below. Each run is computed alone,
unpadded; m(run) = logits[0, -1, a] - logits[0, -1, b] at that run's own last position. Clean
position p corresponds to corrupted position p + (Lk - Lc); only positions present in both are
aligned. `denoise` runs the corrupted prompt with one site (at the aligned corrupted position)
taken from the clean run (at clean position p); `noise` the clean prompt with one site from the
corrupted run. attn_head[l, h] patches head h's slice at every aligned position at once and
leaves the base run's other positions alone. Attribution patching: sum over the site's aligned
positions of (source act - base act) * dm/d(act) at the base run.

The exact values come from one batched forward per pair, direction and site kind (one batch row
per site; the source activations are shifted onto the base run's positions once, then
make_patching_goldens' torch.where selection). The script fails loudly (AssertionError) if: a
pair's lengths are equal, an id is 0 or >= 512, a == b; the hooked forward differs from a plain
one; a batched patched value differs from the same patch run alone (batch of 1, its source value
copied by explicit index from the unshifted source run: an independent path through the
position mapping) by more than 1e-6 (a few sites of every kind, direction and pair); patching
any site with its own run's value changes the metric (alone: bit-exact; batched: 1e-6); the
gradient at resid_pre of layer 0 differs from d m / d inputs_embeds; the sum over aligned
positions of the attn_head_pos estimates differs from the attn_head estimate; an estimate
differs from the central-difference directional derivative on a float64 copy of the model
(make_patching_goldens' Float64 mode; a few sites of every kind, direction and pair); or, run on
make_patching_goldens' equal-length pairs (where every position is aligned), the same code does
not reproduce tests/data/golden/patching-<model>.safetensors (exact values 1e-6, estimates 1e-5).
The check "resid_pre of layer 0 at all positions reproduces the source run" of
make_patching_goldens does not carry over (the runs differ in length, and in position
embeddings / RoPE angles at aligned positions) and is not made.

How to run (a developer does this by hand; CI never runs it), from the repo root:

    $REFENV_PY scripts/make_patching_unequal_goldens.py

$REFENV_PY is the reference venv's python (default ~/.cache/tokenlens/refenv/bin/python; see
scripts/lib.sh and scripts/README.md); needs torch, transformers, tokenizers, safetensors, numpy
(no captum). CPU, one thread, float32, eager attention, eval mode: a rerun with the same library
versions gives byte-identical files. Takes ~10 s.
"""

import copy
import json

import numpy as np
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from golden_util import DATA, GOLDEN, ROOT, assert_close, deterministic_setup, load_tiny, write_golden
from make_patching_goldens import (DEFINITIONS as EQUAL_DEFINITIONS, DIRECTIONS, FD_STEP, MODELS,
                                   PAIRS as EQUAL_PAIRS, SITE_KINDS, TOL_BATCH, TOL_GRAD, Float64, Hooked,
                                   check_sites, pearson, versions)

GENERATOR = "scripts/make_patching_unequal_goldens.py"
# Fixed ids (no id 0, < 512; the tiny checkpoints' vocabulary is 512). Pair 0: the corrupted
# prompt is longer (2 extra leading tokens, one aligned token differs); pair 1: shorter (the
# clean prompt's first 2 tokens have no counterpart, one aligned token differs).
PAIRS = [
    {"clean": [17, 203, 45, 390, 88, 129], "corrupted": [301, 12, 17, 203, 45, 77, 88, 129],
     "answer": 123, "foil": 456},
    {"clean": [64, 411, 9, 300, 250, 5, 460], "corrupted": [9, 300, 33, 5, 460],
     "answer": 77, "foil": 390},
]
LENGTHS = [(6, 8), (7, 5)]
MAX_ID = 512
TOL_EQUAL_EXACT = 1e-6   # equal-length pairs vs patching-<model>.safetensors (scaled by max(1, |m|))
TOL_EQUAL_ATTRIB = 1e-5
MAX_FILE_BYTES = 300 * 1024

DEFINITIONS = {
    "ids": "fixed token ids (PAIRS), no BOS added, no id 0, all < 512; clean length Lc != corrupted length Lk",
    "answer / foil": "fixed ids a != b",
    "alignment": "end alignment: each run is computed ALONE, unpadded, at its own positions 0..L-1. Clean position "
                 "p corresponds to corrupted position p + (Lk - Lc); p is ALIGNED when both exist, i.e. "
                 "p in [first_aligned, Lc) with first_aligned = max(0, Lc - Lk), A = min(Lc, Lk) positions (a suffix "
                 "of both prompts). The value moved is the activation tensor as computed in the source run at its "
                 "own position (with its own position embedding / RoPE angles and its own context); nothing is "
                 "re-positioned",
    "metric": "m(run) = logits[0, -1, a] - logits[0, -1, b] at that run's own last position (Lc - 1 or Lk - 1; the "
              "last positions are aligned with each other); clean_value = m(clean run), corrupted_value = "
              "m(corrupted run)",
    "modules": EQUAL_DEFINITIONS["modules"],
    "sites": {
        "resid_pre[l, p]": EQUAL_DEFINITIONS["sites"]["resid_pre[l, p]"] + "; p an aligned clean position",
        "mlp_out[l, p]": EQUAL_DEFINITIONS["sites"]["mlp_out[l, p]"] + "; p an aligned clean position",
        "attn_head[l, h]": "head h's attention output z (input[:, :, h*hd:(h+1)*hd] of block l's attention output "
                           "projection) at EVERY ALIGNED position at once, [A, hd]; the base run's non-aligned "
                           "positions keep their own values",
        "attn_head_pos[l, h, p]": "the same slice at aligned clean position p only, [hd]",
    },
    "directions": {
        "denoise": "base run = the CORRUPTED prompt, source run = the CLEAN prompt: the site at corrupted position "
                   "p + (Lk - Lc) takes the clean run's value at clean position p",
        "noise": "base run = the CLEAN prompt, source run = the CORRUPTED prompt: the site at clean position p takes "
                 "the corrupted run's value at corrupted position p + (Lk - Lc)",
    },
    "exact": "pair{i}.{dir}.<kind>[l, ..., j] (j = p - first_aligned) = m of the base prompt's forward with that one "
             "site replaced by its value in the source run at the aligned position (captured by the same hooks in "
             "an unpatched forward of the source prompt); every other site keeps its value as computed in the "
             "patched forward. Raw metric values; base_value = clean_value for noise, corrupted_value for denoise",
    "attrib": "pair{i}.{dir}.attrib.<kind>[...] = sum over the site's elements of (source_act at the aligned source "
              "position - base_act) * dm/d(base_act) at the unpatched base run: the first-order estimate of "
              "exact - base_value. Sums: resid_pre, mlp_out over d; attn_head over the aligned positions and hd; "
              "attn_head_pos over hd. Products and sums in float64 from float32 activations and gradients, stored "
              "as float32",
    "shapes": "resid_pre, mlp_out: [n_layers, A]; attn_head: [n_layers, n_heads]; attn_head_pos: "
              "[n_layers, n_heads, A]; position axes = aligned clean positions first_aligned..Lc-1, increasing",
    "computation": "exact values: one batched forward per pair, direction and site kind, one batch row per site "
                   "(each row the base prompt, unpadded), the source value put in with torch.where from the source "
                   "activations shifted onto the base positions (a selection, no arithmetic); checked against "
                   "batch-of-1 patched forwards on a few sites",
    "dtype": EQUAL_DEFINITIONS["dtype"],
}


def run_pos(p, L_run, Lc):
    """Position in a run of length L_run of aligned clean position p (end alignment)."""
    return p + (L_run - Lc)


def aligned_clean_positions(Lc, Lk):
    return list(range(max(0, Lc - Lk), Lc))


def site_list(kind, n_layers, n_heads, positions):
    """The sites of a kind in row-major order of its golden tensor; positions are CLEAN positions."""
    if kind in ("resid_pre", "mlp_out"):
        return [(l, p) for l in range(n_layers) for p in positions]
    if kind == "attn_head":
        return [(l, h) for l in range(n_layers) for h in range(n_heads)]
    if kind == "attn_head_pos":
        return [(l, h, p) for l in range(n_layers) for h in range(n_heads) for p in positions]
    raise ValueError(kind)


def site_shape(kind, n_layers, n_heads, A):
    return {"resid_pre": (n_layers, A), "mlp_out": (n_layers, A), "attn_head": (n_layers, n_heads),
            "attn_head_pos": (n_layers, n_heads, A)}[kind]


def site_key_and_index(kind, site, hd, Lb, Lc, first):
    """(hook key, index into a [B, Lb, D] tensor's last two dims) of one site (clean positions) in
    the BASE run of length Lb; first = the first aligned clean position. attn_head covers the
    aligned suffix of the base run only (base positions run_pos(first, Lb, Lc) .. Lb-1)."""
    if kind in ("resid_pre", "mlp_out"):
        l, p = site
        return ("resid" if kind == "resid_pre" else "mlp", l), (run_pos(p, Lb, Lc), slice(None))
    if kind == "attn_head":
        l, h = site
        return ("z", l), (slice(run_pos(first, Lb, Lc), None), slice(h * hd, (h + 1) * hd))
    l, h, p = site
    return ("z", l), (run_pos(p, Lb, Lc), slice(h * hd, (h + 1) * hd))


def shift_to_base(src_acts, Lb, Ls):
    """The source run's activations ([1, Ls, D] each) moved onto the base run's positions by end
    alignment: out[:, q] = src[:, q - (Lb - Ls)] for the base positions q that have a
    counterpart; zeros elsewhere (never selected)."""
    out = {}
    for key, v in src_acts.items():
        o = torch.zeros(1, Lb, v.shape[-1], dtype=v.dtype)
        n = min(Lb, Ls)
        o[:, Lb - n:] = v[:, Ls - n:]
        out[key] = o
    return out


def batched_patches(kind, sites, shifted, hd, Lb, Lc, first, D):
    """Patches for a batch with one row per site: row k has site k from `shifted` (base positions)."""
    patches = {}
    for k, site in enumerate(sites):
        key, (pi, di) = site_key_and_index(kind, site, hd, Lb, Lc, first)
        if key not in patches:
            patches[key] = (torch.zeros(len(sites), Lb, D, dtype=torch.bool), shifted[key].detach())
        patches[key][0][k, pi, di] = True
    return patches


def single_patch_direct(kind, site, src, hd, Lb, Ls, Lc, D):
    """A batch-of-1 patch of one site whose mask and value are built position by position from
    the clean positions (attn_head: every clean position present in both runs, found by range
    tests, not from first_aligned), the value copied from `src` ([1, Ls, D], the UNSHIFTED source
    run): base position run_pos(p, Lb, Lc) <- source position run_pos(p, Ls, Lc). Independent
    of shift_to_base and of site_key_and_index's position index."""
    key = {"resid_pre": "resid", "mlp_out": "mlp"}.get(kind, "z"), site[0]
    di = slice(None) if kind in ("resid_pre", "mlp_out") else slice(site[1] * hd, (site[1] + 1) * hd)
    mask = torch.zeros(1, Lb, D, dtype=torch.bool)
    val = torch.zeros(1, Lb, D, dtype=src.dtype)
    if kind == "attn_head":  # every clean position present in both runs
        positions = [p for p in range(Lc) if run_pos(p, Lb, Lc) >= 0 and run_pos(p, Ls, Lc) >= 0]
    else:
        positions = [site[-1]]
    for p in positions:
        q, s = run_pos(p, Lb, Lc), run_pos(p, Ls, Lc)
        assert 0 <= q < Lb and 0 <= s < Ls, (kind, site, p, q, s)
        mask[0, q, di] = True
        val[0, q, di] = src[0, s, di]
    return {key: (mask, val.detach())}


def attribution(kind, sites, diff, grad, hd, Lb, Lc, first):
    """sum over each site's elements of diff * grad (float64), one value per site; diff and grad
    on the base positions."""
    out = []
    for site in sites:
        key, (pi, di) = site_key_and_index(kind, site, hd, Lb, Lc, first)
        out.append((diff[key][0, pi, di].double() * grad[key][0, pi, di].double()).sum().item())
    return out


def unpatched(hk, model, ids, a, b, checks, what):
    """m, activations and d m / d activations of an unpatched run; checks hooked == plain and the
    resid_pre[0] gradient against d m / d inputs_embeds."""
    m, cap = hk.run(ids, a, b, capture=True)
    keys = sorted(cap)
    g = torch.autograd.grad(m.sum(), [cap[k] for k in keys])
    acts = {k: cap[k].detach() for k in keys}
    grads = {k: gk.detach() for k, gk in zip(keys, g)}
    with torch.no_grad():
        z = model(ids, use_cache=False).logits[:, -1, :]
    checks["hooked_vs_plain_max_abs"] = max(
        checks["hooked_vs_plain_max_abs"], assert_close(m.detach(), z[:, a] - z[:, b], f"{what}: hooked vs plain", 0.0))
    e = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    z = model(inputs_embeds=e, use_cache=False).logits[:, -1, :]
    (ge,) = torch.autograd.grad((z[:, a] - z[:, b]).sum(), e)
    checks["grad_resid_pre_l0_vs_inputs_embeds_max_abs"] = max(
        checks["grad_resid_pre_l0_vs_inputs_embeds_max_abs"],
        assert_close(grads[("resid", 0)], ge, f"{what}: grad resid_pre[0]", TOL_GRAD))
    return m.detach(), acts, grads


def patch_pair(hk, hk64, model, clean, corrupted, a, b, checks, what, with_checks=True):
    """Everything of one pair: (values, {(dir, kind): (exact tensor, estimate tensor)}, positions)."""
    n_layers, n_heads, hd, D = hk.n_layers, hk.n_heads, hk.head_dim, hk.d
    Lc = len(clean)
    L = {"clean": len(clean), "corrupted": len(corrupted)}
    ids = {"clean": torch.tensor([clean], dtype=torch.int64), "corrupted": torch.tensor([corrupted], dtype=torch.int64)}
    positions = aligned_clean_positions(L["clean"], L["corrupted"])
    A, first = len(positions), positions[0]
    value, acts, grads = {}, {}, {}
    for run in ("clean", "corrupted"):
        value[run], acts[run], grads[run] = unpatched(hk, model, ids[run], a, b, checks, f"{what} {run}")
        if with_checks:
            with torch.no_grad(), Float64():
                m64 = hk64.run(ids[run], a, b)
            checks["float64_copy_vs_float32_max_abs"] = max(
                checks["float64_copy_vs_float32_max_abs"],
                assert_close(value[run], m64.float(), f"{what} {run}: float64 copy", 1e-5))
    out = {}
    for dname, (base, source) in DIRECTIONS.items():
        Lb, Ls = L[base], L[source]
        base_value = value[base]
        shifted = shift_to_base(acts[source], Lb, Ls)
        diff = {k: shifted[k] - acts[base][k] for k in acts[base]}
        for kind in SITE_KINDS:
            sites = site_list(kind, n_layers, n_heads, positions)
            shape = site_shape(kind, n_layers, n_heads, A)
            batch = ids[base].expand(len(sites), Lb).contiguous()
            with torch.no_grad():
                exact = hk.run(batch, a, b, patches=batched_patches(kind, sites, shifted, hd, Lb, Lc, first, D))
                own = hk.run(batch, a, b, patches=batched_patches(kind, sites, acts[base], hd, Lb, Lc, first, D))
            checks["own_value_batched_max_abs"] = max(
                checks["own_value_batched_max_abs"],
                assert_close(own, base_value.expand_as(own), f"{what} {dname} {kind}: own value, batched", TOL_BATCH))
            est = attribution(kind, sites, diff, grads[base], hd, Lb, Lc, first)
            if with_checks:
                for site in check_sites(kind, sites):
                    row = sites.index(site)
                    key, (pi, di) = site_key_and_index(kind, site, hd, Lb, Lc, first)
                    with torch.no_grad():
                        alone = hk.run(ids[base], a, b, patches=single_patch_direct(
                            kind, site, acts[source][key], hd, Lb, Ls, Lc, D))
                        m1 = torch.zeros(1, Lb, D, dtype=torch.bool)
                        m1[0, pi, di] = True
                        own1 = hk.run(ids[base], a, b, patches={key: (m1, acts[base][key])})
                    checks["batched_vs_alone_max_abs"] = max(
                        checks["batched_vs_alone_max_abs"],
                        assert_close(exact[row:row + 1], alone, f"{what} {dname} {kind} {site}: batched vs alone",
                                     TOL_BATCH))
                    assert torch.equal(own1, base_value), (what, dname, kind, site, own1, base_value)
                    checks["own_value_alone_max_abs"] = max(checks["own_value_alone_max_abs"],
                                                            (own1 - base_value).abs().item())
                    checks["n_alone_checked"] += 1
                    # The estimate is the directional derivative d/dt m(site = base + t * diff) at t = 0.
                    base64 = acts[base][key].double()
                    fd = []
                    for t in (FD_STEP, -FD_STEP):
                        src = base64 + t * diff[key].double()
                        with torch.no_grad(), Float64():
                            fd.append(hk64.run(ids[base], a, b, patches={key: (m1, src)}))
                        assert fd[-1].dtype == torch.float64
                    fdv = ((fd[0] - fd[1]) / (2 * FD_STEP)).item()
                    scale = (diff[key][0, pi, di].double() * grads[base][key][0, pi, di].double()).abs().sum().item()
                    ferr = abs(est[row] - fdv)
                    assert ferr <= 1e-5 + 1e-4 * scale, \
                        f"{what} {dname} {kind} {site}: attrib {est[row]:.6e} vs float64 FD {fdv:.6e}"
                    checks["attrib_vs_fd64_max_abs"] = max(checks["attrib_vs_fd64_max_abs"], ferr)
                    if scale > 0:
                        checks["attrib_vs_fd64_max_rel"] = max(checks["attrib_vs_fd64_max_rel"], ferr / scale)
                    checks["n_fd_checked"] += 1
            out[(dname, kind)] = (exact.detach().reshape(shape), torch.tensor(est, dtype=torch.float64).reshape(shape))
        s = out[(dname, "attn_head_pos")][1].sum(-1)
        checks["attn_head_vs_sum_attn_head_pos_max_abs"] = max(
            checks["attn_head_vs_sum_attn_head_pos_max_abs"],
            assert_close(s, out[(dname, "attn_head")][1], f"{what} {dname}: attn_head vs sum of attn_head_pos",
                         TOL_GRAD))
    return value, out, positions


def check_equal_length(hk, hk64, model, tok, name, checks):
    """On make_patching_goldens' equal-length pairs every position is aligned and the definitions
    reduce to that script's: reproduce tests/data/golden/patching-<model>.safetensors."""
    ref = load_file(str(GOLDEN / f"patching-{name}.safetensors"))
    for i, pair in enumerate(EQUAL_PAIRS):
        clean, corrupted = tok.encode(pair["clean"]).ids, tok.encode(pair["corrupted"]).ids
        a, b = tok.encode(pair["answer"]).ids[0], tok.encode(pair["foil"]).ids[0]
        assert ref[f"pair{i}.clean"].tolist() == clean and ref[f"pair{i}.corrupted"].tolist() == corrupted, (name, i)
        value, out, _ = patch_pair(hk, hk64, model, clean, corrupted, a, b, checks, f"{name} equal pair{i}",
                                   with_checks=False)
        for run in ("clean", "corrupted"):
            assert torch.equal(value[run].reshape(1), ref[f"pair{i}.{run}_value"]), (name, i, run)
        for (dname, kind), (exact, est) in out.items():
            checks["equal_length_vs_patching_golden_exact_max_abs"] = max(
                checks["equal_length_vs_patching_golden_exact_max_abs"],
                assert_close(exact, ref[f"pair{i}.{dname}.{kind}"], f"{name} equal pair{i} {dname} {kind}",
                             TOL_EQUAL_EXACT))
            checks["equal_length_vs_patching_golden_attrib_max_abs"] = max(
                checks["equal_length_vs_patching_golden_attrib_max_abs"],
                assert_close(est.float(), ref[f"pair{i}.{dname}.attrib.{kind}"], f"{name} equal pair{i} {dname} "
                             f"attrib {kind}", TOL_EQUAL_ATTRIB))
        checks["n_equal_length_pairs"] += 1


def patching_golden(name):
    model_dir = DATA / name
    model = load_tiny(model_dir)
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    model64 = copy.deepcopy(model).double()  # before any hooks are registered on `model`
    hk, hk64 = Hooked(model), Hooked(model64)
    n_layers, n_heads, hd, D = hk.n_layers, hk.n_heads, hk.head_dim, hk.d
    assert n_heads * hd == D, "tiny checkpoints: the output projection's input has width d"
    vocab = model.config.vocab_size
    assert vocab == MAX_ID, (name, vocab)

    tensors, pairs_meta = {}, []
    checks = {"batched_vs_alone_max_abs": 0.0, "own_value_batched_max_abs": 0.0, "own_value_alone_max_abs": 0.0,
              "hooked_vs_plain_max_abs": 0.0, "grad_resid_pre_l0_vs_inputs_embeds_max_abs": 0.0,
              "attn_head_vs_sum_attn_head_pos_max_abs": 0.0, "attrib_vs_fd64_max_abs": 0.0,
              "attrib_vs_fd64_max_rel": 0.0, "float64_copy_vs_float32_max_abs": 0.0,
              "equal_length_vs_patching_golden_exact_max_abs": 0.0,
              "equal_length_vs_patching_golden_attrib_max_abs": 0.0,
              "n_alone_checked": 0, "n_fd_checked": 0, "n_equal_length_pairs": 0}
    corr_data = {(k, d): ([], []) for k in SITE_KINDS for d in DIRECTIONS}
    for i, pair in enumerate(PAIRS):
        clean, corrupted, a, b = pair["clean"], pair["corrupted"], pair["answer"], pair["foil"]
        Lc, Lk = len(clean), len(corrupted)
        assert (Lc, Lk) == LENGTHS[i] and Lc != Lk, (i, Lc, Lk)
        assert all(0 < t < MAX_ID for t in clean + corrupted + [a, b]) and a != b, (i, pair)
        value, out, positions = patch_pair(hk, hk64, model, clean, corrupted, a, b, checks, f"{name} pair{i}")
        first = positions[0]
        assert first == max(0, Lc - Lk) and positions[-1] == Lc - 1
        tensors.update({
            f"pair{i}.clean": torch.tensor(clean, dtype=torch.int64),
            f"pair{i}.corrupted": torch.tensor(corrupted, dtype=torch.int64),
            f"pair{i}.answer": torch.tensor([a], dtype=torch.int64),
            f"pair{i}.foil": torch.tensor([b], dtype=torch.int64),
            f"pair{i}.first_aligned": torch.tensor([first], dtype=torch.int64),
            f"pair{i}.clean_value": value["clean"].reshape(1),
            f"pair{i}.corrupted_value": value["corrupted"].reshape(1),
        })
        differing = [p for p in positions if clean[p] != corrupted[run_pos(p, Lk, Lc)]]
        pmeta = {"pair": i, "clean_ids": clean, "corrupted_ids": corrupted,
                 "clean_tokens": [tok.id_to_token(t) for t in clean],
                 "corrupted_tokens": [tok.id_to_token(t) for t in corrupted],
                 "answer_id": a, "foil_id": b, "answer_token": tok.id_to_token(a), "foil_token": tok.id_to_token(b),
                 "Lc": Lc, "Lk": Lk, "first_aligned": first, "A": len(positions),
                 "aligned_clean_positions": positions,
                 "aligned_corrupted_positions": [run_pos(p, Lk, Lc) for p in positions],
                 "aligned_clean_positions_with_different_ids": differing,
                 "clean_value": float(value["clean"]), "corrupted_value": float(value["corrupted"]),
                 "directions": {}}
        for dname, (base, source) in DIRECTIONS.items():
            base_value = value[base]
            dmeta = {"base_value": float(base_value), "source_value": float(value[source])}
            for kind in SITE_KINDS:
                exact_t, est_t = out[(dname, kind)]
                tensors[f"pair{i}.{dname}.{kind}"] = exact_t
                tensors[f"pair{i}.{dname}.attrib.{kind}"] = est_t.float()
                effect = (exact_t.double() - base_value.double()).numpy()
                corr_data[(kind, dname)][0].extend(est_t.numpy().ravel().tolist())
                corr_data[(kind, dname)][1].extend(effect.ravel().tolist())
                top = int(np.argmax(np.abs(effect).ravel()))
                dmeta[kind] = {
                    "pearson_attrib_vs_exact_effect": pearson(est_t.numpy(), effect),
                    "max_abs_effect": float(np.abs(effect).max()),
                    "argmax_abs_effect_index": [int(x) for x in np.unravel_index(top, effect.shape)],
                    "max_abs_attrib_minus_effect": float(np.abs(est_t.numpy() - effect).max()),
                    "n_exactly_unchanged": int((exact_t == base_value).sum()),
                }
            pmeta["directions"][dname] = dmeta
            print(f"  {name} pair{i} {dname}: base {float(base_value):+.6f} source {float(value[source]):+.6f} | "
                  + " | ".join(f"{k} r={dmeta[k]['pearson_attrib_vs_exact_effect']:+.3f}" for k in SITE_KINDS))
        pairs_meta.append(pmeta)

    check_equal_length(hk, hk64, model, tok, name, checks)

    pooled = {k: {d: pearson(*corr_data[(k, d)]) for d in DIRECTIONS} for k in SITE_KINDS}
    notes = [
        "With random weights the metric carries no meaning; the goldens only pin the arithmetic of patching under "
        "end alignment.",
        "Pair 0: the corrupted prompt is longer (Lc 6, Lk 8): every clean position is aligned (first_aligned 0), "
        "corrupted positions 0 and 1 have no counterpart and are never patched (noise) nor patched into (denoise). "
        "Pair 1: the corrupted prompt is shorter (Lc 7, Lk 5): clean positions 0 and 1 have no counterpart "
        "(first_aligned 2); the position axes of pair 1 start at clean position 2.",
        "Aligned positions sit at different absolute positions in the two runs (gpt2: different position "
        "embeddings; llama: different RoPE angles), and the longer run's extra prefix is part of every later "
        "position's context: even aligned positions with equal ids carry different activations, so no site is "
        "exactly unaffected by construction and patching resid_pre of layer 0 at every aligned position does NOT "
        "reproduce the source run (that check of make_patching_goldens is not made here).",
        "The metric is read at each run's own last position; the two last positions are aligned with each other.",
        f"Pearson correlation of attribution estimates vs exact effects (patched - base), both pairs pooled: "
        f"{json.dumps({k: {d: None if v is None else round(v, 4) for d, v in t.items()} for k, t in pooled.items()})}.",
        "With equal lengths the same code reproduces patching-<model>.safetensors (checked on its two pairs: exact "
        f"max |difference| {checks['equal_length_vs_patching_golden_exact_max_abs']:.1e}, estimates "
        f"{checks['equal_length_vs_patching_golden_attrib_max_abs']:.1e}).",
        f"Batched patched forwards vs the same patch alone (source value copied by explicit index): max |difference| "
        f"{checks['batched_vs_alone_max_abs']:.1e} on {checks['n_alone_checked']} checked sites; own-value patches: "
        f"alone bit-identical to the unpatched run, batched within {checks['own_value_batched_max_abs']:.1e}.",
    ]
    if model.config.model_type == "llama":
        notes.append(f"tiny-llama uses grouped-query attention ({model.config.num_key_value_heads} key/value heads "
                     f"for {n_heads} query heads); attn_head is per query head: the o_proj input slice "
                     "h*hd:(h+1)*hd.")

    meta = {
        "model": name,
        "checkpoint": f"tests/data/{name}",
        "generator": GENERATOR,
        "pairs": pairs_meta,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "head_dim": hd,
        "hidden_size": D,
        "vocab_size": vocab,
        "lengths": [[p["Lc"], p["Lk"]] for p in pairs_meta],
        "site_kinds": SITE_KINDS,
        "directions": list(DIRECTIONS),
        "key_pattern": "pair{i}.clean i64 [Lc]; pair{i}.corrupted i64 [Lk]; pair{i}.{answer,foil,first_aligned} i64 "
                       "[1]; pair{i}.{clean_value,corrupted_value} f32 [1]; pair{i}.{dir}.{resid_pre,mlp_out} f32 "
                       "[n_layers,A]; pair{i}.{dir}.attn_head f32 [n_layers,n_heads]; pair{i}.{dir}.attn_head_pos "
                       "f32 [n_layers,n_heads,A]; pair{i}.{dir}.attrib.<kind> the same shapes; dir in "
                       "{denoise,noise}; A = min(Lc, Lk), position index j = clean position first_aligned + j",
        "definitions": DEFINITIONS,
        "correlations": {"definition": "Pearson correlation between attrib.<kind> and (<kind> - base_value), all "
                                       "sites of the kind, both pairs pooled; null when one side is constant",
                         "pooled": pooled},
        "checks": {
            "measured": checks,
            "performed": [
                "clean and corrupted lengths differ (6/8, 7/5), no id 0, ids < 512; answer != foil",
                "the hooked forward (no patches) == a plain forward, exactly",
                "d m / d resid_pre[0] (hooked) == d m / d inputs_embeds (tolerance 1e-5)",
                "every site patched with its own run's value (batched): metric unchanged (1e-6); on the checked sites "
                "alone: bit-identical",
                "on 4 sites per kind, direction and pair (first, last, two between): batched == alone, the alone "
                "patch's value copied position by position from the unshifted source run (1e-6), and the estimate "
                "== the central difference (step 1e-4) of m along (source - base) at that site on a float64 copy "
                "of the model under make_patching_goldens' Float64 TorchFunctionMode (1e-5 + 1e-4 * "
                "sum |diff * grad|)",
                "the float64 copy's unpatched metric == the float32 one (1e-5)",
                "attrib.attn_head == sum over aligned positions of attrib.attn_head_pos (1e-5)",
                "the same code on make_patching_goldens' two equal-length pairs reproduces "
                "patching-<model>.safetensors: clean/corrupted values bit-exact, exact values (1e-6), estimates (1e-5)",
            ],
        },
        "notes": notes,
        "dtype": "float32",
        "attn_implementation": "eager",
        "versions": versions(),
    }
    path = write_golden(f"patching-unequal-{name}", tensors, meta, GENERATOR)
    size = path.stat().st_size
    assert size < MAX_FILE_BYTES, (path, size)
    print(f"  wrote {path.relative_to(ROOT)} ({size} bytes)")
    return meta


def main():
    deterministic_setup()
    for name in MODELS:
        print(f"{name}:")
        meta = patching_golden(name)
        print(f"  checks: {json.dumps(meta['checks']['measured'])}")
    print("done; versions:", json.dumps(versions()))


if __name__ == "__main__":
    main()
