#!/usr/bin/env python3
"""Ecco side of the input-saliency comparison benchmark. Run by a developer by hand, never by CI.

Runs Ecco 0.1.2 (`lm.generate(..., attribution=[method])`) with SmolLM2-135M-Instruct on a list
of prompts (default: 10 built-in prompts of 8-12 tokens: facts, stories, code), greedy, N generated
tokens each (default 10), for the attribution methods chosen with --methods, among Ecco's names
  grad_x_input  (captum InputXGradient)
  saliency      (captum Saliency: |gradient|)
  ig            (captum IntegratedGradients with captum's defaults: zero baseline, n_steps=50,
                 method "gausslegendre", internal_batch_size=None, i.e. all 50 scaled copies of
                 the sequence in one batch; Ecco passes none of these, so they cannot be changed
                 without patching: --ig-n-steps does exactly that, for quick checks only).
Prints one JSON line on stdout (and writes it to --out if given); progress goes to stderr.

Setup (once): scripts/setup_ecco.sh. Run (paths as in scripts/lib.sh: $ECCO_PKGS, $REFENV_PY,
$ECCO_MODEL, by default under ~/.cache/tokenlens/):
  PYTHONPATH=$ECCO_PKGS $REFENV_PY scripts/bench_saliency_ecco.py \
      --threads 2 [--model-dir $ECCO_MODEL] [--methods grad_x_input,saliency,ig] [--out f.json]

What is timed (time.perf_counter wall clock, after torch.set_num_threads(--threads); one untimed
warm-up call `lm.generate(prompts[0], generate=1, attribution=["grad_x_input"])` first):
- per prompt, one generate-only call `lm.generate(prompt, generate=N, attribution=[])`
  -> "generate_only". This is HF `model.generate` (greedy, KV cache) plus Ecco's own per-token
  bookkeeping (one-hot @ embedding matrix per generated token, one extra full forward at the last
  token for its activation hooks, tokenizer decode) - the part of every Ecco call that is not
  attribution.
- per prompt and per method, one separate call `lm.generate(prompt, generate=N, attribution=[m])`
  (one call per method, so methods do not share anything):
  * "attribution_s": the time spent inside Ecco's `compute_primary_attributions_scores`
    (ecco/attribution.py), measured directly by wrapping that function: for each of the N
    generated tokens, building captum's attribution object, its forward(s)+backward over the
    whole sequence so far (prompt + earlier generated tokens, no KV cache), and Ecco's L2-norm +
    sum-to-1 normalization. This is THE number to compare with tokenlens' saliency stage.
  * "call_s": the wall time of the whole call, and "call_minus_generate_s" = call_s minus the
    same prompt's generate-only time: a cross-check of attribution_s (should be close).
  * "s_per_generated_token" = attribution_s / number of generated tokens (each generated token is
    one attribution target).
Model loading and the warm-up are not timed.

Generation ignores EOS by default (model.generation_config.eos_token_id = None), so every prompt
yields exactly N tokens, like scripts/make_goldens.py; --stop-at-eos keeps HF's default stop.
The generated token ids (and prompt ids) per prompt are in the JSON so the Rust side can check it
generated the same tokens; --with-scores also adds Ecco's normalized attribution vectors
(per method, per generated token: one score per source position, summing to 1).

Ecco is loaded with activations=False, attention=False, hidden_states=False (Ecco's default is
hidden_states=True, which only adds hidden-state outputs to every forward; --ecco-hidden-states
turns it on). Ecco's model_config for SmolLM2: embedding 'model.embed_tokens.weight',
type 'causal', activations ['mlp\\.down_proj'], token_prefix 'Ġ', partial_token_prefix ''.
"""
import argparse
import json
import os
import resource
import time
import warnings

from ecco_util import (default_model_dir, emit, import_ecco, load, log, versions,
                      warn_transformers_version)

DEFAULT_PROMPTS = [
    "The capital of France is Paris, the capital of Italy is",
    "Once upon a time, a little fox lived in a",
    "def fibonacci(n):\n    if n <",
    "Water boils at a temperature of one hundred degrees",
    "The quick brown fox jumps over the lazy",
    "for i in range(10):\n    print(",
    "My favourite season of the year is autumn because the",
    "The Moon orbits the Earth roughly once every",
    "import numpy as np\nx = np.array([",
    "She opened the old wooden door and saw a",
]

METHODS = ("grad_x_input", "saliency", "ig")




def load_prompts(path):
    if path is None:
        return list(DEFAULT_PROMPTS)
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, list) or not data:
        raise SystemExit(f"{path}: expected a non-empty JSON list of prompts")
    out = []
    for x in data:
        if isinstance(x, dict):
            x = x.get("prompt", x.get("text"))
        if not isinstance(x, str) or not x:
            raise SystemExit(f"{path}: every entry must be a string (or an object with 'prompt')")
        out.append(x)
    return out



