"""Reads for evaluation: the failure browser's filtered rows, and the report shaped for pages."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db.models import F, QuerySet
from django.shortcuts import get_object_or_404

from datasets.review.selectors import DiffSegment, answer_diff
from ftportal.charts import Axis, Chart, HeatCell, HeatGroup, HeatMap, Point, Series
from ftportal.models import Project
from training.selectors import LOSS_AXIS_TITLE

from .judge import Agreement, human_agreement
from .metrics import INVALID_LABEL, LabelScores, label_scores
from .models import Candidate, EvalKind, EvalResult, EvalRun, HumanPreference, JudgeVerdict
from .prompting import answer_of
from .report import generates_locally, local_usd_per_hour
from .scoring import BATCH_AVERAGE, METRICS, PER_REQUEST, machine_time_usd, stored_decision

# What "A wrong, B right" and friends mean: A's and B's answer on the chosen metric, each right
# when its score reaches the threshold.
OUTCOMES = {
    "all": "Every item",
    "wrong": "A wrong",
    "right": "A right",
    "a_wrong_b_right": "A wrong, B right",
    "a_right_b_wrong": "A right, B wrong",
    "both_wrong": "Both wrong",
    "failed": "A's request failed",
}
NEEDS_B = frozenset({"a_wrong_b_right", "a_right_b_wrong", "both_wrong"})
FAILURES_PAGE_SIZE = 50


# --- Project-scoped lookups: the one way pages and the API reach an evaluation run by id ---


def eval_runs_of(project: Project) -> QuerySet[EvalRun]:
    """The project's runs, newest first, with their dataset version, author, judge endpoint,
    training job and candidates: what the pages and the API show of them."""
    return (
        EvalRun.objects.filter(project=project)
        .select_related("dataset_version__dataset", "created_by", "judge_endpoint", "training_job")
        .prefetch_related("candidates__base_model", "candidates__endpoint")
        .order_by("-created_at", "-id")
    )


def eval_run_in_project(project: Project, run_id: int) -> EvalRun:
    """One run of the project; 404 for any other id (another project's included)."""
    return get_object_or_404(eval_runs_of(project), pk=run_id)


def eval_result_in_run(run: EvalRun, result_id: int) -> EvalResult:
    """One result of one of the run's candidates; 404 for any other id."""
    return get_object_or_404(EvalResult, pk=result_id, candidate__run=run)


@dataclass(frozen=True)
class ResultFilter:
    candidate: int
    other: int | None = None
    outcome: str = "all"
    metric: str = "exact_match"
    threshold: float = 1.0
    tag: str = ""
    # "item" (item order), or A's answers by confidence (label scoring): "least_confident" first
    # (where a lead looks for what the model was unsure of), "most_confident" first (confident
    # mistakes: often a wrong expected answer).
    order: str = "item"

    @classmethod
    def from_query(cls, run: EvalRun, params: Mapping[str, str]) -> ResultFilter:
        """From URL parameters a, b, outcome, metric, threshold, tag; ValueError names the
        parameter that is wrong. A defaults to the run's first candidate, B to its second."""
        ids = list(run.candidates.values_list("pk", flat=True))
        if not ids:
            raise ValueError("the run has no candidates")
        a = _candidate_param(params, "a", ids, default=ids[0]) or ids[0]
        b = _candidate_param(params, "b", ids, default=ids[1] if len(ids) > 1 else None)
        outcome = params.get("outcome") or "all"
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome: one of {', '.join(OUTCOMES)}")
        if outcome in NEEDS_B and (b is None or b == a):
            raise ValueError("b: choose a second candidate for this outcome")
        metric = params.get("metric") or run.primary_metric
        if metric not in METRICS:
            raise ValueError(f"metric: one of {', '.join(METRICS)}")
        try:
            threshold = float(params.get("threshold") or 1.0)
        except ValueError:
            raise ValueError("threshold: a number between 0 and 1") from None
        if not 0 <= threshold <= 1:
            raise ValueError("threshold: a number between 0 and 1")
        order = params.get("order") or "item"
        if order not in RESULT_ORDERS:
            raise ValueError(f"order: one of {', '.join(RESULT_ORDERS)}")
        tag = (params.get("tag") or "").strip().lower()
        return cls(a, b, outcome, metric, threshold, tag, order)


def _candidate_param(
    params: Mapping[str, str], name: str, ids: list[int], default: int | None
) -> int | None:
    raw = params.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}: a candidate id") from None
    if value not in ids:
        raise ValueError(f"{name}: no candidate {value} in this run")
    return value


