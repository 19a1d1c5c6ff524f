#!/usr/bin/env python3
"""Make the bf16 / f16 goldens: tests/data/golden/dtype/<name>.<D>.{safetensors,json}, D in {bf16, f16}.

tokenlens' `dtype: bf16 | f16` gives every parameter the dtype's values (weights rounded to nearest-even
when the checkpoint is wider) and holds the matrices in that dtype, while all activations and accumulation
stay float32. For each model and dtype D this script writes two references, run on the same prompts:

  rounded   transformers in float32 (eager attention, as load_tiny) on the parameters rounded to D:
            `p.data = p.data.to(D).to(float32)` for every parameter, NOT the buffers (RoPE inv_freq,
            Gemma's embed_scale stay float32). This is exactly what tokenlens computes: tokenlens is tested
            against it with the float32 tolerances.
  native    transformers run natively in D: from_pretrained(dir, attn_implementation="eager", dtype=D)
            (SmolLM2: the GGUF load with gguf_file=..., dtype=D), i.e. what a transformers user gets;
            activations rounded to D at every op (transformers computes a few steps in float32 and rounds
            the result to D: RMSNorm's normalization (Gemma's whole (1 + w) norm), the RoPE cos/sin, most
            families' eager softmax; GPT-2's and BERT's softmax run in D). Gemma's embed_scale sqrt(d) is
            rounded to D too (a buffer cast to the weight's dtype in its forward). Outputs are cast to
            float32 for storage.
  The script asserts that every parameter of `native`, cast to float32, equals the `rounded` model's
  parameter exactly (same weights in both references).

Models: the causal-LM tiny checkpoints tests/data/tiny-{gpt2,llama,qwen2,qwen3,olmo2,gemma,gemma2,gemma3,
pythia,neox-seq,phi3,mistral-window} (AutoModelForCausalLM), tests/data/tiny-bert (AutoModelForMaskedLM)
and SmolLM2-135M-Instruct (the Q4_1 GGUF of scripts/fetch-model.sh, or TOKENLENS_GGUF=/path).
Prompts: of each tiny model's float32 golden (tests/data/golden/<name>.json "prompts") the SHORTEST and the
LONGEST (PROMPT_PICK, for size: all of them would take the directory from ~8.7 MB to ~12 MB), ids checked
equal to that golden's "input_ids";
SmolLM2: the first 2 SMOL_PROMPTS, ids checked equal to golden/smollm2.json's. Prompt i below is the i-th
selected prompt (the JSON's "float32_golden_prompt_index" maps it to the float32 golden's p{j}).

Keys (float32 unless said; K in {rounded, native}):
  p{i}.input_ids      [T] int64
  p{i}.target         [1] int64: argmax of the ROUNDED model's logits at the gradient position (last
                      position; BERT: the first [MASK]); both kinds use it.
  K.p{i}.hidden       [L+1, T, d]: output_hidden_states as transformers returns them. Decoders: [l] = residual
                      stream entering block l (l < L), [L] = after the final norm. BERT: [0] = embeddings
                      output (after its LayerNorm), [l+1] = output of layer l (no final norm).
                      SmolLM2: K.p{i}.hidden_sel [4, T, 576] at indices HIDDEN_SEL = [0, 10, 20, 30].
  K.p{i}.attn         [L, H, T, T]: attention probabilities (output_attentions, eager).
                      SmolLM2: K.p{i}.attn_sel [2, 9, T, T] of layers ATTN_SEL = [0, 29].
  K.p{i}.logits       [T, V]: logits at every position. SmolLM2: K.p{i}.logits_last [V].
  K.p{i}.grad_prob    [T, d]: d p(target) / d token-embedding rows at the gradient position
  K.p{i}.grad_logprob [T, d]: the same for log p(target); both as make_goldens.token_embedding_grads (rows
                      fed as inputs_embeds, times Gemma's embed_scale inside the graph). native: rows in D,
                      autograd in D, cast to float32. SmolLM2: grad_logprob only.
  K.p{i}.greedy       [8] int64: 8 greedy tokens, a plain argmax loop of full forwards without KV cache
                      (golden_util.argmax_loop); EOS does not stop it. Not for BERT.

The JSON sidecar has the model, dtype, prompts, ids, targets, greedy tokens, versions, the keys, and the
MEASURED errors of native against rounded (scaled = max|a-b| / max(1, max|b|), b = rounded; rel =
max|a-b| / max|b|) per quantity and prompt, greedy agreement, plus rounded against the float32 model (how
much the weight rounding itself moves the outputs: what a test of `rounded` catches if the weights were not
rounded). A summary table of them is printed.

How to run (by hand, never CI), from the repo root:

    $REFENV_PY scripts/make_dtype_goldens.py [--only NAME,...] [--dtypes bf16,f16]

NAME as in tests/data/ (tiny-gpt2, ..., tiny-bert) or smollm2. deterministic_setup(): one thread, seeded;
reruns with the same library versions give byte-identical files.
"""

