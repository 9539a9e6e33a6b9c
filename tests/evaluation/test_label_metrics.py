"""Label metrics without silent caps: accuracy, macro-F1, per-label scores, invalid answers as
their own outcome and the confusion matrix, whenever the contract is a label set whatever the
number or length of its labels; the heuristic without a contract, which says why it leaves
label metrics out; abstention and calibration of confidences. Checked against hand-worked
values and against scikit-learn on data nobody tuned to be easy."""

from __future__ import annotations

import json
import random
from collections import Counter
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from datasets.contracts import LABEL_SET, MAX_LABEL_CHARS, MAX_LABELS, contract_violation
from evaluation.metrics import (
    INVALID_LABEL,
    abstention,
    calibration,
    label_report,
    label_scores,
    labels_left_out,
)
from evaluation.scoring import Checks, ScoredAnswer, candidate_summary, score_answer
from tests.evaluation.label_runs import awkward_labels, noisy_answers, skewed_expected

LIMITS = {"max_labels": MAX_LABELS, "max_label_characters": MAX_LABEL_CHARS}


def scored(
    output: str, reference: str, contract: dict | None = None, confidence: float | None = None
) -> ScoredAnswer:
    return ScoredAnswer(
        output=output,
        reference=reference,
        scores=score_answer(output, reference, Checks(contract=contract or {})),
        latency_seconds=0.1,
        prompt_tokens=50,
        completion_tokens=3,
        failed=False,
        confidence=confidence,
    )


def summary_of(answers: list[ScoredAnswer], contract: dict | None = None, **extra) -> dict:
    return candidate_summary(
        answers,
        input_usd_per_million=Decimal("0.1"),
        output_usd_per_million=Decimal("0.4"),
        contract=contract,
        **extra,
    )


# --- the plain functions --------------------------------------------------------------------


def test_label_report_worked_example_counts_an_invalid_answer_as_its_own_outcome() -> None:
    expected = ["a", "a", "b", "c", "c"]
    answered = ["a", "b", "b", None, "c"]  # None: the answer was no label

    report = label_report(answered, expected, order=["c", "b", "a", "unused"])

    # The contract's order, and only the labels expected or answered ("unused" is neither).
    assert report.labels == ["c", "b", "a"]
    # Rows expected, columns answered, the last column the invalid answers.
    assert report.matrix == [[1, 0, 0, 1], [0, 1, 0, 0], [0, 1, 1, 0]]
    assert report.accuracy == pytest.approx(3 / 5)
    assert (report.invalid, report.invalid_rate) == (1, pytest.approx(1 / 5))
    by_label = {s.label: s for s in report.per_label}
    # c: TP 1, answered 1, expected 2 -> P 1, R 1/2, F1 2/3 (the invalid answer is a miss).
    assert (by_label["c"].precision, by_label["c"].recall) == (1.0, 0.5)
    assert by_label["c"].f1 == pytest.approx(2 / 3)
    # b: TP 1, answered 2, expected 1 -> P 1/2, R 1, F1 2/3.  a: TP 1, answered 1, expected 2.
    assert (by_label["b"].precision, by_label["b"].recall, by_label["b"].support) == (0.5, 1.0, 1)
    assert by_label["a"].f1 == pytest.approx(2 / 3)
    assert report.macro_f1 == pytest.approx(2 / 3)


def test_an_invented_answer_lowers_recall_and_adds_no_label_to_the_average() -> None:
    # The old rule averaged an invented label's F1 of 0 in (1/3 here); the usual definition
    # averages over the labels of the set that occur: x F1 1, y F1 0 -> 1/2.
    report = label_report(["x", None], ["x", "y"])
    assert report.macro_f1 == pytest.approx(1 / 2)
    assert report.labels == ["x", "y"]


