"""Inter-rater agreement: percent agreement, Cohen's kappa and Fleiss' kappa.

Pure functions over plain Python data, no Django. Ratings are category labels (any hashable
value); an item's ratings are the labels its raters gave it.

Edge cases, decided here once:
- No items: every function returns ``None`` (there is nothing to agree on).
- All ratings in one category: chance agreement is 1, so kappa's formula is 0/0. Every rater
  agreed on every item, so we define kappa as 1.0 (perfect agreement) rather than leaving it
  undefined; any single disagreement makes chance agreement fall below 1 and the formula apply.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

Label = TypeVar("Label", bound=Hashable)


def percent_agreement(items: Sequence[Sequence[Label]]) -> float | None:
    """Share of items on which all raters gave the same label (0.0 to 1.0)."""
    if not items:
        return None
    unanimous = sum(1 for ratings in items if len(set(ratings)) == 1)
    return unanimous / len(items)


def _kappa(observed: float, expected: float) -> float:
    if expected >= 1.0:
        # Only reachable when every rating is the same label, so observed is 1 too.
        return 1.0
    return (observed - expected) / (1.0 - expected)


def cohen_kappa(first: Sequence[Label], second: Sequence[Label]) -> float | None:
    """Cohen's kappa for two raters who each labelled the same items, in the same order."""
    if len(first) != len(second):
        raise ValueError(f"both raters need one label per item: {len(first)} != {len(second)}")
    count = len(first)
    if count == 0:
        return None
    observed = sum(1 for a, b in zip(first, second, strict=True) if a == b) / count
    first_counts, second_counts = Counter(first), Counter(second)
    expected = sum(
        (first_counts[label] / count) * (second_counts[label] / count) for label in first_counts
    )
    return _kappa(observed, expected)


def category_counts(items: Sequence[Sequence[Label]]) -> list[dict[Label, int]]:
    """Per item, how many raters gave each label: the table Fleiss' kappa works on."""
    return [dict(Counter(ratings)) for ratings in items]


def fleiss_kappa(table: Sequence[Mapping[Label, int]]) -> float | None:
    """Fleiss' kappa from per-item label counts; every item must have the same number of raters.

    ``table[i][label]`` is how many raters put item ``i`` in ``label`` (missing labels are 0).
    """
    if not table:
        return None
    raters = sum(table[0].values())
    if raters < 2:
        raise ValueError("Fleiss' kappa needs at least 2 raters per item")
    for index, row in enumerate(table):
        if sum(row.values()) != raters:
            raise ValueError(
                f"item {index} has {sum(row.values())} ratings; every item needs {raters}"
            )
    items = len(table)
    totals: Counter[Label] = Counter()
    for row in table:
        totals.update(row)
    # Mean over items of the share of rater pairs that agree on that item.
    observed = (
        sum((sum(n * n for n in row.values()) - raters) / (raters * (raters - 1)) for row in table)
        / items
    )
    expected = sum((total / (items * raters)) ** 2 for total in totals.values())
    return _kappa(observed, expected)


def fleiss_kappa_from_ratings(items: Sequence[Sequence[Label]]) -> float | None:
    return fleiss_kappa(category_counts(items))
