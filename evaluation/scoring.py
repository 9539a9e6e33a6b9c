"""From answers to numbers: the per-item scores of one answer, a candidate's summary, and the
paired comparison of two candidates with its verdict sentence.

Plain data in, plain data out (JSON-ready dicts), so the worker stores what this returns and
the pages and the API read it back unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from statistics import fmean
from typing import Any

from datasets.contracts import contract_violation

from .metrics import (
    answer_length,
    answers_are_labels,
    chrf,
    confusion_matrix,
    contains,
    cost_per_1000_requests,
    exact_match_normalised,
    json_field_accuracy,
    json_valid,
    latency_summary,
    macro_f1,
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
) -> dict[str, Any]:
    """Means of every per-item score, label metrics when the references are labels, latency
    and the cost of 1,000 requests like these.

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
    references = [a.reference for a in answers]
    if answers_are_labels(references):
        summary["labels"] = _label_metrics([a.output for a in answers], references)
    return summary


def _label_metrics(outputs: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    # Labels are compared in their normalised form, the same one exact match uses, so the
    # label accuracy equals the exact-match rate and "Billing." counts as "billing".
    predicted = [normalise_answer(output) for output in outputs]
    expected = [normalise_answer(reference) for reference in references]
    table = confusion_matrix(predicted, expected)
    return {
        "accuracy": fmean(p == e for p, e in zip(predicted, expected, strict=True)),
        "macro_f1": macro_f1(predicted, expected),
        "confusion": {"labels": table.labels, "matrix": table.matrix},
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
