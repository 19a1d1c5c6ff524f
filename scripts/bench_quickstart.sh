#!/usr/bin/env bash
# The quickstart pipeline's time (issue 15 item 5: <= 2 minutes on 2 cores), in the default f32
# products and with `model: {compute: bf16}` (bf16 products, on AMX where the CPU has it;
# docs/model.md, "Compute precision"): pipelines/quickstart.yaml as committed (42 prompts, every
# analysis), once per precision and round, the two alternating (odd rounds: f32 first), each a
# process under GNU time (wall, peak RSS) with THREADS threads; stage seconds from each run's
# manifest. BENCHMARKS.md, "bf16 products on AMX", and README's quickstart times come from it.
#
# Usage: [ROUNDS=1] [THREADS=2] [LIMIT=N] [OUT=DIR] scripts/bench_quickstart.sh
#   LIMIT: the first N prompts only (a smoke run).
# Outputs: OUT (default target/bench-quickstart/<UTC time>/): the two specs, the runs, logs,
#   results.json (per precision: each round's wall, peak RSS and stage seconds; medians; the
#   ratio f32 / bf16); the table goes to stdout.
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-1}
LIMIT=${LIMIT:-}
/usr/bin/time --version 2>&1 | grep -q GNU ||
  { echo "error: GNU time not found at /usr/bin/time (apt-get install time)" >&2; exit 1; }
fetch_model >/dev/null
build_release
out=${OUT:-target/bench-quickstart/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
machine_line "threads ${THREADS:-2}, $ROUNDS round(s)" | tee "$out/machine.txt"

# The committed spec with absolute dataset and output paths and the model's compute set.
for compute in f32 bf16; do
  sed -e "s#^model: default\b.*#model: {path: default, compute: $compute}#" \
    -e "s#\.\./datasets/#$PWD/datasets/#" \
    -e "s#dir: \.\./runs/quickstart\b#dir: $out/run-$compute#" pipelines/quickstart.yaml >"$out/spec-$compute.yaml"
  grep -q "compute: $compute" "$out/spec-$compute.yaml" && grep -q "dir: $out/run-$compute" "$out/spec-$compute.yaml" ||
    { echo "error: pipelines/quickstart.yaml no longer has the 'model: default' and 'dir: ../runs/quickstart' lines this script rewrites" >&2; exit 1; }
done
limit=()
[ -n "$LIMIT" ] && limit=(--limit "$LIMIT")
run() {  # round compute
  timed "$out" "r$1.$2" out "$TOKENLENS_BIN" run --quiet --overwrite "${limit[@]}" "$out/spec-$2.yaml"
  cp "$out/run-$2/manifest.json" "$out/r$1.$2.manifest.json"
}
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then run "$round" f32; run "$round" bf16; else run "$round" bf16; run "$round" f32; fi
done

python3 - "$out" "$ROUNDS" "ROUNDS=$ROUNDS${LIMIT:+ LIMIT=$LIMIT} scripts/bench_quickstart.sh" <<'PY'
import json, statistics, sys
out, rounds, command = sys.argv[1], int(sys.argv[2]), sys.argv[3]
res = {"comparison": "quickstart", "command": command, "rounds": rounds, "precisions": {}}
for c in ("f32", "bf16"):
    rows = []
    for r in range(1, rounds + 1):
        peak_kb, wall = open(f"{out}/r{r}.{c}.time").read().split()
        m = json.load(open(f"{out}/r{r}.{c}.manifest.json"))
        shards = m["shards"].values() if isinstance(m["shards"], dict) else m["shards"]
        stages = {}
        for s in shards:
            for k, v in s["stage_seconds"].items():
                stages[k] = stages.get(k, 0.0) + v
        rows.append({"wall_s": float(wall), "peak_rss_mb": int(peak_kb) / 1000, "stage_seconds": stages,
                     "compute": m["model"]["compute"], "amx": m["model"]["amx"]})
    res["precisions"][c] = {"rounds": rows, "median_wall_s": statistics.median(x["wall_s"] for x in rows),
                            "median_saliency_s": statistics.median(x["stage_seconds"].get("saliency", 0.0) for x in rows),
                            "max_peak_rss_mb": max(x["peak_rss_mb"] for x in rows), "amx": rows[0]["amx"]}
p = res["precisions"]
res["ratio_f32_over_bf16"] = p["f32"]["median_wall_s"] / p["bf16"]["median_wall_s"]
print(f"{'products':9} {'wall s':>8} {'saliency s':>11} {'peak RSS MB':>12}  amx")
for c in ("f32", "bf16"):
    print(f"{c:9} {p[c]['median_wall_s']:8.1f} {p[c]['median_saliency_s']:11.1f} {p[c]['max_peak_rss_mb']:12.0f}  {p[c]['amx']}")
print(f"f32 / bf16: {res['ratio_f32_over_bf16']:.2f}x (target: <= 120 s on 2 cores)")
json.dump(res, open(f"{out}/results.json", "w"), indent=1)
PY
echo "outputs in $out"