def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", default=default_model_dir(),
                    help="HF checkpoint made by scripts/setup_ecco.sh "
                         "(default: $ECCO_MODEL or $TOKENLENS_CACHE/ecco-model, as in scripts/lib.sh)")
    ap.add_argument("--prompts-file", help="JSON list of prompt strings (default: 10 built-in prompts)")
    ap.add_argument("--generate", type=int, default=10, help="tokens to generate per prompt (default 10)")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma-separated subset of {','.join(METHODS)} (default: all three)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--ig-n-steps", type=int, default=None,
                    help="override captum's IG n_steps (default: not overridden = captum's 50). "
                         "Patches Ecco's IG class; for quick checks only, not for comparisons")
    ap.add_argument("--stop-at-eos", action="store_true", help="stop at EOS (default: ignore EOS)")
    ap.add_argument("--ecco-hidden-states", action="store_true",
                    help="load with Ecco's default hidden_states=True (default here: False)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up call")
    ap.add_argument("--with-scores", action="store_true",
                    help="include Ecco's normalized attribution vectors in the JSON")
    ap.add_argument("--out", help="also write the JSON to this file")
    a = ap.parse_args()

    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise SystemExit(f"--methods: unknown {bad}; choose from {METHODS}")
    if a.generate < 1:
        raise SystemExit("--generate must be >= 1")
    prompts = load_prompts(a.prompts_file)

    import torch
    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    ecco = import_ecco(__file__)
    ecco_attribution, ecco_lm = ecco.attribution, ecco.lm
    import numpy as np
    import transformers

    warn_transformers_version()

    # Time Ecco's attribution stage directly: _analyze_token calls the module-level name
    # ecco.lm.compute_primary_attributions_scores once per (generated token, method).
    attr_times = []
    orig_cpas = ecco_lm.compute_primary_attributions_scores

    def timed_cpas(*args, **kwargs):
        t0 = time.perf_counter()
        r = orig_cpas(*args, **kwargs)
        attr_times.append(time.perf_counter() - t0)
        return r

    ecco_lm.compute_primary_attributions_scores = timed_cpas

    from captum.attr import IntegratedGradients
    if a.ig_n_steps is not None:
        n_steps = a.ig_n_steps

        class IGSteps(IntegratedGradients):
            def attribute(self, inputs, *args, **kwargs):
                kwargs.setdefault("n_steps", n_steps)
                return super().attribute(inputs, *args, **kwargs)

        ecco_attribution.ATTR_NAME_TO_CLASS["integrated_gradients"] = IGSteps
        log(f"note: IG patched to n_steps={n_steps} (captum default is 50): not a comparison run")

    lm, load_s = load(a.model_dir, activations=False, attention=False, hidden_states=a.ecco_hidden_states,
                      stop_at_eos=a.stop_at_eos)
    log(f"loaded {a.model_dir} in {load_s:.1f} s; transformers {transformers.__version__}, "
        f"attn {getattr(lm.model.config, '_attn_implementation', '?')}, threads {torch.get_num_threads()}")

    def run(prompt, n, attribution):
        attr_times.clear()
        t0 = time.perf_counter()
        out = lm.generate(prompt, generate=n, do_sample=False, attribution=list(attribution))
        dt = time.perf_counter() - t0
        ids = out.token_ids[0].tolist()
        return out, dt, list(attr_times), ids[:out.n_input_tokens], ids[out.n_input_tokens:]

    if not a.no_warmup:
        run(prompts[0], 1, ["grad_x_input"])

    gen_only = []
    per_method = {m: {"attribution": [], "call": [], "calls_attr": []} for m in methods}
    prompt_rows = []
    for pi, prompt in enumerate(prompts):
        _, g_s, _, in_ids, gen_ids = run(prompt, a.generate, [])
        gen_only.append(g_s)
        row = {"prompt": prompt, "input_ids": in_ids, "generated_ids": gen_ids,
               "generated_text": lm.tokenizer.decode(gen_ids)}
        mismatches = {}
        scores = {}
        for m in methods:
            out, c_s, times, in2, gen2 = run(prompt, a.generate, [m])
            if len(times) != len(gen2):
                raise SystemExit(f"expected {len(gen2)} attribution calls for {m}, timed {len(times)}")
            per_method[m]["attribution"].append(sum(times))
            per_method[m]["call"].append(c_s)
            if in2 != in_ids or gen2 != gen_ids:
                mismatches[m] = gen2
            if a.with_scores:
                scores[m] = [np.asarray(v, dtype=np.float64).tolist() for v in out.attribution[m]]
            log(f"prompt {pi + 1}/{len(prompts)} {m}: attribution {sum(times):.3f} s, "
                f"call {c_s:.3f} s (generate-only {g_s:.3f} s)")
        if mismatches:
            log(f"warning: prompt {pi + 1}: generated ids differ between calls: {mismatches}")
            row["generated_ids_by_method_if_different"] = mismatches
        if a.with_scores:
            row["scores"] = scores
        prompt_rows.append(row)

    n_gen = sum(len(r["generated_ids"]) for r in prompt_rows)
    n_p = len(prompts)
    res_methods = {}
    for m in methods:
        att, call = per_method[m]["attribution"], per_method[m]["call"]
        res_methods[m] = {
            "attribution_s": sum(att),
            "s_per_generated_token": sum(att) / n_gen,
            "s_per_prompt": sum(att) / n_p,
            "per_prompt_attribution_s": att,
            "call_s": sum(call),
            "call_minus_generate_s": sum(call) - sum(gen_only),
            "per_prompt_call_s": call,
        }
    ig_steps = a.ig_n_steps if a.ig_n_steps is not None else 50
    result = {
        "impl": "ecco",
        "model_dir": os.path.abspath(a.model_dir),
        "threads": torch.get_num_threads(),
        "n_prompts": n_p,
        "generate": a.generate,
        "generated_tokens_total": n_gen,
        "stop_at_eos": a.stop_at_eos,
        "methods_run": methods,
        "ig": {"n_steps": ig_steps, "patched": a.ig_n_steps is not None, "method": "gausslegendre",
               "baseline": 0, "internal_batch_size": None} if "ig" in methods else None,
        "warmup": not a.no_warmup,
        "load_s": load_s,
        "generate_only": {"total_s": sum(gen_only), "s_per_prompt": sum(gen_only) / n_p,
                          "per_prompt_s": gen_only},
        "methods": res_methods,
        "prompts": prompt_rows,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "versions": versions(lm, ecco_hidden_states=a.ecco_hidden_states),
    }
    emit(result, a.out)


if __name__ == "__main__":
    main()
