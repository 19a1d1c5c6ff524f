#!/usr/bin/env python3
"""Writes datasets/ioi-pairs.jsonl, a paired (clean / corrupted) dataset for activation patching and
contrastive saliency: indirect-object identification (IOI, Wang et al. 2022, "Interpretability in
the Wild"), and its sidecar datasets/ioi-pairs.json. Run with the reference venv (scripts/README.md):

    "$REFENV_PY" scripts/make_paired_dataset.py [--no-check-model] [--out FILE.jsonl]

One JSON object a line: `id` ("ioi-000"...), `clean` (the prompt), `corrupted` (the ABC corruption
of it), `answer` (the indirect object, the correct next token, with its leading space, e.g.
" Mary"), `foil` (the subject, the wrong one, e.g. " John"), `template` (index into TEMPLATES),
`order` ("ABBA": the indirect object is named first; "BABA": the subject is) and `names`
({"io", "s", "corrupted": the three names of the corrupted prompt in order}).

    clean:     When Mary and John went to the store, John gave a drink to     -> " Mary", not " John"
    corrupted: When Alice and Ben went to the store, Kate gave a drink to     (no information)

The ABC corruption replaces the three name slots (IO, S, S again) by three other distinct names,
none of them the answer or the foil: same template, place and object. ROWS_PER_CELL rows per
template and order (8 x 2 x 4 = 64), interleaved so that the first 16 rows already hold every
template in both orders. Names, places and objects are drawn by random.Random(SEED): a rerun writes
byte-identical files.

Checked with SmolLM2-135M-Instruct's tokenizer (the default model's GGUF, loaded by transformers;
no BOS, as tokenlens encodes prompts for this model), and the script fails on any miss: the
tokenizer gives the ids of tests/data/golden/smollm2.json (which tests/it/parity.rs checks
tokenlens' own tokenizer against); every name is one token with its leading space; clean and
corrupted have the same number of tokens and differ at exactly the three name positions, which
hold the names' own tokens; `answer` and `foil` are single tokens and differ; clean + answer
encodes as clean's ids followed by the answer's id (and the same for the foil).

With --check-model (the default; ~50 s on 2 cores, ~12 s without) the model itself
(transformers, every tensor dequantized to float32, one thread) scores every row: the logit
difference logit(answer) - logit(foil) at the last position of the clean and of the corrupted
prompt. The summary (mean, median, how many are positive, how often the answer is the top-1
token; per template and per order) and every row's two values go into the sidecar, with the
generator, seed, templates, names, counts, token lengths, the GGUF's sha256 and the versions. The
script fails when fewer than --min-accuracy (0.7) of the clean rows have a positive logit
difference. Rows are never filtered by the model's answer (how the templates were chosen:
TEMPLATE_SELECTION). --no-check-model writes the JSONL only
and leaves the sidecar as it is (warning when it no longer describes the JSONL).
"""

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF progress bar (a plain tqdm)
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from golden_util import ROOT, deterministic_setup, dump_json, fetch_model, sha256, versions  # noqa: E402

SEED = 0
ROWS_PER_CELL = 4          # rows per template and order
ORDERS = ("ABBA", "BABA")
GENERATOR = "scripts/make_paired_dataset.py"
DEFAULT_OUT = ROOT / "datasets" / "ioi-pairs.jsonl"
GOLDEN_SMOLLM2 = ROOT / "tests" / "data" / "golden" / "smollm2.json"

# Classic IOI templates, written with {A} and {B} for the first two name slots and {C} for the
# third (the subject, repeated). ABBA: A = IO, B = C = S. BABA: A = C = S, B = IO. {P}: a place,
# {O}: an object. Every one ends in " to". Template 0 is the paper's running example (Wang et al.
# 2022, Figure 1); 1-7 are seven of the fifteen BABA_TEMPLATES of its code (ioi_dataset.py),
# chosen for variety. TEMPLATE_SELECTION says how the model's scores entered the choice.
TEMPLATES = [
    "When {A} and {B} went to the {P}, {C} gave a {O} to",
    "Then, {A} and {B} went to the {P}. {C} gave a {O} to",
    "Then, {A} and {B} had a lot of fun at the {P}. {C} gave a {O} to",
    "Then, {A} and {B} were working at the {P}. {C} decided to give a {O} to",
    "Then, {A} and {B} had a long argument, and afterwards {C} said to",
    "After {A} and {B} went to the {P}, {C} gave a {O} to",
    "When {A} and {B} got a {O} at the {P}, {C} decided to give it to",
    "While {A} and {B} were commuting to the {P}, {C} gave a {O} to",
]

