#!/usr/bin/env python3
"""Make the golden reference values of tokenlens' representation-similarity metrics
(src/analysis/similarity/): Ecco 0.1.2's own `cca`, `svcca`, `pwcca` and `cka` (ecco/analysis.py
over its copy of Google's svcca_lib), the debiased linear CKA of svcca_lib/cka_lib.py, and the
minibatch CKA of Nguyen, Raghu & Kornblith 2021 computed here in NumPy, on small seeded inputs.

What it writes: tests/data/golden/similarity/similarity.json (~130 KB), with

  cases[]                   one input set each:
    name, positions         the number of datapoints n
    layers{NAME}            {width, data}: an n x width matrix, row-major (datapoints x neurons,
                            the transpose of Ecco's (neurons, datapoints)), stored as base64 of
                            little-endian int16 q with value = q / 256: every value is exact in
                            f32 and f64, so both sides compute from the same numbers
    pairs[]                 {a, b, metrics...} for layer names a, b:
                              cca         ecco.analysis.cca(A.T, B.T)
                              svcca_20    ecco.analysis.svcca(A.T, B.T, dims=20)
                              svcca_8     ecco.analysis.svcca(A.T, B.T, dims=8)
                              pwcca       the fixed compute_pwcca (below) on the centred
                                          layers, [0]
                              pwcca_side  "a" or "b": whose canonical directions weight the mean
                              cca_eigh, pwcca_eigh  the same two with the inverse square root
                                          of the scaled covariance from eigh (cca_eigh() below):
                                          Ecco's pinv-then-eigh loses digits when a covariance
                                          is nearly singular (a0dup: ~4e-6 in s)
                              pwcca_ecco_raw  ecco.analysis.pwcca(A.T, B.T) unchanged on the
                                          raw layers, or null when it raises
                                          (pwcca_ecco_raw_error says what); informative only
                              cka         ecco.analysis.cka(A.T, B.T)
                              cka_debiased  cka_lib.feature_space_linear_cka(A, B, debiased=True)
                            (a case with more neurons than datapoints has only the two CKAs)
    minibatch               {batch, side_a, side_b, batches, dropped, cka[i][j]}: the minibatch
                            CKA of side_a[i] and side_b[j] over consecutive batches of `batch`
                            datapoints (the last, short batch dropped), unbiased HSIC_1 (Song et
                            al. 2007 form, on uncentered linear Gram matrices)
  checks                    pwcca_sign_flip: Ecco's pwcca on a0, b0 as is and with singular vector 0
                            flipped, on the raw and on the centred layers (see below)
  definitions, versions, generator, seed.

PWCCA, two fixes of Ecco's pwcca.py (as Google's):
- the second side's branch multiplies `acts1[y_idxs]`, a typo for `acts2` (with fewer neurons
  on the second side numpy raises IndexError, with equally many it silently mixes the first
  side's activations into the second side's directions). The fixed function is Ecco's source
  with that token changed (checked to change exactly one place); where Ecco takes the first
  side's branch the two agree to the last bit (checked).
- the directions coef . (acts - means) + means add the per-neuron means to rows that are
  rotated directions, so the value depends on the sign LAPACK happens to give each singular
  vector. The script checks it: flipping one singular vector's sign changes the value on the
  raw layers (`checks.pwcca_sign_flip`) and leaves it unchanged on centred layers. The reference
  `pwcca` is therefore the fixed function on column-centred layers (where the added means are
  0); Ecco's own value on the raw layers is kept as `pwcca_ecco_raw`.

How to run (by hand; CI never runs it), from the repo root:

    $REFENV_PY scripts/make_similarity_goldens.py

$REFENV_PY is the reference venv's python (default ~/.cache/tokenlens/refenv/bin/python); needs
only numpy (Ecco's svcca_lib files are loaded by path from $ECCO_PKGS, default
~/.cache/tokenlens/ecco-pkgs, without running ecco/__init__.py, which would import torch and
transformers; see scripts/setup_ecco.sh). Single-threaded BLAS is asked for so a rerun with the
same numpy gives byte-identical output. Takes ~1 s.
"""

