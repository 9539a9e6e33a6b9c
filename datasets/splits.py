"""Which side of a freeze's split each example takes when the answers are labels.

With a label-set answer contract, a plain random split leaves rare labels out of validation
(15 of several dozen labels, measured in issue 18), so nothing measures them, and a label with
two examples may lose both to validation, so nothing teaches it. The draw here is per label:

- every label with at least two examples gets at least one on each side;
- a label with one example stays in training (and the readiness report names it);
- the rest of the held-out seats go to the labels furthest below their share of the
  validation fraction, so the validation share stays close to it overall;
- a carried split keeps each earlier example's side and places only the new ones, filling the
  labels that lack a side first.

Every choice is seeded: within a label, examples are taken in the order of a hash of the seed
and their id, and ties between labels in the order of a hash of the seed and the label, so the
same examples, seed and fraction always give the same split, whatever else changes.
``services.dataset_version_freeze`` calls this before ``held_out.follow_origins``, and
``labels_on_both_sides`` after it. No queries here.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .contracts import LABEL_SET
from .models import Split


def validation_target(count: int, validation_fraction: float) -> int:
    """How many of ``count`` examples validation holds: the fraction, rounded, at least one."""
    return max(1, round(count * validation_fraction))


def seeded_rank(seed: int, key: int | str) -> str:
    """A per-example (or per-label) draw that does not depend on which others are present."""
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def answer_labels(contract: Mapping[str, Any], answers: Iterable[str]) -> list[str] | None:
    """Each answer's label, as the contract checks it (the answer without surrounding
    whitespace), when the contract is a label set; None for any other contract. An answer that
    is not one of the labels (frozen with an override) is a label of its own here."""
    if not contract or contract.get("kind") != LABEL_SET:
        return None
    return [answer.strip() for answer in answers]


def _positions_by_label(labels: Sequence[str]) -> dict[str, list[int]]:
    positions: dict[str, list[int]] = defaultdict(list)
    for position, label in enumerate(labels):
        positions[label].append(position)
    return positions


class _LabelDraw:
    """The sides of one label's examples while they are placed."""

    def __init__(self, total: int, new: list[int], kept: Sequence[Split]) -> None:
        self.total = total
        self.waiting = deque(new)  # new examples not placed yet, in seeded order
        self.validation = sum(1 for side in kept if side == Split.VALIDATION)
        self.training = len(kept) - self.validation

    def take(self) -> int:
        return self.waiting.popleft()

    @property
    def room(self) -> int:
        """New examples that may still go to validation, leaving training one of them when
        none of its kept examples is there."""
        return len(self.waiting) - (0 if self.training else 1)


def label_stratified_assignment(
    example_ids: Sequence[int],
    labels: Sequence[str],
    *,
    previous: Mapping[int, str],
    seed: int,
    validation_fraction: float,
) -> list[Split]:
    """The split of examples whose answers are ``labels`` (one per example, in order).

    ``previous`` maps the examples of the version whose split is carried over to their side
    there (empty for a fresh draw); those keep it. See the module docstring for the rules.
    """
    if len(example_ids) != len(labels):
        raise ValueError(f"{len(example_ids)} examples but {len(labels)} labels")
    sides: list[Split | None] = [
        Split(previous[pk]) if pk in previous else None for pk in example_ids
    ]
    draws: dict[str, _LabelDraw] = {}
    for label, positions in _positions_by_label(labels).items():
        new = sorted(
            (p for p in positions if sides[p] is None),
            key=lambda p: seeded_rank(seed, example_ids[p]),
        )
        kept = [side for side in (sides[p] for p in positions) if side is not None]
        draws[label] = _LabelDraw(len(positions), new, kept)
    # Each side of every label with two examples or more, from its new examples where its kept
    # ones leave a side empty.
    for draw in draws.values():
        if draw.total < 2:
            continue
        if not draw.validation and draw.waiting and (draw.training or len(draw.waiting) > 1):
            sides[draw.take()] = Split.VALIDATION
            draw.validation += 1
        if not draw.training and draw.waiting:
            sides[draw.take()] = Split.TRAIN
            draw.training += 1
    seats = validation_target(len(example_ids), validation_fraction) - sum(
        draw.validation for draw in draws.values()
    )
    # The other seats, one at a time, to the label furthest below its share of validation.
    queue = [
        (draw.validation - draw.total * validation_fraction, seeded_rank(seed, f"label:{label}"))
        for label, draw in draws.items()
        if draw.room > 0
    ]
    by_rank = {seeded_rank(seed, f"label:{label}"): draw for label, draw in draws.items()}
    heapq.heapify(queue)
    while seats > 0 and queue:
        _, rank = heapq.heappop(queue)
        draw = by_rank[rank]
        sides[draw.take()] = Split.VALIDATION
        draw.validation += 1
        seats -= 1
        if draw.room > 0:
            heapq.heappush(queue, (draw.validation - draw.total * validation_fraction, rank))
    return [Split.TRAIN if side is None else side for side in sides]


def labels_on_both_sides(
    labels: Sequence[str], splits: Sequence[Split], *, movable: Sequence[bool]
) -> list[Split]:
    """The split after derived examples joined their origins, with one example moved back for
    each label that lost a side there (a retired origin that was its only held-out example,
    say): a movable one, whose side no origin decides and that no earlier version placed.
    A label that has no such example keeps the gap, and the readiness report names it."""
    result = list(splits)
    for positions in _positions_by_label(labels).values():
        if len(positions) < 2:
            continue
        validation = [p for p in positions if result[p] == Split.VALIDATION]
        training = [p for p in positions if result[p] == Split.TRAIN]
        if not validation and len(training) > 1:
            moved = next((p for p in training if movable[p]), None)
            if moved is not None:
                result[moved] = Split.VALIDATION
        elif not training and len(validation) > 1:
            moved = next((p for p in validation if movable[p]), None)
            if moved is not None:
                result[moved] = Split.TRAIN
    return result