import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from golden_util import DATA, GOLDEN, argmax_loop, deterministic_setup, fetch_model, write_golden
from make_goldens import SMOL_PROMPTS, TOL, token_embedding_grads, versions

GENERATOR = "scripts/make_dtype_goldens.py"
OUT = GOLDEN / "dtype"
DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16}
TINY_CAUSAL = ["tiny-gpt2", "tiny-llama", "tiny-qwen2", "tiny-qwen3", "tiny-olmo2", "tiny-gemma", "tiny-gemma2",
               "tiny-gemma3", "tiny-pythia", "tiny-neox-seq", "tiny-phi3", "tiny-mistral-window"]
BERT = "tiny-bert"
SMOL = "smollm2"
MODELS = TINY_CAUSAL + [BERT, SMOL]
PROMPT_PICK = "shortest and longest"   # of each tiny model's float32 golden prompts
N_SMOL_PROMPTS = 2
HIDDEN_SEL = [0, 10, 20, 30]
ATTN_SEL = [0, 29]
GREEDY_NEW = 8
QUANTITIES = ["hidden", "attn", "logits", "grad_prob", "grad_logprob"]


def sig(x, n=3):
    """A float rounded to n significant digits (stable, readable JSON)."""
    return float(f"{x:.{n}g}")


def errors(a, b):
    """(scaled, rel) of a against the reference b, in float64: max|a-b| / max(1, max|b|) and max|a-b| / max|b|."""
    a, b = a.double(), b.double()
    d = (a - b).abs().max().item()
    m = b.abs().max().item()
    return d / max(m, 1.0), (d / m if m > 0 else 0.0)


def top2_gap(logits):
    """top-1 minus top-2 logit of a [V] vector."""
    v = logits.float().topk(2).values
    return (v[0] - v[1]).item()


def step_gaps(model, ids, tokens):
    """The model's top-1 minus top-2 logit at each greedy step, from one forward over prompt + tokens[:-1]
    (the same positions the argmax loop read one forward at a time; a diagnostic of how close each pick was)."""
    seq = torch.tensor([ids + tokens[:-1]], dtype=torch.int64)
    with torch.no_grad():
        lg = model(seq).logits[0, len(ids) - 1:]
    return [sig(top2_gap(row), 2) for row in lg]


def round_params(model, dt):
    """Every parameter (not the buffers) rounded to dt and back to float32, in place."""
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.to(dt).to(torch.float32)
    return model


def gguf_path():
    p = os.environ.get("TOKENLENS_GGUF")
    return Path(p) if p else fetch_model("smollm2")


