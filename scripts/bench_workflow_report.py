#!/usr/bin/env python3
"""The tables of scripts/bench_workflow.sh from its output directory (rerunnable on it).

Usage: python scripts/bench_workflow_report.py OUT_DIR ROUNDS VARIANT... (needs pyarrow)

Checks, per round and tokenlens variant, against that round's Ecco run (exit 1 on a failure):
  - both generated the same tokens for every prompt;
  - saliency scores agree: for grad_x_input and (fixed-step variants) integrated gradients,
    every (target, source position) score within SCORE_TOL of Ecco's.
The `bf16` variant (weight products in bf16) is measured, not checked: its differing
generations and worst score differences (over the prompts whose tokens match) are reported.
Prints per round: seconds per step on both sides, the whole workflow's ratio with and without
integrated gradients (computations only: Ecco's timed steps vs tokenlens' stage seconds without
model loading; and whole processes, GNU time wall), peak RSS of both processes, and the IG
completeness errors |sum(attributions) - (f(x) - f(0))| of both sides per target (quantiles,
and the share of targets where tokenlens' error is no larger than Ecco's). Writes
OUT_DIR/results.json with every figure.
"""
import json
import os
import statistics
import sys

import pyarrow.parquet as pq

SCORE_TOL = 2e-3
# Which tokenlens stages correspond to which Ecco steps (for the per-step table).
STAGE_MAP = [
    ("generate", ["generate"], ["tokenize", "generate", "forward", "predictions", "activations",
                                "attention"]),
    ("saliency: grad x input + IG", ["grad_x_input", "integrated_gradients"], ["saliency"]),
    ("logit lens, rankings, watch", ["layer_predictions", "rankings", "rankings_watch"],
     ["lens_watch"]),
    ("NMF", ["nmf"], ["nmf"]),
    ("writing tables", [], ["write"]),
]


def read_table(run, name):
    path = os.path.join(run, name)
    if not os.path.isdir(path):
        raise SystemExit(f"{run}: no {name} table")
    return pq.read_table(path).to_pylist()


def time_file(out, name):
    with open(os.path.join(out, name + ".time")) as fh:
        kb, wall = fh.read().split()[:2]
    return int(kb) / 1024.0, float(wall)


def quantiles(xs):
    xs = sorted(xs)
    if not xs:
        return {}
    q = lambda p: xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]  # noqa: E731
    return {"median": q(0.5), "p90": q(0.9), "max": xs[-1], "n": len(xs)}


