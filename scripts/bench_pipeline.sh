#!/usr/bin/env bash
# Pipeline throughput and memory: runs a pipeline over its dataset repeated SCALE times (ids made
# unique), each in a fresh run directory, and prints prompts/s, tokens/s and peak RSS per scale.
# Flat memory is the goal: peak RSS must not grow with the dataset.
#
# Usage: scripts/bench_pipeline.sh [PIPELINE] [SCALES...]
#   default: pipelines/quickstart.yaml 1
#   e.g.     scripts/bench_pipeline.sh pipelines/bench-memory.yaml 1 10
# Env: THREADS (default 2). Needs /usr/bin/time (GNU time).
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
spec=${1:-pipelines/quickstart.yaml}
shift || true
scales=("${@:-1}")
threads=${THREADS:-2}
fetch_model >/dev/null
build_release
work=target/bench-pipeline
mkdir -p "$work"
machine_line "threads $threads"
echo "pipeline: $spec"
for s in "${scales[@]}"; do
  python3 - "$spec" "$s" "$work" <<'PY'
import json, re, sys
from pathlib import Path
spec_path, scale, work = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
text = spec_path.read_text()
m = re.search(r"^\s*path:\s*(\S+)", text.split("dataset:", 1)[1], re.M)
data = (spec_path.parent / m.group(1)).resolve()
rows = [json.loads(l) for l in data.read_text().splitlines() if l.strip()]
out = work / f"data-x{scale}.jsonl"
with out.open("w") as f:
    for k in range(scale):
        for r in rows:
            f.write(json.dumps({**r, "id": f"{r['id']}-{k}"}) + "\n")
text = text.replace(m.group(1), str(out.resolve()), 1)
text = re.sub(r"^(\s*dir:\s*)\S+", lambda g: g.group(1) + str((work / f"run-x{scale}").resolve()), text, flags=re.M)
(work / f"spec-x{scale}.yaml").write_text(text)
PY
  /usr/bin/time -f "%M %e" -o "$work/time-x$s" env RAYON_NUM_THREADS="$threads" \
    "$TOKENLENS_BIN" run --quiet --overwrite "$work/spec-x$s.yaml" > "$work/out-x$s"
  read -r rss secs < "$work/time-x$s"
  line=$(head -1 "$work/out-x$s")
  echo "x$s: $line"
  echo "x$s: peak RSS $((rss / 1024)) MB, wall ${secs} s"
done
