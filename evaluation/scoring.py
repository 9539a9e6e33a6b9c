"""From answers to numbers: the per-item scores of one answer, a candidate's summary, and the
paired comparison of two candidates with its verdict sentence.

Plain data in, plain data out (JSON-ready dicts), so the worker stores what this returns and
the pages and the API read it back unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from statistics import fmean
from typing import Any

from datasets.contracts import (
    LABEL_SET,
    MAX_LABEL_CHARS,
    MAX_LABELS,
    contract_violation,
    label_form,
)

from .metrics import (
    INVALID_LABEL,
    abstention,
    answer_length,
    calibration,
    chrf,
    contains,
    cost_per_1000_requests,
    exact_match_normalised,
    json_field_accuracy,
    json_valid,
    label_report,
    labels_left_out,
    latency_summary,
    normalise_answer,
    parse_json_answer,
    regex_match,
    rouge_l,
    token_f1,
)
from .statistics import (
    Decision,
    DiscordantTest,
    PairedComparison,
    decide,
    mcnemar_exact,
    paired_bootstrap,
    sign_test,
    wins_ties_losses,
)

# A metric difference smaller than this on one item is a tie (float noise in F1-like scores).
TIE_TOLERANCE = 1e-9
BOOTSTRAP_RESAMPLES = 10_000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class MetricSpec:
    key: str
    label: str
    # Binary per-item scores (0 or 1) are compared with McNemar's exact test, others with the
    # sign test; the bootstrap interval is the same for both.
    binary: bool
    higher_is_better: bool = True
    # Scores in [0, 1] are reported as percentage points.
    points: bool = True

    @property
    def title(self) -> str:
        """The label as it starts a title or a legend entry ("Exact match"); names spelt with
        capitals keep their spelling ("chrF", "ROUGE-L", "JSON validity")."""
        first = self.label.split()[0]
        return self.label[:1].upper() + self.label[1:] if first.islower() else self.label


METRICS: dict[str, MetricSpec] = {
    spec.key: spec
    for spec in (
        MetricSpec("exact_match", "exact match", binary=True),
        MetricSpec("token_f1", "token F1", binary=False),
        MetricSpec("rouge_l", "ROUGE-L", binary=False),
        MetricSpec("chrf", "chrF", binary=False),
        MetricSpec("json_valid", "JSON validity", binary=True),
        MetricSpec("json_fields", "JSON field accuracy", binary=False),
        MetricSpec("regex", "regex check", binary=True),
        MetricSpec("contains", "contains check", binary=True),
        MetricSpec("contract_valid", "contract validity", binary=True),
    )
}
# Answer length is shown, not judged: longer is neither better nor worse.
DESCRIPTIVE_KEYS = ("answer_tokens",)


@dataclass(frozen=True)
class Checks:
    """The run's optional pass/fail checks on every answer."""

    regex: str = ""
    contains: str = ""
    # The evaluated version's answer contract ({} for none): every answer is checked against it.
    contract: Mapping[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """ValueError naming the check when it cannot run."""
        if self.regex:
            try:
                regex_match("", self.regex)
            except ValueError as error:
                raise ValueError(f"regex_check: {error}") from error


def reference_is_json(reference: str) -> bool:
    return isinstance(parse_json_answer(reference), dict)


def score_answer(output: str, reference: str, checks: Checks) -> dict[str, float]:
    """Every per-item score that applies to this answer. JSON scores only when the reference is
    a JSON object; check scores only when the run configured the check."""
    scores = {
        "exact_match": float(exact_match_normalised(output, reference)),
        "token_f1": token_f1(output, reference),
        "rouge_l": rouge_l(output, reference),
        "chrf": chrf(output, reference),
        "answer_tokens": float(answer_length(output).tokens),
    }
    if reference_is_json(reference):
        scores["json_valid"] = float(json_valid(output))
        field_accuracy = json_field_accuracy(output, reference)
        if field_accuracy is not None:
            scores["json_fields"] = field_accuracy
    if checks.regex:
        scores["regex"] = float(regex_match(output, checks.regex))
    if checks.contains:
        scores["contains"] = float(contains(output, checks.contains))
    if checks.contract:
        scores["contract_valid"] = float(contract_violation(checks.contract, output) is None)
    return scores


@dataclass(frozen=True)
class ScoredAnswer:
    """What the summary needs of one stored result."""

    output: str
    reference: str
    scores: Mapping[str, float]
    latency_seconds: float | None
    prompt_tokens: int
    completion_tokens: int
    failed: bool
    # With label scoring: the answer's probability among the labels (EvalResult.confidence).
    confidence: float | None = None


def _mean_of(answers: Sequence[ScoredAnswer], key: str) -> float | None:
    values = [answer.scores[key] for answer in answers if key in answer.scores]
    return fmean(values) if values else None


SECONDS_PER_HOUR = Decimal(3600)
# How latency was measured: each request timed on its own (hosted), or a local batch's time
# shared out over its answers, which gives every answer of a batch the same number.
PER_REQUEST = "per_request"
BATCH_AVERAGE = "batch_average"


def machine_time_usd(seconds: float, usd_per_hour: Decimal) -> Decimal:
    """What ``seconds`` of this machine cost at ``usd_per_hour``; unrounded."""
    return Decimal(str(seconds)) * usd_per_hour / SECONDS_PER_HOUR


def candidate_summary(
    answers: Sequence[ScoredAnswer],
    *,
    input_usd_per_million: Decimal | None,
    output_usd_per_million: Decimal | None,
    local_usd_per_hour: Decimal | None = None,
    contract: Mapping[str, Any] | None = None,
    abstain_below: float | None = None,
) -> dict[str, Any]:
    """Means of every per-item score, label metrics (:func:`label_summary`), latency, the cost
    of 1,000 requests like these and, when the answers carry confidences, abstention and
    calibration (:func:`confidence_summary`).

    ``contract`` is the run's answer contract; ``abstain_below`` the candidate's threshold.

    ``local_usd_per_hour`` is given for a model this machine generates in batches: its latency
    is then the batch average per request (no percentiles: they would only repeat the
    average) and 1,000 requests cost 1,000 x that average in machine time at this rate.
    Otherwise each request was timed on its own (p50 and p95) and the cost follows the token
    prices, when the candidate has them."""
    if not answers:
        return {"examples": 0}
    keys = sorted({key for answer in answers for key in answer.scores})
    summary: dict[str, Any] = {
        "examples": len(answers),
        "failed": sum(answer.failed for answer in answers),
        "means": {key: _mean_of(answers, key) for key in keys},
    }
    latencies = [a.latency_seconds for a in answers if a.latency_seconds is not None]
    local = local_usd_per_hour is not None
    if latencies:
        latency = latency_summary(latencies)
        summary["latency"] = (
            {"mean": latency.mean, "measured": BATCH_AVERAGE}
            if local
            else {"p50": latency.p50, "p95": latency.p95, "mean": latency.mean}
            | {"measured": PER_REQUEST}
        )
    summary["prompt_tokens_mean"] = fmean(a.prompt_tokens for a in answers)
    summary["completion_tokens_mean"] = fmean(a.completion_tokens for a in answers)
    if local_usd_per_hour is not None and latencies:
        per_1000 = machine_time_usd(fmean(latencies), local_usd_per_hour) * 1000
        summary["cost_per_1000_usd"] = str(per_1000.quantize(Decimal("0.000001")))
        summary["cost_basis"] = f"machine time at ${local_usd_per_hour}/h"
    elif input_usd_per_million is not None and output_usd_per_million is not None:
        cost = cost_per_1000_requests(
            [a.prompt_tokens for a in answers],
            [a.completion_tokens for a in answers],
            input_usd_per_million,
            output_usd_per_million,
        )
        summary["cost_per_1000_usd"] = str(cost.quantize(Decimal("0.000001")))
        summary["cost_basis"] = "token prices"
        # What these answers cost: the run's share of the evaluation spend.
        summary["cost_usd"] = str((cost * len(answers) / 1000).quantize(Decimal("0.000001")))
    json_scored = sum("json_valid" in answer.scores for answer in answers)
    if 0 < json_scored < len(answers):
        # JSON metrics are computed only where the expected answer is a JSON object; say how
        # many items they leave out, or a broken reference silently shrinks the denominator.
        summary["json_left_out"] = {
            "items": len(answers) - json_scored,
            "reason": "the expected answer is not a JSON object",
        }
    reading = read_labels(answers, contract or {})
    if isinstance(reading, str):
        # Said, not silent: the page and the API show why there are no label metrics.
        summary["labels_left_out"] = {"reason": reading}
        correct = [answer.scores.get("exact_match") == 1.0 for answer in answers]
    else:
        summary["labels"] = label_summary(reading)
        correct = [a == e for a, e in zip(reading.answered, reading.expected, strict=True)]
    summary.update(confidence_summary(answers, correct, abstain_below=abstain_below))
    return summary


LABELS_FROM_CONTRACT = "contract"
LABELS_FROM_ANSWERS = "expected_answers"


@dataclass(frozen=True)
class LabelReading:
    """The answers read as labels: ``answered[i]`` is the label answer i gave (None: it is no
    label), ``expected[i]`` its expected label, ``order`` the order to show labels in."""

    source: str
    answered: list[str | None]
    expected: list[str]
    order: list[str]
    labels_in_contract: int | None = None
    expected_outside_contract: int = 0


def read_labels(answers: Sequence[ScoredAnswer], contract: Mapping[str, Any]) -> LabelReading | str:
    """The answers as labels, or why they are not read as labels.

    A label-set contract decides, whatever the number or length of its labels: an answer is
    the label it matches in the form the contract check compares (``label_form``), and is
    invalid when it matches none (exactly the answers ``contract_violation`` refuses). An
    expected answer outside the contract (a test set frozen under an older contract) keeps its
    own text as its label, counted in ``expected_outside_contract``.

    Without one, expected answers that look like labels (:func:`labels_left_out`, with the
    contract's limits) are the labels, compared as exact match compares answers
    (``normalise_answer``), so "Billing." counts as billing; an answer that is none of them is
    invalid."""
    if contract.get("kind") == LABEL_SET:
        labels = [str(label) for label in contract.get("labels") or []]
        by_form = {label_form(label): label for label in labels}
        answered = [by_form.get(label_form(answer.output)) for answer in answers]
        expected = [by_form.get(label_form(answer.reference)) for answer in answers]
        return LabelReading(
            source=LABELS_FROM_CONTRACT,
            answered=answered,
            expected=[
                label if label is not None else answer.reference.strip()
                for label, answer in zip(expected, answers, strict=True)
            ],
            order=labels,
            labels_in_contract=len(labels),
            expected_outside_contract=sum(label is None for label in expected),
        )
    references = [answer.reference for answer in answers]
    reason = labels_left_out(
        references, max_labels=MAX_LABELS, max_label_characters=MAX_LABEL_CHARS
    )
    if reason is not None:
        return reason
    # Each label is shown as its first expected spelling.
    spelling: dict[str, str] = {}
    for reference in references:
        spelling.setdefault(normalise_answer(reference), reference.strip())
    return LabelReading(
        source=LABELS_FROM_ANSWERS,
        answered=[spelling.get(normalise_answer(answer.output)) for answer in answers],
        expected=[spelling[normalise_answer(reference)] for reference in references],
        order=[],
    )


def label_summary(reading: LabelReading) -> dict[str, Any]:
    """The stored label metrics: their size grows with the labels (an L x (L + 1) matrix and
    L per-label rows), never with the items, so a run of thousands of answers stores no more
    than one of a hundred."""
    report = label_report(reading.answered, reading.expected, order=reading.order)
    summary: dict[str, Any] = {
        "source": reading.source,
        "accuracy": report.accuracy,
        "macro_f1": report.macro_f1,
        # Macro-F1 averages over the labels expected or answered (the matrix's rows).
        "averaged_over": len(report.labels),
        "invalid": report.invalid,
        "invalid_rate": report.invalid_rate,
        "per_label": [asdict(scores) for scores in report.per_label],
        "confusion": {
            "labels": report.labels,
            "invalid_column": INVALID_LABEL,
            "matrix": report.matrix,
        },
    }
    if reading.labels_in_contract is not None:
        summary["labels_in_contract"] = reading.labels_in_contract
        summary["expected_outside_contract"] = reading.expected_outside_contract
    return summary


def confidence_summary(
    answers: Sequence[ScoredAnswer], correct: Sequence[bool], *, abstain_below: float | None
) -> dict[str, Any]:
    """Abstention at ``abstain_below`` and calibration, over the answers that carry a
    confidence (label scoring gives one to each answer); nothing when none does.
    ``correct[i]`` says whether answer i was right."""
    scored = [
        (answer.confidence, right)
        for answer, right in zip(answers, correct, strict=True)
        if answer.confidence is not None
    ]
    if not scored:
        return {}
    confidences = [confidence for confidence, _ in scored]
    outcomes = [right for _, right in scored]
    kept = abstention(confidences, outcomes, threshold=abstain_below)
    calibrated = calibration(confidences, outcomes)
    return {
        "abstention": asdict(kept) | {"items": len(scored)},
        "calibration": {
            "expected_calibration_error": calibrated.expected_error,
            "bins": [asdict(row) for row in calibrated.bins],
        },
    }


def paired_test(spec: MetricSpec, a: Sequence[float], b: Sequence[float]) -> DiscordantTest:
    """The paired test the decision rule pairs with the bootstrap for this metric."""
    if spec.binary:
        return mcnemar_exact([value == 1.0 for value in a], [value == 1.0 for value in b])
    return sign_test(a, b, tolerance=TIE_TOLERANCE)


def paired_scores(
    scores_a: Mapping[int, Mapping[str, float]],
    scores_b: Mapping[int, Mapping[str, float]],
    metric: str,
) -> tuple[list[float], list[float]]:
    """Both candidates' scores on ``metric`` for the items both have one for, in item order,
    so that position i of each list is the same item."""
    shared = sorted(
        item
        for item in scores_a.keys() & scores_b.keys()
        if metric in scores_a[item] and metric in scores_b[item]
    )
    return [scores_a[i][metric] for i in shared], [scores_b[i][metric] for i in shared]


def compare_candidates(
    *,
    name_a: str,
    name_b: str,
    scores_a: Mapping[int, Mapping[str, float]],
    scores_b: Mapping[int, Mapping[str, float]],
    metric: str,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Paired comparison of two candidates on one metric, over the items both have a score
    for; None when they share none. ``scores_*`` map an item id to that item's scores."""
    spec = METRICS[metric]
    a, b = paired_scores(scores_a, scores_b, metric)
    if not a:
        return None
    comparison = paired_bootstrap(
        a, b, resamples=BOOTSTRAP_RESAMPLES, seed=seed, confidence=CONFIDENCE
    )
    test = paired_test(spec, a, b)
    decision = decide(comparison, test, higher_is_better=spec.higher_is_better)
    counts = wins_ties_losses(a, b, tolerance=TIE_TOLERANCE)
    if not spec.higher_is_better:
        # A win is the better score: for latency, the lower one.
        counts = type(counts)(wins=counts.losses, ties=counts.ties, losses=counts.wins)
    return {
        "metric": metric,
        "examples": comparison.examples,
        "mean_a": comparison.mean_a,
        "mean_b": comparison.mean_b,
        "difference": comparison.difference,
        "ci_low": comparison.ci_low,
        "ci_high": comparison.ci_high,
        "bootstrap_p": comparison.p_value,
        # Whether the rule finds a difference (runs stored before the rule: the CI alone).
        "significant": decision.is_difference,
        "wins": counts.wins,
        "ties": counts.ties,
        "losses": counts.losses,
        "test": test.name,
        "test_p": test.p_value,
        "test_a_better": test.a_better,
        "test_b_better": test.b_better,
        "outcome": decision.outcome.value,
        "rule": decision.rule,
        "sentence": decision.sentence(name_a, name_b, spec.label, spec.points),
    }


def stored_decision(stored: Mapping[str, Any]) -> Decision:
    """The decision rule applied to a comparison stored in a run's report (by
    :func:`compare_candidates`), including reports written before the rule existed: they lack
    the test's own counts, which their wins and losses give (flipped back for metrics where
    lower is better)."""
    spec = METRICS[stored["metric"]]
    a_better, b_better = stored.get("test_a_better"), stored.get("test_b_better")
    if a_better is None or b_better is None:
        wins, losses = stored["wins"], stored["losses"]
        a_better, b_better = (wins, losses) if spec.higher_is_better else (losses, wins)
    # The rule reads only the difference, the interval and the test; the rest is context
    # that a partial report may lack.
    comparison = PairedComparison(
        mean_a=stored.get("mean_a", 0.0),
        mean_b=stored.get("mean_b", 0.0),
        difference=stored["difference"],
        ci_low=stored["ci_low"],
        ci_high=stored["ci_high"],
        p_value=stored.get("bootstrap_p", 1.0),
        confidence=CONFIDENCE,
        examples=stored.get("examples", 0),
        resamples=BOOTSTRAP_RESAMPLES,
    )
    test = DiscordantTest(a_better, b_better, stored["test_p"], name=stored["test"])
    return decide(comparison, test, higher_is_better=spec.higher_is_better)


def metrics_present(scores: Sequence[Mapping[str, float]]) -> list[str]:
    """The comparable metrics that at least one item has, in METRICS order."""
    present = {key for item in scores for key in item}
    return [key for key in METRICS if key in present]


def best_candidate(summaries: Mapping[int, Mapping[str, Any]], metric: str) -> int | None:
    """The candidate with the best mean on ``metric``; the first one wins a tie, so with
    checkpoints in step order the earliest checkpoint that reaches the best score is chosen
    (fewer steps, less overfitting risk)."""
    spec = METRICS[metric]
    best: tuple[int, float] | None = None
    for candidate_id, summary in summaries.items():
        value = summary.get("means", {}).get(metric)
        if value is None:
            continue
        better = best is None or (value > best[1] if spec.higher_is_better else value < best[1])
        if better:
            best = (candidate_id, value)
    return best[0] if best else None
