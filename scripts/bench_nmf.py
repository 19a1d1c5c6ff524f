#!/usr/bin/env python3
"""`tokenlens nmf` vs scikit-learn's NMF on the same activations. Run by a developer by hand,
never by CI.

Given a run directory (with an `activations` table), builds the same matrix tokenlens factorizes
(rows = token positions, columns = the neurons of the chosen layers concatenated in ascending
layer order, negatives clipped or split) with pyarrow, and runs, each in its own process:
  sklearn-cd  sklearn.decomposition.NMF(solver="cd", init="random", random_state=0, k, max_iter)
              (what Ecco runs, Ecco's defaults but the iteration budget);
  minibatch   sklearn.decomposition.MiniBatchNMF(init="random", random_state=0, k, max_iter);
  tokenlens   `tokenlens nmf RUN_DIR` with the same k, layers, positions, negatives and
              max_iter, and --tol 0 (run until the error stops improving or max_iter).
Then, for each scikit-learn model, the time tokenlens needed to reach the same relative
reconstruction error ||X - WH||_F / ||X||_F (from its nmf_summary table: the first iteration at or
below scikit-learn's final error, and its `seconds`), and the peak memory of each process.
scikit-learn's error is recomputed in float64 from its W and H (its own `reconstruction_err_`,
computed in float32, is off by up to ~1% on activations; it is kept as
`sklearn_reported_relative_error`).

Times: scikit-learn's is `fit_transform` (its final error computation included); tokenlens' is
its solver's (nmf_summary.seconds: from the start of the factorization; the in-memory load of the
Parquet data is reported separately in `load_s`, like the Python side's `load_s`). Wall times of
the whole processes (Python: load + fit; tokenlens: scan, load, solve, write) are reported too.
Peak memory: each process's peak RSS (GNU time's %M, /usr/bin/time). For the Python
workers, which must first load the matrix, `fit_peak_rss_mb` is the peak during the fit alone
(VmHWM reset through /proc/self/clear_refs after loading).

Writes a single JSON document on stdout (and to --out) and a summary on stderr. Uses the
threads given by --threads (OMP/OpenBLAS/MKL/RAYON_NUM_THREADS) for every process.

Setup: $TOKENLENS_REFENV/bin/pip install scikit-learn pyarrow (the reference venv, see scripts/lib.sh)
Example (the 10x corpus; the quickstart's run is runs/quickstart):
  target/release/tokenlens run pipelines/bench-nmf-10x.yaml
  $REFENV_PY scripts/bench_nmf.py runs/bench-nmf-10x --k 10 --max-iter 200 \
      --seeds 0,1,2 --also-streamed --tokenlens target/release/tokenlens --out /tmp/bench_nmf.json
"""
import argparse
import glob
import json
import os
import platform
import subprocess
import sys
import tempfile
import time


TIME = "/usr/bin/time"  # GNU time (apt-get install time)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def parse_layers(spec, present):
    """Same syntax and meaning as `tokenlens nmf --layers`: all | 0,5,-1 | 0..30 | 0..=29;
    negative indices count from the table's highest layer + 1."""
    present = sorted(present)
    if spec.strip() == "all":
        return present
    n = present[-1] + 1
    out = []
    for item in (x.strip() for x in spec.split(",")):
        if ".." in item:
            a, b = item.split("..", 1)
            inclusive = b.startswith("=")
            a, b = int(a), int(b.lstrip("="))
            out.extend(range(a, b + 1 if inclusive else b))
        else:
            i = int(item)
            out.append(i + n if i < 0 else i)
    for layer in out:
        if layer not in present:
            sys.exit(f"layer {layer} is not in the activations table (layers {present})")
    return sorted(set(out))


def parts(run_dir, table):
    return sorted(glob.glob(os.path.join(run_dir, table, "part-*.parquet")))


