#!/usr/bin/env python3
"""Make golden reference files for tokenlens' interventions during generation: neuron ablation,
head ablation and residual steering applied while generating greedily, computed with
transformers forward hooks on a full recompute of the sequence at every step (no KV cache: an
independent check of tokenlens' cached path).

What it writes (under tests/data/golden/, relative to the repo root), for MODELS = tiny-gpt2,
tiny-llama, tiny-pythia (GPT-NeoX, parallel residual) and tiny-gemma2 (norms after attention and
MLP; the tiny checkpoints made by scripts/make_goldens.py):

  interventions-<model>.safetensors
      For prompt i in PROMPTS (L_i = 5, 7, 4 tokens) and k in plain + INTERVENTIONS' names
      (neurons_zero, neurons_value, neurons_mean, heads_zero, heads_mean, steer_vector,
      steer_diff_last, steer_diff_mean, combined), N_NEW = 6, V = vocab size, d = hidden size,
      hd = head_dim:
        prompt{i}.ids                   i64 [L_i]    the prompt's ids
        {k}.prompt{i}.generated         i64 [6]      the greedy tokens with intervention k
        {k}.prompt{i}.logits            f32 [6, V]   step s: the logits at the LAST position of
                                                     the forward of prompt + the first s generated
                                                     tokens (step 0: the prompt alone)
        vectors.steer_vector            f32 [d]      the seeded random vector of steer_vector
        vectors.steer_diff_last         f32 [d]      the mean-difference vector (token last, layer 1)
        vectors.steer_diff_mean         f32 [d]      the mean-difference vector (token mean, layer 0)
        means.neurons_mean              f32 [2]      the means of neurons_mean's two neurons
        means.heads_mean                f32 [hd]     the mean of heads_mean's head slice
  interventions-<model>.json
      Model facts (n_layers, n_heads, head_dim, d, ffn, vocab), the prompt / MEAN / POSITIVE /
      NEGATIVE ids, INTERVENTIONS (every parameter; the keys holding their vectors and means),
      DEFINITIONS, the checks performed with their measured values, the greedy margins (top-1 minus
      top-2 logit per intervention, prompt and step) and the steps where it is under 1e-3, notes,
      versions.

Definitions (also written into the JSON): see DEFINITIONS below. In short: the neuron site is the
input of the MLP's output projection (down_proj / mlp.c_proj / dense_4h_to_h), the head site head
h's slice of the input of the attention output projection (o_proj / attn.c_proj /
attention.dense), the steer site block l's input (resid_pre). Ablations set the chosen neurons or
head columns to 0, a number, or the site's mean over every position of the MEAN prompts; steering
adds alpha * v. Positions: `all`, `prompt` (< prompt length) or `generated` (>= prompt length) of
the current full sequence. Greedy: argmax (ties to the lowest id), no EOS stop.

The script fails loudly (AssertionError) if: a prompt holds id 0 or an id >= 512; the hooked
forward with no edits differs from a plain forward (bit-exact); the recompute-every-step plain
generation differs from model.generate(do_sample=False) (KV cache); an intervention leaves the
step logits of every prompt bit-identical to plain (a hook that does nothing); an intervention on
`generated` positions changes step 0's logits at all (bit-exact) or the first generated token; a
mean recomputed with the MEAN prompts in reverse order differs by more than 1e-6; the same
interventions run through a KV cache (prompt forward, then one token a forward, hooks at absolute
positions) differ from the recompute by more than TOL_CACHED (scaled by max(1, max |logit|)), or
give other tokens; a `zero` ablation at all positions (neurons_zero, heads_zero) differs from a
copy of the model with those input columns of the projection's weight zeroed (same tolerance, same
tokens; measured: bit-identical).

How to run (a developer does this by hand; CI never runs it), from the repo root:

    $REFENV_PY scripts/make_intervention_goldens.py

$REFENV_PY is the reference venv's python (default ~/.cache/tokenlens/refenv/bin/python; see
scripts/lib.sh and scripts/README.md); needs torch, transformers, safetensors, numpy. CPU, one
thread, float32, eager attention, eval mode: a rerun with the same library versions gives
byte-identical files. Takes ~10 s on 2 cores (6-10 s, 4 runs, 2026-11-30).
"""

import copy
import json
import os
import time

os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' weight-loading progress bar
import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from golden_util import DATA, ROOT, SEED, deterministic_setup, generate_greedy, load_tiny, write_golden  # noqa: E402
from golden_util import versions as lib_versions  # noqa: E402