import base64
import json
import os
import platform
import sys
import types
from pathlib import Path

for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "golden" / "similarity" / "similarity.json"
GENERATOR = "scripts/make_similarity_goldens.py"
SEED = 1234
SCALE = 256  # stored value = int16 / SCALE
ECCO_PKGS = Path(os.environ.get("ECCO_PKGS") or os.path.expanduser("~/.cache/tokenlens/ecco-pkgs"))

DEFINITIONS = {
    "layout": "Each layer is n x width, datapoints x neurons; Ecco's functions take the "
    "transpose (neurons, datapoints).",
    "cca": "Ecco: get_cca_similarity(A.T, B.T, epsilon=1e-10)['mean'][0]: np.cov, each side's "
    "covariance divided by its max |entry| (cross term by the geometric mean), neurons whose "
    "scaled variance is < epsilon dropped, (Sxx + eps I)^-1/2 Sxy (Syy + eps I)^-1/2 singular "
    "values s (descending), mean of s[:i] with i the first index where sum(s[:i]) >= "
    "0.98 sum(s) (all of s when none).",
    "svcca_k": "Ecco: centre, SVD, project each side on its top k right singular vectors "
    "scaled by the singular values, then get_cca_similarity(epsilon=1e-10) and the mean of ALL "
    "cca_coef1 (no 0.98 threshold).",
    "pwcca": "compute_pwcca(Ac.T, Bc.T, epsilon=1e-10)[0] on the column-centred layers, with the "
    "acts1 -> acts2 fix of its second branch: the side keeping fewer neurons (the first on a tie) "
    "gives directions = coef . acts_c (coef = its singular vectors, no inverse square root, as "
    "Ecco), Q of their QR, weights = sum_j |Q^T acts_j| over that side's kept neurons, "
    "normalised; value = sum(weights * s).",
    "cka": "Ecco: feature_space_linear_cka(A, B): ||Ac^T Bc||_F^2 / (||Ac^T Ac||_F ||Bc^T Bc||_F), "
    "columns centred.",
    "cka_debiased": "cka_lib.feature_space_linear_cka(A, B, debiased=True) (Song et al. 2007 "
    "unbiased HSIC in feature space).",
    "minibatch": "Nguyen, Raghu & Kornblith 2021: for batch t of `batch` consecutive datapoints "
    "(a last batch shorter than `batch` is dropped), K = X X^T, L = Y Y^T (uncentred), "
    "HSIC_1(K, L) = [tr(K~ L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3)), "
    "K~ = K with zero diagonal; CKA = sum_t HSIC_1(K_t, L_t) / sqrt(sum_t HSIC_1(K_t, K_t) "
    "sum_t HSIC_1(L_t, L_t)).",
}


def load_svcca_lib():
    """Ecco's analysis module and its svcca_lib, from ECCO_PKGS, without ecco/__init__.py (an
    empty package object stands in for `ecco`, so `ecco.analysis`'s relative imports resolve
    to the files on disk)."""
    pkg = ECCO_PKGS / "ecco"
    if not (pkg / "analysis.py").is_file():
        raise SystemExit(f"{pkg}/analysis.py missing: run scripts/setup_ecco.sh (ECCO_PKGS={ECCO_PKGS})")
    ecco = types.ModuleType("ecco")
    ecco.__path__ = [str(pkg)]
    sys.modules["ecco"] = ecco
    import ecco.analysis as analysis
    from ecco.svcca_lib import cca_core, cka_lib, pwcca

    # The fixed compute_pwcca: Ecco's source with `acts1[sresults["y_idxs"]]` -> acts2.
    src = (pkg / "svcca_lib" / "pwcca.py").read_text()
    bug = 'acts1[sresults["y_idxs"]]'
    assert src.count(bug) == 1, "pwcca.py is not the expected Ecco 0.1.2 source"
    fixed = types.ModuleType("pwcca_fixed")
    exec(compile(src.replace(bug, 'acts2[sresults["y_idxs"]]'), "pwcca_fixed.py", "exec"), fixed.__dict__)
    return analysis, cca_core, cka_lib, pwcca, fixed


