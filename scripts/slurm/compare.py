"""The checks scripts/slurm.sh runs on its run directories (pyarrow only). One line per table, exit
code 1 when a check fails.

  compare.py rows WHOLE SHARDED   the union of the shards' tables equals the unsharded run: every
                                  table but nmf_* has the same rows (sorted; floats within 1e-5
                                  relative as in tests/it/run.rs's same_rows, f16 values and the
                                  neuron_* tables' values within 1e-3: one f16 step); the nmf_*
                                  tables have the same keys (factors, layers, neurons, positions,
                                  top contexts) and values within 1e-2 of the table's largest
                                  |value| (the matrix's rows are read in another order, so NMF's
                                  rounding differs)
  compare.py files A B            A and B hold the same files, byte for byte, in every table but
                                  nmf_summary, whose rows must match except the `seconds` timing
  compare.py killed RUN SHARD     RUN's shard SHARD was killed: its status file is not `done`, the
                                  manifest is not `done`, no nmf_* or neuron_* table
                                  exists; prints what the killed task left (windows recorded done, parts of the window in
                                  flight, temporary files), which --resume must drop
"""

import json
import math
import os
import re
import sys

import pyarrow as pa
import pyarrow.dataset as ds

PARTS_PER_WINDOW = 100  # src/pipeline/runner/mod.rs: part seq = window * 100 + part
NMF_KEYS = {
    "nmf_components": (["factor", "layer", "neuron", "sign"], "weight"),
    "nmf_factors": (["doc_id", "position", "factor"], "value"),
    "nmf_top_contexts": (["factor", "rank", "doc_id", "position", "context"], "value"),
    "nmf_summary": (["iteration"], "relative_error"),
}


def tables(run):
    return sorted(
        d for d in os.listdir(run) if os.path.isdir(os.path.join(run, d)) and d != "shards"
    )


def read(run, table):
    return ds.dataset(os.path.join(run, table), format="parquet").to_table()


def sort_key(row):
    return tuple((v is None, tuple(v) if isinstance(v, list) else v) for v in row)


def close(p, q, tol):
    return abs(p - q) <= tol * (1.0 + abs(p))


def same_cell(x, y, tol=1e-5):
    if isinstance(x, float) and isinstance(y, float):
        return close(x, y, tol) or (math.isnan(x) and math.isnan(y))
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(same_cell(p, q, tol) for p, q in zip(x, y))
    return x == y


def tolerance(table, field):
    """1e-5 relative, or 1e-3 (about one f16 step) for f16 values and for the neuron tables'
    values, which are f16 activations and their statistics: a prompt's batch differs between a
    shard and the unsharded run, and f32 rounding that differs in the last bits can move an f16
    value by one step."""
    t = field.type
    while pa.types.is_list(t) or pa.types.is_large_list(t):
        t = t.value_type
    f16 = pa.types.is_float16(t) or (table.startswith("neuron_") and pa.types.is_floating(t))
    return 1e-3 if f16 else 1e-5


def rows_of(run, table):
    t = read(run, table)
    cols = t.column_names
    rows = [tuple(r[c] for c in cols) for r in t.to_pylist()]
    rows.sort(key=sort_key)
    return cols, rows, [tolerance(table, f) for f in t.schema]


def same_rows(a, b, table):
    ca, ra, tols = rows_of(a, table)
    cb, rb, _ = rows_of(b, table)
    if ca != cb:
        return f"columns differ: {ca} vs {cb}"
    if len(ra) != len(rb):
        return f"row counts differ: {len(ra)} vs {len(rb)}"
    for x, y in zip(ra, rb):
        if not all(same_cell(p, q, tol) for p, q, tol in zip(x, y, tols)):
            return f"rows differ:\n  {x}\n  {y}"
    return None


def same_nmf(a, b, table):
    keys, value = NMF_KEYS[table]
    ta, tb = read(a, table).to_pylist(), read(b, table).to_pylist()
    if len(ta) != len(tb):
        return f"row counts differ: {len(ta)} vs {len(tb)}", 0.0
    ta.sort(key=lambda r: sort_key([r[k] for k in keys]))
    tb.sort(key=lambda r: sort_key([r[k] for k in keys]))
    scale = max((abs(r[value]) for r in ta), default=0.0) or 1.0
    worst = 0.0
    for x, y in zip(ta, tb):
        if [x[k] for k in keys] != [y[k] for k in keys]:
            return f"keys differ: {x} vs {y}", worst
        worst = max(worst, abs(x[value] - y[value]) / scale)
    if worst > 1e-2:
        return f"{value} differs by {worst:.2e} of the largest", worst
    return None, worst