GENERATOR = "scripts/make_intervention_goldens.py"
MODELS = ["tiny-gpt2", "tiny-llama", "tiny-pythia", "tiny-gemma2"]
N_NEW = 6
# Fixed id sequences (the tiny checkpoints share one 512-token vocabulary); no id 0 (bos / eos),
# different lengths on purpose.
PROMPTS = [[17, 203, 45, 390, 88], [301, 12, 77, 460, 5, 129, 250], [64, 411, 9, 300]]
MEAN_PROMPTS = PROMPTS
POSITIVE = [[150, 22, 310, 47], [99, 481, 3, 260, 71, 198]]
NEGATIVE = [[402, 36, 115, 270, 58], [222, 11, 333]]
TOL_CACHED = 1e-5      # KV-cached hooked generation vs the recompute (scaled by max(1, max |logit|))
MARGIN_WARN = 1e-3     # greedy margins under this are listed in the JSON
MAX_FILE_BYTES = 1024 * 1024

# Each intervention: a list of edits applied together (INTERVENTIONS' "edits"). Vectors and means
# are computed by the script; the JSON gives the keys holding them.
INTERVENTIONS = [
    {"name": "neurons_zero",
     "edits": [{"site": "neurons", "layer": 1, "neurons": [0, 3, 7], "value": "zero", "positions": "all"}]},
    {"name": "neurons_value",
     "edits": [{"site": "neurons", "layer": 0, "neurons": [2, 5], "value": 3.0, "positions": "generated"}]},
    {"name": "neurons_mean",
     "edits": [{"site": "neurons", "layer": 1, "neurons": [1, 4], "value": "mean", "positions": "prompt",
                "mean_key": "means.neurons_mean"}]},
    {"name": "heads_zero",
     "edits": [{"site": "heads", "layer": 1, "heads": [0], "value": "zero", "positions": "all"}]},
    {"name": "heads_mean",
     "edits": [{"site": "heads", "layer": 0, "heads": [1], "value": "mean", "positions": "all",
                "mean_key": "means.heads_mean"}]},
    {"name": "steer_vector",
     "edits": [{"site": "steer", "layer": 1, "alpha": 2.0, "vector": "random", "seed": SEED,
                "vector_key": "vectors.steer_vector", "positions": "all"}]},
    {"name": "steer_diff_last",
     "edits": [{"site": "steer", "layer": 1, "alpha": 4.0, "vector": "mean_diff", "token": "last",
                "vector_key": "vectors.steer_diff_last", "positions": "generated"}]},
    {"name": "steer_diff_mean",
     "edits": [{"site": "steer", "layer": 0, "alpha": 1.5, "vector": "mean_diff", "token": "mean",
                "vector_key": "vectors.steer_diff_mean", "positions": "all"}]},
    {"name": "combined",
     "edits": [{"site": "neurons", "layer": 1, "neurons": [0, 3, 7], "value": "zero", "positions": "all"},
               {"site": "steer", "layer": 1, "alpha": 2.0, "vector": "random", "seed": SEED,
                "vector_key": "vectors.steer_vector", "positions": "all"}]},
]