class Spec:
    """How one model is loaded, tokenized and read out."""

    def __init__(self, name):
        self.name = name
        self.bert = name == BERT
        self.smol = name == SMOL
        self.causal = not self.bert
        if self.smol:
            path = gguf_path()
            self.dir, self.gguf = str(path.parent), path.name
            self.golden = json.loads((GOLDEN / "smollm2.json").read_text())
            tok = AutoTokenizer.from_pretrained(self.dir, gguf_file=self.gguf)
            self.src_idx = list(range(N_SMOL_PROMPTS))
            self.prompts = [SMOL_PROMPTS[j] for j in self.src_idx]
            self.ids = [tok(p).input_ids for p in self.prompts]
        else:
            self.dir, self.gguf = str(DATA / name), None
            self.golden = json.loads((GOLDEN / f"{name}.json").read_text())
            tok = Tokenizer.from_file(str(DATA / name / "tokenizer.json"))
            lens = [len(x) for x in self.golden["input_ids"]]
            short, long = lens.index(min(lens)), lens.index(max(lens))
            assert short != long
            self.src_idx = sorted({short, long})
            self.prompts = [self.golden["prompts"][j] for j in self.src_idx]
            self.ids = [tok.encode(p).ids for p in self.prompts]
        for j, ids in zip(self.src_idx, self.ids):
            assert ids == self.golden["input_ids"][j], (name, j, ids, self.golden["input_ids"][j])
        if self.bert:
            mask_id = tok.token_to_id("[MASK]")
            self.grad_pos = [ids.index(mask_id) for ids in self.ids]
            assert self.grad_pos == [self.golden["mask_positions"][j][0] for j in self.src_idx]
        else:
            self.grad_pos = [len(ids) - 1 for ids in self.ids]

    def load(self, dt):
        kw = dict(attn_implementation="eager", dtype=dt)
        if self.smol:
            m = AutoModelForCausalLM.from_pretrained(self.dir, gguf_file=self.gguf, **kw)
        elif self.bert:
            m = AutoModelForMaskedLM.from_pretrained(self.dir, **kw)
        else:
            m = AutoModelForCausalLM.from_pretrained(self.dir, **kw)
        m = m.eval()
        for p in m.parameters():
            assert p.dtype == dt, (self.name, p.dtype, dt)
        return m

    def run(self, model, i, target):
        """Every stored quantity of prompt i (float32, SmolLM2 selections applied), gradients toward `target`."""
        ids = torch.tensor([self.ids[i]], dtype=torch.int64)
        pos = self.grad_pos[i]
        with torch.no_grad():
            out = model(ids, output_attentions=True, output_hidden_states=True)
        L = model.config.num_hidden_layers
        assert len(out.hidden_states) == L + 1 and len(out.attentions) == L
        hidden = torch.stack([h[0] for h in out.hidden_states]).float()
        attn = torch.stack([a[0] for a in out.attentions]).float()
        logits = out.logits[0].float()
        r = {"hidden": hidden, "attn": attn, "logits": logits}
        logits_e, g_lp, g_p = token_embedding_grads(model, ids, target, pos=pos)
        r["grad_logprob"], r["grad_prob"] = g_lp.float(), g_p.float()
        # the gradient's forward (inputs_embeds, autograd on) against the plain one
        r["grad_path_logits_err"] = errors(logits_e.float(), logits[pos])[0]
        if self.causal:
            r["greedy"] = argmax_loop(model, ids, GREEDY_NEW)
        if self.smol:
            r["hidden"], r["attn"], r["logits"] = hidden[HIDDEN_SEL], attn[ATTN_SEL], logits[-1]
            del r["grad_prob"]
        return r

    def key(self, q):
        if self.smol:
            return {"hidden": "hidden_sel", "attn": "attn_sel", "logits": "logits_last"}.get(q, q)
        return q

    def quantities(self):
        return [q for q in QUANTITIES if not (self.smol and q == "grad_prob")]


