"""What the golden scripts (make_goldens.py, make_saliency_goldens.py, make_minilm_golden.py,
make_gemma3_golden.py) share: where goldens live, fetching a real model and hashing it, the
deterministic set-up, loading a tiny checkpoint, greedy continuations, tolerance checks, library
versions and writing a golden (safetensors + JSON sidecar).

Imported by those scripts (run with the reference venv, see scripts/README.md); never run on
its own. Needs torch and transformers.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
from importlib.metadata import version as pkg_version
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
GOLDEN = DATA / "golden"

SEED = 1234


def fetch_model(name):
    """The path `scripts/fetch-model.sh NAME` prints (it downloads the model once, sha256 checked)."""
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "fetch-model.sh"), name], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def sha256(path):
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def deterministic_setup():
    """One CPU thread, torch seeded with SEED, quiet transformers, no tokenizers threads: a rerun
    with the same library versions gives byte-identical files."""
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    transformers.logging.set_verbosity_error()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_tiny(model_dir):
    """A tiny test checkpoint as transformers loads it: float32, eager attention, eval mode."""
    return AutoModelForCausalLM.from_pretrained(
        model_dir, attn_implementation="eager", dtype=torch.float32
    ).eval()


def versions(modules, packages=()):
    """{"python": ..., then each module's __version__ (keyed by its name), then each installed
    package's version}, in that order (the order of the JSON written)."""
    out = {"python": sys.version.split()[0]}
    out.update({m.__name__: m.__version__ for m in modules})
    out.update({p: pkg_version(p) for p in packages})
    return out


def generate_greedy(model, ids, n_new):
    """Greedy continuation with model.generate (KV cache, no EOS stop). `ids`: [1, T] int64;
    returns the n_new new tokens, int64."""
    gen = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=n_new,
        min_new_tokens=n_new,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=model.config.eos_token_id if model.config.eos_token_id is not None else 0,
    )
    new = gen[0, ids.shape[1]:]
    assert new.numel() == n_new, f"generate stopped early: {new.tolist()}"
    return new.to(torch.int64)


def argmax_loop(model, ids, n_new, before_forward=None):
    """Greedy continuation as a plain argmax loop of full forwards (no KV cache); calls
    `before_forward()` (if given) before each forward. Returns the n_new new tokens, int64."""
    cur = ids
    with torch.no_grad():
        for _ in range(n_new):
            if before_forward is not None:
                before_forward()
            nxt = model(cur).logits[0, -1].argmax()
            cur = torch.cat([cur, nxt.view(1, 1)], dim=1)
    return cur[0, ids.shape[1]:].to(torch.int64)


def greedy(model, ids, n_new):
    """Greedy continuation with model.generate (no EOS stop), cross-checked against a
    plain argmax loop of full forwards (no KV cache). `ids`: [1, T] int64; returns the n_new
    new tokens, int64."""
    new = generate_greedy(model, ids, n_new)
    manual = argmax_loop(model, ids, n_new)
    assert torch.equal(new, manual), f"generate {new.tolist()} != argmax loop {manual.tolist()}"
    return new


def assert_close(a, b, what, tol, float64=False):
    """Asserts max |a - b| <= tol * max(1, max |b|) (in float64 if asked); returns max |a - b|."""
    if float64:
        a, b = a.double(), b.double()
    err = (a - b).abs().max().item()
    scale = max(b.abs().max().item(), 1.0)
    assert err <= tol * scale, f"{what}: max abs diff {err:.3e} (scale {scale:.3e})"
    return err


def dump_json(obj):
    """Indented JSON, but with each list of numbers on one line."""
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    return re.sub(r"\[\s*(-?[\d.e+-]+(?:,\s*-?[\d.e+-]+)*)\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text) + "\n"


def write_golden(stem, tensors, meta, generator):
    """Writes GOLDEN/<stem>.safetensors (float32 and int64 tensors only, all finite; `generator`
    recorded in its metadata) and GOLDEN/<stem>.json (`meta`); returns the safetensors path."""
    GOLDEN.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    for k, v in tensors.items():
        assert v.dtype in (torch.float32, torch.int64), (k, v.dtype)
        assert torch.isfinite(v.float()).all(), k
    path = GOLDEN / f"{stem}.safetensors"
    save_file(tensors, str(path), metadata={"generator": generator})
    (GOLDEN / f"{stem}.json").write_text(dump_json(meta))
    return path