DEFINITIONS = {
    "modules": {
        "gpt2": "block l = model.transformer.h[l]; neuron site = input of block.mlp.c_proj (a Conv1D); head site = "
                "input of block.attn.c_proj",
        "llama / gemma2 / smollm2 (llama)": "block l = model.model.layers[l]; neuron site = input of "
                                            "block.mlp.down_proj; head site = input of block.self_attn.o_proj",
        "gpt_neox": "block l = model.gpt_neox.layers[l]; neuron site = input of block.mlp.dense_4h_to_h; head site = "
                    "input of block.attention.dense",
    },
    "sites": {
        "neuron": "block l's MLP hidden activation as it enters the MLP output projection, [T, ffn] (ffn = "
                  "intermediate size; llama / gemma2: act(gate_proj(x)) * up_proj(x); gpt2 / gpt_neox: "
                  "act(c_fc(x)) / act(dense_h_to_4h(x))); edited by a forward_pre_hook on that linear",
        "head": "head h's slice [h*hd, (h+1)*hd) of the input of block l's attention output projection, [T, hd] "
                "(the attention output z of query head h before the projection; the same site as "
                "make_patching_goldens.py's attn_head); edited by a forward_pre_hook on that projection",
        "steer": "block l's input hidden states (resid_pre: the hidden_states argument of decoder layer l; layer 0: "
                 "the embeddings as the model feeds them to block 0, gpt2: token + position embeddings, gemma2: "
                 "times sqrt(d)), [T, d]; edited by a forward_pre_hook on the decoder layer",
    },
    "values": {
        "zero": "the chosen neurons / head columns are set to 0.0 at the chosen positions",
        "<number>": "they are set to that number (as float32)",
        "mean": "they are set to the site's mean: per neuron / per column of the head slice, the mean over EVERY "
                "token position of the MEAN prompts pooled (each prompt run alone, no padding, no edits): sum in "
                "float64 of the float32 activations / the number of positions, rounded to float32 (stored under "
                "means.*), the same value at every edited position",
    },
    "steering": "at the chosen positions the steer site becomes x + (alpha * v), alpha * v computed in float32 "
                "(alpha a Python float, v the float32 vector), then added in float32",
    "mean_diff_vector": "v = mean over POSITIVE prompts of r(prompt) - mean over NEGATIVE prompts of r(prompt), r = "
                        "resid_pre of block l (token 'last': at the prompt's last position; token 'mean': the mean "
                        "over that prompt's positions); each prompt run alone, no edits; means and difference in "
                        "float64 from the float32 activations, rounded to float32 (stored under vectors.*)",
    "random_vector": "steer_vector's v = torch.randn(d, generator=torch.Generator().manual_seed(seed)) (float32), "
                     "stored under vectors.steer_vector",
    "positions": {
        "all": "every position of the current full sequence",
        "prompt": "positions p < L (the prompt's length)",
        "generated": "positions p >= L: the generated tokens as they are fed back; the first generated token is "
                     "never affected, and step 0's logits equal plain's",
    },
    "generation": "greedy: token = argmax of the last position's logits (torch.argmax: ties to the lowest id), "
                  "N_NEW new tokens, no EOS stop; at every step the FULL sequence (prompt + tokens so far) is run "
                  "again without a KV cache (use_cache=False), the hooks editing the chosen absolute positions of "
                  "that sequence; step s's logits (the stored {k}.prompt{i}.logits[s]) are the last position's "
                  "logits of that forward, token s their argmax",
    "combined": "several edits in one intervention are applied together, each by its own hook (neurons of layer 1 "
                "and the steer site of layer 1: the steer edit acts on the block's input, the neuron edit inside "
                "its MLP)",
    "greedy_margin": "per intervention, prompt and step: the largest logit minus the second largest (float64 from "
                     "float32); a margin under 1e-3 means a reimplementation within 1e-4 could pick another token",
    "dtype": "float32, eager attention, eval mode, CPU, torch.set_num_threads(1)",
}


def versions(packages=()):
    return lib_versions([torch, transformers, safetensors, np], packages)


