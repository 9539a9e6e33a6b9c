"""How a local job's examples become batches and rows, in token counts only (no torch).

The local trainer (providers/local/encoding.py) lays its batches out with these functions, and
the launch estimate (training/estimates.py) runs the same arithmetic on a dataset's token counts
to predict how many tokens the model will run, so that both count the same way.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

# Examples are sorted by length within groups of this many batches. Larger groups mean less
# padding but batches that differ less from epoch to epoch.
BATCHES_PER_LENGTH_GROUP = 16
# A prefix shorter than this is not worth a pass of its own and the explicit mask it costs.
MIN_SHARED_PREFIX = 8


def epoch_batch_order(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int
) -> list[list[int]]:
    """Example indices of each batch of one epoch, grouped by length, seeded by (seed, epoch).

    The examples are shuffled, cut into groups of BATCHES_PER_LENGTH_GROUP batches, sorted by
    length within each group and cut into batches; then the batches are shuffled. Batches hold
    examples of similar length, so padding costs little, while the order stays random. Groups
    are whole batches, so an epoch has ceil(n / batch_size) batches, like a plain shuffle.
    """
    rng = random.Random(f"ftportal-batch-order:{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    group_size = batch_size * BATCHES_PER_LENGTH_GROUP
    batches: list[list[int]] = []
    for start in range(0, len(order), group_size):
        # sorted() is stable: examples of equal length keep their shuffled order.
        group = sorted(order[start : start + group_size], key=lambda i: lengths[i], reverse=True)
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    return batches


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Example indices of each validation batch: shortest first, so batches pad least (the
    validation loss is a sum over examples, so any order gives it)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def pack_rows(lengths: Sequence[int], capacity: int | None = None) -> list[list[int]]:
    """Indices of the examples to put in each row, first-fit by decreasing length, into rows of
    the given capacity, by default as long as the longest example: never wider than padding
    would be, and mostly full."""
    capacity = max(lengths) if capacity is None else capacity
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True):
        fitting = next((row for row, free in enumerate(room) if lengths[index] <= free), None)
        if fitting is None:
            rows.append([index])
            room.append(capacity - lengths[index])
        else:
            rows[fitting].append(index)
            room[fitting] -= lengths[index]
    return rows


def shares_prefix(examples: int, prefix: int) -> bool:
    """Whether a batch of ``examples`` whose shared prefix is ``prefix`` tokens long is laid
    out sharing it; otherwise it is packed."""
    return examples >= 2 and prefix >= MIN_SHARED_PREFIX


def computed_tokens(prefix: int, lengths: Sequence[int]) -> int:
    """Tokens the model runs for a batch of examples of ``lengths`` tokens whose first
    ``prefix`` are the same in every one, in the layout that shares the prefix: once."""
    if not shares_prefix(len(lengths), prefix):
        return sum(lengths)
    return prefix + sum(length - prefix for length in lengths)
