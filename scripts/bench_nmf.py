#!/usr/bin/env python3
"""`tokenlens nmf` vs scikit-learn's NMF on the same activations. Run by a developer by hand,
never by CI (scripts/bench.sh nmf runs it on the quickstart corpus and the 10x one).

Given a run directory (with an `activations` table), builds the same matrix tokenlens factorizes
(rows = token positions, columns = the neurons of the chosen layers concatenated in ascending
layer order, negatives clipped or split) with pyarrow, and runs, each in its own process, per
seed (= round; the side that runs first alternates: tokenlens in odd rounds, scikit-learn in even):
  sklearn-cd  sklearn.decomposition.NMF(solver="cd", k, max_iter) (what Ecco runs; its default tol);
  minibatch   sklearn.decomposition.MiniBatchNMF(k, max_iter), first seed only;
  tokenlens   `tokenlens nmf RUN_DIR` with the same k, layers, positions, negatives and max_iter,
              --tol 0 (all max_iter iterations) and its default --sweeps (8);
  tokenlens-equal-work
              `tokenlens nmf --sweeps 1 --max-iter <scikit-learn's n_iter_>`: the same algorithm
              (one HALS sweep over W, then one over H, per pass) and the same number of passes as
              scikit-learn's cd from the same start;
  streamed    (--also-streamed) tokenlens with --memory-budget 0.

Equal work. One tokenlens iteration is one pass over X: X H^T and W^T X (the two k x rows x cols
products, the cost of an iteration of either solver) with `--sweeps` HALS sweeps over the rows of
W per tile and over H after the pass (src/analysis/nmf/mod.rs). scikit-learn's cd iteration is the
same two products with one sweep each. So at equal iterations tokenlens does sweeps-times the
(cheap, k^2 per row or column) coordinate updates on the same products; the equal-work run above
does exactly scikit-learn's. Both are reported.

Same start. tokenlens' random initialization (scikit-learn's formula, sqrt(mean(X) / k) * |N(0,1)|,
drawn from tokenlens' SplitMix64 with Box-Muller: src/analysis/nmf/mod.rs, src/numerics/rng.rs) is
reproduced here bit for bit (`tokenlens_init`) in tokenlens' row and column order (read from a
one-iteration probe run's tables) and given to scikit-learn as init="custom" (`--init tokenlens`,
the default; `--init random` gives scikit-learn its own init="random" with random_state=seed).
The check: tokenlens' first-iteration error with --sweeps 1 against one HALS iteration from the
reproduced start computed here in float64 (`init_check`, relative difference ~1e-6 when the start
is the same).

Errors. Every reported error is ||X - WH||_F / ||X||_F computed by the same code (`rel_error`,
float64, block by block) from each side's final W and H: scikit-learn's from fit_transform and
components_, tokenlens' read back from its nmf_factors (W) and nmf_components (H) tables mapped to
this matrix's rows and columns by their keys. tokenlens' own per-iteration errors (nmf_summary)
give the time it needed to reach scikit-learn's final error: the first iteration at or below it,
and its `seconds`; how far nmf_summary's final error is from the recomputed one is reported too
(`summary_vs_recomputed`).

Times: scikit-learn's is `fit_transform`; tokenlens' is its solver's (nmf_summary.seconds: from the
start of the factorization, loading excluded); the whole processes' wall times are reported too.

Memory: the fit's own peak, not the loader's. The scikit-learn worker loads X, records its RSS,
resets the peak (VmHWM, through /proc/self/clear_refs; a 5 ms RSS sampler thread as well), fits,
and reports the fit's peak over the loaded state (`fit_delta_mb`); `fit_footprint_mb` = X's bytes
+ that delta is what the fit needs with X in memory. tokenlens' figure is its whole process' peak
(GNU time %M: X, which it holds in memory when it fits --memory-budget, the solver, its loader);
`peak_rss_ratio` = tokenlens' peak / scikit-learn's fit footprint. The Python processes' whole
peaks (GNU time) are kept too.

Writes a single JSON document on stdout (and to --out) and a summary on stderr. Uses the
threads given by --threads (OMP/OpenBLAS/MKL/RAYON_NUM_THREADS) for every process. The factors
go to --work-dir (default: a temporary directory, removed at the end).

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
import shutil
import subprocess
import sys
import tempfile
import threading
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
    """The matrix tokenlens factorizes, as float32 [positions, columns], the layers, and the keys
    of its rows, (doc_id, position), and of its columns, (layer, neuron, sign)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = parts(run_dir, "activations")
    if not files:
        sys.exit(f"error: {run_dir}: no activations table ({run_dir}/activations/part-*.parquet)")
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
    names = {c: d for d, c in codes.items()}
    rows = [(names[int(d)], int(p)) for d, p in zip(docs[order[::n]], pos[order[::n]])]
    signs = [1, -1] if negative == "split" else [1]
    cols = [(layer, neuron, sign) for sign in signs for layer in layers for neuron in range(width)]
    return np.ascontiguousarray(x, dtype=np.float32), layers, rows, cols


