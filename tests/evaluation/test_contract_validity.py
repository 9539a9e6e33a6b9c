"""Contract validity per candidate, and the JSON metrics saying which items they leave out."""

from __future__ import annotations

import pytest

from evaluation.scoring import METRICS, Checks, ScoredAnswer, candidate_summary, score_answer

TRIAGE = {
    "kind": "json_schema",
    "schema": {
        "type": "object",
        "properties": {
            "category": {"enum": ["billing", "bug"]},
            "priority": {"enum": ["low", "high"]},
        },
        "required": ["category", "priority"],
    },
}
GOOD = '{"category": "bug", "priority": "low"}'


def scored(output: str, reference: str, checks: Checks) -> ScoredAnswer:
    return ScoredAnswer(
        output=output,
        reference=reference,
        scores=score_answer(output, reference, checks),
        latency_seconds=None,
        prompt_tokens=10,
        completion_tokens=5,
        failed=False,
    )


def test_each_answer_is_scored_for_contract_validity_when_the_version_has_a_contract() -> None:
    checks = Checks(contract=TRIAGE)
    assert score_answer(GOOD, GOOD, checks)["contract_valid"] == 1.0
    # Valid JSON with a value outside the enum keeps JSON validity but breaks the contract.
    urgent = '{"category": "bug", "priority": "urgent"}'
    assert score_answer(urgent, GOOD, checks)["json_valid"] == 1.0
    assert score_answer(urgent, GOOD, checks)["contract_valid"] == 0.0
    assert "contract_valid" not in score_answer(GOOD, GOOD, Checks())
    assert METRICS["contract_valid"].label == "contract validity"
    assert METRICS["contract_valid"].binary


def test_a_label_set_contract_scores_plain_text_answers() -> None:
    checks = Checks(contract={"kind": "label_set", "labels": ["billing", "bug"]})
    assert score_answer(" bug ", "bug", checks)["contract_valid"] == 1.0
    assert score_answer("Bug.", "bug", checks)["contract_valid"] == 0.0


def test_the_summary_gives_the_share_of_answers_that_keep_the_contract() -> None:
    checks = Checks(contract=TRIAGE)
    answers = [
        scored(GOOD, GOOD, checks),
        scored("bug, low", GOOD, checks),
        scored(GOOD, GOOD, checks),
        scored('{"category": "x", "priority": "low"}', GOOD, checks),
    ]
    summary = candidate_summary(answers, input_usd_per_million=None, output_usd_per_million=None)
    assert summary["means"]["contract_valid"] == pytest.approx(0.5)


def test_json_metrics_say_how_many_items_they_leave_out_and_why() -> None:
    checks = Checks()
    answers = [
        scored(GOOD, GOOD, checks),
        scored(GOOD, GOOD, checks),
        scored(GOOD, "Category: bug, priority: low", checks),  # a broken reference
    ]
    summary = candidate_summary(answers, input_usd_per_million=None, output_usd_per_million=None)
    assert summary["means"]["json_valid"] == 1.0
    assert summary["json_left_out"] == {
        "items": 1,
        "reason": "the expected answer is not a JSON object",
    }
    every = candidate_summary(answers[:2], input_usd_per_million=None, output_usd_per_million=None)
    assert "json_left_out" not in every
    text = [scored("bug", "bug", checks), scored("bug", "billing", checks)]
    none = candidate_summary(text, input_usd_per_million=None, output_usd_per_million=None)
    assert "json_left_out" not in none  # not a JSON task: nothing is left out
