#!/usr/bin/env bash
# Pipeline throughput and memory: runs a pipeline at several dataset scales, each in a fresh run
# directory, and prints per scale the prompts, tokens, windows, wall time, prompts/s, tokens/s,
# peak RSS (GNU time), RSS over the run (sampled), what NMF held, and every table's row count.
# Flat memory is the goal: peak RSS must not grow with the dataset.
#
# Usage: scripts/bench_pipeline.sh [PIPELINE] [SCALES...]
#   default: pipelines/quickstart.yaml 1
#   e.g.     scripts/bench_pipeline.sh pipelines/quickstart.yaml 1 10
#   memory:  scripts/bench_memory.sh (pipelines/bench-memory.yaml at 1x and 10x, generated data)
# Env:
#   THREADS    RAYON_NUM_THREADS of the runs (default 2).
#   GENERATOR  a command that writes the dataset of scale S when given `--scale S --out FILE`
#              (e.g. `python3 scripts/make_bench_dataset.py`); default: the spec's dataset
#              repeated S times, ids made unique.
#   WORK       where datasets, specs, runs and logs go (default target/bench-pipeline).
#   SAMPLE     seconds between RSS samples (default 1).
#   LIMIT      only the first N prompts of each scale's dataset (the spec's dataset.limit; for
#              smoke runs).
# Writes WORK/results.json (per scale: prompts, tokens, windows, wall, rates, peak RSS, the RSS
# phases, rows per table; the 10x/1x-style peak RSS ratio of the last scale to the first).
# Needs /usr/bin/time (GNU time: `apt-get install time`).
#
# The RSS samples (WORK/rss-xS.tsv: seconds, VmRSS, VmHWM, windows done, load average) are taken
# from /proc/PID/status of the tokenlens process. "windows 1-k" is the time until the shard's
# status file records window k as done; "NMF and finish" is the time after the last window. VmHWM
# is the kernel's exact peak so far, so "VmHWM after the first half" = the peak of the first half.
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
spec=${1:-pipelines/quickstart.yaml}
shift || true
scales=("${@:-1}")
threads=${THREADS:-2}
work=${WORK:-target/bench-pipeline}
sample=${SAMPLE:-1}
limit=${LIMIT:-}
[ -x /usr/bin/time ] || { echo "error: /usr/bin/time (GNU time) is missing: apt-get install time" >&2; exit 1; }
fetch_model >/dev/null
build_release
mkdir -p "$work"
rm -f "$work"/results*.json  # never a previous run's figures
machine_line "threads $threads"
echo "pipeline: $spec${GENERATOR:+; datasets from: $GENERATOR}"
"$TOKENLENS_BIN" schema > "$work/schema.json"
for s in "${scales[@]}"; do
  data="$work/data-x$s.jsonl"
  run="$work/run-x$s"
  if [ -n "${GENERATOR:-}" ]; then
    # shellcheck disable=SC2086  # GENERATOR is a command line
    $GENERATOR --scale "$s" --out "$data" 2>/dev/null
  fi
  python3 - "$spec" "$s" "$data" "$run" "$work/spec-x$s.yaml" "${GENERATOR:+generated}" "$limit" <<'PY'
import json, re, sys
from pathlib import Path
spec_path, scale, data, run, out_spec = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
generated, limit = sys.argv[6] == "generated", sys.argv[7]
text = spec_path.read_text()
m = re.search(r"^\s*path:\s*(\S+)", text.split("dataset:", 1)[1], re.M)
if not generated:
    src = (spec_path.parent / m.group(1)).resolve()
    rows = [json.loads(l) for l in src.read_text().splitlines() if l.strip()]
    with data.open("w") as f:
        for k in range(scale):
            for r in rows:
                f.write(json.dumps({**r, "id": f"{r['id']}-{k}"}) + "\n")
text = text.replace(m.group(1), str(data.resolve()), 1)
if limit:
    text = re.sub(r"^(dataset:\s*\n)", lambda g: g.group(1) + f"  limit: {int(limit)}\n", text, count=1, flags=re.M)
    assert f"limit: {int(limit)}" in text, "LIMIT: no block-style `dataset:` line in the spec"