def tokenlens_init(rows, cols, k, seed, mean):
    """tokenlens' random start (src/analysis/nmf/mod.rs, `nmf`): H [k, cols] then W [rows, k],
    each value (|z| as f32) * scale with z = sqrt(-2 ln u1) cos(2 pi u2) from consecutive
    SplitMix64 draws u1, u2 (src/numerics/rng.rs; u1 floored at 1e-300) and scale =
    sqrt(mean(X) / k) as f32. In tokenlens' row and column order."""
    import numpy as np

    golden = np.uint64(0x9E3779B97F4A7C15)

    def draws(start, n):
        i = np.arange(start + 1, start + n + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            z = np.uint64(seed) + i * golden
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)

    scale = np.float32(np.sqrt(mean / k))

    def abs_normal(start, n):
        u = draws(start, 2 * n)
        u1, u2 = np.maximum(u[0::2], 1e-300), u[1::2]
        z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
        return np.abs(z).astype(np.float32) * scale

    h = abs_normal(0, k * cols).reshape(k, cols)
    w = abs_normal(2 * k * cols, rows * k).reshape(rows, k)
    return w, h


def x_stats(x):
    """(||X||_F^2, sum of X), in float64, block by block."""
    import numpy as np

    sq = sm = 0.0
    for i in range(0, x.shape[0], 256):
        b = x[i:i + 256].astype(np.float64)
        sq += float(np.einsum("ij,ij->", b, b))
        sm += float(b.sum())
    return sq, sm


def rel_error(x, w, h, norm_sq):
    """||X - WH||_F / ||X||_F in float64, block by block: the one error formula for both sides."""
    import numpy as np

    h = h.astype(np.float64)
    sq = 0.0
    for i in range(0, x.shape[0], 256):
        d = x[i:i + 256].astype(np.float64) - w[i:i + 256].astype(np.float64) @ h
        sq += float(np.einsum("ij,ij->", d, d))
    return float(np.sqrt(sq / norm_sq))


def hals_iteration(x, w, h):
    """One HALS iteration in float64 (one sweep over W's columns, then one over H's rows), as
    tokenlens with --sweeps 1 and scikit-learn's cd do it: for the init check."""
    import numpy as np

    w, h = w.astype(np.float64), h.astype(np.float64)
    k = w.shape[1]
    xht = np.zeros((x.shape[0], k))
    for i in range(0, x.shape[0], 256):
        xht[i:i + 256] = x[i:i + 256].astype(np.float64) @ h.T
    hht = h @ h.T
    for j in range(k):
        if hht[j, j] > 0:
            w[:, j] = np.maximum(0.0, w[:, j] + (xht[:, j] - w @ hht[:, j]) / hht[j, j])
    wtx = np.zeros_like(h)
    for i in range(0, x.shape[0], 256):
        wtx += w[i:i + 256].T @ x[i:i + 256].astype(np.float64)
    wtw = w.T @ w
    for j in range(k):
        if wtw[j, j] > 0:
            h[j] = np.maximum(0.0, h[j] + (wtx[j] - wtw[j] @ h) / wtw[j, j])
    return w, h


def permutations(layout, rows, cols):
    """Indices into tokenlens' order of this matrix's rows and columns (layout: the probe's keys)."""
    import numpy as np

    r_index = {tuple(key): i for i, key in enumerate(layout["rows"])}
    c_index = {tuple(key): i for i, key in enumerate(layout["cols"])}
    missing = [key for key in rows if tuple(key) not in r_index][:3] + [key for key in cols if tuple(key) not in c_index][:3]
    if missing or len(r_index) != len(rows) or len(c_index) != len(cols):
        sys.exit(f"error: tokenlens' matrix ({len(r_index)} x {len(c_index)}) is not this one "
                 f"({len(rows)} x {len(cols)}); e.g. missing keys {missing}")
    return (np.array([r_index[tuple(key)] for key in rows]), np.array([c_index[tuple(key)] for key in cols]))