def keys_doc(spec):
    if spec.smol:
        h = (f"[{len(HIDDEN_SEL)}, T, d]: output_hidden_states at indices {HIDDEN_SEL} (0 = embedding output "
             "entering block 0, l = residual stream entering block l, 30 = after the final norm)")
        doc = {
            "K.p{i}.hidden_sel": h,
            "K.p{i}.attn_sel": f"[{len(ATTN_SEL)}, H, T, T]: attention probabilities of layers {ATTN_SEL} (eager)",
            "K.p{i}.logits_last": "[V]: logits at the last position",
        }
    else:
        hid = ("[L+1, T, d]: output_hidden_states; [0] = output of the embeddings block (LayerNorm(word + position "
               "+ token_type[0])), [l+1] = output of encoder layer l (no final norm)") if spec.bert else (
               "[L+1, T, d]: output_hidden_states; [l] = residual stream entering block l (l < L; [0] = embedding "
               "output, Gemma: already times embed_scale), [L] = after the final norm")
        doc = {
            "K.p{i}.hidden": hid,
            "K.p{i}.attn": "[L, H, T, T]: attention probabilities (output_attentions, eager)",
            "K.p{i}.logits": "[T, V]: logits at every position",
        }
    where = "the first [MASK] position" if spec.bert else "the last position"
    doc["K.p{i}.grad_logprob"] = (f"[T, d]: d log softmax(logits[pos])[target] / d token-embedding rows, pos = {where}; "
                                  "rows fed as inputs_embeds (Gemma: times embed_scale inside the graph; BERT: "
                                  "position and token-type embeddings added inside). native: rows and autograd in "
                                  "the dtype, cast to float32")
    if not spec.smol:
        doc["K.p{i}.grad_prob"] = "[T, d]: the same for softmax(logits[pos])[target]"
    if spec.causal:
        doc["K.p{i}.greedy"] = (f"[{GREEDY_NEW}] int64: greedy tokens, a plain argmax loop of full forwards without "
                                "KV cache (golden_util.argmax_loop); EOS does not stop it")
    doc["p{i}.input_ids"] = "[T] int64"
    doc["p{i}.target"] = (f"[1] int64: argmax of the rounded model's logits at {where}; the gradients of both "
                          "kinds are toward it")
    doc["K"] = ("rounded: transformers float32 (eager) on the parameters rounded to the dtype (buffers untouched), "
                "what tokenlens computes; native: transformers loaded and run in the dtype, outputs cast to float32")
    return doc


def param_check(native, rounded, f32):
    """Asserts native's parameters (as float32) equal the rounded model's exactly; returns how many elements the
    rounding changed, and the float buffers of the native model with their dtypes."""
    nat = dict(native.named_parameters())
    rnd = dict(rounded.named_parameters())
    assert nat.keys() == rnd.keys(), (nat.keys() ^ rnd.keys())
    total = changed = 0
    orig = dict(f32.named_parameters())
    for k, p in nat.items():
        assert torch.equal(p.detach().float(), rnd[k].detach()), f"parameter {k}: native != rounded"
        total += p.numel()
        changed += (rnd[k].detach() != orig[k].detach()).sum().item()
    for (k, b), (k2, b2) in zip(rounded.named_buffers(), f32.named_buffers()):
        assert k == k2 and torch.equal(b, b2), f"buffer {k} changed by rounding"
    bufs = {k: str(b.dtype).replace("torch.", "") for k, b in native.named_buffers() if b.is_floating_point()}
    # one entry per distinct buffer name pattern (layer index replaced), to keep the JSON short
    short = {}
    for k, v in bufs.items():
        short.setdefault(".".join("N" if s.isdigit() else s for s in k.split(".")), v)
    return {"parameter_elements": total, "changed_by_rounding": changed}, short