def test_a_label_answered_but_never_expected_has_no_recall_and_an_f1_of_zero() -> None:
    report = label_report(["z", "x"], ["x", "x"])
    z = next(s for s in report.per_label if s.label == "z")
    assert (z.precision, z.recall, z.f1, z.support, z.answered) == (0.0, None, 0.0, 0, 1)
    never_answered = label_report(["x", "x"], ["x", "y"]).per_label[1]
    assert never_answered.precision is None and never_answered.f1 == 0.0


def test_label_scores_read_a_square_matrix_stored_before_invalid_answers_had_a_column() -> None:
    scores = label_scores(["a", "b"], [[1, 1], [0, 2]])
    assert [s.f1 for s in scores] == pytest.approx([2 / 3, 4 / 5])
    with pytest.raises(ValueError, match="2 labels"):
        label_scores(["a", "b"], [[1, 1]])


def test_label_report_refuses_mismatched_or_empty_lists() -> None:
    with pytest.raises(ValueError, match="equally many"):
        label_report(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="no answers"):
        label_report([], [])


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_label_report_agrees_with_scikit_learn(data: st.DataObject) -> None:
    pool = ["a", "b", "c", "d", "e"]
    expected = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=60))
    answered = data.draw(
        st.lists(
            st.one_of(st.none(), st.sampled_from(pool)),
            min_size=len(expected),
            max_size=len(expected),
        )
    )
    report = label_report(answered, expected)
    invalid = "\x00no label"  # stands for None: a prediction outside the labels sklearn scores
    predicted = [invalid if label is None else label for label in answered]
    present = sorted(set(expected) | {label for label in answered if label is not None})

    assert report.labels == present
    assert report.accuracy == pytest.approx(accuracy_score(expected, predicted))
    assert report.macro_f1 == pytest.approx(
        f1_score(expected, predicted, labels=present, average="macro", zero_division=0)
    )
    matrix = np.array(report.matrix)
    assert matrix.sum() == len(expected) and matrix[:, -1].sum() == answered.count(None)
    assert np.trace(matrix[:, :-1]) == sum(a == e for a, e in zip(answered, expected, strict=True))


def test_a_hundred_awkward_labels_over_thousands_of_items_agree_with_scikit_learn() -> None:
    labels = awkward_labels(100)
    assert max(len(label) for label in labels) == MAX_LABEL_CHARS
    expected = skewed_expected(labels, 4000)
    outputs = noisy_answers("m", labels, expected, right=0.5, invalid=0.2, seed=7).outputs
    contract = {"kind": LABEL_SET, "labels": labels}

    summary = summary_of([scored(o, e) for o, e in zip(outputs, expected, strict=True)], contract)

    stats = summary["labels"]
    # The oracle: what the contract check accepts is a label, anything else is invalid.
    predicted = [o.strip() if contract_violation(contract, o) is None else "\x00" for o in outputs]
    present = [label for label in labels if label in set(expected) | set(predicted)]
    precision, recall, f1, support = precision_recall_fscore_support(
        expected, predicted, labels=present, zero_division=0
    )
    assert stats["source"] == "contract" and stats["labels_in_contract"] == 100
    assert stats["confusion"]["labels"] == present  # the contract's order
    assert stats["averaged_over"] == len(present) == 100
    assert stats["accuracy"] == pytest.approx(accuracy_score(expected, predicted))
    assert stats["macro_f1"] == pytest.approx(float(np.mean(f1)))
    assert stats["invalid"] == predicted.count("\x00") > 0
    assert [row["f1"] for row in stats["per_label"]] == pytest.approx(list(f1))
    assert [row["support"] for row in stats["per_label"]] == list(support)
    # sklearn writes 0 where we write None (nothing answered with the label, nothing to score).
    assert [row["precision"] or 0.0 for row in stats["per_label"]] == pytest.approx(list(precision))
    assert [row["recall"] for row in stats["per_label"]] == pytest.approx(list(recall))
    matrix = stats["confusion"]["matrix"]
    assert len(matrix) == 100 and {len(row) for row in matrix} == {101}
    # Label accuracy on a label contract is the exact rate of what the contract accepts.
    assert stats["accuracy"] == pytest.approx(
        sum(p == e for p, e in zip(predicted, expected, strict=True)) / len(expected)
    )


