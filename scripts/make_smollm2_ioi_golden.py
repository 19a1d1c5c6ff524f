#!/usr/bin/env python3
"""Make the golden reference file for tokenlens' activation patching, attribution patching and
contrastive integrated gradients on the REAL default model, SmolLM2-135M-Instruct (the Q4_1 GGUF
as transformers loads it, every tensor dequantized to float32), on two rows of the shipped IOI
dataset datasets/ioi-pairs.jsonl (ROWS: ioi-000 and ioi-001).

The definitions are those of the tiny goldens (make_patching_goldens.py for patching, whose hooks
and site helpers this script imports; make_contrast_goldens.py for IG, whose by-hand formula is
repeated here without captum): denoise direction only, and IG attributions stored reduced per
position.

What it writes (under tests/data/golden/, relative to the repo root):

  smollm2-ioi.safetensors
      For pair i (0: ioi-000, 1: ioi-001), L = the pair's token length, 30 layers, 9 heads:
        pair{i}.clean / .corrupted          i64 [L]      prompt ids (same length, no BOS)
        pair{i}.answer / .foil              i64 [1]      answer id a / foil id b
        pair{i}.clean_value                 f32 [1]      m(clean run)
        pair{i}.corrupted_value             f32 [1]      m(corrupted run)
        pair{i}.denoise.resid_pre           f32 [30, L]  m of the corrupted run patched at one site
        pair{i}.denoise.attn_head           f32 [30, 9]    with the clean run's value
        pair{i}.denoise.mlp_out             f32 [30, L]
        pair{i}.denoise.attrib.<kind>       same shapes  first-order estimates of (patched - corrupted)
        pair{i}.ig.norm / .ig.signed        f32 [L]      IG attributions (corrupted baseline) per
                                                         position: L2 norm / sum over d
        pair{i}.ig.f / .ig.f_baseline       f32 [1]      f(e), f(B)
        pair{i}.ig.delta                    f32 [1]      sum(attr) - (f(e) - f(B))
        pair{i}.gxi.norm / .gxi.signed      f32 [L]      grad x input at e, reduced the same way
  smollm2-ioi.json
      Generator, the GGUF's sha256, the dataset's sha256, the rows used, texts, ids, tokens, the
      definitions (DEFINITIONS), per site kind the Pearson correlation of the estimates with the
      exact effects (patched - corrupted), the largest effects, the IG values, the checks with
      their measured errors, notes, versions.

m(run) = logits[0, -1, a] - logits[0, -1, b], a / b the first token of answer / foil. Sites:
resid_pre[l, p] (block l's input at position p), attn_head[l, h] (head h's slice of o_proj's
input at all positions), mlp_out[l, p] (block l's MLP output at position p).

The script fails loudly (AssertionError, or make_paired_dataset's error exit) if: the tokenizer
does not give tests/data/golden/smollm2.json's ids, or a row is not a clean IOI pair (the checks
of make_paired_dataset.py: same length, differing at the three names, single-token answer and
foil); the model's shape is not SmolLM2-135M's; the hooked forward differs from a plain one
(1e-5); d m / d resid_pre[0] at the corrupted run differs from d m / d inputs_embeds (1e-5); a
batched patched value differs from the same patch run alone by more than TOL_BATCH (4 sites per
kind and pair); a site patched alone with its own value changes the metric (bit-exact); patching
resid_pre of layer 0 at all positions does not reproduce the clean metric (1e-5); f(e), f(B) via
inputs_embeds differ from the ids forward (1e-5); or the IG attributions differ from a second
computation of them in another batching (TOL_IG, scaled by max(1, max |attr|)); or the clean and
corrupted values differ from datasets/ioi-pairs.json's (rounded to 4 decimals) by more than 1e-3.

How to run (a developer does this by hand; CI never runs it), from the repo root:

    $REFENV_PY scripts/make_smollm2_ioi_golden.py

$REFENV_PY is the reference venv's python (default ~/.cache/tokenlens/refenv/bin/python; see
scripts/lib.sh and scripts/README.md); needs torch, transformers, tokenizers, safetensors, gguf,
accelerate, numpy (no captum). The GGUF is TOKENLENS_GGUF or scripts/fetch-model.sh's file. CPU,
one thread, float32, eager attention, eval mode: a rerun with the same library versions gives
byte-identical files. Takes ~2.5 min on 2 cores (151-161 s measured, 5 runs, 2026-11-30, with the test
suite running alongside; loading the GGUF ~30 s of it, then ~60 s a pair: 1,110 patched rows in
64-row forwards, IG twice, the checks).
"""