def vm_status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024
    return out


class RssSampler:
    """The largest VmRSS seen every 5 ms while running (a cross-check of the reset VmHWM)."""

    def __init__(self):
        self.peak, self._stop = 0.0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, vm_status()["VmRSS"])
            time.sleep(0.005)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, vm_status()["VmRSS"])


def load_x(a):
    t0 = time.perf_counter()
    x, layers, rows, cols = load_matrix(a.run_dir, a.layers, a.positions, a.negative)
    return x, layers, rows, cols, time.perf_counter() - t0


def worker(a):
    """One scikit-learn fit in this process; saves W and H to --factors, prints its JSON record."""
    import gc
    import warnings

    import numpy as np
    from sklearn.decomposition import NMF, MiniBatchNMF
    from sklearn.exceptions import ConvergenceWarning

    x, layers, rows, cols, load_s = load_x(a)
    init = "random"
    w0 = h0 = None
    if a.init == "tokenlens":
        with open(a.layout) as f:
            pr, pc = permutations(json.load(f), rows, cols)
        _, total = x_stats(x)
        w_tl, h_tl = tokenlens_init(x.shape[0], x.shape[1], a.k, a.seed, total / x.size)
        w0, h0 = np.ascontiguousarray(w_tl[pr]), np.ascontiguousarray(h_tl[:, pc])
        del w_tl, h_tl
        init = "custom"
    warnings.simplefilter("ignore", ConvergenceWarning)
    if a.worker == "sklearn-cd":
        model = NMF(n_components=a.k, solver="cd", init=init, random_state=a.seed, max_iter=a.max_iter)
    else:
        model = MiniBatchNMF(n_components=a.k, init=init, random_state=a.seed, max_iter=a.max_iter)
    gc.collect()
    before = vm_status()["VmRSS"]
    try:  # reset the peak RSS, so VmHWM after the fit is the fit's
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    with RssSampler() as sampler:
        t0 = time.perf_counter()
        w = model.fit_transform(x, W=w0, H=h0) if init == "custom" else model.fit_transform(x)
        fit_s = time.perf_counter() - t0
    hwm = vm_status()["VmHWM"] if reset else 0.0
    fit_peak = max(hwm, sampler.peak)
    np.savez(a.factors, w=w.astype(np.float32), h=model.components_.astype(np.float32))
    print(json.dumps({
        "rows": x.shape[0], "cols": x.shape[1], "layers": layers, "init": a.init,
        "load_s": load_s, "fit_s": fit_s, "n_iter": int(model.n_iter_),
        "sklearn_reported_error": float(model.reconstruction_err_),
        "matrix_mb": x.nbytes / 2**20, "rss_before_fit_mb": before, "fit_peak_rss_mb": fit_peak,
        "fit_delta_mb": fit_peak - before, "fit_footprint_mb": x.nbytes / 2**20 + fit_peak - before,
        "vmhwm_reset": reset, "sampled_peak_rss_mb": sampler.peak,
    }))


def evaluate(a):
    """The errors of every saved factor pair, by one formula, and the init checks. Factors saved
    in tokenlens' order (the probe's) are mapped to this matrix's rows and columns first."""
    import numpy as np

    x, _, rows, cols, _ = load_x(a)
    norm_sq, total = x_stats(x)
    with open(a.evaluate) as f:
        job = json.load(f)
    out = {"errors": {}, "init_checks": {}}
    with open(job["layout"]) as f:
        pr, pc = permutations(json.load(f), rows, cols)
    for name, (path, order) in job["factors"].items():
        z = np.load(path)
        w, h = (z["w"][pr], z["h"][:, pc]) if order == "tokenlens" else (z["w"], z["h"])
        out["errors"][name] = rel_error(x, w, h, norm_sq)
    for seed in job.get("init_seeds", []):
        w_tl, h_tl = tokenlens_init(x.shape[0], x.shape[1], a.k, int(seed), total / x.size)
        w, h = hals_iteration(x, w_tl[pr], h_tl[:, pc])
        out["init_checks"][str(seed)] = rel_error(x, w, h, norm_sq)
    print(json.dumps(out))


