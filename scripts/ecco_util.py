"""What the two Ecco scripts (bench_saliency_ecco.py, bench_workflow_ecco.py) share: the default
paths, Ecco's model_config for SmolLM2, importing Ecco with a pointer to scripts/setup_ecco.sh,
loading the model, and the versions recorded in their JSON. Imported, never run.

Both run with PYTHONPATH=$ECCO_PKGS $REFENV_PY (scripts/lib.sh): Ecco 0.1.2 and transformers
4.40.2 from $ECCO_PKGS, torch and numpy from the reference venv.
"""
import os
import platform
import sys
import time

# Ecco's model_config for SmolLM2 (a Llama): the embedding matrix captum differentiates against,
# the MLP output projections its activation hooks watch, and the tokenizer's word prefix.
ECCO_MODEL_CONFIG = {
    "embedding": "model.embed_tokens.weight",
    "type": "causal",
    "activations": [r"mlp\.down_proj"],
    "token_prefix": "Ġ",
    "partial_token_prefix": "",
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def default_model_dir():
    """$ECCO_MODEL, else $TOKENLENS_CACHE/ecco-model (TOKENLENS_CACHE: ~/.cache/tokenlens), as in
    scripts/lib.sh."""
    cache = os.environ.get("TOKENLENS_CACHE") or os.path.expanduser("~/.cache/tokenlens")
    return os.environ.get("ECCO_MODEL") or os.path.join(cache, "ecco-model")


def pkg_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:  # noqa: BLE001
        return None


def import_ecco(script):
    """Ecco's modules (ecco, ecco.lm, ecco.attribution, ecco.output, ecco.lm_plots), or an exit
    naming the setup script."""
    try:
        import ecco
        import ecco.attribution
        import ecco.lm
        import ecco.lm_plots
        import ecco.output
    except ImportError as e:
        raise SystemExit(f"cannot import ecco ({e}): run scripts/setup_ecco.sh and use "
                         f"PYTHONPATH=$ECCO_PKGS $REFENV_PY {script} (see scripts/lib.sh)")
    return ecco


def check_model_dir(model_dir):
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise SystemExit(f"error: {model_dir}: no Ecco model (config.json missing); run scripts/setup_ecco.sh "
                         "or set ECCO_MODEL")


def load(model_dir, *, activations, attention, hidden_states, stop_at_eos=False, eager=False):
    """ecco.from_pretrained on the checkpoint setup_ecco.sh made, in eval mode; EOS ignored in
    generation unless stop_at_eos. eager=True declares the model eager: with attention=True
    transformers 4.40's sdpa layers fall back to eager attention but keep the mask prepared for
    sdpa (none without padding), so they would attend to future positions; declared eager, the
    model builds the causal mask. Returns (lm, load seconds)."""
    import ecco

    check_model_dir(model_dir)
    t0 = time.perf_counter()
    lm = ecco.from_pretrained(model_dir, model_config=dict(ECCO_MODEL_CONFIG), activations=activations,
                              attention=attention, hidden_states=hidden_states, verbose=False, gpu=False)
    lm.model.eval()
    if eager:
        lm.model.config._attn_implementation = "eager"
    if not stop_at_eos:
        lm.model.generation_config.eos_token_id = None  # HF 4.40 greedy falls back to it otherwise
    return lm, time.perf_counter() - t0


def versions(lm, **extra):
    """The versions both scripts record, plus the attention implementation the model ran."""
    import captum
    import ecco
    import numpy as np
    import torch
    import transformers

    out = {
        "python": platform.python_version(),
        "ecco": getattr(ecco, "__version__", pkg_version("ecco")),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": pkg_version("tokenizers"),
        "captum": getattr(captum, "__version__", pkg_version("captum")),
        "numpy": np.__version__,
        "attn_implementation": getattr(lm.model.config, "_attn_implementation", None),
    }
    out.update(extra)
    return out


def warn_transformers_version():
    import transformers

    if not transformers.__version__.startswith("4.40."):
        log(f"warning: transformers {transformers.__version__}; Ecco 0.1.2 is set up here with 4.40.2")


def emit(result, out=None):
    """Prints the result as one JSON line, and writes it to `out` too if given."""
    import json

    line = json.dumps(result, ensure_ascii=False)
    print(line, flush=True)
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(line + "\n")