import json
import os
import time

os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF progress bar (a plain tqdm)
import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from golden_util import ROOT, assert_close, deterministic_setup, sha256, write_golden  # noqa: E402
from golden_util import versions as lib_versions  # noqa: E402
from make_paired_dataset import check_rows, check_tokenizer, encode, gguf_path, load_tokenizer  # noqa: E402
from make_patching_goldens import (  # noqa: E402
    Hooked, attribution, batched_patches, check_sites, pearson, single_patch, site_key_and_index, site_list,
    site_shape,
)

GENERATOR = "scripts/make_smollm2_ioi_golden.py"
STEM = "smollm2-ioi"
DATASET = ROOT / "datasets" / "ioi-pairs.jsonl"
DATASET_SIDECAR = ROOT / "datasets" / "ioi-pairs.json"
ROWS = ["ioi-000", "ioi-001"]
SITE_KINDS = ["resid_pre", "attn_head", "mlp_out"]
CHUNK = 64            # patched forwards per batch
N_STEPS = 50          # Gauss-Legendre nodes
IG_CHECK_CHUNK = 7    # the IG check's batching (the stored values: all 50 points in one batch)
TOL_BATCH = 1e-5      # batched vs alone (scaled by max(1, |m|))
TOL_ALL_POS = 1e-5    # resid_pre layer 0 at all positions == the clean run
TOL = 1e-5            # hooked vs plain, inputs_embeds vs ids, gradients
TOL_IG = 1e-5         # IG vs IG in another batching (scaled by max(1, max |attr|))
MAX_FILE_BYTES = 400 * 1024