def quantize(x):
    q = np.clip(np.rint(x * SCALE), -32768, 32767).astype("<i2")
    return q, q.astype(np.float64) / SCALE


def encode(q):
    return base64.b64encode(q.tobytes()).decode("ascii")


def make_correlated(rng, n):
    """Two layers a side, widths 24 and 32, sharing a 16-dim latent with different mixings,
    neuron scales and offsets; a1 has one constant neuron (dropped by Ecco's remove_small); a0dup
    is a0 with neuron 7 replaced by a copy of neuron 3 (linearly dependent neurons)."""
    z = rng.standard_normal((n, 16))

    def layer(cols, width, noise, nonlinear=False):
        m = rng.standard_normal((len(cols), width))
        x = z[:, cols] @ m
        if nonlinear:
            x = np.tanh(x / 2) * 2
        x = x + noise * rng.standard_normal((n, width))
        x = x * np.exp(0.5 * rng.standard_normal(width)) + rng.uniform(-3, 3, width)
        return x

    layers = {
        "a0": layer(list(range(0, 12)), 24, 0.5),
        "a1": layer(list(range(2, 14)), 24, 1.0, nonlinear=True),
        "b0": layer(list(range(4, 16)), 32, 0.7),
        "b1": layer(list(range(0, 16, 2)), 32, 2.0),
    }
    layers["a1"][:, 5] = 1.5
    # a0 with neuron 7 a copy of neuron 3: singular covariance, PWCCA's dependent direction.
    layers["a0dup"] = layers["a0"].copy()
    layers["a0dup"][:, 7] = layers["a0"][:, 3]
    return layers


def make_wide(rng, n):
    """More neurons than datapoints (CKA only): widths 64 and 48 from a 10-dim latent."""
    z = rng.standard_normal((n, 10))
    a = z @ rng.standard_normal((10, 64)) + 0.3 * rng.standard_normal((n, 64)) + 1.0
    b = np.tanh(z @ rng.standard_normal((10, 48))) + 0.3 * rng.standard_normal((n, 48)) - 0.5
    return {"w_a": a, "w_b": b}


def hsic1(k, l):
    """Song et al. (2007) unbiased HSIC of Gram matrices k, l (n >= 4)."""
    n = k.shape[0]
    kt = k - np.diag(np.diag(k))
    lt = l - np.diag(np.diag(l))
    return (
        np.sum(kt * lt)
        + kt.sum() * lt.sum() / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * kt.sum(0).dot(lt.sum(0))
    ) / (n * (n - 3))


def minibatch_cka(xs, ys, batch):
    n = xs[0].shape[0]
    nb = n // batch
    xy = np.zeros((len(xs), len(ys)))
    xx = np.zeros(len(xs))
    yy = np.zeros(len(ys))
    for t in range(nb):
        sl = slice(t * batch, (t + 1) * batch)
        ks = [x[sl] @ x[sl].T for x in xs]
        ls = [y[sl] @ y[sl].T for y in ys]
        for i, k in enumerate(ks):
            xx[i] += hsic1(k, k)
            for j, l in enumerate(ls):
                xy[i, j] += hsic1(k, l)
        for j, l in enumerate(ls):
            yy[j] += hsic1(l, l)
    return xy / np.sqrt(np.outer(xx, yy)), nb, n - nb * batch


