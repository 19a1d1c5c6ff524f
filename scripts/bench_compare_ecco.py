#!/usr/bin/env python3
"""Ecco's side of the layer-similarity benchmark (scripts/bench_compare.sh), and the check that
both sides computed the same numbers.

`run` mode does what an Ecco user does with two models' representations held in memory: it loads
the runs' `residuals` and/or `activations` tables (every layer, the matched rows, f32 as Ecco keeps
activations), then calls Ecco 0.1.2's own `ecco.analysis.cka`, `cca` and `svcca` on each pair of
layers tokenlens compares by default (the diagonal: the same relative depth), and PWCCA as
Ecco's `compute_pwcca` with its acts1 -> acts2 typo fixed, on column-centred layers (what
tokenlens computes, see scripts/make_similarity_goldens.py; the cost is Ecco's); --metrics picks
some (the CCA family only with more rows than neurons, as tokenlens). Ecco's functions
take (neurons, datapoints) arrays: the rows are passed transposed, as Ecco's own output holds them.

  rows matched as `tokenlens compare` matches them (docs/compare.md):
    --level position   documents by doc_id, positions 0..common (the longest common prefix of the
                       two runs' token ids), those both tables store;
    --level document   per document, the mean over its prompt positions (generations'
                       prompt_tokens) in each run, in f64, rounded to f32.

It writes --out JSON: the row count, per source the layer pairs and each metric's values, the
seconds to load and per metric, and the peak RSS (ru_maxrss) of the process. Ecco computes CKA
(and SVCCA's SVD) in float32 on float32 input, which moves CKA by up to ~1e-5; so `cka_f64`,
Ecco's `cka` on the same rows in float64 (not timed), is kept too, as the reference for
tokenlens' float64 value.

`check` mode compares such a JSON with a comparison directory's `similarity` table: the same
sources, row counts and layer pairs, and each value within --tol (cka_f64: --tol-f64; exit 1
otherwise, saying which);
it prints and writes (--out) the largest difference per metric.

Usage (from the repo root, with the reference venv's python and Ecco from scripts/setup_ecco.sh):
  PYTHONPATH=$ECCO_PKGS $REFENV_PY scripts/bench_compare_ecco.py run RUN_A RUN_B \
      [--level position|document] [--sources residuals,activations] [--metrics cka,cca,svcca,pwcca]
      [--svcca-dims 20] --out X.json
  $REFENV_PY scripts/bench_compare_ecco.py check X.json COMPARISON_DIR [--tol 1e-4] [--out Y.json]
"""

import argparse
import json
import os
import resource
import sys
import time
import types
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ECCO_PKGS = Path(os.environ.get("ECCO_PKGS") or os.path.expanduser("~/.cache/tokenlens/ecco-pkgs"))
METRICS = ("cka", "cca", "svcca", "pwcca")