def make(spec, dname, f32model):
    dt = DTYPES[dname]
    t0 = time.time()
    rounded = round_params(copy.deepcopy(f32model), dt).eval()
    native = spec.load(dt)
    rounding, native_buffers = param_check(native, rounded, f32model)
    n = len(spec.prompts)
    tensors, targets, greedy = {}, [], {"rounded": [], "native": []}
    err = {q: [] for q in spec.quantities()}
    rel = {q: [] for q in spec.quantities()}
    vs32 = {q: [] for q in spec.quantities()}
    greedy_agree, target_agree, grad_path, finite = [], [], [], []
    for i in range(n):
        pos = spec.grad_pos[i]
        with torch.no_grad():
            target = int(rounded(torch.tensor([spec.ids[i]])).logits[0, pos].argmax())
        res = {"rounded": spec.run(rounded, i, target), "native": spec.run(native, i, target)}
        f32 = spec.run(f32model, i, target)
        assert res["rounded"]["grad_path_logits_err"] <= TOL, res["rounded"]["grad_path_logits_err"]
        grad_path.append(sig(res["native"]["grad_path_logits_err"]))
        tensors[f"p{i}.input_ids"] = torch.tensor(spec.ids[i], dtype=torch.int64)
        tensors[f"p{i}.target"] = torch.tensor([target], dtype=torch.int64)
        targets.append(target)
        for kind, r in res.items():
            for q in spec.quantities():
                tensors[f"{kind}.p{i}.{spec.key(q)}"] = r[q]
            if spec.causal:
                tensors[f"{kind}.p{i}.greedy"] = r["greedy"]
                greedy[kind].append(r["greedy"].tolist())
        a, b = res["native"], res["rounded"]
        finite.append(all(torch.isfinite(a[q]).all().item() for q in spec.quantities()))
        for q in spec.quantities():
            s, rr = errors(a[q], b[q])
            err[q].append(sig(s))
            rel[q].append(sig(rr))
            vs32[q].append(sig(errors(b[q], f32[q])[0]))
        lg = a["logits"] if spec.smol else a["logits"][pos]
        lb = b["logits"] if spec.smol else b["logits"][pos]
        target_agree.append({"native_argmax": int(lg.argmax()), "equal": int(lg.argmax()) == target,
                             "rounded_top2_gap": sig(top2_gap(lb)), "native_top2_gap": sig(top2_gap(lg))})
        if spec.causal:
            gn, gr = a["greedy"].tolist(), b["greedy"].tolist()
            first = next((k for k in range(GREEDY_NEW) if gn[k] != gr[k]), None)
            greedy_agree.append({"common_prefix": GREEDY_NEW if first is None else first,
                                 "rounded_top2_gaps": step_gaps(rounded, spec.ids[i], gr),
                                 "native_top2_gaps": step_gaps(native, spec.ids[i], gn),
                                 "rounded_vs_float32_equal": gr == f32["greedy"].tolist()})
    meta = {
        "model": spec.name,
        "checkpoint": (f"{spec.gguf} (transformers GGUF load, dequantized by gguf-py)" if spec.smol
                       else f"tests/data/{spec.name}"),
        "model_class": type(native).__name__,
        "dtype": dname,
        "torch_dtype": str(dt).replace("torch.", ""),
        "prompts": spec.prompts,
        "prompt_pick": ("the first 2 SMOL_PROMPTS" if spec.smol
                        else f"the {PROMPT_PICK} of the float32 golden's prompts (by token count)"),
        "float32_golden_prompt_index": spec.src_idx,
        "input_ids": spec.ids,
        "gradient_positions": spec.grad_pos,
        "targets": targets,
        "attn_implementation": "eager",
        "kinds": {
            "rounded": "transformers, float32, eager attention, every parameter p.data = p.data.to(dtype).to(float32) "
                       "(buffers untouched: RoPE inv_freq and Gemma's embed_scale stay float32): float32 activations "
                       "on the dtype's weights, what tokenlens computes (compare with the float32 tolerances)",
            "native": "transformers from_pretrained(..., attn_implementation='eager', dtype=dtype): activations "
                      "rounded to the dtype at every op (what a transformers user gets), outputs cast to float32; "
                      "its parameters are checked equal to the rounded model's (as float32) element for element",
        },
        "keys": keys_doc(spec),
        "parameters": rounding,
        "native_float_buffers": native_buffers,
    }
    if spec.smol:
        meta["hidden_indices"] = HIDDEN_SEL
        meta["attn_layers"] = ATTN_SEL
    if spec.causal:
        meta["greedy"] = greedy
        meta["greedy_max_new_tokens"] = GREEDY_NEW
    if spec.bert:
        meta["mask_positions"] = [spec.golden["mask_positions"][j] for j in spec.src_idx]
    meta["native_vs_rounded"] = {
        "definition": "a = native, b = rounded (both float32 as stored); scaled = max|a-b| / max(1, max|b|) (what "
                      "tests/it/common.rs assert_close compares with its tolerance), rel = max|a-b| / max|b|; one "
                      "value per prompt, then the max over prompts",
        "scaled": {q: {"per_prompt": err[q], "max": max(err[q])} for q in spec.quantities()},
        "rel": {q: {"per_prompt": rel[q], "max": max(rel[q])} for q in spec.quantities()},
        "target": target_agree,
        "target_note": "per prompt: native's argmax at the gradient position, whether it equals the target "
                       "(the rounded argmax), and both models' top-1 minus top-2 logit there. A native gap of 0 is a tie "
                       "in the dtype's logits (lm_head output rounded to the dtype): torch's argmax takes the lowest "
                       "id, which need not be the rounded model's pick",
        "all_finite": finite,
        "grad_forward_logits_scaled_err": grad_path,
    }
    if spec.causal:
        meta["native_vs_rounded"]["greedy"] = greedy_agree
        meta["native_vs_rounded"]["greedy_note"] = (
            "per prompt: how many of the 8 tokens agree before the first difference (8: all), each model's "
            "top-1 minus top-2 logit at each of its own steps (from one forward over prompt + its tokens, a "
            "diagnostic), and whether the rounded tokens equal those of the float32 weights")
    meta["rounded_vs_float32"] = {
        "definition": "scaled error of the rounded model against the same model with the float32 weights "
                      "(transformers float32, same prompts and targets): how far rounding the weights moves the "
                      "outputs, i.e. what a test against `rounded` would catch if the weights were not rounded",
        "scaled": {q: {"per_prompt": vs32[q], "max": max(vs32[q])} for q in spec.quantities()},
    }
    meta["versions"] = versions()
    write_golden(f"dtype/{spec.name}.{dname}", tensors, meta, GENERATOR)
    row = {"model": spec.name, "dtype": dname, "T": [len(x) for x in spec.ids]}
    row.update({q: max(err[q]) for q in spec.quantities()})
    row.update({f"rel_{q}": max(rel[q]) for q in ("grad_prob", "grad_logprob") if q in rel})
    row["r32_logits"] = max(vs32["logits"])
    row["target"] = f"{sum(t['equal'] for t in target_agree)}/{n}"
    if spec.causal:
        row["greedy"] = " ".join(f"{g['common_prefix']}" for g in greedy_agree)
        row["r32_greedy"] = " ".join("=" if g["rounded_vs_float32_equal"] else "x" for g in greedy_agree)
    row["finite"] = all(finite)
    row["seconds"] = round(time.time() - t0, 1)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", metavar="NAMES", help=f"comma-separated subset of {','.join(MODELS)}")
    ap.add_argument("--dtypes", default="bf16,f16", help="comma-separated subset of bf16,f16 (default both)")
    args = ap.parse_args()
    names = MODELS if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    assert not unknown, f"--only: unknown {unknown}; known: {MODELS}"
    dnames = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    assert dnames and all(d in DTYPES for d in dnames), f"--dtypes: {dnames}; known: {list(DTYPES)}"
    names = [n for n in MODELS if n in names]

    deterministic_setup()
    transformers.utils.logging.disable_progress_bar()
    OUT.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    rows = []
    for name in names:
        print(f"{name}: loading")
        spec = Spec(name)
        f32model = spec.load(torch.float32)
        for dname in dnames:
            rows.append(make(spec, dname, f32model))
            r = rows[-1]
            print(f"  {name} {dname}: " + ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("model", "dtype")))
    print_table(rows)
    print(f"total {time.time() - t_all:.0f} s; versions: {json.dumps(versions())}")


