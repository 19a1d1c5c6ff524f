#!/usr/bin/env bash
# Side-by-side input-saliency benchmark: tokenlens vs Ecco 0.1.2 on SmolLM2-135M-Instruct, the
# same 10 prompts (Ecco script's built-in list), 10 greedy tokens each (EOS ignored), for
# grad_x_input and integrated gradients (zero baseline, 50 Gauss-Legendre steps), the same thread
# count, one after the other. Prints seconds per generated token for each and the ratio, and checks
# that both generated the same tokens. Needs scripts/setup_ecco.sh done once (see scripts/README.md).
#
# Usage: [ROUNDS=3] scripts/bench_saliency.sh [THREADS]       (default 2 threads, 1 round)
# Each round runs tokenlens (both methods) and then Ecco (both methods); the ratios are computed per
# round, so drifts of the machine between rounds cancel out, and their median is printed.
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
need_refenv
t=${1:-2}
model=$(fetch_model)
build_release
out=$(mktemp -d)
prompts="$out/prompts.json"
python3 - "$prompts" <<'PY'
import ast, json, sys
tree = ast.parse(open("scripts/bench_saliency_ecco.py").read())
for n in tree.body:
    if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "DEFAULT_PROMPTS":
        json.dump(ast.literal_eval(n.value), open(sys.argv[1], "w"))
PY
# Prompts contain newlines: pass them through python to keep them intact.
run_ours() {  # method -> json file
  python3 - "$prompts" "$1" "$2" "$t" "$model" "$TOKENLENS_BIN" <<'PY'
import json, os, subprocess, sys
prompts, method, out, t, model, exe = json.load(open(sys.argv[1])), *sys.argv[2:7]
env = dict(os.environ, RAYON_NUM_THREADS=t)
subprocess.run([exe, "saliency", "--model", model, "--generate", "10", "--ignore-eos",
                "--method", method, "--json", out, *prompts], check=True, env=env, stdout=subprocess.DEVNULL)
PY
}
machine_line "threads $t"
rounds=${ROUNDS:-1}
for r in $(seq "$rounds"); do
  mkdir -p "$out/$r"
  run_ours grad_x_input "$out/$r/ours_gxi.json"
  run_ours integrated_gradients "$out/$r/ours_ig.json"
  PYTHONPATH=$ECCO_PKGS "$REFENV_PY" scripts/bench_saliency_ecco.py --model-dir "$ECCO_MODEL" --threads "$t" \
    --methods grad_x_input,ig --prompts-file "$prompts" --generate 10 --out "$out/$r/ecco.json" >/dev/null
done
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
d, rounds = sys.argv[1], int(sys.argv[2])
for name, ours_file, ecco_key in [("grad_x_input", "ours_gxi.json", "grad_x_input"), ("integrated_gradients", "ours_ig.json", "ig")]:
    ratios = []
    for r in range(1, rounds + 1):
        ecco = json.load(open(f"{d}/{r}/ecco.json"))
        if r == 1:
            print("ecco:", json.dumps(ecco["versions"]), "peak RSS %.0f MB" % ecco["peak_rss_mb"]) if name == "grad_x_input" else None
        ours = json.load(open(f"{d}/{r}/{ours_file}"))
        o = ours["seconds"] / ours["generated_tokens"]
        m = ecco["methods"][ecco_key] if "methods" in ecco else ecco[ecco_key]
        e = m["s_per_generated_token"]
        ratios.append(e / o)
        same = sum(s[p:] == x["generated_ids"] for s, p, x in zip(ours["sequences"], ours["prompt_lens"], ecco["prompts"]))
        print(f"round {r} {name:22s} tokenlens {o:7.4f} s/token"
              f"   Ecco {e:7.3f} s/token   speed-up {e / o:5.1f}x   same tokens {same}/{len(ecco['prompts'])}")
    print(f"{name:22s} median speed-up over {rounds} round(s): {statistics.median(ratios):.1f}x")
PY
echo "outputs in $out"
