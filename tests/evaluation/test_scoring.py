"""Scoring one answer, summarising a candidate and comparing two, with hand-worked values."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from evaluation.scoring import (
    Checks,
    ScoredAnswer,
    best_candidate,
    candidate_summary,
    compare_candidates,
    paired_scores,
    score_answer,
)


def answer(output: str, reference: str, *, latency: float = 1.0) -> ScoredAnswer:
    return ScoredAnswer(
        output=output,
        reference=reference,
        scores=score_answer(output, reference, Checks()),
        latency_seconds=latency,
        prompt_tokens=1000,
        completion_tokens=10,
        failed=False,
    )


def test_json_scores_apply_only_when_the_reference_is_a_json_object() -> None:
    scores = score_answer(
        '{"category": "bug", "priority": "low"}',
        '{"category": "bug", "priority": "high"}',
        Checks(),
    )
    plain = score_answer("bug", "billing", Checks())

    assert scores["json_valid"] == 1.0 and scores["json_fields"] == 0.5
    assert scores["exact_match"] == 0.0
    assert "json_valid" not in plain and "json_fields" not in plain
    assert score_answer("not json", '{"a": 1}', Checks())["json_valid"] == 0.0


def test_label_answers_get_accuracy_macro_f1_and_a_confusion_matrix() -> None:
    answers = [
        answer("Billing.", "billing"),
        answer("bug", "billing"),
        answer("bug", "bug"),
        answer("bug", "bug"),
    ]

    summary = candidate_summary(
        answers, input_usd_per_million=Decimal("0.30"), output_usd_per_million=Decimal("1.20")
    )

    labels = summary["labels"]
    assert labels["accuracy"] == 0.75  # "Billing." reads as the label billing
    # Rows expected, columns answered, the last column answers that are no label.
    assert labels["confusion"] == {
        "labels": ["billing", "bug"],
        "invalid_column": "(invalid)",
        "matrix": [[1, 1, 0], [0, 2, 0]],
    }
    # F1 billing = 2*1/(1+2) = 2/3, bug = 2*2/(3+2) = 4/5; the mean is 11/15.
    assert labels["macro_f1"] == pytest.approx(11 / 15)
    # 1,000 requests of 1,000 tokens in at $0.30/M and 10 out at $1.20/M: $0.312.
    assert summary["cost_per_1000_usd"] == "0.312000"
    assert summary["cost_usd"] == "0.001248"  # four requests
    assert summary["latency"] == {"p50": 1.0, "p95": 1.0, "mean": 1.0, "measured": "per_request"}


def test_free_text_answers_get_no_label_metrics() -> None:
    answers = [answer(f"a long answer number {i}", f"reference text {i}") for i in range(4)]
    summary = candidate_summary(answers, input_usd_per_million=None, output_usd_per_million=None)
    assert "labels" not in summary and "cost_per_1000_usd" not in summary
    assert "4 distinct values among 4 items" in summary["labels_left_out"]["reason"]


def test_pass_fail_metrics_use_mcnemar_and_graded_ones_the_sign_test() -> None:
    a = {1: {"exact_match": 1.0, "token_f1": 1.0}, 2: {"exact_match": 1.0, "token_f1": 0.9}}
    b = {1: {"exact_match": 0.0, "token_f1": 0.2}, 2: {"exact_match": 1.0, "token_f1": 0.9}}

    exact = compare_candidates(name_a="A", name_b="B", scores_a=a, scores_b=b, metric="exact_match")
    f1 = compare_candidates(name_a="A", name_b="B", scores_a=a, scores_b=b, metric="token_f1")

    assert exact is not None and f1 is not None
    assert exact["test"] == "McNemar exact" and f1["test"] == "sign test"
    assert (exact["wins"], exact["ties"], exact["losses"]) == (1, 1, 0)
    assert exact["difference"] == 0.5 and exact["test_p"] == 1.0  # one discordant pair


def test_only_items_both_candidates_scored_are_paired() -> None:
    a = {1: {"exact_match": 1.0}, 2: {"exact_match": 0.0}, 3: {"exact_match": 1.0}}
    b = {3: {"exact_match": 0.0}, 1: {"exact_match": 1.0}, 4: {"exact_match": 1.0}}

    assert paired_scores(a, b, "exact_match") == ([1.0, 1.0], [1.0, 0.0])
    assert (
        compare_candidates(name_a="A", name_b="B", scores_a=a, scores_b={}, metric="rouge_l")
        is None
    )


def test_the_best_candidate_is_the_first_of_those_with_the_top_mean() -> None:
    summaries: dict[int, dict[str, Any]] = {
        7: {"means": {"exact_match": 0.5}},
        8: {"means": {"exact_match": 0.8}},
        9: {"means": {"exact_match": 0.8}},
        10: {"examples": 0},
    }
    assert best_candidate(summaries, "exact_match") == 8
    assert best_candidate({10: {"examples": 0}}, "exact_match") is None