# --- the contract decides -------------------------------------------------------------------


def test_a_label_contract_gives_label_metrics_whatever_the_count_or_length_of_its_labels() -> None:
    # 150 labels of up to 200 characters, each used once or twice: the old heuristic (20
    # labels of 40 characters, labels repeating) left all of this out without a word.
    rng = random.Random(3)
    labels = [f"{i:03d} " + "x" * rng.randint(40, MAX_LABEL_CHARS - 4) for i in range(150)]
    expected = labels + labels[:30]
    answers = [scored(label if i % 3 else labels[0], label) for i, label in enumerate(expected)]

    summary = summary_of(answers, {"kind": LABEL_SET, "labels": labels})

    assert "labels_left_out" not in summary
    assert summary["labels"]["averaged_over"] == 150
    assert summary["labels"]["accuracy"] == pytest.approx(
        sum(a.output == a.reference for a in answers) / len(answers)
    )


def test_invalid_follows_the_contract_check_not_exact_match() -> None:
    contract = {"kind": LABEL_SET, "labels": ["billing", "bug", "account"]}
    outputs = ["billing", "  bug\n", "Billing.", "billing and bug", "", "account"]
    references = ["billing", "bug", "billing", "bug", "account", "bug"]

    summary = summary_of(
        [scored(o, r, contract) for o, r in zip(outputs, references, strict=True)], contract
    )

    stats = summary["labels"]
    invalid = [contract_violation(contract, o) is not None for o in outputs]
    assert invalid == [False, False, True, True, True, False]
    assert stats["invalid"] == 3 and stats["invalid_rate"] == pytest.approx(3 / 6)
    # "Billing." passes exact match (normalised) but is no label: wrong here.
    assert summary["means"]["exact_match"] == pytest.approx(3 / 6)
    assert stats["accuracy"] == pytest.approx(2 / 6)
    assert summary["means"]["contract_valid"] == pytest.approx(1 - stats["invalid_rate"])
    confusion = stats["confusion"]
    assert confusion["invalid_column"] == INVALID_LABEL
    assert confusion["labels"] == ["billing", "bug", "account"]
    # billing: right once, invalid once; bug: right once, invalid once, answered account once.
    assert confusion["matrix"] == [[1, 0, 0, 1], [0, 1, 1, 1], [0, 0, 0, 1]]


def test_macro_f1_averages_over_the_contract_labels_that_occur() -> None:
    contract = {"kind": LABEL_SET, "labels": [f"label {i}" for i in range(10)]}
    answers = [scored("label 0", "label 0"), scored("label 1", "label 2"), scored("x", "label 2")]

    stats = summary_of(answers, contract)["labels"]

    # label 0 F1 1, label 1 (answered, never expected) 0, label 2 (expected twice) 0; the
    # seven labels nobody expected or answered are not averaged in.
    assert stats["confusion"]["labels"] == ["label 0", "label 1", "label 2"]
    assert stats["averaged_over"] == 3 and stats["labels_in_contract"] == 10
    assert stats["macro_f1"] == pytest.approx(1 / 3)


def test_an_expected_answer_outside_the_contract_is_shown_and_counted() -> None:
    contract = {"kind": LABEL_SET, "labels": ["yes", "no"]}
    answers = [scored("yes", "yes"), scored("maybe", "maybe"), scored("no", "yes")]

    stats = summary_of(answers, contract)["labels"]

    assert stats["expected_outside_contract"] == 1
    assert stats["confusion"]["labels"] == ["yes", "no", "maybe"]
    # "maybe" answered for "maybe" is still no label of the contract: invalid, and wrong.
    assert stats["confusion"]["matrix"][2] == [0, 0, 0, 1]
    assert stats["accuracy"] == pytest.approx(1 / 3)


# --- without a contract: a heuristic that says why --------------------------------------------


