#!/usr/bin/env bash
# Side-by-side input-saliency benchmark: tokenlens vs Ecco 0.1.2 on SmolLM2-135M-Instruct, the
# same prompts (the 10 of bench_saliency_ecco.py's built-in list), GENERATE greedy tokens each (EOS
# ignored), for grad_x_input and integrated gradients (zero baseline, 50 Gauss-Legendre steps), the
# same thread count. Prints seconds per generated token for each and the ratio, and checks that
# both generated the same tokens and that their scores agree (every (target, source position)
# score within SCORE_TOL = 2e-3 of Ecco's, as bench_workflow_report.py): the script exits 1
# otherwise. Sets up Ecco (scripts/setup_ecco.sh) if needed.
#
# Usage: [ROUNDS=1] [PROMPTS=10] [GENERATE=10] [OUT=DIR] scripts/bench_saliency.sh [THREADS]
#   (default 2 threads). Each round runs both methods on both sides, the order alternating
#   between rounds (odd: tokenlens first, even: Ecco first); ratios are taken within a round, so
#   drifts of the machine between rounds cancel out, and their median is printed.
# Outputs: OUT (default target/bench-saliency/<UTC time>/): per round the JSON of both sides, and
#   results.json (every figure, the checks, the command); the table goes to stdout.
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
need_refenv
t=${1:-2}
rounds=${ROUNDS:-1}
n_prompts=${PROMPTS:-10}
generate=${GENERATE:-10}
out=${OUT:-target/bench-saliency/$(date -u +%Y%m%dT%H%M%SZ)}
scripts/setup_ecco.sh >&2
model=$(fetch_model)
build_release
mkdir -p "$out"
prompts="$out/prompts.json"
python3 - "$prompts" "$n_prompts" <<'PY'
import ast, json, sys
tree = ast.parse(open("scripts/bench_saliency_ecco.py").read())
for n in tree.body:
    if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "DEFAULT_PROMPTS":
        json.dump(ast.literal_eval(n.value)[: int(sys.argv[2])], open(sys.argv[1], "w"))
PY
# Prompts contain newlines: pass them through python to keep them intact.
run_ours() {  # method -> json file
  python3 - "$prompts" "$1" "$2" "$t" "$model" "$TOKENLENS_BIN" "$generate" <<'PY'
import json, os, subprocess, sys
prompts, method, out, t, model, exe, generate = json.load(open(sys.argv[1])), *sys.argv[2:8]
env = dict(os.environ, RAYON_NUM_THREADS=t)
subprocess.run([exe, "saliency", "--model", model, "--generate", generate, "--ignore-eos",
                "--method", method, "--json", out, *prompts], check=True, env=env, stdout=subprocess.DEVNULL)
PY
}
run_tokenlens() {
  echo "  round $1: tokenlens" >&2
  run_ours grad_x_input "$out/$1/ours_gxi.json"
  run_ours integrated_gradients "$out/$1/ours_ig.json"
}
run_ecco() {
  echo "  round $1: Ecco" >&2
  PYTHONPATH=$ECCO_PKGS "$REFENV_PY" scripts/bench_saliency_ecco.py --model-dir "$ECCO_MODEL" --threads "$t" \
    --methods grad_x_input,ig --prompts-file "$prompts" --generate "$generate" --with-scores \
    --out "$out/$1/ecco.json" >/dev/null 2>"$out/$1/ecco.log" ||
    { echo "error: bench_saliency_ecco.py failed; $out/$1/ecco.log ends with:" >&2; tail -n 20 "$out/$1/ecco.log" >&2; exit 1; }
}
machine_line "threads $t" | tee "$out/machine.txt"
for r in $(seq "$rounds"); do
  mkdir -p "$out/$r"
  if [ $((r % 2)) = 1 ]; then run_tokenlens "$r"; run_ecco "$r"; else run_ecco "$r"; run_tokenlens "$r"; fi