def pwcca_x_branch(cca_core, a, b, flip):
    """compute_pwcca's first-side branch, line for line, with the sign of singular vector `flip`
    (or none) reversed."""
    sres = cca_core.get_cca_similarity(a, b, epsilon=1e-10, compute_dirns=False, compute_coefs=True, verbose=False)
    assert np.sum(sres["x_idxs"]) <= np.sum(sres["y_idxs"])
    coef = sres["coef_x"].copy()
    if flip is not None:
        coef[flip] *= -1
    idx, means = sres["x_idxs"], sres["neuron_means1"]
    dirns = np.dot(coef, (a[idx] - means[idx])) + means[idx]
    p, _ = np.linalg.qr(dirns.T)
    weights = np.sum(np.abs(np.dot(p.T, a[idx].T)), axis=1)
    weights = weights / np.sum(weights)
    return float(np.sum(weights * sres["cca_coef1"]))


def cca_eigh(x, y, eps=1e-10):
    """get_cca_similarity(x.T, y.T, eps)'s steps with one change: (S + eps I)^(-1/2) from eigh of
    S + eps I (Ecco takes pinv of it, then eigh of the inverse, which loses digits when S is
    nearly singular). Returns the canonical correlations, then `cca` (its 0.98 threshold mean)
    and `pwcca` (on the centred layers, with the fixes) from them."""
    a, b = x.T, y.T
    nx = a.shape[0]
    cov = np.cov(a, b)
    sxx, sxy, syy = cov[:nx, :nx], cov[:nx, nx:], cov[nx:, nx:]
    xmax, ymax = np.max(np.abs(sxx)), np.max(np.abs(syy))
    sxx, syy, sxy = sxx / xmax, syy / ymax, sxy / np.sqrt(xmax * ymax)
    xi, yi = np.abs(np.diag(sxx)) >= eps, np.abs(np.diag(syy)) >= eps
    sxx, syy, sxy = sxx[xi][:, xi], syy[yi][:, yi], sxy[xi][:, yi]

    def inv_sqrt(m):
        w, v = np.linalg.eigh(m + eps * np.eye(len(m)))
        return (v / np.sqrt(w)) @ v.T

    u, s, vt = np.linalg.svd(inv_sqrt(sxx) @ sxy @ inv_sqrt(syy))
    idx = next((i for i in range(len(s)) if np.sum(s[:i]) / np.sum(s) >= 0.98), len(s))
    if xi.sum() <= yi.sum():
        coef, acts = u.T, a[xi] - a[xi].mean(1, keepdims=True)
    else:
        coef, acts = vt, b[yi] - b[yi].mean(1, keepdims=True)
    p, _ = np.linalg.qr((coef @ acts).T)
    weights = np.sum(np.abs(p.T @ acts.T), axis=1)
    weights = weights / np.sum(weights)
    return float(np.mean(s[:idx])), float(np.sum(weights * s))


def pair_values(lib, x, y, full):
    analysis, cca_core, cka_lib, pwcca, fixed = lib
    a, b = x.T, y.T
    ac, bc = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    out = {}
    if full:
        out["cca"] = float(analysis.cca(a, b))
        out["svcca_20"] = float(analysis.svcca(a, b, dims=20))
        out["svcca_8"] = float(analysis.svcca(a, b, dims=8))
        out["pwcca"] = float(fixed.compute_pwcca(ac, bc, epsilon=1e-10)[0])
        res = cca_core.get_cca_similarity(a, b, epsilon=1e-10, verbose=False)
        side_a = np.sum(res["x_idxs"]) <= np.sum(res["y_idxs"])
        out["pwcca_side"] = "a" if side_a else "b"
        out["cca_eigh"], out["pwcca_eigh"] = cca_eigh(x, y)
        if side_a:
            assert float(analysis.pwcca(ac, bc)) == out["pwcca"], "the fix changed the first side's branch"
        try:
            out["pwcca_ecco_raw"] = float(analysis.pwcca(a, b))
        except Exception as e:  # noqa: BLE001
            out["pwcca_ecco_raw"] = None
            out["pwcca_ecco_raw_error"] = f"{type(e).__name__}: {e}"
    out["cka"] = float(analysis.cka(a, b))
    out["cka_debiased"] = float(cka_lib.feature_space_linear_cka(x, y, debiased=True))
    return out