def is_right(result: EvalResult | None, metric: str, threshold: float) -> bool | None:
    """Whether an answer counts as right on ``metric``: its score reaches the threshold and its
    request did not fail. None when there is no answer or no such score."""
    if result is None or metric not in result.scores:
        return None
    return bool(result.scores[metric] >= threshold) and not result.error


def _keeps(chosen: ResultFilter, a: EvalResult, b: EvalResult | None) -> bool:
    if chosen.tag and chosen.tag not in a.tags:
        return False
    if chosen.outcome == "all":
        return True
    if chosen.outcome == "failed":
        return bool(a.error)
    a_right = is_right(a, chosen.metric, chosen.threshold)
    if a_right is None:
        return False
    if chosen.outcome == "wrong":
        return not a_right
    if chosen.outcome == "right":
        return a_right
    b_right = is_right(b, chosen.metric, chosen.threshold)
    if b_right is None:
        return False
    wanted = {
        "a_wrong_b_right": (False, True),
        "a_right_b_wrong": (True, False),
        "both_wrong": (False, False),
    }[chosen.outcome]
    return (a_right, b_right) == wanted


def _results_by_item(
    candidate_id: int | None, items: Sequence[int] | None = None
) -> dict[int, EvalResult]:
    if candidate_id is None:
        return {}
    results = EvalResult.objects.filter(candidate_id=candidate_id)
    if items is not None:
        results = results.filter(item_id__in=items)
    return {r.item_id: r for r in results}


# How the failure browser may order A's answers; answers without a confidence come last.
RESULT_ORDERS: dict[str, tuple[Any, ...]] = {
    "item": ("item__position",),
    "least_confident": (F("confidence").asc(nulls_last=True), "item__position"),
    "most_confident": (F("confidence").desc(nulls_last=True), "item__position"),
}


def filtered_results(run: EvalRun, chosen: ResultFilter) -> list[EvalResult]:
    """A's answers that match the filter, in the filter's order."""
    others = _results_by_item(chosen.other)
    rows = EvalResult.objects.filter(candidate_id=chosen.candidate, candidate__run=run)
    ordered = rows.select_related("item").order_by(*RESULT_ORDERS[chosen.order])
    return [result for result in ordered if _keeps(chosen, result, others.get(result.item_id))]


@dataclass(frozen=True)
class FailureRow:
    result: EvalResult
    other: EvalResult | None
    reference: str
    prompt: list[dict[str, str]]
    diff: list[DiffSegment]
    other_diff: list[DiffSegment] = field(default_factory=list)


def failure_rows(chosen: ResultFilter, results: Sequence[EvalResult]) -> list[FailureRow]:
    """The failure browser's rows for these of A's answers (one page of
    :func:`filtered_results`, so only what is shown gets diffed): each beside B's, both diffed
    against the expected answer (deletions are what the expected answer has and the output
    lacks)."""
    others = _results_by_item(chosen.other, items=[r.item_id for r in results])
    rows = []
    for result in results:
        reference = answer_of(result.item.messages)
        other = others.get(result.item_id)
        rows.append(
            FailureRow(
                result=result,
                other=other,
                reference=reference,
                prompt=list(result.item.messages[:-1]),
                diff=answer_diff(reference, result.output),
                other_diff=answer_diff(reference, other.output) if other else [],
            )
        )
    return rows


@dataclass(frozen=True)
class MetricCell:
    key: str
    label: str
    value: float | None
    points: bool


@dataclass(frozen=True)
class Latency:
    """How long a request took. ``measured`` is PER_REQUEST (each timed on its own: p50 and
    p95) or BATCH_AVERAGE (a local batch's time shared out: one average, no percentiles)."""

    measured: str
    mean: float
    p50: float | None = None
    p95: float | None = None

    @property
    def per_request(self) -> bool:
        return self.measured == PER_REQUEST


@dataclass(frozen=True)
class CandidateRow:
    candidate: Candidate
    cells: list[MetricCell]
    summary: dict[str, Any]
    latency: Latency | None = None
    cost_per_1000_usd: Decimal | None = None
    cost_basis: str = ""


def _latency(candidate: Candidate, local: bool) -> Latency | None:
    stored = candidate.metrics.get("latency")
    if not stored or stored.get("mean") is None:
        return None
    # Runs stored before latency said how it was measured: local ones were batch averages.
    measured = stored.get("measured") or (BATCH_AVERAGE if local else PER_REQUEST)
    if measured == BATCH_AVERAGE:
        return Latency(BATCH_AVERAGE, stored["mean"])
    return Latency(PER_REQUEST, stored["mean"], stored.get("p50"), stored.get("p95"))


