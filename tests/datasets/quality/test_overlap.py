"""Inputs two sets share (train against validation, a test set against training data): exact and
near matches are all named, on thousands of texts full of unusual characters, and nothing else."""

from __future__ import annotations

import random

import numpy as np

from datasets.quality import minhash
from datasets.quality.overlap import EXACT, NEAR, input_text, overlaps

# Letters from several scripts, digits, emoji, combining marks, zero-width and right-to-left
# characters, tabs and non-breaking spaces: what pasted tickets contain.
ODD_WORD_CHARACTERS = "aé中ж日ßΩكש𝔘🙂1٣ñ\u0301\u200d"
ODD_SEPARATORS = [" ", "  ", "\t", "\u00a0", " — ", "\u200b ", ", ", " «", "» "]


def odd_text(rng: random.Random, words: int) -> str:
    parts = []
    for _ in range(words):
        word = "".join(rng.choice(ODD_WORD_CHARACTERS) for _ in range(rng.randint(3, 8)))
        parts.append(word + rng.choice(ODD_SEPARATORS))
    return "".join(parts).strip()


def near_copy(text: str) -> str:
    """The same words with the last one replaced: one word of ~40 changed, Jaccard ~0.95."""
    return text.rsplit(None, 1)[0] + " zzzzzzzz"


def test_thousands_of_odd_texts_yield_exactly_the_planted_pairs() -> None:
    rng = random.Random(20261205)
    left = [odd_text(rng, 40) for _ in range(3000)]
    right = [odd_text(rng, 40) for _ in range(600)]
    planted_exact = {(17, 3), (2999, 599), (1500, 42)}
    planted_near = {(5, 7), (2222, 300)}
    for i, j in planted_exact:
        # The same input, written with other case and white space.
        right[j] = "  " + left[i].upper().replace(" ", "\n ") + "\t"
    for i, j in planted_near:
        right[j] = near_copy(left[i])

    found = overlaps(left, right)

    assert {(o.left, o.right) for o in found if o.kind == EXACT} == planted_exact
    assert {(o.left, o.right) for o in found if o.kind == NEAR} == planted_near
    assert all(o.similarity >= 0.8 for o in found)
    assert [o.kind for o in found] == [EXACT] * 3 + [NEAR] * 2


def test_words_that_differ_in_one_character_do_not_make_near_duplicates() -> None:
    # Single-character words once hashed alike in pairs ("7" and "8", "a" and "b").
    tickets = [f"Ticket {n}, with a comma" for n in range(10)]
    assert overlaps(tickets[:5], tickets[5:]) == []
    assert overlaps(["a b c"], ["b a c"]) == []


def test_a_nul_character_inside_a_text_is_a_word_break_not_a_new_text() -> None:
    shingles = minhash.shingle(["one two\x00three four", "five six seven"])
    assert shingles.offsets.tolist() == [0, 2, 3]
    assert minhash.exact_jaccard("one two\x00three four", "one two three four") == 1.0


def test_every_crossing_pair_of_a_bucket_is_named_not_one_per_cluster() -> None:
    text = "the printer on the third floor jams on every second page"
    left = [text, "something else entirely different here", text, text]
    right = [text.upper(), text + " today"]
    found = overlaps(left, right)
    assert {(o.left, o.right, o.kind) for o in found} == {
        (0, 0, EXACT),
        (2, 0, EXACT),
        (3, 0, EXACT),
        (0, 1, NEAR),
        (2, 1, NEAR),
        (3, 1, NEAR),
    }


def test_near_matches_agree_with_a_brute_force_comparison() -> None:
    rng = random.Random(5)
    vocabulary = [f"w{i}" for i in range(3000)]
    base = [[rng.choice(vocabulary) for _ in range(60)] for _ in range(150)]
    left = [" ".join(words) for words in base]
    right = []
    for words in base[:100]:
        changed = list(words)
        for position in rng.sample(range(60), rng.randint(0, 5)):
            changed[position] = f"x{rng.randrange(10**9)}"
        right.append(" ".join(changed))
    shingled = minhash.shingle([*left, *right])
    sets = [
        set(shingled.hashes[shingled.offsets[k] : shingled.offsets[k + 1]].tolist())
        for k in range(len(left) + len(right))
    ]

    def jaccard(i: int, j: int) -> float:
        a, b = sets[i], sets[len(left) + j]
        return len(a & b) / len(a | b)

    truth = {(i, j) for i in range(len(left)) for j in range(len(right)) if jaccard(i, j) >= 0.9}
    found = {(o.left, o.right) for o in overlaps(left, right)}
    assert len(truth) > 20
    assert truth <= found  # everything clearly similar is caught
    for i, j in found:  # and what is caught is at least roughly similar
        assert jaccard(i, j) >= 0.6


def test_cross_candidate_pairs_of_empty_sets_are_empty() -> None:
    signatures = minhash.signatures(["a b c d"])
    assert minhash.cross_candidate_pairs(signatures, signatures[:0]).shape == (0, 2)
    assert minhash.cross_candidate_pairs(signatures[:0], signatures).shape == (0, 2)
    assert np.array_equal(minhash.cross_candidate_pairs(signatures, signatures), [[0, 0]])


def test_the_input_is_the_user_turns_only() -> None:
    messages = [
        {"role": "system", "content": "Triage."},
        {"role": "user", "content": "First"},
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "Second"},
        {"role": "assistant", "content": "B"},
    ]
    assert input_text(messages) == "First\nSecond"
