#!/usr/bin/env python3
"""Writes the memory benchmark's prompt dataset: plain English of widely varied lengths, made
from a seeded word grammar, deterministic (same arguments, same bytes), python3 stdlib only.

    python3 scripts/make_bench_dataset.py --scale 1  --out target/bench-memory/data-x1.jsonl
    python3 scripts/make_bench_dataset.py --scale 10 --out target/bench-memory/data-x10.jsonl

The dataset is `scale * BLOCKS` blocks of `len(PROFILE)` prompts. Every block holds one prompt of
each length in PROFILE (3 to 200 tokens of SmolLM2's tokenizer, the default model), in a seeded
order. With `batching.bucket_window` equal to the block size (pipelines/bench-memory.yaml), every
window of the run sees the same lengths, so its batches are alike and peak memory can be compared
across scales: a larger dataset only adds windows, never a longer batch.

Prompt i is the same text at every scale (the 1x dataset is the first rows of the 10x one), and
every prompt is different (no repeated text, at any scale): a run cannot be flattered by caching
or deduplication. Lengths are exact: every word of the grammar is one token with its leading space
(and the first word of a prompt one token without it), as are `,`, `.` and `?`, so a prompt's
token count is the number of words and punctuation marks (the `tokens` field; `tokenlens` adds no
BOS for this model). scripts/bench_memory.sh checks the run's token count against the sum.
"""

import argparse
import json
import random
import sys

# Prompt lengths in tokens: one of each per block (= bucket_window in bench-memory.yaml).
PROFILE = [3, 5, 9, 16, 30, 55, 100, 200]
# Blocks at scale 1.
BLOCKS = 5

# Every word below was checked to be a single token of SmolLM2-135M-Instruct's tokenizer with a
# leading space (`tokenlens tokenize`), and each START word also without it.
WORDS = {
    "det": "the a every one this that my our their his her some another each".split(),
    "adj": """old young small large quiet busy bright dark cold warm heavy light tall short happy
        sad quick slow green blue red white black brown golden silver wooden early late strong
        calm wild gentle careful clever tired hungry empty full long narrow wide deep simple
        strange famous local secret modern ancient little big new soft hard clean dirty lucky
        brave""".split(),
    "noun": """farmer teacher doctor child girl boy dog cat horse bird king queen soldier sailor
        river mountain forest village city house garden road bridge tower market school church
        castle window door table chair book letter map key box bottle cup knife boat ship train
        car wheel storm wind rain snow sun moon star night morning evening winter summer spring
        island lake sea field hill valley stone tree flower apple bread coffee tea music song
        story picture camera phone computer machine engine clock lamp candle fire water student
        artist writer baker driver nurse captain pilot friend family neighbor stranger cook guard
        hunter scientist lawyer""".split(),
    "verb_t": """found lost carried opened closed watched painted cleaned built fixed moved visited
        followed left sold bought wrote read saw heard called pushed pulled kept held dropped
        caught sent brought took made gave showed chose crossed reached""".split(),
    "verb_i": """walked ran waited slept laughed smiled stopped arrived returned worked played
        danced sang jumped fell stayed listened""".split(),
    "verb_base": """find lose carry open close watch paint clean build fix move visit follow leave
        sell buy write read see hear call push pull keep hold drop catch send bring take make
        give show choose cross reach""".split(),
    "prep": """in on at near under behind beside through across into over from with without
        after before""".split(),
    "adv": "slowly quickly quietly suddenly finally carefully again soon later never always often".split(),
    "conj": "and but so because while when".split(),
    "name": "Anna Maria John Peter Paul David Sarah James Tom Mary Robert Alice Henry".split(),
    "aux": "did will could would should".split(),
}
# Sentence openers: single tokens with and without a leading space.
CAP_DET = {"the": "The", "a": "A", "an": "An", "every": "Every", "one": "One", "our": "Our",
           "my": "My", "his": "His", "her": "Her"}