DEFINITIONS = {
    "model": "SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-model.sh smollm2, or TOKENLENS_GGUF) as transformers "
             "loads it: AutoModelForCausalLM.from_pretrained(dir, gguf_file=..., attn_implementation='eager', "
             "dtype=torch.float32), every tensor dequantized to float32 by gguf-py; eval mode",
    "ids": "AutoTokenizer.from_pretrained(dir, gguf_file=...)(text, add_special_tokens=False).input_ids, no BOS "
           "(as tokenlens encodes prompts for this model; checked against tests/data/golden/smollm2.json); clean "
           "and corrupted ids of a pair have the same length L",
    "answer / foil": "a = first id of encode(answer), b = first id of encode(foil) (both are single tokens)",
    "metric": "m(run) = logits[0, -1, a] - logits[0, -1, b], the logit difference after the whole prompt "
              "(float32; the forwards ask for the last position's logits only, logits_to_keep=1); clean_value = "
              "m(clean run), corrupted_value = m(corrupted run)",
    "modules": "block l = model.model.layers[l]; mlp = block.mlp; attention output projection = "
               "block.self_attn.o_proj (input width 9 heads x 64 = 576)",
    "sites": {
        "resid_pre[l, p]": "block l's input hidden state at position p, [576] (forward_pre_hook on the block); "
                           "layer 0: the token embeddings",
        "attn_head[l, h]": "head h's attention output z at ALL positions: input[:, :, 64h:64(h+1)] of block l's "
                           "o_proj (forward_pre_hook), [L, 64]; per query head (3 key/value heads shared by 9 "
                           "query heads)",
        "mlp_out[l, p]": "the output of block l's MLP module at position p, [576] (forward hook on .mlp)",
    },
    "exact": "pair{i}.denoise.<kind>[l, ...] = m of the CORRUPTED prompt's forward with that one site replaced by "
             "its value in the unpatched CLEAN run; everything after the site sees the patch. Raw metric values "
             "(not differences); the effect is <kind> - corrupted_value. Batched: CHUNK = 64 sites per forward, "
             "one batch row per site, the clean value put in with torch.where",
    "attrib": "pair{i}.denoise.attrib.<kind>[l, ...] = sum over the site's elements of (clean_act - corrupted_act) "
              "* dm/d(act) at the unpatched corrupted run (torch.autograd.grad of m w.r.t. the hooked tensors): "
              "the first-order estimate of <kind> - corrupted_value (attribution patching). Sums: resid_pre[l,p] "
              "and mlp_out[l,p] over d; attn_head[l,h] over positions and the head's 64 dims. Products and sums "
              "in float64 from the float32 activations and gradients, stored as float32",
    "ig": {
        "inputs": "e = model.get_input_embeddings()(clean ids), [1, L, 576]",
        "baseline": "B = model.get_input_embeddings()(corrupted ids)",
        "f": "f(x) = z[:, a] - z[:, b], z = model(inputs_embeds=x).logits[:, -1, :]: the metric m as a function of "
             "the input embeddings; ig.f = f(e) (= clean_value), ig.f_baseline = f(B) (= corrupted_value)",
        "attributions": "attr = (e - B) * sum_k w_k * df/dx at x = B + alpha_k (e - B), [1, L, 576], 50-node "
                        "Gauss-Legendre on (0, 1) as captum's 'gausslegendre': alpha_k = 0.5 (x_k + 1), w_k = 0.5 "
                        "v_k, (x, v) = numpy.polynomial.legendre.leggauss(50); the points in float32 (B + alpha_k * "
                        "(e - B), alpha_k a Python float), all 50 in one forward/backward batch, gradients of "
                        "sum(f), weights applied as float32 and summed over k in float32 (captum 0.9's "
                        "IntegratedGradients with internal_batch_size=None)",
        "norm": "ig.norm[p] = || attr[0, p, :] ||_2 (float64 from the float32 attributions, stored as float32)",
        "signed": "ig.signed[p] = sum_d attr[0, p, d] (float64, stored as float32)",
        "delta": "ig.delta = sum(attr) - (f(e) - f(B)), in float64 (captum's convergence delta)",
    },
    "gxi": "grad x input at the clean input: g = df/dx at x = e (torch.autograd.grad), gxi = g * e [1, L, 576]; "
           "gxi.norm[p] = || gxi[0, p, :] ||_2, gxi.signed[p] = sum_d gxi[0, p, d] (float64, stored as float32)",
    "dtype": "float32, eager attention, eval mode, CPU, torch.set_num_threads(1), use_cache=False",
}


def versions():
    return lib_versions([torch, transformers, tokenizers, safetensors, np], ["gguf", "accelerate"])


class LastHooked(Hooked):
    """make_patching_goldens.Hooked, asking the model for the last position's logits only."""

    def run(self, ids, a, b, patches=None, capture=False):
        self.patches, self.captured, self.capture = patches or {}, {}, capture
        try:
            logits = self.model(ids, use_cache=False, logits_to_keep=1).logits
        finally:
            self.patches, self.capture = {}, False
        captured, self.captured = self.captured, {}
        m = logits[:, -1, a] - logits[:, -1, b]
        return (m, captured) if capture else m


def patched(hk, base_ids, a, b, kind, sites, src_acts, L, D, hd):
    """m of base_ids with one site per batch row taken from src_acts, CHUNK rows a forward; [len(sites)]."""
    out = []
    for s in range(0, len(sites), CHUNK):
        part = sites[s:s + CHUNK]
        batch = base_ids.expand(len(part), L).contiguous()
        with torch.no_grad():
            out.append(hk.run(batch, a, b, patches=batched_patches(kind, part, src_acts, L, D, hd)))
    return torch.cat(out)


def gl_parameters():
    """captum's 'gausslegendre' at N_STEPS: (alphas, weights), Python floats."""
    x, v = np.polynomial.legendre.leggauss(N_STEPS)
    alphas, weights = list(0.5 * (1 + x)), list(0.5 * v)
    assert abs(sum(weights) - 1.0) < 1e-12 and all(0 < al < 1 for al in alphas)
    return alphas, weights


