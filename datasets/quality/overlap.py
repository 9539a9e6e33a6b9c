"""Inputs that two sets share, exactly or nearly: train against validation at freeze, a test set
against a model's training data at evaluation (contamination).

Plain Python and numpy; callers pass the texts and get index pairs back. "Exact" compares the
inputs with case and runs of white space ignored; "near" is the MinHash estimate of word-shingle
Jaccard similarity at or above the threshold the quality report uses for near-duplicates.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .minhash import DEFAULT_THRESHOLD, cross_candidate_pairs, estimated_jaccard, signatures

EXACT = "exact"
NEAR = "near"
KIND_LABELS = {EXACT: "exact match", NEAR: "near-duplicate"}


@dataclass(frozen=True)
class Overlap:
    """Row ``left`` of the first set and row ``right`` of the second share their input."""

    left: int
    right: int
    kind: str  # EXACT or NEAR
    similarity: float  # 1.0 for an exact match, else the estimated Jaccard similarity

    @property
    def kind_label(self) -> str:
        return KIND_LABELS[self.kind]


def input_text(messages: Sequence[Mapping[str, object]]) -> str:
    """What a model is asked: the user turns of a chat, in order (system prompts are shared by
    every example of a task, and answers are not part of the input)."""
    return "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")


def normalized(text: str) -> str:
    return " ".join(text.casefold().split())


def _exact_overlaps(left: Sequence[str], right: Sequence[str]) -> list[Overlap]:
    rows_by_text: dict[str, list[int]] = defaultdict(list)
    for index, text in enumerate(left):
        rows_by_text[normalized(text)].append(index)
    return [
        Overlap(left=i, right=j, kind=EXACT, similarity=1.0)
        for j, text in enumerate(right)
        for i in rows_by_text.get(normalized(text), ())
    ]


def _near_overlaps(
    left: Sequence[str], right: Sequence[str], *, threshold: float, skip: set[tuple[int, int]]
) -> list[Overlap]:
    both = signatures([*left, *right])
    left_signatures, right_signatures = both[: len(left)], both[len(left) :]
    pairs = cross_candidate_pairs(left_signatures, right_signatures)
    if len(pairs) == 0:
        return []
    similarity = estimated_jaccard(both, pairs[:, 0], pairs[:, 1] + len(left))
    keep = similarity >= threshold
    return [
        Overlap(left=int(i), right=int(j), kind=NEAR, similarity=round(float(s), 3))
        for (i, j), s in zip(pairs[keep].tolist(), similarity[keep].tolist(), strict=True)
        if (i, j) not in skip
    ]


def overlaps(
    left: Sequence[str], right: Sequence[str], *, threshold: float = DEFAULT_THRESHOLD
) -> list[Overlap]:
    """Every (left row, right row) pair whose texts match exactly or nearly, exact ones first,
    each pair once, ordered by left then right row."""
    if not left or not right:
        return []
    exact = _exact_overlaps(left, right)
    near = _near_overlaps(left, right, threshold=threshold, skip={(o.left, o.right) for o in exact})
    return sorted(exact, key=lambda o: (o.left, o.right)) + sorted(
        near, key=lambda o: (o.left, o.right)
    )