TEMPLATE_SELECTION = (
    "18 candidate templates (the 15 BABA templates of Wang et al.'s ioi_dataset.py, the paper's "
    "'When ... went to the store' example and two variants) were scored on SmolLM2 in a trial "
    "(12 random rows per template and order, not these rows); 17 had >= 92% positive clean logit "
    "differences, one ('Friends [A] and [B] found a [OBJECT] at the [PLACE]. [B] gave it to', "
    "ABBA: 25%) was left out for that reason; the 8 kept were chosen among the 17 for variety. "
    "Rows are not filtered by the model's answer."
)

# Common first names, each a single SmolLM2 token with its leading space (checked below); no name
# that is also a common word (Will, Mark, Rose, Grace, ...) and no near-duplicates (Ann/Anne).
NAMES = """Mary John Tom James Paul Anne Lisa Sarah Michael David Robert William Richard Thomas
    Daniel Andrew Kevin George Edward Jason Ryan Eric Emma Alice Kate Jane Laura Rachel Helen Susan
    Emily Sam Ben Alex Jack Peter Adam Joe Bob Mike Tim Frank Henry Lucy Karen Nancy Linda Julie
    Simon Oscar""".split()
PLACES = "store garden restaurant school hospital office house station park library market beach".split()
OBJECTS = "drink snack ring necklace book gift ball computer basketball flower cake letter".split()


def fill(template, order, io, s, place, obj):
    """The prompt of `template` with the indirect object `io` and the subject `s` in `order`."""
    a, b = (io, s) if order == "ABBA" else (s, io)
    return template.format(A=a, B=b, C=s, P=place, O=obj)


def make_rows():
    """ROWS_PER_CELL rows per template and order, interleaved: round k holds every template in
    both orders. Five distinct names a row: IO, S and the three corrupted names."""
    rng = random.Random(SEED)
    rows = []
    for _ in range(ROWS_PER_CELL):
        for ti, template in enumerate(TEMPLATES):
            for order in ORDERS:
                io, s, x, y, z = rng.sample(NAMES, 5)
                place, obj = rng.choice(PLACES), rng.choice(OBJECTS)
                rows.append({
                    "id": f"ioi-{len(rows):03d}",
                    "clean": fill(template, order, io, s, place, obj),
                    "corrupted": template.format(A=x, B=y, C=z, P=place, O=obj),
                    "answer": " " + io,
                    "foil": " " + s,
                    "template": ti,
                    "order": order,
                    "names": {"io": io, "s": s, "corrupted": [x, y, z]},
                })
    return rows


def fail(msg):
    sys.exit(f"error: {msg}")


def gguf_path():
    """The default model's GGUF: TOKENLENS_GGUF, or the file scripts/fetch-model.sh prints."""
    p = os.environ.get("TOKENLENS_GGUF")
    return Path(p) if p else fetch_model("smollm2")


def load_tokenizer(gguf):
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def encode(tok, text):
    """tokenlens' encoding of a prompt for SmolLM2: no BOS, no special tokens."""
    ids = tok(text, add_special_tokens=False).input_ids
    if tok(text).input_ids != ids:
        fail(f"the GGUF tokenizer adds special tokens to {text!r}; tokenlens does not")
    return ids


def check_tokenizer(tok):
    """The tokenizer gives the ids recorded in the SmolLM2 golden (which tokenlens matches)."""
    golden = json.loads(GOLDEN_SMOLLM2.read_text())
    checked = []
    for prompt, ids in zip(golden["prompts"], golden["input_ids"]):
        got = encode(tok, prompt)
        if got != ids:
            fail(f"tokenizer gives {got} for {prompt!r}, {GOLDEN_SMOLLM2.name} has {ids}")
        checked.append(prompt)
    for prompt, c in golden["tokenizer_check"].items():
        if encode(tok, prompt) != c["expected"]:
            fail(f"tokenizer gives {encode(tok, prompt)} for {prompt!r}, expected {c['expected']}")
    return checked


def single_token(tok, text):
    ids = encode(tok, text)
    if len(ids) != 1:
        fail(f"{text!r} is {len(ids)} tokens {ids} with SmolLM2's tokenizer, not one")
    return ids[0]