def integrated_gradients(fwd, e, base, chunk):
    """IG of fwd from base to e (DEFINITIONS['ig']['attributions']), the points `chunk` at a time."""
    alphas, weights = gl_parameters()
    w = torch.tensor(weights).float()
    total = torch.zeros_like(e)
    for s in range(0, N_STEPS, chunk):
        al = alphas[s:s + chunk]
        xs = torch.cat([base + a * (e - base) for a in al], dim=0).requires_grad_(True)
        (g,) = torch.autograd.grad(fwd(xs).sum(), xs)
        total = total + (g * w[s:s + len(al)].view(-1, 1, 1)).sum(0, keepdim=True)
    return total * (e - base)


def per_position(x):
    """(L2 norm over d, sum over d) of x [1, L, d], float64 -> float32 [L] each."""
    x = x[0].double()
    return x.norm(dim=-1).float(), x.sum(-1).float()


def main():
    t0 = time.monotonic()
    deterministic_setup()
    gguf = gguf_path()
    gguf_sha = sha256(gguf)
    tok = load_tokenizer(gguf)
    tokenizer_checked = check_tokenizer(tok)
    rows_all = [json.loads(line) for line in DATASET.read_text().splitlines() if line.strip()]
    by_id = {r["id"]: r for r in rows_all}
    rows = [by_id[r] for r in ROWS]
    _, targets = check_rows(tok, rows)
    sidecar = json.loads(DATASET_SIDECAR.read_text())["model_check"]["per_row"]

    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, attn_implementation="eager", dtype=torch.float32
    ).eval()
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.intermediate_size, cfg.vocab_size) == (30, 576, 9, 3, 1536, 49152), cfg
    t_load = time.monotonic() - t0
    hk = LastHooked(model)
    n_layers, n_heads, hd, D = hk.n_layers, hk.n_heads, hk.head_dim, hk.d
    assert n_heads * hd == hk.oproj[0].weight.shape[1] == D
    embed = model.get_input_embeddings()
    alphas, weights = gl_parameters()

    tensors, pairs_meta = {}, []
    checks = {"hooked_vs_plain_max_abs": 0.0, "grad_resid_pre_l0_vs_inputs_embeds_max_abs": 0.0,
              "batched_vs_alone_max_abs": 0.0, "own_value_alone_max_abs": 0.0,
              "resid_pre_l0_all_positions_max_abs": 0.0, "ig_f_vs_ids_forward_max_abs": 0.0,
              "ig_vs_other_batching_max_abs": 0.0, "values_vs_dataset_sidecar_max_abs": 0.0,
              "before_first_difference_max_abs_effect": 0.0, "n_alone_checked": 0}
    corr_data = {k: ([], []) for k in SITE_KINDS}
    n_forward_rows = 0
    for i, (row, (a, b)) in enumerate(zip(rows, targets)):
        tp = time.monotonic()
        clean, corrupted = encode(tok, row["clean"]), encode(tok, row["corrupted"])
        assert len(clean) == len(corrupted) and clean != corrupted, row
        assert [encode(tok, row["answer"])[0], encode(tok, row["foil"])[0]] == [a, b]
        L = len(clean)
        ids = {"clean": torch.tensor([clean], dtype=torch.int64),
               "corrupted": torch.tensor([corrupted], dtype=torch.int64)}
        tensors.update({
            f"pair{i}.clean": ids["clean"][0],
            f"pair{i}.corrupted": ids["corrupted"][0],
            f"pair{i}.answer": torch.tensor([a], dtype=torch.int64),
            f"pair{i}.foil": torch.tensor([b], dtype=torch.int64),
        })

        # Unpatched runs: metric, activations at every site point, gradients of m w.r.t. them.
        value, acts, grads = {}, {}, {}
        for run in ("clean", "corrupted"):
            m, cap = hk.run(ids[run], a, b, capture=True)
            keys = sorted(cap)
            g = torch.autograd.grad(m.sum(), [cap[k] for k in keys])
            value[run] = m.detach()
            acts[run] = {k: cap[k].detach() for k in keys}
            grads[run] = {k: gk.detach() for k, gk in zip(keys, g)}
            with torch.no_grad():
                z = model(ids[run], use_cache=False).logits[:, -1, :]
            checks["hooked_vs_plain_max_abs"] = max(
                checks["hooked_vs_plain_max_abs"],
                assert_close(value[run], z[:, a] - z[:, b], f"pair{i} {run}: hooked vs plain forward", TOL))
            side = sidecar[row["id"]][0 if run == "clean" else 1]
            err = abs(float(value[run]) - side)
            assert err <= 1e-3, f"pair{i} {run}: m {float(value[run]):.6f} vs datasets/ioi-pairs.json {side}"
            checks["values_vs_dataset_sidecar_max_abs"] = max(checks["values_vs_dataset_sidecar_max_abs"], err)
        tensors[f"pair{i}.clean_value"] = value["clean"].reshape(1)
        tensors[f"pair{i}.corrupted_value"] = value["corrupted"].reshape(1)
        base_value = value["corrupted"]
        diff = {k: acts["clean"][k] - acts["corrupted"][k] for k in acts["corrupted"]}
        diff_pos = [p for p in range(L) if clean[p] != corrupted[p]]

        # resid_pre at layer 0, all positions at once == the clean run.
        with torch.no_grad():
            m_all = hk.run(ids["corrupted"], a, b, patches={
                ("resid", 0): (torch.ones(1, L, D, dtype=torch.bool), acts["clean"][("resid", 0)])})
        checks["resid_pre_l0_all_positions_max_abs"] = max(
            checks["resid_pre_l0_all_positions_max_abs"],
            assert_close(m_all, value["clean"], f"pair{i}: resid_pre l0 all positions", TOL_ALL_POS))

        kinds_meta = {}
        for kind in SITE_KINDS:
            sites = site_list(kind, n_layers, n_heads, L)
            shape = site_shape(kind, n_layers, n_heads, L)
            exact = patched(hk, ids["corrupted"], a, b, kind, sites, acts["clean"], L, D, hd)
            n_forward_rows += len(sites)
            for site in check_sites(kind, sites):
                row_k = sites.index(site)
                key = site_key_and_index(kind, site, hd)[0]
                with torch.no_grad():
                    alone = hk.run(ids["corrupted"], a, b, patches=single_patch(kind, site, acts["clean"][key], L, D, hd))
                    own = hk.run(ids["corrupted"], a, b,
                                 patches=single_patch(kind, site, acts["corrupted"][key], L, D, hd))
                checks["batched_vs_alone_max_abs"] = max(
                    checks["batched_vs_alone_max_abs"],
                    assert_close(exact[row_k:row_k + 1], alone, f"pair{i} {kind} {site}: batched vs alone", TOL_BATCH))
                assert torch.equal(own, base_value), (i, kind, site, own, base_value)
                checks["own_value_alone_max_abs"] = max(checks["own_value_alone_max_abs"],
                                                        (own - base_value).abs().item())
                checks["n_alone_checked"] += 1
            est = torch.tensor(attribution(kind, sites, diff, grads["corrupted"], hd), dtype=torch.float64)
            exact_t, est_t = exact.detach().reshape(shape), est.reshape(shape)
            tensors[f"pair{i}.denoise.{kind}"] = exact_t
            tensors[f"pair{i}.denoise.attrib.{kind}"] = est_t.float()
            effect = (exact_t.double() - base_value.double()).numpy()
            if kind != "attn_head":  # positions before the first difference: same activations in both runs
                assert (est_t[:, :diff_pos[0]] == 0).all(), (i, kind)
                checks["before_first_difference_max_abs_effect"] = max(
                    checks["before_first_difference_max_abs_effect"], float(np.abs(effect[:, :diff_pos[0]]).max()))
            corr_data[kind][0].extend(est_t.numpy().ravel().tolist())
            corr_data[kind][1].extend(effect.ravel().tolist())
            order = np.argsort(-np.abs(effect).ravel())[:5]
            miss = np.abs(est_t.numpy() - effect).ravel()
            worst = int(np.argmax(miss))
            kinds_meta[kind] = {
                "pearson_attrib_vs_exact_effect": pearson(est_t.numpy(), effect),
                "largest_effects": [
                    {"site": [int(x) for x in np.unravel_index(int(k), shape)],
                     "effect": float(effect.ravel()[k]), "attrib": float(est_t.numpy().ravel()[k])}
                    for k in order],
                "max_abs_attrib_minus_effect": float(miss[worst]),
                "worst_estimate": {"site": [int(x) for x in np.unravel_index(worst, shape)],
                                   "attrib": float(est_t.numpy().ravel()[worst]),
                                   "effect": float(effect.ravel()[worst])},
                "n_exactly_unchanged": int((exact_t == base_value).sum()),
                "n_attrib_exactly_zero": int((est_t == 0).sum()),
            }

        # Contrastive IG (clean input, corrupted baseline) and grad x input.
        def fwd(x):
            z = model(inputs_embeds=x, use_cache=False, logits_to_keep=1).logits[:, -1, :]
            return z[:, a] - z[:, b]

        with torch.no_grad():
            e = embed(ids["clean"]).detach().clone()
            base = embed(ids["corrupted"]).detach().clone()
            f_e, f_b = fwd(e), fwd(base)
        for got, want, what in ((f_e, value["clean"], "f(e)"), (f_b, value["corrupted"], "f(B)")):
            checks["ig_f_vs_ids_forward_max_abs"] = max(
                checks["ig_f_vs_ids_forward_max_abs"], assert_close(got, want, f"pair{i} {what} vs ids forward", TOL))
        attr = integrated_gradients(fwd, e, base, N_STEPS)
        attr2 = integrated_gradients(fwd, e, base, IG_CHECK_CHUNK)
        checks["ig_vs_other_batching_max_abs"] = max(
            checks["ig_vs_other_batching_max_abs"],
            assert_close(attr2, attr, f"pair{i}: IG batch {N_STEPS} vs batch {IG_CHECK_CHUNK}", TOL_IG))
        delta = attr.double().sum() - (f_e.double() - f_b.double())
        ee = e.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(fwd(ee).sum(), ee)
        # d m / d inputs_embeds at the corrupted input == the hooked gradient at resid_pre[0].
        bb = base.clone().requires_grad_(True)
        (gb,) = torch.autograd.grad(fwd(bb).sum(), bb)
        checks["grad_resid_pre_l0_vs_inputs_embeds_max_abs"] = max(
            checks["grad_resid_pre_l0_vs_inputs_embeds_max_abs"],
            assert_close(grads["corrupted"][("resid", 0)], gb, f"pair{i}: grad resid_pre[0] vs inputs_embeds", TOL))
        gxi = g * e
        ig_norm, ig_signed = per_position(attr)
        gxi_norm, gxi_signed = per_position(gxi)
        tensors.update({
            f"pair{i}.ig.norm": ig_norm,
            f"pair{i}.ig.signed": ig_signed,
            f"pair{i}.ig.f": f_e.reshape(1),
            f"pair{i}.ig.f_baseline": f_b.reshape(1),
            f"pair{i}.ig.delta": delta.reshape(1).float(),
            f"pair{i}.gxi.norm": gxi_norm,
            f"pair{i}.gxi.signed": gxi_signed,
        })
        toks = tok.convert_ids_to_tokens(clean)
        pairs_meta.append({
            "pair": i, "row": row["id"], **{k: row[k] for k in ("clean", "corrupted", "answer", "foil")},
            "template": row["template"], "order": row["order"],
            "clean_ids": clean, "corrupted_ids": corrupted,
            "clean_tokens": toks, "corrupted_tokens": tok.convert_ids_to_tokens(corrupted),
            "answer_id": a, "foil_id": b, "L": L, "differing_positions": diff_pos,
            "clean_value": float(value["clean"]), "corrupted_value": float(value["corrupted"]),
            "clean_minus_corrupted": float(value["clean"].double() - value["corrupted"].double()),
            "denoise": kinds_meta,
            "ig": {"f": float(f_e), "f_baseline": float(f_b), "f_minus_f_baseline": float(f_e.double() - f_b.double()),
                   "sum_attr": float(attr.double().sum()), "delta": float(delta),
                   "rel_delta": abs(float(delta)) / max(abs(float(f_e.double() - f_b.double())), 1e-30),
                   "sum_abs_attr": float(attr.double().abs().sum()),
                   "signed_by_token": [[t, round(float(v), 6)] for t, v in zip(toks, ig_signed)]},
            "gxi": {"sum": float(gxi.double().sum()),
                    "signed_by_token": [[t, round(float(v), 6)] for t, v in zip(toks, gxi_signed)]},
        })
        print(f"  pair{i} {row['id']}: L={L} clean {float(value['clean']):+.6f} corrupted "
              f"{float(value['corrupted']):+.6f} | "
              + " | ".join(f"{k} r={kinds_meta[k]['pearson_attrib_vs_exact_effect']:+.3f}" for k in SITE_KINDS)
              + f" | IG delta {float(delta):+.2e} | {time.monotonic() - tp:.0f} s")

    correlations = {
        "definition": "Pearson correlation between denoise.attrib.<kind> and (denoise.<kind> - corrupted_value), "
                      "all sites of the kind, both pairs pooled ('pooled') and per pair",
        "pooled": {k: pearson(*corr_data[k]) for k in SITE_KINDS},
        "per_pair": {f"pair{pm['pair']}": {k: pm["denoise"][k]["pearson_attrib_vs_exact_effect"] for k in SITE_KINDS}
                     for pm in pairs_meta},
    }
    pooled_txt = json.dumps({k: round(v, 4) for k, v in correlations["pooled"].items()})
    notes = [
        "The real default model (the Q4_1 GGUF dequantized to float32 by transformers): unlike the tiny goldens' "
        "random weights, the metric means something: the clean prompts name the indirect object, the corrupted "
        "ones (ABC: three other names) do not.",
        "Sizes: " + "; ".join(
            f"pair{pm['pair']} ({pm['row']}) L = {pm['L']}, names at positions {pm['differing_positions']}, "
            f"clean m = {pm['clean_value']:+.4f}, corrupted m = {pm['corrupted_value']:+.4f}"
            for pm in pairs_meta) + ".",
        f"Pearson correlation of the attribution estimates with the exact effects (patched - corrupted), both "
        f"pairs pooled, per site kind: {pooled_txt}; per pair under 'correlations'.",
        "Sites before the first differing position (position 0, 'When') have identical activations in both runs "
        "(causal attention): their estimates are exactly 0 (checked), their exact effects 0 up to the rounding of "
        "the batched forwards (max |effect| "
        f"{checks['before_first_difference_max_abs_effect']:.1e}: a batch of 64 rows does not round like the "
        "batch-of-1 corrupted run; alone, such a patch is bit-identical); they are included in the correlations.",
        "Signs: denoise moves m from corrupted_value towards clean_value. " + "; ".join(
            f"pair{pm['pair']}: clean - corrupted = {pm['clean_minus_corrupted']:+.4f}" for pm in pairs_meta)
        + ". In ioi-000 the corrupted prompt (no Kate, no Simon) already prefers ' Kate' to ' Simon' more than the "
        "clean one does, so the total effect is negative and small, while single sites move m by up to "
        f"{max(abs(x['effect']) for x in pairs_meta[0]['denoise']['resid_pre']['largest_effects']):.1f} (e.g. "
        "the clean ' Simon' alone at position 3, where the corrupted prompt's other two names stay, makes ' Simon' "
        "look like the indirect object): the name positions' effects are far from additive. IG's completeness "
        "delta there is relative to a small f(e) - f(B).",
        "Largest exact effects (site: effect / estimate): " + "; ".join(
            f"pair{pm['pair']} {k}[{','.join(map(str, pm['denoise'][k]['largest_effects'][0]['site']))}]: "
            f"{pm['denoise'][k]['largest_effects'][0]['effect']:+.3f} / {pm['denoise'][k]['largest_effects'][0]['attrib']:+.3f}"
            for pm in pairs_meta for k in SITE_KINDS) + "; the first five per kind and pair under pairs[i].denoise.",
        f"resid_pre of layer 0 patched at ALL positions reproduces the clean metric (max |difference| "
        f"{checks['resid_pre_l0_all_positions_max_abs']:.1e}). Batched patched forwards vs the same patch alone: max "
        f"|difference| {checks['batched_vs_alone_max_abs']:.1e} on {checks['n_alone_checked']} sites; own-value "
        "patches alone are bit-identical to the unpatched corrupted run.",
        f"IG (50-node Gauss-Legendre, corrupted baseline): all 50 points in one batch (stored) vs {IG_CHECK_CHUNK} "
        f"at a time: max |difference| {checks['ig_vs_other_batching_max_abs']:.1e}. Completeness deltas: "
        + "; ".join(f"pair{pm['pair']} {pm['ig']['delta']:+.3e} (f(e) - f(B) = {pm['ig']['f_minus_f_baseline']:+.4f})"
                    for pm in pairs_meta) + ".",
        "Not checked here (unlike the tiny goldens): the estimates against float64 central differences, and "
        "own-value patches batched; the hooks and the attribution arithmetic are make_patching_goldens.py's, "
        "checked there.",
    ]
    meta = {
        "model": "SmolLM2-135M-Instruct.Q4_1.gguf (transformers GGUF load, dequantized to float32)",
        "gguf_file": gguf.name,
        "gguf_sha256": gguf_sha,
        "generator": GENERATOR,
        "dataset": "datasets/ioi-pairs.jsonl",
        "dataset_sha256": sha256(DATASET),
        "rows": ROWS,
        "texts": [{k: r[k] for k in ("id", "clean", "corrupted", "answer", "foil")} for r in rows],
        "pairs": pairs_meta,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "head_dim": hd,
        "hidden_size": D,
        "L": [pm["L"] for pm in pairs_meta],
        "site_kinds": SITE_KINDS,
        "direction": "denoise (base run = corrupted, source run = clean)",
        "key_pattern": "pair{i}.{clean,corrupted} i64 [L]; pair{i}.{answer,foil} i64 [1]; "
                       "pair{i}.{clean_value,corrupted_value} f32 [1]; pair{i}.denoise.{resid_pre,mlp_out} f32 "
                       "[30,L]; pair{i}.denoise.attn_head f32 [30,9]; pair{i}.denoise.attrib.<kind> the same shapes; "
                       "pair{i}.ig.{norm,signed} f32 [L]; pair{i}.ig.{f,f_baseline,delta} f32 [1]; "
                       "pair{i}.gxi.{norm,signed} f32 [L]",
        "definitions": DEFINITIONS,
        "ig_parameters_float64": {"alphas": alphas, "weights": weights},
        "correlations": correlations,
        "checks": {
            "measured": checks,
            "tokenizer_checked_against": f"tests/data/golden/smollm2.json ({len(tokenizer_checked)} prompts)",
            "performed": [
                "the tokenizer gives tests/data/golden/smollm2.json's ids; both rows pass make_paired_dataset.py's "
                "row checks (same length, differ at the three names only, single-token answer and foil)",
                "the model's shape is SmolLM2-135M's (30 layers, d 576, 9 heads, 3 kv heads, 1536, vocab 49152)",
                "the hooked forward (no patches, logits_to_keep=1) == a plain forward (1e-5)",
                "clean_value and corrupted_value == datasets/ioi-pairs.json's per-row values (4 decimals; 1e-3)",
                "resid_pre of layer 0 patched at all positions reproduces the clean metric (1e-5)",
                "on 4 sites per kind and pair (first, last, two between): batched (64 a forward) == alone (1e-5 "
                "scaled by max(1, |m|)); the site patched alone with its own (corrupted) value: bit-identical",
                "d m / d resid_pre[0] at the corrupted run (hooked) == d f / d inputs_embeds at B (1e-5)",
                "f(e), f(B) via inputs_embeds == the ids forwards' clean_value, corrupted_value (1e-5)",
                f"IG with all 50 points in one batch == IG {IG_CHECK_CHUNK} points at a time (1e-5 scaled by "
                "max(1, max |attr|))",
            ],
        },
        "cost": {"patched_forward_rows": n_forward_rows, "rows_per_forward": CHUNK},
        "notes": notes,
        "dtype": "float32",
        "attn_implementation": "eager",
        "versions": versions(),
    }
    path = write_golden(STEM, tensors, meta, GENERATOR)
    size = path.stat().st_size
    assert size < MAX_FILE_BYTES, (path, size)
    print(f"  wrote {path.relative_to(ROOT)} ({size} bytes) and {STEM}.json")
    print(f"  correlations (pooled): {pooled_txt}")
    print(f"  checks: {json.dumps(checks)}")
    print(f"done in {time.monotonic() - t0:.0f} s (model load {t_load:.0f} s); versions: {json.dumps(versions())}")


if __name__ == "__main__":
    main()
