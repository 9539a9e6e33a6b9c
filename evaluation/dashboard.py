"""The evaluation dashboard: for each registered model, each metric of each candidate across its
versions (the fine-tuned version and the baselines it was evaluated against), and the history
of its evaluations."""

from __future__ import annotations

from dataclasses import dataclass

from ftportal.charts import Axis, Chart, Series
from ftportal.models import Project
from registry.models import ModelVersion, RegisteredModel

from .models import Candidate, CandidateKind, EvalRun, EvalStatus
from .report import run_verdicts
from .scoring import METRICS

FINE_TUNED_SERIES = "fine-tuned version"


@dataclass(frozen=True)
class MetricChart:
    """One metric across the model's versions: one series per candidate role, each point a
    version ("v2") and the metric mean of the latest finished evaluation of that version."""

    metric: str
    title: str
    percent: bool
    chart: Chart


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


def _chart(
    model: RegisteredModel, metric: str, versions: list[int], measured: dict[str, dict[int, float]]
) -> MetricChart:
    spec = METRICS[metric]
    title = spec.title
    chart = Chart(
        element_id=f"model-{model.pk}-{metric}-chart",
        description=f"{title} of each candidate across versions of {model.name}",
        x=Axis(title="Model version", labels=tuple(f"v{n}" for n in versions)),
        # Fractions are drawn on a full 0 to 100 % axis, so versions compare at a glance.
        y=(
            Axis(title=f"{title} (%)", format="percent", min=0.0, max=1.0)
            if spec.points
            else Axis(title=title, min=0.0)
        ),
        series=[
            Series(name, [(f"v{n}", v) for n, v in sorted(per_version.items())])
            for name, per_version in sorted(measured.items(), key=_fine_tuned_first)
        ],
    )
    return MetricChart(metric, title, spec.points, chart)


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
    charts = [_chart(model, m, numbers, measured[m]) for m in METRICS if m in measured]
    return ModelDashboard(model=model, charts=charts, history=history)


def _verdicts_of(run: EvalRun) -> list[str]:
    # Decided by the rule when read, so runs stored before it read like new ones.
    return run_verdicts(run, list(run.candidates.all())).sentences


def project_dashboards(project: Project) -> list[ModelDashboard]:
    return [model_dashboard(m) for m in project.registered_models.order_by("name")]