text = re.sub(r"^(\s*dir:\s*)\S+", lambda g: g.group(1) + str(run.resolve()), text, flags=re.M)
# A model given as a relative path (e.g. ../tests/data/tiny-llama) is relative to the spec's folder.
text = re.sub(r"^(model:\s*)(\.\S*)", lambda g: g.group(1) + str((spec_path.parent / g.group(2)).resolve()), text, flags=re.M)
out_spec.write_text(text)
PY
  rm -rf "$run"
  /usr/bin/time -f "%M %e %U %S" -o "$work/time-x$s" env RAYON_NUM_THREADS="$threads" \
    "$TOKENLENS_BIN" run --quiet --overwrite "$work/spec-x$s.yaml" > "$work/out-x$s" &
  timer=$!
  python3 - "$timer" "$run/shards/shard-000-of-001.json" "$work/rss-x$s.tsv" "$sample" <<'PY' &
# RSS sampler: the child of GNU time (tokenlens), every SAMPLE seconds until it exits.
import json, sys, time
tpid, status_path, out, every = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
def child():
    try:
        with open(f"/proc/{tpid}/task/{tpid}/children") as f:
            c = f.read().split()
        return int(c[0]) if c else None
    except OSError:
        return None
t0, pid, windows = time.time(), None, 0
with open(out, "w") as f:
    f.write("seconds\trss_kb\thwm_kb\twindows_done\tload1\n")
    while True:
        pid = pid or child()
        if pid is None:
            try:
                open(f"/proc/{tpid}/status").close()
            except OSError:
                break
            time.sleep(0.05)
            continue
        mem = {}
        try:
            with open(f"/proc/{pid}/status") as st:
                for line in st:
                    k, _, v = line.partition(":")
                    if k in ("VmRSS", "VmHWM"):
                        mem[k] = int(v.split()[0])
        except OSError:
            pass
        if "VmRSS" not in mem:  # exited (or a zombie)
            break
        try:
            with open(status_path) as st:
                windows = json.load(st)["windows_done"]
        except (OSError, ValueError, KeyError):
            pass
        with open("/proc/loadavg") as la:
            load = la.read().split()[0]
        f.write(f"{time.time() - t0:.1f}\t{mem['VmRSS']}\t{mem['VmHWM']}\t{windows}\t{load}\n")
        f.flush()
        time.sleep(every)
PY
  sampler=$!
  rc=0
  wait "$timer" || rc=$?
  wait "$sampler" || true
  if [ "$rc" != 0 ]; then
    echo "x$s: tokenlens run failed (exit $rc); see $work/out-x$s and $work/time-x$s" >&2
    exit "$rc"
  fi
  python3 - "$s" "$work" "$run" "$data" "$threads" <<'PY'
import json, sys
from pathlib import Path
scale, work, run, data, threads = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]
x = f"x{scale}"
rec = {"scale": int(scale)}
rss_kb, wall, user, sys_s = (work / f"time-{x}").read_text().split()[-4:]
rss_mb, wall, cpu = int(rss_kb) / 1024, float(wall), float(user) + float(sys_s)
m = json.loads((run / "manifest.json").read_text())
status = next(iter(m["shards"].values()))
prompts, tokens, windows = status["prompts_done"], status["tokens_done"], status["windows_done"]
spec = m["spec"]
window = spec["batching"]["bucket_window"]
rows = dict(status["rows"])
rows.update(m.get("nmf_rows") or {})
rows.update(m.get("neurons_rows") or {})
tables = [t["name"] for t in json.loads((work / "schema.json").read_text())]
ds_tokens = 0
for line in data.read_text().splitlines():
    if line.strip():
        ds_tokens += json.loads(line).get("tokens", 0)
ds = f" ({ds_tokens:,} prompt tokens in the dataset)" if ds_tokens else ""
print(f"{x}: {prompts:,} prompts, {tokens:,} tokens{ds}, {windows} windows of {window}, "
      f"wall {wall:.0f} s, {prompts / wall:.3f} prompts/s, {tokens / wall:.2f} tokens/s, "
      f"peak RSS {rss_mb:,.0f} MB (GNU time), CPU {cpu:.0f} s ({cpu / wall:.2f} of {threads} threads)")
rec.update(prompts=prompts, tokens=tokens, windows=windows, bucket_window=window, wall_s=wall,
           prompts_per_s=prompts / wall, tokens_per_s=tokens / wall, peak_rss_mb=rss_mb, cpu_s=cpu,
           threads=int(threads))

