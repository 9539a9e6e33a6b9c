"""Agreement measures against published worked examples, and their edge cases."""

from __future__ import annotations

import pytest

from datasets.review.agreement import (
    category_counts,
    cohen_kappa,
    fleiss_kappa,
    fleiss_kappa_from_ratings,
    percent_agreement,
)

# Fleiss (1971) as tabulated on Wikipedia's "Fleiss' kappa" page: 10 subjects, 14 raters,
# 5 categories; P-bar = 0.378, P-bar-e = 0.213, kappa = 0.210.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def as_counts(rows: list[list[int]]) -> list[dict[int, int]]:
    return [{category: n for category, n in enumerate(row) if n} for row in rows]


def test_fleiss_kappa_reproduces_the_classic_14_rater_table() -> None:
    assert fleiss_kappa(as_counts(FLEISS_TABLE)) == pytest.approx(0.210, abs=0.0005)


def test_fleiss_kappa_from_ratings_matches_the_table_form() -> None:
    ratings = [[c for c, n in enumerate(row) for _ in range(n)] for row in FLEISS_TABLE]
    assert category_counts(ratings)[1] == {1: 2, 2: 6, 3: 4, 4: 2}
    assert fleiss_kappa_from_ratings(ratings) == pytest.approx(0.210, abs=0.0005)


def test_cohen_kappa_reproduces_the_yes_no_worked_example() -> None:
    # 50 proposals: both yes 20, A yes/B no 5, A no/B yes 10, both no 15 → po 0.7, pe 0.5.
    first = ["yes"] * 25 + ["no"] * 25
    second = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(first, second) == pytest.approx(0.4)


def test_cohen_kappa_is_zero_for_agreement_at_chance_and_negative_below() -> None:
    assert cohen_kappa(["a", "a", "b", "b"], ["a", "b", "a", "b"]) == pytest.approx(0.0)
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)


def test_perfect_agreement_over_several_categories_is_one() -> None:
    labels = ["approve", "reject", "approve", "reject"]
    assert cohen_kappa(labels, labels) == 1.0
    assert fleiss_kappa_from_ratings([[x, x, x] for x in labels]) == pytest.approx(1.0)
    assert percent_agreement([[x, x] for x in labels]) == 1.0


def test_everything_in_one_category_is_defined_as_perfect_agreement() -> None:
    # Chance agreement is 1, so the formula is 0/0; documented in datasets/review/agreement.py.
    assert cohen_kappa(["approve"] * 5, ["approve"] * 5) == 1.0
    assert fleiss_kappa_from_ratings([["approve"] * 3] * 4) == 1.0


def test_no_items_gives_no_figure() -> None:
    assert percent_agreement([]) is None
    assert cohen_kappa([], []) is None
    assert fleiss_kappa([]) is None


def test_percent_agreement_counts_unanimous_items() -> None:
    assert percent_agreement([["a", "a"], ["a", "b"], ["b", "b"], ["b", "a"]]) == 0.5
    assert percent_agreement([["a", "a", "b"], ["c", "c", "c"]]) == 0.5


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="one label per item"):
        cohen_kappa(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="item 1 has 2 ratings"):
        fleiss_kappa([{"a": 3}, {"a": 1, "b": 1}])
    with pytest.raises(ValueError, match="at least 2 raters"):
        fleiss_kappa([{"a": 1}])