def check_rows(tok, rows):
    """Fails unless every row is a clean pair (module docstring); returns the clean token counts
    and the answer and foil ids."""
    name_id = {n: single_token(tok, " " + n) for n in NAMES}
    if len(set(name_id.values())) != len(NAMES) or len(set(NAMES)) != len(NAMES):
        fail("two names share a token")
    lengths, targets = [], []
    for r in rows:
        clean, corr = encode(tok, r["clean"]), encode(tok, r["corrupted"])
        if len(clean) != len(corr):
            fail(f"{r['id']}: clean is {len(clean)} tokens, corrupted {len(corr)}")
        diff = [i for i, (a, b) in enumerate(zip(clean, corr)) if a != b]
        n = r["names"]
        a, b = (n["io"], n["s"]) if r["order"] == "ABBA" else (n["s"], n["io"])
        if [clean[i] for i in diff] != [name_id[a], name_id[b], name_id[n["s"]]] or \
                [corr[i] for i in diff] != [name_id[x] for x in n["corrupted"]]:
            fail(f"{r['id']}: clean and corrupted differ at positions {diff}, not at the three names")
        if len({n["io"], n["s"], *n["corrupted"]}) != 5:
            fail(f"{r['id']}: the five names are not distinct")
        ans, foil = single_token(tok, r["answer"]), single_token(tok, r["foil"])
        if ans == foil:
            fail(f"{r['id']}: answer and foil are the same token")
        for t, tid in ((r["answer"], ans), (r["foil"], foil)):
            if encode(tok, r["clean"] + t) != clean + [tid]:
                fail(f"{r['id']}: clean + {t!r} does not encode as clean's ids + {tid}")
        lengths.append(len(clean))
        targets.append((ans, foil))
    return lengths, targets


def summarize(values):
    return {
        "n": len(values),
        "mean": round(statistics.fmean(values), 4),
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "positive": sum(v > 0 for v in values),
        "positive_fraction": round(sum(v > 0 for v in values) / len(values), 4),
    }


def score_rows(gguf, tok, rows, targets):
    """Every row's clean and corrupted logit difference logit(answer) - logit(foil) at the last
    position, and whether the answer is the clean prompt's top-1 token."""
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, attn_implementation="eager", dtype=torch.float32
    ).eval()
    out = []
    with torch.no_grad():
        for r, (ans, foil) in zip(rows, targets):
            ids = torch.tensor([encode(tok, r["clean"]), encode(tok, r["corrupted"])])
            last = model(ids).logits[:, -1].double()
            ld = (last[:, ans] - last[:, foil]).tolist()
            out.append({"clean": ld[0], "corrupted": ld[1], "top1": int(last[0].argmax()) == ans})
    return out, versions([torch, transformers], ["tokenizers", "gguf", "accelerate"])


