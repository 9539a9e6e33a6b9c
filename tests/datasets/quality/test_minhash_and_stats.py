"""MinHash + LSH finds ~0.9-similar texts and not ~0.3-similar ones; stats and readiness bands."""

from __future__ import annotations

import random
from decimal import Decimal

import numpy as np
import pytest

from datasets.quality import minhash
from datasets.quality.stats import NO_PRICE_NOTE, readiness_band, token_stats
from datasets.quality.tokens import ConversationTokens


def variant(words: list[str], rng: random.Random, every: int, start: int = 3) -> str:
    """Replace every ``every``-th word (from ``start``): each replaced word breaks 3 shingles."""
    return " ".join(
        f"x{rng.randrange(10**9)}" if i >= start and (i - start) % every == 0 else w
        for i, w in enumerate(words)
    )


def test_pairs_near_0_9_are_found_and_pairs_near_0_3_are_not():
    rng = random.Random(11)
    vocabulary = [f"w{i}" for i in range(20000)]
    texts: list[str] = []
    high: list[tuple[int, int]] = []
    low: list[tuple[int, int]] = []
    for _ in range(40):
        words = [rng.choice(vocabulary) for _ in range(200)]
        texts.append(" ".join(words))
        texts.append(variant(words, rng, 70, start=40))  # 3 words: ~0.91 Jaccard
        texts.append(variant(words, rng, 6))  # 33 words: ~0.33 Jaccard
        base = len(texts) - 3
        high.append((base, base + 1))
        low.append((base, base + 2))
    for left, right in high[:3]:
        assert 0.85 < minhash.exact_jaccard(texts[left], texts[right]) < 0.97
    for left, right in low[:3]:
        assert 0.2 < minhash.exact_jaccard(texts[left], texts[right]) < 0.4
    pairs, similarity = minhash.similar_pairs(minhash.signatures(texts))
    found = {tuple(p) for p in pairs.tolist()}
    assert sum(pair in found for pair in high) >= 38  # LSH recall at 0.9 is ~0.9998
    assert not any(pair in found for pair in low)
    assert np.all(similarity >= minhash.DEFAULT_THRESHOLD)


def test_signature_agreement_estimates_jaccard():
    rng = random.Random(5)
    words = [f"w{i}" for i in range(400)]
    left = " ".join(words)
    right = " ".join(words[:300] + [f"y{rng.randrange(10**6)}" for _ in range(100)])
    signature = minhash.signatures([left, right], num_permutations=512)
    estimate = minhash.estimated_jaccard(signature, np.array([0]), np.array([1]))[0]
    assert abs(estimate - minhash.exact_jaccard(left, right)) < 0.07


def test_buckets_cost_linear_pairs_not_quadratic():
    texts = ["the same words in every text here"] * 500
    pairs = minhash.candidate_pairs(minhash.signatures(texts))
    assert len(pairs) == 499


def test_shingles_are_case_insensitive_and_short_texts_still_get_one():
    assert minhash.exact_jaccard("Hello World again", "hello world AGAIN") == 1.0
    shingles = minhash.shingle(["", "one", "one two three four"])
    assert np.diff(shingles.offsets).tolist() == [1, 1, 2]


@pytest.mark.parametrize(
    ("count", "band", "label"),
    [
        (99, "insufficient", "insufficient data"),
        (100, "recommended_start", "the recommended start"),
        (500, "recommended_start", "the recommended start"),
        (501, "fine", "more than the recommended start"),
    ],
)
def test_readiness_bands_follow_the_guide(count, band, label):
    assert readiness_band(count)["band"] == band
    assert readiness_band(count)["label"] == label


def test_token_stats_and_cost():
    tokens = ConversationTokens(prompt=np.array([10, 20, 30, 40]), answer=np.array([1, 2, 3, 4]))
    stats = token_stats(tokens, tokenizer="t", usd_per_million_tokens=Decimal("3.00"))
    assert stats["prompt_tokens"] == {"min": 10, "mean": 25.0, "p95": 38.5, "max": 40}
    assert stats["answer_tokens"]["max"] == 4
    assert stats["tokens_per_epoch"] == 110
    assert stats["training_tokens"] == 330
    assert stats["cost_usd"] == pytest.approx(330 * 3 / 1_000_000, abs=1e-4)
    local = token_stats(tokens, tokenizer="t")
    assert local["cost_usd"] is None and local["cost_note"] == NO_PRICE_NOTE