# RSS over the run.
samples = []
for line in (work / f"rss-{x}.tsv").read_text().splitlines()[1:]:
    t, rss, hwm, w, load = line.split("\t")
    samples.append((float(t), int(rss) / 1024, int(hwm) / 1024, int(w), float(load)))
half = windows // 2
def phase(lo, hi):
    return [s for s in samples if lo <= s[3] < hi]
first, second, after = phase(0, half), phase(half, windows), phase(windows, windows + 1)
def peak(ss):
    return f"{max(s[1] for s in ss):,.0f} MB" if ss else "-"
def hwm(ss):
    return f"{ss[-1][2]:,.0f} MB" if ss else "-"
per_window = [max(s[1] for s in phase(w, w + 1)) for w in range(windows) if phase(w, w + 1)]
spread = f"{min(per_window):,.0f}-{max(per_window):,.0f} MB" if per_window else "-"
def peak_mb(ss):
    return max(s[1] for s in ss) if ss else None
rec.update(rss_samples=len(samples), rss_peak_first_half_mb=peak_mb(first), rss_peak_second_half_mb=peak_mb(second),
           rss_peak_after_windows_mb=peak_mb(after))
print(f"{x}: RSS sampled ({len(samples)} samples): peak windows 1-{half} {peak(first)}, "
      f"windows {half + 1}-{windows} {peak(second)}, NMF and finish {peak(after)}; "
      f"per-window peaks {spread} ({len(per_window)} windows sampled)")
print(f"{x}: VmHWM (exact peak so far) at the last sample before window {half} was done: "
      f"{hwm(first)}, before window {windows} was done: {hwm(second)}, at the last sample: "
      f"{hwm(samples)}; whole run (GNU time): {rss_mb:,.0f} MB")
if samples:
    loads = [s[4] for s in samples]
    print(f"{x}: machine load average (1 min) during the run: mean {sum(loads) / len(loads):.1f}, "
          f"max {max(loads):.1f}")
    rec["load_average"] = {"mean": sum(loads) / len(loads), "max": max(loads)}

# What NMF held: X is positions x columns; the pipeline's NMF stage reads it into memory when it
# fits its budget (2 GiB, NmfStageOptions::new), else streams it.
nmf = (spec.get("analyses") or {}).get("nmf")
if nmf and rows.get("nmf_factors"):
    k = nmf["n_components"]
    n_pos, cols = rows["nmf_factors"] // k, rows["nmf_components"] // k
    xb = n_pos * cols * 4
    where = "in memory" if xb <= 2 << 30 else "streamed"
    print(f"{x}: NMF: X = {n_pos:,} positions x {cols:,} columns = {xb / 2**20:,.1f} MB as f32, "
          f"{where} (the pipeline's budget: 2 GiB); W {n_pos * k * 4 / 2**20:.1f} MB, "
          f"H {k * cols * 4 / 2**20:.2f} MB")

written = [t for t in tables if t in rows]
missing = [t for t in tables if t not in rows]
print(f"{x}: rows ({len(written)} of {len(tables)} tables): "
      + ", ".join(f"{t} {rows[t]:,}" for t in written)
      + (f"; not written: {', '.join(missing)}" if missing else ""))
rec["rows"] = {t: rows[t] for t in written}
rec["tables_not_written"] = missing
(work / f"results-{x}.json").write_text(json.dumps(rec, indent=1))
PY
done
python3 - "$work" "$spec" "LIMIT=$limit THREADS=$threads scripts/bench_pipeline.sh $spec ${scales[*]}" "${scales[@]}" <<'PY'
import json, sys
from pathlib import Path
work, spec, command, scales = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
per = [json.loads((work / f"results-x{s}.json").read_text()) for s in scales]
res = {"comparison": "pipeline", "command": command, "pipeline": spec, "scales": per}
if len(per) > 1:
    res["peak_rss_ratio_last_to_first"] = per[-1]["peak_rss_mb"] / per[0]["peak_rss_mb"]
    print(f"peak RSS x{scales[-1]} / x{scales[0]}: {res['peak_rss_ratio_last_to_first']:.3f}")
(work / "results.json").write_text(json.dumps(res, indent=1))
PY