TIME = [["Later"], ["Then"], ["After", "that"]]
QUESTION = ["Why", "How", "Where", "When"]
VOWELS = "aeiou"


class Grammar:
    """Sentences as lists of tokens: words (the first of a prompt without its leading space) and
    the punctuation marks `,` `.` `?`, each one token."""

    def __init__(self, rng):
        self.r = rng

    def w(self, kind):
        return self.r.choice(WORDS[kind])

    def np(self, cap=False, adj=None):
        """Determiner, optional adjective, noun ('a' becomes 'an' before a vowel)."""
        det = self.r.choice([d for d in WORDS["det"] if not cap or d in CAP_DET])
        words = [self.w("adj")] if (self.r.random() < 0.6 if adj is None else adj) else []
        words.append(self.w("noun"))
        if det == "a" and words[0][0] in VOWELS:
            det = "an"
        return [CAP_DET[det] if cap else det] + words

    def sentence(self):
        k = self.r.randrange(6)
        if k == 0:
            return self.np(cap=True) + [self.w("verb_t")] + self.np() + [self.w("prep")] + self.np() + ["."]
        if k == 1:
            return ([self.w("name"), self.w("verb_i"), self.w("prep")] + self.np(adj=True)
                    + [",", self.w("conj")] + self.np() + [self.w("verb_i"), self.w("adv"), "."])
        if k == 2:
            return self.r.choice(TIME) + [","] + self.np() + [self.w("verb_t")] + self.np(adj=True) + ["."]
        if k == 3:
            return ([self.r.choice(QUESTION), self.w("aux")] + self.np() + [self.w("verb_base")]
                    + self.np() + ["?"])
        if k == 4:
            return (["In"] + self.np(adj=True) + [",", self.w("name"), self.w("verb_t")] + self.np()
                    + [self.w("adv"), "."])
        return (self.np(cap=True) + [self.w("verb_i"), self.w("adv"), self.w("prep")] + self.np()
                + [self.w("conj"), self.w("name"), self.w("verb_t")] + self.np(adj=True)
                + [self.w("prep")] + self.np() + ["."])

    def prompt(self, n_tokens):
        """Exactly n_tokens tokens: whole sentences, the last one cut where the length ends (a
        prompt to continue), never ending on a comma."""
        toks = []
        while len(toks) < n_tokens + 1:
            toks += self.sentence()
        toks = toks[:n_tokens]
        if toks[-1] == ",":
            toks[-1] = "and"
        text = toks[0]
        for t in toks[1:]:
            text += t if t in (",", ".", "?") else " " + t
        return text


def prompts(scale, seed):
    """(id, text, tokens) of every prompt, in dataset order."""
    seen = set()
    for b in range(scale * BLOCKS):
        order = list(PROFILE)
        random.Random(f"order:{seed}:{b}").shuffle(order)
        for j, n in enumerate(order):
            i = b * len(PROFILE) + j
            g = Grammar(random.Random(f"prompt:{seed}:{i}"))
            text = g.prompt(n)
            while text in seen:  # every prompt different (only the shortest can collide)
                text = g.prompt(n)
            seen.add(text)
            yield f"b{b:04d}-{j:02d}", text, n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=int, default=1, help=f"blocks = scale x {BLOCKS}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="-", help="jsonl file to write (default: stdout)")
    ap.add_argument("--block", action="store_true", help="print the block size and exit")
    a = ap.parse_args()
    if a.block:
        print(len(PROFILE))
        return
    if a.scale < 1:
        ap.error("--scale must be at least 1")
    f = sys.stdout if a.out == "-" else open(a.out, "w", encoding="utf-8")
    count = tokens = 0
    with f:
        for pid, text, n in prompts(a.scale, a.seed):
            f.write(json.dumps({"id": pid, "text": text, "tokens": n}) + "\n")
            count += 1
            tokens += n
    print(f"{count} prompts, {tokens} prompt tokens, blocks of {len(PROFILE)}", file=sys.stderr)


if __name__ == "__main__":
    main()