def sign_flip_check(lib, x, y):
    """Ecco's pwcca with singular vector 0's sign flipped: a different value on the raw layers,
    the same on centred ones."""
    cca_core = lib[1]
    a, b = x.T, y.T
    ac, bc = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    raw = (pwcca_x_branch(cca_core, a, b, None), pwcca_x_branch(cca_core, a, b, 0))
    cen = (pwcca_x_branch(cca_core, ac, bc, None), pwcca_x_branch(cca_core, ac, bc, 0))
    assert raw[0] == float(lib[0].pwcca(a, b)), "pwcca_x_branch is not Ecco's code"
    assert abs(raw[0] - raw[1]) > 1e-4 and abs(cen[0] - cen[1]) < 1e-12, (raw, cen)
    return {"raw": list(raw), "centred": list(cen)}


def main():
    lib = load_svcca_lib()
    rng = np.random.default_rng(SEED)
    cases = []
    exact_by_case = {}
    specs = [
        ("correlated", 300, make_correlated, True, 64, ["a0", "a1"], ["b0", "b1"]),
        ("wide", 40, make_wide, False, 16, ["w_a"], ["w_b"]),
    ]
    for name, n, make, full, batch, side_a, side_b in specs:
        raw = make(rng, n)
        layers, exact = {}, {}
        exact_by_case[name] = exact
        for key, x in raw.items():
            q, v = quantize(x)
            layers[key] = {"width": int(x.shape[1]), "data": encode(q)}
            exact[key] = v
        if full:
            pairs = [(a, b) for a in side_a for b in side_b]
            pairs += [(b, a) for a in side_a for b in side_b]
            pairs += [("a0", "a1"), ("a1", "a0"), ("a0", "a0"), ("a0dup", "b0"), ("b0", "a0dup")]
        else:
            pairs = [(side_a[0], side_b[0]), (side_b[0], side_a[0])]
        rows = []
        for a, b in pairs:
            rows.append({"a": a, "b": b, **pair_values(lib, exact[a], exact[b], full)})
        cka, nb, dropped = minibatch_cka([exact[k] for k in side_a], [exact[k] for k in side_b], batch)
        cases.append(
            {
                "name": name,
                "positions": n,
                "layers": layers,
                "pairs": rows,
                "minibatch": {
                    "batch": batch,
                    "side_a": side_a,
                    "side_b": side_b,
                    "batches": nb,
                    "dropped": dropped,
                    "cka": cka.tolist(),
                },
            }
        )
    correlated = exact_by_case["correlated"]
    checks = {"pwcca_sign_flip": {"pair": ["a0", "b0"], **sign_flip_check(lib, correlated["a0"], correlated["b0"])}}
    # Sanity: identical inputs.
    x = cases[0]
    a0 = np.frombuffer(base64.b64decode(x["layers"]["a0"]["data"]), "<i2").reshape(300, 24) / SCALE
    assert abs(lib[0].cca(a0.T, a0.T) - 1) < 1e-6 and abs(lib[0].cka(a0.T, a0.T) - 1) < 1e-12
    doc = {
        "generator": GENERATOR,
        "seed": SEED,
        "encoding": f"int16 little-endian, base64; value = int / {SCALE}",
        "definitions": DEFINITIONS,
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "ecco": "0.1.2 (svcca_lib from ECCO_PKGS)",
        },
        "checks": checks,
        "cases": cases,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes)")
    for c in cases:
        for r in c["pairs"]:
            vals = {k: v for k, v in r.items() if isinstance(v, float)}
            print(c["name"], r["a"], r["b"], " ".join(f"{k}={v:.6f}" for k, v in vals.items()), r.get("pwcca_ecco_raw_error", ""))
        print(c["name"], "minibatch", c["minibatch"]["cka"], "batches", c["minibatch"]["batches"], "dropped", c["minibatch"]["dropped"])
    print("pwcca sign flip:", checks["pwcca_sign_flip"])


if __name__ == "__main__":
    main()
