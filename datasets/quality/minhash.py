"""MinHash signatures and LSH banding over word shingles, vectorised with numpy.

Near-duplicates are found without comparing all pairs: each text gets a signature of
``NUM_PERMUTATIONS`` minimum hashes; the signature is cut into ``BANDS`` bands of ``ROWS`` rows,
and only texts that agree on a whole band become candidates, which are then checked by their
estimated Jaccard similarity (the share of equal signature entries).

Choice of bands and rows, for a ~0.8 Jaccard threshold: with b bands of r rows a pair of
similarity s becomes a candidate with probability 1 - (1 - s^r)^b; the curve is steepest near
(1/b)^(1/r). With b=16, r=8 (128 hashes) that point is 0.71, a little under 0.8 on purpose:
pairs at 0.8 are caught with probability 0.95 and pairs at 0.9 with 0.9998, while pairs at
0.3 become candidates with probability 0.0010, and candidates are verified at 0.8 anyway.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NUM_PERMUTATIONS = 128
BANDS = 16
ROWS = 8
SHINGLE_WORDS = 3
DEFAULT_THRESHOLD = 0.8
SEED = 20261128

_WORD = re.compile(r"\w+")
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
# Odd 64-bit constants for mixing word ids into one shingle hash (splitmix64's multipliers).
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


@dataclass(frozen=True)
class Shingles:
    """Shingle hashes of all texts, concatenated: text i owns hashes[offsets[i]:offsets[i+1]]."""

    hashes: np.ndarray  # uint64
    offsets: np.ndarray  # int64, len = texts + 1


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def shingle(texts: Sequence[str], *, k: int = SHINGLE_WORDS) -> Shingles:
    """Hashes of the k-word shingles of each text, computed with numpy over the bytes of all
    texts at once (no Python work per word). Words are runs of letters, digits, underscores
    and non-ASCII characters, compared case-folded. A text shorter than k words is one shingle
    (an empty text gets a fixed "empty" shingle, so every text has at least one)."""
    # NUL separates the texts below, so a NUL inside a text (a word break anyway) becomes a space.
    joined = "\x00".join(t.replace("\x00", " ") for t in texts).casefold()
    data = np.frombuffer(joined.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    is_word = (
        ((data >= 48) & (data <= 57))
        | ((data >= 97) & (data <= 122))
        | (data == 95)
        | (data >= 128)
        | ((data >= 65) & (data <= 90))
    )
    edges = np.diff(np.concatenate(([False], is_word, [False])).astype(np.int8))
    word_starts = np.flatnonzero(edges == 1)
    word_ends = np.flatnonzero(edges == -1)
    # Polynomial hash of each word from prefix sums: sum c_i P^i over the word, divided by
    # P^start (P is odd, so it has an inverse modulo 2^64 and wrapping arithmetic is exact).
    with np.errstate(over="ignore"):
        powers = np.cumprod(np.full(len(data) + 1, _P, dtype=np.uint64))
        powers[1:] = powers[:-1]
        powers[0] = 1
        prefix = np.zeros(len(data) + 1, dtype=np.uint64)
        np.cumsum((data.astype(np.uint64) + np.uint64(1)) * powers[:-1], out=prefix[1:])
        inverse_powers = np.cumprod(np.full(len(data) + 1, _P_INVERSE, dtype=np.uint64))
        inverse = np.ones(len(word_starts), dtype=np.uint64)
        nonzero = word_starts > 0
        inverse[nonzero] = inverse_powers[word_starts[nonzero] - 1]
        word_hash = (prefix[word_ends] - prefix[word_starts]) * inverse
        # Mixed with an odd multiplier and a shift (both one-to-one), so that words whose raw
        # hashes differ only in low bits ("7" and "8", "a" and "b") stay apart.
        word_hash *= _MIX[0]
        word_hash ^= word_hash >> np.uint64(29)
    # 0 is the padding value for short texts; only a word hashing to exactly 0 is moved.
    word_hash[word_hash == 0] = np.uint64(1)
    separators = np.flatnonzero(data == 0)
    text_of_word = np.searchsorted(separators, word_starts)
    lengths = np.bincount(text_of_word, minlength=len(texts)).astype(np.int64)
    starts = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    # Shingle j of a text covers its words j .. j+k-1; a short text has one shingle over all
    # its words, padded with zeros.
    counts = np.maximum(lengths - (k - 1), 1)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    owner = np.repeat(np.arange(len(texts), dtype=np.int64), counts)
    first_word = starts[:-1][owner] + (np.arange(total, dtype=np.int64) - offsets[:-1][owner])
    ends = starts[1:][owner]
    hashes = np.zeros(total, dtype=np.uint64)
    last = max(len(word_hash) - 1, 0)
    with np.errstate(over="ignore"):
        for step in range(k):
            position = first_word + step
            word = (
                np.where(position < ends, word_hash[np.minimum(position, last)], np.uint64(0))
                if len(word_hash)
                else np.zeros(total, dtype=np.uint64)
            )
            hashes = (hashes ^ word) * _MIX[step % len(_MIX)]
            hashes ^= hashes >> np.uint64(31)
    return Shingles(hashes=hashes, offsets=offsets)


_P = np.uint64(0x100000001B3)  # an odd multiplier (FNV-1's 64-bit prime)
_P_INVERSE = np.uint64(pow(int(_P), -1, 2**64))


def _permutations(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(seed)
    a = generator.integers(1, 2**63, size=count, dtype=np.uint64) | np.uint64(1)
    b = generator.integers(0, 2**63, size=count, dtype=np.uint64)
    return a, b


def signatures(
    texts: Sequence[str],
    *,
    num_permutations: int = NUM_PERMUTATIONS,
    seed: int = SEED,
    chunk_texts: int = 4096,
) -> np.ndarray:
    """MinHash signature of each text: (texts, num_permutations) uint32.

    Each permutation is a multiply-shift hash (a*x + b mod 2^64, top 32 bits); the minimum per
    text is taken with ``np.minimum.reduceat``. Texts go in chunks so the arrays being
    permuted stay in the processor's cache.
    """
    result = np.empty((len(texts), num_permutations), dtype=np.uint32)
    a, b = _permutations(num_permutations, seed)
    for first in range(0, len(texts), chunk_texts):
        shingles = shingle(texts[first : first + chunk_texts])
        starts = shingles.offsets[:-1]
        block = result[first : first + chunk_texts]
        with np.errstate(over="ignore"):
            for column in range(num_permutations):
                permuted = (shingles.hashes * a[column] + b[column]) >> np.uint64(32)
                block[:, column] = np.minimum.reduceat(permuted, starts)
    return result


def estimated_jaccard(signatures_: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Share of equal signature entries for each (left[i], right[i]) pair."""
    if len(left) == 0:
        return np.zeros(0)
    out = np.empty(len(left))
    chunk = 65_536  # bounds memory: chunk x permutations booleans at a time
    for start in range(0, len(left), chunk):
        stop = start + chunk
        equal = signatures_[left[start:stop]] == signatures_[right[start:stop]]
        out[start:stop] = equal.mean(axis=1)
    return out