@pytest.mark.parametrize(
    ("references", "reason"),
    [
        (["billing", "bug", "billing", "other", "bug", "billing"], None),
        (["yes", "no"], None),
        # No cap at 20 labels, nor at 40 characters: the contract's limits.
        ([f"label {i % 21}" for i in range(100)], None),
        ([f"intent {i % 300}" for i in range(900)], None),
        (["y" * MAX_LABEL_CHARS] * 4, None),
        (["y" * (MAX_LABEL_CHARS + 1)] * 4, "201 characters, over the 200"),
        ([f"l{i % 1001}" for i in range(3003)], "1001 distinct values, over the 1000 labels"),
        (["billing", "bug", "billing", "other"], "3 distinct values among 4 items"),
        (["Paris", "Rome", "Oslo", "Lima"], "4 distinct values among 4 items"),
        (["billing", "billing\nand bug"], "spans several lines"),
        (["billing", " "], "1 expected answer(s) are empty"),
        ([], "there are no expected answers"),
    ],
)
def test_labels_left_out_says_why(references: list[str], reason: str | None) -> None:
    found = labels_left_out(references, **LIMITS)
    if reason is None:
        assert found is None
    else:
        assert found is not None and reason in found


def test_without_a_contract_labels_left_out_are_said_in_the_summary() -> None:
    answers = [scored(f"answer {i}", f"a different reference {i}") for i in range(6)]
    summary = summary_of(answers)
    assert "labels" not in summary
    assert summary["labels_left_out"] == {
        "reason": "the expected answers have 6 distinct values among 6 items: labels repeat, "
        "and these mostly do not (at most 3 would)"
    }


def test_without_a_contract_many_labels_are_read_and_a_stray_answer_is_invalid() -> None:
    labels = [f"intent number {i}" for i in range(60)]
    expected = labels * 3
    outputs = [
        label.upper() + "." if i % 4 == 0 else "something else" if i % 4 == 1 else label
        for i, label in enumerate(expected)
    ]

    stats = summary_of([scored(o, e) for o, e in zip(outputs, expected, strict=True)])["labels"]

    assert stats["source"] == "expected_answers" and stats["averaged_over"] == 60
    # Read as exact match reads answers: "INTENT NUMBER 4." is intent number 4.
    assert stats["accuracy"] == pytest.approx(3 / 4)
    assert stats["invalid"] == len(expected) // 4
    assert "labels_in_contract" not in stats


# --- the stored summary stays small -------------------------------------------------------------


def test_the_stored_summary_grows_with_the_labels_never_with_the_items() -> None:
    labels = awkward_labels(100)
    contract = {"kind": LABEL_SET, "labels": labels}

    def stored_size(items: int) -> int:
        expected = skewed_expected(labels, items, seed=items)
        answers = noisy_answers("m", labels, expected, right=0.6, invalid=0.1, seed=items)
        summary = summary_of(
            [scored(o, e) for o, e in zip(answers.outputs, expected, strict=True)], contract
        )
        return len(json.dumps(summary))

    small, large = stored_size(1000), stored_size(8000)
    # 100 labels of up to 200 characters, twice (matrix rows and per-label rows), a 100 x 101
    # matrix and the per-label figures: well under 100 kB; eight times the items add only
    # wider numbers in the matrix.
    assert small < 100_000 and large < 100_000
    assert large < small * 1.25


# --- confidences: abstention and calibration ------------------------------------------------


def test_abstention_counts_answers_below_the_threshold_and_scores_the_rest() -> None:
    kept = abstention([0.9, 0.2, 0.5, 0.49], [True, True, False, False], threshold=0.5)
    assert (kept.answered, kept.abstained) == (2, 2)
    assert kept.accuracy_answered == 0.5
    everything = abstention([0.9, 0.2], [True, False], threshold=None)
    assert (everything.answered, everything.abstained, everything.accuracy_answered) == (2, 0, 0.5)
    assert abstention([0.1], [True], threshold=0.5).accuracy_answered is None


