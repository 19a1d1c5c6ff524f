#!/usr/bin/env python3
"""Ecco side of the whole-workflow comparison (scripts/bench_workflow.sh). By hand, never CI.

Runs Ecco 0.1.2's complete per-prompt workflow, as its documentation and notebooks use it, on
every prompt of a JSONL dataset (default datasets/quickstart.jsonl), SmolLM2-135M-Instruct:

  lm = ecco.from_pretrained(model, activations=True, attention=True, hidden_states=True)
  out = lm.generate(prompt, generate=G, do_sample=False, attribution=[grad_x_input, ig])
  out.layer_predictions(position=p, topk=K)         for every generated position p  (logit lens)
  out.rankings()                                    the generated tokens' rank at every layer
  out.rankings_watch(watch=ids, position=p)         for every generated position p
  out.run_nmf(n_components=C)                       scikit-learn NMF of the MLP activations

What is timed (time.perf_counter, after torch.set_num_threads(--threads), one untimed warm-up
call first): each of the steps above, per prompt. The calls' HTML/JavaScript output and the
rankings' matplotlib figures are replaced by no-ops, so only the computations are timed, not
the rendering. Inside `generate`, the time spent in Ecco's compute_primary_attributions_scores is
recorded per method (grad_x_input, integrated_gradients), so the workflow's time without
integrated gradients is the total minus that method's attribution time.

Integrated gradients is captum's, as Ecco calls it (zero baseline, 50 Gauss-Legendre steps, all
steps in one batch), with return_convergence_delta=True added so its completeness error
(sum of attributions - (f(x) - f(0)), f = the target's probability) is recorded per target: captum
then runs the two end-point forwards that tokenlens also runs for its saliency_completeness table.

Generation ignores EOS (eos_token_id = None), so every prompt yields exactly G tokens, like the
tokenlens pipeline (stop_at_eos: false). Prints one JSON line (also to --out): per-step seconds,
per prompt the ids, Ecco's normalized attribution scores per method and target, the IG
completeness errors, and the peak RSS of this process.

Run (paths as in scripts/lib.sh; set up once with scripts/setup_ecco.sh):
  PYTHONPATH=$ECCO_PKGS $REFENV_PY scripts/bench_workflow_ecco.py --threads 2 --out ecco.json
"""
import argparse
import json
import os
import resource
import time
import warnings

from ecco_util import check_model_dir, default_model_dir, emit, import_ecco, load, log, versions