def load_matrix(run_dir, layers_spec, positions, negative):
    """The matrix tokenlens factorizes, as float32 [positions, columns]."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = parts(run_dir, "activations")
    if not files:
        sys.exit(f"{run_dir}: no activations table")
    present = set()
    for f in files:
        present |= set(pc.unique(pq.read_table(f, columns=["layer"])["layer"]).to_pylist())
    layers = parse_layers(layers_spec, present)
    prompt = None
    if positions != "all":
        g = pa.concat_tables(
            [pq.read_table(f, columns=["doc_id", "prompt_tokens"]) for f in parts(run_dir, "generations")]
        )
        prompt = dict(zip(g["doc_id"].to_pylist(), g["prompt_tokens"].to_pylist()))
    codes = {}
    docs, pos, lay, blocks = [], [], [], []
    width = None
    for f in files:
        pf = pq.ParquetFile(f)
        for rg in range(pf.num_row_groups):
            t = pf.read_row_group(rg, columns=["doc_id", "position", "layer", "values"])
            t = t.filter(pc.is_in(t["layer"], value_set=pa.array(layers, pa.int32())))
            if t.num_rows == 0:
                continue
            d = t["doc_id"].to_pylist()
            p = t["position"].to_numpy()
            if prompt is not None:
                plen = np.array([prompt[x] for x in d])
                keep = p < plen if positions == "prompt" else p >= plen
                t = t.filter(pa.array(keep))
                d = [x for x, k in zip(d, keep) if k]
                p = p[keep]
                if t.num_rows == 0:
                    continue
            v = t["values"].combine_chunks()
            w = len(v[0])
            if width is None:
                width = w
            assert w == width, "layers of different widths are not supported here"
            vals = v.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, w)
            docs.append(np.array([codes.setdefault(x, len(codes)) for x in d], dtype=np.int64))
            pos.append(p.astype(np.int64))
            lay.append(t["layer"].to_numpy().astype(np.int64))
            blocks.append(vals)
    docs, pos, lay = np.concatenate(docs), np.concatenate(pos), np.concatenate(lay)
    vals = np.concatenate(blocks)
    del blocks
    order = np.lexsort((lay, pos, docs))
    n = len(layers)
    assert len(order) % n == 0, "some positions miss a chosen layer"
    x = vals[order].reshape(len(order) // n, n * width)
    del vals
    if negative == "split":
        x = np.hstack([np.maximum(x, 0), np.maximum(-x, 0)])
    else:
        np.maximum(x, 0, out=x)
    return np.ascontiguousarray(x, dtype=np.float32), layers


def vm_hwm_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def worker(a):
    """One scikit-learn fit in this process; prints its JSON record."""
    import numpy as np

    t0 = time.perf_counter()
    x, layers = load_matrix(a.run_dir, a.layers, a.positions, a.negative)
    load_s = time.perf_counter() - t0
    norm = float(np.sqrt(sum(float(np.einsum("ij,ij->", b, b)) for b in
                             (x[i:i + 256].astype(np.float64) for i in range(0, x.shape[0], 256)))))
    try:  # reset the peak RSS, so fit_peak is the fit's
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    import warnings

    from sklearn.decomposition import NMF, MiniBatchNMF
    from sklearn.exceptions import ConvergenceWarning

    warnings.simplefilter("ignore", ConvergenceWarning)
    if a.worker == "sklearn-cd":
        model = NMF(n_components=a.k, solver="cd", init="random", random_state=a.seed, max_iter=a.max_iter)
    else:
        model = MiniBatchNMF(n_components=a.k, init="random", random_state=a.seed, max_iter=a.max_iter)
    t0 = time.perf_counter()
    w = model.fit_transform(x)
    fit_s = time.perf_counter() - t0
    # scikit-learn's reconstruction_err_ is computed in the data's float32 (X - WH and its
    # squared norm): with activations up to ~3e3 next to a mean of ~0.1 that is off by ~1% of the
    # error. Recompute it in float64, block by block, like tokenlens' (whose formula is float64
    # on float32 products and agrees with this to ~1e-6).
    h = model.components_.astype(np.float64)
    w = w.astype(np.float64)
    sq = 0.0
    for i in range(0, x.shape[0], 256):
        d = x[i:i + 256].astype(np.float64) - w[i:i + 256] @ h
        sq += float(np.einsum("ij,ij->", d, d))
    print(
        json.dumps(
            {
                "rows": x.shape[0],
                "cols": x.shape[1],
                "layers": layers,
                "load_s": load_s,
                "fit_s": fit_s,
                "n_iter": int(model.n_iter_),
                "relative_error": float(np.sqrt(sq)) / norm,
                "sklearn_reported_relative_error": float(model.reconstruction_err_) / norm,
                "fit_peak_rss_mb": vm_hwm_mb() if reset else None,
            }
        )
    )


def run_measured(cmd, env):
    """Runs a command under GNU time; returns (stdout, wall seconds, peak RSS in MB of that
    process alone). Not os.wait4 on a child of this script: a child's ru_maxrss counts the pages
    it shared with this (numpy-loaded) process before exec."""
    with tempfile.NamedTemporaryFile("r") as t:
        t0 = time.perf_counter()
        p = subprocess.run([TIME, "-f", "%M", "-o", t.name] + cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr}")
        peak_kb = int(t.read().strip().splitlines()[-1])
    return p.stdout, wall, peak_kb / 1024


def summary_table(run_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.concat_tables([pq.read_table(f) for f in parts(run_dir, "nmf_summary")])
    return t["iteration"].to_pylist(), t["relative_error"].to_pylist(), t["seconds"].to_pylist()


def time_to(errors, seconds, target):
    for i, (e, s) in enumerate(zip(errors, seconds)):
        if e <= target:
            return i + 1, s
    return None, None


def compare(sk, errs, secs, tl_wall, tl_peak):
    it, s = time_to(errs, secs, sk["relative_error"])
    # Within 0.1% of it: two runs that end in the same local minimum differ by ~1e-4 in how far
    # down its flat bottom they got, which decides "reached" alone.
    it1, s1 = time_to(errs, secs, sk["relative_error"] * 1.001)
    return {"target_error": sk["relative_error"], "tokenlens_iteration": it, "tokenlens_seconds": s,
            "time_ratio": (s / sk["fit_s"]) if s is not None else None,
            "tokenlens_iteration_within_0.1pct": it1,
            "time_ratio_within_0.1pct": (s1 / sk["fit_s"]) if s1 is not None else None,
            "wall_ratio": tl_wall / sk["wall_s"], "peak_rss_ratio": tl_peak / sk["peak_rss_mb"],
            "final_error_ratio": errs[-1] / sk["relative_error"]}


def describe(name, sk, cmp):
    reached = (f"reached at iteration {cmp['tokenlens_iteration']} after {cmp['tokenlens_seconds']:.2f} s"
               f" = {cmp['time_ratio']:.2f}x its time" if cmp["time_ratio"] is not None else "NOT reached")
    if cmp["time_ratio_within_0.1pct"] is not None:
        reached += (f" (within 0.1%: iteration {cmp['tokenlens_iteration_within_0.1pct']}, "
                    f"{cmp['time_ratio_within_0.1pct']:.3f}x)")
    return (f"{name}: error {sk['relative_error']:.5f} in {sk['fit_s']:.2f} s; tokenlens {reached}; "
            f"tokenlens final error {cmp['final_error_ratio']:.4f}x; whole process "
            f"{cmp['wall_ratio']:.2f}x the wall time, {cmp['peak_rss_ratio']:.2f}x the peak RSS")


def median(v):
    v = sorted(v)
    return None if not v else (v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--max-iter", type=int, default=200)
    ap.add_argument("--layers", default="all")
    ap.add_argument("--positions", default="all", choices=["all", "prompt", "generated"])
    ap.add_argument("--negative", default="clip", choices=["clip", "split"])
    ap.add_argument("--seeds", default="0",
                    help="comma-separated; each seed is one scikit-learn NMF (random_state) and "
                         "one tokenlens run (--seed); MiniBatchNMF runs with the first only")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--tokenlens", default="target/release/tokenlens")
    ap.add_argument("--tokenlens-args", default="", help="extra arguments, e.g. '--memory-budget 0'")
    ap.add_argument("--also-streamed", action="store_true",
                    help="also run tokenlens with --memory-budget 0 (streamed) for each seed")
    ap.add_argument("--skip", default="", help="comma-separated: sklearn-cd, minibatch")
    ap.add_argument("--out")
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--worker", choices=["sklearn-cd", "minibatch"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)

    env = dict(os.environ)
    for v in ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"]:
        env[v] = str(a.threads)
    common = ["--k", str(a.k), "--max-iter", str(a.max_iter), "--layers", a.layers,
              "--positions", a.positions, "--negative", a.negative]
    import numpy
    import sklearn

    result = {"run_dir": a.run_dir, "k": a.k, "max_iter": a.max_iter, "layers": a.layers,
              "positions": a.positions, "negative": a.negative, "threads": a.threads,
              "python": platform.python_version(),
              "versions": {"sklearn": sklearn.__version__, "numpy": numpy.__version__},
              "seeds": []}
    skip = set(filter(None, a.skip.split(",")))
    seeds = [int(x) for x in a.seeds.split(",")]

    def python_worker(name, seed):
        log(f"{name} (random_state {seed}): loading and fitting ...")
        cmd = [sys.executable, os.path.abspath(__file__), a.run_dir, "--worker", name,
               "--seed", str(seed)] + common
        out, wall, peak = run_measured(cmd, env)
        rec = json.loads(out.strip().splitlines()[-1])
        rec.update(wall_s=wall, peak_rss_mb=peak)
        log(f"  {rec['rows']} x {rec['cols']}, {rec['n_iter']} iterations, relative error "
            f"{rec['relative_error']:.5f}, fit {rec['fit_s']:.2f} s, peak RSS {peak:.0f} MB")
        return rec

    def tokenlens(seed, extra=()):
        log(f"tokenlens nmf (--seed {seed} {' '.join(extra)}) ...")
        cmd = [os.path.abspath(a.tokenlens), "nmf", a.run_dir, "--components", str(a.k),
               "--layers", a.layers, "--positions", a.positions, "--negative", a.negative,
               "--max-iter", str(a.max_iter), "--tol", "0", "--seed", str(seed),
               "--quiet"] + a.tokenlens_args.split() + list(extra)
        out, wall, peak = run_measured(cmd, env)
        its, errs, secs = summary_table(a.run_dir)
        log(f"  {out.strip().splitlines()[0]}\n  peak RSS {peak:.0f} MB")
        return {"stdout": out.strip(), "wall_s": wall, "peak_rss_mb": peak, "iterations": len(its),
                "final_relative_error": errs[-1], "solve_s": secs[-1], "errors": errs,
                "seconds": secs}

    for n, seed in enumerate(seeds):
        rec = {"seed": seed}
        for name in ["sklearn-cd", "minibatch"]:
            if name not in skip and (name == "sklearn-cd" or n == 0):
                rec[name] = python_worker(name, seed)
        variants = [("", ())] + ([("streamed_", ("--memory-budget", "0"))] if a.also_streamed else [])
        for prefix, extra in variants:
            tl = rec[f"{prefix}tokenlens"] = tokenlens(seed, extra)
            for name in ["sklearn-cd", "minibatch"]:
                if name in rec:
                    cmp = rec[f"{prefix}vs_{name}"] = compare(
                        rec[name], tl["errors"], tl["seconds"], tl["wall_s"], tl["peak_rss_mb"])
                    log(prefix + describe(name, rec[name], cmp))
        result["seeds"].append(rec)

    runs = [r for r in result["seeds"] if "sklearn-cd" in r]
    if runs:
        ratios = [r["vs_sklearn-cd"]["time_ratio"] for r in runs]
        reached = [x for x in ratios if x is not None]
        result["summary"] = {
            "seeds": len(runs),
            "reached": len(reached),
            "median_time_ratio_where_reached": median(reached),
            "median_time_ratio_within_0.1pct": median(
                [r["vs_sklearn-cd"]["time_ratio_within_0.1pct"] for r in runs
                 if r["vs_sklearn-cd"]["time_ratio_within_0.1pct"] is not None]),
            "sklearn_cd_final_errors": [r["sklearn-cd"]["relative_error"] for r in runs],
            "tokenlens_final_errors": [r["tokenlens"]["final_relative_error"] for r in runs],
            "median_final_error_ratio": median([r["tokenlens"]["final_relative_error"] for r in runs])
            / median([r["sklearn-cd"]["relative_error"] for r in runs]),
            "median_peak_rss_ratio": median([r["vs_sklearn-cd"]["peak_rss_ratio"] for r in runs]),
            "median_wall_ratio": median([r["vs_sklearn-cd"]["wall_ratio"] for r in runs]),
        }
        if a.also_streamed:
            st = [r["streamed_vs_sklearn-cd"]["time_ratio"] for r in runs]
            result["summary"]["streamed"] = {
                "reached": len([x for x in st if x is not None]),
                "median_time_ratio_where_reached": median([x for x in st if x is not None]),
                "median_time_ratio_within_0.1pct": median(
                    [r["streamed_vs_sklearn-cd"]["time_ratio_within_0.1pct"] for r in runs
                     if r["streamed_vs_sklearn-cd"]["time_ratio_within_0.1pct"] is not None]),
                "median_peak_rss_ratio": median([r["streamed_vs_sklearn-cd"]["peak_rss_ratio"] for r in runs]),
                "median_wall_ratio": median([r["streamed_vs_sklearn-cd"]["wall_ratio"] for r in runs]),
            }
        log("summary vs sklearn-cd: " + json.dumps(result["summary"]))
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
