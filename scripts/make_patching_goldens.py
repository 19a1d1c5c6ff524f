#!/usr/bin/env python3
"""Make golden reference files for tokenlens' activation patching: exact patching (one patched
forward per site) and attribution patching (the first-order estimate), computed with
transformers forward hooks and torch.autograd.

What it writes (under tests/data/golden/, relative to the repo root), for MODELS =
tiny-gpt2 and tiny-llama (the tiny checkpoints made by scripts/make_goldens.py):

  patching-<model>.safetensors
      For pair i in PAIRS (the pairs of make_contrast_goldens.py), dir in DIRECTIONS
      (denoise, noise), with L = the pair's token length, n = n_layers, H = n_heads:
        pair{i}.clean / .corrupted         i64 [L]       prompt ids (same length)
        pair{i}.answer / .foil             i64 [1]       answer id a / foil id b
        pair{i}.clean_value                f32 [1]       m(clean run)
        pair{i}.corrupted_value            f32 [1]       m(corrupted run)
        pair{i}.{dir}.resid_pre            f32 [n, L]    m of the run patched at that one site
        pair{i}.{dir}.mlp_out              f32 [n, L]
        pair{i}.{dir}.attn_head            f32 [n, H]
        pair{i}.{dir}.attn_head_pos        f32 [n, H, L]
        pair{i}.{dir}.attrib.<site kind>   same shapes   first-order estimates of (patched - base)
  patching-<model>.json
      Texts, ids, tokens, answer/foil ids, n_layers, n_heads, head_dim, L per pair, the exact
      definitions (DEFINITIONS), the checks performed with their measured errors, the Pearson
      correlations of attribution vs exact effect per site kind and direction, notes, versions.

Definitions (also written into the JSON): see DEFINITIONS below. In short, m(run) =
logits[0, -1, a] - logits[0, -1, b]; the sites are a block's input (resid_pre), its MLP's output
(mlp_out) and one head's slice of the input of the attention output projection (attn_head: all
positions; attn_head_pos: one position). `denoise` runs the corrupted prompt with one site taken
from the clean run, `noise` the clean prompt with one site from the corrupted run. Attribution
patching: sum over the site of (source act - base act) * dm/d(act) at the base run.

The exact values come from one batched forward per pair, direction and site kind (one batch row
per site; torch.where puts the source value into that row's site only). The script fails loudly
(AssertionError) if: a pair's ids differ in length, contain id 0, or a == b; the hooked forward
differs from a plain one; a batched patched value differs from the same patch run alone (batch
of 1) by more than 1e-6 (checked on a few sites of every kind, direction and pair); patching
resid_pre of layer 0 at all positions at once does not reproduce the source run's metric (1e-5);
patching any site with its own run's value changes the metric (alone: bit-exact; batched: 1e-6);
the gradient at resid_pre of layer 0 differs from d m / d inputs_embeds; the sum over positions
of the attn_head_pos estimates differs from the attn_head estimate (the estimate is linear in the
difference); or an estimate differs from the directional derivative
d/dt m(base with site = base + t (source - base)) at t = 0, a central difference on a float64
copy of the model (checked on a few sites of every kind, direction and pair; transformers runs
llama's RMSNorm, eager softmax and RoPE in float32 even in a float64 model, so these runs go
through the Float64 TorchFunctionMode, which turns every float32 request into float64).

How to run (a developer does this by hand; CI never runs it), from the repo root:

    $REFENV_PY scripts/make_patching_goldens.py

$REFENV_PY is the reference venv's python (default ~/.cache/tokenlens/refenv/bin/python; see
scripts/lib.sh and scripts/README.md); needs torch, transformers, tokenizers, safetensors, numpy
(no captum). CPU, one thread, float32, eager attention, eval mode: a rerun with the same library
versions gives byte-identical files. Takes ~10 s (9-11 s measured on 2 cores).
"""

import copy
import json

import numpy as np
import torch

import safetensors
import tokenizers
import transformers
from tokenizers import Tokenizer
from torch.overrides import TorchFunctionMode