def model_summary(rows, scores):
    def block(sel):
        sc = [s for r, s in zip(rows, scores) if sel(r)]
        return {
            "clean": summarize([s["clean"] for s in sc]),
            "corrupted": summarize([s["corrupted"] for s in sc]),
            "clean_top1": sum(s["top1"] for s in sc),
        }
    return {
        "all": block(lambda r: True),
        "by_order": {o: block(lambda r, o=o: r["order"] == o) for o in ORDERS},
        "by_template": [block(lambda r, t=t: r["template"] == t) for t in range(len(TEMPLATES))],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help="the JSONL to write (default datasets/ioi-pairs.jsonl); the sidecar is "
                         "its name with .json")
    ap.add_argument("--check-model", action=argparse.BooleanOptionalAction, default=True,
                    help="score every row with SmolLM2 and write the sidecar (default: on)")
    ap.add_argument("--min-accuracy", type=float, default=0.7,
                    help="fail when a smaller fraction of clean rows has a positive logit "
                         "difference (default 0.7)")
    args = ap.parse_args()
    t0 = time.monotonic()

    gguf = gguf_path()
    deterministic_setup()
    transformers.utils.logging.disable_progress_bar()
    tok = load_tokenizer(gguf)
    checked = check_tokenizer(tok)
    rows = make_rows()
    lengths, targets = check_rows(tok, rows)
    print(f"{len(rows)} rows, {len(TEMPLATES)} templates x {len(ORDERS)} orders x {ROWS_PER_CELL}; "
          f"tokenizer ids equal {GOLDEN_SMOLLM2.name}'s on {len(checked)} prompts; every pair "
          f"checked: clean = corrupted in length ({min(lengths)}-{max(lengths)} tokens), they "
          f"differ at the three names only, answer and foil one token each")

    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    jsonl_sha = hashlib.sha256(text.encode()).hexdigest()
    sidecar = args.out.with_suffix(".json")

    if not args.check_model:
        args.out.write_text(text)
        print(f"wrote {args.out} ({len(rows)} rows); --no-check-model: {sidecar.name} left as it is")
        if not sidecar.exists() or json.loads(sidecar.read_text()).get("jsonl_sha256") != jsonl_sha:
            print(f"warning: {sidecar} does not describe this JSONL; rerun with --check-model",
                  file=sys.stderr)
        return

    scores, vers = score_rows(gguf, tok, rows, targets)
    summary = model_summary(rows, scores)
    a = summary["all"]
    for kind in ("clean", "corrupted"):
        s = a[kind]
        print(f"{kind:>9} logit diff: mean {s['mean']:+.3f}, median {s['median']:+.3f}, "
              f"range [{s['min']:+.3f}, {s['max']:+.3f}], positive {s['positive']}/{s['n']}")
    print(f"answer is the clean prompt's top-1 token in {a['clean_top1']}/{len(rows)} rows")
    for t, b in enumerate(summary["by_template"]):
        print(f"  template {t}: clean mean {b['clean']['mean']:+.3f} ({b['clean']['positive']}/"
              f"{b['clean']['n']} positive), corrupted mean {b['corrupted']['mean']:+.3f}")
    if a["clean"]["positive_fraction"] < args.min_accuracy:
        fail(f"only {a['clean']['positive']}/{len(rows)} clean rows have a positive logit "
             f"difference (< {args.min_accuracy}); change the templates")

    lens_by_t = {}
    for r, n in zip(rows, lengths):
        lens_by_t.setdefault(r["template"], set()).add(n)
    meta = {
        "dataset": args.out.name,
        "generator": GENERATOR,
        "command": '"$REFENV_PY" scripts/make_paired_dataset.py',
        "task": "indirect-object identification (Wang et al. 2022), ABC corruption",
        "seed": SEED,
        "rows": len(rows),
        "rows_per_template_and_order": ROWS_PER_CELL,
        "filtered_by_model": False,
        "template_selection": TEMPLATE_SELECTION,
        "fields": {
            "id": "ioi-NNN",
            "clean": "the prompt",
            "corrupted": "the same template, place and object with the three name slots replaced "
                         "by three other distinct names",
            "answer": "the indirect object with its leading space: the correct next token of clean",
            "foil": "the subject with its leading space: the wrong next token",
            "template": "index into templates",
            "order": "ABBA (the indirect object named first) or BABA (the subject named first)",
            "names": "io, s, and corrupted: the corrupted prompt's three names in order",
        },
        "templates": TEMPLATES,
        "template_slots": "{A} {B}: the first two names, {C}: the third (the subject again); "
                          "ABBA: A = IO, B = C = S; BABA: A = C = S, B = IO; {P} place, {O} object",
        "names": NAMES,
        "places": PLACES,
        "objects": OBJECTS,
        "counts": {
            "by_template": [sum(r["template"] == t for r in rows) for t in range(len(TEMPLATES))],
            "by_order": {o: sum(r["order"] == o for r in rows) for o in ORDERS},
        },
        "tokens": {
            "tokenizer": "SmolLM2-135M-Instruct's, from the GGUF by transformers; no BOS "
                         "(as tokenlens encodes prompts for this model)",
            "tokenizer_checked_against": f"tests/data/golden/{GOLDEN_SMOLLM2.name} input_ids "
                                         f"({len(checked)} prompts)",
            "clean_equals_corrupted_length": True,
            "prompt_tokens": {"min": min(lengths), "max": max(lengths), "total": sum(lengths)},
            "prompt_tokens_by_template": [sorted(lens_by_t[t]) for t in range(len(TEMPLATES))],
        },
        "model_check": {
            "model": gguf.name,
            "gguf_sha256": sha256(gguf),
            "load": "transformers AutoModelForCausalLM, gguf_file, every tensor dequantized to "
                    "float32, eager attention, one thread",
            "metric": "logit(answer) - logit(foil) at the last position of the prompt",
            "min_accuracy": args.min_accuracy,
            "summary": summary,
            "per_row": {r["id"]: [round(s["clean"], 4), round(s["corrupted"], 4)]
                        for r, s in zip(rows, scores)},
            "per_row_note": "[clean, corrupted] logit difference",
        },
        "jsonl_sha256": jsonl_sha,
        "versions": vers,
    }
    args.out.write_text(text)
    sidecar.write_text(dump_json(meta))
    print(f"wrote {args.out} ({len(rows)} rows) and {sidecar} in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
