"""People rate pairs of answers blind, so the judge's agreement with them can be measured.

Each rater sees the two answers in an order fixed per (item, rater) but not the candidates'
names: knowing which one is the fine-tuned model, or seeing it always on the left, would bias
the rating the same way position bias skews a judge."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.contrib.auth.models import User

from .models import Candidate, EvalResult, HumanPreference
from .prompting import answer_of


@dataclass(frozen=True)
class RatingCard:
    result_a: EvalResult
    result_b: EvalResult
    a_on_left: bool
    rated: int
    total: int

    @property
    def left(self) -> EvalResult:
        return self.result_a if self.a_on_left else self.result_b

    @property
    def right(self) -> EvalResult:
        return self.result_b if self.a_on_left else self.result_a

    @property
    def reference(self) -> str:
        return answer_of(self.result_a.item.messages)


def a_on_left(item_id: int, rater_id: int) -> bool:
    digest = hashlib.sha256(f"{item_id}:{rater_id}".encode()).digest()
    return digest[0] % 2 == 0


def choice_from_side(side: str, item_id: int, rater_id: int) -> str:
    """ "left", "right" or "tie" as the rater saw it, to "a", "b" or "tie"."""
    if side == "tie":
        return "tie"
    if side not in ("left", "right"):
        raise ValueError("side: left, right or tie")
    left_is_a = a_on_left(item_id, rater_id)
    return "a" if (side == "left") == left_is_a else "b"


def next_card(candidate_a: Candidate, candidate_b: Candidate, rater: User) -> RatingCard | None:
    """The first item (by position) both answered that this rater has not rated yet."""
    answers_b = {r.item_id: r for r in EvalResult.objects.filter(candidate=candidate_b)}
    answers_a = [
        r
        for r in EvalResult.objects.filter(candidate=candidate_a)
        .select_related("item")
        .order_by("item__position")
        if r.item_id in answers_b
    ]
    rated = set(
        HumanPreference.objects.filter(
            candidate_a=candidate_a, candidate_b=candidate_b, rater=rater
        ).values_list("item_id", flat=True)
    )
    for result in answers_a:
        if result.item_id not in rated:
            return RatingCard(
                result_a=result,
                result_b=answers_b[result.item_id],
                a_on_left=a_on_left(result.item_id, rater.pk),
                rated=len(rated),
                total=len(answers_a),
            )
    return None