from golden_util import DATA, ROOT, assert_close, deterministic_setup, load_tiny, write_golden
from golden_util import versions as lib_versions

GENERATOR = "scripts/make_patching_goldens.py"
MODELS = ["tiny-gpt2", "tiny-llama"]
# The same pairs as make_contrast_goldens.PAIRS (copied, not imported: that script imports
# captum). Both tiny checkpoints share one 512-token byte-level BPE without names; see that
# script for why these texts.
PAIRS = [
    {"clean": "The cat and the dog sat, and the dog gave a fish to the",
     "corrupted": "The cat and the dog sat, and the man gave a fish to the",
     "answer": " cat", "foil": " dog"},
    {"clean": "The capital of France is",
     "corrupted": "The capital of Japan is",
     "answer": " Paris", "foil": " Tokyo"},
]
SITE_KINDS = ["resid_pre", "mlp_out", "attn_head", "attn_head_pos"]
# direction -> (base run, source run)
DIRECTIONS = {"denoise": ("corrupted", "clean"), "noise": ("clean", "corrupted")}
TOL_BATCH = 1e-6      # batched vs alone, own-value patches (scaled by max(1, |m|))
TOL_ALL_POS = 1e-5    # resid_pre layer 0, all positions == the source run
TOL_GRAD = 1e-5       # hooked gradient vs inputs_embeds gradient; attn_head vs sum of attn_head_pos
FD_STEP = 1e-4        # central-difference step (float64 model)
MAX_FILE_BYTES = 300 * 1024

DEFINITIONS = {
    "ids": "tokenizers.Tokenizer.from_file(<checkpoint>/tokenizer.json).encode(text).ids, no BOS; "
           "clean and corrupted ids of a pair have the same length L and contain no id 0",
    "answer / foil": "a = encode(answer_text).ids[0], b = encode(foil_text).ids[0] (the first token), a != b",
    "metric": "m(run) = logits[0, -1, a] - logits[0, -1, b]: the logit difference after the whole prompt "
              "(model(ids).logits, float32); clean_value = m(clean run), corrupted_value = m(corrupted run)",
    "modules": {
        "gpt2": "block l = model.transformer.h[l]; mlp = block.mlp; attention output projection = "
                "block.attn.c_proj (a Conv1D)",
        "llama": "block l = model.model.layers[l]; mlp = block.mlp; attention output projection = "
                 "block.self_attn.o_proj",
    },
    "sites": {
        "resid_pre[l, p]": "the block's input hidden state at position p, [d] (forward_pre_hook on block l; the "
                           "hidden states are its first positional argument or the kwarg hidden_states). Layer 0: "
                           "token embeddings (gpt2: plus position embeddings)",
        "mlp_out[l, p]": "the output of block l's MLP module at position p, [d] (forward hook on .mlp): what the MLP "
                         "adds to the residual stream",
        "attn_head[l, h]": "head h's attention output z at ALL positions: input[:, :, h*hd:(h+1)*hd] of block l's "
                           "attention output projection (forward_pre_hook on o_proj / c_proj), [L, hd]; z is "
                           "sum_k softmax(...)_qk v_k before the output projection (llama: per query head, GQA "
                           "shares v between heads)",
        "attn_head_pos[l, h, p]": "the same slice at position p only, [hd]",
    },
    "directions": {
        "denoise": "base run = the CORRUPTED prompt, source run = the CLEAN prompt",
        "noise": "base run = the CLEAN prompt, source run = the CORRUPTED prompt",
    },
    "exact": "pair{i}.{dir}.<kind>[l, ...] = m of the base prompt's forward with that one site replaced by its "
             "value in the source run (captured by the same hooks in an unpatched forward of the source "
             "prompt); every other site keeps its value as computed in the patched forward (so everything after "
             "the site sees the patch). Raw metric values, not differences; base_value = clean_value for noise, "
             "corrupted_value for denoise",
    "attrib": "pair{i}.{dir}.attrib.<kind>[l, ...] = sum over the site's elements of (source_act - base_act) * "
              "dm/d(act) evaluated at the unpatched base run (torch.autograd.grad of m w.r.t. the hooked "
              "tensors): the first-order estimate of exact - base_value (Nanda's attribution patching). "
              "Sums: resid_pre[l,p] and mlp_out[l,p] over d; attn_head[l,h] over positions and hd; "
              "attn_head_pos[l,h,p] over hd. Products and sums in float64 from the float32 activations and "
              "gradients, stored as float32",
    "shapes": "resid_pre, mlp_out: [n_layers, L]; attn_head: [n_layers, n_heads]; attn_head_pos: "
              "[n_layers, n_heads, L]",
    "computation": "exact values: one batched forward per pair, direction and site kind, one batch row per site, "
                   "the source value put in with torch.where (a selection, no arithmetic); checked against "
                   "batch-of-1 patched forwards on a few sites",
    "dtype": "float32, eager attention, eval mode, CPU, torch.set_num_threads(1), use_cache=False",
}


