"""The freeze's train/validation overlap check (exact and near-duplicate inputs, MinHash with a
banded join across the two sides) against a brute-force baseline that compares every train
input with every validation input by the exact Jaccard similarity of their word shingles, on the
same generated texts full of unusual characters, in this run.

    python bench/leak.py [--train 4000] [--validation 800] [--repeats 3]

The check must name every pair the baseline finds at or above 0.9 (it aims at 0.8, like the
quality report's near-duplicates) and cost well under a second for a few thousand examples. The
last line is key=value.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script, Python puts bench/ on sys.path, not the root

from datasets.quality.minhash import shingle  # noqa: E402
from datasets.quality.overlap import normalized, overlaps  # noqa: E402

CHARACTERS = "aé中ж日ßΩكש𝔘🙂1٣ñ\u0301\u200dxyzkq"
SEPARATORS = [" ", "  ", "\t", "\u00a0", " — ", ", ", " «", "» "]


def ticket(rng: random.Random, words: int) -> str:
    parts = []
    for _ in range(words):
        word = "".join(rng.choice(CHARACTERS) for _ in range(rng.randint(3, 8)))
        parts.append(word + rng.choice(SEPARATORS))
    return "".join(parts).strip()


def generated(train: int, validation: int) -> tuple[list[str], list[str], int]:
    """Random tickets, with 1 % of validation copied from train exactly and 1 % nearly."""
    rng = random.Random(12)
    left = [ticket(rng, rng.randint(8, 60)) for _ in range(train)]
    right = [ticket(rng, rng.randint(8, 60)) for _ in range(validation)]
    planted = max(1, validation // 100)
    for j in range(planted):
        right[j] = left[j * 7].upper()
        source = left[j * 11 + 1]
        # The last word replaced, only when there are enough words for that to stay near.
        right[planted + j] = source.rsplit(" ", 1)[0] + " zzzz" if len(source) > 300 else source
    return left, right, 2 * planted


def brute_force(left: list[str], right: list[str], threshold: float) -> set[tuple[int, int]]:
    """Every pair compared: exact text match, or exact shingle Jaccard at the threshold."""
    shingled = shingle([*left, *right])
    sets = [
        frozenset(shingled.hashes[shingled.offsets[k] : shingled.offsets[k + 1]].tolist())
        for k in range(len(left) + len(right))
    ]
    texts = [normalized(t) for t in [*left, *right]]
    found = set()
    for i in range(len(left)):
        a = sets[i]
        for j in range(len(right)):
            b = sets[len(left) + j]
            if texts[i] == texts[len(left) + j] or len(a & b) >= threshold * len(a | b):
                found.add((i, j))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--validation", type=int, default=800)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    left, right, planted = generated(args.train, args.validation)

    ours: list[float] = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        found = overlaps(left, right)
        ours.append(time.perf_counter() - started)
    started = time.perf_counter()
    truth = brute_force(left, right, 0.9)
    baseline = time.perf_counter() - started

    named = {(o.left, o.right) for o in found}
    missed = truth - named
    check = statistics.median(ours)
    print(f"{args.train} train x {args.validation} validation inputs, {planted} pairs planted")
    print(f"overlap check (median of {args.repeats}): {check:.3f} s, {len(found)} pairs")
    print(f"brute force, every pair:         {baseline:.3f} s, {len(truth)} pairs at >= 0.9")
    print(f"missed by the check: {len(missed)}")
    print(
        f"train={args.train} validation={args.validation} check_s={check:.4f} "
        f"baseline_s={baseline:.4f} speedup={baseline / check:.1f} pairs={len(found)} "
        f"baseline_pairs={len(truth)} missed={len(missed)}"
    )


if __name__ == "__main__":
    main()