class Editor:
    """A model with forward_pre_hooks on every block (steer site), MLP output projection (neuron
    site) and attention output projection (head site). `edits` (resolved: tensors in place of
    'mean' / vectors) are applied at absolute positions offset + arange(T) of the current forward,
    L being the prompt's length; `capture` collects the sites' inputs before any edit."""

    def __init__(self, model):
        self.model = model
        cfg = model.config
        mt = cfg.model_type
        if mt == "gpt2":
            blocks = list(model.transformer.h)
            self.down = [b.mlp.c_proj for b in blocks]
            self.oproj = [b.attn.c_proj for b in blocks]
            ffn = cfg.n_inner or 4 * cfg.hidden_size
        elif mt in ("llama", "gemma2"):
            blocks = list(model.model.layers)
            self.down = [b.mlp.down_proj for b in blocks]
            self.oproj = [b.self_attn.o_proj for b in blocks]
            ffn = cfg.intermediate_size
        elif mt == "gpt_neox":
            blocks = list(model.gpt_neox.layers)
            self.down = [b.mlp.dense_4h_to_h for b in blocks]
            self.oproj = [b.attention.dense for b in blocks]
            ffn = cfg.intermediate_size
        else:
            raise ValueError(mt)
        self.blocks = blocks
        self.n_layers = len(blocks)
        self.n_heads = cfg.num_attention_heads
        self.d = cfg.hidden_size
        self.head_dim = getattr(cfg, "head_dim", None) or self.d // self.n_heads
        self.ffn = ffn
        self.vocab = cfg.vocab_size
        self.edits, self.L, self.offset, self.captured = [], None, 0, None
        self.n_applied = 0
        for l in range(self.n_layers):
            self.blocks[l].register_forward_pre_hook(self._hook("steer", l), with_kwargs=True)
            self.down[l].register_forward_pre_hook(self._hook("neurons", l), with_kwargs=True)
            self.oproj[l].register_forward_pre_hook(self._hook("heads", l), with_kwargs=True)

    def _positions(self, which, T):
        pos = torch.arange(self.offset, self.offset + T)
        if which == "all":
            return torch.arange(T)
        if which == "prompt":
            return (pos < self.L).nonzero()[:, 0]
        if which == "generated":
            return (pos >= self.L).nonzero()[:, 0]
        raise ValueError(which)

    def _apply(self, site, layer, x):
        if self.captured is not None:
            self.captured[(site, layer)] = x.detach().clone()
        for e in self.edits:
            if e["site"] != site or e["layer"] != layer:
                continue
            assert x.shape[0] == 1, "one sequence a forward"
            rows = self._positions(e["positions"], x.shape[1])
            if rows.numel() == 0:
                continue
            self.n_applied += 1
            x = x.clone()
            if site == "steer":
                x[0, rows] = x[0, rows] + e["add"]
            else:
                cols = e["cols"]
                x[0, rows[:, None], cols[None, :]] = e["set"].expand(rows.numel(), cols.numel())
        return x

    def _hook(self, site, layer):
        def hook(module, args, kwargs):
            if args:
                return (self._apply(site, layer, args[0]),) + tuple(args[1:]), kwargs
            name = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
            assert torch.is_tensor(kwargs[name]), (site, layer, name)
            return args, {**kwargs, name: self._apply(site, layer, kwargs[name])}
        return hook

    def resolve(self, spec_edits, vectors, means):
        """The JSON-style edits of an intervention with their tensors: 'cols' (column indices into the
        site) and 'set' (the values put there, float32 [len(cols)]) for ablations, 'add' (alpha * v,
        float32 [d]) for steering."""
        out = []
        for e in spec_edits:
            r = dict(e)
            if e["site"] == "steer":
                r["add"] = e["alpha"] * vectors[e["vector_key"]]
                assert r["add"].dtype == torch.float32 and r["add"].shape == (self.d,)
            else:
                if e["site"] == "neurons":
                    cols = list(e["neurons"])
                    assert max(cols) < self.ffn
                else:
                    assert max(e["heads"]) < self.n_heads
                    cols = [h * self.head_dim + j for h in e["heads"] for j in range(self.head_dim)]
                r["cols"] = torch.tensor(cols, dtype=torch.int64)
                if e["value"] == "zero":
                    r["set"] = torch.zeros(len(cols))
                elif e["value"] == "mean":
                    r["set"] = means[e["mean_key"]]
                else:
                    r["set"] = torch.full((len(cols),), float(e["value"]))
                assert r["set"].dtype == torch.float32 and r["set"].shape == (len(cols),)
            out.append(r)
        return out

    def forward(self, ids, edits=(), L=None, offset=0, capture=False, **kw):
        """model(ids, **kw) with the edits (L: the prompt's length; offset: the absolute position of
        ids' first token, for cached forwards); returns (output, captured sites or None)."""
        self.edits, self.L, self.offset = list(edits), L, offset
        self.captured = {} if capture else None
        try:
            with torch.no_grad():
                out = self.model(ids, **kw)
        finally:
            captured, self.edits, self.captured = self.captured, [], None
        return out, captured


def generate(ed, prompt, edits, n_new):
    """Greedy generation recomputing the full sequence at every step (DEFINITIONS['generation']):
    (new tokens i64 [n_new], step logits f32 [n_new, V])."""
    cur = torch.tensor([prompt], dtype=torch.int64)
    L = len(prompt)
    steps = []
    for _ in range(n_new):
        out, _ = ed.forward(cur, edits, L=L, use_cache=False)
        z = out.logits[0, -1].detach().clone()
        steps.append(z)
        cur = torch.cat([cur, z.argmax().view(1, 1)], dim=1)
    return cur[0, L:].clone(), torch.stack(steps)


def generate_cached(ed, prompt, edits, n_new):
    """The same greedy generation through a KV cache: the prompt in one forward, then one token a
    forward, the hooks editing absolute positions (offset = tokens already cached)."""
    cur = torch.tensor([prompt], dtype=torch.int64)
    L = len(prompt)
    out, _ = ed.forward(cur, edits, L=L, offset=0, use_cache=True)
    cache, steps, new = out.cache, [], []
    for s in range(n_new):
        z = out.logits[0, -1].detach().clone()
        steps.append(z)
        nxt = z.argmax().view(1, 1)
        new.append(int(nxt))
        if s + 1 < n_new:
            out, _ = ed.forward(nxt, edits, L=L, offset=L + s, cache=cache, use_cache=True)
            cache = out.cache
    return torch.tensor(new, dtype=torch.int64), torch.stack(steps)