class Float64(TorchFunctionMode):
    """Inside it, every float32 request (dtype=torch.float32 arguments, .to(torch.float32),
    .float()) asks for float64 instead: transformers computes llama's RMSNorm, its eager softmax
    and the RoPE angles in float32 whatever the model's dtype, so a .double() copy alone is not
    float64 throughout."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.float:
            func = torch.Tensor.double
        args = tuple(torch.float64 if x is torch.float32 else x for x in args)
        kwargs = {k: (torch.float64 if v is torch.float32 else v) for k, v in (kwargs or {}).items()}
        return func(*args, **kwargs)


def versions():
    return lib_versions([torch, transformers, tokenizers, safetensors, np])


class Hooked:
    """A model with hooks at every site point: ('resid', l) block input, ('mlp', l) MLP output,
    ('z', l) input of the attention output projection. `run` patches and captures them."""

    def __init__(self, model):
        self.model = model
        cfg = model.config
        if cfg.model_type == "gpt2":
            blocks = list(model.transformer.h)
            self.oproj = [blk.attn.c_proj for blk in blocks]
        elif cfg.model_type == "llama":
            blocks = list(model.model.layers)
            self.oproj = [blk.self_attn.o_proj for blk in blocks]
        else:
            raise ValueError(cfg.model_type)
        self.blocks, self.mlps = blocks, [blk.mlp for blk in blocks]
        self.n_layers = len(blocks)
        self.n_heads = cfg.num_attention_heads
        self.d = cfg.hidden_size
        self.head_dim = getattr(cfg, "head_dim", None) or self.d // self.n_heads
        self.patches, self.captured, self.capture = {}, {}, False
        for l in range(self.n_layers):
            self.blocks[l].register_forward_pre_hook(self._pre_hook(("resid", l)), with_kwargs=True)
            self.mlps[l].register_forward_hook(self._post_hook(("mlp", l)))
            self.oproj[l].register_forward_pre_hook(self._pre_hook(("z", l)), with_kwargs=True)

    def _apply(self, key, x):
        if key in self.patches:
            mask, src = self.patches[key]
            assert mask.shape == x.shape and src.shape[1:] == x.shape[1:], (key, mask.shape, src.shape, x.shape)
            x = torch.where(mask, src.to(x.dtype).expand_as(x), x)
        if self.capture:
            assert key not in self.captured, key
            self.captured[key] = x
        return x

    def _pre_hook(self, key):
        def hook(module, args, kwargs):
            if args:
                return (self._apply(key, args[0]),) + tuple(args[1:]), kwargs
            name = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
            assert torch.is_tensor(kwargs[name]), (key, name)
            return args, {**kwargs, name: self._apply(key, kwargs[name])}
        return hook

    def _post_hook(self, key):
        def hook(module, args, output):
            assert torch.is_tensor(output), (key, type(output))
            return self._apply(key, output)
        return hook

    def run(self, ids, a, b, patches=None, capture=False):
        """m per batch row (shape [B]) of `ids` [B, L]; patches {key: (mask [B,L,D] bool, src [1,L,D])};
        with capture, also {key: tensor} of every site point (after patching)."""
        self.patches, self.captured, self.capture = patches or {}, {}, capture
        try:
            logits = self.model(ids, use_cache=False).logits
        finally:
            self.patches, self.capture = {}, False
        captured, self.captured = self.captured, {}
        m = logits[:, -1, a] - logits[:, -1, b]
        return (m, captured) if capture else m


def site_list(kind, n_layers, n_heads, L):
    """The sites of a kind in row-major order of its golden tensor: index tuples."""
    if kind in ("resid_pre", "mlp_out"):
        return [(l, p) for l in range(n_layers) for p in range(L)]
    if kind == "attn_head":
        return [(l, h) for l in range(n_layers) for h in range(n_heads)]
    if kind == "attn_head_pos":
        return [(l, h, p) for l in range(n_layers) for h in range(n_heads) for p in range(L)]
    raise ValueError(kind)


def site_shape(kind, n_layers, n_heads, L):
    return {"resid_pre": (n_layers, L), "mlp_out": (n_layers, L), "attn_head": (n_layers, n_heads),
            "attn_head_pos": (n_layers, n_heads, L)}[kind]


def site_key_and_index(kind, site, hd):
    """(hook key, index into a [B, L, D] tensor's last two dims) of one site."""
    if kind == "resid_pre":
        l, p = site
        return ("resid", l), (p, slice(None))
    if kind == "mlp_out":
        l, p = site
        return ("mlp", l), (p, slice(None))
    if kind == "attn_head":
        l, h = site
        return ("z", l), (slice(None), slice(h * hd, (h + 1) * hd))
    l, h, p = site
    return ("z", l), (p, slice(h * hd, (h + 1) * hd))


def batched_patches(kind, sites, src_acts, L, D, hd):
    """Patches for a batch with one row per site: row k has site k from src_acts."""
    patches = {}
    for k, site in enumerate(sites):
        key, (pi, di) = site_key_and_index(kind, site, hd)
        if key not in patches:
            patches[key] = (torch.zeros(len(sites), L, D, dtype=torch.bool), src_acts[key].detach())
        patches[key][0][k, pi, di] = True
    return patches


def single_patch(kind, site, src, L, D, hd):
    """A batch-of-1 patch of one site, taking the value from src (a [1, L, D] tensor)."""
    key, (pi, di) = site_key_and_index(kind, site, hd)
    mask = torch.zeros(1, L, D, dtype=torch.bool)
    mask[0, pi, di] = True
    return {key: (mask, src.detach())}


def attribution(kind, sites, diff, grad, hd):
    """sum over each site's elements of diff * grad (float64), one value per site."""
    out = []
    for site in sites:
        key, (pi, di) = site_key_and_index(kind, site, hd)
        out.append((diff[key][0, pi, di].double() * grad[key][0, pi, di].double()).sum().item())
    return out


def check_sites(kind, sites):
    """A few sites of a kind for the checks done one at a time: first, last, and two in between."""
    n = len(sites)
    return [sites[k] for k in sorted({0, n // 3, (2 * n) // 3, n - 1})]


def pearson(x, y):
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def patching_golden(name):
    model_dir = DATA / name
    model = load_tiny(model_dir)
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    model64 = copy.deepcopy(model).double()  # before any hooks are registered on `model`
    hk, hk64 = Hooked(model), Hooked(model64)
    n_layers, n_heads, hd, D = hk.n_layers, hk.n_heads, hk.head_dim, hk.d
    assert n_heads * hd == hk.oproj[0].weight.shape[0 if model.config.model_type == "gpt2" else 1], \
        "o_proj / c_proj input width != n_heads * head_dim"
    assert n_heads * hd == D, "tiny checkpoints: the output projection's input has width d"
    vocab = model.config.vocab_size

    tensors, pairs_meta = {}, []
    checks = {"batched_vs_alone_max_abs": 0.0, "own_value_batched_max_abs": 0.0, "own_value_alone_max_abs": 0.0,
              "resid_pre_l0_all_positions_max_abs": 0.0, "hooked_vs_plain_max_abs": 0.0,
              "grad_resid_pre_l0_vs_inputs_embeds_max_abs": 0.0, "attn_head_vs_sum_attn_head_pos_max_abs": 0.0,
              "attrib_vs_fd64_max_abs": 0.0, "float64_copy_vs_float32_max_abs": 0.0, "attrib_vs_fd64_max_rel": 0.0,
              "n_alone_checked": 0, "n_fd_checked": 0}
    corr_data = {(k, d): ([], []) for k in SITE_KINDS for d in DIRECTIONS}
    corr_per_pair = {}
    for i, pair in enumerate(PAIRS):
        enc_c, enc_x = tok.encode(pair["clean"]), tok.encode(pair["corrupted"])
        clean, corrupted = enc_c.ids, enc_x.ids
        a, b = tok.encode(pair["answer"]).ids[0], tok.encode(pair["foil"]).ids[0]
        assert len(clean) == len(corrupted), (pair, len(clean), len(corrupted))
        assert 0 not in clean and 0 not in corrupted, (pair, clean, corrupted)
        assert clean != corrupted, pair
        assert a != b and 0 <= a < vocab and 0 <= b < vocab, (pair, a, b)
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
            plain = z[:, a] - z[:, b]
            checks["hooked_vs_plain_max_abs"] = max(
                checks["hooked_vs_plain_max_abs"],
                assert_close(value[run], plain, f"{name} pair{i} {run}: hooked vs plain forward", 0.0))
            # d m / d resid_pre[0] == d m / d inputs_embeds (gpt2 adds position embeddings: same gradient).
            e = model.get_input_embeddings()(ids[run]).detach().requires_grad_(True)
            z = model(inputs_embeds=e, use_cache=False).logits[:, -1, :]
            (ge,) = torch.autograd.grad((z[:, a] - z[:, b]).sum(), e)
            checks["grad_resid_pre_l0_vs_inputs_embeds_max_abs"] = max(
                checks["grad_resid_pre_l0_vs_inputs_embeds_max_abs"],
                assert_close(grads[run][("resid", 0)], ge, f"{name} pair{i} {run}: grad resid_pre[0]", TOL_GRAD))
            with torch.no_grad(), Float64():
                m64 = hk64.run(ids[run], a, b)
            checks["float64_copy_vs_float32_max_abs"] = max(
                checks["float64_copy_vs_float32_max_abs"],
                assert_close(value[run], m64.float(), f"{name} pair{i} {run}: float64 copy", 1e-5))
        tensors[f"pair{i}.clean_value"] = value["clean"].reshape(1)
        tensors[f"pair{i}.corrupted_value"] = value["corrupted"].reshape(1)
        diff_pos = [p for p in range(L) if clean[p] != corrupted[p]]
        pmeta = {"pair": i, **pair, "clean_ids": clean, "corrupted_ids": corrupted,
                 "clean_tokens": enc_c.tokens, "corrupted_tokens": enc_x.tokens,
                 "answer_id": a, "foil_id": b, "answer_token": tok.id_to_token(a), "foil_token": tok.id_to_token(b),
                 "L": L, "differing_positions": diff_pos,
                 "clean_value": float(value["clean"]), "corrupted_value": float(value["corrupted"]),
                 "directions": {}}

        for dname, (base, source) in DIRECTIONS.items():
            base_value = value[base]
            diff = {k: acts[source][k] - acts[base][k] for k in acts[base]}
            dmeta = {"base_value": float(base_value), "source_value": float(value[source])}

            # resid_pre at layer 0, all positions at once == the source run.
            with torch.no_grad():
                m_all = hk.run(ids[base], a, b, patches={
                    ("resid", 0): (torch.ones(1, L, D, dtype=torch.bool), acts[source][("resid", 0)])})
            err = assert_close(m_all, value[source], f"{name} pair{i} {dname}: resid_pre l0 all positions",
                               TOL_ALL_POS)
            checks["resid_pre_l0_all_positions_max_abs"] = max(checks["resid_pre_l0_all_positions_max_abs"], err)

            for kind in SITE_KINDS:
                sites = site_list(kind, n_layers, n_heads, L)
                shape = site_shape(kind, n_layers, n_heads, L)
                batch = ids[base].expand(len(sites), L).contiguous()
                with torch.no_grad():
                    exact = hk.run(batch, a, b, patches=batched_patches(kind, sites, acts[source], L, D, hd))
                    own = hk.run(batch, a, b, patches=batched_patches(kind, sites, acts[base], L, D, hd))
                checks["own_value_batched_max_abs"] = max(
                    checks["own_value_batched_max_abs"],
                    assert_close(own, base_value.expand_as(own), f"{name} pair{i} {dname} {kind}: own value, batched",
                                 TOL_BATCH))
                est = attribution(kind, sites, diff, grads[base], hd)
                for site in check_sites(kind, sites):
                    row = sites.index(site)
                    key = site_key_and_index(kind, site, hd)[0]
                    with torch.no_grad():
                        alone = hk.run(ids[base], a, b, patches=single_patch(kind, site, acts[source][key], L, D, hd))
                        own1 = hk.run(ids[base], a, b, patches=single_patch(kind, site, acts[base][key], L, D, hd))
                    checks["batched_vs_alone_max_abs"] = max(
                        checks["batched_vs_alone_max_abs"],
                        assert_close(exact[row:row + 1], alone, f"{name} pair{i} {dname} {kind} {site}: batched vs "
                                     "alone", TOL_BATCH))
                    assert torch.equal(own1, base_value), (name, i, dname, kind, site, own1, base_value)
                    checks["own_value_alone_max_abs"] = max(checks["own_value_alone_max_abs"],
                                                            (own1 - base_value).abs().item())
                    checks["n_alone_checked"] += 1
                    # The estimate is the directional derivative d/dt m(site = base + t * diff) at t = 0.
                    a64 = {kk: v.double() for kk, v in acts[base].items()}
                    fd = []
                    for t in (FD_STEP, -FD_STEP):
                        src = a64[key] + t * (acts[source][key].double() - a64[key])
                        with torch.no_grad(), Float64():
                            fd.append(hk64.run(ids[base], a, b, patches=single_patch(kind, site, src, L, D, hd)))
                        assert fd[-1].dtype == torch.float64
                    fdv = ((fd[0] - fd[1]) / (2 * FD_STEP)).item()
                    _, (pi, di) = site_key_and_index(kind, site, hd)
                    scale = (diff[key][0, pi, di].double() * grads[base][key][0, pi, di].double()).abs().sum().item()
                    ferr = abs(est[row] - fdv)
                    assert ferr <= 1e-5 + 1e-4 * scale, \
                        f"{name} pair{i} {dname} {kind} {site}: attrib {est[row]:.6e} vs float64 FD {fdv:.6e}"
                    checks["attrib_vs_fd64_max_abs"] = max(checks["attrib_vs_fd64_max_abs"], ferr)
                    if scale > 0:
                        checks["attrib_vs_fd64_max_rel"] = max(checks["attrib_vs_fd64_max_rel"], ferr / scale)
                    checks["n_fd_checked"] += 1
                exact_t = exact.detach().reshape(shape)
                est_t = torch.tensor(est, dtype=torch.float64).reshape(shape)
                tensors[f"pair{i}.{dname}.{kind}"] = exact_t
                tensors[f"pair{i}.{dname}.attrib.{kind}"] = est_t.float()
                effect = (exact_t.double() - base_value.double()).numpy()
                corr_data[(kind, dname)][0].extend(est_t.numpy().ravel().tolist())
                corr_data[(kind, dname)][1].extend(effect.ravel().tolist())
                r = pearson(est_t.numpy(), effect)
                corr_per_pair[(i, kind, dname)] = r
                top = int(np.argmax(np.abs(effect).ravel()))
                miss = np.abs(est_t.numpy() - effect).ravel()
                worst = int(np.argmax(miss))
                dmeta[kind] = {
                    "pearson_attrib_vs_exact_effect": r,
                    "max_abs_effect": float(np.abs(effect).max()),
                    "argmax_abs_effect": [int(x) for x in np.unravel_index(top, shape)],
                    "attrib_at_argmax": float(est_t.numpy().ravel()[top]),
                    "max_abs_attrib_minus_effect": float(miss[worst]),
                    "worst_estimate_at": [int(x) for x in np.unravel_index(worst, shape)],
                    "worst_estimate": {"attrib": float(est_t.numpy().ravel()[worst]),
                                       "effect": float(effect.ravel()[worst])},
                    "n_exactly_unchanged": int((exact_t == base_value).sum()),
                    "n_attrib_exactly_zero": int((est_t == 0).sum()),
                }
            # Linearity: attn_head == sum over positions of attn_head_pos.
            s = tensors[f"pair{i}.{dname}.attrib.attn_head_pos"].double().sum(-1)
            checks["attn_head_vs_sum_attn_head_pos_max_abs"] = max(
                checks["attn_head_vs_sum_attn_head_pos_max_abs"],
                assert_close(s, tensors[f"pair{i}.{dname}.attrib.attn_head"].double(),
                             f"{name} pair{i} {dname}: attn_head vs sum of attn_head_pos", TOL_GRAD))
            pmeta["directions"][dname] = dmeta
            print(f"  {name} pair{i} {dname}: base {float(base_value):+.6f} source {float(value[source]):+.6f} | "
                  + " | ".join(f"{k} r={dmeta[k]['pearson_attrib_vs_exact_effect']:+.3f}" for k in SITE_KINDS))
        pairs_meta.append(pmeta)

    correlations = {
        "definition": "Pearson correlation between attrib.<kind> and (<kind> - base_value), all sites of the kind, "
                      "both pairs pooled ('pooled') and per pair; null when one side is constant",
        "pooled": {k: {d: pearson(*corr_data[(k, d)]) for d in DIRECTIONS} for k in SITE_KINDS},
        "per_pair": {f"pair{i}": {k: {d: corr_per_pair[(i, k, d)] for d in DIRECTIONS} for k in SITE_KINDS}
                     for i in range(len(PAIRS))},
    }
    pooled_txt = json.dumps({k: {d: None if v is None else round(v, 4) for d, v in t.items()}
                             for k, t in correlations["pooled"].items()})
    weak = [f"pair{i} {k} {d}: r = {r:+.3f}" for (i, k, d), r in corr_per_pair.items() if r is not None and r < 0.5]
    worst_txt = "; ".join(
        f"pair{pm['pair']} {d} {k}{tuple(dm[k]['worst_estimate_at'])}: estimate "
        f"{dm[k]['worst_estimate']['attrib']:+.3f} vs exact effect {dm[k]['worst_estimate']['effect']:+.3f}"
        for pm in pairs_meta for d, dm in pm["directions"].items() for k in ("resid_pre",)
    )
    notes = [
        "With random weights the metric carries no meaning; the goldens only pin the arithmetic of patching.",
        f"Pearson correlation of attribution estimates vs exact effects (patched - base), both pairs pooled, per "
        f"site kind and direction: {pooled_txt}; per pair under 'correlations'.",
        "Sites before the first position where clean and corrupted ids differ have identical activations in both "
        "runs (causal attention), so their exact effects are exactly 0 (patched == base bit for bit) and their "
        "estimates exactly 0; they are included in the correlations. attn_head (all positions) is the sum of "
        "attn_head_pos over positions for the estimates (checked), but not for the exact values (no assertion; "
        "the effects interact through later layers and the softmax).",
        "Per pair, site kinds and directions whose estimates correlate weakly (r < 0.5) or negatively with the "
        f"exact effects: {'; '.join(weak) if weak else 'none'}. The first-order estimate is a poor guide wherever "
        "the clean and corrupted activations are far apart (the metric is not linear in them: norms, softmax, "
        "MLP nonlinearity); a resid_pre site carries the whole clean-vs-corrupted difference at its position (at "
        "layer 0: another token's embedding), and even its sign can come out wrong. Worst resid_pre estimate "
        f"per pair and direction (the largest |estimate - exact effect|): {worst_txt}.",
        "resid_pre of layer 0 patched at ALL positions reproduces the source run's metric exactly "
        f"(max |difference| {checks['resid_pre_l0_all_positions_max_abs']:.1e}); at one position it is the usual "
        "single-site patch.",
        f"Batched patched forwards vs the same patch alone: max |difference| {checks['batched_vs_alone_max_abs']:.1e} "
        f"on {checks['n_alone_checked']} checked sites; own-value patches: alone bit-identical to the unpatched "
        f"run, batched within {checks['own_value_batched_max_abs']:.1e}.",
    ]
    if model.config.model_type == "llama":
        notes.append("transformers computes llama's RMSNorm and eager softmax in float32 (and the RoPE angles) even "
                     "when the model is float64: a .double() copy alone gave central differences accurate to ~1e-3 "
                     "only. The float64 check runs under a TorchFunctionMode that turns those float32 requests into "
                     f"float64 (then estimate vs central difference: max relative error "
                     f"{checks['attrib_vs_fd64_max_rel']:.1e}).")
        notes.append(f"tiny-llama uses grouped-query attention ({model.config.num_key_value_heads} key/value heads "
                     f"for {n_heads} query heads); attn_head is per query head: the o_proj input slice "
                     "h*hd:(h+1)*hd.")

    meta = {
        "model": name,
        "checkpoint": f"tests/data/{name}",
        "generator": GENERATOR,
        "texts": PAIRS,
        "pairs": pairs_meta,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "head_dim": hd,
        "hidden_size": D,
        "vocab_size": vocab,
        "L": [p["L"] for p in pairs_meta],
        "site_kinds": SITE_KINDS,
        "directions": list(DIRECTIONS),
        "key_pattern": "pair{i}.{clean,corrupted} i64 [L]; pair{i}.{answer,foil} i64 [1]; "
                       "pair{i}.{clean_value,corrupted_value} f32 [1]; pair{i}.{dir}.{resid_pre,mlp_out} f32 "
                       "[n_layers,L]; pair{i}.{dir}.attn_head f32 [n_layers,n_heads]; pair{i}.{dir}.attn_head_pos "
                       "f32 [n_layers,n_heads,L]; pair{i}.{dir}.attrib.<kind> the same shapes; dir in "
                       "{denoise,noise}",
        "definitions": DEFINITIONS,
        "correlations": correlations,
        "checks": {
            "measured": checks,
            "performed": [
                "clean and corrupted ids have equal length, no id 0; answer != foil",
                "the hooked forward (no patches) == a plain forward, exactly",
                "d m / d resid_pre[0] (hooked) == d m / d inputs_embeds (tolerance 1e-5)",
                "resid_pre of layer 0 patched at all positions reproduces the source run's metric (1e-5)",
                "every site patched with its own run's value (batched): metric unchanged (1e-6); on the checked sites "
                "alone: bit-identical",
                "on 4 sites per kind, direction and pair (first, last, two between): batched == alone (1e-6), and "
                "the estimate == the central difference (step 1e-4) of m along (source - base) at that site on a "
                "float64 copy of the model, run under a TorchFunctionMode that turns float32 requests into float64 "
                "(llama's RMSNorm, eager softmax and RoPE ask for float32) (1e-5 + 1e-4 * sum |diff * grad|)",
                "the float64 copy's unpatched metric == the float32 one (1e-5)",
                "attrib.attn_head == sum over positions of attrib.attn_head_pos (1e-5)",
            ],
        },
        "notes": notes,
        "dtype": "float32",
        "attn_implementation": "eager",
        "versions": versions(),
    }
    path = write_golden(f"patching-{name}", tensors, meta, GENERATOR)
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