def _cost_per_1000(
    candidate: Candidate, local: bool, latency: Latency | None
) -> tuple[Decimal | None, str]:
    stored = candidate.metrics.get("cost_per_1000_usd")
    if stored is not None:
        return Decimal(stored), candidate.metrics.get("cost_basis", "token prices")
    if local and latency is not None:
        # Runs stored before local models were priced: their measured time at today's rate.
        rate = local_usd_per_hour()
        return machine_time_usd(latency.mean, rate) * 1000, f"machine time at ${rate}/h"
    return None, ""


def candidate_rows(run: EvalRun, metrics: list[str]) -> list[CandidateRow]:
    rows = []
    candidates = run.candidates.select_related("checkpoint", "model_version", "base_model")
    for candidate in candidates:
        means = candidate.metrics.get("means", {})
        local = generates_locally(candidate)
        latency = _latency(candidate, local)
        cost, basis = _cost_per_1000(candidate, local, latency)
        rows.append(
            CandidateRow(
                candidate=candidate,
                cells=[
                    MetricCell(key, METRICS[key].label, means.get(key), METRICS[key].points)
                    for key in metrics
                ],
                summary=candidate.metrics,
                latency=latency,
                cost_per_1000_usd=cost,
                cost_basis=basis,
            )
        )
    return rows


def report_metrics(run: EvalRun) -> list[str]:
    """The metrics to show: the report's once finished, else the core ones."""
    return list(run.report.get("metrics") or ["exact_match", "token_f1", "rouge_l", "chrf"])


def comparisons_for_page(run: EvalRun) -> list[dict[str, Any]]:
    """The report's comparisons with candidate labels, metric labels and the rule's verdict
    added (decided afresh, so runs stored before the rule read like new ones)."""
    labels = dict(run.candidates.values_list("pk", "label"))
    rows = []
    for comparison in run.report.get("comparisons", []):
        if comparison["metric"] not in METRICS:
            continue
        decision = stored_decision(comparison)
        rows.append(
            {
                **comparison,
                "label_a": labels.get(comparison["a"], "?"),
                "label_b": labels.get(comparison["b"], "?"),
                "metric_label": METRICS[comparison["metric"]].label,
                "points": METRICS[comparison["metric"]].points,
                "outcome": decision.outcome.value,
                "outcome_label": decision.outcome.label,
                "significant": decision.is_difference,
            }
        )
    return rows


# --- Label metrics on the run's page: confused pairs, per-label scores, heat map, calibration ---

# The page lists this many confused pairs, most frequent first; the heat map shows them all.
CONFUSED_PAIRS_SHOWN = 20


@dataclass(frozen=True)
class ConfusedPair:
    """Items expected as ``expected`` and answered ``answered`` (:data:`INVALID_LABEL` for an
    answer that is no label); ``share`` is their part of the expected label's items."""

    expected: str
    answered: str
    count: int
    share: float
    invalid: bool


@dataclass(frozen=True)
class LabelView:
    """One candidate's stored label metrics as the page shows them. ``invalid`` and
    ``invalid_rate`` are None for a summary stored before invalid answers were counted apart,
    as is ``source``."""

    summary: Mapping[str, Any]
    pairs: list[ConfusedPair]
    pair_count: int
    worst_first: list[LabelScores]
    heat_map: HeatMap


@dataclass(frozen=True)
class Confusion:
    """What the page shows of one candidate's labels: its label metrics, or why there are
    none; abstention and calibration when its answers carry confidences."""

    candidate: Candidate
    labels: LabelView | None
    left_out: str | None
    abstention: Mapping[str, Any] | None
    calibration: Mapping[str, Any] | None
    reliability_chart: Chart | None


@dataclass(frozen=True)
class LabelSection:
    """The page's label section: a row per candidate with label metrics or confidences, and
    each reason label metrics were left out with the candidates it applies to."""

    candidates: list[Confusion]
    left_out: list[tuple[str, list[str]]]

    @property
    def shown(self) -> list[Confusion]:
        return [c for c in self.candidates if c.labels or c.abstention or c.calibration]