def run_measured(cmd, env):
    """Runs a command under GNU time; returns (stdout, wall seconds, peak RSS in MB of that
    process alone). Not os.wait4 on a child of this script: a child's ru_maxrss counts the pages
    it shared with this (numpy-loaded) process before exec."""
    with tempfile.NamedTemporaryFile("r") as t:
        t0 = time.perf_counter()
        p = subprocess.run([TIME, "-f", "%M", "-o", t.name] + cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            sys.exit(f"error: {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr}")
        peak_kb = int(t.read().strip().splitlines()[-1])
    return p.stdout, wall, peak_kb / 1024


def read_parts(run_dir, table, columns=None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = parts(run_dir, table)
    if not files:
        sys.exit(f"error: {run_dir}: no {table} table after tokenlens nmf")
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])


def tokenlens_tables(run_dir, k):
    """nmf_summary (iterations, errors, seconds) and W, H in tokenlens' order with their keys."""
    import numpy as np

    t = read_parts(run_dir, "nmf_summary")
    its, errs, secs = t["iteration"].to_pylist(), t["relative_error"].to_pylist(), t["seconds"].to_pylist()
    f = read_parts(run_dir, "nmf_factors", ["doc_id", "position", "factor", "value"])
    factor = f["factor"].to_numpy()
    if len(factor) % k or not (factor.reshape(-1, k) == np.arange(k)).all():
        sys.exit(f"error: {run_dir}/nmf_factors is not k = {k} rows per position in factor order")
    w = f["value"].to_numpy().astype(np.float32).reshape(-1, k)
    row_keys = list(zip(f["doc_id"].to_pylist()[::k], f["position"].to_pylist()[::k]))
    c = read_parts(run_dir, "nmf_components", ["factor", "layer", "neuron", "sign", "weight"])
    h = c["weight"].to_numpy().astype(np.float32).reshape(k, -1)
    n = h.shape[1]
    if not (c["factor"].to_numpy().reshape(k, n) == np.arange(k)[:, None]).all():
        sys.exit(f"error: {run_dir}/nmf_components is not in factor-major order")
    col_keys = list(zip(c["layer"].to_pylist()[:n], c["neuron"].to_pylist()[:n], c["sign"].to_pylist()[:n]))
    return {"iterations": its, "errors": errs, "seconds": secs, "w": w, "h": h, "rows": row_keys, "cols": col_keys}


def time_to(errors, seconds, target):
    for i, (e, s) in enumerate(zip(errors, seconds)):
        if e <= target:
            return i + 1, s
    return None, None


def compare(sk, tl):
    it, s = time_to(tl["errors"], tl["seconds"], sk["relative_error"])
    # Within 0.1% of it: two runs that end in the same local minimum differ by ~1e-4 in how far
    # down its flat bottom they got, which decides "reached" alone.
    it1, s1 = time_to(tl["errors"], tl["seconds"], sk["relative_error"] * 1.001)
    return {"target_error": sk["relative_error"], "tokenlens_iteration": it, "tokenlens_seconds": s,
            "time_ratio": (s / sk["fit_s"]) if s is not None else None,
            "tokenlens_iteration_within_0.1pct": it1,
            "time_ratio_within_0.1pct": (s1 / sk["fit_s"]) if s1 is not None else None,
            "solve_ratio": tl["solve_s"] / sk["fit_s"],
            "wall_ratio": tl["wall_s"] / sk["wall_s"],
            "peak_rss_ratio": tl["peak_rss_mb"] / sk["fit_footprint_mb"],
            "final_error_ratio": tl["relative_error"] / sk["relative_error"]}


def describe(name, sk, cmp):
    reached = (f"reached at iteration {cmp['tokenlens_iteration']} after {cmp['tokenlens_seconds']:.2f} s"
               f" = {cmp['time_ratio']:.3f}x its time" if cmp["time_ratio"] is not None else "NOT reached")
    if cmp["time_ratio_within_0.1pct"] is not None:
        reached += (f" (within 0.1%: iteration {cmp['tokenlens_iteration_within_0.1pct']}, "
                    f"{cmp['time_ratio_within_0.1pct']:.3f}x)")
    return (f"{name}: error {sk['relative_error']:.5f} in {sk['fit_s']:.2f} s ({sk['n_iter']} iterations); "
            f"tokenlens {reached}; tokenlens final error {cmp['final_error_ratio']:.4f}x; peak RSS "
            f"{cmp['peak_rss_ratio']:.2f}x the fit's footprint; whole process {cmp['wall_ratio']:.2f}x the wall time")


