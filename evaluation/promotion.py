"""What finished evaluations say about registered versions: the promotion gate's evidence, each
version's latest score and its evaluations. Registered into ``registry.gate`` by
``EvaluationConfig.ready`` (the registry is a lower layer and cannot import this)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.db.models import QuerySet

from registry.gate import GateVerdict, PromotionEvidence, VersionEvaluation, VersionScore
from registry.models import ModelVersion

from .advice import cost_per_1000_requests_of
from .models import Candidate, CandidateKind, EvalRun, EvalStatus, Prompting
from .report import scores_by_candidate
from .scoring import CONFIDENCE, METRICS, compare_candidates, stored_decision
from .statistics import VerdictOutcome


def _primary_metric(run: EvalRun) -> str:
    metric = run.report.get("primary_metric") or run.primary_metric
    return metric if metric in METRICS else "exact_match"


def gate_comparison(
    run: EvalRun, candidate: Candidate, baseline: Candidate, metric: str
) -> dict[str, Any] | None:
    """The paired comparison (candidate minus baseline) the gate decides on: the one the run's
    report stored when it has this pair, else the same computation now. The one place the gate
    takes evaluation's comparison from; the verdict rule is :func:`gate_verdict`."""
    for stored in run.report.get("comparisons", []):
        if (stored["a"], stored["b"], stored["metric"]) == (candidate.pk, baseline.pk, metric):
            return dict(stored)
    table = scores_by_candidate(run)
    return compare_candidates(
        name_a=candidate.label,
        name_b=baseline.label,
        scores_a=table[candidate.pk],
        scores_b=table[baseline.pk],
        metric=metric,
    )


def gate_verdict(comparison: Mapping[str, Any], *, metric: str, margin_points: float) -> str:
    """The gate's reading of the one decision rule (:func:`evaluation.statistics.decide`) on
    the paired comparison of candidate minus baseline: better or worse only when the rule says
    so (interval and paired test agree); otherwise no worse when the worse end of the interval
    stays within the lead's margin (non-inferiority), and not shown to be no worse when it does
    not. A borderline gain therefore passes only by the margin, never as "better"."""
    decision = stored_decision(comparison)
    if decision.outcome == VerdictOutcome.BETTER:
        return GateVerdict.BETTER
    if decision.outcome == VerdictOutcome.WORSE:
        return GateVerdict.WORSE
    margin = margin_points / 100 if METRICS[metric].points else margin_points
    return GateVerdict.NO_WORSE if decision.no_worse_than(margin) else GateVerdict.NOT_SHOWN


def _sentence(
    comparison: Mapping[str, Any], candidate: Candidate, baseline: Candidate, metric: str
) -> str:
    """The verdict in words by the one rule, and the rule itself (a comparison stored before
    the rule existed carries a sentence the rule may no longer agree with)."""
    decision = stored_decision(comparison)
    spec = METRICS[metric]
    said = decision.sentence(candidate.label, baseline.label, spec.label, spec.points)
    said = said[:1].upper() + said[1:].rstrip(".")
    return f"{said}. {decision.rule}."


def _finished_runs_with(version: ModelVersion) -> QuerySet[EvalRun]:
    return EvalRun.objects.filter(
        status=EvalStatus.SUCCEEDED,
        candidates__kind=CandidateKind.MODEL_VERSION,
        candidates__model_version=version,
    )


def _latest_pair(
    candidate: ModelVersion, production: ModelVersion | None
) -> tuple[EvalRun, Candidate, Candidate] | None:
    """The newest finished run that scored the candidate and the baseline on the same items."""
    runs = _finished_runs_with(candidate)
    if production is not None:
        runs = runs.filter(
            candidates__kind=CandidateKind.MODEL_VERSION, candidates__model_version=production
        )
    else:
        runs = runs.filter(
            candidates__kind=CandidateKind.BASE, candidates__base_model=candidate.base_model
        )
    run = runs.order_by("-pk").first()
    if run is None:
        return None
    ours = run.candidates.filter(kind=CandidateKind.MODEL_VERSION, model_version=candidate)
    if production is not None:
        theirs = list(
            run.candidates.filter(kind=CandidateKind.MODEL_VERSION, model_version=production)
        )
    else:
        theirs = list(
            run.candidates.filter(kind=CandidateKind.BASE, base_model=candidate.base_model)
        )
    # Zero-shot first: the base model as it is, which fine-tuning has to beat.
    theirs.sort(key=lambda c: (c.prompting != Prompting.ZERO_SHOT, c.position))
    first_ours = ours.order_by("position").first()
    if first_ours is None or not theirs:
        return None
    first_theirs = theirs[0]
    return run, first_ours, first_theirs