def band_keys(signatures_: np.ndarray, band: int, *, rows: int = ROWS) -> np.ndarray:
    """One 64-bit key per text for one band: texts with equal keys agree on the whole band."""
    columns = signatures_[:, band * rows : (band + 1) * rows].astype(np.uint64)
    key = np.zeros(signatures_.shape[0], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for row in range(rows):
            key = (key ^ columns[:, row]) * _MIX[row % len(_MIX)]
            key ^= key >> np.uint64(29)
    return key


def _check_bands(signatures_: np.ndarray, bands: int, rows: int) -> None:
    if bands * rows > signatures_.shape[1]:
        raise ValueError(f"{bands} bands x {rows} rows need {bands * rows} hashes")


def candidate_pairs(signatures_: np.ndarray, *, bands: int = BANDS, rows: int = ROWS) -> np.ndarray:
    """Pairs (i < j) that agree on at least one whole band, as an (n, 2) int64 array.

    Within a bucket each member is paired with the bucket's first member only, so a bucket of
    m identical-looking texts costs m - 1 pairs, not m^2; clusters are joined afterwards.
    """
    texts = signatures_.shape[0]
    if texts < 2:
        return np.zeros((0, 2), dtype=np.int64)
    _check_bands(signatures_, bands, rows)
    pairs: list[np.ndarray] = []
    for band in range(bands):
        key = band_keys(signatures_, band, rows=rows)
        order = np.argsort(key, kind="stable")
        sorted_keys = key[order]
        new_bucket = np.empty(texts, dtype=bool)
        new_bucket[0] = True
        new_bucket[1:] = sorted_keys[1:] != sorted_keys[:-1]
        bucket_start = np.maximum.accumulate(np.where(new_bucket, np.arange(texts), 0))
        members = ~new_bucket
        if members.any():
            leader = order[bucket_start[members]]
            pairs.append(np.stack([leader, order[members]], axis=1))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    found = np.concatenate(pairs)
    found.sort(axis=1)
    return np.unique(found, axis=0)


def cross_candidate_pairs(
    left: np.ndarray, right: np.ndarray, *, bands: int = BANDS, rows: int = ROWS
) -> np.ndarray:
    """Pairs (i, j), i a row of ``left`` and j a row of ``right``, that agree on at least one
    whole band, as an (n, 2) int64 array.

    Unlike ``candidate_pairs`` every left member of a bucket meets every right member of it:
    comparing two sets (train against validation) must name each crossing pair, not one per
    cluster. Each band is a sorted-key join, so no pair that shares no band is ever formed.
    """
    if len(left) == 0 or len(right) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    _check_bands(left, bands, rows)
    _check_bands(right, bands, rows)
    pairs: list[np.ndarray] = []
    for band in range(bands):
        left_keys = band_keys(left, band, rows=rows)
        right_keys = band_keys(right, band, rows=rows)
        order = np.argsort(right_keys, kind="stable")
        sorted_keys = right_keys[order]
        low = np.searchsorted(sorted_keys, left_keys, side="left")
        counts = np.searchsorted(sorted_keys, left_keys, side="right") - low
        total = int(counts.sum())
        if total == 0:
            continue
        left_index = np.repeat(np.arange(len(left), dtype=np.int64), counts)
        # Position of each pair inside its left row's run of matches, added to where the run
        # starts in the sorted right keys.
        run_start = np.repeat(np.cumsum(counts) - counts, counts)
        within = np.arange(total, dtype=np.int64) - run_start
        right_index = order[np.repeat(low, counts) + within]
        pairs.append(np.stack([left_index, right_index.astype(np.int64)], axis=1))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(pairs), axis=0)


def similar_pairs(
    signatures_: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs whose estimated Jaccard is at least ``threshold``, with that estimate."""
    pairs = candidate_pairs(signatures_)
    if len(pairs) == 0:
        return pairs, np.zeros(0)
    similarity = estimated_jaccard(signatures_, pairs[:, 0], pairs[:, 1])
    keep = similarity >= threshold
    return pairs[keep], similarity[keep]


def exact_jaccard(left: str, right: str, *, k: int = SHINGLE_WORDS) -> float:
    """Exact Jaccard similarity of two texts' shingle sets (for tests and spot checks)."""
    shingled = shingle([left, right], k=k)
    a = set(shingled.hashes[shingled.offsets[0] : shingled.offsets[1]].tolist())
    b = set(shingled.hashes[shingled.offsets[1] : shingled.offsets[2]].tolist())
    return len(a & b) / len(a | b) if a | b else 1.0
