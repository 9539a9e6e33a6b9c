"""The evaluation dashboard: for each registered model, each metric of each candidate across its
versions (the fine-tuned version and the baselines it was evaluated against), and the history
of its evaluations."""

from __future__ import annotations

from dataclasses import dataclass, field

from ftportal.models import Project
from registry.models import ModelVersion, RegisteredModel

from .models import Candidate, CandidateKind, EvalRun, EvalStatus
from .report import run_verdicts
from .scoring import METRICS

CHART_WIDTH = 480
CHART_HEIGHT = 180
CHART_PADDING = 24
FINE_TUNED_SERIES = "fine-tuned version"
# Series colours cycle through these CSS classes.
SERIES_CLASSES = ("series-0", "series-1", "series-2", "series-3", "series-4", "series-5")


@dataclass(frozen=True)
class Series:
    name: str
    css_class: str
    # (version number, metric mean) for each version it was measured on.
    values: list[tuple[int, float]]
    points: str = ""
    dots: list[tuple[float, float, int, float]] = field(default_factory=list)


@dataclass(frozen=True)
class MetricChart:
    metric: str
    label: str
    percent: bool
    versions: list[int]
    series: list[Series]
    x_labels: list[tuple[float, int]]


@dataclass(frozen=True)
class HistoryRow:
    run: EvalRun
    version: ModelVersion
    value: float | None
    verdicts: list[str]


@dataclass(frozen=True)
class ModelDashboard:
    model: RegisteredModel
    charts: list[MetricChart]
    history: list[HistoryRow]


def _series_name(candidate: Candidate, version: ModelVersion) -> str:
    """Baselines keep their label; the version under test is one series across versions."""
    if candidate.kind == CandidateKind.MODEL_VERSION and candidate.model_version_id == version.pk:
        return FINE_TUNED_SERIES
    return candidate.label


def _x(index: int, count: int) -> float:
    inner = CHART_WIDTH - 2 * CHART_PADDING
    return CHART_PADDING + (inner * index / (count - 1) if count > 1 else inner / 2)


def _y(value: float, high: float) -> float:
    inner = CHART_HEIGHT - 2 * CHART_PADDING
    return CHART_PADDING + inner * (high - value) / high if high else CHART_HEIGHT - CHART_PADDING


def _chart(metric: str, versions: list[int], measured: dict[str, dict[int, float]]) -> MetricChart:
    spec = METRICS[metric]
    top = max((v for per in measured.values() for v in per.values()), default=1.0)
    high = 1.0 if spec.points else (top or 1.0)
    position = {number: index for index, number in enumerate(versions)}
    series = []
    for index, (name, per_version) in enumerate(sorted(measured.items(), key=_fine_tuned_first)):
        values = sorted(per_version.items())
        coords = [(_x(position[n], len(versions)), _y(v, high), n, v) for n, v in values]
        series.append(
            Series(
                name=name,
                css_class=SERIES_CLASSES[index % len(SERIES_CLASSES)],
                values=values,
                points=" ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in coords),
                dots=coords,
            )
        )
    labels = [(_x(i, len(versions)), number) for i, number in enumerate(versions)]
    return MetricChart(metric, spec.label, spec.points, versions, series, labels)


def _fine_tuned_first(entry: tuple[str, dict[int, float]]) -> tuple[bool, str]:
    return (entry[0] != FINE_TUNED_SERIES, entry[0])


def model_dashboard(model: RegisteredModel) -> ModelDashboard:
    """Per metric, one series per candidate role across the model's versions, from the latest
    finished evaluation of each version; and every evaluation of any of its versions."""
    versions = list(model.versions.order_by("number"))
    by_pk = {version.pk: version for version in versions}
    latest_run: dict[int, EvalRun] = {}
    history = []
    runs = (
        EvalRun.objects.filter(candidates__model_version__registered_model=model)
        .distinct()
        .order_by("-created_at", "-pk")
        .prefetch_related("candidates")
    )
    for run in runs:
        verdicts = _verdicts_of(run)
        for candidate in run.candidates.all():
            version = by_pk.get(candidate.model_version_id or 0)
            if version is None:
                continue
            means = candidate.metrics.get("means", {})
            history.append(HistoryRow(run, version, means.get(run.primary_metric), verdicts))
            if run.status == EvalStatus.SUCCEEDED and version.pk not in latest_run:
                latest_run[version.pk] = run
    measured: dict[str, dict[str, dict[int, float]]] = {}
    for version in versions:
        latest = latest_run.get(version.pk)
        if latest is None:
            continue
        for candidate in latest.candidates.all():
            name = _series_name(candidate, version)
            for metric, value in candidate.metrics.get("means", {}).items():
                if metric in METRICS and value is not None:
                    measured.setdefault(metric, {}).setdefault(name, {})[version.number] = value
    numbers = [v.number for v in versions if v.pk in latest_run]
    charts = [_chart(m, numbers, measured[m]) for m in METRICS if m in measured]
    return ModelDashboard(model=model, charts=charts, history=history)


def _verdicts_of(run: EvalRun) -> list[str]:
    # Decided by the rule when read, so runs stored before it read like new ones.
    return run_verdicts(run, list(run.candidates.all())).sentences


def project_dashboards(project: Project) -> list[ModelDashboard]:
    return [model_dashboard(m) for m in project.registered_models.order_by("name")]