def site_means(ed, prompts, site, layer, cols):
    """The site's per-column mean over every position of `prompts` (each run alone, no edits):
    float64 sum / count, rounded to float32; [len(cols)]."""
    total, count = torch.zeros(len(cols), dtype=torch.float64), 0
    for p in prompts:
        _, cap = ed.forward(torch.tensor([p], dtype=torch.int64), capture=True, use_cache=False)
        x = cap[(site, layer)][0][:, cols].double()
        total += x.sum(0)
        count += x.shape[0]
    return (total / count).float()


def mean_diff_vector(ed, positive, negative, layer, token):
    """DEFINITIONS['mean_diff_vector']: float32 [d]."""
    def r(prompts):
        rs = []
        for p in prompts:
            _, cap = ed.forward(torch.tensor([p], dtype=torch.int64), capture=True, use_cache=False)
            x = cap[("steer", layer)][0].double()
            rs.append(x[-1] if token == "last" else x.mean(0))
        return torch.stack(rs).mean(0)
    return (r(positive) - r(negative)).float()


def margins(logits):
    """Top-1 minus top-2 logit per step (float64), a list."""
    top = logits.double().topk(2, dim=-1).values
    return (top[:, 0] - top[:, 1]).tolist()


def run_interventions(ed, prompts, interventions, vectors, means, n_new, checks, label):
    """Runs plain and every intervention on every prompt (recompute) and the checks on them; also
    through the KV cache (generate_cached). Returns ({run name: [(tokens, logits) per prompt]},
    margins {run: [[per step] per prompt]}, low-margin list, per-intervention effect sizes)."""
    runs = {"plain": [generate(ed, p, [], n_new) for p in prompts]}
    for i, p in enumerate(prompts):
        ref = generate_greedy(ed.model, torch.tensor([p], dtype=torch.int64), n_new)
        assert torch.equal(ref, runs["plain"][i][0]), \
            f"{label} prompt{i}: recompute {runs['plain'][i][0].tolist()} != generate {ref.tolist()}"
        checks["plain_recompute_vs_generate_token_mismatches"] += int((ref != runs["plain"][i][0]).sum())
    effects = {}
    for iv in interventions:
        name = iv["name"]
        edits = ed.resolve(iv["edits"], vectors, means)
        ed.n_applied = 0
        runs[name] = [generate(ed, p, edits, n_new) for p in prompts]
        assert ed.n_applied > 0, f"{label} {name}: no hook applied an edit"
        diffs = [(lg - pl).abs().max().item() for (_, lg), (_, pl) in zip(runs[name], runs["plain"])]
        assert max(diffs) > 0, f"{label} {name}: the step logits equal plain's on every prompt (a broken hook?)"
        effects[name] = {
            "max_abs_logit_change_per_prompt": diffs,
            "tokens_differ_from_plain_per_prompt": [int((t != pt).sum()) for (t, _), (pt, _) in
                                                    zip(runs[name], runs["plain"])],
        }
        checks["min_over_interventions_of_max_abs_logit_change"] = min(
            checks["min_over_interventions_of_max_abs_logit_change"], max(diffs))
        if all(e["positions"] == "generated" for e in iv["edits"]):
            for i, ((t, lg), (pt, pl)) in enumerate(zip(runs[name], runs["plain"])):
                assert torch.equal(lg[0], pl[0]), f"{label} {name} prompt{i}: step 0 differs from plain"
                assert t[0] == pt[0], f"{label} {name} prompt{i}: first token differs from plain"
                checks["generated_positions_step0_max_abs_vs_plain"] = max(
                    checks["generated_positions_step0_max_abs_vs_plain"], (lg[0] - pl[0]).abs().max().item())
        # The same edits through a KV cache.
        for i, p in enumerate(prompts):
            t_c, lg_c = generate_cached(ed, p, edits, n_new)
            t, lg = runs[name][i]
            assert torch.equal(t_c, t), f"{label} {name} prompt{i}: cached tokens {t_c.tolist()} != {t.tolist()}"
            err = (lg_c - lg).abs().max().item()
            assert err <= TOL_CACHED * max(1.0, lg.abs().max().item()), f"{label} {name} prompt{i}: cached {err:.2e}"
            checks["kv_cached_vs_recompute_max_abs"] = max(checks["kv_cached_vs_recompute_max_abs"], err)
    for i, p in enumerate(prompts):
        t_c, lg_c = generate_cached(ed, p, [], n_new)
        assert torch.equal(t_c, runs["plain"][i][0])
        checks["kv_cached_vs_recompute_max_abs"] = max(checks["kv_cached_vs_recompute_max_abs"],
                                                       (lg_c - runs["plain"][i][1]).abs().max().item())
    gaps = {k: [margins(lg) for _, lg in v] for k, v in runs.items()}
    low = [{"run": k, "prompt": i, "step": s, "margin": g}
           for k, per in gaps.items() for i, steps in enumerate(per) for s, g in enumerate(steps) if g < MARGIN_WARN]
    return runs, gaps, low, effects