done
python3 - "$out" "$rounds" "$t" "ROUNDS=$rounds PROMPTS=$n_prompts GENERATE=$generate scripts/bench_saliency.sh $t" <<'PY'
import json, statistics, sys
d, rounds, threads, command = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
SCORE_TOL = 2e-3  # as scripts/bench_workflow_report.py
failures = []
res = {"comparison": "saliency", "command": command, "threads": threads, "rounds": rounds,
       "score_tolerance": SCORE_TOL, "methods": {}}
for name, ours_file, ecco_key in [("grad_x_input", "ours_gxi.json", "grad_x_input"),
                                  ("integrated_gradients", "ours_ig.json", "ig")]:
    per_round = []
    for r in range(1, rounds + 1):
        ecco = json.load(open(f"{d}/{r}/ecco.json"))
        ours = json.load(open(f"{d}/{r}/{ours_file}"))
        if r == 1 and name == "grad_x_input":
            print("ecco:", json.dumps(ecco["versions"]), "peak RSS %.0f MB" % ecco["peak_rss_mb"])
            res["ecco_versions"] = ecco["versions"]
        o = ours["seconds"] / ours["generated_tokens"]
        e = ecco["methods"][ecco_key]["s_per_generated_token"]
        n = len(ecco["prompts"])
        same = sum(s[p:] == x["generated_ids"] and s[:p] == x["input_ids"]
                   for s, p, x in zip(ours["sequences"], ours["prompt_lens"], ecco["prompts"]))
        if same != n or len(ours["sequences"]) != n:
            failures.append(f"round {r} {name}: same prompt and generated tokens for {same}/{n} prompts")
        # Scores: Ecco's normalized attribution vector per target (one value per source
        # position) against tokenlens' score at (prompt, target position, source position).
        ours_scores = {(row["doc"], row["target_position"], row["source_position"]): row["score"]
                       for row in ours["rows"]}
        worst, compared, missing = 0.0, 0, 0
        for doc, x in enumerate(ecco["prompts"]):
            n_in = len(x["input_ids"])
            for j, vec in enumerate(x["scores"][ecco_key]):
                for src, v in enumerate(vec):
                    s = ours_scores.get((doc, n_in + j, src))
                    if s is None:
                        missing += 1
                        continue
                    worst = max(worst, abs(s - v))
                    compared += 1
        if missing or not compared:
            failures.append(f"round {r} {name}: {missing} of Ecco's scores have no tokenlens score "
                            f"({compared} compared)")
        if worst > SCORE_TOL:
            failures.append(f"round {r} {name}: scores differ from Ecco's by up to {worst:.2e} "
                            f"(tolerance {SCORE_TOL})")
        per_round.append({"round": r, "first": "tokenlens" if r % 2 else "ecco",
                          "tokenlens_s_per_token": o, "ecco_s_per_token": e, "speedup": e / o,
                          "generated_tokens": ours["generated_tokens"], "same_tokens": f"{same}/{n}",
                          "max_abs_score_diff": worst, "scores_compared": compared,
                          "tokenlens_seconds": ours["seconds"],
                          "ecco_attribution_s": ecco["methods"][ecco_key]["attribution_s"],
                          "ecco_peak_rss_mb": ecco["peak_rss_mb"]})
        print(f"round {r} {name:22s} tokenlens {o:7.4f} s/token   Ecco {e:7.3f} s/token   "
              f"speed-up {e / o:5.1f}x   same tokens {same}/{n}   max |score diff| {worst:.1e}")
    med = statistics.median(x["speedup"] for x in per_round)
    res["methods"][name] = {"rounds": per_round, "median_speedup": med,
                            "speedups": [x["speedup"] for x in per_round]}
    print(f"{name:22s} median speed-up over {rounds} round(s): {med:.1f}x")
res["failures"] = failures
json.dump(res, open(f"{d}/results.json", "w"), indent=1)
if failures:
    print("FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
    sys.exit(1)
PY
echo "outputs in $out"