def median(v):
    v = sorted(v)
    return None if not v else (v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2)


def spread(v):
    v = [x for x in v if x is not None]
    return {"min": min(v), "median": median(v), "max": max(v), "n": len(v)} if v else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--max-iter", type=int, default=200)
    ap.add_argument("--layers", default="all")
    ap.add_argument("--positions", default="all", choices=["all", "prompt", "generated"])
    ap.add_argument("--negative", default="clip", choices=["clip", "split"])
    ap.add_argument("--seeds", default="0",
                    help="comma-separated; each seed is one round: one scikit-learn NMF and one tokenlens "
                         "run (--seed) from the same start; MiniBatchNMF runs with the first only")
    ap.add_argument("--init", default="tokenlens", choices=["tokenlens", "random"],
                    help="scikit-learn's start: tokenlens' (init='custom', default) or its own init='random'")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--tokenlens", default="target/release/tokenlens")
    ap.add_argument("--tokenlens-args", default="", help="extra arguments, e.g. '--memory-budget 0'")
    ap.add_argument("--also-streamed", action="store_true",
                    help="also run tokenlens with --memory-budget 0 (streamed) for each seed")
    ap.add_argument("--no-equal-work", action="store_true", help="skip the --sweeps 1 tokenlens run")
    ap.add_argument("--skip", default="", help="comma-separated: sklearn-cd, minibatch")
    ap.add_argument("--work-dir", help="where the factors go (default: a temporary directory, removed)")
    ap.add_argument("--out")
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--worker", choices=["sklearn-cd", "minibatch"], help=argparse.SUPPRESS)
    ap.add_argument("--layout", help=argparse.SUPPRESS)
    ap.add_argument("--factors", help=argparse.SUPPRESS)
    ap.add_argument("--evaluate", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    if a.evaluate:
        return evaluate(a)

    if not os.path.isdir(a.run_dir):
        sys.exit(f"error: run directory {a.run_dir} not found")
    if not parts(a.run_dir, "activations"):
        sys.exit(f"error: {a.run_dir}: no activations table ({a.run_dir}/activations/part-*.parquet)")
    if not os.access(a.tokenlens, os.X_OK):
        sys.exit(f"error: tokenlens binary {a.tokenlens} not found (cargo build --release)")
    if not os.access(TIME, os.X_OK):
        sys.exit(f"error: GNU time not found at {TIME} (apt-get install time)")
    work = a.work_dir or tempfile.mkdtemp(prefix="bench-nmf-")
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ)
    for v in ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"]:
        env[v] = str(a.threads)
    common = ["--k", str(a.k), "--max-iter", str(a.max_iter), "--layers", a.layers,
              "--positions", a.positions, "--negative", a.negative]
    import numpy
    import sklearn

    result = {"comparison": "nmf", "run_dir": a.run_dir, "k": a.k, "max_iter": a.max_iter, "layers": a.layers,
              "positions": a.positions, "negative": a.negative, "threads": a.threads, "init": a.init,
              "python": platform.python_version(),
              "versions": {"sklearn": sklearn.__version__, "numpy": numpy.__version__},
              "error_formula": "||X - WH||_F / ||X||_F in float64 by bench_nmf.py's rel_error, from each side's final W "
                               "and H (scikit-learn: fit_transform, components_; tokenlens: nmf_factors, nmf_components)",
              "equal_work": "one tokenlens iteration = one pass over X (X H^T and W^T X, the same two products as one "
                            "scikit-learn cd iteration) + --sweeps HALS sweeps over W and over H (scikit-learn: 1 each); "
                            "tokenlens-equal-work runs --sweeps 1 for scikit-learn's n_iter_ iterations",
              "memory": "scikit-learn: the fit's peak over the loaded state (fit_delta_mb) + X's bytes = "
                        "fit_footprint_mb; tokenlens: its whole process' peak (GNU time); peak_rss_ratio = "
                        "tokenlens / scikit-learn's footprint",
              "seeds": []}
    skip = set(filter(None, a.skip.split(",")))
    seeds = [int(x) for x in a.seeds.split(",")]
    factors = {}

    def tokenlens(seed, extra=(), max_iter=None, label=""):
        log(f"tokenlens nmf {label}(--seed {seed} {' '.join(extra)}) ...")
        cmd = [os.path.abspath(a.tokenlens), "nmf", a.run_dir, "--components", str(a.k),
               "--layers", a.layers, "--positions", a.positions, "--negative", a.negative,
               "--max-iter", str(max_iter or a.max_iter), "--tol", "0", "--seed", str(seed),
               "--quiet"] + a.tokenlens_args.split() + list(extra)
        out, wall, peak = run_measured(cmd, env)
        return cmd, out, wall, peak, tokenlens_tables(a.run_dir, a.k)

    # The probe: tokenlens' row and column order (its tables are written in it), for its start.
    layout_path = os.path.join(work, "layout.json")
    _, _, _, _, probe = tokenlens(seeds[0], ("--sweeps", "1"), max_iter=1, label="probe, 1 iteration ")
    with open(layout_path, "w") as f:
        json.dump({"rows": probe["rows"], "cols": probe["cols"]}, f)
    result["rows"], result["cols"] = len(probe["rows"]), len(probe["cols"])

    def tokenlens_run(seed, name, extra=(), max_iter=None):
        cmd, out, wall, peak, tl = tokenlens(seed, extra, max_iter, f"[{name}] ")
        path = os.path.join(work, f"seed{seed}.{name}.npz")
        pr, pc = permutations({"rows": tl["rows"], "cols": tl["cols"]}, probe["rows"], probe["cols"])
        # Saved in the probe's (tokenlens') order; the evaluation maps them to the matrix's.
        numpy.savez(path, w=tl["w"][pr], h=tl["h"][:, pc])
        factors[f"{seed}.{name}"] = (path, "tokenlens")
        log(f"  {out.strip().splitlines()[0]}\n  peak RSS {peak:.0f} MB")
        return {"command": " ".join(cmd[1:]), "stdout": out.strip(), "wall_s": wall, "peak_rss_mb": peak,
                "iterations": len(tl["iterations"]), "summary_final_error": tl["errors"][-1],
                "solve_s": tl["seconds"][-1], "errors": tl["errors"], "seconds": tl["seconds"]}

    def python_worker(name, seed):
        log(f"{name} (seed {seed}, init {a.init}): loading and fitting ...")
        path = os.path.join(work, f"seed{seed}.{name}.npz")
        cmd = [sys.executable, os.path.abspath(__file__), a.run_dir, "--worker", name, "--seed", str(seed),
               "--init", a.init, "--layout", layout_path, "--factors", path] + common
        out, wall, peak = run_measured(cmd, env)
        rec = json.loads(out.strip().splitlines()[-1])
        rec.update(wall_s=wall, process_peak_rss_mb=peak)
        factors[f"{seed}.{name}"] = (path, "matrix")
        log(f"  {rec['rows']} x {rec['cols']}, {rec['n_iter']} iterations, fit {rec['fit_s']:.2f} s, "
            f"fit footprint {rec['fit_footprint_mb']:.0f} MB (X {rec['matrix_mb']:.0f} MB + "
            f"{rec['fit_delta_mb']:.0f} MB), process peak RSS {peak:.0f} MB")
        return rec

    for n, seed in enumerate(seeds):
        rec = {"seed": seed, "round": n + 1, "first": "tokenlens" if n % 2 == 0 else "scikit-learn"}
        sk_names = [x for x in ["sklearn-cd", "minibatch"] if x not in skip and (x == "sklearn-cd" or n == 0)]
        if n % 2 == 0:
            rec["tokenlens"] = tokenlens_run(seed, "tokenlens")
            for name in sk_names:
                rec[name] = python_worker(name, seed)
        else:
            for name in sk_names:
                rec[name] = python_worker(name, seed)
            rec["tokenlens"] = tokenlens_run(seed, "tokenlens")
        if a.also_streamed:
            rec["streamed_tokenlens"] = tokenlens_run(seed, "streamed_tokenlens", ("--memory-budget", "0"))
        if not a.no_equal_work:
            n_iter = rec["sklearn-cd"]["n_iter"] if "sklearn-cd" in rec else a.max_iter
            rec["equal_work_tokenlens"] = tokenlens_run(seed, "equal_work_tokenlens", ("--sweeps", "1"), n_iter)
        result["seeds"].append(rec)

    # One process computes every error (and the init checks) with the same code.
    job = os.path.join(work, "evaluate.json")
    with open(job, "w") as f:
        json.dump({"factors": factors, "layout": layout_path,
                   "init_seeds": seeds if not a.no_equal_work else []}, f)
    log("computing every error in float64 ...")
    out, _, _ = run_measured([sys.executable, os.path.abspath(__file__), a.run_dir, "--evaluate", job] + common, env)
    ev = json.loads(out.strip().splitlines()[-1])
    for rec in result["seeds"]:
        seed = rec["seed"]
        for name in ["sklearn-cd", "minibatch", "tokenlens", "streamed_tokenlens", "equal_work_tokenlens"]:
            if name in rec:
                rec[name]["relative_error"] = ev["errors"][f"{seed}.{name}"]
                if "summary_final_error" in rec[name]:
                    rec[name]["summary_vs_recomputed"] = rec[name]["summary_final_error"] / rec[name]["relative_error"] - 1
        if "equal_work_tokenlens" in rec:
            ours = rec["equal_work_tokenlens"]["errors"][0]
            py = ev["init_checks"][str(seed)]
            rec["init_check"] = {"tokenlens_first_iteration_error": ours, "reproduced_start_first_iteration_error": py,
                                 "relative_difference": abs(ours / py - 1), "same_start": abs(ours / py - 1) < 1e-4}
            log(f"seed {seed}: init check: tokenlens' first --sweeps 1 iteration {ours:.6f}, from the reproduced "
                f"start {py:.6f} ({'same start' if rec['init_check']['same_start'] else 'DIFFERENT START'})")
        for prefix in ["", "streamed_", "equal_work_"]:
            tl = rec.get(f"{prefix}tokenlens")
            for name in ["sklearn-cd"] + (["minibatch"] if prefix != "equal_work_" else []):
                if tl and name in rec:
                    cmp = rec[f"{prefix}vs_{name}"] = compare(rec[name], tl)
                    log(f"seed {seed} {prefix}" + describe(name, rec[name], cmp))

    runs = [r for r in result["seeds"] if "sklearn-cd" in r]
    if runs:
        def col(key, sub, pre=""):
            return [r[f"{pre}vs_sklearn-cd"][sub] if key == "cmp" else r[key][sub] for r in runs]

        reached = [x for x in col("cmp", "time_ratio") if x is not None]
        result["summary"] = {
            "seeds": len(runs),
            "reached": len(reached),
            "median_time_ratio_where_reached": median(reached),
            "median_time_ratio_within_0.1pct": median([x for x in col("cmp", "time_ratio_within_0.1pct") if x is not None]),
            "sklearn_cd_final_errors": col("sklearn-cd", "relative_error"),
            "tokenlens_final_errors": col("tokenlens", "relative_error"),
            "sklearn_cd_error_spread": spread(col("sklearn-cd", "relative_error")),
            "tokenlens_error_spread": spread(col("tokenlens", "relative_error")),
            "median_final_error_ratio": median(col("tokenlens", "relative_error")) / median(col("sklearn-cd", "relative_error")),
            "median_peak_rss_ratio": median(col("cmp", "peak_rss_ratio")),
            "median_wall_ratio": median(col("cmp", "wall_ratio")),
            "time_ratio_spread": spread(col("cmp", "time_ratio_within_0.1pct")),
            "same_start": all(r.get("init_check", {}).get("same_start", False) for r in runs) if a.init == "tokenlens" else False,
        }
        if not a.no_equal_work:
            result["summary"]["equal_work"] = {
                "median_solve_ratio": median(col("cmp", "solve_ratio", "equal_work_")),
                "median_final_error_ratio": median([r["equal_work_vs_sklearn-cd"]["final_error_ratio"] for r in runs]),
            }
        if a.also_streamed:
            st = [x for x in col("cmp", "time_ratio", "streamed_") if x is not None]
            result["summary"]["streamed"] = {
                "reached": len(st),
                "median_time_ratio_where_reached": median(st),
                "median_time_ratio_within_0.1pct": median(
                    [x for x in col("cmp", "time_ratio_within_0.1pct", "streamed_") if x is not None]),
                "median_peak_rss_ratio": median(col("cmp", "peak_rss_ratio", "streamed_")),
                "median_wall_ratio": median(col("cmp", "wall_ratio", "streamed_")),
            }
        log("summary vs sklearn-cd: " + json.dumps(result["summary"]))
    if not a.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