STEPS = ("generate", "grad_x_input", "integrated_gradients", "layer_predictions", "rankings",
         "rankings_watch", "nmf")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", default=default_model_dir())
    ap.add_argument("--dataset", default=os.path.join(here, "..", "datasets", "quickstart.jsonl"),
                    help="JSONL with a 'text' field per line (default: datasets/quickstart.jsonl)")
    ap.add_argument("--limit", type=int, default=None, help="first N prompts only")
    ap.add_argument("--generate", type=int, default=12)
    ap.add_argument("--top-k", type=int, default=10, help="layer_predictions' topk")
    ap.add_argument("--watch", default=" Paris, Jupiter, the, and",
                    help="comma-separated watched tokens (each one token), as in the quickstart")
    ap.add_argument("--nmf-components", type=int, default=8)
    ap.add_argument("--no-ig", action="store_true", help="attribution=[grad_x_input] only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    a = ap.parse_args()

    with open(a.dataset, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    if a.limit:
        rows = rows[: a.limit]
    if not rows:
        raise SystemExit(f"{a.dataset}: no prompts")
    check_model_dir(a.model_dir)

    import torch
    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore")
    ecco = import_ecco(__file__)
    ecco_lm, lm_plots, ecco_output, ecco_attribution = ecco.lm, ecco.lm_plots, ecco.output, ecco.attribution
    import numpy as np
    import transformers
    from captum.attr import IntegratedGradients

    # Rendering off: only the computations are timed.
    class _Nothing:
        def __init__(self, *args, **kwargs):
            pass

    ecco_output.d.display = lambda *args, **kwargs: None
    ecco_output.d.HTML = _Nothing
    ecco_output.d.Javascript = _Nothing
    lm_plots.plot_inner_token_rankings = lambda *args, **kwargs: None
    lm_plots.plot_inner_token_rankings_watch = lambda *args, **kwargs: None

    # Attribution time per method (Ecco calls this module-level name once per token and method).
    attr_time = {"grad_x_input": 0.0, "integrated_gradients": 0.0}
    orig_cpas = ecco_lm.compute_primary_attributions_scores

    def timed_cpas(attr_method, *args, **kwargs):
        t0 = time.perf_counter()
        r = orig_cpas(attr_method, *args, **kwargs)
        attr_time[attr_method] += time.perf_counter() - t0
        return r

    ecco_lm.compute_primary_attributions_scores = timed_cpas

    deltas = []

    class IGWithDelta(IntegratedGradients):
        def attribute(self, *args, **kwargs):
            kwargs["return_convergence_delta"] = True
            attr, delta = super().attribute(*args, **kwargs)
            deltas.append(float(delta.detach().reshape(-1)[0]))
            return attr

    ecco_attribution.ATTR_NAME_TO_CLASS["integrated_gradients"] = IGWithDelta

    # attention=True makes transformers 4.40's sdpa layers fall back to eager attention, but
    # the mask was prepared for sdpa (None when nothing is padded: sdpa's is_causal), so the
    # fallback attends to every position, future ones included, and generates garbage. Telling
    # the model it is eager makes it build the causal mask (Ecco's era defaulted to eager).
    lm, load_s = load(a.model_dir, activations=True, attention=True, hidden_states=True, eager=True)
    # Ecco passes hidden_states / attention to the model's config, which transformers < 4.3x
    # also read in generate; 4.40 reads the generation config (from generation_config.json), so
    # the same flags are set there, or generate returns neither and layer_predictions fails.
    lm.model.generation_config.output_hidden_states = True
    lm.model.generation_config.output_attentions = True
    watch_ids = []
    for w in a.watch.split(","):
        ids = lm.tokenizer(w, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise SystemExit(f"--watch: {w!r} is {len(ids)} tokens, not one")
        watch_ids.append(ids[0])
    methods = ["grad_x_input"] if a.no_ig else ["grad_x_input", "integrated_gradients"]
    log(f"loaded {a.model_dir} in {load_s:.1f} s; transformers {transformers.__version__}, "
        f"attn {getattr(lm.model.config, '_attn_implementation', '?')}, threads {torch.get_num_threads()}, "
        f"{len(rows)} prompts, methods {methods}")

    # Warm-up (untimed): one short call through every step.
    out = lm.generate(rows[0]["text"], generate=1, do_sample=False, attribution=["grad_x_input"])
    out.layer_predictions(position=out.n_input_tokens, topk=a.top_k)
    out.rankings()
    out.rankings_watch(watch=watch_ids, position=out.n_input_tokens)
    out.run_nmf(n_components=1)
    deltas.clear()

    totals = {s: 0.0 for s in STEPS}
    prompts = []
    for pi, row in enumerate(rows):
        for m in attr_time:
            attr_time[m] = 0.0
        n_delta = len(deltas)
        t = time.perf_counter()
        out = lm.generate(row["text"], generate=a.generate, do_sample=False, attribution=methods)
        call = time.perf_counter() - t
        step = {m: attr_time[m] for m in attr_time}
        step["generate"] = call - sum(attr_time.values())
        n_in = out.n_input_tokens
        ids = out.token_ids[0].tolist()
        n_gen = len(ids) - n_in
        t = time.perf_counter()
        for j in range(n_gen):
            out.layer_predictions(position=n_in + j, topk=a.top_k)
        step["layer_predictions"] = time.perf_counter() - t
        t = time.perf_counter()
        out.rankings()
        step["rankings"] = time.perf_counter() - t
        t = time.perf_counter()
        for j in range(n_gen):
            out.rankings_watch(watch=watch_ids, position=n_in + j)
        step["rankings_watch"] = time.perf_counter() - t
        t = time.perf_counter()
        out.run_nmf(n_components=a.nmf_components)
        step["nmf"] = time.perf_counter() - t
        for s in STEPS:
            totals[s] += step[s]
        prompts.append({
            "id": row.get("id", str(pi)),
            "input_ids": ids[:n_in],
            "generated_ids": ids[n_in:],
            "seconds": step,
            "scores": {m: [np.asarray(v, dtype=np.float64).tolist() for v in out.attribution[m]]
                       for m in methods},
            "ig_errors": deltas[n_delta:],
        })
        log(f"prompt {pi + 1}/{len(rows)}: " + ", ".join(f"{s} {step[s]:.2f}" for s in STEPS) + " s")

    result = {
        "impl": "ecco",
        "threads": torch.get_num_threads(),
        "model_dir": os.path.abspath(a.model_dir),
        "dataset": os.path.abspath(a.dataset),
        "n_prompts": len(rows),
        "generate": a.generate,
        "generated_tokens": sum(len(p["generated_ids"]) for p in prompts),
        "methods": methods,
        "ig": {"n_steps": 50, "method": "gausslegendre", "baseline": 0},
        "watch_ids": watch_ids,
        "load_s": load_s,
        "seconds": totals,
        "total_s": sum(totals.values()),
        "total_without_ig_s": sum(v for k, v in totals.items() if k != "integrated_gradients"),
        "prompts": prompts,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "versions": versions(lm),
    }
    emit(result, a.out)


if __name__ == "__main__":
    main()