def check_zeroed_weights(ed, prompts, interventions, runs, checks, label, tol):
    """A `zero` ablation at ALL positions is the model with those input columns of the projection
    zeroed (Linear weight [out, in]: columns; gpt2's Conv1D weight [in, out]: rows): its plain
    recompute generation gives the same tokens and the stored logits within tol (scaled by
    max(1, max |logit|)). An independent check of the hooks' indexing."""
    for iv in interventions:
        if len(iv["edits"]) != 1:
            continue
        e = iv["edits"][0]
        if e["site"] == "steer" or e["value"] != "zero" or e["positions"] != "all":
            continue
        cols = e["neurons"] if e["site"] == "neurons" else \
            [h * ed.head_dim + j for h in e["heads"] for j in range(ed.head_dim)]
        model = copy.deepcopy(ed.model)  # the copied hooks call `ed`, which has no edits outside forward
        proj = (ed.down if e["site"] == "neurons" else ed.oproj)[e["layer"]]
        name = next(n for n, m in ed.model.named_modules() if m is proj)
        w = model.get_submodule(name).weight
        with torch.no_grad():
            if ed.model.config.model_type == "gpt2":
                w[cols, :] = 0.0
            else:
                w[:, cols] = 0.0
        for i, p in enumerate(prompts):
            cur = torch.tensor([p], dtype=torch.int64)
            steps = []
            with torch.no_grad():
                for _ in range(runs[iv["name"]][i][0].numel()):
                    z = model(cur, use_cache=False).logits[0, -1]
                    steps.append(z)
                    cur = torch.cat([cur, z.argmax().view(1, 1)], dim=1)
            t, lg = runs[iv["name"]][i]
            assert torch.equal(cur[0, len(p):], t), f"{label} {iv['name']} prompt{i}: zeroed weights give other tokens"
            err = (torch.stack(steps) - lg).abs().max().item()
            assert err <= tol * max(1.0, lg.abs().max().item()), f"{label} {iv['name']} prompt{i}: zeroed {err:.2e}"
            checks["zero_all_positions_vs_zeroed_weights_max_abs"] = max(
                checks["zero_all_positions_vs_zeroed_weights_max_abs"], err)
            checks["n_zeroed_weight_runs"] += 1


def new_checks():
    return {"hooked_no_edits_vs_plain_max_abs": 0.0, "plain_recompute_vs_generate_token_mismatches": 0,
            "min_over_interventions_of_max_abs_logit_change": float("inf"),
            "generated_positions_step0_max_abs_vs_plain": 0.0, "kv_cached_vs_recompute_max_abs": 0.0,
            "means_recomputed_in_other_order_max_abs": 0.0,
            "zero_all_positions_vs_zeroed_weights_max_abs": 0.0, "n_zeroed_weight_runs": 0}


def check_hooked_plain(ed, prompts, checks, label):
    """The hooked forward with no edits == a plain forward, bit-exact (hooks removed)."""
    for i, p in enumerate(prompts):
        ids = torch.tensor([p], dtype=torch.int64)
        out, _ = ed.forward(ids, [], L=len(p), use_cache=False)
        ed.edits = [{"site": "never", "layer": -1}]  # an edit no hook matches: still the identity
        with torch.no_grad():
            out2 = ed.model(ids, use_cache=False)
        ed.edits = []
        hooks_off = []
        for mods in (ed.blocks, ed.down, ed.oproj):
            for m in mods:
                hooks_off.append((m, dict(m._forward_pre_hooks)))
                m._forward_pre_hooks.clear()
        try:
            with torch.no_grad():
                plain = ed.model(ids, use_cache=False)
        finally:
            for m, h in hooks_off:
                m._forward_pre_hooks.update(h)
        for o in (out, out2):
            assert torch.equal(o.logits, plain.logits), f"{label} prompt{i}: hooked forward != plain forward"
            checks["hooked_no_edits_vs_plain_max_abs"] = max(
                checks["hooked_no_edits_vs_plain_max_abs"], (o.logits - plain.logits).abs().max().item())


