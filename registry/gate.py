"""The promotion gate's seam between the registry and evaluation.

The registry sits below evaluation in the layers, so it cannot read evaluation runs itself.
Instead it declares here what it needs to know about a version's evaluations (the evidence for
a promotion, the latest score, the evaluations a version took part in), and the evaluation app
registers the one implementation when Django starts (``EvaluationConfig.ready``). The registry's
services and pages only talk to :func:`evaluation_reader`; if nothing registered a reader the
gate refuses every promotion rather than waving one through.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from django.core.exceptions import ImproperlyConfigured

from .models import ModelVersion


def shown(value: float | None, points: bool) -> str:
    """A metric value as people read it: percent for fractions, three figures otherwise."""
    if value is None:
        return "—"
    return f"{value * 100:.1f} %" if points else f"{value:.3g}"


def shown_difference(value: float, points: bool) -> str:
    text = f"{value * 100:+.1f}" if points else f"{value:+.3g}"
    return text.replace("-", "−")


class GateVerdict:
    """What the evaluation says about the candidate against the version it would replace."""

    BETTER = "better"
    NO_WORSE = "no worse than the margin"
    NOT_SHOWN = "not shown to be no worse"
    WORSE = "worse"
    ALLOWING = frozenset({BETTER, NO_WORSE})


@dataclass(frozen=True)
class PromotionEvidence:
    """One finished evaluation's comparison of the candidate with the baseline: the production
    version, or the candidate's base model when nothing is in production yet.

    ``missing`` is set (and every number is None) when there is no such evaluation; it says
    what evaluation is needed, in words.
    """

    candidate: str
    baseline: str
    missing: str = ""
    eval_run_id: int | None = None
    metric: str = ""
    metric_label: str = ""
    # Scores are fractions shown as percent, and the margin and the interval as points.
    points: bool = True
    candidate_score: float | None = None
    baseline_score: float | None = None
    # The paired interval of candidate minus baseline on the metric.
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float | None = None
    examples: int | None = None
    verdict: str = ""
    sentence: str = ""
    # In points of the metric (x 100 for fractions): how much worse the lead accepts.
    margin_points: float = 0.0
    candidate_cost_per_1000_usd: str | None = None
    baseline_cost_per_1000_usd: str | None = None
    cost_basis: str = ""

    @property
    def allows_promotion(self) -> bool:
        return not self.missing and self.verdict in GateVerdict.ALLOWING

    @property
    def candidate_shown(self) -> str:
        return shown(self.candidate_score, self.points)

    @property
    def baseline_shown(self) -> str:
        return shown(self.baseline_score, self.points)

    @property
    def confidence_shown(self) -> str:
        return f"{self.confidence * 100:g} %" if self.confidence is not None else ""

    @property
    def interval_shown(self) -> str:
        if self.ci_low is None or self.ci_high is None:
            return "—"
        unit = " points" if self.points else ""
        low, high = (
            shown_difference(self.ci_low, self.points),
            shown_difference(self.ci_high, self.points),
        )
        return f"{low} to {high}{unit}"

    def as_record(self) -> dict[str, Any]:
        """What the alias history keeps: JSON, so it reads the same after any later change."""
        return asdict(self)


@dataclass(frozen=True)
class VersionScore:
    """A version's task metric in its latest finished evaluation, and what it costs to run."""

    eval_run_id: int
    metric_label: str
    value: float
    points: bool
    cost_per_1000_usd: str | None

    @property
    def value_shown(self) -> str:
        return shown(self.value, self.points)


@dataclass(frozen=True)
class VersionEvaluation:
    """One finished evaluation a version took part in, with its score there."""

    eval_run_id: int
    finished_at: Any
    dataset_version: str
    metric_label: str
    value: float | None
    points: bool
    candidates: int

    @property
    def value_shown(self) -> str:
        return shown(self.value, self.points)


class EvaluationReader(Protocol):
    def promotion_evidence(
        self, *, candidate: ModelVersion, production: ModelVersion | None, margin_points: float
    ) -> PromotionEvidence: ...

    def latest_scores(self, versions: Sequence[ModelVersion]) -> Mapping[int, VersionScore]: ...

    def evaluations_of(self, version: ModelVersion) -> list[VersionEvaluation]: ...


_reader: EvaluationReader | None = None


def register_evaluation_reader(reader: EvaluationReader) -> None:
    """Called once from the evaluation app's ready(); a second call replaces the first."""
    global _reader
    _reader = reader


def evaluation_reader() -> EvaluationReader:
    if _reader is None:
        raise ImproperlyConfigured(
            "No evaluation reader is registered: add 'evaluation' to INSTALLED_APPS."
        )
    return _reader