def main():
    out, rounds, variants = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    failures = []
    results = {"comparison": "workflow", "machine": open(os.path.join(out, "machine.txt")).read().strip(),
               "score_tolerance": SCORE_TOL, "rounds": []}
    if os.path.exists(os.path.join(out, "command.txt")):
        results["command"] = open(os.path.join(out, "command.txt")).read().strip()
    for r in range(1, rounds + 1):
        ecco = json.load(open(os.path.join(out, f"r{r}.ecco.json")))
        e_rss, e_wall = time_file(out, f"r{r}.ecco")
        e_prompts = {p["id"]: p for p in ecco["prompts"]}
        e_sec = ecco["seconds"]
        rnd = {"round": r, "ecco": {"seconds": e_sec, "total_s": ecco["total_s"],
                                    "total_without_ig_s": ecco["total_without_ig_s"],
                                    "wall_s": e_wall, "peak_rss_mb": e_rss,
                                    "load_s": ecco["load_s"]}, "tokenlens": {}}
        print(f"\n== round {r}: Ecco {ecco['n_prompts']} prompts, {ecco['generated_tokens']} generated "
              f"tokens; computations {ecco['total_s']:.1f} s ({ecco['total_without_ig_s']:.1f} s without IG), "
              f"process {e_wall:.1f} s, peak RSS {e_rss:.0f} MB")
        for v in variants:
            run = os.path.join(out, f"r{r}.run-{v}")
            man = json.load(open(os.path.join(run, "manifest.json")))
            if man.get("status") not in ("done", "complete"):
                failures.append(f"round {r} {v}: run status {man.get('status')}")
            st = {}
            for sh in man["shards"].values():
                for k, s in sh["stage_seconds"].items():
                    st[k] = st.get(k, 0.0) + s
            t_rss, t_wall = time_file(out, f"r{r}.tokenlens-{v}")
            compute = sum(s for k, s in st.items() if k != "load")
            # Same tokens.
            toks = read_table(run, "tokens")
            gen = {}
            for t in sorted(toks, key=lambda t: (t["doc_id"], t["position"])):
                if t["is_generated"]:
                    gen.setdefault(t["doc_id"], []).append(t["token_id"])
            bad = [d for d, p in e_prompts.items() if gen.get(d) != p["generated_ids"]]
            strict = v != "bf16"
            if bad and not strict:
                print(f"round {r} {v}: generated tokens differ from Ecco's for {len(bad)} of "
                      f"{len(e_prompts)} prompts (reported, not checked: bf16 products)")
            elif bad:
                failures.append(f"round {r} {v}: generated tokens differ from Ecco's for {len(bad)} "
                                f"prompts, e.g. {bad[0]}: {gen.get(bad[0])} vs {e_prompts[bad[0]]['generated_ids']}")
            # Same scores.
            sal = read_table(run, "saliency")
            ours = {}
            for s in sal:
                ours[(s["doc_id"], s["method"], s["target_position"], s["source_position"])] = s["score"]
            worst = {}
            methods = ["grad_x_input"] + (["integrated_gradients"] if v in ("ig", "bf16") else [])
            for m in methods:
                w, n = 0.0, 0
                for d, p in e_prompts.items():
                    if d in bad:
                        continue
                    n_in = len(p["input_ids"])
                    for j, vec in enumerate(p["scores"].get(m, [])):
                        tpos = n_in + j
                        for src, e in enumerate(vec):
                            o = ours.get((d, m, tpos, src))
                            if o is None:
                                failures.append(f"round {r} {v}: no {m} score for {d} target {tpos} source {src}")
                                break
                            w = max(w, abs(o - e))
                            n += 1
                worst[m] = w
                if not strict:
                    print(f"round {r} {v}: {m} scores within {w:.2e} of Ecco's on the {len(e_prompts) - len(bad)} "
                          f"prompts with the same tokens (reported, not checked)")
                elif w > SCORE_TOL:
                    failures.append(f"round {r} {v}: {m} scores differ from Ecco's by up to {w:.2e} "
                                    f"(tolerance {SCORE_TOL})")
            # Completeness.
            comp = None
            if v != "noig":
                rows = read_table(run, "saliency_completeness")
                # The generated tokens' probability targets (the table's `metric` column; its
                # `value` and `baseline_value` are p(input) and p(baseline)).
                ours_err = {(c["doc_id"], c["target_position"]): c for c in rows
                            if c.get("metric", "prob") == "prob"}
                pairs = []
                for d, p in e_prompts.items():
                    if d in bad:
                        continue
                    n_in = len(p["input_ids"])
                    for j, e in enumerate(p.get("ig_errors", [])):
                        c = ours_err.get((d, n_in + j))
                        if c is not None:
                            scale = abs(c["value"] - c["baseline_value"]) or 1.0
                            pairs.append((abs(c["error"]), abs(e), scale, c["steps"]))
                if pairs:
                    comp = {
                        "tokenlens_abs": quantiles([a for a, _, _, _ in pairs]),
                        "ecco_abs": quantiles([b for _, b, _, _ in pairs]),
                        "tokenlens_rel": quantiles([a / s for a, _, s, _ in pairs]),
                        "ecco_rel": quantiles([b / s for _, b, s, _ in pairs]),
                        "share_no_worse": sum(1 for a, b, _, _ in pairs if a <= b * (1 + 1e-3) + 1e-6) / len(pairs),
                        "steps": quantiles([st_ for _, _, _, st_ in pairs]),
                        "mean_steps": statistics.mean(st_ for _, _, _, st_ in pairs),
                    }
            e_total = ecco["total_s"] if v != "noig" else ecco["total_without_ig_s"]
            e_proc = e_wall if v != "noig" else e_wall - e_sec["integrated_gradients"]
            rec = {"stage_seconds": st, "compute_s": compute, "wall_s": t_wall, "peak_rss_mb": t_rss,
                   "ratio_compute": e_total / compute, "ratio_process": e_proc / t_wall,
                   "worst_score_diff": worst, "completeness": comp, "differing_generations": len(bad),
                   "checked": strict}
            rnd["tokenlens"][v] = rec
            label = {"ig": "with IG (50 steps)", "noig": "without IG",
                     "adaptive": "adaptive IG", "bf16": "with IG (50 steps), bf16 products"}.get(v, v)
            print(f"-- tokenlens {label}: computations {compute:.1f} s, process {t_wall:.1f} s, "
                  f"peak RSS {t_rss:.0f} MB")
            print(f"   ratio (Ecco / tokenlens): computations {rec['ratio_compute']:.1f}x, "
                  f"processes {rec['ratio_process']:.1f}x; scores vs Ecco: "
                  + ", ".join(f"{m} max |diff| {w:.1e}" for m, w in worst.items()))
            print("   | step | Ecco s | tokenlens s |\n   |---|---|---|")
            for name, es, ts in STAGE_MAP:
                ev = sum(e_sec.get(k, 0.0) for k in es if v != "noig" or k != "integrated_gradients")
                tv = sum(st.get(k, 0.0) for k in ts)
                print(f"   | {name} | {ev:.1f} | {tv:.1f} |")
            if comp:
                f = lambda q: f"median {q['median']:.2e}, p90 {q['p90']:.2e}, max {q['max']:.2e}"  # noqa: E731
                print(f"   IG completeness |error|, {comp['tokenlens_abs']['n']} targets: tokenlens {f(comp['tokenlens_abs'])}; "
                      f"Ecco {f(comp['ecco_abs'])}")
                print(f"   relative to |f(x) - f(0)|: tokenlens {f(comp['tokenlens_rel'])}; Ecco {f(comp['ecco_rel'])}")
                print(f"   tokenlens' error <= Ecco's on {100 * comp['share_no_worse']:.1f}% of targets; "
                      f"steps per target: mean {comp['mean_steps']:.1f}, {f(comp['steps'])}")
        results["rounds"].append(rnd)
    results["median"] = {}
    for v in variants:
        rs = [x["tokenlens"][v]["ratio_compute"] for x in results["rounds"]]
        results["median"][v] = {"ratio_compute": statistics.median(rs), "ratio_process": statistics.median(
            x["tokenlens"][v]["ratio_process"] for x in results["rounds"])}
        print(f"\nmedian ratio over {len(rs)} round(s), {v}: computations {statistics.median(rs):.1f}x, "
              f"processes {statistics.median(x['tokenlens'][v]['ratio_process'] for x in results['rounds']):.1f}x")
    results["failures"] = failures
    with open(os.path.join(out, "results.json"), "w") as fh:
        json.dump(results, fh, indent=1)
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures[:20]), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