def cmd_rows(whole, sharded):
    names = tables(whole)
    bad = 0
    if names != tables(sharded):
        print(f"FAIL tables differ: {names} vs {tables(sharded)}")
        return 1
    for t in names:
        if t.startswith("nmf_"):
            err, worst = same_nmf(whole, sharded, t)
            what = f"{read(whole, t).num_rows} rows, max |diff| {worst:.1e} of the largest value"
        else:
            err = same_rows(whole, sharded, t)
            what = f"{read(whole, t).num_rows} rows"
        print(f"{'FAIL' if err else 'ok  '} {t}: {err or what}")
        bad += bool(err)
    return int(bad > 0)


def files(run, table):
    return sorted(os.listdir(os.path.join(run, table)))


def cmd_files(a, b):
    bad = 0
    if tables(a) != tables(b):
        print(f"FAIL tables differ: {tables(a)} vs {tables(b)}")
        return 1
    for t in tables(a):
        fa, fb = files(a, t), files(b, t)
        if fa != fb:
            err = f"file names differ: {fa} vs {fb}"
        elif t == "nmf_summary":
            strip = lambda run: [r[:-1] for r in rows_of(run, t)[1]]  # noqa: E731 (drop seconds)
            err = None if strip(a) == strip(b) else "rows differ (seconds aside)"
        else:
            diff = [
                f
                for f in fa
                if open(os.path.join(a, t, f), "rb").read() != open(os.path.join(b, t, f), "rb").read()
            ]
            err = f"{diff} differ" if diff else None
        what = f"{len(fa)} files identical" + (" (seconds aside)" if t == "nmf_summary" else "")
        print(f"{'FAIL' if err else 'ok  '} {t}: {err or what}")
        bad += bool(err)
    return int(bad > 0)


def cmd_killed(run, shard):
    manifest = json.load(open(os.path.join(run, "manifest.json")))
    n = manifest["shard_count"]
    status_path = os.path.join(run, "shards", f"shard-{shard:03}-of-{n:03}.json")
    status = json.load(open(status_path))
    done_windows = status["windows_done"]
    ok = True

    def check(cond, text):
        nonlocal ok
        ok &= bool(cond)
        print(f"{'ok  ' if cond else 'FAIL'} {text}")

    check(status["status"] != "done", f"shard {shard} status is `{status['status']}`, not done "
          f"({done_windows} windows recorded done, {status['prompts_done']} prompts)")
    check(manifest["status"] != "done", f"manifest status is `{manifest['status']}`, not done")
    corpus = [t for t in tables(run) if t.startswith(("nmf_", "neuron_"))]
    check(not corpus, f"no nmf_* or neuron_* table written ({corpus or 'none'})")
    finished = re.compile(rf"^part-{shard:03}-(\d+)\.parquet$")
    in_flight, tmp, kept = [], [], 0
    for t in tables(run):
        for f in files(run, t):
            m = finished.match(f)
            if m and int(m.group(1)) >= done_windows * PARTS_PER_WINDOW:
                in_flight.append(f"{t}/{f}")
            elif m:
                kept += 1
            elif f.startswith(".") and f"-{shard:03}-" in f:
                tmp.append(f"{t}/{f}")
    print(
        f"     shard {shard} left {kept} parts of its {done_windows} done windows, "
        f"{len(in_flight)} finished parts of the window in flight (not recorded done: --resume "
        f"deletes them), {len(tmp)} temporary files"
    )
    return 0 if ok else 1


def main(argv):
    if len(argv) == 3 and argv[0] == "rows":
        return cmd_rows(argv[1], argv[2])
    if len(argv) == 3 and argv[0] == "files":
        return cmd_files(argv[1], argv[2])
    if len(argv) == 3 and argv[0] == "killed":
        return cmd_killed(argv[1], int(argv[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