def die(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def read_table(run, name, columns=None):
    d = Path(run) / name
    parts = sorted(d.glob("part-*.parquet"))
    if not parts:
        die(f"{d}: no {name} table (no part-*.parquet)")
    import pyarrow as pa

    return pa.concat_tables([pq.read_table(p, columns=columns) for p in parts])


def tokens_by_doc(run):
    t = read_table(run, "tokens", ["doc_id", "position", "token_id"])
    docs = t.column("doc_id").to_pylist()
    pos = t.column("position").to_numpy()
    ids = t.column("token_id").to_numpy()
    out = {}
    for d, p, i in zip(docs, pos, ids):
        out.setdefault(d, {})[int(p)] = int(i)
    return {d: [m[p] for p in sorted(m)] for d, m in out.items()}


def prompt_lens(run):
    t = read_table(run, "generations", ["doc_id", "prompt_tokens"])
    return dict(zip(t.column("doc_id").to_pylist(), t.column("prompt_tokens").to_pylist()))


def common_prefix(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Reps:
    """One run's representation table: per layer, its rows' keys (doc, position) and values."""

    def __init__(self, run, source):
        t = read_table(run, source)
        self.docs = t.column("doc_id").to_pylist()
        self.pos = t.column("position").to_numpy().astype(np.int64)
        self.layer = t.column("layer").to_numpy()
        vals = t.column("values").combine_chunks()
        self.offsets = vals.offsets.to_numpy().astype(np.int64)
        self.flat = vals.flatten().to_numpy(zero_copy_only=False)
        self.layers = sorted(set(self.layer.tolist()))
        self.stored = {}
        for d, p in zip(self.docs, self.pos):
            lo, hi = self.stored.get(d, (p, p))
            self.stored[d] = (min(lo, p), max(hi, p))

    def matrix(self, layer, keys, doc_index):
        """Rows of `layer` for keys [(doc, position)...] in that order, as an f32 matrix."""
        sel = np.nonzero(self.layer == layer)[0]
        code = np.array([doc_index[self.docs[i]] for i in sel], dtype=np.int64) * 1_000_000 + self.pos[sel]
        order = np.argsort(code)
        code, sel = code[order], sel[order]
        want = np.array([doc_index[d] * 1_000_000 + p for d, p in keys], dtype=np.int64)
        at = np.searchsorted(code, want)
        if np.any(at >= len(code)) or np.any(code[np.minimum(at, len(code) - 1)] != want):
            die(f"layer {layer}: some matched rows are not stored")
        rows = sel[at]
        starts = self.offsets[rows]
        width = int(self.offsets[rows[0] + 1] - starts[0])
        return self.flat[starts[:, None] + np.arange(width)].astype(np.float32)


def diagonal(na, nb):
    """tokenlens' --pairs diagonal: layer i of A with the layer of B at the same relative depth."""
    if na <= 1:
        return [(i, 0) for i in range(na)]
    return [(i, int(np.floor(i * (nb - 1) / (na - 1) + 0.5))) for i in range(na)]


def load_ecco():
    pkg = ECCO_PKGS / "ecco"
    if not (pkg / "analysis.py").is_file():
        die(f"{pkg}/analysis.py missing: run scripts/setup_ecco.sh (ECCO_PKGS={ECCO_PKGS})")
    ecco = types.ModuleType("ecco")  # ecco/__init__.py would import torch and transformers
    ecco.__path__ = [str(pkg)]
    sys.modules["ecco"] = ecco
    import ecco.analysis as analysis

    src = (pkg / "svcca_lib" / "pwcca.py").read_text()
    bug = 'acts1[sresults["y_idxs"]]'
    if src.count(bug) != 1:
        die("svcca_lib/pwcca.py is not Ecco 0.1.2's")
    fixed = types.ModuleType("pwcca_fixed")
    exec(compile(src.replace(bug, 'acts2[sresults["y_idxs"]]'), "pwcca_fixed.py", "exec"), fixed.__dict__)
    return analysis, fixed


def run(args):
    analysis, fixed = load_ecco()
    t0 = time.perf_counter()
    level = args.level
    toks_a, toks_b = tokens_by_doc(args.run_a), tokens_by_doc(args.run_b)
    docs = sorted(set(toks_a) & set(toks_b))
    if not docs:
        die("no common documents")
    doc_index = {d: i for i, d in enumerate(sorted(set(toks_a) | set(toks_b)))}
    res = {"level": level, "documents": len(docs), "sources": {}, "svcca_dims": args.svcca_dims}
    load_s = time.perf_counter() - t0
    for source in args.sources.split(","):
        t1 = time.perf_counter()
        ra, rb = Reps(args.run_a, source), Reps(args.run_b, source)
        if level == "position":
            keys = []
            for d in docs:
                n = common_prefix(toks_a[d], toks_b[d])
                lo = max(ra.stored[d][0], rb.stored[d][0]) if d in ra.stored and d in rb.stored else 0
                hi = min(ra.stored[d][1], rb.stored[d][1]) + 1 if d in ra.stored and d in rb.stored else 0
                keys += [(d, p) for p in range(lo, min(n, hi))]
            a = [ra.matrix(layer, keys, doc_index) for layer in ra.layers]
            b = [rb.matrix(layer, keys, doc_index) for layer in rb.layers]
            rows = len(keys)
        else:
            pa_, pb_ = prompt_lens(args.run_a), prompt_lens(args.run_b)

            def means(r, plen):
                keys, lens = [], []
                for d in docs:
                    lo, hi = r.stored[d]
                    ps = list(range(lo, min(plen[d], hi + 1)))
                    keys += [(d, p) for p in ps]
                    lens.append(len(ps))
                bounds = np.cumsum([0] + lens)
                out = []
                for layer in r.layers:
                    m = r.matrix(layer, keys, doc_index).astype(np.float64)
                    out.append(np.stack([m[s:e].mean(0) for s, e in zip(bounds[:-1], bounds[1:])]).astype(np.float32))
                return out

            a, b = means(ra, pa_), means(rb, pb_)
            rows = len(docs)
        layers_a, layers_b = ra.layers, rb.layers
        del ra, rb
        load_s += time.perf_counter() - t1
        pairs = diagonal(len(a), len(b))
        rec = {"rows": rows, "layers_a": len(a), "layers_b": len(b),
               "pairs": [[int(layers_a[i]), int(layers_b[j])] for i, j in pairs], "values": {}, "seconds": {}}
        widest = max(m.shape[1] for m in a + b)
        metrics = [m for m in args.metrics.split(",") if m == "cka" or rows > widest]  # as tokenlens
        for metric in metrics:
            t2 = time.perf_counter()
            vals = []
            for i, j in pairs:
                x, y = a[i].T, b[j].T  # (neurons, datapoints), as Ecco's output holds them
                if metric == "cka":
                    v = analysis.cka(x, y)
                elif metric == "cca":
                    v = analysis.cca(x, y)
                elif metric == "svcca":
                    v = analysis.svcca(x, y, dims=args.svcca_dims)
                else:
                    xc = x - x.mean(axis=1, keepdims=True)
                    yc = y - y.mean(axis=1, keepdims=True)
                    v = fixed.compute_pwcca(xc, yc, epsilon=1e-10)[0]
                vals.append(float(v))
            rec["seconds"][metric] = time.perf_counter() - t2
            rec["values"][metric] = vals
            print(f"{source}: {metric} over {len(pairs)} pairs: {rec['seconds'][metric]:.1f} s", file=sys.stderr)
        if "cka" in metrics:  # untimed: Ecco's cka in float64, the reference for tokenlens' (f64) value
            rec["values"]["cka_f64"] = [float(analysis.cka(a[i].T.astype(np.float64), b[j].T.astype(np.float64)))
                                        for i, j in pairs]
        res["sources"][source] = rec
    res["load_s"] = load_s
    res["compute_s"] = sum(s for r in res["sources"].values() for s in r["seconds"].values())
    res["total_s"] = time.perf_counter() - t0
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    json.dump(res, open(args.out, "w"), indent=1)
    print(f"ecco: load {load_s:.1f} s, metrics {res['compute_s']:.1f} s, peak RSS {res['peak_rss_mb']:,.0f} MB")


def check(args):
    ecco = json.load(open(args.ecco))
    t = read_table(args.comparison, "similarity")
    rows = t.to_pylist()
    worst = {}
    bad = []
    for source, rec in ecco["sources"].items():
        ours = {(r["metric"], r["layer_a"], r["layer_b"]): r for r in rows if r["source"] == source}
        if not ours:
            die(f"{args.comparison}: no similarity rows for {source}")
        for name, vals in rec["values"].items():
            metric = name.removesuffix("_f64")
            tol = args.tol_f64 if name.endswith("_f64") else args.tol
            got_pairs = sorted((la, lb) for (m, la, lb) in ours if m == metric)
            if len(got_pairs) != len(rec["pairs"]):
                bad.append(f"{source} {metric}: tokenlens has {len(got_pairs)} pairs, Ecco's side {len(rec['pairs'])}")
                continue
            for (la, lb), v in zip(rec["pairs"], vals):
                key = (metric, la, lb)
                if key not in ours:
                    bad.append(f"{source} {metric}: no tokenlens row for layers {key[1:]}")
                    continue
                r = ours[key]
                if r["rows"] != rec["rows"]:
                    bad.append(f"{source}: tokenlens compared {r['rows']} rows, Ecco's side {rec['rows']}")
                d = abs(r["value"] - v)
                w = worst.setdefault(f"{source}/{name}", {"max_abs_diff": 0.0, "pairs": 0})
                w["pairs"] += 1
                if d > w["max_abs_diff"]:
                    w.update(max_abs_diff=d, at=list(key[1:]), tokenlens=r["value"], ecco=v)
                if not d <= tol:
                    bad.append(f"{source} {name} layers {key[1:]}: tokenlens {r['value']:.10f}, Ecco {v:.10f}")
    for k, w in worst.items():
        print(f"  {k}: {w['pairs']} pairs, max |tokenlens - Ecco| {w['max_abs_diff']:.2e}")
    if args.out:
        json.dump({"tolerance": args.tol, "tolerance_f64": args.tol_f64, "worst": worst, "disagreements": bad}, open(args.out, "w"), indent=1)
    if bad:
        die(f"tokenlens and Ecco disagree beyond the tolerances ({len(bad)}): " + "; ".join(sorted(set(bad))[:8]))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("run")
    r.add_argument("run_a")
    r.add_argument("run_b")
    r.add_argument("--level", choices=["position", "document"], default="position")
    r.add_argument("--sources", default="residuals")
    r.add_argument("--metrics", default=",".join(METRICS), help="any of cka,cca,svcca,pwcca")
    r.add_argument("--svcca-dims", type=int, default=20)
    r.add_argument("--out", required=True)
    c = sub.add_parser("check")
    c.add_argument("ecco")
    c.add_argument("comparison")
    c.add_argument("--tol", type=float, default=1e-4, help="for Ecco's values as timed (its arithmetic)")
    c.add_argument("--tol-f64", type=float, default=1e-9, help="for Ecco's cka recomputed in float64")
    c.add_argument("--out")
    args = p.parse_args()
    run(args) if args.mode == "run" else check(args)


if __name__ == "__main__":
    main()