class EvaluationRecords:
    """registry.gate.EvaluationReader, read from this app's runs."""

    def promotion_evidence(
        self, *, candidate: ModelVersion, production: ModelVersion | None, margin_points: float
    ) -> PromotionEvidence:
        if production is not None:
            baseline = f"production {production}"
            needed = f"{baseline} on the same test set"
        else:
            baseline = f"its base model {candidate.base_model.display_name}"
            needed = f"{baseline} (nothing is in production yet)"
        missing = (
            f"No finished evaluation of {candidate} against {needed}: evaluate {candidate} "
            "(the registry's Evaluate scores it beside production, or beside its base model "
            "before the first promotion) and promote once it has finished."
        )
        found = None if production == candidate else _latest_pair(candidate, production)
        if production == candidate:
            missing = f"{candidate} is in production already."
        if found is None:
            return PromotionEvidence(
                candidate=str(candidate),
                baseline=baseline,
                missing=missing,
                margin_points=margin_points,
            )
        run, ours, theirs = found
        metric = _primary_metric(run)
        comparison = gate_comparison(run, ours, theirs, metric)
        if comparison is None:
            return PromotionEvidence(
                candidate=str(candidate),
                baseline=baseline,
                missing=f"Evaluation {run.pk} scored {candidate} and {baseline} on no common "
                f"item. {missing}",
                margin_points=margin_points,
            )
        our_cost, basis = cost_per_1000_requests_of(ours)
        their_cost, their_basis = cost_per_1000_requests_of(theirs)
        return PromotionEvidence(
            candidate=str(candidate),
            baseline=baseline,
            eval_run_id=run.pk,
            metric=metric,
            metric_label=METRICS[metric].label,
            points=METRICS[metric].points,
            candidate_score=comparison["mean_a"],
            baseline_score=comparison["mean_b"],
            ci_low=comparison["ci_low"],
            ci_high=comparison["ci_high"],
            confidence=CONFIDENCE,
            examples=comparison["examples"],
            verdict=gate_verdict(comparison, metric=metric, margin_points=margin_points),
            sentence=_sentence(comparison, ours, theirs, metric),
            margin_points=margin_points,
            candidate_cost_per_1000_usd=str(our_cost),
            baseline_cost_per_1000_usd=str(their_cost),
            cost_basis=basis if basis == their_basis else f"{basis}; {their_basis}",
        )

    def latest_scores(self, versions: Sequence[ModelVersion]) -> Mapping[int, VersionScore]:
        candidates = (
            Candidate.objects.filter(
                kind=CandidateKind.MODEL_VERSION,
                model_version__in=[v.pk for v in versions],
                run__status=EvalStatus.SUCCEEDED,
            )
            # The version too: pricing asks whether it generates locally, for every model on
            # the registry page at once.
            .select_related("run", "model_version")
            .order_by("model_version_id", "-run_id", "position")
        )
        latest: dict[int, VersionScore] = {}
        for candidate in candidates:
            assert candidate.model_version_id is not None
            if candidate.model_version_id in latest:
                continue
            metric = _primary_metric(candidate.run)
            value = candidate.metrics.get("means", {}).get(metric)
            if value is None:
                continue
            cost, _ = cost_per_1000_requests_of(candidate)
            latest[candidate.model_version_id] = VersionScore(
                eval_run_id=candidate.run_id,
                metric_label=METRICS[metric].label,
                value=value,
                points=METRICS[metric].points,
                cost_per_1000_usd=str(cost),
            )
        return latest

    def evaluations_of(self, version: ModelVersion) -> list[VersionEvaluation]:
        candidates = (
            Candidate.objects.filter(
                kind=CandidateKind.MODEL_VERSION,
                model_version=version,
                run__status=EvalStatus.SUCCEEDED,
            )
            .select_related("run__dataset_version__dataset")
            .order_by("-run_id", "position")
        )
        evaluations = []
        seen: set[int] = set()
        for candidate in candidates:
            if candidate.run_id in seen:
                continue
            seen.add(candidate.run_id)
            run = candidate.run
            metric = _primary_metric(run)
            evaluations.append(
                VersionEvaluation(
                    eval_run_id=run.pk,
                    finished_at=run.finished_at,
                    dataset_version=str(run.dataset_version),
                    metric_label=METRICS[metric].label,
                    value=candidate.metrics.get("means", {}).get(metric),
                    points=METRICS[metric].points,
                    candidates=run.candidates.count(),
                )
            )
        return evaluations