def _confused_pairs(labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> list[ConfusedPair]:
    """Every off-diagonal cell with a count, most frequent first (then the larger share of its
    expected label, then by name, so the order is stable)."""
    pairs = []
    for i, row in enumerate(matrix):
        support = sum(row)
        for j, count in enumerate(row):
            if count and j != i:
                invalid = j >= len(labels)
                pairs.append(
                    ConfusedPair(
                        expected=labels[i],
                        answered=INVALID_LABEL if invalid else labels[j],
                        count=count,
                        share=count / support,
                        invalid=invalid,
                    )
                )
    return sorted(pairs, key=lambda p: (-p.count, -p.share, p.expected, p.answered))


def _confusion_heat_map(
    candidate: Candidate, labels: Sequence[str], matrix: Sequence[Sequence[int]]
) -> HeatMap:
    """The matrix as a heat map, its non-zero cells only, each shaded by its share of the
    expected label (so a rare label's confusions show as plainly as a common one's)."""
    right: list[HeatCell] = []
    confused: list[HeatCell] = []
    invalid: list[HeatCell] = []
    for i, row in enumerate(matrix):
        support = sum(row)
        for j, count in enumerate(row):
            if not count:
                continue
            cell = HeatCell(column=j, row=i, count=count, shade=count / support)
            (right if i == j else invalid if j >= len(labels) else confused).append(cell)
    columns = list(labels) + ([INVALID_LABEL] if len(matrix[0]) > len(labels) else [])
    return HeatMap(
        element_id=f"confusion-heatmap-{candidate.pk}",
        description=(
            f"Confusion matrix of {candidate.label}: expected labels down, answered labels "
            "across, each cell shaded by its share of the expected label's items."
        ),
        x=Axis(title="Answered", labels=tuple(columns)),
        y=Axis(title="Expected", labels=tuple(labels)),
        groups=[
            HeatGroup("Right", right),
            HeatGroup("Another label", confused),
            HeatGroup(f"No label {INVALID_LABEL}", invalid),
        ],
        shade_title="of the expected label's items",
        count_title="answers",
    )


def _label_view(candidate: Candidate, stored: Mapping[str, Any]) -> LabelView:
    labels = list(stored["confusion"]["labels"])
    matrix = stored["confusion"]["matrix"]
    # Summaries stored before per-label scores were kept: the same scores from their matrix.
    per_label = (
        [LabelScores(**row) for row in stored["per_label"]]
        if "per_label" in stored
        else label_scores(labels, matrix)
    )
    pairs = _confused_pairs(labels, matrix)
    return LabelView(
        summary=stored,
        pairs=pairs[:CONFUSED_PAIRS_SHOWN],
        pair_count=len(pairs),
        worst_first=sorted(per_label, key=lambda s: (s.f1, -s.support, s.label)),
        heat_map=_confusion_heat_map(candidate, labels, matrix),
    )


def _reliability_chart(candidate: Candidate, stored: Mapping[str, Any]) -> Chart:
    points: list[Point] = [
        (row["confidence"], row["accuracy"]) for row in stored["bins"] if row["count"]
    ]
    return Chart(
        element_id=f"reliability-{candidate.pk}",
        description=(
            f"Reliability of {candidate.label}'s confidences: per confidence bin, the share of "
            "answers that were right against their mean confidence; on the diagonal, "
            "confidence and accuracy agree."
        ),
        x=Axis(title="Confidence (mean of the bin)", format="percent", min=0.0, max=1.0),
        y=Axis(title="Right", format="percent", min=0.0, max=1.0),
        series=[Series(candidate.label, points), Series("Calibrated", [(0.0, 0.0), (1.0, 1.0)])],
    )


def confusions(run: EvalRun) -> LabelSection:
    """Each candidate's label metrics (most confused pairs, per-label scores worst F1 first,
    the heat map), abstention and calibration, and why label metrics were left out."""
    rows: list[Confusion] = []
    reasons: dict[str, list[str]] = {}
    for candidate in run.candidates.all():
        metrics = candidate.metrics
        left_out = metrics.get("labels_left_out", {}).get("reason")
        if left_out:
            reasons.setdefault(left_out, []).append(candidate.label)
        calibrated = metrics.get("calibration")
        rows.append(
            Confusion(
                candidate=candidate,
                labels=_label_view(candidate, metrics["labels"]) if "labels" in metrics else None,
                left_out=left_out,
                abstention=metrics.get("abstention"),
                calibration=calibrated,
                reliability_chart=_reliability_chart(candidate, calibrated) if calibrated else None,
            )
        )
    return LabelSection(candidates=rows, left_out=list(reasons.items()))


@dataclass(frozen=True)
class SideBySideRow:
    position: int
    prompt: list[dict[str, str]]
    reference: str
    results: list[EvalResult | None]


def side_by_side(run: EvalRun, *, limit: int) -> tuple[list[Candidate], list[SideBySideRow]]:
    """The first ``limit`` answered items with every candidate's answer in candidate order."""
    candidates = list(run.candidates.all())
    first_items = list(
        EvalResult.objects.filter(candidate__run=run)
        .order_by("item__position")
        .values_list("item_id", flat=True)
        .distinct()[:limit]
    )
    results = EvalResult.objects.filter(candidate__run=run, item_id__in=first_items)
    by_item: dict[int, dict[int, EvalResult]] = {}
    items = {}
    for result in results.select_related("item"):
        by_item.setdefault(result.item_id, {})[result.candidate_id] = result
        items[result.item_id] = result.item
    rows = [
        SideBySideRow(
            position=item.position,
            prompt=list(item.messages[:-1]),
            reference=answer_of(item.messages),
            results=[by_item[item_id].get(c.pk) for c in candidates],
        )
        for item_id, item in sorted(items.items(), key=lambda pair: pair[1].position)
    ]
    return candidates, rows


@dataclass(frozen=True)
class JudgeAgreementRow:
    label_a: str
    label_b: str
    agreement: Agreement | None
    rated_items: int


def judge_agreement(run: EvalRun) -> list[JudgeAgreementRow]:
    """For each judged pair, how often the judge agreed with people on the items they rated.
    Several raters on one item: the most common choice counts, "tie" when they split evenly."""
    labels = dict(run.candidates.values_list("pk", "label"))
    judge_outcomes: dict[tuple[int, int], dict[int, str]] = {}
    for a, b, item, outcome in JudgeVerdict.objects.filter(run=run).values_list(
        "candidate_a_id", "candidate_b_id", "item_id", "outcome"
    ):
        judge_outcomes.setdefault((a, b), {})[item] = outcome
    rows = []
    for (a, b), outcomes in sorted(judge_outcomes.items()):
        human = _human_choices(a, b)
        shared = sorted(outcomes.keys() & human.keys())
        agreement = (
            human_agreement([outcomes[i] for i in shared], [human[i] for i in shared])
            if shared
            else None
        )
        rows.append(JudgeAgreementRow(labels[a], labels[b], agreement, len(human)))
    return rows


def _human_choices(candidate_a: int, candidate_b: int) -> dict[int, str]:
    votes: dict[int, Counter[str]] = {}
    for item, choice in HumanPreference.objects.filter(
        candidate_a_id=candidate_a, candidate_b_id=candidate_b
    ).values_list("item_id", "choice"):
        votes.setdefault(item, Counter())[choice] += 1
    decided = {}
    for item, counts in votes.items():
        (top, top_count), *rest = counts.most_common()
        decided[item] = "tie" if rest and rest[0][1] == top_count else top
    return decided


def checkpoint_sweep_chart(run: EvalRun) -> Chart | None:
    """A checkpoint sweep's task metric (the one its recommendation goes by) by checkpoint
    step, with each checkpoint's validation loss against a second axis, to show where the two
    disagree; None for other runs and before any checkpoint is scored."""
    primary = METRICS.get(run.report.get("primary_metric") or run.primary_metric)
    if run.kind != EvalKind.CHECKPOINTS or primary is None:
        return None
    scored = sorted(
        (
            (c.checkpoint, c.metrics.get("means", {}).get(primary.key))
            for c in run.candidates.select_related("checkpoint")
            if c.checkpoint is not None
        ),
        key=lambda pair: pair[0].step,
    )
    points: list[Point] = [(cp.step, value) for cp, value in scored if value is not None]
    if not points:
        return None
    losses: list[Point] = [(cp.step, cp.val_loss) for cp, _ in scored if cp.val_loss is not None]
    return Chart(
        element_id="sweep-chart-data",
        description=f"{primary.title} and validation loss of each checkpoint by step",
        x=Axis(title="Checkpoint step", format="integer", min=0),
        y=(
            Axis(title=f"{primary.title} (%)", format="percent", min=0.0, max=1.0)
            if primary.points
            else Axis(title=primary.title)
        ),
        y2=Axis(title=LOSS_AXIS_TITLE) if losses else None,
        series=[Series(primary.title, points)]
        + ([Series("Validation loss", losses, axis="y2")] if losses else []),
    )