def intervention_golden(name):
    tm = time.monotonic()
    model = load_tiny(DATA / name)
    ed = Editor(model)
    n_layers, n_heads, hd, D, ffn, vocab = ed.n_layers, ed.n_heads, ed.head_dim, ed.d, ed.ffn, ed.vocab
    w_o = ed.oproj[0].weight.shape[0 if model.config.model_type == "gpt2" else 1]
    assert n_heads * hd == w_o, "attention output projection input width != n_heads * head_dim"
    w_down = ed.down[0].weight.shape[0 if model.config.model_type == "gpt2" else 1]
    assert w_down == ffn, "MLP output projection input width != intermediate size"
    for p in PROMPTS + POSITIVE + NEGATIVE:
        assert 0 not in p and max(p) < min(512, vocab), p
    assert [len(p) for p in PROMPTS] == [5, 7, 4] and [len(p) for p in POSITIVE] == [4, 6]
    assert [len(p) for p in NEGATIVE] == [5, 3]

    checks = new_checks()
    check_hooked_plain(ed, PROMPTS, checks, name)

    vectors = {"vectors.steer_vector": torch.randn(D, generator=torch.Generator().manual_seed(SEED))}
    for iv in INTERVENTIONS:
        for e in iv["edits"]:
            if e.get("vector") == "mean_diff":
                vectors[e["vector_key"]] = mean_diff_vector(ed, POSITIVE, NEGATIVE, e["layer"], e["token"])
    means = {}
    for iv in INTERVENTIONS:
        for e in iv["edits"]:
            if e.get("value") == "mean":
                cols = e["neurons"] if e["site"] == "neurons" else \
                    [h * hd + j for h in e["heads"] for j in range(hd)]
                means[e["mean_key"]] = site_means(ed, MEAN_PROMPTS, e["site"], e["layer"], cols)
                again = site_means(ed, MEAN_PROMPTS[::-1], e["site"], e["layer"], cols)
                err = (again - means[e["mean_key"]]).abs().max().item()
                assert err <= 1e-6, (name, e, err)
                checks["means_recomputed_in_other_order_max_abs"] = max(
                    checks["means_recomputed_in_other_order_max_abs"], err)

    runs, gaps, low, effects = run_interventions(ed, PROMPTS, INTERVENTIONS, vectors, means, N_NEW, checks, name)
    check_zeroed_weights(ed, PROMPTS, INTERVENTIONS, runs, checks, name, TOL_CACHED)

    tensors = {f"prompt{i}.ids": torch.tensor(p, dtype=torch.int64) for i, p in enumerate(PROMPTS)}
    for k, per in runs.items():
        for i, (t, lg) in enumerate(per):
            assert t.shape == (N_NEW,) and lg.shape == (N_NEW, vocab)
            tensors[f"{k}.prompt{i}.generated"] = t
            tensors[f"{k}.prompt{i}.logits"] = lg
    tensors.update(vectors)
    tensors.update(means)

    notes = [
        "With random weights the continuations carry no meaning; the goldens pin the arithmetic of the edits and of "
        "greedy generation under them.",
        f"Greedy margins (top-1 minus top-2 logit) under {MARGIN_WARN:g}: "
        + ("; ".join(f"{x['run']} prompt{x['prompt']} step {x['step']}: {x['margin']:.2e}" for x in low)
           if low else "none") + f". Smallest margin: {min(g for per in gaps.values() for s in per for g in s):.2e}.",
        "Tokens differing from plain (per prompt): " + "; ".join(
            f"{k} {v['tokens_differ_from_plain_per_prompt']}" for k, v in effects.items()) + ".",
        f"The same interventions run through a KV cache (the prompt in one forward, then one token a forward, the "
        f"hooks editing absolute positions) give the same tokens and logits within "
        f"{checks['kv_cached_vs_recompute_max_abs']:.1e} of the stored recompute (an edit at position p only "
        "changes positions >= p, and earlier positions' edits are the same at every step).",
        "steer_diff_mean edits layer 0's input: the embeddings as the model hands them to block 0 (gpt2: token + "
        "position embeddings; gemma2: already times sqrt(d)).",
        "The check 'a mean ablation over all positions on a MEAN prompt' was not done: with several prompts and "
        "positions the mean is no activation of any one forward, so nothing simple must hold.",
    ]
    if model.config.model_type == "gpt_neox":
        notes.append("tiny-pythia uses the parallel residual: block l's MLP and attention both read resid_pre "
                     "(after their own LayerNorms); the steer edit reaches both.")
    if model.config.model_type == "gemma2":
        notes.append("tiny-gemma2: head_dim 16 x 4 heads = 64 != d = 32 (the head site is 64 wide), post-attention "
                     "and post-feedforward norms: the neuron / head edits pass through them; sliding window 8 on "
                     "layers 0 and 2 (sequences reach 12 tokens); final logit soft-cap 3.0.")
    if model.config.model_type == "gpt2":
        notes.append("tiny-gpt2: c_proj / c_fc are Conv1D (weight [in, out]); the hooks edit their inputs alike.")
    meta = {
        "model": name,
        "checkpoint": f"tests/data/{name}",
        "generator": GENERATOR,
        "architecture": model.config.architectures[0],
        "n_layers": n_layers,
        "n_heads": n_heads,
        "head_dim": hd,
        "d": D,
        "ffn": ffn,
        "vocab": vocab,
        "n_new": N_NEW,
        "prompts": PROMPTS,
        "prompt_lengths": [len(p) for p in PROMPTS],
        "mean_prompts": MEAN_PROMPTS,
        "positive": POSITIVE,
        "negative": NEGATIVE,
        "interventions": INTERVENTIONS,
        "runs": ["plain"] + [iv["name"] for iv in INTERVENTIONS],
        "generated": {k: [t.tolist() for t, _ in per] for k, per in runs.items()},
        "key_pattern": "prompt{i}.ids i64 [L_i]; {k}.prompt{i}.generated i64 [6]; {k}.prompt{i}.logits f32 [6, V] "
                       "(k in runs: plain and each intervention); vectors.{steer_vector,steer_diff_last,"
                       "steer_diff_mean} f32 [d]; means.neurons_mean f32 [2]; means.heads_mean f32 [hd]",
        "definitions": DEFINITIONS,
        "effects": effects,
        "greedy_margins": {k: [[round(g, 6) for g in s] for s in per] for k, per in gaps.items()},
        "greedy_margin_warnings": low,
        "checks": {
            "measured": checks,
            "performed": [
                "prompt, MEAN, POSITIVE and NEGATIVE ids hold no id 0 and are < 512",
                "the hooked forward with no edits (and with an edit no hook matches) == a forward with the hooks "
                "removed: bit-identical logits",
                "the recompute-every-step plain generation == model.generate(do_sample=False, eos_token_id=None) "
                "(KV cache) tokens",
                "every intervention applies at least one edit and changes the step logits of at least one prompt",
                "interventions on `generated` positions: step 0's logits bit-identical to plain, same first token",
                "the means recomputed with the MEAN prompts in reverse order (1e-6)",
                f"every run (plain and each intervention) through a KV cache with the hooks at absolute positions: "
                f"same tokens, logits within {TOL_CACHED:g} x max(1, max |logit|) of the recompute",
                "neurons_zero and heads_zero (zero, all positions) == a copy of the model with those input columns "
                f"of the projection's weight zeroed, no hooks editing: same tokens, logits within {TOL_CACHED:g} x "
                "max(1, max |logit|)",
            ],
        },
        "notes": notes,
        "dtype": "float32",
        "attn_implementation": "eager",
        "versions": versions(),
    }
    path = write_golden(f"interventions-{name}", tensors, meta, GENERATOR)
    size = path.stat().st_size
    assert size < MAX_FILE_BYTES, (path, size)
    print(f"  wrote {path.relative_to(ROOT)} ({size} bytes) in {time.monotonic() - tm:.1f} s; "
          f"low margins: {len(low)}")
    return meta


def main():
    t0 = time.monotonic()
    deterministic_setup()
    for name in MODELS:
        print(f"{name}:")
        meta = intervention_golden(name)
        print(f"  checks: {json.dumps(meta['checks']['measured'])}")
    print(f"done in {time.monotonic() - t0:.1f} s; versions: {json.dumps(versions())}")


if __name__ == "__main__":
    main()