def print_table(rows):
    cols = ["model", "dtype", "T"] + QUANTITIES + ["rel_grad_prob", "rel_grad_logprob", "target", "greedy",
                                                   "finite", "r32_logits", "r32_greedy"]
    fmt = {q: (lambda v: "-" if v is None else f"{v:.2e}") for q in QUANTITIES + ["rel_grad_prob", "rel_grad_logprob",
                                                                                  "r32_logits"]}
    table = [[str(fmt.get(c, lambda v: "-" if v is None else str(v))(r.get(c))) for c in cols] for r in rows]
    w = [max(len(c), *(len(t[k]) for t in table)) for k, c in enumerate(cols)]
    print()
    print("native vs rounded, scaled error max|a-b|/max(1,max|b|) over the prompts (rel_*: max|a-b|/max|b|); "
          "target: native argmax = rounded target; greedy: tokens of 8 agreeing before the first difference, per prompt; "
          "r32_*: rounded vs float32 weights")
    print("| " + " | ".join(c.ljust(w[k]) for k, c in enumerate(cols)) + " |")
    print("|" + "|".join("-" * (x + 2) for x in w) + "|")
    for t in table:
        print("| " + " | ".join(v.ljust(w[k]) for k, v in enumerate(t)) + " |")


if __name__ == "__main__":
    main()