def test_calibration_worked_example() -> None:
    confidences = [0.95, 0.95, 0.05, 0.55, 1.0]
    correct = [True, False, False, True, True]

    result = calibration(confidences, correct)

    assert len(result.bins) == 10 and result.bins[0].low == 0.0 and result.bins[-1].high == 1.0
    top = result.bins[9]  # 0.95, 0.95, 1.0: mean 0.9667, two of three right
    assert top.count == 3 and top.confidence == pytest.approx(2.9 / 3)
    assert top.accuracy == pytest.approx(2 / 3)
    assert result.bins[3].count == 0 and result.bins[3].accuracy is None
    # ECE = 3/5 |2/3 - 0.9667| + 1/5 |0 - 0.05| + 1/5 |1 - 0.55|
    assert result.expected_error == pytest.approx(
        3 / 5 * abs(2 / 3 - 2.9 / 3) + 1 / 5 * 0.05 + 1 / 5 * 0.45
    )


def test_calibration_agrees_with_a_numpy_reading_of_the_definition() -> None:
    rng = np.random.default_rng(5)
    confidences = rng.uniform(0, 1, 3000)
    correct = rng.uniform(0, 1, 3000) < confidences**2  # over-confident

    result = calibration(list(confidences), list(correct))

    which = np.minimum((confidences * 10).astype(int), 9)
    ece = sum(
        (which == b).mean() * abs(correct[which == b].mean() - confidences[which == b].mean())
        for b in range(10)
        if (which == b).any()
    )
    assert result.expected_error == pytest.approx(ece)
    assert result.expected_error > 0.1  # the model says more than it knows
    assert sum(row.count for row in result.bins) == 3000


def test_a_confidence_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="probability in \\[0, 1\\], got 1.5"):
        calibration([1.5], [True])


def test_a_candidate_with_confidences_gets_abstention_and_calibration() -> None:
    labels = awkward_labels(64)
    expected = skewed_expected(labels, 1500)
    answers = noisy_answers("m", labels, expected, right=0.6, invalid=0.0, seed=2, confident=True)
    contract = {"kind": LABEL_SET, "labels": labels}
    scored_answers = [
        scored(o, e, confidence=c)
        for o, e, c in zip(answers.outputs, expected, answers.confidences or [], strict=True)
    ]

    summary = summary_of(scored_answers, contract, abstain_below=0.5)

    right = [o.strip() == e for o, e in zip(answers.outputs, expected, strict=True)]
    confidences = [c for c in answers.confidences or [] if c is not None]
    kept = [r for r, c in zip(right, confidences, strict=True) if c >= 0.5]
    assert summary["abstention"] == {
        "threshold": 0.5,
        "answered": len(kept),
        "abstained": len(expected) - len(kept),
        "accuracy_answered": pytest.approx(sum(kept) / len(kept)),
        "items": len(expected),
    }
    # Confident answers are more often right than all of them.
    assert summary["abstention"]["accuracy_answered"] > summary["labels"]["accuracy"]
    bins = summary["calibration"]["bins"]
    assert len(bins) == 10 and sum(b["count"] for b in bins) == len(expected)
    assert 0 < summary["calibration"]["expected_calibration_error"] < 1


def test_without_confidences_there_is_no_abstention_or_calibration() -> None:
    summary = summary_of(
        [scored("a", "a"), scored("b", "a")], {"kind": LABEL_SET, "labels": ["a", "b"]}
    )
    assert "abstention" not in summary and "calibration" not in summary


def test_label_counts_in_the_summary_add_up() -> None:
    labels = awkward_labels(80)
    expected = skewed_expected(labels, 2000, seed=9)
    outputs = noisy_answers("m", labels, expected, right=0.3, invalid=0.4, seed=9).outputs
    stats = summary_of(
        [scored(o, e) for o, e in zip(outputs, expected, strict=True)],
        {"kind": LABEL_SET, "labels": labels},
    )["labels"]
    support = Counter(expected)
    assert {row["label"]: row["support"] for row in stats["per_label"]} == dict(support)
    assert sum(row["answered"] for row in stats["per_label"]) + stats["invalid"] == len(expected)
